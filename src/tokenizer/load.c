/*
 * load.c -- the three tokenizer sources, all building the one representation of tok_internal.h:
 *  - GGUF metadata (tokenizer.ggml.model "gpt2": tokens in GPT-2 byte-to-unicode form + merges +
 *    token_type + pre; "llama": SentencePiece tokens with U+2581 + scores + token_type);
 *  - Meta's tiktoken tokenizer.model (`<base64 bytes> <rank>` per line, ranks 0..n-1 in order).
 *    For the Llama 3 file (128000 ranks) the 256 special tokens of Meta's llama/tokenizer.py are
 *    appended at 128000..128255 with the Llama 3 names; 128008 (Llama 3.1's <|eom_id|>, the same
 *    file) is treated as end-of-message for l3c_token_is_eog. Merge priority is the rank.
 *  - Hugging Face tokenizer.json (model.type BPE: vocab, merges as "a b" or ["a","b"],
 *    added_tokens, the pre_tokenizer's Split regex / ByteLevel).
 * l3c_tokenizer_load() takes a Hugging Face folder (model/hf.c: tokenizer.json as GGUF metadata)
 * or picks the source of a file by content: "GGUF" magic, a JSON object, else tiktoken;
 * l3c_tokenizer_load_memory() does the same on a caller's buffer (tests, fuzzing).
 * Owns nothing after returning: the file buffer is freed, the tokenizer goes to the caller.
 */
#include "io/gguf.h"
#include "model/hf.h"
#include "tokenizer/tok_internal.h"

#include <jansson.h>
#include <pthread.h>
#include <string.h>

/* ---------------------------------------------------------------- GGUF */

/* A special-token id: absent gives dflt; present, it must be a vocabulary id (a BOS past the
 * vocabulary would make every prompt index out of the embedding table's rows in the model). */
static int32_t opt_id(const l3c_gguf *g, const char *what, const char *key, int32_t n, int32_t dflt,
                      l3c_status *st) {
    uint32_t v = (uint32_t)-1;
    if (*st) return dflt;
    const l3c_gguf_kv *kv = l3c_gguf_find(g, key);
    if (!kv) return dflt;
    *st = l3c_gguf_get_u32(g, key, 1, &v);
    if (*st) return dflt;
    if (v >= (uint32_t)n) {
        *st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: key '%s' = %u is out of range [0, %d)", what,
                       key, (unsigned)v, (int)n);
        return dflt;
    }
    return (int32_t)v;
}

