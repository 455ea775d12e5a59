/*
 * cmd_perplexity.c -- `llama3c perplexity`: perplexity of a text by llama.cpp's llama-perplexity
 * method, KL divergence against a base model's saved distributions, and multiple-choice scoring
 * (lm-evaluation-harness's acc / acc_norm). Built on llama3c.h only; docs/EVAL.md has the details.
 *
 * Perplexity (as llama-perplexity, so that figures compare): the whole text is tokenized once (BOS
 * first when the vocabulary adds one); chunk c holds tokens [c*n_ctx, (c+1)*n_ctx) and is evaluated
 * in a cleared cache from position 0 with its first token replaced by BOS (when the vocabulary adds
 * one); the logits at positions first = n_ctx/2 .. n_ctx-2 score the token after them, so
 * n_ctx-1-first tokens per chunk and only chunks that are whole. PPL = exp(mean nll),
 * +/- PPL * sqrt((mean nll^2 - mean nll^2) / (count - 1)).
 *
 * --save-logits FILE (little-endian; one row per scored position, in order):
 *   header  "L3CLOGP1" | u32 n_vocab | u32 n_ctx | u32 n_chunk | i32 bos (-1: first tokens kept)
 *           | u64 vocabulary fingerprint (FNV-1a 64 of every token's text) | char model[64]
 *   tokens  i32 [n_chunk * n_ctx]: the text's tokens (before the BOS replacement)
 *   rows    n_chunk * (n_ctx - 1 - n_ctx/2) of: f32 lo | f32 scale | f32 lp_next | u16 q[n_vocab]
 *           lp_next: the exact log p of the text's next token (the base's perplexity);
 *           q >= 1: log p = lo + scale * (q - 1), with lo = max(min log p, max log p - 24) and
 *           scale = (max log p - lo) / 65534, so |error| <= scale / 2 <= 24 / 131068;
 *           q = 0: log p < max log p - 24, taken as probability 0.
 * --kl-base FILE evaluates the file's tokens and compares each row with the model's distribution.
 */
#include "cli.h"
#include "common.h"
#include "logprob.h"

#include "llama3c.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CMD        "perplexity"
#define LOGP_MAGIC "L3CLOGP1"
#define LOGP_RANGE 24.0  /* nats below the most probable token that a saved row keeps */
#define LOGP_QMAX  65534 /* q in 1..65535 */

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: llama3c perplexity -m MODEL -f TEXT [-c N] [--chunks N] [-b N] [-t N]\n"
        "                          [--save-logits FILE | --kl-base FILE]\n"
        "       llama3c perplexity -m MODEL --kl-base FILE [--chunks N]\n"
        "       llama3c perplexity -m MODEL --multiple-choice FILE.jsonl [--tasks N]\n"
        "Perplexity by llama.cpp's method: chunks of N tokens, BOS first, the second half scored.\n"
        "  -f FILE            the text ('-': stdin)\n"
        "  -c, --ctx-size N   tokens per chunk (default 512; also --ctx)\n"
        "  --chunks N         at most N chunks (default: all whole chunks)\n"
        "  -b, --batch-size N tokens per decode call (default and most: the chunk size)\n"
        "  -t N               threads (default: physical cores)\n"
        "  --kv TYPE          KV-cache type f16 (default), f32, q8_0\n"
        "  --bf16             F16/BF16 matrices multiply in bfloat16\n"
        "  --save-logits FILE store this (base) model's distributions (docs/EVAL.md: format, "
        "size)\n"
        "  --kl-base FILE     KL divergence, top-1 agreement and ln(PPL ratio) against FILE's\n"
        "                     base (also --kl-divergence-base); the text comes from FILE (a -f\n"
        "                     text must tokenize to the same ids)\n"
        "  --multiple-choice FILE  JSONL items {\"ctx\", \"endings\": [...], \"label\"}: acc and\n"
        "                     acc_norm (log-likelihood / UTF-8 bytes of the ending)\n"
        "  --tasks N          at most the first N multiple-choice items\n"
        "  --json FILE        also write the results (full precision) as a JSON object\n");
    cli_lora_help(f);
}

typedef struct ppl_opts {
    const char *model_path, *text_path, *save_path, *kl_path, *mc_path, *json_path;
    long n_ctx, n_chunks, n_batch, n_tasks;
    int n_threads, kv_type, bf16, ctx_given;
    cli_lora lora;
} ppl_opts;

/* Model + context + adapters for one run. */
typedef struct ppl_run {
    l3c_model *model;
    l3c_context *ctx;
    l3c_adapter **adapters;
    const l3c_tokenizer *tok;
    int32_t n_vocab, n_batch, n_lora;
    int32_t *pos; /* [n_batch] scratch */
    int8_t *want; /* [n_batch] scratch */
} ppl_run;

static void run_close(ppl_run *r) {
    l3c_context_free(r->ctx);
    cli_adapters_free(r->adapters, r->n_lora);
    l3c_model_free(r->model);
    free(r->pos);
    free(r->want);
    memset(r, 0, sizeof *r);
}

static int run_open(ppl_run *r, const ppl_opts *o, int32_t n_ctx) {
    memset(r, 0, sizeof *r);
    if (cli_load_model(CMD, o->model_path, o->n_threads, 0, o->bf16, &r->model)) return CLI_ERR;
    l3c_model_info mi;
    l3c_model_get_info(r->model, &mi);
    r->n_vocab = mi.n_vocab;
    r->tok = l3c_model_tokenizer(r->model);
    r->n_lora = o->lora.n;
    r->n_batch = (int32_t)(o->n_batch > 0 && o->n_batch < n_ctx ? o->n_batch : n_ctx);
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = r->n_batch;
    cp.n_threads = o->n_threads;
    cp.kv_type = o->kv_type;
    if (l3c_context_create(r->model, &cp, &r->ctx) != L3C_OK) {
        cli_runtime_error(CMD, "cannot create the context");
        goto fail;
    }
    if (cli_lora_load(CMD, &o->lora, r->model, r->ctx, &r->adapters)) goto fail;
    r->pos = malloc((size_t)r->n_batch * sizeof *r->pos);
    r->want = malloc((size_t)r->n_batch);
    if (!r->pos || !r->want) {
        fprintf(stderr, "llama3c " CMD ": out of memory\n");
        goto fail;
    }
    return 0;
fail:
    run_close(r);
    return CLI_ERR;
}

