/*
 * comm_mpi.c -- comm.h over MPI (Open MPI from Debian; `make MPI=1`). MPI is joined only when a
 * launcher started the process (its environment names a rank): `llama3c` run directly stays a
 * single process and never calls MPI_Init, so the MPI build behaves like the plain one.
 *
 * Errors: MPI_COMM_WORLD gets MPI_ERRORS_RETURN, so a failed call comes back here and ends the job
 * with a message naming the rank, the operation and MPI's reason (l3c_comm_abort). A rank that is
 * killed is noticed by mpirun, which ends the others (its default); the collectives of the
 * survivors then fail or are interrupted, never wait forever.
 *
 * Waiting: Open MPI is asked to yield the core while a rank waits (mpi_yield_when_idle, unless the
 * launch sets it).
 *
 * Hung peers: a rank that stops without dying (SIGSTOP, a debugger, a livelock) would leave the
 * others waiting forever. A watchdog thread per rank watches the calls of the decoding thread:
 * one that has waited longer than the timeout (l3c_comm_set_timeout, --dist-timeout,
 * L3C_DIST_TIMEOUT; default DEFAULT_TIMEOUT_S) starts a roll call on a communicator of its own:
 * every peer's watchdog answers within roll_call_s() with its state (in an MPI call, or computing
 * and since when). A peer that does not answer is stopped or hung; one that has computed longer
 * than the timeout without reaching the collective is hung; if every rank waits, they disagree on
 * the next call. Each verdict ends the job naming the rank (MPI_Abort from the watchdog).
 * Open-ended waits (a follower waiting for the server's next request, the chat's next line:
 * l3c_comm_bcast_idle) only end the job for a peer that does not answer.
 *
 * Threads: MPI_THREAD_MULTIPLE is requested for the watchdog (unless L3C_DIST_TIMEOUT=0: no
 * watchdog thread, MPI_THREAD_SERIALIZED); otherwise the decoding thread is the only one that calls
 * in (the thread pool's workers never do). With only MPI_THREAD_SERIALIZED there is no watchdog (a
 * note says so).
 */
#include "dist/comm.h"

#include "util/util.h"

#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int g_init; /* 1: MPI_Init was called by us */
static int g_rank, g_size = 1;
static uint64_t g_sent;  /* payload bytes handed to MPI */
static double g_seconds; /* wall time inside MPI calls */

