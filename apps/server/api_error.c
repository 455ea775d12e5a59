/*
 * api_error.c -- api_fail (openai.h): fills an OpenAI-style error. Its own file so that the unit
 * tests and fuzz harnesses that compile parts of the server (tools.c) share it with the server.
 */
#include "openai.h"

#include <stdarg.h>
#include <stdio.h>

unsigned api_fail(api_error *err, unsigned status, const char *type, const char *param,
                  const char *code, const char *fmt, ...) {
    err->status = status;
    err->type = type;
    err->code = code;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return status;
}
