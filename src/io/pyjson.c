/*
 * pyjson.c -- Python json.dumps(ensure_ascii=False) text from a jansson tree (see pyjson.h).
 */
#include "io/pyjson.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(x)                                                                                     \
    do {                                                                                           \
        l3c_status st_ = (x);                                                                      \
        if (st_) return st_;                                                                       \
    } while (0)

static l3c_status put(l3c_buf *b, const char *s) {
    return l3c_buf_append(b, s, strlen(s));
}

l3c_status l3c_pyjson_string(const char *s, size_t n, l3c_buf *out) {
    TRY(put(out, "\""));
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        TRY(l3c_buf_append(out, s + run, i - run));
        char esc[8];
        switch (c) {
        case '"':
            strcpy(esc, "\\\"");
            break;
        case '\\':
            strcpy(esc, "\\\\");
            break;
        case '\n':
            strcpy(esc, "\\n");
            break;
        case '\r':
            strcpy(esc, "\\r");
            break;
        case '\t':
            strcpy(esc, "\\t");
            break;
        case '\b':
            strcpy(esc, "\\b");
            break;
        case '\f':
            strcpy(esc, "\\f");
            break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            break;
        }
        TRY(put(out, esc));
        run = i + 1;
    }
    TRY(l3c_buf_append(out, s + run, n - run));
    return put(out, "\"");
}

/* repr(float): shortest round-trip digits, then Python's float_repr_style 'r' layout. */
static l3c_status put_real(l3c_buf *out, double d) {
    if (isnan(d)) return put(out, "NaN");
    if (isinf(d)) return put(out, d < 0 ? "-Infinity" : "Infinity");
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, d);
        if (strtod(e, NULL) == d) break;
    }
    /* e = [-]D[.DDD]e[+-]XX: collect the digits and the decimal exponent */
    const char *p = e;
    int neg = *p == '-';
    if (neg) p++;
    char dig[24];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') dig[nd++] = *p;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    dig[nd] = 0;
    int exp10 = atoi(p + 1);
    int decpt = exp10 + 1; /* value = 0.DIGITS x 10^decpt */
    char o[64];
    int k = 0;
    if (neg) o[k++] = '-';
    if (d == 0) {
        k += snprintf(o + k, sizeof o - (size_t)k, "0.0");
    } else if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            o[k++] = '0', o[k++] = '.';
            for (int i = 0; i < -decpt; i++)
                o[k++] = '0';
            for (int i = 0; i < nd; i++)
                o[k++] = dig[i];
        } else {
            for (int i = 0; i < decpt; i++)
                o[k++] = i < nd ? dig[i] : '0';
            o[k++] = '.';
            if (nd > decpt)
                for (int i = decpt; i < nd; i++)
                    o[k++] = dig[i];
            else
                o[k++] = '0';
        }
        o[k] = 0;
    } else {
        o[k++] = dig[0];
        if (nd > 1) {
            o[k++] = '.';
            for (int i = 1; i < nd; i++)
                o[k++] = dig[i];
        }
        k += snprintf(o + k, sizeof o - (size_t)k, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    return put(out, o);
}

static l3c_status newline(l3c_buf *out, int indent, int level) {
    TRY(put(out, "\n"));
    for (int i = 0; i < indent * level; i++)
        TRY(put(out, " "));
    return L3C_OK;
}

static l3c_status dump(const json_t *j, int indent, int level, l3c_buf *out) {
    if (level > 512) return l3c_fail(L3C_ERR_INVALID_ARG, "json: nested deeper than 512 levels");
    switch (json_typeof(j)) {
    case JSON_NULL:
        return put(out, "null");
    case JSON_TRUE:
        return put(out, "true");
    case JSON_FALSE:
        return put(out, "false");
    case JSON_INTEGER:
        return l3c_buf_appendf(out, "%lld", (long long)json_integer_value(j));
    case JSON_REAL:
        return put_real(out, json_real_value(j));
    case JSON_STRING:
        return l3c_pyjson_string(json_string_value(j), json_string_length(j), out);
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (!n) return put(out, "[]");
        TRY(put(out, "["));
        for (size_t i = 0; i < n; i++) {
            if (i) TRY(put(out, indent >= 0 ? "," : ", "));
            if (indent >= 0) TRY(newline(out, indent, level + 1));
            TRY(dump(json_array_get(j, i), indent, level + 1, out));
        }
        if (indent >= 0) TRY(newline(out, indent, level));
        return put(out, "]");
    }
    case JSON_OBJECT: {
        if (!json_object_size(j)) return put(out, "{}");
        TRY(put(out, "{"));
        const char *key;
        json_t *v;
        int first = 1;
        json_object_foreach((json_t *)j, key, v) {
            if (!first) TRY(put(out, indent >= 0 ? "," : ", "));
            first = 0;
            if (indent >= 0) TRY(newline(out, indent, level + 1));
            TRY(l3c_pyjson_string(key, strlen(key), out));
            TRY(put(out, ": "));
            TRY(dump(v, indent, level + 1, out));
        }
        if (indent >= 0) TRY(newline(out, indent, level));
        return put(out, "}");
    }
    }
    return l3c_fail(L3C_ERR_INVALID_ARG, "json: unknown value type");
}

l3c_status l3c_pyjson_dump(const json_t *j, int indent, l3c_buf *out) {
    if (!j) return l3c_fail(L3C_ERR_INVALID_ARG, "json: NULL value");
    return dump(j, indent, 0, out);
}
