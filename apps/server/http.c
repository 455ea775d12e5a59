/*
 * http.c -- libmicrohttpd glue of `llama3c serve`: routes, auth, limits, responses, streaming.
 *
 * Threading: MHD runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION), so the access
 * handler and the SSE reader may block while the engine works; they wait on their job in slices
 * of WAIT_SLICE_MS and check between slices whether the client has hung up (poll POLLRDHUP on
 * the socket), so a vanished client frees its slot within a slice even before any byte is due.
 *
 * Invariants
 *  - Every request gets exactly one response or a closed connection; every response to a
 *    request that reached a handler is counted in the metrics by the completed callback.
 *  - A request body is held only up to srv->max_body bytes (413 beyond: announced lengths are
 *    refused before reading, chunked bodies when they pass the limit); the per-connection
 *    header memory is MHD's bounded pool. So memory per connection is bounded, and
 *    connections are limited to srv->max_connections.
 *  - The conn state (*con_cls) is owned by the connection's thread and freed in on_completed,
 *    which also drops the job reference (which cancels the job if still running).
 */
#include "http.h"

#include "accounts.h"
#include "metrics.h"
#include "openai.h"

#include "../rag/rag.h"

#include <jansson.h>

#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_SLICE_MS 100
#define SSE_BLOCK 4096

typedef enum stream_phase { PH_START = 0, PH_RUN, PH_DONE } stream_phase;

typedef struct conn {
    server *srv;
    struct MHD_Connection *mc;
    metrics_endpoint ep;
    struct timespec t0;
    unsigned status;       /* status of the queued response, 0 until then */
    int responded;         /* a response has been queued */
    int is_post;
    /* body */
    char *body;
    size_t len, cap;
    int too_large;
    /* generation */
    api_request req;
    api_embd_request ereq; /* embeddings */
    json_t *rag_sources;   /* chat with "rag": the sources, added to the non-streamed response */
    int rag_abstain; /* chat with "rag": confidence below min_score, answered without the model */
    sched_job *job;
    int tokens_recorded;
    /* streaming */
    stream_phase phase;
    char *sse;
    size_t sse_len, sse_off, sse_cap;
    char *text;
    size_t text_len, text_cap;
    /* logprobs: records taken from the job (blocking: all; stream: this chunk's) */
    sched_logprob *lp;
    int32_t n_lp;
    int echo_sent;         /* stream: completions' echo text went out with the first chunk */
    /* --api-keys */
    acct_usage *acct;      /* the request's account (usage and tokens/day); NULL: none */
    long retry_after;      /* seconds for a 429's Retry-After (0: 1) */
} conn;

/* ------------------------------------------------------------------ helpers */

static double since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* 1 when the peer has closed or reset the connection. */
static int client_gone(struct MHD_Connection *mc) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 1;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) < 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* Restarts the idle-timeout clock of a connection that was busy on our side (setting the
 * timeout from 0 to a value resets MHD's timer). */
static void touch(conn *c) {
    if (!c->srv->timeout_s) return;
    MHD_set_connection_option(c->mc, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_set_connection_option(c->mc, MHD_CONNECTION_OPTION_TIMEOUT, c->srv->timeout_s);
}

/* ------------------------------------------------------------------ CORS (--cors) */

/* The Access-Control-Allow-Origin value for this request: NULL (no CORS headers) unless the
 * request has an Origin that --cors allows; "*" when --cors * was given. */
static const char *cors_origin(conn *c) {
    const server *srv = c->srv;
    if (!srv->n_cors) return NULL;
    const char *o = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Origin");
    if (!o) return NULL;
    for (int i = 0; i < srv->n_cors; i++)
        if (!strcmp(srv->cors[i], "*")) return "*";
    for (int i = 0; i < srv->n_cors; i++)
        if (!strcmp(srv->cors[i], o)) return o;
    return NULL;
}

/* Adds the CORS headers of an allowed origin to any response (normal, error or stream). */
static void cors_headers(conn *c, struct MHD_Response *r) {
    const char *origin = cors_origin(c);
    if (c->srv->n_cors && strcmp(origin ? origin : "", "*"))
        MHD_add_response_header(r, "Vary", "Origin"); /* the answer depends on the Origin */
    if (origin) MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
}

/* The methods a known path takes. */
static const char *allowed_methods(metrics_endpoint ep) {
    return ep == EP_CHAT || ep == EP_COMPLETIONS || ep == EP_EMBEDDINGS || ep == EP_RAG ||
                   ep == EP_APPLY_TEMPLATE
               ? "POST, OPTIONS"
               : "GET, HEAD, OPTIONS";
}

static enum MHD_Result queue(conn *c, unsigned status, struct MHD_Response *r);

/* OPTIONS on a known path (a browser's CORS preflight, or a client asking): 204 with Allow, and
 * for an allowed origin the Access-Control-Allow-* headers (methods, the request headers asked
 * for, e.g. Authorization and Content-Type, cached 10 minutes). Needs no API key: a preflight
 * never carries one. */
static enum MHD_Result serve_options(conn *c) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    const char *methods = allowed_methods(c->ep);
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, methods);
    if (cors_origin(c)) {
        MHD_add_response_header(r, "Access-Control-Allow-Methods", methods);
        /* echo the asked-for headers when they are plain header names (a "*" would not cover
         * Authorization); else the two the API needs */
        const char *h =
            MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Access-Control-Request-Headers");
        int plain =
            h && *h && strlen(h) <= 1000 &&
            strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_, ") ==
                strlen(h);
        MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                plain ? h : "Authorization, Content-Type");
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    }
    return queue(c, 204, r);
}

