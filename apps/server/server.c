/*
 * server.c -- `llama3c serve`: options, model and context set-up, start of the scheduler and the
 * HTTP daemon, and the clean shutdown on SIGINT / SIGTERM.
 *
 * Order of life: parse options -> load the model -> create one context with n_seq = --parallel
 * -> start the engine thread -> listen -> wait for a signal -> stop accepting -> cancel queued
 * and running jobs (their clients get 503 or a final SSE error event) -> close connections
 * -> free everything -> exit 0. Nothing is left running or allocated on any return path.
 */
#include "server.h"
#include "../cli/cli.h"
#include "../cli/common.h"
#include "grammar_cache.h"
#include "http.h"
#include "metrics.h"

#include "../rag/rag.h"
#include "accounts.h"

#include "llama3c.h"

#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* compiled grammars kept for later requests (small: the vocabulary index they use is built once
 * per tokenizer and shared, about 50 MB for the 128K Llama 3 vocabulary) */
#define GRAMMAR_CACHE_SIZE 64

static sem_t g_stop_sem;
static volatile sig_atomic_t g_stop;
static volatile sig_atomic_t g_reload; /* SIGHUP: re-read --api-keys */

static void on_hup(int sig) {
    (void)sig;
    g_reload = 1;
    sem_post(&g_stop_sem);
}

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
    sem_post(&g_stop_sem); /* async-signal-safe */
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: llama3c serve -m MODEL [options]\n"
            "\n"
            "An OpenAI-compatible HTTP server (chat and text completions, streaming, embeddings,\n"
            "/v1/models, /health, /metrics, a web chat page at /). Many clients are served at "
            "once: each of\n"
            "--parallel slots holds one request's KV cache, and one engine thread decodes all\n"
            "active slots together in one batch per step.\n"
            "\n"
            "options:\n"
            "  -m, --model PATH      GGUF model (required)\n"
            "  --host HOST           address to bind (default 127.0.0.1)\n"
            "  --port N              TCP port (default 8080; 0: any free port, printed at start)\n"
            "  --parallel N          slots, i.e. requests generated at once (default 4)\n"
            "  -c, --ctx N           context positions per slot (default min(model, 2048); also "
            "--ctx-size)\n"
            "  --queue N             requests that may wait for a slot; more get 429 (default 64)\n"
            "  --batch N             tokens per engine step for prompt evaluation (default 256)\n"
            "  --lookup N            speculative decoding by prompt lookup (1..16 drafted tokens)\n"
            "                        while one slot generates alone; output unchanged\n"
            "  --draft FILE          speculative decoding with a draft model (same vocabulary,\n"
            "                        e.g. `llama3c convert MODEL -o D --type Q4_0`) while one slot\n"
            "                        generates alone; output unchanged (also -md, --model-draft)\n"
            "  --draft-max K         the most tokens one draft proposes, 1..16 (default 8)\n"
            "  --draft-min K         verify no draft of fewer tokens (default 0)\n"
            "  --draft-p-min P       stop a draft where the draft's top probability < P (default 0)\n"
            "  --cache-ram MIB       prompt cache in host memory: KV of earlier prompts and answers,\n"
            "                        restored for a request starting with the same tokens\n"
            "                        (default 256; 0: off)\n"
            "  --api-key KEY         require 'Authorization: Bearer KEY' on /v1/* and /metrics\n"
            "                        (also read from LLAMA3C_API_KEY)\n"
            "  --api-keys FILE       accounts: lines 'NAME KEY [REQUESTS_PER_MINUTE [TOKENS_PER_DAY]]';\n"
            "                        over a limit: 429 + Retry-After; usage per key in /metrics;\n"
            "                        SIGHUP re-reads FILE (requests in flight go on)\n"
            "  --max-body BYTES      largest request body (default 1048576); larger: 413\n"
            "  --timeout SECONDS     idle timeout of a connection (default 60; 0: none)\n"
            "  --max-connections N   open connections at most (default parallel + queue + 64)\n"
            "  --pooling P           /v1/embeddings pooling: mean (default), cls (first token) or "
            "last\n"
            "  --kv TYPE             KV-cache type: f16 (default), f32, q8_0\n"
            "  --rag-db FILE         a `llama3c rag index` of this model: POST /v1/rag/query\n"
            "                        and chat completions with \"rag\": {\"k\": 4} (docs/RAG.md)\n"
            "  -a, --alias NAME      the model's name in replies and /v1/models (default: the file\n"
            "                        name without .gguf); repeatable: every NAME is accepted\n"
            "  --strict-model        a request naming a model not served (not an alias) gets 404\n"
            "                        model_not_found, as OpenAI (default: any name is accepted)\n"
            "  --cors ORIGIN         let web pages of ORIGIN (e.g. http://localhost:3000, or *)\n"
            "                        call the API from a browser; repeatable (default: none)\n"
            "  -t, --threads N       compute threads (default: physical cores)\n"
            "  --bf16                F16/BF16 matrices multiply in bfloat16 (faster prompts, ~3 "
            "digits)\n"
            "  -v, --verbose         log HTTP errors and model loading on stderr\n");
    cli_lora_help(f);
    cli_split_help(f); /* --split, --layers-per-rank, --ubatch, --dist-timeout */
}

