/*
 * test_train_model.c -- the training model and optimizer without torch (the torch autograd
 * comparison is tests/py/test_train_grad.py):
 *  - checkpointed backward == stored-activation backward, bit for bit, grads and loss;
 *  - layers run in chunks of rows (chunk_tokens: 2 + 1 rows): checkpointed == stored bit for
 *    bit, and == the whole batch at once within 1e-6;
 *  - gradients accumulate across backward calls (two identical batches: 2x within 1e-6);
 *  - a fully masked batch gives loss 0 and zero gradients; backward twice is refused;
 *  - bad configs and ids give L3C_ERR_INVALID_ARG with a message naming the value;
 *  - packing: examples packed into rows (positions restarting, attention confined to each) give
 *    the loss and gradients of the same examples one per padded row, within 1e-6; gradient
 *    accumulation of micro-batches (backward_n) == one batch of all of them, within 1e-6;
 *  - the lr schedule at its landmarks, AdamW's first step in closed form (p -= lr*g/(|g|+eps)
 *    after decay), clipping to the max norm, a reproducible RNG and a shuffle that permutes.
 */
#include "check.h"
#include "train/data.h"
#include "train/train_model.h"

#include <math.h>
#include <string.h>

enum { B = 2, T = 7 };

static void make_batch(int32_t *ids, int32_t *tgt, int V) {
    for (int i = 0; i < B * T; i++) {
        ids[i] = (i * 7 + 3) % V;
        tgt[i] = (i % T == T - 1) ? -1 : (i * 5 + 1) % V;
    }
}

/* n examples of lengths 2..14 (example i: len 2 + (5 i) % 13), random ids < V, masks mixed */
static l3c_dataset *varied_dataset(size_t n, int V, int32_t T) {
    l3c_dataset *ds = calloc(1, sizeof *ds);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += 2 + (5 * i) % 13;
    ds->tokens = malloc(total * sizeof *ds->tokens);
    ds->mask = malloc(total);
    ds->ex = calloc(n, sizeof *ds->ex);
    ds->path = strdup("varied");
    ds->seq_len = T;
    ds->pad_id = 1;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t len = 2 + (int32_t)((5 * i) % 13), nt = 0;
        for (int32_t k = 0; k < len; k++) {
            ds->tokens[off + k] = (int32_t)((i * 31 + (size_t)k * 17 + 5) % (size_t)V);
            ds->mask[off + k] = k >= len / 3; /* a "prompt" third untrained */
            nt += k > 0 && ds->mask[off + k];
        }
        ds->ex[i] = (l3c_data_example){.off = off, .len = len, .n_trained = nt, .line = (int64_t)i + 1};
        ds->n_trained += nt;
        off += (size_t)len;
    }
    ds->n_tokens = total;
    ds->n_ex = n;
    return ds;
}

/* max |a - b| / max |b| over n */
static double rel_max(const float *a, const float *b, size_t n) {
    double e = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return mx > 0 ? e / mx : e;
}

/* loss and gradients of ds's rows [start, start + B) (order NULL), packed positions when ds is */
static float run_rows(l3c_train_model *m, const l3c_dataset *ds, size_t start, int Bn, int Tn, int64_t n_norm,
                      float *grads, int64_t *n_valid) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(Bn * Tn)), *tgt = malloc(sizeof(int32_t) * (size_t)(Bn * Tn));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(Bn * Tn));
    l3c_data_batch_pos(ds, NULL, start, Bn, Tn, ids, tgt, pos);
    float loss = -1.0f;
    CHECK(l3c_train_forward_pos(m, ids, tgt, ds->pos ? pos : NULL, Bn, Tn, &loss) == L3C_OK);
    if (n_valid) *n_valid = m->n_valid;
    CHECK(l3c_train_backward_n(m, n_norm > 0 ? n_norm : m->n_valid) == L3C_OK);
    if (grads) memcpy(grads, m->grads, m->n_params * sizeof(float));
    free(ids), free(tgt), free(pos);
    return loss;
}

