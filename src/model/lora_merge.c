/*
 * lora_merge.c -- l3c_adapter_merge: a base model (GGUF or Hugging Face folder) plus LoRA
 * adapters written as one GGUF whose adapted matrices are W + sum_k scale_k * (alpha_k / rank)
 * B_k A_k.
 *
 * Every metadata key and every other tensor is copied byte for byte. An adapted matrix is
 * converted to float row by row (the type table's to_float), the deltas are added (summed in
 * double per row), and the row is quantized again to the output type: the base matrix's own type
 * ("same") where llama3c has a quantizer for it (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q4_K, Q6_K), else F16; or the type asked for (F32, F16, BF16, Q8_0, ... with rows a multiple of
 * its block, else F16). Written to a temporary file beside OUT and renamed when
 * complete (io/outfile.h); an OUT that is the base or an adapter is refused.
 */
#include "io/gguf_write.h"
#include "io/outfile.h"
#include "kernels/ref.h"
#include "model/hf.h"
#include "model/lora.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

typedef void (*quant_fn)(const float *src, void *dst, int64_t n);

static quant_fn quantizer(int type) {
    if (type == L3C_TYPE_Q4_K) return l3c_quantize_row_q4_K;
    if (type == L3C_TYPE_Q6_K) return l3c_quantize_row_q6_K;
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    return tr->vec_dot ? tr->from_float : NULL; /* weight types only (not Q8_1 / Q8_K) */
}

/* "blk.N.<target>.weight" -> layer and target; -1 for other tensors */
static int adapted_target(const char *name, int n_layer, int *layer) {
    int l = -1, n = 0;
    char rest[64];
    if (sscanf(name, "blk.%d.%63s%n", &l, rest, &n) != 2 || l < 0 || l >= n_layer || name[n])
        return -1;
    for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
        char want[64];
        snprintf(want, sizeof want, "%s.weight", l3c_lora_target_gguf_name((l3c_lora_target)t));
        if (!strcmp(rest, want)) {
            *layer = l;
            return t;
        }
    }
    return -1;
}

