/*
 * x86_amx.h -- AMX kernels (Advanced Matrix Extensions: 8 tile registers of up to 16 rows x 64
 * bytes; TDPBSUD int8 and TDPBF16PS bf16 tile products) for the packed layouts of x86_avx512.c:
 * Q4_0, Q8_0, Q4_K, Q5_K and Q6_K (int8) and the bf16 layout of F16 / BF16 weights (--bf16).
 *
 * Included twice. x86_amx.c runs the instructions (path "amx": dispatch.c picks it where cpuid,
 * XCR0 and Linux's arch_prctl(ARCH_REQ_XCOMP_PERM) allow tiles). x86_amx_emu.c defines
 * L3C_AMX_EMULATE and runs the same kernels on a C model of the tile unit (path "amx-emu", never
 * picked by itself: L3C_KERNELS=amx-emu or the tests ask for it), which also enforces the shape
 * rules the hardware faults on. So the kernels' logic is tested on any AVX-512 CPU, and on an
 * AMX CPU the same tests run the real instructions.
 *
 * The layouts are the avx512 ones, unchanged (this path replaces only their gemm):
 *  - Q4_0 / Q8_0: per 32-element block a group of 16 rows holds the 16 fp16 scales, then 64-byte
 *    chunks whose lane r is 4 consecutive quants of row r, unsigned: exactly the B operand of
 *    TDPBSUD (8 rows of 16 x 4 bytes; Q4_0's nibbles are split into bytes first). A = the signed
 *    int8 quants of one block of up to 16 tokens (tile stride = the activation row), so C[token]
 *    [row] is the exact int32 block dot, and the avx512 kernel's float epilogue follows in the
 *    same order: acc = fma(d_w * d_x, (float)(isum - off * sum(x)), acc), block after block. The
 *    results are bit-identical to the avx512 packed kernel, which therefore serves calls with
 *    few tokens (decode), where a tile product would be mostly overhead.
 *  - Q4_1 has no AMX kernel: one was written (as Q4_0, plus the min chain) and measured slower
 *    than the avx512 packed Q4_1 kernel (2.26 vs 1.88 ms for 512 tokens x 1536 rows x 576, one
 *    thread, on a Xeon with AMX): see q_gemm for the limit. The amx path keeps the avx512 one.
 *  - Q4_K / Q5_K / Q6_K: the same for every 32-element sub-block (Q4_K: its nibbles; Q5_K: its
 *    5-bit quants; Q6_K: two products of 16 elements, one per scale) against the Q8_K activations;
 * each C row is multiplied by its rows' scales into the super-block's exact int32 sum, and the
 * avx512 kernel's epilogue (x86_packed.h: mins / -32 offset from the Q8_K group sums, two or one
 * fma) finishes it: bit-identical to the avx512 packed kernel too.
 *  - bf16: per 32-element block 16 chunks of 64 bytes, chunk p lane r = the bf16 pair (2p, 2p+1)
 *    of row r: exactly the B operand of TDPBF16PS (16 rows of 16 pairs). A = 32 bf16 of up to
 *    16 tokens; C accumulates fp32 over the whole row. The tile unit sums in its own order (not
 *    vdpbf16ps's), so this kernel serves every T: each (row, token) value is the same whatever T,
 *    the token's place or the row range (batch invariant), and differs from the avx512 bf16 path
 *    in the last bits only.
 *  - quantized weights as bf16 (--bf16, calls of >= 32 tokens; see bq_gemm): the Q4_0 / Q8_0 /
 *    Q4_K / Q5_K / Q6_K groups dequantized per call into the bf16 layout's B tiles, then the bf16
 *    tile product: the packed_bf16 layout of those types is their packed one plus this prompt
 *    kernel (l3c_pack_layout.prompt).
 *
 * Tiles are configured per call (ldtilecfg: the tile state is per thread and another kernel may
 * have changed it) and released at its end (tilerelease: the OS then saves no tile data).
 *
 * GCC 12: the _tile_* intrinsics do not tell the compiler what memory they touch (tileloadd has
 * no memory operand, so stores into the buffer it reads may be dropped or moved after it;
 * _tile_loadconfig is modelled as an 8-byte read, so dead-store elimination drops the rest of
 * the config fill and ldtilecfg faults). Every tile instruction here is inline asm with a
 * "memory" clobber, ldtilecfg takes the whole 64-byte config as its operand, and the Makefile
 * also compiles x86_amx.c with -fno-tree-dse -fno-dse.
 */
#ifndef L3C_X86_AMX_H
#define L3C_X86_AMX_H

#include "kernels/types.h"
#include "kernels/x86_packed.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#define UNROLL16 _Pragma("GCC unroll 16")

/* ldtilecfg's operand (palette 1): rows and bytes per row of each tile; 0 / 0 = unused */
typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;
_Static_assert(sizeof(amx_cfg) == 64, "ldtilecfg reads 64 bytes");

/* ---------------------------------------------------------------- the tile unit */
#ifdef L3C_AMX_EMULATE
/*
 * The emulated unit: what the SDM's pseudo-code of each instruction does, per thread (tile
 * state is per thread on the hardware too). A use that would raise #UD / #GP there (no config,
 * an unconfigured tile, mismatched shapes, the same tile twice in a product) stops the program
 * here: it is a bug in the kernel, never bad input.
 */
typedef struct amx_emu {
    amx_cfg cfg;
    bool on;
    uint8_t t[8][16][64];
} amx_emu;
static __thread amx_emu g_amx;

static void emu_cfg(const amx_cfg *c) {
    L3C_ASSERT(c->palette == 1 && c->start_row == 0);
    for (int i = 0; i < 14; i++) L3C_ASSERT(c->reserved[i] == 0);
    for (int i = 0; i < 16; i++) {
        L3C_ASSERT(c->rows[i] <= 16 && c->colsb[i] <= 64 && (c->rows[i] == 0) == (c->colsb[i] == 0));
        L3C_ASSERT(i < 8 || c->rows[i] == 0);
    }
    g_amx.cfg = *c;
    g_amx.on = true;
    memset(g_amx.t, 0, sizeof g_amx.t);
}

static void emu_release(void) {
    g_amx.on = false;
    memset(g_amx.t, 0, sizeof g_amx.t);
}

static void emu_check(int t) { L3C_ASSERT(g_amx.on && t >= 0 && t < 8 && g_amx.cfg.rows[t] > 0); }

static void emu_zero(int t) {
    emu_check(t);
    memset(g_amx.t[t], 0, sizeof g_amx.t[t]);
}

/* rows x colsb bytes from p, row r at p + r * stride; the rest of the tile reads as zero */
static void emu_load(int t, const void *p, long stride) {
    emu_check(t);
    memset(g_amx.t[t], 0, sizeof g_amx.t[t]);
    for (int r = 0; r < g_amx.cfg.rows[t]; r++)
        memcpy(g_amx.t[t][r], (const char *)p + r * stride, g_amx.cfg.colsb[t]);
}

static void emu_store(int t, void *p, long stride) {
    emu_check(t);
    for (int r = 0; r < g_amx.cfg.rows[t]; r++) memcpy((char *)p + r * stride, g_amx.t[t][r], g_amx.cfg.colsb[t]);
}

/* C (M x N dwords) += A (M x K dwords) . B (K rows x N dwords): the shape rules of TDP* */
static void emu_dp_check(int c, int a, int b) {
    emu_check(c), emu_check(a), emu_check(b);
    const amx_cfg *g = &g_amx.cfg;
    L3C_ASSERT(c != a && c != b && a != b);
    L3C_ASSERT(g->rows[c] == g->rows[a] && g->colsb[c] == g->colsb[b] && g->colsb[a] == 4 * g->rows[b]);
    L3C_ASSERT(g->colsb[c] % 4 == 0 && g->colsb[a] % 4 == 0);
}

