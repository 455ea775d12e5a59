/*
 * json_schema.c -- JSON Schema -> GBNF (l3c_json_schema_to_gbnf), after llama.cpp's
 * json-schema-to-grammar conventions: one rule per schema node named after its path
 * ("root", "address", "address-city-kv"), shared primitive rules (string, number, ...), bounded
 * whitespace `space ::= | " " | "\n"{1,2} [ \t]{0,20}` after every token, properties in the
 * order the schema declares them (required ones always, optional ones may be left out), no
 * properties beyond the declared ones unless additionalProperties allows them.
 *
 * Supported: type (one or a list), properties, required, additionalProperties (false, true or
 * a schema: extra keys are strings other than the declared ones), items, prefixItems,
 * minItems / maxItems, enum, const, anyOf, oneOf (only when its branches cannot both match:
 * distinct types or a const discriminator property), allOf (a single schema, or objects that
 * merge), $ref to "#..." JSON pointers ($defs, definitions; recursion must have a base case),
 * string minLength / maxLength and format date, time, date-time, uuid, integer minimum /
 * maximum / exclusiveMinimum / exclusiveMaximum (exact digit-by-digit ranges), number minimum
 * 0 (no minus sign). Ignored annotations: title, description, $schema, $id, $comment, default,
 * examples, deprecated, readOnly, writeOnly. Anything else is refused by name with its JSON
 * pointer (L3C_ERR_UNSUPPORTED), never silently ignored.
 */
#include "grammar/grammar.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#define MAX_SCHEMA_DEPTH 64
#define MAX_REPEAT_COUNT 10000

typedef struct rule {
    char *name;
    char *body;
} rule;

typedef struct conv {
    json_t *doc;
    rule *rules;
    size_t n_rules, cap_rules;
    char **ref_ptr; /* $ref targets already given a rule */
    char **ref_rule;
    size_t n_refs;
    l3c_status st;
    int depth;
} conv;

static const char *const ANNOTATIONS[] = {
    "title",      "description", "$schema",   "$id",   "$comment",    "default", "examples",
    "deprecated", "readOnly",    "writeOnly", "$defs", "definitions", NULL};

/* ---------------------------------------------------------------- errors and strings */

__attribute__((format(printf, 3, 4))) static char *cfail(conv *c, l3c_status st, const char *fmt,
                                                         ...) {
    if (c->st == L3C_OK) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        c->st = l3c_fail(st, "json schema: %s", msg);
    }
    return NULL;
}

static char *vfmt(conv *c, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *s = n >= 0 ? l3c_malloc((size_t)n + 1) : NULL;
    if (!s) return cfail(c, L3C_ERR_NOMEM, "out of memory");
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

__attribute__((format(printf, 2, 3))) static char *fmt(conv *c, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    char *s = vfmt(c, f, ap);
    va_end(ap);
    return s;
}

/* GBNF literal of bytes s[0..n): "..." with \" \\ and control characters escaped. */
static void put_literal(l3c_buf *b, const char *s, size_t n) {
    l3c_buf_append(b, "\"", 1);
    for (size_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)s[k];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            l3c_buf_append(b, e, 2);
        } else if (ch < 0x20 || ch == 0x7F) {
            l3c_buf_appendf(b, "\\x%02X", ch);
        } else {
            l3c_buf_append(b, s + k, 1);
        }
    }
    l3c_buf_append(b, "\"", 1);
}

/* The compact JSON text of v as a GBNF literal (enum / const values, property keys). */
static char *json_literal(conv *c, const json_t *v) {
    char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
    if (!txt) return cfail(c, L3C_ERR_NOMEM, "out of memory");
    l3c_buf b = {0};
    put_literal(&b, txt, strlen(txt));
    free(txt);
    if (l3c_buf_append(&b, "", 1) != L3C_OK) {
        l3c_buf_free(&b);
        return cfail(c, L3C_ERR_NOMEM, "out of memory");
    }
    return b.data;
}

/* ---------------------------------------------------------------- rules */

/* Adds rule name ::= body (body is taken over). An identical body under the same base name is
 * reused; a clash gets a numeric suffix. Returns the rule's name (owned by c). */
static const char *add_rule(conv *c, const char *name, char *body) {
    if (!body) return NULL;
    char base[96];
    size_t k = 0;
    for (const char *p = name; *p && k + 1 < sizeof base; p++)
        base[k++] =
            ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
                ? *p
                : '-';
    base[k] = 0;
    if (!k) snprintf(base, sizeof base, "r");
    char *nm = NULL;
    for (int suffix = 0; !nm; suffix++) {
        char cand[128];
        if (suffix)
            snprintf(cand, sizeof cand, "%s%d", base, suffix);
        else
            snprintf(cand, sizeof cand, "%s", base);
        size_t j;
        for (j = 0; j < c->n_rules; j++)
            if (strcmp(c->rules[j].name, cand) == 0) break;
        if (j < c->n_rules) {
            if (strcmp(c->rules[j].body, body) == 0) {
                free(body);
                return c->rules[j].name;
            }
            continue;
        }
        nm = l3c_strdup(cand);
        if (!nm) {
            free(body);
            return cfail(c, L3C_ERR_NOMEM, "out of memory");
        }
    }
    if (c->n_rules == c->cap_rules) {
        size_t nc = c->cap_rules ? c->cap_rules * 2 : 32;
        rule *nr = l3c_realloc(c->rules, nc * sizeof *nr);
        if (!nr) {
            free(nm);
            free(body);
            return cfail(c, L3C_ERR_NOMEM, "out of memory");
        }
        c->rules = nr;
        c->cap_rules = nc;
    }
    c->rules[c->n_rules++] = (rule){nm, body};
    return nm;
}

/* Reserves a rule name (for $ref recursion): body filled later by set_body. */
static const char *reserve_rule(conv *c, const char *name) {
    char *ph = fmt(c, "\x01%zu", c->n_rules); /* a unique placeholder body */
    return add_rule(c, name, ph);
}

static void set_body(conv *c, const char *name, char *body) {
    for (size_t j = 0; j < c->n_rules; j++)
        if (c->rules[j].name == name) {
            free(c->rules[j].body);
            c->rules[j].body = body;
            return;
        }
    free(body);
}

typedef struct prim {
    const char *name, *body, *deps[6];
} prim;

