/*
 * report.c -- progress line, JSONL metrics log, SVG loss plot (contract: report.h).
 */
#include "train/report.h"

#include "util/util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- progress line */

static void fmt_duration(char *b, size_t cap, double s) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(b, cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(b, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(b, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(b, cap, "%lds", t);
}

static void fmt_commas(char *b, size_t cap, double v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%.0f", v < 0 ? 0 : v), o = 0;
    for (int i = 0; i < n && (size_t)o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) b[o++] = ',';
        b[o++] = tmp[i];
    }
    b[o] = '\0';
}

int l3c_progress_format(char *buf, size_t cap, int64_t step, int64_t total, int width, double loss, double lr,
                        double tok_per_s, double trained_per_s, double eta_s) {
    char bar[256], rate[32], eta[32], trained[64] = "";
    width = L3C_MAX(1, L3C_MIN(width, (int)sizeof bar - 1));
    const double frac = total > 0 ? L3C_MIN(1.0, (double)step / (double)total) : 0;
    const int filled = (int)(frac * width);
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : i == filled ? '>' : ' ';
    bar[width] = '\0';
    fmt_commas(rate, sizeof rate, tok_per_s);
    fmt_duration(eta, sizeof eta, eta_s);
    if (trained_per_s >= 0) {
        char t[32];
        fmt_commas(t, sizeof t, trained_per_s);
        snprintf(trained, sizeof trained, "%s trained tok/s, ", t);
    }
    return snprintf(buf, cap, "step %lld/%lld [%s] loss %.3f lr %.1e | %s%s tok/s | ETA %s", (long long)step,
                    (long long)total, bar, loss, lr, trained, rate, eta);
}

void l3c_progress_init(l3c_progress *p, FILE *f, int64_t first, int64_t total, int every, int tty) {
    memset(p, 0, sizeof *p);
    p->f = f;
    p->first = first;
    p->total = total;
    p->every = every > 0 ? every : 10;
    p->tty = !f ? 0 : tty >= 0 ? tty : isatty(fileno(f));
    p->width = 20;
    p->t0 = l3c_time_s();
}

void l3c_progress_update(l3c_progress *p, int64_t step, double loss, double lr, double tok_per_s,
                         double trained_per_s) {
    if (!p->f) return;
    if (!p->tty && step % p->every != 0 && step != p->total) return;
    const double el = l3c_time_s() - p->t0;
    const int64_t done = step - p->first;
    const double eta = done > 0 ? el / (double)done * (double)(p->total - step) : -1;
    char line[512];
    int n = l3c_progress_format(line, sizeof line, step, p->total, p->width, loss, lr, tok_per_s, trained_per_s, eta);
    size_t len = n < 0 ? 0 : L3C_MIN((size_t)n, sizeof line - 1);
    if (p->tty) {
        /* pad with spaces over a longer previous line */
        fprintf(p->f, "\r%s%*s", line, p->last_len > len ? (int)(p->last_len - len) : 0, "");
        p->last_len = len;
    } else {
        fprintf(p->f, "%s\n", line);
    }
    fflush(p->f);
}

void l3c_progress_finish(l3c_progress *p) {
    if (!p->f) return;
    if (p->tty && p->last_len) fputc('\n', p->f);
    p->last_len = 0;
    fflush(p->f);
}

/* ---------------------------------------------------------------- metrics log */

struct l3c_metrics_log {
    FILE *f;
    char *path;
};

l3c_metrics_row l3c_metrics_row_empty(int64_t step) {
    l3c_metrics_row r;
    r.step = step;
    r.epoch = r.tokens = r.trained_tokens = -1;
    r.loss = r.eval_loss = r.eval_ppl = r.lr = r.grad_norm = r.tok_per_s = r.trained_tok_per_s = r.elapsed_s = NAN;
    return r;
}

l3c_status l3c_metrics_open(const char *path, int append, l3c_metrics_log **out) {
    if (!out || !path) return l3c_fail(L3C_ERR_INVALID_ARG, "metrics: NULL path or output");
    *out = NULL;
    l3c_metrics_log *m = l3c_calloc(1, sizeof *m);
    if (!m || !(m->path = l3c_strdup(path))) {
        free(m);
        return l3c_fail(L3C_ERR_NOMEM, "metrics: out of memory");
    }
    if (!(m->f = fopen(path, append ? "a" : "w"))) {
        l3c_status st = l3c_fail(L3C_ERR_IO, "metrics: %s: cannot open for writing: %s", path, strerror(errno));
        free(m->path);
        free(m);
        return st;
    }
    *out = m;
    return L3C_OK;
}

static void put_double(FILE *f, const char *key, double v) {
    if (isnan(v)) return;
    if (isinf(v)) fprintf(f, ",\"%s\":null", key);
    else fprintf(f, ",\"%s\":%.9g", key, v);
}

l3c_status l3c_metrics_write(l3c_metrics_log *log, const l3c_metrics_row *r) {
    if (!log || !r) return l3c_fail(L3C_ERR_INVALID_ARG, "metrics: NULL log or row");
    FILE *f = log->f;
    fprintf(f, "{\"step\":%lld", (long long)r->step);
    if (r->epoch >= 0) fprintf(f, ",\"epoch\":%lld", (long long)r->epoch);
    put_double(f, "loss", r->loss);
    put_double(f, "eval_loss", r->eval_loss);
    put_double(f, "eval_ppl", r->eval_ppl);
    put_double(f, "lr", r->lr);
    put_double(f, "grad_norm", r->grad_norm);
    if (r->tokens >= 0) fprintf(f, ",\"tokens\":%lld", (long long)r->tokens);
    put_double(f, "tok_per_s", r->tok_per_s);
    if (r->trained_tokens >= 0) fprintf(f, ",\"trained_tokens\":%lld", (long long)r->trained_tokens);
    put_double(f, "trained_tok_per_s", r->trained_tok_per_s);
    put_double(f, "elapsed_s", r->elapsed_s);
    fputs("}\n", f);
    if (fflush(f) != 0 || ferror(f))
        return l3c_fail(L3C_ERR_IO, "metrics: %s: write failed: %s", log->path, strerror(errno));
    return L3C_OK;
}

l3c_status l3c_metrics_close(l3c_metrics_log *log) {
    if (!log) return L3C_OK;
    l3c_status st = L3C_OK;
    if (fclose(log->f) != 0) st = l3c_fail(L3C_ERR_IO, "metrics: %s: close failed: %s", log->path, strerror(errno));
    free(log->path);
    free(log);
    return st;
}

/* ---------------------------------------------------------------- SVG plot */

enum { W = 800, H = 450, ML = 70, MR = 20, MT = 40, MB = 50 };

/* Tick spacing 1, 2 or 5 x 10^k giving about `want` intervals over span. */
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t' || *s == '\n') fputc(*s, f);
        }
    }
}

