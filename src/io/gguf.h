/*
 * gguf.h -- GGUF (v2, v3) reader over mmap. All offsets and sizes are validated against the file
 * size with checked arithmetic at open time, so everything handed out afterwards points inside
 * the mapping. Strings point into the mapping and are NOT NUL-terminated (use l3c_str).
 *
 * File layout (little-endian):
 *   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv           (v1 used u32 counts: rejected)
 *   n_kv x { gguf_string key | u32 value_type | value }
 *       gguf_string = u64 len | len bytes;   value_type: see l3c_gguf_vtype
 *       ARRAY value = u32 elem_type | u64 n | n values
 *   n_tensors x { gguf_string name | u32 n_dims (1..4) | n_dims x u64 ne | u32 type | u64 offset }
 *   padding to general.alignment (default 32) | tensor data (offsets relative to here, aligned)
 * (The implementation documents its checks in gguf.c.)
 *
 * Ownership: l3c_gguf_open* returns a reader the caller frees with l3c_gguf_close (NULL ok);
 * every pointer handed out (kv, tensors, l3c_str, tensor data) is borrowed from it.
 */
#ifndef L3C_GGUF_H
#define L3C_GGUF_H

#include "util/util.h"

typedef enum l3c_gguf_vtype {
    L3C_GGUF_UINT8 = 0,
    L3C_GGUF_INT8 = 1,
    L3C_GGUF_UINT16 = 2,
    L3C_GGUF_INT16 = 3,
    L3C_GGUF_UINT32 = 4,
    L3C_GGUF_INT32 = 5,
    L3C_GGUF_FLOAT32 = 6,
    L3C_GGUF_BOOL = 7,
    L3C_GGUF_STRING = 8,
    L3C_GGUF_ARRAY = 9,
    L3C_GGUF_UINT64 = 10,
    L3C_GGUF_INT64 = 11,
    L3C_GGUF_FLOAT64 = 12,
    L3C_GGUF_VTYPE_COUNT
} l3c_gguf_vtype;

typedef struct l3c_str {
    const char *ptr; /* into the mapping; not NUL-terminated */
    uint64_t len;
} l3c_str;

typedef struct l3c_gguf_kv {
    l3c_str key;
    l3c_gguf_vtype type;     /* value type */
    l3c_gguf_vtype arr_type; /* element type when type == ARRAY */
    uint64_t n;              /* element count when ARRAY, else 1 */
    const uint8_t *data; /* scalar value or first array element, inside the mapping (unaligned) */
    l3c_str *strs;       /* STRING value ([1]) or array of strings ([n]); owned by the reader */
} l3c_gguf_kv;

typedef struct l3c_gguf_tensor {
    char *name;      /* NUL-terminated copy, owned by the reader */
    uint32_t type;   /* ggml type id (l3c_type in kernels/types.h) */
    uint32_t n_dims; /* 1..4 */
    int64_t ne[4];   /* unused dims are 1 */
    int64_t n_elements;
    uint64_t offset; /* relative to the data section */
    size_t nbytes;
    const void *data; /* inside the mapping */
} l3c_gguf_tensor;

typedef struct l3c_gguf {
    char *path;          /* file name, for error messages */
    const uint8_t *base; /* mapping (or caller's buffer) */
    size_t size;
    int owns_map; /* 1: munmap on close */
    uint32_t version;
    uint64_t n_kv, n_tensors;
    l3c_gguf_kv *kv;          /* [n_kv] */
    l3c_gguf_tensor *tensors; /* [n_tensors] */
    size_t alignment;
    size_t data_offset;    /* absolute offset of the tensor data section (aligned) */
    size_t *kv_sorted;     /* [n_kv] kv indices ordered by key bytes (binary search) */
    size_t *tensor_sorted; /* [n_tensors] tensor indices ordered by name */
    int header_only;       /* l3c_gguf_open_header: tensor data lives elsewhere */
} l3c_gguf;

/* Maps and parses a file. Errors name the file and the failing field. Caller frees with close.
 * Status: L3C_ERR_IO (open/mmap), L3C_ERR_FORMAT (malformed), L3C_ERR_UNSUPPORTED (GGUF v1 or
 * other versions, big-endian GGUF, nested arrays, a tensor type id the kernel table does not
 * know), L3C_ERR_NOMEM. *out is NULL on failure. */
l3c_status l3c_gguf_open(const char *path, l3c_gguf **out);
/* Parses a caller-owned buffer (fuzzing, tests); buf must outlive the reader. */
l3c_status l3c_gguf_open_memory(const void *buf, size_t size, const char *name, l3c_gguf **out);
/* Parses metadata and tensor infos only (a Hugging Face folder seen as GGUF, model/hf.c): offsets
 * are checked for alignment and overlap but not against the buffer, and every tensor's data is
 * NULL for the caller to point at its bytes (which must outlive the reader). */
l3c_status l3c_gguf_open_header(const void *buf, size_t size, const char *name, l3c_gguf **out);
void l3c_gguf_close(l3c_gguf *g);

/* Lookup; NULL when absent. */
const l3c_gguf_kv *l3c_gguf_find(const l3c_gguf *g, const char *key);
const l3c_gguf_tensor *l3c_gguf_find_tensor(const l3c_gguf *g, const char *name);

/*
 * Typed getters. Return L3C_OK and set *out; L3C_ERR_FORMAT (message names key and types) when
 * the key exists with an incompatible type or an out-of-range value; when absent, return
 * L3C_OK leaving *out untouched if `optional`, else L3C_ERR_FORMAT "missing key".
 * Integer getters accept any integer type whose value fits.
 */
l3c_status l3c_gguf_get_i64(const l3c_gguf *g, const char *key, int optional, int64_t *out);
l3c_status l3c_gguf_get_u32(const l3c_gguf *g, const char *key, int optional, uint32_t *out);
l3c_status l3c_gguf_get_f32(const l3c_gguf *g, const char *key, int optional,
                            float *out); /* f32/f64/int */
l3c_status l3c_gguf_get_bool(const l3c_gguf *g, const char *key, int optional, bool *out);
l3c_status l3c_gguf_get_str(const l3c_gguf *g, const char *key, int optional, l3c_str *out);
/* Arrays: *out points to the kv (type checked: elem type must equal want, or want < 0 for any). */
l3c_status l3c_gguf_get_arr(const l3c_gguf *g, const char *key, int optional, int want_elem_type,
                            const l3c_gguf_kv **out);
/* Element i of a numeric array as double / int64 (no alignment assumptions). A numeric scalar
 * kv reads as a 1-element array; i out of range or a STRING element gives 0; BOOL gives 0/1;
 * arr_i64 truncates floats toward zero and saturates values outside int64 (NaN gives 0). */
double l3c_gguf_arr_f64(const l3c_gguf_kv *kv, uint64_t i);
int64_t l3c_gguf_arr_i64(const l3c_gguf_kv *kv, uint64_t i);

const char *l3c_gguf_vtype_name(l3c_gguf_vtype t);

#endif /* L3C_GGUF_H */
