/*
 * train_io.c -- config file of a model trained from scratch, and the trained model saved as a
 * llama GGUF (train_io.h).
 *
 * The config is checked key by key against one table (llama3c name, Hugging Face name, kind,
 * range): every key of the file must be in it or among the Hugging Face keys that are checked
 * (model_type, hidden_act, ...) or ignored (token ids, dtype, ...). The GGUF is written like
 * llama.cpp's convert_hf_to_gguf.py writes an F32 llama: general.*, llama.*, tokenizer.*, then
 * the tensor infos in the training model's arena order, each tensor's data 32-byte aligned.
 */
#include "train/train_io.h"

#include "io/gguf_write.h"
#include "io/outfile.h"
#include "kernels/types.h"
#include "model/model.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- config ----------------------------------------------------------------------------- */

enum { K_INT, K_NUM, K_BOOL };

typedef struct cfg_key {
    const char *name, *hf_name;
    int kind;
    double lo, hi; /* inclusive for K_INT, exclusive for K_NUM */
} cfg_key;

enum { C_EMBD, C_LAYER, C_HEAD, C_HEAD_KV, C_FF, C_THETA, C_EPS, C_TIED, C_CTX, C_N };

static const cfg_key KEYS[C_N] = {
    [C_EMBD] = {"n_embd", "hidden_size", K_INT, 1, 1 << 20},
    [C_LAYER] = {"n_layer", "num_hidden_layers", K_INT, 1, 1 << 12},
    [C_HEAD] = {"n_head", "num_attention_heads", K_INT, 1, 1 << 16},
    [C_HEAD_KV] = {"n_head_kv", "num_key_value_heads", K_INT, 1, 1 << 16},
    [C_FF] = {"n_ff", "intermediate_size", K_INT, 1, 1 << 22},
    [C_THETA] = {"rope_theta", "rope_theta", K_NUM, 1, 1e12},
    [C_EPS] = {"norm_eps", "rms_norm_eps", K_NUM, 0, 1},
    [C_TIED] = {"tied", "tie_word_embeddings", K_BOOL, 0, 0},
    [C_CTX] = {"n_ctx", "max_position_embeddings", K_INT, 1, 1 << 24},
};

/* Hugging Face config.json keys with no bearing on the weights (as convert_hf_to_gguf.py). */
static const char *const HF_IGNORED[] = {
    "_name_or_path",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "torch_dtype",
    "transformers_version",
    "use_cache",
    "initializer_range",
    "pretraining_tp",
    "attention_dropout",
    "is_llama_config",
    "rope_interleaved",
    "transformers.js_config",
    "dtype",
};

static l3c_status bad_type(const char *path, const char *key, const char *want) {
    return l3c_fail(L3C_ERR_FORMAT, "%s: key '%s' must be %s", path, key, want);
}

/* The Hugging Face keys that are checked, not stored. 1: handled (or an error set in *st). */
static int hf_checked(const char *path, const char *key, json_t *v, int32_t n_vocab,
                      l3c_status *st) {
    *st = L3C_OK;
    if (!strcmp(key, "vocab_size")) {
        if (!json_is_integer(v))
            *st = bad_type(path, key, "an integer");
        else if (json_integer_value(v) != n_vocab)
            *st = l3c_fail(L3C_ERR_INVALID_ARG,
                           "%s: key 'vocab_size' is %lld but the tokenizer has %d tokens", path,
                           (long long)json_integer_value(v), n_vocab);
        return 1;
    }
    if (!strcmp(key, "model_type") || !strcmp(key, "hidden_act")) {
        const char *want = key[0] == 'm' ? "llama" : "silu";
        if (!json_is_string(v) || strcmp(json_string_value(v), want))
            *st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: key '%s' must be \"%s\" (a llama)", path, key,
                           want);
        return 1;
    }
    if (!strcmp(key, "architectures")) {
        size_t i;
        json_t *e;
        if (!json_is_array(v)) *st = bad_type(path, key, "an array");
        json_array_foreach(v, i, e) if (!json_is_string(e) ||
                                        strcmp(json_string_value(e), "LlamaForCausalLM")) {
            *st = l3c_fail(L3C_ERR_UNSUPPORTED,
                           "%s: key 'architectures' must be [\"LlamaForCausalLM\"]", path);
            break;
        }
        return 1;
    }
    if (!strcmp(key, "attention_bias") || !strcmp(key, "mlp_bias")) {
        if (!json_is_false(v))
            *st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: key '%s' must be false (llama has no biases)",
                           path, key);
        return 1;
    }
    if (!strcmp(key, "rope_scaling")) {
        if (!json_is_null(v))
            *st = l3c_fail(L3C_ERR_UNSUPPORTED,
                           "%s: key 'rope_scaling' must be null (training from scratch "
                           "has no rope scaling)",
                           path);
        return 1;
    }
    if (!strcmp(key, "head_dim")) return 1; /* checked against n_embd / n_head after the loop */
    for (size_t i = 0; i < sizeof HF_IGNORED / sizeof HF_IGNORED[0]; i++)
        if (!strcmp(key, HF_IGNORED[i])) return 1;
    return 0;
}

