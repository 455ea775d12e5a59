/*
 * tools.c -- tools, tool_choice and response_format of chat completions (see tools.h).
 *
 * Invariants
 *  - A validated api_tools has 1..MAX_TOOLS function definitions with unique names matching
 *    OpenAI's ^[a-zA-Z0-9_-]{1,64}$ and object `parameters` (absent: any object); a TOOLS_NAMED
 *    choice names one of them.
 *  - tools_parse_reply never accepts a call of an unknown function, a call whose arguments are
 *    not a JSON object, or text with anything but whitespace around the call(s).
 */
#include "tools.h"

#include "openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOOLS       128
#define BAD(param, ...) api_fail(err, 400, "invalid_request_error", param, NULL, __VA_ARGS__)
#define NOMEM()         api_fail(err, 500, "server_error", NULL, NULL, "out of memory")

static json_t *opt_field(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* The function object of tool k (validated). */
static json_t *tool_fn(const api_tools *t, size_t k) {
    return json_object_get(json_array_get(t->defs, k), "function");
}
static const char *tool_name(const api_tools *t, size_t k) {
    return json_string_value(json_object_get(tool_fn(t, k), "name"));
}
static int tool_index(const api_tools *t, const char *name) {
    for (size_t k = 0; k < json_array_size(t->defs); k++)
        if (!strcmp(tool_name(t, k), name)) return (int)k;
    return -1;
}

void tools_free(api_tools *t) {
    if (!t) return;
    json_decref(t->defs);
    free(t->defs_json);
    free(t->named);
    free(t->held);
    free(t);
}

static unsigned check_tools(json_t *tools, api_error *err) {
    char p[64];
    if (!json_is_array(tools)) return BAD("tools", "'tools' must be an array of tool definitions");
    size_t n = json_array_size(tools);
    if (n == 0) return BAD("tools", "'tools' must hold at least one tool (leave it out for none)");
    if (n > MAX_TOOLS) return BAD("tools", "'tools' may hold at most %d tools", MAX_TOOLS);
    for (size_t k = 0; k < n; k++) {
        json_t *t = json_array_get(tools, k);
        snprintf(p, sizeof p, "tools[%zu]", k);
        if (!json_is_object(t)) return BAD(p, "'%s' must be an object", p);
        json_t *ty = json_object_get(t, "type");
        snprintf(p, sizeof p, "tools[%zu].type", k);
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "function"))
            return BAD(p, "'%s' must be 'function' (the only kind of tool supported)", p);
        json_t *f = json_object_get(t, "function");
        snprintf(p, sizeof p, "tools[%zu].function", k);
        if (!json_is_object(f)) return BAD(p, "'%s' must be an object", p);
        json_t *nm = json_object_get(f, "name");
        snprintf(p, sizeof p, "tools[%zu].function.name", k);
        if (!json_is_string(nm)) return BAD(p, "'%s' is a required string", p);
        if (!valid_name(json_string_value(nm)))
            return BAD(p, "'%s' must be 1 to 64 characters a-z, A-Z, 0-9, '_' or '-'", p);
        for (size_t j = 0; j < k; j++)
            if (!strcmp(json_string_value(json_object_get(
                            json_object_get(json_array_get(tools, j), "function"), "name")),
                        json_string_value(nm)))
                return BAD(p, "'%s': a second function named '%s'", p, json_string_value(nm));
        json_t *d = opt_field(f, "description");
        snprintf(p, sizeof p, "tools[%zu].function.description", k);
        if (d && !json_is_string(d)) return BAD(p, "'%s' must be a string", p);
        json_t *pa = opt_field(f, "parameters");
        snprintf(p, sizeof p, "tools[%zu].function.parameters", k);
        if (pa && !json_is_object(pa)) return BAD(p, "'%s' must be a JSON Schema object", p);
        json_t *st = opt_field(f, "strict");
        snprintf(p, sizeof p, "tools[%zu].function.strict", k);
        if (st && !json_is_boolean(st)) return BAD(p, "'%s' must be a boolean", p);
        if (pa) {
            char *txt = json_dumps(pa, JSON_COMPACT);
            if (!txt) return NOMEM();
            snprintf(p, sizeof p, "tools[%zu].function.parameters", k);
            unsigned bad = tools_check_schema(txt, p, err);
            free(txt);
            if (bad) return bad;
        }
    }
    return 0;
}

