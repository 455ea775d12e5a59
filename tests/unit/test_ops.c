/*
 * test_ops.c -- ops.c and threadpool.c against naive double-precision arithmetic.
 *
 *  - l3c_matmul (dispatched kernels) vs sum_i dequant(W)[r][i] * x[t][i] in double, with the
 *    float activations (so the check is independent of our activation quantizers), for several
 *    weight types, T in {1, 5, 17} and 1..4 threads. Tolerance relative to sum |w||x|, plus the
 *    8-bit activation rounding (half a step of amax/127 per element) where the type uses it.
 *    Results must also be bitwise identical for every thread count (ops.c splits whole tiles).
 *  - l3c_attn_rows (the attention kernel) == l3c_attn_rows_ref bit for bit (out and probs),
 *    F32 / F16 / Q8_0 key-value rows, head dims 32..128, 1..50 rows of ragged lengths; a row
 *    alone == the same row among others; the reference vs float64 softmax attention (4e-6;
 *    measured 1.3e-6).
 *  - l3c_rope_apply == l3c_rope_apply_ref bit for bit (n_rot < hd, pairs past a multiple of 8).
 *  - rmsnorm, softmax, swiglu, add, get_row vs naive formulas (1e-6 relative); l3c_rms_rstd is
 *    the scale l3c_rmsnorm applies (bitwise).
 *  - the thread pool: every chunk runs exactly once per job, over many back-to-back jobs, never
 *    two chunks at once on one thread index, and a slow worker does not lose chunks.
 */
#include "check.h"
#include "kernels/ops.h"
#include "model/model.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static float rnd_f(float lo, float hi) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return lo + (hi - lo) * (float)((g_rng >> 40) & 0xFFFFFF) / 16777216.0f;
}

/* ---------------------------------------------------------------- thread pool */

typedef struct {
    atomic_int calls[1000];
    atomic_int bad_ith, running[8];
    atomic_int overlap;
    int nth;
    int slow_ith; /* this thread sleeps in each chunk it runs (-1: none) */
} count_job;

static void count_task(void *arg, int64_t chunk, int ith) {
    count_job *j = arg;
    atomic_fetch_add(&j->calls[chunk], 1);
    if (ith < 0 || ith >= j->nth) {
        atomic_fetch_add(&j->bad_ith, 1);
        return;
    }
    if (atomic_fetch_add(&j->running[ith], 1) != 0) atomic_fetch_add(&j->overlap, 1);
    if (ith == j->slow_ith) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    atomic_fetch_sub(&j->running[ith], 1);
}

static void test_threadpool(void) {
    l3c_threadpool *tp = (l3c_threadpool *)1;
    CHECK(l3c_threadpool_create(0, &tp) == L3C_ERR_INVALID_ARG && tp == NULL);
    for (int n = 1; n <= 4; n++) {
        CHECK(l3c_threadpool_create(n, &tp) == L3C_OK);
        if (!tp) continue;
        CHECK(l3c_threadpool_n_threads(tp) == n);
        /* every chunk exactly once per job, over many back-to-back jobs of varied sizes */
        count_job j = {.nth = n, .slow_ith = -1};
        const int runs = 300;
        int64_t expect[1000] = {0};
        for (int r = 0; r < runs; r++) {
            int64_t chunks = (r * 37) % 1000;
            l3c_threadpool_run(tp, chunks, count_task, &j);
            for (int64_t c = 0; c < chunks; c++) expect[c]++;
        }
        for (int c = 0; c < 1000; c++)
            CHECK_MSG(j.calls[c] == expect[c], "n=%d chunk %d ran %d, want %lld", n, c,
                      (int)j.calls[c], (long long)expect[c]);
        CHECK(j.bad_ith == 0 && j.overlap == 0);
        /* a slow worker: the job still completes (others take its chunks), nothing twice */
        if (n > 1) {
            count_job s = {.nth = n, .slow_ith = 1};
            for (int r = 0; r < 20; r++) l3c_threadpool_run(tp, 50, count_task, &s);
            for (int c = 0; c < 50; c++) CHECK(s.calls[c] == 20);
            CHECK(s.bad_ith == 0 && s.overlap == 0);
        }
        l3c_threadpool_free(tp);
    }
    l3c_threadpool_run(NULL, 3, count_task, &(count_job){.nth = 1, .slow_ith = -1});
    l3c_threadpool_free(NULL);
    /* allocation failure leaves nothing behind */
    for (long k = 0; k < 6; k++) {
        l3c_set_alloc_fail_after(k);
        l3c_status st = l3c_threadpool_create(3, &tp);
        l3c_set_alloc_fail_after(-1);
        CHECK(st == L3C_OK || (st == L3C_ERR_NOMEM && tp == NULL));
        l3c_threadpool_free(tp);
    }
}

