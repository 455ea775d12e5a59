/*
 * chat.c -- chat templates: detection (l3c_chat_template_detect), formatting to text
 * (l3c_chat_format) and turn-safe tokenization (l3c_chat_tokenize).
 *
 * One formatter per template writes the conversation as a sequence of pieces through an emitter:
 * "markers" (the template's own control strings: "<|im_start|>", "<|eot_id|>", "</s>", ...) and
 * plain text (roles, newlines, message contents). Formatting concatenates all pieces. Tokenizing
 * turns each marker that is a vocabulary entry into its id, and tokenizes the plain text between
 * two such markers as ONE piece without special-token parsing. That is exactly how a reference
 * tokenizer splits the fully formatted string at special tokens (each fragment in between is
 * tokenized on its own), so for content without special-token text the ids equal
 * tokenize(format(msgs), PARSE_SPECIAL); content that contains "<|eot_id|>" stays plain text and
 * cannot forge a turn. Markers that are not single vocabulary entries ("[INST]") are plain text.
 *
 * Exact formats (contents trimmed where the reference templates trim them):
 *   LLAMA3  <|begin_of_text|> + per message
 * <|start_header_id|>ROLE<|end_header_id|>\n\nTRIM(C)<|eot_id|> add_assistant:
 * <|start_header_id|>assistant<|end_header_id|>\n\n CHATML  per message
 * <|im_start|>ROLE\nC<|im_end|>\n ; add_assistant: <|im_start|>assistant\n LLAMA2  (Meta / HF)
 * <s>[INST] STRIP(<<SYS>>\nS\n<</SYS>>\n\nU) [/INST] + " STRIP(A) </s>" ... add_assistant adds
 * nothing (the turn is open after [/INST]). ZEPHYR  per message <|ROLE|>\nC</s>\n ; add_assistant:
 * <|assistant|>\n LLAMA31 (Meta's Llama 3.1 / 3.2 / 3.3 Instruct tokenizer.chat_template, without
 * tools)
 *           <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n
 *           Cutting Knowledge Date: December 2023\nToday Date: DATE\n\n TRIM(S) <|eot_id|>
 *           (always; S = messages[0] when it is a system message, else empty), then per message
 *           like LLAMA3, except tool / ipython: <|start_header_id|>ipython<|end_header_id|>\n\n
 *           JSON(C)<|eot_id|> where JSON is Python's json.dumps(C, ensure_ascii=False): the
 *           template's `content is iterable` is true for a string, so it applies tojson.
 *           DATE: the template's date_string (default "26 Jul 2024"; Llama 3.2's template uses
 *           strftime_now("%d %b %Y") when the renderer defines it, as Hugging Face does).
 *           With tools (l3c_chat_format_tools): Meta's template with tools= and tool_calls
 *           (tools_in_user_message, its default): "Environment: ipython\n" opens the system turn,
 *           the tools (tojson(indent=4), each + "\n\n") after LLAMA31_TOOLS_PROMPT open the first
 *           message after the system message, an assistant message with a call is
 *           {"name": "NAME", "parameters": tojson(ARGS)}<|eot_id|>. LLAMA3 with tools: the same
 *           without the date lines ("Environment: ipython\n\n" + S).
 *   Others with tools: the generic protocol (generic_messages below).
 * TRIM is Python's str.strip() (Jinja's trim): Unicode whitespace, not only ASCII.
 *
 * Model-specific default: l3c_chat_tokenize (which knows the model) inserts the default system
 * message that the model's own tokenizer.chat_template renders when the conversation has none
 * (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"), so the
 * tokens match what Hugging Face's apply_chat_template produces. l3c_chat_format, which knows
 * only the template kind, never adds it.
 */
#include "io/pyjson.h"
#include "util/util.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- emitter */

typedef struct emitter {
    l3c_buf text;                /* format: everything; tokenize: plain text not yet tokenized */
    const l3c_tokenizer *tok;    /* NULL: format only */
    int32_t *ids;                /* tokenize: output ids [n_ids], capacity cap_ids */
    int64_t n_ids, cap_ids;
} emitter;

/* Room for `extra` more ids; ids is non-NULL afterwards. */
static l3c_status reserve(emitter *e, int64_t extra) {
    if (e->ids && e->n_ids + extra <= e->cap_ids) return L3C_OK;
    int64_t cap = e->cap_ids ? e->cap_ids : 256;
    while (cap < e->n_ids + extra) cap *= 2;
    int32_t *p = l3c_realloc(e->ids, (size_t)cap * sizeof *p);
    if (!p) return l3c_fail(L3C_ERR_NOMEM, "chat: out of memory for %lld tokens", (long long)cap);
    e->ids = p;
    e->cap_ids = cap;
    return L3C_OK;
}

