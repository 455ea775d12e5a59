/*
 * pyjson.h -- JSON text exactly as Python's json.dumps(x, ensure_ascii=False, indent=INDENT) writes
 * it, which is what Hugging Face's `tojson` filter puts into chat templates (Llama 3.1's tool
 * definitions and tool-call arguments). Input is a jansson tree (objects keep their key order).
 *
 *   indent < 0  separators ", " and ": " on one line            ({"a": 1, "b": [1, 2]})
 *   indent >= 0 one item per line, INDENT spaces per level,
 *               separators "," and ": "; empty {} / [] stay on one line
 *   strings     only '"', '\\' and control characters < 0x20 are escaped (\n \r \t \b \f, else
 *               \u00xx, lowercase); other bytes are copied (UTF-8 stays UTF-8)
 *   integers    decimal; reals as Python's repr(float): the shortest digits that read back to the
 *               same double, fixed notation for 1e-4 <= |x| < 1e16 ("1.0", "0.0001"), otherwise
 *               exponent with a sign and at least two digits ("1e-05", "1e+16", "1.5e+300")
 */
#ifndef L3C_IO_PYJSON_H
#define L3C_IO_PYJSON_H

#include "util/util.h"

#include <jansson.h>

l3c_status l3c_pyjson_dump(const json_t *j, int indent, l3c_buf *out);
/* A JSON string literal of s (NUL-terminated), escaped as above. */
l3c_status l3c_pyjson_string(const char *s, size_t n, l3c_buf *out);

#endif
