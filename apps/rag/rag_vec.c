/*
 * rag_vec.c -- the in-memory vector matrix of a RAG index and its scan (see rag.h, rag_vecs_*).
 *
 * The index stores every chunk's vector as n_embd float32 in SQLite (exact; what `llama3c embed`
 * gives). Reading them all through SQLite for every query costs seconds at a million chunks, so
 * a search works on a copy loaded once into one contiguous matrix, quantized to int8 per vector
 * (absmax scale: v ~ scale * q, |q| <= 127; 1 byte per dimension, a quarter of float32):
 *   1. the int8 scan: dot(q8(query), q8(v)) * scales over all rows, split over threads, each
 *      keeping its best `keep` rows; AVX512-VNNI (vpdpbusd), AVX2 (vpmaddwd) or scalar, chosen
 *      at run time (L3C_KERNELS=ref|avx2 caps it), all giving the same exact int32 sums;
 *   2. the exact rerank: the float32 vectors of those `keep` rows are read from SQLite by id and
 *      their exact cosines decide the order. With keep = 4 x the candidates wanted (>= 200), the
 *      int8 error (~1e-3 of a cosine) cannot push a true top candidate out unless thousands of
 *      rows sit within that distance of it; test_rag_scale.py measures recall@50 == 1 against
 *      a float64 brute force, and the cosines reported are the exact float32 ones.
 * The matrix is rebuilt when the index generation changed since it was loaded (rag_store.c:
 * a meta row bumped by triggers on every change to the chunks); the connections of one index
 * share it, refcounted.
 */
#include "rag.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Rows are stored as uint8 (q + 128) so that AVX512-VNNI's vpdpbusd (u8 x s8 -> s32, 64 pairs a
 * cycle) applies: dot(q_row, q_query) = dot(u_row, q_query) - 128 * sum(q_query). The same
 * integer result on every path (exact int32 sums), so the ranking does not depend on the CPU.
 */
static int32_t dot_u8s8_ref(const uint8_t *u, const int8_t *q, int32_t n) {
    int32_t s = 0;
    for (int32_t i = 0; i < n; i++)
        s += (int32_t)u[i] * (int32_t)q[i];
    return s;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static int32_t
dot_u8s8_vnni(const uint8_t *u, const int8_t *q, int32_t n) {
    __m512i acc = _mm512_setzero_si512();
    int32_t i = 0;
    for (; i + 64 <= n; i += 64)
        acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512((const void *)(u + i)),
                                  _mm512_loadu_si512((const void *)(q + i)));
    if (i < n) { /* the tail under a mask: no read past the row */
        __mmask64 m = (__mmask64)(~0ULL >> (64 - (n - i)));
        acc = _mm512_dpbusd_epi32(acc, _mm512_maskz_loadu_epi8(m, u + i),
                                  _mm512_maskz_loadu_epi8(m, q + i));
    }
    return _mm512_reduce_add_epi32(acc);
}

__attribute__((target("avx2"))) static int32_t dot_u8s8_avx2(const uint8_t *u, const int8_t *q,
                                                             int32_t n) {
    __m256i acc = _mm256_setzero_si256();
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(u + i)));
        __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + i)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s) + dot_u8s8_ref(u + i, q + i, n - i);
}
#endif

typedef int32_t (*dot_fn)(const uint8_t *, const int8_t *, int32_t);

