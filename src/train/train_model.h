/*
 * train_model.h -- an fp32 llama for training: forward to a loss, backward to gradients of
 * every parameter, AdamW steps.
 *
 * Memory (like llm.c): all parameters live in one arena `params` [n_params]; gradients in a
 * second (`grads`), AdamW moments in a third and fourth (`adam_m`, `adam_v`, allocated at the
 * first step). The tensor table names every parameter by its GGUF name, in arena order:
 *   token_embd [V x D]; per layer: attn_norm [D], attn_q [H*hd x D], attn_k [Hkv*hd x D],
 *   attn_v [Hkv*hd x D], attn_output [D x H*hd], ffn_norm [D], ffn_gate [F x D], ffn_up [F x D],
 *   ffn_down [D x F]; output_norm [D]; output [V x D] unless tied (then the head is token_embd).
 * rope_freqs (Llama 3.1) is a constant, not a parameter.
 *
 * A batch is B sequences of T tokens ([B x T] ids, positions 0..T-1 in each, or per packed
 * example: l3c_train_forward_pos) with targets
 * [B x T]: target < 0 is masked (padding, prompt tokens), so right-padded chat examples train
 * on their answer tokens only. The loss is the mean over unmasked targets.
 *
 * Activations are sized at the first forward for (B, T) (reallocated when the batch grows).
 * Each layer runs a chunk of whole rows at a time (l3c_train_chunk_rows: about
 * L3C_TRAIN_CHUNK_TOKENS tokens; a row's attention needs only its own row), forward and backward.
 * With checkpointing on, only each layer's input (the residual stream, N x D) is kept; the forward
 * runs every chunk through one chunk-sized set of activation buffers and the backward recomputes
 * layer l's chunk into it right before that chunk's backward, with one chunk-sized set of
 * gradient buffers (only dL/dx of the residual stream is N x D). The chunks are the same with and
 * without checkpointing, so the gradients are bitwise identical to the stored-activation path.
 *
 * Ownership: l3c_train_model owns all its arenas and buffers (l3c_train_model_free).
 */
#ifndef L3C_TRAIN_MODEL_H
#define L3C_TRAIN_MODEL_H

#include "kernels/ops.h"
#include "kernels/threadpool.h"
#include "model/lora.h"
#include "train/optim.h"
#include "util/util.h"

struct l3c_model;

typedef struct l3c_train_config {
    int32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff;
    int32_t n_rot;    /* rotated dims per head; 0 in create() means head_dim */
    float rope_theta; /* 10000 */
    float norm_eps;   /* 1e-5 */
    int tied;         /* output head shares token_embd */
    int32_t n_ctx;    /* context length a saved model declares (llama.context_length); the
                       * math does not use it; from_gguf / lora: the file's, else 0 */
} l3c_train_config;

/* Pointers of one set of parameters (or gradients) into an arena. */
typedef struct l3c_train_layer {
    float *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
} l3c_train_layer;
typedef struct l3c_train_params {
    float *tok_embd;
    l3c_train_layer *layers; /* [n_layer] */
    float *output_norm;
    float *output; /* == tok_embd when tied */
} l3c_train_params;

typedef struct l3c_train_tensor {
    char name[64];
    int64_t rows, cols; /* [rows x cols] row-major; vectors have rows == 1 */
    size_t offset;      /* in floats, into params / grads */
    int decay;          /* AdamW weight decay applies (matrices, not norm vectors) */
} l3c_train_tensor;

/* The 7 matrices of a block, in l3c_lora_target order (q, k, v, o, gate, up, down). */
#define L3C_TRAIN_N_MATS L3C_LORA_N_TARGETS

typedef struct l3c_train_acts l3c_train_acts; /* per-layer saved activations (train_model.c) */

