/*
 * cmd_train.c -- `llama3c train`: LoRA fine-tuning on a GGUF base (weights kept in their file
 * type), with data from a text / JSONL / chat file, an eval split, progress, a JSONL metrics
 * log, a loss plot, checkpoints with exact resume, and the adapter in both formats users load
 * (llama.cpp GGUF LoRA and a PEFT folder).
 *
 * Unlike the other commands this one is built on the internal training API (src/train/,
 * docs/TRAINING.md), not only on llama3c.h: training has no public C API yet.
 *
 * The run is a pure function of (model, data, options): batches come from (seed, step)
 * (l3c_data_locate / l3c_data_order), the optimizer state is the adapter, the AdamW moments and
 * the step count, all in DIR/train_state.bin. `--resume` continues from that file and gives
 * bitwise the same adapter as a run that was never interrupted.
 */
#include "cli.h"
#include "common.h"

#include "dist/comm.h"
#include "model/lora.h"
#include "model/model.h"
#include "train/data.h"
#include "train/report.h"
#include "train/train_io.h"
#include "train/train_model.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *CMD = "train";

typedef struct train_opts {
    const char *model, *data, *eval_data, *out, *config;
    int n_threads, rank, batch, seq, steps, epochs, warmup, eval_every, save_every, log_every,
        stop_after;
    int checkpoint, resume, quiet, from_scratch, lr_set;
    int pack, grad_accum; /* pack: -1 auto (on for JSONL), 0, 1 */
    int full, rslora;
    unsigned targets;
    float alpha, lr, min_lr_ratio, wd, clip, eval_frac, lora_dropout;
    uint64_t seed;
} train_opts;

static void help(FILE *f) {
    fprintf(
        f,
        "usage: llama3c train -m MODEL.gguf --data FILE -o DIR [options]\n"
        "       llama3c train --from-scratch --config tiny.json -m TOKENIZER.gguf --data FILE -o "
        "DIR\n"
        "LoRA fine-tuning: the base model stays in its file type (QLoRA-style: quantized weights "
        "are\n"
        "dequantized per tile in the backward pass); only the adapters A, B are trained (AdamW).\n"
        "--from-scratch pre-trains a new fp32 llama of the --config shapes (JSON: n_embd, n_layer, "
        "n_head,\n"
        "n_head_kv, n_ff, rope_theta, norm_eps, tied, n_ctx, or a Hugging Face config.json) with "
        "the\n"
        "vocabulary and tokenizer of -m, and writes DIR/model.gguf.\n"
        "\n"
        "data:\n"
        "  --data FILE          .txt (plain text, cut into windows of --seq tokens), .jsonl with\n"
        "                       {\"text\": ...} per line, or .jsonl chat {\"messages\": [...]} "
        "(rendered\n"
        "                       with the model's chat template; loss on the assistant turns only)\n"
        "  --eval-data FILE     evaluation examples (default: --eval-frac of --data)\n"
        "  --eval-frac X        share of --data held out for evaluation (default 0.05; 0: none)\n"
        "  --seq T              tokens per sequence (default 256; also -c, --ctx-size, --ctx)\n"
        "  --batch B            sequences per micro-batch (default 4)\n"
        "  --grad-accum N       micro-batches per optimizer step, gradients summed and the loss\n"
        "                       normalized by all their trained tokens (== one batch of N x B;\n"
        "                       default 1)\n"
        "  --pack, --no-pack    pack short examples into rows of --seq tokens, each attending to\n"
        "                       itself with its own positions (the same loss as unpacked, less\n"
        "                       padding); default on for JSONL text / chat data, off for .txt\n"
        "LoRA:\n"
        "  --lora               LoRA fine-tuning (the default)\n"
        "  --rank R             adapter rank (default 8)\n"
        "  --alpha A            scale alpha / rank (default 16)\n"
        "  --targets LIST       matrices to adapt, from q,k,v,o,gate,up,down (default all)\n"
        "  --rslora             rank-stabilized LoRA: scale alpha / sqrt(rank) (PEFT use_rslora)\n"
        "  --lora-dropout P     drop each element of the adapters' inputs with probability P "
        "while\n"
        "                       training (seeded by --seed and the step; none in evaluation;\n"
        "                       default 0)\n"
        "full fine-tuning:\n"
        "  --full               train every weight of an F32 / F16 / BF16 base (fp32 copy, AdamW\n"
        "                       on all of it) and write DIR/model.gguf (F32, the base's tokenizer\n"
        "                       and metadata); quantized bases: use LoRA\n"
        "optimizer:\n"
        "  --steps N            optimizer steps (default: --epochs over the training examples)\n"
        "  --epochs E           passes over the data (default 1)\n"
        "  --lr X               peak learning rate (default 2e-4; 1e-3 with --from-scratch)\n"
        "  --warmup N           linear warmup steps (default 0), then cosine decay to\n"
        "  --min-lr-ratio X     X * lr at the last step (default 0.1)\n"
        "  --wd X               AdamW weight decay (default 0)\n"
        "  --clip X             clip the global gradient norm to X (default 1; 0: off)\n"
        "  --seed S             initialisation and data order (default 42)\n"
        "run:\n"
        "  -o, --out DIR        output folder: adapter.gguf (llama.cpp LoRA), adapter/ (PEFT:\n"
        "                       adapter_config.json + adapter_model.safetensors), metrics.jsonl,\n"
        "                       loss.svg, train_state.bin (for --resume)\n"
        "  --resume             continue the run saved in DIR (same options required)\n"
        "  --stop-after N       save the state and stop after step N (continue with --resume)\n"
        "  --eval-every N       evaluate every N steps (default: 10 times per run; 0: at the end)\n"
        "  --save-every N       write train_state.bin and the adapters every N steps (default 0: "
        "end)\n"
        "  --log-every N        progress line every N steps when stderr is not a terminal (default "
        "10)\n"
        "  -t, --threads N      threads (default: physical cores)\n"
        "  --no-checkpoint      keep every layer's activations (faster, more memory); the default\n"
        "                       recomputes them layer by layer in the backward pass\n"
        "  -q, --quiet          no progress line\n"
        "The last line on stdout is a JSON summary (steps, tokens, tok_per_s, losses, peak "
        "RSS).\n");
}

