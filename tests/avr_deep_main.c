/* The learned state of a --deep bias / --train sparse c project on the ATmega2560 in simavr (tests/test_deep_avr.py):
 * init, LEARN learn_f32 calls over the embedded test vectors in turn, then over UART0 one line per value: "bias L K V"
 * (the int32 biases the int8 kernels of trained backbone layer L read), with SPARSE "w8 L K V" (the int8 copy of its
 * trained channels), then "learn R" (the last learn call's return) and "done". Build with -DMODEL=<name> (the
 * project's C name) -DLAYERS=<trained backbone layers> -DLEARN=<learn calls> [-DSPARSE=1]. */
#include <avr/io.h>
#include <stdint.h>

#include "model.h"
#include "test_vectors.h"

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define API(f) CAT(MODEL, CAT(_, f))

static void put(char c) {
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}

static void puts_(const char *s) {
    while (*s) {
        put(*s++);
    }
}

static void put_int(int32_t v) {
    char buf[12];
    int k = 0;
    uint32_t u = v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v;
    if (v < 0) {
        put('-');
    }
    do {
        buf[k++] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    while (k) {
        put(buf[--k]);
    }
}

static void line(const char *what, int32_t l, int32_t k, int32_t v) {
    puts_(what);
    put(' ');
    put_int(l);
    put(' ');
    put_int(k);
    put(' ');
    put_int(v);
    put('\n');
}

int main(void) {
    int32_t i, l, k, n, r = 0;
    API(init)();
    for (i = 0; i < LEARN; ++i) {
        r = API(learn_f32)(tcc_test_x[i % TCC_TEST_N], tcc_test_y[i % TCC_TEST_N]);
    }
    for (l = 0; l < LAYERS; ++l) {
        const int32_t *b = API(backbone_bias)(l, &n);
        for (k = 0; k < n; ++k) {
            line("bias", l, k, b[k]);
        }
#if defined(SPARSE)
        {
            const int8_t *w = API(backbone_weights_s8)(l, &n);
            for (k = 0; k < n; ++k) {
                line("w8", l, k, w[k]);
            }
        }
#endif
    }
    puts_("learn ");
    put_int(r);
    puts_("\ndone\n");
    for (;;) {
        __asm__ volatile("cli\n\tsleep"); /* simavr ends the run: sleeping with interrupts off */
    }
}
