/*
 * gguf_write.c -- GGUF metadata / tensor-info serializer (gguf_write.h). Little-endian hosts only
 * (as the reader). */
#include "io/gguf_write.h"

#include "kernels/types.h"

#include <string.h>

static void put(l3c_gguf_writer *w, l3c_buf *b, const void *p, size_t n) {
    if (!w->err && n) w->err = l3c_buf_append(b, p, n);
}
static void put_u32(l3c_gguf_writer *w, l3c_buf *b, uint32_t v) { put(w, b, &v, 4); }
static void put_u64(l3c_gguf_writer *w, l3c_buf *b, uint64_t v) { put(w, b, &v, 8); }
static void put_str(l3c_gguf_writer *w, l3c_buf *b, const char *s, size_t len) {
    put_u64(w, b, len);
    put(w, b, s, len);
}
static void key(l3c_gguf_writer *w, const char *k, l3c_gguf_vtype t) {
    put_str(w, &w->kv, k, strlen(k));
    put_u32(w, &w->kv, (uint32_t)t);
    w->n_kv++;
}

void l3c_gguf_w_str(l3c_gguf_writer *w, const char *k, const char *s, size_t len) {
    key(w, k, L3C_GGUF_STRING);
    put_str(w, &w->kv, s, len);
}
void l3c_gguf_w_u32(l3c_gguf_writer *w, const char *k, uint32_t v) {
    key(w, k, L3C_GGUF_UINT32);
    put_u32(w, &w->kv, v);
}
void l3c_gguf_w_i32(l3c_gguf_writer *w, const char *k, int32_t v) {
    key(w, k, L3C_GGUF_INT32);
    put(w, &w->kv, &v, 4);
}
void l3c_gguf_w_f32(l3c_gguf_writer *w, const char *k, float v) {
    key(w, k, L3C_GGUF_FLOAT32);
    put(w, &w->kv, &v, 4);
}
void l3c_gguf_w_bool(l3c_gguf_writer *w, const char *k, bool v) {
    key(w, k, L3C_GGUF_BOOL);
    uint8_t b = v;
    put(w, &w->kv, &b, 1);
}
void l3c_gguf_w_arr_begin(l3c_gguf_writer *w, const char *k, l3c_gguf_vtype elem_type, uint64_t n) {
    key(w, k, L3C_GGUF_ARRAY);
    put_u32(w, &w->kv, (uint32_t)elem_type);
    put_u64(w, &w->kv, n);
}
void l3c_gguf_w_elem_str(l3c_gguf_writer *w, const char *s, size_t len) { put_str(w, &w->kv, s, len); }
void l3c_gguf_w_elem_i32(l3c_gguf_writer *w, int32_t v) { put(w, &w->kv, &v, 4); }

static size_t scalar_size(l3c_gguf_vtype t) {
    switch (t) {
    case L3C_GGUF_UINT8: case L3C_GGUF_INT8: case L3C_GGUF_BOOL: return 1;
    case L3C_GGUF_UINT16: case L3C_GGUF_INT16: return 2;
    case L3C_GGUF_UINT32: case L3C_GGUF_INT32: case L3C_GGUF_FLOAT32: return 4;
    case L3C_GGUF_UINT64: case L3C_GGUF_INT64: case L3C_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

void l3c_gguf_w_copy_kv(l3c_gguf_writer *w, const l3c_gguf_kv *kv) {
    char k[256];
    snprintf(k, sizeof k, "%.*s", (int)L3C_MIN(kv->key.len, sizeof k - 1), kv->key.ptr);
    if (kv->type == L3C_GGUF_STRING) {
        l3c_gguf_w_str(w, k, kv->strs[0].ptr, (size_t)kv->strs[0].len);
    } else if (kv->type == L3C_GGUF_ARRAY) {
        l3c_gguf_w_arr_begin(w, k, kv->arr_type, kv->n);
        if (kv->arr_type == L3C_GGUF_STRING)
            for (uint64_t i = 0; i < kv->n; i++) put_str(w, &w->kv, kv->strs[i].ptr, (size_t)kv->strs[i].len);
        else
            put(w, &w->kv, kv->data, (size_t)kv->n * scalar_size(kv->arr_type));
    } else {
        key(w, k, kv->type);
        put(w, &w->kv, kv->data, scalar_size(kv->type));
    }
}

uint64_t l3c_gguf_w_tensor(l3c_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne) {
    size_t row, nbytes;
    int64_t rows = 1;
    for (int d = 1; d < n_dims; d++) rows *= ne[d];
    if (w->err) return UINT64_MAX;
    if (n_dims < 1 || n_dims > 4 || !l3c_row_size(type, ne[0], &row) || !l3c_mul_ok(row, (size_t)rows, &nbytes)) {
        w->err = l3c_fail(L3C_ERR_INVALID_ARG, "gguf writer: tensor '%s': %s row of %lld elements", name,
                          l3c_type_name(type), (long long)ne[0]);
        return UINT64_MAX;
    }
    uint64_t off = w->data_size;
    put_str(w, &w->ti, name, strlen(name));
    put_u32(w, &w->ti, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) put_u64(w, &w->ti, (uint64_t)ne[d]);
    put_u32(w, &w->ti, (uint32_t)type);
    put_u64(w, &w->ti, off);
    w->n_tensors++;
    w->data_size = (off + nbytes + L3C_GGUF_W_ALIGN - 1) / L3C_GGUF_W_ALIGN * L3C_GGUF_W_ALIGN;
    return w->err ? UINT64_MAX : off;
}

l3c_status l3c_gguf_w_finish(l3c_gguf_writer *w, l3c_buf *out) {
    memset(out, 0, sizeof *out);
    put(w, out, "GGUF", 4);
    put_u32(w, out, 3);
    put_u64(w, out, w->n_tensors);
    put_u64(w, out, w->n_kv);
    put(w, out, w->kv.data, w->kv.len);
    put(w, out, w->ti.data, w->ti.len);
    static const char zeros[L3C_GGUF_W_ALIGN];
    put(w, out, zeros, (L3C_GGUF_W_ALIGN - out->len % L3C_GGUF_W_ALIGN) % L3C_GGUF_W_ALIGN);
    if (w->err) l3c_buf_free(out);
    return w->err;
}

void l3c_gguf_w_free(l3c_gguf_writer *w) {
    l3c_buf_free(&w->kv);
    l3c_buf_free(&w->ti);
    memset(w, 0, sizeof *w);
}
