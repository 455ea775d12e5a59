/*
 * prompt_cache.h -- the server's prompt cache in host memory (as llama-server's --cache-ram):
 * the KV state of what a slot held (prompt and answer) is saved when a new request is about to
 * overwrite it, and restored into a slot when a later request starts with the same tokens, so
 * those tokens are not evaluated again (repeated prompts, a shared system prompt, the next turn
 * of a chat whose slot has been reused meanwhile).
 *
 * Entries: a token sequence and l3c_kv_seq_state_get's bytes for it, at most max_bytes in all;
 * the least recently used go first. An entry whose tokens are a prefix of a new one, or that
 * holds another answer to the same prompt, is replaced by it; a sequence that is a prefix of an
 * entry is not stored again. Used by the scheduler's
 * engine thread only: no locking here.
 */
#ifndef L3C_SERVER_PROMPT_CACHE_H
#define L3C_SERVER_PROMPT_CACHE_H

#include "llama3c.h"

#include <stddef.h>
#include <stdint.h>

/* shorter sequences are not worth an entry */
#define PCACHE_MIN_TOKENS 4

typedef struct pcache pcache;

typedef struct pcache_stats {
    int32_t entries;
    size_t bytes; /* state bytes held (<= max_bytes) */
    uint64_t saves, restores, evictions;
} pcache_stats;

pcache *pcache_create(size_t max_bytes); /* NULL when out of memory */
void pcache_free(pcache *c);             /* NULL-safe */

/* The entry sharing the longest prefix with toks[0 .. n): its index (-1: none shares a token)
 * and that prefix's length in *lcp (0 when none). */
int32_t pcache_find(const pcache *c, const int32_t *toks, int32_t n, int32_t *lcp);

/* Saves the first n positions of sequence seq of ctx, whose tokens are toks[0 .. n) (a prompt
 * of n_same tokens and its answer). Entries that share n_same tokens with it (another answer to
 * the same prompt) or that it extends are replaced. Returns 1 when stored, 0 when not needed
 * (too short, already held by an entry, larger than the whole budget) and -1 when it failed
 * (no memory, the context refused: a led context). */
int pcache_save(pcache *c, l3c_context *ctx, int32_t seq, const int32_t *toks, int32_t n,
                int32_t n_same);

/* Makes sequence seq hold the first n (1 <= n <= the entry's length) positions of entry i and
 * copies their tokens to toks_out[0 .. n). 0, or -1 when the context refused (seq unchanged or
 * cleared). */
int pcache_restore(pcache *c, int32_t i, l3c_context *ctx, int32_t seq, int32_t n,
                   int32_t *toks_out);

void pcache_get_stats(const pcache *c, pcache_stats *st);

#endif
