/*
 * sampler.c -- the sampling chain behind l3c_sampler_* (public API in llama3c.h).
 *
 * Owns: per-sampler buffers sized once at create time (n_vocab candidates, logit biases, a
 * "seen" mark per token, the repetition history ring), and the PRNG state. l3c_sampler_sample
 * never allocates, so the decode loop stays allocation-free.
 *
 * Chain (temperature > 0), in this order:
 *   logit bias -> repetition penalty (llama.cpp: each distinct token among the last
 *   repeat_last_n accepted ones gets logit>0 ? logit/penalty : logit*penalty) -> presence /
 *   frequency penalties (OpenAI: logit -= frequency * count + presence * (count > 0), counts over
 *   every token accepted since create / reset) -> top-k (partial
 *   selection with a k-heap, O(n log k)) -> softmax(logit / temperature) -> top-p (smallest prefix
 *   of the sorted distribution whose mass is >= p) -> min-p (keep p >= min_p * p_max) -> draw.
 * Greedy (temperature <= 0) applies bias and penalties, then takes the argmax.
 *
 * Invariants: candidates are totally ordered by (logit desc, id asc), so ties always resolve to
 * the lowest id and results never depend on qsort's stability. Tokens whose adjusted logit is
 * -inf or NaN are never candidates. The PRNG is xoshiro256** seeded through splitmix64 from
 * params.seed: the same seed and logits give the same tokens on every platform that rounds
 * expf() the same way.
 */
#include "grammar/grammar.h"
#include "util/util.h"

#include <math.h>
#include <string.h>

typedef struct cand {
    float logit; /* adjusted logit, then probability after softmax */
    int32_t id;
} cand;

struct l3c_sampler {
    l3c_sampler_params p;
    int32_t n_vocab;
    float *bias;         /* [n_vocab] additive biases; NULL until the first set_logit_bias */
    uint8_t *seen;       /* [n_vocab] scratch marks for de-duplicating the history; all 0 between calls */
    cand *cands;         /* [n_vocab] working candidates */
    int32_t *hist;       /* [repeat_last_n] ring of the last accepted tokens */
    int32_t hist_len;    /* valid entries, <= repeat_last_n */
    int32_t hist_head;   /* next write slot */
    int32_t *counts;     /* [n_vocab] accepted-token counts; NULL when both OpenAI penalties are 0 */
    int32_t *counted;    /* [n_vocab] distinct ids with counts[id] > 0, in first-seen order */
    int32_t n_counted;
    l3c_rng rng;
    l3c_gmatch *gm;      /* grammar parse state; NULL: unconstrained */
    uint32_t *mask;      /* [(n_vocab + 31) / 32] allowed-token bits, with gm */
    int fixed;           /* the last probs() was a fixed pick (greedy, all banned): no draw */
    float *dense;        /* [n_vocab] l3c_sampler_verify's scatter of q; all 0 between calls */
    struct {             /* l3c_sampler_mark: what l3c_sampler_rollback restores */
        int set;
        int32_t hist_len, hist_head, n_counted;
        int32_t *hist; /* [repeat_last_n] */
        int32_t *log;  /* ids accepted since the mark (their counts are undone) */
        int32_t n_log, cap_log;
    } mk;
};

/* ---------------------------------------------------------------- PRNG */

/* ---------------------------------------------------------------- lifecycle */

l3c_sampler_params l3c_sampler_default_params(void) {
    l3c_sampler_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = 0x5EED,
    };
    return p;
}

