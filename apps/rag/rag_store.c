/*
 * rag_store.c -- the RAG index: one SQLite database (WAL journal, synchronous FULL).
 *
 * Schema (RAG_SCHEMA_VERSION 1):
 *   meta(key PRIMARY KEY, value)         schema_version, model_fingerprint, model_name, n_embd,
 *                                        pooling, chunk_tokens, overlap
 *   files(id, path UNIQUE, size, mtime_ns, sha256, n_chunks)
 *                                        a row exists only for a file whose chunks are all stored
 *   chunks(id, file_id, seq, byte_start, byte_end, line_start, line_end, n_tokens, text, embedding)
 *                                        embedding: n_embd float32 (host order, little-endian on
 *                                        every supported target), unit L2 norm
 *   chunks_fts USING fts5(title, text; porter + unicode61)   rowid == chunks.id
 *
 * Invariant: a file's rows (files, chunks, chunks_fts) change only inside one transaction, so
 * after a crash or kill -9 at any point the index holds, for every file, either all its chunks
 * of one version or none (SQLite's atomic commit; the WAL is rolled back or replayed on the next
 * open). Re-running `rag index` then resumes: files already complete are skipped by sha256.
 *
 * Search: BM25 from FTS5 (the query's words OR-ed); cosine by a scan of every vector held in
 * memory as int8 (rag_vec.c: loaded once, reloaded when the database changes) whose best rows are
 * then reranked by their exact float32 cosines read from SQLite; hybrid by relative score fusion
 * of the two top-RAG_CANDIDATES lists (RAG_HYBRID_ALPHA in rag.h).
 */
#include "rag.h"

#include <sqlite3.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The vectors of one index generation as an int8 matrix (rag_vec.c); refcounted: a search holds
 * a reference while it scans, so a reload never frees a matrix in use. */
typedef struct rag_mat {
    rag_vecs v;
    int64_t gen; /* meta 'generation' it was loaded at */
    int refs;    /* under rag_share.mu */
} rag_mat;

/* What the connections of one index share (rag_store_open_more, rag_pool): the current matrix,
 * replaced when a search sees a newer generation. */
typedef struct rag_share {
    pthread_mutex_t mu;      /* cur, every rag_mat.refs, refs */
    pthread_mutex_t load_mu; /* one load at a time: concurrent searches wait for it, not redo it */
    rag_mat *cur;            /* the cached matrix (holds one reference), NULL before the first */
    int refs;                /* stores using this share */
    int64_t loads;           /* matrices loaded (rag_store_matrix_loads) */
    dev_t dev;               /* the file the first connection opened: a further connection must */
    ino_t ino;               /* open the same one, not an index written over it since */
} rag_share;

struct rag_store {
    sqlite3 *db;
    char *path;
    rag_share *share;
};

static int failf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, RAG_ERR_CAP, fmt, ap);
    va_end(ap);
    return -1;
}