/* Called with the logits after the token at position pos. */
typedef int (*row_fn)(void *user, int32_t pos, const float *logits);

/* Decodes ids[0..n) into sequence 0 at positions pos0.. (the cache must hold exactly pos0
 * positions) in pieces of n_batch, asking for the logits of positions >= want_from; row() gets
 * them in position order. 0 or CLI_ERR (printed). */
static int decode_span(ppl_run *r, const int32_t *ids, int32_t n, int32_t pos0, int32_t want_from,
                       row_fn row, void *user) {
    for (int32_t s = 0; s < n; s += r->n_batch) {
        int32_t m = n - s < r->n_batch ? n - s : r->n_batch;
        for (int32_t j = 0; j < m; j++) {
            r->pos[j] = pos0 + s + j;
            r->want[j] = (int8_t)(r->pos[j] >= want_from);
        }
        l3c_batch b = {.n_tokens = m, .tokens = ids + s, .pos = r->pos, .logits = r->want};
        if (l3c_decode(r->ctx, &b) != L3C_OK) {
            char what[64];
            snprintf(what, sizeof what, "decode at position %d failed", (int)(pos0 + s));
            return cli_runtime_error(CMD, what);
        }
        for (int32_t j = 0; j < m; j++)
            if (r->want[j] && row(user, r->pos[j], l3c_get_logits(r->ctx, j))) return CLI_ERR;
    }
    return 0;
}

/* BOS when the vocabulary adds one (what tokenizing "" with L3C_TOKENIZE_ADD_BOS gives), else -1.
 */
static int32_t vocab_bos(const l3c_tokenizer *tok) {
    int32_t id = -1;
    return l3c_tokenize(tok, "", 0, &id, 1, L3C_TOKENIZE_ADD_BOS) == 1 ? id : -1;
}

/* FNV-1a 64 of n_vocab and every token's text (NUL-terminated): equal vocabularies, equal ids. */
static uint64_t vocab_fingerprint(const l3c_tokenizer *tok, int32_t n_vocab) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char nv[4] = {(unsigned char)n_vocab, (unsigned char)(n_vocab >> 8),
                                 (unsigned char)(n_vocab >> 16), (unsigned char)(n_vocab >> 24)};
    for (int k = 0; k < 4; k++)
        h = (h ^ nv[k]) * 1099511628211ull;
    for (int32_t i = 0; i < n_vocab; i++) {
        const char *t = l3c_token_text(tok, i);
        for (const unsigned char *p = (const unsigned char *)(t ? t : ""); *p; p++)
            h = (h ^ *p) * 1099511628211ull;
        h *= 1099511628211ull; /* the NUL */
    }
    return h;
}

/* ---------------------------------------------------------------- the saved-distribution file */

typedef struct logp_header {
    uint32_t n_vocab, n_ctx, n_chunk;
    int32_t bos;
    uint64_t fingerprint;
    char model[64];
} logp_header;

enum { LOGP_HEADER_BYTES = 8 + 4 * 4 + 8 + 64 };

