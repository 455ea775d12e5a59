/*
 * blocks.h -- the quantized block structs, byte-for-byte the ggml layouts (GGUF data is used in
 * place). Private to src/kernels/ (ref.c and the ISA files). All multi-byte fields are
 * little-endian; fp16 fields are IEEE binary16 bit patterns (l3c_fp16_to_fp32).
 *
 * Sizes (bytes per block of `QK` elements) are checked by the static asserts below; every struct
 * is made of uint8/int8/uint16 (and one float) fields so it has no padding and alignment <= 4.
 *
 * Dequantization, one block (d, m, dmin are fp16 unless noted; i = element index):
 *   Q4_0  (32):  x[j] = d * ((qs[j] & 15) - 8),  x[j+16] = d * ((qs[j] >> 4) - 8),     j < 16
 *   Q4_1  (32):  as Q4_0 without the -8, plus m
 *   Q5_0  (32):  high bit of element j is bit j of qh (little-endian u32); q5 - 16, times d
 *   Q5_1  (32):  as Q5_0 without the -16, plus m
 *   Q8_0  (32):  x = d * qs
 *   Q8_1  (32):  x = d * qs; s = d * sum(qs) (activation type for Q4_1/Q5_1)
 *   Q2_K (256):  16 sub-blocks of 16; scales[k]: low nibble scale, high nibble min;
 *                x = d * sc * q2 - dmin * m
 *   Q3_K (256):  16 sub-blocks of 16 with 6-bit scales (minus 32) packed in 12 bytes;
 *                q3 = 2 low bits from qs, minus 4 when the hmask bit is clear
 *   Q4_K (256):  8 sub-blocks of 32 with 6-bit scale and min packed in 12 bytes (see
 *                l3c_k4_scale_min in ref.c); x = d * sc * q4 - dmin * m
 *   Q5_K (256):  as Q4_K with a 5th bit from qh
 *   Q6_K (256):  16 sub-blocks of 16, int8 scales; q6 = 4 bits ql + 2 bits qh, minus 32
 *   Q8_K (256):  x = d (float) * qs; bsums[k] = sum of qs[16k .. 16k+15] (activation type
 *                for every K-quant)
 */
#ifndef L3C_BLOCKS_H
#define L3C_BLOCKS_H

#include <assert.h>
#include <stdint.h>

#define L3C_QK4_1 32
#define L3C_QK5_0 32
#define L3C_QK5_1 32
#define L3C_QK8_1 32
#define L3C_K_SCALE_SIZE 12

typedef struct {
    uint16_t d;     /* fp16 scale */
    uint8_t qs[16]; /* nibbles: element j in the low nibble of qs[j], j+16 in the high */
} l3c_block_q4_0;

typedef struct {
    uint16_t d, m; /* fp16 scale and min */
    uint8_t qs[16];
} l3c_block_q4_1;

typedef struct {
    uint16_t d;
    uint8_t qh[4]; /* 5th bits, element j at bit j */
    uint8_t qs[16];
} l3c_block_q5_0;

typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} l3c_block_q5_1;

typedef struct {
    uint16_t d;
    int8_t qs[32];
} l3c_block_q8_0;

typedef struct {
    uint16_t d; /* fp16 scale */
    uint16_t s; /* fp16 d * sum(qs) */
    int8_t qs[32];
} l3c_block_q8_1;

typedef struct {
    uint8_t scales[16]; /* low nibble scale, high nibble min, per sub-block of 16 */
    uint8_t qs[64];     /* 2-bit quants */
    uint16_t d, dmin;
} l3c_block_q2_K;

typedef struct {
    uint8_t hmask[32]; /* high bit of each quant */
    uint8_t qs[64];    /* low 2 bits */
    uint8_t scales[12];/* 16 6-bit scales */
    uint16_t d;
} l3c_block_q3_K;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[L3C_K_SCALE_SIZE]; /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[128];                  /* 4-bit quants */
} l3c_block_q4_K;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[L3C_K_SCALE_SIZE];
    uint8_t qh[32];  /* 5th bits */
    uint8_t qs[128]; /* low 4 bits */
} l3c_block_q5_K;

typedef struct {
    uint8_t ql[128];  /* low 4 bits */
    uint8_t qh[64];   /* high 2 bits */
    int8_t scales[16];/* 8-bit scales per sub-block of 16 */
    uint16_t d;
} l3c_block_q6_K;

typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16]; /* sums of groups of 16 quants */
} l3c_block_q8_K;

static_assert(sizeof(l3c_block_q4_0) == 18, "q4_0 size");
static_assert(sizeof(l3c_block_q4_1) == 20, "q4_1 size");
static_assert(sizeof(l3c_block_q5_0) == 22, "q5_0 size");
static_assert(sizeof(l3c_block_q5_1) == 24, "q5_1 size");
static_assert(sizeof(l3c_block_q8_0) == 34, "q8_0 size");
static_assert(sizeof(l3c_block_q8_1) == 36, "q8_1 size");
static_assert(sizeof(l3c_block_q2_K) == 84, "q2_K size");
static_assert(sizeof(l3c_block_q3_K) == 110, "q3_K size");
static_assert(sizeof(l3c_block_q4_K) == 144, "q4_K size");
static_assert(sizeof(l3c_block_q5_K) == 176, "q5_K size");
static_assert(sizeof(l3c_block_q6_K) == 210, "q6_K size");
static_assert(sizeof(l3c_block_q8_K) == 292, "q8_K size");

/*
 * Q4_K / Q5_K packed 6-bit scale and min of sub-block j (0..7) from the 12 scale bytes q:
 * j < 4: sc = q[j] & 63, m = q[j+4] & 63; else the low 4 bits come from q[j+4] and the
 * high 2 bits from the top bits of q[j-4] (scale) and q[j] (min).
 */
static inline void l3c_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q3_K 6-bit scale of sub-block j (0..15), before subtracting 32. */
static inline int l3c_k3_scale(int j, const uint8_t *scales) {
    int lo = j < 8 ? (scales[j] & 0x0F) : (scales[j - 8] >> 4);
    int hi = (scales[8 + (j % 4)] >> (2 * (j / 4))) & 3;
    return lo | (hi << 4);
}

/* Q5_0 / Q5_1 high-bit word (little-endian regardless of host order). */
static inline uint32_t l3c_load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) |
           ((uint32_t)qh[3] << 24);
}

#endif /* L3C_BLOCKS_H */
