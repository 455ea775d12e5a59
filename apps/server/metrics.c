/*
 * metrics.c -- request, token and latency counters for GET /metrics (Prometheus text format).
 * Invariants: every table has a fixed size; status codes outside the known list count as
 * "other"; all state is guarded by one mutex.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned k_status[] = {0, 200, 400, 401, 404, 405, 408, 413, 415, 429, 500, 503};
#define N_STATUS (sizeof k_status / sizeof k_status[0])
#define ST_OTHER N_STATUS
static const double k_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define N_BUCKETS (sizeof k_buckets / sizeof k_buckets[0])

static struct {
    pthread_mutex_t mu;
    unsigned long long requests[EP_COUNT][N_STATUS + 1];
    unsigned long long lat_bucket[EP_COUNT][N_BUCKETS];
    unsigned long long lat_count[EP_COUNT];
    double lat_sum[EP_COUNT];
    unsigned long long prompt_tokens, completion_tokens;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const char *k_ep_label[EP_COUNT] = {"/v1/chat/completions", "/v1/completions", "/v1/models",
                                           "/health", "/metrics", "/", "/v1/embeddings",
                                           "/v1/rag/query", "/apply-template", "other"};

const char *metrics_endpoint_label(metrics_endpoint e) {
    return e < EP_COUNT ? k_ep_label[e] : "other";
}

void metrics_init(void) {
    pthread_mutex_lock(&M.mu);
    memset(M.requests, 0, sizeof M.requests);
    memset(M.lat_bucket, 0, sizeof M.lat_bucket);
    memset(M.lat_count, 0, sizeof M.lat_count);
    memset(M.lat_sum, 0, sizeof M.lat_sum);
    M.prompt_tokens = M.completion_tokens = 0;
    pthread_mutex_unlock(&M.mu);
}

void metrics_record_request(metrics_endpoint e, unsigned status, double seconds) {
    if (e >= EP_COUNT) e = EP_OTHER;
    size_t si = ST_OTHER;
    for (size_t i = 0; i < N_STATUS; i++)
        if (k_status[i] == status) si = i;
    pthread_mutex_lock(&M.mu);
    M.requests[e][si]++;
    M.lat_count[e]++;
    M.lat_sum[e] += seconds;
    for (size_t b = 0; b < N_BUCKETS; b++)
        if (seconds <= k_buckets[b]) M.lat_bucket[e][b]++;
    pthread_mutex_unlock(&M.mu);
}

void metrics_record_tokens(long prompt_tokens, long completion_tokens) {
    pthread_mutex_lock(&M.mu);
    if (prompt_tokens > 0) M.prompt_tokens += (unsigned long long)prompt_tokens;
    if (completion_tokens > 0) M.completion_tokens += (unsigned long long)completion_tokens;
    pthread_mutex_unlock(&M.mu);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
}

char *metrics_render(sched *s, size_t *len) {
    sbuf b = {malloc(8192), 0, 8192, 0};
    if (!b.p) return NULL;
    sched_stats st;
    sched_get_stats(s, &st);
    pthread_mutex_lock(&M.mu);
    sb_printf(&b, "# HELP llama3c_requests_total HTTP requests by endpoint and status "
                  "(status 0: the client went away).\n# TYPE llama3c_requests_total counter\n");
    for (int e = 0; e < EP_COUNT; e++)
        for (size_t i = 0; i <= N_STATUS; i++) {
            if (!M.requests[e][i]) continue;
            if (i == ST_OTHER)
                sb_printf(&b, "llama3c_requests_total{endpoint=\"%s\",status=\"other\"} %llu\n",
                          k_ep_label[e], M.requests[e][i]);
            else
                sb_printf(&b, "llama3c_requests_total{endpoint=\"%s\",status=\"%u\"} %llu\n",
                          k_ep_label[e], k_status[i], M.requests[e][i]);
        }
    sb_printf(&b, "# HELP llama3c_request_duration_seconds Request latency (receipt of the request "
                  "to the last byte handed to the socket).\n"
                  "# TYPE llama3c_request_duration_seconds histogram\n");
    for (int e = 0; e < EP_COUNT; e++) {
        if (!M.lat_count[e]) continue;
        for (size_t k = 0; k < N_BUCKETS; k++)
            sb_printf(&b, "llama3c_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
                      k_ep_label[e], k_buckets[k], M.lat_bucket[e][k]);
        sb_printf(&b, "llama3c_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n",
                  k_ep_label[e], M.lat_count[e]);
        sb_printf(&b, "llama3c_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n", k_ep_label[e],
                  M.lat_sum[e]);
        sb_printf(&b, "llama3c_request_duration_seconds_count{endpoint=\"%s\"} %llu\n", k_ep_label[e],
                  M.lat_count[e]);
    }
    sb_printf(&b, "# HELP llama3c_prompt_tokens_total Prompt tokens of finished requests.\n"
                  "# TYPE llama3c_prompt_tokens_total counter\nllama3c_prompt_tokens_total %llu\n",
              M.prompt_tokens);
    sb_printf(&b, "# HELP llama3c_completion_tokens_total Generated tokens of finished requests.\n"
                  "# TYPE llama3c_completion_tokens_total counter\n"
                  "llama3c_completion_tokens_total %llu\n", M.completion_tokens);
    pthread_mutex_unlock(&M.mu);
    sb_printf(&b, "# HELP llama3c_queue_depth Requests waiting for a slot.\n"
                  "# TYPE llama3c_queue_depth gauge\nllama3c_queue_depth %d\n", st.queue_len);
    sb_printf(&b, "# HELP llama3c_queue_capacity Most requests that may wait.\n"
                  "# TYPE llama3c_queue_capacity gauge\nllama3c_queue_capacity %d\n", st.queue_cap);
    sb_printf(&b, "# HELP llama3c_slots_busy Slots generating or evaluating a prompt.\n"
                  "# TYPE llama3c_slots_busy gauge\nllama3c_slots_busy %d\n", st.slots_busy);
    sb_printf(&b, "# HELP llama3c_slots_total Slots (parallel sequences).\n"
                  "# TYPE llama3c_slots_total gauge\nllama3c_slots_total %d\n", st.n_slots);
    sb_printf(&b, "# HELP llama3c_decode_steps_total Batched decode calls.\n"
                  "# TYPE llama3c_decode_steps_total counter\nllama3c_decode_steps_total %llu\n",
              (unsigned long long)st.steps);
    sb_printf(&b, "# HELP llama3c_batch_tokens_total Tokens evaluated in all decode calls.\n"
                  "# TYPE llama3c_batch_tokens_total counter\nllama3c_batch_tokens_total %llu\n",
              (unsigned long long)st.batch_tokens);
    sb_printf(&b, "# HELP llama3c_prompt_tokens_evaluated_total Prompt tokens evaluated.\n"
                  "# TYPE llama3c_prompt_tokens_evaluated_total counter\n"
                  "llama3c_prompt_tokens_evaluated_total %llu\n",
              (unsigned long long)st.prompt_tokens_evaluated);
    sb_printf(&b, "# HELP llama3c_prompt_tokens_cached_total Prompt tokens reused from a slot's "
                  "KV cache (prefix cache hits).\n# TYPE llama3c_prompt_tokens_cached_total counter\n"
                  "llama3c_prompt_tokens_cached_total %llu\n",
              (unsigned long long)st.prompt_tokens_reused);
    sb_printf(&b,
              "# HELP llama3c_prompt_tokens_copied_total Of the cached prompt tokens: copied "
              "from another slot's KV cache.\n# TYPE llama3c_prompt_tokens_copied_total counter\n"
              "llama3c_prompt_tokens_copied_total %llu\n",
              (unsigned long long)st.prefix_copied_tokens);
    sb_printf(&b,
              "# HELP llama3c_prompt_tokens_restored_total Of the cached prompt tokens: restored "
              "from the prompt cache (--cache-ram).\n# TYPE llama3c_prompt_tokens_restored_total "
              "counter\nllama3c_prompt_tokens_restored_total %llu\n",
              (unsigned long long)st.cache_restored_tokens);
    sb_printf(&b,
              "# HELP llama3c_prompt_cache_entries Prefixes held by the prompt cache.\n"
              "# TYPE llama3c_prompt_cache_entries gauge\nllama3c_prompt_cache_entries %d\n",
              st.cache_entries);
    sb_printf(&b,
              "# HELP llama3c_prompt_cache_bytes KV bytes held by the prompt cache.\n"
              "# TYPE llama3c_prompt_cache_bytes gauge\nllama3c_prompt_cache_bytes %zu\n",
              st.cache_bytes);
    sb_printf(&b, "# HELP llama3c_generated_tokens_total Tokens sampled.\n"
                  "# TYPE llama3c_generated_tokens_total counter\n"
                  "llama3c_generated_tokens_total %llu\n", (unsigned long long)st.gen_tokens);
    sb_printf(&b, "# HELP llama3c_draft_tokens_total Prompt-lookup draft tokens decoded (--lookup).\n"
                  "# TYPE llama3c_draft_tokens_total counter\nllama3c_draft_tokens_total %llu\n"
                  "# HELP llama3c_draft_tokens_accepted_total Draft tokens the sampler then produced.\n"
                  "# TYPE llama3c_draft_tokens_accepted_total counter\n"
                  "llama3c_draft_tokens_accepted_total %llu\n",
              (unsigned long long)st.spec_drafted, (unsigned long long)st.spec_accepted);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
