/*
 * matcher.c -- compiled grammars (l3c_grammar) and their per-sampler parse state (l3c_gmatch).
 *
 * A parse state is a set of pushdown stacks, as in llama.cpp: each stack is a list of element
 * positions, the top one a character class still to match, the ones below the continuations of
 * the rules that referenced it. Stacks are interned as nodes (top position, parent node) in a
 * hash table, so a stack is one int, equal stacks are equal ints, and what follows a node is
 * computed once and memoized:
 *   exp(node)   the stacks whose tops are character classes, reached by expanding rule
 *               references and popping finished rules (an empty alternative pops at once);
 *   succ(node)  exp of the stack after the top class has matched one code point.
 * Node 0 is the empty stack: the grammar is complete on that path.
 *
 * Input is bytes, the grammar is code points: a state item is (node, partial code point, bytes
 * still needed). A lead byte keeps the item only if some code point with that prefix can match
 * the top class (exact range test), so a token that ends inside a code point (byte-level BPE
 * splits them) is allowed exactly when some completion is.
 *
 * Token masks: the vocabulary's byte strings form a trie (built once per grammar). The mask
 * walks the trie depth-first carrying the item set: each edge steps every item by one byte; an
 * empty set prunes the subtree; every token that ends at a node reached with a non-empty set is
 * allowed. Work is bounded by the trie nodes the grammar can reach times the live stacks.
 * Masks are cached per state (sorted item list -> bitmask) since the same states recur (every
 * JSON string body, every value position of the same object). Control tokens never match
 * text; end-of-generation tokens are allowed when node 0 is in the set.
 *
 * Invariants: items in a set are distinct; the grammar (rules, trie) is never written after
 * l3c_grammar_* returns, so it is shared freely; everything mutable is in l3c_gmatch.
 */
#include "grammar/grammar.h"

#include <string.h>

#define MAX_STACK_DEPTH  10000 /* stack nodes deeper than this are not followed */
#define MAX_EXPAND_DEPTH 2000  /* rule references / pops resolved in one expansion */
#define MASK_CACHE_SLOTS 64

enum { TK_TEXT = 0, TK_EOG = 1, TK_NEVER = 2 };

typedef struct tnode {
    int32_t child;   /* first child, -1: none */
    int32_t sibling; /* next sibling, -1: none */
    int32_t tok;     /* first token ending here, -1: none (more via tok_next) */
    uint8_t byte;    /* label of the edge into this node */
} tnode;

/* The trie as the masks walk it: nodes in depth-first preorder (the root is 0, a node's first
 * child is the next node, its next sibling is `end`), so a walk reads memory forward. Per node:
 * the edge byte into it, which ASCII bytes occur below it, whether any byte >= 0x80 does,
 * whether some token in its subtree is not well-formed UTF-8 (a stray continuation byte, an
 * overlong or out-of-range sequence; a truncated last code point is fine), its own tokens
 * order[ts .. own_end) and its subtree's tokens order[ts .. te). */
typedef struct tsum {
    uint64_t asc[2];
    int32_t ts, own_end, te, end;
    uint8_t byte, hi, unclean;
} tsum;

struct l3c_gvocab {
    int refs; /* the tokenizer's reference + one per grammar (atomic) */
    int32_t n_vocab;
    uint8_t *kind; /* [n_vocab] TK_* */
    char *bytes;   /* token bytes, concatenated */
    uint32_t *off; /* [n_vocab + 1] */
    tnode *trie;   /* [n_trie], node 0 the root */
    uint32_t n_trie;
    int32_t *tok_next; /* [n_vocab] next token ending at the same trie node, -1: none */
    int32_t *eog;      /* [n_eog] end-of-generation token ids */
    int32_t n_eog;
    tsum *sum;      /* [n_trie] the trie in preorder with what lies below each node */
    int32_t *order; /* [tokens in the trie] token ids in depth-first order: a subtree is a range */
};

struct l3c_grammar {
    gram_rules *r;
    l3c_gvocab *v; /* shared, reference-counted; the tokenizer keeps it for the next grammar */
};

typedef struct snode {
    uint32_t pos;   /* top element */
    int32_t parent; /* node below, 0: none */
    int32_t depth;
    int32_t exp_off, exp_len;   /* memo of exp(node) in pool; exp_off < 0: not yet */
    int32_t succ_off, succ_len; /* memo of succ(node) */
} snode;

typedef struct item {
    int32_t node;
    uint32_t acc;  /* partial code point */
    uint16_t need; /* continuation bytes still needed, 0: none */
    uint16_t len;  /* length of the whole UTF-8 sequence (overlong forms are rejected) */
} item;

/* Smallest code point of a UTF-8 sequence of len bytes. */
static const uint32_t UTF8_MIN[5] = {0, 0, 0x80, 0x800, 0x10000};

/* Does some completion of (acc, need more bytes) of a len-byte sequence match the class at pos? */
static int partial_ok(const gel *el, uint32_t pos, uint32_t acc, uint32_t need, uint32_t len) {
    uint32_t lo = acc << (6 * need), hi = lo | ((1u << (6 * need)) - 1);
    if (lo < UTF8_MIN[len]) lo = UTF8_MIN[len];
    if (hi > 0x10FFFF) hi = 0x10FFFF;
    return lo <= hi && l3c_gram_match_range(el, pos, lo, hi);
}

typedef struct ivec {
    int32_t *v;
    size_t n, cap;
} ivec;

typedef struct mcache {
    item *key;
    uint32_t n_key;
    uint32_t *bits;
    int64_t count;
    uint64_t stamp;
} mcache;

