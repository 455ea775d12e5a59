/*
 * vocab.c -- the token table of struct l3c_tokenizer: building it from a loader's texts and types,
 * decoding GPT-2 byte-level texts to raw bytes, the two hash maps (bytes -> id, text -> id), the
 * merge-pair map, special-token and end-of-generation bookkeeping, and the public getters.
 * Owns: everything reachable from struct l3c_tokenizer (freed by l3c_tokenizer_free).
 * Invariants: see tok_internal.h.
 */
#include "grammar/grammar.h"
#include "tokenizer/tok_internal.h"

#include <string.h>

/* ---------------------------------------------------------------- hashing */

static uint32_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        s += 8, n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return (uint32_t)h;
}

static const uint8_t *key_of(const l3c_tokenizer *t, int by_text, int32_t id, size_t *len) {
    const l3c_tokent *e = &t->tok[id];
    if (by_text) {
        *len = e->text_len;
        return (const uint8_t *)t->strings + e->text_off;
    }
    *len = e->bytes_len;
    return (const uint8_t *)t->strings + e->bytes_off;
}

int32_t l3c_tokmap_get(const l3c_tokenizer *t, const l3c_tokmap *m, int by_text, const void *key,
                       size_t len) {
    if (!m->cap) return -1;
    uint32_t h = hash_bytes(key, len);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (m->hash[i] != h) continue;
        size_t kl;
        const uint8_t *k = key_of(t, by_text, id, &kl);
        if (kl == len && memcmp(k, key, len) == 0) return id;
    }
}

static l3c_status tokmap_build(l3c_tokenizer *t, l3c_tokmap *m, int by_text, const char *what) {
    size_t cap = 16;
    while (cap < (size_t)t->n_vocab * 2) cap <<= 1;
    m->slot = l3c_malloc(cap * sizeof *m->slot);
    m->hash = l3c_malloc(cap * sizeof *m->hash);
    if (!m->slot || !m->hash) return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: token map", what);
    memset(m->slot, 0xff, cap * sizeof *m->slot);
    m->cap = cap;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t len;
        const uint8_t *k = key_of(t, by_text, id, &len);
        uint32_t h = hash_bytes(k, len);
        for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1)) {
            int32_t o = m->slot[i];
            if (o < 0) {
                m->slot[i] = id, m->hash[i] = h;
                break;
            }
            size_t ol;
            const uint8_t *ok = key_of(t, by_text, o, &ol);
            if (m->hash[i] == h && ol == len && memcmp(ok, k, len) == 0) break; /* lowest id wins */
        }
    }
    return L3C_OK;
}

static uint64_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

int l3c_pairmap_get(const l3c_pairmap *m, int32_t l, int32_t r, int32_t *rank, int32_t *result) {
    if (!m->cap || l < 0 || r < 0) return 0;
    uint64_t k = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    for (size_t i = pair_hash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->key[i] == 0) return 0;
        if (m->key[i] == k) {
            *rank = m->rank[i], *result = m->result[i];
            return 1;
        }
    }
}

static l3c_status pairmap_put(l3c_pairmap *m, size_t *count, int32_t l, int32_t r, int32_t rank,
                              int32_t result, const char *what) {
    if ((*count + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1024;
        uint64_t *nk = l3c_calloc(ncap, sizeof *nk);
        int32_t *nr = l3c_malloc(ncap * sizeof *nr), *nres = l3c_malloc(ncap * sizeof *nres);
        if (!nk || !nr || !nres) {
            free(nk), free(nr), free(nres);
            return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: merge table", what);
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->key[i]) continue;
            size_t j = pair_hash(m->key[i]) & (ncap - 1);
            while (nk[j]) j = (j + 1) & (ncap - 1);
            nk[j] = m->key[i], nr[j] = m->rank[i], nres[j] = m->result[i];
        }
        free(m->key), free(m->rank), free(m->result);
        m->key = nk, m->rank = nr, m->result = nres, m->cap = ncap;
    }
    uint64_t k = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    size_t i = pair_hash(k) & (m->cap - 1);
    while (m->key[i] && m->key[i] != k) i = (i + 1) & (m->cap - 1);
    if (m->key[i]) return L3C_OK; /* first (lowest-rank) merge of a pair wins */
    m->key[i] = k, m->rank[i] = rank, m->result[i] = result;
    (*count)++;
    return L3C_OK;
}

