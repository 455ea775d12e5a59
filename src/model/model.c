/*
 * model.c -- l3c_model_load / free and the model getters. A model owns its GGUF reader (the
 * weights point into its mapping), its tokenizer and NUL-terminated copies of the string
 * metadata (made at load so the getters need no lock: a model is immutable and may be shared by
 * threads).
 */
#include "model/model.h"

#include "dist/shard.h"
#include "model/hf.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <string.h>

l3c_model_params l3c_model_default_params(void) {
    l3c_model_params p = {.n_threads = 0, .use_mmap = 1, .verbose = 0, .bf16_matmul = 0,
                          .split = L3C_SPLIT_NONE, .layers_per_rank = NULL};
    return p;
}

/* Reads a whole file into an owned buffer (use_mmap == 0). */
static l3c_status read_file(const char *path, void **out, size_t *out_size) {
    *out = NULL;
    void *buf = NULL;
    l3c_status st;
    FILE *f = fopen(path, "rb");
    if (!f) return l3c_fail(L3C_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseeko(f, 0, SEEK_END) != 0) goto io_err;
    off_t size = ftello(f);
    if (size < 0 || (uint64_t)size > SIZE_MAX) goto io_err;
    if (fseeko(f, 0, SEEK_SET) != 0) goto io_err;
    buf = l3c_malloc((size_t)size);
    if (!buf) {
        st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory reading %lld bytes", path, (long long)size);
        goto fail;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) goto io_err;
    fclose(f);
    *out = buf;
    *out_size = (size_t)size;
    return L3C_OK;
io_err:
    st = l3c_fail(L3C_ERR_IO, "%s: read failed: %s", path, strerror(errno));
fail:
    free(buf);
    fclose(f);
    return st;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Most common type (by elements) among matrices. */
static int main_weight_type(const l3c_gguf *g) {
    int64_t count[L3C_TYPE_COUNT] = {0};
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        if (t->n_dims >= 2 && t->type < L3C_TYPE_COUNT) count[t->type] += t->n_elements;
    }
    int best = L3C_TYPE_F32;
    for (int t = 0; t < L3C_TYPE_COUNT; t++)
        if (count[t] > count[best]) best = t;
    return best;
}

