/*
 * data.c -- training datasets: loaders (plain text, JSONL text, JSONL chat with assistant-only
 * masks), split, per-epoch order and batches. Contract and formats: data.h.
 *
 * Invariants: every example lies inside tokens[0..n_tokens); 1 <= len <= seq_len + 1;
 * n_trained = sum of mask[off+1 .. off+len); n_ex fits int32 (order[] holds int32 indices).
 */
#include "train/data.h"

#include "train/optim.h"
#include "util/util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

l3c_data_params l3c_data_default_params(void) {
    l3c_data_params p = {0};
    p.format = L3C_DATA_AUTO;
    p.seq_len = 512;
    p.min_tokens = 2;
    p.drop_long = 0;
    p.tmpl = L3C_CHAT_AUTO;
    p.date = NULL;
    return p;
}

void l3c_data_free(l3c_dataset *ds) {
    if (!ds) return;
    free(ds->tokens);
    free(ds->mask);
    free(ds->ex);
    free(ds->pos);
    free(ds->path);
    free(ds);
}

/* ---------------------------------------------------------------- growable arrays */

static l3c_status grow(void **p, size_t *cap, size_t need, size_t elem, const char *path) {
    if (need <= *cap) return L3C_OK;
    size_t c = *cap ? *cap : 1024, bytes;
    while (c < need) c *= 2;
    if (!l3c_mul_ok(c, elem, &bytes)) return l3c_fail(L3C_ERR_NOMEM, "data: %s: too many tokens", path);
    void *q = l3c_realloc(*p, bytes);
    if (!q) return l3c_fail(L3C_ERR_NOMEM, "data: %s: out of memory (%zu bytes)", path, bytes);
    *p = q;
    *cap = c;
    return L3C_OK;
}

typedef struct builder {
    l3c_dataset *ds;
    size_t cap_tok, cap_mask, cap_ex;
    int drop_long;
} builder;

/* Appends n tokens (mask m[i], or all `fill` when m is NULL); returns their offset in *off. */
static l3c_status push_tokens(builder *b, const int32_t *t, const uint8_t *m, uint8_t fill, size_t n, size_t *off) {
    l3c_dataset *ds = b->ds;
    size_t need;
    if (!l3c_add_ok(ds->n_tokens, n, &need)) return l3c_fail(L3C_ERR_NOMEM, "data: %s: too many tokens", ds->path);
    l3c_status st = grow((void **)&ds->tokens, &b->cap_tok, need, sizeof *ds->tokens, ds->path);
    if (!st) st = grow((void **)&ds->mask, &b->cap_mask, need, 1, ds->path);
    if (st) return st;
    memcpy(ds->tokens + ds->n_tokens, t, n * sizeof *t);
    if (m) memcpy(ds->mask + ds->n_tokens, m, n);
    else memset(ds->mask + ds->n_tokens, fill, n);
    *off = ds->n_tokens;
    ds->n_tokens = need;
    return L3C_OK;
}

static l3c_status push_example(builder *b, size_t off, int32_t len, int64_t line) {
    l3c_dataset *ds = b->ds;
    if (ds->n_ex >= (size_t)INT32_MAX - 1)
        return l3c_fail(L3C_ERR_UNSUPPORTED, "data: %s: more than %d examples", ds->path, INT32_MAX - 1);
    l3c_status st = grow((void **)&ds->ex, &b->cap_ex, ds->n_ex + 1, sizeof *ds->ex, ds->path);
    if (st) return st;
    int32_t nt = 0;
    for (int32_t i = 1; i < len; i++) nt += ds->mask[off + (size_t)i];
    ds->ex[ds->n_ex++] = (l3c_data_example){.off = off, .len = len, .n_trained = nt, .line = line};
    ds->n_trained += nt;
    return L3C_OK;
}

/* ---------------------------------------------------------------- file and text helpers */

static l3c_status read_all(const char *path, char **out, size_t *n) {
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return l3c_fail(L3C_ERR_IO, "data: %s: cannot open: %s", path, strerror(errno));
    l3c_buf b = {0};
    char chunk[65536];
    size_t got;
    l3c_status st = L3C_OK;
    while (!st && (got = fread(chunk, 1, sizeof chunk, f)) > 0) st = l3c_buf_append(&b, chunk, got);
    if (!st && ferror(f)) st = l3c_fail(L3C_ERR_IO, "data: %s: read error", path);
    fclose(f);
    if (!st) st = l3c_buf_append(&b, "", 0); /* NUL-terminated, non-NULL */
    if (st) {
        l3c_buf_free(&b);
        return st;
    }
    *out = b.data;
    *n = b.len;
    return L3C_OK;
}