static int parse_targets(const char *s, unsigned *out) {
    char buf[256];
    if (strlen(s) >= sizeof buf) return cli_usage_error(CMD, "--targets: list too long");
    snprintf(buf, sizeof buf, "%s", s);
    unsigned t = 0;
    for (char *sv = NULL, *p = strtok_r(buf, ",", &sv); p; p = strtok_r(NULL, ",", &sv)) {
        int k = 0;
        while (k < L3C_LORA_N_TARGETS && strcmp(p, l3c_lora_target_short_name((l3c_lora_target)k)))
            k++;
        if (k == L3C_LORA_N_TARGETS)
            return cli_usage_error(CMD, "--targets: unknown matrix '%s' (use q,k,v,o,gate,up,down)",
                                   p);
        t |= 1u << k;
    }
    if (!t) return cli_usage_error(CMD, "--targets: empty list");
    *out = t;
    return 0;
}

static int parse(int argc, char **argv, train_opts *o) {
    *o = (train_opts){.rank = 8,
                      .alpha = 16.0f,
                      .batch = 4,
                      .seq = 256,
                      .epochs = 1,
                      .lr = 2e-4f,
                      .min_lr_ratio = 0.1f,
                      .clip = 1.0f,
                      .eval_frac = 0.05f,
                      .eval_every = -1,
                      .log_every = 10,
                      .checkpoint = 1,
                      .pack = -1,
                      .grad_accum = 1,
                      .seed = 42,
                      .targets = (1u << L3C_LORA_N_TARGETS) - 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        int rc = 0;
#define VAL() ((v = cli_value(CMD, argc, argv, &i)) != NULL)
#define LONG(lo, hi, dst)                                                                          \
    (VAL() ? ((rc = cli_parse_long(CMD, a, v, lo, hi, &n)) ? rc : ((dst) = (int)n, 0)) : CLI_USAGE)
#define FLT(lo, hi, dst) (VAL() ? cli_parse_float(CMD, a, v, lo, hi, &(dst)) : CLI_USAGE)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            exit(0);
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!VAL()) return CLI_USAGE;
            o->model = v;
        } else if (!strcmp(a, "--data")) {
            if (!VAL()) return CLI_USAGE;
            o->data = v;
        } else if (!strcmp(a, "--eval-data")) {
            if (!VAL()) return CLI_USAGE;
            o->eval_data = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            if (!VAL()) return CLI_USAGE;
            o->out = v;
        } else if (!strcmp(a, "--targets")) {
            if (!VAL() || (rc = parse_targets(v, &o->targets))) return CLI_USAGE;
        } else if (!strcmp(a, "--seed")) {
            if (!VAL() || (rc = cli_parse_u64(CMD, a, v, &o->seed))) return CLI_USAGE;
        } else if (!strcmp(a, "--config")) {
            if (!VAL()) return CLI_USAGE;
            o->config = v;
        } else if (!strcmp(a, "--from-scratch")) {
            o->from_scratch = 1;
        } else if (!strcmp(a, "--full")) {
            o->full = 1;
        } else if (!strcmp(a, "--rslora")) {
            o->rslora = 1;
        } else if (!strcmp(a, "--lora")) {
        } else if (!strcmp(a, "--resume")) {
            o->resume = 1;
        } else if (!strcmp(a, "--no-checkpoint")) {
            o->checkpoint = 0;
        } else if (!strcmp(a, "--pack") || !strcmp(a, "--no-pack")) {
            o->pack = !strcmp(a, "--pack");
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (cli_is(a, CLI_THREADS))
            rc = LONG(1, 512, o->n_threads);
        else if (!strcmp(a, "--rank"))
            rc = LONG(1, 4096, o->rank);
        else if (!strcmp(a, "--batch"))
            rc = LONG(1, 4096, o->batch);
        else if (!strcmp(a, "--grad-accum"))
            rc = LONG(1, 4096, o->grad_accum);
        else if (cli_is(a, "--seq|" CLI_CTX))
            rc = LONG(2, 65536, o->seq);
        else if (!strcmp(a, "--steps"))
            rc = LONG(1, 100000000, o->steps);
        else if (!strcmp(a, "--epochs"))
            rc = LONG(1, 100000, o->epochs);
        else if (!strcmp(a, "--warmup"))
            rc = LONG(0, 100000000, o->warmup);
        else if (!strcmp(a, "--eval-every"))
            rc = LONG(0, 100000000, o->eval_every);
        else if (!strcmp(a, "--save-every"))
            rc = LONG(0, 100000000, o->save_every);
        else if (!strcmp(a, "--log-every"))
            rc = LONG(1, 100000000, o->log_every);
        else if (!strcmp(a, "--stop-after"))
            rc = LONG(1, 100000000, o->stop_after);
        else if (!strcmp(a, "--alpha"))
            rc = FLT(1e-6, 1e6, o->alpha);
        else if (!strcmp(a, "--lr"))
            rc = FLT(0.0, 10.0, o->lr), o->lr_set = 1;
        else if (!strcmp(a, "--min-lr-ratio"))
            rc = FLT(0.0, 1.0, o->min_lr_ratio);
        else if (!strcmp(a, "--wd"))
            rc = FLT(0.0, 10.0, o->wd);
        else if (!strcmp(a, "--clip"))
            rc = FLT(0.0, 1e6, o->clip);
        else if (!strcmp(a, "--eval-frac"))
            rc = FLT(0.0, 0.5, o->eval_frac);
        else if (!strcmp(a, "--lora-dropout"))
            rc = FLT(0.0, 0.9, o->lora_dropout);
        else if ((rc = cli_compat_parse(CMD, argc, argv, &i)))
            rc = rc < 0 ? CLI_USAGE : 0;
        else
            return cli_usage_error(CMD, "unknown option '%s'", a);
        if (rc) return CLI_USAGE;
#undef VAL
#undef LONG
#undef FLT
    }
    if (!o->model) return cli_usage_error(CMD, "-m MODEL is required");
    if (!o->data) return cli_usage_error(CMD, "--data FILE is required");
    if (!o->out) return cli_usage_error(CMD, "-o DIR (the output folder) is required");
    if (o->from_scratch != !!o->config)
        return cli_usage_error(CMD, "--from-scratch and --config FILE go together");
    if (o->from_scratch && !o->lr_set) o->lr = 1e-3f;
    if (o->full && o->from_scratch)
        return cli_usage_error(
            CMD, "--full fine-tunes -m; --from-scratch makes a new model: one of them");
    if (o->full && !o->lr_set) o->lr = 1e-5f;
    return 0;
}

