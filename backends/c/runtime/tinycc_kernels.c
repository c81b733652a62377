/* tinycc int8 and int16 kernels (C99, no heap, no VLAs). Arithmetic follows TFLite Micro's reference kernels.
 * The kernels both types share are written once in tinycc_kernels_tpl.h, included here for each. */
#include "tinycc_kernels.h"

#include <math.h>

/* small helpers of the per-element loops: inlined even at -Os (a call per element costs more than the body) */
#if defined(__GNUC__)
#define TCC_KINLINE static inline __attribute__((always_inline))
#else
#define TCC_KINLINE static inline
#endif

#define TCC_I32_MIN ((int32_t)(-2147483647L - 1L))
#define TCC_I32_MAX ((int32_t)2147483647L)

static int32_t srdhm(int32_t a, int32_t b) {
    int64_t ab;
    int64_t nudge;
    if (a == b && a == TCC_I32_MIN) {
        return TCC_I32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C division truncates toward zero */
}

static int32_t rdbpot(int32_t x, int32_t exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t tcc_mbqm(int32_t x, int32_t multiplier, int32_t shift) {
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)(uint32_t)((uint32_t)x << left);
    return rdbpot(srdhm(shifted, multiplier), right);
}

TCC_KINLINE int32_t clamp32(int32_t v, int32_t lo, int32_t hi) {
    if (v < lo) {
        v = lo;
    }
    if (v > hi) {
        v = hi;
    }
    return v;
}

TCC_KINLINE int8_t clamp8(int32_t v, int32_t lo, int32_t hi) {
    return (int8_t)clamp32(v, lo, hi);
}

TCC_KINLINE int32_t rd8(const int8_t *p, int32_t flash) {
    return flash ? (int32_t)TCC_READ_S8(p) : (int32_t)*p;
}

TCC_KINLINE int16_t clamp16(int32_t v, int32_t lo, int32_t hi) {
    return (int16_t)clamp32(v, lo, hi);
}

/* A little-endian int16/int64 constant, read byte- or word-wise (flash on Harvard MCUs). */
TCC_KINLINE int32_t rd16(const int16_t *p, int32_t flash) {
    const int8_t *b = (const int8_t *)(const void *)p;
    if (!flash) {
        return (int32_t)*p;
    }
    return (int32_t)(int16_t)(uint16_t)((uint16_t)(uint8_t)TCC_READ_S8(b) |
                                        (uint16_t)((uint16_t)(uint8_t)TCC_READ_S8(b + 1) << 8));
}

static int64_t rd64(const int64_t *p) {
    const int32_t *w = (const int32_t *)(const void *)p;
    const uint64_t lo = (uint64_t)(uint32_t)TCC_READ_S32(w);
    const uint64_t hi = (uint64_t)(uint32_t)TCC_READ_S32(w + 1);
    return (int64_t)(lo | (hi << 32));
}

/* TFLite's int64 MultiplyByQuantizedMultiplier: the multiplier rounded to 16 bits, one rounding shift. */
int32_t tcc_mbqm64(int64_t x, int32_t multiplier, int32_t shift) {
    const int32_t reduced = multiplier < 0x7FFF0000L ? (int32_t)((multiplier + ((int32_t)1 << 15)) >> 16) : 0x7FFF;
    const int32_t total = 15 - shift;
    const int64_t r = x * (int64_t)reduced + ((int64_t)1 << (total - 1));
    return (int32_t)(r >> total);
}

/* ---- the kernels int8 and int16 share (tinycc_kernels_tpl.h), instantiated for each ---- */

#define TCC_T int8_t
#define TCC_MIN (-128)
#define TCC_MAX 127
#define TCC_FN(name) name##_s8
#define TCC_ACC int32_t
#define TCC_BIAS_T int32_t
#define TCC_RD_BIAS(p) TCC_READ_S32(p)
#define TCC_MBQM tcc_mbqm
#define TCC_ZP_PARAMS int32_t in_zp, int32_t out_zp,
#define TCC_IN_ZP in_zp
#define TCC_OUT_ZP out_zp
#define TCC_ADD_LSHIFT 20
#define TCC_CLAMP clamp8
#define TCC_RD rd8
#define TCC_REQUANT_FN tcc_relu_s8
#define TCC_TPL_KEEP 1 /* the parameters stay for the RAM-bias instance below */
#include "tinycc_kernels_tpl.h"
#undef TCC_TPL_KEEP

/* int8 convolution and depthwise whose biases are in RAM (a trained region's learned biases on a Harvard MCU,
 * where TCC_READ_S32 reads program memory): the same bodies, the bias a plain load */
#undef TCC_FN
#define TCC_FN(name) name##_bram_s8
#undef TCC_RD_BIAS
#define TCC_RD_BIAS(p) (*(p))
#define TCC_TPL_BIAS_RAM 1
#include "tinycc_kernels_tpl.h"
#undef TCC_TPL_BIAS_RAM

#define TCC_T int16_t
#define TCC_MIN (-32768)
#define TCC_MAX 32767
#define TCC_FN(name) name##_s16
#define TCC_ACC int64_t
#define TCC_BIAS_T int64_t
#define TCC_RD_BIAS(p) rd64(p)
#define TCC_MBQM tcc_mbqm64
#define TCC_ZP_PARAMS /* 16x8: zero points are 0 */
#define TCC_IN_ZP 0
#define TCC_OUT_ZP 0
#define TCC_ADD_LSHIFT 15
#define TCC_CLAMP clamp16
#define TCC_RD rd16
#define TCC_REQUANT_FN tcc_requant_s16
#include "tinycc_kernels_tpl.h"

/* one output pixel of channel o of a convolution (m 0) or depthwise (multiplier m) from its weight row wr */
static int32_t conv_row_acc(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *wr, int32_t m,
                            int32_t kh, int32_t kw, int32_t y, int32_t x, int32_t sh, int32_t sw, int32_t dh,
                            int32_t dw, int32_t pt, int32_t pl, int32_t in_zp, int32_t o) {
    int32_t acc = 0, ky, kx, c;
    for (ky = 0; ky < kh; ++ky) {
        const int32_t iy = y * sh - pt + ky * dh;
        if (iy < 0 || iy >= ih) {
            continue;
        }
        for (kx = 0; kx < kw; ++kx) {
            const int32_t ix = x * sw - pl + kx * dw;
            const int8_t *px;
            if (ix < 0 || ix >= iw) {
                continue;
            }
            px = in + ((int32_t)iy * iw + ix) * ic; /* formed only in bounds */
            if (m) {
                acc += ((int32_t)px[o / m] - in_zp) * (int32_t)wr[ky * kw + kx];
                continue;
            }
            for (c = 0; c < ic; ++c) {
                acc += ((int32_t)px[c] - in_zp) * (int32_t)wr[(ky * kw + kx) * ic + c];
            }
        }
    }
    return acc;
}

/* bias element o of a layer: a flash table (TCC_READ_S32) or, b_ram, the learned int32 biases in RAM */
TCC_KINLINE int32_t bias_at(const int32_t *bias, int32_t o, int32_t b_ram) {
    if (!bias) {
        return 0;
    }
    return b_ram ? bias[o] : TCC_READ_S32(bias + o);
}

static void conv_rows(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8, const int32_t *bias,
                      int32_t b_ram, int32_t oc, int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                      int32_t dh, int32_t dw, int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift,
                      int32_t in_zp, int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out, int32_t oh,
                      int32_t ow, const int32_t *row) {
    const int32_t per = m ? kh * kw : kh * kw * ic;
    int32_t y, x, o;
    for (o = 0; o < oc; ++o) {
        const int32_t at = TCC_READ_S32(row + o); /* the channel rows are a flash table */
        if (at < 0) {
            continue;
        }
        for (y = 0; y < oh; ++y) {
            for (x = 0; x < ow; ++x) {
                int32_t acc = conv_row_acc(in, ih, iw, ic, w8 + at * per, m, kh, kw, y, x, sh, sw, dh, dw, pt,
                                           pl, in_zp, o);
                acc += bias_at(bias, o, b_ram);
                acc = tcc_mbqm(acc, TCC_READ_S32(mult + o), TCC_READ_S32(shift + o)) + out_zp;
                out[(y * ow + x) * oc + o] = clamp8(acc, act_min, act_max);
            }
        }
    }
}

void tcc_conv2d_rows_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8, const int32_t *bias,
                        int32_t oc, int32_t kh, int32_t kw, int32_t groups, int32_t sh, int32_t sw, int32_t dh,
                        int32_t dw, int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift, int32_t in_zp,
                        int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow,
                        const int32_t *row) {
    (void)groups; /* 1: the trainable convolutions */
    conv_rows(in, ih, iw, ic, w8, bias, 0, oc, 0, kh, kw, sh, sw, dh, dw, pt, pl, mult, shift, in_zp, out_zp, act_min,
              act_max, out, oh, ow, row);
}

