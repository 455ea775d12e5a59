/*
 * hf.c -- a Hugging Face Llama folder as a header-only GGUF (see hf.h for what is mapped and who
 * owns what). Steps: config.json -> llama.* keys; tokenizer.json / tokenizer_config.json ->
 * tokenizer.ggml.* keys; the safetensors shards -> GGUF tensor infos (names mapped, shapes
 * reversed: HF [out, in] is GGUF ne [in, out]); rope_freqs from rope_scaling; the serialized
 * header parsed by l3c_gguf_open_header, then each tensor's data pointed at its bytes.
 */
#include "model/hf.h"

#include "io/gguf_write.h"
#include "io/safetensors.h"
#include "kernels/types.h"
#include "tokenizer/tok_internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_JSON_FILE ((size_t)256 * 1024 * 1024)

typedef struct hf_src {
    const l3c_st_tensor *st; /* NULL for a computed tensor (rope_freqs) */
    const char *file;
    int permute_heads;       /* > 0: Q/K rows permuted for this many heads */
    const void *data;        /* what the GGUF tensor points at */
} hf_src;

struct l3c_hf {
    char *dir;
    l3c_safetensors **shards;
    size_t n_shards;
    hf_src *src;             /* [n_src], in GGUF tensor order */
    size_t n_src;
    void **owned;            /* copies made at load, [n_owned] */
    size_t n_owned;
    l3c_buf header;          /* the serialized GGUF header the reader parses */
};

int l3c_path_is_dir(const char *path) {
    struct stat sb;
    return path && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = l3c_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *dir, const char *name) {
    char *p = join(dir, name);
    struct stat sb;
    int ok = p && stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
    free(p);
    return ok;
}

/* Parses dir/name as JSON. *out NULL (and L3C_OK) when optional and absent. */
static l3c_status load_json(const char *dir, const char *name, int optional, json_t **out) {
    *out = NULL;
    char *path = join(dir, name);
    if (!path) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        l3c_status st = optional && errno == ENOENT ? L3C_OK
                        : l3c_fail(L3C_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        free(path);
        return st;
    }
    l3c_buf b = {0};
    char chunk[65536];
    size_t r;
    l3c_status st = L3C_OK;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + r > MAX_JSON_FILE) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: larger than %zu bytes", path, MAX_JSON_FILE);
            break;
        }
        if ((st = l3c_buf_append(&b, chunk, r))) break;
    }
    if (!st && ferror(f)) st = l3c_fail(L3C_ERR_IO, "%s: read error", path);
    fclose(f);
    if (!st) {
        json_error_t jerr;
        *out = json_loadb(b.data ? b.data : "", b.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!*out) st = l3c_fail(L3C_ERR_FORMAT, "%s: JSON line %d: %s", path, jerr.line, jerr.text);
        else if (!json_is_object(*out)) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: not a JSON object", path);
            json_decref(*out);
            *out = NULL;
        }
    }
    l3c_buf_free(&b);
    free(path);
    return st;
}

static void *own(l3c_hf *hf, size_t n) {
    void **o = l3c_realloc(hf->owned, (hf->n_owned + 1) * sizeof *o);
    if (!o) return NULL;
    hf->owned = o;
    void *p = l3c_malloc(n ? n : 1);
    if (p) hf->owned[hf->n_owned++] = p;
    return p;
}

/* ---------------------------------------------------------------- config.json */

typedef struct hf_cfg {
    int64_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, n_vocab;
    double eps, theta;
    int has_theta, tied;
    /* llama3 rope scaling */
    int llama3;
    double factor, low, high, orig_ctx;
} hf_cfg;

