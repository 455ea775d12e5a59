/*
 * x86_avx512.c -- AVX-512 (F/BW/DQ/VL + VNNI) kernels, applied on top of the AVX2 table: entries
 * not set here stay AVX2. Same tile scheme as x86_avx2.c (one tile kernel per type serves vec_dot
 * as 1 x 1 and gemm), with GEMM_RW = 4 weight rows x GEMM_RT = 4 tokens for the float types (one
 * 512-bit accumulator chain per pair), Q4_0 / Q8_0 and the K-quants (the 32 vector registers
 * hold 16 accumulators plus the unpacked weights of 4 rows), and 2 x 4 for Q4_1 / Q5_0 / Q5_1
 * (two accumulator chains per pair). Every tile
 * computes each (row, token) pair exactly as the 1 x 1 tile does (batch invariance, see
 * x86_common.h); the Q4_0 / Q8_0 block-pair tiles match the 256-bit 1 x 1 kernel because their
 * low / high 256-bit halves are its even / odd block chains.
 *
 *  - Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0: 256-bit VNNI. _mm256_dpbusd_epi32 (u8 x s8, exact int32)
 *    on the unsigned unpacked weights; the offset (8, 16, or 128 for Q8_0 whose weights are
 *    biased to u8 by xor 0x80) is removed once per activation block as -off * sum(x), which is
 *    the accumulator the dpbusd starts from.
 *  - Q2_K / Q3_K / Q4_K / Q6_K: 512-bit, 64 elements per instruction: maddubs then
 *    _mm512_dpwssd_epi32 with the per-sub-block scales spread over the lanes by
 *    _mm512_permutexvar_epi16.
 *  - F32 / F16 / BF16: 512-bit FMA. BF16 weights are widened exactly (shift); _mm512_dpbf16_ps is
 *    not used because it would round the F32 activations to bf16 (~3 significant digits).
 *  - Q8_0 / Q8_K activation quantizers: 512-bit versions of the AVX2 ones, bit-exact with ref.c.
 */
#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512VNNI__) && defined(__FMA__) && defined(__F16C__)

#include "kernels/x86_common.h"
#include "kernels/x86_packed.h"

#define GEMM_RW 4
#define GEMM_RT 4
#define MAXR 4

/* ---------------------------------------------------------------- activation quantizers */

static inline __m512 round_away512(__m512 v) {
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m512 frac = _mm512_sub_ps(v, t);
    __mmask16 half = _mm512_cmp_ps_mask(_mm512_abs_ps(frac), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512 one = _mm512_or_ps(_mm512_set1_ps(1.0f), _mm512_and_ps(_mm512_set1_ps(-0.0f), v));
    return _mm512_mask_add_ps(t, half, t, one);
}

/* one block of 32 as ref.c's Q8_0: d = amax / 127, qs = roundf(x / d); returns d and sum(qs) */
INLINE float q8_block512(const float *x, int8_t *qs, int *sum) {
    __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m512 vid = _mm512_set1_ps(id);
    __m512i i0 = _mm512_cvtps_epi32(round_away512(_mm512_mul_ps(v0, vid)));
    __m512i i1 = _mm512_cvtps_epi32(round_away512(_mm512_mul_ps(v1, vid)));
    _mm_storeu_si128((__m128i *)qs, _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128((__m128i *)(qs + 16), _mm512_cvtsepi32_epi8(i1));
    if (sum) *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    return d;
}

static void from_float_q8_0(const float *src, void *dst, int64_t n) {
    l3c_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++) b[i].d = _cvtss_sh(q8_block512(src + i * 32, b[i].qs, NULL), 0);
}

static void from_float_q8_K(const float *src, void *dst, int64_t n) {
    l3c_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / 256; i++) {
        const float *x = src + i * 256;
        __m512 m = _mm512_setzero_ps();
        for (int j = 0; j < 256; j += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
        float amax = _mm512_reduce_max_ps(m);
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        int first = 0;
        for (int j = 0; j < 256; j += 16) {
            __mmask16 k = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + j)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (k) {
                first = j + __builtin_ctz((unsigned)k);
                break;
            }
        }
        float iscale = -127.0f / x[first];
        __m512 vs = _mm512_set1_ps(iscale);
        for (int j = 0; j < 256; j += 16) {
            /* round half to even (MXCSR default) like lrintf; saturation caps at 127 */
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(x + j)));
            _mm_storeu_si128((__m128i *)(b[i].qs + j), _mm512_cvtsepi32_epi8(q));
            b[i].bsums[j / 16] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---------------------------------------------------------------- float rows */

INLINE __m512 load_w16(int kind, const void *w, int64_t i) {
    if (kind == K_F32) return _mm512_loadu_ps((const float *)w + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    if (kind == K_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE void tile_float(int kind, int RW, int RT, int64_t n, const char *w, size_t ws,
                       const char *x, size_t xs, float *y, int64_t ldy) {
    /* canonical order (every tile shape): U chains over interleaved 16-element groups, a
     * ragged group into chain 0, chains summed in order, one horizontal sum, scalar tail */
    enum { U = 1 };
    const int u = U;
    __m512 acc[U][MAXR][MAXR];
    UNROLL for (int k = 0; k < u; k++) UNROLL for (int r = 0; r < RW; r++)
        UNROLL for (int t = 0; t < RT; t++) acc[k][r][t] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 * u <= n; i += 16 * u) {
        UNROLL for (int k = 0; k < u; k++) {
            __m512 wv[MAXR];
            UNROLL for (int r = 0; r < RW; r++) wv[r] = load_w16(kind, w + r * ws, i + 16 * k);
            UNROLL for (int t = 0; t < RT; t++) {
                __m512 xv = _mm512_loadu_ps((const float *)(x + t * xs) + i + 16 * k);
                UNROLL for (int r = 0; r < RW; r++) acc[k][r][t] = _mm512_fmadd_ps(wv[r], xv, acc[k][r][t]);
            }
        }
    }
    for (; i + 16 <= n; i += 16) {
        __m512 wv[MAXR];
        UNROLL for (int r = 0; r < RW; r++) wv[r] = load_w16(kind, w + r * ws, i);
        UNROLL for (int t = 0; t < RT; t++) {
            __m512 xv = _mm512_loadu_ps((const float *)(x + t * xs) + i);
            UNROLL for (int r = 0; r < RW; r++) acc[0][r][t] = _mm512_fmadd_ps(wv[r], xv, acc[0][r][t]);
        }
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        __m512 s = acc[0][r][t];
        UNROLL for (int k = 1; k < u; k++) s = _mm512_add_ps(s, acc[k][r][t]);
        float sum = _mm512_reduce_add_ps(s);
        for (int64_t j = i; j < n; j++)
            sum += x86_scalar_w(kind, w + r * ws, j) * ((const float *)(x + t * xs))[j];
        y[t * ldy + r] = sum;
    }
}

/* ---------------------------------------------------------------- 32-element blocks (VNNI) */

enum { B_Q8_0 = 4 };

INLINE void tile_b32(int kind, int RW, int RT, int64_t n, const char *w, size_t ws, const char *x,
                     size_t xs, float *y, int64_t ldy) {
    const bool has_min = kind == B_Q4_1 || kind == B_Q5_1;
    const int off = kind == B_Q4_0 ? 8 : kind == B_Q5_0 ? 16 : kind == B_Q8_0 ? 128 : 0;
    const size_t wbs = kind == B_Q8_0 ? sizeof(l3c_block_q8_0) : x86_b32_size[kind];
    const size_t xbs = has_min ? sizeof(l3c_block_q8_1) : sizeof(l3c_block_q8_0);
    const size_t xq_off = has_min ? offsetof(l3c_block_q8_1, qs) : offsetof(l3c_block_q8_0, qs);
    const __m256i voff = _mm256_set1_epi8((char)off);
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
            if (kind == B_Q8_0)
                wq[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), voff);
            else
                wq[r] = x86_unpack_b32(kind, blk);
            dw[r] = _mm256_set1_ps(x86_fp16(*(const uint16_t *)blk));
            mw[r] = has_min ? x86_fp16(((const uint16_t *)blk)[1]) : 0.0f;
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const char *xb = x + t * xs + b * xbs;
            __m256i xq = _mm256_loadu_si256((const __m256i *)(xb + xq_off));
            __m256 dx = _mm256_set1_ps(x86_fp16(*(const uint16_t *)xb));
            __m256i base = _mm256_setzero_si256();
            if (off) base = _mm256_sub_epi32(base, _mm256_dpbusd_epi32(_mm256_setzero_si256(), voff, xq));
            float sx = has_min ? x86_fp16(((const uint16_t *)xb)[1]) : 0.0f;
            UNROLL for (int r = 0; r < RW; r++) {
                __m256 f = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(base, wq[r], xq));
                acc[u][r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), f, acc[u][r][t]);
                if (has_min) macc[u][r][t] += mw[r] * sx;
            }
        }
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(_mm256_add_ps(acc[0][r][t], acc[1][r][t])) + (macc[0][r][t] + macc[1][r][t]);
}

/*
 * Q4_0 / Q8_0 x Q8_0, two blocks per 512-bit register ("pairs"): lanes 0..7 hold block b,
 * lanes 8..15 block b + 1, so one dpbusd / cvt / mul / fma covers 64 elements. Scales come from
 * one masked load of the pair's first 36 bytes (the fp16 d of both blocks) spread over the halves
 * with vpermw; Q4_0's nibbles come from the same load (vpermw to [qs_b, qs_b, qs_b1, qs_b1],
 * high halves shifted by 4). Masked loads never touch bytes past the pair, and a trailing odd
 * block is a pair whose second half loads as zeros (contributes exactly 0).
 *
 * Batch invariance: lanes 0..7 of acc are exactly chain 0 (even blocks) of the 256-bit 1 x 1
 * tile_b32, lanes 8..15 chain 1 (odd blocks), each updated by the same fma(d_w * d_x, int dot);
 * _mm512_reduce_add_ps adds the halves first, then 4 + 4, 2 + 2, 1 + 1 lanes, which is
 * x86_hsum_ps(chain 0 + chain 1) (float addition commutes). So tile_pair == vec_dot bit for bit.
 */
/* word lanes 0..7 <- word 0, lanes 8..15 <- word w1 (the upper 256 bits are not used) */
#define P_SCALE_IDX(w1) _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, \
                                         w1, w1, w1, w1, w1, w1, w1, w1, 0, 0, 0, 0, 0, 0, 0, 0)

/* fp16 d of a block pair at word 0 and word w1 of v -> [d0 x 8, d1 x 8] as float */
INLINE __m512 p_scales(__m512i v, __m512i idx) {
    return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(idx, v)));
}

/* Q8_0 block pair (34-byte blocks) at p: the 64 quants; tail: only the first block */
INLINE __m512i p_q8_qs(const char *p, bool tail) {
    __m256i lo = _mm256_loadu_si256((const __m256i *)(p + 2));
    if (tail) return _mm512_zextsi256_si512(lo);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)(p + 36)), 1);
}

INLINE void p_tile(int kind, bool tail, int RW, int RT, const char *w, size_t ws, const char *x, size_t xs,
                   int64_t b, __m512 acc[MAXR][MAXR]) {
    const __m512i idx_q4 = _mm512_set_epi16(17, 16, 15, 14, 13, 12, 11, 10, 17, 16, 15, 14, 13, 12, 11, 10,
                                            8, 7, 6, 5, 4, 3, 2, 1, 8, 7, 6, 5, 4, 3, 2, 1);
    const __mmask32 m_q4 = tail ? 0x1FF : 0x3FFFF;  /* words of 1 or 2 Q4_0 blocks */
    const __mmask32 m_q8 = tail ? 0x1FFFF : 0x3FFFF; /* word 0 .. 17: both d of a Q8_0 pair */
    const size_t wbs = kind == B_Q8_0 ? sizeof(l3c_block_q8_0) : sizeof(l3c_block_q4_0);
    const int off = kind == B_Q8_0 ? 128 : 8;
    __m512i wq[MAXR];
    __m512 dw[MAXR];
    UNROLL for (int r = 0; r < RW; r++) {
        const char *blk = w + r * ws + b * wbs;
        if (kind == B_Q8_0) {
            wq[r] = _mm512_xor_si512(p_q8_qs(blk, tail), _mm512_set1_epi8((char)0x80));
            dw[r] = p_scales(_mm512_maskz_loadu_epi16(m_q8, blk), P_SCALE_IDX(17));
        } else {
            __m512i v = _mm512_maskz_loadu_epi16(m_q4, blk);
            __m512i q = _mm512_permutexvar_epi16(idx_q4, v);
            q = _mm512_mask_srli_epi16(q, 0xFF00FF00, q, 4);
            wq[r] = _mm512_and_si512(q, _mm512_set1_epi8(0x0F));
            dw[r] = p_scales(v, P_SCALE_IDX(9));
        }
    }
    UNROLL for (int t = 0; t < RT; t++) {
        const char *xb = x + t * xs + b * sizeof(l3c_block_q8_0);
        __m512i xq = p_q8_qs(xb, tail);
        __m512 dx = p_scales(_mm512_maskz_loadu_epi16(m_q8, xb), P_SCALE_IDX(17));
        __m512i base = _mm512_sub_epi32(_mm512_setzero_si512(),
                                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)off), xq));
        UNROLL for (int r = 0; r < RW; r++) {
            __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(base, wq[r], xq));
            acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], dx), f, acc[r][t]);
        }
    }
}

