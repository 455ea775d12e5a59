/*
 * common.h -- helpers shared by the CLI subcommands (run, chat, bench, explain, ...), built only on
 * the public header:
 *  - option parsing: value parsers with range checks that print "llama3c CMD: ..." and give exit
 *    code 2, and the options every generating command shares (model, threads, context, sampling);
 *  - a session: model + context + sampler, a mirror of the ids held in sequence 0's KV cache so a
 *    new prompt only evaluates what differs from the cache (prefix reuse), and a generation loop
 *    that streams UTF-8-safe text (or ids) and records timings.
 * Exit codes: 0 ok, 1 runtime error (l3c_last_error() printed with the file), 2 usage error.
 */
#ifndef L3C_CLI_COMMON_H
#define L3C_CLI_COMMON_H

#include "llama3c.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

enum { CLI_OK = 0, CLI_ERR = 1, CLI_USAGE = 2 };

/* "llama3c CMD: message" + a --help hint on stderr; returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "llama3c CMD: what: <l3c_last_error()>" on stderr; returns CLI_ERR. */
int cli_runtime_error(const char *cmd, const char *what);

/*
 * The option parser every command uses. A command's loop reads
 *     if (cli_is(a, CLI_CTX)) { if (cli_int(CMD, argc, argv, &i, 0, INT32_MAX, &n_ctx)) return
 * CLI_USAGE; }
 *     ...
 *     else if ((r = cli_compat_parse(CMD, argc, argv, &i))) { if (r < 0) return CLI_USAGE; }
 *     else return cli_usage_error(CMD, "unknown option '%s'", a);
 * Names: "|"-separated aliases; "_" and "-" match each other after the leading dashes
 * (llama.cpp's "--repeat_penalty"). Values are whole numbers in range or a usage error naming
 * the option and the value (exit 2); nothing is silently replaced or cut.
 */
#define CLI_MODEL   "-m|--model"
#define CLI_THREADS "-t|--threads"
#define CLI_CTX     "-c|--ctx-size|--ctx"
#define CLI_BATCH   "-b|--batch-size|--batch"
int cli_is(const char *arg, const char *names);
/* Consume the value of option argv[*i]: 0 or CLI_USAGE (printed). */
int cli_str(const char *cmd, int argc, char **argv, int *i, const char **out);
int cli_int(const char *cmd, int argc, char **argv, int *i, long lo, long hi, int *out);
int cli_i32(const char *cmd, int argc, char **argv, int *i, long lo, long hi, int32_t *out);
int cli_flt(const char *cmd, int argc, char **argv, int *i, double lo, double hi, float *out);
/* llama.cpp flags that change nothing here (-ngl/--n-gpu-layers N, --mlock, --no-mmap, --color,
 * -cnv/--conversation, --log-disable, -fa/--flash-attn, --keep N for commands without a context
 * to keep): consumed with a note on stderr. 1 consumed, 0 not one, -1 usage error (printed). */
int cli_compat_parse(const char *cmd, int argc, char **argv, int *i);
/* --kv f16|f32|q8_0 (argv[*i] is the option): *kv_type = L3C_KV_*; -1 (reported) on a bad value. */
int cli_kv(const char *cmd, int argc, char **argv, int *i, int *kv_type);
/* llama.cpp's -e: the escapes \n \t \r \a \b \f \v \\ \' \" \? \xHH in s, in place (others,
 * and \x00, stay as they are). */
void cli_unescape(char *s);

/* Seconds on the monotonic clock. */
double cli_now_s(void);

/* The value of option argv[*i] (advancing *i), or NULL after printing a usage error. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);
/* Parse a whole string as a number within [lo, hi]; 0 on success, CLI_USAGE (message printed)
 * otherwise. */
int cli_parse_long(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *cmd, const char *opt, const char *s, double lo, double hi,
                    float *out);
int cli_parse_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);

/* SIGINT / SIGTERM / SIGHUP remove the temporary files of outputs not yet complete
 * (l3c_remove_partial_outputs) and then end the process as the signal would have. */
