/*
 * safetensors.c -- the .safetensors reader (layout and the checks made at open: safetensors.h).
 * The header is parsed with jansson (JSON_REJECT_DUPLICATES: a tensor named twice is an error;
 * jansson's nesting limit rejects deep "JSON bombs"; the header size cap bounds the rest).
 */
#include "io/safetensors.h"

#include "kernels/types.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    size_t size;
    int type;
} DTYPES[] = {
    {"F32", 4, L3C_TYPE_F32}, {"F16", 2, L3C_TYPE_F16}, {"BF16", 2, L3C_TYPE_BF16},
    {"F64", 8, -1},           {"I64", 8, -1},           {"U64", 8, -1},
    {"I32", 4, -1},           {"U32", 4, -1},           {"I16", 2, -1},
    {"U16", 2, -1},           {"I8", 1, -1},            {"U8", 1, -1},
    {"BOOL", 1, -1},          {"F8_E4M3", 1, -1},       {"F8_E5M2", 1, -1},
};

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const l3c_st_tensor *)a)->name, ((const l3c_st_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const l3c_st_tensor *x = *(const l3c_st_tensor *const *)a, *y = *(const l3c_st_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* One tensor entry {"dtype", "shape", "data_offsets"} into t (name already set). */
static l3c_status parse_tensor(const l3c_safetensors *s, json_t *v, size_t data_size, l3c_st_tensor *t) {
    const char *f = s->path, *n = t->name;
    if (!json_is_object(v))
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': entry is not an object", f, n);
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': missing string 'dtype'", f, n);
    const char *d = json_string_value(dt);
    size_t k;
    for (k = 0; k < sizeof DTYPES / sizeof DTYPES[0]; k++)
        if (strcmp(d, DTYPES[k].name) == 0) break;
    if (k == sizeof DTYPES / sizeof DTYPES[0])
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': unknown dtype '%.16s'", f, n, d);
    memcpy(t->dtype, DTYPES[k].name, strlen(DTYPES[k].name) + 1);
    t->type = DTYPES[k].type;
    t->elem_size = DTYPES[k].size;

    if (!json_is_array(shape))
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': missing array 'shape'", f, n);
    if (json_array_size(shape) > L3C_ST_MAX_DIMS)
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': %zu dimensions (at most %d)", f,
                        n, json_array_size(shape), L3C_ST_MAX_DIMS);
    t->n_dims = (int)json_array_size(shape);
    size_t count = 1;
    for (int i = 0; i < t->n_dims; i++) {
        json_t *e = json_array_get(shape, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': shape[%d] is not a "
                            "non-negative integer", f, n, i);
        t->shape[i] = (int64_t)json_integer_value(e);
        if ((uint64_t)t->shape[i] > SIZE_MAX || !l3c_mul_ok(count, (size_t)t->shape[i], &count) ||
            count > INT64_MAX)
            return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': element count overflows",
                            f, n);
    }
    t->n_elements = (int64_t)count;
    size_t nbytes;
    if (!l3c_mul_ok(count, t->elem_size, &nbytes))
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': byte size overflows", f, n);

    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)))
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': 'data_offsets' is not "
                        "[begin, end]", f, n);
    json_int_t b = json_integer_value(json_array_get(offs, 0)), e = json_integer_value(json_array_get(offs, 1));
    if (b < 0 || e < b || (uint64_t)e > data_size)
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': data_offsets [%lld, %lld] out "
                        "of range (data is %zu bytes)", f, n, (long long)b, (long long)e, data_size);
    if ((uint64_t)(e - b) != nbytes)
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s': %s shape of %lld elements is "
                        "%zu bytes but data_offsets span %lld", f, n, t->dtype, (long long)t->n_elements,
                        nbytes, (long long)(e - b));
    t->offset = (size_t)b;
    t->nbytes = nbytes;
    t->data = s->base + s->data_start + t->offset;
    return L3C_OK;
}

static l3c_status parse_metadata(l3c_safetensors *s, json_t *meta) {
    if (!json_is_object(meta))
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: '__metadata__' is not an object", s->path);
    size_t n = json_object_size(meta);
    s->meta_key = l3c_calloc(n ? n : 1, sizeof *s->meta_key);
    s->meta_val = l3c_calloc(n ? n : 1, sizeof *s->meta_val);
    if (!s->meta_key || !s->meta_val)
        return l3c_fail(L3C_ERR_NOMEM, "safetensors: %s: out of memory", s->path);
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v) {
        if (!json_is_string(v))
            return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: __metadata__ '%.64s' is not a string",
                            s->path, key);
        s->meta_key[s->n_meta] = l3c_strdup(key);
        s->meta_val[s->n_meta] = l3c_strndup(json_string_value(v), json_string_length(v));
        if (!s->meta_key[s->n_meta] || !s->meta_val[s->n_meta]) {
            free(s->meta_key[s->n_meta]);
            return l3c_fail(L3C_ERR_NOMEM, "safetensors: %s: out of memory", s->path);
        }
        s->n_meta++;
    }
    return L3C_OK;
}

