/* tinycc on-device learning runtime (C99, no heap). Mirrors tinycc.ir.train / tinycc.ir.buffer. */
#include "tinycc_learn.h"

#include <math.h>

/* alpha: the negative slope of TCC_ACT_LEAKY_RELU (>= 0), unused by the others */
static float act_f(float z, int32_t act, float alpha) {
    if (act == TCC_ACT_RELU) {
        return z > 0.0f ? z : 0.0f;
    }
    if (act == TCC_ACT_RELU6) {
        return z > 0.0f ? (z < 6.0f ? z : 6.0f) : 0.0f;
    }
    if (act == TCC_ACT_LEAKY_RELU) {
        return z > 0.0f ? z : alpha * z;
    }
    if (act == TCC_ACT_SIGMOID) {
        return 1.0f / (1.0f + expf(-z));
    }
    if (act == TCC_ACT_TANH) {
        return tanhf(z);
    }
    return z;
}

/* the derivative from the activation output a (TensorFlow's gradients at the kinks: relu6 0 at 0 and 6,
 * leaky relu alpha at 0; with alpha >= 0 the sign of a is the sign of the pre-activation) */
static float dact_f(float a, int32_t act, float alpha) {
    if (act == TCC_ACT_RELU) {
        return a > 0.0f ? 1.0f : 0.0f;
    }
    if (act == TCC_ACT_RELU6) {
        return a > 0.0f && a < 6.0f ? 1.0f : 0.0f;
    }
    if (act == TCC_ACT_LEAKY_RELU) {
        return a > 0.0f ? 1.0f : alpha;
    }
    if (act == TCC_ACT_SIGMOID) {
        return a * (1.0f - a);
    }
    if (act == TCC_ACT_TANH) {
        return 1.0f - a * a;
    }
    return 1.0f;
}

static void softmax_row(const float *z, int32_t n, float *p) {
    float mx = z[0], sum = 0.0f;
    int32_t i;
    for (i = 1; i < n; ++i) {
        mx = z[i] > mx ? z[i] : mx;
    }
    for (i = 0; i < n; ++i) {
        p[i] = expf(z[i] - mx);
        sum += p[i];
    }
    for (i = 0; i < n; ++i) {
        p[i] = p[i] / sum;
    }
}

void tcc_classifier_reset(tcc_classifier_t *c) {
    int32_t l, i;
    for (l = 0; l < c->n_layers; ++l) {
        tcc_dense_t *d = &c->layers[l];
        for (i = 0; i < d->n_out * d->n_in; ++i) {
            d->w[i] = TCC_READ_F32(d->w_init + i);
        }
        for (i = 0; i < d->n_out; ++i) {
            d->b[i] = TCC_READ_F32(d->b_init + i);
        }
    }
}

enum { S_COUNT = 0, S_HEAD = 1, S_SEEN = 2, S_RNG = 3 }; /* replay buffer state words */

/* where a step reads its rows: float/int8 arrays, or consecutive entries of a replay buffer (training
 * order), read in place; an int8 feature is dequantized as it is used (scale * (q - zp), the value
 * tcc_dequantize_s8 and tinycc.ir.buffer give) */
typedef struct {
    const float *x;       /* float rows [n*n_in], or NULL */
    const int8_t *q;      /* int8 rows [n*n_in] (x NULL) */
    float scale;
    int32_t zp;
    const uint8_t *y;     /* labels [n] (arrays) */
    const float *t;       /* targets [n*k] (arrays) */
    const tcc_buffer_t *buf; /* or buffer entries first.. (x, q, y, t unused) */
    int32_t first;
    const int16_t *q16;   /* int16 rows [n*n_in] (x, q NULL): a 16x8 extractor's features */
} src_t;

/* one row of features: exactly one of f (float), q (int8), q16 (int16) is set */
typedef struct {
    const float *f;
    const int8_t *q;
    const int16_t *q16;
} row_t;

