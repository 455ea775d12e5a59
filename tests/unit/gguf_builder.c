/*
 * gguf_builder.c -- see gguf_builder.h. Test and fuzz harness code: allocation failure aborts.
 */
#include "gguf_builder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) abort(); /* harness only */
    return p;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

/* ---------------------------------------------------------------- bytes */

void ggb_put(ggb *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->d = xrealloc(b->d, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->d + b->n, p, n);
    b->n += n;
}
void ggb_u8(ggb *b, uint8_t v) { ggb_put(b, &v, 1); }
void ggb_u16(ggb *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    ggb_put(b, x, 2);
}
void ggb_u32(ggb *b, uint32_t v) {
    ggb_u16(b, (uint16_t)v);
    ggb_u16(b, (uint16_t)(v >> 16));
}
void ggb_u64(ggb *b, uint64_t v) {
    ggb_u32(b, (uint32_t)v);
    ggb_u32(b, (uint32_t)(v >> 32));
}
void ggb_f32(ggb *b, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    ggb_u32(b, u);
}
void ggb_f64(ggb *b, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    ggb_u64(b, u);
}
void ggb_str(ggb *b, const char *s) {
    ggb_u64(b, strlen(s));
    ggb_put(b, s, strlen(s));
}
void ggb_free(ggb *b) {
    free(b->d);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- kvs */

static ggb *kv_slot(ggf *f, const char *key) {
    for (size_t i = 0; i < f->n_kv; i++)
        if (strcmp(f->kv[i].key, key) == 0) {
            f->kv[i].val.n = 0;
            return &f->kv[i].val;
        }
    if (f->n_kv == f->cap_kv) {
        f->cap_kv = f->cap_kv ? f->cap_kv * 2 : 16;
        f->kv = xrealloc(f->kv, f->cap_kv * sizeof *f->kv);
    }
    ggf_kv *kv = &f->kv[f->n_kv++];
    memset(kv, 0, sizeof *kv);
    kv->key = xstrdup(key);
    return &kv->val;
}

void ggf_kv_u32(ggf *f, const char *key, uint32_t v) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_U32);
    ggb_u32(b, v);
}
void ggf_kv_i32(ggf *f, const char *key, int32_t v) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_I32);
    ggb_u32(b, (uint32_t)v);
}
void ggf_kv_i64(ggf *f, const char *key, int64_t v) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_I64);
    ggb_u64(b, (uint64_t)v);
}
void ggf_kv_f32(ggf *f, const char *key, float v) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_F32);
    ggb_f32(b, v);
}
void ggf_kv_bool(ggf *f, const char *key, int v) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_BOOL);
    ggb_u8(b, v ? 1 : 0);
}
void ggf_kv_str(ggf *f, const char *key, const char *v) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_STRING);
    ggb_str(b, v);
}
void ggf_kv_arr_str(ggf *f, const char *key, const char *const *v, size_t n) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_ARRAY);
    ggb_u32(b, GGB_STRING);
    ggb_u64(b, n);
    for (size_t i = 0; i < n; i++) ggb_str(b, v[i]);
}
void ggf_kv_arr_i32(ggf *f, const char *key, const int32_t *v, size_t n) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_ARRAY);
    ggb_u32(b, GGB_I32);
    ggb_u64(b, n);
    for (size_t i = 0; i < n; i++) ggb_u32(b, (uint32_t)v[i]);
}
void ggf_kv_arr_f32(ggf *f, const char *key, const float *v, size_t n) {
    ggb *b = kv_slot(f, key);
    ggb_u32(b, GGB_ARRAY);
    ggb_u32(b, GGB_F32);
    ggb_u64(b, n);
    for (size_t i = 0; i < n; i++) ggb_f32(b, v[i]);
}
void ggf_del_kv(ggf *f, const char *key) {
    for (size_t i = 0; i < f->n_kv; i++)
        if (strcmp(f->kv[i].key, key) == 0) {
            free(f->kv[i].key);
            ggb_free(&f->kv[i].val);
            memmove(&f->kv[i], &f->kv[i + 1], (f->n_kv - i - 1) * sizeof *f->kv);
            f->n_kv--;
            return;
        }
}

