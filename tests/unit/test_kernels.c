/*
 * test_kernels.c -- the type table and kernels against independent arithmetic.
 *
 *  (a) reference vec_dot(w, quantize(x)) == sum(dequant(w) * dequant(quantize(x))) computed in
 *      double, for random valid blocks of every weight type and rows of 1, 3 and 7 blocks;
 *      tolerance per type, relative to sum |w||x| (see dot_tolerance);
 *  (b) every kernel path this CPU can run (ref, avx2, avx512, ...; each built on a copy of the
 *      table) against the reference: to_float, from_float (round-trip error bound), vec_dot
 *      and gemm;
 *  (c) fp16 / bf16 conversions: exhaustive round trip of all 65536 values, ties-to-even at every
 *      midpoint, and (when the compiler has _Float16) a sweep against the hardware conversion.
 *
 * Also a tool mode for tests/py/test_quant_layouts.py:
 *   test_kernels --dequant TYPE < blocks > float32s    (reference to_float)
 */
#include "check.h"
#include "kernels/blocks.h"
#include "kernels/types.h"

#include <math.h>
#include <string.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd_u32(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

/* uniform in [lo, hi) */
static float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)(rnd_u32() >> 8) / 16777216.0f; }

static uint16_t h16(float lo, float hi) {
    float v = rnd_f(lo, hi);
    return l3c_fp32_to_fp16(rnd_u32() & 1 ? v : -v);
}

/* random valid weight data of `type`: random bytes with sane fp16 scales (no NaN/Inf) */
static void random_weights(int type, void *dst, int64_t n) {
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    int64_t nb = n / tr->block_size;
    uint8_t *p = dst;
    for (size_t i = 0; i < (size_t)nb * tr->type_size; i++) p[i] = (uint8_t)rnd_u32();
    for (int64_t i = 0; i < nb; i++) {
        void *b = p + (size_t)i * tr->type_size;
        switch (type) {
        case L3C_TYPE_F32: {
            float v = rnd_f(-2.0f, 2.0f);
            memcpy(b, &v, 4);
            break;
        }
        case L3C_TYPE_F16: *(uint16_t *)b = h16(0.0f, 2.0f); break;
        case L3C_TYPE_BF16: *(uint16_t *)b = l3c_fp32_to_bf16(rnd_f(-2.0f, 2.0f)); break;
        case L3C_TYPE_Q4_0: ((l3c_block_q4_0 *)b)->d = h16(0.001f, 0.1f); break;
        case L3C_TYPE_Q5_0: ((l3c_block_q5_0 *)b)->d = h16(0.001f, 0.1f); break;
        case L3C_TYPE_Q8_0: ((l3c_block_q8_0 *)b)->d = h16(0.001f, 0.1f); break;
        case L3C_TYPE_Q4_1:
            ((l3c_block_q4_1 *)b)->d = h16(0.001f, 0.1f);
            ((l3c_block_q4_1 *)b)->m = h16(0.0f, 0.5f);
            break;
        case L3C_TYPE_Q5_1:
            ((l3c_block_q5_1 *)b)->d = h16(0.001f, 0.1f);
            ((l3c_block_q5_1 *)b)->m = h16(0.0f, 0.5f);
            break;
        case L3C_TYPE_Q2_K:
            ((l3c_block_q2_K *)b)->d = h16(0.001f, 0.02f);
            ((l3c_block_q2_K *)b)->dmin = h16(0.0f, 0.01f);
            break;
        case L3C_TYPE_Q3_K: ((l3c_block_q3_K *)b)->d = h16(0.001f, 0.02f); break;
        case L3C_TYPE_Q4_K:
            ((l3c_block_q4_K *)b)->d = h16(0.0001f, 0.002f);
            ((l3c_block_q4_K *)b)->dmin = h16(0.0f, 0.002f);
            break;
        case L3C_TYPE_Q5_K:
            ((l3c_block_q5_K *)b)->d = h16(0.0001f, 0.002f);
            ((l3c_block_q5_K *)b)->dmin = h16(0.0f, 0.002f);
            break;
        case L3C_TYPE_Q6_K: ((l3c_block_q6_K *)b)->d = h16(0.0001f, 0.002f); break;
        default: break;
        }
    }
}