static void test_packing_and_accumulation(void) {
    l3c_train_config c = {.n_vocab = 50, .n_embd = 32, .n_layer = 2, .n_head = 4, .n_head_kv = 2,
                          .n_ff = 40, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 1};
    l3c_train_model *m = NULL;
    CHECK(l3c_train_model_create(&c, 5, &m) == L3C_OK);
    CHECK(l3c_train_model_set_threads(m, 2) == L3C_OK);
    const int n = 12, Tu = 14, Tp = 32;
    l3c_dataset *ds = varied_dataset((size_t)n, c.n_vocab, Tu), *pk = NULL;
    CHECK(l3c_data_pack(ds, Tp, &pk) == L3C_OK && pk->pos && pk->n_packed == (size_t)n);
    CHECK(pk->n_trained == ds->n_trained && pk->n_ex < (size_t)n);
    CHECK(l3c_data_pack(pk, Tp, &(l3c_dataset *){NULL}) == L3C_ERR_INVALID_ARG); /* packed twice */
    float *gu = malloc(m->n_params * sizeof(float)), *gp = malloc(m->n_params * sizeof(float));
    l3c_train_zero_grad(m);
    const float lu = run_rows(m, ds, 0, n, Tu, 0, gu, NULL); /* one example per row, padded to Tu */
    l3c_train_zero_grad(m);
    const float lp = run_rows(m, pk, 0, (int)pk->n_ex, Tp, 0, gp, NULL);
    CHECK_MSG(fabs(lu - lp) <= 1e-6 * fabs(lu), "packed loss %.9g != unpacked %.9g", lp, lu);
    const double rg = rel_max(gp, gu, m->n_params);
    CHECK_MSG(rg <= 1e-6, "packed gradients differ from unpacked: %.2e of the largest", rg);
    printf("packing: %d examples in %zu rows of %d; loss %.9g vs %.9g, gradients %.2e\n", n, pk->n_ex, Tp, lp,
           lu, rg);
    /* the same rows without their positions (one sequence per row) are another loss: the test
     * can tell */
    {
        int32_t *ids = malloc(sizeof(int32_t) * pk->n_ex * Tp), *tgt = malloc(sizeof(int32_t) * pk->n_ex * Tp);
        l3c_data_batch(pk, NULL, 0, (int)pk->n_ex, Tp, ids, tgt);
        float lx;
        CHECK(l3c_train_forward(m, ids, tgt, (int64_t)pk->n_ex, Tp, &lx) == L3C_OK);
        CHECK(fabs(lx - lu) > 1e-3 * fabs(lu));
        /* positions that neither restart nor count up are refused */
        int32_t *pos = calloc(pk->n_ex * Tp, sizeof(int32_t));
        pos[1] = 5;
        CHECK(l3c_train_forward_pos(m, ids, tgt, pos, (int64_t)pk->n_ex, Tp, &lx) == L3C_ERR_INVALID_ARG);
        CHECK(strstr(l3c_last_error(), "position 5") != NULL);
        free(ids), free(tgt), free(pos);
    }
    /* accumulation: 3 micro-batches of 4 rows, each normalized by the 12 rows' trained targets */
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n * Tu)), *tgt = malloc(sizeof(int32_t) * (size_t)(n * Tu));
    const int64_t total = l3c_data_batch(ds, NULL, 0, n, Tu, ids, tgt);
    l3c_train_zero_grad(m);
    double lsum = 0.0;
    for (int g = 0; g < 3; g++) {
        int64_t nv = 0;
        const float l = run_rows(m, ds, (size_t)g * 4, 4, Tu, total, NULL, &nv);
        lsum += (double)l * (double)nv;
    }
    CHECK(m->n_valid == -1); /* consumed */
    const double ra = rel_max(m->grads, gu, m->n_params);
    CHECK_MSG(fabs(lsum / (double)total - lu) <= 1e-6 * fabs(lu), "accumulated loss %.9g != %.9g",
              lsum / (double)total, lu);
    CHECK_MSG(ra <= 1e-6, "accumulated gradients differ from one batch: %.2e of the largest", ra);
    printf("accumulation: 3 x 4 rows vs 12: gradients %.2e\n", ra);
    /* a normalization below this forward's own count is refused */
    float l;
    CHECK(l3c_train_forward(m, ids, tgt, n, Tu, &l) == L3C_OK);
    CHECK(l3c_train_backward_n(m, 1) == L3C_ERR_INVALID_ARG);
    free(ids), free(tgt), free(gu), free(gp);
    l3c_data_free(ds);
    l3c_data_free(pk);
    l3c_train_model_free(m);
}