static int32_t entry_slot(const tcc_buffer_t *b, int32_t k) {
    if (b->policy == TCC_POLICY_FIFO && (int32_t)b->state[S_COUNT] == b->capacity) {
        const int32_t slot = k + (int32_t)b->state[S_HEAD]; /* k, head < capacity: no division */
        return slot >= b->capacity ? slot - b->capacity : slot;
    }
    return k;
}

/* row r of the source, where it is stored, into *row */
static void src_row(const src_t *s, int32_t r, int32_t n_in, row_t *row) {
    row->f = NULL;
    row->q = NULL;
    row->q16 = NULL;
    if (s->buf) {
        const tcc_buffer_t *b = s->buf;
        const int32_t at = entry_slot(b, s->first + r) * b->features;
        if (b->int8_storage) {
            row->q = b->q + at;
        } else if (b->q16) {
            row->q16 = b->q16 + at;
        } else {
            row->f = b->f + at;
        }
    } else if (s->x) {
        row->f = s->x + r * n_in;
    } else if (s->q16) {
        row->q16 = s->q16 + r * n_in;
    } else {
        row->q = s->q + r * n_in;
    }
}

static float src_x(const row_t *row, float scale, int32_t zp, int32_t i) {
    if (row->q) {
        return scale * (float)((int32_t)row->q[i] - zp);
    }
    return row->q16 ? scale * (float)((int32_t)row->q16[i] - zp) : row->f[i];
}

static uint8_t src_label(const src_t *s, int32_t r) {
    return s->buf ? s->buf->labels[entry_slot(s->buf, s->first + r)] : s->y[r];
}

static float src_target(const src_t *s, int32_t r, int32_t k, int32_t o) {
    if (s->buf) {
        const tcc_buffer_t *b = s->buf;
        const int32_t j = entry_slot(b, s->first + r) * b->targets + o;
        return b->tq ? b->t_scale * (float)((int32_t)b->tq[j] - b->t_zp) : b->tf[j];
    }
    return s->t[r * k + o];
}

/* forward n rows; layer outputs land in layers[l].a (last layer: logits, or outputs for mse) */
static void forward(tcc_classifier_t *c, const src_t *s, int32_t n) {
    int32_t l, r, o, i;
    for (l = 0; l < c->n_layers; ++l) {
        tcc_dense_t *d = &c->layers[l];
        const int32_t last = l == c->n_layers - 1 && c->loss != TCC_LOSS_MSE; /* logits kept as they are */
        for (r = 0; r < n; ++r) {
            row_t row = {NULL, NULL, NULL};
            const float *f;
            if (l == 0) {
                src_row(s, r, d->n_in, &row);
            } else {
                row.f = c->layers[l - 1].a + r * d->n_in;
            }
            f = row.f;
            for (o = 0; o < d->n_out; ++o) {
                const float *w = d->w + o * d->n_in;
                float z = 0.0f;
                if (row.q) {
                    const int8_t *q = row.q;
                    for (i = 0; i < d->n_in; ++i) {
                        z += (s->scale * (float)((int32_t)q[i] - s->zp)) * w[i];
                    }
                } else if (row.q16) {
                    const int16_t *q16 = row.q16;
                    for (i = 0; i < d->n_in; ++i) {
                        z += (s->scale * (float)((int32_t)q16[i] - s->zp)) * w[i];
                    }
                } else {
                    for (i = 0; i < d->n_in; ++i) {
                        z += f[i] * w[i];
                    }
                }
                z += d->b[o];
                d->a[r * d->n_out + o] = last ? z : act_f(z, d->act, d->alpha);
            }
        }
    }
}

int32_t tcc_all_finite(const float *v, int32_t n) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        if (!(v[i] == v[i]) || v[i] > 3.40282347e38f || v[i] < -3.40282347e38f) {
            return 0;
        }
    }
    return 1;
}

static int32_t predict(tcc_classifier_t *c, const src_t *s, float *probs);

int32_t tcc_classifier_predict(tcc_classifier_t *c, const float *x, const int8_t *q, float scale, int32_t zp,
                               float *probs) {
    src_t s = {NULL, NULL, 0.0f, 0, NULL, NULL, NULL, 0, NULL};
    s.x = x;
    s.q = q;
    s.scale = scale;
    s.zp = zp;
    return predict(c, &s, probs);
}

