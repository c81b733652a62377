/* tinycc generated-kernel helpers: inlined into the per-layer functions that tinycc emits into model.c, where
 * every size, stride and offset is a literal, so the compiler turns the offsets below into immediates.
 * Arithmetic is TFLite's (MultiplyByQuantizedMultiplier with double rounding), bit-exact with tinycc_kernels.c.
 * With the DSP extension (Cortex-M4/M7: __ARM_FEATURE_DSP) the dot products use ACLE SIMD intrinsics: four int8
 * values are widened into two pairs of int16 (__sxtb16 lanes 0/2 and, rotated by 8, lanes 1/3), the input zero
 * point is subtracted in the same instruction (__sxtab16 with the negated zero point in both halves) and
 * __smlad does two multiply-accumulates. Inputs and weights are widened the same way, so the lanes match
 * without re-packing. On ARMv6-M (Cortex-M0/M0+) the dot products are Thumb-1 assembly loops and the
 * requantization avoids the 64-bit multiply (TCC_V6M, below). Everywhere else (AVR, the host) the same loops run
 * in portable C. */
#ifndef TINYCC_GEN_H
#define TINYCC_GEN_H

#include <string.h>

#include "tinycc_port.h"

/* Layer functions: never inlined into the schedule (one register allocation per layer) and, with GCC on
 * 32-bit targets, optimized at -O2 whatever the project's flags: at -Os GCC spills the 2x2 block's
 * accumulators inside the inner loop (38 instead of 23 instructions per 16 MACs on Cortex-M4). Without a frame
 * pointer whatever the project's flags: the depthwise blocks use 14 registers (r7 included). */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__AVR__)
#define TCC_LAYER static __attribute__((noinline, optimize("O2", "omit-frame-pointer")))
#elif defined(__GNUC__)
#define TCC_LAYER static __attribute__((noinline))
#else
#define TCC_LAYER static
#endif
#if defined(__GNUC__)
#define TCC_INLINE static inline __attribute__((always_inline))
#else
#define TCC_INLINE static inline
#endif

#if defined(__ARM_FEATURE_DSP) && !defined(__AVR__)
#include <arm_acle.h>
#define TCC_DSP 1
#else
#define TCC_DSP 0
#endif

/* ARMv6-M (Cortex-M0/M0+/M1) with GCC: Thumb-1 dot-product loops and a requantization without 64-bit multiply
 * (-DTCC_NO_V6M_ASM selects the portable C loops). The loops use at most seven low registers, so r7 may be the
 * frame pointer (-fno-omit-frame-pointer, -O0). */
#if defined(__ARM_ARCH_6M__) && defined(__GNUC__) && !defined(__clang__) && !defined(TCC_NO_V6M_ASM)
#define TCC_V6M 1
#else
#define TCC_V6M 0
#endif

/* (int32_t)(((int64_t)x * m + 2^30) >> 31) for 0 <= m < 2^31: SaturatingRoundingDoublingHighMul's product before
 * its sign correction. ARMv6-M has no 32x32->64 multiply (GCC calls __aeabi_lmul): there it is four 16x16
 * products, x = xh * 2^16 + xl and m = mh * 2^16 + ml with xl, ml unsigned, summed in 32 bits in two parts
 * whose floors by 2^15 add up with one carry; exact for every x and m (tests/test_kernels.py checks it). */
#ifndef TCC_HMUL16
#define TCC_HMUL16 TCC_V6M /* a test sets it to check the 16-bit form on the host */
#endif
TCC_INLINE int32_t tcc_hmul31(int32_t x, int32_t m) {
#if TCC_HMUL16
    const int32_t xh = x >> 16, mh = m >> 16;
    const uint32_t xl = (uint32_t)x & 0xFFFFu, ml = (uint32_t)m & 0xFFFFu;
    const int32_t r1 = xh * (int32_t)ml;                                         /* |r1| < 2^31 */
    const uint32_t r2 = xl * (uint32_t)mh + ((xl * ml) >> 16) + (1u << 14);      /* < 2^31 */
    const uint32_t carry = (((uint32_t)r1 & 0x7FFFu) + (r2 & 0x7FFFu)) >> 15;
    return (int32_t)((uint32_t)(xh * mh) * 2u + (uint32_t)(r1 >> 15) + (r2 >> 15) + carry);
#else
    return (int32_t)(((int64_t)x * m + ((int64_t)1 << 30)) >> 31);
#endif
}

/* MultiplyByQuantizedMultiplier: SaturatingRoundingDoublingHighMul then RoundingDivideByPOT. The multiplier is
 * positive (QuantizeMultiplier), so the high multiply never saturates and its round-half-away-from-zero
 * equals adding 2^30 and shifting the 64-bit product right by 31 (one smlal + shift on Cortex-M4). */
TCC_INLINE int32_t tcc_requant(int32_t x, int32_t mult, int32_t shift) {
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t h = tcc_hmul31((int32_t)((uint32_t)x << left), mult);
    const int32_t mask = (int32_t)(((uint32_t)1 << right) - 1u);
    const int32_t threshold = (mask >> 1) + (h < 0 ? 1 : 0);
    return (h >> right) + ((h & mask) > threshold ? 1 : 0);
}

/* the same for a shift <= 0 (right = -shift >= 0), the common case, known when the layer is generated */
TCC_INLINE int32_t tcc_requant_r(int32_t x, int32_t mult, int32_t right) {
    const int32_t h = tcc_hmul31(x, mult);
    const int32_t mask = (int32_t)(((uint32_t)1 << right) - 1u);
    const int32_t threshold = (mask >> 1) + (int32_t)((uint32_t)h >> 31);
    return (h >> right) + ((h & mask) > threshold ? 1 : 0);
}

/* the same for 1 <= right <= 30 when the kernel generator has proved |x| + 2^(right-1) < 2^31 (from the
 * layer's weights and bias): then RoundingDivideByPOT is one add of half minus the sign and a shift */
TCC_INLINE int32_t tcc_requant_rf(int32_t x, int32_t mult, int32_t right) {
    const int32_t h = tcc_hmul31(x, mult);
    return (h + (((int32_t)1 << right) >> 1) - (int32_t)((uint32_t)h >> 31)) >> right;
}

/* tcc_requant_rf for |x| < 2^30 (proved by the kernel generator): then 2x fits in 32 bits and the high multiply
 * (x * m + 2^30) >> 31 equals (2x * m + 2^31) >> 32, one smmulr on DSP cores (instead of two moves, an smlal and
 * the 64-bit shift) */
TCC_INLINE int32_t tcc_requant_rf30(int32_t x, int32_t mult, int32_t right) {
#if TCC_DSP && defined(__GNUC__)
    int32_t h;
    __asm__("smmulr %0, %1, %2" : "=r"(h) : "r"(x * 2), "r"(mult));
    return (h + (((int32_t)1 << right) >> 1) - (int32_t)((uint32_t)h >> 31)) >> right;
#else
    return tcc_requant_rf(x, mult, right);
#endif
}

/* tcc_requant_r for 0 <= right <= 29 when the kernel generator has proved 2|x| + 2^right + 1 < 2^31 (so |x| < 2^30):
 * RoundingDivideByPOT(h, right) equals RoundingDivideByPOT(2h, right + 1) (the same quotient, ties away from
 * zero), whose shift is at least 1, so the short form applies even to channels that shift by 0 */
TCC_INLINE int32_t tcc_requant_rf0(int32_t x, int32_t mult, int32_t right) {
#if TCC_DSP && defined(__GNUC__)
    int32_t h;
    __asm__("smmulr %0, %1, %2" : "=r"(h) : "r"(x * 2), "r"(mult));
#else
    const int32_t h = tcc_hmul31(x, mult);
#endif
    return (h * 2 + ((int32_t)1 << right) - (int32_t)((uint32_t)h >> 31)) >> (right + 1);
}

