/*
 * gguf_write.h -- serializes GGUF (v3) metadata and tensor infos (layout: gguf.h). Used by
 * `llama3c convert` (header, then each tensor's data at its offset) and by the Hugging Face
 * folder loader (header only: the tensors stay where they are, see l3c_gguf_open_header).
 *
 * Errors are sticky: every call after the first failure does nothing, and l3c_gguf_w_finish
 * returns that failure. Tensor offsets are assigned in call order, each aligned to
 * L3C_GGUF_W_ALIGN (general.alignment is not written: 32 is the default).
 */
#ifndef L3C_GGUF_WRITE_H
#define L3C_GGUF_WRITE_H

#include "io/gguf.h"

#define L3C_GGUF_W_ALIGN 32

typedef struct l3c_gguf_writer {
    l3c_buf kv, ti;            /* serialized kv pairs / tensor infos */
    uint64_t n_kv, n_tensors;
    uint64_t data_size;        /* bytes of tensor data so far (aligned) */
    l3c_status err;
} l3c_gguf_writer;

void l3c_gguf_w_str(l3c_gguf_writer *w, const char *key, const char *s, size_t len);
void l3c_gguf_w_u32(l3c_gguf_writer *w, const char *key, uint32_t v);
void l3c_gguf_w_i32(l3c_gguf_writer *w, const char *key, int32_t v);
void l3c_gguf_w_f32(l3c_gguf_writer *w, const char *key, float v);
void l3c_gguf_w_bool(l3c_gguf_writer *w, const char *key, bool v);
/* An array of n elements of elem_type, followed by exactly n l3c_gguf_w_elem_* calls. */
void l3c_gguf_w_arr_begin(l3c_gguf_writer *w, const char *key, l3c_gguf_vtype elem_type, uint64_t n);
void l3c_gguf_w_elem_str(l3c_gguf_writer *w, const char *s, size_t len);
void l3c_gguf_w_elem_i32(l3c_gguf_writer *w, int32_t v);
/* Copies one kv of a reader (any type). */
void l3c_gguf_w_copy_kv(l3c_gguf_writer *w, const l3c_gguf_kv *kv);
/* A tensor info (ne as in GGUF: ne[0] the row length); returns its data offset, or UINT64_MAX
 * after an error (bad type / shape: L3C_ERR_INVALID_ARG). */
uint64_t l3c_gguf_w_tensor(l3c_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne);
/* header | kvs | tensor infos | zero padding to the alignment, into *out (caller frees). */
l3c_status l3c_gguf_w_finish(l3c_gguf_writer *w, l3c_buf *out);
void l3c_gguf_w_free(l3c_gguf_writer *w);

#endif /* L3C_GGUF_WRITE_H */