static l3c_status cfg_int(const char *f, json_t *c, const char *key, int optional, int64_t lo, int64_t hi,
                          int64_t *out) {
    json_t *v = json_object_get(c, key);
    if (!v || json_is_null(v)) {
        if (optional) return L3C_OK;
        return l3c_fail(L3C_ERR_FORMAT, "%s: missing key '%s'", f, key);
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return l3c_fail(L3C_ERR_FORMAT, "%s: key '%s' must be an integer in [%lld, %lld]", f, key,
                        (long long)lo, (long long)hi);
    *out = (int64_t)json_integer_value(v);
    return L3C_OK;
}

static l3c_status cfg_num(const char *f, json_t *c, const char *key, int optional, double *out, int *has) {
    json_t *v = json_object_get(c, key);
    if (!v || json_is_null(v)) {
        if (optional) return L3C_OK;
        return l3c_fail(L3C_ERR_FORMAT, "%s: missing key '%s'", f, key);
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return l3c_fail(L3C_ERR_FORMAT, "%s: key '%s' is not a finite number", f, key);
    *out = json_number_value(v);
    if (has) *has = 1;
    return L3C_OK;
}

static l3c_status read_config(const char *f, json_t *c, hf_cfg *h) {
    l3c_status st;
    memset(h, 0, sizeof *h);
    const char *mt = json_string_value(json_object_get(c, "model_type"));
    if (!mt || strcmp(mt, "llama") != 0)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: model_type is '%s'; llama3c loads only 'llama' folders",
                        f, mt ? mt : "(missing)");
    const char *act = json_string_value(json_object_get(c, "hidden_act"));
    if (act && strcmp(act, "silu") != 0)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (silu)", f, act);
    if (json_is_true(json_object_get(c, "attention_bias")) || json_is_true(json_object_get(c, "mlp_bias")))
        return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: attention_bias / mlp_bias are not supported", f);
    const int64_t BIG = 1 << 24;
    if ((st = cfg_int(f, c, "hidden_size", 0, 1, 1 << 20, &h->n_embd))) return st;
    if ((st = cfg_int(f, c, "num_hidden_layers", 0, 1, 1 << 16, &h->n_layer))) return st;
    if ((st = cfg_int(f, c, "num_attention_heads", 0, 1, 1 << 16, &h->n_head))) return st;
    h->n_head_kv = h->n_head;
    if ((st = cfg_int(f, c, "num_key_value_heads", 1, 1, 1 << 16, &h->n_head_kv))) return st;
    if ((st = cfg_int(f, c, "intermediate_size", 0, 1, 1 << 20, &h->n_ff))) return st;
    if ((st = cfg_int(f, c, "max_position_embeddings", 0, 1, BIG, &h->n_ctx))) return st;
    if ((st = cfg_int(f, c, "vocab_size", 0, 1, BIG, &h->n_vocab))) return st;
    if (h->n_embd % h->n_head != 0 || (h->n_embd / h->n_head) % 2 != 0)
        return l3c_fail(L3C_ERR_FORMAT, "%s: hidden_size %lld / num_attention_heads %lld is not an even "
                        "head size", f, (long long)h->n_embd, (long long)h->n_head);
    int64_t hd = h->n_embd / h->n_head;
    if ((st = cfg_int(f, c, "head_dim", 1, 1, 1 << 20, &hd))) return st;
    if (hd != h->n_embd / h->n_head)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: head_dim %lld != hidden_size / num_attention_heads (%lld)",
                        f, (long long)hd, (long long)(h->n_embd / h->n_head));
    h->eps = 1e-6; /* transformers' LlamaConfig default */
    if ((st = cfg_num(f, c, "rms_norm_eps", 1, &h->eps, NULL))) return st;
    h->theta = 10000.0;
    if ((st = cfg_num(f, c, "rope_theta", 1, &h->theta, &h->has_theta))) return st;
    json_t *tie = json_object_get(c, "tie_word_embeddings");
    h->tied = json_is_true(tie); /* LlamaConfig's default is False */

    json_t *rs = json_object_get(c, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs)) return l3c_fail(L3C_ERR_FORMAT, "%s: rope_scaling is not an object", f);
        const char *type = json_string_value(json_object_get(rs, "rope_type"));
        if (!type) type = json_string_value(json_object_get(rs, "type"));
        if (!type || strcmp(type, "llama3") != 0)
            return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: rope_scaling type '%s' is not supported (only "
                            "'llama3')", f, type ? type : "(missing)");
        h->llama3 = 1;
        h->factor = 8.0, h->low = 1.0, h->high = 4.0, h->orig_ctx = 8192;
        if ((st = cfg_num(f, rs, "factor", 1, &h->factor, NULL)) ||
            (st = cfg_num(f, rs, "low_freq_factor", 1, &h->low, NULL)) ||
            (st = cfg_num(f, rs, "high_freq_factor", 1, &h->high, NULL)) ||
            (st = cfg_num(f, rs, "original_max_position_embeddings", 1, &h->orig_ctx, NULL)))
            return st;
        if (!(h->factor > 0) || !(h->low > 0) || !(h->high > h->low) || !(h->orig_ctx > 0))
            return l3c_fail(L3C_ERR_FORMAT, "%s: rope_scaling needs factor > 0 and high_freq_factor > "
                            "low_freq_factor > 0", f);
    }
    return L3C_OK;
}