/* ---------------------------------------------------------------- builder */

l3c_status l3c_tokbuild_init(l3c_tokbuild *b, l3c_tok_kind kind, int32_t n, const char *what) {
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->n = n;
    if (n <= 0) return l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: empty vocabulary", what);
    b->text_off = l3c_calloc((size_t)n, sizeof *b->text_off);
    b->text_len = l3c_calloc((size_t)n, sizeof *b->text_len);
    b->type = l3c_calloc((size_t)n, sizeof *b->type);
    if (!b->text_off || !b->text_len || !b->type) {
        l3c_tokbuild_free(b);
        return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: %d tokens", what, (int)n);
    }
    for (int32_t i = 0; i < n; i++) b->type[i] = 0; /* 0: not set yet */
    return L3C_OK;
}

l3c_status l3c_tokbuild_set(l3c_tokbuild *b, int32_t id, const char *text, size_t len, int type) {
    if (len > UINT32_MAX / 2) return l3c_fail(L3C_ERR_FORMAT, "tokenizer: token %d too long", (int)id);
    b->text_off[id] = b->strings.len;
    b->text_len[id] = (uint32_t)len;
    b->type[id] = (uint8_t)type;
    l3c_status st = l3c_buf_append(&b->strings, text, len);
    if (!st) st = l3c_buf_append(&b->strings, "", 1);
    return st;
}

void l3c_tokbuild_free(l3c_tokbuild *b) {
    free(b->text_off), free(b->text_len), free(b->type), free(b->score), free(b->rank);
    l3c_buf_free(&b->strings);
    memset(b, 0, sizeof *b);
}

/* GPT-2 byte-to-unicode: printable bytes map to themselves, the 68 others to U+0100.. in order. */
static void gpt2_unicode_to_byte(int16_t inv[324]) {
    for (int i = 0; i < 324; i++) inv[i] = -1;
    int k = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        if (printable) inv[b] = (int16_t)b;
        else inv[256 + k++] = (int16_t)b;
    }
}

/* Decodes a UTF-8 code point; returns its length or 0 if invalid. */
static size_t utf8_cp(const uint8_t *p, size_t n, uint32_t *cp) {
    size_t l = l3c_utf8_seq(p, n);
    if (!l) return 0;
    if (l == 1) *cp = p[0];
    else if (l == 2) *cp = ((uint32_t)(p[0] & 0x1f) << 6) | (p[1] & 0x3f);
    else if (l == 3) *cp = ((uint32_t)(p[0] & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
    else *cp = ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3f) << 12) |
               ((uint32_t)(p[2] & 0x3f) << 6) | (p[3] & 0x3f);
    return l;
}

size_t l3c_utf8_seq(const uint8_t *p, size_t n) {
    if (!n) return 0;
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    size_t l;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) l = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        l = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        l = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if (n < l) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < l; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return l;
}