/*
 * Q4_0 x Q8_0, 1 x 1 (every generated token's matmuls): exactly tile_b32(B_Q4_0, 1, 1), with
 * about half the vector instructions. Chain 0 (even blocks) lives in lanes 0..7 and chain 1 (odd
 * blocks) in lanes 8..15 of one 512-bit accumulator, each lane updated by the same operations as
 * the 256-bit chains: int dot = dpbusd(-dpbusd(0, 8, x), w, x), then fma(d_w * d_x, (float)dot).
 * Per block pair the nibbles are unpacked with one shift / in-lane shuffle / and (no vpermw,
 * which made the 512-bit pair tile slower than the 256-bit kernel for one row), and the four fp16
 * scales are converted and multiplied in one xmm (d_w * d_x, the same product as the broadcasts'
 * multiply). The end is the canonical hsum(chain 0 + chain 1) + 0.0f, so == tile_b32 bit for bit
 * (test_simd compares it with the 4 x 4 pair tiles and ref).
 */
static void q4_0_dot_1x1(int64_t n, const char *wv, const char *xv, float *y) {
    const l3c_block_q4_0 *w = (const void *)wv;
    const l3c_block_q8_0 *x = (const void *)xv;
    const int64_t nb = n / 32;
    const __m512i off = _mm512_set1_epi8(8), m4 = _mm512_set1_epi8(0x0F);
    const __m512i sidx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)w[b].qs)),
                                            _mm_loadu_si128((const __m128i *)w[b + 1].qs), 1);
        __m512i qq = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
        __m512i wq = _mm512_and_si512(_mm512_shuffle_i64x2(qq, qq, _MM_SHUFFLE(3, 1, 2, 0)), m4);
        __m512i xq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x[b].qs)),
                                        _mm256_loadu_si256((const __m256i *)x[b + 1].qs), 1);
        __m512i base = _mm512_sub_epi32(_mm512_setzero_si512(),
                                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, xq));
        __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(base, wq, xq));
        uint64_t h = (uint64_t)w[b].d | (uint64_t)w[b + 1].d << 16 | (uint64_t)x[b].d << 32 |
                     (uint64_t)x[b + 1].d << 48;
        __m128 d = _mm_cvtph_ps(_mm_cvtsi64_si128((long long)h)); /* dw0 dw1 dx0 dx1 */
        __m128 p = _mm_mul_ps(d, _mm_movehl_ps(d, d));           /* dw0 * dx0, dw1 * dx1 */
        acc = _mm512_fmadd_ps(_mm512_permutexvar_ps(sidx, _mm512_castps128_ps512(p)), f, acc);
    }
    __m256 c0 = _mm512_castps512_ps256(acc), c1 = _mm512_extractf32x8_ps(acc, 1);
    if (b < nb) { /* a last even block: chain 0 */
        __m256i wq = x86_nibbles32(w[b].qs);
        __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].qs);
        const __m256i voff = _mm256_set1_epi8(8);
        __m256i base = _mm256_sub_epi32(_mm256_setzero_si256(),
                                        _mm256_dpbusd_epi32(_mm256_setzero_si256(), voff, xq));
        __m256 f = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(base, wq, xq));
        c0 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(x86_fp16(w[b].d)), _mm256_set1_ps(x86_fp16(x[b].d))), f, c0);
    }
    const float zero = 0.0f; /* tile_b32's (macc[0] + macc[1]) */
    *y = x86_hsum_ps(_mm256_add_ps(c0, c1)) + (zero + zero);
}

INLINE void tile_pair(int kind, int RW, int RT, int64_t n, const char *w, size_t ws, const char *x,
                      size_t xs, float *y, int64_t ldy) {
    if (RW * RT == 1) { /* one row streamed from memory: 256-bit chains (Q4_0: both in one zmm) */
        if (kind == B_Q4_0) q4_0_dot_1x1(n, w, x, y);
        else tile_b32(kind, 1, 1, n, w, ws, x, xs, y, ldy);
        return;
    }
    const int64_t nb = n / 32;
    __m512 acc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) acc[r][t] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) p_tile(kind, false, RW, RT, w, ws, x, xs, b, acc);
    if (b < nb) p_tile(kind, true, RW, RT, w, ws, x, xs, b, acc);
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]);
}

/* ---------------------------------------------------------------- K-quants x Q8_K (512-bit) */

/* the end of a super-block of the K-quant tiles: acc + d * (float)(the two 256-bit halves of isum
 * added), the same for every tile shape */
INLINE __m256 kq_fold(__m512i isum, float d, __m256 acc) {
    const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(isum), _mm512_extracti64x4_epi64(isum, 1));
    return _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s8), acc);
}

/* 16 int16 in the low 256 bits of v; lanes 16 * h .. 16 * h + 15 of the result = v[k_h] */
static inline __m512i spread2(__m512i v, int k0, int k1) {
    __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)k0)),
                                     _mm256_set1_epi16((short)k1), 1);
    return _mm512_permutexvar_epi16(idx, v);
}

/* lanes 8 * q .. 8 * q + 7 of the result = v[k + q], q < 4 */
static inline __m512i spread4(__m512i v, int k) {
    const __m512i base = _mm512_set_epi16(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2,
                                          1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_epi16(_mm512_add_epi16(base, _mm512_set1_epi16((short)k)), v);
}

/*
 * Q4_K: chunk j of 64 elements is [low nibbles of qs[32j..32j+31] | high nibbles], exactly
 * the 64 activation bytes qs[64j..64j+63]; sub-blocks 2j and 2j+1 are the two 256-bit halves.
 */
INLINE void tile_q4_K(int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                      float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m256 acc[MAXR][MAXR];
    float macc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        acc[r][t] = _mm256_setzero_ps();
        macc[r][t] = 0.0f;
    }
    for (int64_t b = 0; b < n / 256; b++) {
        const l3c_block_q4_K *wb[MAXR];
        __m512i sc[MAXR];
        __m128i mn[MAXR];
        float dw[MAXR], dmw[MAXR], dx[MAXR];
        __m512i isum[MAXR][MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            wb[r] = (const l3c_block_q4_K *)(w + r * ws) + b;
            uint32_t u[4];
            x86_k4_scales(wb[r]->scales, u);
            __m256i s16 = _mm256_cvtepu8_epi16(_mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]));
            sc[r] = _mm512_castsi256_si512(s16);
            mn[r] = _mm256_extracti128_si256(s16, 1);
            dw[r] = x86_fp16(wb[r]->d);
            dmw[r] = x86_fp16(wb[r]->dmin);
        }
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
                isum[r][t] = _mm512_setzero_si512();
            }
        }
        UNROLL for (int j = 0; j < 4; j++) {
            __m512i q[MAXR], s[MAXR];
            UNROLL for (int r = 0; r < RW; r++) {
                __m256i bits = _mm256_loadu_si256((const __m256i *)(wb[r]->qs + 32 * j));
                __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(bits), _mm256_srli_epi16(bits, 4), 1);
                q[r] = _mm512_and_si512(v, m4);
                s[r] = spread2(sc[r], 2 * j, 2 * j + 1);
            }
            UNROLL for (int t = 0; t < RT; t++) {
                __m512i xv = _mm512_loadu_si512(((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 64 * j);
                UNROLL for (int r = 0; r < RW; r++)
                    isum[r][t] = _mm512_dpwssd_epi32(isum[r][t], _mm512_maddubs_epi16(q[r], xv), s[r]);
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = kq_fold(isum[r][t], dw[r] * dx[t], acc[r][t]);
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(acc[r][t]) - macc[r][t];
}

/*
 * Q6_K: per half c, the 64 bytes ql[64c..] give elements 0..63 (low nibbles) and 64..127 (high
 * nibbles) of the half; the 2 high bits come from qh[32c + l] shifted by 0 / 2 (first zmm) and
 * 4 / 6 (second). Unsigned q in [0, 63]; -32 folded in as -32 * sum_s sc[s] * bsum[s].
 */
INLINE void tile_q6_K(int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                      float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    __m256 acc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++) {
        const l3c_block_q6_K *wb[MAXR];
        __m512i sc[MAXR], isum[MAXR][MAXR];
        float dw[MAXR], dx[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            wb[r] = (const l3c_block_q6_K *)(w + r * ws) + b;
            dw[r] = x86_fp16(wb[r]->d);
            sc[r] = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wb[r]->scales)));
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
            dx[t] = xb->d;
            __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            UNROLL for (int r = 0; r < RW; r++) {
                __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(_mm512_castsi512_si256(sc[r]), bs), 5);
                isum[r][t] = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), corr));
            }
        }
        UNROLL for (int c = 0; c < 2; c++) {
            __m512i q[MAXR][2];
            UNROLL for (int r = 0; r < RW; r++) {
                __m512i l = _mm512_loadu_si512(wb[r]->ql + 64 * c);
                __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wb[r]->qh + 32 * c)));
                q[r][0] = _mm512_or_si512(_mm512_and_si512(l, m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h, sh01), m2), 4));
                q[r][1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h, sh23), m2), 4));
            }
            UNROLL for (int k = 0; k < 2; k++) {
                __m512i s[MAXR];
                UNROLL for (int r = 0; r < RW; r++) s[r] = spread4(sc[r], 8 * c + 4 * k);
                UNROLL for (int t = 0; t < RT; t++) {
                    __m512i xv = _mm512_loadu_si512(((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 128 * c + 64 * k);
                    UNROLL for (int r = 0; r < RW; r++)
                        isum[r][t] = _mm512_dpwssd_epi32(isum[r][t], _mm512_maddubs_epi16(q[r][k], xv), s[r]);
                }
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = kq_fold(isum[r][t], dw[r] * dx[t], acc[r][t]);
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(acc[r][t]);
}

/*
 * Q2_K / Q3_K: as in x86_avx2.c, one 32-byte load of qs per 128-element half c gives four 2-bit
 * chunks; here broadcast to both 256-bit halves and shifted by (0, 2) and (4, 6), a zmm holds
 * chunks 2J and 2J + 1, i.e. the 64 activation bytes 128c + 64J.., sub-blocks 8c + 4J + 0..3
 * (spread4). Q3_K's high bit (bit 4c + j of hmask) becomes a byte mask (vptestmb) that adds 4
 * to the low bits: q + 4 in [0, 7], the -4 folded in as -4 * sum_s sc[s] * bsum[s].
 */
INLINE void tile_q23_K(bool three, int RW, int RT, int64_t n, const char *w, size_t ws, const char *x,
                       size_t xs, float *y, int64_t ldy) {
    const size_t wbs = three ? sizeof(l3c_block_q3_K) : sizeof(l3c_block_q2_K);
    const __m512i m2 = _mm512_set1_epi8(0x03), four = _mm512_set1_epi8(0x04);
    const __m512i sh[2] = {_mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1),
                           _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1)};
    __m256 acc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *qs[MAXR];
        __m512i sc[MAXR], hm[MAXR], isum[MAXR][MAXR];
        __m256i mn[MAXR];
        float dw[MAXR], dmw[MAXR], dx[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            const char *blk = w + r * ws + b * wbs;
            if (three) {
                const l3c_block_q3_K *q3 = (const l3c_block_q3_K *)blk;
                qs[r] = q3->qs;
                dw[r] = x86_fp16(q3->d);
                sc[r] = _mm512_castsi256_si512(q3_K_scales(q3->scales));
                hm[r] = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)q3->hmask));
            } else {
                const l3c_block_q2_K *q2 = (const l3c_block_q2_K *)blk;
                qs[r] = q2->qs;
                dw[r] = x86_fp16(q2->d);
                dmw[r] = x86_fp16(q2->dmin);
                __m128i s8 = _mm_loadu_si128((const __m128i *)q2->scales);
                sc[r] = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(s8, _mm_set1_epi8(0x0F))));
                mn[r] = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), _mm_set1_epi8(0x0F)));
            }
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
            dx[t] = xb->d;
            __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            if (three) bs = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(bs, 2));
            UNROLL for (int r = 0; r < RW; r++) {
                if (three) {
                    isum[r][t] = _mm512_zextsi256_si512(_mm256_madd_epi16(_mm512_castsi512_si256(sc[r]), bs));
                } else {
                    __m256 m = _mm256_cvtepi32_ps(_mm256_madd_epi16(mn[r], bs));
                    acc[r][t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmw[r] * dx[t]), m, acc[r][t]);
                    isum[r][t] = _mm512_setzero_si512();
                }
            }
        }
        UNROLL for (int c = 0; c < 2; c++) UNROLL for (int J = 0; J < 2; J++) {
            __m512i q[MAXR], s[MAXR];
            const int k = 4 * c + 2 * J; /* hmask bit of the low half's chunk */
            const __m512i hbit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << k)),
                                                    _mm256_set1_epi8((char)(1 << (k + 1))), 1);
            UNROLL for (int r = 0; r < RW; r++) {
                __m512i bits = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs[r] + 32 * c)));
                q[r] = _mm512_and_si512(_mm512_srlv_epi16(bits, sh[J]), m2);
                if (three) q[r] = _mm512_mask_add_epi8(q[r], _mm512_test_epi8_mask(hm[r], hbit), q[r], four);
                s[r] = spread4(sc[r], 8 * c + 4 * J);
            }
            UNROLL for (int t = 0; t < RT; t++) {
                __m512i xv = _mm512_loadu_si512(((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 128 * c + 64 * J);
                UNROLL for (int r = 0; r < RW; r++)
                    isum[r][t] = _mm512_dpwssd_epi32(isum[r][t], _mm512_maddubs_epi16(q[r], xv), s[r]);
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = kq_fold(isum[r][t], dw[r] * dx[t], acc[r][t]);
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = x86_hsum_ps(acc[r][t]);
}

/* ---------------------------------------------------------------- packed Q4_0 / Q8_0 (16 rows) */

/*
 * Rows interleaved by 16 (l3c_pack_fn): per 32-element block b, a group holds the 16 fp16 scales
 * (32 bytes) then the quants as 64-byte chunks whose 32-bit lane r is 4 consecutive bytes of row
 * r. Q4_0: 4 chunks, chunk g lane r = qs[4g .. 4g + 3] of row r, whose low nibbles are elements
 * 4g .. 4g + 3 and high nibbles elements 16 + 4g .. 16 + 4g + 3 (18 bytes per row and block, as
 * in the file). Q8_0: 8 chunks, chunk g lane r = elements 4g .. 4g + 3 xor 0x80 (unsigned).
 *
 * Kernel: lanes are rows. For one token and block, dpbusd(unsigned weight chunk, activation
 * dword broadcast) over the 8 element groups gives the exact integer dot of all 16 rows, started
 * from -off * sum(x) (stored in the activation block); then per lane
 *     acc = fma(d_w * d_x, (float)isum, acc)
 * block after block: one chain per (row, token), the same operations for any tile shape, so the
 * result never depends on T, the number of rows or the thread split. The unpacked weights of a
 * block stay in registers while up to PK_RT tokens pass them.
 */

static void pack_act(const float *src, void *dst, int64_t n, int off) {
    l3c_block_q8_0x *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        int sum;
        b[i].d = q8_block512(src + i * 32, b[i].qs, &sum);
        b[i].neg_off_sum = -off * sum;
    }
}
static void pack_act_q4_0(const float *src, void *dst, int64_t n) { pack_act(src, dst, n, 8); }
static void pack_act_q8_0(const float *src, void *dst, int64_t n) { pack_act(src, dst, n, 128); }

/* Q4_0 / Q4_1: nh = 1 / 2 fp16 fields (d; d, m) before the 16 nibble bytes of a block; the
 * group holds the nh fields of its 16 rows (32 bytes each), then the 4 nibble chunks */
static void pack_q4(int nh, int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    const size_t bs = 2 * (size_t)nh + 16;
    for (int64_t b = 0; b < n / 32; b++) {
        uint8_t *g = (uint8_t *)dst + b * (PK_ROWS * bs);
        memset(g, 0, PK_ROWS * bs);
        for (int64_t r = 0; r < n_rows; r++) {
            const uint8_t *blk = (const uint8_t *)w + r * ws + b * bs;
            for (int h = 0; h < nh; h++) memcpy(g + 32 * h + 2 * r, blk + 2 * h, 2);
            for (int c = 0; c < 4; c++) memcpy(g + 32 * nh + 64 * c + 4 * r, blk + 2 * nh + 4 * c, 4);
        }
    }
}

static void unpack_q4(int nh, int64_t n, const void *g, int r, void *dst) {
    const size_t bs = 2 * (size_t)nh + 16;
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *gb = (const uint8_t *)g + b * (PK_ROWS * bs);
        uint8_t *blk = (uint8_t *)dst + b * bs;
        for (int h = 0; h < nh; h++) memcpy(blk + 2 * h, gb + 32 * h + 2 * r, 2);
        for (int c = 0; c < 4; c++) memcpy(blk + 2 * nh + 4 * c, gb + 32 * nh + 64 * c + 4 * r, 4);
    }
}