/* Tokenizes the pending plain text (no special parsing); flags may ask for BOS. */
static l3c_status flush_text(emitter *e, int flags) {
    if (!e->tok || (e->text.len == 0 && !(flags & L3C_TOKENIZE_ADD_BOS))) return L3C_OK;
    const char *s = e->text.data ? e->text.data : "";
    int64_t need = l3c_tokenize(e->tok, s, e->text.len, NULL, 0, flags);
    if (need < 0) need = -need;
    l3c_status st = reserve(e, need);
    if (st) return st;
    if (need > 0) {
        int64_t got = l3c_tokenize(e->tok, s, e->text.len, e->ids + e->n_ids, e->cap_ids - e->n_ids, flags);
        if (got < 0 || got > need)
            return l3c_fail(L3C_ERR_FORMAT, "chat: tokenizer returned %lld tokens, expected %lld",
                            (long long)got, (long long)need);
        e->n_ids += got;
    }
    e->text.len = 0;
    if (e->text.data) e->text.data[0] = '\0';
    return L3C_OK;
}

static l3c_status emit_text(emitter *e, const char *s, size_t n) { return l3c_buf_append(&e->text, s, n); }
static l3c_status emit_str(emitter *e, const char *s) { return emit_text(e, s, strlen(s)); }

/* A template marker: a single special id when the vocabulary has it, plain text otherwise. */
static l3c_status emit_marker(emitter *e, const char *m) {
    if (e->tok) {
        int32_t id = l3c_token_lookup(e->tok, m, strlen(m));
        if (id >= 0) {
            l3c_status st = flush_text(e, 0);
            if (!st) st = reserve(e, 1);
            if (st) return st;
            e->ids[e->n_ids++] = id;
            return L3C_OK;
        }
    }
    return emit_str(e, m);
}

/* ---------------------------------------------------------------- formatters */

/* Python's str.isspace() code points (what str.strip() removes). */
static int is_space_cp(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

/* Length of a well-formed UTF-8 sequence at s[0..n) and its code point; 0 if malformed. */
static size_t utf8_at(const unsigned char *s, size_t n, uint32_t *cp) {
    size_t len = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || len > n) return 0;
    uint32_t c = len == 1 ? s[0] : s[0] & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        c = c << 6 | (s[k] & 0x3f);
    }
    *cp = c;
    return len;
}

/* [*b, *e) of s without leading / trailing whitespace (Python str.strip / Jinja trim; UTF-8). */
static void trim(const char *s, size_t n, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, j = n;
    uint32_t cp;
    for (size_t k; i < j && (k = utf8_at(u + i, j - i, &cp)) && is_space_cp(cp);) i += k;
    while (j > i) {
        size_t st = j - 1; /* start of the last sequence: back over continuation bytes */
        while (st > i && j - st < 4 && (u[st] & 0xc0) == 0x80) st--;
        size_t k = utf8_at(u + st, j - st, &cp);
        if (k != j - st || !is_space_cp(cp)) break;
        j = st;
    }
    *b = i;
    *e = j;
}

static l3c_status emit_trimmed(emitter *e, const char *s) {
    size_t b, en;
    trim(s, strlen(s), &b, &en);
    return emit_text(e, s + b, en - b);
}

#define TRY(x)                   \
    do {                         \
        l3c_status st_ = (x);    \
        if (st_) return st_;     \
    } while (0)

static l3c_status fmt_llama3(emitter *e, const l3c_chat_message *m, size_t n, int add_assistant) {
    TRY(emit_marker(e, "<|begin_of_text|>"));
    for (size_t i = 0; i < n; i++) {
        TRY(emit_marker(e, "<|start_header_id|>"));
        TRY(emit_str(e, m[i].role));
        TRY(emit_marker(e, "<|end_header_id|>"));
        TRY(emit_str(e, "\n\n"));
        TRY(emit_trimmed(e, m[i].content));
        TRY(emit_marker(e, "<|eot_id|>"));
    }
    if (add_assistant) {
        TRY(emit_marker(e, "<|start_header_id|>"));
        TRY(emit_str(e, "assistant"));
        TRY(emit_marker(e, "<|end_header_id|>"));
        TRY(emit_str(e, "\n\n"));
    }
    return L3C_OK;
}

