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
 *     increasing j (product rounded, then added: no FMA, except in
 *     dot_matrix, whose lanes fuse the two on every path), and the 16 lanes are
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
 * 16-entry uint8 table per nibble position, and the block kernel returns,
 * per vector, the exact uint32 sum of its table entries. Entries are at
 * most TQ_SCAN_LUT_MAX (127), so the two lookups of a byte's nibbles add in
 * one 16-bit add without a carry between the two vectors a 16-bit lane
 * holds. SIMD paths accumulate in 16-bit lanes and widen to 32 bits at
 * least every TQ_SCAN_FLUSH_PAIRS pairs (256 entries of at most 255 fit in
 * 16 bits), so the sum is exact for any length.
 *
 * The tables are stored in the order the shuffles consume them, so no kernel
 * moves table bytes between registers: nibbles 4g..4g+3 (pairs 2g and 2g+1)
 * take the 128 bytes at lut + 128g, each 16-byte table twice in a row, as
 *     T(4g) T(4g) | T(4g+2) T(4g+2) | T(4g+1) T(4g+1) | T(4g+3) T(4g+3).
 * A 64-byte load of the first half is the low-nibble table of both pairs
 * for a 512-bit shuffle, of the second half the high-nibble one; a 256-bit
 * path loads 32 bytes of each. Tables of nibbles past the last are zero.
 * tq_scan_lut_offset() gives where nibble t's first copy starts.
 *
 * Packed codes: coordinate j of a row takes bits [j*b, j*b+b) of a
 * little-endian bit stream (LSB first); a row starts on a byte boundary.
 * Kernels that read codes may load up to TQ_CODE_PAD bytes past the last byte
 * of the last row; buffers handed to them carry that much padding.
 */
#ifndef TQ_SIMD_H
#define TQ_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TQ_CODE_PAD 16
#define TQ_SCAN_BLOCK 32
#define TQ_SCAN_FLUSH_PAIRS 128
/* The largest table entry: 7 bits, so that a pair of entries fits a byte
 * (the pair is then split into its two vectors' sums with one shift, not
 * two; a fifth fewer instructions in the scan's inner loop). */
#define TQ_SCAN_LUT_MAX 127
/* Sextet groups between widenings: each vector's 16-bit partial takes 4
 * entries of at most 255 per group, 256 in all. */
#define TQ_SCAN6_FLUSH_GROUPS 64
/* Floats of one block's scalars for the mse variant: its planes of norms
 * and corrections (prod adds a third, residual norms). */
#define TQ_SCALARS_MSE_BLOCK (2 * TQ_SCAN_BLOCK)
/* Queries one scan_block_multi call sums at most. */
#define TQ_SCAN_MAX_QUERIES 4
/* How far ahead of the block being summed the scan kernels prefetch codes:
 * the hardware's own prefetch left a lone query at d = 1536 (73 MB of
 * codes) reading 11-12 GB/s where plain reads ran at 22-28 (an AMD EPYC
 * VM); 4 KiB ahead took it to 15-18 GB/s (2 KiB: 14-15, 8 and 16 KiB as
 * 4). Blocks are contiguous, so this runs into the next block, and past
 * the last one harmlessly (a prefetch does not fault). */
#define TQ_SCAN_PREFETCH_BYTES 4096

/* Prefetch the line `ahead` bytes past p, which may lie past the end of
 * p's array (the address is formed as an integer: no pointer leaves its
 * object). */
static inline void tq_prefetch_ahead(const void *p, size_t ahead)
{
    __builtin_prefetch((const void *)((uintptr_t)p + ahead));
}

/* Row stride of a vector codebook's points as vq_nearest reads them: the
 * most points a codebook has (64, 3 bits a coordinate in pairs). */
#define TQ_VQ_STRIDE 64
/* Bytes of a query's tables for npairs nibble pairs (whole groups of 2). */
#define TQ_SCAN_LUT_BYTES(npairs) ((size_t)128 * (((npairs) + 1) / 2))

/* Where the first copy of nibble t's table starts (layout above). */
static inline size_t tq_scan_lut_offset(size_t t)
{
    static const unsigned char quarter[4] = {0, 64, 32, 96};
    return 128 * (t / 4) + quarter[t % 4];
}

/* How a block's table sums become search keys (see block_select). */
typedef enum tq_key_metric { TQ_KEY_L2 = 0, TQ_KEY_IP = 1, TQ_KEY_COSINE = 2 } tq_key_metric;