void tcc_conv2d_rows_bram_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8,
                             const int32_t *bias, int32_t oc, int32_t kh, int32_t kw, int32_t groups, int32_t sh,
                             int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl, const int32_t *mult,
                             const int32_t *shift, int32_t in_zp, int32_t out_zp, int32_t act_min, int32_t act_max,
                             int8_t *out, int32_t oh, int32_t ow, const int32_t *row) {
    (void)groups;
    conv_rows(in, ih, iw, ic, w8, bias, 1, oc, 0, kh, kw, sh, sw, dh, dw, pt, pl, mult, shift, in_zp, out_zp, act_min,
              act_max, out, oh, ow, row);
}

void tcc_dwconv2d_rows_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8, const int32_t *bias,
                          int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt,
                          int32_t pl, const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp,
                          int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow, const int32_t *row) {
    conv_rows(in, ih, iw, ic, w8, bias, 0, ic * m, m, kh, kw, sh, sw, dh, dw, pt, pl, mult, shift, in_zp, out_zp,
              act_min, act_max, out, oh, ow, row);
}

void tcc_dwconv2d_rows_bram_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8,
                               const int32_t *bias, int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                               int32_t dh, int32_t dw, int32_t pt, int32_t pl, const int32_t *mult,
                               const int32_t *shift, int32_t in_zp, int32_t out_zp, int32_t act_min, int32_t act_max,
                               int8_t *out, int32_t oh, int32_t ow, const int32_t *row) {
    conv_rows(in, ih, iw, ic, w8, bias, 1, ic * m, m, kh, kw, sh, sw, dh, dw, pt, pl, mult, shift, in_zp, out_zp,
              act_min, act_max, out, oh, ow, row);
}

