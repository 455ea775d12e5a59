/*
 * cmd_tokenize.c -- `llama3c tokenize` (text -> ids) and `llama3c detokenize` (ids -> bytes),
 * built on the public header only. The text is taken byte for byte (-p, -f FILE or stdin; no
 * newline added or stripped). The vocabulary comes from -m MODEL.gguf or --tokenizer FILE
 * (tiktoken tokenizer.model, tokenizer.json or GGUF), both loaded with l3c_tokenizer_load.
 * Output of tokenize: one "id<TAB>text<TAB>'bytes'" line per token and a count on stderr, or with
 * --ids only the space-separated ids on one line. detokenize writes the raw bytes to stdout.
 */
#include "cli.h"

#include "llama3c.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char TOK_HELP[] =
    "usage: llama3c tokenize (-m MODEL.gguf | --tokenizer FILE) [-p TEXT | -f FILE] [--ids] [--bos]\n"
    "                        [--special] [--time]\n"
    "  Tokenizes TEXT, FILE or stdin byte for byte.\n"
    "  -m, --model FILE     GGUF model (its vocabulary is used)\n"
    "  --tokenizer FILE     tiktoken tokenizer.model, tokenizer.json or GGUF\n"
    "  -p, --prompt TEXT    the text\n"
    "  -f, --file FILE      read the text from FILE\n"
    "  --ids                print only the ids, space separated, on one line\n"
    "  --bos                prepend the BOS token\n"
    "  --special            special-token text (<|eot_id|>) becomes the special id\n"
    "  --time               print load and tokenize times to stderr\n";

static const char DETOK_HELP[] =
    "usage: llama3c detokenize (-m MODEL.gguf | --tokenizer FILE) [--skip-special] [IDS...]\n"
    "  Writes the bytes of the given token ids (or the ids read from stdin) to stdout.\n"
    "  --skip-special       leave out control tokens (BOS, EOS, ...)\n";

