/*
 * ref.c -- the scalar reference kernels: the oracle every ISA kernel is tested against.
 * Plain readable C, no tricks. Owns to_float / from_float / vec_dot for every supported type
 * (block layouts in blocks.h, byte-compatible with ggml).
 *
 * Invariants: n is a multiple of the type's block size (callers check with l3c_row_size);
 * quantizers round like ggml's quantize_row_*_ref (so blocks made here are what ggml would make);
 * vec_dot sums exact integer products per block and accumulates blocks in float like ggml;
 * float-row dots (F32/F16/BF16 weights, all with F32 activations) accumulate in double.
 *
 * K-quants are decoded by one unpack function per type into int8 quants q[256] plus a
 * per-sub-block scale and min, shared by to_float and vec_dot so the two cannot disagree.
 */
#include "kernels/ref.h"

#include "kernels/blocks.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define FP16(h) l3c_fp16_to_fp32(h)

/* ---------------------------------------------------------------- float rows */

void l3c_ref_to_float_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void l3c_ref_from_float_f32(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void l3c_ref_to_float_f16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = l3c_fp16_to_fp32(h[i]);
}

void l3c_ref_from_float_f16(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = l3c_fp32_to_fp16(src[i]);
}

void l3c_ref_to_float_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = l3c_bf16_to_fp32(h[i]);
}

void l3c_ref_from_float_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = l3c_fp32_to_bf16(src[i]);
}

void l3c_ref_vec_dot_f32(int64_t n, float *out, const void *w, const void *x) {
    const float *a = w, *b = x;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)a[i] * b[i];
    *out = (float)sum;
}

void l3c_ref_vec_dot_f16(int64_t n, float *out, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)l3c_fp16_to_fp32(a[i]) * b[i];
    *out = (float)sum;
}

void l3c_ref_vec_dot_bf16(int64_t n, float *out, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)l3c_bf16_to_fp32(a[i]) * b[i];
    *out = (float)sum;
}

/* ---------------------------------------------------------------- 32-element blocks */

/* Unpacked quants of one 32-block: Q4_0 -> [-8, 7], Q4_1 -> [0, 15], Q5_0 -> [-16, 15],
 * Q5_1 -> [0, 31]. Element j < 16 lives in the low nibble of qs[j], j + 16 in the high one. */
static void unpack_q4(const uint8_t qs[16], int offset, int8_t q[32]) {
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((qs[j] & 0x0F) - offset);
        q[j + 16] = (int8_t)((qs[j] >> 4) - offset);
    }
}

static void unpack_q5(const uint8_t qs[16], const uint8_t qh4[4], int offset, int8_t q[32]) {
    uint32_t qh = l3c_load_qh(qh4);
    for (int j = 0; j < 16; j++) {
        int hi0 = (qh >> j) & 1, hi1 = (qh >> (j + 16)) & 1;
        q[j] = (int8_t)(((qs[j] & 0x0F) | (hi0 << 4)) - offset);
        q[j + 16] = (int8_t)(((qs[j] >> 4) | (hi1 << 4)) - offset);
    }
}

void l3c_ref_to_float_q4_0(const void *src, float *dst, int64_t n) {
    const l3c_block_q4_0 *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++) {
        float d = FP16(b[i].d);
        unpack_q4(b[i].qs, 8, q);
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = q[j] * d;
    }
}

void l3c_ref_to_float_q4_1(const void *src, float *dst, int64_t n) {
    const l3c_block_q4_1 *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++) {
        float d = FP16(b[i].d), m = FP16(b[i].m);
        unpack_q4(b[i].qs, 0, q);
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = q[j] * d + m;
    }
}

void l3c_ref_to_float_q5_0(const void *src, float *dst, int64_t n) {
    const l3c_block_q5_0 *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++) {
        float d = FP16(b[i].d);
        unpack_q5(b[i].qs, b[i].qh, 16, q);
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = q[j] * d;
    }
}

