/*
 * fuzz_eval_files.c -- libFuzzer harness for the files `llama3c perplexity` reads
 * (apps/cli/cmd_perplexity.c, #included to reach its static parsers):
 *   input[0] even: a --kl-base file (logp_read_header), and when its header and one chunk of rows
 *                  are there and small, that chunk's rows scored against a flat model row (kl_row:
 *                  any lo / scale / q, NaN and infinities included, must not crash or read out of
 *                  bounds; token ids are checked against n_vocab);
 *   input[0] odd:  multiple-choice JSONL (mc_parse) tokenized with the default model's vocabulary.
 * A parse either succeeds with checked invariants or fails with its message; nothing leaks.
 * The messages the CLI prints for bad input go to /dev/null while the parsers run, unless
 * L3C_FUZZ_VERBOSE=1 (set it to see a finding's report when re-running its input).
 *   build-fuzz/fuzz_eval_files --write-seeds DIR   writes the seed corpus
 */
#include "../../apps/cli/cmd_perplexity.c"
#include "fuzz_model_path.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_REQUIRE(c)                                                                            \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_eval_files: invariant failed: %s (line %d)\n", #c, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static l3c_tokenizer *g_tok;
static int g_null_fd = -1, g_err_fd = -1;

static void mute(int on) {
    if (g_null_fd < 0) return;
    fflush(stderr);
    dup2(on ? g_null_fd : g_err_fd, 2);
}

static void fuzz_logits_file(const uint8_t *data, size_t size) {
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return;
    logp_header h;
    int32_t *tokens = NULL;
    mute(1);
    int rc = logp_read_header(f, "fuzz.lp", &h, &tokens);
    mute(0);
    if (rc) {
        FUZZ_REQUIRE(tokens == NULL);
        fclose(f);
        return;
    }
    FUZZ_REQUIRE(tokens && h.n_vocab >= 1 && h.n_ctx >= 4 && h.n_chunk >= 1);
    for (size_t i = 0; i < (size_t)h.n_chunk * h.n_ctx; i++)
        FUZZ_REQUIRE(tokens[i] >= 0 && (uint32_t)tokens[i] < h.n_vocab);
    const int32_t n_scored = (int32_t)h.n_ctx - 1 - (int32_t)h.n_ctx / 2;
    const size_t chunk_bytes = (size_t)n_scored * logp_row_bytes((int32_t)h.n_vocab);
    unsigned char *rows = h.n_vocab <= 4096 && h.n_ctx <= 64 ? malloc(chunk_bytes) : NULL;
    float *flat = rows ? calloc(h.n_vocab, sizeof *flat) : NULL;
    float kv[64];
    if (flat && fread(rows, 1, chunk_bytes, f) == chunk_bytes) {
        ppl_state s = {.chunk = tokens,
                       .n_ctx = (int32_t)h.n_ctx,
                       .first = (int32_t)h.n_ctx / 2,
                       .n_vocab = (int32_t)h.n_vocab,
                       .base = rows,
                       .kld_values = kv};
        for (int32_t pos = s.first; pos < s.n_ctx; pos++)
            FUZZ_REQUIRE(kl_row(&s, pos, flat) == 0);
        FUZZ_REQUIRE(s.count == n_scored);
    }
    free(flat);
    free(rows);
    free(tokens);
    fclose(f);
}

static void fuzz_jsonl(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return;
    memcpy(text, data, size);
    text[size] = '\0';
    mc_item *items = NULL;
    int n = 0;
    mute(1);
    int rc = mc_parse(text, "fuzz.jsonl", g_tok, 8, &items, &n);
    mute(0);
    free(text);
    if (rc) return;
    FUZZ_REQUIRE(n >= 1 && n <= 8);
    for (int i = 0; i < n; i++) {
        FUZZ_REQUIRE(items[i].n_end >= 2 && items[i].label >= 0 && items[i].label < items[i].n_end);
        for (int e = 0; e < items[i].n_end; e++) {
            const mc_seq *q = &items[i].seq[e];
            FUZZ_REQUIRE(q->n_ctx_tok >= 1 && q->n > q->n_ctx_tok);
            for (int32_t k = 0; k < q->n; k++)
                FUZZ_REQUIRE(q->ids[k] >= 0 && q->ids[k] < l3c_vocab_size(g_tok));
        }
    }
    mc_free(items, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (data[0] % 2 == 0)
        fuzz_logits_file(data + 1, size - 1);
    else
        fuzz_jsonl(data + 1, size - 1);
    return 0;
}

/* ---------------------------------------------------------------- seeds */

static void write_seed(const char *dir, int i, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/seed%02d", dir, i);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
        perror(path);
        exit(1);
    }
}

static void write_seeds(const char *dir) {
    mkdir(dir, 0755);
    /* a valid file: n_vocab 8, n_ctx 4 (1 scored row per chunk), 2 chunks */
    unsigned char b[1 + LOGP_HEADER_BYTES + 4 * 8 + 2 * (12 + 2 * 8)] = {0};
    logp_header h = {.n_vocab = 8, .n_ctx = 4, .n_chunk = 2, .bos = 1, .fingerprint = 42};
    snprintf(h.model, sizeof h.model, "seed");
    int32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 0};
    FILE *f = fmemopen(b + 1, sizeof b - 1, "wb");
    FUZZ_REQUIRE(f && logp_write_header(f, &h, toks) == 0);
    float lg[8] = {1, 2, 3, -40, 0.5f, 0, 7, 2};
    unsigned char row[12 + 16];
    for (int c = 0; c < 2; c++) {
        logp_encode(lg, 8, 3, row);
        FUZZ_REQUIRE(fwrite(row, 1, sizeof row, f) == sizeof row);
    }
    fclose(f);
    write_seed(dir, 0, b, sizeof b);
    write_seed(dir, 1, b, 1 + LOGP_HEADER_BYTES + 10); /* truncated tokens */
    static const char *jsonl[] = {
        ("\x01{\"ctx\": \"The capital of France is\", \"endings\": [\"Paris.\", \"Berlin.\"], "
         "\"label\": 0}\n"
         "{\"context\": \"a \", \"endings\": [\"b\", \"c\", \"\"], \"label\": \"1\"}\n"),
        "\x03{\"ctx\": \"\", \"endings\": [\"x\", \"y\"], \"label\": 1}",
        "\x05{\"ctx\": \"a\\u0000b\", \"endings\": [\"\\n\", \"\\ud83e\\udd99\"], \"label\": 7}",
    };
    for (int i = 0; i < 3; i++)
        write_seed(dir, 2 + i, jsonl[i], strlen(jsonl[i]));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char buf[4096];
    const char *path = fuzz_model_path(buf, sizeof buf);
    if (!path || l3c_tokenizer_load(path, &g_tok) != L3C_OK) {
        fprintf(stderr,
                "fuzz_eval_files: no vocabulary (%s): set L3C_FUZZ_MODEL or install the default "
                "model (scripts/setup.sh)\n",
                path ? l3c_last_error() : "scripts/default-model.sh found none");
        exit(1);
    }
    if (*argc == 3 && strcmp((*argv)[1], "--write-seeds") == 0) {
        write_seeds((*argv)[2]);
        exit(0);
    }
    const char *verbose = getenv("L3C_FUZZ_VERBOSE");
    if (verbose && *verbose == '1') return 0;
    g_null_fd = open("/dev/null", O_WRONLY);
    g_err_fd = dup(2);
    if (g_null_fd < 0 || g_err_fd < 0) {
        perror("fuzz_eval_files: /dev/null");
        exit(1);
    }
    return 0;
}
