/*
 * train_kernels.c -- threaded backward matmuls over weights of any type, batch-parallel
 * attention (train_kernels.h).
 *
 * matmul_dx: dx [N x n_in] += scale * dy [N x n_out] W. The work is a grid of chunks
 * (token rows x column ranges). A chunk walks W's rows R at a time: it dequantizes the rows'
 * slice [c0, c1) (whole blocks of the type) into its thread's tile, then adds the tile's rows,
 * weighted by dy, into each of its dx rows with l3c_axpy_rows (the engine's vectorized kernel).
 * Only R rows x one column range of W are ever fp32 at once (QLoRA's "dequantize per tile").
 */
#include "train/train_kernels.h"

#include "train/train_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DX_ROWS 32      /* W rows per tile */
#define DX_COLS 512     /* target columns per chunk (rounded to whole blocks) */
#define DX_TOKENS 64    /* dx rows per chunk */
#define QX_COLS   256   /* dx_blocks: columns per chunk (whole blocks of any type) */

l3c_weight l3c_trk_f32_weight(const float *W, int64_t n_in, int64_t n_out, const char *name) {
    l3c_weight w = {0};
    w.name = name;
    w.type = L3C_TYPE_F32;
    w.n_in = n_in;
    w.n_out = n_out;
    w.row_bytes = (size_t)n_in * sizeof(float);
    w.data = W;
    return w;
}

typedef struct dx_job {
    const l3c_weight *w;
    const l3c_type_traits *tr;
    const float *dy;
    float *dx;
    int64_t N, cols, n_col_chunks;
    float scale;
    float *tiles; /* [n_threads x DX_ROWS x cols] */
    float *coef;  /* [n_threads x DX_ROWS] */
} dx_job;

static void dx_chunk(void *arg, int64_t chunk, int ith) {
    const dx_job *j = arg;
    const l3c_weight *w = j->w;
    const int64_t bs = j->tr->block_size;
    const int64_t c0 = (chunk % j->n_col_chunks) * j->cols;
    const int64_t c1 = c0 + j->cols < w->n_in ? c0 + j->cols : w->n_in, cw = c1 - c0;
    const int64_t n0 = (chunk / j->n_col_chunks) * DX_TOKENS;
    const int64_t n1 = n0 + DX_TOKENS < j->N ? n0 + DX_TOKENS : j->N;
    float *tile = j->tiles + (size_t)ith * DX_ROWS * j->cols;
    float *coef = j->coef + (size_t)ith * DX_ROWS;
    const size_t off = (size_t)(c0 / bs) * j->tr->type_size;
    for (int64_t o0 = 0; o0 < w->n_out; o0 += DX_ROWS) {
        const int64_t R = o0 + DX_ROWS < w->n_out ? DX_ROWS : w->n_out - o0;
        const float *rows;
        if (w->type == L3C_TYPE_F32 && cw == w->n_in) {
            rows = (const float *)w->data + o0 * w->n_in; /* already fp32: read in place */
        } else {
            for (int64_t r = 0; r < R; r++)
                j->tr->to_float((const char *)w->data + (size_t)(o0 + r) * w->row_bytes + off,
                                tile + r * cw, cw);
            rows = tile;
        }
        for (int64_t n = n0; n < n1; n++) {
            const float *a = j->dy + n * w->n_out + o0;
            if (j->scale != 1.0f) {
                for (int64_t r = 0; r < R; r++) coef[r] = j->scale * a[r];
                a = coef;
            }
            l3c_axpy_rows(j->dx + n * w->n_in + c0, a, rows, cw == w->n_in ? w->n_in : cw, R, cw);
        }
    }
}

/*
 * The batched path (N >= DX_GEMM_MIN tokens): dx[:, c0:c1] += scale * dy Wt^T with Wt = W[:, c0:c1]^T
 * [cw x n_out], one column slice of W at a time dequantized and transposed into an F32 matrix, so
 * the product runs in the engine's register-blocked F32 gemm (l3c_matmul). The slice holds at
 * most DX_SLICE floats.
 */
