/*
 * rag_embed.c -- chunk and query vectors for the RAG index: the model's final-normed hidden
 * states, mean-pooled over BOS + the text and scaled to unit length (l3c embeddings context), and
 * the fingerprint that ties an index to the model file that made its vectors.
 *
 * Every text is decoded alone in sequence 0 (cleared after), so its vector does not depend on
 * what was embedded before: a resumed index build gives the same bytes as an uninterrupted one.
 */
#include "rag.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int rag_embedder_init(rag_embedder *e, const l3c_model *model, int32_t n_ctx, int n_threads,
                      char *err) {
    memset(e, 0, sizeof *e);
    l3c_model_info mi;
    l3c_model_get_info(model, &mi);
    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_seq = 1;
    cp.n_batch = n_ctx;
    cp.n_threads = n_threads;
    cp.embeddings = 1;
    cp.pooling = L3C_POOLING_MEAN;
    cp.embd_normalize = 1;
    if (l3c_context_create(model, &cp, &e->ctx) != L3C_OK) {
        snprintf(err, RAG_ERR_CAP, "cannot create an embeddings context: %s", l3c_last_error());
        return -1;
    }
    e->model = model;
    e->tok = l3c_model_tokenizer(model);
    e->n_embd = mi.n_embd;
    e->n_ctx = l3c_context_n_ctx(e->ctx);
    e->ids = malloc((size_t)e->n_ctx * sizeof *e->ids);
    if (!e->ids) {
        rag_embedder_free(e);
        snprintf(err, RAG_ERR_CAP, "out of memory");
        return -1;
    }
    return 0;
}

void rag_embedder_free(rag_embedder *e) {
    l3c_context_free(e->ctx);
    free(e->ids);
    memset(e, 0, sizeof *e);
}

int rag_embed(rag_embedder *e, const char *text, size_t len, float *out, int *truncated,
              char *err) {
    int64_t n = l3c_tokenize(e->tok, text, len, e->ids, e->n_ctx, L3C_TOKENIZE_ADD_BOS);
    int cut = 0;
    if (n < 0) { /* longer than the context: keep the first n_ctx tokens */
        int64_t need = -n;
        int32_t *all = malloc((size_t)need * sizeof *all);
        if (!all) {
            snprintf(err, RAG_ERR_CAP, "out of memory");
            return -1;
        }
        l3c_tokenize(e->tok, text, len, all, need, L3C_TOKENIZE_ADD_BOS);
        memcpy(e->ids, all, (size_t)e->n_ctx * sizeof *all);
        free(all);
        n = e->n_ctx, cut = 1;
    }
    if (truncated) *truncated = cut;
    if (n == 0) { /* no BOS and no text: the zero vector matches nothing */
        memset(out, 0, (size_t)e->n_embd * sizeof *out);
        return 0;
    }
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    if (!pos) {
        snprintf(err, RAG_ERR_CAP, "out of memory");
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        pos[i] = (int32_t)i;
    l3c_kv_seq_truncate(e->ctx, 0, 0);
    l3c_batch b = {(int32_t)n, e->ids, pos, NULL, NULL};
    l3c_status st = l3c_decode(e->ctx, &b);
    free(pos);
    const float *v = st == L3C_OK ? l3c_get_embeddings_seq(e->ctx, 0) : NULL;
    if (!v) {
        snprintf(err, RAG_ERR_CAP, "embedding failed: %s", l3c_last_error());
        l3c_kv_seq_truncate(e->ctx, 0, 0);
        return -1;
    }
    memcpy(out, v, (size_t)e->n_embd * sizeof *out);
    l3c_kv_seq_truncate(e->ctx, 0, 0);
    return 0;
}

int rag_model_fingerprint(const char *path, const l3c_model *model, char hex[65], char *err) {
    enum { PART = 1 << 20 };
    FILE *f = fopen(path, "rb");
    struct stat st;
    unsigned char *buf = malloc(PART);
    int rc = -1;
    if (!buf) {
        snprintf(err, RAG_ERR_CAP, "out of memory");
        goto done;
    }
    if (!f || fstat(fileno(f), &st) != 0) {
        snprintf(err, RAG_ERR_CAP, "cannot read model '%s': %s", path, strerror(errno));
        goto done;
    }
    l3c_model_info mi;
    l3c_model_get_info(model, &mi);
    char desc[512];
    int dn = snprintf(desc, sizeof desc, "llama3c-rag-model-v1\n%lld\n%s\n%s\n%s\n%d %d %d %d\n",
                      (long long)st.st_size, mi.name ? mi.name : "", mi.arch ? mi.arch : "",
                      mi.file_type ? mi.file_type : "", (int)mi.n_vocab, (int)mi.n_embd,
                      (int)mi.n_layer, (int)mi.n_ff);
    rag_sha256 h;
    rag_sha256_init(&h);
    rag_sha256_update(&h, desc, (size_t)dn);
    size_t got = fread(buf, 1, PART, f);
    rag_sha256_update(&h, buf, got);
    if (st.st_size > PART) {
        off_t at = st.st_size > 2 * PART ? st.st_size - PART : PART;
        if (fseeko(f, at, SEEK_SET) != 0) {
            snprintf(err, RAG_ERR_CAP, "cannot seek in model '%s': %s", path, strerror(errno));
            goto done;
        }
        got = fread(buf, 1, PART, f);
        rag_sha256_update(&h, buf, got);
    }
    rag_sha256_final(&h, hex);
    rc = 0;
done:
    if (f) fclose(f);
    free(buf);
    return rc;
}
