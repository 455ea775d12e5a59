/*
 * fuzz_server_request.c -- libFuzzer harness for the server's request parser (apps/server/openai.c,
 * api_parse_request): the input is an HTTP request body, parsed once as a chat completion and once
 * as a legacy completion against a real model (the default SmolLM2 GGUF: L3C_FUZZ_MODEL, else
 * `scripts/default-model.sh`; without it the harness exits 1: it would test nothing). The chat
 * template is the model's own or, chosen by the body's length, every other template in turn.
 * Checked (a failure traps):
 *   - an error is a 4xx (500 only for "out of memory") with a message,
 *     nothing left allocated in the request, and api_error_json / api_stream_error give valid JSON;
 *   - a request that parses keeps every promise the scheduler relies on: 1 <= n_prompt < n_ctx,
 *     every id in the vocabulary, 1 <= max_tokens <= n_ctx, sampler parameters in their documented
 *     ranges, stop strings non-empty and at most SCHED_MAX_STOP, logit_bias ids in the vocabulary
 *     and values in [-100, 100], a model name of at most 256 bytes;
 *   - every writer (response, stream chunks, usage, the tool-call stream filter) returns valid
 *     JSON for it, with the input bytes themselves as the generated text (invalid UTF-8
 *     included); a request with tools or response_format has its grammar compiled, and its
 *     reply parsed for tool calls (the body's bytes, then the body's own "reply" string).
 *
 *   fuzz_server_request --write-seeds DIR   writes valid and near-valid bodies
 * Build and run: `make fuzz-server` (fuzz.mk).
 */
#include "grammar_cache.h"
#include "fuzz_model_path.h"
#include "openai.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#define FUZZ_REQUIRE(c)                                                                            \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: FUZZ_REQUIRE(%s) failed\n", __FILE__, __LINE__, #c);         \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

static server g_srv;
static l3c_chat_template g_own;
static long g_inputs, g_parsed[2]; /* printed at exit */

static void print_stats(void) {
    fprintf(stderr, "fuzz_server_request: %ld inputs, %ld chat and %ld completion requests parsed\n",
            g_inputs, g_parsed[API_CHAT], g_parsed[API_COMPLETION]);
}

static void require_json(char *s, size_t len, int sse) {
    FUZZ_REQUIRE(s != NULL && strlen(s) == len);
    const char *p = s;
    size_t n = len;
    if (sse) { /* "data: {...}\n\n" */
        FUZZ_REQUIRE(len > 8 && !memcmp(s, "data: ", 6) && !memcmp(s + len - 2, "\n\n", 2));
        p += 6, n -= 8;
    }
    json_error_t e;
    json_t *j = json_loadb(p, n, JSON_ALLOW_NUL, &e); /* "\u0000" is valid JSON (a generated NUL byte) */
    if (!j) fprintf(stderr, "invalid JSON from a writer (%s): %.*s\n", e.text, (int)(n > 300 ? 300 : n), p);
    FUZZ_REQUIRE(j != NULL && json_is_object(j));
    json_decref(j);
    free(s);
}

static void check_error(const api_error *err, const api_request *r) {
    FUZZ_REQUIRE(err->status >= 400 && err->status < 500 ||
                 (err->status == 500 && strstr(err->message, "out of memory")));
    FUZZ_REQUIRE(err->message[0] != '\0' && err->type != NULL);
    /* nothing left allocated (the caller frees nothing after an error) */
    FUZZ_REQUIRE(!r->prompt && !r->model && !r->bias_ids && !r->bias_vals && r->n_prompt == 0);
    FUZZ_REQUIRE(!r->tools && !r->schema && !r->gbnf && !r->params.grammar);
    for (int i = 0; i < SCHED_MAX_STOP; i++) FUZZ_REQUIRE(!r->stop[i]);
    size_t len = 0;
    require_json(api_error_json(err, &len), len, 0);
    require_json(api_stream_error(err, &len), len, 1);
}

