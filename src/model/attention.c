/*
 * attention.c -- the CPU backend's attention op: causal, GQA, over the KV cache (which already
 * holds the batch's own keys / values, so prompt and token-by-token decoding read the same
 * rounded values). Two paths, each batch invariant (a token's output does not depend on the
 * other tokens of its batch):
 *  - AVX-512 (l3c_attn_rows_fast): parallel over (KV head, block of tokens); the query heads of
 *    one KV head for a block of tokens (up to L3C_ATT_QROWS rows) are one l3c_attn_rows call,
 *    so each key / value row is read and converted once for all of them (ops.h).
 *  - otherwise: parallel over (query head, block of L3C_ATT_TOKENS tokens): scores as one gemm
 *    per head, l3c_softmax, V rows accumulated with l3c_axpy_rows.
 * Workspace: act.att (scores and l3c_attn_rows' work) and act.kv_tmp (converted rows), per thread.
 */
#include "model/model.h"

#include <math.h>
#include <string.h>

typedef struct attn_job {
    l3c_context *ctx;
    const l3c_batch *b;
    int32_t layer;
    const float *q; /* [T x n_head*hd] */
    float *out;     /* [T x n_head*hd] */
    float *probs;   /* tracing: [n_head * T x n_kv], row h*T + t; NULL otherwise */
    int64_t n_kv;   /* columns of probs */
    int64_t block0;   /* first token block of this job */
    int64_t n_blocks; /* token blocks of block_tokens in this job */
    int64_t block_tokens;
    const l3c_type_traits *kv_tr;
} attn_job;

size_t l3c_att_floats_per_thread(const l3c_config *c, int32_t n_ctx) {
    const size_t rows_path = l3c_attn_work_floats(L3C_ATT_QROWS, n_ctx, c->head_dim);
    const size_t head_path = (size_t)L3C_ATT_TOKENS * (size_t)n_ctx;
    return L3C_MAX(rows_path, head_path);
}

static inline int32_t seq_of(const l3c_batch *b, int64_t t) { return b->seq_id ? b->seq_id[t] : 0; }

/*
 * Query head h for the batch tokens [a, e), which all belong to sequence s and have increasing
 * positions (the batch validation guarantees it): out[t, h] = softmax(q . K / sqrt(hd)) . V
 * over positions 0..pos[t] (causal). Scores of the whole run are one gemm of the F16/F32 K
 * rows with the float queries (the cache is read in place, converted in registers); the masked
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
    float *S = ctx->act.att +
               (size_t)ith * l3c_att_floats_per_thread(c, ctx->n_ctx); /* [e - a x n_ctx] scores */
    float *tmp = ctx->act.kv_tmp + (int64_t)ith * hd * L3C_ATT_ROWS; /* [L3C_ATT_ROWS x hd] converted rows */
    const l3c_kv_cache *kv = &ctx->kv;
    const size_t row_bytes = kv->row_bytes;
    const uint8_t *kbase = l3c_kv_cache_row(kv, kv->k, s, job->layer, 0) + (size_t)kvh * kv->head_bytes;
    const uint8_t *vbase = l3c_kv_cache_row(kv, kv->v, s, job->layer, 0) + (size_t)kvh * kv->head_bytes;
    const float *q0 = job->q + a * q_dim + h * hd;

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
        memset(job->out + t * q_dim + h * hd, 0, (size_t)hd * sizeof(float));
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
            if (n > 0) l3c_axpy_rows(job->out + t * q_dim + h * hd, S + (t - a) * ld + p0, vp, ldv, n, hd);
        }
    }
}

/*
 * The query heads of KV head kvh for the batch tokens [a, e) (one sequence, increasing
 * positions): rows (token, head) in token order, up to L3C_ATT_QROWS per l3c_attn_rows call.
 */