void l3c_ref_to_float_q5_1(const void *src, float *dst, int64_t n) {
    const l3c_block_q5_1 *b = src;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++) {
        float d = FP16(b[i].d), m = FP16(b[i].m);
        unpack_q5(b[i].qs, b[i].qh, 0, q);
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = q[j] * d + m;
    }
}

void l3c_ref_to_float_q8_0(const void *src, float *dst, int64_t n) {
    const l3c_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++) {
        float d = FP16(b[i].d);
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = b[i].qs[j] * d;
    }
}

void l3c_ref_to_float_q8_1(const void *src, float *dst, int64_t n) {
    const l3c_block_q8_1 *b = src;
    for (int64_t i = 0; i < n / 32; i++) {
        float d = FP16(b[i].d);
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = b[i].qs[j] * d;
    }
}

/* Symmetric 4/5-bit (ggml quantize_row_q4_0_ref / q5_0_ref): the value of largest magnitude
 * maps to -2^(bits-1); quant = trunc(x / d + 2^(bits-1) + 0.5), capped at 2^bits - 1. */
static void quantize_sym(const float *x, int bits, float *d_out, uint8_t q[32]) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    int half = 1 << (bits - 1), top = (1 << bits) - 1;
    float d = max / (float)-half;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) {
        int v = (int8_t)(x[j] * id + ((float)half + 0.5f));
        q[j] = (uint8_t)L3C_MIN(top, v);
    }
    *d_out = d;
}

/* Asymmetric 4/5-bit (ggml quantize_row_q4_1_ref / q5_1_ref): min maps to 0, max to 2^bits - 1. */
static void quantize_asym(const float *x, int bits, float *d_out, float *m_out, uint8_t q[32]) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        min = L3C_MIN(min, x[j]);
        max = L3C_MAX(max, x[j]);
    }
    int top = (1 << bits) - 1;
    float d = (max - min) / (float)top;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) {
        int v = (int8_t)((x[j] - min) * id + 0.5f);
        q[j] = (uint8_t)L3C_MIN(top, v);
    }
    *d_out = d;
    *m_out = min;
}

static void pack_q4(const uint8_t q[32], uint8_t qs[16]) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
}

static void pack_q5(const uint8_t q[32], uint8_t qs[16], uint8_t qh4[4]) {
    uint32_t qh = 0;
    pack_q4(q, qs);
    for (int j = 0; j < 32; j++) qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    for (int k = 0; k < 4; k++) qh4[k] = (uint8_t)(qh >> (8 * k));
}

void l3c_ref_from_float_q4_0(const float *src, void *dst, int64_t n) {
    l3c_block_q4_0 *b = dst;
    uint8_t q[32];
    float d;
    for (int64_t i = 0; i < n / 32; i++) {
        quantize_sym(src + i * 32, 4, &d, q);
        b[i].d = l3c_fp32_to_fp16(d);
        pack_q4(q, b[i].qs);
    }
}

void l3c_ref_from_float_q4_1(const float *src, void *dst, int64_t n) {
    l3c_block_q4_1 *b = dst;
    uint8_t q[32];
    float d, m;
    for (int64_t i = 0; i < n / 32; i++) {
        quantize_asym(src + i * 32, 4, &d, &m, q);
        b[i].d = l3c_fp32_to_fp16(d);
        b[i].m = l3c_fp32_to_fp16(m);
        pack_q4(q, b[i].qs);
    }
}