static const prim PRIMS[] = {
    {"space", "| \" \" | \"\\n\"{1,2} [ \\t]{0,20}", {NULL}},
    {"boolean", "(\"true\" | \"false\") space", {"space", NULL}},
    {"null", "\"null\" space", {"space", NULL}},
    {"decimal-part", "[0-9]{1,16}", {NULL}},
    {"integral-part", "[0] | [1-9] [0-9]{0,15}", {NULL}},
    {"number",
     "(\"-\"? integral-part) (\".\" decimal-part)? ([eE] [-+]? integral-part)? space",
     {"integral-part", "decimal-part", "space", NULL}},
    {"nonneg-number",
     "integral-part (\".\" decimal-part)? ([eE] [-+]? integral-part)? space",
     {"integral-part", "decimal-part", "space", NULL}},
    {"integer", "(\"-\"? integral-part) space", {"integral-part", "space", NULL}},
    {"char", "[^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})", {NULL}},
    {"string", "\"\\\"\" char* \"\\\"\" space", {"char", "space", NULL}},
    {"value",
     "object | array | string | number | boolean | null",
     {"object", "array", "string", "number", "boolean", "null"}},
    {"object",
     "\"{\" space ( string \":\" space value (\",\" space string \":\" space value)* )? \"}\" "
     "space",
     {"string", "value", "space", NULL}},
    {"array", "\"[\" space ( value (\",\" space value)* )? \"]\" space", {"value", "space", NULL}},
    {"uuid",
     "\"\\\"\" [0-9a-fA-F]{8} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" [0-9a-fA-F]{4} \"-\" "
     "[0-9a-fA-F]{12} \"\\\"\" space",
     {"space", NULL}},
    {"date",
     "[0-9]{4} \"-\" ( \"0\" [1-9] | \"1\" [0-2] ) \"-\" ( \"0\" [1-9] | [1-2] [0-9] | \"3\" [0-1] "
     ")",
     {NULL}},
    {"time",
     "([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{3} )? ( \"Z\" | "
     "( \"+\" | \"-\" ) "
     "( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )",
     {NULL}},
    {"date-time", "date \"T\" time", {"date", "time", NULL}},
    {"date-string", "\"\\\"\" date \"\\\"\" space", {"date", "space", NULL}},
    {"time-string", "\"\\\"\" time \"\\\"\" space", {"time", "space", NULL}},
    {"date-time-string", "\"\\\"\" date-time \"\\\"\" space", {"date-time", "space", NULL}},
};

static const char *primitive(conv *c, const char *name) {
    for (size_t k = 0; k < sizeof PRIMS / sizeof PRIMS[0]; k++) {
        if (strcmp(PRIMS[k].name, name) != 0) continue;
        for (size_t j = 0; j < c->n_rules; j++)
            if (strcmp(c->rules[j].name, name) == 0) return c->rules[j].name;
        const char *r = add_rule(c, name, fmt(c, "%s", PRIMS[k].body));
        for (int d = 0; r && d < 6 && PRIMS[k].deps[d]; d++)
            if (!primitive(c, PRIMS[k].deps[d])) return NULL;
        return r;
    }
    return cfail(c, L3C_ERR_INVALID_ARG, "internal: no primitive '%s'", name);
}

/* Frees the rule being built in o and returns r (NULL: the failure already recorded). */
static const char *free_buf(l3c_buf *o, const char *r) {
    l3c_buf_free(o);
    return r;
}

/* add_rule with the body built in o (taken: NUL-terminated here, freed on failure). */
static const char *add_rule_buf(conv *c, const char *name, l3c_buf *o) {
    if (l3c_buf_append(o, "", 1) != L3C_OK) {
        l3c_buf_free(o);
        return cfail(c, L3C_ERR_NOMEM, "out of memory");
    }
    return add_rule(c, name, o->data);
}

/* ---------------------------------------------------------------- integer ranges */

/* GBNF for the decimal numbers in [a, b], both with n digits (a, b as digit strings). */
static void range_same_len(l3c_buf *o, const char *a, const char *b, size_t n) {
    if (n == 0) return;
    if (n == 1) {
        if (a[0] == b[0])
            l3c_buf_appendf(o, "\"%c\"", a[0]);
        else
            l3c_buf_appendf(o, "[%c-%c]", a[0], b[0]);
        return;
    }
    if (a[0] == b[0]) {
        l3c_buf_appendf(o, "\"%c\" ", a[0]);
        range_same_len(o, a + 1, b + 1, n - 1);
        return;
    }
    int a_rest_min = 1, b_rest_max = 1;
    for (size_t k = 1; k < n; k++) {
        if (a[k] != '0') a_rest_min = 0;
        if (b[k] != '9') b_rest_max = 0;
    }
    char lo = a[0], hi = b[0];
    l3c_buf_append(o, "(", 1);
    int first = 1;
    if (!a_rest_min) {
        char nines[24];
        memset(nines, '9', n - 1);
        l3c_buf_appendf(o, "\"%c\" (", a[0]);
        range_same_len(o, a + 1, nines, n - 1);
        l3c_buf_append(o, ")", 1);
        lo++;
        first = 0;
    }
    char hi_full = b_rest_max ? hi : (char)(hi - 1);
    if (lo <= hi_full) {
        if (!first) l3c_buf_append(o, " | ", 3);
        if (lo == hi_full)
            l3c_buf_appendf(o, "\"%c\"", lo);
        else
            l3c_buf_appendf(o, "[%c-%c]", lo, hi_full);
        l3c_buf_appendf(o, " [0-9]{%zu}", n - 1);
        first = 0;
    }
    if (!b_rest_max) {
        char zeros[24];
        memset(zeros, '0', n - 1);
        if (!first) l3c_buf_append(o, " | ", 3);
        l3c_buf_appendf(o, "\"%c\" (", b[0]);
        range_same_len(o, zeros, b + 1, n - 1);
        l3c_buf_append(o, ")", 1);
    }
    l3c_buf_append(o, ")", 1);
}

/* Nonnegative integers in [a, b] (b < 0: unbounded, up to 16 digits), no leading zeros. */
static void range_nonneg(l3c_buf *o, long long a, long long b) {
    char sa[24], sb[24];
    int first = 1;
    int la = snprintf(sa, sizeof sa, "%lld", a);
    int lb = b >= 0 ? snprintf(sb, sizeof sb, "%lld", b) : 16;
    l3c_buf_append(o, "(", 1);
    for (int len = la; len <= lb; len++) {
        char lo[24], hi[24];
        if (len == la)
            memcpy(lo, sa, (size_t)la + 1);
        else {
            lo[0] = '1';
            memset(lo + 1, '0', (size_t)len - 1);
            lo[len] = 0;
        }
        if (b >= 0 && len == lb)
            memcpy(hi, sb, (size_t)lb + 1);
        else {
            memset(hi, '9', (size_t)len);
            hi[len] = 0;
        }
        if (!first) l3c_buf_append(o, " | ", 3);
        first = 0;
        l3c_buf_append(o, "(", 1);
        range_same_len(o, lo, hi, (size_t)len);
        l3c_buf_append(o, ")", 1);
    }
    l3c_buf_append(o, ")", 1);
}

static const char *integer_rule(conv *c, const char *name, int has_min, long long mn, int has_max,
                                long long mx, const char *path) {
    if (!has_min && !has_max) return primitive(c, "integer");
    if (has_min && has_max && mn > mx)
        return cfail(c, L3C_ERR_UNSUPPORTED, "%s: minimum %lld > maximum %lld: no integer fits",
                     path, mn, mx);
    const long long LIM = 999999999999999LL;
    if ((has_min && (mn < -LIM || mn > LIM)) || (has_max && (mx < -LIM || mx > LIM)))
        return cfail(c, L3C_ERR_UNSUPPORTED,
                     "%s: integer bounds beyond 15 digits are not supported", path);
    l3c_buf o = {0};
    l3c_buf_append(&o, "(", 1);
    int alt = 0;
    /* negative part: "-" magnitude in [max(1, -mx), -mn] */
    if (!has_min || mn < 0) {
        long long mag_lo = has_max && mx < 0 ? -mx : 1, mag_hi = has_min ? -mn : -1;
        l3c_buf_append(&o, "\"-\" ", 4);
        range_nonneg(&o, mag_lo, mag_hi);
        alt = 1;
    }
    if (!has_max || mx >= 0) {
        long long lo = has_min && mn > 0 ? mn : 0, hi = has_max ? mx : -1;
        if (alt) l3c_buf_append(&o, " | ", 3);
        range_nonneg(&o, lo, hi);
    }
    l3c_buf_append(&o, ") space", 7);
    if (!primitive(c, "space")) {
        l3c_buf_free(&o);
        return NULL;
    }
    return add_rule_buf(c, name, &o);
}

