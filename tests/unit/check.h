/*
 * check.h -- minimal assertion macros for the C unit tests. A test binary exits 1 if any
 * CHECK failed; CHECK_NEAR reports both values.
 */
#ifndef L3C_CHECK_H
#define L3C_CHECK_H
#include <math.h>
#include <stdio.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        check_count++;                                                                \
        if (!(cond)) {                                                                \
            check_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        check_count++;                                                                \
        if (!(cond)) {                                                                \
            check_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                          \
    do {                                                                               \
        double check_a_ = (a), check_b_ = (b);                                         \
        check_count++;                                                                 \
        if (!(fabs(check_a_ - check_b_) <= (tol))) {                                   \
            check_failures++;                                                          \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s=%g %s=%g tol=%g\n", __FILE__, \
                    __LINE__, #a, check_a_, #b, check_b_, (double)(tol));              \
        }                                                                              \
    } while (0)

/* A check that cannot run because a reference (test data, the default model) is missing: a note
 * locally, a failure under CI (CI=true or L3C_STRICT_SKIPS=1), where setup.sh --test installs and
 * verifies every reference, so a missing one must not let the run pass (tests/ci_allowed_skips.txt). */
#include <stdlib.h>
#include <string.h>
static inline int check_ci_strict(void) {
    const char *ci = getenv("CI"), *st = getenv("L3C_STRICT_SKIPS");
    return (ci && (!strcmp(ci, "true") || !strcmp(ci, "1") || !strcmp(ci, "yes"))) || (st && !strcmp(st, "1"));
}
#define CHECK_REFERENCE_MISSING(...)                                                   \
    do {                                                                               \
        int check_strict_ = check_ci_strict();                                         \
        if (check_strict_) check_failures++;                                           \
        fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__,                             \
                check_strict_ ? "FAILED (CI: a reference is missing)" : "SKIP");       \
        fprintf(stderr, __VA_ARGS__);                                                  \
        fputc('\n', stderr);                                                          \
    } while (0)

#define CHECK_DONE(name)                                                               \
    (fprintf(stderr, "%s: %d checks, %d failed\n", name, check_count, check_failures), \
     check_failures ? 1 : 0)

#endif
