/*
 * train_ops.h -- fp32 scalar forward / backward pairs of the llama ops, for training.
 *
 * Each pair mirrors one forward op of the inference engine (get_rows, rmsnorm, matmul, rope,
 * attention, swiglu, add) plus the output loss (cross-entropy). The forward half saves what
 * its backward needs (named per op); the backward half ACCUMULATES into every gradient it
 * writes (dx += ..., dW += ...), as llm.c does, so the caller zeroes gradients once and paths
 * that meet (residual stream, Q/K/V all reading one normed input, tied embedding and head)
 * simply add up. These are the reference (oracle) versions: plain loops, no threads.
 *
 * Shapes: N rows (tokens) of a batch laid out as [B sequences x T tokens], row n = b*T + t.
 * Matrices are row-major [n_out x n_in] as GGUF and the engine store them: y = x W^T.
 */
#ifndef L3C_TRAIN_OPS_H
#define L3C_TRAIN_OPS_H

#include <stdint.h>

/* get_rows: out[n, :] = table[ids[n], :]  (table [V x D]); backward scatter-adds dout rows. */
void l3c_tr_embedding_fwd(const float *table, int64_t D, const int32_t *ids, int64_t N, float *out);
void l3c_tr_embedding_bwd(float *dtable, int64_t D, const int32_t *ids, int64_t N, const float *dout);

/* rmsnorm: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), as the engine (sum of squares in
 * double). Saves rstd [N]. Backward: dx += rstd * (dy*w - x * rstd^2 * mean(dy*w*x)),
 * dw += sum_n dy * x * rstd (dw may be NULL: a frozen weight). */
void l3c_tr_rmsnorm_fwd(const float *x, const float *w, int64_t N, int64_t D, float eps, float *y,
                        float *rstd);
void l3c_tr_rmsnorm_bwd(const float *x, const float *w, const float *rstd, const float *dy, int64_t N,
                        int64_t D, float *dx, float *dw);

/* matmul: y [N x n_out] = x [N x n_in] W^T. Backward: dx += dy W, dW += dy^T x. */
void l3c_tr_matmul_fwd(const float *x, const float *W, int64_t N, int64_t n_in, int64_t n_out, float *y);
void l3c_tr_matmul_bwd(const float *x, const float *W, const float *dy, int64_t N, int64_t n_in,
                       int64_t n_out, float *dx, float *dW);

/* rope ("normal" mode, rope.c): cos/sin [N x n_rot/2] per row from its position,
 * angle(pos, i) = pos * theta^(-2i/n_rot) / rope_freqs[i] (rope_freqs may be NULL), computed in
 * double and rounded to float. */
void l3c_tr_rope_tables(const int32_t *pos, int64_t N, int n_rot, float theta, const float *rope_freqs,
                        float *cos_t, float *sin_t);
/* Rotates the adjacent pairs (x[2i], x[2i+1]), i < n_rot/2, of every head of x [N x n_heads*hd]
 * in place. Backward rotates the gradient by -angle in place (dx = R^T dy). */
void l3c_tr_rope_fwd(float *x, int64_t N, int n_heads, int hd, int n_rot, const float *cos_t,
                     const float *sin_t);
void l3c_tr_rope_bwd(float *dx, int64_t N, int n_heads, int hd, int n_rot, const float *cos_t,
                     const float *sin_t);

/* Causal GQA attention over B sequences of T tokens: query head h reads kv head
 * h / (n_head / n_head_kv). q [N x n_head*hd], k, v [N x n_head_kv*hd], out [N x n_head*hd].
 * pos [N] (NULL: t) are the rope positions of packed rows: a position restarts at 0 where an
 * example starts, and query t attends to keys t - pos[t] .. t only (its own example).
 * Saves the probabilities att [B x n_head x T x T] (zero outside the attended keys).
 * Backward accumulates dq, dk, dv (dk, dv summed over the query heads sharing a kv head). */
void l3c_tr_attention_fwd(const float *q, const float *k, const float *v, const int32_t *pos, int64_t B,
                          int64_t T, int n_head, int n_head_kv, int hd, float *att, float *out);
void l3c_tr_attention_bwd(const float *q, const float *k, const float *v, const float *att,
                          const float *dout, int64_t B, int64_t T, int n_head, int n_head_kv, int hd,
                          float *dq, float *dk, float *dv);
/* The same for sequence b and the query heads of kv head kh only (the whole ops loop these
 * over b, kh; parts touch disjoint outputs, so they may run in parallel). */
void l3c_tr_attention_fwd_part(const float *q, const float *k, const float *v, const int32_t *pos, int64_t b,
                               int kh, int64_t T, int n_head, int n_head_kv, int hd, float *att, float *out);
void l3c_tr_attention_bwd_part(const float *q, const float *k, const float *v, const float *att,
                               const float *dout, int64_t b, int kh, int64_t T, int n_head, int n_head_kv,
                               int hd, float *dq, float *dk, float *dv);

/* swiglu: h = silu(g) * u over n elements. Backward: dg += dh*u*silu'(g), du += dh*silu(g). */
void l3c_tr_swiglu_fwd(const float *g, const float *u, int64_t n, float *h);
void l3c_tr_swiglu_bwd(const float *g, const float *u, const float *dh, int64_t n, float *dg, float *du);

/* residual add: x += y. Backward: dy += dx (the gradient of x passes through unchanged). */
void l3c_tr_add_fwd(float *x, const float *y, int64_t n);
void l3c_tr_add_bwd(const float *dx, int64_t n, float *dy);

/* Softmax cross-entropy of logits [N x V] against targets [N]; a target < 0 is masked out.
 * Saves lse [N] (log-sum-exp per row, 0 for masked rows); returns the loss SUM over unmasked
 * rows and their count in *n_valid. Backward writes (overwrites) dlogits = scale *
 * (softmax(logits) - onehot(target)) (0 for masked rows); dlogits may alias logits.
 * scale is 1 / n_valid for the mean loss. */
double l3c_tr_xent_fwd(const float *logits, const int32_t *targets, int64_t N, int64_t V, float *lse,
                       int64_t *n_valid);
void l3c_tr_xent_bwd(const float *logits, const float *lse, const int32_t *targets, int64_t N, int64_t V,
                     float scale, float *dlogits);

#endif /* L3C_TRAIN_OPS_H */