/* ------------------------------------------------------------------ files */

static void join(char *dst, size_t n, const char *dir, const char *name) {
    snprintf(dst, n, "%s/%s", dir, name);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* What a resumed run must share with the one it continues. */
static uint64_t fingerprint(const train_opts *o, const l3c_model *m, const l3c_train_model *tm,
                            const l3c_dataset *train, const l3c_dataset *eval, int total) {
    char s[1024];
    snprintf(
        s, sizeof s,
        "v1|%lld|%d|%d|%d|%d|%d|%u|%.9g|%d|%d|%.9g|%.9g|%.9g|%.9g|%.9g|%d|%llu|%zu|%zu|%zu|%zu",
        (long long)m->n_params, m->cfg.n_vocab, m->cfg.n_embd, m->cfg.n_layer, o->rank,
        o->checkpoint, o->targets, (double)o->alpha, o->batch, o->seq, (double)o->lr,
        (double)o->min_lr_ratio, (double)o->wd, (double)o->clip, (double)o->eval_frac, o->warmup,
        (unsigned long long)o->seed, train->n_ex, train->n_tokens, eval ? eval->n_ex : 0,
        eval ? eval->n_tokens : 0);
    uint64_t h = fnv(1469598103934665603ull, s, strlen(s));
    h = fnv(h, &total, sizeof total);
    h = fnv(h, &o->from_scratch, sizeof o->from_scratch);
    h = fnv(h, &o->pack, sizeof o->pack); /* resolved (0 / 1) */
    h = fnv(h, &o->grad_accum, sizeof o->grad_accum);
    h = fnv(h, &o->full, sizeof o->full);
    h = fnv(h, &o->rslora, sizeof o->rslora);
    h = fnv(h, &o->lora_dropout, sizeof o->lora_dropout);
    h = fnv(h, &tm->n_params, sizeof tm->n_params);
    h = fnv(h, &tm->cfg, sizeof tm->cfg); /* shapes, rope, eps (from_scratch: the --config) */
    h = fnv(h, train->tokens, train->n_tokens * sizeof(int32_t));
    return fnv(h, train->mask, train->n_tokens);
}

#define STATE_MAGIC "L3CTRN01"

/* SIGINT / SIGTERM: the step under way finishes, state and adapters are saved, exit 128 + signal.
 * A second signal ends the process at once (removing any file half-written). */
static volatile sig_atomic_t g_stop;

static void on_stop(int sig) {
    g_stop = sig;
    cli_remove_partial_outputs_on_signal();
}

/* train_state.bin: magic, fingerprint, next step, AdamW t, n, then params, m, v [n] floats. */
static int save_state(const char *dir, const l3c_train_model *tm, uint64_t fp, int64_t next_step) {
    char path[4096];
    join(path, sizeof path, dir, "train_state.bin");
    l3c_output *out;
    FILE *f;
    if (l3c_output_open(path, NULL, 0, &out, &f) != L3C_OK)
        return cli_runtime_error(CMD, "saving the state");
    const uint64_t n = tm->n_params;
    const int64_t t = tm->adam_t;
    int ok = fwrite(STATE_MAGIC, 8, 1, f) == 1 && fwrite(&fp, 8, 1, f) == 1 &&
             fwrite(&next_step, 8, 1, f) == 1 && fwrite(&t, 8, 1, f) == 1 &&
             fwrite(&n, 8, 1, f) == 1 && fwrite(tm->params, sizeof(float), n, f) == n &&
             fwrite(tm->adam_m, sizeof(float), n, f) == n &&
             fwrite(tm->adam_v, sizeof(float), n, f) == n;
    if (!ok) {
        fprintf(stderr, "llama3c train: cannot write %s: %s\n", path, strerror(errno));
        l3c_output_abort(out);
        return CLI_ERR;
    }
    if (l3c_output_commit(out) != L3C_OK) return cli_runtime_error(CMD, "saving the state");
    return 0;
}

static int load_state(const char *dir, l3c_train_model *tm, uint64_t fp, int64_t *next_step) {
    char path[4096];
    join(path, sizeof path, dir, "train_state.bin");
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "llama3c train: --resume: cannot open %s: %s\n", path, strerror(errno));
        return CLI_ERR;
    }
    char magic[8];
    uint64_t ffp = 0, n = 0;
    int64_t step = 0, t = 0;
    int rc = CLI_ERR;
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, STATE_MAGIC, 8) || fread(&ffp, 8, 1, f) != 1 ||
        fread(&step, 8, 1, f) != 1 || fread(&t, 8, 1, f) != 1 || fread(&n, 8, 1, f) != 1) {
        fprintf(stderr, "llama3c train: %s: not a llama3c training state (bad header)\n", path);
    } else if (ffp != fp) {
        fprintf(stderr,
                "llama3c train: %s was written by a run with other options, model or data; "
                "--resume needs the same ones\n",
                path);
    } else if (n != tm->n_params || step < 0 || t < 0 || t > step) {
        fprintf(stderr, "llama3c train: %s: inconsistent state (%llu values, step %lld)\n", path,
                (unsigned long long)n, (long long)step);
    } else if (fread(tm->params, sizeof(float), n, f) != n ||
               fread(tm->adam_m, sizeof(float), n, f) != n ||
               fread(tm->adam_v, sizeof(float), n, f) != n || fgetc(f) != EOF) {
        fprintf(stderr, "llama3c train: %s: truncated or too long\n", path);
    } else {
        tm->adam_t = (int)t;
        *next_step = step;
        rc = 0;
    }
    fclose(f);
    return rc;
}