/* tcc_requant_rf30(x, mult, right) + out_zp of an accumulator kept doubled (x2 = 2x, |x| < 2^30), with
 * c = 2^(right-1) + out_zp * 2^right (the zero point folded into the rounding constant: the kernel generator
 * proved the sums stay in 32 bits); the parameters come from the header of a channel pair's widened weights */
TCC_INLINE int32_t tcc_rq30d(int32_t x2, int32_t mult, int32_t c, int32_t right) {
#if TCC_DSP && defined(__GNUC__)
    /* one smmlar: c plus x2's sign accumulated under the rounded high product h (mult > 0, so h < 0 implies
     * x2 < 0; where x2 < 0 and h = 0 the two differ by 1 below c, which the shift by right >= 1 drops: c - 1
     * and c have the same quotient, c being 2^(right-1) modulo 2^right) */
    int32_t h;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(h) : "r"(x2), "r"(mult), "r"(c + (x2 >> 31)));
    return h >> right;
#else
    const int32_t h = tcc_hmul31(x2 / 2, mult);
    return (h + c - (int32_t)((uint32_t)h >> 31)) >> right;
#endif
}

/* tcc_requant_r with a right shift of 0 for |x| < 2^30: the high multiply alone (smmulr on DSP cores) */
TCC_INLINE int32_t tcc_requant_030(int32_t x, int32_t mult) {
#if TCC_DSP && defined(__GNUC__)
    int32_t h;
    __asm__("smmulr %0, %1, %2" : "=r"(h) : "r"(x * 2), "r"(mult));
    return h;
#else
    return tcc_hmul31(x, mult);
#endif
}

/* (x * m + 2^31) >> 32 for an even x (a doubled operand, |x| < 2^31) and 0 <= m < 2^31: the high multiply
 * (x / 2 * m + 2^30) >> 31 of the halved value, one smmulr on DSP cores */
TCC_INLINE int32_t tcc_hmul_doubled(int32_t x, int32_t mult) {
#if TCC_DSP && defined(__GNUC__)
    int32_t h;
    __asm__("smmulr %0, %1, %2" : "=r"(h) : "r"(x), "r"(mult));
    return h;
#else
    return tcc_hmul31(x / 2, mult);
#endif
}

TCC_INLINE int8_t tcc_clamp8(int32_t v, int32_t lo, int32_t hi) {
    v = v < lo ? lo : v;
    return (int8_t)(v > hi ? hi : v);
}

/* clamp to the whole int8 range (activation none/relu with the output zero point at -128): one ssat on DSP cores */
TCC_INLINE int8_t tcc_sat8(int32_t v) {
#if TCC_DSP
    return (int8_t)__ssat(v, 8);
#else
    return tcc_clamp8(v, -128, 127);
#endif
}

TCC_INLINE int8_t tcc_out8(int32_t acc, int32_t mult, int32_t shift, int32_t out_zp, int32_t lo, int32_t hi) {
    return tcc_clamp8(tcc_requant(acc, mult, shift) + out_zp, lo, hi);
}

TCC_INLINE int8_t tcc_out8_r(int32_t acc, int32_t mult, int32_t right, int32_t out_zp, int32_t lo, int32_t hi) {
    return tcc_clamp8(tcc_requant_r(acc, mult, right) + out_zp, lo, hi);
}

#if TCC_DSP
/* sign-extend bytes 1 and 3 (rotation folded into the instruction; GCC's ACLE has no rotating form) */
TCC_INLINE uint32_t tcc_sxtb16_r8(uint32_t v) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* off + sign-extended bytes 1 and 3 */
TCC_INLINE uint32_t tcc_sxtab16_r8(uint32_t off, uint32_t v) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(off), "r"(v));
    return r;
}

