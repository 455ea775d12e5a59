/*
 * train_io.h -- the files around pre-training from scratch: the model shape from a small JSON
 * config, and the trained fp32 model written as a llama GGUF with a tokenizer copied from
 * another model (`llama3c train --from-scratch --config tiny.json`, docs/TRAINING.md).
 *
 * Config file: one JSON object. Keys (llama3c name, or the Hugging Face config.json name):
 *   n_embd      | hidden_size               required, > 0
 *   n_layer     | num_hidden_layers         required, > 0
 *   n_head      | num_attention_heads       required, divides n_embd, head_dim even
 *   n_head_kv   | num_key_value_heads       default n_head, divides n_head
 *   n_ff        | intermediate_size         required, > 0
 *   rope_theta  | rope_theta                default 10000, > 1
 *   norm_eps    | rms_norm_eps              default 1e-5, in (0, 1)
 *   tied        | tie_word_embeddings       default true (the head shares token_embd)
 *   n_ctx       | max_position_embeddings   default 512 (llama.context_length written)
 * A Hugging Face config.json is accepted as it is: vocab_size must equal the tokenizer's,
 * model_type "llama", hidden_act "silu", no biases, no rope_scaling, head_dim n_embd / n_head;
 * its bookkeeping keys (token ids, dtype, versions, init range, ...) are ignored. Any other key
 * is an error naming the file and the key (typo protection), as is a key given under both names.
 */
#ifndef L3C_TRAIN_IO_H
#define L3C_TRAIN_IO_H

#include "train/train_model.h"

struct l3c_model;

/* Reads the config at path into *out (n_vocab from the argument: the tokenizer's size; n_rot =
 * head_dim). Errors: L3C_ERR_IO (missing / unreadable file), L3C_ERR_FORMAT (bad JSON with line
 * and column, not an object, wrong value type, unknown key), L3C_ERR_INVALID_ARG (a value out
 * of range or inconsistent); each names the file and the key. *out is zeroed on failure. */
l3c_status l3c_train_config_from_json(const char *path, int32_t n_vocab, l3c_train_config *out);

/*
 * Writes the parameters of a full (not LoRA) training model as a llama GGUF at path: every
 * tensor F32 under its GGUF name (plus rope_freqs.weight when the model has one), llama.*
 * hyperparameters (context_length = n_ctx, or m->cfg.n_ctx when n_ctx is 0), general.name =
 * name (NULL: "llama3c"), and, when tok_src is not NULL, every tokenizer.* key of tok_src's file
 * (vocabulary, merges, special ids, chat template); its vocabulary must have m->cfg.n_vocab
 * tokens. The file is written to PATH.tmp and renamed when complete: on error nothing is left
 * at path (an existing file there is untouched) nor at PATH.tmp.
 */
l3c_status l3c_train_model_save_gguf(const l3c_train_model *m, const struct l3c_model *tok_src,
                                     int32_t n_ctx, const char *path, const char *name);

#endif /* L3C_TRAIN_IO_H */