l3c_status l3c_sampler_create(const l3c_sampler_params *params, int32_t n_vocab, l3c_sampler **out) {
    l3c_sampler *s = NULL;
    l3c_status st;
    if (!out) return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: out is NULL");
    *out = NULL;
    if (n_vocab <= 0) return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: n_vocab %d <= 0", (int)n_vocab);
    l3c_sampler_params p = params ? *params : l3c_sampler_default_params();
    if (isnan(p.temperature) || isnan(p.top_p) || isnan(p.min_p) || isnan(p.repeat_penalty))
        return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: NaN parameter");
    if (!isfinite(p.presence_penalty) || !isfinite(p.frequency_penalty))
        return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: presence_penalty %g / frequency_penalty %g must be finite",
                        (double)p.presence_penalty, (double)p.frequency_penalty);
    if (!(p.repeat_penalty > 0.0f))
        return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: repeat_penalty %g must be > 0",
                        (double)p.repeat_penalty);
    if (p.repeat_last_n < 0) p.repeat_last_n = 0;

    s = l3c_calloc(1, sizeof *s);
    if (!s) return l3c_fail(L3C_ERR_NOMEM, "sampler: out of memory");
    s->p = p;
    s->n_vocab = n_vocab;
    s->seen = l3c_calloc((size_t)n_vocab, 1);
    s->cands = l3c_malloc((size_t)n_vocab * sizeof *s->cands);
    if (p.repeat_last_n > 0) s->hist = l3c_malloc((size_t)p.repeat_last_n * sizeof *s->hist);
    const int counting = p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
    if (counting) {
        s->counts = l3c_calloc((size_t)n_vocab, sizeof *s->counts);
        s->counted = l3c_malloc((size_t)n_vocab * sizeof *s->counted);
    }
    if (!s->seen || !s->cands || (p.repeat_last_n > 0 && !s->hist) || (counting && (!s->counts || !s->counted))) {
        st = l3c_fail(L3C_ERR_NOMEM, "sampler: out of memory for %d-token vocabulary", (int)n_vocab);
        goto fail;
    }
    l3c_rng_seed(&s->rng, p.seed);
    *out = s;
    return L3C_OK;
fail:
    l3c_sampler_free(s);
    return st;
}

void l3c_sampler_free(l3c_sampler *s) {
    if (!s) return;
    free(s->bias);
    free(s->seen);
    free(s->cands);
    free(s->hist);
    free(s->counts);
    free(s->counted);
    l3c_gmatch_free(s->gm);
    free(s->mask);
    free(s->dense);
    free(s->mk.hist);
    free(s->mk.log);
    free(s);
}

l3c_status l3c_sampler_set_logit_bias(l3c_sampler *s, int32_t id, float bias) {
    if (!s) return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: NULL sampler");
    if (id < 0 || id >= s->n_vocab)
        return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: logit bias for token %d outside vocabulary [0, %d)",
                        (int)id, (int)s->n_vocab);
    if (isnan(bias)) return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: NaN logit bias for token %d", (int)id);
    if (!s->bias) {
        s->bias = l3c_calloc((size_t)s->n_vocab, sizeof *s->bias);
        if (!s->bias) return l3c_fail(L3C_ERR_NOMEM, "sampler: out of memory for logit biases");
    }
    s->bias[id] = bias;
    return L3C_OK;
}

void l3c_sampler_accept(l3c_sampler *s, int32_t id) {
    if (!s || id < 0 || id >= s->n_vocab) return;
    if (s->mk.set && s->counts) {
        if (s->mk.n_log == s->mk.cap_log) { /* grows to the longest draft once */
            int32_t cap = s->mk.cap_log ? 2 * s->mk.cap_log : 32;
            int32_t *l = l3c_realloc(s->mk.log, (size_t)cap * sizeof *l);
            if (!l) {
                s->mk.set = 0; /* rollback then reports the lost mark */
            } else {
                s->mk.log = l;
                s->mk.cap_log = cap;
            }
        }
        if (s->mk.set) s->mk.log[s->mk.n_log++] = id;
    }
    if (s->counts) {
        if (s->counts[id] == 0) s->counted[s->n_counted++] = id;
        if (s->counts[id] < INT32_MAX) s->counts[id]++;
    }
    if (s->gm) l3c_gmatch_accept(s->gm, id); /* a disallowed token leaves the state dead */
    if (s->p.repeat_last_n <= 0) return;
    s->hist[s->hist_head] = id;
    s->hist_head = (s->hist_head + 1) % s->p.repeat_last_n;
    if (s->hist_len < s->p.repeat_last_n) s->hist_len++;
}

