/*
 * context.c -- l3c_context: the KV cache for n_seq sequences (kv_cache.c) and every activation
 * buffer of the forward pass, all allocated here once (nothing is allocated per l3c_decode).
 *
 * n_ctx == 0 picks the model's context_length capped so that n_seq * n_ctx * kv_bytes_per_pos
 * fits kv_budget_bytes (at least 16 positions, else an error).
 */
#include "dist/shard.h"
#include "model/model.h"

#include <string.h>

#define L3C_MIN_CTX 16
#define L3C_MAX_SEQ 4096
#define L3C_MAX_BATCH (1 << 20)

l3c_context_params l3c_context_default_params(void) {
    l3c_context_params p = {
        .n_ctx = 0,
        .n_seq = 1,
        .n_batch = 512,
        .n_threads = 0,
        .kv_type = L3C_KV_F16,
        .kv_budget_bytes = (size_t)1 << 30,
        .embeddings = 0,
        .pooling = L3C_POOLING_MEAN,
        .embd_normalize = 0,
    };
    return p;
}

bool l3c_alloc_arr(void *pp, size_t a, size_t b, size_t elem, size_t *total) {
    size_t n;
    if (!l3c_mul_ok(a, b, &n) || !l3c_mul_ok(n, elem, &n)) return false;
    void *p = l3c_malloc(n);
    if (!p) return false;
    *(void **)pp = p;
    *total += n;
    return true;
}

static size_t max_scratch(const l3c_model *m, int64_t T) {
    const l3c_weights *w = &m->w;
    size_t s = l3c_matmul_scratch_bytes(&w->output, T);
    for (int32_t l = 0; l < m->cfg.n_layer; l++) {
        const l3c_layer *L = &w->layers[l];
        const l3c_weight *qkv[] = {&L->wq, &L->wk, &L->wv}, *gate_up[] = {&L->w_gate, &L->w_up};
        s = L3C_MAX(s, l3c_matmul_multi_scratch_bytes(3, qkv, T));
        s = L3C_MAX(s, l3c_matmul_multi_scratch_bytes(2, gate_up, T));
        s = L3C_MAX(s, l3c_matmul_scratch_bytes(&L->wo, T));
        s = L3C_MAX(s, l3c_matmul_scratch_bytes(&L->w_down, T));
    }
    return s;
}

/* Every l3c_activations buffer for B tokens (shapes in model.h); false when out of memory. */
static bool activations_alloc(l3c_activations *a, const l3c_model *m, size_t B, int32_t n_ctx,
                              int n_threads, size_t *total) {
    const l3c_config *c = &m->cfg;
    const size_t E = (size_t)c->n_embd, hd = (size_t)c->head_dim;
    const size_t q_dim = (size_t)c->n_head * hd, kv_dim = (size_t)c->n_head_kv * hd;
    const size_t half = (size_t)c->n_rot / 2, nth = (size_t)n_threads;
    return l3c_alloc_arr(&a->x, B, E, sizeof(float), total) &&
           l3c_alloc_arr(&a->xb, B, E, sizeof(float), total) &&
           l3c_alloc_arr(&a->xb2, B, E, sizeof(float), total) &&
           l3c_alloc_arr(&a->q, B, q_dim, sizeof(float), total) &&
           l3c_alloc_arr(&a->k, B, kv_dim, sizeof(float), total) &&
           l3c_alloc_arr(&a->v, B, kv_dim, sizeof(float), total) &&
           l3c_alloc_arr(&a->att_out, B, q_dim, sizeof(float), total) &&
           l3c_alloc_arr(&a->hb, B, (size_t)c->n_ff, sizeof(float), total) &&
           l3c_alloc_arr(&a->hb2, B, (size_t)c->n_ff, sizeof(float), total) &&
           l3c_alloc_arr(&a->logits, B, (size_t)c->n_vocab, sizeof(float), total) &&
           l3c_alloc_arr(&a->inv_freq, half ? half : 1, 1, sizeof(double), total) &&
           l3c_alloc_arr(&a->rope_cos, B, half ? half : 1, sizeof(float), total) &&
           l3c_alloc_arr(&a->rope_sin, B, half ? half : 1, sizeof(float), total) &&
           l3c_alloc_arr(&a->att, nth, l3c_att_floats_per_thread(c, n_ctx), sizeof(float), total) &&
           l3c_alloc_arr(&a->kv_tmp, nth, hd * L3C_ATT_ROWS, sizeof(float), total) &&
           l3c_alloc_arr(&a->scratch, max_scratch(m, (int64_t)B), 1, 1, total);
}