struct l3c_gmatch {
    const l3c_grammar *g;
    snode *nodes;
    uint32_t n_nodes, cap_nodes;
    int32_t *ht; /* open addressing: node ids, 0 = empty slot */
    uint32_t ht_cap;
    int32_t *pool; /* memo lists */
    size_t pool_len, pool_cap;
    uint32_t *mark; /* [cap_nodes] generation stamps for dedupe in step_byte */
    uint32_t gen;
    uint32_t *mark2; /* [cap_nodes] the same for pool_store (which runs inside step_byte) */
    uint32_t gen2;
    item *cur; /* current state */
    uint32_t n_cur;
    item *saved; /* l3c_gmatch_mark's copy of cur (node ids stay valid: nodes are never freed) */
    uint32_t n_saved;
    item *work; /* trie walk / step scratch: frames of items */
    size_t work_len, work_cap;
    l3c_status err; /* sticky failure (allocation, expansion too deep) */
    int depth;      /* expand_pos recursion */
    int no_cache;   /* benchmarks: recompute every mask */
    struct loopmemo {
        item *key; /* sorted item set */
        uint32_t n;
        uint64_t asc[2]; /* ASCII bytes b with step(set, b) == set */
        int hi;          /* every code point >= 0x80 maps the set to itself */
    } loops[8];
    int n_loops, next_loop;
    uint32_t *mark3; /* [cap_nodes] set-equality stamps */
    uint32_t gen3;
    mcache cache[MASK_CACHE_SLOTS];
    int32_t cache_words;
    uint64_t stamp;
    char why[160];
};

/* ---------------------------------------------------------------- small helpers */

static int is_end(uint32_t t) {
    return t == G_END || t == G_ALT;
}

static int ivec_push(l3c_gmatch *m, ivec *v, int32_t x) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 16;
        int32_t *nv = l3c_realloc(v->v, nc * sizeof *nv);
        if (!nv) {
            m->err = L3C_ERR_NOMEM;
            return -1;
        }
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = x;
    return 0;
}

static int work_push(l3c_gmatch *m, item it) {
    if (m->work_len == m->work_cap) {
        size_t nc = m->work_cap ? m->work_cap * 2 : 1024;
        item *nv = l3c_realloc(m->work, nc * sizeof *nv);
        if (!nv) {
            m->err = L3C_ERR_NOMEM;
            return -1;
        }
        m->work = nv;
        m->work_cap = nc;
    }
    m->work[m->work_len++] = it;
    return 0;
}

static uint32_t next_gen(l3c_gmatch *m) {
    if (++m->gen == 0) {
        memset(m->mark, 0, (size_t)m->cap_nodes * sizeof *m->mark);
        m->gen = 1;
    }
    return m->gen;
}

static uint32_t next_gen2(l3c_gmatch *m) {
    if (++m->gen2 == 0) {
        memset(m->mark2, 0, (size_t)m->cap_nodes * sizeof *m->mark2);
        m->gen2 = 1;
    }
    return m->gen2;
}

/* ---------------------------------------------------------------- stack nodes */

static uint32_t hash2(uint32_t a, int32_t b) {
    uint64_t h = ((uint64_t)a << 32) ^ (uint32_t)b;
    h *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32);
}

static int ht_grow(l3c_gmatch *m) {
    uint32_t nc = m->ht_cap ? m->ht_cap * 2 : 1024;
    int32_t *nh = l3c_calloc(nc, sizeof *nh);
    if (!nh) return -1;
    for (uint32_t k = 1; k < m->n_nodes; k++) {
        uint32_t h = hash2(m->nodes[k].pos, m->nodes[k].parent) & (nc - 1);
        while (nh[h])
            h = (h + 1) & (nc - 1);
        nh[h] = (int32_t)k;
    }
    free(m->ht);
    m->ht = nh;
    m->ht_cap = nc;
    return 0;
}

/* The node for stack (pos over parent); -1 when too deep or out of memory. */
static int32_t intern(l3c_gmatch *m, uint32_t pos, int32_t parent) {
    if ((m->n_nodes + 1) * 2 > m->ht_cap && ht_grow(m) < 0) {
        m->err = L3C_ERR_NOMEM;
        return -1;
    }
    uint32_t h = hash2(pos, parent) & (m->ht_cap - 1);
    for (; m->ht[h]; h = (h + 1) & (m->ht_cap - 1)) {
        const snode *s = &m->nodes[m->ht[h]];
        if (s->pos == pos && s->parent == parent) return m->ht[h];
    }
    int32_t depth = parent ? m->nodes[parent].depth + 1 : 1;
    if (depth > MAX_STACK_DEPTH) return -1; /* nesting this deep is not followed */
    if (m->n_nodes == m->cap_nodes) {
        uint32_t nc = m->cap_nodes * 2;
        snode *nn = l3c_realloc(m->nodes, (size_t)nc * sizeof *nn);
        uint32_t *nm = nn ? l3c_realloc(m->mark, (size_t)nc * sizeof *nm) : NULL;
        if (nn) m->nodes = nn;
        if (nm) m->mark = nm;
        uint32_t *nm2 = nm ? l3c_realloc(m->mark2, (size_t)nc * sizeof *nm2) : NULL;
        if (!nn || !nm || !nm2) {
            m->err = L3C_ERR_NOMEM;
            return -1;
        }
        m->mark2 = nm2;
        uint32_t *nm3 = l3c_realloc(m->mark3, (size_t)nc * sizeof *nm3);
        if (!nm3) {
            m->err = L3C_ERR_NOMEM;
            return -1;
        }
        m->mark3 = nm3;
        memset(nm3 + m->cap_nodes, 0, (size_t)(nc - m->cap_nodes) * sizeof *nm3);
        memset(nm + m->cap_nodes, 0, (size_t)(nc - m->cap_nodes) * sizeof *nm);
        memset(nm2 + m->cap_nodes, 0, (size_t)(nc - m->cap_nodes) * sizeof *nm2);
        m->cap_nodes = nc;
    }
    int32_t id = (int32_t)m->n_nodes++;
    m->nodes[id] = (snode){pos, parent, depth, -1, 0, -1, 0};
    m->ht[h] = id;
    return id;
}

