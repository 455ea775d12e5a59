/*
 * ops.c -- the numeric ops of the forward pass over T token rows, on the dispatched type table.
 *
 * matmul: each activation row is converted once to W's activation format (its vec_dot_type, or
 * the packed kernel's format when W has a packed copy; into the caller's scratch; F32 rows are
 * used in place), then the output rows, in tiles of TILE_ROWS, are
 * computed as chunks of the thread pool (claimed dynamically, see threadpool.c). For each tile
 * the traits' gemm (or a vec_dot loop) runs over every token, so a tile of W stays in cache
 * while all T activation rows stream past it (W is read once per call). l3c_matmul_multi puts
 * several weights that read the same x (Q/K/V, gate/up) into one job, with one conversion per
 * activation type, and can finish SwiGLU inside the gate/up chunks: one thread-pool sync per
 * group instead of one per weight plus one per conversion.
 *
 * Invariants: every output row is computed by the same kernel call on the same tile whatever
 * the thread count and chunk size, so results never depend on them; n_in is a multiple of the
 * weight type's block size and the type is supported (the weight loader checks both); nothing
 * here allocates.
 */
#include "kernels/ops.h"

#include <math.h>
#include <string.h>

/* Rows per tile: the unit of work of one kernel call; a multiple of every layout's rows. */
#define TILE_ROWS 32
/* Up to this many elements (T * n_in) the caller converts x itself instead of paying a sync. */
#define CONVERT_INLINE 65536
/* Token rows per chunk of a parallel conversion. */
#define CONVERT_ROWS 4
/* Aim for at least this many chunks per thread so that a late or slow thread is absorbed by
 * the rest, and for at most CHUNK_MACS multiply-adds per chunk (~0.1 ms): when the OS preempts
 * a worker in the middle of a chunk, the others wait for that chunk only. */
#define CHUNKS_PER_THREAD 16
#define CHUNK_MACS (1 << 21)
#define SCRATCH_ALIGN 64

/* The activation format a weight's kernel reads: its vec_dot_type, or the packed kernel's own
 * format when the weight has a packed copy. from == NULL: F32, x is used in place. */
typedef struct act_fmt {
    l3c_from_float_fn from;
    size_t row_bytes;
    l3c_gemm_packed_fn gemm; /* packed: the layout's kernel for this T (its prompt kernel or not) */
} act_fmt;

static bool act_format(const l3c_weight *w, const l3c_type_traits *tr, int64_t T, act_fmt *f) {
    f->gemm = NULL;
    if (w->packed) {
        const l3c_pack_layout *L = w->layout;
        if (!L || !L->gemm || w->n_in % L->act_block_size) return false;
        f->from = L->act_from_float;
        f->row_bytes = (size_t)(w->n_in / L->act_block_size) * L->act_type_size;
        f->gemm = L->gemm;
        if (L->prompt.gemm && T >= L->prompt.min_T && w->n_in % L->prompt.act_block_size == 0) {
            f->from = L->prompt.act_from_float;
            f->row_bytes = (size_t)(w->n_in / L->prompt.act_block_size) * L->prompt.act_type_size;
            f->gemm = L->prompt.gemm;
        }
        return true;
    }
    if (!tr->vec_dot || !l3c_row_size(tr->vec_dot_type, w->n_in, &f->row_bytes)) return false;
    f->from = tr->vec_dot_type == L3C_TYPE_F32 ? NULL : l3c_type_traits_get(tr->vec_dot_type)->from_float;
    return true;
}