l3c_status l3c_tokenizer_from_gguf(const l3c_gguf *g, l3c_tokenizer **out) {
    l3c_tokbuild b = {0};
    l3c_tokenizer *t = NULL;
    l3c_status st;
    const char *what = g && g->path ? g->path : "gguf";
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_tokenizer_from_gguf: out is NULL");
    *out = NULL;
    if (!g) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_tokenizer_from_gguf: gguf is NULL");
    l3c_str model = {0}, pre = {0};
    const l3c_gguf_kv *tokens = NULL, *types = NULL, *scores = NULL, *merges = NULL;
    if ((st = l3c_gguf_get_str(g, "tokenizer.ggml.model", 0, &model))) return st;
    l3c_tok_kind kind;
    if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0) kind = L3C_TOK_BPE;
    else if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0) kind = L3C_TOK_SPM;
    else
        return l3c_fail(L3C_ERR_UNSUPPORTED, "tokenizer: %s: tokenizer.ggml.model '%.*s' is not supported "
                        "(gpt2, llama)", what, (int)L3C_MIN(model.len, 64), model.ptr);
    if ((st = l3c_gguf_get_arr(g, "tokenizer.ggml.tokens", 0, L3C_GGUF_STRING, &tokens))) return st;
    if ((st = l3c_gguf_get_arr(g, "tokenizer.ggml.token_type", 1, -1, &types))) return st;
    if ((st = l3c_gguf_get_arr(g, "tokenizer.ggml.scores", 1, -1, &scores))) return st;
    if ((st = l3c_gguf_get_str(g, "tokenizer.ggml.pre", 1, &pre))) return st;
    if (kind == L3C_TOK_BPE && (st = l3c_gguf_get_arr(g, "tokenizer.ggml.merges", 0, L3C_GGUF_STRING, &merges)))
        return st;
    if (tokens->n == 0 || tokens->n > INT32_MAX)
        return l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: key 'tokenizer.ggml.tokens' has %llu entries", what,
                        (unsigned long long)tokens->n);
    int32_t n = (int32_t)tokens->n;
    if (types && types->n != tokens->n)
        return l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: key 'tokenizer.ggml.token_type' has %llu entries, "
                        "'tokenizer.ggml.tokens' %d", what,
                        (unsigned long long)types->n, (int)n);
    if (scores && scores->n != tokens->n)
        return l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: key 'tokenizer.ggml.scores' has %llu entries, "
                        "'tokenizer.ggml.tokens' %d", what,
                        (unsigned long long)scores->n, (int)n);
    if ((st = l3c_tokbuild_init(&b, kind, n, what))) return st;
    b.byte_level_text = kind == L3C_TOK_BPE;
    if (kind == L3C_TOK_SPM) {
        b.score = l3c_malloc((size_t)n * sizeof *b.score);
        if (!b.score) {
            st = l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: scores", what);
            goto fail;
        }
    }
    for (int32_t i = 0; i < n; i++) {
        int64_t ty = types ? l3c_gguf_arr_i64(types, (uint64_t)i) : L3C_TT_NORMAL;
        if (ty < L3C_TT_NORMAL || ty > L3C_TT_BYTE) ty = L3C_TT_NORMAL;
        if ((st = l3c_tokbuild_set(&b, i, tokens->strs[i].ptr, tokens->strs[i].len, (int)ty))) goto fail;
        if (b.score) b.score[i] = scores ? (float)l3c_gguf_arr_f64(scores, (uint64_t)i) : 0.0f;
    }
    if ((st = l3c_tok_create(&b, what, &t))) goto fail;
    if (merges) {
        for (uint64_t i = 0; i < merges->n; i++) {
            const char *s = merges->strs[i].ptr;
            size_t len = merges->strs[i].len, sp = 1;
            while (sp < len && s[sp] != ' ') sp++;
            if (sp >= len) continue;
            if ((st = l3c_tok_add_merge(t, s, sp, s + sp + 1, len - sp - 1, (int32_t)L3C_MIN(i, INT32_MAX - 1), what)))
                goto fail;
        }
        if (!t->use_merges) {
            st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: no usable tokenizer.ggml.merges", what);
            goto fail;
        }
    }
    if (kind == L3C_TOK_BPE && (st = l3c_tok_set_pre(t, pre.ptr, pre.len, what))) goto fail;
    st = L3C_OK;
    t->bos = opt_id(g, what, "tokenizer.ggml.bos_token_id", n, kind == L3C_TOK_SPM && n > 1 ? 1 : -1, &st);
    t->eos = opt_id(g, what, "tokenizer.ggml.eos_token_id", n, kind == L3C_TOK_SPM && n > 2 ? 2 : -1, &st);
    t->unk = opt_id(g, what, "tokenizer.ggml.unknown_token_id", n, kind == L3C_TOK_SPM ? 0 : -1, &st);
    t->eot = opt_id(g, what, "tokenizer.ggml.eot_token_id", n, -1, &st);
    t->eom = opt_id(g, what, "tokenizer.ggml.eom_token_id", n, -1, &st);
    if (st) goto fail;
    bool add_bos = kind == L3C_TOK_SPM, add_space = kind == L3C_TOK_SPM;
    if ((st = l3c_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", 1, &add_bos))) goto fail;
    if ((st = l3c_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", 1, &add_space))) goto fail;
    t->add_bos = add_bos;
    t->add_space_prefix = kind == L3C_TOK_SPM && add_space;
    if ((st = l3c_tok_finish(t, what))) goto fail;
    *out = t;
    return L3C_OK;
fail:
    l3c_tokbuild_free(&b);
    l3c_tokenizer_free(t);
    return st;
}

/* ---------------------------------------------------------------- tiktoken */

/* GPT-2 byte-to-unicode: appends the stored-text form of raw bytes. */
static l3c_status gpt2_encode(l3c_buf *o, const uint8_t *p, size_t n) {
    uint16_t cp_of[256];
    uint32_t k = 0;
    for (uint32_t b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        cp_of[b] = (uint16_t)(printable ? b : 256 + k++);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = cp_of[p[i]];
        char u[2];
        size_t l = 1;
        if (cp < 0x80) u[0] = (char)cp;
        else u[0] = (char)(0xc0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3f)), l = 2;
        l3c_status st = l3c_buf_append(o, u, l);
        if (st) return st;
    }
    return L3C_OK;
}

static int b64val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard base64 (with '=' padding) into out (capacity >= 3*len/4). */
static int b64decode(const char *s, size_t len, uint8_t *out, size_t *olen) {
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '=') break;
        int v = b64val((unsigned char)s[i]);
        if (v < 0) return 0;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *olen = o;
    return 1;
}

static const char *LLAMA3_SPECIAL_FIXED[] = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"};

static l3c_status load_tiktoken(const char *data, size_t size, const char *what, l3c_tokenizer **out) {
    l3c_tokbuild b = {0};
    l3c_tokenizer *t = NULL;
    l3c_buf text = {0};
    uint8_t *raw = NULL;
    l3c_status st;
    size_t lines = 0;
    for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
    if (size && data[size - 1] != '\n') lines++;
    if (lines == 0 || lines > (size_t)INT32_MAX - 256)
        return l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: not a tiktoken file (%zu lines)", what, lines);
    int32_t n_ranks = (int32_t)lines;
    int llama3 = n_ranks == 128000;
    int32_t n = n_ranks + (llama3 ? 256 : 0);
    if ((st = l3c_tokbuild_init(&b, L3C_TOK_BPE, n, what))) return st;
    b.byte_level_text = 1;
    b.rank = l3c_malloc((size_t)n * sizeof *b.rank);
    raw = l3c_malloc(size + 4);
    if (!b.rank || !raw) {
        st = l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s", what);
        goto fail;
    }
    size_t pos = 0;
    for (int32_t r = 0; r < n_ranks; r++) {
        size_t e = pos;
        while (e < size && data[e] != '\n') e++;
        size_t sp = pos;
        while (sp < e && data[sp] != ' ') sp++;
        size_t rawlen;
        char *endp = NULL;
        long long rank = -1;
        if (sp < e) {
            char num[24];
            size_t nl = L3C_MIN(e - sp - 1, sizeof num - 1);
            memcpy(num, data + sp + 1, nl);
            num[nl] = 0;
            rank = strtoll(num, &endp, 10);
            if (endp == num || (*endp && *endp != '\r')) rank = -1;
        }
        if (sp >= e || sp == pos || !b64decode(data + pos, sp - pos, raw, &rawlen) || rank != r) {
            st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: line %d is not '<base64> %d'", what, (int)r + 1, (int)r);
            goto fail;
        }
        text.len = 0;
        if ((st = gpt2_encode(&text, raw, rawlen))) goto fail;
        if ((st = l3c_tokbuild_set(&b, r, text.data ? text.data : "", text.len, L3C_TT_NORMAL))) goto fail;
        b.rank[r] = r;
        pos = e + 1;
    }
    for (int32_t i = n_ranks; i < n; i++) {
        char name[48];
        int k = i - n_ranks;
        if (k < 10) snprintf(name, sizeof name, "%s", LLAMA3_SPECIAL_FIXED[k]);
        else snprintf(name, sizeof name, "<|reserved_special_token_%d|>", k - 5);
        if ((st = l3c_tokbuild_set(&b, i, name, strlen(name), L3C_TT_CONTROL))) goto fail;
        b.rank[i] = -1;
    }
    if ((st = l3c_tok_create(&b, what, &t))) goto fail;
    if ((st = l3c_tok_set_pre(t, "llama-bpe", 9, what))) goto fail;
    t->use_merges = 0;
    if (llama3) {
        t->bos = 128000, t->eos = 128001, t->eot = 128009, t->eom = 128008;
        t->add_bos = 1;
    }
    if ((st = l3c_tok_finish(t, what))) goto fail;
    free(raw);
    l3c_buf_free(&text);
    *out = t;
    return L3C_OK;
fail:
    free(raw);
    l3c_buf_free(&text);
    l3c_tokbuild_free(&b);
    l3c_tokenizer_free(t);
    return st;
}

/* ---------------------------------------------------------------- tokenizer.json */

/* Finds the pre-tokenizer regexes: Split patterns, and GPT-2's for ByteLevel with use_regex. */
static l3c_status json_pre(l3c_tokenizer *t, json_t *pt, const char *what) {
    if (!json_is_object(pt)) return L3C_OK;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return L3C_OK;
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(pt, "pretokenizers");
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            l3c_status st = json_pre(t, v, what);
            if (st) return st;
        }
        return L3C_OK;
    }
    if (strcmp(type, "Split") == 0) {
        json_t *re = json_object_get(json_object_get(pt, "pattern"), "Regex");
        if (json_is_string(re)) return l3c_tok_add_regex(t, json_string_value(re), json_string_length(re), what);
        return l3c_fail(L3C_ERR_UNSUPPORTED, "tokenizer: %s: Split pre-tokenizer without a Regex", what);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        json_t *ur = json_object_get(pt, "use_regex");
        if (!ur || json_is_true(ur)) return l3c_tok_set_pre(t, "gpt-2", 5, what);
        return L3C_OK;
    }
    return l3c_fail(L3C_ERR_UNSUPPORTED, "tokenizer: %s: pre-tokenizer type '%s' is not supported", what, type);
}

