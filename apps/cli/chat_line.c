/*
 * chat_line.c -- libedit glue for the interactive chat (chat_line.h).
 */
#include "chat_line.h"

#include <errno.h>
#include <histedit.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

struct chat_line {
    volatile sig_atomic_t *interrupted; /* set by the caller's SIGINT handler */
    EditLine *el;
    History *hist;
    const char *prompt;
};

/* Waits for a byte of input; -1 with errno EINTR once Ctrl-C was pressed, also when it came
 * before the wait began (SIGINT is blocked between the check of the flag and ppoll, which
 * unblocks it atomically). */
static int wait_input(chat_line *l) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    int r;
    if (*l->interrupted) {
        r = -1;
    } else {
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        r = ppoll(&p, 1, NULL, &old);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (r < 0 && *l->interrupted) errno = EINTR;
    return r < 0 ? -1 : 0;
}

/* libedit's own reader retries a read() cut by a signal once, so one Ctrl-C would be lost: this
 * one gives up at once (errno EINTR). Bytes are decoded as the locale's multibyte characters. */
static int read_char(EditLine *el, wchar_t *wc) {
    chat_line *l = NULL;
    el_get(el, EL_CLIENTDATA, &l);
    char buf[MB_LEN_MAX];
    size_t n = 0;
    for (;;) {
        char b;
        if (wait_input(l)) return -1;
        ssize_t r = read(STDIN_FILENO, &b, 1);
        if (r < 0) return -1; /* EINTR (Ctrl-C) or a read error; errno says which */
        if (r == 0) return 0;
        buf[n++] = b;
        mbstate_t st;
        memset(&st, 0, sizeof st);
        size_t k = mbrtowc(wc, buf, n, &st);
        if (k == (size_t)-2 && n < sizeof buf) continue; /* more bytes of one character */
        if (k == (size_t)-1 || k == (size_t)-2)
            *wc = (unsigned char)buf[0]; /* not valid: as a byte */
        return 1;
    }
}

static char *prompt_of(EditLine *el) {
    chat_line *l = NULL;
    el_get(el, EL_CLIENTDATA, &l);
    return (char *)(l && l->prompt ? l->prompt : "> ");
}

chat_line *chat_line_open(const char *prog, volatile sig_atomic_t *interrupted) {
    chat_line *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->interrupted = interrupted;
    HistEvent ev;
    setlocale(LC_CTYPE, ""); /* UTF-8 input is edited as characters */
    if (!(l->el = el_init(prog, stdin, stdout, stderr)) || !(l->hist = history_init())) {
        chat_line_close(l);
        return NULL;
    }
    history(l->hist, &ev, H_SETSIZE, 1000);
    history(l->hist, &ev, H_SETUNIQUE, 1);
    el_set(l->el, EL_CLIENTDATA, l);
    el_set(l->el, EL_PROMPT, prompt_of);
    el_set(l->el, EL_EDITOR, "emacs");
    el_set(l->el, EL_HIST, history, l->hist);
    el_set(l->el, EL_SIGNAL, 0); /* Ctrl-C is the caller's (see chat_line.h) */
    el_set(l->el, EL_GETCFN, read_char);
    el_source(l->el, NULL); /* ~/.editrc, if any */
    return l;
}

void chat_line_close(chat_line *l) {
    if (!l) return;
    if (l->el) el_end(l->el);
    if (l->hist) history_end(l->hist);
    free(l);
}

int chat_line_read(chat_line *l, const char *prompt, char **out) {
    int count = 0;
    *out = NULL;
    l->prompt = prompt;
    errno = 0;
    const char *s = el_gets(l->el, &count);
    if (!s) {
        if (count < 0 && errno == EINTR) {
            const LineInfo *li = el_line(l->el);
            const int empty = !li || li->lastchar == li->buffer;
            el_reset(l->el);
            return empty ? CHAT_LINE_INTERRUPTED_EMPTY : CHAT_LINE_INTERRUPTED;
        }
        return count < 0 ? CHAT_LINE_ERROR : CHAT_LINE_EOF;
    }
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (!(*out = malloc(n + 1))) return CHAT_LINE_ERROR;
    memcpy(*out, s, n);
    (*out)[n] = '\0';
    return CHAT_LINE_OK;
}

void chat_line_remember(chat_line *l, const char *s) {
    HistEvent ev;
    if (*s) history(l->hist, &ev, H_ENTER, s);
}
