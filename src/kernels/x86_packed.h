/*
 * x86_packed.h -- building blocks of the packed (16-row interleaved) layouts shared by
 * x86_avx512.c, which defines the layouts and their AVX-512 kernels, and x86_amx.h, whose tile
 * kernels reuse the same per-super-block epilogues so that both give the same bits. Both are
 * compiled with at least AVX-512 F/BW/DQ/VL + VNNI; everything here is static inline.
 */
#ifndef L3C_X86_PACKED_H
#define L3C_X86_PACKED_H

#include "kernels/blocks.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

#define PK_ROWS 16 /* rows per packed group: one per 32-bit lane of a 512-bit register */
#define PK_RT 8    /* tokens per AVX-512 packed tile */

/* byte offset of chunk k (0..2) at column c (0..7) of half h in a Q6_K group */
#define Q6_CHUNK(h, c, k) (288 + 1536 * (h) + 192 * (c) + 64 * (k))

/* acc + dpbusd / dpwssd(w, the dword at p broadcast), the broadcast embedded in the instruction
 * (GCC 12 loads it with a separate vpbroadcastd: one instruction more per dot, ~10% of the
 * one-token Q4_K tile's L2-resident rate) */
INLINE __m512i dpbusd_b(__m512i acc, __m512i w, const void *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}
INLINE __m512i dpwssd_b(__m512i acc, __m512i w, const void *p) {
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}

/* the 6-bit scales and mins of a Q4_K group as bytes: u[0] = sc0..3, u[1] = sc4..7,
 * u[2] = m0..3, u[3] = m4..7 (byte k of lane r: row r's value 4 i + k of u[i]) */
INLINE void q4k_scales(const char *g, __m512i u[4]) {
    const __m512i m6 = _mm512_set1_epi8(0x3F), m0f = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i a = _mm512_loadu_si512(g + 64), bb = _mm512_loadu_si512(g + 128), c = _mm512_loadu_si512(g + 192);
    u[0] = _mm512_and_si512(a, m6);
    u[1] = _mm512_or_si512(_mm512_and_si512(c, m0f), _mm512_and_si512(_mm512_srli_epi32(a, 2), m30));
    u[2] = _mm512_and_si512(bb, m6);
    u[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(c, 4), m0f), _mm512_and_si512(_mm512_srli_epi32(bb, 2), m30));
}

/* byte s % 4 of u[s / 4] as int32 lanes (one in-lane byte shuffle; u's bytes are < 64) */
INLINE __m512i q4k_byte(const __m512i u[4], int s) {
    const __m512i at = _mm512_set_epi32(12, 8, 4, 0, 12, 8, 4, 0, 12, 8, 4, 0, 12, 8, 4, 0);
    return _mm512_shuffle_epi8(u[s / 4], _mm512_add_epi32(at, _mm512_set1_epi32((int)0x80808000u + s % 4)));
}

/* the same byte in both 16-bit halves of each lane (the int16 pair (m, m) for dpwssd) */
INLINE __m512i q4k_byte2(const __m512i u[4], int s) {
    const __m512i at = _mm512_set_epi32(0xC000C, 0x80008, 0x40004, 0, 0xC000C, 0x80008, 0x40004, 0,
                                        0xC000C, 0x80008, 0x40004, 0, 0xC000C, 0x80008, 0x40004, 0);
    return _mm512_shuffle_epi8(u[s / 4], _mm512_add_epi32(at, _mm512_set1_epi32((int)0x80008000u + (s % 4) * 0x10001)));
}

/* the end of a super-block, the same per lane for every tile shape: the mins from the Q8_K group
 * sums, then acc = fma(d * dx, (float)isum, acc); acc = fnmadd(dmin * dx, (float)msum, acc) */
INLINE void q4k_finish(int RT, const char *g, const __m512i u[4], const char *x, size_t xs, int64_t b,
                       const __m512i isum[], __m512 acc[]) {
    __m512i mnp[8];
    UNROLL for (int s = 0; s < 8; s++) mnp[s] = q4k_byte2(u, 8 + s);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    const __m512 dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32)));
    UNROLL for (int t = 0; t < RT; t++) {
        const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
        __m512i m = _mm512_setzero_si512();
        UNROLL for (int s = 0; s < 8; s++) m = dpwssd_b(m, mnp[s], xb->bsums + 2 * s);
        const __m512 dx = _mm512_set1_ps(xb->d);
        acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum[t]), acc[t]);
        acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dmw, dx), _mm512_cvtepi32_ps(m), acc[t]);
    }
}

/* the 6-bit quants of quarter qt at column c of half h: X_qt & 63 for qt < 3; quarter 3 is
 * gathered from bits 6..7 of X0 (its bits 0..1), X1 (2..3) and X2 (4..5) */
INLINE __m512i q6_quant(const char *g, int h, int c, int qt) {
    const __m512i m3f = _mm512_set1_epi8(0x3F);
    if (qt < 3) return _mm512_and_si512(_mm512_loadu_si512(g + Q6_CHUNK(h, c, qt)), m3f);
    const __m512i a = _mm512_srli_epi16(_mm512_loadu_si512(g + Q6_CHUNK(h, c, 0)), 6);
    const __m512i b = _mm512_srli_epi16(_mm512_loadu_si512(g + Q6_CHUNK(h, c, 1)), 4);
    const __m512i d = _mm512_srli_epi16(_mm512_loadu_si512(g + Q6_CHUNK(h, c, 2)), 2);
    const __m512i t = _mm512_ternarylogic_epi32(_mm512_set1_epi8(0x03), a, b, 0xCA); /* m ? a : b */
    return _mm512_and_si512(_mm512_ternarylogic_epi32(_mm512_set1_epi8(0x0F), t, d, 0xCA), m3f);
}

/* int8 scale j (16-element group j of the super-block) of every row, as int32 lanes */
INLINE __m512i q6_scale(const char *g, int j) {
    static const int pos[4] = {0, 2, 1, 3}; /* inverse of q6_perm */
    const __m512i v = _mm512_loadu_si512(g + 32 + 64 * (j / 4));
    const int p = pos[j % 4];
    return _mm512_srai_epi32(p == 3 ? v : _mm512_slli_epi32(v, 24 - 8 * p), 24);
}

/* the end of a super-block, the same per lane for every tile shape: the -32 offset from the
 * Q8_K group sums, then acc = fma(d * dx, (float)(isum - 32 * osum), acc) */
INLINE void q6_finish(int RT, const char *g, const char *x, size_t xs, int64_t b,
                      const __m512i isum[], __m512 acc[]) {
    __m512i pairs[8];
    UNROLL for (int k = 0; k < 4; k++) {
        const __m512i sv = _mm512_loadu_si512(g + 32 + 64 * k);
        pairs[2 * k] = _mm512_srai_epi16(_mm512_slli_epi16(sv, 8), 8);
        pairs[2 * k + 1] = _mm512_srai_epi16(sv, 8);
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    UNROLL for (int t = 0; t < RT; t++) {
        const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
        __m512i o = _mm512_setzero_si512();
        UNROLL for (int p = 0; p < 8; p++)
            o = dpwssd_b(o, pairs[p], xb->bsums + 2 * p);
        const __m512i tot = _mm512_sub_epi32(isum[t], _mm512_slli_epi32(o, 5));
        const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(xb->d));
        acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(tot), acc[t]);
    }
}
#endif /* L3C_X86_PACKED_H */