/* a fully connected layer: weights w (flash, or w_ram) [n_out][n_in], or with row the rows of the trained outputs */
static void fc_any(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w, int32_t w_ram, const int32_t *bias,
                   int32_t b_ram, int32_t n_out, const int32_t *mult, const int32_t *shift, int32_t per_channel,
                   int32_t in_zp, int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out, const int32_t *row) {
    int32_t r, o, i;
    for (r = 0; r < rows; ++r) {
        for (o = 0; o < n_out; ++o) {
            const int32_t q = per_channel ? o : 0;
            const int32_t at = row ? TCC_READ_S32(row + o) : o;
            int32_t acc = 0;
            if (at < 0) {
                continue;
            }
            for (i = 0; i < n_in; ++i) {
                acc += ((int32_t)in[r * n_in + i] - in_zp) * rd8(w + at * n_in + i, !w_ram);
            }
            acc += bias_at(bias, o, b_ram);
            acc = tcc_mbqm(acc, TCC_READ_S32(mult + q), TCC_READ_S32(shift + q)) + out_zp;
            out[r * n_out + o] = clamp8(acc, act_min, act_max);
        }
    }
}

void tcc_fc_rows_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w8, const int32_t *bias, int32_t n_out,
                    const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp, int32_t out_zp,
                    int32_t act_min, int32_t act_max, int8_t *out, const int32_t *row) {
    fc_any(in, rows, n_in, w8, 1, bias, 0, n_out, mult, shift, per_channel, in_zp, out_zp, act_min, act_max, out, row);
}

