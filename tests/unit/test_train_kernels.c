/*
 * test_train_kernels.c -- the threaded training kernels (src/train/train_kernels.c) against the
 * scalar pairs of train_ops.c: matmul_dx over weights of every common GGUF type (the scalar
 * reference gets the weight dequantized whole by the type table) on each of its paths, its
 * blocks kernel per ISA (scalar, AVX2, best) and thread count, matmul_dw, and the batch-
 * parallel attention (bitwise equal to the scalar loops, whatever the thread count).
 */
#include "check.h"
#include "kernels/ref.h"
#include "kernels/types.h"
#include "train/train_kernels.h"
#include "train/train_ops.h"

#include <stdlib.h>
#include <string.h>

static unsigned long long rs = 88172645463325252ull;
static float frand(void) { /* xorshift64, [-1, 1) */
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static void fill(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = frand();
}
static double rel_diff(const float *a, const float *b, int64_t n) {
    double mx = 0.0, d = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
        if (fabs(a[i] - b[i]) > d) d = fabs(a[i] - b[i]);
    }
    return mx > 0.0 ? d / mx : d;
}

/* dx += scale dy W for W of type `type` [n_out x n_in], on nt threads, vs the scalar pair on
 * W dequantized whole */
static void check_dx(int type, int64_t n_in, int64_t n_out, int64_t N, float scale, int nt) {
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    const size_t row_bytes = (size_t)(n_in / tr->block_size) * tr->type_size;
    float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out)), *wd = malloc(sizeof(float) * (size_t)(n_in * n_out));
    char *wq = malloc(row_bytes * (size_t)n_out);
    float *dy = malloc(sizeof(float) * (size_t)(N * n_out)), *dys = malloc(sizeof(float) * (size_t)(N * n_out));
    float *dx = malloc(sizeof(float) * (size_t)(N * n_in)), *ref = malloc(sizeof(float) * (size_t)(N * n_in));
    fill(wf, n_in * n_out);
    fill(dy, N * n_out);
    fill(dx, N * n_in);
    memcpy(ref, dx, sizeof(float) * (size_t)(N * n_in)); /* accumulates onto what is there */
    for (int64_t o = 0; o < n_out; o++) {
        if (type == L3C_TYPE_F32) memcpy(wq + o * row_bytes, wf + o * n_in, row_bytes);
        else if (type == L3C_TYPE_Q4_K) l3c_quantize_row_q4_K(wf + o * n_in, wq + o * row_bytes, n_in);
        else if (type == L3C_TYPE_Q6_K) l3c_quantize_row_q6_K(wf + o * n_in, wq + o * row_bytes, n_in);
        else tr->from_float(wf + o * n_in, wq + o * row_bytes, n_in);
        tr->to_float(wq + o * row_bytes, wd + o * n_in, n_in);
    }
    for (int64_t i = 0; i < N * n_out; i++) dys[i] = scale * dy[i];
    l3c_weight w = {.name = "w", .type = type, .n_in = n_in, .n_out = n_out, .row_bytes = row_bytes, .data = wq};
    l3c_threadpool *tp = NULL;
    if (nt > 1) CHECK(l3c_threadpool_create(nt, &tp) == L3C_OK);
    CHECK(l3c_trk_matmul_dx(tp, &w, dy, N, scale, dx) == L3C_OK);
    l3c_tr_matmul_bwd(NULL, wd, dys, N, n_in, n_out, ref, NULL);
    const double r = rel_diff(dx, ref, N * n_in);
    CHECK_MSG(r <= 1e-5, "matmul_dx %s [%lld x %lld] N %lld threads %d: %.2e", tr->name, (long long)n_out,
              (long long)n_in, (long long)N, nt, r);
    l3c_threadpool_free(tp);
    free(wf), free(wd), free(wq), free(dy), free(dys), free(dx), free(ref);
}

/* W [n_out x n_in] of `type` from random floats (Q5_K, which has no quantizer here: random
 * blocks with small fp16 scales), and its dequantization wd (the reference's weight) */
