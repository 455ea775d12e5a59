/*
 * logprob.h -- log-probabilities from raw logits, shared by `llama3c perplexity` (apps/cli) and the
 * server's logprobs (apps/server). Built on nothing but libc: logits are n_vocab floats as
 * l3c_get_logits returns them (before any temperature, penalty or bias).
 *
 * All sums run in double: log p_i = logit_i - lp_lse(logits), with
 * lp_lse = max + log(sum_j exp(logit_j - max)).
 */
#ifndef L3C_CLI_LOGPROB_H
#define L3C_CLI_LOGPROB_H

#include <stdint.h>

/* log(sum_j exp(logits[j])) over n logits; *argmax (may be NULL) gets the first largest index. */
double lp_lse(const float *logits, int32_t n, int32_t *argmax);

/* The k (<= n) most probable ids, most probable first (ties: the lower id first), into ids[k]. */
void lp_top_k(const float *logits, int32_t n, int32_t k, int32_t *ids);

#endif