static dot_fn pick_dot_once(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    const char *cap = getenv("L3C_KERNELS"); /* ref / avx2 cap the path, as for the engine */
    __builtin_cpu_init();
    if ((!cap || !strcmp(cap, "avx512") || !strcmp(cap, "amx")) &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
        return dot_u8s8_vnni;
    if ((!cap || strcmp(cap, "ref")) && __builtin_cpu_supports("avx2")) return dot_u8s8_avx2;
#endif
    return dot_u8s8_ref;
}

/* the path, chosen on the first scan (cpuid and L3C_KERNELS do not change while running) */
static pthread_once_t g_dot_once = PTHREAD_ONCE_INIT;
static dot_fn g_dot;
static void dot_init(void) {
    g_dot = pick_dot_once();
}
static dot_fn pick_dot(void) {
    pthread_once(&g_dot_once, dot_init);
    return g_dot;
}

float rag_quantize_i8(const float *v, int32_t n, int8_t *q) {
    float amax = 0;
    for (int32_t i = 0; i < n; i++)
        amax = fabsf(v[i]) > amax ? fabsf(v[i]) : amax;
    const float scale = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0;
    for (int32_t i = 0; i < n; i++)
        q[i] = (int8_t)lrintf(v[i] * inv);
    return scale;
}

void rag_vecs_free(rag_vecs *m) {
    free(m->ids), free(m->q), free(m->scale);
    memset(m, 0, sizeof *m);
}

int rag_vecs_reserve(rag_vecs *m, int64_t n, int32_t dim) {
    if (n <= m->cap && dim == m->dim) return 0;
    if (dim != m->dim) m->n = 0;
    int64_t c = n > 2 * m->cap ? n : 2 * m->cap;
    if (c < 1024) c = 1024;
    int64_t *ids = realloc(m->ids, (size_t)c * sizeof *ids);
    if (ids) m->ids = ids;
    uint8_t *q = realloc(m->q, (size_t)c * (size_t)dim);
    if (q) m->q = q;
    float *sc = realloc(m->scale, (size_t)c * sizeof *sc);
    if (sc) m->scale = sc;
    if (!ids || !q || !sc) return -1;
    m->cap = c, m->dim = dim;
    return 0;
}

int rag_vecs_append(rag_vecs *m, int64_t id, const float *v, int32_t dim) {
    if (rag_vecs_reserve(m, m->n + 1, dim)) return -1;
    m->ids[m->n] = id;
    int8_t tmp[4096], *t = dim <= 4096 ? tmp : malloc((size_t)dim);
    if (!t) return -1;
    m->scale[m->n] = rag_quantize_i8(v, dim, t);
    uint8_t *row = m->q + (size_t)m->n * (size_t)dim;
    for (int32_t i = 0; i < dim; i++)
        row[i] = (uint8_t)(t[i] + 128);
    if (t != tmp) free(t);
    m->n++;
    return 0;
}

/* ---------------------------------------------------------------- scan */

typedef struct scan_job {
    const rag_vecs *m;
    const int8_t *qq;
    int32_t qsum; /* sum of qq: dot(q_row, qq) = dot(u_row, qq) - 128 * qsum */
    float qs;
    dot_fn dot;
    int64_t from, to;
    int keep;
    rag_scored *top; /* [keep], sorted by score descending, ties by id ascending */
    int n;
} scan_job;

static int better(double s, int64_t id, const rag_scored *t) {
    return s > t->score || (s == t->score && id < t->id);
}

static void top_insert(rag_scored *top, int *n, int keep, int64_t id, double s) {
    if (*n == keep && !better(s, id, &top[keep - 1])) return;
    int i = *n < keep ? (*n)++ : keep - 1;
    while (i > 0 && better(s, id, &top[i - 1])) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = (rag_scored){id, s};
}

static void *scan_part(void *arg) {
    scan_job *j = arg;
    const rag_vecs *m = j->m;
    const size_t d = (size_t)m->dim;
    for (int64_t r = j->from; r < j->to; r++) {
        int32_t id = j->dot(m->q + (size_t)r * d, j->qq, m->dim) - 128 * j->qsum;
        double s = (double)id * j->qs * m->scale[r];
        top_insert(j->top, &j->n, j->keep, m->ids[r], s);
    }
    return NULL;
}

int rag_vecs_scan(const rag_vecs *m, const float *query, int keep, int n_threads, rag_scored *out,
                  int *n_out) {
    *n_out = 0;
    if (keep <= 0 || m->n == 0) return 0;
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 16) n_threads = 16;
    if ((int64_t)n_threads * 4096 > m->n) n_threads = (int)(m->n / 4096) + 1; /* small: one */
    int8_t *qq = malloc((size_t)m->dim);
    scan_job jobs[16];
    rag_scored *tops = malloc((size_t)n_threads * (size_t)keep * sizeof *tops);
    if (!qq || !tops) {
        free(qq), free(tops);
        return -1;
    }
    const float qs = rag_quantize_i8(query, m->dim, qq);
    int32_t qsum = 0;
    for (int32_t i = 0; i < m->dim; i++)
        qsum += qq[i];
    const dot_fn dot = pick_dot();
    pthread_t th[16];
    int started[16] = {0};
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (scan_job){.m = m,
                             .qq = qq,
                             .qsum = qsum,
                             .qs = qs,
                             .dot = dot,
                             .from = m->n * t / n_threads,
                             .to = m->n * (t + 1) / n_threads,
                             .keep = keep,
                             .top = tops + (size_t)t * (size_t)keep,
                             .n = 0};
        if (t > 0) started[t] = pthread_create(&th[t], NULL, scan_part, &jobs[t]) == 0;
        if (t > 0 && !started[t]) scan_part(&jobs[t]); /* no thread: do it here */
    }
    scan_part(&jobs[0]);
    for (int t = 1; t < n_threads; t++)
        if (started[t]) pthread_join(th[t], NULL);
    /* merge: the same order whatever the split (score, then id) */
    int n = 0;
    for (int t = 0; t < n_threads; t++)
        for (int i = 0; i < jobs[t].n; i++)
            top_insert(out, &n, keep, jobs[t].top[i].id, jobs[t].top[i].score);
    *n_out = n;
    free(qq), free(tops);
    return 0;
}

int rag_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 16 ? 16 : (int)n;
}
