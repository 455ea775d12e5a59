/*
 * adapter.c -- the public LoRA API (llama3c.h): l3c_adapter (an l3c_lora_adapter checked against
 * one model's shapes), setting adapters on a context, and converting adapter files.
 *
 * A context keeps an array of (adapter, scale) pairs in the order they were set; forward.c adds
 * each one's delta after the adapted matmuls. The one scratch buffer the deltas need
 * (act.lora_tmp, [n_batch x largest rank]) grows here, so l3c_decode still never allocates.
 */
#include "io/outfile.h"
#include "model/hf.h"
#include "model/lora.h"

#include <math.h>
#include <string.h>

l3c_status l3c_adapter_load(const l3c_model *model, const char *path, l3c_adapter **out) {
    if (out) *out = NULL;
    if (!model || !path || !out)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_adapter_load: NULL argument");
    l3c_adapter *ad = l3c_calloc(1, sizeof *ad);
    if (!ad) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
    l3c_status st = l3c_lora_load(path, &model->cfg, &ad->lora);
    if (st) {
        free(ad);
        return st;
    }
    ad->cfg = model->cfg;
    ad->model = model;
    *out = ad;
    return L3C_OK;
}

void l3c_adapter_free(l3c_adapter *ad) {
    if (!ad) return;
    l3c_lora_free(ad->lora);
    free(ad);
}

l3c_status l3c_context_set_adapter(l3c_context *ctx, const l3c_adapter *ad, float scale) {
    if (!ctx || !ad) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_context_set_adapter: NULL argument");
    if (!isfinite(scale))
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_context_set_adapter: scale %g is not finite",
                        (double)scale);
    if (ctx->model->shard && scale != 0.0f)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "l3c_context_set_adapter: LoRA adapters are not supported "
                                             "on a model split over ranks (--split); merge the adapter "
                                             "into the model first (llama3c export)");
    const l3c_config *c = &ctx->model->cfg;
    if (ad->model != ctx->model && (ad->cfg.n_layer != c->n_layer || ad->cfg.n_embd != c->n_embd ||
                                    ad->cfg.n_head != c->n_head ||
                                    ad->cfg.n_head_kv != c->n_head_kv || ad->cfg.n_ff != c->n_ff))
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "l3c_context_set_adapter: the adapter was loaded for a model of "
                        "other shapes");
    int i = 0;
    while (i < ctx->n_adapters && ctx->adapters[i].lora != ad->lora)
        i++;
    if (scale == 0.0f) { /* remove */
        if (i < ctx->n_adapters) {
            memmove(&ctx->adapters[i], &ctx->adapters[i + 1],
                    (size_t)(ctx->n_adapters - i - 1) * sizeof *ctx->adapters);
            ctx->n_adapters--;
        }
        return L3C_OK;
    }
    if (i == ctx->n_adapters) {
        l3c_activations *a = &ctx->act;
        if (ad->lora->rank > a->lora_rank) {
            size_t n;
            if (!l3c_mul_ok((size_t)ctx->n_batch, (size_t)ad->lora->rank * sizeof(float), &n))
                return l3c_fail(L3C_ERR_NOMEM, "l3c_context_set_adapter: scratch size overflows");
            float *t = l3c_realloc(a->lora_tmp, n);
            if (!t)
                return l3c_fail(L3C_ERR_NOMEM, "l3c_context_set_adapter: out of memory (%zu bytes)",
                                n);
            a->lora_tmp = t;
            a->lora_rank = ad->lora->rank;
        }
        l3c_ctx_adapter *arr =
            l3c_realloc(ctx->adapters, (size_t)(ctx->n_adapters + 1) * sizeof *arr);
        if (!arr) return l3c_fail(L3C_ERR_NOMEM, "l3c_context_set_adapter: out of memory");
        ctx->adapters = arr;
        ctx->adapters[ctx->n_adapters++] = (l3c_ctx_adapter){.lora = ad->lora, .scale = scale};
    } else {
        ctx->adapters[i].scale = scale;
    }
    return L3C_OK;
}

/* Hyperparameters of the model at path (GGUF or Hugging Face folder) without binding weights. */
static l3c_status read_config(const char *path, l3c_config *cfg, char *name, size_t cap) {
    l3c_hf *hf = NULL;
    l3c_gguf *g = NULL;
    l3c_status st = l3c_path_is_dir(path) ? l3c_hf_open(path, &hf, &g) : l3c_gguf_open(path, &g);
    if (!st) st = l3c_config_from_gguf(g, cfg);
    if (!st && name) {
        l3c_str s = {0};
        if (l3c_gguf_get_str(g, "general.name", 1, &s) == L3C_OK && s.ptr)
            snprintf(name, cap, "%.*s", (int)L3C_MIN(s.len, cap - 1), s.ptr);
        else
            snprintf(name, cap, "%s", path);
    }
    l3c_gguf_close(g);
    l3c_hf_free(hf);
    return st;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

l3c_status l3c_adapter_convert(const char *base_path, const char *in_path, const char *out_path,
                               const char *base_model_name) {
    if (!base_path || !in_path || !out_path)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_adapter_convert: NULL argument");
    l3c_config cfg;
    char name[512];
    l3c_status st = read_config(base_path, &cfg, name, sizeof name);
    if (st) return st;
    l3c_lora_adapter *a = NULL;
    if ((st = l3c_check_not_input(out_path, in_path, "adapter")) ||
        (st = l3c_check_not_input(out_path, base_path, "adapter")))
        return st;
    if ((st = l3c_lora_load(in_path, &cfg, &a))) return st;
    if (ends_with(out_path, ".gguf"))
        st = l3c_lora_save_gguf(a, &cfg, out_path);
    else
        st = l3c_lora_save_peft(a, &cfg, out_path, base_model_name ? base_model_name : name);
    l3c_lora_free(a);
    return st;
}
