/* tinycc --kernels cmsis-nn: see tinycc_cmsis.h. Compiled with CMSIS-NN's Include/ on the include path. */
#include "tinycc_cmsis.h"

#include <string.h>

#include "arm_nnfunctions.h"

static int32_t fail(int8_t *out, int32_t n, int32_t zp) {
    memset(out, (int)(int8_t)zp, (size_t)n);
    return -1;
}

static int32_t done(arm_cmsis_nn_status st, int8_t *out, int32_t n, int32_t zp) {
    return st == ARM_CMSIS_NN_SUCCESS ? 0 : fail(out, n, zp);
}

static cmsis_nn_dims dims(int32_t n, int32_t h, int32_t w, int32_t c) {
    cmsis_nn_dims d;
    d.n = n;
    d.h = h;
    d.w = w;
    d.c = c;
    return d;
}

int32_t tcc_cmsis_conv2d_s8(void *scratch, int32_t scratch_size, const int8_t *in, int32_t ih, int32_t iw,
                          int32_t ic, const int8_t *w, const int32_t *bias, int32_t oc, int32_t kh, int32_t kw,
                          int32_t groups, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                          const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp,
                          int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow) {
    cmsis_nn_context ctx;
    cmsis_nn_conv_params p;
    cmsis_nn_per_channel_quant_params q;
    const cmsis_nn_dims id = dims(1, ih, iw, ic), fd = dims(oc, kh, kw, ic / groups), bd = dims(1, 1, 1, oc),
                        od = dims(1, oh, ow, oc);
    p.input_offset = -in_zp;
    p.output_offset = out_zp;
    p.stride.h = sh;
    p.stride.w = sw;
    p.padding.h = pt;
    p.padding.w = pl;
    p.dilation.h = dh;
    p.dilation.w = dw;
    p.activation.min = act_min;
    p.activation.max = act_max;
    q.multiplier = (int32_t *)mult; /* CMSIS-NN reads them only */
    q.shift = (int32_t *)shift;
    ctx.buf = scratch;
    ctx.size = scratch_size;
    if (arm_convolve_wrapper_s8_get_buffer_size(&p, &id, &fd, &od) > scratch_size) {
        return fail(out, oh * ow * oc, out_zp);
    }
    return done(arm_convolve_wrapper_s8(&ctx, &p, &q, &id, in, &fd, w, &bd, bias, &od, out), out, oh * ow * oc,
                out_zp);
}

int32_t tcc_cmsis_dwconv2d_s8(void *scratch, int32_t scratch_size, const int8_t *in, int32_t ih, int32_t iw,
                            int32_t ic, const int8_t *w, const int32_t *bias, int32_t m, int32_t kh, int32_t kw,
                            int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t pt, int32_t pl,
                            const int32_t *mult, const int32_t *shift, int32_t in_zp, int32_t out_zp,
                            int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow) {
    cmsis_nn_context ctx;
    cmsis_nn_dw_conv_params p;
    cmsis_nn_per_channel_quant_params q;
    const int32_t oc = ic * m;
    const cmsis_nn_dims id = dims(1, ih, iw, ic), fd = dims(1, kh, kw, oc), bd = dims(1, 1, 1, oc),
                        od = dims(1, oh, ow, oc);
    p.input_offset = -in_zp;
    p.output_offset = out_zp;
    p.ch_mult = m;
    p.stride.h = sh;
    p.stride.w = sw;
    p.padding.h = pt;
    p.padding.w = pl;
    p.dilation.h = dh;
    p.dilation.w = dw;
    p.activation.min = act_min;
    p.activation.max = act_max;
    q.multiplier = (int32_t *)mult;
    q.shift = (int32_t *)shift;
    ctx.buf = scratch;
    ctx.size = scratch_size;
    if (arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &id, &fd, &od) > scratch_size) {
        return fail(out, oh * ow * oc, out_zp);
    }
    return done(arm_depthwise_conv_wrapper_s8(&ctx, &p, &q, &id, in, &fd, w, &bd, bias, &od, out), out,
                oh * ow * oc, out_zp);
}

int32_t tcc_cmsis_fc_s8(const int8_t *in, int32_t rows, int32_t n_in, const int8_t *w, const int32_t *bias,
                        int32_t n_out, const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t in_zp,
                        int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out) {
    cmsis_nn_context ctx;
    cmsis_nn_fc_params p;
    cmsis_nn_quant_params q;
    const cmsis_nn_dims id = dims(rows, 1, 1, n_in), fd = dims(n_in, 1, 1, n_out), bd = dims(1, 1, 1, n_out),
                        od = dims(rows, 1, 1, n_out);
    p.input_offset = -in_zp;
    p.filter_offset = 0; /* symmetric int8 weights */
    p.output_offset = out_zp;
    p.activation.min = act_min;
    p.activation.max = act_max;
    q.multiplier = (int32_t *)mult;
    q.shift = (int32_t *)shift;
    q.is_per_channel = per_channel;
    ctx.buf = NULL; /* kernel sums: MVE only */
    ctx.size = 0;
    if (arm_fully_connected_s8_get_buffer_size(&fd) > 0) {
        return fail(out, rows * n_out, out_zp);
    }
    return done(arm_fully_connected_wrapper_s8(&ctx, &p, &q, &id, in, &fd, w, &bd, bias, &od, out), out,
                rows * n_out, out_zp);
}

int32_t tcc_cmsis_pool_s8(void *scratch, int32_t scratch_size, const int8_t *in, int32_t ih, int32_t iw, int32_t c,
                          int32_t ph, int32_t pw, int32_t sh, int32_t sw, int32_t pt, int32_t pl, int32_t is_max,
                          int32_t act_min, int32_t act_max, int8_t *out, int32_t oh, int32_t ow) {
    cmsis_nn_context ctx;
    cmsis_nn_pool_params p;
    const cmsis_nn_dims id = dims(1, ih, iw, c), fd = dims(1, ph, pw, 1), od = dims(1, oh, ow, c);
    p.stride.h = sh;
    p.stride.w = sw;
    p.padding.h = pt;
    p.padding.w = pl;
    p.activation.min = act_min;
    p.activation.max = act_max;
    ctx.buf = scratch;
    ctx.size = scratch_size;
    if (is_max) {
        return done(arm_max_pool_s8(&ctx, &p, &id, in, &fd, &od, out), out, oh * ow * c, 0);
    }
    if (arm_avgpool_s8_get_buffer_size(ow, c) > scratch_size) {
        return fail(out, oh * ow * c, 0);
    }
    return done(arm_avgpool_s8(&ctx, &p, &id, in, &fd, &od, out), out, oh * ow * c, 0);
}

int32_t tcc_cmsis_add_s8(const int8_t *a, const int8_t *b, int32_t n, int32_t a_zp, int32_t b_zp, int32_t m1,
                         int32_t e1, int32_t m2, int32_t e2, int32_t mo, int32_t eo, int32_t out_zp, int32_t act_min,
                         int32_t act_max, int8_t *out) {
    return done(arm_elementwise_add_s8(a, b, -a_zp, m1, e1, -b_zp, m2, e2, 20, out, out_zp, mo, eo, act_min, act_max,
                                       n), out, n, out_zp);
}

int32_t tcc_cmsis_mul_s8(const int8_t *a, const int8_t *b, int32_t n, int32_t a_zp, int32_t b_zp, int32_t m,
                         int32_t e, int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out) {
    return done(arm_elementwise_mul_s8(a, b, -a_zp, -b_zp, out, out_zp, m, e, act_min, act_max, n), out, n, out_zp);
}
