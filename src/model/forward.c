/*
 * forward.c -- l3c_decode: the llama forward pass over one batch of T tokens that may belong to
 * several sequences, as a fixed sequence of the context's backend ops (backend.h; the CPU one
 * is backend_cpu.c). Activations are row-major [T x n] float32 buffers of the context
 * (l3c_activations); rows are the batch's tokens in order. The sequence, with the op that runs
 * each step and the trace name it reports (docs/ARCHITECTURE.md has the shapes and the trace
 * contract):
 *
 *   x = embd(tokens)                                        get_rows      "embd"
 *   (x from the previous pipeline stage)                    stage
 *   for each layer l the model holds (layer_forward; all but in a pipeline stage):
 *     xb = rmsnorm(x) * attn_norm                           rmsnorm       "attn_norm"
 *     q = xb @ Wq^T, k = xb @ Wk^T, v = xb @ Wv^T           matmul_multi
 *     rope(q), rope(k)                                      rope          "q" "k" "v"
 *     cache[seq][l][pos] = k, v                             kv_store
 *     att_out = softmax(q . K_cache / sqrt(hd)) . V_cache   attention     "attn_scores" "attn_out"
 *     xb2 = att_out @ Wo^T                                  matmul        "attn_proj"
 *     x += xb2                                              add           "ffn_inp"
 *     xb = rmsnorm(x) * ffn_norm                            rmsnorm       "ffn_norm"
 *     hb = xb @ Wgate^T, hb2 = xb @ Wup^T                   matmul_multi  "ffn_gate" "ffn_up"
 *     hb = silu(hb) * hb2                                   swiglu        "ffn_act"
 *     xb2 = hb @ Wdown^T                                    matmul        "ffn_down"
 *     x += xb2                                              add           "l_out"
 *   (x to the next pipeline stage)                          stage
 *   rows = x[requested tokens]                              gather_rows
 *   rows = rmsnorm(rows) * output_norm                      rmsnorm       "result_norm"
 *     (embeddings context: every row is normed, into act.embd, kept and pooled: pooling.c;
 *     the requested rows gathered from it)
 *   logits = rows @ Wout^T                                  matmul        "logits"
 * (Without tracing, the gate/up matmul_multi applies swiglu in the same pass.)
 * LoRA adapters set on the context (l3c_context_set_adapter) add their delta right after the
 * matmul of each adapted matrix: y += scale * (x A^T) B^T (op `lora`; q and k before rope, as
 * their weights' rows are); a layer whose gate or up is adapted does not fuse swiglu.
 *
 * Invariant: a batch is fully validated before anything is written, and seq_len only grows at
 * the end (l3c_kv_cache_commit), so a rejected batch leaves the context unchanged.
 */
#include "model/lora.h"
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

/* 1 when some adapter set on the context adapts (layer l, target t) */
static bool has_lora(const l3c_context *ctx, int32_t l, l3c_lora_target t) {
    for (int i = 0; i < ctx->n_adapters; i++)
        if (l3c_lora_get(ctx->adapters[i].lora, l, t)) return true;
    return false;
}

/* y [T x n_out] += every adapter's delta of (layer l, target t) on x [T x n_in], in the order
 * the adapters were set */
static void lora_deltas(l3c_context *ctx, int32_t l, l3c_lora_target t, const float *x, float *y, int64_t T) {
    for (int i = 0; i < ctx->n_adapters; i++) {
        const l3c_lora_adapter *ad = ctx->adapters[i].lora;
        const l3c_lora_mat *m = l3c_lora_get(ad, l, t);
        if (m)
            ctx->backend->lora(ctx, m->a, m->b, m->rank, m->n_in, m->n_out,
                               ctx->adapters[i].scale * l3c_lora_mat_scale(ad, m), x, y, T);
    }
}

/* One transformer block over the batch: x [T x E] -> x [T x E]; appends the batch's k, v to the
 * layer's cache. */
