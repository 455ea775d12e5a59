/*
 * x86_avx2.c -- AVX2 + FMA + F16C kernels: activation quantizers (Q8_0, Q8_1, Q8_K), F16/BF16
 * to_float, and one "tile" kernel per weight type that serves both vec_dot and gemm.
 *
 * Tile kernels: tile_<type>(RW, RT, ...) computes the RW x RT dot products of RW weight rows with
 * RT activation rows in one pass over the blocks. RW and RT are compile-time constants after
 * inlining (always_inline + GCC unroll), so the accumulators live in registers. vec_dot is the
 * 1 x 1 tile; gemm walks the output in tiles of 2 weight rows x 4 tokens for the K-quants (one
 * accumulator per pair) and 2 x 2 for the float and 32-element block types (two accumulator
 * chains per pair: 8 accumulators + operands fit the 16 ymm registers), and finishes ragged
 * edges with vec_dot.
 *
 * Batch invariance: every tile computes each pair in the canonical order of the 1 x 1 tile (same
 * chains, same FMAs, same final reduction), so gemm == vec_dot bit for bit (x86_common.h).
 * Exactness: integer block sums are exact (see x86_common.h on maddubs); only the order of the
 * float accumulation differs from ref.c. The quantizers reproduce ref.c bit for bit (same scale
 * arithmetic, roundf for Q8_0/Q8_1, round-half-even for Q8_K).
 */
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include "kernels/x86_common.h"

#define GEMM_RW 2
#define GEMM_RT 4
#define MAXR 4 /* array bounds for the tile accumulators */
#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* ---------------------------------------------------------------- activation quantizers */

static void from_float_q8_0(const float *src, void *dst, int64_t n) {
    l3c_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        b[i].d = _cvtss_sh(x86_quant_q8_block(src + i * 32, b[i].qs, NULL), 0);
}

static void from_float_q8_1(const float *src, void *dst, int64_t n) {
    l3c_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        int sum;
        float d = x86_quant_q8_block(src + i * 32, b[i].qs, &sum);
        b[i].d = _cvtss_sh(d, 0);
        b[i].s = _cvtss_sh((float)sum * d, 0);
    }
}

/* ggml quantize_row_q8_K: the first element of largest magnitude maps to -127 */
static void from_float_q8_K(const float *src, void *dst, int64_t n) {
    l3c_block_q8_K *b = dst;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int64_t i = 0; i < n / 256; i++) {
        const float *x = src + i * 256;
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 256; j += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + j), absmask));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        int first = 0;
        __m256 va = _mm256_set1_ps(amax);
        for (int j = 0; j < 256; j += 8) {
            int mask = _mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), absmask), va, _CMP_EQ_OQ));
            if (mask) {
                first = j + __builtin_ctz((unsigned)mask);
                break;
            }
        }
        float iscale = -127.0f / x[first];
        __m256 vs = _mm256_set1_ps(iscale);
        for (int j = 0; j < 256; j += 32) {
            /* cvtps rounds half to even (MXCSR default), like lrintf; packs saturate at 127 */
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * k)));
            __m256i v = x86_pack_i32_to_i8(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256((__m256i *)(b[i].qs + j), v);
            /* group sums: sad of (q + 128) over 8 bytes, two per group of 16 */
            __m256i s = _mm256_sad_epu8(_mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)),
                                        _mm256_setzero_si256());
            int64_t s64[4];
            _mm256_storeu_si256((__m256i *)s64, s);
            b[i].bsums[j / 16] = (int16_t)(s64[0] + s64[1] - 16 * 128);
            b[i].bsums[j / 16 + 1] = (int16_t)(s64[2] + s64[3] - 16 * 128);
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---------------------------------------------------------------- float rows */

static void to_float_f16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) dst[i] = x86_fp16(h[i]);
}

static void from_float_f16(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), 0));
    for (; i < n; i++) h[i] = l3c_fp32_to_fp16(src[i]);
}

static inline __m256 load_bf16x8(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static void to_float_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_bf16x8(h + i));
    for (; i < n; i++) dst[i] = l3c_bf16_to_fp32(h[i]);
}

