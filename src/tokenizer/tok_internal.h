/*
 * tok_internal.h -- the one internal representation of a tokenizer, shared by the loaders
 * (load.c: GGUF, tiktoken, tokenizer.json), the vocabulary (vocab.c), the pre-tokenizer
 * (pretokenize.c), the merge loops (bpe.c) and the front end (tokenize.c).
 *
 * Invariants once l3c_tok_finish() returned L3C_OK:
 *  - every id in [0, n_vocab) has a stored text (as in the source: "Ġthe", "▁the", "<0x0A>") and
 *    raw bytes (what the token decodes to; control tokens decode to their text), both inside
 *    `strings` and NUL-terminated;
 *  - by_bytes maps raw bytes -> id (BPE: used for merges; SPM: unused), by_text maps stored
 *    text -> id (SPM merges, l3c_token_lookup); on duplicates the lowest id wins;
 *  - rank[id] is the merge priority of the token as a merge result (lower first); -1 when the
 *    token can never be produced by a merge (specials). BPE in merge-table mode uses `merges`
 *    (pair of ids -> merge index and result) instead;
 *  - specials[] lists the ids that pre-splitting recognises, longest text first.
 */
#ifndef L3C_TOK_INTERNAL_H
#define L3C_TOK_INTERNAL_H

#include "tokenizer/tokenizer.h"
#include "util/util.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* GGUF token types (tokenizer.ggml.token_type). */
enum {
    L3C_TT_NORMAL = 1, L3C_TT_UNKNOWN = 2, L3C_TT_CONTROL = 3, L3C_TT_USER = 4, L3C_TT_UNUSED = 5,
    L3C_TT_BYTE = 6
};

typedef enum { L3C_TOK_BPE = 0, L3C_TOK_SPM = 1 } l3c_tok_kind;

#define L3C_TOK_MAX_RE 4

typedef struct l3c_tokmap { /* open addressing over ids; keys live in the token table */
    int32_t *slot;          /* [cap], -1 empty */
    uint32_t *hash;         /* [cap] */
    size_t cap;             /* power of two */
} l3c_tokmap;

typedef struct l3c_pairmap {
    uint64_t *key;          /* (left << 32 | right) + 1; 0 = empty */
    int32_t *rank, *result;
    size_t cap;
} l3c_pairmap;

typedef struct l3c_tokent {
    size_t text_off, bytes_off; /* into strings */
    uint32_t text_len, bytes_len;
    int32_t rank;               /* see invariants */
    uint8_t type;               /* L3C_TT_* */
    uint8_t eog;
} l3c_tokent;

struct l3c_tokenizer {
    l3c_tok_kind kind;
    int32_t n_vocab;
    l3c_tokent *tok;        /* [n_vocab] */
    char *strings;          /* all texts and bytes */
    size_t strings_len;
    l3c_tokmap by_bytes, by_text;
    l3c_pairmap merges;
    size_t n_merges;
    int use_merges;         /* 1: merge table (GGUF, tokenizer.json); 0: ranks (tiktoken) */
    int ignore_merges;      /* 1: a piece that is a token is that token (tiktoken, llama-bpe) */
    int32_t byte_tok[256];  /* id of the single-byte token (BPE) or <0xNN> (SPM); -1 if none */
    int n_re;
    pcre2_code *re[L3C_TOK_MAX_RE]; /* applied in sequence: each splits the pieces of the last */
    int32_t *specials;      /* ids split out before pre-tokenization, longest first */
    int32_t n_specials;
    int32_t n_user;         /* user-defined specials: split out even without PARSE_SPECIAL */
    uint8_t special_first[256]; /* 1 when some special starts with that byte */
    int32_t bos, eos, eot, eom, unk;
    int add_bos, add_space_prefix;
    struct l3c_gvocab *gvocab; /* grammar index of this vocabulary (src/grammar/), built on first
                                  use and published atomically; released by l3c_tokenizer_free */
};

/* ---- builder used by the loaders (vocab.c) */

