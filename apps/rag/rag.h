/*
 * rag.h -- retrieval-augmented generation for `llama3c rag` and `llama3c serve --rag-db`, built on
 * the public header only (docs/RAG.md describes the design).
 *
 *  - rag_chunk.c: splits a text into chunks of about N tokens of the model's tokenizer with an
 *    overlap, ends snapped to paragraph / line / sentence / word boundaries.
 *  - rag_store.c: the on-disk index, one SQLite file (WAL): meta (what the index was built with),
 *    files (path, size, mtime, sha256), chunks (byte and line ranges, text, float32 unit vector)
 *    and an FTS5 table over the chunks' text (BM25); search by BM25, by cosine (an exact scan of
 *    the stored vectors, held as an int8 matrix shared by the index's connections) or hybrid
 *    (relative score fusion of the two); a pool of connections for concurrent searches.
 *  - rag_embed.c: pooled, L2-normalized embeddings of texts with an l3c embeddings context, and
 *    the model fingerprint recorded in the index.
 *  - rag_sha256.c: SHA-256 (file identity for incremental re-indexing).
 *  - rag_prompt.c: the instructions and numbered sources given to the model to answer from.
 *
 * Errors: functions return 0 on success and -1 on failure with a message (naming the file, table
 * or value) in the caller's buffer err[RAG_ERR_CAP]. Nothing exits; nothing leaks on any path.
 */
#ifndef L3C_RAG_H
#define L3C_RAG_H

#include "llama3c.h"

#include <stddef.h>
#include <stdint.h>

#define RAG_ERR_CAP        512
#define RAG_SCHEMA_VERSION 1

/* Hybrid ranking: relative score fusion. Over the candidates (the union of the RAG_CANDIDATES best
 * of each ranking), each score is min-max normalized to [0, 1] (a chunk outside the BM25 list gets
 * 0 for BM25; every candidate's cosine is exact), and score = alpha * bm25' + (1 - alpha) * cos'.
 * Unlike reciprocal-rank fusion it keeps the margins: a clear BM25 winner is not overturned by the
 * weak vector ranking of a small chat model (docs/RAG.md has the measurements behind the default).
 */
#define RAG_HYBRID_ALPHA 0.6
/* Candidates taken from each ranking before fusion. */
#define RAG_CANDIDATES 50

/* ---------------------------------------------------------------- sha256 */

typedef struct rag_sha256 {
    uint32_t h[8];
    uint64_t n; /* bytes hashed so far */
    unsigned char buf[64];
} rag_sha256;

void rag_sha256_init(rag_sha256 *s);
void rag_sha256_update(rag_sha256 *s, const void *data, size_t len);
void rag_sha256_final(rag_sha256 *s, char hex[65]);
void rag_sha256_hex(const void *data, size_t len, char hex[65]);

/* ---------------------------------------------------------------- chunking */

typedef struct rag_chunk {
    size_t byte_start, byte_end;  /* [start, end) into the text */
    int32_t line_start, line_end; /* 1-based, inclusive */
    int32_t n_tokens;             /* tokens of the whole-text tokenization inside the range */
} rag_chunk;

/*
 * Chunks text[0..len) into ranges of at most chunk_tokens tokens (the text tokenized once, no
 * BOS); each range after the first starts about `overlap` tokens before the previous one ends,
 * moved forward to the first line start in that overlap if there is one; each range but the
 * last ends at the latest paragraph break, else line break, else sentence end, else word
 * boundary found in its second half, else at chunk_tokens. Whitespace-only ranges are dropped;
 * an empty text gives no chunks. Needs 0 <= overlap < chunk_tokens / 2 (so ranges advance).
 * *out is malloc'd (NULL when *n == 0).
 */
int rag_chunk_text(const l3c_tokenizer *tok, const char *text, size_t len, int chunk_tokens,
                   int overlap, rag_chunk **out, size_t *n, char *err);

/* ---------------------------------------------------------------- embeddings */

typedef struct rag_embedder {
    const l3c_model *model;
    const l3c_tokenizer *tok;
    l3c_context *ctx;
    int32_t n_embd, n_ctx;
    int32_t *ids; /* [n_ctx] */
} rag_embedder;

/* An embeddings context on the model (mean pooling, unit vectors, one sequence of n_ctx). */
int rag_embedder_init(rag_embedder *e, const l3c_model *model, int32_t n_ctx, int n_threads,
                      char *err);