/* ---- the watchdog's view of the decoding thread (written by it, read by the watchdog) */
enum { DEFAULT_TIMEOUT_S = 300 };
#define WATCH_TICK_MS 50L
enum { TAG_PING = 1, TAG_PONG = 2 };
static _Atomic double g_timeout = DEFAULT_TIMEOUT_S; /* seconds; 0: no watchdog verdicts */
static _Atomic double g_call_t0; /* l3c_time_s() when the current call began; 0: not in MPI */
static _Atomic double g_out_t0;  /* when the last call ended (computing since) */
static _Atomic(const char *) g_call_name = "";
static atomic_int g_call_idle; /* the current call is an open-ended wait */
static atomic_int g_wd_stop;
static int g_wd_on; /* the watchdog thread runs */
static pthread_t g_wd_thread;
static MPI_Comm g_wd_comm = MPI_COMM_NULL; /* the roll calls' own communicator */

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int launched_by_mpi(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK",   "PMI_RANK", "PMI_SIZE",
                                 "MPI_LOCALNRANKS",      "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

/* mpirun ends the surviving ranks with SIGTERM when one fails: say so, naming this rank (the
 * message is formatted at init, as a handler may only write) */
static char g_term_msg[160];
static size_t g_term_len;

static void on_term(int sig) {
    ssize_t w = write(2, g_term_msg, g_term_len);
    (void)w;
    _exit(128 + sig);
}

/* ---- the watchdog (see the top). Its thread calls MPI on g_wd_comm only, and MPI_Abort. */

/* How long a roll call waits for the answers: the timeout, within 2..10 s (a live peer's watchdog
 * answers within a tick, 50 ms, but a loaded machine may not run it for a while). */
static double roll_call_s(void) {
    const double t = g_timeout;
    return t < 2 ? 2 : t > 10 ? 10 : t;
}

/* the answer to a ping: {1 if in an MPI call else 0, seconds in that state} */
static void my_state(double out[2]) {
    const double now = l3c_time_s(), t0 = g_call_t0;
    out[0] = t0 > 0;
    out[1] = now - (t0 > 0 ? t0 : (double)g_out_t0);
}

/* answers the pings that have arrived; *rq is the standing receive of one */
static void answer_pings(MPI_Request *rq, int *ping) {
    for (;;) {
        int done = 0;
        MPI_Status st;
        if (MPI_Test(rq, &done, &st) != MPI_SUCCESS || !done) return;
        double state[2];
        my_state(state);
        MPI_Send(state, 2, MPI_DOUBLE, st.MPI_SOURCE, TAG_PONG, g_wd_comm);
        MPI_Irecv(ping, 1, MPI_INT, MPI_ANY_SOURCE, TAG_PING, g_wd_comm, rq);
    }
}

/* Asks every peer for its state; ends the job when one is stopped or hung (or all wait), else
 * returns (progress is being made, or this is an open-ended wait and every peer is alive). */
static void roll_call(MPI_Request *rq, int *ping, double waited, const char *op, int idle) {
    const int n = g_size;
    double(*st)[2] = calloc((size_t)n, sizeof *st);
    MPI_Request *rr = calloc((size_t)n, sizeof *rr), *rs = calloc((size_t)n, sizeof *rs);
    int *got = calloc((size_t)n, sizeof *got);
    if (!st || !rr || !rs || !got) l3c_comm_abort("watchdog: out of memory");
    int one = 1, missing = n - 1;
    for (int r = 0; r < n; r++) {
        rr[r] = rs[r] = MPI_REQUEST_NULL;
        if (r == g_rank) continue;
        MPI_Irecv(st[r], 2, MPI_DOUBLE, r, TAG_PONG, g_wd_comm, &rr[r]);
        MPI_Isend(&one, 1, MPI_INT, r, TAG_PING, g_wd_comm, &rs[r]);
    }
    const double wait_s = roll_call_s(), t_end = l3c_time_s() + wait_s;
    while (missing > 0 && l3c_time_s() < t_end) {
        answer_pings(rq, ping);
        for (int r = 0; r < n; r++) {
            int done = 0;
            if (r == g_rank || got[r]) continue;
            MPI_Test(&rr[r], &done, MPI_STATUS_IGNORE);
            if (done) got[r] = 1, missing--;
        }
        if (missing > 0) nap_ms(WATCH_TICK_MS / 5);
    }
    const double timeout = g_timeout;
    char who[256] = "";
    size_t len = 0;
    for (int r = 0; r < n && len < sizeof who - 16; r++)
        if (r != g_rank && !got[r])
            len += (size_t)snprintf(who + len, sizeof who - len, "%s%d", len ? ", " : "", r);
    if (missing > 0)
        l3c_comm_abort("waited %.3g s in %s: rank %s did not answer the watchdog within %.0f s: "
                       "stopped or hung (--dist-timeout %g); ending the job",
                       waited, op, who, wait_s, timeout);
    int busy = -1,
        all_wait = 1; /* all_wait: every peer has waited in MPI longer than the timeout */
    for (int r = 0; r < n; r++) {
        if (r == g_rank) continue;
        if (!st[r][0] || st[r][1] <= timeout) all_wait = 0;
        if (!st[r][0] && st[r][1] > timeout && (busy < 0 || st[r][1] > st[busy][1])) busy = r;
    }
    if (!idle && busy >= 0)
        l3c_comm_abort("waited %.3g s in %s: rank %d has computed for %.1f s without reaching it: "
                       "hung (--dist-timeout %g); ending the job",
                       waited, op, busy, st[busy][1], timeout);
    if (!idle && all_wait)
        l3c_comm_abort("waited %.3g s in %s and every other rank waits in MPI too: the ranks "
                       "disagree on the next call (--dist-timeout %g); ending the job",
                       waited, op, timeout);
    for (int r = 0; r < n; r++)
        if (r != g_rank) MPI_Wait(&rs[r], MPI_STATUS_IGNORE);
    free(st);
    free(rr);
    free(rs);
    free(got);
}

static void *watchdog(void *arg) {
    (void)arg;
    int ping = 0;
    MPI_Request rq;
    MPI_Irecv(&ping, 1, MPI_INT, MPI_ANY_SOURCE, TAG_PING, g_wd_comm, &rq);
    double checked = 0; /* g_call_t0 of the call last found alive, and when */
    double next = 0;
    while (!atomic_load(&g_wd_stop)) {
        answer_pings(&rq, &ping);
        const double timeout = g_timeout, t0 = g_call_t0, now = l3c_time_s();
        if (t0 != checked) checked = t0, next = t0 + timeout;
        if (timeout > 0 && t0 > 0 && now > next) {
            roll_call(&rq, &ping, now - t0, g_call_name, g_call_idle);
            next = l3c_time_s() + timeout; /* alive: look again after another timeout */
        }
        nap_ms(WATCH_TICK_MS);
    }
    MPI_Cancel(&rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    return NULL;
}

static void watchdog_start(void) {
    if (MPI_Comm_dup(MPI_COMM_WORLD, &g_wd_comm) != MPI_SUCCESS) return;
    if (pthread_create(&g_wd_thread, NULL, watchdog, NULL) == 0) g_wd_on = 1;
}

/* after a barrier of every rank (l3c_comm_finalize): no roll call is under way towards a rank
 * whose watchdog has gone */
static void watchdog_stop(void) {
    if (!g_wd_on) return;
    atomic_store(&g_wd_stop, 1);
    pthread_join(g_wd_thread, NULL);
    g_wd_on = 0;
    MPI_Comm_free(&g_wd_comm);
}

int l3c_comm_init(int *argc, char ***argv) {
    if (g_init || !launched_by_mpi()) return 0;
    /* a rank waiting in a collective yields its core instead of spinning on it (Open MPI spins by
     * default): when ranks share cores with each other, their thread pools or other jobs, spinning
     * starves the rank being waited for (SmolLM2 tensor split on 2 busy cores: tg 2.1 -> 6.2
     * tok/s); an explicit --mca mpi_yield_when_idle wins */
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    /* L3C_DIST_TIMEOUT=0: no watchdog thread at all, and MPI_THREAD_SERIALIZED */
    const char *t = getenv("L3C_DIST_TIMEOUT");
    if (t && *t) {
        char *end;
        double v = strtod(t, &end);
        if (*end || !(v >= 0) || v > 1e9) {
            fprintf(stderr, "llama3c: L3C_DIST_TIMEOUT='%s': expected seconds >= 0 (0: never)\n",
                    t);
            return -1;
        }
        g_timeout = v;
    }
    const int want = g_timeout > 0 ? MPI_THREAD_MULTIPLE : MPI_THREAD_SERIALIZED;
    int provided = 0;
    if (MPI_Init_thread(argc, argv, want, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "llama3c: MPI_Init_thread failed\n");
        return -1;
    }
    g_init = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    int n =
        snprintf(g_term_msg, sizeof g_term_msg,
                 "llama3c: rank %d of %d: stopped by the MPI launcher (another rank failed or was "
                 "killed; see its message)\n",
                 g_rank, g_size);
    g_term_len = n > 0 ? L3C_MIN((size_t)n, sizeof g_term_msg - 1) : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    if (provided < MPI_THREAD_SERIALIZED && g_size > 1)
        l3c_comm_abort("this MPI provides thread level %d; llama3c needs MPI_THREAD_SERIALIZED",
                       provided);
    g_out_t0 = l3c_time_s();
    if (want == MPI_THREAD_MULTIPLE && g_size > 1 && provided < MPI_THREAD_MULTIPLE && g_rank == 0)
        fprintf(stderr, "llama3c: this MPI has no MPI_THREAD_MULTIPLE: a hung rank will not be "
                        "detected (no --dist-timeout)\n");
    if (g_size > 1 && provided >= MPI_THREAD_MULTIPLE) watchdog_start();
    return 0;
}

void l3c_comm_finalize(void) {
    if (!g_init) return;
    if (g_wd_on) l3c_comm_barrier(); /* watched: every rank gets here before any watchdog stops */
    watchdog_stop();
    MPI_Finalize();
    g_init = 0;
    g_rank = 0;
    g_size = 1;
}

const char *l3c_comm_transport(void) {
    return "mpi";
}
int l3c_comm_rank(void) {
    return g_rank;
}
int l3c_comm_size(void) {
    return g_size;
}
uint64_t l3c_comm_bytes_sent(void) {
    return g_sent;
}

void l3c_comm_abort(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "llama3c: rank %d of %d: %s\n", g_rank, g_size, msg);
    fflush(stderr);
    /* peers that fail at the same point (a refused split) print their own reason before
     * MPI_Abort has the launcher end them */
    if (g_init && g_size > 1) nap_ms(300);
    if (g_init) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* ends the job when an MPI call failed */
static void check_rc(int rc, const char *op) {
    if (rc == MPI_SUCCESS) return;
    char why[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, why, &len);
    l3c_comm_abort("%s failed: %s (a peer rank died or the ranks disagree)", op, why);
}

/* runs one MPI call, adding its wall time to g_seconds and showing it to the watchdog */
#define check_wait(call, op, idle)                                                                 \
    do {                                                                                           \
        const double t0_ = l3c_time_s();                                                           \
        g_call_name = (op);                                                                        \
        g_call_idle = (idle);                                                                      \
        g_call_t0 = t0_;                                                                           \
        const int rc_ = (call);                                                                    \
        const double t1_ = l3c_time_s();                                                           \
        g_call_t0 = 0;                                                                             \
        g_out_t0 = t1_;                                                                            \
        g_seconds += t1_ - t0_;                                                                    \
        check_rc(rc_, op);                                                                         \
    } while (0)
#define check(call, op) check_wait(call, op, 0)

static int count_of(int64_t n, const char *op) {
    if (n < 0 || n > INT_MAX)
        l3c_comm_abort("%s: %lld elements do not fit one MPI message", op, (long long)n);
    return (int)n;
}

void l3c_comm_allreduce_sum_f32(float *x, int64_t n) {
    if (g_size == 1) return;
    g_sent += (uint64_t)n * sizeof(float);
    check(MPI_Allreduce(MPI_IN_PLACE, x, count_of(n, "allreduce"), MPI_FLOAT, MPI_SUM,
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
}

void l3c_comm_gather_f32(const float *mine, float *all, const int64_t *counts, int root) {
    if (g_size == 1) {
        if (all != mine) memmove(all, mine, (size_t)counts[0] * sizeof(float));
        return;
    }
    int cnt[g_size], displ[g_size];
    int64_t off = 0;
    for (int r = 0; r < g_size; r++) {
        cnt[r] = count_of(counts[r], "gather");
        displ[r] = count_of(off, "gather");
        off += counts[r];
    }
    if (g_rank != root) g_sent += (uint64_t)counts[g_rank] * sizeof(float);
    check(
        MPI_Gatherv(mine, cnt[g_rank], MPI_FLOAT, all, cnt, displ, MPI_FLOAT, root, MPI_COMM_WORLD),
        "MPI_Gatherv");
}

void l3c_comm_allgather_u64(uint64_t v, uint64_t *all) {
    if (g_size == 1) {
        all[0] = v;
        return;
    }
    g_sent += sizeof v;
    check(MPI_Allgather(&v, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD),
          "MPI_Allgather");
}

static void bcast(void *buf, size_t bytes, int root, int idle) {
    if (g_size == 1) return;
    if (g_rank == root) g_sent += bytes;
    check_wait(MPI_Bcast(buf, count_of((int64_t)bytes, "bcast"), MPI_BYTE, root, MPI_COMM_WORLD),
               "MPI_Bcast", idle);
}

void l3c_comm_bcast(void *buf, size_t bytes, int root) {
    bcast(buf, bytes, root, 0);
}

void l3c_comm_bcast_idle(void *buf, size_t bytes, int root) {
    bcast(buf, bytes, root, 1);
}

/* the sends under way (l3c_comm_isend_f32), completed by l3c_comm_wait_sends */
static MPI_Request *g_sends;
static int g_n_sends, g_cap_sends;

void l3c_comm_isend_f32(const float *x, int64_t n, int to) {
    if (g_n_sends == g_cap_sends) {
        const int cap = g_cap_sends ? 2 * g_cap_sends : 16;
        MPI_Request *r = realloc(g_sends, (size_t)cap * sizeof *r);
        if (!r) l3c_comm_abort("MPI_Isend: out of memory for %d sends under way", cap);
        g_sends = r;
        g_cap_sends = cap;
    }
    g_sent += (uint64_t)n * sizeof(float);
    check(MPI_Isend(x, count_of(n, "send"), MPI_FLOAT, to, 0, MPI_COMM_WORLD, &g_sends[g_n_sends]),
          "MPI_Isend");
    g_n_sends++;
}

void l3c_comm_wait_sends(void) {
    if (!g_n_sends) return;
    check(MPI_Waitall(g_n_sends, g_sends, MPI_STATUSES_IGNORE), "MPI_Waitall");
    g_n_sends = 0;
}

void l3c_comm_recv_f32(float *x, int64_t n, int from) {
    MPI_Status st;
    check(MPI_Recv(x, count_of(n, "recv"), MPI_FLOAT, from, 0, MPI_COMM_WORLD, &st), "MPI_Recv");
    int got = 0;
    MPI_Get_count(&st, MPI_FLOAT, &got);
    if (got != n)
        l3c_comm_abort("MPI_Recv: rank %d sent %d floats where %lld were expected: the ranks "
                       "split the batch differently (the same --ubatch on every rank?)",
                       from, got, (long long)n);
}

int64_t l3c_comm_max_i64(int64_t v) {
    if (g_size == 1) return v;
    int64_t out = v;
    g_sent += sizeof v;
    check(MPI_Allreduce(&v, &out, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
    return out;
}

void l3c_comm_barrier(void) {
    if (g_size > 1) check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
}

double l3c_comm_seconds(void) {
    return g_seconds;
}

void l3c_comm_set_timeout(double seconds) {
    g_timeout = seconds > 0 ? seconds : 0;
}
