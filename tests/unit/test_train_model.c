/*
 * test_train_model.c -- the training model and optimizer without torch (the torch autograd
 * comparison is tests/py/test_train_grad.py):
 *  - checkpointed backward == stored-activation backward, bit for bit, grads and loss;
 *  - gradients accumulate across backward calls (two identical batches: 2x within 1e-6);
 *  - a fully masked batch gives loss 0 and zero gradients; backward twice is refused;
 *  - bad configs and ids give L3C_ERR_INVALID_ARG with a message naming the value;
 *  - the lr schedule at its landmarks, AdamW's first step in closed form (p -= lr*g/(|g|+eps)
 *    after decay), clipping to the max norm, a reproducible RNG and a shuffle that permutes.
 */
#include "check.h"
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

int main(void) {
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