void cli_remove_partial_outputs_on_signal(void);

/* Per-tensor progress of convert / export (an l3c_convert_progress_fn; user: the command's name).
 * On a terminal: one bar redrawn with \r; otherwise plain lines at every 10% and at the end, so
 * a log file or CI output stays readable. */
void cli_progress(int64_t i, int64_t n, const char *name, const char *type, void *user);

/* LoRA adapters on the command line: --lora FILE (repeatable), --lora-scale S (the scale of the
 * last --lora before it; default 1), --lora-scaled FILE S (llama.cpp's spelling). */
#define CLI_MAX_LORA 16
typedef struct cli_lora {
    const char *path[CLI_MAX_LORA];
    float scale[CLI_MAX_LORA];
    int n;
} cli_lora;

/* Consumes argv[*i] (and its values) if it is a LoRA option: 1 consumed, 0 not one, -1 usage
 * error (message printed). */
int cli_lora_parse(const char *cmd, cli_lora *l, int argc, char **argv, int *i);
/* Loads l's adapters for model and sets them on ctx with their scales; *out gets them
 * (cli_adapters_free(*out, l->n) after the context). 0 or CLI_ERR (printed, nothing kept). */
int cli_lora_load(const char *cmd, const cli_lora *l, const l3c_model *model, l3c_context *ctx,
                  l3c_adapter ***out);
void cli_adapters_free(l3c_adapter **a, int n);
/* Help lines for the LoRA options. */
void cli_lora_help(FILE *f);

/* Constrained output (run, chat): --grammar FILE, --json-schema FILE|JSON, --json. */
typedef struct cli_grammar {
    const char *gbnf_file;
    const char *schema;
    int json;
} cli_grammar;
/* Consumes argv[*i] (and its value) if it is a grammar option: 1 consumed, 0 not one, -1 usage
 * error (printed). */
int cli_grammar_parse(const char *cmd, cli_grammar *g, int argc, char **argv, int *i);
/* Compiles the grammar the options name for tok (*out NULL when none); 0 or CLI_ERR (printed). */
int cli_grammar_load(const char *cmd, const cli_grammar *g, const l3c_tokenizer *tok, l3c_grammar **out);
void cli_grammar_help(FILE *f);

/* Options shared by the generating commands. */
typedef struct cli_opts {
    const char *model_path; /* -m FILE (required) */
    int n_threads;          /* -t N; 0: library default */
    int32_t n_ctx;          /* -c N; 0: model's context capped by the KV budget */
    int32_t n_batch;        /* -b N; prompt tokens per l3c_decode call */
    int32_t n_predict;      /* -n N; < 0: until end of generation or full context */
    l3c_sampler_params
        sp;         /* --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n --seed */
    int seed_set;   /* 1 when --seed was given (else a random seed is drawn) */
    int ignore_eos; /* --ignore-eos */
    int verbose;    /* -v: loading details and the seed on stderr */
    int bf16;       /* --bf16: F16/BF16 matrices multiply in bfloat16 */
    int no_timings; /* --no-timings */
    cli_lora lora;  /* --lora FILE [--lora-scale S] ... */
} cli_opts;

/* Defaults for a command: n_predict, temperature and top-p differ between run and chat. */
void cli_opts_init(cli_opts *o, int32_t n_predict, float temp, float top_p);
/* Consumes argv[*i] (and its value) if it is a shared option: returns 1 consumed, 0 not a shared
 * option, -1 usage error (message printed). */
int cli_opts_parse(const char *cmd, cli_opts *o, int argc, char **argv, int *i);
/* Checks required options and draws the seed; 0 or CLI_USAGE. */
int cli_opts_finish(const char *cmd, cli_opts *o);
/* Help lines for the shared options. */
void cli_opts_help(FILE *f, const cli_opts *defaults);

/* --split none|tensor|layers and --layers-per-rank A,B,...: the split of every model this process
 * loads with cli_load_model (l3c_model_params.split; one per process, as a process is one rank).
 * Returns 1 consumed, 0 not one, -1 usage error (printed). cli_opts_parse takes them too. */