#define DX_GEMM_MIN 16
#define DX_SLICE (1 << 20)

static l3c_status matmul_dx_gemm(l3c_threadpool *tp, const l3c_weight *w, const l3c_type_traits *tr,
                                  const float *dy, int64_t N, float scale, float *dx) {
    const int64_t bs = tr->block_size;
    int64_t cw = DX_SLICE / w->n_out / bs * bs;
    if (cw < bs) cw = bs;
    if (cw > w->n_in) cw = w->n_in;
    const int64_t rows = N < 512 ? N : 512;
    l3c_weight wt = l3c_trk_f32_weight(NULL, w->n_out, cw, "W^T slice");
    const size_t sb = l3c_matmul_scratch_bytes(&wt, rows);
    float *buf = malloc((size_t)(w->n_out * cw * 2 + rows * cw) * sizeof(float));
    void *scratch = malloc(sb ? sb : 1);
    if (!buf || !scratch) {
        free(buf), free(scratch);
        return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the backward slices");
    }
    float *row = buf, *t = buf + w->n_out * cw, *y = t + w->n_out * cw;
    for (int64_t c0 = 0; c0 < w->n_in; c0 += cw) {
        const int64_t c = c0 + cw <= w->n_in ? cw : w->n_in - c0;
        const size_t off = (size_t)(c0 / bs) * tr->type_size;
        for (int64_t o = 0; o < w->n_out; o++) {
            const char *src = (const char *)w->data + (size_t)o * w->row_bytes + off;
            const float *r = row;
            if (w->type == L3C_TYPE_F32) r = (const float *)src;
            else tr->to_float(src, row, c);
            for (int64_t i = 0; i < c; i++) t[i * w->n_out + o] = r[i];
        }
        wt = l3c_trk_f32_weight(t, w->n_out, c, "W^T slice");
        for (int64_t n0 = 0; n0 < N; n0 += rows) {
            const int64_t nn = N - n0 < rows ? N - n0 : rows;
            l3c_matmul(tp, &wt, dy + n0 * w->n_out, y, nn, scratch);
            for (int64_t n = 0; n < nn; n++) l3c_axpy(dx + (n0 + n) * w->n_in + c0, scale, y + n * c, c);
        }
    }
    free(buf);
    free(scratch);
    return L3C_OK;
}

/* L3C_TRAIN_DX=tiles / gemm forces one of the dequantizing paths below (tests and benchmarks
 * compare them); unset, a weight of another type than F32 goes through its blocks */
static const char *dx_path(void) {
    const char *e = getenv("L3C_TRAIN_DX");
    return e && (!strcmp(e, "tiles") || !strcmp(e, "gemm")) ? e : "";
}

