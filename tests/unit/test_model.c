/*
 * test_model.c -- model load, context, KV cache and forward pass on tiny random llama GGUFs
 * written at run time into /tmp. Checks:
 *  - logits against an independent naive double-precision forward pass written here
 *    (F32 KV cache; tolerance 1e-4 relative to the largest logit), with and without rope_freqs,
 *    tied and untied output;
 *  - batch decode of 8 tokens == token-by-token decode (1e-4 relative), F16 and F32 caches;
 *  - two sequences in one batch == each alone; kv truncate + re-decode reproduces logits;
 *  - bad batches are rejected with the right status and leave the context unchanged;
 *  - load errors (missing tensor, wrong shape, unsupported type, wrong architecture) name the
 *    tensor / value; every allocation failure during load + context creation fails cleanly;
 *  - tracing reports every op, softmaxed attention rows sum to 1, and does not change logits;
 *  - the CPU backend's rmsnorm / swiglu / add ops (backend.h) out of place (as training runs
 *    them) equal in place (as decode runs them), bitwise, and the rstd they write;
 *  - micro-batches (a backend whose stage_rows cuts a batch, as a pipeline split does): two
 *    interleaved sequences in micro-batches of 3 == the whole batch, bitwise, with the stage op
 *    called before / after each consecutive range, in order.
 */
#include "check.h"

#include "kernels/ops.h"
#include "llama3c.h"
#include "model/backend.h"
#include "model/model.h" /* l3c_context.backend: the micro-batch test swaps it */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void l3c_set_alloc_fail_after(long n); /* util.h test hook (library-internal) */

/* ---------------------------------------------------------------- tiny model */

enum { V = 40, E = 32, H = 4, HK = 2, HD = 8, FF = 48, NL = 2, CTX = 64 };
#define THETA 10000.0
#define EPS 1e-5

typedef struct tensor {
    char name[64];
    int n_dims;
    int64_t ne[2];
    uint32_t type;  /* 0 = F32 (data below); anything else: raw zero bytes of that type */
    float *data;    /* [ne0 * ne1] row-major, row r = data + r * ne0 */
} tensor;

typedef struct build_opts {
    const char *arch;         /* default "llama" */
    int tied;                 /* omit output.weight */
    int rope_freqs;           /* add rope_freqs.weight */
    const char *omit;         /* drop this tensor */
    const char *bad_shape;    /* give this tensor ne1 + 1 */
    const char *bad_type;     /* store this tensor with type `bad_type_id` */
    uint32_t bad_type_id;
} build_opts;