int32_t tcc_classifier_predict_s16(tcc_classifier_t *c, const int16_t *q16, float scale, int32_t zp, float *probs) {
    src_t s = {NULL, NULL, 0.0f, 0, NULL, NULL, NULL, 0, NULL};
    s.q16 = q16;
    s.scale = scale;
    s.zp = zp;
    return predict(c, &s, probs);
}

static int32_t predict(tcc_classifier_t *c, const src_t *s, float *probs) {
    const tcc_dense_t *last = &c->layers[c->n_layers - 1];
    int32_t i, best = 0;
    forward(c, s, 1);
    if (c->loss == TCC_LOSS_BCE) {
        probs[0] = act_f(last->a[0], TCC_ACT_SIGMOID, 0.0f);
        return probs[0] > 0.5f ? 1 : 0;
    }
    if (c->loss == TCC_LOSS_MSE) {
        for (i = 0; i < last->n_out; ++i) {
            probs[i] = last->a[i];
        }
        return 0;
    }
    softmax_row(last->a, last->n_out, probs);
    for (i = 1; i < last->n_out; ++i) {
        if (probs[i] > probs[best]) {
            best = i;
        }
    }
    return best;
}

/* d_L of the head for row r (see tinycc.ir.train) */
static void output_delta(const tcc_classifier_t *c, const src_t *s, int32_t r, int32_t n) {
    const tcc_dense_t *last = &c->layers[c->n_layers - 1];
    const int32_t k = last->n_out;
    const float *a = last->a + r * k;
    float *d = last->d + r * k;
    int32_t o;
    if (c->loss == TCC_LOSS_MSE) {
        for (o = 0; o < k; ++o) {
            d[o] = a[o] - src_target(s, r, k, o);
            d[o] *= 2.0f;
            d[o] /= (float)(n * k);
            d[o] *= dact_f(a[o], last->act, last->alpha);
        }
        return;
    }
    if (c->loss == TCC_LOSS_BCE) {
        d[0] = act_f(a[0], TCC_ACT_SIGMOID, 0.0f);
        d[0] -= (float)src_label(s, r);
    } else {
        softmax_row(a, k, d);
        d[src_label(s, r)] -= 1.0f;
    }
    for (o = 0; o < k; ++o) {
        d[o] /= (float)n;
    }
}

static int32_t finite1(float v) {
    return v == v && v <= 3.40282347e38f && v >= -3.40282347e38f;
}

/* the fused update of every trained parameter, its gradient taken element by element from the kept
 * deltas and activations (rows summed in order); write 0: only check that every new value is finite */
static int32_t update(tcc_classifier_t *c, const src_t *s, int32_t n, float lr, int32_t write) {
    int32_t l, r, o, i;
    for (l = 0; l < c->n_layers; ++l) {
        tcc_dense_t *dl = &c->layers[l];
        row_t row0 = {NULL, NULL, NULL};
        if (l == 0) {
            src_row(s, 0, dl->n_in, &row0);
        }
        for (o = 0; (dl->train & TCC_TRAIN_WEIGHTS) && o < dl->n_out; ++o) {
            for (i = 0; i < dl->n_in; ++i) {
                float g = 0.0f, w;
                for (r = 0; r < n; ++r) {
                    float a;
                    if (l > 0) {
                        a = c->layers[l - 1].a[r * dl->n_in + i];
                    } else if (r == 0) {
                        a = src_x(&row0, s->scale, s->zp, i);
                    } else {
                        row_t row;
                        src_row(s, r, dl->n_in, &row);
                        a = src_x(&row, s->scale, s->zp, i);
                    }
                    g += dl->d[r * dl->n_out + o] * a;
                }
                w = dl->w[o * dl->n_in + i] - lr * g;
                if (write) {
                    dl->w[o * dl->n_in + i] = w;
                } else if (!finite1(w)) {
                    return TCC_REFUSED;
                }
            }
        }
        for (o = 0; (dl->train & TCC_TRAIN_BIAS) && o < dl->n_out; ++o) {
            float g = 0.0f, b;
            for (r = 0; r < n; ++r) {
                g += dl->d[r * dl->n_out + o];
            }
            b = dl->b[o] - lr * g;
            if (write) {
                dl->b[o] = b;
            } else if (!finite1(b)) {
                return TCC_REFUSED;
            }
        }
    }
    return 0;
}