/* Python's json.dumps(s, ensure_ascii=False) of a string (HF's tojson filter). */
static l3c_status emit_json_string(emitter *e, const char *s) {
    TRY(emit_str(e, "\""));
    const char *run = s;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c && c >= 0x20 && c != '"' && c != '\\') continue;
        TRY(emit_text(e, run, (size_t)(p - run)));
        if (!c) break;
        char esc[8];
        switch (c) {
        case '"': strcpy(esc, "\\\""); break;
        case '\\': strcpy(esc, "\\\\"); break;
        case '\n': strcpy(esc, "\\n"); break;
        case '\r': strcpy(esc, "\\r"); break;
        case '\t': strcpy(esc, "\\t"); break;
        case '\b': strcpy(esc, "\\b"); break;
        case '\f': strcpy(esc, "\\f"); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", c); break;
        }
        TRY(emit_str(e, esc));
        run = p + 1;
    }
    return emit_str(e, "\"");
}

static l3c_status header(emitter *e, const char *role) {
    TRY(emit_marker(e, "<|start_header_id|>"));
    TRY(emit_str(e, role));
    TRY(emit_marker(e, "<|end_header_id|>"));
    return emit_str(e, "\n\n");
}

/* ---------------------------------------------------------------- tools */

/* A conversation's tools, parsed from l3c_chat_tools: the definitions (a JSON array, NULL: none)
 * and per message its calls (a non-empty JSON array, NULL: none). */
typedef struct tools_ctx {
    json_t *defs;
    json_t **calls; /* [n] */
} tools_ctx;

static const json_t *msg_calls(const tools_ctx *tc, size_t i) {
    return tc && tc->calls ? tc->calls[i] : NULL;
}

static l3c_status emit_pyjson(emitter *e, const json_t *j, int indent) {
    l3c_buf b = {0};
    l3c_status st = l3c_pyjson_dump(j, indent, &b);
    if (!st && b.len) st = emit_text(e, b.data, b.len);
    l3c_buf_free(&b);
    return st;
}

/* The call's function name and arguments ({"function": {"name", "arguments"}} as OpenAI writes
 * it, or {"name", "arguments"}); arguments given as a JSON string are parsed (a string that is
 * not JSON stays a string). *args is a new reference. */
static l3c_status call_parts(const json_t *call, size_t msg, size_t k, const char **name,
                             json_t **args) {
    const json_t *f = json_object_get(call, "function");
    if (!json_is_object(f)) f = call;
    const json_t *nm = json_object_get(f, "name");
    if (!json_is_string(nm))
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "chat: message %zu: tool call %zu has no function name", msg, k);
    *name = json_string_value(nm);
    json_t *a = json_object_get(f, "arguments");
    if (!a) a = json_object_get(f, "parameters");
    if (json_is_string(a)) {
        json_t *parsed =
            json_loadb(json_string_value(a), json_string_length(a), JSON_DECODE_ANY, NULL);
        *args = parsed ? parsed : json_incref(a);
    } else {
        *args = a ? json_incref(a) : json_object();
    }
    return *args ? L3C_OK : l3c_fail(L3C_ERR_NOMEM, "chat: out of memory");
}

/* Llama 3.1's custom tool call: {"name": "NAME", "parameters": tojson(ARGS)} */
static l3c_status emit_llama31_call(emitter *e, const json_t *call, size_t msg, size_t k) {
    const char *name;
    json_t *args;
    TRY(call_parts(call, msg, k, &name, &args));
    l3c_status st = emit_str(e, "{\"name\": \"");
    if (!st) st = emit_str(e, name);
    if (!st) st = emit_str(e, "\", \"parameters\": ");
    if (!st) st = emit_pyjson(e, args, -1);
    if (!st) st = emit_str(e, "}");
    json_decref(args);
    return st;
}

#define LLAMA31_TOOLS_PROMPT                                                                       \
    "Given the following functions, please respond with a JSON for a function call with its "      \
    "proper "                                                                                      \
    "arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function "  \
    "name, "                                                                                       \
    "\"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n"