static size_t align_up(size_t n) { return (n + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN; }

/* Scratch for converting x to the activation format of each of w[0..n), shared between weights
 * with the same format; slot[i] receives the byte offset of w[i]'s converted rows (SIZE_MAX: x
 * used in place). Returns the total or SIZE_MAX when a weight is unusable. */
static size_t plan_scratch(int n, const l3c_weight *const *w, int64_t T, size_t *slot, act_fmt *fmt) {
    size_t total = 0;
    if (n < 1 || n > L3C_MATMUL_MAX || T < 0) return SIZE_MAX;
    for (int i = 0; i < n; i++) {
        size_t bytes;
        if (!act_format(w[i], l3c_type_traits_get(w[i]->type), T, &fmt[i]) ||
            w[i]->n_in != w[0]->n_in)
            return SIZE_MAX;
        slot[i] = SIZE_MAX;
        if (!fmt[i].from) continue;
        for (int k = 0; k < i && slot[i] == SIZE_MAX; k++)
            if (slot[k] != SIZE_MAX && fmt[k].from == fmt[i].from) slot[i] = slot[k];
        if (slot[i] != SIZE_MAX) continue;
        if (!l3c_mul_ok(fmt[i].row_bytes, (size_t)T, &bytes) || total > SIZE_MAX - align_up(bytes))
            return SIZE_MAX;
        slot[i] = total;
        total += align_up(bytes);
    }
    return total;
}

size_t l3c_matmul_multi_scratch_bytes(int n, const l3c_weight *const *w, int64_t T) {
    size_t slot[L3C_MATMUL_MAX];
    act_fmt fmt[L3C_MATMUL_MAX];
    return plan_scratch(n, w, T, slot, fmt);
}

size_t l3c_matmul_scratch_bytes(const l3c_weight *w, int64_t T) {
    return l3c_matmul_multi_scratch_bytes(1, &w, T);
}

typedef struct matmul_job {
    int n;
    const l3c_weight *w[L3C_MATMUL_MAX];
    const l3c_type_traits *tr[L3C_MATMUL_MAX];
    float *y[L3C_MATMUL_MAX];     /* [T x w[i]->n_out] */
    const void *xq[L3C_MATMUL_MAX]; /* [T x xs[i] bytes] x in w[i]'s activation format */
    l3c_gemm_packed_fn gemm[L3C_MATMUL_MAX]; /* packed w[i]: its kernel for this T */
    size_t xs[L3C_MATMUL_MAX];
    l3c_from_float_fn from[L3C_MATMUL_MAX];
    int64_t first_chunk[L3C_MATMUL_MAX + 1]; /* chunks of w[i]: [first_chunk[i], first_chunk[i+1]) */
    int64_t tiles_per_chunk;
    int64_t T;
    bool swiglu;
    /* conversion: the distinct targets */
    const float *x;               /* [T x n_in] */
    int n_conv;
    int conv_src[L3C_MATMUL_MAX]; /* weight index whose xq / xs / from to produce */
    int64_t conv_rows;            /* token rows per conversion chunk */
    int64_t conv_chunks;          /* per target */
} matmul_job;

static void convert_rows(const matmul_job *j, int k, int64_t t0, int64_t t1) {
    const int i = j->conv_src[k];
    const int64_t n_in = j->w[i]->n_in;
    for (int64_t t = t0; t < t1; t++)
        j->from[i](j->x + t * n_in, (char *)j->xq[i] + (size_t)t * j->xs[i], n_in);
}

static void convert_chunk(void *arg, int64_t c, int ith) {
    const matmul_job *j = arg;
    const int k = (int)(c / j->conv_chunks);
    const int64_t t0 = (c % j->conv_chunks) * j->conv_rows;
    convert_rows(j, k, t0, L3C_MIN(t0 + j->conv_rows, j->T));
}

/* rows [r0, r1) of w[i] for every token */
static void tile(const matmul_job *j, int i, int64_t r0, int64_t r1) {
    const l3c_weight *w = j->w[i];
    const l3c_type_traits *tr = j->tr[i];
    const char *wdata = (const char *)w->data + (size_t)r0 * w->row_bytes;
    const char *xq = j->xq[i];
    float *y = j->y[i] + r0;
    if (w->packed) { /* groups of R rows, each R * row_bytes; r0 % R == 0 */
        const int64_t R = w->layout->rows;
        const char *g = (const char *)w->packed + (size_t)(r0 / R) * (size_t)R * w->row_bytes;
        j->gemm[i](w->n_in, r1 - r0, j->T, y, w->n_out, g, xq, j->xs[i]);
        return;
    }
    if (tr->gemm) {
        tr->gemm(w->n_in, r1 - r0, j->T, y, w->n_out, wdata, w->row_bytes, xq, j->xs[i]);
        return;
    }
    for (int64_t t = 0; t < j->T; t++)
        for (int64_t r = 0; r < r1 - r0; r++)
            tr->vec_dot(w->n_in, &y[t * w->n_out + r], wdata + (size_t)r * w->row_bytes,
                        xq + (size_t)t * j->xs[i]);
}

static void swiglu_rows(float *a, const float *b, int64_t ld, int64_t T, int64_t n);

static void dot_chunk(void *arg, int64_t c, int ith) {
    const matmul_job *j = arg;
    int i = 0;
    while (c >= j->first_chunk[i + 1]) i++;
    const int64_t n_out = j->w[i]->n_out;
    const int64_t lo = (c - j->first_chunk[i]) * j->tiles_per_chunk * TILE_ROWS;
    const int64_t hi = L3C_MIN(lo + j->tiles_per_chunk * TILE_ROWS, n_out);
    for (int64_t r0 = lo; r0 < hi; r0 += TILE_ROWS) {
        const int64_t r1 = L3C_MIN(r0 + TILE_ROWS, n_out);
        tile(j, i, r0, r1);
        if (j->swiglu) { /* w[0] = gate, w[1] = up: same tile of both, then the activation */
            tile(j, 1, r0, r1);
            swiglu_rows(j->y[0] + r0, j->y[1] + r0, n_out, j->T, r1 - r0);
        }
    }
}

/* fills first_chunk[] for tiles_per_chunk; returns the number of chunks */
static int64_t layout_chunks(matmul_job *j) {
    int64_t chunks = 0;
    for (int i = 0; i < j->n; i++) {
        j->first_chunk[i] = chunks;
        if (!j->swiglu || i == 0)
            chunks += l3c_n_chunks(l3c_n_chunks(j->w[i]->n_out, TILE_ROWS), j->tiles_per_chunk);
    }
    j->first_chunk[j->n] = chunks;
    return chunks;
}

void l3c_matmul_multi(l3c_threadpool *tp, int n, const l3c_weight *const *w, float *const *y,
                      const float *x, int64_t T, void *scratch, bool swiglu) {
    size_t slot[L3C_MATMUL_MAX];
    act_fmt fmt[L3C_MATMUL_MAX];
    L3C_ASSERT(plan_scratch(n, w, T, slot, fmt) != SIZE_MAX);
    L3C_ASSERT(!swiglu || (n == 2 && w[0]->n_out == w[1]->n_out));
    if (T <= 0) return;
    matmul_job job = {.n = n, .T = T, .swiglu = swiglu, .x = x};
    for (int i = 0; i < n; i++) {
        job.w[i] = w[i];
        job.tr[i] = l3c_type_traits_get(w[i]->type);
        job.y[i] = y[i];
        job.xs[i] = fmt[i].row_bytes;
        job.from[i] = fmt[i].from;
        job.gemm[i] = fmt[i].gemm;
        if (slot[i] == SIZE_MAX) {
            job.xq[i] = x; /* F32: already in the activation format */
            continue;
        }
        job.xq[i] = (char *)scratch + slot[i];
        bool first = true;
        for (int k = 0; k < job.n_conv; k++) first = first && job.xq[job.conv_src[k]] != job.xq[i];
        if (first) job.conv_src[job.n_conv++] = i;
    }

    /* ---- x to the activation types */
    if (job.n_conv > 0) {
        if (T * w[0]->n_in <= CONVERT_INLINE) {
            for (int k = 0; k < job.n_conv; k++) convert_rows(&job, k, 0, T);
        } else {
            job.conv_rows = L3C_MAX(CONVERT_ROWS, l3c_n_chunks(T * job.n_conv, L3C_MAX_CHUNKS));
            job.conv_chunks = l3c_n_chunks(T, job.conv_rows);
            l3c_threadpool_run(tp, job.n_conv * job.conv_chunks, convert_chunk, &job);
        }
    }

    /* ---- the products: chunks of tiles_per_chunk tiles, weight after weight */
    const int nth = l3c_threadpool_n_threads(tp);
    int64_t tiles = 0;
    for (int i = 0; i < (swiglu ? 1 : n); i++) tiles += l3c_n_chunks(w[i]->n_out, TILE_ROWS);
    const int64_t tile_macs = TILE_ROWS * T * w[0]->n_in * (swiglu ? 2 : 1);
    job.tiles_per_chunk = nth == 1 ? tiles
                                   : L3C_MAX(1, L3C_MIN(tiles / (CHUNKS_PER_THREAD * nth),
                                                        CHUNK_MACS / tile_macs));
    while (layout_chunks(&job) > L3C_MAX_CHUNKS) job.tiles_per_chunk *= 2; /* huge matrices */
    l3c_threadpool_run(tp, job.first_chunk[n], dot_chunk, &job);
}

void l3c_matmul(l3c_threadpool *tp, const l3c_weight *w, const float *x, float *y, int64_t T,
                void *scratch) {
    l3c_matmul_multi(tp, 1, &w, &y, x, T, scratch, false);
}

const l3c_pack_layout *l3c_weight_layout(const l3c_weight *w, bool bf16) {
    const l3c_type_traits *tr = l3c_type_traits_get(w->type);
    if (bf16 && tr->packed_bf16.rows) return &tr->packed_bf16;
    return tr->packed.rows ? &tr->packed : NULL;
}

size_t l3c_weight_packed_bytes(const l3c_weight *w, const l3c_pack_layout *L) {
    size_t bytes;
    if (!L || !L->rows || w->n_in % L->act_block_size || TILE_ROWS % L->rows) return 0;
    if (!l3c_mul_ok(w->row_bytes * (size_t)L->rows, (size_t)l3c_weight_pack_groups(w, L), &bytes)) return 0;
    return bytes;
}

int64_t l3c_weight_pack_groups(const l3c_weight *w, const l3c_pack_layout *L) {
    return L && L->rows ? l3c_n_chunks(w->n_out, L->rows) : 0;
}

void l3c_weight_pack(const l3c_weight *w, const l3c_pack_layout *L, void *dst, int64_t g0, int64_t g1) {
    const int64_t R = L->rows;
    for (int64_t g = g0; g < g1; g++) {
        const int64_t r0 = g * R;
        L->pack(w->n_in, L3C_MIN(R, w->n_out - r0), (const char *)w->data + (size_t)r0 * w->row_bytes,
                 w->row_bytes, (char *)dst + (size_t)g * (size_t)R * w->row_bytes);
    }
}

static bool rms_ss_avx512(const float *xr, int64_t n, double *ss);
static bool rmsnorm_add_avx512(const float *x, const float *g, float *y, int64_t T, int64_t n, float eps,
                               float *ax, const float *ay, int64_t an);

/* 1 / sqrt(mean(x^2) + eps) of one row, the sum of squares in double (AVX-512: 16 lanes, then in
 * order); l3c_rmsnorm and l3c_rms_rstd both use it, so they agree bit for bit */
static float rms_rstd_row(const float *xr, int64_t n, float eps) {
    double ss = 0.0;
    if (!rms_ss_avx512(xr, n, &ss))
        for (int64_t i = 0; i < n; i++)
            ss += (double)xr[i] * xr[i];
    return 1.0f / sqrtf((float)(ss / (double)n) + eps);
}

void l3c_rmsnorm(const float *x, const float *g, float *y, int64_t T, int64_t n, float eps) {
    if (rmsnorm_add_avx512(x, g, y, T, n, eps, NULL, NULL, 0)) return;
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * n;
        float *yr = y + t * n;
        const float scale = rms_rstd_row(xr, n, eps);
        for (int64_t i = 0; i < n; i++) yr[i] = (xr[i] * scale) * g[i];
    }
}