static void layer_forward(l3c_context *ctx, int32_t l, const l3c_batch *b) {
    const l3c_backend *be = ctx->backend;
    const l3c_config *c = &ctx->model->cfg;
    const l3c_layer *L = &ctx->model->w.layers[l];
    l3c_activations *a = &ctx->act;
    const int64_t T = b->n_tokens, E = c->n_embd, F = c->n_ff;
    const int64_t q_dim = (int64_t)c->n_head * c->head_dim, kv_dim = (int64_t)c->n_head_kv * c->head_dim;

    /* ---- attention block */
    be->rmsnorm(ctx, a->x, L->attn_norm, a->xb, T, E, c->norm_eps);     /* xb [T x E] */
    TRACE("attn_norm", l, a->xb, T, E);
    /* q [T x q_dim], k, v [T x kv_dim]: one pass over xb */
    const l3c_weight *qkv_w[3] = {&L->wq, &L->wk, &L->wv};
    float *const qkv_y[3] = {a->q, a->k, a->v};
    be->matmul_multi(ctx, 3, qkv_w, qkv_y, a->xb, T, false);
    if (ctx->n_adapters) {
        lora_deltas(ctx, l, L3C_LORA_Q, a->xb, a->q, T);
        lora_deltas(ctx, l, L3C_LORA_K, a->xb, a->k, T);
        lora_deltas(ctx, l, L3C_LORA_V, a->xb, a->v, T);
    }
    be->rope(ctx, a->q, T, c->n_head, a->rope_cos, a->rope_sin);
    be->rope(ctx, a->k, T, c->n_head_kv, a->rope_cos, a->rope_sin);
    TRACE("q", l, a->q, T, q_dim);
    TRACE("k", l, a->k, T, kv_dim);
    TRACE("v", l, a->v, T, kv_dim);
    be->kv_store(ctx, l, b, a->k, a->v);                                  /* cache[seq][l][pos] */
    be->attention(ctx, l, b, a->q, a->att_out, a->probs, a->n_kv);        /* att_out [T x q_dim] */
    if (a->probs) TRACE("attn_scores", l, a->probs, c->n_head * T, a->n_kv);
    TRACE("attn_out", l, a->att_out, T, q_dim);
    be->matmul(ctx, &L->wo, a->att_out, a->xb2, T);                       /* xb2 [T x E] */
    if (ctx->n_adapters) lora_deltas(ctx, l, L3C_LORA_O, a->att_out, a->xb2, T);
    TRACE("attn_proj", l, a->xb2, T, E);
    be->add(ctx, a->x, a->xb2, T * E);                                    /* x += xb2 */
    TRACE("ffn_inp", l, a->x, T, E);

    /* ---- feed-forward block (SwiGLU) */
    be->rmsnorm(ctx, a->x, L->ffn_norm, a->xb, T, E, c->norm_eps);      /* xb [T x E] */
    TRACE("ffn_norm", l, a->xb, T, E);
    /* hb = gate, hb2 = up [T x F], one pass over xb; without tracing or LoRA on gate / up the
     * same pass finishes hb = silu(hb) * hb2 (gate and up are not traced then) */
    const l3c_weight *gu_w[2] = {&L->w_gate, &L->w_up};
    float *const gu_y[2] = {a->hb, a->hb2};
    const bool fused = !ctx->trace && !(ctx->n_adapters && (has_lora(ctx, l, L3C_LORA_GATE) ||
                                                             has_lora(ctx, l, L3C_LORA_UP)));
    be->matmul_multi(ctx, 2, gu_w, gu_y, a->xb, T, fused);
    if (!fused) {
        if (ctx->n_adapters) {
            lora_deltas(ctx, l, L3C_LORA_GATE, a->xb, a->hb, T);
            lora_deltas(ctx, l, L3C_LORA_UP, a->xb, a->hb2, T);
        }
        TRACE("ffn_gate", l, a->hb, T, F);
        TRACE("ffn_up", l, a->hb2, T, F);
        be->swiglu(ctx, a->hb, a->hb2, T * F);                            /* hb [T x F] */
    }
    TRACE("ffn_act", l, a->hb, T, F);
    be->matmul(ctx, &L->w_down, a->hb, a->xb2, T);                        /* xb2 [T x E] */
    if (ctx->n_adapters) lora_deltas(ctx, l, L3C_LORA_DOWN, a->hb, a->xb2, T);
    TRACE("ffn_down", l, a->xb2, T, E);
    be->add(ctx, a->x, a->xb2, T * E);                                    /* x += xb2 */
    TRACE("l_out", l, a->x, T, E);
}

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

    be->stage(ctx, 0, a->x, T); /* a pipeline stage: x from the previous one */
    for (int32_t l = ctx->model->layer0; l < ctx->model->layer1; l++) layer_forward(ctx, l, b);
    be->stage(ctx, 1, a->x, T); /* ... and on to the next */

    /* ---- head. Embeddings: every row normed -> embd [T x E], the requested ones gathered into
     * xb2 [n_out x E]; else only the requested rows: gather x rows -> xb [n_out x E], norm -> xb2.
     * Each row is normed alone, so the logits are the same either way. */
    if (ctx->embeddings) {
        be->rmsnorm(ctx, a->x, w->output_norm, a->embd, T, E, c->norm_eps);  /* embd [T x E] */
        TRACE("result_norm", -1, a->embd, T, E);
        if (n_out > 0) be->gather_rows(ctx, a->embd, ctx->out_idx, n_out, E, a->xb2);
    } else if (n_out > 0) {
        be->gather_rows(ctx, a->x, ctx->out_idx, n_out, E, a->xb);
        be->rmsnorm(ctx, a->xb, w->output_norm, a->xb2, n_out, E, c->norm_eps); /* xb2 [n_out x E] */
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
