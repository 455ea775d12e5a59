/*
 * rope.c -- rotary position embedding in llama.cpp's "normal" mode, which is what GGUF llama
 * files need: the converter permutes the rows of attn_q / attn_k so that each head's rotated
 * pairs are adjacent, (x[2i], x[2i+1]) for i < n_rot/2; dims >= n_rot pass through.
 *   angle(pos, i) = pos * s * base^(-2i/n_rot) / rope_freqs[i]
 * rope_freqs: Llama 3.1 scaling; s: linear scaling, 1 / llama.rope.scaling.factor (else 1).
 *   (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)
 * Angles are computed in double (positions reach 10^5..10^6), then rounded to float.
 */
#include "model/model.h"

#include <math.h>

void l3c_rope_inv_freq(const l3c_config *cfg, const float *rope_freqs, double *inv_freq) {
    const int half = cfg->n_rot / 2;
    for (int i = 0; i < half; i++) {
        double f = (double)cfg->rope_freq_scale * pow((double)cfg->rope_theta, -2.0 * i / (double)cfg->n_rot);
        if (rope_freqs) f /= (double)rope_freqs[i];
        inv_freq[i] = f;
    }
}

void l3c_rope_tables(const double *inv_freq, int n_rot, const int32_t *pos, int64_t T, float *cos_out,
                     float *sin_out) {
    const int half = n_rot / 2;
    for (int64_t t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double a = (double)pos[t] * inv_freq[i];
            cos_out[t * half + i] = (float)cos(a);
            sin_out[t * half + i] = (float)sin(a);
        }
}

void l3c_rope_apply(float *x, int64_t T, int n_heads, int hd, int n_rot, const float *cos_t,
                    const float *sin_t) {
    const int half = n_rot / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * (int64_t)hd; /* one head [hd] */
            for (int i = 0; i < half; i++) {
                float x0 = v[2 * i], x1 = v[2 * i + 1];
                v[2 * i] = x0 * c[i] - x1 * s[i];
                v[2 * i + 1] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}