/* Llama 3.1 (is31) and Llama 3 with tools: Meta's Llama 3.1 template (tools_in_user_message). */
static l3c_status fmt_llama31(emitter *e, const l3c_chat_message *m, size_t n, int add_assistant,
                              const char *date, const tools_ctx *tc, int is31) {
    size_t i = 0;
    const char *sys = "";
    const json_t *defs = tc ? tc->defs : NULL;
    if (n > 0 && !strcmp(m[0].role, "system")) sys = m[i++].content;
    TRY(emit_marker(e, "<|begin_of_text|>"));
    TRY(header(e, "system"));
    if (defs) TRY(emit_str(e, is31 ? "Environment: ipython\n" : "Environment: ipython\n\n"));
    if (is31) {
        TRY(emit_str(e, "Cutting Knowledge Date: December 2023\nToday Date: "));
        TRY(emit_str(e, date));
        TRY(emit_str(e, "\n\n"));
    }
    TRY(emit_trimmed(e, sys));
    TRY(emit_marker(e, "<|eot_id|>"));
    if (defs) { /* the tools go in front of the first message after the system message */
        if (i >= n)
            return l3c_fail(L3C_ERR_INVALID_ARG,
                            "chat: the Llama 3.1 template puts the tools into the first "
                            "user message, and the conversation has none");
        TRY(header(e, "user"));
        TRY(emit_str(e, LLAMA31_TOOLS_PROMPT));
        for (size_t k = 0; k < json_array_size(defs); k++) {
            TRY(emit_pyjson(e, json_array_get(defs, k), 4));
            TRY(emit_str(e, "\n\n"));
        }
        TRY(emit_trimmed(e, m[i++].content));
        TRY(emit_marker(e, "<|eot_id|>"));
    }
    for (; i < n; i++) {
        const json_t *calls = msg_calls(tc, i);
        if (calls) { /* Meta's template takes one call; several become consecutive turns */
            for (size_t k = 0; k < json_array_size(calls); k++) {
                TRY(header(e, "assistant"));
                TRY(emit_llama31_call(e, json_array_get(calls, k), i, k));
                TRY(emit_marker(e, "<|eot_id|>"));
            }
            continue;
        }
        if (!strcmp(m[i].role, "ipython") || !strcmp(m[i].role, "tool")) {
            TRY(header(e, "ipython"));
            TRY(emit_json_string(e, m[i].content));
        } else {
            TRY(header(e, m[i].role));
            TRY(emit_trimmed(e, m[i].content));
        }
        TRY(emit_marker(e, "<|eot_id|>"));
    }
    if (add_assistant) TRY(header(e, "assistant"));
    return L3C_OK;
}

static l3c_status fmt_chatml(emitter *e, const l3c_chat_message *m, size_t n, int add_assistant) {
    for (size_t i = 0; i < n; i++) {
        TRY(emit_marker(e, "<|im_start|>"));
        TRY(emit_str(e, m[i].role));
        TRY(emit_str(e, "\n"));
        TRY(emit_str(e, m[i].content));
        TRY(emit_marker(e, "<|im_end|>"));
        TRY(emit_str(e, "\n"));
    }
    if (add_assistant) {
        TRY(emit_marker(e, "<|im_start|>"));
        TRY(emit_str(e, "assistant\n"));
    }
    return L3C_OK;
}

/* One Llama 2 user turn: <s>[INST] STRIP(sys block + content) [/INST] */
static l3c_status llama2_user(emitter *e, const char *sys, const char *content) {
    l3c_buf body = {0};
    l3c_status st = L3C_OK;
    if (sys) st = l3c_buf_appendf(&body, "<<SYS>>\n%s\n<</SYS>>\n\n", sys);
    if (!st) st = l3c_buf_append(&body, content, strlen(content));
    if (!st) st = emit_marker(e, "<s>");
    if (!st) st = emit_str(e, "[INST] ");
    if (!st) {
        size_t b, en;
        trim(body.data, body.len, &b, &en);
        st = emit_text(e, body.data + b, en - b);
    }
    if (!st) st = emit_str(e, " [/INST]");
    l3c_buf_free(&body);
    return st;
}

static l3c_status fmt_llama2(emitter *e, const l3c_chat_message *m, size_t n, int add_assistant) {
    const char *sys = NULL; /* a system message waits for the next user turn */
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(m[i].role, "system")) {
            sys = m[i].content;
        } else if (!strcmp(m[i].role, "assistant")) {
            TRY(emit_str(e, " "));
            TRY(emit_trimmed(e, m[i].content));
            TRY(emit_str(e, " "));
            TRY(emit_marker(e, "</s>"));
        } else { /* user, and tool / ipython results, which Llama 2 has no role for */
            TRY(llama2_user(e, sys, m[i].content));
            sys = NULL;
        }
    }
    if (sys && add_assistant) TRY(llama2_user(e, sys, ""));
    return L3C_OK;
}

static l3c_status fmt_zephyr(emitter *e, const l3c_chat_message *m, size_t n, int add_assistant) {
    for (size_t i = 0; i < n; i++) {
        TRY(emit_str(e, "<|"));
        TRY(emit_str(e, m[i].role));
        TRY(emit_str(e, "|>\n"));
        TRY(emit_str(e, m[i].content));
        TRY(emit_marker(e, "</s>"));
        TRY(emit_str(e, "\n"));
    }
    if (add_assistant) TRY(emit_str(e, "<|assistant|>\n"));
    return L3C_OK;
}