/* Forward + backward of rows [3 x 7] with the given checkpointing and chunk size: *loss, grads
 * copied into g. */
static void run_chunked(l3c_train_model *m, int ckpt, int64_t chunk_tokens, const int32_t *ids,
                        const int32_t *tgt, float *loss, float *g) {
    m->checkpoint = ckpt;
    m->chunk_tokens = chunk_tokens;
    CHECK(l3c_train_forward(m, ids, tgt, 3, T, loss) == L3C_OK);
    l3c_train_zero_grad(m);
    CHECK(l3c_train_backward(m) == L3C_OK);
    memcpy(g, m->grads, m->n_params * sizeof(float));
}

/* Chunks of 2 and 1 rows: the recompute sees the chunk the forward ran (same bits), and the
 * chunked gradients are the whole batch's (the dW sums only add in another order). */
static void test_chunks(void) {
    l3c_train_config c = {.n_vocab = 40,
                          .n_embd = 24,
                          .n_layer = 2,
                          .n_head = 6,
                          .n_head_kv = 2,
                          .n_ff = 36,
                          .rope_theta = 10000.0f,
                          .norm_eps = 1e-5f,
                          .tied = 1};
    l3c_train_model *m = NULL;
    CHECK(l3c_train_model_create(&c, 7, &m) == L3C_OK && m);
    int32_t ids[3 * T], tgt[3 * T];
    for (int i = 0; i < 3 * T; i++) {
        ids[i] = (i * 11 + 2) % c.n_vocab;
        tgt[i] = i % 5 == 4 ? -1 : (i * 3 + 7) % c.n_vocab;
    }
    CHECK(l3c_train_chunk_rows(m, 3, T) == 3); /* default: 1024 tokens */
    m->chunk_tokens = 2 * T + 3;
    CHECK(l3c_train_chunk_rows(m, 3, T) == 2);
    m->chunk_tokens = 1;
    CHECK(l3c_train_chunk_rows(m, 3, T) == 1); /* at least one row */
    float *gw = malloc(m->n_params * sizeof(float)), *gs = malloc(m->n_params * sizeof(float)),
          *gc = malloc(m->n_params * sizeof(float));
    float lw = 0, ls = 0, lc = 0;
    run_chunked(m, 0, 0, ids, tgt, &lw, gw);     /* one chunk */
    run_chunked(m, 0, 2 * T, ids, tgt, &ls, gs); /* stored, rows {0, 1}, {2} */
    run_chunked(m, 1, 2 * T, ids, tgt, &lc, gc); /* checkpointed, the same chunks */
    CHECK(lc == ls);
    CHECK_MSG(memcmp(gs, gc, m->n_params * sizeof(float)) == 0,
              "checkpointed chunks' gradients differ from the stored chunks'");
    const double e = rel_max(gc, gw, m->n_params);
    CHECK_MSG(fabsf(lc - lw) <= 1e-6f * lw && e <= 1e-6,
              "chunked vs whole batch: loss %.9g vs %.9g, gradients %.3g", (double)lc, (double)lw,
              e);
    CHECK(l3c_grad_norm(gw, m->n_params) > 0.0);
    printf("chunks: 2 + 1 rows vs the whole batch: loss %.9g vs %.9g, gradients %.2e\n", (double)lc,
           (double)lw, e);
    free(gw), free(gs), free(gc);
    l3c_train_model_free(m);
}

