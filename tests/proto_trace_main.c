/* Test driver for the generated serial protocol (tests/test_arduino.py, protocol fuzzer): reads the whole request
 * stream from stdin, feeds it byte by byte and writes one record per reply to stdout: the offset of the input byte
 * that completed the request (uint32 LE), the reply's size (uint32 LE), the reply's bytes. */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"
#include "tinycc_proto.h"

static unsigned char reply_buf[1 << 20];
static unsigned long reply_n;

static void put(uint8_t b) {
    if (reply_n < sizeof(reply_buf)) reply_buf[reply_n] = b;
    ++reply_n;
}

static void put_u32(unsigned long v) {
    int i;
    for (i = 0; i < 4; ++i) fputc((int)((v >> (8 * i)) & 0xFF), stdout);
}

int main(void) {
    unsigned long offset = 0;
    int c;
    MODEL_INIT();
    tcc_proto_reset(put);
    while ((c = fgetc(stdin)) != EOF) {
        reply_n = 0;
        tcc_proto_feed((uint8_t)c);
        if (reply_n > sizeof(reply_buf)) return 3;
        if (reply_n) {
            put_u32(offset);
            put_u32(reply_n);
            fwrite(reply_buf, 1, reply_n, stdout);
        }
        ++offset;
    }
    return 0;
}
