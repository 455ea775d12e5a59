/*
 * cmd_run.c -- `llama3c run`: raw completion of a prompt (text, file or token ids), streamed to
 * stdout as text or as ids. Only the continuation is printed (the prompt with --echo), so the
 * output can be compared byte for byte; notes and timings go to stderr.
 */
#include "cli.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *CMD = "run";

static void help(FILE *f) {
    cli_opts d;
    cli_opts_init(&d, 256, 0.8f, 0.95f);
    fprintf(f, "usage: llama3c run -m FILE (-p PROMPT | -f FILE | --ids \"1 2 3\") [options]\n\n"
               "Continues a prompt (raw completion: no chat template) and streams the new text to "
               "stdout.\n\n"
               "prompt:\n"
               "  -p, --prompt TEXT       the prompt, used as-is\n"
               "  -f, --file FILE         read the prompt from FILE (\"-\": stdin)\n"
               "  --ids \"ID ID ...\"       the prompt as token ids (space or comma separated), "
               "used exactly\n"
               "  -e, --escape            process escapes in the prompt (\\n \\t \\\" \\\\ \\xHH "
               "...), as llama.cpp's -e\n"
               "  --no-bos                do not add the BOS token (text prompts only)\n"
               "  --special               parse special-token text (\"<|eot_id|>\") in the prompt\n"
               "  --echo                  print the prompt text before the continuation\n"
               "  --print-ids             print the generated token ids (space-separated) instead "
               "of text\n"
               "  --print-special         print the text of special tokens that are generated\n");
    cli_opts_help(f, &d);
    cli_spec_help(f);
    cli_grammar_help(f);
}

/* "1 2, 3" -> ids; 0 or CLI_USAGE */
static int parse_ids(const char *s, int32_t **out, int64_t *n) {
    size_t cap = 16, cnt = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return cli_usage_error(CMD, "out of memory");
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n')
            p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && !strchr(" ,\t\n", *end))) {
            free(ids);
            return cli_usage_error(CMD, "--ids: '%s' is not a list of non-negative token ids", s);
        }
        if (cnt == cap) {
            int32_t *q = realloc(ids, (cap *= 2) * sizeof *ids);
            if (!q) {
                free(ids);
                return cli_usage_error(CMD, "out of memory");
            }
            ids = q;
        }
        ids[cnt++] = (int32_t)v;
        p = end;
    }
    if (!cnt) {
        free(ids);
        return cli_usage_error(CMD, "--ids: no token ids given");
    }
    *out = ids;
    *n = (int64_t)cnt;
    return 0;
}

