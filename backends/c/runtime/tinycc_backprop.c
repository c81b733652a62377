/* tinycc: float backward kernels (see tinycc_backprop.h; reference: tinycc.ir.backprop). */
#include "tinycc_backprop.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* the int8 backbone's constants the step reads (tcc_wq/tcc_ws/tcc_bs weights and scales, tcc_row channel rows)
 * are flash tables (TCC_WEIGHT: PROGMEM on AVR), read through TCC_READ_* */
static int32_t row_of(const int32_t *row, int32_t o) {
    return TCC_READ_S32(row + o);
}

void tcc_bp_act(float *dz, const float *dy, const float *y, int32_t count, int act) {
    for (int32_t k = 0; k < count; ++k) {
        int pass = act == 0 || (y[k] > 0.0f && (act == 1 || y[k] < 6.0f));
        dz[k] = pass ? dy[k] : 0.0f;
    }
}

void tcc_bp_act_q(float *dz, const float *dy, const int8_t *q, int32_t count, int act, float scale, int32_t zp) {
    for (int32_t k = 0; k < count; ++k) {
        float y = scale * (float)((int32_t)q[k] - zp);
        int pass = act == 0 || (y > 0.0f && (act == 1 || y < 6.0f));
        dz[k] = pass ? dy[k] : 0.0f;
    }
}

static size_t at(const tcc_bp_conv_t *p, int32_t n, int32_t y, int32_t x) {
    return (((size_t)n * (size_t)p->h + (size_t)y) * (size_t)p->w + (size_t)x) * (size_t)p->c;
}

static size_t out_at(const tcc_bp_conv_t *p, int32_t n, int32_t y, int32_t x) {
    return (((size_t)n * (size_t)p->oh + (size_t)y) * (size_t)p->ow + (size_t)x) * (size_t)p->o;
}

/* input row/column of output (oy, ox) at kernel position (i, j); -1 when it falls in the padding */
static int32_t in_y(const tcc_bp_conv_t *p, int32_t oy, int32_t i) {
    int32_t y = oy * p->sh + i * p->dh - p->pt;
    return y >= 0 && y < p->h ? y : -1;
}

static int32_t in_x(const tcc_bp_conv_t *p, int32_t ox, int32_t j) {
    int32_t x = ox * p->sw + j * p->dw - p->pl;
    return x >= 0 && x < p->w ? x : -1;
}

static size_t w_at(const tcc_bp_conv_t *p, int32_t o, int32_t i, int32_t j) {
    if (p->mult) /* depthwise [KH][KW][C*M]: the element of output channel o */
        return ((size_t)i * (size_t)p->kw + (size_t)j) * (size_t)p->o + (size_t)o;
    return (((size_t)o * (size_t)p->kh + (size_t)i) * (size_t)p->kw + (size_t)j) * (size_t)p->c;
}

/* where a layer's weights are: float wt (every channel), or int8 wq (zero point 0, scale ws[o]) with, where row is
 * not NULL, the float masters wm [nch][per] of the channels o with row[o] >= 0 (--train sparse) */
typedef struct {
    const float *wt;
    const int8_t *wq;
    const float *ws;
    const float *wm;
    const int32_t *row;
    int32_t per;
} wsrc_t;

/* weight element idx of output channel o (off: its place in the channel's row) */
static float wval(const wsrc_t *s, size_t idx, int32_t o, size_t off) {
    if (s->wt) return s->wt[idx];
    if (s->row && row_of(s->row, o) >= 0) return s->wm[(size_t)row_of(s->row, o) * (size_t)s->per + off];
    return TCC_READ_F32(s->ws + o) * (float)TCC_READ_S8(s->wq + idx);
}

