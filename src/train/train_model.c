/*
 * train_model.c -- the fp32 training model (train_model.h): parameter / gradient / AdamW
 * arenas, forward to the loss through the op pairs of train_ops.c, backward in reverse op
 * order, optional per-layer activation recomputation.
 *
 * One block, forward (x_in -> x_out; N = B*T rows), and what it saves (l3c_train_acts):
 *   xn1 = rmsnorm(x_in, attn_norm)          xn1, rstd1
 *   q, k, v = xn1 Wq^T, Wk^T, Wv^T; rope q, k   q, k (rotated), v
 *   ao = attention(q, k, v)                  alse (row log-sum-exp, not the T x T probabilities), ao
 *   x_mid = x_in + ao Wo^T                   x_mid
 *   xn2 = rmsnorm(x_mid, ffn_norm)           xn2, rstd2
 *   h = silu(xn2 Wg^T) * (xn2 Wu^T)          g, u, h
 *   x_out = x_mid + h Wd^T                   (x_out is the next block's x_in, kept in x_res)
 * Backward runs the same list upside down with one residual-gradient buffer dres updated in
 * place: the add ops' backward is "dres passes through", each rmsnorm backward adds its branch.
 *
 * Every matrix product is a "linear" (linear_fwd / linear_bwd): the engine's l3c_matmul on an
 * l3c_weight forward, the threaded per-tile kernels of train_kernels.c backward. In full mode
 * the weights are F32 views of the parameter arena and get dW; in LoRA mode they are the base
 * model's (any type, frozen: only dx) plus the adapter's branch s (x A^T) B^T, whose A and B
 * get gradients. Norms and attention use the op pairs of train_ops.c.
 */
#include "train/train_model.h"

#include "model/model.h"
#include "train/train_kernels.h"
#include "train/train_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct l3c_train_acts {
    float *xn1, *rstd1, *q, *k, *v, *alse, *ao, *x_mid, *xn2, *rstd2, *g, *u, *h;
    float *lu[L3C_TRAIN_N_MATS]; /* LoRA: x A^T [N x rank] of each adapted matrix, else NULL */
};

/* Backward scratch (one set, reused by every layer) and the forward's temporary. */
typedef struct bwd_bufs {
    float *dres, *dxn, *dao, *dq, *dk, *dv, *dh, *dg, *du, *tmp;
} bwd_bufs;

static int64_t q_dim(const l3c_train_model *m) { return (int64_t)m->cfg.n_head * m->head_dim; }
static int64_t kv_dim(const l3c_train_model *m) { return (int64_t)m->cfg.n_head_kv * m->head_dim; }

/* exact mode: rows of a quantized W dequantized per slice (<= 2^20 floats, <= 4096 rows) */
#define EXACT_FLOATS (1 << 20)
#define EXACT_ROWS 4096
static int64_t exact_rows(int64_t n_in) {
    const int64_t r = EXACT_FLOATS / n_in;
    return r < 1 ? 1 : r > EXACT_ROWS ? EXACT_ROWS : r;
}

/* ------------------------------------------------------------------ tensor table + arenas */

static void add_tensor(l3c_train_model *m, const char *name, int64_t rows, int64_t cols, size_t *off) {
    l3c_train_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->offset = *off;
    t->decay = rows > 1;
    *off += (size_t)(rows * cols);
}

/* F32 views of the parameter matrices (full mode). */
static void bind_mats(l3c_train_model *m) {
    const int64_t D = m->cfg.n_embd, F = m->cfg.n_ff, qd = q_dim(m), kd = kv_dim(m);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const l3c_train_layer *P = &m->p.layers[l];
        float *const w[L3C_TRAIN_N_MATS] = {P->wq, P->wk, P->wv, P->wo, P->w_gate, P->w_up, P->w_down};
        const int64_t in[L3C_TRAIN_N_MATS] = {D, D, D, qd, D, D, F};
        const int64_t out[L3C_TRAIN_N_MATS] = {qd, kd, kd, D, F, F, D};
        for (int t = 0; t < L3C_TRAIN_N_MATS; t++)
            m->mats[l * L3C_TRAIN_N_MATS + t] = l3c_trk_f32_weight(w[t], in[t], out[t], "train matrix");
    }
    m->head = l3c_trk_f32_weight(m->p.output, D, m->cfg.n_vocab, "output");
}

/* Points p's fields into arena by the tensor table (same order as build_table). */
static void bind(const l3c_train_model *m, float *arena, l3c_train_params *p) {
    const l3c_train_tensor *t = m->tensors;
    p->tok_embd = arena + (t++)->offset;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        l3c_train_layer *L = &p->layers[l];
        L->attn_norm = arena + (t++)->offset;
        L->wq = arena + (t++)->offset;
        L->wk = arena + (t++)->offset;
        L->wv = arena + (t++)->offset;
        L->wo = arena + (t++)->offset;
        L->ffn_norm = arena + (t++)->offset;
        L->w_gate = arena + (t++)->offset;
        L->w_up = arena + (t++)->offset;
        L->w_down = arena + (t++)->offset;
    }
    p->output_norm = arena + (t++)->offset;
    p->output = m->cfg.tied ? p->tok_embd : arena + (t++)->offset;
}

static l3c_status validate(const l3c_train_config *c) {
    if (c->n_vocab < 1 || c->n_embd < 1 || c->n_layer < 1 || c->n_head < 1 || c->n_head_kv < 1 ||
        c->n_ff < 1)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: every size must be positive (vocab %d, embd %d, "
                        "layers %d, heads %d, kv heads %d, ff %d)", c->n_vocab, c->n_embd, c->n_layer,
                        c->n_head, c->n_head_kv, c->n_ff);
    if (c->n_embd % c->n_head || c->n_head % c->n_head_kv)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: n_embd %d must divide by n_head %d and n_head by "
                        "n_head_kv %d", c->n_embd, c->n_head, c->n_head_kv);
    const int hd = c->n_embd / c->n_head;
    if (c->n_rot < 2 || c->n_rot > hd || c->n_rot % 2)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: n_rot %d must be even and in [2, head_dim %d]",
                        c->n_rot, hd);
    if (!(c->norm_eps > 0.0f) || !(c->rope_theta > 1.0f))
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: norm_eps %g must be > 0 and rope_theta %g > 1",
                        (double)c->norm_eps, (double)c->rope_theta);
    return L3C_OK;
}

