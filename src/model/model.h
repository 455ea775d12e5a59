/*
 * model.h -- internal definitions of l3c_model and l3c_context (opaque in llama3c.h).
 *
 * Ownership:
 *  - l3c_model owns the GGUF reader (and so the mapping every weight points into; for a Hugging
 *    Face folder a header-only reader over the folder's safetensors mappings, model/hf.c), the
 *    tokenizer, NUL-terminated copies of the string metadata, and small float copies of norm
 *    weights that were not F32 in the file. It is immutable after l3c_model_load.
 *  - l3c_context borrows the model (which must outlive it) and its backend (a static table),
 *    and owns one thread pool, the KV cache (l3c_kv_cache) and every activation buffer
 *    (l3c_activations), all sized in l3c_context_create for n_batch tokens and n_ctx
 *    positions, so l3c_decode never allocates (tracing "attn_scores" excepted).
 *
 * Files: config.c (hyperparameters from metadata, validated), weights.c (bind every tensor by
 * name / type / shape), model.c (load, info, metadata), context.c (context, activations),
 * kv_cache.c/.h (KV cache: layout, store, seq_len bookkeeping), rope.c (rotary embedding),
 * forward.c (l3c_decode: validation, then the fixed op sequence: embd, the block per layer,
 * head), block.c (the block's op sequence, forward and backward: decode's and training's), lora.c /
 * lora_io.c / adapter.c / lora_merge.c (LoRA adapters), backend.h (the op table the sequence
 * calls), backend_cpu.c + attention.c (the CPU backend), pooling.c (embeddings). A distributed
 * run's share and backends: src/dist/. docs/ARCHITECTURE.md describes the op sequence, the KV-cache
 * layout and the trace contract.
 */
#ifndef L3C_MODEL_H
#define L3C_MODEL_H

#include "io/gguf.h"
#include "kernels/ops.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"
#include "model/backend.h"
#include "model/kv_cache.h"

/* Hyperparameters, validated by l3c_config_from_gguf. */
typedef struct l3c_config {
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;     /* n_embd / n_head */
    int32_t n_ff;
    int32_t n_rot;        /* rotated dims per head (<= head_dim, even) */
    float rope_theta;
    float norm_eps;
    /* llama.rope.scaling.*: type "none" or "linear" (absent: linear when a factor is given, as in
     * llama.cpp); others (yarn, longrope, ...) are refused. Llama 3.1 'llama3' scaling has no
     * type: it arrives as the rope_freqs tensor. */
    char rope_scaling_type[32]; /* "" when absent */
    float rope_scaling_factor;  /* llama.rope.scaling.factor (or rope.scale_linear); 0 when absent */
    float rope_freq_scale;      /* positions are multiplied by this: 1 / factor for linear, else 1 */
} l3c_config;

/* Reads and validates the llama.* metadata. Errors name the file and the key. */
l3c_status l3c_config_from_gguf(const l3c_gguf *g, l3c_config *cfg);

/* One transformer block. Norm vectors are float32 [n_embd]. */
typedef struct l3c_layer {
    const float *attn_norm;  /* [n_embd] */
    l3c_weight wq;           /* n_embd -> n_head*hd */
    l3c_weight wk;           /* n_embd -> n_head_kv*hd */
    l3c_weight wv;           /* n_embd -> n_head_kv*hd */
    l3c_weight wo;           /* n_head*hd -> n_embd */
    const float *ffn_norm;   /* [n_embd] */
    l3c_weight w_gate;       /* n_embd -> n_ff */
    l3c_weight w_up;         /* n_embd -> n_ff */
    l3c_weight w_down;       /* n_ff -> n_embd */
} l3c_layer;

typedef struct l3c_weights {
    l3c_weight tok_embd;     /* n_embd x n_vocab rows */
    l3c_layer *layers;       /* [n_layer], owned */
    const float *output_norm;/* [n_embd] */
    l3c_weight output;       /* n_embd -> n_vocab (== tok_embd when tied) */
    int tied_output;
    const float *rope_freqs; /* [n_rot/2] or NULL */
    float **owned;           /* float copies of the norm vectors, [n_owned] */
    int n_owned;
    void *pack_arena;        /* packed copies of the matrices (l3c_weights_pack), or NULL */
    size_t pack_bytes;
    int n_bf16;              /* matrices packed as bf16 (bf16_matmul) */
    const uint8_t *file_map; /* the mapped file the matrices point into (set after bind), or NULL */
    size_t file_bytes;
} l3c_weights;

/* Binds every tensor; path is for messages. On failure w is left empty (l3c_weights_free ok). */
l3c_status l3c_weights_bind(const l3c_gguf *g, const l3c_config *cfg, const char *path,
                            l3c_weights *w);
