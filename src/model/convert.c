/*
 * convert.c -- l3c_convert: a Hugging Face Llama folder (model/hf.c) or a GGUF to a GGUF of
 * one file type, written like llama.cpp's tools write it:
 *  - metadata: every key of the source (for a folder, what convert_hf_to_gguf.py writes), with
 *    general.file_type set (and general.quantization_version 2 for quantized types);
 *  - 1-D tensors (norms, rope_freqs) stay F32; 2-D tensors get the file type's type:
 *    F32 / F16 / BF16 / Q8_0 as convert_hf_to_gguf.py --outtype (a Q8_0 row not a multiple of 32
 *    falls back to F16, as gguf-py does), and Q4_K_M as llama-quantize's llama_tensor_get_type:
 *    Q4_K, with Q6_K for output.weight (or the tied token_embd), for attn_v and ffn_down of the
 *    layers use_more_bits picks, and llama-quantize's fallbacks for rows that are not a multiple
 *    of 256 (Q4_K -> Q5_0, Q6_K -> Q8_0); Q4_0 (every 2-D tensor, rows not a multiple of 32 in
 *    F16; a quick low-bit copy, e.g. a draft model for speculative decoding);
 *  - data: each row to float (the type table's to_float), then the reference quantizer (ggml's
 *    quantize_row_*_ref; no importance matrix).
 * The output is written to a temporary file beside OUT and renamed when complete (io/outfile.h);
 * an OUT that is the input is refused.
 */
#include "io/gguf_write.h"
#include "io/outfile.h"
#include "kernels/ref.h"
#include "model/hf.h"
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef struct ftype_info {
    const char *name;
    uint32_t file_type; /* general.file_type (llama_ftype) */
    int type;           /* type of 2-D tensors (Q4_K_M: the default one) */
} ftype_info;

static const ftype_info FTYPES[] = {
    {"F32", 0, L3C_TYPE_F32},   {"F16", 1, L3C_TYPE_F16},      {"BF16", 32, L3C_TYPE_BF16},
    {"Q8_0", 7, L3C_TYPE_Q8_0}, {"Q4_K_M", 15, L3C_TYPE_Q4_K}, {"Q4_0", 2, L3C_TYPE_Q4_0},
};

/* llama.cpp's use_more_bits(i_layer, n_layers) */
static int use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static int layer_of(const char *name) {
    int l = -1;
    return sscanf(name, "blk.%d.", &l) == 1 ? l : -1;
}

static int tensor_type(const ftype_info *ft, const l3c_gguf_tensor *t, int n_layer,
                       int has_output) {
    if (t->n_dims < 2) return L3C_TYPE_F32;
    int type = ft->type;
    if (ft->file_type == 15) {
        const char *n = t->name;
        if (!strcmp(n, "output.weight") || (!has_output && !strcmp(n, "token_embd.weight")))
            type = L3C_TYPE_Q6_K;
        else if ((strstr(n, "attn_v.weight") || strstr(n, "ffn_down")) && layer_of(n) >= 0 &&
                 use_more_bits(layer_of(n), n_layer))
            type = L3C_TYPE_Q6_K;
        if (t->ne[0] % L3C_QK_K != 0) type = type == L3C_TYPE_Q6_K ? L3C_TYPE_Q8_0 : L3C_TYPE_Q5_0;
    }
    if (t->ne[0] % l3c_type_traits_ref(type)->block_size != 0) type = L3C_TYPE_F16;
    return type;
}

typedef void (*quant_fn)(const float *src, void *dst, int64_t n);

static quant_fn quantizer(int type) {
    switch (type) {
    case L3C_TYPE_F32:
        return l3c_ref_from_float_f32;
    case L3C_TYPE_F16:
        return l3c_ref_from_float_f16;
    case L3C_TYPE_BF16:
        return l3c_ref_from_float_bf16;
    case L3C_TYPE_Q8_0:
        return l3c_ref_from_float_q8_0;
    case L3C_TYPE_Q4_0:
        return l3c_ref_from_float_q4_0;
    case L3C_TYPE_Q5_0:
        return l3c_ref_from_float_q5_0;
    case L3C_TYPE_Q4_K:
        return l3c_quantize_row_q4_K;
    case L3C_TYPE_Q6_K:
        return l3c_quantize_row_q6_K;
    default:
        return NULL;
    }
}