/* jansson allocates through the library hook (so allocation-failure tests reach the parser).
 * Process-wide, set once: l3c_malloc is malloc and free is free, so JSON values another part of
 * the program (the server) made before or makes after stay compatible. */
static _Thread_local int g_json_oom; /* an allocation failed in this thread's current parse */
static void *json_alloc(size_t n) {
    void *p = l3c_malloc(n);
    if (!p) g_json_oom = 1;
    return p;
}
static void json_set_hooks(void) { json_set_alloc_funcs(json_alloc, free); }
static pthread_once_t g_json_once = PTHREAD_ONCE_INIT;

static l3c_status load_json(const char *data, size_t size, const char *what, l3c_tokenizer **out) {
    l3c_tokbuild b = {0};
    l3c_tokenizer *t = NULL;
    l3c_status st;
    json_error_t jerr;
    pthread_once(&g_json_once, json_set_hooks);
    g_json_oom = 0;
    json_t *root = json_loadb(data, size, 0, &jerr);
    if (!root && g_json_oom) /* jansson reports some allocation failures as syntax errors */
        return l3c_fail(L3C_ERR_NOMEM, "tokenizer: %s: out of memory parsing JSON", what);
    if (!root)
        return l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: JSON line %d: %s", what, jerr.line, jerr.text);
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    json_t *merges = json_object_get(model, "merges");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(vocab) || !json_is_array(merges) || (mtype && strcmp(mtype, "BPE") != 0)) {
        st = l3c_fail(L3C_ERR_UNSUPPORTED, "tokenizer: %s: model is not a BPE with vocab and merges", what);
        goto fail;
    }
    int64_t maxid = -1;
    const char *key;
    json_t *v;
    size_t i;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= INT32_MAX) {
            st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: vocab entry '%.40s' has a bad id", what, key);
            goto fail;
        }
        maxid = L3C_MAX(maxid, json_integer_value(v));
    }
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX ||
            !json_is_string(json_object_get(v, "content"))) {
            st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: added_tokens[%zu] lacks id/content", what, i);
            goto fail;
        }
        maxid = L3C_MAX(maxid, json_integer_value(id));
    }
    /* every id in [0, maxid] needs an entry: more ids than entries cannot be a vocabulary, and
     * checking first keeps one large id from sizing the tables */
    if (maxid >= 0 && (size_t)maxid >= json_object_size(vocab) + json_array_size(added)) {
        st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: id %lld but only %zu vocab + %zu added_tokens "
                      "entries (ids must be 0..n-1)", what, (long long)maxid, json_object_size(vocab),
                      json_array_size(added));
        goto fail;
    }
    int32_t n = (int32_t)(maxid + 1);
    if ((st = l3c_tokbuild_init(&b, L3C_TOK_BPE, n, what))) goto fail;
    b.byte_level_text = 1;
    json_object_foreach(vocab, key, v) {
        if ((st = l3c_tokbuild_set(&b, (int32_t)json_integer_value(v), key, strlen(key), L3C_TT_NORMAL))) goto fail;
    }
    json_array_foreach(added, i, v) {
        json_t *c = json_object_get(v, "content");
        int type = json_is_true(json_object_get(v, "special")) ? L3C_TT_CONTROL : L3C_TT_USER;
        if ((st = l3c_tokbuild_set(&b, (int32_t)json_integer_value(json_object_get(v, "id")),
                                   json_string_value(c), json_string_length(c), type)))
            goto fail;
    }
    if ((st = l3c_tok_create(&b, what, &t))) goto fail;
    json_array_foreach(merges, i, v) {
        const char *l, *r;
        size_t ll, rl;
        if (json_is_string(v)) {
            const char *s = json_string_value(v);
            size_t len = json_string_length(v), sp = 1;
            while (sp < len && s[sp] != ' ') sp++;
            if (sp >= len) continue;
            l = s, ll = sp, r = s + sp + 1, rl = len - sp - 1;
        } else if (json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
                   json_is_string(json_array_get(v, 1))) {
            l = json_string_value(json_array_get(v, 0)), ll = json_string_length(json_array_get(v, 0));
            r = json_string_value(json_array_get(v, 1)), rl = json_string_length(json_array_get(v, 1));
        } else {
            st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: merges[%zu] is neither \"a b\" nor [a, b]", what, i);
            goto fail;
        }
        if ((st = l3c_tok_add_merge(t, l, ll, r, rl, (int32_t)L3C_MIN(i, INT32_MAX - 1), what))) goto fail;
    }
    if ((st = json_pre(t, json_object_get(root, "pre_tokenizer"), what))) goto fail;
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    static const char *bos_names[] = {"<|begin_of_text|>", "<s>", NULL};
    static const char *eos_names[] = {"<|end_of_text|>", "</s>", "<|endoftext|>", NULL};
    for (int k = 0; bos_names[k] && t->bos < 0; k++) t->bos = l3c_token_lookup(t, bos_names[k], strlen(bos_names[k]));
    for (int k = 0; eos_names[k] && t->eos < 0; k++) t->eos = l3c_token_lookup(t, eos_names[k], strlen(eos_names[k]));
    if (t->bos == 128000 && n == 128256) t->eom = 128008; /* Llama 3 / 3.1 */
    t->add_bos = t->bos >= 0;
    if ((st = l3c_tok_finish(t, what))) goto fail;
    json_decref(root);
    *out = t;
    return L3C_OK;
