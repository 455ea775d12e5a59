/*
 * cmd_explain.c -- `llama3c explain`: the LLaMA architecture walk-through, computed from the
 * loaded file. Sections: model card (with Meta's FFN sizing rule worked backwards), parameters
 * per component (summing exactly to the file's tensors), bytes per tensor type, KV-cache memory,
 * and a traced forward pass of a prompt (every named op with its shape, a few real values and
 * its time; attention probabilities of chosen heads; the top-5 next tokens). --html writes the
 * same as one self-contained page (explain_html.c). Built on the public header only.
 */
#include "cli.h"
#include "common.h"
#include "explain.h"

#include "llama3c.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const explain_component_names[EX_N_COMPONENTS] = {
    "token embedding", "attention q", "attention k", "attention v", "attention output",
    "ffn gate",        "ffn up",      "ffn down",    "norms",       "output (lm head)",
    "rope_freqs",      "other",
};

void explain_fmt_count(int64_t n, char *buf, size_t cap) {
    if (n >= 1000000000)
        snprintf(buf, cap, "%.2fB", n / 1e9);
    else if (n >= 1000000)
        snprintf(buf, cap, "%.1fM", n / 1e6);
    else if (n >= 1000)
        snprintf(buf, cap, "%.1fK", n / 1e3);
    else
        snprintf(buf, cap, "%lld", (long long)n);
}

void explain_fmt_bytes(double n, char *buf, size_t cap) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (n >= 1024 && u < 4) {
        n /= 1024;
        u++;
    }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", n, unit[u]);
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: llama3c explain -m MODEL [options]\n"
        "Walks through the LLaMA architecture with the loaded model's real shapes and numbers.\n\n"
        "  -m, --model FILE     GGUF model (required)\n"
        "  -p, --prompt TEXT    prompt for the traced run (default \"The capital of France is\")\n"
        "  --layers LIST        blocks shown in detail, e.g. 0,1,-1 (default 0,-1; 'all')\n"
        "  --heads LIST         attention heads shown, e.g. 0,5 (default 0)\n"
        "  --values N           values shown per tensor (default 4, at most 8)\n"
        "  --kv-lengths LIST    context lengths for the KV-cache table (default 1024,8192,train)\n"
        "  --no-trace           model card, parameters and memory only\n"
        "  --html FILE          also write a self-contained HTML page\n"
        "  --logits-out FILE    write the last position's logits (float32) of the traced run\n"
        "  -t, --threads N      threads for the traced run\n"
        "  -h, --help           this text\n");
}

/* ---- component of a tensor by name */

static int component_of(const char *name) {
    static const struct {
        const char *suffix;
        int comp;
    } map[] = {
        {"attn_q.weight", EX_ATTN_Q},     {"attn_k.weight", EX_ATTN_K},
        {"attn_v.weight", EX_ATTN_V},     {"attn_output.weight", EX_ATTN_O},
        {"ffn_gate.weight", EX_FFN_GATE}, {"ffn_up.weight", EX_FFN_UP},
        {"ffn_down.weight", EX_FFN_DOWN}, {"attn_norm.weight", EX_NORMS},
        {"ffn_norm.weight", EX_NORMS},
    };
    if (!strcmp(name, "token_embd.weight")) return EX_EMBED;
    if (!strcmp(name, "output.weight")) return EX_OUTPUT;
    if (!strcmp(name, "output_norm.weight")) return EX_NORMS;
    if (!strcmp(name, "rope_freqs.weight")) return EX_ROPE_FREQS;
    if (!strncmp(name, "blk.", 4)) {
        const char *dot = strchr(name + 4, '.');
        if (dot)
            for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
                if (!strcmp(dot + 1, map[i].suffix)) return map[i].comp;
    }
    return EX_OTHER;
}

static int layer_of(const char *name) {
    if (strncmp(name, "blk.", 4)) return -1;
    return atoi(name + 4);
}

