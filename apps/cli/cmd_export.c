/*
 * cmd_export.c -- `llama3c export`: LoRA adapters out of llama3c, on llama3c.h only.
 *
 *   llama3c export --merge -m BASE --lora FILE [--lora-scale S] ... -o OUT.gguf [--type T]
 *       BASE with the adapters merged into its matrices (l3c_adapter_merge), with a progress bar;
 *   llama3c export --lora-convert -m BASE IN OUT [--base-name NAME]
 *       a GGUF LoRA file <-> a PEFT folder (l3c_adapter_convert; OUT ending in .gguf: GGUF).
 */
#include "cli.h"
#include "common.h"

#include "llama3c.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CMD "export"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: llama3c export --merge -m BASE --lora FILE [--lora-scale S] ... -o OUT.gguf "
        "[--type T]\n"
        "       llama3c export --lora-convert -m BASE IN OUT [--base-name NAME]\n"
        "\n"
        "--merge         writes BASE (a GGUF or a Hugging Face folder) with the LoRA adapters "
        "merged:\n"
        "                each adapted matrix becomes W + scale * (alpha / rank) B A; every other "
        "tensor\n"
        "                and all metadata are copied as they are. The file appears only when "
        "complete.\n"
        "  --type T      type of the merged matrices: same (default: the base matrix's type where\n"
        "                llama3c can quantize it -- F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, "
        "Q4_K,\n"
        "                Q6_K -- else F16), or one of those for every merged matrix (F16 where a "
        "row\n"
        "                is not a multiple of its block). Requantizing a quantized matrix adds "
        "its\n"
        "                rounding error again; F32 / F16 keep the merge exact / nearly exact.\n"
        "  --quiet       no progress bar\n"
        "--lora-convert  converts the adapter IN (a GGUF LoRA file or a PEFT folder) for the base\n"
        "                model BASE (its shapes and head counts; only its metadata is read) to "
        "OUT:\n"
        "                a GGUF LoRA file if OUT ends in .gguf, else a PEFT folder "
        "(adapter_config.json\n"
        "                + adapter_model.safetensors, F32). Q / K rows are permuted between the "
        "GGUF\n"
        "                and Hugging Face layouts as llama.cpp's converters do.\n"
        "  --base-name N PEFT's base_model_name_or_path (default: the base's general.name)\n");
    cli_lora_help(f);
}

int cmd_export(int argc, char **argv) {
    const char *base = NULL, *out = NULL, *type = "same", *base_name = NULL, *pos[2] = {NULL, NULL};
    int merge = 0, convert = 0, quiet = 0, n_pos = 0, r;
    cli_lora lora = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return CLI_OK;
        }
        if ((r = cli_lora_parse(CMD, &lora, argc, argv, &i))) {
            if (r < 0) return CLI_USAGE;
        } else if (!strcmp(a, "--merge")) {
            merge = 1;
        } else if (!strcmp(a, "--lora-convert")) {
            convert = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(base = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            if (!(out = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "--type")) {
            if (!(type = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "--base-name")) {
            if (!(base_name = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if ((r = cli_compat_parse(CMD, argc, argv, &i))) {
            if (r < 0) return CLI_USAGE;
        } else if (a[0] != '-' && n_pos < 2) {
            pos[n_pos++] = a;
        } else {
            return cli_usage_error(CMD, "unknown or extra argument '%s'", a);
        }
    }
    if (merge == convert)
        return cli_usage_error(CMD, "give exactly one of --merge and --lora-convert");
    if (!base) return cli_usage_error(CMD, "no base model: pass -m BASE");
    cli_remove_partial_outputs_on_signal();
    if (convert) {
        if (n_pos != 2 || lora.n || out)
            return cli_usage_error(CMD, "--lora-convert takes IN and OUT (no --lora, no -o)");
        if (l3c_adapter_convert(base, pos[0], pos[1], base_name) != L3C_OK)
            return cli_runtime_error(CMD, "cannot convert the adapter");
        fprintf(stderr, "llama3c export: wrote %s\n", pos[1]);
        return CLI_OK;
    }
    if (!lora.n || !out || n_pos)
        return cli_usage_error(
            CMD, "--merge needs at least one --lora FILE and -o OUT.gguf (no other arguments)");
    if (l3c_adapter_merge(base, lora.n, lora.path, lora.scale, out, type,
                          quiet ? NULL : cli_progress, (void *)CMD) != L3C_OK) {
        if (!quiet && isatty(STDERR_FILENO)) fputc('\n', stderr); /* end the bar's line */
        return cli_runtime_error(CMD, "cannot merge");
    }
    if (!quiet)
        fprintf(stderr, "llama3c export: wrote %s (%d adapter%s merged, type %s)\n", out, lora.n,
                lora.n > 1 ? "s" : "", type);
    return CLI_OK;
}
