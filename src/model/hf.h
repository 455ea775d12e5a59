/*
 * hf.h -- a Hugging Face Llama folder (config.json, model.safetensors or sharded
 * model-0000x-of-0000y.safetensors + model.safetensors.index.json, tokenizer.json,
 * tokenizer_config.json) presented as a GGUF reader, so config.c, weights.c, the tokenizer and
 * the metadata getters work on it unchanged.
 *
 * The metadata and tensor names are what llama.cpp's convert_hf_to_gguf.py writes: llama.*
 * hyperparameters from config.json, tokenizer.ggml.* from tokenizer.json (byte-level BPE only)
 * and tokenizer_config.json, the chat template, rope_freqs.weight computed from a llama3
 * rope_scaling, and q_proj / k_proj rows permuted exactly as the converter's `permute` does
 * (HF keeps the "rotate_half" layout; GGUF rotates adjacent pairs). Tensors keep their
 * safetensors dtype (F32 / F16 / BF16) and point into the mappings; permuted Q/K (and any tensor
 * whose bytes are not aligned to its element size) are owned copies.
 *
 * Ownership: l3c_hf_open returns both the folder (mappings, owned copies, the serialized header)
 * and a header-only l3c_gguf whose tensors point into it; free the reader first, then the folder.
 */
#ifndef L3C_HF_H
#define L3C_HF_H

#include "io/gguf.h"

typedef struct l3c_hf l3c_hf;

/* 1 when path is a directory. */
int l3c_path_is_dir(const char *path);

/* Errors name the folder, the file and the field or tensor: L3C_ERR_IO (missing files),
 * L3C_ERR_FORMAT (malformed JSON / safetensors, missing keys, wrong shapes), L3C_ERR_UNSUPPORTED
 * (not a llama, rope_scaling other than llama3, biases, dtypes other than F32/F16/BF16, a
 * non-BPE tokenizer), L3C_ERR_NOMEM. *hf and *g are NULL on failure. */
l3c_status l3c_hf_open(const char *dir, l3c_hf **hf, l3c_gguf **g);
void l3c_hf_free(l3c_hf *hf);

/* Q/K rows as convert_hf_to_gguf.py's permute(w, n_head, n_head): HF order -> GGUF order (GGUF
 * row h*hd + 2i + j is HF row h*hd + j*hd/2 + i); inverse != 0: GGUF -> HF. rows % heads == 0 and
 * rows / heads even (the caller checks). */
void l3c_hf_permute_rows(const void *src, void *dst, int64_t rows, size_t row_bytes, int64_t heads,
                         int inverse);

/* Parses dir/name as one JSON object (json_t *, caller json_decref's it; void * keeps jansson out
 * of this header). *out NULL (and L3C_OK) when optional and the file is absent. */
l3c_status l3c_hf_load_json(const char *dir, const char *name, int optional, void **out);

#endif /* L3C_HF_H */
