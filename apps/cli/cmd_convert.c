/*
 * cmd_convert.c -- `llama3c convert IN -o OUT.gguf --type T`: a Hugging Face Llama folder (or a
 * GGUF) to a GGUF file of type T (l3c_convert), with a per-tensor progress bar on stderr.
 */
#include "cli.h"
#include "common.h"

#include "llama3c.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: llama3c convert IN -o OUT.gguf [--type F16|BF16|F32|Q8_0|Q4_K_M|Q4_0] [--quiet]\n"
        "  IN          a Hugging Face Llama folder (config.json, *.safetensors, tokenizer.json)\n"
        "              or a GGUF file\n"
        "  -o FILE     the GGUF to write (appears only when complete; never IN itself)\n"
        "  --type T    F16 (default), BF16, F32, Q8_0 (as convert_hf_to_gguf.py --outtype), or\n"
        "              Q4_K_M (llama-quantize's mix: Q4_K, Q6_K for output / some attn_v, "
        "ffn_down), or\n"
        "              Q4_0 (every matrix; e.g. a draft model for run --draft)\n"
        "  --quiet     no progress bar\n");
}

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type = "F16";
    int quiet = 0, r;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(a, "--type") && i + 1 < argc) {
            type = argv[++i];
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if ((r = cli_compat_parse("convert", argc, argv, &i))) {
            if (r < 0) return CLI_USAGE;
        } else if (a[0] != '-' && !in) {
            in = a;
        } else {
            fprintf(stderr, "llama3c convert: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }
    cli_remove_partial_outputs_on_signal();
    l3c_status st = l3c_convert(in, out, type, quiet ? NULL : cli_progress, (void *)"convert");
    if (st != L3C_OK) {
        if (!quiet && isatty(STDERR_FILENO)) fputc('\n', stderr); /* end the bar's line */
        fprintf(stderr, "llama3c convert: %s\n", l3c_last_error());
        return 1;
    }
    if (!quiet) fprintf(stderr, "llama3c convert: wrote %s (%s)\n", out, type);
    return 0;
}
