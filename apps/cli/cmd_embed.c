/*
 * cmd_embed.c -- `llama3c embed`: embeddings of texts (the final-normed hidden state, pooled per
 * input), built on the public header only.
 *
 *   llama3c embed -m MODEL [-p TEXT | -f FILE] [--pooling mean|cls|last|none] [--normalize]
 *                 [--format json|npy] [-o OUT] [--truncate] [-t N] [-b N]
 *
 * Inputs: -p TEXT is one input; -f FILE (or stdin) gives one input per line (a final newline
 * does not start another input; "\r\n" endings are accepted; blank lines are skipped with a
 * note on stderr). Each is tokenized as llama.cpp's
 * llama_tokenize(add_special = true, parse_special = false) does: BOS when the vocabulary asks
 * for it, special-token text kept as plain text.
 *
 * Evaluation: every input is its own sequence; up to MAX_SEQ of them share each decode batch of
 * -b tokens, and an input longer than the batch continues in the next one (the library pools a
 * sequence over all its batches), so the vectors do not depend on -b or on the other inputs.
 *
 * Output: JSON, a list with one vector per input (pooling none: per input a list of per-token
 * vectors), one line per vector, floats printed with 9 significant digits (exact for float32);
 * or NPY, little-endian float32 [n_inputs, n_embd] (none: [total tokens, n_embd], the inputs'
 * tokens one after the other).
 */
#include "cli.h"
#include "common.h"

#include "llama3c.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEQ   16
#define KV_BUDGET ((size_t)1 << 30)

static const char *const CMD = "embed";

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: llama3c embed -m MODEL [-p TEXT | -f FILE] [--pooling mean|cls|last|none]\n"
        "                     [--normalize] [--format json|npy] [-o OUT] [--truncate] [-t N] [-b "
        "N]\n"
        "Embeddings: the model's final-normed hidden state (after output_norm, as llama.cpp's\n"
        "embeddings for llama models), pooled per input.\n"
        "  -m, --model FILE     GGUF model (required)\n"
        "  -p, --prompt TEXT    one input\n"
        "  -f, --file FILE      one input per line, blank lines skipped (default: stdin; '-' is "
        "stdin)\n"
        "  --pooling P          mean (default): mean over the input's tokens; cls: the first\n"
        "                       token (BOS when the vocabulary adds one); last: the last token;\n"
        "                       none: one vector per token\n"
        "  --normalize          scale every vector to unit L2 norm\n"
        "  --format F           json (default): a list of vectors, one per line; npy: float32\n"
        "                       [inputs, n_embd] (none: [tokens, n_embd], inputs one after the "
        "other)\n"
        "  -o, --output OUT     write to OUT instead of stdout\n"
        "  --truncate           cut inputs longer than the context (default: error)\n"
        "  -c, --ctx-size N     most tokens per input (default: the model's training context; also "
        "--ctx)\n"
        "  -t, --threads N      compute threads (default: physical cores)\n"
        "  -b, --batch-size N   tokens per decode call (default 512; results do not depend on "
        "it)\n");
    cli_lora_help(f);
}

typedef struct input {
    int32_t *ids;
    int64_t n;
    int64_t row; /* first output row (pooling none: of its first token) */
} input;

/* Splits text into lines (the last newline ends the last line; "\r\n" accepted). */
static int split_lines(char *text, size_t len, char ***lines, size_t **lens, size_t *n) {
    size_t cap = 0;
    *lines = NULL, *lens = NULL, *n = 0;
    size_t i = 0;
    while (i < len) {
        char *nl = memchr(text + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - text) : len, l = e - i;
        if (l && text[i + l - 1] == '\r') l--;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            char **a = realloc(*lines, cap * sizeof *a);
            size_t *b = realloc(*lens, cap * sizeof *b);
            if (a) *lines = a;
            if (b) *lens = b;
            if (!a || !b) return -1;
        }
        (*lines)[*n] = text + i;
        (*lens)[*n] = l;
        (*n)++;
        i = e + 1;
    }
    return 0;
}

static int write_npy(FILE *f, const float *v, int64_t rows, int64_t cols) {
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)rows, (long long)cols);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    pre[8] = (unsigned char)((n + pad + 1) & 0xff);
    pre[9] = (unsigned char)((n + pad + 1) >> 8);
    if (fwrite(pre, 1, 10, f) != 10 || fwrite(hdr, 1, (size_t)n, f) != (size_t)n) return -1;
    for (int i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    for (int64_t i = 0; i < rows * cols; i++) { /* little-endian whatever the host */
        uint32_t u;
        memcpy(&u, &v[i], 4);
        unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                              (unsigned char)(u >> 24)};
        if (fwrite(b, 1, 4, f) != 4) return -1;
    }
    return 0;
}

