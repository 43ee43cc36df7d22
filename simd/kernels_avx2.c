/*
 * AVX2 kernels. A YMM register holds 8 floats, so the 16 lanes of the lane-16
 * sums live in two accumulators (lanes 0-7 and 8-15); tails blend the new sum
 * in only where an element exists. No FMA: the scalar reference rounds the
 * product before adding, and so must this.
 */
#include "tq_simd.h"

#include <immintrin.h>
#include <stdbool.h>
#include <math.h>
#include <string.h>

/* All-ones in the first `left` (0..8) dword lanes. */
static inline __m256i tail_mask8(size_t left)
{
    static const int32_t ramp[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    if (left > 8)
        left = 8;
    return _mm256_loadu_si256((const __m256i *)(ramp + 8 - left));
}

/* Stages h = 1, 2, 4 inside one register. Each stage is out = (x with the
 * sign flipped where lane bit h is set) + partner: lanes with the bit clear
 * get x_j + x_{j+h}, the others -x_j + x_{j-h}, which IEEE defines to be
 * exactly x_{j-h} - x_j, the scalar butterfly's a - b. */
static inline __m256 fwht_in_register(__m256 x)
{
    const __m256 neg1 = _mm256_castsi256_ps(_mm256_setr_epi32(0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN));
    const __m256 neg2 = _mm256_castsi256_ps(_mm256_setr_epi32(0, 0, INT32_MIN, INT32_MIN, 0, 0, INT32_MIN, INT32_MIN));
    const __m256 neg4 = _mm256_castsi256_ps(_mm256_setr_epi32(0, 0, 0, 0, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN));
    x = _mm256_add_ps(_mm256_xor_ps(x, neg1), _mm256_permute_ps(x, 0xB1));
    x = _mm256_add_ps(_mm256_xor_ps(x, neg2), _mm256_permute_ps(x, 0x4E));
    x = _mm256_add_ps(_mm256_xor_ps(x, neg4), _mm256_permute2f128_ps(x, x, 0x01));
    return x;
}

#define FWHT_VEC __m256
#define FWHT_LANES 8
#define FWHT_LOAD _mm256_loadu_ps
#define FWHT_STORE _mm256_storeu_ps
#define FWHT_ADD _mm256_add_ps
#define FWHT_SUB _mm256_sub_ps
#define FWHT_MUL _mm256_mul_ps
#define FWHT_SET1 _mm256_set1_ps
#define FWHT_NAME fwht_avx2
#include "fwht_template.h"

/* The candidates' float-table estimates (nibble_dots), one code a nibble
 * (several are looked up, tq_nibble_lookups): a row's bytes are gathered
 * eight pairs at a time and split into nibbles in nibble order, each
 * nibble's entry q[t] c[x] computed in registers, so each step adds eight
 * nibbles to the eight chains of the specification, one a lane; two rows
 * go side by side so that their dependent adds overlap (an odd count's
 * last row is computed twice). */

/* Bytes of pairs [p0, p0 + 8) of row `lane`, one a 32-bit lane (pairs past
 * npairs read nothing). A gather reads 4 bytes at an address, so the last
 * pair's byte of rows 29..31, whose read would end past the block, is
 * loaded on its own. */
static inline __m256i row_bytes8(const uint8_t *block, unsigned lane, size_t p0, size_t npairs)
{
    const __m256i step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i p = _mm256_add_epi32(_mm256_set1_epi32((int)p0), step);
    const bool edge = lane > 28 && p0 + 8 >= npairs;
    const __m256i last = edge ? _mm256_cmpeq_epi32(step, _mm256_set1_epi32((int)(npairs - 1 - p0)))
                              : _mm256_setzero_si256();
    const __m256i m = _mm256_andnot_si256(last, tail_mask8(npairs - p0));
    const __m256i at = _mm256_add_epi32(_mm256_slli_epi32(p, 5), _mm256_set1_epi32((int)lane));
    const __m256i x = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)(const void *)block, at, m, 1);
    return edge ? _mm256_blendv_epi8(x, _mm256_set1_epi32(block[32 * (npairs - 1) + lane]), last) : x;
}

/* The nibbles of those pairs in nibble order: t = 2 p0 + j in lane j of
 * lo8 (j < 8) and of hi8 (j >= 8). */
static inline void row_nibbles16(__m256i bytes, __m256i *lo8, __m256i *hi8)
{
    const __m256i low4 = _mm256_set1_epi32(15);
    const __m256i lo = _mm256_and_si256(bytes, low4), hi = _mm256_and_si256(_mm256_srli_epi32(bytes, 4), low4);
    const __m256i u = _mm256_unpacklo_epi32(lo, hi), w = _mm256_unpackhi_epi32(lo, hi);
    *lo8 = _mm256_permute2x128_si256(u, w, 0x20);
    *hi8 = _mm256_permute2x128_si256(u, w, 0x31);
}

/* Entries q[t] c[x & mask] of eight nibbles (q 0 at or past d). */
static inline __m256 nibble_entries8(__m256i idx, __m256 q, __m256i mask, __m256 tlo, __m256 thi)
{
    const __m256i code = _mm256_and_si256(idx, mask);
    /* bit 3 of the code, moved to the sign bit, picks the upper half */
    const __m256 c = _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, code), _mm256_permutevar8x32_ps(thi, code),
                                      _mm256_castsi256_ps(_mm256_slli_epi32(code, 28)));
    return _mm256_mul_ps(q, c);
}

static inline float fold_chains8(__m256 acc)
{
    float s[8];
    _mm256_storeu_ps(s, acc);
    return tq_fold_chains8(s);
}

/* Rows a and b. A nibble at or past d enters its chain as 0 times its
 * centroid (q loads as 0 there), which may be -0 where the specification
 * adds +0: neither changes a chain, which starts at +0 and never becomes
 * -0, while x + +0 = x + -0 = x for every other x. */
