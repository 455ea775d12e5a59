/*
 * scheduler.h -- continuous-batching scheduler of `llama3c serve`.
 *
 * One scheduler owns one l3c_context with n_seq sequences; each sequence is a slot with its own
 * KV cache. A single engine thread runs the loop: every step builds ONE l3c_batch with the next
 * token of every generating slot plus prompt chunks of slots still prefilling (capped by a
 * per-step token budget), calls l3c_decode once, samples each slot with its own sampler and
 * appends the new text to the slot's job, where the HTTP side picks it up.
 *
 * Jobs: created by an HTTP thread (which tokenizes the prompt), submitted into a bounded FIFO
 * queue, assigned to the free slot whose cached tokens share the longest prefix with the prompt
 * (prefix cache; a longer prefix held by another slot is copied, one in the prompt cache in
 * host memory restored: prompt_cache.h), and reference-counted: the HTTP side and the scheduler
 * each hold a reference; sched_job_release drops the caller's (a slot holding one input of an
 * embedding job holds one more). All job fields the two sides share are guarded by the scheduler
 * mutex; everything else in a slot belongs to the engine thread alone.
 */
#ifndef L3C_SERVER_SCHEDULER_H
#define L3C_SERVER_SCHEDULER_H

#include "llama3c.h"

#include <stddef.h>
#include <stdint.h>

#define SCHED_MAX_STOP 4
#define SCHED_MAX_TOP_LOGPROBS 20

typedef struct sched sched;
typedef struct sched_job sched_job;

typedef enum sched_finish {
    SCHED_RUNNING = 0,
    SCHED_FINISH_STOP,     /* end-of-generation token or a stop string */
    SCHED_FINISH_LENGTH,   /* max_tokens or the slot's context is full */
    SCHED_FINISH_CANCELLED,/* the client went away or the server is shutting down */
    SCHED_FINISH_ERROR     /* the engine failed (message in the update) */
} sched_finish;

/* What a request asks of the generator; sched_job_new copies everything it points to. */
typedef struct sched_job_params {
    int32_t max_tokens;                /* >= 1; clamped to the context left in the slot */
    l3c_sampler_params sampler;
    int32_t n_bias;
    const int32_t *bias_ids;           /* [n_bias] */
    const float *bias_vals;            /* [n_bias] */
    int32_t n_stop;                    /* <= SCHED_MAX_STOP */
    const char *stop[SCHED_MAX_STOP];  /* non-empty strings (NUL-terminated) */
    /* structured output: the grammar the answer must follow (NULL: none; the job takes its own
     * reference). The job ends (SCHED_FINISH_STOP) when the grammar is complete. grammar_lazy:
     * enforced only from the first token that opens a JSON object ('{' after whitespace) or is
     * <|python_tag|> (which itself is not part of the grammar): tool_choice auto */
    struct gcache_entry *grammar;
    int grammar_lazy;
    int logprobs;                      /* 1: record a sched_logprob per generated token */
    int32_t top_logprobs;              /* alternatives per token, 0..SCHED_MAX_TOP_LOGPROBS */
    int echo_logprobs;                 /* 1: the prompt's tokens too (no prefix cache: all evaluated) */
} sched_job_params;

/*
 * One token's log-probability: log-softmax of the model's raw logits at the position before it
 * (before temperature, penalties, logit_bias or truncation: what the model assigns), and the
 * top_logprobs most probable tokens there (ties: lower id first). A job with echo_logprobs gets
 * its prompt tokens first (the first with logprob NaN: nothing predicts it), then the generated
 * ones; end-of-generation tokens are not recorded (they are not part of the text).
 */
typedef struct sched_logprob {
    int32_t id, prev;      /* the token, and the one before it (-1: none), for its text piece */
    int prompt;            /* 1: a prompt token (echo) */
    float logprob;
    int32_t n_top;
    int32_t top_id[SCHED_MAX_TOP_LOGPROBS];
    float top_lp[SCHED_MAX_TOP_LOGPROBS];
} sched_logprob;

/* Moves the records made since the last call into *out (malloc'd, the caller frees it; NULL when
 * none). Returns their number. */
int32_t sched_job_take_logprobs(struct sched *s, struct sched_job *job, sched_logprob **out);

