/*
 * cmd_chat.c -- `llama3c chat`: conversation with a model through its chat template.
 * Modes: one turn with -p; one user turn per stdin line when stdin is not a terminal; otherwise an
 * interactive REPL: libedit line editing and history (chat_line.c), slash commands (/help, /clear,
 * /exit), multi-line input (a line ending in \), Ctrl-C stops a reply and, twice on an empty line,
 * quits. History is trimmed to leave -n positions for the reply, with a note of what was dropped.
 * The whole conversation is re-tokenized every turn with l3c_chat_tokenize and fed through
 * cli_session_feed, which keeps the KV-cache prefix it shares with the previous turn, so only the
 * new tokens are evaluated. --print-prompt shows the exact prompt the model would see (the
 * detokenized prompt ids, special tokens included) and exits.
 */
#include "chat_line.h"
#include "cli.h"
#include "common.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *CMD = "chat";

static void help(FILE *f) {
    cli_opts d;
    cli_opts_init(&d, 512, 0.7f, 0.9f);
    fprintf(
        f,
        "usage: llama3c chat -m FILE [-p PROMPT] [--system TEXT] [options]\n\n"
        "Chats through the model's chat template. With -p: answers one prompt. With stdin not a\n"
        "terminal: every input line is a user turn (multi-turn). Otherwise: interactive (\"> \"):\n"
        "line editing and history (Up/Down, ~/.editrc), a line ending in \\ continues on the "
        "next,\n"
        "/help lists the commands, /clear forgets the conversation, Ctrl-C stops a reply, /exit,\n"
        "Ctrl-D or Ctrl-C twice on an empty line quits. When the conversation outgrows the "
        "context,\n"
        "the oldest messages are dropped (with a note) to leave -n positions for the reply.\n\n"
        "chat:\n"
        "  -p, --prompt TEXT       one user turn, answered, then exit\n"
        "  -e, --escape            process escapes (\\n \\t \\\" \\\\ \\xHH ...) in -p, --system, "
        "--message\n"
        "  --system TEXT           system message\n"
        "  --message ROLE TEXT     add a message to the conversation first (repeatable)\n"
        "  --template NAME         llama3 | llama31 | chatml | llama2 | zephyr (default: from the\n"
        "                          model)\n"
        "  --date TEXT             llama31: the \"Today Date: TEXT\" of the system block (default: "
        "the\n"
        "                          template's: 26 Jul 2024, or today for Llama 3.2's "
        "strftime_now)\n"
        "  --print-prompt          print the prompt the model would see (with -p / --message; the\n"
        "                          detokenized prompt ids) and exit; without -m: the --template "
        "text\n"
        "  --print-prompt-ids      print the prompt's token ids and exit\n");
    cli_opts_help(f, &d);
    cli_spec_help(f);
    cli_grammar_help(f);
}

typedef struct conv {
    l3c_chat_message *m; /* roles are static strings or argv; contents are malloc'd */
    size_t n, cap;
    size_t n_keep; /* messages kept by /reset (the system message and --message seeds) */
} conv;

static int conv_add(conv *c, const char *role, const char *content, size_t len) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        l3c_chat_message *m = realloc(c->m, cap * sizeof *m);
        if (!m) return -1;
        c->m = m;
        c->cap = cap;
    }
    char *s = malloc(len + 1);
    if (!s) return -1;
    memcpy(s, content, len);
    s[len] = '\0';
    c->m[c->n].role = role;
    c->m[c->n].content = s;
    c->n++;
    return 0;
}

static void conv_truncate(conv *c, size_t n) {
    while (c->n > n)
        free((char *)c->m[--c->n].content);
}

static void conv_free(conv *c) {
    conv_truncate(c, 0);
    free(c->m);
}

static const char *g_date;     /* --date, NULL: the template's default */
static l3c_grammar *g_grammar; /* --grammar / --json-schema / --json: each answer restarts it */