typedef struct l3c_tokbuild {
    l3c_tok_kind kind;
    int32_t n;
    l3c_buf strings;        /* texts, NUL-terminated */
    size_t *text_off;       /* [n] */
    uint32_t *text_len;     /* [n] */
    uint8_t *type;          /* [n] */
    float *score;           /* [n] SPM scores or NULL */
    int32_t *rank;          /* [n] tiktoken ranks or NULL */
    int byte_level_text;    /* 1: texts are in the GPT-2 byte-to-unicode form */
} l3c_tokbuild;

l3c_status l3c_tokbuild_init(l3c_tokbuild *b, l3c_tok_kind kind, int32_t n, const char *what);
l3c_status l3c_tokbuild_set(l3c_tokbuild *b, int32_t id, const char *text, size_t len, int type);
void l3c_tokbuild_free(l3c_tokbuild *b);

/* Allocates the tokenizer and moves the builder's tables into it (b is emptied). Merges,
 * regexes and special ids are set by the loader afterwards, then l3c_tok_finish(). */
l3c_status l3c_tok_create(l3c_tokbuild *b, const char *what, l3c_tokenizer **out);
/* Adds merge "left right" (stored texts) with the given rank. Unknown tokens are skipped. */
l3c_status l3c_tok_add_merge(l3c_tokenizer *t, const char *left, size_t llen, const char *right,
                             size_t rlen, int32_t rank, const char *what);
/* Compiles the pre-tokenizer for a GGUF `tokenizer.ggml.pre` name (NULL: "default"). */
l3c_status l3c_tok_set_pre(l3c_tokenizer *t, const char *pre, size_t len, const char *what);
/* The GGUF pre name (first of its table entry: "llama-bpe", "smollm", "gpt-2", "qwen2") whose regex
 * chain is exactly res[0..n) (res[i] NULL: GPT-2's ByteLevel regex), or NULL (tokenizer.json ->
 * GGUF conversion). */
const char *l3c_tok_pre_name(const char *const *res, int n);
/* Compiles one explicit regex (tokenizer.json). */
l3c_status l3c_tok_add_regex(l3c_tokenizer *t, const char *pattern, size_t len, const char *what);
/* Specials list, byte tokens, end-of-generation flags, by-name defaults. */
l3c_status l3c_tok_finish(l3c_tokenizer *t, const char *what);

int32_t l3c_tokmap_get(const l3c_tokenizer *t, const l3c_tokmap *m, int by_text, const void *key,
                       size_t len);
int l3c_pairmap_get(const l3c_pairmap *m, int32_t l, int32_t r, int32_t *rank, int32_t *result);

static inline const char *l3c_tok_text(const l3c_tokenizer *t, int32_t id) {
    return t->strings + t->tok[id].text_off;
}
static inline const uint8_t *l3c_tok_bytes(const l3c_tokenizer *t, int32_t id) {
    return (const uint8_t *)t->strings + t->tok[id].bytes_off;
}

/* ---- output sink: counts every token, stores the first cap */
typedef struct l3c_toksink {
    int32_t *out;
    int64_t cap, n;
} l3c_toksink;

static inline void l3c_sink_push(l3c_toksink *s, int32_t id) {
    if (s->n < s->cap) s->out[s->n] = id;
    s->n++;
}

/* bpe.c: merges one pre-tokenized piece (byte-level BPE) / one SPM fragment (already escaped). */
l3c_status l3c_bpe_piece(const l3c_tokenizer *t, const uint8_t *p, size_t n, l3c_toksink *s);
l3c_status l3c_spm_fragment(const l3c_tokenizer *t, const uint8_t *p, size_t n, l3c_toksink *s);

/* pretokenize.c: splits valid UTF-8 text with the regex chain and merges every piece. */
l3c_status l3c_pretokenize(const l3c_tokenizer *t, const uint8_t *p, size_t n, l3c_toksink *s);

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when p[0] does not start one. */
size_t l3c_utf8_seq(const uint8_t *p, size_t n);

#endif /* L3C_TOK_INTERNAL_H */
