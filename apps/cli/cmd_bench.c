/*
 * cmd_bench.c -- `llama3c bench`: prompt-processing and generation speed, measured like
 * llama.cpp's llama-bench so the two can be compared on the same file and threads:
 *   pp: an empty sequence, then one batch of n_prompt tokens (in n_batch chunks) -> tokens/s;
 *   tg: an empty sequence, then n_gen single-token decodes -> tokens/s;
 *   --batch-sweep N: after a 64-token prefix, one decode call of b = 1..N tokens of one sequence
 *   with logits for every row (what a speculative draft's verification costs), median of 8 calls
 *   per rep -> ms per call (wall and process CPU, best rep) and their ratio to b = 1 (flat when the
 *   weights are read once per call).
 * Tokens are pseudo-random ids (fixed seed); speed does not depend on them. Each test runs
 * after one warm-up and is repeated -r times; medians and spread (min..max) are reported,
 * with peak RSS and the kernel path. Built on the public header only.
 */
#include "cli.h"
#include "common.h"

#include "llama3c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CMD "bench"

static void usage(FILE *f) {
    fprintf(f,
            "usage: llama3c bench -m MODEL [options]\n"
            "Measures prompt processing (pp) and generation (tg) speed.\n\n"
            "  -m, --model FILE   GGUF model (required)\n"
            "  -p N               prompt tokens (default 512; 0 skips pp)\n"
            "  -n N               generated tokens (default 128; 0 skips tg)\n"
            "  -b, --batch N      most tokens per decode call in pp (default 512)\n"
            "  -t, --threads N    threads (default: physical cores)\n"
            "  -r, --reps N       repetitions (default 3)\n"
            "  --kv TYPE          KV cache type f16 (default), f32, q8_0\n"
            "  --bf16             F16/BF16 matrices multiply in bfloat16 (see llama3c run --help)\n"
            "  -c, --ctx-size N   context size to allocate (default: max(-p, -n) + 8; also --ctx)\n"
            "  --batch-sweep N    also time one decode call of 1..N tokens (N <= 64) of one\n"
            "                     sequence after a 64-token prefix (speculative verification)\n"
            "  --json             print one JSON object instead of the table\n"
            "  --split S, --layers-per-rank A,B,.., --ubatch N  under mpirun: how the ranks share\n"
            "                     the model (see llama3c run --help); each rank reports its peak\n"
            "                     RSS, the bytes it sent per generated token and its share of the\n"
            "                     tg / pp time in message passing on stderr\n"
            "  -h, --help         this text\n");
}

/* KiB of the mapped file `path` resident in this process now (Linux /proc/self/smaps; -1 when
 * unknown): a distributed rank should hold none (docs/DISTRIBUTED.md, "Memory per rank") */
static double file_rss_kib(const char *path) {
    char *canon = realpath(path, NULL);
    FILE *f = canon ? fopen("/proc/self/smaps", "r") : NULL;
    double kib = -1;
    if (f) {
        char line[4096];
        int in = 0;
        size_t n = strlen(canon);
        kib = 0;
        while (fgets(line, sizeof line, f)) {
            unsigned long long v;
            const char *sp = strchr(line, ' ');
            if (sp && strchr(line, '-') && strchr(line, '-') < sp) { /* a mapping's first line */
                size_t len = strcspn(line, "\n");
                in = len > n && memcmp(line + len - n, canon, n) == 0 && line[len - n - 1] == ' ';
            } else if (in && sscanf(line, "Rss: %llu kB", &v) == 1)
                kib += (double)v;
        }
        fclose(f);
    }
    free(canon);
    return kib;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process (every thread), seconds */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double median, min, max;
} stats;

