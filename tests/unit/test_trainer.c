/*
 * test_trainer.c -- the public training API (l3c_trainer, include/llama3c.h), through the public
 * header only, on generated tiny models:
 *  - defaults and target names; NULL arguments and every out-of-range parameter refused with
 *    L3C_ERR_INVALID_ARG and a message naming the field, *out NULL;
 *  - a missing data file (L3C_ERR_IO naming it), full fine-tuning of a quantized base refused;
 *  - LoRA: steps count up, losses finite, callback called, one step too many refused, the adapter
 *    saved as GGUF loads with l3c_adapter_load, save_model refused;
 *  - resume: a trainer that loads the state saved after step 3 ends with the same adapter bytes as
 *    the uninterrupted run, and its metrics log keeps the lines of steps 0..3 only;
 *  - a mismatched state (other options), a missing, garbage or truncated state file are refused
 *    and leave the trainer at step 0;
 *  - full fine-tuning and training from scratch save a GGUF that l3c_model_load reads.
 * The numerics are checked elsewhere (test_train_model.c; tests/py/test_train_*.py against torch).
 */
#include "check.h"
#include "gguf_builder.h"
#include "llama3c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];

static void pathf(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
}

static l3c_model *tiny_model(const char *name, uint32_t wtype, int n_embd) {
    ggb_llama_opts o = ggb_llama_default();
    o.n_embd = n_embd, o.n_head = 2, o.n_head_kv = 1, o.n_ff = 32, o.n_layer = 2, o.n_vocab = 64;
    o.wtype = wtype;
    ggf f = {0};
    ggb_tiny_llama(&f, &o);
    char path[512];
    pathf(path, sizeof path, name);
    CHECK(ggf_write_file(&f, path) == 0);
    ggf_free(&f);
    l3c_model *m = NULL;
    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = 1;
    CHECK(l3c_model_load(path, &mp, &m) == L3C_OK);
    return m;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static long file_bytes(const char *path, char **out) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)n + 1);
    if (fread(*out, 1, (size_t)n, f) != (size_t)n) n = -1;
    fclose(f);
    return n;
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static char g_data[512];

static l3c_trainer_params small_params(void) {
    l3c_trainer_params p = l3c_trainer_default_params();
    p.data_path = g_data;
    p.seq_len = 16;
    p.batch = 2;
    p.steps = 6;
    p.eval_frac = 0.2f;
    p.lora_rank = 4;
    p.lr = 1e-2f;
    p.n_threads = 1;
    return p;
}

/* create must fail with st and a message containing want; *out stays NULL */
static void refused(const l3c_model *m, const l3c_trainer_params *p, l3c_status st,
                    const char *want, int line) {
    l3c_trainer *t = (l3c_trainer *)&t; /* not NULL: create must clear it */
    l3c_status got = l3c_trainer_create(m, p, &t);
    CHECK_MSG(got == st && t == NULL && strstr(l3c_last_error(), want),
              "line %d: status %s, message '%s', want %s and '%s'", line, l3c_status_name(got),
              l3c_last_error(), l3c_status_name(st), want);
    l3c_trainer_free(t == (l3c_trainer *)&t ? NULL : t);
}
#define REFUSED(m, p, st, want) refused(m, p, st, want, __LINE__)

