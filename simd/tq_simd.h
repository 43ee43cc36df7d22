/*
 * simd: the numeric kernels of tqvec and the one table that picks them.
 *
 * Every kernel exists as a portable scalar function, which is the
 * specification, and optionally as AVX2 and AVX-512 versions that must give
 * the same bits. The table is filled once (pthread_once) from the scalar
 * entries and upgraded level by level according to CPUID/XGETBV; nothing
 * tests CPU features inside a kernel. TQVEC_SIMD=scalar|avx2|avx512 in the
 * environment, or tq_simd_force(), pins a level; a level the CPU lacks is an
 * error, never a silent fallback.
 *
 * Float reductions have one fixed order on every path, so results agree bit
 * for bit:
 *   - "lane-16" sums: element j goes to lane j % 16, each lane adds in
 *     increasing j (product rounded, then added: no FMA), and the 16 lanes are
 *     folded as l += l+8, l += l+4, l += l+2, l += l+1, lane 0 being the result.
 *   - "lane-8 double" sums for exact ground truth: the same with 8 double
 *     lanes; products of two floats are exact in double.
 * A lane that has no element left is not touched (not even by +0.0), so the
 * sign of a zero result is the same on every path too.
 *
 * Scan blocks ("fast scan", after FAISS's 4-bit PQ fast scan, made exact):
 * a block holds the 4-bit LUT indices ("nibbles") of TQ_SCAN_BLOCK = 32
 * vectors. Nibbles t = 2p and 2p+1 of the 32 vectors fill the 32 bytes at
 * block + 32p: byte v = nib(v, 2p) | nib(v, 2p+1) << 4. A query supplies one
 * 16-entry uint8 table per nibble position (16 bytes at lut + 16t), and the
 * block kernel returns, per vector, the exact uint32 sum of its table
 * entries. SIMD paths accumulate in 16-bit lanes and widen to 32 bits at
 * least every TQ_SCAN_FLUSH_PAIRS pairs (256 entries of at most 255 fit in
 * 16 bits), so the sum is exact for any length.
 *
 * Packed codes: coordinate j of a row takes bits [j*b, j*b+b) of a
 * little-endian bit stream (LSB first); a row starts on a byte boundary.
 * Kernels that read codes may load up to TQ_CODE_PAD bytes past the last byte
 * of the last row; buffers handed to them carry that much padding.
 */
#ifndef TQ_SIMD_H
#define TQ_SIMD_H

#include <stddef.h>
#include <stdint.h>

#define TQ_CODE_PAD 16
#define TQ_SCAN_BLOCK 32
#define TQ_SCAN_FLUSH_PAIRS 128

typedef enum tq_simd_level {
    TQ_SIMD_SCALAR = 0,
    TQ_SIMD_AVX2 = 1,
    TQ_SIMD_AVX512 = 2,
} tq_simd_level;

typedef struct tq_simd_kernels {
    /* In place: x <- scale * H (signs ⊙ x) on x[0..n), H the unnormalised
     * Walsh-Hadamard matrix, n a power of two >= 1, signs optional (NULL =
     * all +1). Specification: multiply by signs, butterflies stage by stage
     * (h = 1, 2, 4, ...: a+b, a-b), then multiply by scale; each output is
     * that same sequence of roundings on every path, however the stages are
     * grouped in registers. */
    void (*fwht)(float *x, size_t n, const float *signs, float scale);
    /* x[i] *= y[i]. */
    void (*mul)(float *x, const float *y, size_t n);
    /* x[i] *= s. */
    void (*scale)(float *x, size_t n, float s);
    /* codes[i] = number of bounds[] strictly below x[i]; bounds ascending,
     * nbounds = 2^b - 1 with b in 1..8. */
    void (*quantize)(const float *x, size_t n, const float *bounds,
                     unsigned nbounds, uint8_t *codes);
    /* Pack n codes of b bits (1..8) each into the bit stream described above;
     * writes exactly ceil(n*b/8) bytes, zero-filling the unused high bits. */
    void (*pack)(const uint8_t *codes, size_t n, unsigned bits, uint8_t *out);
    /* Lane-16 sums. */
    float (*dot)(const float *a, const float *b, size_t n);
    float (*l2sq)(const float *a, const float *b, size_t n);
    /* Lane-8 double sums over float inputs. */
    double (*dot_f64)(const float *a, const float *b, size_t n);
    double (*l2sq_f64)(const float *a, const float *b, size_t n);
    /* For each of nrows rows of packed b-bit codes (b in 1..4), spaced
     * stride bytes apart: out[r] = lane-16 sum over j < d of
     * q[j] * table[code_rj]. table has 16 entries (unused ones ignored). */
    void (*dot_codes)(const uint8_t *codes, size_t nrows, size_t stride,
                      unsigned bits, const float *table, const float *q,
                      size_t d, float *out);
    /* Lane-16 sum over j < d of q[j] * table[codes[j]]: one vector of 8-bit
     * codes (one byte per coordinate) against a 256-entry table. */
    float (*dot_u8)(const uint8_t *codes, const float *table, const float *q, size_t d);
    /* One scan block (layout above) of npairs nibble pairs: out[v] = sum over
     * t < 2*npairs of lut[16t + nib(v, t)], exactly. */
    void (*scan_block)(const uint8_t *block, size_t npairs, const uint8_t *lut, uint32_t out[32]);
    /* IEEE binary16 conversions, round to nearest even (F16C where the
     * level has it): refine data kept in half precision. */
    void (*float_to_half)(const float *f, uint16_t *h, size_t n);
    void (*half_to_float)(const uint16_t *h, float *f, size_t n);
} tq_simd_kernels;

