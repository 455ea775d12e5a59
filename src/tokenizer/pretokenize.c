/*
 * pretokenize.c -- splits text into pieces before byte-level BPE, with PCRE2 (UTF + UCP, JIT).
 * Owns: the table of pre-tokenizer regexes by GGUF `tokenizer.ggml.pre` name (the same lists
 * llama.cpp uses), their compilation into t->re[], and the split loop.
 *
 * Semantics (as llama.cpp's unicode_regex_split): the regexes apply in sequence; regex k splits
 * every piece produced by regex k-1 into its matches and the unmatched gaps between them (both
 * kept, in order), each piece matched in isolation (a lookahead sees the piece's end as the end
 * of text). The pieces of the last regex go to BPE. The caller passes valid UTF-8 only
 * (tokenize.c cuts invalid bytes out first), so matching runs with PCRE2_NO_UTF_CHECK.
 */
#include "tokenizer/tok_internal.h"

#include <string.h>

/* Meta's Llama 3 pattern (llama/tokenizer.py), "llama-bpe" in GGUF. */
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* GPT-2 (tiktoken r50k / HF ByteLevel). llama.cpp omits the final \s+, which changes nothing:
 * an unmatched gap is a piece of its own and gaps can only be single whitespace characters. */
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct pre_entry {
    const char *names; /* '|'-separated GGUF names */
    const char *re[L3C_TOK_MAX_RE];
} pre_entry;

static const pre_entry PRE_TABLE[] = {
    {"llama-bpe|llama3|llama-v3|falcon3|pixtral|dbrx|smaug-bpe", {RE_LLAMA3}},
    {"smollm|starcoder|refact|command-r|codeshell|exaone|minerva", {"\\p{N}", RE_GPT2}},
    {"gpt-2|gpt2|phi-2|jina-es|jina-de|mpt|olmo|jais|roberta-bpe", {RE_GPT2}},
    {"qwen2|qwen2.5|qwen-2.5|deepseek-r1-qwen|stablelm2", {RE_QWEN2}},
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
};

static int name_in(const char *names, const char *s, size_t len) {
    const char *p = names;
    while (*p) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == len && memcmp(p, s, len) == 0) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static void *pc_malloc(size_t n, void *u) { (void)u; return l3c_malloc(n); }
static void pc_free(void *p, void *u) { (void)u; free(p); }

