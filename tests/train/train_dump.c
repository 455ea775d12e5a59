/*
 * train_dump.c -- test driver of the training model (src/train/): builds a model, runs one
 * forward / backward (or K AdamW steps) on a given batch and dumps everything a reference
 * needs to files, for tests/py/test_train_grad.py (torch autograd on the same weights).
 *
 *   train_dump (--model F.gguf | --random V,D,L,H,HKV,FF [--tied] [--seed S] [--theta X]
 *               [--eps X] [--n-rot R] | --config F.json (--tok-from M.gguf | --vocab V) [--seed S])
 *              --ids F.i32 [--targets F.i32] --batch B --seq T [--checkpoint] [--chunk-tokens N]
 * --out DIR
 *              [--steps K --lr X --wd X --warmup N --total N --min-lr-ratio X --clip X
 *               --beta1 X --beta2 X --adam-eps X] [--threads N]
 *              [--lora-rank R --lora-alpha A --lora-targets q,k,... [--lora-b-std S]
 *               [--lora-dropout P --dropout-seed S] [--exact 1]]
 *
 * With --lora-rank the model is a LoRA on the --model GGUF (loaded by the engine, weights kept
 * in their type): the parameters are the adapter's A / B (index.txt names them
 * blk.N.attn_q.weight.lora_a ...), config.txt adds lora_scale; --lora-b-std S draws B from
 * N(0, S) (seeded) instead of 0, so that A's gradient is not zero either. --lora-dropout P runs the
 * forward / backward with dropout on (seed S) and writes dropout.f32: the mask of every adapted
 * matrix (layers in order, targets in enum order), [B*T x n_in] each, 0 or 1/(1-P). --exact 1:
 * the exact mode (quantized base multiplied in fp32, l3c_train_model.exact).
 *
 * --config reads a from-scratch config (l3c_train_config_from_json; the vocabulary size from
 * --tok-from's model or --vocab) and builds a random model of that shape. --save-gguf PATH writes
 * the model after the first forward (l3c_train_model_save_gguf) with --tok-from's tokenizer
 * (none without it), context length --n-ctx (default: the config's) and general.name --name.
 *
 * DIR gets: config.txt (key value lines), index.txt ("name rows cols offset" per parameter,
 * offsets in floats), params.f32 (the initial parameters, arena order), logits.f32 [B*T x V] of
 * the first forward, and with targets: loss.txt, grads.f32 (of the first batch); with --steps:
 * steps.txt ("step loss lr grad_norm" per step; the loss before that step's update) and
 * params_final.f32. rope_freqs.f32 when the model has it. Exit 0 on success, 1 with a message.
 */
#include "llama3c.h"
#include "train/train_io.h"
#include "train/train_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *msg, const char *arg) {
    fprintf(stderr, "train_dump: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 1;
}

static void *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(sz > 0 ? (size_t)sz : 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return buf;
}

static int write_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return die("cannot write", path);
    int ok = fwrite(p, 1, n, f) == n;
    ok &= fclose(f) == 0;
    return ok ? 0 : die("write failed", path);
}

static FILE *open_text(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) die("cannot write", path);
    return f;
}

