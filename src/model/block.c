/*
 * block.c -- l3c_block_forward (block.h): one transformer block as a fixed sequence of backend
 * ops. The sequence, with the op of each step and the trace name it reports
 * (docs/ARCHITECTURE.md has the shapes and the trace contract):
 *
 *   xn1 = rmsnorm(x_in) * attn_norm                         rmsnorm       "attn_norm"
 *   q = xn1 @ Wq^T, k = xn1 @ Wk^T, v = xn1 @ Wv^T          matmul_multi
 *   rope(q), rope(k)                                        rope          "q" "k" "v"
 *   store k, v (decode: cache[seq][l][pos])                 kv_store
 *   att_out = softmax(q . K / sqrt(hd)) . V                 attention     "attn_scores" "attn_out"
 *   proj = att_out @ Wo^T                                   matmul        "attn_proj"
 *   x_mid = x_in + proj                                     add           "ffn_inp"
 *   xn2 = rmsnorm(x_mid) * ffn_norm                         rmsnorm       "ffn_norm"
 *   g = xn2 @ Wgate^T, u = xn2 @ Wup^T                      matmul_multi  "ffn_gate" "ffn_up"
 *   h = silu(g) * u                                         swiglu        "ffn_act"
 *   proj = h @ Wdown^T                                      matmul        "ffn_down"
 *   x_out = x_mid + proj                                    add           "l_out"
 *
 * Adapters (LoRA) add their delta right after the matmul of each adapted matrix (op
 * lora_deltas; q and k before rope, as their weights' rows are). When h is computed in place
 * (h == g), nothing traces and no adapter touches gate / up, the gate / up matmul_multi finishes
 * h = silu(g) * u in the same pass (gate and up are not traced then).
 *
 * l3c_block_backward runs the list upside down with one residual gradient dres updated in place:
 * an add's backward is "dres passes through", each rmsnorm's backward adds its branch into it.
 */
#include "model/block.h"

#include "model/lora.h"
#include "model/model.h"

#include <string.h>

#define TRACE(op, layer, data, rows, cols)                                                         \
    do {                                                                                           \
        if (ctx->trace)                                                                            \
            ctx->trace(ctx->trace_user, op, layer, data, (int64_t)(rows), (int64_t)(cols));        \
    } while (0)

/* 1 when some adapter set on the context adapts (layer l, target t) */
static bool has_lora(const l3c_context *ctx, int32_t l, l3c_lora_target t) {
    for (int i = 0; i < ctx->n_adapters; i++)
        if (l3c_lora_get(ctx->adapters[i].lora, l, t)) return true;
    return false;
}

void l3c_block_forward(l3c_context *ctx, int32_t l, const l3c_batch *b, const l3c_block_bufs *s) {
    const l3c_backend *be = ctx->backend;
    const l3c_config *c = &ctx->model->cfg;
    const l3c_layer *L = &ctx->model->w.layers[l];
    const int64_t T = b->n_tokens, E = c->n_embd, F = c->n_ff;
    const int64_t q_dim = (int64_t)c->n_head * c->head_dim,
                  kv_dim = (int64_t)c->n_head_kv * c->head_dim;
    const bool ad = ctx->n_adapters > 0;

    /* ---- attention block */
    be->rmsnorm(ctx, s->x_in, L->attn_norm, s->xn1, s->rstd1, T, E, c->norm_eps);
    TRACE("attn_norm", l, s->xn1, T, E);
    /* q [T x q_dim], k, v [T x kv_dim]: one pass over xn1 */
    const l3c_weight *qkv_w[3] = {&L->wq, &L->wk, &L->wv};
    float *const qkv_y[3] = {s->q, s->k, s->v};
    be->matmul_multi(ctx, 3, qkv_w, qkv_y, s->xn1, T, false);
    if (ad) {
        be->lora_deltas(ctx, l, L3C_LORA_Q, s->xn1, s->q, T);
        be->lora_deltas(ctx, l, L3C_LORA_K, s->xn1, s->k, T);
        be->lora_deltas(ctx, l, L3C_LORA_V, s->xn1, s->v, T);
    }
    be->rope(ctx, s->q, T, c->n_head, s->rope_cos, s->rope_sin);
    be->rope(ctx, s->k, T, c->n_head_kv, s->rope_cos, s->rope_sin);
    TRACE("q", l, s->q, T, q_dim);
    TRACE("k", l, s->k, T, kv_dim);
    TRACE("v", l, s->v, T, kv_dim);
    be->kv_store(ctx, l, b, s->k, s->v);
    be->attention(ctx, l, b, s->q, s->att_out, s->probs, s->n_kv); /* att_out [T x q_dim] */
    if (s->probs) TRACE("attn_scores", l, s->probs, c->n_head * T, s->n_kv);
    TRACE("attn_out", l, s->att_out, T, q_dim);
    be->matmul(ctx, &L->wo, s->att_out, s->proj, T); /* proj [T x E] */
    if (ad) be->lora_deltas(ctx, l, L3C_LORA_O, s->att_out, s->proj, T);
    TRACE("attn_proj", l, s->proj, T, E);
    be->add(ctx, s->x_mid, s->x_in, s->proj, T * E); /* x_mid = x_in + proj */
    TRACE("ffn_inp", l, s->x_mid, T, E);

    /* ---- feed-forward block (SwiGLU) */
    be->rmsnorm(ctx, s->x_mid, L->ffn_norm, s->xn2, s->rstd2, T, E, c->norm_eps);
    TRACE("ffn_norm", l, s->xn2, T, E);
    const l3c_weight *gu_w[2] = {&L->w_gate, &L->w_up};
    float *const gu_y[2] = {s->g, s->u};
    const bool fused = s->h == s->g && !ctx->trace &&
                       !(ad && (has_lora(ctx, l, L3C_LORA_GATE) || has_lora(ctx, l, L3C_LORA_UP)));
    be->matmul_multi(ctx, 2, gu_w, gu_y, s->xn2, T, fused);
    if (!fused) {
        if (ad) {
            be->lora_deltas(ctx, l, L3C_LORA_GATE, s->xn2, s->g, T);
            be->lora_deltas(ctx, l, L3C_LORA_UP, s->xn2, s->u, T);
        }
        TRACE("ffn_gate", l, s->g, T, F);
        TRACE("ffn_up", l, s->u, T, F);
        be->swiglu(ctx, s->h, s->g, s->u, T * F); /* h [T x F] */
    }
    TRACE("ffn_act", l, s->h, T, F);
    be->matmul(ctx, &L->w_down, s->h, s->proj, T); /* proj [T x E] */
    if (ad) be->lora_deltas(ctx, l, L3C_LORA_DOWN, s->h, s->proj, T);
    TRACE("ffn_down", l, s->proj, T, E);
    be->add(ctx, s->x_out, s->x_mid, s->proj, T * E); /* x_out = x_mid + proj */
    TRACE("l_out", l, s->x_out, T, E);
}