void tcc_fc_rows_bram_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w8, const int32_t *bias,
                         int32_t n_out, const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp,
                         int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out, const int32_t *row) {
    fc_any(in, rows, n_in, w8, 1, bias, 1, n_out, mult, shift, per_channel, in_zp, out_zp, act_min, act_max, out, row);
}

void tcc_fc_bram_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w, const int32_t *bias, int32_t n_out,
                    const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp, int32_t out_zp,
                    int32_t act_min, int32_t act_max, int8_t *out) {
    fc_any(in, rows, n_in, w, 0, bias, 1, n_out, mult, shift, per_channel, in_zp, out_zp, act_min, act_max, out, NULL);
}

void tcc_add_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                int32_t a_zp, int32_t b_zp, int32_t m1, int32_t e1, int32_t m2, int32_t e2, int32_t mo, int32_t eo,
                int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out) {
    tcc_addsub_s8(a, a_flash, ash, asw, asc, b, b_flash, bsh, bsw, bsc, oh, ow, oc, 0, a_zp, b_zp, m1, e1, m2, e2,
                  mo, eo, out_zp, act_min, act_max, out);
}

void tcc_sub_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                int32_t a_zp, int32_t b_zp, int32_t m1, int32_t e1, int32_t m2, int32_t e2, int32_t mo, int32_t eo,
                int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out) {
    tcc_addsub_s8(a, a_flash, ash, asw, asc, b, b_flash, bsh, bsw, bsc, oh, ow, oc, 1, a_zp, b_zp, m1, e1, m2, e2,
                  mo, eo, out_zp, act_min, act_max, out);
}

/* ---- gemmlowp-style fixed point for LOGISTIC ---- */
static int32_t sat_mul_pot(int32_t x, int32_t exponent) {
    if (exponent < 0) {
        return rdbpot(x, -exponent);
    } else {
        const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
        if (x > threshold) {
            return TCC_I32_MAX;
        }
        if (x < -threshold) {
            return TCC_I32_MIN;
        }
        return (int32_t)((uint32_t)x << exponent);
    }
}

