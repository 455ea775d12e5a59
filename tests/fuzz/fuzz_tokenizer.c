/*
 * fuzz_tokenizer.c -- libFuzzer harness for the tokenizer. The first input byte picks the mode:
 *   0  loaders: the rest is a tokenizer file (tiktoken text, tokenizer.json or GGUF) given to
 *      l3c_tokenizer_load_memory; a tokenizer that loads is exercised on a slice of the input.
 *   1  Meta's Llama 3 tokenizer.model (L3C_FUZZ_TOKENIZER, default
 *      /work/shared/data/llama3-tokenizer/tokenizer.model), loaded once;
 *   2  the SmolLM2 GGUF vocabulary (L3C_FUZZ_GGUF_VOCAB, default `scripts/default-model.sh`);
 *   3  l3c_utf8_complete on the rest, plus mode 1 on it.
 * Modes 1-2: byte 1 holds the flags (PARSE_SPECIAL, ADD_BOS, FORCE_BOS), the rest is the text.
 * Checked (a failure traps): tokenize never fails on a real vocabulary; size negotiation
 * (-needed) agrees with the count; every id is in range; token_to_bytes / detokenize agree;
 * streamed pieces (l3c_token_to_piece) concatenate to the detokenized text for byte-level BPE;
 * decode(encode(x)) == x without PARSE_SPECIAL and BOS (less the bytes a byte-level vocabulary has
 * no token for: SmolLM2 lacks 21 of them); l3c_utf8_complete keeps all but at most
 * the last 3 bytes and never cuts a valid sequence in two.
 * A vocabulary that cannot be found is skipped (its mode returns at once) with one note, or
 * with L3C_FUZZ_STRICT=1 (make fuzz-ci) ends the run with exit status 1.
 *
 *   fuzz_tokenizer --write-seeds DIR     writes the seed corpus (tiny files of each format)
 * Build and run: `make fuzz-tokenizer` (fuzz.mk).
 */
#include "gguf_builder.h"
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FUZZ_REQUIRE(c)                                                                            \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: FUZZ_REQUIRE(%s) failed\n", __FILE__, __LINE__, #c);         \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

static l3c_tokenizer *g_llama3, *g_smol;
static long g_load_inputs, g_loaded; /* printed at exit */

static void print_stats(void) {
    fprintf(stderr, "fuzz_tokenizer: %ld loader inputs, %ld loaded\n", g_load_inputs, g_loaded);
}

static l3c_tokenizer *load_vocab(const char *env, const char *dflt_path, int from_script) {
    char path[4096];
    const char *p = getenv(env);
    if (!p && from_script) {
        FILE *f = popen("sh scripts/default-model.sh 2>/dev/null || sh ../scripts/default-model.sh 2>/dev/null", "r");
        if (f) {
            if (fgets(path, sizeof path, f)) {
                path[strcspn(path, "\n")] = 0;
                p = path;
            }
            pclose(f);
        }
    }
    if (!p) p = dflt_path;
    l3c_tokenizer *t = NULL;
    if (!p || l3c_tokenizer_load(p, &t) != L3C_OK) {
        const char *strict = getenv("L3C_FUZZ_STRICT"); /* make fuzz-ci: a missing vocabulary fails */
        fprintf(stderr, "fuzz_tokenizer: %s not loaded (%s); %s\n", env, p ? l3c_last_error() : "no path",
                strict && !strcmp(strict, "1") ? "L3C_FUZZ_STRICT=1: failing" : "its mode is skipped");
        if (strict && !strcmp(strict, "1")) exit(1);
        return NULL;
    }
    fprintf(stderr, "fuzz_tokenizer: %s = %s (%d tokens)\n", env, p, l3c_vocab_size(t));
    return t;
}

/* ---------------------------------------------------------------- checks */

