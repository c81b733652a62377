/* tinycc int8 kernels: bit-exact with TFLite Micro's reference kernels (NHWC, batch 1).
 * Activations are RAM pointers; pointers marked "flash" are read with TCC_READ_*.
 * Requantization: per output channel int32 multiplier and shift as TFLite QuantizeMultiplier. */
#ifndef TINYCC_KERNELS_H
#define TINYCC_KERNELS_H

#include "tinycc_port.h"

int32_t tcc_mbqm(int32_t x, int32_t multiplier, int32_t shift);

/* Conv2D (groups >= 1). w (flash) [oc][kh][kw][ic/groups]; bias (flash, may be NULL) [oc]. */
void tcc_conv2d_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w, const int32_t *bias,
                   int32_t oc, int32_t kh, int32_t kw, int32_t groups, int32_t sh, int32_t sw, int32_t dh,
                   int32_t dw, int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift, int32_t in_zp,
                   int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow);
/* DepthwiseConv2D: w (flash) [kh][kw][ic*m], output channel c*m+j reads input channel c. */
void tcc_dwconv2d_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w, const int32_t *bias,
                     int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt,
                     int32_t pl, const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp,
                     int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow);
/* Fully connected on `rows` input rows: w (flash) [n_out][n_in]; per_channel selects mult[o] or mult[0]. */
void tcc_fc_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w, const int32_t *bias, int32_t n_out,
               const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp, int32_t out_zp,
               int32_t act_min, int32_t act_max, int8_t *out);
/* Max (is_max=1) or average pooling; padded pixels are skipped. */
void tcc_pool_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t c, int32_t ph, int32_t pw, int32_t sh,
                 int32_t sw, int32_t pt, int32_t pl, int32_t is_max, int32_t act_min, int32_t act_max, int8_t *out,
                 int32_t oh, int32_t ow);
/* Elementwise over an [oh][ow][oc] output; operand strides per dimension (0 = broadcast).
 * a_flash/b_flash: the operand is a constant in flash. */
void tcc_add_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc, int32_t a_zp, int32_t b_zp, int32_t m1,
                int32_t e1, int32_t m2, int32_t e2, int32_t mo, int32_t eo, int32_t out_zp, int32_t act_min,
                int32_t act_max, int8_t *out);
void tcc_mul_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc, int32_t a_zp, int32_t b_zp, int32_t m,
                int32_t e, int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out);
/* SUB: ADD's fixed-point steps with the scaled operands subtracted (TFLite's int8 SUB). */
void tcc_sub_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                int32_t a_zp, int32_t b_zp, int32_t m1, int32_t e1, int32_t m2, int32_t e2, int32_t mo, int32_t eo,
                int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out);
/* ADD (is_sub=0) or SUB (is_sub=1) in one: what tcc_add_s8 and tcc_sub_s8 call. */
void tcc_addsub_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                   int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                   int32_t is_sub, int32_t a_zp, int32_t b_zp, int32_t m1, int32_t e1, int32_t m2, int32_t e2,
                   int32_t mo, int32_t eo, int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out);
/* MAXIMUM (is_max=1) / MINIMUM of the raw int8 values (operands and output share parameters). */
void tcc_maxmin_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                   int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                   int32_t is_max, int8_t *out);
/* RESIZE_NEAREST_NEIGHBOR: output row y copies input row ys[y], column x input column xs[x] (flash tables). */
void tcc_resize_nearest_s8(const int8_t *in, int32_t iw, int32_t c, const int32_t *ys, const int32_t *xs,
                           int32_t oh, int32_t ow, int8_t *out);
/* RESIZE_BILINEAR (input and output share parameters): output row y blends input rows ry[3y] and ry[3y + 1], the
 * second weighted ry[3y + 2] / 1024 (columns likewise from rx; flash tables); TFLite's integer kernel. */
