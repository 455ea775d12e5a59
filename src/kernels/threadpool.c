/*
 * threadpool.c -- a fixed pool of n_threads - 1 pthreads plus the caller (thread 0) that runs
 * jobs of independent chunks, claimed dynamically.
 *
 * One 64-bit atomic word, `claim`, describes the current job: generation (bits 32..63), number
 * of chunks (16..31) and the next unclaimed chunk (0..15). A thread claims chunk i by a CAS
 * from (g, n, i) to (g, n, i + 1); only after a successful claim does it read the job's fn/arg.
 * That is safe even for a worker that was descheduled for a long time: while chunk i of job g
 * is claimed but not done, job g cannot finish, so the caller cannot have published another
 * job; and once every chunk of g is claimed, no CAS on a g word can succeed (the word either
 * has next == n or belongs to a later generation). `done` counts finished chunks of the
 * current job; the caller runs chunks itself, then waits for done == n, so a worker that
 * never got a CPU costs nothing but the chunks it actually claimed.
 *
 * Waiting: workers spin briefly on `claim`, then sched_yield, then sleep on a condition
 * variable (n_sleeping tells the caller whether a broadcast is needed; both sides use seq_cst
 * so a wake-up cannot be missed: the worker increments n_sleeping before its last check of
 * `claim` under `mu`, the caller stores `claim` before reading n_sleeping). The caller waiting
 * for the last chunks spins, then yields, and never sleeps: what it waits for is one chunk
 * already running.
 */
#include "kernels/threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#define SPIN_ITERS 2000   /* pause loops before yielding */
#define YIELD_ITERS 200   /* sched_yield calls before a worker sleeps */

struct l3c_threadpool {
    int n_threads;
    pthread_t *threads; /* [n_threads - 1] */
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t cv_start;
    _Alignas(64) _Atomic uint64_t claim;
    _Alignas(64) atomic_int done;   /* chunks of the current job finished by workers */
    atomic_int n_sleeping;
    atomic_bool stop;
    uint32_t generation;            /* caller-side copy of the current generation */
    l3c_chunk_fn fn;
    void *arg;
};

typedef struct worker_arg {
    l3c_threadpool *tp;
    int ith;
} worker_arg;

static inline uint32_t w_gen(uint64_t w) { return (uint32_t)(w >> 32); }
static inline uint32_t w_n(uint64_t w) { return (uint32_t)(w >> 16) & 0xFFFF; }
static inline uint32_t w_next(uint64_t w) { return (uint32_t)w & 0xFFFF; }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claims the next chunk of the job whose word *w was last seen; false when the job has no
 * unclaimed chunk left or a newer job replaced it. */
static bool claim_chunk(l3c_threadpool *tp, uint64_t *w, int64_t *chunk) {
    uint64_t cur = *w;
    const uint32_t gen = w_gen(cur);
    for (;;) {
        if (w_gen(cur) != gen || w_next(cur) >= w_n(cur)) return false;
        if (atomic_compare_exchange_weak_explicit(&tp->claim, &cur, cur + 1, memory_order_acquire,
                                                  memory_order_relaxed)) {
            *chunk = w_next(cur);
            *w = cur + 1;
            return true;
        }
    }
}

/* waits until the job generation differs from `seen` (or stop); returns the claim word */
static uint64_t wait_for_job(l3c_threadpool *tp, uint32_t seen) {
    for (int i = 0; i < SPIN_ITERS + YIELD_ITERS; i++) {
        uint64_t w = atomic_load_explicit(&tp->claim, memory_order_acquire);
        if (w_gen(w) != seen || atomic_load_explicit(&tp->stop, memory_order_relaxed)) return w;
        if (i < SPIN_ITERS) cpu_relax();
        else sched_yield();
    }
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add(&tp->n_sleeping, 1);
    while (w_gen(atomic_load(&tp->claim)) == seen && !atomic_load(&tp->stop))
        pthread_cond_wait(&tp->cv_start, &tp->mu);
    atomic_fetch_sub(&tp->n_sleeping, 1);
    pthread_mutex_unlock(&tp->mu);
    return atomic_load_explicit(&tp->claim, memory_order_acquire);
}

static void *worker_main(void *p) {
    worker_arg wa = *(worker_arg *)p;
    free(p);
    l3c_threadpool *tp = wa.tp;
    uint32_t seen = 0;
    for (;;) {
        uint64_t w = wait_for_job(tp, seen);
        if (atomic_load(&tp->stop)) break;
        seen = w_gen(w);
        int64_t chunk;
        while (claim_chunk(tp, &w, &chunk)) {
            tp->fn(tp->arg, chunk, wa.ith); /* stable: the job cannot finish before this chunk */
            atomic_fetch_add_explicit(&tp->done, 1, memory_order_release);
        }
    }
    return NULL;
}

