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

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* 8 pairs a vector: (x0 c - x1 s, x1 c + x0 s) as two products and one add / sub each, as the
 * reference rounds them; pairs past the last multiple of 8 in the reference's loop */
__attribute__((target("avx512f"))) static void rope_avx512(float *x, int64_t T, int n_heads, int hd,
                                                           int n_rot, const float *cos_t,
                                                           const float *sin_t) {
    const int half = n_rot / 2, half8 = half / 8 * 8;
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    for (int64_t t = 0; t < T; t++) {
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * (int64_t)hd; /* one head [hd] */
            for (int i = 0; i < half8; i += 8) {
                const __m512 cc =
                    _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(c + i)));
                const __m512 ss =
                    _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(s + i)));
                const __m512 xv = _mm512_loadu_ps(v + 2 * i), sw = _mm512_permute_ps(xv, 0xB1);
                const __m512 a = _mm512_mul_ps(xv, cc), b = _mm512_mul_ps(sw, ss);
                _mm512_storeu_ps(v + 2 * i, _mm512_mask_add_ps(_mm512_sub_ps(a, b), 0xAAAA, a, b));
            }
            for (int i = half8; i < half; i++) {
                float x0 = v[2 * i], x1 = v[2 * i + 1];
                v[2 * i] = x0 * c[i] - x1 * s[i];
                v[2 * i + 1] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}
#endif

void l3c_rope_apply(float *x, int64_t T, int n_heads, int hd, int n_rot, const float *cos_t,
                    const float *sin_t) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx512f")) {
        rope_avx512(x, T, n_heads, hd, n_rot, cos_t, sin_t);
        return;
    }
#endif
    l3c_rope_apply_ref(x, T, n_heads, hd, n_rot, cos_t, sin_t);
}

void l3c_rope_apply_ref(float *x, int64_t T, int n_heads, int hd, int n_rot, const float *cos_t,
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