static int32_t sgd(tcc_classifier_t *c, const src_t *s, int32_t n, float lr) {
    int32_t l, r, o, i;
    forward(c, s, n);
    for (r = 0; r < n; ++r) {
        output_delta(c, s, r, n);
    }
    /* every delta from the old weights, before any update */
    for (l = c->n_layers - 1; l > 0 && c->layers[l - 1].d; --l) {
        const tcc_dense_t *dl = &c->layers[l];
        tcc_dense_t *pl = &c->layers[l - 1];
        for (r = 0; r < n; ++r) {
            for (i = 0; i < dl->n_in; ++i) {
                float sum = 0.0f;
                for (o = 0; o < dl->n_out; ++o) {
                    sum += dl->d[r * dl->n_out + o] * dl->w[o * dl->n_in + i];
                }
                pl->d[r * pl->n_out + i] = sum * dact_f(pl->a[r * pl->n_out + i], pl->act, pl->alpha);
            }
        }
    }
    if (update(c, s, n, lr, 0) != 0) {
        return TCC_REFUSED;
    }
    return update(c, s, n, lr, 1);
}

int32_t tcc_classifier_sgd(tcc_classifier_t *c, const float *x, const uint8_t *y, const float *t, int32_t n,
                           float lr) {
    src_t s = {NULL, NULL, 0.0f, 0, NULL, NULL, NULL, 0, NULL};
    s.x = x;
    s.y = y;
    s.t = t;
    return sgd(c, &s, n, lr);
}

/* ---- replay buffer ---- */

void tcc_buffer_reset(tcc_buffer_t *b) {
    b->state[S_COUNT] = 0;
    b->state[S_HEAD] = 0;
    b->state[S_SEEN] = 0;
    b->state[S_RNG] = b->seed ? b->seed : 1u;
}

int32_t tcc_buffer_count(const tcc_buffer_t *b) {
    return (int32_t)b->state[S_COUNT];
}

static uint32_t xorshift32(uint32_t x) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

static int8_t quant1(float v, float scale, int32_t zp) {
    const float r = roundf(v / scale);
    int32_t q = !(r == r) ? 0 : (r > 1e9f ? 1000000000L : (r < -1e9f ? -1000000000L : (int32_t)r)); /* NaN: zp */
    q += zp;
    return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}

static int16_t quant16(float v, float scale, int32_t zp) { /* quant1 clamped to the int16 range */
    const float r = roundf(v / scale);
    int32_t q = !(r == r) ? 0 : (r > 1e9f ? 1000000000L : (r < -1e9f ? -1000000000L : (int32_t)r));
    q += zp;
    return (int16_t)(q < -32768 ? -32768 : (q > 32767 ? 32767 : q));
}

static int32_t balanced_slot(const tcc_buffer_t *b, uint8_t label) {
    /* the most represented class counting the incoming sample (ties: the incoming class, else the
     * lowest index; only classes with stored entries), then its oldest entry */
    uint16_t stored[256];
    int32_t i, best = 0, cls = -1, slot = -1;
    const int32_t n = (int32_t)b->state[S_COUNT];
    for (i = 0; i < 256; ++i) {
        stored[i] = 0;
    }
    for (i = 0; i < n; ++i) {
        stored[b->labels[i]]++;
    }
    for (i = 0; i < 256; ++i) {
        const int32_t cnt = (int32_t)stored[i] + (i == (int32_t)label ? 1 : 0);
        if (cnt > best) {
            best = cnt;
        }
    }
    if (stored[label] > 0 && (int32_t)stored[label] + 1 == best) {
        cls = label;
    } else {
        for (i = 0; i < 256 && cls < 0; ++i) {
            if (stored[i] > 0 && (int32_t)stored[i] + (i == (int32_t)label ? 1 : 0) == best) {
                cls = i;
            }
        }
    }
    for (i = 0; i < n; ++i) {
        if (b->labels[i] == (uint8_t)cls && (slot < 0 || b->stamp[i] < b->stamp[slot])) {
            slot = i;
        }
    }
    return slot < 0 ? 0 : slot;
}

