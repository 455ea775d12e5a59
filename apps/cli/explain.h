/*
 * explain.h -- data gathered by `llama3c explain` (cmd_explain.c) and rendered as text there or
 * as one self-contained HTML page (explain_html.c). Everything here comes from the loaded file
 * and from a traced forward pass; nothing is hard-coded per model.
 */
#ifndef L3C_EXPLAIN_H
#define L3C_EXPLAIN_H

#include "llama3c.h"

#include <stdio.h>

/* Parameter counts per component, summed over the file's tensors by name. */
enum {
    EX_EMBED, EX_ATTN_Q, EX_ATTN_K, EX_ATTN_V, EX_ATTN_O, EX_FFN_GATE, EX_FFN_UP, EX_FFN_DOWN,
    EX_NORMS, EX_OUTPUT, EX_ROPE_FREQS, EX_OTHER, EX_N_COMPONENTS
};

typedef struct ex_params {
    int64_t total[EX_N_COMPONENTS];     /* whole model */
    int64_t per_layer[EX_N_COMPONENTS]; /* block 0 (every block has the same shapes) */
    int64_t sum;                        /* == sum of every tensor's elements */
} ex_params;

/* Meta's FFN rule: hidden = multiple_of * ceil(int(mult * int(2 * 4 * dim / 3)) / multiple_of). */
typedef struct ex_ffn_rule {
    int found;         /* 1 if some (multiplier, multiple_of) reproduces n_ff */
    double multiplier; /* ffn_dim_multiplier (1.0: none) */
    int multiple_of;
    int64_t four_d, two_thirds, scaled, rounded;
} ex_ffn_rule;

/* One traced op of the forward pass. */
typedef struct ex_step {
    char op[32];
    int layer;
    int64_t rows, cols;
    float head[8];        /* first values of the last row */
    int n_head;
    double mean, rms, min, max;
    double ms;            /* time since the previous op */
} ex_step;

/* Attention probabilities kept for the heat maps: [T x n_kv] for one (layer, head). */
typedef struct ex_attn {
    int layer, head;
    int64_t rows, cols;
    float *p;
} ex_attn;

typedef struct ex_top {
    int32_t id;
    float prob;
    char piece[64];
} ex_top;

typedef struct ex_report {
    const char *model_path;
    l3c_model_info info;
    const char *template_name;
    const char *scaling;          /* "llama3 (rope_freqs)" / metadata type / "none" */
    ex_ffn_rule ffn;
    ex_params params;
    struct { const char *name; int count; int64_t elements; size_t bytes; } types[16];
    int n_types;
    size_t kv_per_pos;            /* F16 cache bytes per position */
    int32_t kv_lengths[8];
    int n_kv_lengths;
    /* traced run (n_tokens == 0: none) */
    const char *prompt;
    int32_t *tokens;
    int64_t n_tokens;
    char (*pieces)[48];
    ex_step *steps;
    int64_t n_steps, cap_steps;
    ex_attn *attn;
    int n_attn;
    ex_top top[5];
    double total_ms;
    const float *logits_last;     /* borrowed from the context */
} ex_report;

/* Writes the HTML page; returns 0 or -1 (errno set by stdio). */
int explain_write_html(const ex_report *r, FILE *f);

/* "8.03B", "134.5M", "12.3K" */
void explain_fmt_count(int64_t n, char *buf, size_t cap);
/* "1.24 GiB", "576.0 KiB" */
void explain_fmt_bytes(double n, char *buf, size_t cap);
extern const char *const explain_component_names[EX_N_COMPONENTS];

#endif
