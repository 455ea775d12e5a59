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

/* a zero vector by the xor idiom, which the renamer resolves without an execution port (GCC
 * keeps one zero register and copies it with vmovdqa64, a port uop per dot chain otherwise) */
INLINE __m512i zero_si512(void) {
    __m512i z;
    __asm__ volatile("vpxord %0, %0, %0" : "=v"(z));
    return z;
}

/* ---- packed Q3_K (the layout: x86_avx512.c, "packed Q3_K") */

/* byte offset of chunk k (0..2) of the triple at column c (0..1) of round rho (0..3) */
#define Q3_CHUNK(rho, c, k) (224 + 384 * (rho) + 192 * (c) + 64 * (k))

/* the 16 scales as int8 bytes 4 s (s = 6-bit scale - 32): D[k] byte i of lane r = 4 s_{4k +
 * (0, 2, 1, 3)[i]} of row r. D[0..2] are the scale chunks' top 6 bits; D[3] is gathered from
 * their bits 0..1 (to bits 2..3, 4..5, 6..7). */
INLINE void q3_scales(const char *g, __m512i D[4]) {
    const __m512i mfc = _mm512_set1_epi8((char)0xFC), m0c = _mm512_set1_epi8(0x0C), m30 = _mm512_set1_epi8(0x30);
    const __m512i y0 = _mm512_loadu_si512(g + 32), y1 = _mm512_loadu_si512(g + 96), y2 = _mm512_loadu_si512(g + 160);
    D[0] = _mm512_and_si512(y0, mfc);
    D[1] = _mm512_and_si512(y1, mfc);
    D[2] = _mm512_and_si512(y2, mfc);
    /* 16-bit shifts left: the bits kept (>= the shift count in each byte) come from the same
     * byte; 0xE4: c ? a : b */
    const __m512i t = _mm512_ternarylogic_epi32(_mm512_slli_epi16(y1, 4), _mm512_slli_epi16(y2, 6), m30, 0xE4);
    D[3] = _mm512_and_si512(_mm512_ternarylogic_epi32(_mm512_slli_epi16(y0, 2), t, m0c, 0xE4), mfc);
}

/* scale of group u (0..3) of a round from its D vector, as int32 lanes: 8 s for u even (whose
 * quants unpack as 4 x), s for u odd (32 x). Byte p = (0, 2, 1, 3)[u] of each lane moved to the
 * top, then vpsrad 23 or 26; 8 s needs zeros below (bit 23): a shift left for p = 0, a vpshufb
 * for p = 1; bits 26..31 are the top byte's alone for u odd. */
INLINE __m512i q3_scale(__m512i d, int u) {
    if (u == 0) return _mm512_srai_epi32(_mm512_slli_epi32(d, 24), 23);
    if (u == 1) return _mm512_srai_epi32(_mm512_slli_epi32(d, 8), 26);
    if (u == 3) return _mm512_srai_epi32(d, 26);
    const __m512i at1 = _mm512_set_epi32(0x0D808080, 0x09808080, 0x05808080, 0x01808080, 0x0D808080, 0x09808080,
                                         0x05808080, 0x01808080, 0x0D808080, 0x09808080, 0x05808080, 0x01808080,
                                         0x0D808080, 0x09808080, 0x05808080, 0x01808080);
    return _mm512_srai_epi32(_mm512_shuffle_epi8(d, at1), 23);
}

/*
 * The 8 quant chunks of a triple X0, X1, X2 at p (lane r byte i of each: two 3-bit values in
 * bits 2..4 and 5..7, and two bits of the values G, H), as unsigned bytes times 4 (u even) or
 * 32 (u odd): q[2 u + s] = slot s of group u. G = X0 bits 0..1 | X1 bit 0 << 2; H = X1 bit 1 |
 * X2 bits 0..1 << 1. 13 instructions for 8 chunks.
 */
INLINE void q3_quants(const char *p, __m512i q[8]) {
    const __m512i m1c = _mm512_set1_epi8(0x1C), me0 = _mm512_set1_epi8((char)0xE0);
    const __m512i m0c = _mm512_set1_epi8(0x0C), m20 = _mm512_set1_epi8(0x20);
    __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64), x2 = _mm512_loadu_si512(p + 128);
    __asm__("" : "+v"(x0), "+v"(x1), "+v"(x2)); /* one load per chunk, not one folded into each use */
    q[0] = _mm512_and_si512(x0, m1c); /* A */
    q[2] = _mm512_and_si512(x0, me0); /* B */
    q[1] = _mm512_and_si512(x1, m1c); /* C */
    q[3] = _mm512_and_si512(x1, me0); /* D */
    q[4] = _mm512_and_si512(x2, m1c); /* E */
    q[6] = _mm512_and_si512(x2, me0); /* F */
    /* 16-bit shifts left: the bits kept come from the same byte; 0xE4: c ? a : b */
    const __m512i s1 = _mm512_slli_epi16(x1, 4);
    q[5] = _mm512_and_si512(_mm512_ternarylogic_epi32(_mm512_slli_epi16(x0, 2), s1, m0c, 0xE4), m1c); /* G */
    q[7] = _mm512_and_si512(_mm512_ternarylogic_epi32(s1, _mm512_slli_epi16(x2, 6), m20, 0xE4), me0); /* H */
}

