/*
 * openai.c -- request validation and response writing in OpenAI's wire format (see openai.h).
 *
 * Invariants
 *  - JSON is only read and written with jansson; nothing here parses or prints JSON by hand.
 *  - Every field is type- and range-checked before use; a wrong one gives a 400 that names it
 *    in error.param. Unknown fields are ignored, as OpenAI does for forward compatibility.
 *  - Text put into JSON is valid UTF-8 (invalid bytes become U+FFFD), so jansson never refuses it.
 *  - Work per request is bounded by the body size: prompts longer (in bytes) than the context
 *    could hold at MAX_BYTES_PER_TOKEN are refused before tokenizing.
 */
#include "openai.h"

#include "grammar_cache.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BYTES_PER_TOKEN 64
#define MAX_STOP_BYTES 512
#define MAX_LOGIT_BIAS 1024
#define MAX_MODEL_NAME 256

#define BAD(param, ...) api_fail(err, 400, "invalid_request_error", param, NULL, __VA_ARGS__)

/* ------------------------------------------------------------------ UTF-8 */

size_t api_utf8_sanitize(const char *src, size_t n, char *dst) {
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = 0;
        unsigned cp = 0, min = 0;
        if (c < 0x80) {
            dst[o++] = (char)c;
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        }
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) ok = 0;
            else cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = 0;
        if (ok) {
            memcpy(dst + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(dst + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    dst[o] = 0;
    return o;
}

/* A JSON string of arbitrary bytes (invalid UTF-8 replaced). NULL when out of memory. */
static json_t *json_text(const char *p, size_t n) {
    if (n > (((size_t)-1) - 1) / 3) return NULL;
    char *buf = malloc(3 * n + 1);
    if (!buf) return NULL;
    size_t m = api_utf8_sanitize(p ? p : "", p ? n : 0, buf);
    json_t *j = json_stringn(buf, m);
    free(buf);
    return j;
}

/* ------------------------------------------------------------------ ids */

static pthread_mutex_t g_id_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long g_id_state;

static void make_id(char *dst, size_t cap, const char *prefix) {
    pthread_mutex_lock(&g_id_mu);
    if (!g_id_state) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        g_id_state = ((unsigned long long)ts.tv_sec << 32) ^ (unsigned long long)ts.tv_nsec ^ 0x9E3779B97F4A7C15ULL;
    }
    /* splitmix64: unique per process run (a counter under a bijection), unpredictable enough
     * for ids that are not secrets */
    unsigned long long z = (g_id_state += 0x9E3779B97F4A7C15ULL);
    pthread_mutex_unlock(&g_id_mu);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    snprintf(dst, cap, "%s%016llx", prefix, z);
}

static unsigned long long random_seed(void) {
    char id[32];
    make_id(id, sizeof id, "");
    return strtoull(id, NULL, 16);
}

/* ------------------------------------------------------------------ field readers */

/* Gets an optional field; absent and null both give NULL. */
static json_t *opt(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static unsigned get_number(json_t *obj, const char *key, double lo, double hi, double *out,
                           api_error *err) {
    json_t *v = opt(obj, key);
    if (!v) return 0;
    if (!json_is_number(v)) return BAD(key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return BAD(key, "'%s' must be between %g and %g", key, lo, hi);
    *out = d;
    return 0;
}

static unsigned get_int(json_t *obj, const char *key, long long lo, long long hi, long long *out,
                        int *present, api_error *err) {
    json_t *v = opt(obj, key);
    if (!v) return 0;
    if (!json_is_integer(v)) return BAD(key, "'%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return BAD(key, "'%s' must be between %lld and %lld", key, lo, hi);
    *out = x;
    if (present) *present = 1;
    return 0;
}

static unsigned get_bool(json_t *obj, const char *key, int *out, api_error *err) {
    json_t *v = opt(obj, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return BAD(key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

/* ------------------------------------------------------------------ prompts */

typedef struct strbuf {
    char *p;
    size_t len, cap;
} strbuf;

static int sb_add(strbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

static const char *k_roles[] = {"system", "user", "assistant", "tool", "ipython"};

static unsigned chat_prompt(const server *srv, json_t *body, api_request *r, api_error *err) {
    json_t *msgs = json_object_get(body, "messages");
    if (!msgs) return BAD("messages", "'messages' is a required property");
    if (!json_is_array(msgs)) return BAD("messages", "'messages' must be an array");
    size_t n = json_array_size(msgs);
    if (n == 0) return BAD("messages", "'messages' must contain at least one message");
    l3c_chat_message *cm = calloc(n, sizeof *cm);
    strbuf *texts = calloc(n, sizeof *texts);
    char **calls = calloc(n, sizeof *calls); /* per message: its tool_calls as JSON text, or NULL */
    int any_calls = 0;
    unsigned st = 0;
    size_t total = 0;
    char pname[64];
    if (!cm || !texts || !calls) {
        st = api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) {
            snprintf(pname, sizeof pname, "messages[%zu]", i);
            st = BAD(pname, "'messages[%zu]' must be an object", i);
            goto done;
        }
        json_t *role = json_object_get(m, "role");
        snprintf(pname, sizeof pname, "messages[%zu].role", i);
        if (!json_is_string(role)) {
            st = BAD(pname, "'messages[%zu].role' must be a string", i);
            goto done;
        }
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system";
        cm[i].role = NULL;
        for (size_t k = 0; k < sizeof k_roles / sizeof k_roles[0]; k++)
            if (!strcmp(rs, k_roles[k])) cm[i].role = k_roles[k];
        if (!cm[i].role) {
            st = BAD(pname, "'messages[%zu].role' must be one of system, user, assistant, tool", i);
            goto done;
        }
        if (!strcmp(cm[i].role, "assistant")) {
            if ((st = tools_message_calls(m, i, &calls[i], err))) goto done;
            if (calls[i]) {
                any_calls = 1;
                total += strlen(calls[i]);
            }
        }
        json_t *c = json_object_get(m, "content");
        snprintf(pname, sizeof pname, "messages[%zu].content", i);
        if (json_is_string(c)) {
            if (sb_add(&texts[i], json_string_value(c), json_string_length(c))) goto nomem;
        } else if (json_is_array(c)) {
            size_t idx;
            json_t *part;
            json_array_foreach(c, idx, part) {
                json_t *ty = json_object_get(part, "type"), *tx = json_object_get(part, "text");
                if (!json_is_object(part) || !json_is_string(ty) || strcmp(json_string_value(ty), "text")) {
                    st = BAD(pname, "only content parts of type 'text' are supported");
                    goto done;
                }
                if (!json_is_string(tx)) {
                    st = BAD(pname, "a content part of type 'text' needs a string 'text'");
                    goto done;
                }
                if (idx > 0 && sb_add(&texts[i], "\n", 1)) goto nomem;
                if (sb_add(&texts[i], json_string_value(tx), json_string_length(tx))) goto nomem;
            }
        } else if (!c || json_is_null(c)) {
            if (strcmp(cm[i].role, "assistant")) {
                st = BAD(pname, "'messages[%zu].content' is required", i);
                goto done;
            }
        } else {
            st = BAD(pname, "'messages[%zu].content' must be a string or an array of text parts", i);
            goto done;
        }
        if (sb_add(&texts[i], "", 0)) goto nomem;
        cm[i].content = texts[i].p;
        total += texts[i].len;
    }
    if (total > (size_t)srv->n_ctx * MAX_BYTES_PER_TOKEN) {
        st = api_fail(err, 400, "invalid_request_error", "messages", "context_length_exceeded",
                      "the messages (%zu bytes) cannot fit the context of %d tokens", total, srv->n_ctx);
        goto done;
    }
    int64_t nt = 0;
    int32_t *ids = NULL;
    l3c_chat_tools ct = {r->tools ? r->tools->defs_json : NULL,
                         any_calls ? (const char *const *)calls : NULL};
    if (l3c_chat_tokenize_tools(srv->model, srv->tmpl, cm, n, &ct, 1, NULL, &ids, &nt) != L3C_OK) {
        st = BAD("messages", "cannot format the conversation: %s", l3c_last_error());
        goto done;
    }
    if (nt <= 0 || nt > INT32_MAX) {
        l3c_free(ids);
        st = BAD("messages", "the conversation gives no tokens");
        goto done;
    }
    r->prompt = malloc((size_t)nt * sizeof *r->prompt);
    if (!r->prompt) {
        l3c_free(ids);
        goto nomem;
    }
    memcpy(r->prompt, ids, (size_t)nt * sizeof *ids);
    l3c_free(ids);
    r->n_prompt = (int32_t)nt;
    goto done;
nomem:
    st = api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
done:
    if (texts)
        for (size_t i = 0; i < n; i++) free(texts[i].p);
    if (calls)
        for (size_t i = 0; i < n; i++)
            free(calls[i]);
    free(calls);
    free(texts);
    free(cm);
    return st;
}

/* Tokenizes completion text. Special-token text in the prompt becomes the special token (as
 * llama.cpp's server does: a raw completion prompt may carry its own chat markers). BOS is
 * prepended when the vocabulary asks for it (add_bos_token), as `llama3c run` does. */
static unsigned tokenize_text(const server *srv, const char *text, size_t len, api_request *r,
                              api_error *err) {
    if (len > (size_t)srv->n_ctx * MAX_BYTES_PER_TOKEN)
        return api_fail(err, 400, "invalid_request_error", "prompt", "context_length_exceeded",
                        "the prompt (%zu bytes) cannot fit the context of %d tokens", len, srv->n_ctx);
    int flags = L3C_TOKENIZE_PARSE_SPECIAL | L3C_TOKENIZE_ADD_BOS;
    int64_t cap = (int64_t)len + 2;
    r->prompt = malloc((size_t)cap * sizeof *r->prompt);
    if (!r->prompt) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    int64_t n = l3c_tokenize(srv->tok, text, len, r->prompt, cap, flags);
    if (n < 0) { /* more tokens than bytes + 2: cannot happen for byte-level BPE, but be safe */
        int64_t need = -n;
        int32_t *q = realloc(r->prompt, (size_t)need * sizeof *q);
        if (!q) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        r->prompt = q;
        n = l3c_tokenize(srv->tok, text, len, r->prompt, need, flags);
    }
    if (n <= 0) return BAD("prompt", "the prompt gives no tokens");
    if (n > INT32_MAX) return BAD("prompt", "the prompt is too long");
    r->n_prompt = (int32_t)n;
    return 0;
}

static unsigned completion_prompt(const server *srv, json_t *body, api_request *r, api_error *err) {
    json_t *p = json_object_get(body, "prompt");
    if (!p) return BAD("prompt", "'prompt' is a required property");
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    if (json_is_string(p)) return tokenize_text(srv, json_string_value(p), json_string_length(p), r, err);
    if (json_is_array(p) && json_array_size(p) > 0) { /* a prompt given as token ids */
        size_t n = json_array_size(p);
        if (n >= (size_t)srv->n_ctx)
            return api_fail(err, 400, "invalid_request_error", "prompt", "context_length_exceeded",
                            "the prompt has %zu tokens; the context holds %d", n, srv->n_ctx);
        r->prompt = malloc(n * sizeof *r->prompt);
        if (!r->prompt) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *t = json_array_get(p, i);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= srv->n_vocab)
                return BAD("prompt", "'prompt' must be a string, or an array of token ids below %d "
                                     "(several prompts at once are not supported)", srv->n_vocab);
            r->prompt[i] = (int32_t)json_integer_value(t);
        }
        r->n_prompt = (int32_t)n;
        return 0;
    }
    return BAD("prompt", "'prompt' must be a string (several prompts at once are not supported)");
}

/* ------------------------------------------------------------------ sampling parameters */

static unsigned parse_stop(json_t *body, api_request *r, api_error *err) {
    json_t *v = opt(body, "stop");
    if (!v) return 0;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    json_t *arr[SCHED_MAX_STOP];
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > SCHED_MAX_STOP) return BAD("stop", "'stop' may hold at most %d sequences", SCHED_MAX_STOP);
        for (size_t i = 0; i < n; i++) arr[i] = json_array_get(v, i);
        items = arr;
    }
    for (size_t i = 0; i < n; i++) {
        if (!json_is_string(items[i])) return BAD("stop", "'stop' must be a string or an array of strings");
        size_t len = json_string_length(items[i]);
        if (len > MAX_STOP_BYTES) return BAD("stop", "a stop sequence may be at most %d bytes", MAX_STOP_BYTES);
        if (len == 0) continue;
        char *s = malloc(len + 1);
        if (!s) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        memcpy(s, json_string_value(items[i]), len + 1);
        r->stop[r->params.n_stop] = s;
        r->params.stop[r->params.n_stop] = s;
        r->params.n_stop++;
    }
    return 0;
}

static unsigned parse_logit_bias(const server *srv, json_t *body, api_request *r, api_error *err) {
    json_t *v = opt(body, "logit_bias");
    if (!v) return 0;
    if (!json_is_object(v)) return BAD("logit_bias", "'logit_bias' must be an object");
    size_t n = json_object_size(v);
    if (n == 0) return 0;
    if (n > MAX_LOGIT_BIAS) return BAD("logit_bias", "'logit_bias' may hold at most %d entries", MAX_LOGIT_BIAS);
    r->bias_ids = malloc(n * sizeof *r->bias_ids);
    r->bias_vals = malloc(n * sizeof *r->bias_vals);
    if (!r->bias_ids || !r->bias_vals) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    const char *key;
    json_t *val;
    size_t i = 0;
    json_object_foreach(v, key, val) {
        char *end = NULL;
        long id = (*key >= '0' && *key <= '9') ? strtol(key, &end, 10) : -1;
        if (id < 0 || !end || *end || id >= srv->n_vocab)
            return BAD("logit_bias", "'logit_bias' keys must be token ids between 0 and %d", srv->n_vocab - 1);
        if (!json_is_number(val) || !(json_number_value(val) >= -100 && json_number_value(val) <= 100))
            return BAD("logit_bias", "'logit_bias' values must be numbers between -100 and 100");
        r->bias_ids[i] = (int32_t)id;
        r->bias_vals[i] = (float)json_number_value(val);
        i++;
    }
    r->params.n_bias = (int32_t)i;
    r->params.bias_ids = r->bias_ids;
    r->params.bias_vals = r->bias_vals;
    return 0;
}

/* Chat: "logprobs": bool, "top_logprobs": 0..20 (needs logprobs). Completions: "logprobs": N in
 * 0..20 (the sampled token plus the N most probable; OpenAI allows 5), "echo": bool (the prompt
 * precedes the text; with logprobs its tokens get logprobs too, the first null). */
static unsigned parse_logprobs(const server *srv, json_t *body, api_request *r, api_error *err) {
    unsigned st;
    json_t *lp = opt(body, "logprobs");
    long long top = 0;
    int have_top = 0;
    r->tok = srv->tok;
    if (r->kind == API_CHAT) {
        if ((st = get_bool(body, "logprobs", &r->params.logprobs, err))) return st;
        if ((st = get_int(body, "top_logprobs", 0, SCHED_MAX_TOP_LOGPROBS, &top, &have_top, err))) return st;
        if (have_top && !r->params.logprobs)
            return BAD("top_logprobs", "'top_logprobs' requires 'logprobs': true");
        r->params.top_logprobs = (int32_t)top;
        return 0;
    }
    if (lp && json_is_boolean(lp)) { /* some clients send a boolean: true = the token alone */
        r->params.logprobs = json_is_true(lp);
    } else if (lp) {
        if ((st = get_int(body, "logprobs", 0, SCHED_MAX_TOP_LOGPROBS, &top, NULL, err))) return st;
        r->params.logprobs = 1;
        r->params.top_logprobs = (int32_t)top;
    }
    if ((st = get_bool(body, "echo", &r->echo, err))) return st;
    r->params.echo_logprobs = r->echo && r->params.logprobs;
    if (!r->echo) return 0;
    json_t *p = json_object_get(body, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    if (json_is_string(p)) { /* token-id prompts are echoed from their tokens by the writer */
        r->echo_len = json_string_length(p);
        if (!(r->echo_text = malloc(r->echo_len + 1)))
            return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        memcpy(r->echo_text, json_string_value(p), r->echo_len + 1);
    }
    return 0;
}

/* echo of a token-id prompt: the text of its tokens (specials skipped, as they are in text). */
static unsigned echo_token_prompt(api_request *r, api_error *err) {
    int64_t need = l3c_detokenize(r->tok, r->prompt, r->n_prompt, NULL, 0, 1);
    if (need < 0) need = -need;
    if (!(r->echo_text = malloc((size_t)need + 1)))
        return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    int64_t got = l3c_detokenize(r->tok, r->prompt, r->n_prompt, r->echo_text, need, 1);
    r->echo_len = got > 0 ? (size_t)got : 0;
    r->echo_text[r->echo_len] = '\0';
    return 0;
}

/* The names the model is served under: the --alias names, else the file name (model_id). */
static int served_names(const server *srv, const char **names) {
    if (!srv->n_aliases) {
        names[0] = srv->model_id;
        return 1;
    }
    for (int i = 0; i < srv->n_aliases; i++)
        names[i] = srv->aliases[i];
    return srv->n_aliases;
}

unsigned api_check_model(const server *srv, json_t *body, api_error *err) {
    json_t *model = opt(body, "model");
    if (model && !json_is_string(model)) return BAD("model", "'model' must be a string");
    const char *want = model ? json_string_value(model) : "";
    if (!srv->strict_model || !*want) return 0;
    const char *names[SERVER_MAX_ALIASES];
    int n = served_names(srv, names);
    for (int i = 0; i < n; i++)
        if (!strcmp(want, names[i])) return 0;
    return api_fail(err, 404, "invalid_request_error", "model", "model_not_found",
                    "The model `%.80s` does not exist: this server serves `%.80s` (GET /v1/models)",
                    want, srv->model_id);
}

static unsigned parse_params(const server *srv, json_t *body, api_request *r, api_error *err) {
    unsigned st;
    if ((st = api_check_model(srv, body, err))) return st;
    const char *mname = srv->model_id; /* replies name the served model, whatever was asked */
    /* The name goes back into every response as a JSON string, so it must stay valid UTF-8: at
     * most MAX_MODEL_NAME bytes, never cut inside a UTF-8 sequence (a cut one made every writer
     * fail, after the generation, found by tests/fuzz/fuzz_server_request.c), and invalid bytes
     * (a model file's name may hold any) replaced. */
    size_t mlen = strnlen(mname, MAX_MODEL_NAME);
    while (mlen > 0 && mname[mlen] && ((unsigned char)mname[mlen] & 0xC0) == 0x80) mlen--;
    r->model = malloc(3 * mlen + 1);
    if (!r->model) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    api_utf8_sanitize(mname, mlen, r->model);

    long long n = 1;
    if ((st = get_int(body, "n", 1, 128, &n, NULL, err))) return st;
    if (n != 1) return BAD("n", "only n=1 is supported");
    if ((st = get_bool(body, "stream", &r->stream, err))) return st;
    json_t *so = opt(body, "stream_options");
    if (so) {
        if (!json_is_object(so)) return BAD("stream_options", "'stream_options' must be an object");
        if ((st = get_bool(so, "include_usage", &r->include_usage, err))) return st;
    }
    if ((st = parse_logprobs(srv, body, r, err))) return st;

    long long max_tokens = srv->n_ctx;
    int have_max = 0;
    if ((st = get_int(body, "max_tokens", 1, INT32_MAX, &max_tokens, &have_max, err))) return st;
    if ((st = get_int(body, "max_completion_tokens", 1, INT32_MAX, &max_tokens, &have_max, err))) return st;
    if (max_tokens > srv->n_ctx) max_tokens = srv->n_ctx;
    r->params.max_tokens = (int32_t)max_tokens;

    l3c_sampler_params sp = l3c_sampler_default_params();
    sp.temperature = 1.0f;
    sp.top_p = 1.0f;
    sp.top_k = 0;
    sp.min_p = 0.0f;
    sp.repeat_penalty = 1.0f;
    double d = 1.0;
    if ((st = get_number(body, "temperature", 0, 2, &d, err))) return st;
    sp.temperature = (float)d;
    d = 1.0;
    if ((st = get_number(body, "top_p", 0, 1, &d, err))) return st;
    sp.top_p = (float)d;
    d = 0;
    if ((st = get_number(body, "presence_penalty", -2, 2, &d, err))) return st;
    sp.presence_penalty = (float)d;
    d = 0;
    if ((st = get_number(body, "frequency_penalty", -2, 2, &d, err))) return st;
    sp.frequency_penalty = (float)d;
    /* llama.cpp-style extensions */
    long long k = 0;
    if ((st = get_int(body, "top_k", 0, srv->n_vocab, &k, NULL, err))) return st;
    sp.top_k = (int32_t)k;
    d = 0;
    if ((st = get_number(body, "min_p", 0, 1, &d, err))) return st;
    sp.min_p = (float)d;
    d = 1;
    if ((st = get_number(body, "repeat_penalty", 0.01, 10, &d, err))) return st;
    sp.repeat_penalty = (float)d;
    json_t *seed = opt(body, "seed");
    if (seed && !json_is_integer(seed)) return BAD("seed", "'seed' must be an integer");
    sp.seed = seed ? (uint64_t)json_integer_value(seed) : random_seed();
    r->params.sampler = sp;

    if ((st = parse_stop(body, r, err))) return st;
    return parse_logit_bias(srv, body, r, err);
}

/* tools / tool_choice / parallel_tool_calls and response_format (chat only): r->tools and the
 * schema the reply must follow. Both at once: the reply is a call or follows the format (anyOf),
 * enforced from its first token. */
static unsigned parse_structured(const server *srv, json_t *body, api_request *r, api_error *err) {
    unsigned st = tools_parse(srv->tok, srv->tmpl, body, &r->tools, err);
    char *fmt = NULL;
    if (!st) st = tools_response_format(body, &fmt, err);
    if (!st && fmt) st = tools_check_schema(fmt, "response_format.json_schema.schema", err);
    const api_tools *t = r->tools;
    if (!st && (r->gbnf || r->schema) && (fmt || (t && t->choice != TOOLS_NONE)))
        st = BAD(r->schema_field, "'%s' cannot be combined with response_format or tools",
                 r->schema_field);
    if (st || r->gbnf || r->schema) {
        free(fmt);
        return st;
    }
    if (!t || t->choice == TOOLS_NONE) {
        r->schema = fmt;
        r->schema_field = "response_format";
        return 0;
    }
    r->schema_field = "tools";
    char *calls = tools_calls_schema(t);
    if (!calls) {
        free(fmt);
        return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (fmt && t->choice == TOOLS_AUTO) { /* a call or the format */
        size_t n = strlen(calls) + strlen(fmt) + 16;
        r->schema = malloc(n);
        if (r->schema) snprintf(r->schema, n, "{\"anyOf\":[%s,%s]}", calls, fmt);
        free(calls);
        free(fmt);
        if (!r->schema) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        return 0;
    }
    free(fmt); /* a call is required: the format does not apply */
    r->schema = calls;
    r->schema_lazy = t->choice == TOOLS_AUTO;
    return 0;
}

/* Extensions (as llama.cpp's server), chat and completions: "grammar" (GBNF text, root rule
 * "root") or "json_schema" (a JSON Schema), instead of response_format / tools. */
static unsigned parse_grammar_ext(json_t *body, api_request *r, api_error *err) {
    json_t *g = opt(body, "grammar"), *js = opt(body, "json_schema");
    if (g && js) return BAD("grammar", "'grammar' and 'json_schema' are alternatives: give one");
    if (g) {
        if (!json_is_string(g) || !json_string_length(g))
            return BAD("grammar",
                       "'grammar' must be a non-empty string of GBNF (root rule 'root')");
        r->schema_field = "grammar";
        r->gbnf = strdup(json_string_value(g));
        return r->gbnf ? 0 : api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (!js) return 0;
    if (!json_is_object(js) && !json_is_boolean(js))
        return BAD("json_schema", "'json_schema' must be a JSON Schema object");
    r->schema_field = "json_schema";
    r->schema = json_dumps(js, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!r->schema) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    return tools_check_schema(r->schema, "json_schema", err);
}

/* The grammar of r->gbnf or r->schema (from the server's cache) into r->params. Schemas were
 * checked one by one before (tools_check_schema), so a failure there is the combination's. */
static unsigned compile_schema(const server *srv, api_request *r, api_error *err) {
    l3c_status st;
    const char *text = r->gbnf ? r->gbnf : r->schema;
    gcache_kind kind = r->gbnf ? GCACHE_GBNF : GCACHE_JSON_SCHEMA;
    r->params.grammar = gcache_get(srv->grammars, kind, text, strlen(text), &st);
    r->params.grammar_lazy = r->schema_lazy;
    if (r->params.grammar) return 0;
    if (st == L3C_ERR_NOMEM) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    return BAD(r->schema_field, "'%s': cannot enforce the output format: %s", r->schema_field,
               l3c_last_error());
}

unsigned api_parse_request(const server *srv, api_kind kind, const char *body, size_t len,
                           api_request *r, api_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root)
        return api_fail(err, 400, "invalid_request_error", NULL, NULL,
                        "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                        jerr.column);
    unsigned st;
    if (!json_is_object(root)) {
        st = BAD(NULL, "the body must be a JSON object");
        goto out;
    }
    if ((st = parse_params(srv, root, r, err))) goto out;
    if ((st = parse_grammar_ext(root, r, err))) goto out;
    if (kind == API_CHAT && (st = parse_structured(srv, root, r, err))) goto out;
    st = kind == API_CHAT ? chat_prompt(srv, root, r, err) : completion_prompt(srv, root, r, err);
    if (!st && r->echo && !r->echo_text) st = echo_token_prompt(r, err);
    if (st) goto out;
    if (r->n_prompt >= srv->n_ctx) {
        st = api_fail(err, 400, "invalid_request_error", kind == API_CHAT ? "messages" : "prompt",
                      "context_length_exceeded",
                      "this model's context holds %d tokens per request; the prompt has %d",
                      srv->n_ctx, r->n_prompt);
        goto out;
    }
    if ((r->schema || r->gbnf) && (st = compile_schema(srv, r, err))) goto out;
    make_id(r->id, sizeof r->id, kind == API_CHAT ? "chatcmpl-" : "cmpl-");
    r->created = (long long)time(NULL);
out:
    json_decref(root);
    if (st) api_request_free(r);
    return st;
}

void api_request_free(api_request *r) {
    if (!r) return;
    free(r->model);
    free(r->prompt);
    free(r->bias_ids);
    free(r->bias_vals);
    free(r->echo_text);
    for (int i = 0; i < SCHED_MAX_STOP; i++) free(r->stop[i]);
    tools_free(r->tools);
    free(r->schema);
    free(r->gbnf);
    gcache_unref(r->params.grammar);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------ writers */

static char *dump(json_t *j, size_t *len) {
    if (!j) return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s) *len = strlen(s);
    return s;
}

/* Wraps a JSON document as one SSE event. */
static char *sse(json_t *j, size_t *len) {
    size_t n;
    char *body = dump(j, &n);
    if (!body) return NULL;
    char *out = malloc(n + 9);
    if (out) {
        memcpy(out, "data: ", 6);
        memcpy(out + 6, body, n);
        memcpy(out + 6 + n, "\n\n", 3);
        *len = n + 8;
    }
    free(body);
    return out;
}

static json_t *error_obj(const api_error *err) {
    /* the message may quote client bytes (a URL, a JSON error position): sanitized */
    return json_pack("{s:{s:o,s:s,s:s?,s:s?}}", "error", "message",
                     json_text(err->message, strlen(err->message)), "type",
                     err->type ? err->type : "invalid_request_error", "param",
                     err->param[0] ? err->param : NULL, "code", err->code);
}

char *api_error_json(const api_error *err, size_t *len) { return dump(error_obj(err), len); }
char *api_stream_error(const api_error *err, size_t *len) { return sse(error_obj(err), len); }

static const char *finish_name(sched_finish f) {
    switch (f) {
    case SCHED_FINISH_STOP: return "stop";
    case SCHED_FINISH_LENGTH: return "length";
    default: return NULL;
    }
}

static json_t *usage_obj(const sched_update *u) {
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", (json_int_t)u->n_prompt,
                     "completion_tokens", (json_int_t)u->n_gen, "total_tokens",
                     (json_int_t)u->n_prompt + u->n_gen, "prompt_tokens_details", "cached_tokens",
                     (json_int_t)u->n_cached);
}

/* ------------------------------------------------------------------ logprobs */

/* The bytes token e adds to the text (specials: none) into buf (cap 256 or more); *text_bytes
 * gets how many of them the text holds. Returns the token's bytes (specials: their own text). */
static int32_t lp_piece(const api_request *r, int32_t id, int32_t prev, char *buf, int32_t cap,
                        int32_t *text_bytes) {
    int special = l3c_token_is_special(r->tok, id);
    int32_t n = special ? l3c_token_to_bytes(r->tok, id, buf, cap) : l3c_token_to_piece(r->tok, prev, id, buf, cap);
    if (n < 0) n = 0; /* longer than any vocabulary entry we serve: shown empty */
    *text_bytes = special ? 0 : n;
    return n;
}

static json_t *lp_bytes(const char *p, int32_t n) {
    json_t *a = json_array();
    for (int32_t i = 0; i < n; i++) json_array_append_new(a, json_integer((unsigned char)p[i]));
    return a;
}

static json_t *lp_number(float v) { return isnan(v) ? json_null() : json_real(v); }

/* The "logprobs" object of r->lp[0 .. n_lp): chat {"content": [...], "refusal": null}, or
 * completions {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; *off is the byte
 * offset of the first token in the choice's text, advanced past them. NULL: none asked for. */
static json_t *logprobs_json(const api_request *r, size_t *off) {
    if (!r->params.logprobs) return NULL;
    char buf[512], tb[512];
    int32_t nt;
    if (r->kind == API_CHAT) {
        json_t *content = json_array();
        for (int32_t i = 0; i < r->n_lp; i++) {
            const sched_logprob *e = &r->lp[i];
            int32_t n = lp_piece(r, e->id, e->prev, buf, sizeof buf, &nt);
            json_t *top = json_array();
            for (int32_t k = 0; k < e->n_top; k++) {
                int32_t m = lp_piece(r, e->top_id[k], e->prev, tb, sizeof tb, &nt);
                json_array_append_new(top, json_pack("{s:o,s:o,s:o}", "token", json_text(tb, (size_t)m), "logprob",
                                                     lp_number(e->top_lp[k]), "bytes", lp_bytes(tb, m)));
            }
            json_array_append_new(content, json_pack("{s:o,s:o,s:o,s:o}", "token", json_text(buf, (size_t)n),
                                                     "logprob", lp_number(e->logprob), "bytes", lp_bytes(buf, n),
                                                     "top_logprobs", top));
        }
        return json_pack("{s:o,s:n}", "content", content, "refusal");
    }
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (int32_t i = 0; i < r->n_lp; i++) {
        const sched_logprob *e = &r->lp[i];
        int32_t n = lp_piece(r, e->id, e->prev, buf, sizeof buf, &nt);
        json_array_append_new(tokens, json_text(buf, (size_t)n));
        json_array_append_new(lps, lp_number(e->logprob));
        json_array_append_new(offs, json_integer((json_int_t)*off));
        *off += (size_t)nt;
        if (isnan(e->logprob)) {
            json_array_append_new(tops, json_null());
            continue;
        }
        json_t *top = json_object();
        for (int32_t k = 0; k < e->n_top; k++) {
            int32_t m = lp_piece(r, e->top_id[k], e->prev, tb, sizeof tb, &nt);
            json_t *key = json_text(tb, (size_t)m);
            if (key && !json_object_get(top, json_string_value(key))) /* equal texts: the likelier */
                json_object_set_new(top, json_string_value(key), lp_number(e->top_lp[k]));
            json_decref(key);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

void api_logprobs_advance(api_request *r) {
    char buf[512];
    int32_t nt;
    for (int32_t i = 0; i < r->n_lp; i++) {
        lp_piece(r, r->lp[i].id, r->lp[i].prev, buf, sizeof buf, &nt);
        r->lp_text_off += (size_t)nt;
    }
}

/* The choice's text: with completions' echo, the prompt (as sent, or the prompt tokens' text)
 * and then text. */
static json_t *echo_text_json(const api_request *r, const char *text, size_t text_len) {
    if (!r->echo) return json_text(text, text_len);
    char *all = malloc(r->echo_len + text_len + 1);
    json_t *j = NULL;
    if (all) {
        if (r->echo_len) memcpy(all, r->echo_text, r->echo_len);
        memcpy(all + r->echo_len, text, text_len);
        j = json_text(all, r->echo_len + text_len);
    }
    free(all);
    return j;
}

static json_t *envelope(const api_request *r, const char *object) {
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", r->id, "object", object, "created",
                     (json_int_t)r->created, "model", r->model ? r->model : "", "system_fingerprint",
                     "llama3c");
}

static char *tool_calls_response(const api_request *r, const char *text, size_t text_len,
                                 const sched_update *u, size_t *len);

/* A whole (non-streamed) response: the envelope, choices [choice] (taken) and usage. */
static char *response_with(const api_request *r, json_t *choice, const char *object,
                           const sched_update *u, size_t *len) {
    json_t *env = envelope(r, object);
    json_t *usage = usage_obj(u);
    if (!choice || !env || !usage) {
        json_decref(choice);
        json_decref(env);
        json_decref(usage);
        return NULL;
    }
    json_object_set_new(env, "choices", json_pack("[o]", choice));
    json_object_set_new(env, "usage", usage);
    return dump(env, len);
}

char *api_response_json(const api_request *r, const char *text, size_t text_len,
                        const sched_update *u, size_t *len) {
    char *tc = r->tools ? tool_calls_response(r, text, text_len, u, len) : NULL;
    if (tc) return tc; /* else not a call: text */
    json_t *content = echo_text_json(r, text, text_len);
    if (!content) return NULL;
    const char *fr = finish_name(u->finish);
    json_t *choice;
    size_t off = r->lp_text_off;
    json_t *lp = logprobs_json(r, &off);
    if (r->kind == API_CHAT)
        choice = json_pack("{s:i,s:{s:s,s:o},s:o?,s:s?}", "index", 0, "message", "role", "assistant",
                           "content", content, "logprobs", lp, "finish_reason", fr);
    else
        choice = json_pack("{s:o,s:i,s:o?,s:s?}", "text", content, "index", 0, "logprobs", lp,
                           "finish_reason", fr);
    return response_with(r, choice, r->kind == API_CHAT ? "chat.completion" : "text_completion", u,
                         len);
}

char *api_stream_chunk(const api_request *r, int role_chunk, const char *text, size_t text_len,
                       sched_finish finish, size_t *len) {
    const char *fr = finish == SCHED_RUNNING ? NULL : finish_name(finish);
    if (finish != SCHED_RUNNING && !fr) fr = "stop";
    json_t *choice;
    size_t off = r->lp_text_off;
    json_t *lp = r->n_lp ? logprobs_json(r, &off) : NULL;
    if (r->kind == API_CHAT) {
        json_t *delta = json_object();
        if (role_chunk) json_object_set_new(delta, "role", json_string("assistant"));
        if (role_chunk || text_len) json_object_set_new(delta, "content", json_text(text, text_len));
        choice = json_pack("{s:i,s:o,s:o?,s:s?}", "index", 0, "delta", delta, "logprobs", lp,
                           "finish_reason", fr);
    } else {
        choice = json_pack("{s:o,s:i,s:o?,s:s?}", "text", json_text(text, text_len), "index", 0,
                           "logprobs", lp, "finish_reason", fr);
    }
    json_t *env = envelope(r, r->kind == API_CHAT ? "chat.completion.chunk" : "text_completion");
    if (!choice || !env) {
        json_decref(choice);
        json_decref(env);
        return NULL;
    }
    json_object_set_new(env, "choices", json_pack("[o]", choice));
    if (r->include_usage) json_object_set_new(env, "usage", json_null());
    return sse(env, len);
}

char *api_stream_usage(const api_request *r, const sched_update *u, size_t *len) {
    json_t *env = envelope(r, r->kind == API_CHAT ? "chat.completion.chunk" : "text_completion");
    json_t *usage = usage_obj(u);
    if (!env || !usage) {
        json_decref(env);
        json_decref(usage);
        return NULL;
    }
    json_object_set_new(env, "choices", json_array());
    json_object_set_new(env, "usage", usage);
    return sse(env, len);
}

/* ------------------------------------------------------------------ tool calls (tools.h) */

void api_make_id(char *dst, size_t cap, const char *prefix) {
    make_id(dst, cap, prefix);
}

/* The non-streamed response when the reply is a well-formed call (NULL: it is not, or out of
 * memory): message {"role":"assistant","content":null,"tool_calls":[...]}, finish_reason
 * "tool_calls". */
static char *tool_calls_response(const api_request *r, const char *text, size_t text_len,
                                 const sched_update *u, size_t *len) {
    json_t *calls = r->kind == API_CHAT && u->finish == SCHED_FINISH_STOP
                        ? tools_parse_reply(r->tools, text, text_len, api_make_id)
                        : NULL;
    if (!calls) return NULL;
    json_t *choice =
        json_pack("{s:i,s:{s:s,s:n,s:o},s:n,s:s}", "index", 0, "message", "role", "assistant",
                  "content", "tool_calls", calls, "logprobs", "finish_reason", "tool_calls");
    return response_with(r, choice, "chat.completion", u, len);
}

/* One chat chunk with delta = the given object (taken). */
static json_t *delta_chunk(const api_request *r, json_t *delta, const char *finish) {
    json_t *choice = json_pack("{s:i,s:o,s:n,s:s?}", "index", 0, "delta", delta, "logprobs",
                               "finish_reason", finish);
    json_t *env = envelope(r, "chat.completion.chunk");
    if (!choice || !env) {
        json_decref(choice);
        json_decref(env);
        return NULL;
    }
    json_object_set_new(env, "choices", json_pack("[o]", choice));
    if (r->include_usage) json_object_set_new(env, "usage", json_null());
    return env;
}

static int held_add(api_tools *t, const char *p, size_t n) {
    if (t->held_len + n + 1 > t->held_cap) {
        size_t cap = t->held_cap ? t->held_cap : 256;
        while (cap < t->held_len + n + 1)
            cap *= 2;
        char *q = realloc(t->held, cap);
        if (!q) return -1;
        t->held = q;
        t->held_cap = cap;
    }
    memcpy(t->held + t->held_len, p, n);
    t->held_len += n;
    return 0;
}

char *api_stream_text(api_request *r, const char *text, size_t text_len, size_t *len) {
    api_tools *t = r->tools;
    if (!t || t->choice == TOOLS_NONE || t->decided == 1)
        return api_stream_chunk(r, 0, text, text_len, SCHED_RUNNING, len);
    if (held_add(t, text, text_len)) return NULL;
    size_t i = 0;
    while (i < t->held_len && t->held[i] && strchr(" \t\r\n", t->held[i]))
        i++;
    *len = 0;
    if (i == t->held_len) return calloc(1, 1); /* only whitespace yet */
    if (t->held[i] == '{' || t->held[i] == '[') {
        t->decided = 2; /* a call perhaps: held until the end */
        return calloc(1, 1);
    }
    t->decided = 1; /* plain text: what was held goes out, the rest streams */
    char *out = api_stream_chunk(r, 0, t->held, t->held_len, SCHED_RUNNING, len);
    t->held_len = 0;
    return out;
}

char *api_stream_end(api_request *r, sched_finish finish, size_t *len) {
    api_tools *t = r->tools;
    if (!t || t->choice == TOOLS_NONE || t->decided == 1 || !t->held_len)
        return api_stream_chunk(r, 0, "", 0, finish, len);
    json_t *calls = finish == SCHED_FINISH_STOP
                        ? tools_parse_reply(t, t->held, t->held_len, api_make_id)
                        : NULL;
    if (!calls) { /* not a call after all: the text, then the finish chunk */
        size_t n1 = 0, n2 = 0;
        char *a = api_stream_chunk(r, 0, t->held, t->held_len, SCHED_RUNNING, &n1);
        char *b = api_stream_chunk(r, 0, "", 0, finish, &n2);
        char *out = a && b ? malloc(n1 + n2 + 1) : NULL;
        if (out) {
            memcpy(out, a, n1);
            memcpy(out + n1, b, n2 + 1);
            *len = n1 + n2;
        }
        free(a);
        free(b);
        return out;
    }
    /* per call: {index, id, type, function: {name, arguments: ""}}, then the arguments in pieces
     * of at most 64 bytes ({index, function: {arguments}}), as OpenAI streams them */
    strbuf b = {0};
    int ok = 1;
    for (size_t k = 0; ok && k < json_array_size(calls); k++) {
        json_t *c = json_array_get(calls, k), *f = json_object_get(c, "function");
        const char *args = json_string_value(json_object_get(f, "arguments"));
        json_t *head = json_pack("{s:[{s:i,s:O,s:s,s:{s:O,s:s}}]}", "tool_calls", "index",
                                 (json_int_t)k, "id", json_object_get(c, "id"), "type", "function",
                                 "function", "name", json_object_get(f, "name"), "arguments", "");
        size_t n;
        char *ev = sse(delta_chunk(r, head, NULL), &n);
        ok = ev && !sb_add(&b, ev, n);
        free(ev);
        for (size_t at = 0, al = strlen(args); ok && at < al;) {
            size_t piece = al - at > 64 ? 64 : al - at;
            while (at + piece < al && ((unsigned char)args[at + piece] & 0xC0) == 0x80)
                piece++; /* whole UTF-8 */
            json_t *d = json_pack("{s:[{s:i,s:{s:s%}}]}", "tool_calls", "index", (json_int_t)k,
                                  "function", "arguments", args + at, piece);
            ev = sse(delta_chunk(r, d, NULL), &n);
            ok = ev && !sb_add(&b, ev, n);
            free(ev);
            at += piece;
        }
    }
    size_t n;
    char *ev = ok ? sse(delta_chunk(r, json_object(), "tool_calls"), &n) : NULL;
    ok = ev && !sb_add(&b, ev, n);
    free(ev);
    json_decref(calls);
    if (!ok) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

char *api_prompt_json(const server *srv, const api_request *r, size_t *len) {
    int64_t need = l3c_detokenize(srv->tok, r->prompt, r->n_prompt, NULL, 0, 0);
    if (need < 0) need = -need;
    char *text = malloc((size_t)need + 1);
    if (!text) return NULL;
    int64_t got = l3c_detokenize(srv->tok, r->prompt, r->n_prompt, text, need, 0);
    json_t *p = got >= 0 ? json_text(text, (size_t)got) : NULL;
    free(text);
    json_t *ids = json_array();
    for (int32_t i = 0; ids && i < r->n_prompt; i++)
        json_array_append_new(ids, json_integer(r->prompt[i]));
    if (!p || !ids) {
        json_decref(p);
        json_decref(ids);
        return NULL;
    }
    return dump(json_pack("{s:o,s:o}", "prompt", p, "tokens", ids), len);
}

/* GET /v1/models: one entry per name the model is served under (see served_names), the
 * reply name first; with --strict-model these are exactly the names a request may use. */
char *api_models_json(const server *srv, size_t *len) {
    l3c_model_info info;
    l3c_model_get_info(srv->model, &info);
    const char *names[SERVER_MAX_ALIASES];
    int n = served_names(srv, names);
    json_t *data = json_array();
    for (int i = 0; data && i < n; i++) {
        json_t *m = json_pack("{s:o,s:s,s:I,s:s,s:{s:i,s:i,s:I,s:s?}}", "id",
                              json_text(names[i], strlen(names[i])), "object", "model", "created",
                              (json_int_t)srv->started_at, "owned_by", "llama3c", "meta",
                              "n_ctx_slot", (int)srv->n_ctx, "n_vocab", (int)srv->n_vocab,
                              "n_params", (json_int_t)info.n_params, "file_type", info.file_type);
        if (!m || json_array_append_new(data, m)) {
            json_decref(data);
            data = NULL;
        }
    }
    return dump(data ? json_pack("{s:s,s:o}", "object", "list", "data", data) : NULL, len);
}

/* ------------------------------------------------------------------ embeddings */

#define MAX_EMBD_INPUTS 2048

/* Appends the tokens of one input (text, or token ids when text is NULL and ids is a JSON array)
 * to r; cut to the context with truncate, else a 400 when longer. */
static unsigned embd_add_input(const server *srv, api_embd_request *r, size_t *cap, size_t idx,
                               json_t *item, int truncate, api_error *err) {
    const int32_t n_ctx = srv->n_ctx;
    int64_t n = 0;
    int32_t *dst;
    size_t need_max;
    if (json_is_string(item)) {
        size_t len = json_string_length(item);
        if (len == 0) return BAD("input", "'input[%zu]' is an empty string", idx);
        if (!truncate && len > (size_t)n_ctx * MAX_BYTES_PER_TOKEN)
            return api_fail(err, 400, "invalid_request_error", "input", "context_length_exceeded",
                            "'input[%zu]' (%zu bytes) cannot fit the context of %d tokens (\"truncate\": "
                            "true cuts it)", idx, len, n_ctx);
        need_max = len + 2;
    } else {
        need_max = json_array_size(item);
        if (need_max == 0) return BAD("input", "'input[%zu]' is an empty array of token ids", idx);
    }
    size_t have = (size_t)r->off[r->n_inputs];
    if (have + need_max > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < have + need_max) c *= 2;
        int32_t *q = realloc(r->tokens, c * sizeof *q);
        if (!q) return api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        r->tokens = q;
        *cap = c;
    }
    dst = r->tokens + have;
    if (json_is_string(item)) {
        /* as llama.cpp's llama_tokenize(add_special, no parse_special): BOS when the vocabulary
         * asks for it; special-token text stays text */
        n = l3c_tokenize(srv->tok, json_string_value(item), json_string_length(item), dst,
                         (int64_t)need_max, L3C_TOKENIZE_ADD_BOS);
        if (n <= 0) return BAD("input", "'input[%zu]' gives no tokens", idx);
    } else {
        for (size_t i = 0; i < need_max; i++) {
            json_t *t = json_array_get(item, i);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= srv->n_vocab)
                return BAD("input", "'input' token ids must be integers between 0 and %d", srv->n_vocab - 1);
            dst[i] = (int32_t)json_integer_value(t);
        }
        n = (int64_t)need_max;
    }
    if (n > n_ctx) {
        if (!truncate)
            return api_fail(err, 400, "invalid_request_error", "input", "context_length_exceeded",
                            "'input[%zu]' has %lld tokens; the context holds %d per input (\"truncate\": "
                            "true cuts it)", idx, (long long)n, n_ctx);
        n = n_ctx;
    }
    r->off[r->n_inputs + 1] = (int32_t)(have + (size_t)n);
    r->n_inputs++;
    return 0;
}

unsigned api_parse_embeddings(const server *srv, const char *body, size_t len, api_embd_request *r,
                              api_error *err) {
    memset(r, 0, sizeof *r);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root)
        return api_fail(err, 400, "invalid_request_error", NULL, NULL,
                        "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                        jerr.column);
    unsigned st = 0;
    if (!json_is_object(root)) {
        st = BAD(NULL, "the body must be a JSON object");
        goto out;
    }
    if ((st = api_check_model(srv, root, err))) goto out;
    const char *mname = srv->model_id; /* replies name the served model, whatever was asked */
    size_t mlen = strnlen(mname, MAX_MODEL_NAME);
    if (!(r->model = malloc(3 * mlen + 1))) goto nomem;
    api_utf8_sanitize(mname, mlen, r->model); /* a file name may hold any bytes */

    json_t *fmt = opt(root, "encoding_format");
    if (fmt && (!json_is_string(fmt) || (strcmp(json_string_value(fmt), "float") &&
                                         strcmp(json_string_value(fmt), "base64")))) {
        st = BAD("encoding_format", "'encoding_format' must be 'float' or 'base64'");
        goto out;
    }
    r->base64 = fmt && !strcmp(json_string_value(fmt), "base64");
    l3c_model_info info;
    l3c_model_get_info(srv->model, &info);
    long long dims = info.n_embd;
    if ((st = get_int(root, "dimensions", 1, info.n_embd, &dims, NULL, err))) goto out;
    r->dimensions = (int32_t)dims;
    int truncate = 0;
    if ((st = get_bool(root, "truncate", &truncate, err))) goto out;

    json_t *in = json_object_get(root, "input");
    if (!in || json_is_null(in)) {
        st = BAD("input", "'input' is a required property");
        goto out;
    }
    /* a string; an array of strings; an array of token ids (one input); an array of such arrays */
    size_t n = json_is_array(in) ? json_array_size(in) : 1;
    int ids_one = json_is_array(in) && n > 0 && json_is_integer(json_array_get(in, 0));
    if (json_is_array(in) && n == 0) {
        st = BAD("input", "'input' must not be an empty array");
        goto out;
    }
    if (!json_is_string(in) && !json_is_array(in)) {
        st = BAD("input", "'input' must be a string, an array of strings, an array of token ids or "
                          "an array of arrays of token ids");
        goto out;
    }
    if (ids_one) n = 1;
    if (n > MAX_EMBD_INPUTS) {
        st = BAD("input", "'input' may hold at most %d inputs", MAX_EMBD_INPUTS);
        goto out;
    }
    if (!(r->off = calloc(n + 1, sizeof *r->off))) goto nomem;
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_is_string(in) || ids_one ? in : json_array_get(in, i);
        int ok = json_is_string(item) || (json_is_array(item) && (ids_one || !json_is_string(in)));
        if (json_is_array(item) && !ids_one)
            for (size_t k = 0; ok && k < json_array_size(item); k++)
                ok = json_is_integer(json_array_get(item, k));
        if (!ok) {
            st = BAD("input", "'input' must be a string, an array of strings, an array of token ids or "
                              "an array of arrays of token ids (input[%zu] is neither)", i);
            goto out;
        }
        if ((st = embd_add_input(srv, r, &cap, i, item, truncate, err))) goto out;
    }
    goto out;
nomem:
    st = api_fail(err, 500, "server_error", NULL, NULL, "out of memory");
out:
    json_decref(root);
    if (st) api_embd_request_free(r);
    return st;
}

void api_embd_request_free(api_embd_request *r) {
    if (!r) return;
    free(r->model);
    free(r->tokens);
    free(r->off);
    memset(r, 0, sizeof *r);
}

/* Standard base64 of n bytes into dst (4 * ((n + 2) / 3) + 1 bytes, NUL-terminated). */
static void base64_encode(const unsigned char *src, size_t n, char *dst) {
    static const char k[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)src[i] << 16 | (i + 1 < n ? (unsigned)src[i + 1] << 8 : 0) |
                     (i + 2 < n ? src[i + 2] : 0);
        dst[o++] = k[v >> 18 & 63];
        dst[o++] = k[v >> 12 & 63];
        dst[o++] = i + 1 < n ? k[v >> 6 & 63] : '=';
        dst[o++] = i + 2 < n ? k[v & 63] : '=';
    }
    dst[o] = 0;
}

/* One data item, its vector cut to d dims and normalized as the library's embd_normalize does
 * (sum of squares in double, each float times 1 / norm), so a full-size vector equals
 * `llama3c embed --normalize` bitwise. */
static json_t *embd_item(const api_embd_request *r, int32_t idx, const float *v, int32_t d, float *tmp) {
    double ss = 0.0;
    for (int32_t i = 0; i < d; i++) ss += (double)v[i] * v[i];
    const double inv = ss > 0.0 ? 1.0 / sqrt(ss) : 1.0;
    for (int32_t i = 0; i < d; i++) tmp[i] = ss > 0.0 ? (float)(v[i] * inv) : v[i];
    json_t *e;
    if (r->base64) {
        unsigned char *bytes = malloc((size_t)d * 4);
        char *b64 = malloc(((size_t)d * 4 + 2) / 3 * 4 + 1);
        if (!bytes || !b64) {
            free(bytes);
            free(b64);
            return NULL;
        }
        for (int32_t i = 0; i < d; i++) {
            uint32_t u;
            memcpy(&u, &tmp[i], 4);
            for (int k = 0; k < 4; k++) bytes[4 * i + k] = (unsigned char)(u >> (8 * k));
        }
        base64_encode(bytes, (size_t)d * 4, b64);
        e = json_string(b64);
        free(bytes);
        free(b64);
    } else {
        e = json_array();
        for (int32_t i = 0; e && i < d; i++)
            if (!isfinite(tmp[i]) || json_array_append_new(e, json_real(tmp[i]))) {
                json_decref(e);
                return NULL;
            }
    }
    return json_pack("{s:s,s:i,s:o}", "object", "embedding", "index", (json_int_t)idx, "embedding", e);
}

char *api_embeddings_json(const api_embd_request *r, const float *embd, int32_t n_embd, size_t *len) {
    /* the envelope by jansson with an empty "data" array, the items dumped one at a time into it
     * (so at most one vector is a jansson tree at once, whatever the number of inputs) */
    json_int_t n_tok = r->off[r->n_inputs];
    json_t *env = json_pack("{s:s,s:[],s:s,s:{s:I,s:I}}", "object", "list", "data", "model",
                            r->model ? r->model : "", "usage", "prompt_tokens", n_tok, "total_tokens", n_tok);
    size_t env_len = 0;
    char *head = dump(env, &env_len);
    const int32_t d = r->dimensions > 0 && r->dimensions < n_embd ? r->dimensions : n_embd;
    float *tmp = malloc((size_t)d * sizeof *tmp);
    char *at = head ? strstr(head, "\"data\":[]") : NULL;
    strbuf b = {0};
    int ok = at && tmp && !sb_add(&b, head, (size_t)(at - head) + 8);
    for (int32_t i = 0; ok && i < r->n_inputs; i++) {
        json_t *j = embd_item(r, i, embd + (size_t)i * (size_t)n_embd, d, tmp);
        char *item = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL; /* exact float32 */
        json_decref(j);
        ok = item && !(i && sb_add(&b, ",", 1)) && !sb_add(&b, item, strlen(item));
        free(item);
    }
    ok = ok && !sb_add(&b, at + 8, env_len - (size_t)(at + 8 - head));
    free(head);
    free(tmp);
    if (!ok) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
