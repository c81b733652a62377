/* The kernel bodies the int8 and int16 (TFLite's 16x8) activations share, written once. tinycc_kernels.c
 * includes this file twice (no include guard, on purpose), defining before each inclusion:
 *   TCC_T             the activation type (int8_t / int16_t); TCC_MIN, TCC_MAX its range
 *   TCC_FN(name)      the kernel's public name: name##_s8 / name##_s16
 *   TCC_ACC           the weighted sums' accumulator (int32_t / int64_t, as TFLite's int64 sums of 16x8)
 *   TCC_BIAS_T        the bias type (int32_t / int64_t); TCC_RD_BIAS(p) reads one from flash
 *   TCC_MBQM          the accumulator's requantization (tcc_mbqm / tcc_mbqm64)
 *   TCC_ZP_PARAMS     the in_zp/out_zp parameters of int8's weighted kernels (empty for 16x8: zero points are 0);
 *                     TCC_IN_ZP, TCC_OUT_ZP their values in the bodies (in_zp/out_zp, or 0)
 *   TCC_ADD_LSHIFT    ADD/SUB's left shift of the operands before scaling (TFLite: 20 for int8, 15 for int16)
 *   TCC_CLAMP(v, lo, hi), TCC_RD(p, flash)  the type's clamp and flash-aware element read
 *   TCC_REQUANT_FN    the element-wise requantization's name (int8: tcc_relu_s8, int16: tcc_requant_s16)
 * The prototypes in tinycc_kernels.h are the reference: each definition here must match both of its instances.
 * With TCC_TPL_BIAS_RAM defined, only the convolution and the depthwise convolution are defined (the int8 kernels
 * of a trained region whose learned biases are in RAM on a Harvard MCU: TCC_RD_BIAS a plain load). */

void TCC_FN(tcc_conv2d)(const TCC_T *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w, const TCC_BIAS_T *bias,
                        int32_t oc, int32_t kh, int32_t kw, int32_t groups, int32_t sh, int32_t sw, int32_t dh,
                        int32_t dw, int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift,
                        TCC_ZP_PARAMS int32_t act_min, int32_t act_max, TCC_T *out, int32_t oh, int32_t ow) {
    const int32_t icg = ic / groups;
    const int32_t ocg = oc / groups;
    int32_t y, x, o, ky, kx, c;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            for (o = 0; o < oc; ++o) {
                const int32_t c0 = (o / ocg) * icg;
                TCC_ACC acc = 0;
                for (ky = 0; ky < kh; ++ky) {
                    const int32_t iy = y * sh - pt + ky * dh;
                    if (iy < 0 || iy >= ih) {
                        continue;
                    }
                    for (kx = 0; kx < kw; ++kx) {
                        const int32_t ix = x * sw - pl + kx * dw;
                        const TCC_T *px;
                        const int8_t *pw;
                        if (ix < 0 || ix >= iw) {
                            continue;
                        }
                        px = in + ((int32_t)iy * iw + ix) * ic + c0;
                        pw = w + ((o * kh + ky) * kw + kx) * icg;
                        for (c = 0; c < icg; ++c) {
                            acc += (TCC_ACC)(((int32_t)px[c] - TCC_IN_ZP) * (int32_t)TCC_READ_S8(pw + c));
                        }
                    }
                }
                if (bias) {
                    acc += TCC_RD_BIAS(bias + o);
                }
                out[(y * ow + x) * oc + o] = TCC_CLAMP(
                    TCC_MBQM(acc, TCC_READ_S32(mult + o), TCC_READ_S32(shift + o)) + TCC_OUT_ZP, act_min, act_max);
            }
        }
    }
}