/* The model shell: table, arenas (zeroed), bound pointers. */
static l3c_status alloc_model(const l3c_train_config *cfg, l3c_train_model **out) {
    *out = NULL;
    l3c_status st = validate(cfg);
    if (st) return st;
    l3c_train_model *m = l3c_calloc(1, sizeof *m);
    if (!m) return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the model");
    m->cfg = *cfg;
    m->head_dim = cfg->n_embd / cfg->n_head;
    const int64_t D = cfg->n_embd, V = cfg->n_vocab, F = cfg->n_ff, qd = q_dim(m), kd = kv_dim(m);
    m->tensors = l3c_calloc((size_t)cfg->n_layer * 9 + 3, sizeof *m->tensors);
    m->p.layers = l3c_calloc((size_t)cfg->n_layer, sizeof(l3c_train_layer));
    m->g.layers = l3c_calloc((size_t)cfg->n_layer, sizeof(l3c_train_layer));
    m->mats = l3c_calloc((size_t)cfg->n_layer * L3C_TRAIN_N_MATS, sizeof(l3c_weight));
    if (!m->tensors || !m->p.layers || !m->g.layers || !m->mats) goto nomem;
    size_t off = 0;
    char name[48];
    add_tensor(m, "token_embd.weight", V, D, &off);
    for (int l = 0; l < cfg->n_layer; l++) {
        static const char *const names[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                             "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
        const int64_t rows[9] = {1, qd, kd, kd, D, 1, F, F, D};
        const int64_t cols[9] = {D, D, D, D, qd, D, D, D, F};
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[i]);
            add_tensor(m, name, rows[i], cols[i], &off);
        }
    }
    add_tensor(m, "output_norm.weight", 1, D, &off);
    if (!cfg->tied) add_tensor(m, "output.weight", V, D, &off);
    m->n_params = off;
    m->params = l3c_calloc(off, sizeof(float));
    m->grads = l3c_calloc(off, sizeof(float));
    if (!m->params || !m->grads) goto nomem;
    bind(m, m->params, &m->p);
    bind(m, m->grads, &m->g);
    bind_mats(m);
    *out = m;
    return L3C_OK;
nomem:;
    const size_t n = m->n_params;
    l3c_train_model_free(m);
    return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for %zu parameters", n);
}

l3c_status l3c_train_model_create(const l3c_train_config *cfg_in, uint64_t seed, l3c_train_model **out) {
    *out = NULL;
    l3c_train_config cfg = *cfg_in;
    if (cfg.n_rot == 0 && cfg.n_head > 0) cfg.n_rot = cfg.n_embd / cfg.n_head;
    l3c_train_model *m;
    l3c_status st = alloc_model(&cfg, &m);
    if (st) return st;
    l3c_rng rng;
    l3c_rng_seed(&rng, seed);
    const double resid_scale = 1.0 / sqrt(2.0 * cfg.n_layer);
    for (int i = 0; i < m->n_tensors; i++) {
        const l3c_train_tensor *t = &m->tensors[i];
        float *w = m->params + t->offset;
        const size_t n = (size_t)(t->rows * t->cols);
        if (t->rows == 1) { /* norm vector */
            for (size_t j = 0; j < n; j++) w[j] = 1.0f;
            continue;
        }
        double sd = 1.0 / sqrt((double)t->cols); /* token_embd / output: 1/sqrt(n_embd) too */
        if (strstr(t->name, "attn_output") || strstr(t->name, "ffn_down")) sd *= resid_scale;
        for (size_t j = 0; j < n; j++) w[j] = (float)(sd * l3c_rng_normal(&rng));
    }
    *out = m;
    return L3C_OK;
}

/* Dequantizes GGUF tensor `name` into dst [rows x cols]; vectors are 1-D [cols]. */
static l3c_status load_tensor(const l3c_gguf *g, const char *name, int64_t rows, int64_t cols, float *dst) {
    const l3c_gguf_tensor *t = l3c_gguf_find_tensor(g, name);
    if (!t) return l3c_fail(L3C_ERR_FORMAT, "%s: missing tensor '%s'", g->path, name);
    const bool shape_ok = rows == 1 ? (t->n_dims == 1 && t->ne[0] == cols)
                                    : (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows);
    if (!shape_ok)
        return l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld] (%u dims), expected "
                        "[%lld, %lld]", g->path, name, (long long)t->ne[0], (long long)t->ne[1],
                        t->n_dims, (long long)cols, (long long)rows);
    const l3c_type_traits *tr = l3c_type_traits_ref((int)t->type);
    if (!tr || !tr->to_float || t->n_elements % tr->block_size)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s, which cannot be "
                        "dequantized", g->path, name, l3c_type_name((int)t->type));
    tr->to_float(t->data, dst, t->n_elements);
    for (int64_t i = 0; i < t->n_elements; i++)
        if (!isfinite(dst[i]))
            return l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s' element %lld is not finite", g->path,
                            name, (long long)i);
    return L3C_OK;
}

l3c_status l3c_train_model_from_gguf(const char *path, l3c_train_model **out) {
    *out = NULL;
    l3c_gguf *g = NULL;
    l3c_train_model *m = NULL;
    l3c_status st = l3c_gguf_open(path, &g);
    if (st) return st;
    l3c_config c;
    if ((st = l3c_config_from_gguf(g, &c))) goto fail;
    l3c_train_config tc = {.n_vocab = c.n_vocab, .n_embd = c.n_embd, .n_layer = c.n_layer,
                           .n_head = c.n_head, .n_head_kv = c.n_head_kv, .n_ff = c.n_ff,
                           .n_rot = c.n_rot, .rope_theta = c.rope_theta, .norm_eps = c.norm_eps,
                           .tied = l3c_gguf_find_tensor(g, "output.weight") == NULL,
                           .n_ctx = c.n_ctx_train};
    if ((st = alloc_model(&tc, &m))) goto fail;
    for (int i = 0; i < m->n_tensors; i++) {
        const l3c_train_tensor *t = &m->tensors[i];
        if ((st = load_tensor(g, t->name, t->rows, t->cols, m->params + t->offset))) goto fail;
    }
    const l3c_gguf_tensor *rf = l3c_gguf_find_tensor(g, "rope_freqs.weight");
    if (rf) {
        if (rf->n_dims != 1 || rf->ne[0] < c.n_rot / 2) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: tensor 'rope_freqs.weight' has %lld elements, expected "
                          "%d", path, (long long)rf->ne[0], c.n_rot / 2);
            goto fail;
        }
        m->rope_freqs = l3c_calloc((size_t)rf->ne[0], sizeof(float));
        if (!m->rope_freqs) {
            st = l3c_fail(L3C_ERR_NOMEM, "train: out of memory");
            goto fail;
        }
        if ((st = load_tensor(g, "rope_freqs.weight", 1, rf->ne[0], m->rope_freqs))) goto fail;
    }
    l3c_gguf_close(g);
    *out = m;
    return L3C_OK;
