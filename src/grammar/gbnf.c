/*
 * gbnf.c -- GBNF parser: text -> gram_rules, with llama.cpp's syntax and semantics.
 *
 *   rule      ::= name ws? "::=" alternates (newline | end)
 *   alternates::= sequence ("|" sequence)*      (a newline may follow "|" and "::=")
 *   sequence  ::= (item repetition*)*           (newlines only inside parentheses)
 *   item      ::= "literal" | [class] | [^class] | name | "(" alternates ")" | "."
 *   repetition::= "*" | "+" | "?" | "{" m "}" | "{" m ",}" | "{" m "," n "}"
 * Escapes in literals and classes: \xHH \uHHHH \UHHHHHHHH \t \r \n \\ \" \[ \] \- ; other
 * characters are UTF-8. Comments run from '#' to the end of the line. Repetitions expand as
 * llama.cpp expands them (m copies, then n-m nested optional rules, or a right-recursive rule).
 *
 * Checks after parsing: every referenced rule is defined, the start rule exists, and no rule
 * is left-recursive (directly or through rules that can match the empty string): the matcher
 * expands rules eagerly and would not terminate otherwise. Errors name line:column and rule.
 * Limits (bad input gets an error, not unbounded memory): nesting depth 200, repetition counts
 * 10000, 4M elements.
 */
#include "grammar/grammar.h"

#include <string.h>

#define MAX_DEPTH    200
#define MAX_REPEAT   10000
#define MAX_ELEMENTS (4u << 20)

typedef struct gvec {
    gel *v;
    uint32_t n, cap;
} gvec;

typedef struct parser {
    const char *s;
    size_t n, i;
    char **names;
    gvec *rules; /* [n_sym] element vectors; defined[k] says whether rule k was given */
    uint8_t *defined;
    size_t *ref_at; /* [n_sym] offset of the first reference (for "undefined rule" messages) */
    uint32_t n_sym, cap_sym;
    uint32_t total; /* elements so far, bounded by MAX_ELEMENTS */
    int depth;
    l3c_status st;
    const char *cur_rule;
} parser;