/* Keeps the metrics log's lines of the next_step steps done (a resumed run rewrites the rest). */
static int trim_metrics(const char *path, int64_t next_step) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    l3c_output *out;
    FILE *o;
    if (l3c_output_open(path, NULL, 0, &out, &o) != L3C_OK) {
        fclose(f);
        return cli_runtime_error(CMD, "rewriting the metrics log");
    }
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        long long s;
        if (sscanf(line, "{\"step\": %lld", &s) == 1 && s <= next_step) fputs(line, o);
    }
    fclose(f);
    if (ferror(o)) {
        l3c_output_abort(out);
        return CLI_ERR;
    }
    return l3c_output_commit(out) != L3C_OK ? cli_runtime_error(CMD, "rewriting the metrics log")
                                            : 0;
}

/* The files written into -o must not be an input (-m, --data, --eval-data, --config): checked
 * before anything is done, by device and inode (links count). */
static int refuse_inputs_as_outputs(const train_opts *o) {
    static const char *const outs[] = {"model.gguf",
                                       "adapter.gguf",
                                       "train_state.bin",
                                       "metrics.jsonl",
                                       "loss.svg",
                                       "adapter/adapter_model.safetensors",
                                       "adapter/adapter_config.json"};
    const char *ins[] = {o->model, o->data, o->eval_data, o->config};
    for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
        char path[4096];
        struct stat so, si;
        join(path, sizeof path, o->out, outs[k]);
        if (stat(path, &so) != 0) continue;
        for (size_t j = 0; j < sizeof ins / sizeof ins[0]; j++)
            if (ins[j] && stat(ins[j], &si) == 0 && si.st_dev == so.st_dev &&
                si.st_ino == so.st_ino)
                return cli_usage_error(
                    CMD, "%s is the input %s: it would be overwritten; choose another -o", path,
                    ins[j]);
    }
    return 0;
}

/* general.name of a saved whole model: --from-scratch's, or --full's (the base's name + "-ft") */
static const char *g_model_name = "llama3c-pretrained";

