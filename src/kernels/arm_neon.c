/*
 * arm_neon.c -- AArch64 NEON + dot-product kernels: activation quantizers (Q8_0, Q8_1, Q8_K),
 * F16/BF16 to_float, F16 from_float, and one "tile" kernel per weight type (F32, F16, BF16, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) that serves both vec_dot and gemm.
 *
 * ISA choice: the whole file is compiled with -march=armv8.2-a+dotprod (Makefile ISA_FLAGS) and
 * the integer block sums use SDOT (vdotq_s32); there is no NEON-without-dotprod variant. The
 * "neon" path is therefore offered only where the kernel reports the dot-product extension
 * (dispatch.c: getauxval(AT_HWCAP) & HWCAP_ASIMDDP, Armv8.2+ cores such as Cortex-A55/A76,
 * Neoverse, Apple M); older cores (Cortex-A53/A72) run the scalar reference. Compiled without
 * those flags (or not for AArch64) the file defines an empty hook that reports "not built".
 *
 * Tile kernels: tile_<type>(RW, RT, ...) computes the RW x RT dot products of RW weight rows with
 * RT activation rows in one pass over the blocks; RW and RT are compile-time constants after
 * inlining (always_inline + GCC unroll), so the accumulators stay in registers. vec_dot is the
 * 1 x 1 tile; gemm walks 2 x 2 tiles (not tuned on hardware: sized so that accumulators and
 * operands fit the 32 vector registers) and finishes ragged edges with 1 x 1 tiles.
 *
 * Batch invariance: every tile computes each (row, token) pair with the operations and order of
 * the 1 x 1 tile (same accumulator chains, lane layout, FMAs and final reduction), so gemm ==
 * vec_dot bit for bit whatever T, the tile or the token's place (tests/unit/test_simd.c).
 * Exactness: SDOT sums int8 products into int32 lanes exactly, sub-block scales are applied in
 * int32, so every integer block sum is exact; only the float accumulation order differs from
 * ref.c. The quantizers reproduce ref.c bit for bit (same scale arithmetic; FCVTAS rounds half
 * away from zero like roundf for Q8_0/Q8_1, FCVTNS half to even like lrintf for Q8_K).
 */
#if defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)

#include "kernels/blocks.h"
#include "kernels/ref.h"
#include "kernels/tile_kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#define GEMM_RW 2
#define GEMM_RT 2
#define MAXR 2 /* array bounds for the tile accumulators (>= GEMM_RW, GEMM_RT) */
#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

static inline float fp16_to_f32(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

static inline uint16_t f32_to_fp16(float f) { /* FCVT: round to nearest even, like ref */
    return vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(f))), 0);
}

/* 4 x 4 int32 (each in [-128, 127]) -> 16 int8 in element order */
static inline int8x16_t narrow_i32_to_i8(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    int16x8_t ab = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    int16x8_t cd = vcombine_s16(vqmovn_s32(c), vqmovn_s32(d));
    return vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd));
}

/* ---------------------------------------------------------------- activation quantizers */

/* Q8_0 / Q8_1 block: d = amax / 127, q = roundf(x / d), exactly as ref.c. Returns d, *sum. */
static inline float quant_q8_block(const float *x, int8_t *qs, int *sum) {
    float32x4_t v[8], m = vdupq_n_f32(0.0f);
    UNROLL for (int k = 0; k < 8; k++) {
        v[k] = vld1q_f32(x + 4 * k);
        m = vmaxq_f32(m, vabsq_f32(v[k]));
    }
    float amax = vmaxvq_f32(m);
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32x4_t q[8], s = vdupq_n_s32(0);
    UNROLL for (int k = 0; k < 8; k++) {
        q[k] = vcvtaq_s32_f32(vmulq_n_f32(v[k], id)); /* one rounding of x * id, then roundf */
        s = vaddq_s32(s, q[k]);
    }
    vst1q_s8(qs, narrow_i32_to_i8(q[0], q[1], q[2], q[3]));
    vst1q_s8(qs + 16, narrow_i32_to_i8(q[4], q[5], q[6], q[7]));
    if (sum) *sum = vaddvq_s32(s);
    return d;
}

static void from_float_q8_0(const float *src, void *dst, int64_t n) {
    l3c_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++)
        b[i].d = f32_to_fp16(quant_q8_block(src + i * 32, b[i].qs, NULL));
}

static void from_float_q8_1(const float *src, void *dst, int64_t n) {
    l3c_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        int sum;
        float d = quant_q8_block(src + i * 32, b[i].qs, &sum);
        b[i].d = f32_to_fp16(d);
        b[i].s = f32_to_fp16((float)sum * d);
    }
}

