/*
 * cmd_train.c -- `llama3c train`: LoRA fine-tuning on a GGUF base (weights kept in their file
 * type), full fine-tuning, or pre-training from scratch, with data from a text / JSONL / chat
 * file, an eval split, progress, a JSONL metrics log, a loss plot, checkpoints with exact resume,
 * and the adapter in both formats users load (llama.cpp GGUF LoRA and a PEFT folder).
 *
 * Built on the public training API (l3c_trainer in llama3c.h, docs/TRAINING.md) only. The run is
 * a pure function of (model, data, options); DIR/train_state.bin (l3c_trainer_save_state) holds
 * the trained values, the AdamW moments and the step count: `--resume` continues from it and
 * gives bitwise the same result as a run that was never interrupted.
 */
#include "cli.h"
#include "common.h"

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
        while (k < L3C_TRAIN_N_TARGETS && strcmp(p, l3c_train_target_name(k)))
            k++;
        if (k == L3C_TRAIN_N_TARGETS)
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
                      .targets = L3C_TRAIN_TARGET_ALL};
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

/* SIGINT / SIGTERM: the step under way finishes, state and adapters are saved, exit 128 + signal.
 * A second signal ends the process at once (removing any file half-written). */
static volatile sig_atomic_t g_stop;

static void on_stop(int sig) {
    g_stop = sig;
    cli_remove_partial_outputs_on_signal();
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

static long long peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (long long)ru.ru_maxrss / 1024;
}

/* l3c_trainer's failures carry what was being done and the file / field: printed as they are. */
static int train_error(void) {
    fprintf(stderr, "llama3c train: %s\n", l3c_last_error());
    return CLI_ERR;
}

/* state and outputs after a step: the state file, then the adapters / model */
static int save_all(l3c_trainer *tr, const char *dir) {
    char path[4096];
    join(path, sizeof path, dir, "train_state.bin");
    if (l3c_trainer_save_state(tr, path) || l3c_trainer_save(tr, dir)) return train_error();
    return 0;
}

/* ------------------------------------------------------------------ the command */