/* Length of a well-formed UTF-8 sequence at s (no overlongs, surrogates, > U+10FFFF), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

/* L3C_OK, or a format error naming path:line:column of the first invalid byte. */
static l3c_status check_utf8(const char *path, const char *s, size_t n) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len((const unsigned char *)s + i, n - i);
        if (!k)
            return l3c_fail(L3C_ERR_FORMAT, "data: %s:%zu: invalid UTF-8 (byte 0x%02x at column %zu)", path, line,
                            (unsigned char)s[i], col);
        if (s[i] == '\n') {
            line++;
            col = 0;
        }
        col++;
        i += k;
    }
    return L3C_OK;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

/* Tokenizes s[0..n) with flags into a caller-freed array with one spare slot after *n_out. */
static l3c_status tokenize_alloc(const l3c_tokenizer *tok, const char *path, const char *s, size_t n, int flags,
                                 int32_t **out, int64_t *n_out) {
    *out = NULL;
    *n_out = 0;
    int64_t cap = (int64_t)n + 4; /* byte-level vocabularies: <= one token per byte, plus BOS */
    for (int pass = 0; pass < 2; pass++) {
        int32_t *ids = l3c_malloc((size_t)(cap + 1) * sizeof *ids); /* + 1: room for the caller's EOS */
        if (!ids) return l3c_fail(L3C_ERR_NOMEM, "data: %s: out of memory for %lld tokens", path, (long long)cap);
        int64_t got = l3c_tokenize(tok, s, n, ids, cap, flags);
        if (got >= 0) {
            *out = ids;
            *n_out = got;
            return L3C_OK;
        }
        free(ids);
        cap = -got;
    }
    return l3c_fail(L3C_ERR_FORMAT, "data: %s: the tokenizer's token count changed between calls", path);
}

/* ---------------------------------------------------------------- text windows */

/* Windows of T+1 tokens, stride T, over one document ids[0..n) (mask all 1). */
static l3c_status add_windows(builder *b, const int32_t *ids, size_t n, int32_t min_tokens, int64_t *win) {
    l3c_dataset *ds = b->ds;
    const size_t T = (size_t)ds->seq_len;
    if (n < 2) {
        ds->n_dropped_empty++;
        ds->n_tokens_cut += n;
        return L3C_OK;
    }
    size_t base;
    l3c_status st = push_tokens(b, ids, NULL, 1, n, &base);
    if (st) return st;
    for (size_t s = 0; s + 1 < n; s += T) {
        size_t len = L3C_MIN(T + 1, n - s);
        if (len < T + 1 && s > 0 && len < (size_t)min_tokens) {
            ds->n_tokens_cut += len - 1; /* its first token was the previous window's last target */
            break;
        }
        if ((st = push_example(b, base + s, (int32_t)len, (*win)++))) return st;
    }
    return L3C_OK;
}

/* ---------------------------------------------------------------- chat */

static const char *const ROLES[] = {"system", "user", "assistant", "tool", "ipython"};

/* 1 when the bytes of a[0..na) are a prefix of the bytes of b[0..nb) (0 also on NOMEM). */
static int text_prefix(const l3c_tokenizer *tok, const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    l3c_buf x = {0}, y = {0};
    char piece[256];
    int ok = 1;
    for (int64_t k = 0; k < na && ok; k++) {
        int32_t n = l3c_token_to_bytes(tok, a[k], piece, sizeof piece);
        ok = n >= 0 && !l3c_buf_append(&x, piece, (size_t)n);
    }
    for (int64_t k = 0; k < nb && ok && y.len < x.len; k++) {
        int32_t n = l3c_token_to_bytes(tok, b[k], piece, sizeof piece);
        ok = n >= 0 && !l3c_buf_append(&y, piece, (size_t)n);
    }
    ok = ok && y.len >= x.len && (x.len == 0 || !memcmp(x.data, y.data, x.len));
    l3c_buf_free(&x);
    l3c_buf_free(&y);
    return ok;
}

