/*
 * forward.c -- l3c_decode: the llama forward pass over one batch of T tokens that may belong to
 * several sequences, as a fixed sequence of the context's backend ops (backend.h; the CPU one
 * is backend_cpu.c). Activations are row-major [T x n] float32 buffers of the context
 * (l3c_activations); rows are the batch's tokens in order. The sequence, with the op that runs
 * each step and the trace name it reports (docs/ARCHITECTURE.md has the shapes and the trace
 * contract):
 *
 *   x = embd(tokens)                                        get_rows      "embd"
 *   for each micro-batch of rows (stage_rows; the whole batch but in a pipeline):
 *     (its x rows from the previous pipeline stage)         stage
 *     for each layer l the model holds (all but in a pipeline stage):
 *       x = block(x)                        l3c_block_forward (block.c: the block's op sequence,
 *                                           rmsnorm .. add, with its trace names; LoRA deltas)
 *     (its x rows to the next pipeline stage)               stage
 *   rows = x[requested tokens]                              gather_rows
 *   rows = rmsnorm(rows) * output_norm                      rmsnorm       "result_norm"
 *     (embeddings context: every row is normed, into act.embd, kept and pooled: pooling.c;
 *     the requested rows gathered from it)
 *   logits = rows @ Wout^T                                  matmul        "logits"
 * The block is the one definition training runs too (src/train/train_model.c, its own
 * backend table); decode hands it one in-place buffer set (see the bufs below).
 *
 * Invariant: a batch is fully validated before anything is written, and seq_len only grows at
 * the end (l3c_kv_cache_commit), so a rejected batch leaves the context unchanged.
 */
#include "model/block.h"
#include "model/model.h"

#include <string.h>

#define TRACE(op, layer, data, rows, cols)                                                   \
    do {                                                                                     \
        if (ctx->trace) ctx->trace(ctx->trace_user, op, layer, data, (int64_t)(rows), (int64_t)(cols)); \
    } while (0)

/* ---------------------------------------------------------------- batch validation */

static l3c_status validate(l3c_context *ctx, const l3c_batch *b) {
    if (!b || !b->tokens || !b->pos)
        return l3c_fail(L3C_ERR_INVALID_ARG, "decode: batch or its tokens / pos is NULL");
    if (b->n_tokens < 1 || b->n_tokens > ctx->n_batch)
        return l3c_fail(L3C_ERR_INVALID_ARG, "decode: batch has %d tokens; allowed 1..%d (n_batch)",
                        b->n_tokens, ctx->n_batch);
    const int32_t n_vocab = ctx->model->cfg.n_vocab;
    int32_t *seq_next = ctx->kv.seq_next;
    memcpy(seq_next, ctx->kv.seq_len, (size_t)ctx->n_seq * sizeof(int32_t));
    for (int32_t i = 0; i < b->n_tokens; i++) {
        int32_t s = b->seq_id ? b->seq_id[i] : 0;
        if (s < 0 || s >= ctx->n_seq)
            return l3c_fail(L3C_ERR_INVALID_ARG, "decode: token %d: seq_id %d out of range [0, %d)",
                            i, s, ctx->n_seq);
        if (b->tokens[i] < 0 || b->tokens[i] >= n_vocab)
            return l3c_fail(L3C_ERR_INVALID_ARG, "decode: token %d: id %d out of range [0, %d)", i,
                            b->tokens[i], n_vocab);
        if (b->pos[i] != seq_next[s])
            return l3c_fail(L3C_ERR_INVALID_ARG, "decode: token %d: pos %d, but sequence %d continues "
                                                 "at position %d", i, b->pos[i], s, seq_next[s]);
        if (b->pos[i] >= ctx->n_ctx)
            return l3c_fail(L3C_ERR_CONTEXT_FULL, "decode: token %d: sequence %d is full (n_ctx %d)",
                            i, s, ctx->n_ctx);
        seq_next[s]++;
    }
    return L3C_OK;
}

/* ---------------------------------------------------------------- the forward pass */

