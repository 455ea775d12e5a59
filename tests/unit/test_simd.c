/*
 * test_simd.c -- every ISA kernel table against the scalar reference (ref.c), on random data.
 *
 * For each path this CPU runs (x86: avx2; avx2 + avx512 on top; arm64: neon), a table is built
 * from a copy of l3c_type_traits_ref() with the override hooks applied, and every entry that
 * differs from the reference is compared with it:
 *   - from_float (activation quantizers, F16): byte-exact, same blocks as the reference;
 *   - to_float: bit-exact floats;
 *   - vec_dot and gemm: |simd - ref| <= 1e-5 * M + 1e-30, M = sum |w_i x_i| over the dequantized
 *     rows (plus |m * s| per block for Q4_1/Q5_1): integer block sums are exact, only the float
 *     accumulation order differs.
 * Row lengths: 1, 3, 7, 33 blocks of 32 (1, 3, 7 superblocks for K-quants; odd element counts
 * for float rows); gemm on 7 rows x 9 tokens (ragged against every tile shape) with ldy > rows.
 * Weight blocks are random bytes with realistic fp16 scales (1e-3 .. 2e-2), activations uniform
 * in [-2, 2] with a few outliers.
 */
#include "check.h"
#include "kernels/blocks.h"
#include "kernels/types.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float rndf(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xFFFFFF) / 16777216.0f; }

/* byte offsets of the fp16 scale fields to overwrite with realistic values, per type */
typedef struct {
    int type;
    int n_fp16;
    int off[2];
    int signed_min; /* dmin / m fields may be negative */
} scale_fields;

static const scale_fields g_fields[] = {
    {L3C_TYPE_Q4_0, 1, {0, 0}, 0},   {L3C_TYPE_Q4_1, 2, {0, 2}, 1},   {L3C_TYPE_Q5_0, 1, {0, 0}, 0},
    {L3C_TYPE_Q5_1, 2, {0, 2}, 1},   {L3C_TYPE_Q8_0, 1, {0, 0}, 0},   {L3C_TYPE_Q2_K, 2, {80, 82}, 0},
    {L3C_TYPE_Q3_K, 1, {108, 0}, 0}, {L3C_TYPE_Q4_K, 2, {0, 2}, 0},   {L3C_TYPE_Q5_K, 2, {0, 2}, 0},
    {L3C_TYPE_Q6_K, 1, {208, 0}, 0},
};

/* n elements of random weights of `type` into dst (row_bytes bytes) */
static void make_weights(int type, int64_t n, uint8_t *dst, size_t bytes) {
    if (type == L3C_TYPE_F32 || type == L3C_TYPE_F16 || type == L3C_TYPE_BF16) {
        float *f = malloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) f[i] = rndf(-0.1f, 0.1f);
        l3c_type_traits_ref(type)->from_float(f, dst, n);
        free(f);
        return;
    }
    for (size_t i = 0; i < bytes; i++) dst[i] = (uint8_t)rnd();
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    for (size_t k = 0; k < sizeof g_fields / sizeof g_fields[0]; k++) {
        if (g_fields[k].type != type) continue;
        for (int64_t b = 0; b < n / tr->block_size; b++) {
            uint8_t *blk = dst + (size_t)b * tr->type_size;
            for (int f = 0; f < g_fields[k].n_fp16; f++) {
                float v = rndf(1e-3f, 2e-2f);
                if (f == 1 && g_fields[k].signed_min && (rnd() & 1)) v = -v * 4;
                uint16_t h = l3c_fp32_to_fp16(v);
                memcpy(blk + g_fields[k].off[f], &h, 2);
            }
        }
    }
}

static void make_acts(int64_t n, float *x) {
    for (int64_t i = 0; i < n; i++) x[i] = rndf(-2.0f, 2.0f);
    if (n > 5) x[rnd() % n] = 9.5f, x[rnd() % n] = -11.25f;
}

