/*
 * llama3c.h -- the only public header of llama3c, a LLaMA-family inference engine in C11.
 *
 * Conventions
 *  - Every fallible function returns an l3c_status (L3C_OK == 0, errors < 0). On error a
 *    thread-local message naming the file / field / value is available from l3c_last_error(),
 *    and every output pointer is set to NULL; nothing leaks.
 *  - Objects are opaque handles. Whoever gets a handle from *_load / *_create owns it and
 *    releases it with the matching *_free. Every *_free accepts NULL.
 *  - Pointers returned by getters (const char *, const float *) are borrowed: they stay valid
 *    until the owning object is freed or (for logits) until the next l3c_decode on that context.
 *  - Token ids are int32_t. Sizes are size_t / int64_t.
 *  - Nothing in this header assumes a CPU: weights, KV cache and activations live wherever the
 *    backend puts them; results come back through the getters.
 *  - Thread safety: an l3c_model is immutable after load and may be shared by many contexts and
 *    threads; an l3c_context, l3c_sampler or l3c_tokenizer stream must be used by one thread at
 *    a time.
 */
#ifndef LLAMA3C_H
#define LLAMA3C_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define L3C_API __attribute__((visibility("default")))
#else
#define L3C_API
#endif

/* ---------------------------------------------------------------- status and errors */

typedef enum l3c_status {
    L3C_OK = 0,
    L3C_ERR_NOMEM = -1,       /* an allocation failed */
    L3C_ERR_IO = -2,          /* open / read / mmap failed */
    L3C_ERR_FORMAT = -3,      /* the file or input is malformed */
    L3C_ERR_UNSUPPORTED = -4, /* well-formed but not supported (tensor type, architecture) */
    L3C_ERR_INVALID_ARG = -5, /* the caller passed something out of range */
    L3C_ERR_CONTEXT_FULL = -6 /* the sequence would exceed the context length */
} l3c_status;

/* Message of the last failure on this thread ("" if none). Borrowed, thread-local. */
L3C_API const char *l3c_last_error(void);
/* Short constant name of a status ("L3C_ERR_FORMAT"). */
L3C_API const char *l3c_status_name(l3c_status st);
/* Library version string, e.g. "0.1.0". */
L3C_API const char *l3c_version(void);
/* Frees memory the library returned to the caller with "caller frees" in its description. */
L3C_API void l3c_free(void *p);

/* ---------------------------------------------------------------- opaque handles */

typedef struct l3c_model l3c_model;         /* weights + hyperparameters + tokenizer, immutable */
typedef struct l3c_context l3c_context;     /* KV cache for n_seq sequences + activations */
typedef struct l3c_tokenizer l3c_tokenizer; /* vocabulary + merges + special tokens */
typedef struct l3c_sampler l3c_sampler;     /* sampling chain with its own RNG and history */

/* ---------------------------------------------------------------- model */

typedef struct l3c_model_params {
    int n_threads;  /* threads for load-time work and default for contexts; <=0: physical cores */
    int use_mmap;   /* 1 (default): weights are mapped from the file, never copied */
    int verbose;    /* 1: progress and notes on stderr while loading */
    /* 1: F16 / BF16 weight matrices multiply in bfloat16 where the kernel path has bf16 dot
     * products (AVX512-BF16): F16 weights are rounded to bf16 once at load and activations at
     * each matmul (~3 significant digits, like 8-bit activation blocks of quantized files), for
     * ~2x the multiply-adds per instruction in prompts. 0 (default): exact F16 / BF16 weights and
     * fp32 activations. Prompt and generation use the same arithmetic either way. On the amx
     * kernel path, 1 also takes Q4_0 / Q8_0 / Q4_K / Q5_K / Q6_K matrices in calls of >= 32 tokens
     * (prompts): weights dequantized to bf16 tiles, activations rounded to bf16 (about the same
     * precision as their 8-bit activation blocks, ~1.5-2x the prompt speed); calls of fewer tokens
     * (generation) keep the int8 kernels, so there a token's logits depend on whether it was in a
     * call of >= 32 tokens. */
    int bf16_matmul;
    /* How the ranks of a distributed run (l3c_dist_init under mpirun) share the model; ignored
     * (the whole model) in a run of one rank. L3C_SPLIT_NONE (default): every rank holds all of
     * it. L3C_SPLIT_TENSOR: rank r holds whole KV-head groups of attention, a slice of the FFN and
     * of the vocabulary (needs ranks <= n_head_kv). L3C_SPLIT_LAYERS: rank r holds a contiguous
     * range of layers (needs ranks <= n_layer). Every rank must load the same file with the same
     * split; l3c_model_load checks it (a header hash) and fails on every rank otherwise.
     * docs/DISTRIBUTED.md. */
    int split;
    /* L3C_SPLIT_LAYERS: layers of each rank ([l3c_dist_size()] counts summing to n_layer, each
     * >= 1), or NULL for shares as even as possible. Borrowed for the call. */
    const int32_t *layers_per_rank;
} l3c_model_params;

enum { L3C_SPLIT_NONE = 0, L3C_SPLIT_TENSOR = 1, L3C_SPLIT_LAYERS = 2 };

L3C_API l3c_model_params l3c_model_default_params(void);

/* Loads a GGUF file (llama architecture). Caller owns *out (l3c_model_free). */
L3C_API l3c_status l3c_model_load(const char *path, const l3c_model_params *params, l3c_model **out);
L3C_API void l3c_model_free(l3c_model *model);

typedef struct l3c_model_info {
    const char *name;        /* general.name or the file name; borrowed */
    const char *arch;        /* "llama" */
    int32_t n_vocab;
    int32_t n_ctx_train;     /* context_length */
    int32_t n_embd;          /* embedding_length (dim) */
    int32_t n_layer;         /* block_count */
    int32_t n_head;          /* attention.head_count */
    int32_t n_head_kv;       /* attention.head_count_kv */
    int32_t head_dim;        /* n_embd / n_head */
    int32_t n_ff;            /* feed_forward_length */
    int32_t n_rot;           /* rope.dimension_count */
    float rope_theta;        /* rope.freq_base */
    float norm_eps;          /* attention.layer_norm_rms_epsilon */
    int tied_output;         /* 1 when output.weight is absent and token_embd is reused */
    int has_rope_freqs;      /* 1 when rope_freqs.weight (Llama 3.1 'llama3' scaling) is present */
    int64_t n_params;        /* total number of weight elements in the file's tensors */
    size_t weight_bytes;     /* bytes of tensor data */
    const char *file_type;   /* most common weight type, e.g. "Q4_1" */
    int32_t n_bf16_matmul;   /* weight matrices that multiply in bf16 (bf16_matmul), else 0 */
} l3c_model_info;

L3C_API void l3c_model_get_info(const l3c_model *model, l3c_model_info *info);

