/*
 * simple.c -- the smallest complete llama3c program: load a GGUF, tokenize a prompt, decode it,
 * then generate greedily, streaming the text to stdout. Built only on the public header, against
 * an installed llama3c (docs/INSTALL.md):
 *
 *   cc simple.c $(pkg-config --cflags --libs llama3c) -o simple
 *   ./simple MODEL.gguf "Once upon a time" 32
 *
 * With temperature 0 it prints what `llama3c run -m MODEL -p PROMPT -n N --temp 0` prints.
 */
#include <llama3c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what) {
    fprintf(stderr, "simple: %s: %s\n", what, l3c_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [N_TOKENS]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1], *prompt = argv[2];
    int n_predict = argc > 3 ? atoi(argv[3]) : 32;

    l3c_model_params mp = l3c_model_default_params();
    l3c_model *model = NULL;
    if (l3c_model_load(path, &mp, &model) != L3C_OK) return fail(path);
    const l3c_tokenizer *tok = l3c_model_tokenizer(model);

    /* tokenize: a first call with no room returns -(needed) */
    size_t len = strlen(prompt);
    int64_t need = l3c_tokenize(tok, prompt, len, NULL, 0, L3C_TOKENIZE_ADD_BOS);
    int64_t cap = need < 0 ? -need : need;
    int32_t *ids = malloc(((size_t)cap + 1) * sizeof *ids);
    int64_t n = ids ? l3c_tokenize(tok, prompt, len, ids, cap, L3C_TOKENIZE_ADD_BOS) : -1;
    if (n <= 0) {
        free(ids);
        l3c_model_free(model);
        return fail("tokenize");
    }

    l3c_context_params cp = l3c_context_default_params();
    cp.n_ctx = (int32_t)n + n_predict + 1;
    if (cp.n_batch < (int32_t)n) cp.n_batch = (int32_t)n;
    l3c_context *ctx = NULL;
    l3c_sampler_params sp = l3c_sampler_default_params();
    sp.temperature = 0; /* greedy */
    l3c_sampler *smp = NULL;
    int rc = 0;
    if (l3c_context_create(model, &cp, &ctx) != L3C_OK ||
        l3c_sampler_create(&sp, l3c_vocab_size(tok), &smp) != L3C_OK) {
        rc = fail("context");
        goto done;
    }

    /* the prompt in one batch (positions 0..n-1, sequence 0, logits of the last token only) */
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    if (!pos) {
        rc = 1;
        goto done;
    }
    for (int64_t i = 0; i < n; i++)
        pos[i] = (int32_t)i;
    l3c_batch b = {.n_tokens = (int32_t)n, .tokens = ids, .pos = pos};
    l3c_status st = l3c_decode(ctx, &b);
    free(pos);
    if (st != L3C_OK) {
        rc = fail("decode");
        goto done;
    }

    int32_t prev = ids[n - 1], p = (int32_t)n, last = (int32_t)n - 1; /* last: logits row */
    for (int i = 0; i < n_predict; i++) {
        int32_t id = l3c_sampler_sample(smp, l3c_get_logits(ctx, last));
        if (id < 0 || l3c_token_is_eog(tok, id)) break;
        l3c_sampler_accept(smp, id);
        char piece[256];
        int32_t k = l3c_token_to_piece(tok, prev, id, piece, (int32_t)sizeof piece);
        if (k > 0) fwrite(piece, 1, (size_t)k, stdout);
        fflush(stdout);
        prev = id;
        l3c_batch one = {.n_tokens = 1, .tokens = &id, .pos = &p};
        if (l3c_decode(ctx, &one) != L3C_OK) {
            rc = fail("decode");
            goto done;
        }
        p++;
        last = 0;
    }
    putchar('\n');

done:
    l3c_sampler_free(smp);
    l3c_context_free(ctx);
    free(ids);
    l3c_model_free(model);
    return rc;
}