/* Clears the history and the counts and restarts the PRNG from the seed; logit biases are kept. */
void l3c_sampler_reset(l3c_sampler *s) {
    if (!s) return;
    s->hist_len = s->hist_head = 0;
    for (int32_t j = 0; j < s->n_counted; j++) s->counts[s->counted[j]] = 0;
    s->n_counted = 0;
    s->mk.set = 0;
    l3c_rng_seed(&s->rng, s->p.seed);
    if (s->gm) l3c_gmatch_reset(s->gm);
}

l3c_status l3c_sampler_set_grammar(l3c_sampler *s, const l3c_grammar *g) {
    if (!s) return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: NULL sampler");
    l3c_gmatch_free(s->gm);
    s->gm = NULL;
    if (!g) return L3C_OK;
    if (l3c_grammar_n_vocab(g) > s->n_vocab)
        return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: the grammar's vocabulary (%d tokens) exceeds the sampler's (%d)",
                        (int)l3c_grammar_n_vocab(g), (int)s->n_vocab);
    if (!s->mask) {
        s->mask = l3c_malloc(((size_t)s->n_vocab + 31) / 32 * sizeof *s->mask);
        if (!s->mask) return l3c_fail(L3C_ERR_NOMEM, "sampler: out of memory for the grammar mask");
    }
    return l3c_gmatch_create(g, &s->gm);
}

int l3c_sampler_grammar_done(const l3c_sampler *s) {
    return s && s->gm && l3c_gmatch_done(s->gm);
}

/* ---------------------------------------------------------------- chain steps */

/* a ranks before b: higher logit, then lower id. */
static inline int cand_before(const cand *a, const cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

/* Writes the adjusted logits (bias, penalties) of all usable tokens to s->cands; returns the count. */
static int32_t build_candidates(l3c_sampler *s, const float *logits) {
    int32_t n = s->n_vocab; /* filled in id order, so cands[id] is token id until compaction */
    for (int32_t i = 0; i < n; i++) {
        s->cands[i].id = i;
        s->cands[i].logit = s->bias ? logits[i] + s->bias[i] : logits[i];
    }
    if (s->p.repeat_penalty != 1.0f) {
        for (int32_t j = 0; j < s->hist_len; j++) {
            int32_t id = s->hist[j];
            if (s->seen[id]) continue; /* each distinct token is penalized once */
            s->seen[id] = 1;
            float *l = &s->cands[id].logit;
            *l = *l > 0.0f ? *l / s->p.repeat_penalty : *l * s->p.repeat_penalty;
        }
        for (int32_t j = 0; j < s->hist_len; j++) s->seen[s->hist[j]] = 0;
    }
    for (int32_t j = 0; j < s->n_counted; j++) { /* OpenAI presence / frequency penalties */
        int32_t id = s->counted[j];
        s->cands[id].logit -= (float)s->counts[id] * s->p.frequency_penalty + s->p.presence_penalty;
    }
    /* drop banned (-inf) and NaN tokens, keeping id order */
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float l = s->cands[i].logit;
        if (isnan(l) || l == -INFINITY) continue;
        s->cands[m++] = s->cands[i];
    }
    return m;
}

/* Min-heap on rank (the root is the worst kept candidate). */
static void heap_sift_down(cand *h, int32_t n, int32_t i) {
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_before(&h[w], &h[l])) w = l;
        if (r < n && cand_before(&h[w], &h[r])) w = r;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Moves the k best of c[0..n) to c[0..k), sorted best first. O(n log k). */