static void random_floats(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = rnd_f(-1.0f, 1.0f);
    if (n > 5) x[n / 3] = 3.0f, x[n / 2] = -2.5f; /* a few outliers, like real activations */
}

/* Tolerance of vec_dot vs the double dequant dot, relative to sum |w||x|: float accumulation
 * across blocks (~1e-6); Q4_1/Q5_1 use the fp16 s = d*sum(q) of Q8_1 for the min term, which
 * is rounded to 11 bits (2^-11 ~ 5e-4). */
static double dot_tolerance(int type) {
    switch (type) {
    case L3C_TYPE_Q4_1:
    case L3C_TYPE_Q5_1: return 1e-3;
    default: return 1e-5;
    }
}

static const int k_types[] = {L3C_TYPE_F32,  L3C_TYPE_F16,  L3C_TYPE_BF16, L3C_TYPE_Q4_0,
                              L3C_TYPE_Q4_1, L3C_TYPE_Q5_0, L3C_TYPE_Q5_1, L3C_TYPE_Q8_0,
                              L3C_TYPE_Q2_K, L3C_TYPE_Q3_K, L3C_TYPE_Q4_K, L3C_TYPE_Q5_K,
                              L3C_TYPE_Q6_K};
#define N_TYPES (int)(sizeof k_types / sizeof k_types[0])

/* row lengths: 1, 3, 7 blocks (more for the 1-element float types) */
static int row_lengths(int type, int64_t *ns) {
    int64_t bs = l3c_type_traits_ref(type)->block_size;
    if (bs == 1) {
        const int64_t v[] = {1, 3, 7, 33, 257};
        memcpy(ns, v, sizeof v);
        return 5;
    }
    ns[0] = bs, ns[1] = 3 * bs, ns[2] = 7 * bs;
    return 3;
}

#define MAX_N (7 * 256)
#define MAX_BYTES (MAX_N * 4 + 64)

/* double dot of the reference dequantizations of w (type) and xq (xtype) */
static double dequant_dot(int type, const void *w, int xtype, const void *xq, int64_t n,
                          double *abs_sum) {
    static float wf[MAX_N], xf[MAX_N];
    l3c_type_traits_ref(type)->to_float(w, wf, n);
    l3c_type_traits_ref(xtype)->to_float(xq, xf, n);
    double s = 0, a = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)wf[i] * xf[i];
        a += fabs((double)wf[i] * xf[i]);
    }
    *abs_sum = a;
    return s;
}

/* (a) */
static void test_ref_vec_dot(void) {
    static uint8_t w[MAX_BYTES], xq[MAX_BYTES];
    static float x[MAX_N];
    for (int k = 0; k < N_TYPES; k++) {
        int type = k_types[k];
        const l3c_type_traits *tr = l3c_type_traits_ref(type);
        CHECK_MSG(l3c_type_supported(type), "%s", l3c_type_name(type));
        int64_t ns[5];
        int nn = row_lengths(type, ns);
        for (int li = 0; li < nn; li++) {
            int64_t n = ns[li];
            for (int rep = 0; rep < 20; rep++) {
                random_weights(type, w, n);
                random_floats(x, n);
                l3c_type_traits_ref(tr->vec_dot_type)->from_float(x, xq, n);
                double abs_sum, want = dequant_dot(type, w, tr->vec_dot_type, xq, n, &abs_sum);
                float got;
                tr->vec_dot(n, &got, w, xq);
                double err = fabs(got - want), tol = dot_tolerance(type) * abs_sum + 1e-30;
                CHECK_MSG(err <= tol, "ref %s n=%lld: vec_dot %.9g vs dequant dot %.9g (tol %.3g)",
                          tr->name, (long long)n, got, want, tol);
            }
        }
    }
}