void l3c_ref_from_float_q5_0(const float *src, void *dst, int64_t n) {
    l3c_block_q5_0 *b = dst;
    uint8_t q[32];
    float d;
    for (int64_t i = 0; i < n / 32; i++) {
        quantize_sym(src + i * 32, 5, &d, q);
        b[i].d = l3c_fp32_to_fp16(d);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

void l3c_ref_from_float_q5_1(const float *src, void *dst, int64_t n) {
    l3c_block_q5_1 *b = dst;
    uint8_t q[32];
    float d, m;
    for (int64_t i = 0; i < n / 32; i++) {
        quantize_asym(src + i * 32, 5, &d, &m, q);
        b[i].d = l3c_fp32_to_fp16(d);
        b[i].m = l3c_fp32_to_fp16(m);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

/* Q8_0 / Q8_1: d = amax / 127, q = round(x / d). Returns d (unrounded) and sum(q). */
static float quantize_q8(const float *x, int8_t q[32], int *sum) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = L3C_MAX(amax, fabsf(x[j]));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    *sum = 0;
    for (int j = 0; j < 32; j++) {
        q[j] = (int8_t)roundf(x[j] * id);
        *sum += q[j];
    }
    return d;
}

void l3c_ref_from_float_q8_0(const float *src, void *dst, int64_t n) {
    l3c_block_q8_0 *b = dst;
    int sum;
    for (int64_t i = 0; i < n / 32; i++) {
        float d = quantize_q8(src + i * 32, b[i].qs, &sum);
        b[i].d = l3c_fp32_to_fp16(d);
    }
}

void l3c_ref_from_float_q8_1(const float *src, void *dst, int64_t n) {
    l3c_block_q8_1 *b = dst;
    int sum;
    for (int64_t i = 0; i < n / 32; i++) {
        float d = quantize_q8(src + i * 32, b[i].qs, &sum);
        b[i].d = l3c_fp32_to_fp16(d);
        b[i].s = l3c_fp32_to_fp16((float)sum * d);
    }
}

/* sum over one 32-block of w_q[j] * x_q[j] (exact) */
static int dot32(const int8_t *a, const int8_t *b) {
    int s = 0;
    for (int j = 0; j < 32; j++) s += a[j] * b[j];
    return s;
}

void l3c_ref_vec_dot_q4_0(int64_t n, float *out, const void *w, const void *x) {
    const l3c_block_q4_0 *a = w;
    const l3c_block_q8_0 *b = x;
    int8_t q[32];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_q4(a[i].qs, 8, q);
        sum += (float)dot32(q, b[i].qs) * (FP16(a[i].d) * FP16(b[i].d));
    }
    *out = sum;
}

/* (d_w q_w + m_w) . (d_x q_x) = d_w d_x sum(q_w q_x) + m_w s_x, with s_x = d_x sum(q_x) */
void l3c_ref_vec_dot_q4_1(int64_t n, float *out, const void *w, const void *x) {
    const l3c_block_q4_1 *a = w;
    const l3c_block_q8_1 *b = x;
    int8_t q[32];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_q4(a[i].qs, 0, q);
        sum += (float)dot32(q, b[i].qs) * (FP16(a[i].d) * FP16(b[i].d)) +
               FP16(a[i].m) * FP16(b[i].s);
    }
    *out = sum;
}

void l3c_ref_vec_dot_q5_0(int64_t n, float *out, const void *w, const void *x) {
    const l3c_block_q5_0 *a = w;
    const l3c_block_q8_0 *b = x;
    int8_t q[32];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_q5(a[i].qs, a[i].qh, 16, q);
        sum += (float)dot32(q, b[i].qs) * (FP16(a[i].d) * FP16(b[i].d));
    }
    *out = sum;
}

void l3c_ref_vec_dot_q5_1(int64_t n, float *out, const void *w, const void *x) {
    const l3c_block_q5_1 *a = w;
    const l3c_block_q8_1 *b = x;
    int8_t q[32];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 32; i++) {
        unpack_q5(a[i].qs, a[i].qh, 0, q);
        sum += (float)dot32(q, b[i].qs) * (FP16(a[i].d) * FP16(b[i].d)) +
               FP16(a[i].m) * FP16(b[i].s);
    }
    *out = sum;
}

