/*
 * ops.h -- the numeric ops the forward pass is made of, over a batch of T tokens.
 * Rows are tokens; all activations are row-major float32 [T x n]. Each op has one
 * implementation that uses the dispatched type table and the thread pool; ops are shared by
 * the forward pass, `explain` tracing and (later) a backward pass.
 */
#ifndef L3C_OPS_H
#define L3C_OPS_H

#include "kernels/threadpool.h"
#include "kernels/types.h"

/* A weight matrix as stored in GGUF: ne0 = n_in (row length), ne1 = n_out rows of `type`. */
typedef struct l3c_weight {
    const char *name;
    int type;
    int64_t n_in, n_out;
    size_t row_bytes;
    const void *data;
    /* NULL, or the rows in a packed layout of the dispatched table (l3c_weight_pack): then the
     * matmuls read only this copy (data stays valid, e.g. for embedding rows) */
    const void *packed;
    const l3c_pack_layout *layout; /* the layout of packed */
    /* a distributed model's share (src/dist/shard.h): L3C_WDIST_WHOLE (0) the matrix or rows that
     * need no message; L3C_WDIST_SUM: a range of input columns, y is this rank's partial sum;
     * L3C_WDIST_GATHER: a range of output rows, y is this rank's slice. The kernels ignore it. */
    int dist;
} l3c_weight;

enum { L3C_WDIST_WHOLE = 0, L3C_WDIST_SUM = 1, L3C_WDIST_GATHER = 2 };

/* Bytes of w's packed copy in layout (NULL: none); 0 when w cannot use it. */
size_t l3c_weight_packed_bytes(const l3c_weight *w, const l3c_pack_layout *layout);
/* The packed layout for w on the dispatched path (bf16: the bf16 one where there is one), or
 * NULL when w's type has none */
const l3c_pack_layout *l3c_weight_layout(const l3c_weight *w, bool bf16);
/* Writes the packed copy of w in layout into dst (l3c_weight_packed_bytes bytes), groups
 * [g0, g1) only (so that callers can split the work); set w->packed = dst and w->layout after. */
void l3c_weight_pack(const l3c_weight *w, const l3c_pack_layout *layout, void *dst, int64_t g0, int64_t g1);
int64_t l3c_weight_pack_groups(const l3c_weight *w, const l3c_pack_layout *layout);

/*
 * y[T x n_out] = x[T x n_in] @ W^T. scratch must hold l3c_matmul_scratch_bytes(W, T) bytes
 * (the activations converted to W's vec_dot_type once per call).
 */
size_t l3c_matmul_scratch_bytes(const l3c_weight *w, int64_t T);
void l3c_matmul(l3c_threadpool *tp, const l3c_weight *w, const float *x, float *y, int64_t T,
                void *scratch);

/*
 * Up to L3C_MATMUL_MAX weights with the same n_in applied to the same x in ONE parallel job:
 * y[i][T x w[i]->n_out] = x @ w[i]^T, x converted once per distinct vec_dot_type (Q/K/V share
 * it, gate/up too). swiglu (n == 2, equal n_out): afterwards y[0] = silu(y[0]) * y[1], each
 * row tile finished by the chunk that computed it (y[1] keeps the up projection). Results are
 * bit-identical to separate l3c_matmul calls. scratch: l3c_matmul_multi_scratch_bytes.
 */
#define L3C_MATMUL_MAX 4
size_t l3c_matmul_multi_scratch_bytes(int n, const l3c_weight *const *w, int64_t T);
void l3c_matmul_multi(l3c_threadpool *tp, int n, const l3c_weight *const *w, float *const *y,
                      const float *x, int64_t T, void *scratch, bool swiglu);

/* y[T x n] = x * rsqrt(mean(x^2) + eps) * g[n] */
void l3c_rmsnorm(const float *x, const float *g, float *y, int64_t T, int64_t n, float eps);
/* rstd[T]: the 1/sqrt(mean(x^2) + eps) of each row l3c_rmsnorm scales by (bitwise the same) */
void l3c_rms_rstd(const float *x, float *rstd, int64_t T, int64_t n, float eps);
/* a[i] = silu(a[i]) * b[i] for n elements */
void l3c_swiglu(float *a, const float *b, int64_t n);
/* x[i] += y[i] */
void l3c_add(float *x, const float *y, int64_t n);
/* y[i] += a * x[i] (y and x do not overlap); vectorized where the CPU allows, same rounding */
void l3c_axpy(float *restrict y, float a, const float *restrict x, int64_t n);
/* y += a[r] * X[r] for r = 0 .. n_rows - 1 in order (rows of n floats, ldx apart): the same
 * result, bit for bit, as n_rows calls of l3c_axpy, with y kept in registers */
void l3c_axpy_rows(float *restrict y, const float *a, const float *X, int64_t ldx, int64_t n_rows, int64_t n);
/* softmax of n values in place (max-subtracted) */
void l3c_softmax(float *x, int64_t n);

/*
 * Causal attention of R query rows that read one K/V head (GQA: the query heads of one KV head
 * for a run of tokens of one sequence): out[r] = softmax(scale * q[r] . k_p, p < n[r]) . v_p.
 * Each row's arithmetic is fixed, so a row gets the same bits whatever R, its place among the
 * rows and the other rows' lengths (batch invariance): score s_p = one fmaf chain over
 * d = 0..hd-1; m = max s_p; e_p = expf(s_p * scale - m * scale) (ops.c's EXP_STEPS); sum = the
 * e_p added in double in p order; out[d] = (one fmaf chain e_p * v_p[d] over p in order) *
 * (float)(1 / sum). probs (tracing) gets e_p * (float)(1 / sum).
 */
typedef struct l3c_attn_rows_args {
    int64_t R;             /* query rows, >= 1 */
    const float *const *q; /* [R] rows of hd floats */
    float *const *out;     /* [R] rows of hd floats (written) */
    float *const *probs;   /* [R] rows of n[r] floats, or NULL */
    const int32_t *n;      /* [R] keys row r sees (positions 0 .. n[r] - 1); >= 1, non-decreasing */
    int64_t hd;            /* head dimension */
    float scale;           /* 1 / sqrt(hd) */
    const uint8_t *k, *v;  /* position p's key / value: hd elements at k / v + p * row_bytes */
    size_t row_bytes;
    l3c_to_float_fn to_float; /* converts a key / value row; NULL: the rows are float */
    float *work;              /* l3c_attn_work_floats(R, n[R - 1], hd) floats */
} l3c_attn_rows_args;

/* Floats of l3c_attn_rows' work buffer for R rows, n_max keys and head dimension hd. */
size_t l3c_attn_work_floats(int64_t R, int64_t n_max, int64_t hd);
/* true when l3c_attn_rows runs a SIMD kernel on this CPU (AVX-512 F); otherwise it runs the
 * scalar reference, and the attention op keeps its per-head path (gemm + softmax + axpy_rows) */
bool l3c_attn_rows_fast(void);
/* The attention above: the AVX-512 kernel where l3c_attn_rows_fast(), else the reference. */
void l3c_attn_rows(const l3c_attn_rows_args *a);
/* The scalar reference: row by row, the formula above (tests compare the kernel with it). */
void l3c_attn_rows_ref(const l3c_attn_rows_args *a);

/* Embedding row lookup: dst[n_embd] = dequantized row `id` of the token_embd matrix */
void l3c_get_row(const l3c_weight *w, int64_t id, float *dst);

#endif /* L3C_OPS_H */
