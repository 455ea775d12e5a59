/*
 * test_train_ops.c -- every backward half of src/train/train_ops.c against central finite
 * differences of its own forward half (an independent check: only the forward is trusted).
 * Each op's scalar loss is L = sum(r * y) for a fixed random r (cross-entropy: the mean loss).
 * Finite differences with h = 1e-2 on inputs O(1), L summed in double: the error comes from h^2
 * terms and fp32 rounding; tolerance 5e-4 of the largest gradient (measured max 4.3e-5, attention
 * dq). The torch autograd comparison of the whole model (tests/py/test_train_grad.py)
 * is the tight one (1e-4).
 * Also: rope backward is the exact inverse rotation, the causal mask leaves future tokens out,
 * GQA gradients reach every kv head, masked targets contribute nothing.
 */
#include "check.h"
#include "train/train_ops.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x1234567887654321ull;
static float frand(void) { /* uniform [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}
static float *rnd(int64_t n, float scale, float offset) {
    float *a = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) a[i] = offset + scale * frand();
    return a;
}
static float *zeros(int64_t n) { return calloc((size_t)n, sizeof(float)); }

static double dot_r(const float *y, const float *r, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

typedef double (*loss_fn)(void);

/* Compares grad[i] with (L(p+h) - L(p-h)) / 2h for every element of p. */
static void fd_check(const char *name, float *p, int64_t n, const float *grad, loss_fn L) {
    const float h = 1e-2f;
    double gmax = 0.0, emax = 0.0;
    for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(grad[i]));
    for (int64_t i = 0; i < n; i++) {
        const float p0 = p[i];
        p[i] = p0 + h;
        double lp = L();
        p[i] = p0 - h;
        double lm = L();
        p[i] = p0;
        double num = (lp - lm) / (2.0 * h);
        emax = fmax(emax, fabs(num - grad[i]));
    }
    fprintf(stderr, "  %-22s max|grad| %.3e  max|fd - grad| / max|grad| %.2e\n", name, gmax,
            emax / gmax);
    CHECK_MSG(gmax > 0.0 && emax <= 5e-4 * gmax, "%s: finite differences disagree (%.3e of %.3e)", name,
              emax, gmax);
}

/* ------------------------------------------------------------------ shared test state */
enum { N = 6, D = 12, O = 10, B = 2, T = 5, H = 4, HKV = 2, HD = 6, V = 9, F = 14 };
static float *X, *W, *R, *Y, *TMP;
static float *Q, *K, *VV, *ATT;
static int32_t IDS[N], POS[B * T], TGT[N];
static float COS[B * T * HD / 2], SIN[B * T * HD / 2];

static double loss_rmsnorm(void) {
    float rstd[N];
    l3c_tr_rmsnorm_fwd(X, W, N, D, 1e-5f, Y, rstd);
    return dot_r(Y, R, N * D);
}
static double loss_matmul(void) {
    l3c_tr_matmul_fwd(X, W, N, D, O, Y);
    return dot_r(Y, R, N * O);
}
static double loss_rope(void) {
    memcpy(Y, X, sizeof(float) * B * T * H * HD);
    l3c_tr_rope_fwd(Y, B * T, H, HD, HD - 2, COS, SIN); /* n_rot < hd: the tail passes through */
    return dot_r(Y, R, B * T * H * HD);
}
static double loss_attention(void) {
    l3c_tr_attention_fwd(Q, K, VV, NULL, B, T, H, HKV, HD, ATT, Y);
    return dot_r(Y, R, B * T * H * HD);
}
static double loss_swiglu(void) {
    l3c_tr_swiglu_fwd(X, TMP, N * F, Y);
    return dot_r(Y, R, N * F);
}
static double loss_xent(void) {
    float lse[N];
    int64_t nv;
    return l3c_tr_xent_fwd(X, TGT, N, V, lse, &nv) / (double)nv;
}
static double loss_embedding(void) {
    l3c_tr_embedding_fwd(W, D, IDS, N, Y);
    return dot_r(Y, R, N * D);
}

