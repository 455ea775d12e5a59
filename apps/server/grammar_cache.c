/*
 * grammar_cache.c -- see grammar_cache.h.
 *
 * Invariants (under c->mu): the cache's entries are those with in_cache set, at most c->cap of
 * them; an entry's refs counts its users plus one while in_cache; it is freed when refs drops to
 * 0. Compilation runs outside the lock (two threads compiling the same schema at once both
 * compile; the second keeps the first's entry and frees its own).
 */
#include "grammar_cache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct gcache_entry {
    gcache *owner;
    gcache_kind kind;
    char *key;
    size_t key_len;
    l3c_grammar *g;
    int refs;
    int in_cache;
    uint64_t last_used;
    gcache_entry *next; /* in the cache's list */
};

struct gcache {
    const l3c_tokenizer *tok;
    pthread_mutex_t mu;
    int cap, n;
    uint64_t clock;
    gcache_entry *head;
};

gcache *gcache_create(const l3c_tokenizer *tok, int cap) {
    gcache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->tok = tok;
    c->cap = cap > 0 ? cap : 1;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void entry_free(gcache_entry *e) {
    l3c_grammar_free(e->g);
    free(e->key);
    free(e);
}

void gcache_free(gcache *c) {
    if (!c) return;
    for (gcache_entry *e = c->head, *nx; e; e = nx) {
        nx = e->next;
        entry_free(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* mu held */
static gcache_entry *find(gcache *c, gcache_kind kind, const char *key, size_t len) {
    for (gcache_entry *e = c->head; e; e = e->next)
        if (e->kind == kind && e->key_len == len && !memcmp(e->key, key, len)) return e;
    return NULL;
}

/* mu held: drops the least recently used entry from the list. */
static void evict_one(gcache *c) {
    gcache_entry **victim = NULL;
    for (gcache_entry **p = &c->head; *p; p = &(*p)->next)
        if (!victim || (*p)->last_used < (*victim)->last_used) victim = p;
    if (!victim) return;
    gcache_entry *e = *victim;
    *victim = e->next;
    e->in_cache = 0;
    c->n--;
    if (--e->refs == 0) entry_free(e);
}

gcache_entry *gcache_get(gcache *c, gcache_kind kind, const char *schema, size_t len,
                         l3c_status *st) {
    *st = L3C_OK;
    pthread_mutex_lock(&c->mu);
    gcache_entry *e = find(c, kind, schema, len);
    if (e) {
        e->refs++;
        e->last_used = ++c->clock;
    }
    pthread_mutex_unlock(&c->mu);
    if (e) return e;

    l3c_grammar *g = NULL;
    *st = kind == GCACHE_GBNF ? l3c_grammar_from_gbnf(c->tok, schema, len, NULL, &g)
                              : l3c_grammar_from_json_schema(c->tok, schema, len, &g);
    if (*st != L3C_OK) return NULL;
    e = calloc(1, sizeof *e);
    char *key = malloc(len + 1);
    if (!e || !key) {
        free(e);
        free(key);
        l3c_grammar_free(g);
        *st = L3C_ERR_NOMEM;
        return NULL;
    }
    memcpy(key, schema, len);
    key[len] = 0;
    *e = (gcache_entry){
        .owner = c, .kind = kind, .key = key, .key_len = len, .g = g, .refs = 2, .in_cache = 1};

    pthread_mutex_lock(&c->mu);
    gcache_entry *other = find(c, kind, schema, len);
    if (other) { /* compiled meanwhile by another request */
        other->refs++;
        other->last_used = ++c->clock;
        pthread_mutex_unlock(&c->mu);
        entry_free(e);
        return other;
    }
    while (c->n >= c->cap)
        evict_one(c);
    e->last_used = ++c->clock;
    e->next = c->head;
    c->head = e;
    c->n++;
    pthread_mutex_unlock(&c->mu);
    return e;
}

const l3c_grammar *gcache_grammar(const gcache_entry *e) {
    return e->g;
}

void gcache_ref(gcache_entry *e) {
    pthread_mutex_lock(&e->owner->mu);
    e->refs++;
    pthread_mutex_unlock(&e->owner->mu);
}

void gcache_unref(gcache_entry *e) {
    if (!e) return;
    gcache *c = e->owner;
    pthread_mutex_lock(&c->mu);
    int gone = --e->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (gone) entry_free(e);
}
