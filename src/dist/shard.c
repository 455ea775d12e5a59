/*
 * shard.c -- this rank's share of a model in a distributed run: the split's checks before
 * loading, the cross-rank file check, and the narrowing of the bound weights (shard.h has the
 * layout and its reasons).
 */
#include "dist/shard.h"

#include "dist/comm.h"
#include "model/hf.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* [*lo, *hi) = rank r's share of n units over size ranks, the first n % size getting one more */
static void share(int64_t n, int size, int r, int64_t *lo, int64_t *hi) {
    const int64_t base = n / size, extra = n % size;
    *lo = r * base + L3C_MIN(r, extra);
    *hi = *lo + base + (r < extra);
}

/* FNV-1a over bytes */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The file as the ranks must agree on it: header bytes (metadata and tensor infos), and per
 * tensor its name, type, shape, size and first 64 data bytes (one page each, so different
 * weights behind an equal header are told apart without reading the whole file). */
static uint64_t file_hash(const l3c_gguf *g) {
    uint64_t h = 0xcbf29ce484222325ull;
    if (g->base && !g->header_only) h = fnv(h, g->base, L3C_MIN(g->data_offset, g->size));
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        h = fnv(h, t->name, strlen(t->name));
        h = fnv(h, &t->type, sizeof t->type);
        h = fnv(h, t->ne, sizeof t->ne);
        h = fnv(h, &t->nbytes, sizeof t->nbytes);
        if (t->data) h = fnv(h, t->data, L3C_MIN(t->nbytes, (size_t)64));
    }
    return h;
}

/* Largest block size among the tensors named blk.N.<suffix>.weight (their columns get split). */
static int64_t max_block(const l3c_gguf *g, const char *suffix, int32_t n_layer) {
    int64_t b = 1;
    char name[96];
    for (int32_t l = 0; l < n_layer; l++) {
        snprintf(name, sizeof name, "blk.%d.%s.weight", (int)l, suffix);
        const l3c_gguf_tensor *t = l3c_gguf_find_tensor(g, name);
        const l3c_type_traits *tr = t ? l3c_type_traits_get((int)t->type) : NULL;
        if (tr && tr->block_size > b) b = tr->block_size;
    }
    return b;
}

