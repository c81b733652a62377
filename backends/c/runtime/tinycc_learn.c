/* tinycc on-device learning runtime (C99, no heap). Mirrors tinycc.ir.train / tinycc.ir.buffer. */
#include "tinycc_learn.h"

#include <math.h>

static float act_f(float z, int32_t act) {
    if (act == TCC_ACT_RELU) {
        return z > 0.0f ? z : 0.0f;
    }
    if (act == TCC_ACT_SIGMOID) {
        return 1.0f / (1.0f + expf(-z));
    }
    if (act == TCC_ACT_TANH) {
        return tanhf(z);
    }
    return z;
}

static float dact_f(float a, int32_t act) {
    if (act == TCC_ACT_RELU) {
        return a > 0.0f ? 1.0f : 0.0f;
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

/* forward n rows; layer outputs land in layers[l].a (last layer: logits) */
static void forward(tcc_classifier_t *c, const float *x, int32_t n) {
    int32_t l, r, o, i;
    for (l = 0; l < c->n_layers; ++l) {
        tcc_dense_t *d = &c->layers[l];
        const float *in = l == 0 ? x : c->layers[l - 1].a;
        const int32_t last = l == c->n_layers - 1 && c->loss != TCC_LOSS_MSE; /* logits kept as they are */
        for (r = 0; r < n; ++r) {
            for (o = 0; o < d->n_out; ++o) {
                float z = 0.0f;
                for (i = 0; i < d->n_in; ++i) {
                    z += in[r * d->n_in + i] * d->w[o * d->n_in + i];
                }
                z += d->b[o];
                d->a[r * d->n_out + o] = last ? z : act_f(z, d->act);
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

int32_t tcc_classifier_predict(tcc_classifier_t *c, const float *x, float *probs) {
    const tcc_dense_t *last = &c->layers[c->n_layers - 1];
    int32_t i, best = 0;
    forward(c, x, 1);
    if (c->loss == TCC_LOSS_BCE) {
        probs[0] = act_f(last->a[0], TCC_ACT_SIGMOID);
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
static void output_delta(const tcc_classifier_t *c, const uint8_t *y, const float *t, int32_t r, int32_t n) {
    const tcc_dense_t *last = &c->layers[c->n_layers - 1];
    const int32_t k = last->n_out;
    const float *a = last->a + r * k;
    float *d = last->d + r * k;
    int32_t o;
    if (c->loss == TCC_LOSS_MSE) {
        for (o = 0; o < k; ++o) {
            d[o] = a[o] - t[r * k + o];
            d[o] *= 2.0f;
            d[o] /= (float)(n * k);
            d[o] *= dact_f(a[o], last->act);
        }
        return;
    }
    if (c->loss == TCC_LOSS_BCE) {
        d[0] = act_f(a[0], TCC_ACT_SIGMOID);
        d[0] -= (float)y[r];
    } else {
        softmax_row(a, k, d);
        d[y[r]] -= 1.0f;
    }
    for (o = 0; o < k; ++o) {
        d[o] /= (float)n;
    }
}

void tcc_classifier_sgd(tcc_classifier_t *c, const float *x, const uint8_t *y, const float *t, int32_t n, float lr) {
    int32_t l, r, o, i;
    forward(c, x, n);
    for (r = 0; r < n; ++r) {
        output_delta(c, y, t, r, n);
    }
    for (l = c->n_layers - 1; l >= 0; --l) {
        tcc_dense_t *dl = &c->layers[l];
        const float *prev = l == 0 ? x : c->layers[l - 1].a;
        for (o = 0; o < dl->n_out; ++o) {
            float gb = 0.0f;
            for (i = 0; i < dl->n_in; ++i) {
                float g = 0.0f;
                for (r = 0; r < n; ++r) {
                    g += dl->d[r * dl->n_out + o] * prev[r * dl->n_in + i];
                }
                dl->dw[o * dl->n_in + i] = g;
            }
            for (r = 0; r < n; ++r) {
                gb += dl->d[r * dl->n_out + o];
            }
            dl->db[o] = gb;
        }
        if (l > 0) {
            tcc_dense_t *pl = &c->layers[l - 1];
            for (r = 0; r < n; ++r) {
                for (i = 0; i < dl->n_in; ++i) {
                    float s = 0.0f;
                    for (o = 0; o < dl->n_out; ++o) {
                        s += dl->d[r * dl->n_out + o] * dl->w[o * dl->n_in + i];
                    }
                    pl->d[r * pl->n_out + i] = s * dact_f(pl->a[r * pl->n_out + i], pl->act);
                }
            }
        }
    }
    for (l = 0; l < c->n_layers; ++l) {
        tcc_dense_t *dl = &c->layers[l];
        for (i = 0; i < dl->n_out * dl->n_in; ++i) {
            dl->w[i] -= lr * dl->dw[i];
        }
        for (o = 0; o < dl->n_out; ++o) {
            dl->b[o] -= lr * dl->db[o];
        }
    }
}

/* ---- replay buffer ---- */
enum { S_COUNT = 0, S_HEAD = 1, S_SEEN = 2, S_RNG = 3 };

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

int32_t tcc_buffer_push(tcc_buffer_t *b, const float *x, const int8_t *q, uint8_t label, const float *target) {
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
            b->q[k] = q ? q[i] : quant1(x[i], b->scale, b->zero_point);
        } else {
            b->f[k] = q ? b->scale * (float)((int32_t)q[i] - b->zero_point) : x[i];
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

uint8_t tcc_buffer_entry(const tcc_buffer_t *b, int32_t k, float *out, float *tout) {
    int32_t slot = k, i;
    if (b->policy == TCC_POLICY_FIFO && (int32_t)b->state[S_COUNT] == b->capacity) {
        slot = (k + (int32_t)b->state[S_HEAD]) % b->capacity;
    }
    for (i = 0; i < b->features; ++i) {
        const int32_t j = slot * b->features + i;
        out[i] = b->int8_storage ? b->scale * (float)((int32_t)b->q[j] - b->zero_point) : b->f[j];
    }
    for (i = 0; i < b->targets; ++i) {
        const int32_t j = slot * b->targets + i;
        tout[i] = b->tq ? b->t_scale * (float)((int32_t)b->tq[j] - b->t_zp) : b->tf[j];
    }
    return b->targets ? 0 : b->labels[slot];
}

void tcc_train(tcc_classifier_t *c, const tcc_buffer_t *b, float lr, int32_t epochs, int32_t batch, float *xwork,
               uint8_t *ywork, float *twork) {
    const int32_t n = tcc_buffer_count(b);
    int32_t e, s, k;
    for (e = 0; e < epochs; ++e) {
        for (s = 0; s < n; s += batch) {
            const int32_t m = (n - s) < batch ? (n - s) : batch;
            for (k = 0; k < m; ++k) {
                const uint8_t y = tcc_buffer_entry(b, s + k, xwork + k * b->features,
                                                   b->targets ? twork + k * b->targets : twork);
                if (!b->targets) {
                    ywork[k] = y;
                }
            }
            tcc_classifier_sgd(c, xwork, ywork, twork, m, lr);
        }
    }
}