int cli_split_parse(const char *cmd, int argc, char **argv, int *i);
void cli_split_help(FILE *f);
/* Loads a model with the process's split: l3c_model_load with the options above. */
l3c_status cli_model_load(const char *path, l3c_model_params *mp, l3c_model **out);

/* Loads a model with a "loading" note on stderr; 0 or CLI_ERR (message names the file). */
int cli_load_model(const char *cmd, const char *path, int n_threads, int verbose, int bf16,
                   l3c_model **out);

/* Speculative decoding (run, chat): --lookup N, --draft FILE, --draft-max K, --draft-min K,
 * --draft-p-min P. */
typedef struct cli_spec {
    int lookup;        /* > 0: prompt-lookup drafts of up to this many tokens (CLI_LOOKUP_MAX) */
    const char *draft; /* a draft model with the target's vocabulary; NULL: none */
    int draft_max;     /* the most tokens one draft proposes (default 8, <= CLI_LOOKUP_MAX) */
    int draft_min;     /* fewer proposed tokens are not verified (default 0) */
    float draft_p_min; /* the draft stops where its top probability is below this (default 0) */
} cli_spec;
#define CLI_LOOKUP_MAX 16
void cli_spec_init(cli_spec *sp);
/* Consumes argv[*i] (and its value) if it is a speculation option: 1 consumed, 0 not one, -1
 * usage error (printed). */
int cli_spec_parse(const char *cmd, cli_spec *sp, int argc, char **argv, int *i);
void cli_spec_help(FILE *f);
/* A draft model must have the target's vocabulary: the same size and the same token texts. 0, or
 * CLI_ERR with a message naming both files (cmd: the subcommand). */
int cli_draft_vocab_check(const char *cmd, const l3c_tokenizer *tok, const char *path,
                          const l3c_tokenizer *dt, const char *draft_path);

typedef struct cli_session {
    const char *cmd;
    l3c_model *model;
    l3c_context *ctx;
    l3c_sampler *smp;
    l3c_adapter **adapters; /* [n_adapters] set on ctx (--lora) */
    int n_adapters;
    const l3c_tokenizer *tok;
    int32_t n_ctx, n_batch, n_vocab;
    int32_t *cache; /* [n_cache] ids held in sequence 0's KV cache, capacity n_ctx */
    int64_t n_cache;
    const float *logits; /* logits after cache[n_cache-1]; NULL when not available */
    int64_t n_prompt;    /* tokens evaluated by the last cli_session_feed */
    double t_prompt;     /* its seconds */
    int64_t n_gen;       /* tokens produced by the last cli_session_generate */
    double t_gen;        /* its seconds (sampling + decoding) */
    int64_t n_drafted;   /* --lookup / --draft: draft tokens decoded by the last generate */
    int64_t n_accepted;  /* of them, the ones the sampler then produced (their rows reused) */
    int64_t n_rounds;    /* drafts verified (target batches with draft tokens) */
    /* speculation (cli_session_spec) */
    cli_spec spec;
    l3c_model *dmodel; /* --draft: the draft model and its context (sequence 0) */
    l3c_context *dctx;
    int32_t *dcache; /* [n_ctx] ids held in the draft's sequence 0 */
    int64_t n_dcache;
    int32_t *q_ids; /* [draft_max][n_vocab] the draft's distributions for the drafted tokens */
    float *q_p;
    int32_t q_n[CLI_LOOKUP_MAX];
    int k_cur;                         /* adaptive draft length, 1 .. draft_max */
    int64_t win_drafted, win_accepted, win_rounds; /* the acceptance window for switching off */
    int64_t spec_pause; /* tokens left without speculation (acceptance was too low) */
    int64_t pause_len;  /* the last pause's length (doubles while acceptance stays low) */
} cli_session;

/* Loads the model and creates context and sampler; 0 or CLI_ERR (printed). */
int cli_session_open(cli_session *s, const char *cmd, const cli_opts *o);
/* Sets the session's speculation; with sp->draft loads the draft model (its vocabulary must be
 * the target's: same size and the same token texts, else an error naming both files) and gives
 * it a context of the session's size. 0 or CLI_ERR (printed). */