/*
 * rope_freqs as convert_hf_to_gguf.py computes them (LlamaModel.generate_extra_tensors), in
 * float32 like its torch code: freqs = 1 / base^(arange(0, dim, 2) / dim); wavelen = 2 pi / freq;
 * factor 1 below high_freq_wavelen, `factor` above low_freq_wavelen, a smooth blend between.
 */
static void llama3_rope_freqs(const hf_cfg *h, float *out) {
    const int dim = (int)(h->n_embd / h->n_head);
    const float base = (float)h->theta, factor = (float)h->factor, lo = (float)h->low, hi = (float)h->high;
    const float old_ctx = (float)h->orig_ctx;
    const float low_wl = old_ctx / lo, high_wl = old_ctx / hi;
    for (int i = 0; i < dim / 2; i++) {
        float freq = 1.0f / powf(base, (float)(2 * i) / (float)dim);
        float wl = (float)(2 * M_PI) / freq;
        if (wl < high_wl) out[i] = 1.0f;
        else if (wl > low_wl) out[i] = factor;
        else {
            float smooth = (old_ctx / wl - lo) / (hi - lo);
            out[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
}

static void write_llama_kv(l3c_gguf_writer *w, const hf_cfg *h, const char *name) {
    l3c_gguf_w_str(w, "general.architecture", "llama", 5);
    l3c_gguf_w_str(w, "general.name", name, strlen(name));
    l3c_gguf_w_u32(w, "llama.block_count", (uint32_t)h->n_layer);
    l3c_gguf_w_u32(w, "llama.context_length", (uint32_t)h->n_ctx);
    l3c_gguf_w_u32(w, "llama.embedding_length", (uint32_t)h->n_embd);
    l3c_gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)h->n_ff);
    l3c_gguf_w_u32(w, "llama.attention.head_count", (uint32_t)h->n_head);
    l3c_gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)h->n_head_kv);
    if (h->has_theta) l3c_gguf_w_f32(w, "llama.rope.freq_base", (float)h->theta);
    l3c_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)h->eps);
    l3c_gguf_w_u32(w, "llama.vocab_size", (uint32_t)h->n_vocab);
    l3c_gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)(h->n_embd / h->n_head));
}

/* ---------------------------------------------------------------- tokenizer */

/* convert_hf_to_gguf.py's does_token_look_special */
static int looks_special(const char *s) {
    size_t n = strlen(s);
    if (!strcmp(s, "<pad>") || !strcmp(s, "<mask>") || !strcmp(s, "<2mass>") || !strcmp(s, "[@BOS@]")) return 1;
    if (n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>")) return 1;
    if (n >= 7 && !strncmp(s, "<unused", 7) && s[n - 1] == '>') return 1;
    return 0;
}

/* The pre-tokenizer's regex chain (NULL entries: ByteLevel's GPT-2 regex); -1 if unsupported. */
static int pre_chain(json_t *pt, const char **res, int n, int cap) {
    if (!pt || json_is_null(pt)) return n;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return -1;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(pt, "pretokenizers"), i, v) {
            if ((n = pre_chain(v, res, n, cap)) < 0) return -1;
        }
        return n;
    }
    if (n >= cap) return -1;
    if (!strcmp(type, "Split")) {
        const char *re = json_string_value(json_object_get(json_object_get(pt, "pattern"), "Regex"));
        if (!re || json_is_true(json_object_get(pt, "invert"))) return -1;
        res[n] = re;
        return n + 1;
    }
    if (!strcmp(type, "Digits")) {
        if (!json_is_true(json_object_get(pt, "individual_digits"))) return -1;
        res[n] = "\\p{N}";
        return n + 1;
    }
    if (!strcmp(type, "ByteLevel")) {
        json_t *ur = json_object_get(pt, "use_regex");
        if (ur && !json_is_true(ur)) return n;
        res[n] = NULL;
        return n + 1;
    }
    return -1;
}