/* TDPBSUD: int32 C[m][n] += sum over k, i < 4 of (int8) A[m][4k + i] * (uint8) B[k][4n + i], wrapping */
static void emu_dpbsud(int c, int a, int b) {
    emu_dp_check(c, a, b);
    const amx_cfg *g = &g_amx.cfg;
    for (int m = 0; m < g->rows[c]; m++)
        for (int n = 0; n < g->colsb[c] / 4; n++) {
            uint32_t acc;
            memcpy(&acc, &g_amx.t[c][m][4 * n], 4);
            for (int k = 0; k < g->rows[b]; k++)
                for (int i = 0; i < 4; i++)
                    acc += (uint32_t)((int32_t)(int8_t)g_amx.t[a][m][4 * k + i] * (int32_t)g_amx.t[b][k][4 * n + i]);
            memcpy(&g_amx.t[c][m][4 * n], &acc, 4);
        }
}

/* bf16 at byte offset o of a tile row as float, denormals as zero (the unit's DAZ) */
static float emu_bf16(const uint8_t *row, int o) {
    uint16_t h;
    memcpy(&h, row + o, 2);
    if ((h & 0x7F80) == 0) h &= 0x8000;
    return l3c_bf16_to_fp32(h);
}

static float emu_ftz(float v) { return fpclassify(v) == FP_SUBNORMAL ? copysignf(0.0f, v) : v; }

/* TDPBF16PS: fp32 C[m][n] += A[m][2k] * B[k][2n], then += A[m][2k + 1] * B[k][2n + 1], k in
 * order (products of bf16 are exact in fp32; one rounding per add, nearest even, FTZ) */
static void emu_dpbf16ps(int c, int a, int b) {
    emu_dp_check(c, a, b);
    const amx_cfg *g = &g_amx.cfg;
    for (int m = 0; m < g->rows[c]; m++)
        for (int n = 0; n < g->colsb[c] / 4; n++) {
            float acc;
            memcpy(&acc, &g_amx.t[c][m][4 * n], 4);
            for (int k = 0; k < g->rows[b]; k++)
                for (int i = 0; i < 2; i++) {
                    const float p = emu_bf16(g_amx.t[a][m], 4 * k + 2 * i) * emu_bf16(g_amx.t[b][k], 4 * n + 2 * i);
                    acc = emu_ftz(acc + p);
                }
            memcpy(&g_amx.t[c][m][4 * n], &acc, 4);
        }
}

#define AMX_CFG(c) emu_cfg(c)
#define AMX_RELEASE() emu_release()
#define AMX_ZERO(t) emu_zero(t)
#define AMX_LOAD(t, p, stride) emu_load(t, p, (long)(stride))
#define AMX_STORE(t, p, stride) emu_store(t, p, (long)(stride))
#define AMX_DPBSUD(c, a, b) emu_dpbsud(c, a, b)
#define AMX_DPBF16PS(c, a, b) emu_dpbf16ps(c, a, b)
#define AMX_PATH_HOOK l3c_kernels_override_amx_emu
#define AMX_CHECK_FN l3c_kernels_amx_emu_check

#else /* the instructions (AT&T operand order: B, A, C) */
#define AMX_CFG(c) __asm__ volatile("ldtilecfg %0" ::"m"(*(const amx_cfg *)(c)) : "memory")
#define AMX_RELEASE() __asm__ volatile("tilerelease" ::: "memory")
#define AMX_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::: "memory")
#define AMX_LOAD(t, p, stride) \
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"((const void *)(p)), "r"((long)(stride)) : "memory")
#define AMX_STORE(t, p, stride) \
    __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"((void *)(p)), "r"((long)(stride)) : "memory")
#define AMX_DPBSUD(c, a, b) __asm__ volatile("tdpbsud %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::: "memory")
#define AMX_DPBF16PS(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::: "memory")
#define AMX_PATH_HOOK l3c_kernels_override_amx
#define AMX_CHECK_FN l3c_kernels_amx_check
#endif

#define AMX_M 16    /* tokens per A / C tile */
#define AMX_ROWS PK_ROWS /* weight rows per packed group = dwords per C row */

static void amx_tile_shape(amx_cfg *c, int t, int rows, int colsb) {
    c->rows[t] = (uint8_t)(rows > 0 ? rows : 0);
    c->colsb[t] = (uint16_t)(rows > 0 ? colsb : 0);
}

/* ---------------------------------------------------------------- int8 (TDPBSUD) */

/* Calls with fewer tokens run the avx512 kernel (the same bits, see above). */
#define AMX_INT8_MIN_T 8

enum { AMX_Q4_0, AMX_Q8_0, AMX_Q4_K, AMX_Q5_K, AMX_Q6_K };
enum { ACT_QS = offsetof(l3c_block_q8_0x, qs), ACT_BYTES = sizeof(l3c_block_q8_0x) };

static l3c_type_traits g_avx512[L3C_TYPE_COUNT]; /* the avx512 table: the few-token kernels */
static pthread_once_t g_avx512_once = PTHREAD_ONCE_INIT;

static void amx_avx512_init(void) {
    for (int t = 0; t < L3C_TYPE_COUNT; t++) g_avx512[t] = *l3c_type_traits_ref(t);
    l3c_kernels_override_avx2(g_avx512);
    l3c_kernels_override_avx512(g_avx512);
}

static size_t group_block_bytes(int kind) { /* one block / super-block of a 16-row group */
    static const size_t sz[] = {sizeof(l3c_block_q4_0), sizeof(l3c_block_q8_0),
                                sizeof(l3c_block_q4_K), sizeof(l3c_block_q5_K),
                                sizeof(l3c_block_q6_K)};
    return PK_ROWS * sz[kind];
}

/* the B tile of one Q4_0 / Q8_0 block: 8 rows of 64 bytes (Q8_0: in place; Q4_0: nibbles to bytes) */
INLINE const uint8_t *q_btile(int kind, const char *gb, uint8_t *buf) {
    if (kind == AMX_Q8_0) return (const uint8_t *)gb + 32;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int c = 0; c < 4; c++) {
        const __m512i v = _mm512_loadu_si512(gb + 32 + 64 * c);
        _mm512_store_si512(buf + 64 * c, _mm512_and_si512(v, m4));
        _mm512_store_si512(buf + 64 * (c + 4), _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
    }
    return buf;
}

/* the avx512 kernel's epilogue of Q4_0 / Q8_0 block b for M tokens, from the stored int32 C tile */
INLINE void q_fold(int M, const char *gb, const char *x, size_t xs, int64_t b, const int32_t *c, __m512 acc[]) {
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)gb));
    UNROLL16 for (int t = 0; t < AMX_M; t++) {
        if (t >= M) break;
        const l3c_block_q8_0x *a = (const l3c_block_q8_0x *)(x + t * xs) + b;
        const __m512i s = _mm512_add_epi32(_mm512_load_si512(c + AMX_ROWS * t), _mm512_set1_epi32(a->neg_off_sum));
        acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a->d)), _mm512_cvtepi32_ps(s), acc[t]);
    }
}

/* C(c) = A(a) . B(b) of one block / sub-block, stored to cbuf */
#define AMX_ONE_PRODUCT(c, a, b, ap, xs, bp, cbuf) \
    do {                                           \
        AMX_ZERO(c);                               \
        AMX_LOAD(a, ap, xs);                       \
        AMX_LOAD(b, bp, 64);                       \
        AMX_DPBSUD(c, a, b);                       \
        AMX_STORE(c, cbuf, 64);                    \
    } while (0)

