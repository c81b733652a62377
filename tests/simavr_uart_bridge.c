/* A simulated board for `tinycc serial`'s tests (tests/test_serial_noise.py): runs an AVR ELF in libsimavr and bridges
 * its UART0 to this process's stdin (bytes to the board, fed when the simulated UART asks for more: XON/XOFF) and
 * stdout (bytes from the board). At end of input it prints, on stderr, the board's RAM at each ADDR:SIZE argument
 * (data-space addresses, as hex bytes, one line each) and exits 0.
 *   usage: simavr_uart_bridge MCU FREQ_HZ FIRMWARE.elf [ADDR:SIZE ...] */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <simavr/avr_uart.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_elf.h>
#include <simavr/sim_io.h>
#include <simavr/sim_irq.h>

static avr_t *avr;
static avr_irq_t *uart;
static unsigned char inq[1 << 16], outq[1 << 12];
static size_t in_head, in_len, out_len;
static int xon;

static void flush_out(void) {
    size_t done = 0;
    while (done < out_len) {
        const ssize_t n = write(1, outq + done, out_len - done);
        if (n <= 0) exit(3);
        done += (size_t)n;
    }
    out_len = 0;
}

static void feed(void) {
    while (xon && in_len) {
        const unsigned char b = inq[in_head];
        in_head = (in_head + 1) % sizeof inq;
        --in_len;
        avr_raise_irq(uart + UART_IRQ_INPUT, b);
    }
}

static void on_output(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    if (out_len == sizeof outq) flush_out();
    outq[out_len++] = (unsigned char)value;
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)value;
    (void)param;
    xon = 1;
    feed();
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)value;
    (void)param;
    xon = 0;
}

/* read what stdin has (waiting at most `ms`); 0 at end of input */
static int pump(int ms) {
    struct pollfd in;
    in.fd = 0;
    in.events = POLLIN;
    if (poll(&in, 1, ms) > 0) {
        unsigned char buf[4096];
        const size_t room = sizeof inq - in_len;
        const ssize_t n = read(0, buf, room < sizeof buf ? room : sizeof buf);
        ssize_t i;
        if (n <= 0) return 0;
        for (i = 0; i < n; ++i) inq[(in_head + in_len + (size_t)i) % sizeof inq] = buf[i];
        in_len += (size_t)n;
        feed();
    }
    return 1;
}

int main(int argc, char **argv) {
    static elf_firmware_t fw; /* zeroed */
    uint32_t flags = 0;
    unsigned long steps = 0;
    int i;
    if (argc < 4) return 2;
    if (elf_read_firmware(argv[3], &fw) != 0) return 2;
    avr = avr_make_mcu_by_name(argv[1]);
    if (!avr) return 2;
    avr_init(avr);
    avr->frequency = (uint32_t)strtoul(argv[2], NULL, 10);
    avr_load_firmware(avr, &fw);
    avr->log = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)AVR_UART_FLAG_STDIO;
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    uart = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), 0);
    avr_irq_register_notify(uart + UART_IRQ_OUTPUT, on_output, NULL);
    avr_irq_register_notify(uart + UART_IRQ_OUT_XON, on_xon, NULL);
    avr_irq_register_notify(uart + UART_IRQ_OUT_XOFF, on_xoff, NULL);
    for (;;) {
        const int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) return 4;
        if (++steps % 4096 == 0) {
            flush_out();
            if (!pump(0)) break;
        }
    }
    flush_out();
    for (i = 4; i < argc; ++i) {
        unsigned long addr = 0, size = 0, k;
        if (sscanf(argv[i], "%lx:%lu", &addr, &size) != 2) return 2;
        for (k = 0; k < size; ++k) fprintf(stderr, "%02x", avr->data[addr + k]);
        fprintf(stderr, "\n");
    }
    return 0;
}