static int32_t pool_store(l3c_gmatch *m, ivec *v) {
    /* dedupe in place, keeping first occurrences */
    uint32_t g = next_gen2(m);
    size_t k = 0;
    for (size_t j = 0; j < v->n; j++) {
        int32_t x = v->v[j];
        if (m->mark2[x] == g) continue;
        m->mark2[x] = g;
        v->v[k++] = x;
    }
    v->n = k;
    if (m->pool_len + k > m->pool_cap) {
        size_t nc = m->pool_cap ? m->pool_cap : 4096;
        while (nc < m->pool_len + k)
            nc *= 2;
        int32_t *np = l3c_realloc(m->pool, nc * sizeof *np);
        if (!np) {
            m->err = L3C_ERR_NOMEM;
            return -1;
        }
        m->pool = np;
        m->pool_cap = nc;
    }
    int32_t off = (int32_t)m->pool_len;
    memcpy(m->pool + off, v->v, k * sizeof *v->v);
    m->pool_len += k;
    return off;
}

static void expand_pos(l3c_gmatch *m, uint32_t pos, int32_t parent, ivec *out);

/* exp(n): memoized; returns the list's offset in m->pool (length in *len), -1 on failure. */
static int32_t expand_node(l3c_gmatch *m, int32_t n, int32_t *len) {
    if (m->nodes[n].exp_off >= 0) {
        *len = m->nodes[n].exp_len;
        return m->nodes[n].exp_off;
    }
    ivec tmp = {0};
    expand_pos(m, m->nodes[n].pos, m->nodes[n].parent, &tmp);
    int32_t off = m->err ? -1 : pool_store(m, &tmp);
    if (off >= 0) {
        m->nodes[n].exp_off = off;
        m->nodes[n].exp_len = (int32_t)tmp.n;
        *len = (int32_t)tmp.n;
    }
    free(tmp.v);
    return off;
}

static void expand_pos_(l3c_gmatch *m, uint32_t pos, int32_t parent, ivec *out);

static void expand_pos(l3c_gmatch *m, uint32_t pos, int32_t parent, ivec *out) {
    if (m->err) return;
    if (++m->depth > MAX_EXPAND_DEPTH) {
        m->err = L3C_ERR_UNSUPPORTED; /* rule chains this deep would overflow the C stack */
    } else {
        expand_pos_(m, pos, parent, out);
    }
    m->depth--;
}

static void expand_pos_(l3c_gmatch *m, uint32_t pos, int32_t parent, ivec *out) {
    const gel *el = m->g->r->el;
    uint32_t t = el[pos].type;
    if (is_end(t)) { /* this rule is done: continue with the stack below */
        if (parent == 0) {
            ivec_push(m, out, 0);
            return;
        }
        int32_t len;
        int32_t off = expand_node(m, parent, &len);
        for (int32_t k = 0; off >= 0 && k < len; k++)
            ivec_push(m, out, m->pool[off + k]);
        return;
    }
    if (t == G_REF) {
        int32_t cont = parent;
        if (!is_end(el[pos + 1].type)) { /* a finished sequence pops straight to the parent */
            cont = intern(m, pos + 1, parent);
            if (cont < 0) return;
        }
        uint32_t a = m->g->r->rule_off[el[pos].val];
        for (;;) {
            expand_pos(m, a, cont, out);
            while (!is_end(el[a].type))
                a++;
            if (el[a].type == G_END) break;
            a++;
        }
        return;
    }
    int32_t id = intern(m, pos, parent);
    if (id >= 0) ivec_push(m, out, id);
}

static int32_t succ_node(l3c_gmatch *m, int32_t n, int32_t *len) {
    if (m->nodes[n].succ_off >= 0) {
        *len = m->nodes[n].succ_len;
        return m->nodes[n].succ_off;
    }
    ivec tmp = {0};
    expand_pos(m, l3c_gram_class_end(m->g->r->el, m->nodes[n].pos), m->nodes[n].parent, &tmp);
    int32_t off = m->err ? -1 : pool_store(m, &tmp);
    if (off >= 0) {
        m->nodes[n].succ_off = off;
        m->nodes[n].succ_len = (int32_t)tmp.n;
        *len = (int32_t)tmp.n;
    }
    free(tmp.v);
    return off;
}

/* ---------------------------------------------------------------- stepping by bytes */

/* Steps the items work[in_off .. in_off + n_in) by byte b, appending the result to work. */
static void step_byte(l3c_gmatch *m, size_t in_off, size_t n_in, uint8_t b) {
    const gel *el = m->g->r->el;
    uint32_t g = next_gen(m);
    for (size_t k = 0; k < n_in; k++) {
        item it = m->work[in_off + k];
        if (it.node == 0) continue;
        uint32_t pos = m->nodes[it.node].pos;
        uint32_t cp;
        if (it.need == 0) {
            if (b < 0x80) {
                cp = b;
            } else {
                uint32_t need, acc;
                if ((b & 0xE0) == 0xC0)
                    need = 1, acc = b & 0x1F;
                else if ((b & 0xF0) == 0xE0)
                    need = 2, acc = b & 0x0F;
                else if ((b & 0xF8) == 0xF0)
                    need = 3, acc = b & 0x07;
                else
                    continue;
                if (partial_ok(el, pos, acc, need, need + 1))
                    work_push(m, (item){it.node, acc, (uint16_t)need, (uint16_t)(need + 1)});
                continue;
            }
        } else {
            if ((b & 0xC0) != 0x80) continue;
            uint32_t acc = (it.acc << 6) | (b & 0x3F), need = it.need - 1u;
            if (need) {
                if (partial_ok(el, pos, acc, need, it.len))
                    work_push(m, (item){it.node, acc, (uint16_t)need, it.len});
                continue;
            }
            if (acc < UTF8_MIN[it.len] || acc > 0x10FFFF) continue;
            cp = acc;
        }
        if (!l3c_gram_match_char(el, pos, cp)) continue;
        int32_t len;
        int32_t off = succ_node(m, it.node, &len);
        for (int32_t j = 0; off >= 0 && j < len; j++) {
            int32_t s = m->pool[off + j];
            if (m->mark[s] == g) continue;
            m->mark[s] = g;
            work_push(m, (item){s, 0, 0, 0});
        }
    }
}