/* sum |w_i x_i| of the dequantized rows (+ |m * s| for Q4_1 / Q5_1) */
static double magnitude(int type, int64_t n, const void *w, const void *xq) {
    const l3c_type_traits *tr = l3c_type_traits_ref(type), *xt = l3c_type_traits_ref(tr->vec_dot_type);
    float *wf = malloc((size_t)n * sizeof(float)), *xf = malloc((size_t)n * sizeof(float));
    tr->to_float(w, wf, n);
    xt->to_float(xq, xf, n);
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m += fabs((double)wf[i] * xf[i]);
    if (type == L3C_TYPE_Q4_1 || type == L3C_TYPE_Q5_1) {
        for (int64_t b = 0; b < n / 32; b++) {
            uint16_t mh, sh;
            memcpy(&mh, (const uint8_t *)w + b * tr->type_size + 2, 2);
            memcpy(&sh, (const uint8_t *)xq + b * 36 + 2, 2);
            m += fabs((double)l3c_fp16_to_fp32(mh) * l3c_fp16_to_fp32(sh));
        }
    }
    free(wf);
    free(xf);
    return m;
}

static const int g_types[] = {L3C_TYPE_F32,  L3C_TYPE_F16,  L3C_TYPE_BF16, L3C_TYPE_Q4_0,
                              L3C_TYPE_Q4_1, L3C_TYPE_Q5_0, L3C_TYPE_Q5_1, L3C_TYPE_Q8_0,
                              L3C_TYPE_Q2_K, L3C_TYPE_Q3_K, L3C_TYPE_Q4_K, L3C_TYPE_Q5_K,
                              L3C_TYPE_Q6_K};

/* row lengths (elements) to test for a type */
static int lengths(int type, int64_t out[8]) {
    int64_t bs = l3c_type_traits_ref(type)->block_size;
    if (bs == 1) {
        const int64_t f[] = {1, 3, 7, 33, 100, 1056, 4099};
        memcpy(out, f, sizeof f);
        return 7;
    }
    const int64_t q[] = {1, 3, 7, 33};
    int k = 0;
    for (int i = 0; i < 4; i++)
        if (bs == 32 || q[i] <= 7) out[k++] = q[i] * bs;
    return k;
}