static char *make_weight(int type, int64_t n_in, int64_t n_out, float *wd) {
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    const size_t row_bytes = (size_t)(n_in / tr->block_size) * tr->type_size;
    float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out));
    char *wq = malloc(row_bytes * (size_t)n_out);
    fill(wf, n_in * n_out);
    for (int64_t o = 0; o < n_out; o++) {
        char *q = wq + o * row_bytes;
        if (type == L3C_TYPE_F32)
            memcpy(q, wf + o * n_in, row_bytes);
        else if (type == L3C_TYPE_Q4_K)
            l3c_quantize_row_q4_K(wf + o * n_in, q, n_in);
        else if (type == L3C_TYPE_Q6_K)
            l3c_quantize_row_q6_K(wf + o * n_in, q, n_in);
        else if (type == L3C_TYPE_Q5_K)
            for (size_t i = 0; i < row_bytes; i++) {
                q[i] = (char)(frand() * 128.0f);
                if (i % tr->type_size == 0) { /* d, dmin: the block's first two fp16 */
                    const uint16_t d = l3c_fp32_to_fp16(0.01f), dm = l3c_fp32_to_fp16(0.005f);
                    memcpy(q + i, &d, 2), memcpy(q + i + 2, &dm, 2);
                    i += 3;
                }
            }
        else
            tr->from_float(wf + o * n_in, q, n_in);
        tr->to_float(q, wd + o * n_in, n_in);
    }
    free(wf);
    return wq;
}

/* dx += scale dy W through W's blocks (l3c_trk_matmul_dx_blocks): the scalar kernel (isa 0)
 * vs the scalar pair on W dequantized whole (sums in another order: 1e-5 of the largest), AVX2
 * and the best kernel vs the scalar one (fma vs mul + add: 1e-6), and 1 vs nt threads bitwise */
static void check_blocks(int type, int64_t n_in, int64_t n_out, int64_t N, float scale, int nt) {
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    float *wd = malloc(sizeof(float) * (size_t)(n_in * n_out));
    char *wq = make_weight(type, n_in, n_out, wd);
    float *dy = malloc(sizeof(float) * (size_t)(N * n_out)),
          *dys = malloc(sizeof(float) * (size_t)(N * n_out));
    float *dx0 = malloc(sizeof(float) * (size_t)(N * n_in)), *dx[3],
          *ref = malloc(sizeof(float) * (size_t)(N * n_in));
    fill(dy, N * n_out);
    fill(dx0, N * n_in);
    for (int64_t i = 0; i < N * n_out; i++)
        dys[i] = scale * dy[i];
    memcpy(ref, dx0, sizeof(float) * (size_t)(N * n_in));
    l3c_tr_matmul_bwd(NULL, wd, dys, N, n_in, n_out, ref, NULL);
    l3c_weight w = {.name = "w",
                    .type = type,
                    .n_in = n_in,
                    .n_out = n_out,
                    .row_bytes = (size_t)(n_in / tr->block_size) * tr->type_size,
                    .data = wq};
    l3c_threadpool *tp = NULL;
    CHECK(l3c_threadpool_create(nt, &tp) == L3C_OK);
    const int isa[3] = {0, 1, -1};
    for (int k = 0; k < 3; k++) {
        dx[k] = malloc(sizeof(float) * (size_t)(N * n_in));
        memcpy(dx[k], dx0, sizeof(float) * (size_t)(N * n_in));
        CHECK(l3c_trk_matmul_dx_blocks(k == 2 ? tp : NULL, &w, dy, N, scale, dx[k], isa[k]) ==
              L3C_OK);
    }
    const double r = rel_diff(dx[0], ref, N * n_in), r1 = rel_diff(dx[1], dx[0], N * n_in);
    CHECK_MSG(r <= 1e-5, "dx_blocks %s [%lld x %lld] N %lld: %.2e", tr->name, (long long)n_out,
              (long long)n_in, (long long)N, r);
    CHECK_MSG(r1 <= 1e-6, "dx_blocks avx2 %s: %.2e", tr->name, r1);
    CHECK_MSG(rel_diff(dx[2], dx[0], N * n_in) <= 1e-6, "dx_blocks best %s", tr->name);
    /* the best kernel on one thread: the same bits as on nt */
    memcpy(dx[1], dx0, sizeof(float) * (size_t)(N * n_in));
    CHECK(l3c_trk_matmul_dx_blocks(NULL, &w, dy, N, scale, dx[1], -1) == L3C_OK);
    CHECK(!memcmp(dx[1], dx[2], sizeof(float) * (size_t)(N * n_in)));
    l3c_threadpool_free(tp);
    for (int k = 0; k < 3; k++)
        free(dx[k]);
    free(wd), free(wq), free(dy), free(dys), free(dx0), free(ref);
}