static void nibble_rows2(const uint8_t *ba, unsigned va, const uint8_t *bb, unsigned vb, size_t npairs,
                         const float *q, size_t d, __m256 tlo, __m256 thi, __m256i mask, float *oa, float *ob)
{
    const size_t limit = 2 * npairs < d ? 2 * npairs : d; /* nibbles with a q */
    __m256 acc_a = _mm256_setzero_ps(), acc_b = _mm256_setzero_ps();
    for (size_t p0 = 0; p0 < npairs; p0 += 8) {
        __m256i a[2], b[2];
        row_nibbles16(row_bytes8(ba, va, p0, npairs), &a[0], &a[1]);
        row_nibbles16(row_bytes8(bb, vb, p0, npairs), &b[0], &b[1]);
        for (unsigned h = 0; h < 2; h++) {
            const size_t t0 = 2 * p0 + 8 * h;
            const __m256 qv = _mm256_maskload_ps(q + t0, tail_mask8(limit > t0 ? limit - t0 : 0));
            acc_a = _mm256_add_ps(acc_a, nibble_entries8(a[h], qv, mask, tlo, thi));
            acc_b = _mm256_add_ps(acc_b, nibble_entries8(b[h], qv, mask, tlo, thi));
        }
    }
    *oa = fold_chains8(acc_a);
    *ob = fold_chains8(acc_b);
}

static void nibble_dots_avx2(const uint8_t *const *blocks, const uint8_t *lanes, size_t n, size_t npairs,
                             const float *q, const float *table, size_t d, unsigned bits, float *out)
{
    const __m256 tlo = _mm256_loadu_ps(table), thi = _mm256_loadu_ps(table + 8);
    const __m256i mask = _mm256_set1_epi32((int)((1u << bits) - 1));
    for (size_t i = 0; i < n; i += 2) {
        const size_t j = i + 1 < n ? i + 1 : i;
        float b;
        nibble_rows2(blocks[i], lanes[i], blocks[j], lanes[j], npairs, q, d, tlo, thi, mask, &out[i], &b);
        out[j] = b;
    }
}

static void mul_avx2(float *x, const float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        x[i] = x[i] * y[i];
}

static void scale_avx2(float *x, size_t n, float s)
{
    __m256 sv = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), sv));
    for (; i < n; i++)
        x[i] = x[i] * s;
}

static void quantize_avx2(const float *x, size_t n, const float *bounds,
                          unsigned nbounds, uint8_t *codes)
{
    if (nbounds > 15) {
        tq_quantize_scalar(x, n, bounds, nbounds, codes);
        return;
    }
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
        for (unsigned k = 0; k < nbounds; k++) {
            __m256 b = _mm256_set1_ps(bounds[k]);
            /* A true comparison is all ones (-1): subtracting it counts. */
            c0 = _mm256_sub_epi32(c0, _mm256_castps_si256(_mm256_cmp_ps(b, v0, _CMP_LT_OQ)));
            c1 = _mm256_sub_epi32(c1, _mm256_castps_si256(_mm256_cmp_ps(b, v1, _CMP_LT_OQ)));
        }
        __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(c0, c1), 0xD8);
        __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128((__m128i *)(codes + i), bytes);
    }
    tq_quantize_scalar(x + i, n - i, bounds, nbounds, codes + i);
}

static void pack_avx2(const uint8_t *codes, size_t n, unsigned bits, uint8_t *out)
{
    size_t i = 0, o = 0;
    if (bits == 1) {
        for (; i + 32 <= n; i += 32, o += 4) {
            __m256i v = _mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)(codes + i)), 7);
            uint32_t m = (uint32_t)_mm256_movemask_epi8(v);
            memcpy(out + o, &m, 4);
        }
    } else if (bits == 4) {
        for (; i + 32 <= n; i += 32, o += 16) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(codes + i));
            v = _mm256_and_si256(_mm256_or_si256(v, _mm256_srli_epi16(v, 4)), _mm256_set1_epi16(0xFF));
            __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storeu_si128((__m128i *)(out + o), bytes);
        }
    } else if (bits == 8) {
        memcpy(out, codes, n);
        return;
    }
    tq_pack_scalar(codes + i, n - i, bits, out + o);
}

static float fold_pair(__m256 lo, __m256 hi)
{
    float lane[16];
    _mm256_storeu_ps(lane, lo);
    _mm256_storeu_ps(lane + 8, hi);
    return tq_fold16(lane);
}

/* One step of a lane-16 sum: products p0 (lanes 0-7) and p1 (lanes 8-15),
 * added only where the masks are set. */
static inline void lane16_add(__m256 *a0, __m256 *a1, __m256 p0, __m256 p1, __m256i m0, __m256i m1)
{
    *a0 = _mm256_blendv_ps(*a0, _mm256_add_ps(*a0, p0), _mm256_castsi256_ps(m0));
    *a1 = _mm256_blendv_ps(*a1, _mm256_add_ps(*a1, p1), _mm256_castsi256_ps(m1));
}

static float dot_avx2(const float *a, const float *b, size_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
    }
    if (i < n) {
        __m256i m0 = tail_mask8(n - i), m1 = tail_mask8(n - i > 8 ? n - i - 8 : 0);
        __m256 p0 = _mm256_mul_ps(_mm256_maskload_ps(a + i, m0), _mm256_maskload_ps(b + i, m0));
        __m256 p1 = _mm256_mul_ps(_mm256_maskload_ps(a + i + 8, m1), _mm256_maskload_ps(b + i + 8, m1));
        lane16_add(&a0, &a1, p0, p1, m0, m1);
    }
    return fold_pair(a0, a1);
}

/* An RX x RC tile of dot_matrix: each pair's lane-16 sum in two
 * accumulators (lanes 0-7 and 8-15), as dot_avx2 keeps it. Called with
 * constant RX and RC so the loops unroll into registers. */