static void conv_dx(const tcc_bp_conv_t *p, const wsrc_t *ws, const float *dz, float *dx) {
    size_t total = (size_t)p->n * (size_t)p->h * (size_t)p->w * (size_t)p->c;
    for (size_t k = 0; k < total; ++k) dx[k] = 0.0f;
    for (int32_t n = 0; n < p->n; ++n)
        for (int32_t oy = 0; oy < p->oh; ++oy)
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                const float *d = dz + out_at(p, n, oy, ox);
                for (int32_t i = 0; i < p->kh; ++i) {
                    int32_t y = in_y(p, oy, i);
                    if (y < 0) continue;
                    for (int32_t j = 0; j < p->kw; ++j) {
                        int32_t x = in_x(p, ox, j);
                        if (x < 0) continue;
                        float *g = dx + at(p, n, y, x);
                        for (int32_t c = 0; c < p->c; ++c) {
                            float s = 0.0f;
                            if (p->mult) {
                                for (int32_t m = 0; m < p->mult; ++m) {
                                    int32_t o = c * p->mult + m;
                                    s += d[o] * wval(ws, w_at(p, o, i, j), o, (size_t)i * (size_t)p->kw + (size_t)j);
                                }
                            } else {
                                for (int32_t o = 0; o < p->o; ++o)
                                    s += d[o] * wval(ws, w_at(p, o, i, j) + (size_t)c, o,
                                                     ((size_t)i * (size_t)p->kw + (size_t)j) * (size_t)p->c + (size_t)c);
                            }
                            g[c] += s;
                        }
                    }
                }
            }
}

static int32_t per_channel(const tcc_bp_conv_t *p) {
    return p->mult ? p->kh * p->kw : p->kh * p->kw * p->c;
}

void tcc_bp_conv_dx(const tcc_bp_conv_t *p, const float *wt, const float *dz, float *dx) {
    const wsrc_t s = {wt, NULL, NULL, NULL, NULL, 0};
    conv_dx(p, &s, dz, dx);
}

void tcc_bp_conv_dx_q(const tcc_bp_conv_t *p, const int8_t *wq, const float *ws, const float *dz, float *dx) {
    const wsrc_t s = {NULL, wq, ws, NULL, NULL, 0};
    conv_dx(p, &s, dz, dx);
}

void tcc_bp_conv_dx_rows(const tcc_bp_conv_t *p, const int8_t *wq, const float *ws, const float *wm,
                         const int32_t *row, const float *dz, float *dx) {
    const wsrc_t s = {NULL, wq, ws, wm, row, per_channel(p)};
    conv_dx(p, &s, dz, dx);
}

/* gradient of the weight element (o, i, j, c) (depthwise: c is o's input channel) */
static float conv_grad(const tcc_bp_conv_t *p, const float *x, const float *dz, int32_t o, int32_t i, int32_t j,
                       int32_t c) {
    float g = 0.0f;
    for (int32_t n = 0; n < p->n; ++n)
        for (int32_t oy = 0; oy < p->oh; ++oy) {
            int32_t y = in_y(p, oy, i);
            if (y < 0) continue;
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                int32_t xx = in_x(p, ox, j);
                if (xx < 0) continue;
                g += dz[out_at(p, n, oy, ox) + (size_t)o] * x[at(p, n, y, xx) + (size_t)c];
            }
        }
    return g;
}

static float bias_grad(int32_t rows, int32_t out, const float *dz, int32_t o) {
    float g = 0.0f;
    for (int32_t r = 0; r < rows; ++r) g += dz[(size_t)r * (size_t)out + (size_t)o];
    return g;
}

/* w -= lr * g, or (write = 0) whether the result is finite */
static int apply(float *w, float g, float lr, int write) {
    float v = *w - lr * g;
    if (!write) return isfinite(v) ? 1 : 0;
    *w = v;
    return 1;
}

/* the weight element (o, i, j, c) to update: in wt (layout of the layer), or with row in the masters wm; NULL when
 * channel o is frozen */
