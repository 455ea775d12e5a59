/*
 * test_hostile_model.c -- l3c_model_load on deterministic hostile llama GGUFs built here with
 * gguf_builder (a tiny valid model, then one field overridden, deleted or reshaped). Each must
 * fail with the expected status and a message naming the file and the key or tensor at fault;
 * none may crash, and the valid base must load and decode. Also: every truncation of the valid
 * file and a one-byte corruption sweep over its metadata fail cleanly (or load and decode), and
 * regressions of the fuzz findings of tests/fuzz/fuzz_model.c.
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

static char g_path[256];

/* Loads the file at g_path; when it loads, a small context decodes two tokens. */
static l3c_status load_and_run(int *decoded) {
    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = 1;
    l3c_model *m = (l3c_model *)1;
    l3c_status st = l3c_model_load(g_path, &mp, &m);
    *decoded = 0;
    if (st != L3C_OK) {
        CHECK(m == NULL);
        return st;
    }
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = 8, cp.n_batch = 4, cp.n_threads = 1, cp.kv_type = L3C_KV_F32;
    l3c_context *c = NULL;
    if (l3c_context_create(m, &cp, &c) == L3C_OK) {
        l3c_model_info info;
        l3c_model_get_info(m, &info);
        int32_t ids[2] = {0, info.n_vocab - 1}, pos[2] = {0, 1};
        l3c_batch b = {2, ids, pos, NULL, NULL};
        *decoded = l3c_decode(c, &b) == L3C_OK && l3c_get_logits(c, 1) != NULL;
        l3c_context_free(c);
    }
    l3c_model_free(m);
    return st;
}

typedef void (*mutator)(ggf *f);

/* Builds the default tiny model, applies fn, expects `want` and every needle in the message. */
static void expect(const char *what, mutator fn, l3c_status want, const char *needle1,
                   const char *needle2) {
    ggf f = {0};
    ggb_llama_opts o = ggb_llama_default();
    ggb_tiny_llama(&f, &o);
    if (fn) fn(&f);
    CHECK(ggf_write_file(&f, g_path) == 0);
    ggf_free(&f);
    int decoded;
    l3c_status st = load_and_run(&decoded);
    const char *err = l3c_last_error();
    CHECK_MSG(st == want, "%s: got %s (%s), want %s", what, l3c_status_name(st), err,
              l3c_status_name(want));
    if (want == L3C_OK) {
        CHECK_MSG(decoded, "%s: loaded but did not decode", what);
    } else {
        CHECK_MSG(strstr(err, g_path) != NULL, "%s: message does not name the file: %s", what, err);
        CHECK_MSG(!needle1 || strstr(err, needle1), "%s: message lacks '%s': %s", what, needle1, err);
        CHECK_MSG(!needle2 || strstr(err, needle2), "%s: message lacks '%s': %s", what, needle2, err);
    }
    unlink(g_path);
}

static void reshape(ggf *f, const char *name, uint32_t n_dims, int64_t a, int64_t b, int64_t c) {
    ggf_tensor *t = ggf_tensor_get(f, name);
    if (!t) return;
    int64_t ne[4] = {a, b, c, 1};
    uint8_t *d = malloc(t->nbytes);
    memcpy(d, t->data, t->nbytes);
    size_t nb = t->nbytes;
    ggf_tensor_add(f, name, n_dims, ne, t->type, d, nb);
    free(d);
}