#define LLAMA31_DEFAULT_DATE "26 Jul 2024"

/* ---------------------------------------------------------------- tools: parsing and the generic
 * protocol */

static void tools_ctx_free(tools_ctx *tc, size_t n) {
    json_decref(tc->defs);
    if (tc->calls)
        for (size_t i = 0; i < n; i++)
            json_decref(tc->calls[i]);
    free(tc->calls);
    memset(tc, 0, sizeof *tc);
}

/* Parses l3c_chat_tools into tc; *any = 0 when there is nothing to render. */
static l3c_status tools_ctx_parse(const l3c_chat_tools *tools, size_t n, tools_ctx *tc, int *any) {
    memset(tc, 0, sizeof *tc);
    *any = 0;
    if (!tools) return L3C_OK;
    if (tools->tools) {
        json_error_t je;
        tc->defs = json_loads(tools->tools, 0, &je);
        if (!json_is_array(tc->defs)) {
            tools_ctx_free(tc, n);
            return l3c_fail(L3C_ERR_INVALID_ARG,
                            "chat: tools must be a JSON array of tool definitions%s%s",
                            je.text[0] ? ": " : "", je.text);
        }
        for (size_t k = 0; k < json_array_size(tc->defs); k++)
            if (!json_is_object(json_array_get(tc->defs, k))) {
                tools_ctx_free(tc, n);
                return l3c_fail(L3C_ERR_INVALID_ARG, "chat: tools[%zu] is not a JSON object", k);
            }
        *any = 1;
    }
    if (tools->tool_calls && n) {
        tc->calls = l3c_calloc(n, sizeof *tc->calls);
        if (!tc->calls) {
            tools_ctx_free(tc, n);
            return l3c_fail(L3C_ERR_NOMEM, "chat: out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            if (!tools->tool_calls[i]) continue;
            json_t *c = json_loads(tools->tool_calls[i], 0, NULL);
            if (!json_is_array(c)) {
                json_decref(c);
                tools_ctx_free(tc, n);
                return l3c_fail(L3C_ERR_INVALID_ARG,
                                "chat: message %zu: tool_calls must be a JSON array", i);
            }
            if (json_array_size(c) == 0) {
                json_decref(c);
                continue;
            }
            tc->calls[i] = c;
            *any = 1;
        }
    }
    return L3C_OK;
}

#define GENERIC_TOOLS_PROMPT_END                                                                   \
    "\nTo call one or more of them, reply with only a JSON object of the form {\"tool_calls\": "   \
    "[{\"name\": "                                                                                 \
    "\"function name\", \"arguments\": {\"argument name\": value}}]} and nothing else. Otherwise " \
    "answer "                                                                                      \
    "in plain text."

/* Messages rewritten for a template without a tool protocol of its own (ChatML, Llama 2, Zephyr):
 * the tool list goes at the end of the system message (one is added first when there is none),
 * an assistant message with calls gets {"tool_calls": [{"name", "arguments"}]} after its content,
 * tool results keep their role. out[] and the strings in *bufs are caller-freed. */
static l3c_status generic_messages(const l3c_chat_message *m, size_t n, const tools_ctx *tc,
                                   l3c_chat_message **out, size_t *out_n, l3c_buf **bufs) {
    size_t add = tc->defs && !(n > 0 && !strcmp(m[0].role, "system"));
    l3c_chat_message *o = l3c_calloc(n + add, sizeof *o);
    l3c_buf *b = l3c_calloc(n + 1, sizeof *b);
    l3c_status st = L3C_OK;
    *out = NULL;
    *bufs = NULL;
    if (!o || !b) {
        free(o);
        free(b);
        return l3c_fail(L3C_ERR_NOMEM, "chat: out of memory");
    }
    if (add) o[0] = (l3c_chat_message){"system", ""};
    memcpy(o + add, m, n * sizeof *m);
    if (tc->defs) {
        l3c_buf *s = &b[n];
        if (o[0].content[0]) st = l3c_buf_appendf(s, "%s\n\n", o[0].content);
        if (!st) st = l3c_buf_appendf(s, "You can call the following functions (tools):\n");
        for (size_t k = 0; !st && k < json_array_size(tc->defs); k++) {
            st = l3c_pyjson_dump(json_array_get(tc->defs, k), -1, s);
            if (!st) st = l3c_buf_append(s, "\n", 1);
        }
        if (!st) st = l3c_buf_appendf(s, "%s", GENERIC_TOOLS_PROMPT_END);
        if (!st) o[0].content = s->data;
    }
    for (size_t i = 0; !st && i < n; i++) {
        const json_t *calls = msg_calls(tc, i);
        if (!calls) continue;
        json_t *list = json_array(), *obj = json_pack("{s:o}", "tool_calls", list);
        if (!list || !obj) st = l3c_fail(L3C_ERR_NOMEM, "chat: out of memory");
        for (size_t k = 0; !st && k < json_array_size(calls); k++) {
            const char *name;
            json_t *args;
            st = call_parts(json_array_get(calls, k), i, k, &name, &args);
            if (!st && json_array_append_new(
                           list, json_pack("{s:s,s:o}", "name", name, "arguments", args)))
                st = l3c_fail(L3C_ERR_NOMEM, "chat: out of memory");
        }
        size_t cb, ce;
        trim(m[i].content, strlen(m[i].content), &cb, &ce);
        if (!st && ce > cb)
            st = l3c_buf_appendf(&b[i], "%.*s\n", (int)(ce - cb), m[i].content + cb);
        if (!st) st = l3c_pyjson_dump(obj, -1, &b[i]);
        json_decref(obj);
        if (!st) o[i + add].content = b[i].data;
    }
    if (st) {
        for (size_t i = 0; i <= n; i++)
            l3c_buf_free(&b[i]);
        free(b);
        free(o);
        return st;
    }
    *out = o;
    *out_n = n + add;
    *bufs = b;
    return L3C_OK;
}

static l3c_status format_any(emitter *e, l3c_chat_template t, const l3c_chat_message *m, size_t n,
                             int add_assistant, const char *date, const l3c_chat_tools *tools) {
    if (n && !m) return l3c_fail(L3C_ERR_INVALID_ARG, "chat: %zu messages but msgs is NULL", n);
    for (size_t i = 0; i < n; i++)
        if (!m[i].role || !m[i].content)
            return l3c_fail(L3C_ERR_INVALID_ARG, "chat: message %zu has a NULL %s", i,
                            m[i].role ? "content" : "role");
    if (t < L3C_CHAT_LLAMA3 || t > L3C_CHAT_LLAMA31)
        return l3c_fail(L3C_ERR_INVALID_ARG, "chat: template %d is not a concrete template (resolve "
                        "L3C_CHAT_AUTO with l3c_chat_template_detect)", (int)t);
    tools_ctx tc;
    int any;
    TRY(tools_ctx_parse(tools, n, &tc, &any));
    l3c_status st;
    if (!date) date = LLAMA31_DEFAULT_DATE;
    if (t == L3C_CHAT_LLAMA31 || (t == L3C_CHAT_LLAMA3 && any)) {
        st = fmt_llama31(e, m, n, add_assistant, date, any ? &tc : NULL, t == L3C_CHAT_LLAMA31);
    } else {
        l3c_chat_message *gm = NULL;
        l3c_buf *bufs = NULL;
        size_t gn = n;
        st = any ? generic_messages(m, n, &tc, &gm, &gn, &bufs) : L3C_OK;
        const l3c_chat_message *mm = gm ? gm : m;
        if (!st) switch (t) {
            case L3C_CHAT_LLAMA3:
                st = fmt_llama3(e, mm, gn, add_assistant);
                break;
            case L3C_CHAT_CHATML:
                st = fmt_chatml(e, mm, gn, add_assistant);
                break;
            case L3C_CHAT_LLAMA2:
                st = fmt_llama2(e, mm, gn, add_assistant);
                break;
            default:
                st = fmt_zephyr(e, mm, gn, add_assistant);
                break;
            }
        if (bufs)
            for (size_t i = 0; i <= n; i++)
                l3c_buf_free(&bufs[i]);
        free(bufs);
        free(gm);
    }
    tools_ctx_free(&tc, n);
    return st;
}

/* ---------------------------------------------------------------- public API */

const char *l3c_chat_template_name(l3c_chat_template t) {
    switch (t) {
    case L3C_CHAT_AUTO: return "auto";
    case L3C_CHAT_LLAMA3: return "llama3";
    case L3C_CHAT_CHATML: return "chatml";
    case L3C_CHAT_LLAMA2: return "llama2";
    case L3C_CHAT_ZEPHYR: return "zephyr";
    case L3C_CHAT_LLAMA31: return "llama31";
    }
    return "unknown";
}

static l3c_chat_template detect_from_text(const char *tmpl) {
    /* Llama 3.1 / 3.2 / 3.3 Instruct: the built-in system block */
    if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "Cutting Knowledge Date")) return L3C_CHAT_LLAMA31;
    if (strstr(tmpl, "<|start_header_id|>")) return L3C_CHAT_LLAMA3;
    if (strstr(tmpl, "<|im_start|>")) return L3C_CHAT_CHATML;
    if (strstr(tmpl, "[INST]")) return L3C_CHAT_LLAMA2;
    if (strstr(tmpl, "<|user|>")) return L3C_CHAT_ZEPHYR;
    return L3C_CHAT_AUTO;
}

