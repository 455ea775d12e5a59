/*
 * report.h -- what a training run shows and leaves behind: the progress line on stderr, the
 * JSONL metrics log, and a loss plot as a standalone SVG.
 *
 * Progress: `step 120/500 [=====>    ] loss 2.314 lr 1.9e-04 | 456 trained tok/s, 1,234 tok/s |
 * ETA 3m12s` (trained: target tokens with a loss; tok/s: every position computed), redrawn in
 * place with \r on a terminal; elsewhere (a log file, CI) one plain line every `every` steps and at
 * the last step.
 *
 * Metrics log: one JSON object per line, flushed per line, keys in this order when present:
 *   {"step", "epoch", "loss", "eval_loss", "eval_ppl", "lr", "grad_norm", "tokens", "tok_per_s",
 *    "trained_tokens", "trained_tok_per_s", "elapsed_s"}; a double that is NaN and an integer < 0 are left out (so eval lines carry only
 *   step / eval_loss / eval_ppl, ...); an infinite double is written as null.
 *
 * Plot: train loss per step as a polyline, eval loss as circles, axes with "nice" ticks (1, 2, 5 x
 * 10^k), labels and a title, 800 x 450 px. The plot area is <rect id="plot" x y width height> and
 * its <g id="data"> carries data-x0 / data-x1 / data-y0 / data-y1 (the value range the area maps
 * to), so a reader can map coordinates back to values: x = x0 + (px - rect.x) / rect.width * (x1 - x0),
 * y = y0 + (rect.y + rect.height - py) / rect.height * (y1 - y0). Coordinates have 2 decimals.
 */
#ifndef L3C_TRAIN_REPORT_H
#define L3C_TRAIN_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "llama3c.h"

/* ---------------------------------------------------------------- progress line */

typedef struct l3c_progress {
    FILE *f;
    int64_t total;   /* steps of the run */
    int64_t first;   /* the step the run (re)started at, for the rate and ETA */
    int every;       /* not a terminal: a line every `every` steps */
    int tty;         /* redraw with \r */
    int width;       /* bar width in characters */
    double t0;       /* l3c_time_s() at init */
    size_t last_len; /* length of the last drawn line (to blank a shorter one) */
} l3c_progress;

/* f: usually stderr; tty: -1 detects (isatty), 0 / 1 force. first: the step the run starts at. */
/* f NULL: silent (--quiet). tty < 0: isatty(f). */
void l3c_progress_init(l3c_progress *p, FILE *f, int64_t first, int64_t total, int every, int tty);
/* After step `step` (1-based count of steps done) with its loss, learning rate and throughput
 * (positions / s, trained targets / s; trained_per_s < 0 leaves it out). */
void l3c_progress_update(l3c_progress *p, int64_t step, double loss, double lr, double tok_per_s,
                         double trained_per_s);
/* Ends the redrawn line (newline on a terminal). */
void l3c_progress_finish(l3c_progress *p);
/* The line itself (no \r / \n), for the above and for tests; eta_s < 0: "ETA ?". Returns the length
 * snprintf would write. */
int l3c_progress_format(char *buf, size_t cap, int64_t step, int64_t total, int width, double loss, double lr,
                        double tok_per_s, double trained_per_s, double eta_s);

/* ---------------------------------------------------------------- metrics log */

typedef struct l3c_metrics_row {
    int64_t step;                /* always written */
    int64_t epoch, tokens, trained_tokens; /* < 0: left out */
    double loss, eval_loss, eval_ppl, lr, grad_norm, tok_per_s, trained_tok_per_s, elapsed_s; /* NaN: left out */
} l3c_metrics_row;

/* A row with step set and everything else absent. */
l3c_metrics_row l3c_metrics_row_empty(int64_t step);

typedef struct l3c_metrics_log l3c_metrics_log;
/* append 1 keeps an existing file (a resumed run). *out NULL on failure. */
l3c_status l3c_metrics_open(const char *path, int append, l3c_metrics_log **out);
l3c_status l3c_metrics_write(l3c_metrics_log *log, const l3c_metrics_row *row);
/* Closes and frees; an error on close is returned. NULL is safe. */
l3c_status l3c_metrics_close(l3c_metrics_log *log);

/* ---------------------------------------------------------------- loss plot */

/* Writes the SVG. Train points (step[i], loss[i]), i < n; eval points (estep[j], eloss[j]), j < ne;
 * either set may be empty, not both. Non-finite values are skipped. title may be NULL. */
l3c_status l3c_plot_svg(const char *path, const char *title, const double *step, const double *loss, size_t n,
                        const double *estep, const double *eloss, size_t ne);
/* The same from a metrics log: "loss" lines as the train curve, "eval_loss" lines as eval points.
 * Errors name the file and line. */
l3c_status l3c_plot_svg_from_jsonl(const char *jsonl, const char *svg, const char *title);

#endif /* L3C_TRAIN_REPORT_H */