/* ---------------------------------------------------------------- matmul */

static const int k_types[] = {L3C_TYPE_F32,  L3C_TYPE_F16,  L3C_TYPE_BF16, L3C_TYPE_Q4_0,
                              L3C_TYPE_Q4_1, L3C_TYPE_Q5_0, L3C_TYPE_Q5_1, L3C_TYPE_Q8_0,
                              L3C_TYPE_Q2_K, L3C_TYPE_Q3_K, L3C_TYPE_Q4_K, L3C_TYPE_Q5_K,
                              L3C_TYPE_Q6_K};

/* weight data for a type: quantize random floats where a quantizer exists, else random bytes
 * with sane fp16 scales at the K-quant positions (d and dmin are the last/first fields) */
static void make_weights(int type, float *wf, void *w, int64_t n_out, int64_t n_in) {
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    size_t row;
    L3C_ASSERT(l3c_row_size(type, n_in, &row));
    for (int64_t i = 0; i < n_out * n_in; i++) wf[i] = rnd_f(-1.0f, 1.0f);
    if (tr->from_float) {
        for (int64_t r = 0; r < n_out; r++)
            tr->from_float(wf + r * n_in, (char *)w + r * row, n_in);
    } else {
        uint8_t *p = w;
        for (size_t i = 0; i < (size_t)n_out * row; i++) p[i] = (uint8_t)(rnd_f(0, 256));
        for (size_t b = 0; b < (size_t)n_out * row / tr->type_size; b++) {
            uint8_t *blk = p + b * tr->type_size;
            uint16_t d = l3c_fp32_to_fp16(rnd_f(0.0005f, 0.002f));
            uint16_t dmin = l3c_fp32_to_fp16(rnd_f(0.0f, 0.002f));
            switch (type) {
            case L3C_TYPE_Q4_K:
            case L3C_TYPE_Q5_K:
                memcpy(blk, &d, 2), memcpy(blk + 2, &dmin, 2);
                break;
            case L3C_TYPE_Q2_K: memcpy(blk + 80, &d, 2), memcpy(blk + 82, &dmin, 2); break;
            default: memcpy(blk + tr->type_size - 2, &d, 2); break; /* Q3_K, Q6_K */
            }
        }
    }
    for (int64_t r = 0; r < n_out; r++) tr->to_float((char *)w + r * row, wf + r * n_in, n_in);
}

