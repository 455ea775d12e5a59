/*
 * tools.h -- structured output of `llama3c serve`: OpenAI's `tools` / `tool_choice` /
 * `parallel_tool_calls` and `response_format` on chat completions.
 *
 *  - Requests: the fields are validated (a 400 names the field: `tools[1].function.parameters`,
 *    `response_format.json_schema.schema`, ...); the tools go into the prompt through
 *    l3c_chat_tokenize_tools (the template's own protocol: Llama 3.1's for Llama 3 templates, the
 *    generic {"tool_calls": [...]} one otherwise).
 *  - Constraint: one JSON schema per request (the calls the tools allow, the response_format
 *    schema, or both as anyOf) compiled to a grammar (grammar_cache.h) that the request's slot
 *    enforces: from the first token (tool_choice required / a named function, response_format),
 *    or lazily, from the first token that opens a JSON object (tool_choice auto).
 *  - Replies: the generated text is parsed into calls (tools_parse_reply); anything that is not a
 *    well-formed call of a known function stays text. Stream filtering holds back a reply that
 *    opens like a call until it is complete.
 * Everything here runs on a connection thread; nothing is shared.
 */
#ifndef L3C_SERVER_TOOLS_H
#define L3C_SERVER_TOOLS_H

#include "llama3c.h"

#include <jansson.h>
#include <stddef.h>

typedef enum tools_protocol {
    TOOLS_LLAMA31 = 0, /* {"name": N, "parameters": {...}} (after <|python_tag|> perhaps) */
    TOOLS_GENERIC      /* {"tool_calls": [{"name": N, "arguments": {...}}, ...]} */
} tools_protocol;

typedef enum tools_choice { TOOLS_AUTO = 0, TOOLS_NONE, TOOLS_REQUIRED, TOOLS_NAMED } tools_choice;

typedef struct api_tools {
    tools_protocol protocol;
    tools_choice choice;
    int parallel;    /* parallel_tool_calls (default true) */
    json_t *defs;    /* the validated `tools` array (owned reference) */
    char *defs_json; /* its text for l3c_chat_tools.tools; NULL when choice is NONE */
    char *named;     /* TOOLS_NAMED: the function */
    /* stream filter state */
    int decided; /* 0: only whitespace so far; 1: plain text; 2: looks like a call */
    char *held;
    size_t held_len, held_cap;
} api_tools;

typedef struct api_error api_error;

/* Reads tools / tool_choice / parallel_tool_calls from a chat body. *out stays NULL when the
 * body has no tools. Returns 0 or the HTTP status with *err filled. */
unsigned tools_parse(const l3c_tokenizer *tok, l3c_chat_template tmpl, json_t *body,
                     api_tools **out, api_error *err);
void tools_free(api_tools *t);

/* 0 when the JSON schema text can be enforced, else a 400 naming param with the grammar
 * engine's message (the schema is converted to GBNF: cheap, no vocabulary involved). */
unsigned tools_check_schema(const char *schema, const char *param, api_error *err);

/* The JSON schema (caller frees) of what a reply that calls tools may be; NULL when out of memory.
 */
char *tools_calls_schema(const api_tools *t);

/* response_format: 0 with *schema NULL (text, absent) or the schema text to enforce (caller
 * frees); else the HTTP status with *err filled. */
unsigned tools_response_format(json_t *body, char **schema, api_error *err);

/* The calls in a generated reply as OpenAI's `tool_calls` array (new reference; ids made with
 * make_id), or NULL when the text is not a well-formed call of known functions. */
json_t *tools_parse_reply(const api_tools *t, const char *text, size_t len,
                          void (*make_id)(char *dst, size_t cap, const char *prefix));

/* The assistant messages' tool_calls (validated) as JSON text for l3c_chat_tools, *out[i] NULL
 * for messages without calls. Returns 0 or the HTTP status with *err filled. */
unsigned tools_message_calls(json_t *msg, size_t i, char **out, api_error *err);

#endif