typedef struct tq_key_params {
    tq_key_metric metric;
    int prod;                     /* add the sign-sketch term */
    float code_delta, code_bias;  /* code part = code_delta * sum + code_bias */
    float sign_delta, sign_bias;  /* sign part, likewise (prod) */
    float qjl;                    /* the sign part's scale (prod) */
    float qq, bias, qnorm;        /* ||q||^2, additive bias, ||q|| */
} tq_key_params;

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
    /* dot and l2sq of a against b in IEEE half precision: exactly
     * dot(a, half_to_float(b)) and l2sq(a, half_to_float(b)), in one pass
     * (re-ranking on fp16 refine data; converting a row first and then
     * reading it again cost a fifth of a query at d = 4096). */
    float (*dot_half)(const float *a, const uint16_t *b, size_t n);
    float (*l2sq_half)(const float *a, const uint16_t *b, size_t n);
    /* Lane-8 double sums over float inputs. */
    double (*dot_f64)(const float *a, const float *b, size_t n);
    double (*l2sq_f64)(const float *a, const float *b, size_t n);
    /* out[i * nc + j] = the lane-16 sum of x_i ⊙ c_j (x_i = x + i d, c_j =
     * c + j d), each lane taking its elements by fused multiply-add
     * (lane = fmaf(x, c, lane): one rounding an element, not two as in
     * dot), for i < nx and j < nc: every pair of two sets of vectors (a
     * partitioning's calibration: sample rows against every row, for their
     * exact neighbours), register-blocked so that each loaded vector serves
     * several products. The fused form halves the arithmetic of a quarter
     * of partitioning; CPUs without FMA take the scalar kernel. */
    void (*dot_matrix)(const float *x, size_t nx, const float *c, size_t nc, size_t d, float *out);
    /* out[16 b + l] = sum over g < groups and r < 4 of q[4 g + r] *
     * t[(b groups + g) 64 + 4 l + r], unsigned bytes times signed ones
     * summed exactly in 32 bits (|t| <= 127 keeps a sum of 65,536 terms,
     * the largest d, within 255 127 65536 < 2^31): one 8-bit query against nblocks blocks of 16 8-bit
     * vectors stored four dimensions at a time, so every lane sums one
     * vector (how a query ranks the partition centroids). nq queries at
     * once, 4 groups bytes each back to back, query i's sums at out + i 16
     * nblocks: each loaded table byte serves them all (assigning rows to
     * partitions, where the table streams from L2 for every row). */
    void (*dot_q8_blocks)(const uint8_t *q, size_t nq, const int8_t *t, size_t nblocks, size_t groups, int32_t *out);
    /* The lowest p < n maximizing unit * (float)(dots[p] - 128 sums[p]) -
     * penalty[p] (penalty NULL: 0), each score the same two roundings on
     * every path (0 if n is 0): the best of dot_q8_blocks' sums, as a row
     * is assigned to its partition. */
    uint32_t (*argmax_q8)(const int32_t *dots, const int32_t *sums, const float *penalty, float unit, size_t n);
    /* The nearest of P = 2^(dims bits) points for each of n groups of dims
     * floats (a vector codebook's encode; dims 2 or 4 with 16 points at 2
     * and 1 bits, dims 2 with 64 points at 3 bits): p_t = the lowest p
     * maximizing ((pts[p] x[dims t] + pts[S + p] x[dims t + 1]) + ...) -
     * half_sq[p], pts[S i + p] being coordinate i of point p (S =
     * TQ_VQ_STRIDE) and half_sq half its squared norm, every product and
     * sum rounded in that order (no fused multiply-add), so every path
     * picks the same points; written out as codes[dims t + i] = (p_t >> (i
     * bits)) & (2^bits - 1) and recon[dims t + i] = pts[S i + p_t]. */
    void (*vq_nearest)(const float *x, size_t n, unsigned dims, unsigned bits, const float *pts, const float *half_sq,
                       uint8_t *codes, float *recon);
    /* For each of nrows rows of packed b-bit codes (b in 1..4), spaced
     * stride bytes apart: out[r] = lane-16 sum over j < d of
     * q[j] * table[code_rj]. table has 16 entries (unused ones ignored). */
    void (*dot_codes)(const uint8_t *codes, size_t nrows, size_t stride,
                      unsigned bits, const float *table, const float *q,
                      size_t d, float *out);
    /* Lane-16 sum over j < d of q[j] * table[codes[j]]: one vector of 8-bit
     * codes (one byte per coordinate) against a 256-entry table. */
    float (*dot_u8)(const uint8_t *codes, const float *table, const float *q, size_t d);
    /* Float-table estimates of candidates: rows of scan blocks, row i being
     * row lanes[i] (0..31) of the block at blocks[i] (npairs pairs, pair p's
     * byte at 32 p + lane, nibble 2p its low half, 2p + 1 its high half).
     * A nibble x holds one code of `bits` bits (3 or 4, the layouts of one
     * code a nibble); nibble t's entry is q[t] * table[x & (2^bits - 1)]
     * for t < d and +0 at or past d (q read only below d), computed in
     * registers (the tables of a large d do not stay in cache across a
     * batch). out[i] = the sum over the row's 2 npairs nibbles of their
     * entries in eight chains (nibble t added to chain t mod 8, in order of
     * t), folded ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)). Nibbles of several
     * codes are looked up in the float tables instead, the same chains:
     * tq_nibble_lookups. A block is read only inside its 32 npairs bytes. */
    void (*nibble_dots)(const uint8_t *const *blocks, const uint8_t *lanes, size_t n, size_t npairs,
                        const float *q, const float *table, size_t d, unsigned bits, float *out);
    /* One scan block (layout above) of npairs nibble pairs: out[v] = sum over
     * t < 2*npairs of lut[tq_scan_lut_offset(t) + nib(v, t)], exactly. */
    void (*scan_block)(const uint8_t *block, size_t npairs, const uint8_t *lut, uint32_t out[32]);
    /* The same for nq <= TQ_SCAN_MAX_QUERIES queries at once: each block
     * byte is loaded and split into nibbles once for all of them.
     * out[32i + v] is query i's sum, equal to scan_block with luts[i]. */
    void (*scan_block_multi)(const uint8_t *block, size_t npairs, const uint8_t *const *luts, size_t nq,
                             uint32_t *out);
    /* Float scan table rows of `width` (16 or 64) entries: for lookup
     * t < lookups, entry c < width,
     *   f[width t + c] = (((0 + q[m t] * sel[c]) + q[m t + 1] * sel[width + c]) + ...)
     * over the lookup's m = per (1, 2 or 4) coordinates below d, each
     * product rounded, then added in that order. */
    void (*scan_lut_rows)(const float *q, size_t d, unsigned per, const float *sel, unsigned width, size_t lookups,
                          float *f);
    /* Rows of 16 floats (f[16 t + c], t < rows, finite): lo[t] = the
     * smallest entry of row t; returns the largest spread, (largest entry
     * - smallest) rounded, of any row (0 for none). A row's smallest of
     * -0 and +0 may be either: every use of lo gives the same for both. */
    float (*row_extremes16)(const float *f, size_t rows, float *lo);
    /* Float scan tables (width entries per lookup: f[width t + c]) to 8-bit
     * tables: entry = (f[width t + c] - lo[t]) * inv + 0.5, clamped to
     * [0, TQ_SCAN_LUT_MAX] and truncated. Width 16 (nibbles): the layout above, both
     * copies; lookups is even and the tables of a last group's two missing
     * nibbles are zeroed. Width 64 (sextets): lut[64t + c]. */
    void (*scan_lut_quantize)(const float *f, const float *lo, size_t lookups, unsigned width, float inv,
                              uint8_t *lut);
    /* The sextet layout's scan (3-bit codes, see the scan layout): block holds
     * `groups` groups of 96 bytes (three planes of 32: sextets 4g, 4g+1,
     * 4g+2 in the low 6 bits, sextet 4g+3 in the top 2 bits of the three);
     * query i's tables are 64 bytes a sextet at luts[i] + 64t. out[32i + v]
     * = sum over sextets t of luts[i][64t + x_t(v)], exactly (16-bit
     * partials widened to 32 bits at least every TQ_SCAN6_FLUSH_GROUPS
     * groups). */
    void (*scan6_block_multi)(const uint8_t *block, size_t groups, const uint8_t *const *luts, size_t nq,
                              uint32_t *out);
    /* Search keys of one block's 32 rows from their table sums, and the
     * rows whose key beats a threshold, for nq <= TQ_SCAN_MAX_QUERIES
     * queries of one codec (one metric and variant: p[0]'s). scalars holds
     * the block's planes of 32 floats: norms at scalars[v], corrections at
     * scalars[32 + v] and, prod only, residual norms at scalars[64 + v]
     * (nothing is read past 64 for mse); query i's sums
     * are at code_sum + 32i and sign_sum + 32i (sign_sum is unread for
     * mse), its parameters *p[i] and threshold threshold[i]. With s =
     * code_delta * (float)code_sum + code_bias:
     *   g = corr * s                                      (mse)
     *   g = corr * (s + (rnorm * qjl) * (sign_delta * (float)sign_sum
     *                                    + sign_bias))    (prod)
     *   l2: -((qq + norm*norm) - (2*norm)*g); ip: norm*g + bias;
     *   cosine: (norm*g + bias) / qnorm,
     * each operation rounded in that order. Writes key[32i + v], and sets
     * bit v of mask[i] where key[32i + v] > threshold[i]. */
    void (*block_select)(const uint32_t *code_sum, const uint32_t *sign_sum, const float *scalars,
                         const tq_key_params *const *p, const float *threshold, size_t nq, float *key,
                         uint32_t *mask);
    /* scan_block_multi followed by block_select, for the mse variant (no
     * sign sums), over nblocks consecutive blocks (block_bytes apart, their
     * scalars TQ_SCALARS_MSE_BLOCK floats apart) with the same thresholds: block b's keys
     * and masks go to key + 32 (b nq + i) and mask[b nq + i]. The same
     * keys and masks as the two kernels, block by block; the sums never
     * leave registers where the level can. */
    void (*scan_select)(const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t npairs,
                        const uint8_t *const *luts, size_t nq, const float *scalars, const tq_key_params *const *p,
                        const float *threshold, float *key, uint32_t *mask);
    /* The same for the sextet layout: scan6_block_multi then block_select. */
    void (*scan6_select)(const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t groups,
                         const uint8_t *const *luts, size_t nq, const float *scalars, const tq_key_params *const *p,
                         const float *threshold, float *key, uint32_t *mask);
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
 * calls these (or makes the same adds in the same order in registers, as
 * dot_matrix does), so the last steps cannot differ. */