/*
 * Q4_0 / Q8_0, group by group (16 rows), in chunks of up to AMX_KB blocks: the chunk's B tiles
 * are unpacked once for every token tile, then per token tile the chunk's tile products run
 * back to back (C 0..3, A 4 / 5, B 6 / 7: four in flight) into a buffer of C tiles, and only then
 * are they folded, block after block. So the tile unit does not wait for a fold, nor a tile load
 * for the stores that unpacked its operand, as a product-then-fold loop did on every block. The
 * float accumulators of a token tile pass from chunk to chunk through y (a store and a load: the
 * same bits), and the folds run in block order: every value is the avx512 kernel's.
 *
 * Measured (one thread, 512 tokens x 1536 rows x 576, on a Xeon with AMX; ms, amx / avx512
 * packed): Q4_0 2.16 / 2.07, Q8_0 2.07 / 1.97 (the product-then-fold loop: 2.87, 3.34). Per
 * 32-element block a C tile must be stored and folded (one cvt, mul, fma per 16 rows and token),
 * so the tile stores and the folds, each ~1.5 ms here, bound these formats near the VNNI kernel's
 * speed; the K-quants fold per 256 elements.
 */
#define AMX_KB 16

INLINE void q_chunk_tokens(int kind, int M, int64_t b0, int kb, const char *g, const uint8_t *bt[],
                           int32_t (*c)[AMX_M * AMX_ROWS], const char *x, size_t xs, float *y, int64_t ldy,
                           __mmask16 rows) {
    const size_t gbs = group_block_bytes(kind);
    int k = 0;
    for (; k + 4 <= kb; k += 4) {
        AMX_ONE_PRODUCT(0, 4, 6, x + (b0 + k) * ACT_BYTES + ACT_QS, xs, bt[k], c[k]);
        AMX_ONE_PRODUCT(1, 5, 7, x + (b0 + k + 1) * ACT_BYTES + ACT_QS, xs, bt[k + 1], c[k + 1]);
        AMX_ONE_PRODUCT(2, 4, 6, x + (b0 + k + 2) * ACT_BYTES + ACT_QS, xs, bt[k + 2], c[k + 2]);
        AMX_ONE_PRODUCT(3, 5, 7, x + (b0 + k + 3) * ACT_BYTES + ACT_QS, xs, bt[k + 3], c[k + 3]);
    }
    for (; k < kb; k++) AMX_ONE_PRODUCT(0, 4, 6, x + (b0 + k) * ACT_BYTES + ACT_QS, xs, bt[k], c[k]);
    __m512 acc[AMX_M];
    UNROLL16 for (int t = 0; t < AMX_M; t++) acc[t] = _mm512_setzero_ps();
    UNROLL16 for (int t = 0; t < AMX_M; t++) {
        if (t >= M) break;
        acc[t] = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows, y + t * ldy);
    }
    for (k = 0; k < kb; k++) q_fold(M, g + (b0 + k) * gbs, x, xs, b0 + k, c[k], acc);
    UNROLL16 for (int t = 0; t < AMX_M; t++) {
        if (t >= M) break;
        _mm512_mask_storeu_ps(y + t * ldy, rows, acc[t]);
    }
}

static void q_gemm(int kind, int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy, const void *wp,
                   const void *x, size_t xs) {
    const int64_t nb = n / 32;
    const size_t gbs = group_block_bytes(kind), gbytes = (size_t)nb * gbs;
    _Alignas(64) uint8_t wb[AMX_KB][512];
    _Alignas(64) int32_t c[AMX_KB][AMX_M * AMX_ROWS];
    const uint8_t *bt[AMX_KB];
    amx_cfg cfg = {.palette = 1};
    int shape = 0;
    for (int64_t r0 = 0; r0 < n_rows; r0 += AMX_ROWS) {
        const char *g = (const char *)wp + (size_t)(r0 / AMX_ROWS) * gbytes;
        const __mmask16 rows = (__mmask16)((1u << L3C_MIN(AMX_ROWS, n_rows - r0)) - 1);
        for (int64_t b0 = 0; b0 < nb; b0 += AMX_KB) {
            const int kb = (int)L3C_MIN(AMX_KB, nb - b0);
            for (int k = 0; k < kb; k++) bt[k] = q_btile(kind, g + (b0 + k) * gbs, wb[k]);
            for (int64_t t0 = 0; t0 < T; t0 += AMX_M) {
                const int M = (int)L3C_MIN(AMX_M, T - t0);
                if (M != shape) {
                    for (int i = 0; i < 4; i++) amx_tile_shape(&cfg, i, M, 64);
                    amx_tile_shape(&cfg, 4, M, 32), amx_tile_shape(&cfg, 5, M, 32);
                    amx_tile_shape(&cfg, 6, 8, 64), amx_tile_shape(&cfg, 7, 8, 64);
                    AMX_CFG(&cfg);
                    shape = M;
                }
                const char *xt = (const char *)x + t0 * xs;
                float *yt = y + t0 * ldy + r0;
                if (M == AMX_M) q_chunk_tokens(kind, AMX_M, b0, kb, g, bt, c, xt, xs, yt, ldy, rows);
                else q_chunk_tokens(kind, M, b0, kb, g, bt, c, xt, xs, yt, ldy, rows);
            }
        }
    }
    AMX_RELEASE();
}

/*
 * Q4_K / Q5_K / Q6_K, two groups (32 rows) at a time, super-block by super-block: its B tiles
 * (Q4_K / Q5_K: 8 sub-blocks of 32, K = 32; Q6_K: 16 groups of 16, K = 16) are unpacked once for
 * every token tile, then per token tile its products run back to back, each A tile (16 tokens'
 * K quants, the costly load: 16 rows of the activations, an L2 stream) serving both groups, into
 * a buffer of C tiles, and the super-block is folded one token tile later (see kq_gemm), while the
 * quants of the token tile after it are prefetched: isum = sum over products of C * scale (exact
 * int32, any order), then the avx512 kernel's epilogue (q4k_finish / q6_finish). Q5_K's B tiles
 * hold a and b (the avx512 kernel's dpbusd chunks hold 8 a and shift isum8 = 8 isum back by 3), so
 * isum is the same. The float accumulators of a token tile pass from chunk to chunk through y (a
 * store and a load: the same bits), super-blocks in order: every value is the avx512 kernel's.
 */
#define AMX_KP 16  /* most products per super-block (Q6_K) */
#define AMX_KT 128 /* tokens per block of accumulators */

static int kq_products(int kind) {
    return kind == AMX_Q6_K ? 16 : 8;
} /* per super-block */
static int kq_k(int kind) {
    return kind == AMX_Q6_K ? 16 : 32;
} /* bytes of an A tile row */

