/*
 * forward.c -- l3c_decode: the llama forward pass over one batch of T tokens that may belong to
 * several sequences. Activations are row-major [T x n] float32 buffers owned by the context
 * (context.c); rows are the batch's tokens in order. The op sequence, with the trace name each
 * step reports (docs/ARCHITECTURE.md has the shapes and the trace contract):
 *
 *   x = embd(tokens)                                                   "embd"
 *   for each layer l:
 *     xb = rmsnorm(x) * attn_norm                                      "attn_norm"
 *     q = xb @ Wq^T, k = xb @ Wk^T, v = xb @ Wv^T; rope(q), rope(k)    "q" "k" "v"
 *     cache[seq][l][pos] = k, v
 *     att_out = softmax(q . K_cache / sqrt(hd)) . V_cache  (causal)    "attn_scores" "attn_out"
 *     xb2 = att_out @ Wo^T                                             "attn_proj"
 *     x += xb2                                                         "ffn_inp"
 *     xb = rmsnorm(x) * ffn_norm                                       "ffn_norm"
 *     hb = xb @ Wgate^T, hb2 = xb @ Wup^T                              "ffn_gate" "ffn_up"
 *     hb = silu(hb) * hb2                                              "ffn_act"
 *     xb2 = hb @ Wdown^T                                               "ffn_down"
 *     x += xb2                                                         "l_out"
 *   rows = x[requested tokens]; rows = rmsnorm(rows) * output_norm     "result_norm"
 *   logits = rows @ Wout^T                                             "logits"
 *
 * Invariant: a batch is fully validated before anything is written, and seq_len only grows at
 * the end, so a rejected batch leaves the context unchanged.
 */
#include "model/model.h"

#include <math.h>
#include <string.h>

#define TRACE(op, layer, data, rows, cols)                                                   \
    do {                                                                                     \
        if (ctx->trace) ctx->trace(ctx->trace_user, op, layer, data, (int64_t)(rows), (int64_t)(cols)); \
    } while (0)

/* ---------------------------------------------------------------- attention */

typedef struct attn_job {
    l3c_context *ctx;
    const l3c_batch *b;
    int32_t layer;
    float *probs;   /* tracing: [n_head * T x n_kv], row h*T + t; NULL otherwise */
    int64_t n_kv;   /* columns of probs */
    int64_t block0;   /* first token block of this job */
    int64_t n_blocks; /* token blocks of L3C_ATT_TOKENS in this job */
    const l3c_type_traits *kv_tr;
} attn_job;

static inline int32_t seq_of(const l3c_batch *b, int64_t t) { return b->seq_id ? b->seq_id[t] : 0; }

/*
 * Query head h for the batch tokens [a, e), which all belong to sequence s and have increasing
 * positions (the batch validation guarantees it): att_out[t, h] = softmax(q . K / sqrt(hd)) . V
 * over positions 0..pos[t] (causal). Scores of the whole run are one gemm of the F16/F32 K rows
 * with the float queries (the cache is read in place, converted in registers); the masked
 * upper triangle inside the run is computed and ignored. V rows are converted once per
 * position and accumulated into every token of the run that sees them.
 */
