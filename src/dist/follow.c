/*
 * follow.c -- one context driven from rank 0 (l3c_dist_lead / l3c_dist_follow / l3c_dist_release,
 * llama3c.h): for programs like the server, where only rank 0 knows what to decode next. The
 * leader's context announces each l3c_decode, l3c_kv_seq_truncate and l3c_kv_seq_copy before
 * running it (the context's `mirror` hook); the followers' loop receives the call and makes it on
 * their copy of the context, so every rank runs the same forward passes on the same cache state.
 *
 * Wire format, all broadcast from rank 0: a header int64[6] {what, n_tokens, seq_id, n_keep,
 * has seq_id[], has logits[]} (a copy: {what, dst, src, n, 0, 0}), then for a decode tokens[n],
 * pos[n], seq_id[n]?, logits[n]? . A batch that cannot be announced (NULL arrays, n_tokens
 * outside 1..n_batch) is not: l3c_decode refuses it on rank 0 alone and no rank runs anything.
 */
#include "dist/comm.h"
#include "model/model.h"

#include <string.h>

enum { CALL_STOP = 0, CALL_DECODE = 1, CALL_TRUNCATE = 2, CALL_COPY = 3 };

static void announce(l3c_context *ctx, int what, const l3c_batch *b, int32_t seq, int32_t n_keep) {
    if (what == CALL_DECODE &&
        (!b || !b->tokens || !b->pos || b->n_tokens < 1 || b->n_tokens > ctx->n_batch))
        return;
    const int64_t n = what == CALL_DECODE ? b->n_tokens : 0;
    int64_t h[6] = {
        what, n, seq, n_keep, what == CALL_DECODE && b->seq_id, what == CALL_DECODE && b->logits};
    l3c_comm_bcast(h, sizeof h, 0);
    if (what != CALL_DECODE) return;
    l3c_comm_bcast((void *)b->tokens, (size_t)n * sizeof(int32_t), 0);
    l3c_comm_bcast((void *)b->pos, (size_t)n * sizeof(int32_t), 0);
    if (h[4]) l3c_comm_bcast((void *)b->seq_id, (size_t)n * sizeof(int32_t), 0);
    if (h[5]) l3c_comm_bcast((void *)b->logits, (size_t)n, 0);
}

static void mirror_decode(l3c_context *ctx, const l3c_batch *b) {
    announce(ctx, CALL_DECODE, b, 0, 0);
}

static void mirror_truncate(l3c_context *ctx, int32_t seq, int32_t n_keep) {
    announce(ctx, CALL_TRUNCATE, NULL, seq, n_keep);
}

static void mirror_copy(l3c_context *ctx, int32_t src, int32_t dst, int32_t n) {
    (void)ctx;
    int64_t h[6] = {CALL_COPY, dst, src, n, 0, 0};
    l3c_comm_bcast(h, sizeof h, 0);
}

l3c_status l3c_dist_lead(l3c_context *ctx) {
    if (!ctx) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_dist_lead: NULL context");
    if (l3c_comm_rank() != 0)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_dist_lead: only rank 0 leads");
    if (l3c_comm_size() == 1) return L3C_OK;
    ctx->mirror_decode = mirror_decode;
    ctx->mirror_truncate = mirror_truncate;
    ctx->mirror_copy = mirror_copy;
    return L3C_OK;
}

void l3c_dist_release(l3c_context *ctx) {
    if (!ctx || !ctx->mirror_decode) return;
    ctx->mirror_decode = NULL;
    ctx->mirror_truncate = NULL;
    ctx->mirror_copy = NULL;
    announce(ctx, CALL_STOP, NULL, 0, 0);
}

l3c_status l3c_dist_follow(l3c_context *ctx) {
    if (!ctx) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_dist_follow: NULL context");
    if (l3c_comm_rank() == 0) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_dist_follow: rank 0 leads");
    /* [n_batch] each: the announced batch */
    const size_t cap = (size_t)ctx->n_batch;
    int32_t *tokens = l3c_malloc(cap * sizeof(int32_t)), *pos = l3c_malloc(cap * sizeof(int32_t));
    int32_t *seq = l3c_malloc(cap * sizeof(int32_t));
    int8_t *logits = l3c_malloc(cap);
    l3c_status st = L3C_OK;
    if (!tokens || !pos || !seq || !logits) {
        st = l3c_fail(L3C_ERR_NOMEM, "l3c_dist_follow: out of memory");
        l3c_comm_abort("%s", l3c_last_error());
    }
    for (;;) {
        int64_t h[6];
        l3c_comm_bcast_idle(h, sizeof h, 0); /* rank 0 waits for requests first */
        if (h[0] == CALL_STOP) break;
        if (h[0] == CALL_TRUNCATE) {
            l3c_kv_seq_truncate(ctx, (int32_t)h[2], (int32_t)h[3]); /* fails here as on rank 0 */
            continue;
        }
        if (h[0] == CALL_COPY) {
            l3c_kv_seq_copy(ctx, (int32_t)h[2], (int32_t)h[1], (int32_t)h[3]); /* as on rank 0 */
            continue;
        }
        const int64_t n = h[1];
        if (h[0] != CALL_DECODE || n < 1 || (size_t)n > cap)
            l3c_comm_abort(
                "l3c_dist_follow: unexpected call %lld of %lld tokens from rank 0 (a context of "
                "%d tokens per batch): the ranks' contexts differ",
                (long long)h[0], (long long)n, ctx->n_batch);
        l3c_comm_bcast(tokens, (size_t)n * sizeof(int32_t), 0);
        l3c_comm_bcast(pos, (size_t)n * sizeof(int32_t), 0);
        if (h[4]) l3c_comm_bcast(seq, (size_t)n * sizeof(int32_t), 0);
        if (h[5]) l3c_comm_bcast(logits, (size_t)n, 0);
        l3c_batch b = {.n_tokens = (int32_t)n,
                       .tokens = tokens,
                       .pos = pos,
                       .seq_id = h[4] ? seq : NULL,
                       .logits = h[5] ? logits : NULL};
        l3c_decode(ctx, &b); /* a refusal here is rank 0's too */
    }
    free(tokens);
    free(pos);
    free(seq);
    free(logits);
    return st;
}
