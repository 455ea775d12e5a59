/*
 * common.c -- shared CLI plumbing (see common.h): option parsing, model/context/sampler setup,
 * prompt evaluation with KV-cache prefix reuse, and the streaming generation loop.
 *
 * Invariants of a session: cache[0..n_cache) are exactly the ids whose keys/values sequence 0 of
 * the context holds (l3c_kv_seq_len(ctx, 0) == n_cache); logits, when non-NULL, belong to
 * cache[n_cache-1] and are invalidated by every l3c_decode / truncate. Streaming output never
 * splits a UTF-8 sequence: bytes are held back until l3c_utf8_complete says they are whole.
 */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- errors and values */

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "llama3c %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `llama3c %s --help`)\n", cmd);
    return CLI_USAGE;
}

int cli_runtime_error(const char *cmd, const char *what) {
    const char *msg = l3c_last_error();
    fprintf(stderr, "llama3c %s: %s%s%s\n", cmd, what, msg && *msg ? ": " : "", msg ? msg : "");
    return CLI_ERR;
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_usage_error(cmd, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cli_parse_long(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return cli_usage_error(cmd, "%s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
    *out = v;
    return 0;
}

int cli_parse_float(const char *cmd, const char *opt, const char *s, double lo, double hi,
                    float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || isnan(v) || v < lo || v > hi)
        return cli_usage_error(cmd, "%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    *out = (float)v;
    return 0;
}

int cli_parse_u64(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') return cli_usage_error(cmd, "%s: '%s' is not a non-negative integer", opt, s);
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end)
        return cli_usage_error(cmd, "%s: '%s' is not a non-negative integer", opt, s);
    *out = (uint64_t)v;
    return 0;
}

/* ---------------------------------------------------------------- the option parser */

int cli_is(const char *arg, const char *names) {
    if (arg[0] != '-') return 0;
    while (*names) {
        const char *end = strchr(names, '|');
        size_t n = end ? (size_t)(end - names) : strlen(names);
        size_t k = 0;
        int dashes = 1; /* the leading dashes must match exactly */
        for (; k < n && arg[k]; k++) {
            char x = arg[k], y = names[k];
            if (dashes && y != '-') dashes = 0;
            if (!dashes && x == '_') x = '-';
            if (x != y) break;
        }
        if (k == n && !arg[k]) return 1;
        if (!end) break;
        names = end + 1;
    }
    return 0;
}

int cli_str(const char *cmd, int argc, char **argv, int *i, const char **out) {
    const char *v = cli_value(cmd, argc, argv, i);
    if (!v) return CLI_USAGE;
    *out = v;
    return 0;
}

int cli_int(const char *cmd, int argc, char **argv, int *i, long lo, long hi, int *out) {
    const char *opt = argv[*i], *v = cli_value(cmd, argc, argv, i);
    long l;
    if (!v || cli_parse_long(cmd, opt, v, lo, hi, &l)) return CLI_USAGE;
    *out = (int)l;
    return 0;
}

int cli_i32(const char *cmd, int argc, char **argv, int *i, long lo, long hi, int32_t *out) {
    int v;
    if (cli_int(cmd, argc, argv, i, lo, hi, &v)) return CLI_USAGE;
    *out = (int32_t)v;
    return 0;
}

int cli_flt(const char *cmd, int argc, char **argv, int *i, double lo, double hi, float *out) {
    const char *opt = argv[*i], *v = cli_value(cmd, argc, argv, i);
    if (!v || cli_parse_float(cmd, opt, v, lo, hi, out)) return CLI_USAGE;
    return 0;
}

int cli_kv(const char *cmd, int argc, char **argv, int *i, int *kv_type) {
    const char *k;
    if (cli_str(cmd, argc, argv, i, &k)) return -1;
    if (!strcmp(k, "f16"))
        *kv_type = L3C_KV_F16;
    else if (!strcmp(k, "f32"))
        *kv_type = L3C_KV_F32;
    else if (!strcmp(k, "q8_0"))
        *kv_type = L3C_KV_Q8_0;
    else
        return cli_usage_error(cmd, "--kv: '%s' is not f16, f32 or q8_0", k), -1;
    return 0;
}

int cli_compat_parse(const char *cmd, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    int n;
    if (cli_is(a, "-ngl|--n-gpu-layers|--gpu-layers")) {
        if (cli_int(cmd, argc, argv, i, -1, 1 << 20, &n)) return -1;
        if (n != 0)
            fprintf(stderr, "llama3c %s: note: %s %d ignored: this build runs on the CPU only\n",
                    cmd, a, n);
        return 1;
    }
    if (cli_is(a, "--keep")) {
        if (cli_int(cmd, argc, argv, i, -1, INT32_MAX, &n)) return -1;
        fprintf(stderr,
                "llama3c %s: note: --keep ignored: llama3c never shifts the context (chat drops "
                "whole old turns)\n",
                cmd);
        return 1;
    }
    if (cli_is(a, "--mlock|--no-mmap|--color|-cnv|--conversation|--log-disable|-fa|--flash-attn")) {
        fprintf(stderr, "llama3c %s: note: %s changes nothing here (llama.cpp option)\n", cmd, a);
        return 1;
    }
    return 0;
}

static int hex_value(char c) {
    return isdigit((unsigned char)c) ? c - '0' : tolower((unsigned char)c) - 'a' + 10;
}

void cli_unescape(char *s) {
    char *o = s;
    for (const char *p = s; *p; p++) {
        char c = *p == '\\' ? p[1] : 0, r;
        switch (c) {
        case 'n':
            r = '\n';
            break;
        case 't':
            r = '\t';
            break;
        case 'r':
            r = '\r';
            break;
        case 'a':
            r = '\a';
            break;
        case 'b':
            r = '\b';
            break;
        case 'f':
            r = '\f';
            break;
        case 'v':
            r = '\v';
            break;
        case '\\':
        case '\'':
        case '"':
        case '?':
            r = c;
            break;
        case 'x':
            if (isxdigit((unsigned char)p[2])) {
                int v = hex_value(p[2]), k = 3;
                if (isxdigit((unsigned char)p[3])) v = v * 16 + hex_value(p[k++]);
                if (v) { /* \x00 would end the string: kept as it is */
                    *o++ = (char)v;
                    p += k - 1;
                    continue;
                }
            }
            /* fall through */
        default:
            *o++ = *p;
            continue;
        }
        *o++ = r;
        p++;
    }
    *o = '\0';
}

/* ---------------------------------------------------------------- progress */

void cli_progress(int64_t i, int64_t n, const char *name, const char *type, void *user) {
    static int tty = -1;
    if (tty < 0) tty = isatty(STDERR_FILENO);
    if (tty) {
        const int width = 30;
        int fill = n ? (int)(i * width / n) : width;
        fprintf(stderr, "\r[%.*s%*s] %lld/%lld %-32.32s %-6s", fill,
                "##############################", width - fill, "", (long long)i, (long long)n,
                name, type);
        if (i == n) fputc('\n', stderr);
    } else if (i == n || (n > 0 && i * 10 / n != (i - 1) * 10 / n)) {
        fprintf(stderr, "llama3c %s: %lld/%lld tensors (%d%%), %s %s\n", (const char *)user,
                (long long)i, (long long)n, n ? (int)(i * 100 / n) : 100, name, type);
    }
    fflush(stderr);
}

/* ---------------------------------------------------------------- signals */

static void remove_partial_and_die(int sig) {
    l3c_remove_partial_outputs();
    signal(sig, SIG_DFL);
    raise(sig);
}

void cli_remove_partial_outputs_on_signal(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = remove_partial_and_die;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* ---------------------------------------------------------------- LoRA adapters */

int cli_lora_parse(const char *cmd, cli_lora *l, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--lora") || !strcmp(a, "--lora-scaled")) {
        if (l->n == CLI_MAX_LORA) {
            cli_usage_error(cmd, "at most %d adapters (--lora)", CLI_MAX_LORA);
            return -1;
        }
        if (!(v = cli_value(cmd, argc, argv, i))) return -1;
        l->path[l->n] = v;
        l->scale[l->n] = 1.0f;
        if (!strcmp(a, "--lora-scaled")) {
            if (!(v = cli_value(cmd, argc, argv, i))) return -1;
            if (cli_parse_float(cmd, a, v, -1e6, 1e6, &l->scale[l->n])) return -1;
        }
        l->n++;
        return 1;
    }
    if (!strcmp(a, "--lora-scale")) {
        if (!(v = cli_value(cmd, argc, argv, i))) return -1;
        if (!l->n) {
            cli_usage_error(cmd,
                            "--lora-scale sets the scale of the --lora before it; none was given");
            return -1;
        }
        return cli_parse_float(cmd, a, v, -1e6, 1e6, &l->scale[l->n - 1]) ? -1 : 1;
    }
    return 0;
}

int cli_lora_load(const char *cmd, const cli_lora *l, const l3c_model *model, l3c_context *ctx,
                  l3c_adapter ***out) {
    *out = NULL;
    if (!l->n) return 0;
    l3c_adapter **ads = calloc((size_t)l->n, sizeof *ads);
    if (!ads) {
        fprintf(stderr, "llama3c %s: out of memory\n", cmd);
        return CLI_ERR;
    }
    for (int k = 0; k < l->n; k++) {
        char what[4200];
        snprintf(what, sizeof what, "cannot load the LoRA adapter '%s'", l->path[k]);
        if (l3c_adapter_load(model, l->path[k], &ads[k]) != L3C_OK ||
            (ctx && l3c_context_set_adapter(ctx, ads[k], l->scale[k]) != L3C_OK)) {
            cli_runtime_error(cmd, what);
            if (ctx)
                for (int j = 0; j <= k; j++)
                    l3c_context_set_adapter(ctx, ads[j], 0.0f);
            cli_adapters_free(ads, l->n);
            return CLI_ERR;
        }
        fprintf(stderr, "llama3c %s: LoRA adapter %s, scale %g\n", cmd, l->path[k],
                (double)l->scale[k]);
    }
    *out = ads;
    return 0;
}

void cli_adapters_free(l3c_adapter **a, int n) {
    for (int k = 0; a && k < n; k++)
        l3c_adapter_free(a[k]);
    free(a);
}

void cli_lora_help(FILE *f) {
    fprintf(f,
            "  --lora FILE             apply a LoRA adapter: a GGUF LoRA file or a PEFT folder "
            "(repeatable)\n"
            "  --lora-scale S          scale of the --lora before it (default 1; 0 disables it)\n"
            "  --lora-scaled FILE S    the same as --lora FILE --lora-scale S\n");
}

/* ---------------------------------------------------------------- shared options */

void cli_opts_init(cli_opts *o, int32_t n_predict, float temp, float top_p) {
    memset(o, 0, sizeof *o);
    o->n_batch = 512;
    o->n_predict = n_predict;
    o->sp = l3c_sampler_default_params();
    o->sp.temperature = temp;
    o->sp.top_p = top_p;
}

int cli_opts_parse(const char *cmd, cli_opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
    long l;
    int lr = cli_lora_parse(cmd, &o->lora, argc, argv, i);
    if (lr) return lr;
#define VAL()                                                                                      \
    do {                                                                                           \
        if (!(v = cli_value(cmd, argc, argv, i))) return -1;                                       \
    } while (0)
    if (cli_is(a, CLI_MODEL)) {
        VAL();
        o->model_path = v;
    } else if (cli_is(a, CLI_THREADS)) {
        VAL();
        if (cli_parse_long(cmd, a, v, 1, 1024, &l)) return -1;
        o->n_threads = (int)l;
    } else if (cli_is(a, CLI_CTX)) {
        VAL();
        if (cli_parse_long(cmd, a, v, 0, INT32_MAX, &l)) return -1;
        o->n_ctx = (int32_t)l;
    } else if (cli_is(a, CLI_BATCH)) {
        VAL();
        if (cli_parse_long(cmd, a, v, 1, 1 << 20, &l)) return -1;
        o->n_batch = (int32_t)l;
    } else if (cli_is(a, "-n|--n-predict")) {
        VAL();
        if (cli_parse_long(cmd, a, v, -1, INT32_MAX, &l)) return -1;
        o->n_predict = (int32_t)l;
    } else if (cli_is(a, "--temp|--temperature")) {
        VAL();
        if (cli_parse_float(cmd, a, v, 0.0, 100.0, &o->sp.temperature)) return -1;
    } else if (cli_is(a, "--top-k")) {
        VAL();
        if (cli_parse_long(cmd, a, v, 0, INT32_MAX, &l)) return -1;
        o->sp.top_k = (int32_t)l;
    } else if (cli_is(a, "--top-p")) {
        VAL();
        if (cli_parse_float(cmd, a, v, 0.0, 1.0, &o->sp.top_p)) return -1;
    } else if (cli_is(a, "--min-p")) {
        VAL();
        if (cli_parse_float(cmd, a, v, 0.0, 1.0, &o->sp.min_p)) return -1;
    } else if (cli_is(a, "--repeat-penalty")) {
        VAL();
        if (cli_parse_float(cmd, a, v, 1e-3, 100.0, &o->sp.repeat_penalty)) return -1;
    } else if (cli_is(a, "--repeat-last-n")) {
        VAL();
        if (cli_parse_long(cmd, a, v, 0, 1 << 20, &l)) return -1;
        o->sp.repeat_last_n = (int32_t)l;
    } else if (cli_is(a, "--presence-penalty")) {
        VAL();
        if (cli_parse_float(cmd, a, v, -2.0, 2.0, &o->sp.presence_penalty)) return -1;
    } else if (cli_is(a, "--frequency-penalty")) {
        VAL();
        if (cli_parse_float(cmd, a, v, -2.0, 2.0, &o->sp.frequency_penalty)) return -1;
    } else if (cli_is(a, "--seed")) {
        VAL();
        if (cli_parse_u64(cmd, a, v, &o->sp.seed)) return -1;
        o->seed_set = 1;
    } else if (cli_is(a, "--ignore-eos")) {
        o->ignore_eos = 1;
    } else if (cli_is(a, "-v|--verbose")) {
        o->verbose = 1;
    } else if (cli_is(a, "--bf16")) {
        o->bf16 = 1;
    } else if (cli_is(a, "--no-timings")) {
        o->no_timings = 1;
    } else {
        int r = cli_split_parse(cmd, argc, argv, i);
        return r ? r : cli_compat_parse(cmd, argc, argv, i);
    }
#undef VAL
    return 1;
}

/* The split of this process's models (one per process: it is one rank of one job). */
static int g_split = L3C_SPLIT_NONE;
static int32_t *g_layers_per_rank; /* [l3c_dist_size()] or NULL */

int cli_split_parse(const char *cmd, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--split")) {
        if (!(v = cli_value(cmd, argc, argv, i))) return -1;
        if (!strcmp(v, "none")) g_split = L3C_SPLIT_NONE;
        else if (!strcmp(v, "tensor")) g_split = L3C_SPLIT_TENSOR;
        else if (!strcmp(v, "layers")) g_split = L3C_SPLIT_LAYERS;
        else {
            cli_usage_error(cmd, "--split '%s': expected none, tensor or layers", v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(a, "--dist-timeout")) {
        if (!(v = cli_value(cmd, argc, argv, i))) return -1;
        char *end;
        double t = strtod(v, &end);
        if (end == v || *end || !(t >= 0) || t > 1e9) {
            cli_usage_error(cmd, "--dist-timeout '%s': expected seconds >= 0 (0: never)", v);
            return -1;
        }
        l3c_dist_set_timeout(t);
        return 1;
    }
    if (!strcmp(a, "--ubatch")) {
        if (!(v = cli_value(cmd, argc, argv, i))) return -1;
        char *end;
        long u = strtol(v, &end, 10);
        if (end == v || *end || u < 0 || u > 1 << 20) {
            cli_usage_error(
                cmd, "--ubatch '%s': expected tokens per micro-batch >= 0 (0: automatic)", v);
            return -1;
        }
        l3c_dist_set_ubatch((int32_t)u);
        return 1;
    }
    if (!strcmp(a, "--layers-per-rank")) {
        if (!(v = cli_value(cmd, argc, argv, i))) return -1;
        const int n = l3c_dist_size();
        free(g_layers_per_rank);
        if (!(g_layers_per_rank = calloc((size_t)n, sizeof *g_layers_per_rank))) {
            fprintf(stderr, "llama3c %s: out of memory\n", cmd);
            return -1;
        }
        int k = 0;
        for (const char *p = v; *p; k++) {
            char *end;
            long x = strtol(p, &end, 10);
            if (end == p || x < 1 || x > 1 << 20 || (*end && *end != ',') || k >= n) {
                cli_usage_error(cmd, "--layers-per-rank '%s': expected %d positive layer counts separated "
                                     "by commas, one per rank", v, n);
                return -1;
            }
            g_layers_per_rank[k] = (int32_t)x;
            p = *end ? end + 1 : end;
        }
        if (k != n) {
            cli_usage_error(cmd, "--layers-per-rank '%s' gives %d counts for %d ranks", v, k, n);
            return -1;
        }
        g_split = L3C_SPLIT_LAYERS;
        return 1;
    }
    return 0;
}

void cli_split_help(FILE *f) {
    fprintf(
        f,
        "distributed (a build with MPI=1, under mpirun -np N; docs/DISTRIBUTED.md):\n"
        "  --split none|tensor|layers  how the ranks share the model: tensor (heads, FFN and\n"
        "                          vocabulary; N <= KV heads) or layers (pipeline); default none\n"
        "  --layers-per-rank A,B,..  --split layers with these layer counts per rank\n"
        "  --ubatch N              --split layers: batches cross the stages in micro-batches\n"
        "                          of N tokens (pipelined; default max(32, tokens / 2 ranks))\n"
        "  --dist-timeout SEC      a rank stopped or hung for SEC s ends every rank, naming it\n"
        "                          (default 300, or $L3C_DIST_TIMEOUT; 0: never)\n");
}

int cli_opts_finish(const char *cmd, cli_opts *o) {
    if (!o->model_path) return cli_usage_error(cmd, "no model: pass -m FILE.gguf");
    if (!o->seed_set) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o->sp.seed = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^
                     ((uint64_t)getpid() << 32);
        l3c_dist_bcast(&o->sp.seed, sizeof o->sp.seed); /* every rank of a distributed run draws alike */
    }
    return 0;
}

void cli_opts_help(FILE *f, const cli_opts *d) {
    fprintf(
        f,
        "model and context:\n"
        "  -m, --model FILE        GGUF model (required)\n"
        "  -t, --threads N         worker threads (default: physical cores)\n"
        "  --bf16                  F16/BF16 weight matrices multiply in bfloat16 where the CPU "
        "has\n"
        "                          bf16 dot products (AVX512-BF16): faster prompts, weights and\n"
        "                          activations rounded to ~3 significant digits (default: exact);\n"
        "                          on AMX also Q4_0/Q8_0/Q4_K/Q5_K/Q6_K ones in prompts (>= 32 "
        "tokens)\n"
        "  -c, --ctx-size N        context positions (default: the model's, capped by a 1 GiB KV "
        "cache)\n"
        "  -b, --batch-size N      prompt tokens per forward pass (default %d)\n"
        "  --lora FILE             apply a LoRA adapter: a GGUF LoRA file or a PEFT folder "
        "(repeatable)\n"
        "  --lora-scale S          scale of the --lora before it (default 1; 0 disables it)\n"
        "generation:\n"
        "  -n, --n-predict N       tokens to generate, -1: until the end (default %d)\n"
        "  --ignore-eos            keep generating past end-of-generation tokens\n"
        "sampling:\n"
        "  --temp T                temperature, 0: greedy (default %g)\n"
        "  --top-k K               keep the K most likely tokens, 0: off (default %d)\n"
        "  --top-p P               nucleus: smallest set with probability >= P, 1: off (default "
        "%g)\n"
        "  --min-p M               drop tokens below M x the top probability, 0: off (default %g)\n"
        "  --repeat-penalty R      penalty for the last --repeat-last-n tokens, 1: off (default "
        "%g)\n"
        "  --repeat-last-n N       window of the repetition penalty (default %d)\n"
        "  --presence-penalty P    OpenAI's: subtract P from tokens already generated, -2..2 "
        "(default 0)\n"
        "  --frequency-penalty F   OpenAI's: subtract F x the count of each generated token, -2..2 "
        "(default 0)\n"
        "  --seed S                random seed (default: drawn at random)\n"
        "distributed (a build with MPI=1, under mpirun -np N; docs/DISTRIBUTED.md):\n"
        "  --split none|tensor|layers  how the ranks share the model (default none)\n"
        "  --layers-per-rank A,B,..  --split layers with these layer counts per rank\n"
        "  --ubatch N              --split layers: batches cross the stages in micro-batches\n"
        "                          of N tokens (pipelined; default max(32, tokens / 2 ranks))\n"
        "  --dist-timeout SEC      a rank stopped or hung for SEC s ends every rank, naming it\n"
        "                          (default 300, or $L3C_DIST_TIMEOUT; 0: never)\n"
        "output:\n"
        "  -v, --verbose           loading details and the seed on stderr\n"
        "  --no-timings            no speed summary on stderr\n"
        "llama.cpp spellings: --ctx for -c, \"_\" for \"-\" (--repeat_penalty); -ngl N, --mlock,\n"
        "  --no-mmap, --color, -cnv, --keep N, -fa are accepted and change nothing (a note says "
        "so)\n",
        (int)d->n_batch, (int)d->n_predict, (double)d->sp.temperature, (int)d->sp.top_k,
        (double)d->sp.top_p, (double)d->sp.min_p, (double)d->sp.repeat_penalty,
        (int)d->sp.repeat_last_n);
}

/* ---------------------------------------------------------------- model and session */

void cli_note_bf16(const char *cmd, const l3c_model *model) {
    l3c_model_info mi;
    l3c_model_get_info(model, &mi);
    if (mi.n_bf16_matmul == 0)
        fprintf(
            stderr,
            "llama3c %s: --bf16 changes nothing here: the model has no F16/BF16 matrices (nor, on "
            "the amx path, Q4_0/Q8_0/Q4_K/Q5_K/Q6_K ones), the %s kernels have no bf16 dot "
            "products (AVX512-BF16), or L3C_PACK=0\n",
            cmd, l3c_backend_path());
}

l3c_status cli_model_load(const char *path, l3c_model_params *mp, l3c_model **out) {
    mp->split = g_split;
    mp->layers_per_rank = g_layers_per_rank;
    return l3c_model_load(path, mp, out);
}

int cli_load_model(const char *cmd, const char *path, int n_threads, int verbose, int bf16,
                   l3c_model **out) {
    l3c_model_params mp = l3c_model_default_params();
    if (n_threads > 0) mp.n_threads = n_threads;
    mp.verbose = verbose;
    mp.bf16_matmul = bf16;
    mp.split = g_split;
    mp.layers_per_rank = g_layers_per_rank;
    fprintf(stderr, "llama3c %s: loading %s\n", cmd, path);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (l3c_model_load(path, &mp, out) != L3C_OK) {
        char what[4200];
        snprintf(what, sizeof what, "cannot load model '%s'", path);
        return cli_runtime_error(cmd, what);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (bf16) cli_note_bf16(cmd, *out);
    if (verbose) {
        l3c_model_info mi;
        l3c_model_get_info(*out, &mi);
        fprintf(stderr,
                "llama3c %s: %s (%s, %s), %d layers, n_embd %d, vocab %d, loaded in %.2f s, "
                "kernels: %s\n",
                cmd, mi.name, mi.arch, mi.file_type, (int)mi.n_layer, (int)mi.n_embd,
                (int)mi.n_vocab,
                (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9,
                l3c_backend_path());
    }
    return 0;
}

int cli_session_open(cli_session *s, const char *cmd, const cli_opts *o) {
    memset(s, 0, sizeof *s);
    s->cmd = cmd;
    if (cli_load_model(cmd, o->model_path, o->n_threads, o->verbose, o->bf16, &s->model))
        return CLI_ERR;
    s->tok = l3c_model_tokenizer(s->model);
    s->n_vocab = l3c_vocab_size(s->tok);

    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = o->n_ctx;
    cp.n_batch = o->n_batch;
    cp.n_threads = o->n_threads;
    if (l3c_context_create(s->model, &cp, &s->ctx) != L3C_OK) {
        cli_runtime_error(cmd, "cannot create a context");
        goto fail;
    }
    if (cli_lora_load(cmd, &o->lora, s->model, s->ctx, &s->adapters)) goto fail;
    s->n_adapters = o->lora.n;
    s->n_ctx = l3c_context_n_ctx(s->ctx);
    s->n_batch = o->n_batch;
    if (l3c_sampler_create(&o->sp, s->n_vocab, &s->smp) != L3C_OK) {
        cli_runtime_error(cmd, "cannot create the sampler");
        goto fail;
    }
    s->cache = malloc((size_t)s->n_ctx * sizeof *s->cache);
    if (!s->cache) {
        fprintf(stderr, "llama3c %s: out of memory\n", cmd);
        goto fail;
    }
    if (o->verbose)
        fprintf(stderr, "llama3c %s: context %d positions, seed %llu\n", cmd, (int)s->n_ctx,
                (unsigned long long)o->sp.seed);
    return 0;
fail:
    cli_session_close(s);
    return CLI_ERR;
}

void cli_spec_init(cli_spec *sp) {
    *sp = (cli_spec){.draft_max = 8};
}

int cli_spec_parse(const char *cmd, cli_spec *sp, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    long n;
    const char *v;
    if (cli_is(a, "--lookup")) {
        if (!(v = cli_value(cmd, argc, argv, i)) ||
            cli_parse_long(cmd, a, v, 1, CLI_LOOKUP_MAX, &n))
            return -1;
        sp->lookup = (int)n;
    } else if (cli_is(a, "--draft|-md|--model-draft")) {
        if (!(sp->draft = cli_value(cmd, argc, argv, i))) return -1;
    } else if (cli_is(a, "--draft-max|--draft-n")) {
        if (!(v = cli_value(cmd, argc, argv, i)) ||
            cli_parse_long(cmd, a, v, 1, CLI_LOOKUP_MAX, &n))
            return -1;
        sp->draft_max = (int)n;
    } else if (cli_is(a, "--draft-min")) {
        if (!(v = cli_value(cmd, argc, argv, i)) ||
            cli_parse_long(cmd, a, v, 0, CLI_LOOKUP_MAX, &n))
            return -1;
        sp->draft_min = (int)n;
    } else if (cli_is(a, "--draft-p-min")) {
        if (!(v = cli_value(cmd, argc, argv, i)) ||
            cli_parse_float(cmd, a, v, 0.0, 1.0, &sp->draft_p_min))
            return -1;
    } else {
        return 0;
    }
    return 1;
}

void cli_spec_help(FILE *f) {
    fprintf(
        f,
        "speculative decoding (docs/PERFORMANCE.md):\n"
        "  --lookup N              drafts from the sequence itself: up to N (1..%d) tokens that\n"
        "                          followed the last 3 or 2 tokens' latest earlier occurrence\n"
        "  --draft FILE            drafts from a smaller model with the same vocabulary\n"
        "  --draft-max K           the most tokens one draft proposes, 1..%d (default 8)\n"
        "  --draft-min K           verify no draft of fewer tokens (default 0)\n"
        "  --draft-p-min P         stop a draft where the draft model's top probability < P\n"
        "                          (default 0)\n"
        "  the target checks a draft in one batch; greedy output is identical, sampled output\n"
        "  has the same distribution; drafting pauses where few drafted tokens are accepted\n",
        CLI_LOOKUP_MAX, CLI_LOOKUP_MAX);
}

int cli_draft_vocab_check(const char *cmd, const l3c_tokenizer *tok, const char *path,
                          const l3c_tokenizer *dt, const char *draft_path) {
    const int32_t n_vocab = l3c_vocab_size(tok);
    if (l3c_vocab_size(dt) != n_vocab) {
        fprintf(stderr,
                "llama3c %s: the draft model '%s' has a vocabulary of %d tokens, the model '%s' "
                "%d: a draft needs the same vocabulary\n",
                cmd, draft_path, (int)l3c_vocab_size(dt), path, (int)n_vocab);
        return CLI_ERR;
    }
    for (int32_t id = 0; id < n_vocab; id++) {
        const char *a = l3c_token_text(tok, id), *b = l3c_token_text(dt, id);
        if (strcmp(a ? a : "", b ? b : "")) {
            fprintf(stderr,
                    "llama3c %s: the draft model '%s' and the model '%s' differ at token %d ('%s' "
                    "vs '%s'): a draft needs the same vocabulary\n",
                    cmd, draft_path, path, (int)id, b ? b : "", a ? a : "");
            return CLI_ERR;
        }
    }
    return 0;
}

int cli_session_spec(cli_session *s, const cli_opts *o, const cli_spec *sp) {
    s->spec = *sp;
    if (s->spec.draft_max > CLI_LOOKUP_MAX) s->spec.draft_max = CLI_LOOKUP_MAX;
    s->k_cur = s->spec.draft_max;
    if (!sp->draft) return 0;
    if (sp->lookup) {
        fprintf(stderr, "llama3c %s: --lookup and --draft exclude each other\n", s->cmd);
        return CLI_USAGE;
    }
    if (l3c_dist_size() > 1) {
        fprintf(stderr, "llama3c %s: --draft is not available in a distributed run\n", s->cmd);
        return CLI_USAGE;
    }
    if (cli_load_model(s->cmd, sp->draft, o->n_threads, o->verbose, o->bf16, &s->dmodel))
        return CLI_ERR;
    if (cli_draft_vocab_check(s->cmd, s->tok, o->model_path, l3c_model_tokenizer(s->dmodel),
                              sp->draft))
        return CLI_ERR;
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = s->n_ctx;
    cp.n_batch = o->n_batch;
    cp.n_threads = o->n_threads;
    if (l3c_context_create(s->dmodel, &cp, &s->dctx) != L3C_OK)
        return cli_runtime_error(s->cmd, "cannot create the draft model's context");
    if (l3c_context_n_ctx(s->dctx) < s->n_ctx) {
        fprintf(stderr,
                "llama3c %s: the draft model '%s' holds %d positions, fewer than the context's %d "
                "(use -c)\n",
                s->cmd, sp->draft, (int)l3c_context_n_ctx(s->dctx), (int)s->n_ctx);
        return CLI_ERR;
    }
    size_t nq = (size_t)s->spec.draft_max * (size_t)s->n_vocab;
    s->dcache = malloc((size_t)s->n_ctx * sizeof *s->dcache);
    s->q_ids = malloc(nq * sizeof *s->q_ids);
    s->q_p = malloc(nq * sizeof *s->q_p);
    if (!s->dcache || !s->q_ids || !s->q_p) {
        fprintf(stderr, "llama3c %s: out of memory for the draft\n", s->cmd);
        return CLI_ERR;
    }
    return 0;
}

void cli_session_close(cli_session *s) {
    free(s->dcache);
    free(s->q_ids);
    free(s->q_p);
    l3c_context_free(s->dctx);
    l3c_model_free(s->dmodel);
    free(s->cache);
    l3c_sampler_free(s->smp);
    l3c_context_free(s->ctx);
    cli_adapters_free(s->adapters, s->n_adapters);
    l3c_model_free(s->model);
    memset(s, 0, sizeof *s);
}

double cli_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Decodes one token at the end of the cache and keeps its logits. */
static int decode_one(cli_session *s, int32_t id) {
    int32_t pos = (int32_t)s->n_cache;
    l3c_batch b = {.n_tokens = 1, .tokens = &id, .pos = &pos};
    s->logits = NULL;
    if (l3c_decode(s->ctx, &b) != L3C_OK) return cli_runtime_error(s->cmd, "decode failed");
    s->cache[s->n_cache++] = id;
    s->logits = l3c_get_logits(s->ctx, 0);
    return 0;
}

int cli_lookup_draft(const int32_t *cache, int64_t n, int32_t id, int k, int32_t *draft) {
#define HIST(i) ((i) < n ? cache[i] : id)
    const int64_t h = n + 1;
    for (int m = 3; m >= 2; m--) {
        for (int64_t j = h - m - 1; j >= 0; j--) {
            int q = 0;
            while (q < m && HIST(j + q) == HIST(h - m + q)) q++;
            if (q < m) continue;
            int c = 0;
            for (; c < k && j + m + c < h; c++) draft[c] = HIST(j + m + c);
            return c;
        }
    }
    return 0;
#undef HIST
}

/* id and nd draft tokens in one batch, logits for every row; the cache takes id only */
static int decode_draft(cli_session *s, int32_t id, const int32_t *draft, int nd) {
    int32_t tok[CLI_LOOKUP_MAX + 1], pos[CLI_LOOKUP_MAX + 1];
    int8_t want[CLI_LOOKUP_MAX + 1];
    for (int j = 0; j <= nd; j++) {
        tok[j] = j ? draft[j - 1] : id;
        pos[j] = (int32_t)s->n_cache + j;
        want[j] = 1;
    }
    l3c_batch b = {.n_tokens = nd + 1, .tokens = tok, .pos = pos, .logits = want};
    s->logits = NULL;
    if (l3c_decode(s->ctx, &b) != L3C_OK) return cli_runtime_error(s->cmd, "decode failed");
    s->cache[s->n_cache++] = id;
    s->logits = l3c_get_logits(s->ctx, 0);
    s->n_drafted += nd;
    s->win_drafted += nd;
    s->n_rounds++;
    return 0;
}

/* After a draft of nd tokens of which the first acc were accepted: the next draft length, and a
 * pause when the recent acceptance is too low to pay for the drafting. */
static void spec_adapt(cli_session *s, int nd, int acc) {
    if (acc == nd)
        s->k_cur = s->k_cur + 2 < s->spec.draft_max ? s->k_cur + 2 : s->spec.draft_max;
    else
        s->k_cur = acc + 1 < s->spec.draft_max ? acc + 1 : s->spec.draft_max;
    /* a pause, doubling while acceptance stays low (64 .. 1024 tokens) */
    if (++s->win_rounds >= 4 && s->win_drafted >= 16) {
        if (s->win_accepted * 8 < s->win_drafted) {
            s->pause_len = s->pause_len ? (s->pause_len < 1024 ? 2 * s->pause_len : 1024) : 64;
            s->spec_pause = s->pause_len;
        } else {
            s->pause_len = 0;
        }
        s->win_rounds = 0;
        s->win_drafted = s->win_accepted = 0;
    }
}

/*
 * The draft model proposes up to k tokens after cache[0..n_cache) + id: its sequence 0 is first
 * brought to hold exactly that (keeping the common prefix with dcache, so the tokens it drafted
 * and the target accepted are not decoded again), then each proposed token is drawn with the
 * session's sampler from the draft's logits (its distribution kept in q_ids/q_p for
 * l3c_sampler_verify) and accepted provisionally; the sampler is rolled back at the end.
 * Returns the number proposed (0: none), -1 on error (printed).
 */
static int draft_propose(cli_session *s, int32_t id, int k, int32_t *draft) {
    const int64_t n = s->n_cache + 1;
#define SEQ(i) ((i) < s->n_cache ? s->cache[i] : id)
    int64_t keep = 0;
    while (keep < n - 1 && keep < s->n_dcache && s->dcache[keep] == SEQ(keep))
        keep++; /* at most n - 1: the last one is decoded again for its logits */
    if (keep < s->n_dcache && l3c_kv_seq_truncate(s->dctx, 0, (int32_t)keep) != L3C_OK)
        return cli_runtime_error(s->cmd, "cannot truncate the draft's KV cache"), -1;
    s->n_dcache = keep;
    int32_t tok[64], pos[64];
    const float *dl = NULL;
    while (s->n_dcache < n) {
        int m = 0;
        for (; m < 64 && s->n_dcache + m < n; m++) {
            tok[m] = SEQ(s->n_dcache + m);
            pos[m] = (int32_t)(s->n_dcache + m);
        }
        l3c_batch b = {.n_tokens = m, .tokens = tok, .pos = pos};
        if (l3c_decode(s->dctx, &b) != L3C_OK)
            return cli_runtime_error(s->cmd, "draft decode failed"), -1;
        memcpy(s->dcache + s->n_dcache, tok, (size_t)m * sizeof *tok);
        s->n_dcache += m;
        dl = l3c_get_logits(s->dctx, m - 1);
    }
#undef SEQ
    if (l3c_sampler_mark(s->smp) != L3C_OK)
        return cli_runtime_error(s->cmd, "sampler mark failed"), -1;
    int c = 0;
    for (; c < k; c++) {
        if (s->spec.draft_p_min > 0.0f) { /* the draft's own top probability (softmax at T = 1) */
            float mx = dl[0];
            for (int32_t j = 1; j < s->n_vocab; j++)
                if (dl[j] > mx) mx = dl[j];
            double z = 0.0;
            for (int32_t j = 0; j < s->n_vocab; j++)
                z += exp((double)(dl[j] - mx));
            if (1.0 / z < (double)s->spec.draft_p_min) break;
        }
        int32_t *qi = s->q_ids + (size_t)c * (size_t)s->n_vocab;
        float *qp = s->q_p + (size_t)c * (size_t)s->n_vocab;
        int32_t qn = l3c_sampler_probs(s->smp, dl, qi, qp, s->n_vocab);
        int32_t x = qn > 0 ? l3c_sampler_sample(s->smp, dl) : -1;
        if (x < 0) break; /* the grammar allows nothing: the target will say so */
        s->q_n[c] = qn;
        draft[c] = x;
        if (l3c_token_is_eog(s->tok, x) || c + 1 == k) {
            c++;
            break;
        }
        l3c_sampler_accept(s->smp, x);
        int32_t p = (int32_t)s->n_dcache;
        l3c_batch b = {.n_tokens = 1, .tokens = &x, .pos = &p};
        if (l3c_decode(s->dctx, &b) != L3C_OK) {
            l3c_sampler_rollback(s->smp);
            return cli_runtime_error(s->cmd, "draft decode failed"), -1;
        }
        s->dcache[s->n_dcache++] = x;
        dl = l3c_get_logits(s->dctx, 0);
    }
    if (l3c_sampler_rollback(s->smp) != L3C_OK)
        return cli_runtime_error(s->cmd, "sampler rollback failed"), -1;
    return c < s->spec.draft_min ? 0 : c;
}

int cli_session_feed(cli_session *s, const int32_t *ids, int64_t n) {
    s->n_prompt = 0;
    s->t_prompt = 0;
    if (n <= 0) {
        fprintf(stderr, "llama3c %s: the prompt is empty (no tokens)\n", s->cmd);
        return CLI_ERR;
    }
    if (n > s->n_ctx) {
        fprintf(stderr,
                "llama3c %s: the prompt has %lld tokens, more than the context's %d (use -c)\n",
                s->cmd, (long long)n, (int)s->n_ctx);
        return CLI_ERR;
    }
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->n_vocab) {
            fprintf(stderr, "llama3c %s: token id %d is outside the vocabulary [0, %d)\n", s->cmd,
                    (int)ids[i], (int)s->n_vocab);
            return CLI_ERR;
        }
    int64_t keep = 0;
    while (keep < n && keep < s->n_cache && s->cache[keep] == ids[keep])
        keep++;
    if (keep == n && s->n_cache == n && s->logits) return 0; /* nothing new, logits still valid */
    if (keep == n) keep = n - 1; /* re-evaluate the last one for its logits */
    if (keep < s->n_cache) {
        s->logits = NULL;
        if (l3c_kv_seq_truncate(s->ctx, 0, (int32_t)keep) != L3C_OK)
            return cli_runtime_error(s->cmd, "cannot truncate the KV cache");
        s->n_cache = keep;
    }
    int32_t *pos = malloc((size_t)s->n_batch * sizeof *pos);
    if (!pos) {
        fprintf(stderr, "llama3c %s: out of memory\n", s->cmd);
        return CLI_ERR;
    }
    double t0 = cli_now_s();
    int rc = 0;
    while (s->n_cache < n) {
        int32_t m = (int32_t)(n - s->n_cache < s->n_batch ? n - s->n_cache : s->n_batch);
        for (int32_t j = 0; j < m; j++)
            pos[j] = (int32_t)s->n_cache + j;
        l3c_batch b = {.n_tokens = m, .tokens = ids + s->n_cache, .pos = pos};
        s->logits = NULL;
        if (l3c_decode(s->ctx, &b) != L3C_OK) {
            rc = cli_runtime_error(s->cmd, "decoding the prompt failed");
            break;
        }
        memcpy(s->cache + s->n_cache, ids + s->n_cache, (size_t)m * sizeof *ids);
        s->n_cache += m;
        s->n_prompt += m;
        if (s->n_cache == n) s->logits = l3c_get_logits(s->ctx, m - 1);
    }
    s->t_prompt = cli_now_s() - t0;
    free(pos);
    if (!rc && !s->logits) {
        fprintf(stderr, "llama3c %s: no logits after the prompt\n", s->cmd);
        rc = CLI_ERR;
    }
    return rc;
}

/* Growable byte string for held-back UTF-8 bytes and the collected text. */
typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static int sb_add(strbuf *b, const char *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int cli_session_generate(cli_session *s, const cli_opts *o, const cli_gen_opts *g) {
    strbuf pend = {0}, text = {0};
    char small[256], *piece = small;
    size_t piece_cap = sizeof small;
    int rc = 0;
    int32_t draft[CLI_LOOKUP_MAX];
    int nd = 0, di = 0; /* draft tokens in the cache's rows past n_cache; the next one to match */
    s->n_gen = 0;
    s->t_gen = 0;
    s->n_drafted = s->n_accepted = s->n_rounds = 0;
    if (g->text) *g->text = NULL;
    if (!s->logits) {
        fprintf(stderr, "llama3c %s: nothing to continue (no prompt evaluated)\n", s->cmd);
        return CLI_ERR;
    }
    double t0 = cli_now_s();
    for (int64_t i = 0; o->n_predict < 0 || i < o->n_predict; i++) {
        if (g->stop && *g->stop) break;
        int32_t id = di < nd && s->dmodel
                         ? l3c_sampler_verify(s->smp, s->logits, draft[di],
                                              s->q_ids + (size_t)di * (size_t)s->n_vocab,
                                              s->q_p + (size_t)di * (size_t)s->n_vocab, s->q_n[di])
                         : l3c_sampler_sample(s->smp, s->logits);
        l3c_dist_bcast(&id, sizeof id); /* a distributed run follows rank 0's choice */
        if (id < 0) {
            rc = cli_runtime_error(s->cmd, "sampling failed");
            break;
        }
        l3c_sampler_accept(s->smp, id);
        if (!o->ignore_eos && l3c_token_is_eog(s->tok, id)) break;
        s->n_gen++;

        if (g->print_ids) {
            if (g->out) fprintf(g->out, "%s%d", s->n_gen > 1 ? " " : "", (int)id);
        } else if (g->print_special || !l3c_token_is_special(s->tok, id)) {
            int32_t prev = s->n_cache > 0 ? s->cache[s->n_cache - 1] : -1;
            int32_t nb = l3c_token_to_piece(s->tok, prev, id, piece, (int32_t)piece_cap);
            if (nb < 0) {
                char *bigger = realloc(piece == small ? NULL : piece, (size_t)-nb);
                if (!bigger) {
                    fprintf(stderr, "llama3c %s: out of memory\n", s->cmd);
                    rc = CLI_ERR;
                    break;
                }
                piece = bigger;
                piece_cap = (size_t)-nb;
                nb = l3c_token_to_piece(s->tok, prev, id, piece, (int32_t)piece_cap);
            }
            if (nb > 0 && (sb_add(&pend, piece, (size_t)nb) ||
                           (g->text && sb_add(&text, piece, (size_t)nb)))) {
                fprintf(stderr, "llama3c %s: out of memory\n", s->cmd);
                rc = CLI_ERR;
                break;
            }
            size_t ok = l3c_utf8_complete(pend.p ? pend.p : "", pend.n);
            if (ok && g->out) fwrite(pend.p, 1, ok, g->out);
            memmove(pend.p, pend.p + ok, pend.n - ok);
            pend.n -= ok;
        }
        if (g->out) fflush(g->out);

        if (l3c_sampler_grammar_done(s->smp)) break;           /* the grammar allows nothing more */
        if (o->n_predict >= 0 && i + 1 >= o->n_predict) break; /* the last token needs no decode */
        if (di < nd && id == draft[di]) { /* drafted: its row and the logits after it exist */
            s->cache[s->n_cache++] = id;
            s->logits = l3c_get_logits(s->ctx, ++di);
            s->n_accepted++;
            s->win_accepted++;
            continue;
        }
        if (di < nd && l3c_kv_seq_truncate(s->ctx, 0, (int32_t)s->n_cache) != L3C_OK) {
            rc = cli_runtime_error(s->cmd, "cannot drop the rejected draft");
            break;
        }
        if (nd > 0) spec_adapt(s, nd, di);
        nd = di = 0;
        if (s->n_cache >= s->n_ctx) {
            fprintf(stderr, "\nllama3c %s: context full (%d positions); stopping\n", s->cmd,
                    (int)s->n_ctx);
            break;
        }
        int k = s->spec.lookup ? s->spec.lookup : s->dmodel ? s->k_cur : 0;
        if (k > CLI_LOOKUP_MAX) k = CLI_LOOKUP_MAX;
        if (k > s->n_ctx - s->n_cache - 1) k = (int)(s->n_ctx - s->n_cache - 1);
        if (o->n_predict >= 0 && k > o->n_predict - i - 2) k = (int)(o->n_predict - i - 2);
        if (s->spec_pause > 0) {
            s->spec_pause--;
            k = 0;
        }
        if (k > 0 && s->spec.lookup) nd = cli_lookup_draft(s->cache, s->n_cache, id, k, draft);
        if (k > 0 && s->dmodel && (nd = draft_propose(s, id, k, draft)) < 0) {
            rc = CLI_ERR;
            break;
        }
        if ((rc = nd > 0 ? decode_draft(s, id, draft, nd) : decode_one(s, id))) break;
    }
    /* drafted rows never matched: the cache holds exactly cache[0..n_cache) again */
    if (di < nd && l3c_kv_seq_truncate(s->ctx, 0, (int32_t)s->n_cache) != L3C_OK && !rc)
        rc = cli_runtime_error(s->cmd, "cannot drop the rejected draft");
    s->t_gen = cli_now_s() - t0;
    if (pend.n && g->out) fwrite(pend.p, 1, pend.n, g->out); /* an incomplete tail, as it is */
    if (g->out) fflush(g->out);
    if (piece != small) free(piece);
    free(pend.p);
    if (g->text && !rc) {
        if (!text.p && sb_add(&text, "", 0)) rc = CLI_ERR;
        *g->text = text.p;
        text.p = NULL;
    }
    free(text.p);
    /* the logits of the last sampled (undecoded) token do not exist: a later feed re-evaluates */
    if (s->logits && s->n_gen > 0) s->logits = NULL;
    return rc;
}

void cli_print_timings(const cli_session *s) {
    fprintf(stderr, "prompt: %lld tokens, %.2f tok/s | generation: %lld tokens, %.2f tok/s\n",
            (long long)s->n_prompt, s->t_prompt > 0 ? (double)s->n_prompt / s->t_prompt : 0.0,
            (long long)s->n_gen, s->t_gen > 0 ? (double)s->n_gen / s->t_gen : 0.0);
}

/* ---------------------------------------------------------------- files and tokens */

char *cli_read_file(const char *cmd, const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "llama3c %s: cannot open '%s': %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    strbuf b = {0};
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (sb_add(&b, chunk, r)) {
            fprintf(stderr, "llama3c %s: out of memory reading '%s'\n", cmd, path);
            free(b.p);
            if (f != stdin) fclose(f);
            return NULL;
        }
    int err = ferror(f);
    if (f != stdin) fclose(f);
    if (err || (!b.p && sb_add(&b, "", 0))) {
        fprintf(stderr, "llama3c %s: cannot read '%s'\n", cmd, path);
        free(b.p);
        return NULL;
    }
    *len = b.n;
    return b.p;
}

int cli_tokenize(const char *cmd, const l3c_tokenizer *tok, const char *text, size_t len, int flags,
                 int32_t **ids, int64_t *n) {
    *ids = NULL;
    *n = 0;
    int64_t need = l3c_tokenize(tok, text, len, NULL, 0, flags);
    if (need == INT64_MIN) return cli_runtime_error(cmd, "cannot tokenize the prompt");
    if (need < 0) need = -need;
    int32_t *out = malloc((size_t)(need ? need : 1) * sizeof *out);
    if (!out) {
        fprintf(stderr, "llama3c %s: out of memory\n", cmd);
        return CLI_ERR;
    }
    int64_t got = l3c_tokenize(tok, text, len, out, need, flags);
    if (got < 0) {
        free(out);
        return cli_runtime_error(cmd, "cannot tokenize the prompt");
    }
    *ids = out;
    *n = got;
    return 0;
}
