/*
 * prompt_cache.c -- KV states of token sequences in host memory, LRU within a byte budget
 * (prompt_cache.h). Entries are few (tens to hundreds): a linear scan finds the longest prefix.
 *
 * Invariants
 *  - bytes == the sum of the entries' state sizes <= max_bytes.
 *  - No entry's tokens are a prefix of another's (the shorter one would never be chosen).
 *  - No two entries share n_same tokens of the later one's save: one answer per prompt.
 */
#include "prompt_cache.h"

#include <stdlib.h>
#include <string.h>

typedef struct pc_entry {
    int32_t *toks; /* [n] */
    int32_t n;
    void *state; /* [size] l3c_kv_seq_state_get of n positions */
    size_t size;
    uint64_t used; /* last save / restore (LRU clock) */
} pc_entry;

struct pcache {
    size_t max_bytes, bytes;
    pc_entry *e;
    int32_t n, cap;
    uint64_t clock;
    pcache_stats st;
};

pcache *pcache_create(size_t max_bytes) {
    pcache *c = calloc(1, sizeof *c);
    if (c) c->max_bytes = max_bytes;
    return c;
}

static void entry_drop(pcache *c, int32_t i) {
    c->bytes -= c->e[i].size;
    free(c->e[i].toks);
    free(c->e[i].state);
    c->e[i] = c->e[--c->n];
}

void pcache_free(pcache *c) {
    if (!c) return;
    while (c->n)
        entry_drop(c, c->n - 1);
    free(c->e);
    free(c);
}

static int32_t common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    int32_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

int32_t pcache_find(const pcache *c, const int32_t *toks, int32_t n, int32_t *lcp) {
    int32_t best = -1, best_l = 0;
    for (int32_t i = 0; i < c->n; i++) {
        int32_t l = common_prefix(c->e[i].toks, c->e[i].n, toks, n);
        if (l > best_l) {
            best = i;
            best_l = l;
        }
    }
    *lcp = best_l;
    return best;
}

int pcache_save(pcache *c, l3c_context *ctx, int32_t seq, const int32_t *toks, int32_t n,
                int32_t n_same) {
    if (n < PCACHE_MIN_TOKENS) return 0;
    const size_t size = l3c_kv_seq_state_size(ctx, n);
    if (!size || size > c->max_bytes) return 0;
    for (int32_t i = 0; i < c->n; i++) /* held already: an entry starts with these tokens */
        if (c->e[i].n >= n && common_prefix(c->e[i].toks, c->e[i].n, toks, n) == n) {
            c->e[i].used = ++c->clock;
            return 0;
        }
    for (int32_t i = c->n - 1; i >= 0; i--) { /* entries the new one extends or replaces */
        int32_t l = common_prefix(c->e[i].toks, c->e[i].n, toks, n);
        if (l == c->e[i].n || l >= n_same) entry_drop(c, i);
    }
    while (c->n && c->bytes + size > c->max_bytes) { /* least recently used first */
        int32_t lru = 0;
        for (int32_t i = 1; i < c->n; i++)
            if (c->e[i].used < c->e[lru].used) lru = i;
        entry_drop(c, lru);
        c->st.evictions++;
    }
    if (c->n == c->cap) {
        int32_t cap = c->cap ? 2 * c->cap : 16;
        pc_entry *q = realloc(c->e, (size_t)cap * sizeof *q);
        if (!q) return -1;
        c->e = q;
        c->cap = cap;
    }
    pc_entry en = {malloc((size_t)n * sizeof(int32_t)), n, malloc(size), size, ++c->clock};
    if (!en.toks || !en.state || l3c_kv_seq_state_get(ctx, seq, n, en.state, size) != L3C_OK) {
        free(en.toks);
        free(en.state);
        return -1;
    }
    memcpy(en.toks, toks, (size_t)n * sizeof(int32_t));
    c->e[c->n++] = en;
    c->bytes += size;
    c->st.saves++;
    return 1;
}

int pcache_restore(pcache *c, int32_t i, l3c_context *ctx, int32_t seq, int32_t n,
                   int32_t *toks_out) {
    pc_entry *e = &c->e[i];
    if (n < 1 || n > e->n) return -1;
    if (l3c_kv_seq_state_set(ctx, seq, e->n, e->state, e->size) != L3C_OK ||
        l3c_kv_seq_truncate(ctx, seq, n) != L3C_OK)
        return -1;
    memcpy(toks_out, e->toks, (size_t)n * sizeof(int32_t));
    e->used = ++c->clock;
    c->st.restores++;
    return 0;
}

void pcache_get_stats(const pcache *c, pcache_stats *st) {
    *st = c->st;
    st->entries = c->n;
    st->bytes = c->bytes;
}
