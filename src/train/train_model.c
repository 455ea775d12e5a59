/*
 * train_model.c -- the fp32 training model (train_model.h): parameter / gradient / AdamW
 * arenas; the forward to the loss and the backward as the engine's block (l3c_block_forward /
 * l3c_block_backward, src/model/block.c) run through a training backend table; head and
 * cross-entropy; optional per-layer activation recomputation.
 *
 * The block is not defined here: this file supplies the ops that differ from the CPU backend's
 * (train_backend_init) and the buffers (l3c_block_bufs over l3c_train_acts). What a layer saves
 * (N = B*T rows):
 *   xn1 = rmsnorm(x_in, attn_norm)          xn1, rstd1            (op rmsnorm with rstd)
 *   q, k, v = xn1 Wq^T, Wk^T, Wv^T; rope q, k   q, k (rotated), v
 *   ao = attention(q, k, v)                  alse (row log-sum-exp, not the T x T probabilities),
 * ao x_mid = x_in + ao Wo^T                   x_mid xn2 = rmsnorm(x_mid, ffn_norm)           xn2,
 * rstd2 h = silu(xn2 Wg^T) * (xn2 Wu^T)          g, u, h x_out = x_mid + h Wd^T (x_out is the next
 * block's x_in, kept in x_res)
 *
 * Every matrix product is the op matmul (mm: the engine's l3c_matmul on an l3c_weight, 512 rows
 * a call) plus, in LoRA mode, the op lora_deltas (the adapter's branch s (x A^T) B^T, x A^T kept);
 * its backward, matmul_bwd (linear_bwd), runs the threaded per-tile kernels of train_kernels.c.
 * In full mode the weights are F32 views of the parameter arena and get dW; in LoRA mode they are
 * the base model's (any type, frozen: only dx) and A, B get gradients. Norms, rope and swiglu
 * backward are the op pairs of train_ops.c.
 */
#include "train/train_model.h"

#include "io/gguf.h"
#include "model/block.h"
#include "model/model.h"
#include "train/train_kernels.h"
#include "train/train_ops.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct l3c_train_acts {
    float *xn1, *rstd1, *q, *k, *v, *alse, *ao, *x_mid, *xn2, *rstd2, *g, *u, *h;
    float *lu[L3C_TRAIN_N_MATS]; /* LoRA: x A^T [N x rank] of each adapted matrix, else NULL */
};

static void train_fwd_free(l3c_train_model *m); /* the block's view of the model (below) */