static void check_dw(int64_t n_in, int64_t n_out, int64_t N, float scale, int nt) {
    float *x = malloc(sizeof(float) * (size_t)(N * n_in)), *dy = malloc(sizeof(float) * (size_t)(N * n_out));
    float *dys = malloc(sizeof(float) * (size_t)(N * n_out));
    float *dw = malloc(sizeof(float) * (size_t)(n_in * n_out)), *ref = malloc(sizeof(float) * (size_t)(n_in * n_out));
    fill(x, N * n_in);
    fill(dy, N * n_out);
    fill(dw, n_in * n_out);
    memcpy(ref, dw, sizeof(float) * (size_t)(n_in * n_out));
    for (int64_t i = 0; i < N * n_out; i++) dys[i] = scale * dy[i];
    l3c_threadpool *tp = NULL;
    if (nt > 1) CHECK(l3c_threadpool_create(nt, &tp) == L3C_OK);
    CHECK(l3c_trk_matmul_dw(tp, x, dy, N, n_in, n_out, scale, dw) == L3C_OK);
    l3c_tr_matmul_bwd(x, NULL, dys, N, n_in, n_out, NULL, ref);
    const double r = rel_diff(dw, ref, n_in * n_out);
    CHECK_MSG(r <= 2e-6, "matmul_dw [%lld x %lld] N %lld: %.2e", (long long)n_out, (long long)n_in, (long long)N, r);
    l3c_threadpool_free(tp);
    free(x), free(dy), free(dys), free(dw), free(ref);
}

/* the threaded, vectorized, flash-style attention (row log-sum-exp saved, probabilities
 * recomputed) vs the scalar pair that stores them (tolerance: sums in another order), and 1 thread
 * vs nt threads bitwise. packed: rows hold examples of 1..5 tokens (positions restart). */
static void check_attention(int64_t B, int64_t T, int H, int Hkv, int hd, int nt, int packed) {
    const int64_t N = B * T, qd = (int64_t)H * hd, kd = (int64_t)Hkv * hd, na = B * H * T * T, nl = B * H * T;
    float *q = malloc(sizeof(float) * (size_t)(N * qd)), *k = malloc(sizeof(float) * (size_t)(N * kd));
    float *v = malloc(sizeof(float) * (size_t)(N * kd)), *dout = malloc(sizeof(float) * (size_t)(N * qd));
    float *att = malloc(sizeof(float) * (size_t)na), *lse[3], *out[3], *dq[3], *dk[3], *dv[3];
    int32_t *pos = NULL;
    if (packed) {
        pos = malloc(sizeof(int32_t) * (size_t)N);
        for (int64_t n = 0, run = 0; n < N; n++, run++) {
            if (n % T == 0 || run == 1 + (n * 7) % 5) run = 0;
            pos[n] = (int32_t)run;
        }
    }
    fill(q, N * qd), fill(k, N * kd), fill(v, N * kd), fill(dout, N * qd);
    for (int i = 0; i < 3; i++) {
        lse[i] = malloc(sizeof(float) * (size_t)nl), out[i] = malloc(sizeof(float) * (size_t)(N * qd));
        dq[i] = calloc((size_t)(N * qd), sizeof(float)), dk[i] = calloc((size_t)(N * kd), sizeof(float));
        dv[i] = calloc((size_t)(N * kd), sizeof(float));
    }
    l3c_threadpool *tp = NULL;
    if (nt > 1) CHECK(l3c_threadpool_create(nt, &tp) == L3C_OK);
    l3c_tr_attention_fwd(q, k, v, pos, B, T, H, Hkv, hd, att, out[0]);
    l3c_tr_attention_bwd(q, k, v, att, dout, B, T, H, Hkv, hd, dq[0], dk[0], dv[0]);
    CHECK(l3c_trk_attention_fwd(tp, q, k, v, pos, B, T, H, Hkv, hd, lse[1], out[1]) == L3C_OK);
    CHECK(l3c_trk_attention_bwd(tp, q, k, v, pos, lse[1], dout, B, T, H, Hkv, hd, dq[1], dk[1], dv[1]) == L3C_OK);
    CHECK(l3c_trk_attention_fwd(NULL, q, k, v, pos, B, T, H, Hkv, hd, lse[2], out[2]) == L3C_OK);
    CHECK(l3c_trk_attention_bwd(NULL, q, k, v, pos, lse[2], dout, B, T, H, Hkv, hd, dq[2], dk[2], dv[2]) ==
          L3C_OK);
    /* the probabilities the saved lse gives back, exp(q.k / sqrt(hd) - lse), vs the stored ones */
    float *p = calloc((size_t)na, sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++) {
                const int64_t j0 = t - (pos ? pos[b * T + t] : t);
                for (int64_t j = j0; j <= t; j++) {
                    double sc = 0;
                    for (int d = 0; d < hd; d++)
                        sc += (double)q[(b * T + t) * qd + h * hd + d] * k[(b * T + j) * kd + (h / (H / Hkv)) * hd + d];
                    p[((b * H + h) * T + t) * T + j] = (float)exp(sc / sqrt((double)hd) - lse[1][(b * H + h) * T + t]);
                }
            }
    const double tol = 2e-6;
    CHECK_MSG(rel_diff(p, att, na) <= 1e-5, "attention probabilities from lse %.2e", rel_diff(p, att, na));
    CHECK_MSG(rel_diff(out[1], out[0], N * qd) <= tol, "attention out %.2e", rel_diff(out[1], out[0], N * qd));
    CHECK_MSG(rel_diff(dq[1], dq[0], N * qd) <= tol, "attention dq %.2e", rel_diff(dq[1], dq[0], N * qd));
    CHECK_MSG(rel_diff(dk[1], dk[0], N * kd) <= tol, "attention dk %.2e", rel_diff(dk[1], dk[0], N * kd));
    CHECK_MSG(rel_diff(dv[1], dv[0], N * kd) <= tol, "attention dv %.2e", rel_diff(dv[1], dv[0], N * kd));
    CHECK(!memcmp(lse[1], lse[2], sizeof(float) * (size_t)nl));
    CHECK(!memcmp(out[1], out[2], sizeof(float) * (size_t)(N * qd)));
    CHECK(!memcmp(dq[1], dq[2], sizeof(float) * (size_t)(N * qd)));
    CHECK(!memcmp(dk[1], dk[2], sizeof(float) * (size_t)(N * kd)));
    CHECK(!memcmp(dv[1], dv[2], sizeof(float) * (size_t)(N * kd)));
    l3c_threadpool_free(tp);
    for (int i = 0; i < 3; i++) free(lse[i]), free(out[i]), free(dq[i]), free(dk[i]), free(dv[i]);
    free(q), free(k), free(v), free(dout), free(att), free(p), free(pos);
}

