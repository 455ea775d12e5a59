/*
 * test_rag_pool.c -- concurrent searches on a RAG index (apps/rag/rag_store.c, included):
 *  - two searcher threads on a pool of connections (sharing one int8 matrix) while a writer on
 *    its own connection (as a separate `rag index` process would be) adds and removes a file 40
 *    times: every search succeeds and sees one committed state: the file's chunk is either the
 *    top hit with cosine 1 (vector), the BM25 hit of its word and the hybrid top, or absent from
 *    all three; every reported cosine equals the float64 dot product of the query with that
 *    chunk's vector; both states are seen and the shared matrix was reloaded;
 *  - a search in a read transaction that began before a commit (its snapshot older than the
 *    matrix another connection cached) answers from its own snapshot, not the cached matrix;
 *  - an index made before the generation counter gets the meta row and the triggers on open.
 * Runs under ASan in CI (make asan-ci); ThreadSanitizer: docs/RAG.md.
 */
#include "../../apps/rag/rag_chunk.c"
#include "../../apps/rag/rag_prompt.c"
#include "../../apps/rag/rag_store.c"
#include "../../apps/rag/rag_vec.c"

#include "check.h"

#include <math.h>
#include <pthread.h>

#define DIM     16
#define FILES   4
#define PER     8
#define TOGGLES 40

static char g_db[512];
static float g_vec[FILES * PER][DIM], g_x[DIM];
static const char *const WORDS[FILES] = {"apple", "river", "stone", "cloud"};

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static float frand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 - 0.5);
}
static void unit(float *v) {
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)v[i] * v[i];
    for (int i = 0; i < DIM; i++)
        v[i] = (float)(v[i] / sqrt(s));
}

/* text of PER one-line chunks "WORD k\n" */
static int put(rag_store *s, const char *path, const char *word, int n, const float *vecs) {
    char text[256], err[RAG_ERR_CAP];
    rag_chunk ch[PER];
    size_t o = 0;
    for (int c = 0; c < n; c++) {
        ch[c].byte_start = o;
        o += (size_t)snprintf(text + o, sizeof text - o, "%s %d\n", word, c);
        ch[c].byte_end = o;
        ch[c].line_start = ch[c].line_end = c + 1;
        ch[c].n_tokens = 2;
    }
    int rc =
        rag_store_put_file(s, path, word, (int64_t)o, 0, "0", text, ch, (size_t)n, vecs, DIM, err);
    CHECK_MSG(rc == 0, "%s", err);
    return rc;
}

static double dot_of(const char *text) { /* the query g_x against the chunk with this text */
    const float *v = NULL;
    if (!strncmp(text, "zebra", 5)) v = g_x;
    for (int f = 0; f < FILES && !v; f++) {
        size_t l = strlen(WORDS[f]);
        if (!strncmp(text, WORDS[f], l)) v = g_vec[f * PER + atoi(text + l + 1)];
    }
    if (!v) return NAN;
    double d = 0;
    for (int i = 0; i < DIM; i++)
        d += (double)g_x[i] * v[i];
    return d;
}

typedef struct reader {
    rag_pool *pool;
    int *stop;              /* atomic */
    int seen[3][2], bad, n; /* seen[mode][state] */
} reader;

/* One state, checked across the three modes of a search each: 1 (x there), 0 (not), -1 (bad). */
static int check_search(rag_store *s, rag_mode mode, int *bad) {
    char err[RAG_ERR_CAP];
    rag_hit *h = NULL;
    int n = 0, state = -1;
    if (rag_store_search(s, "zebra", mode == RAG_BM25 ? NULL : g_x, DIM, 3, mode, RAG_HYBRID_ALPHA,
                         &h, &n, err)) {
        fprintf(stderr, "search failed: %s\n", err);
        (*bad)++;
        return -1;
    }
    int x_top = n > 0 && !strcmp(h[0].text, "zebra 0\n");
    int x_any = 0;
    for (int i = 0; i < n; i++) {
        x_any |= !strcmp(h[i].text, "zebra 0\n");
        if (mode != RAG_BM25 && !(fabs(h[i].cosine - dot_of(h[i].text)) < 1e-5)) {
            fprintf(stderr, "hit %d '%s': cosine %f, expected %f\n", i, h[i].text, h[i].cosine,
                    dot_of(h[i].text));
            (*bad)++;
        }
        if (mode == RAG_VECTOR && i > 0 && h[i].score > h[i - 1].score) (*bad)++;
    }
    if (mode == RAG_BM25) /* only x holds the word */
        state = n == 1 && x_top ? 1 : n == 0 ? 0 : -1;
    else
        state = x_top && fabs(h[0].cosine - 1) < 1e-5 ? 1 : !x_any ? 0 : -1;
    if (state < 0) {
        fprintf(stderr, "mode %s: %d hits, x top %d, x among them %d\n", rag_mode_name(mode), n,
                x_top, x_any);
        (*bad)++;
    }
    rag_hits_free(h, n);
    return state;
}