static void gather_params(const l3c_model *m, ex_report *r) {
    int64_t n = l3c_model_n_tensors(m);
    for (int64_t i = 0; i < n; i++) {
        l3c_tensor_desc d;
        if (l3c_model_tensor_desc(m, i, &d) != L3C_OK) continue;
        int c = component_of(d.name);
        r->params.total[c] += d.n_elements;
        r->params.sum += d.n_elements;
        if (layer_of(d.name) == 0) r->params.per_layer[c] += d.n_elements;
        int t = 0;
        while (t < r->n_types && strcmp(r->types[t].name, d.type_name))
            t++;
        if (t == r->n_types && t < (int)(sizeof r->types / sizeof r->types[0])) {
            r->types[t].name = d.type_name;
            r->n_types++;
        }
        if (t < r->n_types) {
            r->types[t].count++;
            r->types[t].elements += d.n_elements;
            r->types[t].bytes += d.nbytes;
        }
    }
}

/* Meta's rule (llama/model.py): hidden = 4*dim; hidden = int(2*hidden/3);
 * if ffn_dim_multiplier: hidden = int(mult*hidden); round up to a multiple of multiple_of. */
static void derive_ffn(int64_t dim, int64_t n_ff, ex_ffn_rule *f) {
    static const double mults[] = {1.0, 1.3, 1.5, 2.0, 1.2, 1.25, 1.4, 2.6, 3.0, 4.0};
    static const int multiples[] = {1024, 256, 4096, 512, 128, 64, 32, 16, 8, 1};
    memset(f, 0, sizeof *f);
    f->four_d = 4 * dim;
    f->two_thirds = (int64_t)(2 * f->four_d / 3);
    for (size_t a = 0; a < sizeof mults / sizeof mults[0]; a++)
        for (size_t b = 0; b < sizeof multiples / sizeof multiples[0]; b++) {
            int64_t scaled = (int64_t)(mults[a] * (double)f->two_thirds);
            int64_t mo = multiples[b];
            int64_t rounded = mo * ((scaled + mo - 1) / mo);
            if (rounded == n_ff) {
                f->found = 1;
                f->multiplier = mults[a];
                f->multiple_of = multiples[b];
                f->scaled = scaled;
                f->rounded = rounded;
                return;
            }
        }
}

/* ---- list parsing: "0,1,-1" or "all"; -1 (message printed) on anything else, a value out of
 * range or more than cap values. Negative values count from n_max when from_end, else are errors.
 */

static int parse_list(const char *opt, const char *s, int *out, int cap, int lo, int n_max,
                      int from_end) {
    int n = 0;
    if (!strcmp(s, "all")) {
        for (int i = 0; i < n_max && n < cap; i++)
            out[n++] = i;
        return n;
    }
    const char *all = s;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || (*end && *end != ',')) break;
        if (v < 0 && from_end) v += n_max;
        if (v < lo || v >= n_max || n == cap) break;
        out[n++] = (int)v;
        s = *end ? end + 1 : end;
    }
    if (*s || !n || s[-1] == ',') {
        cli_usage_error("explain",
                        "%s: '%s' is not a list of at most %d values in [%s%d, %d] (or \"all\")",
                        opt, all, cap, from_end ? "-" : "", from_end ? n_max : lo, n_max - 1);
        return -1;
    }
    return n;
}

static int in_list(const int *l, int n, int v) {
    for (int i = 0; i < n; i++)
        if (l[i] == v) return 1;
    return 0;
}

/* ---- tracing */