static int32_t push(tcc_buffer_t *b, const float *x, const int8_t *q, const int16_t *q16, uint8_t label,
                    const float *target);

int32_t tcc_buffer_push(tcc_buffer_t *b, const float *x, const int8_t *q, uint8_t label, const float *target) {
    return push(b, x, q, NULL, label, target);
}

int32_t tcc_buffer_push_s16(tcc_buffer_t *b, const int16_t *q16, uint8_t label, const float *target) {
    return push(b, NULL, NULL, q16, label, target);
}

/* one feature: float x[i], int8 q[i] or int16 q16[i] (the one that is not NULL) as a float */
static float feature_f(const tcc_buffer_t *b, const float *x, const int8_t *q, const int16_t *q16, int32_t i) {
    if (q) {
        return b->scale * (float)((int32_t)q[i] - b->zero_point);
    }
    return q16 ? b->scale * (float)((int32_t)q16[i] - b->zero_point) : x[i];
}

static int32_t push(tcc_buffer_t *b, const float *x, const int8_t *q, const int16_t *q16, uint8_t label,
                    const float *target) {
    int32_t slot, i;
    b->state[S_SEEN] += 1u;
    if (b->policy == TCC_POLICY_FIFO) {
        slot = (int32_t)b->state[S_HEAD];
        b->state[S_HEAD] = (uint32_t)((slot + 1) % b->capacity);
        if ((int32_t)b->state[S_COUNT] < b->capacity) {
            b->state[S_COUNT] += 1u;
        }
    } else if ((int32_t)b->state[S_COUNT] < b->capacity) {
        slot = (int32_t)b->state[S_COUNT];
        b->state[S_COUNT] += 1u;
    } else if (b->policy == TCC_POLICY_RESERVOIR) {
        uint32_t r;
        b->state[S_RNG] = xorshift32(b->state[S_RNG]);
        r = b->state[S_RNG] % b->state[S_SEEN];
        if (r >= (uint32_t)b->capacity) {
            return -1;
        }
        slot = (int32_t)r;
    } else {
        slot = balanced_slot(b, label);
    }
    for (i = 0; i < b->features; ++i) {
        const int32_t k = slot * b->features + i;
        if (b->int8_storage) {
            b->q[k] = q ? q[i] : quant1(feature_f(b, x, NULL, q16, i), b->scale, b->zero_point);
        } else if (b->q16) {
            b->q16[k] = q16 ? q16[i] : quant16(feature_f(b, x, q, NULL, i), b->scale, b->zero_point);
        } else {
            b->f[k] = feature_f(b, x, q, q16, i);
        }
    }
    for (i = 0; i < b->targets; ++i) {
        const int32_t k = slot * b->targets + i;
        if (b->tq) {
            b->tq[k] = quant1(target[i], b->t_scale, b->t_zp);
        } else {
            b->tf[k] = target[i];
        }
    }
    if (!b->targets) {
        b->labels[slot] = label;
    }
    b->stamp[slot] = b->state[S_SEEN];
    return slot;
}