static enum MHD_Result queue(conn *c, unsigned status, struct MHD_Response *r) {
    if (!r) return MHD_NO;
    cors_headers(c, r);
    enum MHD_Result ok = MHD_queue_response(c->mc, status, r);
    MHD_destroy_response(r);
    if (ok == MHD_YES) {
        c->status = status;
        c->responded = 1;
    }
    return ok;
}

/* Takes ownership of body (malloc'd). */
static enum MHD_Result respond(conn *c, unsigned status, const char *ctype, char *body, size_t len) {
    if (!body) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                                  "\"param\":null,\"code\":null}}";
        body = NULL;
        struct MHD_Response *r =
            MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        return queue(c, 500, r);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return queue(c, status, r);
}

static enum MHD_Result respond_json(conn *c, unsigned status, char *body, size_t len) {
    return respond(c, status, "application/json", body, len);
}

static enum MHD_Result respond_error(conn *c, const api_error *e) {
    size_t len = 0;
    char *body = api_error_json(e, &len);
    if (!body) return respond_json(c, 500, NULL, 0);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (e->status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (e->status == 405) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allowed_methods(c->ep));
    if (e->status == 413 || e->status == 503)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (e->status == 429 || e->status == 503) {
        char ra[24];
        snprintf(ra, sizeof ra, "%ld", c->retry_after > 0 ? c->retry_after : 1L);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    return queue(c, e->status, r);
}

static enum MHD_Result fail(conn *c, unsigned status, const char *type, const char *code,
                            const char *msg) {
    api_error e;
    api_fail(&e, status, type, NULL, code, "%s", msg);
    return respond_error(c, &e);
}

/* Constant-time comparison of the presented key with the configured one. */
static int key_matches(const char *given, const char *key) {
    size_t ng = strlen(given), nk = strlen(key);
    unsigned char d = ng != nk;
    for (size_t i = 0; i < nk; i++) d |= (unsigned char)((i < ng ? given[i] : 0) ^ key[i]);
    return d == 0;
}

static int authorized(conn *c) {
    if (!c->srv->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ') h++;
    return key_matches(h, c->srv->api_key);
}

/* --api-keys: the key's account, and its limits for a generation request. MHD_YES to go on with
 * c->acct set; otherwise the 401 / 429 is queued (the return value is queue's). */
static enum MHD_Result account_check(conn *c, int *ok) {
    const char *h = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *key = NULL;
    if (h && !strncasecmp(h, "Bearer ", 7))
        for (key = h + 7; *key == ' '; key++) {}
    int counts = c->ep == EP_CHAT || c->ep == EP_COMPLETIONS || c->ep == EP_EMBEDDINGS || c->ep == EP_RAG;
    const char *what = "";
    acct_result r = accounts_check(c->srv->accounts, key, counts, &c->acct, &c->retry_after, &what);
    *ok = r == ACCT_OK;
    if (r == ACCT_UNAUTHORIZED)
        return fail(c, 401, "invalid_request_error", "invalid_api_key",
                    "Incorrect API key provided (send it as 'Authorization: Bearer KEY')");
    if (r == ACCT_LIMITED) {
        char msg[160];
        snprintf(msg, sizeof msg, "rate limit reached for this API key (%s); retry after %ld s", what,
                 c->retry_after);
        return fail(c, 429, "rate_limit_error", "rate_limit_exceeded", msg);
    }
    return MHD_YES;
}

static metrics_endpoint route(const char *url) {
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions")) return EP_CHAT;
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/completions")) return EP_COMPLETIONS;
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models")) return EP_MODELS;
    if (!strcmp(url, "/v1/embeddings") || !strcmp(url, "/embeddings")) return EP_EMBEDDINGS;
    if (!strcmp(url, "/v1/rag/query")) return EP_RAG;
    if (!strcmp(url, "/apply-template")) return EP_APPLY_TEMPLATE;
    if (!strcmp(url, "/health") || !strcmp(url, "/v1/health")) return EP_HEALTH;
    if (!strcmp(url, "/metrics")) return EP_METRICS;
    web_asset a;
    if (web_asset_find(url, &a)) return EP_WEB;
    return EP_OTHER;
}

/* ------------------------------------------------------------------ GET endpoints */

static enum MHD_Result serve_get(conn *c) {
    server *srv = c->srv;
    size_t len = 0;
    switch (c->ep) {
    case EP_HEALTH: {
        sched_stats st;
        sched_get_stats(srv->sched, &st);
        char *b = malloc(160);
        if (!b) return respond_json(c, 500, NULL, 0);
        len = (size_t)snprintf(b, 160,
                               "{\"status\":\"ok\",\"slots_idle\":%d,\"slots_processing\":%d,"
                               "\"queue\":%d}",
                               st.n_slots - st.slots_busy, st.slots_busy, st.queue_len);
        return respond_json(c, 200, b, len);
    }
    case EP_METRICS: {
        char *b = metrics_render(srv->sched, &len);
        if (!b) return respond_json(c, 500, NULL, 0);
        if (srv->accounts) { /* usage per API key */
            size_t kl = 0;
            char *k = accounts_render(srv->accounts, &kl);
            char *both = k ? realloc(b, len + kl + 1) : NULL;
            if (!both) {
                free(k);
                free(b);
                return respond_json(c, 500, NULL, 0);
            }
            memcpy(both + len, k, kl + 1);
            free(k);
            b = both;
            len += kl;
        }
        return respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b, len);
    }
    case EP_MODELS: {
        char *b = api_models_json(srv, &len);
        return respond_json(c, 200, b, len);
    }
    default:
        return fail(c, 404, "invalid_request_error", NULL, "not found");
    }
}

/* GET /, /chat.js, /vendor/...: the web page's files. The policy lets the page run only the
 * server's own scripts (no inline script, so text that reached the page as HTML could not run)
 * and talk only to this server. */
static enum MHD_Result serve_web(conn *c, const char *url) {
    web_asset a;
    if (!web_asset_find(url, &a)) return fail(c, 404, "invalid_request_error", NULL, "not found");
    struct MHD_Response *r =
        MHD_create_response_from_buffer(a.len, (void *)a.data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a.content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, a.cache_control);
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
                            "connect-src 'self'; img-src data:; base-uri 'none'; "
                            "form-action 'none'; frame-ancestors 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    return queue(c, 200, r);
}

/* ------------------------------------------------------------------ generation */

static void record_tokens(conn *c, const sched_update *u) {
    if (c->tokens_recorded) return;
    c->tokens_recorded = 1;
    metrics_record_tokens(u->n_prompt, u->n_gen);
    if (c->acct) accounts_add_tokens(c->srv->accounts, c->acct, u->n_prompt, u->n_gen);
}

/* Appends *np bytes (taking ownership of p) to the pending SSE output. The length is passed by
 * pointer because it is written by the call that produces p in the same argument list. */
static int sse_add(conn *c, char *p, const size_t *np) {
    if (!p) return -1;
    size_t n = *np;
    if (n == 0) {
        free(p);
        return 0;
    }
    if (c->sse_len + n > c->sse_cap) {
        size_t cap = c->sse_cap ? c->sse_cap : 1024;
        while (cap < c->sse_len + n) cap *= 2;
        char *q = realloc(c->sse, cap);
        if (!q) {
            free(p);
            return -1;
        }
        c->sse = q;
        c->sse_cap = cap;
    }
    memcpy(c->sse + c->sse_len, p, n);
    c->sse_len += n;
    free(p);
    return 0;
}

static int sse_add_const(conn *c, const char *s) {
    size_t n = strlen(s);
    char *p = malloc(n);
    if (!p) return -1;
    memcpy(p, s, n);
    return sse_add(c, p, &n);
}

/* Appends the job's new logprob records to c->lp (the request asked for them); -1 out of memory. */
static int take_logprobs(conn *c) {
    if (!c->req.params.logprobs) return 0;
    sched_logprob *lp = NULL;
    int32_t n = sched_job_take_logprobs(c->srv->sched, c->job, &lp);
    if (!n) return 0;
    sched_logprob *q = realloc(c->lp, ((size_t)c->n_lp + (size_t)n) * sizeof *q);
    if (!q) {
        free(lp);
        return -1;
    }
    memcpy(q + c->n_lp, lp, (size_t)n * sizeof *lp);
    free(lp);
    c->lp = q;
    c->n_lp += n;
    return 0;
}

/* One content chunk of a stream with the new text and logprob records (completions' echo text
 * first, once); nothing when there is neither. -1 out of memory. */
static int stream_content(conn *c) {
    size_t n;
    c->n_lp = 0;
    if (take_logprobs(c)) return -1;
    const char *text = c->text;
    size_t len = c->text_len;
    char *joined = NULL;
    if (c->req.echo && !c->echo_sent && (len || c->n_lp)) {
        if (!(joined = malloc(c->req.echo_len + len + 1))) return -1;
        memcpy(joined, c->req.echo_text, c->req.echo_len);
        memcpy(joined + c->req.echo_len, c->text, len);
        text = joined;
        len += c->req.echo_len;
        c->echo_sent = 1;
    }
    int rc = 0;
    if (len || c->n_lp) {
        c->req.lp = c->lp;
        c->req.n_lp = c->n_lp;
        rc = sse_add(c, api_stream_text(&c->req, text, len, &n), &n); /* tools may hold it */
        api_logprobs_advance(&c->req);
        c->req.lp = NULL;
        c->req.n_lp = 0;
    }
    free(joined);
    return rc;
}

/* Produces the next SSE events of a stream: the role chunk, content chunks, and at the end the
 * finish chunk, the usage chunk (stream_options.include_usage) and "data: [DONE]". */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    conn *c = cls;
    server *srv = c->srv;
    size_t n;
    (void)pos;
    while (c->sse_off >= c->sse_len) {
        if (c->phase == PH_DONE) return MHD_CONTENT_READER_END_OF_STREAM;
        c->sse_len = c->sse_off = 0;
        if (c->phase == PH_START) {
            c->phase = PH_RUN;
            if (c->req.kind == API_CHAT &&
                sse_add(c, api_stream_chunk(&c->req, 1, "", 0, SCHED_RUNNING, &n), &n))
                goto oom;
            continue;
        }
        sched_update u;
        c->text_len = 0;
        sched_job_wait(srv->sched, c->job, WAIT_SLICE_MS, &c->text, &c->text_len, &c->text_cap, &u);
        if (stream_content(c)) goto oom;
        if (u.finish == SCHED_RUNNING) {
            if (!c->text_len && client_gone(c->mc)) {
                sched_job_cancel(srv->sched, c->job);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            continue;
        }
        record_tokens(c, &u);
        if (u.finish == SCHED_FINISH_ERROR || u.finish == SCHED_FINISH_CANCELLED) {
            api_error e;
            if (u.finish == SCHED_FINISH_ERROR)
                api_fail(&e, 500, "server_error", NULL, NULL, "%s", u.error);
            else
                api_fail(&e, 503, "server_error", NULL, "unavailable", "the server is shutting down");
            if (sse_add(c, api_stream_error(&e, &n), &n)) goto oom;
        } else {
            if (sse_add(c, api_stream_end(&c->req, u.finish, &n), &n)) goto oom;
            if (c->req.include_usage && sse_add(c, api_stream_usage(&c->req, &u, &n), &n)) goto oom;
        }
        if (sse_add_const(c, "data: [DONE]\n\n")) goto oom;
        c->phase = PH_DONE;
    }
    n = c->sse_len - c->sse_off;
    if (n > max) n = max;
    memcpy(buf, c->sse + c->sse_off, n);
    c->sse_off += n;
    touch(c);
    return (ssize_t)n;
oom:
    sched_job_cancel(srv->sched, c->job);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static enum MHD_Result start_stream(conn *c) {
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, stream_read, c, NULL);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return queue(c, 200, r);
}

/* Blocks until the job is over (or the client leaves), then sends the whole answer. */
static enum MHD_Result finish_blocking(conn *c) {
    server *srv = c->srv;
    sched_update u;
    for (;;) {
        sched_job_wait(srv->sched, c->job, WAIT_SLICE_MS, &c->text, &c->text_len, &c->text_cap, &u);
        if (u.finish != SCHED_RUNNING) break;
        if (client_gone(c->mc)) {
            sched_job_cancel(srv->sched, c->job);
            return MHD_NO;
        }
    }
    record_tokens(c, &u);
    if (u.finish == SCHED_FINISH_ERROR) return fail(c, 500, "server_error", NULL, u.error);
    if (u.finish == SCHED_FINISH_CANCELLED)
        return fail(c, 503, "server_error", "unavailable", "the server is shutting down");
    if (take_logprobs(c)) return fail(c, 500, "server_error", NULL, "out of memory");
    c->req.lp = c->lp;
    c->req.n_lp = c->n_lp;
    size_t len = 0;
    char *body = api_response_json(&c->req, c->text, c->text_len, &u, &len);
    if (body && c->rag_sources) { /* chat with "rag": the sources the prompt numbered [1]..[k] */
        json_t *root = json_loadb(body, len, 0, NULL);
        free(body);
        body = NULL;
        if (root && !json_object_set(root, "rag_sources", c->rag_sources))
            body = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        len = body ? strlen(body) : 0;
    }
    touch(c);
    return respond_json(c, 200, body, len);
}

static enum MHD_Result submit_failed(conn *c, sched_submit_result r);

/* POST /v1/embeddings: one scheduler job for all the inputs (one slot each, batched with the
 * other requests' work); blocks until they are pooled, then sends the vectors. */
static enum MHD_Result serve_embeddings(conn *c) {
    server *srv = c->srv;
    api_error e;
    if (api_parse_embeddings(srv, c->body, c->len, &c->ereq, &e)) return respond_error(c, &e);
    free(c->body);
    c->body = NULL;
    c->len = c->cap = 0;
    c->job = sched_embd_job_new(c->ereq.tokens, c->ereq.off, c->ereq.n_inputs);
    c->ereq.tokens = NULL; /* owned by the job now (or freed) */
    if (!c->job) return respond_json(c, 500, NULL, 0);
    sched_submit_result sr = sched_submit(srv->sched, c->job);
    if (sr != SCHED_OK) return submit_failed(c, sr);
    sched_update u;
    for (;;) {
        sched_job_wait(srv->sched, c->job, WAIT_SLICE_MS, &c->text, &c->text_len, &c->text_cap, &u);
        if (u.finish != SCHED_RUNNING) break;
        if (client_gone(c->mc)) {
            sched_job_cancel(srv->sched, c->job);
            return MHD_NO;
        }
    }
    record_tokens(c, &u);
    if (u.finish == SCHED_FINISH_ERROR) return fail(c, 500, "server_error", NULL, u.error);
    if (u.finish == SCHED_FINISH_CANCELLED)
        return fail(c, 503, "server_error", "unavailable", "the server is shutting down");
    const float *embd = sched_job_embeddings(srv->sched, c->job);
    if (!embd) return fail(c, 500, "server_error", NULL, "no embeddings");
    l3c_model_info info;
    l3c_model_get_info(srv->model, &info);
    size_t len = 0;
    char *body = api_embeddings_json(&c->ereq, embd, info.n_embd, &len);
    touch(c);
    return respond_json(c, 200, body, len);
}

static enum MHD_Result submit_failed(conn *c, sched_submit_result r) {
    switch (r) {
    case SCHED_ERR_FULL:
        return fail(c, 429, "rate_limit_error", "rate_limit_exceeded",
                    "the server is busy: every slot is working and the queue is full; retry later");
    case SCHED_ERR_STOPPING:
        return fail(c, 503, "server_error", "unavailable", "the server is shutting down");
    case SCHED_ERR_TOO_LONG:
        return fail(c, 400, "invalid_request_error", "context_length_exceeded",
                    "the prompt does not fit the context of a slot");
    default: return respond_json(c, 500, NULL, 0);
    }
}

/* ------------------------------------------------------------------ retrieval (--rag-db) */

#define RAG_QUERY_TOKENS 512 /* as `llama3c rag` embeds a query: BOS + at most this many tokens */

/* The unit-length mean-pooled vector of BOS + text, through the scheduler (one embeddings job,
 * batched with the other requests). 0 ok; -1 the client left; else an HTTP status in *e. */
static int rag_embed_query(conn *c, const char *text, float *out, api_error *e) {
    server *srv = c->srv;
    int32_t cap = RAG_QUERY_TOKENS < srv->n_ctx ? RAG_QUERY_TOKENS : srv->n_ctx;
    int32_t *ids = malloc((size_t)cap * sizeof *ids), off[2] = {0, 0};
    if (!ids) return (int)api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    int64_t n = l3c_tokenize(srv->tok, text, strlen(text), ids, cap, L3C_TOKENIZE_ADD_BOS);
    if (n < 0) { /* longer: the first cap tokens, as the CLI */
        int32_t *all = malloc((size_t)-n * sizeof *all);
        if (!all) {
            free(ids);
            return (int)api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        }
        l3c_tokenize(srv->tok, text, strlen(text), all, -n, L3C_TOKENIZE_ADD_BOS);
        memcpy(ids, all, (size_t)cap * sizeof *ids);
        free(all);
        n = cap;
    }
    if (n == 0) {
        free(ids);
        return (int)api_fail(e, 400, "invalid_request_error", "query", NULL,
                             "the query has no tokens");
    }
    off[1] = (int32_t)n;
    sched_job *job = sched_embd_job_new(ids, off, 1); /* takes ids */
    if (!job) return (int)api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    int rc = 0;
    sched_submit_result sr = sched_submit(srv->sched, job);
    if (sr != SCHED_OK) {
        rc = (int)(sr == SCHED_ERR_FULL
                       ? api_fail(e, 429, "rate_limit_error", NULL, "rate_limit_exceeded",
                                  "the server is busy; retry later")
                       : api_fail(e, 503, "server_error", NULL, "unavailable",
                                  "the server cannot embed the query now"));
        goto done;
    }
    sched_update u;
    for (;;) {
        sched_job_wait(srv->sched, job, WAIT_SLICE_MS, &c->text, &c->text_len, &c->text_cap, &u);
        if (u.finish != SCHED_RUNNING) break;
        if (client_gone(c->mc)) {
            sched_job_cancel(srv->sched, job);
            rc = -1;
            goto done;
        }
    }
    const float *v = u.finish == SCHED_FINISH_STOP ? sched_job_embeddings(srv->sched, job) : NULL;
    if (!v) {
        rc = (int)api_fail(e, u.finish == SCHED_FINISH_CANCELLED ? 503 : 500, "server_error", NULL,
                           NULL, "embedding the query failed%s%s",
                           u.finish == SCHED_FINISH_ERROR ? ": " : "",
                           u.finish == SCHED_FINISH_ERROR ? u.error : "");
        goto done;
    }
    l3c_model_info info;
    l3c_model_get_info(srv->model, &info);
    double s2 = 0;
    for (int32_t i = 0; i < info.n_embd; i++)
        s2 += (double)v[i] * v[i];
    float inv = s2 > 0 ? (float)(1.0 / sqrt(s2)) : 0.0f;
    for (int32_t i = 0; i < info.n_embd; i++)
        out[i] = v[i] * inv;
done:
    sched_job_release(srv->sched, job);
    c->text_len = 0; /* an embeddings job writes no text; the buffer is reused for the answer */
    return rc;
}

/* Parses {"k": int, "mode": string} fields of obj (either may be absent). 0 or 400 in *e, whose
 * param is `where` (the enclosing field), or the field itself when where is NULL. */
static int rag_params(json_t *obj, const char *where, int *k, rag_mode *mode, api_error *e) {
    json_t *jk = json_object_get(obj, "k"), *jm = json_object_get(obj, "mode");
    if (jk && (!json_is_integer(jk) || json_integer_value(jk) < 1 || json_integer_value(jk) > 100))
        return (int)api_fail(e, 400, "invalid_request_error", where ? where : "k", NULL,
                             "'k' must be an integer in [1, 100]");
    if (jk) *k = (int)json_integer_value(jk);
    if (jm && (!json_is_string(jm) || rag_mode_parse(json_string_value(jm), mode)))
        return (int)api_fail(e, 400, "invalid_request_error", where ? where : "mode", NULL,
                             "'mode' must be one of \"hybrid\", \"vector\", \"bm25\"");
    return 0;
}

/* "min_score" (number >= 0; default RAG_MIN_SCORE, 0 in vector mode, which has no BM25 score):
 * the retrieval confidence under which the answer is "I don't know" ("abstain": true). */
static int rag_min_score(json_t *obj, rag_mode mode, double *out, api_error *e) {
    json_t *j = json_object_get(obj, "min_score");
    *out = mode == RAG_VECTOR ? 0 : RAG_MIN_SCORE;
    if (!j) return 0;
    if (!json_is_number(j) || json_number_value(j) < 0 || json_number_value(j) > 1e6)
        return (int)api_fail(e, 400, "invalid_request_error", "min_score", NULL,
                             "'min_score' must be a number in [0, 1e6]");
    *out = json_number_value(j);
    return 0;
}

/* Retrieval for a query: embed (unless bm25), then search the index. 0, -1 (client left) or status.
 */
static int rag_search(conn *c, const char *query, const char *where, int k, rag_mode mode,
                      rag_hit **hits, int *n, api_error *e) {
    server *srv = c->srv;
    char qerr[RAG_ERR_CAP];
    if (rag_query_check(query, qerr))
        return (int)api_fail(e, 400, "invalid_request_error", where, NULL, "%s", qerr);
    l3c_model_info info;
    l3c_model_get_info(srv->model, &info);
    float *q = malloc((size_t)info.n_embd * sizeof *q);
    if (!q) return (int)api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    int rc = mode == RAG_BM25 ? 0 : rag_embed_query(c, query, q, e);
    if (rc == 0) {
        char err[RAG_ERR_CAP];
        rag_store *db = rag_pool_get(srv->rag, err); /* concurrent searches: one connection each */
        int bad = !db || rag_store_search(db, query, mode == RAG_BM25 ? NULL : q, info.n_embd, k,
                                          mode, RAG_HYBRID_ALPHA, hits, n, err);
        rag_pool_put(srv->rag, db);
        if (bad) rc = (int)api_fail(e, 500, "server_error", NULL, NULL, "%s", err);
    }
    free(q);
    return rc;
}

static json_t *hit_json(const rag_hit *h, int rank, int with_text) {
    json_t *o = json_pack("{s:i, s:s, s:i, s:i, s:f, s:f, s:f}", "rank", rank, "path", h->path,
                          "line_start", h->line_start, "line_end", h->line_end, "score", h->score,
                          "bm25", h->bm25, "cosine", h->cosine);
    if (o && with_text) json_object_set_new(o, "text", json_string(h->text));
    return o;
}

/* POST /v1/rag/query {"query": "...", "k": 5, "mode": "hybrid"} -> the ranked chunks. */
static enum MHD_Result serve_rag_query(conn *c) {
    server *srv = c->srv;
    api_error e;
    if (!srv->rag)
        return fail(c, 404, "invalid_request_error", NULL,
                    "this server has no RAG index (start it with --rag-db)");
    json_error_t je;
    json_t *root = json_loadb(c->body, c->len, 0, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return fail(c, 400, "invalid_request_error", NULL, "the body must be a JSON object");
    }
    json_t *jq = json_object_get(root, "query");
    int k = 5, st;
    rag_mode mode = RAG_HYBRID;
    rag_hit *h = NULL;
    int n = 0;
    double min_score = 0;
    if (!json_is_string(jq) || !*json_string_value(jq)) {
        st = (int)api_fail(&e, 400, "invalid_request_error", "query", NULL,
                           "'query' must be a non-empty string");
    } else if (!(st = rag_params(root, NULL, &k, &mode, &e)) &&
               !(st = rag_min_score(root, mode, &min_score, &e))) {
        st = rag_search(c, json_string_value(jq), "query", k, mode, &h, &n, &e);
    }
    if (st) {
        json_decref(root);
        return st < 0 ? MHD_NO : respond_error(c, &e);
    }
    json_t *data = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(data, hit_json(&h[i], i + 1, 1));
    double conf = rag_confidence(h, n);
    json_t *out = json_pack("{s:s, s:O, s:s, s:f, s:b, s:o}", "object", "list", "query", jq, "mode",
                            rag_mode_name(mode), "confidence", conf, "abstain", conf < min_score,
                            "data", data);
    char *body = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    json_decref(root);
    rag_hits_free(h, n);
    touch(c);
    return respond_json(c, 200, body, body ? strlen(body) : 0);
}

/* Chat completions with the extension field "rag": {"k": 4, "mode": "hybrid"}: retrieves chunks for
 * the last user message, adds the instructions as a system message (before any the client sent) and
 * the numbered sources before the question in that user message, removes "rag", and puts the new
 * body in c->body; the sources are added to a non-streamed response as "rag_sources".
 * Returns 0 (go on), 1 (an error was answered) or -1 (the client left). */
static int rag_chat_augment(conn *c) {
    server *srv = c->srv;
    json_t *root = json_loadb(c->body, c->len, 0, NULL), *rag;
    if (!root || !json_is_object(root) || !(rag = json_object_get(root, "rag"))) {
        json_decref(root);
        return 0; /* not ours: api_parse_request reports what is wrong */
    }
    api_error e;
    int st = 0, k = 4, n = 0;
    rag_mode mode = RAG_HYBRID;
    rag_hit *h = NULL;
    json_t *msgs = json_object_get(root, "messages"), *last = NULL;
    size_t i;
    json_t *m;
    if (!srv->rag) {
        st = (int)api_fail(&e, 400, "invalid_request_error", "rag", NULL,
                           "this server has no RAG index (start it with --rag-db)");
        goto out;
    }
    if (!json_is_object(rag)) {
        st = (int)api_fail(&e, 400, "invalid_request_error", "rag", NULL,
                           "'rag' must be an object like {\"k\": 4}");
        goto out;
    }
    double min_score = 0;
    if ((st = rag_params(rag, "rag", &k, &mode, &e)) ||
        (st = rag_min_score(rag, mode, &min_score, &e)))
        goto out;
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role");
        if (json_is_string(role) && !strcmp(json_string_value(role), "user")) last = m;
    }
    json_t *content = last ? json_object_get(last, "content") : NULL;
    if (!json_is_string(content) || !*json_string_value(content)) {
        st = (int)api_fail(
            &e, 400, "invalid_request_error", "messages", NULL,
            "with 'rag', the last user message must have a non-empty string content (the query)");
        goto out;
    }
    if ((st = rag_search(c, json_string_value(content), "messages", k, mode, &h, &n, &e)))
        goto out;
    c->rag_abstain = rag_confidence(h, n) < min_score; /* serve_rag_abstain answers it */
    char *user = rag_sources_text(h, n, json_string_value(content));
    json_t *sources = json_array(),
           *sys = json_pack("{s:s, s:s}", "role", "system", "content", RAG_SYSTEM_PROMPT);
    for (int j = 0; j < n; j++)
        json_array_append_new(sources, hit_json(&h[j], j + 1, 0));
    if (!user || !sources || !sys || json_object_set_new(last, "content", json_string(user)) ||
        json_array_insert_new(msgs, 0, sys)) {
        free(user);
        json_decref(sources);
        st =
            (int)api_fail(&e, 500, "server_error", NULL, NULL, "out of memory building the prompt");
        goto out;
    }
    free(user);
    json_object_del(root, "rag");
    char *body = json_dumps(root, JSON_COMPACT);
    if (!body) {
        json_decref(sources);
        st =
            (int)api_fail(&e, 500, "server_error", NULL, NULL, "out of memory building the prompt");
        goto out;
    }
    free(c->body);
    c->body = body;
    c->len = c->cap = strlen(body);
    c->rag_sources = sources;
out:
    rag_hits_free(h, n);
    json_decref(root);
    if (st < 0) return -1;
    if (st > 0) {
        respond_error(c, &e);
        return 1;
    }
    return 0;
}

