/*
 * types.h -- the per-type table (ggml-compatible block formats) and the kernel dispatch.
 *
 * Every tensor type has one row of l3c_type_traits: block size, bytes per block, dequantize
 * (to_float), quantize (from_float, for activation types and tests) and the dot product of one
 * weight row with one activation row already converted to vec_dot_type. The scalar reference
 * table (l3c_type_traits_ref, kernels/ref.c) is the oracle; ISA files (x86_avx2.c, x86_avx512.c,
 * arm_neon.c) override entries and dispatch.c picks one table once at start-up
 * (L3C_KERNELS=ref|avx2|avx512|... forces a path). Block layouts are byte-compatible with ggml
 * so GGUF data is used in place.
 */
#ifndef L3C_TYPES_H
#define L3C_TYPES_H

#include "util/util.h"

typedef enum l3c_type {
    L3C_TYPE_F32 = 0,
    L3C_TYPE_F16 = 1,
    L3C_TYPE_Q4_0 = 2,
    L3C_TYPE_Q4_1 = 3,
    L3C_TYPE_Q5_0 = 6,
    L3C_TYPE_Q5_1 = 7,
    L3C_TYPE_Q8_0 = 8,
    L3C_TYPE_Q8_1 = 9,
    L3C_TYPE_Q2_K = 10,
    L3C_TYPE_Q3_K = 11,
    L3C_TYPE_Q4_K = 12,
    L3C_TYPE_Q5_K = 13,
    L3C_TYPE_Q6_K = 14,
    L3C_TYPE_Q8_K = 15,
    L3C_TYPE_BF16 = 30,
    L3C_TYPE_COUNT = 40
} l3c_type;

#define L3C_QK4_0 32
#define L3C_QK8_0 32
#define L3C_QK_K 256

/* n elements of src (a multiple of block_size) to float */
typedef void (*l3c_to_float_fn)(const void *src, float *dst, int64_t n);
/* n floats to blocks (n a multiple of block_size) */
typedef void (*l3c_from_float_fn)(const float *src, void *dst, int64_t n);
/* dot of n elements: w is a row of this type, x a row of vec_dot_type; result to *out */
typedef void (*l3c_vec_dot_fn)(int64_t n, float *out, const void *w, const void *x);
/*
 * Optional batched kernel (prompt path): for weight rows [0, n_rows) of w (row stride w_stride
 * bytes) and T activation rows of x (vec_dot_type, row stride x_stride bytes), each of n
 * elements: y[t * ldy + r] = dot(w row r, x row t). Same results as vec_dot up to float
 * summation order. NULL: ops.c loops over vec_dot.
 */
typedef void (*l3c_gemm_fn)(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy,
                            const void *w, size_t w_stride, const void *x, size_t x_stride);

/*
 * Optional packed layouts of a weight type on an ISA (x86_avx512.c: Q4_0, Q8_0, Q3_K, Q4_K, Q5_K,
 * Q6_K, F16, BF16; F16 and BF16 also as bf16, opt-in): rows are interleaved in groups of `rows` at model
 * load, so that one vector register holds the same elements of all rows of a group and one dot
 * product instruction serves all of them (ggml's "repack"). A group takes exactly rows * (row
 * bytes) bytes; the last group of a matrix is padded with zero rows. pack writes one group from
 * n_rows (<= rows) rows of w.
 */
typedef void (*l3c_pack_fn)(int64_t n, int64_t n_rows, const void *w, size_t w_stride, void *dst);
/* The inverse for one row: row r (< rows) of the group at g, n elements (a multiple of
 * act_block_size; the group's blocks of that many elements are consecutive), written in the
 * file's block layout to dst (embedding rows of a tied output matrix come from the copy). */
typedef void (*l3c_unpack_fn)(int64_t n, const void *g, int r, void *dst);
/*
 * Packed kernel: rows [0, n_rows) of the consecutive groups at wp, T activation rows of x in the
 * layout's activation format (row stride x_stride): y[t * ldy + r] = dot(row r, x row t). Each
 * (row, token) value is the same whatever T, n_rows or the row's place in its group (batch
 * invariance).
 */
typedef void (*l3c_gemm_packed_fn)(int64_t n, int64_t n_rows, int64_t T, float *y, int64_t ldy,
                                   const void *wp, const void *x, size_t x_stride);

typedef struct l3c_pack_layout {
    int rows;                        /* rows per group; 0: no such layout */
    l3c_pack_fn pack;
    l3c_unpack_fn unpack;
    l3c_gemm_packed_fn gemm;
    l3c_from_float_fn act_from_float; /* activations for gemm (NULL: F32 rows used as they are), */
    int64_t act_block_size;           /* in blocks of this many elements, */
    size_t act_type_size;             /* each this many bytes */
    /* optional second kernel on the same packed weights for calls of at least min_T tokens
     * (prompts), with its own activation format (gemm == NULL: none): the bf16 tile kernel of
     * the quantized layouts on the amx path (--bf16, x86_amx.h "quantized weights as bf16") */
    struct {
        l3c_gemm_packed_fn gemm;
        l3c_from_float_fn act_from_float;
        int64_t act_block_size;
        size_t act_type_size;
        int64_t min_T;
    } prompt;
} l3c_pack_layout;