int cmd_train(int argc, char **argv) {
    train_opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    l3c_model *model = NULL;
    l3c_trainer *tr = NULL;
    char path[4096];

    /* data parallel (mpirun): every rank takes a share of every batch; rank 0 writes the files */
    const int writer = l3c_dist_rank() == 0;
    if (o.batch < l3c_dist_size()) {
        fprintf(stderr,
                "llama3c train: --batch %d is smaller than the %d ranks (each takes a share of "
                "every batch)\n",
                o.batch, l3c_dist_size());
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
    l3c_model_info mi;
    l3c_model_get_info(model, &mi);

    char metrics[4096];
    join(metrics, sizeof metrics, o.out, "metrics.jsonl");
    l3c_trainer_params tp = l3c_trainer_default_params();
    tp.mode = o.from_scratch ? L3C_TRAIN_SCRATCH : o.full ? L3C_TRAIN_FULL : L3C_TRAIN_LORA;
    tp.config_path = o.config;
    tp.lora_targets = o.targets;
    tp.lora_rank = o.rank;
    tp.lora_alpha = o.alpha;
    tp.rslora = o.rslora;
    tp.lora_dropout = o.lora_dropout;
    tp.data_path = o.data;
    tp.eval_data_path = o.eval_data;
    tp.eval_frac = o.eval_frac;
    tp.seq_len = o.seq;
    tp.batch = o.batch;
    tp.grad_accum = o.grad_accum;
    tp.pack = o.pack;
    tp.steps = o.steps;
    tp.epochs = o.epochs;
    tp.lr = o.lr;
    tp.warmup = o.warmup;
    tp.min_lr_ratio = o.min_lr_ratio;
    tp.weight_decay = o.wd;
    tp.grad_clip = o.clip;
    tp.seed = o.seed;
    tp.eval_every = o.eval_every;
    tp.n_threads = o.n_threads;
    tp.checkpoint = o.checkpoint;
    tp.log = o.quiet ? NULL : stderr;
    tp.progress = o.quiet ? NULL : stderr;
    tp.log_every = o.log_every;
    tp.metrics_path = metrics;
    if (l3c_trainer_create(model, &tp, &tr)) {
        train_error();
        goto done;
    }
    l3c_trainer_info ti;
    l3c_trainer_get_info(tr, &ti);
    const int total = (int)ti.total_steps, nt = ti.n_threads;
    const int B = o.batch, T = o.seq, G = o.grad_accum;
    int64_t first = 0;
    if (o.resume) {
        join(path, sizeof path, o.out, "train_state.bin");
        if (l3c_trainer_load_state(tr, path)) {
            fprintf(stderr, "llama3c train: --resume: %s\n", l3c_last_error());
            goto done;
        }
        l3c_trainer_get_info(tr, &ti);
        first = ti.next_step;
        fprintf(stderr, "llama3c train: resuming at step %lld of %d\n", (long long)first, total);
    }
    if (o.from_scratch)
        fprintf(
            stderr,
            "llama3c train: from scratch, %d layers x %d wide, %zu parameters, vocabulary of %s\n",
            ti.n_layer, ti.n_embd, ti.n_trained_values, mi.name);
    else if (o.full)
        fprintf(stderr, "llama3c train: full fine-tuning of %s (%zu parameters, fp32)\n", mi.name,
                ti.n_trained_values);
    else
        fprintf(stderr, "llama3c train: %s rank %d alpha %g on %s (%zu adapter values)\n",
                o.rslora ? "rsLoRA" : "LoRA", o.rank, (double)o.alpha, mi.name,
                ti.n_trained_values);
    fprintf(stderr, "llama3c train: %d steps of %d x %d tokens%s, %d threads%s\n", total, B * G, T,
            G > 1 ? " (micro-batches' gradients summed)" : "", nt,
            o.checkpoint ? ", recomputing activations" : "");
    if (l3c_dist_size() > 1)
        fprintf(stderr, "llama3c train: rank %d of %d: sequences [%d, %d) of every batch\n",
                l3c_dist_rank(), l3c_dist_size(), ti.batch_begin, ti.batch_end);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    double first_loss = NAN, last_loss = NAN, first_eval = NAN, last_eval = NAN;
    l3c_train_step_info si = {.train_seconds = 0.0};
    if (ti.n_eval_examples && first == 0) { /* the base's eval loss, the baseline to improve on */
        if (l3c_trainer_eval(tr, &first_eval)) {
            train_error();
            goto done;
        }
        last_eval = first_eval;
        fprintf(stderr, "llama3c train: eval loss before training %.4f (ppl %.2f)\n", first_eval,
                exp(first_eval));
    }
    for (int64_t step = first; step < total; step++) {
        if (l3c_trainer_step(tr, &si)) {
            train_error();
            goto done;
        }
        if (isnan(first_loss)) first_loss = si.loss;
        last_loss = si.loss;
        if (!isfinite(si.loss)) {
            fprintf(stderr, "\nllama3c train: the loss is %g at step %lld: lower --lr?\n",
                    (double)si.loss, (long long)step);
            goto done;
        }
        if (!isnan(si.eval_loss)) last_eval = si.eval_loss;
        const int last = step + 1 == total;
        const int stop =
            (o.stop_after > 0 && step + 1 == o.stop_after && !last) || (g_stop && !last);
        if (((o.save_every > 0 && (step + 1) % o.save_every == 0) || last || stop) &&
            save_all(tr, o.out))
            goto done;
        if (stop) {
            l3c_trainer_progress_end(tr);
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
    l3c_trainer_progress_end(tr);
    if (first == total && l3c_trainer_save(tr, o.out)) { /* resumed a finished run */
        train_error();
        goto done;
    }
    const size_t n_values = ti.n_trained_values;
    l3c_trainer_free(tr); /* closes the metrics log */
    tr = NULL;
    if (!writer) {
        rc = 0;
        goto done;
    }
    char svg[4096];
    join(svg, sizeof svg, o.out, "loss.svg");
    if (l3c_train_plot_svg(metrics, svg, "llama3c train: loss")) {
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
    const double ts = si.train_seconds;
    printf(
        "{\"steps\": %d, \"first_step\": %lld, \"tokens\": %lld, \"trained_tokens\": %lld, "
        "\"seconds\": %.3f, "
        "\"tok_per_s\": %.2f, \"trained_tok_per_s\": %.2f, \"packed\": %d, \"first_loss\": %.6g, "
        "\"train_loss\": %.6g, \"eval_loss_before\": "
        "%.6g, "
        "\"eval_loss\": %.6g, \"peak_rss_mib\": %lld, \"threads\": %d, \"trained_values\": %zu}\n",
        total, (long long)first, (long long)si.tokens, (long long)si.trained_tokens, ts,
        ts > 0 ? (double)si.tokens / ts : 0.0, ts > 0 ? (double)si.trained_tokens / ts : 0.0,
        ti.packed, isnan(first_loss) ? -1.0 : first_loss, isnan(last_loss) ? -1.0 : last_loss,
        isnan(first_eval) ? -1.0 : first_eval, isnan(last_eval) ? -1.0 : last_eval, peak_rss_mib(),
        nt, n_values);
    rc = 0;
done:
    l3c_trainer_free(tr);
    l3c_model_free(model);
    return rc;
}
