/*
 * test_gguf.c -- the GGUF reader (src/io/gguf.c) against files built byte by byte here.
 *
 * The builder below writes GGUF from its own description (independent of the reader), so the
 * expected values, offsets and sizes are known without parsing. Checks: every value type and
 * getter (incl. integer conversion and range errors), tensors (shape, offset, nbytes, data),
 * then hostile variants: truncation at every byte, huge counts/lengths, bad offsets, alignment,
 * dims, types, duplicates, overlap, bad magic/version; and allocation failure at every N.
 *
 * Extra modes (used by tests/py/test_gguf_reader.py and the fuzz seed corpus):
 *   test_gguf --dump FILE        stable text dump of a GGUF file (see dump())
 *   test_gguf --write-seeds DIR  writes small valid GGUF files into DIR
 */
#include "io/gguf.h"

#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- byte builder (plain libc) */

typedef struct gb {
    uint8_t *d;
    size_t n, cap;
} gb;

static void put(gb *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->d = realloc(b->d, cap);
        if (!b->d) abort(); /* test harness only */
        b->cap = cap;
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void put_u8(gb *b, uint8_t v) {
    put(b, &v, 1);
}
static void put_u16(gb *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, x, 2);
}
static void put_u32(gb *b, uint32_t v) {
    put_u16(b, (uint16_t)v);
    put_u16(b, (uint16_t)(v >> 16));
}
static void put_u64(gb *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_f32(gb *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_f64(gb *b, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    put_u64(b, u);
}
static void put_str(gb *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void set_u32(gb *b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++)
        b->d[at + i] = (uint8_t)(v >> 8 * i);
}
static void set_u64(gb *b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++)
        b->d[at + i] = (uint8_t)(v >> 8 * i);
}

/* ---------------------------------------------------------------- file description */

typedef struct tspec {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
    uint64_t offset; /* UINT64_MAX: next aligned offset after the previous tensor */
    size_t nbytes;   /* bytes of data (computed by the builder from a local table) */
    int placed;      /* set by the builder when it chose the offset; only those get data written */
} tspec;

typedef struct spec {
    uint32_t version;
    int alignment_type; /* -1: no general.alignment kv; else its value type */
    uint64_t alignment;
    int n_tensors;
    tspec t[4];
    int dup_key;       /* 1: write "t.u8" twice */
    int n_kv_override; /* when non-zero, header n_kv written as huge_kv */
    uint64_t huge_kv;
    int n_t_override;
    uint64_t huge_t;
    uint32_t bool_value; /* value byte of t.bool */
    uint32_t nested;     /* element type of t.arr.i32 (default INT32) */
} spec;

/* Positions of fields in the built file, for byte-level patches. */
typedef struct marks {
    size_t first_key_len, i8_type, str_arr_count, f32_arr_count, tensor_info[4], data_offset;
} marks;

enum { N_BASE_KV = 21 };

static size_t local_row_bytes(uint32_t type, uint64_t n) {
    if (n > (1u << 20)) return 0; /* hostile shapes: nothing written */
    switch (type) {
    case 0:
        return (size_t)n * 4; /* F32 */
    case 1:
        return (size_t)n * 2; /* F16 */
    case 8:
        return (size_t)(n / 32) * 34; /* Q8_0: fp16 d + 32 x int8 */
    default:
        return 0; /* hostile cases: no data written */
    }
}

static spec default_spec(void) {
    spec s = {.version = 3,
              .alignment_type = 4,
              .alignment = 64,
              .n_tensors = 4,
              .bool_value = 1,
              .nested = 5};
    s.t[0] = (tspec){"tok_embd", 2, {8, 3, 1, 1}, 0, UINT64_MAX, 0, 0};
    s.t[1] = (tspec){"norm", 1, {16, 1, 1, 1}, 1, UINT64_MAX, 0, 0};
    s.t[2] = (tspec){"blk.0.wq", 2, {64, 2, 1, 1}, 8, UINT64_MAX, 0, 0};
    s.t[3] = (tspec){"w4d", 4, {1, 2, 1, 2}, 0, UINT64_MAX, 0, 0};
    return s;
}

static const char *g_strs[3] = {"a", "", "h\xc3\xa9llo"};

/* Writes the file described by s; fills s->t[].offset / nbytes and m. The file ends right after
 * the last tensor's data, so every truncation removes something required. */
static void build(spec *s, gb *b, marks *m) {
    memset(m, 0, sizeof *m);
    b->n = 0;
    size_t align = s->alignment_type == 4 && s->alignment && !(s->alignment & (s->alignment - 1))
                       ? (size_t)s->alignment
                       : 32;
    put(b, "GGUF", 4);
    put_u32(b, s->version);
    put_u64(b, s->n_t_override ? s->huge_t : (uint64_t)s->n_tensors);
    uint64_t n_kv = N_BASE_KV + (s->alignment_type >= 0) + (s->dup_key != 0);
    put_u64(b, s->n_kv_override ? s->huge_kv : n_kv);

    m->first_key_len = b->n;
    put_str(b, "general.architecture");
    put_u32(b, 8);
    put_str(b, "llama");
    if (s->alignment_type >= 0) {
        put_str(b, "general.alignment");
        put_u32(b, (uint32_t)s->alignment_type);
        if (s->alignment_type == 10)
            put_u64(b, s->alignment);
        else
            put_u32(b, (uint32_t)s->alignment);
    }
    put_str(b, "t.u8");
    put_u32(b, 0);
    put_u8(b, 200);
    if (s->dup_key) {
        put_str(b, "t.u8");
        put_u32(b, 0);
        put_u8(b, 1);
    }
    put_str(b, "t.i8");
    m->i8_type = b->n;
    put_u32(b, 1);
    put_u8(b, (uint8_t)-5);
    put_str(b, "t.u16");
    put_u32(b, 2);
    put_u16(b, 60000);
    put_str(b, "t.i16");
    put_u32(b, 3);
    put_u16(b, (uint16_t)-30000);
    put_str(b, "t.u32");
    put_u32(b, 4);
    put_u32(b, 4000000000u);
    put_str(b, "t.i32");
    put_u32(b, 5);
    put_u32(b, (uint32_t)-2000000000);
    put_str(b, "t.f32");
    put_u32(b, 6);
    put_f32(b, 0.5f);
    put_str(b, "t.bool");
    put_u32(b, 7);
    put_u8(b, (uint8_t)s->bool_value);
    put_str(b, "t.str");
    put_u32(b, 8);
    put_str(b, "hello world");
    put_str(b, "t.u64");
    put_u32(b, 10);
    put_u64(b, (1ull << 63) + 5);
    put_str(b, "t.i64");
    put_u32(b, 11);
    put_u64(b, (uint64_t) - (1ll << 40));
    put_str(b, "t.f64");
    put_u32(b, 12);
    put_f64(b, 1e300);
    put_str(b, "t.f64s");
    put_u32(b, 12);
    put_f64(b, 0.25);
    put_str(b, "t.small");
    put_u32(b, 10);
    put_u64(b, 7);
    put_str(b, "t.arr.str");
    put_u32(b, 9);
    put_u32(b, 8);
    m->str_arr_count = b->n;
    put_u64(b, 3);
    for (int i = 0; i < 3; i++)
        put_str(b, g_strs[i]);
    put_str(b, "t.arr.i32");
    put_u32(b, 9);
    put_u32(b, s->nested);
    put_u64(b, 3);
    put_u32(b, 1);
    put_u32(b, (uint32_t)-2);
    put_u32(b, 3);
    put_str(b, "t.arr.f32");
    put_u32(b, 9);
    put_u32(b, 6);
    m->f32_arr_count = b->n;
    put_u64(b, 2);
    put_f32(b, 1.5f);
    put_f32(b, -2.5f);
    put_str(b, "t.arr.empty");
    put_u32(b, 9);
    put_u32(b, 0);
    put_u64(b, 0);
    put_str(b, "t.arr.bool");
    put_u32(b, 9);
    put_u32(b, 7);
    put_u64(b, 2);
    put_u8(b, 1);
    put_u8(b, 0);
    put_str(b, "t.arr.u64");
    put_u32(b, 9);
    put_u32(b, 10);
    put_u64(b, 2);
    put_u64(b, 1ull << 40);
    put_u64(b, UINT64_MAX);

    /* tensor infos: offsets assigned in order, each aligned */
    uint64_t next = 0;
    for (int i = 0; i < s->n_tensors; i++) {
        tspec *t = &s->t[i];
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims && d < 4; d++)
            n *= t->ne[d];
        t->nbytes = local_row_bytes(t->type, n);
        if (t->offset == UINT64_MAX) {
            t->offset = next;
            t->placed = 1;
        }
        next = (t->offset + t->nbytes + align - 1) / align * align;
        m->tensor_info[i] = b->n;
        put_str(b, t->name);
        put_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && d < 8; d++)
            put_u64(b, t->ne[d < 4 ? d : 0]);
        put_u32(b, t->type);
        put_u64(b, t->offset);
    }
    while (b->n % align)
        put_u8(b, 0);
    m->data_offset = b->n;
    /* data: byte k of tensor i is (i * 37 + k) & 255; gaps are zero */
    size_t end = m->data_offset;
    for (int i = 0; i < s->n_tensors; i++) {
        if (s->t[i].placed && m->data_offset + s->t[i].offset + s->t[i].nbytes > end)
            end = m->data_offset + (size_t)s->t[i].offset + s->t[i].nbytes;
    }
    while (b->n < end)
        put_u8(b, 0);
    for (int i = 0; i < s->n_tensors; i++) {
        for (size_t k = 0; s->t[i].placed && k < s->t[i].nbytes; k++) {
            size_t at = m->data_offset + (size_t)s->t[i].offset + k;
            if (at < b->n) b->d[at] = (uint8_t)(i * 37 + k);
        }
    }
}