int main(int argc, char **argv) {
    l3c_train_model *m = NULL;
    l3c_model *base = NULL, *tok_src = NULL;
    int32_t *ids = NULL, *tgt = NULL;
    FILE *f = NULL, *sf = NULL;
    int rc = 1;
#define FAIL(msg, arg) do { die(msg, arg); goto done; } while (0)

    const char *model_path = NULL, *random = NULL, *ids_path = NULL, *tgt_path = NULL, *out = NULL;
    int tied = 0, ckpt = 0, steps = 0, n_rot = 0, threads = 1, lora_rank = 0;
    float lora_alpha = 16.0f, lora_b_std = 0.0f, lora_dropout = 0.0f;
    unsigned long long dropout_seed = 1;
    int exact = 0;
    const char *lora_targets = "q,k,v,o,gate,up,down";
    const char *config = NULL, *tok_from = NULL, *save = NULL, *name = NULL;
    int vocab = 0, n_ctx = 0;
    long long B = 0, T = 0, chunk_tokens = 0;
    unsigned long long seed = 42;
    float theta = 10000.0f, eps = 1e-5f;
    l3c_adamw_params ap = l3c_adamw_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--model")) model_path = v;
        else if (ARG("--random")) random = v;
        else if (ARG("--config")) config = v;
        else if (ARG("--tok-from")) tok_from = v;
        else if (ARG("--vocab")) vocab = atoi(v);
        else if (ARG("--save-gguf")) save = v;
        else if (ARG("--n-ctx")) n_ctx = atoi(v);
        else if (ARG("--name")) name = v;
        else if (strcmp(a, "--tied") == 0) tied = 1;
        else if (strcmp(a, "--checkpoint") == 0) ckpt = 1;
        else if (ARG("--chunk-tokens"))
            chunk_tokens = atoll(v);
        else if (ARG("--seed")) seed = strtoull(v, NULL, 10);
        else if (ARG("--theta")) theta = strtof(v, NULL);
        else if (ARG("--eps")) eps = strtof(v, NULL);
        else if (ARG("--n-rot")) n_rot = atoi(v);
        else if (ARG("--ids")) ids_path = v;
        else if (ARG("--targets")) tgt_path = v;
        else if (ARG("--batch")) B = atoll(v);
        else if (ARG("--seq")) T = atoll(v);
        else if (ARG("--out")) out = v;
        else if (ARG("--steps")) steps = atoi(v);
        else if (ARG("--lr")) ap.lr = strtof(v, NULL);
        else if (ARG("--wd")) ap.weight_decay = strtof(v, NULL);
        else if (ARG("--warmup")) ap.warmup_steps = atoi(v);
        else if (ARG("--total")) ap.total_steps = atoi(v);
        else if (ARG("--min-lr-ratio")) ap.min_lr_ratio = strtof(v, NULL);
        else if (ARG("--clip")) ap.grad_clip = strtof(v, NULL);
        else if (ARG("--beta1")) ap.beta1 = strtof(v, NULL);
        else if (ARG("--beta2")) ap.beta2 = strtof(v, NULL);
        else if (ARG("--adam-eps")) ap.eps = strtof(v, NULL);
        else if (ARG("--threads")) threads = atoi(v);
        else if (ARG("--lora-rank")) lora_rank = atoi(v);
        else if (ARG("--lora-alpha")) lora_alpha = strtof(v, NULL);
        else if (ARG("--lora-targets")) lora_targets = v;
        else if (ARG("--lora-b-std")) lora_b_std = strtof(v, NULL);
        else if (ARG("--lora-dropout")) lora_dropout = strtof(v, NULL);
        else if (ARG("--exact")) exact = atoi(v);
        else if (ARG("--dropout-seed")) dropout_seed = strtoull(v, NULL, 10);
        else FAIL("unknown or incomplete argument", a);
#undef ARG
    }
    if (!!model_path + !!random + !!config != 1) FAIL("give exactly one of --model, --random and --config", NULL);
    if (tok_from) {
        l3c_model_params mp = l3c_model_default_params();
        if (l3c_model_load(tok_from, &mp, &tok_src)) FAIL(l3c_last_error(), NULL);
    }
    if (!ids_path || !out || B < 1 || T < 1) FAIL("need --ids, --out, --batch and --seq", NULL);
    if (steps > 0 && !tgt_path) FAIL("--steps needs --targets", NULL);

    l3c_status st;
    if (lora_rank > 0) {
        if (!model_path) FAIL("--lora-rank needs --model", NULL);
        unsigned targets = 0;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", lora_targets);
        for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
            int k = 0;
            while (k < L3C_LORA_N_TARGETS && strcmp(t, l3c_lora_target_short_name((l3c_lora_target)k))) k++;
            if (k == L3C_LORA_N_TARGETS) FAIL("unknown LoRA target", t);
            targets |= 1u << k;
        }
        l3c_model_params mp = l3c_model_default_params();
        mp.n_threads = threads;
        if ((st = l3c_model_load(model_path, &mp, &base))) FAIL(l3c_last_error(), NULL);
        st = l3c_train_model_lora(base, targets, lora_rank, lora_alpha, seed, NULL, &m);
        if (!st && lora_b_std > 0.0f) {
            l3c_rng rng;
            l3c_rng_seed(&rng, seed + 1);
            for (int l = 0; l < m->cfg.n_layer; l++)
                for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
                    l3c_lora_mat *am = l3c_lora_get(m->lora, l, (l3c_lora_target)t);
                    if (!am) continue;
                    for (int64_t i = 0; i < am->n_out * am->rank; i++)
                        am->b[i] = (float)(lora_b_std * l3c_rng_normal(&rng));
                }
        }
    } else if (config) {
        l3c_train_config c;
        if (tok_src) {
            l3c_model_info info;
            l3c_model_get_info(tok_src, &info);
            vocab = info.n_vocab;
        }
        if ((st = l3c_train_config_from_json(config, vocab, &c))) FAIL(l3c_last_error(), NULL);
        st = l3c_train_model_create(&c, seed, &m);
    } else if (model_path) {
        st = l3c_train_model_from_gguf(model_path, &m);
    } else {
        l3c_train_config c = {.rope_theta = theta, .norm_eps = eps, .tied = tied, .n_rot = n_rot};
        if (sscanf(random, "%d,%d,%d,%d,%d,%d", &c.n_vocab, &c.n_embd, &c.n_layer, &c.n_head,
                   &c.n_head_kv, &c.n_ff) != 6)
            FAIL("--random wants V,D,L,H,HKV,FF", random);
        st = l3c_train_model_create(&c, seed, &m);
    }
    if (st) FAIL(l3c_last_error(), NULL);
    m->checkpoint = ckpt;
    m->chunk_tokens = chunk_tokens;
    m->keep_logits = 1; /* logits.f32 */
    m->lora_dropout = lora_dropout;
    m->exact = exact;
    m->dropout_on = lora_dropout > 0.0f;
    m->dropout_seed = dropout_seed;
    if (threads > 1 && (st = l3c_train_model_set_threads(m, threads))) FAIL(l3c_last_error(), NULL);

    size_t n_ids = 0, n_tgt = 0;
    ids = read_file(ids_path, &n_ids);
    tgt = tgt_path ? read_file(tgt_path, &n_tgt) : NULL;
    if (!ids || n_ids != (size_t)(B * T) * sizeof(int32_t))
        FAIL("--ids file is missing or not B*T int32 values", ids_path);
    if (tgt_path && (!tgt || n_tgt != n_ids)) FAIL("--targets file is missing or not B*T int32", tgt_path);

    const l3c_train_config *c = &m->cfg;
    if (!(f = open_text(out, "config.txt"))) goto done;
    fprintf(f, "n_vocab %d\nn_embd %d\nn_layer %d\nn_head %d\nn_head_kv %d\nn_ff %d\nn_rot %d\n"
               "rope_theta %.9g\nnorm_eps %.9g\ntied %d\nrope_freqs %d\nn_ctx %d\n", c->n_vocab, c->n_embd,
            c->n_layer, c->n_head, c->n_head_kv, c->n_ff, c->n_rot, (double)c->rope_theta,
            (double)c->norm_eps, c->tied, m->rope_freqs != NULL, c->n_ctx);
    if (m->lora) fprintf(f, "lora_scale %.9g\n", (double)m->lora_scale);
    fclose(f), f = NULL;
    if (!(f = open_text(out, "index.txt"))) goto done;
    for (int i = 0; i < m->n_tensors; i++)
        fprintf(f, "%s %lld %lld %zu\n", m->tensors[i].name, (long long)m->tensors[i].rows,
                (long long)m->tensors[i].cols, m->tensors[i].offset);
    fclose(f), f = NULL;
    if (write_file(out, "params.f32", m->params, m->n_params * sizeof(float))) goto done;
    if (m->rope_freqs && write_file(out, "rope_freqs.f32", m->rope_freqs, (size_t)c->n_rot / 2 * sizeof(float)))
        goto done;

    float loss = 0.0f;
    if ((st = l3c_train_forward(m, ids, tgt, B, T, &loss))) FAIL(l3c_last_error(), NULL);
    if (write_file(out, "logits.f32", m->logits, (size_t)(B * T * c->n_vocab) * sizeof(float))) goto done;
    if (m->lora && m->dropout_on) {
        if (!(f = open_text(out, "dropout.f32"))) goto done;
        for (int l = 0; l < c->n_layer; l++)
            for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
                const l3c_lora_mat *am = l3c_lora_get(m->lora, l, (l3c_lora_target)t);
                if (!am) continue;
                const int64_t n = B * T * am->n_in;
                float *mask = malloc((size_t)n * sizeof(float));
                if (!mask) FAIL("out of memory", NULL);
                l3c_train_dropout_mask(m, l, t, n, mask);
                const int ok = fwrite(mask, sizeof(float), (size_t)n, f) == (size_t)n;
                free(mask);
                if (!ok) FAIL("cannot write dropout.f32", out);
            }
        fclose(f), f = NULL;
    }
    if (save && (st = l3c_train_model_save_gguf(m, tok_src, n_ctx, save, name))) FAIL(l3c_last_error(), NULL);
    if (tgt) {
        l3c_train_zero_grad(m);
        if ((st = l3c_train_backward(m))) FAIL(l3c_last_error(), NULL);
        if (write_file(out, "grads.f32", m->grads, m->n_params * sizeof(float))) goto done;
        if (!(f = open_text(out, "loss.txt"))) goto done;
        fprintf(f, "%.9g\n", (double)loss);
        fclose(f), f = NULL;
        printf("loss %.9g\n", (double)loss);
    }
    if (steps > 0) {
        if (!(sf = open_text(out, "steps.txt"))) goto done;
        /* step 0 reuses the gradients just computed */
        for (int s = 0; s < steps; s++) {
            if (s > 0) {
                if ((st = l3c_train_forward(m, ids, tgt, B, T, &loss))) FAIL(l3c_last_error(), NULL);
                l3c_train_zero_grad(m);
                if ((st = l3c_train_backward(m))) FAIL(l3c_last_error(), NULL);
            }
            float norm = 0.0f, lr = 0.0f;
            if ((st = l3c_train_step(m, &ap, s, &norm, &lr))) FAIL(l3c_last_error(), NULL);
            fprintf(sf, "%d %.9g %.9g %.9g\n", s, (double)loss, (double)lr, (double)norm);
        }
        fclose(sf), sf = NULL;
        if (write_file(out, "params_final.f32", m->params, m->n_params * sizeof(float))) goto done;
    }
    rc = 0;
done:
    if (f) fclose(f);
    if (sf) fclose(sf);
    free(ids);
    free(tgt);
    l3c_train_model_free(m);
    l3c_model_free(base);
    l3c_model_free(tok_src);
    return rc;
#undef FAIL
}