l3c_status l3c_tok_add_regex(l3c_tokenizer *t, const char *pattern, size_t len, const char *what) {
    if (t->n_re >= L3C_TOK_MAX_RE)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "tokenizer: %s: more than %d pre-tokenizer regexes", what,
                        L3C_TOK_MAX_RE);
    pcre2_general_context *gc = pcre2_general_context_create(pc_malloc, pc_free, NULL);
    pcre2_compile_context *cc = gc ? pcre2_compile_context_create(gc) : NULL;
    if (!cc) {
        pcre2_general_context_free(gc);
        return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: regex context", what);
    }
    int err;
    PCRE2_SIZE erroff;
    /* \C would match one byte of a multi-byte character and hand the next match (and the next
     * regex) an offset inside a character, which PCRE2_NO_UTF_CHECK makes undefined */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C,
                                   &err, &erroff, cc);
    pcre2_compile_context_free(cc);
    pcre2_general_context_free(gc);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return l3c_fail(err == PCRE2_ERROR_HEAP_FAILED ? L3C_ERR_NOMEM : L3C_ERR_FORMAT,
                        "tokenizer: %s: pre-tokenizer regex at offset %zu: %s", what, (size_t)erroff,
                        (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter is the fallback */
    t->re[t->n_re++] = re;
    return L3C_OK;
}

l3c_status l3c_tok_set_pre(l3c_tokenizer *t, const char *pre, size_t len, const char *what) {
    if (!pre) pre = "default", len = 7;
    for (size_t i = 0; i < sizeof PRE_TABLE / sizeof PRE_TABLE[0]; i++) {
        if (!name_in(PRE_TABLE[i].names, pre, len)) continue;
        for (int k = 0; k < L3C_TOK_MAX_RE && PRE_TABLE[i].re[k]; k++) {
            l3c_status st = l3c_tok_add_regex(t, PRE_TABLE[i].re[k], strlen(PRE_TABLE[i].re[k]), what);
            if (st) return st;
        }
        if (PRE_TABLE[i].re[0] == RE_LLAMA3) t->ignore_merges = 1; /* as llama.cpp for llama3 */
        return L3C_OK;
    }
    return l3c_fail(L3C_ERR_UNSUPPORTED, "tokenizer: %s: tokenizer.ggml.pre '%.*s' is not supported",
                    what, (int)L3C_MIN(len, 64), pre);
}

const char *l3c_tok_pre_name(const char *const *res, int n) {
    for (size_t i = 0; i < sizeof PRE_TABLE / sizeof PRE_TABLE[0] - 1; i++) { /* not "default" */
        int k = 0;
        for (; k < n && k < L3C_TOK_MAX_RE && PRE_TABLE[i].re[k]; k++)
            if (strcmp(res[k] ? res[k] : RE_GPT2, PRE_TABLE[i].re[k]) != 0) break;
        if (k == n && (k == L3C_TOK_MAX_RE || !PRE_TABLE[i].re[k])) {
            const char *bar = strchr(PRE_TABLE[i].names, '|');
            static _Thread_local char name[32];
            size_t len = bar ? (size_t)(bar - PRE_TABLE[i].names) : strlen(PRE_TABLE[i].names);
            snprintf(name, sizeof name, "%.*s", (int)len, PRE_TABLE[i].names);
            return name;
        }
    }
    return NULL;
}

typedef struct split_ctx {
    const l3c_tokenizer *t;
    pcre2_match_data *md;
    pcre2_match_context *mc; /* with a bigger JIT stack, made on first need */
    pcre2_jit_stack *js;
    l3c_toksink *sink;
} split_ctx;

static l3c_status split(split_ctx *c, const uint8_t *p, size_t n, int lvl) {
    if (n == 0) return L3C_OK;
    if (lvl == c->t->n_re) return l3c_bpe_piece(c->t, p, n, c->sink);
    const pcre2_code *re = c->t->re[lvl];
    size_t off = 0, last = 0;
    l3c_status st;
    while (off < n) {
        int rc = pcre2_match(re, p, n, off, PCRE2_NO_UTF_CHECK, c->md, c->mc);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->js) {
            c->js = pcre2_jit_stack_create(64 * 1024, 256 * 1024 * 1024, NULL);
            c->mc = pcre2_match_context_create(NULL);
            if (!c->js || !c->mc) return l3c_fail(L3C_ERR_NOMEM, "tokenizer: regex stack");
            pcre2_jit_stack_assign(c->mc, NULL, c->js);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return l3c_fail(L3C_ERR_INVALID_ARG, "tokenizer: pre-tokenizer regex failed at byte %zu: %s",
                            off, (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t s = ov[0], e = ov[1];
        if (e <= s) { /* empty match: step over one character */
            size_t l = l3c_utf8_seq(p + off, n - off);
            off += l ? l : 1;
            continue;
        }
        if (s > last && (st = split(c, p + last, s - last, lvl + 1))) return st;
        if ((st = split(c, p + s, e - s, lvl + 1))) return st;
        last = off = e;
    }
    if (last < n) return split(c, p + last, n - last, lvl + 1);
    return L3C_OK;
}

l3c_status l3c_pretokenize(const l3c_tokenizer *t, const uint8_t *p, size_t n, l3c_toksink *s) {
    if (t->n_re == 0) return l3c_bpe_piece(t, p, n, s);
    split_ctx c = {t, NULL, NULL, NULL, s};
    pcre2_general_context *gc = pcre2_general_context_create(pc_malloc, pc_free, NULL);
    c.md = gc ? pcre2_match_data_create(1, gc) : NULL;
    pcre2_general_context_free(gc);
    if (!c.md) return l3c_fail(L3C_ERR_NOMEM, "tokenizer: regex match data");
    l3c_status st = split(&c, p, n, 0);
    pcre2_match_data_free(c.md);
    pcre2_match_context_free(c.mc);
    pcre2_jit_stack_free(c.js);
    return st;
}
