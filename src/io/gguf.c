/*
 * gguf.c -- GGUF v2/v3 reader: maps the file read-only and validates everything at open time.
 *
 * Owns: the mapping (when opened from a path), the kv and tensor tables, the string tables of
 * STRING values / string arrays, the tensor name copies and the sorted lookup indices.
 *
 * Checks done at open (each failure names the file and the field; nothing is allocated from a
 * count before the count is checked against the bytes left in the file):
 *  - magic "GGUF"; version 2 or 3 (v1 and others: L3C_ERR_UNSUPPORTED; a byte-swapped version
 *    2/3 is reported as big-endian GGUF, unsupported);
 *  - n_kv <= bytes_left / 13 and n_tensors <= bytes_left / 32 (the smallest encodings of one kv
 *    and one tensor info), array element counts and string lengths against bytes left;
 *  - value types < 13; arrays of arrays rejected (no recursion); BOOL bytes are 0 or 1;
 *  - keys unique, tensor names unique, non-empty, without NUL bytes;
 *  - general.alignment, when present, is a UINT32 power of two (default 32);
 *  - tensors: n_dims in 1..4; each ne in 1..INT64_MAX; the element count fits int64; the type
 *    id is one the kernel table knows (unknown ids: L3C_ERR_UNSUPPORTED "unsupported type id N",
 *    since the reader cannot size data of a type it does not know); ne[0] a multiple of the block
 *    size; nbytes via l3c_row_size with overflow checks; offset a multiple of the alignment;
 *    data inside the file; no two tensors overlap.
 * Invariant after a successful open: every pointer in the reader lies inside [base, base+size)
 * together with the bytes it describes.
 */
#define _POSIX_C_SOURCE 200809L
#include "io/gguf.h"

#include "kernels/types.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
/* smallest encodings: kv = u64 key len + u32 type + 1-byte value;
 * tensor info = u64 name len + u32 n_dims + 1 x u64 ne + u32 type + u64 offset */
#define GGUF_MIN_KV_BYTES     13
#define GGUF_MIN_TENSOR_BYTES 32

/* ---------------------------------------------------------------- cursor and error text */

/* Reads little-endian values from the buffer; tracks where it is for error messages. */
typedef struct cursor {
    const uint8_t *p;
    size_t size, off;
    const char *file;
    const char *section; /* "header", "kv", "tensor" */
    uint64_t index;
    l3c_str name; /* key / tensor name once read (ptr NULL before) */
} cursor;

