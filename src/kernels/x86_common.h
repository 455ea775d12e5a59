/*
 * x86_common.h -- AVX2 building blocks shared by x86_avx2.c and x86_avx512.c (both are compiled
 * with at least -mavx2 -mfma -mf16c). Private to those two files; everything is static inline.
 *
 * Integer dot products use _mm256_maddubs_epi16 (u8 x s8 -> s16 pairs, saturating): every caller
 * keeps the unsigned operand small enough (<= 63 with |s8| <= 127, or the sign trick with |w| <=
 * 128) that the pair sums never saturate, so the integer parts are exact.
 */
#ifndef L3C_X86_COMMON_H
#define L3C_X86_COMMON_H

#include "kernels/blocks.h"
#include "kernels/ref.h"
#include "kernels/tile_kernels.h"

#include <immintrin.h>
#include <string.h>

static inline float x86_fp16(uint16_t h) { return _cvtsh_ss(h); }

/* float weight rows: element i of a row of kind K_F32 / K_F16 / K_BF16 (scalar tails) */
enum { K_F32, K_F16, K_BF16 };

static inline float x86_scalar_w(int kind, const void *w, int64_t i) {
    if (kind == K_F32) return ((const float *)w)[i];
    if (kind == K_F16) return x86_fp16(((const uint16_t *)w)[i]);
    return l3c_bf16_to_fp32(((const uint16_t *)w)[i]);
}

static inline float x86_hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int x86_hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

static inline uint32_t x86_load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Q3_K: the 12 packed bytes -> 16 signed scales (6 bits minus 32) as int16 lanes */
static inline __m256i q3_K_scales(const uint8_t *q) {
    uint32_t a = x86_load_u32(q), b = x86_load_u32(q + 4), c = x86_load_u32(q + 8);
    __m128i s = _mm_setr_epi32((int)((a & 0x0F0F0F0F) | ((c << 4) & 0x30303030)),
                               (int)((b & 0x0F0F0F0F) | ((c << 2) & 0x30303030)),
                               (int)(((a >> 4) & 0x0F0F0F0F) | (c & 0x30303030)),
                               (int)(((b >> 4) & 0x0F0F0F0F) | ((c >> 2) & 0x30303030)));
    return _mm256_cvtepi8_epi16(_mm_sub_epi8(s, _mm_set1_epi8(32)));
}

/* 16 bytes of packed nibbles -> 32 bytes in [0, 15]: element j (low nibble of qs[j]) at byte j,
 * element j + 16 (high nibble) at byte j + 16. */
static inline __m256i x86_nibbles32(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* 32 bits -> 32 bytes: byte j is 0xFF when bit j is set, else 0. */
static inline __m256i x86_bits_to_bytes(uint32_t bits) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                           0x0101010101010101LL, 0x0000000000000000LL);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7FBFDFEFF7FBFDFELL));
    return _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
}

/* sum over pairs of u8 a * s8 b -> 8 int32 lanes (a <= 128 with |b| <= 127, no saturation) */
static inline __m256i x86_dot_us8(__m256i a, __m256i b) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
}

