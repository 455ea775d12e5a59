/*
 * test_logprob.c -- apps/cli/logprob.c (log-sum-exp and top-k of a logit row, used by
 * `llama3c perplexity` and the server's logprobs) against naive long-double references: random
 * rows of odd sizes, huge and tiny logits (no overflow), ties (the lower id first), k = 0, 1, n
 * and k > n.
 */
#include "check.h"

#include "../../apps/cli/logprob.c"

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double uniform(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static long double naive_lse(const float *x, int32_t n) {
    long double mx = x[0], s = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    for (int32_t i = 0; i < n; i++)
        s += expl((long double)x[i] - mx);
    return mx + logl(s);
}

/* a ranks before b in the expected order */
static int ranks_before(const float *x, int32_t a, int32_t b) {
    return x[a] > x[b] || (x[a] == x[b] && a < b);
}

static void check_top_k(const float *x, int32_t n, int32_t k) {
    int32_t ids[64];
    for (int32_t i = 0; i < 64; i++)
        ids[i] = -7;
    lp_top_k(x, n, k, ids);
    int32_t m = k < n ? k : n;
    if (m < 0) m = 0;
    for (int32_t j = 0; j < m; j++) {
        CHECK_MSG(ids[j] >= 0 && ids[j] < n, "n %d k %d: ids[%d] = %d", n, k, j, ids[j]);
        if (ids[j] < 0 || ids[j] >= n) return;
        if (j) CHECK_MSG(ranks_before(x, ids[j - 1], ids[j]), "n %d k %d: order at %d", n, k, j);
        /* exactly j tokens rank before ids[j] */
        int32_t before = 0;
        for (int32_t i = 0; i < n; i++)
            before += ranks_before(x, i, ids[j]);
        CHECK_MSG(before == j, "n %d k %d: ids[%d] = %d has %d before it", n, k, j, ids[j], before);
    }
    CHECK_MSG(ids[m] == -7, "n %d k %d: wrote past k", n, k); /* nothing beyond the k asked for */
}

int main(void) {
    static float x[5000];
    const int32_t sizes[] = {1, 2, 3, 7, 31, 320, 4999};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int32_t n = sizes[s];
        for (int rep = 0; rep < 4; rep++) {
            const double scale = rep == 0 ? 1 : rep == 1 ? 30 : rep == 2 ? 1e-3 : 200;
            const double shift = rep == 3   ? 1e4
                                 : rep == 1 ? -500
                                            : 0; /* exp would overflow / underflow */
            for (int32_t i = 0; i < n; i++) {
                x[i] = (float)(shift + scale * (uniform() - 0.5));
                if (rep == 2 && i % 3 == 0) x[i] = x[i / 2]; /* ties */
            }
            int32_t arg = -1;
            const double got = lp_lse(x, n, &arg);
            const long double want = naive_lse(x, n);
            CHECK_NEAR(got, (double)want, 1e-12 * (1 + fabsl(want)) + 1e-12);
            int32_t first_max = 0;
            for (int32_t i = 1; i < n; i++)
                if (x[i] > x[first_max]) first_max = i;
            CHECK(arg == first_max);
            const int32_t ks[] = {0, 1, 5, 20, n, n + 3};
            for (size_t k = 0; k < sizeof ks / sizeof *ks; k++)
                if (ks[k] < 64) check_top_k(x, n, ks[k]);
        }
    }
    /* all equal: the first k ids, in order */
    for (int32_t i = 0; i < 40; i++)
        x[i] = 2.5f;
    int32_t ids[8];
    lp_top_k(x, 40, 8, ids);
    for (int32_t j = 0; j < 8; j++)
        CHECK(ids[j] == j);
    CHECK_NEAR(lp_lse(x, 40, NULL), 2.5 + log(40.0), 1e-12);
    return CHECK_DONE("test_logprob");
}