unsigned tools_parse(const l3c_tokenizer *tok, l3c_chat_template tmpl, json_t *body,
                     api_tools **out, api_error *err) {
    (void)tok;
    *out = NULL;
    json_t *tools = opt_field(body, "tools"), *choice = opt_field(body, "tool_choice"),
           *par = opt_field(body, "parallel_tool_calls");
    if (par && !json_is_boolean(par))
        return BAD("parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
    if (!tools) {
        if (choice && !(json_is_string(choice) && !strcmp(json_string_value(choice), "none")))
            return BAD("tool_choice", "'tool_choice' is only allowed when 'tools' are given");
        return 0;
    }
    unsigned st = check_tools(tools, err);
    if (st) return st;
    api_tools *t = calloc(1, sizeof *t);
    if (!t) return NOMEM();
    t->defs = json_incref(tools);
    t->parallel = par ? json_is_true(par) : 1;
    t->protocol =
        tmpl == L3C_CHAT_LLAMA31 || tmpl == L3C_CHAT_LLAMA3 ? TOOLS_LLAMA31 : TOOLS_GENERIC;
    t->choice = TOOLS_AUTO;
    if (json_is_string(choice)) {
        const char *c = json_string_value(choice);
        if (!strcmp(c, "none"))
            t->choice = TOOLS_NONE;
        else if (!strcmp(c, "required"))
            t->choice = TOOLS_REQUIRED;
        else if (strcmp(c, "auto")) {
            st = BAD("tool_choice", "'tool_choice' must be 'none', 'auto', 'required' or "
                                    "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            goto fail;
        }
    } else if (choice) {
        json_t *ty = json_object_get(choice, "type"), *f = json_object_get(choice, "function");
        json_t *nm = json_object_get(f, "name");
        if (!json_is_object(choice) || !json_is_string(ty) ||
            strcmp(json_string_value(ty), "function") || !json_is_string(nm)) {
            st = BAD("tool_choice", "'tool_choice' must be 'none', 'auto', 'required' or "
                                    "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            goto fail;
        }
        if (tool_index(t, json_string_value(nm)) < 0) {
            st = BAD("tool_choice", "'tool_choice.function.name': no tool is named '%.64s'",
                     json_string_value(nm));
            goto fail;
        }
        t->choice = TOOLS_NAMED;
        if (!(t->named = strdup(json_string_value(nm)))) goto nomem;
    }
    if (t->choice != TOOLS_NONE && !(t->defs_json = json_dumps(tools, JSON_COMPACT))) goto nomem;
    *out = t;
    return 0;
nomem:
    st = NOMEM();
fail:
    tools_free(t);
    return st;
}

unsigned tools_check_schema(const char *schema, const char *param, api_error *err) {
    char *gbnf = NULL;
    l3c_status st = l3c_json_schema_to_gbnf(schema, strlen(schema), &gbnf);
    l3c_free(gbnf);
    if (st == L3C_OK) return 0;
    if (st == L3C_ERR_NOMEM) return NOMEM();
    return BAD(param, "'%s': %s", param, l3c_last_error());
}

/* ------------------------------------------------------------------ the schema of a call */

/* {"type":"object","properties":{"name":{"const":N},ARGKEY:PARAMS},"required":[...],
 *  "additionalProperties":false} */
static json_t *call_schema(const api_tools *t, size_t k, const char *argkey) {
    json_t *params = opt_field(tool_fn(t, k), "parameters");
    json_t *p = params ? json_incref(params) : json_pack("{s:s}", "type", "object");
    return json_pack("{s:s,s:{s:{s:s},s:o},s:[s,s],s:b}", "type", "object", "properties", "name",
                     "const", tool_name(t, k), argkey, p, "required", "name", argkey,
                     "additionalProperties", 0);
}

char *tools_calls_schema(const api_tools *t) {
    const char *argkey = t->protocol == TOOLS_LLAMA31 ? "parameters" : "arguments";
    json_t *alts = json_array();
    for (size_t k = 0; alts && k < json_array_size(t->defs); k++)
        if (!t->named || !strcmp(t->named, tool_name(t, k)))
            json_array_append_new(alts, call_schema(t, k, argkey));
    json_t *one = json_array_size(alts) == 1 ? json_incref(json_array_get(alts, 0))
                                             : json_pack("{s:O}", "anyOf", alts);
    json_t *s = one;
    if (t->protocol == TOOLS_GENERIC && one) {
        json_t *arr =
            json_pack("{s:s,s:o,s:i}", "type", "array", "items", json_incref(one), "minItems", 1);
        if (arr && (!t->parallel || t->named)) /* a named function: one call of it */
            json_object_set_new(arr, "maxItems", json_integer(1));
        s = json_pack("{s:s,s:{s:o},s:[s],s:b}", "type", "object", "properties", "tool_calls", arr,
                      "required", "tool_calls", "additionalProperties", 0);
        json_decref(one);
    }
    json_decref(alts);
    char *txt = s ? json_dumps(s, JSON_COMPACT) : NULL;
    json_decref(s);
    return txt;
}

/* ------------------------------------------------------------------ response_format */

unsigned tools_response_format(json_t *body, char **schema, api_error *err) {
    *schema = NULL;
    json_t *rf = opt_field(body, "response_format");
    if (!rf) return 0;
    json_t *ty = json_object_get(rf, "type");
    if (!json_is_object(rf)) return BAD("response_format", "'response_format' must be an object");
    if (!json_is_string(ty))
        return BAD("response_format.type",
                   "'response_format.type' must be 'text', 'json_object' or 'json_schema'");
    const char *k = json_string_value(ty);
    if (!strcmp(k, "text")) return 0;
    if (!strcmp(k, "json_object")) {
        *schema = strdup("{\"type\":\"object\"}");
        return *schema ? 0 : NOMEM();
    }
    if (strcmp(k, "json_schema"))
        return BAD("response_format.type",
                   "'response_format.type' must be 'text', 'json_object' or 'json_schema'");
    json_t *js = json_object_get(rf, "json_schema");
    if (!json_is_object(js))
        return BAD("response_format.json_schema", "'response_format.json_schema' must be an object "
                                                  "{\"name\", \"schema\", \"strict\"}");
    json_t *nm = json_object_get(js, "name");
    if (!json_is_string(nm) || !valid_name(json_string_value(nm)))
        return BAD("response_format.json_schema.name",
                   "'response_format.json_schema.name' is required: 1 to 64 "
                   "characters a-z, A-Z, 0-9, '_' or '-'");
    json_t *d = opt_field(js, "description"), *strict = opt_field(js, "strict"),
           *sc = opt_field(js, "schema");
    if (d && !json_is_string(d))
        return BAD("response_format.json_schema.description",
                   "'response_format.json_schema.description' must be "
                   "a string");
    if (strict && !json_is_boolean(strict))
        return BAD("response_format.json_schema.strict",
                   "'response_format.json_schema.strict' must be a boolean");
    if (sc && !json_is_object(sc) && !json_is_boolean(sc))
        return BAD("response_format.json_schema.schema",
                   "'response_format.json_schema.schema' must be a JSON "
                   "Schema object");
    /* no schema: any JSON value, as OpenAI */
    *schema = sc ? json_dumps(sc, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    return *schema ? 0 : NOMEM();
}

/* ------------------------------------------------------------------ messages */

unsigned tools_message_calls(json_t *msg, size_t i, char **out, api_error *err) {
    char p[64];
    *out = NULL;
    json_t *calls = opt_field(msg, "tool_calls");
    if (!calls) return 0;
    snprintf(p, sizeof p, "messages[%zu].tool_calls", i);
    if (!json_is_array(calls)) return BAD(p, "'%s' must be an array", p);
    if (json_array_size(calls) == 0) return 0;
    for (size_t j = 0; j < json_array_size(calls); j++) {
        json_t *c = json_array_get(calls, j), *f = json_object_get(c, "function");
        snprintf(p, sizeof p, "messages[%zu].tool_calls[%zu].function", i, j);
        if (!json_is_object(c) || !json_is_object(f))
            return BAD(p, "'%s' must be an object {\"name\", \"arguments\"}", p);
        snprintf(p, sizeof p, "messages[%zu].tool_calls[%zu].function.name", i, j);
        if (!json_is_string(json_object_get(f, "name")))
            return BAD(p, "'%s' is a required string", p);
        json_t *a = json_object_get(f, "arguments");
        snprintf(p, sizeof p, "messages[%zu].tool_calls[%zu].function.arguments", i, j);
        if (a && !json_is_string(a) && !json_is_object(a))
            return BAD(p, "'%s' must be a string (JSON text) or an object", p);
    }
    *out = json_dumps(calls, JSON_COMPACT);
    return *out ? 0 : NOMEM();
}

/* ------------------------------------------------------------------ replies */

static int is_ws(char c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* One call object -> OpenAI's {"id","type","function":{"name","arguments"}}; NULL if invalid. */
static json_t *openai_call(const api_tools *t, json_t *c, const char *argkey,
                           void (*make_id)(char *, size_t, const char *)) {
    if (!json_is_object(c)) return NULL;
    json_t *nm = json_object_get(c, "name"), *a = json_object_get(c, argkey);
    if (!a) a = json_object_get(c, t->protocol == TOOLS_LLAMA31 ? "arguments" : "parameters");
    if (!json_is_string(nm) || tool_index(t, json_string_value(nm)) < 0) return NULL;
    if (t->named && strcmp(t->named, json_string_value(nm))) return NULL;
    if (json_object_size(c) != 2 || !json_is_object(a)) return NULL;
    char *args = json_dumps(a, JSON_COMPACT);
    char id[40];
    make_id(id, sizeof id, "call_");
    json_t *r = args ? json_pack("{s:s,s:s,s:{s:O,s:s}}", "id", id, "type", "function", "function",
                                 "name", nm, "arguments", args)
                     : NULL;
    free(args);
    return r;
}

json_t *tools_parse_reply(const api_tools *t, const char *text, size_t len,
                          void (*make_id)(char *dst, size_t cap, const char *prefix)) {
    if (!t || t->choice == TOOLS_NONE) return NULL;
    json_t *out = json_array();
    size_t i = 0;
    while (i < len && is_ws(text[i]))
        i++;
    if (!out || i == len) goto bad;
    if (t->protocol == TOOLS_GENERIC) {
        json_t *v = json_loadb(text + i, len - i, 0, NULL);
        json_t *calls = json_object_get(v, "tool_calls");
        if (!json_is_object(v) || json_object_size(v) != 1 || !json_is_array(calls) ||
            !json_array_size(calls)) {
            json_decref(v);
            goto bad;
        }
        for (size_t k = 0; k < json_array_size(calls); k++) {
            json_t *c = openai_call(t, json_array_get(calls, k), "arguments", make_id);
            if (!c || json_array_append_new(out, c)) {
                json_decref(v);
                goto bad;
            }
        }
        json_decref(v);
    } else {
        /* Llama 3.1: one object; Llama 3.2 may write several, separated by ';' or whitespace, or
         * a JSON array of them */
        while (i < len) {
            json_error_t je;
            json_t *v = json_loadb(text + i, len - i, JSON_DISABLE_EOF_CHECK, &je);
            if (!v) goto bad;
            size_t used = (size_t)je.position;
            json_t *items = json_is_array(v) ? json_incref(v) : json_pack("[O]", v);
            for (size_t k = 0; items && k < json_array_size(items); k++) {
                json_t *c = openai_call(t, json_array_get(items, k), "parameters", make_id);
                if (!c || json_array_append_new(out, c)) {
                    json_decref(items);
                    json_decref(v);
                    goto bad;
                }
            }
            json_decref(items);
            json_decref(v);
            if (!used || !json_array_size(out)) goto bad;
            i += used;
            while (i < len && (is_ws(text[i]) || text[i] == ';'))
                i++;
        }
    }
    if (!json_array_size(out)) goto bad;
    if (!t->parallel)
        while (json_array_size(out) > 1)
            json_array_remove(out, json_array_size(out) - 1);
    return out;
bad:
    json_decref(out);
    return NULL;
}
