/*
 * test_sampler.c -- l3c_sampler_* against hand-computed expectations: greedy ties, top-k == 1 is
 * greedy, seeding is reproducible, top-p / min-p keep exactly the sets the definitions give on
 * crafted distributions, llama.cpp repetition-penalty math, OpenAI presence / frequency penalties
 * against a direct recomputation from the accepted tokens, empirical frequencies within 3 sigma
 * of softmax(logits / T), logit-bias bans, argument errors and allocation failures.
 */
#include "check.h"
#include "llama3c.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static l3c_sampler_params plain(float temp) {
    l3c_sampler_params p = l3c_sampler_default_params();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.seed = 1234;
    return p;
}

static l3c_sampler *make(const l3c_sampler_params *p, int32_t n) {
    l3c_sampler *s = NULL;
    l3c_status st = l3c_sampler_create(p, n, &s);
    CHECK_MSG(st == L3C_OK && s, "create: %s", l3c_last_error());
    return s;
}

/* Deterministic pseudo-random logits in [-4, 4). */
static void fill_logits(float *l, int32_t n, unsigned seed) {
    uint64_t x = seed * 2654435761u + 1;
    for (int32_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 8.0 - 4.0);
    }
}

static void test_greedy(void) {
    l3c_sampler_params p = plain(0.0f);
    l3c_sampler *s = make(&p, 6);
    float l[6] = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f, -INFINITY};
    CHECK(l3c_sampler_sample(s, l) == 1); /* tie 1 vs 3 -> lowest id */
    l[0] = 5.0f;
    CHECK(l3c_sampler_sample(s, l) == 0);
    p.temperature = -1.0f;
    l3c_sampler_free(s);
    s = make(&p, 6);
    CHECK(l3c_sampler_sample(s, l) == 0);
    l3c_sampler_free(s);
}

static void test_top_k_one_is_greedy(void) {
    enum { N = 5000 };
    static float l[N];
    l3c_sampler_params g = plain(0.0f), k1 = plain(1.5f);
    k1.top_k = 1;
    l3c_sampler *sg = make(&g, N), *sk = make(&k1, N);
    for (unsigned t = 0; t < 50; t++) {
        fill_logits(l, N, t);
        int32_t a = l3c_sampler_sample(sg, l), b = l3c_sampler_sample(sk, l);
        CHECK_MSG(a == b, "trial %u: greedy %d, top-k 1 %d", t, (int)a, (int)b);
        int32_t best = 0;
        for (int32_t i = 1; i < N; i++)
            if (l[i] > l[best]) best = i;
        CHECK(a == best);
    }
    l3c_sampler_free(sg);
    l3c_sampler_free(sk);
}

static void test_top_k_set(void) {
    enum { N = 1000, K = 10 };
    static float l[N];
    fill_logits(l, N, 77);
    /* threshold = the K-th largest logit, from a full sort */
    float sorted[N];
    memcpy(sorted, l, sizeof sorted);
    for (int i = 0; i < N; i++) /* selection sort of the top K only */
        for (int j = i + 1; j < N && i < K; j++)
            if (sorted[j] > sorted[i]) {
                float t = sorted[i];
                sorted[i] = sorted[j];
                sorted[j] = t;
            }
    float kth = sorted[K - 1];
    l3c_sampler_params p = plain(100.0f); /* nearly uniform inside the top K */
    p.top_k = K;
    l3c_sampler *s = make(&p, N);
    int hits[N] = {0};
    for (int t = 0; t < 4000; t++) {
        int32_t id = l3c_sampler_sample(s, l);
        CHECK(id >= 0 && id < N);
        if (id >= 0 && id < N) hits[id]++;
    }
    int distinct = 0, outside = 0;
    for (int i = 0; i < N; i++) {
        if (hits[i]) distinct++;
        if (hits[i] && l[i] < kth) outside++;
    }
    CHECK_MSG(outside == 0, "%d tokens outside the top %d were sampled", outside, K);
    CHECK_MSG(distinct == K, "%d distinct tokens, expected all %d of the top-k", distinct, K);
    l3c_sampler_free(s);
}