/* tokenizer_config.json's X_token: a string or {"content": ...} */
static const char *token_text(json_t *tc, const char *key) {
    json_t *v = json_object_get(tc, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_string_value(v);
}

static l3c_status write_tokenizer_kv(const char *dir, const hf_cfg *h, json_t *config, l3c_gguf_writer *w) {
    json_t *tj = NULL, *tc = NULL;
    l3c_status st;
    char **tokens = NULL;
    int32_t *types = NULL;
    const int64_t n = h->n_vocab;
    if (!file_exists(dir, "tokenizer.json")) return L3C_OK; /* a model without a tokenizer */
    if ((st = load_json(dir, "tokenizer.json", 0, &tj))) goto done;
    if ((st = load_json(dir, "tokenizer_config.json", 1, &tc))) goto done;
    char f[4096];
    snprintf(f, sizeof f, "%s/tokenizer.json", dir);
    json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab"),
           *merges = json_object_get(model, "merges"), *added = json_object_get(tj, "added_tokens");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(vocab) || !json_is_array(merges) || !mtype || strcmp(mtype, "BPE") != 0) {
        st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: model is not a BPE with vocab and merges (only byte-level "
                      "BPE tokenizers are supported)", f);
        goto done;
    }
    const char *res[L3C_TOK_MAX_RE];
    int n_re = pre_chain(json_object_get(tj, "pre_tokenizer"), res, 0, L3C_TOK_MAX_RE);
    const char *pre = n_re > 0 ? l3c_tok_pre_name(res, n_re) : NULL;
    if (!pre) {
        st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: pre_tokenizer matches none of the GGUF pre-tokenizers "
                      "llama3c knows (llama-bpe, smollm, gpt-2, qwen2)", f);
        goto done;
    }
    tokens = l3c_calloc((size_t)n, sizeof *tokens);
    types = l3c_calloc((size_t)n, sizeof *types);
    if (!tokens || !types) goto nomem;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= n) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: vocab entry '%.40s' has an id outside [0, vocab_size %lld)",
                          f, key, (long long)n);
            goto done;
        }
        size_t id = (size_t)json_integer_value(v);
        if (tokens[id]) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: id %zu appears twice in the vocab", f, id);
            goto done;
        }
        tokens[id] = (char *)key; /* borrowed from tj */
        types[id] = L3C_TT_NORMAL;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id"), *c = json_object_get(v, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= n || !json_is_string(c)) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: added_tokens[%zu] lacks content or has an id outside "
                          "[0, vocab_size %lld)", f, i, (long long)n);
            goto done;
        }
        size_t k = (size_t)json_integer_value(id);
        tokens[k] = (char *)json_string_value(c);
        types[k] = json_is_true(json_object_get(v, "special")) || looks_special(tokens[k]) ? L3C_TT_CONTROL
                                                                                           : L3C_TT_USER;
    }
    l3c_gguf_w_str(w, "tokenizer.ggml.model", "gpt2", 4);
    l3c_gguf_w_str(w, "tokenizer.ggml.pre", pre, strlen(pre));
    l3c_gguf_w_arr_begin(w, "tokenizer.ggml.tokens", L3C_GGUF_STRING, (uint64_t)n);
    for (int64_t k = 0; k < n; k++) {
        char pad[32];
        if (tokens[k]) l3c_gguf_w_elem_str(w, tokens[k], strlen(tokens[k]));
        else l3c_gguf_w_elem_str(w, pad, (size_t)snprintf(pad, sizeof pad, "[PAD%lld]", (long long)k));
    }
    l3c_gguf_w_arr_begin(w, "tokenizer.ggml.token_type", L3C_GGUF_INT32, (uint64_t)n);
    for (int64_t k = 0; k < n; k++) l3c_gguf_w_elem_i32(w, tokens[k] ? types[k] : L3C_TT_UNUSED);
    l3c_gguf_w_arr_begin(w, "tokenizer.ggml.merges", L3C_GGUF_STRING, json_array_size(merges));
    json_array_foreach(merges, i, v) {
        if (json_is_string(v)) {
            l3c_gguf_w_elem_str(w, json_string_value(v), json_string_length(v));
        } else if (json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
                   json_is_string(json_array_get(v, 1))) {
            /* ["a", "b"] -> "a b", a space inside a part written as U+0120 (as gguf-py does) */
            l3c_buf m = {0};
            for (int p = 0; p < 2 && !st; p++) {
                const char *s = json_string_value(json_array_get(v, (size_t)p));
                if (p) st = l3c_buf_append(&m, " ", 1);
                for (; *s && !st; s++) st = *s == ' ' ? l3c_buf_append(&m, "\xc4\xa0", 2) : l3c_buf_append(&m, s, 1);
            }
            if (!st) l3c_gguf_w_elem_str(w, m.data, m.len);
            l3c_buf_free(&m);
            if (st) goto done;
        } else {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: merges[%zu] is neither \"a b\" nor [a, b]", f, i);
            goto done;
        }
    }
    /* special ids: tokenizer_config's X_token looked up in added_tokens, else config.json's X_token_id */
    static const char *const kinds[][3] = {{"bos_token", "bos_token_id", "tokenizer.ggml.bos_token_id"},
                                           {"eos_token", "eos_token_id", "tokenizer.ggml.eos_token_id"},
                                           {"unk_token", "unk_token_id", "tokenizer.ggml.unknown_token_id"},
                                           {"pad_token", "pad_token_id", "tokenizer.ggml.padding_token_id"}};
    int32_t bos = -1;
    for (int k = 0; k < 4; k++) {
        int64_t id = -1;
        const char *text = token_text(tc, kinds[k][0]);
        json_array_foreach(added, i, v) {
            if (text && id < 0 && json_is_string(json_object_get(v, "content")) &&
                !strcmp(json_string_value(json_object_get(v, "content")), text))
                id = json_integer_value(json_object_get(v, "id"));
        }
        json_t *cid = json_object_get(config, kinds[k][1]);
        if (id < 0 && json_is_integer(cid)) id = json_integer_value(cid);
        if (id >= 0 && id < n) l3c_gguf_w_u32(w, kinds[k][2], (uint32_t)id);
        if (k == 0 && id >= 0 && id < n) bos = (int32_t)id;
    }
    json_t *ab = json_object_get(tc, "add_bos_token");
    if (json_is_boolean(ab)) {
        l3c_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(ab));
    } else if (bos >= 0) { /* post_processor TemplateProcessing starting with the BOS token */
        json_t *pp = json_object_get(tj, "post_processor"), *procs = json_object_get(pp, "processors");
        json_t *tp = NULL;
        const char *ptype = json_string_value(json_object_get(pp, "type"));
        if (ptype && !strcmp(ptype, "TemplateProcessing")) tp = pp;
        json_array_foreach(procs, i, v) {
            const char *t = json_string_value(json_object_get(v, "type"));
            if (!tp && t && !strcmp(t, "TemplateProcessing")) tp = v;
        }
        json_t *first = json_object_get(json_object_get(json_array_get(json_object_get(tp, "single"), 0),
                                                        "SpecialToken"), "id");
        if (tp) l3c_gguf_w_bool(w, "tokenizer.ggml.add_bos_token",
                                json_is_string(first) && tokens[bos] && !strcmp(json_string_value(first), tokens[bos]));
    }
    /* chat template: tokenizer_config.json (a string, or [{name, template}]), else chat_template.jinja */
    json_t *ct = json_object_get(tc, "chat_template");
    if (json_is_string(ct)) {
        l3c_gguf_w_str(w, "tokenizer.chat_template", json_string_value(ct), json_string_length(ct));
    } else if (json_is_array(ct)) {
        json_array_foreach(ct, i, v) {
            const char *name = json_string_value(json_object_get(v, "name"));
            json_t *tmpl = json_object_get(v, "template");
            if (!name || !json_is_string(tmpl)) continue;
            char k[256];
            if (!strcmp(name, "default")) snprintf(k, sizeof k, "tokenizer.chat_template");
            else snprintf(k, sizeof k, "tokenizer.chat_template.%.200s", name);
            l3c_gguf_w_str(w, k, json_string_value(tmpl), json_string_length(tmpl));
        }
    } else if (file_exists(dir, "chat_template.jinja")) {
        char *p = join(dir, "chat_template.jinja");
        FILE *fp = p ? fopen(p, "rb") : NULL;
        l3c_buf b = {0};
        char chunk[4096];
        size_t r;
        while (fp && (r = fread(chunk, 1, sizeof chunk, fp)) > 0 && !st) st = l3c_buf_append(&b, chunk, r);
        if (fp) fclose(fp);
        if (!st && b.len) l3c_gguf_w_str(w, "tokenizer.chat_template", b.data, b.len);
        l3c_buf_free(&b);
        free(p);
        if (st) goto done;
    }
    /* the strings written are copies: tj can go */
    st = w->err;
    goto done;