/* ggml quantize_row_q8_K: the first element of largest magnitude maps to -127 */
static void from_float_q8_K(const float *src, void *dst, int64_t n) {
    l3c_block_q8_K *b = dst;
    for (int64_t i = 0; i < n / 256; i++) {
        const float *x = src + i * 256;
        float32x4_t m = vdupq_n_f32(0.0f);
        for (int j = 0; j < 256; j += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + j)));
        float amax = vmaxvq_f32(m);
        if (amax == 0.0f) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        int first = 0;
        const float32x4_t va = vdupq_n_f32(amax);
        for (int j = 0; j < 256; j += 4) {
            if (vmaxvq_u32(vceqq_f32(vabsq_f32(vld1q_f32(x + j)), va)) == 0) continue;
            first = j;
            while (fabsf(x[first]) != amax) first++;
            break;
        }
        float iscale = -127.0f / x[first];
        for (int j = 0; j < 256; j += 16) {
            int32x4_t q[4];
            UNROLL for (int k = 0; k < 4; k++)
                q[k] = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j + 4 * k), iscale)); /* lrintf */
            int8x16_t v = narrow_i32_to_i8(q[0], q[1], q[2], q[3]); /* saturates at 127 */
            vst1q_s8(b[i].qs + j, v);
            b[i].bsums[j / 16] = vaddlvq_s8(v);
        }
        b[i].d = 1.0f / iscale;
    }
}

/* ---------------------------------------------------------------- float rows */

static void to_float_f16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t v = vreinterpretq_f16_u16(vld1q_u16(h + i));
        vst1q_f32(dst + i, vcvt_f32_f16(vget_low_f16(v)));
        vst1q_f32(dst + i + 4, vcvt_high_f32_f16(v));
    }
    for (; i < n; i++) dst[i] = fp16_to_f32(h[i]);
}

static void from_float_f16(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t v = vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(src + i)), vld1q_f32(src + i + 4));
        vst1q_u16(h + i, vreinterpretq_u16_f16(v));
    }
    for (; i < n; i++) h[i] = f32_to_fp16(src[i]);
}

static void to_float_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t v = vld1q_u16(h + i);
        vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16)));
        vst1q_f32(dst + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(v, 16)));
    }
    for (; i < n; i++) dst[i] = l3c_bf16_to_fp32(h[i]);
}

/* float weight rows: kind K_F32 / K_F16 / K_BF16 */
enum { K_F32, K_F16, K_BF16 };

INLINE float32x4_t load_w4(int kind, const char *w, int64_t i) {
    if (kind == K_F32) return vld1q_f32((const float *)w + i);
    uint16x4_t h = vld1_u16((const uint16_t *)w + i);
    if (kind == K_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

INLINE float scalar_w(int kind, const char *w, int64_t i) {
    if (kind == K_F32) return ((const float *)w)[i];
    if (kind == K_F16) return fp16_to_f32(((const uint16_t *)w)[i]);
    return l3c_bf16_to_fp32(((const uint16_t *)w)[i]);
}

/*
 * canonical order per pair: 16 elements per step into four float32x4 chains (one FMA each),
 * then 4 at a time into chain 0, chains summed as (c0 + c1) + (c2 + c3), one horizontal add,
 * then the last n % 4 elements by scalar FMA in element order
 */
INLINE void tile_float(int kind, int RW, int RT, int64_t n, const char *w, size_t ws, const char *x,
                       size_t xs, float *y, int64_t ldy) {
    float32x4_t acc[4][MAXR][MAXR];
    UNROLL for (int c = 0; c < 4; c++) UNROLL for (int r = 0; r < RW; r++)
        UNROLL for (int t = 0; t < RT; t++) acc[c][r][t] = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float32x4_t wv[MAXR][4];
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int c = 0; c < 4; c++)
            wv[r][c] = load_w4(kind, w + r * ws, i + 4 * c);
        UNROLL for (int t = 0; t < RT; t++) {
            const float *xt = (const float *)(x + t * xs) + i;
            UNROLL for (int c = 0; c < 4; c++) {
                float32x4_t xv = vld1q_f32(xt + 4 * c);
                UNROLL for (int r = 0; r < RW; r++)
                    acc[c][r][t] = vfmaq_f32(acc[c][r][t], wv[r][c], xv);
            }
        }
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t wv[MAXR];
        UNROLL for (int r = 0; r < RW; r++) wv[r] = load_w4(kind, w + r * ws, i);
        UNROLL for (int t = 0; t < RT; t++) {
            float32x4_t xv = vld1q_f32((const float *)(x + t * xs) + i);
            UNROLL for (int r = 0; r < RW; r++) acc[0][r][t] = vfmaq_f32(acc[0][r][t], wv[r], xv);
        }
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        float s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0][r][t], acc[1][r][t]),
                                       vaddq_f32(acc[2][r][t], acc[3][r][t])));
        const float *xt = (const float *)(x + t * xs);
        for (int64_t j = i; j < n; j++) s = fmaf(scalar_w(kind, w + r * ws, j), xt[j], s);
        y[t * ldy + r] = s;
    }
}

/* ---------------------------------------------------------------- 32-element blocks */

