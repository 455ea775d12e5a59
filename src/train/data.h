/*
 * data.h -- training data for `llama3c train`: datasets of token sequences with a per-token
 * "train on this target" mask, the loaders that build them (plain text, JSONL text, JSONL chat),
 * a deterministic train / eval split, per-epoch shuffles and batches.
 *
 * An example is tokens[off .. off+len) with mask[off .. off+len): mask[i] = 1 when token i is a
 * trained target, i.e. the loss includes predicting tokens[i] from the tokens before it (mask of
 * an example's first token is irrelevant: nothing predicts it). len <= seq_len + 1, so one example
 * fills one row of a [B x T] batch: inputs tokens[0..T), targets tokens[1..T] where masked.
 *
 * Loaders (format; AUTO picks by the first JSON line's keys, else plain text):
 *   TEXT        the whole file, tokenized once (BOS first when the vocabulary adds one; special-token
 *               text stays plain text), cut into windows of T+1 tokens with stride T: consecutive
 *               windows share one token, so every token but the first is a target exactly once.
 *               A last partial window is kept when it has >= min_tokens tokens (default 2: anything
 *               with a target), else dropped (its tokens counted in n_tokens_cut). All targets train.
 *   JSONL_TEXT  {"text": "..."} per line: each line one document, BOS + text + EOS, windows as TEXT
 *               (never across documents).
 *   CHAT        {"messages": [{"role": "system"|"user"|"assistant"|"tool"|"ipython",
 *               "content": "..."}, ...]} per line (OpenAI / Hugging Face). Rendered and tokenized by
 *               l3c_chat_tokenize_ex (the model's template, its default system message). Trained:
 *               each assistant message's tokens, from the first token after the assistant header
 *               through the template's end-of-turn token (<|eot_id|>, <|im_end|>, </s>); never the
 *               system / user turns, headers or the newline after <|im_end|>. An assistant message
 *               with "weight": 0 (OpenAI's field) is not trained. The boundaries come from
 *               tokenizing the prefix up to each assistant message (with the assistant header) and
 *               through it: both must be prefixes of the whole conversation's ids, else the line is
 *               an error ("not prefix-stable"). Longer than T+1: truncated (n_truncated,
 *               n_tokens_cut) or, with drop_long, dropped (n_dropped_long). No trained target left:
 *               dropped (n_dropped_empty).
 * Blank lines of JSONL files are skipped. Errors name the file and line (bad JSON, not an object,
 * missing "messages" / "text", unknown role, non-string content, invalid UTF-8, empty file).
 *
 * Order, batches, resuming: an epoch's order is a Fisher-Yates shuffle of 0..n-1 by an l3c_rng
 * seeded from (seed, epoch) only; batch k of an epoch holds order[k*B .. k*B+B). Step s of a run is
 * (epoch, start) = (s / steps_per_epoch, (s % steps_per_epoch) * B) (l3c_data_locate), so a run
 * resumed at step s sees exactly the batches of an uninterrupted one. No hidden state.
 *
 * Ownership: an l3c_dataset owns its arrays; l3c_data_free(NULL) is safe. Fields are read-only.
 */
#ifndef L3C_TRAIN_DATA_H
#define L3C_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "llama3c.h"

typedef enum l3c_data_format {
    L3C_DATA_AUTO = 0,   /* first non-blank line a JSON object with "messages": CHAT, with "text":
                            JSONL_TEXT; anything else: TEXT */
    L3C_DATA_TEXT,
    L3C_DATA_JSONL_TEXT,
    L3C_DATA_CHAT
} l3c_data_format;

typedef struct l3c_data_params {
    l3c_data_format format;
    int32_t seq_len;        /* T (>= 1): examples hold at most T+1 tokens */
    int32_t min_tokens;     /* TEXT / JSONL_TEXT: keep a last partial window of >= this many tokens (>= 2) */
    int drop_long;          /* CHAT: 1 drops conversations longer than T+1 tokens, 0 truncates them */
    l3c_chat_template tmpl; /* CHAT: L3C_CHAT_AUTO: the model's */
    const char *date;       /* CHAT, LLAMA31: "Today Date" (NULL: the template's default, see llama3c.h) */
} l3c_data_params;

l3c_data_params l3c_data_default_params(void); /* AUTO, T 512, min_tokens 2, truncate, AUTO, NULL */

typedef struct l3c_data_example {
    size_t off;        /* first token in tokens[] / mask[] */
    int32_t len;       /* 1 .. seq_len + 1 */
    int32_t n_trained; /* mask[off+1 .. off+len) set */
    int64_t line;      /* JSONL: 1-based source line; TEXT: the window's index */
} l3c_data_example;