/* the B tiles of super-block gb, kq_products(kind) of K / 4 rows x 64 bytes each, consecutive */
INLINE void kq_btiles(int kind, const char *gb, uint8_t *wb) {
    if (kind == AMX_Q4_K) {
        const __m512i m4 = _mm512_set1_epi8(0x0F);
        for (int j = 0; j < 4; j++) /* sub-blocks 2j (low nibbles) and 2j + 1 (high) */
            for (int cc = 0; cc < 8; cc++) {
                const __m512i v = _mm512_loadu_si512(gb + 256 + (8 * j + cc) * 64);
                _mm512_store_si512(wb + 512 * (2 * j) + 64 * cc, _mm512_and_si512(v, m4));
                _mm512_store_si512(wb + 512 * (2 * j + 1) + 64 * cc,
                                   _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
            }
    } else if (kind == AMX_Q5_K) {
        const __m512i m1f = _mm512_set1_epi8(0x1F);
        for (int j = 0; j < 4; j++) /* a = Y >> 3 (sub-block 2j), b (2j + 1) */
            for (int c = 0; c < 8; c++) {
                const __m512i yv = _mm512_loadu_si512(gb + Q5_Y(j, c));
                _mm512_store_si512(wb + 512 * (2 * j) + 64 * c,
                                   _mm512_and_si512(_mm512_srli_epi16(yv, 3), m1f));
                _mm512_store_si512(wb + 512 * (2 * j + 1) + 64 * c,
                                   q5_high(yv, _mm512_loadu_si512(gb + Q5_B(j, c / 4)), c));
            }
    } else { /* elements 32 sr .. 32 sr + 31: half sr / 4, quarter sr % 4; two tiles of 16 */
        for (int sr = 0; sr < 8; sr++)
            for (int cc = 0; cc < 8; cc++)
                _mm512_store_si512(wb + 512 * sr + 64 * cc, q6_quant(gb, sr / 4, cc, sr % 4));
    }
}

/* super-block b (at gb) of M tokens from its stored C tiles c[0 .. kq_products) into the
 * accumulators acc16 (16 floats per token; 0 before b = 0), token by token: isum = sum_p C_p *
 * scale_p, then the avx512 epilogue of one token (q4k_finish1 / q6_finish1: the same operations).
 * Token-major, so that only the scales and the epilogue's constants stay in registers (16 isum and
 * 16 acc did not fit: spills). */
INLINE void kq_fold(int kind, int M, const char *gb, const char *x, size_t xs, int64_t b,
                    int32_t (*c)[AMX_M * AMX_ROWS], float *acc16) {
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)gb));
    if (kind == AMX_Q6_K) {
        __m512i s[16], pairs[8];
        for (int p = 0; p < 16; p++)
            s[p] = q6_scale(gb, p);
        q6_pairs(gb, pairs);
        for (int t = 0; t < M; t++) {
            __m512i isum = _mm512_mullo_epi32(_mm512_load_si512(c[0] + AMX_ROWS * t), s[0]);
            UNROLL16 for (int p = 1; p < 16; p++) isum = _mm512_add_epi32(
                isum, _mm512_mullo_epi32(_mm512_load_si512(c[p] + AMX_ROWS * t), s[p]));
            const __m512 acc = b == 0 ? _mm512_setzero_ps() : _mm512_load_ps(acc16 + AMX_ROWS * t);
            const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
            _mm512_store_ps(acc16 + AMX_ROWS * t, q6_finish1(pairs, dw, xb, isum, acc));
        }
        return;
    }
    __m512i u[4], s[8], mnp[8];
    q4k_scales(gb, u);
    for (int p = 0; p < 8; p++)
        s[p] = q4k_byte(u, p), mnp[p] = q4k_byte2(u, 8 + p);
    const __m512 dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb + 32)));
    for (int t = 0; t < M; t++) {
        __m512i isum = _mm512_mullo_epi32(_mm512_load_si512(c[0] + AMX_ROWS * t), s[0]);
        UNROLL for (int p = 1; p < 8; p++) isum = _mm512_add_epi32(
            isum, _mm512_mullo_epi32(_mm512_load_si512(c[p] + AMX_ROWS * t), s[p]));
        const __m512 acc = b == 0 ? _mm512_setzero_ps() : _mm512_load_ps(acc16 + AMX_ROWS * t);
        const l3c_block_q8_K *xb = (const l3c_block_q8_K *)(x + t * xs) + b;
        _mm512_store_ps(acc16 + AMX_ROWS * t, q4k_finish1(mnp, dw, dmw, xb, isum, acc));
    }
}

/* The G (1, 2) groups' products of super-block b (B tiles wb[gi]) for one token tile, C tiles
 * to c[gi][p]: per step one A tile (the tokens' K quants of product p) serves the G groups */
INLINE void kq_products_tile(int kind, int G, int64_t b, uint8_t (*wb)[AMX_KP * 512],
                             int32_t (*c)[AMX_KP][AMX_M * AMX_ROWS], const char *x, size_t xs) {
    const int P = kq_products(kind), K = kq_k(kind);
    const size_t tb = (size_t)K * 16;
    const char *a = x + b * sizeof(l3c_block_q8_K) + offsetof(l3c_block_q8_K, qs);
    for (int p = 0; p < P; p += 2) { /* C 0, 1 (A 4) then C 2, 3 (A 5); B 6, 7: groups 0, 1 */
        AMX_ZERO(0);
        AMX_LOAD(4, a + K * p, xs);
        AMX_LOAD(6, wb[0] + tb * p, 64);
        AMX_DPBSUD(0, 4, 6);
        if (G == 2) {
            AMX_ZERO(1);
            AMX_LOAD(7, wb[1] + tb * p, 64);
            AMX_DPBSUD(1, 4, 7);
        }
        AMX_STORE(0, c[0][p], 64);
        if (G == 2) AMX_STORE(1, c[1][p], 64);
        AMX_ZERO(2);
        AMX_LOAD(5, a + K * (p + 1), xs);
        AMX_LOAD(6, wb[0] + tb * (p + 1), 64);
        AMX_DPBSUD(2, 5, 6);
        if (G == 2) {
            AMX_ZERO(3);
            AMX_LOAD(7, wb[1] + tb * (p + 1), 64);
            AMX_DPBSUD(3, 5, 7);
        }
        AMX_STORE(2, c[0][p + 1], 64);
        if (G == 2) AMX_STORE(3, c[1][p + 1], 64);
    }
}

/* the folds of G groups' C tiles c (M tokens at x, super-block b) into their accumulators acc
 * (acc[gi]: 16 floats per token), after prefetching the quants of the token tile whose products
 * run next (xn) */
INLINE void kq_folds(int kind, int G, int M, int64_t b, const char *g, size_t gbytes,
                     int32_t (*c)[AMX_KP][AMX_M * AMX_ROWS], const char *x, size_t xs,
                     float (*acc)[AMX_KT * AMX_ROWS], const char *xn) {
    for (int gi = 0; gi < G; gi++) {
        if (xn)
            for (int t = gi * AMX_M / G; t < (gi + 1) * AMX_M / G; t++)
                for (int l = 0; l < 256; l += 64)
                    _mm_prefetch(xn + t * xs + l, _MM_HINT_T0);
        kq_fold(kind, M, g + gi * gbytes + b * group_block_bytes(kind), x, xs, b, c[gi], acc[gi]);
    }
}

/*
 * Blocks of up to AMX_KT tokens: their float accumulators stay in a buffer of this call (16
 * floats a token and group, contiguous) from super-block to super-block, and go to y at the end
 * (y's rows are n_out floats apart, a power of two in most models: read and written super-block
 * by super-block they all fell into one L1 set). Within a block, token tiles are
 * software-pipelined: the products of tile i go to one half of the C buffer while tile i - 1 is
 * folded from the other (a fold loads what tilestored wrote, which the CPU does not forward:
 * one tile later it is in L1).
 */