/* Opens b's bytes from an exact-size heap copy (so ASan sees any over-read). */
static l3c_status open_copy(const gb *b, size_t n, l3c_gguf **g, uint8_t **copy) {
    *copy = malloc(n ? n : 1);
    if (!*copy) abort();
    memcpy(*copy, b->d, n);
    return l3c_gguf_open_memory(*copy, n, "t.gguf", g);
}

/* Builds s, opens it, expects status want and (if given) an error containing `needle`. */
static void expect_fail(spec s, l3c_status want, const char *needle, int line) {
    gb b = {0};
    marks m;
    build(&s, &b, &m);
    l3c_gguf *g = (l3c_gguf *)1;
    uint8_t *copy;
    l3c_status st = open_copy(&b, b.n, &g, &copy);
    CHECK_MSG(st == want, "line %d: status %s, want %s (%s)", line, l3c_status_name(st),
              l3c_status_name(want), l3c_last_error());
    CHECK_MSG(g == NULL, "line %d: out not NULL on failure", line);
    if (needle)
        CHECK_MSG(strstr(l3c_last_error(), needle), "line %d: '%s' not in '%s'", line, needle,
                  l3c_last_error());
    l3c_gguf_close(g);
    free(copy);
    free(b.d);
}
#define EXPECT_FAIL(s, want, needle) expect_fail(s, want, needle, __LINE__)

