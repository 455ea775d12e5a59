/*
 * rag_vec.c -- the in-memory vector matrix of a RAG index and its scan (see rag.h, rag_vecs_*).
 *
 * The index stores every chunk's vector as n_embd float32 in SQLite (exact; what `llama3c embed`
 * gives). Reading them all through SQLite for every query costs seconds at a million chunks, so
 * a search works on a copy loaded once into one contiguous matrix, quantized to int8 per vector
 * (absmax scale: v ~ scale * q, |q| <= 127; 1 byte per dimension, a quarter of float32):
 *   1. the int8 scan: dot(q8(query), q8(v)) * scales over all rows, split over threads, each
 *      keeping its best `keep` rows; vectorized by the compiler for the CPU it runs on
 *      (target_clones: AVX-512BW, AVX2, baseline);
 *   2. the exact rerank: the float32 vectors of those `keep` rows are read from SQLite by id and
 *      their exact cosines decide the order. With keep = 4 x the candidates wanted (>= 200), the
 *      int8 error (~1e-3 of a cosine) cannot push a true top candidate out unless thousands of
 *      rows sit within that distance of it; test_rag_scale.py measures recall@50 == 1 against
 *      a float64 brute force, and the cosines reported are the exact float32 ones.
 * The matrix is rebuilt when the database changed since it was loaded (SQLite's data_version
 * counts other connections' commits; this connection's own writes call rag_vecs_invalidate).
 */
#include "rag.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* int8 dot product of n elements: the compiler vectorizes it for each target (O3 for this loop
 * only: -O2 does not vectorize widening reductions on GCC 12). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RAG_DOT_TARGETS                                                                            \
    __attribute__((target_clones("arch=skylake-avx512", "avx2", "default"), optimize("O3")))
#else
#define RAG_DOT_TARGETS
#endif
RAG_DOT_TARGETS static int32_t dot_i8(const int8_t *a, const int8_t *b, int32_t n) {
    int32_t s = 0;
    for (int32_t i = 0; i < n; i++)
        s += (int32_t)a[i] * (int32_t)b[i];
    return s;
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
    int8_t *q = realloc(m->q, (size_t)c * (size_t)dim);
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
    m->scale[m->n] = rag_quantize_i8(v, dim, m->q + (size_t)m->n * (size_t)dim);
    m->n++;
    return 0;
}

/* ---------------------------------------------------------------- scan */

typedef struct scan_job {
    const rag_vecs *m;
    const int8_t *qq;
    float qs;
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
        double s = (double)dot_i8(j->qq, m->q + (size_t)r * d, m->dim) * j->qs * m->scale[r];
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
    pthread_t th[16];
    int started[16] = {0};
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (scan_job){m,
                             qq,
                             qs,
                             m->n * t / n_threads,
                             m->n * (t + 1) / n_threads,
                             keep,
                             tops + (size_t)t * (size_t)keep,
                             0};
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