static void select_top_k(cand *c, int32_t n, int32_t k) {
    for (int32_t i = k / 2 - 1; i >= 0; i--) heap_sift_down(c, k, i);
    for (int32_t i = k; i < n; i++) {
        if (cand_before(&c[i], &c[0])) {
            c[0] = c[i];
            heap_sift_down(c, k, 0);
        }
    }
    qsort(c, (size_t)k, sizeof *c, cand_cmp);
}

/* The chain after candidate building on c[0..n), n >= 1; sorted: c is already sorted best first.
 * Leaves the distribution it draws from in c[0..return) (probabilities, not renormalized after
 * top-p / min-p: their sum is the draw's total); greedy leaves the argmax alone with 1. */
static int32_t chain_probs(l3c_sampler *s, int32_t n, int sorted) {
    cand *c = s->cands;
    if (s->p.temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++)
            if (cand_before(&c[i], &c[best])) best = i;
        c[0] = (cand){1.0f, c[best].id};
        return 1;
    }

    if (!sorted && s->p.top_k > 0 && s->p.top_k < n) {
        select_top_k(c, n, s->p.top_k);
        n = s->p.top_k;
        sorted = 1;
    }

    /* softmax with temperature (max subtracted; probabilities overwrite the logits) */
    float maxl = c[0].logit;
    for (int32_t i = 1; i < n; i++)
        if (c[i].logit > maxl) maxl = c[i].logit;
    double sum = 0.0;
    const float inv_t = 1.0f / s->p.temperature;
    for (int32_t i = 0; i < n; i++) {
        float e = expf((c[i].logit - maxl) * inv_t);
        c[i].logit = e;
        sum += e;
    }
    for (int32_t i = 0; i < n; i++) c[i].logit = (float)(c[i].logit / sum);

    if (s->p.top_p < 1.0f && n > 1) {
        if (!sorted) {
            qsort(c, (size_t)n, sizeof *c, cand_cmp);
            sorted = 1;
        }
        double cum = 0.0;
        int32_t keep = n;
        for (int32_t i = 0; i < n; i++) {
            cum += c[i].logit;
            if (cum >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }

    if (s->p.min_p > 0.0f && n > 1) {
        float pmax = c[0].logit;
        if (!sorted)
            for (int32_t i = 1; i < n; i++)
                if (c[i].logit > pmax) pmax = c[i].logit;
        const float thr = s->p.min_p * pmax;
        int32_t m = 0;
        for (int32_t i = 0; i < n; i++)
            if (c[i].logit >= thr) c[m++] = c[i];
        n = m; /* the max itself always survives, so n >= 1 */
    }
    return n;
}

/* One draw from c[0..n) (weights, renormalized here); a fixed pick uses no random number. */
static int32_t draw(l3c_sampler *s, int32_t n) {
    cand *c = s->cands;
    if (s->fixed) return c[0].id;
    double total = 0.0;
    for (int32_t i = 0; i < n; i++) total += c[i].logit;
    double r = l3c_rng_uniform(&s->rng) * total, cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += c[i].logit;
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id; /* rounding: r landed on the upper edge */
}

/*
 * With a grammar the result is drawn from the chain applied to the allowed tokens only (logits of
 * the others = -inf). The full mask walks the vocabulary trie, so it is computed only when needed:
 * greedy takes the best candidate if the grammar allows it (it is then the argmax of the masked
 * logits); top-k sampling checks candidates in rank order and, once it has the k best allowed
 * ones, has exactly the masked top-k set. Otherwise (or when too few pass) the mask filters all
 * candidates. Either way the distribution is exactly the chain's over the masked logits.
 */
static int32_t grammar_probs(l3c_sampler *s, const float *logits, int32_t n) {
    cand *c = s->cands;
    if (n > 0 && s->p.temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++)
            if (cand_before(&c[i], &c[best])) best = i;
        if (l3c_gmatch_allows(s->gm, c[best].id)) {
            c[0] = (cand){1.0f, c[best].id};
            return 1;
        }
    } else if (n > 0 && s->p.top_k > 0 && s->p.top_k < n) {
        int32_t k = s->p.top_k, K = L3C_MIN(n, L3C_MAX(4 * k, 64)), m = 0;
        select_top_k(c, n, K);
        for (int32_t i = 0; i < K && m < k; i++)
            if (l3c_gmatch_allows(s->gm, c[i].id)) c[m++] = c[i];
        if (m == k) return chain_probs(s, m, 1);
        n = build_candidates(s, logits); /* select_top_k dropped the rest */
    }
    if (l3c_gmatch_mask(s->gm, s->mask, s->n_vocab) < 0) return -1;
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t id = c[i].id;
        if (s->mask[id >> 5] >> (id & 31) & 1) c[m++] = c[i];
    }
    if (m == 0) {
        l3c_fail(L3C_ERR_INVALID_ARG, "grammar: no token is allowed: %s", l3c_gmatch_why_none(s->gm));
        return -1;
    }
    return chain_probs(s, m, 0);
}

