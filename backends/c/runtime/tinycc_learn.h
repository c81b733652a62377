/* tinycc on-device learning: float Dense classifier (softmax cross-entropy, SGD) and replay buffer.
 * Same semantics as tinycc.ir.train and tinycc.ir.buffer (see their docstrings). No heap:
 * every array is provided by the generated model code. */
#ifndef TINYCC_LEARN_H
#define TINYCC_LEARN_H

#include "tinycc_port.h"

enum { TCC_ACT_LINEAR = 0, TCC_ACT_RELU = 1, TCC_ACT_SIGMOID = 2, TCC_ACT_TANH = 3, TCC_ACT_SOFTMAX = 4 };
enum { TCC_POLICY_FIFO = 0, TCC_POLICY_RESERVOIR = 1, TCC_POLICY_CLASS_BALANCED = 2 };

typedef struct {
    int32_t n_in, n_out, act;
    float *w, *b;                 /* [n_out*n_in], [n_out]: RAM, trainable */
    const float *w_init, *b_init; /* flash copies for reset */
    float *a, *d;                 /* [batch*n_out]: kept activations, deltas */
    float *dw, *db;               /* gradients */
} tcc_dense_t;

typedef struct {
    tcc_dense_t *layers;
    int32_t n_layers, max_batch;
} tcc_classifier_t;

typedef struct {
    int32_t capacity, features, policy, int8_storage;
    float scale;
    int32_t zero_point;
    int8_t *q;          /* [capacity*features] when int8 storage */
    float *f;           /* [capacity*features] when float storage */
    uint8_t *labels;    /* [capacity] */
    uint32_t *stamp;    /* [capacity] */
    uint32_t *state;    /* [4]: count, head, seen, rng */
    uint32_t seed;
} tcc_buffer_t;

void tcc_classifier_reset(tcc_classifier_t *c);
/* probabilities of one feature vector; returns the arg-max class */
int32_t tcc_classifier_predict(tcc_classifier_t *c, const float *x, float *probs);
/* one SGD step on n rows of x [n*n_in] */
void tcc_classifier_sgd(tcc_classifier_t *c, const float *x, const uint8_t *y, int32_t n, float lr);

void tcc_buffer_reset(tcc_buffer_t *b);
int32_t tcc_buffer_count(const tcc_buffer_t *b);
/* store float features (quantized if int8 storage) or int8 features (q != NULL); returns slot or -1 */
int32_t tcc_buffer_push(tcc_buffer_t *b, const float *x, const int8_t *q, uint8_t label);
/* the k-th entry in training order, dequantized into out[features]; returns its label */
uint8_t tcc_buffer_entry(const tcc_buffer_t *b, int32_t k, float *out);

/* retrain on every valid entry: epochs over the buffer, consecutive minibatches of `batch` */
void tcc_train(tcc_classifier_t *c, const tcc_buffer_t *b, float lr, int32_t epochs, int32_t batch, float *xwork,
               uint8_t *ywork);

#endif
