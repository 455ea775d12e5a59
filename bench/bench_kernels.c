/*
 * bench_kernels.c -- single-thread kernel throughput per type and path (ref, avx2, avx512).
 *
 *   vec_dot: one activation row against a ~64 MB weight matrix (n = 4096, as many rows as fit),
 *            reported as GB/s of weight bytes streamed and the speedup over ref. The ref path
 *            (compute-bound) is timed on a prefix of the rows.
 *   gemm:    T = 32 tokens x 1024 rows x n = 4096, called like ops.c does (16-row tiles x all
 *            tokens); GFLOP/s = 2 n rows T / time, against the same path's vec_dot loop.
 *
 * Build (after `make lib`; the override hooks are referenced directly so they are linked):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Iinclude -Isrc bench/bench_kernels.c build/libllama3c.a \
 *      -lpcre2-8 -ljansson -lpthread -lm -o build/bench_kernels
 * Run: build/bench_kernels [--packed] [--l2] [type-name ...]   (default: every weight type)
 *   --packed: only the packed-layout lines (gemv, gemm and pack speed) of the best path (and of
 *             avx512 where amx is best), several repetitions
 *   --l2:     a ~512 KiB matrix (fits in L2); the packed timings pass over it 128 times: the
 *             packed kernels' compute rate without the memory stream
 *   -T N:     N tokens per gemm call instead of 32 (a prompt chunk: -T 512 times the AMX tiles as a
 *             pp512 runs them)
 *   --shape N,R: rows of N elements (default 4096) and R rows in the gemm timing (default 1024):
 *             `--packed -T 512 --shape 576,1536 Q4_1` is SmolLM2's gate / up matrix, all in cache
 * The path "amx" (x86_amx.c: the packed gemm on tile instructions) is timed where dispatch.c
 * would offer it (cpuid, XCR0, the kernel's grant and the start-up check).
 */
#include "kernels/types.h"

#include <string.h>
#include <time.h>

static int N_IN = 4096;                   /* elements per row (--shape) */
static size_t g_matrix_bytes = 64u << 20; /* weight matrix per type */
static bool g_packed_only;
static int g_passes = 1; /* passes over the matrix per timing (--l2) */
static int GEMM_ROWS = 1024; /* rows of the gemm timing (--shape) */
static int GEMM_T = 32; /* tokens per gemm call (-T N) */
#define GEMM_TILE 32

static uint64_t g_rng = 88172645463325252ULL;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float rndf(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xFFFFFF) / 16777216.0f; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* offsets of fp16 scale fields per type, set to realistic values (random bytes may be NaN) */
static void fix_scales(int type, uint8_t *blk) {
    int off[2] = {-1, -1};
    switch (type) {
    case L3C_TYPE_Q4_0: case L3C_TYPE_Q5_0: case L3C_TYPE_Q8_0: off[0] = 0; break;
    case L3C_TYPE_Q4_1: case L3C_TYPE_Q5_1: case L3C_TYPE_Q4_K: case L3C_TYPE_Q5_K:
        off[0] = 0, off[1] = 2; break;
    case L3C_TYPE_Q2_K: off[0] = 80, off[1] = 82; break;
    case L3C_TYPE_Q3_K: off[0] = 108; break;
    case L3C_TYPE_Q6_K: off[0] = 208; break;
    default: break;
    }
    for (int k = 0; k < 2; k++) {
        if (off[k] < 0) continue;
        uint16_t h = l3c_fp32_to_fp16(rndf(1e-3f, 2e-2f));
        memcpy(blk + off[k], &h, 2);
    }
}

static void make_matrix(int type, uint8_t *w, size_t row_bytes, int64_t rows) {
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    if (!tr->is_quantized) {
        float f[N_IN];
        for (int64_t r = 0; r < rows; r++) {
            for (int i = 0; i < N_IN; i++) f[i] = rndf(-0.1f, 0.1f);
            tr->from_float(f, w + r * row_bytes, N_IN);
        }
        return;
    }
    size_t total = row_bytes * (size_t)rows;
    for (size_t i = 0; i < total; i += 4) {
        uint32_t v = rnd();
        memcpy(w + i, &v, L3C_MIN(4, total - i));
    }
    for (size_t b = 0; b < total / tr->type_size; b++) fix_scales(type, w + b * tr->type_size);
}

typedef struct path {
    const char *name;
    l3c_type_traits tab[L3C_TYPE_COUNT];
} path;

static volatile float g_sink;