typedef struct trace_state {
    ex_report *r;
    const int *heads;
    int n_heads_sel;
    const int *layers;
    int n_layers_sel;
    int n_head;
    double t_prev;
    int failed;
} trace_state;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void on_trace(void *user, const char *op, int layer, const float *data, int64_t rows,
                     int64_t cols) {
    trace_state *ts = user;
    ex_report *r = ts->r;
    double t = now_ms();
    if (ts->failed) return;
    if (r->n_steps == r->cap_steps) {
        int64_t cap = r->cap_steps ? 2 * r->cap_steps : 64;
        ex_step *s = realloc(r->steps, (size_t)cap * sizeof *s);
        if (!s) {
            ts->failed = 1;
            return;
        }
        r->steps = s;
        r->cap_steps = cap;
    }
    ex_step *s = &r->steps[r->n_steps++];
    memset(s, 0, sizeof *s);
    snprintf(s->op, sizeof s->op, "%s", op);
    s->layer = layer;
    s->rows = rows;
    s->cols = cols;
    s->ms = t - ts->t_prev;
    int64_t n = rows * cols;
    double sum = 0, sq = 0, mn = INFINITY, mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double v = data[i];
        sum += v;
        sq += v * v;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    s->mean = n ? sum / n : 0;
    s->rms = n ? sqrt(sq / n) : 0;
    s->min = mn;
    s->max = mx;
    const float *last = data + (rows - 1) * cols;
    s->n_head = (int)(cols < 8 ? cols : 8);
    for (int i = 0; i < s->n_head; i++)
        s->head[i] = last[i];
    /* attention probabilities: rows = n_head * T (head-major), cols = positions */
    if (!strcmp(op, "attn_scores") && in_list(ts->layers, ts->n_layers_sel, layer) &&
        rows % ts->n_head == 0) {
        int64_t T = rows / ts->n_head;
        for (int h = 0; h < ts->n_heads_sel; h++) {
            int head = ts->heads[h];
            if (head >= ts->n_head) continue;
            ex_attn *na = realloc(r->attn, (size_t)(r->n_attn + 1) * sizeof *na);
            if (!na) {
                ts->failed = 1;
                return;
            }
            r->attn = na;
            ex_attn *a = &r->attn[r->n_attn];
            a->p = malloc((size_t)(T * cols) * sizeof(float));
            if (!a->p) {
                ts->failed = 1;
                return;
            }
            memcpy(a->p, data + (int64_t)head * T * cols, (size_t)(T * cols) * sizeof(float));
            a->layer = layer;
            a->head = head;
            a->rows = T;
            a->cols = cols;
            r->n_attn++;
        }
    }
    ts->t_prev = now_ms();
}

/* ---- text output */

static void print_card(const ex_report *r) {
    const l3c_model_info *in = &r->info;
    char buf[32], b2[32];
    explain_fmt_count(r->params.sum, buf, sizeof buf);
    printf("== Model card: %s (%s)\n", in->name, r->model_path);
    printf("  architecture          %s, %s weights, chat template %s\n", in->arch, in->file_type,
           r->template_name);
    printf("  vocabulary            %d tokens\n", in->n_vocab);
    printf("  features (dim)        %d\n", in->n_embd);
    printf("  blocks (layers)       %d\n", in->n_layer);
    printf("  query heads           %d\n", in->n_head);
    printf(
        "  key/value heads       %d (grouped-query attention: %d query heads share each KV head)\n",
        in->n_head_kv, in->n_head_kv ? in->n_head / in->n_head_kv : 0);
    printf("  head dimension        %d (= %d / %d)\n", in->head_dim, in->n_embd, in->n_head);
    printf("  FFN hidden            %d\n", in->n_ff);
    const ex_ffn_rule *f = &r->ffn;
    if (f->found) {
        printf("    Meta's rule: 4 x %d = %lld; x 2/3 -> %lld", in->n_embd, (long long)f->four_d,
               (long long)f->two_thirds);
        if (f->multiplier != 1.0)
            printf("; x ffn_dim_multiplier %.2g -> %lld", f->multiplier, (long long)f->scaled);
        printf("; rounded up to a multiple of %d -> %lld\n", f->multiple_of, (long long)f->rounded);
    } else {
        printf("    (not reproduced by Meta's rule 4*dim*2/3*multiplier rounded to multiple_of;"
               " the file says %d)\n",
               in->n_ff);
    }
    printf("  context window        %d tokens (training)\n", in->n_ctx_train);
    printf("  rope                  theta %g, %d rotated dims per head, scaling: %s\n",
           in->rope_theta, in->n_rot, r->scaling);
    printf("  RMSNorm epsilon       %g\n", in->norm_eps);
    printf("  output projection     %s\n",
           in->tied_output ? "tied (reuses the token embedding matrix)" : "separate output.weight");
    explain_fmt_bytes((double)in->weight_bytes, b2, sizeof b2);
    printf("  parameters            %lld (%s), weights %s\n\n", (long long)r->params.sum, buf, b2);
}

