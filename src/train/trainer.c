/*
 * trainer.c -- the public training API (l3c_trainer in include/llama3c.h) on top of the internal
 * training code: data (data.h), the training model and AdamW (train_model.h), config and GGUF
 * output (train_io.h), progress line, metrics log and plot (report.h), and the ranks of a data
 * parallel run (dist/comm.h).
 *
 * The run is a pure function of (model, data, params): batches come from (seed, step)
 * (l3c_data_locate / l3c_data_order); the state is the trained parameters, the AdamW moments and
 * the step count, saved with a fingerprint of everything a resumed run must share.
 *
 * Data parallel (several ranks): every rank holds the whole model and runs rows [b0, b1) of each
 * of the step's micro-batches. Its gradients and loss are sums over its own targets divided by the
 * whole step's target count (every rank builds the whole batch and counts them), so summed over
 * the ranks (all-reduce) they are the step's means; rank 0's sum is then broadcast, so every rank
 * takes the same AdamW step and the parameters stay bitwise equal (checked at every save).
 */
#include "llama3c.h"

#include "dist/comm.h"
#include "model/lora.h"
#include "model/model.h"
#include "train/data.h"
#include "train/report.h"
#include "train/train_io.h"
#include "train/train_model.h"
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define STATE_MAGIC "L3CTRN01"

struct l3c_trainer {
    const l3c_model *model;
    l3c_trainer_params p; /* resolved: pack 0 / 1, lr, eval_every; paths not kept */
    l3c_dataset *train, *eval;
    l3c_train_model *tm;
    l3c_adamw_params ap;
    int32_t *ids, *tgt, *pos, *order;
    int64_t total, next, cur_epoch;
    uint64_t fp;
    int nt, b0, b1, writer;
    char *metrics_path;  /* NULL: no log */
    int64_t resumed_at;  /* the step load_state resumed at, -1: not resumed */
    l3c_metrics_log *ml; /* opened at the first write */
    l3c_progress pr;
    int pr_started;
    double t0, t_train; /* t0 < 0: not started */
    int64_t tokens, trained;
    char model_name[300]; /* full: the base's name + "-ft"; scratch: "llama3c-pretrained" */
};

static const char *const TARGET_NAMES[L3C_TRAIN_N_TARGETS] = {"q",    "k",  "v",   "o",
                                                              "gate", "up", "down"};

const char *l3c_train_target_name(int k) {
    return k >= 0 && k < L3C_TRAIN_N_TARGETS ? TARGET_NAMES[k] : NULL;
}

l3c_trainer_params l3c_trainer_default_params(void) {
    return (l3c_trainer_params){.mode = L3C_TRAIN_LORA,
                                .lora_targets = L3C_TRAIN_TARGET_ALL,
                                .lora_rank = 8,
                                .lora_alpha = 16.0f,
                                .eval_frac = 0.05f,
                                .seq_len = 256,
                                .batch = 4,
                                .grad_accum = 1,
                                .pack = -1,
                                .epochs = 1,
                                .lr = -1.0f,
                                .min_lr_ratio = 0.1f,
                                .grad_clip = 1.0f,
                                .seed = 42,
                                .eval_every = -1,
                                .checkpoint = 1,
                                .data_parallel = 1,
                                .log_every = 10};
}

/* Prefixes the message of the failure that just happened with what was being done. */
static l3c_status fail_in(l3c_status st, const char *what) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", l3c_last_error());
    return l3c_fail(st, "%s%s%s", what, *msg ? ": " : "", msg);
}

static int dp_size(const l3c_trainer *t) {
    return t->p.data_parallel ? l3c_comm_size() : 1;
}