static void test_matmul(void) {
    const int64_t n_out = 37, T_max = 17;
    const int64_t Ts[] = {1, 5, 17};
    l3c_threadpool *pools[4] = {0};
    for (int i = 0; i < 4; i++) CHECK(l3c_threadpool_create(i + 1, &pools[i]) == L3C_OK);
    for (size_t k = 0; k < sizeof k_types / sizeof k_types[0]; k++) {
        int type = k_types[k];
        const l3c_type_traits *tr = l3c_type_traits_get(type);
        int64_t n_in = tr->block_size == 256 ? 512 : tr->block_size == 32 ? 160 : 100;
        size_t row;
        CHECK(l3c_row_size(type, n_in, &row));
        float *wf = malloc(sizeof(float) * n_out * n_in);
        void *wdata = malloc(row * n_out);
        float *x = malloc(sizeof(float) * T_max * n_in);
        float *y = malloc(sizeof(float) * T_max * n_out), *y1 = malloc(sizeof(float) * T_max * n_out);
        make_weights(type, wf, wdata, n_out, n_in);
        l3c_weight w = {.name = "w", .type = type, .n_in = n_in, .n_out = n_out, .row_bytes = row,
                        .data = wdata};
        void *scratch = malloc(l3c_matmul_scratch_bytes(&w, T_max));
        bool q8_act = tr->vec_dot_type != L3C_TYPE_F32;
        for (size_t ti = 0; ti < 3; ti++) {
            int64_t T = Ts[ti];
            for (int64_t i = 0; i < T * n_in; i++) x[i] = rnd_f(-1.0f, 1.0f);
            for (int nt = 1; nt <= 4; nt++) {
                memset(y, 0xFF, sizeof(float) * T * n_out);
                l3c_matmul(pools[nt - 1], &w, x, y, T, scratch);
                if (nt == 1) memcpy(y1, y, sizeof(float) * T * n_out);
                else CHECK_MSG(memcmp(y, y1, sizeof(float) * T * n_out) == 0,
                               "%s T=%lld: %d threads differ from 1", tr->name, (long long)T, nt);
            }
            double worst = 0;
            for (int64_t t = 0; t < T; t++) {
                const float *xt = x + t * n_in;
                double amax = 0;
                for (int64_t i = 0; i < n_in; i++) amax = fmax(amax, fabs(xt[i]));
                for (int64_t r = 0; r < n_out; r++) {
                    const float *wr = wf + r * n_in;
                    double s = 0, sa = 0, sw = 0;
                    for (int64_t i = 0; i < n_in; i++) {
                        s += (double)wr[i] * xt[i];
                        sa += fabs((double)wr[i] * xt[i]);
                        sw += fabs(wr[i]);
                    }
                    /* float summation 1e-5; Q8 activations: <= 0.5 step (amax/127, fp16 d) per
                     * element; Q8_1's fp16 s adds ~2^-11 of the min term */
                    double tol = 1e-5 * sa + (q8_act ? sw * amax / 127 * 0.51 + 1e-3 * sa : 0);
                    double err = fabs(y1[t * n_out + r] - s);
                    worst = fmax(worst, err / tol);
                    CHECK_MSG(err <= tol, "%s T=%lld r=%lld: %g vs %g (tol %g)", tr->name,
                              (long long)T, (long long)r, y1[t * n_out + r], s, tol);
                }
            }
            if (T == 17) fprintf(stderr, "matmul %-5s worst err/tol %.3f\n", tr->name, worst);
        }
        /* get_row = to_float of the row */
        float row_out[512];
        l3c_get_row(&w, 36, row_out);
        for (int64_t i = 0; i < n_in; i++)
            CHECK_NEAR(row_out[i], wf[36 * n_in + i], 1e-6 * (1 + fabs(wf[36 * n_in + i])));
        free(scratch);
        free(wf);
        free(wdata);
        free(x);
        free(y);
        free(y1);
    }
    for (int i = 0; i < 4; i++) l3c_threadpool_free(pools[i]);
    l3c_weight bad = {.type = 17, .n_in = 32, .n_out = 1};
    CHECK(l3c_matmul_scratch_bytes(&bad, 1) == SIZE_MAX);
}

/* l3c_matmul_multi == separate l3c_matmul calls (+ l3c_swiglu), bit for bit, for weights of
 * different types and activation formats, on 1 and 3 threads, T below and above the size at
 * which the conversion goes parallel. */
