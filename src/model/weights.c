/*
 * weights.c -- binds every tensor of a llama GGUF by name, type and exact shape, so a wrong or
 * truncated file fails at load with a message naming the tensor. Matrices stay in the mapping
 * (no copies); norm vectors are copied (F16/BF16 converted) once into small owned buffers.
 *
 * Expected tensors (GGUF ne[0] is the row / input dimension; hd = head_dim):
 *   token_embd.weight        [n_embd, n_vocab]
 *   blk.N.attn_norm.weight   [n_embd]                float
 *   blk.N.attn_q.weight      [n_embd, n_head*hd]     (rows permuted for "normal" RoPE by convert)
 *   blk.N.attn_k.weight      [n_embd, n_head_kv*hd]
 *   blk.N.attn_v.weight      [n_embd, n_head_kv*hd]
 *   blk.N.attn_output.weight [n_head*hd, n_embd]
 *   blk.N.ffn_norm.weight    [n_embd]                float
 *   blk.N.ffn_gate.weight    [n_embd, n_ff]
 *   blk.N.ffn_up.weight      [n_embd, n_ff]
 *   blk.N.ffn_down.weight    [n_ff, n_embd]
 *   output_norm.weight       [n_embd]                float
 *   output.weight            [n_embd, n_vocab]       optional: absent = tied to token_embd
 *   rope_freqs.weight        [n_rot/2]               optional float (Llama 3.1 rope scaling)
 */
#include "model/model.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void shape_str(const l3c_gguf_tensor *t, char *buf, size_t cap) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, cap - off, "[");
    for (uint32_t d = 0; d < t->n_dims && off < cap; d++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    if (off < cap) snprintf(buf + off, cap - off, "]");
}

/* Finds `name` and checks its shape is [ne0] (ne1 == 0) or [ne0, ne1]. *out NULL if optional+absent. */
static l3c_status find_shaped(const l3c_gguf *g, const char *path, const char *name, int optional,
                              int64_t ne0, int64_t ne1, const l3c_gguf_tensor **out) {
    *out = NULL;
    const l3c_gguf_tensor *t = l3c_gguf_find_tensor(g, name);
    if (!t) {
        if (optional) return L3C_OK;
        return l3c_fail(L3C_ERR_FORMAT, "%s: missing tensor '%s'", path, name);
    }
    int64_t want1 = ne1 ? ne1 : 1;
    if (t->ne[0] != ne0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1) {
        char got[96];
        shape_str(t, got, sizeof got);
        if (ne1)
            return l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected [%lld, %lld]",
                            path, name, got, (long long)ne0, (long long)ne1);
        return l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected [%lld]", path, name,
                        got, (long long)ne0);
    }
    *out = t;
    return L3C_OK;
}

/* A matrix with n_in inputs (ne0) and n_out outputs (ne1) of any supported weight type. */
static l3c_status bind_matrix(const l3c_gguf *g, const char *path, const char *name, int optional,
                              int64_t n_in, int64_t n_out, l3c_weight *w) {
    const l3c_gguf_tensor *t;
    l3c_status st = find_shaped(g, path, name, optional, n_in, n_out, &t);
    if (st != L3C_OK || !t) return st;
    if (!l3c_type_supported((int)t->type))
        return l3c_fail(L3C_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has type %s, which llama3c does not support", path, name,
                        l3c_type_name((int)t->type));
    size_t row_bytes;
    if (!l3c_row_size((int)t->type, n_in, &row_bytes))
        return l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s': row length %lld is not a multiple of the "
                                        "%s block size", path, name, (long long)n_in,
                        l3c_type_name((int)t->type));
    w->name = t->name;
    w->type = (int)t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_bytes = row_bytes;
    w->data = t->data;
    return L3C_OK;
}

/* A float vector [n], copied (F16/BF16 converted) into an owned buffer: the norms are read for
 * every token, and a read of the mapping maps the page-cache folio around them (up to 2 MiB of
 * matrix data that was packed and dropped). */
static l3c_status bind_vector(const l3c_gguf *g, const char *path, const char *name, int optional,
                              int64_t n, l3c_weights *w, const float **out) {
    *out = NULL;
    const l3c_gguf_tensor *t;
    l3c_status st = find_shaped(g, path, name, optional, n, 0, &t);
    if (st != L3C_OK || !t) return st;
    if (t->type != L3C_TYPE_F32 && t->type != L3C_TYPE_F16 && t->type != L3C_TYPE_BF16)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s; llama3c expects F32, F16 "
                                             "or BF16 for this vector", path, name,
                        l3c_type_name((int)t->type));
    float *buf = l3c_malloc((size_t)n * sizeof(float));
    if (!buf) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory converting '%s'", path, name);
    w->owned[w->n_owned++] = buf;
    *out = buf;
    if (t->type == L3C_TYPE_F32) {
        memcpy(buf, t->data, (size_t)n * sizeof(float));
        return L3C_OK;
    }
    const uint16_t *src = (const uint16_t *)t->data;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + i, sizeof h);
        buf[i] = t->type == L3C_TYPE_F16 ? l3c_fp16_to_fp32(h) : l3c_bf16_to_fp32(h);
    }
    return L3C_OK;
}

