/*
 * AVX-512 (F, BW, VL, DQ) kernels. One ZMM register holds the 16 float lanes
 * of the lane-16 sums, so the specification maps onto it directly; tails use
 * masked loads and masked adds so that lanes without an element stay
 * untouched, as the scalar reference leaves them.
 *
 * The FWHT does the four smallest stages inside a register (permute, add,
 * masked subtract) and the rest across registers; each output is produced by
 * the same additions as the scalar butterfly loop, in the same stage order.
 *
 * The sextet (3-bit) scan alone needs VBMI's byte permute. Its functions
 * carry target("avx512vbmi") here rather than living in a file of their
 * own flags: they share this file's inline pieces (the 16-bit widening,
 * the keys), and a file built with -mavx512vbmi could let the compiler use
 * VBMI in every kernel of the level. The dispatch hands them out only on a
 * CPU that has VBMI; elsewhere the AVX2 sextet scan stands in.
 */
#include "tq_simd.h"

#include <immintrin.h>
#include <stdbool.h>
#include <math.h>
#include <string.h>

static inline __mmask16 tail_mask16(size_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* Stages h = 1, 2, 4, 8 inside one register. Each stage is out = (x with
 * the sign flipped where lane bit h is set) + partner: lanes with the bit
 * clear get x_j + x_{j+h}, the others -x_j + x_{j-h}, which IEEE defines to
 * be exactly x_{j-h} - x_j, the scalar butterfly's a - b. */
static inline __m512 fwht_in_register(__m512 x)
{
    const __m512i sign = _mm512_set1_epi32(INT32_MIN);
    x = _mm512_add_ps(_mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(x), 0xAAAA,
                                                                 _mm512_castps_si512(x), sign)),
                      _mm512_permute_ps(x, 0xB1));
    x = _mm512_add_ps(_mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(x), 0xCCCC,
                                                                 _mm512_castps_si512(x), sign)),
                      _mm512_permute_ps(x, 0x4E));
    x = _mm512_add_ps(_mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(x), 0xF0F0,
                                                                 _mm512_castps_si512(x), sign)),
                      _mm512_shuffle_f32x4(x, x, 0xB1));
    x = _mm512_add_ps(_mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(x), 0xFF00,
                                                                 _mm512_castps_si512(x), sign)),
                      _mm512_shuffle_f32x4(x, x, 0x4E));
    return x;
}

#define FWHT_VEC __m512
#define FWHT_LANES 16
#define FWHT_LOAD _mm512_loadu_ps
#define FWHT_STORE _mm512_storeu_ps
#define FWHT_ADD _mm512_add_ps
#define FWHT_SUB _mm512_sub_ps
#define FWHT_MUL _mm512_mul_ps
#define FWHT_SET1 _mm512_set1_ps
#define FWHT_NAME fwht_avx512
#include "fwht_template.h"

/* The candidates' float-table estimates (nibble_dots), one code a nibble
 * (several are looked up, tq_nibble_lookups): a row's bytes are gathered
 * sixteen pairs at a time (a scalar byte load each, shifted into place,
 * was half of a candidate's cost) and split into nibbles in nibble order,
 * each nibble's entry q[t] c[x] computed in registers. Two rows share a
 * register: row a's eight chains in the low half, row b's in the high, so
 * each chain gets its entries in the specification's order and the two
 * rows' dependent adds overlap. An odd count's last row is computed twice. */
/* Bytes of pairs [p0, p0 + 16) of row `lane`, one a 32-bit lane (pairs past
 * npairs read nothing). A gather reads 4 bytes at an address, so the last
 * pair's byte of rows 29..31, whose read would end past the block, is
 * loaded on its own. */
static inline __m512i row_bytes16(const uint8_t *block, unsigned lane, size_t p0, size_t npairs)
{
    const __m512i p = _mm512_add_epi32(_mm512_set1_epi32((int)p0),
                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    __mmask16 m = _mm512_cmplt_epu32_mask(p, _mm512_set1_epi32((int)npairs)), last = 0;
    if (lane > 28 && p0 + 16 >= npairs) {
        last = (__mmask16)(1u << (npairs - 1 - p0));
        m &= (__mmask16)~last;
    }
    const __m512i at = _mm512_add_epi32(_mm512_slli_epi32(p, 5), _mm512_set1_epi32((int)lane));
    __m512i x = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, at, block, 1);
    if (last)
        x = _mm512_mask_set1_epi32(x, last, block[32 * (npairs - 1) + lane]);
    return x;
}

/* The nibbles of those pairs in nibble order: t = 2 p0 + j in lane j of
 * lo16 (j < 16) and of hi16 (j >= 16). */
static inline void row_nibbles32(__m512i bytes, __m512i *lo16, __m512i *hi16)
{
    const __m512i low4 = _mm512_set1_epi32(15);
    const __m512i lo = _mm512_and_si512(bytes, low4), hi = _mm512_and_si512(_mm512_srli_epi32(bytes, 4), low4);
    *lo16 = _mm512_permutex2var_epi32(lo, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
                                      hi);
    *hi16 = _mm512_permutex2var_epi32(lo, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                                            15, 31),
                                      hi);
}

/* Entries q[t] c[x & mask] of nibbles t0 .. t0 + 15 (q 0 at or past d). */
static inline __m512 nibble_entries16(__m512i idx, __m512 q, __m512i mask, __m512 table)
{
    return _mm512_mul_ps(q, _mm512_permutexvar_ps(_mm512_and_si512(idx, mask), table));
}

/* Chains of rows a (low half) and b (high half) take entries ea and eb of
 * nibbles t0 .. t0 + 15: first t0 .. t0 + 7, then t0 + 8 .. t0 + 15. */
static inline __m512 chains_add(__m512 acc, __m512 ea, __m512 eb)
{
    acc = _mm512_add_ps(acc, _mm512_shuffle_f32x4(ea, eb, 0x44));
    return _mm512_add_ps(acc, _mm512_shuffle_f32x4(ea, eb, 0xEE));
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
                         const float *q, size_t d, __m512 table, __m512i mask, float *oa, float *ob)
{
    const size_t limit = 2 * npairs < d ? 2 * npairs : d; /* nibbles with a q */
    __m512 acc = _mm512_setzero_ps();
    for (size_t p0 = 0; p0 < npairs; p0 += 16) {
        __m512i a[2], b[2];
        row_nibbles32(row_bytes16(ba, va, p0, npairs), &a[0], &a[1]);
        row_nibbles32(row_bytes16(bb, vb, p0, npairs), &b[0], &b[1]);
        for (unsigned h = 0; h < 2; h++) {
            const size_t t0 = 2 * p0 + 16 * h;
            const __m512 qv = _mm512_maskz_loadu_ps(tail_mask16(limit > t0 ? limit - t0 : 0), q + t0);
            acc = chains_add(acc, nibble_entries16(a[h], qv, mask, table), nibble_entries16(b[h], qv, mask, table));
        }
    }
    *oa = fold_chains8(_mm512_castps512_ps256(acc));
    *ob = fold_chains8(_mm512_extractf32x8_ps(acc, 1));
}

static void nibble_dots_avx512(const uint8_t *const *blocks, const uint8_t *lanes, size_t n, size_t npairs,
                               const float *q, const float *table, size_t d, unsigned bits, float *out)
{
    const __m512 t = _mm512_loadu_ps(table);
    const __m512i mask = _mm512_set1_epi32((int)((1u << bits) - 1));
    for (size_t i = 0; i < n; i += 2) {
        const size_t j = i + 1 < n ? i + 1 : i;
        float b;
        nibble_rows2(blocks[i], lanes[i], blocks[j], lanes[j], npairs, q, d, t, mask, &out[i], &b);
        out[j] = b;
    }
}