static l3c_status check_params(const l3c_model *model, const l3c_trainer_params *p) {
#define RANGE(field, lo, hi)                                                                       \
    if (!((field) >= (lo) && (field) <= (hi)))                                                     \
        return l3c_fail(L3C_ERR_INVALID_ARG, "trainer: " #field " %g is out of range [%g, %g]",    \
                        (double)(field), (double)(lo), (double)(hi));
    if (!model || !p)
        return l3c_fail(L3C_ERR_INVALID_ARG, "trainer: model and params are required");
    if (p->mode < L3C_TRAIN_LORA || p->mode > L3C_TRAIN_SCRATCH)
        return l3c_fail(L3C_ERR_INVALID_ARG, "trainer: unknown mode %d", p->mode);
    if (!p->data_path || !*p->data_path)
        return l3c_fail(L3C_ERR_INVALID_ARG, "trainer: data_path is required");
    if ((p->mode == L3C_TRAIN_SCRATCH) != (p->config_path != NULL))
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "trainer: config_path is required by L3C_TRAIN_SCRATCH and only by it");
    if (p->mode == L3C_TRAIN_LORA &&
        (p->lora_targets == 0 || (p->lora_targets & ~(unsigned)L3C_TRAIN_TARGET_ALL)))
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "trainer: lora_targets 0x%x: a non-empty set of L3C_TRAIN_TARGET_* bits",
                        p->lora_targets);
    RANGE(p->lora_rank, 1, 4096)
    RANGE(p->lora_alpha, 1e-6, 1e6)
    RANGE(p->lora_dropout, 0.0, 0.9)
    RANGE(p->eval_frac, 0.0, 0.5)
    RANGE(p->seq_len, 2, 65536)
    RANGE(p->batch, 1, 4096)
    RANGE(p->grad_accum, 1, 4096)
    RANGE(p->pack, -1, 1)
    RANGE(p->steps, 0, 100000000)
    RANGE(p->epochs, 1, 100000)
    if (!(p->lr < 0.0f)) RANGE(p->lr, 0.0, 10.0)
    RANGE(p->warmup, 0, 100000000)
    RANGE(p->min_lr_ratio, 0.0, 1.0)
    RANGE(p->weight_decay, 0.0, 10.0)
    RANGE(p->grad_clip, 0.0, 1e6)
    RANGE(p->eval_every, -1, 100000000)
    RANGE(p->log_every, 1, 100000000)
    if (p->n_threads > 512)
        return l3c_fail(L3C_ERR_INVALID_ARG, "trainer: n_threads %d is more than 512",
                        p->n_threads);
    if (p->data_parallel && p->batch < l3c_comm_size())
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "trainer: batch %d is smaller than the %d ranks (each takes a share of "
                        "every batch)",
                        p->batch, l3c_comm_size());
    return L3C_OK;
#undef RANGE
}

/* Full fine-tuning trains an fp32 copy of every weight: only bases stored in F32 / F16 / BF16 (a
 * quantized base would be trained and saved at another precision than it was made for). */
static l3c_status full_base_check(const l3c_model *m) {
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const l3c_layer *L = &m->w.layers[l];
        const l3c_weight *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
            const int ty = w[i]->type;
            if (ty != L3C_TYPE_F32 && ty != L3C_TYPE_F16 && ty != L3C_TYPE_BF16)
                return l3c_fail(L3C_ERR_INVALID_ARG,
                                "full fine-tuning needs an F32, F16 or BF16 base; %s has "
                                "%s weights (layer %d): fine-tune it with LoRA (the default, "
                                "QLoRA-style), or fully fine-tune an unquantized copy",
                                m->path, l3c_type_name(ty), l);
        }
    }
    return L3C_OK;
}