/* Appends the raw bytes of token `id` to `out`. */
static l3c_status decode_token(const l3c_tokbuild *b, int32_t id, const int16_t *inv, l3c_buf *out) {
    const uint8_t *s = (const uint8_t *)b->strings.data + b->text_off[id];
    size_t n = b->text_len[id];
    int type = b->type[id];
    if (b->kind == L3C_TOK_BPE && b->byte_level_text && (type == L3C_TT_NORMAL || type == L3C_TT_BYTE)) {
        size_t start = out->len;
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t l = utf8_cp(s + i, n - i, &cp);
            if (!l || cp >= 324 || inv[cp] < 0) { /* not byte-level text: keep it as it is */
                out->len = start;
                return l3c_buf_append(out, s, n);
            }
            uint8_t byte = (uint8_t)inv[cp];
            l3c_status st = l3c_buf_append(out, &byte, 1);
            if (st) return st;
            i += l;
        }
        return L3C_OK;
    }
    if (b->kind == L3C_TOK_SPM && type == L3C_TT_BYTE && n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
        unsigned v;
        char hex[3] = {(char)s[3], (char)s[4], 0};
        if (sscanf(hex, "%2x", &v) == 1) {
            uint8_t byte = (uint8_t)v;
            return l3c_buf_append(out, &byte, 1);
        }
    }
    if (b->kind == L3C_TOK_SPM && type == L3C_TT_NORMAL) { /* U+2581 -> ' ' */
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && s[i] == 0xe2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
                l3c_status st = l3c_buf_append(out, " ", 1);
                if (st) return st;
                i += 3;
            } else {
                size_t j = i + 1;
                while (j < n && s[j] != 0xe2) j++;
                l3c_status st = l3c_buf_append(out, s + i, j - i);
                if (st) return st;
                i = j;
            }
        }
        return L3C_OK;
    }
    return l3c_buf_append(out, s, n);
}

l3c_status l3c_tok_create(l3c_tokbuild *b, const char *what, l3c_tokenizer **out) {
    l3c_status st;
    l3c_tokenizer *t = l3c_calloc(1, sizeof *t);
    l3c_buf bytes = {0};
    int16_t inv[324];
    *out = NULL;
    if (!t) return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s", what);
    t->kind = b->kind;
    t->n_vocab = b->n;
    t->bos = t->eos = t->eot = t->eom = t->unk = -1;
    t->tok = l3c_calloc((size_t)b->n, sizeof *t->tok);
    if (!t->tok) {
        st = l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s", what);
        goto fail;
    }
    gpt2_unicode_to_byte(inv);
    /* strings = texts followed by the decoded bytes of each token */
    st = l3c_buf_append(&bytes, b->strings.data, b->strings.len);
    if (st) goto fail;
    for (int32_t i = 0; i < b->n; i++) {
        l3c_tokent *e = &t->tok[i];
        if (b->type[i] == 0) {
            st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: token %d missing", what, (int)i);
            goto fail;
        }
        e->type = b->type[i];
        e->text_off = b->text_off[i];
        e->text_len = b->text_len[i];
        e->rank = b->rank ? b->rank[i] : -1;
        e->bytes_off = bytes.len;
        st = decode_token(b, i, inv, &bytes);
        if (!st) st = l3c_buf_append(&bytes, "", 1);
        if (st) goto fail;
        e->bytes_len = (uint32_t)(bytes.len - 1 - e->bytes_off);
    }
    t->strings = bytes.data;
    t->strings_len = bytes.len;
    bytes.data = NULL;
    if (b->kind == L3C_TOK_SPM) { /* merge priority: dense rank of descending score */
        int32_t *ord = l3c_malloc((size_t)b->n * sizeof *ord);
        if (!ord) {
            st = l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: scores", what);
            goto fail;
        }
        for (int32_t i = 0; i < b->n; i++) ord[i] = i;
        /* shell sort by score descending (no qsort_r in C11) */
        for (int32_t gap = b->n / 2; gap > 0; gap /= 2)
            for (int32_t i = gap; i < b->n; i++)
                for (int32_t j = i - gap; j >= 0; j -= gap) {
                    float sa = b->score ? b->score[ord[j]] : 0, sb = b->score ? b->score[ord[j + gap]] : 0;
                    if (!(sa < sb)) break;
                    int32_t tmp = ord[j];
                    ord[j] = ord[j + gap], ord[j + gap] = tmp;
                }
        int32_t r = 0;
        for (int32_t i = 0; i < b->n; i++) {
            if (i > 0 && b->score && b->score[ord[i]] != b->score[ord[i - 1]]) r++;
            t->tok[ord[i]].rank = r;
        }
        free(ord);
    }
    st = tokmap_build(t, &t->by_bytes, 0, what);
    if (!st) st = tokmap_build(t, &t->by_text, 1, what);
    if (st) goto fail;
    l3c_tokbuild_free(b);
    *out = t;
    return L3C_OK;
fail:
    l3c_buf_free(&bytes);
    l3c_tokenizer_free(t);
    return st;
}