static int32_t wadd(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static int32_t wsub(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

static int32_t exp_quarter(int32_t a) {
    const int32_t const_term = 1895147668L, one_third = 715827883L;
    const int32_t x = wadd(a, (int32_t)1 << 28);
    const int32_t x2 = srdhm(x, x);
    const int32_t x3 = srdhm(x2, x);
    const int32_t x4 = srdhm(x2, x2);
    const int32_t x4_over_4 = sat_mul_pot(x4, -2);
    const int32_t poly = sat_mul_pot(wadd(srdhm(wadd(x4_over_4, x3), one_third), x2), -1);
    return wadd(const_term, srdhm(const_term, wadd(x, poly)));
}

/* exp(a) for a <= 0 in Q(integer_bits).(31 - integer_bits), integer_bits 4 or 5; result Q0.31 */
static int32_t exp_neg(int32_t a, int32_t integer_bits) {
    /* a flash table (TCC_WEIGHT): a Harvard core's plain const data would be RAM */
    static const int32_t mults[7] TCC_WEIGHT = {1672461947L, 1302514674L, 790015084L, 290630308L, 39332535L, 720401L,
                                                242L};
    const int32_t frac = 31 - integer_bits;
    const int32_t quarter = (int32_t)1 << (frac - 2);
    const int32_t a_mod = wsub(a & (quarter - 1), quarter);
    int32_t result = exp_quarter(sat_mul_pot(a_mod, integer_bits));
    const int32_t remainder = wsub(a_mod, a);
    int32_t e;
    for (e = -2; e <= 4 && e < integer_bits; ++e) { /* barrel shifter of exp(-2^e) */
        if (remainder & ((int32_t)1 << (frac + e))) {
            result = srdhm(result, TCC_READ_S32(&mults[e + 2]));
        }
    }
    return a == 0 ? TCC_I32_MAX : result;
}

/* 1 / ((1 + a) / 2) for a in (0, 1), Q2.29: three Newton-Raphson steps (gemmlowp) */
static int32_t reciprocal_half_den(int32_t a) {
    const int64_t s0 = (int64_t)a + (int64_t)TCC_I32_MAX;
    const int64_t s = s0 + (s0 >= 0 ? 1 : -1);
    const int32_t half_den = (int32_t)(s / 2);
    int32_t x = wadd(1515870810L, srdhm(half_den, -1010580540L));
    int32_t i;
    for (i = 0; i < 3; ++i) {
        const int32_t hdx = srdhm(half_den, x);
        x = wadd(x, sat_mul_pot(srdhm(x, wsub((int32_t)1 << 29, hdx)), 2));
    }
    return x;
}

static int32_t one_over_one_plus_x(int32_t a) {
    return sat_mul_pot(reciprocal_half_den(a) >> 1, 2);
}

void tcc_logistic_s8(const int8_t *in, int32_t n, int32_t in_zp, int32_t mult, int32_t shift, int32_t radius,
                     int8_t *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t v = (int32_t)in[i] - in_zp;
        if (v <= -radius) {
            out[i] = -128;
        } else if (v >= radius) {
            out[i] = 127;
        } else {
            const int32_t q4 = tcc_mbqm(v, mult, shift);
            int32_t r;
            if (q4 == 0) {
                r = (int32_t)1 << 30;
            } else {
                const int32_t absx = q4 > 0 ? q4 : wsub(0, q4);
                const int32_t rp = one_over_one_plus_x(exp_neg(wsub(0, absx), 4));
                r = q4 > 0 ? rp : wsub(TCC_I32_MAX, rp);
            }
            out[i] = clamp8(rdbpot(r, 23) - 128, -128, 127);
        }
    }
}

static int32_t one_minus_x_over_one_plus_x(int32_t a) {
    return sat_mul_pot(wsub(reciprocal_half_den(a), (int32_t)1 << 29), 2);
}

void tcc_tanh_s8(const int8_t *in, int32_t n, int32_t in_zp, int32_t mult, int32_t shift, int32_t radius,
                 int8_t *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t v = (int32_t)in[i] - in_zp;
        if (v <= -radius) {
            out[i] = -128;
        } else if (v >= radius) {
            out[i] = 127;
        } else {
            const int32_t q4 = tcc_mbqm(v, mult, shift);
            int32_t r = 0;
            if (q4 != 0) {
                const int32_t neg = q4 < 0 ? q4 : wsub(0, q4);
                const int32_t t = one_minus_x_over_one_plus_x(exp_neg((int32_t)((uint32_t)neg << 1), 4));
                r = q4 < 0 ? wsub(0, t) : t;
            }
            out[i] = clamp8(rdbpot(r, 24), -128, 127);
        }
    }
}

void tcc_softmax_s8(const int8_t *in, int32_t rows, int32_t depth, int32_t mult, int32_t shift,
                    int32_t diff_min, int8_t *out) {
    int32_t r, c;
    for (r = 0; r < rows; ++r) {
        const int8_t *x = in + r * depth;
        int8_t *y = out + r * depth;
        int32_t max_v = -128;
        int32_t sum = 0; /* Q12.19 */
        int32_t clz = 0;
        uint32_t u;
        int32_t recip;
        for (c = 0; c < depth; ++c) {
            max_v = x[c] > max_v ? x[c] : max_v;
        }
        for (c = 0; c < depth; ++c) {
            const int32_t diff = (int32_t)x[c] - max_v;
            if (diff >= diff_min) {
                sum = wadd(sum, rdbpot(exp_neg(tcc_mbqm(diff, mult, shift), 5), 12));
            }
        }
        /* the row's maximum contributes 2^19, so sum > 0: 1/sum as 2^(12 - clz) / (1 + x), x in [0, 1) */
        for (u = (uint32_t)sum; !(u & 0x80000000UL); u <<= 1) {
            ++clz;
        }
        recip = one_over_one_plus_x((int32_t)(((uint32_t)sum << clz) - 0x80000000UL));
        for (c = 0; c < depth; ++c) { /* reads x[c] before writing y[c] */
            const int32_t diff = (int32_t)x[c] - max_v;
            int32_t v = -128;
            if (diff >= diff_min && 35 - clz <= 31) { /* larger exponents round the Q0.31 value to 0 */
                const int32_t e = exp_neg(tcc_mbqm(diff, mult, shift), 5);
                v = rdbpot(srdhm(recip, e), 35 - clz) - 128; /* 12 - clz bits over unit, Q0.31 -> Q0.8 */
            }
            y[c] = clamp8(v, -128, 127);
        }
    }
}

