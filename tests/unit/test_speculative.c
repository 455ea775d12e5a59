/*
 * test_speculative.c -- the sampler's speculative-decoding API (l3c_sampler_probs, _verify, _mark,
 * _rollback) against independent computations:
 *  - l3c_sampler_probs equals a float64 softmax(logits / T) over the top-k set computed here;
 *  - l3c_sampler_verify with drafts drawn from a draft sampler's q: the accepted-or-resampled
 *    tokens follow the target's p (chi-square against p, 200k draws, p-value threshold 1e-6), on
 *    a plain distribution and on one where top-k makes the supports of p and q differ; two wrong
 *    rules run through the same statistic on the same kind of draws (resample from p instead of
 *    the residual; accept every draft) are rejected by it, so the test can fail;
 *  - greedy: verify returns the argmax whatever the draft;
 *  - mark / rollback restore the repetition, presence and frequency penalties' state exactly
 *    (the ring wrapped past its start in between).
 */
#include "check.h"
#include "llama3c.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { V = 10, DRAWS = 200000 };

static l3c_sampler *make(float temp, int32_t top_k, uint64_t seed) {
    l3c_sampler_params p = l3c_sampler_default_params();
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.seed = seed;
    l3c_sampler *s = NULL;
    CHECK_MSG(l3c_sampler_create(&p, V, &s) == L3C_OK, "create: %s", l3c_last_error());
    return s;
}

/* Deterministic logits in [-2, 2). */
static void fill(float *l, unsigned seed) {
    uint64_t x = seed * 2654435761u + 7;
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 4.0 - 2.0);
    }
}

/* The reference distribution: softmax(l / T) over the top_k largest (all when top_k <= 0). */
static void ref_probs(const float *l, float temp, int top_k, double *p) {
    double mx = -INFINITY, z = 0.0;
    for (int i = 0; i < V; i++) {
        int rank = 0;
        for (int j = 0; j < V; j++)
            rank += l[j] > l[i] || (l[j] == l[i] && j < i);
        p[i] = top_k > 0 && rank >= top_k ? -1.0 : l[i];
        if (p[i] != -1.0 && l[i] > mx) mx = l[i];
    }
    for (int i = 0; i < V; i++) {
        p[i] = p[i] == -1.0 ? 0.0 : exp((l[i] - mx) / temp);
        z += p[i];
    }
    for (int i = 0; i < V; i++)
        p[i] /= z;
}

/* Wilson-Hilferty: the chi-square value with upper tail ~1e-6 for df degrees of freedom. */
static double chi2_crit(int df) {
    const double z = 4.75, a = 2.0 / (9.0 * df);
    double t = 1.0 - a + z * sqrt(a);
    return df * t * t * t;
}