fail:
    l3c_train_model_free(m);
    l3c_gguf_close(g);
    return st;
}

l3c_status l3c_train_model_lora(const l3c_model *base, unsigned targets, int32_t rank, float alpha,
                                uint64_t seed, const l3c_lora_adapter *init, l3c_train_model **out) {
    *out = NULL;
    const l3c_config *c = &base->cfg;
    if (c->rope_freq_scale != 1.0f)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: training with linear rope scaling (factor %g) is not "
                        "supported", base->path, (double)c->rope_scaling_factor);
    if (!(alpha > 0.0f) || !isfinite(alpha))
        return l3c_fail(L3C_ERR_INVALID_ARG, "LoRA alpha %g must be a positive number", (double)alpha);
    l3c_train_model *m = l3c_calloc(1, sizeof *m);
    if (!m) return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the model");
    m->base = base;
    m->cfg = (l3c_train_config){.n_vocab = c->n_vocab, .n_embd = c->n_embd, .n_layer = c->n_layer,
                                .n_head = c->n_head, .n_head_kv = c->n_head_kv, .n_ff = c->n_ff,
                                .n_rot = c->n_rot, .rope_theta = c->rope_theta, .norm_eps = c->norm_eps,
                                .tied = base->w.tied_output, .n_ctx = c->n_ctx_train};
    m->head_dim = c->head_dim;
    m->rope_freqs = NULL;
    l3c_status st;
    if ((st = l3c_lora_create(c, targets, rank, alpha, &m->lora)) ||
        (st = l3c_lora_create(c, targets, rank, alpha, &m->dlora)))
        goto fail;
    m->lora_scale = alpha / (float)rank;
    m->params = m->lora->arena;
    m->grads = m->dlora->arena;
    m->n_params = m->lora->n_floats;
    m->p.layers = l3c_calloc((size_t)c->n_layer, sizeof(l3c_train_layer));
    m->g.layers = l3c_calloc((size_t)c->n_layer, sizeof(l3c_train_layer)); /* all NULL: frozen */
    m->mats = l3c_calloc((size_t)c->n_layer * L3C_TRAIN_N_MATS, sizeof(l3c_weight));
    m->tensors = l3c_calloc((size_t)c->n_layer * L3C_TRAIN_N_MATS * 2, sizeof *m->tensors);
    if (base->w.rope_freqs) {
        m->rope_freqs = l3c_malloc((size_t)(c->n_rot / 2) * sizeof(float));
        if (m->rope_freqs) memcpy(m->rope_freqs, base->w.rope_freqs, (size_t)(c->n_rot / 2) * sizeof(float));
    }
    if (!m->p.layers || !m->g.layers || !m->mats || !m->tensors || (base->w.rope_freqs && !m->rope_freqs)) {
        st = l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the model");
        goto fail;
    }
    /* frozen: norms and matrices are the base's (read only; no gradient pointers) */
    m->p.output_norm = (float *)base->w.output_norm;
    m->head = base->w.output;
    for (int l = 0; l < c->n_layer; l++) {
        const l3c_layer *bl = &base->w.layers[l];
        m->p.layers[l].attn_norm = (float *)bl->attn_norm;
        m->p.layers[l].ffn_norm = (float *)bl->ffn_norm;
        const l3c_weight *w[L3C_TRAIN_N_MATS] = {&bl->wq, &bl->wk, &bl->wv, &bl->wo,
                                                 &bl->w_gate, &bl->w_up, &bl->w_down};
        for (int t = 0; t < L3C_TRAIN_N_MATS; t++) {
            m->mats[l * L3C_TRAIN_N_MATS + t] = *w[t];
            const l3c_lora_mat *am = l3c_lora_get(m->lora, l, (l3c_lora_target)t);
            if (!am) continue;
            for (int ab = 0; ab < 2; ab++) {
                l3c_train_tensor *tt = &m->tensors[m->n_tensors++];
                snprintf(tt->name, sizeof tt->name, "blk.%d.%s.weight.lora_%c", l,
                         l3c_lora_target_gguf_name((l3c_lora_target)t), ab ? 'b' : 'a');
                tt->rows = ab ? am->n_out : am->rank;
                tt->cols = ab ? am->rank : am->n_in;
                tt->offset = (size_t)((ab ? am->b : am->a) - m->lora->arena);
                tt->decay = 1;
            }
        }
    }
    if (init) {
        if (init->n_floats != m->lora->n_floats || init->rank != rank || init->targets != targets ||
            init->n_layer != c->n_layer) {
            st = l3c_fail(L3C_ERR_INVALID_ARG, "LoRA: the initial adapter (rank %d, %zu values) does "
                          "not match rank %d with these targets (%zu values)", (int)init->rank,
                          init->n_floats, (int)rank, m->lora->n_floats);
            goto fail;
        }
        memcpy(m->lora->arena, init->arena, init->n_floats * sizeof(float));
    } else { /* PEFT's default: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(n_in), 1/sqrt(n_in)), B = 0 */
        l3c_rng rng;
        l3c_rng_seed(&rng, seed);
        for (int l = 0; l < c->n_layer; l++)
            for (int t = 0; t < L3C_TRAIN_N_MATS; t++) {
                const l3c_lora_mat *am = l3c_lora_get(m->lora, l, (l3c_lora_target)t);
                if (!am) continue;
                const double bound = 1.0 / sqrt((double)am->n_in);
                for (int64_t i = 0; i < am->rank * am->n_in; i++)
                    am->a[i] = (float)(bound * (2.0 * l3c_rng_uniform(&rng) - 1.0));
            }
    }
    *out = m;
    return L3C_OK;
fail:
    l3c_train_model_free(m);
    return st;
}

l3c_status l3c_train_model_set_threads(l3c_train_model *m, int n_threads) {
    if (n_threads < 1 || n_threads > 512)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: %d threads is out of range (1..512)", n_threads);
    l3c_threadpool *tp = NULL;
    if (n_threads > 1) {
        l3c_status st = l3c_threadpool_create(n_threads, &tp);
        if (st) return st;
    }
    l3c_threadpool_free(m->tp);
    m->tp = tp;
    return L3C_OK;
}