void l3c_rms_rstd(const float *x, float *rstd, int64_t T, int64_t n, float eps) {
    for (int64_t t = 0; t < T; t++)
        rstd[t] = rms_rstd_row(x + t * n, n, eps);
}

/* y += a * x: AVX2 when the CPU has it (the forward pass is compiled for the baseline ISA, and
 * -O2 does not vectorize loops that need alias checks), with a separate multiply and add so
 * that both versions round exactly alike. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx2"))) static void axpy_avx2(float *restrict y, float a, const float *restrict x,
                                                        int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 p0 = _mm256_mul_ps(va, _mm256_loadu_ps(x + i)), p1 = _mm256_mul_ps(va, _mm256_loadu_ps(x + i + 8));
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), p0));
        _mm256_storeu_ps(y + i + 8, _mm256_add_ps(_mm256_loadu_ps(y + i + 8), p1));
    }
    for (; i < n; i++) y[i] += a * x[i];
}

__attribute__((target("avx2"))) static void axpy_rows_avx2(float *restrict y, const float *a, const float *X,
                                                             int64_t ldx, int64_t n_rows, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 y0 = _mm256_loadu_ps(y + i), y1 = _mm256_loadu_ps(y + i + 8);
        for (int64_t r = 0; r < n_rows; r++) {
            const __m256 va = _mm256_set1_ps(a[r]);
            const float *x = X + r * ldx + i;
            y0 = _mm256_add_ps(y0, _mm256_mul_ps(va, _mm256_loadu_ps(x)));
            y1 = _mm256_add_ps(y1, _mm256_mul_ps(va, _mm256_loadu_ps(x + 8)));
        }
        _mm256_storeu_ps(y + i, y0);
        _mm256_storeu_ps(y + i + 8, y1);
    }
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t k = i; k < n; k++) y[k] += a[r] * X[r * ldx + k];
}

__attribute__((target("avx512f"))) static void axpy_rows_avx512(float *restrict y, const float *a, const float *X,
                                                                 int64_t ldx, int64_t n_rows, int64_t n) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 y0 = _mm512_loadu_ps(y + i), y1 = _mm512_loadu_ps(y + i + 16);
        for (int64_t r = 0; r < n_rows; r++) {
            const __m512 va = _mm512_set1_ps(a[r]);
            const float *x = X + r * ldx + i;
            y0 = _mm512_add_ps(y0, _mm512_mul_ps(va, _mm512_loadu_ps(x)));
            y1 = _mm512_add_ps(y1, _mm512_mul_ps(va, _mm512_loadu_ps(x + 16)));
        }
        _mm512_storeu_ps(y + i, y0);
        _mm512_storeu_ps(y + i + 16, y1);
    }
    if (i < n) axpy_rows_avx2(y + i, a, X + i, ldx, n_rows, n - i);
}

/* what this CPU runs of the code above and below (bits; -1 until asked, an idempotent race) */
enum { CAP_AVX2 = 1, CAP_FMA = 2, CAP_AVX512 = 4 };
static int g_caps = -1;
static int cpu_caps(void) {
    if (g_caps < 0) {
        int c = 0;
        if (__builtin_cpu_supports("avx2")) c |= CAP_AVX2;
        if ((c & CAP_AVX2) && __builtin_cpu_supports("fma")) c |= CAP_FMA;
        if ((c & CAP_AVX2) && __builtin_cpu_supports("avx512f")) c |= CAP_AVX512;
        g_caps = c;
    }
    return g_caps;
}
#endif