static void test_defaults_and_refusals(const l3c_model *m, const l3c_model *q8) {
    l3c_trainer_params d = l3c_trainer_default_params();
    CHECK(d.mode == L3C_TRAIN_LORA && d.lora_targets == L3C_TRAIN_TARGET_ALL && d.lora_rank == 8);
    CHECK(d.lora_alpha == 16.0f && d.seq_len == 256 && d.batch == 4 && d.grad_accum == 1);
    CHECK(d.pack == -1 && d.epochs == 1 && d.lr < 0 && d.eval_every == -1 && d.checkpoint == 1);
    CHECK(!strcmp(l3c_train_target_name(0), "q") && !strcmp(l3c_train_target_name(6), "down"));
    CHECK(l3c_train_target_name(7) == NULL && l3c_train_target_name(-1) == NULL);
    CHECK(L3C_TRAIN_TARGET_ALL == (1 << L3C_TRAIN_N_TARGETS) - 1);

    l3c_trainer_params p = small_params();
    CHECK(l3c_trainer_create(m, &p, NULL) == L3C_ERR_INVALID_ARG);
    REFUSED(NULL, &p, L3C_ERR_INVALID_ARG, "model");
    REFUSED(m, NULL, L3C_ERR_INVALID_ARG, "params");
#define BAD(field, value, want)                                                                    \
    do {                                                                                           \
        l3c_trainer_params b = small_params();                                                     \
        b.field = value;                                                                           \
        REFUSED(m, &b, L3C_ERR_INVALID_ARG, want);                                                 \
    } while (0)
    BAD(mode, 7, "mode");
    BAD(data_path, NULL, "data_path");
    BAD(lora_rank, 0, "lora_rank");
    BAD(lora_targets, 0, "lora_targets");
    BAD(lora_targets, 0x80, "lora_targets");
    BAD(lora_alpha, 0.0f, "lora_alpha");
    BAD(lora_dropout, 0.95f, "lora_dropout");
    BAD(eval_frac, 0.6f, "eval_frac");
    BAD(seq_len, 1, "seq_len");
    BAD(batch, 0, "batch");
    BAD(grad_accum, 0, "grad_accum");
    BAD(pack, 2, "pack");
    BAD(steps, -1, "steps");
    BAD(epochs, 0, "epochs");
    BAD(lr, NAN, "lr");
    BAD(lr, 11.0f, "lr");
    BAD(warmup, -1, "warmup");
    BAD(min_lr_ratio, 1.5f, "min_lr_ratio");
    BAD(weight_decay, -1.0f, "weight_decay");
    BAD(grad_clip, -1.0f, "grad_clip");
    BAD(eval_every, -2, "eval_every");
    BAD(log_every, 0, "log_every");
    BAD(config_path, "x.json", "config_path");   /* a config with LoRA */
    BAD(mode, L3C_TRAIN_SCRATCH, "config_path"); /* scratch without one */
#undef BAD
    char missing[512];
    pathf(missing, sizeof missing, "nope.txt");
    p.data_path = missing;
    REFUSED(m, &p, L3C_ERR_IO, "nope.txt");
    p = small_params();
    p.mode = L3C_TRAIN_FULL;
    REFUSED(q8, &p, L3C_ERR_INVALID_ARG, "Q8_0");
    p = small_params();
    p.eval_frac = 0.0f;
    l3c_trainer *t = NULL;
    CHECK(l3c_trainer_create(m, &p, &t) == L3C_OK);
    double loss = 0;
    CHECK(l3c_trainer_eval(t, &loss) == L3C_ERR_INVALID_ARG && isnan(loss)); /* no eval set */
    CHECK(l3c_trainer_eval(t, NULL) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_trainer_save_model(t, "x.gguf", NULL) == L3C_ERR_INVALID_ARG); /* LoRA */
    CHECK(l3c_trainer_save_adapter(t, NULL) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_trainer_load_state(t, NULL) == L3C_ERR_INVALID_ARG);
    l3c_trainer_free(t);
    CHECK(l3c_trainer_step(NULL, NULL) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_train_plot_svg(NULL, "x.svg", NULL) == L3C_ERR_INVALID_ARG);
    l3c_trainer_free(NULL);
    l3c_trainer_progress_end(NULL);
}

static void on_step(void *user, const l3c_train_step_info *in) {
    int *n = user;
    CHECK(in->step == *n + 1);
    (*n)++;
}

/* runs t to its end, saving the state after step `save_at` (0: never) */
static void run_to_end(l3c_trainer *t, int save_at, const char *state) {
    l3c_trainer_info ti;
    l3c_trainer_get_info(t, &ti);
    for (int64_t s = ti.next_step; s < ti.total_steps; s++) {
        l3c_train_step_info in;
        CHECK(l3c_trainer_step(t, &in) == L3C_OK);
        CHECK(in.step == s + 1 && in.total_steps == ti.total_steps && isfinite(in.loss));
        CHECK(in.tokens == (s + 1 - ti.next_step) * 2 * 16 && in.trained_tokens > 0);
        CHECK(in.lr > 0 && in.grad_norm > 0 && in.train_seconds >= 0);
        if (s + 1 == ti.total_steps) CHECK(isfinite(in.eval_loss)); /* evaluated after the last */
        if (s + 1 == save_at) CHECK(l3c_trainer_save_state(t, state) == L3C_OK);
    }
    CHECK(l3c_trainer_step(t, NULL) == L3C_ERR_INVALID_ARG); /* every step is done */
}