l3c_status l3c_model_load(const char *path, const l3c_model_params *params, l3c_model **out) {
    l3c_status st;
    l3c_model_params p = params ? *params : l3c_model_default_params();
    if (out) *out = NULL;
    if (!path || !out) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_model_load: NULL argument");
    double t0 = l3c_time_s();

    l3c_model *m = l3c_calloc(1, sizeof *m);
    if (!m) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
    if (!(m->path = l3c_strdup(path))) goto nomem;

    if (l3c_path_is_dir(path)) { /* a Hugging Face folder (model/hf.c), always mapped */
        if ((st = l3c_hf_open(path, &m->hf, &m->gguf))) goto fail;
    } else if (p.use_mmap) {
        if ((st = l3c_gguf_open(path, &m->gguf))) goto fail;
    } else {
        size_t size = 0;
        if ((st = read_file(path, &m->file_buf, &size))) goto fail;
        if ((st = l3c_gguf_open_memory(m->file_buf, size, path, &m->gguf))) goto fail;
    }
    const l3c_gguf *g = m->gguf;

    if ((st = l3c_config_from_gguf(g, &m->cfg))) goto fail;
    /* a distributed run: the split checked against the model and the ranks' files compared
     * before any weight is touched (collective: every rank gets here) */
    if ((st = l3c_shard_plan(g, &m->cfg, &p, path, &m->shard))) goto fail;
    m->backend = &l3c_backend_cpu;
    if (m->shard) m->backend = m->shard->split == L3C_SPLIT_TENSOR ? l3c_backend_tensor() : l3c_backend_layers();
    if ((st = l3c_weights_bind(g, &m->cfg, path, &m->w))) goto fail;
    if (p.use_mmap && !m->hf) m->w.file_map = g->base, m->w.file_bytes = g->size;
    m->layer0 = 0;
    m->layer1 = m->cfg.n_layer;
    if (m->shard) {
        if ((st = l3c_shard_apply(m->shard, &m->w, &m->cfg, path, p.use_mmap && !m->hf))) goto fail;
        if (m->shard->split == L3C_SPLIT_LAYERS) m->layer0 = m->shard->layer0, m->layer1 = m->shard->layer1;
    }

    /* string metadata, NUL-terminated once */
    m->meta_str = l3c_calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof *m->meta_str);
    if (!m->meta_str) goto nomem;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const l3c_gguf_kv *kv = &g->kv[i];
        if (kv->type != L3C_GGUF_STRING || !kv->strs) continue;
        if (!(m->meta_str[i] = l3c_strndup(kv->strs[0].ptr, (size_t)kv->strs[0].len))) goto nomem;
    }

    const char *gname = l3c_model_meta_str(m, "general.name");
    if (!(m->name = l3c_strdup(gname ? gname : base_name(path)))) goto nomem;
    if (!(m->file_type = l3c_strdup(l3c_type_name(main_weight_type(g))))) goto nomem;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        m->n_params += g->tensors[i].n_elements;
        m->weight_bytes += g->tensors[i].nbytes;
    }

    if (l3c_gguf_find(g, "tokenizer.ggml.model")) {
        if ((st = l3c_tokenizer_from_gguf(g, &m->tok))) goto fail;
        int32_t nv = l3c_vocab_size(m->tok);
        if (nv > m->cfg.n_vocab) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: key 'tokenizer.ggml.tokens' has %d tokens but the "
                                          "model's vocabulary (token_embd.weight rows) is %d", path,
                          nv, m->cfg.n_vocab);
            goto fail;
        }
    }

    m->n_threads = p.n_threads > 0 ? p.n_threads : l3c_default_threads();
    if (m->n_threads < 1) m->n_threads = 1;
    double t_pack = l3c_time_s();
    /* pages of packed matrices are dropped only where they refault from a file: not the owned
     * (permuted) copies of a Hugging Face folder */
    if ((st = l3c_weights_pack(&m->w, &m->cfg, path, p.use_mmap && !m->hf, p.bf16_matmul, m->n_threads))) goto fail;
    l3c_shard_release_file(m->shard); /* a rank's file pages: what stays mapped is not its share */
    t_pack = l3c_time_s() - t_pack;

    if (p.verbose) {
        const l3c_config *c = &m->cfg;
        fprintf(stderr,
                "llama3c: loaded %s in %.2f s: %s, %d layers, n_embd %d, heads %d/%d, n_ff %d, "
                "vocab %d, ctx %d, %.1f M params, %.1f MiB (%s)%s\n",
                path, l3c_time_s() - t0, m->name, c->n_layer, c->n_embd, c->n_head, c->n_head_kv,
                c->n_ff, c->n_vocab, c->n_ctx_train, (double)m->n_params / 1e6,
                (double)m->weight_bytes / (1024.0 * 1024.0), m->file_type,
                m->w.tied_output ? ", tied output" : "");
        const l3c_shard *s = m->shard;
        if (s && s->split == L3C_SPLIT_TENSOR)
            fprintf(stderr, "llama3c: rank %d of %d (--split tensor): KV heads [%d, %d), FFN [%d, %d), "
                            "vocabulary [%d, %d); %.1f MiB of attn_output / ffn_down columns copied\n",
                    s->rank, s->size, s->kv0, s->kv1, s->ff0, s->ff1, s->vocab0, s->vocab1,
                    (double)s->arena_bytes / (1024.0 * 1024.0));
        if (s && s->split == L3C_SPLIT_LAYERS)
            fprintf(stderr, "llama3c: rank %d of %d (--split layers): layers [%d, %d), vocabulary [%d, %d)\n",
                    s->rank, s->size, s->layer0, s->layer1, s->vocab0, s->vocab1);
        if (m->w.pack_bytes)
            fprintf(stderr,
                    "llama3c: %.1f MiB of weights repacked for the %s kernels in %.2f s%s\n",
                    (double)m->w.pack_bytes / (1024.0 * 1024.0), l3c_kernels_path(), t_pack,
                    m->w.n_bf16 ? " (matrices as bf16: --bf16)" : "");
    }
    *out = m;
    return L3C_OK;