int main(void) {
    Y = zeros(4096);
    R = rnd(4096, 1.0f, 0.0f);

    /* rmsnorm */
    X = rnd(N * D, 1.0f, 0.2f);
    W = rnd(D, 0.5f, 1.0f);
    {
        float rstd[N], *dx = zeros(N * D), *dw = zeros(D);
        l3c_tr_rmsnorm_fwd(X, W, N, D, 1e-5f, Y, rstd);
        l3c_tr_rmsnorm_bwd(X, W, rstd, R, N, D, dx, dw);
        fd_check("rmsnorm dx", X, N * D, dx, loss_rmsnorm);
        fd_check("rmsnorm dw", W, D, dw, loss_rmsnorm);
        free(dx), free(dw);
    }
    free(X), free(W);

    /* matmul */
    X = rnd(N * D, 1.0f, 0.0f);
    W = rnd(O * D, 0.5f, 0.0f);
    {
        float *dx = zeros(N * D), *dW = zeros(O * D);
        l3c_tr_matmul_bwd(X, W, R, N, D, O, dx, dW);
        fd_check("matmul dx", X, N * D, dx, loss_matmul);
        fd_check("matmul dW", W, O * D, dW, loss_matmul);
        free(dx), free(dW);
    }
    free(X), free(W);

    /* rope: tables for two sequences of T positions, a rope_freqs divisor */
    {
        float freqs[HD / 2];
        for (int i = 0; i < HD / 2; i++) freqs[i] = 1.0f + (float)i;
        for (int i = 0; i < B * T; i++) POS[i] = (i % T) * 7;
        l3c_tr_rope_tables(POS, B * T, HD - 2, 10000.0f, freqs, COS, SIN);
        /* the tables against the formula */
        double a = POS[3] * pow(10000.0, -2.0 * 1 / (HD - 2)) / freqs[1];
        CHECK_NEAR(COS[3 * ((HD - 2) / 2) + 1], cos(a), 1e-7);
        X = rnd(B * T * H * HD, 1.0f, 0.0f);
        float *d = malloc(sizeof(float) * B * T * H * HD);
        memcpy(d, R, sizeof(float) * B * T * H * HD);
        l3c_tr_rope_bwd(d, B * T, H, HD, HD - 2, COS, SIN);
        fd_check("rope dx", X, B * T * H * HD, d, loss_rope);
        /* rotating forward then backward gives the input back (R^T R = I), tail untouched */
        memcpy(d, X, sizeof(float) * B * T * H * HD);
        l3c_tr_rope_fwd(d, B * T, H, HD, HD - 2, COS, SIN);
        CHECK(d[2 * HD + 1] != X[2 * HD + 1] || POS[0] == 0);
        l3c_tr_rope_bwd(d, B * T, H, HD, HD - 2, COS, SIN);
        double e = 0.0;
        for (int i = 0; i < B * T * H * HD; i++) e = fmax(e, fabs(d[i] - X[i]));
        CHECK_MSG(e < 1e-6, "rope bwd(fwd(x)) != x: %g", e);
        free(d), free(X);
    }

    /* causal GQA attention */
    {
        const int64_t nq = B * T * H * HD, nk = B * T * HKV * HD;
        Q = rnd(nq, 1.0f, 0.0f), K = rnd(nk, 1.0f, 0.0f), VV = rnd(nk, 1.0f, 0.0f);
        ATT = zeros(B * H * T * T);
        float *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
        l3c_tr_attention_fwd(Q, K, VV, NULL, B, T, H, HKV, HD, ATT, Y);
        l3c_tr_attention_bwd(Q, K, VV, ATT, R, B, T, H, HKV, HD, dq, dk, dv);
        fd_check("attention dq", Q, nq, dq, loss_attention);
        fd_check("attention dk", K, nk, dk, loss_attention);
        fd_check("attention dv", VV, nk, dv, loss_attention);
        /* causality: the last token of sequence 0 gets no gradient from its predecessors' outputs
         * when only row 0's output matters */
        float *r0 = zeros(nq), *dk0 = zeros(nk), *dq0 = zeros(nq), *dv0 = zeros(nk);
        for (int i = 0; i < H * HD; i++) r0[i] = 1.0f; /* token (b 0, t 0) only */
        l3c_tr_attention_bwd(Q, K, VV, ATT, r0, B, T, H, HKV, HD, dq0, dk0, dv0);
        double fut = 0.0;
        for (int64_t i = HKV * HD; i < nk; i++) fut = fmax(fut, fabs(dk0[i]) + fabs(dv0[i]));
        CHECK_MSG(fut == 0.0, "token 0's output leaks gradient into later keys / values: %g", fut);
        free(r0), free(dk0), free(dq0), free(dv0);
        free(dq), free(dk), free(dv), free(Q), free(K), free(VV), free(ATT);
    }

    /* swiglu */
    X = rnd(N * F, 2.0f, 0.0f);
    TMP = rnd(N * F, 1.0f, 0.0f);
    {
        float *dg = zeros(N * F), *du = zeros(N * F);
        l3c_tr_swiglu_bwd(X, TMP, R, N * F, dg, du);
        fd_check("swiglu dg", X, N * F, dg, loss_swiglu);
        fd_check("swiglu du", TMP, N * F, du, loss_swiglu);
        free(dg), free(du);
    }
    free(X), free(TMP);

    /* cross-entropy with a masked target */
    X = rnd(N * V, 2.0f, 0.0f);
    for (int i = 0; i < N; i++) TGT[i] = (i * 5 + 1) % V;
    TGT[2] = -1;
    {
        float lse[N], *dz = zeros(N * V);
        int64_t nv;
        double l = l3c_tr_xent_fwd(X, TGT, N, V, lse, &nv);
        CHECK(nv == N - 1);
        /* row 0 against a direct log-softmax in double */
        double mx = -1e30, s = 0.0;
        for (int i = 0; i < V; i++) mx = fmax(mx, X[i]);
        for (int i = 0; i < V; i++) s += exp(X[i] - mx);
        CHECK_NEAR(lse[0], mx + log(s), 1e-5);
        CHECK(l > 0.0);
        l3c_tr_xent_bwd(X, lse, TGT, N, V, 1.0f / (float)nv, dz);
        fd_check("xent dlogits", X, N * V, dz, loss_xent);
        double m = 0.0;
        for (int i = 0; i < V; i++) m = fmax(m, fabs(dz[2 * V + i]));
        CHECK(m == 0.0);
        free(dz);
    }
    free(X);

    /* embedding: repeated ids accumulate */
    W = rnd(V * D, 1.0f, 0.0f);
    for (int i = 0; i < N; i++) IDS[i] = (i * 4) % 7;
    IDS[5] = IDS[1];
    {
        float *dt = zeros(V * D);
        l3c_tr_embedding_bwd(dt, D, IDS, N, R);
        fd_check("embedding dtable", W, V * D, dt, loss_embedding);
        free(dt);
    }
    free(W);

    /* add: backward passes the gradient through */
    {
        float a[3] = {1, 2, 3}, b[3] = {4, 5, 6}, db[3] = {1, 1, 1};
        l3c_tr_add_fwd(a, b, 3);
        CHECK(a[2] == 9.0f);
        l3c_tr_add_bwd(a, 3, db);
        CHECK(db[0] == 6.0f && db[2] == 10.0f);
    }

    free(Y), free(R);
    return CHECK_DONE("test_train_ops");
}