/* seconds per pass over `rows` rows (best of reps) */
static double time_vec_dot(l3c_vec_dot_fn dot, const uint8_t *w, size_t row_bytes, int64_t rows,
                           const void *xq, int reps) {
    float *y = malloc((size_t)rows * sizeof(float));
    double best = 1e30;
    for (int k = 0; k < reps; k++) {
        double t0 = now();
        for (int64_t r = 0; r < rows; r++) dot(N_IN, &y[r], w + r * row_bytes, xq);
        best = L3C_MIN(best, now() - t0);
    }
    g_sink = y[rows / 2];
    free(y);
    return best;
}

/* the same pass as ops.c runs it for one token: gemm with T = 1 over 8-row tiles */
static double time_gemv(const l3c_type_traits *tr, const uint8_t *w, size_t row_bytes, int64_t rows,
                        const void *xq, int reps) {
    float *y = malloc((size_t)rows * sizeof(float));
    double best = 1e30;
    for (int k = 0; k < reps; k++) {
        double t0 = now();
        for (int64_t r = 0; r + 8 <= rows; r += 8)
            tr->gemm(N_IN, 8, 1, y + r, rows, w + r * row_bytes, row_bytes, xq, 0);
        best = L3C_MIN(best, now() - t0);
    }
    g_sink = y[rows / 2];
    free(y);
    return best;
}

static double time_gemm(const l3c_type_traits *tr, const uint8_t *w, size_t row_bytes,
                        const uint8_t *xq, size_t x_bytes, float *y, bool use_gemm, int reps) {
    double best = 1e30;
    for (int k = 0; k < reps; k++) {
        double t0 = now();
        for (int64_t r0 = 0; r0 < GEMM_ROWS; r0 += GEMM_TILE) {
            if (use_gemm) {
                tr->gemm(N_IN, GEMM_TILE, GEMM_T, y + r0, GEMM_ROWS, w + r0 * row_bytes, row_bytes, xq, x_bytes);
                continue;
            }
            for (int64_t t = 0; t < GEMM_T; t++)
                for (int64_t r = r0; r < r0 + GEMM_TILE; r++)
                    tr->vec_dot(N_IN, &y[t * GEMM_ROWS + r], w + r * row_bytes, xq + t * x_bytes);
        }
        best = L3C_MIN(best, now() - t0);
    }
    return best;
}

/* packed layout (L->rows > 0): gemv GB/s over the whole matrix (T = 1, as generation runs it),
 * GFLOP/s for GEMM_T tokens x GEMM_ROWS rows (fewer with --l2), like the gemm column, and the
 * pack rate (GB/s of weights, destination already touched) */
static void time_packed(const l3c_pack_layout *L, const char *what, const uint8_t *w, size_t row_bytes, int64_t rows) {
    const int64_t R = L->rows;
    rows = rows / R * R;
    const int64_t mm_rows = L3C_MIN(GEMM_ROWS, rows / GEMM_TILE * GEMM_TILE);
    const size_t xb = (size_t)(N_IN / L->act_block_size) * L->act_type_size;
    uint8_t *pk = aligned_alloc(64, (row_bytes * (size_t)rows + 63) & ~(size_t)63);
    uint8_t *xq = aligned_alloc(64, (xb * GEMM_T + 63) & ~(size_t)63);
    float *y = malloc(sizeof(float) * (size_t)L3C_MAX(rows, GEMM_ROWS * GEMM_T)),
          *x = malloc(sizeof(float) * N_IN);
    memset(pk, 0, row_bytes * (size_t)rows);
    double best_pk = 1e30;
    for (int k = 0; k < 3; k++) {
        double t0 = now();
        for (int p = 0; p < g_passes; p++)
            for (int64_t g = 0; g < rows / R; g++)
                L->pack(N_IN, R, w + g * R * row_bytes, row_bytes, pk + g * R * row_bytes);
        best_pk = L3C_MIN(best_pk, now() - t0);
    }
    for (int t = 0; t < GEMM_T; t++) {
        for (int i = 0; i < N_IN; i++) x[i] = rndf(-2.0f, 2.0f);
        if (L->act_from_float) L->act_from_float(x, xq + t * xb, N_IN);
        else
            memcpy(xq + t * xb, x, sizeof(float) * N_IN);
    }
    const int reps = g_packed_only ? 7 : 3;
    double best = 1e30, best_mm = 1e30;
    for (int k = 0; k < reps; k++) {
        double t0 = now();
        for (int p = 0; p < g_passes; p++)
            for (int64_t r = 0; r < rows; r += GEMM_TILE)
                L->gemm(N_IN, L3C_MIN(GEMM_TILE, rows - r), 1, y + r, rows, pk + r * row_bytes, xq, 0);
        best = L3C_MIN(best, now() - t0);
        t0 = now();
        for (int p = 0; p < (g_passes + 3) / 4; p++)
            for (int64_t r0 = 0; r0 < mm_rows; r0 += GEMM_TILE)
                L->gemm(N_IN, GEMM_TILE, GEMM_T, y + r0, mm_rows, pk + r0 * row_bytes, xq, xb);
        best_mm = L3C_MIN(best_mm, (now() - t0) / ((g_passes + 3) / 4));
    }
    g_sink = y[0];
    const double bytes = (double)row_bytes * (double)rows * g_passes;
    printf("      %-7s gemv %6.2f GB/s | gemm %8.2f GFLOP/s | pack %6.2f GB/s\n", what, bytes / best / 1e9,
           2.0 * N_IN * (double)mm_rows * GEMM_T / best_mm / 1e9, bytes / best_pk / 1e9);
    if (L->prompt.gemm) { /* the prompt kernel (amx --bf16 on quantized weights), its activations */
        const size_t pb = (size_t)(N_IN / L->prompt.act_block_size) * L->prompt.act_type_size;
        uint8_t *xp = aligned_alloc(64, (pb * GEMM_T + 63) & ~(size_t)63);
        for (int t = 0; t < GEMM_T; t++) {
            for (int i = 0; i < N_IN; i++) x[i] = rndf(-2.0f, 2.0f);
            L->prompt.act_from_float(x, xp + t * pb, N_IN);
        }
        double best_p = 1e30;
        for (int k = 0; k < reps; k++) {
            const double t0 = now();
            for (int p = 0; p < (g_passes + 3) / 4; p++)
                for (int64_t r0 = 0; r0 < mm_rows; r0 += GEMM_TILE)
                    L->prompt.gemm(N_IN, GEMM_TILE, GEMM_T, y + r0, mm_rows, pk + r0 * row_bytes, xp, pb);
            best_p = L3C_MIN(best_p, (now() - t0) / ((g_passes + 3) / 4));
        }
        printf("      %-7s prompt gemm (T >= %lld) %8.2f GFLOP/s\n", what, (long long)L->prompt.min_T,
               2.0 * N_IN * (double)mm_rows * GEMM_T / best_p / 1e9);
        free(xp);
    }
    free(pk), free(xq), free(y), free(x);
}