static size_t logp_row_bytes(int32_t n_vocab) {
    return 12 + 2 * (size_t)n_vocab;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int k = 0; k < 4; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put_f32(unsigned char *p, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(p, v);
}
static float get_f32(const unsigned char *p) {
    uint32_t v = get_u32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static int logp_write_header(FILE *f, const logp_header *h, const int32_t *tokens) {
    unsigned char b[LOGP_HEADER_BYTES] = {0};
    memcpy(b, LOGP_MAGIC, 8);
    put_u32(b + 8, h->n_vocab);
    put_u32(b + 12, h->n_ctx);
    put_u32(b + 16, h->n_chunk);
    put_u32(b + 20, (uint32_t)h->bos);
    put_u32(b + 24, (uint32_t)h->fingerprint);
    put_u32(b + 28, (uint32_t)(h->fingerprint >> 32));
    memcpy(b + 32, h->model, 64);
    if (fwrite(b, 1, sizeof b, f) != sizeof b) return -1;
    size_t n = (size_t)h->n_chunk * h->n_ctx;
    for (size_t i = 0; i < n; i++) {
        unsigned char t[4];
        put_u32(t, (uint32_t)tokens[i]);
        if (fwrite(t, 1, 4, f) != 4) return -1;
    }
    return 0;
}

/* Reads and checks the header and tokens; 0 or CLI_ERR (printed, naming the file). */
static int logp_read_header(FILE *f, const char *path, logp_header *h, int32_t **tokens) {
    unsigned char b[LOGP_HEADER_BYTES];
    *tokens = NULL;
    if (fread(b, 1, sizeof b, f) != sizeof b || memcmp(b, LOGP_MAGIC, 8)) {
        fprintf(stderr,
                "llama3c " CMD ": '%s' is not a --save-logits file (no " LOGP_MAGIC " header)\n",
                path);
        return CLI_ERR;
    }
    h->n_vocab = get_u32(b + 8);
    h->n_ctx = get_u32(b + 12);
    h->n_chunk = get_u32(b + 16);
    h->bos = (int32_t)get_u32(b + 20);
    h->fingerprint = (uint64_t)get_u32(b + 24) | (uint64_t)get_u32(b + 28) << 32;
    memcpy(h->model, b + 32, 64);
    h->model[63] = '\0';
    if (h->n_vocab < 1 || h->n_vocab > (1u << 24) || h->n_ctx < 4 || h->n_ctx > (1u << 24) ||
        h->n_chunk < 1 || (uint64_t)h->n_chunk * h->n_ctx > (1ull << 31)) {
        fprintf(stderr,
                "llama3c " CMD ": '%s': implausible header (n_vocab %u, n_ctx %u, n_chunk %u)\n",
                path, h->n_vocab, h->n_ctx, h->n_chunk);
        return CLI_ERR;
    }
    size_t n = (size_t)h->n_chunk * h->n_ctx;
    /* the size the header implies must be the file's (before allocating what it asks for) */
    const unsigned long long want = LOGP_HEADER_BYTES + 4ull * n +
                                    (unsigned long long)h->n_chunk * (h->n_ctx - 1 - h->n_ctx / 2) *
                                        logp_row_bytes((int32_t)h->n_vocab);
    long here = ftell(f), size = -1;
    if (here >= 0 && fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, here, SEEK_SET) != 0) {
        fprintf(stderr,
                "llama3c " CMD
                ": '%s': cannot seek (a --save-logits file must be a regular file)\n",
                path);
        return CLI_ERR;
    }
    if ((unsigned long long)size != want) {
        fprintf(stderr,
                "llama3c " CMD
                ": '%s' %s: %ld bytes, its header (n_vocab %u, n_ctx %u, n_chunk %u) makes %llu\n",
                path,
                (unsigned long long)size < want ? "is truncated" : "is longer than its header says",
                size, h->n_vocab, h->n_ctx, h->n_chunk, want);
        return CLI_ERR;
    }
    int32_t *t = malloc(n * sizeof *t);
    unsigned char *raw = malloc(n * 4);
    if (!t || !raw || fread(raw, 4, n, f) != n) {
        fprintf(stderr, "llama3c " CMD ": '%s': %s reading %zu token ids\n", path,
                t && raw ? "truncated" : "out of memory", n);
        free(t);
        free(raw);
        return CLI_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        t[i] = (int32_t)get_u32(raw + 4 * i);
        if (t[i] < 0 || (uint32_t)t[i] >= h->n_vocab) {
            fprintf(stderr,
                    "llama3c " CMD ": '%s': token %zu is %d, outside the vocabulary [0, %u)\n",
                    path, i, (int)t[i], h->n_vocab);
            free(t);
            free(raw);
            return CLI_ERR;
        }
    }
    free(raw);
    *tokens = t;
    return 0;
}

/* Quantizes one row of logits into out[logp_row_bytes] (format at the top); returns the nll of tok.
 */
static double logp_encode(const float *lg, int32_t n_vocab, int32_t tok, unsigned char *out) {
    const double lse = lp_lse(lg, n_vocab, NULL);
    double mn = 0, mx = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        double v = (double)lg[i] - lse;
        if (v > mx) mx = v;
        if (i == 0 || v < mn) mn = v;
    }
    const float lo = (float)(mn > mx - LOGP_RANGE ? mn : mx - LOGP_RANGE);
    const float scale = (float)((mx - lo) / LOGP_QMAX);
    put_f32(out, lo);
    put_f32(out + 4, scale);
    put_f32(out + 8, (float)((double)lg[tok] - lse));
    unsigned char *q = out + 12;
    for (int32_t i = 0; i < n_vocab; i++) {
        double v = (double)lg[i] - lse;
        long k;
        if (v < mx - LOGP_RANGE) /* dropped; the test is in double: lo is rounded to float */
            k = 0;
        else if (scale > 0) {
            k = lround((v - (double)lo) / (double)scale) + 1;
            k = k < 1 ? 1 : k > LOGP_QMAX + 1 ? LOGP_QMAX + 1 : k;
        } else
            k = 1;
        q[2 * i] = (unsigned char)k;
        q[2 * i + 1] = (unsigned char)(k >> 8);
    }
    return lse - (double)lg[tok];
}

/* Writes obj (a JSON object of results; stolen) to path when given; 0 or CLI_ERR (printed). */
static int write_json(const char *path, json_t *obj) {
    int bad =
        path && (!obj || json_dump_file(obj, path,
                                        JSON_INDENT(1) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17)));
    json_decref(obj);
    if (bad) fprintf(stderr, "llama3c " CMD ": cannot write --json '%s'\n", path);
    return bad ? CLI_ERR : 0;
}

/* ---------------------------------------------------------------- perplexity */

typedef struct ppl_state {
    const int32_t *chunk; /* [n_ctx] the chunk's tokens (unreplaced) */
    int32_t n_ctx, first, n_vocab;
    double nll, nll2;
    int64_t count;
    /* --save-logits */
    FILE *save;
    unsigned char *row; /* [logp_row_bytes] */
    /* --kl-base */
    const unsigned char *base; /* [n_scored * row bytes] this chunk's base rows */
    double nll_base, nll_base2, nll_nll_base, kld, kld2;
    int64_t same_top;
    float *kld_values; /* [all scored positions] */
} ppl_state;

static int ppl_row(void *user, int32_t pos, const float *lg) {
    ppl_state *s = user;
    if (pos > s->n_ctx - 2) return 0;
    const int32_t tok = s->chunk[pos + 1];
    double v;
    if (s->save) {
        v = logp_encode(lg, s->n_vocab, tok, s->row);
        if (fwrite(s->row, 1, logp_row_bytes(s->n_vocab), s->save) != logp_row_bytes(s->n_vocab)) {
            fprintf(stderr, "llama3c " CMD ": writing --save-logits failed\n");
            return CLI_ERR;
        }
    } else {
        v = lp_lse(lg, s->n_vocab, NULL) - (double)lg[tok];
    }
    s->nll += v;
    s->nll2 += v * v;
    s->count++;
    return 0;
}

/* KL(base || model) of one position: the base row renormalized over its kept entries. */
static int kl_row(void *user, int32_t pos, const float *lg) {
    ppl_state *s = user;
    if (pos > s->n_ctx - 2) return 0;
    const int32_t tok = s->chunk[pos + 1];
    const unsigned char *row = s->base + (size_t)(pos - s->first) * logp_row_bytes(s->n_vocab);
    const double lo = get_f32(row), scale = get_f32(row + 4);
    const unsigned char *q = row + 12;
    int32_t top, top_base = 0;
    unsigned qmax = 0;
    const double lse = lp_lse(lg, s->n_vocab, &top);
    double sum = 0; /* sum over kept entries of exp(b_i), b_i = lo + scale * (q_i - 1) */
    for (int32_t i = 0; i < s->n_vocab; i++) {
        unsigned k = q[2 * i] | (unsigned)q[2 * i + 1] << 8;
        if (k > qmax) qmax = k, top_base = i;
        if (k) sum += exp(lo + scale * (k - 1));
    }
    const double lse_b = log(sum);
    double kl = 0;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        unsigned k = q[2 * i] | (unsigned)q[2 * i + 1] << 8;
        if (!k) continue;
        double lpb = lo + scale * (k - 1) - lse_b;
        kl += exp(lpb) * (lpb - ((double)lg[i] - lse));
    }
    const double nll = lse - (double)lg[tok];
    const double nll_b = -(double)get_f32(row + 8);
    s->nll += nll;
    s->nll2 += nll * nll;
    s->nll_base += nll_b;
    s->nll_base2 += nll_b * nll_b;
    s->nll_nll_base += nll * nll_b;
    s->kld += kl;
    s->kld2 += kl * kl;
    s->same_top += top == top_base;
    s->kld_values[s->count++] = (float)kl;
    return 0;
}