/* Chat with "rag" whose retrieval confidence is below min_score: the fixed RAG_DONT_KNOW as the
 * assistant's reply, streamed or not as asked, without a scheduler job (the model is not run:
 * usage counts no tokens), with "rag_sources" (the nearest chunks) and "rag_abstained": true in a
 * non-streamed response. */
static enum MHD_Result serve_rag_abstain(conn *c) {
    sched_update u = {.finish = SCHED_FINISH_STOP};
    size_t len = 0, n = 0;
    const size_t tl = strlen(RAG_DONT_KNOW);
    if (!c->req.stream) {
        char *body = api_response_json(&c->req, RAG_DONT_KNOW, tl, &u, &len);
        json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
        free(body);
        body = NULL;
        if (root && !json_object_set(root, "rag_sources", c->rag_sources) &&
            !json_object_set_new(root, "rag_abstained", json_true()))
            body = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        touch(c);
        return respond_json(c, 200, body, body ? strlen(body) : 0);
    }
    int bad = sse_add(c, api_stream_chunk(&c->req, 1, "", 0, SCHED_RUNNING, &n), &n) ||
              sse_add(c, api_stream_text(&c->req, RAG_DONT_KNOW, tl, &n), &n) ||
              sse_add(c, api_stream_end(&c->req, SCHED_FINISH_STOP, &n), &n) ||
              (c->req.include_usage && sse_add(c, api_stream_usage(&c->req, &u, &n), &n)) ||
              sse_add_const(c, "data: [DONE]\n\n");
    if (bad) return respond_json(c, 500, NULL, 0);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(c->sse_len, c->sse, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    touch(c);
    return queue(c, 200, r);
}

/* POST /apply-template (as llama.cpp's server): a chat completion body -> {"prompt", "tokens"}: the
 * prompt the model would see (tools included), nothing generated. */
static enum MHD_Result serve_apply_template(conn *c) {
    api_error e;
    if (api_parse_request(c->srv, API_CHAT, c->body, c->len, &c->req, &e))
        return respond_error(c, &e);
    size_t len = 0;
    char *body = api_prompt_json(c->srv, &c->req, &len);
    return respond_json(c, 200, body, len);
}

static enum MHD_Result serve_generate(conn *c) {
    server *srv = c->srv;
    api_error e;
    if (c->ep == EP_EMBEDDINGS) return serve_embeddings(c);
    if (c->ep == EP_RAG) return serve_rag_query(c);
    if (c->ep == EP_APPLY_TEMPLATE) return serve_apply_template(c);
    if (c->ep == EP_CHAT) {
        int r = rag_chat_augment(c);
        if (r != 0) return r > 0 ? MHD_YES : MHD_NO; /* answered (error) or the client left */
    }
    if (api_parse_request(srv, c->ep == EP_CHAT ? API_CHAT : API_COMPLETION, c->body, c->len, &c->req, &e))
        return respond_error(c, &e);
    if (c->rag_abstain) return serve_rag_abstain(c);
    free(c->body);
    c->body = NULL;
    c->len = c->cap = 0;
    c->job = sched_job_new(c->req.prompt, c->req.n_prompt, &c->req.params);
    c->req.prompt = NULL; /* owned by the job now (or freed) */
    if (!c->job) return respond_json(c, 500, NULL, 0);
    sched_submit_result sr = sched_submit(srv->sched, c->job);
    if (sr != SCHED_OK) return submit_failed(c, sr);
    return c->req.stream ? start_stream(c) : finish_blocking(c);
}

/* ------------------------------------------------------------------ MHD callbacks */

static int content_type_ok(struct MHD_Connection *mc) {
    const char *ct = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct) return 1; /* tolerated: some clients send none */
    while (*ct == ' ') ct++;
    return !strncasecmp(ct, "application/json", 16) && (ct[16] == 0 || ct[16] == ';' || ct[16] == ' ');
}