static void free_acts(l3c_train_model *m) {
    if (m->acts) free(m->acts[0].xn1); /* every set is one allocation */
    free(m->acts);
    free(m->x_res);
    free(m->scratch);
    free(m->ids);
    free(m->lora_tmp);
    free(m->drop_buf);
    free(m->exact_w);
    free(m->exact_y);
    free(m->exact_scratch);
    m->exact_w = m->exact_y = NULL;
    m->exact_scratch = NULL;
    free(m->mm_scratch);
    m->acts = NULL;
    m->x_res = m->scratch = m->lora_tmp = m->drop_buf = NULL;
    m->mm_scratch = NULL;
    m->ids = m->targets = m->pos = NULL;
    m->cap_tokens = 0;
}

void l3c_train_model_free(l3c_train_model *m) {
    if (!m) return;
    free_acts(m);
    free(m->tensors);
    free(m->p.layers);
    free(m->g.layers);
    free(m->mats);
    l3c_threadpool_free(m->tp);
    if (m->lora) { /* the arenas are the adapters' */
        l3c_lora_free(m->lora);
        l3c_lora_free(m->dlora);
    } else {
        free(m->params);
        free(m->grads);
    }
    free(m->adam_m);
    free(m->adam_v);
    free(m->rope_freqs);
    free(m);
}

/* ------------------------------------------------------------------ activation buffers */

int64_t l3c_train_xent_rows(const l3c_train_model *m, int64_t N) {
    int64_t r = L3C_TRAIN_XENT_FLOATS / m->cfg.n_vocab;
    r = r < 16 ? 16 : r > L3C_TRAIN_MM_ROWS ? L3C_TRAIN_MM_ROWS : r;
    return r < N ? r : N;
}

static int32_t lora_rank(const l3c_train_model *m) { return m->lora ? m->lora->rank : 0; }

static size_t per_layer_floats(const l3c_train_model *m, int64_t B, int64_t T) {
    const int64_t N = B * T, D = m->cfg.n_embd, F = m->cfg.n_ff, qd = q_dim(m), kd = kv_dim(m);
    return (size_t)(N * (3 * D + 2 + 2 * qd + 2 * kd + 3 * F) + N * m->cfg.n_head +
                    N * L3C_TRAIN_N_MATS * lora_rank(m));
}

size_t l3c_train_act_bytes_per_token(const l3c_train_model *m, int64_t T, int checkpoint) {
    const int64_t L = m->cfg.n_layer, D = m->cfg.n_embd, V = m->cfg.n_vocab;
    const size_t layer = per_layer_floats(m, 1, T) / (size_t)T; /* per token at length T */
    const size_t fl = (size_t)((L + 1) * D + D + 2) + (checkpoint ? 1 : (size_t)L) * layer;
    (void)V; /* the logits are a chunk of rows (l3c_train_xent_rows), not per token */
    return fl * sizeof(float);
}

/* The largest l3c_matmul scratch of any matrix at L3C_TRAIN_MM_ROWS tokens. */
static size_t mm_scratch_bytes(const l3c_train_model *m) {
    size_t mx = l3c_matmul_scratch_bytes(&m->head, L3C_TRAIN_MM_ROWS);
    for (int i = 0; i < m->cfg.n_layer * L3C_TRAIN_N_MATS; i++) {
        const l3c_weight *w = &m->mats[i];
        size_t b = l3c_matmul_scratch_bytes(w, L3C_TRAIN_MM_ROWS);
        if (b > mx) mx = b;
        if (m->lora) { /* the branch's two F32 products */
            const int32_t r = m->lora->rank;
            l3c_weight wa = l3c_trk_f32_weight(NULL, w->n_in, r, "lora_a");
            l3c_weight wb = l3c_trk_f32_weight(NULL, r, w->n_out, "lora_b");
            b = l3c_matmul_scratch_bytes(&wa, L3C_TRAIN_MM_ROWS);
            if (b > mx) mx = b;
            b = l3c_matmul_scratch_bytes(&wb, L3C_TRAIN_MM_ROWS);
            if (b > mx) mx = b;
        }
    }
    return mx;
}

static l3c_status reserve(l3c_train_model *m, int64_t B, int64_t T) {
    const int ckpt = m->checkpoint ? 1 : 0;
    const int keep = m->keep_logits ? 1 : 0;
    if (m->acts && m->B == B && m->T == T && m->cap_ckpt == ckpt && m->cap_keep == keep &&
        !!m->drop_buf == (m->lora && m->lora_dropout > 0.0f))
        return L3C_OK; /* same layout */
    free_acts(m);
    const int64_t N = B * T, D = m->cfg.n_embd, F = m->cfg.n_ff, V = m->cfg.n_vocab, qd = q_dim(m),
                  kd = kv_dim(m), half = m->cfg.n_rot / 2, L = m->cfg.n_layer, r = lora_rank(m);
    const int n_sets = ckpt ? 1 : m->cfg.n_layer;
    const size_t per = per_layer_floats(m, B, T);
    const int64_t wide = F > qd ? (F > D ? F : D) : (qd > D ? qd : D); /* widest n_out of a block */
    m->acts = l3c_calloc((size_t)n_sets, sizeof *m->acts);
    float *a = l3c_malloc((size_t)n_sets * per * sizeof(float));
    const int64_t R = l3c_train_xent_rows(m, N);
    m->x_res = l3c_malloc((size_t)((L + 1) * N * D + N * D + N + (keep ? N * V : 0) + R * V + N + 2 * N * half) *
                          sizeof(float));
    m->scratch = l3c_malloc((size_t)(3 * N * D + 2 * N * qd + 2 * N * kd + 3 * N * F) * sizeof(float));
    m->ids = l3c_malloc((size_t)N * 3 * sizeof(int32_t));
    m->lora_tmp = r ? l3c_malloc((size_t)(N * (wide > r ? wide : r)) * sizeof(float)) : NULL;
    const int drop = r && m->lora_dropout > 0.0f;
    if (m->exact && !m->exact_w) {
        const l3c_weight s = l3c_trk_f32_weight(NULL, wide, exact_rows(D), "exact slice");
        m->exact_w = l3c_malloc(EXACT_FLOATS * sizeof(float) > (size_t)wide * sizeof(float)
                                    ? EXACT_FLOATS * sizeof(float)
                                    : (size_t)wide * sizeof(float));
        m->exact_y = l3c_malloc((size_t)L3C_TRAIN_MM_ROWS * EXACT_ROWS * sizeof(float));
        const size_t sb = l3c_matmul_scratch_bytes(&s, L3C_TRAIN_MM_ROWS);
        m->exact_scratch = l3c_malloc(sb ? sb : 1);
        if (!m->exact_w || !m->exact_y || !m->exact_scratch) {
            free_acts(m);
            return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the exact mode");
        }
    }
    m->drop_buf = drop ? l3c_malloc((size_t)(N * wide) * sizeof(float)) : NULL;
    const size_t mmb = mm_scratch_bytes(m);
    m->mm_scratch = l3c_malloc(mmb ? mmb : 1);
    if (!m->acts || !a || !m->x_res || !m->scratch || !m->ids || (r && !m->lora_tmp) ||
        !m->mm_scratch || (drop && !m->drop_buf)) {
        free(a);
        free_acts(m);
        return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the activations of %lld x %lld tokens",
                        (long long)B, (long long)T);
    }
    for (int s = 0; s < n_sets; s++) {
        l3c_train_acts *A = &m->acts[s];
        A->xn1 = a, a += N * D;
        A->rstd1 = a, a += N;
        A->q = a, a += N * qd;
        A->k = a, a += N * kd;
        A->v = a, a += N * kd;
        A->alse = a, a += N * m->cfg.n_head;
        A->ao = a, a += N * qd;
        A->x_mid = a, a += N * D;
        A->xn2 = a, a += N * D;
        A->rstd2 = a, a += N;
        A->g = a, a += N * F;
        A->u = a, a += N * F;
        A->h = a, a += N * F;
        for (int t = 0; t < L3C_TRAIN_N_MATS; t++) A->lu[t] = r ? a : NULL, a += N * r;
    }
    float *x = m->x_res + (L + 1) * N * D;
    m->xn_f = x, x += N * D;
    m->rstd_f = x, x += N;
    m->logits = keep ? x : NULL, x += keep ? N * V : 0;
    m->xent_buf = x, x += R * V;
    m->lse = x, x += N;
    m->rope_cos = x, x += N * half;
    m->rope_sin = x;
    m->targets = m->ids + N;
    m->pos = m->ids + 2 * N;
    m->B = B;
    m->T = T;
    m->cap_tokens = N;
    m->cap_ckpt = ckpt;
    m->cap_keep = keep;
    return L3C_OK;
}