static int save_adapters(const char *dir, const l3c_model *model, const l3c_train_model *tm) {
    char path[4096];
    if (!tm->lora) { /* --from-scratch / --full: the whole model, with -m's tokenizer */
        join(path, sizeof path, dir, "model.gguf");
        if (l3c_train_model_save_gguf(tm, model, 0, path, g_model_name))
            return cli_runtime_error(CMD, "saving the model");
        return 0;
    }
    join(path, sizeof path, dir, "adapter.gguf");
    if (l3c_lora_save_gguf(tm->lora, &model->cfg, path))
        return cli_runtime_error(CMD, "saving the adapter");
    join(path, sizeof path, dir, "adapter");
    if (l3c_lora_save_peft(tm->lora, &model->cfg, path, model->name))
        return cli_runtime_error(CMD, "saving the PEFT adapter");
    return 0;
}

/* Replaces *ds by its packed form (l3c_data_pack) and says how many rows it saved. */
static int pack_data(l3c_dataset **ds, int T, int quiet) {
    l3c_dataset *p;
    if (l3c_data_pack(*ds, T, &p)) return cli_runtime_error(CMD, "packing the data");
    if (!quiet)
        fprintf(stderr, "data: packed %zu examples into %zu rows of <= %d tokens\n", (*ds)->n_ex,
                p->n_ex, T);
    l3c_data_free(*ds);
    *ds = p;
    return 0;
}

/* --full trains an fp32 copy of every weight: only bases stored in F32 / F16 / BF16 (a quantized
 * base would be trained and saved at another precision than it was made for). */