nomem:
    st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory reading the tokenizer", dir);
done:
    free(tokens);
    free(types);
    json_decref(tj);
    json_decref(tc);
    return st;
}

/* ---------------------------------------------------------------- tensors */

/* HF name -> GGUF name; *permute: 1 for q_proj, 2 for k_proj. 0: mapped, 1: skip, -1: unknown. */
static int map_name(const char *hf, int64_t n_layer, int tied, char *out, size_t cap, int *permute) {
    static const char *const top[][2] = {{"model.embed_tokens.weight", "token_embd.weight"},
                                         {"model.norm.weight", "output_norm.weight"},
                                         {"lm_head.weight", "output.weight"}};
    static const char *const layer[][2] = {
        {"input_layernorm.weight", "attn_norm"},     {"self_attn.q_proj.weight", "attn_q"},
        {"self_attn.k_proj.weight", "attn_k"},        {"self_attn.v_proj.weight", "attn_v"},
        {"self_attn.o_proj.weight", "attn_output"},   {"post_attention_layernorm.weight", "ffn_norm"},
        {"mlp.gate_proj.weight", "ffn_gate"},         {"mlp.up_proj.weight", "ffn_up"},
        {"mlp.down_proj.weight", "ffn_down"}};
    *permute = 0;
    for (size_t i = 0; i < 3; i++)
        if (!strcmp(hf, top[i][0])) {
            if (i == 2 && tied) return 1;
            snprintf(out, cap, "%s", top[i][1]);
            return 0;
        }
    if (strncmp(hf, "model.layers.", 13) != 0) return -1;
    const char *p = hf + 13;
    int64_t l = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9' && l < n_layer) l = l * 10 + (*p++ - '0');
    if (*p != '.' || l >= n_layer) return -1;
    p++;
    if (!strcmp(p, "self_attn.rotary_emb.inv_freq")) return 1;
    for (size_t i = 0; i < sizeof layer / sizeof layer[0]; i++)
        if (!strcmp(p, layer[i][0])) {
            snprintf(out, cap, "blk.%lld.%s.weight", (long long)l, layer[i][1]);
            *permute = i == 1 ? 1 : i == 2 ? 2 : 0;
            return 0;
        }
    return -1;
}

