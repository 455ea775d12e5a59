/*
 * test_lora.c -- LoRA adapters (src/model/lora_io.c, adapter.c, the CPU `lora` op):
 *  - the op against a double-precision y + s (x A^T) B^T for odd sizes (1..70 tokens, ranks 1..9,
 *    n_out over several 64-row chunks), bitwise equal for 1 and 3 threads;
 *  - save GGUF / PEFT and load back: every float equal (the PEFT save un-permutes q / k rows of B,
 *    the load permutes them back), mixed ranks through PEFT's rank_pattern;
 *  - l3c_lora_load_gguf_memory with the N-th allocation failing, for every N: L3C_ERR_NOMEM, no
 *    adapter, nothing leaked (ASan);
 *  - l3c_context_set_adapter: scale 0 removes, a second set changes the scale, decode unchanged
 *    without adapters (bitwise).
 */
#include "check.h"
#include "gguf_builder.h"
#include "model/lora.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t g_rng = 88172645463325252ull;
static float frand(void) { /* [-1, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static char g_dir[256];

static l3c_model *tiny_model(const char *name, int n_layer) {
    ggb_llama_opts o = ggb_llama_default();
    o.n_embd = 16, o.n_head = 4, o.n_head_kv = 2, o.n_ff = 24, o.n_layer = n_layer, o.n_vocab = 32;
    ggf f = {0};
    ggb_tiny_llama(&f, &o);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", g_dir, name);
    CHECK(ggf_write_file(&f, path) == 0);
    ggf_free(&f);
    l3c_model *m = NULL;
    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = 1;
    CHECK(l3c_model_load(path, &mp, &m) == L3C_OK);
    return m;
}

static void test_op(l3c_model *m) {
    l3c_context *ctx[2] = {NULL, NULL};
    for (int c = 0; c < 2; c++) {
        l3c_context_params cp = l3c_context_default_params();
        cp.n_ctx = 128, cp.n_batch = 128, cp.n_threads = c ? 3 : 1;
        CHECK(l3c_context_create(m, &cp, &ctx[c]) == L3C_OK);
        ctx[c]->act.lora_tmp =
            malloc(128 * 16 * sizeof(float)); /* what set_adapter would allocate */
        ctx[c]->act.lora_rank = 16;
    }
    const int64_t Ts[] = {1, 5, 70}, n_in = 13, n_out = 150;
    const int ranks[] = {1, 3, 9};
    float *A = malloc(9 * n_in * 4), *B = malloc(n_out * 9 * 4), *x = malloc(70 * n_in * 4);
    float *y0 = malloc(70 * n_out * 4), *y1 = malloc(70 * n_out * 4), *y2 = malloc(70 * n_out * 4);
    for (int ti = 0; ti < 3; ti++)
        for (int ri = 0; ri < 3; ri++) {
            const int64_t T = Ts[ti];
            const int r = ranks[ri];
            for (int64_t i = 0; i < r * n_in; i++)
                A[i] = frand();
            for (int64_t i = 0; i < r * n_out; i++)
                B[i] = frand();
            for (int64_t i = 0; i < T * n_in; i++)
                x[i] = frand();
            for (int64_t i = 0; i < T * n_out; i++)
                y0[i] = y1[i] = y2[i] = frand();
            const float s = 0.37f;
            l3c_backend_cpu.lora(ctx[0], A, B, r, n_in, n_out, s, x, y1, T);
            l3c_backend_cpu.lora(ctx[1], A, B, r, n_in, n_out, s, x, y2, T);
            CHECK(memcmp(y1, y2, (size_t)(T * n_out) * 4) == 0);
            double worst = 0;
            for (int64_t t = 0; t < T; t++)
                for (int64_t o = 0; o < n_out; o++) {
                    double d = 0;
                    for (int k = 0; k < r; k++) {
                        double xa = 0;
                        for (int64_t i = 0; i < n_in; i++)
                            xa += (double)x[t * n_in + i] * A[k * n_in + i];
                        d += xa * B[o * r + k];
                    }
                    double want = y0[t * n_out + o] + s * d;
                    worst = fmax(worst, fabs(want - y1[t * n_out + o]));
                }
            CHECK_MSG(worst < 1e-5, "T %lld rank %d: max |diff| %g", (long long)T, r, worst);
        }
    free(A), free(B), free(x), free(y0), free(y1), free(y2);
    l3c_context_free(ctx[0]);
    l3c_context_free(ctx[1]);
}