static int64_t first_diff(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int64_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

typedef struct chat_ctx {
    const l3c_model *model;
    const l3c_tokenizer *tok;
    l3c_chat_template tmpl;
    const char *date;
    const char *path;
} chat_ctx;

/* Masks of one conversation: mask[] (calloc'd, n_full) 1 on each trained assistant span. */
static l3c_status chat_mask(const chat_ctx *c, const l3c_chat_message *m, const int *train, size_t n, int64_t line,
                            const int32_t *full, int64_t n_full, uint8_t *mask) {
    l3c_status st = L3C_OK;
    for (size_t i = 0; i < n && !st; i++) {
        if (strcmp(m[i].role, "assistant") != 0 || !train[i]) continue;
        int32_t *pre = NULL, *thru = NULL;
        int64_t n_pre = 0, n_thru = 0;
        st = l3c_chat_tokenize_ex(c->model, c->tmpl, m, i, 1, c->date, &pre, &n_pre);
        if (!st) st = l3c_chat_tokenize_ex(c->model, c->tmpl, m, i + 1, 0, c->date, &thru, &n_thru);
        if (st) {
            st = l3c_fail(st, "data: %s:%lld: message %zu: %s", c->path, (long long)line, i + 1, l3c_last_error());
            goto next;
        }
        /* the turn ends at the last end-of-turn token of `thru` (ChatML's trailing "\n" is not trained) */
        int64_t end = n_thru;
        for (int64_t k = n_thru - 1; k >= 0; k--)
            if (l3c_token_is_eog(c->tok, thru[k])) {
                end = k + 1;
                break;
            }
        /* The prefix may differ from the whole only inside its trailing plain text, where the header's
         * last characters merge with the content (ChatML "assistant\n" + " 42": "\n " is one token);
         * that merged token is trained. Earlier, the template itself is not prefix-stable. */
        const int64_t start = first_diff(pre, n_pre, full, n_full);
        int bad_pre = 0;
        for (int64_t k = start; k < n_pre && !bad_pre; k++) bad_pre = l3c_token_is_special(c->tok, pre[k]);
        bad_pre = bad_pre || !text_prefix(c->tok, pre + start, n_pre - start, full + start, n_full - start);
        const int bad_thru = first_diff(thru, n_thru, full, n_full) < end;
        if (bad_pre || bad_thru || start >= end) {
            st = l3c_fail(L3C_ERR_UNSUPPORTED,
                          "data: %s:%lld: message %zu (assistant): the %s template is not prefix-stable here: the "
                          "ids of the conversation %s differ from the whole conversation's at token %lld, so the "
                          "assistant turn's tokens cannot be located%s",
                          c->path, (long long)line, i + 1, l3c_chat_template_name(c->tmpl),
                          bad_thru ? "through this message" : "before this message (with the assistant header)",
                          (long long)(bad_thru ? first_diff(thru, n_thru, full, n_full) : start),
                          i == 0 ? " (a conversation should not start with an assistant message)" : "");
            goto next;
        }
        for (int64_t k = start; k < end; k++) mask[k] = 1;
    next:
        free(pre);
        free(thru);
    }
    return st;
}

/* One {"messages": [...]} record -> one example (or a counted drop). */
static l3c_status add_chat(builder *b, const chat_ctx *c, json_t *msgs, int64_t line) {
    l3c_dataset *ds = b->ds;
    const char *path = c->path;
    if (!json_is_array(msgs))
        return l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: \"messages\" is not an array", path, (long long)line);
    size_t n = json_array_size(msgs);
    if (n == 0) return l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: \"messages\" is empty", path, (long long)line);
    l3c_chat_message *m = l3c_calloc(n, sizeof *m);
    int *train = l3c_calloc(n, sizeof *train);
    int32_t *full = NULL;
    uint8_t *mask = NULL;
    int64_t n_full = 0;
    l3c_status st = L3C_OK;
    if (!m || !train) {
        st = l3c_fail(L3C_ERR_NOMEM, "data: %s: out of memory", path);
        goto done;
    }
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(msgs, i);
        if (!json_is_object(msg)) {
            st = l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: message %zu is not an object", path, (long long)line, i + 1);
            goto done;
        }
        json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
        if (!json_is_string(role)) {
            st = l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: message %zu has no \"role\" string", path, (long long)line,
                          i + 1);
            goto done;
        }
        const char *r = json_string_value(role);
        size_t k = 0;
        while (k < sizeof ROLES / sizeof *ROLES && strcmp(r, ROLES[k]) != 0) k++;
        if (k == sizeof ROLES / sizeof *ROLES) {
            st = l3c_fail(L3C_ERR_FORMAT,
                          "data: %s:%lld: message %zu: unknown role \"%.64s\" (expected system, user, assistant, "
                          "tool or ipython)", path, (long long)line, i + 1, r);
            goto done;
        }
        if (!json_is_string(content)) {
            st = l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: message %zu (%s): \"content\" is %s, not a string", path,
                          (long long)line, i + 1, r, content ? "not a string" : "missing");
            goto done;
        }
        if (strlen(json_string_value(content)) != json_string_length(content)) {
            st = l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: message %zu: \"content\" contains a NUL character", path,
                          (long long)line, i + 1);
            goto done;
        }
        json_t *w = json_object_get(msg, "weight");
        if (w && !(json_is_integer(w) && (json_integer_value(w) == 0 || json_integer_value(w) == 1))) {
            st = l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: message %zu: \"weight\" must be 0 or 1", path,
                          (long long)line, i + 1);
            goto done;
        }
        m[i].role = ROLES[k];
        m[i].content = json_string_value(content);
        train[i] = k == 2 && (!w || json_integer_value(w) == 1);
        any |= train[i];
    }
    ds->n_records++;
    if (!any) { /* nothing to train on: no need to tokenize */
        ds->n_dropped_empty++;
        goto done;
    }
    if ((st = l3c_chat_tokenize_ex(c->model, c->tmpl, m, n, 0, c->date, &full, &n_full))) {
        st = l3c_fail(st, "data: %s:%lld: %s", path, (long long)line, l3c_last_error());
        goto done;
    }
    if (!(mask = l3c_calloc((size_t)n_full + 1, 1))) {
        st = l3c_fail(L3C_ERR_NOMEM, "data: %s: out of memory", path);
        goto done;
    }
    if ((st = chat_mask(c, m, train, n, line, full, n_full, mask))) goto done;
    const int64_t cap = (int64_t)ds->seq_len + 1;
    if (n_full > cap && b->drop_long) {
        ds->n_dropped_long++;
        ds->n_tokens_cut += (size_t)n_full;
        goto done;
    }
    const int64_t keep = L3C_MIN(n_full, cap);
    int64_t nt = 0;
    for (int64_t k = 1; k < keep; k++) nt += mask[k];
    if (nt == 0) {
        ds->n_dropped_empty++;
        ds->n_tokens_cut += (size_t)n_full;
        goto done;
    }
    if (n_full > cap) ds->n_tokens_cut += (size_t)(n_full - cap);
    if (n_full > cap) ds->n_truncated++;
    size_t off;
    if ((st = push_tokens(b, full, mask, 0, (size_t)keep, &off))) goto done;
    st = push_example(b, off, (int32_t)keep, line);