/* Per-tensor description, for `info` and `explain`. */
typedef struct l3c_tensor_desc {
    const char *name;      /* borrowed */
    const char *type_name; /* "F32", "Q4_K", ... */
    int n_dims;
    int64_t ne[4];         /* ne[0] is the contiguous (row) dimension, as in GGUF */
    int64_t n_elements;
    size_t nbytes;
} l3c_tensor_desc;

L3C_API int64_t l3c_model_n_tensors(const l3c_model *model);
L3C_API l3c_status l3c_model_tensor_desc(const l3c_model *model, int64_t i, l3c_tensor_desc *out);

/* String metadata by key (e.g. "tokenizer.chat_template"); NULL when absent. Not NUL-safe for
 * embedded NULs; borrowed, valid while the model lives. */
L3C_API const char *l3c_model_meta_str(const l3c_model *model, const char *key);

/* The model's tokenizer (borrowed, lives as long as the model). */
L3C_API const l3c_tokenizer *l3c_model_tokenizer(const l3c_model *model);

/* KV-cache bytes per token position (all layers, K and V) for the given cache type. */
L3C_API size_t l3c_model_kv_bytes_per_pos(const l3c_model *model, int kv_type);

/* ---------------------------------------------------------------- context (KV cache + batch decode) */

enum { L3C_KV_F16 = 0, L3C_KV_F32 = 1, L3C_KV_Q8_0 = 2 };

/* How an embeddings context (l3c_context_params.embeddings) pools a sequence's token vectors. */
typedef enum l3c_pooling {
    L3C_POOLING_MEAN = 0, /* mean of the vectors of every token of the sequence (default) */
    L3C_POOLING_CLS = 1,  /* the vector of the sequence's first token (position 0: BOS, if fed) */
    L3C_POOLING_LAST = 2, /* the vector of its last token */
    L3C_POOLING_NONE = 3  /* none: per-token vectors only (l3c_get_embeddings) */
} l3c_pooling;

typedef struct l3c_context_params {
    int32_t n_ctx;          /* positions per sequence; 0: the model's context, capped by kv_budget */
    int32_t n_seq;          /* independent sequences (server slots), default 1 */
    int32_t n_batch;        /* most tokens one l3c_decode call may carry, default 512 */
    int n_threads;          /* <=0: the model's default */
    int kv_type;            /* L3C_KV_F16 (default), L3C_KV_F32, L3C_KV_Q8_0 */
    size_t kv_budget_bytes; /* cap for the whole KV cache when n_ctx == 0; default 1 GiB */
    /* Embeddings. 1: every l3c_decode also computes the final-normed hidden state of each token
     * (after output_norm, before the output projection: what llama.cpp returns as embeddings for
     * llama models) and pools it per sequence (l3c_get_embeddings, l3c_get_embeddings_seq).
     * Logits are still computed for the tokens that ask for them (batch->logits). 0 (default): off. */
    int embeddings;
    int pooling;            /* l3c_pooling; default L3C_POOLING_MEAN */
    int embd_normalize;     /* 1: every returned vector is scaled to unit L2 norm; default 0 */
} l3c_context_params;

L3C_API l3c_context_params l3c_context_default_params(void);

/* Caller owns *out. The model must outlive the context. */
L3C_API l3c_status l3c_context_create(const l3c_model *model, const l3c_context_params *params,
                                      l3c_context **out);
L3C_API void l3c_context_free(l3c_context *ctx);
L3C_API int32_t l3c_context_n_ctx(const l3c_context *ctx);
L3C_API int32_t l3c_context_n_seq(const l3c_context *ctx);

/*
 * A batch: n_tokens tokens, each with its position and sequence. Tokens of one sequence must
 * appear in increasing position order, and each sequence's positions must continue that
 * sequence's cache (pos == current length of the sequence). logits[i] != 0 asks for the
 * logits of token i (NULL: only the last token of the batch; in an embeddings context: none,
 * so the output projection is skipped).
 */
typedef struct l3c_batch {
    int32_t n_tokens;
    const int32_t *tokens;  /* [n_tokens] */
    const int32_t *pos;     /* [n_tokens] */
    const int32_t *seq_id;  /* [n_tokens], 0 <= seq_id < n_seq; NULL: all 0 */
    const int8_t *logits;   /* [n_tokens] or NULL */
} l3c_batch;

/* Runs the forward pass for the batch and appends its keys/values to the caches. */
L3C_API l3c_status l3c_decode(l3c_context *ctx, const l3c_batch *batch);

/* Logits (n_vocab floats) of the i-th token of the last batch; NULL if not requested. */
L3C_API const float *l3c_get_logits(const l3c_context *ctx, int32_t i);

/*
 * Embeddings (contexts created with embeddings = 1; NULL otherwise). Vectors have n_embd floats
 * (l3c_model_info.n_embd), unit length with embd_normalize. Borrowed: valid until the next
 * l3c_decode or l3c_kv_seq_truncate on the context.
 *
 * l3c_get_embeddings: the vector of the i-th token of the last batch (every token has one,
 * whatever the pooling); NULL if i is out of range.
 *
 * l3c_get_embeddings_seq: the pooled vector of a sequence over ALL the tokens it holds
 * (positions 0 .. l3c_kv_seq_len - 1), also when they were fed in several l3c_decode calls:
 * the pooled state is kept per sequence and extended by each batch (llama.cpp pools over the
 * tokens of one batch only; the two agree when a sequence is fed whole in one batch). The sums
 * run in position order, so the vector does not depend on how the input was split into batches
 * or what else shared them. NULL when the pooling is L3C_POOLING_NONE, the sequence is empty or
 * seq_id out of range, or after l3c_kv_seq_truncate dropped part (not all) of the sequence: its
 * pooled state is then unknown until the sequence is cleared (truncated to 0) and fed again.
 */
L3C_API const float *l3c_get_embeddings(const l3c_context *ctx, int32_t i);
L3C_API const float *l3c_get_embeddings_seq(const l3c_context *ctx, int32_t seq_id);

/* Number of positions currently held for a sequence. */
L3C_API int32_t l3c_kv_seq_len(const l3c_context *ctx, int32_t seq_id);
/* Drops positions >= n_keep of a sequence (0: clears it). Used for prefix reuse. */
L3C_API l3c_status l3c_kv_seq_truncate(l3c_context *ctx, int32_t seq_id, int32_t n_keep);
/*
 * Prefix sharing between sequences (a server's prompt cache). l3c_kv_seq_copy: sequence dst
 * becomes the first n positions of src (0 <= n <= l3c_kv_seq_len(src); dst's old content is
 * dropped); decoding dst from position n then gives the logits a fresh evaluation of those n
 * tokens would. In a led context (l3c_dist_lead) it is announced to the other ranks like
 * l3c_kv_seq_truncate.
 * l3c_kv_seq_state_get copies the first n positions of a sequence (every layer's keys and values,
 * in the context's KV type) into dst, exactly l3c_kv_seq_state_size(ctx, n) bytes;
 * l3c_kv_seq_state_set makes a sequence hold exactly such a state of n positions (taken from a
 * context of the same model, KV type and n_ctx). Both refuse a led context (L3C_ERR_UNSUPPORTED:
 * its cache is spread over the ranks). The pooled embedding state of the target sequence is
 * unknown afterwards (as after a partial truncation) unless n == 0.
 */