static int has_token(const l3c_tokenizer *tok, const char *s) {
    return tok && l3c_token_lookup(tok, s, strlen(s)) >= 0;
}

l3c_chat_template l3c_chat_template_detect(const l3c_model *model) {
    if (!model) return L3C_CHAT_CHATML;
    const char *tmpl = l3c_model_meta_str(model, "tokenizer.chat_template");
    if (tmpl) {
        l3c_chat_template t = detect_from_text(tmpl);
        if (t != L3C_CHAT_AUTO) return t;
    }
    /* no (recognised) template: the vocabulary tells the family */
    const l3c_tokenizer *tok = l3c_model_tokenizer(model);
    if (has_token(tok, "<|start_header_id|>")) return L3C_CHAT_LLAMA3;
    if (has_token(tok, "<|im_start|>")) return L3C_CHAT_CHATML;
    if (has_token(tok, "<|user|>")) return L3C_CHAT_ZEPHYR;
    if (has_token(tok, "<s>") && has_token(tok, "</s>")) return L3C_CHAT_LLAMA2;
    return L3C_CHAT_CHATML; /* llama.cpp's fallback as well */
}

l3c_status l3c_chat_format(l3c_chat_template t, const l3c_chat_message *msgs, size_t n,
                           int add_assistant, char **out) {
    return l3c_chat_format_ex(t, msgs, n, add_assistant, NULL, out);
}

