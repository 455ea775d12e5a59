/*
 * lora_io.c -- LoRA adapter files (lora.h): GGUF LoRA files (llama.cpp's layout) and PEFT
 * folders, loaded into and written from an l3c_lora_adapter.
 *
 * Loading collects every A / B tensor into a (layer, target) table first, checks all of them
 * against the model's config, then allocates one arena in l3c_lora_create's order (layer,
 * target, A then B; absent matrices take no space) and converts each tensor to fp32 with the
 * type table's to_float. PEFT's B rows of q_proj / k_proj are permuted into GGUF order with
 * the same permutation the Hugging Face loader applies to the weights (hf.c); saving a PEFT
 * folder applies the inverse. Writers go to a temporary file and rename it when complete
 * (io/outfile.h).
 */
#include "model/lora.h"

#include "io/gguf_write.h"
#include "io/outfile.h"
#include "io/safetensors.h"
#include "model/hf.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_RANK 65536

/* A tensor of the file, before conversion: its bytes, type, and element count per row. */
typedef struct src_mat {
    const void *data;
    int type; /* l3c_type */
    int64_t rows, cols;
    const char *name;
} src_mat;

/* n_in / n_out of target t's base matrix */
static void target_shape(const l3c_config *cfg, int t, int64_t *n_in, int64_t *n_out) {
    int64_t d = cfg->n_embd, q = (int64_t)cfg->n_head * cfg->head_dim;
    int64_t kv = (int64_t)cfg->n_head_kv * cfg->head_dim, f = cfg->n_ff;
    switch (t) {
    case L3C_LORA_Q:
        *n_in = d, *n_out = q;
        break;
    case L3C_LORA_K:
    case L3C_LORA_V:
        *n_in = d, *n_out = kv;
        break;
    case L3C_LORA_O:
        *n_in = q, *n_out = d;
        break;
    case L3C_LORA_GATE:
    case L3C_LORA_UP:
        *n_in = d, *n_out = f;
        break;
    default:
        *n_in = f, *n_out = d;
        break;
    }
}

/* Rows of B permuted for RoPE: n_head for q, n_head_kv for k, else 0. */
static int64_t permute_heads(const l3c_config *cfg, int t) {
    return t == L3C_LORA_Q ? cfg->n_head : t == L3C_LORA_K ? cfg->n_head_kv : 0;
}

/* An adapter with ranks[l * N + t] (0: absent), laid out as l3c_lora_create does. */
static l3c_status lora_alloc(const l3c_config *cfg, const int32_t *ranks, float alpha,
                             l3c_lora_adapter **out) {
    *out = NULL;
    const size_t n_mats = (size_t)cfg->n_layer * L3C_LORA_N_TARGETS;
    size_t n = 0;
    l3c_lora_adapter *a = l3c_calloc(1, sizeof *a);
    if (!a || !(a->mats = l3c_calloc(n_mats, sizeof *a->mats))) goto nomem;
    a->n_layer = cfg->n_layer;
    a->alpha = alpha;
    for (size_t i = 0; i < n_mats; i++) {
        if (!ranks[i]) continue;
        int64_t n_in, n_out;
        target_shape(cfg, (int)(i % L3C_LORA_N_TARGETS), &n_in, &n_out);
        n += (size_t)ranks[i] *
             (size_t)(n_in + n_out); /* ranks <= MAX_RANK: no overflow on 64 bits */
        a->rank = L3C_MAX(a->rank, ranks[i]);
        a->targets |= 1u << (i % L3C_LORA_N_TARGETS);
    }
    if (!(a->arena = l3c_malloc((n ? n : 1) * sizeof(float)))) goto nomem;
    a->n_floats = n;
    size_t off = 0;
    for (size_t i = 0; i < n_mats; i++) {
        if (!ranks[i]) continue;
        l3c_lora_mat *m = &a->mats[i];
        target_shape(cfg, (int)(i % L3C_LORA_N_TARGETS), &m->n_in, &m->n_out);
        m->rank = ranks[i];
        m->a = a->arena + off;
        off += (size_t)m->rank * (size_t)m->n_in;
        m->b = a->arena + off;
        off += (size_t)m->rank * (size_t)m->n_out;
    }
    *out = a;
    return L3C_OK;
nomem:
    l3c_lora_free(a);
    return l3c_fail(L3C_ERR_NOMEM, "out of memory (LoRA adapter, %zu floats)", n);
}