/* s8 a * s8 b -> 8 int32 lanes, via the sign trick (|a| * sign(b, a)); a != -128 */
static inline __m256i x86_dot_s8(__m256i a, __m256i b) {
    return x86_dot_us8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

/* ggml's roundf: to nearest, halves away from zero (exactly, also for 0.49999997f). */
static inline __m256 x86_round_away(__m256 v) {
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_sub_ps(v, t); /* exact */
    const __m256 signmask = _mm256_set1_ps(-0.0f);
    __m256 half = _mm256_cmp_ps(_mm256_andnot_ps(signmask, frac), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(signmask, v));
    return _mm256_add_ps(t, _mm256_and_ps(half, one));
}

/* 4 x 8 int32 (each in [-128, 127]) -> 32 int8 in element order */
static inline __m256i x86_pack_i32_to_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i v = _mm256_packs_epi16(ab, cd);
    /* the packs interleave 128-bit lanes: dwords come out as a0 b0 c0 d0 a1 b1 c1 d1 */
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Q8_0 / Q8_1 block: d = amax / 127, q = roundf(x / d), exactly as ref.c. Returns d, *sum. */
static inline float x86_quant_q8_block(const float *x, int8_t *qs, int *sum) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                             _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256 vid = _mm256_set1_ps(id);
    __m256i i0 = _mm256_cvtps_epi32(x86_round_away(_mm256_mul_ps(v0, vid)));
    __m256i i1 = _mm256_cvtps_epi32(x86_round_away(_mm256_mul_ps(v1, vid)));
    __m256i i2 = _mm256_cvtps_epi32(x86_round_away(_mm256_mul_ps(v2, vid)));
    __m256i i3 = _mm256_cvtps_epi32(x86_round_away(_mm256_mul_ps(v3, vid)));
    if (sum)
        *sum = x86_hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    _mm256_storeu_si256((__m256i *)qs, x86_pack_i32_to_i8(i0, i1, i2, i3));
    return d;
}

/* Q4_K / Q5_K: the 12 packed scale bytes -> sc[8] (bytes 0..7) and mn[8] (bytes 8..15). */
static inline void x86_k4_scales(const uint8_t *q, uint32_t out[4]) {
    uint32_t a = x86_load_u32(q), b = x86_load_u32(q + 4), c = x86_load_u32(q + 8);
    out[0] = a & 0x3F3F3F3F;
    out[1] = (c & 0x0F0F0F0F) | ((a >> 2) & 0x30303030);
    out[2] = b & 0x3F3F3F3F;
    out[3] = ((c >> 4) & 0x0F0F0F0F) | ((b >> 2) & 0x30303030);
}

/* shuffle mask that broadcasts int16 lane k of each 128-bit half to the whole half */
static inline __m256i x86_bcast16_mask(int k_lo, int k_hi) {
    return _mm256_set_m128i(_mm_set1_epi16((short)((2 * k_hi) | ((2 * k_hi + 1) << 8))),
                            _mm_set1_epi16((short)((2 * k_lo) | ((2 * k_lo + 1) << 8))));
}

/* 32-element weight blocks unpacked to unsigned bytes: Q4_0/Q4_1 in [0, 15], Q5_0/Q5_1 in
 * [0, 31] (the 5th bit from qh); the offset (8 / 16) or min is applied by the caller. */
enum { B_Q4_0, B_Q4_1, B_Q5_0, B_Q5_1 };

static inline __attribute__((always_inline)) __m256i x86_unpack_b32(int kind, const char *blk) {
    switch (kind) {
    case B_Q4_0: return x86_nibbles32(((const l3c_block_q4_0 *)blk)->qs);
    case B_Q4_1: return x86_nibbles32(((const l3c_block_q4_1 *)blk)->qs);
    case B_Q5_0: {
        const l3c_block_q5_0 *b = (const void *)blk;
        __m256i hi = _mm256_and_si256(x86_bits_to_bytes(x86_load_u32(b->qh)), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(x86_nibbles32(b->qs), hi);
    }
    default: {
        const l3c_block_q5_1 *b = (const void *)blk;
        __m256i hi = _mm256_and_si256(x86_bits_to_bytes(x86_load_u32(b->qh)), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(x86_nibbles32(b->qs), hi);
    }
    }
}

static const size_t x86_b32_size[4] = {sizeof(l3c_block_q4_0), sizeof(l3c_block_q4_1),
                                   sizeof(l3c_block_q5_0), sizeof(l3c_block_q5_1)};

/* vec_dot / gemm of a type from its tile kernel (the driver is shared with arm_neon.c) */
#define X86_DEFINE_KERNELS(name, TILE) L3C_DEFINE_TILE_KERNELS(name, TILE, GEMM_RW, GEMM_RT)
#define X86_DEFINE_KERNELS_T(name, TILE, RW_, RT_) L3C_DEFINE_TILE_KERNELS(name, TILE, RW_, RT_)

#endif /* L3C_X86_COMMON_H */