l3c_status l3c_tok_add_merge(l3c_tokenizer *t, const char *left, size_t llen, const char *right,
                             size_t rlen, int32_t rank, const char *what) {
    int32_t l = l3c_tokmap_get(t, &t->by_text, 1, left, llen);
    int32_t r = l3c_tokmap_get(t, &t->by_text, 1, right, rlen);
    if (l < 0 || r < 0) return L3C_OK;
    char stackbuf[256];
    size_t n;
    if (!l3c_add_ok(llen, rlen, &n)) return l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: merge too long", what);
    char *cat = n <= sizeof stackbuf ? stackbuf : l3c_malloc(n);
    if (!cat) return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: merge", what);
    memcpy(cat, left, llen);
    memcpy(cat + llen, right, rlen);
    int32_t res = l3c_tokmap_get(t, &t->by_text, 1, cat, n);
    if (cat != stackbuf) free(cat);
    if (res < 0) return L3C_OK;
    t->use_merges = 1;
    return pairmap_put(&t->merges, &t->n_merges, l, r, rank, res, what);
}

/* ---------------------------------------------------------------- finishing */

static int32_t find_text(const l3c_tokenizer *t, const char *s) {
    return l3c_tokmap_get(t, &t->by_text, 1, s, strlen(s));
}

static int is_special_type(int type) {
    return type == L3C_TT_CONTROL || type == L3C_TT_USER || type == L3C_TT_UNKNOWN;
}

l3c_status l3c_tok_finish(l3c_tokenizer *t, const char *what) {
    /* single-byte tokens */
    for (int b = 0; b < 256; b++) {
        int32_t id;
        if (t->kind == L3C_TOK_SPM) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            id = find_text(t, name);
        } else {
            uint8_t byte = (uint8_t)b;
            id = l3c_tokmap_get(t, &t->by_bytes, 0, &byte, 1);
            if (id >= 0 && is_special_type(t->tok[id].type)) id = -1;
        }
        t->byte_tok[b] = id;
    }
    /* specials, longest text first (ties: lower id first) */
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (is_special_type(t->tok[i].type) && t->tok[i].text_len > 0) n++;
    free(t->specials);
    t->specials = l3c_malloc(((size_t)n + 1) * sizeof *t->specials);
    if (!t->specials) return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: specials", what);
    n = 0;
    memset(t->special_first, 0, sizeof t->special_first);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (!is_special_type(t->tok[i].type) || t->tok[i].text_len == 0) continue;
        int32_t j = n++;
        while (j > 0 && t->tok[t->specials[j - 1]].text_len < t->tok[i].text_len) {
            t->specials[j] = t->specials[j - 1];
            j--;
        }
        t->specials[j] = i;
        t->special_first[(uint8_t)l3c_tok_text(t, i)[0]] = 1;
    }
    t->n_specials = n;
    t->n_user = 0;
    for (int32_t i = 0; i < n; i++) t->n_user += t->tok[t->specials[i]].type == L3C_TT_USER;
    /* by-name defaults and end-of-generation set */
    static const char *eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", NULL};
    static const char *eog_names[] = {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end_of_text|>",
                                      "<|endoftext|>", "<|end|>", "<end_of_turn>", NULL};
    if (t->eot < 0)
        for (int i = 0; eot_names[i] && t->eot < 0; i++) t->eot = find_text(t, eot_names[i]);
    if (t->eom < 0) t->eom = find_text(t, "<|eom_id|>");
    for (int32_t i = 0; i < t->n_vocab; i++) t->tok[i].eog = 0;
    for (int i = 0; eog_names[i]; i++) {
        int32_t id = find_text(t, eog_names[i]);
        if (id >= 0 && is_special_type(t->tok[id].type)) t->tok[id].eog = 1;
    }
    int32_t ends[3] = {t->eos, t->eot, t->eom};
    for (int i = 0; i < 3; i++)
        if (ends[i] >= 0 && ends[i] < t->n_vocab) t->tok[ends[i]].eog = 1;
    if (t->kind == L3C_TOK_BPE && t->n_re == 0) return l3c_tok_set_pre(t, NULL, 0, what);
    return L3C_OK;
}