static void activations_free(l3c_activations *a) {
    void *bufs[] = {a->x, a->xb, a->xb2, a->q, a->k, a->v, a->att_out, a->hb, a->hb2, a->logits,
                    a->inv_freq, a->rope_cos, a->rope_sin, a->att, a->kv_tmp, a->scratch, a->embd,
                    a->lora_tmp, a->dist_part};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

l3c_status l3c_context_create(const l3c_model *m, const l3c_context_params *params,
                              l3c_context **out) {
    l3c_status st;
    if (out) *out = NULL;
    if (!m || !out) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_context_create: NULL argument");
    l3c_context_params p = params ? *params : l3c_context_default_params();
    const l3c_config *c = &m->cfg;

    if (p.n_seq < 1 || p.n_seq > L3C_MAX_SEQ)
        return l3c_fail(L3C_ERR_INVALID_ARG, "context: n_seq %d out of range [1, %d]", p.n_seq,
                        L3C_MAX_SEQ);
    if (p.n_batch < 1 || p.n_batch > L3C_MAX_BATCH)
        return l3c_fail(L3C_ERR_INVALID_ARG, "context: n_batch %d out of range [1, %d]", p.n_batch,
                        L3C_MAX_BATCH);
    if (p.n_ctx < 0) return l3c_fail(L3C_ERR_INVALID_ARG, "context: n_ctx %d < 0", p.n_ctx);
    if (p.kv_type != L3C_KV_F16 && p.kv_type != L3C_KV_F32 && p.kv_type != L3C_KV_Q8_0)
        return l3c_fail(L3C_ERR_INVALID_ARG, "context: unknown kv_type %d", p.kv_type);
    if (p.embeddings && (p.pooling < L3C_POOLING_MEAN || p.pooling > L3C_POOLING_NONE))
        return l3c_fail(L3C_ERR_INVALID_ARG, "context: unknown pooling %d (L3C_POOLING_MEAN, _CLS, "
                                             "_LAST or _NONE)", p.pooling);
    size_t row_bytes = l3c_kv_row_bytes(c, p.kv_type);
    if (!row_bytes)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "context: kv_type %d needs head_dim (%d) to be a "
                                             "multiple of its block size", p.kv_type, c->head_dim);
    size_t per_pos = l3c_model_kv_bytes_per_pos(m, p.kv_type);

    int32_t n_ctx = p.n_ctx;
    if (n_ctx == 0) {
        size_t budget = p.kv_budget_bytes ? p.kv_budget_bytes : ((size_t)1 << 30);
        size_t fit = budget / per_pos / (size_t)p.n_seq;
        n_ctx = (int32_t)L3C_MIN((size_t)c->n_ctx_train, fit);
        if (n_ctx < L3C_MIN_CTX)
            return l3c_fail(L3C_ERR_INVALID_ARG, "context: kv_budget_bytes %zu fits only %d positions "
                                                 "for %d sequences (%zu bytes per position); need %d",
                            budget, n_ctx, p.n_seq, per_pos, L3C_MIN_CTX);
    }
    /* a distributed model: every rank holds another share of the cache, so the positions that fit
     * may differ; all take the smallest (collective: every rank creates its contexts in turn) */
    if (m->shard) n_ctx = l3c_shard_min_i32(m->shard, n_ctx);
    int32_t n_batch = p.n_batch;
    if ((int64_t)n_batch > (int64_t)n_ctx * p.n_seq) n_batch = (int32_t)((int64_t)n_ctx * p.n_seq);

    l3c_context *ctx = l3c_calloc(1, sizeof *ctx);
    if (!ctx) return l3c_fail(L3C_ERR_NOMEM, "context: out of memory");
    ctx->model = m;
    ctx->backend = m->backend ? m->backend : &l3c_backend_cpu;
    ctx->n_ctx = n_ctx;
    ctx->n_seq = p.n_seq;
    ctx->n_batch = n_batch;
    ctx->n_threads = p.n_threads > 0 ? p.n_threads : m->n_threads;
    ctx->embeddings = p.embeddings != 0;
    ctx->pooling = p.pooling;
    ctx->embd_normalize = p.embd_normalize != 0;

    if ((st = l3c_threadpool_create(ctx->n_threads, &ctx->tp))) goto fail;
    ctx->n_threads = l3c_threadpool_n_threads(ctx->tp);

    size_t total = 0;
    /* kv_type and head_dim were checked above: the cache can only fail for memory */
    bool ok = l3c_kv_cache_init(&ctx->kv, p.n_seq, m->layer1 - m->layer0, n_ctx, c->n_head_kv, c->head_dim,
                                p.kv_type, &total) == L3C_OK &&
              activations_alloc(&ctx->act, m, (size_t)n_batch, n_ctx, ctx->n_threads, &total) &&
              l3c_alloc_arr(&ctx->out_row, (size_t)n_batch, 1, sizeof(int32_t), &total) &&
              l3c_alloc_arr(&ctx->out_idx, (size_t)n_batch, 1, sizeof(int32_t), &total);
    if (ok && m->w.output.dist == L3C_WDIST_GATHER) /* tensor split: this rank's logits */
        ok = l3c_alloc_arr(&ctx->act.dist_part, (size_t)n_batch, (size_t)m->w.output.n_out, sizeof(float), &total);
    if (ok && ctx->embeddings) {
        const size_t E = (size_t)c->n_embd;
        ok = l3c_alloc_arr(&ctx->act.embd, (size_t)n_batch, E, sizeof(float), &total) &&
             l3c_alloc_arr(&ctx->embd_acc, (size_t)p.n_seq, E, sizeof(double), &total) &&
             l3c_alloc_arr(&ctx->embd_seq, (size_t)p.n_seq, E, sizeof(float), &total) &&
             l3c_alloc_arr(&ctx->embd_n, (size_t)p.n_seq, 1, sizeof(int32_t), &total);
    }
    if (!ok) {
        st = l3c_fail(L3C_ERR_NOMEM, "context: out of memory (n_ctx %d, n_seq %d, n_batch %d; "
                                     "%zu bytes allocated before the failure)",
                      n_ctx, p.n_seq, n_batch, total);
        goto fail;
    }
    if (ctx->embd_n) memset(ctx->embd_n, 0, (size_t)p.n_seq * sizeof(int32_t));
    l3c_rope_inv_freq(c, m->w.rope_freqs, ctx->act.inv_freq);
    *out = ctx;
    return L3C_OK;
fail:
    l3c_context_free(ctx);
    return st;
}

void l3c_context_free(l3c_context *ctx) {
    if (!ctx) return;
    l3c_threadpool_free(ctx->tp);
    l3c_kv_cache_free(&ctx->kv);
    activations_free(&ctx->act);
    free(ctx->out_row);
    free(ctx->out_idx);
    free(ctx->embd_acc);
    free(ctx->embd_seq);
    free(ctx->embd_n);
    free(ctx->adapters);
    free(ctx);
}

int32_t l3c_context_n_ctx(const l3c_context *ctx) { return ctx ? ctx->n_ctx : 0; }
int32_t l3c_context_n_seq(const l3c_context *ctx) { return ctx ? ctx->n_seq : 0; }

void l3c_context_set_trace(l3c_context *ctx, l3c_trace_fn fn, void *user) {
    if (!ctx) return;
    ctx->trace = fn;
    ctx->trace_user = user;
}