static void check_utf8_complete(const uint8_t *p, size_t n) {
    size_t k = l3c_utf8_complete((const char *)p, n);
    FUZZ_REQUIRE(k <= n && n - k <= 3);
    /* what is held back is a valid, incomplete prefix of a sequence */
    if (k < n) {
        FUZZ_REQUIRE(l3c_utf8_seq(p + k, n - k) == 0);
        FUZZ_REQUIRE(p[k] >= 0xc2 && p[k] <= 0xf4);
    }
    /* a complete valid sequence at the end is never held back */
    for (size_t l = 1; l <= 4 && l <= n; l++)
        if (l3c_utf8_seq(p + n - l, l) == l) FUZZ_REQUIRE(k == n);
}

/* Tokenizes, checks the results, returns the ids (caller frees) or NULL on a tokenizer error. */
static int32_t *tokenize(const l3c_tokenizer *t, const uint8_t *p, size_t n, int flags, int64_t *nout) {
    int64_t cap = (int64_t)n + 2;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    int64_t k = l3c_tokenize(t, (const char *)p, n, ids, cap, flags);
    if (k == INT64_MIN) {
        free(ids);
        return NULL;
    }
    if (k < 0) { /* more tokens than bytes + 2 (SPM unknown fallbacks, specials): negotiate */
        cap = -k;
        ids = realloc(ids, (size_t)cap * sizeof *ids);
        k = l3c_tokenize(t, (const char *)p, n, ids, cap, flags);
        FUZZ_REQUIRE(k == cap);
    }
    int64_t need = l3c_tokenize(t, (const char *)p, n, NULL, 0, flags);
    FUZZ_REQUIRE(need == -k || (k == 0 && need == 0));
    for (int64_t i = 0; i < k; i++) FUZZ_REQUIRE(ids[i] >= 0 && ids[i] < t->n_vocab);
    *nout = k;
    return ids;
}

static void exercise(const l3c_tokenizer *t, const uint8_t *p, size_t n, int flags, int real) {
    int64_t k;
    int32_t *ids = tokenize(t, p, n, flags, &k);
    if (!ids) {
        FUZZ_REQUIRE(!real); /* a real vocabulary tokenizes any bytes */
        return;
    }
    int64_t need = l3c_detokenize(t, ids, k, NULL, 0, 0);
    FUZZ_REQUIRE(need <= 0 && need != INT64_MIN);
    size_t cap = (size_t)-need, bytes_total = 0;
    for (int64_t i = 0; i < k; i++) {
        int32_t bn = l3c_token_to_bytes(t, ids[i], NULL, 0);
        FUZZ_REQUIRE(bn <= 0 && (uint32_t)-bn == t->tok[ids[i]].bytes_len);
        bytes_total += (size_t)-bn;
    }
    char *dec = malloc(cap + 1), *pieces = malloc(bytes_total + 1);
    int64_t dn = l3c_detokenize(t, ids, k, dec, (int64_t)cap, 0);
    FUZZ_REQUIRE(dn == -need);
    int64_t sn = l3c_detokenize(t, ids, k, pieces, (int64_t)bytes_total, 1);
    FUZZ_REQUIRE(sn >= 0 && sn <= dn);
    size_t total = 0;
    int32_t prev = -1;
    for (int64_t i = 0; i < k; i++) {
        int32_t pn = l3c_token_to_piece(t, prev, ids[i], NULL, 0);
        FUZZ_REQUIRE(pn <= 0 && (uint32_t)-pn <= t->tok[ids[i]].bytes_len);
        int32_t got = l3c_token_to_piece(t, prev, ids[i], pieces + total, -pn);
        FUZZ_REQUIRE(got == -pn);
        total += (size_t)got;
        prev = ids[i];
    }
    if (t->kind == L3C_TOK_BPE) {
        FUZZ_REQUIRE(bytes_total == (size_t)dn);
        FUZZ_REQUIRE(total == (size_t)dn && memcmp(pieces, dec, total) == 0);
    }
    if (real && !(flags & (L3C_TOKENIZE_PARSE_SPECIAL | L3C_TOKENIZE_ADD_BOS | L3C_TOKENIZE_FORCE_BOS))) {
        /* round trip, except the bytes a byte-level vocabulary has no token for (dropped) */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += t->kind != L3C_TOK_BPE || t->byte_tok[p[i]] >= 0;
        FUZZ_REQUIRE((size_t)dn == m);
        for (size_t i = 0, j = 0; i < n; i++)
            if (t->kind != L3C_TOK_BPE || t->byte_tok[p[i]] >= 0) FUZZ_REQUIRE(dec[j++] == (char)p[i]);
    }
    if (flags & L3C_TOKENIZE_FORCE_BOS && t->bos >= 0) FUZZ_REQUIRE(k >= 1 && ids[0] == t->bos);
    check_utf8_complete((const uint8_t *)dec, (size_t)dn);
    free(dec);
    free(pieces);
    free(ids);
}