static void write_vec(FILE *f, const float *v, int64_t n) {
    fputc('[', f);
    for (int64_t i = 0; i < n; i++)
        fprintf(f, i ? ",%.9g" : "%.9g", (double)v[i]);
    fputc(']', f);
}

static void write_json(FILE *f, const float *v, const input *in, size_t n_in, int64_t dim,
                       int per_token) {
    fputs("[\n", f);
    for (size_t k = 0; k < n_in; k++) {
        if (!per_token) {
            write_vec(f, v + (int64_t)k * dim, dim);
        } else {
            fputs("[\n", f);
            for (int64_t t = 0; t < in[k].n; t++) {
                write_vec(f, v + (in[k].row + t) * dim, dim);
                fputs(t + 1 < in[k].n ? ",\n" : "\n", f);
            }
            fputc(']', f);
        }
        fputs(k + 1 < n_in ? ",\n" : "\n", f);
    }
    fputs("]\n", f);
}

/* Decodes every input (sequences of MAX_SEQ slots, batches of n_batch tokens) and copies each
 * pooled vector (or every token's vector) into out. 0 or CLI_ERR (printed). */
static int embed_all(l3c_context *ctx, int32_t n_batch, input *in, size_t n_in, int64_t dim,
                     int per_token, float *out) {
    const int32_t n_seq = l3c_context_n_seq(ctx);
    int32_t *bt = malloc((size_t)n_batch * sizeof *bt), *bp = malloc((size_t)n_batch * sizeof *bp);
    int32_t *bs = malloc((size_t)n_batch * sizeof *bs);
    int64_t *bpos = malloc((size_t)n_batch * sizeof *bpos); /* output row of each batch token */
    long slot_in[MAX_SEQ];
    int64_t slot_fed[MAX_SEQ];
    int rc = CLI_ERR;
    if (!bt || !bp || !bs || !bpos) {
        fprintf(stderr, "llama3c %s: out of memory\n", CMD);
        goto done;
    }
    for (int32_t s = 0; s < n_seq; s++)
        slot_in[s] = -1;
    size_t next = 0, n_done = 0;
    while (n_done < n_in) {
        for (int32_t s = 0; s < n_seq && next < n_in; s++)
            if (slot_in[s] < 0) slot_in[s] = (long)next++, slot_fed[s] = 0;
        /* fill the batch: slots in input order, each with as much of its rest as fits */
        int32_t n = 0;
        for (;;) {
            int32_t best = -1;
            for (int32_t s = 0; s < n_seq; s++)
                if (slot_in[s] >= 0 && slot_fed[s] < in[slot_in[s]].n &&
                    (best < 0 || slot_in[s] < slot_in[best]))
                    best = s;
            if (best < 0 || n == n_batch) break;
            const input *x = &in[slot_in[best]];
            while (slot_fed[best] < x->n && n < n_batch) {
                bt[n] = x->ids[slot_fed[best]];
                bp[n] = (int32_t)slot_fed[best];
                bs[n] = best;
                bpos[n] = x->row + slot_fed[best];
                slot_fed[best]++, n++;
            }
        }
        l3c_batch b = {n, bt, bp, bs, NULL};
        if (l3c_decode(ctx, &b) != L3C_OK) {
            rc = cli_runtime_error(CMD, "decode failed");
            goto done;
        }
        if (per_token)
            for (int32_t i = 0; i < n; i++)
                memcpy(out + bpos[i] * dim, l3c_get_embeddings(ctx, i),
                       (size_t)dim * sizeof(float));
        for (int32_t s = 0; s < n_seq; s++) {
            if (slot_in[s] < 0 || slot_fed[s] < in[slot_in[s]].n) continue;
            if (!per_token) {
                const float *v = l3c_get_embeddings_seq(ctx, s);
                if (!v) {
                    rc = cli_runtime_error(CMD, "no pooled embedding");
                    goto done;
                }
                memcpy(out + in[slot_in[s]].row * dim, v, (size_t)dim * sizeof(float));
            }
            l3c_kv_seq_truncate(ctx, s, 0);
            slot_in[s] = -1;
            n_done++;
        }
    }
    rc = CLI_OK;
done:
    free(bt), free(bp), free(bs), free(bpos);
    return rc;
}