done:
    free(m);
    free(train);
    free(full);
    free(mask);
    return st;
}

/* ---------------------------------------------------------------- loading */

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Parses one JSONL line; errors name path:line. */
static l3c_status parse_line(const char *path, const char *s, size_t n, int64_t line, json_t **out) {
    json_error_t jerr;
    *out = json_loadb(s, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!*out)
        return l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: bad JSON at column %d: %s", path, (long long)line,
                        jerr.column, jerr.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: expected a JSON object per line", path, (long long)line);
    }
    return L3C_OK;
}

/* AUTO: the first non-blank line decides (a .jsonl file must be JSONL). */
static l3c_status detect_format(const char *path, const char *s, size_t n, l3c_data_format *fmt) {
    size_t a = 0;
    int64_t line = 1;
    for (;;) {
        size_t e = a;
        while (e < n && s[e] != '\n') e++;
        if (!blank(s + a, e - a)) {
            json_t *o = NULL;
            int must = ends_with(path, ".jsonl");
            l3c_status st = (s[a] == '{' || must) ? parse_line(path, s + a, e - a, line, &o) : L3C_ERR_FORMAT;
            if (st) {
                if (must) return st;
                l3c_clear_error();
                *fmt = L3C_DATA_TEXT;
                return L3C_OK;
            }
            if (json_object_get(o, "messages")) *fmt = L3C_DATA_CHAT;
            else if (json_object_get(o, "text")) *fmt = L3C_DATA_JSONL_TEXT;
            else if (must) st = l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: neither \"messages\" (chat) nor \"text\"",
                                         path, (long long)line);
            else *fmt = L3C_DATA_TEXT;
            json_decref(o);
            return st;
        }
        if (e >= n) break;
        a = e + 1;
        line++;
    }
    *fmt = L3C_DATA_TEXT;
    return L3C_OK;
}

