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

/* l3c_tokenizer_load on a caller's buffer of `size` bytes (borrowed for the call only); name is
 * for messages. Caller owns *out. */
l3c_status l3c_tokenizer_load_memory(const void *buf, size_t size, const char *name,
                                     l3c_tokenizer **out);

/* 1 when the vocabulary asks for BOS at the start of a prompt (GGUF tokenizer.ggml.add_bos_token,
 * default 1 for SentencePiece; 1 for Llama 3 tiktoken / tokenizer.json with a BOS token). */
int l3c_tokenizer_wants_bos(const l3c_tokenizer *tok);

#endif /* L3C_TOKENIZER_H */