__attribute__((target("fma"))) static inline __attribute__((always_inline)) void
dot_tile_avx2(const float *x, const float *c, size_t d, size_t nc, float *out, const int RX, const int RC)
{
    __m256 lo[2][3], hi[2][3];
    for (int i = 0; i < RX; i++)
        for (int j = 0; j < RC; j++)
            lo[i][j] = hi[i][j] = _mm256_setzero_ps();
    size_t t = 0;
    for (; t + 16 <= d; t += 16) {
        __m256 c0[3], c1[3];
        for (int j = 0; j < RC; j++) {
            c0[j] = _mm256_loadu_ps(c + j * d + t);
            c1[j] = _mm256_loadu_ps(c + j * d + t + 8);
        }
        for (int i = 0; i < RX; i++) {
            const __m256 x0 = _mm256_loadu_ps(x + i * d + t), x1 = _mm256_loadu_ps(x + i * d + t + 8);
            for (int j = 0; j < RC; j++) {
                lo[i][j] = _mm256_fmadd_ps(x0, c0[j], lo[i][j]);
                hi[i][j] = _mm256_fmadd_ps(x1, c1[j], hi[i][j]);
            }
        }
    }
    if (t < d) {
        /* Masked lanes load as 0 on both sides: fma(0, 0, lane) adds +0
         * to lanes that are never -0, leaving them as the scalar sum does. */
        const __m256i m0 = tail_mask8(d - t), m1 = tail_mask8(d - t > 8 ? d - t - 8 : 0);
        __m256 c0[3], c1[3];
        for (int j = 0; j < RC; j++) {
            c0[j] = _mm256_maskload_ps(c + j * d + t, m0);
            c1[j] = _mm256_maskload_ps(c + j * d + t + 8, m1);
        }
        for (int i = 0; i < RX; i++) {
            const __m256 x0 = _mm256_maskload_ps(x + i * d + t, m0), x1 = _mm256_maskload_ps(x + i * d + t + 8, m1);
            for (int j = 0; j < RC; j++) {
                lo[i][j] = _mm256_fmadd_ps(x0, c0[j], lo[i][j]);
                hi[i][j] = _mm256_fmadd_ps(x1, c1[j], hi[i][j]);
            }
        }
    }
    for (int i = 0; i < RX; i++)
        for (int j = 0; j < RC; j++)
            out[i * nc + j] = fold_pair(lo[i][j], hi[i][j]);
}

/* FMA is an extension of its own: the dispatcher hands this out only on a
 * CPU that has it (every AVX2 CPU made so far). */
__attribute__((target("fma"))) static void dot_matrix_avx2(const float *x, size_t nx, const float *c, size_t nc,
                                                           size_t d, float *out)
{
    size_t i = 0;
    for (; i + 2 <= nx; i += 2) {
        size_t j = 0;
        for (; j + 3 <= nc; j += 3)
            dot_tile_avx2(x + i * d, c + j * d, d, nc, out + i * nc + j, 2, 3);
        for (; j < nc; j++)
            dot_tile_avx2(x + i * d, c + j * d, d, nc, out + i * nc + j, 2, 1);
    }
    for (; i < nx; i++) {
        size_t j = 0;
        for (; j + 3 <= nc; j += 3)
            dot_tile_avx2(x + i * d, c + j * d, d, nc, out + i * nc + j, 1, 3);
        for (; j < nc; j++)
            dot_tile_avx2(x + i * d, c + j * d, d, nc, out + i * nc + j, 1, 1);
    }
}

/* Without VNNI's byte dot products: both sides widened to 16 bits
 * (vpmaddubsw would saturate at 255 * 127 * 2) and multiplied in pairs;
 * each centroid's two pair sums are added at the end. */
static void dot_q8_blocks_avx2(const uint8_t *queries, size_t nq, const int8_t *t, size_t nblocks, size_t groups,
                               int32_t *out_all)
{
    for (size_t i = 0; i < nq; i++) {
        const uint8_t *q = queries + i * 4 * groups;
        int32_t *out = out_all + i * 16 * nblocks;
        for (size_t b = 0; b < nblocks; b++) {
            __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                              _mm256_setzero_si256()};
            const int8_t *tb = t + b * groups * 64;
            for (size_t g = 0; g < groups; g++) {
                int32_t four;
                memcpy(&four, q + 4 * g, 4);
                const __m256i qg = _mm256_cvtepu8_epi16(_mm_set1_epi32(four));
                for (int j = 0; j < 4; j++) {
                    const __m256i c =
                        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(tb + 64 * g + 16 * j)));
                    acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(c, qg));
                }
            }
            for (int j = 0; j < 4; j++) {
                int32_t pairs[8];
                _mm256_storeu_si256((__m256i *)(void *)pairs, acc[j]);
                for (int l = 0; l < 4; l++)
                    out[b * 16 + 4 * j + l] = pairs[2 * l] + pairs[2 * l + 1];
            }
        }
    }
}

/* As argmax_q8_avx512, eight lanes; a tail's missing lanes score -inf and
 * never replace. */