static void test_lora_and_resume(const l3c_model *m) {
    char state[512], a[512], b[512], ma[512], mb[512], bad[512];
    pathf(state, sizeof state, "state.bin");
    pathf(a, sizeof a, "a.gguf");
    pathf(b, sizeof b, "b.gguf");
    pathf(ma, sizeof ma, "a.jsonl");
    pathf(mb, sizeof mb, "b.jsonl");

    l3c_trainer_params p = small_params();
    int n_calls = 0;
    p.on_step = on_step;
    p.user = &n_calls;
    p.metrics_path = ma;
    l3c_trainer *t = NULL;
    CHECK(l3c_trainer_create(m, &p, &t) == L3C_OK);
    if (!t) return;
    l3c_trainer_info ti;
    l3c_trainer_get_info(t, &ti);
    CHECK(ti.mode == L3C_TRAIN_LORA && ti.total_steps == 6 && ti.next_step == 0);
    CHECK(ti.n_trained_values > 0 && ti.n_eval_examples > 0 && ti.n_threads == 1);
    CHECK(ti.batch_begin == 0 && ti.batch_end == 2 && ti.n_layer == 2);
    double e0 = NAN;
    CHECK(l3c_trainer_eval(t, &e0) == L3C_OK && isfinite(e0) && e0 > 0);
    run_to_end(t, 3, state);
    CHECK(n_calls == 6);
    CHECK(l3c_trainer_save_adapter(t, a) == L3C_OK);
    CHECK(count_lines(ma) == 7); /* the eval before training and 6 steps */
    l3c_adapter *ad = NULL;
    CHECK(l3c_adapter_load(m, a, &ad) == L3C_OK);
    l3c_adapter_free(ad);
    char svg[512];
    pathf(svg, sizeof svg, "loss.svg");
    CHECK(l3c_train_plot_svg(ma, svg, "loss") == L3C_OK);
    l3c_trainer_free(t);

    /* resumed at step 3 (metrics: a copy of the full log, trimmed to steps 0..3, then appended) */
    char *bytes = NULL;
    long n = file_bytes(ma, &bytes);
    CHECK(n > 0);
    FILE *f = fopen(mb, "wb");
    fwrite(bytes, 1, (size_t)n, f);
    fclose(f);
    free(bytes);
    p.metrics_path = mb;
    p.on_step = NULL;
    CHECK(l3c_trainer_create(m, &p, &t) == L3C_OK);
    if (!t) return;
    CHECK(l3c_trainer_load_state(t, state) == L3C_OK);
    l3c_trainer_get_info(t, &ti);
    CHECK(ti.next_step == 3);
    run_to_end(t, 0, NULL);
    CHECK(l3c_trainer_save_adapter(t, b) == L3C_OK);
    l3c_trainer_free(t);
    CHECK_MSG(count_lines(mb) == 7, "%d lines", count_lines(mb));
    char *ba = NULL, *bb = NULL;
    long na = file_bytes(a, &ba), nb = file_bytes(b, &bb);
    CHECK_MSG(na > 0 && na == nb && !memcmp(ba, bb, (size_t)na), "resumed adapter differs");
    free(ba);
    free(bb);

    /* states that do not fit: other options, missing, garbage, truncated */
    l3c_trainer_params q = small_params();
    q.lr = 2e-2f;
    CHECK(l3c_trainer_create(m, &q, &t) == L3C_OK);
    if (!t) return;
    CHECK(l3c_trainer_load_state(t, state) == L3C_ERR_INVALID_ARG);
    CHECK(strstr(l3c_last_error(), "other options") && strstr(l3c_last_error(), "state.bin"));
    pathf(bad, sizeof bad, "missing.bin");
    CHECK(l3c_trainer_load_state(t, bad) == L3C_ERR_IO && strstr(l3c_last_error(), "missing.bin"));
    pathf(bad, sizeof bad, "garbage.bin");
    write_file(bad, "this is not a training state at all, no, not at all");
    CHECK(l3c_trainer_load_state(t, bad) == L3C_ERR_FORMAT && strstr(l3c_last_error(), "garbage"));
    l3c_trainer_get_info(t, &ti);
    CHECK(ti.next_step == 0);
    l3c_trainer_free(t);
    CHECK(l3c_trainer_create(m, &p, &t) == L3C_OK); /* the state's own options */
    if (!t) return;
    n = file_bytes(state, &bytes);
    pathf(bad, sizeof bad, "truncated.bin");
    f = fopen(bad, "wb");
    fwrite(bytes, 1, (size_t)n - 4, f);
    fclose(f);
    free(bytes);
    CHECK(l3c_trainer_load_state(t, bad) == L3C_ERR_FORMAT &&
          strstr(l3c_last_error(), "truncated"));
    l3c_trainer_get_info(t, &ti);
    CHECK(ti.next_step == 0);
    l3c_trainer_free(t);
}