static int tokenize_conv(const l3c_model *model, l3c_chat_template t, const conv *c, int32_t **ids,
                         int64_t *n) {
    if (l3c_chat_tokenize_ex(model, t, c->m, c->n, 1, g_date, ids, n) != L3C_OK)
        return cli_runtime_error(CMD, "cannot format the conversation");
    return 0;
}

/* One exchange: the user's text in, the answer streamed to stdout and added to the conversation. */
static int turn(cli_session *s, const cli_opts *o, l3c_chat_template t, conv *c, const char *user,
                size_t len, volatile sig_atomic_t *stop) {
    if (conv_add(c, "user", user, len)) goto nomem;
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = tokenize_conv(s->model, t, c, &ids, &n);
    /* Too long to leave room for the reply: forget the oldest messages (never the seeded ones)
     * until the prompt plus -n tokens fit (-n -1: a quarter of the context; at most half of it),
     * and a user message comes first again. */
    const int64_t reserve = o->n_predict >= 0 && o->n_predict < s->n_ctx / 2
                                ? o->n_predict
                                : s->n_ctx / (o->n_predict < 0 ? 4 : 2);
    size_t n_dropped = 0;
    const int64_t n_before = n;
    while (!rc && c->n > c->n_keep + 1 &&
           (n + reserve > s->n_ctx || strcmp(c->m[c->n_keep].role, "user") != 0)) {
        l3c_free(ids);
        free((char *)c->m[c->n_keep].content);
        memmove(c->m + c->n_keep, c->m + c->n_keep + 1, (c->n - c->n_keep - 1) * sizeof *c->m);
        c->n--;
        n_dropped++;
        rc = tokenize_conv(s->model, t, c, &ids, &n);
    }
    if (n_dropped && !rc)
        fprintf(stderr,
                "llama3c %s: dropped the %zu oldest message%s (%lld of %lld prompt tokens) to "
                "leave %lld "
                "positions of the %d-position context for the reply\n",
                CMD, n_dropped, n_dropped > 1 ? "s" : "", (long long)(n_before - n),
                (long long)n_before, (long long)reserve, (int)s->n_ctx);
    if (!rc) rc = cli_session_feed(s, ids, n);
    l3c_free(ids);
    if (rc) {
        conv_truncate(c, c->n - 1);
        return rc;
    }
    char *answer = NULL;
    cli_gen_opts g = {.out = stdout, .text = &answer, .stop = stop};
    if (g_grammar && l3c_sampler_set_grammar(s->smp, g_grammar) != L3C_OK) {
        conv_truncate(c, c->n - 1);
        return cli_runtime_error(CMD, "cannot set the grammar");
    }
    rc = cli_session_generate(s, o, &g);
    fputc('\n', stdout);
    fflush(stdout);
    if (!o->no_timings) cli_print_timings(s);
    if (!o->no_timings && s->n_drafted)
        fprintf(stderr, "speculation: %lld draft tokens decoded, %lld accepted (%.0f%%)\n",
                (long long)s->n_drafted, (long long)s->n_accepted,
                100.0 * (double)s->n_accepted / (double)s->n_drafted);
    if (rc) return rc;
    int bad = conv_add(c, "assistant", answer, strlen(answer));
    free(answer);
    if (bad) goto nomem;
    return 0;
nomem:
    fprintf(stderr, "llama3c %s: out of memory\n", CMD);
    return CLI_ERR;
}

/* ---------------------------------------------------------------- the interactive loop */

static volatile sig_atomic_t g_interrupt; /* Ctrl-C: stops a reply, or the line being read */

static void on_sigint(int sig) {
    (void)sig;
    g_interrupt = 1;
}

/* restart: 0 while reading a line (the read fails with EINTR and libedit returns), 1 while a
 * reply streams (writes to the terminal are not cut short). */