l3c_status l3c_adapter_merge(const char *base_path, int n_adapters,
                             const char *const *adapter_paths, const float *scales,
                             const char *out_path, const char *out_type,
                             l3c_convert_progress_fn progress, void *user) {
    if (!base_path || !out_path || n_adapters < 1 || !adapter_paths || !scales)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "merge: needs a base model, at least one adapter and an output");
    int want = -1; /* -1: each matrix's own type */
    if (out_type && strcasecmp(out_type, "same") != 0) {
        for (int t = 0; t < L3C_TYPE_COUNT && want < 0; t++)
            if (l3c_type_traits_ref(t)->name && !strcasecmp(out_type, l3c_type_name(t)) &&
                quantizer(t))
                want = t;
        if (want < 0)
            return l3c_fail(L3C_ERR_INVALID_ARG,
                            "merge: type '%s' is not one of same, F32, F16, BF16, Q8_0, Q4_0, "
                            "Q4_1, Q5_0, Q5_1, Q4_K, Q6_K",
                            out_type);
    }
    l3c_status st;
    l3c_hf *hf = NULL;
    l3c_gguf *g = NULL;
    l3c_lora_adapter **ads = NULL;
    l3c_gguf_writer w = {0};
    l3c_buf header = {0};
    l3c_outfile of = {0};
    FILE *f = NULL;
    float *mat = NULL;
    double *acc = NULL;
    void *qrow = NULL;
    int *types = NULL, *targets = NULL, *layers = NULL;
    if ((st = l3c_check_not_input(out_path, base_path, "merge"))) return st;
    for (int k = 0; k < n_adapters; k++)
        if ((st = l3c_check_not_input(out_path, adapter_paths[k], "merge"))) return st;
    if (l3c_path_is_dir(base_path))
        st = l3c_hf_open(base_path, &hf, &g);
    else
        st = l3c_gguf_open(base_path, &g);
    if (st) return st;
    l3c_config cfg;
    if ((st = l3c_config_from_gguf(g, &cfg))) goto done;
    if (!(ads = l3c_calloc((size_t)n_adapters, sizeof *ads))) goto nomem;
    for (int k = 0; k < n_adapters; k++)
        if ((st = l3c_lora_load(adapter_paths[k], &cfg, &ads[k]))) goto done;

    for (uint64_t i = 0; i < g->n_kv; i++)
        l3c_gguf_w_copy_kv(&w, &g->kv[i]);
    const size_t nt = g->n_tensors ? g->n_tensors : 1;
    types = l3c_calloc(nt, sizeof *types);
    targets = l3c_calloc(nt, sizeof *targets);
    layers = l3c_calloc(nt, sizeof *layers);
    if (!types || !targets || !layers) goto nomem;
    int64_t max_row = 1;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        types[i] = (int)t->type;
        targets[i] = t->n_dims == 2 ? adapted_target(t->name, cfg.n_layer, &layers[i]) : -1;
        int used = 0;
        for (int k = 0; k < n_adapters && targets[i] >= 0; k++)
            used |= l3c_lora_get(ads[k], layers[i], (l3c_lora_target)targets[i]) != NULL;
        if (!used) targets[i] = -1;
        if (targets[i] >= 0) {
            if (!l3c_type_traits_ref((int)t->type)->to_float) {
                st = l3c_fail(L3C_ERR_UNSUPPORTED,
                              "merge: %s: tensor '%s' of type %s cannot be read", base_path,
                              t->name, l3c_type_name((int)t->type));
                goto done;
            }
            int ty = want >= 0 ? want : (int)t->type;
            if (!quantizer(ty) || t->ne[0] % l3c_type_traits_ref(ty)->block_size) ty = L3C_TYPE_F16;
            types[i] = ty;
            max_row = L3C_MAX(max_row, t->ne[0]);
        }
        l3c_gguf_w_tensor(&w, t->name, types[i], (int)t->n_dims, t->ne);
    }
    if ((st = l3c_gguf_w_finish(&w, &header))) goto done;

    if ((st = l3c_outfile_open(&of, out_path, &base_path, 1, "merge"))) goto done;
    f = of.f;
    mat = l3c_malloc((size_t)max_row * sizeof(float));
    acc = l3c_malloc((size_t)max_row * sizeof(double));
    qrow = l3c_malloc((size_t)max_row * sizeof(float)); /* any output row is <= 4 bytes / element */
    if (!mat || !acc || !qrow) goto nomem;
    if (fwrite(header.data, 1, header.len, f) != header.len) goto io_err;
    uint64_t pos = 0;
    static const char zeros[L3C_GGUF_W_ALIGN];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        size_t bytes = t->nbytes;
        if (targets[i] < 0) {
            if (fwrite(t->data, 1, t->nbytes, f) != t->nbytes) goto io_err;
        } else {
            const l3c_type_traits *src = l3c_type_traits_ref((int)t->type);
            const int64_t n_in = t->ne[0], n_out = t->ne[1];
            size_t in_row, out_row;
            l3c_row_size((int)t->type, n_in, &in_row);
            l3c_row_size(types[i], n_in, &out_row);
            quant_fn q = quantizer(types[i]);
            for (int64_t o = 0; o < n_out; o++) {
                float *row = mat;
                src->to_float((const uint8_t *)t->data + (size_t)o * in_row, row, n_in);
                for (int64_t c = 0; c < n_in; c++)
                    acc[c] = 0.0;
                for (int k = 0; k < n_adapters; k++) {
                    const l3c_lora_mat *m =
                        l3c_lora_get(ads[k], layers[i], (l3c_lora_target)targets[i]);
                    if (!m) continue;
                    const double s = (double)scales[k] * l3c_lora_mat_scale(ads[k], m);
                    for (int32_t r = 0; r < m->rank; r++) {
                        const double b = s * m->b[o * m->rank + r];
                        const float *a = m->a + (int64_t)r * n_in;
                        for (int64_t c = 0; c < n_in; c++)
                            acc[c] += b * a[c];
                    }
                }
                for (int64_t c = 0; c < n_in; c++)
                    row[c] = (float)(row[c] + acc[c]);
                q(row, qrow, n_in);
                if (fwrite(qrow, 1, out_row, f) != out_row) goto io_err;
            }
            bytes = (size_t)n_out * out_row;
        }
        pos += bytes;
        size_t pad = (size_t)((L3C_GGUF_W_ALIGN - pos % L3C_GGUF_W_ALIGN) % L3C_GGUF_W_ALIGN);
        if (i + 1 < g->n_tensors && pad) {
            if (fwrite(zeros, 1, pad, f) != pad) goto io_err;
            pos += pad;
        }
        if (progress)
            progress((int64_t)i + 1, (int64_t)g->n_tensors, t->name, l3c_type_name(types[i]), user);
    }
    st = l3c_outfile_commit(&of);
    goto done;
io_err:
    st = l3c_fail(L3C_ERR_IO, "merge: writing %s failed: %s", of.tmp, strerror(errno));
    goto done;
nomem:
    st = l3c_fail(L3C_ERR_NOMEM, "merge: out of memory");
done:
    l3c_outfile_abort(&of); /* nothing after a commit */
    free(mat);
    free(acc);
    free(qrow);
    free(types);
    free(targets);
    free(layers);
    for (int k = 0; ads && k < n_adapters; k++)
        l3c_lora_free(ads[k]);
    free(ads);
    l3c_buf_free(&header);
    l3c_gguf_w_free(&w);
    l3c_gguf_close(g);
    l3c_hf_free(hf);
    return st;
}