/* Patch variant: build the default file, apply fn, expect failure. */
static void expect_patch_fail(void (*fn)(gb *, const marks *), l3c_status want, const char *needle,
                              int line) {
    spec s = default_spec();
    gb b = {0};
    marks m;
    build(&s, &b, &m);
    fn(&b, &m);
    l3c_gguf *g = (l3c_gguf *)1;
    uint8_t *copy;
    l3c_status st = open_copy(&b, b.n, &g, &copy);
    CHECK_MSG(st == want, "line %d: status %s, want %s (%s)", line, l3c_status_name(st),
              l3c_status_name(want), l3c_last_error());
    CHECK_MSG(g == NULL, "line %d: out not NULL", line);
    if (needle)
        CHECK_MSG(strstr(l3c_last_error(), needle), "line %d: '%s' not in '%s'", line, needle,
                  l3c_last_error());
    l3c_gguf_close(g);
    free(copy);
    free(b.d);
}
#define EXPECT_PATCH_FAIL(fn, want, needle) expect_patch_fail(fn, want, needle, __LINE__)

static void p_magic(gb *b, const marks *m) {
    b->d[0] = 'X';
}
static void p_key_len_huge(gb *b, const marks *m) {
    set_u64(b, m->first_key_len, UINT64_MAX);
}
static void p_key_len_past(gb *b, const marks *m) {
    set_u64(b, m->first_key_len, b->n);
}
static void p_vtype_99(gb *b, const marks *m) {
    set_u32(b, m->i8_type, 99);
}
static void p_str_arr_huge(gb *b, const marks *m) {
    set_u64(b, m->str_arr_count, 1ull << 60);
}
static void p_str_arr_max(gb *b, const marks *m) {
    set_u64(b, m->str_arr_count, UINT64_MAX);
}
static void p_f32_arr_overflow(gb *b, const marks *m) {
    set_u64(b, m->f32_arr_count, 1ull << 62);
}
static void p_f32_arr_past(gb *b, const marks *m) {
    set_u64(b, m->f32_arr_count, b->n / 4);
}
static void p_big_endian(gb *b, const marks *m) {
    set_u32(b, 4, 0x03000000u);
}

/* ---------------------------------------------------------------- positive checks */