/* A tokenizer built from fuzzed bytes: its tables, then tokenization of some text. */
static void exercise_loaded(const l3c_tokenizer *t, const uint8_t *p, size_t n) {
    FUZZ_REQUIRE(t->n_vocab > 0);
    int32_t lim = t->n_vocab < 512 ? t->n_vocab : 512;
    for (int32_t id = 0; id < lim; id++) {
        const char *text = l3c_token_text(t, id);
        FUZZ_REQUIRE(text != NULL);
        int32_t found = l3c_token_lookup(t, text, t->tok[id].text_len);
        FUZZ_REQUIRE(found >= 0 && found <= id);
        char buf[64];
        int32_t bn = l3c_token_to_bytes(t, id, buf, sizeof buf);
        FUZZ_REQUIRE(bn == (int32_t)t->tok[id].bytes_len || bn == -(int32_t)t->tok[id].bytes_len);
        (void)l3c_token_is_eog(t, id);
        (void)l3c_token_is_special(t, id);
    }
    FUZZ_REQUIRE(t->bos < t->n_vocab && t->eos < t->n_vocab && t->eot < t->n_vocab &&
                 t->eom < t->n_vocab && t->unk < t->n_vocab);
    static const char sample[] = "Hello, world! <s> <|eot_id|> 123 \xe6\x97\xa5\xe6\x9c\xac \xff\xfe a  b";
    for (int flags = 0; flags < 8; flags++) exercise(t, (const uint8_t *)sample, sizeof sample - 1, flags, 0);
    size_t m = n < 256 ? n : 256;
    exercise(t, p + n - m, m, L3C_TOKENIZE_PARSE_SPECIAL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] & 3;
    if (mode == 0) {
        l3c_tokenizer *t = (l3c_tokenizer *)&g_llama3;
        g_load_inputs++;
        l3c_status st = l3c_tokenizer_load_memory(data + 1, size - 1, "fuzz", &t);
        if (st != L3C_OK) {
            FUZZ_REQUIRE(t == NULL && l3c_last_error()[0] != '\0');
            return 0;
        }
        g_loaded++;
        exercise_loaded(t, data + 1, size - 1);
        l3c_tokenizer_free(t);
        return 0;
    }
    if (size < 2) return 0;
    const uint8_t *text = data + 2;
    size_t n = size - 2;
    int flags = data[1] & 7;
    if (mode == 3) {
        check_utf8_complete(data + 1, size - 1);
        mode = 1;
    }
    const l3c_tokenizer *t = mode == 1 ? g_llama3 : g_smol;
    if (!t) return 0;
    exercise(t, text, n, flags, 1);
    if (flags) exercise(t, text, n, 0, 1); /* and the round trip on the same text */
    return 0;
}

/* ---------------------------------------------------------------- seeds */

static void write_seed(const char *dir, const char *name, int mode, int flags, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputc(mode, f);
    if (mode != 0) fputc(flags, f);
    fwrite(p, 1, n, f);
    fclose(f);
}

