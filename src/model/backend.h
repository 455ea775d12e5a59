/*
 * backend.h -- the ops the forward pass is made of, as one table of function pointers per
 * backend. forward.c is a fixed sequence of these calls (docs/ARCHITECTURE.md lists it); a
 * backend supplies them for its memory and its kernels. The CPU backend (backend_cpu.c) is the
 * kernels of src/kernels/ plus attention.c. The block's sequence is defined once
 * (l3c_block_forward, block.c): decode runs it on this table, training on its own
 * (src/train/train_model.c: the same math, keeping what the backward needs), and the splits of
 * src/dist override a few ops of the CPU one.
 *
 * Conventions: activations are row-major float32 [T x n], one row per batch token in batch
 * order (E = n_embd, hd = head_dim). Buffers are explicit arguments, so an op may be called on
 * any buffer of the right shape; the context supplies the rest: the model's shapes, the thread
 * pool, the matmul scratch and attention workspace (l3c_activations) and the KV cache. Ops do
 * not allocate and cannot fail: shapes are checked when the weights are bound, batches when
 * l3c_decode validates them. An op costs one indirect call; the work inside is unchanged.
 */
#ifndef L3C_BACKEND_H
#define L3C_BACKEND_H

#include "kernels/ops.h"
#include "llama3c.h"