static float *wslot(const tcc_bp_conv_t *p, float *wt, const int32_t *row, int32_t o, int32_t i, int32_t j, int32_t c) {
    size_t off = (size_t)i * (size_t)p->kw + (size_t)j;
    if (!row) return &wt[w_at(p, o, i, j) + (p->mult ? 0 : (size_t)c)];
    if (row_of(row, o) < 0) return NULL;
    return &wt[(size_t)row_of(row, o) * (size_t)per_channel(p) + (p->mult ? off : off * (size_t)p->c + (size_t)c)];
}

static int conv_update(const tcc_bp_conv_t *p, float *wt, const int32_t *row, float *b, const float *x,
                       const float *dz, float lr, int train_w, int write) {
    int ok = 1;
    if (train_w)
        for (int32_t o = 0; o < p->o; ++o) {
            if (row && row_of(row, o) < 0) continue;
            for (int32_t i = 0; i < p->kh; ++i)
                for (int32_t j = 0; j < p->kw; ++j)
                    for (int32_t c = 0; c < (p->mult ? 1 : p->c); ++c)
                        ok &= apply(wslot(p, wt, row, o, i, j, c),
                                    conv_grad(p, x, dz, o, i, j, p->mult ? o / p->mult : c), lr, write);
        }
    for (int32_t o = 0; o < p->o && b; ++o)
        ok &= apply(&b[o], bias_grad(p->n * p->oh * p->ow, p->o, dz, o), lr, write);
    return ok;
}

int tcc_bp_conv_update(const tcc_bp_conv_t *p, float *wt, float *b, const float *x, const float *dz, float lr,
                       int train_w, int write) {
    return conv_update(p, wt, NULL, b, x, dz, lr, train_w, write);
}

int tcc_bp_conv_update_rows(const tcc_bp_conv_t *p, float *wm, const int32_t *row, float *b, const float *x,
                            const float *dz, float lr, int write) {
    return conv_update(p, wm, row, b, x, dz, lr, 1, write);
}

static void dense_dx(int32_t n, int32_t in, int32_t out, const wsrc_t *ws, const float *dz, float *dx) {
    for (int32_t r = 0; r < n; ++r)
        for (int32_t i = 0; i < in; ++i) {
            float s = 0.0f;
            for (int32_t o = 0; o < out; ++o)
                s += dz[(size_t)r * (size_t)out + (size_t)o] * wval(ws, (size_t)o * (size_t)in + (size_t)i, o, (size_t)i);
            dx[(size_t)r * (size_t)in + (size_t)i] = s;
        }
}

void tcc_bp_dense_dx(int32_t n, int32_t in, int32_t out, const float *wt, const float *dz, float *dx) {
    const wsrc_t s = {wt, NULL, NULL, NULL, NULL, 0};
    dense_dx(n, in, out, &s, dz, dx);
}

void tcc_bp_dense_dx_q(int32_t n, int32_t in, int32_t out, const int8_t *wq, const float *ws, const float *dz,
                       float *dx) {
    const wsrc_t s = {NULL, wq, ws, NULL, NULL, 0};
    dense_dx(n, in, out, &s, dz, dx);
}

void tcc_bp_dense_dx_rows(int32_t n, int32_t in, int32_t out, const int8_t *wq, const float *ws, const float *wm,
                          const int32_t *row, const float *dz, float *dx) {
    const wsrc_t s = {NULL, wq, ws, wm, row, in};
    dense_dx(n, in, out, &s, dz, dx);
}

static int dense_update(int32_t n, int32_t in, int32_t out, float *wt, const int32_t *row, float *b, const float *x,
                        const float *dz, float lr, int train_w, int write) {
    int ok = 1;
    for (int32_t o = 0; o < out; ++o) {
        if (train_w && !(row && row_of(row, o) < 0))
            for (int32_t i = 0; i < in; ++i) {
                float g = 0.0f;
                for (int32_t r = 0; r < n; ++r)
                    g += dz[(size_t)r * (size_t)out + (size_t)o] * x[(size_t)r * (size_t)in + (size_t)i];
                ok &= apply(&wt[(size_t)(row ? row_of(row, o) : o) * (size_t)in + (size_t)i], g, lr, write);
            }
        if (b) ok &= apply(&b[o], bias_grad(n, out, dz, o), lr, write);
    }
    return ok;
}