static bwd_bufs scratch_bufs(const l3c_train_model *m) {
    const int64_t N = m->B * m->T, D = m->cfg.n_embd, F = m->cfg.n_ff, qd = q_dim(m), kd = kv_dim(m);
    bwd_bufs s;
    float *x = m->scratch;
    s.dres = x, x += N * D;
    s.dxn = x, x += N * D;
    s.tmp = x, x += N * D;
    s.dao = x, x += N * qd;
    s.dq = x, x += N * qd;
    s.dk = x, x += N * kd;
    s.dv = x, x += N * kd;
    s.dh = x, x += N * F;
    s.dg = x, x += N * F;
    s.du = x;
    return s;
}

static void zero(float *x, int64_t n) { memset(x, 0, (size_t)n * sizeof(float)); }

/* ------------------------------------------------------------------ linear: y = x W^T (+ LoRA) */

/* Exact mode: y [n x w->n_out] = x W^T in fp32 for a quantized w, EXACT_SLICE rows of W at a
 * time dequantized (the type's to_float) into m->exact_w and multiplied by the F32 kernel. */

static void mm_exact(l3c_train_model *m, const l3c_weight *w, const float *x, float *y, int64_t n) {
    const l3c_type_traits *tr = l3c_type_traits_ref(w->type);
    const int64_t R = exact_rows(w->n_in);
    for (int64_t o0 = 0; o0 < w->n_out; o0 += R) {
        const int64_t r = w->n_out - o0 < R ? w->n_out - o0 : R;
        for (int64_t i = 0; i < r; i++)
            tr->to_float((const char *)w->data + (size_t)(o0 + i) * w->row_bytes, m->exact_w + i * w->n_in, w->n_in);
        const l3c_weight s = l3c_trk_f32_weight(m->exact_w, w->n_in, r, "exact slice");
        l3c_matmul(m->tp, &s, x, m->exact_y, n, m->exact_scratch);
        for (int64_t t = 0; t < n; t++)
            memcpy(y + t * w->n_out + o0, m->exact_y + t * r, (size_t)r * sizeof(float));
    }
}

/* y [N x w->n_out] = x [N x w->n_in] W^T with the engine's kernel, L3C_TRAIN_MM_ROWS rows a call
 * (exact mode: quantized weights dequantized, no 8-bit activations) */
static void mm(l3c_train_model *m, const l3c_weight *w, const float *x, float *y, int64_t N) {
    for (int64_t n0 = 0; n0 < N; n0 += L3C_TRAIN_MM_ROWS) {
        const int64_t n = N - n0 < L3C_TRAIN_MM_ROWS ? N - n0 : L3C_TRAIN_MM_ROWS;
        if (m->exact && w->type != L3C_TYPE_F32)
            mm_exact(m, w, x + n0 * w->n_in, y + n0 * w->n_out, n);
        else
            l3c_matmul(m->tp, w, x + n0 * w->n_in, y + n0 * w->n_out, n, m->mm_scratch);
    }
}

/* dx += dy W, fp32 dy against W's blocks read in place (a quantized base: no copy of W) */
static l3c_status base_dx(l3c_train_model *m, const l3c_weight *w, const float *dy, int64_t N,
                          float *dx) {
    return l3c_trk_matmul_dx(m->tp, w, dy, N, 1.0f, dx);
}

/* ------------------------------------------------------------------ LoRA dropout */