/* Evaluates one chunk (BOS replacing its first token when bos >= 0); rows go to fn. */
static int ppl_chunk(ppl_run *r, ppl_state *s, int32_t *scratch, int32_t bos, row_fn fn) {
    memcpy(scratch, s->chunk, (size_t)s->n_ctx * sizeof *scratch);
    if (bos >= 0) scratch[0] = bos;
    if (l3c_kv_seq_truncate(r->ctx, 0, 0) != L3C_OK)
        return cli_runtime_error(CMD, "cannot clear the KV cache");
    return decode_span(r, scratch, s->n_ctx, 0, s->first, fn, s);
}

/* mean and its standard error from sums, as llama-perplexity (0 error below 2 values). */
static void mean_err(double sum, double sum2, int64_t n, double *mean, double *err) {
    *mean = n ? sum / (double)n : 0;
    double var = n ? sum2 / (double)n - *mean * *mean : 0;
    *err = var > 0 && n > 1 ? sqrt(var / (double)(n - 1)) : 0;
}

static void progress(int64_t i, int64_t n, double t0, const ppl_state *s) {
    double m, e, dt = cli_now_s() - t0;
    mean_err(s->nll, s->nll2, s->count, &m, &e);
    fprintf(stderr,
            "llama3c " CMD ": chunk %lld/%lld  PPL %.4f +/- %.5f  %.2f s/chunk, ETA %.1f s\n",
            (long long)i, (long long)n, exp(m), exp(m) * e, dt / (double)i,
            dt / (double)i * (double)(n - i));
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* llama-perplexity's percentile: linear interpolation at fraction * (n - 1). */
static double percentile(const float *v, int64_t n, double fraction) {
    double p = fraction * (double)(n - 1);
    int64_t i = (int64_t)p;
    p -= (double)i;
    return (1 - p) * v[i] + p * v[i + 1 < n ? i + 1 : n - 1];
}

static int run_perplexity(const ppl_opts *o) {
    ppl_run r;
    int32_t n_ctx = (int32_t)o->n_ctx;
    if (run_open(&r, o, n_ctx)) return CLI_ERR;
    int rc = CLI_ERR;
    size_t len = 0;
    char *text = NULL;
    int32_t *ids = NULL, *scratch = NULL;
    int64_t n_ids = 0;
    FILE *save = NULL;
    ppl_state s = {.n_ctx = n_ctx, .first = n_ctx / 2, .n_vocab = r.n_vocab};
    if (!(text = cli_read_file(CMD, o->text_path, &len))) goto done;
    if (cli_tokenize(CMD, r.tok, text, len, L3C_TOKENIZE_ADD_BOS, &ids, &n_ids)) goto done;
    if (n_ids < 2 * (int64_t)n_ctx) {
        fprintf(stderr,
                "llama3c " CMD ": '%s' tokenizes to %lld tokens; a context of %d needs at least %d "
                "(use a longer text or a smaller -c)\n",
                o->text_path, (long long)n_ids, (int)n_ctx, 2 * (int)n_ctx);
        goto done;
    }
    int64_t n_chunk = n_ids / n_ctx;
    if (o->n_chunks > 0 && o->n_chunks < n_chunk) n_chunk = o->n_chunks;
    const int32_t bos = vocab_bos(r.tok);
    scratch = malloc((size_t)n_ctx * sizeof *scratch);
    if (!scratch) goto oom;
    if (o->save_path) {
        logp_header h = {.n_vocab = (uint32_t)r.n_vocab,
                         .n_ctx = (uint32_t)n_ctx,
                         .n_chunk = (uint32_t)n_chunk,
                         .bos = bos,
                         .fingerprint = vocab_fingerprint(r.tok, r.n_vocab)};
        l3c_model_info mi;
        l3c_model_get_info(r.model, &mi);
        snprintf(h.model, sizeof h.model, "%s", mi.name ? mi.name : "");
        if (!(s.row = malloc(logp_row_bytes(r.n_vocab)))) goto oom;
        if (!(save = fopen(o->save_path, "wb")) || logp_write_header(save, &h, ids)) {
            fprintf(stderr, "llama3c " CMD ": cannot write '%s'\n", o->save_path);
            goto done;
        }
        s.save = save;
        double mb = (double)n_chunk * (double)(n_ctx - 1 - s.first) *
                    (double)logp_row_bytes(r.n_vocab) / 1e6;
        fprintf(stderr, "llama3c " CMD ": saving distributions to %s (%.1f MB)\n", o->save_path,
                mb);
    }
    fprintf(stderr,
            "llama3c " CMD ": %lld tokens, %lld chunks of %d, batch %d, %d scored per chunk\n",
            (long long)n_ids, (long long)n_chunk, (int)n_ctx, (int)r.n_batch,
            (int)(n_ctx - 1 - s.first));
    double t0 = cli_now_s();
    for (int64_t c = 0; c < n_chunk; c++) {
        s.chunk = ids + c * n_ctx;
        if (ppl_chunk(&r, &s, scratch, bos, ppl_row)) goto done;
        printf("[%lld]%.4f,", (long long)(c + 1), exp(s.nll / (double)s.count));
        fflush(stdout);
        progress(c + 1, n_chunk, t0, &s);
    }
    printf("\n");
    if (save) {
        int bad = fclose(save) != 0;
        save = NULL;
        if (bad) {
            fprintf(stderr, "llama3c " CMD ": cannot write '%s'\n", o->save_path);
            goto done;
        }
    }
    double m, e;
    mean_err(s.nll, s.nll2, s.count, &m, &e);
    printf("Final estimate: PPL = %.4f +/- %.5f\n", exp(m), exp(m) * e);
    fprintf(stderr, "llama3c " CMD ": %lld tokens scored in %.2f s\n", (long long)s.count,
            cli_now_s() - t0);
    rc = write_json(o->json_path,
                    json_pack("{s:f, s:f, s:f, s:I, s:I, s:i}", "ppl", exp(m), "ppl_err",
                              exp(m) * e, "mean_nll", m, "count", (json_int_t)s.count, "n_chunk",
                              (json_int_t)n_chunk, "n_ctx", (int)n_ctx));
    goto done;
oom:
    fprintf(stderr, "llama3c " CMD ": out of memory\n");
done:
    if (save) {
        fclose(save);
        remove(o->save_path);
    }
    free(s.row);
    free(scratch);
    free(ids);
    free(text);
    run_close(&r);
    return rc;
}

/* ---------------------------------------------------------------- KL divergence */

static int run_kl(const ppl_opts *o) {
    FILE *f = fopen(o->kl_path, "rb");
    if (!f) {
        fprintf(stderr, "llama3c " CMD ": cannot open --kl-base '%s'\n", o->kl_path);
        return CLI_ERR;
    }
    logp_header h;
    int32_t *tokens = NULL, *ids = NULL, *scratch = NULL;
    char *text = NULL;
    unsigned char *rows = NULL;
    ppl_state s = {0};
    ppl_run r = {0};
    int rc = CLI_ERR;
    if (logp_read_header(f, o->kl_path, &h, &tokens)) goto done;
    if (o->ctx_given && o->n_ctx != (long)h.n_ctx) {
        fprintf(stderr, "llama3c " CMD ": -c %ld differs from the base file's context %u ('%s')\n",
                o->n_ctx, h.n_ctx, o->kl_path);
        goto done;
    }
    if (run_open(&r, o, (int32_t)h.n_ctx)) goto done;
    if ((uint32_t)r.n_vocab != h.n_vocab || vocab_fingerprint(r.tok, r.n_vocab) != h.fingerprint) {
        fprintf(stderr,
                "llama3c " CMD
                ": the vocabulary of '%s' (%d tokens) differs from that of the base '%s' "
                "in '%s' (%u tokens%s): KL divergence needs the same vocabulary\n",
                o->model_path, (int)r.n_vocab, h.model, o->kl_path, h.n_vocab,
                (uint32_t)r.n_vocab == h.n_vocab ? ", other token texts" : "");
        goto done;
    }
    const int32_t bos = vocab_bos(r.tok);
    if (bos != h.bos) {
        fprintf(stderr,
                "llama3c " CMD ": '%s' was saved with BOS %d, this model's vocabulary uses %d\n",
                o->kl_path, (int)h.bos, (int)bos);
        goto done;
    }
    const int64_t n_tok = (int64_t)h.n_chunk * h.n_ctx;
    if (o->text_path) { /* the text, if given, must be the one the base saw */
        size_t len;
        int64_t n_ids;
        if (!(text = cli_read_file(CMD, o->text_path, &len))) goto done;
        if (cli_tokenize(CMD, r.tok, text, len, L3C_TOKENIZE_ADD_BOS, &ids, &n_ids)) goto done;
        int64_t i = 0;
        while (i < n_tok && i < n_ids && ids[i] == tokens[i])
            i++;
        if (i < n_tok) {
            fprintf(stderr,
                    "llama3c " CMD
                    ": '%s' does not tokenize to the base file's tokens: %s at token %lld\n",
                    o->text_path, i < n_ids ? "they differ" : "it ends", (long long)i);
            goto done;
        }
    }
    int64_t n_chunk = h.n_chunk;
    if (o->n_chunks > 0 && o->n_chunks < n_chunk) n_chunk = o->n_chunks;
    s.n_ctx = (int32_t)h.n_ctx;
    s.first = s.n_ctx / 2;
    s.n_vocab = r.n_vocab;
    const int32_t n_scored = s.n_ctx - 1 - s.first;
    const size_t chunk_bytes = (size_t)n_scored * logp_row_bytes(r.n_vocab);
    scratch = malloc((size_t)s.n_ctx * sizeof *scratch);
    rows = malloc(chunk_bytes);
    s.kld_values = malloc((size_t)(n_chunk * n_scored) * sizeof *s.kld_values);
    if (!scratch || !rows || !s.kld_values) {
        fprintf(stderr, "llama3c " CMD ": out of memory\n");
        goto done;
    }
    s.base = rows;
    fprintf(stderr, "llama3c " CMD ": KL divergence against '%s' (%s): %lld chunks of %d\n",
            o->kl_path, h.model, (long long)n_chunk, (int)s.n_ctx);
    printf("chunk             PPL          ln(PPL(Q)/PPL(base))          KL Divergence          "
           "Same top p\n");
    double t0 = cli_now_s();
    for (int64_t c = 0; c < n_chunk; c++) {
        if (fread(rows, 1, chunk_bytes, f) != chunk_bytes) {
            fprintf(stderr, "llama3c " CMD ": '%s' is truncated: no rows for chunk %lld\n",
                    o->kl_path, (long long)c + 1);
            goto done;
        }
        s.chunk = tokens + c * s.n_ctx;
        if (ppl_chunk(&r, &s, scratch, bos, kl_row)) goto done;
        double m, e, mb, eb, k, ek;
        mean_err(s.nll, s.nll2, s.count, &m, &e);
        mean_err(s.nll_base, s.nll_base2, s.count, &mb, &eb);
        mean_err(s.kld, s.kld2, s.count, &k, &ek);
        double top = (double)s.same_top / (double)s.count;
        printf("%4lld    %9.4f +/- %9.4f    %10.5f    %10.5f +/- %10.5f    %6.3f +/- %6.3f %%\n",
               (long long)c + 1, exp(m), exp(m) * e, m - mb, k, ek, 100 * top,
               s.count > 1 ? 100 * sqrt(top * (1 - top) / (double)(s.count - 1)) : 0.0);
        fflush(stdout);
        progress(c + 1, n_chunk, t0, &s);
    }
    double m, e, mb, eb, k, ek;
    mean_err(s.nll, s.nll2, s.count, &m, &e);
    mean_err(s.nll_base, s.nll_base2, s.count, &mb, &eb);
    mean_err(s.kld, s.kld2, s.count, &k, &ek);
    const double n = (double)s.count;
    const double cov = s.count > 1 ? (s.nll_nll_base / n - m * mb) / (n - 1) : 0;
    const double ratio_err = sqrt(fmax(0, e * e + eb * eb - 2 * cov));
    qsort(s.kld_values, (size_t)s.count, sizeof *s.kld_values, cmp_float);
    const int64_t c = s.count;
    const float *kv = s.kld_values;
    const double median = c % 2 ? kv[c / 2] : 0.5 * (kv[c / 2] + kv[c / 2 - 1]);
    const double top = (double)s.same_top / n;
    printf("\n====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f +/- %10.6f\n", exp(m), exp(m) * e);
    printf("Mean PPL(base)                : %10.6f +/- %10.6f\n", exp(mb), exp(mb) * eb);
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f +/- %10.6f\n", m - mb, ratio_err);
    printf("Mean PPL(Q)/PPL(base)         : %10.6f +/- %10.6f\n", exp(m - mb),
           exp(m - mb) * ratio_err);
    printf("\n====== KL divergence statistics ======\n");
    printf("Mean    KLD: %10.6f +/- %10.6f\n", k, ek);
    printf("Maximum KLD: %10.6f\n", (double)kv[c - 1]);
    printf("99.9%%   KLD: %10.6f\n", percentile(kv, c, 0.999));
    printf("99.0%%   KLD: %10.6f\n", percentile(kv, c, 0.990));
    printf("90.0%%   KLD: %10.6f\n", percentile(kv, c, 0.900));
    printf("Median  KLD: %10.6f\n", median);
    printf("Minimum KLD: %10.6f\n", (double)kv[0]);
    printf("\n====== Token probability statistics ======\n");
    printf("Same top p: %6.3f +/- %5.3f %%\n", 100 * top,
           c > 1 ? 100 * sqrt(top * (1 - top) / (n - 1)) : 0.0);
    rc = write_json(
        o->json_path,
        json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I}", "ppl",
                  exp(m), "ppl_base", exp(mb), "ln_ppl_ratio", m - mb, "ln_ppl_ratio_err",
                  ratio_err, "kld_mean", k, "kld_err", ek, "kld_max", (double)kv[c - 1], "kld_p999",
                  percentile(kv, c, 0.999), "kld_p99", percentile(kv, c, 0.99), "kld_p90",
                  percentile(kv, c, 0.9), "kld_median", median, "kld_min", (double)kv[0],
                  "same_top", top, "count", (json_int_t)c));
