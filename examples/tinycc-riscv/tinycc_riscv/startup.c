/* Start-up code for QEMU's RISC-V virt machine, RV32 bare metal with picolibc (tinycc-riscv plugin): global and
 * stack pointers, .bss and thread-local storage (picolibc's errno), stdout on virt's 16550 UART at 0x10000000,
 * exit through virt's test device at 0x100000 (0x5555: pass, code << 16 | 0x3333: fail with that code). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UART_THR (*(volatile uint8_t *)0x10000000u)
#define UART_LSR (*(volatile uint8_t *)0x10000005u)
#define UART_LSR_THRE 0x20u
#define TEST_DEVICE (*(volatile uint32_t *)0x00100000u)

extern char __bss_start[], __bss_end[], __tls_base[];
extern int main(int argc, char **argv);
extern void _set_tls(void *tls);
void _start(void);
void tcc_start(void);
void _exit(int code);

static int uart_putc(char c, FILE *f) {
    (void)f;
    while ((UART_LSR & UART_LSR_THRE) == 0u) {
    }
    UART_THR = (uint8_t)c;
    return (unsigned char)c;
}

static FILE uart = FDEV_SETUP_STREAM(uart_putc, NULL, NULL, _FDEV_SETUP_WRITE);
FILE *const stdin = &uart;
FILE *const stdout = &uart;
FILE *const stderr = &uart;

void _exit(int code) {
    TEST_DEVICE = code == 0 ? 0x5555u : ((uint32_t)(code & 0xFFFF) << 16) | 0x3333u;
    for (;;) {
    }
}

void tcc_start(void) {
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    _set_tls(__tls_base);
    {
        static char name[] = "tinycc_demo";
        static char *argv[] = {name, 0};
        exit(main(1, argv));
    }
}

/* the entry point: QEMU starts the hart at the image's first byte (0x80000000) */
__attribute__((naked, section(".text.start"))) void _start(void) {
    __asm__ volatile(".option push\n.option norelax\nla gp, __global_pointer$\n.option pop\n"
                     "la sp, __stack_top\nj tcc_start\n");
}