/* rows x cols elements of type at src -> dst floats (row by row, through an aligned copy: file
 * data need not be aligned to its element size). */
static l3c_status to_float(const char *file, const src_mat *s, float *dst) {
    const l3c_type_traits *tr = l3c_type_traits_ref(s->type);
    size_t row_bytes;
    if (!tr->to_float || !l3c_row_size(s->type, s->cols, &row_bytes))
        return l3c_fail(L3C_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has type %s, which cannot be read as float "
                        "(rows of %lld)",
                        file, s->name, l3c_type_name(s->type), (long long)s->cols);
    void *row = l3c_malloc(row_bytes ? row_bytes : 1);
    if (!row) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", file);
    for (int64_t r = 0; r < s->rows; r++) {
        memcpy(row, (const uint8_t *)s->data + (size_t)r * row_bytes, row_bytes);
        tr->to_float(row, dst + r * s->cols, s->cols);
    }
    free(row);
    return L3C_OK;
}

/* The matrices found in a file: per (layer, target) A and B (data NULL when absent). Checks them
 * against cfg, allocates the adapter and converts; PEFT B rows of q / k are permuted. */
static l3c_status build(const char *file, const l3c_config *cfg, const src_mat (*mats)[2],
                        float alpha, int32_t want_rank, int peft, l3c_lora_adapter **out) {
    const size_t n_mats = (size_t)cfg->n_layer * L3C_LORA_N_TARGETS;
    l3c_status st = L3C_OK;
    l3c_lora_adapter *a = NULL;
    float *tmp = NULL;
    int32_t *ranks = l3c_calloc(n_mats, sizeof *ranks);
    if (!ranks) return l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", file);
    size_t n_found = 0;
    for (size_t i = 0; i < n_mats; i++) {
        const src_mat *A = &mats[i][0], *B = &mats[i][1];
        if (!A->data && !B->data) continue;
        const int l = (int)(i / L3C_LORA_N_TARGETS), t = (int)(i % L3C_LORA_N_TARGETS);
        const char *tn = peft ? l3c_lora_target_peft_name(t) : l3c_lora_target_gguf_name(t);
        if (!A->data || !B->data) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: layer %d %s: tensor '%s' has no matching %s", file,
                          l, tn, A->data ? A->name : B->name,
                          A->data ? (peft ? "lora_B" : "lora_b") : (peft ? "lora_A" : "lora_a"));
            goto done;
        }
        int64_t n_in, n_out;
        target_shape(cfg, t, &n_in, &n_out);
        /* A [rank x n_in], B [n_out x rank] as row-major matrices */
        if (A->cols != n_in || B->rows != n_out) {
            st = l3c_fail(
                L3C_ERR_FORMAT,
                "%s: layer %d %s: lora A is [%lld x %lld] and B [%lld x %lld], but "
                "the model's matrix is %lld -> %lld (A must be [rank x %lld], B [%lld x rank]): an "
                "adapter for another model?",
                file, l, tn, (long long)A->rows, (long long)A->cols, (long long)B->rows,
                (long long)B->cols, (long long)n_in, (long long)n_out, (long long)n_in,
                (long long)n_out);
            goto done;
        }
        if (A->rows != B->cols || A->rows < 1 || A->rows > MAX_RANK) {
            st = l3c_fail(L3C_ERR_FORMAT,
                          "%s: layer %d %s: rank of A (%lld) and B (%lld) differ or are out of "
                          "range [1, %d]",
                          file, l, tn, (long long)A->rows, (long long)B->cols, MAX_RANK);
            goto done;
        }
        if (want_rank && A->rows != want_rank) {
            st = l3c_fail(L3C_ERR_FORMAT,
                          "%s: layer %d %s: tensor '%s' has rank %lld, but adapter_config.json "
                          "says r = %d",
                          file, l, tn, A->name, (long long)A->rows, (int)want_rank);
            goto done;
        }
        ranks[i] = (int32_t)A->rows;
        n_found++;
    }
    if (!n_found) {
        st = l3c_fail(L3C_ERR_FORMAT,
                      "%s: no LoRA matrices (lora_a / lora_b tensors of attn_q .. ffn_down)", file);
        goto done;
    }
    if ((st = lora_alloc(cfg, ranks, alpha, &a))) goto done;
    for (size_t i = 0; i < n_mats && !st; i++) {
        l3c_lora_mat *m = &a->mats[i];
        if (!m->a) continue;
        if ((st = to_float(file, &mats[i][0], m->a))) break;
        if ((st = to_float(file, &mats[i][1], m->b))) break;
        int64_t heads = permute_heads(cfg, (int)(i % L3C_LORA_N_TARGETS));
        if (peft && heads) {
            size_t nb = (size_t)m->n_out * (size_t)m->rank * sizeof(float);
            float *t2 = l3c_realloc(tmp, nb);
            if (!t2) {
                st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", file);
                break;
            }
            tmp = t2;
            memcpy(tmp, m->b, nb);
            l3c_hf_permute_rows(tmp, m->b, m->n_out, (size_t)m->rank * sizeof(float), heads, 0);
        }
    }