static void check_path(const char *path, const l3c_type_traits *tab) {
    int before = check_failures, tested = 0;
    /* activation quantizers and float conversions: exact */
    const int act[] = {L3C_TYPE_Q8_0, L3C_TYPE_Q8_1, L3C_TYPE_Q8_K, L3C_TYPE_F16, L3C_TYPE_BF16};
    for (size_t a = 0; a < sizeof act / sizeof act[0]; a++) {
        const l3c_type_traits *rt = l3c_type_traits_ref(act[a]), *st = &tab[act[a]];
        for (int64_t nb = 1; nb <= 9; nb += 4) {
            int64_t n = nb * rt->block_size * (rt->block_size == 1 ? 37 : 1);
            size_t bytes;
            L3C_ASSERT(l3c_row_size(act[a], n, &bytes));
            float *x = malloc((size_t)n * sizeof(float)), *y0 = malloc((size_t)n * sizeof(float)),
                  *y1 = malloc((size_t)n * sizeof(float));
            uint8_t *q0 = calloc(1, bytes), *q1 = calloc(1, bytes);
            make_acts(n, x);
            if (nb == 5) memset(x, 0, (size_t)L3C_MIN(n, 32) * sizeof(float)); /* zero block */
            if (nb == 9) /* exact halves with amax 127 first: scale 1 (Q8_0/Q8_1) and iscale -1
                          * (Q8_K), so every product is a rounding tie (roundf vs lrintf) */
                for (int j = 0; j < 32; j++) x[32 + j] = j == 0 ? 127.0f : (float)(j - 16) + 0.5f;
            if (st->from_float != rt->from_float && st->from_float) {
                rt->from_float(x, q0, n);
                st->from_float(x, q1, n);
                CHECK_MSG(memcmp(q0, q1, bytes) == 0, "%s from_float %s n=%lld differs", path,
                          rt->name, (long long)n);
                tested++;
            }
            if (st->to_float != rt->to_float && st->to_float) {
                rt->from_float(x, q0, n);
                rt->to_float(q0, y0, n);
                st->to_float(q0, y1, n);
                CHECK_MSG(memcmp(y0, y1, (size_t)n * sizeof(float)) == 0, "%s to_float %s n=%lld",
                          path, rt->name, (long long)n);
                tested++;
            }
            free(x), free(y0), free(y1), free(q0), free(q1);
        }
    }
    /* weight types: to_float exact, vec_dot and gemm within the float tolerance */
    for (size_t k = 0; k < sizeof g_types / sizeof g_types[0]; k++) {
        int type = g_types[k];
        const l3c_type_traits *rt = l3c_type_traits_ref(type), *st = &tab[type];
        if (!rt->vec_dot) continue;
        int64_t lens[8];
        int nl = lengths(type, lens);
        for (int li = 0; li < nl; li++) {
            int64_t n = lens[li];
            enum { R = 7, T = 9, LDY = 11 };
            size_t wb, xb;
            L3C_ASSERT(l3c_row_size(type, n, &wb) && l3c_row_size(rt->vec_dot_type, n, &xb));
            uint8_t *w = malloc(wb * R), *xq = malloc(xb * T);
            float *x = malloc((size_t)n * sizeof(float)), *f0 = malloc((size_t)n * sizeof(float)),
                  *f1 = malloc((size_t)n * sizeof(float));
            for (int r = 0; r < R; r++) make_weights(type, n, w + r * wb, wb);
            for (int t = 0; t < T; t++) {
                make_acts(n, x);
                l3c_type_traits_ref(rt->vec_dot_type)->from_float(x, xq + t * xb, n);
            }
            if (st->to_float != rt->to_float) {
                rt->to_float(w, f0, n);
                st->to_float(w, f1, n);
                CHECK_MSG(memcmp(f0, f1, (size_t)n * sizeof(float)) == 0, "%s to_float %s n=%lld",
                          path, rt->name, (long long)n);
                tested++;
            }
            float yref[R * T], ygemm[T * LDY];
            double mag[R * T];
            for (int t = 0; t < T; t++)
                for (int r = 0; r < R; r++) {
                    rt->vec_dot(n, &yref[t * R + r], w + r * wb, xq + t * xb);
                    mag[t * R + r] = magnitude(type, n, w + r * wb, xq + t * xb);
                }
            if (st->vec_dot != rt->vec_dot) {
                double worst = 0.0;
                for (int t = 0; t < T; t++)
                    for (int r = 0; r < R; r++) {
                        float y;
                        st->vec_dot(n, &y, w + r * wb, xq + t * xb);
                        double err = fabs((double)y - yref[t * R + r]), tol = 1e-5 * mag[t * R + r] + 1e-30;
                        worst = fmax(worst, err / tol);
                        CHECK_MSG(err <= tol, "%s vec_dot %s n=%lld r=%d t=%d: %.9g vs ref %.9g (tol %.3g)",
                                  path, rt->name, (long long)n, r, t, y, yref[t * R + r], tol);
                    }
                tested++;
                (void)worst;
            }
            if (st->gemm) {
                for (int i = 0; i < T * LDY; i++) ygemm[i] = -777.0f;
                st->gemm(n, R, T, ygemm, LDY, w, wb, xq, xb);
                for (int t = 0; t < T; t++) {
                    for (int r = 0; r < R; r++) {
                        double err = fabs((double)ygemm[t * LDY + r] - yref[t * R + r]);
                        double tol = 1e-5 * mag[t * R + r] + 1e-30;
                        CHECK_MSG(err <= tol, "%s gemm %s n=%lld r=%d t=%d: %.9g vs ref %.9g", path,
                                  rt->name, (long long)n, r, t, ygemm[t * LDY + r], yref[t * R + r]);
                    }
                    for (int r = R; r < LDY; r++)
                        CHECK_MSG(ygemm[t * LDY + r] == -777.0f, "%s gemm %s wrote past n_rows", path, rt->name);
                }
                tested++;
            }
            free(w), free(xq), free(x), free(f0), free(f1);
        }
    }
    fprintf(stderr, "test_simd: %s: %d kernel/size combinations compared, %d failures\n", path,
            tested, check_failures - before);
}

/*
 * Batch invariance: gemm over every tile shape and ragged edge (rows 1..13, tokens 1..9) gives
 * each (row, token) pair bit for bit what vec_dot gives it, so results never depend on T, the
 * tile or the token's place in the batch. Run for every path, the reference included (no gemm
 * there: ops.c loops vec_dot, trivially invariant, but vec_dot is still called per pair).
 */