/* Replaces *ds by its packed form and says how many rows it saved (log may be NULL). */
static l3c_status pack_data(l3c_dataset **ds, int T, FILE *log) {
    l3c_dataset *p;
    if (l3c_data_pack(*ds, T, &p)) return fail_in(L3C_ERR_INVALID_ARG, "packing the data");
    if (log)
        fprintf(log, "data: packed %zu examples into %zu rows of <= %d tokens\n", (*ds)->n_ex,
                p->n_ex, T);
    l3c_data_free(*ds);
    *ds = p;
    return L3C_OK;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* What a resumed run must share with the one it continues (the same hash `llama3c train` used
 * before this API: its state files stay valid). */
static uint64_t fingerprint(const l3c_trainer *t) {
    const l3c_trainer_params *o = &t->p;
    const l3c_model *m = t->model;
    const l3c_train_model *tm = t->tm;
    const l3c_dataset *train = t->train, *eval = t->eval;
    const int total = (int)t->total, from_scratch = o->mode == L3C_TRAIN_SCRATCH,
              full = o->mode == L3C_TRAIN_FULL, rank = o->lora_rank, batch = o->batch,
              seq = o->seq_len, warmup = o->warmup, pack = o->pack, grad_accum = o->grad_accum;
    const unsigned targets = o->lora_targets;
    char s[1024];
    snprintf(
        s, sizeof s,
        "v1|%lld|%d|%d|%d|%d|%d|%u|%.9g|%d|%d|%.9g|%.9g|%.9g|%.9g|%.9g|%d|%llu|%zu|%zu|%zu|%zu",
        (long long)m->n_params, m->cfg.n_vocab, m->cfg.n_embd, m->cfg.n_layer, rank, o->checkpoint,
        targets, (double)o->lora_alpha, batch, seq, (double)o->lr, (double)o->min_lr_ratio,
        (double)o->weight_decay, (double)o->grad_clip, (double)o->eval_frac, warmup,
        (unsigned long long)o->seed, train->n_ex, train->n_tokens, eval ? eval->n_ex : 0,
        eval ? eval->n_tokens : 0);
    uint64_t h = fnv(1469598103934665603ull, s, strlen(s));
    h = fnv(h, &total, sizeof total);
    h = fnv(h, &from_scratch, sizeof from_scratch);
    h = fnv(h, &pack, sizeof pack);
    h = fnv(h, &grad_accum, sizeof grad_accum);
    h = fnv(h, &full, sizeof full);
    h = fnv(h, &o->rslora, sizeof o->rslora);
    h = fnv(h, &o->lora_dropout, sizeof o->lora_dropout);
    h = fnv(h, &tm->n_params, sizeof tm->n_params);
    h = fnv(h, &tm->cfg, sizeof tm->cfg);
    h = fnv(h, train->tokens, train->n_tokens * sizeof(int32_t));
    return fnv(h, train->mask, train->n_tokens);
}

static l3c_status load_data(l3c_trainer *t) {
    const l3c_trainer_params *o = &t->p;
    l3c_dataset *all = NULL;
    l3c_data_params dp = l3c_data_default_params();
    dp.seq_len = o->seq_len;
    l3c_status st = l3c_data_load(t->model, o->data_path, &dp, &all);
    if (st) return fail_in(st, "reading the data");
    if (o->eval_data_path) {
        if ((st = l3c_data_split(all, 0.0, o->seed, &t->train, &t->eval)) ||
            (st = l3c_data_load(t->model, o->eval_data_path, &dp, &t->eval))) {
            l3c_data_free(all);
            return fail_in(st, "reading the evaluation data");
        }
    } else if (o->eval_frac > 0.0f && all->n_ex < 2) {
        st = l3c_fail(L3C_ERR_INVALID_ARG,
                      "%s has %zu example(s): too few to hold out an evaluation share (use "
                      "--eval-frac 0 or --eval-data)",
                      o->data_path, all->n_ex);
        l3c_data_free(all);
        return st;
    } else if ((st = l3c_data_split(all, o->eval_frac, o->seed, &t->train, &t->eval))) {
        l3c_data_free(all);
        return fail_in(st, "splitting the data");
    }
    l3c_data_free(all);
    if (o->log) {
        l3c_data_describe(t->train, "train", o->log);
        if (t->eval) l3c_data_describe(t->eval, "eval", o->log);
    }
    if (t->train->n_ex == 0 || t->train->n_trained == 0)
        return l3c_fail(L3C_ERR_FORMAT, "%s: no training examples with a trained target",
                        o->data_path);
    if (t->p.pack < 0) t->p.pack = t->train->format != L3C_DATA_TEXT;
    if (t->p.pack && ((st = pack_data(&t->train, o->seq_len, o->log)) ||
                      (t->eval && (st = pack_data(&t->eval, o->seq_len, NULL)))))
        return st;
    return L3C_OK;
}

static l3c_status build_model(l3c_trainer *t) {
    const l3c_trainer_params *o = &t->p;
    const l3c_model *model = t->model;
    l3c_status st;
    if (o->mode == L3C_TRAIN_SCRATCH) {
        l3c_train_config tc;
        if ((st = l3c_train_config_from_json(o->config_path, model->cfg.n_vocab, &tc)) ||
            (st = l3c_train_model_create(&tc, o->seed, &t->tm)))
            return fail_in(st, "creating the model");
        snprintf(t->model_name, sizeof t->model_name, "llama3c-pretrained");
    } else if (o->mode == L3C_TRAIN_FULL) {
        if ((st = full_base_check(model))) return st;
        if ((st = l3c_train_model_from_gguf(model->path, &t->tm)))
            return fail_in(st, "loading the model for full fine-tuning");
        snprintf(t->model_name, sizeof t->model_name, "%s-ft", model->name);
    } else {
        /* rsLoRA scales by alpha / sqrt(r) == (alpha sqrt(r)) / r: the adapter keeps that alpha
         * (GGUF: llama.cpp's alpha / r gives the same scale) and remembers the user's for PEFT */
        const float a =
            o->rslora ? (float)(o->lora_alpha * sqrt((double)o->lora_rank)) : o->lora_alpha;
        if ((st = l3c_train_model_lora(model, o->lora_targets, o->lora_rank, a, o->seed, NULL,
                                       &t->tm)))
            return fail_in(st, "setting up LoRA");
        if (o->rslora) t->tm->lora->rs_alpha = o->lora_alpha;
        t->tm->lora_dropout = t->tm->lora->dropout = o->lora_dropout;
    }
    t->tm->checkpoint = o->checkpoint;
    t->nt = o->n_threads > 0 ? o->n_threads : model->n_threads;
    if ((st = l3c_train_model_set_threads(t->tm, t->nt))) return fail_in(st, "starting threads");
    return L3C_OK;
}

l3c_status l3c_trainer_create(const l3c_model *model, const l3c_trainer_params *params,
                              l3c_trainer **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "trainer: out is NULL");
    *out = NULL;
    l3c_status st = check_params(model, params);
    if (st) return st;
    l3c_trainer *t = calloc(1, sizeof *t);
    if (!t) return l3c_fail(L3C_ERR_NOMEM, "trainer: out of memory");
    t->model = model;
    t->p = *params;
    t->p.config_path = t->p.data_path = t->p.eval_data_path = t->p.metrics_path = NULL;
    t->cur_epoch = -1;
    t->resumed_at = -1;
    t->t0 = -1.0;
    t->writer = l3c_comm_rank() == 0;
    if (t->p.lr < 0.0f)
        t->p.lr = params->mode == L3C_TRAIN_SCRATCH ? 1e-3f
                  : params->mode == L3C_TRAIN_FULL  ? 1e-5f
                                                    : 2e-4f;
    if (params->metrics_path && !(t->metrics_path = strdup(params->metrics_path))) {
        l3c_trainer_free(t);
        return l3c_fail(L3C_ERR_NOMEM, "trainer: out of memory");
    }
    /* the loaders read the paths of the caller's params */
    t->p.data_path = params->data_path;
    t->p.eval_data_path = params->eval_data_path;
    t->p.config_path = params->config_path;
    st = load_data(t);
    if (!st) {
        const int B = t->p.batch, G = t->p.grad_accum;
        const size_t spe = l3c_data_steps_per_epoch(t->train, B * G);
        t->total = t->p.steps ? t->p.steps : (int64_t)spe * t->p.epochs;
        if (t->total > 100000000)
            st = l3c_fail(L3C_ERR_INVALID_ARG, "%lld steps is too many", (long long)t->total);
        else if (t->p.eval_every < 0)
            t->p.eval_every = t->total >= 10 ? (int32_t)(t->total / 10) : 1;
    }
    if (!st) st = build_model(t);
    t->p.data_path = t->p.eval_data_path = t->p.config_path = NULL;
    if (st) {
        l3c_trainer_free(t);
        return st;
    }
    const int B = t->p.batch, T = t->p.seq_len;
    l3c_train_model *tm = t->tm;
    tm->adam_m = calloc(tm->n_params, sizeof(float));
    tm->adam_v = calloc(tm->n_params, sizeof(float));
    t->ids = malloc((size_t)B * T * sizeof *t->ids);
    t->tgt = malloc((size_t)B * T * sizeof *t->tgt);
    t->pos = malloc((size_t)B * T * sizeof *t->pos);
    t->order = malloc((t->train->n_ex ? t->train->n_ex : 1) * sizeof *t->order);
    if (!tm->adam_m || !tm->adam_v || !t->ids || !t->tgt || !t->pos || !t->order) {
        l3c_trainer_free(t);
        return l3c_fail(L3C_ERR_NOMEM, "trainer: out of memory");
    }
    t->fp = fingerprint(t);
    const int N = dp_size(t), r = t->p.data_parallel ? l3c_comm_rank() : 0, base = B / N,
              extra = B % N;
    t->b0 = r * base + (r < extra ? r : extra);
    t->b1 = t->b0 + base + (r < extra);
    t->ap = l3c_adamw_default_params();
    t->ap.lr = t->p.lr;
    t->ap.weight_decay = t->p.weight_decay;
    t->ap.grad_clip = t->p.grad_clip;
    t->ap.warmup_steps = t->p.warmup;
    t->ap.total_steps = (int)t->total;
    t->ap.min_lr_ratio = t->p.min_lr_ratio;
    *out = t;
    return L3C_OK;
}