l3c_status l3c_weights_bind(const l3c_gguf *g, const l3c_config *cfg, const char *path,
                            l3c_weights *w) {
    l3c_status st;
    memset(w, 0, sizeof *w);
    const int64_t E = cfg->n_embd, hd = cfg->head_dim, F = cfg->n_ff, V = cfg->n_vocab;
    const int64_t q_dim = (int64_t)cfg->n_head * hd, kv_dim = (int64_t)cfg->n_head_kv * hd;
    char name[96];

    w->layers = l3c_calloc((size_t)cfg->n_layer, sizeof *w->layers);
    /* at most two norms per layer + output_norm + rope_freqs */
    w->owned = l3c_calloc((size_t)cfg->n_layer * 2 + 2, sizeof *w->owned);
    if (!w->layers || !w->owned) {
        st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory for %d layers", path, cfg->n_layer);
        goto fail;
    }

    if ((st = bind_matrix(g, path, "token_embd.weight", 0, E, V, &w->tok_embd))) goto fail;
    for (int32_t l = 0; l < cfg->n_layer; l++) {
        l3c_layer *L = &w->layers[l];
#define NAME(s) (snprintf(name, sizeof name, "blk.%d." s ".weight", (int)l), name)
        if ((st = bind_vector(g, path, NAME("attn_norm"), 0, E, w, &L->attn_norm))) goto fail;
        if ((st = bind_matrix(g, path, NAME("attn_q"), 0, E, q_dim, &L->wq))) goto fail;
        if ((st = bind_matrix(g, path, NAME("attn_k"), 0, E, kv_dim, &L->wk))) goto fail;
        if ((st = bind_matrix(g, path, NAME("attn_v"), 0, E, kv_dim, &L->wv))) goto fail;
        if ((st = bind_matrix(g, path, NAME("attn_output"), 0, q_dim, E, &L->wo))) goto fail;
        if ((st = bind_vector(g, path, NAME("ffn_norm"), 0, E, w, &L->ffn_norm))) goto fail;
        if ((st = bind_matrix(g, path, NAME("ffn_gate"), 0, E, F, &L->w_gate))) goto fail;
        if ((st = bind_matrix(g, path, NAME("ffn_up"), 0, E, F, &L->w_up))) goto fail;
        if ((st = bind_matrix(g, path, NAME("ffn_down"), 0, F, E, &L->w_down))) goto fail;
#undef NAME
    }
    if ((st = bind_vector(g, path, "output_norm.weight", 0, E, w, &w->output_norm))) goto fail;
    memset(&w->output, 0, sizeof w->output);
    if ((st = bind_matrix(g, path, "output.weight", 1, E, V, &w->output))) goto fail;
    if (!w->output.data) {
        w->output = w->tok_embd;
        w->tied_output = 1;
    }
    if ((st = bind_vector(g, path, "rope_freqs.weight", 1, cfg->n_rot / 2, w, &w->rope_freqs)))
        goto fail;
    if (w->rope_freqs) {
        for (int i = 0; i < cfg->n_rot / 2; i++)
            if (!(w->rope_freqs[i] > 0.0f)) {
                st = l3c_fail(L3C_ERR_FORMAT, "%s: tensor 'rope_freqs.weight'[%d] = %g must be > 0",
                              path, i, (double)w->rope_freqs[i]);
                goto fail;
            }
    }
    return L3C_OK;
fail:
    l3c_weights_free(w);
    return st;
}

/* ---- packed copies */

/* drops the whole pages of [p, p + n) from this process's mapping (they fault back in from the
 * page cache if read again) */
static void release_pages(const void *p, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) / page * page, hi = ((uintptr_t)p + n) / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

typedef struct pack_job {
    const l3c_weight *w;
    const l3c_pack_layout *layout;
    void *dst;
    int64_t groups_per_chunk, n_groups;
    int release;
} pack_job;