static uint64_t mix64(uint64_t z) { /* splitmix64's finalizer */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Element i of the mask of (layer l, matrix t) in the forward seeded by seed: 0 with probability
 * p, else 1 / (1 - p). A hash of (seed, l, t, i), so the backward and a checkpointed recompute
 * regenerate the forward's mask instead of storing it. */
static float drop_keep(uint64_t seed, int l, int t, int64_t i, float p) {
    const uint64_t h = mix64(seed ^ mix64(((uint64_t)l << 8 | (uint64_t)t) + 0x9e3779b97f4a7c15ull) ^
                             mix64((uint64_t)i * 0xd1b54a32d192ed03ull + 1));
    const float u = (float)(h >> 40) * (1.0f / 16777216.0f); /* [0, 1) in steps of 2^-24 */
    return u < p ? 0.0f : 1.0f / (1.0f - p);
}

void l3c_train_dropout_mask(const l3c_train_model *m, int l, int t, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = drop_keep(m->drop_fwd_seed, l, t, i, m->lora_dropout);
}

/* The input of matrix (l, t)'s LoRA branch: x itself, or with the last forward's dropout on, x
 * times its mask in m->drop_buf. */
static const float *lora_input(l3c_train_model *m, int l, int t, const float *x, int64_t n_in) {
    if (!m->drop_fwd) return x;
    const int64_t n = m->B * m->T * n_in;
    for (int64_t i = 0; i < n; i++) m->drop_buf[i] = x[i] * drop_keep(m->drop_fwd_seed, l, t, i, m->lora_dropout);
    return m->drop_buf;
}

/* Matrix t of layer l: y = x W^T, plus the adapter's s (x A^T) B^T (x A^T saved in lu; x through
 * the dropout mask when it is on). */
static void linear_fwd(l3c_train_model *m, int l, int t, const float *x, float *y, float *lu) {
    const int64_t N = m->B * m->T;
    const l3c_weight *w = &m->mats[l * L3C_TRAIN_N_MATS + t];
    mm(m, w, x, y, N);
    const l3c_lora_mat *am = m->lora ? l3c_lora_get(m->lora, l, (l3c_lora_target)t) : NULL;
    if (!am) return;
    const l3c_weight wa = l3c_trk_f32_weight(am->a, am->n_in, am->rank, "lora_a");
    const l3c_weight wb = l3c_trk_f32_weight(am->b, am->rank, am->n_out, "lora_b");
    mm(m, &wa, lora_input(m, l, t, x, am->n_in), lu, N);
    mm(m, &wb, lu, m->lora_tmp, N);
    l3c_axpy(y, m->lora_scale, m->lora_tmp, N * w->n_out);
}

/* Backward of linear_fwd for dy: dx += dy W (dx may be NULL), dW += dy^T x (full mode), and
 * the adapter's dB += s dy^T (x A^T), d(x A^T) = s dy B, dA += d(x A^T)^T x, dx += d(x A^T) A. */
static l3c_status linear_bwd(l3c_train_model *m, int l, int t, const float *x, const float *lu,
                             const float *dy, float *dx, float *dW) {
    const int64_t N = m->B * m->T;
    const l3c_weight *w = &m->mats[l * L3C_TRAIN_N_MATS + t];
    l3c_status st = L3C_OK;
    if (dx && (st = base_dx(m, w, dy, N, dx))) return st;
    if (dW && (st = l3c_trk_matmul_dw(m->tp, x, dy, N, w->n_in, w->n_out, 1.0f, dW))) return st;
    const l3c_lora_mat *am = m->lora ? l3c_lora_get(m->lora, l, (l3c_lora_target)t) : NULL;
    if (!am) return L3C_OK;
    const l3c_lora_mat *gm = l3c_lora_get(m->dlora, l, (l3c_lora_target)t);
    const int32_t r = am->rank;
    float *dlu = m->lora_tmp; /* [N x r] */
    const l3c_weight wa = l3c_trk_f32_weight(am->a, am->n_in, r, "lora_a");
    const l3c_weight wb = l3c_trk_f32_weight(am->b, r, am->n_out, "lora_b");
    zero(dlu, N * r);
    if ((st = l3c_trk_matmul_dw(m->tp, lu, dy, N, r, am->n_out, m->lora_scale, gm->b)) ||
        (st = l3c_trk_matmul_dx(m->tp, &wb, dy, N, m->lora_scale, dlu)) ||
        (st = l3c_trk_matmul_dw(m->tp, lora_input(m, l, t, x, am->n_in), dlu, N, am->n_in, r, 1.0f, gm->a)))
        return st;
    if (!dx) return L3C_OK;
    if (!m->drop_fwd) return l3c_trk_matmul_dx(m->tp, &wa, dlu, N, 1.0f, dx);
    /* through the dropout: dx += (d(x A^T) A) * mask */
    zero(m->drop_buf, N * am->n_in);
    if ((st = l3c_trk_matmul_dx(m->tp, &wa, dlu, N, 1.0f, m->drop_buf))) return st;
    for (int64_t i = 0; i < N * am->n_in; i++)
        dx[i] += m->drop_buf[i] * drop_keep(m->drop_fwd_seed, l, t, i, m->lora_dropout);
    return L3C_OK;
}

/* ------------------------------------------------------------------ one block */

/* x_out NULL: recompute the saved activations only (checkpointed backward). */
static l3c_status layer_forward(l3c_train_model *m, int l, const float *x_in, l3c_train_acts *a, float *tmp,
                                float *x_out) {
    const l3c_train_config *c = &m->cfg;
    const l3c_train_layer *W = &m->p.layers[l];
    const int64_t N = m->B * m->T, D = c->n_embd, F = c->n_ff;
    const int hd = m->head_dim;
    l3c_tr_rmsnorm_fwd(x_in, W->attn_norm, N, D, c->norm_eps, a->xn1, a->rstd1);
    linear_fwd(m, l, L3C_LORA_Q, a->xn1, a->q, a->lu[L3C_LORA_Q]);
    linear_fwd(m, l, L3C_LORA_K, a->xn1, a->k, a->lu[L3C_LORA_K]);
    linear_fwd(m, l, L3C_LORA_V, a->xn1, a->v, a->lu[L3C_LORA_V]);
    l3c_tr_rope_fwd(a->q, N, c->n_head, hd, c->n_rot, m->rope_cos, m->rope_sin);
    l3c_tr_rope_fwd(a->k, N, c->n_head_kv, hd, c->n_rot, m->rope_cos, m->rope_sin);
    l3c_status st = l3c_trk_attention_fwd(m->tp, a->q, a->k, a->v, m->pos, m->B, m->T, c->n_head, c->n_head_kv,
                                          hd, a->alse, a->ao);
    if (st) return st;
    linear_fwd(m, l, L3C_LORA_O, a->ao, tmp, a->lu[L3C_LORA_O]);
    memcpy(a->x_mid, x_in, (size_t)(N * D) * sizeof(float));
    l3c_tr_add_fwd(a->x_mid, tmp, N * D);
    l3c_tr_rmsnorm_fwd(a->x_mid, W->ffn_norm, N, D, c->norm_eps, a->xn2, a->rstd2);
    linear_fwd(m, l, L3C_LORA_GATE, a->xn2, a->g, a->lu[L3C_LORA_GATE]);
    linear_fwd(m, l, L3C_LORA_UP, a->xn2, a->u, a->lu[L3C_LORA_UP]);
    l3c_tr_swiglu_fwd(a->g, a->u, N * F, a->h);
    if (!x_out) { /* the down matrix's output is not needed again, its adapter's h A^T is */
        const l3c_lora_mat *am = m->lora ? l3c_lora_get(m->lora, l, L3C_LORA_DOWN) : NULL;
        if (am) {
            const l3c_weight wa = l3c_trk_f32_weight(am->a, am->n_in, am->rank, "lora_a");
            mm(m, &wa, lora_input(m, l, L3C_LORA_DOWN, a->h, am->n_in), a->lu[L3C_LORA_DOWN], N);
        }
        return L3C_OK;
    }
    linear_fwd(m, l, L3C_LORA_DOWN, a->h, tmp, a->lu[L3C_LORA_DOWN]);
    memcpy(x_out, a->x_mid, (size_t)(N * D) * sizeof(float));
    l3c_tr_add_fwd(x_out, tmp, N * D);
    return L3C_OK;
}

/* s->dres holds dL/dx_out on entry and dL/dx_in on return. G's pointers are NULL for frozen
 * weights (LoRA mode). */
static l3c_status layer_backward(l3c_train_model *m, int l, const float *x_in, const l3c_train_acts *a,
                                 const bwd_bufs *s) {
    const l3c_train_config *c = &m->cfg;
    const l3c_train_layer *W = &m->p.layers[l];
    const l3c_train_layer *G = &m->g.layers[l];
    const int64_t N = m->B * m->T, D = c->n_embd, F = c->n_ff, qd = q_dim(m), kd = kv_dim(m);
    const int hd = m->head_dim;
    l3c_status st;
    /* x_out = x_mid + h Wd^T: dres passes to x_mid (add backward), the branch gets dres too */
    zero(s->dh, N * F);
    if ((st = linear_bwd(m, l, L3C_LORA_DOWN, a->h, a->lu[L3C_LORA_DOWN], s->dres, s->dh, G->w_down)))
        return st;
    zero(s->dg, N * F);
    zero(s->du, N * F);
    l3c_tr_swiglu_bwd(a->g, a->u, s->dh, N * F, s->dg, s->du);
    zero(s->dxn, N * D);
    if ((st = linear_bwd(m, l, L3C_LORA_GATE, a->xn2, a->lu[L3C_LORA_GATE], s->dg, s->dxn, G->w_gate)) ||
        (st = linear_bwd(m, l, L3C_LORA_UP, a->xn2, a->lu[L3C_LORA_UP], s->du, s->dxn, G->w_up)))
        return st;
    l3c_tr_rmsnorm_bwd(a->x_mid, W->ffn_norm, a->rstd2, s->dxn, N, D, s->dres, G->ffn_norm);
    /* x_mid = x_in + ao Wo^T */
    zero(s->dao, N * qd);
    if ((st = linear_bwd(m, l, L3C_LORA_O, a->ao, a->lu[L3C_LORA_O], s->dres, s->dao, G->wo))) return st;
    zero(s->dq, N * qd);
    zero(s->dk, N * kd);
    zero(s->dv, N * kd);
    if ((st = l3c_trk_attention_bwd(m->tp, a->q, a->k, a->v, m->pos, a->alse, s->dao, m->B, m->T, c->n_head,
                                    c->n_head_kv, hd, s->dq, s->dk, s->dv)))
        return st;
    l3c_tr_rope_bwd(s->dq, N, c->n_head, hd, c->n_rot, m->rope_cos, m->rope_sin);
    l3c_tr_rope_bwd(s->dk, N, c->n_head_kv, hd, c->n_rot, m->rope_cos, m->rope_sin);
    zero(s->dxn, N * D);
    if ((st = linear_bwd(m, l, L3C_LORA_Q, a->xn1, a->lu[L3C_LORA_Q], s->dq, s->dxn, G->wq)) ||
        (st = linear_bwd(m, l, L3C_LORA_K, a->xn1, a->lu[L3C_LORA_K], s->dk, s->dxn, G->wk)) ||
        (st = linear_bwd(m, l, L3C_LORA_V, a->xn1, a->lu[L3C_LORA_V], s->dv, s->dxn, G->wv)))
        return st;
    l3c_tr_rmsnorm_bwd(x_in, W->attn_norm, a->rstd1, s->dxn, N, D, s->dres, G->attn_norm);
    return L3C_OK;
}

/* ------------------------------------------------------------------ model forward / backward */

/* token embeddings of ids [N] into x [N x D] */
static void embed(const l3c_train_model *m, const int32_t *ids, int64_t N, float *x) {
    const int64_t D = m->cfg.n_embd;
    if (m->base)
        for (int64_t n = 0; n < N; n++) l3c_get_row(&m->base->w.tok_embd, ids[n], x + n * D);
    else
        l3c_tr_embedding_fwd(m->p.tok_embd, D, ids, N, x);
}

l3c_status l3c_train_forward(l3c_train_model *m, const int32_t *ids, const int32_t *targets, int64_t B,
                             int64_t T, float *loss) {
    return l3c_train_forward_pos(m, ids, targets, NULL, B, T, loss);
}

l3c_status l3c_train_forward_pos(l3c_train_model *m, const int32_t *ids, const int32_t *targets,
                                 const int32_t *pos, int64_t B, int64_t T, float *loss) {
    *loss = 0.0f;
    const l3c_train_config *c = &m->cfg;
    /* bounds keep every buffer size (B*T*H*T floats of attention) far inside int64, and the
     * attention's (sequence, kv head) chunks inside one pool job */
    if (B < 1 || T < 1 || T > (1 << 16) || B * T > (1 << 24) || B * c->n_head_kv > L3C_MAX_CHUNKS)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: batch %lld x %lld tokens is out of range "
                        "(T <= 65536, B*T <= 2^24, B*n_head_kv <= %d)", (long long)B, (long long)T,
                        L3C_MAX_CHUNKS);
    const int64_t N = B * T, D = c->n_embd, V = c->n_vocab;
    for (int64_t n = 0; n < N; n++) {
        if (ids[n] < 0 || ids[n] >= V)
            return l3c_fail(L3C_ERR_INVALID_ARG, "train: token id %d at %lld is outside [0, %lld)",
                            ids[n], (long long)n, (long long)V);
        if (targets && (targets[n] < -1 || targets[n] >= V))
            return l3c_fail(L3C_ERR_INVALID_ARG, "train: target %d at %lld is outside [-1, %lld)",
                            targets[n], (long long)n, (long long)V);
        /* a packed row: positions count up by one inside an example and restart at 0 */
        const int64_t t = n % T;
        if (pos && !(pos[n] == 0 || (t > 0 && pos[n] == pos[n - 1] + 1)))
            return l3c_fail(L3C_ERR_INVALID_ARG, "train: position %d at row %lld, token %lld neither "
                            "restarts at 0 nor follows %d", pos[n], (long long)(n / T), (long long)t,
                            t > 0 ? pos[n - 1] : -1);
    }
    l3c_status st = reserve(m, B, T);
    if (st) return st;
    bwd_bufs s = scratch_bufs(m);
    memcpy(m->ids, ids, (size_t)N * sizeof(int32_t));
    for (int64_t n = 0; n < N; n++) {
        m->targets[n] = targets ? targets[n] : -1;
        m->pos[n] = pos ? pos[n] : (int32_t)(n % T);
    }
    m->n_valid = -1; /* no backward without targets */
    m->drop_fwd = m->lora && m->lora_dropout > 0.0f && m->dropout_on; /* the backward's too */
    m->drop_fwd_seed = m->dropout_seed;
    l3c_tr_rope_tables(m->pos, N, c->n_rot, c->rope_theta, m->rope_freqs, m->rope_cos, m->rope_sin);
    embed(m, m->ids, N, m->x_res);
    for (int l = 0; l < c->n_layer; l++)
        if ((st = layer_forward(m, l, m->x_res + l * N * D, &m->acts[m->checkpoint ? 0 : l], s.tmp,
                                m->x_res + (l + 1) * N * D)))
            return st;
    const float *xf = m->x_res + (int64_t)c->n_layer * N * D;
    l3c_tr_rmsnorm_fwd(xf, m->p.output_norm, N, D, c->norm_eps, m->xn_f, m->rstd_f);
    /* head + cross-entropy R rows at a time: the [N x V] logits are never all in memory */
    const int64_t R = l3c_train_xent_rows(m, N);
    int64_t nv = 0;
    double sum = 0.0;
    for (int64_t n0 = 0; n0 < N; n0 += R) {
        const int64_t r = N - n0 < R ? N - n0 : R;
        mm(m, &m->head, m->xn_f + n0 * D, m->xent_buf, r);
        if (m->logits) memcpy(m->logits + n0 * V, m->xent_buf, (size_t)(r * V) * sizeof(float));
        if (!targets) continue;
        int64_t c_nv = 0;
        sum += l3c_tr_xent_fwd(m->xent_buf, m->targets + n0, r, V, m->lse + n0, &c_nv);
        nv += c_nv;
    }
    if (!targets) return L3C_OK;
    m->n_valid = nv;
    *loss = nv ? (float)(sum / (double)nv) : 0.0f;
    return L3C_OK;
}