static void attend_run(const attn_job *job, int h, int64_t a, int64_t e, int ith) {
    l3c_context *ctx = job->ctx;
    const l3c_batch *b = job->b;
    const l3c_config *c = &ctx->model->cfg;
    const l3c_type_traits *tr = job->kv_tr;
    const int64_t T = b->n_tokens, hd = c->head_dim, q_dim = (int64_t)c->n_head * hd;
    const int kvh = h / (c->n_head / c->n_head_kv);
    const int32_t s = seq_of(b, a), n_pos_max = b->pos[e - 1] + 1;
    const float scale = 1.0f / sqrtf((float)hd);
    const int64_t ld = ctx->n_ctx;
    float *S = ctx->act.att + (int64_t)ith * L3C_ATT_TOKENS * ld; /* [e - a x n_ctx] scores */
    float *tmp = ctx->act.kv_tmp + (int64_t)ith * hd * L3C_ATT_ROWS; /* [L3C_ATT_ROWS x hd] converted rows */
    const l3c_kv_cache *kv = &ctx->kv;
    const size_t row_bytes = kv->row_bytes;
    const uint8_t *kbase = l3c_kv_cache_row(kv, kv->k, s, job->layer, 0) + (size_t)kvh * kv->head_bytes;
    const uint8_t *vbase = l3c_kv_cache_row(kv, kv->v, s, job->layer, 0) + (size_t)kvh * kv->head_bytes;
    const float *q0 = ctx->act.q + a * q_dim + h * hd;

    /* scores S[t - a][p] = q_t . k_p */
    if (tr->vec_dot_type == L3C_TYPE_F32 && tr->gemm) {
        tr->gemm(hd, n_pos_max, e - a, S, ld, kbase, row_bytes, q0, (size_t)q_dim * sizeof(float));
    } else if (tr->vec_dot_type == L3C_TYPE_F32) {
        for (int64_t t = a; t < e; t++)
            for (int32_t p = 0; p <= b->pos[t]; p++)
                tr->vec_dot(hd, &S[(t - a) * ld + p], kbase + (size_t)p * row_bytes, q0 + (t - a) * q_dim);
    } else { /* quantized cache: dequantize each K row */
        for (int32_t p = 0; p < n_pos_max; p++) {
            tr->to_float(kbase + (size_t)p * row_bytes, tmp, hd);
            for (int64_t t = a; t < e; t++) {
                if (p > b->pos[t]) continue;
                const float *qh = q0 + (t - a) * q_dim;
                float dot = 0.0f;
                for (int64_t i = 0; i < hd; i++) dot += qh[i] * tmp[i];
                S[(t - a) * ld + p] = dot;
            }
        }
    }
    for (int64_t t = a; t < e; t++) {
        float *st = S + (t - a) * ld;
        const int32_t n_pos = b->pos[t] + 1;
        for (int32_t p = 0; p < n_pos; p++) st[p] *= scale;
        l3c_softmax(st, n_pos);
        if (job->probs) memcpy(job->probs + ((int64_t)h * T + t) * job->n_kv, st, (size_t)n_pos * sizeof(float));
        memset(ctx->act.att_out + t * q_dim + h * hd, 0, (size_t)hd * sizeof(float));
    }

    /* att_out[t, h] = sum_p S[t - a][p] * v_p, in blocks of L3C_ATT_ROWS rows of V converted
     * once for every query (l3c_axpy_rows: the same sums as one axpy per row) */
    const bool f32 = kv->type == L3C_KV_F32;
    for (int32_t p0 = 0; p0 < n_pos_max; p0 += L3C_ATT_ROWS) {
        const int32_t p1 = L3C_MIN(p0 + L3C_ATT_ROWS, n_pos_max);
        const float *vp = (const float *)(vbase + (size_t)p0 * row_bytes);
        int64_t ldv = (int64_t)(row_bytes / sizeof(float));
        if (!f32) {
            for (int32_t p = p0; p < p1; p++)
                tr->to_float(vbase + (size_t)p * row_bytes, tmp + (p - p0) * hd, hd);
            vp = tmp;
            ldv = hd;
        }
        for (int64_t t = a; t < e; t++) {
            const int32_t n = L3C_MIN(p1, b->pos[t] + 1) - p0;
            if (n > 0) l3c_axpy_rows(ctx->act.att_out + t * q_dim + h * hd, S + (t - a) * ld + p0, vp, ldv, n, hd);
        }
    }
}

/* One chunk = one query head x one block of L3C_ATT_TOKENS batch tokens, split into runs of the
 * same sequence. Block boundaries do not depend on the thread count, so neither do results.
 * GQA: head h reads kv head h / (n_head / n_head_kv). */