void tcc_resize_bilinear_s8(const int8_t *in, int32_t iw, int32_t c, const int32_t *ry, const int32_t *rx,
                            int32_t oh, int32_t ow, int8_t *out);
/* TRANSPOSE of a tensor of up to 3 non-batch axes: out[i0][i1][i2] = in[i0 * st0 + i1 * st1 + i2 * st2]. */
void tcc_transpose_s8(const int8_t *in, int32_t o0, int32_t o1, int32_t o2, int32_t st0, int32_t st1, int32_t st2,
                      int8_t *out);
/* SLICE along one axis: `outer` blocks of `inner` bytes taken at `offset` in blocks of `in_inner` bytes. */
void tcc_slice_s8(const int8_t *in, int32_t outer, int32_t in_inner, int32_t inner, int32_t offset, int8_t *out);
/* REVERSE along one axis (time reversal): `outer` blocks of `n` rows of `inner` bytes, rows in reverse order. */
void tcc_reverse_s8(const int8_t *in, int32_t outer, int32_t n, int32_t inner, int8_t *out);
/* TRANSPOSE_CONV: w (flash) [oc][kh][kw][ic], bias (flash, may be NULL); output pixel (y, x) sums input pixel
 * ((y + pt - ky) / sh, (x + pl - kx) / sw) where that divides evenly (TFLite's scatter, gathered). */
void tcc_transpose_conv_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w, const int32_t *bias,
                           int32_t oc, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt, int32_t pl,
                           const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp, int32_t act_min,
                           int32_t act_max, int8_t *out, int32_t oh, int32_t ow);
/* Copy `outer` blocks of `inner` bytes into blocks of `out_inner` bytes at `offset` (concatenation). */
void tcc_concat_s8(const int8_t *in, int32_t in_flash, int32_t outer, int32_t inner, int32_t out_inner,
                   int32_t offset, int8_t *out);
void tcc_pad_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t c, int32_t pt, int32_t pb, int32_t pl, int32_t pr,
                int32_t zp, int8_t *out);
/* Standalone RELU/RELU6: requantize then clamp. */
void tcc_relu_s8(const int8_t *in, int32_t n, int32_t in_zp, int32_t m, int32_t e, int32_t out_zp, int32_t act_min,
                 int32_t act_max, int8_t *out);
/* LOGISTIC (output scale 1/256, zero point -128): TFLite Micro's fixed-point algorithm;
 * mult/shift/radius as its Prepare computes them (see tinycc.ir.fixedpoint.logistic_params). */
void tcc_logistic_s8(const int8_t *in, int32_t n, int32_t in_zp, int32_t mult, int32_t shift, int32_t radius,
                     int8_t *out);
/* TANH (output scale 1/128, zero point 0): TFLite Micro's fixed-point algorithm (same Prepare as LOGISTIC). */
void tcc_tanh_s8(const int8_t *in, int32_t n, int32_t in_zp, int32_t mult, int32_t shift, int32_t radius,
                 int8_t *out);
/* LEAKY_RELU: identity multiplier for x >= zp, alpha multiplier below. */
void tcc_leaky_relu_s8(const int8_t *in, int32_t n, int32_t in_zp, int32_t out_zp, int32_t m_id, int32_t e_id,
                       int32_t m_alpha, int32_t e_alpha, int8_t *out);
/* ELU, GELU: a 256-entry table (flash) indexed by in + 128, computed by tinycc as TFLite's Prepare computes it. */
void tcc_lut_s8(const int8_t *in, int32_t n, const int8_t *table, int8_t *out);
/* PRELU (TFLite's int8 arithmetic): x - in_zp >= 0 times the identity multiplier, else (x - in_zp) * (alpha -
 * alpha_zp) times the alpha multiplier. The input is [d0, d1, d2] (batch 1); alpha (flash) is read at
 * i * a0 + j * a1 + k * a2 (stride 0 on a shared axis). */