INLINE __m256 load_w8(int kind, const void *w, int64_t i) {
    if (kind == K_F32) return _mm256_loadu_ps((const float *)w + i);
    if (kind == K_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return load_bf16x8((const uint16_t *)w + i);
}

/* U independent accumulators per output hide the FMA latency of the 1 x 1 tile */
INLINE void tile_float(int kind, int RW, int RT, int64_t n, const char *w, size_t ws,
                       const char *x, size_t xs, float *y, int64_t ldy) {
    /* canonical order (every tile shape): U chains over interleaved 8-element groups, a
     * ragged group into chain 0, chains summed in order, one horizontal sum, scalar tail */
    enum { U = 2 };
    const int u = U;
    __m256 acc[U][MAXR][MAXR];
    UNROLL for (int k = 0; k < u; k++) UNROLL for (int r = 0; r < RW; r++)
        UNROLL for (int t = 0; t < RT; t++) acc[k][r][t] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 * u <= n; i += 8 * u) {
        UNROLL for (int k = 0; k < u; k++) {
            __m256 wv[MAXR];
            UNROLL for (int r = 0; r < RW; r++) wv[r] = load_w8(kind, w + r * ws, i + 8 * k);
            UNROLL for (int t = 0; t < RT; t++) {
                __m256 xv = _mm256_loadu_ps((const float *)(x + t * xs) + i + 8 * k);
                UNROLL for (int r = 0; r < RW; r++) acc[k][r][t] = _mm256_fmadd_ps(wv[r], xv, acc[k][r][t]);
            }
        }
    }
    for (; i + 8 <= n; i += 8) {
        __m256 wv[MAXR];
        UNROLL for (int r = 0; r < RW; r++) wv[r] = load_w8(kind, w + r * ws, i);
        UNROLL for (int t = 0; t < RT; t++) {
            __m256 xv = _mm256_loadu_ps((const float *)(x + t * xs) + i);
            UNROLL for (int r = 0; r < RW; r++) acc[0][r][t] = _mm256_fmadd_ps(wv[r], xv, acc[0][r][t]);
        }
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        __m256 s = acc[0][r][t];
        UNROLL for (int k = 1; k < u; k++) s = _mm256_add_ps(s, acc[k][r][t]);
        float sum = x86_hsum_ps(s);
        for (int64_t j = i; j < n; j++)
            sum += x86_scalar_w(kind, w + r * ws, j) * ((const float *)(x + t * xs))[j];
        y[t * ldy + r] = sum;
    }
}

/* ---------------------------------------------------------------- 32-element blocks */

/*
 * Q4_0 / Q5_0 (offset 8 / 16) and Q4_1 / Q5_1 (offset 0, plus m * s): weights unpacked to
 * unsigned bytes u in [0, 31]; sum (u - off) x = maddubs(u, x) - maddubs(off, x), the second
 * term computed once per activation block.
 */