void l3c_axpy(float *restrict y, float a, const float *restrict x, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (cpu_caps() & CAP_AVX2) {
        axpy_avx2(y, a, x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/*
 * exp for softmax and SiLU: Cephes' expf (range reduction by ln 2 in two parts, degree-6
 * polynomial; within 2 ulp of exp on [-87.3, 88.376]; x is clamped to [-88.376, 88.376], so the
 * result is 0 where 2^round(x log2 e) would be below 2^-126 and at most ~3.4e38, never inf). One
 * formula in two spellings: EXP_STEPS over scalars (fmaf) and over AVX2 vectors, so every element
 * gets the same bits whichever loop computes it and whatever the CPU (FMA rounds once either way).
 */
#define EXP_LO (-88.3762626647949f)
#define EXP_HI 88.3762626647949f
#define EXP_STEPS(x, FMA, MUL, ADD, ROUND, MIN, MAX, C, POW2)                          \
    do {                                                                               \
        x = MAX(MIN(x, C(EXP_HI)), C(EXP_LO));                                         \
        const __typeof__(x) fx = ROUND(MUL(x, C(1.44269504088896341f)));               \
        __typeof__(x) r = FMA(fx, C(-0.693359375f), x);                                \
        r = FMA(fx, C(2.12194440e-4f), r);                                             \
        __typeof__(x) y = C(1.9875691500e-4f);                                         \
        y = FMA(y, r, C(1.3981999507e-3f));                                            \
        y = FMA(y, r, C(8.3334519073e-3f));                                            \
        y = FMA(y, r, C(4.1665795894e-2f));                                            \
        y = FMA(y, r, C(1.6666665459e-1f));                                            \
        y = FMA(y, r, C(5.0000001201e-1f));                                            \
        y = ADD(FMA(y, MUL(r, r), r), C(1.0f));                                        \
        x = MUL(y, POW2(fx));                                                          \
    } while (0)

static inline float s_pow2(float fx) { /* 2^fx for integral fx in [-127, 127] (2^-127 gives 0) */
    uint32_t bits = (uint32_t)((int32_t)fx + 127) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static inline float s_mul(float a, float b) { return a * b; }
static inline float s_add(float a, float b) { return a + b; }
static inline float s_c(float c) { return c; }

static inline float l3c_expf(float x) {
    EXP_STEPS(x, fmaf, s_mul, s_add, nearbyintf, fminf, fmaxf, s_c, s_pow2);
    return x;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define V_TARGET __attribute__((target("avx2,fma")))
V_TARGET static inline __m256 v_pow2(__m256 fx) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23));
}
V_TARGET static inline __m256 v_round(__m256 x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
V_TARGET static inline __m256 v_exp(__m256 x) {
    EXP_STEPS(x, _mm256_fmadd_ps, _mm256_mul_ps, _mm256_add_ps, v_round, _mm256_min_ps, _mm256_max_ps,
              _mm256_set1_ps, v_pow2);
    return x;
}

V_TARGET static void swiglu_avx2(float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(a + i);
        const __m256 e = v_exp(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) a[i] = a[i] / (1.0f + l3c_expf(-a[i])) * b[i];
}

/* the same EXP_STEPS on 16 lanes (each lane's operations are v_exp's: the same bits) */
#define V512_TARGET __attribute__((target("avx512f")))
V512_TARGET static inline __m512 v512_pow2(__m512 fx) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23));
}
V512_TARGET static inline __m512 v512_round(__m512 x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
V512_TARGET static inline __m512 v512_exp(__m512 x) {
    EXP_STEPS(x, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_add_ps, v512_round, _mm512_min_ps, _mm512_max_ps,
              _mm512_set1_ps, v512_pow2);
    return x;
}

V512_TARGET static void swiglu_avx512(float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(a + i);
        const __m512 e = v512_exp(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_storeu_ps(a + i, _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), _mm512_loadu_ps(b + i)));
    }
    if (i < n) swiglu_avx2(a + i, b + i, n - i);
}

