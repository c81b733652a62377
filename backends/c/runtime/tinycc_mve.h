/* tinycc Helium (M-profile Vector Extension, Cortex-M55/M85) helpers for the generated kernels of
 * backends/c/kernels/mve.py. TCC_MVE is 1 only where the compiler targets MVE-I (__ARM_FEATURE_MVE bit 0); the
 * generated functions keep their scalar/DSP version under #else, so one project builds for every core (GCC only:
 * the inner loops use GCC inline assembly with fixed registers; clang takes the #else code).
 * Requantization (four lanes at once) is TFLite's MultiplyByQuantizedMultiplier, bit-exact: VQRDMULH is
 * SaturatingRoundingDoublingHighMul (the multiplier is positive, so it never saturates) and RoundingDivideByPOT is
 * VRSHL by the negated shift after subtracting 1 from negative lanes (round half away from zero instead of up). */
#ifndef TINYCC_MVE_H
#define TINYCC_MVE_H

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && defined(__GNUC__) && !defined(__clang__)
#include <arm_mve.h>
#define TCC_MVE 1

/* a pointer the compiler must treat as unknown: the taps address off it with literal offsets, instead of one
 * induction variable per tap (which GCC creates, and spills, for an unrolled 3x3 window) */
#define TCC_MVE_OPAQUE(p) __asm__("" : "+r"(p))


/* an empty statement that keeps the compiler from hoisting the loads of later steps above it: without it GCC
 * schedules the loads of all unrolled taps first and spills them to the stack (8 vector registers) */
#define TCC_MVE_SERIAL(a, b) __asm__ volatile("" : "+w"(a), "+w"(b) : : "memory")

/* acc * 2^left (wrapping, as tcc_requant), high multiply by m, rounding divide by 2^-rneg (rneg <= 0) */
TCC_INLINE int32x4_t tcc_mve_requant(int32x4_t acc, int32x4_t m, int32x4_t left, int32x4_t rneg) {
    const int32x4_t h = vqrdmulhq_s32(vshlq_s32(acc, left), m);
    const int32x4_t fix = vshrq_n_s32(vandq_s32(h, rneg), 31); /* -1 where h < 0 and the shift is not 0 */
    return vrshlq_s32(vqaddq_s32(h, fix), rneg);
}

/* the same for a layer whose shifts are all <= 0 (rneg = shift) */
TCC_INLINE int32x4_t tcc_mve_requant_r(int32x4_t acc, int32x4_t m, int32x4_t rneg) {
    const int32x4_t h = vqrdmulhq_s32(acc, m);
    const int32x4_t fix = vshrq_n_s32(vandq_s32(h, rneg), 31);
    return vrshlq_s32(vqaddq_s32(h, fix), rneg);
}

/* + output zero point, clamp to [lo, hi], store the low byte of the first `n` lanes (n <= 4) */
TCC_INLINE void tcc_mve_store8(int8_t *y, int32x4_t v, int32_t ozp, int32_t lo, int32_t hi, int32_t n) {
    v = vminq_s32(vmaxq_s32(vaddq_n_s32(v, ozp), vdupq_n_s32(lo)), vdupq_n_s32(hi));
    if (n >= 4) {
        vstrbq_s32(y, v);
    } else {
        vstrbq_p_s32(y, v, vctp32q((uint32_t)n));
    }
}

/* four int32 scalars as one vector */
TCC_INLINE int32x4_t tcc_mve_vec4(int32_t a, int32_t b, int32_t c, int32_t d) {
    int32x4_t v = vdupq_n_s32(a);
    v = vsetq_lane_s32(b, v, 1);
    v = vsetq_lane_s32(c, v, 2);
    return vsetq_lane_s32(d, v, 3);
}

/* the full steps of tcc_mve_dot2x3 for 2 rows x 3 channels in fixed registers: accumulators in the even r0-r10
 * (VMLADAVA takes no other), pointers in the odd r1, r3, r5, r9, r11 (r7 left to a Thumb frame pointer), advanced by the loads' writeback: 12 instructions per
 * 96 MACs (GCC's own allocation adds moves and address arithmetic to every step) */
#define TCC_MVE_LD(q, p) __asm__ volatile("vldrb.8 %q0, [%1], #16" : "=w"(q), "+r"(p) : : "memory")
#define TCC_MVE_MLA(a, x, v) __asm__("vmladava.s8 %0, %q1, %q2" : "+r"(a) : "w"(x), "w"(v))
TCC_INLINE void tcc_mve_dot2x3_steps(const int8_t **px0, const int8_t **px1, const int8_t **pw0,
                                     const int8_t **pw1, const int8_t **pw2, int32_t steps, int32_t *acc) {
    register int32_t a0 __asm__("r0") = 0;
    register int32_t a1 __asm__("r2") = 0;
    register int32_t a2 __asm__("r4") = 0;
    register int32_t b0 __asm__("r6") = 0;
    register int32_t b1 __asm__("r8") = 0;
    register int32_t b2 __asm__("r10") = 0;
    register const int8_t *x0 __asm__("r1") = *px0;
    register const int8_t *x1 __asm__("r3") = *px1;
    register const int8_t *w0 __asm__("r5") = *pw0;
    register const int8_t *w1 __asm__("r11") = *pw1;
    register const int8_t *w2 __asm__("r9") = *pw2;
    int32_t i;
    for (i = 0; i < steps; ++i) {
        int8x16_t xa, xb, v;
        TCC_MVE_LD(xa, x0);
        TCC_MVE_LD(xb, x1);
        TCC_MVE_LD(v, w0);
        TCC_MVE_MLA(a0, xa, v);
        TCC_MVE_MLA(b0, xb, v);
        TCC_MVE_LD(v, w1);
        TCC_MVE_MLA(a1, xa, v);
        TCC_MVE_MLA(b1, xb, v);
        TCC_MVE_LD(v, w2);
        TCC_MVE_MLA(a2, xa, v);
        TCC_MVE_MLA(b2, xb, v);
    }
    *px0 = x0; *px1 = x1; *pw0 = w0; *pw1 = w1; *pw2 = w2;
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = b0; acc[4] = b1; acc[5] = b2;
}

