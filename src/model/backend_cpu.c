/*
 * backend_cpu.c -- the CPU backend: each op of backend.h on the dispatched kernels of
 * src/kernels/ (ops.c, rope.c), the context's thread pool and scratch, the KV cache of
 * kv_cache.c and the attention of attention.c.
 */
#include "model/model.h"

#include <string.h>

static void cpu_get_rows(l3c_context *ctx, const l3c_weight *w, const int32_t *ids, int64_t T, float *x) {
    for (int64_t t = 0; t < T; t++) l3c_get_row(w, ids[t], x + t * w->n_in);
}

static void cpu_gather_rows(l3c_context *ctx, const float *x, const int32_t *idx, int64_t n, int64_t cols,
                            float *y) {
    for (int64_t r = 0; r < n; r++) memcpy(y + r * cols, x + (int64_t)idx[r] * cols, (size_t)cols * sizeof(float));
}

static void cpu_rmsnorm(l3c_context *ctx, const float *x, const float *g, float *y, int64_t T, int64_t n,
                        float eps) {
    l3c_rmsnorm(x, g, y, T, n, eps);
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

static void cpu_swiglu(l3c_context *ctx, float *a, const float *b, int64_t n) { l3c_swiglu(a, b, n); }

static void cpu_add(l3c_context *ctx, float *x, const float *y, int64_t n) { l3c_add(x, y, n); }

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
};