int tcc_bp_dense_update(int32_t n, int32_t in, int32_t out, float *wt, float *b, const float *x, const float *dz,
                        float lr, int train_w, int write) {
    return dense_update(n, in, out, wt, NULL, b, x, dz, lr, train_w, write);
}

int tcc_bp_dense_update_rows(int32_t n, int32_t in, int32_t out, float *wm, const int32_t *row, float *b,
                             const float *x, const float *dz, float lr, int write) {
    return dense_update(n, in, out, wm, row, b, x, dz, lr, 1, write);
}

static void zero_input(const tcc_bp_conv_t *p, float *dx) {
    size_t total = (size_t)p->n * (size_t)p->h * (size_t)p->w * (size_t)p->c;
    for (size_t k = 0; k < total; ++k) dx[k] = 0.0f;
}

void tcc_bp_avgpool_dx(const tcc_bp_conv_t *p, const float *dy, float *dx) {
    zero_input(p, dx);
    for (int32_t n = 0; n < p->n; ++n)
        for (int32_t oy = 0; oy < p->oh; ++oy)
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                int32_t cnt = 0;
                for (int32_t i = 0; i < p->kh; ++i)
                    for (int32_t j = 0; j < p->kw; ++j) cnt += in_y(p, oy, i) >= 0 && in_x(p, ox, j) >= 0;
                const float *d = dy + out_at(p, n, oy, ox);
                for (int32_t i = 0; i < p->kh; ++i) {
                    int32_t y = in_y(p, oy, i);
                    for (int32_t j = 0; j < p->kw; ++j) {
                        int32_t x = in_x(p, ox, j);
                        if (y < 0 || x < 0) continue;
                        for (int32_t c = 0; c < p->c; ++c) dx[at(p, n, y, x) + (size_t)c] += d[c] / (float)cnt;
                    }
                }
            }
}

void tcc_bp_maxpool_dx(const tcc_bp_conv_t *p, const float *x, const float *dy, float *dx) {
    zero_input(p, dx);
    for (int32_t n = 0; n < p->n; ++n)
        for (int32_t oy = 0; oy < p->oh; ++oy)
            for (int32_t ox = 0; ox < p->ow; ++ox)
                for (int32_t c = 0; c < p->c; ++c) {
                    size_t best = 0;
                    int found = 0;
                    for (int32_t i = 0; i < p->kh; ++i) {
                        int32_t y = in_y(p, oy, i);
                        for (int32_t j = 0; j < p->kw; ++j) {
                            int32_t xx = in_x(p, ox, j);
                            if (y < 0 || xx < 0) continue;
                            size_t k = at(p, n, y, xx) + (size_t)c;
                            if (!found || x[k] > x[best]) best = k, found = 1;
                        }
                    }
                    if (found) dx[best] += dy[out_at(p, n, oy, ox) + (size_t)c];
                }
}

void tcc_fp_act(float *y, int32_t count, int act) {
    for (int32_t k = 0; k < count && act; ++k) {
        if (y[k] < 0.0f) y[k] = 0.0f;
        if (act == 2 && y[k] > 6.0f) y[k] = 6.0f;
    }
}

static float sigmoid(float x) {
    return 1.0f / (1.0f + expf(-x)); /* exp overflow: inf, and a correct 0 */
}

void tcc_fp_sigmoid(const float *x, float *y, int32_t count) {
    for (int32_t k = 0; k < count; ++k) y[k] = sigmoid(x[k]);
}