static uint32_t argmax_q8_avx2(const int32_t *dots, const int32_t *sums, const float *penalty, float unit,
                               size_t n)
{
    const __m256 none = _mm256_set1_ps(-INFINITY), u = _mm256_set1_ps(unit);
    __m256 most = none;
    __m256i best = _mm256_setzero_si256(), at = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (size_t p = 0; p < n; p += 8) {
        const __m256i m = tail_mask8(n - p);
        const __m256i x = _mm256_sub_epi32(_mm256_maskload_epi32(dots + p, m),
                                           _mm256_slli_epi32(_mm256_maskload_epi32(sums + p, m), 7));
        __m256 s = _mm256_mul_ps(u, _mm256_cvtepi32_ps(x));
        if (penalty)
            s = _mm256_sub_ps(s, _mm256_maskload_ps(penalty + p, m));
        s = _mm256_blendv_ps(none, s, _mm256_castsi256_ps(m));
        const __m256 up = _mm256_cmp_ps(s, most, _CMP_GT_OQ);
        most = _mm256_blendv_ps(most, s, up);
        best = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best), _mm256_castsi256_ps(at), up));
        at = _mm256_add_epi32(at, _mm256_set1_epi32(8));
    }
    float lane_most[8];
    uint32_t lane_best[8];
    _mm256_storeu_ps(lane_most, most);
    _mm256_storeu_si256((__m256i *)(void *)lane_best, best);
    /* The largest lane, the lowest index among equal ones. */
    float top = -INFINITY;
    uint32_t where = 0;
    for (int l = 0; l < 8; l++)
        if (lane_most[l] > top || (lane_most[l] == top && lane_best[l] < where)) {
            top = lane_most[l];
            where = lane_best[l];
        }
    return where;
}

/* As vq_nearest_avx512, eight groups a step: pairs split by shuffles,
 * fours gathered. */
static void vq_nearest_avx2(const float *x, size_t n, unsigned dims, unsigned bits, const float *pts,
                            const float *half_sq, uint8_t *codes, float *recon)
{
    const unsigned points = 1u << (dims * bits), mask = (1u << bits) - 1;
    for (size_t t = 0; t < n; t += 8) {
        /* a last step short of 8 groups on a zero-padded copy, as in
         * vq_nearest_avx512 */
        const size_t m = n - t < 8 ? n - t : 8;
        float vpad[32];
        const float *v = x + t * dims;
        if (m < 8) {
            memset(vpad, 0, sizeof(vpad));
            memcpy(vpad, v, m * dims * sizeof(float));
            v = vpad;
        }
        __m256 c[4];
        if (dims == 2) {
            const __m256 a = _mm256_loadu_ps(v), b = _mm256_loadu_ps(v + 8);
            /* [a0 a2 b0 b2 | a4 a6 b4 b6] put in order by 64-bit quarters */
            c[0] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
            c[1] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
        } else {
            const __m256i at = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
            for (unsigned i = 0; i < 4; i++)
                c[i] = _mm256_i32gather_ps(v + i, at, 4);
        }
        /* four chains merged, as in vq_nearest_avx512 (indices below 64:
         * the signed compare orders them) */
        __m256 most[4];
        __m256i best[4];
        for (unsigned j = 0; j < 4; j++) {
            most[j] = _mm256_set1_ps(-INFINITY);
            best[j] = _mm256_setzero_si256();
        }
        for (unsigned p0 = 0; p0 < points; p0 += 4)
            for (unsigned j = 0; j < 4; j++) {
                const unsigned p = p0 + j;
                __m256 s = _mm256_mul_ps(_mm256_set1_ps(pts[p]), c[0]);
                for (unsigned i = 1; i < dims; i++)
                    s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_set1_ps(pts[TQ_VQ_STRIDE * i + p]), c[i]));
                s = _mm256_sub_ps(s, _mm256_set1_ps(half_sq[p]));
                const __m256 up = _mm256_cmp_ps(s, most[j], _CMP_GT_OQ);
                most[j] = _mm256_blendv_ps(most[j], s, up);
                best[j] = _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(best[j]), _mm256_castsi256_ps(_mm256_set1_epi32((int)p)), up));
            }
        for (unsigned j = 1; j < 4; j++) {
            const __m256 take = _mm256_or_ps(
                _mm256_cmp_ps(most[j], most[0], _CMP_GT_OQ),
                _mm256_and_ps(_mm256_cmp_ps(most[j], most[0], _CMP_EQ_OQ),
                              _mm256_castsi256_ps(_mm256_cmpgt_epi32(best[0], best[j]))));
            most[0] = _mm256_blendv_ps(most[0], most[j], take);
            best[0] = _mm256_castps_si256(
                _mm256_blendv_ps(_mm256_castsi256_ps(best[0]), _mm256_castsi256_ps(best[j]), take));
        }
        uint32_t lane[8];
        _mm256_storeu_si256((__m256i *)(void *)lane, best[0]);
        for (size_t l = 0; l < m; l++)
            for (unsigned i = 0; i < dims; i++) {
                codes[(t + l) * dims + i] = (uint8_t)((lane[l] >> (i * bits)) & mask);
                recon[(t + l) * dims + i] = pts[TQ_VQ_STRIDE * i + lane[l]];
            }
    }
}

/* Eight halves widened exactly (F16C); a tail's missing ones read as +0
 * and its lanes are left untouched by lane16_add, as in dot_avx2. */
static inline __m256 load_halves8(const uint16_t *h, size_t left)
{
    if (left >= 8)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)h));
    uint16_t part[8] = {0};
    memcpy(part, h, left * sizeof(uint16_t));
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)part));
}

/* dot_half (l2 false) and l2sq_half (l2 true): the loops of dot_avx2 and
 * l2sq_avx2, with b widened as it is loaded. */
static inline __attribute__((always_inline)) __m256 half_term(__m256 x, __m256 y, const bool l2)
{
    const __m256 t = l2 ? _mm256_sub_ps(x, y) : x;
    return _mm256_mul_ps(t, l2 ? t : y);
}

static inline __attribute__((always_inline)) float half_sum_avx2(const float *a, const uint16_t *b, size_t n,
                                                                 const bool l2)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_ps(a0, half_term(_mm256_loadu_ps(a + i), load_halves8(b + i, 8), l2));
        a1 = _mm256_add_ps(a1, half_term(_mm256_loadu_ps(a + i + 8), load_halves8(b + i + 8, 8), l2));
    }
    if (i < n) {
        const size_t left = n - i, left1 = left > 8 ? left - 8 : 0;
        __m256i m0 = tail_mask8(left), m1 = tail_mask8(left1);
        __m256 p0 = half_term(_mm256_maskload_ps(a + i, m0), load_halves8(b + i, left < 8 ? left : 8), l2);
        __m256 p1 = half_term(_mm256_maskload_ps(a + i + 8, m1), load_halves8(b + i + 8, left1), l2);
        lane16_add(&a0, &a1, p0, p1, m0, m1);
    }
    return fold_pair(a0, a1);
}