int main(void) {
    const int types[] = {L3C_TYPE_F32, L3C_TYPE_F16, L3C_TYPE_BF16, L3C_TYPE_Q8_0, L3C_TYPE_Q4_0,
                         L3C_TYPE_Q4_1, L3C_TYPE_Q5_0, L3C_TYPE_Q4_K, L3C_TYPE_Q6_K};
    /* every path of matmul_dx: W's blocks (the default for other types than F32), the gemm over
     * transposed slices (F32, N >= 16), the per-tile axpy one */
    for (int path = 0; path < 3; path++) {
        if (path) setenv("L3C_TRAIN_DX", path == 1 ? "gemm" : "tiles", 1);
        for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
            /* several column chunks and token chunks, a last partial tile of rows */
            check_dx(types[i], 1280, 70, 130, 1.0f, 3);
            check_dx(types[i], 256, 33, 5, 0.5f, 1);
            check_dx(types[i], 256, 5000, 40, 0.5f, 2); /* a tall matrix: slices of few columns */
        }
        check_dx(L3C_TYPE_F32, 8, 300, 70, 2.0f, 2); /* a LoRA B: rank-wide rows, split by tokens */
        check_dx(L3C_TYPE_F32, 3000, 8, 70, 1.0f, 2);  /* a LoRA A */
    }
    unsetenv("L3C_TRAIN_DX");
    const int btypes[] = {L3C_TYPE_F32,  L3C_TYPE_F16,  L3C_TYPE_BF16, L3C_TYPE_Q8_0,
                          L3C_TYPE_Q4_0, L3C_TYPE_Q4_1, L3C_TYPE_Q5_0, L3C_TYPE_Q4_K,
                          L3C_TYPE_Q5_K, L3C_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof btypes / sizeof *btypes; i++) {
        /* column chunks (a partial last one), token chunks (a partial group of 4), partial row
         * tiles */
        check_blocks(btypes[i], 768, 70, 263, 1.0f, 3);
        check_blocks(btypes[i], 256, 33, 5, 0.5f, 2);
        check_blocks(btypes[i], 512, 1000, 9, 2.0f, 2);
    }
    check_blocks(L3C_TYPE_F32, 40, 24, 11, 1.0f, 2); /* columns fewer than a vector */
    check_dw(576, 8, 200, 2.0f, 2);
    check_dw(8, 1536, 200, 1.0f, 3);
    check_dw(64, 19, 1, 1.0f, 1);
    check_attention(3, 17, 6, 2, 8, 3, 0);
    check_attention(3, 17, 6, 2, 8, 3, 1);
    check_attention(1, 9, 4, 4, 16, 2, 0);
    check_attention(2, 70, 9, 3, 64, 2, 0);
    check_attention(2, 70, 9, 3, 64, 2, 1); /* SmolLM2's heads */
    /* a type without to_float is refused */
    l3c_weight bad = {.name = "bad", .type = 9999, .n_in = 32, .n_out = 1, .row_bytes = 32};
    float g[1] = {0}, x[32] = {0};
    CHECK(l3c_trk_matmul_dx(NULL, &bad, g, 1, 1.0f, x) == L3C_ERR_UNSUPPORTED);
    return CHECK_DONE("test_train_kernels");
}