l3c_status l3c_chat_format_ex(l3c_chat_template t, const l3c_chat_message *msgs, size_t n,
                              int add_assistant, const char *date, char **out) {
    return l3c_chat_format_tools(t, msgs, n, NULL, add_assistant, date, out);
}

l3c_status l3c_chat_format_tools(l3c_chat_template t, const l3c_chat_message *msgs, size_t n,
                                 const l3c_chat_tools *tools, int add_assistant, const char *date,
                                 char **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "chat: out is NULL");
    *out = NULL;
    emitter e = {0};
    l3c_status st = format_any(&e, t, msgs, n, add_assistant, date, tools);
    if (!st) st = l3c_buf_append(&e.text, "", 0); /* non-NULL and NUL-terminated even when empty */
    if (st) goto fail;
    *out = e.text.data;
    return L3C_OK;
fail:
    l3c_buf_free(&e.text);
    return st;
}

/*
 * The default system message of a ChatML template that renders one when messages[0] is not a
 * system message, e.g. SmolLM2's
 *   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}
 * Returns a caller-freed string, or NULL when the template has no such default (or on NOMEM,
 * which then only loses the default).
 */
static char *chatml_default_system(const char *tmpl) {
    const char *cond = strstr(tmpl, "!= 'system'");
    if (!cond) cond = strstr(tmpl, "!= \"system\"");
    if (!cond) return NULL;
    const char *hdr = "<|im_start|>system";
    const char *p = strstr(cond, hdr);
    if (!p) return NULL;
    /* the enclosing Jinja string literal: find its opening quote on the same {{ }} expression */
    const char *q = p;
    while (q > cond && *(q - 1) != '\'' && *(q - 1) != '"') q--;
    if (q == cond) return NULL;
    char quote = *(q - 1);
    l3c_buf lit = {0};
    for (const char *c = q; *c && *c != quote; c++) { /* decode the literal's escapes */
        char ch = *c;
        if (ch == '\\' && c[1]) {
            c++;
            ch = *c == 'n' ? '\n' : *c == 't' ? '\t' : *c == 'r' ? '\r' : *c;
        }
        if (l3c_buf_append(&lit, &ch, 1)) {
            l3c_buf_free(&lit);
            return NULL;
        }
    }
    char *res = NULL;
    size_t hl = strlen(hdr);
    const char *s = lit.data;
    if (s && !strncmp(s, hdr, hl) && s[hl] == '\n') {
        const char *body = s + hl + 1, *end = strstr(body, "<|im_end|>");
        if (end) res = l3c_strndup(body, (size_t)(end - body));
    }
    l3c_buf_free(&lit);
    return res;
}