static void mul_avx512(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        __m512 a = _mm512_maskz_loadu_ps(m, x + i), b = _mm512_maskz_loadu_ps(m, y + i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(a, b));
    }
}

static void scale_avx512(float *x, size_t n, float s)
{
    __m512 sv = _mm512_set1_ps(s);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        __m512 a = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(a, sv));
    }
}

static void quantize_avx512(const float *x, size_t n, const float *bounds,
                            unsigned nbounds, uint8_t *codes)
{
    if (nbounds > 15) {
        tq_quantize_scalar(x, n, bounds, nbounds, codes);
        return;
    }
    __m512 bv[15];
    for (unsigned k = 0; k < nbounds; k++)
        bv[k] = _mm512_set1_ps(bounds[k]);
    const __m512i one = _mm512_set1_epi32(1);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512i cnt = _mm512_setzero_si512();
        for (unsigned k = 0; k < nbounds; k++) {
            __mmask16 below = _mm512_cmp_ps_mask(bv[k], v, _CMP_LT_OQ);
            cnt = _mm512_mask_add_epi32(cnt, below, cnt, one);
        }
        _mm512_mask_cvtepi32_storeu_epi8(codes + i, m, cnt);
    }
}

static void pack_avx512(const uint8_t *codes, size_t n, unsigned bits, uint8_t *out)
{
    size_t i = 0, o = 0;
    if (bits == 1) {
        for (; i + 64 <= n; i += 64, o += 8) {
            uint64_t m = _mm512_test_epi8_mask(_mm512_loadu_si512(codes + i), _mm512_set1_epi8(1));
            memcpy(out + o, &m, 8);
        }
    } else if (bits == 2) {
        for (; i + 64 <= n; i += 64, o += 16) {
            __m512i v = _mm512_loadu_si512(codes + i);
            v = _mm512_or_si512(_mm512_or_si512(v, _mm512_srli_epi32(v, 6)),
                                _mm512_or_si512(_mm512_srli_epi32(v, 12), _mm512_srli_epi32(v, 18)));
            _mm_storeu_si128((__m128i *)(out + o), _mm512_cvtepi32_epi8(v));
        }
    } else if (bits == 4) {
        for (; i + 64 <= n; i += 64, o += 32) {
            __m512i v = _mm512_loadu_si512(codes + i);
            v = _mm512_or_si512(v, _mm512_srli_epi16(v, 4));
            _mm256_storeu_si256((__m256i *)(out + o), _mm512_cvtepi16_epi8(v));
        }
    } else if (bits == 8) {
        memcpy(out, codes, n);
        return;
    }
    tq_pack_scalar(codes + i, n - i, bits, out + o);
}

static float dot_avx512(const float *a, const float *b, size_t n)
{
    __m512 acc = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        acc = _mm512_mask_add_ps(acc, m, acc, p);
    }
    float lane[16];
    _mm512_storeu_ps(lane, acc);
    return tq_fold16(lane);
}

/* tq_fold16 of one accumulator without leaving registers: the same adds in
 * the same order (halves, then quarters, ...). */
static inline float fold16_avx512(__m512 acc)
{
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(acc),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}

/* The folds of a 4 x 4 tile's sixteen accumulators at once, each the same
 * additions as fold16_avx512 (lanes l + 8, then l + 4, l + 2, l + 1) but
 * done for four, eight or sixteen accumulators by one add: 15 adds and 30
 * shuffles for the tile instead of 16 folds of 4 adds and 4 extracts each
 * (the folds were as much work as the products at d = 128, where the
 * calibration of a partitioned set spends most of its time). Accumulator
 * a[4j + i] is acc[i][j]; the last sum holds row i's four in its quarter i. */