static void pack_q4_0(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) { pack_q4(1, n, n_rows, w, ws, dst); }
static void pack_q4_1(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) { pack_q4(2, n, n_rows, w, ws, dst); }
static void unpack_q4_0(int64_t n, const void *g, int r, void *dst) { unpack_q4(1, n, g, r, dst); }
static void unpack_q4_1(int64_t n, const void *g, int r, void *dst) { unpack_q4(2, n, g, r, dst); }

static void pack_q8_0(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        uint8_t *g = out + b * (PK_ROWS * sizeof(l3c_block_q8_0));
        memset(g, 0, 32);
        for (int c = 0; c < 8; c++) memset(g + 32 + 64 * c, 0x80, 64); /* padding rows: q = 0 */
        for (int64_t r = 0; r < n_rows; r++) {
            const l3c_block_q8_0 *blk = (const l3c_block_q8_0 *)((const char *)w + r * ws) + b;
            memcpy(g + 2 * r, &blk->d, 2);
            for (int c = 0; c < 8; c++)
                for (int k = 0; k < 4; k++) g[32 + 64 * c + 4 * r + k] = (uint8_t)blk->qs[4 * c + k] ^ 0x80;
        }
    }
}

static void unpack_q8_0(int64_t n, const void *g, int r, void *dst) {
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *gb = (const uint8_t *)g + b * (PK_ROWS * sizeof(l3c_block_q8_0));
        l3c_block_q8_0 *blk = (l3c_block_q8_0 *)dst + b;
        memcpy(&blk->d, gb + 2 * r, 2);
        for (int c = 0; c < 8; c++)
            for (int k = 0; k < 4; k++) blk->qs[4 * c + k] = (int8_t)(gb[32 + 64 * c + 4 * r + k] ^ 0x80);
    }
}

/* One token streams the matrix from memory: the lines of the block at g (bytes long) are
 * prefetched PK_PREFETCH bytes ahead. The hardware streamer stops at 4 KiB page ends and each
 * thread's stream restarts at every chunk. 1B Q4_0, two threads, loaded machine (load ~20):
 * tg 4.3-5.0 t/s with against 3.0-3.6 without (CPU 61-67 vs 81-88 ms per token); 576 to 2304
 * bytes ahead alike, 4608 or 3 lines per Q4_0 block worse. A prefetch past the matrix's end is
 * harmless (no fault). */
#define PK_PREFETCH 1152
INLINE void pk_prefetch(const char *g, size_t bytes) {
    UNROLL for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(g + PK_PREFETCH + o, _MM_HINT_T0);
}

/* one group of 16 rows x RT tokens; acc[t] lane r = (row r, token t) */
INLINE void pk_tile(int kind, int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    const size_t gbs = PK_ROWS * (kind == B_Q8_0 ? sizeof(l3c_block_q8_0) : sizeof(l3c_block_q4_0));
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * gbs;
        if (RT == 1) pk_prefetch(g, gbs);
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        __m512i q[8];
        if (kind == B_Q8_0) {
            UNROLL for (int c = 0; c < 8; c++) q[c] = _mm512_loadu_si512(g + 32 + 64 * c);
        } else {
            UNROLL for (int c = 0; c < 4; c++) {
                __m512i v = _mm512_loadu_si512(g + 32 + 64 * c);
                q[c] = _mm512_and_si512(v, m4);
                q[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_0x *a = (const l3c_block_q8_0x *)(x + t * xs) + b;
            const int32_t *xq = (const int32_t *)a->qs;
            __m512i s = _mm512_set1_epi32(a->neg_off_sum);
            UNROLL for (int c = 0; c < 8; c++) s = _mm512_dpbusd_epi32(s, q[c], _mm512_set1_epi32(xq[c]));
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a->d)), _mm512_cvtepi32_ps(s), acc[t]);
        }
    }
}

/*
 * Packed Q4_0, one token (every generated token's matmuls): the same isum and the same float
 * step as pk_tile(B_Q4_0, 1, ...) with fewer instructions per block (28 instead of 42), so that
 * the weight stream, not the core, sets the pace. The high nibbles are not shifted down: a chunk
 * AND 0xF0 is 16 x the high nibble (still a u8), dpbusd over it gives 16 x their exact dot, and
 * one arithmetic shift per block takes it back (exact: a multiple of 16, |sum| < 2^20). The low
 * and high halves run as two chains of 4 dpbusd with the activation dword broadcast from memory
 * (dpbusd_b); integer addition is exact, so isum, and with it every bit of y, is pk_tile's.
 * Each block's 288 bytes (5 lines) are prefetched 4 blocks ahead (pk_prefetch).
 */
INLINE void pk_q4_0_gemv(int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    const size_t gbs = PK_ROWS * sizeof(l3c_block_q4_0);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const l3c_block_q8_0x *a = (const l3c_block_q8_0x *)x;
    (void)xs;
    for (int64_t b = 0; b < nb; b++, a++) {
        const char *g = wp + b * gbs;
        pk_prefetch(g, gbs);
        __m512i v[4];
        UNROLL for (int c = 0; c < 4; c++) v[c] = _mm512_loadu_si512(g + 32 + 64 * c);
        __asm__("" : "+v"(v[0]), "+v"(v[1]), "+v"(v[2]), "+v"(v[3])); /* one load per chunk */
        __m512i lo = _mm512_set1_epi32(a->neg_off_sum), hi = _mm512_setzero_si512();
        UNROLL for (int c = 0; c < 4; c++) {
            lo = dpbusd_b(lo, _mm512_and_si512(v[c], m4), a->qs + 4 * c);
            hi = dpbusd_b(hi, _mm512_andnot_si512(m4, v[c]), a->qs + 16 + 4 * c);
        }
        const __m512i s = _mm512_add_epi32(lo, _mm512_srai_epi32(hi, 4));
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        acc[0] =
            _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a->d)), _mm512_cvtepi32_ps(s), acc[0]);
    }
}

/*
 * Packed Q4_1 (16 rows): per 32-element block a group holds the 16 fp16 scales d (32 bytes), the
 * 16 fp16 mins m (32 bytes), then the 4 nibble chunks of Q4_0's layout (20 bytes per row and
 * block, as in the file). Activations: l3c_block_q8_1x (Q8_0 quants, float d, s = d * sum(qs)).
 * Per lane (row) and token: isum = the exact integer dot of the unsigned nibbles with the quants
 * (dpbusd from 0), then block after block
 *     acc = fma(d_w * d_x, (float)isum, acc),   macc = fma(m_w, s_x, macc)
 * and y = acc + macc at the end: two independent chains, the same operations for every tile
 * shape (batch invariant); x86_amx.h's kernel takes isum from the tile unit and ends the same way.
 */
static void pack_act_q4_1(const float *src, void *dst, int64_t n) {
    l3c_block_q8_1x *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        int sum;
        b[i].d = q8_block512(src + i * 32, b[i].qs, &sum);
        b[i].s = b[i].d * (float)sum;
    }
}