static void *reader_run(void *arg) {
    reader *r = arg;
    char err[RAG_ERR_CAP];
    while (!__atomic_load_n(r->stop, __ATOMIC_ACQUIRE)) {
        rag_store *s = rag_pool_get(r->pool, err);
        if (!s) {
            fprintf(stderr, "pool: %s\n", err);
            r->bad++;
            break;
        }
        for (int m = 0; m < 3; m++) {
            int st = check_search(s, (rag_mode)m, &r->bad);
            if (st >= 0) r->seen[m][st]++;
        }
        __atomic_add_fetch(&r->n, 1, __ATOMIC_RELEASE);
        rag_pool_put(r->pool, s);
    }
    return NULL;
}

static void test_concurrent_with_writer(void) {
    char err[RAG_ERR_CAP];
    rag_store *first = NULL, *writer = NULL;
    CHECK_MSG(rag_store_open(g_db, 0, &first, err) == 0, "%s", err);
    CHECK_MSG(rag_store_open(g_db, 0, &writer, err) == 0, "%s", err);
    if (!first || !writer) return;
    rag_pool *pool = NULL;
    CHECK_MSG(rag_pool_new(first, 3, &pool, err) == 0, "%s", err);
    int stop = 0;
    reader rd[2] = {{.pool = pool, .stop = &stop}, {.pool = pool, .stop = &stop}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, reader_run, &rd[i]);
    char *keep[FILES], *roots[1] = {"/t"};
    char paths[FILES][32];
    for (int f = 0; f < FILES; f++)
        snprintf(paths[f], sizeof paths[f], "/t/%s.md", WORDS[f]), keep[f] = paths[f];
    for (int t = 0; t < TOGGLES; t++) {
        if (t % 2 == 0) {
            put(writer, "/t/x.md", "zebra", 1, g_x);
        } else {
            int removed = 0;
            CHECK(rag_store_remove_missing(writer, keep, FILES, roots, 1, &removed, err) == 0);
            CHECK(removed == 1);
        }
        usleep(2000);
    }
    /* at least one search after the last change (x is gone) */
    int n0 =
        __atomic_load_n(&rd[0].n, __ATOMIC_ACQUIRE) + __atomic_load_n(&rd[1].n, __ATOMIC_ACQUIRE);
    while (__atomic_load_n(&rd[0].n, __ATOMIC_ACQUIRE) +
               __atomic_load_n(&rd[1].n, __ATOMIC_ACQUIRE) <
           n0 + 4)
        usleep(1000);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    int bad = rd[0].bad + rd[1].bad, seen0 = 0, seen1 = 0;
    CHECK_MSG(bad == 0, "%d bad searches", bad);
    for (int m = 0; m < 3; m++) { /* every mode saw both states (a stale matrix: vector never x) */
        int s0 = rd[0].seen[m][0] + rd[1].seen[m][0], s1 = rd[0].seen[m][1] + rd[1].seen[m][1];
        CHECK_MSG(s0 > 0 && s1 > 0, "%s: states seen: without x %d, with x %d",
                  rag_mode_name((rag_mode)m), s0, s1);
        seen0 += s0, seen1 += s1;
    }
    int64_t loads = rag_store_matrix_loads(first);
    CHECK_MSG(loads >= 2, "the shared matrix was loaded %lld times", (long long)loads);
    printf("  %d + %d searches x 3 modes: without x %d, with x %d; %lld matrix loads\n", rd[0].n,
           rd[1].n, seen0, seen1, (long long)loads);
    rag_pool_free(pool);
    rag_store_close(writer);
}