static int parse_int(const char *opt, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "llama3c serve: %s expects an integer in [%lld, %lld], got '%s'\n", opt, lo,
                hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

/* --cors: "*" or an origin exactly as a browser's Origin header has it: scheme "://" host, an
 * optional ":port", no path, no trailing slash (which would never match). */
static int cors_origin_ok(const char *v) {
    if (!strcmp(v, "*")) return 1;
    const char *h = strstr(v, "://");
    if (!h || h == v || !h[3]) return 0;
    for (const char *p = v; p < h; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("+-.", *p))) return 0;
    return !strpbrk(h + 3, "/?# \t");
}

/* --alias / --cors: a non-empty value appended to a bounded list. */
static int add_name(const char *opt, const char *v, const char **list, int *n, int cap) {
    if (!*v) {
        fprintf(stderr, "llama3c serve: %s needs a non-empty value\n", opt);
        return -1;
    }
    if (*n >= cap) {
        fprintf(stderr, "llama3c serve: %s given more than %d times\n", opt, cap);
        return -1;
    }
    list[(*n)++] = v;
    return 0;
}

static int parse_args(server *srv, cli_lora *lora, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int lr = cli_lora_parse("serve", lora, argc, argv, &i);
        if (lr < 0) return -1;
        if (lr) continue;
        if ((lr = cli_split_parse("serve", argc, argv, &i)) != 0) { /* --split, --layers-per-rank */
            if (lr < 0) return -1;
            continue;
        }
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (a[0] == '-' && a[1] == '-' && eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = 0;
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(name, "-v") || !strcmp(name, "--verbose")) {
            srv->verbose = 1;
            continue;
        }
        if (!strcmp(name, "--bf16")) {
            srv->bf16 = 1;
            continue;
        }
        if (!strcmp(name, "--strict-model")) {
            srv->strict_model = 1;
            continue;
        }
        if (!val && !eq) {
            int r = cli_compat_parse("serve", argc, argv, &i);
            if (r < 0) return -1;
            if (r) continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "llama3c serve: option %s needs a value\n", name);
                return -1;
            }
            val = argv[++i];
        }
        long long x;
        if (!strcmp(name, "-m") || !strcmp(name, "--model"))
            srv->model_path = val;
        else if (!strcmp(name, "--host"))
            srv->host = val;
        else if (!strcmp(name, "--api-key"))
            srv->api_key = val;
        else if (!strcmp(name, "--api-keys"))
            srv->api_keys_path = val;
        else if (!strcmp(name, "--rag-db"))
            srv->rag_db = val;
        else if (!strcmp(name, "--alias") || !strcmp(name, "-a")) {
            if (strlen(val) >= sizeof srv->model_id) {
                fprintf(stderr, "llama3c serve: %s: a name of at most %zu bytes, got %zu\n", name,
                        sizeof srv->model_id - 1, strlen(val));
                return -1;
            }
            if (add_name(name, val, srv->aliases, &srv->n_aliases, SERVER_MAX_ALIASES)) return -1;
        } else if (!strcmp(name, "--cors")) {
            if (!cors_origin_ok(val)) {
                fprintf(stderr,
                        "llama3c serve: --cors expects an origin as a browser sends it, "
                        "scheme://host[:port] with no path (http://localhost:3000), or *; got "
                        "'%s'\n",
                        val);
                return -1;
            }
            if (add_name(name, val, srv->cors, &srv->n_cors, SERVER_MAX_CORS)) return -1;
        } else if (!strcmp(name, "--kv")) {
            if (!strcmp(val, "f16"))
                srv->kv_type = L3C_KV_F16;
            else if (!strcmp(val, "f32"))
                srv->kv_type = L3C_KV_F32;
            else if (!strcmp(val, "q8_0"))
                srv->kv_type = L3C_KV_Q8_0;
            else {
                fprintf(stderr, "llama3c serve: unknown --kv '%s' (f16, f32, q8_0)\n", val);
                return -1;
            }
        } else if (!strcmp(name, "--port")) {
            if (parse_int(name, val, 0, 65535, &x)) return -1;
            srv->port = (int)x;
        } else if (!strcmp(name, "--parallel") || !strcmp(name, "-np")) {
            if (parse_int(name, val, 1, 256, &x)) return -1;
            srv->parallel = (int)x;
        } else if (cli_is(name, CLI_CTX)) {
            if (parse_int(name, val, 0, 1 << 20, &x)) return -1;
            if (x != 0 && x < 16) {
                fprintf(stderr, "llama3c serve: --ctx must be 0 or at least 16\n");
                return -1;
            }
            srv->ctx_per_slot = (int)x;
        } else if (!strcmp(name, "--queue")) {
            if (parse_int(name, val, 1, 100000, &x)) return -1;
            srv->queue = (int)x;
        } else if (!strcmp(name, "--cache-ram") || !strcmp(name, "-cram")) {
            if (parse_int(name, val, 0, 1 << 20, &x)) return -1;
            srv->cache_mib = (int)x;
        } else if (!strcmp(name, "--batch") || !strcmp(name, "-b")) {
            if (parse_int(name, val, 1, 65536, &x)) return -1;
            srv->step_tokens = (int)x;
        } else if (!strcmp(name, "--lookup")) {
            if (parse_int(name, val, 1, SCHED_LOOKUP_MAX, &x)) return -1;
            srv->lookup = (int)x;
        } else if (!strcmp(name, "--draft") || !strcmp(name, "-md") || !strcmp(name, "--model-draft")) {
            srv->draft_path = val;
        } else if (!strcmp(name, "--draft-max") || !strcmp(name, "--draft-n")) {
            if (parse_int(name, val, 1, SCHED_LOOKUP_MAX, &x)) return -1;
            srv->draft_max = (int)x;
        } else if (!strcmp(name, "--draft-min")) {
            if (parse_int(name, val, 0, SCHED_LOOKUP_MAX, &x)) return -1;
            srv->draft_min = (int)x;
        } else if (!strcmp(name, "--draft-p-min")) {
            char *end;
            errno = 0;
            double p = strtod(val, &end);
            if (errno || end == val || *end || !(p >= 0.0 && p <= 1.0)) {
                fprintf(stderr, "llama3c serve: --draft-p-min expects a number in [0, 1], got '%s'\n", val);
                return -1;
            }
            srv->draft_p_min = (float)p;
        } else if (!strcmp(name, "--max-body")) {
            if (parse_int(name, val, 64, (long long)1 << 34, &x)) return -1;
            srv->max_body = (size_t)x;
        } else if (!strcmp(name, "--timeout")) {
            if (parse_int(name, val, 0, 86400, &x)) return -1;
            srv->timeout_s = (unsigned)x;
        } else if (!strcmp(name, "--max-connections")) {
            if (parse_int(name, val, 1, 100000, &x)) return -1;
            srv->max_connections = (int)x;
        } else if (!strcmp(name, "--pooling")) {
            if (!strcmp(val, "mean"))
                srv->pooling = L3C_POOLING_MEAN;
            else if (!strcmp(val, "cls"))
                srv->pooling = L3C_POOLING_CLS;
            else if (!strcmp(val, "last"))
                srv->pooling = L3C_POOLING_LAST;
            else {
                fprintf(
                    stderr,
                    "llama3c serve: --pooling expects mean, cls or last, got '%s' (/v1/embeddings "
                    "returns one vector per input)\n",
                    val);
                return -1;
            }
        } else if (!strcmp(name, "-t") || !strcmp(name, "--threads")) {
            if (parse_int(name, val, 0, 1024, &x)) return -1;
            srv->threads = (int)x;
        } else {
            fprintf(stderr, "llama3c serve: unknown option '%s' (see --help)\n", name);
            return -1;
        }
    }
    if (!srv->model_path) {
        fprintf(stderr, "llama3c serve: a model is required (-m MODEL)\n");
        return -1;
    }
    if (srv->draft_path && srv->lookup) {
        fprintf(stderr, "llama3c serve: --lookup and --draft exclude each other\n");
        return -1;
    }
    /* rank 0 would hold the draft alone, but loading a model is collective under mpirun */
    if (srv->draft_path && l3c_dist_size() > 1) {
        fprintf(stderr, "llama3c serve: --draft is not available in a distributed run (mpirun): "
                        "serve without it, or use --lookup\n");
        return -1;
    }
    if (srv->api_key && !*srv->api_key) srv->api_key = NULL;
    if (!srv->max_connections) srv->max_connections = srv->parallel + srv->queue + 64;
    return 0;
}