done:
    free(ranks);
    free(tmp);
    if (st)
        l3c_lora_free(a);
    else
        *out = a;
    return st;
}

/* ---------------------------------------------------------------- GGUF LoRA */

/* "blk.N.<target>.weight.lora_a|b" -> layer, target, which (0 a, 1 b); 0 ok, -1 other name */
/* The error for a tensor name parse_*_name refused (r -2: layer out of range, else not a
 * LoRA matrix of the expected pattern). */
static l3c_status bad_name(const char *path, const char *name, int r, int n_layer,
                           const char *pattern) {
    if (r == -2)
        return l3c_fail(L3C_ERR_FORMAT,
                        "%s: tensor '%s': layer out of range (the model has %d layers): an "
                        "adapter for another model?",
                        path, name, n_layer);
    return l3c_fail(L3C_ERR_UNSUPPORTED,
                    "%s: tensor '%s' is not a LoRA matrix llama3c applies (%s)", path, name,
                    pattern);
}

/* p = "N.<target name><suffix a | b>" -> layer, target, which (0: A, 1: B); -1 not such a name,
 * -2 a layer >= n_layer. names: the GGUF or PEFT spelling of the targets. */
static int parse_layer_target(const char *p, int n_layer, const char *(*names)(l3c_lora_target),
                              const char *suffix_a, const char *suffix_b, int *layer, int *target,
                              int *which) {
    long l = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9') {
        l = l * 10 + (*p++ - '0');
        if (l > 1 << 20) return -1;
    }
    if (*p++ != '.') return -1;
    for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
        const char *tn = names((l3c_lora_target)t);
        size_t n = strlen(tn);
        if (strncmp(p, tn, n) != 0) continue;
        const char *r = p + n;
        const int b = !strcmp(r, suffix_b);
        if (b || !strcmp(r, suffix_a)) {
            *layer = (int)l;
            *target = t;
            *which = b;
            return l < n_layer ? 0 : -2;
        }
    }
    return -1;
}

static int parse_gguf_name(const char *name, int n_layer, int *layer, int *target, int *which) {
    if (strncmp(name, "blk.", 4) != 0) return -1;
    return parse_layer_target(name + 4, n_layer, l3c_lora_target_gguf_name, ".weight.lora_a",
                              ".weight.lora_b", layer, target, which);
}

static int str_is(l3c_str s, const char *want) {
    return s.len == strlen(want) && !memcmp(s.ptr, want, s.len);
}

