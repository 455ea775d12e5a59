/*
 * amx_peak.c -- the measured AMX peak of this machine: N threads each run TDPBSUD (int8) or
 * TDPBF16PS (bf16) back to back on tiles already loaded (four independent C tiles, A and B never
 * reloaded: no memory traffic), the best of 50 passes of thread CPU time (a
 * preempted thread does not count its wait). Prints "int8 GOPS bf16 GFLOPS" for the
 * N threads together (one multiply-add = 2 operations; a full tile product is 16 x 16 x 64 int8
 * or 16 x 16 x 32 bf16 multiply-adds). bench/compare_llamacpp.py divides a prompt's matmul
 * operations per second by it ("% of AMX peak"). Prints "0 0" (exit 0) where the CPU or the OS
 * has no AMX, so the report can say so.
 *   cc -O2 -pthread bench/amx_peak.c -o build/amx_peak && build/amx_peak 2
 * The tile instructions are inline asm (no -mamx-* needed; GCC 12's tile intrinsics have the
 * dead-store trap that src/kernels/x86_amx.h describes).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ITERS 20000 /* tile-product groups (4 products) per pass: ~0.5 ms */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int g_bf16; /* which product the threads run */

static void *run(void *arg) {
    double *best = arg;
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++)
        cfg.rows[t] = 16, cfg.colsb[t] = 64;
    static const uint8_t zero[16 * 64];
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg) : "memory");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm4" ::"r"(zero), "r"(64L) : "memory");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm5" ::"r"(zero), "r"(64L) : "memory");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm6" ::"r"(zero), "r"(64L) : "memory");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm7" ::"r"(zero), "r"(64L) : "memory");
    *best = 1e30;
    for (int pass = 0; pass < 50; pass++) {
        __asm__ volatile(
            "tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\ttilezero %%tmm3" ::
                : "memory");
        const double t0 = now();
        if (g_bf16)
            for (int i = 0; i < ITERS; i++)
                __asm__ volatile(
                    "tdpbf16ps %%tmm6, %%tmm4, %%tmm0\n\ttdpbf16ps %%tmm7, %%tmm4, %%tmm1\n\t"
                    "tdpbf16ps %%tmm6, %%tmm5, %%tmm2\n\ttdpbf16ps %%tmm7, %%tmm5, %%tmm3" ::
                        : "memory");
        else
            for (int i = 0; i < ITERS; i++)
                __asm__ volatile(
                    "tdpbsud %%tmm6, %%tmm4, %%tmm0\n\ttdpbsud %%tmm7, %%tmm4, %%tmm1\n\t"
                    "tdpbsud %%tmm6, %%tmm5, %%tmm2\n\ttdpbsud %%tmm7, %%tmm5, %%tmm3" ::
                        : "memory");
        const double s = now() - t0;
        if (s < *best) *best = s;
    }
    __asm__ volatile("tilerelease" ::: "memory");
    return NULL;
}

/* cpuid: AMX-TILE / INT8 / BF16; the OS: XCR0 tile state; Linux: the tile data granted */
static int amx_usable(void) {
    unsigned a, b, c, d, lo, hi;
    const unsigned need = 1u << 22 | 1u << 24 | 1u << 25;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & 1u << 27)) return 0; /* OSXSAVE: xgetbv allowed */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || (d & need) != need) return 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 3u << 17) != 3u << 17) return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 256) return fprintf(stderr, "usage: %s [threads]\n", argv[0]), 2;
    if (!amx_usable()) {
        printf("0 0\n");
        return 0;
    }
    double ops[2];
    for (g_bf16 = 0; g_bf16 < 2; g_bf16++) {
        pthread_t th[256];
        double best[256], worst = 0;
        for (int i = 0; i < threads; i++)
            pthread_create(&th[i], NULL, run, &best[i]);
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < threads; i++)
            worst = best[i] > worst ? best[i] : worst;
        const double macs = 16.0 * 16.0 * (g_bf16 ? 32 : 64) * 4 * ITERS;
        ops[g_bf16] = threads * 2 * macs / worst / 1e9;
    }
    printf("%.0f %.0f\n", ops[0], ops[1]);
    return 0;
}
