/*
 * bandwidth.c -- memory read bandwidth with N threads: each thread sums its slice of a large
 * buffer (AVX2 when compiled with -mavx2, else plain loads the compiler vectorizes). The best
 * of several passes is reported in GB/s. Used by bench/compare_llamacpp.py for the bound
 * "tokens/s <= bandwidth / bytes of weights read per token".
 *   cc -O3 -march=native -pthread bench/bandwidth.c -o build/bandwidth && build/bandwidth 2
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { const uint64_t *p; size_t n; uint64_t sum; } slice;

static void *reader(void *arg) {
    slice *s = arg;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= s->n; i += 4) {
        a += s->p[i]; b += s->p[i + 1]; c += s->p[i + 2]; d += s->p[i + 3];
    }
    s->sum = a + b + c + d;
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int nt = argc > 1 ? atoi(argv[1]) : 1;
    size_t bytes = (size_t)(argc > 2 ? atof(argv[2]) : 2.0) * (1ull << 30);
    if (nt < 1 || nt > 256) return fprintf(stderr, "bandwidth: bad thread count\n"), 2;
    uint64_t *buf = aligned_alloc(64, bytes);
    if (!buf) return fprintf(stderr, "bandwidth: cannot allocate %zu bytes\n", bytes), 1;
    memset(buf, 1, bytes);
    size_t n = bytes / 8, per = n / (size_t)nt;
    double best = 0;
    uint64_t check = 0;
    for (int pass = 0; pass < 5; pass++) {
        pthread_t th[256];
        slice sl[256];
        double t0 = now();
        for (int i = 0; i < nt; i++) {
            sl[i] = (slice){buf + (size_t)i * per, per, 0};
            pthread_create(&th[i], NULL, reader, &sl[i]);
        }
        for (int i = 0; i < nt; i++) { pthread_join(th[i], NULL); check += sl[i].sum; }
        double gbs = (double)per * nt * 8 / (now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    printf("%.2f\n", best);
    fprintf(stderr, "bandwidth: %d threads, %.1f GiB buffer, best of 5: %.2f GB/s (check %llu)\n",
            nt, bytes / 1073741824.0, best, (unsigned long long)(check & 1));
    free(buf);
    return 0;
}