static void test_seed_reproducible(void) {
    enum { N = 300 };
    static float l[N];
    fill_logits(l, N, 5);
    l3c_sampler_params p = l3c_sampler_default_params();
    p.seed = 42;
    p.temperature = 1.0f;
    l3c_sampler *a = make(&p, N), *b = make(&p, N);
    p.seed = 43;
    l3c_sampler *c = make(&p, N);
    int32_t seq_a[200];
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < 200; i++) {
        int32_t x = l3c_sampler_sample(a, l), y = l3c_sampler_sample(b, l), z = l3c_sampler_sample(c, l);
        seq_a[i] = x;
        same_ab &= x == y;
        same_ac &= x == z;
    }
    CHECK(same_ab);
    CHECK(!same_ac);
    /* reset restarts the PRNG */
    l3c_sampler_reset(a);
    int same_again = 1;
    for (int i = 0; i < 200; i++) same_again &= l3c_sampler_sample(a, l) == seq_a[i];
    CHECK(same_again);
    l3c_sampler_free(a);
    l3c_sampler_free(b);
    l3c_sampler_free(c);
}

/* logits = log(probs) so softmax at T=1 gives probs back */
static void log_probs(float *l, const double *p, int n) {
    for (int i = 0; i < n; i++) l[i] = (float)log(p[i]);
}

static void count(l3c_sampler *s, const float *l, int n, int draws, int *hits) {
    memset(hits, 0, (size_t)n * sizeof *hits);
    for (int t = 0; t < draws; t++) {
        int32_t id = l3c_sampler_sample(s, l);
        CHECK(id >= 0 && id < n);
        if (id >= 0 && id < n) hits[id]++;
    }
}

static void test_top_p(void) {
    const double pr[5] = {0.05, 0.5, 0.15, 0.3, 0.0001};
    float l[5];
    int hits[5];
    log_probs(l, pr, 5);
    l3c_sampler_params p = plain(1.0f);
    p.top_p = 0.75f; /* sorted: 0.5, 0.3 (cum 0.8 >= 0.75) -> keep {1, 3} */
    l3c_sampler *s = make(&p, 5);
    count(s, l, 5, 20000, hits);
    CHECK(hits[0] == 0 && hits[2] == 0 && hits[4] == 0);
    CHECK(hits[1] > 0 && hits[3] > 0);
    /* renormalized: P(1) = 0.5 / 0.8 = 0.625; sigma = sqrt(p(1-p)/n) */
    double f = hits[1] / 20000.0, sig = sqrt(0.625 * 0.375 / 20000.0);
    CHECK_NEAR(f, 0.625, 3 * sig);
    l3c_sampler_free(s);

    p.top_p = 0.45f; /* reached by the first token alone: keep {1} */
    s = make(&p, 5);
    count(s, l, 5, 2000, hits);
    CHECK(hits[1] == 2000);
    l3c_sampler_free(s);

    p.top_p = 0.951f; /* needs 0.5+0.3+0.15+0.05 = 1.0 > 0.951: keep all but the 0.0001 one */
    s = make(&p, 5);
    count(s, l, 5, 20000, hits);
    CHECK(hits[0] > 0 && hits[2] > 0 && hits[4] == 0);
    l3c_sampler_free(s);
}

static void test_min_p(void) {
    const double pr[4] = {0.15, 0.05, 0.5, 0.3};
    float l[4];
    int hits[4];
    log_probs(l, pr, 4);
    l3c_sampler_params p = plain(1.0f);
    p.min_p = 0.25f; /* threshold 0.125: keep {0, 2, 3} */
    l3c_sampler *s = make(&p, 4);
    count(s, l, 4, 30000, hits);
    CHECK(hits[1] == 0);
    CHECK(hits[0] > 0 && hits[2] > 0 && hits[3] > 0);
    double f = hits[0] / 30000.0, pe = 0.15 / 0.95, sig = sqrt(pe * (1 - pe) / 30000.0);
    CHECK_NEAR(f, pe, 3 * sig);
    l3c_sampler_free(s);

    p.min_p = 0.61f; /* threshold 0.305: keep {2} only */
    s = make(&p, 4);
    count(s, l, 4, 1000, hits);
    CHECK(hits[2] == 1000);
    l3c_sampler_free(s);
}

