/* Stack each library function uses below its call (tests/test_stack.py checks LIBRARY_STACK against it): for every
 * case, paints the stack below the caller, makes one call (or float operation: soft-float helpers), and prints
 * "lib NAME N" (N: bytes below the caller's stack pointer at the call). Same platforms as stack_paint_main.c. */
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define PAT 0xA5u
#if defined(__AVR__)
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/interrupt.h>
extern char __heap_start;
#define SP_NOW(v) ((v) = (uintptr_t)SP)
#define FREE_TOP(sp) ((sp) + 1u) /* AVR pushes store at SP, then decrement: SP itself is free */
#elif defined(__arm__)
#define SP_NOW(v) __asm__ volatile("mov %0, sp" : "=r"(v))
#define FREE_TOP(sp) (sp)
#else
#include <ucontext.h>
#define SP_NOW(v) __asm__ volatile("mov %%rsp, %0" : "=r"(v))
#endif

static const char *const names[] = {"expf", "tanhf", "roundf", "memcpy", "memset", "fmul", "fadd", "fdiv", "fcmp",
                                    "i2f", "f2i", "rint"};
#define N_CASES (sizeof names / sizeof names[0])
static volatile uintptr_t sp_call;
static uint8_t *volatile paint_lo; /* AVR, Cortex-M: probe paints [paint_lo, its stack pointer) itself */
static volatile uint32_t used;
static volatile int which;
static volatile float a = 0.731f, b = -2.25f, out;
static volatile int32_t iv = 12345, io;
static volatile double dout; /* rint: the deep learn step's bias requantization (tinycc_backprop.c) */
static uint8_t src[200], dst[200];
static const float args[] = {-100.0f, -3.5f, -0.4f, 0.0f, 0.6f, 2.7f, 40.0f, 1e-30f};

static __attribute__((noinline, optimize("no-shrink-wrap"))) void probe(void) {
    uintptr_t sp;
    unsigned k;
    SP_NOW(sp);
    sp_call = sp;
#if defined(__AVR__) || defined(__arm__)
    {
        volatile uint8_t *p;
        for (p = paint_lo; p < (volatile uint8_t *)FREE_TOP(sp); ++p) {
            *p = PAT;
        }
    }
#endif
    for (k = 0; k < sizeof args / sizeof args[0]; ++k) {
        a = args[k];
        switch (which) {
        case 0: out = expf(a); break;
        case 1: out = tanhf(a); break;
        case 2: out = roundf(a); break;
        case 3: memcpy(dst, src, 7 + 24 * k); break;
        case 4: memset(dst, (int)k, 5 + 24 * k); break;
        case 5: out = a * b; break;
        case 6: out = a + b; break;
        case 7: out = a / b; break;
        case 8: io = a > b; break;
        case 9: out = (float)iv; break;
        case 10: io = (int32_t)a; break;
#if defined(__AVR__) /* avr-libc has no rint (tinycc refuses --deep bias on AVR): its round */
        default: dout = round((double)a * 1e3); break;
#else
        default: dout = rint((double)a * 1e3 / 0.37); break;
#endif
        }
    }
#if defined(__AVR__) || defined(__arm__)
    {
        const uint8_t *q = paint_lo;
        while (q < (const uint8_t *)FREE_TOP(sp) && *q == PAT) {
            ++q;
        }
        used = (uint32_t)((const uint8_t *)FREE_TOP(sp) - q);
    }
#endif
}

#if !defined(__AVR__) && !defined(__arm__)
static uint32_t used_below(const uint8_t *lo, const uint8_t *hi) {
    while (lo < hi && *lo == PAT) {
        ++lo;
    }
    return (uint32_t)(hi - lo);
}
#endif

#if defined(__AVR__)
static void put(char c) {
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}
static void puts_(const char *s) {
    while (*s) put(*s++);
}
static void report(const char *name, uint32_t n) {
    char buf[12];
    int k = 0;
    puts_("lib ");
    puts_(name);
    put(' ');
    do { buf[k++] = (char)('0' + n % 10u); n /= 10u; } while (n);
    while (k) put(buf[--k]);
    put('\n');
}
#else
static void report(const char *name, uint32_t n) { printf("lib %s %lu\n", name, (unsigned long)n); }
#endif

#if !defined(__AVR__) && !defined(__arm__)
static uint8_t stack_mem[65536] __attribute__((aligned(16)));
#endif

int main(void) {
    unsigned c;
    for (c = 0; c < N_CASES; ++c) {
        which = (int)c;
#if defined(__AVR__) || defined(__arm__)
        {
            uintptr_t sp;
            SP_NOW(sp);
#if defined(__AVR__)
            paint_lo = (uint8_t *)&__heap_start;
#else
            paint_lo = (uint8_t *)(sp - 16384u);
#endif
            probe();
            report(names[c], used);
        }
#else
        {
            static ucontext_t main_ctx, run_ctx;
            memset(stack_mem, PAT, sizeof stack_mem);
            getcontext(&run_ctx);
            run_ctx.uc_stack.ss_sp = stack_mem;
            run_ctx.uc_stack.ss_size = sizeof stack_mem;
            run_ctx.uc_link = &main_ctx;
            makecontext(&run_ctx, probe, 0);
            swapcontext(&main_ctx, &run_ctx);
            const uint32_t below = used_below(stack_mem, stack_mem + sizeof stack_mem);
            const uint32_t above = (uint32_t)((uintptr_t)(stack_mem + sizeof stack_mem) - sp_call);
            report(names[c], below > above ? below - above : 0u); /* 0: inlined, nothing below the caller */
        }
#endif
    }
#if defined(__AVR__)
    puts_("done\n");
    cli();
    sleep_cpu();
#else
    printf("done\n");
#endif
    return 0;
}
