/* tinycc: float backward kernels for learning beyond the head (reference: tinycc.ir.backprop).
 * Layout NHWC; Conv2D weights [O][KH][KW][C]; depthwise [KH][KW][C*M]; Dense [O][I].
 * The weight update is fused (Tiny Training Engine): every gradient element is computed and applied in
 * place, no weight-sized gradient array; a check pass refuses the step before anything is written. */
#ifndef TINYCC_BACKPROP_H
#define TINYCC_BACKPROP_H

#include <stdint.h>

#include "tinycc_port.h"

typedef struct {
    int32_t n, h, w, c;        /* input [n][h][w][c] */
    int32_t o, kh, kw;         /* outputs (conv; depthwise: c * mult), kernel */
    int32_t sh, sw, dh, dw;    /* strides, dilations */
    int32_t pt, pl;            /* padding before (top, left) */
    int32_t oh, ow;            /* output size */
    int32_t mult;              /* depthwise multiplier; 0 = Conv2D */
} tcc_bp_conv_t;

/* dz := dy masked by the fused activation's derivative at the output y (0 none, 1 relu, 2 relu6). */
void tcc_bp_act(float *dz, const float *dy, const float *y, int32_t count, int act);

/* The same mask at an int8 output q (value scale * (q - zp), as TFLite's DEQUANTIZE): the lean step keeps the
 * int8 activations of the int8 backbone instead of float copies. */
void tcc_bp_act_q(float *dz, const float *dy, const int8_t *q, int32_t count, int act, float scale, int32_t zp);

/* dx[n][h][w][c] = sum over outputs and kernel positions of dz * W (old weights); dx is overwritten. */
void tcc_bp_conv_dx(const tcc_bp_conv_t *p, const float *wt, const float *dz, float *dx);

/* The same with the frozen int8 weights of the int8 backbone, dequantized on the fly (w = ws[o] * q, zero point 0,
 * as TFLite's per-channel weights): the bias step needs no float copy of them in flash. */
void tcc_bp_conv_dx_q(const tcc_bp_conv_t *p, const int8_t *wq, const float *ws, const float *dz, float *dx);

/* Fused SGD on W and b: g = sum_{n,h,w} dz * x (rows in order), w -= lr * g.  write = 0 only checks that every
 * new value is finite (returns 0 when one is not), write = 1 applies the update (returns 1). */
int tcc_bp_conv_update(const tcc_bp_conv_t *p, float *wt, float *b, const float *x, const float *dz, float lr,
                       int train_w, int write);

/* Dense: dx [n][i] = dz [n][o] W; update like the convolution's. */
void tcc_bp_dense_dx(int32_t n, int32_t in, int32_t out, const float *wt, const float *dz, float *dx);
void tcc_bp_dense_dx_q(int32_t n, int32_t in, int32_t out, const int8_t *wq, const float *ws, const float *dz,
                       float *dx);
int tcc_bp_dense_update(int32_t n, int32_t in, int32_t out, float *wt, float *b, const float *x, const float *dz,
                        float lr, int train_w, int write);

/* Pooling backward (p->o = c, p->mult unused): average (valid pixels of each window) or max (first maximum,
 * row-major); dx is overwritten. */
void tcc_bp_avgpool_dx(const tcc_bp_conv_t *p, const float *dy, float *dx);
void tcc_bp_maxpool_dx(const tcc_bp_conv_t *p, const float *x, const float *dy, float *dx);

/* Float forward (the trainable blocks run in float): convolution / depthwise (p->mult) with bias and the fused
 * activation act (0 none, 1 relu, 2 relu6); Dense; average (valid pixels) and max pooling; act alone. */
void tcc_fp_conv(const tcc_bp_conv_t *p, const float *x, const float *wt, const float *b, float *y, int act);
void tcc_fp_dense(int32_t n, int32_t in, int32_t out, const float *x, const float *wt, const float *b, float *y,
                  int act);
void tcc_fp_avgpool(const tcc_bp_conv_t *p, const float *x, float *y);
void tcc_fp_maxpool(const tcc_bp_conv_t *p, const float *x, float *y);
void tcc_fp_act(float *y, int32_t count, int act);

/* Activation layers of the trainable blocks, element by element (y may be x): sigmoid 1 / (1 + exp(-x)), swish
 * x * sigmoid(x), hard sigmoid clip(x + 3, 0, 6) / 6. Their backward (dx overwritten, may be dy): sigmoid
 * dy * y * (1 - y) at its output y; swish dy * s * (1 + x * (1 - s)), s = sigmoid(x), at its input x; hard sigmoid
 * dy / 6 where -3 < x < 3, else 0 (reference: tinycc.ir.backprop, the same float32 operations in the same order). */