static l3c_status read_json(const char *path, json_t **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return l3c_fail(L3C_ERR_IO, "%s: cannot open the config: %s", path, strerror(errno));
    json_error_t jerr;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!root)
        return l3c_fail(L3C_ERR_FORMAT, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column,
                        jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return l3c_fail(L3C_ERR_FORMAT, "%s: the config must be a JSON object", path);
    }
    *out = root;
    return L3C_OK;
}

l3c_status l3c_train_config_from_json(const char *path, int32_t n_vocab, l3c_train_config *out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_train_config_from_json: NULL output");
    memset(out, 0, sizeof *out);
    if (!path) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_train_config_from_json: NULL path");
    if (n_vocab < 1)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "%s: the tokenizer's vocabulary size %d must be positive", path, n_vocab);
    json_t *root;
    l3c_status st = read_json(path, &root);
    if (st) return st;

    double val[C_N] = {0};
    const char *given[C_N] = {0}; /* the spelling the file used */
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        int k = 0;
        while (k < C_N && strcmp(key, KEYS[k].name) && strcmp(key, KEYS[k].hf_name))
            k++;
        if (k == C_N) {
            if (hf_checked(path, key, v, n_vocab, &st)) {
                if (st) goto done;
                continue;
            }
            st = l3c_fail(
                L3C_ERR_FORMAT,
                "%s: unknown key '%s' (known: n_embd, n_layer, n_head, n_head_kv, "
                "n_ff, rope_theta, norm_eps, tied, n_ctx, or their Hugging Face config.json names)",
                path, key);
            goto done;
        }
        const cfg_key *c = &KEYS[k];
        if (given[k]) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: key '%s' repeats '%s'", path, key, given[k]);
            goto done;
        }
        given[k] = key;
        if (c->kind == K_BOOL) {
            if (!json_is_boolean(v)) {
                st = bad_type(path, key, "true or false");
                goto done;
            }
            val[k] = json_is_true(v);
        } else if (c->kind == K_INT) {
            if (!json_is_integer(v)) {
                st = bad_type(path, key, "an integer");
                goto done;
            }
            const json_int_t x = json_integer_value(v);
            if (x < (json_int_t)c->lo || x > (json_int_t)c->hi) {
                st = l3c_fail(L3C_ERR_INVALID_ARG, "%s: key '%s' is %lld, outside [%.0f, %.0f]",
                              path, key, (long long)x, c->lo, c->hi);
                goto done;
            }
            val[k] = (double)x;
        } else {
            if (!json_is_number(v)) {
                st = bad_type(path, key, "a number");
                goto done;
            }
            const double x = json_number_value(v);
            if (!(x > c->lo && x < c->hi)) {
                st = l3c_fail(L3C_ERR_INVALID_ARG, "%s: key '%s' is %g, outside (%g, %g)", path,
                              key, x, c->lo, c->hi);
                goto done;
            }
            val[k] = x;
        }
    }
    static const int required[] = {C_EMBD, C_LAYER, C_HEAD, C_FF};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!given[required[i]]) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: missing key '%s' (or '%s')", path,
                          KEYS[required[i]].name, KEYS[required[i]].hf_name);
            goto done;
        }
    l3c_train_config c = {
        .n_vocab = n_vocab,
        .n_embd = (int32_t)val[C_EMBD],
        .n_layer = (int32_t)val[C_LAYER],
        .n_head = (int32_t)val[C_HEAD],
        .n_head_kv = given[C_HEAD_KV] ? (int32_t)val[C_HEAD_KV] : (int32_t)val[C_HEAD],
        .n_ff = (int32_t)val[C_FF],
        .rope_theta = given[C_THETA] ? (float)val[C_THETA] : 10000.0f,
        .norm_eps = given[C_EPS] ? (float)val[C_EPS] : 1e-5f,
        .tied = given[C_TIED] ? (int)val[C_TIED] : 1,
        .n_ctx = given[C_CTX] ? (int32_t)val[C_CTX] : 512,
    };
    if (c.n_embd % c.n_head) {
        st = l3c_fail(L3C_ERR_INVALID_ARG, "%s: %s %d is not divisible by %s %d", path,
                      given[C_EMBD], c.n_embd, given[C_HEAD], c.n_head);
        goto done;
    }
    if (c.n_head % c.n_head_kv) {
        st = l3c_fail(L3C_ERR_INVALID_ARG, "%s: %s %d is not divisible by %s %d", path,
                      given[C_HEAD], c.n_head, given[C_HEAD_KV] ? given[C_HEAD_KV] : "n_head_kv",
                      c.n_head_kv);
        goto done;
    }
    c.n_rot = c.n_embd / c.n_head;
    if (c.n_rot % 2) {
        st = l3c_fail(L3C_ERR_INVALID_ARG,
                      "%s: head dimension %s / %s = %d must be even (rotary pairs)", path,
                      given[C_EMBD], given[C_HEAD], c.n_rot);
        goto done;
    }
    json_t *hd = json_object_get(root, "head_dim");
    if (hd && !(json_is_integer(hd) && json_integer_value(hd) == c.n_rot)) {
        st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: key 'head_dim' must equal %s / %s = %d", path,
                      given[C_EMBD], given[C_HEAD], c.n_rot);
        goto done;
    }
    *out = c;