done:
    fclose(f);
    free(tokens);
    free(ids);
    free(text);
    free(scratch);
    free(rows);
    free(s.kld_values);
    run_close(&r);
    return rc;
}

/* ---------------------------------------------------------------- multiple choice */

/* One ending of one item: its tokens (BOS, context, ending) and where the ending starts. */
typedef struct mc_seq {
    int32_t *ids;
    int32_t n, n_ctx_tok; /* ids[n_ctx_tok..n) are the ending's tokens */
    size_t n_bytes;       /* UTF-8 bytes of the ending (acc_norm's length) */
} mc_seq;

typedef struct mc_item {
    mc_seq *seq;
    int n_end, label;
} mc_item;

typedef struct mc_score {
    const int32_t *ids;
    int32_t n, n_ctx_tok, n_vocab;
    double ll;
} mc_score;

static int mc_row(void *user, int32_t pos, const float *lg) {
    mc_score *m = user;
    if (pos + 1 < m->n_ctx_tok || pos + 1 >= m->n) return 0;
    m->ll += (double)lg[m->ids[pos + 1]] - lp_lse(lg, m->n_vocab, NULL);
    return 0;
}

/* Tokenizes item (lm-evaluation-harness's split: trailing spaces of the context move to the
 * continuation " " + ending; the ending's tokens are those of the whole after the context's). */
