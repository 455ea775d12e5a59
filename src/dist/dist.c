/*
 * dist.c -- the public l3c_dist_* calls (llama3c.h) on comm.h.
 */
#include "dist/comm.h"

#include "util/util.h"

l3c_status l3c_dist_init(int *argc, char ***argv) {
    if (l3c_comm_init(argc, argv) != 0) return l3c_fail(L3C_ERR_IO, "MPI could not start");
    return L3C_OK;
}

void l3c_dist_finalize(void) {
    l3c_comm_finalize();
}
int l3c_dist_rank(void) {
    return l3c_comm_rank();
}
int l3c_dist_size(void) {
    return l3c_comm_size();
}
const char *l3c_dist_transport(void) {
    return l3c_comm_transport();
}
void l3c_dist_bcast(void *bytes, size_t n) {
    l3c_comm_bcast_idle(bytes, n, 0); /* rank 0 may read input first */
}
void l3c_dist_set_timeout(double seconds) {
    l3c_comm_set_timeout(seconds);
}

static int32_t g_ubatch; /* 0: automatic */

void l3c_comm_set_ubatch(int32_t rows) {
    g_ubatch = rows > 0 ? rows : 0;
}
int32_t l3c_comm_ubatch(void) {
    return g_ubatch;
}
void l3c_dist_set_ubatch(int32_t rows) {
    l3c_comm_set_ubatch(rows);
}
uint64_t l3c_dist_bytes_sent(void) {
    return l3c_comm_bytes_sent();
}

void l3c_dist_abort(const char *why) {
    if (l3c_comm_size() > 1) l3c_comm_abort("%s", why ? why : "stopping the job");
}

double l3c_dist_comm_seconds(void) {
    return l3c_comm_seconds();
}