L3C_API l3c_status l3c_kv_seq_copy(l3c_context *ctx, int32_t src, int32_t dst, int32_t n);
/* 0 for a NULL context or n outside [0, n_ctx]. */
L3C_API size_t l3c_kv_seq_state_size(const l3c_context *ctx, int32_t n);
L3C_API l3c_status l3c_kv_seq_state_get(const l3c_context *ctx, int32_t seq_id, int32_t n,
                                        void *dst, size_t size);
L3C_API l3c_status l3c_kv_seq_state_set(l3c_context *ctx, int32_t seq_id, int32_t n,
                                        const void *src, size_t size);

/*
 * Tracing, for `explain` and debugging: after every named op of the forward pass the callback
 * receives the op name ("attn_norm", "q", "k", "v", "attn_scores", "attn_out", "ffn_norm",
 * "ffn_gate", "ffn_up", "ffn_down", "l_out", "embd", "result_norm", "logits", ...), the layer
 * (-1 outside blocks), and a row-major [rows x cols] float view (rows = tokens of the batch, or
 * heads x tokens for per-head data; see docs/ARCHITECTURE.md). data is borrowed for the call only.
 * NULL disables tracing. Tracing slows the forward pass; it never changes its results.
 */
typedef void (*l3c_trace_fn)(void *user, const char *op, int layer, const float *data,
                             int64_t rows, int64_t cols);
L3C_API void l3c_context_set_trace(l3c_context *ctx, l3c_trace_fn fn, void *user);

/* ---------------------------------------------------------------- LoRA adapters */

/*
 * A LoRA adapter adds low-rank updates to a model's matrices: W' = W + scale * (alpha / rank) B A
 * for the attention (q, k, v, o) and feed-forward (gate, up, down) matrices it adapts
 * (docs/LORA.md). Files: a llama.cpp GGUF LoRA (general.type = adapter, adapter.type = lora) or
 * a PEFT folder (adapter_config.json + adapter_model.safetensors).
 */
typedef struct l3c_adapter l3c_adapter;

/*
 * Loads an adapter for model (every matrix checked against the model's shapes). Caller owns *out
 * (l3c_adapter_free); the model must outlive it. An adapter is immutable: it may be set on many
 * contexts of its model at once. Status: L3C_ERR_IO (missing file), L3C_ERR_FORMAT (malformed;
 * shapes, layers or ranks that do not fit the model: the message names the file and tensor),
 * L3C_ERR_UNSUPPORTED (DoRA and other PEFT types, biases, tensors of other modules),
 * L3C_ERR_NOMEM.
 */
L3C_API l3c_status l3c_adapter_load(const l3c_model *model, const char *path, l3c_adapter **out);
L3C_API void l3c_adapter_free(l3c_adapter *adapter);

/*
 * Applies adapter to every later l3c_decode on ctx with the given user scale (1: as trained);
 * scale 0 removes it; setting an adapter already set changes its scale. Several adapters may be
 * set: their deltas add up, in the order they were first set. The adapter must have been loaded
 * for ctx's model and must outlive its use by ctx (remove it, or free the context, first).
 * Keys / values already in the KV cache keep the values computed before the change: truncate the
 * sequences that should see it. May allocate (scratch for a larger rank): call between decodes.
 * Without any adapter set, l3c_decode computes exactly what it computes without this API.
 */
L3C_API l3c_status l3c_context_set_adapter(l3c_context *ctx, const l3c_adapter *adapter, float scale);

/*
 * Converts an adapter file for the base model at base_path (GGUF or Hugging Face folder; only its
 * hyperparameters are read: they give the shapes and the q / k row permutation): out_path ending
 * in ".gguf" becomes a GGUF LoRA file, anything else a PEFT folder (created if missing) with
 * base_model_name_or_path = base_model_name (NULL: the base's general.name). Tensors are written
 * as F32; files appear only when complete.
 */
L3C_API l3c_status l3c_adapter_convert(const char *base_path, const char *in_path, const char *out_path,
                                       const char *base_model_name);

/*
 * Writes base_path (GGUF or Hugging Face folder) with n_adapters adapters merged in, scales[k]
 * the user scale of adapter_paths[k]: every adapted matrix becomes W + sum_k scales[k] *
 * (alpha_k / rank) B_k A_k (float, then quantized again), everything else is copied as it is.
 * out_type: NULL or "same": each adapted matrix keeps its type where llama3c can quantize it
 * (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K), else F16; or a type name among
 * those for every adapted matrix (F16 for rows that are not a multiple of its block). progress
 * (may be NULL) is called after each tensor. The file appears at out_path only when complete.
 */
L3C_API l3c_status l3c_adapter_merge(const char *base_path, int n_adapters, const char *const *adapter_paths,
                                     const float *scales, const char *out_path, const char *out_type,
                                     void (*progress)(int64_t i, int64_t n, const char *name,
                                                      const char *type, void *user),
                                     void *user);

/* ---------------------------------------------------------------- convert */

/* Called after each tensor is written: i of n (1-based), its name and output type name. */
typedef void (*l3c_convert_progress_fn)(int64_t i, int64_t n, const char *name, const char *type,
                                        void *user);
/*
 * Writes in_path -- a Hugging Face Llama folder (config.json + safetensors + tokenizer.json) or a
 * GGUF -- as a GGUF file of out_type: "F32", "F16", "BF16", "Q8_0" (as llama.cpp's
 * convert_hf_to_gguf.py --outtype), "Q4_K_M" (llama-quantize's mix) or "Q4_0" (every matrix). 1-D
 * tensors stay F32. The file appears at out_path only when complete (see output files below); an
 * out_path that is in_path (or a file in it) is refused. progress may be NULL. Status: the loaders'
 * errors, L3C_ERR_INVALID_ARG (unknown type), L3C_ERR_IO.
 */
L3C_API l3c_status l3c_convert(const char *in_path, const char *out_path, const char *out_type,
                               l3c_convert_progress_fn progress, void *user);

/* ---------------------------------------------------------------- output files */

/*
 * Every file the library writes (convert, merge, adapters, trained models) goes to a temporary
 * file beside its destination and is renamed over it only when complete (after fsync); a
 * destination that is one of the inputs (same file, through links too) is refused with
 * L3C_ERR_INVALID_ARG. Programs use the same mechanism for their own outputs:
 *   l3c_output_open: refuses a path that is one of inputs[0..n_inputs) (NULL entries skipped; a
 *     folder stands for every file directly in it), creates the temporary file and gives its
 *     FILE* (binary, write) in *f; the caller writes and never closes f. Caller owns *out.
 *   l3c_output_commit: flushes, fsyncs, closes and renames into place; frees o (also on error,
 *     when the temporary file is removed). l3c_output_abort: closes and removes it; frees o
 *     (NULL is a no-op).
 *   l3c_output_tmp_path: the temporary file's name, for writers that need a path (SQLite).
 * l3c_remove_partial_outputs() unlinks every temporary file not yet committed or aborted; it is
 * async-signal-safe, for a SIGINT / SIGTERM handler.
 */