static void kq_gemm(int kind, int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy,
                    const void *wp, const void *x, size_t xs) {
    const int64_t nb = n / 256;
    const int K = kq_k(kind);
    const size_t gbytes = (size_t)nb * group_block_bytes(kind);
    const size_t qs = offsetof(l3c_block_q8_K, qs);
    _Alignas(64) uint8_t wb[2][AMX_KP * 512];
    _Alignas(64) int32_t c[2][2][AMX_KP][AMX_M * AMX_ROWS]; /* [pipeline slot][group] */
    _Alignas(64) float acc[2][AMX_KT * AMX_ROWS];
    amx_cfg cfg = {.palette = 1};
    int shape = 0;
    for (int64_t r0 = 0; r0 < n_rows;
         r0 += 2 * AMX_ROWS) { /* two groups at a time where there are */
        const char *g = (const char *)wp + (size_t)(r0 / AMX_ROWS) * gbytes;
        const int G = n_rows - r0 > AMX_ROWS ? 2 : 1;
        __mmask16 rows[2] = {(__mmask16)((1u << L3C_MIN(AMX_ROWS, n_rows - r0)) - 1), 0};
        if (G == 2) rows[1] = (__mmask16)((1u << L3C_MIN(AMX_ROWS, n_rows - r0 - AMX_ROWS)) - 1);
        for (int64_t tb = 0; tb < T; tb += AMX_KT) {
            const int64_t te = L3C_MIN(T, tb + AMX_KT);
            for (int64_t b = 0; b < nb; b++) {
                for (int gi = 0; gi < G; gi++)
                    kq_btiles(kind, g + gi * gbytes + b * group_block_bytes(kind), wb[gi]);
                int64_t prev = -1; /* the token tile waiting for its fold */
                for (int64_t t0 = tb; t0 < te; t0 += AMX_M) {
                    const int M = (int)L3C_MIN(AMX_M, te - t0);
                    if (M != shape) {
                        for (int i = 0; i < 4; i++)
                            amx_tile_shape(&cfg, i, M, 64);
                        amx_tile_shape(&cfg, 4, M, K), amx_tile_shape(&cfg, 5, M, K);
                        amx_tile_shape(&cfg, 6, K / 4, 64), amx_tile_shape(&cfg, 7, K / 4, 64);
                        AMX_CFG(&cfg);
                        shape = M;
                    }
                    const char *xt = (const char *)x + t0 * xs;
                    const int slot = (int)((t0 - tb) / AMX_M) & 1;
                    if (G == 2)
                        kq_products_tile(kind, 2, b, wb, c[slot], xt, xs);
                    else
                        kq_products_tile(kind, 1, b, wb, c[slot], xt, xs);
                    if (prev >= 0) {
                        const char *xn = t0 + AMX_M < te
                                             ? xt + AMX_M * xs + b * sizeof(l3c_block_q8_K) + qs
                                             : NULL;
                        float(*ap)[AMX_KT * AMX_ROWS] =
                            (float(*)[AMX_KT * AMX_ROWS])(&acc[0][(prev - tb) * AMX_ROWS]);
                        kq_folds(kind, G, AMX_M, b, g, gbytes, c[slot ^ 1],
                                 (const char *)x + prev * xs, xs, ap, xn);
                    }
                    prev = t0;
                }
                float(*ap)[AMX_KT * AMX_ROWS] =
                    (float(*)[AMX_KT * AMX_ROWS])(&acc[0][(prev - tb) * AMX_ROWS]);
                kq_folds(kind, G, (int)(te - prev), b, g, gbytes, c[((prev - tb) / AMX_M) & 1],
                         (const char *)x + prev * xs, xs, ap, NULL);
            }
            for (int gi = 0; gi < G; gi++)
                for (int64_t t = tb; t < te; t++)
                    _mm512_mask_storeu_ps(y + t * ldy + r0 + gi * AMX_ROWS, rows[gi],
                                          _mm512_load_ps(&acc[gi][(t - tb) * AMX_ROWS]));
        }
    }
    AMX_RELEASE();
}

/* T < AMX_INT8_MIN_T: the avx512 kernel; Q4_0 / Q8_0: q_gemm; the K-quants: kq_gemm */
static void int8_gemm(int kind, int type, int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy,
                      const void *wp, const void *x, size_t xs) {
    if (T < AMX_INT8_MIN_T) {
        g_avx512[type].packed.gemm(n, n_rows, T, y, ldy, wp, x, xs);
        return;
    }
    if (kind == AMX_Q4_0 || kind == AMX_Q8_0) {
        q_gemm(kind, n, n_rows, T, y, ldy, wp, x, xs);
        return;
    }
    kq_gemm(kind, n, n_rows, T, y, ldy, wp, x, xs);
}

#define AMX_INT8_KERNEL(name, kind, type)                                                                  \
    static void gemm_amx_##name(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy, const void *wp, \
                                const void *x, size_t xs) {                                                \
        int8_gemm(kind, type, n, n_rows, T, y, ldy, wp, x, xs);                                            \
    }
AMX_INT8_KERNEL(q4_0, AMX_Q4_0, L3C_TYPE_Q4_0)
AMX_INT8_KERNEL(q8_0, AMX_Q8_0, L3C_TYPE_Q8_0)
AMX_INT8_KERNEL(q4_K, AMX_Q4_K, L3C_TYPE_Q4_K)
AMX_INT8_KERNEL(q5_K, AMX_Q5_K, L3C_TYPE_Q5_K)
AMX_INT8_KERNEL(q6_K, AMX_Q6_K, L3C_TYPE_Q6_K)

/* ---------------------------------------------------------------- bf16 (TDPBF16PS) */

/*
 * Up to 2 token tiles (TT: M0 + M1 <= 32 tokens) x 2 groups (G: 32 rows). Tiles: C 0 (tokens
 * 0..15, group 0), 1 (tokens 0..15, group 1), 2 (tokens 16.., group 0), 3 (tokens 16.., group 1);
 * A 4, 5; B 6, 7. Each A and B load serves two products.
 */
INLINE void bf16_tiles(int G, int TT, bool zero, int64_t nb, const char *g, size_t gbytes,
                       const char *x, size_t xs) {
    if (zero) { /* else the caller loaded the C tiles */
        AMX_ZERO(0);
        if (G == 2) AMX_ZERO(1);
        if (TT == 2) AMX_ZERO(2);
        if (TT == 2 && G == 2) AMX_ZERO(3);
    }
    for (int64_t b = 0; b < nb; b++) {
        AMX_LOAD(4, x + 64 * b, xs);
        if (TT == 2) AMX_LOAD(5, x + AMX_M * xs + 64 * b, xs);
        AMX_LOAD(6, g + (AMX_ROWS * 64) * b, 64);
        if (G == 2) AMX_LOAD(7, g + gbytes + (AMX_ROWS * 64) * b, 64);
        AMX_DPBF16PS(0, 4, 6);
        if (G == 2) AMX_DPBF16PS(1, 4, 7);
        if (TT == 2) AMX_DPBF16PS(2, 5, 6);
        if (TT == 2 && G == 2) AMX_DPBF16PS(3, 5, 7);
    }
}

/* C tile of M tokens x 16 rows to y (row stride ldy), its first nr rows only */
#define BF16_STORE(tile, M, nr, y, ldy)                                                     \
    do {                                                                                    \
        if ((nr) == AMX_ROWS) {                                                             \
            AMX_STORE(tile, y, (ldy) * sizeof(float));                                      \
        } else {                                                                            \
            _Alignas(64) float c_[AMX_M * AMX_ROWS];                                        \
            AMX_STORE(tile, c_, AMX_ROWS * sizeof(float));                                  \
            for (int t_ = 0; t_ < (M); t_++) memcpy((y) + t_ * (ldy), c_ + AMX_ROWS * t_, (nr) * sizeof(float)); \
        }                                                                                   \
    } while (0)

