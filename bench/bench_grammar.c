/*
 * bench_grammar.c -- cost of grammar-constrained sampling per token (docs/GRAMMAR.md).
 *
 * Walks a document that the grammar accepts token by token (tokenized by the vocabulary under
 * test) and times, at every step:
 *   mask      the full token mask (trie walk), computed afresh (cache off): the worst case;
 *   mask+c    the same with the per-state mask cache on (what the sampler uses);
 *   sample    l3c_sampler_sample + accept with the grammar, greedy, on logits where the
 *             document's token is the best one (the model agrees with the grammar: fast path);
 *   sample-r  the same on logits whose best token the grammar rejects (forces the mask path);
 *   plain     l3c_sampler_sample + accept without a grammar on the same logits (the baseline).
 * Prints the compile time and median / mean / p90 milliseconds per token of each.
 *
 * Build (after `make lib`):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Iinclude -Isrc bench/bench_grammar.c build/libllama3c.a \
 *      -lpcre2-8 -ljansson -lpthread -lm -o build/bench_grammar
 * Run: build/bench_grammar VOCAB GRAMMAR.gbnf DOCUMENT [--json]
 *   VOCAB: tokenizer.model, tokenizer.json or a GGUF; --json: one JSON line instead of a table.
 */
#include "grammar/grammar.h"
#include "llama3c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int dcmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct stat3 {
    double median, mean, p90;
} stat3;