static float dot_half_avx2(const float *a, const uint16_t *b, size_t n)
{
    return half_sum_avx2(a, b, n, false);
}

static float l2sq_half_avx2(const float *a, const uint16_t *b, size_t n)
{
    return half_sum_avx2(a, b, n, true);
}

static float l2sq_avx2(const float *a, const float *b, size_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(t0, t0));
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(t1, t1));
    }
    if (i < n) {
        __m256i m0 = tail_mask8(n - i), m1 = tail_mask8(n - i > 8 ? n - i - 8 : 0);
        __m256 t0 = _mm256_sub_ps(_mm256_maskload_ps(a + i, m0), _mm256_maskload_ps(b + i, m0));
        __m256 t1 = _mm256_sub_ps(_mm256_maskload_ps(a + i + 8, m1), _mm256_maskload_ps(b + i + 8, m1));
        lane16_add(&a0, &a1, _mm256_mul_ps(t0, t0), _mm256_mul_ps(t1, t1), m0, m1);
    }
    return fold_pair(a0, a1);
}

/* Eight double lanes live in two YMM registers (lanes 0-3, 4-7); the tail is
 * at most 7 elements, one per lane, added after the lanes are stored. */
static double dot_f64_avx2(const float *a, const float *b, size_t n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)),
                                             _mm256_cvtps_pd(_mm256_castps256_ps128(y))));
        a1 = _mm256_add_pd(a1, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)),
                                             _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1))));
    }
    double lane[8];
    _mm256_storeu_pd(lane, a0);
    _mm256_storeu_pd(lane + 4, a1);
    for (size_t l = 0; i < n; i++, l++)
        lane[l] = lane[l] + (double)a[i] * (double)b[i];
    return tq_fold8(lane);
}

static double l2sq_f64_avx2(const float *a, const float *b, size_t n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
        __m256d t0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)),
                                   _mm256_cvtps_pd(_mm256_castps256_ps128(y)));
        __m256d t1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)),
                                   _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)));
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(t0, t0));
        a1 = _mm256_add_pd(a1, _mm256_mul_pd(t1, t1));
    }
    double lane[8];
    _mm256_storeu_pd(lane, a0);
    _mm256_storeu_pd(lane + 4, a1);
    for (size_t l = 0; i < n; i++, l++) {
        double t = (double)a[i] - (double)b[i];
        lane[l] = lane[l] + t * t;
    }
    return tq_fold8(lane);
}

/* 16 codes of a row, as two vectors of 8 dword indices. */
static inline void unpack16(const uint8_t *p, unsigned bits, __m256i shifts, __m256i mask,
                            __m256i *lo, __m256i *hi)
{
    uint64_t v;
    memcpy(&v, p, 8);
    uint32_t w0 = (uint32_t)v, w1 = (uint32_t)(v >> (8 * bits));
    *lo = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w0), shifts), mask);
    *hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w1), shifts), mask);
}

/* table[idx] for a 16-entry table held as two 8-entry halves. */
static inline __m256 lookup16(__m256 tlo, __m256 thi, __m256i idx)
{
    __m256 a = _mm256_permutevar8x32_ps(tlo, idx), b = _mm256_permutevar8x32_ps(thi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

static void dot_codes_avx2(const uint8_t *codes, size_t nrows, size_t stride,
                           unsigned bits, const float *table, const float *q,
                           size_t d, float *out)
{
    const __m256 tlo = _mm256_loadu_ps(table), thi = _mm256_loadu_ps(table + 8);
    const int b = (int)bits;
    const __m256i shifts = _mm256_setr_epi32(0, b, 2 * b, 3 * b, 4 * b, 5 * b, 6 * b, 7 * b);
    const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
    const size_t full = d / 16, chunk_bytes = 2 * bits, rest = d % 16;
    const __m256i m0 = tail_mask8(rest), m1 = tail_mask8(rest > 8 ? rest - 8 : 0);
    const __m256 q0tail = _mm256_maskload_ps(q + full * 16, m0);
    const __m256 q1tail = _mm256_maskload_ps(q + full * 16 + 8, m1);

    for (size_t r = 0; r < nrows; r++) {
        const uint8_t *row = codes + r * stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256i i0, i1;
        for (size_t c = 0; c < full; c++) {
            unpack16(row + c * chunk_bytes, bits, shifts, mask, &i0, &i1);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(q + c * 16), lookup16(tlo, thi, i0)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(q + c * 16 + 8), lookup16(tlo, thi, i1)));
        }
        if (rest) {
            unpack16(row + full * chunk_bytes, bits, shifts, mask, &i0, &i1);
            lane16_add(&a0, &a1, _mm256_mul_ps(q0tail, lookup16(tlo, thi, i0)),
                       _mm256_mul_ps(q1tail, lookup16(tlo, thi, i1)), m0, m1);
        }
        out[r] = fold_pair(a0, a1);
    }
}

static float dot_u8_avx2(const uint8_t *codes, const float *table, const float *q, size_t d)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m128i c = _mm_loadu_si128((const __m128i *)(codes + i));
        __m256 v0 = _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(c), 4);
        __m256 v1 = _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(_mm_srli_si128(c, 8)), 4);
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(q + i), v0));
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(q + i + 8), v1));
    }
    if (i < d) {
        uint8_t tail[16] = {0};
        memcpy(tail, codes + i, d - i);
        __m128i c = _mm_loadu_si128((const __m128i *)tail);
        __m256i m0 = tail_mask8(d - i), m1 = tail_mask8(d - i > 8 ? d - i - 8 : 0);
        __m256 v0 = _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(c), 4);
        __m256 v1 = _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(_mm_srli_si128(c, 8)), 4);
        lane16_add(&a0, &a1, _mm256_mul_ps(_mm256_maskload_ps(q + i, m0), v0),
                   _mm256_mul_ps(_mm256_maskload_ps(q + i + 8, m1), v1), m0, m1);
    }
    return fold_pair(a0, a1);
}

