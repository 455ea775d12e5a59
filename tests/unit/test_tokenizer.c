/*
 * test_tokenizer.c -- tokenizer unit tests on the public API:
 *  - a tiny tokenizer.json written here (merges "a b" -> ab, "ab c" -> abc, "c c" -> cc):
 *    expected ids worked out by hand, buffer-size negotiation, specials, detokenize;
 *  - every allocation failing in turn while loading and tokenizing: NOMEM, NULL output, no crash
 *    (ASan checks for leaks);
 *  - l3c_utf8_complete on complete, truncated and invalid sequences;
 *  - hostile input files (missing, malformed tiktoken line, bad JSON) give the right status;
 *  - Meta's Llama 3 tokenizer.model (when the shared data is present): the README's example;
 *  - regressions of tests/fuzz/fuzz_tokenizer.c findings: a byte-level vocabulary without a
 *    byte's token drops it (never emits the GGUF "unknown" id, <|endoftext|> in SmolLM2);
 *    out-of-range special ids; sparse tokenizer.json ids; \C in a Split regex; NULL buffers;
 *    FORCE_BOS when the text starts with the text of a BOS that is not a special token.
 */
#include "check.h"
#include "gguf_builder.h"
#include "llama3c.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void l3c_set_alloc_fail_after(long n); /* util.h test hook */

static const char TINY_JSON[] =
    "{\"added_tokens\":[{\"id\":7,\"content\":\"<|end|>\",\"special\":true}],"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"use_regex\":true},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"abc\":4,\"cc\":5,\"\xc4\xa0\":6},"
    "\"merges\":[\"a b\",[\"ab\",\"c\"],\"c c\"]}}";