static inline void fold_tile16_avx512(__m512 acc[4][4], float *out, size_t nc)
{
    __m512 a[16], h[8], q[4], p[2];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            a[4 * j + i] = acc[i][j];
    /* l + 8: halves of a[2k] into h[k]'s low half, of a[2k+1] into its high */
    for (int k = 0; k < 8; k++)
        h[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* l + 4: each accumulator's eight to one quarter, a[4k + r] in q[k]'s quarter r */
    for (int k = 0; k < 4; k++)
        q[k] = _mm512_add_ps(_mm512_shuffle_f32x4(h[2 * k], h[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(h[2 * k], h[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* l + 2: quarter r of p[k] holds a[8k + r] and a[8k + 4 + r], two each */
    for (int k = 0; k < 2; k++)
        p[k] = _mm512_add_ps(_mm512_shuffle_ps(q[2 * k], q[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(q[2 * k], q[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* l + 1: quarter r holds a[r], a[4 + r], a[8 + r], a[12 + r] */
    const __m512 all = _mm512_add_ps(_mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(3, 1, 3, 1)));
    _mm_storeu_ps(out, _mm512_castps512_ps128(all));
    _mm_storeu_ps(out + nc, _mm512_extractf32x4_ps(all, 1));
    _mm_storeu_ps(out + 2 * nc, _mm512_extractf32x4_ps(all, 2));
    _mm_storeu_ps(out + 3 * nc, _mm512_extractf32x4_ps(all, 3));
}

/* An RX x RC tile of dot_matrix: RX rows of x against RC centroids, one
 * accumulator per pair, each load used RC or RX times. Called with
 * constant RX and RC so the loops unroll into registers. */
static inline __attribute__((always_inline)) void dot_tile_avx512(const float *x, const float *c, size_t d,
                                                                  size_t nc, float *out, const int RX,
                                                                  const int RC)
{
    __m512 acc[4][4];
    for (int i = 0; i < RX; i++)
        for (int j = 0; j < RC; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (size_t t = 0; t < d; t += 16) {
        /* Past d both operands load as 0: fma(0, 0, lane) adds +0 to
         * lanes that are never -0, the scalar sum's lanes, untouched. */
        const __mmask16 m = tail_mask16(d - t);
        __m512 cv[4];
        for (int j = 0; j < RC; j++)
            cv[j] = _mm512_maskz_loadu_ps(m, c + j * d + t);
        for (int i = 0; i < RX; i++) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * d + t);
            for (int j = 0; j < RC; j++)
                acc[i][j] = _mm512_fmadd_ps(xv, cv[j], acc[i][j]);
        }
    }
    if (RX == 4 && RC == 4) {
        fold_tile16_avx512(acc, out, nc);
        return;
    }
    for (int i = 0; i < RX; i++)
        for (int j = 0; j < RC; j++)
            out[i * nc + j] = fold16_avx512(acc[i][j]);
}

static void dot_matrix_avx512(const float *x, size_t nx, const float *c, size_t nc, size_t d, float *out)
{
    size_t i = 0;
    for (; i + 4 <= nx; i += 4) {
        size_t j = 0;
        for (; j + 4 <= nc; j += 4)
            dot_tile_avx512(x + i * d, c + j * d, d, nc, out + i * nc + j, 4, 4);
        for (; j < nc; j++)
            dot_tile_avx512(x + i * d, c + j * d, d, nc, out + i * nc + j, 4, 1);
    }
    for (; i < nx; i++) {
        size_t j = 0;
        for (; j + 4 <= nc; j += 4)
            dot_tile_avx512(x + i * d, c + j * d, d, nc, out + i * nc + j, 1, 4);
        for (; j < nc; j++)
            dot_tile_avx512(x + i * d, c + j * d, d, nc, out + i * nc + j, 1, 1);
    }
}

/* VNNI: one vpdpbusd adds four byte products to each of 16 lanes. A tile
 * of NB blocks (4, then 1 for the last few) for NQ queries keeps NB sums in
 * flight for each query (up to 16 accumulators), so each table load serves
 * every query. Without VNNI the dispatcher takes the AVX2 kernel instead. */
__attribute__((target("avx512vnni"))) static inline __attribute__((always_inline)) void
dot_q8_tile_vnni(const uint8_t *q, const size_t NQ, const int8_t *tb, size_t groups, const int NB, int32_t *out,
                 size_t ostride)
{
    __m512i acc[4][4];
    for (size_t i = 0; i < NQ; i++)
        for (int j = 0; j < NB; j++)
            acc[i][j] = _mm512_setzero_si512();
    for (size_t g = 0; g < groups; g++) {
        __m512i c[4];
        for (int j = 0; j < NB; j++)
            c[j] = _mm512_loadu_si512(tb + (size_t)j * groups * 64 + 64 * g);
        for (size_t i = 0; i < NQ; i++) {
            int32_t four;
            memcpy(&four, q + i * 4 * groups + 4 * g, 4);
            const __m512i qg = _mm512_set1_epi32(four);
            for (int j = 0; j < NB; j++)
                acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], qg, c[j]);
        }
    }
    for (size_t i = 0; i < NQ; i++)
        for (int j = 0; j < NB; j++)
            _mm512_storeu_si512(out + i * ostride + (size_t)j * 16, acc[i][j]);
}

__attribute__((target("avx512vnni"))) static inline __attribute__((always_inline)) void
dot_q8_queries_vnni(const uint8_t *q, const size_t NQ, const int8_t *t, size_t nblocks, size_t groups, int32_t *out)
{
    const size_t ostride = 16 * nblocks;
    size_t b = 0;
    for (; b + 4 <= nblocks; b += 4)
        dot_q8_tile_vnni(q, NQ, t + b * groups * 64, groups, 4, out + b * 16, ostride);
    for (; b < nblocks; b++)
        dot_q8_tile_vnni(q, NQ, t + b * groups * 64, groups, 1, out + b * 16, ostride);
}

__attribute__((target("avx512vnni"))) static void dot_q8_blocks_vnni(const uint8_t *q, size_t nq, const int8_t *t,
                                                                    size_t nblocks, size_t groups, int32_t *out)
{
    for (size_t i0 = 0; i0 < nq; i0 += 4) {
        const uint8_t *qi = q + i0 * 4 * groups;
        int32_t *oi = out + i0 * 16 * nblocks;
        switch (nq - i0) {
        case 1: dot_q8_queries_vnni(qi, 1, t, nblocks, groups, oi); break;
        case 2: dot_q8_queries_vnni(qi, 2, t, nblocks, groups, oi); break;
        case 3: dot_q8_queries_vnni(qi, 3, t, nblocks, groups, oi); break;
        default: dot_q8_queries_vnni(qi, 4, t, nblocks, groups, oi); break;
        }
    }
}

/* Each lane keeps the first of its largest scores (strictly greater
 * replaces), so the lowest index among the lanes holding the maximum is
 * the scalar loop's answer. */
static uint32_t argmax_q8_avx512(const int32_t *dots, const int32_t *sums, const float *penalty, float unit,
                                 size_t n)
{
    __m512 most = _mm512_set1_ps(-INFINITY);
    __m512i best = _mm512_setzero_si512(), at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 u = _mm512_set1_ps(unit);
    for (size_t p = 0; p < n; p += 16) {
        const __mmask16 m = tail_mask16(n - p);
        const __m512i x = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, dots + p),
                                           _mm512_slli_epi32(_mm512_maskz_loadu_epi32(m, sums + p), 7));
        __m512 s = _mm512_mul_ps(u, _mm512_cvtepi32_ps(x));
        if (penalty)
            s = _mm512_sub_ps(s, _mm512_maskz_loadu_ps(m, penalty + p));
        const __mmask16 up = _mm512_mask_cmp_ps_mask(m, s, most, _CMP_GT_OQ);
        most = _mm512_mask_mov_ps(most, up, s);
        best = _mm512_mask_mov_epi32(best, up, at);
        at = _mm512_add_epi32(at, _mm512_set1_epi32(16));
    }
    const float top = _mm512_reduce_max_ps(most);
    const __mmask16 holders = _mm512_cmp_ps_mask(most, _mm512_set1_ps(top), _CMP_EQ_OQ);
    return holders ? (uint32_t)_mm512_mask_reduce_min_epu32(holders, best) : 0;
}

/* The lowest index of the best point for each of 16 groups (lanes of
 * c[0..dims)): four chains (points p = j mod 4), so that a point's compare
 * does not wait on the one before, merged by the larger score, the lower
 * index on a tie: the scalar loop's choice. Inlined with dims and the
 * point count constant, which unrolls the coordinates. */
static inline __attribute__((always_inline)) __m512i vq_best16(const __m512 *c, unsigned dims, unsigned points,
                                                               const float *pts, const float *half_sq)
{
    __m512 most[4];
    __m512i best[4];
    for (unsigned j = 0; j < 4; j++) {
        most[j] = _mm512_set1_ps(-INFINITY);
        best[j] = _mm512_setzero_si512();
    }
    for (unsigned p0 = 0; p0 < points; p0 += 4)
        for (unsigned j = 0; j < 4; j++) {
            const unsigned p = p0 + j;
            __m512 s = _mm512_mul_ps(_mm512_set1_ps(pts[p]), c[0]);
            for (unsigned i = 1; i < dims; i++)
                s = _mm512_add_ps(s, _mm512_mul_ps(_mm512_set1_ps(pts[TQ_VQ_STRIDE * i + p]), c[i]));
            s = _mm512_sub_ps(s, _mm512_set1_ps(half_sq[p]));
            const __mmask16 up = _mm512_cmp_ps_mask(s, most[j], _CMP_GT_OQ);
            most[j] = _mm512_mask_mov_ps(most[j], up, s);
            best[j] = _mm512_mask_mov_epi32(best[j], up, _mm512_set1_epi32((int)p));
        }
    for (unsigned j = 1; j < 4; j++) {
        const __mmask16 take =
            _mm512_cmp_ps_mask(most[j], most[0], _CMP_GT_OQ) |
            (_mm512_cmp_ps_mask(most[j], most[0], _CMP_EQ_OQ) & _mm512_cmplt_epu32_mask(best[j], best[0]));
        most[0] = _mm512_mask_mov_ps(most[0], take, most[j]);
        best[0] = _mm512_mask_mov_epi32(best[0], take, best[j]);
    }
    return best[0];
}

/* Sixteen groups a step, one lane each: the coordinates split into
 * registers by permutes, then the points one after another, each lane
 * keeping the first of its best (strictly greater replaces), as the
 * scalar loop. The groups past the last whole step take the scalar
 * kernel. */
static void vq_nearest_avx512(const float *x, size_t n, unsigned dims, unsigned bits, const float *pts,
                              const float *half_sq, uint8_t *codes, float *recon)
{
    const unsigned points = 1u << (dims * bits);
    __m512 coord[4]; /* the first 16 points, for the reconstruction of 16-point codebooks */
    for (unsigned i = 0; i < dims; i++)
        coord[i] = _mm512_loadu_ps(pts + TQ_VQ_STRIDE * i);
    for (size_t t = 0; t < n; t += 16) {
        /* A last step short of 16 groups runs on a zero-padded copy (each
         * lane is its own group, so the padding changes no other). */
        const size_t m = n - t < 16 ? n - t : 16;
        float vpad[64], rpad[64];
        uint8_t cpad[64];
        const float *v = x + t * dims;
        uint8_t *co = codes + t * dims;
        float *ro = recon + t * dims;
        if (m < 16) {
            memset(vpad, 0, sizeof(vpad));
            memcpy(vpad, v, m * dims * sizeof(float));
            v = vpad;
            co = cpad;
            ro = rpad;
        }
        __m512 c[4];
        if (dims == 2) {
            const __m512 a = _mm512_loadu_ps(v), b = _mm512_loadu_ps(v + 16);
            const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            c[0] = _mm512_permutex2var_ps(a, even, b);
            c[1] = _mm512_permutex2var_ps(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
        } else {
            const __m512 a = _mm512_loadu_ps(v), b = _mm512_loadu_ps(v + 16), cc = _mm512_loadu_ps(v + 32),
                         d = _mm512_loadu_ps(v + 48);
            for (unsigned i = 0; i < 4; i++) {
                /* lanes 0..7: coordinate i of groups 0..7 of the pair */
                const __m512i pick = _mm512_add_epi32(
                    _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28), _mm512_set1_epi32((int)i));
                const __m512 lo = _mm512_permutex2var_ps(a, pick, b), hi = _mm512_permutex2var_ps(cc, pick, d);
                c[i] = _mm512_shuffle_f32x4(lo, hi, 0x44);
            }
        }
        const __m512i best_p = dims == 2 ? vq_best16(c, 2, points, pts, half_sq) : vq_best16(c, 4, 16, pts, half_sq);
        /* codes and reconstruction in coordinate order: a group's codes
         * are the bytes of one 16-bit (pairs) or 32-bit (fours) lane, its
         * coordinates the points' coordinates looked up by index and
         * interleaved */
        if (dims == 2) {
            const __m512i packed =
                _mm512_or_si512(_mm512_and_si512(best_p, _mm512_set1_epi32((int)(1u << bits) - 1)),
                                _mm512_slli_epi32(_mm512_srli_epi32(best_p, (unsigned)bits), 8));
            _mm256_storeu_si256((__m256i *)(void *)(co), _mm512_cvtepi32_epi16(packed));
            const __m512 r0 = points == 16 ? _mm512_permutexvar_ps(best_p, coord[0]) : _mm512_i32gather_ps(best_p, pts, 4),
                         r1 = points == 16 ? _mm512_permutexvar_ps(best_p, coord[1])
                                           : _mm512_i32gather_ps(best_p, pts + TQ_VQ_STRIDE, 4);
            const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            _mm512_storeu_ps(ro, _mm512_permutex2var_ps(r0, lo, r1));
            _mm512_storeu_ps(ro + 16,
                             _mm512_permutex2var_ps(r0, _mm512_add_epi32(lo, _mm512_set1_epi32(8)), r1));
        } else {
            const __m512i one = _mm512_set1_epi32(1);
            const __m512i packed = _mm512_or_si512(
                _mm512_or_si512(_mm512_and_si512(best_p, one),
                                _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(best_p, 1), one), 8)),
                _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(best_p, 2), one), 16),
                                _mm512_slli_epi32(_mm512_srli_epi32(best_p, 3), 24)));
            _mm512_storeu_si512(co, packed);
            __m512 r[4];
            for (unsigned i = 0; i < 4; i++)
                r[i] = _mm512_permutexvar_ps(best_p, coord[i]);
            /* [r0 r1 r2 r3] of group g at 4 g: pairs (r0, r1) and (r2, r3)
             * interleaved, then the pairs of pairs as 64-bit elements */
            const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
            const __m512d a_lo = _mm512_castps_pd(_mm512_permutex2var_ps(r[0], lo, r[1]));
            const __m512d a_hi = _mm512_castps_pd(_mm512_permutex2var_ps(r[0], hi, r[1]));
            const __m512d b_lo = _mm512_castps_pd(_mm512_permutex2var_ps(r[2], lo, r[3]));
            const __m512d b_hi = _mm512_castps_pd(_mm512_permutex2var_ps(r[2], hi, r[3]));
            const __m512i lo64 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
            const __m512i hi64 = _mm512_add_epi64(lo64, _mm512_set1_epi64(4));
            _mm512_storeu_pd((double *)(void *)(ro), _mm512_permutex2var_pd(a_lo, lo64, b_lo));
            _mm512_storeu_pd((double *)(void *)(ro + 16), _mm512_permutex2var_pd(a_lo, hi64, b_lo));
            _mm512_storeu_pd((double *)(void *)(ro + 32), _mm512_permutex2var_pd(a_hi, lo64, b_hi));
            _mm512_storeu_pd((double *)(void *)(ro + 48), _mm512_permutex2var_pd(a_hi, hi64, b_hi));
        }
        if (m < 16) {
            memcpy(codes + t * dims, cpad, m * dims);
            memcpy(recon + t * dims, rpad, m * dims * sizeof(float));
        }
    }
}

