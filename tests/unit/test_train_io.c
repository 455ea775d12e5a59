/*
 * test_train_io.c -- from-scratch config and GGUF save (src/train/train_io.c) without a model
 * file (tests/py/test_train_scratch.py covers the tokenizer copy, llama3c eval, llama.cpp):
 *  - a config with defaults, one in Hugging Face names, and refused ones (status, key named,
 *    output zeroed);
 *  - a saved model (tied and untied) read back by l3c_train_model_from_gguf: the same shape,
 *    context length and parameters bit for bit, the same logits;
 *  - every allocation failure of the save returns L3C_ERR_NOMEM and leaves no file behind.
 */
#include "check.h"
#include "train/train_io.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/l3c_train_io_XXXXXX";

static const char *write_tmp(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

/* 1 when a file in dir starts with prefix (a writer's temporary file ".NAME.XXXXXX") */
static int any_with_prefix(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d)))
        found |= !strncmp(e->d_name, prefix, strlen(prefix));
    if (d) closedir(d);
    return found;
}

static int exists(const char *path) {
    return access(path, F_OK) == 0;
}

static void check_bad(const char *name, const char *text, l3c_status want, const char *msg) {
    l3c_train_config c;
    memset(&c, 0xff, sizeof c);
    const l3c_status st = l3c_train_config_from_json(write_tmp(name, text), 100, &c);
    CHECK_MSG(st == want, "%s: status %d, want %d", name, (int)st, (int)want);
    CHECK_MSG(strstr(l3c_last_error(), msg) && strstr(l3c_last_error(), name),
              "%s: '%s' lacks '%s'", name, l3c_last_error(), msg);
    CHECK(c.n_embd == 0 && c.n_vocab == 0);
}

static void roundtrip(int tied) {
    l3c_train_config c;
    CHECK(l3c_train_config_from_json(
              write_tmp("rt.json", tied ? "{\"n_embd\": 32, \"n_layer\": 2, \"n_head\": 4,"
                                          " \"n_head_kv\": 2, \"n_ff\": 40, \"n_ctx\": 96}"
                                        : "{\"n_embd\": 32, \"n_layer\": 2, \"n_head\": 4,"
                                          " \"n_ff\": 40, \"n_ctx\": 96, \"tied\": false}"),
              50, &c) == L3C_OK);
    l3c_train_model *m = NULL, *r = NULL;
    CHECK(l3c_train_model_create(&c, 7, &m) == L3C_OK);
    char path[256];
    snprintf(path, sizeof path, "%s/m%d.gguf", dir, tied);
    CHECK(l3c_train_model_save_gguf(m, NULL, 0, path, "rt") == L3C_OK);
    CHECK(l3c_train_model_from_gguf(path, &r) == L3C_OK && r);
    if (!r) goto done;
    CHECK(!memcmp(&r->cfg, &m->cfg, sizeof m->cfg));
    CHECK(r->cfg.n_ctx == 96 && r->cfg.tied == tied);
    CHECK(r->n_params == m->n_params && !memcmp(r->params, m->params, m->n_params * sizeof(float)));
    int32_t ids[6] = {1, 5, 9, 49, 0, 3};
    float la = 0, lb = 0;
    m->keep_logits = r->keep_logits = 1;
    CHECK(l3c_train_forward(m, ids, NULL, 1, 6, &la) == L3C_OK);
    CHECK(l3c_train_forward(r, ids, NULL, 1, 6, &lb) == L3C_OK);
    CHECK(!memcmp(m->logits, r->logits, 6 * 50 * sizeof(float)));
    /* every allocation of the save fails in turn: NOMEM, nothing written */
    snprintf(path, sizeof path, "%s/oom%d.gguf", dir, tied);
    char tmp[300];
    snprintf(tmp, sizeof tmp, ".oom%d.gguf.", tied);
    l3c_status st = L3C_ERR_NOMEM;
    int n = 0;
    for (; st == L3C_ERR_NOMEM && n < 10000; n++) {
        l3c_set_alloc_fail_after(n);
        st = l3c_train_model_save_gguf(m, NULL, 64, path, NULL);
        l3c_set_alloc_fail_after(-1);
        if (st)
            CHECK_MSG(st == L3C_ERR_NOMEM && !exists(path) && !any_with_prefix(dir, tmp),
                      "allocation %d: status %d", n, st);
    }
    CHECK(st == L3C_OK && n > 1 && exists(path));
    remove(path);
done:
    l3c_train_model_free(m);
    l3c_train_model_free(r);
    snprintf(path, sizeof path, "%s/m%d.gguf", dir, tied);
    remove(path);
}

