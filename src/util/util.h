/*
 * util.h -- internal helpers shared by every part of the library:
 *  - l3c_fail(): records the thread-local error message and returns the status, so error paths
 *    read `return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: tensor '%s' ...", path, name);`
 *  - checked size arithmetic (l3c_mul_ok / l3c_add_ok) for anything derived from untrusted input;
 *  - allocation wrappers (l3c_malloc / l3c_calloc / l3c_realloc) that route through one hook so
 *    tests can fail the Nth allocation; free(NULL) is always safe;
 *  - L3C_ASSERT for programmer errors only (never for bad input).
 */
#ifndef L3C_UTIL_H
#define L3C_UTIL_H

#include "llama3c.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define L3C_INTERNAL __attribute__((visibility("hidden")))

/* Records a printf-style message for l3c_last_error() and returns st. */
l3c_status l3c_fail(l3c_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clears the thread-local message. */
void l3c_clear_error(void);

/* a*b / a+b without overflow: return false (and leave *out untouched) when it would overflow. */
static inline bool l3c_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool l3c_add_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Allocation hook: every library allocation goes through these. Tests may install a failing
 * allocator with l3c_set_alloc_fail_after(n): the (n+1)-th allocation from then on returns NULL
 * (n < 0 disables). */
void *l3c_malloc(size_t n);
void *l3c_calloc(size_t count, size_t size);
void *l3c_realloc(void *p, size_t n);
char *l3c_strdup(const char *s);
char *l3c_strndup(const char *s, size_t n);
void l3c_set_alloc_fail_after(long n);

/* Growable byte buffer (used by tokenizer, chat formatting, JSON glue). */
typedef struct l3c_buf {
    char *data;
    size_t len, cap;
} l3c_buf;
l3c_status l3c_buf_append(l3c_buf *b, const void *p, size_t n);
l3c_status l3c_buf_appendf(l3c_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void l3c_buf_free(l3c_buf *b);

/* Monotonic wall clock in seconds. */
double l3c_time_s(void);

#define L3C_ASSERT(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "llama3c: assertion failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

#define L3C_MIN(a, b) ((a) < (b) ? (a) : (b))
#define L3C_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Seeded generator (xoshiro256** seeded by splitmix64): the sampler's draws, training init and
 * shuffles. Same seed, same sequence on every platform. */
typedef struct l3c_rng {
    uint64_t s[4];
} l3c_rng;
void l3c_rng_seed(l3c_rng *r, uint64_t seed);
uint64_t l3c_rng_u64(l3c_rng *r);
double l3c_rng_uniform(l3c_rng *r); /* [0, 1) with 53 bits */

#endif /* L3C_UTIL_H */
