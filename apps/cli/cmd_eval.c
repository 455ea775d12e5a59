/*
 * cmd_eval.c -- `llama3c eval`: evaluates token ids as one sequence from position 0 and writes
 * raw little-endian float32 logits, for the reference tests (tests/py). Built on llama3c.h only.
 *
 *   llama3c eval -m MODEL (--ids "1 2 3" | --ids-file F) --logits-out OUT.f32
 *                [--all] [--ctx N] [-t N] [--batch N] [--kv f16|f32|q8_0] [--bf16]
 *                [--lora FILE [--lora-scale S]]...
 *
 * OUT holds [n_ids x n_vocab] floats with --all, [n_positions x n_vocab] with --positions
 * "P1 P2 ..." (those positions' rows, in the order given), else [n_vocab] for the last position.
 * --batch 1 decodes token by token (the KV-cache path); the default 512 decodes in chunks.
 */
#include "cli.h"
#include "common.h"

#include "llama3c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
    fprintf(
        f, "usage: llama3c eval -m MODEL (--ids \"1 2 3\" | --ids-file F) --logits-out OUT.f32\n"
           "                    [--all] [--ctx N] [-t N] [--batch N] [--kv f16|f32|q8_0] [--bf16]\n"
           "Evaluates the ids as one sequence from position 0 and writes little-endian float32\n"
           "logits: [n_ids x n_vocab] with --all, else the last position's [n_vocab].\n"
           "  --positions \"P ...\"  only these positions' rows (0-based, in the order given)\n"
           "  -c, --ctx-size N  context positions (default: max(n_ids, 16); also --ctx)\n"
           "  -t N        threads (default: physical cores)\n"
           "  --batch N   tokens per decode call (default 512; 1 = token by token)\n"
           "  --kv TYPE   KV-cache type (default f16)\n"
           "  --split S, --layers-per-rank A,B,.., --ubatch N  under mpirun: how the ranks share\n"
           "              the model (see llama3c run --help)\n"
           "  --bf16      F16/BF16 matrices multiply in bfloat16 (l3c_model_params.bf16_matmul)\n");
    cli_lora_help(f);
}

/* Appends whitespace-separated integers from s to *ids. Returns 0, or -1 on a bad number. */
static int parse_ids(const char *s, int32_t **ids, int64_t *n, int64_t *cap) {
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',')
            p++;
        if (!*p) return 0;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX) return -1;
        if (*n == *cap) {
            int64_t nc = *cap ? *cap * 2 : 64;
            int32_t *d = realloc(*ids, (size_t)nc * sizeof **ids);
            if (!d) return -1;
            *ids = d;
            *cap = nc;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (len + 1 < cap) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf) buf[len] = '\0';
    fclose(f);
    return buf;
}