static void check_invariance(const char *path, const l3c_type_traits *tab) {
    int before = check_failures, tested = 0;
    for (size_t k = 0; k < sizeof g_types / sizeof g_types[0]; k++) {
        int type = g_types[k];
        const l3c_type_traits *st = &tab[type];
        if (!st->vec_dot) continue;
        int64_t lens[8];
        int nl = lengths(type, lens);
        for (int li = 0; li < nl; li++) {
            int64_t n = lens[li];
            enum { R = 13, T = 9, LDY = 15 };
            size_t wb, xb;
            L3C_ASSERT(l3c_row_size(type, n, &wb) && l3c_row_size(st->vec_dot_type, n, &xb));
            uint8_t *w = malloc(wb * R), *xq = malloc(xb * T);
            float *x = malloc((size_t)n * sizeof(float));
            for (int r = 0; r < R; r++) make_weights(type, n, w + r * wb, wb);
            for (int t = 0; t < T; t++) {
                make_acts(n, x);
                l3c_type_traits_ref(st->vec_dot_type)->from_float(x, xq + t * xb, n);
            }
            float ydot[T][R], yg[T * LDY];
            for (int t = 0; t < T; t++)
                for (int r = 0; r < R; r++) st->vec_dot(n, &ydot[t][r], w + r * wb, xq + t * xb);
            if (st->gemm) {
                const int rows[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13};
                for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
                    for (int nt = 1; nt <= T; nt++)
                        for (int t0 = 0; t0 + nt <= T; t0 += nt > 4 ? T : 3) {
                            /* tokens t0 .. t0 + nt - 1, so a token sits at several tile positions */
                            for (int i = 0; i < T * LDY; i++) yg[i] = -777.0f;
                            st->gemm(n, rows[ri], nt, yg, LDY, w, wb, xq + t0 * xb, xb);
                            for (int t = 0; t < nt; t++)
                                for (int r = 0; r < rows[ri]; r++)
                                    CHECK_MSG(memcmp(&yg[t * LDY + r], &ydot[t0 + t][r], sizeof(float)) == 0,
                                              "%s invariance %s n=%lld rows=%d T=%d t0=%d r=%d t=%d: "
                                              "gemm %.9g vs vec_dot %.9g", path, st->name, (long long)n,
                                              rows[ri], nt, t0, r, t, yg[t * LDY + r], ydot[t0 + t][r]);
                            tested++;
                        }
            }
            /* vec_dot itself: the same pair twice gives the same bits (no state, no alignment) */
            float again;
            st->vec_dot(n, &again, w + (R - 1) * wb, xq + (T - 1) * xb);
            CHECK_MSG(memcmp(&again, &ydot[T - 1][R - 1], sizeof(float)) == 0, "%s vec_dot %s repeat", path, st->name);
            free(w), free(xq), free(x);
        }
    }
    fprintf(stderr, "test_simd: %s: %d gemm batch-invariance checks, %d failures\n", path, tested,
            check_failures - before);
}

/*
 * Packed layouts (layout.rows > 0): pack / unpack round trip byte-exact; the packed activation
 * quantizer gives the reference Q8_0 quants, its fp16-rounded scale and -off * sum(qs) (Q4_0,
 * Q8_0) or s = d * sum(qs) (Q4_1), or exactly the reference Q8_K blocks (K-quants); the exact F16 / BF16 layouts take the
 * fp32 activations as they are. The bf16 layouts of F16 / BF16 (packed_bf16): unpack gives each weight rounded to bf16 (nearest even; F16 back in F16,
 * saturated at +-65504: one weight is 65504, which rounds up to 65536 in bf16) and the
 * activations are l3c_fp32_to_bf16 of each float. The
 * packed gemm within 1e-5 * M of a float64 dot over the same integer quants, for row counts
 * around the group size (ragged last group, nothing written past n_rows or between rows of
 * ldy), and bit-identical for any T, token offset and row count (batch invariance).
 */