INLINE void tile_b32(int kind, int RW, int RT, int64_t n, const char *w, size_t ws, const char *x,
                     size_t xs, float *y, int64_t ldy) {
    const bool has_min = kind == B_Q4_1 || kind == B_Q5_1;
    const int off = kind == B_Q4_0 ? 8 : kind == B_Q5_0 ? 16 : 0;
    const size_t wbs = x86_b32_size[kind], xbs = has_min ? sizeof(l3c_block_q8_1) : sizeof(l3c_block_q8_0);
    const size_t xq_off = has_min ? offsetof(l3c_block_q8_1, qs) : offsetof(l3c_block_q8_0, qs);
    const __m256i ones = _mm256_set1_epi16(1), voff = _mm256_set1_epi8((char)off);
    /* canonical order (every tile shape): block b accumulates into chain b & 1 (one FMA of
     * d_w * d_x by the exact integer dot), chains summed, one horizontal sum at the end */
    const int U = 2;
    __m256 acc[2][MAXR][MAXR];
    float macc[2][MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        acc[0][r][t] = acc[1][r][t] = _mm256_setzero_ps();
        macc[0][r][t] = macc[1][r][t] = 0.0f;
    }
    for (int64_t b0 = 0; b0 < n / 32; b0 += U) UNROLL for (int u = 0; u < U; u++) {
        const int64_t b = b0 + u;
        if (b >= n / 32) break;
        __m256i wq[MAXR];
        __m256 dw[MAXR];
        float mw[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            const char *blk = w + r * ws + b * wbs;
            wq[r] = x86_unpack_b32(kind, blk);
            dw[r] = _mm256_set1_ps(x86_fp16(*(const uint16_t *)blk));
            mw[r] = has_min ? x86_fp16(((const uint16_t *)blk)[1]) : 0.0f;
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const char *xb = x + t * xs + b * xbs;
            __m256i xq = _mm256_loadu_si256((const __m256i *)(xb + xq_off));
            __m256 dx = _mm256_set1_ps(x86_fp16(*(const uint16_t *)xb));
            __m256i xo = off ? _mm256_maddubs_epi16(voff, xq) : _mm256_setzero_si256();
            float sx = has_min ? x86_fp16(((const uint16_t *)xb)[1]) : 0.0f;
            UNROLL for (int r = 0; r < RW; r++) {
                __m256i p = _mm256_maddubs_epi16(wq[r], xq);
                if (off) p = _mm256_sub_epi16(p, xo);
                __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                acc[u][r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), f, acc[u][r][t]);
                if (has_min) macc[u][r][t] += mw[r] * sx;
            }
        }
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(_mm256_add_ps(acc[0][r][t], acc[1][r][t])) + (macc[0][r][t] + macc[1][r][t]);
}

/* Q8_0 x Q8_0: signed x signed via the sign trick (|w| once per row, sign(x, w) per pair) */
INLINE void tile_q8_0(int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                      float *y, int64_t ldy) {
    const __m256i ones = _mm256_set1_epi16(1);
    /* canonical order (every tile shape): block b accumulates into chain b & 1 (one FMA of
     * d_w * d_x by the exact integer dot), chains summed, one horizontal sum at the end */
    const int U = 2;
    __m256 acc[2][MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) acc[0][r][t] = acc[1][r][t] = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < n / 32; b0 += U) UNROLL for (int u = 0; u < U; u++) {
        const int64_t b = b0 + u;
        if (b >= n / 32) break;
        __m256i wq[MAXR], wa[MAXR];
        __m256 dw[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            const l3c_block_q8_0 *blk = (const l3c_block_q8_0 *)(w + r * ws) + b;
            wq[r] = _mm256_loadu_si256((const __m256i *)blk->qs);
            wa[r] = _mm256_sign_epi8(wq[r], wq[r]);
            dw[r] = _mm256_set1_ps(x86_fp16(blk->d));
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_0 *xb = (const l3c_block_q8_0 *)(x + t * xs) + b;
            __m256i xq = _mm256_loadu_si256((const __m256i *)xb->qs);
            __m256 dx = _mm256_set1_ps(x86_fp16(xb->d));
            UNROLL for (int r = 0; r < RW; r++) {
                __m256i p = _mm256_maddubs_epi16(wa[r], _mm256_sign_epi8(xq, wq[r]));
                __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                acc[u][r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), f, acc[u][r][t]);
            }
        }
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(_mm256_add_ps(acc[0][r][t], acc[1][r][t]));
}

/* ---------------------------------------------------------------- K-quants x Q8_K */

/*
 * Q4_K / Q5_K: per 64-element chunk j, the low nibbles of qs[32j..] are sub-block 2j and the
 * high nibbles sub-block 2j+1 (Q5_K: 5th bit = bit s of qh[l]). The integer sum is
 * sum_s sc[s] * dot_s via maddubs then madd with the broadcast scale; the min term
 * sum_s mn[s] * (bsum[2s] + bsum[2s+1]) via one madd.
 */