static int32_t srdhm16(int32_t a, int32_t b) {
    const int32_t ab = a * b;
    if (a == b && a == -32768) {
        return 32767;
    }
    return (ab + (ab >= 0 ? ((int32_t)1 << 14) : 1 - ((int32_t)1 << 14))) / ((int32_t)1 << 15);
}

static int32_t sat_shl16(int32_t v, int32_t amount) {
    const int64_t r = (int64_t)v * ((int64_t)1 << amount);
    return r > 32767 ? 32767 : (r < -32768 ? -32768 : (int32_t)r);
}

void tcc_hard_swish_s8(const int8_t *in, int32_t n, int32_t in_zp, int32_t out_zp, int32_t out_m, int32_t out_e,
                       int32_t rel_m, int32_t rel_e, int8_t *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t hires = ((int32_t)in[i] - in_zp) * 128; /* |.| <= 255 * 128: fits int16 */
        const int32_t pre_out = srdhm16(hires, out_m);
        int32_t rel = hires;
        if (rel_e > 0) {
            rel = sat_shl16(rel, rel_e - 1);
        }
        rel = srdhm16(rel, rel_m);
        if (rel_e > 0) {
            rel = sat_shl16(rel, 1);
        } else if (rel_e < 0) {
            rel = rdbpot(rel, -rel_e);
        }
        rel = (rel + 32768) >> 1; /* [-1, 1] -> [0, 1] in Q0.15 */
        out[i] = clamp8(rdbpot(rel * pre_out / 32768, -out_e) + out_zp, -128, 127);
    }
}

void tcc_mean_last_s8(const int8_t *in, int32_t rows, int32_t depth, int32_t in_zp, int32_t mult, int32_t shift,
                      int32_t out_zp, int8_t *out) {
    int32_t r, d;
    for (r = 0; r < rows; ++r) {
        int32_t sum = 0;
        for (d = 0; d < depth; ++d) {
            sum += (int32_t)in[r * depth + d];
        }
        out[r] = clamp8(tcc_mbqm(sum - in_zp * depth, mult, shift) + out_zp, -128, 127);
    }
}

void tcc_sqdiff_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                   int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                   int32_t a_zp, int32_t b_zp, int32_t m1, int32_t e1, int32_t m2, int32_t e2, int32_t mo, int32_t eo,
                   int32_t out_zp, int8_t *out) {
    int32_t y, x, c;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            for (c = 0; c < oc; ++c) {
                const int32_t va = rd8(a + y * ash + x * asw + c * asc, a_flash) - a_zp;
                const int32_t vb = rd8(b + y * bsh + x * bsw + c * bsc, b_flash) - b_zp;
                const int32_t d = tcc_mbqm(va * (int32_t)128, m1, e1) - tcc_mbqm(vb * (int32_t)128, m2, e2);
                out[(y * ow + x) * oc + c] = clamp8(tcc_mbqm(d * d, mo, eo) + out_zp, -128, 127);
            }
        }
    }
}

void tcc_lut_s8(const int8_t *in, int32_t n, const int8_t *table, int8_t *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = TCC_READ_S8(table + ((int32_t)in[i] + 128));
    }
}