void rag_embedder_free(rag_embedder *e);
/* The unit-length mean-pooled final-normed hidden state of BOS + text (cut to n_ctx tokens;
 * *truncated says so) into out[n_embd]. Each text is decoded alone, so a vector depends only on
 * its text. */
int rag_embed(rag_embedder *e, const char *text, size_t len, float *out, int *truncated, char *err);

/* Model identity stored in the index: sha256 over the model's name / type / shape and, for a GGUF
 * file, its size and first and last MiB; for a Hugging Face folder, the same for every regular file
 * in it (config, tokenizer, each safetensors shard), in name order, so the folder's content, not
 * its name, identifies it (hashing whole multi-GB files on every open would be too slow). */
int rag_model_fingerprint(const char *path, const l3c_model *model, char hex[65], char *err);

/* ---------------------------------------------------------------- store */

typedef struct rag_store rag_store;

typedef enum rag_mode { RAG_HYBRID = 0, RAG_VECTOR = 1, RAG_BM25 = 2 } rag_mode;
const char *rag_mode_name(rag_mode m);
int rag_mode_parse(const char *s, rag_mode *out);

/* What an index was built with; stored in its meta table and checked on every open for use. */
typedef struct rag_meta {
    char fingerprint[65]; /* rag_model_fingerprint */
    char model_name[256];
    int32_t n_embd;
    int32_t chunk_tokens, overlap;
    char pooling[16]; /* "mean" */
} rag_meta;

/* Opens (create = 1: creates if missing, with the schema) an index. A file that is not SQLite, or
 * a SQLite file without this schema, is an error naming the path. */
int rag_store_open(const char *path, int create, rag_store **out, char *err);
void rag_store_close(rag_store *s);
/* Another connection to the index `first` was opened on (no checks again: `first` made them),
 * sharing its vector matrix. Connections are used by one thread at a time each; different
 * connections search concurrently (WAL readers), each in one read transaction. */
int rag_store_open_more(rag_store *first, rag_store **out, char *err);
/* How many times the vector matrix of this index (shared by its connections) was loaded. */
int64_t rag_store_matrix_loads(rag_store *s);

/* A pool of up to max connections to one index for concurrent searches (the server): get one
 * (an idle one, else a new one while fewer than max are open, else waits), search, put it back.
 * rag_pool_new takes `first` (opened and checked); rag_pool_free closes every connection, all of
 * which must have been put back. NULL from get: a new connection failed (err says why). */
typedef struct rag_pool rag_pool;
#define RAG_POOL_MAX 8 /* connections of `serve --rag-db` (more concurrent searches wait) */
int rag_pool_new(rag_store *first, int max, rag_pool **out, char *err);
rag_store *rag_pool_get(rag_pool *p, char *err);
void rag_pool_put(rag_pool *p, rag_store *s);
void rag_pool_free(rag_pool *p);
/* Reads the meta table into *m; *found = 0 when the index is new (no meta yet). */
int rag_store_get_meta(rag_store *s, rag_meta *m, int *found, char *err);
/* Writes the meta of a new index. */
int rag_store_set_meta(rag_store *s, const rag_meta *m, char *err);
/* Compares an index's meta with the model in use: a different fingerprint or dimension is an
 * error that names both models. */
int rag_meta_check_model(const rag_meta *have, const char *fingerprint, int32_t n_embd,
                         const char *model_name, const char *db_path, char *err);

/* The recorded state of a file: *found = 0 if the index has none. */
int rag_store_file_state(rag_store *s, const char *path, int64_t *size, int64_t *mtime_ns,
                         char sha[65], int *found, char *err);
/* Records that a file with the recorded sha256 now has this size / mtime (content unchanged). */
int rag_store_touch_file(rag_store *s, const char *path, int64_t size, int64_t mtime_ns, char *err);
/* Replaces a file's chunks in ONE transaction: its old rows go, the file row and every chunk (text,
 * ranges, vector of n_embd floats each, vecs[i * n_embd ...]) and its FTS rows come in. */
int rag_store_put_file(rag_store *s, const char *path, const char *title, int64_t size,
                       int64_t mtime_ns, const char *sha, const char *text, const rag_chunk *chunks,
                       size_t n_chunks, const float *vecs, int32_t n_embd, char *err);
/* Removes the files (and chunks) whose path is not in keep[0..n_keep) but starts with one of the
 * roots (files indexed from the given folders that no longer exist there). *removed counts them. */
