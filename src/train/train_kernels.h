/*
 * train_kernels.h -- the threaded kernels of the training step: the backward halves of a matmul
 * over a weight of any type (dequantized per tile, never a whole fp32 copy) and the batch-
 * parallel attention. The forward halves are the engine's l3c_matmul. train_ops.c keeps the
 * scalar pairs these are tested against (tests/unit/test_train_kernels.c).
 *
 * Every output element is computed by one chunk in a fixed order, so results do not depend on
 * the number of threads or on which thread ran a chunk (checkpointed recomputation and resumed
 * runs are bitwise reproducible).
 */
#ifndef L3C_TRAIN_KERNELS_H
#define L3C_TRAIN_KERNELS_H

#include "kernels/ops.h"
#include "kernels/threadpool.h"

/* dx [N x w->n_in] += scale * dy [N x w->n_out] W, W dequantized R rows x a column range at a
 * time into per-thread tiles (the type's to_float on whole blocks). */
l3c_status l3c_trk_matmul_dx(l3c_threadpool *tp, const l3c_weight *w, const float *dy, int64_t N,
                             float scale, float *dx);
/* dW [n_out x n_in] += scale * dy^T x: x [N x n_in], dy [N x n_out] (fp32 weights' gradient). */
l3c_status l3c_trk_matmul_dw(l3c_threadpool *tp, const float *x, const float *dy, int64_t N, int64_t n_in,
                             int64_t n_out, float scale, float *dW);
/*
 * dx [N x w->n_in] += scale * dy [N x w->n_out] W reading W's blocks in place: chunks of
 * (256 tokens x 256 columns) over the pool, 32 rows of W dequantized into a per-thread tile, a
 * register-blocked fp32 kernel (dy stays fp32: exact up to float sums). For every type with a
 * to_float and whole blocks of at most 256 (quantized bases: no transposed copy, no 8-bit dy).
 * isa: -1 the best for the CPU and the kernel path (L3C_KERNELS), 0 the scalar reference,
 * 1 AVX2 (where the CPU has it; tests compare them).
 */
l3c_status l3c_trk_matmul_dx_blocks(l3c_threadpool *tp, const l3c_weight *w, const float *dy,
                                    int64_t N, float scale, float *dx, int isa);

/* An F32 l3c_weight over W [n_out x n_in] (row-major floats), for l3c_matmul and matmul_dx. */
l3c_weight l3c_trk_f32_weight(const float *W, int64_t n_in, int64_t n_out, const char *name);

/* l3c_tr_attention_fwd / _bwd (train_ops.h) with the (sequence, kv head) parts spread over the
 * pool and the engine's vectorized dot / axpy inside (same loops, sums in another order).
 * pos [B*T] or NULL: packed rows, as l3c_tr_attention_fwd (keys of the query's own example).
 * Memory as flash attention: no [B x n_head x T x T] probabilities; the forward saves the
 * log-sum-exp of each query row, lse [B x n_head x T], and the backward recomputes one row's
 * scores and probabilities at a time from q, k and lse (scratch: 2T floats per thread). */
l3c_status l3c_trk_attention_fwd(l3c_threadpool *tp, const float *q, const float *k, const float *v,
                                 const int32_t *pos, int64_t B, int64_t T, int n_head, int n_head_kv, int hd,
                                 float *lse, float *out);
l3c_status l3c_trk_attention_bwd(l3c_threadpool *tp, const float *q, const float *k, const float *v,
                                 const int32_t *pos, const float *lse, const float *dout, int64_t B,
                                 int64_t T, int n_head, int n_head_kv, int hd, float *dq, float *dk,
                                 float *dv);

#endif /* L3C_TRAIN_KERNELS_H */