static char *write_tmp(const char *name, const char *data, size_t n) {
    static char path[256];
    snprintf(path, sizeof path, "/tmp/l3c_test_tok_%d_%s", (int)getpid(), name);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

static int ids_eq(const int32_t *a, int64_t n, const int32_t *b, int64_t m) {
    return n == m && memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static void test_tiny(void) {
    char *p = write_tmp("tiny.json", TINY_JSON, sizeof TINY_JSON - 1);
    l3c_tokenizer *t = NULL;
    l3c_status st = l3c_tokenizer_load(p, &t);
    CHECK_MSG(st == L3C_OK, "%s", l3c_last_error());
    if (!t) return;
    CHECK(l3c_vocab_size(t) == 8);
    int32_t ids[16];
    /* "abcc": a b c c -> (a b)=ab first (merge 0), then (ab c)=abc (merge 1) beats (c c) (merge 2) */
    int64_t n = l3c_tokenize(t, "abcc", 4, ids, 16, 0);
    CHECK(ids_eq(ids, n, (int32_t[]){4, 2}, 2));
    /* "ccab" -> cc ab */
    n = l3c_tokenize(t, "ccab", 4, ids, 16, 0);
    CHECK(ids_eq(ids, n, (int32_t[]){5, 3}, 2));
    /* " ab" is two pieces with the GPT-2 regex: " ab" -> Ġ a b -> (a b) */
    n = l3c_tokenize(t, " ab", 3, ids, 16, 0);
    CHECK(ids_eq(ids, n, (int32_t[]){6, 3}, 2));
    /* buffer negotiation: too small -> -(needed) */
    CHECK(l3c_tokenize(t, "abcab", 5, ids, 1, 0) == -2);
    CHECK(l3c_tokenize(t, "abcab", 5, NULL, 0, 0) == -2);
    /* specials: plain text by default, the id with PARSE_SPECIAL */
    n = l3c_tokenize(t, "a<|end|>", 8, ids, 16, L3C_TOKENIZE_PARSE_SPECIAL);
    CHECK(ids_eq(ids, n, (int32_t[]){0, 7}, 2));
    CHECK(l3c_token_is_special(t, 7) && !l3c_token_is_special(t, 3));
    CHECK(l3c_token_is_eog(t, 7)); /* <|end|> by name */
    CHECK(l3c_token_lookup(t, "abc", 3) == 4 && l3c_token_lookup(t, "zz", 2) == -1);
    CHECK(l3c_token_lookup(t, " ", 1) == 6 && l3c_token_lookup(t, "\xc4\xa0", 2) == 6);
    CHECK(l3c_token_text(t, 6) && strcmp(l3c_token_text(t, 6), "\xc4\xa0") == 0 && !l3c_token_text(t, 99));
    char buf[32];
    CHECK(l3c_token_to_bytes(t, 6, buf, 32) == 1 && buf[0] == ' ');
    CHECK(l3c_token_to_bytes(t, 4, buf, 2) == -3);
    int32_t dec[] = {6, 4, 7, 5};
    CHECK(l3c_detokenize(t, dec, 4, buf, 32, 0) == 13 && memcmp(buf, " abc<|end|>cc", 13) == 0);
    CHECK(l3c_detokenize(t, dec, 4, buf, 32, 1) == 6 && memcmp(buf, " abccc", 6) == 0);
    CHECK(l3c_detokenize(t, dec, 4, buf, 3, 0) == -13);
    int32_t bad[] = {8};
    CHECK(l3c_detokenize(t, bad, 1, buf, 32, 0) == INT64_MIN);
    CHECK(l3c_tokenize(NULL, "a", 1, ids, 16, 0) == INT64_MIN);
    l3c_tokenizer_free(t);
    l3c_tokenizer_free(NULL);
    unlink(p);
}

static void test_alloc_failures(void) {
    char *p = write_tmp("oom.json", TINY_JSON, sizeof TINY_JSON - 1);
    int ok_at = -1;
    for (long k = 0; k < 2000 && ok_at < 0; k++) {
        l3c_tokenizer *t = (l3c_tokenizer *)1;
        l3c_set_alloc_fail_after(k);
        l3c_status st = l3c_tokenizer_load(p, &t);
        l3c_set_alloc_fail_after(-1);
        if (st == L3C_OK) {
            ok_at = (int)k;
            int32_t ids[8];
            CHECK(l3c_tokenize(t, "abcc", 4, ids, 8, 0) == 2);
            l3c_tokenizer_free(t);
        } else {
            CHECK_MSG(st == L3C_ERR_NOMEM, "fail after %ld: %s (%s)", k, l3c_status_name(st), l3c_last_error());
            CHECK(t == NULL);
        }
    }
    CHECK(ok_at > 0);
    unlink(p);
}

static void test_utf8_complete(void) {
    CHECK(l3c_utf8_complete("abc", 3) == 3);
    CHECK(l3c_utf8_complete("a\xe6\x97", 3) == 1);        /* 日 missing its last byte */
    CHECK(l3c_utf8_complete("a\xe6\x97\xa5", 4) == 4);
    CHECK(l3c_utf8_complete("a\xf0\x9f", 3) == 1);
    CHECK(l3c_utf8_complete("a\xf0", 2) == 1);
    CHECK(l3c_utf8_complete("a\xff", 2) == 2);            /* invalid: never stalls */
    CHECK(l3c_utf8_complete("a\xe0\x80", 3) == 3);        /* overlong prefix: invalid */
    CHECK(l3c_utf8_complete("a\xed\xa0", 3) == 3);        /* surrogate prefix: invalid */
    CHECK(l3c_utf8_complete("\x80\x80\x80\x80", 4) == 4);
    CHECK(l3c_utf8_complete("", 0) == 0);
}

static void test_hostile_files(void) {
    l3c_tokenizer *t = (l3c_tokenizer *)1;
    CHECK(l3c_tokenizer_load("/nonexistent/tokenizer.model", &t) == L3C_ERR_IO && t == NULL);
    const char bad_tt[] = "IQ== 0\nIg== 5\n"; /* rank out of order */
    char *p = write_tmp("bad.model", bad_tt, sizeof bad_tt - 1);
    t = (l3c_tokenizer *)1;
    CHECK(l3c_tokenizer_load(p, &t) == L3C_ERR_FORMAT && t == NULL);
    CHECK(strstr(l3c_last_error(), "line 2") != NULL);
    unlink(p);
    const char bad_json[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}, \"merges\": []}}";
    p = write_tmp("bad.json", bad_json, sizeof bad_json - 1);
    t = (l3c_tokenizer *)1;
    CHECK(l3c_tokenizer_load(p, &t) == L3C_ERR_FORMAT && t == NULL);
    unlink(p);
    const char trunc[] = "GGUF\x03\x00\x00";
    p = write_tmp("trunc.gguf", trunc, sizeof trunc - 1);
    t = (l3c_tokenizer *)1;
    CHECK(l3c_tokenizer_load(p, &t) != L3C_OK && t == NULL);
    unlink(p);
}

static void test_llama3(void) {
    const char *dirs[] = {getenv("L3C_DATA"), "../shared/data", "shared/data", "/work/shared/data"};
    char path[512];
    FILE *f = NULL;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0] && !f; i++) {
        if (!dirs[i]) continue;
        snprintf(path, sizeof path, "%s/llama3-tokenizer/tokenizer.model", dirs[i]);
        f = fopen(path, "rb");
    }
    if (!f) {
        CHECK_REFERENCE_MISSING("test_tokenizer: Llama 3 checks: tokenizer.model not found (set L3C_DATA)");
        return;
    }
    fclose(f);
    l3c_tokenizer *t = NULL;
    CHECK_MSG(l3c_tokenizer_load(path, &t) == L3C_OK, "%s", l3c_last_error());
    if (!t) return;
    int32_t ids[16];
    int64_t n = l3c_tokenize(t, "This is a test sentence.", 24, ids, 16, L3C_TOKENIZE_ADD_BOS);
    CHECK(ids_eq(ids, n, (int32_t[]){128000, 2028, 374, 264, 1296, 11914, 13}, 7));
    CHECK(l3c_vocab_size(t) == 128256 && l3c_token_bos(t) == 128000 && l3c_token_eos(t) == 128001);
    CHECK(l3c_token_eot(t) == 128009 && l3c_token_is_eog(t, 128009) && l3c_token_is_eog(t, 128001));
    CHECK(!l3c_token_is_eog(t, 2028) && l3c_token_is_special(t, 128006));
    CHECK(l3c_token_lookup(t, "<|eot_id|>", 10) == 128009);
    l3c_tokenizer_free(t);
}

