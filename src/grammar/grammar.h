/*
 * grammar.h -- internal interface of the grammar engine (public API: l3c_grammar_* in llama3c.h).
 *
 *  gbnf.c        GBNF text -> gram_rules (flat element array, llama.cpp's encoding)
 *  json_schema.c JSON Schema -> GBNF text
 *  matcher.c     l3c_grammar (rules + vocabulary trie) and l3c_gmatch, the per-sampler parse
 *                state: pushdown stacks over code points, token checks and token masks
 *  compile.c     the public constructors: a tokenizer's vocabulary index (cached on the
 *                tokenizer), GBNF or JSON Schema -> l3c_grammar. Kept apart so that the sampler
 *                (matcher.c) links without the tokenizer and jansson (the arm64 test build)
 *
 * Rules are stored as llama.cpp stores them: each rule is a sequence of elements, alternatives
 * separated by G_ALT, the rule closed by G_END. A character class is one G_CHAR / G_CHAR_NOT
 * element followed by G_RNG_UPPER (upper bound of the previous char) and G_CHAR_ALT (another
 * char / range of the same class) elements. `*`, `+`, `?` and `{m,n}` become generated rules.
 */
#ifndef L3C_GRAMMAR_H
#define L3C_GRAMMAR_H

#include "util/util.h"

enum {
    G_END = 0,       /* end of a rule */
    G_ALT = 1,       /* start of another alternative */
    G_REF = 2,       /* val: rule id */
    G_CHAR = 3,      /* val: code point; starts a class */
    G_CHAR_NOT = 4,  /* val: code point; starts a negated class */
    G_RNG_UPPER = 5, /* val: inclusive upper bound of the previous G_CHAR / G_CHAR_ALT */
    G_CHAR_ALT = 6,  /* val: another code point of the class */
    G_CHAR_ANY = 7   /* any code point ('.') */
};

typedef struct gel {
    uint32_t type;
    uint32_t val;
} gel;

typedef struct gram_rules {
    gel *el; /* [n_el] every rule, concatenated */
    uint32_t n_el;
    uint32_t *rule_off; /* [n_rules] first element of each rule */
    char **names;       /* [n_rules] rule names (generated ones: "name_N") */
    uint32_t n_rules;
    uint32_t root;
} gram_rules;

/* Parses GBNF (len bytes) with start rule root (NULL: "root"). Caller owns *out. */
l3c_status l3c_gbnf_parse(const char *src, size_t len, const char *root, gram_rules **out);
void l3c_gram_rules_free(gram_rules *r);
/* 1 when the char class starting at element pos accepts code point cp. */
int l3c_gram_match_char(const gel *el, uint32_t pos, uint32_t cp);
/* 1 when it accepts some code point in [lo, hi]. */
int l3c_gram_match_range(const gel *el, uint32_t pos, uint32_t lo, uint32_t hi);
/* The element after the char class starting at pos. */
uint32_t l3c_gram_class_end(const gel *el, uint32_t pos);

/* A vocabulary index (token bytes, trie, subtree summaries): the part of a compiled grammar that
 * depends only on the tokenizer. Built once per tokenizer and kept by it (l3c_tokenizer_free
 * releases its reference); each grammar holds a reference. */
typedef struct l3c_gvocab l3c_gvocab;
void l3c_gvocab_release(l3c_gvocab *v);
void l3c_gvocab_ref(l3c_gvocab *v);
/* Where token byte strings come from (compile.c: a tokenizer; matcher.c: arrays). bytes returns
 * the count written, -(needed) when cap is too small, or 0 for a token that never matches text
 * (control tokens). */
typedef struct l3c_vsrc {
    const void *ctx;
    int32_t n;
    int (*is_eog)(const void *ctx, int32_t id);
    int32_t (*bytes)(const void *ctx, int32_t id, char *buf, int32_t cap);
} l3c_vsrc;
/* Builds an index (one reference for the caller). */
l3c_status l3c_gvocab_build(const l3c_vsrc *vs, l3c_gvocab **out);
/* A grammar from rules and a vocabulary index; takes both references (released on error). */
l3c_status l3c_grammar_make(gram_rules *r, l3c_gvocab *v, l3c_grammar **out);
/* The tokenizer's slot for its index (tokenizer/vocab.c), read and set atomically. */
l3c_gvocab **l3c_tokenizer_gvocab_slot(const l3c_tokenizer *tok);

/* A compiled grammar over an explicit vocabulary (tests, fuzzing): token i is lens[i] bytes at
 * tokens[i] (0 bytes: never allowed); eog (-1: none) ends generation. Takes r (freed on error). */
l3c_status l3c_grammar_from_rules_vocab(gram_rules *r, const char *const *tokens,
                                        const size_t *lens, int32_t n, int32_t eog,
                                        l3c_grammar **out);

/* Per-sampler parse state over a compiled grammar. */
typedef struct l3c_gmatch l3c_gmatch;
l3c_status l3c_gmatch_create(const l3c_grammar *g, l3c_gmatch **out);
void l3c_gmatch_free(l3c_gmatch *m);
void l3c_gmatch_reset(l3c_gmatch *m);
/* on = 0: every mask is computed afresh (benchmarks of the trie walk); default 1. */
void l3c_gmatch_set_cache(l3c_gmatch *m, int on);
/* Vocabulary size of the grammar's tokenizer. */
int32_t l3c_grammar_n_vocab(const l3c_grammar *g);
/* 1 when token id may come next, 0 when not. */
int l3c_gmatch_allows(l3c_gmatch *m, int32_t id);
/* Sets bit id of bits ([(n_bits + 31) / 32] words) for every allowed token id < n_bits, clears
 * the others. Returns the number of allowed tokens. */
int64_t l3c_gmatch_mask(l3c_gmatch *m, uint32_t *bits, int32_t n_bits);
/* Advances the state by token id (eog: no change). L3C_ERR_INVALID_ARG if it was not allowed;
 * the state is then dead. */
l3c_status l3c_gmatch_accept(l3c_gmatch *m, int32_t id);
/* 1: complete and nothing else may follow. */
int l3c_gmatch_done(const l3c_gmatch *m);
/* Saves the parse state; l3c_gmatch_rollback returns to the last saved one (speculative drafts). */
l3c_status l3c_gmatch_mark(l3c_gmatch *m);
l3c_status l3c_gmatch_rollback(l3c_gmatch *m);
/* 1: no continuation at all (dead). */
int l3c_gmatch_dead(const l3c_gmatch *m);
/* Why no token is allowed (for the sampler's error message). */
const char *l3c_gmatch_why_none(const l3c_gmatch *m);

#endif /* L3C_GRAMMAR_H */