static int usage_err(const char *cmd, const char *msg, const char *arg) {
    fprintf(stderr, "llama3c %s: %s%s%s (see --help)\n", cmd, msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

static int read_stream(FILE *f, char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) return -1;
    for (;;) {
        if (n == cap) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return -1;
            }
            b = nb, cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(b);
        return -1;
    }
    *data = b, *len = n;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void print_escaped(const char *s, int32_t n) {
    putchar('\'');
    for (int32_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c == '\'') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('\'');
}

int cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize", *path = NULL, *text = NULL, *file = NULL;
    int ids_only = 0, flags = 0, timing = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(TOK_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "--tokenizer")) {
            if (!has_val) return usage_err(cmd, "missing value for", a);
            path = argv[++i];
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!has_val) return usage_err(cmd, "missing value for", a);
            text = argv[++i];
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!has_val) return usage_err(cmd, "missing value for", a);
            file = argv[++i];
        } else if (!strcmp(a, "--ids")) ids_only = 1;
        else if (!strcmp(a, "--bos")) flags |= L3C_TOKENIZE_FORCE_BOS;
        else if (!strcmp(a, "--special")) flags |= L3C_TOKENIZE_PARSE_SPECIAL;
        else if (!strcmp(a, "--time")) timing = 1;
        else return usage_err(cmd, "unknown option", a);
    }
    if (!path) return usage_err(cmd, "give -m MODEL.gguf or --tokenizer FILE", NULL);
    if (text && file) return usage_err(cmd, "give either -p or -f", NULL);
    char *data = NULL;
    size_t len = 0;
    if (text) {
        len = strlen(text);
    } else {
        FILE *f = file ? fopen(file, "rb") : stdin;
        if (!f) {
            fprintf(stderr, "llama3c %s: cannot open '%s'\n", cmd, file);
            return 1;
        }
        int rc = read_stream(f, &data, &len);
        if (file) fclose(f);
        if (rc) {
            fprintf(stderr, "llama3c %s: cannot read %s\n", cmd, file ? file : "stdin");
            return 1;
        }
        text = data;
    }
    int ret = 1;
    int32_t *ids = NULL;
    double t0 = now_s();
    l3c_tokenizer *tok = NULL;
    if (l3c_tokenizer_load(path, &tok)) {
        fprintf(stderr, "llama3c %s: %s\n", cmd, l3c_last_error());
        goto done;
    }
    double t1 = now_s();
    int64_t cap = (int64_t)(len / 2 + 16), n;
    for (;;) {
        free(ids);
        ids = malloc((size_t)cap * sizeof *ids);
        if (!ids) {
            fprintf(stderr, "llama3c %s: out of memory\n", cmd);
            goto done;
        }
        n = l3c_tokenize(tok, text, len, ids, cap, flags);
        if (n == INT64_MIN) {
            fprintf(stderr, "llama3c %s: %s\n", cmd, l3c_last_error());
            goto done;
        }
        if (n >= 0) break;
        cap = -n;
    }
    double t2 = now_s();
    if (ids_only) {
        for (int64_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
        putchar('\n');
    } else {
        char piece[1024];
        for (int64_t i = 0; i < n; i++) {
            int32_t k = l3c_token_to_bytes(tok, ids[i], piece, (int32_t)sizeof piece);
            printf("%8d\t%s\t", (int)ids[i], l3c_token_text(tok, ids[i]));
            print_escaped(piece, k < 0 ? 0 : k);
            putchar('\n');
        }
        fprintf(stderr, "%lld tokens\n", (long long)n);
    }
    if (timing)
        fprintf(stderr, "load %.3f s, tokenize %.3f s, %zu bytes, %.2f MB/s\n", t1 - t0, t2 - t1, len,
                (double)len / 1e6 / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    ret = fflush(stdout) ? 1 : 0;
done:
    free(ids);
    free(data);
    l3c_tokenizer_free(tok);
    return ret;
}

int cmd_detokenize(int argc, char **argv) {
    const char *cmd = "detokenize", *path = NULL;
    int skip = 0, first_id = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(DETOK_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "--tokenizer")) {
            if (i + 1 >= argc) return usage_err(cmd, "missing value for", a);
            path = argv[++i];
        } else if (!strcmp(a, "--skip-special")) skip = 1;
        else if (a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')) return usage_err(cmd, "unknown option", a);
        else {
            first_id = i;
            break;
        }
    }
    if (!path) return usage_err(cmd, "give -m MODEL.gguf or --tokenizer FILE", NULL);
    /* ids: the remaining arguments, else whitespace-separated on stdin */
    char *data = NULL;
    size_t len = 0;
    if (first_id < 0) {
        if (read_stream(stdin, &data, &len)) {
            fprintf(stderr, "llama3c %s: cannot read stdin\n", cmd);
            return 1;
        }
    }
    int ret = 1;
    int32_t *ids = NULL;
    char *out = NULL;
    size_t n = 0, cap = 64;
    l3c_tokenizer *tok = NULL;
    ids = malloc(cap * sizeof *ids);
    if (!ids) goto oom;
    const char *p = data, *end = data + len;
    for (int i = first_id; ; i++) {
        const char *s;
        char tmp[32];
        if (first_id >= 0) {
            if (i >= argc) break;
            s = argv[i];
        } else {
            while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',')) p++;
            if (p >= end) break;
            size_t k = 0;
            while (p < end && !(*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',') && k < sizeof tmp - 1)
                tmp[k++] = *p++;
            tmp[k] = 0;
            s = tmp;
        }
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s || *e || v < 0 || v > INT32_MAX) {
            ret = usage_err(cmd, "not a token id", s);
            goto done;
        }
        if (n == cap) {
            int32_t *nb = realloc(ids, cap * 2 * sizeof *ids);
            if (!nb) goto oom;
            ids = nb, cap *= 2;
        }
        ids[n++] = (int32_t)v;
    }
    if (l3c_tokenizer_load(path, &tok)) {
        fprintf(stderr, "llama3c %s: %s\n", cmd, l3c_last_error());
        goto done;
    }
    int64_t need = l3c_detokenize(tok, ids, (int64_t)n, NULL, 0, skip);
    if (need == INT64_MIN) {
        fprintf(stderr, "llama3c %s: %s\n", cmd, l3c_last_error());
        goto done;
    }
    if (need < 0) need = -need;
    out = malloc((size_t)need + 1);
    if (!out) goto oom;
    int64_t got = l3c_detokenize(tok, ids, (int64_t)n, out, need, skip);
    if (got < 0) {
        fprintf(stderr, "llama3c %s: %s\n", cmd, l3c_last_error());
        goto done;
    }
    fwrite(out, 1, (size_t)got, stdout);
    ret = fflush(stdout) ? 1 : 0;
    goto done;
oom:
    fprintf(stderr, "llama3c %s: out of memory\n", cmd);
done:
    free(out);
    free(ids);
    free(data);
    l3c_tokenizer_free(tok);
    return ret;
}
