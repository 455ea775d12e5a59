/*
 * cmd_rag.c -- `llama3c rag`: retrieval-augmented generation over a local folder (docs/RAG.md).
 *
 *   llama3c rag index -m MODEL --db DB [--chunk N] [--overlap N] DIR|FILE...
 *   llama3c rag query -m MODEL --db DB [-k 5] [--mode hybrid|vector|bm25] [--json] "question"
 *   llama3c rag ask   -m MODEL --db DB [-k 4] [--mode M] [generation options] "question"
 *   llama3c rag chunk -m MODEL [--chunk N] [--overlap N] FILE      (the chunker's ranges, JSON)
 *
 * index walks the folders (sorted, hidden entries skipped) for .md .markdown .txt .text files and
 * .pdf files (text from `pdftotext`, poppler-utils, when installed; otherwise skipped with a
 * warning), chunks each by tokens, embeds each chunk and stores a file's chunks in one
 * transaction. A file whose size and mtime, or else sha256, match the index is skipped, so a
 * re-run (also after kill -9) only does what is missing; files gone from the folders are dropped,
 * files that are there but were skipped this time (too large, extractor missing or failing) are
 * kept as indexed before. The walk never loops and stays inside the given folders unless
 * --follow-symlinks (walk()); files are stored by canonical path.
 * Built on the public header and apps/rag/ only.
 */
#include "cli.h"
#include "common.h"

#include "../rag/rag.h"

#include <jansson.h>

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const CMD = "rag";

#define DEFAULT_CHUNK           128
#define DEFAULT_OVERLAP         32
#define EMBED_CTX               512 /* tokens embedded per chunk / query at most (chunks are far shorter) */
#define DEFAULT_MAX_FILE_BYTES  (16LL << 20) /* larger files are skipped (reported) */
#define DEFAULT_EXTRACT_TIMEOUT 60.0         /* seconds pdftotext may run on one file */

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: llama3c rag index -m MODEL --db DB [--chunk N] [--overlap N] DIR|FILE...\n"
        "       llama3c rag query -m MODEL --db DB [-k K] [--mode hybrid|vector|bm25] [--json] "
        "QUESTION\n"
        "       llama3c rag ask   -m MODEL --db DB [-k K] [--mode M] [generation options] "
        "QUESTION\n"
        "       llama3c rag chunk -m MODEL [--chunk N] [--overlap N] FILE\n"
        "\n"
        "index: chunks .md/.markdown/.txt/.text files (and .pdf through pdftotext) of the folders "
        "by\n"
        "  tokens, embeds every chunk with the model and stores text, ranges and vectors in the "
        "SQLite\n"
        "  file DB; re-running it only indexes new or changed files (safe after an interruption).\n"
        "query: the K best chunks for QUESTION with file:lines and scores.\n"
        "ask: answers QUESTION from the K best chunks, cited as [n], then lists the sources.\n"
        "chunk: prints the chunk ranges of one file as JSON (for tests and tuning).\n"
        "\n"
        "options:\n"
        "  --db FILE               the index (SQLite)\n"
        "  --chunk N               tokens per chunk (default %d; index and chunk only; fixed per "
        "index)\n"
        "  --overlap N             tokens shared by consecutive chunks, < N/2 (default %d)\n"
        "  -k N                    chunks to retrieve (default 5 for query, 4 for ask)\n"
        "  --mode M                hybrid (default): BM25 and cosine scores, each scaled to [0, "
        "1]\n"
        "                          over the candidates, mixed alpha : 1 - alpha; vector: cosine "
        "of\n"
        "                          the embeddings only; bm25: SQLite FTS5 only\n"
        "  --alpha A               hybrid: weight of BM25 in [0, 1] (default %.1f)\n"
        "  --min-score S           ask: below this retrieval confidence (the best BM25 score of\n"
        "                          the chunks) answer \"I don't know\" without the model\n"
        "                          (default 3.0 in hybrid / bm25 mode; 0: always ask the model)\n"
        "  --follow-symlinks       index: follow symbolic links below the folders (default: skip\n"
        "                          them; a folder is walked once however it is reached)\n"
        "  --max-file-bytes N      index: skip files (and PDF text) larger than N bytes; suffixes\n"
        "                          K, M, G (default 16M)\n"
        "  --extract-timeout S     index: seconds pdftotext may spend on one PDF (default 60)\n"
        "  --json                  query: print JSON\n"
        "  --show-prompt           ask: print the prompt given to the model on stderr\n",
        DEFAULT_CHUNK, DEFAULT_OVERLAP, RAG_HYBRID_ALPHA);
    cli_opts tmp;
    cli_opts_init(&tmp, 256, 0.0f, 1.0f);
    cli_opts_help(f, &tmp);
}