/* one group of 16 rows x RT tokens; acc[t] lane r = (row r, token t). A block's nibbles are
 * unpacked once for the RT tokens; each token's dot runs as one chain of 8 dpbusd, or two of 4
 * for RT <= 2 (shorter latency for decode): the integer sum is exact, so any split gives the
 * same isum. Each chain starts from the xor zero idiom (no port), so a token and block cost 8
 * dpbusd, one cvt, one mul and two fma (one more add with two chains). */
INLINE void pk_q4_1_tile(int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    const size_t gbs = PK_ROWS * sizeof(l3c_block_q4_1);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 macc[PK_RT];
    UNROLL for (int t = 0; t < RT; t++) macc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * gbs;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32)));
        __m512i q[8];
        UNROLL for (int c = 0; c < 4; c++) {
            const __m512i v = _mm512_loadu_si512(g + 64 + 64 * c);
            q[c] = _mm512_and_si512(v, m4);
            q[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_1x *a = (const l3c_block_q8_1x *)(x + t * xs) + b;
            __m512i s = zero_si512();
            if (RT <= 2) { /* decode: two chains of 4 (latency) */
                __m512i s1 = zero_si512();
                UNROLL for (int c = 0; c < 4; c++) {
                    s = dpbusd_b(s, q[c], a->qs + 4 * c);
                    s1 = dpbusd_b(s1, q[c + 4], a->qs + 16 + 4 * c);
                }
                s = _mm512_add_epi32(s, s1);
            } else { /* RT independent chains already hide the latency: no add */
                UNROLL for (int c = 0; c < 8; c++) s = dpbusd_b(s, q[c], a->qs + 4 * c);
            }
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a->d)), _mm512_cvtepi32_ps(s), acc[t]);
            macc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a->s), macc[t]);
        }
    }
    UNROLL for (int t = 0; t < RT; t++) acc[t] = _mm512_add_ps(acc[t], macc[t]);
}

/* ---------------------------------------------------------------- packed Q3_K (16 rows) */

/*
 * Packed Q3_K (lanes are rows, as Q4_K / Q6_K below; activations in Q8_K). The quants are kept
 * unsigned, v = q + 4 in 0..7 (the file's 2 low bits | the hmask bit << 2). Per super-block a
 * group holds (16 x 110 bytes, as the file):
 *   d[16] (fp16);
 *   3 scale chunks Y0..Y2: byte i of lane r holds, for w_j = row r's 6-bit scale j xor 32 (s_j =
 *     scale - 32 as 6-bit two's complement) and p = (0, 2, 1, 3)[i], Yk = w_{4k+p} << 2 | bits
 *     2k .. 2k + 1 of w_{12+p} (q3_scales: the int8 4 s with one AND, or three shifts, two
 *     ternlogs, one AND for scales 12..15; the order makes even / odd bytes the int16 pairs
 *     (s_2p, s_2p+1) for the bsums);
 *   4 rounds of 64 elements (4 groups of 16 with a scale each), each two triples (columns c = 0,
 *     1) of three chunks X0, X1, X2 (Q3_CHUNK), read in memory order. Slot s of group u at
 *     column c holds elements 64 rho + 16 u + 4 (2 s + c) + i in byte i of lane r:
 *       X0 = A << 2 | B << 5 | G & 3,   X1 = C << 2 | D << 5 | G >> 2 | (H & 1) << 1,
 *       X2 = E << 2 | F << 5 | H >> 1,  with (A, C) group 0, (B, D) 1, (E, G) 2, (F, H) 3
 *     (q3_quants: 13 instructions give all 8 as 4 v or 32 v, the same factor within a group).
 * Kernels: both find per (row, token) the exact tot = sum_g s_g (dot of group g's q) and end
 * with the same acc = fma(d * dx, (float)tot, acc) (q3_acc): batch invariant.
 *   few tokens: per group, dpbusd of the chunks as 4 v or 32 v, times 8 s or s in int32
 *     (isum32 = 32 x the dot of v, |isum32| < 2^28), the -4 offset from the bsums (q3_finish);
 *   many tokens: the chunks as v; per pair of groups the two dots, started from -4 bsum, as one
 *     int16 pair into one dpwssd by the scale pair (4 s, 4 s').
 */
#define Q3_GROUP (PK_ROWS * sizeof(l3c_block_q3_K))

/* v = q + 4 (0..7) of the 256 elements of a block (ref.c unpack_q3_K): element 128 c + 32 j + l
 * is bits 2 j .. 2 j + 1 of qs[32 c + l] | bit 4 c + j of hmask[l] << 2 */
static void q3_values(const l3c_block_q3_K *blk, uint8_t v[256]) {
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                v[128 * c + 32 * j + l] =
                    (uint8_t)((blk->qs[32 * c + l] >> (2 * j) & 3) | (blk->hmask[l] >> (4 * c + j) & 1) << 2);
}

static const int q3_perm[4] = {0, 2, 1, 3};

static void pack_q3_K(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    for (int64_t b = 0; b < n / 256; b++) {
        uint8_t *g = (uint8_t *)dst + b * Q3_GROUP;
        memset(g, 0, Q3_GROUP);
        for (int64_t r = 0; r < n_rows; r++) {
            const l3c_block_q3_K *blk = (const l3c_block_q3_K *)((const char *)w + r * ws) + b;
            memcpy(g + 2 * r, &blk->d, 2);
            int sw[16];
            for (int j = 0; j < 16; j++) sw[j] = l3c_k3_scale(j, blk->scales) ^ 32;
            for (int k = 0; k < 3; k++)
                for (int i = 0; i < 4; i++)
                    g[32 + 64 * k + 4 * r + i] =
                        (uint8_t)(sw[4 * k + q3_perm[i]] << 2 | (sw[12 + q3_perm[i]] >> (2 * k) & 3));
            uint8_t v[256];
            q3_values(blk, v);
            for (int rho = 0; rho < 4; rho++)
                for (int c = 0; c < 2; c++) { /* 4 bytes at a time (values < 8: no carry between bytes) */
                    const uint8_t *e = v + 64 * rho + 4 * c; /* slot s of group u: e + 16 u + 8 s */
                    uint32_t A, B, C, D, E, F, G, H;
                    memcpy(&A, e, 4), memcpy(&C, e + 8, 4), memcpy(&B, e + 16, 4), memcpy(&D, e + 24, 4);
                    memcpy(&E, e + 32, 4), memcpy(&G, e + 40, 4), memcpy(&F, e + 48, 4), memcpy(&H, e + 56, 4);
                    const uint32_t x0 = A << 2 | B << 5 | (G & 0x03030303u);
                    const uint32_t x1 = C << 2 | D << 5 | (G >> 2 & 0x01010101u) | (H & 0x01010101u) << 1;
                    const uint32_t x2 = E << 2 | F << 5 | (H >> 1 & 0x03030303u);
                    uint8_t *o = g + Q3_CHUNK(rho, c, 0) + 4 * r;
                    memcpy(o, &x0, 4), memcpy(o + 64, &x1, 4), memcpy(o + 128, &x2, 4);
                }
        }
    }
}

static void unpack_q3_K(int64_t n, const void *gv, int r, void *dst) {
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *g = (const uint8_t *)gv + b * Q3_GROUP;
        l3c_block_q3_K *blk = (l3c_block_q3_K *)dst + b;
        memcpy(&blk->d, g + 2 * r, 2);
        int u[16] = {0};
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < 4; i++) {
                const int y = g[32 + 64 * k + 4 * r + i];
                u[4 * k + q3_perm[i]] = y >> 2;
                u[12 + q3_perm[i]] |= (y & 3) << (2 * k);
            }
        memset(blk->scales, 0, sizeof(blk->scales));
        for (int j = 0; j < 16; j++) {
            const int s = u[j] ^ 32;
            blk->scales[j % 8] |= (uint8_t)((s & 15) << (4 * (j / 8)));
            blk->scales[8 + j % 4] |= (uint8_t)((s >> 4) << (2 * (j / 4)));
        }
        uint8_t v[256];
        for (int rho = 0; rho < 4; rho++)
            for (int c = 0; c < 2; c++)
                for (int i = 0; i < 4; i++) {
                    const uint8_t *o = g + Q3_CHUNK(rho, c, 0) + 4 * r + i;
                    const int x0 = o[0], x1 = o[64], x2 = o[128];
                    uint8_t *e = v + 64 * rho + 4 * c + i;
                    e[0] = (uint8_t)(x0 >> 2 & 7), e[16] = (uint8_t)(x0 >> 5);
                    e[8] = (uint8_t)(x1 >> 2 & 7), e[24] = (uint8_t)(x1 >> 5);
                    e[32] = (uint8_t)(x2 >> 2 & 7), e[48] = (uint8_t)(x2 >> 5);
                    e[40] = (uint8_t)((x0 & 3) | (x1 & 1) << 2);
                    e[56] = (uint8_t)((x1 >> 1 & 1) | (x2 & 3) << 1);
                }
        for (int l = 0; l < 32; l++) {
            int hm = 0;
            for (int c = 0; c < 2; c++) {
                int q = 0;
                for (int j = 0; j < 4; j++) {
                    const int e = v[128 * c + 32 * j + l];
                    q |= (e & 3) << (2 * j);
                    hm |= (e >> 2) << (4 * c + j);
                }
                blk->qs[32 * c + l] = (uint8_t)q;
            }
            blk->hmask[l] = (uint8_t)hm;
        }
    }
}

/* few tokens (generation): the triples in memory order, each unpacked once; per token the four
 * groups of a round accumulate over both columns, then are scaled */
INLINE void pk_q3_K_tile_cm(int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * Q3_GROUP;
        __m512i isum[PK_RT];
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_setzero_si512();
        UNROLL for (int rho = 0; rho < 4; rho++) {
            __m512i p[PK_RT][4];
            UNROLL for (int t = 0; t < RT; t++) UNROLL for (int u = 0; u < 4; u++) p[t][u] = _mm512_setzero_si512();
            UNROLL for (int c = 0; c < 2; c++) {
                __m512i q[8];
                q3_quants(g + Q3_CHUNK(rho, c, 0), q);
                UNROLL for (int t = 0; t < RT; t++) {
                    const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 64 * rho + 4 * c;
                    UNROLL for (int u = 0; u < 4; u++) UNROLL for (int s = 0; s < 2; s++)
                        p[t][u] = dpbusd_b(p[t][u], q[2 * u + s], xq + 16 * u + 8 * s);
                }
            }
            __m512i D[4], sc[4];
            q3_scales(g, D);
            UNROLL for (int u = 0; u < 4; u++) sc[u] = q3_scale(D[rho], u);
            UNROLL for (int t = 0; t < RT; t++)
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(
                    _mm512_add_epi32(_mm512_mullo_epi32(p[t][0], sc[0]), _mm512_mullo_epi32(p[t][1], sc[1])),
                    _mm512_add_epi32(_mm512_mullo_epi32(p[t][2], sc[2]), _mm512_mullo_epi32(p[t][3], sc[3]))));
            UNROLL for (int t = 0; t < RT; t++) __asm__("" : "+v"(isum[t])); /* scaled here, not spilled */
        }
        q3_finish(RT, g, x, xs, b, isum, acc);
    }
}

/* the int32 at p broadcast by a load (GCC otherwise keeps off[] in registers and shuffles) */
INLINE __m512i bcast_m(const int32_t *p) {
    __m512i v;
    __asm__("vpbroadcastd %1, %0" : "=v"(v) : "m"(*p));
    return v;
}

/*
 * many tokens: per half round (two groups, the Q8_K group-sum pair p), its 8 chunks unpacked as
 * v stay in registers for all RT tokens. Per token the two groups' dots, started from -4 bsum
 * (the offset: |dot| < 2^15), become one int16 pair (vpslld, vpternlogd) that one dpwssd by the
 * scale pair (4 s_2p, 4 s_2p+1) adds: isum4 = 4 tot, no vpmulld and no offset pass.
 */