void l3c_ref_vec_dot_q8_0(int64_t n, float *out, const void *w, const void *x) {
    const l3c_block_q8_0 *a = w;
    const l3c_block_q8_0 *b = x;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 32; i++)
        sum += (float)dot32(a[i].qs, b[i].qs) * (FP16(a[i].d) * FP16(b[i].d));
    *out = sum;
}

/* ---------------------------------------------------------------- K-quants (256 elements) */

/*
 * A K-quant block decoded: x[e] = d * sc[s] * q[e] - dmin * mn[s], s = e / sub (sub-block
 * length 16 or 32). Types without a min have dmin = 0 and mn = 0.
 */
typedef struct {
    float d, dmin;
    int sub;        /* sub-block length: 16 or 32 */
    int8_t q[256];
    int sc[16], mn[16];
} kblock;

static void unpack_q2_K(const l3c_block_q2_K *b, kblock *k) {
    k->d = FP16(b->d);
    k->dmin = FP16(b->dmin);
    k->sub = 16;
    for (int s = 0; s < 16; s++) {
        k->sc[s] = b->scales[s] & 0x0F;
        k->mn[s] = b->scales[s] >> 4;
    }
    /* element e = 128c + 32j + 16h + l takes bits 2j..2j+1 of qs[32c + 16h + l] */
    for (int e = 0; e < 256; e++) {
        int c = e / 128, j = (e % 128) / 32, hl = e % 32;
        k->q[e] = (int8_t)((b->qs[32 * c + hl] >> (2 * j)) & 3);
    }
}

static void unpack_q3_K(const l3c_block_q3_K *b, kblock *k) {
    k->d = FP16(b->d);
    k->dmin = 0.0f;
    k->sub = 16;
    for (int s = 0; s < 16; s++) {
        k->sc[s] = l3c_k3_scale(s, b->scales) - 32;
        k->mn[s] = 0;
    }
    /* as Q2_K for the low bits; the high bit is bit 4c + j of hmask[16h + l]; clear means -4 */
    for (int e = 0; e < 256; e++) {
        int c = e / 128, j = (e % 128) / 32, hl = e % 32;
        int lo = (b->qs[32 * c + hl] >> (2 * j)) & 3;
        int hi = (b->hmask[hl] >> (4 * c + j)) & 1;
        k->q[e] = (int8_t)(lo - (hi ? 0 : 4));
    }
}

