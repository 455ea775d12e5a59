/*
 * accounts.h -- API keys with per-key limits for `llama3c serve --api-keys FILE`.
 *
 * FILE: one account per line, "NAME KEY [REQUESTS_PER_MINUTE [TOKENS_PER_DAY]]" separated by
 * spaces or tabs; a limit of 0 or "-" is no limit; '#' starts a comment; blank lines are skipped.
 * NAME: 1-64 of [A-Za-z0-9_.-] (it labels /metrics); KEY: 8-256 printable non-space ASCII bytes.
 * Names and keys are unique. A malformed file is refused whole, the message naming file:line.
 *
 * Limits: requests per minute are a token bucket (capacity N, refilled N per 60 s); tokens per day
 * (prompt + completion, counted when a request ends) reset at 00:00 UTC. A request over a limit
 * is refused before it is parsed with 429 and Retry-After (seconds until it would pass).
 *
 * Thread-safe. accounts_reload swaps the key table atomically: requests already admitted keep
 * their account's usage record (records are kept by name for the life of the process, so usage
 * and limits' state survive a reload for names that stay).
 */
#ifndef L3C_SERVER_ACCOUNTS_H
#define L3C_SERVER_ACCOUNTS_H

#include <stddef.h>

typedef struct accounts accounts;
typedef struct acct_usage acct_usage;

/* Loads path; NULL with a message in err (file:line: what) on failure. */
accounts *accounts_load(const char *path, char *err, size_t err_cap);
/* Re-reads the file it was loaded from; on failure the old table stays, err says why. 0 / -1. */
int accounts_reload(accounts *a, char *err, size_t err_cap);
void accounts_free(accounts *a);
int accounts_count(accounts *a);

typedef enum acct_result { ACCT_OK = 0, ACCT_UNAUTHORIZED = 1, ACCT_LIMITED = 2 } acct_result;

/*
 * Checks a presented key (NUL-terminated, may be NULL) in constant time against every key.
 * count: 1 when the request counts against requests/minute (generation endpoints). On ACCT_OK
 * *usage gets the account's record (for accounts_add_tokens); on ACCT_LIMITED *retry_after gets
 * the seconds to wait and *what "requests per minute" or "tokens per day".
 */
acct_result accounts_check(accounts *a, const char *key, int count, acct_usage **usage,
                           long *retry_after, const char **what);
/* Adds a finished request's tokens to its account's usage. */
void accounts_add_tokens(accounts *a, acct_usage *u, long prompt_tokens, long completion_tokens);
/* Prometheus lines of per-key usage (llama3c_key_*{key="NAME"}); caller frees; NULL on no memory.
 */
char *accounts_render(accounts *a, size_t *len);

#endif
