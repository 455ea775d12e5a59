/*
 * cli.h -- the `llama3c` subcommands. Each lives in its own apps/cli/cmd_*.c (or apps/server/)
 * and is built only on the public header include/llama3c.h. Each returns the process exit code
 * (0 ok, 1 runtime error, 2 usage error) and prints errors to stderr as "llama3c CMD: message".
 */
#ifndef L3C_CLI_H
#define L3C_CLI_H

int cmd_run(int argc, char **argv);        /* apps/cli/cmd_run.c     generate from a prompt */
int cmd_chat(int argc, char **argv);       /* apps/cli/cmd_chat.c    interactive / scripted chat */
int cmd_info(int argc, char **argv);       /* apps/cli/cmd_info.c    hyperparameters, tensors, memory */
int cmd_convert(int argc, char **argv);    /* apps/cli/cmd_convert.c HF folder / GGUF -> GGUF */
int cmd_export(int argc, char **argv);     /* apps/cli/cmd_export.c  LoRA: merge, GGUF <-> PEFT */
int cmd_eval(int argc, char **argv);       /* apps/cli/cmd_eval.c    logits of given ids (tests) */
int cmd_perplexity(int argc, char **argv); /* apps/cli/cmd_perplexity.c perplexity, KL divergence, multiple choice */
int cmd_tokenize(int argc, char **argv);   /* apps/cli/cmd_tokenize.c */
int cmd_detokenize(int argc, char **argv); /* apps/cli/cmd_tokenize.c */
int cmd_bench(int argc, char **argv);      /* apps/cli/cmd_bench.c   prompt / generation speed */
int cmd_explain(int argc, char **argv);    /* apps/cli/cmd_explain.c architecture walk-through */
int cmd_embed(int argc, char **argv);      /* apps/cli/cmd_embed.c   embeddings of texts */
int cmd_rag(int argc, char **argv);        /* apps/cli/cmd_rag.c     index, retrieve, answer */
int cmd_train(int argc, char **argv);      /* apps/cli/cmd_train.c   LoRA fine-tuning (internal src/train/ API) */
int cmd_serve(int argc, char **argv);      /* apps/server/server.c   OpenAI-compatible HTTP API */

/* After loading with --bf16 (bf16_matmul): says on stderr when no matrix multiplies in bf16. */
struct l3c_model;
void cli_note_bf16(const char *cmd, const struct l3c_model *model);

#endif