static void catch_sigint(int restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

static void interactive_help(void) {
    fprintf(stderr,
            "  /help           this list\n"
            "  /clear, /reset  forget the conversation (the system message and --message stay)\n"
            "  /exit, /quit    quit (also Ctrl-D on an empty line, or Ctrl-C twice)\n"
            "  a line ending in \\ continues on the next line (multi-line message)\n"
            "  //text          sends \"/text\"\n"
            "  Ctrl-C          stops the reply being written; Up / Down: earlier messages\n");
}

/* stdin is a terminal: libedit line editing and history, slash commands, multi-line input, Ctrl-C
 * stops a reply (the conversation stays) and, twice on an empty line, quits. */
static int interactive(cli_session *s, const cli_opts *o, l3c_chat_template t, conv *c) {
    chat_line *ed = chat_line_open("llama3c", &g_interrupt);
    if (!ed) {
        fprintf(stderr, "llama3c %s: cannot start the line editor\n", CMD);
        return CLI_ERR;
    }
    fprintf(
        stderr,
        "llama3c %s: template %s; /help lists the commands, Ctrl-C stops a reply, /exit quits\n",
        CMD, l3c_chat_template_name(t));
    char *msg = NULL; /* a multi-line message being collected */
    size_t msg_len = 0;
    int rc = 0, armed = 0; /* armed: the last key was Ctrl-C on an empty line */
    for (;;) {
        char *line = NULL;
        catch_sigint(0);
        g_interrupt = 0;
        int r = chat_line_read(ed, msg ? "... " : "> ", &line);
        catch_sigint(1);
        if (r == CHAT_LINE_INTERRUPTED || r == CHAT_LINE_INTERRUPTED_EMPTY) {
            int empty = r == CHAT_LINE_INTERRUPTED_EMPTY && !msg;
            free(msg);
            msg = NULL;
            msg_len = 0;
            if (empty && armed) break;
            fprintf(stderr, empty ? "\n(Ctrl-C again to quit)\n" : "\n");
            armed = empty;
            continue;
        }
        armed = 0;
        if (r != CHAT_LINE_OK) {
            if (r == CHAT_LINE_ERROR)
                rc = CLI_ERR, fprintf(stderr, "llama3c %s: cannot read the terminal\n", CMD);
            break;
        }
        size_t n = strlen(line);
        const int more = n > 0 && line[n - 1] == '\\';
        if (more) line[--n] = '\0';
        char *m = realloc(msg, msg_len + n + 2);
        if (!m) {
            free(line);
            rc = CLI_ERR;
            fprintf(stderr, "llama3c %s: out of memory\n", CMD);
            break;
        }
        msg = m;
        memcpy(msg + msg_len, line, n);
        msg_len += n;
        free(line);
        if (more) {
            msg[msg_len++] = '\n';
            msg[msg_len] = '\0';
            continue;
        }
        msg[msg_len] = '\0';
        char *text = msg;
        size_t len = msg_len;
        msg = NULL;
        msg_len = 0;
        if (len == 0) {
            free(text);
            continue;
        }
        chat_line_remember(ed, text);
        if (text[0] == '/' && text[1] != '/') {
            if (!strcmp(text, "/exit") || !strcmp(text, "/quit")) {
                free(text);
                break;
            } else if (!strcmp(text, "/help") || !strcmp(text, "/?")) {
                interactive_help();
            } else if (!strcmp(text, "/clear") || !strcmp(text, "/reset")) {
                conv_truncate(c, c->n_keep);
                fprintf(stderr, "(conversation cleared)\n");
            } else {
                fprintf(stderr, "unknown command %s; /help lists them (//text sends \"/text\")\n",
                        text);
            }
            free(text);
            continue;
        }
        const char *send = text[0] == '/' ? text + 1 : text;
        g_interrupt = 0;
        rc = turn(s, o, t, c, send, len - (size_t)(send - text), &g_interrupt);
        free(text);
        if (g_interrupt) fprintf(stderr, "(reply stopped)\n");
        if (rc) break;
    }
    free(msg);
    fputc('\n', stdout);
    signal(SIGINT, SIG_DFL);
    chat_line_close(ed);
    return rc;
}

static int print_prompt(const l3c_model *model, l3c_chat_template t, const conv *c, int as_ids) {
    int32_t *ids = NULL;
    int64_t n = 0;
    if (tokenize_conv(model, t, c, &ids, &n)) return CLI_ERR;
    int rc = 0;
    if (as_ids) {
        for (int64_t i = 0; i < n; i++)
            printf("%s%d", i ? " " : "", (int)ids[i]);
        printf("\n");
    } else {
        const l3c_tokenizer *tok = l3c_model_tokenizer(model);
        int64_t need = l3c_detokenize(tok, ids, n, NULL, 0, 0);
        need = need < 0 ? -need : need;
        char *text = malloc((size_t)need + 1);
        int64_t got = text ? l3c_detokenize(tok, ids, n, text, need, 0) : -1;
        if (got < 0) {
            rc = cli_runtime_error(CMD, "cannot detokenize the prompt");
        } else {
            fwrite(text, 1, (size_t)got, stdout);
        }
        free(text);
    }
    l3c_free(ids);
    fflush(stdout);
    return rc;
}

static int parse_template(const char *name, l3c_chat_template *t) {
    const l3c_chat_template all[] = {L3C_CHAT_LLAMA3, L3C_CHAT_LLAMA31, L3C_CHAT_CHATML,
                                     L3C_CHAT_LLAMA2, L3C_CHAT_ZEPHYR};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, l3c_chat_template_name(all[i]))) {
            *t = all[i];
            return 0;
        }
    return cli_usage_error(
        CMD, "--template: unknown template '%s' (llama3, llama31, chatml, llama2, zephyr)", name);
}