#ifndef TCC_TPL_BIAS_RAM
/* Every output pixel gathers the input pixels whose stride-spread taps land on it (TFLite's scatter). */
void TCC_FN(tcc_transpose_conv)(const TCC_T *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w,
                                const TCC_BIAS_T *bias, int32_t oc, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                                int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift,
                                TCC_ZP_PARAMS int32_t act_min, int32_t act_max, TCC_T *out, int32_t oh, int32_t ow) {
    int32_t y, x, o, ky, kx, c;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            for (o = 0; o < oc; ++o) {
                TCC_ACC acc = 0;
                for (ky = 0; ky < kh; ++ky) {
                    const int32_t ty = y + pt - ky;
                    const int32_t iy = ty / sh;
                    if (ty < 0 || ty % sh != 0 || iy >= ih) {
                        continue;
                    }
                    for (kx = 0; kx < kw; ++kx) {
                        const int32_t tx = x + pl - kx;
                        const int32_t ix = tx / sw;
                        const TCC_T *px;
                        const int8_t *pw;
                        if (tx < 0 || tx % sw != 0 || ix >= iw) {
                            continue;
                        }
                        px = in + (iy * iw + ix) * ic;
                        pw = w + ((o * kh + ky) * kw + kx) * ic;
                        for (c = 0; c < ic; ++c) {
                            acc += (TCC_ACC)(((int32_t)px[c] - TCC_IN_ZP) * (int32_t)TCC_READ_S8(pw + c));
                        }
                    }
                }
                if (bias) {
                    acc += TCC_RD_BIAS(bias + o);
                }
                out[(y * ow + x) * oc + o] = TCC_CLAMP(
                    TCC_MBQM(acc, TCC_READ_S32(mult + o), TCC_READ_S32(shift + o)) + TCC_OUT_ZP, act_min, act_max);
            }
        }
    }
}
#endif

void TCC_FN(tcc_dwconv2d)(const TCC_T *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w,
                          const TCC_BIAS_T *bias, int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                          int32_t dh, int32_t dw, int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift,
                          TCC_ZP_PARAMS int32_t act_min, int32_t act_max, TCC_T *out, int32_t oh, int32_t ow) {
    const int32_t oc = ic * m;
    int32_t y, x, o, ky, kx;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            for (o = 0; o < oc; ++o) {
                const int32_t c = o / m;
                TCC_ACC acc = 0;
                for (ky = 0; ky < kh; ++ky) {
                    const int32_t iy = y * sh - pt + ky * dh;
                    if (iy < 0 || iy >= ih) {
                        continue;
                    }
                    for (kx = 0; kx < kw; ++kx) {
                        const int32_t ix = x * sw - pl + kx * dw;
                        if (ix < 0 || ix >= iw) {
                            continue;
                        }
                        acc += (TCC_ACC)(((int32_t)in[(iy * iw + ix) * ic + c] - TCC_IN_ZP) *
                                         (int32_t)TCC_READ_S8(w + (ky * kw + kx) * oc + o));
                    }
                }
                if (bias) {
                    acc += TCC_RD_BIAS(bias + o);
                }
                out[(y * ow + x) * oc + o] = TCC_CLAMP(
                    TCC_MBQM(acc, TCC_READ_S32(mult + o), TCC_READ_S32(shift + o)) + TCC_OUT_ZP, act_min, act_max);
            }
        }
    }
}

#ifndef TCC_TPL_BIAS_RAM
void TCC_FN(tcc_fc)(const TCC_T *in, int32_t rows, int32_t n_in, const int8_t *w, const TCC_BIAS_T *bias,
                    int32_t n_out, const int32_t *mult, const int32_t *shift, int32_t per_channel,
                    TCC_ZP_PARAMS int32_t act_min, int32_t act_max, TCC_T *out) {
    int32_t r, o, i;
    for (r = 0; r < rows; ++r) {
        for (o = 0; o < n_out; ++o) {
            const int32_t q = per_channel ? o : 0;
            TCC_ACC acc = 0;
            for (i = 0; i < n_in; ++i) {
                acc += (TCC_ACC)(((int32_t)in[r * n_in + i] - TCC_IN_ZP) * (int32_t)TCC_READ_S8(w + o * n_in + i));
            }
            if (bias) {
                acc += TCC_RD_BIAS(bias + o);
            }
            out[r * n_out + o] = TCC_CLAMP(
                TCC_MBQM(acc, TCC_READ_S32(mult + q), TCC_READ_S32(shift + q)) + TCC_OUT_ZP, act_min, act_max);
        }
    }
}