static int same(const l3c_lora_adapter *a, const l3c_lora_adapter *b) {
    if (a->n_layer != b->n_layer || a->alpha != b->alpha || a->targets != b->targets ||
        a->n_floats != b->n_floats)
        return 0;
    for (int32_t l = 0; l < a->n_layer; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
            const l3c_lora_mat *x = l3c_lora_get(a, l, t), *y = l3c_lora_get(b, l, t);
            if (!x != !y) return 0;
            if (x && (x->rank != y->rank || memcmp(x->a, y->a, (size_t)x->rank * x->n_in * 4) ||
                      memcmp(x->b, y->b, (size_t)x->rank * x->n_out * 4)))
                return 0;
        }
    return 1;
}

static void test_round_trips(const l3c_model *m) {
    const l3c_config *cfg = &m->cfg;
    l3c_lora_adapter *a = NULL, *g = NULL, *p = NULL;
    CHECK(l3c_lora_create(cfg, 0x7f, 3, 6.0f, &a) == L3C_OK);
    for (size_t i = 0; i < a->n_floats; i++)
        a->arena[i] = frand();
    char gpath[512], pdir[512];
    snprintf(gpath, sizeof gpath, "%s/rt.gguf", g_dir);
    snprintf(pdir, sizeof pdir, "%s/rt_peft", g_dir);
    CHECK(l3c_lora_save_gguf(a, cfg, gpath) == L3C_OK);
    CHECK(l3c_lora_load(gpath, cfg, &g) == L3C_OK && g && same(a, g));
    CHECK(l3c_lora_save_peft(g, cfg, pdir, "tiny") == L3C_OK);
    CHECK(l3c_lora_load(pdir, cfg, &p) == L3C_OK && p && same(a, p));
    l3c_lora_free(g), l3c_lora_free(p);
    g = p = NULL;

    /* mixed ranks, not every layer: GGUF as it is; PEFT through rank_pattern and full module names
     */
    ggf f = {0};
    ggf_kv_str(&f, "general.architecture", "llama");
    ggf_kv_str(&f, "general.type", "adapter");
    ggf_kv_str(&f, "adapter.type", "lora");
    ggf_kv_f32(&f, "adapter.lora.alpha", 4.0f);
    float data[16 * 24];
    for (size_t i = 0; i < sizeof data / 4; i++)
        data[i] = frand();
    ggf_tensor_add(&f, "blk.0.attn_k.weight.lora_a", 2, (int64_t[4]){16, 2, 1, 1}, 0, data,
                   16 * 2 * 4);
    ggf_tensor_add(&f, "blk.0.attn_k.weight.lora_b", 2, (int64_t[4]){2, 8, 1, 1}, 0, data + 7,
                   2 * 8 * 4);
    ggf_tensor_add(&f, "blk.1.ffn_down.weight.lora_a", 2, (int64_t[4]){24, 5, 1, 1}, 0, data + 3,
                   24 * 5 * 4);
    ggf_tensor_add(&f, "blk.1.ffn_down.weight.lora_b", 2, (int64_t[4]){5, 16, 1, 1}, 0, data + 9,
                   5 * 16 * 4);
    CHECK(ggf_write_file(&f, gpath) == 0);
    ggf_free(&f);
    CHECK(l3c_lora_load(gpath, cfg, &g) == L3C_OK && g && g->rank == 5 &&
          g->n_floats == 2 * 24 + 5 * 40);
    snprintf(pdir, sizeof pdir, "%s/rt_peft_mixed", g_dir);
    CHECK(g && l3c_lora_save_peft(g, cfg, pdir, NULL) == L3C_OK);
    CHECK(l3c_lora_load(pdir, cfg, &p) == L3C_OK && p && same(g, p));
    l3c_lora_free(a), l3c_lora_free(g), l3c_lora_free(p);
}

