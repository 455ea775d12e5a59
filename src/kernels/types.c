/*
 * types.c -- the reference type table (l3c_type_traits_ref), type names, row sizes and the
 * exact fp16 / bf16 conversions.
 *
 * Invariants: the table is indexed by the ggml type id and is never modified; ids outside
 * [0, L3C_TYPE_COUNT) and unsupported ids map to an all-zero entry (name == NULL), never to NULL.
 * Conversions round to nearest even, keep signed zeros, infinities and NaN (quieted), and
 * handle subnormals exactly.
 */
#include "kernels/ref.h"

#include "kernels/blocks.h"

#include <pthread.h>
#include <string.h>

#define ENTRY(id, nm, bs, ts, q, to, from, dot, vdt)                                          \
    [id] = {.name = nm, .block_size = bs, .type_size = ts, .is_quantized = q, .to_float = to, \
            .from_float = from, .vec_dot = dot, .vec_dot_type = vdt, .gemm = NULL}

static const l3c_type_traits g_ref[L3C_TYPE_COUNT] = {
    ENTRY(L3C_TYPE_F32, "F32", 1, 4, false, l3c_ref_to_float_f32, l3c_ref_from_float_f32,
          l3c_ref_vec_dot_f32, L3C_TYPE_F32),
    ENTRY(L3C_TYPE_F16, "F16", 1, 2, false, l3c_ref_to_float_f16, l3c_ref_from_float_f16,
          l3c_ref_vec_dot_f16, L3C_TYPE_F32),
    ENTRY(L3C_TYPE_BF16, "BF16", 1, 2, false, l3c_ref_to_float_bf16, l3c_ref_from_float_bf16,
          l3c_ref_vec_dot_bf16, L3C_TYPE_F32),
    ENTRY(L3C_TYPE_Q4_0, "Q4_0", 32, sizeof(l3c_block_q4_0), true, l3c_ref_to_float_q4_0,
          l3c_ref_from_float_q4_0, l3c_ref_vec_dot_q4_0, L3C_TYPE_Q8_0),
    ENTRY(L3C_TYPE_Q4_1, "Q4_1", 32, sizeof(l3c_block_q4_1), true, l3c_ref_to_float_q4_1,
          l3c_ref_from_float_q4_1, l3c_ref_vec_dot_q4_1, L3C_TYPE_Q8_1),
    ENTRY(L3C_TYPE_Q5_0, "Q5_0", 32, sizeof(l3c_block_q5_0), true, l3c_ref_to_float_q5_0,
          l3c_ref_from_float_q5_0, l3c_ref_vec_dot_q5_0, L3C_TYPE_Q8_0),
    ENTRY(L3C_TYPE_Q5_1, "Q5_1", 32, sizeof(l3c_block_q5_1), true, l3c_ref_to_float_q5_1,
          l3c_ref_from_float_q5_1, l3c_ref_vec_dot_q5_1, L3C_TYPE_Q8_1),
    ENTRY(L3C_TYPE_Q8_0, "Q8_0", 32, sizeof(l3c_block_q8_0), true, l3c_ref_to_float_q8_0,
          l3c_ref_from_float_q8_0, l3c_ref_vec_dot_q8_0, L3C_TYPE_Q8_0),
    ENTRY(L3C_TYPE_Q8_1, "Q8_1", 32, sizeof(l3c_block_q8_1), true, l3c_ref_to_float_q8_1,
          l3c_ref_from_float_q8_1, NULL, L3C_TYPE_Q8_1),
    ENTRY(L3C_TYPE_Q2_K, "Q2_K", 256, sizeof(l3c_block_q2_K), true, l3c_ref_to_float_q2_K, NULL,
          l3c_ref_vec_dot_q2_K, L3C_TYPE_Q8_K),
    ENTRY(L3C_TYPE_Q3_K, "Q3_K", 256, sizeof(l3c_block_q3_K), true, l3c_ref_to_float_q3_K, NULL,
          l3c_ref_vec_dot_q3_K, L3C_TYPE_Q8_K),
    ENTRY(L3C_TYPE_Q4_K, "Q4_K", 256, sizeof(l3c_block_q4_K), true, l3c_ref_to_float_q4_K, NULL,
          l3c_ref_vec_dot_q4_K, L3C_TYPE_Q8_K),
    ENTRY(L3C_TYPE_Q5_K, "Q5_K", 256, sizeof(l3c_block_q5_K), true, l3c_ref_to_float_q5_K, NULL,
          l3c_ref_vec_dot_q5_K, L3C_TYPE_Q8_K),
    ENTRY(L3C_TYPE_Q6_K, "Q6_K", 256, sizeof(l3c_block_q6_K), true, l3c_ref_to_float_q6_K, NULL,
          l3c_ref_vec_dot_q6_K, L3C_TYPE_Q8_K),
    ENTRY(L3C_TYPE_Q8_K, "Q8_K", 256, sizeof(l3c_block_q8_K), true, l3c_ref_to_float_q8_K,
          l3c_ref_from_float_q8_K, NULL, L3C_TYPE_Q8_K),
};