static void range(const double *v, size_t n, double *lo, double *hi) {
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            *lo = L3C_MIN(*lo, v[i]);
            *hi = L3C_MAX(*hi, v[i]);
        }
}

l3c_status l3c_plot_svg(const char *path, const char *title, const double *step, const double *loss, size_t n,
                        const double *estep, const double *eloss, size_t ne) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    range(step, n, &x0, &x1);
    range(estep, ne, &x0, &x1);
    range(loss, n, &y0, &y1);
    range(eloss, ne, &y0, &y1);
    if (!(x0 <= x1) || !(y0 <= y1)) return l3c_fail(L3C_ERR_INVALID_ARG, "plot: %s: no finite point to plot", path);
    if (x1 - x0 < 1e-12) x0 -= 1, x1 += 1;
    if (y1 - y0 < 1e-12 * L3C_MAX(1.0, fabs(y0))) y0 -= 0.5, y1 += 0.5;
    /* y: widen to whole ticks; x: the data range (steps start where the run did) */
    const double ys = nice_step(y1 - y0, 6), xs = nice_step(x1 - x0, 8);
    y0 = floor(y0 / ys) * ys;
    y1 = ceil(y1 / ys) * ys;
    const double pw = W - ML - MR, ph = H - MT - MB;
#define PX(x) (ML + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (MT + ph - ((y) - y0) / (y1 - y0) * ph)

    FILE *f = fopen(path, "w");
    if (!f) return l3c_fail(L3C_ERR_IO, "plot: %s: cannot open for writing: %s", path, strerror(errno));
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text id=\"title\" x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">", W / 2);
    xml_text(f, title ? title : "training loss");
    fputs("</text>\n", f);
    fprintf(f, "<rect id=\"plot\" x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n",
            ML, MT, pw, ph);
    /* ticks, grid and labels */
    fputs("<g id=\"yticks\" stroke=\"#ddd\">\n", f);
    for (double y = y0; y <= y1 + ys * 1e-6; y += ys) {
        double v = fabs(y) < ys * 1e-9 ? 0 : y;
        fprintf(f, "<line x1=\"%d\" x2=\"%.0f\" y1=\"%.2f\" y2=\"%.2f\"/>"
                   "<text class=\"ytick\" x=\"%d\" y=\"%.2f\" data-v=\"%.9g\" text-anchor=\"end\" "
                   "dominant-baseline=\"middle\" stroke=\"none\" fill=\"#000\">%g</text>\n",
                ML, ML + pw, PY(v), PY(v), ML - 6, PY(v), v, v);
    }
    fputs("</g>\n<g id=\"xticks\" stroke=\"#ddd\">\n", f);
    for (double x = ceil(x0 / xs) * xs; x <= x1 + xs * 1e-6; x += xs)
        fprintf(f, "<line x1=\"%.2f\" x2=\"%.2f\" y1=\"%d\" y2=\"%.0f\"/>"
                   "<text class=\"xtick\" x=\"%.2f\" y=\"%.0f\" data-v=\"%.9g\" text-anchor=\"middle\" stroke=\"none\" "
                   "fill=\"#000\">%g</text>\n",
                PX(x), PX(x), MT, MT + ph, PX(x), MT + ph + 18, x, x);
    fputs("</g>\n", f);
    fprintf(f, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">step</text>\n", ML + pw / 2, H - 10);
    fprintf(f, "<text x=\"16\" y=\"%.0f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.0f)\">loss</text>\n",
            MT + ph / 2, MT + ph / 2);
    /* data */
    fprintf(f, "<g id=\"data\" data-x0=\"%.17g\" data-x1=\"%.17g\" data-y0=\"%.17g\" data-y1=\"%.17g\">\n", x0, x1, y0,
            y1);
    if (n) {
        fputs("<polyline id=\"train\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"", f);
        int first = 1;
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(step[i]) || !isfinite(loss[i])) continue;
            fprintf(f, "%s%.2f,%.2f", first ? "" : " ", PX(step[i]), PY(loss[i]));
            first = 0;
        }
        fputs("\"/>\n", f);
    }
    if (ne) {
        fputs("<g id=\"eval\" fill=\"#d62728\">\n", f);
        for (size_t i = 0; i < ne; i++)
            if (isfinite(estep[i]) && isfinite(eloss[i]))
                fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\"/>\n", PX(estep[i]), PY(eloss[i]));
        fputs("</g>\n", f);
    }
    fputs("</g>\n", f);
    /* legend */
    fprintf(f, "<g id=\"legend\"><line x1=\"%.0f\" x2=\"%.0f\" y1=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" "
               "stroke-width=\"1.5\"/><text x=\"%.0f\" y=\"%d\">train loss</text>"
               "<circle cx=\"%.0f\" cy=\"%d\" r=\"3.5\" fill=\"#d62728\"/><text x=\"%.0f\" y=\"%d\">eval loss</text></g>\n",
            ML + pw - 190, ML + pw - 170, MT + 14, MT + 14, ML + pw - 165, MT + 18, ML + pw - 85, MT + 14,
            ML + pw - 75, MT + 18);
    fputs("</svg>\n", f);