static stats summarize(double *v, int n) {
    stats s = {0, 0, 0};
    if (n <= 0) return s;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    s.min = v[0];
    s.max = v[n - 1];
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

/* Decodes n tokens from position 0 of sequence 0, `chunk` tokens per call; returns seconds or
 * a negative value on error (message on stderr); *cpu (if not NULL) gets the process CPU
 * seconds spent (all threads: the measure that other processes on the machine disturb least). */
static double timed_decode(l3c_context *ctx, const int32_t *tokens, int32_t *pos, int32_t n,
                           int32_t chunk, double *cpu) {
    if (l3c_kv_seq_truncate(ctx, 0, 0) != L3C_OK) return -1;
    double c0 = cpu_s();
    double t0 = now_s();
    for (int32_t i = 0; i < n; i += chunk) {
        int32_t m = n - i < chunk ? n - i : chunk;
        for (int32_t j = 0; j < m; j++)
            pos[j] = i + j;
        l3c_batch b = {.n_tokens = m, .tokens = tokens + i, .pos = pos};
        if (l3c_decode(ctx, &b) != L3C_OK) {
            fprintf(stderr, "llama3c bench: %s\n", l3c_last_error());
            return -1;
        }
    }
    double wall = now_s() - t0;
    if (cpu) *cpu = cpu_s() - c0;
    return wall;
}

int cmd_bench(int argc, char **argv) {
    const char *path = NULL;
    int n_prompt = 512, n_gen = 128, n_batch = 512, threads = 0, reps = 3, json = 0, n_ctx = 0;
    int kv_type = L3C_KV_F16, bf16 = 0, sweep = 0;
    enum { SWEEP_PREFIX = 64, SWEEP_MAX = 64, SWEEP_CALLS = 8 };
    double sweep_ms[SWEEP_MAX + 1] = {0}, sweep_cpu[SWEEP_MAX + 1] = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int bad = 0, r;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (cli_is(a, CLI_MODEL))
            bad = cli_str(CMD, argc, argv, &i, &path);
        else if (cli_is(a, "-p|--n-prompt"))
            bad = cli_int(CMD, argc, argv, &i, 0, 1 << 20, &n_prompt);
        else if (cli_is(a, "-n|--n-gen"))
            bad = cli_int(CMD, argc, argv, &i, 0, 1 << 20, &n_gen);
        else if (cli_is(a, CLI_BATCH))
            bad = cli_int(CMD, argc, argv, &i, 1, 1 << 20, &n_batch);
        else if (cli_is(a, CLI_THREADS))
            bad = cli_int(CMD, argc, argv, &i, 1, 1024, &threads);
        else if (cli_is(a, "-r|--reps|--repetitions"))
            bad = cli_int(CMD, argc, argv, &i, 1, 100000, &reps);
        else if (cli_is(a, CLI_CTX))
            bad = cli_int(CMD, argc, argv, &i, 0, INT32_MAX, &n_ctx);
        else if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--batch-sweep"))
            bad = cli_int(CMD, argc, argv, &i, 1, SWEEP_MAX, &sweep);
        else if (!strcmp(a, "--bf16"))
            bf16 = 1;
        else if (!strcmp(a, "--kv"))
            bad = cli_kv(CMD, argc, argv, &i, &kv_type);
        else if ((r = cli_split_parse(CMD, argc, argv, &i)))
            bad = r < 0;
        else if ((r = cli_compat_parse(CMD, argc, argv, &i)))
            bad = r < 0;
        else
            return cli_usage_error(CMD, "unknown option '%s'", a);
        if (bad) return CLI_USAGE;
    }
    if (!path) return cli_usage_error(CMD, "no model: pass -m FILE.gguf");
    if (!n_prompt && !n_gen && !sweep)
        return cli_usage_error(CMD, "-p and -n are both 0: nothing to measure");
    int32_t n_max = n_prompt > n_gen ? n_prompt : n_gen;
    if (sweep && n_max < SWEEP_PREFIX + sweep) n_max = SWEEP_PREFIX + sweep;
    if (n_ctx != 0 && n_ctx < n_max)
        return cli_usage_error(CMD, "-c %d is smaller than max(-p, -n) = %d", n_ctx, (int)n_max);
    if (threads <= 0) threads = l3c_default_threads();

    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = threads;
    mp.bf16_matmul = bf16;
    l3c_model *model = NULL;
    if (cli_model_load(path, &mp, &model) != L3C_OK) {
        fprintf(stderr, "llama3c bench: %s\n", l3c_last_error());
        return 1;
    }
    if (bf16) cli_note_bf16("bench", model);
    l3c_model_info info;
    l3c_model_get_info(model, &info);
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = n_ctx ? n_ctx : n_max + 8;
    cp.n_batch = n_batch < n_prompt ? n_batch : (n_prompt > 0 ? n_prompt : 1);
    if (cp.n_batch < sweep) cp.n_batch = sweep;
    cp.n_threads = threads;
    cp.kv_type = kv_type;
    l3c_context *ctx = NULL;
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(n_max + 1));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(cp.n_batch + 1));
    double *pp = calloc((size_t)reps, sizeof(double)), *tg = calloc((size_t)reps, sizeof(double));
    double *ppc = calloc((size_t)reps, sizeof(double)), *tgc = calloc((size_t)reps, sizeof(double));
    int rc = 1;
    double tg_bytes = 0; /* bytes this rank sent per generated token (distributed runs) */
    double tg_comm = 0;  /* share of the tg time this rank spent in message passing */
    double pp_comm = 0;  /* ... of the pp time (waiting for the previous pipeline stage, etc.) */
    if (!tokens || !pos || !pp || !tg || !ppc || !tgc) {
        fprintf(stderr, "llama3c bench: out of memory\n");
        goto done;
    }
    if (l3c_context_create(model, &cp, &ctx) != L3C_OK) {
        fprintf(stderr, "llama3c bench: %s\n", l3c_last_error());
        goto done;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int32_t i = 0; i < n_max; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokens[i] = (int32_t)(x % (uint64_t)info.n_vocab);
    }
    /* warm-up: page the weights in, spin the thread pool up */
    if (timed_decode(ctx, tokens, pos, n_prompt ? (n_prompt < 16 ? n_prompt : 16) : 1, cp.n_batch,
                     NULL) < 0)
        goto done;
    for (int r = 0; r < reps; r++) {
        double c = 0;
        if (n_prompt) {
            const double comm0 = l3c_dist_comm_seconds();
            double s = timed_decode(ctx, tokens, pos, n_prompt, cp.n_batch, &c);
            if (s < 0) goto done;
            pp_comm = (l3c_dist_comm_seconds() - comm0) / s;
            pp[r] = n_prompt / s;
            ppc[r] = 1e3 * c / n_prompt;
        }
        if (n_gen) {
            const uint64_t sent0 = l3c_dist_bytes_sent();
            const double comm0 = l3c_dist_comm_seconds();
            double s = timed_decode(ctx, tokens, pos, n_gen, 1, &c);
            if (s < 0) goto done;
            tg_bytes = (double)(l3c_dist_bytes_sent() - sent0) / n_gen;
            tg_comm = (l3c_dist_comm_seconds() - comm0) / s;
            tg[r] = n_gen / s;
            tgc[r] = 1e3 * c / n_gen;
        }
        if (!json && (n_prompt || n_gen))
            fprintf(stderr, "llama3c bench: rep %d/%d: pp %.2f t/s, tg %.2f t/s\n", r + 1, reps,
                    pp[r], tg[r]);
    }
    if (sweep) {
        int32_t spos[SWEEP_MAX];
        int8_t want[SWEEP_MAX];
        double calls[SWEEP_CALLS], cpus[SWEEP_CALLS];
        memset(want, 1, sizeof want);
        if (timed_decode(ctx, tokens, pos, SWEEP_PREFIX, cp.n_batch, NULL) < 0) goto done;
        for (int b = 1; b <= sweep; b++) {
            double best = -1, best_cpu = -1;
            for (int r = 0; r < reps; r++) {
                for (int k = 0; k < SWEEP_CALLS; k++) {
                    for (int j = 0; j < b; j++)
                        spos[j] = SWEEP_PREFIX + j;
                    l3c_batch bt = {.n_tokens = b,
                                    .tokens = tokens + SWEEP_PREFIX,
                                    .pos = spos,
                                    .logits = want};
                    double t0 = now_s(), c0 = cpu_s();
                    if (l3c_decode(ctx, &bt) != L3C_OK ||
                        l3c_kv_seq_truncate(ctx, 0, SWEEP_PREFIX) != L3C_OK) {
                        fprintf(stderr, "llama3c bench: %s\n", l3c_last_error());
                        goto done;
                    }
                    calls[k] = now_s() - t0;
                    cpus[k] = cpu_s() - c0;
                }
                double med = summarize(calls, SWEEP_CALLS).median;
                double cmed = summarize(cpus, SWEEP_CALLS).median;
                if (best < 0 || med < best) best = med;
                if (best_cpu < 0 || cmed < best_cpu) best_cpu = cmed;
            }
            sweep_ms[b] = 1e3 * best;
            sweep_cpu[b] = 1e3 * best_cpu;
            if (!json)
                fprintf(stderr, "llama3c bench: batch %d: %.3f ms per call\n", b, sweep_ms[b]);
        }
    }
    stats spp = summarize(pp, reps), stg = summarize(tg, reps);
    stats cpp = summarize(ppc, reps), ctg = summarize(tgc, reps);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long long rss = (long long)ru.ru_maxrss * 1024;
    if (l3c_dist_size() > 1)
        fprintf(stderr,
                "llama3c bench: rank %d of %d: peak RSS %.1f MiB, sent %.0f bytes per generated token, "
                "%.0f%% of tg in message passing, %.0f%% of pp, %.0f KiB of the model file resident\n",
                l3c_dist_rank(), l3c_dist_size(), rss / 1048576.0, tg_bytes, 100.0 * tg_comm, 100.0 * pp_comm,
                file_rss_kib(path));
    if (json) {
        printf("{\"model\": \"");
        for (const char *c = path; *c; c++) {
            if (*c == '"' || *c == '\\') putchar('\\');
            putchar(*c);
        }
        printf("\", \"model_type\": \"%s\", \"n_params\": %lld, \"model_bytes\": %zu, "
               "\"threads\": %d, \"n_ctx\": %d, \"n_prompt\": %d, \"n_gen\": %d, \"n_batch\": %d, "
               "\"reps\": %d, "
               "\"pp_tokens_per_s\": %.3f, \"pp_min\": %.3f, \"pp_max\": %.3f, "
               "\"tg_tokens_per_s\": %.3f, \"tg_min\": %.3f, \"tg_max\": %.3f, "
               "\"pp_cpu_ms_per_token\": %.4f, \"tg_cpu_ms_per_token\": %.4f, "
               "\"peak_rss_bytes\": %lld, \"path\": \"%s\", \"bf16_matrices\": %d, "
               "\"ranks\": %d, \"tg_bytes_sent_per_token\": %.1f",
               info.file_type, (long long)info.n_params, info.weight_bytes, threads, cp.n_ctx,
               n_prompt, n_gen, cp.n_batch, reps, spp.median, spp.min, spp.max, stg.median, stg.min,
               stg.max, cpp.min, ctg.min, rss, l3c_backend_path(), (int)info.n_bf16_matmul,
               l3c_dist_size(), tg_bytes);
        if (sweep) {
            printf(", \"batch_sweep_ms\": [");
            for (int b = 1; b <= sweep; b++)
                printf("%s%.4f", b > 1 ? ", " : "", sweep_ms[b]);
            printf("], \"batch_sweep_cpu_ms\": [");
            for (int b = 1; b <= sweep; b++)
                printf("%s%.4f", b > 1 ? ", " : "", sweep_cpu[b]);
            printf("]");
        }
        printf("}\n");
    } else {
        printf("model   %s (%s, %.2f GB of weights)\n", path, info.file_type,
               info.weight_bytes / 1e9);
        printf("threads %d, path %s%s, %d reps, n_ctx %d\n", threads, l3c_backend_path(),
               info.n_bf16_matmul ? " (bf16 matmul)" : "", reps, cp.n_ctx);
        if (n_prompt)
            printf("pp%-5d %9.2f t/s  (min %.2f, max %.2f)  CPU %.3f ms/token (best)\n", n_prompt,
                   spp.median, spp.min, spp.max, cpp.min);
        if (n_gen)
            printf("tg%-5d %9.2f t/s  (min %.2f, max %.2f)  CPU %.3f ms/token (best)\n", n_gen,
                   stg.median, stg.min, stg.max, ctg.min);
        for (int b = 1; b <= sweep; b++)
            printf("batch %-3d %8.3f ms per call (%.2fx batch 1), CPU %.3f ms per call (%.2fx)\n",
                   b, sweep_ms[b], sweep_ms[b] / sweep_ms[1], sweep_cpu[b],
                   sweep_cpu[b] / sweep_cpu[1]);
        printf("peak RSS %.1f MiB\n", rss / 1048576.0);
    }
    rc = 0;
done:
    free(tokens);
    free(pos);
    free(pp);
    free(tg);
    free(ppc);
    free(tgc);
    l3c_context_free(ctx);
    l3c_model_free(model);
    return rc;
}
