/*
 * grammar_cache.h -- compiled JSON-schema grammars of `llama3c serve`, shared by requests.
 *
 * A request that asks for structured output (response_format, tools) compiles its JSON schema
 * into an l3c_grammar (a trie walk over the whole vocabulary: worth keeping). The cache maps the
 * schema text to the compiled grammar, keeps at most `cap` of them (least recently used goes
 * first) and reference-counts each entry: a request (its scheduler job) holds a reference for as
 * long as its slot samples with the grammar, so an entry dropped from the cache lives on until
 * its last user is done. Thread-safe: connection threads look up and compile, the engine thread
 * samples (an l3c_grammar is immutable and may be shared) and releases.
 */
#ifndef L3C_SERVER_GRAMMAR_CACHE_H
#define L3C_SERVER_GRAMMAR_CACHE_H

#include "llama3c.h"

#include <stddef.h>

typedef struct gcache gcache;
typedef struct gcache_entry gcache_entry;

/* tok must outlive the cache. NULL when out of memory. */
gcache *gcache_create(const l3c_tokenizer *tok, int cap);
/* After every entry handed out was released (the scheduler is stopped and freed). NULL-safe. */
void gcache_free(gcache *c);

typedef enum gcache_kind { GCACHE_JSON_SCHEMA = 0, GCACHE_GBNF } gcache_kind;

/* The grammar of a JSON schema or of GBNF text (len bytes; root rule "root"), compiled on a
 * miss, with one reference for the caller; NULL on failure with the library's status in *st
 * (its message in l3c_last_error()). */
gcache_entry *gcache_get(gcache *c, gcache_kind kind, const char *text, size_t len, l3c_status *st);
const l3c_grammar *gcache_grammar(const gcache_entry *e);
void gcache_ref(gcache_entry *e);
void gcache_unref(gcache_entry *e); /* NULL-safe */

#endif