static void test_matmul_multi(void) {
    const int types[3] = {L3C_TYPE_Q4_K, L3C_TYPE_Q6_K, L3C_TYPE_Q4_1};
    const int64_t n_in = 512, n_out[3] = {72, 37, 72}, Ts[] = {1, 3, 160};
    l3c_weight w[3];
    void *wdata[3];
    float *wf = malloc(sizeof(float) * 72 * n_in);
    for (int i = 0; i < 3; i++) {
        size_t row;
        CHECK(l3c_row_size(types[i], n_in, &row));
        wdata[i] = malloc(row * (size_t)n_out[i]);
        make_weights(types[i], wf, wdata[i], n_out[i], n_in);
        w[i] = (l3c_weight){.name = "w", .type = types[i], .n_in = n_in, .n_out = n_out[i],
                            .row_bytes = row, .data = wdata[i]};
    }
    const l3c_weight *all[3] = {&w[0], &w[1], &w[2]}, *gu[2] = {&w[0], &w[2]};
    const int64_t T_max = 160;
    float *x = malloc(sizeof(float) * T_max * n_in), *ref[3], *got[3];
    float *act = malloc(sizeof(float) * T_max * 72);
    for (int i = 0; i < 3; i++) {
        ref[i] = malloc(sizeof(float) * T_max * n_out[i]);
        got[i] = malloc(sizeof(float) * T_max * n_out[i]);
    }
    size_t sb = l3c_matmul_multi_scratch_bytes(3, all, T_max);
    CHECK(sb != SIZE_MAX && sb >= l3c_matmul_scratch_bytes(&w[2], T_max));
    void *scratch = malloc(sb);
    l3c_threadpool *tp3 = NULL;
    CHECK(l3c_threadpool_create(3, &tp3) == L3C_OK);
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        const int64_t T = Ts[ti];
        for (int64_t i = 0; i < T * n_in; i++) x[i] = rnd_f(-1.0f, 1.0f);
        for (int i = 0; i < 3; i++) l3c_matmul(NULL, &w[i], x, ref[i], T, scratch);
        for (int pass = 0; pass < 2; pass++) {
            l3c_threadpool *tp = pass ? tp3 : NULL;
            l3c_matmul_multi(tp, 3, all, got, x, T, scratch, false);
            for (int i = 0; i < 3; i++)
                CHECK_MSG(memcmp(got[i], ref[i], sizeof(float) * T * n_out[i]) == 0,
                          "multi T=%lld weight %d differs", (long long)T, i);
            float *gy[2] = {got[0], got[2]};
            l3c_matmul_multi(tp, 2, gu, gy, x, T, scratch, true);
            memcpy(act, ref[0], sizeof(float) * T * 72);
            l3c_swiglu(act, ref[2], T * 72);
            CHECK_MSG(memcmp(got[0], act, sizeof(float) * T * 72) == 0,
                      "multi swiglu T=%lld differs", (long long)T);
            CHECK(memcmp(got[2], ref[2], sizeof(float) * T * 72) == 0);
        }
    }
    l3c_threadpool_free(tp3);
    free(scratch);
    free(x);
    free(act);
    free(wf);
    for (int i = 0; i < 3; i++) free(wdata[i]), free(ref[i]), free(got[i]);
}

/* ---------------------------------------------------------------- elementwise ops */

