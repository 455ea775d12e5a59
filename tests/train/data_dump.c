/*
 * data_dump.c -- test driver of the training data library (src/train/data.c): loads a dataset
 * with a model's tokenizer and chat template and prints it as one JSON object on stdout, for
 * tests/py/test_train_data.py (masks against jinja2 + reference tokenizers, batches, splits).
 *
 *   data_dump -m MODEL.gguf --data FILE [--seq T] [--format auto|text|jsonl|chat] [--drop-long]
 *             [--min-tokens N] [--template NAME] [--date D] [--split FRAC --seed S]
 *             [--batch B --steps N --from-step K --seed S [--pack]] [--describe]
 *   data_dump --plot METRICS.jsonl OUT.svg [--title T]     (l3c_plot_svg_from_jsonl, no model)
 *
 * Output: {"format", "seq_len", "pad_id", "n_records", "n_truncated", "n_dropped_long",
 * "n_dropped_empty", "n_tokens_cut", "n_trained", "examples": [{"line", "tokens", "mask"}],
 * with --split: "train" / "eval": [the examples' lines], with --batch: "steps": [{"step",
 * "epoch", "start", "n_trained", "ids", "targets"}] for steps K .. K+N-1 of the training
 * order (seeded per epoch); --pack: of the (split's training) examples packed into rows of T
 * as `llama3c train` packs them (l3c_data_pack), each step also with "pos" (the rope position
 * of every token, restarting at 0 where an example starts). --describe: l3c_data_describe on
 * stderr. Exit 1 with the library's message on stderr on failure.
 */
#include "train/data.h"
#include "train/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ints(const int32_t *a, size_t n) {
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", a[i]);
    putchar(']');
}

static void lines(const l3c_dataset *ds) {
    putchar('[');
    for (size_t i = 0; ds && i < ds->n_ex; i++) printf(i ? ",%lld" : "%lld", (long long)ds->ex[i].line);
    putchar(']');
}