static void print_params(const ex_report *r) {
    printf("== Parameters per component\n");
    printf("  %-18s %16s %16s %8s\n", "component", "per block", "whole model", "share");
    for (int c = 0; c < EX_N_COMPONENTS; c++) {
        if (!r->params.total[c]) continue;
        printf("  %-18s %16lld %16lld %7.2f%%\n", explain_component_names[c],
               (long long)r->params.per_layer[c], (long long)r->params.total[c],
               100.0 * (double)r->params.total[c] / (double)r->params.sum);
    }
    printf("  %-18s %16s %16lld %7.2f%%\n", "total", "", (long long)r->params.sum, 100.0);
    if (r->info.tied_output)
        printf("  (the output projection is tied: it reuses the embedding's %lld parameters)\n",
               (long long)r->params.total[EX_EMBED]);
    printf("\n== Bytes per tensor type\n");
    for (int t = 0; t < r->n_types; t++) {
        char b[32];
        explain_fmt_bytes((double)r->types[t].bytes, b, sizeof b);
        printf("  %-6s %4d tensors %14lld elements %12s  (%.2f bits/weight)\n", r->types[t].name,
               r->types[t].count, (long long)r->types[t].elements, b,
               8.0 * (double)r->types[t].bytes / (double)r->types[t].elements);
    }
    printf("\n== KV cache (F16 keys and values, all %d blocks): %zu bytes per position\n",
           r->info.n_layer, r->kv_per_pos);
    for (int i = 0; i < r->n_kv_lengths; i++) {
        char b[32];
        explain_fmt_bytes((double)r->kv_per_pos * r->kv_lengths[i], b, sizeof b);
        printf("  %8d tokens  %12s\n", r->kv_lengths[i], b);
    }
    printf("\n");
}

static void print_values(const ex_step *s, int n_values) {
    printf("[");
    int n = s->n_head < n_values ? s->n_head : n_values;
    for (int i = 0; i < n; i++)
        printf("%s%.4g", i ? ", " : "", s->head[i]);
    printf("%s]", s->cols > n ? ", ..." : "");
}