/* Runs len bytes from the current state; the resulting items are work[*out_off .. work_len). */
static size_t run_bytes(l3c_gmatch *m, const uint8_t *p, size_t len, size_t *out_off) {
    m->work_len = 0;
    for (uint32_t k = 0; k < m->n_cur; k++)
        work_push(m, m->cur[k]);
    size_t in_off = 0, n_in = m->work_len;
    for (size_t k = 0; k < len && n_in; k++) {
        size_t o = m->work_len;
        step_byte(m, in_off, n_in, p[k]);
        in_off = o;
        n_in = m->work_len - o;
    }
    *out_off = in_off;
    return n_in;
}

/* ---------------------------------------------------------------- state */

/* The message for a sticky failure. */
static l3c_status report(const l3c_gmatch *m) {
    if (m->err == L3C_ERR_UNSUPPORTED)
        return l3c_fail(L3C_ERR_UNSUPPORTED,
                        "grammar: rules nest deeper than %d references at one point",
                        MAX_EXPAND_DEPTH);
    return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory");
}

static int has_accept(const l3c_gmatch *m) {
    for (uint32_t k = 0; k < m->n_cur; k++)
        if (m->cur[k].node == 0 && m->cur[k].need == 0) return 1;
    return 0;
}

static l3c_status set_cur(l3c_gmatch *m, const item *it, size_t n) {
    item *nc = l3c_realloc(m->cur, (n ? n : 1) * sizeof *nc);
    if (!nc) return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory");
    memmove(nc, it, n * sizeof *nc);
    m->cur = nc;
    m->n_cur = (uint32_t)n;
    return L3C_OK;
}

void l3c_gmatch_reset(l3c_gmatch *m) {
    if (!m) return;
    ivec tmp = {0};
    const gram_rules *r = m->g->r;
    uint32_t a = r->rule_off[r->root];
    for (;;) {
        expand_pos(m, a, 0, &tmp);
        while (!is_end(r->el[a].type))
            a++;
        if (r->el[a].type == G_END) break;
        a++;
    }
    m->n_cur = 0;
    if (!m->err) {
        int32_t off = pool_store(m, &tmp);
        item *its = off >= 0 ? l3c_malloc((tmp.n ? tmp.n : 1) * sizeof *its) : NULL;
        if (its) {
            for (size_t k = 0; k < tmp.n; k++)
                its[k] = (item){m->pool[off + k], 0, 0, 0};
            if (set_cur(m, its, tmp.n) != L3C_OK) m->err = L3C_ERR_NOMEM;
        } else {
            m->err = L3C_ERR_NOMEM;
        }
        free(its);
    }
    free(tmp.v);
}

l3c_status l3c_gmatch_create(const l3c_grammar *g, l3c_gmatch **out) {
    *out = NULL;
    l3c_gmatch *m = l3c_calloc(1, sizeof *m);
    if (!m) return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory");
    m->g = g;
    m->cap_nodes = 256;
    m->nodes = l3c_malloc(m->cap_nodes * sizeof *m->nodes);
    m->mark = l3c_calloc(m->cap_nodes, sizeof *m->mark);
    m->mark2 = l3c_calloc(m->cap_nodes, sizeof *m->mark2);
    m->mark3 = l3c_calloc(m->cap_nodes, sizeof *m->mark3);
    m->cache_words = (g->v->n_vocab + 31) / 32;
    if (!m->nodes || !m->mark || !m->mark2 || !m->mark3 || ht_grow(m) < 0) goto oom;
    m->nodes[0] = (snode){0, 0, 0, 0, 0, 0, 0}; /* the empty stack */
    m->n_nodes = 1;
    l3c_gmatch_reset(m);
    if (m->err) {
        l3c_status st = report(m);
        l3c_gmatch_free(m);
        return st;
    }
    *out = m;
    return L3C_OK;
oom:
    l3c_gmatch_free(m);
    return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory");
}

void l3c_gmatch_free(l3c_gmatch *m) {
    if (!m) return;
    for (int k = 0; k < MASK_CACHE_SLOTS; k++) {
        free(m->cache[k].key);
        free(m->cache[k].bits);
    }
    free(m->nodes);
    free(m->ht);
    free(m->pool);
    free(m->mark);
    free(m->mark2);
    free(m->mark3);
    for (int k = 0; k < m->n_loops; k++)
        free(m->loops[k].key);
    free(m->cur);
    free(m->saved);
    free(m->work);
    free(m);
}

l3c_status l3c_gmatch_mark(l3c_gmatch *m) {
    item *c = l3c_realloc(m->saved, (m->n_cur ? m->n_cur : 1) * sizeof *c);
    if (!c) return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory");
    memcpy(c, m->cur, m->n_cur * sizeof *c);
    m->saved = c;
    m->n_saved = m->n_cur;
    return L3C_OK;
}

l3c_status l3c_gmatch_rollback(l3c_gmatch *m) {
    return m->saved ? set_cur(m, m->saved, m->n_saved) : L3C_OK;
}

void l3c_gmatch_set_cache(l3c_gmatch *m, int on) {
    m->no_cache = !on;
}

