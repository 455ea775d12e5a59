/*
 * comm_none.c -- comm.h for a build without MPI: one process, rank 0 of 1. Collectives over one
 * rank are copies or nothing; point to point has no peer and is a programmer error.
 */
#include "dist/comm.h"

#include "util/util.h"

#include <string.h>

int l3c_comm_init(int *argc, char ***argv) {
    return 0;
}
void l3c_comm_finalize(void) {}
const char *l3c_comm_transport(void) {
    return "none";
}
int l3c_comm_rank(void) {
    return 0;
}
int l3c_comm_size(void) {
    return 1;
}

void l3c_comm_allreduce_sum_f32(float *x, int64_t n) {}

void l3c_comm_gather_f32(const float *mine, float *all, const int64_t *counts, int root) {
    if (all != mine) memmove(all, mine, (size_t)counts[0] * sizeof(float));
}

void l3c_comm_allgather_u64(uint64_t v, uint64_t *all) {
    all[0] = v;
}
void l3c_comm_bcast(void *buf, size_t bytes, int root) {}
void l3c_comm_bcast_idle(void *buf, size_t bytes, int root) {}
void l3c_comm_set_timeout(double seconds) {}

void l3c_comm_isend_f32(const float *x, int64_t n, int to) {
    l3c_comm_abort("send to rank %d in a single-process build", to);
}
void l3c_comm_wait_sends(void) {}

void l3c_comm_recv_f32(float *x, int64_t n, int from) {
    l3c_comm_abort("receive from rank %d in a single-process build", from);
}

int64_t l3c_comm_max_i64(int64_t v) {
    return v;
}
void l3c_comm_barrier(void) {}
uint64_t l3c_comm_bytes_sent(void) {
    return 0;
}

void l3c_comm_abort(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "llama3c: rank 0 of 1: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

double l3c_comm_seconds(void) {
    return 0.0;
}
