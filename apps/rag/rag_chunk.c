/*
 * rag_chunk.c -- token-sized chunks of a text, snapped to paragraph / line / sentence / word
 * boundaries (see rag_chunk_text in rag.h), and the UTF-8 clean-up of stored text.
 *
 * The text is tokenized once; off[i] is the byte offset where token i starts (off[n] == len),
 * from the lengths of the tokens' bytes (byte-level BPE reproduces the text exactly). Where the
 * token bytes do not add up to the text (SentencePiece's added leading space), offsets are
 * spread in proportion instead: chunk sizes are then approximate, ranges still exact bytes.
 * Chunk ends are always token boundaries, so n_tokens counts whole tokens of the range.
 */
#include "rag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, const char *fmt, const char *a) {
    snprintf(err, RAG_ERR_CAP, fmt, a);
    return -1;
}

/* Boundary strength of byte position p (0 < p < len): 4 paragraph break, 3 line break, 2 sentence
 * end, 1 word boundary, 0 none. */
static int strength(const char *t, size_t len, size_t p) {
    if (p == 0 || p >= len) return 4;
    char a = t[p - 1], b = t[p];
    if (a == '\n')
        return p >= 2 && (t[p - 2] == '\n' || (t[p - 2] == '\r' && p >= 3 && t[p - 3] == '\n')) ? 4
                                                                                                : 3;
    if ((a == '.' || a == '!' || a == '?' || a == ':' || a == ';') &&
        (b == ' ' || b == '\n' || b == '\t'))
        return 2;
    if (a == ' ' || a == '\t' || b == ' ' || b == '\t' || b == '\n') return 1;
    return 0;
}

static int blank(const char *t, size_t a, size_t b) {
    for (size_t i = a; i < b; i++)
        if (t[i] != ' ' && t[i] != '\t' && t[i] != '\n' && t[i] != '\r' && t[i] != '\f' &&
            t[i] != '\v')
            return 0;
    return 1;
}

int rag_chunk_text(const l3c_tokenizer *tok, const char *text, size_t len, int chunk_tokens,
                   int overlap, rag_chunk **out, size_t *n_out, char *err) {
    *out = NULL, *n_out = 0;
    if (chunk_tokens < 8 || overlap < 0 || overlap >= chunk_tokens / 2) {
        snprintf(err, RAG_ERR_CAP,
                 "chunk size %d / overlap %d: need chunk >= 8 and 0 <= overlap < chunk/2",
                 chunk_tokens, overlap);
        return -1;
    }
    if (len == 0) return 0;
    int32_t *ids = NULL;
    size_t *off = NULL;
    rag_chunk *ch = NULL;
    size_t n_ch = 0, cap_ch = 0;
    int64_t n = l3c_tokenize(tok, text, len, NULL, 0, 0);
    if (n < 0) n = -n;
    ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    off = malloc((size_t)(n + 1) * sizeof *off);
    if (!ids || !off) goto oom;
    if (n && l3c_tokenize(tok, text, len, ids, n, 0) != n) {
        fail(err, "tokenizing failed: %s", l3c_last_error());
        goto bad;
    }
    size_t pos = 0;
    for (int64_t i = 0; i < n; i++) {
        off[i] = pos;
        int32_t b = l3c_token_to_bytes(tok, ids[i], NULL, 0);
        pos += (size_t)(b < 0 ? -b : b);
    }
    off[n] = len;
    if (pos != len) /* not byte-exact: spread the offsets evenly */
        for (int64_t i = 0; i < n; i++)
            off[i] = (size_t)((double)len * (double)i / (double)n);

    int64_t ts = 0;
    while (ts < n) {
        int64_t te = ts + chunk_tokens;
        if (te >= n) {
            te = n;
        } else {
            int64_t best = te;
            int bs = -1;
            for (int64_t t = te; t > ts + chunk_tokens / 2; t--) {
                int s = strength(text, len, off[t]);
                if (s > bs) bs = s, best = t;
                if (s == 4) break;
            }
            te = bs > 0 ? best : te;
        }
        if (!blank(text, off[ts], off[te])) {
            if (n_ch == cap_ch) {
                cap_ch = cap_ch ? cap_ch * 2 : 16;
                rag_chunk *p = realloc(ch, cap_ch * sizeof *ch);
                if (!p) goto oom;
                ch = p;
            }
            ch[n_ch++] = (rag_chunk){off[ts], off[te], 0, 0, (int32_t)(te - ts)};
        }
        if (te >= n) break;
        int64_t ns = te - overlap;
        for (int64_t t = ns; t < te; t++)
            if (off[t] > 0 && text[off[t] - 1] == '\n') {
                ns = t;
                break;
            }
        while (ns + 1 < te && blank(text, off[ns], off[ns + 1]))
            ns++; /* no leading blank lines */
        ts = ns > ts ? ns : ts + 1;
    }
    /* 1-based lines: line_start of byte_start, line_end of the last byte */
    size_t p = 0;
    int32_t line = 1;
    for (size_t i = 0; i < n_ch; i++) { /* byte_start increases with i */
        for (; p < ch[i].byte_start; p++)
            line += text[p] == '\n';
        ch[i].line_start = line;
        int32_t l2 = line;
        for (size_t q = ch[i].byte_start; q + 1 < ch[i].byte_end; q++)
            l2 += text[q] == '\n';
        ch[i].line_end = l2;
    }
    free(ids), free(off);
    *out = ch, *n_out = n_ch;
    return 0;
oom:
    snprintf(err, RAG_ERR_CAP, "out of memory chunking %zu bytes", len);
bad:
    free(ids), free(off), free(ch);
    return -1;
}

char *rag_utf8_clean(const char *s, size_t n) {
    char *o = malloc(3 * n + 1), *w = o;
    if (!o) return NULL;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = k > 0 && i + k <= n;
        for (size_t j = 1; ok && j < k; j++)
            ok = (u[i + j] & 0xC0) == 0x80;
        if (ok && k == 2) ok = c >= 0xC2;
        if (ok && k == 3) ok = !(c == 0xE0 && u[i + 1] < 0xA0) && !(c == 0xED && u[i + 1] >= 0xA0);
        if (ok && k == 4)
            ok = c <= 0xF4 && !(c == 0xF0 && u[i + 1] < 0x90) && !(c == 0xF4 && u[i + 1] >= 0x90);
        if (ok && k == 1) ok = c >= 0x20 || c == '\t' || c == '\n' || c == '\r';
        if (!ok) {
            memcpy(w, "\xEF\xBF\xBD", 3), w += 3, i++;
            continue;
        }
        memcpy(w, s + i, k), w += k, i += k;
    }
    *w = 0;
    return o;
}
