/*
 * backend_cpu.c -- the CPU backend: each op of backend.h on the dispatched kernels of
 * src/kernels/ (ops.c, rope.c), the context's thread pool and scratch, the KV cache of
 * kv_cache.c and the attention of attention.c.
 */
#include "dist/shard.h"
#include "model/lora.h"
#include "model/model.h"

#include <string.h>

static void cpu_get_rows(l3c_context *ctx, const l3c_weight *w, const int32_t *ids, int64_t T, float *x) {
    /* a distributed rank reads the embedding rows from the file, not the mapping (shard.h) */
    if (ctx->model->shard && l3c_shard_get_rows(ctx->model->shard, w, ids, T, x)) return;
    for (int64_t t = 0; t < T; t++) l3c_get_row(w, ids[t], x + t * w->n_in);
}

static void cpu_gather_rows(l3c_context *ctx, const float *x, const int32_t *idx, int64_t n, int64_t cols,
                            float *y) {
    for (int64_t r = 0; r < n; r++) memcpy(y + r * cols, x + (int64_t)idx[r] * cols, (size_t)cols * sizeof(float));
}

static void cpu_rmsnorm(l3c_context *ctx, const float *x, const float *g, float *y, float *rstd,
                        int64_t T, int64_t n, float eps) {
    l3c_rmsnorm(x, g, y, T, n, eps);
    if (rstd) l3c_rms_rstd(x, rstd, T, n, eps);
}

static void cpu_matmul(l3c_context *ctx, const l3c_weight *w, const float *x, float *y, int64_t T) {
    l3c_matmul(ctx->tp, w, x, y, T, ctx->act.scratch);
}

static void cpu_matmul_multi(l3c_context *ctx, int n, const l3c_weight *const *w, float *const *y,
                             const float *x, int64_t T, bool swiglu) {
    l3c_matmul_multi(ctx->tp, n, w, y, x, T, ctx->act.scratch, swiglu);
}

static void cpu_rope_tables(l3c_context *ctx, const int32_t *pos, int64_t T, float *cos_t, float *sin_t) {
    l3c_rope_tables(ctx->act.inv_freq, ctx->model->cfg.n_rot, pos, T, cos_t, sin_t);
}

static void cpu_rope(l3c_context *ctx, float *x, int64_t T, int n_heads, const float *cos_t,
                     const float *sin_t) {
    const l3c_config *c = &ctx->model->cfg;
    l3c_rope_apply(x, T, n_heads, c->head_dim, c->n_rot, cos_t, sin_t);
}

static void cpu_kv_store(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *k,
                         const float *v) {
    const l3c_config *c = &ctx->model->cfg;
    l3c_kv_cache_store(&ctx->kv, layer, k, v, b->n_tokens, b->seq_id, b->pos, c->n_head_kv, c->head_dim);
}

static void cpu_swiglu(l3c_context *ctx, float *h, const float *g, const float *u, int64_t n) {
    if (h != g) memcpy(h, g, (size_t)n * sizeof(float));
    l3c_swiglu(h, u, n);
}

static void cpu_add(l3c_context *ctx, float *out, const float *x, const float *y, int64_t n) {
    if (out != x) memcpy(out, x, (size_t)n * sizeof(float));
    l3c_add(out, y, n);
}

/* ---- lora: two small matmuls, tmp = x A^T then y += scale * tmp B^T, each on the thread pool.
 * Every output element is one thread's fixed-order sum, so results do not depend on the
 * thread count or on how tokens are batched. */

typedef struct lora_job {
    const float *A, *B, *x;
    float *y, *tmp;
    int64_t rank, n_in, n_out, T;
    float scale;
} lora_job;

#define LORA_ROWS 64 /* tokens (step 1) / output rows (step 2) per chunk */

/* sum a[i] * b[i] in 8 fixed lanes (vectorizable, order independent of the caller) */
static float dot8(const float *a, const float *b, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += a[i + k] * b[i + k];
    for (int k = 0; i < n; i++, k++) s[k] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static void lora_down_chunk(void *arg, int64_t chunk, int ith) { /* tmp [T x rank] = x A^T */
    const lora_job *j = arg;
    for (int64_t t = chunk * LORA_ROWS; t < L3C_MIN(j->T, (chunk + 1) * LORA_ROWS); t++)
        for (int64_t r = 0; r < j->rank; r++)
            j->tmp[t * j->rank + r] = dot8(j->x + t * j->n_in, j->A + r * j->n_in, j->n_in);
}

static void lora_up_chunk(void *arg, int64_t chunk, int ith) { /* y += scale * tmp B^T */
    const lora_job *j = arg;
    for (int64_t o = chunk * LORA_ROWS; o < L3C_MIN(j->n_out, (chunk + 1) * LORA_ROWS); o++)
        for (int64_t t = 0; t < j->T; t++)
            j->y[t * j->n_out + o] += j->scale * dot8(j->tmp + t * j->rank, j->B + o * j->rank, j->rank);
}

static void cpu_lora(l3c_context *ctx, const float *A, const float *B, int32_t rank, int64_t n_in,
                     int64_t n_out, float scale, const float *x, float *y, int64_t T) {
    lora_job j = {.A = A, .B = B, .x = x, .y = y, .tmp = ctx->act.lora_tmp, .rank = rank, .n_in = n_in,
                  .n_out = n_out, .T = T, .scale = scale};
    l3c_threadpool_run(ctx->tp, l3c_n_chunks(T, LORA_ROWS), lora_down_chunk, &j);
    l3c_threadpool_run(ctx->tp, l3c_n_chunks(n_out, LORA_ROWS), lora_up_chunk, &j);
}

/* every adapter's delta of (layer, target), through the context's own lora op */
static void cpu_lora_deltas(l3c_context *ctx, int32_t layer, int target, const float *x, float *y,
                            int64_t T) {
    for (int i = 0; i < ctx->n_adapters; i++) {
        const l3c_lora_adapter *ad = ctx->adapters[i].lora;
        const l3c_lora_mat *m = l3c_lora_get(ad, layer, (l3c_lora_target)target);
        if (m)
            ctx->backend->lora(ctx, m->a, m->b, m->rank, m->n_in, m->n_out,
                               ctx->adapters[i].scale * l3c_lora_mat_scale(ad, m), x, y, T);
    }
}

static void cpu_stage(l3c_context *ctx, int end, float *x, int64_t t0, int64_t n, int64_t T) {}

static int64_t cpu_stage_rows(l3c_context *ctx, int64_t T) {
    return T;
}

const l3c_backend l3c_backend_cpu = {
    .name = "cpu",
    .get_rows = cpu_get_rows,
    .gather_rows = cpu_gather_rows,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .matmul_multi = cpu_matmul_multi,
    .rope_tables = cpu_rope_tables,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = l3c_attention_cpu,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .lora = cpu_lora,
    .lora_deltas = cpu_lora_deltas,
    .stage = cpu_stage,
    .stage_rows = cpu_stage_rows,
};