static int full_base_check(const l3c_model *m, const char *path) {
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const l3c_layer *L = &m->w.layers[l];
        const l3c_weight *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
            const int t = w[i]->type;
            if (t != L3C_TYPE_F32 && t != L3C_TYPE_F16 && t != L3C_TYPE_BF16) {
                fprintf(stderr,
                        "llama3c train: --full needs an F32, F16 or BF16 base; %s has %s weights "
                        "(layer %d): fine-tune it with LoRA (the default, QLoRA-style), or --full "
                        "an unquantized copy\n",
                        path, l3c_type_name(t), l);
                return CLI_ERR;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ evaluation */

/* Mean loss over every trained target of ds (batches of B, in order). */
static int evaluate(l3c_train_model *tm, const l3c_dataset *ds, int B, int T, int32_t *ids,
                    int32_t *tgt, int32_t *pos, double *mean) {
    double sum = 0.0;
    int64_t n = 0;
    const size_t steps = l3c_data_steps_per_epoch(ds, B);
    tm->dropout_on = 0; /* LoRA dropout is for training only */
    for (size_t k = 0; k < steps; k++) {
        l3c_data_batch_pos(ds, NULL, k * (size_t)B, B, T, ids, tgt, pos);
        float loss;
        if (l3c_train_forward_pos(tm, ids, tgt, pos, B, T, &loss))
            return cli_runtime_error(CMD, "evaluation");
        sum += (double)loss * (double)tm->n_valid;
        n += tm->n_valid;
    }
    tm->n_valid = -1;
    *mean = n ? sum / (double)n : NAN;
    return 0;
}

static long long peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (long long)ru.ru_maxrss / 1024;
}

/* ------------------------------------------------------------------ data parallel (mpirun)
 * Under mpirun every rank holds the whole model and trains on its share of every batch: rows
 * [b0, b1) of each of the step's micro-batches of B sequences. Its gradients and loss are sums over
 * its own targets divided by the whole step's target count (every rank loads the whole batch and
 * counts them), so summed over the ranks (MPI all-reduce) they are the step's means: N ranks x B/N
 * sequences step like one process with B (up to the order of float sums). Rank 0's summed gradients are then broadcast, so every rank takes the same AdamW step and
 * the parameters stay bitwise equal (checked at every save: dp_check_same). Rank 0 writes every
 * file; the others read only (--resume: the same output folder on every node). */

static void dp_share(int B, int *b0, int *b1) {
    const int N = l3c_comm_size(), r = l3c_comm_rank(), base = B / N, extra = B % N;
    *b0 = r * base + (r < extra ? r : extra);
    *b1 = *b0 + base + (r < extra);
}

static void dp_reduce(l3c_train_model *tm, double *loss_sum) {
    /* each rank's gradients are its rows' share of the step's gradient (normalized by the
     * targets of the whole step), so the step's gradient is their sum; rank 0's sum is then sent
     * to all, so every rank applies the same bits */
    if (l3c_comm_size() == 1) return;
    float w = (float)*loss_sum;
    l3c_comm_allreduce_sum_f32(&w, 1);
    l3c_comm_allreduce_sum_f32(tm->grads, (int64_t)tm->n_params);
    l3c_comm_bcast(tm->grads, tm->n_params * sizeof(float), 0); /* one result, bit for bit */
    *loss_sum = (double)w;
}

/* every rank's parameters equal rank 0's, bit for bit (else the job stops) */
static void dp_check_same(const l3c_train_model *tm, int64_t step) {
    if (l3c_comm_size() == 1) return;
    uint64_t h = 0xcbf29ce484222325ull, h0;
    const unsigned char *b = (const unsigned char *)tm->params;
    for (size_t i = 0; i < tm->n_params * sizeof(float); i++) h = (h ^ b[i]) * 0x100000001b3ull;
    h0 = h;
    l3c_comm_bcast(&h0, sizeof h0, 0);
    if (h != h0) l3c_comm_abort("train: after step %lld the parameters differ from rank 0's", (long long)step);
}

/* ------------------------------------------------------------------ the command */

int cmd_train(int argc, char **argv) {
    train_opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    l3c_model *model = NULL;
    l3c_dataset *all = NULL, *train = NULL, *eval = NULL;
    l3c_train_model *tm = NULL;
    l3c_metrics_log *ml = NULL;
    int32_t *ids = NULL, *tgt = NULL, *pos = NULL, *order = NULL;
    char path[4096];

    const int writer = l3c_comm_rank() == 0; /* data parallel: rank 0 writes the files */
    if (o.batch < l3c_comm_size()) {
        fprintf(stderr,
                "llama3c train: --batch %d is smaller than the %d ranks (each takes a share of "
                "every batch)\n",
                o.batch, l3c_comm_size());
        return CLI_USAGE;
    }
    if (mkdir(o.out, 0777) != 0 &&
        errno != EEXIST) { /* made before loading: a bad path fails fast */
        fprintf(stderr, "llama3c train: cannot create %s: %s\n", o.out, strerror(errno));
        return CLI_ERR;
    }
    if ((rc = refuse_inputs_as_outputs(&o))) return rc;
    if ((rc = cli_load_model(CMD, o.model, o.n_threads, 0, 0, &model))) return rc;
    rc = CLI_ERR;
    l3c_data_params dp = l3c_data_default_params();
    dp.seq_len = o.seq;
    if (l3c_data_load(model, o.data, &dp, &all)) {
        cli_runtime_error(CMD, "reading the data");
        goto done;
    }
    if (o.eval_data) {
        if (l3c_data_split(all, 0.0, o.seed, &train, &eval) ||
            l3c_data_load(model, o.eval_data, &dp, &eval)) {
            cli_runtime_error(CMD, "reading the evaluation data");
            goto done;
        }
    } else if (o.eval_frac > 0.0f && all->n_ex < 2) {
        fprintf(stderr,
                "llama3c train: %s has %zu example(s): too few to hold out an evaluation share "
                "(use --eval-frac 0 or --eval-data)\n",
                o.data, all->n_ex);
        goto done;
    } else if (l3c_data_split(all, o.eval_frac, o.seed, &train, &eval)) {
        cli_runtime_error(CMD, "splitting the data");
        goto done;
    }
    if (!o.quiet) {
        l3c_data_describe(train, "train", stderr);
        if (eval) l3c_data_describe(eval, "eval", stderr);
    }
    if (train->n_ex == 0 || train->n_trained == 0) {
        fprintf(stderr, "llama3c train: %s: no training examples with a trained target\n", o.data);
        goto done;
    }
    if (o.pack < 0) o.pack = train->format != L3C_DATA_TEXT;
    if (o.pack && (pack_data(&train, o.seq, o.quiet) || (eval && pack_data(&eval, o.seq, 1))))
        goto done;

    const int B = o.batch, T = o.seq, G = o.grad_accum;
    const size_t spe = l3c_data_steps_per_epoch(train, B * G);
    const int64_t total64 = o.steps ? o.steps : (int64_t)spe * o.epochs;
    if (total64 > 100000000) {
        fprintf(stderr, "llama3c train: %lld steps is too many\n", (long long)total64);
        goto done;
    }
    const int total = (int)total64;
    if (o.eval_every < 0) o.eval_every = total >= 10 ? total / 10 : 1;

    if (o.from_scratch) {
        l3c_train_config tc;
        if (l3c_train_config_from_json(o.config, model->cfg.n_vocab, &tc) ||
            l3c_train_model_create(&tc, o.seed, &tm)) {
            cli_runtime_error(CMD, "creating the model");
            goto done;
        }
    } else if (o.full) {
        static char name[300];
        if (full_base_check(model, o.model)) goto done;
        if (l3c_train_model_from_gguf(o.model, &tm)) {
            cli_runtime_error(CMD, "loading the model for full fine-tuning");
            goto done;
        }
        snprintf(name, sizeof name, "%s-ft", model->name);
        g_model_name = name;
    } else {
        /* rsLoRA scales by alpha / sqrt(r) == (alpha sqrt(r)) / r: the adapter keeps that alpha
         * (GGUF: llama.cpp's alpha / r gives the same scale) and remembers the user's for PEFT */
        const float a = o.rslora ? (float)(o.alpha * sqrt((double)o.rank)) : o.alpha;
        if (l3c_train_model_lora(model, o.targets, o.rank, a, o.seed, NULL, &tm)) {
            cli_runtime_error(CMD, "setting up LoRA");
            goto done;
        }
        if (o.rslora) tm->lora->rs_alpha = o.alpha;
        tm->lora_dropout = tm->lora->dropout = o.lora_dropout;
    }
    tm->checkpoint = o.checkpoint;
    const int nt = o.n_threads > 0 ? o.n_threads : model->n_threads;
    if (l3c_train_model_set_threads(tm, nt)) {
        cli_runtime_error(CMD, "starting threads");
        goto done;
    }
    tm->adam_m = calloc(tm->n_params, sizeof(float));
    tm->adam_v = calloc(tm->n_params, sizeof(float));
    ids = malloc((size_t)B * T * sizeof *ids);
    tgt = malloc((size_t)B * T * sizeof *tgt);
    pos = malloc((size_t)B * T * sizeof *pos);
    order = malloc((train->n_ex ? train->n_ex : 1) * sizeof *order);
    if (!tm->adam_m || !tm->adam_v || !ids || !tgt || !pos || !order) {
        fprintf(stderr, "llama3c train: out of memory\n");
        goto done;
    }
    const uint64_t fp = fingerprint(&o, model, tm, train, eval, total);
    int64_t first = 0;
    join(path, sizeof path, o.out, "metrics.jsonl");
    if (o.resume) {
        if (load_state(o.out, tm, fp, &first) || (writer && trim_metrics(path, first))) goto done;
        fprintf(stderr, "llama3c train: resuming at step %lld of %d\n", (long long)first, total);
    }
    if (l3c_metrics_open(writer ? path : "/dev/null", o.resume, &ml)) {
        cli_runtime_error(CMD, "opening the metrics log");
        goto done;
    }
    if (o.from_scratch)
        fprintf(
            stderr,
            "llama3c train: from scratch, %d layers x %d wide, %zu parameters, vocabulary of %s\n",
            tm->cfg.n_layer, tm->cfg.n_embd, tm->n_params, model->name);
    else if (o.full)
        fprintf(stderr, "llama3c train: full fine-tuning of %s (%zu parameters, fp32)\n",
                model->name, tm->n_params);
    else
        fprintf(stderr, "llama3c train: %s rank %d alpha %g on %s (%zu adapter values)\n",
                o.rslora ? "rsLoRA" : "LoRA", o.rank, (double)o.alpha, model->name, tm->n_params);
    fprintf(stderr, "llama3c train: %d steps of %d x %d tokens%s, %d threads%s\n", total, B * G, T,
            G > 1 ? " (micro-batches' gradients summed)" : "", nt,
            o.checkpoint ? ", recomputing activations" : "");
    int b0, b1; /* this rank's rows of every batch */
    dp_share(B, &b0, &b1);
    if (l3c_comm_size() > 1)
        fprintf(stderr, "llama3c train: rank %d of %d: sequences [%d, %d) of every batch\n", l3c_comm_rank(),
                l3c_comm_size(), b0, b1);

    l3c_adamw_params ap = l3c_adamw_default_params();
    ap.lr = o.lr;
    ap.weight_decay = o.wd;
    ap.grad_clip = o.clip;
    ap.warmup_steps = o.warmup;
    ap.total_steps = total;
    ap.min_lr_ratio = o.min_lr_ratio;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    l3c_progress pr;
    l3c_progress_init(&pr, o.quiet ? NULL : stderr, first, total, o.log_every, -1);
    const double t0 = l3c_time_s();
    double t_train = 0.0, first_loss = NAN, last_loss = NAN, first_eval = NAN, last_eval = NAN;
    int64_t tokens = 0, trained = 0, cur_epoch = -1;
    if (eval && first == 0) { /* the base model's eval loss, the baseline the adapter improves on */
        if (evaluate(tm, eval, B, T, ids, tgt, pos, &first_eval)) goto done;
        l3c_metrics_row r = l3c_metrics_row_empty(0);
        r.eval_loss = first_eval;
        r.eval_ppl = exp(first_eval);
        l3c_metrics_write(ml, &r);
        last_eval = first_eval;
        fprintf(stderr, "llama3c train: eval loss before training %.4f (ppl %.2f)\n", first_eval,
                exp(first_eval));
    }
    for (int64_t step = first; step < total; step++) {
        int64_t epoch;
        size_t start;
        l3c_data_locate(train, B * G, step, &epoch, &start);
        if (epoch != cur_epoch) {
            l3c_data_order(train->n_ex, o.seed, epoch, order);
            cur_epoch = epoch;
        }
        /* G micro-batches of B rows, the loss normalized by the trained targets of all of them */
        int64_t n_tgt = 0;
        for (int g = 0; g < G; g++)
            n_tgt += l3c_data_batch(train, order, start + (size_t)g * B, B, T, ids, tgt);
        const double ts = l3c_time_s();
        float loss = 0.0f, norm = 0.0f, lr = 0.0f;
        double loss_sum = 0.0;
        l3c_train_zero_grad(tm);
        /* data parallel: this rank runs rows [b0, b1) of every micro-batch; n_tgt counts the
         * whole step's targets on every rank, so the ranks' gradients add up to the step's */
        for (int g = 0; g < G && start + (size_t)g * B < train->n_ex; g++) {
            float mloss;
            l3c_data_batch_pos(train, order, start + (size_t)g * B, B, T, ids, tgt, pos);
            tm->dropout_on =
                1; /* a mask per (seed, step, micro-batch): resumed runs see the same */
            tm->dropout_seed = o.seed * 0x9e3779b97f4a7c15ull + (uint64_t)(step * G + g);
            const size_t r0 = (size_t)b0 * (size_t)T;
            if (l3c_train_forward_pos(tm, ids + r0, tgt + r0, pos + r0, b1 - b0, T, &mloss)) {
                cli_runtime_error(CMD, "forward");
                goto done;
            }
            loss_sum += (double)mloss * (double)tm->n_valid;
            if (l3c_train_backward_n(tm, n_tgt)) {
                cli_runtime_error(CMD, "backward");
                goto done;
            }
        }
        dp_reduce(tm, &loss_sum);
        loss = n_tgt ? (float)(loss_sum / (double)n_tgt) : 0.0f;
        if (l3c_train_step(tm, &ap, (int)step, &norm, &lr)) {
            cli_runtime_error(CMD, "optimizer step");
            goto done;
        }
        t_train += l3c_time_s() - ts;
        tokens += (int64_t)B * T * G;
        trained += n_tgt;
        if (isnan(first_loss)) first_loss = loss;
        last_loss = loss;
        if (!isfinite(loss)) {
            fprintf(stderr, "\nllama3c train: the loss is %g at step %lld: lower --lr?\n",
                    (double)loss, (long long)step);
            goto done;
        }
        l3c_metrics_row r = l3c_metrics_row_empty(step + 1);
        r.epoch = epoch;
        r.loss = loss;
        r.lr = lr;
        r.grad_norm = norm;
        r.tokens = tokens;
        r.tok_per_s = t_train > 0 ? (double)tokens / t_train : NAN;
        r.trained_tokens = trained;
        r.trained_tok_per_s = t_train > 0 ? (double)trained / t_train : NAN;
        r.elapsed_s = l3c_time_s() - t0;
        const int last = step + 1 == total;
        if (eval && ((o.eval_every > 0 && (step + 1) % o.eval_every == 0) || last)) {
            if (evaluate(tm, eval, B, T, ids, tgt, pos, &last_eval)) goto done;
            r.eval_loss = last_eval;
            r.eval_ppl = exp(last_eval);
        }
        l3c_metrics_write(ml, &r);
        l3c_progress_update(&pr, step + 1, loss, lr, r.tok_per_s, r.trained_tok_per_s);
        const int stop =
            (o.stop_after > 0 && step + 1 == o.stop_after && !last) || (g_stop && !last);
        if ((o.save_every > 0 && (step + 1) % o.save_every == 0) || last || stop) {
            dp_check_same(tm, step + 1);
            if (writer && (save_state(o.out, tm, fp, step + 1) || save_adapters(o.out, model, tm))) goto done;
        }
        if (stop) {
            l3c_progress_finish(&pr);
            if (g_stop)
                fprintf(
                    stderr,
                    "llama3c train: interrupted after step %lld; state and adapters saved in %s; "
                    "continue with --resume\n",
                    (long long)(step + 1), o.out);
            else
                fprintf(stderr,
                        "llama3c train: stopped after step %lld as asked; continue with --resume\n",
                        (long long)(step + 1));
            rc = g_stop ? 128 + (int)g_stop : 0;
            goto done;
        }
    }
    l3c_progress_finish(&pr);
    if (writer && first == total && save_adapters(o.out, model, tm)) goto done; /* resumed a finished run */
    l3c_metrics_close(ml);
    ml = NULL;
    if (!writer) {
        rc = 0;
        goto done;
    }
    char svg[4096];
    join(svg, sizeof svg, o.out, "loss.svg");
    if (l3c_plot_svg_from_jsonl(path, svg, "llama3c train: loss")) {
        cli_runtime_error(CMD, "plotting the loss");
        goto done;
    }
    if (o.from_scratch || o.full)
        fprintf(stderr, "llama3c train: wrote %s/model.gguf, metrics.jsonl, loss.svg\n", o.out);
    else
        fprintf(
            stderr,
            "llama3c train: wrote %s/adapter.gguf, %s/adapter/ (PEFT), metrics.jsonl, loss.svg\n",
            o.out, o.out);
    printf(
        "{\"steps\": %d, \"first_step\": %lld, \"tokens\": %lld, \"trained_tokens\": %lld, "
        "\"seconds\": %.3f, "
        "\"tok_per_s\": %.2f, \"trained_tok_per_s\": %.2f, \"packed\": %d, \"first_loss\": %.6g, "
        "\"train_loss\": %.6g, \"eval_loss_before\": "
        "%.6g, "
        "\"eval_loss\": %.6g, \"peak_rss_mib\": %lld, \"threads\": %d, \"trained_values\": %zu}\n",
        total, (long long)first, (long long)tokens, (long long)trained, t_train,
        t_train > 0 ? (double)tokens / t_train : 0.0, t_train > 0 ? (double)trained / t_train : 0.0,
        o.pack, isnan(first_loss) ? -1.0 : first_loss, isnan(last_loss) ? -1.0 : last_loss,
        isnan(first_eval) ? -1.0 : first_eval, isnan(last_eval) ? -1.0 : last_eval, peak_rss_mib(),
        nt, tm->n_params);
    rc = 0;
done:
    if (ml) l3c_metrics_close(ml);
    free(ids);
    free(tgt);
    free(pos);
    free(order);
    l3c_train_model_free(tm);
    l3c_data_free(all);
    l3c_data_free(train);
    l3c_data_free(eval);
    l3c_model_free(model);
    return rc;
}
