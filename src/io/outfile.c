/*
 * outfile.c -- atomic output files (outfile.h). The registry of temporary names is a fixed array
 * of slots claimed with an atomic compare-and-swap, so a signal handler can walk it with no lock:
 * a slot's name is complete before its state becomes LIVE and is not freed until it is FREE.
 */
#include "io/outfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_SLOTS 16
enum { SLOT_FREE, SLOT_BUSY, SLOT_LIVE };
static _Atomic int slot_state[N_SLOTS];
static char slot_path[N_SLOTS][PATH_MAX];

static int claim_slot(const char *tmp) {
    if (strlen(tmp) >= PATH_MAX) return -1;
    for (int i = 0; i < N_SLOTS; i++) {
        int expect = SLOT_FREE;
        if (atomic_compare_exchange_strong(&slot_state[i], &expect, SLOT_BUSY)) {
            memcpy(slot_path[i], tmp, strlen(tmp) + 1);
            atomic_store(&slot_state[i], SLOT_LIVE);
            return i;
        }
    }
    return -1; /* more than N_SLOTS outputs at once: still atomic, only not removed on a signal */
}

static void release_slot(int i) {
    if (i >= 0) atomic_store(&slot_state[i], SLOT_FREE);
}

void l3c_remove_partial_outputs(void) {
    for (int i = 0; i < N_SLOTS; i++)
        if (atomic_load(&slot_state[i]) == SLOT_LIVE) unlink(slot_path[i]);
}

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

l3c_status l3c_check_not_input(const char *out_path, const char *in_path, const char *what) {
    struct stat so, si;
    if (!out_path || !in_path || stat(out_path, &so) != 0 || stat(in_path, &si) != 0) return L3C_OK;
    if (same_file(&so, &si))
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "%s: the output %s is the input %s; write to another file", what, out_path,
                        in_path);
    if (!S_ISDIR(si.st_mode)) return L3C_OK;
    DIR *d = opendir(in_path);
    if (!d) return L3C_OK;
    l3c_status st = L3C_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        struct stat sf;
        if (fstatat(dirfd(d), e->d_name, &sf, 0) == 0 && S_ISREG(sf.st_mode) && same_file(&so, &sf))
            st = l3c_fail(L3C_ERR_INVALID_ARG,
                          "%s: the output %s is the input %s/%s; write to another file", what,
                          out_path, in_path, e->d_name);
    }
    closedir(d);
    return st;
}

/* The folder part of path ("." when none) into dir[cap]. */
static void dir_of(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, cap, ".");
    else if (slash == path)
        snprintf(dir, cap, "/");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

l3c_status l3c_outfile_open(l3c_outfile *o, const char *out_path, const char *const *inputs,
                            int n_inputs, const char *what) {
    memset(o, 0, sizeof *o);
    o->slot = -1;
    l3c_status st;
    for (int k = 0; k < n_inputs; k++)
        if (inputs[k] && (st = l3c_check_not_input(out_path, inputs[k], what))) return st;
    struct stat so;
    if (stat(out_path, &so) == 0 && S_ISDIR(so.st_mode))
        return l3c_fail(L3C_ERR_INVALID_ARG, "%s: the output %s is a folder", what, out_path);
    const char *slash = strrchr(out_path, '/');
    const size_t dlen = slash ? (size_t)(slash - out_path + 1) : 0;
    const size_t n = strlen(out_path) + 16;
    if (!(o->tmp = l3c_malloc(n)) || !(o->path = l3c_strdup(out_path))) {
        free(o->tmp);
        o->tmp = NULL;
        return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", what);
    }
    snprintf(o->tmp, n, "%.*s.%s.XXXXXX", (int)dlen, out_path, out_path + dlen);
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        st = l3c_fail(L3C_ERR_IO, "%s: cannot create a file beside %s: %s", what, out_path,
                      strerror(errno));
        goto fail;
    }
    o->slot = claim_slot(o->tmp);
    mode_t mode;
    if (stat(out_path, &so) == 0) {
        mode = so.st_mode & 07777;
    } else {
        mode_t um = umask(0); /* only way to read it; set straight back */
        umask(um);
        mode = 0666 & ~um;
    }
    if (fchmod(fd, mode) != 0 || !(o->f = fdopen(fd, "wb"))) {
        st = l3c_fail(L3C_ERR_IO, "%s: cannot open %s: %s", what, o->tmp, strerror(errno));
        close(fd);
        unlink(o->tmp);
        goto fail;
    }
    return L3C_OK;
fail:
    release_slot(o->slot);
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
    o->slot = -1;
    return st;
}

l3c_status l3c_outfile_commit(l3c_outfile *o) {
    l3c_status st = L3C_OK;
    int err = 0;
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0) err = errno;
    if (fclose(o->f) != 0 && !err) err = errno;
    o->f = NULL;
    if (err) {
        st = l3c_fail(L3C_ERR_IO, "writing %s failed: %s", o->tmp, strerror(err));
    } else if (rename(o->tmp, o->path) != 0) {
        st = l3c_fail(L3C_ERR_IO, "cannot rename %s to %s: %s", o->tmp, o->path, strerror(errno));
    } else {
        char dir[PATH_MAX];
        dir_of(o->path, dir, sizeof dir);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) { /* the rename itself reaches the disk */
            fsync(dfd);
            close(dfd);
        }
    }
    if (st) unlink(o->tmp);
    release_slot(o->slot);
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
    o->slot = -1;
    return st;
}

void l3c_outfile_abort(l3c_outfile *o) {
    if (!o->tmp) return; /* never opened, or already committed / aborted */
    if (o->f) fclose(o->f);
    if (o->tmp) unlink(o->tmp);
    release_slot(o->slot);
    free(o->tmp);
    free(o->path);
    memset(o, 0, sizeof *o);
    o->slot = -1;
}

/* ---------------------------------------------------------------- public wrapper */

struct l3c_output {
    l3c_outfile of;
};

l3c_status l3c_output_open(const char *path, const char *const *inputs, int n_inputs,
                           l3c_output **out, FILE **f) {
    if (!path || !out || !f || n_inputs < 0 || (n_inputs && !inputs))
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_output_open: bad argument");
    *out = NULL;
    *f = NULL;
    l3c_output *o = l3c_calloc(1, sizeof *o);
    if (!o) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
    l3c_status st = l3c_outfile_open(&o->of, path, inputs, n_inputs, "output");
    if (st) {
        free(o);
        return st;
    }
    *out = o;
    *f = o->of.f;
    return L3C_OK;
}

const char *l3c_output_tmp_path(const l3c_output *o) {
    return o ? o->of.tmp : NULL;
}

l3c_status l3c_output_commit(l3c_output *o) {
    if (!o) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_output_commit: NULL");
    l3c_status st = l3c_outfile_commit(&o->of);
    free(o);
    return st;
}

void l3c_output_abort(l3c_output *o) {
    if (!o) return;
    l3c_outfile_abort(&o->of);
    free(o);
}