static void test_elementwise(void) {
    enum { T = 3, N = 77 };
    float x[T * N], g[N], y[T * N], a[N], b[N], a0[N];
    for (int i = 0; i < T * N; i++) x[i] = rnd_f(-3.0f, 3.0f);
    for (int i = 0; i < N; i++) g[i] = rnd_f(0.5f, 1.5f);
    l3c_rmsnorm(x, g, y, T, N, 1e-5f);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < N; i++) ss += (double)x[t * N + i] * x[t * N + i];
        double sc = 1.0 / sqrt(ss / N + 1e-5);
        for (int i = 0; i < N; i++) {
            double want = x[t * N + i] * sc * g[i];
            CHECK_NEAR(y[t * N + i], want, 1e-6 * fabs(want) + 1e-7);
        }
    }
    float rstd[T];
    l3c_rms_rstd(x, rstd, T, N, 1e-5f);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < N; i++)
            ss += (double)x[t * N + i] * x[t * N + i];
        CHECK_NEAR(rstd[t], 1.0 / sqrt(ss / N + 1e-5), 1e-6 / sqrt(ss / N + 1e-5));
        for (int i = 0; i < N; i++)
            CHECK(y[t * N + i] == (x[t * N + i] * rstd[t]) * g[i]);
    }
    for (int i = 0; i < N; i++) a[i] = a0[i] = rnd_f(-10.0f, 10.0f), b[i] = rnd_f(-2.0f, 2.0f);
    a[0] = a0[0] = -100.0f; /* silu underflows to -0 */
    l3c_swiglu(a, b, N);
    for (int i = 0; i < N; i++) {
        double want = a0[i] / (1.0 + exp(-(double)a0[i])) * b[i];
        CHECK_NEAR(a[i], want, 1e-6 * fabs(want) + 1e-7);
    }
    for (int i = 0; i < N; i++) a[i] = a0[i];
    l3c_add(a, b, N);
    for (int i = 0; i < N; i++) CHECK(a[i] == a0[i] + b[i]);
    /* softmax, including a large offset that would overflow exp without max subtraction */
    for (int i = 0; i < N; i++) a[i] = a0[i] = rnd_f(-20.0f, 20.0f) + 1000.0f;
    l3c_softmax(a, N);
    double z = 0, s = 0;
    double m = a0[0];
    for (int i = 1; i < N; i++) m = fmax(m, a0[i]);
    for (int i = 0; i < N; i++) z += exp((double)a0[i] - m);
    for (int i = 0; i < N; i++) {
        double want = exp((double)a0[i] - m) / z;
        CHECK_NEAR(a[i], want, 1e-6 * want + 1e-9);
        s += a[i];
    }
    CHECK_NEAR(s, 1.0, 1e-5);
    float one = 5.0f;
    l3c_softmax(&one, 1);
    CHECK(one == 1.0f);
    /* silu over [-100, 100]: within 3e-7 relative of float64 (the exp is within 2 ulp; 1e-36
     * absolute where exp(-x) leaves the clamped range and silu is below 4e-37), and the
     * vector body and the scalar tail give the same bits (each element alone: tail only) */
    enum { NS = 2001 };
    static float sa[NS], sb[NS], s1[NS];
    for (int i = 0; i < NS; i++) sa[i] = s1[i] = -100.0f + 0.1f * (float)i + rnd_f(0.0f, 0.01f), sb[i] = 1.0f;
    l3c_swiglu(sa, sb, NS);
    for (int i = 0; i < NS; i++) {
        const double v = s1[i], want = v / (1.0 + exp(-v));
        CHECK_MSG(fabs(sa[i] - want) <= 3e-7 * fabs(want) + 1e-36, "silu(%.9g) = %.9g, want %.9g", v, sa[i], want);
        l3c_swiglu(&s1[i], &sb[i], 1);
        CHECK_MSG(memcmp(&s1[i], &sa[i], 4) == 0, "silu(x) alone differs from within a vector at %d", i);
    }
    /* axpy_rows == one axpy per row, bit for bit (vector body and scalar tail) */
    enum { NR = 9, LDX = 83 };
    static float X[NR * LDX], w[NR];
    for (int i = 0; i < NR * LDX; i++) X[i] = rnd_f(-2.0f, 2.0f);
    for (int r = 0; r < NR; r++) w[r] = rnd_f(-1.0f, 1.0f);
    const int lens[] = {1, 15, 16, 17, 64, 77};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int nr = 0; nr <= NR; nr += 3) {
            for (int i = 0; i < N; i++) a[i] = a0[i] = rnd_f(-3.0f, 3.0f);
            l3c_axpy_rows(a, w, X, LDX, nr, lens[li]);
            for (int r = 0; r < nr; r++) l3c_axpy(a0, w[r], X + r * LDX, lens[li]);
            CHECK_MSG(memcmp(a, a0, sizeof a) == 0, "axpy_rows n=%d rows=%d differs from axpy", lens[li], nr);
        }
}