static int dbfail(rag_store *s, char *err, const char *what) {
    return failf(err, "index '%s': %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static int exec(rag_store *s, const char *sql, char *err) {
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        failf(err, "index '%s': %s (in: %.60s)", s->path, msg ? msg : sqlite3_errmsg(s->db), sql);
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int prep(rag_store *s, const char *sql, sqlite3_stmt **st, char *err) {
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
        *st = NULL;
        return dbfail(s, err, "preparing a statement");
    }
    return 0;
}

const char *rag_mode_name(rag_mode m) {
    return m == RAG_VECTOR ? "vector" : m == RAG_BM25 ? "bm25" : "hybrid";
}

int rag_mode_parse(const char *s, rag_mode *out) {
    if (!strcmp(s, "hybrid"))
        *out = RAG_HYBRID;
    else if (!strcmp(s, "vector"))
        *out = RAG_VECTOR;
    else if (!strcmp(s, "bm25"))
        *out = RAG_BM25;
    else
        return -1;
    return 0;
}

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS files(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,"
    " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, n_chunks INTEGER NOT "
    "NULL);"
    "CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES "
    "files(id),"
    " seq INTEGER NOT NULL, byte_start INTEGER NOT NULL, byte_end INTEGER NOT NULL,"
    " line_start INTEGER NOT NULL, line_end INTEGER NOT NULL, n_tokens INTEGER NOT NULL,"
    " text TEXT NOT NULL, embedding BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file_id, seq);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(title, text, tokenize='porter "
    "unicode61');";

static int store_open(const char *path, int create, rag_share *share, rag_store **out, char *err);

int rag_store_open(const char *path, int create, rag_store **out, char *err) {
    return store_open(path, create, NULL, out, err);
}

int rag_store_open_more(rag_store *first, rag_store **out, char *err) {
    return store_open(first->path, 0, first->share, out, err);
}

static rag_share *share_new(void) {
    rag_share *sh = calloc(1, sizeof *sh);
    if (!sh) return NULL;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_mutex_init(&sh->load_mu, NULL);
    sh->refs = 1;
    return sh;
}

static void mat_release(rag_share *sh, rag_mat *m) {
    if (!m) return;
    pthread_mutex_lock(&sh->mu);
    int last = --m->refs == 0;
    pthread_mutex_unlock(&sh->mu);
    if (last) {
        rag_vecs_free(&m->v);
        free(m);
    }
}

static void share_release(rag_share *sh) {
    if (!sh) return;
    pthread_mutex_lock(&sh->mu);
    int last = --sh->refs == 0;
    pthread_mutex_unlock(&sh->mu);
    if (!last) return;
    mat_release(sh, sh->cur);
    pthread_mutex_destroy(&sh->mu);
    pthread_mutex_destroy(&sh->load_mu);
    free(sh);
}

/* The index generation: meta 'generation', bumped by triggers on every change to the chunks
 * (any writer, this program or not), so connections can tell whether a shared matrix is current.
 * Indexes made before it get the row and the triggers on their first open. */
static const char GENERATION_SQL[] =
    "INSERT OR IGNORE INTO meta VALUES('generation', '0');"
    "CREATE TRIGGER IF NOT EXISTS chunks_gen_ins AFTER INSERT ON chunks BEGIN"
    " UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;"
    "CREATE TRIGGER IF NOT EXISTS chunks_gen_del AFTER DELETE ON chunks BEGIN"
    " UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;"
    "CREATE TRIGGER IF NOT EXISTS chunks_gen_upd AFTER UPDATE OF id, embedding ON chunks BEGIN"
    " UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'; END;";

static int store_open(const char *path, int create, rag_share *share, rag_store **out, char *err) {
    *out = NULL;
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (share && (!exists || st.st_dev != share->dev || st.st_ino != share->ino))
        return failf(err,
                     "index '%s' was replaced or removed since it was opened (another file is at "
                     "that path now); restart to use the new one",
                     path);
    if (!exists && !create)
        return failf(err,
                     "index '%s' does not exist (build it with `llama3c rag index --db %s DIR`)",
                     path, path);
    if (exists && !S_ISREG(st.st_mode)) return failf(err, "index '%s' is not a regular file", path);
    rag_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path)) || !(s->share = share ? share : share_new())) {
        if (s) free(s->path);
        free(s);
        return failf(err, "out of memory");
    }
    if (share) { /* one more connection to an index opened and checked before */
        pthread_mutex_lock(&share->mu);
        share->refs++;
        pthread_mutex_unlock(&share->mu);
    }
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        failf(err, "cannot open index '%s': %s", path,
              s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 10000);
    sqlite3_extended_result_codes(s->db, 1);
    /* the first read tells a SQLite file from anything else ("file is not a database") */
    sqlite3_stmt *q = NULL;
    int n_tables = -1, has_meta = 0;
    if (sqlite3_prepare_v2(
            s->db, "SELECT count(*), sum(name='meta') FROM sqlite_master WHERE type='table'", -1,
            &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        n_tables = sqlite3_column_int(q, 0);
        has_meta = sqlite3_column_int(q, 1);
    }
    sqlite3_finalize(q);
    if (n_tables < 0) {
        failf(err, "'%s' is not a usable llama3c RAG index: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    if (n_tables > 0 && !has_meta) {
        failf(err, "'%s' is a SQLite database but not a llama3c RAG index (no meta table)", path);
        goto fail;
    }
    /* a damaged page fails here with a clear message, not mid-query (once per index: the pool's
     * further connections skip it) */
    if (exists && n_tables > 0 && !share) {
        char result[128] = "";
        sqlite3_stmt *ic = NULL;
        if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &ic, NULL) == SQLITE_OK &&
            sqlite3_step(ic) == SQLITE_ROW)
            snprintf(result, sizeof result, "%s", (const char *)sqlite3_column_text(ic, 0));
        else
            snprintf(result, sizeof result, "%s", sqlite3_errmsg(s->db));
        sqlite3_finalize(ic);
        if (strcmp(result, "ok")) {
            failf(err,
                  "index '%s' is corrupted (PRAGMA quick_check: %s); delete it and run `rag index` "
                  "again",
                  path, result);
            goto fail;
        }
    }
    if (exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", err)) goto fail;
    if (n_tables == 0) {
        if (!create) {
            failf(err, "index '%s' is empty (build it with `llama3c rag index`)", path);
            goto fail;
        }
        if (exec(s, "BEGIN IMMEDIATE;", err)) goto fail;
        char sql[256];
        snprintf(sql, sizeof sql, "INSERT OR IGNORE INTO meta VALUES('schema_version','%d');",
                 RAG_SCHEMA_VERSION);
        if (exec(s, SCHEMA, err) || exec(s, sql, err) || exec(s, GENERATION_SQL, err) ||
            exec(s, "COMMIT;", err)) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
    } else if (!share) { /* an index from before the generation counter: add it */
        q = NULL;
        int have = 0;
        if (prep(s,
                 "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN "
                 "('chunks_gen_ins', 'chunks_gen_del', 'chunks_gen_upd')",
                 &q, err))
            goto fail;
        if (sqlite3_step(q) == SQLITE_ROW) have = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
        if (have != 3 && (exec(s, "BEGIN IMMEDIATE;", err) || exec(s, GENERATION_SQL, err) ||
                          exec(s, "COMMIT;", err))) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
    }
    /* schema version */
    q = NULL;
    int ver = -1;
    if (prep(s, "SELECT value FROM meta WHERE key='schema_version'", &q, err)) goto fail;
    if (sqlite3_step(q) == SQLITE_ROW) ver = atoi((const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    if (ver != RAG_SCHEMA_VERSION) {
        failf(err,
              "index '%s' has schema version %d; this llama3c reads version %d (rebuild the index)",
              path, ver, RAG_SCHEMA_VERSION);
        goto fail;
    }
    if (!share && stat(path, &st) == 0) /* the file now exists (a new index was created) */
        s->share->dev = st.st_dev, s->share->ino = st.st_ino;
    *out = s;
    return 0;
fail:
    rag_store_close(s);
    return -1;
}

void rag_store_close(rag_store *s) {
    if (!s) return;
    sqlite3_close(s->db);
    share_release(s->share);
    free(s->path);
    free(s);
}

/* ---------------------------------------------------------------- meta */

static const char *const META_KEYS[] = {"model_fingerprint", "model_name", "n_embd",
                                        "chunk_tokens",      "overlap",    "pooling"};

int rag_store_get_meta(rag_store *s, rag_meta *m, int *found, char *err) {
    memset(m, 0, sizeof *m);
    *found = 0;
    sqlite3_stmt *q;
    if (prep(s, "SELECT key, value FROM meta", &q, err)) return -1;
    int have = 0, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0),
                   *v = (const char *)sqlite3_column_text(q, 1);
        if (!k || !v) continue;
        if (!strcmp(k, META_KEYS[0]))
            snprintf(m->fingerprint, sizeof m->fingerprint, "%s", v), have |= 1;
        else if (!strcmp(k, META_KEYS[1]))
            snprintf(m->model_name, sizeof m->model_name, "%s", v), have |= 2;
        else if (!strcmp(k, META_KEYS[2]))
            m->n_embd = atoi(v), have |= 4;
        else if (!strcmp(k, META_KEYS[3]))
            m->chunk_tokens = atoi(v), have |= 8;
        else if (!strcmp(k, META_KEYS[4]))
            m->overlap = atoi(v), have |= 16;
        else if (!strcmp(k, META_KEYS[5]))
            snprintf(m->pooling, sizeof m->pooling, "%s", v), have |= 32;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return dbfail(s, err, "reading the meta table");
    if (have == 0) return 0;
    if (have != 63 || m->n_embd <= 0 || m->chunk_tokens <= 0)
        return failf(err, "index '%s': the meta table is incomplete or invalid (rebuild the index)",
                     s->path);
    *found = 1;
    return 0;
}

int rag_store_set_meta(rag_store *s, const rag_meta *m, char *err) {
    char a[16], b[16], c[16];
    snprintf(a, sizeof a, "%d", (int)m->n_embd);
    snprintf(b, sizeof b, "%d", (int)m->chunk_tokens);
    snprintf(c, sizeof c, "%d", (int)m->overlap);
    const char *vals[] = {m->fingerprint, m->model_name, a, b, c, m->pooling};
    sqlite3_stmt *q;
    if (exec(s, "BEGIN IMMEDIATE", err)) return -1;
    if (prep(s, "INSERT OR REPLACE INTO meta VALUES(?1, ?2)", &q, err)) goto fail;
    for (int i = 0; i < 6; i++) {
        sqlite3_bind_text(q, 1, META_KEYS[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, vals[i], -1, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_DONE) {
            dbfail(s, err, "writing the meta table");
            sqlite3_finalize(q);
            goto fail;
        }
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    return exec(s, "COMMIT", err);
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int rag_meta_check_model(const rag_meta *have, const char *fingerprint, int32_t n_embd,
                         const char *model_name, const char *db_path, char *err) {
    if (strcmp(have->fingerprint, fingerprint) || have->n_embd != n_embd)
        return failf(
            err,
            "index '%s' was built with a different model ('%s', n_embd %d, fingerprint %.12s) than "
            "this one ('%s', n_embd %d, fingerprint %.12s): its vectors are not comparable; use "
            "the "
            "same model or rebuild the index into a new --db",
            db_path, have->model_name, (int)have->n_embd, have->fingerprint, model_name,
            (int)n_embd, fingerprint);
    return 0;
}

/* ---------------------------------------------------------------- files */

int rag_store_file_state(rag_store *s, const char *path, int64_t *size, int64_t *mtime_ns,
                         char sha[65], int *found, char *err) {
    sqlite3_stmt *q;
    *found = 0;
    if (prep(s, "SELECT size, mtime_ns, sha256 FROM files WHERE path = ?1", &q, err)) return -1;
    sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *found = 1;
        *size = sqlite3_column_int64(q, 0);
        *mtime_ns = sqlite3_column_int64(q, 1);
        snprintf(sha, 65, "%s", (const char *)sqlite3_column_text(q, 2));
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return dbfail(s, err, "reading the files table");
    return 0;
}

int rag_store_touch_file(rag_store *s, const char *path, int64_t size, int64_t mtime_ns,
                         char *err) {
    sqlite3_stmt *q;
    if (prep(s, "UPDATE files SET size = ?2, mtime_ns = ?3 WHERE path = ?1", &q, err)) return -1;
    sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, size);
    sqlite3_bind_int64(q, 3, mtime_ns);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? 0 : dbfail(s, err, "updating the files table");
}

/* Deletes a file's rows (inside the caller's transaction). */
static int delete_file(rag_store *s, int64_t file_id, char *err) {
    static const char *const sql[] = {
        "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE file_id = ?1)",
        "DELETE FROM chunks WHERE file_id = ?1", "DELETE FROM files WHERE id = ?1"};
    for (int i = 0; i < 3; i++) {
        sqlite3_stmt *q;
        if (prep(s, sql[i], &q, err)) return -1;
        sqlite3_bind_int64(q, 1, file_id);
        int rc = sqlite3_step(q);
        sqlite3_finalize(q);
        if (rc != SQLITE_DONE) return dbfail(s, err, "deleting a file's chunks");
    }
    return 0;
}

static int64_t file_id_of(rag_store *s, const char *path) {
    sqlite3_stmt *q;
    int64_t id = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT id FROM files WHERE path = ?1", -1, &q, NULL) !=
        SQLITE_OK)
        return -1;
    sqlite3_bind_text(q, 1, path, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        id = sqlite3_column_int64(q, 0);
    else if (rc != SQLITE_DONE)
        id = -1;
    sqlite3_finalize(q);
    return id;
}

int rag_store_put_file(rag_store *s, const char *path, const char *title, int64_t size,
                       int64_t mtime_ns, const char *sha, const char *text, const rag_chunk *chunks,
                       size_t n_chunks, const float *vecs, int32_t n_embd, char *err) {
    sqlite3_stmt *qf = NULL, *qc = NULL, *qt = NULL;
    if (exec(s, "BEGIN IMMEDIATE", err)) return -1;
    int64_t old = file_id_of(s, path);
    if (old < 0) {
        dbfail(s, err, "reading the files table");
        goto fail;
    }
    if (old > 0 && delete_file(s, old, err)) goto fail;
    if (prep(s,
             "INSERT INTO files(path, size, mtime_ns, sha256, n_chunks) VALUES(?1, ?2, ?3, ?4, ?5)",
             &qf, err) ||
        prep(s,
             "INSERT INTO chunks(file_id, seq, byte_start, byte_end, line_start, line_end, "
             "n_tokens, text,"
             " embedding) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
             &qc, err) ||
        prep(s, "INSERT INTO chunks_fts(rowid, title, text) VALUES(?1, ?2, ?3)", &qt, err))
        goto fail;
    sqlite3_bind_text(qf, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(qf, 2, size);
    sqlite3_bind_int64(qf, 3, mtime_ns);
    sqlite3_bind_text(qf, 4, sha, -1, SQLITE_STATIC);
    sqlite3_bind_int64(qf, 5, (sqlite3_int64)n_chunks);
    if (sqlite3_step(qf) != SQLITE_DONE) {
        dbfail(s, err, "inserting into files");
        goto fail;
    }
    int64_t fid = sqlite3_last_insert_rowid(s->db);
    for (size_t i = 0; i < n_chunks; i++) {
        const rag_chunk *c = &chunks[i];
        char *clean = rag_utf8_clean(text + c->byte_start, c->byte_end - c->byte_start);
        if (!clean) {
            failf(err, "out of memory");
            goto fail;
        }
        sqlite3_bind_int64(qc, 1, fid);
        sqlite3_bind_int64(qc, 2, (sqlite3_int64)i);
        sqlite3_bind_int64(qc, 3, (sqlite3_int64)c->byte_start);
        sqlite3_bind_int64(qc, 4, (sqlite3_int64)c->byte_end);
        sqlite3_bind_int(qc, 5, c->line_start);
        sqlite3_bind_int(qc, 6, c->line_end);
        sqlite3_bind_int(qc, 7, c->n_tokens);
        sqlite3_bind_text(qc, 8, clean, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(qc, 9, vecs + i * (size_t)n_embd, (int)((size_t)n_embd * sizeof(float)),
                          SQLITE_STATIC);
        int rc = sqlite3_step(qc);
        sqlite3_reset(qc);
        int64_t cid = sqlite3_last_insert_rowid(s->db);
        sqlite3_bind_int64(qt, 1, cid);
        sqlite3_bind_text(qt, 2, title, -1, SQLITE_STATIC);
        sqlite3_bind_text(qt, 3, clean, -1, SQLITE_TRANSIENT);
        int rt = rc == SQLITE_DONE ? sqlite3_step(qt) : rc;
        sqlite3_reset(qt);
        free(clean);
        if (rc != SQLITE_DONE || rt != SQLITE_DONE) {
            dbfail(s, err, "inserting a chunk");
            goto fail;
        }
    }
    sqlite3_finalize(qf), sqlite3_finalize(qc), sqlite3_finalize(qt);
    qf = qc = qt = NULL;
    /* test hook: a window inside the open transaction for the kill -9 test (docs/RAG.md) */
    const char *delay = getenv("L3C_RAG_TEST_DELAY_MS");
    if (delay && atoi(delay) > 0) usleep((useconds_t)atoi(delay) * 1000);
    if (exec(s, "COMMIT", err)) goto fail;
    return 0;
fail:
    sqlite3_finalize(qf), sqlite3_finalize(qc), sqlite3_finalize(qt);
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int rag_store_remove_missing(rag_store *s, char *const *keep, size_t n_keep, char *const *roots,
                             size_t n_roots, int *removed, char *err) {
    *removed = 0;
    char **sorted = malloc((n_keep ? n_keep : 1) * sizeof *sorted);
    int64_t *gone = NULL;
    size_t n_gone = 0, cap = 0;
    sqlite3_stmt *q = NULL;
    if (!sorted) return failf(err, "out of memory");
    memcpy(sorted, keep, n_keep * sizeof *sorted);
    qsort(sorted, n_keep, sizeof *sorted, cmp_str);
    if (prep(s, "SELECT id, path FROM files", &q, err)) goto fail;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(q, 1);
        int under = 0;
        for (size_t r = 0; r < n_roots && !under; r++) {
            size_t l = strlen(roots[r]);
            under = !strncmp(p, roots[r], l) &&
                    (p[l] == 0 || p[l] == '/' || (l && roots[r][l - 1] == '/'));
        }
        if (!under || bsearch(&p, sorted, n_keep, sizeof *sorted, cmp_str)) continue;
        if (n_gone == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *g = realloc(gone, cap * sizeof *g);
            if (!g) {
                failf(err, "out of memory");
                goto fail;
            }
            gone = g;
        }
        gone[n_gone++] = sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
    q = NULL;
    if (rc != SQLITE_DONE) {
        dbfail(s, err, "reading the files table");
        goto fail;
    }
    for (size_t i = 0; i < n_gone; i++) {
        if (exec(s, "BEGIN IMMEDIATE", err)) goto fail;
        if (delete_file(s, gone[i], err) || exec(s, "COMMIT", err)) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        (*removed)++;
    }
    free(sorted), free(gone);
    return 0;
fail:
    sqlite3_finalize(q);
    free(sorted), free(gone);
    return -1;
}

int rag_store_counts(rag_store *s, int64_t *n_files, int64_t *n_chunks, char *err) {
    sqlite3_stmt *q;
    if (prep(s, "SELECT (SELECT count(*) FROM files), (SELECT count(*) FROM chunks)", &q, err))
        return -1;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *n_files = sqlite3_column_int64(q, 0), *n_chunks = sqlite3_column_int64(q, 1);
    sqlite3_finalize(q);
    return rc == SQLITE_ROW ? 0 : dbfail(s, err, "counting");
}

/* ---------------------------------------------------------------- search */

typedef struct cand {
    int64_t id;
    double bm25, cosine, fused;
    int32_t rank_bm25, rank_vec;
} cand;

static int is_word_byte(unsigned char c) {
    return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || c >= 0x80;
}

static int count_terms(const char *text) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p;) {
        if (!is_word_byte(*p)) {
            p++;
            continue;
        }
        n++;
        while (*p && is_word_byte(*p))
            p++;
    }
    return n;
}

int rag_query_check(const char *query, char *err) {
    size_t n = strlen(query);
    if (n > RAG_QUERY_MAX_BYTES) {
        snprintf(err, RAG_ERR_CAP,
                 "the query is %zu bytes; the limit is %d (ask a question, not a document)", n,
                 RAG_QUERY_MAX_BYTES);
        return -1;
    }
    int t = count_terms(query);
    if (t > RAG_QUERY_MAX_TERMS) {
        snprintf(err, RAG_ERR_CAP, "the query has %d words; the limit is %d", t,
                 RAG_QUERY_MAX_TERMS);
        return -1;
    }
    return 0;
}

/* FTS5 query: the words of the text (letters, digits, non-ASCII bytes) as quoted strings, OR-ed,
 * at most RAG_QUERY_MAX_TERMS of them (callers check the limits first; this bounds the work
 * whatever they pass); "" when the text has no words. malloc'd. */
static char *fts_query(const char *text) {
    size_t n = strlen(text);
    char *q = malloc(4 * n + 8), *w = q;
    if (!q) return NULL;
    int terms = 0;
    for (size_t i = 0; i < n && terms < RAG_QUERY_MAX_TERMS;) {
        if (!is_word_byte((unsigned char)text[i])) {
            i++;
            continue;
        }
        if (w != q) w += sprintf(w, " OR ");
        *w++ = '"';
        for (; i < n && is_word_byte((unsigned char)text[i]); i++)
            *w++ = text[i];
        *w++ = '"';
        terms++;
    }
    *w = 0;
    return q;
}

static cand *cand_get(cand **cs, int *n, int *cap, int64_t id) {
    for (int i = 0; i < *n; i++)
        if ((*cs)[i].id == id) return &(*cs)[i];
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        cand *p = realloc(*cs, (size_t)nc * sizeof *p);
        if (!p) return NULL;
        *cs = p, *cap = nc;
    }
    cand *c = &(*cs)[(*n)++];
    memset(c, 0, sizeof *c);
    c->id = id;
    return c;
}

static double dot(const float *a, const void *blob, int32_t n) {
    double s = 0;
    const unsigned char *b = blob;
    for (int32_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, b + 4 * (size_t)i, 4);
        s += (double)a[i] * (double)v;
    }
    return s;
}

static int by_fused(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->fused != b->fused) return a->fused > b->fused ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Loads every vector of this connection's snapshot into m. */
static int mat_load(rag_store *s, rag_vecs *m, int32_t n_embd, char *err) {
    sqlite3_stmt *q = NULL;
    if (prep(s, "SELECT id, embedding FROM chunks ORDER BY id", &q, err)) return -1;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(q, 1) != (int)((size_t)n_embd * sizeof(float))) {
            failf(err, "index '%s': chunk %lld has a %d-byte vector, expected %d x 4 bytes",
                  s->path, (long long)sqlite3_column_int64(q, 0), sqlite3_column_bytes(q, 1),
                  (int)n_embd);
            sqlite3_finalize(q);
            return -1;
        }
        if (rag_vecs_append(m, sqlite3_column_int64(q, 0), sqlite3_column_blob(q, 1), n_embd)) {
            sqlite3_finalize(q);
            return failf(err, "out of memory loading the vectors of '%s'", s->path);
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return dbfail(s, err, "reading the vectors");
    if (m->n == 0) m->dim = n_embd;
    return 0;
}

/* The matrix of generation gen (this connection's snapshot, inside its read transaction), with a
 * reference the caller releases (mat_release). The shared one when it is of that generation;
 * else loaded once (other searches wanting it wait on load_mu) and cached if it is the newest. A
 * search on an older snapshot than the cached matrix (a commit landed between two searches'
 * starts) gets a private one: a matrix always equals the snapshot it is used with. */
static int mat_acquire(rag_store *s, int64_t gen, int32_t n_embd, rag_mat **out, char *err) {
    rag_share *sh = s->share;
    *out = NULL;
    for (int pass = 0; pass < 2; pass++) {
        pthread_mutex_lock(&sh->mu);
        rag_mat *c = sh->cur;
        if (c && c->gen == gen && c->v.dim == n_embd) {
            c->refs++;
            *out = c;
        }
        pthread_mutex_unlock(&sh->mu);
        if (*out) {
            if (pass) pthread_mutex_unlock(&sh->load_mu);
            return 0;
        }
        if (!pass) pthread_mutex_lock(&sh->load_mu);
    }
    rag_mat *m = calloc(1, sizeof *m);
    if (!m) {
        pthread_mutex_unlock(&sh->load_mu);
        return failf(err, "out of memory");
    }
    m->gen = gen, m->refs = 1;
    if (mat_load(s, &m->v, n_embd, err)) {
        pthread_mutex_unlock(&sh->load_mu);
        rag_vecs_free(&m->v);
        free(m);
        return -1;
    }
    rag_mat *old = NULL;
    pthread_mutex_lock(&sh->mu);
    sh->loads++;
    if (!sh->cur || sh->cur->gen <= gen) {
        old = sh->cur;
        sh->cur = m;
        m->refs++; /* the cache's reference */
    }
    pthread_mutex_unlock(&sh->mu);
    pthread_mutex_unlock(&sh->load_mu);
    mat_release(sh, old);
    *out = m;
    return 0;
}

int64_t rag_store_matrix_loads(rag_store *s) {
    pthread_mutex_lock(&s->share->mu);
    int64_t n = s->share->loads;
    pthread_mutex_unlock(&s->share->mu);
    return n;
}

/* The index generation in this connection's snapshot. */
static int read_generation(rag_store *s, int64_t *gen, char *err) {
    sqlite3_stmt *q = NULL;
    if (prep(s, "SELECT value FROM meta WHERE key = 'generation'", &q, err)) return -1;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) *gen = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE
                   ? failf(err, "index '%s': no generation in the meta table", s->path)
                   : dbfail(s, err, "reading the meta table");
    return 0;
}

/* The exact cosine of chunk id (its float32 vector, q: "SELECT embedding ... WHERE id = ?1"). */
static int exact_cosine(rag_store *s, sqlite3_stmt *q, int64_t id, const float *qvec,
                        int32_t n_embd, double *out, char *err) {
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, id);
    if (sqlite3_step(q) != SQLITE_ROW) return dbfail(s, err, "reading a vector");
    if (sqlite3_column_bytes(q, 0) != (int)((size_t)n_embd * sizeof(float)))
        return failf(err, "index '%s': chunk %lld has a %d-byte vector, expected %d x 4 bytes",
                     s->path, (long long)id, sqlite3_column_bytes(q, 0), (int)n_embd);
    *out = dot(qvec, sqlite3_column_blob(q, 0), n_embd);
    return 0;
}