/* Adds the 16-bit partial sums of one flush interval to the 32-bit totals.
 * lo holds (even + 256 * odd) mod 2^16 per 16-bit lane, hi the odd sums, so
 * even = lo - 256 * hi exactly (each partial sum is below 2^16). 16-bit lane
 * k covers vectors 2k (even) and 2k+1 (odd). */
static inline void scan_flush(__m256i lo, __m256i hi, __m256i tot[4])
{
    __m256i even = _mm256_sub_epi16(lo, _mm256_slli_epi16(hi, 8));
    tot[0] = _mm256_add_epi32(tot[0], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(even)));
    tot[1] = _mm256_add_epi32(tot[1], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(even, 1)));
    tot[2] = _mm256_add_epi32(tot[2], _mm256_cvtepu16_epi32(_mm256_castsi256_si128(hi)));
    tot[3] = _mm256_add_epi32(tot[3], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(hi, 1)));
}

static inline void scan_store(const __m256i tot[4], uint32_t out[32])
{
    uint32_t even[16], odd[16];
    _mm256_storeu_si256((__m256i *)even, tot[0]);
    _mm256_storeu_si256((__m256i *)(even + 8), tot[1]);
    _mm256_storeu_si256((__m256i *)odd, tot[2]);
    _mm256_storeu_si256((__m256i *)(odd + 8), tot[3]);
    for (int k = 0; k < 16; k++) {
        out[2 * k] = even[k];
        out[2 * k + 1] = odd[k];
    }
}

/* Sums of one block for NQ queries (a constant after inlining). A pair's
 * 32 bytes are split into nibbles once; each query's two tables are plain
 * 32-byte loads (the layout in the simd header). Both pairs of a group go into the
 * same 16-bit partials: 2 entries per pair per lane, 256 per flush interval
 * of 128 pairs, inside the bound of the header. */
static inline __attribute__((always_inline)) void scan_queries_avx2(const uint8_t *block, size_t npairs,
                                                                    const uint8_t *const *luts, const size_t NQ,
                                                                    uint32_t *out)
{
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256i tot[TQ_SCAN_MAX_QUERIES][4];
    for (size_t i = 0; i < NQ; i++)
        tot[i][0] = tot[i][1] = tot[i][2] = tot[i][3] = _mm256_setzero_si256();
    for (size_t p0 = 0; p0 < npairs; p0 += TQ_SCAN_FLUSH_PAIRS) {
        size_t p1 = p0 + TQ_SCAN_FLUSH_PAIRS < npairs ? p0 + TQ_SCAN_FLUSH_PAIRS : npairs;
        __m256i lo[TQ_SCAN_MAX_QUERIES], hi[TQ_SCAN_MAX_QUERIES];
        for (size_t i = 0; i < NQ; i++)
            lo[i] = hi[i] = _mm256_setzero_si256();
        for (size_t p = p0; p < p1; p++) {
            if (p % 2 == 0) /* a line a prefetch */
                tq_prefetch_ahead(block + 32 * p, TQ_SCAN_PREFETCH_BYTES);
            __m256i v = _mm256_loadu_si256((const __m256i *)(block + 32 * p));
            __m256i vl = _mm256_and_si256(v, low4), vh = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
            const size_t at = 128 * (p / 2) + 32 * (p % 2);
            for (size_t i = 0; i < NQ; i++) {
                __m256i r0 = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(luts[i] + at)), vl);
                __m256i r1 = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(luts[i] + at + 64)), vh);
                /* no carry between the bytes: entries are at most TQ_SCAN_LUT_MAX */
                const __m256i x = _mm256_add_epi16(r0, r1);
                lo[i] = _mm256_add_epi16(lo[i], x);
                hi[i] = _mm256_add_epi16(hi[i], _mm256_srli_epi16(x, 8));
            }
        }
        for (size_t i = 0; i < NQ; i++)
            scan_flush(lo[i], hi[i], tot[i]);
    }
    for (size_t i = 0; i < NQ; i++)
        scan_store(tot[i], out + 32 * i);
}

static void scan_block_avx2(const uint8_t *block, size_t npairs, const uint8_t *lut, uint32_t out[32])
{
    scan_queries_avx2(block, npairs, &lut, 1, out);
}

static void scan_block_multi_avx2(const uint8_t *block, size_t npairs, const uint8_t *const *luts, size_t nq,
                                  uint32_t *out)
{
    switch (nq) {
    case 1: scan_queries_avx2(block, npairs, luts, 1, out); break;
    case 2: scan_queries_avx2(block, npairs, luts, 2, out); break;
    case 3: scan_queries_avx2(block, npairs, luts, 3, out); break;
    default: scan_queries_avx2(block, npairs, luts, 4, out); break;
    }
}

/* One row per lookup in halves of eight entries, the coordinates' products
 * added in order as in the reference. */
static void scan_lut_rows_avx2(const float *q, size_t d, unsigned per, const float *sel, unsigned width,
                               size_t lookups, float *f)
{
    for (size_t t = 0; t < lookups; t++)
        for (unsigned h = 0; h < width; h += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (unsigned i = 0; i < per && t * per + i < d; i++)
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[t * per + i]),
                                                       _mm256_loadu_ps(sel + width * i + h)));
            _mm256_storeu_ps(f + width * t + h, acc);
        }
}

/* Sixteen entries as two halves of 8, the scalar reference's operations
 * element by element, then packed to bytes in order. */
