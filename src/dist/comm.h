/*
 * comm.h -- the message passing the distributed splits need (docs/DISTRIBUTED.md), as one tiny
 * interface with two implementations: comm_mpi.c over MPI (built with `make MPI=1`) and
 * comm_none.c for one process (plain `make`). Nothing else in the library names MPI.
 *
 * Ranks are numbered 0 .. size-1; rank 0 is the one that reads input and writes output. Every
 * collective must be called by every rank in the same order with the same sizes.
 *
 * Errors: the operations cannot fail towards the caller. A failed transfer means a peer died or
 * the ranks disagree, and no rank can go on: l3c_comm_abort prints "llama3c: rank R of N: ..." and
 * ends every rank with a non-zero status (MPI_Abort). This is the one place the library exits.
 */
#ifndef L3C_COMM_H
#define L3C_COMM_H

#include <stddef.h>
#include <stdint.h>

/* Joins the MPI job when the process was started by an MPI launcher (mpirun / srun sets its
 * environment), else stays a single process of size 1. Idempotent. 0 or -1 (message printed). */
int l3c_comm_init(int *argc, char ***argv);
void l3c_comm_finalize(void);
/* "mpi" or "none" */
const char *l3c_comm_transport(void);
int l3c_comm_rank(void);
int l3c_comm_size(void);

/* x[n] = the sum over ranks of every rank's x[n] (identical on every rank) */
void l3c_comm_allreduce_sum_f32(float *x, int64_t n);
/* all[sum counts] = the ranks' mine[counts[r]] concatenated in rank order, on rank root only
 * (all is not touched on the others and may be NULL there) */
void l3c_comm_gather_f32(const float *mine, float *all, const int64_t *counts, int root);
/* all[size] = every rank's v */
void l3c_comm_allgather_u64(uint64_t v, uint64_t *all);
/* buf[bytes] of rank root to every rank */
void l3c_comm_bcast(void *buf, size_t bytes, int root);
/* the same, for an open-ended wait (the root waits for input first: the server's next request,
 * the chat's next line): the watchdog ends the job only for a peer that stopped answering */
void l3c_comm_bcast_idle(void *buf, size_t bytes, int root);
/* point to point (pipeline stages). The send does not wait: x[n] must stay as it is until
 * l3c_comm_wait_sends, which waits for every send this rank has started. The receive waits for
 * exactly n floats (a message of another size ends the job). */
void l3c_comm_isend_f32(const float *x, int64_t n, int to);
void l3c_comm_wait_sends(void);
void l3c_comm_recv_f32(float *x, int64_t n, int from);
/* max over ranks of v (identical on every rank) */
int64_t l3c_comm_max_i64(int64_t v);
void l3c_comm_barrier(void);

/* Payload bytes this rank has handed to the transport since start (for the figures of
 * docs/DISTRIBUTED.md): allreduce n*4, gather its own part (not on the root), bcast from the
 * root, send n*4. */
uint64_t l3c_comm_bytes_sent(void);
/* Wall seconds this rank has spent inside MPI calls (transfers and waiting for peers). */
double l3c_comm_seconds(void);

/* A call that has waited `seconds` for its peers makes the watchdog check them (comm_mpi.c): a
 * rank that is stopped or hung ends the job with a message naming it. 0: never. Default 300,
 * or $L3C_DIST_TIMEOUT. */
void l3c_comm_set_timeout(double seconds);

/* Rows per pipeline micro-batch of a layer split (l3c_dist_set_ubatch; kept in dist.c, the same
 * in both builds); 0: automatic. */
void l3c_comm_set_ubatch(int32_t rows);
int32_t l3c_comm_ubatch(void);

/* Prints "llama3c: rank R of N: <message>" on stderr and ends every rank with status 1. */
_Noreturn void l3c_comm_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* L3C_COMM_H */