static void gemm_amx_bf16(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy, const void *wp, const void *x,
                          size_t xs) {
    const int64_t nb = n / 32;
    const size_t gbytes = (size_t)nb * AMX_ROWS * 64;
    amx_cfg cfg = {.palette = 1};
    int shape = 0;
    for (int64_t t0 = 0; t0 < T; t0 += 2 * AMX_M) {
        const int M0 = (int)L3C_MIN(AMX_M, T - t0), M1 = (int)L3C_MIN(AMX_M, T - t0 - M0);
        if (shape != M0 + 64 * M1) {
            amx_cfg fresh = {.palette = 1};
            cfg = fresh;
            amx_tile_shape(&cfg, 0, M0, 64), amx_tile_shape(&cfg, 1, M0, 64), amx_tile_shape(&cfg, 4, M0, 64);
            amx_tile_shape(&cfg, 2, M1, 64), amx_tile_shape(&cfg, 3, M1, 64), amx_tile_shape(&cfg, 5, M1, 64);
            amx_tile_shape(&cfg, 6, 16, 64), amx_tile_shape(&cfg, 7, 16, 64);
            AMX_CFG(&cfg);
            shape = M0 + 64 * M1;
        }
        const char *xt = (const char *)x + t0 * xs;
        for (int64_t r0 = 0; r0 < n_rows; r0 += 2 * AMX_ROWS) {
            const char *g = (const char *)wp + (size_t)(r0 / AMX_ROWS) * gbytes;
            const int nr0 = (int)L3C_MIN(AMX_ROWS, n_rows - r0), nr1 = (int)L3C_MIN(AMX_ROWS, n_rows - r0 - nr0);
            if (nr1 > 0 && M1 > 0)
                bf16_tiles(2, 2, true, nb, g, gbytes, xt, xs);
            else if (nr1 > 0)
                bf16_tiles(2, 1, true, nb, g, gbytes, xt, xs);
            else if (M1 > 0)
                bf16_tiles(1, 2, true, nb, g, gbytes, xt, xs);
            else
                bf16_tiles(1, 1, true, nb, g, gbytes, xt, xs);
            float *y0 = y + t0 * ldy + r0, *y1 = y0 + AMX_M * ldy;
            BF16_STORE(0, M0, nr0, y0, ldy);
            if (nr1 > 0) BF16_STORE(1, M0, nr1, y0 + AMX_ROWS, ldy);
            if (M1 > 0) BF16_STORE(2, M1, nr0, y1, ldy);
            if (M1 > 0 && nr1 > 0) BF16_STORE(3, M1, nr1, y1 + AMX_ROWS, ldy);
        }
    }
    AMX_RELEASE();
}

/* ---------------------------------------------------------------- quantized weights as bf16 */

/*
 * --bf16 on the quantized layouts (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K), calls of at least BQ_MIN_T
 * tokens only (prompts): the int8 kernels above fold every 32-element block's (or 16's) scale
 * outside the tile unit, which bounds them at a few % of its int8 peak. Here the call's two
 * groups (32 rows) are dequantized, up to BQ_KC blocks of 32 at a time, into bf16 B tiles (the
 * layout of gemm_amx_bf16: chunk p lane r = the pair (2p, 2p + 1) of row r) in a buffer of this
 * call that stays in L2 (2 x 64 KiB), and every token tile of the call runs the bf16 tile product
 * over them with fp32 accumulation in C; activations are rounded to bf16 (the bf16 layout's
 * activation format). Each weight is exactly the file's dequantized value (integer quant *
 * scale + offset: one fma, exact where the reference's dequantization is) rounded to bf16
 * (nearest even), so the result is gemm_amx_bf16's on those bf16 weights bit for bit (test_simd
 * checks it). C goes to y and back between chunks of K (a store and a load: the same bits, the
 * same order), so each value is the same whatever T, the token's place or the row range; calls
 * with fewer tokens (decode) run the int8 kernels, so --bf16 on a quantized model is not batch
 * invariant across that boundary.
 */
#define BQ_MIN_T 32 /* tokens: below, the dequantization is not paid back */
#define BQ_KC    64 /* 32-element blocks per chunk of K (a multiple of 8: whole super-blocks) */

/* the 16 rows' scale s and offset o spread over the 4 quarters of a 64-byte int8 chunk (quarter
 * k holds rows 4k .. 4k + 3, four quants each) */
INLINE void bq_spread(__m512 s, __m512 o, __m512 sk[4], __m512 ok[4]) {
    for (int k = 0; k < 4; k++) {
        const __m512i idx = _mm512_set_epi32(4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 2,
                                             4 * k + 2, 4 * k + 2, 4 * k + 2, 4 * k + 1, 4 * k + 1,
                                             4 * k + 1, 4 * k + 1, 4 * k, 4 * k, 4 * k, 4 * k);
        sk[k] = _mm512_permutexvar_ps(idx, s), ok[k] = _mm512_permutexvar_ps(idx, o);
    }
}

/* one int8 B-tile chunk (lane r: quants 4c .. 4c + 3 of row r, unsigned) to the two bf16 chunks
 * 2c (pairs 4c, 4c + 1) and 2c + 1 at dst: bf16(q * s + o) */
INLINE void bq_chunk(const uint8_t *q, const __m512 sk[4], const __m512 ok[4], char *dst) {
    __m512 f[4];
    for (int k = 0; k < 4; k++)
        f[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                   _mm_loadu_si128((const __m128i *)(q + 16 * k)))),
                               sk[k], ok[k]);
    /* dword i of h0: row i / 2 (rows 0..7), pair i % 2; h1: rows 8..15 */
    const __m512i h0 = (__m512i)_mm512_cvtne2ps_pbh(f[1], f[0]),
                  h1 = (__m512i)_mm512_cvtne2ps_pbh(f[3], f[2]);
    const __m512i even =
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    _mm512_store_si512(dst, _mm512_permutex2var_epi32(h0, even, h1));
    _mm512_store_si512(dst + 64, _mm512_permutex2var_epi32(h0, odd, h1));
}

INLINE __m512 bq_ph(const char *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

/* blocks [kb0, kb0 + kc) of 32 elements of the group at g as bf16 B tiles (1 KiB each) at dst */
static void bq_dequant(int kind, const char *g, int64_t kb0, int kc, char *dst) {
    _Alignas(64) uint8_t qt[AMX_KP * 512]; /* the int8 B tiles of one block / super-block */
    __m512 sk[4], ok[4];
    if (kind == AMX_Q4_0 || kind == AMX_Q8_0) { /* (nibble - 8) d, (byte ^ 0x80 - 128) d */
        const size_t gbs = group_block_bytes(kind);
        const __m512 off = _mm512_set1_ps(kind == AMX_Q4_0 ? -8.0f : -128.0f);
        for (int k = 0; k < kc; k++) {
            const char *gb = g + (kb0 + k) * gbs;
            const uint8_t *bt = q_btile(kind, gb, qt);
            const __m512 d = bq_ph(gb);
            bq_spread(d, _mm512_mul_ps(d, off), sk, ok);
            for (int c = 0; c < 8; c++)
                bq_chunk(bt + 64 * c, sk, ok, dst + 1024 * k + 128 * c);
        }
        return;
    }
    for (int64_t sb = kb0 / 8; sb < (kb0 + kc) / 8; sb++) { /* K-quants: whole super-blocks */
        const char *gb = g + sb * group_block_bytes(kind);
        char *o = dst + (sb * 8 - kb0) * 1024;
        kq_btiles(kind, gb, qt);
        const __m512 dw = bq_ph(gb);
        if (kind == AMX_Q6_K) { /* d sc_p (q - 32), p: 16 elements */
            for (int p = 0; p < 16; p++) {
                const __m512 s = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(q6_scale(gb, p)));
                bq_spread(s, _mm512_mul_ps(s, _mm512_set1_ps(-32.0f)), sk, ok);
                for (int c = 0; c < 4; c++)
                    bq_chunk(qt + 256 * p + 64 * c, sk, ok, o + 512 * p + 128 * c);
            }
            continue;
        }
        __m512i u[4]; /* Q4_K / Q5_K: d sc_p q - dmin m_p, p: 32 elements */
        q4k_scales(gb, u);
        const __m512 dmw = bq_ph(gb + 32);
        for (int p = 0; p < 8; p++) {
            const __m512 s = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(q4k_byte(u, p)));
            const __m512 m = _mm512_mul_ps(dmw, _mm512_cvtepi32_ps(q4k_byte(u, 8 + p)));
            bq_spread(s, _mm512_sub_ps(_mm512_setzero_ps(), m), sk, ok);
            for (int c = 0; c < 8; c++)
                bq_chunk(qt + 512 * p + 64 * c, sk, ok, o + 1024 * p + 128 * c);
        }
    }
}