/* *ss = sum of x^2 in double, 16 lanes then in order; false: no AVX-512 here */
V512_TARGET static bool rms_ss_avx512(const float *xr, int64_t n, double *ss) {
    if ((cpu_caps() & CAP_AVX512) == 0) return false;
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512d lo = _mm512_cvtps_pd(_mm256_loadu_ps(xr + i)), hi = _mm512_cvtps_pd(_mm256_loadu_ps(xr + i + 8));
        s0 = _mm512_fmadd_pd(lo, lo, s0);
        s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    double lanes[8], sum = 0.0;
    _mm512_storeu_pd(lanes, _mm512_add_pd(s0, s1));
    for (int k = 0; k < 8; k++) sum += lanes[k];
    for (; i < n; i++) sum += (double)xr[i] * xr[i];
    *ss = sum;
    return true;
}

/* rmsnorm of T rows (x != NULL; the sum of squares in double, 16 lanes then in order; then
 * (x * scale) * g as the scalar loop), or ax[i] += ay[i] (ax != NULL; the same bits as the
 * scalar loop). false: no AVX-512 here, the caller runs the scalar loops. */
V512_TARGET static bool rmsnorm_add_avx512(const float *x, const float *g, float *y, int64_t T, int64_t n, float eps,
                                           float *ax, const float *ay, int64_t an) {
    if ((cpu_caps() & CAP_AVX512) == 0) return false;
    if (ax) {
        int64_t i = 0;
        for (; i + 16 <= an; i += 16)
            _mm512_storeu_ps(ax + i, _mm512_add_ps(_mm512_loadu_ps(ax + i), _mm512_loadu_ps(ay + i)));
        const __mmask16 m = (__mmask16)((1u << (an - i)) - 1);
        _mm512_mask_storeu_ps(ax + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, ax + i), _mm512_maskz_loadu_ps(m, ay + i)));
        return true;
    }
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * n;
        float *yr = y + t * n;
        const float scale = rms_rstd_row(xr, n, eps);
        int64_t i;
        const __m512 vs = _mm512_set1_ps(scale);
        for (i = 0; i + 16 <= n; i += 16)
            _mm512_storeu_ps(yr + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(xr + i), vs), _mm512_loadu_ps(g + i)));
        for (; i < n; i++) yr[i] = (xr[i] * scale) * g[i];
    }
    return true;
}

/* l3c_swiglu on T rows of n (a multiple of 16) ld apart: the same bits, one call per tile. The
 * rows are a page or more apart (ld = n_ff), which the hardware prefetchers do not follow, so
 * the rows SWIGLU_AHEAD ahead are prefetched. */
#define SWIGLU_AHEAD 4
V512_TARGET static void swiglu_rows_avx512(float *a, const float *b, int64_t ld, int64_t T, int64_t n) {
    for (int64_t t = 0; t < T; t++) {
        if (t + SWIGLU_AHEAD < T)
            for (int64_t i = 0; i < n; i += 16) {
                _mm_prefetch((const char *)(a + (t + SWIGLU_AHEAD) * ld + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(b + (t + SWIGLU_AHEAD) * ld + i), _MM_HINT_T0);
            }
        for (int64_t i = 0; i < n; i += 16) {
            float *at = a + t * ld + i;
            const __m512 v = _mm512_loadu_ps(at);
            const __m512 e = v512_exp(_mm512_sub_ps(_mm512_setzero_ps(), v));
            _mm512_storeu_ps(at, _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)),
                                               _mm512_loadu_ps(b + t * ld + i)));
        }
    }
}

/* x[i] = exp(x[i] - max) for all i; returns their sum (in double, four lanes then in order) */
V_TARGET static double softmax_exp_avx2(float *x, int64_t n, float max) {
    const __m256 vm = _mm256_set1_ps(max);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = v_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4], sum = 0.0;
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    for (int k = 0; k < 4; k++) sum += lanes[k];
    for (; i < n; i++) {
        x[i] = l3c_expf(x[i] - max);
        sum += x[i];
    }
    return sum;
}

/* max over x (lane-wise max_ps(m, x) is L3C_MAX(m, x); the same value as the scalar loop for any
 * input without NaN) */
V_TARGET static float softmax_max_avx2(const float *x, int64_t n) {
    float max = x[0];
    int64_t i = 0;
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
        float lanes[8];
        _mm256_storeu_ps(lanes, m);
        max = lanes[0];
        for (int k = 1; k < 8; k++) max = L3C_MAX(max, lanes[k]);
    }
    for (; i < n; i++) max = L3C_MAX(max, x[i]);
    return max;
}

V_TARGET static void scale_avx2(float *x, int64_t n, float a) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(a)));
    for (; i < n; i++) x[i] *= a;
}

#endif