static void test_old_snapshot(void) {
    char err[RAG_ERR_CAP];
    rag_store *a = NULL, *b = NULL, *w = NULL;
    CHECK(rag_store_open(g_db, 0, &a, err) == 0);
    CHECK(rag_store_open_more(a, &b, err) == 0);
    CHECK(rag_store_open(g_db, 0, &w, err) == 0);
    if (!a || !b || !w) return;
    int bad = 0;
    CHECK(check_search(b, RAG_VECTOR, &bad) == 0); /* matrix cached without x */
    CHECK(exec(a, "BEGIN", err) == 0);
    CHECK(check_search(a, RAG_VECTOR, &bad) == 0); /* a's snapshot: without x */
    put(w, "/t/x.md", "zebra", 1, g_x);
    CHECK(check_search(b, RAG_VECTOR, &bad) == 1); /* b: the new state, the cache reloaded */
    int64_t loads = rag_store_matrix_loads(a);
    CHECK(check_search(a, RAG_VECTOR, &bad) == 0); /* a: still its snapshot, a private matrix */
    CHECK(check_search(a, RAG_HYBRID, &bad) == 0);
    CHECK(rag_store_matrix_loads(a) > loads);
    CHECK(exec(a, "COMMIT", err) == 0);
    CHECK(check_search(a, RAG_VECTOR, &bad) == 1);
    CHECK(bad == 0);
    char *keep[FILES], *roots[1] = {"/t"}, paths[FILES][32];
    for (int f = 0; f < FILES; f++)
        snprintf(paths[f], sizeof paths[f], "/t/%s.md", WORDS[f]), keep[f] = paths[f];
    int removed = 0;
    CHECK(rag_store_remove_missing(w, keep, FILES, roots, 1, &removed, err) == 0 && removed == 1);
    rag_store_close(b);
    rag_store_close(a);
    rag_store_close(w);
}

/* A further connection of a pool must open the file the first one did, not an index that was
 * written over its path since (its generations would not be comparable). */
static void test_replaced_file(void) {
    char err[RAG_ERR_CAP], other[600];
    rag_store *a = NULL, *b = NULL;
    CHECK(rag_store_open(g_db, 0, &a, err) == 0);
    if (!a) return;
    snprintf(other, sizeof other, "%s.other", g_db);
    CHECK(rename(g_db, other) == 0);
    CHECK(rag_store_open_more(a, &b, err) != 0 && strstr(err, "was replaced or removed"));
    CHECK(rename(other, g_db) == 0); /* the same file back: accepted */
    CHECK_MSG(rag_store_open_more(a, &b, err) == 0, "%s", err);
    rag_store_close(b);
    rag_store_close(a);
}

static void test_generation_added_on_open(void) {
    char err[RAG_ERR_CAP];
    rag_store *s = NULL;
    CHECK(rag_store_open(g_db, 0, &s, err) == 0);
    if (!s) return;
    /* as an index made before the counter */
    CHECK(exec(s,
               "DROP TRIGGER chunks_gen_ins; DROP TRIGGER chunks_gen_del; DROP TRIGGER "
               "chunks_gen_upd; DELETE FROM meta WHERE key = 'generation';",
               err) == 0);
    int64_t g = -1;
    CHECK(read_generation(s, &g, err) != 0 && strstr(err, "no generation"));
    rag_store_close(s);
    CHECK(rag_store_open(g_db, 0, &s, err) == 0);
    if (!s) return;
    CHECK(read_generation(s, &g, err) == 0 && g == 0);
    put(s, "/t/x.md", "zebra", 1, g_x);
    CHECK(read_generation(s, &g, err) == 0 && g == 1); /* one chunk inserted */
    int bad = 0;
    CHECK(check_search(s, RAG_VECTOR, &bad) == 1 && bad == 0);
    rag_store_close(s);
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_db, sizeof g_db, "%s/test_rag_pool_%d.db", tmp, (int)getpid());
    for (int r = 0; r < FILES * PER; r++) {
        for (int i = 0; i < DIM; i++)
            g_vec[r][i] = frand();
        unit(g_vec[r]);
    }
    for (int i = 0; i < DIM; i++)
        g_x[i] = frand();
    unit(g_x);
    char err[RAG_ERR_CAP];
    rag_store *s = NULL;
    CHECK_MSG(rag_store_open(g_db, 1, &s, err) == 0, "%s", err);
    if (s) {
        rag_meta m = {0};
        snprintf(m.fingerprint, sizeof m.fingerprint, "test");
        m.n_embd = DIM, m.chunk_tokens = 32, m.overlap = 4;
        snprintf(m.pooling, sizeof m.pooling, "mean");
        CHECK(rag_store_set_meta(s, &m, err) == 0);
        for (int f = 0; f < FILES; f++) {
            char path[32];
            snprintf(path, sizeof path, "/t/%s.md", WORDS[f]);
            put(s, path, WORDS[f], PER, g_vec[f * PER]);
        }
        rag_store_close(s);
        test_concurrent_with_writer();
        test_old_snapshot();
        test_replaced_file();
        test_generation_added_on_open();
    }
    char side[600];
    unlink(g_db);
    snprintf(side, sizeof side, "%s-wal", g_db), unlink(side);
    snprintf(side, sizeof side, "%s-shm", g_db), unlink(side);
    printf("test_rag_pool: %d checks, %d failed\n", check_count, check_failures);
    return check_failures ? 1 : 0;
}
