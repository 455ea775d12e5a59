/*
 * ref.h -- the scalar reference kernels (ref.c), one per type and operation. Private to
 * src/kernels/: types.c builds l3c_type_traits_ref() from them, and ISA files may call them for
 * the entries or tails they do not accelerate. Signatures are the l3c_*_fn types of types.h.
 */
#ifndef L3C_REF_H
#define L3C_REF_H

#include "kernels/types.h"

#define L3C_REF_TO_FLOAT(t) void l3c_ref_to_float_##t(const void *src, float *dst, int64_t n)
#define L3C_REF_FROM_FLOAT(t) void l3c_ref_from_float_##t(const float *src, void *dst, int64_t n)
#define L3C_REF_VEC_DOT(t) void l3c_ref_vec_dot_##t(int64_t n, float *out, const void *w, const void *x)

L3C_INTERNAL L3C_REF_TO_FLOAT(f32);
L3C_INTERNAL L3C_REF_TO_FLOAT(f16);
L3C_INTERNAL L3C_REF_TO_FLOAT(bf16);
L3C_INTERNAL L3C_REF_TO_FLOAT(q4_0);
L3C_INTERNAL L3C_REF_TO_FLOAT(q4_1);
L3C_INTERNAL L3C_REF_TO_FLOAT(q5_0);
L3C_INTERNAL L3C_REF_TO_FLOAT(q5_1);
L3C_INTERNAL L3C_REF_TO_FLOAT(q8_0);
L3C_INTERNAL L3C_REF_TO_FLOAT(q8_1);
L3C_INTERNAL L3C_REF_TO_FLOAT(q2_K);
L3C_INTERNAL L3C_REF_TO_FLOAT(q3_K);
L3C_INTERNAL L3C_REF_TO_FLOAT(q4_K);
L3C_INTERNAL L3C_REF_TO_FLOAT(q5_K);
L3C_INTERNAL L3C_REF_TO_FLOAT(q6_K);
L3C_INTERNAL L3C_REF_TO_FLOAT(q8_K);

/* Activation quantizers, and round-to-nearest weight quantizers (ggml quantize_row_*_ref) so
 * tests can make weight data. */
L3C_INTERNAL L3C_REF_FROM_FLOAT(f32);
L3C_INTERNAL L3C_REF_FROM_FLOAT(f16);
L3C_INTERNAL L3C_REF_FROM_FLOAT(bf16);
L3C_INTERNAL L3C_REF_FROM_FLOAT(q4_0);
L3C_INTERNAL L3C_REF_FROM_FLOAT(q4_1);
L3C_INTERNAL L3C_REF_FROM_FLOAT(q5_0);
L3C_INTERNAL L3C_REF_FROM_FLOAT(q5_1);
L3C_INTERNAL L3C_REF_FROM_FLOAT(q8_0);
/* Weight quantizers of llama-quantize's K types (quant_k.c; ggml's quantize_row_q4_K_ref /
 * q6_K_ref, byte for byte), for `llama3c convert`. */
L3C_INTERNAL void l3c_quantize_row_q4_K(const float *src, void *dst, int64_t n);
L3C_INTERNAL void l3c_quantize_row_q6_K(const float *src, void *dst, int64_t n);
L3C_INTERNAL L3C_REF_FROM_FLOAT(q8_1);
L3C_INTERNAL L3C_REF_FROM_FLOAT(q8_K);

/* w row of the named type . x row of its vec_dot_type:
 * f32, f16, bf16 -> f32; q4_0, q5_0, q8_0 -> q8_0; q4_1, q5_1 -> q8_1; K-quants -> q8_K. */
L3C_INTERNAL L3C_REF_VEC_DOT(f32);
L3C_INTERNAL L3C_REF_VEC_DOT(f16);
L3C_INTERNAL L3C_REF_VEC_DOT(bf16);
L3C_INTERNAL L3C_REF_VEC_DOT(q4_0);
L3C_INTERNAL L3C_REF_VEC_DOT(q4_1);
L3C_INTERNAL L3C_REF_VEC_DOT(q5_0);
L3C_INTERNAL L3C_REF_VEC_DOT(q5_1);
L3C_INTERNAL L3C_REF_VEC_DOT(q8_0);
L3C_INTERNAL L3C_REF_VEC_DOT(q2_K);
L3C_INTERNAL L3C_REF_VEC_DOT(q3_K);
L3C_INTERNAL L3C_REF_VEC_DOT(q4_K);
L3C_INTERNAL L3C_REF_VEC_DOT(q5_K);
L3C_INTERNAL L3C_REF_VEC_DOT(q6_K);

#endif /* L3C_REF_H */
