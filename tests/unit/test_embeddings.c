/*
 * test_embeddings.c -- embeddings contexts (l3c_context_params.embeddings, pooling.c) on a tiny
 * random F32 llama GGUF with a tied output, written here with gguf_builder. Checks:
 *  - the per-token vector is the hidden state right before the output projection: with a tied
 *    output, vector @ token_embd^T (computed here in double from the file's weights) equals the
 *    logits of a plain context (themselves checked against a naive reference in test_model.c),
 *    relative error < 1e-5 of the largest logit;
 *  - MEAN / CLS / LAST equal the mean / first / last of the per-token vectors (computed here in
 *    double; 1e-6 relative), NONE gives no pooled vector; embd_normalize gives unit vectors
 *    parallel to the raw ones;
 *  - a sequence fed in chunks of 1, 3 and 7 tokens pools to the same vector, bitwise, as fed
 *    whole; three sequences sharing one batch equal each alone, bitwise;
 *  - a plain context's logits are unchanged (bitwise) by embeddings on, and an embeddings
 *    context computes no logits unless batch->logits asks;
 *  - lifecycle: NULL before any decode, for an empty or out-of-range sequence, after a partial
 *    truncation (until cleared); truncate to 0 and feed again gives the same vector; bad
 *    pooling values are refused at context creation.
 */
#include "check.h"
#include "gguf_builder.h"
#include "llama3c.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { V = 80, E = 64, NT = 24, NCTX = 64 };

static char g_path[256];
static float *g_tok_embd; /* [V x E] from the file */

static l3c_context *make_ctx(const l3c_model *m, int embeddings, int pooling, int normalize, int n_seq,
                             int n_batch) {
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = NCTX, cp.n_seq = n_seq, cp.n_batch = n_batch, cp.n_threads = 2;
    cp.kv_type = L3C_KV_F32;
    cp.embeddings = embeddings, cp.pooling = pooling, cp.embd_normalize = normalize;
    l3c_context *c = NULL;
    if (l3c_context_create(m, &cp, &c) != L3C_OK) fprintf(stderr, "ctx: %s\n", l3c_last_error());
    return c;
}

/* Feeds ids[0..n) to sequence seq (from its current length) in chunks; NULL logits. */
static int feed(l3c_context *c, const int32_t *ids, int n, int seq, int chunk) {
    int32_t pos[NCTX], sq[NCTX];
    int start = l3c_kv_seq_len(c, seq);
    for (int i = 0; i < n; i++) pos[i] = start + i, sq[i] = seq;
    for (int s = 0; s < n; s += chunk) {
        int m = n - s < chunk ? n - s : chunk;
        l3c_batch b = {m, ids + s, pos + s, sq + s, NULL};
        if (l3c_decode(c, &b) != L3C_OK) {
            fprintf(stderr, "decode: %s\n", l3c_last_error());
            return -1;
        }
    }
    return 0;
}

static int same(const float *a, const float *b) { return a && b && !memcmp(a, b, E * sizeof(float)); }