void l3c_trainer_free(l3c_trainer *t) {
    if (!t) return;
    if (t->ml) l3c_metrics_close(t->ml);
    free(t->metrics_path);
    free(t->ids);
    free(t->tgt);
    free(t->pos);
    free(t->order);
    l3c_train_model_free(t->tm);
    l3c_data_free(t->train);
    l3c_data_free(t->eval);
    free(t);
}

void l3c_trainer_get_info(const l3c_trainer *t, l3c_trainer_info *info) {
    memset(info, 0, sizeof *info);
    if (!t) return;
    info->mode = t->p.mode;
    info->total_steps = t->total;
    info->next_step = t->next;
    info->n_trained_values = t->tm->n_params;
    info->n_layer = t->tm->cfg.n_layer;
    info->n_embd = t->tm->cfg.n_embd;
    info->n_threads = t->nt;
    info->packed = t->p.pack;
    info->n_train_examples = t->train->n_ex;
    info->n_eval_examples = t->eval ? t->eval->n_ex : 0;
    info->batch_begin = t->b0;
    info->batch_end = t->b1;
    info->fingerprint = t->fp;
}

/* ------------------------------------------------------------------ metrics log */

/* Keeps the log's lines of the next_step steps done (a resumed run rewrites the rest). */
static l3c_status trim_metrics(const char *path, int64_t next_step) {
    FILE *f = fopen(path, "r");
    if (!f) return L3C_OK;
    l3c_output *out;
    FILE *o;
    l3c_status st = l3c_output_open(path, NULL, 0, &out, &o);
    if (st) {
        fclose(f);
        return fail_in(st, "rewriting the metrics log");
    }
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        long long s;
        if (sscanf(line, "{\"step\": %lld", &s) == 1 && s <= next_step) fputs(line, o);
    }
    fclose(f);
    if (ferror(o)) {
        l3c_output_abort(out);
        return l3c_fail(L3C_ERR_IO, "rewriting the metrics log %s: write error", path);
    }
    if ((st = l3c_output_commit(out))) return fail_in(st, "rewriting the metrics log");
    return L3C_OK;
}