/* the half h (0: groups 0, 1; 1: groups 2, 3) of the triple x0, x1, x2 as v (0..7): q[2 (u -
 * 2 h) + s] = slot s of group u (16-bit shifts then AND: the bits kept come from the same byte) */
INLINE void q3_quants_v(__m512i x0, __m512i x1, __m512i x2, int h, __m512i q[4]) {
    const __m512i m7 = _mm512_set1_epi8(7);
    if (h == 0) {
        q[0] = _mm512_and_si512(_mm512_srli_epi16(x0, 2), m7); /* A */
        q[1] = _mm512_and_si512(_mm512_srli_epi16(x1, 2), m7); /* C */
        q[2] = _mm512_and_si512(_mm512_srli_epi16(x0, 5), m7); /* B */
        q[3] = _mm512_and_si512(_mm512_srli_epi16(x1, 5), m7); /* D */
        return;
    }
    q[0] = _mm512_and_si512(_mm512_srli_epi16(x2, 2), m7); /* E */
    q[2] = _mm512_and_si512(_mm512_srli_epi16(x2, 5), m7); /* F */
    /* 0xE4: c ? a : b */
    q[1] = _mm512_and_si512(_mm512_ternarylogic_epi32(x0, _mm512_slli_epi16(x1, 2), _mm512_set1_epi8(3), 0xE4),
                            m7); /* G */
    q[3] = _mm512_and_si512(_mm512_ternarylogic_epi32(_mm512_srli_epi16(x1, 1), _mm512_slli_epi16(x2, 1),
                                                      _mm512_set1_epi8(1), 0xE4), m7); /* H */
}

/* the first n (2, 3) chunks of the triple at p, each loaded once (not folded into each use) */
INLINE void q3_load(const char *p, int n, __m512i x[3]) {
    x[0] = _mm512_loadu_si512(p), x[1] = _mm512_loadu_si512(p + 64);
    x[2] = n == 3 ? _mm512_loadu_si512(p + 128) : _mm512_setzero_si512();
    __asm__("" : "+v"(x[0]), "+v"(x[1]));
    if (n == 3) __asm__("" : "+v"(x[2]));
}

/* the int16 pairs (4 s_2p, 4 s_2p+1) of every row for the Q8_K group-sum pair p (0..7) */
INLINE __m512i q3_pair(const __m512i D[4], int p) {
    return p % 2 ? _mm512_srai_epi16(D[p / 2], 8) : _mm512_srai_epi16(_mm512_slli_epi16(D[p / 2], 8), 8);
}

/* the end of a super-block, the same per lane for every tile shape, from the exact integer dot
 * tot[t] = sum_g s_g (dot of group g's q) of each row: acc = fma(d * dx, (float)tot, acc) */
INLINE void q3_acc(int RT, const char *g, const char *x, size_t xs, int64_t b, const __m512i tot[], __m512 acc[]) {
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    UNROLL for (int t = 0; t < RT; t++) {
        const float dx = ((const l3c_block_q8_K *)(x + t * xs) + b)->d;
        acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(dx)), _mm512_cvtepi32_ps(tot[t]), acc[t]);
    }
}

/* q3_acc from isum32 = 32 x the dot of the unsigned quants (q + 4): the -4 offset from the Q8_K
 * group sums, tot = isum32 / 32 - sum_g 4 s_g bsum_g */
INLINE void q3_finish(int RT, const char *g, const char *x, size_t xs, int64_t b, const __m512i isum[],
                      __m512 acc[]) {
    __m512i D[4], pairs[8], tot[PK_RT];
    q3_scales(g, D);
    UNROLL for (int p = 0; p < 8; p++) pairs[p] = q3_pair(D, p);
    UNROLL for (int t = 0; t < RT; t++) {
        const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
        __m512i o = _mm512_setzero_si512();
        UNROLL for (int p = 0; p < 8; p++) o = dpwssd_b(o, pairs[p], xb->bsums + 2 * p);
        tot[t] = _mm512_sub_epi32(_mm512_srai_epi32(isum[t], 5), o);
    }
    q3_acc(RT, g, x, xs, b, tot, acc);
}
/* ---- end of packed Q3_K */

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