static float l2sq_avx512(const float *a, const float *b, size_t n)
{
    __m512 acc = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        acc = _mm512_mask_add_ps(acc, m, acc, _mm512_mul_ps(t, t));
    }
    float lane[16];
    _mm512_storeu_ps(lane, acc);
    return tq_fold16(lane);
}

/* Sixteen halves widened exactly (the masked-off ones read as +0). */
static inline __m512 load_halves16(const uint16_t *h, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h));
}

/* dot_half (l2 false) and l2sq_half (l2 true): the loops of dot and
 * l2sq, with b widened as it is loaded. */
static inline __attribute__((always_inline)) float half_sum_avx512(const float *a, const uint16_t *b, size_t n,
                                                                   const bool l2)
{
    __m512 acc = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        const __m512 x = _mm512_maskz_loadu_ps(m, a + i), y = load_halves16(b + i, m);
        const __m512 t = l2 ? _mm512_sub_ps(x, y) : x;
        acc = _mm512_mask_add_ps(acc, m, acc, _mm512_mul_ps(t, l2 ? t : y));
    }
    float lane[16];
    _mm512_storeu_ps(lane, acc);
    return tq_fold16(lane);
}

static float dot_half_avx512(const float *a, const uint16_t *b, size_t n)
{
    return half_sum_avx512(a, b, n, false);
}

static float l2sq_half_avx512(const float *a, const uint16_t *b, size_t n)
{
    return half_sum_avx512(a, b, n, true);
}

static double dot_f64_avx512(const float *a, const float *b, size_t n)
{
    __m512d acc = _mm512_setzero_pd();
    for (size_t i = 0; i < n; i += 8) {
        size_t left = n - i;
        __mmask8 m = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1);
        __m512d x = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, a + i));
        __m512d y = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, b + i));
        acc = _mm512_mask_add_pd(acc, m, acc, _mm512_mul_pd(x, y));
    }
    double lane[8];
    _mm512_storeu_pd(lane, acc);
    return tq_fold8(lane);
}

static double l2sq_f64_avx512(const float *a, const float *b, size_t n)
{
    __m512d acc = _mm512_setzero_pd();
    for (size_t i = 0; i < n; i += 8) {
        size_t left = n - i;
        __mmask8 m = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1);
        __m512d t = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, a + i)),
                                  _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, b + i)));
        acc = _mm512_mask_add_pd(acc, m, acc, _mm512_mul_pd(t, t));
    }
    double lane[8];
    _mm512_storeu_pd(lane, acc);
    return tq_fold8(lane);
}

/* Codes j0..j0+15 of a row sit in the 2*bits bytes at byte j0*bits/8; one
 * 64-bit load (inside TQ_CODE_PAD) and two variable shifts spread them into
 * the 16 dword lanes. */
