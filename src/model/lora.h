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
    float rs_alpha;      /* rsLoRA (PEFT use_rslora): the user's alpha, scale rs_alpha / sqrt(rank)
                          * == alpha / rank (alpha = rs_alpha sqrt(rank)); 0: plain LoRA */
    float dropout;       /* the lora_dropout it was trained with (PEFT config; no effect here) */
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

/* The factor of B A in W' = W + user_scale * factor * B A: alpha / (the matrix's rank), as
 * llama.cpp and PEFT compute it per matrix; alpha == 0 (a GGUF file without
 * adapter.lora.alpha): 1, as llama.cpp. */
static inline float l3c_lora_mat_scale(const l3c_lora_adapter *a, const l3c_lora_mat *m) {
    return a->alpha != 0.0f ? a->alpha / (float)m->rank : 1.0f;
}

/* ---------------------------------------------------------------- files (lora_io.c)
 *
 * l3c_lora_load: path is a GGUF LoRA file (llama.cpp's convert_lora_to_gguf.py or
 * l3c_lora_save_gguf: general.type "adapter", adapter.type "lora", optional
 * adapter.lora.alpha; tensors blk.N.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down>
 * .weight.lora_a (ne [n_in, rank]) and .lora_b (ne [rank, n_out]) of any type the type table can
 * read: F32, F16, BF16, Q8_0, ...) or a PEFT folder (adapter_config.json with peft_type LORA, r,
 * lora_alpha, use_rslora (scale alpha / sqrt(r): stored as alpha * sqrt(r)); DoRA, biases,
 * fan_in_fan_out, modules_to_save, alpha_pattern are refused; rank_pattern: the tensors' ranks; and
 * adapter_model.safetensors, F32 / F16 / BF16, names
 * base_model.model.model.layers.N.<self_attn|mlp>.<x>_proj.lora_A.weight [r, n_in] and
 * .lora_B.weight [n_out, r]; B rows of q_proj / k_proj are permuted into GGUF order). Every
 * matrix is checked against cfg (layer index, n_in, n_out, A and B of equal rank, both present);
 * ranks may differ between matrices (PEFT: they must equal r unless rank_pattern is given). Errors name the file and the
 * tensor or key. Memory: one arena as l3c_lora_create lays it out, matrices that are absent
 * taking no space.
 *
 * l3c_lora_save_gguf / l3c_lora_save_peft write F32 tensors (PEFT: B rows of q / k back in HF
 * order; adapter_config.json as peft 0.14 writes it, with base_model_name_or_path). Each file is
 * written to NAME.tmp and renamed when complete; on error nothing is left behind. The PEFT folder
 * is created when missing.
 */
l3c_status l3c_lora_load(const char *path, const l3c_config *cfg, l3c_lora_adapter **out);
/* The same for GGUF bytes in a caller's buffer (tests, fuzzing); name is for messages. */
l3c_status l3c_lora_load_gguf_memory(const void *buf, size_t size, const char *name, const l3c_config *cfg,
                                     l3c_lora_adapter **out);
l3c_status l3c_lora_save_gguf(const l3c_lora_adapter *a, const l3c_config *cfg, const char *path);
l3c_status l3c_lora_save_peft(const l3c_lora_adapter *a, const l3c_config *cfg, const char *dir,
                              const char *base_model_name);

/* The public handle (llama3c.h l3c_adapter): an adapter checked against one model's shapes. */
struct l3c_adapter {
    l3c_lora_adapter *lora;
    l3c_config cfg;      /* of the model it was loaded for */
    const l3c_model *model;
};

#endif /* L3C_LORA_H */