static void test_repeat_penalty(void) {
    l3c_sampler_params p = plain(0.0f);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    l3c_sampler *s = make(&p, 8);
    float pos[8] = {2.0f, 1.5f, 0, 0, 0, 0, 0, 0}; /* 2/2 = 1 < 1.5 */
    float neg[8] = {-1.0f, -1.5f, -9, -9, -9, -9, -9, -9}; /* -1*2 = -2 < -1.5 */
    float once[8] = {3.0f, 1.4f, 0, 0, 0, 0, 0, 0};        /* once: 1.5 > 1.4; thrice: 0.375 */
    CHECK(l3c_sampler_sample(s, pos) == 0);
    l3c_sampler_accept(s, 0);
    CHECK(l3c_sampler_sample(s, pos) == 1);
    CHECK(l3c_sampler_sample(s, neg) == 1);
    l3c_sampler_accept(s, 0);
    l3c_sampler_accept(s, 0);
    CHECK(l3c_sampler_sample(s, once) == 0); /* distinct tokens are penalized once */
    /* the window holds the last 3: after three other tokens, 0 is no longer penalized */
    l3c_sampler_accept(s, 5);
    l3c_sampler_accept(s, 6);
    l3c_sampler_accept(s, 7);
    CHECK(l3c_sampler_sample(s, pos) == 0);
    l3c_sampler_accept(s, 0);
    l3c_sampler_reset(s);
    CHECK(l3c_sampler_sample(s, pos) == 0);
    l3c_sampler_free(s);

    /* with temperature: frequencies follow softmax of the penalized logits */
    p = plain(1.0f);
    p.repeat_penalty = 1.5f;
    s = make(&p, 3);
    float l[3] = {1.5f, 1.0f, -0.5f};
    l3c_sampler_accept(s, 0);
    l3c_sampler_accept(s, 2);
    double adj[3] = {1.0, 1.0, -0.75}, z = 0;
    for (int i = 0; i < 3; i++) z += exp(adj[i]);
    int hits[3];
    count(s, l, 3, 30000, hits);
    for (int i = 0; i < 3; i++) {
        double pe = exp(adj[i]) / z, sig = sqrt(pe * (1 - pe) / 30000.0);
        CHECK_NEAR(hits[i] / 30000.0, pe, 3 * sig);
    }
    l3c_sampler_free(s);
}

/* OpenAI presence / frequency penalties vs a reference that recounts the accepted tokens from a
 * plain list at every step: logit[j] -= fp * count[j] + pp * (count[j] > 0), after the
 * repetition penalty. Greedy paths of 300 steps over random logits must pick the reference's
 * argmax at every step where the reference's top-2 gap is not a near tie. */
static void penalized_ref(const float *l, int32_t n, const int32_t *acc, int n_acc, float pp, float fp,
                          float rp, int rlast, double *out) {
    for (int32_t j = 0; j < n; j++) {
        int cnt = 0, recent = 0;
        for (int k = 0; k < n_acc; k++)
            if (acc[k] == j) {
                cnt++;
                if (k >= n_acc - rlast) recent = 1;
            }
        double v = l[j];
        if (recent && rp != 1.0f) v = v > 0 ? v / rp : v * rp;
        out[j] = v - (double)fp * cnt - (cnt > 0 ? (double)pp : 0.0);
    }
}