typedef struct l3c_output l3c_output;
L3C_API l3c_status l3c_output_open(const char *path, const char *const *inputs, int n_inputs,
                                   l3c_output **out, FILE **f);
L3C_API const char *l3c_output_tmp_path(const l3c_output *o);
L3C_API l3c_status l3c_output_commit(l3c_output *o);
L3C_API void l3c_output_abort(l3c_output *o);
L3C_API void l3c_remove_partial_outputs(void);

/* ---------------------------------------------------------------- tokenizer */

/* Loads a standalone tokenizer: Meta's tiktoken `tokenizer.model`, a Hugging Face
 * `tokenizer.json`, or a GGUF file (vocabulary only). Caller owns *out. */
L3C_API l3c_status l3c_tokenizer_load(const char *path, l3c_tokenizer **out);
L3C_API void l3c_tokenizer_free(l3c_tokenizer *tok);

enum {
    L3C_TOKENIZE_ADD_BOS = 1,       /* prepend BOS if the vocabulary asks for it (GGUF
                                       tokenizer.ggml.add_bos_token; Llama 3 / SentencePiece: yes;
                                       never twice: skipped if the text starts with it) */
    L3C_TOKENIZE_PARSE_SPECIAL = 2, /* special-token text ("<|eot_id|>") becomes the special id;
                                       default: treated as plain text */
    L3C_TOKENIZE_FORCE_BOS = 4      /* prepend BOS whatever the vocabulary says */
};

/*
 * Tokenizes len bytes of text (any bytes; invalid UTF-8 is tokenized byte-wise). Returns the
 * number of tokens written; if it exceeds cap, returns -(needed) and writes nothing useful.
 */
L3C_API int64_t l3c_tokenize(const l3c_tokenizer *tok, const char *text, size_t len, int32_t *out,
                             int64_t cap, int flags);

/* Raw bytes of one token (specials give their text). Returns bytes written, or -(needed). */
L3C_API int32_t l3c_token_to_bytes(const l3c_tokenizer *tok, int32_t id, char *buf, int32_t cap);
/* The bytes token `id` adds to streamed text when it follows token `prev` (-1: none): as
 * l3c_token_to_bytes, except that a SentencePiece vocabulary drops the leading space of the
 * first piece after BOS, as its reference decoder does. Returns bytes written, or -(needed). */
L3C_API int32_t l3c_token_to_piece(const l3c_tokenizer *tok, int32_t prev, int32_t id, char *buf,
                                   int32_t cap);
/* The vocabulary entry as stored (e.g. "Ġthe", "▁the", "<0x0A>"); borrowed; NULL if out of range. */
L3C_API const char *l3c_token_text(const l3c_tokenizer *tok, int32_t id);

/* Decodes ids to bytes (SentencePiece: the leading space after BOS is dropped as the reference does).
 * Returns bytes written, or -(needed). */
L3C_API int64_t l3c_detokenize(const l3c_tokenizer *tok, const int32_t *ids, int64_t n, char *buf,
                               int64_t cap, int skip_special);

L3C_API int32_t l3c_vocab_size(const l3c_tokenizer *tok);
L3C_API int32_t l3c_token_bos(const l3c_tokenizer *tok); /* -1 if none */
L3C_API int32_t l3c_token_eos(const l3c_tokenizer *tok);
L3C_API int32_t l3c_token_eot(const l3c_tokenizer *tok); /* <|eot_id|> / <|im_end|>, -1 if none */
/* 1 when the token ends a turn or the text (eos, eot, eom, ...). */
L3C_API int l3c_token_is_eog(const l3c_tokenizer *tok, int32_t id);
/* 1 for control / special tokens. */
L3C_API int l3c_token_is_special(const l3c_tokenizer *tok, int32_t id);
/* Id of an exact vocabulary entry (special tokens included), -1 if absent. */
L3C_API int32_t l3c_token_lookup(const l3c_tokenizer *tok, const char *text, size_t len);

/*
 * Incremental UTF-8 safe detokenization for streaming: l3c_utf8_complete(buf, n) returns the
 * length of the longest prefix of buf that does not end inside a UTF-8 sequence that could still
 * be completed (invalid bytes count as complete, so output never stalls on garbage).
 */
L3C_API size_t l3c_utf8_complete(const char *buf, size_t n);

/* ---------------------------------------------------------------- sampling */

typedef struct l3c_sampler_params {
    float temperature;     /* <= 0: greedy (argmax) */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off; applied to the last repeat_last_n accepted tokens */
    int32_t repeat_last_n; /* default 64 */
    uint64_t seed;         /* same seed, same logits -> same tokens */
    /* OpenAI presence / frequency penalties, 0: off. Over every token accepted since create or
     * reset (the completion so far): logit[j] -= frequency_penalty * count[j]
     * + presence_penalty * (count[j] > 0). Applied after the repetition penalty. */
    float presence_penalty;
    float frequency_penalty;
} l3c_sampler_params;

L3C_API l3c_sampler_params l3c_sampler_default_params(void);
L3C_API l3c_status l3c_sampler_create(const l3c_sampler_params *params, int32_t n_vocab,
                                      l3c_sampler **out);
L3C_API void l3c_sampler_free(l3c_sampler *s);
/* Adds a bias to a token's logit before sampling (OpenAI logit_bias); -INFINITY bans it. */
L3C_API l3c_status l3c_sampler_set_logit_bias(l3c_sampler *s, int32_t id, float bias);
/* Picks the next token from n_vocab logits (not modified). Does not accept it. Returns -1 only
 * under a grammar that allows no token (see l3c_sampler_set_grammar). */
L3C_API int32_t l3c_sampler_sample(l3c_sampler *s, const float *logits);
/* Records a token in the history used by the repetition, presence and frequency penalties. */
L3C_API void l3c_sampler_accept(l3c_sampler *s, int32_t id);
L3C_API void l3c_sampler_reset(l3c_sampler *s);