/* Batch invariance through l3c_matmul on the dispatched kernels: token t's outputs are bit for
 * bit the same whether it is multiplied alone (T = 1), in a batch of 7 or of 37 (at several
 * places in the batch), with 1 or 3 threads. n_out = 45 leaves ragged row tiles. */
static void test_matmul_batch_invariance(void) {
    enum { N_OUT = 45, T_MAX = 37 };
    l3c_threadpool *tp3 = NULL;
    CHECK(l3c_threadpool_create(3, &tp3) == L3C_OK);
    for (size_t k = 0; k < sizeof k_types / sizeof k_types[0]; k++) {
        int type = k_types[k];
        const l3c_type_traits *tr = l3c_type_traits_get(type);
        int64_t n_in = tr->block_size == 256 ? 512 : tr->block_size == 32 ? 224 : 200;
        size_t row;
        CHECK(l3c_row_size(type, n_in, &row));
        float *wf = malloc(sizeof(float) * N_OUT * n_in);
        void *wdata = malloc(row * N_OUT);
        float *x = malloc(sizeof(float) * T_MAX * n_in);
        float *ybig = malloc(sizeof(float) * T_MAX * N_OUT), *y = malloc(sizeof(float) * T_MAX * N_OUT);
        make_weights(type, wf, wdata, N_OUT, n_in);
        l3c_weight w = {.name = "w", .type = type, .n_in = n_in, .n_out = N_OUT, .row_bytes = row,
                        .data = wdata};
        void *scratch = malloc(l3c_matmul_scratch_bytes(&w, T_MAX));
        for (int64_t i = 0; i < T_MAX * n_in; i++) x[i] = rnd_f(-1.0f, 1.0f);
        l3c_matmul(tp3, &w, x, ybig, T_MAX, scratch);
        const int64_t Ts[] = {1, 7, 37};
        for (size_t ti = 0; ti < 3; ti++)
            for (int64_t t0 = 0; t0 + Ts[ti] <= T_MAX; t0 += Ts[ti] == 1 ? 5 : Ts[ti]) {
                l3c_matmul(t0 % 2 ? tp3 : NULL, &w, x + t0 * n_in, y, Ts[ti], scratch);
                CHECK_MSG(memcmp(y, ybig + t0 * N_OUT, sizeof(float) * Ts[ti] * N_OUT) == 0,
                          "%s (%s): tokens %lld..%lld in a batch of %lld differ from the batch of %d",
                          tr->name, l3c_kernels_path(), (long long)t0, (long long)(t0 + Ts[ti] - 1),
                          (long long)Ts[ti], T_MAX);
            }
        free(scratch), free(wf), free(wdata), free(x), free(ybig), free(y);
    }
    l3c_threadpool_free(tp3);
}

/* one attention case: R rows, nondecreasing n[r] <= n_max, key/value rows of kv_type (the
 * head at byte offset head_off of rows row_bytes long, as in the KV cache) */