INLINE void pk_q3_K_tile(int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    const __m512i lo16 = _mm512_set1_epi32(0xFFFF);
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * Q3_GROUP;
        int32_t off[PK_RT][16]; /* -4 bsum_g per token, as int32 to broadcast */
        __m512i isum[PK_RT];
        UNROLL for (int t = 0; t < RT; t++) {
            const __m256i bs = _mm256_loadu_si256((const __m256i *)((const l3c_block_q8_K *)(x + t * xs) + b)->bsums);
            const __m512i bs4 = _mm512_slli_epi32(_mm512_cvtepi16_epi32(bs), 2);
            _mm512_storeu_si512(off[t], _mm512_sub_epi32(_mm512_setzero_si512(), bs4));
            isum[t] = _mm512_setzero_si512();
        }
        UNROLL for (int rho = 0; rho < 4; rho++) UNROLL for (int h = 0; h < 2; h++) {
            const int p = 2 * rho + h; /* groups 2 p, 2 p + 1 */
            __m512i q[2][4], D[4];
            UNROLL for (int c = 0; c < 2; c++) {
                __m512i xt[3];
                q3_load(g + Q3_CHUNK(rho, c, 0), 2 + h, xt);
                q3_quants_v(xt[0], xt[1], xt[2], h, q[c]);
            }
            q3_scales(g, D);
            const __m512i sp = q3_pair(D, p);
            UNROLL for (int t = 0; t < RT; t++) {
                const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 32 * p;
                __m512i p0 = bcast_m(&off[t][2 * p]), p1 = bcast_m(&off[t][2 * p + 1]);
                UNROLL for (int s = 0; s < 2; s++) UNROLL for (int c = 0; c < 2; c++) {
                    p0 = dpbusd_b(p0, q[c][s], xq + 8 * s + 4 * c);
                    p1 = dpbusd_b(p1, q[c][2 + s], xq + 16 + 8 * s + 4 * c);
                }
                const __m512i pr = _mm512_ternarylogic_epi32(p0, _mm512_slli_epi32(p1, 16), lo16, 0xE4); /* c ? a : b */
                isum[t] = _mm512_dpwssd_epi32(isum[t], pr, sp);
            }
            UNROLL for (int t = 0; t < RT; t++) __asm__("" : "+v"(isum[t])); /* here, not spilled */
        }
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_srai_epi32(isum[t], 2);
        q3_acc(RT, g, x, xs, b, isum, acc);
    }
}
/* ---------------------------------------------------------------- end of packed Q3_K */

/*
 * Packed Q4_K / Q6_K (16 rows, the same lanes-are-rows scheme, activations in Q8_K). Per
 * super-block of 256 elements a group holds (sizes = 16 x the file's block):
 *   Q4_K: d[16], dmin[16] (fp16), the 12 scale bytes as 3 chunks (lane r = bytes 4k .. 4k + 3
 *         of row r), then qs as 32 chunks (j, c): lane r = qs[32j + 4c .. + 3], whose low
 *         nibbles are elements 64j + 4c .. + 3 (sub-block 2j) and high nibbles sub-block 2j + 1.
 *   Q6_K: d[16], the 16 int8 scales as 4 chunks with bytes ordered (s4k, s4k+2, s4k+1, s4k+3)
 *         so that even / odd bytes sign-extend to the int16 pairs (s2p, s2p+1); then per half h
 *         (128 elements, quarters k = 0..3 of 32) and column c < 8, three chunks X0, X1, X2
 *         (Q6_CHUNK): byte i of lane r holds, for l = 4c + i and q_k = the 6-bit quant of
 *         element 32k + l of the half, X0 = q0 | (q3 & 3) << 6, X1 = q1 | (q3 >> 2 & 3) << 6,
 *         X2 = q2 | (q3 >> 4) << 6. Quarters 0..2 unpack with one AND, quarter 3 with three
 *         shifts and three logic ops; each chunk is read once per super-block, in memory order,
 *         by the few-token tile (the 6-bit unpacking and a non-sequential stream made the
 *         previous ql / qh chunk layout ~1.5x slower for one token).
 * Per sub-block (Q4_K: 32 elements, scale sc and min mn) or 16-element group (Q6_K: scale s,
 * quants q - 32), the exact integer dot of all 16 rows comes from dpbusd over the unsigned
 * quants and is multiplied by the scale in int32; the mins / the -32 offset come from the Q8_K
 * group sums by dpwssd; per super-block and lane:
 *   Q4_K: acc = fma(d * dx, (float)isum, acc); acc = fnmadd(dmin * dx, (float)msum, acc)
 *   Q6_K: acc = fma(d * dx, (float)(isum - 32 * osum), acc)
 * The same operations for every tile shape: batch invariant.
 */
/* the first 256 bytes of a packed Q4_K / Q5_K super-block (the same scale format): row r's d
 * and dmin (fp16, at 2r and 32 + 2r) and its 12 scale bytes as 3 chunks (4 bytes at lane r) */
static void kq_header_pack(uint8_t *g, int64_t r, const uint16_t *d, const uint16_t *dmin, const uint8_t *scales) {
    memcpy(g + 2 * r, d, 2);
    memcpy(g + 32 + 2 * r, dmin, 2);
    for (int k = 0; k < 3; k++) memcpy(g + 64 + 64 * k + 4 * r, scales + 4 * k, 4);
}
static void kq_header_unpack(const uint8_t *g, int r, uint16_t *d, uint16_t *dmin, uint8_t *scales) {
    memcpy(d, g + 2 * r, 2);
    memcpy(dmin, g + 32 + 2 * r, 2);
    for (int k = 0; k < 3; k++) memcpy(scales + 4 * k, g + 64 + 64 * k + 4 * r, 4);
}

static void pack_q4_K(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    for (int64_t b = 0; b < n / 256; b++) {
        uint8_t *g = (uint8_t *)dst + b * (PK_ROWS * sizeof(l3c_block_q4_K));
        memset(g, 0, PK_ROWS * sizeof(l3c_block_q4_K));
        for (int64_t r = 0; r < n_rows; r++) {
            const l3c_block_q4_K *blk = (const l3c_block_q4_K *)((const char *)w + r * ws) + b;
            kq_header_pack(g, r, &blk->d, &blk->dmin, blk->scales);
            for (int j = 0; j < 4; j++)
                for (int c = 0; c < 8; c++) memcpy(g + 256 + (8 * j + c) * 64 + 4 * r, blk->qs + 32 * j + 4 * c, 4);
        }
    }
}

static void unpack_q4_K(int64_t n, const void *gv, int r, void *dst) {
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *g = (const uint8_t *)gv + b * (PK_ROWS * sizeof(l3c_block_q4_K));
        l3c_block_q4_K *blk = (l3c_block_q4_K *)dst + b;
        kq_header_unpack(g, r, &blk->d, &blk->dmin, blk->scales);
        for (int j = 0; j < 4; j++)
            for (int c = 0; c < 8; c++) memcpy(blk->qs + 32 * j + 4 * c, g + 256 + (8 * j + c) * 64 + 4 * r, 4);
    }
}

static const int q6_perm[4] = {0, 2, 1, 3}; /* stored byte i of a scale chunk = scale 4k + perm[i] */


static void pack_q6_K(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    for (int64_t b = 0; b < n / 256; b++) {
        uint8_t *g = (uint8_t *)dst + b * (PK_ROWS * sizeof(l3c_block_q6_K));
        memset(g, 0, PK_ROWS * sizeof(l3c_block_q6_K));
        for (int64_t r = 0; r < n_rows; r++) {
            const l3c_block_q6_K *blk = (const l3c_block_q6_K *)((const char *)w + r * ws) + b;
            memcpy(g + 2 * r, &blk->d, 2);
            for (int k = 0; k < 4; k++)
                for (int i = 0; i < 4; i++) g[32 + 64 * k + 4 * r + i] = (uint8_t)blk->scales[4 * k + q6_perm[i]];
            for (int h = 0; h < 2; h++) {
                uint8_t xk[3][32];
                for (int l = 0; l < 32; l++) {
                    const int a = blk->ql[64 * h + l], bq = blk->ql[64 * h + 32 + l];
                    const int hb = blk->qh[32 * h + l];
                    const int q0 = (a & 15) | (hb & 3) << 4, q1 = (bq & 15) | (hb >> 2 & 3) << 4;
                    const int q2 = (a >> 4) | (hb >> 4 & 3) << 4, q3 = (bq >> 4) | (hb >> 6) << 4;
                    xk[0][l] = (uint8_t)(q0 | (q3 & 3) << 6);
                    xk[1][l] = (uint8_t)(q1 | (q3 >> 2 & 3) << 6);
                    xk[2][l] = (uint8_t)(q2 | (q3 >> 4) << 6);
                }
                for (int c = 0; c < 8; c++)
                    for (int k = 0; k < 3; k++) memcpy(g + Q6_CHUNK(h, c, k) + 4 * r, xk[k] + 4 * c, 4);
            }
        }
    }
}

static void unpack_q6_K(int64_t n, const void *gv, int r, void *dst) {
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *g = (const uint8_t *)gv + b * (PK_ROWS * sizeof(l3c_block_q6_K));
        l3c_block_q6_K *blk = (l3c_block_q6_K *)dst + b;
        memcpy(&blk->d, g + 2 * r, 2);
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 4; i++) blk->scales[4 * k + q6_perm[i]] = (int8_t)g[32 + 64 * k + 4 * r + i];
        for (int h = 0; h < 2; h++) {
            uint8_t xk[3][32];
            for (int c = 0; c < 8; c++)
                for (int k = 0; k < 3; k++) memcpy(xk[k] + 4 * c, g + Q6_CHUNK(h, c, k) + 4 * r, 4);
            for (int l = 0; l < 32; l++) {
                const int q0 = xk[0][l] & 63, q1 = xk[1][l] & 63, q2 = xk[2][l] & 63;
                const int q3 = xk[0][l] >> 6 | (xk[1][l] >> 6) << 2 | (xk[2][l] >> 6) << 4;
                blk->ql[64 * h + l] = (uint8_t)((q0 & 15) | (q2 & 15) << 4);
                blk->ql[64 * h + 32 + l] = (uint8_t)((q1 & 15) | (q3 & 15) << 4);
                blk->qh[32 * h + l] =
                    (uint8_t)(q0 >> 4 | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6);
            }
        }
    }
}

INLINE __m512i bcast32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* many tokens: per sub-block, its 8 unpacked chunks stay in registers for all RT tokens */
INLINE void pk_q4_K_tile(int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * (PK_ROWS * sizeof(l3c_block_q4_K));
        __m512i u[4];
        q4k_scales(g, u);
        __m512i isum[PK_RT];
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_setzero_si512();
        for (int s = 0; s < 8; s++) {
            const __m512i sc = q4k_byte(u, s);
            const char *qc = g + 256 + (8 * (s / 2)) * 64;
            __m512i q[8];
            UNROLL for (int cc = 0; cc < 8; cc++) {
                __m512i v = _mm512_loadu_si512(qc + 64 * cc);
                q[cc] = _mm512_and_si512(s & 1 ? _mm512_srli_epi16(v, 4) : v, m4);
            }
            UNROLL for (int t = 0; t < RT; t++) {
                const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 32 * s;
                __m512i p = _mm512_setzero_si512();
                UNROLL for (int cc = 0; cc < 8; cc++) p = dpbusd_b(p, q[cc], xq + 4 * cc);
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
            }
        }
        q4k_finish(RT, g, u, x, xs, b, isum, acc);
    }
}

/*
 * few tokens (generation): the 32 quant chunks in memory order, each loaded once for both its
 * sub-blocks. The high nibbles are used in place (v & 0xF0 = 16 x nibble), so the low sub-block's
 * dot is scaled by 16 sc instead: isum16 = 16 isum exactly (|isum16| < 2^29), shifted back.
 * Per token four partial dots (low / high nibbles x columns 0..3 / 4..7) in flight.
 */
INLINE void pk_q4_K_tile_cm(int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * (PK_ROWS * sizeof(l3c_block_q4_K));
        __m512i u[4];
        q4k_scales(g, u);
        __m512i isum[PK_RT];
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < 4; j++) {
            __m512i p[PK_RT][4];
            UNROLL for (int t = 0; t < RT; t++) UNROLL for (int k = 0; k < 4; k++) p[t][k] = _mm512_setzero_si512();
            UNROLL for (int c = 0; c < 8; c++) {
                if (RT == 1) _mm_prefetch(g + PK_PREFETCH + (8 * j + c) * 64, _MM_HINT_T0); /* lines 0..31 */
                __m512i v = _mm512_loadu_si512(g + 256 + (8 * j + c) * 64);
                __asm__("" : "+v"(v)); /* one load for both nibbles, not one folded into each use */
                const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_andnot_si512(m4, v);
                UNROLL for (int t = 0; t < RT; t++) {
                    const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 64 * j + 4 * c;
                    p[t][c / 4] = dpbusd_b(p[t][c / 4], lo, xq);
                    p[t][2 + c / 4] = dpbusd_b(p[t][2 + c / 4], hi, xq + 32);
                }
            }
            const __m512i s0 = _mm512_slli_epi32(q4k_byte(u, 2 * j), 4), s1 = q4k_byte(u, 2 * j + 1);
            UNROLL for (int t = 0; t < RT; t++)
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(_mm512_add_epi32(p[t][0], p[t][1]), s0),
                                                                     _mm512_mullo_epi32(_mm512_add_epi32(p[t][2], p[t][3]), s1)));
        }
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_srai_epi32(isum[t], 4);
        if (RT == 1) pk_prefetch(g + 2048, 256); /* lines 32..35 of the block 2304 bytes long */
        q4k_finish(RT, g, u, x, xs, b, isum, acc);
    }
}


