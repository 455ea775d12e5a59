/*
 * optim.h -- AdamW, the learning-rate schedule, global gradient-norm clipping and the seeded
 * RNG used for initialisation and shuffling. All fp32 over flat arrays (the model's arenas).
 *
 * AdamW is torch.optim.AdamW (decoupled weight decay), step t = 1, 2, ...:
 *   p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * Clipping is torch.nn.utils.clip_grad_norm_: g *= min(1, max_norm / (||g||_2 + 1e-6)).
 */
#ifndef L3C_TRAIN_OPTIM_H
#define L3C_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

typedef struct l3c_adamw_params {
    float lr;           /* peak learning rate */
    float beta1, beta2; /* 0.9, 0.999 */
    float eps;          /* 1e-8 */
    float weight_decay; /* applied to matrices only (see l3c_train_step) */
    float grad_clip;    /* max global L2 norm; <= 0: no clipping */
    int warmup_steps;   /* linear warmup: lr * (step + 1) / warmup for step < warmup */
    int total_steps;    /* cosine decay from lr to lr * min_lr_ratio at total_steps */
    float min_lr_ratio;
} l3c_adamw_params;

l3c_adamw_params l3c_adamw_default_params(void);

/* Learning rate of step (0-based): linear warmup, then cosine decay to lr * min_lr_ratio
 * (held there after total_steps). */
float l3c_lr_at(const l3c_adamw_params *p, int step);

/* Global L2 norm of n gradients (accumulated in double). */
double l3c_grad_norm(const float *g, size_t n);
/* Scales g so that its norm is at most max_norm (torch's rule); returns the norm before. */
double l3c_grad_clip(float *g, size_t n, float max_norm);

/* One AdamW update of n parameters at step t (1-based) with weight decay wd. */
void l3c_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                      float beta2, float eps, float wd, int t);

/* l3c_rng (util.h): reproducible init and shuffles */
double l3c_rng_normal(l3c_rng *r);  /* N(0, 1), Box-Muller */
/* Fisher-Yates shuffle of a[n]. */
void l3c_rng_shuffle(l3c_rng *r, int32_t *a, size_t n);

#endif /* L3C_TRAIN_OPTIM_H */