/* ---- the hostile variants (default: V 16, E 8, H 2, HK 1, hd 4, FF 16, 1 layer) */
static void m_head0(ggf *f) { ggf_kv_u32(f, "llama.attention.head_count", 0); }
static void m_kv_not_dividing(ggf *f) { ggf_kv_u32(f, "llama.attention.head_count_kv", 3); }
static void m_kv0(ggf *f) { ggf_kv_u32(f, "llama.attention.head_count_kv", 0); }
static void m_embd_heads(ggf *f) { ggf_kv_u32(f, "llama.attention.head_count", 3); }
static void m_blocks_huge(ggf *f) { ggf_kv_u32(f, "llama.block_count", 1000000000u); }
static void m_blocks_many(ggf *f) { ggf_kv_u32(f, "llama.block_count", 65536); }
static void m_blocks0(ggf *f) { ggf_kv_u32(f, "llama.block_count", 0); }
static void m_ctx0(ggf *f) { ggf_kv_u32(f, "llama.context_length", 0); }
static void m_ctx_neg(ggf *f) { ggf_kv_i32(f, "llama.context_length", -5); }
static void m_ctx_2_31(ggf *f) { ggf_kv_u32(f, "llama.context_length", 2147483648u); }
static void m_ctx_i64(ggf *f) { ggf_kv_i64(f, "llama.context_length", INT64_MIN); }
static void m_ctx_str(ggf *f) { ggf_kv_str(f, "llama.context_length", "32"); }
static void m_embd_missing(ggf *f) { ggf_del_kv(f, "llama.embedding_length"); }
static void m_rope_odd(ggf *f) { ggf_kv_u32(f, "llama.rope.dimension_count", 3); }
static void m_rope_big(ggf *f) { ggf_kv_u32(f, "llama.rope.dimension_count", 6); }
static void m_rope_absent_odd_hd(ggf *f) { /* E 6 / H 2: hd 3 */
    ggf_del_kv(f, "llama.rope.dimension_count");
    ggf_kv_u32(f, "llama.embedding_length", 6);
}
static void m_eps0(ggf *f) { ggf_kv_f32(f, "llama.attention.layer_norm_rms_epsilon", 0.0f); }
static void m_eps_nan(ggf *f) { ggf_kv_f32(f, "llama.attention.layer_norm_rms_epsilon", NAN); }
static void m_theta_inf(ggf *f) { ggf_kv_f32(f, "llama.rope.freq_base", INFINITY); }
static void m_arch(ggf *f) { ggf_kv_str(f, "general.architecture", "mistral"); }
static void m_ff_huge(ggf *f) { ggf_kv_u32(f, "llama.feed_forward_length", 1u << 20); }
static void m_embd_huge(ggf *f) { ggf_kv_u32(f, "llama.embedding_length", 1u << 30); }
static void m_vocab_size_small(ggf *f) { ggf_kv_u32(f, "llama.vocab_size", 12); }
static void m_vocab_size_big(ggf *f) { ggf_kv_u32(f, "llama.vocab_size", 20); }
static void m_tok_more_than_embd(ggf *f) { /* 20 tokens, no vocab_size: token_embd must have 20 rows */
    ggf_del_kv(f, "llama.vocab_size");
    const char *tok[20];
    int32_t types[20];
    float sc[20];
    for (int i = 0; i < 20; i++) tok[i] = (const char *[]){"<unk>", "<s>", "</s>", "a", "b"}[i < 5 ? i : 4],
                                 types[i] = 1, sc[i] = 0;
    ggf_kv_arr_str(f, "tokenizer.ggml.tokens", tok, 20);
    ggf_kv_arr_i32(f, "tokenizer.ggml.token_type", types, 20);
    ggf_kv_arr_f32(f, "tokenizer.ggml.scores", sc, 20);
}
static void m_tok_more_than_vocab(ggf *f) { /* vocab_size 16 (= token_embd), 20 tokens */
    m_tok_more_than_embd(f);
    ggf_kv_u32(f, "llama.vocab_size", 16);
}
static void m_types_short(ggf *f) {
    int32_t t[15];
    for (int i = 0; i < 15; i++) t[i] = 1;
    ggf_kv_arr_i32(f, "tokenizer.ggml.token_type", t, 15);
}
static void m_scores_long(ggf *f) {
    float s[17] = {0};
    ggf_kv_arr_f32(f, "tokenizer.ggml.scores", s, 17);
}
static void m_tokens_empty(ggf *f) { ggf_kv_arr_str(f, "tokenizer.ggml.tokens", NULL, 0); }
static void m_tokens_not_str(ggf *f) {
    int32_t t[16] = {0};
    ggf_kv_arr_i32(f, "tokenizer.ggml.tokens", t, 16);
}
static void m_bos_range(ggf *f) { ggf_kv_u32(f, "tokenizer.ggml.bos_token_id", 16); }
static void m_eos_range(ggf *f) { ggf_kv_u32(f, "tokenizer.ggml.eos_token_id", 4000000000u); }
static void m_bos_neg(ggf *f) { ggf_kv_i32(f, "tokenizer.ggml.bos_token_id", -1); }
static void m_tok_model(ggf *f) { ggf_kv_str(f, "tokenizer.ggml.model", "bert"); }
static void m_missing_norm(ggf *f) { ggf_del_tensor(f, "output_norm.weight"); }
static void m_missing_q(ggf *f) { ggf_del_tensor(f, "blk.0.attn_q.weight"); }
static void m_transposed(ggf *f) { reshape(f, "blk.0.ffn_gate.weight", 2, 16, 8, 0); }
static void m_3d(ggf *f) { reshape(f, "blk.0.ffn_up.weight", 3, 8, 8, 2); }
static void m_flat(ggf *f) { reshape(f, "blk.0.attn_k.weight", 1, 32, 0, 0); }
static void m_norm_2d(ggf *f) { reshape(f, "blk.0.attn_norm.weight", 2, 4, 2, 0); }
static void m_embd_rows(ggf *f) { reshape(f, "token_embd.weight", 2, 8, 8, 0); }
static void m_output_shape(ggf *f) { reshape(f, "output.weight", 2, 16, 8, 0); }
static void m_norm_q8(ggf *f) {
    int64_t ne[4] = {8, 1, 1, 1};
    ggf_tensor_add(f, "blk.0.ffn_norm.weight", 1, ne, 8, NULL, 0);
}
static void m_unsupported_type(ggf *f) { /* Q8_K: a type the kernels only use for activations */
    int64_t ne[4] = {256, 16, 1, 1};
    ggf_kv_u32(f, "llama.feed_forward_length", 16);
    ggf_tensor_add(f, "blk.0.ffn_down.weight", 2, (int64_t[4]){16, 8, 1, 1}, 15, NULL, 0);
    (void)ne;
}
static void m_rope_freqs_len(ggf *f) {
    float r[3] = {1, 1, 1};
    ggf_tensor_add(f, "rope_freqs.weight", 1, (int64_t[4]){3, 1, 1, 1}, 0, r, sizeof r);
}
static void m_rope_freqs_neg(ggf *f) {
    float r[2] = {1, -1};
    ggf_tensor_add(f, "rope_freqs.weight", 1, (int64_t[4]){2, 1, 1, 1}, 0, r, sizeof r);
}
static void m_tied(ggf *f) { ggf_del_tensor(f, "output.weight"); }
static void m_no_tokenizer(ggf *f) { ggf_del_kv(f, "tokenizer.ggml.model"); }