/*
 * Speculative decoding (a draft proposes tokens, the target checks them in one batch):
 *
 * l3c_sampler_probs writes the distribution l3c_sampler_sample would draw from for these logits
 * (every chain step, biases, penalties and the grammar applied; greedy: the argmax with 1) as
 * (ids[i], p[i]) pairs summing to 1, most probable first when the chain sorted them; returns
 * their count (at most cap: pass n_vocab for all), -1 when a grammar allows no token. Draws
 * nothing and accepts nothing.
 *
 * l3c_sampler_verify is l3c_sampler_sample for a position where a draft proposed token `draft`
 * drawn from the distribution q (q_ids, q_p: q_n pairs, e.g. from l3c_sampler_probs on the
 * draft's logits): it returns `draft` with probability min(1, p(draft) / q(draft)), else a token
 * drawn from max(0, p - q) renormalized, so the result is distributed exactly as p (Leviathan et
 * al. 2023). Greedy (temperature <= 0): `draft` if it is the argmax, else the argmax, i.e. the
 * same token as l3c_sampler_sample. draft < 0: l3c_sampler_sample. Does not accept; -1 as for
 * l3c_sampler_sample or when out of memory (the first call allocates n_vocab floats).
 *
 * l3c_sampler_mark saves the history (repetition / presence / frequency penalties) and grammar
 * state; l3c_sampler_rollback returns to it, so one sampler can give the draft's q for proposed
 * tokens it accepts provisionally. The random stream is not rolled back (draws stay
 * independent). One mark at a time; l3c_sampler_reset drops it.
 */
L3C_API int32_t l3c_sampler_probs(l3c_sampler *s, const float *logits, int32_t *ids, float *p,
                                  int32_t cap);
L3C_API int32_t l3c_sampler_verify(l3c_sampler *s, const float *logits, int32_t draft,
                                   const int32_t *q_ids, const float *q_p, int32_t q_n);
L3C_API l3c_status l3c_sampler_mark(l3c_sampler *s);
L3C_API l3c_status l3c_sampler_rollback(l3c_sampler *s);

/* ---------------------------------------------------------------- grammars (constrained output) */

/*
 * A grammar restricts what a sampler may pick: at each step only tokens whose bytes continue a
 * string of the grammar's language are candidates (the sampler renormalizes over them; greedy
 * takes the best of them). Grammars are GBNF as llama.cpp writes it (docs/GRAMMAR.md) or JSON
 * Schema, converted to GBNF (keywords the converter cannot enforce are refused by name, never
 * ignored). A compiled grammar belongs to one tokenizer's vocabulary (it holds a trie over the
 * token byte strings, built by the first grammar compiled for that tokenizer and kept by the
 * tokenizer for the next ones: ~0.1-0.5 s for 128K tokens, then well under a millisecond); it
 * does not need the tokenizer afterwards, is immutable and may be shared by many samplers and
 * threads. Compiling grammars for one tokenizer from several threads at once is safe. Control
 * tokens never match grammar text; end-of-generation tokens (l3c_token_is_eog) are allowed
 * exactly when the grammar can be complete.
 */
typedef struct l3c_grammar l3c_grammar;

/*
 * Compiles GBNF source (len bytes, need not be NUL-terminated) starting at rule root (NULL:
 * "root"). Caller owns *out (l3c_grammar_free). Status: L3C_ERR_FORMAT (syntax error, undefined
 * rule, left recursion, missing root: the message names the line, column and rule),
 * L3C_ERR_UNSUPPORTED (token references), L3C_ERR_NOMEM.
 */
L3C_API l3c_status l3c_grammar_from_gbnf(const l3c_tokenizer *tok, const char *gbnf, size_t len,
                                         const char *root, l3c_grammar **out);
/*
 * Compiles a JSON Schema (len bytes of JSON) via l3c_json_schema_to_gbnf. Caller owns *out.
 * Status: L3C_ERR_FORMAT (not JSON, or a malformed schema), L3C_ERR_UNSUPPORTED (a keyword or
 * value that cannot be enforced; the message names it and its JSON pointer), L3C_ERR_NOMEM.
 */
L3C_API l3c_status l3c_grammar_from_json_schema(const l3c_tokenizer *tok, const char *schema_json,
                                                size_t len, l3c_grammar **out);
/* The GBNF text a JSON Schema converts to (NUL-terminated; caller frees it with l3c_free).
 * Same statuses as l3c_grammar_from_json_schema. The schema `{}` or `true` means any JSON value;
 * {"type":"object"} any JSON object. */
L3C_API l3c_status l3c_json_schema_to_gbnf(const char *schema_json, size_t len, char **out_gbnf);
L3C_API void l3c_grammar_free(l3c_grammar *g);

/*
 * Constrains sampler s with grammar g (borrowed: g must outlive its use by s); NULL removes the
 * constraint. The parse state starts at the beginning of the grammar; l3c_sampler_accept advances
 * it by the accepted token (a token the grammar does not allow leaves it dead), l3c_sampler_reset
 * restarts it. With a grammar, l3c_sampler_sample returns -1 when no token is allowed (the
 * grammar is complete and the vocabulary has no end-of-generation token, the state is dead, or
 * every allowed token was banned by logit biases): l3c_last_error() says which. The vocabulary
 * of g's tokenizer must not exceed the sampler's n_vocab (L3C_ERR_INVALID_ARG).
 */
L3C_API l3c_status l3c_sampler_set_grammar(l3c_sampler *s, const l3c_grammar *g);
/* 1 when s has a grammar that is complete with nothing more allowed (only end-of-generation
 * tokens may follow), else 0. */
L3C_API int l3c_sampler_grammar_done(const l3c_sampler *s);

/* ---------------------------------------------------------------- chat */

typedef struct l3c_chat_message {
    const char *role;    /* "system", "user", "assistant", "ipython", "tool" */
    const char *content;
} l3c_chat_message;

typedef enum l3c_chat_template {
    L3C_CHAT_AUTO = 0,   /* from tokenizer.chat_template, else by vocabulary */
    L3C_CHAT_LLAMA3,     /* <|start_header_id|>role<|end_header_id|>\n\n content <|eot_id|> */
    L3C_CHAT_CHATML,     /* <|im_start|>role\n content <|im_end|>\n */
    L3C_CHAT_LLAMA2,     /* [INST] <<SYS>> ... [/INST] */
    L3C_CHAT_ZEPHYR,     /* <|user|>\n content </s>\n (TinyLlama chat) */
    L3C_CHAT_LLAMA31     /* Llama 3.1 / 3.2 / 3.3 Instruct: LLAMA3 plus the built-in system block
                            ("Cutting Knowledge Date: December 2023\nToday Date: DATE\n\n" + system),
                            tool / ipython results JSON-encoded under the ipython header */
} l3c_chat_template;

/* Which template a model uses (resolves L3C_CHAT_AUTO). */
L3C_API l3c_chat_template l3c_chat_template_detect(const l3c_model *model);
L3C_API const char *l3c_chat_template_name(l3c_chat_template t);

/*
 * Formats messages into prompt text (to be tokenized with L3C_TOKENIZE_PARSE_SPECIAL on the
 * template's own markers only: see l3c_chat_tokenize). add_assistant appends the header that
 * starts the assistant's turn. *out is NUL-terminated; caller frees it with l3c_free.
 */
L3C_API l3c_status l3c_chat_format(l3c_chat_template t, const l3c_chat_message *msgs, size_t n,
                                   int add_assistant, char **out);