static bool str_eq(l3c_str s, const char *c) {
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

static void check_contents(const l3c_gguf *g, const spec *s, const marks *m) {
    CHECK(g->version == 3);
    CHECK(g->n_kv == N_BASE_KV + 1);
    CHECK(g->n_tensors == 4);
    CHECK(g->alignment == 64);
    CHECK(g->data_offset == m->data_offset);
    CHECK(g->data_offset % 64 == 0);

    int64_t i64 = 0;
    uint32_t u32 = 0;
    float f = 0;
    bool bo = false;
    l3c_str str = {0};
    const l3c_gguf_kv *kv = NULL;

    CHECK(l3c_gguf_get_i64(g, "t.u8", 0, &i64) == L3C_OK && i64 == 200);
    CHECK(l3c_gguf_get_i64(g, "t.i8", 0, &i64) == L3C_OK && i64 == -5);
    CHECK(l3c_gguf_get_i64(g, "t.u16", 0, &i64) == L3C_OK && i64 == 60000);
    CHECK(l3c_gguf_get_i64(g, "t.i16", 0, &i64) == L3C_OK && i64 == -30000);
    CHECK(l3c_gguf_get_i64(g, "t.u32", 0, &i64) == L3C_OK && i64 == 4000000000ll);
    CHECK(l3c_gguf_get_i64(g, "t.i32", 0, &i64) == L3C_OK && i64 == -2000000000ll);
    CHECK(l3c_gguf_get_i64(g, "t.i64", 0, &i64) == L3C_OK && i64 == -(1ll << 40));
    CHECK(l3c_gguf_get_i64(g, "t.small", 0, &i64) == L3C_OK && i64 == 7);
    i64 = 123;
    CHECK(l3c_gguf_get_i64(g, "t.u64", 0, &i64) == L3C_ERR_FORMAT && i64 == 123); /* 2^63+5 */
    CHECK(strstr(l3c_last_error(), "t.u64") && strstr(l3c_last_error(), "int64"));
    CHECK(l3c_gguf_get_i64(g, "t.f32", 0, &i64) == L3C_ERR_FORMAT);
    CHECK(strstr(l3c_last_error(), "FLOAT32"));
    CHECK(l3c_gguf_get_i64(g, "t.str", 0, &i64) == L3C_ERR_FORMAT);
    CHECK(l3c_gguf_get_i64(g, "t.arr.i32", 0, &i64) == L3C_ERR_FORMAT);

    CHECK(l3c_gguf_get_u32(g, "t.u32", 0, &u32) == L3C_OK && u32 == 4000000000u);
    CHECK(l3c_gguf_get_u32(g, "t.small", 0, &u32) == L3C_OK && u32 == 7);
    CHECK(l3c_gguf_get_u32(g, "general.alignment", 0, &u32) == L3C_OK && u32 == 64);
    CHECK(l3c_gguf_get_u32(g, "t.i8", 0, &u32) == L3C_ERR_FORMAT);  /* negative */
    CHECK(l3c_gguf_get_u32(g, "t.i64", 0, &u32) == L3C_ERR_FORMAT); /* negative */
    CHECK(l3c_gguf_get_u32(g, "t.u64", 0, &u32) == L3C_ERR_FORMAT); /* too big */
    CHECK(l3c_gguf_get_u32(g, "t.bool", 0, &u32) == L3C_ERR_FORMAT);

    CHECK(l3c_gguf_get_f32(g, "t.f32", 0, &f) == L3C_OK && f == 0.5f);
    CHECK(l3c_gguf_get_f32(g, "t.f64s", 0, &f) == L3C_OK && f == 0.25f);
    CHECK(l3c_gguf_get_f32(g, "t.i16", 0, &f) == L3C_OK && f == -30000.0f);
    CHECK(l3c_gguf_get_f32(g, "t.f64", 0, &f) == L3C_ERR_FORMAT); /* 1e300 */
    CHECK(l3c_gguf_get_f32(g, "t.str", 0, &f) == L3C_ERR_FORMAT);

    CHECK(l3c_gguf_get_bool(g, "t.bool", 0, &bo) == L3C_OK && bo);
    CHECK(l3c_gguf_get_bool(g, "t.u8", 0, &bo) == L3C_ERR_FORMAT);

    CHECK(l3c_gguf_get_str(g, "general.architecture", 0, &str) == L3C_OK && str_eq(str, "llama"));
    CHECK(l3c_gguf_get_str(g, "t.str", 0, &str) == L3C_OK && str_eq(str, "hello world"));
    CHECK(l3c_gguf_get_str(g, "t.arr.str", 0, &str) == L3C_ERR_FORMAT);
    CHECK(strstr(l3c_last_error(), "ARRAY of STRING"));
    CHECK(l3c_gguf_get_str(g, "t.u8", 0, &str) == L3C_ERR_FORMAT);

    /* optional vs required */
    i64 = 99;
    CHECK(l3c_gguf_get_i64(g, "nope", 1, &i64) == L3C_OK && i64 == 99);
    CHECK(l3c_gguf_get_i64(g, "nope", 0, &i64) == L3C_ERR_FORMAT && i64 == 99);
    CHECK(strstr(l3c_last_error(), "missing key 'nope'") && strstr(l3c_last_error(), g->path));
    str.ptr = "x";
    CHECK(l3c_gguf_get_str(g, "nope", 1, &str) == L3C_OK && str.ptr[0] == 'x');
    kv = (const l3c_gguf_kv *)&str;
    CHECK(l3c_gguf_get_arr(g, "nope", 1, -1, &kv) == L3C_OK && kv == (const l3c_gguf_kv *)&str);
    CHECK(l3c_gguf_get_arr(g, "nope", 0, -1, &kv) == L3C_ERR_FORMAT);
    CHECK(l3c_gguf_get_f32(g, "nope", 0, &f) == L3C_ERR_FORMAT);
    CHECK(l3c_gguf_get_bool(g, "nope", 0, &bo) == L3C_ERR_FORMAT);
    CHECK(l3c_gguf_get_u32(g, "nope", 1, &u32) == L3C_OK);

    /* arrays */
    CHECK(l3c_gguf_get_arr(g, "t.arr.str", 0, L3C_GGUF_STRING, &kv) == L3C_OK);
    CHECK(kv->type == L3C_GGUF_ARRAY && kv->arr_type == L3C_GGUF_STRING && kv->n == 3);
    for (int i = 0; i < 3; i++)
        CHECK(str_eq(kv->strs[i], g_strs[i]));
    CHECK(l3c_gguf_get_arr(g, "t.arr.str", 0, L3C_GGUF_INT32, &kv) == L3C_ERR_FORMAT);
    CHECK(l3c_gguf_get_arr(g, "t.u8", 0, -1, &kv) == L3C_ERR_FORMAT);
    CHECK(l3c_gguf_get_arr(g, "t.arr.i32", 0, -1, &kv) == L3C_OK && kv->n == 3);
    CHECK(l3c_gguf_arr_i64(kv, 0) == 1 && l3c_gguf_arr_i64(kv, 1) == -2 &&
          l3c_gguf_arr_i64(kv, 2) == 3);
    CHECK(l3c_gguf_arr_f64(kv, 1) == -2.0);
    CHECK(l3c_gguf_arr_i64(kv, 3) == 0); /* out of range */
    CHECK(l3c_gguf_get_arr(g, "t.arr.f32", 0, L3C_GGUF_FLOAT32, &kv) == L3C_OK && kv->n == 2);
    CHECK(l3c_gguf_arr_f64(kv, 0) == 1.5 && l3c_gguf_arr_f64(kv, 1) == -2.5);
    CHECK(l3c_gguf_arr_i64(kv, 1) == -2);
    CHECK(l3c_gguf_get_arr(g, "t.arr.empty", 0, L3C_GGUF_UINT8, &kv) == L3C_OK && kv->n == 0);
    CHECK(l3c_gguf_arr_f64(kv, 0) == 0.0);
    CHECK(l3c_gguf_get_arr(g, "t.arr.bool", 0, L3C_GGUF_BOOL, &kv) == L3C_OK && kv->n == 2);
    CHECK(l3c_gguf_arr_i64(kv, 0) == 1 && l3c_gguf_arr_i64(kv, 1) == 0);
    CHECK(l3c_gguf_get_arr(g, "t.arr.u64", 0, L3C_GGUF_UINT64, &kv) == L3C_OK && kv->n == 2);
    CHECK(l3c_gguf_arr_i64(kv, 0) == (1ll << 40) &&
          l3c_gguf_arr_i64(kv, 1) == INT64_MAX); /* saturates */
    CHECK(l3c_gguf_arr_f64(kv, 1) == 18446744073709551615.0);
    CHECK(l3c_gguf_arr_i64(l3c_gguf_find(g, "t.i16"), 0) == -30000); /* scalar as 1-element */
    CHECK(l3c_gguf_arr_i64(l3c_gguf_find(g, "t.str"), 0) == 0);

    /* every kv reachable through find */
    for (uint64_t i = 0; i < g->n_kv; i++) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)g->kv[i].key.len, g->kv[i].key.ptr);
        CHECK(l3c_gguf_find(g, key) == &g->kv[i]);
    }
    CHECK(l3c_gguf_find(g, "t.u") == NULL && l3c_gguf_find(g, "t.u80") == NULL &&
          l3c_gguf_find(g, "") == NULL);

    /* tensors: shape, type, offset, nbytes, data, lookup */
    static const size_t want_nbytes[4] = {8 * 3 * 4, 16 * 2, 2 * 2 * 34, 4 * 4};
    static const uint64_t want_off[4] = {0, 128, 192, 384};
    for (int i = 0; i < 4; i++) {
        const l3c_gguf_tensor *t = l3c_gguf_find_tensor(g, s->t[i].name);
        CHECK_MSG(t == &g->tensors[i], "tensor %d lookup", i);
        if (!t) continue;
        CHECK(strcmp(t->name, s->t[i].name) == 0);
        CHECK(t->type == s->t[i].type && t->n_dims == s->t[i].n_dims);
        int64_t n = 1;
        for (int d = 0; d < 4; d++) {
            CHECK(t->ne[d] == (int64_t)s->t[i].ne[d]);
            n *= t->ne[d];
        }
        CHECK(t->n_elements == n);
        CHECK_MSG(t->nbytes == want_nbytes[i], "tensor %d nbytes %zu", i, t->nbytes);
        CHECK_MSG(t->offset == want_off[i], "tensor %d offset %llu", i,
                  (unsigned long long)t->offset);
        CHECK((const uint8_t *)t->data == g->base + m->data_offset + want_off[i]);
        const uint8_t *p = t->data;
        bool ok = true;
        for (size_t k = 0; k < t->nbytes; k++)
            ok = ok && p[k] == (uint8_t)(i * 37 + k);
        CHECK_MSG(ok, "tensor %d data", i);
    }
    CHECK(l3c_gguf_find_tensor(g, "nope") == NULL && l3c_gguf_find_tensor(g, "norm2") == NULL);
    CHECK(strcmp(l3c_gguf_vtype_name(L3C_GGUF_FLOAT64), "FLOAT64") == 0);
    CHECK(strcmp(l3c_gguf_vtype_name((l3c_gguf_vtype)77), "INVALID") == 0);
}