/* ---------------------------------------------------------------- schema walk */

static const char *visit(conv *c, json_t *s, const char *name, const char *path);

static int is_annotation(const char *k) {
    for (int i = 0; ANNOTATIONS[i]; i++)
        if (strcmp(ANNOTATIONS[i], k) == 0) return 1;
    return 0;
}

/* Refuses keys of s that are neither annotations nor in allowed (NULL-terminated). */
static int check_keys(conv *c, json_t *s, const char *const *allowed, const char *path,
                      const char *what) {
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (is_annotation(k)) continue;
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(allowed[i], k) == 0) ok = 1;
        if (!ok) {
            cfail(c, L3C_ERR_UNSUPPORTED,
                  "%s: keyword '%s' is not supported%s%s (it cannot be enforced by the grammar)",
                  *path ? path : "(root)", k, what ? " for " : "", what ? what : "");
            return -1;
        }
    }
    return 0;
}

static json_t *resolve_ref(conv *c, const char *ref, const char *path) {
    if (ref[0] != '#')
        return cfail(c, L3C_ERR_UNSUPPORTED,
                     "%s: $ref '%s': only references inside the schema (\"#...\") are supported",
                     path, ref),
               NULL;
    json_t *cur = c->doc;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char key[256];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 1 < sizeof key; i++) {
            if (p[i] == '~' && i + 1 < n && (p[i + 1] == '0' || p[i + 1] == '1')) {
                key[k++] = p[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                key[k++] = p[i];
            }
        }
        key[k] = 0;
        json_t *nx = NULL;
        if (json_is_object(cur))
            nx = json_object_get(cur, key);
        else if (json_is_array(cur))
            nx = json_array_get(cur, (size_t)strtoul(key, NULL, 10));
        if (!nx)
            return cfail(c, L3C_ERR_FORMAT, "%s: $ref '%s' does not resolve (no '%s')", path, ref,
                         key),
                   NULL;
        cur = nx;
        p += n;
    }
    if (*p) return cfail(c, L3C_ERR_FORMAT, "%s: $ref '%s' is not a JSON pointer", path, ref), NULL;
    return cur;
}

static const char *visit_ref(conv *c, json_t *s, const char *path) {
    if (check_keys(c, s, (const char *const[]){"$ref", NULL}, path, "a $ref (siblings of $ref)") <
        0)
        return NULL;
    json_t *r = json_object_get(s, "$ref");
    if (!json_is_string(r)) return cfail(c, L3C_ERR_FORMAT, "%s: $ref must be a string", path);
    const char *ref = json_string_value(r);
    for (size_t k = 0; k < c->n_refs; k++)
        if (strcmp(c->ref_ptr[k], ref) == 0) return c->ref_rule[k];
    json_t *target = resolve_ref(c, ref, path);
    if (!target) return NULL;
    const char *last = strrchr(ref, '/');
    const char *nm = last ? last + 1 : "ref";
    if (!*nm) nm = "ref";
    char **np = l3c_realloc(c->ref_ptr, (c->n_refs + 1) * sizeof *np);
    if (np) c->ref_ptr = np;
    char **nr = l3c_realloc(c->ref_rule, (c->n_refs + 1) * sizeof *nr);
    if (nr) c->ref_rule = nr;
    char *dup = l3c_strdup(ref);
    if (!np || !nr || !dup) {
        free(dup);
        return cfail(c, L3C_ERR_NOMEM, "out of memory");
    }
    const char *rn = reserve_rule(c, nm);
    if (!rn) {
        free(dup);
        return NULL;
    }
    c->ref_ptr[c->n_refs] = dup;
    c->ref_rule[c->n_refs] = (char *)rn;
    c->n_refs++;
    char sub[512];
    snprintf(sub, sizeof sub, "%s", ref + 1);
    const char *body = visit(c, target, nm, sub);
    if (!body) return NULL;
    set_body(c, rn, fmt(c, "%s", body));
    return rn;
}

/* 1 when an object key can be written into a GBNF string-body exclusion. */
static int plain_key(const char *k) {
    for (const unsigned char *p = (const unsigned char *)k; *p; p++)
        if (*p < 0x20 || *p == '"' || *p == '\\' || *p >= 0x7F) return 0;
    return 1;
}

/* A JSON string other than the given keys: a trie over the keys where leaving the trie (a
 * character no key has there) ends the constraint, and stopping is allowed only off key ends. */
static const char *not_keys_rule(conv *c, const char **keys, size_t n, const char *name) {
    l3c_buf o = {0};
    const char **ks = l3c_malloc((n ? n : 1) * sizeof *ks);
    if (!ks) return cfail(c, L3C_ERR_NOMEM, "out of memory");
    memcpy(ks, keys, n * sizeof *ks);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(ks[j - 1], ks[j]) > 0; j--) {
            const char *t = ks[j];
            ks[j] = ks[j - 1];
            ks[j - 1] = t;
        }
    /* emit(group [lo,hi), depth d): the keys share their first d bytes */
    typedef struct frame {
        size_t lo, hi, d, child;
        int state;
    } frame;
    frame stk[256];
    int sp = 0;
    stk[sp++] = (frame){0, n, 0, 0, 0};
    while (sp) {
        frame *f = &stk[sp - 1];
        if (f->state == 0) {
            /* excluded next bytes: the keys' bytes at depth d */
            l3c_buf_appendf(&o, "%s", "( [^\"\\\\\\x7F\\x00-\\x1F");
            int is_key_end = 0;
            unsigned char prev = 0;
            for (size_t i = f->lo; i < f->hi; i++) {
                unsigned char ch = (unsigned char)ks[i][f->d];
                if (!ch) {
                    is_key_end = 1;
                    continue;
                }
                if (ch == prev) continue;
                prev = ch;
                if (ch == ']' || ch == '-' || ch == '^' || ch == '[')
                    l3c_buf_appendf(&o, "\\%c", ch);
                else
                    l3c_buf_append(&o, &ch, 1);
            }
            l3c_buf_appendf(&o, "%s",
                            "] char* | [\\\\] ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4}) char*");
            if (!is_key_end) l3c_buf_append(&o, " | ", 3); /* may stop: a proper prefix */
            f->child = f->lo;
            f->state = 1;
            if (is_key_end) {
                /* the key that ends here is first (sorted), skip it */
                while (f->child < f->hi && !ks[f->child][f->d])
                    f->child++;
            }
            continue;
        }
        if (f->child >= f->hi) {
            l3c_buf_append(&o, ")", 1);
            sp--;
            continue;
        }
        /* next child group: keys with the same byte at depth d */
        size_t lo = f->child, hi = lo;
        unsigned char ch = (unsigned char)ks[lo][f->d];
        while (hi < f->hi && (unsigned char)ks[hi][f->d] == ch)
            hi++;
        f->child = hi;
        if (sp >= 255) {
            free(ks);
            l3c_buf_free(&o);
            return cfail(c, L3C_ERR_UNSUPPORTED,
                         "property names longer than 250 bytes with additionalProperties");
        }
        l3c_buf_append(&o, " | ", 3);
        put_literal(&o, (const char *)&ch, 1);
        l3c_buf_append(&o, " ", 1);
        size_t d = f->d + 1;
        stk[sp++] = (frame){lo, hi, d, 0, 0};
    }
    free(ks);
    if (!primitive(c, "char")) {
        l3c_buf_free(&o);
        return NULL;
    }
    return add_rule_buf(c, name, &o);
}