int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *ids_str = NULL, *ids_file = NULL, *out_path = NULL,
               *pos_str = NULL;
    int all = 0, bf16 = 0, n_threads = 0, n_batch = 512, n_ctx = 0, kv_type = L3C_KV_F16, lr;
    cli_lora lora = {0};
    l3c_adapter **adapters = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int bad = 0, r;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((lr = cli_lora_parse("eval", &lora, argc, argv, &i)) != 0) {
            if (lr < 0) return 2;
        } else if (!strcmp(a, "--all"))
            all = 1;
        else if (!strcmp(a, "--bf16"))
            bf16 = 1;
        else if ((r = cli_split_parse("eval", argc, argv, &i)) != 0)
            bad = r < 0;
        else if (cli_is(a, CLI_MODEL))
            bad = cli_str("eval", argc, argv, &i, &model_path);
        else if (!strcmp(a, "--ids"))
            bad = cli_str("eval", argc, argv, &i, &ids_str);
        else if (!strcmp(a, "--positions"))
            bad = cli_str("eval", argc, argv, &i, &pos_str);
        else if (!strcmp(a, "--ids-file"))
            bad = cli_str("eval", argc, argv, &i, &ids_file);
        else if (cli_is(a, "-o|--logits-out"))
            bad = cli_str("eval", argc, argv, &i, &out_path);
        else if (cli_is(a, CLI_CTX))
            bad = cli_int("eval", argc, argv, &i, 0, INT32_MAX, &n_ctx);
        else if (cli_is(a, CLI_THREADS))
            bad = cli_int("eval", argc, argv, &i, 1, 1024, &n_threads);
        else if (cli_is(a, CLI_BATCH))
            bad = cli_int("eval", argc, argv, &i, 1, 1 << 20, &n_batch);
        else if (!strcmp(a, "--kv"))
            bad = cli_kv("eval", argc, argv, &i, &kv_type);
        else if ((r = cli_compat_parse("eval", argc, argv, &i)))
            bad = r < 0;
        else
            return cli_usage_error("eval", "unknown option '%s'", a);
        if (bad) return CLI_USAGE;
    }
    if (!model_path || (!ids_str && !ids_file) || !out_path) {
        fprintf(stderr, "llama3c eval: -m, --ids (or --ids-file) and --logits-out are required\n");
        usage(stderr);
        return 2;
    }

    int32_t *ids = NULL;
    int64_t n_ids = 0, cap = 0;
    if (ids_str && parse_ids(ids_str, &ids, &n_ids, &cap) != 0) {
        fprintf(stderr, "llama3c eval: --ids: not a list of integers: '%s'\n", ids_str);
        free(ids);
        return 2;
    }
    if (ids_file) {
        char *text = read_text(ids_file);
        if (!text) {
            fprintf(stderr, "llama3c eval: cannot read --ids-file '%s': %s\n", ids_file,
                    strerror(errno));
            free(ids);
            return 1;
        }
        int bad = parse_ids(text, &ids, &n_ids, &cap);
        free(text);
        if (bad) {
            fprintf(stderr, "llama3c eval: --ids-file '%s': not a list of integers\n", ids_file);
            free(ids);
            return 2;
        }
    }
    if (n_ids == 0 || n_ids > INT32_MAX) {
        fprintf(stderr, "llama3c eval: no token ids given\n");
        free(ids);
        return 2;
    }

    int32_t *sel = NULL; /* --positions */
    int64_t n_sel = 0, sel_cap = 0;
    if (pos_str) {
        if (all || parse_ids(pos_str, &sel, &n_sel, &sel_cap) != 0 || n_sel == 0) {
            fprintf(stderr, "llama3c eval: --positions: %s\n",
                    all ? "not with --all" : "not a non-empty list of integers");
            free(sel);
            free(ids);
            return 2;
        }
        for (int64_t k = 0; k < n_sel; k++)
            if (sel[k] < 0 || sel[k] >= n_ids) {
                fprintf(stderr, "llama3c eval: --positions: %d is outside [0, %lld)\n", (int)sel[k],
                        (long long)n_ids);
                free(sel);
                free(ids);
                return 2;
            }
    }

    int rc = 1;
    l3c_model *model = NULL;
    l3c_context *ctx = NULL;
    float *out = NULL;
    FILE *f = NULL;
    double t0 = now_s();
    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = n_threads;
    mp.bf16_matmul = bf16;
    if (cli_model_load(model_path, &mp, &model) != L3C_OK) {
        fprintf(stderr, "llama3c eval: %s\n", l3c_last_error());
        goto done;
    }
    if (bf16) cli_note_bf16("eval", model);
    double t_load = now_s() - t0;
    l3c_model_info info;
    l3c_model_get_info(model, &info);
    const int64_t n_vocab = info.n_vocab;

    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = n_ctx ? n_ctx : (int32_t)(n_ids < 16 ? 16 : n_ids);
    cp.n_batch = n_batch;
    cp.n_threads = n_threads;
    cp.kv_type = kv_type;
    if (l3c_context_create(model, &cp, &ctx) != L3C_OK) {
        fprintf(stderr, "llama3c eval: %s\n", l3c_last_error());
        goto done;
    }
    if (cli_lora_load("eval", &lora, model, ctx, &adapters)) goto done;
    const int64_t n_rows = all ? n_ids : sel ? n_sel : 1;
    out = malloc((size_t)n_rows * (size_t)n_vocab * sizeof(float));
    int32_t *pos = malloc((size_t)n_ids * sizeof(int32_t));
    int8_t *want = malloc((size_t)n_ids);
    if (!out || !pos || !want) {
        fprintf(stderr, "llama3c eval: out of memory\n");
        free(pos);
        free(want);
        goto done;
    }
    for (int64_t i = 0; i < n_ids; i++) {
        pos[i] = (int32_t)i;
        want[i] = (int8_t)(all || (!sel && i == n_ids - 1));
    }
    for (int64_t k = 0; k < n_sel; k++)
        want[sel[k]] = 1;

    double t1 = now_s();
    int ok = 1;
    for (int64_t start = 0; start < n_ids && ok; start += n_batch) {
        int32_t n = (int32_t)(n_ids - start < n_batch ? n_ids - start : n_batch);
        l3c_batch b = {.n_tokens = n,
                       .tokens = ids + start,
                       .pos = pos + start,
                       .seq_id = NULL,
                       .logits = want + start};
        if (l3c_decode(ctx, &b) != L3C_OK) {
            fprintf(stderr, "llama3c eval: decode at position %lld: %s\n", (long long)start,
                    l3c_last_error());
            ok = 0;
            break;
        }
        for (int32_t i = 0; i < n; i++) {
            if (!want[start + i]) continue;
            const float *lg = l3c_get_logits(ctx, i);
            if (sel) { /* every row that asks for this position (a position may repeat) */
                for (int64_t k = 0; k < n_sel; k++)
                    if (sel[k] == start + i)
                        memcpy(out + k * n_vocab, lg, (size_t)n_vocab * sizeof(float));
                continue;
            }
            int64_t row = all ? start + i : 0;
            memcpy(out + row * n_vocab, lg, (size_t)n_vocab * sizeof(float));
        }
    }
    double t_eval = now_s() - t1;
    free(pos);
    free(want);
    if (!ok) goto done;

    if (l3c_dist_rank() != 0) { /* rank 0 has the logits and writes them */
        rc = 0;
        goto done;
    }
    f = fopen(out_path, "wb");
    if (!f ||
        fwrite(out, sizeof(float), (size_t)(n_rows * n_vocab), f) != (size_t)(n_rows * n_vocab)) {
        fprintf(stderr, "llama3c eval: cannot write '%s': %s\n", out_path, strerror(errno));
        goto done;
    }
    if (fclose(f) != 0) {
        f = NULL;
        fprintf(stderr, "llama3c eval: cannot write '%s': %s\n", out_path, strerror(errno));
        goto done;
    }
    f = NULL;
    fprintf(stderr,
            "n_vocab %lld\nn_ids %lld, rows written %lld, batch %d, n_ctx %d\n"
            "load %.3f s, eval %.3f s (%.1f tokens/s)\n",
            (long long)n_vocab, (long long)n_ids, (long long)n_rows, n_batch,
            l3c_context_n_ctx(ctx), t_load, t_eval, t_eval > 0 ? (double)n_ids / t_eval : 0.0);
    rc = 0;
done:
    if (f) fclose(f);
    free(out);
    free(ids);
    free(sel);
    l3c_context_free(ctx);
    cli_adapters_free(adapters, lora.n);
    l3c_model_free(model);
    return rc;
}