int32_t l3c_grammar_n_vocab(const l3c_grammar *g) {
    return g ? g->v->n_vocab : 0;
}

static const uint8_t *tok_bytes(const l3c_gvocab *g, int32_t id, size_t *len) {
    *len = g->off[id + 1] - g->off[id];
    return (const uint8_t *)g->bytes + g->off[id];
}

int l3c_gmatch_allows(l3c_gmatch *m, int32_t id) {
    const l3c_gvocab *g = m->g->v;
    if (id < 0 || id >= g->n_vocab) return 0;
    if (g->kind[id] == TK_EOG) return has_accept(m);
    if (g->kind[id] != TK_TEXT) return 0;
    size_t len, off;
    const uint8_t *p = tok_bytes(g, id, &len);
    return run_bytes(m, p, len, &off) > 0 && !m->err;
}

l3c_status l3c_gmatch_accept(l3c_gmatch *m, int32_t id) {
    const l3c_gvocab *g = m->g->v;
    if (id >= 0 && id < g->n_vocab && g->kind[id] == TK_EOG && has_accept(m)) {
        static const item done = {0, 0, 0, 0};
        return set_cur(m, &done, 1);
    }
    size_t n = 0, off = 0;
    if (id >= 0 && id < g->n_vocab && g->kind[id] == TK_TEXT) {
        size_t len;
        const uint8_t *p = tok_bytes(g, id, &len);
        n = run_bytes(m, p, len, &off);
    }
    if (m->err) return report(m);
    l3c_status st = set_cur(m, m->work + off, n);
    if (st != L3C_OK) return st;
    if (n == 0)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "grammar: token %d is not allowed here; the parse state is now dead",
                        (int)id);
    return L3C_OK;
}

int l3c_gmatch_done(const l3c_gmatch *m) {
    return m && m->n_cur == 1 && m->cur[0].node == 0 && m->cur[0].need == 0;
}

int l3c_gmatch_dead(const l3c_gmatch *m) {
    return !m || m->n_cur == 0;
}

const char *l3c_gmatch_why_none(const l3c_gmatch *m) {
    if (m->n_cur == 0) return "the output so far left the grammar (dead parse state)";
    if (l3c_gmatch_done(m))
        return m->g->v->n_eog
                   ? "the grammar is complete and every end-of-generation token is banned"
                   : "the grammar is complete and the vocabulary has no end-of-generation token";
    return "no token of the vocabulary (that is not banned) can continue the grammar here";
}

/* ---------------------------------------------------------------- masks */

static int item_cmp(const void *pa, const void *pb);

/* 1 when items a[0..na) and b[0..nb) are the same set (both duplicate-free, need == 0). */
static int same_set(l3c_gmatch *m, const item *a, size_t na, const item *b, size_t nb) {
    if (na != nb) return 0;
    if (++m->gen3 == 0) {
        memset(m->mark3, 0, (size_t)m->cap_nodes * sizeof *m->mark3);
        m->gen3 = 1;
    }
    for (size_t k = 0; k < na; k++) {
        if (a[k].need) return 0;
        m->mark3[a[k].node] = m->gen3;
    }
    for (size_t k = 0; k < nb; k++)
        if (b[k].need || m->mark3[b[k].node] != m->gen3) return 0;
    return 1;
}

/* Does every class of the set accept all code points >= 0x80 (1), none (0), or some (-1)? */
static int hi_uniform(const gel *el, uint32_t pos) {
    uint32_t t = el[pos].type;
    if (t == G_CHAR_ANY) return 1;
    if (!l3c_gram_match_range(el, pos, 0x80, 0x10FFFF)) return 0;
    if (t == G_CHAR_NOT) { /* all, unless an excluded range reaches above 0x7F */
        uint32_t k = pos;
        do {
            uint32_t hi = el[k + 1].type == G_RNG_UPPER ? el[k + 1].val : el[k].val;
            if (hi >= 0x80) return -1;
            k += el[k + 1].type == G_RNG_UPPER ? 2 : 1;
        } while (el[k].type == G_CHAR_ALT);
        return 1;
    }
    return -1;
}

/* The loop memo of the set work[off .. off + n): which single bytes / code points leave it
 * unchanged. NULL when the set is not a loop state or on failure. */
static const struct loopmemo *loop_of(l3c_gmatch *m, size_t off, size_t n) {
    item *key = l3c_malloc((n ? n : 1) * sizeof *key);
    if (!key) return NULL;
    memcpy(key, m->work + off, n * sizeof *key);
    qsort(key, n, sizeof *key, item_cmp);
    for (int k = 0; k < m->n_loops; k++)
        if (m->loops[k].n == n && !memcmp(m->loops[k].key, key, n * sizeof *key)) {
            free(key);
            return &m->loops[k];
        }
    struct loopmemo lm = {key, (uint32_t)n, {0, 0}, 1};
    size_t base = m->work_len;
    for (int b = 0; b < 128 && !m->err; b++) {
        m->work_len = base;
        step_byte(m, off, n, (uint8_t)b);
        if (same_set(m, m->work + off, n, m->work + base, m->work_len - base))
            lm.asc[b >> 6] |= 1ull << (b & 63);
    }
    /* code points >= 0x80: every class all-or-nothing, and the union of the successors of the
     * accepting ones is the set itself */
    const gel *el = m->g->r->el;
    size_t o2 = base;
    m->work_len = base;
    for (size_t k = 0; k < n && lm.hi && !m->err; k++) {
        item it = m->work[off + k];
        int u = it.node == 0 ? 0 : hi_uniform(el, m->nodes[it.node].pos);
        if (u < 0) lm.hi = 0;
        if (u <= 0) continue;
        int32_t len;
        int32_t so = succ_node(m, it.node, &len);
        for (int32_t j = 0; so >= 0 && j < len; j++)
            work_push(m, (item){m->pool[so + j], 0, 0, 0});
    }
    if (lm.hi && !m->err) {
        /* dedupe the successors, then compare */
        size_t w = o2;
        if (++m->gen == 0) m->gen = 1;
        for (size_t k = o2; k < m->work_len; k++) {
            if (m->mark[m->work[k].node] == m->gen) continue;
            m->mark[m->work[k].node] = m->gen;
            m->work[w++] = m->work[k];
        }
        lm.hi = same_set(m, m->work + off, n, m->work + o2, w - o2);
    }
    m->work_len = base;
    if (m->err) {
        free(key);
        return NULL;
    }
    int slot;
    if (m->n_loops < 8) {
        slot = m->n_loops++;
    } else {
        slot = m->next_loop++ & 7;
        free(m->loops[slot].key);
    }
    m->loops[slot] = lm;
    return &m->loops[slot];
}