static void test_hidden_state_and_pooling(const l3c_model *m, const int32_t *ids) {
    /* logits of every token from a plain context */
    l3c_context *plain = make_ctx(m, 0, 0, 0, 1, NT);
    int32_t pos[NT];
    int8_t all[NT];
    for (int i = 0; i < NT; i++) pos[i] = i, all[i] = 1;
    l3c_batch b = {NT, ids, pos, NULL, all};
    CHECK(plain && l3c_decode(plain, &b) == L3C_OK);
    float *logits = malloc((size_t)NT * V * sizeof(float));
    for (int t = 0; t < NT; t++) memcpy(logits + t * V, l3c_get_logits(plain, t), V * sizeof(float));
    CHECK(l3c_get_embeddings(plain, 0) == NULL && l3c_get_embeddings_seq(plain, 0) == NULL);

    /* embeddings context, logits of every token too: same logits bitwise */
    l3c_context *ec = make_ctx(m, 1, L3C_POOLING_MEAN, 0, 1, NT);
    CHECK(ec && l3c_get_embeddings(ec, 0) == NULL && l3c_get_embeddings_seq(ec, 0) == NULL);
    CHECK(l3c_decode(ec, &b) == L3C_OK);
    int logits_same = 1;
    for (int t = 0; t < NT; t++)
        logits_same &= !memcmp(logits + t * V, l3c_get_logits(ec, t), V * sizeof(float));
    CHECK_MSG(logits_same, "logits differ between a plain and an embeddings context");

    /* vector @ token_embd^T == logits */
    double max_logit = 0, max_err = 0;
    double mean[E] = {0};
    for (int t = 0; t < NT; t++) {
        const float *h = l3c_get_embeddings(ec, t);
        CHECK(h != NULL);
        if (!h) break;
        for (int i = 0; i < E; i++) mean[i] += h[i] / (double)NT;
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int i = 0; i < E; i++) s += (double)h[i] * g_tok_embd[v * E + i];
            max_err = fmax(max_err, fabs(s - logits[t * V + v]));
            max_logit = fmax(max_logit, fabs(logits[t * V + v]));
        }
    }
    CHECK_MSG(max_logit > 0.5 && max_err <= 1e-5 * max_logit, "hidden @ token_embd^T vs logits: max err %g, "
              "max |logit| %g", max_err, max_logit);
    CHECK(l3c_get_embeddings(ec, NT) == NULL && l3c_get_embeddings(ec, -1) == NULL);

    /* MEAN pooled == mean of the rows */
    const float *p = l3c_get_embeddings_seq(ec, 0);
    double err = 0, mx = 0;
    for (int i = 0; p && i < E; i++) err = fmax(err, fabs(p[i] - mean[i])), mx = fmax(mx, fabs(mean[i]));
    CHECK_MSG(p && err <= 1e-6 * mx, "MEAN vs mean of rows: %g (max %g)", err, mx);

    /* CLS / LAST / NONE on contexts fed the same way; logits NULL -> none computed */
    const int pools[3] = {L3C_POOLING_CLS, L3C_POOLING_LAST, L3C_POOLING_NONE};
    for (int k = 0; k < 3; k++) {
        l3c_context *c = make_ctx(m, 1, pools[k], 0, 1, NT);
        CHECK(c && feed(c, ids, NT, 0, NT) == 0);
        CHECK(l3c_get_logits(c, NT - 1) == NULL);
        const float *v = l3c_get_embeddings_seq(c, 0);
        if (pools[k] == L3C_POOLING_NONE) CHECK(v == NULL);
        else CHECK_MSG(same(v, l3c_get_embeddings(ec, pools[k] == L3C_POOLING_CLS ? 0 : NT - 1)),
                       "pooling %d is not the first / last row", pools[k]);
        CHECK(same(l3c_get_embeddings(c, 5), l3c_get_embeddings(ec, 5)));
        l3c_context_free(c);
    }

    /* normalized: unit length, parallel to the raw vector */
    l3c_context *nc = make_ctx(m, 1, L3C_POOLING_MEAN, 1, 1, NT);
    CHECK(nc && feed(nc, ids, NT, 0, NT) == 0);
    const float *u = l3c_get_embeddings_seq(nc, 0), *r = l3c_get_embeddings_seq(ec, 0);
    double nu = 0, nr = 0, dot = 0;
    for (int i = 0; u && r && i < E; i++)
        nu += (double)u[i] * u[i], nr += (double)r[i] * r[i], dot += (double)u[i] * r[i];
    CHECK_MSG(fabs(sqrt(nu) - 1) < 1e-6 && fabs(dot / sqrt(nr) - 1) < 1e-6, "normalized: |u| %g, cos %g",
              sqrt(nu), dot / sqrt(nr));
    const float *ut = l3c_get_embeddings(nc, 3);
    double nt = 0;
    for (int i = 0; ut && i < E; i++) nt += (double)ut[i] * ut[i];
    CHECK_NEAR(sqrt(nt), 1.0, 1e-6);
    l3c_context_free(nc);

    free(logits);
    l3c_context_free(ec);
    l3c_context_free(plain);
}

