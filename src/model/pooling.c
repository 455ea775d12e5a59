/*
 * pooling.c -- embeddings of an l3c_context created with embeddings = 1: per-token vectors (the
 * final-normed hidden state, ctx->act.embd, written by l3c_decode) and their pooling per sequence.
 *
 * Invariants
 *  - embd_n[s] == seq_len[s] whenever embd_n[s] >= 0: the pooled state of sequence s covers
 *    exactly the tokens in its cache, positions 0 .. seq_len - 1, however many batches fed them.
 *    A partial truncation cannot be undone from a sum, so it sets embd_n[s] = -1 (unknown) until
 *    the sequence is cleared; clearing (or a token at position 0) resets it.
 *  - The state is extended token by token in batch order, which within a sequence is position
 *    order, in double: the same additions in the same order whatever the batching, so the pooled
 *    vector is as batch invariant as the token vectors themselves.
 *  - embd_acc holds raw (unnormalized) rows; normalization applies only to returned vectors.
 */
#include "model/model.h"

#include <math.h>
#include <string.h>

/* v [n] /= ||v||_2 (left alone when zero). */
static void normalize(float *v, int64_t n) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)v[i] * v[i];
    if (ss <= 0.0) return;
    const double inv = 1.0 / sqrt(ss);
    for (int64_t i = 0; i < n; i++) v[i] = (float)(v[i] * inv);
}

void l3c_pool_batch(l3c_context *ctx, const l3c_batch *b) {
    const int64_t E = ctx->model->cfg.n_embd, T = b->n_tokens;
    if (ctx->pooling != L3C_POOLING_NONE) {
        for (int64_t t = 0; t < T; t++) {
            const int32_t s = b->seq_id ? b->seq_id[t] : 0;
            const float *row = ctx->act.embd + t * E;
            double *acc = ctx->embd_acc + (int64_t)s * E;
            if (b->pos[t] == 0) ctx->embd_n[s] = 0;
            if (ctx->embd_n[s] < 0) continue; /* unknown since a partial truncation */
            if (ctx->pooling == L3C_POOLING_MEAN && ctx->embd_n[s] > 0) {
                for (int64_t i = 0; i < E; i++) acc[i] += row[i];
            } else if (ctx->pooling != L3C_POOLING_CLS || ctx->embd_n[s] == 0) {
                for (int64_t i = 0; i < E; i++) acc[i] = row[i]; /* MEAN / CLS start, LAST */
            }
            ctx->embd_n[s]++;
        }
        /* the pooled vector of each sequence in this batch, at its last token here (seq_len is
         * already the new length) */
        for (int64_t t = 0; t < T; t++) {
            const int32_t s = b->seq_id ? b->seq_id[t] : 0;
            if (b->pos[t] != ctx->kv.seq_len[s] - 1 || ctx->embd_n[s] <= 0) continue;
            const double *acc = ctx->embd_acc + (int64_t)s * E;
            float *out = ctx->embd_seq + (int64_t)s * E;
            const double scale = ctx->pooling == L3C_POOLING_MEAN ? 1.0 / ctx->embd_n[s] : 1.0;
            for (int64_t i = 0; i < E; i++) out[i] = (float)(acc[i] * scale);
            if (ctx->embd_normalize) normalize(out, E);
        }
    }
    if (ctx->embd_normalize)
        for (int64_t t = 0; t < T; t++) normalize(ctx->act.embd + t * E, E);
}

void l3c_pool_truncate(l3c_context *ctx, int32_t seq, int32_t n_keep) {
    if (!ctx->embd_n) return;
    ctx->embd_n[seq] = n_keep == 0 ? 0 : -1;
}

const float *l3c_get_embeddings(const l3c_context *ctx, int32_t i) {
    if (!ctx || !ctx->act.embd || i < 0 || i >= ctx->last_n_tokens) return NULL;
    return ctx->act.embd + (int64_t)i * ctx->model->cfg.n_embd;
}

const float *l3c_get_embeddings_seq(const l3c_context *ctx, int32_t seq_id) {
    if (!ctx || !ctx->act.embd || ctx->pooling == L3C_POOLING_NONE || seq_id < 0 || seq_id >= ctx->n_seq)
        return NULL;
    if (ctx->embd_n[seq_id] <= 0 || ctx->embd_n[seq_id] != ctx->kv.seq_len[seq_id]) return NULL;
    return ctx->embd_seq + (int64_t)seq_id * ctx->model->cfg.n_embd;
}