/* Marks every token in the subtree of trie node c (its own tokens included). */
static void mark_subtree(const l3c_gvocab *g, int32_t c, uint32_t *bits) {
    for (int32_t k = g->sum[c].ts; k < g->sum[c].te; k++) {
        int32_t t = g->order[k];
        bits[t >> 5] |= 1u << (t & 31);
    }
}

/*
 * Depth-first walk: the items work[in_off .. in_off + n_in) are the state after the bytes of trie
 * node tn. Shortcut: when a byte leaves the set unchanged (a loop such as the body of a JSON
 * string) and every byte / code point below the child leaves it unchanged too, the whole
 * subtree is allowed without stepping (tokens that are not well-formed UTF-8 excluded).
 */
static void walk(l3c_gmatch *m, int32_t tn, size_t in_off, size_t n_in, const struct loopmemo *lm,
                 size_t anc_off, size_t anc_n, const struct loopmemo *anc, uint32_t *bits) {
    const l3c_gvocab *g = m->g->v;
    for (int32_t c = tn + 1; c < g->sum[tn].end; c = g->sum[c].end) {
        const tsum *su = &g->sum[c];
        uint8_t b = su->byte;
        size_t o = m->work_len, n;
        const struct loopmemo *clm = NULL; /* the memo of the set at c, when it is a loop state */
        struct loopmemo copy;
        if (lm && b < 0x80 && (lm->asc[b >> 6] >> (b & 63) & 1)) {
            o = in_off; /* the byte leaves the set as it is: no step needed */
            n = n_in;
            clm = lm;
        } else {
            step_byte(m, in_off, n_in, b);
            n = m->work_len - o;
            if (n && anc && same_set(m, m->work + anc_off, anc_n, m->work + o, n)) {
                clm =
                    anc; /* back in the loop state of an ancestor (after a multi-byte character) */
            } else if (n && b < 0x80 && same_set(m, m->work + in_off, n_in, m->work + o, n)) {
                clm = lm;
                if (!clm &&
                    (clm = loop_of(m, o, n))) { /* a copy: the memo slot may be reused below */
                    copy = *clm;
                    clm = &copy;
                }
            }
        }
        if (n) {
            for (int32_t k = su->ts; k < su->own_end; k++) {
                int32_t t = g->order[k];
                bits[t >> 5] |= 1u << (t & 31);
            }
            if (su->end > c + 1) {
                if (clm && !(su->asc[0] & ~clm->asc[0]) && !(su->asc[1] & ~clm->asc[1]) &&
                    (!su->hi || (clm->hi && !su->unclean)))
                    mark_subtree(g, c, bits);
                else if (clm)
                    walk(m, c, o, n, clm, o, n, clm, bits);
                else
                    walk(m, c, o, n, NULL, anc_off, anc_n, anc, bits);
            }
        }
        if (o != in_off) m->work_len = o;
    }
}

static int item_cmp(const void *pa, const void *pb) {
    const item *a = pa, *b = pb;
    if (a->node != b->node) return a->node < b->node ? -1 : 1;
    if (a->need != b->need) return a->need < b->need ? -1 : 1;
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    return a->acc < b->acc ? -1 : a->acc > b->acc;
}

/* Computes the mask of the current state into m's cache; returns the slot, -1 on failure. */
static int cached_mask(l3c_gmatch *m) {
    qsort(m->cur, m->n_cur, sizeof *m->cur, item_cmp);
    int victim = 0;
    for (int k = 0; k < (m->no_cache ? 0 : MASK_CACHE_SLOTS); k++) {
        mcache *c = &m->cache[k];
        if (c->bits && c->n_key == m->n_cur &&
            memcmp(c->key, m->cur, m->n_cur * sizeof *m->cur) == 0) {
            c->stamp = ++m->stamp;
            return k;
        }
        if (c->stamp < m->cache[victim].stamp) victim = k;
    }
    mcache *c = &m->cache[victim];
    item *key = l3c_realloc(c->key, (m->n_cur ? m->n_cur : 1) * sizeof *key);
    if (!key) return -1;
    c->key = key;
    if (!c->bits)
        c->bits = l3c_malloc((size_t)(m->cache_words ? m->cache_words : 1) * sizeof *c->bits);
    if (!c->bits) return -1;
    memcpy(c->key, m->cur, m->n_cur * sizeof *m->cur);
    c->n_key = m->n_cur;
    memset(c->bits, 0, (size_t)m->cache_words * sizeof *c->bits);
    int64_t count = 0;
    m->work_len = 0;
    for (uint32_t k = 0; k < m->n_cur; k++)
        work_push(m, m->cur[k]);
    {
        /* the start state may itself be a loop state (inside a JSON string, say) */
        const struct loopmemo *lm0 = m->work_len ? loop_of(m, 0, m->work_len) : NULL;
        struct loopmemo copy0;
        if (lm0) {
            copy0 = *lm0;
            lm0 = &copy0;
            if (!(lm0->asc[0] | lm0->asc[1]) && !lm0->hi) lm0 = NULL; /* not a loop: no shortcut */
        }
        walk(m, 0, 0, m->work_len, lm0, 0, m->work_len, lm0, c->bits);
    }
    if (has_accept(m))
        for (int32_t k = 0; k < m->g->v->n_eog; k++) {
            int32_t t = m->g->v->eog[k];
            c->bits[t >> 5] |= 1u << (t & 31);
        }
    for (int32_t k = 0; k < m->cache_words; k++)
        count += __builtin_popcount(c->bits[k]);
    if (m->err) {
        c->n_key = 0;
        free(c->bits);
        c->bits = NULL;
        return -1;
    }
    c->count = count;
    c->stamp = ++m->stamp;
    return victim;
}

