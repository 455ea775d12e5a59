/*
 * fuzz_safetensors.c -- libFuzzer harness for the .safetensors reader (src/io/safetensors.c).
 * Opens the input with l3c_safetensors_open_memory; on success checks the reader's invariants
 * (every tensor found by name, its bytes inside the data section, its byte size = elements x
 * element size, ranges contiguous) and reads every byte of every tensor (ASan catches a range
 * that escapes the buffer); on failure checks that no reader came back. A broken invariant traps.
 * Build and run: `make fuzz-safetensors` (fuzz.mk).
 */
#include "io/safetensors.h"

#include <string.h>

#define FUZZ_REQUIRE(c)                                                                            \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static volatile unsigned g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    l3c_safetensors *s = NULL;
    l3c_status st = l3c_safetensors_open_memory(data, size, "fuzz", &s);
    if (st != L3C_OK) {
        FUZZ_REQUIRE(s == NULL);
        return 0;
    }
    FUZZ_REQUIRE(s && s->data_start >= 8 && s->data_start <= size);
    size_t total = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const l3c_st_tensor *t = &s->tensors[i];
        FUZZ_REQUIRE(l3c_safetensors_find(s, t->name) == t);
        FUZZ_REQUIRE(t->nbytes == (size_t)t->n_elements * t->elem_size);
        FUZZ_REQUIRE(t->offset <= size - s->data_start && t->nbytes <= size - s->data_start - t->offset);
        FUZZ_REQUIRE((const uint8_t *)t->data == data + s->data_start + t->offset);
        unsigned acc = 0;
        for (size_t k = 0; k < t->nbytes; k++) acc += ((const uint8_t *)t->data)[k];
        g_sink += acc;
        total += t->nbytes;
    }
    FUZZ_REQUIRE(total == size - s->data_start);
    for (size_t i = 0; i < s->n_meta; i++)
        FUZZ_REQUIRE(l3c_safetensors_meta(s, s->meta_key[i]) != NULL);
    l3c_safetensors_close(s);
    return 0;
}