static void test_variants(void) {
    expect("valid", NULL, L3C_OK, NULL, NULL);
    expect("tied output", m_tied, L3C_OK, NULL, NULL);
    expect("no tokenizer", m_no_tokenizer, L3C_OK, NULL, NULL);
    expect("head_count 0", m_head0, L3C_ERR_FORMAT, "llama.attention.head_count", NULL);
    expect("head_count_kv not dividing", m_kv_not_dividing, L3C_ERR_FORMAT, "llama.attention.head_count_kv", NULL);
    expect("head_count_kv 0", m_kv0, L3C_ERR_FORMAT, "llama.attention.head_count_kv", NULL);
    expect("embedding % heads", m_embd_heads, L3C_ERR_FORMAT, "llama.embedding_length", "head_count");
    expect("block_count 1e9", m_blocks_huge, L3C_ERR_FORMAT, "llama.block_count", NULL);
    expect("block_count 65536, 1 block", m_blocks_many, L3C_ERR_FORMAT, "blk.1.", NULL);
    expect("block_count 0", m_blocks0, L3C_ERR_FORMAT, "llama.block_count", NULL);
    expect("context_length 0", m_ctx0, L3C_ERR_FORMAT, "llama.context_length", NULL);
    expect("context_length -5", m_ctx_neg, L3C_ERR_FORMAT, "llama.context_length", NULL);
    expect("context_length 2^31", m_ctx_2_31, L3C_ERR_FORMAT, "llama.context_length", NULL);
    expect("context_length INT64_MIN", m_ctx_i64, L3C_ERR_FORMAT, "llama.context_length", NULL);
    expect("context_length string", m_ctx_str, L3C_ERR_FORMAT, "llama.context_length", NULL);
    expect("embedding_length missing", m_embd_missing, L3C_ERR_FORMAT, "llama.embedding_length", NULL);
    expect("rope dims odd", m_rope_odd, L3C_ERR_FORMAT, "llama.rope.dimension_count", NULL);
    expect("rope dims > head_dim", m_rope_big, L3C_ERR_FORMAT, "llama.rope.dimension_count", NULL);
    expect("head_dim odd", m_rope_absent_odd_hd, L3C_ERR_FORMAT, "llama.rope.dimension_count", NULL);
    expect("eps 0", m_eps0, L3C_ERR_FORMAT, "layer_norm_rms_epsilon", NULL);
    expect("eps NaN", m_eps_nan, L3C_ERR_FORMAT, "layer_norm_rms_epsilon", NULL);
    expect("freq_base inf", m_theta_inf, L3C_ERR_FORMAT, "llama.rope.freq_base", NULL);
    expect("architecture", m_arch, L3C_ERR_UNSUPPORTED, "general.architecture", NULL);
    expect("ffn 2^20", m_ff_huge, L3C_ERR_FORMAT, "blk.0.ffn_gate.weight", NULL);
    expect("embedding 2^30", m_embd_huge, L3C_ERR_FORMAT, "llama.embedding_length", NULL);
    expect("vocab_size < rows", m_vocab_size_small, L3C_ERR_FORMAT, "token_embd.weight", NULL);
    expect("vocab_size > rows", m_vocab_size_big, L3C_ERR_FORMAT, "token_embd.weight", NULL);
    expect("tokens > token_embd rows", m_tok_more_than_embd, L3C_ERR_FORMAT, "token_embd.weight", NULL);
    expect("tokens > vocab_size", m_tok_more_than_vocab, L3C_ERR_FORMAT, "tokenizer.ggml.tokens", NULL);
    expect("token_type short", m_types_short, L3C_ERR_FORMAT, "tokenizer.ggml.token_type", NULL);
    expect("scores long", m_scores_long, L3C_ERR_FORMAT, "tokenizer.ggml.scores", NULL);
    expect("tokens empty", m_tokens_empty, L3C_ERR_FORMAT, "tokenizer.ggml.tokens", NULL);
    expect("tokens not strings", m_tokens_not_str, L3C_ERR_FORMAT, "tokenizer.ggml.tokens", NULL);
    expect("bos = n_vocab", m_bos_range, L3C_ERR_FORMAT, "tokenizer.ggml.bos_token_id", NULL);
    expect("eos 4e9", m_eos_range, L3C_ERR_FORMAT, "tokenizer.ggml.eos_token_id", NULL);
    expect("bos -1", m_bos_neg, L3C_ERR_FORMAT, "tokenizer.ggml.bos_token_id", NULL);
    expect("tokenizer model", m_tok_model, L3C_ERR_UNSUPPORTED, "tokenizer.ggml.model", NULL);
    expect("missing output_norm", m_missing_norm, L3C_ERR_FORMAT, "output_norm.weight", NULL);
    expect("missing attn_q", m_missing_q, L3C_ERR_FORMAT, "blk.0.attn_q.weight", NULL);
    expect("transposed ffn_gate", m_transposed, L3C_ERR_FORMAT, "blk.0.ffn_gate.weight", "[16, 8]");
    expect("3-D ffn_up", m_3d, L3C_ERR_FORMAT, "blk.0.ffn_up.weight", NULL);
    expect("flat attn_k", m_flat, L3C_ERR_FORMAT, "blk.0.attn_k.weight", NULL);
    expect("2-D attn_norm", m_norm_2d, L3C_ERR_FORMAT, "blk.0.attn_norm.weight", NULL);
    expect("token_embd rows", m_embd_rows, L3C_ERR_FORMAT, "token_embd.weight", NULL);
    expect("output transposed", m_output_shape, L3C_ERR_FORMAT, "output.weight", NULL);
    expect("Q8_0 norm of 8", m_norm_q8, L3C_ERR_FORMAT, "blk.0.ffn_norm.weight", NULL);
    expect("Q8_K matrix", m_unsupported_type, L3C_ERR_FORMAT, "blk.0.ffn_down.weight", NULL);
    expect("rope_freqs length", m_rope_freqs_len, L3C_ERR_FORMAT, "rope_freqs.weight", NULL);
    expect("rope_freqs negative", m_rope_freqs_neg, L3C_ERR_FORMAT, "rope_freqs.weight", NULL);
}

