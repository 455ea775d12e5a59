/*
 * rag_scale.c -- how the RAG index's vector search scales (docs/RAG.md "Scale"): builds an index
 * of N synthetic chunks (random unit vectors of n_embd 576, SmolLM2's width; short random texts),
 * then times loading the int8 matrix and queries, and measures recall of the int8 scan + exact
 * rerank against a float64 brute force over the same vectors.
 *
 * Build and run (not a CI test):
 *   make build/bench/rag_scale
 *   build/bench/rag_scale 10000 100000 1000000      # sizes; DB files go to $TMPDIR (removed)
 *
 * Prints per size: index build time, first-query time (matrix load), query time (median of 21
 * queries, ms), matrix bytes, recall@10 and recall@50 (fraction of the float64 top-k found in
 * the search's top-k), peak RSS, and an FNV hash of every hit id (equal across kernel paths:
 * L3C_KERNELS=ref|avx2 against the default).
 *
 *   build/bench/rag_scale --clients 100000     # concurrent searches (docs/RAG.md "Server")
 *
 * then also prints, per size, hybrid and bm25 searches per second (best of 3 rounds) with 1 client,
 * 2 clients on one connection behind a mutex (what `serve --rag-db` did before the pool) and 2
 * clients with a connection each (rag_store_open_more: the matrix is shared, searches run
 * concurrently).
 */
#include "../apps/rag/rag.h"
#include <pthread.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define DIM      576
#define PER_FILE 1000
#define QUERIES  21

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float nrand(void) {
    double u = urand() + 1e-300, v = urand();
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}
static void unit(float *v) {
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)v[i] * v[i];
    float inv = (float)(1 / sqrt(s));
    for (int i = 0; i < DIM; i++)
        v[i] *= inv;
}

