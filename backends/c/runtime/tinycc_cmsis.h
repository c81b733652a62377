/* tinycc --kernels cmsis-nn: flat-argument wrappers over Arm CMSIS-NN's int8 API (NHWC, batch 1 unless noted).
 * Arguments are those of the matching tcc_*_s8 kernel in tinycc_kernels.h, after the scratch buffer and its
 * size: zero points as stored (the wrappers pass CMSIS-NN offsets -zp for inputs, +zp for outputs, as TFLite
 * Micro does), per-channel multipliers/shifts from TFLite's Prepare arithmetic.
 * Each wrapper checks the call's *_get_buffer_size against scratch_size first; when it does not fit, or
 * CMSIS-NN reports an argument error, the output is filled with the output zero point and -1 returned. */
#ifndef TINYCC_CMSIS_H
#define TINYCC_CMSIS_H

#include <stdint.h>

int32_t tcc_cmsis_conv2d_s8(void *scratch, int32_t scratch_size, const int8_t *in, int32_t ih, int32_t iw,
                          int32_t ic, const int8_t *w, const int32_t *bias, int32_t oc, int32_t kh, int32_t kw,
                          int32_t groups, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                          const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp,
                          int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow);
int32_t tcc_cmsis_dwconv2d_s8(void *scratch, int32_t scratch_size, const int8_t *in, int32_t ih, int32_t iw,
                            int32_t ic, const int8_t *w, const int32_t *bias, int32_t m, int32_t kh, int32_t kw,
                            int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                            const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp,
                            int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow);
/* rows input rows of n_in values; per_channel selects mult[o] or mult[0] for every output. */
int32_t tcc_cmsis_fc_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w, const int32_t *bias,
                        int32_t n_out, const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp,
                        int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out);
int32_t tcc_cmsis_pool_s8(void *scratch, int32_t scratch_size, const int8_t *in, int32_t ih, int32_t iw, int32_t c,
                          int32_t ph, int32_t pw, int32_t sh, int32_t sw, int32_t pt, int32_t pl, int32_t is_max,
                          int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow);
/* Same-shape operands of n elements (CMSIS-NN does not broadcast); element i is read before it is written. */
int32_t tcc_cmsis_add_s8(const int8_t *a, const int8_t *b, int32_t n, int32_t a_zp, int32_t b_zp, int32_t m1,
                         int32_t e1, int32_t m2, int32_t e2, int32_t mo, int32_t eo, int32_t out_zp, int32_t act_min,
                         int32_t act_max, int8_t *out);
int32_t tcc_cmsis_mul_s8(const int8_t *a, const int8_t *b, int32_t n, int32_t a_zp, int32_t b_zp, int32_t m,
                         int32_t e, int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out);

#endif