/* The adapter in an open GGUF reader g (path: for messages); g stays open. */
static l3c_status load_gguf(const l3c_gguf *g, const char *path, const l3c_config *cfg,
                            l3c_lora_adapter **out) {
    src_mat(*mats)[2] = NULL;
    l3c_status st;
    l3c_str s = {0};
    if ((st = l3c_gguf_get_str(g, "general.type", 1, &s))) goto done;
    if (!str_is(s, "adapter")) {
        st = l3c_fail(L3C_ERR_FORMAT,
                      "%s: not a LoRA adapter: general.type is '%.*s', not 'adapter'", path,
                      s.ptr ? (int)L3C_MIN(s.len, 64) : 9, s.ptr ? s.ptr : "(missing)");
        goto done;
    }
    s = (l3c_str){0};
    if ((st = l3c_gguf_get_str(g, "adapter.type", 1, &s))) goto done;
    if (!str_is(s, "lora")) {
        st = l3c_fail(L3C_ERR_UNSUPPORTED,
                      "%s: adapter.type is '%.*s'; only 'lora' adapters are supported", path,
                      s.ptr ? (int)L3C_MIN(s.len, 64) : 9, s.ptr ? s.ptr : "(missing)");
        goto done;
    }
    s = (l3c_str){0};
    if ((st = l3c_gguf_get_str(g, "general.architecture", 1, &s))) goto done;
    if (s.ptr && !str_is(s, "llama")) {
        st = l3c_fail(L3C_ERR_UNSUPPORTED,
                      "%s: general.architecture is '%.*s'; the adapter is for another "
                      "architecture than llama",
                      path, (int)L3C_MIN(s.len, 64), s.ptr);
        goto done;
    }
    float alpha = 0.0f;
    if ((st = l3c_gguf_get_f32(g, "adapter.lora.alpha", 1, &alpha))) goto done;
    if (!isfinite(alpha)) {
        st = l3c_fail(L3C_ERR_FORMAT, "%s: adapter.lora.alpha is not finite", path);
        goto done;
    }
    mats = l3c_calloc((size_t)cfg->n_layer * L3C_LORA_N_TARGETS, sizeof *mats);
    if (!mats) {
        st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const l3c_gguf_tensor *t = &g->tensors[i];
        int l, tg, which;
        int r = parse_gguf_name(t->name, cfg->n_layer, &l, &tg, &which);
        if (r < 0) {
            st = bad_name(path, t->name, r, cfg->n_layer,
                          "blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}."
                          "weight.lora_a/b");
            goto done;
        }
        if (t->n_dims != 2) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: tensor '%s' has %u dimensions, expected 2", path,
                          t->name, t->n_dims);
            goto done;
        }
        /* ne [n_in, rank] (A) / [rank, n_out] (B): row-major [ne1 x ne0] */
        src_mat *m = &mats[(size_t)l * L3C_LORA_N_TARGETS + tg][which];
        if (m->data) {
            st = l3c_fail(L3C_ERR_FORMAT, "%s: tensors '%s' and '%s' are the same matrix", path,
                          m->name, t->name);
            goto done;
        }
        *m = (src_mat){.data = t->data,
                       .type = (int)t->type,
                       .rows = t->ne[1],
                       .cols = t->ne[0],
                       .name = t->name};
    }
    st = build(path, cfg, (const src_mat(*)[2])mats, alpha, 0, 0, out);
done:
    free(mats);
    return st;
}

l3c_status l3c_lora_load_gguf_memory(const void *buf, size_t size, const char *name,
                                     const l3c_config *cfg, l3c_lora_adapter **out) {
    l3c_gguf *g = NULL;
    *out = NULL;
    l3c_status st = l3c_gguf_open_memory(buf, size, name, &g);
    if (!st) st = load_gguf(g, name, cfg, out);
    l3c_gguf_close(g);
    return st;
}

/* ---------------------------------------------------------------- PEFT folder */

/* "[base_model.model.]model.layers.N.<peft name>.lora_A|B.weight" -> layer, target, which */
static int parse_peft_name(const char *name, int n_layer, int *layer, int *target, int *which) {
    const char *p = name;
    if (!strncmp(p, "base_model.model.", 17)) p += 17;
    if (strncmp(p, "model.layers.", 13) != 0) return -1;
    return parse_layer_target(p + 13, n_layer, l3c_lora_target_peft_name, ".lora_A.weight",
                              ".lora_B.weight", layer, target, which);
}

static int json_falsy(json_t *v) {
    return !v || json_is_null(v) || json_is_false(v);
}
static int json_empty(json_t *v) {
    return json_falsy(v) || (json_is_object(v) && !json_object_size(v)) ||
           (json_is_array(v) && !json_array_size(v));
}