static void line_col(const parser *p, size_t at, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t k = 0; k < at && k < p->n; k++) {
        if (p->s[k] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

__attribute__((format(printf, 3, 4))) static l3c_status perr(parser *p, size_t at, const char *fmt,
                                                             ...) {
    if (p->st != L3C_OK) return p->st;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    line_col(p, at, &line, &col);
    p->st = l3c_fail(L3C_ERR_FORMAT, "gbnf: line %d column %d%s%s%s: %s", line, col,
                     p->cur_rule ? " (rule '" : "", p->cur_rule ? p->cur_rule : "",
                     p->cur_rule ? "')" : "", msg);
    return p->st;
}

static l3c_status nomem(parser *p) {
    if (p->st == L3C_OK) p->st = l3c_fail(L3C_ERR_NOMEM, "gbnf: out of memory");
    return p->st;
}

static int push(parser *p, gvec *v, uint32_t type, uint32_t val) {
    if (p->st != L3C_OK) return -1;
    if (++p->total > MAX_ELEMENTS) {
        perr(p, p->i, "grammar too large (more than %u elements after expanding repetitions)",
             MAX_ELEMENTS);
        return -1;
    }
    if (v->n == v->cap) {
        uint32_t nc = v->cap ? v->cap * 2 : 16;
        gel *nv = l3c_realloc(v->v, (size_t)nc * sizeof *nv);
        if (!nv) {
            nomem(p);
            return -1;
        }
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = (gel){type, val};
    return 0;
}

/* Symbol id of name (len bytes), created (undefined) if new. -1 on error. */
static int64_t symbol(parser *p, const char *name, size_t len, size_t at) {
    for (uint32_t k = 0; k < p->n_sym; k++)
        if (strlen(p->names[k]) == len && memcmp(p->names[k], name, len) == 0) return k;
    if (p->n_sym == p->cap_sym) {
        uint32_t nc = p->cap_sym ? p->cap_sym * 2 : 32;
        char **nn = l3c_realloc(p->names, nc * sizeof *nn);
        if (nn) p->names = nn;
        gvec *nr = l3c_realloc(p->rules, nc * sizeof *nr);
        if (nr) p->rules = nr;
        uint8_t *nd = l3c_realloc(p->defined, nc);
        if (nd) p->defined = nd;
        size_t *na = l3c_realloc(p->ref_at, nc * sizeof *na);
        if (na) p->ref_at = na;
        if (!nn || !nr || !nd || !na) return nomem(p), -1;
        p->cap_sym = nc;
    }
    char *nm = l3c_strndup(name, len);
    if (!nm) return nomem(p), -1;
    uint32_t k = p->n_sym++;
    p->names[k] = nm;
    p->rules[k] = (gvec){0};
    p->defined[k] = 0;
    p->ref_at[k] = at;
    return k;
}

/* A new rule named base_N, N chosen so that the name is not taken: the grammar's own names may
 * look the same ("object_9"), and handing out an existing symbol would overwrite its body. */
static int64_t gen_symbol(parser *p, const char *base) {
    char buf[160];
    for (uint32_t n = p->n_sym;; n++) {
        snprintf(buf, sizeof buf, "%.120s_%u", base, n);
        uint32_t k = 0;
        while (k < p->n_sym && strcmp(p->names[k], buf) != 0)
            k++;
        if (k == p->n_sym) break;
    }
    int64_t k = symbol(p, buf, strlen(buf), p->i);
    if (k >= 0) p->defined[k] = 1;
    return k;
}

static int is_word(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int peek(const parser *p, size_t k) {
    return p->i + k < p->n ? (unsigned char)p->s[p->i + k] : -1;
}

static void skip_space(parser *p, int newline_ok) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == '#') {
            while (p->i < p->n && p->s[p->i] != '\n' && p->s[p->i] != '\r')
                p->i++;
        } else if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
            p->i++;
        } else {
            break;
        }
    }
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes one UTF-8 code point at p->i (invalid bytes count as themselves). */
static uint32_t utf8_next(parser *p) {
    const unsigned char *s = (const unsigned char *)p->s;
    unsigned c = s[p->i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (len > 1 && p->i + (size_t)len <= p->n) {
        uint32_t cp = c & (0x7Fu >> len);
        int ok = 1;
        for (int k = 1; k < len; k++) {
            if ((s[p->i + k] & 0xC0) != 0x80) ok = 0;
            cp = (cp << 6) | (s[p->i + k] & 0x3F);
        }
        if (ok) {
            p->i += (size_t)len;
            return cp;
        }
    }
    p->i++;
    return c;
}

/* One character of a literal or class, with escapes. Returns -1 on error. */
static int64_t parse_char(parser *p) {
    if (p->i >= p->n) return perr(p, p->i, "unexpected end of input"), -1;
    if (p->s[p->i] != '\\') return utf8_next(p);
    size_t at = p->i;
    int e = peek(p, 1);
    p->i += 2;
    int nhex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (nhex) {
        uint32_t v = 0;
        for (int k = 0; k < nhex; k++) {
            int h = peek(p, 0) < 0 ? -1 : hexval(peek(p, 0));
            if (h < 0) return perr(p, at, "expecting %d hex digits after \\%c", nhex, e), -1;
            v = v * 16 + (uint32_t)h;
            p->i++;
        }
        if (v > 0x10FFFF) return perr(p, at, "code point U+%X is beyond U+10FFFF", v), -1;
        return v;
    }
    switch (e) {
    case 't':
        return '\t';
    case 'r':
        return '\r';
    case 'n':
        return '\n';
    case '\\':
    case '"':
    case '[':
    case ']':
    case '-':
    case '^':
        return e;
    case -1:
        return perr(p, at, "unexpected end of input after '\\'"), -1;
    default:
        return perr(p, at, "unknown escape '\\%c'", e), -1;
    }
}

static void parse_alternates(parser *p, gvec *out, int nested);

/* x{min,max} (max < 0: unbounded) on the elements out[start..] (llama.cpp's expansion). */
static void repeat(parser *p, gvec *out, uint32_t start, long min, long max,
                   const char *rule_name) {
    uint32_t plen = out->n - start;
    gel *prev = l3c_malloc((size_t)(plen ? plen : 1) * sizeof *prev);
    if (!prev) {
        nomem(p);
        return;
    }
    memcpy(prev, out->v + start, plen * sizeof *prev);
    if (min == 0) {
        out->n = start;
    } else {
        for (long k = 1; k < min && p->st == L3C_OK; k++)
            for (uint32_t j = 0; j < plen; j++)
                push(p, out, prev[j].type, prev[j].val);
    }
    int64_t last = -1;
    long n_opt = max < 0 ? 1 : max - min;
    for (long k = 0; k < n_opt && p->st == L3C_OK; k++) {
        int64_t id = gen_symbol(p, rule_name);
        if (id < 0) break;
        gvec *r = &p->rules[id];
        for (uint32_t j = 0; j < plen; j++)
            push(p, r, prev[j].type, prev[j].val);
        if (k > 0 || max < 0) push(p, r, G_REF, (uint32_t)(max < 0 ? id : last));
        push(p, r, G_ALT, 0);
        push(p, r, G_END, 0);
        last = id;
    }
    if (n_opt > 0 && last >= 0) push(p, out, G_REF, (uint32_t)last);
    free(prev);
}

static long parse_int(parser *p) {
    size_t at = p->i;
    long v = 0;
    if (peek(p, 0) < '0' || peek(p, 0) > '9') return perr(p, at, "expecting a number in {}"), -1;
    while (peek(p, 0) >= '0' && peek(p, 0) <= '9') {
        v = v * 10 + (peek(p, 0) - '0');
        if (v > MAX_REPEAT) return perr(p, at, "repetition count above %d", MAX_REPEAT), -1;
        p->i++;
    }
    return v;
}

static void parse_sequence(parser *p, gvec *out, const char *rule_name, int nested) {
    uint32_t last_start = out->n;
    int have_last = 0;
    while (p->i < p->n && p->st == L3C_OK) {
        int c = peek(p, 0);
        size_t at = p->i;
        if (c == '"') {
            p->i++;
            last_start = out->n;
            have_last = 1;
            while (p->st == L3C_OK) {
                if (p->i >= p->n) {
                    perr(p, at, "unterminated string literal");
                    break;
                }
                if (p->s[p->i] == '"') break;
                int64_t cp = parse_char(p);
                if (cp < 0) break;
                push(p, out, G_CHAR, (uint32_t)cp);
            }
            p->i++;
            skip_space(p, nested);
        } else if (c == '[') {
            p->i++;
            uint32_t type = G_CHAR;
            if (peek(p, 0) == '^') {
                p->i++;
                type = G_CHAR_NOT;
            }
            last_start = out->n;
            have_last = 1;
            uint32_t first = out->n;
            while (p->st == L3C_OK) {
                if (p->i >= p->n) {
                    perr(p, at, "unterminated character class");
                    break;
                }
                if (p->s[p->i] == ']') break;
                int64_t lo = parse_char(p);
                if (lo < 0) break;
                push(p, out, out->n > first ? G_CHAR_ALT : type, (uint32_t)lo);
                if (peek(p, 0) == '-' && peek(p, 1) != ']' && peek(p, 1) >= 0) {
                    p->i++;
                    size_t at2 = p->i;
                    int64_t hi = parse_char(p);
                    if (hi < 0) break;
                    if (hi < lo) {
                        perr(p, at2, "range end U+%X before its start U+%X", (unsigned)hi,
                             (unsigned)lo);
                        break;
                    }
                    push(p, out, G_RNG_UPPER, (uint32_t)hi);
                }
            }
            if (p->st == L3C_OK && out->n == first) perr(p, at, "empty character class");
            p->i++;
            skip_space(p, nested);
        } else if (is_word(c)) {
            size_t s0 = p->i;
            while (p->i < p->n && is_word((unsigned char)p->s[p->i]))
                p->i++;
            int64_t id = symbol(p, p->s + s0, p->i - s0, s0);
            if (id < 0) return;
            last_start = out->n;
            have_last = 1;
            push(p, out, G_REF, (uint32_t)id);
            skip_space(p, nested);
        } else if (c == '(') {
            if (++p->depth > MAX_DEPTH) {
                perr(p, at, "parentheses nested deeper than %d", MAX_DEPTH);
                return;
            }
            p->i++;
            skip_space(p, 1);
            int64_t id = gen_symbol(p, rule_name);
            if (id < 0) return;
            gvec sub = {0};
            parse_alternates(p, &sub, 1);
            p->rules[id] = sub; /* p->rules may have moved while parsing */
            p->depth--;
            if (p->st != L3C_OK) return;
            if (peek(p, 0) != ')') {
                perr(p, p->i, "expecting ')' to close the group opened at offset %zu", at);
                return;
            }
            p->i++;
            last_start = out->n;
            have_last = 1;
            push(p, out, G_REF, (uint32_t)id);
            skip_space(p, nested);
        } else if (c == '.') {
            p->i++;
            last_start = out->n;
            have_last = 1;
            push(p, out, G_CHAR_ANY, 0);
            skip_space(p, nested);
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (!have_last) {
                perr(p, at, "'%c' has no item before it to repeat", c);
                return;
            }
            long mn = 0, mx = -1;
            p->i++;
            if (c == '+') mn = 1;
            if (c == '?') mx = 1;
            if (c == '{') {
                skip_space(p, nested);
                mn = parse_int(p);
                if (mn < 0) return;
                skip_space(p, nested);
                if (peek(p, 0) == ',') {
                    p->i++;
                    skip_space(p, nested);
                    if (peek(p, 0) != '}') {
                        mx = parse_int(p);
                        if (mx < 0) return;
                        if (mx < mn) {
                            perr(p, at, "repetition {%ld,%ld}: max below min", mn, mx);
                            return;
                        }
                    }
                } else {
                    mx = mn;
                }
                skip_space(p, nested);
                if (peek(p, 0) != '}') {
                    perr(p, p->i, "expecting '}' to close the repetition");
                    return;
                }
                p->i++;
            }
            repeat(p, out, last_start, mn, mx, rule_name);
            have_last = 0; /* "x**" is an error, as in llama.cpp */
            skip_space(p, nested);
        } else if (c == '<') {
            p->st =
                l3c_fail(L3C_ERR_UNSUPPORTED, "gbnf: token references (<...>) are not supported");
            return;
        } else {
            break;
        }
    }
}

static void parse_alternates(parser *p, gvec *out, int nested) {
    const char *name = p->cur_rule ? p->cur_rule : "group";
    char nm[128];
    snprintf(nm, sizeof nm, "%s", name);
    parse_sequence(p, out, nm, nested);
    while (p->st == L3C_OK && peek(p, 0) == '|') {
        push(p, out, G_ALT, 0);
        p->i++;
        skip_space(p, 1);
        parse_sequence(p, out, nm, nested);
    }
    push(p, out, G_END, 0);
}

static void parse_rule(parser *p) {
    size_t at = p->i;
    while (p->i < p->n && is_word((unsigned char)p->s[p->i]))
        p->i++;
    if (p->i == at) {
        perr(p, at, "expecting a rule name, got '%c'", p->s[at]);
        return;
    }
    int64_t id = symbol(p, p->s + at, p->i - at, at);
    if (id < 0) return;
    if (p->defined[id]) {
        perr(p, at, "rule '%s' is defined twice", p->names[id]);
        return;
    }
    p->defined[id] = 1;
    p->cur_rule = p->names[id];
    skip_space(p, 0);
    if (p->i + 3 > p->n || memcmp(p->s + p->i, "::=", 3) != 0) {
        perr(p, p->i, "expecting '::=' after the rule name");
        return;
    }
    p->i += 3;
    skip_space(p, 1);
    gvec body = {0};
    parse_alternates(p, &body, 0);
    p->rules[id] = body;
    if (p->st != L3C_OK) return;
    if (peek(p, 0) == '\r') {
        p->i += peek(p, 1) == '\n' ? 2 : 1;
    } else if (peek(p, 0) == '\n') {
        p->i++;
    } else if (p->i < p->n) {
        perr(p, p->i, "unexpected '%c' (expecting the end of the rule)", p->s[p->i]);
        return;
    }
    p->cur_rule = NULL;
    skip_space(p, 1);
}

/* ---------------------------------------------------------------- checks */

static int elem_is_end(uint32_t t) {
    return t == G_END || t == G_ALT;
}

/* Left recursion: edge r -> s when s can be the first thing r matches. */
static l3c_status check_left_recursion(parser *p, gram_rules *g) {
    uint32_t n = g->n_rules;
    l3c_status st = L3C_OK;
    uint8_t *nullable = l3c_calloc(n ? n : 1, 1);
    uint8_t *color = l3c_calloc(n ? n : 1, 1);
    uint32_t *stk = l3c_malloc((size_t)(n ? n : 1) * 2 * sizeof *stk);
    if (!nullable || !color || !stk) {
        st = l3c_fail(L3C_ERR_NOMEM, "gbnf: out of memory");
        goto done;
    }
    for (int changed = 1; changed;) {
        changed = 0;
        for (uint32_t r = 0; r < n; r++) {
            if (nullable[r]) continue;
            uint32_t k = g->rule_off[r];
            int all = 1;
            for (;; k++) {
                gel e = g->el[k];
                if (elem_is_end(e.type)) {
                    if (all) {
                        nullable[r] = 1;
                        changed = 1;
                        break;
                    }
                    if (e.type == G_END) break;
                    all = 1;
                } else if (e.type != G_REF || !nullable[e.val]) {
                    all = 0;
                }
            }
        }
    }
    /* iterative DFS over left edges; color 1 = on the path, 2 = done */
    for (uint32_t r0 = 0; r0 < n && st == L3C_OK; r0++) {
        if (color[r0]) continue;
        uint32_t sp = 0;
        stk[sp++] = r0;
        stk[sp++] = g->rule_off[r0];
        color[r0] = 1;
        while (sp && st == L3C_OK) {
            uint32_t r = stk[sp - 2], k = stk[sp - 1];
            /* next left-reachable ref of r from element k */
            int found = 0;
            int lead = 1; /* still in the nullable prefix of the current alternative */
            /* recompute "lead" for k: scan from the alternative start */
            uint32_t a = k;
            while (a > g->rule_off[r] && !elem_is_end(g->el[a - 1].type))
                a--;
            for (uint32_t j = a; j < k; j++)
                if (g->el[j].type != G_REF || !nullable[g->el[j].val]) lead = 0;
            for (; g->el[k].type != G_END; k++) {
                gel e = g->el[k];
                if (e.type == G_ALT) {
                    lead = 1;
                    continue;
                }
                if (lead && e.type == G_REF) {
                    stk[sp - 1] = k + 1;
                    uint32_t s = e.val;
                    if (color[s] == 1) {
                        st = l3c_fail(
                            L3C_ERR_FORMAT,
                            "gbnf: rule '%s' is left-recursive (it can start with itself%s%s%s); "
                            "rewrite it right-recursively",
                            g->names[s], r != s ? " through '" : "", r != s ? g->names[r] : "",
                            r != s ? "'" : "");
                        break;
                    }
                    if (!color[s]) {
                        color[s] = 1;
                        stk[sp++] = s;
                        stk[sp++] = g->rule_off[s];
                        found = 1;
                        break;
                    }
                }
                if (e.type != G_REF || !nullable[e.val]) lead = 0;
            }
            if (st != L3C_OK) break;
            if (!found) {
                color[r] = 2;
                sp -= 2;
            }
        }
    }
done:
    free(nullable);
    free(color);
    free(stk);
    return st;
}

void l3c_gram_rules_free(gram_rules *r) {
    if (!r) return;
    if (r->names)
        for (uint32_t k = 0; k < r->n_rules; k++)
            free(r->names[k]);
    free(r->names);
    free(r->el);
    free(r->rule_off);
    free(r);
}

l3c_status l3c_gbnf_parse(const char *src, size_t len, const char *root, gram_rules **out) {
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "gbnf: out is NULL");
    *out = NULL;
    if (!src && len) return l3c_fail(L3C_ERR_INVALID_ARG, "gbnf: NULL source");
    if (!root) root = "root";
    parser p = {.s = src ? src : "", .n = len, .st = L3C_OK};
    gram_rules *g = NULL;
    l3c_status st;

    skip_space(&p, 1);
    while (p.i < p.n && p.st == L3C_OK)
        parse_rule(&p);
    if ((st = p.st) != L3C_OK) goto fail;
    if (p.n_sym == 0) {
        st = l3c_fail(L3C_ERR_FORMAT, "gbnf: the grammar has no rules");
        goto fail;
    }
    for (uint32_t k = 0; k < p.n_sym; k++) {
        if (!p.defined[k]) {
            p.cur_rule = NULL;
            int line, col;
            line_col(&p, p.ref_at[k], &line, &col);
            st = l3c_fail(L3C_ERR_FORMAT, "gbnf: line %d column %d: undefined rule '%s'", line, col,
                          p.names[k]);
            goto fail;
        }
    }
    int64_t root_id = -1;
    for (uint32_t k = 0; k < p.n_sym; k++)
        if (strcmp(p.names[k], root) == 0) root_id = k;
    if (root_id < 0) {
        st = l3c_fail(L3C_ERR_FORMAT, "gbnf: the grammar has no start rule '%s'", root);
        goto fail;
    }

    g = l3c_calloc(1, sizeof *g);
    if (!g) goto oom;
    g->n_rules = p.n_sym;
    g->root = (uint32_t)root_id;
    g->n_el = p.total;
    g->el = l3c_malloc((size_t)(p.total ? p.total : 1) * sizeof *g->el);
    g->rule_off = l3c_malloc((size_t)p.n_sym * sizeof *g->rule_off);
    if (!g->el || !g->rule_off) goto oom;
    uint32_t off = 0;
    for (uint32_t k = 0; k < p.n_sym; k++) {
        g->rule_off[k] = off;
        memcpy(g->el + off, p.rules[k].v, p.rules[k].n * sizeof *g->el);
        off += p.rules[k].n;
    }
    g->n_el = off;
    g->names = p.names;
    p.names = NULL;
    if ((st = check_left_recursion(&p, g)) != L3C_OK) {
        p.names = g->names;
        g->names = NULL;
        goto fail;
    }
    for (uint32_t k = 0; k < p.n_sym; k++)
        free(p.rules[k].v);
    free(p.rules);
    free(p.defined);
    free(p.ref_at);
    *out = g;
    return L3C_OK;
oom:
    st = l3c_fail(L3C_ERR_NOMEM, "gbnf: out of memory");
fail:
    if (p.names)
        for (uint32_t k = 0; k < p.n_sym; k++)
            free(p.names[k]);
    free(p.names);
    for (uint32_t k = 0; k < p.n_sym; k++)
        free(p.rules[k].v);
    free(p.rules);
    free(p.defined);
    free(p.ref_at);
    if (g) g->n_rules = 0;
    l3c_gram_rules_free(g);
    return st;
}

/* ---------------------------------------------------------------- char classes */

uint32_t l3c_gram_class_end(const gel *el, uint32_t pos) {
    pos++;
    while (el[pos].type == G_RNG_UPPER || el[pos].type == G_CHAR_ALT)
        pos++;
    return pos;
}

int l3c_gram_match_char(const gel *el, uint32_t pos, uint32_t cp) {
    if (el[pos].type == G_CHAR_ANY) return 1;
    int positive = el[pos].type == G_CHAR;
    uint32_t k = pos;
    do {
        uint32_t lo = el[k].val, hi = lo;
        if (el[k + 1].type == G_RNG_UPPER) {
            hi = el[k + 1].val;
            k += 2;
        } else {
            k += 1;
        }
        if (cp >= lo && cp <= hi) return positive;
    } while (el[k].type == G_CHAR_ALT);
    return !positive;
}

int l3c_gram_match_range(const gel *el, uint32_t pos, uint32_t lo, uint32_t hi) {
    if (el[pos].type == G_CHAR_ANY) return 1;
    if (el[pos].type == G_CHAR) {
        uint32_t k = pos;
        do {
            uint32_t a = el[k].val, b = a;
            if (el[k + 1].type == G_RNG_UPPER) {
                b = el[k + 1].val;
                k += 2;
            } else {
                k += 1;
            }
            if (a <= hi && b >= lo) return 1;
        } while (el[k].type == G_CHAR_ALT);
        return 0;
    }
    /* negated: is some x in [lo, hi] outside every excluded range? */
    uint32_t x = lo;
    for (;;) {
        int moved = 0;
        uint32_t k = pos;
        do {
            uint32_t a = el[k].val, b = a;
            if (el[k + 1].type == G_RNG_UPPER) {
                b = el[k + 1].val;
                k += 2;
            } else {
                k += 1;
            }
            if (x >= a && x <= b) {
                if (b >= hi) return 0;
                x = b + 1;
                moved = 1;
            }
        } while (el[k].type == G_CHAR_ALT);
        if (!moved) return 1;
    }
}
