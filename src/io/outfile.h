/*
 * outfile.h -- output files that appear only when complete and never replace an input.
 *
 *   l3c_outfile o;
 *   if ((st = l3c_outfile_open(&o, out_path, inputs, n_inputs, "convert"))) return st;
 *   ... fwrite(..., o.f) ...
 *   st = ok ? l3c_outfile_commit(&o) : (l3c_outfile_abort(&o), st);
 *
 * open refuses an output that is one of the inputs (same device and inode, so links and other
 * spellings of the path are caught; an input folder stands for every file directly in it), then
 * creates a unique temporary file ".NAME.XXXXXX" in the output's folder (so the final rename
 * stays on one file system), with the mode an ordinary create would give (or the replaced
 * file's). commit flushes, fsyncs, renames it over out_path and fsyncs the folder; abort closes
 * and removes it. Until commit or abort the temporary name is listed in a fixed, lock-free
 * registry that l3c_remove_partial_outputs() (public, async-signal-safe) unlinks from a signal
 * handler, so SIGINT / SIGTERM leave nothing behind either.
 */
#ifndef L3C_OUTFILE_H
#define L3C_OUTFILE_H

#include "util/util.h"

#include <stdio.h>

typedef struct l3c_outfile {
    FILE *f;    /* open for writing ("wb") */
    char *tmp;  /* the temporary path */
    char *path; /* the final path */
    int slot;   /* registry slot, -1 when none */
} l3c_outfile;

/* 0 when out_path is not the same file as in_path (or a file directly in the folder in_path);
 * L3C_ERR_INVALID_ARG with "what: OUT is the input IN" otherwise. A missing out_path is fine. */
l3c_status l3c_check_not_input(const char *out_path, const char *in_path, const char *what);

l3c_status l3c_outfile_open(l3c_outfile *o, const char *out_path, const char *const *inputs,
                            int n_inputs, const char *what);
l3c_status l3c_outfile_commit(l3c_outfile *o);
void l3c_outfile_abort(l3c_outfile *o);

#endif /* L3C_OUTFILE_H */