static void test_presence_frequency(void) {
    enum { N = 64, STEPS = 300 };
    static const float cfg[][3] = {/* presence, frequency, repeat */
                                   {0.0f, 0.35f, 1.0f}, {1.3f, 0.0f, 1.0f},  {0.6f, 0.2f, 1.0f},
                                   {-0.5f, 0.1f, 1.0f}, {0.4f, -0.05f, 1.0f}, {0.5f, 0.25f, 1.3f}};
    float l[N];
    double ref[N];
    int32_t acc[STEPS];
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        l3c_sampler_params p = plain(0.0f);
        p.presence_penalty = cfg[c][0];
        p.frequency_penalty = cfg[c][1];
        p.repeat_penalty = cfg[c][2];
        p.repeat_last_n = 16;
        l3c_sampler *s = make(&p, N);
        int compared = 0, changed = 0;
        for (int t = 0; t < STEPS; t++) {
            fill_logits(l, N, 1000u + (unsigned)t % 7); /* a few logit vectors recur: counts matter */
            penalized_ref(l, N, acc, t, p.presence_penalty, p.frequency_penalty, p.repeat_penalty,
                          p.repeat_last_n, ref);
            int32_t best = 0, second = -1, raw = 0;
            for (int32_t j = 1; j < N; j++) {
                if (ref[j] > ref[best]) {
                    second = best;
                    best = j;
                } else if (second < 0 || ref[j] > ref[second]) {
                    second = j;
                }
                if (l[j] > l[raw]) raw = j;
            }
            int32_t got = l3c_sampler_sample(s, l);
            if (ref[best] - ref[second] > 1e-4) {
                CHECK_MSG(got == best, "config %zu step %d: sampler %d, reference %d", c, t, (int)got, (int)best);
                compared++;
            }
            changed += best != raw;
            l3c_sampler_accept(s, got);
            acc[t] = got;
        }
        CHECK_MSG(compared > STEPS - 5, "config %zu: only %d steps compared", c, compared);
        CHECK_MSG(changed > 10, "config %zu: the penalties changed only %d of %d choices", c, changed, STEPS);
        /* reset forgets the counts */
        l3c_sampler_reset(s);
        fill_logits(l, N, 1000u);
        int32_t raw = 0;
        for (int32_t j = 1; j < N; j++)
            if (l[j] > l[raw]) raw = j;
        CHECK(l3c_sampler_sample(s, l) == raw);
        l3c_sampler_free(s);
    }

    /* exact arithmetic on a small case: token 0 accepted 3 times, token 1 once */
    l3c_sampler_params p = plain(0.0f);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    l3c_sampler *s = make(&p, 3);
    l3c_sampler_accept(s, 0);
    l3c_sampler_accept(s, 1);
    l3c_sampler_accept(s, 0);
    l3c_sampler_accept(s, 0);
    /* 0: 2.3 - 0.75 - 0.5 = 1.05; 1: 1.8 - 0.25 - 0.5 = 1.05 -> tie, lowest id; 2: 1.04 */
    float a[3] = {2.3f, 1.8f, 1.04f};
    CHECK(l3c_sampler_sample(s, a) == 0);
    float b[3] = {2.3f, 1.8f, 1.06f}; /* 2 is not penalized */
    CHECK(l3c_sampler_sample(s, b) == 2);
    float d[3] = {2.3f, 1.9f, 1.06f}; /* 1: 1.15 beats 0: 1.05 */
    CHECK(l3c_sampler_sample(s, d) == 1);
    l3c_sampler_free(s);

    /* with temperature: frequencies follow softmax of the penalized logits */
    p = plain(1.0f);
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.3f;
    p.seed = 4242;
    s = make(&p, 3);
    l3c_sampler_accept(s, 0);
    l3c_sampler_accept(s, 0);
    l3c_sampler_accept(s, 2);
    float l3[3] = {1.5f, 1.0f, -0.5f};
    double adj[3] = {1.5 - 0.6 - 0.4, 1.0, -0.5 - 0.3 - 0.4}, z = 0;
    for (int i = 0; i < 3; i++) z += exp(adj[i]);
    int hits[3];
    count(s, l3, 3, 30000, hits);
    for (int i = 0; i < 3; i++) {
        double pe = exp(adj[i]) / z, sig = sqrt(pe * (1 - pe) / 30000.0);
        CHECK_MSG(fabs(hits[i] / 30000.0 - pe) <= 3 * sig, "token %d: %g vs %g", i, hits[i] / 30000.0, pe);
    }
    l3c_sampler_free(s);

    /* non-finite penalties are refused */
    p = plain(1.0f);
    p.presence_penalty = NAN;
    s = (l3c_sampler *)1;
    CHECK(l3c_sampler_create(&p, 10, &s) == L3C_ERR_INVALID_ARG && s == NULL);
    p.presence_penalty = 0.0f;
    p.frequency_penalty = INFINITY;
    CHECK(l3c_sampler_create(&p, 10, &s) == L3C_ERR_INVALID_ARG && s == NULL);
    CHECK(strstr(l3c_last_error(), "frequency_penalty") != NULL);
}

static void test_frequencies(void) {
    const float l[5] = {0.3f, -1.2f, 1.7f, 0.9f, 0.0f};
    const float temps[2] = {1.0f, 0.6f};
    const int draws = 100000;
    for (int t = 0; t < 2; t++) {
        l3c_sampler_params p = plain(temps[t]);
        p.seed = 99 + (uint64_t)t;
        l3c_sampler *s = make(&p, 5);
        int hits[5];
        count(s, l, 5, draws, hits);
        double z = 0, pe[5];
        for (int i = 0; i < 5; i++) z += pe[i] = exp(l[i] / temps[t]);
        for (int i = 0; i < 5; i++) {
            pe[i] /= z;
            double sig = sqrt(pe[i] * (1 - pe[i]) / draws);
            CHECK_MSG(fabs(hits[i] / (double)draws - pe[i]) <= 3 * sig, "T=%g token %d: %g vs %g (3 sigma %g)",
                      (double)temps[t], i, hits[i] / (double)draws, pe[i], 3 * sig);
        }
        l3c_sampler_free(s);
    }
}

