/*
 * grammar_opts.c -- the constrained-output options of `run` and `chat`: --grammar FILE (GBNF),
 * --json-schema FILE|JSON, --json (any JSON object). Parsed beside the shared options, compiled
 * for the model's tokenizer once the model is loaded, and set on the session's sampler.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

int cli_grammar_parse(const char *cmd, cli_grammar *g, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (strcmp(a, "--grammar") && strcmp(a, "--json-schema") && strcmp(a, "--json")) return 0;
    if (g->gbnf_file || g->schema || g->json)
        return cli_usage_error(cmd, "give only one of --grammar, --json-schema, --json"), -1;
    if (!strcmp(a, "--json")) {
        g->json = 1;
        return 1;
    }
    const char *v = cli_value(cmd, argc, argv, i);
    if (!v) return -1;
    if (!strcmp(a, "--grammar"))
        g->gbnf_file = v;
    else
        g->schema = v;
    return 1;
}

void cli_grammar_help(FILE *f) {
    fprintf(f,
            "  --grammar FILE          constrain the output to a GBNF grammar (llama.cpp syntax)\n"
            "  --json-schema S         constrain the output to a JSON Schema (a file, or the JSON "
            "itself)\n"
            "  --json                  constrain the output to a JSON object\n"
            "                          (generation stops when the grammar is complete; "
            "docs/GRAMMAR.md)\n");
}

int cli_grammar_load(const char *cmd, const cli_grammar *g, const l3c_tokenizer *tok,
                     l3c_grammar **out) {
    *out = NULL;
    if (!g->gbnf_file && !g->schema && !g->json) return 0;
    l3c_status st;
    if (g->gbnf_file) {
        size_t len = 0;
        char *text = cli_read_file(cmd, g->gbnf_file, &len);
        if (!text) return CLI_ERR;
        st = l3c_grammar_from_gbnf(tok, text, len, NULL, out);
        free(text);
        if (st != L3C_OK) {
            fprintf(stderr, "llama3c %s: --grammar '%s': %s\n", cmd, g->gbnf_file,
                    l3c_last_error());
            return CLI_ERR;
        }
        return 0;
    }
    const char *s = g->json ? "{\"type\":\"object\"}" : g->schema;
    const char *p = s;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    char *text = NULL;
    size_t len = strlen(s);
    if (*p != '{' && strcmp(p, "true")) { /* a file */
        if (!(text = cli_read_file(cmd, s, &len))) return CLI_ERR;
        s = text;
    }
    st = l3c_grammar_from_json_schema(tok, s, len, out);
    free(text);
    if (st != L3C_OK) {
        fprintf(stderr, "llama3c %s: --json-schema%s%s: %s\n", cmd, text ? " " : "",
                text ? g->schema : "", l3c_last_error());
        return CLI_ERR;
    }
    return 0;
}