static const l3c_type_traits g_none; /* all zero: what unknown ids map to */

const l3c_type_traits *l3c_type_traits_ref(int type) {
    if (type < 0 || type >= L3C_TYPE_COUNT) return &g_none;
    return &g_ref[type];
}

bool l3c_type_supported(int type) {
    const l3c_type_traits *t = l3c_type_traits_ref(type);
    return t->to_float != NULL && t->vec_dot != NULL;
}

/* "type 17" names for ids without an entry, made once */
static char g_unknown_names[L3C_TYPE_COUNT][24];
static pthread_once_t g_names_once = PTHREAD_ONCE_INIT;

static void make_unknown_names(void) {
    for (int i = 0; i < L3C_TYPE_COUNT; i++)
        snprintf(g_unknown_names[i], sizeof g_unknown_names[i], "type %d", i);
}

const char *l3c_type_name(int type) {
    if (type >= 0 && type < L3C_TYPE_COUNT) {
        if (g_ref[type].name) return g_ref[type].name;
        pthread_once(&g_names_once, make_unknown_names);
        return g_unknown_names[type];
    }
    static _Thread_local char buf[32];
    snprintf(buf, sizeof buf, "type %d", type);
    return buf;
}

bool l3c_row_size(int type, int64_t n, size_t *out) {
    const l3c_type_traits *t = l3c_type_traits_ref(type);
    if (t->block_size <= 0 || n < 0 || n % t->block_size != 0) return false;
    size_t bytes;
    if (!l3c_mul_ok((size_t)(n / t->block_size), t->type_size, &bytes)) return false;
    *out = bytes;
    return true;
}

/* ---------------------------------------------------------------- fp16 / bf16 */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float l3c_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000 | (mant << 13)); /* inf, NaN */
    if (exp != 0) return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
    if (mant == 0) return f32_from_bits(sign); /* signed zero */
    /* subnormal: mant * 2^-24, exact in float */
    float v = (float)mant * 0x1p-24f;
    return sign ? -v : v;
}

/* x >> shift rounded to nearest, ties to even (1 <= shift <= 24) */
static uint32_t shift_rne(uint32_t x, int shift) {
    uint32_t r = x >> shift, rem = x & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return r;
}

uint16_t l3c_fp32_to_fp16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7FFFFFFF;
    if (a > 0x7F800000) return sign | 0x7E00 | (uint16_t)((a >> 13) & 0x3FF); /* NaN, quiet */
    if (a >= 0x477FF000) return sign | 0x7C00; /* >= 65520 rounds to infinity (and inf) */
    uint32_t e = a >> 23, m = (a & 0x7FFFFF) | 0x800000;
    if (e >= 113) /* normal half: rebias, round 13 bits off (a carry may bump the exponent) */
        return sign | (uint16_t)shift_rne((e - 112) << 23 | (a & 0x7FFFFF), 13);
    if (e < 102) return sign; /* below 2^-25: rounds to zero */
    /* subnormal half: value / 2^-24 = m * 2^(e - 126) */
    return sign | (uint16_t)shift_rne(m, (int)(126 - e));
}

float l3c_bf16_to_fp32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t l3c_fp32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((u >> 16) | 0x40); /* NaN, quiet */
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