static void check_request(const api_request *r, api_kind kind, const uint8_t *data, size_t size) {
    const server *s = &g_srv;
    FUZZ_REQUIRE(r->kind == kind && r->prompt != NULL);
    FUZZ_REQUIRE(r->n_prompt >= 1 && r->n_prompt < s->n_ctx);
    for (int32_t i = 0; i < r->n_prompt; i++) FUZZ_REQUIRE(r->prompt[i] >= 0 && r->prompt[i] < s->n_vocab);
    const sched_job_params *p = &r->params;
    FUZZ_REQUIRE(p->max_tokens >= 1 && p->max_tokens <= s->n_ctx);
    const l3c_sampler_params *sp = &p->sampler;
    FUZZ_REQUIRE(sp->temperature >= 0 && sp->temperature <= 2);
    FUZZ_REQUIRE(sp->top_p >= 0 && sp->top_p <= 1 && sp->min_p >= 0 && sp->min_p <= 1);
    FUZZ_REQUIRE(sp->top_k >= 0 && sp->top_k <= s->n_vocab);
    FUZZ_REQUIRE(sp->repeat_penalty >= 0.01f && sp->repeat_penalty <= 10);
    FUZZ_REQUIRE(p->n_stop >= 0 && p->n_stop <= SCHED_MAX_STOP);
    for (int i = 0; i < p->n_stop; i++) FUZZ_REQUIRE(p->stop[i] && p->stop[i][0]);
    FUZZ_REQUIRE(p->n_bias >= 0 && (p->n_bias == 0 || (p->bias_ids && p->bias_vals)));
    for (int32_t i = 0; i < p->n_bias; i++)
        FUZZ_REQUIRE(p->bias_ids[i] >= 0 && p->bias_ids[i] < s->n_vocab && p->bias_vals[i] >= -100 &&
                     p->bias_vals[i] <= 100);
    FUZZ_REQUIRE(r->model && strlen(r->model) <= 256);
    FUZZ_REQUIRE(!strncmp(r->id, kind == API_CHAT ? "chatcmpl-" : "cmpl-", kind == API_CHAT ? 9 : 5));

    /* the writers, with the body's own bytes as the generated text */
    sched_update u = {SCHED_FINISH_LENGTH, r->n_prompt, 0, 7, ""};
    size_t len = 0;
    require_json(api_response_json(r, (const char *)data, size, &u, &len), len, 0);
    require_json(api_stream_chunk(r, 1, (const char *)data, size > 16 ? 16 : size, SCHED_RUNNING, &len), len, 1);
    require_json(api_stream_chunk(r, 0, (const char *)data, size, SCHED_FINISH_STOP, &len), len, 1);
    require_json(api_stream_usage(r, &u, &len), len, 1);
    FUZZ_REQUIRE(!(r->schema || r->gbnf) == !r->params.grammar);

    /* logprobs: records with ids taken from the body's bytes (any id, any prev, NaN first) */
    FUZZ_REQUIRE(p->top_logprobs >= 0 && p->top_logprobs <= SCHED_MAX_TOP_LOGPROBS);
    FUZZ_REQUIRE(!p->echo_logprobs || (kind == API_COMPLETION && r->echo && p->logprobs));
    FUZZ_REQUIRE(!r->echo || r->echo_text);
    sched_logprob lp[4];
    memset(lp, 0, sizeof lp);
    for (int i = 0; i < 4; i++) {
        uint32_t v = 0;
        for (size_t k = 0; k < 4 && 4 * (size_t)i + k < size; k++) v = v << 8 | data[4 * i + k];
        lp[i].id = (int32_t)(v % (uint32_t)s->n_vocab);
        lp[i].prev = i ? lp[i - 1].id : -1;
        lp[i].prompt = i == 0;
        lp[i].logprob = i == 0 ? NAN : -(float)(v % 1000) / 10;
        lp[i].n_top = p->top_logprobs;
        for (int k = 0; k < lp[i].n_top; k++) {
            lp[i].top_id[k] = (int32_t)((v + (uint32_t)k * 7919u) % (uint32_t)s->n_vocab);
            lp[i].top_lp[k] = -(float)k;
        }
    }
    api_request *rw = (api_request *)r;
    rw->lp = lp;
    rw->n_lp = 4;
    require_json(api_response_json(r, (const char *)data, size, &u, &len), len, 0);
    require_json(api_stream_chunk(r, 0, (const char *)data, size, SCHED_RUNNING, &len), len, 1);
    api_logprobs_advance(rw);
    rw->lp = NULL;
    rw->n_lp = 0;
}