/* C tile of M tokens x 16 rows from y (row stride ldy), its first nr rows (the rest zero) */
#define BQ_LOADC(tile, M, nr, y, ldy)                                                              \
    do {                                                                                           \
        if ((nr) == AMX_ROWS) {                                                                    \
            AMX_LOAD(tile, y, (ldy) * sizeof(float));                                              \
        } else {                                                                                   \
            _Alignas(64) float c_[AMX_M * AMX_ROWS] = {0};                                         \
            for (int t_ = 0; t_ < (M); t_++)                                                       \
                memcpy(c_ + AMX_ROWS * t_, (y) + t_ * (ldy), (nr) * sizeof(float));                \
            AMX_LOAD(tile, c_, AMX_ROWS * sizeof(float));                                          \
        }                                                                                          \
    } while (0)

static void bq_gemm(int kind, int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy,
                    const void *wp, const void *x, size_t xs) {
    const int64_t nb = n / 32;
    const bool kq = kind == AMX_Q4_K || kind == AMX_Q5_K || kind == AMX_Q6_K;
    const size_t gbytes = (size_t)(kq ? nb / 8 : nb) * group_block_bytes(kind);
    _Alignas(64) char wb[2][BQ_KC * 1024]; /* the two groups' bf16 B tiles of a chunk of K */
    amx_cfg cfg = {.palette = 1};
    int shape = 0;
    for (int64_t r0 = 0; r0 < n_rows; r0 += 2 * AMX_ROWS) {
        const char *g = (const char *)wp + (size_t)(r0 / AMX_ROWS) * gbytes;
        const int nr0 = (int)L3C_MIN(AMX_ROWS, n_rows - r0),
                  nr1 = (int)L3C_MIN(AMX_ROWS, n_rows - r0 - nr0);
        for (int64_t kb0 = 0; kb0 < nb; kb0 += BQ_KC) {
            const int kc = (int)L3C_MIN(BQ_KC, nb - kb0);
            bq_dequant(kind, g, kb0, kc, wb[0]);
            if (nr1 > 0) bq_dequant(kind, g + gbytes, kb0, kc, wb[1]);
            const bool first = kb0 == 0;
            for (int64_t t0 = 0; t0 < T; t0 += 2 * AMX_M) {
                const int M0 = (int)L3C_MIN(AMX_M, T - t0), M1 = (int)L3C_MIN(AMX_M, T - t0 - M0);
                if (shape != M0 + 64 * M1) {
                    amx_cfg fresh = {.palette = 1};
                    cfg = fresh;
                    amx_tile_shape(&cfg, 0, M0, 64), amx_tile_shape(&cfg, 1, M0, 64),
                        amx_tile_shape(&cfg, 4, M0, 64);
                    amx_tile_shape(&cfg, 2, M1, 64), amx_tile_shape(&cfg, 3, M1, 64),
                        amx_tile_shape(&cfg, 5, M1, 64);
                    amx_tile_shape(&cfg, 6, 16, 64), amx_tile_shape(&cfg, 7, 16, 64);
                    AMX_CFG(&cfg);
                    shape = M0 + 64 * M1;
                }
                const char *xt = (const char *)x + t0 * xs + kb0 * 64;
                float *y0 = y + t0 * ldy + r0, *y1 = y0 + AMX_M * ldy;
                if (!first) {
                    BQ_LOADC(0, M0, nr0, y0, ldy);
                    if (nr1 > 0) BQ_LOADC(1, M0, nr1, y0 + AMX_ROWS, ldy);
                    if (M1 > 0) BQ_LOADC(2, M1, nr0, y1, ldy);
                    if (M1 > 0 && nr1 > 0) BQ_LOADC(3, M1, nr1, y1 + AMX_ROWS, ldy);
                }
                if (nr1 > 0 && M1 > 0)
                    bf16_tiles(2, 2, first, kc, wb[0], sizeof wb[0], xt, xs);
                else if (nr1 > 0)
                    bf16_tiles(2, 1, first, kc, wb[0], sizeof wb[0], xt, xs);
                else if (M1 > 0)
                    bf16_tiles(1, 2, first, kc, wb[0], sizeof wb[0], xt, xs);
                else
                    bf16_tiles(1, 1, first, kc, wb[0], sizeof wb[0], xt, xs);
                BF16_STORE(0, M0, nr0, y0, ldy);
                if (nr1 > 0) BF16_STORE(1, M0, nr1, y0 + AMX_ROWS, ldy);
                if (M1 > 0) BF16_STORE(2, M1, nr0, y1, ldy);
                if (M1 > 0 && nr1 > 0) BF16_STORE(3, M1, nr1, y1 + AMX_ROWS, ldy);
            }
        }
    }
    AMX_RELEASE();
}

#define AMX_BQ_KERNEL(name, kind)                                                                  \
    static void gemm_amx_bq_##name(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy,    \
                                   const void *wp, const void *x, size_t xs) {                     \
        bq_gemm(kind, n, n_rows, T, y, ldy, wp, x, xs);                                            \
    }
AMX_BQ_KERNEL(q4_0, AMX_Q4_0)
AMX_BQ_KERNEL(q8_0, AMX_Q8_0)
AMX_BQ_KERNEL(q4_K, AMX_Q4_K)
AMX_BQ_KERNEL(q5_K, AMX_Q5_K)
AMX_BQ_KERNEL(q6_K, AMX_Q6_K)

/* ---------------------------------------------------------------- table */

/* Replaces the gemm of the avx512 layouts (kept: their pack, unpack and activation format);
 * table == NULL: only says the file was built with its ISA.
 *
 * The real path "amx" takes a tile kernel only where it measured faster than the avx512 packed
 * one (bench_kernels --packed -T 512, one thread, CPU time, a Xeon with AMX; GFLOP/s tiles /
 * VNNI): Q5_K 336-362 / 316-324 and bf16 600-640 / 96 (F16 exact on FMA: 120-133); Q4_K ~345
 * / 332-358 (a tie, kept). Not taken: Q4_0 324-327 / 357-382, Q8_0 307-330 / 361-391, Q6_K
 * 185-188 / 250-253 (per 32 or 16 elements a C tile must be stored and folded with its scale:
 * the folds, not the tile unit, bound them; see q_gemm and kq_gemm). Both give the same bits, so
 * the choice is speed only. "amx-emu" (tests) takes every tile kernel, so all stay tested (the
 * real unit's start-up check below runs them all too). */