static void test_alloc_fail(const l3c_model *m) {
    const l3c_config *cfg = &m->cfg;
    l3c_lora_adapter *a = NULL;
    CHECK(l3c_lora_create(cfg, 0x7f, 2, 4.0f, &a) == L3C_OK);
    char path[512];
    snprintf(path, sizeof path, "%s/af.gguf", g_dir);
    CHECK(l3c_lora_save_gguf(a, cfg, path) == L3C_OK);
    l3c_lora_free(a);
    FILE *fp = fopen(path, "rb");
    static uint8_t buf[1 << 16];
    size_t n = fp ? fread(buf, 1, sizeof buf, fp) : 0;
    if (fp) fclose(fp);
    CHECK(n > 0 && n < sizeof buf);
    int ok_at = -1;
    for (long k = 0; k < 200 && ok_at < 0; k++) {
        l3c_set_alloc_fail_after(k);
        l3c_status st = l3c_lora_load_gguf_memory(buf, n, "af", cfg, &a);
        l3c_set_alloc_fail_after(-1);
        if (st == L3C_OK)
            ok_at = (int)k;
        else
            CHECK_MSG(st == L3C_ERR_NOMEM && a == NULL, "fail after %ld: %s", k, l3c_last_error());
        l3c_lora_free(a);
        a = NULL;
    }
    CHECK(ok_at > 0);
}

static void test_context(l3c_model *m) {
    char path[512];
    snprintf(path, sizeof path, "%s/rt.gguf", g_dir);
    l3c_adapter *ad = NULL;
    l3c_context *ctx = NULL;
    CHECK(l3c_adapter_load(m, path, &ad) == L3C_OK);
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = 16, cp.n_threads = 2;
    CHECK(l3c_context_create(m, &cp, &ctx) == L3C_OK);
    int32_t tok[4] = {1, 5, 9, 2}, pos[4] = {0, 1, 2, 3};
    l3c_batch b = {.n_tokens = 4, .tokens = tok, .pos = pos};
    float base[32], with[32], again[32];
    CHECK(l3c_decode(ctx, &b) == L3C_OK);
    memcpy(base, l3c_get_logits(ctx, 3), sizeof base);
    CHECK(l3c_context_set_adapter(ctx, ad, 2.0f) == L3C_OK && ctx->n_adapters == 1);
    CHECK(l3c_context_set_adapter(ctx, ad, 1.0f) == L3C_OK && ctx->n_adapters == 1 &&
          ctx->adapters[0].scale == 1.0f);
    CHECK(l3c_kv_seq_truncate(ctx, 0, 0) == L3C_OK && l3c_decode(ctx, &b) == L3C_OK);
    memcpy(with, l3c_get_logits(ctx, 3), sizeof with);
    CHECK(memcmp(base, with, sizeof base) != 0);
    CHECK(l3c_context_set_adapter(ctx, ad, 0.0f) == L3C_OK && ctx->n_adapters == 0);
    CHECK(l3c_kv_seq_truncate(ctx, 0, 0) == L3C_OK && l3c_decode(ctx, &b) == L3C_OK);
    memcpy(again, l3c_get_logits(ctx, 3), sizeof again);
    CHECK(memcmp(base, again, sizeof base) == 0);
    CHECK(l3c_context_set_adapter(ctx, ad, NAN) == L3C_ERR_INVALID_ARG);
    l3c_context_free(ctx);
    l3c_adapter_free(ad);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/test_lora_%d", (int)getpid());
    mkdir(g_dir, 0755);
    l3c_model *m = tiny_model("base", 2);
    if (m) {
        test_op(m);
        test_round_trips(m);
        test_alloc_fail(m);
        test_context(m);
    }
    l3c_model_free(m);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return CHECK_DONE("test_lora");
}