/* 32-element weight blocks unpacked to int8: Q4_0 in [-8, 7], Q4_1 in [0, 15], Q5_0 in
 * [-16, 15], Q5_1 in [0, 31]; lo holds elements 0..15, hi 16..31. */
enum { B_Q4_0, B_Q4_1, B_Q5_0, B_Q5_1 };

static const size_t b32_size[4] = {sizeof(l3c_block_q4_0), sizeof(l3c_block_q4_1),
                                   sizeof(l3c_block_q5_0), sizeof(l3c_block_q5_1)};

/* 16 bits (bytes k0, k1 of the little-endian word qh, 8 bits each) -> 16 bytes, 0x10 where set */
INLINE uint8x16_t bits_to_0x10(uint8x16_t table, uint8x16_t idx) {
    const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    return vandq_u8(vtstq_u8(vqtbl1q_u8(table, idx), bit), vdupq_n_u8(0x10));
}

INLINE void unpack_b32(int kind, const char *blk, int8x16_t *lo, int8x16_t *hi) {
    const uint8_t *qs = kind == B_Q4_0   ? ((const l3c_block_q4_0 *)blk)->qs
                        : kind == B_Q4_1 ? ((const l3c_block_q4_1 *)blk)->qs
                        : kind == B_Q5_0 ? ((const l3c_block_q5_0 *)blk)->qs
                                         : ((const l3c_block_q5_1 *)blk)->qs;
    uint8x16_t q = vld1q_u8(qs);
    uint8x16_t l = vandq_u8(q, vdupq_n_u8(0x0F)), h = vshrq_n_u8(q, 4);
    if (kind == B_Q5_0 || kind == B_Q5_1) {
        const uint8_t *qh = kind == B_Q5_0 ? ((const l3c_block_q5_0 *)blk)->qh
                                           : ((const l3c_block_q5_1 *)blk)->qh;
        uint32_t bits;
        memcpy(&bits, qh, 4); /* little-endian: element j is bit j */
        uint8x16_t table = vreinterpretq_u8_u32(vdupq_n_u32(bits));
        const uint8x16_t idx_lo = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
        const uint8x16_t idx_hi = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
        l = vorrq_u8(l, bits_to_0x10(table, idx_lo));
        h = vorrq_u8(h, bits_to_0x10(table, idx_hi));
    }
    const int8x16_t off = vdupq_n_s8(kind == B_Q4_0 ? 8 : kind == B_Q5_0 ? 16 : 0);
    *lo = vsubq_s8(vreinterpretq_s8_u8(l), off);
    *hi = vsubq_s8(vreinterpretq_s8_u8(h), off);
}

/*
 * Q4_0 / Q5_0 x Q8_0 and Q4_1 / Q5_1 x Q8_1. Canonical order per pair: block b's exact int32x4
 * SDOT sum is converted and added by one FMA with d_w * d_x into chain b & 1; the min term
 * m_w * s_x (Q4_1/Q5_1) into the scalar chain b & 1; y = hadd(chain0 + chain1) + (m0 + m1).
 */
