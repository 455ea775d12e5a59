/*
 * cmd_info.c -- `llama3c info`: what a GGUF model is. Hyperparameters (l3c_model_get_info), chat
 * template, tensor types with counts and bytes, the exact parameter count (sum of the tensors'
 * element counts), weight memory and KV-cache size; --tensors lists every tensor; --json prints
 * the same as one JSON object. Text output is "key value" lines so scripts can grep it.
 */
#include "cli.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

static const char *CMD = "info";

static void help(FILE *f) {
    fprintf(f, "usage: llama3c info -m FILE [--tensors] [--json]\n\n"
               "Shows a model's hyperparameters, chat template, tensor types, parameter count and memory.\n\n"
               "  -m, --model FILE   GGUF model (required)\n"
               "  --tensors          list every tensor (name, type, shape, bytes)\n"
               "  --json             print one JSON object instead of text\n");
}

typedef struct type_row {
    const char *name;
    int64_t count, elements;
    size_t bytes;
} type_row;

static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p == '\n') printf("\\n");
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int list = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(path = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "--tensors")) {
            list = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] != '-' && !path) {
            path = a;
        } else {
            return cli_usage_error(CMD, "unknown option '%s'", a);
        }
    }
    if (!path) return cli_usage_error(CMD, "no model: pass -m FILE.gguf");

    l3c_model *model = NULL;
    if (cli_load_model(CMD, path, 0, 0, 0, &model)) return CLI_ERR;
    l3c_model_info mi;
    l3c_model_get_info(model, &mi);
    l3c_chat_template tmpl = l3c_chat_template_detect(model);
    int64_t nt = l3c_model_n_tensors(model);
    type_row *rows = calloc((size_t)(nt > 0 ? nt : 1), sizeof *rows);
    l3c_tensor_desc *td = calloc((size_t)(nt > 0 ? nt : 1), sizeof *td);
    int rc = 0;
    if (!rows || !td) {
        fprintf(stderr, "llama3c %s: out of memory\n", CMD);
        rc = CLI_ERR;
        goto done;
    }
    int64_t n_rows = 0, n_params = 0;
    size_t total_bytes = 0;
    for (int64_t i = 0; i < nt; i++) {
        if (l3c_model_tensor_desc(model, i, &td[i]) != L3C_OK) {
            rc = cli_runtime_error(CMD, path);
            goto done;
        }
        n_params += td[i].n_elements;
        total_bytes += td[i].nbytes;
        int64_t r = 0;
        while (r < n_rows && strcmp(rows[r].name, td[i].type_name)) r++;
        if (r == n_rows) rows[n_rows++].name = td[i].type_name;
        rows[r].count++;
        rows[r].elements += td[i].n_elements;
        rows[r].bytes += td[i].nbytes;
    }
    size_t kv_pos = l3c_model_kv_bytes_per_pos(model, L3C_KV_F16);
    size_t kv_full = kv_pos * (size_t)(mi.n_ctx_train > 0 ? mi.n_ctx_train : 0);

    if (json) {
        printf("{\"file\": ");
        json_str(path);
        printf(", \"name\": ");
        json_str(mi.name);
        printf(", \"architecture\": ");
        json_str(mi.arch);
        printf(", \"file_type\": ");
        json_str(mi.file_type);
        printf(", \"chat_template\": ");
        json_str(l3c_chat_template_name(tmpl));
        printf(",\n \"n_vocab\": %d, \"n_ctx_train\": %d, \"n_embd\": %d, \"n_layer\": %d, \"n_head\": %d, "
               "\"n_head_kv\": %d, \"head_dim\": %d, \"n_ff\": %d, \"n_rot\": %d, \"rope_theta\": %.9g, "
               "\"norm_eps\": %.9g, \"tied_output\": %s, \"has_rope_freqs\": %s,\n",
               (int)mi.n_vocab, (int)mi.n_ctx_train, (int)mi.n_embd, (int)mi.n_layer, (int)mi.n_head,
               (int)mi.n_head_kv, (int)mi.head_dim, (int)mi.n_ff, (int)mi.n_rot, (double)mi.rope_theta,
               (double)mi.norm_eps, mi.tied_output ? "true" : "false", mi.has_rope_freqs ? "true" : "false");
        printf(" \"n_tensors\": %lld, \"n_params\": %lld, \"weight_bytes\": %zu, \"kv_bytes_per_pos_f16\": %zu, "
               "\"kv_bytes_full_ctx_f16\": %zu,\n \"tensor_types\": [",
               (long long)nt, (long long)n_params, total_bytes, kv_pos, kv_full);
        for (int64_t r = 0; r < n_rows; r++) {
            printf("%s{\"type\": ", r ? ", " : "");
            json_str(rows[r].name);
            printf(", \"count\": %lld, \"elements\": %lld, \"bytes\": %zu}", (long long)rows[r].count,
                   (long long)rows[r].elements, rows[r].bytes);
        }
        printf("]");
        if (list) {
            printf(",\n \"tensors\": [");
            for (int64_t i = 0; i < nt; i++) {
                printf("%s\n  {\"name\": ", i ? "," : "");
                json_str(td[i].name);
                printf(", \"type\": ");
                json_str(td[i].type_name);
                printf(", \"shape\": [");
                for (int d = 0; d < td[i].n_dims; d++) printf("%s%lld", d ? ", " : "", (long long)td[i].ne[d]);
                printf("], \"elements\": %lld, \"bytes\": %zu}", (long long)td[i].n_elements, td[i].nbytes);
            }
            printf("]");
        }
        printf("}\n");
        goto done;
    }

    printf("file            %s\n", path);
    printf("name            %s\n", mi.name ? mi.name : "");
    printf("architecture    %s\n", mi.arch ? mi.arch : "");
    printf("file_type       %s\n", mi.file_type ? mi.file_type : "");
    printf("chat_template   %s\n", l3c_chat_template_name(tmpl));
    printf("\nhyperparameters\n");
    printf("  n_vocab       %d\n", (int)mi.n_vocab);
    printf("  n_ctx_train   %d\n", (int)mi.n_ctx_train);
    printf("  n_embd        %d\n", (int)mi.n_embd);
    printf("  n_layer       %d\n", (int)mi.n_layer);
    printf("  n_head        %d\n", (int)mi.n_head);
    printf("  n_head_kv     %d\n", (int)mi.n_head_kv);
    printf("  head_dim      %d\n", (int)mi.head_dim);
    printf("  n_ff          %d\n", (int)mi.n_ff);
    printf("  n_rot         %d\n", (int)mi.n_rot);
    printf("  rope_theta    %g\n", (double)mi.rope_theta);
    printf("  norm_eps      %g\n", (double)mi.norm_eps);
    printf("  tied_output   %s\n", mi.tied_output ? "yes" : "no");
    printf("  rope_freqs    %s\n", mi.has_rope_freqs ? "yes" : "no");
    printf("\ntensors         %lld\n", (long long)nt);
    printf("  %-8s %8s %14s %14s %10s\n", "type", "count", "elements", "bytes", "MiB");
    for (int64_t r = 0; r < n_rows; r++)
        printf("  %-8s %8lld %14lld %14zu %10.2f\n", rows[r].name, (long long)rows[r].count,
               (long long)rows[r].elements, rows[r].bytes, mib(rows[r].bytes));
    printf("\nparameters      %lld (%.1f M)\n", (long long)n_params, (double)n_params / 1e6);
    printf("weight_bytes    %zu (%.2f MiB)\n", total_bytes, mib(total_bytes));
    printf("kv_bytes_per_pos %zu (F16, all layers, K and V)\n", kv_pos);
    printf("kv_bytes_full_ctx %zu (%.2f MiB at %d positions, F16)\n", kv_full, mib(kv_full), (int)mi.n_ctx_train);
    if (list) {
        printf("\n  %-36s %-6s %-24s %12s\n", "tensor", "type", "shape", "bytes");
        for (int64_t i = 0; i < nt; i++) {
            char shape[96] = "";
            size_t off = 0;
            for (int d = 0; d < td[i].n_dims && off < sizeof shape; d++)
                off += (size_t)snprintf(shape + off, sizeof shape - off, "%s%lld", d ? " x " : "",
                                        (long long)td[i].ne[d]);
            printf("  %-36s %-6s %-24s %12zu\n", td[i].name, td[i].type_name, shape, td[i].nbytes);
        }
    }
done:
    free(rows);
    free(td);
    l3c_model_free(model);
    return rc;
}