static void attend_group(const attn_job *job, int kvh, int64_t a, int64_t e, int ith) {
    l3c_context *ctx = job->ctx;
    const l3c_batch *b = job->b;
    const l3c_config *c = &ctx->model->cfg;
    const int g = c->n_head / c->n_head_kv;
    const int64_t T = b->n_tokens, hd = c->head_dim, q_dim = (int64_t)c->n_head * hd;
    const l3c_kv_cache *kv = &ctx->kv;
    const int32_t s = seq_of(b, a);
    const float *q[L3C_ATT_QROWS];
    float *out[L3C_ATT_QROWS], *probs[L3C_ATT_QROWS];
    int32_t n[L3C_ATT_QROWS];
    l3c_attn_rows_args A = {
        .q = q,
        .out = out,
        .probs = job->probs ? probs : NULL,
        .n = n,
        .hd = hd,
        .scale = 1.0f / sqrtf((float)hd),
        .k = l3c_kv_cache_row(kv, kv->k, s, job->layer, 0) + (size_t)kvh * kv->head_bytes,
        .v = l3c_kv_cache_row(kv, kv->v, s, job->layer, 0) + (size_t)kvh * kv->head_bytes,
        .row_bytes = kv->row_bytes,
        .to_float = kv->type == L3C_KV_F32 ? NULL : job->kv_tr->to_float,
        .work = ctx->act.att + (size_t)ith * l3c_att_floats_per_thread(c, ctx->n_ctx),
    };
    for (int64_t t = a; t < e; t++)
        for (int hh = 0; hh < g; hh++) {
            const int h = kvh * g + hh;
            q[A.R] = job->q + t * q_dim + h * hd;
            out[A.R] = job->out + t * q_dim + h * hd;
            probs[A.R] = job->probs ? job->probs + ((int64_t)h * T + t) * job->n_kv : NULL;
            n[A.R] = b->pos[t] + 1;
            if (++A.R == L3C_ATT_QROWS) {
                l3c_attn_rows(&A);
                A.R = 0;
            }
        }
    if (A.R) l3c_attn_rows(&A);
}

/* One chunk = one head x one block of block_tokens batch tokens, split into runs of the same
 * sequence: a query head (per-head path, attend_run) or a KV head (attend_group). Block
 * boundaries do not depend on the thread count, so neither do results.
 * GQA: head h reads kv head h / (n_head / n_head_kv). */
static void attn_chunk(void *arg, int64_t chunk, int ith) {
    const attn_job *job = arg;
    const l3c_batch *b = job->b;
    const int h = (int)(chunk / job->n_blocks);
    const int64_t t0 = (job->block0 + chunk % job->n_blocks) * job->block_tokens;
    const int64_t t1 = L3C_MIN(t0 + job->block_tokens, (int64_t)b->n_tokens);
    const bool rows = l3c_attn_rows_fast();
    for (int64_t a = t0; a < t1;) {
        int64_t e = a + 1;
        while (e < t1 && seq_of(b, e) == seq_of(b, a)) e++;
        if (rows)
            attend_group(job, h, a, e, ith);
        else
            attend_run(job, h, a, e, ith);
        a = e;
    }
}

void l3c_attention_cpu(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *q, float *out,
                       float *probs, int64_t n_kv) {
    const l3c_config *c = &ctx->model->cfg;
    const l3c_type_traits *kv_tr = l3c_type_traits_get(ctx->kv.elem_type);
    /* per-head path: (query head, L3C_ATT_TOKENS tokens); rows path: (KV head, as many tokens as
     * make L3C_ATT_QROWS rows with the KV head's query heads) */
    const bool rows = l3c_attn_rows_fast();
    const int n_heads = rows ? c->n_head_kv : c->n_head;
    const int64_t block_tokens =
        rows ? L3C_MAX(1, L3C_ATT_QROWS / (c->n_head / c->n_head_kv)) : L3C_ATT_TOKENS;
    /* one job unless the batch has more blocks than a job has chunks */
    const int64_t n_blocks = l3c_n_chunks(b->n_tokens, block_tokens),
                  per_job = L3C_MAX_CHUNKS / n_heads;
    for (int64_t b0 = 0; b0 < n_blocks; b0 += per_job) {
        attn_job job = {.ctx = ctx,
                        .b = b,
                        .layer = layer,
                        .q = q,
                        .out = out,
                        .probs = probs,
                        .n_kv = n_kv,
                        .block0 = b0,
                        .n_blocks = L3C_MIN(per_job, n_blocks - b0),
                        .block_tokens = block_tokens,
                        .kv_tr = kv_tr};
        l3c_threadpool_run(ctx->tp, n_heads * job.n_blocks, attn_chunk, &job);
    }
}