/* dot products of `np` (1 or 2) rows x0, x1 with `nch` (1..3) weight rows w + k * n, n int8 each (literals after
 * inlining): 16 inputs per VLDRB (pointers post-incremented), VMLADAVA into scalar accumulators (at most 6: the
 * instruction takes even registers only, seven of them), a predicated last step for n % 16; the sums into r0[k]
 * (first row) and r1[k] */
TCC_INLINE void tcc_mve_dot2x3(const int8_t *x0, const int8_t *x1, const int8_t *w, int32_t n, int32_t np,
                               int32_t nch, int32_t *r0, int32_t *r1) {
    int32_t a0 = 0, a1 = 0, a2 = 0, b0 = 0, b1 = 0, b2 = 0, i;
    const int8_t *w0 = w, *w1 = w + n, *w2 = w + 2 * n;
    if (np > 1 && nch > 2 && n >= 16) {
        int32_t acc[6];
        tcc_mve_dot2x3_steps(&x0, &x1, &w0, &w1, &w2, n / 16, acc);
        a0 = acc[0]; a1 = acc[1]; a2 = acc[2]; b0 = acc[3]; b1 = acc[4]; b2 = acc[5];
        i = n - n % 16;
    } else {
        for (i = 0; i + 16 <= n; i += 16) {
            const int8x16_t xa = vldrbq_s8(x0);
            const int8x16_t xb = np > 1 ? vldrbq_s8(x1) : xa;
            int8x16_t v = vldrbq_s8(w0);
            x0 += 16;
            x1 += 16;
            w0 += 16;
            a0 = vmladavaq_s8(a0, xa, v);
            if (np > 1) b0 = vmladavaq_s8(b0, xb, v);
            if (nch > 1) {
                v = vldrbq_s8(w1);
                w1 += 16;
                a1 = vmladavaq_s8(a1, xa, v);
                if (np > 1) b1 = vmladavaq_s8(b1, xb, v);
            }
            if (nch > 2) {
                v = vldrbq_s8(w2);
                w2 += 16;
                a2 = vmladavaq_s8(a2, xa, v);
                if (np > 1) b2 = vmladavaq_s8(b2, xb, v);
            }
        }
    }
    (void)i;
    if (n % 16) {
        const mve_pred16_t pr = vctp8q((uint32_t)(n % 16));
        const int8x16_t xa = vldrbq_z_s8(x0, pr);
        const int8x16_t xb = np > 1 ? vldrbq_z_s8(x1, pr) : xa;
        int8x16_t v = vldrbq_z_s8(w0, pr);
        a0 = vmladavaq_s8(a0, xa, v);
        if (np > 1) b0 = vmladavaq_s8(b0, xb, v);
        if (nch > 1) {
            v = vldrbq_z_s8(w1, pr);
            a1 = vmladavaq_s8(a1, xa, v);
            if (np > 1) b1 = vmladavaq_s8(b1, xb, v);
        }
        if (nch > 2) {
            v = vldrbq_z_s8(w2, pr);
            a2 = vmladavaq_s8(a2, xa, v);
            if (np > 1) b2 = vmladavaq_s8(b2, xb, v);
        }
    }
    r0[0] = a0;
    if (nch > 1) r0[1] = a1;
    if (nch > 2) r0[2] = a2;
    if (np > 1) {
        r1[0] = b0;
        if (nch > 1) r1[1] = b1;
        if (nch > 2) r1[2] = b2;
    }
}

/* the sum of n int8 (VADDVA, 16 per step): a weight row's sum for the input zero point's share of the bias */
TCC_INLINE int32_t tcc_mve_sum8(const int8_t *w, int32_t n) {
    int32_t s = 0, i;
    for (i = 0; i < n; i += 16) {
        s = vaddvaq_p_s8(s, vldrbq_z_s8(w + i, vctp8q((uint32_t)(n - i))), vctp8q((uint32_t)(n - i)));
    }
    return s;
}

/* n bytes from src to dst, 16 per predicated VLDRB/VSTRB (the last one partial) */
TCC_INLINE void tcc_mve_copy(int8_t *dst, const int8_t *src, int32_t n) {
    int32_t i;
    for (i = 0; i < n; i += 16) {
        const mve_pred16_t pr = vctp8q((uint32_t)(n - i));
        vstrbq_p_s8(dst + i, vldrbq_z_s8(src + i, pr), pr);
    }
}

/* n bytes of dst set to v */
TCC_INLINE void tcc_mve_fill(int8_t *dst, int8_t v, int32_t n) {
    const int8x16_t d = vdupq_n_s8(v);
    int32_t i;
    for (i = 0; i < n; i += 16) {
        vstrbq_p_s8(dst + i, d, vctp8q((uint32_t)(n - i)));
    }
}
#else
#define TCC_MVE 0
#endif

#endif
