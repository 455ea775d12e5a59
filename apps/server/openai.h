/*
 * openai.h -- the OpenAI wire format of `llama3c serve`: validates request bodies into a
 * tokenized prompt plus generation parameters, and writes responses, stream chunks and errors
 * exactly as the OpenAI API does. Pure functions of their inputs (no I/O, no global state other
 * than an id counter); every input byte sequence gives either a request or an api_error.
 */
#ifndef L3C_SERVER_OPENAI_H
#define L3C_SERVER_OPENAI_H

#include "scheduler.h"
#include "server.h"
#include "tools.h"

#include <jansson.h>

#include <stddef.h>

typedef enum api_kind { API_CHAT = 0, API_COMPLETION = 1 } api_kind;

typedef struct api_error {
    unsigned status;      /* HTTP status */
    const char *type;     /* "invalid_request_error", "authentication_error", ... */
    const char *code;     /* NULL or e.g. "context_length_exceeded" */
    char param[64];       /* "" when none */
    char message[320];
} api_error;

typedef struct api_request {
    api_kind kind;
    int stream, include_usage;
    char *model;          /* as sent, or the server's model id; owned */
    int32_t *prompt;      /* owned (malloc) until handed to sched_job_new */
    int32_t n_prompt;
    sched_job_params params; /* arrays below back its pointers */
    int32_t *bias_ids;
    float *bias_vals;
    char *stop[SCHED_MAX_STOP];
    char id[48];          /* "chatcmpl-..." / "cmpl-..." */
    long long created;
    /* structured output (tools.h): NULL when the request has none */
    api_tools *tools; /* tools / tool_choice; replies are parsed for calls unless choice NONE */
    char *schema;     /* JSON schema the reply must follow (response_format and/or calls) */
    int schema_lazy;  /* 1: enforced only once the reply opens a JSON object (tool_choice auto) */
    char *gbnf;       /* extension "grammar": GBNF the reply must follow (instead of schema) */
    const char *schema_field; /* the request field the constraint came from (error messages) */
    /* logprobs (params.logprobs / top_logprobs / echo_logprobs) and completions' echo */
    const l3c_tokenizer *tok; /* borrowed: token texts for the logprobs */
    int echo;             /* completions "echo": the prompt text precedes the completion */
    char *echo_text;      /* the prompt as text (owned); echo only */
    size_t echo_len;
    /* set by the HTTP side before a writer call: the records the response or chunk carries
     * (borrowed), and the running byte offset of the next token in the choice's text */
    const sched_logprob *lp;
    int32_t n_lp;
    size_t lp_text_off;
} api_request;

/* Sets *err and returns its status. */
unsigned api_fail(api_error *err, unsigned status, const char *type, const char *param,
                  const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Parses and validates a body; on success (0) *out is filled (free with api_request_free),
 * else returns the HTTP status and fills *err. */
unsigned api_parse_request(const server *srv, api_kind kind, const char *body, size_t len,
                           api_request *out, api_error *err);
void api_request_free(api_request *r);

/* The "model" field of a request body (a JSON object): 0 when it may be served, else the HTTP
 * status (400: not a string; 404 model_not_found: with --strict-model, a name other than the
 * served ones; an absent or empty name is always accepted) with *err filled. Replies always
 * carry the served name (srv->model_id), whatever the request named. */
unsigned api_check_model(const server *srv, json_t *body, api_error *err);

/* All writers return a malloc'd NUL-terminated string (length in *len) or NULL when out of memory. */
char *api_error_json(const api_error *err, size_t *len);
/* Non-streamed response body (text: the completion; with echo the writer prepends echo_text;
 * r->lp / n_lp: the choice's logprobs, "logprobs": null when the request asked for none). */
char *api_response_json(const api_request *r, const char *text, size_t text_len,
                        const sched_update *u, size_t *len);
/* One SSE event "data: {chunk}\n\n". role_chunk: the opening chat chunk with the role;
 * finish: SCHED_RUNNING for a content chunk, else the final chunk with finish_reason. */
char *api_stream_chunk(const api_request *r, int role_chunk, const char *text, size_t text_len,
                       sched_finish finish, size_t *len);
/* Streaming through the tool-call filter (requests with tools; others: as api_stream_chunk):
 * api_stream_text gives the events for new text (perhaps none: a reply that opens like a call
 * is held back), api_stream_end the rest at the end: the held text, or the tool_calls deltas
 * (index, id, function.name, then the arguments), and the chunk with the finish_reason. */
char *api_stream_text(api_request *r, const char *text, size_t text_len, size_t *len);
char *api_stream_end(api_request *r, sched_finish finish, size_t *len);
/* POST /apply-template: {"prompt": the chat prompt as the model sees it (special tokens as text)}.
 */
char *api_prompt_json(const server *srv, const api_request *r, size_t *len);
/* Ids such as "call_..." (unique per process run). */
void api_make_id(char *dst, size_t cap, const char *prefix);

/* Adds the text bytes of r->lp[0 .. n_lp) to r->lp_text_off (after a chunk carried them). */
void api_logprobs_advance(api_request *r);
/* The usage chunk sent when stream_options.include_usage is set (choices: []). */
char *api_stream_usage(const api_request *r, const sched_update *u, size_t *len);
/* "data: {"error":...}\n\n" for a failure in the middle of a stream. */
char *api_stream_error(const api_error *err, size_t *len);
/* GET /v1/models */
char *api_models_json(const server *srv, size_t *len);

/* POST /v1/embeddings: inputs tokenized and concatenated (input i is tokens[off[i] .. off[i+1])). */
typedef struct api_embd_request {
    char *model;          /* as sent, or the server's model id; owned */
    int32_t *tokens;      /* owned (malloc) until handed to sched_embd_job_new */
    int32_t *off;         /* [n_inputs + 1], owned */
    int32_t n_inputs;
    int32_t dimensions;   /* returned dimensions: the first ones of each vector, re-normalized */
    int base64;           /* encoding_format "base64": little-endian float32 bytes */
} api_embd_request;

/* Parses and validates an embeddings body; 0 and *out filled (api_embd_request_free), or the
 * HTTP status with *err filled. */
unsigned api_parse_embeddings(const server *srv, const char *body, size_t len, api_embd_request *out,
                              api_error *err);
void api_embd_request_free(api_embd_request *r);
/* The response for raw pooled vectors embd [n_inputs x n_embd]: each cut to r->dimensions and
 * scaled to unit L2 norm. */
char *api_embeddings_json(const api_embd_request *r, const float *embd, int32_t n_embd, size_t *len);

/* Copies src into dst replacing invalid UTF-8 with U+FFFD; dst must hold 3 * n + 1 bytes.
 * Returns the output length. */
size_t api_utf8_sanitize(const char *src, size_t n, char *dst);

#endif