static void unpack_q4_K(const l3c_block_q4_K *b, kblock *k) {
    k->d = FP16(b->d);
    k->dmin = FP16(b->dmin);
    k->sub = 32;
    for (int s = 0; s < 8; s++) {
        uint8_t sc, m;
        l3c_k4_scale_min(s, b->scales, &sc, &m);
        k->sc[s] = sc;
        k->mn[s] = m;
    }
    /* sub-block s: low nibbles (s even) or high nibbles (s odd) of qs[32 * (s / 2) + l] */
    for (int e = 0; e < 256; e++) {
        int s = e / 32, l = e % 32;
        k->q[e] = (int8_t)((b->qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F);
    }
}

static void unpack_q5_K(const l3c_block_q5_K *b, kblock *k) {
    k->d = FP16(b->d);
    k->dmin = FP16(b->dmin);
    k->sub = 32;
    for (int s = 0; s < 8; s++) {
        uint8_t sc, m;
        l3c_k4_scale_min(s, b->scales, &sc, &m);
        k->sc[s] = sc;
        k->mn[s] = m;
    }
    /* as Q4_K; the 5th bit of element 32s + l is bit s of qh[l] */
    for (int e = 0; e < 256; e++) {
        int s = e / 32, l = e % 32;
        int lo = (b->qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0F;
        int hi = (b->qh[l] >> s) & 1;
        k->q[e] = (int8_t)(lo | (hi << 4));
    }
}

static void unpack_q6_K(const l3c_block_q6_K *b, kblock *k) {
    k->d = FP16(b->d);
    k->dmin = 0.0f;
    k->sub = 16;
    for (int s = 0; s < 16; s++) {
        k->sc[s] = b->scales[s];
        k->mn[s] = 0;
    }
    /* element e = 128c + 32j + l (l < 32): low 4 bits from ql[64c + 32(j % 2) + l] (low nibble
     * for j < 2, high for j >= 2), high 2 bits are bits 2j..2j+1 of qh[32c + l]; minus 32 */
    for (int e = 0; e < 256; e++) {
        int c = e / 128, j = (e % 128) / 32, l = e % 32;
        int lo = (b->ql[64 * c + 32 * (j % 2) + l] >> (4 * (j / 2))) & 0x0F;
        int hi = (b->qh[32 * c + l] >> (2 * j)) & 3;
        k->q[e] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

static void kblock_to_float(const kblock *k, float *y) {
    for (int e = 0; e < 256; e++) {
        int s = e / k->sub;
        float dl = k->d * (float)k->sc[s], ml = k->dmin * (float)k->mn[s];
        y[e] = dl * (float)k->q[e] - ml;
    }
}

/* dot of a decoded block with one Q8_K block: integer sums per sub-block, one float combine */
static float kblock_dot(const kblock *k, const l3c_block_q8_K *x) {
    int isum = 0, msum = 0;
    for (int s = 0; s < 256 / k->sub; s++) {
        int qsum = 0, xsum = 0;
        for (int l = 0; l < k->sub; l++) {
            qsum += k->q[s * k->sub + l] * x->qs[s * k->sub + l];
            xsum += x->qs[s * k->sub + l];
        }
        isum += k->sc[s] * qsum;
        msum += k->mn[s] * xsum;
    }
    return x->d * k->d * (float)isum - x->d * k->dmin * (float)msum;
}

#define KQUANT_KERNELS(t)                                                                     \
    void l3c_ref_to_float_##t(const void *src, float *dst, int64_t n) {                       \
        const l3c_block_##t *b = src;                                                         \
        kblock k;                                                                             \
        for (int64_t i = 0; i < n / 256; i++) {                                               \
            unpack_##t(&b[i], &k);                                                            \
            kblock_to_float(&k, dst + i * 256);                                               \
        }                                                                                     \
    }                                                                                         \
    void l3c_ref_vec_dot_##t(int64_t n, float *out, const void *w, const void *x) {           \
        const l3c_block_##t *a = w;                                                           \
        const l3c_block_q8_K *b = x;                                                          \
        kblock k;                                                                             \
        float sum = 0.0f;                                                                     \
        for (int64_t i = 0; i < n / 256; i++) {                                               \
            unpack_##t(&a[i], &k);                                                            \
            sum += kblock_dot(&k, &b[i]);                                                     \
        }                                                                                     \
        *out = sum;                                                                           \
    }

KQUANT_KERNELS(q2_K)
KQUANT_KERNELS(q3_K)
KQUANT_KERNELS(q4_K)
KQUANT_KERNELS(q5_K)
KQUANT_KERNELS(q6_K)

void l3c_ref_to_float_q8_K(const void *src, float *dst, int64_t n) {
    const l3c_block_q8_K *b = src;
    for (int64_t i = 0; i < n / 256; i++)
        for (int j = 0; j < 256; j++) dst[i * 256 + j] = b[i].d * b[i].qs[j];
}

/* ggml quantize_row_q8_K_ref: the value of largest magnitude maps to -127 (round half to even) */
void l3c_ref_from_float_q8_K(const float *src, void *dst, int64_t n) {
    l3c_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / 256; i++) {
        const float *x = src + i * 256;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < 256; j++) {
            long v = lrintf(iscale * x[j]);
            b[i].qs[j] = (int8_t)L3C_MIN(127, v);
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += b[i].qs[16 * g + l];
            b[i].bsums[g] = (int16_t)s;
        }
        b[i].d = 1.0f / iscale;
    }
}