int64_t l3c_gmatch_mask(l3c_gmatch *m, uint32_t *bits, int32_t n_bits) {
    int32_t words = (n_bits + 31) / 32;
    int slot = cached_mask(m);
    if (slot < 0) {
        report(m);
        return -1;
    }
    const mcache *c = &m->cache[slot];
    int32_t cw = L3C_MIN(words, m->cache_words);
    memcpy(bits, c->bits, (size_t)cw * sizeof *bits);
    if (words > cw) memset(bits + cw, 0, (size_t)(words - cw) * sizeof *bits);
    if (n_bits < m->g->v->n_vocab && (n_bits & 31)) bits[words - 1] &= (1u << (n_bits & 31)) - 1;
    return c->count;
}

/* ---------------------------------------------------------------- compiled grammars */

void l3c_gvocab_release(l3c_gvocab *g) {
    if (!g || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    free(g->kind);
    free(g->bytes);
    free(g->off);
    free(g->trie);
    free(g->tok_next);
    free(g->eog);
    free(g->sum);
    free(g->order);
    free(g);
}

void l3c_grammar_free(l3c_grammar *g) {
    if (!g) return;
    l3c_gram_rules_free(g->r);
    l3c_gvocab_release(g->v);
    free(g);
}

static int vs_eog(const l3c_vsrc *v, int32_t id) {
    return v->is_eog(v->ctx, id);
}

/* Bytes of token id into buf (cap bytes): count, -(needed), or 0 for a token that never matches. */
static int32_t vs_bytes(const l3c_vsrc *v, int32_t id, char *buf, int32_t cap) {
    return v->bytes(v->ctx, id, buf, cap);
}

/* 1 when the bytes decode as the matcher decodes them (a truncated last code point allowed). */
static int utf8_clean(const uint8_t *p, size_t len) {
    for (size_t k = 0; k < len;) {
        uint8_t b = p[k];
        uint32_t need, cp;
        if (b < 0x80) {
            k++;
            continue;
        }
        if ((b & 0xE0) == 0xC0)
            need = 1, cp = b & 0x1F;
        else if ((b & 0xF0) == 0xE0)
            need = 2, cp = b & 0x0F;
        else if ((b & 0xF8) == 0xF0)
            need = 3, cp = b & 0x07;
        else
            return 0;
        uint32_t n = need;
        for (k++; n && k < len; k++, n--) {
            if ((p[k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[k] & 0x3F);
        }
        uint32_t lo = cp << (6 * n), hi = lo | ((1u << (6 * n)) - 1);
        if (hi < UTF8_MIN[need + 1] || lo > 0x10FFFF) return 0;
    }
    return 1;
}

/* Lays the linked trie out in preorder (g->sum) with its summaries and the token order, then
 * drops the linked form. */
static l3c_status build_summaries(l3c_gvocab *g) {
    int32_t n_tok = 0;
    for (int32_t id = 0; id < g->n_vocab; id++)
        n_tok += g->kind[id] == TK_TEXT;
    g->sum = l3c_calloc(g->n_trie, sizeof *g->sum);
    g->order = l3c_malloc((size_t)(n_tok ? n_tok : 1) * sizeof *g->order);
    int32_t *stk = l3c_malloc((size_t)g->n_trie * sizeof *stk);
    int32_t *it = l3c_malloc((size_t)g->n_trie * sizeof *it);
    int32_t *nid = l3c_malloc((size_t)g->n_trie * sizeof *nid);
    if (!g->sum || !g->order || !stk || !it || !nid) {
        free(stk);
        free(it);
        free(nid);
        return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory for the vocabulary trie");
    }
    int32_t sp = 0, pos = 0, next = 0;
    stk[sp] = 0;
    it[sp++] = -2; /* -2: not entered yet */
    while (sp) {
        int32_t v = stk[sp - 1];
        if (it[sp - 1] == -2) { /* enter: a new preorder index, own tokens first */
            int32_t x = nid[sp - 1] = next++;
            tsum *su = &g->sum[x];
            su->byte = g->trie[v].byte;
            su->ts = pos;
            for (int32_t t = g->trie[v].tok; t >= 0; t = g->tok_next[t]) {
                g->order[pos++] = t;
                size_t len;
                const uint8_t *p = tok_bytes(g, t, &len);
                if (!utf8_clean(p, len)) su->unclean = 1;
            }
            su->own_end = pos;
            it[sp - 1] = g->trie[v].child;
        }
        int32_t c = it[sp - 1];
        if (c >= 0) {
            it[sp - 1] = g->trie[c].sibling;
            stk[sp] = c;
            it[sp++] = -2;
            continue;
        }
        tsum *su = &g->sum[nid[sp - 1]]; /* leave: close the ranges, fold into the parent */
        su->te = pos;
        su->end = next;
        sp--;
        if (sp) {
            tsum *pa = &g->sum[nid[sp - 1]];
            if (su->byte < 0x80)
                pa->asc[su->byte >> 6] |= 1ull << (su->byte & 63);
            else
                pa->hi = 1;
            pa->asc[0] |= su->asc[0];
            pa->asc[1] |= su->asc[1];
            pa->hi |= su->hi;
            pa->unclean |= su->unclean;
        }
    }
    free(stk);
    free(it);
    free(nid);
    free(g->trie);
    free(g->tok_next);
    g->trie = NULL;
    g->tok_next = NULL;
    return L3C_OK;
}

static l3c_status build_vocab(l3c_gvocab *g, const l3c_vsrc *vs) {
    int32_t n = vs->n;
    g->n_vocab = n;
    g->kind = l3c_malloc((size_t)(n ? n : 1));
    g->off = l3c_malloc(((size_t)n + 1) * sizeof *g->off);
    g->tok_next = l3c_malloc((size_t)(n ? n : 1) * sizeof *g->tok_next);
    g->eog = l3c_malloc((size_t)(n ? n : 1) * sizeof *g->eog);
    if (!g->kind || !g->off || !g->tok_next || !g->eog) goto oom;
    size_t total = 0, cap = (size_t)n * 8 + 64;
    g->bytes = l3c_malloc(cap);
    if (!g->bytes) goto oom;
    for (int32_t id = 0; id < n; id++) {
        g->off[id] = (uint32_t)total;
        g->tok_next[id] = -1;
        if (vs_eog(vs, id)) {
            g->kind[id] = TK_EOG;
            g->eog[g->n_eog++] = id;
            continue;
        }
        g->kind[id] = TK_NEVER;
        int32_t need = vs_bytes(vs, id, NULL, 0);
        if (need < 0) need = -need;
        if (need <= 0) continue;
        if (total + (size_t)need > cap) {
            while (total + (size_t)need > cap)
                cap *= 2;
            char *nb = l3c_realloc(g->bytes, cap);
            if (!nb) goto oom;
            g->bytes = nb;
        }
        int32_t got = vs_bytes(vs, id, g->bytes + total, need);
        if (got <= 0) continue;
        total += (size_t)got;
        g->kind[id] = TK_TEXT;
    }
    g->off[n] = (uint32_t)total;

    /* trie: nodes are appended as tokens are inserted; children are sibling lists */
    uint32_t cap_t = 1024;
    g->trie = l3c_malloc(cap_t * sizeof *g->trie);
    if (!g->trie) goto oom;
    g->trie[0] = (tnode){-1, -1, -1, 0};
    g->n_trie = 1;
    for (int32_t id = 0; id < n; id++) {
        if (g->kind[id] != TK_TEXT) continue;
        size_t len;
        const uint8_t *p = tok_bytes(g, id, &len);
        int32_t cur = 0;
        for (size_t k = 0; k < len; k++) {
            int32_t c = g->trie[cur].child;
            while (c >= 0 && g->trie[c].byte != p[k])
                c = g->trie[c].sibling;
            if (c < 0) {
                if (g->n_trie == cap_t) {
                    cap_t *= 2;
                    tnode *nt = l3c_realloc(g->trie, cap_t * sizeof *nt);
                    if (!nt) goto oom;
                    g->trie = nt;
                }
                c = (int32_t)g->n_trie++;
                g->trie[c] = (tnode){-1, g->trie[cur].child, -1, p[k]};
                g->trie[cur].child = c;
            }
            cur = c;
        }
        g->tok_next[id] = g->trie[cur].tok;
        g->trie[cur].tok = id;
    }
    return build_summaries(g);
oom:
    return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory for a %d-token vocabulary", (int)n);
}

l3c_status l3c_gvocab_build(const l3c_vsrc *vs, l3c_gvocab **out) {
    *out = NULL;
    l3c_gvocab *v = l3c_calloc(1, sizeof *v);
    if (!v) return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory");
    v->refs = 1;
    l3c_status st = build_vocab(v, vs);
    if (st != L3C_OK) {
        l3c_gvocab_release(v);
        return st;
    }
    *out = v;
    return L3C_OK;
}

void l3c_gvocab_ref(l3c_gvocab *v) {
    __atomic_add_fetch(&v->refs, 1, __ATOMIC_ACQ_REL);
}

l3c_status l3c_grammar_make(gram_rules *r, l3c_gvocab *v, l3c_grammar **out) {
    *out = NULL;
    l3c_grammar *g = l3c_calloc(1, sizeof *g);
    if (!g) {
        l3c_gram_rules_free(r);
        l3c_gvocab_release(v);
        return l3c_fail(L3C_ERR_NOMEM, "grammar: out of memory");
    }
    g->r = r;
    g->v = v;
    *out = g;
    return L3C_OK;
}

/* Explicit token strings (tests, fuzzing). */
typedef struct arrays {
    const char *const *toks;
    const size_t *lens;
    int32_t eog;
} arrays;

static int arr_eog(const void *ctx, int32_t id) {
    return id == ((const arrays *)ctx)->eog;
}

static int32_t arr_bytes(const void *ctx, int32_t id, char *buf, int32_t cap) {
    const arrays *a = ctx;
    if (a->lens[id] > (size_t)cap) return -(int32_t)a->lens[id];
    memcpy(buf, a->toks[id], a->lens[id]);
    return (int32_t)a->lens[id];
}

l3c_status l3c_grammar_from_rules_vocab(gram_rules *r, const char *const *tokens,
                                        const size_t *lens, int32_t n, int32_t eog,
                                        l3c_grammar **out) {
    *out = NULL;
    arrays a = {tokens, lens, eog};
    l3c_vsrc vs = {.ctx = &a, .n = n, .is_eog = arr_eog, .bytes = arr_bytes};
    l3c_gvocab *v = NULL;
    l3c_status st = l3c_gvocab_build(&vs, &v);
    if (st != L3C_OK) {
        l3c_gram_rules_free(r);
        return st;
    }
    return l3c_grammar_make(r, v, out);
}
