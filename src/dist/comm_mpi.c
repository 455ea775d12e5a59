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
 * Threads: requested MPI_THREAD_SERIALIZED: one thread at a time calls in (the decoding thread;
 * the thread pool's workers never do).
 */
#include "dist/comm.h"

#include "util/util.h"

#include <limits.h>
#include <mpi.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static int g_init; /* 1: MPI_Init was called by us */
static int g_rank, g_size = 1;
static uint64_t g_sent;  /* payload bytes handed to MPI */
static double g_seconds; /* wall time inside MPI calls */

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

int l3c_comm_init(int *argc, char ***argv) {
    if (g_init || !launched_by_mpi()) return 0;
    /* a rank waiting in a collective yields its core instead of spinning on it (Open MPI spins by
     * default): when ranks share cores with each other, their thread pools or other jobs, spinning
     * starves the rank being waited for (SmolLM2 tensor split on 2 busy cores: tg 2.1 -> 6.2
     * tok/s); an explicit --mca mpi_yield_when_idle wins */
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
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
    return 0;
}

void l3c_comm_finalize(void) {
    if (!g_init) return;
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

/* runs one MPI call, adding its wall time to g_seconds */
#define check(call, op)                                                                            \
    do {                                                                                           \
        const double t0_ = l3c_time_s();                                                           \
        const int rc_ = (call);                                                                    \
        g_seconds += l3c_time_s() - t0_;                                                           \
        check_rc(rc_, op);                                                                         \
    } while (0)

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

void l3c_comm_allgather_f32(const float *mine, float *all, const int64_t *counts) {
    if (g_size == 1) {
        if (all != mine) memmove(all, mine, (size_t)counts[0] * sizeof(float));
        return;
    }
    int cnt[g_size], displ[g_size];
    int64_t off = 0;
    for (int r = 0; r < g_size; r++) {
        cnt[r] = count_of(counts[r], "allgather");
        displ[r] = count_of(off, "allgather");
        off += counts[r];
    }
    g_sent += (uint64_t)counts[g_rank] * sizeof(float);
    check(MPI_Allgatherv(mine, cnt[g_rank], MPI_FLOAT, all, cnt, displ, MPI_FLOAT, MPI_COMM_WORLD),
          "MPI_Allgatherv");
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

void l3c_comm_bcast(void *buf, size_t bytes, int root) {
    if (g_size == 1) return;
    if (g_rank == root) g_sent += bytes;
    check(MPI_Bcast(buf, count_of((int64_t)bytes, "bcast"), MPI_BYTE, root, MPI_COMM_WORLD),
          "MPI_Bcast");
}

void l3c_comm_send_f32(const float *x, int64_t n, int to) {
    g_sent += (uint64_t)n * sizeof(float);
    check(MPI_Send(x, count_of(n, "send"), MPI_FLOAT, to, 0, MPI_COMM_WORLD), "MPI_Send");
}

void l3c_comm_recv_f32(float *x, int64_t n, int from) {
    check(MPI_Recv(x, count_of(n, "recv"), MPI_FLOAT, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
          "MPI_Recv");
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