l3c_status l3c_shard_plan(const l3c_gguf *g, const l3c_config *c, const l3c_model_params *p,
                          const char *path, l3c_shard **out) {
    *out = NULL;
    const int N = l3c_comm_size(), rank = l3c_comm_rank();
    if (p->split != L3C_SPLIT_NONE && p->split != L3C_SPLIT_TENSOR && p->split != L3C_SPLIT_LAYERS)
        return l3c_fail(L3C_ERR_INVALID_ARG, "%s: unknown split %d", path, p->split);
    if (N == 1 || p->split == L3C_SPLIT_NONE) return L3C_OK;
    /* a mapped GGUF: small pages from the first read on (the hash below touches every tensor) */
    const int mapped = p->use_mmap && g->base && !g->header_only && !l3c_path_is_dir(path);
#ifdef MADV_NOHUGEPAGE
    if (mapped) madvise((void *)g->base, g->size, MADV_NOHUGEPAGE); /* best effort */
#endif

    /* the same file and split on every rank, before anything can differ */
    uint64_t mine[2] = {file_hash(g), fnv(0xcbf29ce484222325ull, &p->split, sizeof p->split)};
    if (p->split == L3C_SPLIT_LAYERS && p->layers_per_rank)
        mine[1] = fnv(mine[1], p->layers_per_rank, (size_t)N * sizeof(int32_t));
    uint64_t all[2][N];
    l3c_comm_allgather_u64(mine[0], all[0]);
    l3c_comm_allgather_u64(mine[1], all[1]);
    if (mapped) madvise((void *)g->base, g->size, MADV_DONTNEED); /* the pages the hash read */
    for (int r = 1; r < N; r++) {
        if (all[0][r] != all[0][0])
            return l3c_fail(L3C_ERR_INVALID_ARG,
                            "%s: rank %d's model file differs from rank 0's (header "
                            "hash %016llx vs %016llx): every rank must load the same "
                            "file",
                            path, r, (unsigned long long)all[0][r], (unsigned long long)all[0][0]);
        if (all[1][r] != all[1][0])
            return l3c_fail(L3C_ERR_INVALID_ARG,
                            "%s: rank %d was given another split or "
                            "--layers-per-rank than rank 0",
                            path, r);
    }

    l3c_shard *s = l3c_calloc(1, sizeof *s);
    if (!s) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
    s->split = p->split;
    s->fd = -1;
    if (mapped) s->map = g->base, s->map_bytes = g->size;
    s->rank = rank;
    s->size = N;
    s->full = *c;
    l3c_status st;
    if (p->split == L3C_SPLIT_TENSOR) {
        if (N > c->n_head_kv) {
            st = l3c_fail(L3C_ERR_INVALID_ARG,
                          "%s: --split tensor over %d ranks, but the model has "
                          "%d KV heads (at most one rank per KV head; try --split "
                          "layers)",
                          path, N, c->n_head_kv);
            goto fail;
        }
        /* column boundaries of attn_output (heads) and ffn_down (FFN units) on block boundaries */
        const int64_t hd = c->head_dim, G = c->n_head / c->n_head_kv;
        const int64_t bo = max_block(g, "attn_output", c->n_layer),
                      bd = max_block(g, "ffn_down", c->n_layer);
        for (int r = 0; r < N; r++) {
            int64_t lo, hi;
            share(c->n_head_kv, N, r, &lo, &hi);
            if ((lo * G * hd) % bo) {
                st = l3c_fail(L3C_ERR_UNSUPPORTED,
                              "%s: --split tensor over %d ranks: rank %d's "
                              "attn_output columns start at %lld, not a multiple "
                              "of its %lld-element quantization blocks (try "
                              "another rank count or --split layers)",
                              path, N, r, (long long)(lo * G * hd), (long long)bo);
                goto fail;
            }
        }
        if (c->n_ff % bd || c->n_ff / bd < N) {
            st = l3c_fail(L3C_ERR_UNSUPPORTED,
                          "%s: --split tensor over %d ranks: n_ff %d does not "
                          "divide into %d ranks' whole %lld-element blocks of "
                          "ffn_down",
                          path, N, c->n_ff, N, (long long)bd);
            goto fail;
        }
        int64_t lo, hi;
        share(c->n_head_kv, N, rank, &lo, &hi);
        s->kv0 = (int32_t)lo, s->kv1 = (int32_t)hi;
        share(c->n_ff / bd, N, rank, &lo, &hi);
        s->ff0 = (int32_t)(lo * bd), s->ff1 = (int32_t)(hi * bd);
    } else {
        if (N > c->n_layer) {
            st = l3c_fail(L3C_ERR_INVALID_ARG,
                          "%s: --split layers over %d ranks, but the model has "
                          "%d layers (at most one rank per layer)",
                          path, N, c->n_layer);
            goto fail;
        }
        if (!(s->first = l3c_calloc((size_t)N + 1, sizeof *s->first))) goto nomem;
        int64_t sum = 0;
        for (int r = 0; r < N; r++) {
            int64_t lo, hi;
            share(c->n_layer, N, r, &lo, &hi);
            int64_t n = p->layers_per_rank ? p->layers_per_rank[r] : hi - lo;
            if (n < 1) {
                st = l3c_fail(L3C_ERR_INVALID_ARG,
                              "%s: --layers-per-rank gives rank %d %lld layers; "
                              "each rank needs at least 1",
                              path, r, (long long)n);
                goto fail;
            }
            s->first[r] = (int32_t)sum;
            sum += n;
        }
        if (sum != c->n_layer) {
            st = l3c_fail(L3C_ERR_INVALID_ARG,
                          "%s: --layers-per-rank sums to %lld layers; the model "
                          "has %d",
                          path, (long long)sum, c->n_layer);
            goto fail;
        }
        s->first[N] = c->n_layer;
        s->layer0 = s->first[rank];
        s->layer1 = s->first[rank + 1];
    }
    /* the output head: a vocabulary slice per rank in both splits (the layer split hands the last
     * stage's x to every rank for it) */
    if (c->n_vocab < N) {
        st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: vocabulary of %d < %d ranks", path, c->n_vocab, N);
        goto fail;
    }
    if (!(s->vocab_n = l3c_calloc((size_t)N, sizeof *s->vocab_n))) goto nomem;
    for (int r = 0; r < N; r++) {
        int64_t lo, hi;
        share(c->n_vocab, N, r, &lo, &hi);
        s->vocab_n[r] = hi - lo;
        if (r == rank) s->vocab0 = (int32_t)lo, s->vocab1 = (int32_t)hi;
    }
    *out = s;
    return L3C_OK;
nomem:
    st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
fail:
    l3c_shard_free(s);
    return st;
}