typedef struct l3c_backend {
    const char *name;
    /* x [T x w->n_in] = rows ids[T] of the embedding matrix w, converted to float */
    void (*get_rows)(l3c_context *ctx, const l3c_weight *w, const int32_t *ids, int64_t T, float *x);
    /* y [n x cols] = rows idx[n] of x [. x cols] */
    void (*gather_rows)(l3c_context *ctx, const float *x, const int32_t *idx, int64_t n, int64_t cols,
                        float *y);
    /* y [T x n] = x * rstd * g[n], rstd = rsqrt(mean(x^2) + eps) per row; rstd: NULL, or [T]
     * receiving each row's (what a backward needs) */
    void (*rmsnorm)(l3c_context *ctx, const float *x, const float *g, float *y, float *rstd,
                    int64_t T, int64_t n, float eps);
    /* y [T x w->n_out] = x [T x w->n_in] @ w^T */
    void (*matmul)(l3c_context *ctx, const l3c_weight *w, const float *x, float *y, int64_t T);
    /* n <= L3C_MATMUL_MAX weights with the same n_in on the same x in one pass,
     * y[i] [T x w[i]->n_out] = x @ w[i]^T (bit-identical to n matmuls); swiglu (n == 2, equal
     * n_out): the fused feed-forward, y[0] = silu(y[0]) * y[1] afterwards (y[1] keeps up) */
    void (*matmul_multi)(l3c_context *ctx, int n, const l3c_weight *const *w, float *const *y,
                         const float *x, int64_t T, bool swiglu);
    /* cos_t, sin_t [T x n_rot/2]: the rotation angles of positions pos[T] */
    void (*rope_tables)(l3c_context *ctx, const int32_t *pos, int64_t T, float *cos_t, float *sin_t);
    /* rotates the first n_rot dims of every head of x [T x n_heads*hd] by the tables */
    void (*rope)(l3c_context *ctx, float *x, int64_t T, int n_heads, const float *cos_t,
                 const float *sin_t);
    /* k, v [T x n_head_kv*hd] -> the cache rows (seq_id[t], layer, pos[t]) of the batch's tokens */
    void (*kv_store)(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *k,
                     const float *v);
    /* out [T x n_head*hd]: token t, head h = softmax(q_h . K[0..pos_t] / sqrt(hd)) . V[0..pos_t]
     * over the layer's cache of t's sequence (causal; GQA: kv head h / (n_head / n_head_kv)).
     * probs: NULL, or [n_head*T x n_kv] receiving row h*T + t's probabilities (columns
     * 0..pos_t; the others are left alone) */
    void (*attention)(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *q, float *out,
                      float *probs, int64_t n_kv);
    /* h[i] = silu(g[i]) * u[i], n elements; h may be g (in place) */
    void (*swiglu)(l3c_context *ctx, float *h, const float *g, const float *u, int64_t n);
    /* out[i] = x[i] + y[i], n elements (the residual connection); out may be x (in place) */
    void (*add)(l3c_context *ctx, float *out, const float *x, const float *y, int64_t n);
    /* LoRA: y [T x n_out] += scale * (x [T x n_in] @ A^T) @ B^T, A [rank x n_in], B [n_out x rank]
     * (the context's lora_tmp holds x A^T, [T x rank]) */
    void (*lora)(l3c_context *ctx, const float *A, const float *B, int32_t rank, int64_t n_in,
                 int64_t n_out, float scale, const float *x, float *y, int64_t T);
    /* y [T x n_out] += the delta of every adapter set on the context that adapts matrix target
     * (l3c_lora_target) of layer, in the order they were set; x [T x n_in] is the matrix's
     * input. The block calls it after each matrix when ctx->n_adapters > 0. */
    void (*lora_deltas)(l3c_context *ctx, int32_t layer, int target, const float *x, float *y,
                        int64_t T);
    /* ---- backward (l3c_block_backward, block.c): NULL in a backend that only decodes. Each
     * ADDS into the gradients it writes (the caller zeroes them), as train_ops.h's pairs; the
     * activations are the forward's (l3c_block_bufs), kept by this backend's forward ops where
     * they are not arguments (attention's row log-sum-exp, LoRA's x A^T). */
    /* dx [T x n] += d(rmsnorm)/dx^T dy; dg [n] += its gain's gradient (dg NULL: frozen) */
    void (*rmsnorm_bwd)(l3c_context *ctx, const float *x, const float *g, const float *rstd,
                        const float *dy, float *dx, float *dg, int64_t T, int64_t n);
    /* matrix target (l3c_lora_target) w of layer, y = x w^T (+ adapters): dx [T x w->n_in] += dy W
     * (dx NULL: not needed), dW += dy^T x (dW NULL: frozen), and the trained adapters' gradients */
    void (*matmul_bwd)(l3c_context *ctx, int32_t layer, int target, const l3c_weight *w,
                       const float *x, const float *dy, float *dx, float *dW, int64_t T);
    /* dx [T x n_heads*hd] rotated back by the tables (in place) */
    void (*rope_bwd)(l3c_context *ctx, float *dx, int64_t T, int n_heads, const float *cos_t,
                     const float *sin_t);
    /* of the layer's attention over q, k, v: dq, dk, dv += from dout [T x n_head*hd] */
    void (*attention_bwd)(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *q,
                          const float *k, const float *v, const float *dout, float *dq, float *dk,
                          float *dv);
    /* h = silu(g) * u: dg, du [n] += from dh */
    void (*swiglu_bwd)(l3c_context *ctx, const float *g, const float *u, const float *dh, float *dg,
                       float *du, int64_t n);
    /* the residual stream around the model's layers [layer0, layer1) (l3c_model), one
     * micro-batch at a time: x [T x E] is the whole batch's, rows [t0, t0 + n) the micro-batch's;
     * end == 0 before the first of the layers, 1 after the last. A pipeline stage (src/dist)
     * receives the rows from the previous stage there and hands them on (after the batch's last
     * micro-batch, t0 + n == T, every row of x is final on every rank); the CPU backend does
     * nothing. */
    void (*stage)(l3c_context *ctx, int end, float *x, int64_t t0, int64_t n, int64_t T);
    /* rows per micro-batch of a batch of T tokens: forward.c runs the layers on consecutive
     * ranges of this many tokens (the last may be shorter), each through stage / layers / stage,
     * so pipeline stages work on several micro-batches at once. T: the whole batch at once (the
     * CPU backend). The kernels are batch invariant, so the split changes no bit. */
    int64_t (*stage_rows)(l3c_context *ctx, int64_t T);
} l3c_backend;

/* The CPU backend: src/kernels/ on the context's thread pool (backend_cpu.c). */
extern const l3c_backend l3c_backend_cpu;

/* Its attention op (attention.c). */
void l3c_attention_cpu(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *q, float *out,
                       float *probs, int64_t n_kv);

#endif /* L3C_BACKEND_H */