/* The first call for a request: routing, method, auth and size checks before any body byte. */
static enum MHD_Result on_headers(conn *c, const char *url, const char *method) {
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int post = !strcmp(method, "POST");
    char msg[200];
    if (c->ep == EP_OTHER) {
        snprintf(msg, sizeof msg, "Invalid URL (%.16s %.120s)", method, url);
        return fail(c, 404, "invalid_request_error", NULL, msg);
    }
    if (!strcmp(method, "OPTIONS")) return serve_options(c);
    int wants_post = c->ep == EP_CHAT || c->ep == EP_COMPLETIONS || c->ep == EP_EMBEDDINGS ||
                     c->ep == EP_RAG || c->ep == EP_APPLY_TEMPLATE;
    if ((wants_post && !post) || (!wants_post && !get)) {
        snprintf(msg, sizeof msg, "method %.16s is not allowed on %.120s", method, url);
        return fail(c, 405, "invalid_request_error", "method_not_allowed", msg);
    }
    int needs_auth = c->ep == EP_CHAT || c->ep == EP_COMPLETIONS || c->ep == EP_EMBEDDINGS ||
                     c->ep == EP_RAG || c->ep == EP_MODELS || c->ep == EP_METRICS ||
                     c->ep == EP_APPLY_TEMPLATE;
    if (needs_auth && c->srv->accounts) {
        int ok;
        enum MHD_Result r = account_check(c, &ok);
        if (!ok) return r;
    } else if (needs_auth && !authorized(c))
        return fail(c, 401, "invalid_request_error", "invalid_api_key",
                    "Incorrect API key provided (send it as 'Authorization: Bearer KEY')");
    if (!wants_post) return c->ep == EP_WEB ? serve_web(c, url) : serve_get(c);
    c->is_post = 1;
    if (!content_type_ok(c->mc))
        return fail(c, 415, "invalid_request_error", "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json)");
    const char *cl = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (n > c->srv->max_body) {
            snprintf(msg, sizeof msg, "the body (%llu bytes) is larger than the limit of %zu bytes", n,
                     c->srv->max_body);
            return fail(c, 413, "invalid_request_error", "request_too_large", msg);
        }
    }
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *mc, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls) {
    (void)version;
    conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        c->srv = cls;
        c->mc = mc;
        clock_gettime(CLOCK_MONOTONIC, &c->t0);
        c->ep = route(url);
        *con_cls = c;
        return on_headers(c, url, method);
    }
    if (c->responded) { /* an early answer (413, ...) is queued: drop what still comes */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (c->too_large) return MHD_YES;
        if (c->len + n > c->srv->max_body) {
            c->too_large = 1;
            free(c->body);
            c->body = NULL;
            c->len = c->cap = 0;
            return MHD_YES;
        }
        if (c->len + n > c->cap) {
            size_t cap = c->cap ? c->cap : 4096;
            while (cap < c->len + n) cap *= 2;
            if (cap > c->srv->max_body) cap = c->srv->max_body;
            char *q = realloc(c->body, cap);
            if (!q) return MHD_NO;
            c->body = q;
            c->cap = cap;
        }
        memcpy(c->body + c->len, upload, n);
        c->len += n;
        return MHD_YES;
    }
    if (c->too_large) {
        char msg[120];
        snprintf(msg, sizeof msg, "the body is larger than the limit of %zu bytes", c->srv->max_body);
        return fail(c, 413, "invalid_request_error", "request_too_large", msg);
    }
    if (!c->is_post) return MHD_YES;
    if (c->len == 0) return fail(c, 400, "invalid_request_error", NULL, "the request body is empty");
    return serve_generate(c);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)mc;
    server *srv = cls;
    conn *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    unsigned status = c->status;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && c->job && c->phase != PH_DONE && c->req.stream)
        status = 0; /* the stream was cut */
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !c->responded) status = 0;
    metrics_record_request(c->ep, status, since(&c->t0));
    if (c->job) sched_job_release(srv->sched, c->job);
    api_request_free(&c->req);
    api_embd_request_free(&c->ereq);
    json_decref(c->rag_sources);
    free(c->body);
    free(c->sse);
    free(c->text);
    free(c->lp);
    free(c);
}