/* chi-square of counts against p over p's support; a count outside it is an infinite statistic */
static double chi2(const long *cnt, const double *p, long n, int *df) {
    double x = 0.0;
    *df = -1;
    for (int i = 0; i < V; i++) {
        if (p[i] <= 0.0) {
            if (cnt[i]) return INFINITY;
            continue;
        }
        double e = p[i] * (double)n, d = (double)cnt[i] - e;
        x += d * d / e;
        (*df)++;
    }
    return x;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double unif(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53;
}
static int draw_from(const double *w) {
    double t = 0.0;
    for (int i = 0; i < V; i++)
        t += w[i];
    double r = unif() * t, c = 0.0;
    for (int i = 0; i < V; i++) {
        c += w[i];
        if (r < c) return i;
    }
    for (int i = V - 1; i >= 0; i--)
        if (w[i] > 0) return i;
    return 0;
}

/* One setting: target logits lp, draft logits lq, the same chain (temp, top_k) for both. */
static void check_exact(float temp, int top_k, unsigned seed_p, unsigned seed_q) {
    float lp[V], lq[V];
    fill(lp, seed_p);
    fill(lq, seed_q);
    for (int i = 0; i < V; i++)
        lq[i] = 0.5f * lq[i] + 0.7f * lp[i]; /* a draft that agrees partly */
    double p[V], q[V];
    ref_probs(lp, temp, top_k, p);
    ref_probs(lq, temp, top_k, q);

    l3c_sampler *tgt = make(temp, top_k, 11), *dr = make(temp, top_k, 12);
    int32_t qi[V], pi[V];
    float qp[V], pp[V];
    int32_t qn = l3c_sampler_probs(dr, lq, qi, qp, V), pn = l3c_sampler_probs(tgt, lp, pi, pp, V);
    CHECK(qn == (top_k > 0 ? top_k : V) && pn == qn);
    for (int32_t j = 0; j < qn; j++)
        CHECK_NEAR(qp[j], q[qi[j]], 1e-6);
    for (int32_t j = 0; j < pn; j++)
        CHECK_NEAR(pp[j], p[pi[j]], 1e-6);

    long got[V] = {0}, wrong_p[V] = {0}, wrong_all[V] = {0}, acc = 0;
    for (long t = 0; t < DRAWS; t++) {
        int32_t x = l3c_sampler_sample(dr, lq);
        int32_t y = l3c_sampler_verify(tgt, lp, x, qi, qp, qn);
        CHECK(y >= 0 && y < V);
        if (y < 0 || y >= V) break;
        got[y]++;
        acc += y == x;
        /* wrong rule 1: accept with min(1, p/q), else draw from p instead of max(0, p - q) */
        int z = x;
        if (!(unif() * q[x] < p[x])) z = draw_from(p);
        wrong_p[z]++;
        wrong_all[x]++; /* wrong rule 2: every draft accepted */
    }
    double ideal = 0.0; /* expected acceptance: sum min(p, q) */
    for (int i = 0; i < V; i++)
        ideal += fmin(p[i], q[i]);
    CHECK_NEAR((double)acc / DRAWS, ideal, 0.01);
    int df, df1, df2;
    double x2 = chi2(got, p, DRAWS, &df), w1 = chi2(wrong_p, p, DRAWS, &df1),
           w2 = chi2(wrong_all, p, DRAWS, &df2);
    CHECK_MSG(x2 < chi2_crit(df), "T=%g top_k=%d: chi2 %.1f >= %.1f (df %d)", (double)temp, top_k,
              x2, chi2_crit(df), df);
    CHECK_MSG(w1 > chi2_crit(df1), "wrong rule (resample from p) passed: chi2 %.1f", w1);
    CHECK_MSG(w2 > chi2_crit(df2), "wrong rule (accept all) passed: chi2 %.1f", w2);
    printf(
        "T=%g top_k=%d: acceptance %.3f (ideal %.3f), chi2 %.1f (df %d, limit %.1f); wrong rules: "
        "%.0f, %.0f\n",
        (double)temp, top_k, (double)acc / DRAWS, ideal, x2, df, chi2_crit(df), w1, w2);
    l3c_sampler_free(tgt);
    l3c_sampler_free(dr);
}

static void test_greedy(void) {
    float lp[V], lq[V];
    fill(lp, 5);
    fill(lq, 6);
    int best = 0;
    for (int i = 1; i < V; i++)
        if (lp[i] > lp[best]) best = i;
    l3c_sampler *s = make(0.0f, 0, 1);
    int32_t qi[V], pi[1];
    float qp[V], pp[1];
    CHECK(l3c_sampler_probs(s, lp, pi, pp, 1) == 1 && pi[0] == best && pp[0] == 1.0f);
    int32_t qn = l3c_sampler_probs(s, lq, qi, qp, V);
    CHECK(qn == 1);
    for (int32_t x = 0; x < V; x++) {
        qi[0] = x;
        CHECK(l3c_sampler_verify(s, lp, x, qi, qp, 1) == best);
    }
    CHECK(l3c_sampler_verify(s, lp, -1, NULL, NULL, 0) == best);
    l3c_sampler_free(s);
}

static void test_mark_rollback(void) {
    l3c_sampler_params p = l3c_sampler_default_params();
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 4;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.3f;
    l3c_sampler *s = NULL, *fresh = NULL;
    CHECK(l3c_sampler_create(&p, V, &s) == L3C_OK && l3c_sampler_create(&p, V, &fresh) == L3C_OK);
    if (!s || !fresh) return;
    float l[V];
    fill(l, 9);
    const int32_t hist[] = {1, 2, 2, 7};
    for (int j = 0; j < 4; j++) {
        l3c_sampler_accept(s, hist[j]);
        l3c_sampler_accept(fresh, hist[j]);
    }
    int32_t i0[V], i1[V], i2[V];
    float p0[V], p1[V], p2[V];
    CHECK(l3c_sampler_probs(s, l, i0, p0, V) == V);
    for (int round = 0; round < 2; round++) {
        CHECK(l3c_sampler_mark(s) == L3C_OK);
        const int32_t draft[] = {3, 3, 9, 0, 1, 5};
        for (int j = 0; j < 6; j++)
            l3c_sampler_accept(s, draft[j]);
        CHECK(l3c_sampler_probs(s, l, i1, p1, V) == V);
        CHECK(memcmp(p0, p1, sizeof p0) || memcmp(i0, i1, sizeof i0)); /* the drafts changed it */
        CHECK(l3c_sampler_rollback(s) == L3C_OK);
        CHECK(l3c_sampler_probs(s, l, i1, p1, V) == V);
        CHECK(!memcmp(p0, p1, sizeof p0) && !memcmp(i0, i1, sizeof i0));
    }
    CHECK(l3c_sampler_probs(fresh, l, i2, p2, V) == V);
    CHECK(!memcmp(p0, p2, sizeof p0) && !memcmp(i0, i2, sizeof i0));
    CHECK(l3c_sampler_rollback(s) != L3C_OK); /* no mark left */
    l3c_sampler_free(s);
    l3c_sampler_free(fresh);
}

int main(void) {
    check_exact(1.0f, 0, 1, 2);
    check_exact(0.7f, 4, 3, 4); /* top-k: p and q have different supports */
    test_greedy();
    test_mark_rollback();
    return CHECK_DONE("test_speculative");
}
