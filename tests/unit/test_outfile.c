/*
 * test_outfile.c -- output files (src/io/outfile.c, public l3c_output_*):
 *  - an output that is an input (same path, another spelling, a symlink, a hard link, a file in an
 *    input folder) is refused with L3C_ERR_INVALID_ARG and the input is untouched;
 *  - the file appears only at commit, with the mode an ordinary create gives (umask) or the mode
 *    of the file it replaces; abort and a failed commit leave nothing;
 *  - l3c_remove_partial_outputs() unlinks every open temporary file (what the CLI's signal
 *    handler calls) and nothing else;
 *  - every allocation failure of open returns L3C_ERR_NOMEM and leaves no file.
 */
#include "check.h"
#include "io/outfile.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/l3c_outfile_XXXXXX";

static const char *at(const char *name) {
    static char buf[4][300];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void put(const char *name, const char *text) {
    FILE *f = fopen(at(name), "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int n_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.' || (e->d_name[1] && strcmp(e->d_name, ".."));
    if (d) closedir(d);
    return n;
}

static int content_is(const char *name, const char *text) {
    char buf[64] = "";
    FILE *f = fopen(at(name), "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return !strcmp(buf, text);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    put("in.bin", "input");
    CHECK(symlink(at("in.bin"), at("sym.bin")) == 0);
    CHECK(link(at("in.bin"), at("hard.bin")) == 0);
    CHECK(mkdir(at("folder"), 0777) == 0);
    put("folder/config.json", "{}");
    const char *in = at("in.bin");
    char other[300];
    snprintf(other, sizeof other, "%s/./folder/../in.bin", dir);

    /* the input, by any name, is refused and stays as it was */
    const char *same[] = {at("in.bin"), at("sym.bin"), at("hard.bin"), other};
    for (int k = 0; k < 4; k++) {
        l3c_output *o = NULL;
        FILE *f = NULL;
        CHECK_MSG(l3c_output_open(same[k], &in, 1, &o, &f) == L3C_ERR_INVALID_ARG && !o && !f, "%s",
                  same[k]);
        CHECK(strstr(l3c_last_error(), "is the input") != NULL);
    }
    const char *folder = at("folder");
    l3c_output *o = NULL;
    FILE *f = NULL;
    CHECK(l3c_output_open(at("folder/config.json"), &folder, 1, &o, &f) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_output_open(folder, NULL, 0, &o, &f) ==
          L3C_ERR_INVALID_ARG); /* a folder is no file */
    CHECK(content_is("in.bin", "input") && n_files() == 4);

    /* appears only at commit; mode from the umask */
    mode_t um = umask(022);
    CHECK(l3c_output_open(at("out.txt"), &in, 1, &o, &f) == L3C_OK && o && f);
    fputs("new", f);
    CHECK(access(at("out.txt"), F_OK) != 0 && n_files() == 5); /* only the temporary file */
    CHECK(l3c_output_commit(o) == L3C_OK && content_is("out.txt", "new") && n_files() == 5);
    struct stat st;
    CHECK(stat(at("out.txt"), &st) == 0 && (st.st_mode & 0777) == 0644);
    /* replacing a file keeps its mode */
    CHECK(chmod(at("out.txt"), 0600) == 0);
    CHECK(l3c_output_open(at("out.txt"), NULL, 0, &o, &f) == L3C_OK);
    fputs("newer", f);
    CHECK(l3c_output_commit(o) == L3C_OK && content_is("out.txt", "newer"));
    CHECK(stat(at("out.txt"), &st) == 0 && (st.st_mode & 0777) == 0600);
    umask(um);

    /* abort leaves the old file and nothing else */
    CHECK(l3c_output_open(at("out.txt"), NULL, 0, &o, &f) == L3C_OK);
    fputs("lost", f);
    l3c_output_abort(o);
    l3c_output_abort(NULL);
    CHECK(content_is("out.txt", "newer") && n_files() == 5);

    /* a commit that cannot rename (the destination became a folder) fails and cleans up */
    CHECK(l3c_output_open(at("gone.txt"), NULL, 0, &o, &f) == L3C_OK);
    CHECK(mkdir(at("gone.txt"), 0777) == 0);
    CHECK(l3c_output_commit(o) == L3C_ERR_IO && n_files() == 6);
    CHECK(rmdir(at("gone.txt")) == 0);

    /* the signal handler's call removes the open temporary files, nothing else */
    l3c_output *a = NULL, *b = NULL;
    FILE *fa, *fb;
    CHECK(l3c_output_open(at("a.bin"), NULL, 0, &a, &fa) == L3C_OK);
    CHECK(l3c_output_open(at("b.bin"), NULL, 0, &b, &fb) == L3C_OK);
    CHECK(n_files() == 7);
    l3c_remove_partial_outputs();
    CHECK(n_files() == 5 && content_is("out.txt", "newer") && content_is("in.bin", "input"));
    l3c_output_abort(a);
    l3c_output_abort(b);

    /* allocation failures: NOMEM, no file */
    l3c_status s = L3C_ERR_NOMEM;
    int n = 0;
    for (; s == L3C_ERR_NOMEM && n < 100; n++) {
        l3c_set_alloc_fail_after(n);
        s = l3c_output_open(at("oom.bin"), NULL, 0, &o, &f);
        l3c_set_alloc_fail_after(-1);
        if (s) CHECK_MSG(s == L3C_ERR_NOMEM && n_files() == 5, "allocation %d: status %d", n, s);
    }
    CHECK(s == L3C_OK && n > 1);
    l3c_output_abort(o);
    CHECK(n_files() == 5);

    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return CHECK_DONE("test_outfile");
}