INLINE void tile_b32(int kind, int RW, int RT, int64_t n, const char *w, size_t ws, const char *x,
                     size_t xs, float *y, int64_t ldy) {
    const bool has_min = kind == B_Q4_1 || kind == B_Q5_1;
    const size_t wbs = b32_size[kind];
    const size_t xbs = has_min ? sizeof(l3c_block_q8_1) : sizeof(l3c_block_q8_0);
    const size_t xq_off = has_min ? offsetof(l3c_block_q8_1, qs) : offsetof(l3c_block_q8_0, qs);
    float32x4_t acc[2][MAXR][MAXR];
    float macc[2][MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        acc[0][r][t] = acc[1][r][t] = vdupq_n_f32(0.0f);
        macc[0][r][t] = macc[1][r][t] = 0.0f;
    }
    const int64_t nb = n / 32;
    for (int64_t b0 = 0; b0 < nb; b0 += 2) UNROLL for (int u = 0; u < 2; u++) {
        const int64_t b = b0 + u;
        if (b >= nb) break;
        int8x16_t wl[MAXR], wh[MAXR];
        float dw[MAXR], mw[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            const char *blk = w + r * ws + b * wbs;
            unpack_b32(kind, blk, &wl[r], &wh[r]);
            uint16_t h[2];
            memcpy(h, blk, sizeof h); /* d (and m) lead every 32-block struct */
            dw[r] = fp16_to_f32(h[0]);
            mw[r] = has_min ? fp16_to_f32(h[1]) : 0.0f;
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const char *xb = x + t * xs + b * xbs;
            int8x16_t xl = vld1q_s8((const int8_t *)(xb + xq_off));
            int8x16_t xh = vld1q_s8((const int8_t *)(xb + xq_off + 16));
            uint16_t h[2];
            memcpy(h, xb, sizeof h); /* d (and s) */
            float dx = fp16_to_f32(h[0]);
            float sx = has_min ? fp16_to_f32(h[1]) : 0.0f;
            UNROLL for (int r = 0; r < RW; r++) {
                int32x4_t p = vdotq_s32(vdotq_s32(vdupq_n_s32(0), wl[r], xl), wh[r], xh);
                acc[u][r][t] = vfmaq_f32(acc[u][r][t], vcvtq_f32_s32(p), vdupq_n_f32(dw[r] * dx));
                if (has_min) macc[u][r][t] += mw[r] * sx;
            }
        }
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = vaddvq_f32(vaddq_f32(acc[0][r][t], acc[1][r][t])) +
                         (macc[0][r][t] + macc[1][r][t]);
}

/* Q8_0 x Q8_0: signed x signed SDOT, the same chains as tile_b32 */
INLINE void tile_q8_0(int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                      float *y, int64_t ldy) {
    float32x4_t acc[2][MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        acc[0][r][t] = acc[1][r][t] = vdupq_n_f32(0.0f);
    const int64_t nb = n / 32;
    for (int64_t b0 = 0; b0 < nb; b0 += 2) UNROLL for (int u = 0; u < 2; u++) {
        const int64_t b = b0 + u;
        if (b >= nb) break;
        int8x16_t wl[MAXR], wh[MAXR];
        float dw[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            const l3c_block_q8_0 *blk = (const l3c_block_q8_0 *)(w + r * ws) + b;
            wl[r] = vld1q_s8(blk->qs);
            wh[r] = vld1q_s8(blk->qs + 16);
            dw[r] = fp16_to_f32(blk->d);
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_0 *xb = (const l3c_block_q8_0 *)(x + t * xs) + b;
            int8x16_t xl = vld1q_s8(xb->qs), xh = vld1q_s8(xb->qs + 16);
            float dx = fp16_to_f32(xb->d);
            UNROLL for (int r = 0; r < RW; r++) {
                int32x4_t p = vdotq_s32(vdotq_s32(vdupq_n_s32(0), wl[r], xl), wh[r], xh);
                acc[u][r][t] = vfmaq_f32(acc[u][r][t], vcvtq_f32_s32(p), vdupq_n_f32(dw[r] * dx));
            }
        }
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = vaddvq_f32(vaddq_f32(acc[0][r][t], acc[1][r][t]));
}

/* ---------------------------------------------------------------- K-quants x Q8_K */

/*
 * Q2_K: element 128c + 32j + 16h + l is bits 2j..2j+1 of qs[32c + 16h + l], so each 16-byte
 * vector is sub-block s = 8c + 2j + h. sc[s] * q <= 15 * 3 fits int8, so the weights are scaled
 * before SDOT: one SDOT chain per pair and no int32 multiply per (pair, sub-block). Per block:
 * isum = sum_s sdot(sc[s] * q_s, x_s); msum = sum_s mn[s] * bsum[s]. Canonical order per pair:
 * acc += float(isum) * (d_w * d_x) (one FMA per block), macc += d_x * dmin_w * msum;
 * y = hadd(acc) - macc.
 */
INLINE void tile_q2_K(int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                      float *y, int64_t ldy) {
    const uint8x16_t m2 = vdupq_n_u8(3), m4 = vdupq_n_u8(0x0F);
    float32x4_t acc[MAXR][MAXR];
    float macc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        acc[r][t] = vdupq_n_f32(0.0f);
        macc[r][t] = 0.0f;
    }
    for (int64_t b = 0; b < n / 256; b++) {
        const l3c_block_q2_K *wb[MAXR];
        uint8_t sc[MAXR][16];
        int16x8_t mn[MAXR][2];
        float dw[MAXR], dmw[MAXR], dx[MAXR];
        int32x4_t isum[MAXR][MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            wb[r] = (const l3c_block_q2_K *)(w + r * ws) + b;
            uint8x16_t s = vld1q_u8(wb[r]->scales);
            vst1q_u8(sc[r], vandq_u8(s, m4));
            uint8x16_t m = vshrq_n_u8(s, 4);
            mn[r][0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m)));
            mn[r][1] = vreinterpretq_s16_u16(vmovl_high_u8(m));
            dw[r] = fp16_to_f32(wb[r]->d);
            dmw[r] = fp16_to_f32(wb[r]->dmin);
        }
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
            dx[t] = xb->d;
            int16x8_t bs0 = vld1q_s16(xb->bsums), bs1 = vld1q_s16(xb->bsums + 8);
            UNROLL for (int r = 0; r < RW; r++) {
                int32x4_t pm = vmull_s16(vget_low_s16(mn[r][0]), vget_low_s16(bs0));
                pm = vmlal_high_s16(pm, mn[r][0], bs0);
                pm = vmlal_s16(pm, vget_low_s16(mn[r][1]), vget_low_s16(bs1));
                pm = vmlal_high_s16(pm, mn[r][1], bs1);
                macc[r][t] += dx[t] * dmw[r] * (float)vaddvq_s32(pm);
                isum[r][t] = vdupq_n_s32(0);
            }
        }
        UNROLL for (int c = 0; c < 2; c++) {
            uint8x16_t bits[MAXR][2];
            UNROLL for (int r = 0; r < RW; r++) UNROLL for (int h = 0; h < 2; h++)
                bits[r][h] = vld1q_u8(wb[r]->qs + 32 * c + 16 * h);
            UNROLL for (int j = 0; j < 4; j++) {
                int8x16_t q[MAXR][2];
                UNROLL for (int r = 0; r < RW; r++) UNROLL for (int h = 0; h < 2; h++) {
                    uint8x16_t v = vandq_u8(vshlq_u8(bits[r][h], vdupq_n_s8((int8_t)(-2 * j))), m2);
                    q[r][h] = vreinterpretq_s8_u8(vmulq_u8(v, vdupq_n_u8(sc[r][8 * c + 2 * j + h])));
                }
                UNROLL for (int t = 0; t < RT; t++) {
                    const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 128 * c + 32 * j;
                    int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16);
                    UNROLL for (int r = 0; r < RW; r++)
                        isum[r][t] = vdotq_s32(vdotq_s32(isum[r][t], q[r][0], x0), q[r][1], x1);
                }
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = vfmaq_f32(acc[r][t], vcvtq_f32_s32(isum[r][t]), vdupq_n_f32(dw[r] * dx[t]));
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = vaddvq_f32(acc[r][t]) - macc[r][t];
}

/* Q3_K: the 12 packed scale bytes -> the 16 signed 6-bit scales (l3c_k3_scale - 32). Byte k of
 * word i holds sub-block 4i + k: low 4 bits from scales[0..7] (low nibbles for i < 2, high for
 * i >= 2), high 2 bits from bits 2i..2i+1 of scales[8 + k]. */
static inline void k3_scales(const uint8_t *q, int8_t out[16]) {
    uint32_t a, b, c, u[4];
    memcpy(&a, q, 4);
    memcpy(&b, q + 4, 4);
    memcpy(&c, q + 8, 4);
    u[0] = (a & 0x0F0F0F0F) | ((c << 4) & 0x30303030);
    u[1] = (b & 0x0F0F0F0F) | ((c << 2) & 0x30303030);
    u[2] = ((a >> 4) & 0x0F0F0F0F) | (c & 0x30303030);
    u[3] = ((b >> 4) & 0x0F0F0F0F) | ((c >> 2) & 0x30303030);
    vst1q_s8(out, vsubq_s8(vreinterpretq_s8_u32(vld1q_u32(u)), vdupq_n_s8(32)));
}

/*
 * Q3_K: low 2 bits as Q2_K; the high bit of element 128c + 32j + 16h + l is bit 4c + j of
 * hmask[16h + l], clear meaning -4, so q = lo - (bit clear ? 4 : 0) in [-4, 3]. Each 16-byte
 * vector is sub-block s = 8c + 2j + h with its signed scale (sc * q reaches 128: no int8
 * pre-scaling as in Q2_K). Canonical order per pair: isum += sc[s] * sdot_s in s order,
 * acc += float(isum) * (d_w * d_x) per block; y = hadd(acc).
 */
INLINE void tile_q3_K(int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                      float *y, int64_t ldy) {
    const uint8x16_t m2 = vdupq_n_u8(3), four = vdupq_n_u8(4);
    float32x4_t acc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        acc[r][t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / 256; b++) {
        const l3c_block_q3_K *wb[MAXR];
        int8_t sc[MAXR][16];
        uint8x16_t hm[MAXR][2];
        float dw[MAXR], dx[MAXR];
        int32x4_t isum[MAXR][MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            wb[r] = (const l3c_block_q3_K *)(w + r * ws) + b;
            k3_scales(wb[r]->scales, sc[r]);
            hm[r][0] = vld1q_u8(wb[r]->hmask);
            hm[r][1] = vld1q_u8(wb[r]->hmask + 16);
            dw[r] = fp16_to_f32(wb[r]->d);
        }
        UNROLL for (int t = 0; t < RT; t++) {
            dx[t] = ((const l3c_block_q8_K *)(x + t * xs) + b)->d;
            UNROLL for (int r = 0; r < RW; r++) isum[r][t] = vdupq_n_s32(0);
        }
        UNROLL for (int c = 0; c < 2; c++) {
            uint8x16_t bits[MAXR][2];
            UNROLL for (int r = 0; r < RW; r++) UNROLL for (int h = 0; h < 2; h++)
                bits[r][h] = vld1q_u8(wb[r]->qs + 32 * c + 16 * h);
            UNROLL for (int j = 0; j < 4; j++) {
                const uint8x16_t hbit = vdupq_n_u8((uint8_t)(1u << (4 * c + j)));
                int8x16_t q[MAXR][2];
                UNROLL for (int r = 0; r < RW; r++) UNROLL for (int h = 0; h < 2; h++) {
                    uint8x16_t lo = vandq_u8(vshlq_u8(bits[r][h], vdupq_n_s8((int8_t)(-2 * j))), m2);
                    uint8x16_t neg = vbicq_u8(four, vtstq_u8(hm[r][h], hbit));
                    q[r][h] = vreinterpretq_s8_u8(vsubq_u8(lo, neg));
                }
                const int s = 8 * c + 2 * j;
                UNROLL for (int t = 0; t < RT; t++) {
                    const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 128 * c + 32 * j;
                    int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16);
                    UNROLL for (int r = 0; r < RW; r++) {
                        const int32x4_t z = vdupq_n_s32(0);
                        isum[r][t] = vmlaq_n_s32(isum[r][t], vdotq_s32(z, q[r][0], x0), sc[r][s]);
                        isum[r][t] = vmlaq_n_s32(isum[r][t], vdotq_s32(z, q[r][1], x1), sc[r][s + 1]);
                    }
                }
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = vfmaq_f32(acc[r][t], vcvtq_f32_s32(isum[r][t]), vdupq_n_f32(dw[r] * dx[t]));
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = vaddvq_f32(acc[r][t]);
}

/* Q4_K / Q5_K: the 12 packed scale bytes -> sc[8] (bytes 0..7) and mn[8] (bytes 8..15) */
static inline void k4_scales(const uint8_t *q, uint8_t out[16]) {
    uint32_t a, b, c, u[4];
    memcpy(&a, q, 4);
    memcpy(&b, q + 4, 4);
    memcpy(&c, q + 8, 4);
    u[0] = a & 0x3F3F3F3F;
    u[1] = (c & 0x0F0F0F0F) | ((a >> 2) & 0x30303030);
    u[2] = b & 0x3F3F3F3F;
    u[3] = ((c >> 4) & 0x0F0F0F0F) | ((b >> 2) & 0x30303030);
    memcpy(out, u, 16);
}

/*
 * Q4_K / Q5_K: per 64-element chunk j, the low nibbles of qs[32j..32j+31] are sub-block 2j and
 * the high nibbles sub-block 2j+1 (Q5_K: 5th bit = bit s of qh[l]). Per block, in int32 lanes:
 * isum = sum_s sc[s] * sdot_s; the min term msum = sum_s mn[s] * (bsum[2s] + bsum[2s+1]).
 * Canonical order per pair: acc += float(isum) * (d_w * d_x) (one FMA per block),
 * macc += d_x * dmin_w * msum; y = hadd(acc) - macc.
 */
INLINE void tile_q45_K(bool five, int RW, int RT, int64_t n, const char *w, size_t ws,
                       const char *x, size_t xs, float *y, int64_t ldy) {
    const size_t wbs = five ? sizeof(l3c_block_q5_K) : sizeof(l3c_block_q4_K);
    const uint8x16_t m4 = vdupq_n_u8(0x0F), b4 = vdupq_n_u8(0x10);
    float32x4_t acc[MAXR][MAXR];
    float macc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++) {
        acc[r][t] = vdupq_n_f32(0.0f);
        macc[r][t] = 0.0f;
    }
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *qs[MAXR], *qh[MAXR];
        uint8_t sm[MAXR][16];
        float dw[MAXR], dmw[MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            const char *blk = w + r * ws + b * wbs;
            uint16_t dd[2];
            memcpy(dd, blk, sizeof dd); /* d, dmin lead both structs */
            const uint8_t *scales = five ? ((const l3c_block_q5_K *)blk)->scales
                                         : ((const l3c_block_q4_K *)blk)->scales;
            qs[r] = five ? ((const l3c_block_q5_K *)blk)->qs : ((const l3c_block_q4_K *)blk)->qs;
            qh[r] = five ? ((const l3c_block_q5_K *)blk)->qh : NULL;
            k4_scales(scales, sm[r]);
            dw[r] = fp16_to_f32(dd[0]);
            dmw[r] = fp16_to_f32(dd[1]);
        }
        int32x4_t isum[MAXR][MAXR];
        float dx[MAXR];
        UNROLL for (int t = 0; t < RT; t++) {
            const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
            dx[t] = xb->d;
            int16x8_t pairs = vpaddq_s16(vld1q_s16(xb->bsums), vld1q_s16(xb->bsums + 8));
            UNROLL for (int r = 0; r < RW; r++) {
                int16x8_t mn = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm[r] + 8)));
                int32x4_t pm = vmull_s16(vget_low_s16(mn), vget_low_s16(pairs));
                pm = vmlal_high_s16(pm, mn, pairs);
                macc[r][t] += dx[t] * dmw[r] * (float)vaddvq_s32(pm);
                isum[r][t] = vdupq_n_s32(0);
            }
        }
        UNROLL for (int j = 0; j < 4; j++) {
            int8x16_t lo[MAXR][2], hi[MAXR][2];
            UNROLL for (int r = 0; r < RW; r++) {
                UNROLL for (int k = 0; k < 2; k++) {
                    uint8x16_t bits = vld1q_u8(qs[r] + 32 * j + 16 * k);
                    uint8x16_t l = vandq_u8(bits, m4), h = vshrq_n_u8(bits, 4);
                    if (five) { /* bit 2j of qh[l] for sub-block 2j, bit 2j + 1 for 2j + 1 */
                        uint8x16_t hb = vld1q_u8(qh[r] + 16 * k);
                        uint8x16_t bl = vdupq_n_u8((uint8_t)(1u << (2 * j)));
                        uint8x16_t bh = vdupq_n_u8((uint8_t)(2u << (2 * j)));
                        l = vorrq_u8(l, vandq_u8(vtstq_u8(hb, bl), b4));
                        h = vorrq_u8(h, vandq_u8(vtstq_u8(hb, bh), b4));
                    }
                    lo[r][k] = vreinterpretq_s8_u8(l);
                    hi[r][k] = vreinterpretq_s8_u8(h);
                }
            }
            UNROLL for (int t = 0; t < RT; t++) {
                const int8_t *xq = ((const l3c_block_q8_K *)(x + t * xs) + b)->qs + 64 * j;
                int8x16_t xl0 = vld1q_s8(xq), xl1 = vld1q_s8(xq + 16);
                int8x16_t xh0 = vld1q_s8(xq + 32), xh1 = vld1q_s8(xq + 48);
                UNROLL for (int r = 0; r < RW; r++) {
                    const int32x4_t z = vdupq_n_s32(0);
                    int32x4_t pl = vdotq_s32(vdotq_s32(z, lo[r][0], xl0), lo[r][1], xl1);
                    int32x4_t ph = vdotq_s32(vdotq_s32(z, hi[r][0], xh0), hi[r][1], xh1);
                    isum[r][t] = vmlaq_n_s32(isum[r][t], pl, sm[r][2 * j]);
                    isum[r][t] = vmlaq_n_s32(isum[r][t], ph, sm[r][2 * j + 1]);
                }
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = vfmaq_f32(acc[r][t], vcvtq_f32_s32(isum[r][t]), vdupq_n_f32(dw[r] * dx[t]));
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = vaddvq_f32(acc[r][t]) - macc[r][t];
}

/*
 * Q6_K: per 128-element half c, four 32-element chunks k: low 4 bits from ql[64c + 32(k % 2)..]
 * (low nibbles for k < 2, high for k >= 2), 2 high bits from bits 2k..2k+1 of qh[32c..], minus
 * 32, as signed int8 in [-32, 31]. Each 16-byte vector is one sub-block s = 8c + 2k (+1) with its
 * int8 scale. Canonical order per pair: acc += float(isum) * (d_w * d_x) per block; y = hadd(acc).
 */
INLINE void tile_q6_K(int RW, int RT, int64_t n, const char *w, size_t ws, const char *x, size_t xs,
                      float *y, int64_t ldy) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m2 = vdupq_n_u8(0x30);
    const int8x16_t off = vdupq_n_s8(32);
    float32x4_t acc[MAXR][MAXR];
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        acc[r][t] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < n / 256; b++) {
        const l3c_block_q6_K *wb[MAXR];
        float dw[MAXR], dx[MAXR];
        int32x4_t isum[MAXR][MAXR];
        UNROLL for (int r = 0; r < RW; r++) {
            wb[r] = (const l3c_block_q6_K *)(w + r * ws) + b;
            dw[r] = fp16_to_f32(wb[r]->d);
        }
        UNROLL for (int t = 0; t < RT; t++) {
            dx[t] = ((const l3c_block_q8_K *)(x + t * xs) + b)->d;
            UNROLL for (int r = 0; r < RW; r++) isum[r][t] = vdupq_n_s32(0);
        }
        UNROLL for (int c = 0; c < 2; c++) UNROLL for (int k = 0; k < 4; k++) {
            int8x16_t q[MAXR][2];
            UNROLL for (int r = 0; r < RW; r++) UNROLL for (int half = 0; half < 2; half++) {
                uint8x16_t l = vld1q_u8(wb[r]->ql + 64 * c + 32 * (k % 2) + 16 * half);
                l = k < 2 ? vandq_u8(l, m4) : vshrq_n_u8(l, 4);
                uint8x16_t h = vld1q_u8(wb[r]->qh + 32 * c + 16 * half);
                /* bits 2k..2k+1 to bits 4..5: shift left by 4 - 2k (right for k = 3) */
                h = vandq_u8(vshlq_u8(h, vdupq_n_s8((int8_t)(4 - 2 * k))), m2);
                q[r][half] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(l, h)), off);
            }
            const int s = 8 * c + 2 * k;
            UNROLL for (int t = 0; t < RT; t++) {
                const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
                const int8_t *xq = xb->qs + 128 * c + 32 * k;
                int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16);
                UNROLL for (int r = 0; r < RW; r++) {
                    const int32x4_t z = vdupq_n_s32(0);
                    isum[r][t] =
                        vmlaq_n_s32(isum[r][t], vdotq_s32(z, q[r][0], x0), wb[r]->scales[s]);
                    isum[r][t] =
                        vmlaq_n_s32(isum[r][t], vdotq_s32(z, q[r][1], x1), wb[r]->scales[s + 1]);
                }
            }
        }
        UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
            acc[r][t] = vfmaq_f32(acc[r][t], vcvtq_f32_s32(isum[r][t]), vdupq_n_f32(dw[r] * dx[t]));
    }
    UNROLL for (int r = 0; r < RW; r++) UNROLL for (int t = 0; t < RT; t++)
        y[t * ldy + r] = vaddvq_f32(acc[r][t]);
}