typedef struct rag_args {
    cli_opts o;
    const char *db;
    int chunk, overlap, chunk_set, k, json, show_prompt, follow_symlinks;
    long long max_file_bytes;
    float extract_timeout;
    rag_mode mode;
    float alpha;
    float min_score; /* ask: abstain below this retrieval confidence (rag_confidence) */
    int min_score_set;
    char **pos; /* positional arguments */
    int n_pos;
} rag_args;

static int parse(rag_args *a, int argc, char **argv, int default_k) {
    memset(a, 0, sizeof *a);
    cli_opts_init(&a->o, 256, 0.0f, 1.0f);
    a->chunk = DEFAULT_CHUNK, a->overlap = DEFAULT_OVERLAP, a->k = default_k, a->mode = RAG_HYBRID,
    a->alpha = (float)RAG_HYBRID_ALPHA;
    a->max_file_bytes = DEFAULT_MAX_FILE_BYTES, a->extract_timeout = (float)DEFAULT_EXTRACT_TIMEOUT;
    a->pos = calloc((size_t)argc + 1, sizeof *a->pos);
    if (!a->pos) return CLI_ERR;
    long l;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v;
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return -1;
        }
        int r = cli_opts_parse(CMD, &a->o, argc, argv, &i);
        if (r < 0) return CLI_USAGE;
        if (r > 0) continue;
        if (!strcmp(s, "--json"))
            a->json = 1;
        else if (!strcmp(s, "--show-prompt"))
            a->show_prompt = 1;
        else if (!strcmp(s, "--follow-symlinks"))
            a->follow_symlinks = 1;
        else if (!strcmp(s, "--max-file-bytes")) {
            if (!(v = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
            char *end = NULL;
            errno = 0;
            long long x = strtoll(v, &end, 10);
            int sh = !*end                                    ? 0
                     : !strcmp(end, "K") || !strcmp(end, "k") ? 10
                     : !strcmp(end, "M")                      ? 20
                     : !strcmp(end, "G")                      ? 30
                                                              : -1;
            if (errno || end == v || sh < 0 || x < 1 || x > (1LL << (62 - sh)))
                return cli_usage_error(
                    CMD, "--max-file-bytes: '%s' is not a size (bytes, or N K/M/G)", v);
            a->max_file_bytes = x << sh;
        } else if (!strcmp(s, "--extract-timeout")) {
            if (!(v = cli_value(CMD, argc, argv, &i)) ||
                cli_parse_float(CMD, s, v, 0.1, 86400.0, &a->extract_timeout))
                return CLI_USAGE;
        } else if (!strcmp(s, "--db")) {
            if (!(a->db = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(s, "--chunk") || !strcmp(s, "--overlap") || !strcmp(s, "-k")) {
            if (!(v = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
            if (cli_parse_long(CMD, s, v, s[1] == 'k' ? 1 : 0, s[1] == 'k' ? 100 : 4096, &l))
                return CLI_USAGE;
            if (!strcmp(s, "--chunk"))
                a->chunk = (int)l, a->chunk_set = 1;
            else if (!strcmp(s, "--overlap"))
                a->overlap = (int)l, a->chunk_set = 1;
            else
                a->k = (int)l;
        } else if (!strcmp(s, "--min-score")) {
            if (!(v = cli_value(CMD, argc, argv, &i)) ||
                cli_parse_float(CMD, s, v, 0.0, 1e6, &a->min_score))
                return CLI_USAGE;
            a->min_score_set = 1;
        } else if (!strcmp(s, "--alpha")) {
            if (!(v = cli_value(CMD, argc, argv, &i)) ||
                cli_parse_float(CMD, s, v, 0.0, 1.0, &a->alpha))
                return CLI_USAGE;
        } else if (!strcmp(s, "--mode")) {
            if (!(v = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
            if (rag_mode_parse(v, &a->mode))
                return cli_usage_error(CMD, "--mode: '%s' is not one of hybrid, vector, bm25", v);
        } else if (s[0] == '-' && s[1]) {
            return cli_usage_error(CMD, "unknown option '%s'", s);
        } else {
            a->pos[a->n_pos++] = argv[i];
        }
    }
    if (a->chunk < 8 || a->overlap >= a->chunk / 2)
        return cli_usage_error(
            CMD,
            "--chunk %d --overlap %d: need a chunk of at least 8 tokens and an overlap "
            "below half of it",
            a->chunk, a->overlap);
    if (!a->min_score_set) /* vector mode has no BM25 score to judge by: no abstention */
        a->min_score = a->mode == RAG_VECTOR ? 0.0f : (float)RAG_MIN_SCORE;
    else if (a->mode == RAG_VECTOR && a->min_score > 0)
        return cli_usage_error(CMD, "--min-score is a BM25 score: it needs --mode hybrid or bm25 "
                                    "(or --min-score 0)");
    if (cli_opts_finish(CMD, &a->o)) return CLI_USAGE;
    return 0;
}

static int rag_error(const char *err) {
    fprintf(stderr, "llama3c %s: %s\n", CMD, err);
    return CLI_ERR;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---------------------------------------------------------------- files */

static const char *ext_of(const char *p) {
    const char *b = strrchr(p, '/'), *d = strrchr(p, '.');
    return d && (!b || d > b) && d != (b ? b + 1 : p) ? d + 1 : "";
}

static int is_text_ext(const char *e) {
    return !strcasecmp(e, "md") || !strcasecmp(e, "markdown") || !strcasecmp(e, "txt") ||
           !strcasecmp(e, "text");
}

typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec;

static int sv_push(strvec *s, const char *x) {
    if (s->n == s->cap) {
        size_t c = s->cap ? 2 * s->cap : 64;
        char **p = realloc(s->v, c * sizeof *p);
        if (!p) return -1;
        s->v = p, s->cap = c;
    }
    if (!(s->v[s->n] = strdup(x))) return -1;
    s->n++;
    return 0;
}

static void sv_free(strvec *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The folder walk. It never loops and never leaves the folders it was given unless asked:
 *  - symbolic links below a root are skipped (with a note) unless --follow-symlinks; a root that
 *    is itself a link is followed (the user named it);
 *  - every directory entered is recorded by (device, inode), so a folder reached twice (a link
 *    loop such as `a -> .`, a bind mount, a followed link back up) is walked once;
 *  - files are recorded by their canonical path (realpath), so `notes` and `./notes`, or a file
 *    reached through two links, are one file; the list is sorted and made unique afterwards.
 */
typedef struct walk_state {
    int follow;  /* --follow-symlinks */
    strvec *out; /* canonical file paths */
    dev_t *dev;  /* directories entered */
    ino_t *ino;
    size_t n_dirs, cap_dirs;
    long n_links_skipped;
} walk_state;

static int walk_seen_dir(walk_state *w, const struct stat *st) {
    for (size_t i = 0; i < w->n_dirs; i++)
        if (w->dev[i] == st->st_dev && w->ino[i] == st->st_ino) return 1;
    if (w->n_dirs == w->cap_dirs) {
        size_t c = w->cap_dirs ? 2 * w->cap_dirs : 64;
        dev_t *d = realloc(w->dev, c * sizeof *d);
        if (d) w->dev = d;
        ino_t *n = realloc(w->ino, c * sizeof *n);
        if (n) w->ino = n;
        if (!d || !n) return -1;
        w->cap_dirs = c;
    }
    w->dev[w->n_dirs] = st->st_dev, w->ino[w->n_dirs] = st->st_ino, w->n_dirs++;
    return 0;
}

static int walk(walk_state *w, const char *path, int top) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        fprintf(stderr, "llama3c %s: cannot read '%s': %s\n", CMD, path, strerror(errno));
        return top ? -1 : 0;
    }
    if (S_ISLNK(st.st_mode)) {
        if (!top && !w->follow) {
            w->n_links_skipped++;
            if (w->n_links_skipped <= 5)
                fprintf(stderr,
                        "llama3c %s: note: not following the symbolic link '%s' "
                        "(--follow-symlinks follows links)\n",
                        CMD, path);
            return 0;
        }
        if (stat(path, &st) != 0) {
            fprintf(stderr, "llama3c %s: %s '%s': %s\n", CMD,
                    top ? "cannot read" : "warning: skipping the broken link", path,
                    strerror(errno));
            return top ? -1 : 0;
        }
    }
    if (S_ISREG(st.st_mode)) {
        const char *e = ext_of(path);
        if (is_text_ext(e) || !strcasecmp(e, "pdf")) {
            char *canon = realpath(path, NULL);
            if (!canon) {
                fprintf(stderr, "llama3c %s: warning: skipping '%s': %s\n", CMD, path,
                        strerror(errno));
                return 0;
            }
            int rc = sv_push(w->out, canon);
            free(canon);
            return rc;
        }
        if (top)
            fprintf(
                stderr,
                "llama3c %s: warning: skipping '%s' (not .md, .markdown, .txt, .text or .pdf)\n",
                CMD, path);
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) return 0;
    int seen = walk_seen_dir(w, &st);
    if (seen) return seen < 0 ? -1 : 0; /* walked already (a loop, or two names of one folder) */
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "llama3c %s: cannot open folder '%s': %s\n", CMD, path, strerror(errno));
        return top ? -1 : 0;
    }
    strvec names = {0};
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && sv_push(&names, de->d_name)) rc = -1;
    closedir(d);
    qsort(names.v, names.n, sizeof *names.v, cmp_str);
    size_t pl = strlen(path);
    for (size_t i = 0; i < names.n && !rc; i++) {
        char *child = malloc(pl + strlen(names.v[i]) + 2);
        if (!child) {
            rc = -1;
            break;
        }
        sprintf(child, "%s%s%s", path, pl && path[pl - 1] == '/' ? "" : "/", names.v[i]);
        rc = walk(w, child, 0);
        free(child);
    }
    sv_free(&names);
    return rc;
}

/* Sorts the walk's files and drops repeats (one file reached through several roots or links). */
static void sv_sort_unique(strvec *s) {
    if (!s->n) return;
    qsort(s->v, s->n, sizeof *s->v, cmp_str);
    size_t o = 1;
    for (size_t i = 1; i < s->n; i++) {
        if (!strcmp(s->v[i], s->v[o - 1]))
            free(s->v[i]);
        else
            s->v[o++] = s->v[i];
    }
    s->n = o;
}

static int have_pdftotext(void) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    char *p = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = p ? strtok_r(p, ":", &save) : NULL; d && !found;
         d = strtok_r(NULL, ":", &save)) {
        char f[4096];
        snprintf(f, sizeof f, "%s/pdftotext", *d ? d : ".");
        found = access(f, X_OK) == 0;
    }
    free(p);
    return found;
}

/*
 * The text of a PDF from `pdftotext -enc UTF-8 FILE -` (no shell); NULL on failure (printed).
 * Bounded: the extractor is killed after timeout_s seconds or once it has written more than cap
 * bytes, and the file is then skipped with the reason.
 */
static char *pdf_text(const char *path, size_t *len, double timeout_s, size_t cap_out) {
    int fd[2];
    if (pipe(fd) != 0) return NULL;
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]), close(fd[1]);
        return NULL;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]), close(fd[1]);
        execlp("pdftotext", "pdftotext", "-q", "-enc", "UTF-8", path, "-", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    const char *why = NULL;
    const double deadline = now_s() + timeout_s;
    while (buf) {
        double left = deadline - now_s();
        if (left <= 0) {
            why = "timed out";
            break;
        }
        struct pollfd pfd = {.fd = fd[0], .events = POLLIN};
        int pr = poll(&pfd, 1, left > 1.0 ? 1000 : (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) continue;
        ssize_t r = read(fd[0], buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
        if (n > cap_out) {
            why = "wrote more text than --max-file-bytes";
            break;
        }
        if (n == cap) {
            char *b = realloc(buf, 2 * cap + 1);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b, cap *= 2;
        }
    }
    close(fd[0]);
    if (why || !buf) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (why) {
        fprintf(stderr, "llama3c %s: warning: skipping '%s': pdftotext %s (killed)\n", CMD, path,
                why);
        free(buf);
        return NULL;
    }
    if (!buf || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "llama3c %s: warning: skipping '%s': pdftotext failed (exit status %d)\n",
                CMD, path, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* The whole file, or NULL (errno set; EFBIG when it holds more than cap bytes). */
static char *read_all(const char *path, size_t *len, size_t max) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap + 1);
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n > max) {
            free(buf);
            fclose(f);
            errno = EFBIG;
            return NULL;
        }
        if (n == cap) {
            char *b = realloc(buf, 2 * cap + 1);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b, cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* "my_notes-2024.md" -> "my notes 2024": indexed with the chunks so BM25 sees the file's name. */
static void title_of(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    snprintf(out, cap, "%s", b ? b + 1 : path);
    char *d = strrchr(out, '.');
    if (d && d != out) *d = 0;
    for (char *p = out; *p; p++)
        if (*p == '_' || *p == '-') *p = ' ';
}

/* ---------------------------------------------------------------- model + index */

typedef struct rag_env {
    l3c_model *model;
    int own_model;
    rag_embedder emb;
    rag_store *store;
    rag_meta meta;
    char fp[65];
} rag_env;

static void env_close(rag_env *e) {
    rag_embedder_free(&e->emb);
    rag_store_close(e->store);
    if (e->own_model) l3c_model_free(e->model);
    memset(e, 0, sizeof *e);
}

/* Opens the index (create: for index) and loads the model (unless given), checks that the index
 * was built with this model, and creates the embeddings context. */
static int env_open(rag_env *e, const rag_args *a, l3c_model *model, int create) {
    char err[RAG_ERR_CAP];
    memset(e, 0, sizeof *e);
    if (!a->db) return cli_usage_error(CMD, "an index is required (--db FILE)");
    if (rag_store_open(a->db, create, &e->store, err)) return rag_error(err);
    int found = 0;
    if (rag_store_get_meta(e->store, &e->meta, &found, err)) goto fail;
    if (!found && !create) {
        snprintf(err, sizeof err,
                 "index '%s' holds nothing yet (build it with `llama3c rag index`)", a->db);
        goto fail;
    }
    if (model) {
        e->model = model;
    } else {
        if (cli_load_model(CMD, a->o.model_path, a->o.n_threads, a->o.verbose, a->o.bf16,
                           &e->model)) {
            env_close(e);
            return CLI_ERR;
        }
        e->own_model = 1;
    }
    l3c_model_info mi;
    l3c_model_get_info(e->model, &mi);
    if (rag_model_fingerprint(a->o.model_path, e->model, e->fp, err)) goto fail;
    if (found) {
        if (rag_meta_check_model(&e->meta, e->fp, mi.n_embd, mi.name ? mi.name : "", a->db, err))
            goto fail;
        if (create && a->chunk_set &&
            (a->chunk != e->meta.chunk_tokens || a->overlap != e->meta.overlap)) {
            snprintf(err, sizeof err,
                     "index '%s' was built with --chunk %d --overlap %d, not %d / %d: use those or "
                     "a new --db",
                     a->db, (int)e->meta.chunk_tokens, (int)e->meta.overlap, a->chunk, a->overlap);
            goto fail;
        }
    } else {
        rag_meta m = {0};
        snprintf(m.fingerprint, sizeof m.fingerprint, "%s", e->fp);
        snprintf(m.model_name, sizeof m.model_name, "%s", mi.name ? mi.name : "");
        m.n_embd = mi.n_embd;
        m.chunk_tokens = a->chunk;
        m.overlap = a->overlap;
        snprintf(m.pooling, sizeof m.pooling, "mean");
        if (rag_store_set_meta(e->store, &m, err)) goto fail;
        e->meta = m;
    }
    if (rag_embedder_init(&e->emb, e->model, EMBED_CTX, a->o.n_threads, err)) goto fail;
    return 0;
fail:
    env_close(e);
    return rag_error(err);
}

/* ---------------------------------------------------------------- index */

static int64_t mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static volatile sig_atomic_t g_stop; /* SIGINT / SIGTERM during index: stop between chunks */

static void on_stop(int sig) {
    g_stop = sig;
    signal(sig, SIG_DFL); /* a second one ends the process at once */
}

/* The index is written in place, one file per transaction, so a run killed outright (SIGKILL,
 * power loss) leaves a consistent index that a re-run completes. A run that fails or is stopped
 * (SIGINT / SIGTERM, checked between chunks) removes an index it created, so no new DB is left
 * behind; an existing index keeps the files finished so far. */
static int cmd_index(rag_args *a) {
    if (a->n_pos == 0) return cli_usage_error(CMD, "index: give the folders or files to index");
    strvec files = {0}, roots = {0};
    walk_state w = {.follow = a->follow_symlinks, .out = &files};
    for (int i = 0; i < a->n_pos; i++) {
        /* roots by canonical path: the index stores canonical paths, and removal of files gone
         * from a root compares against these prefixes */
        char *r = realpath(a->pos[i], NULL);
        if (!r) {
            fprintf(stderr, "llama3c %s: cannot read '%s': %s\n", CMD, a->pos[i], strerror(errno));
            sv_free(&files), sv_free(&roots), free(w.dev), free(w.ino);
            return CLI_ERR;
        }
        int bad = walk(&w, r, 1) || sv_push(&roots, r);
        free(r);
        if (bad) {
            sv_free(&files), sv_free(&roots), free(w.dev), free(w.ino);
            return CLI_ERR;
        }
    }
    free(w.dev), free(w.ino);
    sv_sort_unique(&files);
    if (w.n_links_skipped)
        fprintf(stderr, "llama3c %s: %ld symbolic links not followed (--follow-symlinks)\n", CMD,
                w.n_links_skipped);
    struct stat dbst;
    const int fresh = a->db && stat(a->db, &dbst) != 0 && errno == ENOENT;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    rag_env e;
    char err[RAG_ERR_CAP];
    strvec kept = {0};
    int rc = env_open(&e, a, NULL, 1);
    if (rc) goto done;
    const int pdf_ok = have_pdftotext();
    const int32_t dim = e.emb.n_embd;
    double t0 = now_s();
    long n_new = 0, n_same = 0, n_skip = 0, n_chunks = 0, n_cut = 0;
    rc = CLI_ERR;
    fprintf(stderr, "llama3c %s: indexing %zu files into %s (chunks of %d tokens, overlap %d)\n",
            CMD, files.n, a->db, (int)e.meta.chunk_tokens, (int)e.meta.overlap);
    for (size_t fi = 0; fi < files.n; fi++) {
        const char *path = files.v[fi];
        const int is_pdf = !strcasecmp(ext_of(path), "pdf");
        if (g_stop) goto interrupted;
        struct stat st;
        if (stat(path, &st) != 0) {
            fprintf(stderr, "llama3c %s: warning: skipping '%s': %s\n", CMD, path, strerror(errno));
            n_skip++;
            continue;
        }
        /* from here on the file exists: whatever happens, an earlier index of it is kept (a
         * file skipped this time is not a file removed) */
        if (sv_push(&kept, path)) goto oom;
        if (is_pdf && !pdf_ok) {
            fprintf(stderr,
                    "llama3c %s: warning: skipping '%s': pdftotext (Debian: poppler-utils) is not "
                    "installed\n",
                    CMD, path);
            n_skip++;
            continue;
        }
        if ((long long)st.st_size > a->max_file_bytes) {
            fprintf(stderr,
                    "llama3c %s: warning: skipping '%s': %lld bytes, more than --max-file-bytes "
                    "%lld\n",
                    CMD, path, (long long)st.st_size, a->max_file_bytes);
            n_skip++;
            continue;
        }
        int64_t osize = 0, omtime = 0;
        char osha[65] = "", sha[65];
        int found = 0;
        if (rag_store_file_state(e.store, path, &osize, &omtime, osha, &found, err)) goto fail;
        if (found && osize == (int64_t)st.st_size && omtime == mtime_ns(&st)) {
            n_same++;
            continue;
        }
        size_t raw_len = 0, len = 0;
        char *raw = read_all(path, &raw_len, (size_t)a->max_file_bytes);
        if (!raw) {
            fprintf(stderr, "llama3c %s: warning: skipping '%s': cannot read it: %s\n", CMD, path,
                    errno == EFBIG ? "it grew past --max-file-bytes" : strerror(errno));
            n_skip++;
            continue;
        }
        rag_sha256_hex(raw, raw_len, sha);
        if (found && !strcmp(sha, osha)) { /* same content, new mtime */
            free(raw);
            if (rag_store_touch_file(e.store, path, (int64_t)st.st_size, mtime_ns(&st), err))
                goto fail;
            n_same++;
            continue;
        }
        char *text = raw;
        len = raw_len;
        if (is_pdf) {
            text = pdf_text(path, &len, a->extract_timeout, (size_t)a->max_file_bytes);
            free(raw);
            if (!text) {
                n_skip++;
                continue;
            }
        } else if (memchr(text, 0, len)) {
            fprintf(stderr, "llama3c %s: warning: skipping '%s': it holds NUL bytes (binary?)\n",
                    CMD, path);
            free(text);
            n_skip++;
            continue;
        }
        rag_chunk *ch = NULL;
        size_t nch = 0;
        float *vecs = NULL;
        if (rag_chunk_text(e.emb.tok, text, len, e.meta.chunk_tokens, e.meta.overlap, &ch, &nch,
                           err)) {
            free(text);
            goto fail;
        }
        if (nch && !(vecs = malloc(nch * (size_t)dim * sizeof *vecs))) {
            free(text), free(ch);
            goto oom;
        }
        int bad = 0;
        for (size_t c = 0; c < nch && !bad; c++) {
            int cut = 0;
            if (g_stop) {
                free(text), free(ch), free(vecs);
                goto interrupted;
            }
            bad = rag_embed(&e.emb, text + ch[c].byte_start, ch[c].byte_end - ch[c].byte_start,
                            vecs + c * (size_t)dim, &cut, err);
            n_cut += cut;
        }
        char title[256];
        title_of(path, title, sizeof title);
        if (!bad)
            bad = rag_store_put_file(e.store, path, title, (int64_t)st.st_size, mtime_ns(&st), sha,
                                     text, ch, nch, vecs, dim, err);
        free(text), free(ch), free(vecs);
        if (bad) goto fail;
        n_new++;
        n_chunks += (long)nch;
        double dt = now_s() - t0;
        fprintf(stderr, "llama3c %s: [%zu/%zu] %s: %zu chunks (%.1f chunks/s)\n", CMD, fi + 1,
                files.n, path, nch, dt > 0 ? (double)n_chunks / dt : 0.0);
    }
    int removed = 0;
    if (rag_store_remove_missing(e.store, kept.v, kept.n, roots.v, roots.n, &removed, err))
        goto fail;
    int64_t tf = 0, tc = 0;
    if (rag_store_counts(e.store, &tf, &tc, err)) goto fail;
    double dt = now_s() - t0;
    fprintf(stderr,
            "llama3c %s: %ld files indexed (%ld chunks, %.1f chunks/s), %ld unchanged, %ld "
            "skipped, %d removed "
            "in %.1f s; the index holds %lld files, %lld chunks\n",
            CMD, n_new, n_chunks, dt > 0 ? (double)n_chunks / dt : 0.0, n_same, n_skip, removed, dt,
            (long long)tf, (long long)tc);
    if (n_cut)
        fprintf(stderr,
                "llama3c %s: note: %ld chunks were longer than %d tokens and embedded cut\n", CMD,
                n_cut, EMBED_CTX);
    rc = CLI_OK;
    goto done;
interrupted:
    fprintf(stderr, "llama3c %s: interrupted; %s\n", CMD,
            fresh ? "nothing is kept"
                  : "the files indexed so far are kept (a re-run does the rest)");
    rc = 128 + (int)g_stop;
    goto done;
oom:
    snprintf(err, sizeof err, "out of memory");
fail:
    rag_error(err);
done:
    sv_free(&kept), sv_free(&files), sv_free(&roots);
    env_close(&e);
    if (fresh && rc) { /* the database and SQLite's WAL files beside it */
        char side[4200];
        unlink(a->db);
        snprintf(side, sizeof side, "%s-wal", a->db);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", a->db);
        unlink(side);
        fprintf(stderr, "llama3c %s: removed the new index %s\n", CMD, a->db);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}

/* ---------------------------------------------------------------- query / ask */

static int retrieve(rag_env *e, const rag_args *a, const char *question, rag_hit **hits, int *n) {
    char err[RAG_ERR_CAP];
    float *q = malloc((size_t)e->emb.n_embd * sizeof *q);
    if (!q) return rag_error("out of memory");
    int bad = a->mode != RAG_BM25 && rag_embed(&e->emb, question, strlen(question), q, NULL, err);
    if (!bad)
        bad = rag_store_search(e->store, question, a->mode == RAG_BM25 ? NULL : q, e->emb.n_embd,
                               a->k, a->mode, a->alpha, hits, n, err);
    free(q);
    return bad ? rag_error(err) : 0;
}

static const char *question_of(const rag_args *a, const char *sub) {
    if (a->n_pos != 1) {
        cli_usage_error(CMD, "%s: give the question as one argument (quote it)", sub);
        return NULL;
    }
    if (!*a->pos[0]) {
        cli_usage_error(CMD, "%s: the question is empty", sub);
        return NULL;
    }
    char err[RAG_ERR_CAP];
    if (rag_query_check(a->pos[0], err)) {
        cli_usage_error(CMD, "%s: %s", sub, err);
        return NULL;
    }
    return a->pos[0];
}

static int cmd_query(rag_args *a) {
    const char *question = question_of(a, "query");
    if (!question) return CLI_USAGE;
    rag_env e;
    int rc = env_open(&e, a, NULL, 0);
    if (rc) return rc;
    rag_hit *h = NULL;
    int n = 0;
    if ((rc = retrieve(&e, a, question, &h, &n))) goto done;
    if (a->json) {
        json_t *res = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(
                res, json_pack("{s:i, s:s, s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:i, s:i, s:s}",
                               "rank", i + 1, "path", h[i].path, "line_start", h[i].line_start,
                               "line_end", h[i].line_end, "byte_start", (json_int_t)h[i].byte_start,
                               "byte_end", (json_int_t)h[i].byte_end, "score", h[i].score, "bm25",
                               h[i].bm25, "cosine", h[i].cosine, "rank_bm25", h[i].rank_bm25,
                               "rank_vector", h[i].rank_vec, "text", h[i].text));
        json_t *root = json_pack("{s:s, s:s, s:i, s:f, s:o}", "query", question, "mode",
                                 rag_mode_name(a->mode), "k", a->k, "confidence",
                                 rag_confidence(h, n), "results", res);
        char *s = root ? json_dumps(root, JSON_INDENT(1) | JSON_ENSURE_ASCII) : NULL;
        json_decref(root);
        if (!s) {
            rc = rag_error("cannot write JSON (out of memory or invalid UTF-8 in the question)");
            goto done;
        }
        puts(s);
        free(s);
    } else {
        for (int i = 0; i < n; i++) {
            printf("[%d] %s:%d-%d  score %.4f (bm25 %.3f rank %d, cosine %.4f rank %d)\n", i + 1,
                   h[i].path, h[i].line_start, h[i].line_end, h[i].score, h[i].bm25, h[i].rank_bm25,
                   h[i].cosine, h[i].rank_vec);
            const char *t = h[i].text;
            while (*t) {
                const char *nl = strchr(t, '\n');
                int l = nl ? (int)(nl - t) : (int)strlen(t);
                printf("    %.*s\n", l, t);
                t += l + (nl ? 1 : 0);
            }
        }
        if (n == 0) printf("(no matching chunks)\n");
    }
done:
    rag_hits_free(h, n);
    env_close(&e);
    return rc;
}

static int cmd_ask(rag_args *a) {
    const char *question = question_of(a, "ask");
    if (!question) return CLI_USAGE;
    cli_session s;
    if (cli_session_open(&s, CMD, &a->o)) return CLI_ERR;
    rag_env e;
    int rc = env_open(&e, a, s.model, 0);
    if (rc) {
        cli_session_close(&s);
        return rc;
    }
    rag_hit *h = NULL;
    int n = 0;
    char *user = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    if ((rc = retrieve(&e, a, question, &h, &n))) goto done;
    double conf = rag_confidence(h, n);
    if (conf < a->min_score) { /* abstain: a fixed answer, not the model's guess */
        printf("%s (retrieval confidence %.2f < --min-score %.2f)\n\nNearest sources:\n",
               RAG_DONT_KNOW, conf, a->min_score);
        for (int i = 0; i < n; i++)
            printf("[%d] %s:%d-%d\n", i + 1, h[i].path, h[i].line_start, h[i].line_end);
        fflush(stdout);
        goto done;
    }
    if (!(user = rag_sources_text(h, n, question))) {
        rc = rag_error("out of memory");
        goto done;
    }
    l3c_chat_message msgs[2] = {{"system", RAG_SYSTEM_PROMPT}, {"user", user}};
    l3c_chat_template t = l3c_chat_template_detect(s.model);
    if (l3c_chat_tokenize(s.model, t, msgs, 2, 1, &ids, &n_ids) != L3C_OK) {
        rc = cli_runtime_error(CMD, "cannot format the prompt");
        goto done;
    }
    if (a->show_prompt)
        fprintf(stderr, "--- system:\n%s\n--- user:\n%s\n---\n", RAG_SYSTEM_PROMPT, user);
    if (n_ids >= s.n_ctx) {
        fprintf(stderr,
                "llama3c %s: the prompt (%lld tokens) does not fit the context (%d): lower -k\n",
                CMD, (long long)n_ids, (int)s.n_ctx);
        rc = CLI_ERR;
        goto done;
    }
    if ((rc = cli_session_feed(&s, ids, n_ids))) goto done;
    cli_gen_opts g = {.out = stdout};
    rc = cli_session_generate(&s, &a->o, &g);
    printf("\n\nSources:\n");
    for (int i = 0; i < n; i++)
        printf("[%d] %s:%d-%d\n", i + 1, h[i].path, h[i].line_start, h[i].line_end);
    fflush(stdout);
    if (!a->o.no_timings) cli_print_timings(&s);
done:
    l3c_free(ids);
    free(user);
    rag_hits_free(h, n);
    env_close(&e);
    cli_session_close(&s);
    return rc;
}

/* ---------------------------------------------------------------- chunk */

static int cmd_chunk(rag_args *a) {
    if (a->n_pos != 1) return cli_usage_error(CMD, "chunk: give one file");
    size_t len = 0;
    char *text = cli_read_file(CMD, a->pos[0], &len);
    if (!text) return CLI_ERR;
    l3c_model *m = NULL;
    if (cli_load_model(CMD, a->o.model_path, a->o.n_threads, a->o.verbose, 0, &m)) {
        free(text);
        return CLI_ERR;
    }
    rag_chunk *ch = NULL;
    size_t n = 0;
    char err[RAG_ERR_CAP];
    int rc = CLI_OK;
    if (rag_chunk_text(l3c_model_tokenizer(m), text, len, a->chunk, a->overlap, &ch, &n, err)) {
        rc = rag_error(err);
    } else {
        printf("[\n");
        for (size_t i = 0; i < n; i++)
            printf(" {\"byte_start\": %zu, \"byte_end\": %zu, \"line_start\": %d, \"line_end\": "
                   "%d, \"n_tokens\": %d}%s\n",
                   ch[i].byte_start, ch[i].byte_end, (int)ch[i].line_start, (int)ch[i].line_end,
                   (int)ch[i].n_tokens, i + 1 < n ? "," : "");
        printf("]\n");
    }
    free(ch), free(text);
    l3c_model_free(m);
    return rc;
}

int cmd_rag(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    const char *sub = argv[1];
    int (*fn)(rag_args *) = !strcmp(sub, "index")   ? cmd_index
                            : !strcmp(sub, "query") ? cmd_query
                            : !strcmp(sub, "ask")   ? cmd_ask
                            : !strcmp(sub, "chunk") ? cmd_chunk
                                                    : NULL;
    if (!fn) return cli_usage_error(CMD, "unknown subcommand '%s' (index, query, ask, chunk)", sub);
    rag_args a;
    int rc = parse(&a, argc - 1, argv + 1, fn == cmd_ask ? 4 : 5);
    if (rc == 0)
        rc = fn(&a);
    else if (rc < 0)
        rc = CLI_OK; /* --help */
    free(a.pos);
    return rc;
}