l3c_status l3c_decode(l3c_context *ctx, const l3c_batch *b) {
    if (!ctx) return l3c_fail(L3C_ERR_INVALID_ARG, "decode: NULL context");
    if (ctx->mirror_decode) ctx->mirror_decode(ctx, b); /* a led context: the followers do the same */
    ctx->n_out = 0;
    ctx->last_n_tokens = 0;
    l3c_status st = validate(ctx, b);
    if (st != L3C_OK) return st;

    const l3c_backend *be = ctx->backend;
    const l3c_config *c = &ctx->model->cfg;
    const l3c_weights *w = &ctx->model->w;
    l3c_activations *a = &ctx->act;
    const int64_t T = b->n_tokens, E = c->n_embd;

    /* which rows get logits: batch->logits, or only the last token */
    int32_t n_out = 0;
    for (int32_t i = 0; i < T; i++) {
        int want = b->logits ? b->logits[i] != 0 : i == T - 1 && !ctx->embeddings;
        ctx->out_row[i] = want ? n_out : -1;
        if (want) ctx->out_idx[n_out++] = i;
    }

    /* tracing "attn_scores" needs every head's probabilities at once: the one allocation that
     * decode makes, and only while tracing */
    a->probs = NULL;
    a->n_kv = 0;
    if (ctx->trace) {
        for (int32_t i = 0; i < T; i++) a->n_kv = L3C_MAX(a->n_kv, (int64_t)b->pos[i] + 1);
        a->probs = l3c_calloc((size_t)(c->n_head * T), (size_t)a->n_kv * sizeof(float));
        if (!a->probs)
            return l3c_fail(L3C_ERR_NOMEM, "decode: out of memory for the attn_scores trace "
                                           "(%lld x %lld)", (long long)(c->n_head * T), (long long)a->n_kv);
    }

    be->rope_tables(ctx, b->pos, T, a->rope_cos, a->rope_sin);          /* [T x n_rot/2] */

    be->get_rows(ctx, &w->tok_embd, b->tokens, T, a->x);                  /* x [T x E] */
    TRACE("embd", -1, a->x, T, E);

    /* the block's buffers: one residual stream x updated in place, xb for both norms, hb for
     * gate and silu(gate) * up (so the gate / up matmul may finish swiglu), xb2 the projections */
    const l3c_block_bufs bufs = {.x_in = a->x,
                                 .x_mid = a->x,
                                 .x_out = a->x,
                                 .xn1 = a->xb,
                                 .xn2 = a->xb,
                                 .q = a->q,
                                 .k = a->k,
                                 .v = a->v,
                                 .att_out = a->att_out,
                                 .proj = a->xb2,
                                 .g = a->hb,
                                 .u = a->hb2,
                                 .h = a->hb,
                                 .rope_cos = a->rope_cos,
                                 .rope_sin = a->rope_sin,
                                 .probs = a->probs,
                                 .n_kv = a->n_kv};
    /* the layers, one micro-batch (consecutive tokens [t0, t0 + n)) at a time: the whole batch
     * on one process; in a pipeline, stage r works on micro-batch m while stage r+1 works on
     * m-1. Each stage takes them in order, so a sequence's earlier tokens are in the stage's KV
     * cache before its later ones attend to them. Tracing keeps whole-batch tensors. */
    const int64_t ub = ctx->trace ? T : L3C_MAX(1, be->stage_rows(ctx, T));
    const int64_t half_rot = c->n_rot / 2;
    for (int64_t t0 = 0; t0 < T; t0 += ub) {
        const int64_t n = L3C_MIN(ub, T - t0);
        const l3c_batch mb = {.n_tokens = (int32_t)n,
                              .tokens = b->tokens + t0,
                              .pos = b->pos + t0,
                              .seq_id = b->seq_id ? b->seq_id + t0 : NULL,
                              .logits = b->logits ? b->logits + t0 : NULL};
        l3c_block_bufs mbufs = bufs;
        mbufs.x_in = mbufs.x_mid = mbufs.x_out = a->x + t0 * E;
        mbufs.rope_cos = a->rope_cos + t0 * half_rot;
        mbufs.rope_sin = a->rope_sin + t0 * half_rot;
        be->stage(ctx, 0, a->x, t0, n, T); /* a pipeline stage: rows from the previous one */
        for (int32_t l = ctx->model->layer0; l < ctx->model->layer1; l++)
            l3c_block_forward(ctx, l, &mb, &mbufs);
        be->stage(ctx, 1, a->x, t0, n, T); /* ... and on to the next */
    }

    /* ---- head. Embeddings: every row normed -> embd [T x E], the requested ones gathered into
     * xb2 [n_out x E]; else only the requested rows: gather x rows -> xb [n_out x E], norm -> xb2.
     * Each row is normed alone, so the logits are the same either way. */
    if (ctx->embeddings) {
        be->rmsnorm(ctx, a->x, w->output_norm, a->embd, NULL, T, E, c->norm_eps); /* embd [T x E] */
        TRACE("result_norm", -1, a->embd, T, E);
        if (n_out > 0) be->gather_rows(ctx, a->embd, ctx->out_idx, n_out, E, a->xb2);
    } else if (n_out > 0) {
        be->gather_rows(ctx, a->x, ctx->out_idx, n_out, E, a->xb);
        be->rmsnorm(ctx, a->xb, w->output_norm, a->xb2, NULL, n_out, E,
                    c->norm_eps); /* xb2 [n_out x E] */
        TRACE("result_norm", -1, a->xb2, n_out, E);
    }
    if (n_out > 0) {
        be->matmul(ctx, &w->output, a->xb2, a->logits, n_out);               /* [n_out x n_vocab] */
        TRACE("logits", -1, a->logits, n_out, c->n_vocab);
    }

    free(a->probs);
    a->probs = NULL;
    l3c_kv_cache_commit(&ctx->kv);
    if (ctx->embeddings) l3c_pool_batch(ctx, b); /* pooling.c */
    ctx->n_out = n_out;
    ctx->last_n_tokens = (int32_t)T;
    return L3C_OK;
}

const float *l3c_get_logits(const l3c_context *ctx, int32_t i) {
    if (!ctx || i < 0 || i >= ctx->last_n_tokens || ctx->out_row[i] < 0) return NULL;
    return ctx->act.logits + (int64_t)ctx->out_row[i] * ctx->model->cfg.n_vocab;
}