/* Every truncation of the valid file, and 0x00 / 0xff / +1 at every metadata byte: a clean error,
 * or a model that decodes. */
static void test_sweeps(void) {
    ggf f = {0};
    ggb_llama_opts o = ggb_llama_default();
    ggb_tiny_llama(&f, &o);
    ggb full = {0};
    size_t meta_end = ggf_serialize(&f, &full);
    ggf_free(&f);
    int bad = 0, loaded = 0;
    for (size_t n = 0; n < full.n; n += (n < meta_end ? 1 : 61)) {
        FILE *fp = fopen(g_path, "wb");
        fwrite(full.d, 1, n, fp);
        fclose(fp);
        int decoded;
        l3c_status st = load_and_run(&decoded);
        bad += st == L3C_OK;
    }
    CHECK_MSG(bad == 0, "%d truncations loaded", bad);
    static const int delta[3] = {0x00, 0xff, -1};
    for (size_t i = 0; i < meta_end; i++) {
        for (int k = 0; k < 3; k++) {
            uint8_t old = full.d[i];
            full.d[i] = (uint8_t)(delta[k] >= 0 ? delta[k] : old + 1);
            if (full.d[i] == old) continue;
            FILE *fp = fopen(g_path, "wb");
            fwrite(full.d, 1, full.n, fp);
            fclose(fp);
            int decoded;
            l3c_status st = load_and_run(&decoded);
            if (st == L3C_OK) loaded++;
            else CHECK_MSG(l3c_last_error()[0] != '\0', "byte %zu: error without a message", i);
            full.d[i] = old;
        }
    }
    fprintf(stderr, "test_hostile_model: %zu-byte model, %zu metadata bytes x 3 corruptions, %d loaded\n",
            full.n, meta_end, loaded);
    ggb_free(&full);
    unlink(g_path);
}

int main(void) {
    snprintf(g_path, sizeof g_path, "/tmp/l3c_hostile_%d.gguf", (int)getpid());
    test_variants();
    test_sweeps();
    return CHECK_DONE("test_hostile_model");
}