/* four int8 from any address (unaligned word loads are legal on ARMv7E-M) */
TCC_INLINE uint32_t tcc_word(const int8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* the negated zero point in both 16-bit halves */
TCC_INLINE uint32_t tcc_offset2(int32_t zp) { return ((uint32_t)(-zp) & 0xFFFFu) * 0x10001u; }

/* widen bytes 0/2 (tcc_x02) or 1/3 (tcc_x13) of v and add off (none for a literal zero point 0) */
#define tcc_x02(off, v, zp) (TCC_ZP_IS_ZERO(zp) ? __sxtb16(v) : __sxtab16((off), (v)))
#define tcc_x13(off, v, zp) (TCC_ZP_IS_ZERO(zp) ? tcc_sxtb16_r8(v) : tcc_sxtab16_r8((off), (v)))
#endif

/* a literal zero point 0 (the kernel generator folded it into the bias) needs no subtraction */
#if defined(__GNUC__)
#define TCC_ZP_IS_ZERO(zp) (__builtin_constant_p(zp) && (zp) == 0)
#else
#define TCC_ZP_IS_ZERO(zp) 0
#endif

/* ARMv6-M (Cortex-M0/M0+/M1, GCC): the dot products below run as hand-scheduled Thumb-1 loops. ldrsb has only a
 * register-offset form, so every stream is a pointer past its end indexed by one counter running from -n up to 0
 * (adds sets the flags: no compare). The 2x2 block keeps its accumulators in r8-r11 (add accepts high
 * registers), leaving the low registers to the four streams, the counter and two temporaries; GCC at -Os never
 * allocates r8-r11 (they are fixed for size on Thumb-1), so the loop saves and restores them itself. C instead
 * spills the accumulators: 7.75 instructions per multiply-accumulate where the loop below takes 3.75. */

#if TCC_V6M
/* GCC writes inline assembly in divided syntax and switches back to unified after it (Thumb-1): the loops state
 * unified syntax themselves. Per step one input is loaded twice rather than held in a third temporary; a non-zero zero point is subtracted
 * by adding its negation, kept in ip, after each input load */
#define TCC_V6M_2X2(ZP_ADD)                                                                                        \
    ".syntax unified\n\t"                                                                                          \
    "sub sp, #20\n\t"                                                                                              \
    "str %[a], [sp, #16]\n\t"                                                                                      \
    "mov ip, %[b]\n\t"                                                                                             \
    "mov %[b], r8\n\tstr %[b], [sp, #0]\n\t"                                                                       \
    "mov %[b], r9\n\tstr %[b], [sp, #4]\n\t"                                                                       \
    "mov %[b], r10\n\tstr %[b], [sp, #8]\n\t"                                                                      \
    "mov %[b], r11\n\tstr %[b], [sp, #12]\n\t"                                                                     \
    "ldr %[b], [%[a], #0]\n\tmov r8, %[b]\n\t"                                                                     \
    "ldr %[b], [%[a], #4]\n\tmov r9, %[b]\n\t"                                                                     \
    "ldr %[b], [%[a], #8]\n\tmov r10, %[b]\n\t"                                                                    \
    "ldr %[b], [%[a], #12]\n\tmov r11, %[b]\n\t"                                                                   \
    "1:\n\t"                                                                                                       \
    "ldrsb %[a], [%[xp], %[i]]\n\t" ZP_ADD                                                                         \
    "ldrsb %[b], [%[wp], %[i]]\n\t"                                                                                \
    "muls %[a], %[b], %[a]\n\t"                                                                                    \
    "add r8, %[a]\n\t"                                                                                             \
    "ldrsb %[a], [%[yp], %[i]]\n\t" ZP_ADD                                                                         \
    "muls %[b], %[a], %[b]\n\t"                                                                                    \
    "add r10, %[b]\n\t"                                                                                            \
    "ldrsb %[b], [%[vp], %[i]]\n\t"                                                                                \
    "muls %[a], %[b], %[a]\n\t"                                                                                    \
    "add r11, %[a]\n\t"                                                                                            \
    "ldrsb %[a], [%[xp], %[i]]\n\t" ZP_ADD                                                                         \
    "muls %[b], %[a], %[b]\n\t"                                                                                    \
    "add r9, %[b]\n\t"                                                                                             \
    "adds %[i], #1\n\t"                                                                                            \
    "bne 1b\n\t"                                                                                                   \
    "ldr %[a], [sp, #16]\n\t"                                                                                      \
    "mov %[b], r8\n\tstr %[b], [%[a], #0]\n\t"                                                                     \
    "mov %[b], r9\n\tstr %[b], [%[a], #4]\n\t"                                                                     \
    "mov %[b], r10\n\tstr %[b], [%[a], #8]\n\t"                                                                    \
    "mov %[b], r11\n\tstr %[b], [%[a], #12]\n\t"                                                                   \
    "ldr %[b], [sp, #0]\n\tmov r8, %[b]\n\t"                                                                       \
    "ldr %[b], [sp, #4]\n\tmov r9, %[b]\n\t"                                                                       \
    "ldr %[b], [sp, #8]\n\tmov r10, %[b]\n\t"                                                                      \
    "ldr %[b], [sp, #12]\n\tmov r11, %[b]\n\t"                                                                     \
    "add sp, #20"

/* acc[0..3] += the 2x2 block of tcc_dot2x2 for n >= 1 */
TCC_INLINE void tcc_v6m_dot2x2(const int8_t *x0, int32_t xs, const int8_t *w0, int32_t ws, int32_t n, int32_t zp,
                               int32_t *acc) {
    const int8_t *xp = x0 + n, *yp = x0 + xs + n, *wp = w0 + n, *vp = w0 + ws + n;
    int32_t i = -n, b = -zp;
    int32_t *a = acc;
    if (TCC_ZP_IS_ZERO(zp)) {
        __asm__ volatile(TCC_V6M_2X2("")
                         : [i] "+l"(i), [a] "+l"(a), [b] "+l"(b)
                         : [xp] "l"(xp), [yp] "l"(yp), [wp] "l"(wp), [vp] "l"(vp)
                         : "cc", "memory", "r12");
    } else {
        __asm__ volatile(TCC_V6M_2X2("add %[a], ip\n\t")
                         : [i] "+l"(i), [a] "+l"(a), [b] "+l"(b)
                         : [xp] "l"(xp), [yp] "l"(yp), [wp] "l"(wp), [vp] "l"(vp)
                         : "cc", "memory", "r12");
    }
}

/* one pixel, two channels, n >= 1, in seven low registers (r7 may be the frame pointer): the second channel's
 * sum collects in ip from 0 and is added to acc[1] after the loop; a non-zero zero point is added from r8, which
 * the loop saves and restores (GCC at -Os never allocates it) */
#define TCC_V6M_1X2(ZP_SAVE, ZP_ADD, ZP_RESTORE)                                                                   \
    ".syntax unified\n\t" ZP_SAVE                                                                                  \
    "movs %[b], #0\n\t"                                                                                            \
    "mov ip, %[b]\n\t"                                                                                             \
    "1:\n\t"                                                                                                       \
    "ldrsb %[a], [%[xp], %[i]]\n\t" ZP_ADD                                                                         \
    "ldrsb %[b], [%[wp], %[i]]\n\t"                                                                                \
    "muls %[b], %[a], %[b]\n\t"                                                                                    \
    "adds %[a0], %[a0], %[b]\n\t"                                                                                  \
    "ldrsb %[b], [%[vp], %[i]]\n\t"                                                                                \
    "muls %[b], %[a], %[b]\n\t"                                                                                    \
    "add ip, %[b]\n\t"                                                                                             \
    "adds %[i], #1\n\t"                                                                                            \
    "bne 1b\n\t"                                                                                                   \
    "mov %[b], ip\n\t" ZP_RESTORE
TCC_INLINE void tcc_v6m_dot1x2(const int8_t *x0, const int8_t *w0, int32_t ws, int32_t n, int32_t zp,
                               int32_t *acc) {
    const int8_t *xp = x0 + n, *wp = w0 + n, *vp = w0 + ws + n;
    int32_t i = -n, a = -zp, b, a0 = acc[0];
    if (TCC_ZP_IS_ZERO(zp)) {
        __asm__ volatile(TCC_V6M_1X2("", "", "")
                         : [i] "+l"(i), [a] "+l"(a), [b] "=&l"(b), [a0] "+l"(a0)
                         : [xp] "l"(xp), [wp] "l"(wp), [vp] "l"(vp)
                         : "cc", "memory", "r12");
    } else {
        __asm__ volatile(TCC_V6M_1X2("sub sp, #8\n\tmov %[b], r8\n\tstr %[b], [sp, #0]\n\tmov r8, %[a]\n\t",
                                     "add %[a], r8\n\t", "ldr %[a], [sp, #0]\n\tmov r8, %[a]\n\tadd sp, #8\n\t")
                         : [i] "+l"(i), [a] "+l"(a), [b] "=&l"(b), [a0] "+l"(a0)
                         : [xp] "l"(xp), [wp] "l"(wp), [vp] "l"(vp)
                         : "cc", "memory", "r12");
    }
    acc[0] = a0;
    acc[1] += b;
}
#endif

/* acc[0..3] += dot(x0, w0), dot(x0, w1), dot(x1, w0), dot(x1, w1) over n int8; x1 = x0 + xs, w1 = w0 + ws.
 * Inputs have the zero point zp subtracted; weights (flash) have zero point 0. Ordered so that the four
 * widened inputs, one widened weight and the accumulators fit the 13 free registers of a Cortex-M4. */
TCC_INLINE void tcc_dot2x2(const int8_t *x0, int32_t xs, const int8_t *w0, int32_t ws, int32_t n, int32_t zp,
                           int32_t *acc) {
    int32_t a00, a01, a10, a11;
#if TCC_V6M
    if (n > 0) {
        tcc_v6m_dot2x2(x0, xs, w0, ws, n, zp, acc);
    }
    return;
#endif
    a00 = acc[0];
    a01 = acc[1];
    a10 = acc[2];
    a11 = acc[3];
#if TCC_DSP
    const uint32_t off = tcc_offset2(zp);
    for (; n >= 4; n -= 4) {
        const uint32_t xa = tcc_word(x0), xb = tcc_word(x0 + xs);
        const uint32_t xa02 = tcc_x02(off, xa, zp), xa13 = tcc_x13(off, xa, zp);
        const uint32_t xb02 = tcc_x02(off, xb, zp), xb13 = tcc_x13(off, xb, zp);
        uint32_t w = tcc_word(w0), t = __sxtb16(w);
        a00 = __smlad(xa02, t, a00);
        a10 = __smlad(xb02, t, a10);
        t = tcc_sxtb16_r8(w);
        a00 = __smlad(xa13, t, a00);
        a10 = __smlad(xb13, t, a10);
        w = tcc_word(w0 + ws);
        t = __sxtb16(w);
        a01 = __smlad(xa02, t, a01);
        a11 = __smlad(xb02, t, a11);
        t = tcc_sxtb16_r8(w);
        a01 = __smlad(xa13, t, a01);
        a11 = __smlad(xb13, t, a11);
        x0 += 4;
        w0 += 4;
    }
#endif
    for (; n > 0; --n) {
        const int32_t xa = (int32_t)x0[0] - zp, xb = (int32_t)x0[xs] - zp;
        const int32_t wa = TCC_READ_S8(w0), wb = TCC_READ_S8(w0 + ws);
        a00 += xa * wa;
        a01 += xa * wb;
        a10 += xb * wa;
        a11 += xb * wb;
        ++x0;
        ++w0;
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

#if TCC_DSP
/* Widen n int8 (n a multiple of 4) once, for reuse by every output channel: per four inputs the two words
 * __sxtb16 makes (bytes 0/2 and 1/3, the zero point subtracted), the lane order the weights are widened to. */
TCC_INLINE void tcc_widen(const int8_t *x, uint32_t *dst, int32_t n, int32_t zp) {
    const uint32_t off = tcc_offset2(zp);
    for (; n > 0; n -= 4) {
        const uint32_t v = tcc_word(x);
        dst[0] = tcc_x02(off, v, zp);
        dst[1] = tcc_x13(off, v, zp);
        x += 4;
        dst += 2;
    }
}

/* tcc_dot2x2 on widened inputs: xw (pixel 0) and xw + xs (pixel 1, in words), n int8 weights (a multiple of 4) */
TCC_INLINE void tcc_dot2x2_w(const uint32_t *xw, int32_t xs, const int8_t *w0, int32_t ws, int32_t n,
                             int32_t *acc) {
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    const uint32_t *end = xw + n / 2;
    for (; xw < end; xw += 2) {
        const uint32_t xa02 = xw[0], xa13 = xw[1], xb02 = xw[xs], xb13 = xw[xs + 1];
        uint32_t w = tcc_word(w0), t = __sxtb16(w);
        a00 = __smlad(xa02, t, a00);
        a10 = __smlad(xb02, t, a10);
        t = tcc_sxtb16_r8(w);
        a00 = __smlad(xa13, t, a00);
        a10 = __smlad(xb13, t, a10);
        w = tcc_word(w0 + ws);
        t = __sxtb16(w);
        a01 = __smlad(xa02, t, a01);
        a11 = __smlad(xb02, t, a11);
        t = tcc_sxtb16_r8(w);
        a01 = __smlad(xa13, t, a01);
        a11 = __smlad(xb13, t, a11);
        w0 += 4;
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}
#endif

/* Cortex-M4/M7 with GCC (Thumb-2): the widened 2x2 block as a hand-scheduled loop, 18 instructions per 16
 * multiply-accumulates (C compiled by GCC takes 23: it recomputes the loop bound and, unrolled, spills). */
#if TCC_DSP && defined(__GNUC__) && defined(__thumb2__) && !defined(TCC_NO_DSP_ASM)
#define TCC_DSP_ASM 1
#else
#define TCC_DSP_ASM 0
#endif

#if TCC_DSP
/* Widen n int8 (a multiple of 4) of two pixels a and b once, interleaved for tcc_dot2x2_wi: per four inputs
 * a's bytes 0/2 and 1/3 then b's, the zero point subtracted. */
TCC_INLINE void tcc_widen2(const int8_t *a, const int8_t *b, uint32_t *dst, int32_t n, int32_t zp) {
    const uint32_t off = tcc_offset2(zp);
    for (; n > 0; n -= 4) {
        const uint32_t u = tcc_word(a), v = tcc_word(b);
        dst[0] = tcc_x02(off, u, zp);
        dst[1] = tcc_x13(off, u, zp);
        dst[2] = tcc_x02(off, v, zp);
        dst[3] = tcc_x13(off, v, zp);
        a += 4;
        b += 4;
        dst += 4;
    }
}

/* Widen n int8 (a multiple of 4) of one pixel into tcc_widen2's layout (its words 0 and 1 of every four; dst + 2
 * for the second pixel), the zero point subtracted: a window gathered tap row by tap row. */
TCC_INLINE void tcc_widen_il(const int8_t *a, uint32_t *dst, int32_t n, int32_t zp) {
    const uint32_t off = tcc_offset2(zp);
    for (; n > 0; n -= 4) {
        const uint32_t u = tcc_word(a);
        dst[0] = tcc_x02(off, u, zp);
        dst[1] = tcc_x13(off, u, zp);
        a += 4;
        dst += 4;
    }
}
#endif

#if TCC_DSP_ASM
/* acc[0..3] += the 2x2 block over nw words of tcc_widen2's interleaved inputs (nw / 4 steps of four inputs,
 * nw >= 4) and the int8 weights of two channels, w0 and w0 + WS (WS a literal, 4 <= WS <= 4099): per step two
 * ldrd, two weight words, four sxtb16, eight smlad (18 instructions with the loop's compare and branch; 17 with
 * two steps per iteration: TCC_DOT2X2_WI2). */
/* one step: four inputs of both pixels, both channels */
#define TCC_DOT2X2_WI_STEP(WS)                                                                                     \
    "ldr %[v], [%[w]], #4\n\t"                                                                                     \
    "ldrd %[r], %[s], [%[x], #8]\n\t"                                                                              \
    "ldrd %[p], %[q], [%[x]], #16\n\t"                                                                             \
    "sxtb16 %[t], %[v]\n\t"                                                                                        \
    "smlad %[a00], %[p], %[t], %[a00]\n\t"                                                                         \
    "smlad %[a10], %[r], %[t], %[a10]\n\t"                                                                         \
    "sxtb16 %[v], %[v], ror #8\n\t"                                                                                \
    "smlad %[a00], %[q], %[v], %[a00]\n\t"                                                                         \
    "smlad %[a10], %[s], %[v], %[a10]\n\t"                                                                         \
    "ldr %[v], [%[w], #" #WS " - 4]\n\t"                                                                           \
    "sxtb16 %[t], %[v]\n\t"                                                                                        \
    "smlad %[a01], %[p], %[t], %[a01]\n\t"                                                                         \
    "smlad %[a11], %[r], %[t], %[a11]\n\t"                                                                         \
    "sxtb16 %[v], %[v], ror #8\n\t"                                                                                \
    "smlad %[a01], %[q], %[v], %[a01]\n\t"                                                                         \
    "smlad %[a11], %[s], %[v], %[a11]\n\t"
#define TCC_DOT2X2_WI_NONE(WS) ""
#define TCC_DOT2X2_WI(xw, nw, w0, WS, acc) TCC_DOT2X2_WI_(xw, nw, w0, WS, acc, TCC_DOT2X2_WI_NONE)
/* the same with two steps per iteration, for nw a multiple of 8: one compare and branch per 32 MACs */
#define TCC_DOT2X2_WI2(xw, nw, w0, WS, acc) TCC_DOT2X2_WI_(xw, nw, w0, WS, acc, TCC_DOT2X2_WI_STEP)
#define TCC_DOT2X2_WI_(xw, nw, w0, WS, acc, MORE)                                                                  \
    do {                                                                                                           \
        const uint32_t *tcc_x_ = (xw), *tcc_end_ = (xw) + (nw);                                                    \
        const int8_t *tcc_w_ = (w0);                                                                               \
        int32_t tcc_a00_ = (acc)[0], tcc_a01_ = (acc)[1], tcc_a10_ = (acc)[2], tcc_a11_ = (acc)[3];                \
        uint32_t tcc_p_, tcc_q_, tcc_r_, tcc_s_, tcc_v_, tcc_t_;                                                   \
        __asm__("1:\n\t" TCC_DOT2X2_WI_STEP(WS) MORE(WS)                                                           \
                "cmp %[x], %[end]\n\t"                                                                             \
                "bne 1b"                                                                                           \
                : [a00] "+r"(tcc_a00_), [a01] "+r"(tcc_a01_), [a10] "+r"(tcc_a10_), [a11] "+r"(tcc_a11_),          \
                  [x] "+r"(tcc_x_), [w] "+r"(tcc_w_), [p] "=&r"(tcc_p_), [q] "=&r"(tcc_q_), [r] "=&r"(tcc_r_),    \
                  [s] "=&r"(tcc_s_), [v] "=&r"(tcc_v_), [t] "=&r"(tcc_t_)                                          \
                : [end] "r"(tcc_end_)                                                                              \
                : "cc", "memory");                                                                                 \
        (acc)[0] = tcc_a00_;                                                                                       \
        (acc)[1] = tcc_a01_;                                                                                       \
        (acc)[2] = tcc_a10_;                                                                                       \
        (acc)[3] = tcc_a11_;                                                                                       \
    } while (0)
#endif

#if TCC_DSP_ASM
/* acc[0..3] += the 2x2 block over nw words of tcc_widen2's interleaved inputs (nw / 4 steps of four inputs) and
 * two channels' weights widened at compile time (kernels/common.py widened_pairs: per four inputs channel 0's
 * words for inputs 0/2 and 1/3, then channel 1's): per step four ldrd and eight smlad, no weight widening in
 * the loop (12 instructions per 16 multiply-accumulates). STEPS: how many TCC_DOT2X2_WW_STEP per compare and
 * branch (the kernel generator unrolls short dot products into a single pass). */
#define TCC_DOT2X2_WW_STEP                                                                                         \
    "ldrd %[r], %[s], [%[x], #8]\n\t"                                                                              \
    "ldrd %[p], %[q], [%[x]], #16\n\t"                                                                             \
    "ldrd %[t], %[v], [%[w]], #16\n\t"                                                                             \
    "smlad %[a00], %[p], %[t], %[a00]\n\t"                                                                         \
    "smlad %[a10], %[r], %[t], %[a10]\n\t"                                                                         \
    "smlad %[a00], %[q], %[v], %[a00]\n\t"                                                                         \
    "smlad %[a10], %[s], %[v], %[a10]\n\t"                                                                         \
    "ldrd %[t], %[v], [%[w], #-8]\n\t"                                                                             \
    "smlad %[a01], %[p], %[t], %[a01]\n\t"                                                                         \
    "smlad %[a11], %[r], %[t], %[a11]\n\t"                                                                         \
    "smlad %[a01], %[q], %[v], %[a01]\n\t"                                                                         \
    "smlad %[a11], %[s], %[v], %[a11]\n\t"
/* n steps in a row (the kernel generator's STEPS argument: a short line in model.c) */
#define TCC_WW_STEPS_1 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_2 TCC_WW_STEPS_1 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_3 TCC_WW_STEPS_2 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_4 TCC_WW_STEPS_3 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_5 TCC_WW_STEPS_4 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_6 TCC_WW_STEPS_5 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_7 TCC_WW_STEPS_6 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_8 TCC_WW_STEPS_7 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_9 TCC_WW_STEPS_8 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_10 TCC_WW_STEPS_9 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_11 TCC_WW_STEPS_10 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_12 TCC_WW_STEPS_11 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_13 TCC_WW_STEPS_12 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_14 TCC_WW_STEPS_13 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_15 TCC_WW_STEPS_14 TCC_DOT2X2_WW_STEP
#define TCC_WW_STEPS_16 TCC_WW_STEPS_15 TCC_DOT2X2_WW_STEP
#define TCC_DOT2X2_WW_(xw, nw, ww, acc, STEPS)                                                                     \
    do {                                                                                                           \
        const uint32_t *tcc_x_ = (xw), *tcc_end_ = (xw) + (nw);                                                    \
        const int32_t *tcc_w_ = (ww);                                                                              \
        int32_t tcc_a00_ = (acc)[0], tcc_a01_ = (acc)[1], tcc_a10_ = (acc)[2], tcc_a11_ = (acc)[3];                \
        uint32_t tcc_p_, tcc_q_, tcc_r_, tcc_s_, tcc_v_, tcc_t_;                                                   \
        __asm__("1:\n\t" STEPS                                                                                     \
                "cmp %[x], %[end]\n\t"                                                                             \
                "bne 1b"                                                                                           \
                : [a00] "+r"(tcc_a00_), [a01] "+r"(tcc_a01_), [a10] "+r"(tcc_a10_), [a11] "+r"(tcc_a11_),          \
                  [x] "+r"(tcc_x_), [w] "+r"(tcc_w_), [p] "=&r"(tcc_p_), [q] "=&r"(tcc_q_), [r] "=&r"(tcc_r_),    \
                  [s] "=&r"(tcc_s_), [v] "=&r"(tcc_v_), [t] "=&r"(tcc_t_)                                          \
                : [end] "r"(tcc_end_)                                                                              \
                : "cc", "memory");                                                                                 \
        (acc)[0] = tcc_a00_;                                                                                       \
        (acc)[1] = tcc_a01_;                                                                                       \
        (acc)[2] = tcc_a10_;                                                                                       \
        (acc)[3] = tcc_a11_;                                                                                       \
    } while (0)
/* TCC_DOT2X2_WW_ for a dot product whose STEPS cover all nw / 4 steps: one pass, no loop */
#define TCC_DOT2X2_WW1_(xw, ww, acc, STEPS)                                                                        \
    do {                                                                                                           \
        const uint32_t *tcc_x_ = (xw);                                                                             \
        const int32_t *tcc_w_ = (ww);                                                                              \
        int32_t tcc_a00_ = (acc)[0], tcc_a01_ = (acc)[1], tcc_a10_ = (acc)[2], tcc_a11_ = (acc)[3];                \
        uint32_t tcc_p_, tcc_q_, tcc_r_, tcc_s_, tcc_v_, tcc_t_;                                                   \
        __asm__(STEPS                                                                                              \
                : [a00] "+r"(tcc_a00_), [a01] "+r"(tcc_a01_), [a10] "+r"(tcc_a10_), [a11] "+r"(tcc_a11_),          \
                  [x] "+r"(tcc_x_), [w] "+r"(tcc_w_), [p] "=&r"(tcc_p_), [q] "=&r"(tcc_q_), [r] "=&r"(tcc_r_),    \
                  [s] "=&r"(tcc_s_), [v] "=&r"(tcc_v_), [t] "=&r"(tcc_t_)                                          \
                :                                                                                                  \
                : "memory");                                                                                       \
        (acc)[0] = tcc_a00_;                                                                                       \
        (acc)[1] = tcc_a01_;                                                                                       \
        (acc)[2] = tcc_a10_;                                                                                       \
        (acc)[3] = tcc_a11_;                                                                                       \
    } while (0)
/* TCC_DOT2X2_WW(1)_ with the pair's rq_header (2b0 2b1 m0 m1 c0 c1 r0 r1, then the widened weights at q + 8) and
 * the requantization in the same assembly block (GCC's register allocation around a separate block spilled):
 * the accumulators from the doubled bias, the steps, then per output add, smmlar, asr, ssat, strb of
 * tcc_sat8(tcc_rq30d(...)) stored at y (pixel 0, channels 0/1) and y + OC (pixel 1; OC a literal). ``nw`` words
 * of inputs (the looping form, STEPS per compare and branch; the single pass covers them all). */
#define TCC_RQ_OUT_(a, m, c, r, off)                                                                               \
    "add %[t], %[" #c "], %[" #a "], asr #31\n\t"                                                                   \
    "smmlar %[" #a "], %[" #a "], %[" #m "], %[t]\n\t"                                                              \
    "asr %[" #a "], %[" #a "], %[" #r "]\n\t"                                                                       \
    "ssat %[" #a "], #8, %[" #a "]\n\t"                                                                             \
    "strb %[" #a "], [%[y], #" off "]\n\t"
/* the six parameters from the header at %[x] (free after the steps) into p q r s v w, then the four outputs */
#define TCC_RQ2X2_TAIL_(OC)                                                                                        \
    "ldrd %[p], %[q], [%[x], #8]\n\t"                                                                               \
    "ldrd %[r], %[s], [%[x], #16]\n\t"                                                                              \
    "ldrd %[v], %[w], [%[x], #24]\n\t"                                                                              \
    TCC_RQ_OUT_(a00, p, r, v, "0") TCC_RQ_OUT_(a10, p, r, v, #OC)                                                  \
    TCC_RQ_OUT_(a01, q, s, w, "1") TCC_RQ_OUT_(a11, q, s, w, #OC "+1")
#define TCC_DOT2X2_RQ_HEAD_                                                                                        \
    "ldrd %[a00], %[a01], [%[w]], #32\n\t"                                                                          \
    "mov %[a10], %[a00]\n\t"                                                                                       \
    "mov %[a11], %[a01]\n\t"
#define TCC_DOT2X2_RQ_OPERANDS_                                                                                    \
    : [a00] "=&r"(tcc_a00_), [a01] "=&r"(tcc_a01_), [a10] "=&r"(tcc_a10_), [a11] "=&r"(tcc_a11_), [x] "+r"(tcc_x_),   \
      [w] "+r"(tcc_w_), [p] "=&r"(tcc_p_), [q] "=&r"(tcc_q_), [r] "=&r"(tcc_r_), [s] "=&r"(tcc_s_),                \
      [v] "=&r"(tcc_v_), [t] "=&r"(tcc_t_)
#define TCC_DOT2X2_RQ1_(xw, qp, yp, OC, NSTEPS, STEPS)                                                             \
    do {                                                                                                           \
        const uint32_t *tcc_x_ = (xw);                                                                             \
        const int32_t *tcc_w_ = (qp);                                                                              \
        int32_t tcc_a00_, tcc_a01_, tcc_a10_, tcc_a11_;                                                            \
        uint32_t tcc_p_, tcc_q_, tcc_r_, tcc_s_, tcc_v_, tcc_t_;                                                   \
        __asm__ volatile(TCC_DOT2X2_RQ_HEAD_ STEPS                                                                 \
                         "sub %[x], %[w], #32 + 16 * " #NSTEPS "\n\t" TCC_RQ2X2_TAIL_(OC)                          \
                         TCC_DOT2X2_RQ_OPERANDS_                                                                   \
                         : [y] "r"(yp)                                                                             \
                         : "memory");                                                                              \
    } while (0)
#define TCC_DOT2X2_RQ_(xw, nw, qp, yp, OC, STEPS)                                                                  \
    do {                                                                                                           \
        const uint32_t *tcc_x_ = (xw);                                                                             \
        const int32_t *tcc_w_ = (qp);                                                                              \
        int32_t tcc_a00_, tcc_a01_, tcc_a10_, tcc_a11_;                                                            \
        uint32_t tcc_p_, tcc_q_, tcc_r_, tcc_s_, tcc_v_, tcc_t_;                                                   \
        __asm__ volatile(TCC_DOT2X2_RQ_HEAD_ "1:\n\t" STEPS                                                        \
                         "cmp %[x], %[end]\n\t"                                                                     \
                         "bne 1b\n\t"                                                                               \
                         "sub %[x], %[w], #32 + 4 * " #nw "\n\t" TCC_RQ2X2_TAIL_(OC)                               \
                         TCC_DOT2X2_RQ_OPERANDS_                                                                   \
                         : [y] "r"(yp), [end] "r"((xw) + (nw))                                                     \
                         : "cc", "memory");                                                                        \
    } while (0)
/* The 1x1 GEMM's pixel pair against every channel pair in one assembly block (kernels/gemm.py gemm_words):
 * per pair of output channels a record 2b0 2b1 2b0 2b1 (the doubled biases, loaded straight into the four
 * accumulators), the weights widened at compile time (per four inputs channel 0's words for inputs 0/2 and 1/3,
 * then channel 1's) and m0 m1 c0 c1 r0 r1 (tcc_rq30d's multiplier, rounding constant with the output zero point,
 * right shift). Registers are fixed so that one ldm loads four widened inputs (r0-r3) and one ldm four weight
 * words (r4-r7): per step of four inputs two ldm and eight smlad (10 instructions per 16 multiply-accumulates);
 * accumulators r8-r11, inputs r12, weights lr. The output pointer and the inputs' end live in two words the
 * block stores below the stack pointer (every register is busy in the steps); the last record's r1 carries bit 8
 * (asr reads a register shift's low byte only), which ends the loop over the records (tst, beq). Outputs: sat8 of
 * tcc_rq30d, pixel 0 at y and y + 1, pixel 1 at y + OC (OC a literal <= 4094). STEPS:
 * TCC_GS_ONE_(TCC_GS_n(TCC_G2_)) (all nw / 4 steps in one pass) or TCC_GS_LOOP_(TCC_GS_n(TCC_G2_)) (n steps per
 * compare and branch). TCC_GEMM1_: the same for one pixel (an odd last one) widened by tcc_widen_il (its words 0
 * and 1 of every four), TCC_G1_ steps of one ldrd, one ldm and four smlad. WIDEN: the inputs at x (r3, int8,
 * any alignment) widened into xw first (TCC_GW_ONE_/TCC_GW_LOOP_ of TCC_GW2_(IC) or TCC_GW1_: a zero point of
 * 0; the pair's second pixel IC bytes on), or "" where the caller widened them. */
#define TCC_G2_ \
    "ldm r12!, {r0-r3}\n\t" \
    "ldm lr!, {r4-r7}\n\t" \
    "smlad r8, r0, r4, r8\n\t" \
    "smlad r10, r2, r4, r10\n\t" \
    "smlad r9, r0, r6, r9\n\t" \
    "smlad r11, r2, r6, r11\n\t" \
    "smlad r8, r1, r5, r8\n\t" \
    "smlad r10, r3, r5, r10\n\t" \
    "smlad r9, r1, r7, r9\n\t" \
    "smlad r11, r3, r7, r11\n\t"
#define TCC_G1_ \
    "ldrd r0, r1, [r12], #16\n\t" \
    "ldm lr!, {r4-r7}\n\t" \
    "smlad r8, r0, r4, r8\n\t" \
    "smlad r9, r0, r6, r9\n\t" \
    "smlad r8, r1, r5, r8\n\t" \
    "smlad r9, r1, r7, r9\n\t"
#define TCC_GS_1(S) S
#define TCC_GS_2(S) S S
#define TCC_GS_3(S) S S S
#define TCC_GS_4(S) TCC_GS_2(S) TCC_GS_2(S)
#define TCC_GS_5(S) TCC_GS_4(S) S
#define TCC_GS_6(S) TCC_GS_4(S) TCC_GS_2(S)
#define TCC_GS_7(S) TCC_GS_4(S) TCC_GS_3(S)
#define TCC_GS_8(S) TCC_GS_4(S) TCC_GS_4(S)
#define TCC_GS_9(S) TCC_GS_8(S) S
#define TCC_GS_10(S) TCC_GS_8(S) TCC_GS_2(S)
#define TCC_GS_11(S) TCC_GS_8(S) TCC_GS_3(S)
#define TCC_GS_12(S) TCC_GS_8(S) TCC_GS_4(S)
#define TCC_GS_13(S) TCC_GS_8(S) TCC_GS_5(S)
#define TCC_GS_14(S) TCC_GS_8(S) TCC_GS_6(S)
#define TCC_GS_15(S) TCC_GS_8(S) TCC_GS_7(S)
#define TCC_GS_16(S) TCC_GS_8(S) TCC_GS_8(S)
#define TCC_GS_ONE_(S) S
#define TCC_GS_LOOP_(S) "2:\n\t" S "ldr r0, [sp, #4]\n\tcmp r12, r0\n\tbne 2b\n\t"
/* four inputs of both pixels widened: a's bytes 0/2 and 1/3 then b's (tcc_widen2's layout) */
#define TCC_GW2_(IC) \
    "ldr r4, [r3, #" #IC "]\n\t" \
    "ldr r5, [r3], #4\n\t" \
    "sxtb16 r6, r5\n\t" \
    "sxtb16 r7, r5, ror #8\n\t" \
    "sxtb16 r8, r4\n\t" \
    "sxtb16 r9, r4, ror #8\n\t" \
    "stm r12!, {r6-r9}\n\t"
/* four inputs of one pixel widened into the first two words of four (tcc_widen_il's layout) */
#define TCC_GW1_ \
    "ldr r5, [r3], #4\n\t" \
    "sxtb16 r6, r5\n\t" \
    "sxtb16 r7, r5, ror #8\n\t" \
    "strd r6, r7, [r12], #16\n\t"
#define TCC_GW_ONE_(S, nw) S "sub r12, r12, #4 * " #nw "\n\t"
#define TCC_GW_LOOP_(S, nw) "3:\n\t" S "cmp r12, r2\n\tbne 3b\n\tsub r12, r12, #4 * " #nw "\n\t"
/* one output: r<a> = sat8(tcc_rq30d(r<a>, r<m>, r<c>, r<s>)) (r7 scratch) */
#define TCC_GQ_(a, m, c, s) \
    "add r7, " c ", " a ", asr #31\n\t" \
    "smmlar " a ", " a ", " m ", r7\n\t" \
    "asr " a ", " a ", " s "\n\t" \
    "ssat " a ", #8, " a "\n\t"
/* the block's frame: y, the records' end and the inputs' end pushed, per channel pair the biases, the steps,
 * the requantization parameters, OUT (outputs stored at [r0], r0 advanced by 2), the next pair */
#define TCC_GEMM_(x, xw, nw, ww, yp, WIDEN, STEPS, OUT) \
    do { \
        register const int8_t *tcc_i_ __asm__("r3") = (x); \
        register uint32_t *tcc_x_ __asm__("r12") = (xw); \
        register const int32_t *tcc_w_ __asm__("lr") = (ww); \
        register int8_t *tcc_y_ __asm__("r0") = (yp); \
        register const uint32_t *tcc_xe_ __asm__("r2") = (xw) + (nw); \
        __asm__ volatile("str r0, [sp, #-8]!\n\t" /* a pre-indexed store: backends/c/stack.py counts it */ \
                         "str r2, [sp, #4]\n\t" WIDEN \
                         "1:\n\t" \
                         "ldm lr!, {r8-r11}\n\t" STEPS \
                         "ldm lr!, {r1-r6}\n\t" \
                         "ldr r0, [sp]\n\t" OUT \
                         "str r0, [sp]\n\t" \
                         "sub r12, r12, #4 * " #nw "\n\t" \
                         "tst r6, #256\n\t" \
                         "beq 1b\n\t" \
                         "add sp, sp, #8" \
                         : "+r"(tcc_x_), "+r"(tcc_w_), "+r"(tcc_y_), "+r"(tcc_xe_), "+r"(tcc_i_) \
                         : \
                         : "r1", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "cc", "memory"); \
    } while (0)
#define TCC_GEMM2_(x, xw, nw, ww, yp, OC, WIDEN, STEPS) \
    TCC_GEMM_(x, xw, nw, ww, yp, WIDEN, STEPS, \
              TCC_GQ_("r8", "r1", "r3", "r5") TCC_GQ_("r10", "r1", "r3", "r5") \
              TCC_GQ_("r9", "r2", "r4", "r6") TCC_GQ_("r11", "r2", "r4", "r6") \
              "strb r10, [r0, #" #OC "]\n\t" \
              "strb r11, [r0, #" #OC " + 1]\n\t" \
              "strb r9, [r0, #1]\n\t" \
              "strb r8, [r0], #2\n\t")
#define TCC_GEMM1_(x, xw, nw, ww, yp, WIDEN, STEPS) \
    TCC_GEMM_(x, xw, nw, ww, yp, WIDEN, STEPS, \
              TCC_GQ_("r8", "r1", "r3", "r5") TCC_GQ_("r9", "r2", "r4", "r6") \
              "strb r9, [r0, #1]\n\t" \
              "strb r8, [r0], #2\n\t")
/* The 1x1 GEMM on 8 inputs, the whole layer in one assembly block (kernels/gemm.py gemm8_words): per pixel its
 * 8 inputs widened into r0-r3 and kept there for every output channel; per channel one ldm of its record
 * (2b, the four words of its doubled weights widened, m, c, r: r4-r11), four smlad, the requantization of
 * TCC_GQ_ and one strb: 10 instructions per output (8 multiply-accumulates). The input pointer, the records'
 * start and the outputs' end live in three words below the stack pointer; the last record's shift carries bit 8
 * (as in TCC_GEMM2_). CH: TCC_GS_n(TCC_G8_CH_), n channels per test and branch. */
#define TCC_G8_CH_ \
    "ldm lr!, {r4-r11}\n\t" \
    "smlad r4, r0, r5, r4\n\t" \
    "smlad r4, r1, r6, r4\n\t" \
    "smlad r4, r2, r7, r4\n\t" \
    "smlad r4, r3, r8, r4\n\t" \
    "add r5, r10, r4, asr #31\n\t" \
    "smmlar r4, r4, r9, r5\n\t" \
    "asr r4, r4, r11\n\t" \
    "ssat r4, #8, r4\n\t" \
    "strb r4, [r12], #1\n\t"
#define TCC_GEMM8_(x, ww, yp, npix, nch, CH) \
    do { \
        register const int8_t *tcc_i_ __asm__("r3") = (x); \
        register const int32_t *tcc_w_ __asm__("lr") = (ww); \
        register int8_t *tcc_y_ __asm__("r12") = (yp); \
        register int8_t *tcc_ye_ __asm__("r2") = (yp) + (npix) * (nch); \
        __asm__ volatile("str r3, [sp, #-12]!\n\t" /* a pre-indexed store: backends/c/stack.py counts it */ \
                         "strd lr, r2, [sp, #4]\n" \
                         "4:\n\t" \
                         "ldr r4, [sp]\n\t" \
                         "ldr r5, [r4, #4]\n\t" \
                         "ldr r6, [r4], #8\n\t" \
                         "str r4, [sp]\n\t" \
                         "sxtb16 r0, r6\n\t" \
                         "sxtb16 r1, r6, ror #8\n\t" \
                         "sxtb16 r2, r5\n\t" \
                         "sxtb16 r3, r5, ror #8\n\t" \
                         "ldr lr, [sp, #4]\n" \
                         "5:\n\t" CH \
                         "tst r11, #256\n\t" \
                         "beq 5b\n\t" \
                         "ldr r4, [sp, #8]\n\t" \
                         "cmp r12, r4\n\t" \
                         "bne 4b\n\t" \
                         "add sp, sp, #12" \
                         : "+r"(tcc_i_), "+r"(tcc_w_), "+r"(tcc_y_), "+r"(tcc_ye_) \
                         : \
                         : "r0", "r1", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "cc", "memory"); \
    } while (0)
/* a layer's compile-time widened weights: passed where the assembly loops are built, NULL elsewhere (the table
 * itself is only defined under TCC_DSP_ASM, so other targets' images do not carry it) */
#define TCC_WW(a) (a)
/* a layer's table that only the portable loops read (the assembly loops read the widened copy): NULL here, the
 * table itself defined only under !TCC_DSP_ASM, so every core's image carries exactly one copy */
#define TCC_PORTABLE(a) NULL
#else
#define TCC_WW(a) NULL
#define TCC_PORTABLE(a) (a)
#endif

/* acc[0..1] += dot(x0, w0), dot(x0, w0 + ws) over n int8 (one pixel, two output channels). */
TCC_INLINE void tcc_dot1x2(const int8_t *x0, const int8_t *w0, int32_t ws, int32_t n, int32_t zp, int32_t *acc) {
    int32_t a0, a1;
#if TCC_V6M
    if (n > 0) {
        tcc_v6m_dot1x2(x0, w0, ws, n, zp, acc);
    }
    return;
#endif
    a0 = acc[0];
    a1 = acc[1];
#if TCC_DSP
    const uint32_t off = tcc_offset2(zp);
    for (; n >= 4; n -= 4) {
        const uint32_t xa = tcc_word(x0), wa = tcc_word(w0), wb = tcc_word(w0 + ws);
        const uint32_t x02 = tcc_x02(off, xa, zp), x13 = tcc_x13(off, xa, zp);
        a0 = __smlad(x02, __sxtb16(wa), a0);
        a0 = __smlad(x13, tcc_sxtb16_r8(wa), a0);
        a1 = __smlad(x02, __sxtb16(wb), a1);
        a1 = __smlad(x13, tcc_sxtb16_r8(wb), a1);
        x0 += 4;
        w0 += 4;
    }
#endif
    for (; n > 0; --n) {
        const int32_t xa = (int32_t)x0[0] - zp;
        a0 += xa * TCC_READ_S8(w0);
        a1 += xa * TCC_READ_S8(w0 + ws);
        ++x0;
        ++w0;
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* dot(x0, w0) over n int8 (one pixel, one output channel: odd channel counts). */
TCC_INLINE int32_t tcc_dot1x1(const int8_t *x0, const int8_t *w0, int32_t n, int32_t zp, int32_t acc) {
#if TCC_DSP
    const uint32_t off = tcc_offset2(zp);
    for (; n >= 4; n -= 4) {
        const uint32_t xa = tcc_word(x0), wa = tcc_word(w0);
        acc = __smlad(tcc_x02(off, xa, zp), __sxtb16(wa), acc);
        acc = __smlad(tcc_x13(off, xa, zp), tcc_sxtb16_r8(wa), acc);
        x0 += 4;
        w0 += 4;
    }
#endif
    for (; n > 0; --n) {
        acc += ((int32_t)*x0 - zp) * TCC_READ_S8(w0);
        ++x0;
        ++w0;
    }
    return acc;
}

/* Depthwise: acc[0..3] += (x[c] - zp) * w[c] for four consecutive channels (one tap). */
TCC_INLINE void tcc_dwmac4(const int8_t *x, const int8_t *w, int32_t zp, int32_t *acc) {
#if TCC_DSP
    const uint32_t off = tcc_offset2(zp);
    const uint32_t xa = tcc_word(x), wa = tcc_word(w);
    const uint32_t x02 = tcc_x02(off, xa, zp), x13 = tcc_x13(off, xa, zp);
    const uint32_t w02 = __sxtb16(wa), w13 = tcc_sxtb16_r8(wa);
    acc[0] = __smlabb(x02, w02, acc[0]);
    acc[2] = __smlatt(x02, w02, acc[2]);
    acc[1] = __smlabb(x13, w13, acc[1]);
    acc[3] = __smlatt(x13, w13, acc[3]);
#else
    acc[0] += ((int32_t)x[0] - zp) * TCC_READ_S8(w);
    acc[1] += ((int32_t)x[1] - zp) * TCC_READ_S8(w + 1);
    acc[2] += ((int32_t)x[2] - zp) * TCC_READ_S8(w + 2);
    acc[3] += ((int32_t)x[3] - zp) * TCC_READ_S8(w + 3);
#endif
}

#if TCC_DSP
/* tcc_dwmac4 with the four weights already widened (tcc_widen of the layer's weights: bytes 0/2 in ww[0], 1/3 in
 * ww[1]), once per layer call instead of once per tap of every pixel */
TCC_INLINE void tcc_dwmac4_w(const int8_t *x, const uint32_t *ww, int32_t zp, int32_t *acc) {
    const uint32_t off = tcc_offset2(zp);
    const uint32_t xa = tcc_word(x);
    const uint32_t x02 = tcc_x02(off, xa, zp), x13 = tcc_x13(off, xa, zp);
    const uint32_t w02 = ww[0], w13 = ww[1];
    acc[0] = __smlabb(x02, w02, acc[0]);
    acc[2] = __smlatt(x02, w02, acc[2]);
    acc[1] = __smlabb(x13, w13, acc[1]);
    acc[3] = __smlatt(x13, w13, acc[3]);
}
#endif

/* Depthwise (backends/c/kernels/depthwise_fast.c.j2): requantize the doubled accumulator a = 2 * (bias' + sum) with
 * the channel's pair (m, cr), cr = (c << 8) | right and c = 2^(right-1) + out_zp * 2^right. TFLite's
 * RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(a / 2, m), right) + out_zp for 1 <= right <= 30: its sign
 * correction tests the high product's sign, which equals a's except where the product rounds to 0, and there
 * (0 + half - 1) >> right = (0 + half) >> right = 0; the output zero point times 2^right commutes with the floor
 * shift. On DSP cores: the high product and both additions in one smmlar, the shift by cr's low byte. */
TCC_INLINE int32_t tcc_dwq_c(int32_t a, int32_t m, int32_t c, int32_t right) {
    return (tcc_hmul31(a / 2, m) + c + (a < 0 ? -1 : 0)) >> right;
}
TCC_INLINE int32_t tcc_dwq(int32_t a, int32_t m, int32_t cr) {
#if TCC_DSP && defined(__GNUC__)
    int32_t h;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(h) : "r"(a), "r"(m), "r"((cr >> 8) + (a >> 31)));
    __asm__("asr %0, %0, %1" : "+r"(h) : "r"(cr));
    return h;
#else
    return tcc_dwq_c(a, m, cr >> 8, cr & 255);
#endif
}

/* int16-activation (16x8) layers (backends/c/kernels/conv16.py). Sums of int16 x int8 products stay in int32
 * (the generator checks |bias| + 32768 * sum|w| < 2^31 per channel, so every partial sum is exact); TFLite's
 * int64 requantization (MultiplyByQuantizedMultiplier with the multiplier reduced to 16 bits, one rounding shift
 * by total = 15 - shift >= 17) becomes (high word of a * m << s, + 2^(t-1)) >> t with s = max(0, 33 - total),
 * t = total + s - 32 >= 1: the same floor, since scaling both terms by 2^s leaves it unchanged. */
TCC_INLINE int32_t tcc16_pair(const int16_t *p) { /* two int16 from any even address, the first in the low half */
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}
TCC_INLINE int32_t tcc16_rq(int32_t a, int32_t m, int32_t t) {
    return ((int32_t)(((int64_t)a * m) >> 32) + ((int32_t)1 << (t - 1))) >> t;
}
TCC_INLINE int32_t tcc16_bias(const int64_t *b, int32_t o) { /* an int64 bias that fits int32: its low word */
    return TCC_READ_S32((const int32_t *)(const void *)(b + o));
}
/* the larger of each 16-bit half of two pairs (ssub16 + sel on DSP cores) */
TCC_INLINE int32_t tcc16_max2(int32_t a, int32_t b) {
#if TCC_DSP && defined(__GNUC__)
    int32_t t;
    __asm__("ssub16 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(t) : "r"(a), "r"(b) : "cc");
    return t;
#else
    const int32_t lo = (int16_t)a > (int16_t)b ? (int16_t)a : (int16_t)b;
    const int32_t hi = (a >> 16) > (b >> 16) ? (a >> 16) : (b >> 16);
    return (int32_t)(((uint32_t)hi << 16) | ((uint32_t)lo & 0xFFFFu));
#endif
}
#if TCC_DSP
#define tcc16_ssat(v) __ssat((v), 16)            /* clamp to [-32768, 32767] */
#define tcc16_usat(v) ((int32_t)__usat((v), 15)) /* clamp to [0, 32767] */
#define tcc16_smlad(x, w, a) ((int32_t)__smlad((uint32_t)(x), (uint32_t)(w), (a)))
#define tcc16_smlabb(x, w, a) __smlabb((x), (w), (a))
#define tcc16_smlatt(x, w, a) __smlatt((x), (w), (a))
#else
TCC_INLINE int32_t tcc16_ssat(int32_t v) { return v < -32768 ? -32768 : v > 32767 ? 32767 : v; }
TCC_INLINE int32_t tcc16_usat(int32_t v) { return v < 0 ? 0 : v > 32767 ? 32767 : v; }
TCC_INLINE int32_t tcc16_smlad(int32_t x, int32_t w, int32_t a) {
    return a + (int32_t)(int16_t)x * (int16_t)w + (x >> 16) * (w >> 16);
}
TCC_INLINE int32_t tcc16_smlabb(int32_t x, int32_t w, int32_t a) { return a + (int32_t)(int16_t)x * (int16_t)w; }
TCC_INLINE int32_t tcc16_smlatt(int32_t x, int32_t w, int32_t a) { return a + (x >> 16) * (w >> 16); }
#endif

#include "tinycc_mve.h" /* Helium helpers (TCC_MVE) */

/* the widened copy of a layer that has a Helium function (kernels/mve.py): only its scalar form under #else reads
 * it, so it is defined (under TCC_DSP_ASM && !TCC_MVE) and passed only where that form is built */
#if TCC_MVE
#define TCC_WW_SCALAR(a) NULL
#else
#define TCC_WW_SCALAR(a) TCC_WW(a)
#endif

#endif