/* ---------------------------------------------------------------- vec_dot + gemm per type */

/* vec_dot_<name> = the 1 x 1 tile, gemm_<name> GEMM_RW x GEMM_RT tiles (kernels/tile_kernels.h) */
#define NEON_DEFINE_KERNELS(name, TILE) L3C_DEFINE_TILE_KERNELS(name, TILE, GEMM_RW, GEMM_RT)

#define T_F32(RW, RT, ...) tile_float(K_F32, RW, RT, __VA_ARGS__)
#define T_F16(RW, RT, ...) tile_float(K_F16, RW, RT, __VA_ARGS__)
#define T_BF16(RW, RT, ...) tile_float(K_BF16, RW, RT, __VA_ARGS__)
#define T_Q4_0(RW, RT, ...) tile_b32(B_Q4_0, RW, RT, __VA_ARGS__)
#define T_Q4_1(RW, RT, ...) tile_b32(B_Q4_1, RW, RT, __VA_ARGS__)
#define T_Q5_0(RW, RT, ...) tile_b32(B_Q5_0, RW, RT, __VA_ARGS__)
#define T_Q5_1(RW, RT, ...) tile_b32(B_Q5_1, RW, RT, __VA_ARGS__)
#define T_Q8_0(RW, RT, ...) tile_q8_0(RW, RT, __VA_ARGS__)
#define T_Q2_K(RW, RT, ...) tile_q2_K(RW, RT, __VA_ARGS__)
#define T_Q3_K(RW, RT, ...) tile_q3_K(RW, RT, __VA_ARGS__)
#define T_Q4_K(RW, RT, ...) tile_q45_K(false, RW, RT, __VA_ARGS__)
#define T_Q5_K(RW, RT, ...) tile_q45_K(true, RW, RT, __VA_ARGS__)
#define T_Q6_K(RW, RT, ...) tile_q6_K(RW, RT, __VA_ARGS__)