typedef struct l3c_train_model {
    l3c_train_config cfg;
    /* LoRA mode (l3c_train_model_lora): the base model's matrices stay in their file types
     * (mmapped, never an fp32 copy) and are frozen, like its norms and embedding; the
     * parameters are the adapter's arena (params == lora->arena, grads == dlora->arena).
     * NULL in full mode. */
    const struct l3c_model *base;
    l3c_lora_adapter *lora, *dlora;
    float lora_scale;          /* alpha / rank */
    /* LoRA dropout (PEFT's lora_dropout): with lora_dropout p > 0 and dropout_on, a forward drops
     * each element of every LoRA branch's input with probability p (kept ones scaled 1/(1-p)),
     * by a mask hashed from (dropout_seed, layer, matrix, element): the backward (and a
     * checkpointed recompute) regenerate it. dropout_on 0 (evaluation): no dropout. */
    float lora_dropout;
    int dropout_on;
    uint64_t dropout_seed;
    int drop_fwd;              /* the last forward's: dropout applied, with this seed */
    uint64_t drop_fwd_seed;
    float *drop_buf;           /* [N x widest n_in]: a masked input / its gradient */
    /* exact mode (set before the first forward): matrices of a quantized base are multiplied in
     * fp32 forward too, dequantized a slice of rows at a time (no 8-bit activations): the
     * gradients of W + s B A on the dequantized weights, as with an F32 base (the backward's dx
     * is fp32 on W's blocks in both modes). Slower; for tests and checks. */
    int exact;
    float *exact_w, *exact_y;  /* a slice of W [<= 2^20 floats], its product [512 x <= 4096] */
    void *exact_scratch;
    /* every matrix as an l3c_weight ([n_layer x 7] + the head): F32 views of the parameter
     * arena in full mode, the base's weights in LoRA mode */
    l3c_weight *mats, head;
    l3c_threadpool *tp;        /* NULL: one thread (l3c_train_model_set_threads) */
    void *mm_scratch;          /* l3c_matmul scratch for L3C_TRAIN_MM_ROWS tokens */
    int32_t head_dim;
    float *rope_freqs; /* [n_rot/2] or NULL */
    size_t n_params;
    float *params, *grads, *adam_m, *adam_v;
    l3c_train_params p, g;
    l3c_train_tensor *tensors;
    int n_tensors;
    int checkpoint; /* recompute layer activations in backward */
    int64_t chunk_tokens; /* tokens a layer runs at a time (whole rows, at least one); 0:
                           * L3C_TRAIN_CHUNK_TOKENS. Set before a forward (tests use small ones). */
    int adam_t;     /* AdamW steps taken */

    /* activations of the last forward (B x T) */
    int64_t B, T, cap_tokens;
    int64_t cap_rows; /* rows of a chunk (l3c_train_chunk_rows) the buffers were sized for */
    int64_t c0, cn;   /* the chunk the layer ops run now: first token, tokens */
    int cap_ckpt;
    int32_t *ids, *targets; /* [N] copies */
    int32_t *pos;           /* [N] rope positions (t, or restarting per packed example) */
    float *x_res;           /* [(n_layer + 1) x N x D] input of each layer, then the final stream */
    l3c_train_acts *acts;   /* [n_layer] of N tokens, or [1] of one chunk with checkpointing */
    struct l3c_train_fwd *fwd; /* the model as l3c_block_forward runs it (train_model.c), or NULL */
    float *rope_cos, *rope_sin; /* [N x n_rot/2] */
    float *xn_f, *rstd_f;   /* final norm: [N x D], [N] */
    int keep_logits;        /* 1: the forward also keeps all logits in `logits` (tests, dumps) */
    int cap_keep;
    float *logits;          /* [N x V] raw logits of the last forward when keep_logits, else NULL */
    float *xent_buf;        /* [l3c_train_xent_rows x V]: one chunk of logits / dlogits */
    float *lse;             /* [N] */
    int64_t n_valid;        /* unmasked targets of the last forward */
    float *scratch;         /* backward gradient buffers: dL/dx_res [N x D], the rest per chunk */
    float *lora_tmp; /* [chunk x max n_out]: a LoRA branch's output; its gradient [chunk x rank] */
} l3c_train_model;

/* Token rows per matmul call (bounds the kernel scratch). */
#define L3C_TRAIN_MM_ROWS 512
/* Floats of one chunk of logits: the head and the cross-entropy run this many / n_vocab rows at a
 * time (16 .. L3C_TRAIN_MM_ROWS), forward and again in backward (4 M floats: 16 MiB). */
#define L3C_TRAIN_XENT_FLOATS (1 << 22)
int64_t l3c_train_xent_rows(const l3c_train_model *m, int64_t N);
/* Tokens of a layer chunk: at least one whole row of a batch; 1024 keeps a 1B-shaped layer's
 * saved activations and their gradients near 150 MB each however large B x T is. */
