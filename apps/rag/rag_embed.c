/*
 * rag_embed.c -- chunk and query vectors for the RAG index: the model's final-normed hidden
 * states, mean-pooled over BOS + the text and scaled to unit length (l3c embeddings context), and
 * the fingerprint that ties an index to the model file that made its vectors.
 *
 * Every text is decoded alone in sequence 0 (cleared after), so its vector does not depend on
 * what was embedded before: a resumed index build gives the same bytes as an uninterrupted one.
 */
#include "rag.h"

#include <dirent.h>
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

/* Adds one file to the fingerprint: its name in the folder and size (name NULL: a lone file, whose
 * size the caller hashed), first and last MiB. buf holds FP_PART bytes. */
enum { FP_PART = 1 << 20 };
static int fp_add_file(rag_sha256 *h, const char *path, const char *name, unsigned char *buf,
                       char *err) {
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        snprintf(err, RAG_ERR_CAP, "cannot read model '%s': %s", path, strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    if (name) { /* a folder's file */
        char desc[600];
        int dn = snprintf(desc, sizeof desc, "%s\n%lld\n", name, (long long)st.st_size);
        rag_sha256_update(h, desc, (size_t)(dn < (int)sizeof desc ? dn : (int)sizeof desc - 1));
    }
    size_t got = fread(buf, 1, FP_PART, f);
    rag_sha256_update(h, buf, got);
    int rc = 0;
    if (st.st_size > FP_PART) {
        off_t at = st.st_size > 2 * FP_PART ? st.st_size - FP_PART : FP_PART;
        if (fseeko(f, at, SEEK_SET) != 0) {
            snprintf(err, RAG_ERR_CAP, "cannot seek in model '%s': %s", path, strerror(errno));
            rc = -1;
        } else {
            got = fread(buf, 1, FP_PART, f);
            rag_sha256_update(h, buf, got);
        }
    }
    fclose(f);
    return rc;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int rag_model_fingerprint(const char *path, const l3c_model *model, char hex[65], char *err) {
    struct stat st;
    unsigned char *buf = malloc(FP_PART);
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;
    if (!buf) {
        snprintf(err, RAG_ERR_CAP, "out of memory");
        goto done;
    }
    if (stat(path, &st) != 0) {
        snprintf(err, RAG_ERR_CAP, "cannot read model '%s': %s", path, strerror(errno));
        goto done;
    }
    l3c_model_info mi;
    l3c_model_get_info(model, &mi);
    /* a file: the v1 description (indexes built before folders were hashed stay valid);
     * a folder: v2, without a size of its own */
    const int dir = S_ISDIR(st.st_mode);
    char desc[512], size[32] = "";
    if (!dir) snprintf(size, sizeof size, "%lld\n", (long long)st.st_size);
    int dn = snprintf(desc, sizeof desc, "llama3c-rag-model-%s\n%s%s\n%s\n%s\n%d %d %d %d\n",
                      dir ? "v2" : "v1", size, mi.name ? mi.name : "", mi.arch ? mi.arch : "",
                      mi.file_type ? mi.file_type : "", (int)mi.n_vocab, (int)mi.n_embd,
                      (int)mi.n_layer, (int)mi.n_ff);
    rag_sha256 h;
    rag_sha256_init(&h);
    rag_sha256_update(&h, desc, (size_t)dn);
    if (!dir) {
        if (fp_add_file(&h, path, NULL, buf, err)) goto done;
    } else {
        /* a Hugging Face folder: every regular file in it (config, tokenizer, each safetensors
         * shard) by name, size, first and last MiB, in name order */
        DIR *d = opendir(path);
        if (!d) {
            snprintf(err, RAG_ERR_CAP, "cannot open model folder '%s': %s", path, strerror(errno));
            goto done;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            if (n == cap) {
                size_t c = cap ? 2 * cap : 32;
                char **p = realloc(names, c * sizeof *p);
                if (!p) break;
                names = p, cap = c;
            }
            if (!(names[n] = strdup(de->d_name))) break;
            n++;
        }
        int oom = de != NULL;
        closedir(d);
        if (oom) {
            snprintf(err, RAG_ERR_CAP, "out of memory");
            goto done;
        }
        qsort(names, n, sizeof *names, cmp_name);
        for (size_t i = 0; i < n; i++) {
            char full[4096];
            struct stat fs;
            snprintf(full, sizeof full, "%s/%s", path, names[i]);
            if (stat(full, &fs) != 0 || !S_ISREG(fs.st_mode)) continue;
            if (fp_add_file(&h, full, names[i], buf, err)) goto done;
        }
    }
    rag_sha256_final(&h, hex);
    rc = 0;
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(buf);
    return rc;
}