/* many tokens: per 32-element quarter, its 8 quant chunks stay in registers for all RT tokens */
INLINE void pk_q6_K_tile(int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * (PK_ROWS * sizeof(l3c_block_q6_K));
        __m512i isum[PK_RT];
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_setzero_si512();
        UNROLL for (int sr = 0; sr < 8; sr++) { /* elements 32 sr .. 32 sr + 31: half sr / 4, quarter sr % 4 */
            const int h = sr / 4, qt = sr % 4;
            const __m512i s0 = q6_scale(g, 2 * sr), s1 = q6_scale(g, 2 * sr + 1);
            __m512i q[8];
            UNROLL for (int c = 0; c < 8; c++) q[c] = q6_quant(g, h, c, qt);
            UNROLL for (int t = 0; t < RT; t++) {
                const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 32 * sr;
                __m512i p0 = _mm512_setzero_si512(), p1 = _mm512_setzero_si512();
                UNROLL for (int c = 0; c < 4; c++) p0 = dpbusd_b(p0, q[c], xq + 4 * c);
                UNROLL for (int c = 4; c < 8; c++) p1 = dpbusd_b(p1, q[c], xq + 4 * c);
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(p0, s0), _mm512_mullo_epi32(p1, s1)));
            }
        }
        q6_finish(RT, g, x, xs, b, isum, acc);
    }
}

/* int8 byte `at` (0..3) of each lane of v as int32 lanes, times 4 if x4 (vpshufb puts it in
 * byte 3 above three zero bytes, vpsrad 22 or 24 sign-extends it) */
INLINE __m512i q6_scale_at(__m512i v, int at, int x4) {
    const __m512i ix = _mm512_set1_epi32((int)(0x00808080u | (uint32_t)at << 24));
    const __m512i off = _mm512_set_epi32(12 << 24, 8 << 24, 4 << 24, 0, 12 << 24, 8 << 24, 4 << 24, 0,
                                         12 << 24, 8 << 24, 4 << 24, 0, 12 << 24, 8 << 24, 4 << 24, 0);
    return _mm512_srai_epi32(_mm512_shuffle_epi8(v, _mm512_add_epi32(ix, off)), x4 ? 22 : 24);
}

/*
 * few tokens (generation): the chunks in memory order, each loaded once for its four quarters;
 * per token four partial dots (one per quarter) live across 4 columns. Quarter 3 is built as
 * 4 x its quants (bits 6..7 of X0, X1, X2 moved to bits 2..3, 4..5, 6..7: two shifts, two
 * ternlogs, one and), so every quarter's dot is 4 x its share: quarters 0..2 take 4 sc (one
 * vpshufb + vpsrad each), quarter 3 sc; isum4 = 4 isum exactly (|isum4| < 2^30), shifted back.
 */
INLINE void pk_q6_K_tile_cm(int RT, int64_t nb, const char *wp, const char *x, size_t xs,
                            __m512 acc[PK_RT]) {
    const __m512i m3f = _mm512_set1_epi8(0x3F), m0c = _mm512_set1_epi8(0x0C), mfc = _mm512_set1_epi8((char)0xFC);
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * (PK_ROWS * sizeof(l3c_block_q6_K));
        __m512i isum[PK_RT];
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_setzero_si512();
        UNROLL for (int h = 0; h < 2; h++) UNROLL for (int k = 0; k < 2; k++) {
            __m512i p[PK_RT][4];
            UNROLL for (int t = 0; t < RT; t++) UNROLL for (int qt = 0; qt < 4; qt++)
                p[t][qt] = _mm512_setzero_si512();
            UNROLL for (int c = 4 * k; c < 4 * k + 4; c++) {
                if (RT == 1) pk_prefetch(g + 192 * (4 * (2 * h + k) + c - 4 * k), 192); /* lines 0..47 */
                __m512i v0 = _mm512_loadu_si512(g + Q6_CHUNK(h, c, 0));
                __m512i v1 = _mm512_loadu_si512(g + Q6_CHUNK(h, c, 1));
                __m512i v2 = _mm512_loadu_si512(g + Q6_CHUNK(h, c, 2));
                __asm__("" : "+v"(v0), "+v"(v1), "+v"(v2)); /* one load per chunk */
                __m512i q[4];
                q[0] = _mm512_and_si512(v0, m3f);
                q[1] = _mm512_and_si512(v1, m3f);
                q[2] = _mm512_and_si512(v2, m3f);
                /* 0xE4: c ? a : b (the masks last, so that no copy of them is destroyed) */
                const __m512i t3 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v0, 4), _mm512_srli_epi16(v1, 2), m0c, 0xE4);
                q[3] = _mm512_and_si512(_mm512_ternarylogic_epi32(t3, v2, m3f, 0xE4), mfc); /* 4 x quarter 3 */
                UNROLL for (int t = 0; t < RT; t++) {
                    const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 128 * h + 4 * c;
                    UNROLL for (int qt = 0; qt < 4; qt++) p[t][qt] = dpbusd_b(p[t][qt], q[qt], xq + 32 * qt);
                }
            }
            /* scale 8 h + 2 qt + k: byte 2 k + qt % 2 of lane r in scale chunk 2 h + qt / 2 */
            const __m512i sa = _mm512_loadu_si512(g + 32 + 64 * (2 * h)), sb = _mm512_loadu_si512(g + 32 + 64 * (2 * h + 1));
            __m512i s[4];
            s[0] = q6_scale_at(sa, 2 * k, 1);
            s[1] = q6_scale_at(sa, 2 * k + 1, 1);
            s[2] = q6_scale_at(sb, 2 * k, 1);
            s[3] = q6_scale_at(sb, 2 * k + 1, 0);
            UNROLL for (int t = 0; t < RT; t++)
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(
                    _mm512_add_epi32(_mm512_mullo_epi32(p[t][0], s[0]), _mm512_mullo_epi32(p[t][1], s[1])),
                    _mm512_add_epi32(_mm512_mullo_epi32(p[t][2], s[2]), _mm512_mullo_epi32(p[t][3], s[3]))));
            UNROLL for (int t = 0; t < RT; t++) __asm__("" : "+v"(isum[t])); /* scaled here, not spilled */
        }
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_srai_epi32(isum[t], 2);
        if (RT == 1) pk_prefetch(g + 3072, 288); /* lines 48..52 of the block 3360 bytes long */
        q6_finish(RT, g, x, xs, b, isum, acc);
    }
}

/*
 * bf16 packed layout of F16 / BF16 weights (opt-in: a model loaded with bf16_matmul; see
 * l3c_type_traits.packed_bf16). Per 32-element block a group holds 16 chunks of 64 bytes: chunk p,
 * lane r = the bf16 pair (element 2p, element 2p + 1) of row r (F16 weights rounded to bf16,
 * nearest even, at load; BF16 copied). Activations are rounded to bf16 the same way, in blocks
 * of 32 (64 bytes). Kernel: one _mm512_dpbf16_ps per pair chunk and token (32 multiply-adds of
 * exact bf16 products into fp32): one chain per (row, token) in element order, the same for every
 * tile shape, so batch invariant; twice the multiply-adds per instruction of the fp32 FMA path.
 */
#define PKF_BLK 64 /* bytes of one row's 32-element block of 16-bit values, in every layout below */

/* 32 floats to 32 bf16 (round to nearest even, as l3c_fp32_to_bf16 for non-NaN values) */
INLINE __m512i bf16x32(const float *src) {
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
}

static void pack_act_bf16(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 32) _mm512_storeu_si512((char *)dst + 2 * i, bf16x32(src + i));
}

/* one block of 32 elements of row r to the group block gb (as dwords: pair p to lane r of chunk p) */
INLINE void pk_bf16_scatter(__m512i pairs, uint8_t *gb, int64_t r) {
    uint32_t dw[16];
    _mm512_storeu_si512(dw, pairs);
    for (int p = 0; p < 16; p++) memcpy(gb + 64 * p + 4 * r, &dw[p], 4);
}

static void pack_bf16_group(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst, bool from_f16) {
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / 32; b++) {
        uint8_t *gb = out + b * (PK_ROWS * PKF_BLK);
        if (n_rows < PK_ROWS) memset(gb, 0, PK_ROWS * PKF_BLK);
        for (int64_t r = 0; r < n_rows; r++) {
            const uint16_t *src = (const uint16_t *)((const char *)w + r * ws) + 32 * b;
            __m512i v;
            if (from_f16) {
                float f[32];
                _mm512_storeu_ps(f, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src)));
                _mm512_storeu_ps(f + 16, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + 16))));
                v = bf16x32(f);
            } else {
                v = _mm512_loadu_si512(src);
            }
            pk_bf16_scatter(v, gb, r);
        }
    }
}
static void pack_f16(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    pack_bf16_group(n, n_rows, w, ws, dst, true);
}
static void pack_bf16(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    pack_bf16_group(n, n_rows, w, ws, dst, false);
}

static void unpack_bf16(int64_t n, const void *g, int r, void *dst) {
    uint16_t *o = dst;
    for (int64_t b = 0; b < n / 32; b++)
        for (int p = 0; p < 16; p++)
            memcpy(o + 32 * b + 2 * p, (const uint8_t *)g + b * (PK_ROWS * PKF_BLK) + 64 * p + 4 * r, 4);
}

/* to F16, the file's type: the bf16 values, which are F16 values except where rounding carried
 * past 65504 (saturated to +-65504) */
static void unpack_f16(int64_t n, const void *g, int r, void *dst) {
    uint16_t *o = dst;
    unpack_bf16(n, g, r, dst);
    for (int64_t i = 0; i < n; i++) {
        float f = l3c_bf16_to_fp32(o[i]);
        o[i] = l3c_fp32_to_fp16(f > 65504.0f ? 65504.0f : f < -65504.0f ? -65504.0f : f);
    }
}

/* The driver of every packed type: PK_RT tokens x 16 rows per tile call; TILE(RT, nb, wp, x, xs,
 * acc) accumulates one group, QK = elements per block of the file's type. */