/* one layout of one type; returns the number of invariance cases run */
static int check_layout(const char *path, int type, const l3c_type_traits *st, const l3c_pack_layout *L, bool bf16) {
    int tested = 0;
    /* activations: Q8_K blocks, bf16, fp32 as they are (exact F16 / BF16), or Q8_0x blocks */
    const bool k_quant = L->act_block_size == 256, f32 = !L->act_from_float;
    const int off = type == L3C_TYPE_Q4_0 ? 8 : 128, PR = L->rows;
    const int64_t lens[] = {32, 96, 224, 1056}, klens[] = {256, 768, 1792};
    for (size_t li = 0; li < (k_quant ? 3 : 4); li++) {
        const int64_t n = k_quant ? klens[li] : lens[li], nb = n / L->act_block_size;
        enum { R = 35, T = 37, LDY = 37 }; /* T: 3 tiles of AMX's 16 tokens, 2 passes of its 32 */
        const int ng = (R + PR - 1) / PR;
        const int act_type = k_quant ? L3C_TYPE_Q8_K : bf16 ? L3C_TYPE_BF16 : f32 ? L3C_TYPE_F32 : L3C_TYPE_Q8_0;
        size_t wb, xb = (size_t)nb * L->act_type_size, qb;
        L3C_ASSERT(l3c_row_size(type, n, &wb) && l3c_row_size(act_type, n, &qb));
        uint8_t *w = malloc(wb * R), *pk = malloc(wb * PR * ng), *row = malloc(wb);
        uint8_t *xq = malloc(xb * T), *q8 = malloc(qb);
        float *x = malloc((size_t)n * sizeof(float)), *wf = malloc((size_t)n * R * sizeof(float));
        for (int r = 0; r < R; r++) make_weights(type, n, w + r * wb, wb);
        if (bf16) { /* the rounding edge of F16 -> bf16 -> F16, and a large BF16 value */
            const uint16_t big = type == L3C_TYPE_F16 ? 0x7BFF : 0x4780;
            memcpy(w + 3 * wb + 2 * (n - 1), &big, 2);
        }
        for (int g = 0; g < ng; g++)
            L->pack(n, L3C_MIN(PR, R - g * PR), w + (size_t)g * PR * wb, wb, pk + (size_t)g * PR * wb);
        for (int r = 0; r < R; r++) {
            L->unpack(n, pk + (size_t)(r / PR) * PR * wb, r % PR, row);
            l3c_type_traits_ref(type)->to_float(w + r * wb, wf + r * n, n);
            if (bf16) { /* wf: the bf16 weights the kernel multiplies; row: them in the file's type */
                uint16_t *want = (uint16_t *)q8;
                for (int64_t i = 0; i < n; i++) {
                    wf[r * n + i] = l3c_bf16_to_fp32(l3c_fp32_to_bf16(wf[r * n + i]));
                    const float sat = fminf(fmaxf(wf[r * n + i], -65504.0f), 65504.0f);
                    want[i] = type == L3C_TYPE_F16 ? l3c_fp32_to_fp16(sat) : l3c_fp32_to_bf16(wf[r * n + i]);
                }
                CHECK_MSG(memcmp(row, want, wb) == 0, "%s unpack %s n=%lld row %d", path, st->name, (long long)n, r);
            } else {
                CHECK_MSG(memcmp(row, w + r * wb, wb) == 0, "%s unpack %s n=%lld row %d", path, st->name, (long long)n, r);
            }
        }
        for (int t = 0; t < T; t++) {
            make_acts(n, x);
            if (f32) { /* used in place */
                memcpy(xq + t * xb, x, (size_t)n * sizeof(float));
                continue;
            }
            L->act_from_float(x, xq + t * xb, n);
            l3c_type_traits_ref(act_type)->from_float(x, q8, n);
            if (k_quant || bf16) { /* the Q8_K / BF16 rows themselves */
                CHECK_MSG(memcmp(xq + t * xb, q8, qb) == 0, "%s packed activations for %s n=%lld t=%d",
                          path, st->name, (long long)n, t);
                continue;
            }
            for (int64_t b = 0; b < nb; b++) {
                const l3c_block_q8_0x *a = (const l3c_block_q8_0x *)(xq + t * xb) + b;
                const l3c_block_q8_0 *q = (const l3c_block_q8_0 *)q8 + b;
                int sum = 0;
                for (int i = 0; i < 32; i++) sum += a->qs[i];
                const l3c_block_q8_1x *a1 = (const l3c_block_q8_1x *)a; /* Q4_1: s = d * sum */
                const bool corr = type == L3C_TYPE_Q4_1 ? a1->s == a1->d * (float)sum : a->neg_off_sum == -off * sum;
                CHECK_MSG(memcmp(a->qs, q->qs, 32) == 0 && l3c_fp32_to_fp16(a->d) == q->d && corr,
                          "%s packed activations for %s n=%lld t=%d block %lld", path, st->name,
                          (long long)n, t, (long long)b);
            }
        }
        /* all rows and tokens at once, against float64 */
        float *y = malloc(sizeof(float) * T * LDY), *y2 = malloc(sizeof(float) * T * LDY);
        for (int i = 0; i < T * LDY; i++) y[i] = -777.0f;
        L->gemm(n, R, T, y, LDY, pk, xq, xb);
        for (int t = 0; t < T; t++) {
            for (int r = 0; r < R; r++) {
                const l3c_block_q8_0x *a = (const l3c_block_q8_0x *)(xq + t * xb);
                const l3c_block_q8_K *ak = (const l3c_block_q8_K *)(xq + t * xb);
                const uint16_t *ab = (const uint16_t *)(xq + t * xb);
                double ref = 0.0, mag = 0.0;
                for (int64_t i = 0; i < n; i++) {
                    double xv = k_quant ? (double)ak[i / 256].d * ak[i / 256].qs[i % 256]
                              : bf16    ? (double)l3c_bf16_to_fp32(ab[i])
                              : f32     ? (double)((const float *)(xq + t * xb))[i]
                                        : (double)a[i / 32].d * a[i / 32].qs[i % 32];
                    double p = (double)wf[r * n + i] * xv;
                    ref += p, mag += fabs(p);
                }
                double err = fabs((double)y[t * LDY + r] - ref);
                CHECK_MSG(err <= 1e-5 * mag + 1e-30, "%s gemm_packed %s n=%lld r=%d t=%d: %.9g vs %.9g",
                          path, st->name, (long long)n, r, t, y[t * LDY + r], ref);
            }
            for (int r = R; r < LDY; r++)
                CHECK_MSG(y[t * LDY + r] == -777.0f, "%s gemm_packed %s wrote past n_rows", path, st->name);
        }
        /* any T, token offset and row count: the same bits */
        const int rows[] = {1, 5, 15, 16, 17, 31, 35};
        const int nts[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, T};
        for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
            for (size_t ni = 0; ni < sizeof nts / sizeof nts[0]; ni++) {
                const int nt = nts[ni], offsets[] = {0, 1, T - nt};
                for (int oi = 0; oi < 3; oi++) {
                    const int t0 = offsets[oi];
                    if (t0 + nt > T || (oi > 0 && t0 == offsets[oi - 1])) continue;
                    for (int i = 0; i < T * LDY; i++) y2[i] = -777.0f;
                    L->gemm(n, rows[ri], nt, y2, LDY, pk, xq + t0 * xb, xb);
                    for (int t = 0; t < nt; t++) {
                        for (int r = 0; r < rows[ri]; r++)
                            CHECK_MSG(memcmp(&y2[t * LDY + r], &y[(t0 + t) * LDY + r], sizeof(float)) == 0,
                                      "%s packed invariance %s n=%lld rows=%d T=%d t0=%d r=%d t=%d",
                                      path, st->name, (long long)n, rows[ri], nt, t0, r, t);
                        CHECK_MSG(y2[t * LDY + rows[ri]] == -777.0f, "%s gemm_packed %s wrote row %d",
                                  path, st->name, rows[ri]);
                    }
                    tested++;
                }
            }
        free(w), free(pk), free(row), free(xq), free(q8), free(x), free(wf), free(y), free(y2);
    }
    return tested;
}