/*
 * Formats and tokenizes a conversation so that the template's markers become special tokens
 * while special-token text inside message contents stays plain text (a user cannot forge a turn).
 * BOS is added when the template wants it. *out_ids is caller-freed (l3c_free).
 */
L3C_API l3c_status l3c_chat_tokenize(const l3c_model *model, l3c_chat_template t,
                                     const l3c_chat_message *msgs, size_t n, int add_assistant,
                                     int32_t **out_ids, int64_t *out_n);

/*
 * The same with the date that L3C_CHAT_LLAMA31 prints as "Today Date: DATE" (the templates'
 * date_string variable, e.g. "26 Jul 2024"); other templates ignore it. date NULL: the
 * template's own default: "26 Jul 2024" (Llama 3.1 / 3.3), or, for a model whose
 * tokenizer.chat_template calls strftime_now (Llama 3.2), today's local date as "%d %b %Y", as
 * Hugging Face renders it; l3c_chat_format_ex (no model) always uses "26 Jul 2024".
 */
L3C_API l3c_status l3c_chat_format_ex(l3c_chat_template t, const l3c_chat_message *msgs, size_t n,
                                      int add_assistant, const char *date, char **out);
L3C_API l3c_status l3c_chat_tokenize_ex(const l3c_model *model, l3c_chat_template t,
                                        const l3c_chat_message *msgs, size_t n, int add_assistant,
                                        const char *date, int32_t **out_ids, int64_t *out_n);

/*
 * Tools (function calling). tools: a JSON array of tool definitions as OpenAI's `tools` field
 * ([{"type": "function", "function": {"name", "description", "parameters"}}], rendered as given,
 * key order kept), NULL: none. tool_calls: NULL, or one entry per message: for an assistant
 * message that called tools, the JSON array of its calls as OpenAI's `tool_calls`
 * ([{"id", "type": "function", "function": {"name", "arguments"}}]; arguments a JSON object or
 * a string holding one), else NULL. Borrowed for the call.
 *   LLAMA31 (and LLAMA3 with tools): Meta's Llama 3.1 template: "Environment: ipython" in the
 *     system turn, the definitions (json.dumps(indent=4)) in front of the first user message, a
 *     call as {"name": "NAME", "parameters": ARGS} in an assistant turn (several calls: one
 *     turn each), "tool" / "ipython" messages as ipython turns.
 *   CHATML, LLAMA2, ZEPHYR (no tool protocol of their own): the definitions are listed at the end
 *     of the system message (one is added) with the instruction to reply with only
 *     {"tool_calls": [{"name": ..., "arguments": {...}}]}; a call is rendered in that form.
 * docs/SERVER.md ("Tools") gives the exact texts.
 */
typedef struct l3c_chat_tools {
    const char *tools;
    const char *const *tool_calls; /* [n] or NULL */
} l3c_chat_tools;

/* l3c_chat_format_ex / l3c_chat_tokenize_ex with tools (NULL: none). */
L3C_API l3c_status l3c_chat_format_tools(l3c_chat_template t, const l3c_chat_message *msgs,
                                         size_t n, const l3c_chat_tools *tools, int add_assistant,
                                         const char *date, char **out);
L3C_API l3c_status l3c_chat_tokenize_tools(const l3c_model *model, l3c_chat_template t,
                                           const l3c_chat_message *msgs, size_t n,
                                           const l3c_chat_tools *tools, int add_assistant,
                                           const char *date, int32_t **out_ids, int64_t *out_n);

/* ---------------------------------------------------------------- training */

/*
 * A trainer fine-tunes a loaded model or pre-trains a new one on a data file (docs/TRAINING.md):
 *   L3C_TRAIN_LORA (default): LoRA adapters on the model's matrices; the base stays in its file
 *     type (quantized weights are dequantized per tile in the backward pass, QLoRA-style) and is
 *     frozen; only the adapters A, B are trained. Save with l3c_trainer_save_adapter.
 *   L3C_TRAIN_FULL: every weight of an F32 / F16 / BF16 base (an fp32 copy read from the model's
 *     file); quantized bases are refused. Save with l3c_trainer_save_model.
 *   L3C_TRAIN_SCRATCH: a new fp32 llama of the shapes in config_path (JSON), seeded random
 *     weights, with the model's vocabulary and tokenizer (the model's weights are not used).
 * The optimizer is AdamW with linear warmup and cosine decay, global gradient-norm clipping.
 * A run is a pure function of (model, data, params): the batch of step s depends only on (seed,
 * s), so a run saved with l3c_trainer_save_state and continued by l3c_trainer_load_state in a
 * new trainer (same model, data and params) gives bitwise the same result as one that was
 * never interrupted.
 *
 * Data (data_path, eval_data_path): .txt plain text (cut into windows of seq_len tokens), JSONL
 * with {"text": ...} per line, or JSONL chat {"messages": [{"role", "content"}, ...]} rendered
 * with the model's chat template, trained on the assistant turns only. Errors name the file and
 * line.
 *
 * Distributed (l3c_dist_init under mpirun, a build with MPI=1): with data_parallel set every
 * rank holds the whole model and computes its share of the rows of every batch; gradients are
 * summed over the ranks and every rank takes the same step. Every rank must make the same calls
 * in the same order (create, step, eval, save, load); rank 0 writes the files and the metrics
 * log, the other ranks write nothing. Without a job of several ranks it changes nothing.
 *
 * A trainer is used by one thread at a time (it runs its own n_threads workers). The model must
 * outlive it and may be used by contexts meanwhile (LoRA and full training do not modify it).
 */
typedef struct l3c_trainer l3c_trainer;

typedef enum l3c_train_mode {
    L3C_TRAIN_LORA = 0,   /* adapters on a loaded base */
    L3C_TRAIN_FULL = 1,   /* every weight of an unquantized base */
    L3C_TRAIN_SCRATCH = 2 /* a new model of config_path's shapes with the base's tokenizer */
} l3c_train_mode;

/* LoRA targets: bit k adapts matrix k of every block, named by l3c_train_target_name(k). */
enum {
    L3C_TRAIN_TARGET_Q = 1 << 0,    /* attn_q      / self_attn.q_proj */
    L3C_TRAIN_TARGET_K = 1 << 1,    /* attn_k      / self_attn.k_proj */
    L3C_TRAIN_TARGET_V = 1 << 2,    /* attn_v      / self_attn.v_proj */
    L3C_TRAIN_TARGET_O = 1 << 3,    /* attn_output / self_attn.o_proj */
    L3C_TRAIN_TARGET_GATE = 1 << 4, /* ffn_gate    / mlp.gate_proj */
    L3C_TRAIN_TARGET_UP = 1 << 5,   /* ffn_up      / mlp.up_proj */
    L3C_TRAIN_TARGET_DOWN = 1 << 6, /* ffn_down    / mlp.down_proj */
    L3C_TRAIN_TARGET_ALL = (1 << 7) - 1,
    L3C_TRAIN_N_TARGETS = 7
};
/* Short name of target bit k (0 .. L3C_TRAIN_N_TARGETS-1): "q", "k", "v", "o", "gate", "up",
 * "down"; NULL out of range. */