nomem:
    st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory while loading", path);
fail:
    l3c_model_free(m);
    return st;
}

void l3c_model_free(l3c_model *m) {
    if (!m) return;
    if (m->meta_str && m->gguf)
        for (uint64_t i = 0; i < m->gguf->n_kv; i++) free(m->meta_str[i]);
    free(m->meta_str);
    l3c_tokenizer_free(m->tok);
    l3c_weights_free(&m->w);
    l3c_shard_free(m->shard);
    l3c_gguf_close(m->gguf);
    l3c_hf_free(m->hf);
    free(m->file_buf);
    free(m->name);
    free(m->file_type);
    free(m->path);
    free(m);
}

void l3c_model_get_info(const l3c_model *m, l3c_model_info *info) {
    if (!info) return;
    memset(info, 0, sizeof *info);
    if (!m) return;
    const l3c_config *c = m->shard ? &m->shard->full : &m->cfg; /* the file's, not this rank's */
    info->name = m->name;
    info->arch = "llama";
    info->n_vocab = c->n_vocab;
    info->n_ctx_train = c->n_ctx_train;
    info->n_embd = c->n_embd;
    info->n_layer = c->n_layer;
    info->n_head = c->n_head;
    info->n_head_kv = c->n_head_kv;
    info->head_dim = c->head_dim;
    info->n_ff = c->n_ff;
    info->n_rot = c->n_rot;
    info->rope_theta = c->rope_theta;
    info->norm_eps = c->norm_eps;
    info->tied_output = m->w.tied_output;
    info->has_rope_freqs = m->w.rope_freqs != NULL;
    info->n_params = m->n_params;
    info->weight_bytes = m->weight_bytes;
    info->file_type = m->file_type;
    info->n_bf16_matmul = m->w.n_bf16;
}

int64_t l3c_model_n_tensors(const l3c_model *m) { return m ? (int64_t)m->gguf->n_tensors : 0; }

l3c_status l3c_model_tensor_desc(const l3c_model *m, int64_t i, l3c_tensor_desc *out) {
    if (!m || !out) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_model_tensor_desc: NULL argument");
    if (i < 0 || (uint64_t)i >= m->gguf->n_tensors) {
        memset(out, 0, sizeof *out);
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_model_tensor_desc: index %lld out of range [0, %llu)",
                        (long long)i, (unsigned long long)m->gguf->n_tensors);
    }
    const l3c_gguf_tensor *t = &m->gguf->tensors[i];
    out->name = t->name;
    out->type_name = l3c_type_name((int)t->type);
    out->n_dims = (int)t->n_dims;
    for (int d = 0; d < 4; d++) out->ne[d] = t->ne[d];
    out->n_elements = t->n_elements;
    out->nbytes = t->nbytes;
    return L3C_OK;
}

const char *l3c_model_meta_str(const l3c_model *m, const char *key) {
    if (!m || !key) return NULL;
    const l3c_gguf_kv *kv = l3c_gguf_find(m->gguf, key);
    if (!kv) return NULL;
    return m->meta_str[kv - m->gguf->kv];
}

const l3c_tokenizer *l3c_model_tokenizer(const l3c_model *m) { return m ? m->tok : NULL; }

size_t l3c_model_kv_bytes_per_pos(const l3c_model *m, int kv_type) {
    if (!m) return 0;
    return 2 * (size_t)(m->layer1 - m->layer0) * l3c_kv_row_bytes(&m->cfg, kv_type); /* held layers */
}