static l3c_status parse(l3c_safetensors *s) {
    const char *f = s->path;
    if (s->size < 8)
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: file of %zu bytes is shorter than the "
                        "8-byte header length", f, s->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | s->base[i];
    if (hlen > L3C_ST_MAX_HEADER)
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: header length %llu exceeds the %zu-byte cap",
                        f, (unsigned long long)hlen, L3C_ST_MAX_HEADER);
    if (hlen > s->size - 8)
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: header length %llu runs past the end of the "
                        "file (%zu bytes): truncated?", f, (unsigned long long)hlen, s->size);
    if (hlen < 2 || s->base[8] != '{')
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: header does not start with '{' (not a "
                        "safetensors file?)", f);
    s->data_start = 8 + (size_t)hlen;
    const size_t data_size = s->size - s->data_start;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)s->base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: header JSON, byte %d: %s", f,
                        jerr.position, jerr.text);
    l3c_status st = L3C_OK;
    l3c_st_tensor **order = NULL;
    if (!json_is_object(root)) {
        st = l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: header is not a JSON object", f);
        goto done;
    }
    size_t n = json_object_size(root);
    s->tensors = l3c_calloc(n ? n : 1, sizeof *s->tensors);
    order = l3c_calloc(n ? n : 1, sizeof *order);
    if (!s->tensors || !order) {
        st = l3c_fail(L3C_ERR_NOMEM, "safetensors: %s: out of memory for %zu tensors", f, n);
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = parse_metadata(s, v))) goto done;
            continue;
        }
        l3c_st_tensor *t = &s->tensors[s->n_tensors];
        if (!(t->name = l3c_strdup(key))) {
            st = l3c_fail(L3C_ERR_NOMEM, "safetensors: %s: out of memory", f);
            goto done;
        }
        s->n_tensors++;
        if (key[0] == '\0') {
            st = l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: empty tensor name", f);
            goto done;
        }
        if ((st = parse_tensor(s, v, data_size, t))) goto done;
    }
    /* ranges by offset: no overlap, no gap, and they end where the file ends */
    for (size_t i = 0; i < s->n_tensors; i++) order[i] = &s->tensors[i];
    if (s->n_tensors > 1) qsort(order, s->n_tensors, sizeof *order, cmp_tensor_offset);
    size_t end = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const l3c_st_tensor *t = order[i];
        if (t->offset < end) {
            st = l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s' (bytes [%zu, %zu)) overlaps "
                          "tensor '%s' (ends at %zu)", f, t->name, t->offset, t->offset + t->nbytes,
                          order[i - 1]->name, end);
            goto done;
        }
        if (t->offset > end) {
            st = l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensor '%s' starts at %zu, leaving a gap "
                          "after byte %zu of the data", f, t->name, t->offset, end);
            goto done;
        }
        end = t->offset + t->nbytes;
    }
    if (end != data_size) {
        st = l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: tensors cover %zu bytes but the data section "
                      "is %zu bytes (truncated or trailing bytes)", f, end, data_size);
        goto done;
    }
    if (s->n_tensors > 1) qsort(s->tensors, s->n_tensors, sizeof *s->tensors, cmp_tensor_name);
done:
    free(order);
    json_decref(root);
    return st;
}

static l3c_status open_common(const uint8_t *base, size_t size, const char *name, int owns_map,
                              l3c_safetensors **out) {
    l3c_safetensors *s = l3c_calloc(1, sizeof *s);
    if (!s) {
        if (owns_map) munmap((void *)base, size);
        return l3c_fail(L3C_ERR_NOMEM, "safetensors: %s: out of memory", name);
    }
    s->base = base;
    s->size = size;
    s->owns_map = owns_map;
    l3c_status st;
    if (!(s->path = l3c_strdup(name))) {
        st = l3c_fail(L3C_ERR_NOMEM, "safetensors: %s: out of memory", name);
        goto fail;
    }
    if ((st = parse(s))) goto fail;
    *out = s;
    return L3C_OK;
fail:
    l3c_safetensors_close(s);
    return st;
}

l3c_status l3c_safetensors_open_memory(const void *buf, size_t size, const char *name,
                                       l3c_safetensors **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "safetensors: out is NULL");
    *out = NULL;
    if (!name) name = "<memory>";
    if (!buf && size) return l3c_fail(L3C_ERR_INVALID_ARG, "safetensors: %s: NULL buffer", name);
    return open_common(buf ? buf : (const void *)"", size, name, 0, out);
}

l3c_status l3c_safetensors_open(const char *path, l3c_safetensors **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "safetensors: out is NULL");
    *out = NULL;
    if (!path) return l3c_fail(L3C_ERR_INVALID_ARG, "safetensors: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return l3c_fail(L3C_ERR_IO, "safetensors: %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return l3c_fail(L3C_ERR_IO, "safetensors: %s: not a readable regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return l3c_fail(L3C_ERR_FORMAT, "safetensors: %s: file of %lld bytes is shorter than the "
                        "8-byte header length", path, (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return l3c_fail(L3C_ERR_IO, "safetensors: %s: file too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return l3c_fail(L3C_ERR_IO, "safetensors: %s: mmap of %zu bytes failed: %s", path, size, strerror(e));
    return open_common(map, size, path, 1, out);
}

void l3c_safetensors_close(l3c_safetensors *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    free(s->tensors);
    for (size_t i = 0; i < s->n_meta; i++) {
        free(s->meta_key[i]);
        free(s->meta_val[i]);
    }
    free(s->meta_key);
    free(s->meta_val);
    if (s->owns_map && s->base) munmap((void *)s->base, s->size);
    free(s->path);
    free(s);
}

const l3c_st_tensor *l3c_safetensors_find(const l3c_safetensors *s, const char *name) {
    if (!s || !name) return NULL;
    l3c_st_tensor key = {.name = (char *)name};
    return bsearch(&key, s->tensors, s->n_tensors, sizeof *s->tensors, cmp_tensor_name);
}

const char *l3c_safetensors_meta(const l3c_safetensors *s, const char *key) {
    if (!s || !key) return NULL;
    for (size_t i = 0; i < s->n_meta; i++)
        if (strcmp(s->meta_key[i], key) == 0) return s->meta_val[i];
    return NULL;
}
