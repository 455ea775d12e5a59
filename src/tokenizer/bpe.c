/*
 * bpe.c -- the merge loops: byte-level BPE over one pre-tokenized piece, and SentencePiece-style
 * BPE over one escaped SPM fragment.
 *
 * Rule (tiktoken, llama.cpp and SentencePiece agree on it): repeatedly merge the adjacent pair
 * with the best priority (lowest rank; ties: leftmost) until no pair can merge.
 *  - byte-level, rank mode (tiktoken): a pair can merge when the concatenated bytes are a token
 *    with rank >= 0; its priority is that rank;
 *  - byte-level, merge-table mode (GGUF / tokenizer.json): the pair of ids must be in the merge
 *    table; its priority is the merge's index;
 *  - SPM: symbols start as UTF-8 characters; a pair can merge when the concatenated text is a
 *    vocabulary entry; priority is the entry's score (higher first, see vocab.c dense ranks).
 *    Symbols that are not entries at the end fall back to <0xNN> byte tokens.
 * Implementation: nodes are byte offsets in a linked list; an indexed binary heap keyed by
 * (priority, offset) holds one entry per node that can merge with its right neighbour, so a piece
 * of n bytes costs O(n log n) whatever its content (1 MB of one letter included).
 */
#include "tokenizer/tok_internal.h"

#include <string.h>

#define NONE INT32_MAX

typedef struct bnode {
    int32_t next, prev; /* node covers [self, next); next == n at the end; prev == -1 at start */
    int32_t id;         /* current token id, -1 when the text is not a token */
    int32_t rank, res;  /* priority and result id of merging with next; rank NONE: cannot */
    int32_t hpos;       /* position in the heap, -1 when absent */
} bnode;

typedef struct bstate {
    const l3c_tokenizer *t;
    const uint8_t *p;
    int32_t n;
    int spm;
    bnode *nd;
    int32_t *heap, hn;
} bstate;

static void pair_eval(bstate *s, int32_t i) {
    bnode *a = &s->nd[i];
    a->rank = NONE;
    int32_t j = a->next;
    if (j >= s->n) return;
    const l3c_tokenizer *t = s->t;
    int32_t end = s->nd[j].next;
    if (!s->spm && t->use_merges) {
        int32_t rank, res;
        if (l3c_pairmap_get(&t->merges, a->id, s->nd[j].id, &rank, &res)) a->rank = rank, a->res = res;
        return;
    }
    int32_t id = s->spm ? l3c_tokmap_get(t, &t->by_text, 1, s->p + i, (size_t)(end - i))
                        : l3c_tokmap_get(t, &t->by_bytes, 0, s->p + i, (size_t)(end - i));
    if (id >= 0 && t->tok[id].rank >= 0) a->rank = t->tok[id].rank, a->res = id;
}

static int less(const bnode *nd, int32_t a, int32_t b) {
    return nd[a].rank < nd[b].rank || (nd[a].rank == nd[b].rank && a < b);
}

static void sift_up(bstate *s, int32_t pos) {
    int32_t x = s->heap[pos];
    while (pos > 0) {
        int32_t par = (pos - 1) / 2;
        if (!less(s->nd, x, s->heap[par])) break;
        s->heap[pos] = s->heap[par];
        s->nd[s->heap[pos]].hpos = pos;
        pos = par;
    }
    s->heap[pos] = x;
    s->nd[x].hpos = pos;
}

static void sift_down(bstate *s, int32_t pos) {
    int32_t x = s->heap[pos];
    for (;;) {
        int32_t c = 2 * pos + 1;
        if (c >= s->hn) break;
        if (c + 1 < s->hn && less(s->nd, s->heap[c + 1], s->heap[c])) c++;
        if (!less(s->nd, s->heap[c], x)) break;
        s->heap[pos] = s->heap[c];
        s->nd[s->heap[pos]].hpos = pos;
        pos = c;
    }
    s->heap[pos] = x;
    s->nd[x].hpos = pos;
}

static void heap_remove(bstate *s, int32_t i) {
    int32_t pos = s->nd[i].hpos;
    if (pos < 0) return;
    s->nd[i].hpos = -1;
    int32_t last = s->heap[--s->hn];
    if (pos == s->hn) return;
    s->heap[pos] = last;
    s->nd[last].hpos = pos;
    sift_up(s, pos);
    sift_down(s, s->nd[last].hpos);
}

static void heap_update(bstate *s, int32_t i) {
    if (s->nd[i].rank == NONE) {
        heap_remove(s, i);
    } else if (s->nd[i].hpos < 0) {
        s->heap[s->hn] = i;
        s->nd[i].hpos = s->hn++;
        sift_up(s, s->nd[i].hpos);
    } else {
        sift_up(s, s->nd[i].hpos);
        sift_down(s, s->nd[i].hpos);
    }
}