static void model_id_from_path(char *dst, size_t cap, const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(dst, cap, "%s", *b ? b : path);
    size_t n = strlen(dst);
    if (n > 5 && !strcmp(dst + n - 5, ".gguf")) dst[n - 5] = 0;
}

/* --rag-db: the index must exist, hold something, and have been built with this model. */
static int open_rag(server *srv, const l3c_model_info *info) {
    char err[RAG_ERR_CAP], fp[65];
    rag_meta m;
    int found = 0;
    if (srv->pooling != L3C_POOLING_MEAN) {
        fprintf(
            stderr,
            "llama3c serve: --rag-db needs --pooling mean (the index holds mean-pooled vectors)\n");
        return -1;
    }
    rag_store *first = NULL;
    int bad =
        rag_store_open(srv->rag_db, 0, &first, err) || rag_store_get_meta(first, &m, &found, err);
    if (!bad && !found) {
        snprintf(err, sizeof err,
                 "index '%s' holds nothing yet (build it with `llama3c rag index`)", srv->rag_db);
        bad = 1;
    }
    if (!bad)
        bad = rag_model_fingerprint(srv->model_path, srv->model, fp, err) ||
              rag_meta_check_model(&m, fp, info->n_embd, info->name ? info->name : "", srv->rag_db,
                                   err);
    if (bad) {
        fprintf(stderr, "llama3c serve: %s\n", err);
        rag_store_close(first);
        return -1;
    }
    int64_t nf = 0, nc = 0;
    if (rag_store_counts(first, &nf, &nc, err) == 0)
        fprintf(stderr, "llama3c serve: RAG index %s: %lld files, %lld chunks\n", srv->rag_db,
                (long long)nf, (long long)nc);
    if (rag_pool_new(first, RAG_POOL_MAX, &srv->rag, err)) {
        fprintf(stderr, "llama3c serve: %s\n", err);
        rag_store_close(first);
        return -1;
    }
    return 0;
}