static inline __m512i unpack16(const uint8_t *p, __m512i shift_even, __m512i shift_odd, __m512i mask)
{
    uint64_t v;
    memcpy(&v, p, 8);
    __m512i bv = _mm512_set1_epi64((long long)v);
    __m512i even = _mm512_srlv_epi64(bv, shift_even);
    __m512i odd = _mm512_slli_epi64(_mm512_srlv_epi64(bv, shift_odd), 32);
    return _mm512_and_si512(_mm512_mask_blend_epi32(0xAAAA, even, odd), mask);
}

static void dot_codes_avx512(const uint8_t *codes, size_t nrows, size_t stride,
                             unsigned bits, const float *table, const float *q,
                             size_t d, float *out)
{
    const __m512 tab = _mm512_loadu_ps(table);
    const long long b = bits;
    const __m512i shift_even = _mm512_set_epi64(14 * b, 12 * b, 10 * b, 8 * b, 6 * b, 4 * b, 2 * b, 0);
    const __m512i shift_odd = _mm512_set_epi64(15 * b, 13 * b, 11 * b, 9 * b, 7 * b, 5 * b, 3 * b, b);
    const __m512i mask = _mm512_set1_epi32((1 << bits) - 1);
    const size_t full = d / 16, chunk_bytes = 2 * bits;
    const __mmask16 tail = (__mmask16)((1u << (d % 16)) - 1);
    const __m512 qtail = _mm512_maskz_loadu_ps(tail, q + full * 16);

    /* Two rows at a time: each row's sum is one dependency chain, and two
     * independent chains hide the add latency without changing either. A
     * lone last row runs as a pair with itself. */
    for (size_t r = 0; r < nrows; r += 2) {
        const uint8_t *r0 = codes + r * stride, *r1 = r + 1 < nrows ? r0 + stride : r0;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        for (size_t c = 0; c < full; c++) {
            __m512 qv = _mm512_loadu_ps(q + c * 16);
            __m512 v0 = _mm512_permutexvar_ps(unpack16(r0 + c * chunk_bytes, shift_even, shift_odd, mask), tab);
            __m512 v1 = _mm512_permutexvar_ps(unpack16(r1 + c * chunk_bytes, shift_even, shift_odd, mask), tab);
            acc0 = _mm512_add_ps(acc0, _mm512_mul_ps(qv, v0));
            acc1 = _mm512_add_ps(acc1, _mm512_mul_ps(qv, v1));
        }
        if (tail) {
            __m512 v0 = _mm512_permutexvar_ps(unpack16(r0 + full * chunk_bytes, shift_even, shift_odd, mask), tab);
            __m512 v1 = _mm512_permutexvar_ps(unpack16(r1 + full * chunk_bytes, shift_even, shift_odd, mask), tab);
            acc0 = _mm512_mask_add_ps(acc0, tail, acc0, _mm512_mul_ps(qtail, v0));
            acc1 = _mm512_mask_add_ps(acc1, tail, acc1, _mm512_mul_ps(qtail, v1));
        }
        float lane[16];
        _mm512_storeu_ps(lane, acc0);
        out[r] = tq_fold16(lane);
        if (r + 1 < nrows) {
            _mm512_storeu_ps(lane, acc1);
            out[r + 1] = tq_fold16(lane);
        }
    }
}


static float dot_u8_avx512(const uint8_t *codes, const float *table, const float *q, size_t d)
{
    __m512 acc = _mm512_setzero_ps();
    for (size_t i = 0; i < d; i += 16) {
        __mmask16 m = tail_mask16(d - i);
        __m512i idx = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, codes + i));
        __m512 v = _mm512_i32gather_ps(idx, table, 4);
        acc = _mm512_mask_add_ps(acc, m, acc, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + i), v));
    }
    float lane[16];
    _mm512_storeu_ps(lane, acc);
    return tq_fold16(lane);
}

/* Two nibble pairs per ZMM: the low 256 bits carry pair p, the high pair
 * p+1, each for the same 32 vectors; the halves are added at each flush.
 * Partial sums as in the AVX2 kernel: lo = (even + 256 * odd) mod 2^16,
 * hi = odd, so even = lo - 256 * hi. */
/* Widen one interval's 16-bit partials into the 32-bit totals. lo and hi
 * hold the same 32 vectors in both 256-bit halves (other pairs or other
 * sextets), so the halves are added first; then even vectors' sums are
 * lo - hi * 256 and odd vectors' hi (the header's 16-bit scheme). */
static inline __attribute__((always_inline)) void widen_halves(__m256i lo256, __m256i hi256, __m512i *tot_even,
                                                               __m512i *tot_odd)
{
    __m256i even = _mm256_sub_epi16(lo256, _mm256_slli_epi16(hi256, 8));
    *tot_even = _mm512_add_epi32(*tot_even, _mm512_cvtepu16_epi32(even));
    *tot_odd = _mm512_add_epi32(*tot_odd, _mm512_cvtepu16_epi32(hi256));
}

static inline __m256i fold_halves(__m512i x)
{
    return _mm256_add_epi16(_mm512_castsi512_si256(x), _mm512_extracti64x4_epi64(x, 1));
}

/* The totals back in vector order: rows 2k = even[k], 2k+1 = odd[k]. */
static inline __attribute__((always_inline)) void vector_order(__m512i tot_even, __m512i tot_odd, __m512i out[2])
{
    const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    out[0] = _mm512_permutex2var_epi32(tot_even, first, tot_odd);
    out[1] = _mm512_permutex2var_epi32(tot_even, second, tot_odd);
}

/* Sums of one block for NQ queries (a constant after inlining, so every
 * query's partials stay in registers). A 64-byte load covers pairs 2g and
 * 2g+1; its nibbles are split once and shuffled against each query's two
 * 64-byte table halves (the layout in the simd header: no table byte is moved). Each
 * 16-bit lane takes 2 entries per group, 2 * 64 groups per flush interval of
 * 128 pairs, so the lo/hi bound of the header holds. */
static inline __attribute__((always_inline)) void scan_sums_avx512(const uint8_t *block, size_t npairs,
                                                                   const uint8_t *const *luts, const size_t NQ,
                                                                   __m512i sums[][2])
{
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    __m512i tot_even[TQ_SCAN_MAX_QUERIES], tot_odd[TQ_SCAN_MAX_QUERIES];
    for (size_t i = 0; i < NQ; i++)
        tot_even[i] = tot_odd[i] = _mm512_setzero_si512();
    for (size_t p0 = 0; p0 < npairs; p0 += TQ_SCAN_FLUSH_PAIRS) {
        size_t p1 = p0 + TQ_SCAN_FLUSH_PAIRS < npairs ? p0 + TQ_SCAN_FLUSH_PAIRS : npairs;
        __m512i lo[TQ_SCAN_MAX_QUERIES], hi[TQ_SCAN_MAX_QUERIES];
        for (size_t i = 0; i < NQ; i++)
            lo[i] = hi[i] = _mm512_setzero_si512();
        size_t p = p0;
        for (; p + 2 <= p1; p += 2) {
            tq_prefetch_ahead(block + 32 * p, TQ_SCAN_PREFETCH_BYTES);
            __m512i v = _mm512_loadu_si512(block + 32 * p);
            __m512i vl = _mm512_and_si512(v, low4), vh = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            for (size_t i = 0; i < NQ; i++) {
                const uint8_t *t = luts[i] + 64 * p; /* group p/2 starts at 128 * (p/2) */
                __m512i r0 = _mm512_shuffle_epi8(_mm512_loadu_si512(t), vl);
                __m512i r1 = _mm512_shuffle_epi8(_mm512_loadu_si512(t + 64), vh);
                /* no carry between the bytes: entries are at most TQ_SCAN_LUT_MAX */
                const __m512i x = _mm512_add_epi16(r0, r1);
                lo[i] = _mm512_add_epi16(lo[i], x);
                hi[i] = _mm512_add_epi16(hi[i], _mm512_srli_epi16(x, 8));
            }
        }
        __m256i tail_l = _mm256_setzero_si256(), tail_h = _mm256_setzero_si256();
        const bool tail = p < p1;
        if (tail) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(block + 32 * p));
            tail_l = _mm256_and_si256(v, _mm512_castsi512_si256(low4));
            tail_h = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm512_castsi512_si256(low4));
        }
        for (size_t i = 0; i < NQ; i++) {
            __m256i lo256 = fold_halves(lo[i]), hi256 = fold_halves(hi[i]);
            if (tail) {
                const uint8_t *t = luts[i] + 64 * p; /* p even: the group's first pair */
                __m256i r0 = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)t), tail_l);
                __m256i r1 = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 64)), tail_h);
                /* no carry between the bytes: entries are at most TQ_SCAN_LUT_MAX */
                const __m256i x = _mm256_add_epi16(r0, r1);
                lo256 = _mm256_add_epi16(lo256, x);
                hi256 = _mm256_add_epi16(hi256, _mm256_srli_epi16(x, 8));
            }
            widen_halves(lo256, hi256, &tot_even[i], &tot_odd[i]);
        }
    }
    for (size_t i = 0; i < NQ; i++)
        vector_order(tot_even[i], tot_odd[i], sums[i]);
}