/* ---------------------------------------------------------------- tensors */

size_t ggf_type_bytes(uint32_t type, int64_t n) {
    if (n < 0) return 0;
    switch (type) {
    case 0: return (size_t)n * 4;
    case 1:
    case 30: return (size_t)n * 2;
    case 8: return (size_t)(n / 32) * 34;
    case 2: return (size_t)(n / 32) * 18;
    default: return 0;
    }
}

ggf_tensor *ggf_tensor_get(ggf *f, const char *name) {
    for (size_t i = 0; i < f->n_t; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

void ggf_tensor_add(ggf *f, const char *name, uint32_t n_dims, const int64_t ne[4], uint32_t type,
                    const void *data, size_t nbytes) {
    ggf_tensor *t = ggf_tensor_get(f, name);
    if (!t) {
        if (f->n_t == f->cap_t) {
            f->cap_t = f->cap_t ? f->cap_t * 2 : 32;
            f->t = xrealloc(f->t, f->cap_t * sizeof *f->t);
        }
        t = &f->t[f->n_t++];
        memset(t, 0, sizeof *t);
        t->name = xstrdup(name);
    }
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < (int)n_dims ? ne[d] : 1;
    t->type = type;
    free(t->data);
    t->data = xrealloc(NULL, nbytes);
    if (data) memcpy(t->data, data, nbytes);
    else memset(t->data, 0, nbytes);
    t->nbytes = nbytes;
}

void ggf_del_tensor(ggf *f, const char *name) {
    ggf_tensor *t = ggf_tensor_get(f, name);
    if (!t) return;
    free(t->name);
    free(t->data);
    size_t i = (size_t)(t - f->t);
    memmove(&f->t[i], &f->t[i + 1], (f->n_t - i - 1) * sizeof *f->t);
    f->n_t--;
}

/* ---------------------------------------------------------------- file */

size_t ggf_serialize(const ggf *f, ggb *out) {
    const size_t align = 32;
    out->n = 0;
    ggb_put(out, "GGUF", 4);
    ggb_u32(out, 3);
    ggb_u64(out, f->n_t);
    ggb_u64(out, f->n_kv);
    for (size_t i = 0; i < f->n_kv; i++) {
        ggb_str(out, f->kv[i].key);
        ggb_put(out, f->kv[i].val.d, f->kv[i].val.n);
    }
    size_t off = 0;
    for (size_t i = 0; i < f->n_t; i++) {
        const ggf_tensor *t = &f->t[i];
        ggb_str(out, t->name);
        ggb_u32(out, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) ggb_u64(out, (uint64_t)t->ne[d]);
        ggb_u32(out, t->type);
        ggb_u64(out, off);
        off += (t->nbytes + align - 1) / align * align;
    }
    static const uint8_t zero[32];
    while (out->n % align) ggb_u8(out, 0);
    size_t data_offset = out->n;
    for (size_t i = 0; i < f->n_t; i++) {
        ggb_put(out, f->t[i].data, f->t[i].nbytes);
        size_t pad = (align - f->t[i].nbytes % align) % align;
        if (i + 1 < f->n_t) ggb_put(out, zero, pad);
    }
    return data_offset;
}

int ggf_write_file(const ggf *f, const char *path) {
    ggb b = {0};
    ggf_serialize(f, &b);
    FILE *fp = fopen(path, "wb");
    int ok = fp && fwrite(b.d, 1, b.n, fp) == b.n;
    if (fp && fclose(fp) != 0) ok = 0;
    ggb_free(&b);
    return ok ? 0 : -1;
}

void ggf_free(ggf *f) {
    for (size_t i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        ggb_free(&f->kv[i].val);
    }
    for (size_t i = 0; i < f->n_t; i++) {
        free(f->t[i].name);
        free(f->t[i].data);
    }
    free(f->kv);
    free(f->t);
    memset(f, 0, sizeof *f);
}

/* ---------------------------------------------------------------- tiny llama */

static float rnd(uint64_t *s) { /* uniform [-1, 1) */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static uint16_t to_f16(float x) { /* round toward zero; |x| small and normal or zero here */
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    int32_t e = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    if (e <= 0) return sign;
    if (e >= 31) return (uint16_t)(sign | 0x7bff);
    return (uint16_t)(sign | (uint32_t)e << 10 | ((u >> 13) & 0x3ff));
}

/* n elements of random data in [-scale, scale) + offset, encoded as type; *nbytes set. */
static uint8_t *rand_data(uint32_t type, int64_t n, float scale, float offset, uint64_t *s,
                          size_t *nbytes) {
    *nbytes = ggf_type_bytes(type, n);
    uint8_t *d = xrealloc(NULL, *nbytes);
    if (type == 0 || type == 1 || type == 30) {
        for (int64_t i = 0; i < n; i++) {
            float v = offset + scale * rnd(s);
            if (type == 0) memcpy(d + 4 * i, &v, 4);
            else {
                uint32_t u;
                memcpy(&u, &v, 4);
                uint16_t h = type == 1 ? to_f16(v) : (uint16_t)(u >> 16);
                memcpy(d + 2 * i, &h, 2);
            }
        }
    } else if (type == 8) { /* Q8_0: d = max|x| / 127 */
        for (int64_t b = 0; b < n / 32; b++) {
            uint8_t *blk = d + 34 * b;
            float x[32], amax = 0;
            for (int i = 0; i < 32; i++) {
                x[i] = offset + scale * rnd(s);
                amax = x[i] > amax ? x[i] : -x[i] > amax ? -x[i] : amax;
            }
            float dl = amax / 127.0f;
            uint16_t h = to_f16(dl);
            memcpy(blk, &h, 2);
            for (int i = 0; i < 32; i++) blk[2 + i] = (uint8_t)(int8_t)(dl > 0 ? x[i] / dl : 0);
        }
    } else {
        memset(d, 0, *nbytes);
    }
    return d;
}

static void add_rand(ggf *f, const char *name, int64_t ne0, int64_t ne1, uint32_t type, float scale,
                     float offset, uint64_t *s) {
    size_t nb;
    int64_t ne[4] = {ne0, ne1, 1, 1};
    uint8_t *d = rand_data(type, ne0 * (ne1 ? ne1 : 1), scale, offset, s, &nb);
    ggf_tensor_add(f, name, ne1 ? 2 : 1, ne, type, d, nb);
    free(d);
}

ggb_llama_opts ggb_llama_default(void) {
    ggb_llama_opts o = {.n_vocab = 16, .n_embd = 8, .n_head = 2, .n_head_kv = 1, .n_ff = 16,
                        .n_layer = 1, .n_ctx = 32, .wtype = 0, .tokenizer = 1, .tied = 0,
                        .seed = 0x9e3779b97f4a7c15ull};
    return o;
}

void ggb_tiny_llama(ggf *f, const ggb_llama_opts *o) {
    uint64_t s = o->seed ? o->seed : 1;
    const int64_t E = o->n_embd, V = o->n_vocab, F = o->n_ff;
    const int64_t hd = o->n_head ? E / o->n_head : 0;
    ggf_kv_str(f, "general.architecture", "llama");
    ggf_kv_str(f, "general.name", "tiny hostile-test llama");
    ggf_kv_u32(f, "llama.context_length", (uint32_t)o->n_ctx);
    ggf_kv_u32(f, "llama.embedding_length", (uint32_t)E);
    ggf_kv_u32(f, "llama.block_count", (uint32_t)o->n_layer);
    ggf_kv_u32(f, "llama.feed_forward_length", (uint32_t)F);
    ggf_kv_u32(f, "llama.attention.head_count", (uint32_t)o->n_head);
    ggf_kv_u32(f, "llama.attention.head_count_kv", (uint32_t)o->n_head_kv);
    ggf_kv_f32(f, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    ggf_kv_f32(f, "llama.rope.freq_base", 10000.0f);
    ggf_kv_u32(f, "llama.rope.dimension_count", (uint32_t)hd);
    ggf_kv_u32(f, "llama.vocab_size", (uint32_t)V);
    if (o->tokenizer) {
        /* <unk> <s> </s>, the SentencePiece space, then one- and two-letter pieces */
        const char **tok = xrealloc(NULL, (size_t)V * sizeof *tok);
        char (*names)[16] = xrealloc(NULL, (size_t)V * sizeof *names);
        float *scores = xrealloc(NULL, (size_t)V * sizeof *scores);
        int32_t *types = xrealloc(NULL, (size_t)V * sizeof *types);
        for (int64_t i = 0; i < V; i++) {
            if (i < 3) snprintf(names[i], sizeof names[i], "%s", (const char *[]){"<unk>", "<s>", "</s>"}[i]);
            else if (i == 3) snprintf(names[i], sizeof names[i], "\xe2\x96\x81");
            else if (i < 4 + 26) snprintf(names[i], sizeof names[i], "%c", (int)('a' + i - 4));
            else snprintf(names[i], sizeof names[i], "%c%c", (int)('a' + (i - 30) / 26 % 26),
                          (int)('a' + (i - 30) % 26));
            tok[i] = names[i];
            scores[i] = i < 3 ? 0.0f : -(float)i;
            types[i] = i == 0 ? 2 : i < 3 ? 3 : 1;
        }
        ggf_kv_str(f, "tokenizer.ggml.model", "llama");
        ggf_kv_arr_str(f, "tokenizer.ggml.tokens", tok, (size_t)V);
        ggf_kv_arr_f32(f, "tokenizer.ggml.scores", scores, (size_t)V);
        ggf_kv_arr_i32(f, "tokenizer.ggml.token_type", types, (size_t)V);
        ggf_kv_u32(f, "tokenizer.ggml.bos_token_id", 1);
        ggf_kv_u32(f, "tokenizer.ggml.eos_token_id", 2);
        ggf_kv_u32(f, "tokenizer.ggml.unknown_token_id", 0);
        free(tok), free(names), free(scores), free(types);
    }
    const uint32_t wt = o->wtype;
    const int64_t q_dim = o->n_head * hd, kv_dim = o->n_head_kv * hd;
    add_rand(f, "token_embd.weight", E, V, wt, 1.0f, 0.0f, &s);
    char nm[64];
    for (int l = 0; l < o->n_layer; l++) {
#define N(x) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, x), nm)
        add_rand(f, N("attn_norm"), E, 0, 0, 0.2f, 1.0f, &s);
        add_rand(f, N("attn_q"), E, q_dim, wt, 0.5f, 0.0f, &s);
        add_rand(f, N("attn_k"), E, kv_dim, wt, 0.5f, 0.0f, &s);
        add_rand(f, N("attn_v"), E, kv_dim, wt, 0.3f, 0.0f, &s);
        add_rand(f, N("attn_output"), q_dim, E, wt, 0.3f, 0.0f, &s);
        add_rand(f, N("ffn_norm"), E, 0, 0, 0.2f, 1.0f, &s);
        add_rand(f, N("ffn_gate"), E, F, wt, 0.3f, 0.0f, &s);
        add_rand(f, N("ffn_up"), E, F, wt, 0.3f, 0.0f, &s);
        add_rand(f, N("ffn_down"), F, E, wt, 0.2f, 0.0f, &s);
#undef N
    }
    add_rand(f, "output_norm.weight", E, 0, 0, 0.2f, 1.0f, &s);
    if (!o->tied) add_rand(f, "output.weight", E, V, wt, 0.5f, 0.0f, &s);
}
