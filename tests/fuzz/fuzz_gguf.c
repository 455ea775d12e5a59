/*
 * fuzz_gguf.c -- libFuzzer harness for the GGUF reader (src/io/gguf.c). Opens the input with
 * l3c_gguf_open_memory; on success exercises every getter and lookup on every kv and tensor and
 * checks the reader's invariants (lookups find what iteration sees, every tensor lies inside the
 * buffer); on failure checks that no reader came back. A broken invariant traps.
 * Build and run: `make fuzz` (fuzz.mk).
 */
#include "io/gguf.h"

#include <string.h>

#define FUZZ_REQUIRE(c)                                                                            \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static volatile double g_sink;

static void exercise_kv(const l3c_gguf *g, const l3c_gguf_kv *kv) {
    char key[256];
    if (kv->key.len >= sizeof key || memchr(kv->key.ptr, 0, (size_t)kv->key.len)) return;
    memcpy(key, kv->key.ptr, (size_t)kv->key.len);
    key[kv->key.len] = '\0';
    FUZZ_REQUIRE(l3c_gguf_find(g, key) == kv);

    int64_t i64;
    uint32_t u32;
    float f;
    bool b;
    l3c_str s;
    const l3c_gguf_kv *arr;
    for (int optional = 0; optional < 2; optional++) {
        (void)l3c_gguf_get_i64(g, key, optional, &i64);
        (void)l3c_gguf_get_u32(g, key, optional, &u32);
        (void)l3c_gguf_get_f32(g, key, optional, &f);
        (void)l3c_gguf_get_bool(g, key, optional, &b);
        if (l3c_gguf_get_str(g, key, optional, &s) == L3C_OK) {
            FUZZ_REQUIRE((const uint8_t *)s.ptr >= g->base && s.len <= g->size);
            FUZZ_REQUIRE((size_t)((const uint8_t *)s.ptr - g->base) <= g->size - s.len);
        }
        for (int want = -1; want < L3C_GGUF_VTYPE_COUNT; want++) {
            if (l3c_gguf_get_arr(g, key, optional, want, &arr) == L3C_OK) FUZZ_REQUIRE(arr == kv);
        }
    }
    uint64_t n = kv->n < 4096 ? kv->n : 4096;
    double acc = 0;
    for (uint64_t i = 0; i <= n; i++)
        acc += l3c_gguf_arr_f64(kv, i) + (double)l3c_gguf_arr_i64(kv, i);
    if (kv->strs) {
        for (uint64_t i = 0; i < n; i++) {
            if (kv->strs[i].len) acc += (unsigned char)kv->strs[i].ptr[kv->strs[i].len - 1];
        }
    }
    g_sink = acc;
    (void)l3c_gguf_vtype_name(kv->type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    l3c_gguf *g = (l3c_gguf *)&g_sink;
    l3c_status st = l3c_gguf_open_memory(data, size, "fuzz.gguf", &g);
    if (st != L3C_OK) {
        FUZZ_REQUIRE(g == NULL);
        return 0;
    }
    FUZZ_REQUIRE(g->alignment && (g->alignment & (g->alignment - 1)) == 0);
    for (uint64_t i = 0; i < g->n_kv; i++)
        exercise_kv(g, &g->kv[i]);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        FUZZ_REQUIRE(l3c_gguf_find_tensor(g, t->name) == t);
        FUZZ_REQUIRE(t->n_dims >= 1 && t->n_dims <= 4 && t->n_elements >= 1);
        const uint8_t *p = t->data;
        FUZZ_REQUIRE(p >= g->base && t->nbytes <= g->size &&
                     (size_t)(p - g->base) <= g->size - t->nbytes);
        if (t->nbytes) g_sink = p[0] + p[t->nbytes - 1];
    }
    (void)l3c_gguf_find(g, "general.architecture");
    (void)l3c_gguf_find_tensor(g, "token_embd.weight");
    l3c_gguf_close(g);
    return 0;
}