static int by_score(const void *pa, const void *pb) {
    const rag_scored *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int search_snapshot(rag_store *s, const char *query, const float *qvec, int32_t n_embd,
                           int k, rag_mode mode, double alpha, rag_hit **hits, int *n_hits,
                           char *err);

/* One read transaction around the whole search: the BM25 list, the matrix (of the snapshot's
 * generation) and the chunks read by id all come from one committed state of the index, whatever
 * a concurrent `rag index` commits meanwhile (WAL: readers do not block the writer). */
int rag_store_search(rag_store *s, const char *query, const float *qvec, int32_t n_embd, int k,
                     rag_mode mode, double alpha, rag_hit **hits, int *n_hits, char *err) {
    *hits = NULL, *n_hits = 0;
    if (k <= 0) return 0;
    int own = sqlite3_get_autocommit(s->db);
    if (own && exec(s, "BEGIN", err)) return -1;
    int rc = search_snapshot(s, query, qvec, n_embd, k, mode, alpha, hits, n_hits, err);
    if (own) sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL); /* read-only: nothing to lose */
    return rc;
}

static int search_snapshot(rag_store *s, const char *query, const float *qvec, int32_t n_embd,
                           int k, rag_mode mode, double alpha, rag_hit **hits, int *n_hits,
                           char *err) {
    *hits = NULL, *n_hits = 0;
    cand *cs = NULL;
    int nc = 0, capc = 0, n_take = k > RAG_CANDIDATES ? k : RAG_CANDIDATES;
    sqlite3_stmt *q = NULL;
    char *fq = NULL;
    rag_hit *h = NULL;
    rag_mat *mat = NULL;
    int nh = 0;
    if (k <= 0) return 0;
    if (mode != RAG_VECTOR) { /* BM25 candidates */
        if (!(fq = fts_query(query))) goto oom;
        if (*fq) {
            if (prep(s,
                     "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?1 "
                     "ORDER BY 2, 1 LIMIT ?2",
                     &q, err))
                goto fail;
            sqlite3_bind_text(q, 1, fq, -1, SQLITE_STATIC);
            sqlite3_bind_int(q, 2, n_take);
            int rc, r = 0;
            while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
                cand *c = cand_get(&cs, &nc, &capc, sqlite3_column_int64(q, 0));
                if (!c) goto oom;
                c->bm25 = -sqlite3_column_double(q, 1);
                c->rank_bm25 = ++r;
            }
            sqlite3_finalize(q);
            q = NULL;
            if (rc != SQLITE_DONE) {
                dbfail(s, err, "full-text search");
                goto fail;
            }
        }
    }
    const int n_bm = nc;
    if (mode != RAG_BM25) { /* int8 scan of the matrix, exact float32 rerank of its best rows */
        int64_t gen = 0;
        if (read_generation(s, &gen, err) || mat_acquire(s, gen, n_embd, &mat, err)) goto fail;
        const int keep = 4 * n_take < 200 ? 200 : 4 * n_take;
        rag_scored *sc = malloc((size_t)keep * sizeof *sc);
        int ns = 0;
        int bad = !sc || rag_vecs_scan(&mat->v, qvec, keep, rag_default_threads(), sc, &ns);
        mat_release(s->share, mat);
        mat = NULL;
        if (bad) {
            free(sc);
            goto oom;
        }
        if (prep(s, "SELECT embedding FROM chunks WHERE id = ?1", &q, err)) {
            free(sc);
            goto fail;
        }
        /* exact cosines: the scan's rows, then every BM25 candidate */
        for (int i = 0; i < ns + n_bm; i++) {
            int64_t id = i < ns ? sc[i].id : cs[i - ns].id;
            double d = 0;
            if (exact_cosine(s, q, id, qvec, n_embd, &d, err)) {
                free(sc);
                goto fail;
            }
            if (i < ns)
                sc[i].score = d;
            else
                cs[i - ns].cosine = d;
        }
        sqlite3_finalize(q);
        q = NULL;
        qsort(sc, (size_t)ns, sizeof *sc, by_score);
        for (int i = 0; i < ns && i < n_take; i++) {
            cand *c = cand_get(&cs, &nc, &capc, sc[i].id);
            if (!c) {
                free(sc);
                goto oom;
            }
            c->cosine = sc[i].score;
            c->rank_vec = i + 1;
        }
        free(sc);
    }
    /* min-max ranges over the candidates (BM25: over its own list; outside it a chunk counts 0) */
    double bmin = 0, bmax = 0, cmin = 0, cmax = 0;
    for (int i = 0; i < nc; i++) {
        if (i < n_bm)
            bmin = i == 0 || cs[i].bm25 < bmin ? cs[i].bm25 : bmin,
            bmax = i == 0 || cs[i].bm25 > bmax ? cs[i].bm25 : bmax;
        cmin = i == 0 || cs[i].cosine < cmin ? cs[i].cosine : cmin;
        cmax = i == 0 || cs[i].cosine > cmax ? cs[i].cosine : cmax;
    }
    for (int i = 0; i < nc; i++) {
        cand *c = &cs[i];
        double nb = !c->rank_bm25 ? 0 : bmax > bmin ? (c->bm25 - bmin) / (bmax - bmin) : 1;
        double nv = cmax > cmin ? (c->cosine - cmin) / (cmax - cmin) : 1;
        c->fused = mode == RAG_BM25     ? c->bm25
                   : mode == RAG_VECTOR ? c->cosine
                                        : alpha * nb + (1 - alpha) * nv;
    }
    if (nc > 1) qsort(cs, (size_t)nc, sizeof *cs, by_fused); /* cs is NULL when nc == 0 */
    int n = nc < k ? nc : k;
    if (n == 0) goto done;
    if (!(h = calloc((size_t)n, sizeof *h))) goto oom;
    if (prep(s,
             "SELECT f.path, c.text, c.byte_start, c.byte_end, c.line_start, c.line_end, "
             "c.embedding "
             "FROM chunks c JOIN files f ON f.id = c.file_id WHERE c.id = ?1",
             &q, err))
        goto fail;
    for (int i = 0; i < n; i++) {
        sqlite3_bind_int64(q, 1, cs[i].id);
        if (sqlite3_step(q) != SQLITE_ROW) {
            dbfail(s, err, "reading a chunk");
            goto fail;
        }
        rag_hit *x = &h[nh++];
        x->chunk_id = cs[i].id;
        x->path = strdup((const char *)sqlite3_column_text(q, 0));
        x->text = strdup((const char *)sqlite3_column_text(q, 1));
        if (!x->path || !x->text) goto oom;
        x->byte_start = sqlite3_column_int64(q, 2);
        x->byte_end = sqlite3_column_int64(q, 3);
        x->line_start = sqlite3_column_int(q, 4);
        x->line_end = sqlite3_column_int(q, 5);
        x->score = cs[i].fused;
        x->bm25 = cs[i].bm25;
        x->cosine = qvec && sqlite3_column_bytes(q, 6) == (int)((size_t)n_embd * sizeof(float))
                        ? dot(qvec, sqlite3_column_blob(q, 6), n_embd)
                        : 0;
        x->rank_bm25 = cs[i].rank_bm25;
        x->rank_vec = cs[i].rank_vec;
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    q = NULL;
done:
    free(cs), free(fq);
    *hits = h, *n_hits = nh;
    return 0;
oom:
    failf(err, "out of memory");
fail:
    sqlite3_finalize(q);
    free(cs), free(fq);
    rag_hits_free(h, nh);
    return -1;
}

