/*
 * test_safetensors.c -- the .safetensors reader on a valid file and on hostile ones: every
 * prefix of a valid file, huge / short header lengths, JSON bombs, bad dtypes and shapes,
 * offsets out of range, overlapping / gapped ranges, duplicate names, bad __metadata__, and
 * every allocation failing in turn. Each bad file must fail with L3C_ERR_FORMAT and a message
 * naming the file and the cause (and the tensor where there is one).
 *   test_safetensors --write-seeds DIR   writes a few files for the fuzzer's corpus
 */
#include "check.h"
#include "io/safetensors.h"
#include "kernels/types.h"
#include "llama3c.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* file = u64 len(header) | header | data_len bytes (value i & 0xff) */
static uint8_t *mk(const char *header, size_t data_len, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + data_len;
    uint8_t *b = malloc(*size ? *size : 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (uint8_t)i;
    return b;
}

static const char VALID[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"b.weight\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"c.idx\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[32,40]}}  ";

static void test_valid(void) {
    size_t size;
    uint8_t *b = mk(VALID, 40, &size);
    l3c_safetensors *s = NULL;
    CHECK_MSG(l3c_safetensors_open_memory(b, size, "ok.safetensors", &s) == L3C_OK, "%s", l3c_last_error());
    if (s) {
        CHECK(s->n_tensors == 3);
        const l3c_st_tensor *a = l3c_safetensors_find(s, "a.weight");
        const l3c_st_tensor *bw = l3c_safetensors_find(s, "b.weight");
        const l3c_st_tensor *c = l3c_safetensors_find(s, "c.idx");
        CHECK(a && a->type == L3C_TYPE_F32 && a->n_dims == 2 && a->shape[0] == 2 && a->shape[1] == 3 &&
              a->n_elements == 6 && a->nbytes == 24 && a->data == b + s->data_start);
        CHECK(bw && bw->type == L3C_TYPE_BF16 && bw->offset == 24 && bw->nbytes == 8 &&
              ((const uint8_t *)bw->data)[0] == 24);
        CHECK(c && c->type == -1 && c->n_dims == 0 && c->n_elements == 1 && strcmp(c->dtype, "I64") == 0);
        CHECK(!l3c_safetensors_find(s, "__metadata__") && !l3c_safetensors_find(s, "zzz"));
        CHECK(l3c_safetensors_meta(s, "format") && strcmp(l3c_safetensors_meta(s, "format"), "pt") == 0);
    }
    l3c_safetensors_close(s);

    /* a file on disk, through mmap */
    char path[] = "/tmp/l3c_st_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        FILE *f = fdopen(fd, "wb");
        fwrite(b, 1, size, f);
        fclose(f);
        s = NULL;
        CHECK_MSG(l3c_safetensors_open(path, &s) == L3C_OK, "%s", l3c_last_error());
        CHECK(s && s->n_tensors == 3 && s->owns_map);
        l3c_safetensors_close(s);
        remove(path);
    }
    CHECK(l3c_safetensors_open("/nonexistent/x.safetensors", &s) == L3C_ERR_IO && s == NULL);

    /* an empty header with no data is a valid (empty) file */
    free(b);
    b = mk("{}", 0, &size);
    CHECK(l3c_safetensors_open_memory(b, size, "empty", &s) == L3C_OK && s && s->n_tensors == 0);
    l3c_safetensors_close(s);
    free(b);
}

/* Every proper prefix of the valid file must fail cleanly. */
static void test_truncation(void) {
    size_t size;
    uint8_t *b = mk(VALID, 40, &size);
    int bad = 0;
    for (size_t n = 0; n < size; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, b, n);
        l3c_safetensors *s = NULL;
        if (l3c_safetensors_open_memory(cut, n, "cut", &s) != L3C_ERR_FORMAT || s) bad++;
        l3c_safetensors_close(s);
        free(cut);
    }
    CHECK_MSG(bad == 0, "%d prefixes did not fail with FORMAT", bad);
    free(b);
}

/* header -> expect FORMAT and a message containing each of want[] */
static void expect_bad(const char *header, size_t data_len, const char *w1, const char *w2) {
    size_t size;
    uint8_t *b = mk(header, data_len, &size);
    l3c_safetensors *s = NULL;
    l3c_status st = l3c_safetensors_open_memory(b, size, "bad.safetensors", &s);
    const char *e = l3c_last_error();
    CHECK_MSG(st == L3C_ERR_FORMAT && s == NULL, "status %d for %.80s", (int)st, header);
    CHECK_MSG(strstr(e, "bad.safetensors") && (!w1 || strstr(e, w1)) && (!w2 || strstr(e, w2)),
              "message '%s' lacks '%s' / '%s'", e, w1 ? w1 : "", w2 ? w2 : "");
    l3c_safetensors_close(s);
    free(b);
}

