/*
 * threadpool.h -- a fixed pool of pthreads that runs one parallel job at a time.
 * l3c_threadpool_run(tp, fn, arg) calls fn(arg, ith, nth) on nth = tp->n_threads workers
 * (the caller is worker 0) and returns when all are done. Low overhead per call: workers spin
 * briefly, then sleep on a condition variable. Not re-entrant: one run at a time per pool.
 */
#ifndef L3C_THREADPOOL_H
#define L3C_THREADPOOL_H

#include "util/util.h"

typedef struct l3c_threadpool l3c_threadpool;
typedef void (*l3c_task_fn)(void *arg, int ith, int nth);

l3c_status l3c_threadpool_create(int n_threads, l3c_threadpool **out);
void l3c_threadpool_free(l3c_threadpool *tp);
int l3c_threadpool_n_threads(const l3c_threadpool *tp);
void l3c_threadpool_run(l3c_threadpool *tp, l3c_task_fn fn, void *arg);

/* Split [0, n) into nth near-equal chunks; chunk ith is [*lo, *hi). */
static inline void l3c_split_range(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = (n + nth - 1) / nth;
    *lo = L3C_MIN((int64_t)ith * per, n);
    *hi = L3C_MIN(*lo + per, n);
}

#endif /* L3C_THREADPOOL_H */