INLINE void tile_q45_K(bool five, int RW, int RT, int64_t n, const char *w, size_t ws, const char *x,
                       size_t xs, float *y, int64_t ldy) {
    const size_t wbs = five ? sizeof(l3c_block_q5_K) : sizeof(l3c_block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[MAXR][MAXR];
    float macc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        acc[r][t] = _mm256_setzero_ps();
        macc[r][t] = 0.0f;
    }
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *qs[MAXR], *qh[MAXR];
        __m256i sc[MAXR];
        __m128i mn[MAXR];
        float dw[MAXR], dmw[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            const char *blk = w + r * ws + b * wbs;
            const uint16_t *dd = (const uint16_t *)blk; /* d, dmin lead both structs */
            const uint8_t *scales = five ? ((const l3c_block_q5_K *)blk)->scales
                                         : ((const l3c_block_q4_K *)blk)->scales;
            qs[r] = five ? ((const l3c_block_q5_K *)blk)->qs : ((const l3c_block_q4_K *)blk)->qs;
            qh[r] = five ? ((const l3c_block_q5_K *)blk)->qh : NULL;
            uint32_t u[4];
            x86_k4_scales(scales, u);
            __m256i s16 = _mm256_cvtepu8_epi16(_mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]));
            sc[r] = _mm256_permute4x64_epi64(s16, 0x44);
            mn[r] = _mm256_extracti128_si256(s16, 1);
            dw[r] = x86_fp16(dd[0]);
            dmw[r] = x86_fp16(dd[1]);
        }
        __m256i isum[MAXR][MAXR];
        float dx[MAXR];
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
            dx[t] = xb->d;
            __m128i q8s = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xb->bsums),
                                         _mm_loadu_si128((const __m128i *)(xb->bsums + 8)));
            UNROLL for (int r = 0; r < RW; r++) {
                __m128i pm = _mm_madd_epi16(mn[r], q8s);
                pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, _MM_SHUFFLE(1, 0, 3, 2)));
                pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, _MM_SHUFFLE(2, 3, 0, 1)));
                macc[r][t] += dx[t] * dmw[r] * (float)_mm_cvtsi128_si32(pm);
                isum[r][t] = _mm256_setzero_si256();
            }
        }
        UNROLL for (int j = 0; j < 4; j++) {
            __m256i lo[MAXR], hi[MAXR], sl[MAXR], sh[MAXR];
            UNROLL for (int r = 0; r < RW; r++) {
                __m256i bits = _mm256_loadu_si256((const __m256i *)(qs[r] + 32 * j));
                lo[r] = _mm256_and_si256(bits, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                if (five) {
                    __m256i h = _mm256_loadu_si256((const __m256i *)qh[r]);
                    const __m256i one = _mm256_set1_epi8(1);
                    lo[r] = _mm256_or_si256(lo[r], _mm256_slli_epi16(
                        _mm256_and_si256(_mm256_srli_epi16(h, 2 * j), one), 4));
                    hi[r] = _mm256_or_si256(hi[r], _mm256_slli_epi16(
                        _mm256_and_si256(_mm256_srli_epi16(h, 2 * j + 1), one), 4));
                }
                sl[r] = _mm256_shuffle_epi8(sc[r], x86_bcast16_mask(2 * j, 2 * j));
                sh[r] = _mm256_shuffle_epi8(sc[r], x86_bcast16_mask(2 * j + 1, 2 * j + 1));
            }
            UNROLL for (int t = 0; t < RT; t++) {
                const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 64 * j;
                __m256i xl = _mm256_loadu_si256((const __m256i *)xq);
                __m256i xh = _mm256_loadu_si256((const __m256i *)(xq + 32));
                UNROLL for (int r = 0; r < RW; r++) {
                    __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], xl), sl[r]);
                    __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], xh), sh[r]);
                    isum[r][t] = _mm256_add_epi32(isum[r][t], _mm256_add_epi32(pl, ph));
                }
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r] * dx[t]), _mm256_cvtepi32_ps(isum[r][t]), acc[r][t]);
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(acc[r][t]) - macc[r][t];
}

