/*
 * chat_line.h -- the interactive chat's input line: libedit (BSD editline, Debian libedit-dev)
 * for line editing and history (Up/Down, Ctrl-R, ~/.editrc), used only when stdin is a terminal.
 * Ctrl-C while reading gives back CHAT_LINE_INTERRUPTED (the caller installs a SIGINT handler
 * without SA_RESTART, so the terminal read fails with EINTR; libedit's own signal handling is off).
 */
#ifndef L3C_CHAT_LINE_H
#define L3C_CHAT_LINE_H

#include <signal.h>

typedef struct chat_line chat_line;

enum {
    CHAT_LINE_OK = 0,
    CHAT_LINE_EOF = 1,               /* Ctrl-D on an empty line, or the end of input */
    CHAT_LINE_INTERRUPTED = 2,       /* Ctrl-C with text on the line (the text is dropped) */
    CHAT_LINE_INTERRUPTED_EMPTY = 3, /* Ctrl-C on an empty line */
    CHAT_LINE_ERROR = 4
};

/* NULL when libedit cannot start (out of memory). *interrupted: the flag the caller's SIGINT
 * handler sets (checked before every wait for input, so no Ctrl-C is lost). */
chat_line *chat_line_open(const char *prog, volatile sig_atomic_t *interrupted);
void chat_line_close(chat_line *l);
/* Reads one line after prompt; *out: malloc'd, without the newline (caller frees) on CHAT_LINE_OK.
 */
int chat_line_read(chat_line *l, const char *prompt, char **out);
/* Adds s to the history (Up arrow). */
void chat_line_remember(chat_line *l, const char *s);

#endif /* L3C_CHAT_LINE_H */
