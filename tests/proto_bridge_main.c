/* Test driver for `tinycc serial` over a noisy line (tests/test_serial_noise.py): the generated host transport's
 * loop (bytes from stdin, replies to stdout, a partial frame dropped after TCC_PROTO_TIMEOUT_MS of silence), and at
 * end of input the learned classifier on stderr, every weight and bias as a C99 hex float (exact), and the buffer
 * count. Built with -DMODEL_INIT=name_init -DMODEL_WEIGHTS=name_classifier_weights -DMODEL_BIAS=name_classifier_bias
 * -DMODEL_COUNT=name_buffer_count. */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#include "model.h"
#include "tinycc_proto.h"

static void put(uint8_t b) { fputc(b, stdout); }

static void dump(void) {
    int32_t layer, i, n_out, n_in;
    const float *w;
    for (layer = 0; (w = MODEL_WEIGHTS(layer, &n_out, &n_in)) != NULL; ++layer) {
        const float *b = MODEL_BIAS(layer);
        fprintf(stderr, "layer %ld %ld %ld\n", (long)layer, (long)n_out, (long)n_in);
        for (i = 0; i < n_out * n_in; ++i) {
            fprintf(stderr, "%a\n", (double)w[i]);
        }
        for (i = 0; i < n_out; ++i) {
            fprintf(stderr, "%a\n", (double)b[i]);
        }
    }
    fprintf(stderr, "count %ld\n", (long)MODEL_COUNT());
}

int main(void) {
    unsigned char buf[256];
    struct pollfd in;
    MODEL_INIT();
    tcc_proto_reset(put);
    in.fd = 0;
    in.events = POLLIN;
    for (;;) {
        ssize_t n, i;
        const int r = poll(&in, 1, TCC_PROTO_TIMEOUT_MS);
        if (r == 0) {
            tcc_proto_abort();
            continue;
        }
        n = r < 0 ? -1 : read(0, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        for (i = 0; i < n; ++i) {
            tcc_proto_feed(buf[i]);
        }
        fflush(stdout);
    }
    dump();
    return 0;
}