void l3c_swiglu(float *a, const float *b, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if ((cpu_caps() & (CAP_FMA | CAP_AVX512)) == (CAP_FMA | CAP_AVX512)) {
        swiglu_avx512(a, b, n);
        return;
    }
    if (cpu_caps() & CAP_FMA) {
        swiglu_avx2(a, b, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) a[i] = a[i] / (1.0f + l3c_expf(-a[i])) * b[i];
}

static void swiglu_rows(float *a, const float *b, int64_t ld, int64_t T, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if ((cpu_caps() & (CAP_FMA | CAP_AVX512)) == (CAP_FMA | CAP_AVX512) && n % 16 == 0) {
        swiglu_rows_avx512(a, b, ld, T, n);
        return;
    }
#endif
    for (int64_t t = 0; t < T; t++) l3c_swiglu(a + t * ld, b + t * ld, n);
}

void l3c_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    double sum = 0.0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (cpu_caps() & CAP_FMA) { /* the scalar loops' bits: max is exact, exp as EXP_STEPS */
        const float max = softmax_max_avx2(x, n);
        sum = softmax_exp_avx2(x, n, max);
        scale_avx2(x, n, (float)(1.0 / sum));
        return;
    }
#endif
    float max = x[0];
    for (int64_t i = 1; i < n; i++) max = L3C_MAX(max, x[i]);
    {
        for (int64_t i = 0; i < n; i++) {
            x[i] = l3c_expf(x[i] - max);
            sum += x[i];
        }
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void l3c_axpy_rows(float *restrict y, const float *a, const float *X, int64_t ldx, int64_t n_rows, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (cpu_caps() & CAP_AVX512) {
        axpy_rows_avx512(y, a, X, ldx, n_rows, n);
        return;
    }
    if (cpu_caps() & CAP_AVX2) {
        axpy_rows_avx2(y, a, X, ldx, n_rows, n);
        return;
    }
#endif
    for (int64_t r = 0; r < n_rows; r++) l3c_axpy(y, a[r], X + r * ldx, n);
}

void l3c_add(float *x, const float *y, int64_t n) {
    if (rmsnorm_add_avx512(NULL, NULL, NULL, 0, 0, 0.0f, x, y, n)) return;
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void l3c_get_row(const l3c_weight *w, int64_t id, float *dst) {
    L3C_ASSERT(id >= 0 && id < w->n_out); /* callers validate token ids */
    const l3c_type_traits *tr = l3c_type_traits_get(w->type);
    if (w->packed) { /* block by block from the group: the file's pages may have been released */
        const l3c_pack_layout *L = w->layout;
        const int64_t R = L->rows, bs = L->act_block_size; /* whole blocks, in order */
        const char *g = (const char *)w->packed + (size_t)(id / R) * (size_t)R * w->row_bytes;
        char blk[512]; /* one such unit of any weight type (Q6_K: 210 bytes, F16: 64) */
        size_t unit;
        L3C_ASSERT(l3c_row_size(w->type, bs, &unit) && unit <= sizeof blk);
        for (int64_t b = 0; b < w->n_in / bs; b++) {
            L->unpack(bs, g + (size_t)b * (size_t)R * unit, (int)(id % R), blk);
            tr->to_float(blk, dst + b * bs, bs);
        }
        return;
    }
    tr->to_float((const char *)w->data + (size_t)id * w->row_bytes, dst, w->n_in);
}

/* ---------------------------------------------------------------- attention rows */

/* K / V rows converted to float at a time */
#define ATT_KB 32

static int64_t round16(int64_t x) {
    return (x + 15) / 16 * 16;
}

size_t l3c_attn_work_floats(int64_t R, int64_t n_max, int64_t hd) {
    const int64_t Rp = round16(R);
    /* scores [n_max x Rp], queries transposed [hd x Rp], converted rows [ATT_KB x hd], 1 / sums
     * [Rp] */
    return (size_t)(n_max * Rp + hd * Rp + ATT_KB * hd + Rp);
}

/* key / value row p as floats: in place, or converted into tmp */
static const float *kv_row(const l3c_attn_rows_args *A, const uint8_t *base, int64_t p,
                           float *tmp) {
    const uint8_t *row = base + (size_t)p * A->row_bytes;
    if (!A->to_float) return (const float *)row;
    A->to_float(row, tmp, A->hd);
    return tmp;
}

void l3c_attn_rows_ref(const l3c_attn_rows_args *A) {
    const int64_t hd = A->hd;
    float *s = A->work;              /* [n[r]] scores, then exps */
    float *tmp = s + A->n[A->R - 1]; /* [hd] one converted row */
    for (int64_t r = 0; r < A->R; r++) {
        const int64_t n = A->n[r];
        const float *q = A->q[r];
        float *o = A->out[r];
        for (int64_t p = 0; p < n; p++) {
            const float *k = kv_row(A, A->k, p, tmp);
            float acc = 0.0f;
            for (int64_t d = 0; d < hd; d++)
                acc = fmaf(k[d], q[d], acc);
            s[p] = acc;
        }
        float m = s[0];
        for (int64_t p = 1; p < n; p++)
            m = L3C_MAX(m, s[p]);
        const float ms = m * A->scale;
        double sum = 0.0;
        for (int64_t p = 0; p < n; p++) {
            s[p] = l3c_expf(s[p] * A->scale - ms);
            sum += (double)s[p];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t d = 0; d < hd; d++)
            o[d] = 0.0f;
        for (int64_t p = 0; p < n; p++) {
            const float *v = kv_row(A, A->v, p, tmp);
            for (int64_t d = 0; d < hd; d++)
                o[d] = fmaf(s[p], v[d], o[d]);
        }
        for (int64_t d = 0; d < hd; d++)
            o[d] *= inv;
        if (A->probs)
            for (int64_t p = 0; p < n; p++)
                A->probs[r][p] = s[p] * inv;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* constant NP / NV / NR / ND and unrolled loops: the accumulators live in registers */
#define ATT_INLINE V512_TARGET static inline __attribute__((always_inline))

/* keys / values [p0, p0 + np) as float rows ldr apart: in place, or converted into tmp */
static const float *kv_rows(const l3c_attn_rows_args *A, const uint8_t *base, int64_t p0,
                            int64_t np, float *tmp, int64_t *ldr) {
    if (!A->to_float) {
        *ldr = (int64_t)(A->row_bytes / sizeof(float));
        return (const float *)(base + (size_t)p0 * A->row_bytes);
    }
    for (int64_t p = 0; p < np; p++)
        A->to_float(base + (size_t)(p0 + p) * A->row_bytes, tmp + p * A->hd, A->hd);
    *ldr = A->hd;
    return tmp;
}

/* S[i][16 j .. 16 j + 15] = sum_d k_i[d] * Qt[d][16 j ..] for NP keys x NV vectors of 16 rows:
 * per (key, row) one fma chain over d in order, as the reference */
ATT_INLINE void qk_micro(int NP, int NV, int64_t hd, const float *k, int64_t ldk, const float *Qt,
                         int64_t Rp, float *S) {
    __m512 acc[8][3];
#pragma GCC unroll 8
    for (int i = 0; i < NP; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; d++) {
        __m512 qv[3];
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++)
            qv[j] = _mm512_loadu_ps(Qt + d * Rp + 16 * j);
#pragma GCC unroll 8
        for (int i = 0; i < NP; i++) {
            const __m512 kb = _mm512_set1_ps(k[i * ldk + d]);
#pragma GCC unroll 8
            for (int j = 0; j < NV; j++)
                acc[i][j] = _mm512_fmadd_ps(kb, qv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < NP; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++)
            _mm512_storeu_ps(S + i * Rp + 16 * j, acc[i][j]);
}

/* o_i[d0 ..] += sum_{p in [pa, pb)} P[p][i] * v_p[d0 ..] for NR rows (one fma chain per element in
 * p order) over ND vectors of 16 elements; the last one masked by tail */
ATT_INLINE void pv_micro(int NR, int ND, float *const *o, int64_t d0, __mmask16 tail,
                         const float *P, int64_t Rp, const float *V, int64_t ldv, int64_t vp0,
                         int64_t pa, int64_t pb) {
    __m512 acc[4][4];
#pragma GCC unroll 8
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 8
        for (int c = 0; c < ND; c++)
            acc[i][c] = _mm512_maskz_loadu_ps(c == ND - 1 ? tail : 0xFFFF, o[i] + d0 + 16 * c);
    for (int64_t p = pa; p < pb; p++) {
        __m512 vv[4];
#pragma GCC unroll 8
        for (int c = 0; c < ND; c++)
            vv[c] = _mm512_maskz_loadu_ps(c == ND - 1 ? tail : 0xFFFF,
                                          V + (p - vp0) * ldv + d0 + 16 * c);
#pragma GCC unroll 8
        for (int i = 0; i < NR; i++) {
            const __m512 pb_ = _mm512_set1_ps(P[p * Rp + i]);
#pragma GCC unroll 8
            for (int c = 0; c < ND; c++)
                acc[i][c] = _mm512_fmadd_ps(pb_, vv[c], acc[i][c]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < NR; i++)
#pragma GCC unroll 8
        for (int c = 0; c < ND; c++)
            _mm512_mask_storeu_ps(o[i] + d0 + 16 * c, c == ND - 1 ? tail : 0xFFFF, acc[i][c]);
}

V512_TARGET static void qk_block(int64_t np, int64_t nv, int64_t hd, const float *k, int64_t ldk,
                                 const float *Qt, int64_t Rp, float *S) {
    for (int64_t j = 0; j < nv; j += 3) {
        const int NV = (int)L3C_MIN(3, nv - j);
        const float *Qj = Qt + 16 * j;
        float *Sj = S + 16 * j;
        int64_t i = 0;
        if (NV == 1)
            for (; i + 8 <= np; i += 8)
                qk_micro(8, 1, hd, k + i * ldk, ldk, Qj, Rp, Sj + i * Rp);
        for (; i + 4 <= np; i += 4) {
            if (NV == 1)
                qk_micro(4, 1, hd, k + i * ldk, ldk, Qj, Rp, Sj + i * Rp);
            else if (NV == 2)
                qk_micro(4, 2, hd, k + i * ldk, ldk, Qj, Rp, Sj + i * Rp);
            else
                qk_micro(4, 3, hd, k + i * ldk, ldk, Qj, Rp, Sj + i * Rp);
        }
        for (; i < np; i++) {
            if (NV == 1)
                qk_micro(1, 1, hd, k + i * ldk, ldk, Qj, Rp, Sj + i * Rp);
            else if (NV == 2)
                qk_micro(1, 2, hd, k + i * ldk, ldk, Qj, Rp, Sj + i * Rp);
            else
                qk_micro(1, 3, hd, k + i * ldk, ldk, Qj, Rp, Sj + i * Rp);
        }
    }
}

#define PV_CASE(nr, nd) pv_micro(nr, nd, o, d0, tail, P, Rp, V, ldv, vp0, pa, pb)
#define PV_ND(nr)                                                                                  \
    switch (ND) {                                                                                  \
    case 1:                                                                                        \
        PV_CASE(nr, 1);                                                                            \
        break;                                                                                     \
    case 2:                                                                                        \
        PV_CASE(nr, 2);                                                                            \
        break;                                                                                     \
    case 3:                                                                                        \
        PV_CASE(nr, 3);                                                                            \
        break;                                                                                     \
    default:                                                                                       \
        PV_CASE(nr, 4);                                                                            \
        break;                                                                                     \
    }
/* V: the values of keys vp0 .. (rows ldv apart); keys [pa, pb) of NR rows */
V512_TARGET static void pv_rows(int NR, float *const *o, int64_t hd, const float *P, int64_t Rp,
                                const float *V, int64_t ldv, int64_t vp0, int64_t pa, int64_t pb) {
    for (int64_t d0 = 0; d0 < hd; d0 += 64) {
        const int64_t left = L3C_MIN(64, hd - d0);
        const int ND = (int)((left + 15) / 16);
        const __mmask16 tail = (__mmask16)(left % 16 ? (1u << (left % 16)) - 1 : 0xFFFF);
        switch (NR) {
        case 1:
            PV_ND(1);
            break;
        case 2:
            PV_ND(2);
            break;
        case 3:
            PV_ND(3);
            break;
        default:
            PV_ND(4);
            break;
        }
    }
}
#undef PV_ND
#undef PV_CASE

V512_TARGET static void attn_rows_avx512(const l3c_attn_rows_args *A) {
    const int64_t R = A->R, hd = A->hd, Rp = round16(R), nv = Rp / 16, n_max = A->n[R - 1];
    float *S = A->work;             /* [n_max x Rp] scores of (key, row), then exps */
    float *Qt = S + n_max * Rp;     /* [hd x Rp] the queries transposed (rows past R: 0) */
    float *tmp = Qt + hd * Rp;      /* [ATT_KB x hd] converted keys / values */
    float *inv = tmp + ATT_KB * hd; /* [Rp] 1 / sum of each row's exps */
    for (int64_t r = 0; r < Rp; r++) {
        const float *q = r < R ? A->q[r] : NULL;
        for (int64_t d = 0; d < hd; d++)
            Qt[d * Rp + r] = q ? q[d] : 0.0f;
    }

    /* scores: all rows x keys 0 .. n_max - 1 (a row's keys past n[r] are computed, then masked) */
    for (int64_t p0 = 0; p0 < n_max; p0 += ATT_KB) {
        const int64_t np = L3C_MIN(ATT_KB, n_max - p0);
        int64_t ldk;
        const float *k = kv_rows(A, A->k, p0, np, tmp, &ldk);
        qk_block(np, nv, hd, k, ldk, Qt, Rp, S + p0 * Rp);
    }

    /* softmax, 16 rows a vector: lane r sees keys p < n[r] */
    const __m512 vscale = _mm512_set1_ps(A->scale);
    for (int64_t j = 0; j < nv; j++) {
        int32_t nl[16];
        for (int l = 0; l < 16; l++)
            nl[l] = 16 * j + l < R ? A->n[16 * j + l] : 0;
        const __m512i vn = _mm512_loadu_si512(nl);
        __m512 m = _mm512_set1_ps(-INFINITY);
        for (int64_t p = 0; p < n_max; p++) {
            const __mmask16 live = _mm512_cmpgt_epi32_mask(vn, _mm512_set1_epi32((int32_t)p));
            m = _mm512_mask_max_ps(m, live, m, _mm512_loadu_ps(S + p * Rp + 16 * j));
        }
        const __m512 ms = _mm512_mul_ps(m, vscale);
        __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
        for (int64_t p = 0; p < n_max; p++) {
            const __mmask16 live = _mm512_cmpgt_epi32_mask(vn, _mm512_set1_epi32((int32_t)p));
            float *sp = S + p * Rp + 16 * j;
            const __m512 e = _mm512_maskz_mov_ps(
                live, v512_exp(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(sp), vscale), ms)));
            _mm512_storeu_ps(sp, e);
            s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
            s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(
                                       _mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
        }
        double sums[16];
        _mm512_storeu_pd(sums, s0);
        _mm512_storeu_pd(sums + 8, s1);
        for (int l = 0; l < 16; l++)
            inv[16 * j + l] = nl[l] ? (float)(1.0 / sums[l]) : 0.0f;
    }

    /* out = exps . V, rows in fours; rows r .. r + 3 share keys up to n[r], then go on alone */
    for (int64_t r = 0; r < R; r++)
        memset(A->out[r], 0, (size_t)hd * sizeof(float));
    for (int64_t p0 = 0; p0 < n_max; p0 += ATT_KB) {
        const int64_t np = L3C_MIN(ATT_KB, n_max - p0);
        int64_t ldv;
        const float *V = kv_rows(A, A->v, p0, np, tmp, &ldv);
        for (int64_t r = 0; r < R; r += 4) {
            const int nr = (int)L3C_MIN(4, R - r);
            int64_t pa = p0;
            for (int i = 0; i < nr; i++) {
                const int64_t pb = L3C_MIN(p0 + np, (int64_t)A->n[r + i]);
                if (pb > pa) pv_rows(nr - i, A->out + r + i, hd, S + r + i, Rp, V, ldv, p0, pa, pb);
                pa = L3C_MAX(pa, pb);
            }
        }
    }
    for (int64_t r = 0; r < R; r++) {
        float *o = A->out[r];
        for (int64_t d = 0; d < hd; d++)
            o[d] *= inv[r];
        if (A->probs)
            for (int64_t p = 0; p < A->n[r]; p++)
                A->probs[r][p] = S[p * Rp + r] * inv[r];
    }
}
#endif

#if !(defined(__x86_64__) && defined(__GNUC__))
static bool rms_ss_avx512(const float *xr, int64_t n, double *ss) { return false; }
static bool rmsnorm_add_avx512(const float *x, const float *g, float *y, int64_t T, int64_t n, float eps, float *ax,
                               const float *ay, int64_t an) {
    return false;
}
#endif

bool l3c_attn_rows_fast(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    return (cpu_caps() & (CAP_FMA | CAP_AVX512)) == (CAP_FMA | CAP_AVX512);
#else
    return false;
#endif
}

void l3c_attn_rows(const l3c_attn_rows_args *A) {
    L3C_ASSERT(A->R >= 1 && A->n[0] >= 1);
    for (int64_t r = 1; r < A->R; r++)
        L3C_ASSERT(A->n[r] >= A->n[r - 1]);
#if defined(__x86_64__) && defined(__GNUC__)
    if (l3c_attn_rows_fast()) {
        attn_rows_avx512(A);
        return;
    }
#endif
    l3c_attn_rows_ref(A);
}