/* quantizers: the round trip error of the reference from_float is within half a quantum */
static void test_ref_quantizers(void) {
    static float x[MAX_N], y[MAX_N];
    static uint8_t q[MAX_BYTES];
    /* type, max error per block as a fraction of the block's max |x| */
    const struct {
        int type;
        double frac;
    } cases[] = {
        /* d = amax/8 and +amax clamps to 7d (ggml's asymmetric q4_0): one full step */
        {L3C_TYPE_Q4_0, 1.0 / 8 * 1.01},
        {L3C_TYPE_Q5_0, 1.0 / 16 * 1.01},
        {L3C_TYPE_Q4_1, 2.0 * 0.5 / 15 * 1.01 + 0.002},     /* range <= 2 amax, d = range/15 */
        {L3C_TYPE_Q5_1, 2.0 * 0.5 / 31 * 1.01 + 0.002},
        {L3C_TYPE_Q8_0, 0.5 / 127 * 1.01 + 0.001},
        {L3C_TYPE_Q8_1, 0.5 / 127 * 1.01 + 0.001},
        {L3C_TYPE_Q8_K, 0.5 / 127 * 1.01},
        {L3C_TYPE_F16, 1.0 / 2048},
        {L3C_TYPE_BF16, 1.0 / 256},
        {L3C_TYPE_F32, 0.0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const l3c_type_traits *tr = l3c_type_traits_ref(cases[c].type);
        int64_t bs = tr->block_size == 1 ? 32 : tr->block_size, n = 7 * bs;
        random_floats(x, n);
        tr->from_float(x, q, n);
        tr->to_float(q, y, n);
        for (int64_t b = 0; b < n / bs; b++) {
            double amax = 0, err = 0;
            for (int64_t i = b * bs; i < (b + 1) * bs; i++) {
                amax = fmax(amax, fabs(x[i]));
                err = fmax(err, fabs(x[i] - y[i]));
            }
            CHECK_MSG(err <= cases[c].frac * amax, "%s quantize block %lld: err %g > %g",
                      tr->name, (long long)b, err, cases[c].frac * amax);
        }
    }
    /* Q8_K bsums are the group sums; all-zero input gives d = 0 */
    l3c_block_q8_K k[2];
    random_floats(x, 512);
    l3c_type_traits_ref(L3C_TYPE_Q8_K)->from_float(x, k, 512);
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += k[1].qs[16 * g + l];
        CHECK(k[1].bsums[g] == s);
    }
    memset(x, 0, 256 * sizeof(float));
    l3c_type_traits_ref(L3C_TYPE_Q8_K)->from_float(x, k, 256);
    CHECK(k[0].d == 0.0f && k[0].qs[7] == 0);
}