/* The distribution l3c_sampler_sample draws from, in s->cands[0..return) as weights (their sum
 * is the total); -1 when a grammar allows no token. */
static int32_t probs(l3c_sampler *s, const float *logits) {
    int32_t n = build_candidates(s, logits);
    s->fixed = s->p.temperature <= 0.0f || n == 0;
    if (s->gm) return grammar_probs(s, logits, n);
    if (n == 0) {
        /* everything is banned or NaN: fall back to the raw argmax so callers always get a token */
        int32_t best = 0;
        for (int32_t i = 1; i < s->n_vocab; i++)
            if (logits[i] > logits[best]) best = i;
        s->cands[0] = (cand){1.0f, best};
        return 1;
    }
    return chain_probs(s, n, 0);
}

int32_t l3c_sampler_sample(l3c_sampler *s, const float *logits) {
    if (!s || !logits) return -1;
    int32_t n = probs(s, logits);
    return n < 0 ? -1 : draw(s, n);
}

int32_t l3c_sampler_probs(l3c_sampler *s, const float *logits, int32_t *ids, float *p,
                          int32_t cap) {
    if (!s || !logits || !ids || !p || cap <= 0) {
        l3c_fail(L3C_ERR_INVALID_ARG,
                 "sampler: l3c_sampler_probs needs a sampler, logits and output arrays");
        return -1;
    }
    int32_t n = probs(s, logits);
    if (n < 0) return -1;
    double total = 0.0;
    for (int32_t i = 0; i < n; i++)
        total += s->cands[i].logit;
    if (n > cap) n = cap; /* the most probable first when sorted; callers pass n_vocab */
    for (int32_t i = 0; i < n; i++) {
        ids[i] = s->cands[i].id;
        p[i] = (float)(s->cands[i].logit / total);
    }
    return n;
}

/*
 * Speculative sampling (Leviathan et al. 2023, Chen et al. 2023): with x drawn from q, accept x
 * with probability min(1, p(x) / q(x)), else draw from max(0, p - q) renormalized; the result is
 * distributed exactly as p. p is this sampler's distribution for logits (every chain step and the
 * grammar applied); q is the draft's, given sparse as (q_ids, q_p).
 */