/* Opens the log at the first write: a trainer that resumed keeps the lines of its steps done. */
static l3c_status metrics_write(l3c_trainer *t, const l3c_metrics_row *r) {
    if (!t->metrics_path || !t->writer) return L3C_OK;
    if (!t->ml) {
        l3c_status st;
        if (t->resumed_at >= 0 && (st = trim_metrics(t->metrics_path, t->resumed_at))) return st;
        if ((st = l3c_metrics_open(t->metrics_path, t->resumed_at >= 0, &t->ml)))
            return fail_in(st, "opening the metrics log");
    }
    return l3c_metrics_write(t->ml, r);
}

static void start_clock(l3c_trainer *t) {
    if (t->t0 < 0.0) t->t0 = l3c_time_s();
}

/* ------------------------------------------------------------------ evaluation */

/* Mean loss over every trained target of the eval set (batches of B, in order). */
static l3c_status evaluate(l3c_trainer *t, double *mean) {
    l3c_train_model *tm = t->tm;
    const l3c_dataset *ds = t->eval;
    const int B = t->p.batch, T = t->p.seq_len;
    double sum = 0.0;
    int64_t n = 0;
    const size_t steps = l3c_data_steps_per_epoch(ds, B);
    tm->dropout_on = 0; /* LoRA dropout is for training only */
    for (size_t k = 0; k < steps; k++) {
        l3c_data_batch_pos(ds, NULL, k * (size_t)B, B, T, t->ids, t->tgt, t->pos);
        float loss;
        l3c_status st = l3c_train_forward_pos(tm, t->ids, t->tgt, t->pos, B, T, &loss);
        if (st) return fail_in(st, "evaluation");
        sum += (double)loss * (double)tm->n_valid;
        n += tm->n_valid;
    }
    tm->n_valid = -1;
    *mean = n ? sum / (double)n : NAN;
    return L3C_OK;
}