static l3c_status load_jsonl(builder *b, const l3c_model *model, const l3c_data_params *p, const char *s, size_t n) {
    l3c_dataset *ds = b->ds;
    const l3c_tokenizer *tok = l3c_model_tokenizer(model);
    chat_ctx c = {.model = model, .tok = tok, .tmpl = p->tmpl, .date = p->date, .path = ds->path};
    if (c.tmpl == L3C_CHAT_AUTO) c.tmpl = l3c_chat_template_detect(model);
    const char *key = ds->format == L3C_DATA_CHAT ? "messages" : "text";
    int64_t line = 0, win = 0;
    l3c_status st = L3C_OK;
    for (size_t a = 0; a < n && !st;) {
        size_t e = a;
        while (e < n && s[e] != '\n') e++;
        line++;
        if (!blank(s + a, e - a)) {
            json_t *o = NULL;
            if ((st = parse_line(ds->path, s + a, e - a, line, &o))) break;
            json_t *v = json_object_get(o, key);
            if (!v) {
                st = l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: missing \"%s\"", ds->path, (long long)line, key);
            } else if (ds->format == L3C_DATA_CHAT) {
                st = add_chat(b, &c, v, line);
            } else if (!json_is_string(v)) {
                st = l3c_fail(L3C_ERR_FORMAT, "data: %s:%lld: \"text\" is not a string", ds->path, (long long)line);
            } else {
                int32_t *ids = NULL;
                int64_t nid = 0;
                ds->n_records++;
                st = tokenize_alloc(tok, ds->path, json_string_value(v), json_string_length(v),
                                    L3C_TOKENIZE_ADD_BOS, &ids, &nid);
                if (!st && l3c_token_eos(tok) >= 0) ids[nid++] = l3c_token_eos(tok); /* tokenize_alloc's spare slot */
                if (!st) st = add_windows(b, ids, (size_t)nid, p->min_tokens, &win);
                free(ids);
            }
            json_decref(o);
        }
        a = e + 1;
    }
    return st;
}

l3c_status l3c_data_load(const l3c_model *model, const char *path, const l3c_data_params *p, l3c_dataset **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "data: out is NULL");
    *out = NULL;
    if (!model || !path || !p) return l3c_fail(L3C_ERR_INVALID_ARG, "data: NULL model, path or params");
    if (p->seq_len < 1 || p->seq_len > (1 << 24))
        return l3c_fail(L3C_ERR_INVALID_ARG, "data: sequence length %d out of range [1, %d]", p->seq_len, 1 << 24);
    const l3c_tokenizer *tok = l3c_model_tokenizer(model);
    if (!tok) return l3c_fail(L3C_ERR_INVALID_ARG, "data: the model has no tokenizer");

    char *text = NULL;
    size_t n = 0;
    builder b = {.drop_long = p->drop_long};
    l3c_status st = read_all(path, &text, &n);
    if (st) return st;
    const char *s = text;
    if (n >= 3 && !memcmp(s, "\xef\xbb\xbf", 3)) { /* a UTF-8 byte order mark is not text */
        s += 3;
        n -= 3;
    }
    l3c_dataset *ds = b.ds = l3c_calloc(1, sizeof *ds);
    if (!ds || !(ds->path = l3c_strdup(path))) {
        st = l3c_fail(L3C_ERR_NOMEM, "data: out of memory");
        goto fail;
    }
    ds->seq_len = p->seq_len;
    ds->pad_id = l3c_token_eos(tok) >= 0 ? l3c_token_eos(tok) : 0;
    if (blank(s, n)) {
        st = l3c_fail(L3C_ERR_FORMAT, "data: %s: empty file", path);
        goto fail;
    }
    if ((st = check_utf8(path, s, n))) goto fail;
    ds->format = p->format;
    if (ds->format == L3C_DATA_AUTO && (st = detect_format(path, s, n, &ds->format))) goto fail;

    if (ds->format == L3C_DATA_TEXT) {
        int32_t *ids = NULL;
        int64_t nid = 0, win = 0;
        ds->n_records = 1;
        st = tokenize_alloc(tok, path, s, n, L3C_TOKENIZE_ADD_BOS, &ids, &nid);
        if (!st) st = add_windows(&b, ids, (size_t)nid, p->min_tokens, &win);
        free(ids);
    } else if (ds->format == L3C_DATA_JSONL_TEXT || ds->format == L3C_DATA_CHAT) {
        st = load_jsonl(&b, model, p, s, n);
    } else {
        st = l3c_fail(L3C_ERR_INVALID_ARG, "data: unknown format %d", (int)ds->format);
    }
    if (st) goto fail;
    if (ds->n_ex == 0) {
        st = l3c_fail(L3C_ERR_FORMAT, "data: %s: no example with a trained token (%zu records, %zu without one)", path,
                      ds->n_records, ds->n_dropped_empty + ds->n_dropped_long);
        goto fail;
    }
    free(text);
    *out = ds;
    return L3C_OK;
