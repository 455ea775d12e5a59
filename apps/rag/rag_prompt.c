/*
 * rag_prompt.c -- the text that puts retrieved chunks in front of the model, shared by
 * `llama3c rag ask` and the server's chat completions with "rag": the instructions (a system
 * message) and the numbered sources, "[n] (path:first-last)" then the chunk text.
 */
#include "rag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char RAG_SYSTEM_PROMPT[] = "You answer questions using only the numbered sources given with "
                                 "the question. Cite every source "
                                 "you use by its number in square brackets, like [1]. If the "
                                 "sources do not contain the answer, say "
                                 "that you do not know.";

const char RAG_DONT_KNOW[] = "I don't know: no indexed passage answers this.";

double rag_confidence(const rag_hit *h, int n) {
    double best = 0;
    for (int i = 0; i < n; i++)
        best = h[i].bm25 > best ? h[i].bm25 : best;
    return best;
}

char *rag_sources_text(const rag_hit *h, int n, const char *question) {
    size_t cap = strlen(question) + 64;
    for (int i = 0; i < n; i++)
        cap += strlen(h[i].text) + strlen(h[i].path) + 64;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t w = (size_t)snprintf(s, cap, "Sources:\n");
    for (int i = 0; i < n; i++)
        w += (size_t)snprintf(s + w, cap - w, "[%d] (%s:%d-%d)\n%s\n\n", i + 1, h[i].path,
                              (int)h[i].line_start, (int)h[i].line_end, h[i].text);
    snprintf(s + w, cap - w, "Question: %s", question);
    return s;
}