static void test_logit_bias(void) {
    float l[4] = {5.0f, 4.0f, 1.0f, 0.0f};
    l3c_sampler_params p = plain(0.0f);
    l3c_sampler *s = make(&p, 4);
    CHECK(l3c_sampler_set_logit_bias(s, 0, -INFINITY) == L3C_OK);
    CHECK(l3c_sampler_sample(s, l) == 1);
    CHECK(l3c_sampler_set_logit_bias(s, 3, 10.0f) == L3C_OK);
    CHECK(l3c_sampler_sample(s, l) == 3);
    CHECK(l3c_sampler_set_logit_bias(s, 4, 1.0f) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_sampler_set_logit_bias(s, -1, 1.0f) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_sampler_set_logit_bias(s, 1, NAN) == L3C_ERR_INVALID_ARG);
    l3c_sampler_free(s);

    p = plain(2.0f);
    s = make(&p, 4);
    CHECK(l3c_sampler_set_logit_bias(s, 0, -INFINITY) == L3C_OK);
    CHECK(l3c_sampler_set_logit_bias(s, 2, -INFINITY) == L3C_OK);
    int hits[4];
    count(s, l, 4, 5000, hits);
    CHECK(hits[0] == 0 && hits[2] == 0 && hits[1] > 0 && hits[3] > 0);
    l3c_sampler_free(s);
}

static void test_errors(void) {
    l3c_sampler *s = (l3c_sampler *)1;
    l3c_sampler_params p = plain(1.0f);
    CHECK(l3c_sampler_create(&p, 0, &s) == L3C_ERR_INVALID_ARG && s == NULL);
    p.repeat_penalty = 0.0f;
    s = (l3c_sampler *)1;
    CHECK(l3c_sampler_create(&p, 10, &s) == L3C_ERR_INVALID_ARG && s == NULL);
    CHECK(strstr(l3c_last_error(), "repeat_penalty") != NULL);
    l3c_sampler_free(NULL);
    CHECK(l3c_sampler_sample(NULL, NULL) == -1);

    /* every allocation of create fails cleanly (ASan checks for leaks) */
    p = plain(1.0f);
    int failed = 0;
    for (long n = 0; n < 4; n++) {
        l3c_set_alloc_fail_after(n);
        s = (l3c_sampler *)1;
        l3c_status st = l3c_sampler_create(&p, 100, &s);
        l3c_set_alloc_fail_after(-1);
        if (st == L3C_OK) {
            l3c_sampler_free(s);
        } else {
            CHECK(st == L3C_ERR_NOMEM && s == NULL);
            failed++;
        }
    }
    CHECK(failed >= 3);
    /* with the OpenAI penalties on, two more allocations (counts) */
    p.presence_penalty = 0.5f;
    failed = 0;
    for (long n = 0; n < 6; n++) {
        l3c_set_alloc_fail_after(n);
        s = (l3c_sampler *)1;
        l3c_status st = l3c_sampler_create(&p, 100, &s);
        l3c_set_alloc_fail_after(-1);
        if (st == L3C_OK) {
            l3c_sampler_free(s);
        } else {
            CHECK(st == L3C_ERR_NOMEM && s == NULL);
            failed++;
        }
    }
    CHECK(failed >= 5);
}

static void test_large_vocab_speed(void) {
    enum { N = 128256 };
    float *l = malloc(N * sizeof *l);
    CHECK(l != NULL);
    if (!l) return;
    fill_logits(l, N, 3);
    l3c_sampler_params p = l3c_sampler_default_params();
    p.repeat_penalty = 1.1f;
    l3c_sampler *s = make(&p, N);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 100; i++) l3c_sampler_accept(s, l3c_sampler_sample(s, l));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6) / 100;
    fprintf(stderr, "test_sampler: %.3f ms per sample at n_vocab %d (top-k 40)\n", ms, N);
    CHECK_MSG(ms < 25.0, "%.3f ms per sample", ms); /* generous: shared, possibly sanitized CI */
    l3c_sampler_free(s);
    free(l);
}

int main(void) {
    test_greedy();
    test_top_k_one_is_greedy();
    test_top_k_set();
    test_seed_reproducible();
    test_top_p();
    test_min_p();
    test_repeat_penalty();
    test_presence_frequency();
    test_frequencies();
    test_logit_bias();
    test_errors();
    test_large_vocab_speed();
    return CHECK_DONE("test_sampler");
}