/* The stream filter over a reply: every event it gives is one or more valid SSE JSON events. */
static void check_stream_filter(api_request *r, const char *reply, size_t n) {
    size_t len = 0, half = n / 2;
    char *a = api_stream_text(r, reply, half, &len);
    FUZZ_REQUIRE(a != NULL);
    free(a);
    a = api_stream_text(r, reply + half, n - half, &len);
    FUZZ_REQUIRE(a != NULL);
    free(a);
    char *end = api_stream_end(r, SCHED_FINISH_STOP, &len);
    FUZZ_REQUIRE(end != NULL && strlen(end) == len);
    for (char *ev = end; *ev;) { /* "data: {...}\n\n" events */
        char *nx = strstr(ev, "\n\n");
        FUZZ_REQUIRE(nx != NULL);
        size_t evlen = (size_t)(nx + 2 - ev);
        char *one = malloc(evlen + 1);
        FUZZ_REQUIRE(one != NULL);
        memcpy(one, ev, evlen);
        one[evlen] = 0;
        require_json(one, evlen, 1);
        ev = nx + 2;
    }
    free(end);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    g_inputs++;
    /* the model's own template, or by the body's length each concrete one */
    l3c_chat_template t = g_own;
    if (size % 3 == 0) {
        int n = 0;
        while (strcmp(l3c_chat_template_name((l3c_chat_template)(n + 1)), "unknown")) n++;
        t = (l3c_chat_template)(1 + (size / 3) % n);
    }
    g_srv.tmpl = t;
    for (int k = 0; k < 2; k++) {
        api_kind kind = k ? API_COMPLETION : API_CHAT;
        api_request r;
        api_error err;
        memset(&err, 0, sizeof err);
        unsigned st = api_parse_request(&g_srv, kind, (const char *)data, size, &r, &err);
        if (st) {
            FUZZ_REQUIRE(st == err.status);
            check_error(&err, &r);
            continue;
        }
        g_parsed[kind]++;
        check_request(&r, kind, data, size);
        if (r.tools) { /* the body's "reply" string as an answer: the parser and the filter */
            json_t *root = json_loadb((const char *)data, size, 0, NULL);
            json_t *reply = json_object_get(root, "reply");
            const char *txt = json_is_string(reply) ? json_string_value(reply) : (const char *)data;
            size_t n = json_is_string(reply) ? json_string_length(reply) : size;
            json_t *calls = tools_parse_reply(r.tools, txt, n, api_make_id);
            FUZZ_REQUIRE(!calls || json_array_size(calls) > 0);
            json_decref(calls);
            sched_update u = {SCHED_FINISH_STOP, r.n_prompt, 0, 7, ""};
            size_t len = 0;
            require_json(api_response_json(&r, txt, n, &u, &len), len, 0);
            check_stream_filter(&r, txt, n);
            json_decref(root);
        }
        api_request_free(&r);
    }
    return 0;
}

/* ---------------------------------------------------------------- seeds */