static void test_batch_invariance(const l3c_model *m, const int32_t *ids) {
    const int pools[3] = {L3C_POOLING_MEAN, L3C_POOLING_CLS, L3C_POOLING_LAST};
    for (int k = 0; k < 3; k++) {
        float whole[E];
        l3c_context *c = make_ctx(m, 1, pools[k], 0, 3, 3 * NT);
        CHECK(c && feed(c, ids, NT, 0, NT) == 0 && l3c_get_embeddings_seq(c, 0));
        if (!c || !l3c_get_embeddings_seq(c, 0)) return;
        memcpy(whole, l3c_get_embeddings_seq(c, 0), sizeof whole);
        const int chunks[3] = {1, 3, 7};
        for (int j = 0; j < 3; j++) {
            CHECK(l3c_kv_seq_truncate(c, 0, 0) == L3C_OK && l3c_get_embeddings_seq(c, 0) == NULL);
            CHECK(feed(c, ids, NT, 0, chunks[j]) == 0);
            CHECK_MSG(same(l3c_get_embeddings_seq(c, 0), whole), "pooling %d: chunks of %d differ from "
                      "the whole sequence", pools[k], chunks[j]);
        }
        /* three sequences interleaved in one batch: ids, ids[5..], ids again */
        float alone1[E];
        l3c_context *c1 = make_ctx(m, 1, pools[k], 0, 1, NCTX);
        CHECK(c1 && feed(c1, ids + 5, NT - 5, 0, NT) == 0 && l3c_get_embeddings_seq(c1, 0));
        if (c1 && l3c_get_embeddings_seq(c1, 0)) memcpy(alone1, l3c_get_embeddings_seq(c1, 0), sizeof alone1);
        l3c_context_free(c1);
        for (int s = 0; s < 3; s++) CHECK(l3c_kv_seq_truncate(c, s, 0) == L3C_OK);
        int32_t bt[3 * NT], bp[3 * NT], bs[3 * NT];
        int n = 0, at[3] = {0, 0, 0};
        const int len[3] = {NT, NT - 5, NT}, off[3] = {0, 5, 0};
        while (n < NT + NT - 5 + NT) /* round robin, runs of 2 */
            for (int s = 0; s < 3; s++)
                for (int r = 0; r < 2 && at[s] < len[s]; r++, at[s]++, n++)
                    bt[n] = ids[off[s] + at[s]], bp[n] = at[s], bs[n] = s;
        l3c_batch b = {n, bt, bp, bs, NULL};
        CHECK(l3c_decode(c, &b) == L3C_OK);
        CHECK_MSG(same(l3c_get_embeddings_seq(c, 0), whole) && same(l3c_get_embeddings_seq(c, 2), whole) &&
                  same(l3c_get_embeddings_seq(c, 1), alone1),
                  "pooling %d: sequences sharing a batch differ from each alone", pools[k]);
        /* partial truncation: unknown until cleared */
        CHECK(l3c_kv_seq_truncate(c, 0, 4) == L3C_OK && l3c_get_embeddings_seq(c, 0) == NULL);
        CHECK(feed(c, ids + 4, NT - 4, 0, NT) == 0 && l3c_get_embeddings_seq(c, 0) == NULL);
        CHECK(l3c_kv_seq_truncate(c, 0, 0) == L3C_OK && feed(c, ids, NT, 0, 5) == 0);
        CHECK(same(l3c_get_embeddings_seq(c, 0), whole));
        CHECK(same(l3c_get_embeddings_seq(c, 1), alone1)); /* untouched by the other sequence */
        CHECK(l3c_get_embeddings_seq(c, 3) == NULL && l3c_get_embeddings_seq(c, -1) == NULL);
        l3c_context_free(c);
    }
}

static void test_bad_params(const l3c_model *m) {
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = 16, cp.embeddings = 1;
    const int bad[2] = {-1, 4};
    for (int k = 0; k < 2; k++) {
        cp.pooling = bad[k];
        l3c_context *c = (l3c_context *)1;
        CHECK(l3c_context_create(m, &cp, &c) == L3C_ERR_INVALID_ARG && c == NULL);
        CHECK_MSG(strstr(l3c_last_error(), "pooling") != NULL, "message: %s", l3c_last_error());
    }
    CHECK(l3c_get_embeddings(NULL, 0) == NULL && l3c_get_embeddings_seq(NULL, 0) == NULL);
}

int main(void) {
    snprintf(g_path, sizeof g_path, "/tmp/l3c_test_embd_%d.gguf", (int)getpid());
    ggf f = {0};
    ggb_llama_opts o = ggb_llama_default();
    o.n_vocab = V, o.n_embd = E, o.n_head = 4, o.n_head_kv = 2, o.n_ff = 96, o.n_layer = 2;
    o.n_ctx = NCTX, o.tied = 1, o.tokenizer = 1;
    ggb_tiny_llama(&f, &o);
    ggf_tensor *te = ggf_tensor_get(&f, "token_embd.weight");
    CHECK(te && te->type == 0 && te->nbytes == (size_t)V * E * sizeof(float));
    g_tok_embd = malloc((size_t)V * E * sizeof(float));
    memcpy(g_tok_embd, te->data, (size_t)V * E * sizeof(float));
    CHECK(ggf_write_file(&f, g_path) == 0);
    ggf_free(&f);

    l3c_model *m = NULL;
    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = 2;
    CHECK(l3c_model_load(g_path, &mp, &m) == L3C_OK);
    if (m) {
        int32_t ids[NT];
        for (int i = 0; i < NT; i++) ids[i] = i == 0 ? 1 : 3 + (i * 37) % (V - 3);
        test_hidden_state_and_pooling(m, ids);
        test_batch_invariance(m, ids);
        test_bad_params(m);
    }
    l3c_model_free(m);
    free(g_tok_embd);
    unlink(g_path);
    return CHECK_DONE("test_embeddings");
}