static const char *visit_object(conv *c, json_t *s, const char *name, const char *path) {
    json_t *props = json_object_get(s, "properties");
    json_t *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props))
        return cfail(c, L3C_ERR_FORMAT, "%s/properties: not an object", path);
    if (req && !json_is_array(req))
        return cfail(c, L3C_ERR_FORMAT, "%s/required: not an array", path);
    size_t n = props ? json_object_size(props) : 0;
    const char **keys = l3c_calloc(n + 1, sizeof *keys);
    const char **kvs = l3c_calloc(n + 1, sizeof *kvs);
    char *addl_kv = NULL;
    const char *result = NULL;
    int *is_req = l3c_calloc(n + 1, sizeof *is_req);
    if (!keys || !kvs || !is_req) {
        cfail(c, L3C_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t k = 0;
    const char *key;
    json_t *sub;
    json_object_foreach(props, key, sub) {
        char sp[512], sn[256];
        snprintf(sp, sizeof sp, "%s/properties/%s", path, key);
        snprintf(sn, sizeof sn, "%s%s%s", strcmp(name, "root") ? name : "",
                 strcmp(name, "root") ? "-" : "", key);
        const char *vr = visit(c, sub, sn, sp);
        if (!vr) goto done;
        json_t *kj = json_string(key);
        char *lit = kj ? json_literal(c, kj) : NULL;
        json_decref(kj);
        if (!lit) {
            cfail(c, L3C_ERR_NOMEM, "out of memory");
            goto done;
        }
        char kvn[300];
        snprintf(kvn, sizeof kvn, "%s-kv", sn);
        kvs[k] = add_rule(c, kvn, fmt(c, "%s space \":\" space %s", lit, vr));
        free(lit);
        if (!kvs[k]) goto done;
        keys[k] = key;
        k++;
    }
    size_t i;
    json_t *rv;
    json_array_foreach(req, i, rv) {
        if (!json_is_string(rv)) {
            cfail(c, L3C_ERR_FORMAT, "%s/required/%zu: not a string", path, i);
            goto done;
        }
        size_t j;
        for (j = 0; j < n; j++)
            if (strcmp(keys[j], json_string_value(rv)) == 0) break;
        if (j == n) {
            if (json_is_false(addl) || !addl) {
                cfail(c, L3C_ERR_UNSUPPORTED,
                      "%s/required: '%s' is required but not among the properties", path,
                      json_string_value(rv));
                goto done;
            }
            cfail(c, L3C_ERR_UNSUPPORTED,
                  "%s/required: required property '%s' without a schema in properties is not "
                  "supported",
                  path, json_string_value(rv));
            goto done;
        }
        is_req[j] = 1;
    }
    if (addl && !json_is_false(addl)) {
        if (!json_is_true(addl) && !json_is_object(addl)) {
            cfail(c, L3C_ERR_FORMAT, "%s/additionalProperties: must be a boolean or a schema",
                  path);
            goto done;
        }
        char sp[512], sn[256];
        snprintf(sp, sizeof sp, "%s/additionalProperties", path);
        snprintf(sn, sizeof sn, "%s%sadditional", strcmp(name, "root") ? name : "",
                 strcmp(name, "root") ? "-" : "");
        const char *vr = json_is_true(addl) ? primitive(c, "value") : visit(c, addl, sn, sp);
        if (!vr) goto done;
        for (size_t j = 0; j < n; j++)
            if (!plain_key(keys[j])) {
                cfail(c, L3C_ERR_UNSUPPORTED,
                      "%s: property name '%s' (quote, backslash, control or non-ASCII character) "
                      "with additionalProperties",
                      path, keys[j]);
                goto done;
            }
        char kn[300];
        snprintf(kn, sizeof kn, "%s-key", sn);
        const char *keyr = n ? not_keys_rule(c, keys, n, kn) : primitive(c, "char");
        if (!keyr) goto done;
        if (!primitive(c, "space")) goto done;
        if (n)
            addl_kv = fmt(c, "\"\\\"\" %s \"\\\"\" space \":\" space %s", keyr, vr);
        else
            addl_kv = fmt(c, "\"\\\"\" char* \"\\\"\" space \":\" space %s", vr);
        if (!addl_kv) goto done;
        char an[300];
        snprintf(an, sizeof an, "%s-kv", sn);
        const char *ar = add_rule(c, an, addl_kv);
        addl_kv = NULL;
        if (!ar) goto done;
        addl_kv = fmt(c, "%s", ar);
        if (!addl_kv) goto done;
    }
    if (!primitive(c, "space")) goto done;
    l3c_buf o = {0};
    l3c_buf_append(&o, "\"{\" space ", 10);
    int have_req = 0;
    for (size_t j = 0; j < n; j++) {
        if (!is_req[j]) continue;
        if (have_req) l3c_buf_append(&o, " \",\" space ", 11);
        l3c_buf_appendf(&o, "%s", kvs[j]);
        have_req = 1;
    }
    if (have_req) {
        for (size_t j = 0; j < n; j++)
            if (!is_req[j]) l3c_buf_appendf(&o, " ( \",\" space %s )?", kvs[j]);
        if (addl_kv) l3c_buf_appendf(&o, " ( \",\" space %s )*", addl_kv);
    } else {
        /* nothing required: the first member present is any optional one (or an extra key); the
         * later optional ones follow in order */
        int alts = 0;
        l3c_buf_append(&o, "( ", 2);
        for (size_t j = 0; j <= n; j++) {
            if (j == n && !addl_kv) break;
            if (alts++) l3c_buf_append(&o, " | ", 3);
            l3c_buf_appendf(&o, "%s", j < n ? kvs[j] : addl_kv);
            for (size_t q = j + 1; q < n; q++)
                l3c_buf_appendf(&o, " ( \",\" space %s )?", kvs[q]);
            if (addl_kv) l3c_buf_appendf(&o, " ( \",\" space %s )*", addl_kv);
        }
        l3c_buf_append(&o, " )?", 3);
        if (!alts) o.len -= 5; /* no members possible: "{" space "}" */
    }
    l3c_buf_append(&o, " \"}\" space", 10);
    result = add_rule_buf(c, name, &o);
done:
    free(keys);
    free(kvs);
    free(is_req);
    free(addl_kv);
    return result;
}

static long get_count(conv *c, json_t *s, const char *kw, long dflt, const char *path) {
    json_t *v = json_object_get(s, kw);
    if (!v) return dflt;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        cfail(c, L3C_ERR_FORMAT, "%s/%s: must be a nonnegative integer", path, kw);
        return -2;
    }
    if (json_integer_value(v) > MAX_REPEAT_COUNT) {
        cfail(c, L3C_ERR_UNSUPPORTED, "%s/%s: %lld is above the supported %d", path, kw,
              (long long)json_integer_value(v), MAX_REPEAT_COUNT);
        return -2;
    }
    return (long)json_integer_value(v);
}

