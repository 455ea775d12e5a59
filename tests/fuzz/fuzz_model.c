/*
 * fuzz_model.c -- libFuzzer harness for model loading: the input is a GGUF file, written to a
 * memfd and given to l3c_model_load (through /proc/self/fd, so the mmap path runs). When it
 * loads, the harness checks what load promises (every bound weight has the shape the
 * hyperparameters imply, the tokenizer fits the vocabulary), creates a small context (n_ctx 8,
 * one thread; the last input byte picks the KV type and mmap or read) and decodes a two-token batch then one
 * more token, and tokenizes / detokenizes a short text with the model's tokenizer.
 * A failure must leave *out NULL and a message. Memory is bounded by libFuzzer's -rss_limit_mb
 * and -malloc_limit_mb (fuzz.mk): an absurd allocation is a finding.
 *
 *   fuzz_model --write-seeds DIR   writes tiny valid llama models and hostile variants of them
 * Build and run: `make fuzz-model` (fuzz.mk).
 */
#include "gguf_builder.h"
#include "model/model.h"
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_REQUIRE(c)                                                                            \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: FUZZ_REQUIRE(%s) failed\n", __FILE__, __LINE__, #c);         \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

static int g_fd = -1;
static char g_path[64];
static long g_inputs, g_loaded, g_decoded; /* printed at exit: how deep the inputs got */

static void print_stats(void) {
    fprintf(stderr, "fuzz_model: %ld inputs, %ld loaded, %ld decoded\n", g_inputs, g_loaded, g_decoded);
}

static void check_weight(const l3c_weight *w, int64_t n_in, int64_t n_out) {
    FUZZ_REQUIRE(w->data != NULL && w->n_in == n_in && w->n_out == n_out);
    size_t rb;
    FUZZ_REQUIRE(l3c_row_size(w->type, n_in, &rb) && rb == w->row_bytes);
}

static void check_model(const l3c_model *m) {
    const l3c_config *c = &m->cfg;
    FUZZ_REQUIRE(c->n_embd == c->n_head * c->head_dim && c->n_head % c->n_head_kv == 0);
    FUZZ_REQUIRE(c->n_rot % 2 == 0 && c->n_rot <= c->head_dim && c->n_rot >= 2);
    const int64_t E = c->n_embd, q = (int64_t)c->n_head * c->head_dim,
                  kv = (int64_t)c->n_head_kv * c->head_dim;
    check_weight(&m->w.tok_embd, E, c->n_vocab);
    check_weight(&m->w.output, E, c->n_vocab);
    for (int l = 0; l < c->n_layer; l++) {
        const l3c_layer *L = &m->w.layers[l];
        FUZZ_REQUIRE(L->attn_norm && L->ffn_norm);
        check_weight(&L->wq, E, q);
        check_weight(&L->wk, E, kv);
        check_weight(&L->wv, E, kv);
        check_weight(&L->wo, q, E);
        check_weight(&L->w_gate, E, c->n_ff);
        check_weight(&L->w_up, E, c->n_ff);
        check_weight(&L->w_down, c->n_ff, E);
    }
    if (m->tok) FUZZ_REQUIRE(m->tok->n_vocab <= c->n_vocab);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (ftruncate(g_fd, 0) != 0 || pwrite(g_fd, data, size, 0) != (ssize_t)size) __builtin_trap();
    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = 1;
    mp.use_mmap = size == 0 || !(data[size - 1] & 4); /* else the read-into-memory path */
    l3c_model *m = (l3c_model *)&g_fd;
    g_inputs++;
    l3c_status st = l3c_model_load(g_path, &mp, &m);
    if (st != L3C_OK) {
        FUZZ_REQUIRE(m == NULL && l3c_last_error()[0] != '\0');
        return 0;
    }
    g_loaded++;
    check_model(m);
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = 8, cp.n_batch = 4, cp.n_threads = 1;
    cp.kv_type = size ? data[size - 1] % 3 : 0;
    l3c_context *c = (l3c_context *)&g_fd;
    st = l3c_context_create(m, &cp, &c);
    if (st != L3C_OK) {
        FUZZ_REQUIRE(c == NULL);
    } else {
        const int32_t V = m->cfg.n_vocab;
        int32_t ids[3] = {0, V - 1, V / 2}, pos[3] = {0, 1, 2};
        l3c_batch b = {2, ids, pos, NULL, NULL};
        FUZZ_REQUIRE(l3c_decode(c, &b) == L3C_OK && l3c_get_logits(c, 1) != NULL);
        l3c_batch b1 = {1, ids + 2, pos + 2, NULL, NULL};
        FUZZ_REQUIRE(l3c_decode(c, &b1) == L3C_OK && l3c_get_logits(c, 0) != NULL);
        FUZZ_REQUIRE(l3c_kv_seq_len(c, 0) == 3);
        g_decoded++;
        l3c_context_free(c);
    }
    const l3c_tokenizer *t = l3c_model_tokenizer(m);
    if (t) {
        static const char text[] = "Hello <s> world 12 \xe6\x97\xa5 \xff";
        int32_t ids[64];
        int64_t n = l3c_tokenize(t, text, sizeof text - 1, ids, 64, L3C_TOKENIZE_ADD_BOS | L3C_TOKENIZE_PARSE_SPECIAL);
        if (n > 0) {
            for (int64_t i = 0; i < n; i++) FUZZ_REQUIRE(ids[i] >= 0 && ids[i] < m->cfg.n_vocab);
            char buf[512];
            (void)l3c_detokenize(t, ids, n, buf, sizeof buf, 0);
        }
        (void)l3c_chat_template_detect(m);
    }
    l3c_model_info info;
    l3c_model_get_info(m, &info);
    for (int64_t i = 0; i < l3c_model_n_tensors(m); i++) {
        l3c_tensor_desc d;
        FUZZ_REQUIRE(l3c_model_tensor_desc(m, i, &d) == L3C_OK && d.name && d.type_name);
    }
    (void)l3c_model_meta_str(m, "general.name");
    (void)l3c_model_kv_bytes_per_pos(m, L3C_KV_Q8_0);
    l3c_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- seeds */

static void seed(const char *dir, const char *name, const ggf *f) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    if (ggf_write_file(f, path) != 0) {
        perror(path);
        exit(1);
    }
}