void l3c_weights_free(l3c_weights *w);
/*
 * Packed copies of every matrix whose type has a packed layout on the dispatched kernel path
 * (l3c_weight.packed), made with n_threads threads; with release_source the file pages of each
 * packed matrix are dropped from the mapping right after (mmapped files), so peak RSS stays near
 * one copy of the weights. Layouts that compute in bf16 (traits.pack_bf16) are used only with
 * bf16 != 0. L3C_PACK=0 in the environment turns packing off.
 */
l3c_status l3c_weights_pack(l3c_weights *w, const l3c_config *cfg, const char *path,
                            int release_source, int bf16, int n_threads);
/* Drops [p, p + n) from this process once it is read no more: in w's file mapping every page of
 * the 2 MiB-aligned blocks it touches (the kernel maps a whole large folio of the page cache on a
 * fault, so the neighbours' pages are resident too; they refault unchanged if read again),
 * elsewhere (an anonymous copy) only the whole pages inside it. */
void l3c_weights_release(const l3c_weights *w, const void *p, size_t n);

struct l3c_model {
    char *path;
    char *name;               /* general.name or the file's base name */
    char *file_type;          /* most common 2-D weight type name */
    void *file_buf;           /* whole file when use_mmap == 0, else NULL */
    l3c_gguf *gguf;
    struct l3c_hf *hf;        /* a Hugging Face folder (model/hf.h) the gguf's tensors point into */
    l3c_config cfg;
    l3c_weights w;
    l3c_tokenizer *tok;       /* NULL when the file has no tokenizer.ggml.model */
    char **meta_str;          /* [gguf->n_kv]: NUL-terminated copy of each STRING value, else NULL */
    int n_threads;            /* default for contexts */
    /* a distributed run's share (src/dist/shard.h; cfg and w are then this rank's) or NULL, and
     * the backend contexts of this model use (l3c_backend_cpu, or the split's) */
    struct l3c_shard *shard;
    const l3c_backend *backend;
    int32_t layer0, layer1;   /* the layers this model holds and runs: [0, n_layer), or a
                               * pipeline stage's range (the KV cache has layer1 - layer0) */
    int64_t n_params;
    size_t weight_bytes;
};

/* Batch tokens per attention chunk (prompt path): their scores are one gemm per head. */
#define L3C_ATT_TOKENS 16
/* V rows converted to float at a time (prompt path: each serves every query of the block). */
#define L3C_ATT_ROWS 32
/* Query rows (tokens x the query heads of one KV head) per l3c_attn_rows call (AVX-512 path). */
#define L3C_ATT_QROWS 48

/* Floats of act.att one thread uses, for either attention path (attention.c). */
size_t l3c_att_floats_per_thread(const l3c_config *cfg, int32_t n_ctx);

/* Bytes of one KV row (n_head_kv*hd elements) of the given cache type; 0 if unsupported
 * (kv_cache.c). */
size_t l3c_kv_row_bytes(const l3c_config *cfg, int kv_type);

/* *pp = l3c_malloc(a * b * elem) with overflow checks; adds the size to *total (context.c). */
bool l3c_alloc_arr(void *pp, size_t a, size_t b, size_t elem, size_t *total);

/*
 * The forward pass's buffers, owned by the context and sized at creation for B = n_batch tokens
 * (context.c). Row-major float32, one row per batch token in batch order; E = n_embd,
 * F = n_ff, hd = head_dim.
 */
typedef struct l3c_activations {
    float *x;         /* [B x E]  residual stream */
    float *xb;        /* [B x E]  normed input of a sub-block; the head's gathered rows */
    float *xb2;       /* [B x E]  output of wo / w_down; the head's normed rows */
    float *q;         /* [B x n_head*hd]     queries, after rope */
    float *k;         /* [B x n_head_kv*hd]  keys, after rope (then stored in the cache) */
    float *v;         /* [B x n_head_kv*hd]  values */
    float *att_out;   /* [B x n_head*hd]     attention output, before wo */
    float *hb;        /* [B x F]  gate, then silu(gate) * up */
    float *hb2;       /* [B x F]  up */
    float *logits;    /* [B x n_vocab] rows of the requested tokens, in batch order */
    float *embd;      /* [B x E] embeddings context only (else NULL): every token's final-normed
                       * hidden state, l3c_get_embeddings (pooling.c) */
    /* rope */
    double *inv_freq; /* [n_rot/2] base^(-2i/n_rot) / rope_freqs[i], fixed per context */
    float *rope_cos;  /* [B x n_rot/2] for this batch's positions */
    float *rope_sin;  /* [B x n_rot/2] */
    /* workspace of the ops */
    float *att; /* [n_threads x l3c_att_floats_per_thread] attention scores + work, per thread */
    float *kv_tmp;    /* [n_threads x L3C_ATT_ROWS x hd] dequantized K / V head rows per thread */
    void *scratch;    /* l3c_matmul_scratch_bytes of the largest weight at B */
    /* tracing "attn_scores": [n_head*T x n_kv], row h*T + t; allocated by l3c_decode only while
     * tracing (its one allocation), NULL otherwise */
    float *probs;
    int64_t n_kv;     /* columns of probs: max(pos) + 1 over the batch */
    /* LoRA (l3c_context_set_adapter): [B x lora_rank] = x A^T of one adapted matrix; NULL until
     * an adapter is set, grown by l3c_context_set_adapter only (never by l3c_decode) */
    float *lora_tmp;
    int32_t lora_rank;
    /* tensor split (src/dist): [B x this rank's vocabulary rows], its logits before the gather;
     * NULL otherwise */
    float *dist_part;
} l3c_activations;

