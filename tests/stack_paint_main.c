/* Stack high-water mark of a generated project's API (tests/test_stack.py): paints the stack below the caller,
 * calls every API function over the embedded test vectors (learning past the buffer's capacity, so that every
 * replacement path runs), then finds the lowest byte that changed. Prints "stack N": bytes below the caller's
 * stack pointer at the call. Build with -DMODEL=<name> (the project's C name) -DNFEAT=<features>. Host: the calls run on a painted
 * ucontext stack; Cortex-M (semihosting) and AVR (UART0): below main's own stack pointer. */
#define _XOPEN_SOURCE 700
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "test_vectors.h"

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define API(f) CAT(MODEL, CAT(_, f))
#define PAT 0xA5u

#if defined(__AVR__)
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/interrupt.h>
extern char __heap_start; /* the end of .bss: everything above it up to the stack pointer is free */
#define PAINT_BYTES ((uintptr_t)(sp - (uintptr_t)&__heap_start))
#define SP_NOW(v) ((v) = (uintptr_t)SP)
#elif defined(__arm__)
#define PAINT_BYTES 32768u
#define SP_NOW(v) __asm__ volatile("mov %0, sp" : "=r"(v))
#else
#include <ucontext.h>
#define PAINT_BYTES 65536u
#define SP_NOW(v) __asm__ volatile("mov %%rsp, %0" : "=r"(v))
#endif

static volatile uintptr_t sp_call;
static float probs[64];
static int8_t feats[NFEAT];
static int8_t xq[sizeof(tcc_test_x[0]) / sizeof(float)];

static __attribute__((noinline, optimize("no-shrink-wrap"))) void run_all(void) {
    int r, i;
    uintptr_t sp;
    SP_NOW(sp);
    sp_call = sp;
    API(init)();
    for (r = 0; r < 4; ++r) {
        for (i = 0; i < TCC_TEST_N; ++i) {
            (void)API(predict_f32)(tcc_test_x[i], probs);
            API(features)(tcc_test_x[i], feats);
            (void)API(predict_features_s8)(feats, probs);
            (void)API(predict_s8)(xq, probs);
            (void)API(learn_f32)(tcc_test_x[i], (uint8_t)tcc_test_y[i]);
            (void)API(learn_features_s8)(feats, (uint8_t)tcc_test_y[(i + 1) % TCC_TEST_N]);
        }
    }
}

static uint32_t lowest_used(const uint8_t *lo, const uint8_t *hi) {
    while (lo < hi && *lo == PAT) {
        ++lo;
    }
    return (uint32_t)(hi - lo);
}

#if defined(__AVR__)
static void put(char c) {
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}
static void report(uint32_t n) {
    char buf[16];
    int k = 0;
    const char *s = "stack ";
    while (*s) put(*s++);
    do { buf[k++] = (char)('0' + n % 10u); n /= 10u; } while (n);
    while (k) put(buf[--k]);
    put('\n');
    s = "done\n";
    while (*s) put(*s++);
}
#endif

#if !defined(__AVR__) && !defined(__arm__)
static uint8_t stack_mem[PAINT_BYTES] __attribute__((aligned(16)));
#endif

int main(void) {
#if defined(__AVR__) || defined(__arm__)
    uintptr_t sp;
    volatile uint8_t *p;
    SP_NOW(sp);
    for (p = (volatile uint8_t *)(sp - PAINT_BYTES); p < (volatile uint8_t *)(sp - 64); ++p) {
        *p = PAT;
    }
    run_all();
    {
        const uint32_t below = lowest_used((const uint8_t *)(sp - PAINT_BYTES), (const uint8_t *)(sp - 64));
        const uint32_t used = below + 64u - (uint32_t)(sp - sp_call);
#if defined(__AVR__)
        report(used);
        cli();
        sleep_cpu();
#else
        printf("stack %lu\ndone\n", (unsigned long)used);
#endif
    }
#else
    static ucontext_t main_ctx, run_ctx;
    memset(stack_mem, PAT, sizeof stack_mem);
    getcontext(&run_ctx);
    run_ctx.uc_stack.ss_sp = stack_mem;
    run_ctx.uc_stack.ss_size = sizeof stack_mem;
    run_ctx.uc_link = &main_ctx;
    makecontext(&run_ctx, run_all, 0);
    swapcontext(&main_ctx, &run_ctx);
    {
        const uintptr_t top = (uintptr_t)sp_call;
        const uint32_t below = lowest_used(stack_mem, stack_mem + sizeof stack_mem);
        printf("stack %lu\ndone\n", (unsigned long)(below - ((uintptr_t)(stack_mem + sizeof stack_mem) - top)));
    }
#endif
    return 0;
}