static const char *op_meaning(const char *op) {
    static const struct {
        const char *op, *what;
    } m[] = {
        {"embd", "embedding lookup: one-hot (T x V) @ W_embd (V x D) = row lookup"},
        {"attn_norm", "RMSNorm before attention"},
        {"q", "queries, RoPE applied (heads x head_dim per token)"},
        {"k", "keys, RoPE applied (KV heads x head_dim)"},
        {"v", "values (KV heads x head_dim)"},
        {"attn_scores", "softmax(q k^T / sqrt(head_dim)) per head, causal"},
        {"attn_out", "attention-weighted values, heads concatenated"},
        {"attn_proj", "output projection W_o"},
        {"ffn_inp", "residual: block input + attention"},
        {"ffn_norm", "RMSNorm before the feed-forward"},
        {"ffn_gate", "gate projection up to the FFN hidden size"},
        {"ffn_up", "up projection to the FFN hidden size"},
        {"ffn_act", "SwiGLU: silu(gate) * up"},
        {"ffn_down", "down projection back to the features"},
        {"l_out", "residual: ffn input + feed-forward = block output"},
        {"result_norm", "final RMSNorm"},
        {"logits", "output projection to the vocabulary"},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (!strcmp(m[i].op, op)) return m[i].what;
    return "";
}

static void print_trace(const ex_report *r, const int *layers, int n_layers, int n_values,
                        const l3c_tokenizer *tok) {
    const l3c_model_info *in = &r->info;
    printf("== Traced run of \"%s\"\n", r->prompt);
    printf("  token ids (T = %lld):", (long long)r->n_tokens);
    for (int64_t i = 0; i < r->n_tokens; i++)
        printf(" %d", r->tokens[i]);
    printf("\n  pieces:");
    for (int64_t i = 0; i < r->n_tokens; i++)
        printf(" [%s]", r->pieces[i]);
    printf("\n  one-hot input X: T x V = %lld x %d; row t has a single 1 at column id[t] "
           "(e.g. row 0 at column %d)\n",
           (long long)r->n_tokens, in->n_vocab, r->tokens[0]);
    (void)tok;
    int skipped_from = -1;
    double skipped_ms = 0;
    for (int64_t i = 0; i < r->n_steps; i++) {
        const ex_step *s = &r->steps[i];
        if (s->layer >= 0 && !in_list(layers, n_layers, s->layer)) {
            if (skipped_from < 0) skipped_from = s->layer;
            skipped_ms += s->ms;
            continue;
        }
        if (skipped_from >= 0) {
            printf("  ... blocks %d..%d: the same ops (use --layers to show), %.2f ms\n",
                   skipped_from, s->layer >= 0 ? s->layer - 1 : in->n_layer - 1, skipped_ms);
            skipped_from = -1;
            skipped_ms = 0;
        }
        if (s->layer >= 0 && !strcmp(s->op, "attn_norm")) printf("  -- block %d\n", s->layer);
        printf("  %-12s %6lld x %-7lld ", s->op, (long long)s->rows, (long long)s->cols);
        print_values(s, n_values);
        printf("  rms %.3g  %.2f ms\n", s->rms, s->ms);
        const char *what = op_meaning(s->op);
        if (*what) printf("  %12s %s\n", "", what);
        if (!strcmp(s->op, "q"))
            printf("  %12s %d query heads x %d = %d features per token\n", "", in->n_head,
                   in->head_dim, in->n_head * in->head_dim);
        if (!strcmp(s->op, "k"))
            printf("  %12s %d KV heads x %d; each serves %d query heads\n", "", in->n_head_kv,
                   in->head_dim, in->n_head / in->n_head_kv);
        if (!strcmp(s->op, "attn_scores"))
            for (int a = 0; a < r->n_attn; a++) {
                const ex_attn *at = &r->attn[a];
                if (at->layer != s->layer) continue;
                printf("  %12s head %d probabilities (T x positions):\n", "", at->head);
                int64_t rr = at->rows < 8 ? at->rows : 8, cc = at->cols < 8 ? at->cols : 8;
                for (int64_t y = 0; y < rr; y++) {
                    printf("  %14s", "");
                    for (int64_t x = 0; x < cc; x++)
                        printf(" %5.3f", at->p[y * at->cols + x]);
                    printf("%s\n", at->cols > cc ? " ..." : "");
                }
            }
    }
    if (skipped_from >= 0)
        printf("  ... blocks %d..%d: the same ops, %.2f ms\n", skipped_from, in->n_layer - 1,
               skipped_ms);
    printf("  top-5 next tokens after the last position:\n");
    for (int i = 0; i < 5; i++)
        if (r->top[i].id >= 0)
            printf("    %6d  %-20s p = %.4f\n", r->top[i].id, r->top[i].piece, r->top[i].prob);
    printf("  total %.1f ms\n", r->total_ms);
}

static void piece_text(const l3c_tokenizer *tok, int32_t id, char *out, size_t cap) {
    char raw[64];
    int32_t n = l3c_token_to_bytes(tok, id, raw, sizeof raw);
    if (n < 0) n = 0;
    size_t o = 0;
    for (int32_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '\n')
            o += (size_t)snprintf(out + o, cap - o, "\\n");
        else if (c < 0x20)
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

static void top5(const float *logits, int32_t n_vocab, const l3c_tokenizer *tok, ex_top *top) {
    double mx = -INFINITY, z = 0;
    for (int32_t i = 0; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    for (int32_t i = 0; i < n_vocab; i++)
        z += exp(logits[i] - mx);
    for (int k = 0; k < 5; k++) {
        top[k].id = -1;
        float best = -INFINITY;
        for (int32_t i = 0; i < n_vocab; i++) {
            int taken = 0;
            for (int j = 0; j < k; j++)
                taken |= top[j].id == i;
            if (!taken && logits[i] > best) {
                best = logits[i];
                top[k].id = i;
            }
        }
        if (top[k].id < 0) continue;
        top[k].prob = (float)(exp(best - mx) / z);
        piece_text(tok, top[k].id, top[k].piece, sizeof top[k].piece);
    }
}

static int run_trace(l3c_model *model, ex_report *r, const int *layers, int n_layers,
                     const int *heads, int n_heads, int threads, const char *logits_out) {
    const l3c_tokenizer *tok = l3c_model_tokenizer(model);
    size_t len = strlen(r->prompt);
    int64_t n = l3c_tokenize(tok, r->prompt, len, NULL, 0, L3C_TOKENIZE_ADD_BOS);
    if (n < 0) n = -n;
    r->tokens = calloc((size_t)n + 1, sizeof *r->tokens);
    r->pieces = calloc((size_t)n + 1, sizeof *r->pieces);
    if (!r->tokens || !r->pieces) return fprintf(stderr, "llama3c explain: out of memory\n"), 1;
    r->n_tokens = l3c_tokenize(tok, r->prompt, len, r->tokens, n, L3C_TOKENIZE_ADD_BOS);
    if (r->n_tokens <= 0) {
        fprintf(stderr, "llama3c explain: the prompt gives no tokens\n");
        return 1;
    }
    for (int64_t i = 0; i < r->n_tokens; i++)
        piece_text(tok, r->tokens[i], r->pieces[i], 48);

    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = (int32_t)(r->n_tokens < 16 ? 16 : r->n_tokens);
    cp.n_batch = (int32_t)r->n_tokens;
    cp.n_threads = threads;
    l3c_context *ctx = NULL;
    if (l3c_context_create(model, &cp, &ctx) != L3C_OK) {
        fprintf(stderr, "llama3c explain: %s\n", l3c_last_error());
        return 1;
    }
    trace_state ts = {.r = r,
                      .heads = heads,
                      .n_heads_sel = n_heads,
                      .layers = layers,
                      .n_layers_sel = n_layers,
                      .n_head = r->info.n_head};
    l3c_context_set_trace(ctx, on_trace, &ts);
    int32_t *pos = calloc((size_t)r->n_tokens, sizeof *pos);
    if (!pos) {
        l3c_context_free(ctx);
        return 1;
    }
    for (int64_t i = 0; i < r->n_tokens; i++)
        pos[i] = (int32_t)i;
    l3c_batch b = {.n_tokens = (int32_t)r->n_tokens, .tokens = r->tokens, .pos = pos};
    double t0 = now_ms();
    ts.t_prev = t0;
    l3c_status st = l3c_decode(ctx, &b);
    r->total_ms = now_ms() - t0;
    free(pos);
    if (st != L3C_OK || ts.failed) {
        fprintf(stderr, "llama3c explain: %s\n", st != L3C_OK ? l3c_last_error() : "out of memory");
        l3c_context_free(ctx);
        return 1;
    }
    const float *logits = l3c_get_logits(ctx, (int32_t)r->n_tokens - 1);
    int rc = 0;
    if (logits) top5(logits, r->info.n_vocab, tok, r->top);
    if (logits && logits_out) {
        FILE *f = fopen(logits_out, "wb");
        if (!f ||
            fwrite(logits, sizeof(float), (size_t)r->info.n_vocab, f) != (size_t)r->info.n_vocab) {
            fprintf(stderr, "llama3c explain: cannot write %s\n", logits_out);
            rc = 1;
        }
        if (f && fclose(f) != 0) rc = 1;
    }
    l3c_context_free(ctx);
    return rc;
}

static void report_free(ex_report *r) {
    free(r->tokens);
    free(r->pieces);
    free(r->steps);
    for (int i = 0; i < r->n_attn; i++)
        free(r->attn[i].p);
    free(r->attn);
}

#define CMD "explain"

int cmd_explain(int argc, char **argv) {
    const char *model_path = NULL, *prompt = "The capital of France is", *html = NULL;
    const char *logits_out = NULL;
    const char *layers_arg = "0,-1", *heads_arg = "0", *kv_arg = NULL;
    int n_values = 4, trace = 1, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int bad = 0, r;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (cli_is(a, CLI_MODEL))
            bad = cli_str(CMD, argc, argv, &i, &model_path);
        else if (cli_is(a, "-p|--prompt"))
            bad = cli_str(CMD, argc, argv, &i, &prompt);
        else if (!strcmp(a, "--layers"))
            bad = cli_str(CMD, argc, argv, &i, &layers_arg);
        else if (!strcmp(a, "--heads"))
            bad = cli_str(CMD, argc, argv, &i, &heads_arg);
        else if (!strcmp(a, "--values"))
            bad = cli_int(CMD, argc, argv, &i, 1, 8, &n_values);
        else if (!strcmp(a, "--kv-lengths"))
            bad = cli_str(CMD, argc, argv, &i, &kv_arg);
        else if (!strcmp(a, "--html"))
            bad = cli_str(CMD, argc, argv, &i, &html);
        else if (!strcmp(a, "--logits-out"))
            bad = cli_str(CMD, argc, argv, &i, &logits_out);
        else if (cli_is(a, CLI_THREADS))
            bad = cli_int(CMD, argc, argv, &i, 1, 1024, &threads);
        else if (!strcmp(a, "--no-trace"))
            trace = 0;
        else if ((r = cli_compat_parse(CMD, argc, argv, &i)))
            bad = r < 0;
        else
            return cli_usage_error(CMD, "unknown option '%s'", a);
        if (bad) return CLI_USAGE;
    }
    if (!model_path) return cli_usage_error(CMD, "no model: pass -m FILE.gguf");
    int kvl[8];
    int n_kvl = kv_arg ? parse_list("--kv-lengths", kv_arg, kvl, 8, 1, 1 << 30, 0) : 0;
    if (n_kvl < 0) return CLI_USAGE;

    l3c_model_params mp = l3c_model_default_params();
    l3c_model *model = NULL;
    if (l3c_model_load(model_path, &mp, &model) != L3C_OK) {
        fprintf(stderr, "llama3c explain: %s\n", l3c_last_error());
        return 1;
    }
    ex_report r;
    memset(&r, 0, sizeof r);
    r.model_path = model_path;
    r.prompt = prompt;
    l3c_model_get_info(model, &r.info);
    r.template_name = l3c_chat_template_name(l3c_chat_template_detect(model));
    const char *stype = l3c_model_meta_str(model, "llama.rope.scaling.type");
    r.scaling = r.info.has_rope_freqs ? "llama3 (per-frequency factors from rope_freqs)"
                : stype               ? stype
                                      : "none";
    derive_ffn(r.info.n_embd, r.info.n_ff, &r.ffn);
    gather_params(model, &r);
    r.kv_per_pos = l3c_model_kv_bytes_per_pos(model, L3C_KV_F16);

    int layers[1024], heads[256];
    int n_layers = parse_list("--layers", layers_arg, layers, 1024, 0, r.info.n_layer, 1);
    int n_heads =
        n_layers < 0 ? -1 : parse_list("--heads", heads_arg, heads, 256, 0, r.info.n_head, 1);
    if (n_layers < 0 || n_heads < 0) {
        l3c_model_free(model);
        return 2;
    }
    if (!kv_arg) {
        kvl[n_kvl++] = 1024;
        if (r.info.n_ctx_train > 8192) kvl[n_kvl++] = 8192;
        if (r.info.n_ctx_train != 1024) kvl[n_kvl++] = r.info.n_ctx_train;
    }
    memcpy(r.kv_lengths, kvl, sizeof kvl);
    r.n_kv_lengths = n_kvl;

    print_card(&r);
    print_params(&r);
    int rc = 0;
    if (trace) {
        rc = run_trace(model, &r, layers, n_layers, heads, n_heads, threads, logits_out);
        if (!rc) print_trace(&r, layers, n_layers, n_values, l3c_model_tokenizer(model));
    }
    if (!rc && html) {
        FILE *f = fopen(html, "w");
        if (!f || explain_write_html(&r, f) != 0 || fclose(f) != 0) {
            fprintf(stderr, "llama3c explain: cannot write %s\n", html);
            rc = 1;
        } else {
            fprintf(stderr, "llama3c explain: wrote %s\n", html);
        }
    }
    report_free(&r);
    l3c_model_free(model);
    return rc;
}
