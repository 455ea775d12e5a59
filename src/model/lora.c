/*
 * lora.c -- LoRA adapter tables (lora.h): target names, create, free.
 */
#include "model/lora.h"

#include <stdlib.h>
#include <string.h>

static const char *const GGUF_NAMES[L3C_LORA_N_TARGETS] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
static const char *const SHORT_NAMES[L3C_LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *const PEFT_NAMES[L3C_LORA_N_TARGETS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

const char *l3c_lora_target_gguf_name(l3c_lora_target t) {
    return (unsigned)t < L3C_LORA_N_TARGETS ? GGUF_NAMES[t] : "?";
}
const char *l3c_lora_target_short_name(l3c_lora_target t) {
    return (unsigned)t < L3C_LORA_N_TARGETS ? SHORT_NAMES[t] : "?";
}
const char *l3c_lora_target_peft_name(l3c_lora_target t) {
    return (unsigned)t < L3C_LORA_N_TARGETS ? PEFT_NAMES[t] : "?";
}

/* n_in / n_out of target t's base matrix */
static void target_shape(const l3c_config *cfg, l3c_lora_target t, int64_t *n_in, int64_t *n_out) {
    int64_t d = cfg->n_embd, q = (int64_t)cfg->n_head * cfg->head_dim;
    int64_t kv = (int64_t)cfg->n_head_kv * cfg->head_dim, f = cfg->n_ff;
    switch (t) {
    case L3C_LORA_Q: *n_in = d, *n_out = q; break;
    case L3C_LORA_K:
    case L3C_LORA_V: *n_in = d, *n_out = kv; break;
    case L3C_LORA_O: *n_in = q, *n_out = d; break;
    case L3C_LORA_GATE:
    case L3C_LORA_UP: *n_in = d, *n_out = f; break;
    default: *n_in = f, *n_out = d; break;
    }
}

l3c_status l3c_lora_create(const l3c_config *cfg, unsigned targets, int32_t rank, float alpha,
                           l3c_lora_adapter **out) {
    *out = NULL;
    if (rank < 1 || rank > 4096)
        return l3c_fail(L3C_ERR_INVALID_ARG, "LoRA rank %d out of range (1..4096)", (int)rank);
    if (!(targets & ((1u << L3C_LORA_N_TARGETS) - 1)) || (targets >> L3C_LORA_N_TARGETS))
        return l3c_fail(L3C_ERR_INVALID_ARG, "LoRA targets: none of q,k,v,o,gate,up,down chosen");
    if (cfg->n_layer < 1)
        return l3c_fail(L3C_ERR_INVALID_ARG, "LoRA: model has no layers");
    l3c_lora_adapter *a = calloc(1, sizeof *a);
    if (!a) return l3c_fail(L3C_ERR_NOMEM, "out of memory (LoRA adapter)");
    a->n_layer = cfg->n_layer;
    a->rank = rank;
    a->alpha = alpha;
    a->targets = targets;
    a->mats = calloc((size_t)cfg->n_layer * L3C_LORA_N_TARGETS, sizeof *a->mats);
    size_t n = 0;
    for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
        if (!(targets & (1u << t))) continue;
        int64_t n_in, n_out;
        target_shape(cfg, (l3c_lora_target)t, &n_in, &n_out);
        n += (size_t)rank * (size_t)(n_in + n_out);
    }
    n *= (size_t)cfg->n_layer;
    a->arena = a->mats ? calloc(n, sizeof(float)) : NULL;
    if (!a->arena) {
        l3c_lora_free(a);
        return l3c_fail(L3C_ERR_NOMEM, "out of memory (LoRA adapter, %zu floats)", n);
    }
    a->n_floats = n;
    size_t off = 0;
    for (int32_t l = 0; l < cfg->n_layer; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
            if (!(targets & (1u << t))) continue;
            l3c_lora_mat *m = &a->mats[(size_t)l * L3C_LORA_N_TARGETS + t];
            target_shape(cfg, (l3c_lora_target)t, &m->n_in, &m->n_out);
            m->rank = rank;
            m->a = a->arena + off;
            off += (size_t)rank * (size_t)m->n_in;
            m->b = a->arena + off;
            off += (size_t)rank * (size_t)m->n_out;
        }
    *out = a;
    return L3C_OK;
}

void l3c_lora_free(l3c_lora_adapter *a) {
    if (!a) return;
    free(a->arena);
    free(a->mats);
    free(a);
}
