/*
 * safetensors.h -- reader of Hugging Face .safetensors files over mmap.
 *
 * File layout:
 *   u64 N (little-endian) | N bytes of JSON header (UTF-8, may end in spaces) | data
 *   header = { "NAME": {"dtype": "BF16", "shape": [d0, d1, ...], "data_offsets": [begin, end]},
 *              ..., "__metadata__": {"key": "string value", ...} (optional) }
 *   data_offsets are relative to the start of the data (8 + N), shape is slowest-varying first.
 *
 * Everything is validated at open (l3c_safetensors_open*), so what is handed out afterwards lies
 * inside the mapping: N <= L3C_ST_MAX_HEADER and 8 + N <= file size; the header is one JSON object
 * (jansson: duplicate keys rejected, nesting capped by jansson's depth limit); every tensor has a
 * known dtype, a shape of at most L3C_ST_MAX_DIMS non-negative dimensions whose product times the
 * element size (checked multiplication) equals end - begin; begin <= end <= data size; the ranges,
 * ordered by begin, do not overlap and cover the data exactly (as the reference implementation
 * requires); __metadata__ maps strings to strings. Errors name the file, the tensor and the cause.
 *
 * Ownership: the reader owns the mapping (or borrows the caller's buffer for _open_memory) and the
 * tensor table; every pointer handed out is borrowed from it. Close with l3c_safetensors_close.
 */
#ifndef L3C_SAFETENSORS_H
#define L3C_SAFETENSORS_H

#include "util/util.h"

#define L3C_ST_MAX_HEADER ((size_t)100 * 1024 * 1024)
#define L3C_ST_MAX_DIMS 8

typedef struct l3c_st_tensor {
    char *name;             /* NUL-terminated, owned by the reader */
    char dtype[8];          /* as in the file: "F32", "BF16", "I64", ... */
    int type;               /* l3c_type for F32 / F16 / BF16, else -1 */
    size_t elem_size;       /* bytes per element */
    int n_dims;             /* 0 (a scalar) .. L3C_ST_MAX_DIMS */
    int64_t shape[L3C_ST_MAX_DIMS]; /* slowest first, as in the file */
    int64_t n_elements;
    size_t offset, nbytes;  /* relative to the data start */
    const void *data;       /* inside the mapping; alignment is whatever the file gives */
} l3c_st_tensor;

typedef struct l3c_safetensors {
    char *path;             /* for messages */
    const uint8_t *base;
    size_t size;
    int owns_map;
    size_t data_start;      /* 8 + N */
    size_t n_tensors;
    l3c_st_tensor *tensors; /* [n_tensors], sorted by name */
    size_t n_meta;
    char **meta_key, **meta_val; /* [n_meta] __metadata__ entries, owned */
} l3c_safetensors;

/* Status: L3C_ERR_IO (open / mmap), L3C_ERR_FORMAT (malformed), L3C_ERR_NOMEM. *out NULL on
 * failure. */
l3c_status l3c_safetensors_open(const char *path, l3c_safetensors **out);
/* The same on a caller's buffer (tests, fuzzing), which must outlive the reader. */
l3c_status l3c_safetensors_open_memory(const void *buf, size_t size, const char *name,
                                       l3c_safetensors **out);
void l3c_safetensors_close(l3c_safetensors *s);

const l3c_st_tensor *l3c_safetensors_find(const l3c_safetensors *s, const char *name);
/* __metadata__ value of key, or NULL. */
const char *l3c_safetensors_meta(const l3c_safetensors *s, const char *key);

#endif /* L3C_SAFETENSORS_H */