/* ------------------------------------------------------------------ daemon */

/* Binds and listens on the first address of ai that works; -1 with the reason on stderr (the
 * strerror of the first failure: "Address already in use", "Permission denied", ...). Done here
 * rather than in libmicrohttpd, whose failure says only that it failed. */
static int listen_on(const server *srv, const struct addrinfo *ai) {
    int err = 0;
    const char *what = "bind";
    for (const struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd =
            socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            if (!err) err = errno, what = "socket";
            continue;
        }
        int one = 1;
        /* a restart need not wait for the old connections' TIME_WAIT */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) return fd;
        if (!err) err = errno, what = "bind";
        close(fd);
    }
    fprintf(stderr, "llama3c serve: cannot listen on %s:%d: %s (%s)%s\n", srv->host, srv->port,
            strerror(err), what,
            err == EADDRINUSE ? "; another process has this port: choose another with --port "
                                "(0 picks a free one)"
            : err == EACCES && srv->port > 0 && srv->port < 1024
                ? "; ports below 1024 need privileges: use --port 8080"
            : err == EADDRNOTAVAIL ? "; the address is not one of this machine's (--host)"
                                   : "");
    return -1;
}

int http_listen(const server *srv) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", srv->port);
    int rc = getaddrinfo(srv->host, port, &hints, &ai);
    if (rc != 0 || !ai) {
        fprintf(stderr, "llama3c serve: cannot resolve host '%s': %s\n", srv->host, gai_strerror(rc));
        return -1;
    }
    int fd = listen_on(srv, ai);
    freeaddrinfo(ai);
    return fd;
}