bool AMX_PATH_HOOK(l3c_type_traits *table) {
    if (!table) return true;
    pthread_once(&g_avx512_once, amx_avx512_init);
#ifdef L3C_AMX_EMULATE
    const bool all = true;
#else
    const bool all = false;
#endif
    static const struct {
        int type;
        bool bf16, faster; /* faster: than the avx512 kernel on the hardware */
        l3c_gemm_packed_fn gemm;
    } k[] = {
        {L3C_TYPE_Q4_0, false, false, gemm_amx_q4_0}, {L3C_TYPE_Q8_0, false, false, gemm_amx_q8_0},
        {L3C_TYPE_Q4_K, false, true, gemm_amx_q4_K},  {L3C_TYPE_Q5_K, false, true, gemm_amx_q5_K},
        {L3C_TYPE_Q6_K, false, false, gemm_amx_q6_K}, {L3C_TYPE_F16, true, true, gemm_amx_bf16},
        {L3C_TYPE_BF16, true, true, gemm_amx_bf16}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (!k[i].faster && !all) continue;
        l3c_pack_layout *L = k[i].bf16 ? &table[k[i].type].packed_bf16 : &table[k[i].type].packed;
        const l3c_pack_layout *V = k[i].bf16 ? &g_avx512[k[i].type].packed_bf16 : &g_avx512[k[i].type].packed;
        if (L->rows == AMX_ROWS && V->rows == AMX_ROWS && L->pack == V->pack) L->gemm = k[i].gemm;
    }
    /* --bf16: the quantized layouts as they are (their int8 kernels for few tokens) plus the bf16
     * prompt kernel, whose activations are the bf16 layout's */
    const l3c_pack_layout *A = &g_avx512[L3C_TYPE_F16].packed_bf16;
    static const struct {
        int type;
        l3c_gemm_packed_fn gemm;
    } q[] = {{L3C_TYPE_Q4_0, gemm_amx_bq_q4_0},
             {L3C_TYPE_Q8_0, gemm_amx_bq_q8_0},
             {L3C_TYPE_Q4_K, gemm_amx_bq_q4_K},
             {L3C_TYPE_Q5_K, gemm_amx_bq_q5_K},
             {L3C_TYPE_Q6_K, gemm_amx_bq_q6_K}};
    for (size_t i = 0; i < sizeof q / sizeof q[0] && A->rows; i++) {
        const l3c_pack_layout *P = &table[q[i].type].packed;
        if (P->rows != AMX_ROWS || P->pack != g_avx512[q[i].type].packed.pack ||
            A->act_block_size != 32 || A->act_type_size != 64)
            continue;
        l3c_pack_layout *L = &table[q[i].type].packed_bf16;
        *L = *P;
        L->prompt.gemm = q[i].gemm;
        L->prompt.act_from_float = A->act_from_float;
        L->prompt.act_block_size = A->act_block_size;
        L->prompt.act_type_size = A->act_type_size;
        L->prompt.min_T = BQ_MIN_T;
    }
    return true;
}

/* ---------------------------------------------------------------- start-up check */

/*
 * Every AMX kernel against the avx512 one on small random matrices (2 groups of 16 rows x 256
 * elements x 19 tokens: a full and a ragged token tile): the int8 layouts bit for bit, bf16
 * within 2e-3 (only the order of the fp32 sums differs: at most 256 roundings of partial sums
 * below 64, i.e. < 1e-3; a wrong pairing or a 0.1% error in the products is far above it). dispatch.c runs it once before it offers the path "amx", so a tile unit that
 * disagrees with the SDM's description (this code was tested on the emulation) costs speed,
 * not correctness.
 */
enum { CHK_N = 256, CHK_R = 32, CHK_T = 19 };

static uint32_t chk_rnd(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* rows of random quants with sane fp16 scales, or of values in [-1, 1] */
static void chk_weights(int type, uint8_t *w, size_t bytes, uint32_t *seed) {
    if (type == L3C_TYPE_F16 || type == L3C_TYPE_BF16) {
        for (size_t i = 0; i < bytes / 2; i++) {
            const float f = (float)(chk_rnd(seed) % 2001) / 1000.0f - 1.0f;
            const uint16_t h = type == L3C_TYPE_F16 ? l3c_fp32_to_fp16(f) : l3c_fp32_to_bf16(f);
            memcpy(w + 2 * i, &h, 2);
        }
        return;
    }
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)chk_rnd(seed);
    const uint16_t d = l3c_fp32_to_fp16(0.01f);
    if (type == L3C_TYPE_Q4_0)
        for (size_t b = 0; b < bytes / sizeof(l3c_block_q4_0); b++) ((l3c_block_q4_0 *)w)[b].d = d;

    if (type == L3C_TYPE_Q8_0)
        for (size_t b = 0; b < bytes / sizeof(l3c_block_q8_0); b++) ((l3c_block_q8_0 *)w)[b].d = d;
    if (type == L3C_TYPE_Q4_K)
        for (size_t b = 0; b < bytes / sizeof(l3c_block_q4_K); b++) ((l3c_block_q4_K *)w)[b].d = ((l3c_block_q4_K *)w)[b].dmin = d;
    if (type == L3C_TYPE_Q5_K)
        for (size_t b = 0; b < bytes / sizeof(l3c_block_q5_K); b++)
            ((l3c_block_q5_K *)w)[b].d = ((l3c_block_q5_K *)w)[b].dmin = d;
    if (type == L3C_TYPE_Q6_K)
        for (size_t b = 0; b < bytes / sizeof(l3c_block_q6_K); b++) ((l3c_block_q6_K *)w)[b].d = d;
}

static int chk_layout(int type, bool bf16, l3c_gemm_packed_fn amx, uint32_t *seed) {
    const l3c_pack_layout *L = bf16 ? &g_avx512[type].packed_bf16 : &g_avx512[type].packed;
    size_t row;
    if (!L->rows || !l3c_row_size(type, CHK_N, &row)) return 0;
    const size_t xs = CHK_N / L->act_block_size * L->act_type_size;
    uint8_t *w = l3c_malloc(2 * row * CHK_R + xs * CHK_T);
    float *f = l3c_malloc(sizeof(float) * (CHK_N + 2 * CHK_T * CHK_R));
    int ok = w && f ? 1 : -1;
    if (ok == 1) {
        uint8_t *pk = w + row * CHK_R, *xq = pk + row * CHK_R;
        float *x = f, *y0 = f + CHK_N, *y1 = y0 + CHK_T * CHK_R;
        chk_weights(type, w, row * CHK_R, seed);
        for (int g = 0; g < CHK_R / PK_ROWS; g++) L->pack(CHK_N, PK_ROWS, w + g * PK_ROWS * row, row, pk + g * PK_ROWS * row);
        for (int t = 0; t < CHK_T; t++) {
            for (int i = 0; i < CHK_N; i++) x[i] = (float)(chk_rnd(seed) % 2001) / 1000.0f - 1.0f;
            L->act_from_float(x, xq + t * xs, CHK_N);
        }
        L->gemm(CHK_N, CHK_R, CHK_T, y0, CHK_R, pk, xq, xs);
        amx(CHK_N, CHK_R, CHK_T, y1, CHK_R, pk, xq, xs);
        for (int i = 0; i < CHK_T * CHK_R && ok == 1; i++)
            ok = bf16 ? fabsf(y0[i] - y1[i]) <= 2e-3f : memcmp(&y0[i], &y1[i], sizeof(float)) == 0;
    }
    free(w), free(f);
    return ok;
}

/* 1: every kernel agrees; 0: one does not; -1: out of memory (nothing known) */
int AMX_CHECK_FN(void) {
    pthread_once(&g_avx512_once, amx_avx512_init);
    static const struct {
        int type;
        bool bf16;
        l3c_gemm_packed_fn gemm;
    } k[] = {{L3C_TYPE_Q4_0, false, gemm_amx_q4_0}, {L3C_TYPE_Q8_0, false, gemm_amx_q8_0},

             {L3C_TYPE_Q4_K, false, gemm_amx_q4_K}, {L3C_TYPE_Q5_K, false, gemm_amx_q5_K},
             {L3C_TYPE_Q6_K, false, gemm_amx_q6_K}, {L3C_TYPE_F16, true, gemm_amx_bf16},
             {L3C_TYPE_BF16, true, gemm_amx_bf16}};
    uint32_t seed = 12345;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        const int r = chk_layout(k[i].type, k[i].bf16, k[i].gemm, &seed);
        if (r != 1) return r;
    }
    return 1;
}

#endif /* L3C_X86_AMX_H */