static void zero(float *x, int64_t n) {
    memset(x, 0, (size_t)n * sizeof(float));
}

void l3c_block_backward(l3c_context *ctx, int32_t l, const l3c_batch *b, const l3c_block_bufs *s,
                        const l3c_block_grads *G, const l3c_block_dbufs *d) {
    const l3c_backend *be = ctx->backend;
    const l3c_config *c = &ctx->model->cfg;
    const l3c_layer *L = &ctx->model->w.layers[l];
    const int64_t T = b->n_tokens, E = c->n_embd, F = c->n_ff;
    const int64_t q_dim = (int64_t)c->n_head * c->head_dim,
                  kv_dim = (int64_t)c->n_head_kv * c->head_dim;

    /* ---- feed-forward block: x_out = x_mid + h Wdown^T, dres passes to x_mid and to the branch */
    zero(d->dh, T * F);
    be->matmul_bwd(ctx, l, L3C_LORA_DOWN, &L->w_down, s->h, d->dres, d->dh, G->w[L3C_LORA_DOWN], T);
    zero(d->dg, T * F);
    zero(d->du, T * F);
    be->swiglu_bwd(ctx, s->g, s->u, d->dh, d->dg, d->du, T * F);
    zero(d->dxn, T * E);
    be->matmul_bwd(ctx, l, L3C_LORA_GATE, &L->w_gate, s->xn2, d->dg, d->dxn, G->w[L3C_LORA_GATE],
                   T);
    be->matmul_bwd(ctx, l, L3C_LORA_UP, &L->w_up, s->xn2, d->du, d->dxn, G->w[L3C_LORA_UP], T);
    be->rmsnorm_bwd(ctx, s->x_mid, L->ffn_norm, s->rstd2, d->dxn, d->dres, G->ffn_norm, T, E);

    /* ---- attention block: x_mid = x_in + att_out Wo^T */
    zero(d->dao, T * q_dim);
    be->matmul_bwd(ctx, l, L3C_LORA_O, &L->wo, s->att_out, d->dres, d->dao, G->w[L3C_LORA_O], T);
    zero(d->dq, T * q_dim);
    zero(d->dk, T * kv_dim);
    zero(d->dv, T * kv_dim);
    be->attention_bwd(ctx, l, b, s->q, s->k, s->v, d->dao, d->dq, d->dk, d->dv);
    be->rope_bwd(ctx, d->dq, T, c->n_head, s->rope_cos, s->rope_sin);
    be->rope_bwd(ctx, d->dk, T, c->n_head_kv, s->rope_cos, s->rope_sin);
    zero(d->dxn, T * E);
    be->matmul_bwd(ctx, l, L3C_LORA_Q, &L->wq, s->xn1, d->dq, d->dxn, G->w[L3C_LORA_Q], T);
    be->matmul_bwd(ctx, l, L3C_LORA_K, &L->wk, s->xn1, d->dk, d->dxn, G->w[L3C_LORA_K], T);
    be->matmul_bwd(ctx, l, L3C_LORA_V, &L->wv, s->xn1, d->dv, d->dxn, G->w[L3C_LORA_V], T);
    be->rmsnorm_bwd(ctx, s->x_in, L->attn_norm, s->rstd1, d->dxn, d->dres, G->attn_norm, T, E);
}