/* --draft: loads the draft model (the target's vocabulary, else an error naming both files) and
 * gives it a context of one sequence per slot, as many positions as a slot. 0, or -1 (printed). */
static int open_draft(server *srv, const l3c_model_params *mp) {
    l3c_model_params dp = *mp;
    if (cli_model_load(srv->draft_path, &dp, &srv->dmodel) != L3C_OK) {
        fprintf(stderr, "llama3c serve: --draft: %s\n", l3c_last_error());
        return -1;
    }
    if (cli_draft_vocab_check("serve", srv->tok, srv->model_path, l3c_model_tokenizer(srv->dmodel),
                              srv->draft_path))
        return -1;
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = srv->n_ctx;
    cp.n_seq = srv->parallel;
    cp.n_batch = srv->step_tokens;
    cp.n_threads = srv->threads;
    cp.kv_type = srv->kv_type;
    if (l3c_context_create(srv->dmodel, &cp, &srv->dctx) != L3C_OK) {
        fprintf(stderr, "llama3c serve: cannot create the draft model's context: %s\n", l3c_last_error());
        return -1;
    }
    if (l3c_context_n_ctx(srv->dctx) < srv->n_ctx) {
        fprintf(stderr,
                "llama3c serve: the draft model '%s' holds %d positions, fewer than a slot's %d "
                "(use --ctx)\n",
                srv->draft_path, (int)l3c_context_n_ctx(srv->dctx), (int)srv->n_ctx);
        return -1;
    }
    return 0;
}