static int mc_tokenize(const l3c_tokenizer *tok, const char *path, int line, const char *ctx_text,
                       const char *ending, mc_seq *q) {
    size_t lc = strlen(ctx_text), le = strlen(ending), sp = lc;
    while (sp > 0 && strchr(" \t\n\r\v\f", ctx_text[sp - 1]))
        sp--; /* as str.rstrip() (ASCII) */
    char *whole = malloc(lc + 1 + le + 1);
    if (!whole) return CLI_ERR;
    memcpy(whole, ctx_text, lc);
    whole[lc] = ' ';
    memcpy(whole + lc + 1, ending, le + 1);
    int32_t *cids = NULL;
    int64_t nc = 0, nw = 0;
    int rc = cli_tokenize(CMD, tok, ctx_text, sp, L3C_TOKENIZE_ADD_BOS, &cids, &nc);
    if (!rc) rc = cli_tokenize(CMD, tok, whole, lc + 1 + le, L3C_TOKENIZE_ADD_BOS, &q->ids, &nw);
    free(whole);
    free(cids);
    if (rc) return rc;
    q->n = (int32_t)nw;
    q->n_ctx_tok = (int32_t)nc;
    q->n_bytes = le;
    if (nc < 1 || nw <= nc) {
        fprintf(
            stderr, "llama3c " CMD ": %s:%d: %s\n", path, line,
            nc < 1
                ? "the context is empty and the vocabulary adds no BOS: nothing predicts the ending"
                : "an ending adds no tokens");
        return CLI_ERR;
    }
    return 0;
}

static void mc_free(mc_item *items, int n) {
    for (int i = 0; i < n; i++) {
        for (int e = 0; e < items[i].n_end; e++)
            free(items[i].seq[e].ids);
        free(items[i].seq);
    }
    free(items);
}