int32_t l3c_sampler_verify(l3c_sampler *s, const float *logits, int32_t draft, const int32_t *q_ids,
                           const float *q_p, int32_t q_n) {
    if (!s || !logits || (q_n > 0 && (!q_ids || !q_p))) return -1;
    int32_t n = probs(s, logits);
    if (n < 0) return -1;
    if (draft < 0 || draft >= s->n_vocab || q_n <= 0) return draw(s, n);
    if (!s->dense) {
        s->dense = l3c_calloc((size_t)s->n_vocab, sizeof *s->dense);
        if (!s->dense) {
            l3c_fail(L3C_ERR_NOMEM, "sampler: out of memory for speculative sampling");
            return -1;
        }
    }
    cand *c = s->cands;
    double total = 0.0, px = 0.0;
    for (int32_t i = 0; i < n; i++) {
        total += c[i].logit;
        if (c[i].id == draft) px = c[i].logit;
    }
    px /= total;
    for (int32_t i = 0; i < q_n; i++)
        if (q_ids[i] >= 0 && q_ids[i] < s->n_vocab) s->dense[q_ids[i]] = q_p[i];
    const double qx = s->dense[draft];
    int32_t out = -1;
    if (px > 0.0 && (qx <= 0.0 || l3c_rng_uniform(&s->rng) * qx < px)) {
        out = draft;
    } else { /* the residual max(0, p - q) */
        double rt = 0.0;
        for (int32_t i = 0; i < n; i++) {
            double r = c[i].logit / total - s->dense[c[i].id];
            c[i].logit = r > 0.0 ? (float)r : 0.0f;
            rt += c[i].logit;
        }
        if (rt <= 0.0) { /* p == q up to rounding: p itself */
            for (int32_t i = 0; i < q_n; i++)
                if (q_ids[i] >= 0 && q_ids[i] < s->n_vocab) s->dense[q_ids[i]] = 0.0f;
            n = probs(s, logits);
            return n < 0 ? -1 : draw(s, n);
        }
        double r = l3c_rng_uniform(&s->rng) * rt, cum = 0.0;
        for (int32_t i = 0; i < n && out < 0; i++) {
            cum += c[i].logit;
            if (r < cum) out = c[i].id;
        }
        for (int32_t i = n - 1; out < 0 && i >= 0; i--) /* rounding: the last with weight */
            if (c[i].logit > 0.0f) out = c[i].id;
    }
    for (int32_t i = 0; i < q_n; i++)
        if (q_ids[i] >= 0 && q_ids[i] < s->n_vocab) s->dense[q_ids[i]] = 0.0f;
    return out;
}

l3c_status l3c_sampler_mark(l3c_sampler *s) {
    if (!s) return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: NULL sampler");
    if (s->p.repeat_last_n > 0 && !s->mk.hist) {
        s->mk.hist = l3c_malloc((size_t)s->p.repeat_last_n * sizeof *s->mk.hist);
        if (!s->mk.hist) return l3c_fail(L3C_ERR_NOMEM, "sampler: out of memory for a mark");
    }
    if (s->gm) {
        l3c_status st = l3c_gmatch_mark(s->gm);
        if (st != L3C_OK) return st;
    }
    if (s->p.repeat_last_n > 0)
        memcpy(s->mk.hist, s->hist, (size_t)s->p.repeat_last_n * sizeof *s->hist);
    s->mk.hist_len = s->hist_len;
    s->mk.hist_head = s->hist_head;
    s->mk.n_counted = s->n_counted;
    s->mk.n_log = 0;
    s->mk.set = 1;
    return L3C_OK;
}

l3c_status l3c_sampler_rollback(l3c_sampler *s) {
    if (!s || !s->mk.set) return l3c_fail(L3C_ERR_INVALID_ARG, "sampler: rollback without a mark");
    if (s->p.repeat_last_n > 0)
        memcpy(s->hist, s->mk.hist, (size_t)s->p.repeat_last_n * sizeof *s->hist);
    s->hist_len = s->mk.hist_len;
    s->hist_head = s->mk.hist_head;
    if (s->counts) {
        for (int32_t j = 0; j < s->mk.n_log; j++)
            if (s->counts[s->mk.log[j]] > 0) s->counts[s->mk.log[j]]--;
        s->n_counted = s->mk.n_counted; /* ids first counted after the mark are back at 0 */
    }
    s->mk.n_log = 0;
    s->mk.set = 0;
    return s->gm ? l3c_gmatch_rollback(s->gm) : L3C_OK;
}