void tcc_fp_swish(const float *x, float *y, int32_t count) {
    for (int32_t k = 0; k < count; ++k) y[k] = x[k] * sigmoid(x[k]);
}

void tcc_fp_hard_sigmoid(const float *x, float *y, int32_t count) {
    for (int32_t k = 0; k < count; ++k) {
        float v = x[k] + 3.0f;
        v = v < 0.0f ? 0.0f : v > 6.0f ? 6.0f : v;
        y[k] = v / 6.0f;
    }
}

void tcc_bp_sigmoid_dx(const float *y, const float *dy, float *dx, int32_t count) {
    for (int32_t k = 0; k < count; ++k) dx[k] = dy[k] * y[k] * (1.0f - y[k]);
}

void tcc_bp_swish_dx(const float *x, const float *dy, float *dx, int32_t count) {
    for (int32_t k = 0; k < count; ++k) {
        const float s = sigmoid(x[k]);
        dx[k] = dy[k] * s * (1.0f + x[k] * (1.0f - s));
    }
}

void tcc_bp_hard_sigmoid_dx(const float *x, const float *dy, float *dx, int32_t count) {
    for (int32_t k = 0; k < count; ++k) dx[k] = x[k] > -3.0f && x[k] < 3.0f ? dy[k] / 6.0f : 0.0f;
}

#define TCC_SELU_ALPHA 1.6732632423543772f
#define TCC_SELU_SCALE 1.0507009873554805f

/* log(1 + u) and exp(x) - 1 to a few ulps with logf/expf only (AVR's libm has neither log1pf nor expm1f): the
 * rounding error of 1 + u (of exp(x)) cancels in the ratio (Goldberg's method). */
static float log1p_f(float u) {
    const float w = 1.0f + u;
    return w == 1.0f ? u : logf(w) * u / (w - 1.0f);
}

static float expm1_f(float x) {
    const float w = expf(x);
    if (w == 1.0f) return x;
    if (w - 1.0f == -1.0f) return -1.0f;
    return (w - 1.0f) * x / logf(w);
}

static float softplus(float x) {
    return (x > 0.0f ? x : 0.0f) + log1p_f(expf(-fabsf(x)));
}

void tcc_fp_softplus(const float *x, float *y, int32_t count) {
    for (int32_t k = 0; k < count; ++k) y[k] = softplus(x[k]);
}

void tcc_fp_softsign(const float *x, float *y, int32_t count) {
    for (int32_t k = 0; k < count; ++k) y[k] = x[k] / (1.0f + fabsf(x[k]));
}

void tcc_fp_selu(const float *x, float *y, int32_t count) {
    for (int32_t k = 0; k < count; ++k)
        y[k] = x[k] > 0.0f ? TCC_SELU_SCALE * x[k] : TCC_SELU_SCALE * TCC_SELU_ALPHA * expm1_f(x[k]);
}

void tcc_fp_mish(const float *x, float *y, int32_t count) {
    for (int32_t k = 0; k < count; ++k) y[k] = x[k] * tanhf(softplus(x[k]));
}

void tcc_fp_exponential(const float *x, float *y, int32_t count) {
    for (int32_t k = 0; k < count; ++k) y[k] = expf(x[k]);
}

void tcc_bp_softplus_dx(const float *x, const float *dy, float *dx, int32_t count) {
    for (int32_t k = 0; k < count; ++k) dx[k] = dy[k] * sigmoid(x[k]);
}

void tcc_bp_softsign_dx(const float *x, const float *dy, float *dx, int32_t count) {
    for (int32_t k = 0; k < count; ++k) {
        const float d = 1.0f / (1.0f + fabsf(x[k]));
        dx[k] = dy[k] * (d * d);
    }
}

void tcc_bp_selu_dx(const float *x, const float *dy, float *dx, int32_t count) {
    for (int32_t k = 0; k < count; ++k)
        dx[k] = dy[k] * (x[k] < 0.0f ? TCC_SELU_SCALE * TCC_SELU_ALPHA * expf(x[k]) : TCC_SELU_SCALE);
}