/* "x{m,n}" text for the repetition of item separated by sep (llama.cpp's _build_repetition). */
static void put_repetition(l3c_buf *o, const char *item, const char *sep, long mn, long mx) {
    if (mx == 0) return;
    if (mn == 0 && mx == 1) {
        l3c_buf_appendf(o, "( %s )?", item);
        return;
    }
    if (mn == 0) l3c_buf_append(o, "( ", 2);
    l3c_buf_appendf(o, "%s ( %s %s )", item, sep, item);
    long lo = mn > 0 ? mn - 1 : 0;
    if (mx < 0)
        l3c_buf_appendf(o, "{%ld,}", lo);
    else
        l3c_buf_appendf(o, "{%ld,%ld}", lo, mx - 1);
    if (mn == 0) l3c_buf_append(o, " )?", 3);
}

static const char *visit_array(conv *c, json_t *s, const char *name, const char *path) {
    json_t *items = json_object_get(s, "items");
    json_t *prefix = json_object_get(s, "prefixItems");
    long mn = get_count(c, s, "minItems", 0, path), mx = get_count(c, s, "maxItems", -1, path);
    if (mn == -2 || mx == -2) return NULL;
    if (mx >= 0 && mn > mx)
        return cfail(c, L3C_ERR_UNSUPPORTED, "%s: minItems %ld > maxItems %ld", path, mn, mx);
    if (!primitive(c, "space")) return NULL;
    l3c_buf o = {0};
    l3c_buf_append(&o, "\"[\" space ", 10);
    if (prefix) {
        if (!json_is_array(prefix))
            return free_buf(&o, cfail(c, L3C_ERR_FORMAT, "%s/prefixItems: not an array", path));
        size_t np = json_array_size(prefix);
        if (items && !json_is_false(items) && !json_is_object(items))
            return free_buf(&o,
                            cfail(c, L3C_ERR_FORMAT, "%s/items: must be a schema or false", path));
        int more = items && json_is_object(items);
        if ((long)np < mn && !more)
            return free_buf(
                &o, cfail(c, L3C_ERR_UNSUPPORTED,
                          "%s: minItems %ld exceeds the %zu prefixItems and items is not a schema",
                          path, mn, np));
        if (mx >= 0 && (long)np > mx)
            return free_buf(&o, cfail(c, L3C_ERR_UNSUPPORTED,
                                      "%s: maxItems %ld below the %zu prefixItems", path, mx, np));
        if (mn > 0 && (long)np > mn) mn = (long)np;
        /* all prefix items are written (a tuple), then the extra items */
        size_t i;
        json_t *it;
        json_array_foreach(prefix, i, it) {
            char sp[512], sn[256];
            snprintf(sp, sizeof sp, "%s/prefixItems/%zu", path, i);
            snprintf(sn, sizeof sn, "%s-%zu", name, i);
            const char *r = visit(c, it, sn, sp);
            if (!r) {
                l3c_buf_free(&o);
                return NULL;
            }
            l3c_buf_appendf(&o, "%s%s", i ? " \",\" space " : "", r);
        }
        if (more) {
            char sp[512], sn[256];
            snprintf(sp, sizeof sp, "%s/items", path);
            snprintf(sn, sizeof sn, "%s-item", name);
            const char *r = visit(c, items, sn, sp);
            if (!r) {
                l3c_buf_free(&o);
                return NULL;
            }
            long emin = mn > (long)np ? mn - (long)np : 0, emax = mx >= 0 ? mx - (long)np : -1;
            char *one = fmt(c, "\",\" space %s", r);
            if (!one) return free_buf(&o, NULL);
            if (emax != 0) {
                if (np == 0)
                    put_repetition(&o, r, "\",\" space", emin, emax);
                else if (emax < 0)
                    l3c_buf_appendf(&o, " ( %s ){%ld,}", one, emin);
                else
                    l3c_buf_appendf(&o, " ( %s ){%ld,%ld}", one, emin, emax);
            }
            free(one);
        }
    } else {
        const char *r;
        if (!items || json_is_true(items)) {
            r = primitive(c, "value");
        } else if (json_is_object(items)) {
            char sp[512], sn[256];
            snprintf(sp, sizeof sp, "%s/items", path);
            snprintf(sn, sizeof sn, "%s-item", name);
            r = visit(c, items, sn, sp);
        } else if (json_is_false(items)) {
            if (mn > 0)
                return free_buf(&o, cfail(c, L3C_ERR_UNSUPPORTED,
                                          "%s: items false with minItems %ld", path, mn));
            mx = 0;
            r = "";
        } else {
            return free_buf(&o, cfail(c, L3C_ERR_FORMAT, "%s/items: must be a schema", path));
        }
        if (!r) {
            l3c_buf_free(&o);
            return NULL;
        }
        put_repetition(&o, r, "\",\" space", mn, mx);
    }
    l3c_buf_append(&o, " \"]\" space", 10);
    return add_rule_buf(c, name, &o);
}