L3C_API const char *l3c_train_target_name(int k);

/* What one optimizer step did (l3c_trainer_step, and the on_step callback). */
typedef struct l3c_train_step_info {
    int64_t step; /* steps done, this one included (1 .. total_steps) */
    int64_t total_steps;
    int64_t epoch;    /* 0-based pass over the training examples */
    float loss;       /* mean loss over the step's trained targets (every rank's) */
    float lr;         /* learning rate used */
    float grad_norm;  /* global gradient norm before clipping */
    double eval_loss; /* evaluated after this step (eval_every, last step), else NaN */
    /* since the trainer was created (resumed runs count from the step they resumed at): */
    int64_t tokens;           /* positions computed (batch x seq_len x grad_accum per step) */
    int64_t trained_tokens;   /* targets with a loss (padding and prompt tokens excluded) */
    double train_seconds;     /* wall seconds spent in steps (not evaluation, not saving) */
    double tok_per_s;         /* tokens / train_seconds */
    double trained_tok_per_s; /* trained_tokens / train_seconds */
    double elapsed_s;         /* wall seconds since the trainer's first step or evaluation */
} l3c_train_step_info;

/* Called after every step with a finite loss (info borrowed for the call). */
typedef void (*l3c_train_step_fn)(void *user, const l3c_train_step_info *info);

typedef struct l3c_trainer_params {
    int mode;                /* l3c_train_mode; default L3C_TRAIN_LORA */
    const char *config_path; /* L3C_TRAIN_SCRATCH: the shapes (JSON: n_embd, n_layer, n_head,
                                n_head_kv, n_ff, rope_theta, norm_eps, tied, n_ctx, or a Hugging
                                Face config.json); docs/TRAINING.md */
    /* LoRA */
    unsigned lora_targets; /* L3C_TRAIN_TARGET_* bits; default ALL */
    int32_t lora_rank;     /* default 8 */
    float lora_alpha;      /* scale alpha / rank; default 16 */
    int rslora;            /* 1: rank-stabilized, scale alpha / sqrt(rank) (PEFT use_rslora) */
    float lora_dropout;    /* [0, 0.9]: drop adapter inputs while training; default 0 */
    /* data */
    const char *data_path;      /* required */
    const char *eval_data_path; /* evaluation examples; NULL: eval_frac of data_path held out */
    float eval_frac;    /* [0, 0.5]; default 0.05; 0 (and no eval_data_path): no evaluation */
    int32_t seq_len;    /* tokens per sequence, >= 2; default 256 */
    int32_t batch;      /* sequences per micro-batch; default 4 (>= l3c_dist_size() with
                           data_parallel) */
    int32_t grad_accum; /* micro-batches per step, gradients summed; default 1 */
    int pack;           /* pack short examples into rows: 1, 0, or -1 (default): on for
                           JSONL data, off for plain text */
    /* optimizer and schedule */
    int64_t steps;      /* optimizer steps; 0 (default): epochs over the training examples */
    int32_t epochs;     /* default 1 */
    float lr;           /* peak learning rate; < 0 (default): 2e-4 LoRA, 1e-5 full, 1e-3
                           scratch */
    int32_t warmup;     /* linear warmup steps; default 0 */
    float min_lr_ratio; /* cosine decay to min_lr_ratio * lr at the last step; default 0.1 */
    float weight_decay; /* AdamW decoupled weight decay (matrices only); default 0 */
    float grad_clip;    /* max global gradient norm; default 1; 0: off */
    uint64_t seed;      /* initialisation, data split and order, dropout; default 42 */
    int32_t eval_every; /* l3c_trainer_step evaluates every eval_every steps and after
                           the last; -1 (default): 10 times per run; 0: after the last only */
    /* run */
    int n_threads;             /* <= 0: the model's default */
    int checkpoint;            /* 1 (default): recompute activations layer by layer in backward
                                  (less memory); 0: keep them (faster) */
    int data_parallel;         /* 1 (default): under a job of several ranks, share every batch */
    FILE *log;                 /* data summaries and notes while creating; NULL (default): none */
    FILE *progress;            /* progress line after each step (redrawn on a terminal); NULL
                                  (default): none */
    int32_t log_every;         /* progress not on a terminal: a line every log_every steps; 10 */
    const char *metrics_path;  /* JSONL log, one line per step (and per evaluation); a trainer
                                  that resumed keeps the lines of the steps done and appends;
                                  NULL (default): none */
    l3c_train_step_fn on_step; /* NULL: none */
    void *user;                /* passed to on_step */
} l3c_trainer_params;

L3C_API l3c_trainer_params l3c_trainer_default_params(void);

/*
 * Reads the data, builds the training model and allocates the optimizer state. Paths are read
 * during the call only (metrics_path is copied). Caller owns *out (l3c_trainer_free); model
 * must outlive it. Status: L3C_ERR_INVALID_ARG (a parameter out of range: the message names
 * it; a quantized base with L3C_TRAIN_FULL; too few examples to hold out an eval share),
 * L3C_ERR_IO / L3C_ERR_FORMAT (data or config files: the message names the file, line and
 * key), L3C_ERR_UNSUPPORTED (a model the trainer cannot train, e.g. linear rope scaling),
 * L3C_ERR_NOMEM.
 */
L3C_API l3c_status l3c_trainer_create(const l3c_model *model, const l3c_trainer_params *params,
                                      l3c_trainer **out);
L3C_API void l3c_trainer_free(l3c_trainer *t);

typedef struct l3c_trainer_info {
    int mode;                /* l3c_train_mode */
    int64_t total_steps;     /* steps of the whole run */
    int64_t next_step;       /* steps done (0 .. total_steps) */
    size_t n_trained_values; /* parameters being trained (adapter values or weights) */
    int32_t n_layer, n_embd; /* of the trained model (scratch: the config's) */
    int n_threads;
    int packed;                     /* 1 when the data were packed */
    size_t n_train_examples;        /* rows of the training set (packed rows when packed) */
    size_t n_eval_examples;         /* 0: no evaluation set */
    int32_t batch_begin, batch_end; /* this rank's rows [begin, end) of every micro-batch */
    uint64_t fingerprint;           /* hash of what a resumed run must share with this one */
} l3c_trainer_info;

L3C_API void l3c_trainer_get_info(const l3c_trainer *t, l3c_trainer_info *info);

/*
 * Runs the next optimizer step (grad_accum micro-batches, gradients summed over them and over
 * the ranks, one AdamW update), evaluates when eval_every says so, writes the metrics line,
 * updates the progress line, calls on_step. info (may be NULL) receives what it did. A loss that
 * is not finite is returned in info->loss and is not logged (the caller should stop: lower lr).
 * Status: L3C_ERR_INVALID_ARG (every step is done), compute errors.
 */
L3C_API l3c_status l3c_trainer_step(l3c_trainer *t, l3c_train_step_info *info);