void tcc_fp_sigmoid(const float *x, float *y, int32_t count);
void tcc_fp_swish(const float *x, float *y, int32_t count);
void tcc_fp_hard_sigmoid(const float *x, float *y, int32_t count);
void tcc_bp_sigmoid_dx(const float *y, const float *dy, float *dx, int32_t count);
void tcc_bp_swish_dx(const float *x, const float *dy, float *dx, int32_t count);
void tcc_bp_hard_sigmoid_dx(const float *x, const float *dy, float *dx, int32_t count);

/* Softplus log(1 + exp(x)), softsign x / (1 + |x|), SELU scale * (x > 0 ? x : alpha * (exp(x) - 1)), mish
 * x * tanh(softplus(x)), exponential exp(x) (int8: tables; these are the float tail's), element by element (y may be
 * x), and their backward at the input x (dx overwritten, may be dy): dy * sigmoid(x), dy / (1 + |x|)^2,
 * dy * scale * (x < 0 ? alpha * exp(x) : 1), dy * (t + x * sigmoid(x) * (1 - t^2)) with t = tanh(softplus(x)),
 * dy * exp(x) (reference: tinycc.ir.backprop.act_derivative; expf/logf/tanhf only, within a few ulps). */
void tcc_fp_softplus(const float *x, float *y, int32_t count);
void tcc_fp_softsign(const float *x, float *y, int32_t count);
void tcc_fp_selu(const float *x, float *y, int32_t count);
void tcc_fp_mish(const float *x, float *y, int32_t count);
void tcc_fp_exponential(const float *x, float *y, int32_t count);
void tcc_bp_softplus_dx(const float *x, const float *dy, float *dx, int32_t count);
void tcc_bp_softsign_dx(const float *x, const float *dy, float *dx, int32_t count);
void tcc_bp_selu_dx(const float *x, const float *dy, float *dx, int32_t count);
void tcc_bp_mish_dx(const float *x, const float *dy, float *dx, int32_t count);
void tcc_bp_exponential_dx(const float *x, const float *dy, float *dx, int32_t count);

/* The exact b / s of two floats rounded half to even, clamped to [lo, hi] (lo < 0 < hi), in integer arithmetic on
 * the floats' bits (no double: identical on every core, AVR included). NaN in either, inf / inf and 0 / 0 give 0; an
 * infinite b or a zero s (b nonzero) the bound of the quotient's sign; a zero b or an infinite s 0
 * (reference: tinycc.ir.deep.round_div). */
int32_t tcc_bp_round_div(float b, float s, int32_t lo, int32_t hi);

/* The int8 backbone's constants (wq, ws, scale, row below) are flash tables (TCC_WEIGHT), read through TCC_READ_*.
 * int8 backbone bias learning: q[c] = tcc_bp_round_div(b[c], scale[c]) clamped to int32 (the exact quotient, half
 * to even); the int32 bias at TFLite's bias scale s_in * s_w[c] (reference: tinycc.ir.deep.requantize_bias). */
void tcc_bp_requantize_bias(const float *b, const float *scale, int32_t *q, int32_t count);

/* --train sparse: a layer whose trained output channels o (row[o] >= 0) keep float masters wm [nch][per] (per:
 * weights per output channel, kh*kw*c; depthwise kh*kw; Dense in), the others their int8 weights wq (zero point 0,
 * scale ws[o]). dx with the old weights of both kinds; the fused update of the masters (b NULL: a frozen bias); the
 * int8 copy w8 [nch][per] the int8 kernels read: tcc_bp_round_div(wm, ws[o], -127, 127) (exact, half to even)
 * (reference: tinycc.ir.deep.DeepLearner mode sparse). */
void tcc_bp_conv_dx_rows(const tcc_bp_conv_t *p, const int8_t *wq, const float *ws, const float *wm,
                         const int32_t *row, const float *dz, float *dx);
void tcc_bp_dense_dx_rows(int32_t n, int32_t in, int32_t out, const int8_t *wq, const float *ws, const float *wm,
                          const int32_t *row, const float *dz, float *dx);
int tcc_bp_conv_update_rows(const tcc_bp_conv_t *p, float *wm, const int32_t *row, float *b, const float *x,
                            const float *dz, float lr, int write);
int tcc_bp_dense_update_rows(int32_t n, int32_t in, int32_t out, float *wm, const int32_t *row, float *b,
                             const float *x, const float *dz, float lr, int write);
void tcc_bp_requantize_rows(const float *wm, const float *ws, const int32_t *row, int32_t out, int32_t per, int8_t *w8);

#endif
