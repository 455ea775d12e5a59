/*
 * shard.h -- a model's share on this rank of a distributed run (l3c_model_params.split), made at
 * load (shard.c) and used by the distributed backends (backend_dist.c). docs/DISTRIBUTED.md.
 *
 * Tensor split over N ranks (Megatron): rank r holds
 *   - KV heads [kv0, kv1) and their query heads [kv0*G, kv1*G) (G = n_head / n_head_kv): rows of
 *     attn_q / attn_k / attn_v (views of the mapping: quantized blocks run along rows, so a row
 *     range is a byte range) and the same columns of attn_output (a per-rank copy made at load,
 *     counted in its resident memory: a column range of each row is a byte range, so the copy is
 *     E slices, and the file's pages are dropped right after);
 *   - FFN units [ff0, ff1): rows of ffn_gate / ffn_up (views), columns of ffn_down (copy);
 *   - vocabulary rows [v0, v1) of the output head (a view);
 *   - the whole token_embd (only the rows of the tokens it sees are ever read, from the file:
 *     l3c_shard_get_rows) and the norms (copies).
 * The model's config is then this rank's: n_head, n_head_kv, n_ff are its own counts (so the
 * context's buffers and KV cache are its share); `full` keeps the file's. attn_output and
 * ffn_down produce partial sums (l3c_weight.dist = L3C_WDIST_SUM: the backend all-reduces them),
 * the output head a vocabulary slice (L3C_WDIST_GATHER: gathered on every rank).
 * Shares are as even as possible; the first ranks get the extra units. Column boundaries must
 * fall on quantization blocks (checked before loading).
 *
 * Layer (pipeline) split: rank r holds layers [layer0, layer1) (first[r] .. first[r+1]).
 */
#ifndef L3C_SHARD_H
#define L3C_SHARD_H

#include "model/model.h"

typedef struct l3c_shard {
    int split; /* L3C_SPLIT_TENSOR or L3C_SPLIT_LAYERS */
    int rank, size;
    l3c_config full; /* the file's hyperparameters */
    /* tensor */
    int32_t kv0, kv1, ff0, ff1, vocab0, vocab1;
    int64_t *vocab_n; /* [size] vocabulary rows of each rank */
    void *arena;      /* the column copies of attn_output and ffn_down (anonymous mapping) */
    size_t arena_bytes;
    /* layers */
    int32_t layer0, layer1;
    int32_t *first; /* [size + 1] first layer of each rank, first[size] = n_layer */
    /* a mapped GGUF (else map NULL, fd -1): the mapping, and the file opened again for the
     * embedding rows (l3c_shard_get_rows), which are read, not mapped */
    const uint8_t *map;
    size_t map_bytes;
    int fd;
    const void *embd_data; /* token_embd's rows in the mapping, at file offset embd_off */
    size_t embd_off;
} l3c_shard;

/* Before any weight is bound: checks the split against the model (ranks <= n_head_kv for
 * tensor, <= n_layer for layers, block-aligned column boundaries, layers_per_rank) and that
 * every rank opened the same file with the same split (a hash of the header, tensor infos and
 * the first bytes of each tensor, compared across ranks). Collective. *out NULL when the run
 * has one rank or no split. Errors name the file and, for a mismatch, the ranks. */
l3c_status l3c_shard_plan(const l3c_gguf *g, const l3c_config *cfg, const l3c_model_params *p,
                          const char *path, l3c_shard **out);
/* Narrows the bound weights and cfg to this rank's share (see above); use_mmap: the file's pages
 * read for the column copies are dropped afterwards. */
l3c_status l3c_shard_apply(l3c_shard *s, l3c_weights *w, l3c_config *cfg, const char *path,
                           int release_file_pages);
/*
 * Resident memory of a mapped file on a rank (docs/DISTRIBUTED.md, "Memory per rank"): a fault
 * maps the whole page-cache folio around the page read (up to 2 MiB: other ranks' rows, the next
 * tensor), so the plan advises the mapping MADV_NOHUGEPAGE (no PMD mappings), packed matrices
 * are released in whole 2 MiB blocks (l3c_weights_release), l3c_shard_release_file drops every
 * page of the mapping after the hash, after binding and after packing (all a rank reads later is
 * packed or copied, or refaults), and the embedding rows of the tokens are read from the file
 * (pread), so they are never mapped.
 */
void l3c_shard_release_file(const l3c_shard *s);
/* Rows ids[0..T) of w into x [T x n_in] if w is the mapped token_embd: returns 1, else 0 (the
 * caller reads them itself). A failed read falls back to the mapping. */
int l3c_shard_get_rows(const l3c_shard *s, const l3c_weight *w, const int32_t *ids, int64_t T,
                       float *x);
void l3c_shard_free(l3c_shard *s);
/* min over the ranks of v (collective) */
int32_t l3c_shard_min_i32(const l3c_shard *s, int32_t v);

/* The backend of a tensor-split model (backend_dist.c): the CPU ops plus the split's messages. */
const l3c_backend *l3c_backend_tensor(void);
/* The backend of a layer-split model: the CPU ops on the stage's layers, x passed between stages.
 */
const l3c_backend *l3c_backend_layers(void);

#endif /* L3C_SHARD_H */