static const char *visit_string(conv *c, json_t *s, const char *name, const char *path) {
    json_t *f = json_object_get(s, "format");
    if (json_object_get(s, "pattern"))
        return cfail(c, L3C_ERR_UNSUPPORTED,
                     "%s: keyword 'pattern' (regular expressions) is not supported",
                     *path ? path : "(root)");
    if (f) {
        if (!json_is_string(f)) return cfail(c, L3C_ERR_FORMAT, "%s/format: not a string", path);
        const char *fs = json_string_value(f);
        if (json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
            return cfail(c, L3C_ERR_UNSUPPORTED, "%s: minLength / maxLength together with format",
                         path);
        if (!strcmp(fs, "date")) return primitive(c, "date-string");
        if (!strcmp(fs, "time")) return primitive(c, "time-string");
        if (!strcmp(fs, "date-time")) return primitive(c, "date-time-string");
        if (!strcmp(fs, "uuid")) return primitive(c, "uuid");
        return cfail(c, L3C_ERR_UNSUPPORTED,
                     "%s: format '%s' is not supported (date, time, date-time, uuid are)",
                     *path ? path : "(root)", fs);
    }
    long mn = get_count(c, s, "minLength", 0, path), mx = get_count(c, s, "maxLength", -1, path);
    if (mn == -2 || mx == -2) return NULL;
    if (mn == 0 && mx < 0) return primitive(c, "string");
    if (mx >= 0 && mn > mx)
        return cfail(c, L3C_ERR_UNSUPPORTED, "%s: minLength %ld > maxLength %ld", path, mn, mx);
    if (!primitive(c, "char") || !primitive(c, "space")) return NULL;
    char *body = mx < 0 ? fmt(c, "\"\\\"\" char{%ld,} \"\\\"\" space", mn)
                        : fmt(c, "\"\\\"\" char{%ld,%ld} \"\\\"\" space", mn, mx);
    return add_rule(c, name, body);
}

static int get_bound(conv *c, json_t *s, const char *kw, double *out, const char *path) {
    json_t *v = json_object_get(s, kw);
    if (!v) return 0;
    if (!json_is_number(v)) {
        cfail(c, L3C_ERR_FORMAT, "%s/%s: not a number", path, kw);
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

static const char *visit_number(conv *c, json_t *s, const char *name, const char *path,
                                int integer) {
    double mn = 0, mx = 0, emn = 0, emx = 0;
    int hmn = get_bound(c, s, "minimum", &mn, path), hmx = get_bound(c, s, "maximum", &mx, path);
    int hemn = get_bound(c, s, "exclusiveMinimum", &emn, path),
        hemx = get_bound(c, s, "exclusiveMaximum", &emx, path);
    if (hmn < 0 || hmx < 0 || hemn < 0 || hemx < 0) return NULL;
    if (!integer) {
        int nonneg = (hmn && mn == 0 && !hmx && !hemn && !hemx);
        if (nonneg) return primitive(c, "nonneg-number");
        if (hmn || hmx || hemn || hemx)
            return cfail(
                c, L3C_ERR_UNSUPPORTED,
                "%s: bounds on a 'number' are not supported (except minimum 0); use type integer",
                *path ? path : "(root)");
        return primitive(c, "number");
    }
    /* integer: combine into inclusive integer bounds */
    int has_min = 0, has_max = 0;
    long long lo = 0, hi = 0;
    if (hmn) has_min = 1, lo = (long long)ceil(mn);
    if (hemn) {
        long long v = (long long)floor(emn) + 1;
        if (!has_min || v > lo) lo = v;
        has_min = 1;
    }
    if (hmx) has_max = 1, hi = (long long)floor(mx);
    if (hemx) {
        long long v = (long long)ceil(emx) - 1;
        if (!has_max || v < hi) hi = v;
        has_max = 1;
    }
    return integer_rule(c, name, has_min, lo, has_max, hi, *path ? path : "(root)");
}

static const char *visit_type(conv *c, json_t *s, const char *type, const char *name,
                              const char *path) {
    if (!strcmp(type, "object")) {
        if (!json_object_get(s, "properties") && !json_object_get(s, "additionalProperties") &&
            !json_object_get(s, "required"))
            return primitive(c, "object");
        return visit_object(c, s, name, path);
    }
    if (!strcmp(type, "array")) return visit_array(c, s, name, path);
    if (!strcmp(type, "string")) return visit_string(c, s, name, path);
    if (!strcmp(type, "number")) return visit_number(c, s, name, path, 0);
    if (!strcmp(type, "integer")) return visit_number(c, s, name, path, 1);
    if (!strcmp(type, "boolean")) return primitive(c, "boolean");
    if (!strcmp(type, "null")) return primitive(c, "null");
    return cfail(c, L3C_ERR_FORMAT, "%s/type: unknown type '%s'", *path ? path : "(root)", type);
}

static const char *const OBJECT_KW[] = {"type", "properties", "required", "additionalProperties",
                                        NULL};
static const char *const ARRAY_KW[] = {"type",     "items",    "prefixItems",
                                       "minItems", "maxItems", NULL};
static const char *const STRING_KW[] = {"type",   "minLength", "maxLength",
                                        "format", "pattern",   NULL};
static const char *const NUMBER_KW[] = {
    "type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};

/* Keywords allowed for a set of types: the union of their lists. */
static int check_type_keys(conv *c, json_t *s, const char **types, size_t nt, const char *path) {
    const char *allowed[32];
    size_t na = 0;
    for (size_t t = 0; t < nt; t++) {
        const char *const *l = !strcmp(types[t], "object")   ? OBJECT_KW
                               : !strcmp(types[t], "array")  ? ARRAY_KW
                               : !strcmp(types[t], "string") ? STRING_KW
                               : !strcmp(types[t], "number") || !strcmp(types[t], "integer")
                                   ? NUMBER_KW
                                   : NULL;
        for (int i = 0; l && l[i] && na < 30; i++)
            allowed[na++] = l[i];
    }
    allowed[na++] = "type";
    allowed[na] = NULL;
    char what[128];
    snprintf(what, sizeof what, "type %s%s", types[0],
             nt > 1 ? " (or the other listed types)" : "");
    return check_keys(c, s, allowed, path, what);
}

/* The set of JSON types a schema can produce (bit per type), for oneOf exclusivity; 0: unknown. */
static unsigned type_bits(conv *c, json_t *s) {
    static const char *names[] = {"object",  "array",   "string", "number",
                                  "integer", "boolean", "null"};
    if (json_is_object(s) && json_object_get(s, "$ref")) {
        json_t *r = json_object_get(s, "$ref");
        if (!json_is_string(r)) return 0;
        json_t *t = resolve_ref(c, json_string_value(r), "");
        if (c->st) {
            c->st = L3C_OK;
            return 0;
        }
        return t && t != s ? type_bits(c, t) : 0;
    }
    json_t *ty = json_is_object(s) ? json_object_get(s, "type") : NULL;
    unsigned bits = 0;
    for (size_t k = 0; k < 7; k++) {
        if ((json_is_string(ty) && !strcmp(json_string_value(ty), names[k]))) bits |= 1u << k;
        size_t i;
        json_t *v;
        json_array_foreach(ty, i, v) if (json_is_string(v) &&
                                         !strcmp(json_string_value(v), names[k])) bits |= 1u << k;
    }
    if (bits & (1u << 3)) bits |= 1u << 4; /* a number may be an integer */
    if (bits & (1u << 4)) bits |= 1u << 3;
    return bits;
}

/* A const discriminator: property name present, required and const in every branch, values
 * distinct. */
static int const_discriminated(json_t *branches) {
    json_t *b0 = json_array_get(branches, 0);
    json_t *p0 = json_object_get(b0, "properties");
    const char *key;
    json_t *v;
    json_object_foreach(p0, key, v) {
        int ok = 1;
        size_t i;
        json_t *b;
        json_array_foreach(branches, i, b) {
            json_t *pv = json_object_get(json_object_get(b, "properties"), key);
            json_t *cv = pv ? json_object_get(pv, "const") : NULL;
            int req = 0;
            size_t j;
            json_t *r;
            json_array_foreach(json_object_get(b, "required"), j,
                               r) if (json_is_string(r) && !strcmp(json_string_value(r), key)) req =
                1;
            if (!cv || !req) ok = 0;
            for (size_t q = 0; ok && q < i; q++) {
                json_t *qv = json_object_get(
                    json_object_get(json_array_get(branches, q), "properties"), key);
                if (json_equal(json_object_get(qv, "const"), cv)) ok = 0;
            }
            if (!ok) break;
        }
        if (ok) return 1;
    }
    return 0;
}

static const char *visit_alternatives(conv *c, json_t *s, const char *kw, const char *name,
                                      const char *path) {
    json_t *alts = json_object_get(s, kw);
    if (!json_is_array(alts) || json_array_size(alts) == 0)
        return cfail(c, L3C_ERR_FORMAT, "%s/%s: must be a non-empty array", path, kw);
    if (check_keys(c, s, (const char *const[]){kw, NULL}, path, kw) < 0) return NULL;
    if (!strcmp(kw, "oneOf") && json_array_size(alts) > 1) {
        unsigned seen = 0;
        int disjoint = 1;
        size_t i;
        json_t *a;
        json_array_foreach(alts, i, a) {
            unsigned b = type_bits(c, a);
            if (!b || (b & seen)) disjoint = 0;
            seen |= b;
        }
        if (!disjoint && !const_discriminated(alts))
            return cfail(c, L3C_ERR_UNSUPPORTED,
                         "%s/oneOf: branches may overlap (exactly-one cannot be enforced); give "
                         "them distinct types or "
                         "a required const property, or use anyOf",
                         *path ? path : "(root)");
    }
    l3c_buf o = {0};
    size_t i;
    json_t *a;
    json_array_foreach(alts, i, a) {
        char sp[512], sn[256];
        snprintf(sp, sizeof sp, "%s/%s/%zu", path, kw, i);
        snprintf(sn, sizeof sn, "%s-%zu", name, i);
        const char *r = visit(c, a, sn, sp);
        if (!r) {
            l3c_buf_free(&o);
            return NULL;
        }
        l3c_buf_appendf(&o, "%s%s", i ? " | " : "", r);
    }
    return add_rule_buf(c, name, &o);
}

/* allOf: one schema, or objects whose properties / required merge. */
static const char *visit_all_of(conv *c, json_t *s, const char *name, const char *path) {
    json_t *all = json_object_get(s, "allOf");
    if (!json_is_array(all) || json_array_size(all) == 0)
        return cfail(c, L3C_ERR_FORMAT, "%s/allOf: must be a non-empty array", path);
    if (check_keys(c, s, (const char *const[]){"allOf", NULL}, path, "allOf (siblings of allOf)") <
        0)
        return NULL;
    if (json_array_size(all) == 1) {
        char sp[512];
        snprintf(sp, sizeof sp, "%s/allOf/0", path);
        return visit(c, json_array_get(all, 0), name, sp);
    }
    json_t *merged = json_pack("{s:s, s:o, s:o}", "type", "object", "properties", json_object(),
                               "required", json_array());
    if (!merged) return cfail(c, L3C_ERR_NOMEM, "out of memory");
    json_t *mp = json_object_get(merged, "properties"), *mr = json_object_get(merged, "required");
    size_t i;
    json_t *a;
    const char *res = NULL;
    json_array_foreach(all, i, a) {
        json_t *b = a;
        if (json_is_object(a) && json_object_get(a, "$ref") &&
            json_is_string(json_object_get(a, "$ref"))) {
            b = resolve_ref(c, json_string_value(json_object_get(a, "$ref")), path);
            if (!b) goto done;
        }
        json_t *t = json_object_get(b, "type");
        const char *k;
        json_t *v;
        int ok = json_is_object(b) &&
                 (!t || (json_is_string(t) && !strcmp(json_string_value(t), "object")));
        json_object_foreach(b, k, v) if (!is_annotation(k) && strcmp(k, "type") &&
                                         strcmp(k, "properties") && strcmp(k, "required")) ok = 0;
        if (!ok) {
            cfail(c, L3C_ERR_UNSUPPORTED,
                  "%s/allOf/%zu: only objects with type/properties/required (or a single schema) "
                  "can be combined",
                  *path ? path : "(root)", i);
            goto done;
        }
        json_object_foreach(json_object_get(b, "properties"), k, v) {
            if (json_object_get(mp, k)) {
                cfail(c, L3C_ERR_UNSUPPORTED, "%s/allOf/%zu: property '%s' appears in two branches",
                      path, i, k);
                goto done;
            }
            json_object_set(mp, k, v);
        }
        size_t j;
        json_array_foreach(json_object_get(b, "required"), j, v) json_array_append(mr, v);
    }
    res = visit_object(c, merged, name, path);
done:
    json_decref(merged);
    return res;
}

static const char *visit(conv *c, json_t *s, const char *name, const char *path) {
    if (c->st) return NULL;
    if (json_is_true(s) || (json_is_object(s) && json_object_size(s) == 0))
        return primitive(c, "value");
    if (json_is_false(s))
        return cfail(c, L3C_ERR_UNSUPPORTED, "%s: schema false allows nothing",
                     *path ? path : "(root)");
    if (!json_is_object(s))
        return cfail(c, L3C_ERR_FORMAT, "%s: a schema must be an object or a boolean",
                     *path ? path : "(root)");
    if (++c->depth > MAX_SCHEMA_DEPTH) {
        c->depth--;
        return cfail(c, L3C_ERR_UNSUPPORTED, "%s: schema nested deeper than %d", path,
                     MAX_SCHEMA_DEPTH);
    }
    const char *r = NULL;
    json_t *ty = json_object_get(s, "type");
    if (json_object_get(s, "$ref")) {
        r = visit_ref(c, s, path);
    } else if (json_object_get(s, "anyOf")) {
        r = visit_alternatives(c, s, "anyOf", name, path);
    } else if (json_object_get(s, "oneOf")) {
        r = visit_alternatives(c, s, "oneOf", name, path);
    } else if (json_object_get(s, "allOf")) {
        r = visit_all_of(c, s, name, path);
    } else if (json_object_get(s, "const") || json_object_get(s, "enum")) {
        json_t *cv = json_object_get(s, "const"), *ev = json_object_get(s, "enum");
        if (check_keys(c, s, (const char *const[]){"const", "enum", "type", NULL}, path,
                       "const / enum") < 0)
            goto out;
        if (ev && (!json_is_array(ev) || json_array_size(ev) == 0)) {
            cfail(c, L3C_ERR_FORMAT, "%s/enum: must be a non-empty array", path);
            goto out;
        }
        l3c_buf o = {0};
        l3c_buf_append(&o, "(", 1);
        int n = 0;
        size_t i;
        json_t *v;
        json_array_foreach(ev ? ev : NULL, i, v) {
            if (cv && !json_equal(cv, v)) continue;
            char *lit = json_literal(c, v);
            if (!lit) break;
            l3c_buf_appendf(&o, "%s%s", n++ ? " | " : "", lit);
            free(lit);
        }
        if (!ev && cv) {
            char *lit = json_literal(c, cv);
            if (lit) l3c_buf_appendf(&o, "%s", lit), n++;
            free(lit);
        }
        if (c->st || !n || !primitive(c, "space")) {
            l3c_buf_free(&o);
            if (!c->st)
                cfail(c, L3C_ERR_UNSUPPORTED, "%s: const is not among the enum values", path);
            goto out;
        }
        /* a type beside enum/const is ignored only when every value has it */
        l3c_buf_append(&o, ") space", 7);
        r = add_rule_buf(c, name, &o);
    } else {
        const char *types[8];
        size_t nt = 0;
        if (json_is_string(ty)) {
            types[nt++] = json_string_value(ty);
        } else if (json_is_array(ty)) {
            size_t i;
            json_t *v;
            json_array_foreach(ty, i, v) {
                if (!json_is_string(v) || nt >= 7) {
                    cfail(c, L3C_ERR_FORMAT, "%s/type: must be a type name or a list of up to 7",
                          path);
                    goto out;
                }
                types[nt++] = json_string_value(v);
            }
        } else if (ty) {
            cfail(c, L3C_ERR_FORMAT, "%s/type: must be a string or an array", path);
            goto out;
        } else if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties") ||
                   json_object_get(s, "required")) {
            types[nt++] = "object";
        } else if (json_object_get(s, "items") || json_object_get(s, "prefixItems") ||
                   json_object_get(s, "minItems") || json_object_get(s, "maxItems")) {
            types[nt++] = "array";
        } else if (json_object_get(s, "minLength") || json_object_get(s, "maxLength") ||
                   json_object_get(s, "format") || json_object_get(s, "pattern")) {
            types[nt++] = "string";
        } else if (json_object_get(s, "minimum") || json_object_get(s, "maximum") ||
                   json_object_get(s, "exclusiveMinimum") ||
                   json_object_get(s, "exclusiveMaximum")) {
            types[nt++] = "number";
        }
        if (nt == 0) {
            if (check_keys(c, s, (const char *const[]){NULL}, path, NULL) < 0) goto out;
            r = primitive(c, "value");
            goto out;
        }
        if (check_type_keys(c, s, types, nt, path) < 0) goto out;
        if (nt == 1) {
            r = visit_type(c, s, types[0], name, path);
        } else {
            l3c_buf o = {0};
            for (size_t t = 0; t < nt; t++) {
                char sn[256];
                snprintf(sn, sizeof sn, "%s-%s", name, types[t]);
                const char *x = visit_type(c, s, types[t], sn, path);
                if (!x) {
                    l3c_buf_free(&o);
                    goto out;
                }
                l3c_buf_appendf(&o, "%s%s", t ? " | " : "", x);
            }
            r = add_rule_buf(c, name, &o);
        }
    }
out:
    c->depth--;
    return c->st ? NULL : r;
}

/* ---------------------------------------------------------------- base case check */

/* Every rule must be able to finish (derive a finite string): a recursive $ref with no way out
 * would make a grammar that can never complete. */
static l3c_status check_productive(const gram_rules *g) {
    uint8_t *prod = l3c_calloc(g->n_rules ? g->n_rules : 1, 1);
    if (!prod) return l3c_fail(L3C_ERR_NOMEM, "json schema: out of memory");
    for (int changed = 1; changed;) {
        changed = 0;
        for (uint32_t r = 0; r < g->n_rules; r++) {
            if (prod[r]) continue;
            int all = 1;
            for (uint32_t k = g->rule_off[r];; k++) {
                gel e = g->el[k];
                if (e.type == G_END || e.type == G_ALT) {
                    if (all) {
                        prod[r] = 1;
                        changed = 1;
                        break;
                    }
                    if (e.type == G_END) break;
                    all = 1;
                } else if (e.type == G_REF && !prod[e.val]) {
                    all = 0;
                }
            }
        }
    }
    l3c_status st = L3C_OK;
    for (uint32_t r = 0; r < g->n_rules && st == L3C_OK; r++)
        if (!prod[r])
            st = l3c_fail(L3C_ERR_UNSUPPORTED,
                          "json schema: recursive schema without a base case: rule '%s' can never "
                          "end (every branch "
                          "refers to itself again)",
                          g->names[r]);
    free(prod);
    return st;
}

l3c_status l3c_json_schema_to_gbnf(const char *schema_json, size_t len, char **out_gbnf) {
    if (!out_gbnf) return l3c_fail(L3C_ERR_INVALID_ARG, "json schema: out is NULL");
    *out_gbnf = NULL;
    if (!schema_json) return l3c_fail(L3C_ERR_INVALID_ARG, "json schema: NULL text");
    json_error_t jerr;
    json_t *doc = json_loadb(schema_json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return l3c_fail(L3C_ERR_FORMAT, "json schema: not valid JSON: line %d column %d: %s",
                        jerr.line, jerr.column, jerr.text);
    conv c = {.doc = doc, .st = L3C_OK};
    const char *root_rule = reserve_rule(&c, "root");
    const char *r = root_rule ? visit(&c, doc, "root-value", "") : NULL;
    l3c_status st = c.st;
    l3c_buf o = {0};
    if (r && st == L3C_OK) {
        /* root ::= the top rule (an alias keeps "root" the start whatever the top rule is), without
         * the whitespace every value allows after itself: after the top value comes the end */
        const char *top = NULL;
        for (size_t k = 0; k < c.n_rules; k++)
            if (c.rules[k].name == r) top = c.rules[k].body;
        size_t tl = top ? strlen(top) : 0;
        int strip = tl > 6 && !strcmp(top + tl - 6, " space");
        for (size_t k = 0, depth = 0, in_lit = 0, in_cls = 0; strip && k < tl; k++) {
            char ch = top[k];
            if ((in_lit || in_cls) && ch == '\\')
                k++;
            else if (in_lit)
                in_lit = ch != '"';
            else if (in_cls)
                in_cls = ch != ']';
            else if (ch == '"')
                in_lit = 1;
            else if (ch == '[')
                in_cls = 1;
            else if (ch == '(')
                depth++;
            else if (ch == ')')
                depth--;
            else if (ch == '|' && depth == 0)
                strip = 0; /* top-level alternatives: keep the alias */
        }
        set_body(&c, root_rule, strip ? fmt(&c, "%.*s", (int)(tl - 6), top) : fmt(&c, "%s", r));
        for (size_t k = 0; k < c.n_rules; k++)
            l3c_buf_appendf(&o, "%s ::= %s\n", c.rules[k].name, c.rules[k].body);
        if (l3c_buf_append(&o, "", 1) != L3C_OK)
            st = l3c_fail(L3C_ERR_NOMEM, "json schema: out of memory");
        st = c.st ? c.st : st;
    } else if (st == L3C_OK) {
        st = l3c_fail(L3C_ERR_FORMAT, "json schema: conversion failed");
    }
    if (st == L3C_OK) {
        gram_rules *g = NULL;
        st = l3c_gbnf_parse(o.data, o.len - 1, "root", &g);
        if (st == L3C_OK) st = check_productive(g);
        l3c_gram_rules_free(g);
    }
    for (size_t k = 0; k < c.n_rules; k++) {
        free(c.rules[k].name);
        free(c.rules[k].body);
    }
    free(c.rules);
    for (size_t k = 0; k < c.n_refs; k++)
        free(c.ref_ptr[k]);
    free(c.ref_ptr);
    free(c.ref_rule);
    json_decref(doc);
    if (st != L3C_OK) {
        l3c_buf_free(&o);
        return st;
    }
    *out_gbnf = o.data;
    return L3C_OK;
}