void tcc_prelu_s8(const int8_t *in, const int8_t *alpha, int32_t d0, int32_t d1, int32_t d2, int32_t a0, int32_t a1,
                  int32_t a2, int32_t in_zp, int32_t alpha_zp, int32_t out_zp, int32_t m_id, int32_t e_id,
                  int32_t m_alpha, int32_t e_alpha, int8_t *out);
/* SOFTMAX over the last axis (output scale 1/256, zero point -128): TFLite's fixed-point algorithm;
 * mult/shift/diff_min as its Prepare computes them (tinycc.ir.fixedpoint.softmax_params). */
void tcc_softmax_s8(const int8_t *in, int32_t rows, int32_t depth, int32_t mult, int32_t shift,
                    int32_t diff_min, int8_t *out);
/* HARD_SWISH: TFLite's int16 fixed-point algorithm (tinycc.ir.fixedpoint.hard_swish_params), out_e <= 0. */
void tcc_hard_swish_s8(const int8_t *in, int32_t n, int32_t in_zp, int32_t out_zp, int32_t out_m, int32_t out_e,
                       int32_t rel_m, int32_t rel_e, int8_t *out);
/* TFLite's int8 MEAN over the hw positions of an [hw][c] input, requantized (tinycc.ir.interpreter_int8.mean_params). */
void tcc_mean_s8(const int8_t *in, int32_t hw, int32_t c, int32_t in_zp, int32_t mult, int32_t shift,
                 int32_t out_zp, int8_t *out);
/* TFLite's int8 MEAN over the last axis of [rows][depth] (keepdims), requantized like tcc_mean_s8. */
void tcc_mean_last_s8(const int8_t *in, int32_t rows, int32_t depth, int32_t in_zp, int32_t mult, int32_t shift,
                      int32_t out_zp, int8_t *out);
/* TFLite's int8 SQUARED_DIFFERENCE (operands shifted left 7, scaled, difference squared, requantized), broadcast
 * through strides like tcc_add_s8 (tinycc.ir.layernorm.sqdiff_params). */
void tcc_sqdiff_s8(const int8_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int8_t *b,
                   int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                   int32_t a_zp, int32_t b_zp, int32_t m1, int32_t e1, int32_t m2, int32_t e2, int32_t mo, int32_t eo,
                   int32_t out_zp, int8_t *out);
void tcc_quantize_f32(const float *in, int32_t n, float scale, int32_t zp, int8_t *out);
void tcc_dequantize_s8(const int8_t *in, int32_t n, float scale, int32_t zp, float *out);

/* ---- int16 activations (TFLite's 16x8: int8 weights, int64 bias), bit-exact with TFLite's reference kernels.
 * Convolutions and FULLY_CONNECTED accumulate in int64 and requantize with tcc_mbqm64; the others are the int8
 * arithmetic clamped to [-32768, 32767]. */
int32_t tcc_mbqm64(int64_t x, int32_t multiplier, int32_t shift);
void tcc_transpose_conv_s16(const int16_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w,
                            const int64_t *bias, int32_t oc, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt,
                            int32_t pl, const int32_t *mult, const int32_t *shift, int32_t act_min, int32_t act_max,
                            int16_t *out, int32_t oh, int32_t ow);
void tcc_conv2d_s16(const int16_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w, const int64_t *bias,
                    int32_t oc, int32_t kh, int32_t kw, int32_t groups, int32_t sh, int32_t sw, int32_t dh,
                    int32_t dw, int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift, int32_t act_min,
                    int32_t act_max, int16_t *out, int32_t oh, int32_t ow);
void tcc_dwconv2d_s16(const int16_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w, const int64_t *bias,
                      int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt,
                      int32_t pl, const int32_t *mult, const int32_t *shift, int32_t act_min, int32_t act_max,
                      int16_t *out, int32_t oh, int32_t ow);
void tcc_fc_s16(const int16_t *in, int32_t rows, int32_t n_in, const int8_t *w, const int64_t *bias, int32_t n_out,
                const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t act_min, int32_t act_max,
                int16_t *out);