/* Single-byte fallback. A byte the vocabulary has no token for becomes <unk> in SentencePiece and
 * is dropped in byte-level BPE (as llama.cpp and HF tokenizers do: there a GGUF's "unknown" id is
 * often <|endoftext|>, and a stray byte must not put an end-of-text token into a prompt). */
static void emit_bytes(const l3c_tokenizer *t, const uint8_t *p, size_t n, l3c_toksink *sink) {
    for (size_t k = 0; k < n; k++) {
        int32_t id = t->byte_tok[p[k]];
        if (id < 0 && t->kind == L3C_TOK_SPM) id = t->unk;
        if (id >= 0) l3c_sink_push(sink, id);
    }
}

static l3c_status merge(const l3c_tokenizer *t, const uint8_t *p, size_t len, int spm, l3c_toksink *sink) {
    if (len > (size_t)INT32_MAX - 1)
        return l3c_fail(L3C_ERR_INVALID_ARG, "tokenizer: piece of %zu bytes is too long", len);
    bnode stack_nd[128];
    int32_t stack_heap[128];
    bstate s = {t, p, (int32_t)len, spm, stack_nd, stack_heap, 0};
    if (len > 128) {
        s.nd = l3c_malloc(len * sizeof *s.nd);
        s.heap = l3c_malloc(len * sizeof *s.heap);
        if (!s.nd || !s.heap) {
            if (s.nd != stack_nd) free(s.nd);
            if (s.heap != stack_heap) free(s.heap);
            return l3c_fail(L3C_ERR_NOMEM, "tokenizer: BPE of a %zu-byte piece", len);
        }
    }
    /* initial symbols: bytes (byte-level) or UTF-8 characters (SPM) */
    int32_t prev = -1;
    for (int32_t i = 0; i < s.n;) {
        int32_t l = 1;
        if (spm) {
            l = (int32_t)l3c_utf8_seq(p + i, len - (size_t)i);
            if (!l) l = 1;
        }
        bnode *b = &s.nd[i];
        b->prev = prev;
        b->next = i + l;
        b->hpos = -1;
        b->id = spm ? l3c_tokmap_get(t, &t->by_text, 1, p + i, (size_t)l) : t->byte_tok[p[i]];
        prev = i;
        i += l;
    }
    for (int32_t i = 0; i < s.n; i = s.nd[i].next) {
        pair_eval(&s, i);
        if (s.nd[i].rank != NONE) {
            s.heap[s.hn] = i;
            s.nd[i].hpos = s.hn++;
        }
    }
    for (int32_t k = s.hn / 2 - 1; k >= 0; k--) sift_down(&s, k);
    while (s.hn > 0) {
        int32_t i = s.heap[0];
        bnode *a = &s.nd[i];
        int32_t j = a->next;
        a->id = a->res;
        heap_remove(&s, j);
        a->next = s.nd[j].next;
        if (a->next < s.n) s.nd[a->next].prev = i;
        pair_eval(&s, i);
        heap_update(&s, i);
        if (a->prev >= 0) {
            pair_eval(&s, a->prev);
            heap_update(&s, a->prev);
        }
    }
    for (int32_t i = 0; i < s.n; i = s.nd[i].next) {
        int32_t id = s.nd[i].id;
        if (id >= 0) l3c_sink_push(sink, id);
        else emit_bytes(t, p + i, (size_t)(s.nd[i].next - i), sink);
    }
    if (s.nd != stack_nd) free(s.nd);
    if (s.heap != stack_heap) free(s.heap);
    return L3C_OK;
}

l3c_status l3c_bpe_piece(const l3c_tokenizer *t, const uint8_t *p, size_t n, l3c_toksink *s) {
    if (n == 0) return L3C_OK;
    if (n == 1) {
        emit_bytes(t, p, 1, s);
        return L3C_OK;
    }
    if (!t->use_merges || t->ignore_merges) { /* a piece that is a token is that token */
        int32_t id = l3c_tokmap_get(t, &t->by_bytes, 0, p, n);
        if (id >= 0 && (t->tok[id].type == L3C_TT_NORMAL || t->tok[id].type == L3C_TT_BYTE)) {
            l3c_sink_push(s, id);
            return L3C_OK;
        }
    }
    return merge(t, p, n, 0, s);
}

l3c_status l3c_spm_fragment(const l3c_tokenizer *t, const uint8_t *p, size_t n, l3c_toksink *s) {
    if (n == 0) return L3C_OK;
    return merge(t, p, n, 1, s);
}