/*
 * The prompt kernel of a packed layout (layout.prompt.gemm: the amx path's --bf16 on quantized
 * weights, calls of >= prompt.min_T tokens): on the layout's packed weights and its activations
 * (exactly the reference BF16 rows of the floats), against
 *  - the scalar reference "dequantize (reference to_float) -> round to bf16 (nearest even) ->
 *    float64 dot with the bf16 activations", within 1e-5 * sum |w x| (fp32 accumulation);
 *  - bit for bit, the table's bf16 kernel of BF16 weights (gemm_amx_bf16 on the amx paths) on those
 *    bf16-rounded weights: the dequantization adds no rounding of its own;
 * and bit-identical for other T, token offsets and row counts (batch invariance); nothing written
 * past n_rows. Lengths: up to 73 blocks of 32, past the kernel's 64-block chunks of K.
 */
static int check_prompt(const char *path, int type, const l3c_type_traits *tab,
                        const l3c_pack_layout *L) {
    int tested = 0;
    const l3c_pack_layout *B = &tab[L3C_TYPE_BF16].packed_bf16;
    const bool k_quant = l3c_type_traits_ref(type)->block_size == 256;
    const int64_t lens[] = {32, 224, 2336}, klens[] = {256, 2304}, PR = L->rows;
    CHECK_MSG(L->prompt.act_block_size == 32 && L->prompt.act_type_size == 64 && B->rows == PR,
              "%s prompt kernel of %s: bf16 activations and a bf16 layout of 16 rows expected",
              path, l3c_type_name(type));
    if (check_failures) return 0;
    for (size_t li = 0; li < (k_quant ? 2 : 3); li++) {
        const int64_t n = k_quant ? klens[li] : lens[li];
        enum { R = 35, T = 37, LDY = 37 };
        const int ng = (R + (int)PR - 1) / (int)PR;
        size_t wb, bb, xb = (size_t)n * 2;
        L3C_ASSERT(l3c_row_size(type, n, &wb) && l3c_row_size(L3C_TYPE_BF16, n, &bb));
        uint8_t *w = malloc(wb * R), *pk = malloc(wb * PR * ng), *wbf = malloc(bb * R),
                *pkb = malloc(bb * PR * ng);
        uint8_t *xq = malloc(xb * T), *ref_x = malloc(xb);
        float *x = malloc((size_t)n * sizeof(float)), *wf = malloc((size_t)n * R * sizeof(float));
        float *y = malloc(sizeof(float) * T * LDY), *y2 = malloc(sizeof(float) * T * LDY);
        for (int r = 0; r < R; r++) {
            make_weights(type, n, w + r * wb, wb);
            l3c_type_traits_ref(type)->to_float(w + r * wb, wf + r * n, n);
            for (int64_t i = 0; i < n; i++) {
                const uint16_t h = l3c_fp32_to_bf16(wf[r * n + i]);
                wf[r * n + i] = l3c_bf16_to_fp32(h);
                memcpy(wbf + r * bb + 2 * i, &h, 2);
            }
        }
        for (int g = 0; g < ng; g++) {
            const int nr = (int)L3C_MIN(PR, R - g * PR);
            L->pack(n, nr, w + (size_t)g * PR * wb, wb, pk + (size_t)g * PR * wb);
            B->pack(n, nr, wbf + (size_t)g * PR * bb, bb, pkb + (size_t)g * PR * bb);
        }
        for (int t = 0; t < T; t++) {
            make_acts(n, x);
            L->prompt.act_from_float(x, xq + t * xb, n);
            l3c_type_traits_ref(L3C_TYPE_BF16)->from_float(x, ref_x, n);
            CHECK_MSG(memcmp(xq + t * xb, ref_x, xb) == 0,
                      "%s prompt activations for %s n=%lld t=%d", path, l3c_type_name(type),
                      (long long)n, t);
        }
        for (int i = 0; i < T * LDY; i++)
            y[i] = y2[i] = -777.0f;
        L->prompt.gemm(n, R, T, y, LDY, pk, xq, xb);
        B->gemm(n, R, T, y2, LDY, pkb, xq, xb);
        for (int t = 0; t < T; t++) {
            const uint16_t *ab = (const uint16_t *)(xq + t * xb);
            for (int r = 0; r < R; r++) {
                double ref = 0.0, mag = 0.0;
                for (int64_t i = 0; i < n; i++) {
                    const double p = (double)wf[r * n + i] * l3c_bf16_to_fp32(ab[i]);
                    ref += p, mag += fabs(p);
                }
                CHECK_MSG(fabs((double)y[t * LDY + r] - ref) <= 1e-5 * mag + 1e-30,
                          "%s prompt gemm %s n=%lld r=%d t=%d: %.9g vs %.9g", path,
                          l3c_type_name(type), (long long)n, r, t, y[t * LDY + r], ref);
                CHECK_MSG(memcmp(&y[t * LDY + r], &y2[t * LDY + r], sizeof(float)) == 0,
                          "%s prompt gemm %s n=%lld r=%d t=%d: %.9g, the bf16 kernel on the bf16 "
                          "weights %.9g",
                          path, l3c_type_name(type), (long long)n, r, t, y[t * LDY + r],
                          y2[t * LDY + r]);
            }
            for (int r = R; r < LDY; r++)
                CHECK_MSG(y[t * LDY + r] == -777.0f, "%s prompt gemm %s wrote past n_rows", path,
                          l3c_type_name(type));
        }
        if (li + 1 == (k_quant ? 2u : 3u)) { /* the longest rows: any T, offset and row count */
            const int rows[] = {1, 17, 35}, nts[] = {1, 16, 33, T};
            for (size_t ri = 0; ri < 3; ri++)
                for (size_t ni = 0; ni < 4; ni++) {
                    const int nt = nts[ni], t0 = T - nt;
                    for (int i = 0; i < T * LDY; i++)
                        y2[i] = -777.0f;
                    L->prompt.gemm(n, rows[ri], nt, y2, LDY, pk, xq + t0 * xb, xb);
                    for (int t = 0; t < nt; t++) {
                        for (int r = 0; r < rows[ri]; r++)
                            CHECK_MSG(memcmp(&y2[t * LDY + r], &y[(t0 + t) * LDY + r],
                                             sizeof(float)) == 0,
                                      "%s prompt invariance %s n=%lld rows=%d T=%d t0=%d r=%d t=%d",
                                      path, l3c_type_name(type), (long long)n, rows[ri], nt, t0, r,
                                      t);
                        CHECK_MSG(y2[t * LDY + rows[ri]] == -777.0f,
                                  "%s prompt gemm %s wrote row %d", path, l3c_type_name(type),
                                  rows[ri]);
                    }
                    tested++;
                }
        }
        free(w), free(pk), free(wbf), free(pkb), free(xq), free(ref_x), free(x), free(wf), free(y),
            free(y2);
    }
    return tested;
}