/* Reads the JSONL file into items (tokenized); 0 or CLI_ERR (printed: file, line, field). */
/* Parses the JSONL text (NUL-terminated; lines are cut in place) read from path (for messages). */
static int mc_parse(char *text, const char *path, const l3c_tokenizer *tok, long max_tasks,
                    mc_item **out, int *n_out) {
    mc_item *items = NULL;
    int n = 0, cap = 0, line = 0, rc = 0;
    for (char *p = text; *p && !rc && (max_tasks <= 0 || n < max_tasks);) {
        char *e = strchr(p, '\n');
        if (e) *e = '\0';
        line++;
        char *s = p;
        p = e ? e + 1 : p + strlen(p);
        while (*s == ' ' || *s == '\t' || *s == '\r')
            s++;
        if (!*s) continue;
        json_error_t err;
        json_t *j = json_loads(s, 0, &err);
        json_t *jc = json_object_get(j, "ctx"), *je = json_object_get(j, "endings"),
               *jl = json_object_get(j, "label");
        if (!jc) jc = json_object_get(j, "context");
        long label = -1;
        if (json_is_integer(jl))
            label = (long)json_integer_value(jl);
        else if (json_is_string(jl)) {
            char *end;
            label = strtol(json_string_value(jl), &end, 10);
            if (end == json_string_value(jl) || *end) label = -1;
        }
        const char *bad = !j                    ? err.text
                          : !json_is_string(jc) ? "\"ctx\" must be a string"
                          : !json_is_array(je) || json_array_size(je) < 2
                              ? "\"endings\" must be an array of >= 2 strings"
                          : label < 0 || (size_t)label >= json_array_size(je)
                              ? "\"label\" must be an index into \"endings\""
                              : NULL;
        for (size_t k = 0; !bad && k < json_array_size(je); k++)
            if (!json_is_string(json_array_get(je, k)))
                bad = "\"endings\" must be an array of >= 2 strings";
        if (bad) {
            fprintf(stderr, "llama3c " CMD ": %s:%d: %s\n", path, line, bad);
            json_decref(j);
            rc = CLI_ERR;
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            mc_item *ni = realloc(items, (size_t)cap * sizeof *ni);
            if (!ni) {
                fprintf(stderr, "llama3c " CMD ": out of memory reading '%s'\n", path);
                json_decref(j);
                rc = CLI_ERR;
                break;
            }
            items = ni;
        }
        mc_item *it = &items[n++];
        it->n_end = 0;
        it->label = (int)label;
        it->seq = calloc(json_array_size(je), sizeof *it->seq);
        if (!it->seq) {
            fprintf(stderr, "llama3c " CMD ": out of memory reading '%s'\n", path);
            json_decref(j);
            rc = CLI_ERR;
            break;
        }
        for (size_t k = 0; k < json_array_size(je) && !rc; k++) {
            rc = mc_tokenize(tok, path, line, json_string_value(jc),
                             json_string_value(json_array_get(je, k)), &it->seq[k]);
            it->n_end++;
        }
        json_decref(j);
    }
    if (!rc && n == 0) {
        fprintf(stderr, "llama3c " CMD ": %s: no items\n", path);
        rc = CLI_ERR;
    }
    if (rc) {
        mc_free(items, n);
        return CLI_ERR;
    }
    *out = items;
    *n_out = n;
    return 0;
}

static int mc_load(const char *path, const l3c_tokenizer *tok, long max_tasks, mc_item **out,
                   int *n_out) {
    size_t len;
    char *text = cli_read_file(CMD, path, &len);
    if (!text) return CLI_ERR;
    int rc = mc_parse(text, path, tok, max_tasks, out, n_out);
    free(text);
    return rc;
}

static int run_multiple_choice(const ppl_opts *o) {
    ppl_run r = {0};
    l3c_model *probe = NULL;
    mc_item *items = NULL;
    int n_items = 0, rc = CLI_ERR;
    int32_t *cache = NULL;
    json_t *lls = json_array(); /* [item][ending] log-likelihoods */
    /* tokenize first (the model's tokenizer) to size the context to the longest sequence */
    if (cli_load_model(CMD, o->model_path, o->n_threads, 0, 0, &probe)) return CLI_ERR;
    int bad = mc_load(o->mc_path, l3c_model_tokenizer(probe), o->n_tasks, &items, &n_items);
    l3c_model_free(probe);
    if (bad) return CLI_ERR;
    int32_t n_max = 16;
    for (int i = 0; i < n_items; i++)
        for (int e = 0; e < items[i].n_end; e++)
            if (items[i].seq[e].n > n_max) n_max = items[i].seq[e].n;
    if (o->ctx_given && o->n_ctx < n_max) {
        fprintf(stderr, "llama3c " CMD ": an item needs %d tokens, more than -c %ld\n", (int)n_max,
                o->n_ctx);
        goto done;
    }
    if (run_open(&r, o, o->ctx_given ? (int32_t)o->n_ctx : n_max)) goto done;
    if (!(cache = malloc((size_t)n_max * sizeof *cache))) goto done;
    int32_t n_cache = 0;
    int n_acc = 0, n_acc_norm = 0;
    double t0 = cli_now_s();
    for (int i = 0; i < n_items; i++) {
        const mc_item *it = &items[i];
        int best = 0, best_norm = 0;
        json_t *item_lls = json_array();
        json_array_append_new(lls, item_lls);
        double best_ll = -INFINITY, best_norm_ll = -INFINITY;
        for (int e = 0; e < it->n_end; e++) {
            const mc_seq *q = &it->seq[e];
            /* reuse the cached prefix, but re-decode from the last context token (its logits) */
            int32_t keep = 0;
            while (keep < n_cache && keep < q->n && cache[keep] == q->ids[keep])
                keep++;
            if (keep > q->n_ctx_tok - 1) keep = q->n_ctx_tok - 1;
            if (l3c_kv_seq_truncate(r.ctx, 0, keep) != L3C_OK) {
                cli_runtime_error(CMD, "cannot truncate the KV cache");
                goto done;
            }
            mc_score m = {
                .ids = q->ids, .n = q->n, .n_ctx_tok = q->n_ctx_tok, .n_vocab = r.n_vocab};
            n_cache = keep;
            if (decode_span(&r, q->ids + keep, q->n - keep, keep, q->n_ctx_tok - 1, mc_row, &m))
                goto done;
            memcpy(cache + keep, q->ids + keep, (size_t)(q->n - keep) * sizeof *cache);
            n_cache = q->n;
            double norm = m.ll / (double)(q->n_bytes ? q->n_bytes : 1);
            json_array_append_new(item_lls, json_real(m.ll));
            if (m.ll > best_ll) best_ll = m.ll, best = e;
            if (norm > best_norm_ll) best_norm_ll = norm, best_norm = e;
            printf("item %d ending %d: loglik %.6f, tokens %d, bytes %zu\n", i + 1, e, m.ll,
                   (int)(q->n - q->n_ctx_tok), q->n_bytes);
        }
        n_acc += best == it->label;
        n_acc_norm += best_norm == it->label;
        fprintf(stderr, "llama3c " CMD ": item %d/%d  acc %.4f  acc_norm %.4f  (%.2f s/item)\n",
                i + 1, n_items, (double)n_acc / (i + 1), (double)n_acc_norm / (i + 1),
                (cli_now_s() - t0) / (i + 1));
    }
    const double a = (double)n_acc / n_items, an = (double)n_acc_norm / n_items;
    /* standard errors as lm-evaluation-harness reports them: sample std / sqrt(n) */
    const double se = n_items > 1 ? sqrt(a * (1 - a) / (n_items - 1)) : 0;
    const double sen = n_items > 1 ? sqrt(an * (1 - an) / (n_items - 1)) : 0;
    printf("acc      = %.4f +/- %.4f  (%d/%d)\n", a, se, n_acc, n_items);
    printf("acc_norm = %.4f +/- %.4f  (%d/%d)\n", an, sen, n_acc_norm, n_items);
    rc = write_json(o->json_path,
                    json_pack("{s:f, s:f, s:f, s:f, s:i, s:O}", "acc", a, "acc_err", se, "acc_norm",
                              an, "acc_norm_err", sen, "n", n_items, "loglik", lls));
done:
    json_decref(lls);
    free(cache);
    mc_free(items, n_items);
    run_close(&r);
    return rc;
}