l3c_status l3c_trk_matmul_dx(l3c_threadpool *tp, const l3c_weight *w, const float *dy, int64_t N,
                             float scale, float *dx) {
    const l3c_type_traits *tr = l3c_type_traits_ref(w->type);
    if (!tr || !tr->to_float || w->n_in % tr->block_size)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "train: weight '%s' of type %s cannot be dequantized",
                        w->name ? w->name : "?", l3c_type_name(w->type));
    if (N <= 0) return L3C_OK;
    const char *path = dx_path();
    if (w->type != L3C_TYPE_F32 && !*path && QX_COLS % tr->block_size == 0)
        return l3c_trk_matmul_dx_blocks(tp, w, dy, N, scale, dx, -1);
    /* the gemm pays off for wide products; a LoRA factor (rank-wide rows or columns) stays on tiles */
    if (N >= DX_GEMM_MIN && w->n_in >= 64 && w->n_out >= 64 && strcmp(path, "tiles"))
        return matmul_dx_gemm(tp, w, tr, dy, N, scale, dx);
    const int nt = l3c_threadpool_n_threads(tp);
    const int64_t bs = tr->block_size;
    int64_t cols = (DX_COLS + bs - 1) / bs * bs;
    if (cols > w->n_in) cols = w->n_in;
    /* an F32 weight whose rows fit one chunk is read in place: keep it whole */
    if (w->type == L3C_TYPE_F32 && w->n_in <= 4 * DX_COLS) cols = w->n_in;
    dx_job j = {.w = w, .tr = tr, .dy = dy, .dx = dx, .N = N, .cols = cols, .scale = scale,
                .n_col_chunks = l3c_n_chunks(w->n_in, cols)};
    const int64_t n_chunks = j.n_col_chunks * l3c_n_chunks(N, DX_TOKENS);
    if (n_chunks > L3C_MAX_CHUNKS)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: matmul of %lld tokens x '%s' is too large",
                        (long long)N, w->name ? w->name : "?");
    j.tiles = malloc((size_t)nt * DX_ROWS * (size_t)cols * sizeof(float));
    j.coef = malloc((size_t)nt * DX_ROWS * sizeof(float));
    if (!j.tiles || !j.coef) {
        free(j.tiles), free(j.coef);
        return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the backward tiles");
    }
    l3c_threadpool_run(tp, n_chunks, dx_chunk, &j);
    free(j.tiles);
    free(j.coef);
    return L3C_OK;
}

/* ------------------------------------------------------------------ dx through quantized blocks */

/*
 * dx [N x n_in] += scale * dy [N x n_out] W, W read in its own blocks (no transposed or
 * re-quantized copy). A chunk owns dx[n0:n1, c0:c1] (QX_TOKENS x QX_COLS, whole blocks of the
 * type), so threads never write the same dx. It walks W's rows QX_ROWS at a time: the rows'
 * slice [c0, c1) is dequantized (the dispatched type table's to_float, which is exact) into a
 * [QX_ROWS x QX_COLS] tile (32 KiB, L1), then every token of the chunk adds dy[n, rows] @ tile
 * into its dx row: a register-blocked kernel of 4 tokens x 64 columns (AVX-512; 4 x 32 AVX2)
 * summing the tile's rows in order, then dx += scale * sum. The tile is dequantized once per
 * QX_TOKENS tokens (the dx slab, 256 KiB, stays in L2). Every dx element is summed in the same
 * order by one chunk whatever the thread count; the ISAs differ only by fma vs mul + add.
 */
#define QX_TOKENS 256
#define QX_ROWS   32

/* dx[t, j] += scale * sum_r dy[t, r] tile[r, j] for t < T, j < cw, r < R (the scalar reference) */
static void qx_ref(float *dx, int64_t ldx, const float *dy, int64_t ldy, const float *tile,
                   int64_t ldt, int64_t R, int64_t cw, int64_t T, float scale) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < cw; j++) {
            float acc = 0.0f;
            for (int64_t r = 0; r < R; r++)
                acc += dy[t * ldy + r] * tile[r * ldt + j];
            dx[t * ldx + j] += scale * acc;
        }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* qx_ref with 4 tokens x 4 vectors of columns in 16 accumulators, written out (GCC keeps an
 * array of vectors in memory); V the vector type, L its floats */
