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

#include <stdlib.h>
#include <string.h>

#define DX_ROWS 32      /* W rows per tile */
#define DX_COLS 512     /* target columns per chunk (rounded to whole blocks) */
#define DX_TOKENS 64    /* dx rows per chunk */

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

l3c_status l3c_trk_matmul_dx(l3c_threadpool *tp, const l3c_weight *w, const float *dy, int64_t N,
                             float scale, float *dx) {
    const l3c_type_traits *tr = l3c_type_traits_ref(w->type);
    if (!tr || !tr->to_float || w->n_in % tr->block_size)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "train: weight '%s' of type %s cannot be dequantized",
                        w->name ? w->name : "?", l3c_type_name(w->type));
    if (N <= 0) return L3C_OK;
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

typedef struct att_job {
    const float *q, *k, *v, *att_c, *dout;
    float *att, *out, *dq, *dk, *dv;
    int64_t T;
    int n_head, n_head_kv, hd;
} att_job;

static void att_fwd_chunk(void *arg, int64_t chunk, int ith) {
    const att_job *j = arg;
    l3c_tr_attention_fwd_part(j->q, j->k, j->v, chunk / j->n_head_kv, (int)(chunk % j->n_head_kv), j->T,
                              j->n_head, j->n_head_kv, j->hd, j->att, j->out);
}

static void att_bwd_chunk(void *arg, int64_t chunk, int ith) {
    const att_job *j = arg;
    l3c_tr_attention_bwd_part(j->q, j->k, j->v, j->att_c, j->dout, chunk / j->n_head_kv,
                              (int)(chunk % j->n_head_kv), j->T, j->n_head, j->n_head_kv, j->hd, j->dq,
                              j->dk, j->dv);
}

void l3c_trk_attention_fwd(l3c_threadpool *tp, const float *q, const float *k, const float *v, int64_t B,
                           int64_t T, int n_head, int n_head_kv, int hd, float *att, float *out) {
    att_job j = {.q = q, .k = k, .v = v, .att = att, .out = out, .T = T, .n_head = n_head,
                 .n_head_kv = n_head_kv, .hd = hd};
    l3c_threadpool_run(tp, B * n_head_kv, att_fwd_chunk, &j);
}

void l3c_trk_attention_bwd(l3c_threadpool *tp, const float *q, const float *k, const float *v,
                           const float *att, const float *dout, int64_t B, int64_t T, int n_head,
                           int n_head_kv, int hd, float *dq, float *dk, float *dv) {
    att_job j = {.q = q, .k = k, .v = v, .att_c = att, .dout = dout, .dq = dq, .dk = dk, .dv = dv,
                 .T = T, .n_head = n_head, .n_head_kv = n_head_kv, .hd = hd};
    l3c_threadpool_run(tp, B * n_head_kv, att_bwd_chunk, &j);
}