struct MHD_Daemon *http_start(server *srv, int fd) {
    struct sockaddr_storage sa;
    socklen_t sn = sizeof sa;
    int family = getsockname(fd, (struct sockaddr *)&sa, &sn) == 0 ? sa.ss_family : AF_INET;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC;
    if (family == AF_INET6) flags |= MHD_USE_IPv6;
    if (srv->verbose) flags |= MHD_USE_ERROR_LOG;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, srv, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)srv->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        srv->timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)2 * 1024 * 1024, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "llama3c serve: cannot start the HTTP server on %s:%d: %s\n", srv->host,
                srv->port, strerror(errno));
        close(fd);
    }
    return d;
}

/* The port the listening socket is bound to (the one picked by --port 0). */
int http_port(struct MHD_Daemon *d) {
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage sa;
    socklen_t n = sizeof sa;
    if (!di || getsockname(di->listen_fd, (struct sockaddr *)&sa, &n) != 0) return -1;
    if (sa.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    return ntohs(((struct sockaddr_in *)&sa)->sin_port);
}

void http_quiesce(struct MHD_Daemon *d) {
    if (!d) return;
    MHD_socket s = MHD_quiesce_daemon(d);
    if (s != MHD_INVALID_SOCKET) close(s);
}

void http_stop(struct MHD_Daemon *d) {
    if (d) MHD_stop_daemon(d);
}