l3c_status l3c_trainer_eval(l3c_trainer *t, double *loss) {
    if (!t || !loss) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_eval: NULL argument");
    *loss = NAN;
    if (!t->eval) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_eval: no evaluation set");
    start_clock(t);
    l3c_status st = evaluate(t, loss);
    if (st) return st;
    l3c_metrics_row r = l3c_metrics_row_empty(t->next);
    r.eval_loss = *loss;
    r.eval_ppl = exp(*loss);
    return metrics_write(t, &r);
}

/* ------------------------------------------------------------------ steps */

static void dp_reduce(const l3c_trainer *t, double *loss_sum) {
    if (dp_size(t) == 1) return;
    l3c_train_model *tm = t->tm;
    float w = (float)*loss_sum;
    l3c_comm_allreduce_sum_f32(&w, 1);
    l3c_comm_allreduce_sum_f32(tm->grads, (int64_t)tm->n_params);
    l3c_comm_bcast(tm->grads, tm->n_params * sizeof(float), 0); /* one result, bit for bit */
    *loss_sum = (double)w;
}

/* every rank's parameters equal rank 0's, bit for bit (else the job stops) */
static void dp_check_same(const l3c_trainer *t) {
    if (dp_size(t) == 1) return;
    const l3c_train_model *tm = t->tm;
    uint64_t h = 0xcbf29ce484222325ull, h0;
    const unsigned char *b = (const unsigned char *)tm->params;
    for (size_t i = 0; i < tm->n_params * sizeof(float); i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    h0 = h;
    l3c_comm_bcast(&h0, sizeof h0, 0);
    if (h != h0)
        l3c_comm_abort("train: after step %lld the parameters differ from rank 0's",
                       (long long)t->next);
}

l3c_status l3c_trainer_step(l3c_trainer *t, l3c_train_step_info *info) {
    if (!t) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_step: trainer is NULL");
    if (info) memset(info, 0, sizeof *info);
    if (t->next >= t->total)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_step: all %lld steps are done",
                        (long long)t->total);
    start_clock(t);
    if (!t->pr_started) {
        l3c_progress_init(&t->pr, t->p.progress, t->next, t->total, t->p.log_every, -1);
        t->pr_started = 1;
    }
    l3c_train_model *tm = t->tm;
    const l3c_dataset *train = t->train;
    const int B = t->p.batch, T = t->p.seq_len, G = t->p.grad_accum;
    const int64_t step = t->next;
    int64_t epoch;
    size_t start;
    l3c_data_locate(train, B * G, step, &epoch, &start);
    if (epoch != t->cur_epoch) {
        l3c_data_order(train->n_ex, t->p.seed, epoch, t->order);
        t->cur_epoch = epoch;
    }
    /* G micro-batches of B rows, the loss normalized by the trained targets of all of them */
    int64_t n_tgt = 0;
    for (int g = 0; g < G; g++)
        n_tgt += l3c_data_batch(train, t->order, start + (size_t)g * B, B, T, t->ids, t->tgt);
    const double ts = l3c_time_s();
    float norm = 0.0f, lr = 0.0f;
    double loss_sum = 0.0;
    l3c_status st;
    l3c_train_zero_grad(tm);
    /* data parallel: this rank runs rows [b0, b1) of every micro-batch; n_tgt counts the whole
     * step's targets on every rank, so the ranks' gradients add up to the step's */
    for (int g = 0; g < G && start + (size_t)g * B < train->n_ex; g++) {
        float mloss;
        l3c_data_batch_pos(train, t->order, start + (size_t)g * B, B, T, t->ids, t->tgt, t->pos);
        tm->dropout_on = 1; /* a mask per (seed, step, micro-batch): resumed runs see the same */
        tm->dropout_seed = t->p.seed * 0x9e3779b97f4a7c15ull + (uint64_t)(step * G + g);
        const size_t r0 = (size_t)t->b0 * (size_t)T;
        if ((st = l3c_train_forward_pos(tm, t->ids + r0, t->tgt + r0, t->pos + r0, t->b1 - t->b0, T,
                                        &mloss)))
            return fail_in(st, "forward");
        loss_sum += (double)mloss * (double)tm->n_valid;
        if ((st = l3c_train_backward_n(tm, n_tgt))) return fail_in(st, "backward");
    }
    dp_reduce(t, &loss_sum);
    const float loss = n_tgt ? (float)(loss_sum / (double)n_tgt) : 0.0f;
    if ((st = l3c_train_step(tm, &t->ap, (int)step, &norm, &lr)))
        return fail_in(st, "optimizer step");
    t->next = step + 1;
    t->t_train += l3c_time_s() - ts;
    t->tokens += (int64_t)B * T * G;
    t->trained += n_tgt;
    l3c_train_step_info in = {.step = step + 1,
                              .total_steps = t->total,
                              .epoch = epoch,
                              .loss = loss,
                              .lr = lr,
                              .grad_norm = norm,
                              .eval_loss = NAN,
                              .tokens = t->tokens,
                              .trained_tokens = t->trained,
                              .train_seconds = t->t_train,
                              .tok_per_s = t->t_train > 0 ? (double)t->tokens / t->t_train : NAN,
                              .trained_tok_per_s =
                                  t->t_train > 0 ? (double)t->trained / t->t_train : NAN};
    if (!isfinite(loss)) {
        in.elapsed_s = l3c_time_s() - t->t0;
        if (info) *info = in;
        return L3C_OK;
    }
    l3c_metrics_row r = l3c_metrics_row_empty(step + 1);
    r.epoch = epoch;
    r.loss = loss;
    r.lr = lr;
    r.grad_norm = norm;
    r.tokens = t->tokens;
    r.tok_per_s = in.tok_per_s;
    r.trained_tokens = t->trained;
    r.trained_tok_per_s = in.trained_tok_per_s;
    r.elapsed_s = in.elapsed_s = l3c_time_s() - t->t0;
    const int last = step + 1 == t->total;
    if (t->eval && ((t->p.eval_every > 0 && (step + 1) % t->p.eval_every == 0) || last)) {
        if ((st = evaluate(t, &in.eval_loss))) return st;
        r.eval_loss = in.eval_loss;
        r.eval_ppl = exp(in.eval_loss);
    }
    if ((st = metrics_write(t, &r))) return st;
    l3c_progress_update(&t->pr, step + 1, loss, lr, r.tok_per_s, r.trained_tok_per_s);
    if (last) l3c_progress_finish(&t->pr);
    if (info) *info = in;
    if (t->p.on_step) t->p.on_step(t->p.user, &in);
    return L3C_OK;
}