/*
 * Q6_K: per 128-element half c, four 32-element chunks (ql low/high nibbles of two 32-byte rows,
 * 2 bits each from qh), unsigned q in [0, 63]; sub-blocks of 16 take int8 scales. The -32 offset
 * is folded in once per block as -32 * sum_s sc[s] * bsum[s].
 */
INLINE void tile_q6_K(int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                      float *y, int64_t ldy) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    __m256 acc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++) {
        const l3c_block_q6_K *wb[MAXR];
        float dw[MAXR];
        __m256i isum[MAXR][MAXR];
        float dx[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            wb[r] = (const l3c_block_q6_K *)(w + r * ws) + b;
            dw[r] = x86_fp16(wb[r]->d);
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
            dx[t] = xb->d;
            __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            UNROLL for (int r = 0; r < RW; r++) {
                __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wb[r]->scales));
                isum[r][t] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                              _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5));
            }
        }
        UNROLL for (int c = 0; c < 2; c++) {
            __m256i q[MAXR][4], sc[MAXR];
            UNROLL for (int r = 0; r < RW; r++) {
                const uint8_t *ql = wb[r]->ql + 64 * c, *qh = wb[r]->qh + 32 * c;
                __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
                __m256i h = _mm256_loadu_si256((const __m256i *)qh);
                q[r][0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m2), 4));
                q[r][1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4));
                q[r][2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4));
                q[r][3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4));
                sc[r] = _mm256_broadcastsi128_si256(
                    _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(wb[r]->scales + 8 * c))));
            }
            UNROLL for (int k = 0; k < 4; k++) {
                __m256i scv[MAXR];
                UNROLL for (int r = 0; r < RW; r++) scv[r] = _mm256_shuffle_epi8(sc[r], x86_bcast16_mask(2 * k, 2 * k + 1));
                UNROLL for (int t = 0; t < RT; t++) {
                    const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 128 * c + 32 * k;
                    __m256i xv = _mm256_loadu_si256((const __m256i *)xq);
                    UNROLL for (int r = 0; r < RW; r++)
                        isum[r][t] = _mm256_add_epi32(isum[r][t],
                            _mm256_madd_epi16(_mm256_maddubs_epi16(q[r][k], xv), scv[r]));
                }
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r] * dx[t]), _mm256_cvtepi32_ps(isum[r][t]), acc[r][t]);
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(acc[r][t]);
}

/* 64-bit lanes 2h, 2h + 1 of v (the int16 scales of half h) in both 128-bit halves; both
 * immediates constant so that builds without unrolling (-O1) compile */
INLINE __m256i bcast_half(__m256i v, int h) {
    return h ? _mm256_permute4x64_epi64(v, 0xEE) : _mm256_permute4x64_epi64(v, 0x44);
}

/* bit k (0..7) of each byte of h, moved to bit 2 */
INLINE __m256i q3_K_hbit(__m256i h, int k) {
    const __m256i m = _mm256_set1_epi8(0x04);
    if (k < 2) return _mm256_and_si256(_mm256_slli_epi16(h, 2 - k), m);
    return _mm256_and_si256(_mm256_srli_epi16(h, k - 2), m);
}

/*
 * Q2_K / Q3_K: per 128-element half c, the 32 bytes qs[32c..] hold 2-bit fields j = 0..3, each
 * the 32-element chunk 128c + 32j (low 16 bytes: sub-block 8c + 2j, high: 8c + 2j + 1), so one
 * load serves four chunks. Sub-blocks of 16 take 16-bit scales broadcast per 128-bit lane.
 * Q2_K: q in [0, 3], scales and mins are nibbles; the min term -dmin * sum_s mn[s] * bsum[s]
 * is one madd per block, fused into the same float accumulator.
 * Q3_K: q + 4 = lo | hbit << 2 in [0, 7] (unsigned for maddubs); the -4 is folded in once per
 * block as -4 * sum_s sc[s] * bsum[s], as Q6_K does with its -32.
 */