static void attn_chunk(void *arg, int64_t chunk, int ith) {
    const attn_job *job = arg;
    const l3c_batch *b = job->b;
    const int h = (int)(chunk / job->n_blocks);
    const int64_t t0 = (job->block0 + chunk % job->n_blocks) * L3C_ATT_TOKENS;
    const int64_t t1 = L3C_MIN(t0 + L3C_ATT_TOKENS, (int64_t)b->n_tokens);
    for (int64_t a = t0; a < t1;) {
        int64_t e = a + 1;
        while (e < t1 && seq_of(b, e) == seq_of(b, a)) e++;
        attend_run(job, h, a, e, ith);
        a = e;
    }
}

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
    ctx->n_out = 0;
    ctx->last_n_tokens = 0;
    l3c_status st = validate(ctx, b);
    if (st != L3C_OK) return st;

    const l3c_model *m = ctx->model;
    const l3c_config *c = &m->cfg;
    const l3c_weights *w = &m->w;
    const int64_t T = b->n_tokens, E = c->n_embd, F = c->n_ff, hd = c->head_dim;
    const int64_t q_dim = (int64_t)c->n_head * hd, kv_dim = (int64_t)c->n_head_kv * hd;
    l3c_threadpool *tp = ctx->tp;
    const l3c_type_traits *kv_tr = l3c_type_traits_get(ctx->kv.elem_type);

    /* which rows get logits: batch->logits, or only the last token */
    int32_t n_out = 0;
    for (int32_t i = 0; i < T; i++) {
        int want = b->logits ? b->logits[i] != 0 : i == T - 1;
        ctx->out_row[i] = want ? n_out : -1;
        if (want) ctx->out_idx[n_out++] = i;
    }

    /* tracing "attn_scores" needs every head's probabilities at once: the one allocation that
     * decode makes, and only while tracing */
    float *probs = NULL;
    int64_t n_kv = 0;
    if (ctx->trace) {
        for (int32_t i = 0; i < T; i++) n_kv = L3C_MAX(n_kv, (int64_t)b->pos[i] + 1);
        probs = l3c_calloc((size_t)(c->n_head * T), (size_t)n_kv * sizeof(float));
        if (!probs)
            return l3c_fail(L3C_ERR_NOMEM, "decode: out of memory for the attn_scores trace "
                                           "(%lld x %lld)", (long long)(c->n_head * T), (long long)n_kv);
    }

    l3c_rope_tables(ctx->act.inv_freq, c->n_rot, b->pos, T, ctx->act.rope_cos, ctx->act.rope_sin);

    /* x [T x E] = token embeddings */
    for (int64_t t = 0; t < T; t++) l3c_get_row(&w->tok_embd, b->tokens[t], ctx->act.x + t * E);
    TRACE("embd", -1, ctx->act.x, T, E);

    for (int32_t l = 0; l < c->n_layer; l++) {
        const l3c_layer *L = &w->layers[l];

        /* ---- attention block */
        l3c_rmsnorm(ctx->act.x, L->attn_norm, ctx->act.xb, T, E, c->norm_eps); /* xb [T x E] */
        TRACE("attn_norm", l, ctx->act.xb, T, E);

        /* q [T x n_head*hd], k, v [T x n_head_kv*hd]: one job, xb quantized once */
        const l3c_weight *qkv_w[3] = {&L->wq, &L->wk, &L->wv};
        float *const qkv_y[3] = {ctx->act.q, ctx->act.k, ctx->act.v};
        l3c_matmul_multi(tp, 3, qkv_w, qkv_y, ctx->act.xb, T, ctx->act.scratch, false);
        l3c_rope_apply(ctx->act.q, T, c->n_head, (int)hd, c->n_rot, ctx->act.rope_cos, ctx->act.rope_sin);
        l3c_rope_apply(ctx->act.k, T, c->n_head_kv, (int)hd, c->n_rot, ctx->act.rope_cos, ctx->act.rope_sin);
        TRACE("q", l, ctx->act.q, T, q_dim);
        TRACE("k", l, ctx->act.k, T, kv_dim);
        TRACE("v", l, ctx->act.v, T, kv_dim);

        l3c_kv_cache_store(&ctx->kv, l, ctx->act.k, ctx->act.v, T, b->seq_id, b->pos, c->n_head_kv, hd);
        /* att_out [T x q_dim]; one job unless the batch has more blocks than a job has chunks */
        const int64_t n_blocks = l3c_n_chunks(T, L3C_ATT_TOKENS), per_job = L3C_MAX_CHUNKS / c->n_head;
        for (int64_t b0 = 0; b0 < n_blocks; b0 += per_job) {
            attn_job job = {.ctx = ctx, .b = b, .layer = l, .probs = probs, .n_kv = n_kv,
                            .block0 = b0, .n_blocks = L3C_MIN(per_job, n_blocks - b0), .kv_tr = kv_tr};
            l3c_threadpool_run(tp, c->n_head * job.n_blocks, attn_chunk, &job);
        }
        if (probs) TRACE("attn_scores", l, probs, c->n_head * T, n_kv);
        TRACE("attn_out", l, ctx->act.att_out, T, q_dim);

        l3c_matmul(tp, &L->wo, ctx->act.att_out, ctx->act.xb2, T, ctx->act.scratch); /* xb2 [T x E] */
        TRACE("attn_proj", l, ctx->act.xb2, T, E);
        l3c_add(ctx->act.x, ctx->act.xb2, T * E);
        TRACE("ffn_inp", l, ctx->act.x, T, E);

        /* ---- feed-forward block (SwiGLU) */
        l3c_rmsnorm(ctx->act.x, L->ffn_norm, ctx->act.xb, T, E, c->norm_eps); /* xb [T x E] */
        TRACE("ffn_norm", l, ctx->act.xb, T, E);
        /* hb [T x F] = gate, hb2 [T x F] = up, one job; without tracing the same chunks
         * finish hb = silu(hb) * hb2 */
        const l3c_weight *gu_w[2] = {&L->w_gate, &L->w_up};
        float *const gu_y[2] = {ctx->act.hb, ctx->act.hb2};
        l3c_matmul_multi(tp, 2, gu_w, gu_y, ctx->act.xb, T, ctx->act.scratch, !ctx->trace);
        if (ctx->trace) {
            TRACE("ffn_gate", l, ctx->act.hb, T, F);
            TRACE("ffn_up", l, ctx->act.hb2, T, F);
            l3c_swiglu(ctx->act.hb, ctx->act.hb2, T * F);
        }
        TRACE("ffn_act", l, ctx->act.hb, T, F);
        l3c_matmul(tp, &L->w_down, ctx->act.hb, ctx->act.xb2, T, ctx->act.scratch); /* xb2 [T x E] */
        TRACE("ffn_down", l, ctx->act.xb2, T, E);
        l3c_add(ctx->act.x, ctx->act.xb2, T * E);
        TRACE("l_out", l, ctx->act.x, T, E);
    }

    /* ---- head, only for the requested rows: gather x rows -> xb [n_out x E] */
    if (n_out > 0) {
        for (int32_t r = 0; r < n_out; r++)
            memcpy(ctx->act.xb + (int64_t)r * E, ctx->act.x + (int64_t)ctx->out_idx[r] * E,
                   (size_t)E * sizeof(float));
        l3c_rmsnorm(ctx->act.xb, w->output_norm, ctx->act.xb2, n_out, E, c->norm_eps); /* xb2 [n_out x E] */
        TRACE("result_norm", -1, ctx->act.xb2, n_out, E);
        l3c_matmul(tp, &w->output, ctx->act.xb2, ctx->act.logits, n_out, ctx->act.scratch); /* [n_out x n_vocab] */
        TRACE("logits", -1, ctx->act.logits, n_out, c->n_vocab);
    }

    free(probs);
    l3c_kv_cache_commit(&ctx->kv);
    ctx->n_out = n_out;
    ctx->last_n_tokens = (int32_t)T;
    return L3C_OK;
}

const float *l3c_get_logits(const l3c_context *ctx, int32_t i) {
    if (!ctx || i < 0 || i >= ctx->last_n_tokens || ctx->out_row[i] < 0) return NULL;
    return ctx->act.logits + (int64_t)ctx->out_row[i] * ctx->model->cfg.n_vocab;
}