static l3c_status load_peft(const char *dir, const l3c_config *cfg, l3c_lora_adapter **out) {
    json_t *c = NULL;
    l3c_safetensors *sf = NULL;
    src_mat(*mats)[2] = NULL;
    char f[4096], sp[4096];
    snprintf(f, sizeof f, "%s/adapter_config.json", dir);
    snprintf(sp, sizeof sp, "%s/adapter_model.safetensors", dir);
    l3c_status st = l3c_hf_load_json(dir, "adapter_config.json", 0, (void **)&c);
    if (st) return st;
    const char *pt = json_string_value(json_object_get(c, "peft_type"));
    if (!pt || strcmp(pt, "LORA") != 0) {
        st =
            l3c_fail(L3C_ERR_UNSUPPORTED, "%s: peft_type is '%s'; only LORA adapters are supported",
                     f, pt ? pt : "(missing)");
        goto done;
    }
    static const char *const refused[][2] = {
        {"use_dora", "DoRA (use_dora) adapters are not supported"},
        {"fan_in_fan_out", "fan_in_fan_out (Conv1D-style weights) is not supported"},
        {"modules_to_save", "modules_to_save (fully trained extra modules) is not supported"},
        {"alpha_pattern", "alpha_pattern (per-module alphas) is not supported"},
        {"lora_bias", "lora_bias is not supported"},
        {"layer_replication", "layer_replication is not supported"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (!json_empty(json_object_get(c, refused[i][0]))) {
            st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: %s", f, refused[i][1]);
            goto done;
        }
    const char *bias = json_string_value(json_object_get(c, "bias"));
    if (bias && strcmp(bias, "none") != 0) {
        st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: bias '%s' is not supported (only 'none')", f, bias);
        goto done;
    }
    json_t *r = json_object_get(c, "r"), *la = json_object_get(c, "lora_alpha");
    if (!json_is_integer(r) || json_integer_value(r) < 1 || json_integer_value(r) > MAX_RANK) {
        st = l3c_fail(L3C_ERR_FORMAT, "%s: key 'r' must be an integer in [1, %d]", f, MAX_RANK);
        goto done;
    }
    if (!json_is_number(la) || !isfinite(json_number_value(la))) {
        st = l3c_fail(L3C_ERR_FORMAT, "%s: key 'lora_alpha' must be a finite number", f);
        goto done;
    }
    const int32_t rank = (int32_t)json_integer_value(r);
    float alpha = (float)json_number_value(la);
    /* rank_pattern: per-module ranks, which the tensors' shapes give (alpha / each one's rank) */
    const int mixed = !json_empty(json_object_get(c, "rank_pattern"));
    /* rsLoRA scales by alpha / sqrt(r): the same as alpha * sqrt(r) / r (one r only) */
    if (json_is_true(json_object_get(c, "use_rslora"))) {
        if (mixed) {
            st = l3c_fail(L3C_ERR_UNSUPPORTED, "%s: use_rslora with rank_pattern is not supported",
                          f);
            goto done;
        }
        alpha = (float)(json_number_value(la) * sqrt((double)rank));
    }
    if (alpha == 0.0f) { /* 0 would mean "scale 1" (llama.cpp's convention for GGUF files) */
        st = l3c_fail(L3C_ERR_FORMAT, "%s: lora_alpha is 0 (the adapter would do nothing)", f);
        goto done;
    }

    struct stat sb;
    if (stat(sp, &sb) != 0) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
        st = stat(bin, &sb) == 0
                 ? l3c_fail(L3C_ERR_UNSUPPORTED,
                            "%s: PyTorch pickle adapters are not supported; save with "
                            "safe_serialization=True (adapter_model.safetensors)",
                            bin)
                 : l3c_fail(L3C_ERR_IO, "%s: cannot open: %s", sp, strerror(errno));
        goto done;
    }
    if ((st = l3c_safetensors_open(sp, &sf))) goto done;
    mats = l3c_calloc((size_t)cfg->n_layer * L3C_LORA_N_TARGETS, sizeof *mats);
    if (!mats) {
        st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", sp);
        goto done;
    }
    for (size_t i = 0; i < sf->n_tensors; i++) {
        const l3c_st_tensor *t = &sf->tensors[i];
        int l, tg, which;
        int pr = parse_peft_name(t->name, cfg->n_layer, &l, &tg, &which);
        if (pr < 0) {
            st = bad_name(sp, t->name, pr, cfg->n_layer,
                          "model.layers.N.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj}.lora_"
                          "A/B.weight");
            goto done;
        }
        if (t->type < 0 || t->n_dims != 2) {
            st = l3c_fail(t->type < 0 ? L3C_ERR_UNSUPPORTED : L3C_ERR_FORMAT,
                          "%s: tensor '%s': %s, %d "
                          "dimensions (expected F32 / F16 / BF16, 2 dimensions)",
                          sp, t->name, t->dtype, t->n_dims);
            goto done;
        }
        src_mat *m = &mats[(size_t)l * L3C_LORA_N_TARGETS + tg][which];
        if (m->data) { /* "model.layers..." and "base_model.model.model.layers..." */
            st = l3c_fail(L3C_ERR_FORMAT, "%s: tensors '%s' and '%s' are the same matrix", sp,
                          m->name, t->name);
            goto done;
        }
        *m = (src_mat){.data = t->data,
                       .type = t->type,
                       .rows = t->shape[0],
                       .cols = t->shape[1],
                       .name = t->name};
    }
    st = build(sp, cfg, (const src_mat(*)[2])mats, alpha, mixed ? 0 : rank, 1, out);
    if (!st && json_is_true(json_object_get(c, "use_rslora"))) (*out)->rs_alpha = (float)json_number_value(la);
done:
    free(mats);
    l3c_safetensors_close(sf);
    json_decref(c);
    return st;
}

l3c_status l3c_lora_load(const char *path, const l3c_config *cfg, l3c_lora_adapter **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_lora_load: NULL argument");
    *out = NULL;
    if (!path || !cfg) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_lora_load: NULL argument");
    if (l3c_path_is_dir(path)) return load_peft(path, cfg, out);
    l3c_gguf *g = NULL;
    l3c_status st = l3c_gguf_open(path, &g);
    if (!st) st = load_gguf(g, path, cfg, out);
    l3c_gguf_close(g);
    return st;
}

/* ---------------------------------------------------------------- writers */

/* Closes o and renames it into place (st == OK), else removes it (io/outfile.h). */
static l3c_status finish_out(l3c_status st, l3c_outfile *o) {
    if (!st) return l3c_outfile_commit(o);
    l3c_outfile_abort(o);
    return st;
}

static l3c_status write_all(FILE *f, const char *tmp, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, f) != n)
        return l3c_fail(L3C_ERR_IO, "writing %s failed: %s", tmp, strerror(errno));
    return L3C_OK;
}

