/*
 * accounts.c -- the key table of `llama3c serve --api-keys` (see accounts.h).
 *
 * Invariants: a.mu guards the table and every usage record. Usage records live in a list that
 * only grows (one per name ever loaded) and is freed with the accounts, so a request that was
 * admitted before a reload still points at a valid record.
 */
#include "accounts.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_NAME 64
#define MIN_KEY  8
#define MAX_KEY  256

struct acct_usage {
    char name[MAX_NAME + 1];
    long rpm, tpd;   /* limits of the current table (0: none) */
    double bucket;   /* requests available now (token bucket of rpm) */
    double bucket_t; /* when bucket was last refilled (monotonic seconds) */
    long day;        /* UTC day of day_tokens */
    long day_tokens;
    unsigned long long requests, limited, prompt_tokens, completion_tokens;
    struct acct_usage *next;
};

typedef struct acct {
    char *key;
    size_t key_len;
    acct_usage *u;
} acct;

struct accounts {
    char *path;
    pthread_mutex_t mu;
    acct *tab;
    int n;
    acct_usage *usage; /* every record ever made */
};

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void tab_free(acct *t, int n) {
    for (int i = 0; t && i < n; i++)
        free(t[i].key);
    free(t);
}

/* mu held (or not shared yet). The record for name, made if new. */
static acct_usage *usage_for(accounts *a, const char *name) {
    for (acct_usage *u = a->usage; u; u = u->next)
        if (!strcmp(u->name, name)) return u;
    acct_usage *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    snprintf(u->name, sizeof u->name, "%s", name);
    u->bucket_t = -1;
    u->next = a->usage;
    a->usage = u;
    return u;
}

static int parse_limit(const char *s, long *out) {
    if (!strcmp(s, "-")) {
        *out = 0;
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 1000000000000LL) return -1;
    *out = (long)v;
    return 0;
}

/* Parses path into a new table (usage records from a, limits not yet applied). */
static int parse_file(accounts *a, const char *path, acct **out, int *n_out, long **limits,
                      char *err, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, cap, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    acct *t = NULL;
    long *lim = NULL;
    int n = 0, tcap = 0, lineno = 0, rc = -1;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, cap, "%s:%d: line longer than %zu bytes", path, lineno, sizeof line - 2);
            goto out;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *field[5];
        int nf = 0;
        for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
            if (nf == 4) {
                snprintf(err, cap,
                         "%s:%d: more than NAME KEY [REQUESTS_PER_MINUTE [TOKENS_PER_DAY]]", path,
                         lineno);
                goto out;
            }
            field[nf++] = tok;
        }
        if (nf == 0) continue;
        if (nf < 2) {
            snprintf(err, cap, "%s:%d: expected NAME KEY [REQUESTS_PER_MINUTE [TOKENS_PER_DAY]]",
                     path, lineno);
            goto out;
        }
        size_t ln = strlen(field[0]), lk = strlen(field[1]);
        int bad_name = ln == 0 || ln > MAX_NAME;
        for (size_t i = 0; i < ln && !bad_name; i++) {
            char ch = field[0][i];
            bad_name = !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                         (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-');
        }
        if (bad_name) {
            snprintf(err, cap, "%s:%d: the name must be 1-%d of [A-Za-z0-9_.-]", path, lineno,
                     MAX_NAME);
            goto out;
        }
        int bad_key = lk < MIN_KEY || lk > MAX_KEY;
        for (size_t i = 0; i < lk && !bad_key; i++)
            bad_key = field[1][i] < 0x21 || field[1][i] > 0x7e;
        if (bad_key) {
            snprintf(err, cap, "%s:%d: the key of '%s' must be %d-%d printable ASCII bytes", path,
                     lineno, field[0], MIN_KEY, MAX_KEY);
            goto out;
        }
        long rpm = 0, tpd = 0;
        if ((nf > 2 && parse_limit(field[2], &rpm)) || (nf > 3 && parse_limit(field[3], &tpd))) {
            snprintf(err, cap, "%s:%d: limits must be non-negative integers or '-'", path, lineno);
            goto out;
        }
        for (int i = 0; i < n; i++) {
            if (!strcmp(t[i].u->name, field[0])) {
                snprintf(err, cap, "%s:%d: the name '%s' appears twice", path, lineno, field[0]);
                goto out;
            }
            if (t[i].key_len == lk && !memcmp(t[i].key, field[1], lk)) {
                snprintf(err, cap, "%s:%d: the key of '%s' is also '%s''s", path, lineno, field[0],
                         t[i].u->name);
                goto out;
            }
        }
        if (n == tcap) {
            tcap = tcap ? 2 * tcap : 8;
            acct *nt = realloc(t, (size_t)tcap * sizeof *nt);
            long *nl = realloc(lim, (size_t)tcap * 2 * sizeof *nl);
            if (nt) t = nt;
            if (nl) lim = nl;
            if (!nt || !nl) goto oom;
        }
        t[n].key = strdup(field[1]);
        t[n].key_len = lk;
        t[n].u = usage_for(a, field[0]);
        n++; /* freed with the table whatever comes next */
        if (!t[n - 1].key || !t[n - 1].u) goto oom;
        lim[2 * (n - 1)] = rpm;
        lim[2 * (n - 1) + 1] = tpd;
    }
    if (ferror(f)) {
        snprintf(err, cap, "cannot read '%s'", path);
        goto out;
    }
    if (n == 0) {
        snprintf(err, cap,
                 "%s: no accounts (lines of NAME KEY [REQUESTS_PER_MINUTE [TOKENS_PER_DAY]])",
                 path);
        goto out;
    }
    *out = t;
    *n_out = n;
    *limits = lim;
    t = NULL;
    lim = NULL;
    rc = 0;
    goto out;
