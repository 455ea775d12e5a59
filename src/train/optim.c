/*
 * optim.c -- AdamW, warmup + cosine schedule, gradient clipping, seeded RNG (see optim.h).
 * The update is written in torch.optim.AdamW's order of operations (single-tensor, non-fused
 * path) so that short runs follow torch closely.
 */
#include "train/optim.h"

#include <math.h>

l3c_adamw_params l3c_adamw_default_params(void) {
    l3c_adamw_params p = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                          .weight_decay = 0.0f, .grad_clip = 1.0f, .warmup_steps = 0,
                          .total_steps = 0, .min_lr_ratio = 0.1f};
    return p;
}

float l3c_lr_at(const l3c_adamw_params *p, int step) {
    if (step < p->warmup_steps) return p->lr * (float)(step + 1) / (float)p->warmup_steps;
    if (p->total_steps <= p->warmup_steps) return p->lr;
    double r = (double)(step - p->warmup_steps) / (double)(p->total_steps - p->warmup_steps);
    if (r > 1.0) r = 1.0;
    const double coeff = 0.5 * (1.0 + cos(M_PI * r)); /* 1 -> 0 */
    const double lo = (double)p->lr * p->min_lr_ratio;
    return (float)(lo + coeff * ((double)p->lr - lo));
}

double l3c_grad_norm(const float *g, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

double l3c_grad_clip(float *g, size_t n, float max_norm) {
    const double norm = l3c_grad_norm(g, n);
    if (max_norm > 0.0f) {
        const double coef = (double)max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            const float c = (float)coef;
            for (size_t i = 0; i < n; i++) g[i] *= c;
        }
    }
    return norm;
}

void l3c_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                      float beta2, float eps, float wd, int t) {
    const double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t); /* as torch: in double */
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float decay = 1.0f - lr * wd;
    for (size_t i = 0; i < n; i++) {
        p[i] *= decay;
        m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] -= step_size * (m[i] / denom);
    }
}

/* ------------------------------------------------------------------ RNG */

double l3c_rng_normal(l3c_rng *r) {
    const double u1 = 1.0 - l3c_rng_uniform(r); /* (0, 1] */
    const double u2 = l3c_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void l3c_rng_shuffle(l3c_rng *r, int32_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        const size_t j = (size_t)(l3c_rng_u64(r) % i);
        const int32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