void TCC_FN(tcc_pool)(const TCC_T *in, int32_t ih, int32_t iw, int32_t c, int32_t ph, int32_t pw, int32_t sh,
                      int32_t sw, int32_t pt, int32_t pl, int32_t is_max, int32_t act_min, int32_t act_max,
                      TCC_T *out, int32_t oh, int32_t ow) {
    int32_t y, x, ch, ky, kx;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            for (ch = 0; ch < c; ++ch) {
                int32_t acc = is_max ? TCC_MIN : 0;
                int32_t count = 0;
                for (ky = 0; ky < ph; ++ky) {
                    const int32_t iy = y * sh - pt + ky;
                    if (iy < 0 || iy >= ih) {
                        continue;
                    }
                    for (kx = 0; kx < pw; ++kx) {
                        const int32_t ix = x * sw - pl + kx;
                        int32_t v;
                        if (ix < 0 || ix >= iw) {
                            continue;
                        }
                        v = in[(iy * iw + ix) * c + ch];
                        if (is_max) {
                            acc = v > acc ? v : acc;
                        } else {
                            acc += v;
                        }
                        ++count;
                    }
                }
                if (!is_max && count > 0) {
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                }
                out[(y * ow + x) * c + ch] = TCC_CLAMP(acc, act_min, act_max);
            }
        }
    }
}

/* ADD (is_sub=0) / SUB (is_sub=1): TFLite's fixed-point steps (operands shifted left, scaled, summed, rescaled). */
void TCC_FN(tcc_addsub)(const TCC_T *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const TCC_T *b,
                        int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                        int32_t is_sub, int32_t a_zp, int32_t b_zp, int32_t m1, int32_t e1, int32_t m2, int32_t e2,
                        int32_t mo, int32_t eo, int32_t out_zp, int32_t act_min, int32_t act_max, TCC_T *out) {
    int32_t y, x, c;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            for (c = 0; c < oc; ++c) {
                const int32_t va = TCC_RD(a + y * ash + x * asw + c * asc, a_flash) - a_zp;
                const int32_t vb = TCC_RD(b + y * bsh + x * bsw + c * bsc, b_flash) - b_zp;
                const int32_t sa = rdbpot(srdhm(va * ((int32_t)1 << TCC_ADD_LSHIFT), m1), -e1);
                const int32_t sb = rdbpot(srdhm(vb * ((int32_t)1 << TCC_ADD_LSHIFT), m2), -e2);
                const int32_t r = rdbpot(srdhm(is_sub ? sa - sb : sa + sb, mo), -eo) + out_zp;
                out[(y * ow + x) * oc + c] = TCC_CLAMP(r, act_min, act_max);
            }
        }
    }
}

void TCC_FN(tcc_mul)(const TCC_T *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const TCC_T *b,
                     int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                     int32_t a_zp, int32_t b_zp, int32_t m, int32_t e, int32_t out_zp, int32_t act_min,
                     int32_t act_max, TCC_T *out) {
    int32_t y, x, c;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            for (c = 0; c < oc; ++c) {
                const int32_t va = TCC_RD(a + y * ash + x * asw + c * asc, a_flash) - a_zp;
                const int32_t vb = TCC_RD(b + y * bsh + x * bsw + c * bsc, b_flash) - b_zp;
                out[(y * ow + x) * oc + c] = TCC_CLAMP(tcc_mbqm(va * vb, m, e) + out_zp, act_min, act_max);
            }
        }
    }
}

void TCC_FN(tcc_maxmin)(const TCC_T *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const TCC_T *b,
                        int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                        int32_t is_max, TCC_T *out) {
    int32_t y, x, c;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            for (c = 0; c < oc; ++c) {
                const int32_t va = TCC_RD(a + y * ash + x * asw + c * asc, a_flash);
                const int32_t vb = TCC_RD(b + y * bsh + x * bsw + c * bsc, b_flash);
                out[(y * ow + x) * oc + c] = (TCC_T)(((va > vb) == (is_max != 0)) ? va : vb);
            }
        }
    }
}

void TCC_FN(tcc_resize_nearest)(const TCC_T *in, int32_t iw, int32_t c, const int32_t *ys, const int32_t *xs,
                                int32_t oh, int32_t ow, TCC_T *out) {
    int32_t y, x, ch;
    for (y = 0; y < oh; ++y) {
        const int32_t iy = TCC_READ_S32(ys + y);
        for (x = 0; x < ow; ++x) {
            const TCC_T *src = in + (iy * iw + TCC_READ_S32(xs + x)) * c;
            for (ch = 0; ch < c; ++ch) {
                out[(y * ow + x) * c + ch] = src[ch];
            }
        }
    }
}

void TCC_FN(tcc_transpose)(const TCC_T *in, int32_t o0, int32_t o1, int32_t o2, int32_t st0, int32_t st1,
                           int32_t st2, TCC_T *out) {
    int32_t a, b, c;
    for (a = 0; a < o0; ++a) {
        for (b = 0; b < o1; ++b) {
            for (c = 0; c < o2; ++c) {
                *out++ = in[a * st0 + b * st1 + c * st2];
            }
        }
    }
}