oom:
    snprintf(err, cap, "out of memory reading '%s'", path);
out:
    fclose(f);
    tab_free(t, n);
    free(lim);
    return rc;
}

/* Swaps in a parsed table and applies its limits (mu held or not shared yet). */
static void install(accounts *a, acct *t, int n, long *lim) {
    for (int i = 0; i < n; i++) {
        acct_usage *u = t[i].u;
        if (u->rpm != lim[2 * i] || u->bucket_t < 0) { /* new or changed limit: a full bucket */
            u->bucket = (double)lim[2 * i];
            u->bucket_t = mono_s();
        }
        u->rpm = lim[2 * i];
        u->tpd = lim[2 * i + 1];
    }
    tab_free(a->tab, a->n);
    a->tab = t;
    a->n = n;
    free(lim);
}

accounts *accounts_load(const char *path, char *err, size_t err_cap) {
    accounts *a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) {
        snprintf(err, err_cap, "out of memory");
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->mu, NULL);
    acct *t;
    int n;
    long *lim;
    if (parse_file(a, path, &t, &n, &lim, err, err_cap)) {
        accounts_free(a);
        return NULL;
    }
    install(a, t, n, lim);
    return a;
}

int accounts_reload(accounts *a, char *err, size_t err_cap) {
    acct *t;
    int n;
    long *lim;
    pthread_mutex_lock(&a->mu);
    int rc = parse_file(a, a->path, &t, &n, &lim, err, err_cap);
    if (!rc) install(a, t, n, lim);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

void accounts_free(accounts *a) {
    if (!a) return;
    tab_free(a->tab, a->n);
    for (acct_usage *u = a->usage, *next; u; u = next) {
        next = u->next;
        free(u);
    }
    pthread_mutex_destroy(&a->mu);
    free(a->path);
    free(a);
}

int accounts_count(accounts *a) {
    pthread_mutex_lock(&a->mu);
    int n = a->n;
    pthread_mutex_unlock(&a->mu);
    return n;
}

/* Constant time in the key's contents: every byte of every configured key is compared. */
static int key_equal(const char *given, size_t ng, const char *key, size_t nk) {
    unsigned char d = ng != nk;
    for (size_t i = 0; i < nk; i++)
        d |= (unsigned char)((i < ng ? given[i] : 0) ^ key[i]);
    return d == 0;
}

acct_result accounts_check(accounts *a, const char *key, int count, acct_usage **usage,
                           long *retry_after, const char **what) {
    *usage = NULL;
    size_t ng = key ? strnlen(key, MAX_KEY + 1) : 0;
    pthread_mutex_lock(&a->mu);
    acct_usage *u = NULL;
    for (int i = 0; i < a->n; i++) /* no early exit: the time does not tell which key matched */
        if (key_equal(key ? key : "", ng, a->tab[i].key, a->tab[i].key_len)) u = a->tab[i].u;
    acct_result r = ACCT_UNAUTHORIZED;
    if (u && count) {
        const double now = mono_s();
        const long day = (long)(time(NULL) / 86400);
        if (u->day != day) {
            u->day = day;
            u->day_tokens = 0;
        }
        if (u->rpm > 0) {
            u->bucket += (now - u->bucket_t) * (double)u->rpm / 60.0;
            if (u->bucket > (double)u->rpm) u->bucket = (double)u->rpm;
        }
        u->bucket_t = now;
        if (u->tpd > 0 && u->day_tokens >= u->tpd) {
            *retry_after = 86400 - (long)(time(NULL) % 86400);
            *what = "tokens per day";
            r = ACCT_LIMITED;
        } else if (u->rpm > 0 && u->bucket < 1.0) {
            *retry_after = (long)((1.0 - u->bucket) * 60.0 / (double)u->rpm) + 1;
            *what = "requests per minute";
            r = ACCT_LIMITED;
        } else {
            if (u->rpm > 0) u->bucket -= 1.0;
            u->requests++;
            r = ACCT_OK;
        }
        if (r == ACCT_LIMITED) u->limited++;
    } else if (u) {
        r = ACCT_OK;
    }
    if (r == ACCT_OK) *usage = u;
    pthread_mutex_unlock(&a->mu);
    return r;
}

void accounts_add_tokens(accounts *a, acct_usage *u, long prompt_tokens, long completion_tokens) {
    if (!u) return;
    pthread_mutex_lock(&a->mu);
    const long day = (long)(time(NULL) / 86400);
    if (u->day != day) {
        u->day = day;
        u->day_tokens = 0;
    }
    u->day_tokens += prompt_tokens + completion_tokens;
    u->prompt_tokens += (unsigned long long)prompt_tokens;
    u->completion_tokens += (unsigned long long)completion_tokens;
    pthread_mutex_unlock(&a->mu);
}

/* Appends p[0..n) to the growing buffer; -1 when out of memory (buffer freed). */
static int buf_add(char **b, size_t *n, size_t *cap, const char *p, size_t m) {
    if (*n + m + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (*n + m + 1 > c)
            c *= 2;
        char *q = realloc(*b, c);
        if (!q) {
            free(*b);
            *b = NULL;
            return -1;
        }
        *b = q;
        *cap = c;
    }
    memcpy(*b + *n, p, m);
    *n += m;
    (*b)[*n] = '\0';
    return 0;
}

char *accounts_render(accounts *a, size_t *len) {
    static const char head[] =
        "# HELP llama3c_key_requests_total Requests admitted per API key (--api-keys).\n"
        "# TYPE llama3c_key_requests_total counter\n"
        "# HELP llama3c_key_limited_total Requests refused with 429 per API key.\n"
        "# TYPE llama3c_key_limited_total counter\n"
        "# HELP llama3c_key_tokens_total Tokens per API key and kind.\n"
        "# TYPE llama3c_key_tokens_total counter\n"
        "# HELP llama3c_key_day_tokens Tokens counted against tokens/day today (UTC) per API key.\n"
        "# TYPE llama3c_key_day_tokens gauge\n";
    char *b = NULL;
    size_t n = 0, cap = 0;
    if (buf_add(&b, &n, &cap, head, sizeof head - 1)) return NULL;
    const long today = (long)(time(NULL) / 86400);
    pthread_mutex_lock(&a->mu);
    for (acct_usage *u = a->usage; u && b; u = u->next) {
        char line[1024];
        int m =
            snprintf(line, sizeof line,
                     "llama3c_key_requests_total{key=\"%s\"} %llu\n"
                     "llama3c_key_limited_total{key=\"%s\"} %llu\n"
                     "llama3c_key_tokens_total{key=\"%s\",kind=\"prompt\"} %llu\n"
                     "llama3c_key_tokens_total{key=\"%s\",kind=\"completion\"} %llu\n"
                     "llama3c_key_day_tokens{key=\"%s\"} %ld\n",
                     u->name, u->requests, u->name, u->limited, u->name, u->prompt_tokens, u->name,
                     u->completion_tokens, u->name, u->day == today ? u->day_tokens : 0);
        buf_add(&b, &n, &cap, line, (size_t)m);
    }
    pthread_mutex_unlock(&a->mu);
    if (b) *len = n;
    return b;
}