int cli_session_spec(cli_session *s, const cli_opts *o, const cli_spec *sp);
void cli_session_close(cli_session *s);

/* Makes sequence 0 hold exactly ids[0..n): keeps the common prefix with the cache, evaluates the
 * rest in n_batch chunks, and leaves the logits of ids[n-1]. 0 or CLI_ERR (printed). */
int cli_session_feed(cli_session *s, const int32_t *ids, int64_t n);

typedef struct cli_gen_opts {
    FILE *out;         /* where the text (or ids) streams; NULL: nowhere */
    int print_ids;     /* 1: generated ids, space-separated, instead of text */
    int print_special; /* 1: special tokens' text is printed too */
    char **text;       /* optional: the generated text (NUL-terminated, malloc'd; caller frees) */
    volatile sig_atomic_t *stop; /* optional: generation ends before the next token once *stop
                                    is nonzero (set by a signal handler: chat's Ctrl-C) */
} cli_gen_opts;

/* Samples up to o->n_predict tokens after the fed prompt, stopping at an end-of-generation token
 * (unless ignore_eos) or a full context; each accepted token except the last is decoded into the
 * cache. 0 or CLI_ERR (printed).
 *
 * s->spec.lookup > 0 (speculative decoding by prompt lookup, no second model): with each sampled
 * token the up to s->spec.lookup tokens that followed the latest earlier occurrence of the last 3
 * (else 2) tokens of the sequence (single-token matches draft too often in vain: measured 5%
 * accepted on free text, 1.2x the CPU time, against 12% and 1.0x with bigrams) are decoded in the
 * same batch, with logits for every row. The sampler still draws every token from the logits of the
 * sequence as it is; while it produces the drafted tokens their rows are kept (no decode for them),
 * at the first difference the rest is dropped from the cache. The logits of a row do not depend on
 * the batch (the engine is batch invariant), so the output, greedy or sampled with a seed, is
 * identical to decoding without drafts; only the number of decode calls changes.
 *
 * s->spec.draft (a draft model): after each sampled token the draft model proposes up to k tokens
 * (sampled with the session's sampler, whose history and grammar are rolled back afterwards;
 * stopping early where its top probability is below draft_p_min), which the target decodes in
 * one batch with the token. Each proposed token is checked by l3c_sampler_verify against the
 * draft's distribution q: greedy output is identical to decoding without a draft, sampled output
 * is distributed exactly as without one (the tokens differ for a given seed). k adapts: after a
 * rejection at draft position j it becomes j + 1, after a fully accepted draft it grows by 2 (up
 * to draft_max).
 *
 * Both kinds switch themselves off when fewer than 1 in 8 of the last 16+ drafted tokens (4+
 * drafts) were accepted (drafting then costs more than it saves): for 64 tokens, doubling up to
 * 1024 while the acceptance stays low. */
int cli_session_generate(cli_session *s, const cli_opts *o, const cli_gen_opts *g);

/* Prompt lookup: up to k tokens that followed the latest earlier occurrence of the last m (3,
 * then 2) tokens of the sequence cache[0..n) + id; returns how many were written to draft. */
int cli_lookup_draft(const int32_t *cache, int64_t n, int32_t id, int k, int32_t *draft);

/* "prompt: N tokens, X tok/s | generation: N tokens, Y tok/s" on stderr. */
void cli_print_timings(const cli_session *s);

/* Reads a whole file (or "-" for stdin) into a NUL-terminated malloc'd buffer; NULL on error
 * (printed). */
char *cli_read_file(const char *cmd, const char *path, size_t *len);

/* Tokenizes text into a malloc'd array; 0 or CLI_ERR (printed). */
int cli_tokenize(const char *cmd, const l3c_tokenizer *tok, const char *text, size_t len, int flags,
                 int32_t **ids, int64_t *n);

#endif /* L3C_CLI_COMMON_H */