void l3c_train_zero_grad(l3c_train_model *m) { zero(m->grads, (int64_t)m->n_params); }

l3c_status l3c_train_backward(l3c_train_model *m) {
    return l3c_train_backward_n(m, m->n_valid);
}

l3c_status l3c_train_backward_n(l3c_train_model *m, int64_t n_norm) {
    if (!m->acts || m->n_valid < 0)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: backward needs a forward with targets first "
                        "(and runs once per forward)");
    if (n_norm < m->n_valid)
        return l3c_fail(L3C_ERR_INVALID_ARG, "train: the loss of %lld targets cannot be normalized by "
                        "%lld", (long long)m->n_valid, (long long)n_norm);
    const l3c_train_config *c = &m->cfg;
    const int64_t N = m->B * m->T, D = c->n_embd, V = c->n_vocab;
    bwd_bufs s = scratch_bufs(m);
    const float scale = n_norm ? 1.0f / (float)n_norm : 0.0f;
    l3c_status st;
    m->n_valid = -1;
    zero(s.dxn, N * D);
    /* the forward's chunks again: logits recomputed, turned into dlogits in place, then the head's
     * dx (and dW in full mode) of those rows */
    const int64_t R = l3c_train_xent_rows(m, N);
    float *dlogits = m->xent_buf;
    for (int64_t n0 = 0; n0 < N; n0 += R) {
        const int64_t r = N - n0 < R ? N - n0 : R;
        mm(m, &m->head, m->xn_f + n0 * D, dlogits, r);
        l3c_tr_xent_bwd(dlogits, m->lse + n0, m->targets + n0, r, V, scale, dlogits);
        if ((st = base_dx(m, &m->head, dlogits, r, s.dxn + n0 * D))) return st;
        if (m->g.output &&
            (st = l3c_trk_matmul_dw(m->tp, m->xn_f + n0 * D, dlogits, r, D, V, 1.0f, m->g.output)))
            return st;
    }
    zero(s.dres, N * D);
    l3c_tr_rmsnorm_bwd(m->x_res + (int64_t)c->n_layer * N * D, m->p.output_norm, m->rstd_f, s.dxn, N, D,
                       s.dres, m->g.output_norm);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        const float *x_in = m->x_res + l * N * D;
        l3c_train_acts *a = &m->acts[m->checkpoint ? 0 : l];
        if (m->checkpoint && (st = layer_forward(m, l, x_in, a, s.tmp, NULL))) return st;
        if ((st = layer_backward(m, l, x_in, a, &s))) return st;
    }
    if (m->g.tok_embd) l3c_tr_embedding_bwd(m->g.tok_embd, D, m->ids, N, s.dres);
    return L3C_OK;
}