static void check_packed(const char *path, const l3c_type_traits *tab) {
    int before = check_failures, tested = 0;
    for (size_t k = 0; k < sizeof g_types / sizeof g_types[0]; k++) {
        const l3c_type_traits *st = &tab[g_types[k]];
        if (st->packed.rows) tested += check_layout(path, g_types[k], st, &st->packed, false);
        if (st->packed_bf16.rows &&
            st->packed_bf16.prompt.gemm) /* int8 kernels as packed, bf16 prompts */
            tested += check_layout(path, g_types[k], st, &st->packed_bf16, false) +
                      check_prompt(path, g_types[k], tab, &st->packed_bf16);
        else if (st->packed_bf16.rows)
            tested += check_layout(path, g_types[k], st, &st->packed_bf16, true);
        if (st->packed.prompt.gemm) tested += check_prompt(path, g_types[k], tab, &st->packed);
    }
    fprintf(stderr, "test_simd: %s: %d packed-kernel checks, %d failures\n", path, tested,
            check_failures - before);
}

int main(void) {
    {
        static l3c_type_traits reft[L3C_TYPE_COUNT];
        for (int i = 0; i < L3C_TYPE_COUNT; i++) reft[i] = *l3c_type_traits_ref(i);
        check_invariance("ref", reft);
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    static l3c_type_traits tab[L3C_TYPE_COUNT];
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                __builtin_cpu_supports("f16c");
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
    if (!avx2) {
        fprintf(stderr, "test_simd: skipping avx2 and avx512: CPU lacks AVX2/FMA/F16C\n");
    } else {
        for (int i = 0; i < L3C_TYPE_COUNT; i++) tab[i] = *l3c_type_traits_ref(i);
        l3c_kernels_override_avx2(tab);
        check_path("avx2", tab);
        check_invariance("avx2", tab);
        if (!avx512) {
            fprintf(stderr, "test_simd: skipping avx512: CPU lacks one of AVX-512 F/BW/DQ/VL/VNNI/BF16\n");
        } else {
            l3c_kernels_override_avx512(tab);
            check_path("avx512", tab);
            check_invariance("avx512", tab);
            check_packed("avx512", tab);
            /* AMX on top (the real unit where the CPU has it; always the emulated one) */
            const char *names[8];
            int n_paths = l3c_kernels_available(names, 8);
            bool amx = false;
            for (int i = 0; i < n_paths && i < 8; i++) {
                if (strncmp(names[i], "amx", 3) != 0) continue;
                static l3c_type_traits atab[L3C_TYPE_COUNT];
                CHECK_MSG(l3c_kernels_build_table(names[i], atab), "build table %s", names[i]);
                check_path(names[i], atab);
                check_invariance(names[i], atab);
                check_packed(names[i], atab);
                amx |= strcmp(names[i], "amx") == 0;
            }
            if (!amx) fprintf(stderr, "test_simd: skipping amx (the real tile unit): CPU or OS lacks AMX; amx-emu tested\n");
        }
    }
#else
    /* other architectures (arm64: neon): every path this build and CPU offer above ref, each
     * table as dispatch would build it (the path's overrides on top of the ones below it) */
    const char *names[8];
    int n_paths = l3c_kernels_available(names, 8);
    if (n_paths <= 1) fprintf(stderr, "test_simd: skipping: no SIMD path on this CPU/build\n");
    for (int i = 1; i < n_paths && i < 8; i++) {
        static l3c_type_traits tab[L3C_TYPE_COUNT];
        CHECK_MSG(l3c_kernels_build_table(names[i], tab), "build table %s", names[i]);
        check_path(names[i], tab);
        check_invariance(names[i], tab);
        check_packed(names[i], tab);
    }
#endif
    return CHECK_DONE("test_simd");
}
