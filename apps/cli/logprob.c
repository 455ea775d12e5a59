/*
 * logprob.c -- log-sum-exp and top-k of a logit row (see logprob.h).
 */
#include "logprob.h"

#include <math.h>

double lp_lse(const float *logits, int32_t n, int32_t *argmax) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    const double mx = logits[best];
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)logits[i] - mx);
    if (argmax) *argmax = best;
    return mx + log(sum);
}

/* a ranks before b: larger logit, or equal logit and lower id. */
static int before(const float *lg, int32_t a, int32_t b) {
    return lg[a] > lg[b] || (lg[a] == lg[b] && a < b);
}

void lp_top_k(const float *logits, int32_t n, int32_t k, int32_t *ids) {
    if (k > n) k = n;
    if (k <= 0) return;
    int32_t m = 0; /* ids[0..m) sorted, best first; insertion keeps the k best (k is small) */
    for (int32_t i = 0; i < n; i++) {
        if (m == k && !before(logits, i, ids[m - 1])) continue;
        int32_t j = m < k ? m++ : k - 1;
        while (j > 0 && before(logits, i, ids[j - 1])) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
}