/* One adapter set on a context, with its user scale (adapter.c). */
typedef struct l3c_ctx_adapter {
    const struct l3c_lora_adapter *lora;
    float scale;
} l3c_ctx_adapter;

struct l3c_context {
    const l3c_model *model;
    const l3c_backend *backend; /* the ops l3c_decode runs (l3c_backend_cpu) */
    int32_t n_ctx, n_seq, n_batch;
    l3c_threadpool *tp;
    int n_threads;

    l3c_kv_cache kv;      /* [n_seq][n_layer][n_ctx] K and V rows + seq_len (kv_cache.h) */
    l3c_activations act;  /* the forward pass's buffers for n_batch tokens */

    /* which rows of the last batch have logits (act.logits), B = n_batch */
    int32_t *out_row; /* [B] batch index -> row of logits, -1 if not requested */
    int32_t *out_idx; /* [B] logits row -> batch index */
    int32_t n_out;    /* logits rows of the last batch */
    int32_t last_n_tokens;

    /* embeddings (pooling.c): per-sequence pooled state (the per-token rows are act.embd); NULL
     * buffers unless the context was created with embeddings = 1 */
    int embeddings, pooling, embd_normalize;
    double *embd_acc;  /* [n_seq x n_embd] pooled state: MEAN the sum of the rows, CLS the first
                        * row, LAST the last row (not kept for NONE) */
    float *embd_seq;   /* [n_seq x n_embd] pooled vector, written for the sequences of each batch */
    int32_t *embd_n;   /* [n_seq] tokens in embd_acc (== seq_len), -1: unknown after a partial
                        * truncation until the sequence is cleared */

    l3c_trace_fn trace;
    void *trace_user;

    /* LoRA adapters (l3c_context_set_adapter, adapter.c), applied in this order after each
     * adapted matrix (forward.c); [n_adapters], owned array, borrowed adapters */
    l3c_ctx_adapter *adapters;
    int n_adapters;

    /* l3c_dist_lead (src/dist/follow.c): each l3c_decode / l3c_kv_seq_truncate / l3c_kv_seq_copy
     * is first announced to the other ranks, which make the same call; NULL otherwise */
    void (*mirror_decode)(l3c_context *ctx, const l3c_batch *b);
    void (*mirror_truncate)(l3c_context *ctx, int32_t seq_id, int32_t n_keep);
    void (*mirror_copy)(l3c_context *ctx, int32_t src, int32_t dst, int32_t n);
};

/* Embeddings (pooling.c). After the forward pass of a validated batch b and the update of
 * seq_len, with the normed rows in ctx->act.embd [T x n_embd]: extends each sequence's pooled state,
 * writes the pooled vectors of the batch's sequences, and normalizes the returned vectors if
 * asked. */
void l3c_pool_batch(l3c_context *ctx, const l3c_batch *b);
/* Sequence seq keeps n_keep < its length positions (l3c_kv_seq_truncate). */
void l3c_pool_truncate(l3c_context *ctx, int32_t seq, int32_t n_keep);

/* Rotary embedding (rope.c). */
void l3c_rope_inv_freq(const l3c_config *cfg, const float *rope_freqs, double *inv_freq);
/* cos/sin [T x n_rot/2] for positions pos[T]. */
void l3c_rope_tables(const double *inv_freq, int n_rot, const int32_t *pos, int64_t T, float *cos_out,
                     float *sin_out);
/* Rotates adjacent pairs (x[2i], x[2i+1]), i < n_rot/2, of every head of x [T x n_heads*hd]. */
void l3c_rope_apply(float *x, int64_t T, int n_heads, int hd, int n_rot, const float *cos_t,
                    const float *sin_t);
/* The scalar loop l3c_rope_apply runs where the CPU has no AVX-512 (which gives the same bits). */
void l3c_rope_apply_ref(float *x, int64_t T, int n_heads, int hd, int n_rot, const float *cos_t,
                        const float *sin_t);

#endif /* L3C_MODEL_H */
