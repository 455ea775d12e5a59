/*
 * tile_kernels.h -- the ISA-neutral driver that turns one "tile" kernel into a type's vec_dot
 * and gemm (x86_avx2.c, x86_avx512.c, arm_neon.c). TILE(RW, RT, n, w, w_stride, x, x_stride, y,
 * ldy) computes the RW x RT dot products of RW weight rows with RT activation rows; RW and RT
 * are compile-time constants after inlining, so its accumulators live in registers.
 */
#ifndef L3C_TILE_KERNELS_H
#define L3C_TILE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/*
 * vec_dot_<name> = the 1 x 1 tile; gemm_<name> walks RW x RT tiles and finishes ragged tokens
 * and ragged rows with 1 x 1 tiles.
 *
 * Batch invariance: every tile kernel computes each (row, token) pair with exactly the same
 * operations in the same order as the 1 x 1 tile (the same accumulator chains, lane layout,
 * FMA-vs-mul+add choice and final reduction); a larger tile only runs several such canonical
 * accumulators side by side. So a value never depends on T, the tile shape, the token's place
 * in the batch or the thread count (tests/unit/test_simd.c checks it with memcmp).
 */
/* k tokens in a ragged tile when the big tile has RT_ (k < RT_); 1 where k cannot occur */
#define L3C_TILE_REM(RT_, k) ((RT_) > (k) ? (k) : 1)

#define L3C_DEFINE_TILE_KERNELS(name, TILE, RW_, RT_)                                             \
    static void vec_dot_##name(int64_t n, float *out, const void *w, const void *x) {          \
        TILE(1, 1, n, (const char *)w, 0, (const char *)x, 0, out, 0);                          \
    }                                                                                           \
    /* tokens outer, rows inner: RT_ activation rows stay in L1 while every row tile of the     \
     * call (n_rows, a few KiB of weights, L1/L2) passes them; the activations stream once. */  \
    static __attribute__((unused)) void gemm_##name(int64_t n, int64_t n_rows, int64_t T,     \
        float *y, int64_t ldy, const void *w, size_t w_stride, const void *x, size_t x_stride) {  \
        const char *wc = w, *xc = x;                                                            \
        const int64_t rows = n_rows / (RW_) * (RW_);                                            \
        int64_t t = 0;                                                                          \
        for (; t + (RT_) <= T; t += (RT_))                                                      \
            for (int64_t r = 0; r < rows; r += (RW_))                                           \
                TILE(RW_, RT_, n, wc + r * w_stride, w_stride, xc + t * x_stride,               \
                     x_stride, y + t * ldy + r, ldy);                                           \
        /* ragged tokens (T = 1: generation; 2 .. RT_ - 1: a speculative draft being checked)  \
         * in RW_ x (T - t) tiles, so each weight row is read once for all of them (row by row  \
         * in 1 x 1 tiles a batch of 3 cost about 3 single-token passes over the tile: more     \
         * than a batch of 4); then ragged rows in 1 x 1 tiles. Every shape computes each pair  \
         * exactly as the big tiles do. */                                                      \
        if (t < T)                                                                              \
            for (int64_t r = 0; r < rows; r += (RW_)) {                                         \
                const char *wr = wc + r * w_stride, *xt = xc + t * x_stride;                    \
                float *yt = y + t * ldy + r;                                                    \
                switch (T - t) { /* < RT_; the shapes that cannot occur fold to 1 */            \
                case 1: TILE(RW_, 1, n, wr, w_stride, xt, x_stride, yt, ldy); break;            \
                case 2: TILE(RW_, L3C_TILE_REM(RT_, 2), n, wr, w_stride, xt, x_stride, yt, ldy); break; \
                case 3: TILE(RW_, L3C_TILE_REM(RT_, 3), n, wr, w_stride, xt, x_stride, yt, ldy); break; \
                default:                                                                        \
                    for (int64_t t2 = t; t2 < T; t2++)                                          \
                        TILE(RW_, 1, n, wr, w_stride, xc + t2 * x_stride, x_stride,             \
                             y + t2 * ldy + r, ldy);                                            \
                }                                                                               \
            }                                                                                   \
        for (int64_t r = rows; r < n_rows; r++)                                                 \
            for (int64_t t2 = 0; t2 < T; t2++)                                                  \
                TILE(1, 1, n, wc + r * w_stride, 0, xc + t2 * x_stride, 0, y + t2 * ldy + r, 0); \
    }

#endif /* L3C_TILE_KERNELS_H */