fail:
    free(text);
    l3c_data_free(ds);
    return st;
}

/* ---------------------------------------------------------------- split, order, batches */

/* Copies the examples i with pick[i] == want (in source order) into a new dataset. */
static l3c_status subset(const l3c_dataset *src, const uint8_t *pick, uint8_t want, l3c_dataset **out) {
    *out = NULL;
    builder b = {0};
    l3c_dataset *ds = b.ds = l3c_calloc(1, sizeof *ds);
    l3c_status st = L3C_OK;
    if (!ds || !(ds->path = l3c_strdup(src->path))) {
        st = l3c_fail(L3C_ERR_NOMEM, "data: out of memory");
        goto fail;
    }
    ds->seq_len = src->seq_len;
    ds->pad_id = src->pad_id;
    ds->format = src->format;
    for (size_t i = 0; i < src->n_ex && !st; i++) {
        if (pick[i] != want) continue;
        const l3c_data_example *e = &src->ex[i];
        size_t off;
        st = push_tokens(&b, src->tokens + e->off, src->mask + e->off, 0, (size_t)e->len, &off);
        if (!st) st = push_example(&b, off, e->len, e->line);
    }
    if (st) goto fail;
    *out = ds;
    return L3C_OK;
fail:
    l3c_data_free(ds);
    return st;
}