static void attn_case(int kv_type, int64_t hd, int64_t R, int32_t n_max) {
    const l3c_type_traits *tr = l3c_type_traits_get(kv_type);
    size_t head_bytes = 0;
    CHECK(l3c_row_size(kv_type, hd, &head_bytes));
    const size_t row_bytes = 2 * head_bytes + 8,
                 head_off = head_bytes + 8; /* the second of two heads */
    float *q = malloc(sizeof(float) * (size_t)(R * hd)),
          *out = malloc(sizeof(float) * (size_t)(R * hd));
    float *out1 = malloc(sizeof(float) * (size_t)hd),
          *outr = malloc(sizeof(float) * (size_t)(R * hd));
    float *pr = malloc(sizeof(float) * (size_t)(R * n_max)),
          *prr = malloc(sizeof(float) * (size_t)(R * n_max));
    float *p1 = malloc(sizeof(float) * (size_t)n_max),
          *kf = malloc(sizeof(float) * (size_t)(n_max * hd));
    float *vf = malloc(sizeof(float) * (size_t)(n_max * hd)),
          *row = malloc(sizeof(float) * (size_t)hd);
    uint8_t *k = calloc((size_t)n_max, row_bytes), *v = calloc((size_t)n_max, row_bytes);
    float *work = malloc(sizeof(float) * l3c_attn_work_floats(R, n_max, hd));
    const float **qp = malloc(sizeof(float *) * (size_t)R);
    float **op = malloc(sizeof(float *) * (size_t)R), **opr = malloc(sizeof(float *) * (size_t)R);
    float **pp = malloc(sizeof(float *) * (size_t)R), **ppr = malloc(sizeof(float *) * (size_t)R);
    int32_t *n = malloc(sizeof(int32_t) * (size_t)R);
    for (int64_t i = 0; i < R * hd; i++)
        q[i] = rnd_f(-2.0f, 2.0f);
    for (int32_t p = 0; p < n_max; p++) { /* stored rows and their exact float values */
        for (int64_t d = 0; d < hd; d++)
            row[d] = rnd_f(-2.0f, 2.0f);
        tr->from_float(row, k + (size_t)p * row_bytes + head_off, hd);
        tr->to_float(k + (size_t)p * row_bytes + head_off, kf + p * hd, hd);
        for (int64_t d = 0; d < hd; d++)
            row[d] = rnd_f(-2.0f, 2.0f);
        tr->from_float(row, v + (size_t)p * row_bytes + head_off, hd);
        tr->to_float(v + (size_t)p * row_bytes + head_off, vf + p * hd, hd);
    }
    for (int64_t r = 0; r < R; r++) { /* ragged, nondecreasing, the last one n_max */
        n[r] = r == R - 1 ? n_max : (int32_t)(1 + (n_max - 1) * (r + rnd_f(0.0f, 0.9f)) / R);
        if (r && n[r] < n[r - 1]) n[r] = n[r - 1];
        qp[r] = q + r * hd, op[r] = out + r * hd, opr[r] = outr + r * hd;
        pp[r] = pr + r * n_max, ppr[r] = prr + r * n_max;
    }
    l3c_attn_rows_args A = {.R = R,
                            .q = qp,
                            .out = op,
                            .probs = pp,
                            .n = n,
                            .hd = hd,
                            .scale = 1.0f / sqrtf((float)hd),
                            .k = k + head_off,
                            .v = v + head_off,
                            .row_bytes = row_bytes,
                            .to_float = kv_type == L3C_TYPE_F32 ? NULL : tr->to_float,
                            .work = work};
    l3c_attn_rows(&A);
    A.out = opr, A.probs = ppr;
    l3c_attn_rows_ref(&A);
    int bad = 0;
    double max_err = 0.0;
    for (int64_t r = 0; r < R; r++) {
        bad += memcmp(op[r], opr[r], sizeof(float) * (size_t)hd) != 0;
        bad += memcmp(pp[r], ppr[r], sizeof(float) * (size_t)n[r]) != 0;
        /* float64 softmax attention over the stored values */
        double s[512], m = -INFINITY, sum = 0.0;
        for (int32_t p = 0; p < n[r]; p++) {
            s[p] = 0.0;
            for (int64_t d = 0; d < hd; d++)
                s[p] += (double)qp[r][d] * kf[p * hd + d];
            s[p] /= sqrt((double)hd);
            m = fmax(m, s[p]);
        }
        for (int32_t p = 0; p < n[r]; p++)
            sum += (s[p] = exp(s[p] - m));
        for (int64_t d = 0; d < hd; d++) {
            double want = 0.0;
            for (int32_t p = 0; p < n[r]; p++)
                want += s[p] / sum * vf[p * hd + d];
            max_err = fmax(max_err, fabs(opr[r][d] - want));
        }
        for (int32_t p = 0; p < n[r]; p++)
            max_err = fmax(max_err, fabs(ppr[r][p] - s[p] / sum));
    }
    CHECK_MSG(bad == 0,
              "attn_rows type %d hd %lld R %lld n_max %d: %d rows differ from the reference",
              kv_type, (long long)hd, (long long)R, n_max, bad);
    CHECK_MSG(max_err <= 4e-6,
              "attn_rows_ref type %d hd %lld R %lld n_max %d: max |err| %.3g vs float64", kv_type,
              (long long)hd, (long long)R, n_max, max_err);
    /* each row alone (R = 1) == the row among the others */
    bad = 0;
    for (int64_t r = 0; r < R; r++) {
        l3c_attn_rows_args B = A;
        float *o1[1] = {out1}, *q1[1] = {p1};
        B.R = 1, B.q = &qp[r], B.out = o1, B.probs = q1, B.n = &n[r];
        l3c_attn_rows(&B);
        bad += memcmp(out1, op[r], sizeof(float) * (size_t)hd) != 0 ||
               memcmp(p1, pp[r], sizeof(float) * (size_t)n[r]) != 0;
    }
    CHECK_MSG(bad == 0, "attn_rows type %d hd %lld R %lld: %d rows alone differ from the batch",
              kv_type, (long long)hd, (long long)R, bad);
    free(q), free(out), free(out1), free(outr), free(pr), free(prr), free(p1), free(kf), free(vf),
        free(row);
    free(k), free(v), free(work), free(qp), free(op), free(opr), free(pp), free(ppr), free(n);
}