/* w keeps output rows [r0, r1): a view */
static void keep_rows(l3c_weight *w, int64_t r0, int64_t r1, int dist) {
    w->data = (const char *)w->data + (size_t)r0 * w->row_bytes;
    w->n_out = r1 - r0;
    w->dist = dist;
}

/* bytes of columns [c0, c1) of one row of w (block-aligned, checked by the plan) */
static size_t cols_bytes(const l3c_weight *w, int64_t c0, int64_t c1) {
    size_t b = 0;
    l3c_row_size(w->type, c1 - c0, &b);
    return b;
}

/* w keeps input columns [c0, c1), copied row by row to dst; returns the bytes written */
static size_t keep_cols(const l3c_weights *ws, l3c_weight *w, int64_t c0, int64_t c1, char *dst,
                        int release) {
    const size_t skip = cols_bytes(w, 0, c0), rb = cols_bytes(w, c0, c1);
    const char *src = w->data;
    for (int64_t o = 0; o < w->n_out; o++)
        memcpy(dst + (size_t)o * rb, src + (size_t)o * w->row_bytes + skip, rb);
    if (release) l3c_weights_release(ws, src, (size_t)w->n_out * w->row_bytes);
    w->data = dst;
    w->n_in = c1 - c0;
    w->row_bytes = rb;
    w->dist = L3C_WDIST_SUM;
    return (size_t)w->n_out * rb;
}

/* the file again, for the embedding rows (none if it cannot be opened as the same file: the
 * rows then come from the mapping) */
static void open_rows(l3c_shard *s, const l3c_weight *embd, const char *path) {
    struct stat sb;
    if (!s->map || embd->packed) return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != s->map_bytes) {
        close(fd);
        return;
    }
    s->fd = fd;
    s->embd_data = embd->data;
    s->embd_off = (size_t)((const uint8_t *)embd->data - s->map);
}

/* n bytes at offset off of fd, all of them */
static int read_at(int fd, void *buf, size_t n, size_t off) {
    for (size_t got = 0; got < n;) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        got += (size_t)r;
    }
    return 1;
}

int l3c_shard_get_rows(const l3c_shard *s, const l3c_weight *w, const int32_t *ids, int64_t T,
                       float *x) {
    if (s->fd < 0 || w->data != s->embd_data || w->packed) return 0;
    const l3c_type_traits *tr = l3c_type_traits_get(w->type);
    const int64_t bs = tr->block_size, n_blocks = w->n_in / bs;
    size_t bb = 0;
    _Alignas(64) char buf[4096]; /* whole blocks at a time (one read for a row of most models) */
    if (!l3c_row_size(w->type, bs, &bb) || bb > sizeof buf) return 0;
    const int64_t per = (int64_t)(sizeof buf / bb);
    for (int64_t t = 0; t < T; t++) {
        L3C_ASSERT(ids[t] >= 0 && ids[t] < w->n_out); /* callers validate token ids */
        float *dst = x + t * w->n_in;
        const size_t row = s->embd_off + (size_t)ids[t] * w->row_bytes;
        for (int64_t b = 0; b < n_blocks; b += per) {
            const int64_t n = L3C_MIN(per, n_blocks - b);
            if (!read_at(s->fd, buf, (size_t)n * bb, row + (size_t)b * bb)) {
                l3c_get_row(w, ids[t], dst); /* an I/O error: the mapping has the same bytes */
                break;
            }
            tr->to_float(buf, dst + b * bs, n * bs);
        }
    }
    return 1;
}