int cmd_embed(int argc, char **argv) {
    const char *model_path = NULL, *text = NULL, *file = NULL, *out_path = NULL;
    int pooling = L3C_POOLING_MEAN, normalize = 0, npy = 0, truncate = 0, n_threads = 0,
        n_batch = 512;
    int n_ctx = 0, lr;
    cli_lora lora = {0};
    l3c_adapter **adapters = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return CLI_OK;
        } else if ((lr = cli_lora_parse(CMD, &lora, argc, argv, &i))) {
            if (lr < 0) return CLI_USAGE;
        } else if (!strcmp(a, "--normalize")) {
            normalize = 1;
        } else if (!strcmp(a, "--truncate")) {
            truncate = 1;
        } else if (cli_is(a, CLI_MODEL)) {
            if (cli_str(CMD, argc, argv, &i, &model_path)) return CLI_USAGE;
        } else if (cli_is(a, "-p|--prompt")) {
            if (cli_str(CMD, argc, argv, &i, &text)) return CLI_USAGE;
        } else if (cli_is(a, "-f|--file")) {
            if (cli_str(CMD, argc, argv, &i, &file)) return CLI_USAGE;
        } else if (cli_is(a, "-o|--output")) {
            if (cli_str(CMD, argc, argv, &i, &out_path)) return CLI_USAGE;
        } else if (cli_is(a, CLI_THREADS)) {
            if (cli_int(CMD, argc, argv, &i, 1, 1024, &n_threads)) return CLI_USAGE;
        } else if (cli_is(a, CLI_BATCH)) {
            if (cli_int(CMD, argc, argv, &i, 1, 1 << 20, &n_batch)) return CLI_USAGE;
        } else if (cli_is(a, CLI_CTX)) {
            if (cli_int(CMD, argc, argv, &i, 0, INT32_MAX, &n_ctx)) return CLI_USAGE;
        } else if (cli_is(a, "--pooling")) {
            if (cli_str(CMD, argc, argv, &i, &v)) return CLI_USAGE;
            if (!strcmp(v, "mean"))
                pooling = L3C_POOLING_MEAN;
            else if (!strcmp(v, "cls"))
                pooling = L3C_POOLING_CLS;
            else if (!strcmp(v, "last"))
                pooling = L3C_POOLING_LAST;
            else if (!strcmp(v, "none"))
                pooling = L3C_POOLING_NONE;
            else
                return cli_usage_error(CMD, "--pooling: '%s' is not one of mean, cls, last, none",
                                       v);
        } else if (cli_is(a, "--format")) {
            if (cli_str(CMD, argc, argv, &i, &v)) return CLI_USAGE;
            if (!strcmp(v, "json"))
                npy = 0;
            else if (!strcmp(v, "npy"))
                npy = 1;
            else
                return cli_usage_error(CMD, "--format: '%s' is not one of json, npy", v);
        } else if ((lr = cli_compat_parse(CMD, argc, argv, &i))) {
            if (lr < 0) return CLI_USAGE;
        } else {
            return cli_usage_error(CMD, "unknown option '%s'", a);
        }
    }
    if (!model_path) return cli_usage_error(CMD, "a model is required (-m MODEL)");
    if (text && file) return cli_usage_error(CMD, "give either -p or -f, not both");

    int rc = CLI_ERR;
    char *data = NULL, **lines = NULL;
    size_t *lens = NULL, n_in = 0, dlen = 0;
    input *in = NULL;
    float *out = NULL;
    l3c_model *model = NULL;
    l3c_context *ctx = NULL;
    FILE *of = NULL;
    l3c_output *output = NULL;
    if (text) {
        n_in = 1;
        lines = malloc(sizeof *lines), lens = malloc(sizeof *lens);
        if (!lines || !lens) goto oom;
        lines[0] = (char *)text, lens[0] = strlen(text);
    } else {
        const char *src = file ? file : "-";
        if (!(data = cli_read_file(CMD, src, &dlen))) goto done;
        if (split_lines(data, dlen, &lines, &lens, &n_in)) goto oom;
        /* blank lines are skipped (one vector per non-blank line), with a note naming them */
        size_t kept = 0, n_blank = 0;
        char blanks[128] = "";
        for (size_t k = 0; k < n_in; k++) {
            if (lens[k] == 0) {
                size_t used = strlen(blanks);
                if (n_blank++ < 8)
                    snprintf(blanks + used, sizeof blanks - used, "%s%zu", used ? ", " : "", k + 1);
                else if (n_blank == 9)
                    snprintf(blanks + used, sizeof blanks - used, ", ...");
                continue;
            }
            lines[kept] = lines[k], lens[kept++] = lens[k];
        }
        if (n_blank)
            fprintf(
                stderr,
                "llama3c %s: skipped %zu blank line%s (line %s): one vector per non-blank line\n",
                CMD, n_blank, n_blank > 1 ? "s" : "", blanks);
        n_in = kept;
        if (n_in == 0) {
            fprintf(stderr, "llama3c %s: '%s' has no input lines\n", CMD, file ? file : "stdin");
            rc = CLI_USAGE;
            goto done;
        }
    }
    if (cli_load_model(CMD, model_path, n_threads, 0, 0, &model)) goto done;
    l3c_model_info mi;
    l3c_model_get_info(model, &mi);
    const l3c_tokenizer *tok = l3c_model_tokenizer(model);
    if (!tok) {
        fprintf(stderr, "llama3c %s: '%s' has no tokenizer\n", CMD, model_path);
        goto done;
    }
    const int64_t dim = mi.n_embd;
    const int64_t max_tokens = n_ctx > 0 ? n_ctx : mi.n_ctx_train;
    in = calloc(n_in, sizeof *in);
    if (!in) goto oom;
    int64_t rows = 0, max_len = 0, n_tokens = 0;
    for (size_t k = 0; k < n_in; k++) {
        if (cli_tokenize(CMD, tok, lines[k], lens[k], L3C_TOKENIZE_ADD_BOS, &in[k].ids, &in[k].n))
            goto done;
        if (in[k].n == 0) {
            fprintf(stderr, "llama3c %s: input %zu gives no tokens\n", CMD, k + 1);
            goto done;
        }
        if (in[k].n > max_tokens) {
            if (!truncate) {
                fprintf(stderr,
                        "llama3c %s: input %zu has %lld tokens; the context holds %lld "
                        "(--truncate cuts it; -c sets the context)\n",
                        CMD, k + 1, (long long)in[k].n, (long long)max_tokens);
                goto done;
            }
            in[k].n = max_tokens;
        }
        in[k].row = pooling == L3C_POOLING_NONE ? rows : (int64_t)k;
        rows += pooling == L3C_POOLING_NONE ? in[k].n : 1;
        if (in[k].n > max_len) max_len = in[k].n;
        n_tokens += in[k].n;
    }

    /* sequences: as many as fit the KV budget at the longest input's length, at most MAX_SEQ */
    size_t per_seq =
        l3c_model_kv_bytes_per_pos(model, L3C_KV_F16) * (size_t)(max_len < 16 ? 16 : max_len);
    int32_t n_seq = (int32_t)(n_in < MAX_SEQ ? n_in : MAX_SEQ);
    while (n_seq > 1 && per_seq * (size_t)n_seq > KV_BUDGET)
        n_seq--;
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = (int32_t)(max_len < 16 ? 16 : max_len);
    cp.n_seq = n_seq;
    cp.n_batch = n_batch;
    cp.n_threads = n_threads;
    cp.embeddings = 1;
    cp.pooling = pooling;
    cp.embd_normalize = normalize;
    if (l3c_context_create(model, &cp, &ctx) != L3C_OK) {
        rc = cli_runtime_error(CMD, "cannot create the context");
        goto done;
    }
    if (cli_lora_load(CMD, &lora, model, ctx, &adapters)) goto done;
    out = malloc((size_t)rows * (size_t)dim * sizeof *out);
    if (!out) goto oom;
    if ((int64_t)n_batch > (int64_t)cp.n_ctx * n_seq)
        n_batch = cp.n_ctx * n_seq; /* as the context does */
    if (embed_all(ctx, n_batch, in, n_in, dim, pooling == L3C_POOLING_NONE, out)) goto done;

    static const char *const pool_names[] = {"mean", "cls", "last", "none"};
    fprintf(stderr, "llama3c %s: %zu inputs, %lld tokens, pooling %s, %lld dimensions\n", CMD, n_in,
            (long long)n_tokens, pool_names[pooling], (long long)dim);
    const char *inputs[2] = {model_path, file};
    of = stdout;
    if (out_path &&
        l3c_output_open(out_path, inputs, 2, &output, &of) != L3C_OK) { /* whole or nothing */
        of = NULL;
        rc = cli_runtime_error(CMD, "cannot write the output");
        goto done;
    }
    if (npy) {
        if (write_npy(of, out, rows, dim)) goto write_err;
    } else {
        write_json(of, out, in, n_in, dim, pooling == L3C_POOLING_NONE);
    }
    if (ferror(of) || fflush(of) != 0) goto write_err;
    of = NULL;
    if (output) {
        l3c_output *o = output;
        output = NULL;
        if (l3c_output_commit(o) != L3C_OK) {
            rc = cli_runtime_error(CMD, "cannot write the output");
            goto done;
        }
    }
    rc = CLI_OK;
    goto done;
write_err:
    fprintf(stderr, "llama3c %s: cannot write '%s': %s\n", CMD, out_path ? out_path : "stdout",
            strerror(errno));
    goto done;
oom:
    fprintf(stderr, "llama3c %s: out of memory\n", CMD);
done:
    l3c_output_abort(output);
    if (in)
        for (size_t k = 0; k < n_in; k++)
            free(in[k].ids);
    free(in);
    free(out);
    free(lines);
    free(lens);
    free(data);
    l3c_context_free(ctx);
    cli_adapters_free(adapters, lora.n);
    l3c_model_free(model);
    return rc;
}