typedef struct model_data {
    tensor t[64];
    int n;
} model_data;

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void add_tensor(model_data *md, const char *name, int64_t ne0, int64_t ne1, float scale,
                       float offset) {
    tensor *t = &md->t[md->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->type = 0;
    t->data = malloc((size_t)(t->ne[0] * t->ne[1]) * sizeof(float));
    for (int64_t i = 0; i < t->ne[0] * t->ne[1]; i++) t->data[i] = offset + scale * frand();
}

static void make_weights(model_data *md, int tied, int rope_freqs) {
    g_rng = 0x9e3779b97f4a7c15ull;
    md->n = 0;
    char nm[64];
    add_tensor(md, "token_embd.weight", E, V, 1.0f, 0.0f);
    for (int l = 0; l < NL; l++) {
#define N(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), nm)
        add_tensor(md, N("attn_norm"), E, 0, 0.2f, 1.0f);
        add_tensor(md, N("attn_q"), E, H * HD, 0.5f, 0.0f);
        add_tensor(md, N("attn_k"), E, HK * HD, 0.5f, 0.0f);
        add_tensor(md, N("attn_v"), E, HK * HD, 0.3f, 0.0f);
        add_tensor(md, N("attn_output"), H * HD, E, 0.3f, 0.0f);
        add_tensor(md, N("ffn_norm"), E, 0, 0.2f, 1.0f);
        add_tensor(md, N("ffn_gate"), E, FF, 0.3f, 0.0f);
        add_tensor(md, N("ffn_up"), E, FF, 0.3f, 0.0f);
        add_tensor(md, N("ffn_down"), FF, E, 0.2f, 0.0f);
#undef N
    }
    add_tensor(md, "output_norm.weight", E, 0, 0.2f, 1.0f);
    if (!tied) add_tensor(md, "output.weight", E, V, 0.5f, 0.0f);
    if (rope_freqs) {
        add_tensor(md, "rope_freqs.weight", HD / 2, 0, 0.0f, 1.0f);
        float *f = md->t[md->n - 1].data;
        for (int i = 0; i < HD / 2; i++) f[i] = (float)(1 << i); /* 1, 2, 4, 8 */
    }
}

static void free_weights(model_data *md) {
    for (int i = 0; i < md->n; i++) free(md->t[i].data);
    md->n = 0;
}

static const float *W(const model_data *md, const char *name) {
    for (int i = 0; i < md->n; i++)
        if (!strcmp(md->t[i].name, name)) return md->t[i].data;
    return NULL;
}

/* ---------------------------------------------------------------- GGUF writer */

typedef struct wbuf {
    unsigned char *p;
    size_t n, cap;
} wbuf;

static void put(wbuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u32(wbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(wbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(wbuf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void kv_u32(wbuf *b, const char *k, uint32_t v) { put_str(b, k); put_u32(b, 4); put_u32(b, v); }
static void kv_f32(wbuf *b, const char *k, float v) { put_str(b, k); put_u32(b, 6); put(b, &v, 4); }
static void kv_str(wbuf *b, const char *k, const char *v) { put_str(b, k); put_u32(b, 8); put_str(b, v); }

/* bytes of a tensor of `type` (only the ids this test uses) */
static size_t tensor_bytes(uint32_t type, int64_t ne0, int64_t ne1) {
    size_t n = (size_t)(ne0 * ne1);
    if (type == 0) return n * 4;
    if (type == 9) return n / 32 * 36;  /* Q8_1: fp16 d, fp16 s, 32 x int8 */
    return n;                           /* unknown ids: the reader rejects them before sizing */
}

static int write_model(const char *path, const build_opts *o, model_data *md) {
    make_weights(md, o->tied, o->rope_freqs);
    wbuf b = {0};
    int n_t = 0;
    for (int i = 0; i < md->n; i++) n_t += !(o->omit && !strcmp(o->omit, md->t[i].name));
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, (uint64_t)n_t);
    put_u64(&b, 11);
    kv_str(&b, "general.architecture", o->arch ? o->arch : "llama");
    kv_str(&b, "general.name", "tiny test llama");
    kv_u32(&b, "llama.context_length", CTX);
    kv_u32(&b, "llama.embedding_length", E);
    kv_u32(&b, "llama.block_count", NL);
    kv_u32(&b, "llama.feed_forward_length", FF);
    kv_u32(&b, "llama.attention.head_count", H);
    kv_u32(&b, "llama.attention.head_count_kv", HK);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", (float)EPS);
    kv_f32(&b, "llama.rope.freq_base", (float)THETA);
    kv_u32(&b, "llama.vocab_size", V);
    /* tensor infos */
    size_t off = 0;
    size_t offs[64];
    for (int i = 0; i < md->n; i++) {
        tensor *t = &md->t[i];
        if (o->omit && !strcmp(o->omit, t->name)) continue;
        int64_t ne1 = t->ne[1];
        if (o->bad_shape && !strcmp(o->bad_shape, t->name)) ne1 += 1;
        uint32_t type = (o->bad_type && !strcmp(o->bad_type, t->name)) ? o->bad_type_id : 0;
        put_str(&b, t->name);
        put_u32(&b, (uint32_t)(t->n_dims == 1 && ne1 == 1 ? 1 : 2));
        put_u64(&b, (uint64_t)t->ne[0]);
        if (!(t->n_dims == 1 && ne1 == 1)) put_u64(&b, (uint64_t)ne1);
        put_u32(&b, type);
        put_u64(&b, off);
        offs[i] = off;
        off += (tensor_bytes(type, t->ne[0], ne1) + 31) / 32 * 32;
    }
    while (b.n % 32) put(&b, "", 1);
    size_t base = b.n;
    unsigned char *zero = calloc(1, off + 32);
    put(&b, zero, off);
    free(zero);
    for (int i = 0; i < md->n; i++) {
        tensor *t = &md->t[i];
        if (o->omit && !strcmp(o->omit, t->name)) continue;
        uint32_t type = (o->bad_type && !strcmp(o->bad_type, t->name)) ? o->bad_type_id : 0;
        if (type != 0) continue;
        int64_t ne1 = t->ne[1] + (o->bad_shape && !strcmp(o->bad_shape, t->name) ? 1 : 0);
        memcpy(b.p + base + offs[i], t->data, (size_t)(t->ne[0] * (ne1 < t->ne[1] ? ne1 : t->ne[1])) * 4);
    }
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(b.p, 1, b.n, f) == b.n;
    if (f) fclose(f);
    free(b.p);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------- independent reference */

/* Naive causal llama forward over ids[0..n) in double; logits [n x V]. */
static void ref_forward(const model_data *md, const int32_t *ids, int n, int rope_freqs,
                        double *logits) {
    double (*x)[E] = calloc((size_t)n, sizeof *x), (*xb)[E] = calloc((size_t)n, sizeof *xb);
    double (*q)[H * HD] = calloc((size_t)n, sizeof *q), (*k)[HK * HD] = calloc((size_t)n, sizeof *k);
    double (*v)[HK * HD] = calloc((size_t)n, sizeof *v), (*ao)[H * HD] = calloc((size_t)n, sizeof *ao);
    double att[CTX], hbuf[FF];
    const float *emb = W(md, "token_embd.weight");
    const float *ff = rope_freqs ? W(md, "rope_freqs.weight") : NULL;
    char nm[64];
    for (int t = 0; t < n; t++)
        for (int i = 0; i < E; i++) x[t][i] = emb[ids[t] * E + i];
#define NORM(src, g, dst)                                                        \
    for (int t = 0; t < n; t++) {                                                \
        double ss = 0;                                                           \
        for (int i = 0; i < E; i++) ss += src[t][i] * src[t][i];                 \
        double r = 1.0 / sqrt(ss / E + EPS);                                     \
        for (int i = 0; i < E; i++) dst[t][i] = src[t][i] * r * (g)[i];          \
    }
#define MATVEC(w, in, n_in, out, n_out)                                          \
    for (int o_ = 0; o_ < (n_out); o_++) {                                       \
        double s_ = 0;                                                           \
        for (int i_ = 0; i_ < (n_in); i_++) s_ += (double)(w)[o_ * (n_in) + i_] * (in)[i_]; \
        (out)[o_] = s_;                                                          \
    }
    for (int l = 0; l < NL; l++) {
#define WL(s) (snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, s), W(md, nm))
        NORM(x, WL("attn_norm"), xb);
        for (int t = 0; t < n; t++) {
            MATVEC(WL("attn_q"), xb[t], E, q[t], H * HD);
            MATVEC(WL("attn_k"), xb[t], E, k[t], HK * HD);
            MATVEC(WL("attn_v"), xb[t], E, v[t], HK * HD);
            for (int hh = 0; hh < H + HK; hh++) {
                double *vec = hh < H ? q[t] + hh * HD : k[t] + (hh - H) * HD;
                for (int i = 0; i < HD / 2; i++) {
                    double a = t * pow(THETA, -2.0 * i / HD) / (ff ? ff[i] : 1.0);
                    double x0 = vec[2 * i], x1 = vec[2 * i + 1];
                    vec[2 * i] = x0 * cos(a) - x1 * sin(a);
                    vec[2 * i + 1] = x0 * sin(a) + x1 * cos(a);
                }
            }
        }
        for (int t = 0; t < n; t++)
            for (int h = 0; h < H; h++) {
                int kh = h / (H / HK);
                double mx = -1e300, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double s = 0;
                    for (int i = 0; i < HD; i++) s += q[t][h * HD + i] * k[p][kh * HD + i];
                    att[p] = s / sqrt((double)HD);
                    if (att[p] > mx) mx = att[p];
                }
                for (int p = 0; p <= t; p++) sum += (att[p] = exp(att[p] - mx));
                for (int i = 0; i < HD; i++) {
                    double s = 0;
                    for (int p = 0; p <= t; p++) s += att[p] / sum * v[p][kh * HD + i];
                    ao[t][h * HD + i] = s;
                }
            }
        for (int t = 0; t < n; t++) {
            double o[E];
            MATVEC(WL("attn_output"), ao[t], H * HD, o, E);
            for (int i = 0; i < E; i++) x[t][i] += o[i];
        }
        NORM(x, WL("ffn_norm"), xb);
        for (int t = 0; t < n; t++) {
            double g[FF], o[E];
            MATVEC(WL("ffn_gate"), xb[t], E, g, FF);
            MATVEC(WL("ffn_up"), xb[t], E, hbuf, FF);
            for (int i = 0; i < FF; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * hbuf[i];
            MATVEC(WL("ffn_down"), g, FF, o, E);
            for (int i = 0; i < E; i++) x[t][i] += o[i];
        }
#undef WL
    }
    NORM(x, W(md, "output_norm.weight"), xb);
    const float *out = W(md, "output.weight");
    if (!out) out = emb;
    for (int t = 0; t < n; t++) MATVEC(out, xb[t], E, logits + (size_t)t * V, V);
    free(x); free(xb); free(q); free(k); free(v); free(ao);
}

/* ---------------------------------------------------------------- helpers */

static char g_path[256];

static l3c_model *load_or_null(const char *path) {
    l3c_model *m = NULL;
    l3c_model_params mp = l3c_model_default_params();
    mp.n_threads = 2;
    if (l3c_model_load(path, &mp, &m) != L3C_OK) {
        fprintf(stderr, "load failed: %s\n", l3c_last_error());
        return NULL;
    }
    return m;
}

static l3c_context *make_ctx(const l3c_model *m, int n_ctx, int n_seq, int n_batch, int kv) {
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_seq = n_seq;
    cp.n_batch = n_batch;
    cp.kv_type = kv;
    cp.n_threads = 2;
    l3c_context *c = NULL;
    if (l3c_context_create(m, &cp, &c) != L3C_OK) fprintf(stderr, "ctx: %s\n", l3c_last_error());
    return c;
}

/* Decodes ids (one sequence seq, from its current length) in chunks of `chunk`; all logits to out. */
static int decode_seq(l3c_context *c, const int32_t *ids, int n, int seq, int chunk, float *out) {
    int32_t pos[CTX], sq[CTX];
    int8_t want[CTX];
    int start = l3c_kv_seq_len(c, seq);
    for (int i = 0; i < n; i++) {
        pos[i] = start + i;
        sq[i] = seq;
        want[i] = 1;
    }
    for (int s = 0; s < n; s += chunk) {
        int m = n - s < chunk ? n - s : chunk;
        l3c_batch b = {m, ids + s, pos + s, sq + s, want + s};
        if (l3c_decode(c, &b) != L3C_OK) {
            fprintf(stderr, "decode: %s\n", l3c_last_error());
            return -1;
        }
        for (int i = 0; i < m; i++) memcpy(out + (size_t)(s + i) * V, l3c_get_logits(c, i), V * sizeof(float));
    }
    return 0;
}

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}
static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static const int32_t IDS[12] = {3, 17, 1, 39, 22, 8, 8, 30, 0, 12, 25, 5};

/* ---------------------------------------------------------------- tests */

static void test_reference(int tied, int rope_freqs) {
    build_opts o = {.tied = tied, .rope_freqs = rope_freqs};
    model_data md;
    CHECK(write_model(g_path, &o, &md) == 0);
    l3c_model *m = load_or_null(g_path);
    CHECK(m != NULL);
    if (!m) { free_weights(&md); return; }
    l3c_model_info info;
    l3c_model_get_info(m, &info);
    CHECK(info.n_vocab == V && info.n_embd == E && info.n_layer == NL && info.n_head == H &&
          info.n_head_kv == HK && info.head_dim == HD && info.n_ff == FF && info.n_rot == HD);
    CHECK(info.tied_output == tied && info.has_rope_freqs == rope_freqs);
    CHECK(info.n_ctx_train == CTX && !strcmp(info.name, "tiny test llama"));
    CHECK(l3c_model_meta_str(m, "general.architecture") && !strcmp(l3c_model_meta_str(m, "general.architecture"), "llama"));
    CHECK(l3c_model_meta_str(m, "nope") == NULL);
    CHECK(l3c_model_n_tensors(m) == md.n);
    l3c_tensor_desc d;
    CHECK(l3c_model_tensor_desc(m, 0, &d) == L3C_OK && !strcmp(d.name, "token_embd.weight") &&
          d.ne[0] == E && d.ne[1] == V && !strcmp(d.type_name, "F32"));
    CHECK(l3c_model_tensor_desc(m, md.n, &d) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_model_kv_bytes_per_pos(m, L3C_KV_F16) == 2 * NL * HK * HD * 2);
    CHECK(l3c_model_kv_bytes_per_pos(m, L3C_KV_F32) == 2 * NL * HK * HD * 4);

    const int n = 12;
    double ref[12 * V];
    ref_forward(&md, IDS, n, rope_freqs, ref);
    float refl[12 * V], got[12 * V];
    for (int i = 0; i < n * V; i++) refl[i] = (float)ref[i];
    double scale = fmax(1.0, max_abs(refl, (size_t)n * V));

    l3c_context *c = make_ctx(m, 32, 1, 512, L3C_KV_F32);
    CHECK(c && decode_seq(c, IDS, n, 0, 512, got) == 0);
    double dmax = max_diff(got, refl, (size_t)n * V);
    CHECK_MSG(dmax <= 1e-4 * scale, "tied %d rope_freqs %d: max |llama3c - ref| = %g (scale %g)",
              tied, rope_freqs, dmax, scale);
    fprintf(stderr, "reference (tied %d, rope_freqs %d, F32 KV): max abs diff %.3g, max |logit| %.3g\n",
            tied, rope_freqs, dmax, scale);
    l3c_context_free(c);

    /* F16 cache: same logits within the rounding of K/V to half precision */
    c = make_ctx(m, 32, 1, 512, L3C_KV_F16);
    CHECK(c && decode_seq(c, IDS, n, 0, 512, got) == 0);
    dmax = max_diff(got, refl, (size_t)n * V);
    CHECK_MSG(dmax <= 5e-3 * scale, "F16 KV: max diff %g", dmax);
    l3c_context_free(c);

    l3c_model_free(m);
    free_weights(&md);
}

static void test_batch_vs_single(l3c_model *m, int kv) {
    float a[12 * V], b[12 * V];
    l3c_context *c1 = make_ctx(m, 16, 1, 512, kv), *c2 = make_ctx(m, 16, 1, 1, kv);
    CHECK(c1 && c2);
    if (!c1 || !c2) goto done;
    CHECK(l3c_context_n_ctx(c1) == 16 && l3c_context_n_seq(c1) == 1);
    CHECK(decode_seq(c1, IDS, 8, 0, 8, a) == 0);
    CHECK(decode_seq(c2, IDS, 8, 0, 1, b) == 0);
    double scale = fmax(1.0, max_abs(b, 8 * V)), dmax = max_diff(a, b, 8 * V);
    CHECK_MSG(dmax <= 1e-4 * scale, "kv %d: batch of 8 vs token by token: max diff %g", kv, dmax);
    CHECK(l3c_kv_seq_len(c1, 0) == 8 && l3c_kv_seq_len(c2, 0) == 8);
    /* logits of tokens not asked for are NULL */
    int32_t tok = 4, pos = 8;
    int8_t no = 0;
    l3c_batch bb = {1, &tok, &pos, NULL, &no};
    CHECK(l3c_decode(c1, &bb) == L3C_OK && l3c_get_logits(c1, 0) == NULL && l3c_get_logits(c1, 1) == NULL);
done:
    l3c_context_free(c1);
    l3c_context_free(c2);
}

/* Logits are bitwise the same on 1 and 3 threads (ops split whole tiles, attention whole
 * heads x token blocks; the thread pool hands chunks out dynamically): an 8-token batch, then
 * single tokens. */
static void test_thread_invariance(l3c_model *m) {
    float a[8 * V], b[8 * V];
    l3c_context *c[2] = {NULL, NULL};
    const int nth[2] = {1, 3};
    for (int i = 0; i < 2; i++) {
        l3c_context_params cp = l3c_context_default_params();
        cp.n_ctx = 16;
        cp.n_threads = nth[i];
        CHECK(l3c_context_create(m, &cp, &c[i]) == L3C_OK);
    }
    if (!c[0] || !c[1]) goto done;
    CHECK(decode_seq(c[0], IDS, 8, 0, 8, a) == 0 && decode_seq(c[1], IDS, 8, 0, 8, b) == 0);
    CHECK_MSG(memcmp(a, b, sizeof a) == 0, "batch logits differ between 1 and 3 threads");
    CHECK(decode_seq(c[0], IDS, 4, 0, 1, a) == 0 && decode_seq(c[1], IDS, 4, 0, 1, b) == 0);
    CHECK_MSG(memcmp(a, b, sizeof(float) * 4 * V) == 0, "decode logits differ between 1 and 3 threads");
done:
    l3c_context_free(c[0]);
    l3c_context_free(c[1]);
}

static void test_two_sequences(l3c_model *m) {
    /* seq 0: IDS[0..5), seq 1: IDS[5..8), interleaved in one batch */
    int32_t tok[8] = {IDS[0], IDS[5], IDS[1], IDS[6], IDS[2], IDS[3], IDS[7], IDS[4]};
    int32_t sq[8] = {0, 1, 0, 1, 0, 0, 1, 0};
    int32_t pos[8] = {0, 0, 1, 1, 2, 3, 2, 4};
    int8_t want[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    float a0[5 * V], a1[3 * V];
    l3c_context *c = make_ctx(m, 16, 2, 512, L3C_KV_F16), *s = make_ctx(m, 16, 1, 512, L3C_KV_F16);
    CHECK(c && s);
    if (!c || !s) goto done;
    l3c_batch b = {8, tok, pos, sq, want};
    CHECK(l3c_decode(c, &b) == L3C_OK);
    CHECK(l3c_kv_seq_len(c, 0) == 5 && l3c_kv_seq_len(c, 1) == 3);
    CHECK(decode_seq(s, IDS, 5, 0, 512, a0) == 0);
    CHECK(l3c_kv_seq_truncate(s, 0, 0) == L3C_OK && l3c_kv_seq_len(s, 0) == 0);
    CHECK(decode_seq(s, IDS + 5, 3, 0, 512, a1) == 0);
    double scale = fmax(1.0, max_abs(a0, 5 * V)), dmax = 0;
    int r0 = 0, r1 = 0;
    for (int i = 0; i < 8; i++) {
        const float *lg = l3c_get_logits(c, i), *want_l = sq[i] ? a1 + (r1++) * V : a0 + (r0++) * V;
        dmax = fmax(dmax, max_diff(lg, want_l, V));
    }
    CHECK_MSG(dmax <= 1e-4 * scale, "two sequences in one batch vs alone: max diff %g", dmax);
    /* continue seq 1 alone in the shared context: must match the single-sequence run */
    float cont[2 * V], single[5 * V];
    CHECK(decode_seq(c, IDS + 8, 2, 1, 512, cont) == 0);
    int32_t ids1[5] = {IDS[5], IDS[6], IDS[7], IDS[8], IDS[9]};
    CHECK(l3c_kv_seq_truncate(s, 0, 0) == L3C_OK);
    CHECK(decode_seq(s, ids1, 5, 0, 2, single) == 0);
    dmax = max_diff(cont, single + 3 * V, 2 * V);
    CHECK_MSG(dmax <= 1e-4 * scale, "seq 1 continued: max diff %g", dmax);
done:
    l3c_context_free(c);
    l3c_context_free(s);
}

static void test_truncate(l3c_model *m) {
    float a[8 * V], b[8 * V], fresh[8 * V];
    int32_t alt[8];
    memcpy(alt, IDS, sizeof alt);
    alt[4] = 11, alt[5] = 2, alt[6] = 33, alt[7] = 7;
    l3c_context *c = make_ctx(m, 16, 1, 512, L3C_KV_F16), *f = make_ctx(m, 16, 1, 512, L3C_KV_F16);
    CHECK(c && f);
    if (!c || !f) goto done;
    CHECK(decode_seq(c, IDS, 8, 0, 512, a) == 0);
    CHECK(l3c_kv_seq_truncate(c, 0, 4) == L3C_OK && l3c_kv_seq_len(c, 0) == 4);
    CHECK(l3c_kv_seq_truncate(c, 0, 100) == L3C_OK && l3c_kv_seq_len(c, 0) == 4);
    CHECK(decode_seq(c, alt + 4, 4, 0, 512, b) == 0);
    CHECK(decode_seq(f, alt, 8, 0, 3, fresh) == 0);
    double scale = fmax(1.0, max_abs(fresh, 8 * V)), dmax = max_diff(b, fresh + 4 * V, 4 * V);
    CHECK_MSG(dmax <= 1e-4 * scale, "truncate to 4 + re-decode vs fresh: max diff %g", dmax);
    CHECK(l3c_kv_seq_truncate(c, 1, 0) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_kv_seq_truncate(c, 0, -1) == L3C_ERR_INVALID_ARG);
done:
    l3c_context_free(c);
    l3c_context_free(f);
}

/* l3c_kv_seq_copy and l3c_kv_seq_state_get/_set (a server's prompt cache): a sequence given the
 * first 5 positions of another (copied, or saved and restored) and continued with 3 tokens gives
 * exactly (same kernels, same cache rows) the logits of a fresh evaluation of those 8 tokens. */
static void test_kv_share(l3c_model *m, int kv_type) {
    float full[8 * V], fresh[8 * V], cont[3 * V];
    int32_t alt[8];
    memcpy(alt, IDS, sizeof alt);
    alt[5] = 11, alt[6] = 2, alt[7] = 33;
    void *state = NULL;
    l3c_context *c = make_ctx(m, 16, 3, 512, kv_type), *f = make_ctx(m, 16, 1, 512, kv_type);
    CHECK(c && f);
    if (!c || !f) goto done;
    CHECK(decode_seq(c, IDS, 8, 0, 512, full) == 0);
    CHECK(decode_seq(f, alt, 8, 0, 512, fresh) == 0);
    CHECK(decode_seq(c, IDS, 3, 1, 512, cont) == 0); /* dst's old content is dropped */
    CHECK(l3c_kv_seq_copy(c, 0, 1, 5) == L3C_OK && l3c_kv_seq_len(c, 1) == 5 &&
          l3c_kv_seq_len(c, 0) == 8);
    CHECK(decode_seq(c, alt + 5, 3, 1, 512, cont) == 0);
    CHECK_MSG(max_diff(cont, fresh + 5 * V, 3 * V) == 0.0, "copied prefix: max diff %g",
              max_diff(cont, fresh + 5 * V, 3 * V));
    /* save 5 positions of seq 0, restore them into seq 2 */
    size_t sz = l3c_kv_seq_state_size(c, 5);
    CHECK(sz > 0 && sz == 5 * l3c_kv_seq_state_size(c, 1));
    state = malloc(sz);
    CHECK(state != NULL);
    if (!state) goto done;
    CHECK(l3c_kv_seq_state_get(c, 0, 5, state, sz) == L3C_OK);
    CHECK(l3c_kv_seq_truncate(c, 0, 0) == L3C_OK); /* the source is gone */
    CHECK(l3c_kv_seq_state_set(c, 2, 5, state, sz) == L3C_OK && l3c_kv_seq_len(c, 2) == 5);
    CHECK(decode_seq(c, alt + 5, 3, 2, 512, cont) == 0);
    CHECK_MSG(max_diff(cont, fresh + 5 * V, 3 * V) == 0.0, "restored prefix: max diff %g",
              max_diff(cont, fresh + 5 * V, 3 * V));
    /* refusals name the argument */
    CHECK(l3c_kv_seq_copy(c, 0, 1, 1) == L3C_ERR_INVALID_ARG); /* seq 0 is empty now */
    CHECK(strstr(l3c_last_error(), "n 1") != NULL);
    CHECK(l3c_kv_seq_copy(c, 3, 1, 0) == L3C_ERR_INVALID_ARG);
    CHECK(strstr(l3c_last_error(), "seq_id 3") != NULL);
    CHECK(l3c_kv_seq_state_get(c, 2, 5, state, sz - 1) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_kv_seq_state_get(c, 2, 9, state, sz) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_kv_seq_state_set(c, 0, 17, state, sz) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_kv_seq_state_set(c, 0, 4, state, sz) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_kv_seq_state_size(c, 17) == 0 && l3c_kv_seq_state_size(NULL, 1) == 0);
    CHECK(l3c_kv_seq_len(c, 0) == 0); /* a refused call changes nothing */
    /* copy onto itself truncates */
    CHECK(l3c_kv_seq_copy(c, 2, 2, 6) == L3C_OK && l3c_kv_seq_len(c, 2) == 6);
    CHECK(l3c_kv_seq_copy(c, 2, 2, 2) == L3C_OK && l3c_kv_seq_len(c, 2) == 2);
done:
    free(state);
    l3c_context_free(c);
    l3c_context_free(f);
}

static void test_bad_batches(l3c_model *m) {
    l3c_context *c = make_ctx(m, 16, 2, 8, L3C_KV_F16);
    CHECK(c != NULL);
    if (!c) return;
    float tmp[16 * V];
    CHECK(decode_seq(c, IDS, 3, 0, 8, tmp) == 0);
    int32_t tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, pos[9], sq[9] = {0};
    for (int i = 0; i < 9; i++) pos[i] = 3 + i;
    l3c_batch b = {1, tok, pos, sq, NULL};

    pos[0] = 2; /* not the sequence's length */
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    CHECK(strstr(l3c_last_error(), "pos 2") != NULL);
    pos[0] = 4;
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    pos[0] = 3;
    sq[0] = 2; /* out of range */
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    sq[0] = -1;
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    sq[0] = 1; /* seq 1 is empty: pos must be 0 */
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    sq[0] = 0;
    tok[0] = V; /* token out of range */
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    tok[0] = -1;
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    tok[0] = 1;
    b.n_tokens = 0;
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    b.n_tokens = 9; /* > n_batch */
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    b.n_tokens = 2;
    pos[1] = 5; /* positions within a batch must increase by 1 */
    CHECK(l3c_decode(c, &b) == L3C_ERR_INVALID_ARG);
    pos[1] = 4;
    CHECK(l3c_decode(NULL, &b) == L3C_ERR_INVALID_ARG);
    CHECK(l3c_decode(c, NULL) == L3C_ERR_INVALID_ARG);
    /* nothing above changed the cache */
    CHECK(l3c_kv_seq_len(c, 0) == 3 && l3c_kv_seq_len(c, 1) == 0);

    /* fill seq 0 to n_ctx = 16, then one more is CONTEXT_FULL */
    b.n_tokens = 8;
    CHECK(l3c_decode(c, &b) == L3C_OK);
    for (int i = 0; i < 5; i++) pos[i] = 11 + i;
    b.n_tokens = 5;
    CHECK(l3c_decode(c, &b) == L3C_OK && l3c_kv_seq_len(c, 0) == 16);
    pos[0] = 16;
    b.n_tokens = 1;
    CHECK(l3c_decode(c, &b) == L3C_ERR_CONTEXT_FULL);
    CHECK(l3c_kv_seq_len(c, 0) == 16);
    l3c_context_free(c);

    /* context parameters */
    l3c_context_params cp = l3c_context_default_params();
    l3c_context *bad = (l3c_context *)1;
    cp.n_seq = 0;
    CHECK(l3c_context_create(m, &cp, &bad) == L3C_ERR_INVALID_ARG && bad == NULL);
    cp = l3c_context_default_params();
    cp.kv_type = 7;
    CHECK(l3c_context_create(m, &cp, &bad) == L3C_ERR_INVALID_ARG && bad == NULL);
    cp = l3c_context_default_params();
    cp.kv_budget_bytes = 100; /* fits no position */
    CHECK(l3c_context_create(m, &cp, &bad) == L3C_ERR_INVALID_ARG && bad == NULL);
    cp = l3c_context_default_params();
    cp.kv_type = L3C_KV_Q8_0; /* head_dim 8 is not a multiple of 32 */
    CHECK(l3c_context_create(m, &cp, &bad) == L3C_ERR_UNSUPPORTED && bad == NULL);
    cp = l3c_context_default_params(); /* default n_ctx: the model's 64 */
    CHECK(l3c_context_create(m, &cp, &bad) == L3C_OK && l3c_context_n_ctx(bad) == CTX);
    l3c_context_free(bad);
    cp.kv_budget_bytes = 20 * l3c_model_kv_bytes_per_pos(m, L3C_KV_F16); /* capped by budget */
    CHECK(l3c_context_create(m, &cp, &bad) == L3C_OK && l3c_context_n_ctx(bad) == 20);
    l3c_context_free(bad);
}

static void expect_load_error(const build_opts *o, l3c_status want, const char *needle,
                              const char *needle2) {
    model_data md;
    CHECK(write_model(g_path, o, &md) == 0);
    free_weights(&md);
    l3c_model *m = (l3c_model *)1;
    l3c_status st = l3c_model_load(g_path, NULL, &m);
    CHECK_MSG(st == want, "want %s, got %s (%s)", l3c_status_name(want), l3c_status_name(st),
              l3c_last_error());
    CHECK(m == NULL);
    CHECK_MSG(strstr(l3c_last_error(), needle) != NULL, "'%s' not in '%s'", needle, l3c_last_error());
    if (needle2)
        CHECK_MSG(strstr(l3c_last_error(), needle2) != NULL, "'%s' not in '%s'", needle2,
                  l3c_last_error());
    if (m != NULL && m != (l3c_model *)1) l3c_model_free(m);
}

static void test_load_errors(void) {
    build_opts o = {.omit = "blk.1.ffn_up.weight"};
    expect_load_error(&o, L3C_ERR_FORMAT, "blk.1.ffn_up.weight", "missing");
    o = (build_opts){.bad_shape = "blk.0.attn_k.weight"};
    expect_load_error(&o, L3C_ERR_FORMAT, "blk.0.attn_k.weight", "[32, 17]");
    o = (build_opts){.bad_shape = "output.weight"};
    expect_load_error(&o, L3C_ERR_FORMAT, "output.weight", "expected [32, 40]");
    o = (build_opts){.bad_type = "blk.0.attn_q.weight", .bad_type_id = 9}; /* Q8_1: no weight kernel */
    expect_load_error(&o, L3C_ERR_UNSUPPORTED, "blk.0.attn_q.weight", "Q8_1");
    o = (build_opts){.bad_type = "blk.1.attn_v.weight", .bad_type_id = 17}; /* IQ2_XS */
    expect_load_error(&o, L3C_ERR_UNSUPPORTED, "blk.1.attn_v.weight", NULL);
    o = (build_opts){.arch = "gpt2"};
    expect_load_error(&o, L3C_ERR_UNSUPPORTED, "gpt2", "general.architecture");
    l3c_model *m = (l3c_model *)1;
    CHECK(l3c_model_load("/nonexistent/model.gguf", NULL, &m) == L3C_ERR_IO && m == NULL);
}

static int g_trace_ops, g_trace_bad;
static void trace_cb(void *user, const char *op, int layer, const float *data, int64_t rows, int64_t cols) {
    (void)user;
    g_trace_ops++;
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(data[i])) g_trace_bad++;
    if (!strcmp(op, "attn_scores")) {
        /* [n_head * T x n_kv]; this test's batch is one sequence from 0, so row h*T + t has t+1 */
        int64_t T = rows / H;
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t j = 0; j < cols; j++) s += data[r * cols + j];
            if (fabs(s - 1.0) > 1e-5 || (r % T + 1 < cols && data[r * cols + r % T + 1] != 0.0f))
                g_trace_bad++;
        }
    }
    if (!strcmp(op, "logits") && (layer != -1 || cols != V)) g_trace_bad++;
}

static void test_trace(l3c_model *m) {
    float a[5 * V], b[5 * V];
    l3c_context *c = make_ctx(m, 16, 1, 512, L3C_KV_F16);
    CHECK(c != NULL);
    if (!c) return;
    CHECK(decode_seq(c, IDS, 5, 0, 512, a) == 0);
    CHECK(l3c_kv_seq_truncate(c, 0, 0) == L3C_OK);
    l3c_context_set_trace(c, trace_cb, NULL);
    CHECK(decode_seq(c, IDS, 5, 0, 512, b) == 0);
    CHECK(max_diff(a, b, 5 * V) == 0.0);
    /* embd + 14 per layer + result_norm + logits */
    CHECK_MSG(g_trace_ops == 1 + 14 * NL + 2, "trace ops %d", g_trace_ops);
    CHECK(g_trace_bad == 0);
    l3c_context_set_trace(c, NULL, NULL);
    l3c_context_free(c);
}

static void test_alloc_failures(void) {
    int completed = 0;
    for (long n = 0; n < 400 && !completed; n++) {
        l3c_model *m = NULL;
        l3c_context *c = NULL;
        l3c_set_alloc_fail_after(n);
        l3c_status st = l3c_model_load(g_path, NULL, &m);
        if (st == L3C_OK) {
            l3c_context_params cp = l3c_context_default_params();
            cp.n_threads = 1;
            st = l3c_context_create(m, &cp, &c);
            if (st == L3C_OK) completed = 1;
            else CHECK(c == NULL && st == L3C_ERR_NOMEM);
        } else {
            CHECK_MSG(m == NULL && st == L3C_ERR_NOMEM, "fail after %ld: %s", n, l3c_last_error());
        }
        l3c_set_alloc_fail_after(-1);
        l3c_context_free(c);
        l3c_model_free(m);
    }
    CHECK(completed);
}

/* the CPU backend's ops that decode runs in place and training out of place (block.c) agree
 * bitwise; they do not read the context. (Here, not in test_ops: the backend table links the
 * whole library, which the arm64 cross build of test_ops does not have.) */
static void test_backend_cpu_ops(void) {
    enum { T = 2, N = 45 };
    const l3c_backend *be = &l3c_backend_cpu;
    float x[T * N], g[N], y0[T * N], y1[T * N], r0[T], r1[T] = {0}, a[T * N], b[T * N], h[T * N];
    for (int i = 0; i < T * N; i++)
        x[i] = 3.0f * frand(), b[i] = 2.0f * frand();
    for (int i = 0; i < N; i++)
        g[i] = 1.0f + 0.5f * frand();
    l3c_rmsnorm(x, g, y0, T, N, 1e-5f);
    l3c_rms_rstd(x, r0, T, N, 1e-5f);
    be->rmsnorm(NULL, x, g, y1, r1, T, N, 1e-5f);
    CHECK(!memcmp(y0, y1, sizeof y0) && !memcmp(r0, r1, sizeof r0));
    be->rmsnorm(NULL, x, g, y1, NULL, T, N, 1e-5f); /* rstd not asked for */
    CHECK(!memcmp(y0, y1, sizeof y0));
    float x0[T * N];
    memcpy(x0, x, sizeof x0);
    memcpy(a, x, sizeof a);
    be->swiglu(NULL, h, x, b, T * N);                           /* h = silu(x) * b */
    be->swiglu(NULL, a, a, b, T * N);                           /* in place */
    CHECK(!memcmp(a, h, sizeof a) && !memcmp(x, x0, sizeof x)); /* the same; x untouched */
    memcpy(a, x, sizeof a);
    be->add(NULL, h, x, b, T * N);
    be->add(NULL, a, a, b, T * N);
    CHECK(!memcmp(a, h, sizeof a));
    for (int i = 0; i < T * N; i++)
        CHECK(h[i] == x[i] + b[i]);
}

/* a backend table as a pipeline's: stage_rows cuts every batch into ranges of 3 tokens; the
 * stage op checks that it sees them in order, each before (end 0) and after (end 1) the layers */
static int64_t g_mb_next, g_mb_calls, g_mb_bad;
static int g_mb_open;

static void mb_stage(l3c_context *ctx, int end, float *x, int64_t t0, int64_t n, int64_t T) {
    g_mb_calls++;
    if (!end) {
        if (g_mb_open || t0 != g_mb_next || n != (T - t0 < 3 ? T - t0 : 3)) g_mb_bad++;
        g_mb_open = 1;
        return;
    }
    if (!g_mb_open || t0 != g_mb_next) g_mb_bad++;
    g_mb_open = 0;
    g_mb_next = t0 + n == T ? 0 : t0 + n;
}

static int64_t mb_rows(l3c_context *ctx, int64_t T) {
    return 3;
}

static void test_micro_batches(l3c_model *m) {
    /* 11 tokens of two interleaved sequences, logits for all: ranges of 3 cut through both */
    int32_t tok[11], sq[11] = {0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1}, pos[11], n_at[2] = {0, 0};
    int8_t want[11];
    for (int i = 0; i < 11; i++)
        tok[i] = IDS[i], pos[i] = n_at[sq[i]]++, want[i] = 1;
    l3c_context *a = make_ctx(m, 32, 2, 16, L3C_KV_F16), *b = make_ctx(m, 32, 2, 16, L3C_KV_F16);
    CHECK(a && b);
    if (!a || !b) goto done;
    l3c_backend mb = *b->backend;
    mb.stage = mb_stage;
    mb.stage_rows = mb_rows;
    b->backend = &mb;
    for (int round = 0; round < 2; round++) { /* the second batch continues both caches */
        l3c_batch bt = {11, tok, pos, sq, want};
        CHECK(l3c_decode(a, &bt) == L3C_OK && l3c_decode(b, &bt) == L3C_OK);
        int same = 1;
        for (int i = 0; i < 11; i++)
            same &= !memcmp(l3c_get_logits(a, i), l3c_get_logits(b, i), V * sizeof(float));
        CHECK_MSG(same, "micro-batches of 3 differ from the whole batch (round %d)", round);
        for (int i = 0; i < 11; i++)
            pos[i] += 5 * (sq[i] == 0) + 6 * (sq[i] == 1);
    }
    CHECK_MSG(g_mb_calls == 2 * 2 * 4 && !g_mb_bad && !g_mb_open,
              "stage op: %lld calls (want 16), %lld out of order", (long long)g_mb_calls,
              (long long)g_mb_bad);
done:
    l3c_context_free(a);
    l3c_context_free(b);
}

int main(void) {
    snprintf(g_path, sizeof g_path, "/tmp/l3c_test_model_%d.gguf", (int)getpid());

    test_reference(0, 0);
    test_reference(1, 1);

    build_opts o = {0};
    model_data md;
    CHECK(write_model(g_path, &o, &md) == 0);
    free_weights(&md);
    l3c_model *m = load_or_null(g_path);
    CHECK(m != NULL);
    if (m) {
        test_batch_vs_single(m, L3C_KV_F16);
        test_batch_vs_single(m, L3C_KV_F32);
        test_two_sequences(m);
        test_thread_invariance(m);
        test_truncate(m);
        test_kv_share(m, L3C_KV_F16);
        test_kv_share(m, L3C_KV_F32);
        test_bad_batches(m);
        test_trace(m);
        test_micro_batches(m);
        l3c_model_free(m);
    }
    test_backend_cpu_ops();
    test_alloc_failures();
    test_load_errors();
    unlink(g_path);
    return CHECK_DONE("test_model");
}