static void test_valid(void) {
    spec s = default_spec();
    gb b = {0};
    marks m;
    build(&s, &b, &m);
    l3c_gguf *g = NULL;
    uint8_t *copy;
    l3c_status st = open_copy(&b, b.n, &g, &copy);
    CHECK_MSG(st == L3C_OK, "%s", l3c_last_error());
    if (g) check_contents(g, &s, &m);
    l3c_gguf_close(g);
    free(copy);

    /* same file through the mmap path */
    char path[] = "/tmp/l3c_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, b.d, b.n) == (ssize_t)b.n);
        close(fd);
        g = NULL;
        st = l3c_gguf_open(path, &g);
        CHECK_MSG(st == L3C_OK, "%s", l3c_last_error());
        if (g) {
            CHECK(g->owns_map == 1 && strcmp(g->path, path) == 0);
            check_contents(g, &s, &m);
        }
        l3c_gguf_close(g);
        fd = open(path, O_WRONLY | O_TRUNC);
        if (fd >= 0) close(fd);
        g = (l3c_gguf *)1;
        CHECK(l3c_gguf_open(path, &g) == L3C_ERR_FORMAT && g == NULL); /* empty file */
        unlink(path);
    }
    g = (l3c_gguf *)1;
    CHECK(l3c_gguf_open("/nonexistent/x.gguf", &g) == L3C_ERR_IO && g == NULL);
    CHECK(strstr(l3c_last_error(), "/nonexistent/x.gguf"));
    CHECK(l3c_gguf_open("/tmp", &g) == L3C_ERR_IO && g == NULL);

    /* v2 and the default alignment (32) without general.alignment */
    s = default_spec();
    s.version = 2;
    s.alignment_type = -1;
    build(&s, &b, &m);
    st = open_copy(&b, b.n, &g, &copy);
    CHECK_MSG(st == L3C_OK, "%s", l3c_last_error());
    if (g) {
        CHECK(g->version == 2 && g->alignment == 32 && g->data_offset % 32 == 0);
        CHECK(g->tensors[1].offset == 96 && g->tensors[2].offset == 128);
    }
    l3c_gguf_close(g);
    free(copy);

    /* zero tensors: valid, data offset may be at the end */
    s = default_spec();
    s.n_tensors = 0;
    build(&s, &b, &m);
    st = open_copy(&b, b.n, &g, &copy);
    CHECK_MSG(st == L3C_OK && g && g->n_tensors == 0, "%s", l3c_last_error());
    l3c_gguf_close(g);
    free(copy);
    free(b.d);
}

