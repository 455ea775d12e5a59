/*
 * block.h -- the transformer block, defined once: l3c_block_forward is the op sequence of one
 * layer (backend.h ops), called by l3c_decode's layer loop (forward.c) and by the trainer
 * (src/train/train_model.c), which runs it through its own backend table. The backward of the
 * same sequence, upside down, is l3c_block_backward, next to it (the backend's *_bwd ops).
 *
 * The two callers differ only in the buffers they hand over and in the backend:
 *   decode    one residual buffer updated in place (x_in == x_mid == x_out), one normed buffer
 *             for both norms (xn1 == xn2), gate / silu in one buffer (h == g, which lets the
 *             gate / up matmul finish swiglu in the same pass), no rstd; kv_store / attention
 *             on the KV cache;
 *   training  every buffer the backward needs is its own, in the layer's saved activations
 *             (rstd1 / rstd2 too); kv_store / attention on the batch's own k / v (packed
 *             examples, causal in each) keeping the row log-sum-exp; the LoRA op keeps x A^T.
 */
#ifndef L3C_BLOCK_H
#define L3C_BLOCK_H

#include "model/backend.h"

/* One block's buffers (T rows; E = n_embd, F = n_ff, qd = n_head*hd, kvd = n_head_kv*hd). */
typedef struct l3c_block_bufs {
    const float *x_in; /* [T x E] input (residual stream) */
    float *x_mid;      /* [T x E] x_in + the attention branch (may be x_in: in place) */
    float *x_out;      /* [T x E] x_mid + the FFN branch (may be x_mid: in place) */
    float *xn1, *xn2; /* [T x E] rmsnorm(x_in) * attn_norm, rmsnorm(x_mid) * ffn_norm (may alias) */
    float *rstd1, *rstd2;             /* [T] their rows' 1/rms, or NULL */
    float *q, *k, *v;                 /* [T x qd], [T x kvd], [T x kvd]; q, k after rope */
    float *att_out;                   /* [T x qd] */
    float *proj;                      /* [T x E] att_out Wo^T, then h Wdown^T */
    float *g, *u, *h;                 /* [T x F] gate, up, silu(gate) * up; h == g: in place */
    const float *rope_cos, *rope_sin; /* [T x n_rot/2] of the batch's positions */
    float *probs;                     /* NULL, or the attn_scores trace [n_head*T x n_kv] */
    int64_t n_kv;
} l3c_block_bufs;

/* Layer l over the batch b: s->x_in -> s->x_out through ctx->backend, weights
 * ctx->model->w.layers[l], shapes ctx->model->cfg, adapters and tracing of ctx. */
void l3c_block_forward(l3c_context *ctx, int32_t l, const l3c_batch *b, const l3c_block_bufs *s);

/* Gradients of one layer's parameters (NULL: frozen), matrices in l3c_lora_target order. */
typedef struct l3c_block_grads {
    float *attn_norm, *ffn_norm; /* [E] */
    float *w[7];                 /* q, k, v, o, gate, up, down: [n_out x n_in] */
} l3c_block_grads;

/* Backward scratch of one layer (T rows): dres [T x E] carries dL/dx_out in and dL/dx_in out; the
 * others are overwritten: dxn [T x E], dao, dq [T x qd], dk, dv [T x kvd], dh, dg, du [T x F]. */
typedef struct l3c_block_dbufs {
    float *dres, *dxn, *dao, *dq, *dk, *dv, *dh, *dg, *du;
} l3c_block_dbufs;

/* The backward of l3c_block_forward(ctx, l, b, s) (the same s, as the forward left it: decode's
 * in-place buffers cannot serve), its op sequence upside down through the backend's *_bwd ops:
 * adds the parameters' gradients into G (and the backend's adapters), d->dres becomes dL/dx_in. */
void l3c_block_backward(l3c_context *ctx, int32_t l, const l3c_batch *b, const l3c_block_bufs *s,
                        const l3c_block_grads *G, const l3c_block_dbufs *d);

#endif /* L3C_BLOCK_H */