static inline __attribute__((always_inline)) void scan_queries_avx512(const uint8_t *block, size_t npairs,
                                                                      const uint8_t *const *luts, const size_t NQ,
                                                                      uint32_t *out)
{
    __m512i sums[TQ_SCAN_MAX_QUERIES][2];
    scan_sums_avx512(block, npairs, luts, NQ, sums);
    for (size_t i = 0; i < NQ; i++) {
        _mm512_storeu_si512(out + 32 * i, sums[i][0]);
        _mm512_storeu_si512(out + 32 * i + 16, sums[i][1]);
    }
}

static void scan_block_avx512(const uint8_t *block, size_t npairs, const uint8_t *lut, uint32_t out[32])
{
    scan_queries_avx512(block, npairs, &lut, 1, out);
}

static void scan_block_multi_avx512(const uint8_t *block, size_t npairs, const uint8_t *const *luts, size_t nq,
                                    uint32_t *out)
{
    switch (nq) {
    case 1: scan_queries_avx512(block, npairs, luts, 1, out); break;
    case 2: scan_queries_avx512(block, npairs, luts, 2, out); break;
    case 3: scan_queries_avx512(block, npairs, luts, 3, out); break;
    default: scan_queries_avx512(block, npairs, luts, 4, out); break;
    }
}

/* One row per lookup (width/16 registers), the coordinates' products added
 * in order as in the reference. */
static void scan_lut_rows_avx512(const float *q, size_t d, unsigned per, const float *sel, unsigned width,
                                 size_t lookups, float *f)
{
    for (unsigned h = 0; h < width; h += 16)
        for (size_t t = 0; t < lookups; t++) {
            __m512 acc = _mm512_setzero_ps();
            for (unsigned i = 0; i < per && t * per + i < d; i++)
                acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(q[t * per + i]),
                                                       _mm512_loadu_ps(sel + width * i + h)));
            _mm512_storeu_ps(f + width * t + h, acc);
        }
}

/* Sixteen entries at a time; the same operations as the scalar reference,
 * element by element. */
static inline __m128i quantize16_avx512(const float *f, float lo, __m512 vinv)
{
    __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(f), _mm512_set1_ps(lo)), vinv),
                             _mm512_set1_ps(0.5f));
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps((float)TQ_SCAN_LUT_MAX));
    return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v));
}

static void scan_lut_quantize_avx512(const float *f, const float *lo, size_t lookups, unsigned width, float inv,
                                     uint8_t *lut)
{
    const __m512 vinv = _mm512_set1_ps(inv);
    if (width == 64) {
        for (size_t i = 0; i < 64 * lookups; i += 16)
            _mm_storeu_si128((__m128i *)(lut + i), quantize16_avx512(f + i, lo[i / 64], vinv));
        return;
    }
    for (size_t t = 0; t < lookups; t++)
        _mm256_storeu_si256((__m256i *)(lut + tq_scan_lut_offset(t)),
                            _mm256_broadcastsi128_si256(quantize16_avx512(f + 16 * t, lo[t], vinv)));
    if (lookups % 4) {
        memset(lut + tq_scan_lut_offset(lookups), 0, 32);
        memset(lut + tq_scan_lut_offset(lookups + 1), 0, 32);
    }
}

/* Sixteen rows' extremes by a transposing tree: each level pairs two
 * registers, taking half of each one's lanes for each row through the same
 * two permutes, so that a row's candidates halve while the rows a register
 * holds double; four levels leave row t's smallest (largest) in lane t.
 * About five instructions a row, against thirty-two dependent compares.
 * min and max are exact, so only which zero of a -0/+0 tie survives can
 * differ from the scalar order (see the kernel's contract). */
static inline void extremes_pair(__m512 a, __m512 b, __m512i first, __m512i second, __m512 *lo, __m512 *hi)
{
    const __m512 x = _mm512_permutex2var_ps(a, first, b), y = _mm512_permutex2var_ps(a, second, b);
    *lo = _mm512_min_ps(x, y);
    *hi = _mm512_max_ps(x, y);
}

static inline __m512 extremes_merge(__m512 a, __m512 b, __m512i first, __m512i second, bool smallest)
{
    const __m512 x = _mm512_permutex2var_ps(a, first, b), y = _mm512_permutex2var_ps(a, second, b);
    return smallest ? _mm512_min_ps(x, y) : _mm512_max_ps(x, y);
}

static float row_extremes16_avx512(const float *f, size_t rows, float *lo)
{
    /* level k's lane picks: `first` takes the lower half of each row's
     * candidates in a and in b, `second` the upper */
    const __m512i f1 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i s1 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m512i f2 = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    const __m512i s2 = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    const __m512i f3 = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
    const __m512i s3 = _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    const __m512i f4 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i s4 = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 widest = _mm512_setzero_ps();
    size_t t = 0;
    for (; t + 16 <= rows; t += 16) {
        const float *r = f + 16 * t;
        __m512 l1[8], h1[8], l2[4], h2[4], l3[2], h3[2];
        for (int i = 0; i < 8; i++)
            extremes_pair(_mm512_loadu_ps(r + 32 * i), _mm512_loadu_ps(r + 32 * i + 16), f1, s1, &l1[i], &h1[i]);
        for (int i = 0; i < 4; i++) {
            l2[i] = extremes_merge(l1[2 * i], l1[2 * i + 1], f2, s2, true);
            h2[i] = extremes_merge(h1[2 * i], h1[2 * i + 1], f2, s2, false);
        }
        for (int i = 0; i < 2; i++) {
            l3[i] = extremes_merge(l2[2 * i], l2[2 * i + 1], f3, s3, true);
            h3[i] = extremes_merge(h2[2 * i], h2[2 * i + 1], f3, s3, false);
        }
        const __m512 l4 = extremes_merge(l3[0], l3[1], f4, s4, true);
        const __m512 h4 = extremes_merge(h3[0], h3[1], f4, s4, false);
        _mm512_storeu_ps(lo + t, l4);
        widest = _mm512_max_ps(widest, _mm512_sub_ps(h4, l4));
    }
    /* max is exact: the lanes in any order give the scalar's answer */
    float spread = _mm512_reduce_max_ps(widest);
    const float rest = tq_row_extremes16_scalar(f + 16 * t, rows - t, lo + t);
    return spread > rest ? spread : rest;
}