/* (b) one kernel path vs the reference */
static void test_path(const char *path) {
    static l3c_type_traits tbl[L3C_TYPE_COUNT];
    static uint8_t w[MAX_BYTES], xq[MAX_BYTES];
    static float x[MAX_N], a[MAX_N], b[MAX_N];
    CHECK_MSG(l3c_kernels_build_table(path, tbl), "build table %s", path);
    int n_checked = 0;
    for (int k = 0; k < N_TYPES; k++) {
        int type = k_types[k];
        const l3c_type_traits *ref = l3c_type_traits_ref(type), *p = &tbl[type];
        CHECK(p->block_size == ref->block_size && p->type_size == ref->type_size);
        int xtype = p->vec_dot_type;
        const l3c_type_traits *px = &tbl[xtype];
        CHECK_MSG(px->from_float && l3c_type_traits_ref(xtype)->to_float,
                  "%s: %s vec_dot_type %s has no from_float/to_float", path, p->name,
                  l3c_type_name(xtype));
        if (!px->from_float) continue;
        int64_t ns[5];
        int nn = row_lengths(type, ns);
        for (int li = 0; li < nn; li++) {
            int64_t n = ns[li];
            for (int rep = 0; rep < 10; rep++) {
                random_weights(type, w, n);
                /* to_float: same values up to a fused multiply-add (1e-5 of the row max) */
                ref->to_float(w, a, n);
                p->to_float(w, b, n);
                double amax = 0, err = 0;
                for (int64_t i = 0; i < n; i++) {
                    amax = fmax(amax, fabs(a[i]));
                    err = fmax(err, fabs(a[i] - b[i]));
                }
                CHECK_MSG(err <= 1e-5 * amax, "%s %s n=%lld to_float err %g (max %g)", path,
                          p->name, (long long)n, err, amax);
                /* vec_dot on this path's own quantization of x, against the reference dequant
                 * of those very blocks */
                random_floats(x, n);
                px->from_float(x, xq, n);
                double abs_sum, want = dequant_dot(type, w, xtype, xq, n, &abs_sum);
                float got;
                p->vec_dot(n, &got, w, xq);
                double tol = dot_tolerance(type) * abs_sum + 1e-30;
                CHECK_MSG(fabs(got - want) <= tol, "%s %s n=%lld vec_dot %.9g vs %.9g (tol %.3g)",
                          path, p->name, (long long)n, got, want, tol);
                n_checked++;
            }
        }
        /* gemm (when present) agrees with vec_dot: 5 rows x 3 tokens, ldy 7 */
        if (p->gemm) {
            int64_t n = p->block_size == 1 ? 96 : 2 * p->block_size; /* 3n <= MAX_N */
            size_t wrow, xrow;
            CHECK(l3c_row_size(type, n, &wrow) && l3c_row_size(xtype, n, &xrow));
            static uint8_t wm[5 * MAX_BYTES / 4], xm[3 * MAX_BYTES / 4];
            if (5 * wrow > sizeof wm || 3 * xrow > sizeof xm) continue;
            random_weights(type, wm, 5 * n);
            random_floats(x, 3 * n);
            for (int t = 0; t < 3; t++) px->from_float(x + t * n, xm + t * xrow, n);
            float y[3 * 7] = {0};
            p->gemm(n, 5, 3, y, 7, wm, wrow, xm, xrow);
            for (int t = 0; t < 3; t++)
                for (int r = 0; r < 5; r++) {
                    float d;
                    p->vec_dot(n, &d, wm + r * wrow, xm + t * xrow);
                    CHECK_NEAR(y[t * 7 + r], d, 1e-4 * (fabs(d) + 1));
                }
        }
    }
    /* activation quantizers of this path: round-trip error within the reference bound */
    const int act[] = {L3C_TYPE_Q8_0, L3C_TYPE_Q8_1, L3C_TYPE_Q8_K, L3C_TYPE_F16, L3C_TYPE_BF16};
    for (size_t i = 0; i < sizeof act / sizeof act[0]; i++) {
        const l3c_type_traits *p = &tbl[act[i]];
        if (!p->from_float) continue;
        int64_t n = 7 * 256;
        random_floats(x, n);
        p->from_float(x, xq, n);
        l3c_type_traits_ref(act[i])->to_float(xq, a, n);
        double amax = 0, err = 0;
        for (int64_t j = 0; j < n; j++) {
            amax = fmax(amax, fabs(x[j]));
            err = fmax(err, fabs(x[j] - a[j]) / fmax(fabs(x[j]), 1e-30));
        }
        double bound = act[i] == L3C_TYPE_F16 ? 1.0 / 2048 : act[i] == L3C_TYPE_BF16 ? 1.0 / 256 : 0;
        if (bound > 0) {
            CHECK_MSG(err <= bound, "%s %s from_float relative err %g", path, p->name, err);
        } else {
            /* 8-bit: absolute error <= 0.51 quantum of the block (amax of the row bounds it) */
            double e = 0;
            for (int64_t j = 0; j < n; j++) e = fmax(e, fabs(x[j] - a[j]));
            CHECK_MSG(e <= 0.51 * amax / 127 + amax * 1e-3, "%s %s from_float err %g", path,
                      p->name, e);
        }
    }
    fprintf(stderr, "path %s: %d vec_dot cases checked\n", path, n_checked);
}