static inline __m128i quantize16_avx2(const float *f, float lo, __m256 vinv)
{
    const __m256 l = _mm256_set1_ps(lo), half = _mm256_set1_ps(0.5f);
    __m256i w[2];
    for (int h = 0; h < 2; h++) {
        __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(f + 8 * h), l), vinv), half);
        w[h] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps((float)TQ_SCAN_LUT_MAX)));
    }
    /* packs interleaves the halves by 128-bit lane; the permute puts
     * entries 0-3, 4-7, 8-11, 12-15 back in order. */
    __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(w[0], w[1]), 0xD8);
    return _mm_packus_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
}

static void scan_lut_quantize_avx2(const float *f, const float *lo, size_t lookups, unsigned width, float inv,
                                   uint8_t *lut)
{
    const __m256 vinv = _mm256_set1_ps(inv);
    if (width == 64) {
        for (size_t i = 0; i < 64 * lookups; i += 16)
            _mm_storeu_si128((__m128i *)(lut + i), quantize16_avx2(f + i, lo[i / 64], vinv));
        return;
    }
    for (size_t t = 0; t < lookups; t++)
        _mm256_storeu_si256((__m256i *)(lut + tq_scan_lut_offset(t)),
                            _mm256_broadcastsi128_si256(quantize16_avx2(f + 16 * t, lo[t], vinv)));
    if (lookups % 4) {
        memset(lut + tq_scan_lut_offset(lookups), 0, 32);
        memset(lut + tq_scan_lut_offset(lookups + 1), 0, 32);
    }
}

/* A 64-entry byte lookup without VBMI: four 16-entry shuffles, one per
 * quarter of the table. For quarter k, x ^ 16k is below 16 exactly for the
 * indices in that quarter; adding 0x70 with saturation sets bit 7 (the
 * shuffle's "zero this byte") for all others. The four index vectors are
 * made once per group for all queries. */
typedef struct quarter_index {
    __m256i q[4];
} quarter_index;

static inline quarter_index quarters(__m256i x)
{
    const __m256i bias = _mm256_set1_epi8(0x70);
    quarter_index r;
    for (int k = 0; k < 4; k++)
        r.q[k] = _mm256_adds_epu8(_mm256_xor_si256(x, _mm256_set1_epi8((char)(16 * k))), bias);
    return r;
}

static inline __m256i lookup64(const uint8_t *table, const quarter_index *x)
{
    __m256i r = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++)
        r = _mm256_or_si256(r, _mm256_shuffle_epi8(
                                   _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(table + 16 * k))),
                                   x->q[k]));
    return r;
}

static inline __attribute__((always_inline)) void scan6_queries_avx2(const uint8_t *block, size_t groups,
                                                                     const uint8_t *const *luts, const size_t NQ,
                                                                     uint32_t *out)
{
    const __m256i low6 = _mm256_set1_epi8(0x3F), two = _mm256_set1_epi8(0x03);
    __m256i tot[TQ_SCAN_MAX_QUERIES][4];
    for (size_t i = 0; i < NQ; i++)
        tot[i][0] = tot[i][1] = tot[i][2] = tot[i][3] = _mm256_setzero_si256();
    for (size_t g0 = 0; g0 < groups; g0 += TQ_SCAN6_FLUSH_GROUPS) {
        const size_t g1 = g0 + TQ_SCAN6_FLUSH_GROUPS < groups ? g0 + TQ_SCAN6_FLUSH_GROUPS : groups;
        __m256i lo[TQ_SCAN_MAX_QUERIES], hi[TQ_SCAN_MAX_QUERIES];
        for (size_t i = 0; i < NQ; i++)
            lo[i] = hi[i] = _mm256_setzero_si256();
        for (size_t g = g0; g < g1; g++) {
            const uint8_t *pl = block + 96 * g;
            tq_prefetch_ahead(pl, TQ_SCAN_PREFETCH_BYTES);
            tq_prefetch_ahead(pl, TQ_SCAN_PREFETCH_BYTES + 64);
            const __m256i a = _mm256_loadu_si256((const __m256i *)pl);
            const __m256i b = _mm256_loadu_si256((const __m256i *)(pl + 32));
            const __m256i c = _mm256_loadu_si256((const __m256i *)(pl + 64));
            const __m256i d = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(a, 6), two),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), _mm256_slli_epi16(two, 2)),
                                _mm256_and_si256(_mm256_srli_epi16(c, 2), _mm256_slli_epi16(two, 4))));
            const quarter_index xs[4] = {quarters(_mm256_and_si256(a, low6)), quarters(_mm256_and_si256(b, low6)),
                                         quarters(_mm256_and_si256(c, low6)), quarters(d)};
            for (size_t i = 0; i < NQ; i++) {
                const uint8_t *t = luts[i] + 256 * g;
                const __m256i r0 = lookup64(t, &xs[0]), r1 = lookup64(t + 64, &xs[1]);
                const __m256i r2 = lookup64(t + 128, &xs[2]), r3 = lookup64(t + 192, &xs[3]);
                /* no carry between the bytes of a pair's sum: entries are
                 * at most TQ_SCAN_LUT_MAX (four could carry) */
                const __m256i x01 = _mm256_add_epi16(r0, r1), x23 = _mm256_add_epi16(r2, r3);
                lo[i] = _mm256_add_epi16(lo[i], _mm256_add_epi16(x01, x23));
                hi[i] = _mm256_add_epi16(hi[i], _mm256_add_epi16(_mm256_srli_epi16(x01, 8), _mm256_srli_epi16(x23, 8)));
            }
        }
        for (size_t i = 0; i < NQ; i++)
            scan_flush(lo[i], hi[i], tot[i]);
    }
    for (size_t i = 0; i < NQ; i++)
        scan_store(tot[i], out + 32 * i);
}

