/*
 * explain_html.c -- renders an ex_report as one self-contained HTML page: inline CSS, an inline
 * SVG diagram of the block stack annotated with the model's real shapes, tables, and SVG heat
 * maps of the chosen attention heads. No scripts, fonts or images are fetched from anywhere.
 */
#include "explain.h"

#include <math.h>
#include <string.h>

static void esc(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* One box of the diagram: a label and a shape text. */
static void box(FILE *f, int x, int y, int w, const char *fill, const char *label, const char *shape) {
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='34' rx='6' fill='%s' stroke='#333'/>", x, y, w,
            fill);
    fprintf(f, "<text x='%d' y='%d' class='l'>", x + 10, y + 15);
    esc(f, label);
    fprintf(f, "</text><text x='%d' y='%d' class='s'>", x + 10, y + 29);
    esc(f, shape);
    fputs("</text>", f);
}

static void arrow(FILE *f, int x, int y1, int y2) {
    fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#333' marker-end='url(#a)'/>", x, y1,
            x, y2);
}

static void diagram(FILE *f, const ex_report *r) {
    const l3c_model_info *in = &r->info;
    char s[160];
    int W = 620, x = 40, w = 420, y = 10;
    int H = 44 + 48 + 10 + 8 * 44 + 10 + 44 + 34 + 12; /* the boxes below, top to bottom */
    fprintf(f, "<svg id='diagram' width='%d' height='%d' "
               "viewBox='0 0 %d %d'>", W, H, W, H);
    fputs("<defs><marker id='a' markerWidth='8' markerHeight='8' refX='4' refY='4' orient='auto'>"
          "<path d='M0,0 L8,4 L0,8 z' fill='#333'/></marker></defs>", f);
    snprintf(s, sizeof s, "T tokens -> one-hot T x %d", in->n_vocab);
    box(f, x, y, w, "#eef", "input token ids", s);
    arrow(f, x + w / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "W_embd %d x %d  ->  T x %d", in->n_vocab, in->n_embd, in->n_embd);
    box(f, x, y, w, "#dfd", "token embedding", s);
    arrow(f, x + w / 2, y + 34, y + 48); y += 48;
    int top = y;
    y += 10;
    const int bx = x + 20, bw = w - 40;
    snprintf(s, sizeof s, "x * rsqrt(mean(x^2) + %g) * g[%d]", in->norm_eps, in->n_embd);
    box(f, bx, y, bw, "#fff", "RMSNorm", s);
    arrow(f, bx + bw / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "Q %d x %d (%d heads), K,V %d x %d (%d KV heads)", in->n_embd,
             in->n_head * in->head_dim, in->n_head, in->n_embd, in->n_head_kv * in->head_dim,
             in->n_head_kv);
    box(f, bx, y, bw, "#ffd", "Q, K, V projections", s);
    arrow(f, bx + bw / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "theta %g on %d of %d dims per head", in->rope_theta, in->n_rot,
             in->head_dim);
    box(f, bx, y, bw, "#ffd", "RoPE on Q and K", s);
    arrow(f, bx + bw / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "softmax(QK^T/sqrt(%d)) V, causal, %d q heads per KV head", in->head_dim,
             in->n_head_kv ? in->n_head / in->n_head_kv : 0);
    box(f, bx, y, bw, "#ffd", "grouped-query attention", s);
    arrow(f, bx + bw / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "W_o %d x %d, then + residual", in->n_head * in->head_dim, in->n_embd);
    box(f, bx, y, bw, "#ffd", "attention output", s);
    arrow(f, bx + bw / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "g[%d]", in->n_embd);
    box(f, bx, y, bw, "#fff", "RMSNorm", s);
    arrow(f, bx + bw / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "gate, up %d -> %d; silu(gate) * up", in->n_embd, in->n_ff);
    box(f, bx, y, bw, "#fdf", "SwiGLU feed-forward", s);
    arrow(f, bx + bw / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "down %d -> %d, then + residual", in->n_ff, in->n_embd);
    box(f, bx, y, bw, "#fdf", "FFN down", s);
    y += 44;
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' rx='10' fill='none' stroke='#36c' "
               "stroke-dasharray='6,4'/>", x, top, w, y - top);
    fprintf(f, "<text x='%d' y='%d' class='l' fill='#36c'>x %d blocks</text>", x + w + 8,
            top + 20, in->n_layer);
    fprintf(f, "<text x='%d' y='%d' class='s'>T x %d in, T x %d out</text>", x + w + 8, top + 38,
            in->n_embd, in->n_embd);
    arrow(f, x + w / 2, y, y + 10); y += 10;
    box(f, x, y, w, "#fff", "final RMSNorm", "T x features");
    arrow(f, x + w / 2, y + 34, y + 44); y += 44;
    snprintf(s, sizeof s, "%s %d x %d  ->  logits T x %d",
             in->tied_output ? "W_embd^T (tied)" : "W_out", in->n_embd, in->n_vocab, in->n_vocab);
    box(f, x, y, w, "#dfd", "output projection", s);
    fputs("</svg>\n", f);
}