static void test_dispatch(void) {
    const char *names[8];
    int n = l3c_kernels_available(names, 8);
    CHECK(n >= 1 && strcmp(names[0], "ref") == 0);
    bool found = false;
    for (int i = 0; i < n && i < 8; i++) {
        test_path(names[i]);
        found |= strcmp(names[i], l3c_kernels_path()) == 0;
    }
    CHECK_MSG(found, "dispatched path %s not among the available ones", l3c_kernels_path());
#if defined(__x86_64__)
    /* the start-up check of the AMX kernels (dispatch runs it on the real unit) on the emulated one */
    bool emu = false;
    for (int i = 0; i < n && i < 8; i++) emu |= strcmp(names[i], "amx-emu") == 0;
    if (emu) CHECK(l3c_kernels_amx_emu_check() == 1);
    else fprintf(stderr, "test_kernels: skipping the AMX start-up check on amx-emu: no AVX-512 path\n");
#endif
    /* unasked, dispatch takes the best path that runs on the hardware: never the emulated one */
    const char *env = getenv("L3C_KERNELS");
    if (!env || !*env) {
        const char *best = "ref";
        for (int i = 0; i < n && i < 8; i++)
            if (strcmp(names[i], "amx-emu") != 0) best = names[i];
        CHECK_MSG(strcmp(l3c_kernels_path(), best) == 0, "dispatch picked %s, not the best real path %s",
                  l3c_kernels_path(), best);
    }
    CHECK(strcmp(l3c_backend_path(), l3c_kernels_path()) == 0);
    CHECK(!l3c_kernels_build_table("no-such-isa", (l3c_type_traits[L3C_TYPE_COUNT]){0}));
    /* the dispatched table is the table of its path */
    static l3c_type_traits tbl[L3C_TYPE_COUNT];
    CHECK(l3c_kernels_build_table(l3c_kernels_path(), tbl));
    for (int t = 0; t < L3C_TYPE_COUNT; t++)
        CHECK(memcmp(&tbl[t], l3c_type_traits_get(t), sizeof tbl[t]) == 0);
    CHECK(l3c_default_threads() >= 1);
    fprintf(stderr, "dispatched path: %s; paths available:", l3c_kernels_path());
    for (int i = 0; i < n && i < 8; i++) fprintf(stderr, " %s", names[i]);
    fprintf(stderr, "; default threads %d\n", l3c_default_threads());
}

static void test_table_basics(void) {
    size_t sz;
    CHECK(l3c_row_size(L3C_TYPE_Q4_K, 512, &sz) && sz == 288);
    CHECK(l3c_row_size(L3C_TYPE_Q4_1, 576, &sz) && sz == 18 * 20);
    CHECK(l3c_row_size(L3C_TYPE_F16, 3, &sz) && sz == 6);
    CHECK(!l3c_row_size(L3C_TYPE_Q4_K, 100, &sz));
    CHECK(!l3c_row_size(L3C_TYPE_Q4_0, -32, &sz));
    CHECK(!l3c_row_size(17, 32, &sz));
    CHECK(!l3c_row_size(L3C_TYPE_F32, INT64_MAX, &sz)); /* 4 * INT64_MAX overflows */
    CHECK(!l3c_row_size(-1, 32, &sz) && !l3c_row_size(1000, 32, &sz));
    CHECK(strcmp(l3c_type_name(L3C_TYPE_Q6_K), "Q6_K") == 0);
    CHECK(strcmp(l3c_type_name(17), "type 17") == 0);
    CHECK(strcmp(l3c_type_name(-3), "type -3") == 0);
    CHECK(l3c_type_traits_ref(17)->name == NULL && l3c_type_traits_ref(99)->name == NULL);
    CHECK(l3c_type_traits_get(-1)->vec_dot == NULL);
    CHECK(!l3c_type_supported(17) && !l3c_type_supported(L3C_TYPE_Q8_K));
}