void tcc_bp_mish_dx(const float *x, const float *dy, float *dx, int32_t count) {
    for (int32_t k = 0; k < count; ++k) {
        const float t = tanhf(softplus(x[k]));
        dx[k] = dy[k] * (t + x[k] * sigmoid(x[k]) * (1.0f - t * t));
    }
}

void tcc_bp_exponential_dx(const float *x, const float *dy, float *dx, int32_t count) {
    for (int32_t k = 0; k < count; ++k) dx[k] = dy[k] * expf(x[k]);
}

void tcc_fp_conv(const tcc_bp_conv_t *p, const float *x, const float *wt, const float *b, float *y, int act) {
    for (int32_t n = 0; n < p->n; ++n)
        for (int32_t oy = 0; oy < p->oh; ++oy)
            for (int32_t ox = 0; ox < p->ow; ++ox) {
                float *out = y + out_at(p, n, oy, ox);
                for (int32_t o = 0; o < p->o; ++o) {
                    float s = 0.0f;
                    for (int32_t i = 0; i < p->kh; ++i) {
                        int32_t yy = in_y(p, oy, i);
                        if (yy < 0) continue;
                        for (int32_t j = 0; j < p->kw; ++j) {
                            int32_t xx = in_x(p, ox, j);
                            if (xx < 0) continue;
                            const float *v = x + at(p, n, yy, xx);
                            if (p->mult) {
                                s += v[o / p->mult] * wt[w_at(p, o, i, j)];
                                continue;
                            }
                            for (int32_t c = 0; c < p->c; ++c) s += v[c] * wt[w_at(p, o, i, j) + (size_t)c];
                        }
                    }
                    out[o] = s + b[o];
                }
            }
    tcc_fp_act(y, p->n * p->oh * p->ow * p->o, act);
}

void tcc_fp_dense(int32_t n, int32_t in, int32_t out, const float *x, const float *wt, const float *b, float *y,
                  int act) {
    for (int32_t r = 0; r < n; ++r)
        for (int32_t o = 0; o < out; ++o) {
            float s = 0.0f;
            for (int32_t i = 0; i < in; ++i)
                s += x[(size_t)r * (size_t)in + (size_t)i] * wt[(size_t)o * (size_t)in + (size_t)i];
            y[(size_t)r * (size_t)out + (size_t)o] = s + b[o];
        }
    tcc_fp_act(y, n * out, act);
}

void tcc_fp_avgpool(const tcc_bp_conv_t *p, const float *x, float *y) {
    for (int32_t n = 0; n < p->n; ++n)
        for (int32_t oy = 0; oy < p->oh; ++oy)
            for (int32_t ox = 0; ox < p->ow; ++ox)
                for (int32_t c = 0; c < p->c; ++c) {
                    float s = 0.0f;
                    int32_t cnt = 0;
                    for (int32_t i = 0; i < p->kh; ++i) {
                        int32_t yy = in_y(p, oy, i);
                        for (int32_t j = 0; j < p->kw; ++j) {
                            int32_t xx = in_x(p, ox, j);
                            if (yy < 0 || xx < 0) continue;
                            s += x[at(p, n, yy, xx) + (size_t)c];
                            ++cnt;
                        }
                    }
                    y[out_at(p, n, oy, ox) + (size_t)c] = s / (float)cnt;
                }
}