/* ---------------------------------------------------------------- options */

int cmd_perplexity(int argc, char **argv) {
    ppl_opts o = {.n_ctx = 512, .kv_type = L3C_KV_F16};
    int r;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int n;
        if (cli_is(a, "-h|--help")) {
            usage(stdout);
            return 0;
        } else if ((r = cli_lora_parse(CMD, &o.lora, argc, argv, &i))) {
            if (r < 0) return CLI_USAGE;
        } else if (cli_is(a, "--bf16")) {
            o.bf16 = 1;
        } else if (cli_is(a, CLI_MODEL)) {
            if (cli_str(CMD, argc, argv, &i, &o.model_path)) return CLI_USAGE;
        } else if (cli_is(a, "-f|--file")) {
            if (cli_str(CMD, argc, argv, &i, &o.text_path)) return CLI_USAGE;
        } else if (cli_is(a, "--save-logits")) {
            if (cli_str(CMD, argc, argv, &i, &o.save_path)) return CLI_USAGE;
        } else if (cli_is(a, "--kl-base|--kl-divergence-base")) {
            if (cli_str(CMD, argc, argv, &i, &o.kl_path)) return CLI_USAGE;
        } else if (cli_is(a, "--multiple-choice")) {
            if (cli_str(CMD, argc, argv, &i, &o.mc_path)) return CLI_USAGE;
        } else if (cli_is(a, "--json")) {
            if (cli_str(CMD, argc, argv, &i, &o.json_path)) return CLI_USAGE;
        } else if (cli_is(a, CLI_CTX)) {
            if (cli_int(CMD, argc, argv, &i, 4, 1 << 20, &n)) return CLI_USAGE;
            o.n_ctx = n;
            o.ctx_given = 1;
        } else if (cli_is(a, "--chunks")) {
            if (cli_int(CMD, argc, argv, &i, 1, 1 << 30, &n)) return CLI_USAGE;
            o.n_chunks = n;
        } else if (cli_is(a, "--tasks|--multiple-choice-tasks")) {
            if (cli_int(CMD, argc, argv, &i, 1, 1 << 30, &n)) return CLI_USAGE;
            o.n_tasks = n;
        } else if (cli_is(a, CLI_BATCH)) {
            if (cli_int(CMD, argc, argv, &i, 1, 1 << 20, &n)) return CLI_USAGE;
            o.n_batch = n;
        } else if (cli_is(a, CLI_THREADS)) {
            if (cli_int(CMD, argc, argv, &i, 1, 1024, &o.n_threads)) return CLI_USAGE;
        } else if (cli_is(a, "--kv")) {
            if (cli_str(CMD, argc, argv, &i, &v)) return CLI_USAGE;
            if (!strcmp(v, "f16"))
                o.kv_type = L3C_KV_F16;
            else if (!strcmp(v, "f32"))
                o.kv_type = L3C_KV_F32;
            else if (!strcmp(v, "q8_0"))
                o.kv_type = L3C_KV_Q8_0;
            else
                return cli_usage_error(CMD, "--kv: '%s' is not f16, f32 or q8_0", v);
        } else if ((r = cli_compat_parse(CMD, argc, argv, &i))) {
            if (r < 0) return CLI_USAGE;
        } else
            return cli_usage_error(CMD, "unknown option '%s'", a);
    }
    if (!o.model_path) return cli_usage_error(CMD, "-m MODEL is required");
    if (o.save_path && o.kl_path)
        return cli_usage_error(CMD, "--save-logits and --kl-base exclude each other");
    if (o.mc_path && (o.save_path || o.kl_path || o.text_path))
        return cli_usage_error(CMD, "--multiple-choice takes no -f, --save-logits or --kl-base");
    if (o.mc_path) return run_multiple_choice(&o);
    if (o.kl_path) return run_kl(&o);
    if (!o.text_path)
        return cli_usage_error(CMD, "-f TEXT (or --kl-base, --multiple-choice) is required");
    return run_perplexity(&o);
}