int main(int argc, char **argv) {
    static path paths[4];
    int np = 0;
    int argn = 1;
    for (; argn < argc && argv[argn][0] == '-'; argn++) {
        if (strcmp(argv[argn], "--packed") == 0) g_packed_only = true;
        else if (strcmp(argv[argn], "--l2") == 0) g_matrix_bytes = 512u << 10, g_passes = 128;
        else if (strcmp(argv[argn], "-T") == 0 && argn + 1 < argc && atoi(argv[argn + 1]) > 0)
            GEMM_T = atoi(argv[++argn]);
        else if (strcmp(argv[argn], "--shape") == 0 && argn + 1 < argc &&
                 sscanf(argv[argn + 1], "%d,%d", &N_IN, &GEMM_ROWS) == 2 && N_IN > 0 &&
                 N_IN % 32 == 0 && GEMM_ROWS > 0 && GEMM_ROWS % 32 == 0)
            argn++;
        else
            return fprintf(stderr,
                           "usage: %s [--packed] [--l2] [-T tokens] [--shape N,R (N %% 32 = R %% "
                           "32 = 0)] [type-name ...]\n",
                           argv[0]),
                   2;
    }
    paths[np].name = "ref";
    for (int i = 0; i < L3C_TYPE_COUNT; i++) paths[np].tab[i] = *l3c_type_traits_ref(i);
    np++;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        paths[np] = paths[np - 1];
        paths[np].name = "avx2";
        l3c_kernels_override_avx2(paths[np].tab);
        np++;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16")) {
            paths[np] = paths[np - 1];
            paths[np].name = "avx512";
            l3c_kernels_override_avx512(paths[np].tab);
            np++;
            if (l3c_kernels_build_table("amx", paths[np].tab)) paths[np++].name = "amx";
        }
    }