static void stop_workers(l3c_threadpool *tp) {
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, true);
    pthread_cond_broadcast(&tp->cv_start);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 0; i < tp->n_started; i++) pthread_join(tp->threads[i], NULL);
    tp->n_started = 0;
}

l3c_status l3c_threadpool_create(int n_threads, l3c_threadpool **out) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 4096)
        return l3c_fail(L3C_ERR_INVALID_ARG, "threadpool: n_threads %d not in [1, 4096]", n_threads);
    l3c_status st = L3C_OK;
    l3c_threadpool *tp = l3c_calloc(1, sizeof *tp);
    if (!tp) return l3c_fail(L3C_ERR_NOMEM, "threadpool: out of memory");
    tp->n_threads = n_threads;
    atomic_init(&tp->claim, 0);
    atomic_init(&tp->done, 0);
    atomic_init(&tp->n_sleeping, 0);
    atomic_init(&tp->stop, false);
    bool mu_ok = false, start_ok = false;
    if (!(mu_ok = pthread_mutex_init(&tp->mu, NULL) == 0) ||
        !(start_ok = pthread_cond_init(&tp->cv_start, NULL) == 0)) {
        st = l3c_fail(L3C_ERR_NOMEM, "threadpool: cannot create mutex/condition variable");
        goto fail;
    }
    if (n_threads > 1) {
        tp->threads = l3c_calloc((size_t)(n_threads - 1), sizeof *tp->threads);
        if (!tp->threads) {
            st = l3c_fail(L3C_ERR_NOMEM, "threadpool: out of memory for %d threads", n_threads);
            goto fail;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = l3c_malloc(sizeof *wa);
        if (!wa) {
            st = l3c_fail(L3C_ERR_NOMEM, "threadpool: out of memory");
            goto fail;
        }
        *wa = (worker_arg){tp, i};
        int err = pthread_create(&tp->threads[i - 1], NULL, worker_main, wa);
        if (err != 0) {
            free(wa);
            st = l3c_fail(err == EAGAIN ? L3C_ERR_NOMEM : L3C_ERR_IO,
                          "threadpool: pthread_create for worker %d of %d: %s", i, n_threads,
                          strerror(err));
            goto fail;
        }
        tp->n_started++;
    }
    *out = tp;
    return L3C_OK;
fail:
    if (mu_ok && start_ok) stop_workers(tp);
    if (start_ok) pthread_cond_destroy(&tp->cv_start);
    if (mu_ok) pthread_mutex_destroy(&tp->mu);
    free(tp->threads);
    free(tp);
    return st;
}

void l3c_threadpool_free(l3c_threadpool *tp) {
    if (!tp) return;
    stop_workers(tp);
    pthread_cond_destroy(&tp->cv_start);
    pthread_mutex_destroy(&tp->mu);
    free(tp->threads);
    free(tp);
}

int l3c_threadpool_n_threads(const l3c_threadpool *tp) { return tp ? tp->n_threads : 1; }

void l3c_threadpool_run(l3c_threadpool *tp, int64_t n_chunks, l3c_chunk_fn fn, void *arg) {
    L3C_ASSERT(n_chunks >= 0 && n_chunks <= L3C_MAX_CHUNKS);
    if (!tp || tp->n_threads == 1 || n_chunks <= 1) {
        for (int64_t c = 0; c < n_chunks; c++) fn(arg, c, 0);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->done, 0, memory_order_relaxed);
    uint64_t w = ((uint64_t)++tp->generation << 32) | ((uint64_t)n_chunks << 16);
    atomic_store(&tp->claim, w); /* seq_cst: publishes fn/arg/done; ordered before n_sleeping */
    if (atomic_load(&tp->n_sleeping) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv_start);
        pthread_mutex_unlock(&tp->mu);
    }

    int mine = 0;
    int64_t chunk;
    while (claim_chunk(tp, &w, &chunk)) {
        fn(arg, chunk, 0);
        mine++;
    }
    const int want = (int)n_chunks - mine;
    for (int i = 0; atomic_load_explicit(&tp->done, memory_order_acquire) != want; i++) {
        if (i < SPIN_ITERS) cpu_relax();
        else sched_yield();
    }
}