l3c_status l3c_convert(const char *in, const char *out, const char *out_type,
                       l3c_convert_progress_fn progress, void *user) {
    if (!in || !out || !out_type)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_convert: NULL argument");
    const ftype_info *ft = NULL;
    for (size_t i = 0; i < sizeof FTYPES / sizeof FTYPES[0]; i++)
        if (!strcasecmp(out_type, FTYPES[i].name)) ft = &FTYPES[i];
    if (!ft)
        return l3c_fail(L3C_ERR_INVALID_ARG,
                        "convert: type '%s' is not one of F32, F16, BF16, Q8_0, Q4_K_M, Q4_0",
                        out_type);
    l3c_status st;
    l3c_hf *hf = NULL;
    l3c_gguf *g = NULL;
    l3c_gguf_writer w = {0};
    l3c_buf header = {0};
    l3c_outfile of = {0};
    FILE *f = NULL;
    float *row = NULL;
    void *qrow = NULL;
    int *types = NULL;
    if ((st = l3c_check_not_input(out, in, "convert"))) return st;
    if (l3c_path_is_dir(in))
        st = l3c_hf_open(in, &hf, &g);
    else
        st = l3c_gguf_open(in, &g);
    if (st) return st;
    l3c_config cfg;
    if ((st = l3c_config_from_gguf(g, &cfg))) goto done;

    for (uint64_t i = 0; i < g->n_kv; i++) {
        const l3c_gguf_kv *kv = &g->kv[i];
        if ((kv->key.len == 17 && !memcmp(kv->key.ptr, "general.file_type", 17)) ||
            (kv->key.len == 28 && !memcmp(kv->key.ptr, "general.quantization_version", 28)))
            continue;
        l3c_gguf_w_copy_kv(&w, kv);
    }
    l3c_gguf_w_u32(&w, "general.file_type", ft->file_type);
    if (ft->file_type != 0 && ft->file_type != 1 && ft->file_type != 32)
        l3c_gguf_w_u32(&w, "general.quantization_version", 2);
    types = l3c_calloc(g->n_tensors ? g->n_tensors : 1, sizeof *types);
    if (!types) goto nomem;
    const int has_output = l3c_gguf_find_tensor(g, "output.weight") != NULL;
    int64_t max_row = 1;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        types[i] = tensor_type(ft, t, cfg.n_layer, has_output);
        if (!l3c_type_traits_ref((int)t->type)->to_float) {
            st = l3c_fail(L3C_ERR_UNSUPPORTED, "convert: %s: tensor '%s' of type %s cannot be read",
                          in, t->name, l3c_type_name((int)t->type));
            goto done;
        }
        max_row = L3C_MAX(max_row, t->ne[0]);
        l3c_gguf_w_tensor(&w, t->name, types[i], (int)t->n_dims, t->ne);
    }
    if ((st = l3c_gguf_w_finish(&w, &header))) goto done;

    if ((st = l3c_outfile_open(&of, out, &in, 1, "convert"))) goto done;
    f = of.f;
    row = l3c_malloc((size_t)max_row * sizeof(float));
    qrow = l3c_malloc((size_t)max_row * sizeof(float)); /* any output row is <= 4 bytes / element */
    if (!row || !qrow) goto nomem;
    if (fwrite(header.data, 1, header.len, f) != header.len) goto io_err;
    uint64_t pos = 0;
    static const char zeros[L3C_GGUF_W_ALIGN];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        const l3c_type_traits *src = l3c_type_traits_ref((int)t->type);
        quant_fn q = quantizer(types[i]);
        size_t in_row, out_row;
        l3c_row_size((int)t->type, t->ne[0], &in_row);
        l3c_row_size(types[i], t->ne[0], &out_row);
        const int64_t rows = t->n_elements / t->ne[0];
        for (int64_t r = 0; r < rows; r++) {
            src->to_float((const uint8_t *)t->data + (size_t)r * in_row, row, t->ne[0]);
            q(row, qrow, t->ne[0]);
            if (fwrite(qrow, 1, out_row, f) != out_row) goto io_err;
        }
        pos += (uint64_t)rows * out_row;
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
    st = l3c_fail(L3C_ERR_IO, "convert: writing %s failed: %s", of.tmp, strerror(errno));
    goto done;
nomem:
    st = l3c_fail(L3C_ERR_NOMEM, "convert: out of memory");
done:
    l3c_outfile_abort(&of); /* nothing after a commit */
    free(row);
    free(qrow);
    free(types);
    l3c_buf_free(&header);
    l3c_gguf_w_free(&w);
    l3c_gguf_close(g);
    l3c_hf_free(hf);
    return st;
}