/* Printable, bounded copy of untrusted bytes for messages. */
static void safe_text(char *dst, size_t cap, const char *src, uint64_t len) {
    size_t n = 0;
    for (uint64_t i = 0; i < len && n + 4 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[n++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (len > 0 && n + 4 >= cap) {
        dst[n++] = '.';
        dst[n++] = '.';
        dst[n++] = '.';
    }
    dst[n] = '\0';
}

/* "kv 12 ('llama.block_count')" / "tensor 3" / "header" */
static void where(const cursor *c, char *buf, size_t cap) {
    if (strcmp(c->section, "header") == 0) {
        snprintf(buf, cap, "header");
    } else if (c->name.ptr) {
        char nm[80];
        safe_text(nm, sizeof nm, c->name.ptr, c->name.len);
        snprintf(buf, cap, "%s %llu ('%s')", c->section, (unsigned long long)c->index, nm);
    } else {
        snprintf(buf, cap, "%s %llu", c->section, (unsigned long long)c->index);
    }
}

static l3c_status cur_fail(const cursor *c, l3c_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static l3c_status cur_fail(const cursor *c, l3c_status st, const char *fmt, ...) {
    char loc[128], msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    where(c, loc, sizeof loc);
    return l3c_fail(st, "gguf: %s: %s: %s", c->file, loc, msg);
}

static size_t left(const cursor *c) {
    return c->size - c->off;
}

static l3c_status need(const cursor *c, size_t n, const char *field) {
    if (n <= left(c)) return L3C_OK;
    char loc[128];
    where(c, loc, sizeof loc);
    return l3c_fail(L3C_ERR_FORMAT,
                    "gguf: %s: truncated at offset %zu reading %s %s (need %zu bytes, %zu left)",
                    c->file, c->off, loc, field, n, left(c));
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) {
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static l3c_status rd_u32(cursor *c, const char *field, uint32_t *v) {
    l3c_status st = need(c, 4, field);
    if (st) return st;
    *v = le32(c->p + c->off);
    c->off += 4;
    return L3C_OK;
}

static l3c_status rd_u64(cursor *c, const char *field, uint64_t *v) {
    l3c_status st = need(c, 8, field);
    if (st) return st;
    *v = le64(c->p + c->off);
    c->off += 8;
    return L3C_OK;
}

/* gguf_string: u64 len | len bytes; s points into the buffer. */
static l3c_status rd_str(cursor *c, const char *field, l3c_str *s) {
    uint64_t len;
    l3c_status st = rd_u64(c, field, &len);
    if (st) return st;
    if (len > left(c)) {
        return cur_fail(c, L3C_ERR_FORMAT,
                        "%s length %llu at offset %zu exceeds the %zu bytes left", field,
                        (unsigned long long)len, c->off - 8, left(c));
    }
    s->ptr = (const char *)(c->p + c->off);
    s->len = len;
    c->off += (size_t)len;
    return L3C_OK;
}

/* ---------------------------------------------------------------- value types */

static const char *const g_vtype_names[L3C_GGUF_VTYPE_COUNT] = {
    "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",   "FLOAT32",
    "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64",
};

const char *l3c_gguf_vtype_name(l3c_gguf_vtype t) {
    return ((unsigned)t < L3C_GGUF_VTYPE_COUNT) ? g_vtype_names[t] : "INVALID";
}

/* Bytes of one fixed-size value; 0 for STRING / ARRAY. */
static size_t vtype_size(l3c_gguf_vtype t) {
    switch (t) {
    case L3C_GGUF_UINT8:
    case L3C_GGUF_INT8:
    case L3C_GGUF_BOOL:
        return 1;
    case L3C_GGUF_UINT16:
    case L3C_GGUF_INT16:
        return 2;
    case L3C_GGUF_UINT32:
    case L3C_GGUF_INT32:
    case L3C_GGUF_FLOAT32:
        return 4;
    case L3C_GGUF_UINT64:
    case L3C_GGUF_INT64:
    case L3C_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

static bool vtype_is_int(l3c_gguf_vtype t) {
    return t == L3C_GGUF_UINT8 || t == L3C_GGUF_INT8 || t == L3C_GGUF_UINT16 ||
           t == L3C_GGUF_INT16 || t == L3C_GGUF_UINT32 || t == L3C_GGUF_INT32 ||
           t == L3C_GGUF_UINT64 || t == L3C_GGUF_INT64;
}

/* Integer at p of integer type t: signed values in *s, unsigned in *u; returns true if signed. */
static bool load_int(l3c_gguf_vtype t, const uint8_t *p, int64_t *s, uint64_t *u) {
    switch (t) {
    case L3C_GGUF_UINT8:
        *u = p[0];
        return false;
    case L3C_GGUF_INT8:
        *s = (int8_t)p[0];
        return true;
    case L3C_GGUF_UINT16:
        *u = (uint16_t)(p[0] | p[1] << 8);
        return false;
    case L3C_GGUF_INT16:
        *s = (int16_t)(uint16_t)(p[0] | p[1] << 8);
        return true;
    case L3C_GGUF_UINT32:
        *u = le32(p);
        return false;
    case L3C_GGUF_INT32:
        *s = (int32_t)le32(p);
        return true;
    case L3C_GGUF_UINT64:
        *u = le64(p);
        return false;
    case L3C_GGUF_INT64:
        *s = (int64_t)le64(p);
        return true;
    default:
        *u = 0;
        return false;
    }
}

static double load_float(l3c_gguf_vtype t, const uint8_t *p) {
    if (t == L3C_GGUF_FLOAT32) {
        uint32_t b = le32(p);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    uint64_t b = le64(p);
    double d;
    memcpy(&d, &b, 8);
    return d;
}

/* ---------------------------------------------------------------- metadata */

static l3c_status parse_value(cursor *c, l3c_gguf_kv *kv) {
    l3c_status st;
    if (kv->type == L3C_GGUF_STRING) {
        kv->n = 1;
        kv->strs = l3c_calloc(1, sizeof *kv->strs);
        if (!kv->strs) return cur_fail(c, L3C_ERR_NOMEM, "out of memory");
        if ((st = rd_str(c, "string value", &kv->strs[0]))) return st;
        kv->data = (const uint8_t *)kv->strs[0].ptr;
        return L3C_OK;
    }
    size_t esz;
    uint64_t n = 1;
    l3c_gguf_vtype et = kv->type;
    if (kv->type == L3C_GGUF_ARRAY) {
        uint32_t t;
        if ((st = rd_u32(c, "array element type", &t))) return st;
        if (t >= L3C_GGUF_VTYPE_COUNT)
            return cur_fail(c, L3C_ERR_FORMAT, "array element type %u is invalid", t);
        if (t == L3C_GGUF_ARRAY)
            return cur_fail(c, L3C_ERR_UNSUPPORTED, "nested arrays are not supported");
        et = kv->arr_type = (l3c_gguf_vtype)t;
        if ((st = rd_u64(c, "array length", &n))) return st;
        if (et == L3C_GGUF_STRING) {
            /* each element takes at least its u64 length */
            if (n > left(c) / 8) {
                return cur_fail(c, L3C_ERR_FORMAT,
                                "string array length %llu needs at least %llu bytes, %zu left",
                                (unsigned long long)n, (unsigned long long)n * 8ull, left(c));
            }
            kv->n = n;
            kv->strs = l3c_calloc((size_t)n, sizeof *kv->strs);
            if (!kv->strs)
                return cur_fail(c, L3C_ERR_NOMEM, "out of memory for %llu strings",
                                (unsigned long long)n);
            kv->data = c->p + c->off;
            for (uint64_t i = 0; i < n; i++) {
                if ((st = rd_str(c, "array string", &kv->strs[i]))) return st;
            }
            return L3C_OK;
        }
    }
    esz = vtype_size(et);
    size_t total;
    if (n > SIZE_MAX || !l3c_mul_ok((size_t)n, esz, &total) || total > left(c)) {
        return cur_fail(c, L3C_ERR_FORMAT,
                        "%llu values of type %s at offset %zu exceed the %zu bytes left",
                        (unsigned long long)n, l3c_gguf_vtype_name(et), c->off, left(c));
    }
    kv->n = n;
    kv->data = c->p + c->off;
    if (et == L3C_GGUF_BOOL) {
        for (size_t i = 0; i < total; i++) {
            if (kv->data[i] > 1)
                return cur_fail(c, L3C_ERR_FORMAT, "bool value %u is not 0 or 1", kv->data[i]);
        }
    }
    c->off += total;
    return L3C_OK;
}

/* ---------------------------------------------------------------- sorting / lookup */

typedef struct sort_ent {
    const char *ptr;
    uint64_t len;
    size_t idx;
} sort_ent;

static int cmp_bytes(const char *a, uint64_t alen, const char *b, uint64_t blen) {
    int r = memcmp(a, b, (size_t)L3C_MIN(alen, blen));
    if (r) return r;
    return (alen > blen) - (alen < blen);
}

static int cmp_ent(const void *pa, const void *pb) {
    const sort_ent *a = pa, *b = pb;
    return cmp_bytes(a->ptr, a->len, b->ptr, b->len);
}

/* Sorts ents[n] by name and writes the order to order[n]; returns the index of the first
 * duplicate (its sorted position), or n when all names are unique. */
static size_t sort_names(sort_ent *ents, size_t n, size_t *order) {
    if (n > 1) qsort(ents, n, sizeof *ents, cmp_ent);
    for (size_t i = 0; i < n; i++)
        order[i] = ents[i].idx;
    for (size_t i = 1; i < n; i++) {
        if (cmp_ent(&ents[i - 1], &ents[i]) == 0) return i;
    }
    return n;
}

typedef struct span_ent {
    uint64_t begin, end;
    size_t idx;
} span_ent;

static int cmp_span(const void *pa, const void *pb) {
    const span_ent *a = pa, *b = pb;
    return (a->begin > b->begin) - (a->begin < b->begin);
}

/* ---------------------------------------------------------------- parsing */

static l3c_status parse_header(cursor *c, l3c_gguf *g) {
    l3c_status st;
    if ((st = need(c, 4, "magic"))) return st;
    if (memcmp(c->p, "GGUF", 4) != 0) {
        return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: bad magic %02x %02x %02x %02x (not a GGUF file)",
                        c->file, c->p[0], c->p[1], c->p[2], c->p[3]);
    }
    c->off = 4;
    if ((st = rd_u32(c, "version", &g->version))) return st;
    uint32_t v = g->version, swapped = __builtin_bswap32(v);
    if (v != 2 && v != 3) {
        if (v != 1 && swapped >= 1 && swapped <= 3) {
            return l3c_fail(L3C_ERR_UNSUPPORTED,
                            "gguf: %s: big-endian GGUF (version %u byte-swapped) is not supported",
                            c->file, swapped);
        }
        if (v == 1) {
            return l3c_fail(
                L3C_ERR_UNSUPPORTED,
                "gguf: %s: GGUF version 1 is not supported (only 2 and 3; re-convert the model)",
                c->file);
        }
        return l3c_fail(L3C_ERR_UNSUPPORTED,
                        "gguf: %s: GGUF version %u is not supported (only 2 and 3)", c->file, v);
    }
    if ((st = rd_u64(c, "tensor count", &g->n_tensors))) return st;
    if ((st = rd_u64(c, "kv count", &g->n_kv))) return st;
    if (g->n_kv > left(c) / GGUF_MIN_KV_BYTES) {
        return l3c_fail(L3C_ERR_FORMAT,
                        "gguf: %s: header: kv count %llu is impossible: %zu bytes left, >= %d per "
                        "kv (truncated or corrupt)",
                        c->file, (unsigned long long)g->n_kv, left(c), GGUF_MIN_KV_BYTES);
    }
    if (g->n_tensors > left(c) / GGUF_MIN_TENSOR_BYTES) {
        return l3c_fail(L3C_ERR_FORMAT,
                        "gguf: %s: header: tensor count %llu is impossible: %zu bytes left, >= %d "
                        "per tensor (truncated or corrupt)",
                        c->file, (unsigned long long)g->n_tensors, left(c), GGUF_MIN_TENSOR_BYTES);
    }
    return L3C_OK;
}

static l3c_status parse_kvs(cursor *c, l3c_gguf *g) {
    l3c_status st;
    sort_ent *ents = NULL;
    g->kv = l3c_calloc((size_t)g->n_kv, sizeof *g->kv);
    g->kv_sorted = l3c_calloc((size_t)g->n_kv, sizeof *g->kv_sorted);
    ents = l3c_calloc((size_t)g->n_kv, sizeof *ents);
    if (!g->kv || !g->kv_sorted || !ents) {
        st = l3c_fail(L3C_ERR_NOMEM, "gguf: %s: out of memory for %llu kvs", c->file,
                      (unsigned long long)g->n_kv);
        goto fail;
    }
    c->section = "kv";
    for (uint64_t i = 0; i < g->n_kv; i++) {
        l3c_gguf_kv *kv = &g->kv[i];
        uint32_t t;
        c->index = i;
        c->name.ptr = NULL;
        if ((st = rd_str(c, "key", &kv->key))) goto fail;
        c->name = kv->key;
        if ((st = rd_u32(c, "value type", &t))) goto fail;
        if (t >= L3C_GGUF_VTYPE_COUNT) {
            st = cur_fail(c, L3C_ERR_FORMAT, "value type %u is invalid", t);
            goto fail;
        }
        kv->type = kv->arr_type = (l3c_gguf_vtype)t;
        if ((st = parse_value(c, kv))) goto fail;
        ents[i] = (sort_ent){kv->key.ptr, kv->key.len, (size_t)i};
    }
    size_t dup = sort_names(ents, (size_t)g->n_kv, g->kv_sorted);
    if (dup < g->n_kv) {
        c->index = ents[dup].idx;
        c->name = g->kv[ents[dup].idx].key;
        st = cur_fail(c, L3C_ERR_FORMAT, "duplicate key (also kv %zu)", ents[dup - 1].idx);
        goto fail;
    }
    st = L3C_OK;
fail:
    free(ents);
    return st;
}

static l3c_status parse_alignment(cursor *c, l3c_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const l3c_gguf_kv *kv = l3c_gguf_find(g, "general.alignment");
    if (!kv) return L3C_OK;
    c->section = "kv";
    c->index = (uint64_t)(kv - g->kv);
    c->name = kv->key;
    if (kv->type != L3C_GGUF_UINT32) {
        return cur_fail(c, L3C_ERR_FORMAT, "alignment has type %s, expected UINT32",
                        l3c_gguf_vtype_name(kv->type));
    }
    uint32_t a = le32(kv->data);
    if (a == 0 || (a & (a - 1)) != 0)
        return cur_fail(c, L3C_ERR_FORMAT, "alignment %u is not a power of two", a);
    g->alignment = a;
    return L3C_OK;
}

/* Reads one tensor info (sizes are checked later, once the data offset is known). */
static l3c_status parse_tensor_info(cursor *c, l3c_gguf_tensor *t) {
    l3c_status st;
    l3c_str name;
    uint64_t ne;
    if ((st = rd_str(c, "name", &name))) return st;
    c->name = name;
    if (name.len == 0) return cur_fail(c, L3C_ERR_FORMAT, "empty tensor name");
    if (memchr(name.ptr, 0, (size_t)name.len))
        return cur_fail(c, L3C_ERR_FORMAT, "tensor name contains a NUL byte");
    t->name = l3c_strndup(name.ptr, (size_t)name.len);
    if (!t->name) return cur_fail(c, L3C_ERR_NOMEM, "out of memory");
    if ((st = rd_u32(c, "n_dims", &t->n_dims))) return st;
    if (t->n_dims < 1 || t->n_dims > 4)
        return cur_fail(c, L3C_ERR_FORMAT, "n_dims %u is not in 1..4", t->n_dims);
    for (int d = 0; d < 4; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if ((st = rd_u64(c, "ne", &ne))) return st;
        if (ne < 1 || ne > (uint64_t)INT64_MAX) {
            return cur_fail(c, L3C_ERR_FORMAT, "ne[%u] = %llu is not in 1..INT64_MAX", d,
                            (unsigned long long)ne);
        }
        t->ne[d] = (int64_t)ne;
    }
    if ((st = rd_u32(c, "type", &t->type))) return st;
    if ((st = rd_u64(c, "offset", &t->offset))) return st;
    return L3C_OK;
}

/* Element count, byte size, alignment and bounds of tensor t (data section at g->data_offset). */
static l3c_status size_tensor(cursor *c, const l3c_gguf *g, l3c_gguf_tensor *t) {
    int64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (__builtin_mul_overflow(n, t->ne[d], &n)) {
            return cur_fail(
                c, L3C_ERR_FORMAT, "element count %lld x %lld x %lld x %lld overflows int64",
                (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
        }
    }
    t->n_elements = n;
    const l3c_type_traits *tr = t->type < L3C_TYPE_COUNT ? l3c_type_traits_ref((int)t->type) : NULL;
    if (!tr || tr->block_size <= 0 || tr->type_size == 0) {
        return cur_fail(c, L3C_ERR_UNSUPPORTED, "tensor has unsupported type id %u", t->type);
    }
    size_t row, nbytes;
    if (t->ne[0] % tr->block_size != 0) {
        return cur_fail(
            c, L3C_ERR_FORMAT, "ne[0] = %lld is not a multiple of the %s block size %lld",
            (long long)t->ne[0], tr->name ? tr->name : "type", (long long)tr->block_size);
    }
    if (!l3c_row_size((int)t->type, t->ne[0], &row) || (uint64_t)(n / t->ne[0]) > SIZE_MAX ||
        !l3c_mul_ok(row, (size_t)(n / t->ne[0]), &nbytes)) {
        return cur_fail(c, L3C_ERR_FORMAT, "byte size of %lld elements overflows", (long long)n);
    }
    t->nbytes = nbytes;
    if (t->offset % g->alignment != 0) {
        return cur_fail(c, L3C_ERR_FORMAT, "offset %llu is not a multiple of the alignment %zu",
                        (unsigned long long)t->offset, g->alignment);
    }
    size_t begin, end;
    if (t->offset > SIZE_MAX || !l3c_add_ok(g->data_offset, (size_t)t->offset, &begin) ||
        !l3c_add_ok(begin, nbytes, &end) || (end > g->size && !g->header_only)) {
        return cur_fail(c, L3C_ERR_FORMAT,
                        "data [%llu, +%zu) at data offset %zu ends past the file size %zu",
                        (unsigned long long)t->offset, nbytes, g->data_offset, g->size);
    }
    t->data = g->header_only ? NULL : g->base + begin;
    return L3C_OK;
}

static l3c_status parse_tensors(cursor *c, l3c_gguf *g) {
    l3c_status st;
    size_t n = (size_t)g->n_tensors;
    sort_ent *ents = NULL;
    span_ent *spans = NULL;
    g->tensors = l3c_calloc(n, sizeof *g->tensors);
    g->tensor_sorted = l3c_calloc(n, sizeof *g->tensor_sorted);
    ents = l3c_calloc(n, sizeof *ents);
    spans = l3c_calloc(n, sizeof *spans);
    if (!g->tensors || !g->tensor_sorted || !ents || !spans) {
        st = l3c_fail(L3C_ERR_NOMEM, "gguf: %s: out of memory for %zu tensors", c->file, n);
        goto fail;
    }
    c->section = "tensor";
    for (size_t i = 0; i < n; i++) {
        c->index = i;
        c->name.ptr = NULL;
        if ((st = parse_tensor_info(c, &g->tensors[i]))) goto fail;
    }
    /* data section starts at the next multiple of the alignment */
    size_t pad = (g->alignment - c->off % g->alignment) % g->alignment;
    if (!l3c_add_ok(c->off, pad, &g->data_offset)) {
        st = l3c_fail(L3C_ERR_FORMAT, "gguf: %s: data offset overflows", c->file);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        l3c_gguf_tensor *t = &g->tensors[i];
        c->index = i;
        c->name = (l3c_str){t->name, strlen(t->name)};
        if ((st = size_tensor(c, g, t))) goto fail;
        ents[i] = (sort_ent){t->name, c->name.len, i};
        spans[i] = (span_ent){t->offset, t->offset + t->nbytes, i};
    }
    size_t dup = sort_names(ents, n, g->tensor_sorted);
    if (dup < n) {
        c->index = ents[dup].idx;
        c->name = (l3c_str){ents[dup].ptr, ents[dup].len};
        st = cur_fail(c, L3C_ERR_FORMAT, "duplicate tensor name (also tensor %zu)",
                      ents[dup - 1].idx);
        goto fail;
    }
    if (n > 1) qsort(spans, n, sizeof *spans, cmp_span);
    for (size_t i = 1; i < n; i++) {
        if (spans[i].begin < spans[i - 1].end) {
            const l3c_gguf_tensor *a = &g->tensors[spans[i - 1].idx];
            c->index = spans[i].idx;
            c->name =
                (l3c_str){g->tensors[spans[i].idx].name, strlen(g->tensors[spans[i].idx].name)};
            st = cur_fail(
                c, L3C_ERR_FORMAT,
                "data at offset %llu overlaps tensor %zu ('%.64s', offset %llu, %zu bytes)",
                (unsigned long long)spans[i].begin, spans[i - 1].idx, a->name,
                (unsigned long long)a->offset, a->nbytes);
            goto fail;
        }
    }
    st = L3C_OK;
fail:
    free(ents);
    free(spans);
    return st;
}

static l3c_status parse(l3c_gguf *g) {
    cursor c = {.p = g->base, .size = g->size, .off = 0, .file = g->path, .section = "header"};
    l3c_status st;
    if ((st = parse_header(&c, g))) return st;
    if ((st = parse_kvs(&c, g))) return st;
    if ((st = parse_alignment(&c, g))) return st;
    return parse_tensors(&c, g);
}

/* ---------------------------------------------------------------- open / close */

static l3c_status open_common(const uint8_t *base, size_t size, const char *name, int owns_map,
                              int header_only, l3c_gguf **out) {
    l3c_status st;
    l3c_gguf *g = l3c_calloc(1, sizeof *g);
    if (!g) {
        if (owns_map) munmap((void *)base, size);
        return l3c_fail(L3C_ERR_NOMEM, "gguf: %s: out of memory", name);
    }
    g->base = base;
    g->size = size;
    g->owns_map = owns_map;
    g->header_only = header_only;
    g->path = l3c_strdup(name);
    if (!g->path) {
        st = l3c_fail(L3C_ERR_NOMEM, "gguf: %s: out of memory", name);
        goto fail;
    }
    if ((st = parse(g))) goto fail;
    *out = g;
    return L3C_OK;
fail:
    l3c_gguf_close(g);
    return st;
}

l3c_status l3c_gguf_open_memory(const void *buf, size_t size, const char *name, l3c_gguf **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "gguf: out is NULL");
    *out = NULL;
    if (!name) name = "<memory>";
    if (!buf && size) return l3c_fail(L3C_ERR_INVALID_ARG, "gguf: %s: NULL buffer", name);
    if (!buf) buf = "";
    return open_common(buf, size, name, 0, 0, out);
}

l3c_status l3c_gguf_open_header(const void *buf, size_t size, const char *name, l3c_gguf **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "gguf: out is NULL");
    *out = NULL;
    if (!name) name = "<memory>";
    if (!buf) return l3c_fail(L3C_ERR_INVALID_ARG, "gguf: %s: NULL buffer", name);
    return open_common(buf, size, name, 0, 1, out);
}

l3c_status l3c_gguf_open(const char *path, l3c_gguf **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "gguf: out is NULL");
    *out = NULL;
    if (!path) return l3c_fail(L3C_ERR_INVALID_ARG, "gguf: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return l3c_fail(L3C_ERR_IO, "gguf: %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return l3c_fail(L3C_ERR_IO, "gguf: %s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return l3c_fail(L3C_ERR_IO, "gguf: %s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: file is empty", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return l3c_fail(L3C_ERR_IO, "gguf: %s: file too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return l3c_fail(L3C_ERR_IO, "gguf: %s: mmap of %zu bytes failed: %s", path, size,
                        strerror(e));
#ifdef MADV_HUGEPAGE
    /* Best effort (errors ignored): pages of the file that are not cached yet are read in as
     * 2 MiB folios and mapped by PMD (one TLB entry per 2 MiB of weights instead of 512), which
     * also serves every later mapping of the file. Pages already cached in small folios stay
     * as they are. ~4% less CPU per generated token on a 1B Q4_0 (docs/PERFORMANCE.md). */
    (void)madvise(map, size, MADV_HUGEPAGE);
#endif
    return open_common(map, size, path, 1, 0, out);
}

void l3c_gguf_close(l3c_gguf *g) {
    if (!g) return;
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++)
            free(g->kv[i].strs);
        free(g->kv);
    }
    if (g->tensors) {
        for (uint64_t i = 0; i < g->n_tensors; i++)
            free(g->tensors[i].name);
        free(g->tensors);
    }
    free(g->kv_sorted);
    free(g->tensor_sorted);
    if (g->owns_map && g->base) munmap((void *)g->base, g->size);
    free(g->path);
    free(g);
}

/* ---------------------------------------------------------------- lookup */

const l3c_gguf_kv *l3c_gguf_find(const l3c_gguf *g, const char *key) {
    if (!g || !key || !g->kv_sorted) return NULL;
    size_t klen = strlen(key), lo = 0, hi = (size_t)g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const l3c_gguf_kv *kv = &g->kv[g->kv_sorted[mid]];
        int r = cmp_bytes(kv->key.ptr, kv->key.len, key, klen);
        if (r == 0) return kv;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const l3c_gguf_tensor *l3c_gguf_find_tensor(const l3c_gguf *g, const char *name) {
    if (!g || !name || !g->tensor_sorted) return NULL;
    size_t nlen = strlen(name), lo = 0, hi = (size_t)g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const l3c_gguf_tensor *t = &g->tensors[g->tensor_sorted[mid]];
        int r = cmp_bytes(t->name, strlen(t->name), name, nlen);
        if (r == 0) return t;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---------------------------------------------------------------- typed getters */

/* Looks key up; *kv NULL and L3C_OK when absent and optional. */
static l3c_status lookup(const l3c_gguf *g, const char *key, int optional, const l3c_gguf_kv **kv) {
    *kv = NULL;
    if (!g || !key) return l3c_fail(L3C_ERR_INVALID_ARG, "gguf: NULL reader or key");
    *kv = l3c_gguf_find(g, key);
    if (!*kv && !optional)
        return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: missing key '%s'", g->path, key);
    return L3C_OK;
}

static l3c_status wrong_type(const l3c_gguf *g, const char *key, const l3c_gguf_kv *kv,
                             const char *want) {
    if (kv->type == L3C_GGUF_ARRAY) {
        return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: key '%s' is an ARRAY of %s, expected %s",
                        g->path, key, l3c_gguf_vtype_name(kv->arr_type), want);
    }
    return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: key '%s' has type %s, expected %s", g->path, key,
                    l3c_gguf_vtype_name(kv->type), want);
}

/* Integer value in [lo, hi]; the text names the target type for messages. */
static l3c_status get_int_range(const l3c_gguf *g, const char *key, int optional, int64_t lo,
                                uint64_t hi, const char *want, bool *found, int64_t *s_out,
                                uint64_t *u_out) {
    const l3c_gguf_kv *kv = NULL;
    l3c_status st = lookup(g, key, optional, &kv);
    *found = false;
    if (st || !kv) return st;
    if (!vtype_is_int(kv->type)) return wrong_type(g, key, kv, want);
    int64_t s = 0;
    uint64_t u = 0;
    if (load_int(kv->type, kv->data, &s, &u)) {
        if (s < lo || (s > 0 && (uint64_t)s > hi)) {
            return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: key '%s' value %lld does not fit %s",
                            g->path, key, (long long)s, want);
        }
        u = (uint64_t)s;
    } else {
        if (u > hi) {
            return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: key '%s' value %llu does not fit %s",
                            g->path, key, (unsigned long long)u, want);
        }
        s = (int64_t)u; /* u <= hi <= INT64_MAX for every caller that reads s */
    }
    *found = true;
    *s_out = s;
    *u_out = u;
    return L3C_OK;
}

l3c_status l3c_gguf_get_i64(const l3c_gguf *g, const char *key, int optional, int64_t *out) {
    bool found;
    int64_t s;
    uint64_t u;
    l3c_status st = get_int_range(g, key, optional, INT64_MIN, INT64_MAX, "int64", &found, &s, &u);
    if (!st && found) *out = s;
    return st;
}

l3c_status l3c_gguf_get_u32(const l3c_gguf *g, const char *key, int optional, uint32_t *out) {
    bool found;
    int64_t s;
    uint64_t u;
    l3c_status st = get_int_range(g, key, optional, 0, UINT32_MAX, "uint32", &found, &s, &u);
    if (!st && found) *out = (uint32_t)u;
    return st;
}

l3c_status l3c_gguf_get_f32(const l3c_gguf *g, const char *key, int optional, float *out) {
    const l3c_gguf_kv *kv = NULL;
    l3c_status st = lookup(g, key, optional, &kv);
    if (st || !kv) return st;
    double v;
    if (kv->type == L3C_GGUF_FLOAT32 || kv->type == L3C_GGUF_FLOAT64) {
        v = load_float(kv->type, kv->data);
    } else if (vtype_is_int(kv->type)) {
        int64_t s;
        uint64_t u;
        v = load_int(kv->type, kv->data, &s, &u) ? (double)s : (double)u;
    } else {
        return wrong_type(g, key, kv, "a number");
    }
    if (isfinite(v) && fabs(v) > FLT_MAX) {
        return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: key '%s' value %g does not fit float32", g->path,
                        key, v);
    }
    *out = (float)v;
    return L3C_OK;
}

l3c_status l3c_gguf_get_bool(const l3c_gguf *g, const char *key, int optional, bool *out) {
    const l3c_gguf_kv *kv = NULL;
    l3c_status st = lookup(g, key, optional, &kv);
    if (st || !kv) return st;
    if (kv->type != L3C_GGUF_BOOL) return wrong_type(g, key, kv, "BOOL");
    *out = kv->data[0] != 0;
    return L3C_OK;
}

l3c_status l3c_gguf_get_str(const l3c_gguf *g, const char *key, int optional, l3c_str *out) {
    const l3c_gguf_kv *kv = NULL;
    l3c_status st = lookup(g, key, optional, &kv);
    if (st || !kv) return st;
    if (kv->type != L3C_GGUF_STRING) return wrong_type(g, key, kv, "STRING");
    *out = kv->strs[0];
    return L3C_OK;
}

l3c_status l3c_gguf_get_arr(const l3c_gguf *g, const char *key, int optional, int want_elem_type,
                            const l3c_gguf_kv **out) {
    const l3c_gguf_kv *kv = NULL;
    l3c_status st = lookup(g, key, optional, &kv);
    if (st || !kv) return st;
    if (kv->type != L3C_GGUF_ARRAY) {
        return l3c_fail(L3C_ERR_FORMAT, "gguf: %s: key '%s' has type %s, expected an ARRAY",
                        g->path, key, l3c_gguf_vtype_name(kv->type));
    }
    if (want_elem_type >= 0 && kv->arr_type != (l3c_gguf_vtype)want_elem_type) {
        return l3c_fail(L3C_ERR_FORMAT,
                        "gguf: %s: key '%s' is an ARRAY of %s, expected an ARRAY of %s", g->path,
                        key, l3c_gguf_vtype_name(kv->arr_type),
                        l3c_gguf_vtype_name((l3c_gguf_vtype)want_elem_type));
    }
    *out = kv;
    return L3C_OK;
}

/*
 * Element i of a numeric array (or of a numeric scalar kv, i == 0). Out-of-range i or a
 * non-numeric element type give 0; arr_i64 truncates floats toward zero and saturates values
 * outside int64 (NaN gives 0).
 */
static const uint8_t *elem_ptr(const l3c_gguf_kv *kv, uint64_t i, l3c_gguf_vtype *et) {
    if (!kv || i >= kv->n) return NULL;
    *et = kv->type == L3C_GGUF_ARRAY ? kv->arr_type : kv->type;
    size_t esz = vtype_size(*et);
    if (esz == 0) return NULL;
    return kv->data + (size_t)i * esz;
}

double l3c_gguf_arr_f64(const l3c_gguf_kv *kv, uint64_t i) {
    l3c_gguf_vtype et;
    const uint8_t *p = elem_ptr(kv, i, &et);
    if (!p) return 0.0;
    if (et == L3C_GGUF_FLOAT32 || et == L3C_GGUF_FLOAT64) return load_float(et, p);
    if (et == L3C_GGUF_BOOL) return p[0];
    int64_t s;
    uint64_t u;
    return load_int(et, p, &s, &u) ? (double)s : (double)u;
}

int64_t l3c_gguf_arr_i64(const l3c_gguf_kv *kv, uint64_t i) {
    l3c_gguf_vtype et;
    const uint8_t *p = elem_ptr(kv, i, &et);
    if (!p) return 0;
    if (et == L3C_GGUF_FLOAT32 || et == L3C_GGUF_FLOAT64) {
        double d = load_float(et, p);
        if (d != d) return 0;
        if (d >= 9223372036854775807.0) return INT64_MAX;
        if (d <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)d;
    }
    if (et == L3C_GGUF_BOOL) return p[0];
    int64_t s;
    uint64_t u;
    if (load_int(et, p, &s, &u)) return s;
    return u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
}