#define PK_KERNEL(name, TILE, BLK, QK)                                                            \
    INLINE void pk_run_##name(int RT, int64_t nb, const char *wp, const char *x, size_t xs, float *y, \
                              int64_t ldy, __mmask16 rows) {                                      \
        __m512 acc[PK_RT];                                                                        \
        UNROLL for (int t = 0; t < RT; t++) acc[t] = _mm512_setzero_ps();                         \
        TILE(RT, nb, wp, x, xs, acc);                                                             \
        UNROLL for (int t = 0; t < RT; t++) _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);     \
    }                                                                                             \
    static void gemm_packed_##name(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy,   \
                                   const void *wp, const void *x, size_t xs) {                   \
        const int64_t nb = n / (QK);                                                              \
        const size_t gbytes = (size_t)nb * PK_ROWS * sizeof(BLK);                                 \
        for (int64_t t0 = 0; t0 < T; t0 += PK_RT) {                                               \
            const int rt = (int)L3C_MIN(PK_RT, T - t0);                                           \
            const char *xt = (const char *)x + t0 * xs;                                           \
            for (int64_t r0 = 0; r0 < n_rows; r0 += PK_ROWS) {                                    \
                const char *g = (const char *)wp + (size_t)(r0 / PK_ROWS) * gbytes;              \
                const int nr = (int)L3C_MIN(PK_ROWS, n_rows - r0);                                \
                const __mmask16 rows = (__mmask16)((1u << nr) - 1);                               \
                float *yt = y + t0 * ldy + r0;                                                    \
                switch (rt) { /* constant RT: the tile's loops unroll into registers */          \
                case 1: pk_run_##name(1, nb, g, xt, xs, yt, ldy, rows); break;                    \
                case 2: pk_run_##name(2, nb, g, xt, xs, yt, ldy, rows); break;                    \
                case 3: pk_run_##name(3, nb, g, xt, xs, yt, ldy, rows); break;                    \
                case 4: pk_run_##name(4, nb, g, xt, xs, yt, ldy, rows); break;                    \
                case 5: pk_run_##name(5, nb, g, xt, xs, yt, ldy, rows); break;                    \
                case 6: pk_run_##name(6, nb, g, xt, xs, yt, ldy, rows); break;                    \
                case 7: pk_run_##name(7, nb, g, xt, xs, yt, ldy, rows); break;                    \
                default: pk_run_##name(PK_RT, nb, g, xt, xs, yt, ldy, rows); break;               \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

/* Q4_0: one token on its own kernel (decode), more through the shared tile */
#define PK_TILE_Q4_0(RT, ...)                                                                      \
    ((RT) == 1 ? pk_q4_0_gemv(__VA_ARGS__) : pk_tile(B_Q4_0, RT, __VA_ARGS__))
#define PK_TILE_Q8_0(RT, ...) pk_tile(B_Q8_0, RT, __VA_ARGS__)
PK_KERNEL(q4_0, PK_TILE_Q4_0, l3c_block_q4_0, 32)
PK_KERNEL(q8_0, PK_TILE_Q8_0, l3c_block_q8_0, 32)
PK_KERNEL(q4_1, pk_q4_1_tile, l3c_block_q4_1, 32)
/* Q3_K: up to 4 tokens triple by triple in memory order, more half round by half round */
#define PK_TILE_Q3_K(RT, ...) \
    ((RT) <= 4 ? pk_q3_K_tile_cm(RT, __VA_ARGS__) : pk_q3_K_tile(RT, __VA_ARGS__))
PK_KERNEL(q3_K, PK_TILE_Q3_K, l3c_block_q3_K, 256)
/* Q4_K: up to 4 tokens chunk by chunk in memory order, more sub-block by sub-block */
#define PK_TILE_Q4_K(RT, ...) \
    ((RT) <= 4 ? pk_q4_K_tile_cm(RT, __VA_ARGS__) : pk_q4_K_tile(RT, __VA_ARGS__))
PK_KERNEL(q4_K, PK_TILE_Q4_K, l3c_block_q4_K, 256)
/* Q6_K: up to 4 tokens column by column (16 partial dots in registers), more quarter by quarter */
#define PK_TILE_Q6_K(RT, ...) \
    ((RT) <= 4 ? pk_q6_K_tile_cm(RT, __VA_ARGS__) : pk_q6_K_tile(RT, __VA_ARGS__))
PK_KERNEL(q6_K, PK_TILE_Q6_K, l3c_block_q6_K, 256)
/*
 * Exact packed layout of F16 / BF16 (the default for those types): per 32-element block a group
 * holds 32 chunks of 32 bytes, chunk k = element k of the 16 rows, in the file's type. Kernel:
 * the chunk widened exactly to 16 floats (vcvtph2ps; a 16-bit shift for bf16), then per token
 * acc = fma(w, x, acc) with the broadcast fp32 activation: one chain per (row, token) in element
 * order, the same for every tile shape (batch invariant).
 */
/* per block: each row's pairs (2p, 2p + 1) to lane r of a pair chunk p (as the bf16 layout), then
 * one word permutation per pair chunk: [element 2p of rows 0..15, element 2p + 1 of rows 0..15] =
 * chunks 2p and 2p + 1 (a 1B F16 model loads in 0.9 s instead of 1.6 s from the page cache) */
static void pack_x16(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    const __m512i evens_then_odds = _mm512_set_epi16(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1,
                                                     30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    _Alignas(64) uint8_t pairs[PK_ROWS * PKF_BLK];
    if (n_rows < PK_ROWS) memset(pairs, 0, sizeof pairs); /* padding rows stay zero */
    for (int64_t b = 0; b < n / 32; b++) {
        uint8_t *gb = (uint8_t *)dst + b * (PK_ROWS * PKF_BLK);
        for (int64_t r = 0; r < n_rows; r++)
            pk_bf16_scatter(_mm512_loadu_si512((const uint8_t *)w + r * ws + 64 * b), pairs, r);
        for (int p = 0; p < 16; p++)
            _mm512_storeu_si512(gb + 64 * p, _mm512_permutexvar_epi16(evens_then_odds, _mm512_load_si512(pairs + 64 * p)));
    }
}

static void unpack_x16(int64_t n, const void *g, int r, void *dst) {
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *gb = (const uint8_t *)g + b * (PK_ROWS * PKF_BLK);
        for (int k = 0; k < 32; k++) memcpy((uint8_t *)dst + 64 * b + 2 * k, gb + 32 * k + 2 * r, 2);
    }
}

/* The F16 / BF16 packed family: PKF_DOT is the bf16 pair layout (vdpbf16ps), PKF_F16 / PKF_BF16
 * the exact one. G groups (1 or 2: two share each activation broadcast) x RT tokens;
 * acc[g][t] lane r = (row 16 g + r, token t). */
enum { PKF_DOT, PKF_F16, PKF_BF16 };

INLINE __m512 pkf_widen(int kind, const char *p) {
    const __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return kind == PKF_F16 ? _mm512_cvtph_ps(h) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE void pkf_tile(int kind, int G, int RT, int64_t nb, const char *wp, size_t gbytes, const char *x, size_t xs,
                     __m512 acc[2][PK_RT]) {
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * (PK_ROWS * PKF_BLK);
        if (kind == PKF_DOT) {
            for (int p = 0; p < 16; p++) {
                __m512bh w[2];
                UNROLL for (int gi = 0; gi < G; gi++) w[gi] = (__m512bh)_mm512_loadu_si512(g + gi * gbytes + 64 * p);
                UNROLL for (int t = 0; t < RT; t++) {
                    const __m512bh xv = (__m512bh)bcast32(x + t * xs + 64 * b + 4 * p);
                    UNROLL for (int gi = 0; gi < G; gi++) acc[gi][t] = _mm512_dpbf16_ps(acc[gi][t], w[gi], xv);
                }
            }
        } else {
            for (int k = 0; k < 32; k++) {
                __m512 w[2];
                UNROLL for (int gi = 0; gi < G; gi++) w[gi] = pkf_widen(kind, g + gi * gbytes + 32 * k);
                UNROLL for (int t = 0; t < RT; t++) {
                    const __m512 xv = _mm512_set1_ps(((const float *)(x + t * xs))[32 * b + k]);
                    UNROLL for (int gi = 0; gi < G; gi++) acc[gi][t] = _mm512_fmadd_ps(w[gi], xv, acc[gi][t]);
                }
            }
        }
    }
}

INLINE void pkf_run(int kind, int G, int RT, int64_t nb, const char *wp, size_t gbytes, const char *x, size_t xs,
                    float *y, int64_t ldy, __mmask16 last) {
    __m512 acc[2][PK_RT];
    UNROLL for (int gi = 0; gi < G; gi++) UNROLL for (int t = 0; t < RT; t++) acc[gi][t] = _mm512_setzero_ps();
    pkf_tile(kind, G, RT, nb, wp, gbytes, x, xs, acc);
    UNROLL for (int t = 0; t < RT; t++) UNROLL for (int gi = 0; gi < G; gi++)
        _mm512_mask_storeu_ps(y + t * ldy + PK_ROWS * gi, gi == G - 1 ? last : 0xFFFF, acc[gi][t]);
}

INLINE void pkf_gemm(int kind, int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy, const void *wp,
                     const void *x, size_t xs) {
    const int64_t nb = n / 32;
    const size_t gbytes = (size_t)nb * PK_ROWS * PKF_BLK;
    for (int64_t t0 = 0; t0 < T; t0 += PK_RT) {
        const int rt = (int)L3C_MIN(PK_RT, T - t0);
        const char *xt = (const char *)x + t0 * xs;
        for (int64_t r0 = 0; r0 < n_rows; r0 += 2 * PK_ROWS) {
            const char *g = (const char *)wp + (size_t)(r0 / PK_ROWS) * gbytes;
            const int two = n_rows - r0 > PK_ROWS;
            const int nr = (int)L3C_MIN(PK_ROWS, n_rows - r0 - PK_ROWS * two);
            const __mmask16 last = (__mmask16)((1u << nr) - 1);
            float *yt = y + t0 * ldy + r0;
#define PKF_CASE(RT)                                                                  \
    case RT:                                                                          \
        if (two) pkf_run(kind, 2, RT, nb, g, gbytes, xt, xs, yt, ldy, last);          \
        else pkf_run(kind, 1, RT, nb, g, gbytes, xt, xs, yt, ldy, last);              \
        break;
            switch (rt) { /* constant G and RT: the tile's loops unroll into registers */
                PKF_CASE(1) PKF_CASE(2) PKF_CASE(3) PKF_CASE(4) PKF_CASE(5) PKF_CASE(6) PKF_CASE(7)
                default: PKF_CASE(8)
            }
#undef PKF_CASE
        }
    }
}

static void gemm_packed_bf16(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy, const void *wp,
                             const void *x, size_t xs) {
    pkf_gemm(PKF_DOT, n, n_rows, T, y, ldy, wp, x, xs);
}
static void gemm_packed_f16x(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy, const void *wp,
                             const void *x, size_t xs) {
    pkf_gemm(PKF_F16, n, n_rows, T, y, ldy, wp, x, xs);
}
static void gemm_packed_bf16x(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy, const void *wp,
                              const void *x, size_t xs) {
    pkf_gemm(PKF_BF16, n, n_rows, T, y, ldy, wp, x, xs);
}

/* ---------------------------------------------------------------- packed Q5_K (16 rows) */

/*
 * Per super-block a group holds 16 x 176 bytes: d[16], dmin[16] and the 3 scale chunks exactly as
 * packed Q4_K (so q4k_scales / q4k_finish serve both), then per 64-element pair j 10 chunks of 64
 * bytes, in the order the one-token tile reads them. With a_l, b_l the 5-bit quants of element l
 * (< 32) of sub-blocks 2j and 2j + 1:
 *   Q5_B(j, k), k < 2: byte i of lane r holds b_l >> 3 of row r at bits 2m, 2m + 1 for the 4
 *                columns c = 4k + m (l = 4c + i);
 *   Q5_Y(j, c), c < 8: byte i of lane r = a_l << 3 | (b_l & 7) of row r (l = 4c + i).
 * Then Y & 0xF8 = 8 a (one and) and b = (Y & 7) | (B shifted by 3 - 2m) & 0x18 (a shift, an and,
 * a ternlog): 4 ops per Y chunk for both quants, where the file's nibbles plus planes of 5th bits
 * took 7 (a one-token kernel ~12% slower). The dots of a are 8x theirs, so b's take 8 sc and
 * isum8 = 8 isum exactly (|isum8| < 2^29) is shifted back before Q4_K's epilogue (mins from the
 * Q8_K group sums, per-lane float): the same operations for every tile shape, batch invariant.
 */
/* Q5_B, Q5_Y and q5_high: x86_packed.h (the AMX kernel unpacks the same chunks) */

/* per row and pair j, 8 elements per 64-bit word: bytes of a and b, then Y and B as above */
static void pack_q5_K(int64_t n, int64_t n_rows, const void *w, size_t ws, void *dst) {
    const uint64_t m01 = 0x0101010101010101u;
    for (int64_t b = 0; b < n / 256; b++) {
        uint8_t *g = (uint8_t *)dst + b * (PK_ROWS * sizeof(l3c_block_q5_K));
        memset(g, 0, PK_ROWS * sizeof(l3c_block_q5_K));
        for (int64_t r = 0; r < n_rows; r++) {
            const l3c_block_q5_K *blk = (const l3c_block_q5_K *)((const char *)w + r * ws) + b;
            kq_header_pack(g, r, &blk->d, &blk->dmin, blk->scales);
            for (int j = 0; j < 4; j++) {
                uint64_t hb[4]; /* bytes b_l >> 3 of l = 8 wd .. 8 wd + 7 */
                for (int wd = 0; wd < 4; wd++) {
                    uint64_t q, h;
                    memcpy(&q, blk->qs + 32 * j + 8 * wd, 8);
                    memcpy(&h, blk->qh + 8 * wd, 8);
                    h >>= 2 * j;
                    const uint64_t a = (q & 15 * m01) | (h & m01) << 4, bq = (q >> 4 & 15 * m01) | (h & 2 * m01) << 3;
                    const uint64_t y = a << 3 | (bq & 7 * m01);
                    memcpy(g + Q5_Y(j, 2 * wd) + 4 * r, &y, 4); /* bytes 4..7: l = 8 wd + 4 + i */
                    memcpy(g + Q5_Y(j, 2 * wd + 1) + 4 * r, (const char *)&y + 4, 4);
                    hb[wd] = bq >> 3 & 3 * m01;
                }
                for (int k = 0; k < 2; k++) { /* columns 4k + m: words 2k, 2k + 1, low then high half */
                    const uint64_t lo = hb[2 * k], hi = hb[2 * k + 1];
                    const uint32_t v = (uint32_t)lo | (uint32_t)(lo >> 32) << 2 | (uint32_t)hi << 4 | (uint32_t)(hi >> 32) << 6;
                    memcpy(g + Q5_B(j, k) + 4 * r, &v, 4);
                }
            }
        }
    }
}

static void unpack_q5_K(int64_t n, const void *gv, int r, void *dst) {
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *g = (const uint8_t *)gv + b * (PK_ROWS * sizeof(l3c_block_q5_K));
        l3c_block_q5_K *blk = (l3c_block_q5_K *)dst + b;
        kq_header_unpack(g, r, &blk->d, &blk->dmin, blk->scales);
        memset(blk->qh, 0, sizeof blk->qh);
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                const int c = l / 4, i = l % 4, y = g[Q5_Y(j, c) + 4 * r + i];
                const int a = y >> 3, bq = (y & 7) | (g[Q5_B(j, c / 4) + 4 * r + i] >> 2 * (c % 4) & 3) << 3;
                blk->qs[32 * j + l] = (uint8_t)((a & 15) | (bq & 15) << 4);
                blk->qh[l] |= (uint8_t)((a >> 4 | (bq >> 4) << 1) << 2 * j);
            }
    }
}

/* many tokens: per sub-block, its 8 unpacked chunks stay in registers for all RT tokens */
INLINE void pk_q5_K_tile(int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    const __m512i mf8 = _mm512_set1_epi8((char)0xF8);
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * (PK_ROWS * sizeof(l3c_block_q5_K));
        __m512i u[4];
        q4k_scales(g, u);
        __m512i isum[PK_RT];
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) UNROLL for (int h = 0; h < 2; h++) {
            const __m512i sc = h ? _mm512_slli_epi32(q4k_byte(u, 2 * j + 1), 3) : q4k_byte(u, 2 * j);
            __m512i q[8];
            UNROLL for (int c = 0; c < 8; c++) {
                const __m512i y = _mm512_loadu_si512(g + Q5_Y(j, c));
                q[c] = h ? q5_high(y, _mm512_loadu_si512(g + Q5_B(j, c / 4)), c) : _mm512_and_si512(y, mf8);
            }
            UNROLL for (int t = 0; t < RT; t++) {
                const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 64 * j + 32 * h;
                __m512i p = _mm512_setzero_si512();
                UNROLL for (int c = 0; c < 8; c++) p = dpbusd_b(p, q[c], xq + 4 * c);
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(p, sc));
            }
        }
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_srai_epi32(isum[t], 3);
        q4k_finish(RT, g, u, x, xs, b, isum, acc);
    }
}