static int cmp_desc(const void *a, const void *b) {
    const rag_scored *x = a, *y = b;
    return x->score > y->score ? -1 : x->score < y->score ? 1 : (x->id > y->id) - (x->id < y->id);
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define TP_QUERIES 40 /* per client; x50 in bm25 mode (~40 us a search) */

typedef struct client {
    rag_store *s;
    pthread_mutex_t *mu; /* NULL: own connection */
    const float *all;
    long n;
    unsigned seed;
    rag_mode mode;
    int failed;
    double *span; /* [2 * searches]: start, end of each search (for the overlap) */
} client;

static void *client_run(void *arg) {
    client *c = arg;
    char err[RAG_ERR_CAP], text[64];
    float q[DIM];
    const int nq = c->mode == RAG_BM25 ? 50 * TP_QUERIES : TP_QUERIES;
    for (int i = 0; i < nq; i++) {
        c->seed = c->seed * 1103515245u + 12345u;
        long r = (long)((c->seed >> 8) % (unsigned)c->n);
        memcpy(q, c->all + (size_t)r * DIM, sizeof q);
        snprintf(text, sizeof text, "x%05ld", r); /* its own chunk's word: the BM25 top 1 */
        rag_hit *h = NULL;
        int nh = 0;
        if (c->mu) pthread_mutex_lock(c->mu);
        c->span[2 * i] = now_s();
        int bad = rag_store_search(c->s, text, c->mode == RAG_BM25 ? NULL : q, DIM, 5, c->mode,
                                   RAG_HYBRID_ALPHA, &h, &nh, err);
        c->span[2 * i + 1] = now_s();
        if (c->mu) pthread_mutex_unlock(c->mu);
        if (bad || nh == 0 || h[0].chunk_id != r + 1) { /* the stored vector itself must win */
            if (bad) fprintf(stderr, "%s\n", err);
            c->failed = 1;
        }
        rag_hits_free(h, nh);
    }
    return NULL;
}

/* Searches per second of n_clients threads (each TP_QUERIES searches in this mode); *overlap:
 * with 2 clients, the share of the time client 0 spent searching during which client 1 was
 * searching too (0 when searches run one at a time). */
static double throughput(rag_store **stores, int n_clients, pthread_mutex_t *mu, const float *all,
                         long n, rag_mode mode, double *overlap) {
    const int nq = mode == RAG_BM25 ? 50 * TP_QUERIES : TP_QUERIES;
    client cs[2];
    pthread_t th[2];
    double t0 = now_s();
    for (int i = 0; i < n_clients; i++) {
        cs[i] = (client){stores[i], mu, all, n, 77u + (unsigned)i, mode, 0, NULL};
        if (!(cs[i].span = calloc(2 * (size_t)nq, sizeof(double)))) return -1;
    }
    for (int i = 0; i < n_clients; i++)
        pthread_create(&th[i], NULL, client_run, &cs[i]);
    int failed = 0;
    for (int i = 0; i < n_clients; i++)
        pthread_join(th[i], NULL), failed |= cs[i].failed;
    double dt = now_s() - t0, both = 0, busy = 0;
    if (n_clients == 2) /* both lists are in time order: a merge */
        for (int i = 0, j = 0; i < nq; i++) {
            double a0 = cs[0].span[2 * i], a1 = cs[0].span[2 * i + 1];
            busy += a1 - a0;
            while (j < nq && cs[1].span[2 * j + 1] <= a0)
                j++;
            for (int k = j; k < nq && cs[1].span[2 * k] < a1; k++) {
                double lo = cs[1].span[2 * k] > a0 ? cs[1].span[2 * k] : a0,
                       hi = cs[1].span[2 * k + 1] < a1 ? cs[1].span[2 * k + 1] : a1;
                both += hi > lo ? hi - lo : 0;
            }
        }
    if (overlap) *overlap = busy > 0 ? both / busy : 0;
    for (int i = 0; i < n_clients; i++)
        free(cs[i].span);
    return failed ? -1 : n_clients * nq / dt;
}

static int g_clients; /* --clients */

static int run(long n) {
    char db[512], err[RAG_ERR_CAP];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(db, sizeof db, "%s/rag_scale_%ld_%d.db", tmp, n, (int)getpid());
    rag_store *s = NULL;
    if (rag_store_open(db, 1, &s, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rag_meta m = {0};
    snprintf(m.fingerprint, sizeof m.fingerprint, "bench");
    m.n_embd = DIM, m.chunk_tokens = 128, m.overlap = 32;
    snprintf(m.pooling, sizeof m.pooling, "mean");
    rag_store_set_meta(s, &m, err);
    /* all vectors kept for the brute force (n x DIM floats) */
    float *all = malloc((size_t)n * DIM * sizeof *all);
    char *text = malloc((size_t)PER_FILE * 16 + 1);
    rag_chunk *ch = malloc(PER_FILE * sizeof *ch);
    if (!all || !text || !ch) return 1;
    double t0 = now_s();
    for (long f = 0; f * PER_FILE < n; f++) {
        long c0 = f * PER_FILE, nc = n - c0 < PER_FILE ? n - c0 : PER_FILE;
        size_t o = 0;
        for (long c = 0; c < nc; c++) {
            ch[c].byte_start = o;
            o += (size_t)sprintf(text + o, "w%06ld x%05ld\n", (long)(urand() * 1e6),
                                 c0 + c % 100000);
            ch[c].byte_end = o;
            ch[c].line_start = ch[c].line_end = (int32_t)c + 1;
            ch[c].n_tokens = 4;
            float *v = all + (size_t)(c0 + c) * DIM;
            for (int i = 0; i < DIM; i++)
                v[i] = nrand();
            unit(v);
        }
        char path[64], sha[65];
        snprintf(path, sizeof path, "/bench/file%06ld.txt", f);
        snprintf(sha, sizeof sha, "%064ld", f);
        if (rag_store_put_file(s, path, path, (int64_t)o, 0, sha, text, ch, (size_t)nc,
                               all + (size_t)c0 * DIM, DIM, err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        if (f % 100 == 99) fprintf(stderr, "\r  %ld / %ld chunks", c0 + nc, n);
    }
    double t_build = now_s() - t0;
    fprintf(stderr, "\r");
    /* queries: a stored vector plus noise (a near neighbour exists, as for a real question) */
    float q[DIM];
    double times[QUERIES], t_first = 0, recall10 = 0, recall50 = 0;
    uint64_t hits_hash = 1469598103934665603ull; /* FNV-1a of every query's hit ids, in order */
    rag_scored *exact = malloc((size_t)n * sizeof *exact);
    for (int qi = 0; qi < QUERIES; qi++) {
        const float *base = all + (size_t)(urand() * (double)n) * DIM;
        for (int i = 0; i < DIM; i++)
            q[i] = base[i] + 0.7f * nrand() / sqrtf(DIM);
        unit(q);
        rag_hit *h = NULL;
        int nh = 0;
        double a = now_s();
        if (rag_store_search(s, "", q, DIM, 50, RAG_VECTOR, 0, &h, &nh, err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        double dt = now_s() - a;
        if (qi == 0) t_first = dt;
        times[qi] = dt;
        for (long r = 0; r < n; r++) {
            double d = 0;
            const float *v = all + (size_t)r * DIM;
            for (int i = 0; i < DIM; i++)
                d += (double)q[i] * v[i];
            exact[r] = (rag_scored){r + 1, d}; /* chunk ids are 1..n in insertion order */
        }
        qsort(exact, (size_t)n, sizeof *exact, cmp_desc);
        for (int j = 0; j < nh; j++)
            for (int b = 0; b < 8; b++)
                hits_hash = (hits_hash ^ (uint8_t)(h[j].chunk_id >> (8 * b))) * 1099511628211ull;
        int hit10 = 0, hit50 = 0;
        for (int i = 0; i < 50 && i < n; i++)
            for (int j = 0; j < nh; j++)
                if (h[j].chunk_id == exact[i].id) {
                    hit50++;
                    if (i < 10 && j < 10) hit10++;
                }
        recall10 += hit10 / 10.0 / QUERIES, recall50 += hit50 / 50.0 / QUERIES;
        rag_hits_free(h, nh);
    }
    qsort(times + 1, QUERIES - 1, sizeof *times, cmp_dbl);
    if (g_clients) {
        rag_store *two[2] = {s, NULL};
        if (rag_store_open_more(s, &two[1], err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        rag_store *same[2] = {s, s};
        for (int mi = 0; mi < 2; mi++) {
            const rag_mode mode = mi ? RAG_BM25 : RAG_HYBRID;
            /* a warm-up, then 3 rounds of the three set-ups interleaved (busy machine: the best) */
            double one = throughput(two, 2, NULL, all, n, mode, NULL), locked = 0, pooled = 0;
            double ov_locked = 0, ov_pooled = 0, ob, oc;
            for (int round = 0; round < 3 && one >= 0; round++) {
                double a = throughput(two, 1, NULL, all, n, mode, NULL),
                       b = throughput(same, 2, &mu, all, n, mode, &ob),
                       c = throughput(two, 2, NULL, all, n, mode, &oc);
                ov_locked = ob > ov_locked ? ob : ov_locked;
                ov_pooled = oc > ov_pooled ? oc : ov_pooled;
                if (a < 0 || b < 0 || c < 0) {
                    one = -1;
                    break;
                }
                one = round == 0 || a > one ? a : one;
                locked = b > locked ? b : locked;
                pooled = c > pooled ? c : pooled;
            }
            if (one < 0) {
                fprintf(stderr, "a concurrent search failed or missed its own chunk\n");
                return 1;
            }
            fprintf(stderr,
                    "%ld chunks, %s searches/s: 1 client %.1f | 2 clients, one connection + mutex "
                    "%.1f (x%.2f, overlap %.0f%%) | 2 clients, a connection each %.1f (x%.2f, "
                    "overlap %.0f%%); matrix loads %lld\n",
                    n, rag_mode_name(mode), one, locked, locked / one, 100 * ov_locked, pooled,
                    pooled / one, 100 * ov_pooled, (long long)rag_store_matrix_loads(s));
        }
        rag_store_close(two[1]);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("| %ld | %.1f s | %.0f ms | %.1f ms | %.1f MB | %.3f | %.3f | %ld MB | %016llx |\n", n,
           t_build, t_first * 1e3, times[QUERIES / 2] * 1e3, (double)n * (DIM + 12) / 1e6, recall10,
           recall50, ru.ru_maxrss / 1024, (unsigned long long)hits_hash);
    fflush(stdout);
    rag_store_close(s);
    free(all), free(text), free(ch), free(exact);
    char side[600];
    unlink(db);
    snprintf(side, sizeof side, "%s-wal", db), unlink(side);
    snprintf(side, sizeof side, "%s-shm", db), unlink(side);
    return 0;
}

int main(int argc, char **argv) {
    printf(
        "| chunks | build | first query (loads the int8 matrix) | query, median | matrix | "
        "recall@10 | recall@50 | peak RSS | hits (FNV) |\n|---|---|---|---|---|---|---|---|---|\n");
    int sizes = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--clients")) {
            g_clients = 1;
            continue;
        }
        sizes++;
        if (run(atol(argv[i]))) return 1;
    }
    if (!sizes) return run(10000);
    return 0;
}
