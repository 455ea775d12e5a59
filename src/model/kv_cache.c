/*
 * kv_cache.c -- the KV cache (layout and bookkeeping in kv_cache.h): allocation, the cache type's
 * row size, storing a batch's keys / values, and the public l3c_kv_seq_* calls on a context.
 */
#include "model/model.h"

#include <string.h>

int l3c_kv_elem_type(int kv_type) {
    switch (kv_type) {
    case L3C_KV_F16: return L3C_TYPE_F16;
    case L3C_KV_F32: return L3C_TYPE_F32;
    case L3C_KV_Q8_0: return L3C_TYPE_Q8_0;
    default: return -1;
    }
}

size_t l3c_kv_row_bytes(const l3c_config *cfg, int kv_type) {
    int type = l3c_kv_elem_type(kv_type);
    if (type < 0) return 0;
    /* every head's slice must be whole blocks (rows are stored per head) */
    size_t head_bytes;
    if (!l3c_row_size(type, cfg->head_dim, &head_bytes)) return 0;
    return head_bytes * (size_t)cfg->n_head_kv;
}

l3c_status l3c_kv_cache_init(l3c_kv_cache *kv, int32_t n_seq, int32_t n_layer, int32_t n_ctx,
                             int32_t n_head_kv, int32_t head_dim, int kv_type, size_t *total) {
    memset(kv, 0, sizeof *kv);
    const int type = l3c_kv_elem_type(kv_type);
    if (type < 0) return l3c_fail(L3C_ERR_INVALID_ARG, "kv cache: unknown kv_type %d", kv_type);
    size_t head_bytes;
    if (!l3c_row_size(type, head_dim, &head_bytes))
        return l3c_fail(L3C_ERR_UNSUPPORTED, "kv cache: kv_type %d needs head_dim (%d) to be a "
                                             "multiple of its block size", kv_type, head_dim);
    kv->n_seq = n_seq;
    kv->n_layer = n_layer;
    kv->n_ctx = n_ctx;
    kv->type = kv_type;
    kv->elem_type = type;
    kv->head_bytes = head_bytes;
    kv->row_bytes = head_bytes * (size_t)n_head_kv;
    size_t slab;
    bool ok = l3c_mul_ok((size_t)n_ctx * (size_t)n_seq, (size_t)n_layer, &slab) &&
              l3c_alloc_arr(&kv->k, slab, kv->row_bytes, 1, total) &&
              l3c_alloc_arr(&kv->v, slab, kv->row_bytes, 1, total) &&
              l3c_alloc_arr(&kv->seq_len, (size_t)n_seq, 1, sizeof(int32_t), total) &&
              l3c_alloc_arr(&kv->seq_next, (size_t)n_seq, 1, sizeof(int32_t), total);
    if (!ok)
        return l3c_fail(L3C_ERR_NOMEM, "kv cache: out of memory (%d sequences x %d layers x %d "
                                       "positions of %zu bytes, K and V)",
                        n_seq, n_layer, n_ctx, kv->row_bytes);
    memset(kv->seq_len, 0, (size_t)n_seq * sizeof(int32_t));
    return L3C_OK;
}

void l3c_kv_cache_free(l3c_kv_cache *kv) {
    free(kv->k);
    free(kv->v);
    free(kv->seq_len);
    free(kv->seq_next);
    memset(kv, 0, sizeof *kv);
}

void l3c_kv_cache_store(l3c_kv_cache *kv, int32_t layer, const float *k, const float *v, int64_t T,
                        const int32_t *seq_id, const int32_t *pos, int n_head_kv, int64_t hd) {
    const l3c_from_float_fn from_float = l3c_type_traits_get(kv->elem_type)->from_float;
    const int64_t kv_dim = (int64_t)n_head_kv * hd;
    for (int64_t t = 0; t < T; t++) {
        int32_t s = seq_id ? seq_id[t] : 0;
        uint8_t *kr = l3c_kv_cache_row(kv, kv->k, s, layer, pos[t]);
        uint8_t *vr = l3c_kv_cache_row(kv, kv->v, s, layer, pos[t]);
        for (int h = 0; h < n_head_kv; h++) {
            from_float(k + t * kv_dim + h * hd, kr + (size_t)h * kv->head_bytes, hd);
            from_float(v + t * kv_dim + h * hd, vr + (size_t)h * kv->head_bytes, hd);
        }
    }
}

void l3c_kv_cache_commit(l3c_kv_cache *kv) {
    memcpy(kv->seq_len, kv->seq_next, (size_t)kv->n_seq * sizeof(int32_t));
}

/* ---------------------------------------------------------------- public API on a context */

int32_t l3c_kv_seq_len(const l3c_context *ctx, int32_t seq_id) {
    if (!ctx || seq_id < 0 || seq_id >= ctx->n_seq) return 0;
    return ctx->kv.seq_len[seq_id];
}

l3c_status l3c_kv_seq_truncate(l3c_context *ctx, int32_t seq_id, int32_t n_keep) {
    if (!ctx) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_kv_seq_truncate: NULL context");
    if (ctx->mirror_truncate) ctx->mirror_truncate(ctx, seq_id, n_keep); /* a led context */
    if (seq_id < 0 || seq_id >= ctx->n_seq)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_kv_seq_truncate: seq_id %d out of range [0, %d)",
                        seq_id, ctx->n_seq);
    if (n_keep < 0)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_kv_seq_truncate: n_keep %d < 0", n_keep);
    if (n_keep < ctx->kv.seq_len[seq_id]) {
        ctx->kv.seq_len[seq_id] = n_keep;
        l3c_pool_truncate(ctx, seq_id, n_keep); /* pooling.c */
    }
    return L3C_OK;
}