l3c_status l3c_lora_save_gguf(const l3c_lora_adapter *a, const l3c_config *cfg, const char *path) {
    if (!a || !cfg || !path)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_lora_save_gguf: NULL argument");
    l3c_gguf_writer w = {0};
    l3c_buf header = {0};
    char name[96];
    l3c_outfile o = {0};
    l3c_status st;
    l3c_gguf_w_str(&w, "general.architecture", "llama", 5);
    l3c_gguf_w_str(&w, "general.type", "adapter", 7);
    l3c_gguf_w_str(&w, "adapter.type", "lora", 4);
    l3c_gguf_w_f32(&w, "adapter.lora.alpha", a->alpha);
    for (int32_t l = 0; l < a->n_layer; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
            const l3c_lora_mat *m = l3c_lora_get(a, l, (l3c_lora_target)t);
            if (!m) continue;
            int64_t ne_a[2] = {m->n_in, m->rank}, ne_b[2] = {m->rank, m->n_out};
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", (int)l,
                     l3c_lora_target_gguf_name(t));
            l3c_gguf_w_tensor(&w, name, L3C_TYPE_F32, 2, ne_a);
            name[strlen(name) - 1] = 'b';
            l3c_gguf_w_tensor(&w, name, L3C_TYPE_F32, 2, ne_b);
        }
    if ((st = l3c_gguf_w_finish(&w, &header))) goto done;
    if ((st = l3c_outfile_open(&o, path, NULL, 0, "lora"))) goto done;
    FILE *f = o.f;
    const char *tmp = o.tmp;
    if ((st = write_all(f, tmp, header.data, header.len))) goto done;
    static const char zeros[L3C_GGUF_W_ALIGN];
    for (int32_t l = 0; l < a->n_layer && !st; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS && !st; t++) {
            const l3c_lora_mat *m = l3c_lora_get(a, l, (l3c_lora_target)t);
            if (!m) continue;
            size_t na = (size_t)m->rank * (size_t)m->n_in * sizeof(float);
            size_t nb = (size_t)m->rank * (size_t)m->n_out * sizeof(float);
            if (!(st = write_all(f, tmp, m->a, na)))
                st = write_all(f, tmp, zeros,
                               (L3C_GGUF_W_ALIGN - na % L3C_GGUF_W_ALIGN) % L3C_GGUF_W_ALIGN);
            if (!st && !(st = write_all(f, tmp, m->b, nb)))
                st = write_all(f, tmp, zeros,
                               (L3C_GGUF_W_ALIGN - nb % L3C_GGUF_W_ALIGN) % L3C_GGUF_W_ALIGN);
        }
