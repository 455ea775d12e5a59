/*
 * compile.c -- the public grammar constructors (llama3c.h): l3c_grammar_from_gbnf and
 * l3c_grammar_from_json_schema. The vocabulary index (token bytes, trie, summaries; matcher.c)
 * depends only on the tokenizer, so it is built by the first grammar compiled for a tokenizer
 * and kept in the tokenizer's slot, published with a compare-and-swap (a thread that loses the
 * race frees its copy); every grammar holds a reference, so a grammar may outlive its tokenizer.
 */
#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"

#include <string.h>

static int tok_eog(const void *ctx, int32_t id) {
    return l3c_token_is_eog(ctx, id);
}

static int32_t tok_bytes_of(const void *ctx, int32_t id, char *buf, int32_t cap) {
    return l3c_token_is_special(ctx, id) ? 0 : l3c_token_to_bytes(ctx, id, buf, cap);
}

/* The tokenizer's index, one more reference for the caller. */
static l3c_status vocab_of(const l3c_tokenizer *tok, l3c_gvocab **out) {
    l3c_gvocab **slot = l3c_tokenizer_gvocab_slot(tok);
    l3c_gvocab *v = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!v) {
        l3c_vsrc vs = {
            .ctx = tok, .n = l3c_vocab_size(tok), .is_eog = tok_eog, .bytes = tok_bytes_of};
        l3c_gvocab *fresh = NULL;
        l3c_status st = l3c_gvocab_build(&vs, &fresh);
        if (st != L3C_OK) return st;
        l3c_gvocab *expected = NULL;
        if (__atomic_compare_exchange_n(slot, &expected, fresh, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            v = fresh;
        } else {
            l3c_gvocab_release(fresh);
            v = expected;
        }
    }
    l3c_gvocab_ref(v);
    *out = v;
    return L3C_OK;
}

l3c_status l3c_grammar_from_gbnf(const l3c_tokenizer *tok, const char *gbnf, size_t len,
                                 const char *root, l3c_grammar **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "grammar: out is NULL");
    *out = NULL;
    if (!tok) return l3c_fail(L3C_ERR_INVALID_ARG, "grammar: NULL tokenizer");
    gram_rules *r = NULL;
    l3c_status st = l3c_gbnf_parse(gbnf, len, root, &r);
    if (st != L3C_OK) return st;
    l3c_gvocab *v = NULL;
    if ((st = vocab_of(tok, &v)) != L3C_OK) {
        l3c_gram_rules_free(r);
        return st;
    }
    return l3c_grammar_make(r, v, out);
}

l3c_status l3c_grammar_from_json_schema(const l3c_tokenizer *tok, const char *schema_json,
                                        size_t len, l3c_grammar **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "grammar: out is NULL");
    *out = NULL;
    if (!tok) return l3c_fail(L3C_ERR_INVALID_ARG, "grammar: NULL tokenizer");
    char *gbnf = NULL;
    l3c_status st = l3c_json_schema_to_gbnf(schema_json, len, &gbnf);
    if (st != L3C_OK) return st;
    st = l3c_grammar_from_gbnf(tok, gbnf, strlen(gbnf), "root", out);
    free(gbnf);
    return st;
}
