/*
 * threadpool.c -- a fixed pool of n_threads - 1 pthreads plus the caller (worker 0).
 *
 * One job at a time: l3c_threadpool_run publishes (fn, arg), bumps `generation` and wakes the
 * workers; each worker runs fn(arg, ith, nth) once per generation and decrements `pending`;
 * the caller runs its share, then waits for pending == 0. Waiting is a short spin on the atomic
 * (cheap back-to-back jobs in the decode loop) followed by a condition-variable sleep.
 *
 * Invariants: generation and stop change only under `mu` (so a worker checking them under `mu`
 * before sleeping cannot miss a wake-up); a new job starts only after every worker finished the
 * previous one, so each worker sees every generation exactly once.
 */
#include "kernels/threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define SPIN_ITERS 20000

struct l3c_threadpool {
    int n_threads;
    pthread_t *threads; /* [n_threads - 1] */
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t cv_start, cv_done;
    atomic_uint generation;
    atomic_int pending; /* workers still running the current job */
    atomic_bool stop;
    l3c_task_fn fn;
    void *arg;
};

typedef struct worker_arg {
    l3c_threadpool *tp;
    int ith;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* waits until generation differs from seen (or stop); returns the new generation */
static unsigned wait_for_job(l3c_threadpool *tp, unsigned seen) {
    for (int i = 0; i < SPIN_ITERS; i++) {
        unsigned g = atomic_load_explicit(&tp->generation, memory_order_acquire);
        if (g != seen || atomic_load(&tp->stop)) return g;
        cpu_relax();
    }
    pthread_mutex_lock(&tp->mu);
    while (atomic_load(&tp->generation) == seen && !atomic_load(&tp->stop))
        pthread_cond_wait(&tp->cv_start, &tp->mu);
    unsigned g = atomic_load(&tp->generation);
    pthread_mutex_unlock(&tp->mu);
    return g;
}

static void *worker_main(void *p) {
    worker_arg wa = *(worker_arg *)p;
    free(p);
    l3c_threadpool *tp = wa.tp;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(tp, seen);
        if (atomic_load(&tp->stop)) break;
        tp->fn(tp->arg, wa.ith, tp->n_threads);
        if (atomic_fetch_sub_explicit(&tp->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->cv_done);
            pthread_mutex_unlock(&tp->mu);
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
    atomic_init(&tp->generation, 0);
    atomic_init(&tp->pending, 0);
    atomic_init(&tp->stop, false);
    bool mu_ok = false, start_ok = false, done_ok = false;
    if (!(mu_ok = pthread_mutex_init(&tp->mu, NULL) == 0) ||
        !(start_ok = pthread_cond_init(&tp->cv_start, NULL) == 0) ||
        !(done_ok = pthread_cond_init(&tp->cv_done, NULL) == 0)) {
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
    if (mu_ok && start_ok && done_ok) stop_workers(tp);
    if (done_ok) pthread_cond_destroy(&tp->cv_done);
    if (start_ok) pthread_cond_destroy(&tp->cv_start);
    if (mu_ok) pthread_mutex_destroy(&tp->mu);
    free(tp->threads);
    free(tp);
    return st;
}

void l3c_threadpool_free(l3c_threadpool *tp) {
    if (!tp) return;
    stop_workers(tp);
    pthread_cond_destroy(&tp->cv_done);
    pthread_cond_destroy(&tp->cv_start);
    pthread_mutex_destroy(&tp->mu);
    free(tp->threads);
    free(tp);
}

int l3c_threadpool_n_threads(const l3c_threadpool *tp) { return tp ? tp->n_threads : 1; }

void l3c_threadpool_run(l3c_threadpool *tp, l3c_task_fn fn, void *arg) {
    if (!tp || tp->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->pending, tp->n_threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add_explicit(&tp->generation, 1, memory_order_release);
    pthread_cond_broadcast(&tp->cv_start);
    pthread_mutex_unlock(&tp->mu);

    fn(arg, 0, tp->n_threads);

    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load_explicit(&tp->pending, memory_order_acquire) == 0) return;
        cpu_relax();
    }
    pthread_mutex_lock(&tp->mu);
    while (atomic_load_explicit(&tp->pending, memory_order_acquire) != 0)
        pthread_cond_wait(&tp->cv_done, &tp->mu);
    pthread_mutex_unlock(&tp->mu);
}