int rag_store_remove_missing(rag_store *s, char *const *keep, size_t n_keep, char *const *roots,
                             size_t n_roots, int *removed, char *err);
int rag_store_counts(rag_store *s, int64_t *n_files, int64_t *n_chunks, char *err);

typedef struct rag_hit {
    int64_t chunk_id;
    char *path; /* malloc'd */
    char *text; /* malloc'd */
    int64_t byte_start, byte_end;
    int32_t line_start, line_end;
    double score; /* of the mode: bm25 (higher is better: -SQLite's bm25()), cosine or fused */
    double bm25, cosine; /* components (0 when the chunk was not among that ranking's candidates) */
    int32_t rank_bm25, rank_vec; /* 1-based ranks among the candidates; 0: not in that list */
} rag_hit;

/* ---------------------------------------------------------------- vector matrix (rag_vec.c) */

/* Every chunk vector of an index, int8 per vector (v ~ scale[r] * q[r]), rows in id order,
 * stored offset by 128 as uint8. */
typedef struct rag_vecs {
    int64_t n, cap;
    int32_t dim;
    int64_t *ids; /* [n] chunk ids */
    uint8_t *q;   /* [n x dim]: q + 128, see rag_vec.c */
    float *scale; /* [n] */
} rag_vecs;

typedef struct rag_scored {
    int64_t id;
    double score;
} rag_scored;

/* q[n] = round(v / scale), scale = max|v| / 127; returns scale. */
float rag_quantize_i8(const float *v, int32_t n, int8_t *q);
int rag_vecs_reserve(rag_vecs *m, int64_t n, int32_t dim);
int rag_vecs_append(rag_vecs *m, int64_t id, const float *v, int32_t dim);
void rag_vecs_free(rag_vecs *m);
/* The keep best rows by int8 dot product with query[dim] (quantized the same way), on n_threads
 * threads; out[keep] sorted by score descending, ties by id; the order does not depend on the
 * thread count. 0, or -1 out of memory. */
int rag_vecs_scan(const rag_vecs *m, const float *query, int keep, int n_threads, rag_scored *out,
                  int *n_out);
int rag_default_threads(void);

/* Query limits: a query is a question, not a document. Longer ones are refused (CLI: usage error;
 * server: 400 naming the field) before any work, so one request cannot make the FTS5 query or the
 * embedding arbitrarily large under the store's lock. */
#define RAG_QUERY_MAX_BYTES 4096
#define RAG_QUERY_MAX_TERMS 64
/* 0 when query is within the limits, else -1 with the reason in err. */
int rag_query_check(const char *query, char *err);

/* The top k chunks for a query: query text for BM25 (its words, OR-ed), qvec[n_embd] (unit) for
 * cosine; qvec may be NULL in RAG_BM25 mode. alpha: the BM25 weight of RAG_HYBRID (0..1). *hits
 * is malloc'd (free with rag_hits_free). */
int rag_store_search(rag_store *s, const char *query, const float *qvec, int32_t n_embd, int k,
                     rag_mode mode, double alpha, rag_hit **hits, int *n_hits, char *err);
void rag_hits_free(rag_hit *hits, int n);

/* ---------------------------------------------------------------- prompt (rag_prompt.c) */

/* The system message of an answer from sources: use only them, cite them as [n]. */
extern const char RAG_SYSTEM_PROMPT[];
/* "Sources:\n[1] (path:a-b)\ntext\n\n...Question: QUESTION" as the user message; malloc'd. */
/* Abstention (docs/RAG.md "Unanswerable questions"): the retrieval confidence of an answer is the
 * best BM25 score (higher is better) among its retrieved chunks, 0 when none matches a word of the
 * question (vector mode computes no BM25: 0). Below RAG_MIN_SCORE (`rag ask --min-score`, the
 * server's "min_score") the answer is RAG_DONT_KNOW, without calling the model. The default was
 * calibrated on tests/py/rag_eval_set.py: it refused no answerable question there. */
#define RAG_MIN_SCORE 3.0
extern const char RAG_DONT_KNOW[];
double rag_confidence(const rag_hit *h, int n);
char *rag_sources_text(const rag_hit *h, int n, const char *question);

/* Replaces invalid UTF-8 and NUL / control bytes other than \t \n \r with U+FFFD; malloc'd. */
char *rag_utf8_clean(const char *s, size_t n);

#endif