/* (c) */
static void test_half_conversions(void) {
    long bad_rt = 0, bad_tie = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = l3c_fp16_to_fp32((uint16_t)h);
        uint16_t back = l3c_fp32_to_fp16(f);
        bool nan = ((h >> 10) & 0x1F) == 0x1F && (h & 0x3FF);
        if (nan ? !(isnan(f) && ((back >> 10) & 0x1F) == 0x1F && (back & 0x3FF)) : back != h)
            bad_rt++;
        /* midpoint to the next value up (positive finite, below the largest) rounds to even;
         * one float ulp either side rounds to the nearer one */
        if (h < 0x7BFF) {
            float g = l3c_fp16_to_fp32((uint16_t)(h + 1));
            float mid = (f + g) * 0.5f; /* exact: 12 significant bits */
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            if (l3c_fp32_to_fp16(mid) != even || l3c_fp32_to_fp16(nextafterf(mid, 0)) != h ||
                l3c_fp32_to_fp16(nextafterf(mid, INFINITY)) != h + 1 ||
                l3c_fp32_to_fp16(-mid) != (even | 0x8000))
                bad_tie++;
        }
        /* bf16 */
        float fb = l3c_bf16_to_fp32((uint16_t)h);
        uint16_t bb = l3c_fp32_to_bf16(fb);
        bool bnan = isnan(fb);
        if (bnan ? !isnan(l3c_bf16_to_fp32(bb)) : bb != h) bad_rt++;
        if (!bnan && (h & 0x7FFF) < 0x7F7F) {
            uint16_t up = (uint16_t)(h + 1); /* next magnitude up, same sign */
            float g = l3c_bf16_to_fp32(up), mid = fb + (g - fb) * 0.5f; /* exact, no overflow */
            uint16_t even = (h & 1) ? up : (uint16_t)h;
            if (l3c_fp32_to_bf16(mid) != even) bad_tie++;
        }
    }
    CHECK_MSG(bad_rt == 0, "%ld fp16/bf16 round-trip failures", bad_rt);
    CHECK_MSG(bad_tie == 0, "%ld fp16/bf16 tie-rounding failures", bad_tie);
    CHECK(l3c_fp32_to_fp16(65520.0f) == 0x7C00 && l3c_fp32_to_fp16(65519.99f) == 0x7BFF);
    CHECK(l3c_fp32_to_fp16(0x1p-25f) == 0 && l3c_fp32_to_fp16(0x1.000002p-25f) == 1);
    CHECK(l3c_fp32_to_fp16(-0.0f) == 0x8000 && l3c_fp32_to_fp16(-INFINITY) == 0xFC00);
    CHECK(l3c_fp32_to_bf16(INFINITY) == 0x7F80 && isnan(l3c_bf16_to_fp32(l3c_fp32_to_bf16(NAN))));
#ifdef __FLT16_MAX__
    /* sweep of float bit patterns around the half range against the compiler's conversion */
    long bad = 0;
    for (uint32_t u = 0x30000000; u < 0x48000000; u += 61) {
        float f;
        memcpy(&f, &u, 4);
        _Float16 c = (_Float16)f;
        uint16_t ch;
        memcpy(&ch, &c, 2);
        if (l3c_fp32_to_fp16(f) != ch) bad++;
        if (l3c_fp16_to_fp32(ch) != (float)c) bad++;
    }
    CHECK_MSG(bad == 0, "%ld mismatches against _Float16", bad);
#endif
}

/* tool mode: reference dequantization of stdin to stdout */
static int dequant_tool(const char *name) {
    int type = -1;
    for (int t = 0; t < L3C_TYPE_COUNT; t++)
        if (l3c_type_traits_ref(t)->name && strcmp(l3c_type_traits_ref(t)->name, name) == 0) type = t;
    if (type < 0 || !l3c_type_traits_ref(type)->to_float) {
        fprintf(stderr, "--dequant: unknown type %s\n", name);
        return 2;
    }
    const l3c_type_traits *tr = l3c_type_traits_ref(type);
    uint8_t *blk = malloc(tr->type_size);
    float *out = malloc((size_t)tr->block_size * sizeof(float));
    if (!blk || !out) return 2;
    int rc = 0;
    for (;;) {
        size_t got = fread(blk, 1, tr->type_size, stdin);
        if (got == 0) break;
        if (got != tr->type_size) {
            fprintf(stderr, "--dequant: trailing %zu bytes\n", got);
            rc = 2;
            break;
        }
        tr->to_float(blk, out, tr->block_size);
        fwrite(out, sizeof(float), (size_t)tr->block_size, stdout);
    }
    free(blk);
    free(out);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--dequant") == 0) return dequant_tool(argv[2]);
    test_table_basics();
    test_half_conversions();
    test_ref_quantizers();
    test_ref_vec_dot();
    test_dispatch();
    return CHECK_DONE("test_kernels");
}