void l3c_trainer_progress_end(l3c_trainer *t) {
    if (t && t->pr_started) l3c_progress_finish(&t->pr);
}

/* ------------------------------------------------------------------ saving and resuming */

static int ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

l3c_status l3c_trainer_save_adapter(l3c_trainer *t, const char *path) {
    if (!t || !path)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_save_adapter: NULL argument");
    if (!t->tm->lora)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "l3c_trainer_save_adapter: the trainer trains a whole model, not an "
                        "adapter (l3c_trainer_save_model)");
    dp_check_same(t);
    if (!t->writer) return L3C_OK;
    l3c_status st;
    if (ends_with(path, ".gguf")) {
        if ((st = l3c_lora_save_gguf(t->tm->lora, &t->model->cfg, path)))
            return fail_in(st, "saving the adapter");
    } else if ((st = l3c_lora_save_peft(t->tm->lora, &t->model->cfg, path, t->model->name))) {
        return fail_in(st, "saving the PEFT adapter");
    }
    return L3C_OK;
}

l3c_status l3c_trainer_save_model(l3c_trainer *t, const char *path, const char *name) {
    if (!t || !path) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_save_model: NULL argument");
    if (t->tm->lora)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "l3c_trainer_save_model: the trainer trains a LoRA adapter "
                        "(l3c_trainer_save_adapter)");
    dp_check_same(t);
    if (!t->writer) return L3C_OK;
    l3c_status st =
        l3c_train_model_save_gguf(t->tm, t->model, 0, path, name ? name : t->model_name);
    return st ? fail_in(st, "saving the model") : L3C_OK;
}

l3c_status l3c_trainer_save(l3c_trainer *t, const char *dir) {
    if (!t || !dir) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_save: NULL argument");
    char path[4096];
    l3c_status st;
    if (!t->tm->lora) {
        snprintf(path, sizeof path, "%s/model.gguf", dir);
        return l3c_trainer_save_model(t, path, NULL);
    }
    snprintf(path, sizeof path, "%s/adapter.gguf", dir);
    if ((st = l3c_trainer_save_adapter(t, path))) return st;
    snprintf(path, sizeof path, "%s/adapter", dir);
    return l3c_trainer_save_adapter(t, path);
}