#define QX_KERNEL(name, ISA, V, L, LOAD, STORE, ZERO, SET1, FMA, TAIL)                             \
    __attribute__((target(ISA))) static void name(float *dx, int64_t ldx, const float *dy,         \
                                                  int64_t ldy, const float *tile, int64_t ldt,     \
                                                  int64_t R, int64_t cw, int64_t T, float scale) { \
        const V vs = SET1(scale);                                                                  \
        int64_t t = 0;                                                                             \
        for (; t + 4 <= T; t += 4) {                                                               \
            const float *d0 = dy + t * ldy, *d1 = d0 + ldy, *d2 = d1 + ldy, *d3 = d2 + ldy;        \
            int64_t j = 0;                                                                         \
            for (; j + 4 * L <= cw; j += 4 * L) {                                                  \
                V a00 = ZERO(), a01 = ZERO(), a02 = ZERO(), a03 = ZERO(), a10 = ZERO(),            \
                  a11 = ZERO();                                                                    \
                V a12 = ZERO(), a13 = ZERO(), a20 = ZERO(), a21 = ZERO(), a22 = ZERO(),            \
                  a23 = ZERO();                                                                    \
                V a30 = ZERO(), a31 = ZERO(), a32 = ZERO(), a33 = ZERO();                          \
                for (int64_t r = 0; r < R; r++) {                                                  \
                    const float *w = tile + r * ldt + j;                                           \
                    const V w0 = LOAD(w), w1 = LOAD(w + L), w2 = LOAD(w + 2 * L),                  \
                            w3 = LOAD(w + 3 * L);                                                  \
                    V d = SET1(d0[r]);                                                             \
                    a00 = FMA(d, w0, a00), a01 = FMA(d, w1, a01), a02 = FMA(d, w2, a02),           \
                    a03 = FMA(d, w3, a03);                                                         \
                    d = SET1(d1[r]);                                                               \
                    a10 = FMA(d, w0, a10), a11 = FMA(d, w1, a11), a12 = FMA(d, w2, a12),           \
                    a13 = FMA(d, w3, a13);                                                         \
                    d = SET1(d2[r]);                                                               \
                    a20 = FMA(d, w0, a20), a21 = FMA(d, w1, a21), a22 = FMA(d, w2, a22),           \
                    a23 = FMA(d, w3, a23);                                                         \
                    d = SET1(d3[r]);                                                               \
                    a30 = FMA(d, w0, a30), a31 = FMA(d, w1, a31), a32 = FMA(d, w2, a32),           \
                    a33 = FMA(d, w3, a33);                                                         \
                }                                                                                  \
                const V acc[16] = {a00, a01, a02, a03, a10, a11, a12, a13,                         \
                                   a20, a21, a22, a23, a30, a31, a32, a33};                        \
                for (int k = 0; k < 16; k++) {                                                     \
                    float *o = dx + (t + k / 4) * ldx + j + (k % 4) * L;                           \
                    STORE(o, FMA(vs, acc[k], LOAD(o)));                                            \
                }                                                                                  \
            }                                                                                      \
            if (j < cw)                                                                            \
                TAIL(dx + t * ldx + j, ldx, dy + t * ldy, ldy, tile + j, ldt, R, cw - j, 4,        \
                     scale);                                                                       \
        }                                                                                          \
        if (t < T) qx_ref(dx + t * ldx, ldx, dy + t * ldy, ldy, tile, ldt, R, cw, T - t, scale);   \
    }

QX_KERNEL(qx_avx2, "avx2,fma", __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_setzero_ps,
          _mm256_set1_ps, _mm256_fmadd_ps, qx_ref)
QX_KERNEL(qx_avx512, "avx512f,fma", __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps,
          _mm512_setzero_ps, _mm512_set1_ps, _mm512_fmadd_ps, qx_avx2)
#endif

typedef void (*qx_fn)(float *, int64_t, const float *, int64_t, const float *, int64_t, int64_t,
                      int64_t, int64_t, float);

/* the best kernel for this CPU within the dispatched kernel path (L3C_KERNELS=ref / avx2 caps it)
 */
static qx_fn qx_best(void) {
#if defined(__x86_64__) || defined(__i386__)
    const char *path = l3c_kernels_path();
    const int avx512 =
        strcmp(path, "ref") && strcmp(path, "avx2") && __builtin_cpu_supports("avx512f");
    const int avx2 =
        strcmp(path, "ref") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx512) return qx_avx512;
    if (avx2) return qx_avx2;
#endif
    return qx_ref;
}

typedef struct qx_job {
    const l3c_weight *w;
    const l3c_type_traits *tr;
    const float *dy;
    float *dx;
    int64_t N, n_col_chunks;
    float scale;
    float *tiles; /* [n_threads x QX_ROWS x QX_COLS] */
    qx_fn fn;
} qx_job;

