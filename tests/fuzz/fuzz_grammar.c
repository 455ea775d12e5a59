/*
 * fuzz_grammar.c -- libFuzzer harness for the grammar engine (src/grammar/): the GBNF parser, the
 * JSON Schema converter and the matcher. Byte 0 picks the mode:
 *   even: the input up to the first 0x00 is GBNF, the bytes after it drive the matcher;
 *   odd:  the input up to the first 0x00 is a JSON Schema, converted to GBNF, then as above.
 * A small synthetic vocabulary (every single byte, some multi-byte strings that split UTF-8 code
 * points, an end-of-generation token) keeps each input fast. Checked (a failure traps):
 *   - a schema the converter accepts gives GBNF the parser accepts;
 *   - after every step the trie mask equals the per-token check (l3c_gmatch_allows) on every
 *     token, and its count is the number of set bits;
 *   - accepting an allowed token succeeds; a complete state allows the end token.
 *   fuzz_grammar --write-seeds DIR   writes llama.cpp-style grammars and schemas
 * Build and run: `make fuzz-grammar` (fuzz.mk).
 */
#include "grammar/grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FUZZ_REQUIRE(c)                                                                            \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: FUZZ_REQUIRE(%s) failed\n", __FILE__, __LINE__, #c);           \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

#define MAX_STEPS 48

static const char *k_multi[] = {"{\"", "\":",  "\", \"", "true",  "null",     "12",   " {",
                                "é",   "\xc3", "\xa9",   "日本",  "\xe6\x97", "\xa5", "ab",
                                "abc", "  ",   "\n",     "-1.5e", "\\u00"};
static char *g_toks[256 + 32];
static size_t g_lens[256 + 32];
static int32_t g_n, g_eog;

static void init_vocab(void) {
    if (g_n) return;
    static char bytes[256];
    for (int b = 0; b < 256; b++) {
        bytes[b] = (char)b;
        g_toks[g_n] = &bytes[b];
        g_lens[g_n++] = 1;
    }
    for (size_t k = 0; k < sizeof k_multi / sizeof k_multi[0]; k++) {
        g_toks[g_n] = (char *)k_multi[k];
        g_lens[g_n++] = strlen(k_multi[k]);
    }
    g_toks[g_n] = "";
    g_lens[g_n] = 0;
    g_eog = g_n++;
}

static void drive(const char *gbnf, size_t len, const uint8_t *steps, size_t n_steps) {
    gram_rules *r = NULL;
    if (l3c_gbnf_parse(gbnf, len, NULL, &r) != L3C_OK) return;
    l3c_grammar *g = NULL;
    if (l3c_grammar_from_rules_vocab(r, (const char *const *)g_toks, g_lens, g_n, g_eog, &g) !=
        L3C_OK)
        return;
    l3c_gmatch *m = NULL;
    if (l3c_gmatch_create(g, &m) == L3C_OK) {
        uint32_t bits[(256 + 32 + 31) / 32];
        for (size_t s = 0; s <= n_steps && s < MAX_STEPS; s++) {
            int64_t cnt = l3c_gmatch_mask(m, bits, g_n);
            if (cnt < 0) break; /* a depth limit: reported, fine */
            int64_t brute = 0, pop = 0;
            for (int32_t t = 0; t < g_n; t++) {
                int a = l3c_gmatch_allows(m, t), b = (int)(bits[t >> 5] >> (t & 31) & 1);
                FUZZ_REQUIRE(a == b);
                brute += a;
                pop += b;
            }
            FUZZ_REQUIRE(cnt == brute && cnt == pop);
            if (l3c_gmatch_done(m)) FUZZ_REQUIRE(l3c_gmatch_allows(m, g_eog));
            if (s == n_steps || cnt == 0) break;
            /* pick the (steps[s] mod cnt)-th allowed token */
            int64_t want = steps[s] % cnt;
            int32_t pick = -1;
            for (int32_t t = 0; t < g_n && pick < 0; t++)
                if ((bits[t >> 5] >> (t & 31) & 1) && want-- == 0) pick = t;
            FUZZ_REQUIRE(pick >= 0);
            if (pick == g_eog) break;
            FUZZ_REQUIRE(l3c_gmatch_accept(m, pick) == L3C_OK);
        }
        l3c_gmatch_free(m);
    }
    l3c_grammar_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init_vocab();
    if (size < 1) return 0;
    int mode = data[0] & 1;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    const uint8_t *nul = memchr(body, 0, n);
    size_t text_len = nul ? (size_t)(nul - body) : n;
    const uint8_t *steps = nul ? nul + 1 : body + n;
    size_t n_steps = nul ? n - text_len - 1 : 0;
    if (mode == 0) {
        drive((const char *)body, text_len, steps, n_steps);
    } else {
        char *gbnf = NULL;
        if (l3c_json_schema_to_gbnf((const char *)body, text_len, &gbnf) == L3C_OK) {
            gram_rules *r = NULL;
            l3c_status st = l3c_gbnf_parse(gbnf, strlen(gbnf), NULL, &r);
            if (st != L3C_OK)
                fprintf(stderr, "converter output does not parse: %s\n%s\n", l3c_last_error(),
                        gbnf);
            FUZZ_REQUIRE(st == L3C_OK);
            l3c_gram_rules_free(r);
            drive(gbnf, strlen(gbnf), steps, n_steps);
            free(gbnf);
        }
    }
    return 0;
}