/* ------------------------------------------------------------------ optimizer step */

l3c_status l3c_train_step(l3c_train_model *m, const l3c_adamw_params *p, int step, float *grad_norm,
                          float *lr_out) {
    if (!m->adam_m) {
        m->adam_m = l3c_calloc(m->n_params, sizeof(float));
        m->adam_v = l3c_calloc(m->n_params, sizeof(float));
        if (!m->adam_m || !m->adam_v) {
            free(m->adam_m), free(m->adam_v);
            m->adam_m = m->adam_v = NULL;
            return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the AdamW state");
        }
    }
    const double norm = l3c_grad_clip(m->grads, m->n_params, p->grad_clip);
    const float lr = l3c_lr_at(p, step);
    m->adam_t++;
    for (int i = 0; i < m->n_tensors; i++) {
        const l3c_train_tensor *t = &m->tensors[i];
        const size_t o = t->offset, n = (size_t)(t->rows * t->cols);
        l3c_adamw_update(m->params + o, m->grads + o, m->adam_m + o, m->adam_v + o, n, lr, p->beta1,
                         p->beta2, p->eps, t->decay ? p->weight_decay : 0.0f, m->adam_t);
    }
    if (grad_norm) *grad_norm = (float)norm;
    if (lr_out) *lr_out = lr;
    return L3C_OK;
}