int cmd_run(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o, 256, 0.8f, 0.95f);
    const char *prompt = NULL, *prompt_file = NULL, *ids_text = NULL;
    int no_bos = 0, special = 0, echo = 0, print_ids = 0, print_special = 0, escape = 0;
    cli_grammar gopt = {0};
    cli_spec spec;
    cli_spec_init(&spec);
    l3c_grammar *grammar = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_opts_parse(CMD, &o, argc, argv, &i);
        if (!r) r = cli_grammar_parse(CMD, &gopt, argc, argv, &i);
        if (!r) r = cli_spec_parse(CMD, &spec, argc, argv, &i);
        if (r < 0) return CLI_USAGE;
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!(prompt = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(prompt_file = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "--ids")) {
            if (!(ids_text = cli_value(CMD, argc, argv, &i))) return CLI_USAGE;
        } else if (!strcmp(a, "-e") || !strcmp(a, "--escape")) {
            escape = 1;
        } else if (!strcmp(a, "--no-bos")) {
            no_bos = 1;
        } else if (!strcmp(a, "--special")) {
            special = 1;
        } else if (!strcmp(a, "--echo")) {
            echo = 1;
        } else if (!strcmp(a, "--print-ids")) {
            print_ids = 1;
        } else if (!strcmp(a, "--print-special")) {
            print_special = 1;
        } else {
            return cli_usage_error(CMD, "unknown option '%s'", a);
        }
    }
    if ((prompt != NULL) + (prompt_file != NULL) + (ids_text != NULL) != 1)
        return cli_usage_error(CMD, "give exactly one of -p PROMPT, -f FILE, --ids \"...\"");
    if (cli_opts_finish(CMD, &o)) return CLI_USAGE;

    int32_t *ids = NULL;
    int64_t n_ids = 0;
    if (ids_text && parse_ids(ids_text, &ids, &n_ids)) return CLI_USAGE;

    char *file_text = NULL;
    size_t prompt_len = 0;
    if (prompt_file) {
        if (!(file_text = cli_read_file(CMD, prompt_file, &prompt_len))) {
            free(ids);
            return CLI_ERR;
        }
        prompt = file_text;
    }
    if (prompt && escape)
        cli_unescape((char *)prompt); /* argv's or file_text: both ours to change */
    if (prompt) prompt_len = escape || !prompt_file ? strlen(prompt) : prompt_len;

    cli_session s;
    int rc = cli_session_open(&s, CMD, &o);
    if (rc) goto done;
    if ((rc = cli_session_spec(&s, &o, &spec))) goto close;
    if (!ids) {
        int flags =
            (no_bos ? 0 : L3C_TOKENIZE_ADD_BOS) | (special ? L3C_TOKENIZE_PARSE_SPECIAL : 0);
        if ((rc = cli_tokenize(CMD, s.tok, prompt, prompt_len, flags, &ids, &n_ids))) goto close;
    }
    if ((rc = cli_grammar_load(CMD, &gopt, s.tok, &grammar))) goto close;
    if (grammar && l3c_sampler_set_grammar(s.smp, grammar) != L3C_OK) {
        rc = cli_runtime_error(CMD, "cannot set the grammar");
        goto close;
    }
    if (o.verbose) fprintf(stderr, "llama3c %s: prompt of %lld tokens\n", CMD, (long long)n_ids);
    if ((rc = cli_session_feed(&s, ids, n_ids))) goto close;
    if (echo) {
        if (print_ids) {
            for (int64_t i = 0; i < n_ids; i++)
                printf("%d ", (int)ids[i]);
        } else if (prompt) {
            fwrite(prompt, 1, prompt_len, stdout);
        } else {
            int64_t need = l3c_detokenize(s.tok, ids, n_ids, NULL, 0, !print_special);
            char *t = need < 0 ? malloc((size_t)-need) : NULL;
            if (t && l3c_detokenize(s.tok, ids, n_ids, t, -need, !print_special) > 0)
                fwrite(t, 1, (size_t)-need, stdout);
            free(t);
        }
    }
    cli_gen_opts g = {.out = stdout, .print_ids = print_ids, .print_special = print_special};
    rc = cli_session_generate(&s, &o, &g);
    if (print_ids || isatty(STDOUT_FILENO)) fputc('\n', stdout);
    if (!rc && grammar && !l3c_sampler_grammar_done(s.smp))
        fprintf(stderr, "llama3c %s: note: stopped before the grammar was complete (-n %d)\n", CMD,
                (int)o.n_predict);
    fflush(stdout);
    if (!o.no_timings) cli_print_timings(&s);
    if ((spec.lookup || spec.draft) && !o.no_timings)
        fprintf(stderr, "%s: %lld draft tokens decoded, %lld accepted (%.0f%%), %lld drafts\n",
                spec.draft ? "draft" : "lookup", (long long)s.n_drafted, (long long)s.n_accepted,
                s.n_drafted ? 100.0 * (double)s.n_accepted / (double)s.n_drafted : 0.0,
                (long long)s.n_rounds);
close:
    cli_session_close(&s);
    l3c_grammar_free(grammar);
done:
    free(ids);
    free(file_text);
    return rc;
}
