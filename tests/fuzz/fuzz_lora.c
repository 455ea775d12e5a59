/*
 * fuzz_lora.c -- libFuzzer harness for the GGUF LoRA loader (src/model/lora_io.c) on GGUF bytes:
 * l3c_lora_load_gguf_memory for a fixed small GQA config (n_embd 8, 2 heads / 1 kv head, n_ff 16,
 * 2 layers). On success checks the adapter's invariants (every matrix inside the arena with the
 * model's n_in / n_out and a rank of 1..a->rank, the arena exactly filled) and reads every float;
 * on failure checks that no adapter came back. A broken invariant traps.
 *   fuzz_lora --write-seeds DIR   writes valid adapters (F32 / F16 / BF16, all or some targets,
 *                                 mixed ranks) and hostile variants of them
 * Build and run: `make fuzz-lora` (fuzz.mk).
 */
#include "gguf_builder.h"
#include "model/lora.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define FUZZ_REQUIRE(c)                                                                            \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static const l3c_config CFG = {.n_vocab = 16,
                               .n_ctx_train = 32,
                               .n_embd = 8,
                               .n_layer = 2,
                               .n_head = 2,
                               .n_head_kv = 1,
                               .head_dim = 4,
                               .n_ff = 16,
                               .n_rot = 4};
static volatile float g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    l3c_lora_adapter *a = NULL;
    l3c_status st = l3c_lora_load_gguf_memory(data, size, "fuzz", &CFG, &a);
    if (st != L3C_OK) {
        FUZZ_REQUIRE(a == NULL);
        return 0;
    }
    FUZZ_REQUIRE(a && a->n_layer == CFG.n_layer && a->rank >= 1);
    size_t used = 0;
    for (int32_t l = 0; l < a->n_layer; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
            const l3c_lora_mat *m = l3c_lora_get(a, l, (l3c_lora_target)t);
            if (!m) continue;
            FUZZ_REQUIRE(a->targets & (1u << t));
            FUZZ_REQUIRE(m->rank >= 1 && m->rank <= a->rank && m->n_in >= 1 && m->n_out >= 1);
            FUZZ_REQUIRE(m->a >= a->arena && m->b == m->a + (size_t)m->rank * (size_t)m->n_in);
            used += (size_t)m->rank * (size_t)(m->n_in + m->n_out);
            FUZZ_REQUIRE(m->b + (size_t)m->rank * (size_t)m->n_out <= a->arena + a->n_floats);
        }
    FUZZ_REQUIRE(used == a->n_floats);
    float acc = 0;
    for (size_t i = 0; i < a->n_floats; i++)
        acc += a->arena[i];
    g_sink = acc;
    l3c_lora_free(a);
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

/* blk.L.<target>.weight.lora_a / _b of the given rank and type (0 F32, 1 F16, 30 BF16) */
static void add_mat(ggf *f, int l, const char *target, int64_t n_in, int64_t n_out, int64_t rank,
                    uint32_t type) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", l, target);
    ggf_tensor_add(f, name, 2, (int64_t[4]){n_in, rank, 1, 1}, type, NULL,
                   ggf_type_bytes(type, n_in * rank));
    name[strlen(name) - 1] = 'b';
    ggf_tensor_add(f, name, 2, (int64_t[4]){rank, n_out, 1, 1}, type, NULL,
                   ggf_type_bytes(type, n_out * rank));
}

static void adapter(ggf *f, uint32_t type, int all, int rank) {
    memset(f, 0, sizeof *f);
    ggf_kv_str(f, "general.architecture", "llama");
    ggf_kv_str(f, "general.type", "adapter");
    ggf_kv_str(f, "adapter.type", "lora");
    ggf_kv_f32(f, "adapter.lora.alpha", 2.0f * (float)rank);
    for (int l = 0; l < 2; l++) {
        add_mat(f, l, "attn_q", 8, 8, rank, type);
        add_mat(f, l, "attn_v", 8, 4, l ? 1 : rank, type);
        if (!all) continue;
        add_mat(f, l, "attn_k", 8, 4, rank, type);
        add_mat(f, l, "attn_output", 8, 8, rank, type);
        add_mat(f, l, "ffn_gate", 8, 16, rank, type);
        add_mat(f, l, "ffn_up", 8, 16, rank, type);
        add_mat(f, l, "ffn_down", 16, 8, rank, type);
    }
}

static void write_seeds(const char *dir) {
    mkdir(dir, 0755);
    ggf f;
    adapter(&f, 0, 1, 2);
    seed(dir, "all_f32", &f);
    ggf_del_tensor(&f, "blk.1.ffn_up.weight.lora_b");
    seed(dir, "missing_b", &f);
    add_mat(&f, 1, "ffn_up", 8, 16, 3, 0);
    ggf_tensor_add(&f, "blk.1.ffn_up.weight.lora_b", 2, (int64_t[4]){2, 16, 1, 1}, 0, NULL,
                   2 * 16 * 4);
    seed(dir, "rank_mismatch", &f);
    ggf_tensor_add(&f, "blk.2.attn_q.weight.lora_a", 2, (int64_t[4]){8, 2, 1, 1}, 0, NULL,
                   8 * 2 * 4);
    seed(dir, "layer_out_of_range", &f);
    ggf_free(&f);
    adapter(&f, 1, 0, 1);
    seed(dir, "qv_f16_mixed_ranks", &f);
    ggf_kv_str(&f, "general.type", "model");
    seed(dir, "not_adapter", &f);
    ggf_free(&f);
    adapter(&f, 30, 1, 4);
    seed(dir, "all_bf16", &f);
    ggf_tensor_add(&f, "blk.0.attn_q.weight.lora_a", 2, (int64_t[4]){16, 4, 1, 1}, 30, NULL,
                   16 * 4 * 2);
    seed(dir, "wrong_n_in", &f);
    ggf_free(&f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    if (*argc == 3 && strcmp((*argv)[1], "--write-seeds") == 0) {
        write_seeds((*argv)[2]);
        exit(0);
    }
    return 0;
}