done:
    st = o.tmp ? finish_out(st, &o) : st;
    l3c_buf_free(&header);
    l3c_gguf_w_free(&w);
    return st;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = l3c_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* PEFT's module name of (layer, target), "model.layers.3.self_attn.q_proj" */
static void peft_module(char *out, size_t cap, int l, int t) {
    snprintf(out, cap, "model.layers.%d.%s", l, l3c_lora_target_peft_name(t));
}

static l3c_status write_safetensors(const l3c_lora_adapter *a, const l3c_config *cfg,
                                    const char *path) {
    l3c_buf h = {0};
    char mod[96];
    l3c_outfile o = {0};
    float *perm = NULL;
    size_t off = 0;
    l3c_status st = l3c_buf_appendf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int32_t l = 0; l < a->n_layer && !st; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS && !st; t++) {
            const l3c_lora_mat *m = l3c_lora_get(a, l, (l3c_lora_target)t);
            if (!m) continue;
            peft_module(mod, sizeof mod, (int)l, t);
            size_t na = (size_t)m->rank * (size_t)m->n_in * 4,
                   nb = (size_t)m->rank * (size_t)m->n_out * 4;
            st = l3c_buf_appendf(
                &h,
                ",\"base_model.model.%s.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[%d,%lld],"
                "\"data_offsets\":[%zu,%zu]}",
                mod, (int)m->rank, (long long)m->n_in, off, off + na);
            off += na;
            if (!st)
                st = l3c_buf_appendf(
                    &h,
                    ",\"base_model.model.%s.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":"
                    "[%lld,%d],\"data_offsets\":[%zu,%zu]}",
                    mod, (long long)m->n_out, (int)m->rank, off, off + nb);
            off += nb;
        }
    if (!st) st = l3c_buf_append(&h, "}", 1);
    while (!st && h.len % 8)
        st = l3c_buf_append(&h, " ", 1);
    if (st) goto done;
    if ((st = l3c_outfile_open(&o, path, NULL, 0, "lora"))) goto done;
    FILE *f = o.f;
    const char *tmp = o.tmp;
    uint64_t n = h.len;
    if ((st = write_all(f, tmp, &n, 8)) || (st = write_all(f, tmp, h.data, h.len))) goto done;
    for (int32_t l = 0; l < a->n_layer && !st; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS && !st; t++) {
            const l3c_lora_mat *m = l3c_lora_get(a, l, (l3c_lora_target)t);
            if (!m) continue;
            size_t nb = (size_t)m->rank * (size_t)m->n_out * sizeof(float);
            const float *b = m->b;
            int64_t heads = permute_heads(cfg, t);
            if (heads) { /* back to HF's rotate-half order */
                float *p2 = l3c_realloc(perm, nb);
                if (!p2) {
                    st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
                    break;
                }
                perm = p2;
                l3c_hf_permute_rows(m->b, perm, m->n_out, (size_t)m->rank * sizeof(float), heads,
                                    1);
                b = perm;
            }
            if (!(st = write_all(f, tmp, m->a, (size_t)m->rank * (size_t)m->n_in * sizeof(float))))
                st = write_all(f, tmp, b, nb);
        }
done:
    st = o.tmp ? finish_out(st, &o) : st;
    free(perm);
    l3c_buf_free(&h);
    return st;
}