void tcc_prelu_s8(const int8_t *in, const int8_t *alpha, int32_t d0, int32_t d1, int32_t d2, int32_t a0, int32_t a1,
                  int32_t a2, int32_t in_zp, int32_t alpha_zp, int32_t out_zp, int32_t m_id, int32_t e_id,
                  int32_t m_alpha, int32_t e_alpha, int8_t *out) {
    int32_t i, j, k;
    for (i = 0; i < d0; ++i) {
        for (j = 0; j < d1; ++j) {
            for (k = 0; k < d2; ++k) {
                const int32_t at = (i * d1 + j) * d2 + k;
                const int32_t v = (int32_t)in[at] - in_zp;
                int32_t r;
                if (v >= 0) {
                    r = tcc_mbqm(v, m_id, e_id);
                } else {
                    const int32_t al = (int32_t)TCC_READ_S8(alpha + i * a0 + j * a1 + k * a2) - alpha_zp;
                    r = tcc_mbqm(v * al, m_alpha, e_alpha);
                }
                out[at] = clamp8(r + out_zp, -128, 127);
            }
        }
    }
}

/* in[i] / scale rounded to an integer (before the zero point and the clamp), as tinycc.ir.quant.quantize. */
TCC_KINLINE int32_t quantize_steps(float in, float scale) {
    const float v = in / scale;
    int32_t q;
    if (!(v == v)) { /* NaN (also 0/0): the zero point; no float->int UB */
        q = 0;
    } else if (v > 1e9f) { /* +-infinity and huge values saturate */
        q = 1000000000L;
    } else if (v < -1e9f) {
        q = -1000000000L;
    } else { /* roundf (half away from zero) inline: v - trunc(v) is exact (Sterbenz) */
        float frac;
        q = (int32_t)v;
        frac = v - (float)q;
        if (frac >= 0.5f) {
            ++q;
        } else if (frac <= -0.5f) {
            --q;
        }
    }
    return q;
}

void tcc_quantize_f32(const float *in, int32_t n, float scale, int32_t zp, int8_t *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = clamp8(quantize_steps(in[i], scale) + zp, -128, 127);
    }
}

/* ---- int16 activations (TFLite's 16x8) ---- */

void tcc_requant_s16_s8(const int16_t *in, int32_t n, int32_t in_zp, int32_t m, int32_t e, int32_t out_zp,
                        int8_t *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = clamp8(tcc_mbqm((int32_t)in[i] - in_zp, m, e) + out_zp, -128, 127);
    }
}

void tcc_quantize_f32_s16(const float *in, int32_t n, float scale, int32_t zp, int16_t *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = clamp16(quantize_steps(in[i], scale) + zp, -32768, 32767);
    }
}

/* x >> n rounding toward minus infinity, also for negative x (no implementation-defined shift) */
static int32_t tcc_floor_shift(int32_t x, int32_t n) {
    return (x - (x & (((int32_t)1 << n) - 1))) / ((int32_t)1 << n);
}

/* TFLite's interpolated lookup in a 513-entry int16 table (512 steps, 7 fraction bits) */
static int16_t tcc_lut513(int32_t v, const int16_t *lut) {
    const int32_t idx = 256 + tcc_floor_shift(v, 7);
    const int32_t base = TCC_READ_S16(lut + idx);
    const int32_t slope = (int32_t)TCC_READ_S16(lut + idx + 1) - base;
    return (int16_t)(base + tcc_floor_shift(slope * (v & 0x7F) + 64, 7));
}

void tcc_sigmoid_tanh_s16(const int16_t *in, int32_t n, int32_t mult, int32_t shift, int32_t is_tanh,
                          const uint16_t *table, int16_t *out) {
    const int32_t rnd = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
    const int32_t frac = is_tanh ? 8 : 9;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t x = tcc_floor_shift((int32_t)in[i] * mult + rnd, shift);
        const uint32_t a = (uint32_t)(x < 0 ? -x : x);
        const uint32_t uh = a >> frac;
        uint32_t r;
        if (uh >= 255UL) {
            r = is_tanh ? (uint32_t)0xFFFFUL << 8 : (uint32_t)0x7FFFUL << 10;
        } else {
            const uint32_t ua = (uint16_t)TCC_READ_S16(table + uh);
            const uint32_t ub = (uint16_t)TCC_READ_S16(table + uh + 1);
            r = (ua << frac) + (a & (((uint32_t)1 << frac) - 1UL)) * (ub - ua);
        }
        if (is_tanh) {
            const int32_t s = x >= 0 ? (int32_t)r - ((int32_t)1 << 23) + 128 : -(int32_t)r + ((int32_t)1 << 23) + 127;
            out[i] = (int16_t)tcc_floor_shift(s, 8);
        } else {
            r = x >= 0 ? r + 512UL : ((uint32_t)1 << 25) - r + 511UL;
            out[i] = (int16_t)(r >> 10);
        }
    }
}