/*
 * few tokens (generation): the 10 chunks of each pair j in memory order, each loaded once; per
 * token 2 NP partial dots in flight (a / b x NP column ranges; NP = 1 from 3 tokens on, so that
 * the partials, u and the unpacking fit in the 32 registers).
 */
INLINE void pk_q5_K_tile_cm(int RT, int64_t nb, const char *wp, const char *x, size_t xs, __m512 acc[PK_RT]) {
    const int NP = RT <= 2 ? 2 : 1;
    const __m512i mf8 = _mm512_set1_epi8((char)0xF8);
    for (int64_t b = 0; b < nb; b++) {
        const char *g = wp + b * (PK_ROWS * sizeof(l3c_block_q5_K));
        __m512i u[4];
        q4k_scales(g, u);
        __m512i isum[PK_RT];
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < 4; j++) {
            const __m512i b0 = _mm512_loadu_si512(g + Q5_B(j, 0)), b1 = _mm512_loadu_si512(g + Q5_B(j, 1));
            __m512i p[PK_RT][4];
            UNROLL for (int t = 0; t < RT; t++) UNROLL for (int k = 0; k < 2 * NP; k++) p[t][k] = _mm512_setzero_si512();
            UNROLL for (int c = 0; c < 8; c++) {
                __m512i y = _mm512_loadu_si512(g + Q5_Y(j, c));
                __asm__("" : "+v"(y)); /* one load for both quants, not one folded into each use */
                const __m512i lo = _mm512_and_si512(y, mf8), hi = q5_high(y, c < 4 ? b0 : b1, c);
                const int k = c * NP / 8;
                UNROLL for (int t = 0; t < RT; t++) {
                    const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 64 * j + 4 * c;
                    p[t][k] = dpbusd_b(p[t][k], lo, xq);
                    p[t][NP + k] = dpbusd_b(p[t][NP + k], hi, xq + 32);
                }
            }
            const __m512i s0 = q4k_byte(u, 2 * j), s1 = _mm512_slli_epi32(q4k_byte(u, 2 * j + 1), 3);
            UNROLL for (int t = 0; t < RT; t++) {
                __m512i d0 = p[t][0], d1 = p[t][NP];
                if (NP == 2) d0 = _mm512_add_epi32(d0, p[t][1]), d1 = _mm512_add_epi32(d1, p[t][3]);
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(d0, s0), _mm512_mullo_epi32(d1, s1)));
            }
        }
        UNROLL for (int t = 0; t < RT; t++) isum[t] = _mm512_srai_epi32(isum[t], 3);
        q4k_finish(RT, g, u, x, xs, b, isum, acc);
    }
}

/* Q5_K: up to 4 tokens pair by pair in memory order, more sub-block by sub-block */
#define PK_TILE_Q5_K(RT, ...) \
    ((RT) <= 4 ? pk_q5_K_tile_cm(RT, __VA_ARGS__) : pk_q5_K_tile(RT, __VA_ARGS__))
PK_KERNEL(q5_K, PK_TILE_Q5_K, l3c_block_q5_K, 256)

/* ---------------------------------------------------------------- tables */

#define T_F32(RW, RT, ...) tile_float(K_F32, RW, RT, __VA_ARGS__)
#define T_F16(RW, RT, ...) tile_float(K_F16, RW, RT, __VA_ARGS__)
#define T_BF16(RW, RT, ...) tile_float(K_BF16, RW, RT, __VA_ARGS__)
#define T_Q4_0(RW, RT, ...) tile_pair(B_Q4_0, RW, RT, __VA_ARGS__)
#define T_Q4_1(RW, RT, ...) tile_b32(B_Q4_1, RW, RT, __VA_ARGS__)
#define T_Q5_0(RW, RT, ...) tile_b32(B_Q5_0, RW, RT, __VA_ARGS__)
#define T_Q5_1(RW, RT, ...) tile_b32(B_Q5_1, RW, RT, __VA_ARGS__)
#define T_Q8_0(RW, RT, ...) tile_pair(B_Q8_0, RW, RT, __VA_ARGS__)
#define T_Q2_K(RW, RT, ...) tile_q23_K(false, RW, RT, __VA_ARGS__)
#define T_Q3_K(RW, RT, ...) tile_q23_K(true, RW, RT, __VA_ARGS__)
#define T_Q4_K(RW, RT, ...) tile_q4_K(RW, RT, __VA_ARGS__)
#define T_Q6_K(RW, RT, ...) tile_q6_K(RW, RT, __VA_ARGS__)

X86_DEFINE_KERNELS(f32, T_F32)
X86_DEFINE_KERNELS(f16, T_F16)
X86_DEFINE_KERNELS(bf16, T_BF16)
X86_DEFINE_KERNELS(q4_0, T_Q4_0)
X86_DEFINE_KERNELS_T(q4_1, T_Q4_1, 2, 4)
X86_DEFINE_KERNELS_T(q5_0, T_Q5_0, 2, 4)
X86_DEFINE_KERNELS_T(q5_1, T_Q5_1, 2, 4)
X86_DEFINE_KERNELS(q8_0, T_Q8_0)
X86_DEFINE_KERNELS(q2_K, T_Q2_K)
X86_DEFINE_KERNELS(q3_K, T_Q3_K)
X86_DEFINE_KERNELS(q4_K, T_Q4_K)
X86_DEFINE_KERNELS(q6_K, T_Q6_K)

#define SET_DOT(id, name)                   \
    do {                                    \
        table[id].vec_dot = vec_dot_##name; \
        table[id].gemm = gemm_##name;       \
    } while (0)

#define LAYOUT(pk, unpk, kernel, act_from, act_block, act_bytes)                                      \
    ((l3c_pack_layout){.rows = PK_ROWS, .pack = pk, .unpack = unpk, .gemm = kernel, .act_from_float = act_from, \
                       .act_block_size = act_block, .act_type_size = act_bytes})
#define SET_PACKED(id, name, act_from, act_block, act_bytes) \
    table[id].packed = LAYOUT(pack_##name, unpack_##name, gemm_packed_##name, act_from, act_block, act_bytes)

bool l3c_kernels_override_avx512(l3c_type_traits *table) {
    if (!table) return true; /* built: the path exists */
    table[L3C_TYPE_Q8_0].from_float = from_float_q8_0;
    table[L3C_TYPE_Q8_K].from_float = from_float_q8_K;
    SET_DOT(L3C_TYPE_F32, f32);
    SET_DOT(L3C_TYPE_F16, f16);
    SET_DOT(L3C_TYPE_BF16, bf16);
    SET_DOT(L3C_TYPE_Q4_0, q4_0);
    SET_DOT(L3C_TYPE_Q4_1, q4_1);
    SET_DOT(L3C_TYPE_Q5_0, q5_0);
    SET_DOT(L3C_TYPE_Q5_1, q5_1);
    SET_DOT(L3C_TYPE_Q8_0, q8_0);
    SET_DOT(L3C_TYPE_Q2_K, q2_K);
    SET_DOT(L3C_TYPE_Q3_K, q3_K);
    SET_DOT(L3C_TYPE_Q4_K, q4_K);
    SET_DOT(L3C_TYPE_Q6_K, q6_K);
    SET_PACKED(L3C_TYPE_Q4_0, q4_0, pack_act_q4_0, 32, sizeof(l3c_block_q8_0x));
    SET_PACKED(L3C_TYPE_Q8_0, q8_0, pack_act_q8_0, 32, sizeof(l3c_block_q8_0x));
    SET_PACKED(L3C_TYPE_Q4_1, q4_1, pack_act_q4_1, 32, sizeof(l3c_block_q8_1x));
    SET_PACKED(L3C_TYPE_Q3_K, q3_K, from_float_q8_K, 256, sizeof(l3c_block_q8_K));
    SET_PACKED(L3C_TYPE_Q4_K, q4_K, from_float_q8_K, 256, sizeof(l3c_block_q8_K));
    SET_PACKED(L3C_TYPE_Q5_K, q5_K, from_float_q8_K, 256, sizeof(l3c_block_q8_K));
    SET_PACKED(L3C_TYPE_Q6_K, q6_K, from_float_q8_K, 256, sizeof(l3c_block_q8_K));
    /* F16 / BF16: exact (fp32 activations used in place), and bf16 for bf16_matmul only */
    table[L3C_TYPE_F16].packed = LAYOUT(pack_x16, unpack_x16, gemm_packed_f16x, NULL, 32, 32 * sizeof(float));
    table[L3C_TYPE_BF16].packed = LAYOUT(pack_x16, unpack_x16, gemm_packed_bf16x, NULL, 32, 32 * sizeof(float));
    table[L3C_TYPE_F16].packed_bf16 = LAYOUT(pack_f16, unpack_f16, gemm_packed_bf16, pack_act_bf16, 32, 64);
    table[L3C_TYPE_BF16].packed_bf16 = LAYOUT(pack_bf16, unpack_bf16, gemm_packed_bf16, pack_act_bf16, 32, 64);
    return true;
}

#else
/* Compiled without the ISA flags (or not x86-64): an empty hook, so the strong reference in
 * dispatch.c links; the table stays as it was. */
#include "kernels/types.h"
bool l3c_kernels_override_avx512(l3c_type_traits *table) { (void)table; return false; }
#endif
