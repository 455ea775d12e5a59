/*
 * tokenizer.h -- internal entry points of the tokenizer (the public API is in llama3c.h).
 * One internal representation (struct l3c_tokenizer, defined in tokenizer/vocab.c or its own
 * private header) serves every source: GGUF metadata (gpt2 byte-level BPE with a named
 * pre-tokenizer, or llama/SentencePiece), Meta's tiktoken tokenizer.model, HF tokenizer.json.
 */
#ifndef L3C_TOKENIZER_H
#define L3C_TOKENIZER_H

#include "io/gguf.h"

/* Builds the tokenizer described by a GGUF's tokenizer.* metadata. Caller owns *out. */
l3c_status l3c_tokenizer_from_gguf(const l3c_gguf *g, l3c_tokenizer **out);

#endif /* L3C_TOKENIZER_H */