/* Mean loss over every trained target of the evaluation set (no dropout), written to the
 * metrics log as {"step": steps done, "eval_loss", "eval_ppl"}. L3C_ERR_INVALID_ARG when the
 * trainer has no evaluation set. */
L3C_API l3c_status l3c_trainer_eval(l3c_trainer *t, double *loss);

/* Ends the progress line (a newline on a terminal) before the caller writes to its stream;
 * done by itself after the last step. */
L3C_API void l3c_trainer_progress_end(l3c_trainer *t);

/*
 * Saving. Under data parallel these are collective: every rank calls them, the ranks' parameters
 * are checked to be bitwise equal (else the job ends with a message), rank 0 writes.
 *   l3c_trainer_save_adapter (LoRA): path ending in ".gguf": a llama.cpp GGUF LoRA, else a PEFT
 *     folder (adapter_config.json + adapter_model.safetensors, created if missing); both load
 *     with l3c_adapter_load.
 *   l3c_trainer_save_model (full, scratch): a llama GGUF of F32 tensors with the base's
 *     tokenizer and chat template; general.name = name (NULL: the base's name + "-ft" for full,
 *     "llama3c-pretrained" from scratch).
 *   l3c_trainer_save: what the mode produces into the folder dir: adapter.gguf and adapter/
 *     (LoRA) or model.gguf.
 *   l3c_trainer_save_state: parameters, AdamW moments, step count and the fingerprint, for
 *     l3c_trainer_load_state.
 * Files appear only when complete (see output files). L3C_ERR_INVALID_ARG: the wrong mode.
 */
L3C_API l3c_status l3c_trainer_save_adapter(l3c_trainer *t, const char *path);
L3C_API l3c_status l3c_trainer_save_model(l3c_trainer *t, const char *path, const char *name);
L3C_API l3c_status l3c_trainer_save(l3c_trainer *t, const char *dir);
L3C_API l3c_status l3c_trainer_save_state(l3c_trainer *t, const char *path);

/* Continues the run saved at path: call before the first step. The state must come from a
 * trainer with the same model, data and params (its fingerprint), else L3C_ERR_INVALID_ARG
 * naming the file; L3C_ERR_IO (cannot open), L3C_ERR_FORMAT (not a state, truncated). On error
 * the trainer is unchanged. */
L3C_API l3c_status l3c_trainer_load_state(l3c_trainer *t, const char *path);

/* Writes the loss plot (SVG, 800 x 450) of a metrics log: the train loss per step as a line,
 * eval losses as points. Errors name the file and line. */
L3C_API l3c_status l3c_train_plot_svg(const char *metrics_path, const char *svg_path,
                                      const char *title);

/* ---------------------------------------------------------------- system */

/* The compute path chosen at start-up ("avx512", "avx2", "ref", ...); L3C_KERNELS=<path> forces one. */
L3C_API const char *l3c_backend_path(void);
/* Physical cores (default thread count). */
L3C_API int l3c_default_threads(void);

/* ---------------------------------------------------------------- distributed runs (MPI)
 * A program started N times by mpirun (in a build with MPI=1) joins one job of N ranks here;
 * models loaded with l3c_model_params.split then run their forward passes together: every rank
 * must make the same calls (load, context, l3c_decode with the same batches) in the same order,
 * and rank 0 gets the logits: l3c_get_logits on the other ranks gives rows of zeros (they
 * follow rank 0's choices: l3c_dist_bcast). Rank 0 is the one that reads input and writes output;
 * its batches are the reference (another rank's different batch ends the job with a message).
 * A peer that fails ends every rank with a message naming it. Without MPI, or started without a
 * launcher, the program is rank 0 of 1 and these calls cost nothing. docs/DISTRIBUTED.md. */

/* Joins the job if an MPI launcher started the process; call once before anything else, with
 * main's arguments. L3C_OK or L3C_ERR_IO (MPI could not start). */
L3C_API l3c_status l3c_dist_init(int *argc, char ***argv);
/* Leaves the job (MPI_Finalize); call at the end of main, after every model is freed. */
L3C_API void l3c_dist_finalize(void);
L3C_API int l3c_dist_rank(void); /* 0 .. size-1 */
L3C_API int l3c_dist_size(void); /* 1 without a job */
/* "mpi" in a build with MPI=1, else "none" */
L3C_API const char *l3c_dist_transport(void);
/* Copies rank 0's bytes[n] to every rank (e.g. the sampled token, a seed, an input line).
 * Collective; the others may wait as long as rank 0 takes (e.g. reading input): only a rank that
 * stops answering ends the job while they wait (l3c_dist_set_timeout). */
L3C_API void l3c_dist_bcast(void *bytes, size_t n);
/* A rank that has waited `seconds` in a forward pass's message makes every rank's watchdog check
 * its peers: a rank that is stopped (does not answer within 2-10 s) or has computed for longer than
 * `seconds` ends the job on every rank with a message naming it. 0: never. Default 300, or the
 * environment's L3C_DIST_TIMEOUT. Needs an MPI with MPI_THREAD_MULTIPLE (Open MPI has it). */
L3C_API void l3c_dist_set_timeout(double seconds);
/* Tokens per pipeline micro-batch of a layer split (l3c_model_params.split = L3C_SPLIT_LAYERS):
 * l3c_decode runs a batch through the stages in consecutive ranges of this many tokens, so that
 * N stages work on N of them at once (results are bitwise the same for any value). 0 (default):
 * automatic, a batch of T tokens in ranges of max(32, ceil(T / 2N)). Every rank must use the same
 * value. Process-wide; any time between l3c_decode calls. */
L3C_API void l3c_dist_set_ubatch(int32_t rows);
/* A context driven from rank 0 (a server: only rank 0 knows what comes next). Every rank creates
 * the same context; rank 0 calls l3c_dist_lead on it, then uses it as usual: each l3c_decode and
 * l3c_kv_seq_truncate is first sent to the other ranks, which sit in l3c_dist_follow making the
 * same calls on theirs, until rank 0 calls l3c_dist_release (which l3c_dist_follow returns on).
 * Only rank 0's results mean anything to the caller. In a run of one rank they do nothing. */
L3C_API l3c_status l3c_dist_lead(l3c_context *ctx);
L3C_API l3c_status l3c_dist_follow(l3c_context *ctx);
L3C_API void l3c_dist_release(l3c_context *ctx);
/* Payload bytes this rank has sent to its peers so far, and the wall seconds it has spent in
 * message passing (transfers and waiting for its peers). */
L3C_API uint64_t l3c_dist_bytes_sent(void);
L3C_API double l3c_dist_comm_seconds(void);
/* Ends every rank of the job with status 1 after printing "llama3c: rank R of N: why" (for a
 * rank that fails alone: its peers must not wait for it). Returns only in a run of one rank. */
L3C_API void l3c_dist_abort(const char *why);

#ifdef __cplusplus
}
#endif
#endif /* LLAMA3C_H */