/* one token's part of q4k_finish (mnp: the min pairs, dw / dmw: the rows' d and dmin as float) */
INLINE __m512 q4k_finish1(const __m512i mnp[8], __m512 dw, __m512 dmw, const l3c_block_q8_K *xb,
                          __m512i isum, __m512 acc) {
    __m512i m = _mm512_setzero_si512();
    UNROLL for (int s = 0; s < 8; s++) m = dpwssd_b(m, mnp[s], xb->bsums + 2 * s);
    const __m512 dx = _mm512_set1_ps(xb->d);
    acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum), acc);
    return _mm512_fnmadd_ps(_mm512_mul_ps(dmw, dx), _mm512_cvtepi32_ps(m), acc);
}

/* the end of a super-block, the same per lane for every tile shape: the mins from the Q8_K group
 * sums, then acc = fma(d * dx, (float)isum, acc); acc = fnmadd(dmin * dx, (float)msum, acc) */
INLINE void q4k_finish(int RT, const char *g, const __m512i u[4], const char *x, size_t xs, int64_t b,
                       const __m512i isum[], __m512 acc[]) {
    __m512i mnp[8];
    UNROLL for (int s = 0; s < 8; s++) mnp[s] = q4k_byte2(u, 8 + s);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    const __m512 dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32)));
    UNROLL for (int t = 0; t < RT; t++) acc[t] =
        q4k_finish1(mnp, dw, dmw, (const l3c_block_q8_K *)(x + t * xs) + b, isum[t], acc[t]);
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

/* the int16 scale pairs of a Q6_K group for q6_finish1 */
INLINE void q6_pairs(const char *g, __m512i pairs[8]) {
    UNROLL for (int k = 0; k < 4; k++) {
        const __m512i sv = _mm512_loadu_si512(g + 32 + 64 * k);
        pairs[2 * k] = _mm512_srai_epi16(_mm512_slli_epi16(sv, 8), 8);
        pairs[2 * k + 1] = _mm512_srai_epi16(sv, 8);
    }
}

/* one token's part of q6_finish (dw: the rows' d as float) */
INLINE __m512 q6_finish1(const __m512i pairs[8], __m512 dw, const l3c_block_q8_K *xb, __m512i isum,
                         __m512 acc) {
    __m512i o = _mm512_setzero_si512();
    UNROLL for (int p = 0; p < 8; p++) o = dpwssd_b(o, pairs[p], xb->bsums + 2 * p);
    const __m512i tot = _mm512_sub_epi32(isum, _mm512_slli_epi32(o, 5));
    const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(xb->d));
    return _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(tot), acc);
}

/* the end of a super-block, the same per lane for every tile shape: the -32 offset from the
 * Q8_K group sums, then acc = fma(d * dx, (float)(isum - 32 * osum), acc) */
INLINE void q6_finish(int RT, const char *g, const char *x, size_t xs, int64_t b,
                      const __m512i isum[], __m512 acc[]) {
    __m512i pairs[8];
    q6_pairs(g, pairs);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    UNROLL for (int t = 0; t < RT; t++) acc[t] =
        q6_finish1(pairs, dw, (const l3c_block_q8_K *)(x + t * xs) + b, isum[t], acc[t]);
}
/* packed Q5_K (the layout: x86_avx512.c, "packed Q5_K"): the chunks of pair j */
#define Q5_B(j, k) (256 + 640 * (j) + 64 * (k))
#define Q5_Y(j, c) (256 + 640 * (j) + 128 + 64 * (c))

/* b of column c (see the layout) from its Y chunk and B chunk (the 16-bit shifts keep bits 3..4
 * within their byte: bits 0..1 move up 3, bits 6..7 down 3) */
INLINE __m512i q5_high(__m512i y, __m512i bv, int c) {
    const __m512i m07 = _mm512_set1_epi8(0x07), m18 = _mm512_set1_epi8(0x18);
    const int sh = 3 - 2 * (c % 4);
    const __m512i t = sh > 0 ? _mm512_slli_epi16(bv, sh) : _mm512_srli_epi16(bv, -sh);
    return _mm512_ternarylogic_epi32(_mm512_and_si512(t, m18), y, m07, 0xF8); /* a | (b & c) */
}

#endif /* L3C_X86_PACKED_H */