/* Backward scratch (one set, reused by every layer) and the forward's temporary. */
typedef struct bwd_bufs {
    float *dres;                                               /* [N x D] */
    float *dxn, *dao, *dq, *dk, *dv, *dh, *dg, *du, *tmp, *xo; /* [chunk x width] */
    float *dxf;                                                /* the head's [xent rows x D] */
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
    train_fwd_free(m);
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

int64_t l3c_train_chunk_rows(const l3c_train_model *m, int64_t B, int64_t T) {
    const int64_t ct = m->chunk_tokens > 0 ? m->chunk_tokens : L3C_TRAIN_CHUNK_TOKENS;
    const int64_t r = ct / T;
    return r < 1 ? 1 : r > B ? B : r;
}

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

/* the widest n_out of a block's matrices */
static int64_t widest(const l3c_train_model *m) {
    const int64_t D = m->cfg.n_embd, F = m->cfg.n_ff, qd = q_dim(m);
    return F > qd ? (F > D ? F : D) : (qd > D ? qd : D);
}

static l3c_status reserve(l3c_train_model *m, int64_t B, int64_t T) {
    const int ckpt = m->checkpoint ? 1 : 0;
    const int keep = m->keep_logits ? 1 : 0;
    const int64_t Bc = l3c_train_chunk_rows(m, B, T);
    if (m->acts && m->B == B && m->T == T && m->cap_rows == Bc && m->cap_ckpt == ckpt &&
        m->cap_keep == keep && !!m->drop_buf == (m->lora && m->lora_dropout > 0.0f))
        return L3C_OK; /* same layout */
    free_acts(m);
    const int64_t N = B * T, D = m->cfg.n_embd, F = m->cfg.n_ff, V = m->cfg.n_vocab, qd = q_dim(m),
                  kd = kv_dim(m), half = m->cfg.n_rot / 2, L = m->cfg.n_layer, r = lora_rank(m),
                  Nc = Bc * T;
    /* stored: every layer's activations of all N tokens; checkpointed: one chunk's */
    const int n_sets = ckpt ? 1 : m->cfg.n_layer;
    const int64_t set_tokens = ckpt ? Nc : N;
    const size_t per = per_layer_floats(m, ckpt ? Bc : B, T);
    const int64_t wide = widest(m);
    m->acts = l3c_calloc((size_t)n_sets, sizeof *m->acts);
    float *a = l3c_malloc((size_t)n_sets * per * sizeof(float));
    const int64_t R = l3c_train_xent_rows(m, N);
    m->x_res = l3c_malloc((size_t)((L + 1) * N * D + N * D + N + (keep ? N * V : 0) + R * V + N + 2 * N * half) *
                          sizeof(float));
    m->scratch = l3c_malloc((size_t)(N * D + Nc * (3 * D + 2 * qd + 2 * kd + 3 * F) + R * D) *
                            sizeof(float));
    m->ids = l3c_malloc((size_t)N * 3 * sizeof(int32_t));
    m->lora_tmp = r ? l3c_malloc((size_t)(Nc * (wide + r)) * sizeof(float))
                    : NULL; /* + the op lora's x A^T */
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
    m->drop_buf = drop ? l3c_malloc((size_t)(Nc * wide) * sizeof(float)) : NULL;
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
        const int64_t n = set_tokens;
        A->xn1 = a, a += n * D;
        A->rstd1 = a, a += n;
        A->q = a, a += n * qd;
        A->k = a, a += n * kd;
        A->v = a, a += n * kd;
        A->alse = a, a += n * m->cfg.n_head;
        A->ao = a, a += n * qd;
        A->x_mid = a, a += n * D;
        A->xn2 = a, a += n * D;
        A->rstd2 = a, a += n;
        A->g = a, a += n * F;
        A->u = a, a += n * F;
        A->h = a, a += n * F;
        for (int t = 0; t < L3C_TRAIN_N_MATS; t++)
            A->lu[t] = r ? a : NULL, a += n * r;
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
    m->cap_rows = Bc;
    m->c0 = 0;
    m->cn = Nc;
    m->cap_ckpt = ckpt;
    m->cap_keep = keep;
    return L3C_OK;
}

static bwd_bufs scratch_bufs(const l3c_train_model *m) {
    const int64_t N = m->B * m->T, D = m->cfg.n_embd, F = m->cfg.n_ff, qd = q_dim(m),
                  kd = kv_dim(m), Nc = m->cap_rows * m->T;
    bwd_bufs s;
    float *x = m->scratch;
    s.dres = x, x += N * D;
    s.dxn = x, x += Nc * D;
    s.tmp = x, x += Nc * D;
    s.xo = x, x += Nc * D; /* a recomputed layer's output (not needed again) */
    s.dao = x, x += Nc * qd;
    s.dq = x, x += Nc * qd;
    s.dk = x, x += Nc * kd;
    s.dv = x, x += Nc * kd;
    s.dh = x, x += Nc * F;
    s.dg = x, x += Nc * F;
    s.du = x, x += Nc * F;
    s.dxf = x;
    return s;
}

/* Tokens [c0, c0 + n) of a set of activations (a chunk of the stored ones, or the checkpointed
 * chunk-sized set at t0 = 0). */
static l3c_train_acts acts_at(const l3c_train_model *m, const l3c_train_acts *A, int64_t t0) {
    const int64_t D = m->cfg.n_embd, F = m->cfg.n_ff, qd = q_dim(m), kd = kv_dim(m),
                  H = m->cfg.n_head, r = lora_rank(m);
    l3c_train_acts v = {.xn1 = A->xn1 + t0 * D,
                        .rstd1 = A->rstd1 + t0,
                        .q = A->q + t0 * qd,
                        .k = A->k + t0 * kd,
                        .v = A->v + t0 * kd,
                        .alse = A->alse + t0 * H,
                        .ao = A->ao + t0 * qd,
                        .x_mid = A->x_mid + t0 * D,
                        .xn2 = A->xn2 + t0 * D,
                        .rstd2 = A->rstd2 + t0,
                        .g = A->g + t0 * F,
                        .u = A->u + t0 * F,
                        .h = A->h + t0 * F};
    for (int t = 0; t < L3C_TRAIN_N_MATS; t++)
        v.lu[t] = A->lu[t] ? A->lu[t] + t0 * r : NULL;
    return v;
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

/* The backward's dx reads a quantized W's blocks in the file mapping, while the forward reads its
 * packed copy (model/weights.c drops the mapping's pages once packed): after a backward has read
 * W, its whole pages are dropped from the mapping again (they fault back in from the page cache
 * at the next backward), so the base is not resident twice. Only a matrix with a packed copy in
 * a mapping of the file itself (not a read buffer, a Hugging Face folder or any other memory). */
static void release_file_pages(const l3c_train_model *m, const l3c_weight *w) {
    const l3c_gguf *g = m->base ? m->base->gguf : NULL;
    if (!g || !g->owns_map || m->base->hf || m->base->file_buf || !w->packed) return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), p = (uintptr_t)w->data,
                    n = (uintptr_t)(w->n_out * (int64_t)w->row_bytes);
    if (p < (uintptr_t)g->base || p + n > (uintptr_t)g->base + g->size) return;
    const uintptr_t lo = (p + page - 1) / page * page, hi = (p + n) / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
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

/* The input of matrix (l, t)'s LoRA branch for the chunk being run: x itself, or with the last
 * forward's dropout on, x times its mask in m->drop_buf (element i of the chunk is element
 * c0 n_in + i of the whole batch's input: the masks do not depend on the chunking). */
static const float *lora_input(l3c_train_model *m, int l, int t, const float *x, int64_t n_in) {
    if (!m->drop_fwd) return x;
    const int64_t n = m->cn * n_in, i0 = m->c0 * n_in;
    for (int64_t i = 0; i < n; i++)
        m->drop_buf[i] = x[i] * drop_keep(m->drop_fwd_seed, l, t, i0 + i, m->lora_dropout);
    return m->drop_buf;
}

/* Backward of matrix t of layer l (ops matmul + lora_deltas) for dy: dx += dy W (dx may be
 * NULL), dW += dy^T x (full mode), and the adapter's dB += s dy^T (x A^T), d(x A^T) = s dy B, dA +=
 * d(x A^T)^T x, dx += d(x A^T) A. */
static l3c_status linear_bwd(l3c_train_model *m, int l, int t, const float *x, const float *lu,
                             const float *dy, float *dx, float *dW) {
    const int64_t N = m->cn; /* the chunk's tokens */
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
    const int64_t i0 = m->c0 * am->n_in;
    for (int64_t i = 0; i < N * am->n_in; i++)
        dx[i] += m->drop_buf[i] * drop_keep(m->drop_fwd_seed, l, t, i0 + i, m->lora_dropout);
    return L3C_OK;
}

/* ------------------------------------------------------------------ the block's training backend
 */

/* The training model as l3c_block_forward sees it: an l3c_context whose backend is
 * g_train (below) and whose model holds the shapes and the matrices (m->mats, the norms) as the
 * engine's l3c_layer; the ops get &ctx and find the training model around it. */
struct l3c_train_fwd {
    l3c_context ctx; /* first member: (train_fwd *)ctx */
    l3c_model model;
    l3c_ctx_adapter adapter; /* LoRA mode: the trained adapter, scale 1 (m->lora_scale applies) */
    l3c_train_model *m;
    l3c_train_acts *a;  /* the layer being run: attention's row log-sum-exp, LoRA's x A^T */
    const float *k, *v; /* kv_store's: the batch's own keys and values */
    l3c_status st;      /* the first failure of an op (out of memory in the attention) */
};
typedef struct l3c_train_fwd train_fwd;

static train_fwd *tf(l3c_context *ctx) {
    return (train_fwd *)ctx;
}

/* keeps an op's first failure (ops cannot return one); the block's caller returns it */
static void note(train_fwd *f, l3c_status st) {
    if (st && !f->st) f->st = st;
}

static void train_matmul(l3c_context *ctx, const l3c_weight *w, const float *x, float *y,
                         int64_t T) {
    mm(tf(ctx)->m, w, x, y, T);
}

static void train_matmul_multi(l3c_context *ctx, int n, const l3c_weight *const *w, float *const *y,
                               const float *x, int64_t T, bool swiglu) {
    for (int i = 0; i < n; i++)
        mm(tf(ctx)->m, w[i], x, y[i], T);
    if (swiglu) l3c_tr_swiglu_fwd(y[0], y[1], T * w[0]->n_out, y[0]);
}

static void train_rope_tables(l3c_context *ctx, const int32_t *pos, int64_t T, float *cos_t,
                              float *sin_t) {
    const l3c_train_model *m = tf(ctx)->m;
    l3c_tr_rope_tables(pos, T, m->cfg.n_rot, m->cfg.rope_theta, m->rope_freqs, cos_t, sin_t);
}

/* the keys and values are the layer's saved k, v already: attention reads them there */
static void train_kv_store(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *k,
                           const float *v) {
    tf(ctx)->k = k;
    tf(ctx)->v = v;
}

/* causal attention of every packed example over its own tokens; keeps each row's log-sum-exp */
static void train_attention(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *q,
                            float *out, float *probs, int64_t n_kv) {
    train_fwd *f = tf(ctx);
    const l3c_train_model *m = f->m;
    const l3c_status st =
        l3c_trk_attention_fwd(m->tp, q, f->k, f->v, m->pos + m->c0, m->cn / m->T, m->T,
                              m->cfg.n_head, m->cfg.n_head_kv, m->head_dim, f->a->alse, out);
    note(f, st);
}

static void train_swiglu(l3c_context *ctx, float *h, const float *g, const float *u, int64_t n) {
    l3c_tr_swiglu_fwd(g, u, n, h);
}

/* y += scale * (x A^T) B^T, x A^T into xa [T x rank] */
static void lora_branch(l3c_train_model *m, const float *A, const float *B, int32_t rank,
                        int64_t n_in, int64_t n_out, float scale, const float *x, float *xa,
                        float *y, int64_t T) {
    const l3c_weight wa = l3c_trk_f32_weight(A, n_in, rank, "lora_a");
    const l3c_weight wb = l3c_trk_f32_weight(B, rank, n_out, "lora_b");
    mm(m, &wa, x, xa, T);
    mm(m, &wb, xa, m->lora_tmp, T);
    l3c_axpy(y, scale, m->lora_tmp, T * n_out);
}

static void train_lora(l3c_context *ctx, const float *A, const float *B, int32_t rank, int64_t n_in,
                       int64_t n_out, float scale, const float *x, float *y, int64_t T) {
    l3c_train_model *m = tf(ctx)->m;
    lora_branch(m, A, B, rank, n_in, n_out, scale, x, m->lora_tmp + m->cap_rows * m->T * widest(m),
                y, T);
}

/* the trained adapter's branch of matrix (l, t): its input through the dropout mask when on, x A^T
 * kept in the layer's saved activations for the backward */
static void train_lora_deltas(l3c_context *ctx, int32_t l, int t, const float *x, float *y,
                              int64_t T) {
    train_fwd *f = tf(ctx);
    l3c_train_model *m = f->m;
    const l3c_lora_mat *am = l3c_lora_get(m->lora, l, (l3c_lora_target)t);
    if (am)
        lora_branch(m, am->a, am->b, am->rank, am->n_in, am->n_out, m->lora_scale,
                    lora_input(m, l, t, x, am->n_in), f->a->lu[t], y, T);
}

/* ---- backward: train_ops.c's pairs and train_kernels.c's threaded kernels */

static void train_rmsnorm_bwd(l3c_context *ctx, const float *x, const float *g, const float *rstd,
                              const float *dy, float *dx, float *dg, int64_t T, int64_t n) {
    l3c_tr_rmsnorm_bwd(x, g, rstd, dy, T, n, dx, dg);
}

static void train_matmul_bwd(l3c_context *ctx, int32_t l, int t, const l3c_weight *w,
                             const float *x, const float *dy, float *dx, float *dW, int64_t T) {
    train_fwd *f = tf(ctx);
    note(f, linear_bwd(f->m, l, t, x, f->a->lu[t], dy, dx, dW));
}

static void train_rope_bwd(l3c_context *ctx, float *dx, int64_t T, int n_heads, const float *cos_t,
                           const float *sin_t) {
    const l3c_train_model *m = tf(ctx)->m;
    l3c_tr_rope_bwd(dx, T, n_heads, m->head_dim, m->cfg.n_rot, cos_t, sin_t);
}

static void train_attention_bwd(l3c_context *ctx, int32_t layer, const l3c_batch *b, const float *q,
                                const float *k, const float *v, const float *dout, float *dq,
                                float *dk, float *dv) {
    train_fwd *f = tf(ctx);
    const l3c_train_model *m = f->m;
    note(f, l3c_trk_attention_bwd(m->tp, q, k, v, m->pos + m->c0, f->a->alse, dout, m->cn / m->T,
                                  m->T, m->cfg.n_head, m->cfg.n_head_kv, m->head_dim, dq, dk, dv));
}

static void train_swiglu_bwd(l3c_context *ctx, const float *g, const float *u, const float *dh,
                             float *dg, float *du, int64_t n) {
    l3c_tr_swiglu_bwd(g, u, dh, n, dg, du);
}

/* The CPU backend's get_rows, gather_rows, rmsnorm (with rstd), rope, add and stage; the rest
 * above. */
static l3c_backend g_train;
static pthread_once_t g_train_once = PTHREAD_ONCE_INIT;

static void train_backend_init(void) {
    g_train = l3c_backend_cpu;
    g_train.name = "train";
    g_train.matmul = train_matmul;
    g_train.matmul_multi = train_matmul_multi;
    g_train.rope_tables = train_rope_tables;
    g_train.kv_store = train_kv_store;
    g_train.attention = train_attention;
    g_train.swiglu = train_swiglu;
    g_train.lora = train_lora;
    g_train.lora_deltas = train_lora_deltas;
    g_train.rmsnorm_bwd = train_rmsnorm_bwd;
    g_train.matmul_bwd = train_matmul_bwd;
    g_train.rope_bwd = train_rope_bwd;
    g_train.attention_bwd = train_attention_bwd;
    g_train.swiglu_bwd = train_swiglu_bwd;
}

/* m->fwd, made at the first forward: the context and model l3c_block_forward reads. The matrices'
 * views (m->mats) and the norms do not move after creation. */
static l3c_status train_fwd_bind(l3c_train_model *m) {
    if (m->fwd) return L3C_OK;
    const l3c_train_config *c = &m->cfg;
    train_fwd *f = l3c_calloc(1, sizeof *f);
    l3c_layer *layers = l3c_calloc((size_t)c->n_layer, sizeof *layers);
    if (!f || !layers) {
        free(f);
        free(layers);
        return l3c_fail(L3C_ERR_NOMEM, "train: out of memory for the model");
    }
    pthread_once(&g_train_once, train_backend_init);
    for (int l = 0; l < c->n_layer; l++) {
        l3c_layer *L = &layers[l];
        const l3c_weight *w = &m->mats[l * L3C_TRAIN_N_MATS];
        L->attn_norm = m->p.layers[l].attn_norm;
        L->ffn_norm = m->p.layers[l].ffn_norm;
        L->wq = w[L3C_LORA_Q], L->wk = w[L3C_LORA_K], L->wv = w[L3C_LORA_V], L->wo = w[L3C_LORA_O];
        L->w_gate = w[L3C_LORA_GATE], L->w_up = w[L3C_LORA_UP], L->w_down = w[L3C_LORA_DOWN];
    }
    l3c_config *mc = &f->model.cfg;
    mc->n_vocab = c->n_vocab, mc->n_embd = c->n_embd, mc->n_layer = c->n_layer;
    mc->n_head = c->n_head, mc->n_head_kv = c->n_head_kv, mc->head_dim = m->head_dim,
    mc->n_ff = c->n_ff;
    mc->n_rot = c->n_rot, mc->rope_theta = c->rope_theta, mc->norm_eps = c->norm_eps;
    mc->rope_freq_scale = 1.0f;
    f->model.w.layers = layers;
    f->model.w.tok_embd =
        m->base ? m->base->w.tok_embd
                : l3c_trk_f32_weight(m->p.tok_embd, c->n_embd, c->n_vocab, "token_embd");
    f->model.w.output_norm = m->p.output_norm;
    f->model.w.output = m->head;
    f->model.w.rope_freqs = m->rope_freqs;
    f->model.w.tied_output = c->tied;
    f->model.layer0 = 0;
    f->model.layer1 = c->n_layer;
    f->model.backend = &g_train;
    f->ctx.model = &f->model;
    f->ctx.backend = &g_train;
    f->ctx.tp = m->tp;
    f->adapter.lora = m->lora;
    f->adapter.scale = 1.0f;
    f->ctx.adapters = m->lora ? &f->adapter : NULL;
    f->ctx.n_adapters = m->lora ? 1 : 0;
    f->m = m;
    m->fwd = f;
    return L3C_OK;
}

static void train_fwd_free(l3c_train_model *m) {
    if (!m->fwd) return;
    free(m->fwd->model.w.layers);
    free(m->fwd);
    m->fwd = NULL;
}

/* The block's buffers of layer l's saved activations a (x_in, proj, x_out: see layer_forward). */
static l3c_block_bufs block_bufs(const l3c_train_model *m, const float *x_in, l3c_train_acts *a,
                                 float *proj, float *x_out) {
    return (l3c_block_bufs){.x_in = x_in,
                            .x_mid = a->x_mid,
                            .x_out = x_out,
                            .xn1 = a->xn1,
                            .xn2 = a->xn2,
                            .rstd1 = a->rstd1,
                            .rstd2 = a->rstd2,
                            .q = a->q,
                            .k = a->k,
                            .v = a->v,
                            .att_out = a->ao,
                            .proj = proj,
                            .g = a->g,
                            .u = a->u,
                            .h = a->h,
                            .rope_cos = m->rope_cos + m->c0 * (m->cfg.n_rot / 2),
                            .rope_sin = m->rope_sin + m->c0 * (m->cfg.n_rot / 2)};
}

/* the chunk being run as one l3c_batch of whole rows (of packed examples) */
static l3c_batch train_batch(const l3c_train_model *m) {
    return (l3c_batch){.n_tokens = (int32_t)m->cn, .tokens = m->ids + m->c0, .pos = m->pos + m->c0};
}

/* the layer ops run tokens [c0, c0 + n) from now on */
static void set_chunk(l3c_train_model *m, int64_t c0, int64_t n) {
    m->c0 = c0;
    m->cn = n;
}

/* Layer l of the chunk set_chunk chose through l3c_block_forward: x_in -> x_out (the chunk's
 * rows), keeping a's activations (the checkpointed backward recomputes them with x_out a
 * scratch buffer). */
static l3c_status layer_forward(l3c_train_model *m, int l, const float *x_in, l3c_train_acts *a,
                                float *proj, float *x_out) {
    train_fwd *f = m->fwd;
    const l3c_batch b = train_batch(m);
    const l3c_block_bufs s = block_bufs(m, x_in, a, proj, x_out);
    f->ctx.tp = m->tp; /* l3c_train_model_set_threads may have changed it */
    f->a = a;
    f->st = L3C_OK;
    l3c_block_forward(&f->ctx, l, &b, &s);
    return f->st;
}

/* Its backward (l3c_block_backward) on the same chunk: s->dres (all N rows; the chunk's are
 * used) holds dL/dx_out on entry and dL/dx_in on return;
 * the parameters' gradients are added into m->g (NULL there: frozen, LoRA mode) and the
 * adapter's into m->dlora. */
static l3c_status layer_backward(l3c_train_model *m, int l, const float *x_in, l3c_train_acts *a,
                                 const bwd_bufs *s) {
    train_fwd *f = m->fwd;
    const l3c_batch b = train_batch(m);
    const l3c_block_bufs fb = block_bufs(m, x_in, a, s->tmp, NULL);
    const l3c_train_layer *g = &m->g.layers[l];
    const l3c_block_grads G = {.attn_norm = g->attn_norm,
                               .ffn_norm = g->ffn_norm,
                               .w = {g->wq, g->wk, g->wv, g->wo, g->w_gate, g->w_up, g->w_down}};
    const l3c_block_dbufs d = {.dres = s->dres + m->c0 * m->cfg.n_embd,
                               .dxn = s->dxn,
                               .dao = s->dao,
                               .dq = s->dq,
                               .dk = s->dk,
                               .dv = s->dv,
                               .dh = s->dh,
                               .dg = s->dg,
                               .du = s->du};
    f->ctx.tp = m->tp;
    f->a = a;
    f->st = L3C_OK;
    l3c_block_backward(&f->ctx, l, &b, &fb, &G, &d);
    return f->st;
}

/* ------------------------------------------------------------------ model forward / backward */

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
    if (st || (st = train_fwd_bind(m))) return st;
    l3c_context *ctx = &m->fwd->ctx;
    const l3c_backend *be = ctx->backend;
    bwd_bufs s = scratch_bufs(m);
    memcpy(m->ids, ids, (size_t)N * sizeof(int32_t));
    for (int64_t n = 0; n < N; n++) {
        m->targets[n] = targets ? targets[n] : -1;
        m->pos[n] = pos ? pos[n] : (int32_t)(n % T);
    }
    m->n_valid = -1; /* no backward without targets */
    m->drop_fwd = m->lora && m->lora_dropout > 0.0f && m->dropout_on; /* the backward's too */
    m->drop_fwd_seed = m->dropout_seed;
    /* the op sequence of l3c_decode (forward.c) on every token, through the training backend */
    be->rope_tables(ctx, m->pos, N, m->rope_cos, m->rope_sin);
    be->get_rows(ctx, &m->fwd->model.w.tok_embd, m->ids, N, m->x_res);
    /* each layer a chunk of whole rows at a time: stored activations at the chunk's offset in
     * the layer's set, checkpointed ones in the one chunk-sized set */
    const int64_t Nc = m->cap_rows * T;
    for (int l = 0; l < c->n_layer; l++)
        for (int64_t c0 = 0; c0 < N; c0 += Nc) {
            set_chunk(m, c0, N - c0 < Nc ? N - c0 : Nc);
            l3c_train_acts a = acts_at(m, &m->acts[m->checkpoint ? 0 : l], m->checkpoint ? 0 : c0);
            if ((st = layer_forward(m, l, m->x_res + l * N * D + c0 * D, &a, s.tmp,
                                    m->x_res + (l + 1) * N * D + c0 * D)))
                return st;
        }
    const float *xf = m->x_res + (int64_t)c->n_layer * N * D;
    be->rmsnorm(ctx, xf, m->p.output_norm, m->xn_f, m->rstd_f, N, D, c->norm_eps);
    /* head + cross-entropy R rows at a time: the [N x V] logits are never all in memory */
    const int64_t R = l3c_train_xent_rows(m, N);
    int64_t nv = 0;
    double sum = 0.0;
    for (int64_t n0 = 0; n0 < N; n0 += R) {
        const int64_t r = N - n0 < R ? N - n0 : R;
        be->matmul(ctx, &m->head, m->xn_f + n0 * D, m->xent_buf, r);
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
    zero(s.dres, N * D);
    /* the forward's chunks again: logits recomputed, turned into dlogits in place, then the head's
     * dx (and dW in full mode) of those rows and the final norm's backward into dres */
    const int64_t R = l3c_train_xent_rows(m, N);
    const float *xf = m->x_res + (int64_t)c->n_layer * N * D;
    float *dlogits = m->xent_buf;
    for (int64_t n0 = 0; n0 < N; n0 += R) {
        const int64_t r = N - n0 < R ? N - n0 : R;
        mm(m, &m->head, m->xn_f + n0 * D, dlogits, r);
        l3c_tr_xent_bwd(dlogits, m->lse + n0, m->targets + n0, r, V, scale, dlogits);
        zero(s.dxf, r * D);
        if ((st = base_dx(m, &m->head, dlogits, r, s.dxf))) return st;
        if (m->g.output &&
            (st = l3c_trk_matmul_dw(m->tp, m->xn_f + n0 * D, dlogits, r, D, V, 1.0f, m->g.output)))
            return st;
        l3c_tr_rmsnorm_bwd(xf + n0 * D, m->p.output_norm, m->rstd_f + n0, s.dxf, r, D,
                           s.dres + n0 * D, m->g.output_norm);
    }
    release_file_pages(m, &m->head);
    /* layer by layer, the forward's chunks: with checkpointing the chunk's activations are
     * recomputed from its input right before its backward */
    const int64_t Nc = m->cap_rows * m->T;
    for (int l = c->n_layer - 1; l >= 0; l--) {
        for (int64_t c0 = 0; c0 < N; c0 += Nc) {
            set_chunk(m, c0, N - c0 < Nc ? N - c0 : Nc);
            const float *x_in = m->x_res + l * N * D + c0 * D;
            l3c_train_acts a = acts_at(m, &m->acts[m->checkpoint ? 0 : l], m->checkpoint ? 0 : c0);
            if (m->checkpoint && (st = layer_forward(m, l, x_in, &a, s.tmp, s.xo))) return st;
            if ((st = layer_backward(m, l, x_in, &a, &s))) return st;
        }
        for (int t = 0; t < L3C_TRAIN_N_MATS; t++)
            release_file_pages(m, &m->mats[l * L3C_TRAIN_N_MATS + t]);
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