void l3c_shard_release_file(const l3c_shard *s) {
    if (s && s->map) madvise((void *)s->map, s->map_bytes, MADV_DONTNEED);
}

l3c_status l3c_shard_apply(l3c_shard *s, l3c_weights *w, l3c_config *c, const char *path,
                           int release_file_pages) {
    if (release_file_pages) open_rows(s, &w->tok_embd, path);
    if (s->split == L3C_SPLIT_LAYERS) {
        /* other stages' layers are forgotten (never read, so never resident) */
        for (int32_t l = 0; l < c->n_layer; l++) {
            if (l >= s->layer0 && l < s->layer1) continue;
            l3c_layer *L = &w->layers[l];
            l3c_weight *m[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            for (int i = 0; i < 7; i++)
                m[i]->data = NULL;
        }
        keep_rows(&w->output, s->vocab0, s->vocab1, L3C_WDIST_GATHER);
        l3c_shard_release_file(s); /* what binding read (the norms' neighbours) */
        return L3C_OK;
    }
    const int64_t hd = c->head_dim, G = c->n_head / c->n_head_kv;
    const int64_t q0 = s->kv0 * G * hd, q1 = s->kv1 * G * hd, k0 = s->kv0 * hd, k1 = s->kv1 * hd;
    size_t total = 0;
    for (int32_t l = 0; l < c->n_layer; l++) {
        const l3c_layer *L = &w->layers[l];
        total += (cols_bytes(&L->wo, q0, q1) * (size_t)L->wo.n_out + 4095) / 4096 * 4096;
        total +=
            (cols_bytes(&L->w_down, s->ff0, s->ff1) * (size_t)L->w_down.n_out + 4095) / 4096 * 4096;
    }
    void *arena = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED)
        return l3c_fail(L3C_ERR_NOMEM,
                        "%s: cannot map %.1f MiB for this rank's attn_output / ffn_down "
                        "columns",
                        path, (double)total / (1024.0 * 1024.0));
    s->arena = arena;
    s->arena_bytes = total;
    char *dst = arena;
    for (int32_t l = 0; l < c->n_layer; l++) {
        l3c_layer *L = &w->layers[l];
        keep_rows(&L->wq, q0, q1, L3C_WDIST_WHOLE);
        keep_rows(&L->wk, k0, k1, L3C_WDIST_WHOLE);
        keep_rows(&L->wv, k0, k1, L3C_WDIST_WHOLE);
        keep_rows(&L->w_gate, s->ff0, s->ff1, L3C_WDIST_WHOLE);
        keep_rows(&L->w_up, s->ff0, s->ff1, L3C_WDIST_WHOLE);
        dst += (keep_cols(w, &L->wo, q0, q1, dst, release_file_pages) + 4095) / 4096 * 4096;
        dst += (keep_cols(w, &L->w_down, s->ff0, s->ff1, dst, release_file_pages) + 4095) / 4096 *
               4096;
    }
    /* the output head (token_embd itself when tied: the embedding keeps every row) */
    keep_rows(&w->output, s->vocab0, s->vocab1, L3C_WDIST_GATHER);
    c->n_head = (int32_t)((s->kv1 - s->kv0) * G);
    c->n_head_kv = s->kv1 - s->kv0;
    c->n_ff = s->ff1 - s->ff0;
    l3c_shard_release_file(s); /* what binding read (the norms' neighbours) */
    return L3C_OK;
}

int32_t l3c_shard_min_i32(const l3c_shard *s, int32_t v) {
    return (int32_t)-l3c_comm_max_i64(-(int64_t)v);
}

void l3c_shard_free(l3c_shard *s) {
    if (!s) return;
    if (s->arena) munmap(s->arena, s->arena_bytes);
    if (s->fd >= 0) close(s->fd);
    free(s->vocab_n);
    free(s->first);
    free(s);
}