static void scan6_block_multi_avx2(const uint8_t *block, size_t groups, const uint8_t *const *luts, size_t nq,
                                   uint32_t *out)
{
    switch (nq) {
    case 1: scan6_queries_avx2(block, groups, luts, 1, out); break;
    case 2: scan6_queries_avx2(block, groups, luts, 2, out); break;
    case 3: scan6_queries_avx2(block, groups, luts, 3, out); break;
    default: scan6_queries_avx2(block, groups, luts, 4, out); break;
    }
}

/* Eight rows at a time; each plane of scalars is loaded once for all
 * queries. */
static void block_select_avx2(const uint32_t *code_sum, const uint32_t *sign_sum, const float *scalars,
                              const tq_key_params *const *p, const float *threshold, size_t nq, float *key,
                              uint32_t *mask)
{
    const tq_key_metric metric = p[0]->metric;
    const bool prod = p[0]->prod;
    for (size_t i = 0; i < nq; i++)
        mask[i] = 0;
    for (int h = 0; h < 4; h++) {
        const float *sc = scalars + 8 * h;
        const __m256 norm = _mm256_loadu_ps(sc), corr = _mm256_loadu_ps(sc + TQ_SCAN_BLOCK);
        const __m256 rnorm = prod ? _mm256_loadu_ps(sc + 2 * TQ_SCAN_BLOCK) : _mm256_setzero_ps();
        const __m256 norm2 = _mm256_mul_ps(norm, norm), twice = _mm256_mul_ps(_mm256_set1_ps(2.0f), norm);
        for (size_t i = 0; i < nq; i++) {
            const tq_key_params *q = p[i];
            __m256 s = _mm256_add_ps(
                _mm256_mul_ps(_mm256_set1_ps(q->code_delta),
                              _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(code_sum + 32 * i + 8 * h)))),
                _mm256_set1_ps(q->code_bias));
            if (prod) {
                __m256 sp = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_set1_ps(q->sign_delta),
                                  _mm256_cvtepi32_ps(
                                      _mm256_loadu_si256((const __m256i *)(sign_sum + 32 * i + 8 * h)))),
                    _mm256_set1_ps(q->sign_bias));
                s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_mul_ps(rnorm, _mm256_set1_ps(q->qjl)), sp));
            }
            const __m256 g = _mm256_mul_ps(corr, s);
            __m256 k;
            switch (metric) {
            case TQ_KEY_L2:
                k = _mm256_sub_ps(_mm256_add_ps(_mm256_set1_ps(q->qq), norm2), _mm256_mul_ps(twice, g));
                k = _mm256_xor_ps(k, _mm256_set1_ps(-0.0f));
                break;
            case TQ_KEY_IP: k = _mm256_add_ps(_mm256_mul_ps(norm, g), _mm256_set1_ps(q->bias)); break;
            default:
                k = _mm256_div_ps(_mm256_add_ps(_mm256_mul_ps(norm, g), _mm256_set1_ps(q->bias)),
                                  _mm256_set1_ps(q->qnorm));
                break;
            }
            _mm256_storeu_ps(key + 32 * i + 8 * h, k);
            mask[i] |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(k, _mm256_set1_ps(threshold[i]), _CMP_GT_OQ))
                       << (8 * h);
        }
    }
}

static void scan_select_avx2(const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t npairs,
                             const uint8_t *const *luts, size_t nq, const float *scalars,
                             const tq_key_params *const *p, const float *threshold, float *key, uint32_t *mask)
{
    tq_scan_select_composed(&tq_simd_kernels_avx2, false, blocks, nblocks, block_bytes, npairs, luts, nq, scalars, p,
                            threshold, key, mask);
}

static void scan6_select_avx2(const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t groups,
                              const uint8_t *const *luts, size_t nq, const float *scalars,
                              const tq_key_params *const *p, const float *threshold, float *key, uint32_t *mask)
{
    tq_scan_select_composed(&tq_simd_kernels_avx2, true, blocks, nblocks, block_bytes, groups, luts, nq, scalars, p,
                            threshold, key, mask);
}

/* F16C: eight at a time, the tail through the scalar reference. */
static void float_to_half_avx2(const float *f, uint16_t *h, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(f + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        h[i] = tq_half_from_float(f[i]);
}

static void half_to_float_avx2(const uint16_t *h, float *f, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++)
        f[i] = tq_float_from_half(h[i]);
}

const tq_simd_kernels tq_simd_kernels_avx2 = {
    .fwht = fwht_avx2,
    .mul = mul_avx2,
    .scale = scale_avx2,
    .quantize = quantize_avx2,
    .pack = pack_avx2,
    .dot = dot_avx2,
    .dot_matrix = dot_matrix_avx2,
    .dot_q8_blocks = dot_q8_blocks_avx2,
    .argmax_q8 = argmax_q8_avx2,
    .vq_nearest = vq_nearest_avx2,
    .l2sq = l2sq_avx2,
    .dot_half = dot_half_avx2,
    .l2sq_half = l2sq_half_avx2,
    .dot_f64 = dot_f64_avx2,
    .l2sq_f64 = l2sq_f64_avx2,
    .dot_codes = dot_codes_avx2,
    .dot_u8 = dot_u8_avx2,
    .nibble_dots = nibble_dots_avx2,
    .scan_block = scan_block_avx2,
    .scan_block_multi = scan_block_multi_avx2,
    .scan_lut_rows = scan_lut_rows_avx2,
    .row_extremes16 = tq_row_extremes16_scalar, /* no AVX2 version: the reference */
    .scan_lut_quantize = scan_lut_quantize_avx2,
    .scan6_block_multi = scan6_block_multi_avx2,
    .block_select = block_select_avx2,
    .scan_select = scan_select_avx2,
    .scan6_select = scan6_select_avx2,
    .float_to_half = float_to_half_avx2,
    .half_to_float = half_to_float_avx2,
};