/* State file: magic, fingerprint, next step, AdamW t, n, then params, m, v [n] floats. */
l3c_status l3c_trainer_save_state(l3c_trainer *t, const char *path) {
    if (!t || !path) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_save_state: NULL argument");
    dp_check_same(t);
    if (!t->writer) return L3C_OK;
    const l3c_train_model *tm = t->tm;
    l3c_output *out;
    FILE *f;
    l3c_status st = l3c_output_open(path, NULL, 0, &out, &f);
    if (st) return fail_in(st, "saving the state");
    const uint64_t n = tm->n_params;
    const int64_t at = tm->adam_t, next = t->next;
    const int ok = fwrite(STATE_MAGIC, 8, 1, f) == 1 && fwrite(&t->fp, 8, 1, f) == 1 &&
                   fwrite(&next, 8, 1, f) == 1 && fwrite(&at, 8, 1, f) == 1 &&
                   fwrite(&n, 8, 1, f) == 1 && fwrite(tm->params, sizeof(float), n, f) == n &&
                   fwrite(tm->adam_m, sizeof(float), n, f) == n &&
                   fwrite(tm->adam_v, sizeof(float), n, f) == n;
    if (!ok) {
        const int e = errno;
        l3c_output_abort(out);
        return l3c_fail(L3C_ERR_IO, "saving the state: cannot write %s: %s", path, strerror(e));
    }
    if ((st = l3c_output_commit(out))) return fail_in(st, "saving the state");
    return L3C_OK;
}

l3c_status l3c_trainer_load_state(l3c_trainer *t, const char *path) {
    if (!t || !path) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_trainer_load_state: NULL argument");
    l3c_train_model *tm = t->tm;
    struct stat sb;
    FILE *f = fopen(path, "rb");
    if (!f) return l3c_fail(L3C_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(f);
        return l3c_fail(L3C_ERR_IO, "%s is a folder, not a training state", path);
    }
    char magic[8];
    uint64_t ffp = 0, n = 0;
    int64_t step = 0, at = 0;
    l3c_status st = L3C_ERR_FORMAT;
    float *buf = NULL;
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, STATE_MAGIC, 8) || fread(&ffp, 8, 1, f) != 1 ||
        fread(&step, 8, 1, f) != 1 || fread(&at, 8, 1, f) != 1 || fread(&n, 8, 1, f) != 1) {
        l3c_fail(st, "%s: not a llama3c training state (bad header)", path);
    } else if (ffp != t->fp) {
        st = l3c_fail(L3C_ERR_INVALID_ARG,
                      "%s was written by a run with other options, model or data; resuming needs "
                      "the same ones",
                      path);
    } else if (n != tm->n_params || step < 0 || step > t->total || at < 0 || at > step) {
        l3c_fail(st, "%s: inconsistent state (%llu values, step %lld)", path, (unsigned long long)n,
                 (long long)step);
    } else if (!(buf = malloc(3 * n * sizeof(float) + 1))) {
        st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
    } else if (fread(buf, sizeof(float), 3 * n, f) != 3 * n || fgetc(f) != EOF) {
        l3c_fail(st, "%s: truncated or too long", path);
    } else { /* only now the trainer changes: on error it is as it was */
        memcpy(tm->params, buf, n * sizeof(float));
        memcpy(tm->adam_m, buf + n, n * sizeof(float));
        memcpy(tm->adam_v, buf + 2 * n, n * sizeof(float));
        tm->adam_t = (int)at;
        t->next = t->resumed_at = step;
        if (t->ml) { /* reopened (trimmed) at the next write */
            l3c_metrics_close(t->ml);
            t->ml = NULL;
        }
        t->pr_started = 0;
        st = L3C_OK;
    }
    free(buf);
    fclose(f);
    return st;
}

l3c_status l3c_train_plot_svg(const char *metrics_path, const char *svg_path, const char *title) {
    if (!metrics_path || !svg_path)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_train_plot_svg: NULL path");
    return l3c_plot_svg_from_jsonl(metrics_path, svg_path, title);
}