static void write_seeds(const char *dir) {
    mkdir(dir, 0755);
    ggb_llama_opts o = ggb_llama_default();
    ggf f = {0};
    ggb_tiny_llama(&f, &o);
    seed(dir, "tiny", &f);
    ggf_kv_u32(&f, "llama.attention.head_count", 3); /* variations of the tiny model */
    seed(dir, "heads_not_dividing", &f);
    ggf_kv_u32(&f, "llama.attention.head_count", 2);
    ggf_kv_u32(&f, "llama.block_count", 1000000000u);
    seed(dir, "blocks_huge", &f);
    ggf_kv_u32(&f, "llama.block_count", 1);
    ggf_kv_u32(&f, "llama.embedding_length", 1u << 20);
    seed(dir, "embd_huge", &f);
    ggf_kv_u32(&f, "llama.embedding_length", 8);
    ggf_del_tensor(&f, "blk.0.ffn_up.weight");
    seed(dir, "missing_tensor", &f);
    ggf_free(&f);

    o.tied = 1, o.n_layer = 2;
    ggb_tiny_llama(&f, &o);
    seed(dir, "tied_2layers", &f);
    ggf_tensor_add(&f, "blk.1.ffn_gate.weight", 2, (int64_t[4]){16, 8, 1, 1}, 0, NULL, 16 * 8 * 4);
    seed(dir, "wrong_shape", &f);
    ggf_tensor_add(&f, "blk.1.ffn_gate.weight", 2, (int64_t[4]){8, 16, 1, 1}, 20, NULL, 8 * 16);
    seed(dir, "unsupported_type", &f);
    ggf_free(&f);

    o = ggb_llama_default();
    o.wtype = 1, o.n_head = 4, o.n_head_kv = 2, o.tokenizer = 0;
    ggb_tiny_llama(&f, &o);
    ggf_tensor_add(&f, "rope_freqs.weight", 1, (int64_t[4]){1, 1, 1, 1}, 0, (float[]){2.0f}, 4);
    seed(dir, "f16_gqa_rope_freqs", &f);
    ggf_free(&f);

    o = ggb_llama_default();
    o.wtype = 8, o.n_embd = 32, o.n_ff = 32, o.n_head = 1, o.n_head_kv = 1, o.n_vocab = 8;
    ggb_tiny_llama(&f, &o);
    seed(dir, "q8_0_hd32", &f);
    ggf_free(&f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    if (*argc == 3 && strcmp((*argv)[1], "--write-seeds") == 0) {
        write_seeds((*argv)[2]);
        exit(0);
    }
    g_fd = memfd_create("fuzz_model.gguf", 0);
    if (g_fd < 0) {
        perror("memfd_create");
        exit(1);
    }
    snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    atexit(print_stats);
    return 0;
}