void TCC_FN(tcc_slice)(const TCC_T *in, int32_t outer, int32_t in_inner, int32_t inner, int32_t offset,
                       TCC_T *out) {
    int32_t o, i;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            out[o * inner + i] = in[o * in_inner + offset + i];
        }
    }
}

void TCC_FN(tcc_reverse)(const TCC_T *in, int32_t outer, int32_t n, int32_t inner, TCC_T *out) {
    int32_t o, t, i;
    for (o = 0; o < outer; ++o) {
        const TCC_T *block = in + o * n * inner;
        for (t = 0; t < n; ++t) {
            const TCC_T *src = block + (n - 1 - t) * inner;
            for (i = 0; i < inner; ++i) {
                *out++ = src[i];
            }
        }
    }
}

void TCC_FN(tcc_concat)(const TCC_T *in, int32_t in_flash, int32_t outer, int32_t inner, int32_t out_inner,
                        int32_t offset, TCC_T *out) {
    int32_t o, i;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            out[o * out_inner + offset + i] = (TCC_T)TCC_RD(in + o * inner + i, in_flash);
        }
    }
}

void TCC_FN(tcc_pad)(const TCC_T *in, int32_t ih, int32_t iw, int32_t c, int32_t pt, int32_t pb, int32_t pl,
                     int32_t pr, int32_t zp, TCC_T *out) {
    const int32_t oh = ih + pt + pb;
    const int32_t ow = iw + pl + pr;
    int32_t y, x, ch;
    for (y = 0; y < oh; ++y) {
        for (x = 0; x < ow; ++x) {
            const int32_t iy = y - pt;
            const int32_t ix = x - pl;
            const int32_t inside = iy >= 0 && iy < ih && ix >= 0 && ix < iw;
            for (ch = 0; ch < c; ++ch) {
                out[(y * ow + x) * c + ch] = inside ? in[(iy * iw + ix) * c + ch] : (TCC_T)zp;
            }
        }
    }
}

void TCC_REQUANT_FN(const TCC_T *in, int32_t n, int32_t in_zp, int32_t m, int32_t e, int32_t out_zp,
                    int32_t act_min, int32_t act_max, TCC_T *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = TCC_CLAMP(tcc_mbqm((int32_t)in[i] - in_zp, m, e) + out_zp, act_min, act_max);
    }
}

void TCC_FN(tcc_leaky_relu)(const TCC_T *in, int32_t n, int32_t in_zp, int32_t out_zp, int32_t m_id, int32_t e_id,
                            int32_t m_alpha, int32_t e_alpha, TCC_T *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t v = (int32_t)in[i] - in_zp;
        const int32_t r = v >= 0 ? tcc_mbqm(v, m_id, e_id) : tcc_mbqm(v, m_alpha, e_alpha);
        out[i] = TCC_CLAMP(r + out_zp, TCC_MIN, TCC_MAX);
    }
}

void TCC_FN(tcc_mean)(const TCC_T *in, int32_t hw, int32_t c, int32_t in_zp, int32_t mult, int32_t shift,
                      int32_t out_zp, TCC_T *out) {
    int32_t ch, p;
    for (ch = 0; ch < c; ++ch) {
        int32_t sum = 0;
        for (p = 0; p < hw; ++p) {
            sum += in[p * c + ch];
        }
        out[ch] = TCC_CLAMP(tcc_mbqm(sum - in_zp * hw, mult, shift) + out_zp, TCC_MIN, TCC_MAX);
    }
}

void TCC_FN(tcc_dequantize)(const TCC_T *in, int32_t n, float scale, int32_t zp, float *out) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = scale * (float)((int32_t)in[i] - zp);
    }
}

#endif /* TCC_TPL_BIAS_RAM */

/* this instance is done: its parameters are free for the next (unless TCC_TPL_KEEP) */
#ifndef TCC_TPL_KEEP
#undef TCC_T
#undef TCC_MIN
#undef TCC_MAX
#undef TCC_FN
#undef TCC_ACC
#undef TCC_BIAS_T
#undef TCC_RD_BIAS
#undef TCC_MBQM
#undef TCC_ZP_PARAMS
#undef TCC_IN_ZP
#undef TCC_OUT_ZP
#undef TCC_ADD_LSHIFT
#undef TCC_CLAMP
#undef TCC_RD
#undef TCC_REQUANT_FN
#endif