#define L3C_TRAIN_CHUNK_TOKENS 1024
/* Rows of B rows of T tokens a layer runs at a time: max(1, chunk_tokens / T), at most B. */
int64_t l3c_train_chunk_rows(const l3c_train_model *m, int64_t B, int64_t T);

/* A model with seeded random weights: matrices N(0, 1/n_in) (token_embd and output too, so a
 * tied head starts with O(1) logits; attn_output and ffn_down also scaled by 1/sqrt(2 n_layer)),
 * norms 1. */
l3c_status l3c_train_model_create(const l3c_train_config *cfg, uint64_t seed, l3c_train_model **out);
/* The weights of a llama GGUF, dequantized to fp32 with the type table's to_float. Errors name
 * the file and the tensor. */
l3c_status l3c_train_model_from_gguf(const char *path, l3c_train_model **out);
/*
 * LoRA on a loaded base model (which must outlive the training model): rank-`rank` adapters on
 * the targets (bit mask of l3c_lora_target) of every layer, scale alpha / rank. init NULL: A
 * ~ U(-1/sqrt(n_in), 1/sqrt(n_in)) from seed (PEFT's kaiming_uniform(a=sqrt(5))), B = 0, so
 * training starts from the base model; else a copy of init (same shapes required: resume).
 * Models with linear rope scaling are refused (the training rope has no position scale).
 */
l3c_status l3c_train_model_lora(const struct l3c_model *base, unsigned targets, int32_t rank, float alpha,
                                uint64_t seed, const l3c_lora_adapter *init, l3c_train_model **out);
/* Runs the kernels on n_threads threads (default 1). */
l3c_status l3c_train_model_set_threads(l3c_train_model *m, int n_threads);
void l3c_train_model_free(l3c_train_model *m);

/*
 * Forward of B sequences of T tokens. targets [B x T] may be NULL (logits only, *loss = 0).
 * With m->keep_logits set, leaves m->logits [B*T x V] (raw) for inspection; otherwise the logits
 * exist one chunk of rows at a time (l3c_train_xent_rows), recomputed in backward. *loss: mean
 * cross-entropy over unmasked targets (0 when there are none).
 */
l3c_status l3c_train_forward(l3c_train_model *m, const int32_t *ids, const int32_t *targets, int64_t B,
                             int64_t T, float *loss);
/*
 * The same for packed rows: pos [B x T] (NULL: 0..T-1 per row) restarts at 0 where an example
 * starts and counts up by one inside it (anything else is refused). Each example gets its own
 * rope positions and attends only to its own tokens, so the loss and the gradients of a packed
 * batch are those of the examples padded one per row (tested within 1e-6).
 */
l3c_status l3c_train_forward_pos(l3c_train_model *m, const int32_t *ids, const int32_t *targets,
                                 const int32_t *pos, int64_t B, int64_t T, float *loss);
/* Sets every gradient to 0. */
void l3c_train_zero_grad(l3c_train_model *m);
/* Backward of the last forward (which needs targets): ADDS d(loss)/d(param) into m->grads. */
l3c_status l3c_train_backward(l3c_train_model *m);
/* The same with the loss normalized by n_norm targets (>= this forward's m->n_valid) instead of
 * this forward's: gradient accumulation over micro-batches passes their total, so the summed
 * gradients are those of one batch holding them all. */
l3c_status l3c_train_backward_n(l3c_train_model *m, int64_t n_norm);

/* One optimizer step on m->grads: clip (p->grad_clip), lr = l3c_lr_at(p, step), AdamW with
 * weight decay on the tensors marked decay (matrices; not norm vectors). *grad_norm (optional)
 * gets the norm before clipping, *lr_out the rate used. */
l3c_status l3c_train_step(l3c_train_model *m, const l3c_adamw_params *p, int step, float *grad_norm,
                          float *lr_out);

/* The dropout mask (0 or 1/(1-p)) of the last forward for matrix t (l3c_lora_target) of layer l:
 * out [n] = elements 0..n-1 of its [N x n_in] input, row-major (tests hand it to torch). */
void l3c_train_dropout_mask(const l3c_train_model *m, int l, int t, int64_t n, float *out);

/* Bytes of saved activations per token for this model at sequence length T (doc figure). */
size_t l3c_train_act_bytes_per_token(const l3c_train_model *m, int64_t T, int checkpoint);

#endif /* L3C_TRAIN_MODEL_H */
