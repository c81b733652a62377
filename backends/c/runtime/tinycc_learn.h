/* tinycc on-device learning: float Dense classifier (SGD with a softmax cross-entropy, sigmoid binary
 * cross-entropy or mean-squared-error head) and replay buffer.
 * Same semantics as tinycc.ir.train and tinycc.ir.buffer (see their docstrings). No heap:
 * every array is provided by the generated model code. */
#ifndef TINYCC_LEARN_H
#define TINYCC_LEARN_H

#include "tinycc_port.h"

enum { TCC_ACT_LINEAR = 0, TCC_ACT_RELU = 1, TCC_ACT_SIGMOID = 2, TCC_ACT_TANH = 3, TCC_ACT_SOFTMAX = 4,
       TCC_ACT_RELU6 = 5, TCC_ACT_LEAKY_RELU = 6 };
enum { TCC_LOSS_CE = 0, TCC_LOSS_BCE = 1, TCC_LOSS_MSE = 2 };
enum { TCC_POLICY_FIFO = 0, TCC_POLICY_RESERVOIR = 1, TCC_POLICY_CLASS_BALANCED = 2 };

/* what a step updates (--train all|last|bias) */
enum { TCC_TRAIN_NONE = 0, TCC_TRAIN_BIAS = 1, TCC_TRAIN_WEIGHTS = 2, TCC_TRAIN_BOTH = 3 };
/* a training step refused because a weight or bias would not be finite (nothing changed) */
enum { TCC_REFUSED = -1 };

typedef struct {
    int32_t n_in, n_out, act;
    int32_t train;                /* TCC_TRAIN_*: the parameters the step updates */
    float alpha;                  /* TCC_ACT_LEAKY_RELU's negative slope (>= 0); 0 otherwise */
    float *w, *b;                 /* [n_out*n_in], [n_out]: RAM, trainable */
    const float *w_init, *b_init; /* flash copies for reset */
    float *a, *d;                 /* [batch*n_out]: kept activations, deltas (d NULL: no delta needed) */
} tcc_dense_t;

typedef struct {
    tcc_dense_t *layers;
    int32_t n_layers, max_batch, loss; /* loss: TCC_LOSS_* */
} tcc_classifier_t;

typedef struct {
    int32_t capacity, features, policy, int8_storage;
    float scale;
    int32_t zero_point;
    int8_t *q;          /* [capacity*features] when int8 storage */
    float *f;           /* [capacity*features] when float storage (q16 NULL) */
    uint8_t *labels;    /* [capacity] (label heads; NULL for regression) */
    uint32_t *stamp;    /* [capacity] */
    uint32_t *state;    /* [4]: count, head, seen, rng */
    uint32_t seed;
    int32_t targets;    /* floats per regression target; 0 for label heads */
    int8_t *tq;         /* [capacity*targets] int8 targets (quantized with t_scale, t_zp), or NULL */
    float *tf;          /* [capacity*targets] float32 targets, or NULL */
    float t_scale;
    int32_t t_zp;
    int16_t *q16;       /* [capacity*features] when int16 storage (int8_storage 0, f NULL), else NULL */
} tcc_buffer_t;

void tcc_classifier_reset(tcc_classifier_t *c);
/* head outputs of one feature vector, float x or int8 q (x NULL; dequantized element by element,
 * scale * (q - zp), inside the first layer): softmax probabilities (returns the arg-max class), the
 * sigmoid probability (returns 1 when it is > 0.5, else 0) or the regression outputs (returns 0) */
int32_t tcc_classifier_predict(tcc_classifier_t *c, const float *x, const int8_t *q, float scale, int32_t zp,
                               float *out);
/* the same for int16 features q16 (a 16x8 extractor's), dequantized as scale * (q16 - zp) */
int32_t tcc_classifier_predict_s16(tcc_classifier_t *c, const int16_t *q16, float scale, int32_t zp, float *out);
/* one fused SGD step on n rows of x [n*n_in]: labels y [n] (ce, bce) or targets t [n*n_out] (mse).
 * Returns 0, or TCC_REFUSED (nothing changed) when a weight or bias would become non-finite */
int32_t tcc_classifier_sgd(tcc_classifier_t *c, const float *x, const uint8_t *y, const float *t, int32_t n,
                           float lr);
/* 1 when the n values are finite (no NaN, no infinity), else 0 */
int32_t tcc_all_finite(const float *v, int32_t n);

void tcc_buffer_reset(tcc_buffer_t *b);
int32_t tcc_buffer_count(const tcc_buffer_t *b);
/* store float features (quantized if int8 storage) or int8 features (q != NULL) with a label, or with a
 * target [targets] (regression buffer; must be finite, checked by the caller); returns slot or -1 */
int32_t tcc_buffer_push(tcc_buffer_t *b, const float *x, const int8_t *q, uint8_t label, const float *target);
/* the same for int16 features q16 (int16 storage: stored as they are; float storage: dequantized) */
int32_t tcc_buffer_push_s16(tcc_buffer_t *b, const int16_t *q16, uint8_t label, const float *target);
/* the 4 state words (count, head, seen, rng) into state[4], to undo a push with tcc_buffer_unpush */
void tcc_buffer_save(const tcc_buffer_t *b, uint32_t *state);
/* undo the push that returned `slot` (-1: nothing was written), `before` being the state saved just before it:
 * the sample is removed; when it had replaced an entry (a full buffer) that entry is gone too, the others keep
 * their training order in slots 0..capacity-2 (tinycc.ir.buffer.ReplayBuffer.unpush) */
void tcc_buffer_unpush(tcc_buffer_t *b, int32_t slot, const uint32_t *before);
/* the slot of the k-th entry in training order (0 <= k < count): its int8 values are q[slot * features ...]
 * (int16 storage: q16[...]) */
int32_t tcc_buffer_slot(const tcc_buffer_t *b, int32_t k);
/* the k-th entry in training order, dequantized into out[features] (a regression target into
 * tout[targets]); returns its label (0 for regression) */
uint8_t tcc_buffer_entry(const tcc_buffer_t *b, int32_t k, float *out, float *tout);

/* retrain on every valid entry: epochs over the buffer, consecutive minibatches of `batch`, read where
 * they are stored (no staging copy). Returns 0, or TCC_REFUSED when a step was refused: that step changed
 * nothing and the retraining stopped there (the steps before it stay applied) */
int32_t tcc_train(tcc_classifier_t *c, const tcc_buffer_t *b, float lr, int32_t epochs, int32_t batch);

#endif
