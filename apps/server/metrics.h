/*
 * metrics.h -- Prometheus counters of `llama3c serve` (GET /metrics).
 * Fixed-size tables only (endpoints and status codes map to a small set of labels), so memory
 * stays bounded whatever clients send. All functions are thread-safe.
 */
#ifndef L3C_SERVER_METRICS_H
#define L3C_SERVER_METRICS_H

#include "scheduler.h"

#include <stddef.h>

typedef enum metrics_endpoint {
    EP_CHAT = 0, EP_COMPLETIONS, EP_MODELS, EP_HEALTH, EP_METRICS, EP_WEB, EP_EMBEDDINGS, EP_RAG,
    EP_APPLY_TEMPLATE, EP_OTHER, EP_COUNT
} metrics_endpoint;

const char *metrics_endpoint_label(metrics_endpoint e);
void metrics_init(void);
/* One finished request: its endpoint, HTTP status (0: connection dropped) and latency. */
void metrics_record_request(metrics_endpoint e, unsigned status, double seconds);
void metrics_record_tokens(long prompt_tokens, long completion_tokens);
/* Prometheus text exposition; caller frees. NULL on allocation failure. */
char *metrics_render(sched *s, size_t *len);

#endif