static void write_seeds(const char *dir) {
    mkdir(dir, 0755);
    /* tiktoken: the 10 bytes ' ' .. ')' then "ab" */
    static const char tt[] = "IA== 0\nIQ== 1\nIg== 2\nIw== 3\nJA== 4\nJQ== 5\nJg== 6\nJw== 7\nKA== 8\nKQ== 9\nYWI= 10\n";
    write_seed(dir, "load_tiktoken", 0, 0, tt, sizeof tt - 1);
    static const char js[] =
        "{\"added_tokens\":[{\"id\":7,\"content\":\"<|end|>\",\"special\":true},{\"id\":8,\"content\":\"<u>\"}],"
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
        "{\"Regex\":\"\\\\p{N}{1,3}\"}},{\"type\":\"ByteLevel\",\"use_regex\":true}]},"
        "\"model\":{\"type\":\"BPE\",\"ignore_merges\":false,\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"abc\":4,"
        "\"cc\":5,\"\xc4\xa0\":6},\"merges\":[\"a b\",[\"ab\",\"c\"],\"c c\"]}}";
    write_seed(dir, "load_json", 0, 0, js, sizeof js - 1);
    /* GGUF gpt2 vocabulary: the printable ASCII bytes, Ġ, a few merges, a control token */
    {
        ggf f = {0};
        const char *tok[100];
        char names[100][4];
        int32_t types[100];
        int n = 0;
        for (int c = 33; c < 127; c++, n++) {
            snprintf(names[n], sizeof names[n], "%c", c);
            tok[n] = names[n], types[n] = 1;
        }
        tok[n] = "\xc4\xa0", types[n++] = 1;
        tok[n] = "ab", types[n++] = 1;
        tok[n] = "\xc4\xa0" "ab", types[n++] = 1;
        tok[n] = "<|im_end|>", types[n++] = 3;
        const char *merges[] = {"a b", "\xc4\xa0 ab", "1 2"};
        ggf_kv_str(&f, "tokenizer.ggml.model", "gpt2");
        ggf_kv_str(&f, "tokenizer.ggml.pre", "smollm");
        ggf_kv_arr_str(&f, "tokenizer.ggml.tokens", tok, (size_t)n);
        ggf_kv_arr_i32(&f, "tokenizer.ggml.token_type", types, (size_t)n);
        ggf_kv_arr_str(&f, "tokenizer.ggml.merges", merges, 3);
        ggf_kv_u32(&f, "tokenizer.ggml.eos_token_id", (uint32_t)n - 1);
        ggf_kv_bool(&f, "tokenizer.ggml.add_bos_token", 0);
        ggb b = {0};
        ggf_serialize(&f, &b);
        write_seed(dir, "load_gguf_gpt2", 0, 0, b.d, b.n);
        ggb_free(&b);
        ggf_free(&f);
    }
    /* GGUF SentencePiece vocabulary (the tiny llama's, no tensors) */
    {
        ggf f = {0};
        ggb_llama_opts o = ggb_llama_default();
        o.n_vocab = 40;
        ggb_tiny_llama(&f, &o);
        while (f.n_t) ggf_del_tensor(&f, f.t[0].name);
        ggb b = {0};
        ggf_serialize(&f, &b);
        write_seed(dir, "load_gguf_spm", 0, 0, b.d, b.n);
        ggb_free(&b);
        ggf_free(&f);
    }
    static const char text[] = "Hello world! It's 2024:\n\tnew  lines \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
                               "<|eot_id|><|im_end|> caf\xc3\xa9 \xff\xfe\xc3 \xf0\x9f\x98\x80 x";
    write_seed(dir, "llama3_plain", 1, 0, text, sizeof text - 1);
    write_seed(dir, "llama3_special", 1, L3C_TOKENIZE_PARSE_SPECIAL | L3C_TOKENIZE_ADD_BOS, text, sizeof text - 1);
    write_seed(dir, "smol_plain", 2, 0, text, sizeof text - 1);
    write_seed(dir, "smol_special", 2, L3C_TOKENIZE_PARSE_SPECIAL | L3C_TOKENIZE_FORCE_BOS, text, sizeof text - 1);
    write_seed(dir, "utf8", 3, 0, "ab\xe6\x97", 4);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    if (*argc == 3 && strcmp((*argv)[1], "--write-seeds") == 0) {
        write_seeds((*argv)[2]);
        exit(0);
    }
    g_llama3 = load_vocab("L3C_FUZZ_TOKENIZER", "/work/shared/data/llama3-tokenizer/tokenizer.model", 0);
    g_smol = load_vocab("L3C_FUZZ_GGUF_VOCAB", NULL, 1);
    atexit(print_stats);
    return 0;
}