/* The sextet scan with VBMI's two-table byte permute: a group's 96 bytes
 * are planes A, B, C; [A | B] (one 64-byte load) and [C | D] (D, the
 * fourth sextet, gathered from the top bits of all three) index 128-entry
 * table pairs (T 4g, T 4g+1) and (T 4g+2, T 4g+3), bit 6 of each index
 * choosing the table: the byte's own top bits are replaced by 0 in the
 * lower half and 1 in the upper. The index work is done once for all
 * queries; each query costs two permutes and the 16-bit sums. */
__attribute__((target("avx512vbmi"))) static inline __attribute__((always_inline)) void
scan6_sums_vbmi(const uint8_t *block, size_t groups, const uint8_t *const *luts, const size_t NQ, __m512i sums[][2])
{
    const __m512i low6 = _mm512_set1_epi8(0x3F);
    const __m512i upper = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi8(0x40), 1);
    const __m256i two = _mm256_set1_epi8(0x03), nibble = _mm256_set1_epi8(0x0F);
    __m512i tot_even[TQ_SCAN_MAX_QUERIES], tot_odd[TQ_SCAN_MAX_QUERIES];
    for (size_t i = 0; i < NQ; i++)
        tot_even[i] = tot_odd[i] = _mm512_setzero_si512();
    for (size_t g0 = 0; g0 < groups; g0 += TQ_SCAN6_FLUSH_GROUPS) {
        const size_t g1 = g0 + TQ_SCAN6_FLUSH_GROUPS < groups ? g0 + TQ_SCAN6_FLUSH_GROUPS : groups;
        __m512i lo[TQ_SCAN_MAX_QUERIES], hi[TQ_SCAN_MAX_QUERIES];
        for (size_t i = 0; i < NQ; i++)
            lo[i] = hi[i] = _mm512_setzero_si512();
        for (size_t g = g0; g < g1; g++) {
            const uint8_t *pl = block + 96 * g;
            tq_prefetch_ahead(pl, TQ_SCAN_PREFETCH_BYTES);
            tq_prefetch_ahead(pl, TQ_SCAN_PREFETCH_BYTES + 64);
            const __m512i ab = _mm512_loadu_si512(pl);
            const __m256i a = _mm512_castsi512_si256(ab), b = _mm256_loadu_si256((const __m256i *)(pl + 32));
            const __m256i c = _mm256_loadu_si256((const __m256i *)(pl + 64));
            /* D = a >> 6 | (b >> 6) << 2 | (c >> 6) << 4 in bits 0-5 of each
             * byte: 16-bit shifts bring each top pair into place, two bit
             * selects merge them (bits 6-7 are left to the index mask). */
            const __m256i d = _mm256_ternarylogic_epi32(
                _mm256_ternarylogic_epi32(_mm256_srli_epi16(a, 6), _mm256_srli_epi16(b, 4), two, 0xE4),
                _mm256_srli_epi16(c, 2), nibble, 0xE4);
            const __m512i cd = _mm512_inserti64x4(_mm512_castsi256_si512(c), d, 1);
            const __m512i iab = _mm512_ternarylogic_epi32(ab, low6, upper, 0xEA); /* (ab & low6) | upper */
            const __m512i icd = _mm512_ternarylogic_epi32(cd, low6, upper, 0xEA);
            for (size_t i = 0; i < NQ; i++) {
                const uint8_t *t = luts[i] + 256 * g;
                const __m512i r1 = _mm512_permutex2var_epi8(_mm512_loadu_si512(t), iab, _mm512_loadu_si512(t + 64));
                const __m512i r2 =
                    _mm512_permutex2var_epi8(_mm512_loadu_si512(t + 128), icd, _mm512_loadu_si512(t + 192));
                /* no carry between the bytes: entries are at most TQ_SCAN_LUT_MAX */
                const __m512i x = _mm512_add_epi16(r1, r2);
                lo[i] = _mm512_add_epi16(lo[i], x);
                hi[i] = _mm512_add_epi16(hi[i], _mm512_srli_epi16(x, 8));
            }
        }
        for (size_t i = 0; i < NQ; i++)
            widen_halves(fold_halves(lo[i]), fold_halves(hi[i]), &tot_even[i], &tot_odd[i]);
    }
    for (size_t i = 0; i < NQ; i++)
        vector_order(tot_even[i], tot_odd[i], sums[i]);
}

__attribute__((target("avx512vbmi"))) static inline __attribute__((always_inline)) void
scan6_queries_vbmi(const uint8_t *block, size_t groups, const uint8_t *const *luts, const size_t NQ, uint32_t *out)
{
    __m512i sums[TQ_SCAN_MAX_QUERIES][2];
    scan6_sums_vbmi(block, groups, luts, NQ, sums);
    for (size_t i = 0; i < NQ; i++) {
        _mm512_storeu_si512(out + 32 * i, sums[i][0]);
        _mm512_storeu_si512(out + 32 * i + 16, sums[i][1]);
    }
}

__attribute__((target("avx512vbmi"))) static void scan6_block_multi_vbmi(const uint8_t *block, size_t groups,
                                                                        const uint8_t *const *luts, size_t nq,
                                                                        uint32_t *out)
{
    switch (nq) {
    case 1: scan6_queries_vbmi(block, groups, luts, 1, out); break;
    case 2: scan6_queries_vbmi(block, groups, luts, 2, out); break;
    case 3: scan6_queries_vbmi(block, groups, luts, 3, out); break;
    default: scan6_queries_vbmi(block, groups, luts, 4, out); break;
    }
}

/* A block's own terms for sixteen rows (half h), from its planes of
 * scalars, once for all queries. */
typedef struct row_terms {
    __m512 norm, corr, rnorm, norm2, twice;
} row_terms;

static inline __attribute__((always_inline)) row_terms row_terms_avx512(const float *scalars, int h, bool prod)
{
    const float *sc = scalars + 16 * h;
    row_terms t;
    t.norm = _mm512_loadu_ps(sc);
    t.corr = _mm512_loadu_ps(sc + TQ_SCAN_BLOCK);
    t.rnorm = prod ? _mm512_loadu_ps(sc + 2 * TQ_SCAN_BLOCK) : _mm512_setzero_ps();
    t.norm2 = _mm512_mul_ps(t.norm, t.norm);
    t.twice = _mm512_mul_ps(_mm512_set1_ps(2.0f), t.norm);
    return t;
}

/* Keys of sixteen rows of one query from their sums (the formula of
 * block_select), stored to key; returns the rows beating threshold. */
static inline __attribute__((always_inline)) __mmask16 keys_avx512(const tq_key_params *q, tq_key_metric metric,
                                                                   bool prod, const row_terms *t, __m512i code,
                                                                   __m512i sign, float threshold, float *key)
{
    __m512 s = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(q->code_delta), _mm512_cvtepi32_ps(code)),
                             _mm512_set1_ps(q->code_bias));
    if (prod) {
        __m512 sp = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(q->sign_delta), _mm512_cvtepi32_ps(sign)),
                                  _mm512_set1_ps(q->sign_bias));
        s = _mm512_add_ps(s, _mm512_mul_ps(_mm512_mul_ps(t->rnorm, _mm512_set1_ps(q->qjl)), sp));
    }
    const __m512 g = _mm512_mul_ps(t->corr, s);
    __m512 k;
    switch (metric) {
    case TQ_KEY_L2:
        k = _mm512_sub_ps(_mm512_add_ps(_mm512_set1_ps(q->qq), t->norm2), _mm512_mul_ps(t->twice, g));
        k = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(k), _mm512_set1_epi32(INT32_MIN)));
        break;
    case TQ_KEY_IP: k = _mm512_add_ps(_mm512_mul_ps(t->norm, g), _mm512_set1_ps(q->bias)); break;
    default:
        k = _mm512_div_ps(_mm512_add_ps(_mm512_mul_ps(t->norm, g), _mm512_set1_ps(q->bias)), _mm512_set1_ps(q->qnorm));
        break;
    }
    _mm512_storeu_ps(key, k);
    return _mm512_cmp_ps_mask(k, _mm512_set1_ps(threshold), _CMP_GT_OQ);
}