static void test_attn_rows(void) {
    const int types[] = {L3C_TYPE_F32, L3C_TYPE_F16, L3C_TYPE_Q8_0};
    const int64_t hds[] = {32, 64, 80, 128};
    const int64_t Rs[] = {1, 3, 16, 17, 48, 50};
    const int32_t ns[] = {1, 7, 33, 70, 130};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t hi = 0; hi < 4; hi++) {
            if (types[ti] == L3C_TYPE_Q8_0 && hds[hi] % 32) continue;
            for (size_t ri = 0; ri < 6; ri++)
                for (size_t ni = 0; ni < 5; ni++)
                    attn_case(types[ti], hds[hi], Rs[ri], ns[ni]);
        }
    if (!l3c_attn_rows_fast())
        fprintf(stderr, "test_ops: attn_rows: no AVX-512 kernel on this CPU (reference only)\n");
}

static void test_rope(void) {
    enum { T = 3, NH = 2 };
    const int shapes[][2] = {{64, 64}, {80, 80}, {64, 32}, {38, 22}, {2, 2}}; /* hd, n_rot */
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int hd = shapes[k][0], half = shapes[k][1] / 2;
        float x[T * NH * 80], x0[T * NH * 80], c[T * 40], sn[T * 40];
        for (int i = 0; i < T * NH * hd; i++)
            x[i] = x0[i] = rnd_f(-4.0f, 4.0f);
        for (int i = 0; i < T * half; i++)
            c[i] = rnd_f(-1.0f, 1.0f), sn[i] = rnd_f(-1.0f, 1.0f);
        l3c_rope_apply(x, T, NH, hd, 2 * half, c, sn);
        l3c_rope_apply_ref(x0, T, NH, hd, 2 * half, c, sn);
        CHECK_MSG(memcmp(x, x0, sizeof(float) * (size_t)(T * NH * hd)) == 0,
                  "rope hd %d n_rot %d differs from the reference", hd, 2 * half);
    }
}

int main(void) {
    test_threadpool();
    test_rope();
    test_attn_rows();
    test_elementwise();
    test_matmul();
    test_matmul_multi();
    test_matmul_batch_invariance();
    return CHECK_DONE("test_ops");
}