/* Safe shard file name from the index: a plain name inside the folder. */
static int safe_name(const char *s) {
    return s && *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static l3c_status open_shards(l3c_hf *hf) {
    l3c_status st;
    const char *dir = hf->dir;
    char *path = NULL;
    if (file_exists(dir, "model.safetensors")) {
        hf->shards = l3c_calloc(1, sizeof *hf->shards);
        if (!hf->shards || !(path = join(dir, "model.safetensors"))) goto nomem;
        st = l3c_safetensors_open(path, &hf->shards[0]);
        free(path);
        if (!st) hf->n_shards = 1;
        return st;
    }
    json_t *idx = NULL;
    if (!file_exists(dir, "model.safetensors.index.json"))
        return l3c_fail(L3C_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json", dir);
    if ((st = load_json(dir, "model.safetensors.index.json", 0, &idx))) return st;
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        json_decref(idx);
        return l3c_fail(L3C_ERR_FORMAT, "%s/model.safetensors.index.json: missing object 'weight_map'", dir);
    }
    hf->shards = l3c_calloc(json_object_size(wm), sizeof *hf->shards);
    if (!hf->shards) {
        json_decref(idx);
        goto nomem;
    }
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        const char *file = json_string_value(v);
        if (!safe_name(file)) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s/model.safetensors.index.json: weight_map['%.64s'] is not a "
                          "file name in the folder", dir, name);
            break;
        }
        size_t k;
        for (k = 0; k < hf->n_shards; k++) {
            const char *b = strrchr(hf->shards[k]->path, '/');
            if (!strcmp(b + 1, file)) break;
        }
        if (k == hf->n_shards) {
            if (!(path = join(dir, file))) {
                json_decref(idx);
                goto nomem;
            }
            st = l3c_safetensors_open(path, &hf->shards[k]);
            free(path);
            if (st) break;
            hf->n_shards++;
        }
        if (!l3c_safetensors_find(hf->shards[k], name)) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%.64s' listed in model.safetensors.index.json is "
                          "missing", hf->shards[k]->path, name);
            break;
        }
    }
    json_decref(idx);
    return st;