typedef struct sched_options {
    int32_t n_slots;     /* == n_seq of the context */
    int32_t step_tokens; /* per-step token budget (<= the context's n_batch) */
    int32_t queue_cap;   /* waiting jobs beyond the slots; more -> SCHED_ERR_FULL */
    int32_t lookup; /* > 0: prompt-lookup drafts of up to this many tokens (<= SCHED_LOOKUP_MAX)
                     * for a slot generating alone (scheduler.c, build_batch) */
    size_t cache_bytes;  /* prompt cache in host memory (prompt_cache.h); 0: none */
    /* A draft model's context (the target's vocabulary, n_slots sequences of >= the target's
     * positions, n_batch >= step_tokens), borrowed: drafts of up to draft_max tokens
     * (<= SCHED_LOOKUP_MAX) for a slot generating alone; NULL: none (excludes lookup) */
    l3c_context *draft;
    int32_t draft_max, draft_min; /* a draft shorter than draft_min is not verified */
    float draft_p_min; /* a draft stops where the draft's top probability is below this */
} sched_options;
#define SCHED_LOOKUP_MAX 16

typedef enum sched_submit_result {
    SCHED_OK = 0,
    SCHED_ERR_FULL = 1,     /* queue full: HTTP 429 */
    SCHED_ERR_STOPPING = 2, /* shutting down: HTTP 503 */
    SCHED_ERR_TOO_LONG = 3, /* prompt does not fit a slot's context: HTTP 400 */
    SCHED_ERR_NOMEM = 4
} sched_submit_result;

/* A snapshot taken by sched_job_wait. text is appended into the caller's buffer. */
typedef struct sched_update {
    sched_finish finish;   /* SCHED_RUNNING until the job is over */
    int32_t n_prompt;      /* prompt tokens */
    int32_t n_cached;      /* of which were already in the slot's KV cache (prefix reuse) */
    int32_t n_gen;         /* completion tokens so far */
    char error[160];       /* for SCHED_FINISH_ERROR */
} sched_update;

/*
 * Embedding jobs. One job holds the n_inputs inputs of a request, concatenated in tokens
 * (ownership taken; NULL on allocation failure, tokens freed), input i being
 * tokens[off[i] .. off[i+1]) with 1 <= length <= the slot context (off is copied). The
 * scheduler gives each input its own free slot (cleared first: the context pools a sequence
 * over all its positions), so the inputs of one request and of concurrent requests are
 * evaluated in the same batches, beside the generating slots' tokens. The job finishes
 * (SCHED_FINISH_STOP) when every input is pooled; n_prompt counts all their tokens.
 * Requires a context created with embeddings = 1 and a pooling other than NONE.
 */
sched_job *sched_embd_job_new(int32_t *tokens, const int32_t *off, int32_t n_inputs);
/* After SCHED_FINISH_STOP: n_inputs x n_embd floats, input by input (raw, not normalized);
 * owned by the job. NULL for other jobs or before the end. */
const float *sched_job_embeddings(sched *s, sched_job *job);

/* Caller keeps ownership of model and ctx; they must outlive the scheduler. */
sched *sched_create(const l3c_model *model, l3c_context *ctx, const sched_options *opt);
int sched_start(sched *s);                 /* starts the engine thread; 0 on success */
/* Stops accepting, cancels queued and running jobs (their waiters see CANCELLED) and joins the
 * engine thread. Idempotent. */
void sched_stop(sched *s);
void sched_free(sched *s);                 /* after sched_stop; NULL-safe */

/* Takes ownership of prompt (malloc'd, n_prompt >= 1). NULL on allocation failure (prompt freed).
 * The returned job holds one reference for the caller. */
sched_job *sched_job_new(int32_t *prompt, int32_t n_prompt, const sched_job_params *p);
sched_submit_result sched_submit(sched *s, sched_job *job);
/*
 * Waits up to timeout_ms for new text or the end of the job; moves the new text into
 * (*buf, *len, *cap) (grown with realloc; on allocation failure the job is cancelled) and fills
 * *u. Returns 1 if anything changed (text or finish), 0 on timeout.
 */
int sched_job_wait(sched *s, sched_job *job, int timeout_ms, char **buf, size_t *len, size_t *cap,
                   sched_update *u);
void sched_job_cancel(sched *s, sched_job *job);
void sched_job_release(sched *s, sched_job *job); /* NULL-safe */

typedef struct sched_stats {
    int32_t n_slots, slots_busy, queue_len, queue_cap;
    uint64_t steps, batch_tokens, prompt_tokens_evaluated, prompt_tokens_reused, gen_tokens;
    uint64_t spec_drafted, spec_accepted; /* --lookup / --draft: draft tokens decoded, of them
                                           * accepted */
    /* of prompt_tokens_reused: copied from another slot, restored from the prompt cache */
    uint64_t prefix_copied_tokens, cache_restored_tokens, cache_restores;
    int32_t cache_entries;
    size_t cache_bytes;
} sched_stats;
void sched_get_stats(sched *s, sched_stats *st);
int32_t sched_n_ctx(const sched *s);

#endif