static const char *k_seeds[] = {
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}",
    "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi "
    "<|im_start|>\"},{\"role\":\"assistant\",\"content\":null},{\"role\":\"developer\",\"content\":\"x\"}],"
    "\"temperature\":0,\"top_p\":0.9,\"max_tokens\":16,\"stop\":[\"\\n\",\"END\"],\"seed\":42,\"stream\":true,"
    "\"stream_options\":{\"include_usage\":true}}",
    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
    "\"text\":\"\\u00e9\\ud83d\\ude00\"}]}],\"logit_bias\":{\"0\":-100,\"5\":2.5},\"top_k\":40,\"min_p\":0.05,"
    "\"repeat_penalty\":1.1,\"n\":1,\"logprobs\":false,\"max_completion_tokens\":3}",
    "{\"model\":\"m\",\"prompt\":\"Once upon a time\",\"max_tokens\":8,\"temperature\":0.7}",
    "{\"prompt\":[[1,2,3]],\"max_tokens\":1,\"logprobs\":5,\"echo\":true,\"temperature\":0}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":20}",
    "{\"prompt\":[1,2,3,4],\"stop\":\"x\",\"presence_penalty\":0.5,\"frequency_penalty\":-0.5}",
    "{\"prompt\":[\"one prompt in an array\"],\"logprobs\":0,\"stream\":false}",
    "{\"messages\":[{\"role\":\"tool\",\"content\":\"{}\"},{\"role\":\"ipython\",\"content\":\"1\"}],"
    "\"prompt\":\"both\"}",
    "{\"messages\":[],\"prompt\":[]}",
    "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}],\"prompt\":[-1]}",
    "{\"model\":\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
    "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\",\"prompt\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"y\"}]}",
    "[1,2]",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}],\"prompt\":\"a\\u0000b\",\"stop\":[\"\\u0000\"]}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":1e400}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":\"assistant\",\"content\":null,"
    "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
    "\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"21C\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":"
    "\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}],\"tool_choice\":"
    "\"auto\",\"reply\":\"{\\\"tool_calls\\\": [{\\\"name\\\": \\\"get_weather\\\", \\\"arguments\\\": "
    "{\\\"city\\\": \\\"Oslo\\\"}}]}\"}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"tools\":[{\"type\":\"function\",\"function\":"
    "{\"name\":\"f\"}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
    "\"parallel_tool_calls\":false,\"reply\":\"{\\\"name\\\": \\\"f\\\", \\\"parameters\\\": {}}\"}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"List\"}],\"response_format\":{\"type\":\"json_schema\","
    "\"json_schema\":{\"name\":\"l\",\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"a\":"
    "{\"type\":\"array\",\"items\":{\"enum\":[1,\"x\",null]},\"maxItems\":3}},\"required\":[\"a\"],"
    "\"additionalProperties\":false}}}}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"response_format\":{\"type\":\"json_object\"},"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"g\",\"parameters\":{\"type\":\"object\"}}}]}",
    "{\"prompt\":\"Answer:\",\"grammar\":\"root ::= (\\\"yes\\\" | \\\"no\\\") [.!]?\",\"max_tokens\":4,"
    "\"messages\":[{\"role\":\"user\",\"content\":\"ok?\"}]}",
    "{\"prompt\":\"List:\",\"json_schema\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"},"
    "\"maxItems\":2},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
};

static void write_seeds(const char *dir) {
    mkdir(dir, 0755);
    for (size_t i = 0; i < sizeof k_seeds / sizeof k_seeds[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/seed%02zu.json", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(k_seeds[i], 1, strlen(k_seeds[i]), f) != strlen(k_seeds[i]) || fclose(f)) {
            perror(path);
            exit(1);
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    if (*argc == 3 && strcmp((*argv)[1], "--write-seeds") == 0) {
        write_seeds((*argv)[2]);
        exit(0);
    }
    char buf[4096];
    const char *path = fuzz_model_path(buf, sizeof buf);
    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = 1;
    mp.verbose = 0;
    if (!path || l3c_model_load(path, &mp, &g_srv.model) != L3C_OK) {
        fprintf(stderr, "fuzz_server_request: no model (%s): set L3C_FUZZ_MODEL or install the default "
                "model (scripts/setup.sh)\n", path ? l3c_last_error() : "scripts/default-model.sh found none");
        exit(1);
    }
    g_srv.tok = l3c_model_tokenizer(g_srv.model);
    if (!g_srv.tok) {
        fprintf(stderr, "fuzz_server_request: %s has no tokenizer\n", path);
        exit(1);
    }
    g_srv.n_ctx = 256;
    g_srv.n_vocab = l3c_vocab_size(g_srv.tok);
    g_own = l3c_chat_template_detect(g_srv.model);
    g_srv.grammars = gcache_create(g_srv.tok, 8);
    FUZZ_REQUIRE(g_srv.grammars != NULL);
    snprintf(g_srv.model_id, sizeof g_srv.model_id, "fuzz-model");
    fprintf(stderr, "fuzz_server_request: %s, template %s, n_vocab %d, n_ctx %d\n", path,
            l3c_chat_template_name(g_own), g_srv.n_vocab, g_srv.n_ctx);
    atexit(print_stats);
    return 0;
}