void tcc_softmax_s16(const int16_t *in, int32_t rows, int32_t depth, int32_t mult, int32_t shift,
                     const int16_t *exp_lut, const int16_t *recip_lut, int16_t *out) {
    int32_t r, j;
    for (r = 0; r < rows; ++r) {
        const int16_t *x = in + r * depth;
        int16_t *y = out + r * depth;
        int16_t mx = -32768;
        int32_t sum = 0, h = 0, shifted, recip, rs;
        uint32_t s;
        for (j = 0; j < depth; ++j) {
            if (x[j] > mx) {
                mx = x[j];
            }
        }
        for (j = 0; j < depth; ++j) {  /* y holds exp(x - max) in Q0.15 until the rescale (in place is fine) */
            const int32_t d = tcc_mbqm((int32_t)x[j] - mx, mult, shift) + 32767;
            y[j] = tcc_lut513(d < -32768 ? -32768 : (d > 32767 ? 32767 : d), exp_lut);
            sum += y[j];
        }
        for (s = (uint32_t)sum; s != 0UL && !(s & 0x80000000UL); s <<= 1) {
            ++h;
        }
        shifted = (int32_t)((((int64_t)sum << (h - 1)) + ((int64_t)1 << 13)) >> 14) - (((int32_t)1 << 15) + ((int32_t)1 << 16));
        recip = tcc_lut513(shifted < -32768 ? -32768 : (shifted > 32767 ? 32767 : shifted), recip_lut);
        rs = 31 - h;
        for (j = 0; j < depth; ++j) {
            const int64_t v = ((int64_t)y[j] * recip + ((int64_t)1 << (rs - 1))) >> rs;
            y[j] = (int16_t)(v < 0 ? 0 : (v > 32767 ? 32767 : v));
        }
    }
}

/* RESIZE_BILINEAR, TFLite's integer arithmetic: four neighbours weighted in 1/1024 units each way, the sum
 * (|sum| < 2^30: weights |1024 - w| + |w| <= 2048 each way) divided by 2^20 rounding half away from zero. */
void tcc_resize_bilinear_s8(const int8_t *in, int32_t iw, int32_t c, const int32_t *ry, const int32_t *rx,
                            int32_t oh, int32_t ow, int8_t *out) {
    int32_t y, x, ch;
    for (y = 0; y < oh; ++y) {
        const int32_t y0 = TCC_READ_S32(ry + 3 * y), y1 = TCC_READ_S32(ry + 3 * y + 1);
        const int32_t wy = TCC_READ_S32(ry + 3 * y + 2);
        for (x = 0; x < ow; ++x) {
            const int32_t x0 = TCC_READ_S32(rx + 3 * x), x1 = TCC_READ_S32(rx + 3 * x + 1);
            const int32_t wx = TCC_READ_S32(rx + 3 * x + 2);
            const int8_t *p00 = in + (y0 * iw + x0) * c, *p10 = in + (y1 * iw + x0) * c;
            const int8_t *p01 = in + (y0 * iw + x1) * c, *p11 = in + (y1 * iw + x1) * c;
            const int32_t w00 = (1024 - wy) * (1024 - wx), w10 = wy * (1024 - wx);
            const int32_t w01 = (1024 - wy) * wx, w11 = wy * wx;
            int8_t *dst = out + (y * ow + x) * c;
            for (ch = 0; ch < c; ++ch) {
                const int32_t acc = p00[ch] * w00 + p10[ch] * w10 + p01[ch] * w01 + p11[ch] * w11;
                /* int32 constants: int is 16 bits on AVR */
                dst[ch] = (int8_t)((acc + (acc > 0 ? (int32_t)524288L : -(int32_t)524288L)) / (int32_t)1048576L);
            }
        }
    }
}
