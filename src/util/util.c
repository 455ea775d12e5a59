/*
 * util.c -- thread-local error message, allocation hook, growable buffer, clock.
 * Invariant: l3c_last_error() always returns a NUL-terminated string owned by this thread.
 */
#define _POSIX_C_SOURCE 200809L
#include "util.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

static _Thread_local char g_err[1024];

l3c_status l3c_fail(l3c_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return st;
}

void l3c_clear_error(void) { g_err[0] = '\0'; }

const char *l3c_last_error(void) { return g_err; }

const char *l3c_status_name(l3c_status st) {
    switch (st) {
    case L3C_OK: return "L3C_OK";
    case L3C_ERR_NOMEM: return "L3C_ERR_NOMEM";
    case L3C_ERR_IO: return "L3C_ERR_IO";
    case L3C_ERR_FORMAT: return "L3C_ERR_FORMAT";
    case L3C_ERR_UNSUPPORTED: return "L3C_ERR_UNSUPPORTED";
    case L3C_ERR_INVALID_ARG: return "L3C_ERR_INVALID_ARG";
    case L3C_ERR_CONTEXT_FULL: return "L3C_ERR_CONTEXT_FULL";
    }
    return "L3C_ERR_UNKNOWN";
}

const char *l3c_version(void) { return "0.1.0"; }

/* ---- allocation hook */

static atomic_long g_fail_after = -1;

static bool alloc_should_fail(void) {
    long n = atomic_load(&g_fail_after);
    if (n < 0) return false;
    if (n == 0) return true;
    atomic_fetch_sub(&g_fail_after, 1);
    return false;
}

void l3c_set_alloc_fail_after(long n) { atomic_store(&g_fail_after, n); }

void *l3c_malloc(size_t n) { return alloc_should_fail() ? NULL : malloc(n ? n : 1); }
void *l3c_calloc(size_t c, size_t s) { return alloc_should_fail() ? NULL : calloc(c ? c : 1, s ? s : 1); }
void *l3c_realloc(void *p, size_t n) { return alloc_should_fail() ? NULL : realloc(p, n ? n : 1); }
void l3c_free(void *p) { free(p); }

char *l3c_strndup(const char *s, size_t n) {
    char *d = l3c_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *l3c_strdup(const char *s) { return l3c_strndup(s, strlen(s)); }

/* ---- growable buffer; data is always NUL-terminated when non-NULL */

l3c_status l3c_buf_append(l3c_buf *b, const void *p, size_t n) {
    size_t need;
    if (!l3c_add_ok(b->len, n + 1, &need)) return l3c_fail(L3C_ERR_NOMEM, "buffer size overflow");
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) { cap = need; break; }
            cap *= 2;
        }
        char *d = l3c_realloc(b->data, cap);
        if (!d) return l3c_fail(L3C_ERR_NOMEM, "out of memory growing a buffer to %zu bytes", cap);
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return L3C_OK;
}

l3c_status l3c_buf_appendf(l3c_buf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return l3c_fail(L3C_ERR_INVALID_ARG, "bad format string");
    if ((size_t)n < sizeof small) return l3c_buf_append(b, small, (size_t)n);
    char *big = l3c_malloc((size_t)n + 1);
    if (!big) return l3c_fail(L3C_ERR_NOMEM, "out of memory formatting %d bytes", n);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    l3c_status st = l3c_buf_append(b, big, (size_t)n);
    free(big);
    return st;
}

void l3c_buf_free(l3c_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

double l3c_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- RNG */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void l3c_rng_seed(l3c_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t l3c_rng_u64(l3c_rng *r) {
    uint64_t *s = r->s;
    const uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double l3c_rng_uniform(l3c_rng *r) { return (double)(l3c_rng_u64(r) >> 11) * 0x1.0p-53; }