l3c_status l3c_data_pack(const l3c_dataset *src, int32_t T, l3c_dataset **out) {
    *out = NULL;
    if (!src || src->pos || T < 1)
        return l3c_fail(L3C_ERR_INVALID_ARG, "data: pack: needs an unpacked dataset and T >= 1");
    enum { OPEN = 64 };
    const size_t n = src->n_ex;
    int32_t *group = l3c_malloc((n ? n : 1) * sizeof *group); /* group of each source example */
    int64_t *used = l3c_malloc((n ? n : 1) * sizeof *used);   /* tokens in each group */
    size_t *first = l3c_malloc((n ? n : 1) * sizeof *first);  /* each group's first source example */
    builder b = {0};
    l3c_dataset *ds = b.ds = l3c_calloc(1, sizeof *ds);
    l3c_status st = L3C_OK;
    if (!group || !used || !first || !ds || !(ds->path = l3c_strdup(src->path)) ||
        !(ds->pos = l3c_malloc((src->n_tokens ? src->n_tokens : 1) * sizeof *ds->pos))) {
        st = l3c_fail(L3C_ERR_NOMEM, "data: out of memory");
        goto done;
    }
    size_t n_groups = 0;
    for (size_t i = 0; i < n; i++) {
        const int32_t len = src->ex[i].len;
        size_t g = n_groups;
        if (len <= T)
            for (size_t c = n_groups > OPEN ? n_groups - OPEN : 0; c < n_groups; c++)
                if (used[c] + len <= T) {
                    g = c;
                    break;
                }
        if (g == n_groups) {
            used[n_groups] = 0;
            first[n_groups++] = i;
        }
        used[g] += len;
        group[i] = (int32_t)g;
    }
    ds->seq_len = src->seq_len;
    ds->pad_id = src->pad_id;
    ds->format = src->format;
    ds->n_records = src->n_records;
    ds->n_truncated = src->n_truncated;
    ds->n_dropped_long = src->n_dropped_long;
    ds->n_dropped_empty = src->n_dropped_empty;
    ds->n_tokens_cut = src->n_tokens_cut;
    ds->n_packed = n;
    /* each group walks the examples from its first one until it is complete: an example index is
     * walked by at most OPEN + 1 groups (those open when it was placed) */
    for (size_t g = 0; g < n_groups && !st; g++) {
        const size_t off0 = ds->n_tokens;
        for (size_t i = first[g]; i < n && !st; i++) {
            if (group[i] != (int32_t)g) continue;
            const l3c_data_example *e = &src->ex[i];
            size_t off;
            if ((st = push_tokens(&b, src->tokens + e->off, src->mask + e->off, 0, (size_t)e->len, &off))) break;
            ds->mask[off] = 0;
            for (int32_t t = 0; t < e->len; t++) ds->pos[off + (size_t)t] = t;
            if ((int64_t)(ds->n_tokens - off0) >= used[g]) break; /* the group is complete */
        }
        if (!st) st = push_example(&b, off0, (int32_t)(ds->n_tokens - off0), src->ex[first[g]].line);
    }
done:
    free(group);
    free(used);
    free(first);
    if (st) {
        l3c_data_free(ds);
        return st;
    }
    *out = ds;
    return L3C_OK;
}

l3c_status l3c_data_split(const l3c_dataset *ds, double eval_frac, uint64_t seed, l3c_dataset **train,
                          l3c_dataset **eval) {
    if (!train || !eval) return l3c_fail(L3C_ERR_INVALID_ARG, "data: split: NULL output");
    *train = *eval = NULL;
    if (!ds) return l3c_fail(L3C_ERR_INVALID_ARG, "data: split: NULL dataset");
    if (!(eval_frac >= 0 && eval_frac < 1))
        return l3c_fail(L3C_ERR_INVALID_ARG, "data: eval fraction %g is not in [0, 1)", eval_frac);
    size_t n = ds->n_ex, n_eval = 0;
    if (eval_frac > 0) {
        if (n < 2)
            return l3c_fail(L3C_ERR_INVALID_ARG, "data: %s: %zu example(s): too few to hold out an eval fraction",
                            ds->path, n);
        n_eval = (size_t)llround((double)n * eval_frac);
        n_eval = L3C_MAX(n_eval, (size_t)1);
        n_eval = L3C_MIN(n_eval, n - 1);
    }
    int32_t *order = l3c_malloc(n * sizeof *order);
    uint8_t *pick = l3c_calloc(n, 1);
    l3c_status st = L3C_OK;
    if (!order || !pick) {
        st = l3c_fail(L3C_ERR_NOMEM, "data: out of memory");
        goto done;
    }
    l3c_rng r;
    l3c_rng_seed(&r, seed ^ 0x73706c6974ull); /* "split": a stream apart from the epoch shuffles */
    for (size_t i = 0; i < n; i++) order[i] = (int32_t)i;
    l3c_rng_shuffle(&r, order, n);
    for (size_t i = 0; i < n_eval; i++) pick[order[i]] = 1;
    if ((st = subset(ds, pick, 0, train))) goto done;
    if (n_eval && (st = subset(ds, pick, 1, eval))) {
        l3c_data_free(*train);
        *train = NULL;
    }
done:
    free(order);
    free(pick);
    return st;
}

void l3c_data_order(size_t n, uint64_t seed, int64_t epoch, int32_t *order) {
    l3c_rng r;
    l3c_rng_seed(&r, seed + 0x9e3779b97f4a7c15ull * ((uint64_t)epoch + 1));
    for (size_t i = 0; i < n; i++) order[i] = (int32_t)i;
    l3c_rng_shuffle(&r, order, n);
}

size_t l3c_data_steps_per_epoch(const l3c_dataset *ds, int B) {
    L3C_ASSERT(ds && B > 0);
    return (ds->n_ex + (size_t)B - 1) / (size_t)B;
}