static int fail(const char *what) {
    fprintf(stderr, "data_dump: %s: %s\n", what, l3c_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *data = NULL, *plot_in = NULL, *plot_out = NULL, *title = NULL;
    l3c_data_params p = l3c_data_default_params();
    double split = -1;
    unsigned long long seed = 0;
    int B = 0, steps = 1, describe = 0, pack = 0;
    long long from = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("-m")) model_path = v;
        else if (ARG("--data")) data = v;
        else if (ARG("--title")) title = v;
        else if (strcmp(a, "--plot") == 0 && i + 2 < argc) {
            plot_in = argv[++i];
            plot_out = argv[++i];
        }
        else if (ARG("--seq")) p.seq_len = atoi(v);
        else if (ARG("--min-tokens")) p.min_tokens = atoi(v);
        else if (ARG("--date")) p.date = v;
        else if (ARG("--split")) split = atof(v);
        else if (ARG("--seed")) seed = strtoull(v, NULL, 10);
        else if (ARG("--batch")) B = atoi(v);
        else if (ARG("--steps")) steps = atoi(v);
        else if (ARG("--from-step")) from = atoll(v);
        else if (ARG("--format")) {
            p.format = !strcmp(v, "text") ? L3C_DATA_TEXT : !strcmp(v, "jsonl") ? L3C_DATA_JSONL_TEXT
                     : !strcmp(v, "chat") ? L3C_DATA_CHAT : L3C_DATA_AUTO;
        } else if (ARG("--template")) {
            for (int t = L3C_CHAT_LLAMA3; t <= L3C_CHAT_LLAMA31; t++)
                if (!strcmp(v, l3c_chat_template_name((l3c_chat_template)t))) p.tmpl = (l3c_chat_template)t;
        } else if (!strcmp(a, "--drop-long")) p.drop_long = 1;
        else if (!strcmp(a, "--describe")) describe = 1;
        else if (!strcmp(a, "--pack"))
            pack = 1;
        else {
            fprintf(stderr, "data_dump: unknown or incomplete argument %s\n", a);
            return 2;
        }
    }
    if (plot_in) return l3c_plot_svg_from_jsonl(plot_in, plot_out, title) ? fail("plot") : 0;
    if (!model_path || !data) {
        fprintf(stderr, "data_dump: -m MODEL and --data FILE are required\n");
        return 2;
    }
    l3c_model *model = NULL;
    l3c_model_params mp = l3c_model_default_params();
    if (l3c_model_load(model_path, &mp, &model) != L3C_OK) return fail(model_path);
    l3c_dataset *ds = NULL, *train = NULL, *eval = NULL, *packed = NULL;
    int rc = 0;
    if (l3c_data_load(model, data, &p, &ds) != L3C_OK) {
        rc = fail("load");
        goto done;
    }
    if (describe) l3c_data_describe(ds, NULL, stderr);
    if (split >= 0 && l3c_data_split(ds, split, seed, &train, &eval) != L3C_OK) {
        rc = fail("split");
        goto done;
    }
    static const char *const fmt[] = {"auto", "text", "jsonl", "chat"};
    printf("{\"format\":\"%s\",\"seq_len\":%d,\"pad_id\":%d,\"n_records\":%zu,\"n_truncated\":%zu,"
           "\"n_dropped_long\":%zu,\"n_dropped_empty\":%zu,\"n_tokens_cut\":%zu,\"n_trained\":%lld,\"examples\":[",
           fmt[ds->format], ds->seq_len, ds->pad_id, ds->n_records, ds->n_truncated, ds->n_dropped_long,
           ds->n_dropped_empty, ds->n_tokens_cut, (long long)ds->n_trained);
    for (size_t i = 0; i < ds->n_ex; i++) {
        const l3c_data_example *e = &ds->ex[i];
        printf("%s{\"line\":%lld,\"n_trained\":%d,\"tokens\":", i ? "," : "", (long long)e->line, e->n_trained);
        ints(ds->tokens + e->off, (size_t)e->len);
        printf(",\"mask\":[");
        for (int32_t k = 0; k < e->len; k++) printf(k ? ",%d" : "%d", ds->mask[e->off + (size_t)k]);
        printf("]}");
    }
    putchar(']');
    if (split >= 0) {
        printf(",\"train\":");
        lines(train);
        printf(",\"eval\":");
        lines(eval);
    }
    if (B > 0) {
        const int T = p.seq_len;
        const l3c_dataset *d = train ? train : ds;
        if (pack) {
            if (l3c_data_pack(d, T, &packed) != L3C_OK) {
                rc = fail("pack");
                goto done;
            }
            d = packed;
        }
        int32_t *order = malloc(d->n_ex * sizeof *order),
                *ids = malloc((size_t)B * T * sizeof *ids),
                *tgt = malloc((size_t)B * T * sizeof *tgt),
                *pos = malloc((size_t)B * T * sizeof *pos);
        printf(",\"steps\":[");
        for (long long s = from; s < from + steps; s++) {
            int64_t epoch;
            size_t start;
            l3c_data_locate(d, B, s, &epoch, &start);
            l3c_data_order(d->n_ex, seed, epoch, order);
            int64_t nt = l3c_data_batch_pos(d, order, start, B, T, ids, tgt, pos);
            printf("%s{\"step\":%lld,\"epoch\":%lld,\"start\":%zu,\"n_trained\":%lld,\"counted\":%lld,\"ids\":",
                   s > from ? "," : "", s, (long long)epoch, start, (long long)nt,
                   (long long)l3c_data_count_targets(tgt, (size_t)B * T));
            ints(ids, (size_t)B * T);
            printf(",\"targets\":");
            ints(tgt, (size_t)B * T);
            if (pack) {
                printf(",\"pos\":");
                ints(pos, (size_t)B * T);
            }
            putchar('}');
        }
        putchar(']');
        free(order);
        free(ids);
        free(tgt);
        free(pos);
    }
    printf("}\n");
done:
    l3c_data_free(ds);
    l3c_data_free(train);
    l3c_data_free(eval);
    l3c_data_free(packed);
    l3c_model_free(model);
    return rc;
}