typedef struct l3c_dataset {
    int32_t *tokens;        /* [n_tokens] */
    uint8_t *mask;          /* [n_tokens] 1: trained target */
    size_t n_tokens;
    l3c_data_example *ex;   /* [n_ex] */
    size_t n_ex;
    int32_t seq_len;        /* T it was cut for */
    int32_t pad_id;         /* padding input id (EOS, else 0); its targets are -1 */
    l3c_data_format format; /* resolved */
    char *path;             /* source, for messages */
    /* what the loader did */
    size_t n_records;       /* documents / conversations read (JSONL: non-blank lines) */
    size_t n_truncated;     /* CHAT examples cut to T+1 tokens */
    size_t n_dropped_long;  /* CHAT examples dropped for length (drop_long) */
    size_t n_dropped_empty; /* examples with no trained target (no assistant turn, a 1-token doc) */
    size_t n_tokens_cut;    /* tokens lost to truncation, drops and short last windows */
    int64_t n_trained;      /* trained targets over all examples */
    /* packed (l3c_data_pack): each example holds whole source examples one after another */
    int32_t *pos;           /* [n_tokens] position of each token in its source example, or NULL */
    size_t n_packed;        /* source examples in the packed ones (0: not packed) */
} l3c_dataset;

/* Loads path (see the top of this file) with model's tokenizer and chat template. *out is NULL on
 * failure; the message names the file and line. */
l3c_status l3c_data_load(const l3c_model *model, const char *path, const l3c_data_params *p,
                         l3c_dataset **out);
void l3c_data_free(l3c_dataset *ds);

/* Deterministic split: the examples of a seeded shuffle of ds (seed only), n_eval =
 * round(n * eval_frac) clamped to [1, n-1] when eval_frac > 0, go to *eval, the rest to *train,
 * each keeping the source order. Copies: ds stays valid and owned by the caller. eval_frac 0:
 * *eval is NULL and *train a copy. Needs n >= 2 when eval_frac > 0. */
l3c_status l3c_data_split(const l3c_dataset *ds, double eval_frac, uint64_t seed, l3c_dataset **train,
                          l3c_dataset **eval);

/* order[0..n) = the shuffle of epoch `epoch` (0-based) for seed: a permutation of 0..n-1. */
void l3c_data_order(size_t n, uint64_t seed, int64_t epoch, int32_t *order);

/* ceil(n_ex / B): the last batch of an epoch may be partial (its empty rows are padding). */
size_t l3c_data_steps_per_epoch(const l3c_dataset *ds, int B);
/* Where global step `step` (0-based) reads: its epoch and the first position in that epoch's order. */
void l3c_data_locate(const l3c_dataset *ds, int B, int64_t step, int64_t *epoch, size_t *start);

/*
 * Fills one batch: row b is example order[start + b] (order NULL: the identity; rows past n_ex are
 * all padding). ids[b*T + t] = tok[t]; targets[b*T + t] = tok[t+1] if mask[t+1], else -1; positions
 * past the example (len - 1 targets, cut to T) hold pad_id and -1. ids, targets: [B*T].
 * Returns the number of trained targets (>= 0).
 */
int64_t l3c_data_batch(const l3c_dataset *ds, const int32_t *order, size_t start, int B, int T,
                       int32_t *ids, int32_t *targets);
/*
 * The same, also writing pos [B*T]: the rope position of every input token, 0..len-1 per source
 * example of a packed dataset (t for an unpacked one); padding continues the row's last example.
 * Feed to l3c_train_forward_pos. pos NULL: l3c_data_batch.
 */
int64_t l3c_data_batch_pos(const l3c_dataset *ds, const int32_t *order, size_t start, int B, int T,
                           int32_t *ids, int32_t *targets, int32_t *pos);

/*
 * Packing: *out holds ds's examples (ds unpacked) grouped into examples of at most T tokens
 * (one longer example, T+1 tokens, stays alone): first-fit in source order over the 64 most
 * recently opened groups, the parts of a group in source order. Each part keeps its tokens and
 * masks (its first token's mask cleared: nothing in the row predicts it) and records its own
 * positions in pos. Batches of the packed set with l3c_data_batch_pos and l3c_train_forward_pos
 * give each part its own positions and attention, so the loss is that of the unpacked examples;
 * with fewer rows, fewer padding positions are computed. lines: the group's first part's.
 */
l3c_status l3c_data_pack(const l3c_dataset *ds, int32_t T, l3c_dataset **out);

/* Targets >= 0 among n (the trained tokens of a batch, for tokens/s). */
int64_t l3c_data_count_targets(const int32_t *targets, size_t n);

/* One summary line (and warning lines for truncated / dropped examples) about ds to f, e.g.
 * "data: book.txt: text, 8,542 windows of <= 513 tokens, 1,093,312 tokens, 1,084,770 trained". */
void l3c_data_describe(const l3c_dataset *ds, const char *name, FILE *f);

#endif /* L3C_TRAIN_DATA_H */