/* ---------------------------------------------------------------- public getters */

void l3c_tokenizer_free(l3c_tokenizer *t) {
    if (!t) return;
    free(t->tok);
    free(t->strings);
    free(t->by_bytes.slot), free(t->by_bytes.hash);
    free(t->by_text.slot), free(t->by_text.hash);
    free(t->merges.key), free(t->merges.rank), free(t->merges.result);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->specials);
    l3c_gvocab_release(t->gvocab);
    free(t);
}

/* The grammar engine's cache of this vocabulary's index: the tokenizer is otherwise immutable,
 * so the slot is written once, atomically (grammar/matcher.c). */
struct l3c_gvocab **l3c_tokenizer_gvocab_slot(const l3c_tokenizer *t) {
    return &((l3c_tokenizer *)t)->gvocab;
}

int32_t l3c_vocab_size(const l3c_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t l3c_token_bos(const l3c_tokenizer *t) { return t ? t->bos : -1; }
int32_t l3c_token_eos(const l3c_tokenizer *t) { return t ? t->eos : -1; }
int32_t l3c_token_eot(const l3c_tokenizer *t) { return t ? t->eot : -1; }

int l3c_token_is_eog(const l3c_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_vocab && t->tok[id].eog;
}

int l3c_token_is_special(const l3c_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    int ty = t->tok[id].type;
    return ty == L3C_TT_CONTROL || ty == L3C_TT_UNKNOWN;
}

const char *l3c_token_text(const l3c_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    return l3c_tok_text(t, id);
}

int32_t l3c_token_lookup(const l3c_tokenizer *t, const char *text, size_t len) {
    if (!t || (!text && len)) return -1;
    int32_t id = l3c_tokmap_get(t, &t->by_text, 1, text, len);
    if (id < 0) id = l3c_tokmap_get(t, &t->by_bytes, 0, text, len);
    return id;
}

int32_t l3c_token_to_bytes(const l3c_tokenizer *t, int32_t id, char *buf, int32_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    int32_t n = (int32_t)t->tok[id].bytes_len;
    if (n > cap || (!buf && n)) return -n;
    if (n) memcpy(buf, l3c_tok_bytes(t, id), (size_t)n);
    return n;
}

int32_t l3c_token_to_piece(const l3c_tokenizer *t, int32_t prev, int32_t id, char *buf,
                           int32_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    const uint8_t *b = l3c_tok_bytes(t, id);
    int32_t n = (int32_t)t->tok[id].bytes_len;
    int is_text = t->tok[id].type != L3C_TT_CONTROL && t->tok[id].type != L3C_TT_UNKNOWN;
    if (t->kind == L3C_TOK_SPM && t->add_space_prefix && prev >= 0 && prev == t->bos && is_text &&
        n > 0 && b[0] == ' ')
        b++, n--;
    if (n > cap || (!buf && n)) return -n;
    if (n) memcpy(buf, b, (size_t)n);
    return n;
}

int l3c_tokenizer_wants_bos(const l3c_tokenizer *t) { return t && t->add_bos && t->bos >= 0; }