static void qx_chunk(void *arg, int64_t chunk, int ith) {
    const qx_job *j = arg;
    const l3c_weight *w = j->w;
    const int64_t bs = j->tr->block_size;
    const int64_t c0 = (chunk % j->n_col_chunks) * QX_COLS;
    const int64_t cw = c0 + QX_COLS < w->n_in ? QX_COLS : w->n_in - c0;
    const int64_t n0 = (chunk / j->n_col_chunks) * QX_TOKENS;
    const int64_t T = n0 + QX_TOKENS < j->N ? QX_TOKENS : j->N - n0;
    float *tile = j->tiles + (size_t)ith * QX_ROWS * QX_COLS;
    const size_t off = (size_t)(c0 / bs) * j->tr->type_size;
    for (int64_t o0 = 0; o0 < w->n_out; o0 += QX_ROWS) {
        const int64_t R = o0 + QX_ROWS < w->n_out ? QX_ROWS : w->n_out - o0;
        const float *t = tile;
        int64_t ldt = cw;
        if (w->type == L3C_TYPE_F32) { /* already fp32: read in place */
            t = (const float *)((const char *)w->data + (size_t)o0 * w->row_bytes) + c0;
            ldt = (int64_t)(w->row_bytes / sizeof(float));
        } else {
            for (int64_t r = 0; r < R; r++)
                j->tr->to_float((const char *)w->data + (size_t)(o0 + r) * w->row_bytes + off,
                                tile + r * cw, cw);
        }
        j->fn(j->dx + n0 * w->n_in + c0, w->n_in, j->dy + n0 * w->n_out + o0, w->n_out, t, ldt, R,
              cw, T, j->scale);
    }
}

l3c_status l3c_trk_matmul_dx_blocks(l3c_threadpool *tp, const l3c_weight *w, const float *dy,
                                    int64_t N, float scale, float *dx, int isa) {
    const l3c_type_traits *tr = l3c_type_traits_get(w->type);
    if (!tr || !tr->to_float || QX_COLS % tr->block_size || w->n_in % tr->block_size)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "train: weight '%s' of type %s cannot be dequantized",
                        w->name ? w->name : "?", l3c_type_name(w->type));
    if (N <= 0) return L3C_OK;
    qx_job j = {.w = w,
                .tr = tr,
                .dy = dy,
                .dx = dx,
                .N = N,
                .scale = scale,
                .fn = qx_best(),
                .n_col_chunks = l3c_n_chunks(w->n_in, QX_COLS)};
#if defined(__x86_64__) || defined(__i386__)
    if (isa == 0)
        j.fn = qx_ref;
    else if (isa == 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        j.fn = qx_avx2;
#else
    if (isa == 0) j.fn = qx_ref;
#endif
    const int64_t n_chunks = j.n_col_chunks * l3c_n_chunks(N, QX_TOKENS);
    if (n_chunks > L3C_MAX_CHUNKS)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: matmul of %lld tokens x '%s' is too large",
                        (long long)N, w->name ? w->name : "?");
    j.tiles = malloc((size_t)l3c_threadpool_n_threads(tp) * QX_ROWS * QX_COLS * sizeof(float));
    if (!j.tiles) return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the backward tiles");
    l3c_threadpool_run(tp, n_chunks, qx_chunk, &j);
    free(j.tiles);
    return L3C_OK;
}

/* ------------------------------------------------------------------ dW += scale dy^T x */

#define DW_ROWS 8 /* dW rows per chunk */

typedef struct dw_job {
    const float *x, *dy;
    int64_t N, n_in, n_out;
    float scale;
    float *dW;
    float *coef; /* [n_threads x N] */
} dw_job;

static void dw_chunk(void *arg, int64_t chunk, int ith) {
    const dw_job *j = arg;
    float *a = j->coef + (size_t)ith * j->N;
    const int64_t o1 = (chunk + 1) * DW_ROWS < j->n_out ? (chunk + 1) * DW_ROWS : j->n_out;
    for (int64_t o = chunk * DW_ROWS; o < o1; o++) {
        for (int64_t n = 0; n < j->N; n++) a[n] = j->scale * j->dy[n * j->n_out + o];
        l3c_axpy_rows(j->dW + o * j->n_in, a, j->x, j->n_in, j->N, j->n_in);
    }
}