/* ---------------------------------------------------------------- hostile files */

static void test_truncation(void) {
    spec s = default_spec();
    gb b = {0};
    marks m;
    build(&s, &b, &m);
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        l3c_gguf *g = (l3c_gguf *)1;
        uint8_t *copy;
        l3c_status st = open_copy(&b, n, &g, &copy);
        if (st != L3C_ERR_FORMAT || g != NULL || !strstr(l3c_last_error(), "t.gguf")) {
            if (bad++ < 5)
                fprintf(stderr, "truncated at %zu: %s %s\n", n, l3c_status_name(st),
                        l3c_last_error());
            l3c_gguf_close(g == (l3c_gguf *)1 ? NULL : g);
        }
        free(copy);
    }
    CHECK_MSG(bad == 0, "%d of %zu truncations not rejected cleanly", bad, b.n);
    /* a truncation inside the kv section names the kv and the offset */
    l3c_gguf *g;
    uint8_t *copy;
    open_copy(&b, m.tensor_info[3] + 4, &g, &copy);
    CHECK_MSG(strstr(l3c_last_error(), "truncated at offset") &&
                  strstr(l3c_last_error(), "tensor 3 name"),
              "%s", l3c_last_error());
    free(copy);
    free(b.d);
}

static void test_hostile(void) {
    spec s;
#define WITH(stmt) (s = default_spec(), (stmt), s)
    EXPECT_PATCH_FAIL(p_magic, L3C_ERR_FORMAT, "magic");
    EXPECT_FAIL(WITH(s.version = 1), L3C_ERR_UNSUPPORTED, "version 1");
    EXPECT_FAIL(WITH(s.version = 4), L3C_ERR_UNSUPPORTED, "version 4");
    EXPECT_FAIL(WITH(s.version = 0), L3C_ERR_UNSUPPORTED, "version 0");
    EXPECT_PATCH_FAIL(p_big_endian, L3C_ERR_UNSUPPORTED, "big-endian");

    EXPECT_FAIL(WITH((s.n_kv_override = 1, s.huge_kv = UINT64_MAX)), L3C_ERR_FORMAT, "kv count");
    EXPECT_FAIL(WITH((s.n_kv_override = 1, s.huge_kv = 1ull << 40)), L3C_ERR_FORMAT, "kv count");
    EXPECT_FAIL(WITH((s.n_t_override = 1, s.huge_t = UINT64_MAX)), L3C_ERR_FORMAT, "tensor count");
    EXPECT_FAIL(WITH((s.n_t_override = 1, s.huge_t = 1000)), L3C_ERR_FORMAT, "tensor count");
    /* plausible but wrong counts fail while parsing */
    EXPECT_FAIL(WITH((s.n_kv_override = 1, s.huge_kv = N_BASE_KV + 2)), L3C_ERR_FORMAT, NULL);
    EXPECT_FAIL(WITH((s.n_t_override = 1, s.huge_t = 5)), L3C_ERR_FORMAT, NULL);
    EXPECT_PATCH_FAIL(p_key_len_huge, L3C_ERR_FORMAT, "kv 0: key length");
    EXPECT_PATCH_FAIL(p_key_len_past, L3C_ERR_FORMAT, "exceeds");
    EXPECT_PATCH_FAIL(p_vtype_99, L3C_ERR_FORMAT, "('t.i8'): value type 99 is invalid");
    EXPECT_PATCH_FAIL(p_str_arr_huge, L3C_ERR_FORMAT, "string array length");
    EXPECT_PATCH_FAIL(p_str_arr_max, L3C_ERR_FORMAT, "string array length");
    EXPECT_PATCH_FAIL(p_f32_arr_overflow, L3C_ERR_FORMAT, "('t.arr.f32')");
    EXPECT_PATCH_FAIL(p_f32_arr_past, L3C_ERR_FORMAT, "exceed");
    EXPECT_FAIL(WITH(s.nested = 9), L3C_ERR_UNSUPPORTED, "nested arrays");
    EXPECT_FAIL(WITH(s.nested = 13), L3C_ERR_FORMAT, "array element type 13");
    EXPECT_FAIL(WITH(s.bool_value = 2), L3C_ERR_FORMAT, "bool");
    EXPECT_FAIL(WITH(s.dup_key = 1), L3C_ERR_FORMAT, "duplicate key");

    EXPECT_FAIL(WITH(s.alignment = 0), L3C_ERR_FORMAT, "power of two");
    EXPECT_FAIL(WITH(s.alignment = 48), L3C_ERR_FORMAT, "power of two");
    EXPECT_FAIL(WITH(s.alignment_type = 10), L3C_ERR_FORMAT,
                "('general.alignment'): alignment has type UINT64");

    EXPECT_FAIL(WITH(s.t[3].offset = 1u << 20), L3C_ERR_FORMAT, "past the file size");
    EXPECT_FAIL(WITH(s.t[3].offset = UINT64_MAX - 63), L3C_ERR_FORMAT, "past the file size");
    EXPECT_FAIL(WITH(s.t[1].offset = 8), L3C_ERR_FORMAT, "not a multiple of the alignment 64");
    EXPECT_FAIL(WITH(s.t[2].offset = 64), L3C_ERR_FORMAT, "overlaps");  /* tok_embd is 96 bytes */
    EXPECT_FAIL(WITH(s.t[3].offset = 192), L3C_ERR_FORMAT, "overlaps"); /* same start as blk.0.wq */
    EXPECT_FAIL(WITH(s.t[0].n_dims = 0), L3C_ERR_FORMAT, "n_dims 0");
    EXPECT_FAIL(WITH(s.t[0].n_dims = 5), L3C_ERR_FORMAT, "n_dims 5");
    EXPECT_FAIL(WITH(s.t[0].ne[1] = 0), L3C_ERR_FORMAT, "ne[1] = 0");
    EXPECT_FAIL(WITH(s.t[0].ne[0] = 1ull << 63), L3C_ERR_FORMAT, "ne[0]");
    EXPECT_FAIL(WITH((s.t[3].ne[0] = 1ull << 32, s.t[3].ne[3] = 1ull << 32)), L3C_ERR_FORMAT,
                "overflows int64");
    EXPECT_FAIL(WITH((s.t[3].ne[0] = 1ull << 61)), L3C_ERR_FORMAT,
                "tensor 3 ('w4d')"); /* 2^63 bytes */
    EXPECT_FAIL(WITH((s.t[3].ne[0] = 1ull << 62)), L3C_ERR_FORMAT,
                "tensor 3 ('w4d')"); /* bytes overflow */
    EXPECT_FAIL(WITH(s.t[2].ne[0] = 48), L3C_ERR_FORMAT, "block size 32");
    EXPECT_FAIL(WITH(s.t[0].type = 99), L3C_ERR_UNSUPPORTED,
                "tensor 0 ('tok_embd'): tensor has unsupported type id 99");
    EXPECT_FAIL(WITH(s.t[0].type = 4), L3C_ERR_UNSUPPORTED, "unsupported type id 4");
    EXPECT_FAIL(WITH(s.t[1].name = "tok_embd"), L3C_ERR_FORMAT, "duplicate tensor name");
    EXPECT_FAIL(WITH(s.t[1].name = ""), L3C_ERR_FORMAT, "empty tensor name");
#undef WITH
    /* NUL inside a name, and a junk name printed safely */
    spec s2 = default_spec();
    gb b = {0};
    marks m;
    build(&s2, &b, &m);
    b.d[m.tensor_info[1] + 8 + 1] = 0;
    l3c_gguf *g = (l3c_gguf *)1;
    uint8_t *copy;
    CHECK(open_copy(&b, b.n, &g, &copy) == L3C_ERR_FORMAT && g == NULL);
    CHECK(strstr(l3c_last_error(), "NUL"));
    free(copy);
    free(b.d);
    /* empty buffer / NULL args */
    g = (l3c_gguf *)1;
    CHECK(l3c_gguf_open_memory(NULL, 0, NULL, &g) == L3C_ERR_FORMAT && g == NULL);
    CHECK(l3c_gguf_open_memory(NULL, 5, "x", &g) == L3C_ERR_INVALID_ARG && g == NULL);
    CHECK(l3c_gguf_find(NULL, "x") == NULL && l3c_gguf_find_tensor(NULL, "x") == NULL);
    l3c_gguf_close(NULL);
}

