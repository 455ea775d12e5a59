/*
 * tokenize.c -- the front end: l3c_tokenize (BOS, special-token splitting, invalid UTF-8,
 * SentencePiece escaping), l3c_detokenize and l3c_utf8_complete.
 *
 * Text -> tokens:
 *  1. Special tokens: with L3C_TOKENIZE_PARSE_SPECIAL the text is cut at every occurrence of a
 *     special token's text (control / unknown / user-defined types; leftmost, longest first).
 *     User-defined tokens are cut out even without the flag, as llama.cpp does.
 *  2. Byte-level BPE fragments: the fragment is cut into maximal valid UTF-8 runs and runs of
 *     invalid bytes (a byte is invalid when no well-formed UTF-8 sequence starts there; the same
 *     set of bytes Python's strict decoder rejects). Valid runs are pre-tokenized with the regex
 *     chain as independent texts; each invalid run is one BPE piece. For valid UTF-8 this is
 *     exactly tiktoken's encode; for invalid input it equals tiktoken encode_ordinary on each
 *     valid run and encode_single_piece on each invalid run (tests/py/test_tokenizer_llama3.py).
 *  3. SPM fragments (llama.cpp semantics): ' ' -> U+2581, and U+2581 prepended when
 *     add_space_prefix and the fragment starts the text or follows a special token.
 */
#include "tokenizer/tok_internal.h"

#include <string.h>

static l3c_status bpe_fragment(const l3c_tokenizer *t, const uint8_t *p, size_t n, l3c_toksink *s) {
    size_t i = 0, run = 0;
    l3c_status st;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = l3c_utf8_seq(p + i, n - i);
        if (l) {
            i += l;
            continue;
        }
        if (i > run && (st = l3c_pretokenize(t, p + run, i - run, s))) return st;
        size_t j = i + 1;
        while (j < n && p[j] >= 0x80 && !l3c_utf8_seq(p + j, n - j)) j++;
        if ((st = l3c_bpe_piece(t, p + i, j - i, s))) return st;
        run = i = j;
    }
    if (n > run) return l3c_pretokenize(t, p + run, n - run, s);
    return L3C_OK;
}

static l3c_status spm_fragment(const l3c_tokenizer *t, const uint8_t *p, size_t n, int prefix,
                               l3c_toksink *s) {
    size_t cap;
    if (!l3c_mul_ok(n, 3, &cap) || !l3c_add_ok(cap, 3, &cap))
        return l3c_fail(L3C_ERR_INVALID_ARG, "tokenizer: text of %zu bytes is too long", n);
    uint8_t *buf = l3c_malloc(cap);
    if (!buf) return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %zu bytes", cap);
    size_t k = 0;
    if (prefix) buf[k++] = 0xe2, buf[k++] = 0x96, buf[k++] = 0x81;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == ' ') buf[k++] = 0xe2, buf[k++] = 0x96, buf[k++] = 0x81;
        else buf[k++] = p[i];
    }
    l3c_status st = l3c_spm_fragment(t, buf, k, s);
    free(buf);
    return st;
}

static l3c_status fragment(const l3c_tokenizer *t, const uint8_t *p, size_t n, int *prev_special,
                           l3c_toksink *s) {
    if (n == 0) return L3C_OK;
    int prefix = *prev_special && t->add_space_prefix;
    *prev_special = 0;
    if (t->kind == L3C_TOK_SPM) return spm_fragment(t, p, n, prefix, s);
    return bpe_fragment(t, p, n, s);
}

/* Id of the special token whose text starts at p (longest), or -1. */
static int32_t special_at(const l3c_tokenizer *t, const uint8_t *p, size_t n, int parse_special) {
    for (int32_t k = 0; k < t->n_specials; k++) {
        int32_t id = t->specials[k];
        const l3c_tokent *e = &t->tok[id];
        if (!parse_special && e->type != L3C_TT_USER) continue;
        if (e->text_len <= n && memcmp(p, l3c_tok_text(t, id), e->text_len) == 0) return id;
    }
    return -1;
}