nomem:
    return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", dir);
}

/* Q/K rows as convert_hf_to_gguf.py's permute(w, n_head, n_head): reshape (heads, 2, hd/2, in),
 * swap axes 1 and 2: GGUF row h*hd + 2i + j is HF row h*hd + j*hd/2 + i. */
void l3c_hf_permute_rows(const void *src_, void *dst_, int64_t rows, size_t row_bytes, int64_t heads,
                         int inverse) {
    const uint8_t *src = src_;
    uint8_t *dst = dst_;
    const int64_t hd = rows / heads, half = hd / 2;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                size_t g = (size_t)(h * hd + 2 * i + j) * row_bytes, f = (size_t)(h * hd + j * half + i) * row_bytes;
                memcpy(dst + (inverse ? f : g), src + (inverse ? g : f), row_bytes);
            }
}

l3c_status l3c_hf_load_json(const char *dir, const char *name, int optional, void **out) {
    json_t *j = NULL;
    l3c_status st = load_json(dir, name, optional, &j);
    *out = j;
    return st;
}

static l3c_status add_tensors(l3c_hf *hf, const hf_cfg *h, l3c_gguf_writer *w) {
    size_t total = 1; /* + rope_freqs */
    for (size_t s = 0; s < hf->n_shards; s++) total += hf->shards[s]->n_tensors;
    hf->src = l3c_calloc(total, sizeof *hf->src);
    if (!hf->src) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", hf->dir);
    char name[128];
    for (size_t s = 0; s < hf->n_shards; s++) {
        const l3c_safetensors *sh = hf->shards[s];
        for (size_t i = 0; i < sh->n_tensors; i++) {
            const l3c_st_tensor *t = &sh->tensors[i];
            int perm;
            int r = map_name(t->name, h->n_layer, h->tied, name, sizeof name, &perm);
            if (r == 1) continue;
            if (r < 0)
                return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: tensor '%s' is not part of a llama model llama3c "
                                "knows", sh->path, t->name);
            if (t->type < 0)
                return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (supported: F32, F16, "
                                "BF16)", sh->path, t->name, t->dtype);
            if (t->n_dims < 1 || t->n_dims > 2)
                return l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s' has %d dimensions (1 or 2 expected)",
                                sh->path, t->name, t->n_dims);
            int64_t ne[2] = {t->shape[t->n_dims - 1], t->n_dims == 2 ? t->shape[0] : 1};
            hf_src *src = &hf->src[hf->n_src];
            src->st = t;
            src->file = sh->path;
            src->permute_heads = perm == 1 ? (int)h->n_head : perm == 2 ? (int)h->n_head_kv : 0;
            if (src->permute_heads && (ne[1] % src->permute_heads || (ne[1] / src->permute_heads) % 2))
                return l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s': %lld rows do not split into %d heads of "
                                "even size", sh->path, t->name, (long long)ne[1], src->permute_heads);
            /* duplicate names across shards: the reader rejects them in the header */
            if (l3c_gguf_w_tensor(w, name, t->type, t->n_dims, ne) == UINT64_MAX) return w->err;
            hf->n_src++;
        }
    }
    if (h->llama3) {
        const int64_t half = h->n_embd / h->n_head / 2;
        float *rf = own(hf, (size_t)half * sizeof(float));
        if (!rf) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", hf->dir);
        llama3_rope_freqs(h, rf);
        hf->src[hf->n_src++] = (hf_src){.st = NULL, .file = "config.json rope_scaling", .data = rf};
        if (l3c_gguf_w_tensor(w, "rope_freqs.weight", L3C_TYPE_F32, 1, &half) == UINT64_MAX) return w->err;
    }
    return w->err;
}