fail:
    json_decref(root);
    l3c_tokbuild_free(&b);
    l3c_tokenizer_free(t);
    return st;
}

/* ---------------------------------------------------------------- dispatch */

static l3c_status read_file(const char *path, char **data, size_t *size) {
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return l3c_fail(L3C_ERR_IO, "tokenizer: cannot open '%s'", path);
    l3c_buf b = {0};
    char chunk[65536];
    size_t r;
    l3c_status st = L3C_OK;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0)
        if ((st = l3c_buf_append(&b, chunk, r))) break;
    if (!st && ferror(f)) st = l3c_fail(L3C_ERR_IO, "tokenizer: read error on '%s'", path);
    fclose(f);
    if (st) {
        l3c_buf_free(&b);
        return st;
    }
    *data = b.data;
    *size = b.len;
    return L3C_OK;
}

l3c_status l3c_tokenizer_load(const char *path, l3c_tokenizer **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_tokenizer_load: out is NULL");
    *out = NULL;
    if (!path) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_tokenizer_load: path is NULL");
    if (l3c_path_is_dir(path)) { /* a Hugging Face folder: its tokenizer.json seen as GGUF metadata */
        l3c_hf *hf = NULL;
        l3c_gguf *g = NULL;
        l3c_status st = l3c_hf_open(path, &hf, &g);
        if (!st && !l3c_gguf_find(g, "tokenizer.ggml.model"))
            st = l3c_fail(L3C_ERR_FORMAT, "tokenizer: %s: the folder has no tokenizer.json", path);
        if (!st) st = l3c_tokenizer_from_gguf(g, out);
        l3c_gguf_close(g);
        l3c_hf_free(hf);
        return st;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return l3c_fail(L3C_ERR_IO, "tokenizer: cannot open '%s'", path);
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
        l3c_gguf *g = NULL;
        l3c_status st = l3c_gguf_open(path, &g);
        if (st) return st;
        st = l3c_tokenizer_from_gguf(g, out);
        l3c_gguf_close(g);
        return st;
    }
    char *data;
    size_t size;
    l3c_status st = read_file(path, &data, &size);
    if (st) return st;
    st = l3c_tokenizer_load_memory(data, size, path, out);
    free(data);
    return st;
}

l3c_status l3c_tokenizer_load_memory(const void *buf, size_t size, const char *name,
                                     l3c_tokenizer **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_tokenizer_load_memory: out is NULL");
    *out = NULL;
    if (!buf && size) return l3c_fail(L3C_ERR_INVALID_ARG, "l3c_tokenizer_load_memory: buf is NULL");
    const char *data = buf ? buf : "";
    if (!name) name = "memory";
    if (size >= 4 && memcmp(data, "GGUF", 4) == 0) {
        l3c_gguf *g = NULL;
        l3c_status st = l3c_gguf_open_memory(data, size, name, &g);
        if (st) return st;
        st = l3c_tokenizer_from_gguf(g, out);
        l3c_gguf_close(g);
        return st;
    }
    size_t k = 0;
    while (k < size && (data[k] == ' ' || data[k] == '\t' || data[k] == '\r' || data[k] == '\n')) k++;
    if (k < size && data[k] == '{') return load_json(data, size, name, out);
    return load_tiktoken(data, size, name, out);
}