done:
    json_decref(root);
    return st;
}

/* ---- GGUF ----------------------------------------------------------------------------- */

static int is_tokenizer_key(const l3c_gguf_kv *kv) {
    return kv->key.len > 10 && !memcmp(kv->key.ptr, "tokenizer.", 10);
}

l3c_status l3c_train_model_save_gguf(const l3c_train_model *m, const l3c_model *tok_src,
                                     int32_t n_ctx, const char *path, const char *name) {
    if (!m || !path)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_train_model_save_gguf: NULL argument");
    if (m->lora)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "%s: a LoRA training model is saved as an adapter, not a model", path);
    const l3c_train_config *c = &m->cfg;
    if (n_ctx <= 0) n_ctx = c->n_ctx;
    if (n_ctx <= 0)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "%s: the context length to write (%d) must be positive", path, n_ctx);
    const l3c_gguf *src = tok_src ? tok_src->gguf : NULL;
    if (tok_src) {
        const l3c_gguf_kv *toks = l3c_gguf_find(src, "tokenizer.ggml.tokens");
        if (!toks || toks->type != L3C_GGUF_ARRAY)
            return l3c_fail(L3C_ERR_FORMAT,
                            "%s: no tokenizer vocabulary (tokenizer.ggml.tokens) to copy",
                            tok_src->path);
        if (toks->n != (uint64_t)c->n_vocab)
            return l3c_fail(L3C_ERR_INVALID_ARG,
                            "%s: the tokenizer has %llu tokens but the model's vocabulary "
                            "is %d",
                            tok_src->path, (unsigned long long)toks->n, c->n_vocab);
    }
    if (!name || !*name) name = "llama3c";

    l3c_status st;
    l3c_gguf_writer w = {0};
    l3c_buf header = {0};
    l3c_outfile o = {0};
    FILE *f = NULL;

    /* metadata, in convert_hf_to_gguf.py's order */
    l3c_gguf_w_str(&w, "general.architecture", "llama", 5);
    l3c_gguf_w_str(&w, "general.type", "model", 5);
    l3c_gguf_w_str(&w, "general.name", name, strlen(name));
    l3c_gguf_w_u32(&w, "llama.block_count", (uint32_t)c->n_layer);
    l3c_gguf_w_u32(&w, "llama.context_length", (uint32_t)n_ctx);
    l3c_gguf_w_u32(&w, "llama.embedding_length", (uint32_t)c->n_embd);
    l3c_gguf_w_u32(&w, "llama.feed_forward_length", (uint32_t)c->n_ff);
    l3c_gguf_w_u32(&w, "llama.attention.head_count", (uint32_t)c->n_head);
    l3c_gguf_w_u32(&w, "llama.attention.head_count_kv", (uint32_t)c->n_head_kv);
    l3c_gguf_w_f32(&w, "llama.rope.freq_base", c->rope_theta);
    l3c_gguf_w_f32(&w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    l3c_gguf_w_u32(&w, "general.file_type", 0); /* all F32 */
    l3c_gguf_w_u32(&w, "llama.vocab_size", (uint32_t)c->n_vocab);
    l3c_gguf_w_u32(&w, "llama.rope.dimension_count", (uint32_t)c->n_rot);
    if (src)
        for (uint64_t i = 0; i < src->n_kv; i++)
            if (is_tokenizer_key(&src->kv[i])) l3c_gguf_w_copy_kv(&w, &src->kv[i]);

    /* tensor infos: GGUF ne[0] is the row length (cols) */
    for (int i = 0; i < m->n_tensors; i++) {
        const l3c_train_tensor *t = &m->tensors[i];
        const int64_t ne[2] = {t->cols, t->rows};
        l3c_gguf_w_tensor(&w, t->name, L3C_TYPE_F32, t->rows == 1 ? 1 : 2, ne);
    }
    const int64_t n_freqs = c->n_rot / 2;
    if (m->rope_freqs) l3c_gguf_w_tensor(&w, "rope_freqs.weight", L3C_TYPE_F32, 1, &n_freqs);
    if ((st = l3c_gguf_w_finish(&w, &header))) goto done;

    if ((st = l3c_outfile_open(&o, path, NULL, 0, "save"))) goto done;
    f = o.f;
    if (fwrite(header.data, 1, header.len, f) != header.len) goto io_err;
    static const char zeros[L3C_GGUF_W_ALIGN];
    const int n_data = m->n_tensors + (m->rope_freqs != NULL);
    for (int i = 0; i < n_data; i++) {
        const float *data = i < m->n_tensors ? m->params + m->tensors[i].offset : m->rope_freqs;
        const size_t count =
            i < m->n_tensors ? (size_t)(m->tensors[i].rows * m->tensors[i].cols) : (size_t)n_freqs;
        if (fwrite(data, sizeof(float), count, f) != count) goto io_err;
        const size_t pad =
            (L3C_GGUF_W_ALIGN - count * sizeof(float) % L3C_GGUF_W_ALIGN) % L3C_GGUF_W_ALIGN;
        if (i + 1 < n_data && pad && fwrite(zeros, 1, pad, f) != pad) goto io_err;
    }
    st = l3c_outfile_commit(&o);
    goto done;
io_err:
    st = l3c_fail(L3C_ERR_IO, "save: writing %s failed: %s", o.tmp, strerror(errno));
done:
    l3c_outfile_abort(&o); /* nothing after a commit */
    l3c_buf_free(&header);
    l3c_gguf_w_free(&w);
    return st;
}