/* --api-keys: loads the accounts and re-reads them on SIGHUP. 0, or -1 (printed). */
static int open_accounts(server *srv) {
    char err[512];
    if (srv->api_key) {
        fprintf(stderr, "llama3c serve: --api-key (or LLAMA3C_API_KEY) and --api-keys exclude each other\n");
        return -1;
    }
    if (!(srv->accounts = accounts_load(srv->api_keys_path, err, sizeof err))) {
        fprintf(stderr, "llama3c serve: --api-keys: %s\n", err);
        return -1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_hup;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    fprintf(stderr, "llama3c serve: %d API keys from %s\n", accounts_count(srv->accounts), srv->api_keys_path);
    return 0;
}

static void reload_accounts(server *srv) {
    char err[512];
    g_reload = 0;
    if (!srv->accounts) return;
    if (accounts_reload(srv->accounts, err, sizeof err))
        fprintf(stderr, "llama3c serve: SIGHUP: --api-keys not reloaded, the old keys stay: %s\n", err);
    else
        fprintf(stderr, "llama3c serve: SIGHUP: %d API keys reloaded from %s\n", accounts_count(srv->accounts),
                srv->api_keys_path);
    fflush(stderr);
}

int cmd_serve(int argc, char **argv) {
    server srv = {0};
    srv.host = "127.0.0.1";
    srv.port = 8080;
    srv.parallel = 4;
    srv.queue = 64;
    srv.step_tokens = 256;
    srv.draft_max = 8;
    srv.cache_mib = 256;
    srv.max_body = (size_t)1 << 20;
    srv.timeout_s = 60;
    srv.api_key = getenv("LLAMA3C_API_KEY");
    cli_lora lora = {0};
    l3c_adapter **adapters = NULL;
    int pr = parse_args(&srv, &lora, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;

    int rc = 1;
    struct MHD_Daemon *d = NULL;
    /* the port first: a busy or forbidden one fails at once, before minutes of model loading */
    int listen_fd = http_listen(&srv);
    if (listen_fd < 0) return 1;
    sem_init(&g_stop_sem, 0, 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = srv.threads;
    mp.verbose = srv.verbose;
    mp.bf16_matmul = srv.bf16;
    if (cli_model_load(srv.model_path, &mp, &srv.model) != L3C_OK) {
        fprintf(stderr, "llama3c serve: %s\n", l3c_last_error());
        goto out;
    }
    if (srv.bf16) cli_note_bf16("serve", srv.model);
    if (srv.api_keys_path && open_accounts(&srv)) goto out;
    l3c_model_info info;
    l3c_model_get_info(srv.model, &info);
    srv.tok = l3c_model_tokenizer(srv.model);
    srv.n_vocab = l3c_vocab_size(srv.tok);
    srv.tmpl = l3c_chat_template_detect(srv.model);
    if (srv.n_aliases)
        snprintf(srv.model_id, sizeof srv.model_id, "%s", srv.aliases[0]);
    else
        model_id_from_path(srv.model_id, sizeof srv.model_id, srv.model_path);
    srv.started_at = (long long)time(NULL);

    l3c_context_params cp = l3c_context_default_params();
    int ctx = srv.ctx_per_slot;
    if (ctx == 0) ctx = info.n_ctx_train > 0 && info.n_ctx_train < 2048 ? info.n_ctx_train : 2048;
    cp.n_ctx = ctx;
    cp.n_seq = srv.parallel;
    cp.n_batch = srv.step_tokens + srv.parallel;
    cp.n_threads = srv.threads;
    cp.embeddings = 1; /* /v1/embeddings: pooled per slot (a few vector ops per batch token) */
    cp.pooling = srv.pooling;
    cp.kv_type = srv.kv_type;
    if (l3c_context_create(srv.model, &cp, &srv.ctx) != L3C_OK) {
        fprintf(stderr, "llama3c serve: cannot create the context: %s\n", l3c_last_error());
        goto out;
    }
    if (cli_lora_load("serve", &lora, srv.model, srv.ctx, &adapters)) goto out;
    srv.n_ctx = l3c_context_n_ctx(srv.ctx);
    /* under mpirun (docs/DISTRIBUTED.md): rank 0 serves; the other ranks make every decode of its
     * context on theirs until it releases them at shutdown */
    if (l3c_dist_rank() != 0) {
        rc = l3c_dist_follow(srv.ctx) == L3C_OK ? 0 : 1;
        goto out;
    }
    if (l3c_dist_lead(srv.ctx) != L3C_OK) {
        fprintf(stderr, "llama3c serve: %s\n", l3c_last_error());
        goto out;
    }
    if (srv.draft_path && open_draft(&srv, &mp)) goto out;
    if (srv.dctx)
        fprintf(stderr, "llama3c serve: draft model %s, drafts of up to %d tokens\n", srv.draft_path,
                srv.draft_max);
    if (srv.rag_db && open_rag(&srv, &info)) goto out;

    if (!(srv.grammars = gcache_create(srv.tok, GRAMMAR_CACHE_SIZE))) {
        fprintf(stderr, "llama3c serve: out of memory\n");
        goto out;
    }
    /* the prompt cache moves KV states through rank 0's memory: one process only (a led
     * context's cache is spread over the ranks; prefixes are still shared between slots) */
    sched_options so = {srv.parallel,
                        srv.step_tokens,
                        srv.queue,
                        srv.lookup,
                        l3c_dist_size() == 1 ? (size_t)srv.cache_mib << 20 : 0,
                        srv.dctx,
                        srv.draft_max,
                        srv.draft_min,
                        srv.draft_p_min};
    srv.sched = sched_create(srv.model, srv.ctx, &so);
    if (!srv.sched || sched_start(srv.sched) != 0) {
        fprintf(stderr, "llama3c serve: cannot start the scheduler\n");
        goto out;
    }
    metrics_init();
    if (g_stop) {
        rc = 0;
        goto out;
    }
    d = http_start(&srv, listen_fd);
    listen_fd = -1; /* taken over by http_start */
    if (!d) goto out;
    fprintf(stderr,
            "llama3c serve: %s (%s, template %s) with %d slots x %d positions, queue %d\n"
            "llama3c serve: listening on http://%s%s%s:%d\n",
            srv.model_id, info.file_type ? info.file_type : "?", l3c_chat_template_name(srv.tmpl),
            srv.parallel, srv.n_ctx, srv.queue, strchr(srv.host, ':') ? "[" : "", srv.host,
            strchr(srv.host, ':') ? "]" : "", http_port(d)); /* an IPv6 literal in brackets */
    fflush(stderr);

    while (!g_stop) {
        if (sem_wait(&g_stop_sem) != 0 && errno != EINTR) break;
        if (g_reload) reload_accounts(&srv);
    }
    fprintf(stderr, "llama3c serve: shutting down\n");
    rc = 0;
out:
    if (listen_fd >= 0) close(listen_fd);
    http_quiesce(d);
    if (srv.sched) sched_stop(srv.sched);
    http_stop(d);
    sched_free(srv.sched);
    if (l3c_dist_rank() == 0) l3c_dist_release(srv.ctx); /* the other ranks' l3c_dist_follow returns */
    gcache_free(srv.grammars); /* after the jobs, which hold references */
    l3c_context_free(srv.dctx);
    l3c_model_free(srv.dmodel);
    l3c_context_free(srv.ctx);
    cli_adapters_free(adapters, lora.n);
    l3c_model_free(srv.model);
    rag_pool_free(srv.rag); /* after http_stop: no request holds a connection */
    accounts_free(srv.accounts);
    if (srv.api_keys_path) signal(SIGHUP, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sem_destroy(&g_stop_sem);
    return rc;
}