static l3c_status write_config(const l3c_lora_adapter *a, const char *path,
                               const char *base_model_name) {
    l3c_status st = L3C_OK;
    char mod[96];
    l3c_outfile o = {0};
    json_t *c = json_object(), *targets = json_array(), *ranks = json_object();
    if (!c || !targets || !ranks) goto nomem;
    /* the same targets in every layer: PEFT's short names; else each module's full name */
    int uniform = 1;
    for (int32_t l = 0; l < a->n_layer; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS; t++)
            if (!l3c_lora_get(a, l, (l3c_lora_target)t) != !(a->targets & (1u << t))) uniform = 0;
    for (int32_t l = 0; l < a->n_layer; l++)
        for (int t = 0; t < L3C_LORA_N_TARGETS; t++) {
            const l3c_lora_mat *m = l3c_lora_get(a, l, (l3c_lora_target)t);
            if (!m) continue;
            peft_module(mod, sizeof mod, (int)l, t);
            if (!uniform && json_array_append_new(targets, json_string(mod))) goto nomem;
            if (m->rank != a->rank && json_object_set_new(ranks, mod, json_integer(m->rank)))
                goto nomem;
        }
    if (uniform)
        for (int t = 0; t < L3C_LORA_N_TARGETS; t++)
            if (a->targets & (1u << t)) {
                const char *pn = strchr(l3c_lora_target_peft_name(t), '.') + 1; /* "q_proj" */
                if (json_array_append_new(targets, json_string(pn))) goto nomem;
            }
    /* rsLoRA: PEFT's lora_alpha with use_rslora (scale lora_alpha / sqrt(r) == a->alpha / r) */
    const double alpha = a->rs_alpha != 0.0f ? a->rs_alpha : a->alpha;
    json_t *jalpha = alpha == floor(alpha) && fabs(alpha) < 1e15 ? json_integer((json_int_t)alpha)
                                                                 : json_real(alpha);
    int bad = 0;
    bad |= json_object_set_new(c, "alpha_pattern", json_object());
    bad |= json_object_set_new(c, "auto_mapping", json_null());
    bad |= json_object_set_new(c, "base_model_name_or_path",
                               base_model_name ? json_string(base_model_name) : json_null());
    bad |= json_object_set_new(c, "bias", json_string("none"));
    bad |= json_object_set_new(c, "eva_config", json_null());
    bad |= json_object_set_new(c, "exclude_modules", json_null());
    bad |= json_object_set_new(c, "fan_in_fan_out", json_false());
    bad |= json_object_set_new(c, "inference_mode", json_true());
    bad |= json_object_set_new(c, "init_lora_weights", json_true());
    bad |= json_object_set_new(c, "layer_replication", json_null());
    bad |= json_object_set_new(c, "layers_pattern", json_null());
    bad |= json_object_set_new(c, "layers_to_transform", json_null());
    bad |= json_object_set_new(c, "loftq_config", json_object());
    bad |= json_object_set_new(c, "lora_alpha", jalpha);
    bad |= json_object_set_new(c, "lora_bias", json_false());
    bad |= json_object_set_new(c, "lora_dropout", json_real(a->dropout));
    bad |= json_object_set_new(c, "megatron_config", json_null());
    bad |= json_object_set_new(c, "megatron_core", json_string("megatron.core"));
    bad |= json_object_set_new(c, "modules_to_save", json_null());
    bad |= json_object_set_new(c, "peft_type", json_string("LORA"));
    bad |= json_object_set_new(c, "r", json_integer(a->rank));
    bad |= json_object_set(c, "rank_pattern", ranks);
    bad |= json_object_set_new(c, "revision", json_null());
    bad |= json_object_set(c, "target_modules", targets);
    bad |= json_object_set_new(c, "task_type", json_string("CAUSAL_LM"));
    bad |= json_object_set_new(c, "use_dora", json_false());
    bad |= json_object_set_new(c, "use_rslora", a->rs_alpha != 0.0f ? json_true() : json_false());
    if (bad) goto nomem;
    if ((st = l3c_outfile_open(&o, path, NULL, 0, "lora"))) goto done;
    if (json_dumpf(c, o.f, JSON_INDENT(2) | JSON_SORT_KEYS) != 0)
        st = l3c_fail(L3C_ERR_IO, "cannot write %s: %s", o.tmp, strerror(errno));
    st = finish_out(st, &o);
    goto done;
nomem:
    st = l3c_fail(L3C_ERR_NOMEM, "%s: out of memory", path);
done:
    json_decref(c);
    json_decref(targets);
    json_decref(ranks);
    return st;
}

l3c_status l3c_lora_save_peft(const l3c_lora_adapter *a, const l3c_config *cfg, const char *dir,
                              const char *base_model_name) {
    if (!a || !cfg || !dir)
        return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_lora_save_peft: NULL argument");
    if (mkdir(dir, 0777) != 0 && !(errno == EEXIST && l3c_path_is_dir(dir)))
        return l3c_fail(L3C_ERR_IO, "cannot create the folder %s: %s", dir, strerror(errno));
    char *sp = join(dir, "adapter_model.safetensors"), *cp = join(dir, "adapter_config.json");
    l3c_status st = sp && cp ? L3C_OK : l3c_fail(L3C_ERR_NOMEM, "out of memory");
    /* the weights first: a folder whose config is written is complete */
    if (!st) st = write_safetensors(a, cfg, sp);
    if (!st) st = write_config(a, cp, base_model_name);
    free(sp);
    free(cp);
    return st;
}