l3c_status l3c_chat_tokenize(const l3c_model *model, l3c_chat_template t, const l3c_chat_message *msgs,
                             size_t n, int add_assistant, int32_t **out_ids, int64_t *out_n) {
    return l3c_chat_tokenize_ex(model, t, msgs, n, add_assistant, NULL, out_ids, out_n);
}

l3c_status l3c_chat_tokenize_ex(const l3c_model *model, l3c_chat_template t, const l3c_chat_message *msgs,
                                size_t n, int add_assistant, const char *date, int32_t **out_ids,
                                int64_t *out_n) {
    return l3c_chat_tokenize_tools(model, t, msgs, n, NULL, add_assistant, date, out_ids, out_n);
}

l3c_status l3c_chat_tokenize_tools(const l3c_model *model, l3c_chat_template t,
                                   const l3c_chat_message *msgs, size_t n,
                                   const l3c_chat_tools *tools, int add_assistant, const char *date,
                                   int32_t **out_ids, int64_t *out_n) {
    emitter e = {0};
    char today[64];
    char *def_sys = NULL;
    l3c_chat_message *with_sys = NULL;
    const l3c_chat_tools *tools_sh = tools; /* tool_calls shifted with the default system message */
    l3c_chat_tools shifted = {0};
    const char **calls_sh = NULL;
    l3c_status st;
    if (!out_ids || !out_n) return l3c_fail(L3C_ERR_INVALID_ARG, "chat: NULL output pointer");
    *out_ids = NULL;
    *out_n = 0;
    if (!model) return l3c_fail(L3C_ERR_INVALID_ARG, "chat: NULL model");
    e.tok = l3c_model_tokenizer(model);
    if (!e.tok) return l3c_fail(L3C_ERR_INVALID_ARG, "chat: the model has no tokenizer");
    if (t == L3C_CHAT_AUTO) t = l3c_chat_template_detect(model);

    /* the model's own default system message, when its template (of this kind) has one */
    const char *tmpl = l3c_model_meta_str(model, "tokenizer.chat_template");
    if (t == L3C_CHAT_CHATML && tmpl && detect_from_text(tmpl) == t && msgs && n > 0 && msgs[0].role &&
        strcmp(msgs[0].role, "system") != 0)
        def_sys = chatml_default_system(tmpl);
    if (def_sys) {
        with_sys = l3c_malloc((n + 1) * sizeof *with_sys);
        if (!with_sys) {
            st = l3c_fail(L3C_ERR_NOMEM, "chat: out of memory");
            goto fail;
        }
        with_sys[0].role = "system";
        with_sys[0].content = def_sys;
        memcpy(with_sys + 1, msgs, n * sizeof *msgs);
        msgs = with_sys;
        if (tools && tools->tool_calls) {
            calls_sh = l3c_calloc(n + 1, sizeof *calls_sh);
            if (!calls_sh) {
                st = l3c_fail(L3C_ERR_NOMEM, "chat: out of memory");
                goto fail;
            }
            memcpy(calls_sh + 1, tools->tool_calls, n * sizeof *calls_sh);
            shifted = *tools;
            shifted.tool_calls = calls_sh;
            tools_sh = &shifted;
        }
        n++;
    }

    /* Llama 3.2's template: date_string = strftime_now("%d %b %Y") (Hugging Face defines it) */
    if (t == L3C_CHAT_LLAMA31 && !date && tmpl && strstr(tmpl, "strftime_now")) {
        time_t now = time(NULL);
        struct tm tm;
        if (localtime_r(&now, &tm) && strftime(today, sizeof today, "%d %b %Y", &tm) > 0) date = today;
    }

    /* Zephyr (TinyLlama) text has no BOS marker; the tokenizer adds it when the model wants one */
    if (t == L3C_CHAT_ZEPHYR && (st = flush_text(&e, L3C_TOKENIZE_ADD_BOS))) goto fail;
    if ((st = format_any(&e, t, msgs, n, add_assistant, date, tools_sh))) goto fail;
    if ((st = flush_text(&e, 0))) goto fail;
    if ((st = reserve(&e, 0))) goto fail; /* a valid array even when empty */
    *out_ids = e.ids;
    *out_n = e.n_ids;
    l3c_buf_free(&e.text);
    free(def_sys);
    free(with_sys);
    free(calls_sh);
    return L3C_OK;
fail:
    free(e.ids);
    l3c_buf_free(&e.text);
    free(def_sys);
    free(with_sys);
    free(calls_sh);
    return st;
}
