/*
 * lora.h -- LoRA adapters: low-rank updates of a llama's matrices, W' = W + scale * B A,
 * scale = alpha / rank (times a user scale at inference, `--lora-scale`).
 *
 * One adapter holds, per layer and target matrix, A [rank x n_in] and B [n_out x rank] in fp32,
 * row-major, in the GGUF layout of the base model: the rows of attn_q / attn_k are in the order
 * llama.cpp's converter permutes them to (adjacent rope pairs), so B's rows of q and k follow
 * that order. PEFT files (Hugging Face layout) are converted on load and save (B rows of q_proj /
 * k_proj permuted / un-permuted with n_head / n_head_kv, as convert_lora_to_gguf.py does); GGUF
 * LoRA files (llama.cpp: general.type=adapter, adapter.type=lora, adapter.lora.alpha,
 * blk.N.<target>.weight.lora_a [rank x n_in] / .lora_b [n_out x rank]) are already in it.
 *
 * Memory: every A and B lives in one arena (`arena`, `n_floats`) in a fixed order: layer 0..L-1,
 * targets in enum order, A then B. The trainer uses the arena as its parameter vector (and
 * same-shaped arenas for gradients and AdamW moments).
 *
 * Ownership: an l3c_lora_adapter owns its arena and its mats table (l3c_lora_free).
 */
#ifndef L3C_LORA_H
#define L3C_LORA_H

#include "model/model.h"

typedef enum l3c_lora_target {
    L3C_LORA_Q = 0, /* attn_q      / self_attn.q_proj */
    L3C_LORA_K,     /* attn_k      / self_attn.k_proj */
    L3C_LORA_V,     /* attn_v      / self_attn.v_proj */
    L3C_LORA_O,     /* attn_output / self_attn.o_proj */
    L3C_LORA_GATE,  /* ffn_gate    / mlp.gate_proj */
    L3C_LORA_UP,    /* ffn_up      / mlp.up_proj */
    L3C_LORA_DOWN,  /* ffn_down    / mlp.down_proj */
    L3C_LORA_N_TARGETS
} l3c_lora_target;

/* One adapted matrix: a == NULL when the target is not adapted in this layer. */
typedef struct l3c_lora_mat {
    int32_t rank;
    int64_t n_in, n_out; /* the base matrix's (l3c_weight n_in / n_out) */
    float *a;            /* [rank x n_in], into the arena */
    float *b;            /* [n_out x rank], into the arena */
} l3c_lora_mat;

typedef struct l3c_lora_adapter {
    int32_t n_layer;
    int32_t rank;        /* the common rank (files with mixed ranks: the largest) */
    float alpha;         /* scale = alpha / rank */
    unsigned targets;    /* bit t set: target t adapted (in at least one layer) */
    l3c_lora_mat *mats;  /* [n_layer * L3C_LORA_N_TARGETS], mats[l * L3C_LORA_N_TARGETS + t] */
    float *arena;
    size_t n_floats;
} l3c_lora_adapter;

/* "attn_q", "attn_k", ..., "ffn_down" (GGUF) and "q", "k", "v", "o", "gate", "up", "down" (CLI). */
const char *l3c_lora_target_gguf_name(l3c_lora_target t);
const char *l3c_lora_target_short_name(l3c_lora_target t);
/* "self_attn.q_proj", ..., "mlp.down_proj" (PEFT module path under model.layers.N.). */
const char *l3c_lora_target_peft_name(l3c_lora_target t);

/* A zeroed adapter for a model of config cfg: targets (bit mask) in every layer, one rank. */
l3c_status l3c_lora_create(const l3c_config *cfg, unsigned targets, int32_t rank, float alpha,
                           l3c_lora_adapter **out);
void l3c_lora_free(l3c_lora_adapter *a);

/* The matrix of (layer, target), or NULL when it is not adapted. */
static inline l3c_lora_mat *l3c_lora_get(const l3c_lora_adapter *a, int32_t layer, l3c_lora_target t) {
    l3c_lora_mat *m = &a->mats[(size_t)layer * L3C_LORA_N_TARGETS + t];
    return m->a ? m : NULL;
}

#endif /* L3C_LORA_H */