int main(void) {
    test_packing_and_accumulation();
    test_chunks();
    l3c_train_config c = {.n_vocab = 40, .n_embd = 24, .n_layer = 3, .n_head = 6, .n_head_kv = 2,
                          .n_ff = 36, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0};
    int32_t ids[B * T], tgt[B * T];
    make_batch(ids, tgt, c.n_vocab);

    /* checkpointing: identical bits */
    l3c_train_model *m = NULL;
    CHECK(l3c_train_model_create(&c, 99, &m) == L3C_OK && m);
    CHECK(m->cfg.n_rot == 4); /* 0 -> head_dim */
    float loss_a = 0, loss_b = 0;
    CHECK(l3c_train_forward(m, ids, tgt, B, T, &loss_a) == L3C_OK);
    CHECK(loss_a > 0.0f && isfinite(loss_a));
    l3c_train_zero_grad(m);
    CHECK(l3c_train_backward(m) == L3C_OK);
    float *ga = malloc(m->n_params * sizeof(float));
    memcpy(ga, m->grads, m->n_params * sizeof(float));
    m->checkpoint = 1;
    CHECK(l3c_train_forward(m, ids, tgt, B, T, &loss_b) == L3C_OK);
    l3c_train_zero_grad(m);
    CHECK(l3c_train_backward(m) == L3C_OK);
    CHECK(loss_a == loss_b);
    CHECK_MSG(memcmp(ga, m->grads, m->n_params * sizeof(float)) == 0,
              "checkpointed gradients differ from the stored-activation ones");
    double gn = l3c_grad_norm(m->grads, m->n_params);
    CHECK(gn > 0.0);
    /* a second backward of the same forward is refused, and names why */
    CHECK(l3c_train_backward(m) == L3C_ERR_INVALID_ARG);
    CHECK(strstr(l3c_last_error(), "forward") != NULL);

    /* accumulation: a second forward/backward without zeroing doubles every gradient */
    CHECK(l3c_train_forward(m, ids, tgt, B, T, &loss_b) == L3C_OK);
    CHECK(l3c_train_backward(m) == L3C_OK);
    double emax = 0.0, gmax = 0.0; /* not bitwise: the second pass adds onto the first's sums */
    for (size_t i = 0; i < m->n_params; i++) {
        emax = fmax(emax, fabs(m->grads[i] - 2.0 * ga[i]));
        gmax = fmax(gmax, fabs(ga[i]));
    }
    CHECK_MSG(emax <= 1e-6 * gmax, "accumulated gradients are not doubled: %g of %g", emax, gmax);

    /* everything masked: loss 0, no gradient */
    int32_t none[B * T];
    for (int i = 0; i < B * T; i++) none[i] = -1;
    CHECK(l3c_train_forward(m, ids, none, B, T, &loss_b) == L3C_OK && loss_b == 0.0f);
    l3c_train_zero_grad(m);
    CHECK(l3c_train_backward(m) == L3C_OK);
    CHECK(l3c_grad_norm(m->grads, m->n_params) == 0.0);

    /* bad ids / targets */
    ids[3] = c.n_vocab;
    CHECK(l3c_train_forward(m, ids, tgt, B, T, &loss_b) == L3C_ERR_INVALID_ARG);
    CHECK(strstr(l3c_last_error(), "token id 40 at 3") != NULL);
    ids[3] = 0;
    tgt[4] = -2;
    CHECK(l3c_train_forward(m, ids, tgt, B, T, &loss_b) == L3C_ERR_INVALID_ARG);
    CHECK(strstr(l3c_last_error(), "target -2") != NULL);
    tgt[4] = 1;

    /* a few AdamW steps on one batch lower its loss */
    l3c_adamw_params ap = l3c_adamw_default_params();
    ap.lr = 1e-2f;
    ap.total_steps = 8;
    m->checkpoint = 0;
    float first = 0, last = 0;
    for (int s = 0; s < 8; s++) {
        CHECK(l3c_train_forward(m, ids, tgt, B, T, &last) == L3C_OK);
        if (s == 0) first = last;
        l3c_train_zero_grad(m);
        CHECK(l3c_train_backward(m) == L3C_OK);
        CHECK(l3c_train_step(m, &ap, s, NULL, NULL) == L3C_OK);
    }
    CHECK_MSG(last < 0.7f * first, "loss %g -> %g after 8 steps", (double)first, (double)last);
    CHECK(l3c_train_act_bytes_per_token(m, 512, 1) < l3c_train_act_bytes_per_token(m, 512, 0));
    l3c_train_model_free(m);
    free(ga);

    /* bad configs */
    l3c_train_config bc = c;
    bc.n_embd = 25;
    CHECK(l3c_train_model_create(&bc, 1, &m) == L3C_ERR_INVALID_ARG && m == NULL);
    CHECK(strstr(l3c_last_error(), "n_embd 25") != NULL);
    bc = c;
    bc.n_head_kv = 4;
    CHECK(l3c_train_model_create(&bc, 1, &m) == L3C_ERR_INVALID_ARG);
    bc = c;
    bc.n_rot = 3;
    CHECK(l3c_train_model_create(&bc, 1, &m) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_train_model_from_gguf("/nonexistent/x.gguf", &m) != L3C_OK && m == NULL);
    CHECK(strstr(l3c_last_error(), "/nonexistent/x.gguf") != NULL);

    /* schedule */
    l3c_adamw_params p = l3c_adamw_default_params();
    p.lr = 1.0f, p.warmup_steps = 4, p.total_steps = 14, p.min_lr_ratio = 0.1f;
    CHECK_NEAR(l3c_lr_at(&p, 0), 0.25, 1e-7);
    CHECK_NEAR(l3c_lr_at(&p, 3), 1.0, 1e-7);
    CHECK_NEAR(l3c_lr_at(&p, 4), 1.0, 1e-7);
    CHECK_NEAR(l3c_lr_at(&p, 9), 0.55, 1e-6); /* halfway: (1 + 0.1) / 2 */
    CHECK_NEAR(l3c_lr_at(&p, 14), 0.1, 1e-7);
    CHECK_NEAR(l3c_lr_at(&p, 100), 0.1, 1e-7);

    /* AdamW step 1: m_hat = g, v_hat = g^2 */
    {
        float w[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.3f, -1e-3f, 0.0f}, mm[3] = {0}, vv[3] = {0};
        l3c_adamw_update(w, g, mm, vv, 3, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
        CHECK_NEAR(w[0], 1.0 * (1 - 0.1 * 0.01) - 0.1 * 0.3 / (0.3 + 1e-8), 1e-6);
        CHECK_NEAR(w[1], -2.0 * (1 - 0.1 * 0.01) + 0.1 * 1e-3 / (1e-3 + 1e-8), 1e-6);
        CHECK_NEAR(w[2], 0.5 * (1 - 0.1 * 0.01), 1e-7);
    }
    /* clipping */
    {
        float g[2] = {3.0f, 4.0f};
        CHECK_NEAR(l3c_grad_clip(g, 2, 1.0f), 5.0, 1e-12);
        CHECK_NEAR(g[0], 0.6, 1e-6);
        CHECK_NEAR(g[1], 0.8, 1e-6);
        CHECK_NEAR(l3c_grad_clip(g, 2, 10.0f), 1.0, 1e-6);
        CHECK_NEAR(g[0], 0.6, 1e-6); /* below the max: untouched */
    }
    /* RNG */
    {
        l3c_rng r1, r2;
        l3c_rng_seed(&r1, 7);
        l3c_rng_seed(&r2, 7);
        int same = 1;
        for (int i = 0; i < 100; i++) same &= l3c_rng_u64(&r1) == l3c_rng_u64(&r2);
        CHECK(same);
        l3c_rng_seed(&r2, 8);
        CHECK(l3c_rng_u64(&r1) != l3c_rng_u64(&r2));
        double s = 0, s2 = 0;
        const int n = 20000;
        for (int i = 0; i < n; i++) {
            double x = l3c_rng_normal(&r1);
            s += x, s2 += x * x;
        }
        CHECK_NEAR(s / n, 0.0, 0.03); /* 4 sigma of the mean: 4 / sqrt(n) */
        CHECK_NEAR(s2 / n, 1.0, 0.05);
        int32_t a[50], seen[50] = {0};
        for (int i = 0; i < 50; i++) a[i] = i;
        l3c_rng_shuffle(&r1, a, 50);
        int moved = 0;
        for (int i = 0; i < 50; i++) seen[a[i]]++, moved += a[i] != i;
        int perm = 1;
        for (int i = 0; i < 50; i++) perm &= seen[i] == 1;
        CHECK(perm && moved > 25);
    }
    return CHECK_DONE("test_train_model");
}