INLINE void tile_q23_K(bool three, int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                       float *y, int64_t ldy) {
    const size_t wbs = three ? sizeof(l3c_block_q3_K) : sizeof(l3c_block_q2_K);
    const __m256i m2 = _mm256_set1_epi8(0x03), m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *qs[MAXR];
        __m256i sc[MAXR], mn[MAXR], hm[MAXR], isum[MAXR][MAXR];
        float dw[MAXR], dmw[MAXR], dx[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            const char *blk = w + r * ws + b * wbs;
            if (three) {
                const l3c_block_q3_K *q3 = (const l3c_block_q3_K *)blk;
                qs[r] = q3->qs;
                dw[r] = x86_fp16(q3->d);
                sc[r] = q3_K_scales(q3->scales);
                hm[r] = _mm256_loadu_si256((const __m256i *)q3->hmask);
            } else {
                const l3c_block_q2_K *q2 = (const l3c_block_q2_K *)blk;
                qs[r] = q2->qs;
                dw[r] = x86_fp16(q2->d);
                dmw[r] = x86_fp16(q2->dmin);
                __m128i s8 = _mm_loadu_si128((const __m128i *)q2->scales);
                sc[r] = _mm256_cvtepu8_epi16(_mm_and_si128(s8, _mm256_castsi256_si128(m4)));
                mn[r] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), _mm256_castsi256_si128(m4)));
            }
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
            dx[t] = xb->d;
            __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            /* Q3_K: -4 * bsum fits int16 (|bsum| <= 16 * 128) */
            if (three) bs = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(bs, 2));
            UNROLL for (int r = 0; r < RW; r++) {
                if (three) {
                    isum[r][t] = _mm256_madd_epi16(sc[r], bs);
                } else {
                    __m256 m = _mm256_cvtepi32_ps(_mm256_madd_epi16(mn[r], bs));
                    acc[r][t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmw[r] * dx[t]), m, acc[r][t]);
                    isum[r][t] = _mm256_setzero_si256();
                }
            }
        }
        UNROLL for (int c = 0; c < 2; c++) {
            __m256i bits[MAXR], scc[MAXR];
            UNROLL for (int r = 0; r < RW; r++) {
                bits[r] = _mm256_loadu_si256((const __m256i *)(qs[r] + 32 * c));
                scc[r] = bcast_half(sc[r], c);
            }
            UNROLL for (int j = 0; j < 4; j++) {
                __m256i q[MAXR], scv[MAXR];
                UNROLL for (int r = 0; r < RW; r++) {
                    q[r] = _mm256_and_si256(_mm256_srli_epi16(bits[r], 2 * j), m2);
                    if (three) q[r] = _mm256_or_si256(q[r], q3_K_hbit(hm[r], 4 * c + j));
                    scv[r] = _mm256_shuffle_epi8(scc[r], x86_bcast16_mask(2 * j, 2 * j + 1));
                }
                UNROLL for (int t = 0; t < RT; t++) {
                    const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 128 * c + 32 * j;
                    __m256i xv = _mm256_loadu_si256((const __m256i *)xq);
                    UNROLL for (int r = 0; r < RW; r++)
                        isum[r][t] = _mm256_add_epi32(isum[r][t],
                            _mm256_madd_epi16(_mm256_maddubs_epi16(q[r], xv), scv[r]));
                }
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r] * dx[t]), _mm256_cvtepi32_ps(isum[r][t]), acc[r][t]);
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(acc[r][t]);
}

/* ---------------------------------------------------------------- vec_dot + gemm per type */