/* GGUF gpt2 vocabulary: <|endoftext|> (control, the "unknown" id), the letters a-c, "ab". */
static void write_gpt2_vocab(const char *path, void (*mutate)(ggf *)) {
    ggf f = {0};
    const char *tok[] = {"<|endoftext|>", "a", "b", "c", "ab"};
    int32_t types[] = {3, 1, 1, 1, 1};
    const char *merges[] = {"a b"};
    ggf_kv_str(&f, "tokenizer.ggml.model", "gpt2");
    ggf_kv_str(&f, "tokenizer.ggml.pre", "gpt-2");
    ggf_kv_arr_str(&f, "tokenizer.ggml.tokens", tok, 5);
    ggf_kv_arr_i32(&f, "tokenizer.ggml.token_type", types, 5);
    ggf_kv_arr_str(&f, "tokenizer.ggml.merges", merges, 1);
    ggf_kv_u32(&f, "tokenizer.ggml.unknown_token_id", 0);
    ggf_kv_u32(&f, "tokenizer.ggml.eos_token_id", 0);
    if (mutate) mutate(&f);
    CHECK(ggf_write_file(&f, path) == 0);
    ggf_free(&f);
}
static void bos_normal(ggf *f) { ggf_kv_u32(f, "tokenizer.ggml.bos_token_id", 1); } /* "a" */
static void bos_past_end(ggf *f) { ggf_kv_u32(f, "tokenizer.ggml.bos_token_id", 5); }
static void eot_past_end(ggf *f) { ggf_kv_u32(f, "tokenizer.ggml.eot_token_id", 99); }