static void block_select_avx512(const uint32_t *code_sum, const uint32_t *sign_sum, const float *scalars,
                                const tq_key_params *const *p, const float *threshold, size_t nq, float *key,
                                uint32_t *mask)
{
    const tq_key_metric metric = p[0]->metric;
    const bool prod = p[0]->prod;
    for (size_t i = 0; i < nq; i++)
        mask[i] = 0;
    for (int h = 0; h < 2; h++) {
        const row_terms t = row_terms_avx512(scalars, h, prod);
        for (size_t i = 0; i < nq; i++) {
            const __m512i code = _mm512_loadu_si512(code_sum + 32 * i + 16 * h);
            const __m512i sign = prod ? _mm512_loadu_si512(sign_sum + 32 * i + 16 * h) : _mm512_setzero_si512();
            mask[i] |= (uint32_t)keys_avx512(p[i], metric, prod, &t, code, sign, threshold[i], key + 32 * i + 16 * h)
                       << (16 * h);
        }
    }
}

/* scan_block_multi and block_select in one, block after block: the sums
 * stay in registers (through memory, the keys waited on the reload of the
 * kernel's stores), and the loop over blocks costs no call per block. */
static inline __attribute__((always_inline)) void select_from_sums(__m512i sums[][2], const size_t NQ,
                                                                 const float *scalars,
                                                                 const tq_key_params *const *p,
                                                                 const float *threshold, float *key, uint32_t *mask)
{
    const tq_key_metric metric = p[0]->metric;
    const row_terms t0 = row_terms_avx512(scalars, 0, false), t1 = row_terms_avx512(scalars, 1, false);
    for (size_t i = 0; i < NQ; i++) {
        const __m512i zero = _mm512_setzero_si512();
        uint32_t lo = keys_avx512(p[i], metric, false, &t0, sums[i][0], zero, threshold[i], key + 32 * i);
        uint32_t hi = keys_avx512(p[i], metric, false, &t1, sums[i][1], zero, threshold[i], key + 32 * i + 16);
        mask[i] = lo | hi << 16;
    }
}

static inline __attribute__((always_inline)) void scan_select_queries_avx512(
    const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t npairs, const uint8_t *const *luts,
    const size_t NQ, const float *scalars, const tq_key_params *const *p, const float *threshold, float *key,
    uint32_t *mask)
{
    for (size_t b = 0; b < nblocks; b++) {
        __m512i sums[TQ_SCAN_MAX_QUERIES][2];
        scan_sums_avx512(blocks + b * block_bytes, npairs, luts, NQ, sums);
        select_from_sums(sums, NQ, scalars + TQ_SCALARS_MSE_BLOCK * b, p, threshold, key + 32 * NQ * b, mask + NQ * b);
    }
}

/* The same for the sextet layout (VBMI). */
__attribute__((target("avx512vbmi"))) static inline __attribute__((always_inline)) void scan6_select_queries_vbmi(
    const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t groups, const uint8_t *const *luts,
    const size_t NQ, const float *scalars, const tq_key_params *const *p, const float *threshold, float *key,
    uint32_t *mask)
{
    for (size_t b = 0; b < nblocks; b++) {
        __m512i sums[TQ_SCAN_MAX_QUERIES][2];
        scan6_sums_vbmi(blocks + b * block_bytes, groups, luts, NQ, sums);
        select_from_sums(sums, NQ, scalars + TQ_SCALARS_MSE_BLOCK * b, p, threshold, key + 32 * NQ * b, mask + NQ * b);
    }
}

/* The arguments both entry points pass on, around the query count. */
#define SELECT_ARGS blocks, nblocks, block_bytes, units, luts
#define SELECT_TAIL scalars, p, threshold, key, mask

__attribute__((target("avx512vbmi"))) static void scan6_select_vbmi(const uint8_t *blocks, size_t nblocks,
                                                                   size_t block_bytes, size_t units,
                                                                   const uint8_t *const *luts, size_t nq,
                                                                   const float *scalars,
                                                                   const tq_key_params *const *p,
                                                                   const float *threshold, float *key,
                                                                   uint32_t *mask)
{
    switch (nq) {
    case 1: scan6_select_queries_vbmi(SELECT_ARGS, 1, SELECT_TAIL); break;
    case 2: scan6_select_queries_vbmi(SELECT_ARGS, 2, SELECT_TAIL); break;
    case 3: scan6_select_queries_vbmi(SELECT_ARGS, 3, SELECT_TAIL); break;
    default: scan6_select_queries_vbmi(SELECT_ARGS, 4, SELECT_TAIL); break;
    }
}

static void scan_select_avx512(const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t units,
                               const uint8_t *const *luts, size_t nq, const float *scalars,
                               const tq_key_params *const *p, const float *threshold, float *key, uint32_t *mask)
{
    switch (nq) {
    case 1: scan_select_queries_avx512(SELECT_ARGS, 1, SELECT_TAIL); break;
    case 2: scan_select_queries_avx512(SELECT_ARGS, 2, SELECT_TAIL); break;
    case 3: scan_select_queries_avx512(SELECT_ARGS, 3, SELECT_TAIL); break;
    default: scan_select_queries_avx512(SELECT_ARGS, 4, SELECT_TAIL); break;
    }
}

static void float_to_half_avx512(const float *f, uint16_t *h, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        __m256i v = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, f + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(h + i, m, v);
    }
}

static void half_to_float_avx512(const uint16_t *h, float *f, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        _mm512_mask_storeu_ps(f + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h + i)));
    }
}

const tq_simd_kernels tq_simd_kernels_avx512 = {
    .fwht = fwht_avx512,
    .mul = mul_avx512,
    .scale = scale_avx512,
    .quantize = quantize_avx512,
    .pack = pack_avx512,
    .dot = dot_avx512,
    .dot_matrix = dot_matrix_avx512,
    .dot_q8_blocks = dot_q8_blocks_vnni,
    .argmax_q8 = argmax_q8_avx512,
    .vq_nearest = vq_nearest_avx512,
    .l2sq = l2sq_avx512,
    .dot_half = dot_half_avx512,
    .l2sq_half = l2sq_half_avx512,
    .dot_f64 = dot_f64_avx512,
    .l2sq_f64 = l2sq_f64_avx512,
    .dot_codes = dot_codes_avx512,
    .dot_u8 = dot_u8_avx512,
    .nibble_dots = nibble_dots_avx512,
    .scan_block = scan_block_avx512,
    .scan_block_multi = scan_block_multi_avx512,
    .scan_lut_rows = scan_lut_rows_avx512,
    .row_extremes16 = row_extremes16_avx512,
    .scan_lut_quantize = scan_lut_quantize_avx512,
    .scan6_block_multi = scan6_block_multi_vbmi,
    .scan6_select = scan6_select_vbmi,
    .block_select = block_select_avx512,
    .scan_select = scan_select_avx512,
    .float_to_half = float_to_half_avx512,
    .half_to_float = half_to_float_avx512,
};