l3c_status l3c_trk_matmul_dw(l3c_threadpool *tp, const float *x, const float *dy, int64_t N, int64_t n_in,
                             int64_t n_out, float scale, float *dW) {
    if (N <= 0) return L3C_OK;
    const int nt = l3c_threadpool_n_threads(tp);
    dw_job j = {.x = x, .dy = dy, .N = N, .n_in = n_in, .n_out = n_out, .scale = scale, .dW = dW};
    const int64_t n_chunks = l3c_n_chunks(n_out, DW_ROWS);
    if (n_chunks > L3C_MAX_CHUNKS)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: weight gradient of %lld rows is too large",
                        (long long)n_out);
    j.coef = malloc((size_t)nt * (size_t)N * sizeof(float));
    if (!j.coef) return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the weight gradient");
    l3c_threadpool_run(tp, n_chunks, dw_chunk, &j);
    free(j.coef);
    return L3C_OK;
}

/* ------------------------------------------------------------------ attention */

/* One (sequence, kv head) part per chunk, the loops of train_ops.c's attention pairs with the
 * engine's vectorized dot product (the F32 type's vec_dot) and axpy; the softmax as there.
 * Flash-attention style, no probabilities are stored: the forward keeps each query row's
 * log-sum-exp lse = max + log(sum) [B x n_head x T], the backward recomputes the row's scores
 * q.k / sqrt(hd) and p = exp(score - lse), one query row at a time, into per-thread scratch. */
typedef struct att_job {
    const float *q, *k, *v, *lse_c, *dout;
    const int32_t *pos; /* [B*T] or NULL */
    float *lse, *out, *dq, *dk, *dv;
    int64_t T;
    int n_head, n_head_kv, hd;
    l3c_vec_dot_fn dot;
    float *buf; /* [n_threads x 2T] scratch: a row's probabilities, and (backward) dp */
} att_job;

/* p[i0..t] = scaled scores of query row qr against keys i0..t of kv head kh in sequence b; returns the max */
static float att_scores(const att_job *j, int64_t b, int kh, const float *qr, int64_t i0, int64_t t, float *p) {
    const int64_t T = j->T, ks = (int64_t)j->n_head_kv * j->hd;
    const float scale = 1.0f / sqrtf((float)j->hd);
    float mx = -INFINITY;
    for (int64_t i = i0; i <= t; i++) {
        float sc;
        j->dot(j->hd, &sc, j->k + (b * T + i) * ks + (int64_t)kh * j->hd, qr);
        p[i] = sc * scale;
        if (p[i] > mx) mx = p[i];
    }
    return mx;
}

static void att_fwd_chunk(void *arg, int64_t chunk, int ith) {
    const att_job *j = arg;
    const int64_t b = chunk / j->n_head_kv, T = j->T;
    const int kh = (int)(chunk % j->n_head_kv), hd = j->hd, group = j->n_head / j->n_head_kv;
    const int64_t qs = (int64_t)j->n_head * hd, ks = (int64_t)j->n_head_kv * hd;
    float *p = j->buf + (size_t)ith * 2 * (size_t)T;
    for (int h = kh * group; h < (kh + 1) * group; h++)
        for (int64_t t = 0; t < T; t++) {
            const float *qr = j->q + (b * T + t) * qs + (int64_t)h * hd;
            const int64_t i0 = t - (j->pos ? j->pos[b * T + t] : t); /* t's segment starts here */
            const float mx = att_scores(j, b, kh, qr, i0, t, p);
            float sum = 0.0f;
            for (int64_t i = i0; i <= t; i++) {
                p[i] = expf(p[i] - mx);
                sum += p[i];
            }
            const float inv = 1.0f / sum;
            j->lse[(b * j->n_head + h) * T + t] = mx + logf(sum);
            float *o = j->out + (b * T + t) * qs + (int64_t)h * hd;
            memset(o, 0, (size_t)hd * sizeof(float));
            for (int64_t i = i0; i <= t; i++) l3c_axpy(o, p[i] * inv, j->v + (b * T + i) * ks + (int64_t)kh * hd, hd);
        }
}