static const char *k_seeds[] = {
    "\x00root ::= object\nvalue ::= object | array | string | number | (\"true\" | \"false\" | "
    "\"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" "
    "[0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] "
    "[1-9]{0,15})? ws\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n",
    "\x00root ::= (expr \"=\" ws term \"\\n\")+\nexpr ::= term ([-+*/] term)*\n"
    "term ::= ident | num | \"(\" ws expr \")\" ws\nident ::= [a-z] [a-z0-9_]* ws\nnum ::= [0-9]+ "
    "ws\n"
    "ws ::= [ \\t\\n]*\n",
    "\x00root ::= item+\n# comment\nitem ::= \"- \" [^\\r\\n\\x0b\\x0c\\x85\\u2028\\u2029]+ "
    "\"\\n\"\n",
    "\x00root ::= [\\u4e00-\\u4e10]+ | \"\\u00e9\" . [^a-z]{2,3}\n",
    "\x01{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":5},"
    "\"age\":{\"type\":"
    "\"integer\",\"minimum\":-5,\"maximum\":120},\"tags\":{\"type\":\"array\",\"items\":{\"enum\":["
    "\"a\",\"b\"]}}},"
    "\"required\":[\"name\"],\"additionalProperties\":{\"type\":\"boolean\"}}",
    "\x01{\"$ref\":\"#/$defs/"
    "t\",\"$defs\":{\"t\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
    "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/t\"}}},\"required\":[\"v\"]}}}",
    "\x01{\"oneOf\":[{\"type\":\"string\",\"format\":\"date\"},{\"type\":\"null\"},{\"type\":"
    "\"array\","
    "\"prefixItems\":[{\"const\":1},{\"type\":\"string\",\"format\":\"uuid\"}],\"items\":false}]}",
};

int main_write_seeds(const char *dir);
int main_write_seeds(const char *dir) {
    mkdir(dir, 0755);
    for (size_t k = 0; k < sizeof k_seeds / sizeof k_seeds[0]; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/seed%zu", dir, k);
        FILE *f = fopen(path, "wb");
        if (!f) return 1;
        size_t len = strlen(k_seeds[k] + 1) + 1; /* byte 0 may be 0x00 */
        fwrite(k_seeds[k], 1, len, f);
        static const uint8_t steps[] = {0, 3, 7, 1, 250, 9, 2, 100, 5, 5, 5, 0, 1, 2};
        fputc(0, f);
        fwrite(steps, 1, sizeof steps, f);
        fclose(f);
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    for (int i = 1; i + 1 < *argc; i++)
        if (!strcmp((*argv)[i], "--write-seeds")) exit(main_write_seeds((*argv)[i + 1]));
    return 0;
}