static void test_alloc_fail(void) {
    spec s = default_spec();
    gb b = {0};
    marks m;
    build(&s, &b, &m);
    long n;
    int bad = 0;
    for (n = 0; n < 10000; n++) {
        l3c_gguf *g = (l3c_gguf *)1;
        l3c_set_alloc_fail_after(n);
        l3c_status st = l3c_gguf_open_memory(b.d, b.n, "t.gguf", &g);
        l3c_set_alloc_fail_after(-1);
        if (st == L3C_OK) {
            l3c_gguf_close(g);
            break;
        }
        if (st != L3C_ERR_NOMEM || g != NULL) bad++;
    }
    CHECK_MSG(bad == 0, "%d allocation failures not reported as NOMEM", bad);
    CHECK_MSG(n > 5 && n < 10000, "succeeded after %ld allocations", n);
    free(b.d);
}

/* ---------------------------------------------------------------- --dump and --write-seeds */

static void dump_str(const char *p, uint64_t len) {
    putchar('"');
    for (uint64_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c > 0x20 && c < 0x7f && c != '\\' && c != '"')
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    putchar('"');
}

static void dump_value(l3c_gguf_vtype t, const l3c_gguf_kv *kv, uint64_t i) {
    const uint8_t *p;
    switch (t) {
    case L3C_GGUF_FLOAT32: {
        p = kv->data + i * 4;
        uint32_t u =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &u, 4);
        printf("%.9g", f);
        break;
    }
    case L3C_GGUF_FLOAT64:
        printf("%.17g", l3c_gguf_arr_f64(kv, i));
        break;
    case L3C_GGUF_BOOL:
        printf("%s", l3c_gguf_arr_i64(kv, i) ? "true" : "false");
        break;
    case L3C_GGUF_STRING:
        dump_str(kv->strs[i].ptr, kv->strs[i].len);
        break;
    case L3C_GGUF_UINT64: {
        p = kv->data + i * 8;
        uint64_t u = 0;
        for (int k = 7; k >= 0; k--)
            u = u << 8 | p[k];
        printf("%llu", (unsigned long long)u);
        break;
    }
    default:
        printf("%lld", (long long)l3c_gguf_arr_i64(kv, i));
        break;
    }
}

