/*
 * gguf_builder.h -- writes GGUF files for tests and fuzz seeds, independently of the reader
 * (plain libc; aborts only on the harness's own out-of-memory).
 *
 *  - ggb: a growable byte buffer with little-endian put_* helpers (byte-level hostile files);
 *  - ggf: a file description (ordered kvs and tensors) that serialises to GGUF v3, alignment 32.
 *    Setting a kv or tensor that exists replaces it in place, so a test builds a valid file and
 *    then overrides, deletes or reshapes one field to make a hostile variant;
 *  - ggb_tiny_llama: a small valid llama model (weights + SentencePiece vocabulary), the seed of
 *    tests/fuzz/fuzz_model.c and the base of tests/unit/test_hostile_model.c.
 */
#ifndef L3C_GGUF_BUILDER_H
#define L3C_GGUF_BUILDER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ggb {
    uint8_t *d;
    size_t n, cap;
} ggb;

void ggb_put(ggb *b, const void *p, size_t n);
void ggb_u8(ggb *b, uint8_t v);
void ggb_u16(ggb *b, uint16_t v);
void ggb_u32(ggb *b, uint32_t v);
void ggb_u64(ggb *b, uint64_t v);
void ggb_f32(ggb *b, float v);
void ggb_f64(ggb *b, double v);
void ggb_str(ggb *b, const char *s); /* u64 length + bytes */
void ggb_free(ggb *b);

/* GGUF value types (as in the file) */
enum {
    GGB_U8 = 0, GGB_I8, GGB_U16, GGB_I16, GGB_U32, GGB_I32, GGB_F32, GGB_BOOL, GGB_STRING,
    GGB_ARRAY, GGB_U64, GGB_I64, GGB_F64
};

typedef struct ggf_kv {
    char *key;
    ggb val; /* u32 type + value, as written after the key */
} ggf_kv;

typedef struct ggf_tensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    uint8_t *data;
    size_t nbytes;
} ggf_tensor;

typedef struct ggf {
    ggf_kv *kv;
    size_t n_kv, cap_kv;
    ggf_tensor *t;
    size_t n_t, cap_t;
} ggf;

void ggf_kv_u32(ggf *f, const char *key, uint32_t v);
void ggf_kv_i32(ggf *f, const char *key, int32_t v);
void ggf_kv_i64(ggf *f, const char *key, int64_t v);
void ggf_kv_f32(ggf *f, const char *key, float v);
void ggf_kv_bool(ggf *f, const char *key, int v);
void ggf_kv_str(ggf *f, const char *key, const char *v);
void ggf_kv_arr_str(ggf *f, const char *key, const char *const *v, size_t n);
void ggf_kv_arr_i32(ggf *f, const char *key, const int32_t *v, size_t n);
void ggf_kv_arr_f32(ggf *f, const char *key, const float *v, size_t n);
void ggf_del_kv(ggf *f, const char *key);

/* Bytes of n elements of a ggml type this builder knows (F32, F16, BF16, Q8_0, Q4_0); 0 else. */
size_t ggf_type_bytes(uint32_t type, int64_t n);
/* Adds (or replaces) a tensor; data of nbytes is copied (NULL: zeros). n_dims 1..4; unused ne 1. */
void ggf_tensor_add(ggf *f, const char *name, uint32_t n_dims, const int64_t ne[4], uint32_t type,
                    const void *data, size_t nbytes);
ggf_tensor *ggf_tensor_get(ggf *f, const char *name);
void ggf_del_tensor(ggf *f, const char *name);

/* GGUF v3, alignment 32, tensors in order; returns the offset of the tensor data section. */
size_t ggf_serialize(const ggf *f, ggb *out);
int ggf_write_file(const ggf *f, const char *path); /* 0 ok, -1 error */
void ggf_free(ggf *f);

typedef struct ggb_llama_opts {
    int n_vocab, n_embd, n_head, n_head_kv, n_ff, n_layer, n_ctx;
    uint32_t wtype;     /* matrices: F32 (0), F16 (1) or Q8_0 (8, n_embd and n_ff multiples of 32) */
    int tokenizer;      /* 1: add a SentencePiece vocabulary of n_vocab tokens */
    int tied;           /* 1: no output.weight */
    uint64_t seed;
} ggb_llama_opts;

ggb_llama_opts ggb_llama_default(void); /* V 16, E 8, H 2, HK 1, FF 16, 1 layer, ctx 32, F32 */
void ggb_tiny_llama(ggf *f, const ggb_llama_opts *o);

#endif