void l3c_data_locate(const l3c_dataset *ds, int B, int64_t step, int64_t *epoch, size_t *start) {
    L3C_ASSERT(step >= 0);
    const size_t spe = l3c_data_steps_per_epoch(ds, B);
    *epoch = step / (int64_t)spe;
    *start = (size_t)(step % (int64_t)spe) * (size_t)B;
}

int64_t l3c_data_batch(const l3c_dataset *ds, const int32_t *order, size_t start, int B, int T, int32_t *ids,
                       int32_t *targets) {
    return l3c_data_batch_pos(ds, order, start, B, T, ids, targets, NULL);
}

int64_t l3c_data_batch_pos(const l3c_dataset *ds, const int32_t *order, size_t start, int B, int T,
                           int32_t *ids, int32_t *targets, int32_t *pos) {
    L3C_ASSERT(ds && B > 0 && T > 0 && ids && targets);
    int64_t n_trained = 0;
    for (int b = 0; b < B; b++) {
        int32_t *row = ids + (size_t)b * (size_t)T, *tgt = targets + (size_t)b * (size_t)T;
        const size_t k = start + (size_t)b;
        int32_t len = 0;
        const int32_t *tok = NULL, *tpos = NULL;
        const uint8_t *mask = NULL;
        if (k < ds->n_ex) {
            const int32_t i = order ? order[k] : (int32_t)k;
            L3C_ASSERT(i >= 0 && (size_t)i < ds->n_ex);
            const l3c_data_example *e = &ds->ex[i];
            len = L3C_MIN(e->len, T + 1);
            tok = ds->tokens + e->off;
            mask = ds->mask + e->off;
            tpos = ds->pos ? ds->pos + e->off : NULL;
        }
        for (int t = 0; t < T; t++) {
            row[t] = t < len ? tok[t] : ds->pad_id;
            tgt[t] = t + 1 < len && mask[t + 1] ? tok[t + 1] : -1;
            n_trained += tgt[t] >= 0;
            if (pos) /* padding continues the row's last example */
                pos[(size_t)b * (size_t)T + (size_t)t] = !tpos ? t : t < len ? tpos[t] : tpos[len - 1] + (t - len + 1);
        }
    }
    return n_trained;
}

int64_t l3c_data_count_targets(const int32_t *targets, size_t n) {
    int64_t c = 0;
    for (size_t i = 0; i < n; i++) c += targets[i] >= 0;
    return c;
}

/* 1234567 -> "1,234,567" */
static const char *commas(char buf[32], uint64_t v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v), o = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

void l3c_data_describe(const l3c_dataset *ds, const char *name, FILE *f) {
    static const char *const fmt[] = {"auto", "text", "jsonl text", "chat"};
    char a[32], b[32], c[32], d[32];
    const int chat = ds->format == L3C_DATA_CHAT;
    fprintf(f, "data: %s: %s, %s %s of <= %d tokens, %s tokens, %s trained\n", name ? name : ds->path,
            fmt[ds->format], commas(a, ds->n_ex), chat ? "conversations" : "windows", ds->seq_len + 1,
            commas(b, ds->n_tokens), commas(c, (uint64_t)ds->n_trained));
    if (ds->n_truncated)
        fprintf(f, "data: warning: %s of %s conversations longer than %d tokens truncated (%s tokens cut; "
                   "a longer --seq-len keeps them, --drop-long drops them)\n",
                commas(a, ds->n_truncated), commas(b, ds->n_records), ds->seq_len + 1, commas(c, ds->n_tokens_cut));
    if (ds->n_dropped_long)
        fprintf(f, "data: warning: %s of %s conversations longer than %d tokens dropped\n",
                commas(a, ds->n_dropped_long), commas(b, ds->n_records), ds->seq_len + 1);
    if (ds->n_dropped_empty)
        fprintf(f, "data: warning: %s of %s %s dropped: no trained token%s\n", commas(a, ds->n_dropped_empty),
                commas(b, ds->n_records), chat ? "conversations" : "documents",
                chat ? " (no assistant message, or all of it past the length limit)" : " (shorter than 2 tokens)");
    if (!chat && ds->n_tokens_cut)
        fprintf(f, "data: %s tokens of short last windows or documents not trained\n", commas(d, ds->n_tokens_cut));
}