/* The n positions of seq in every layer, K then V: n_layer x 2 runs of n rows each. */
static size_t kv_state_bytes(const l3c_kv_cache *kv, int32_t n) {
    return (size_t)n * kv->row_bytes * (size_t)kv->n_layer * 2;
}

static l3c_status kv_check_seq(const l3c_context *ctx, const char *fn, int32_t seq_id) {
    if (seq_id < 0 || seq_id >= ctx->n_seq)
        return l3c_fail(L3C_ERR_INVALID_ARG, "%s: seq_id %d out of range [0, %d)", fn, seq_id,
                        ctx->n_seq);
    return L3C_OK;
}

l3c_status l3c_kv_seq_copy(l3c_context *ctx, int32_t src, int32_t dst, int32_t n) {
    if (!ctx) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_kv_seq_copy: NULL context");
    if (ctx->mirror_copy) ctx->mirror_copy(ctx, src, dst, n); /* a led context */
    l3c_status st = kv_check_seq(ctx, "l3c_kv_seq_copy", src);
    if (st == L3C_OK) st = kv_check_seq(ctx, "l3c_kv_seq_copy", dst);
    if (st != L3C_OK) return st;
    if (n < 0 || n > ctx->kv.seq_len[src])
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "l3c_kv_seq_copy: n %d outside [0, %d] (the length of seq %d)", n,
                        ctx->kv.seq_len[src], src);
    l3c_kv_cache *kv = &ctx->kv;
    if (src == dst) { /* a truncation (not announced again) */
        if (n < kv->seq_len[dst]) {
            kv->seq_len[dst] = n;
            l3c_pool_truncate(ctx, dst, n);
        }
        return L3C_OK;
    }
    for (int32_t l = 0; l < kv->n_layer; l++) {
        memcpy(l3c_kv_cache_row(kv, kv->k, dst, l, 0), l3c_kv_cache_row(kv, kv->k, src, l, 0),
               (size_t)n * kv->row_bytes);
        memcpy(l3c_kv_cache_row(kv, kv->v, dst, l, 0), l3c_kv_cache_row(kv, kv->v, src, l, 0),
               (size_t)n * kv->row_bytes);
    }
    kv->seq_len[dst] = n;
    l3c_pool_truncate(ctx, dst, n); /* the pooled state of dst is unknown now (cleared if n == 0) */
    return L3C_OK;
}

size_t l3c_kv_seq_state_size(const l3c_context *ctx, int32_t n) {
    if (!ctx || n < 0 || n > ctx->n_ctx) return 0;
    return kv_state_bytes(&ctx->kv, n);
}

l3c_status l3c_kv_seq_state_get(const l3c_context *ctx, int32_t seq_id, int32_t n, void *dst,
                                size_t size) {
    if (!ctx || !dst) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_kv_seq_state_get: NULL argument");
    if (ctx->mirror_decode)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "l3c_kv_seq_state_get: the cache of a led context is "
                                             "spread over the ranks");
    l3c_status st = kv_check_seq(ctx, "l3c_kv_seq_state_get", seq_id);
    if (st != L3C_OK) return st;
    if (n < 0 || n > ctx->kv.seq_len[seq_id])
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "l3c_kv_seq_state_get: n %d outside [0, %d] (the length of seq %d)", n,
                        ctx->kv.seq_len[seq_id], seq_id);
    const l3c_kv_cache *kv = &ctx->kv;
    const size_t run = (size_t)n * kv->row_bytes;
    if (size != kv_state_bytes(kv, n))
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "l3c_kv_seq_state_get: buffer of %zu bytes, %d positions need %zu", size, n,
                        kv_state_bytes(kv, n));
    uint8_t *p = dst;
    for (int32_t l = 0; l < kv->n_layer; l++) {
        memcpy(p, l3c_kv_cache_row(kv, kv->k, seq_id, l, 0), run);
        memcpy(p + run, l3c_kv_cache_row(kv, kv->v, seq_id, l, 0), run);
        p += 2 * run;
    }
    return L3C_OK;
}

l3c_status l3c_kv_seq_state_set(l3c_context *ctx, int32_t seq_id, int32_t n, const void *src,
                                size_t size) {
    if (!ctx || !src) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_kv_seq_state_set: NULL argument");
    if (ctx->mirror_decode)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "l3c_kv_seq_state_set: the cache of a led context is "
                                             "spread over the ranks");
    l3c_status st = kv_check_seq(ctx, "l3c_kv_seq_state_set", seq_id);
    if (st != L3C_OK) return st;
    if (n < 0 || n > ctx->n_ctx)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "l3c_kv_seq_state_set: n %d outside [0, %d] (the context)", n, ctx->n_ctx);
    l3c_kv_cache *kv = &ctx->kv;
    const size_t run = (size_t)n * kv->row_bytes;
    if (size != kv_state_bytes(kv, n))
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "l3c_kv_seq_state_set: %zu bytes, %d positions need %zu", size, n,
                        kv_state_bytes(kv, n));
    const uint8_t *p = src;
    for (int32_t l = 0; l < kv->n_layer; l++) {
        memcpy(l3c_kv_cache_row(kv, kv->k, seq_id, l, 0), p, run);
        memcpy(l3c_kv_cache_row(kv, kv->v, seq_id, l, 0), p + run, run);
        p += 2 * run;
    }
    kv->seq_len[seq_id] = n;
    l3c_pool_truncate(ctx, seq_id, n);
    return L3C_OK;
}