static void heatmap(FILE *f, const ex_attn *a, const ex_report *r) {
    const int cell = a->cols > 32 ? 8 : 18;
    int64_t rows = a->rows, cols = a->cols;
    int w = (int)(cols * cell) + 4, h = (int)(rows * cell) + 4;
    fprintf(f, "<figure><svg class='heat' width='%d' height='%d'>",
            w, h);
    for (int64_t y = 0; y < rows; y++)
        for (int64_t x = 0; x < cols; x++) {
            double p = a->p[y * cols + x];
            if (!(p >= 0)) p = 0;
            int shade = (int)(255 - 255 * sqrt(p > 1 ? 1 : p));
            fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='rgb(%d,%d,255)'>"
                       "<title>%lld attends %lld: %.4f</title></rect>",
                    (int)(2 + x * cell), (int)(2 + y * cell), cell, cell, shade, shade,
                    (long long)y, (long long)x, p);
        }
    fprintf(f, "</svg><figcaption>block %d, head %d: T x positions = %lld x %lld "
               "(row = query token, column = key position)</figcaption></figure>\n",
            a->layer, a->head, (long long)rows, (long long)cols);
    (void)r;
}

int explain_write_html(const ex_report *r, FILE *f) {
    const l3c_model_info *in = &r->info;
    char b1[32], b2[32];
    fputs("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
          "<title>llama3c explain</title><style>"
          "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
          "text-align:right}th{background:#eee}td.n{text-align:left}"
          "text.l{font:bold 13px sans-serif}text.s{font:11px monospace}"
          "figure{display:inline-block;margin:8px}code{background:#f4f4f4}"
          "</style></head><body>\n", f);
    fputs("<h1>", f);
    esc(f, in->name);
    fputs("</h1><p>File <code>", f);
    esc(f, r->model_path);
    fputs("</code>, computed by <code>llama3c explain</code> from the file itself.</p>\n", f);
    fputs("<h2>The block stack</h2>\n", f);
    diagram(f, r);
    fputs("<h2>Model card</h2><table>\n", f);
    fprintf(f, "<tr><td class='n'>vocabulary</td><td>%d</td></tr>"
               "<tr><td class='n'>features (dim)</td><td>%d</td></tr>"
               "<tr><td class='n'>blocks</td><td>%d</td></tr>"
               "<tr><td class='n'>query heads</td><td>%d</td></tr>"
               "<tr><td class='n'>key/value heads</td><td>%d</td></tr>"
               "<tr><td class='n'>head dimension</td><td>%d</td></tr>"
               "<tr><td class='n'>FFN hidden</td><td>%d</td></tr>"
               "<tr><td class='n'>context window</td><td>%d</td></tr>"
               "<tr><td class='n'>rope theta</td><td>%g</td></tr>"
               "<tr><td class='n'>norm epsilon</td><td>%g</td></tr>"
               "<tr><td class='n'>output</td><td>%s</td></tr>\n",
            in->n_vocab, in->n_embd, in->n_layer, in->n_head, in->n_head_kv, in->head_dim, in->n_ff,
            in->n_ctx_train, in->rope_theta, in->norm_eps, in->tied_output ? "tied" : "separate");
    explain_fmt_count(r->params.sum, b1, sizeof b1);
    fprintf(f, "<tr><td class='n'>parameters</td><td>%lld (%s)</td></tr></table>\n",
            (long long)r->params.sum, b1);
    if (r->ffn.found)
        fprintf(f, "<p>FFN hidden by Meta's rule: 4 &times; %d = %lld; &times; 2/3 &rarr; %lld; "
                   "&times; %.2g &rarr; %lld; rounded up to a multiple of %d &rarr; %lld.</p>\n",
                in->n_embd, (long long)r->ffn.four_d, (long long)r->ffn.two_thirds,
                r->ffn.multiplier, (long long)r->ffn.scaled, r->ffn.multiple_of,
                (long long)r->ffn.rounded);
    fputs("<h2>Parameters</h2><table><tr><th>component</th><th>per block</th>"
          "<th>whole model</th></tr>\n", f);
    for (int c = 0; c < EX_N_COMPONENTS; c++)
        if (r->params.total[c])
            fprintf(f, "<tr><td class='n'>%s</td><td>%lld</td><td>%lld</td></tr>\n",
                    explain_component_names[c], (long long)r->params.per_layer[c],
                    (long long)r->params.total[c]);
    fprintf(f, "<tr><th>total</th><th></th><th>%lld</th></tr></table>\n", (long long)r->params.sum);
    fputs("<h2>Memory</h2><table><tr><th>tensor type</th><th>tensors</th><th>bytes</th></tr>\n", f);
    for (int t = 0; t < r->n_types; t++) {
        explain_fmt_bytes((double)r->types[t].bytes, b2, sizeof b2);
        fprintf(f, "<tr><td class='n'>%s</td><td>%d</td><td>%s</td></tr>\n", r->types[t].name,
                r->types[t].count, b2);
    }
    fputs("</table><table><tr><th>KV cache (F16) for</th><th>bytes</th></tr>\n", f);
    for (int i = 0; i < r->n_kv_lengths; i++) {
        explain_fmt_bytes((double)r->kv_per_pos * r->kv_lengths[i], b2, sizeof b2);
        fprintf(f, "<tr><td class='n'>%d tokens</td><td>%s</td></tr>\n", r->kv_lengths[i], b2);
    }
    fputs("</table>\n", f);
    if (r->n_tokens > 0) {
        fputs("<h2>Traced run</h2><p>Prompt: <code>", f);
        esc(f, r->prompt);
        fputs("</code></p><table><tr><th>t</th><th>id</th><th>piece</th></tr>\n", f);
        for (int64_t i = 0; i < r->n_tokens; i++) {
            fprintf(f, "<tr><td>%lld</td><td>%d</td><td class='n'><code>", (long long)i,
                    r->tokens[i]);
            esc(f, r->pieces[i]);
            fputs("</code></td></tr>\n", f);
        }
        fputs("</table><table><tr><th>block</th><th>op</th><th>shape</th><th>first values "
              "(last row)</th><th>rms</th><th>ms</th></tr>\n", f);
        for (int64_t i = 0; i < r->n_steps; i++) {
            const ex_step *s = &r->steps[i];
            fprintf(f, "<tr><td>%s%d</td><td class='n'>%s</td><td>%lld &times; %lld</td><td "
                       "class='n'><code>", s->layer < 0 ? "" : "", s->layer, s->op,
                    (long long)s->rows, (long long)s->cols);
            for (int k = 0; k < s->n_head && k < 4; k++) fprintf(f, "%s%.4g", k ? ", " : "", s->head[k]);
            fprintf(f, "</code></td><td>%.3g</td><td>%.2f</td></tr>\n", s->rms, s->ms);
        }
        fputs("</table><h2>Attention</h2>\n", f);
        for (int a = 0; a < r->n_attn; a++) heatmap(f, &r->attn[a], r);
        fputs("<h2>Next token</h2><table><tr><th>id</th><th>piece</th><th>p</th></tr>\n", f);
        for (int i = 0; i < 5; i++) {
            if (r->top[i].id < 0) continue;
            fprintf(f, "<tr><td>%d</td><td class='n'><code>", r->top[i].id);
            esc(f, r->top[i].piece);
            fprintf(f, "</code></td><td>%.4f</td></tr>\n", r->top[i].prob);
        }
        fputs("</table>\n", f);
    }
    fputs("</body></html>\n", f);
    return ferror(f) ? -1 : 0;
}
