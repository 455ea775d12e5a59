/*
 * threadpool.h -- a fixed pool of pthreads that runs one parallel job at a time.
 *
 * A job is n_chunks independent pieces of work: l3c_threadpool_run(tp, n, fn, arg) calls
 * fn(arg, chunk, ith) exactly once for every chunk in [0, n), on whichever thread claims it
 * first (the caller is thread 0 and claims chunks too), and returns when every chunk is done.
 * Work is claimed dynamically, so a worker the OS did not schedule costs nothing: the caller
 * finishes its share. ith (< n_threads) is the thread running the chunk, for per-thread
 * scratch; no two chunks run on the same ith at the same time. Results must not depend on
 * which thread runs a chunk. Not re-entrant: one run at a time per pool.
 */
#ifndef L3C_THREADPOOL_H
#define L3C_THREADPOOL_H

#include "util/util.h"

typedef struct l3c_threadpool l3c_threadpool;
typedef void (*l3c_chunk_fn)(void *arg, int64_t chunk, int ith);

/* The most chunks one job may have. */
#define L3C_MAX_CHUNKS 65535

l3c_status l3c_threadpool_create(int n_threads, l3c_threadpool **out);
void l3c_threadpool_free(l3c_threadpool *tp);
int l3c_threadpool_n_threads(const l3c_threadpool *tp);
/* tp may be NULL (everything runs on the caller); 0 <= n_chunks <= L3C_MAX_CHUNKS. */
void l3c_threadpool_run(l3c_threadpool *tp, int64_t n_chunks, l3c_chunk_fn fn, void *arg);

/* Number of chunks of `per` items that cover n items. */
static inline int64_t l3c_n_chunks(int64_t n, int64_t per) { return (n + per - 1) / per; }

#endif /* L3C_THREADPOOL_H */
