/*
 * fuzz_model_path.h -- the default model for the harnesses that need a real vocabulary or model:
 * $L3C_FUZZ_MODEL, else what scripts/default-model.sh prints (run from the repository or from
 * build-fuzz/). Returns buf (or the variable), or NULL when there is none.
 */
#ifndef L3C_FUZZ_MODEL_PATH_H
#define L3C_FUZZ_MODEL_PATH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *fuzz_model_path(char *buf, size_t cap) {
    const char *p = getenv("L3C_FUZZ_MODEL");
    if (p && *p) return p;
    FILE *f = popen("sh scripts/default-model.sh 2>/dev/null || sh ../scripts/default-model.sh 2>/dev/null", "r");
    if (!f) return NULL;
    const char *r = fgets(buf, (int)cap, f) ? buf : NULL;
    pclose(f);
    if (r) buf[strcspn(buf, "\n")] = 0;
    return r && *r ? r : NULL;
}

#endif