#undef PX
#undef PY
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    return bad ? l3c_fail(L3C_ERR_IO, "plot: %s: write failed", path) : L3C_OK;
}

typedef struct series {
    double *x, *y;
    size_t n, cap;
} series;

static l3c_status series_push(series *s, double x, double y) {
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 256;
        double *nx = l3c_realloc(s->x, c * sizeof *nx);
        if (!nx) return l3c_fail(L3C_ERR_NOMEM, "plot: out of memory");
        s->x = nx;
        double *ny = l3c_realloc(s->y, c * sizeof *ny);
        if (!ny) return l3c_fail(L3C_ERR_NOMEM, "plot: out of memory");
        s->y = ny;
        s->cap = c;
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
    return L3C_OK;
}

l3c_status l3c_plot_svg_from_jsonl(const char *jsonl, const char *svg, const char *title) {
    FILE *f = fopen(jsonl, "r");
    if (!f) return l3c_fail(L3C_ERR_IO, "plot: %s: cannot open: %s", jsonl, strerror(errno));
    series tr = {0}, ev = {0};
    l3c_status st = L3C_OK;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    while (!st && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r' || line[k] == '\n')) k++;
        if (k == (size_t)len) continue;
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)len, 0, &jerr);
        if (!o || !json_is_object(o)) {
            st = l3c_fail(L3C_ERR_FORMAT, "plot: %s:%ld: %s", jsonl, lineno, o ? "not a JSON object" : jerr.text);
        } else {
            json_t *s = json_object_get(o, "step"), *l = json_object_get(o, "loss"), *e = json_object_get(o, "eval_loss");
            if (!json_is_number(s)) st = l3c_fail(L3C_ERR_FORMAT, "plot: %s:%ld: no \"step\" number", jsonl, lineno);
            if (!st && json_is_number(l)) st = series_push(&tr, json_number_value(s), json_number_value(l));
            if (!st && json_is_number(e)) st = series_push(&ev, json_number_value(s), json_number_value(e));
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (!st && tr.n + ev.n == 0) st = l3c_fail(L3C_ERR_FORMAT, "plot: %s: no \"loss\" or \"eval_loss\" values", jsonl);
    if (!st) st = l3c_plot_svg(svg, title, tr.x, tr.y, tr.n, ev.x, ev.y, ev.n);
    free(tr.x);
    free(tr.y);
    free(ev.x);
    free(ev.y);
    return st;
}