void tcc_pool_s16(const int16_t *in, int32_t ih, int32_t iw, int32_t c, int32_t ph, int32_t pw, int32_t sh,
                  int32_t sw, int32_t pt, int32_t pl, int32_t is_max, int32_t act_min, int32_t act_max,
                  int16_t *out, int32_t oh, int32_t ow);
/* ADD (is_sub=0) or SUB (is_sub=1): ADD's fixed-point steps with a left shift of 15. */
void tcc_addsub_s16(const int16_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int16_t *b,
                    int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                    int32_t is_sub, int32_t a_zp, int32_t b_zp, int32_t m1, int32_t e1, int32_t m2, int32_t e2,
                    int32_t mo, int32_t eo, int32_t out_zp, int32_t act_min, int32_t act_max, int16_t *out);
void tcc_mul_s16(const int16_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int16_t *b,
                 int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                 int32_t a_zp, int32_t b_zp, int32_t m, int32_t e, int32_t out_zp, int32_t act_min, int32_t act_max,
                 int16_t *out);
/* RELU/RELU6 and int16 -> int16 QUANTIZE: (x - in_zp) * m, e + out_zp, clamped. */
void tcc_requant_s16(const int16_t *in, int32_t n, int32_t in_zp, int32_t m, int32_t e, int32_t out_zp,
                     int32_t act_min, int32_t act_max, int16_t *out);
/* int16 -> int8 QUANTIZE (TFLite's Requantize). */
void tcc_requant_s16_s8(const int16_t *in, int32_t n, int32_t in_zp, int32_t m, int32_t e, int32_t out_zp,
                        int8_t *out);
void tcc_leaky_relu_s16(const int16_t *in, int32_t n, int32_t in_zp, int32_t out_zp, int32_t m_id, int32_t e_id,
                        int32_t m_alpha, int32_t e_alpha, int16_t *out);
void tcc_pad_s16(const int16_t *in, int32_t ih, int32_t iw, int32_t c, int32_t pt, int32_t pb, int32_t pl,
                 int32_t pr, int32_t zp, int16_t *out);
/* Copy `outer` blocks of `inner` values into blocks of `out_inner` values at `offset` (concatenation). */
void tcc_concat_s16(const int16_t *in, int32_t in_flash, int32_t outer, int32_t inner, int32_t out_inner,
                    int32_t offset, int16_t *out);
/* Data movement of int16 tensors: as the _s8 kernels, counts and strides in elements. */
void tcc_maxmin_s16(const int16_t *a, int32_t a_flash, int32_t ash, int32_t asw, int32_t asc, const int16_t *b,
                    int32_t b_flash, int32_t bsh, int32_t bsw, int32_t bsc, int32_t oh, int32_t ow, int32_t oc,
                    int32_t is_max, int16_t *out);
void tcc_resize_nearest_s16(const int16_t *in, int32_t iw, int32_t c, const int32_t *ys, const int32_t *xs,
                            int32_t oh, int32_t ow, int16_t *out);
void tcc_transpose_s16(const int16_t *in, int32_t o0, int32_t o1, int32_t o2, int32_t st0, int32_t st1,
                       int32_t st2, int16_t *out);
void tcc_slice_s16(const int16_t *in, int32_t outer, int32_t in_inner, int32_t inner, int32_t offset,
                   int16_t *out);
void tcc_reverse_s16(const int16_t *in, int32_t outer, int32_t n, int32_t inner, int16_t *out);
/* TFLite's MEAN over the hw positions of an [hw][c] int16 input, requantized (tcc_mean_s8's arithmetic). */
void tcc_mean_s16(const int16_t *in, int32_t hw, int32_t c, int32_t in_zp, int32_t mult, int32_t shift,
                  int32_t out_zp, int16_t *out);