typedef struct l3c_type_traits {
    const char *name;          /* "Q4_K"; NULL for ids that are not a type */
    int64_t block_size;        /* elements per block */
    size_t type_size;          /* bytes per block */
    bool is_quantized;
    l3c_to_float_fn to_float;
    l3c_from_float_fn from_float;
    l3c_vec_dot_fn vec_dot;    /* NULL: cannot be used as a weight type */
    l3c_type vec_dot_type;     /* activation format vec_dot expects */
    l3c_gemm_fn gemm;          /* optional batched kernel, NULL in the reference table */
    /* optional packed layouts (see l3c_pack_fn): the exact one, used by default, and one that
     * computes in bfloat16 (F16 / BF16 weights rounded to bf16 at load, activations at each
     * matmul; ~3 significant digits), used only for a model loaded with bf16_matmul; on the
     * amx path the quantized types' packed_bf16 is their packed layout plus a bf16 prompt kernel */
    l3c_pack_layout packed;
    l3c_pack_layout packed_bf16;
} l3c_type_traits;

/* Activation block of the packed Q4_0 / Q8_0 kernels: qs as in Q8_0, the scale as float (not
 * rounded to fp16) and -off * sum(qs), the exact integer correction for weights stored as
 * unsigned bytes with offset off (8 for Q4_0 nibbles, 128 for Q8_0 bytes xor 0x80). */
typedef struct l3c_block_q8_0x {
    float d;
    int32_t neg_off_sum;
    int8_t qs[32];
} l3c_block_q8_0x;

/* Activation block of the packed Q4_1 kernels: qs as in Q8_0, the scale as float and s = d *
 * (float)sum(qs) (the Q8_1 'ds' trick, unrounded): the block's min term is m_w * s. */
typedef struct l3c_block_q8_1x {
    float d;
    float s;
    int8_t qs[32];
} l3c_block_q8_1x;
_Static_assert(offsetof(l3c_block_q8_1x, qs) == offsetof(l3c_block_q8_0x, qs) &&
                   sizeof(l3c_block_q8_1x) == sizeof(l3c_block_q8_0x),
               "the packed activation blocks share their quants' place");

/* Reference (scalar) table; entries are zero for unsupported ids. Never modified. */
const l3c_type_traits *l3c_type_traits_ref(int type);
/* Dispatched table for this CPU (falls back to the reference per entry). */
const l3c_type_traits *l3c_type_traits_get(int type);
/* 1 when the type can be a weight (has to_float and vec_dot). */
bool l3c_type_supported(int type);
const char *l3c_type_name(int type); /* "type 17" style text for unknown ids (static buffer per id) */
/* Bytes for n elements; false when n is not a multiple of the block size or on overflow. */
bool l3c_row_size(int type, int64_t n, size_t *out);

/* fp16 / bf16 conversion (scalar, exact round-to-nearest-even) */
float l3c_fp16_to_fp32(uint16_t h);
uint16_t l3c_fp32_to_fp16(float f);
float l3c_bf16_to_fp32(uint16_t h);
uint16_t l3c_fp32_to_bf16(float f);

/*
 * Per-ISA overrides: each ISA file (x86_avx2.c, x86_avx512.c, arm_neon.c, ...) defines one
 * function that replaces the entries it accelerates in a copy of the reference table and
 * returns true; with table == NULL it only answers whether the file was built with its ISA
 * (false: an empty stand-in, see dispatch.c). dispatch.c checks cpuid (and L3C_KERNELS) once
 * and calls the best ones in order (avx2 then avx512 on top).
 */
bool l3c_kernels_override_avx2(l3c_type_traits *table /* [L3C_TYPE_COUNT] or NULL */);
bool l3c_kernels_override_avx512(l3c_type_traits *table);
bool l3c_kernels_override_neon(l3c_type_traits *table);
/* AMX (x86_amx.c) replaces the gemm of some avx512 layouts; amx-emu (x86_amx_emu.c) is the same
 * code on an emulated tile unit, for tests: dispatch picks it only when asked for by name. */
bool l3c_kernels_override_amx(l3c_type_traits *table);
bool l3c_kernels_override_amx_emu(l3c_type_traits *table);
/* Each AMX kernel == the avx512 one on random matrices (int8 bit for bit, bf16 within rounding):
 * 1 yes, 0 no, -1 out of memory. dispatch.c offers "amx" only where it answers 1; call only
 * where the CPU can run the path. */
int l3c_kernels_amx_check(void);
int l3c_kernels_amx_emu_check(void);

/* Name of the dispatched path ("ref", "avx2", "avx512", "amx", "neon", ...). */
const char *l3c_kernels_path(void);

/*
 * For tests and benchmarks: the paths this build and CPU can run, lowest first ("ref" is always
 * first); writes up to max names and returns how many there are. l3c_kernels_build_table fills
 * table[L3C_TYPE_COUNT] with the reference table plus the overrides of every path up to and
 * including `name` (what dispatch would pick with L3C_KERNELS=name); false when the path is
 * unknown or unavailable here.
 */
int l3c_kernels_available(const char **names, int max);
bool l3c_kernels_build_table(const char *name, l3c_type_traits *table /* [L3C_TYPE_COUNT] */);

#endif /* L3C_TYPES_H */