int64_t l3c_tokenize(const l3c_tokenizer *t, const char *text, size_t len, int32_t *out, int64_t cap,
                     int flags) {
    if (!t || (!text && len) || cap < 0 || (!out && cap > 0)) {
        l3c_fail(L3C_ERR_INVALID_ARG, "l3c_tokenize: NULL tokenizer/text/out or negative cap");
        return INT64_MIN;
    }
    const uint8_t *p = (const uint8_t *)text;
    int parse_special = (flags & L3C_TOKENIZE_PARSE_SPECIAL) != 0;
    l3c_toksink s = {out, cap, 0};
    l3c_status st = L3C_OK;
    int prev_special = 1;
    int want_bos = (flags & L3C_TOKENIZE_FORCE_BOS) || ((flags & L3C_TOKENIZE_ADD_BOS) && t->add_bos);
    if (want_bos && t->bos >= 0) {
        /* not twice: skipped when special parsing will cut BOS out of the start of the text (a
         * BOS that is not a special token, or a longer special there, does not count) */
        int starts = parse_special && len > 0 && special_at(t, p, len, parse_special) == t->bos;
        if (!starts) l3c_sink_push(&s, t->bos);
    }
    size_t start = 0;
    if (parse_special || t->n_user > 0) {
        for (size_t i = 0; i < len; i++) {
            if (!t->special_first[p[i]]) continue;
            int32_t id = special_at(t, p + i, len - i, parse_special);
            if (id < 0) continue;
            if ((st = fragment(t, p + start, i - start, &prev_special, &s))) goto fail;
            l3c_sink_push(&s, id);
            prev_special = 1;
            i += t->tok[id].text_len - 1;
            start = i + 1;
        }
    }
    if ((st = fragment(t, p + start, len - start, &prev_special, &s))) goto fail;
    return s.n <= cap ? s.n : -s.n;
fail:
    return INT64_MIN;
}

int64_t l3c_detokenize(const l3c_tokenizer *t, const int32_t *ids, int64_t n, char *buf, int64_t cap,
                       int skip_special) {
    if (!t || (!ids && n > 0) || n < 0 || cap < 0 || (!buf && cap > 0)) {
        l3c_fail(L3C_ERR_INVALID_ARG, "l3c_detokenize: NULL tokenizer/ids/buf or negative size");
        return INT64_MIN;
    }
    int64_t total = 0;
    int strip = t->kind == L3C_TOK_SPM && t->add_space_prefix;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab) {
            l3c_fail(L3C_ERR_INVALID_ARG, "l3c_detokenize: id %d at %lld out of range [0, %d)", (int)id,
                     (long long)i, (int)t->n_vocab);
            return INT64_MIN;
        }
        const l3c_tokent *e = &t->tok[id];
        int special = e->type == L3C_TT_CONTROL || e->type == L3C_TT_UNKNOWN;
        if (special && skip_special) continue;
        const uint8_t *b = l3c_tok_bytes(t, id);
        size_t bl = e->bytes_len;
        if (strip && !special) {
            if (bl > 0 && b[0] == ' ') b++, bl--;
            strip = 0;
        }
        if (bl && total + (int64_t)bl <= cap) memcpy(buf + total, b, bl); /* buf may be NULL */
        total += (int64_t)bl;
    }
    return total <= cap ? total : -total;
}

size_t l3c_utf8_complete(const char *buf, size_t n) {
    const uint8_t *p = (const uint8_t *)buf;
    for (size_t k = 1; k <= 4 && k <= n; k++) {
        uint8_t c = p[n - k];
        if ((c & 0xc0) == 0x80) continue;
        size_t need = (c >= 0xf0 && c <= 0xf4) ? 4 : (c >= 0xe0 && c <= 0xef) ? 3 : (c >= 0xc2 && c <= 0xdf) ? 2 : 1;
        if (need <= k) return n;
        /* an incomplete sequence: hold it back only if what we have is a valid prefix */
        if (k >= 2) {
            uint8_t lo = 0x80, hi = 0xbf, c1 = p[n - k + 1];
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
            if (c1 < lo || c1 > hi) return n;
        }
        return n - k;
    }
    return n;
}
