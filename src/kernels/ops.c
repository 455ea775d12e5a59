/*
 * ops.c -- the numeric ops of the forward pass over T token rows, on the dispatched type table.
 *
 * matmul: each activation row is converted once to W's vec_dot_type (into the caller's
 * scratch; F32 rows are used in place), then tiles of TILE_ROWS output rows are split across
 * the pool. Each thread walks its tiles and, for each tile, every token, so a
 * tile of W stays in cache while all T activation rows stream past it (W is read once per call).
 * The traits' gemm kernel, when present, does one tile x all tokens in one call.
 *
 * Invariants: n_in is a multiple of the weight type's block size and the type is supported
 * (the weight loader checks both); nothing here allocates.
 */
#include "kernels/ops.h"

#include <math.h>
#include <string.h>

/* Rows per tile. Threads get whole tiles, so every row is computed by the same kernel call
 * whatever the thread count: results do not depend on it. */
#define TILE_ROWS 8

/* bytes of one activation row in vec_dot_type; 0 when the weight is not usable */
static size_t act_row_bytes(const l3c_weight *w, const l3c_type_traits *tr) {
    size_t bytes;
    if (!tr->vec_dot || !l3c_row_size(tr->vec_dot_type, w->n_in, &bytes)) return 0;
    return bytes;
}

size_t l3c_matmul_scratch_bytes(const l3c_weight *w, int64_t T) {
    const l3c_type_traits *tr = l3c_type_traits_get(w->type);
    size_t row = act_row_bytes(w, tr), total;
    if (row == 0 || T < 0 || !l3c_mul_ok(row, (size_t)T, &total)) return SIZE_MAX; /* unusable */
    return total;
}

typedef struct matmul_job {
    const l3c_weight *w;
    const l3c_type_traits *tr;
    const float *x;     /* [T x n_in] */
    const void *xq;     /* [T x x_stride bytes] x in vec_dot_type */
    void *scratch;      /* where xq is written when a conversion is needed */
    size_t x_stride;
    float *y;           /* [T x n_out] */
    int64_t T;
} matmul_job;

static void convert_task(void *arg, int ith, int nth) {
    matmul_job *j = arg;
    l3c_from_float_fn from = l3c_type_traits_get(j->tr->vec_dot_type)->from_float;
    int64_t lo, hi;
    l3c_split_range(j->T, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++)
        from(j->x + t * j->w->n_in, (char *)j->scratch + (size_t)t * j->x_stride, j->w->n_in);
}

static void dot_task(void *arg, int ith, int nth) {
    const matmul_job *j = arg;
    const l3c_weight *w = j->w;
    const char *wdata = w->data, *xq = j->xq;
    int64_t lo, hi; /* in tiles: tile k is rows [k * TILE_ROWS, (k + 1) * TILE_ROWS) */
    l3c_split_range((w->n_out + TILE_ROWS - 1) / TILE_ROWS, ith, nth, &lo, &hi);
    for (int64_t r0 = lo * TILE_ROWS; r0 < L3C_MIN(hi * TILE_ROWS, w->n_out); r0 += TILE_ROWS) {
        int64_t r1 = L3C_MIN(r0 + TILE_ROWS, w->n_out);
        if (j->tr->gemm) {
            j->tr->gemm(w->n_in, r1 - r0, j->T, j->y + r0, w->n_out,
                        wdata + (size_t)r0 * w->row_bytes, w->row_bytes, xq, j->x_stride);
            continue;
        }
        for (int64_t t = 0; t < j->T; t++)
            for (int64_t r = r0; r < r1; r++)
                j->tr->vec_dot(w->n_in, &j->y[t * w->n_out + r], wdata + (size_t)r * w->row_bytes,
                               xq + (size_t)t * j->x_stride);
    }
}

void l3c_matmul(l3c_threadpool *tp, const l3c_weight *w, const float *x, float *y, int64_t T,
                void *scratch) {
    const l3c_type_traits *tr = l3c_type_traits_get(w->type);
    matmul_job job = {.w = w, .tr = tr, .x = x, .scratch = scratch, .y = y, .T = T};
    job.x_stride = act_row_bytes(w, tr);
    L3C_ASSERT(job.x_stride != 0);
    if (T <= 0) return;
    if (tr->vec_dot_type == L3C_TYPE_F32) {
        job.xq = x; /* already in the activation format */
    } else {
        l3c_threadpool_run(tp, convert_task, &job);
        job.xq = scratch;
    }
    l3c_threadpool_run(tp, dot_task, &job);
}

void l3c_rmsnorm(const float *x, const float *g, float *y, int64_t T, int64_t n, float eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * n;
        float *yr = y + t * n;
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
        float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
        for (int64_t i = 0; i < n; i++) yr[i] = (xr[i] * scale) * g[i];
    }
}

void l3c_swiglu(float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

void l3c_add(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void l3c_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float max = x[0];
    for (int64_t i = 1; i < n; i++) max = L3C_MAX(max, x[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void l3c_get_row(const l3c_weight *w, int64_t id, float *dst) {
    L3C_ASSERT(id >= 0 && id < w->n_out); /* callers validate token ids */
    const l3c_type_traits *tr = l3c_type_traits_get(w->type);
    tr->to_float((const char *)w->data + (size_t)id * w->row_bytes, dst, w->n_in);
}
