/*
 * config.c -- the llama hyperparameters from GGUF metadata (general.architecture must be
 * "llama"), validated so the rest of the code may rely on: every count positive and below a
 * sane bound, n_embd == n_head * head_dim, n_head a multiple of n_head_kv, n_rot even and
 * <= head_dim. Every error names the file and the key.
 */
#include "model/model.h"

#include <math.h>
#include <string.h>

#define L3C_MAX_DIM (1 << 20)   /* embedding / ffn widths */
#define L3C_MAX_COUNT (1 << 16) /* layers, heads */
#define L3C_MAX_VOCAB (1 << 24)
#define L3C_MAX_CTX (1 << 24)

static l3c_status get_int(const l3c_gguf *g, const char *key, int optional, int64_t lo, int64_t hi,
                          int32_t *out) {
    int64_t v = *out;
    l3c_status st = l3c_gguf_get_i64(g, key, optional, &v);
    if (st != L3C_OK) return st;
    if (v < lo || v > hi)
        return l3c_fail(L3C_ERR_FORMAT, "%s: key '%s' = %lld is out of range [%lld, %lld]", g->path,
                        key, (long long)v, (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return L3C_OK;
}

l3c_status l3c_config_from_gguf(const l3c_gguf *g, l3c_config *cfg) {
    l3c_status st;
    memset(cfg, 0, sizeof *cfg);

    l3c_str arch = {0};
    if ((st = l3c_gguf_get_str(g, "general.architecture", 0, &arch))) return st;
    if (arch.len != 5 || memcmp(arch.ptr, "llama", 5) != 0)
        return l3c_fail(L3C_ERR_UNSUPPORTED,
                        "%s: general.architecture is '%.*s'; llama3c supports only 'llama'", g->path,
                        (int)L3C_MIN(arch.len, 64), arch.ptr);

    if ((st = get_int(g, "llama.context_length", 0, 1, L3C_MAX_CTX, &cfg->n_ctx_train))) return st;
    if ((st = get_int(g, "llama.embedding_length", 0, 1, L3C_MAX_DIM, &cfg->n_embd))) return st;
    if ((st = get_int(g, "llama.block_count", 0, 1, L3C_MAX_COUNT, &cfg->n_layer))) return st;
    if ((st = get_int(g, "llama.feed_forward_length", 0, 1, L3C_MAX_DIM, &cfg->n_ff))) return st;
    if ((st = get_int(g, "llama.attention.head_count", 0, 1, L3C_MAX_COUNT, &cfg->n_head))) return st;
    cfg->n_head_kv = cfg->n_head;
    if ((st = get_int(g, "llama.attention.head_count_kv", 1, 1, L3C_MAX_COUNT, &cfg->n_head_kv)))
        return st;

    if (cfg->n_embd % cfg->n_head != 0)
        return l3c_fail(L3C_ERR_FORMAT,
                        "%s: llama.embedding_length %d is not divisible by llama.attention.head_count %d",
                        g->path, cfg->n_embd, cfg->n_head);
    if (cfg->n_head % cfg->n_head_kv != 0)
        return l3c_fail(L3C_ERR_FORMAT,
                        "%s: llama.attention.head_count %d is not divisible by "
                        "llama.attention.head_count_kv %d",
                        g->path, cfg->n_head, cfg->n_head_kv);
    cfg->head_dim = cfg->n_embd / cfg->n_head;

    cfg->norm_eps = 1e-5f;
    if ((st = l3c_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", 0, &cfg->norm_eps)))
        return st;
    if (!(cfg->norm_eps > 0.0f && cfg->norm_eps < 1.0f))
        return l3c_fail(L3C_ERR_FORMAT, "%s: key 'llama.attention.layer_norm_rms_epsilon' = %g is "
                                        "out of range (0, 1)", g->path, (double)cfg->norm_eps);

    cfg->rope_theta = 10000.0f;
    if ((st = l3c_gguf_get_f32(g, "llama.rope.freq_base", 1, &cfg->rope_theta))) return st;
    if (!(cfg->rope_theta > 1.0f && isfinite(cfg->rope_theta)))
        return l3c_fail(L3C_ERR_FORMAT, "%s: key 'llama.rope.freq_base' = %g must be > 1", g->path,
                        (double)cfg->rope_theta);

    cfg->n_rot = cfg->head_dim;
    if ((st = get_int(g, "llama.rope.dimension_count", 1, 2, cfg->head_dim, &cfg->n_rot))) return st;
    if (cfg->n_rot % 2 != 0)
        return l3c_fail(L3C_ERR_FORMAT, "%s: key 'llama.rope.dimension_count' = %d must be even",
                        g->path, cfg->n_rot);

    /* vocabulary size: llama.vocab_size, else the token list, else token_embd's ne1 */
    cfg->n_vocab = 0;
    if (l3c_gguf_find(g, "llama.vocab_size") &&
        (st = get_int(g, "llama.vocab_size", 0, 1, L3C_MAX_VOCAB, &cfg->n_vocab)))
        return st;
    if (cfg->n_vocab == 0) {
        const l3c_gguf_kv *toks = NULL;
        if ((st = l3c_gguf_get_arr(g, "tokenizer.ggml.tokens", 1, -1, &toks))) return st;
        if (toks) {
            if (toks->n == 0 || toks->n > L3C_MAX_VOCAB)
                return l3c_fail(L3C_ERR_FORMAT, "%s: key 'tokenizer.ggml.tokens' has %llu entries",
                                g->path, (unsigned long long)toks->n);
            cfg->n_vocab = (int32_t)toks->n;
        } else {
            const l3c_gguf_tensor *te = l3c_gguf_find_tensor(g, "token_embd.weight");
            if (!te)
                return l3c_fail(L3C_ERR_FORMAT, "%s: missing tensor 'token_embd.weight'", g->path);
            if (te->ne[1] < 1 || te->ne[1] > L3C_MAX_VOCAB)
                return l3c_fail(L3C_ERR_FORMAT, "%s: tensor 'token_embd.weight' has %lld rows",
                                g->path, (long long)te->ne[1]);
            cfg->n_vocab = (int32_t)te->ne[1];
        }
    }

    /* rope scaling (llama.cpp's reading): factor from llama.rope.scaling.factor, else the older
     * llama.rope.scale_linear; type absent = linear; "none" never scales; positions are
     * multiplied by 1 / factor. Llama 3.1 'llama3' scaling is the rope_freqs tensor instead. */
    l3c_str stype = {0};
    if ((st = l3c_gguf_get_str(g, "llama.rope.scaling.type", 1, &stype))) return st;
    if (l3c_gguf_find(g, "llama.rope.scaling.type")) {
        size_t n = L3C_MIN(stype.len, sizeof cfg->rope_scaling_type - 1);
        if (n) memcpy(cfg->rope_scaling_type, stype.ptr, n);
        cfg->rope_scaling_type[n] = '\0';
        /* 'llama3' is accepted where its factors come as the rope_freqs tensor (Llama 3.1) */
        const bool llama3 = !strcmp(cfg->rope_scaling_type, "llama3") &&
                            l3c_gguf_find_tensor(g, "rope_freqs.weight") != NULL;
        if (strlen(cfg->rope_scaling_type) != stype.len ||
            (strcmp(cfg->rope_scaling_type, "none") && strcmp(cfg->rope_scaling_type, "linear") && !llama3))
            return l3c_fail(L3C_ERR_UNSUPPORTED,
                            "%s: llama.rope.scaling.type = '%.*s' is not supported (llama3c implements "
                            "'none', 'linear' and Llama 3.1 scaling through the rope_freqs tensor)",
                            g->path, (int)L3C_MIN(stype.len, 64), stype.ptr);
    }
    const char *fkey = "llama.rope.scaling.factor";
    if (!l3c_gguf_find(g, fkey) && l3c_gguf_find(g, "llama.rope.scale_linear")) fkey = "llama.rope.scale_linear";
    if ((st = l3c_gguf_get_f32(g, fkey, 1, &cfg->rope_scaling_factor))) return st;
    if (!(isfinite(cfg->rope_scaling_factor) && cfg->rope_scaling_factor >= 0.0f && cfg->rope_scaling_factor < 1e6f))
        return l3c_fail(L3C_ERR_FORMAT, "%s: key '%s' = %g must be in [0, 1e6) (0: no scaling)", g->path,
                        fkey, (double)cfg->rope_scaling_factor);
    cfg->rope_freq_scale = 1.0f;
    if (cfg->rope_scaling_factor > 0.0f && strcmp(cfg->rope_scaling_type, "none") != 0 &&
        strcmp(cfg->rope_scaling_type, "llama3") != 0)
        cfg->rope_freq_scale = 1.0f / cfg->rope_scaling_factor;
    return L3C_OK;
}
