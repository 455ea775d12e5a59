/*
 * main.c -- `llama3c COMMAND [options]`: dispatches to the subcommands declared in cli.h.
 * A subcommand whose source is not part of this build is reported as unavailable (weak symbols),
 * so a partial checkout still builds; the full build has them all.
 */
#include "cli.h"

#include "llama3c.h"

#include <stdio.h>
#include <string.h>

#pragma weak cmd_run
#pragma weak cmd_chat
#pragma weak cmd_info
#pragma weak cmd_eval
#pragma weak cmd_perplexity
#pragma weak cmd_tokenize
#pragma weak cmd_detokenize
#pragma weak cmd_bench
#pragma weak cmd_explain
#pragma weak cmd_serve
#pragma weak cmd_embed
#pragma weak cmd_rag
#pragma weak cmd_convert
#pragma weak cmd_export
#pragma weak cmd_train

typedef struct command {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static void usage(FILE *f, const command *cmds, size_t n) {
    fprintf(f, "llama3c %s -- LLaMA-family inference in C\n\nusage: llama3c COMMAND [options]\n\n"
               "commands:\n", l3c_version());
    for (size_t i = 0; i < n; i++)
        if (cmds[i].fn) fprintf(f, "  %-11s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\n`llama3c COMMAND --help` describes each command's options.\n");
}

static int run_command(int argc, char **argv) {
    const command cmds[] = {
        {"run", cmd_run, "generate text from a prompt (streams to stdout)"},
        {"chat", cmd_chat, "chat with a model (interactive, or one turn with -p / stdin)"},
        {"info", cmd_info, "show hyperparameters, tensor types, parameter count, memory"},
        {"tokenize", cmd_tokenize, "text to token ids"},
        {"detokenize", cmd_detokenize, "token ids to text"},
        {"bench", cmd_bench, "measure prompt and generation speed"},
        {"explain", cmd_explain, "walk through the architecture with the loaded model's numbers"},
        {"embed", cmd_embed, "embeddings of texts (pooled hidden states), JSON or NPY"},
        {"rag", cmd_rag, "index text / markdown / PDF files, retrieve, answer with sources"},
        {"serve", cmd_serve, "OpenAI-compatible HTTP server"},
        {"perplexity", cmd_perplexity, "perplexity of a text, KL divergence vs a base, multiple-choice accuracy"},
        {"eval", cmd_eval, "write the logits of given token ids to a file (for tests)"},
        {"convert", cmd_convert, "a Hugging Face folder (or GGUF) to GGUF: F16, Q8_0, Q4_K_M, ..."},
        {"train", cmd_train, "LoRA fine-tuning on a GGUF base: adapters as GGUF and PEFT"},
        {"export", cmd_export, "LoRA adapters: merge into a model, convert GGUF <-> PEFT"},
    };
    const size_t n = sizeof cmds / sizeof cmds[0];
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout, cmds, n);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("llama3c %s\n", l3c_version());
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(argv[1], cmds[i].name)) continue;
        if (!cmds[i].fn) {
            fprintf(stderr, "llama3c: command '%s' is not part of this build\n", argv[1]);
            return 2;
        }
        return cmds[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "llama3c: unknown command '%s'\n\n", argv[1]);
    usage(stderr, cmds, n);
    return 2;
}

/* Under mpirun (a build with MPI=1) every rank runs the same command; rank 0 writes the output
 * (the others' stdout goes to /dev/null, their stderr stays for messages), and a rank that fails
 * ends the whole job so that no peer waits for it. */
int main(int argc, char **argv) {
    if (l3c_dist_init(&argc, &argv) != L3C_OK) {
        fprintf(stderr, "llama3c: %s\n", l3c_last_error());
        return 1;
    }
    if (l3c_dist_rank() != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "llama3c: cannot redirect stdout of rank %d\n", l3c_dist_rank());
        l3c_dist_abort("cannot redirect stdout");
    }
    int rc = run_command(argc, argv);
    fflush(stdout);
    if (rc != 0 && l3c_dist_size() > 1) {
        char why[64];
        snprintf(why, sizeof why, "the command failed (status %d); stopping every rank", rc);
        l3c_dist_abort(why);
    }
    l3c_dist_finalize();
    return rc;
}