static void swap_rows(tcc_buffer_t *b, int32_t i, int32_t j) {
    int32_t k;
    for (k = 0; k < b->features; ++k) {
        const int32_t u = i * b->features + k, v = j * b->features + k;
        if (b->int8_storage) {
            const int8_t t = b->q[u];
            b->q[u] = b->q[v];
            b->q[v] = t;
        } else if (b->q16) {
            const int16_t t = b->q16[u];
            b->q16[u] = b->q16[v];
            b->q16[v] = t;
        } else {
            const float t = b->f[u];
            b->f[u] = b->f[v];
            b->f[v] = t;
        }
    }
    for (k = 0; k < b->targets; ++k) {
        const int32_t u = i * b->targets + k, v = j * b->targets + k;
        if (b->tq) {
            const int8_t t = b->tq[u];
            b->tq[u] = b->tq[v];
            b->tq[v] = t;
        } else {
            const float t = b->tf[u];
            b->tf[u] = b->tf[v];
            b->tf[v] = t;
        }
    }
    if (!b->targets) {
        const uint8_t t = b->labels[i];
        b->labels[i] = b->labels[j];
        b->labels[j] = t;
    }
    {
        const uint32_t t = b->stamp[i];
        b->stamp[i] = b->stamp[j];
        b->stamp[j] = t;
    }
}

static void reverse_rows(tcc_buffer_t *b, int32_t lo, int32_t hi) { /* rows lo..hi-1 */
    for (--hi; lo < hi; ++lo, --hi) {
        swap_rows(b, lo, hi);
    }
}

void tcc_buffer_save(const tcc_buffer_t *b, uint32_t *state) {
    int32_t i;
    for (i = 0; i < 4; ++i) {
        state[i] = b->state[i];
    }
}

void tcc_buffer_unpush(tcc_buffer_t *b, int32_t slot, const uint32_t *before) {
    int32_t i, lo, mid;
    const int32_t full = (int32_t)before[S_COUNT] == b->capacity;
    for (i = 0; i < 4; ++i) {
        b->state[i] = before[i];
    }
    if (slot < 0 || !full) {
        return; /* nothing written, or a fresh slot: the state words alone undo the push */
    }
    /* the sample replaced an entry: both are gone; the others keep their training order in slots 0..capacity-2
     * (a rotation by three reversals: no extra memory) */
    lo = b->policy == TCC_POLICY_FIFO ? 0 : slot; /* fifo: the oldest entry is the one after the slot */
    mid = slot + 1;
    reverse_rows(b, lo, mid);
    reverse_rows(b, mid, b->capacity);
    reverse_rows(b, lo, b->capacity);
    b->state[S_COUNT] = (uint32_t)(b->capacity - 1);
    b->state[S_HEAD] = b->policy == TCC_POLICY_FIFO ? (uint32_t)(b->capacity - 1) : 0u;
}

int32_t tcc_buffer_slot(const tcc_buffer_t *b, int32_t k) { return entry_slot(b, k); }

uint8_t tcc_buffer_entry(const tcc_buffer_t *b, int32_t k, float *out, float *tout) {
    const int32_t slot = entry_slot(b, k);
    int32_t i;
    for (i = 0; i < b->features; ++i) {
        const int32_t j = slot * b->features + i;
        if (b->int8_storage) {
            out[i] = b->scale * (float)((int32_t)b->q[j] - b->zero_point);
        } else {
            out[i] = b->q16 ? b->scale * (float)((int32_t)b->q16[j] - b->zero_point) : b->f[j];
        }
    }
    for (i = 0; i < b->targets; ++i) {
        const int32_t j = slot * b->targets + i;
        tout[i] = b->tq ? b->t_scale * (float)((int32_t)b->tq[j] - b->t_zp) : b->tf[j];
    }
    return b->targets ? 0 : b->labels[slot];
}

int32_t tcc_train(tcc_classifier_t *c, const tcc_buffer_t *b, float lr, int32_t epochs, int32_t batch) {
    const int32_t n = tcc_buffer_count(b);
    int32_t e, s;
    src_t src = {NULL, NULL, 0.0f, 0, NULL, NULL, NULL, 0, NULL};
    src.buf = b;
    src.scale = b->scale;
    src.zp = b->zero_point;
    for (e = 0; e < epochs; ++e) {
        for (s = 0; s < n; s += batch) {
            src.first = s;
            if (sgd(c, &src, (n - s) < batch ? (n - s) : batch, lr) != 0) {
                return TCC_REFUSED;
            }
        }
    }
    return 0;
}