static l3c_status load_text(const char *name, const char *text, l3c_tokenizer **t) {
    char *p = write_tmp(name, text, strlen(text));
    *t = (l3c_tokenizer *)1;
    l3c_status st = l3c_tokenizer_load(p, t);
    unlink(p);
    return st;
}

static void test_fuzz_regressions(void) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/l3c_test_tok_%d_vocab.gguf", (int)getpid());
    write_gpt2_vocab(path, NULL);
    l3c_tokenizer *t = NULL;
    CHECK_MSG(l3c_tokenizer_load(path, &t) == L3C_OK, "%s", l3c_last_error());
    if (t) { /* 'x' and 0xff have no token: dropped, not <|endoftext|> */
        int32_t ids[16];
        int64_t n = l3c_tokenize(t, "abx\xff", 4, ids, 16, 0);
        CHECK(ids_eq(ids, n, (int32_t[]){4}, 1));
        n = l3c_tokenize(t, "a\xff" "b", 3, ids, 16, 0);
        CHECK(ids_eq(ids, n, (int32_t[]){1, 2}, 2)); /* 0xff is its own piece: no merge across it */
        int32_t one = 3;
        CHECK(l3c_detokenize(t, &one, 1, NULL, 0, 0) == -1);
        CHECK(l3c_token_to_bytes(t, 3, NULL, 0) == -1);
        l3c_tokenizer_free(t);
    }
    /* FORCE_BOS + PARSE_SPECIAL: a BOS that is an ordinary token is still prepended */
    write_gpt2_vocab(path, bos_normal);
    t = NULL;
    CHECK_MSG(l3c_tokenizer_load(path, &t) == L3C_OK, "%s", l3c_last_error());
    if (t) {
        int32_t ids[8];
        int64_t n = l3c_tokenize(t, "ab", 2, ids, 8, L3C_TOKENIZE_FORCE_BOS | L3C_TOKENIZE_PARSE_SPECIAL);
        CHECK(ids_eq(ids, n, (int32_t[]){1, 4}, 2));
        l3c_tokenizer_free(t);
    }
    void (*bad[])(ggf *) = {bos_past_end, eot_past_end};
    const char *key[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eot_token_id"};
    for (int i = 0; i < 2; i++) {
        write_gpt2_vocab(path, bad[i]);
        t = (l3c_tokenizer *)1;
        CHECK(l3c_tokenizer_load(path, &t) == L3C_ERR_FORMAT && t == NULL);
        CHECK_MSG(strstr(l3c_last_error(), key[i]) && strstr(l3c_last_error(), path), "%s", l3c_last_error());
    }
    unlink(path);
    /* one id of 2e9 must not size the tables for 2e9 tokens */
    CHECK(load_text("sparse.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":2000000000},"
                                   "\"merges\":[]}}", &t) == L3C_ERR_FORMAT && t == NULL);
    CHECK_MSG(strstr(l3c_last_error(), "2000000000") != NULL, "%s", l3c_last_error());
    /* \C (one byte of a character) would split UTF-8 under PCRE2_NO_UTF_CHECK */
    CHECK(load_text("bsc.json", "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\C\"}},"
                                "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", &t) ==
          L3C_ERR_FORMAT && t == NULL);
    CHECK_MSG(strstr(l3c_last_error(), "regex") != NULL, "%s", l3c_last_error());
}

int main(void) {
    test_tiny();
    test_alloc_failures();
    test_utf8_complete();
    test_hostile_files();
    test_llama3();
    test_fuzz_regressions();
    return CHECK_DONE("test_tokenizer");
}