#define T_F32(RW, RT, ...) tile_float(K_F32, RW, RT, __VA_ARGS__)
#define T_F16(RW, RT, ...) tile_float(K_F16, RW, RT, __VA_ARGS__)
#define T_BF16(RW, RT, ...) tile_float(K_BF16, RW, RT, __VA_ARGS__)
#define T_Q4_0(RW, RT, ...) tile_b32(B_Q4_0, RW, RT, __VA_ARGS__)
#define T_Q4_1(RW, RT, ...) tile_b32(B_Q4_1, RW, RT, __VA_ARGS__)
#define T_Q5_0(RW, RT, ...) tile_b32(B_Q5_0, RW, RT, __VA_ARGS__)
#define T_Q5_1(RW, RT, ...) tile_b32(B_Q5_1, RW, RT, __VA_ARGS__)
#define T_Q8_0(RW, RT, ...) tile_q8_0(RW, RT, __VA_ARGS__)
#define T_Q2_K(RW, RT, ...) tile_q23_K(false, RW, RT, __VA_ARGS__)
#define T_Q3_K(RW, RT, ...) tile_q23_K(true, RW, RT, __VA_ARGS__)
#define T_Q4_K(RW, RT, ...) tile_q45_K(false, RW, RT, __VA_ARGS__)
#define T_Q5_K(RW, RT, ...) tile_q45_K(true, RW, RT, __VA_ARGS__)
#define T_Q6_K(RW, RT, ...) tile_q6_K(RW, RT, __VA_ARGS__)

X86_DEFINE_KERNELS_T(f32, T_F32, 2, 2)
X86_DEFINE_KERNELS_T(f16, T_F16, 2, 2)
X86_DEFINE_KERNELS_T(bf16, T_BF16, 2, 2)
X86_DEFINE_KERNELS_T(q4_0, T_Q4_0, 2, 2)
X86_DEFINE_KERNELS_T(q4_1, T_Q4_1, 2, 2)
X86_DEFINE_KERNELS_T(q5_0, T_Q5_0, 2, 2)
X86_DEFINE_KERNELS_T(q5_1, T_Q5_1, 2, 2)
X86_DEFINE_KERNELS_T(q8_0, T_Q8_0, 2, 2)
X86_DEFINE_KERNELS(q2_K, T_Q2_K)
X86_DEFINE_KERNELS(q3_K, T_Q3_K)
X86_DEFINE_KERNELS(q4_K, T_Q4_K)
X86_DEFINE_KERNELS(q5_K, T_Q5_K)
X86_DEFINE_KERNELS(q6_K, T_Q6_K)

#define SET_DOT(id, name)                    \
    do {                                     \
        table[id].vec_dot = vec_dot_##name;  \
        table[id].gemm = gemm_##name;        \
    } while (0)

bool l3c_kernels_override_avx2(l3c_type_traits *table) {
    if (!table) return true; /* built: the path exists */
    table[L3C_TYPE_Q8_0].from_float = from_float_q8_0;
    table[L3C_TYPE_Q8_1].from_float = from_float_q8_1;
    table[L3C_TYPE_Q8_K].from_float = from_float_q8_K;
    table[L3C_TYPE_F16].to_float = to_float_f16;
    table[L3C_TYPE_F16].from_float = from_float_f16;
    table[L3C_TYPE_BF16].to_float = to_float_bf16;
    SET_DOT(L3C_TYPE_F32, f32);
    SET_DOT(L3C_TYPE_F16, f16);
    /* BF16: no gemm here, GCC spills an accumulator of the 2 x 4 tile and the vec_dot loop is
     * faster (bench_kernels); the AVX-512 path has one */
    table[L3C_TYPE_BF16].vec_dot = vec_dot_bf16;
    SET_DOT(L3C_TYPE_Q4_0, q4_0);
    SET_DOT(L3C_TYPE_Q4_1, q4_1);
    SET_DOT(L3C_TYPE_Q5_0, q5_0);
    SET_DOT(L3C_TYPE_Q5_1, q5_1);
    SET_DOT(L3C_TYPE_Q8_0, q8_0);
    SET_DOT(L3C_TYPE_Q2_K, q2_K);
    SET_DOT(L3C_TYPE_Q3_K, q3_K);
    SET_DOT(L3C_TYPE_Q4_K, q4_K);
    SET_DOT(L3C_TYPE_Q5_K, q5_K);
    SET_DOT(L3C_TYPE_Q6_K, q6_K);
    return true;
}

#else
/* Compiled without the ISA flags (or not x86-64): an empty hook, so the strong reference in
 * dispatch.c links; the table stays as it was. */
#include "kernels/types.h"
bool l3c_kernels_override_avx2(l3c_type_traits *table) { (void)table; return false; }
#endif