/* One value each way, the scalar reference: round to nearest even, beyond
 * 65504 to infinity, subnormals kept. */
uint16_t tq_half_from_float(float f);
float tq_float_from_half(uint16_t h);

/* The active table; filled on first use. Never NULL. */
const tq_simd_kernels *tq_simd(void);
tq_simd_level tq_simd_active_level(void);
const char *tq_simd_level_name(tq_simd_level level);
/* Highest level this CPU (and OS) supports and this build compiled in. */
tq_simd_level tq_simd_best_level(void);
/* Pin the active table to a level. Returns 0, or -1 if the CPU or the build
 * lacks it (the table is then unchanged). Not safe against concurrent
 * searches: call at start-up or between tests. */
int tq_simd_force(tq_simd_level level);
/* 1 if TQVEC_SIMD names a level that is unknown or that this CPU or build
 * lacks (the table then stays at the best level). */
int tq_simd_env_unusable(void);
/* Parse "scalar" / "avx2" / "avx512"; -1 if unknown. */
int tq_simd_parse_level(const char *name);
/* The table of one level, for equivalence tests; NULL if unavailable. */
const tq_simd_kernels *tq_simd_table(tq_simd_level level);

/* The fixed folding trees of the lane sums; every path stores its lanes and
 * calls these, so the last steps cannot differ. */
static inline float tq_fold16(float lane[16])
{
    for (int width = 8; width >= 1; width /= 2)
        for (int l = 0; l < width; l++)
            lane[l] = lane[l] + lane[l + width];
    return lane[0];
}

static inline double tq_fold8(double lane[8])
{
    for (int width = 4; width >= 1; width /= 2)
        for (int l = 0; l < width; l++)
            lane[l] = lane[l] + lane[l + width];
    return lane[0];
}

/* Code j of a packed row of b-bit codes (the layout described above). */
static inline unsigned tq_code_at(const uint8_t *row, size_t j, unsigned bits)
{
    size_t bit = j * bits;
    unsigned v = row[bit / 8];
    if (bit % 8 + bits > 8)
        v |= (unsigned)row[bit / 8 + 1] << 8;
    return (v >> (bit % 8)) & ((1u << bits) - 1);
}

/* Per-ISA tables, each defined in its own translation unit. */
extern const tq_simd_kernels tq_simd_kernels_scalar;
#ifdef TQ_HAVE_AVX2
extern const tq_simd_kernels tq_simd_kernels_avx2;
#endif
#ifdef TQ_HAVE_AVX512
extern const tq_simd_kernels tq_simd_kernels_avx512;
#endif

/* Scalar entries, callable from the SIMD files for cases they do not cover. */
void tq_quantize_scalar(const float *x, size_t n, const float *bounds,
                        unsigned nbounds, uint8_t *codes);
void tq_pack_scalar(const uint8_t *codes, size_t n, unsigned bits, uint8_t *out);
void tq_fwht_scalar(float *x, size_t n, const float *signs, float scale);

#endif