static void att_bwd_chunk(void *arg, int64_t chunk, int ith) {
    const att_job *j = arg;
    const int64_t b = chunk / j->n_head_kv, T = j->T;
    const int kh = (int)(chunk % j->n_head_kv), hd = j->hd, group = j->n_head / j->n_head_kv;
    const int64_t qs = (int64_t)j->n_head * hd, ks = (int64_t)j->n_head_kv * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *p = j->buf + (size_t)ith * 2 * (size_t)T, *dp = p + T;
    for (int h = kh * group; h < (kh + 1) * group; h++)
        for (int64_t t = 0; t < T; t++) {
            const float *qr = j->q + (b * T + t) * qs + (int64_t)h * hd;
            const float *dor = j->dout + (b * T + t) * qs + (int64_t)h * hd;
            float *dqr = j->dq + (b * T + t) * qs + (int64_t)h * hd;
            const int64_t i0 = t - (j->pos ? j->pos[b * T + t] : t);
            const float lse = j->lse_c[(b * j->n_head + h) * T + t];
            att_scores(j, b, kh, qr, i0, t, p);
            float pdp = 0.0f;
            for (int64_t i = i0; i <= t; i++) {
                p[i] = expf(p[i] - lse);
                j->dot(hd, &dp[i], j->v + (b * T + i) * ks + (int64_t)kh * hd, dor);
                pdp += p[i] * dp[i];
            }
            for (int64_t i = i0; i <= t; i++) {
                const int64_t r = (b * T + i) * ks + (int64_t)kh * hd;
                const float ds = p[i] * (dp[i] - pdp) * scale;
                l3c_axpy(j->dv + r, p[i], dor, hd);
                l3c_axpy(dqr, ds, j->k + r, hd);
                l3c_axpy(j->dk + r, ds, qr, hd);
            }
        }
}

static l3c_status att_run(l3c_threadpool *tp, att_job *j, int64_t B, void (*fn)(void *, int64_t, int)) {
    j->dot = l3c_type_traits_get(L3C_TYPE_F32)->vec_dot;
    j->buf = malloc((size_t)l3c_threadpool_n_threads(tp) * 2 * (size_t)j->T * sizeof(float));
    if (!j->buf) return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the attention");
    l3c_threadpool_run(tp, B * j->n_head_kv, fn, j);
    free(j->buf);
    return L3C_OK;
}

l3c_status l3c_trk_attention_fwd(l3c_threadpool *tp, const float *q, const float *k, const float *v,
                                 const int32_t *pos, int64_t B, int64_t T, int n_head, int n_head_kv, int hd,
                                 float *lse, float *out) {
    att_job j = {.q = q, .k = k, .v = v, .pos = pos, .lse = lse, .out = out, .T = T, .n_head = n_head,
                 .n_head_kv = n_head_kv, .hd = hd};
    return att_run(tp, &j, B, att_fwd_chunk);
}

l3c_status l3c_trk_attention_bwd(l3c_threadpool *tp, const float *q, const float *k, const float *v,
                                 const int32_t *pos, const float *lse, const float *dout, int64_t B,
                                 int64_t T, int n_head, int n_head_kv, int hd, float *dq, float *dk,
                                 float *dv) {
    att_job j = {.q = q, .k = k, .v = v, .pos = pos, .lse_c = lse, .dout = dout, .dq = dq, .dk = dk, .dv = dv,
                 .T = T, .n_head = n_head, .n_head_kv = n_head_kv, .hd = hd};
    return att_run(tp, &j, B, att_bwd_chunk);
}