/* One input line (getline). In a distributed run rank 0 reads it (mpirun gives stdin to rank 0
 * only) and every rank gets a copy, so that all take the same turns. */
static ssize_t read_line(char **line, size_t *cap) {
    int64_t len = l3c_dist_rank() == 0 ? (int64_t)getline(line, cap, stdin) : 0;
    if (l3c_dist_size() == 1) return (ssize_t)len;
    l3c_dist_bcast(&len, sizeof len);
    if (len < 0) return -1;
    if (l3c_dist_rank() != 0 && *cap < (size_t)len + 1) {
        char *p = realloc(*line, (size_t)len + 1);
        if (!p) {
            l3c_dist_abort("out of memory for an input line");
            return -1;
        }
        *line = p;
        *cap = (size_t)len + 1;
    }
    l3c_dist_bcast(*line, (size_t)len + 1);
    return (ssize_t)len;
}

int cmd_chat(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o, 512, 0.7f, 0.9f);
    const char *prompt = NULL, *system = NULL;
    l3c_chat_template tmpl = L3C_CHAT_AUTO;
    int print = 0, print_ids = 0, escape = 0, rc = 0;
    conv c = {0};
    char *line = NULL;
    size_t line_cap = 0;
    /* --message pairs are collected first so --system comes first regardless of order */
    const char **seed_roles = calloc((size_t)argc, sizeof *seed_roles);
    const char **seed_texts = calloc((size_t)argc, sizeof *seed_texts);
    size_t n_seed = 0;
    cli_grammar gopt = {0};
    cli_spec spec;
    cli_spec_init(&spec);
    if (!seed_roles || !seed_texts) {
        rc = CLI_ERR;
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_opts_parse(CMD, &o, argc, argv, &i);
        if (!r) r = cli_grammar_parse(CMD, &gopt, argc, argv, &i);
        if (!r) r = cli_spec_parse(CMD, &spec, argc, argv, &i);
        if (r < 0) {
            rc = CLI_USAGE;
            goto out;
        }
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout);
            goto out;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!(prompt = cli_value(CMD, argc, argv, &i))) rc = CLI_USAGE;
        } else if (!strcmp(a, "--system")) {
            if (!(system = cli_value(CMD, argc, argv, &i))) rc = CLI_USAGE;
        } else if (!strcmp(a, "--message")) {
            if (i + 2 >= argc) {
                rc = cli_usage_error(CMD, "--message needs ROLE and TEXT");
            } else {
                seed_roles[n_seed] = argv[++i];
                seed_texts[n_seed++] = argv[++i];
            }
        } else if (!strcmp(a, "--template")) {
            const char *v = cli_value(CMD, argc, argv, &i);
            rc = v ? parse_template(v, &tmpl) : CLI_USAGE;
        } else if (!strcmp(a, "--date")) {
            if (!(g_date = cli_value(CMD, argc, argv, &i))) rc = CLI_USAGE;
        } else if (!strcmp(a, "-e") || !strcmp(a, "--escape")) {
            escape = 1;
        } else if (!strcmp(a, "--print-prompt")) {
            print = 1;
        } else if (!strcmp(a, "--print-prompt-ids")) {
            print_ids = 1;
        } else {
            rc = cli_usage_error(CMD, "unknown option '%s'", a);
        }
        if (rc) goto out;
    }
    if (escape) { /* argv's strings: ours to change */
        if (prompt) cli_unescape((char *)prompt);
        if (system) cli_unescape((char *)system);
        for (size_t i = 0; i < n_seed; i++)
            cli_unescape((char *)seed_texts[i]);
    }
    if (system && conv_add(&c, "system", system, strlen(system))) goto nomem;
    for (size_t i = 0; i < n_seed; i++)
        if (conv_add(&c, seed_roles[i], seed_texts[i], strlen(seed_texts[i]))) goto nomem;
    c.n_keep = c.n;

    if (print && !o.model_path) { /* the template alone: l3c_chat_format's text */
        if (tmpl == L3C_CHAT_AUTO) {
            rc = cli_usage_error(CMD, "--print-prompt without -m needs --template");
            goto out;
        }
        if (prompt && conv_add(&c, "user", prompt, strlen(prompt))) goto nomem;
        char *text = NULL;
        if (l3c_chat_format_ex(tmpl, c.m, c.n, 1, g_date, &text) != L3C_OK) {
            rc = cli_runtime_error(CMD, "cannot format the conversation");
            goto out;
        }
        fputs(text, stdout);
        l3c_free(text);
        goto out;
    }
    if ((rc = cli_opts_finish(CMD, &o))) goto out;

    if (print || print_ids) {
        l3c_model *model = NULL;
        if ((rc = cli_load_model(CMD, o.model_path, o.n_threads, o.verbose, o.bf16, &model)))
            goto out;
        if (tmpl == L3C_CHAT_AUTO) tmpl = l3c_chat_template_detect(model);
        if (prompt && conv_add(&c, "user", prompt, strlen(prompt))) {
            l3c_model_free(model);
            goto nomem;
        }
        rc = print_prompt(model, tmpl, &c, print_ids);
        l3c_model_free(model);
        goto out;
    }

    cli_session s;
    if ((rc = cli_session_open(&s, CMD, &o))) goto out;
    if (tmpl == L3C_CHAT_AUTO) tmpl = l3c_chat_template_detect(s.model);
    if (o.verbose) fprintf(stderr, "llama3c %s: template %s\n", CMD, l3c_chat_template_name(tmpl));
    if ((rc = cli_session_spec(&s, &o, &spec)) ||
        (rc = cli_grammar_load(CMD, &gopt, s.tok, &g_grammar))) {
        cli_session_close(&s);
        goto out;
    }

    if (prompt) {
        rc = turn(&s, &o, tmpl, &c, prompt, strlen(prompt), NULL);
    } else if (isatty(STDIN_FILENO) && l3c_dist_size() == 1) {
        rc = interactive(&s, &o, tmpl, &c);
    } else { /* piped (or under mpirun: rank 0 reads, every rank gets the line): a turn per line */
        for (;;) {
            ssize_t len = read_line(&line, &line_cap);
            if (len < 0) break;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = '\0';
            if (len == 0) continue;
            if ((rc = turn(&s, &o, tmpl, &c, line, (size_t)len, NULL))) break;
        }
    }
    cli_session_close(&s);
    l3c_grammar_free(g_grammar);
    g_grammar = NULL;
    goto out;
nomem:
    fprintf(stderr, "llama3c %s: out of memory\n", CMD);
    rc = CLI_ERR;
out:
    free(line);
    conv_free(&c);
    free(seed_roles);
    free(seed_texts);
    return rc;
}
