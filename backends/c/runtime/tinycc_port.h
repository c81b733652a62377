/* tinycc portability layer: fixed-width types and weight access (weights may live in flash). */
#ifndef TINYCC_PORT_H
#define TINYCC_PORT_H

#include <stdint.h>
#include <stddef.h>

#if defined(TCC_READ_S8)
/* the target's own reads (a plugin's Harvard core, tinycc.targets.Target.harvard: a header of the target's files,
 * force-included by its cflags, defines TCC_WEIGHT and every TCC_READ_*) */
#if !defined(TCC_WEIGHT) || !defined(TCC_READ_S16) || !defined(TCC_READ_S32) || !defined(TCC_READ_F32)
#error "a target that defines TCC_READ_S8 defines TCC_WEIGHT, TCC_READ_S16, TCC_READ_S32 and TCC_READ_F32 too"
#endif
#elif defined(__AVR__)
#include <avr/pgmspace.h>
/* Harvard MCU: constant tables live in program memory and need explicit reads. */
#define TCC_WEIGHT PROGMEM
#define TCC_READ_S8(p) ((int8_t)pgm_read_byte(p))
#define TCC_READ_S16(p) ((int16_t)pgm_read_word(p))
#define TCC_READ_S32(p) ((int32_t)pgm_read_dword(p))
#define TCC_READ_F32(p) (pgm_read_float(p))
#elif defined(__GNUC__)
/* used: every table the generated code defines is in the object, also where the compiler folds its reads into
 * the code (a small layer's fully unrolled loops), so the memory report's flash figure is the image's */
#define TCC_WEIGHT __attribute__((used))
#define TCC_READ_S8(p) (*(const int8_t *)(p))
#define TCC_READ_S16(p) (*(const int16_t *)(p))
#define TCC_READ_S32(p) (*(const int32_t *)(p))
#define TCC_READ_F32(p) (*(const float *)(p))
#else
#define TCC_WEIGHT
#define TCC_READ_S8(p) (*(const int8_t *)(p))
#define TCC_READ_S16(p) (*(const int16_t *)(p))
#define TCC_READ_S32(p) (*(const int32_t *)(p))
#define TCC_READ_F32(p) (*(const float *)(p))
#endif

/* The arena's and the CMSIS-NN scratch's alignment: 16 bytes (int16/float buffers and vector loads in the arena),
 * none on the 8-bit AVR, which has no alignment rule: the padding would be RAM that no array (and no line of the
 * memory report) holds. A target's own header may define it first. */
#ifndef TCC_ALIGN16
#if defined(__AVR__)
#define TCC_ALIGN16
#else
#define TCC_ALIGN16 __attribute__((aligned(16)))
#endif
#endif

/* A table written as a string literal of its bytes (the large ones of model.c) fills its array exactly, without a
 * terminating NUL: say so where the compiler knows the attribute (GCC 15's -Wextra warns otherwise). */
#if defined(__has_attribute)
#if __has_attribute(nonstring)
#define TCC_BYTES __attribute__((nonstring))
#endif
#endif
#ifndef TCC_BYTES
#define TCC_BYTES
#endif

#endif