#define T(name, body) "{\"" name "\":{" body "}}"

static void test_hostile(void) {
    /* header lengths */
    uint8_t raw[16] = {0};
    l3c_safetensors *s = NULL;
    memset(raw, 0xff, 8); /* 2^64 - 1 */
    CHECK(l3c_safetensors_open_memory(raw, 16, "huge", &s) == L3C_ERR_FORMAT &&
          strstr(l3c_last_error(), "cap"));
    uint64_t big = L3C_ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++) raw[i] = (uint8_t)(big >> (8 * i));
    CHECK(l3c_safetensors_open_memory(raw, 16, "huge", &s) == L3C_ERR_FORMAT);
    memset(raw, 0, 8);
    raw[0] = 9; /* 9 > 16 - 8 */
    CHECK(l3c_safetensors_open_memory(raw, 16, "short", &s) == L3C_ERR_FORMAT &&
          strstr(l3c_last_error(), "past the end"));
    CHECK(l3c_safetensors_open_memory(raw, 5, "tiny", &s) == L3C_ERR_FORMAT);
    expect_bad("[1,2]", 0, "start with '{'", NULL);
    expect_bad("{\"a\":", 0, "JSON", NULL);
    expect_bad("{}xx", 0, "JSON", NULL);

    /* JSON bomb: deep nesting is refused by jansson's depth limit, not by the stack */
    {
        size_t depth = 200000;
        char *h = malloc(2 * depth + 16);
        size_t k = 0;
        h[k++] = '{';
        memcpy(h + k, "\"a\":", 4), k += 4;
        for (size_t i = 0; i < depth; i++) h[k++] = '[';
        for (size_t i = 0; i < depth; i++) h[k++] = ']';
        h[k++] = '}';
        h[k] = 0;
        expect_bad(h, 0, "JSON", NULL);
        free(h);
    }

    /* duplicate names (JSON_REJECT_DUPLICATES) */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate", NULL);
    /* dtypes */
    expect_bad(T("w", "\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]"), 4, "'w'", "unknown dtype");
    expect_bad(T("w", "\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]"), 4, "'w'", "dtype");
    expect_bad(T("w", "\"shape\":[1],\"data_offsets\":[0,4]"), 4, "'w'", "dtype");
    expect_bad("{\"w\":3}", 0, "'w'", "not an object");
    /* shapes */
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]"), 4, "'w'", "shape[0]");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]"), 4, "'w'", "shape[0]");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]"), 4, "'w'", "shape");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]"), 4,
               "'w'", "dimensions");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                 "\"data_offsets\":[0,4]"), 4, "'w'", "overflows");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]"), 4,
               "'w'", "overflows");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]"), 4, "'w'", "span");
    /* offsets */
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]"), 4, "'w'", "out of range");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]"), 4, "'w'", "out of range");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]"), 4, "'w'", "out of range");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]"), 4, "'w'", "data_offsets");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]"), 4,
               "JSON", NULL);
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1]"), 4, "'w'", "data_offsets");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlaps", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "overlaps", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "'b'", "gap");
    expect_bad(T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]"), 6, "trailing", NULL);
    /* metadata */
    expect_bad("{\"__metadata__\":[1]}", 0, "__metadata__", NULL);
    expect_bad("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__", "'k'");
    expect_bad("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "empty", NULL);
}

static void test_alloc_fail(void) {
    size_t size;
    uint8_t *b = mk(VALID, 40, &size);
    int ok_at = -1;
    for (long n = 0; n < 64; n++) {
        l3c_safetensors *s = NULL;
        l3c_set_alloc_fail_after(n);
        l3c_status st = l3c_safetensors_open_memory(b, size, "alloc", &s);
        l3c_set_alloc_fail_after(-1);
        CHECK(st == L3C_OK || (st == L3C_ERR_NOMEM && s == NULL));
        l3c_safetensors_close(s);
        if (st == L3C_OK) {
            ok_at = (int)n;
            break;
        }
    }
    CHECK(ok_at > 0);
    free(b);
}

static int write_seeds(const char *dir) {
    const char *headers[] = {VALID, "{}", T("w", "\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]")};
    const size_t data[] = {40, 0, 8};
    for (int i = 0; i < 3; i++) {
        size_t size;
        uint8_t *b = mk(headers[i], data[i], &size);
        char path[4096];
        snprintf(path, sizeof path, "%s/seed%d.safetensors", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f) {
            free(b);
            return 1;
        }
        fwrite(b, 1, size, f);
        fclose(f);
        free(b);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) return write_seeds(argv[2]);
    test_valid();
    test_truncation();
    test_hostile();
    test_alloc_fail();
    return CHECK_DONE("test_safetensors");
}