static stat3 stats(double *v, int n) {
    stat3 s = {0, 0, 0};
    if (n <= 0) return s;
    for (int i = 0; i < n; i++)
        s.mean += v[i];
    s.mean /= n;
    qsort(v, (size_t)n, sizeof *v, dcmp);
    s.median = v[n / 2];
    s.p90 = v[(int)(0.9 * (n - 1))];
    return s;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_grammar VOCAB GRAMMAR.gbnf DOCUMENT [--json]\n");
        return 2;
    }
    int as_json = argc > 4 && !strcmp(argv[4], "--json");
    l3c_tokenizer *tok = NULL;
    if (l3c_tokenizer_load(argv[1], &tok) != L3C_OK) {
        fprintf(stderr, "bench_grammar: %s\n", l3c_last_error());
        return 1;
    }
    size_t glen, dlen;
    char *gbnf = read_file(argv[2], &glen), *doc = read_file(argv[3], &dlen);
    if (!gbnf || !doc) {
        fprintf(stderr, "bench_grammar: cannot read %s or %s\n", argv[2], argv[3]);
        return 1;
    }
    double t0 = l3c_time_s();
    l3c_grammar *g = NULL;
    if (l3c_grammar_from_gbnf(tok, gbnf, glen, NULL, &g) != L3C_OK) {
        fprintf(stderr, "bench_grammar: %s\n", l3c_last_error());
        return 1;
    }
    double t_compile = l3c_time_s() - t0;
    int32_t nv = l3c_vocab_size(tok);
    int32_t *ids = malloc((dlen + 16) * sizeof *ids);
    int64_t n = l3c_tokenize(tok, doc, dlen, ids, (int64_t)dlen + 16, 0);
    double *t_mask = malloc((size_t)n * sizeof(double)),
           *t_cached = malloc((size_t)n * sizeof(double));
    double *t_fast = malloc((size_t)n * sizeof(double)),
           *t_rej = malloc((size_t)n * sizeof(double));
    double *t_plain = malloc((size_t)n * sizeof(double));
    uint32_t *bits = malloc(((size_t)nv + 31) / 32 * 4);
    float *logits = malloc((size_t)nv * sizeof *logits);
    int64_t allowed_sum = 0;

    /* masks, uncached and cached, along the document */
    l3c_gmatch *m = NULL, *mc = NULL;
    if (l3c_gmatch_create(g, &m) != L3C_OK || l3c_gmatch_create(g, &mc) != L3C_OK) {
        fprintf(stderr, "bench_grammar: %s\n", l3c_last_error());
        return 1;
    }
    l3c_gmatch_set_cache(m, 0);
    for (int64_t i = 0; i < n; i++) {
        double a = l3c_time_s();
        int64_t cnt = l3c_gmatch_mask(m, bits, nv);
        double b = l3c_time_s();
        l3c_gmatch_mask(mc, bits, nv);
        double c = l3c_time_s();
        t_mask[i] = (b - a) * 1e3;
        t_cached[i] = (c - b) * 1e3;
        allowed_sum += cnt;
        if (!(bits[ids[i] >> 5] >> (ids[i] & 31) & 1) || l3c_gmatch_accept(m, ids[i]) != L3C_OK ||
            l3c_gmatch_accept(mc, ids[i]) != L3C_OK) {
            fprintf(stderr, "bench_grammar: the grammar rejects the document at token %lld (%d)\n",
                    (long long)i, (int)ids[i]);
            return 1;
        }
    }

    /* the sampler: greedy on logits that favour the document's token, or a rejected one */
    uint64_t x = 88172645463325252ull;
    int32_t never = -1; /* a control token: the grammar never allows it */
    for (int32_t k = 0; k < nv && never < 0; k++)
        if (l3c_token_is_special(tok, k) && !l3c_token_is_eog(tok, k)) never = k;
    if (never < 0) never = 0;
    for (int pass = 0; pass < 3; pass++) {
        l3c_sampler_params p = l3c_sampler_default_params();
        p.temperature = 0.0f;
        l3c_sampler *s = NULL;
        l3c_sampler_create(&p, nv, &s);
        if (pass < 2) l3c_sampler_set_grammar(s, g);
        for (int64_t i = 0; i < n; i++) {
            for (int32_t k = 0; k < nv; k++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                logits[k] = (float)(x >> 40) / (float)(1 << 24);
            }
            logits[ids[i]] = 2.0f;
            if (pass == 1) logits[never] = 3.0f; /* the best token is rejected: the mask path */
            double a = l3c_time_s();
            int32_t got = l3c_sampler_sample(s, logits);
            l3c_sampler_accept(s, got);
            double b = l3c_time_s();
            (pass == 0 ? t_fast : pass == 1 ? t_rej : t_plain)[i] = (b - a) * 1e3;
            if (got != ids[i] && pass < 2) {
                fprintf(stderr, "bench_grammar: sampler picked %d, not the document's %d at %lld\n",
                        (int)got, (int)ids[i], (long long)i);
                return 1;
            }
        }
        l3c_sampler_free(s);
    }
    stat3 sm = stats(t_mask, (int)n), sc = stats(t_cached, (int)n), sf = stats(t_fast, (int)n),
          sr = stats(t_rej, (int)n), sp = stats(t_plain, (int)n);
    if (as_json) {
        printf("{\"vocab\": %d, \"tokens\": %lld, \"compile_ms\": %.3f, \"mask_median_ms\": %.4f, "
               "\"mask_mean_ms\": %.4f, \"mask_p90_ms\": %.4f, \"cached_median_ms\": %.4f, "
               "\"cached_mean_ms\": %.4f, "
               "\"sample_fast_median_ms\": %.4f, \"sample_reject_median_ms\": %.4f, "
               "\"plain_median_ms\": %.4f, "
               "\"mean_allowed\": %.1f}\n",
               (int)nv, (long long)n, t_compile * 1e3, sm.median, sm.mean, sm.p90, sc.median,
               sc.mean, sf.median, sr.median, sp.median, (double)allowed_sum / (double)n);
    } else {
        printf("vocabulary %d tokens, document %lld tokens, grammar compiled in %.1f ms, mean %.0f "
               "tokens allowed\n",
               (int)nv, (long long)n, t_compile * 1e3, (double)allowed_sum / (double)n);
        printf("%-28s %10s %10s %10s\n", "ms per token", "median", "mean", "p90");
        printf("%-28s %10.4f %10.4f %10.4f\n", "mask (trie walk, no cache)", sm.median, sm.mean,
               sm.p90);
        printf("%-28s %10.4f %10.4f %10.4f\n", "mask (with state cache)", sc.median, sc.mean,
               sc.p90);
        printf("%-28s %10.4f %10.4f %10.4f\n", "sample+accept, grammar ok", sf.median, sf.mean,
               sf.p90);
        printf("%-28s %10.4f %10.4f %10.4f\n", "sample+accept, best reject", sr.median, sr.mean,
               sr.p90);
        printf("%-28s %10.4f %10.4f %10.4f\n", "sample+accept, no grammar", sp.median, sp.mean,
               sp.p90);
    }
    l3c_gmatch_free(m);
    l3c_gmatch_free(mc);
    l3c_grammar_free(g);
    l3c_tokenizer_free(tok);
    return 0;
}