void tcc_fp_maxpool(const tcc_bp_conv_t *p, const float *x, float *y) {
    for (int32_t n = 0; n < p->n; ++n)
        for (int32_t oy = 0; oy < p->oh; ++oy)
            for (int32_t ox = 0; ox < p->ow; ++ox)
                for (int32_t c = 0; c < p->c; ++c) {
                    float m = 0.0f;
                    int found = 0;
                    for (int32_t i = 0; i < p->kh; ++i) {
                        int32_t yy = in_y(p, oy, i);
                        for (int32_t j = 0; j < p->kw; ++j) {
                            int32_t xx = in_x(p, ox, j);
                            if (yy < 0 || xx < 0) continue;
                            float v = x[at(p, n, yy, xx) + (size_t)c];
                            if (!found || v > m) m = v, found = 1;
                        }
                    }
                    y[out_at(p, n, oy, ox) + (size_t)c] = m;
                }
}

/* the float's sign (bit 31), and its magnitude as m * 2^e with m < 2^24 (subnormals included); 0: finite, 1: infinite,
 * 2: NaN */
static int split_float(float f, uint32_t *sign, uint32_t *m, int32_t *e) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t field = (u >> 23) & 0xffu;
    *sign = u >> 31;
    *m = (u & 0x7fffffu) | (field ? 0x800000u : 0u);
    *e = (field ? (int32_t)field : 1) - 150;
    return field < 255u ? 0 : (u & 0x7fffffu) ? 2 : 1;
}

int32_t tcc_bp_round_div(float b, float s, int32_t lo, int32_t hi) {
    uint32_t sb, ss, mb, ms;
    int32_t eb, es;
    int kb = split_float(b, &sb, &mb, &eb), ks = split_float(s, &ss, &ms, &es);
    int32_t big = (sb ^ ss) ? lo : hi;
    if (kb == 2 || ks == 2 || (kb == 1 && ks == 1) || (mb == 0 && ms == 0)) return 0;
    if (kb == 1 || ms == 0) return big;
    if (mb == 0 || ks == 1) return 0;
    while (mb < 0x800000u) mb <<= 1, --eb;  /* both mantissas in [2^23, 2^24): mb / ms in (1/2, 2) */
    while (ms < 0x800000u) ms <<= 1, --es;
    int32_t d = eb - es;      /* |b / s| = mb / ms * 2^d, in (2^(d-1), 2^(d+1)) */
    if (d >= 33) return big;  /* above 2^32: past every int32 */
    if (d <= -2) return 0;    /* below 1/2 */
    /* 2 |b / s| = q + r / ms: long division of mb * 2^(d+1) by ms, one quotient bit at a time (no 64-bit divide) */
    uint64_t q = mb / ms;
    uint32_t r = mb % ms;
    for (int32_t k = 0; k <= d; ++k) {
        r <<= 1;
        q <<= 1;
        if (r >= ms) r -= ms, q |= 1u;
    }
    /* |b / s| = n + (odd * ms + r) / (2 ms), n = q / 2 and odd the low bit of q: half to even against ms */
    uint32_t odd = (uint32_t)(q & 1u);
    uint64_t n = q >> 1;
    uint64_t twice = (uint64_t)odd * ms + r;
    if (twice > ms || (twice == ms && (n & 1u))) ++n;
    if (sb ^ ss) return n >= (uint64_t)(-(int64_t)lo) ? lo : -(int32_t)n;
    return n >= (uint64_t)hi ? hi : (int32_t)n;
}

void tcc_bp_requantize_bias(const float *b, const float *scale, int32_t *q, int32_t count) {
    for (int32_t k = 0; k < count; ++k) q[k] = tcc_bp_round_div(b[k], TCC_READ_F32(scale + k), INT32_MIN, INT32_MAX);
}

void tcc_bp_requantize_rows(const float *wm, const float *ws, const int32_t *row, int32_t out, int32_t per, int8_t *w8) {
    for (int32_t o = 0; o < out; ++o) {
        if (row_of(row, o) < 0) continue;
        for (int32_t k = 0; k < per; ++k) {
            size_t at_k = (size_t)row_of(row, o) * (size_t)per + (size_t)k;
            w8[at_k] = (int8_t)tcc_bp_round_div(wm[at_k], TCC_READ_F32(ws + o), -127, 127);
        }
    }
}