/* int16 LOGISTIC (is_tanh 0) / TANH (1) and SOFTMAX of TFLite's 16x8 (ir/fixedpoint16.py): table kernels */
void tcc_sigmoid_tanh_s16(const int16_t *in, int32_t n, int32_t mult, int32_t shift, int32_t is_tanh,
                          const uint16_t *table, int16_t *out);
void tcc_softmax_s16(const int16_t *in, int32_t rows, int32_t depth, int32_t mult, int32_t shift,
                     const int16_t *exp_lut, const int16_t *recip_lut, int16_t *out);
void tcc_quantize_f32_s16(const float *in, int32_t n, float scale, int32_t zp, int16_t *out);
void tcc_dequantize_s16(const int16_t *in, int32_t n, float scale, int32_t zp, float *out);

/* Sparse backbone updates (--train sparse): recompute the output channels o with row[o] >= 0 of a Conv2D (groups 1),
 * DepthwiseConv2D or fully connected layer from their int8 weights in RAM, w8 [nch][kh*kw*ic] (depthwise [nch][kh*kw],
 * fc [nch][n_in]) at row row[o], after the whole layer ran on its flash weights; the other arguments are the layer
 * kernel's (bias, mult and shift read as it reads them; row: a flash table), the arithmetic is the same. */
void tcc_conv2d_rows_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8, const int32_t *bias,
                        int32_t oc, int32_t kh, int32_t kw, int32_t groups, int32_t sh, int32_t sw, int32_t dh,
                        int32_t dw, int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift, int32_t in_zp,
                        int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow,
                        const int32_t *row);
void tcc_dwconv2d_rows_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8, const int32_t *bias,
                          int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt,
                          int32_t pl, const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp,
                          int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow, const int32_t *row);
void tcc_fc_rows_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w8, const int32_t *bias, int32_t n_out,
                    const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp, int32_t out_zp,
                    int32_t act_min, int32_t act_max, int8_t *out, const int32_t *row);

/* The layer kernels of the trained region of --deep bias / --train sparse on a Harvard core (AVR): the same
 * arguments and arithmetic as tcc_conv2d_s8 / tcc_dwconv2d_s8 / tcc_fc_s8 and their _rows_ variants, but bias is
 * the learned int32 biases in RAM (plain loads); weights, mult and shift stay flash tables. */
void tcc_conv2d_bram_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w, const int32_t *bias,
                        int32_t oc, int32_t kh, int32_t kw, int32_t groups, int32_t sh, int32_t sw, int32_t dh,
                        int32_t dw, int32_t pt, int32_t pl, const int32_t *mult, const int32_t *shift, int32_t in_zp,
                        int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow);
void tcc_dwconv2d_bram_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w, const int32_t *bias,
                          int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt,
                          int32_t pl, const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp,
                          int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow);
void tcc_fc_bram_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w, const int32_t *bias, int32_t n_out,
                    const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp, int32_t out_zp,
                    int32_t act_min, int32_t act_max, int8_t *out);
void tcc_conv2d_rows_bram_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8,
                             const int32_t *bias, int32_t oc, int32_t kh, int32_t kw, int32_t groups, int32_t sh,
                             int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl, const int32_t *mult,
                             const int32_t *shift, int32_t in_zp, int32_t out_zp, int32_t act_min, int32_t act_max,
                             int8_t *out, int32_t oh, int32_t ow, const int32_t *row);
void tcc_dwconv2d_rows_bram_s8(const int8_t *in, int32_t ih, int32_t iw, int32_t ic, const int8_t *w8,
                               const int32_t *bias, int32_t m, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                               int32_t dh, int32_t dw, int32_t pt, int32_t pl, const int32_t *mult,
                               const int32_t *shift, int32_t in_zp, int32_t out_zp, int32_t act_min, int32_t act_max,
                               int8_t *out, int32_t oh, int32_t ow, const int32_t *row);
void tcc_fc_rows_bram_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w8, const int32_t *bias,
                         int32_t n_out, const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp,
                         int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out, const int32_t *row);

#endif