void rag_hits_free(rag_hit *hits, int n) {
    if (!hits) return;
    for (int i = 0; i < n; i++)
        free(hits[i].path), free(hits[i].text);
    free(hits);
}

/* ---------------------------------------------------------------- pool */

struct rag_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rag_store *first; /* opened and checked by the caller; source of the others */
    rag_store **idle;
    int n_idle, n_open, max;
};

int rag_pool_new(rag_store *first, int max, rag_pool **out, char *err) {
    *out = NULL;
    rag_pool *p = calloc(1, sizeof *p);
    if (max < 1) max = 1;
    if (!p || !(p->idle = malloc((size_t)max * sizeof *p->idle))) {
        free(p);
        return failf(err, "out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->first = first, p->max = max;
    p->idle[p->n_idle++] = first;
    p->n_open = 1;
    *out = p;
    return 0;
}

rag_store *rag_pool_get(rag_pool *p, char *err) {
    pthread_mutex_lock(&p->mu);
    while (p->n_idle == 0 && p->n_open >= p->max)
        pthread_cond_wait(&p->cv, &p->mu);
    if (p->n_idle > 0) {
        rag_store *s = p->idle[--p->n_idle];
        pthread_mutex_unlock(&p->mu);
        return s;
    }
    p->n_open++; /* a new connection, opened outside the lock */
    pthread_mutex_unlock(&p->mu);
    rag_store *s = NULL;
    if (rag_store_open_more(p->first, &s, err)) {
        pthread_mutex_lock(&p->mu);
        p->n_open--;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    return s;
}

void rag_pool_put(rag_pool *p, rag_store *s) {
    if (!s) return;
    pthread_mutex_lock(&p->mu);
    p->idle[p->n_idle++] = s;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void rag_pool_free(rag_pool *p) {
    if (!p) return;
    /* every connection is back (the caller stopped using the pool); the first closes last, since
     * the others share its state */
    for (int i = 0; i < p->n_idle; i++)
        if (p->idle[i] != p->first) rag_store_close(p->idle[i]);
    rag_store_close(p->first);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p);
}