static inline float tq_fold16(float lane[16])
{
    for (int width = 8; width >= 1; width /= 2)
        for (int l = 0; l < width; l++)
            lane[l] = lane[l] + lane[l + width];
    return lane[0];
}

/* The eight chains of a float-table estimate (nibble_dots, and the sextet
 * estimate in index/scan.c), folded ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)). */
static inline float tq_fold_chains8(const float s[8])
{
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
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
void tq_scan_lut_rows_scalar(const float *q, size_t d, unsigned per, const float *sel, unsigned width,
                             size_t lookups, float *f);
float tq_row_extremes16_scalar(const float *f, size_t rows, float *lo);
/* The same for rows of `width` entries (a multiple of 16): the sextet
 * tables' rows of 64 take it on every level (min and max are exact in any
 * order, so it is every level's answer). */
float tq_row_extremes_scalar(const float *f, size_t rows, unsigned width, float *lo);
void tq_scan_lut_quantize_scalar(const float *f, const float *lo, size_t lookups, unsigned width, float inv,
                                 uint8_t *lut);
void tq_scan6_block_multi_scalar(const uint8_t *block, size_t groups, const uint8_t *const *luts, size_t nq,
                                 uint32_t *out);
void tq_block_select_scalar(const uint32_t *code_sum, const uint32_t *sign_sum, const float *scalars,
                            const tq_key_params *const *p, const float *threshold, size_t nq, float *key,
                            uint32_t *mask);
/* nibble_dots' sums for nibbles of several codes, from the float tables
 * (entry f[16 t + x]): one path for every level. */
void tq_nibble_lookups(const uint8_t *const *blocks, const uint8_t *lanes, size_t n, size_t npairs, const float *f,
                       float *out);
/* scan_select (sextets false) or scan6_select (true) from a table's own
 * scan kernel and block_select. */
void tq_scan_select_composed(const tq_simd_kernels *k, bool sextets, const uint8_t *blocks, size_t nblocks,
                             size_t block_bytes, size_t units, const uint8_t *const *luts, size_t nq,
                             const float *scalars, const tq_key_params *const *p, const float *threshold, float *key,
                             uint32_t *mask);

#endif
