/*
 * kv_cache.h -- the KV cache of a context: n_seq sequences x n_layer layers x n_ctx positions of
 * keys and values, stored converted to the cache type (F16 default, F32, Q8_0).
 *
 * Layout (per sequence a contiguous slab, K and V alike):
 *   k[n_seq][n_layer][n_ctx][n_head_kv][hd]   elements of elem_type
 * Each head's hd elements are stored as whole blocks, so one head of one position is head_bytes
 * at offset kvh * head_bytes inside its row (row_bytes = n_head_kv * head_bytes).
 *
 * Bookkeeping: seq_len[s] positions of sequence s are valid; positions >= seq_len[s] hold stale
 * data and are never read. Truncation only lowers seq_len. A decode first computes the lengths
 * after its batch in seq_next (validation), stores the batch's rows, and only at the end commits
 * seq_next to seq_len (l3c_kv_cache_commit), so a rejected batch changes nothing.
 */
#ifndef L3C_KV_CACHE_H
#define L3C_KV_CACHE_H

#include "kernels/types.h"

typedef struct l3c_kv_cache {
    int32_t n_seq, n_layer, n_ctx;
    int type;              /* L3C_KV_F16 / L3C_KV_F32 / L3C_KV_Q8_0 */
    int elem_type;         /* the matching L3C_TYPE_* */
    size_t row_bytes;      /* bytes of n_head_kv*hd elements: one position of one layer */
    size_t head_bytes;     /* bytes of hd elements: one head's slice of a row */
    uint8_t *k, *v;        /* [n_seq][n_layer][n_ctx] rows of row_bytes */
    int32_t *seq_len;      /* [n_seq] valid positions per sequence */
    int32_t *seq_next;     /* [n_seq] lengths after the batch being decoded (validation scratch) */
} l3c_kv_cache;

/* The L3C_TYPE_* of a cache type (L3C_KV_*), or -1 if unknown. */
int l3c_kv_elem_type(int kv_type);

/*
 * Allocates the cache (every sequence empty) for n_head_kv heads of head_dim elements. Adds the
 * bytes allocated to *total. L3C_ERR_NOMEM or L3C_ERR_INVALID_ARG / UNSUPPORTED with a message;
 * on failure kv is left freeable (l3c_kv_cache_free).
 */
l3c_status l3c_kv_cache_init(l3c_kv_cache *kv, int32_t n_seq, int32_t n_layer, int32_t n_ctx,
                             int32_t n_head_kv, int32_t head_dim, int kv_type, size_t *total);
void l3c_kv_cache_free(l3c_kv_cache *kv);

/* Row of (seq, layer, pos) in cache (kv->k or kv->v). */
static inline uint8_t *l3c_kv_cache_row(const l3c_kv_cache *kv, uint8_t *cache, int32_t seq,
                                        int32_t layer, int32_t pos) {
    size_t idx = ((size_t)seq * (size_t)kv->n_layer + (size_t)layer) * (size_t)kv->n_ctx + (size_t)pos;
    return cache + idx * kv->row_bytes;
}

/* k, v [T x n_head_kv*hd] float -> the rows of (seq_id[t] (NULL: 0), layer, pos[t]), converted
 * per head. */
void l3c_kv_cache_store(l3c_kv_cache *kv, int32_t layer, const float *k, const float *v, int64_t T,
                        const int32_t *seq_id, const int32_t *pos, int n_head_kv, int64_t hd);

/* seq_len = seq_next: the batch just decoded becomes part of the cache. */
void l3c_kv_cache_commit(l3c_kv_cache *kv);

#endif /* L3C_KV_CACHE_H */