static void pack_chunk(void *arg, int64_t c, int ith) {
    const pack_job *j = arg;
    const int64_t g0 = c * j->groups_per_chunk, g1 = L3C_MIN(g0 + j->groups_per_chunk, j->n_groups);
    l3c_weight_pack(j->w, j->layout, j->dst, g0, g1);
    if (j->release) { /* the source rows just packed (pages shared with a neighbour stay) */
        const int64_t R = j->layout->rows, r0 = g0 * R, r1 = L3C_MIN(g1 * R, j->w->n_out);
        release_pages((const char *)j->w->data + (size_t)r0 * j->w->row_bytes, (size_t)(r1 - r0) * j->w->row_bytes);
    }
}

void l3c_weights_release(const l3c_weights *w, const void *p, size_t n) {
    const uintptr_t a = (uintptr_t)p, m = (uintptr_t)w->file_map, block = (uintptr_t)2 << 20;
    if (!w->file_map || a < m || a + n > m + w->file_bytes) {
        release_pages(p, n);
        return;
    }
    const uintptr_t lo = L3C_MAX(a / block * block, m); /* the mapping starts on a page */
    const uintptr_t hi = L3C_MIN((a + n + block - 1) / block * block, m + w->file_bytes);
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

l3c_status l3c_weights_pack(l3c_weights *w, const l3c_config *cfg, const char *path,
                            int release_source, int bf16, int n_threads) {
    const char *env = getenv("L3C_PACK");
    if (env && strcmp(env, "0") == 0) return L3C_OK;
    /* every matrix a matmul reads (token_embd only as the tied output) */
    const int n_mat = cfg->n_layer * 7 + 1;
    l3c_weight **mat = l3c_calloc((size_t)n_mat, sizeof *mat);
    size_t *off = l3c_calloc((size_t)n_mat, sizeof *off);
    if (!mat || !off) {
        free(mat);
        free(off);
        return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int32_t l = 0; l < cfg->n_layer; l++) {
        l3c_layer *L = &w->layers[l];
        l3c_weight *m[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        memcpy(mat + 7 * l, m, sizeof m);
    }
    mat[n_mat - 1] = &w->output;
    size_t total = 0;
    for (int i = 0; i < n_mat; i++) {
        const l3c_pack_layout *L = l3c_weight_layout(mat[i], bf16); /* bf16 ones only if asked */
        const size_t b = mat[i]->data ? l3c_weight_packed_bytes(mat[i], L) : 0; /* NULL: another
                                                                                 * pipeline stage's */
        mat[i]->layout = b ? L : NULL; /* read only once packed is set */
        w->n_bf16 += b && L == &l3c_type_traits_get(mat[i]->type)->packed_bf16;
        off[i] = b ? total : SIZE_MAX;
        total += (b + 4095) / 4096 * 4096;
    }
    l3c_status st = L3C_OK;
    if (total == 0) goto done;
    void *arena = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED) {
        st = l3c_fail(L3C_ERR_NOMEM, "%s: cannot map %.1f MiB for the packed weights", path,
                      (double)total / (1024.0 * 1024.0));
        goto done;
    }
#ifdef MADV_HUGEPAGE
    madvise(arena, total, MADV_HUGEPAGE); /* best effort; tg 5 to 30% faster than 4 KiB pages */
#endif
    l3c_threadpool *tp = NULL;
    if (n_threads > 1 && l3c_threadpool_create(n_threads, &tp) != L3C_OK) tp = NULL;
    for (int i = 0; i < n_mat; i++) {
        if (off[i] == SIZE_MAX) continue;
        pack_job j = {.w = mat[i], .layout = mat[i]->layout, .dst = (char *)arena + off[i], .groups_per_chunk = 64,
                      .n_groups = l3c_weight_pack_groups(mat[i], mat[i]->layout), .release = release_source};
        l3c_threadpool_run(tp, l3c_n_chunks(j.n_groups, j.groups_per_chunk), pack_chunk, &j);
        mat[i]->packed = j.dst;
        /* the matmuls read only the copy now; keeps peak RSS near one copy of the weights */
        if (release_source)
            l3c_weights_release(w, mat[i]->data, (size_t)mat[i]->n_out * mat[i]->row_bytes);
    }
    l3c_threadpool_free(tp);
    mprotect(arena, total, PROT_READ);
    w->pack_arena = arena;
    w->pack_bytes = total;
    if (w->tied_output && w->output.n_out == w->tok_embd.n_out) { /* embedding rows from the copy
                                                                    * (not a rank's vocabulary slice) */
        w->tok_embd.packed = w->output.packed;
        w->tok_embd.layout = w->output.layout;
    }
done:
    free(mat);
    free(off);
    return st;
}

void l3c_weights_free(l3c_weights *w) {
    if (!w) return;
    if (w->pack_arena) munmap(w->pack_arena, w->pack_bytes);
    for (int i = 0; i < w->n_owned; i++) free(w->owned[i]);
    free(w->owned);
    free(w->layers);
    memset(w, 0, sizeof *w);
}