#endif
    const int types[] = {L3C_TYPE_F32,  L3C_TYPE_F16,  L3C_TYPE_BF16, L3C_TYPE_Q4_0, L3C_TYPE_Q4_1,
                         L3C_TYPE_Q5_0, L3C_TYPE_Q5_1, L3C_TYPE_Q8_0, L3C_TYPE_Q2_K, L3C_TYPE_Q3_K,
                         L3C_TYPE_Q4_K, L3C_TYPE_Q5_K, L3C_TYPE_Q6_K};
    if (!g_packed_only)
        printf("%-5s %-7s %10s %9s %8s | %14s %14s %8s\n", "type", "path", "vec_dot", "GB/s", "x ref",
               "gemm GFLOP/s", "dot-loop GF/s", "gemm x");
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int type = types[k];
        const l3c_type_traits *rt = l3c_type_traits_ref(type);
        if (argc > argn) {
            bool want = false;
            for (int a = argn; a < argc; a++) want |= strcmp(argv[a], rt->name) == 0;
            if (!want) continue;
        }
        size_t row_bytes, x_bytes;
        if (!l3c_row_size(type, N_IN, &row_bytes) || !l3c_row_size(rt->vec_dot_type, N_IN, &x_bytes))
            continue;
        int64_t rows = (int64_t)(g_matrix_bytes / row_bytes);
        /* the gemm timing reads GEMM_ROWS rows, more than a --l2 matrix has */
        const int64_t alloc_rows = L3C_MAX(rows, GEMM_ROWS);
        uint8_t *w = aligned_alloc(64, (row_bytes * (size_t)alloc_rows + 63) & ~(size_t)63);
        uint8_t *xq = aligned_alloc(64, (x_bytes * GEMM_T + 63) & ~(size_t)63);
        float *y = malloc(sizeof(float) * GEMM_ROWS * GEMM_T), x[N_IN];
        make_matrix(type, w, row_bytes, alloc_rows);
        for (int t = 0; t < GEMM_T; t++) {
            for (int i = 0; i < N_IN; i++) x[i] = rndf(-2.0f, 2.0f);
            l3c_type_traits_ref(rt->vec_dot_type)->from_float(x, xq + t * x_bytes, N_IN);
        }
        double ref_gbs = 0.0;
        for (int p = 0; p < np; p++) {
            const l3c_type_traits *tr = &paths[p].tab[type];
            if (g_packed_only) {
                if (p != np - 1 && strcmp(paths[p].name, "avx512") != 0) continue; /* amx: both */
                printf("%-5s %-7s\n", rt->name, paths[p].name);
                if (tr->packed.rows) time_packed(&tr->packed, "packed:", w, row_bytes, rows);
                if (tr->packed_bf16.rows) time_packed(&tr->packed_bf16, "bf16:", w, row_bytes, rows);
                fflush(stdout);
                continue;
            }
            if (p > 0 && tr->vec_dot == paths[p - 1].tab[type].vec_dot &&
                tr->gemm == paths[p - 1].tab[type].gemm) {
                printf("%-5s %-7s (same kernels as %s)\n", rt->name, paths[p].name, paths[p - 1].name);
                /* a packed layout of this path alone (Q5_K on avx512, the amx gemms) still gets its
                 * line */
                if (tr->packed.rows && tr->packed.gemm != paths[p - 1].tab[type].packed.gemm)
                    time_packed(&tr->packed, "packed:", w, row_bytes, rows);
                if (tr->packed_bf16.rows &&
                    tr->packed_bf16.gemm != paths[p - 1].tab[type].packed_bf16.gemm)
                    time_packed(&tr->packed_bf16, "bf16:", w, row_bytes, rows);
                continue;
            }
            int64_t r = p == 0 ? L3C_MIN(rows, 2048) : rows; /* ref: a prefix */
            double s = time_vec_dot(tr->vec_dot, w, row_bytes, r, xq, p == 0 ? 1 : 3);
            double gbs = (double)row_bytes * (double)r / s / 1e9;
            if (p == 0) ref_gbs = gbs;
            double flops = 2.0 * N_IN * GEMM_ROWS * GEMM_T;
            double loop_s = time_gemm(tr, w, row_bytes, xq, x_bytes, y, false, p == 0 ? 1 : 2);
            printf("%-5s %-7s %8.2f ms %9.2f %8.2f | ", rt->name, paths[p].name, s * 1e3 * rows / r,
                   gbs, gbs / ref_gbs);
            if (tr->gemm) printf("gemv %6.2f GB/s | ", (double)row_bytes * (double)rows / time_gemv(tr, w, row_bytes, rows, xq, 3) / 1e9);
            if (tr->gemm) {
                double gemm_s = time_gemm(tr, w, row_bytes, xq, x_bytes, y, true, 2);
                printf("%14.2f %14.2f %8.2f\n", flops / gemm_s / 1e9, flops / loop_s / 1e9, loop_s / gemm_s);
            } else {
                printf("%14s %14.2f %8s\n", "-", flops / loop_s / 1e9, "-");
            }
            if (tr->packed.rows) time_packed(&tr->packed, "packed:", w, row_bytes, rows);
            if (tr->packed_bf16.rows) time_packed(&tr->packed_bf16, "bf16:", w, row_bytes, rows);
            fflush(stdout);
        }
        free(w), free(xq), free(y);
    }
    return 0;
}
