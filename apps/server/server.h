/*
 * server.h -- state shared by the parts of `llama3c serve`: the options, the loaded model and
 * the scheduler. One `server` exists per process; it is filled by server.c before the HTTP
 * daemon starts and is read-only afterwards (the scheduler has its own locking).
 */
#ifndef L3C_SERVER_SERVER_H
#define L3C_SERVER_SERVER_H

#include "llama3c.h"
#include "scheduler.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct rag_pool;
struct gcache;

#define SERVER_MAX_ALIASES 8
#define SERVER_MAX_CORS    16
struct accounts;

typedef struct server {
    /* options */
    const char *model_path;
    const char *host;
    int port;
    int parallel;         /* slots */
    int ctx_per_slot;     /* 0: min(model context, 2048) */
    int queue;            /* waiting requests beyond the slots */
    int step_tokens;      /* per-step token budget of the scheduler */
    int lookup;           /* --lookup N: prompt-lookup drafts for a slot generating alone */
    const char *draft_path;   /* --draft FILE: a draft model for a slot generating alone */
    int draft_max, draft_min; /* --draft-max (default 8), --draft-min (default 0) */
    float draft_p_min;        /* --draft-p-min (default 0) */
    int cache_mib;        /* --cache-ram: prompt cache budget in MiB (0: off) */
    const char *api_key;  /* NULL: no authentication */
    const char *api_keys_path; /* --api-keys FILE: named keys with limits (accounts.h) */
    size_t max_body;      /* bytes */
    unsigned timeout_s;   /* idle timeout of a connection */
    int threads;
    int max_connections;
    int verbose;
    int bf16;     /* --bf16: l3c_model_params.bf16_matmul */
    int pooling;  /* --pooling: l3c_pooling of /v1/embeddings (MEAN, CLS or LAST) */
    int kv_type;  /* --kv: L3C_KV_F16 (default), L3C_KV_F32, L3C_KV_Q8_0 */
    const char *rag_db;   /* --rag-db: index for /v1/rag/query and chat "rag" (NULL: off) */
    /* --alias NAME (repeatable): names the model is served under; the first is the one replies
     * carry ("model"), all are listed by /v1/models. None: the file name without .gguf. */
    const char *aliases[SERVER_MAX_ALIASES];
    int n_aliases;
    int strict_model; /* --strict-model: a request naming another model gets 404 */
    /* --cors ORIGIN (repeatable; "*": any): origins whose pages may call the API */
    const char *cors[SERVER_MAX_CORS];
    int n_cors;

    /* engine, set up before the HTTP daemon starts */
    l3c_model *model;
    l3c_context *ctx;
    l3c_model *dmodel; /* --draft: the draft model, and its context of --parallel sequences */
    l3c_context *dctx;
    const l3c_tokenizer *tok;
    sched *sched;
    l3c_chat_template tmpl;
    int32_t n_ctx, n_vocab;
    char model_id[256];
    long long started_at; /* unix time */
    struct rag_pool *rag; /* --rag-db: connections (opened and checked against the model at
                           * start) for concurrent searches; NULL: no --rag-db */
    struct gcache *grammars;  /* compiled response_format / tools grammars, by schema text */
    struct accounts *accounts; /* --api-keys; NULL: none (then api_key, if set, is the one key) */
} server;

#endif