int main(void) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    l3c_train_config c;
    CHECK(l3c_train_config_from_json(write_tmp("min.json",
                                               "{\"n_embd\": 64, \"n_layer\": 5, \"n_head\": 8, "
                                               "\"n_ff\": 172}"),
                                     512, &c) == L3C_OK);
    CHECK(c.n_vocab == 512 && c.n_embd == 64 && c.n_layer == 5 && c.n_head == 8 &&
          c.n_head_kv == 8 && c.n_ff == 172 && c.n_rot == 8 && c.rope_theta == 10000.0f &&
          c.norm_eps == 1e-5f && c.tied == 1 && c.n_ctx == 512);
    CHECK(l3c_train_config_from_json(
              write_tmp("hf.json", "{\"architectures\": [\"LlamaForCausalLM\"], "
                                   "\"model_type\": \"llama\", \"hidden_act\": \"silu\", "
                                   "\"hidden_size\": 48, \"num_hidden_layers\": 3, "
                                   "\"num_attention_heads\": 6, \"num_key_value_heads\": 2, "
                                   "\"intermediate_size\": 96, \"rope_theta\": 500000.0, "
                                   "\"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": false, "
                                   "\"max_position_embeddings\": 2048, \"vocab_size\": 100, "
                                   "\"head_dim\": 8, \"rope_scaling\": null, "
                                   "\"bos_token_id\": 1, \"torch_dtype\": \"float32\"}"),
              100, &c) == L3C_OK);
    CHECK(c.n_embd == 48 && c.n_layer == 3 && c.n_head == 6 && c.n_head_kv == 2 && c.n_ff == 96 &&
          c.n_rot == 8 && c.rope_theta == 500000.0f && c.norm_eps == 1e-6f && c.tied == 0 &&
          c.n_ctx == 2048);

    check_bad("typo.json", "{\"n_embd\": 64, \"n_layers\": 5, \"n_head\": 8, \"n_ff\": 172}",
              L3C_ERR_FORMAT, "unknown key 'n_layers'");
    check_bad("div.json", "{\"n_embd\": 60, \"n_layer\": 5, \"n_head\": 8, \"n_ff\": 172}",
              L3C_ERR_INVALID_ARG, "n_embd 60 is not divisible by n_head 8");
    check_bad("vocab.json",
              "{\"hidden_size\": 64, \"num_hidden_layers\": 5, \"num_attention_heads\": 8, "
              "\"intermediate_size\": 172, \"vocab_size\": 32000}",
              L3C_ERR_INVALID_ARG, "'vocab_size' is 32000 but the tokenizer has 100");
    check_bad("headdim.json",
              "{\"n_embd\": 64, \"n_layer\": 5, \"n_head\": 8, \"n_ff\": 172, \"head_dim\": 16}",
              L3C_ERR_UNSUPPORTED, "'head_dim' must equal");
    check_bad("dup.json",
              "{\"n_embd\": 64, \"n_embd\": 64, \"n_layer\": 5, \"n_head\": 8, \"n_ff\": 172}",
              L3C_ERR_FORMAT, "invalid JSON");
    check_bad("empty.json", "", L3C_ERR_FORMAT, "invalid JSON");
    check_bad("theta.json",
              "{\"n_embd\": 64, \"n_layer\": 5, \"n_head\": 8, \"n_ff\": 172, \"rope_theta\": 1}",
              L3C_ERR_INVALID_ARG, "'rope_theta' is 1, outside");
    CHECK(l3c_train_config_from_json("/nonexistent/cfg.json", 100, &c) == L3C_ERR_IO);
    CHECK(strstr(l3c_last_error(), "/nonexistent/cfg.json") != NULL);
    CHECK(l3c_train_config_from_json(write_tmp("min.json", "{}"), 0, &c) == L3C_ERR_INVALID_ARG);

    roundtrip(1);
    roundtrip(0);

    char p[300];
    const char *const names[] = {"min.json",   "hf.json",      "typo.json", "div.json",
                                 "vocab.json", "headdim.json", "dup.json",  "empty.json",
                                 "theta.json", "rt.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        remove(p);
    }
    rmdir(dir);
    return CHECK_DONE("test_train_io");
}