/* Points every tensor of g at its bytes: in the mapping, or a permuted / aligned copy. */
static l3c_status bind_data(l3c_hf *hf, l3c_gguf *g) {
    for (size_t i = 0; i < hf->n_src; i++) {
        hf_src *s = &hf->src[i];
        l3c_gguf_tensor *t = &g->tensors[i];
        if (s->st) {
            if (t->nbytes != s->st->nbytes)
                return l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s': %zu bytes, expected %zu", s->file,
                                s->st->name, s->st->nbytes, t->nbytes);
            s->data = s->st->data;
            if (s->permute_heads || (uintptr_t)s->data % s->st->elem_size) {
                uint8_t *copy = own(hf, t->nbytes);
                if (!copy) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory copying '%s'", s->file, s->st->name);
                if (s->permute_heads)
                    l3c_hf_permute_rows(s->data, copy, t->ne[1], t->nbytes / (size_t)t->ne[1], s->permute_heads, 0);
                else
                    memcpy(copy, s->data, t->nbytes);
                s->data = copy;
            }
        }
        t->data = s->data;
    }
    return L3C_OK;
}

static const char *base_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *s = path + n;
    while (s > path && s[-1] != '/') s--;
    return s;
}

l3c_status l3c_hf_open(const char *dir, l3c_hf **out_hf, l3c_gguf **out_g) {
    if (!out_hf || !out_g) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_hf_open: NULL argument");
    *out_hf = NULL;
    *out_g = NULL;
    l3c_status st;
    json_t *config = NULL;
    l3c_gguf_writer w = {0};
    l3c_gguf *g = NULL;
    hf_cfg h;
    l3c_hf *hf = l3c_calloc(1, sizeof *hf);
    if (!hf || !(hf->dir = l3c_strdup(dir))) {
        free(hf);
        return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", dir);
    }
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    if ((st = load_json(dir, "config.json", 0, &config))) goto fail;
    if ((st = read_config(cfg_path, config, &h))) goto fail;

    /* general.name: the folder's name without trailing slashes */
    char name[256];
    const char *b = base_name(dir);
    size_t bl = strcspn(b, "/");
    snprintf(name, sizeof name, "%.*s", (int)L3C_MIN(bl, sizeof name - 1), b);
    write_llama_kv(&w, &h, name);
    if ((st = write_tokenizer_kv(dir, &h, config, &w))) goto fail;
    if ((st = open_shards(hf))) goto fail;
    if ((st = add_tensors(hf, &h, &w))) goto fail;
    if ((st = l3c_gguf_w_finish(&w, &hf->header))) goto fail;
    if ((st = l3c_gguf_open_header(hf->header.data, hf->header.len, dir, &g))) goto fail;
    if ((st = bind_data(hf, g))) goto fail;
    json_decref(config);
    l3c_gguf_w_free(&w);
    *out_hf = hf;
    *out_g = g;
    return L3C_OK;
fail:
    json_decref(config);
    l3c_gguf_w_free(&w);
    l3c_gguf_close(g);
    l3c_hf_free(hf);
    return st;
}

void l3c_hf_free(l3c_hf *hf) {
    if (!hf) return;
    for (size_t i = 0; i < hf->n_shards; i++) l3c_safetensors_close(hf->shards[i]);
    free(hf->shards);
    for (size_t i = 0; i < hf->n_owned; i++) free(hf->owned[i]);
    free(hf->owned);
    free(hf->src);
    l3c_buf_free(&hf->header);
    free(hf->dir);
    free(hf);
}