static void test_whole_models(const l3c_model *m) {
    char cfg[512], out[512];
    pathf(cfg, sizeof cfg, "tiny.json");
    write_file(cfg, "{\"n_embd\": 16, \"n_layer\": 1, \"n_head\": 2, \"n_ff\": 24, \"n_ctx\": 32}");
    for (int mode = L3C_TRAIN_FULL; mode <= L3C_TRAIN_SCRATCH; mode++) {
        l3c_trainer_params p = small_params();
        p.mode = mode;
        p.steps = 2;
        p.config_path = mode == L3C_TRAIN_SCRATCH ? cfg : NULL;
        l3c_trainer *t = NULL;
        CHECK(l3c_trainer_create(m, &p, &t) == L3C_OK);
        if (!t) continue;
        l3c_trainer_info ti;
        l3c_trainer_get_info(t, &ti);
        CHECK(ti.n_layer == (mode == L3C_TRAIN_SCRATCH ? 1 : 2));
        run_to_end(t, 0, NULL);
        CHECK(l3c_trainer_save_adapter(t, "x.gguf") == L3C_ERR_INVALID_ARG);
        pathf(out, sizeof out, "whole");
        mkdir(out, 0755);
        CHECK(l3c_trainer_save(t, out) == L3C_OK);
        l3c_trainer_free(t);
        pathf(out, sizeof out, "whole/model.gguf");
        l3c_model *w = NULL;
        l3c_model_params mp = l3c_model_default_params();
        mp.n_threads = 1;
        CHECK(l3c_model_load(out, &mp, &w) == L3C_OK);
        if (!w) continue;
        l3c_model_info mi;
        l3c_model_get_info(w, &mi);
        CHECK(mi.n_layer == ti.n_layer && mi.n_vocab == 64);
        CHECK(!strcmp(mi.name, mode == L3C_TRAIN_SCRATCH ? "llama3c-pretrained"
                                                         : "tiny hostile-test llama-ft"));
        l3c_model_free(w);
    }
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/test_trainer_%d", (int)getpid());
    mkdir(g_dir, 0755);
    pathf(g_data, sizeof g_data, "data.txt");
    char text[4096] = "";
    for (int i = 0; i < 40; i++)
        strcat(text, i % 3 ? "the cat sat on a mat and ate a fig " : "a big dog ran far ");
    write_file(g_data, text);
    l3c_model *m = tiny_model("f32.gguf", 0, 16);
    l3c_model *q8 = tiny_model("q8.gguf", 8, 32);
    if (m && q8) {
        test_defaults_and_refusals(m, q8);
        test_lora_and_resume(m);
        test_whole_models(m);
    }
    l3c_model_free(m);
    l3c_model_free(q8);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (!getenv("L3C_KEEP") && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return CHECK_DONE("test_trainer");
}