/* One line per header field, kv and tensor:
 *   gguf version V n_kv N n_tensors T alignment A data_offset D
 *   kv "key" TYPE value                 (scalars)
 *   kv "key" ARRAY ELEMTYPE n v0 v1 ... (arrays)
 *   tensor "name" type_id n_dims ne0,ne1,.. abs_offset nbytes */
static int dump(const char *path) {
    l3c_gguf *g;
    l3c_status st = l3c_gguf_open(path, &g);
    if (st) {
        fprintf(stderr, "%s: %s\n", l3c_status_name(st), l3c_last_error());
        return 1;
    }
    printf("gguf version %u n_kv %llu n_tensors %llu alignment %zu data_offset %zu\n", g->version,
           (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors, g->alignment,
           g->data_offset);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const l3c_gguf_kv *kv = &g->kv[i];
        printf("kv ");
        dump_str(kv->key.ptr, kv->key.len);
        printf(" %s", l3c_gguf_vtype_name(kv->type));
        if (kv->type == L3C_GGUF_ARRAY) {
            printf(" %s %llu", l3c_gguf_vtype_name(kv->arr_type), (unsigned long long)kv->n);
            for (uint64_t j = 0; j < kv->n; j++) {
                putchar(' ');
                dump_value(kv->arr_type, kv, j);
            }
        } else {
            putchar(' ');
            dump_value(kv->type, kv, 0);
        }
        putchar('\n');
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        printf("tensor ");
        dump_str(t->name, strlen(t->name));
        printf(" %u %u ", t->type, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            printf("%s%lld", d ? "," : "", (long long)t->ne[d]);
        printf(" %zu %zu\n", g->data_offset + (size_t)t->offset, t->nbytes);
    }
    l3c_gguf_close(g);
    return 0;
}

static int write_seeds(const char *dir) {
    spec variants[3];
    variants[0] = default_spec();
    variants[1] = default_spec();
    variants[1].version = 2;
    variants[1].alignment_type = -1;
    variants[2] = default_spec();
    variants[2].n_tensors = 1;
    for (int i = 0; i < 3; i++) {
        gb b = {0};
        marks m;
        build(&variants[i], &b, &m);
        char path[4096];
        snprintf(path, sizeof path, "%s/seed%d.gguf", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(b.d, 1, b.n, f) != b.n) {
            fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
            if (f) fclose(f);
            free(b.d);
            return 1;
        }
        fclose(f);
        free(b.d);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--dump") == 0) return dump(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) return write_seeds(argv[2]);
    test_valid();
    test_truncation();
    test_hostile();
    test_alloc_fail();
    return CHECK_DONE("test_gguf");
}