NEON_DEFINE_KERNELS(f32, T_F32)
NEON_DEFINE_KERNELS(f16, T_F16)
NEON_DEFINE_KERNELS(bf16, T_BF16)
NEON_DEFINE_KERNELS(q4_0, T_Q4_0)
NEON_DEFINE_KERNELS(q4_1, T_Q4_1)
NEON_DEFINE_KERNELS(q5_0, T_Q5_0)
NEON_DEFINE_KERNELS(q5_1, T_Q5_1)
NEON_DEFINE_KERNELS(q8_0, T_Q8_0)
NEON_DEFINE_KERNELS(q2_K, T_Q2_K)
NEON_DEFINE_KERNELS(q3_K, T_Q3_K)
NEON_DEFINE_KERNELS(q4_K, T_Q4_K)
NEON_DEFINE_KERNELS(q5_K, T_Q5_K)
NEON_DEFINE_KERNELS(q6_K, T_Q6_K)

#define SET_DOT(id, name)                   \
    do {                                    \
        table[id].vec_dot = vec_dot_##name; \
        table[id].gemm = gemm_##name;       \
    } while (0)

bool l3c_kernels_override_neon(l3c_type_traits *table) {
    if (!table) return true; /* built: the path exists */
    table[L3C_TYPE_Q8_0].from_float = from_float_q8_0;
    table[L3C_TYPE_Q8_1].from_float = from_float_q8_1;
    table[L3C_TYPE_Q8_K].from_float = from_float_q8_K;
    table[L3C_TYPE_F16].to_float = to_float_f16;
    table[L3C_TYPE_F16].from_float = from_float_f16;
    table[L3C_TYPE_BF16].to_float = to_float_bf16;
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
    SET_DOT(L3C_TYPE_Q5_K, q5_K);
    SET_DOT(L3C_TYPE_Q6_K, q6_K);
    return true;
}

#else
/* Compiled without the ISA flags (or not for AArch64): an empty hook that reports the path as
 * not built, so dispatch.c skips it; the table stays as it was. */
#include "kernels/types.h"
bool l3c_kernels_override_neon(l3c_type_traits *table) {
    (void)table;
    return false;
}
#endif
