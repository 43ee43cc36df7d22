/*
 * Scalar kernels: the specification every SIMD path must reproduce bit for
 * bit. They are written to state the lane semantics explicitly (16 float
 * lanes, 8 double lanes, the fixed folding tree) rather than to be fast;
 * compiled for baseline x86-64 with contraction off, so a*b+c is always a
 * rounded product followed by a rounded sum.
 */
#include "tq_simd.h"

#include <math.h>
#include <string.h>

#define LANES32 16
#define LANES64 8

void tq_fwht_scalar(float *x, size_t n, const float *signs, float scale)
{
    if (signs)
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] * signs[i];
    for (size_t h = 1; h < n; h *= 2)
        for (size_t i = 0; i < n; i += 2 * h)
            for (size_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * scale;
}

static void mul_scalar(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * y[i];
}

static void scale_scalar(float *x, size_t n, float s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * s;
}

void tq_quantize_scalar(const float *x, size_t n, const float *bounds,
                        unsigned nbounds, uint8_t *codes)
{
    for (size_t i = 0; i < n; i++) {
        /* Binary search for the count of bounds strictly below x[i]. */
        unsigned lo = 0, hi = nbounds;
        while (lo < hi) {
            unsigned mid = (lo + hi) / 2;
            if (bounds[mid] < x[i])
                lo = mid + 1;
            else
                hi = mid;
        }
        codes[i] = (uint8_t)lo;
    }
}

void tq_pack_scalar(const uint8_t *codes, size_t n, unsigned bits, uint8_t *out)
{
    size_t nbytes = (n * bits + 7) / 8;
    memset(out, 0, nbytes);
    size_t bit = 0;
    for (size_t i = 0; i < n; i++, bit += bits) {
        unsigned v = codes[i];
        size_t byte = bit / 8;
        unsigned shift = (unsigned)(bit % 8);
        out[byte] |= (uint8_t)(v << shift);
        if (shift + bits > 8)
            out[byte + 1] |= (uint8_t)(v >> (8 - shift));
    }
}

static float dot_scalar(const float *a, const float *b, size_t n)
{
    float lane[LANES32] = {0};
    for (size_t j = 0; j < n; j++) {
        float p = a[j] * b[j];
        lane[j % LANES32] = lane[j % LANES32] + p;
    }
    return tq_fold16(lane);
}

static float l2sq_scalar(const float *a, const float *b, size_t n)
{
    float lane[LANES32] = {0};
    for (size_t j = 0; j < n; j++) {
        float t = a[j] - b[j];
        float p = t * t;
        lane[j % LANES32] = lane[j % LANES32] + p;
    }
    return tq_fold16(lane);
}

static float dot_half_scalar(const float *a, const uint16_t *b, size_t n)
{
    float lane[LANES32] = {0};
    for (size_t j = 0; j < n; j++) {
        float p = a[j] * tq_float_from_half(b[j]);
        lane[j % LANES32] = lane[j % LANES32] + p;
    }
    return tq_fold16(lane);
}

static float l2sq_half_scalar(const float *a, const uint16_t *b, size_t n)
{
    float lane[LANES32] = {0};
    for (size_t j = 0; j < n; j++) {
        float t = a[j] - tq_float_from_half(b[j]);
        float p = t * t;
        lane[j % LANES32] = lane[j % LANES32] + p;
    }
    return tq_fold16(lane);
}

static void dot_matrix_scalar(const float *x, size_t nx, const float *c, size_t nc, size_t d, float *out)
{
    for (size_t i = 0; i < nx; i++)
        for (size_t j = 0; j < nc; j++) {
            float lane[LANES32] = {0};
            for (size_t t = 0; t < d; t++)
                lane[t % LANES32] = fmaf(x[i * d + t], c[j * d + t], lane[t % LANES32]);
            out[i * nc + j] = tq_fold16(lane);
        }
}

static void dot_q8_blocks_scalar(const uint8_t *q, size_t nq, const int8_t *t, size_t nblocks, size_t groups,
                                 int32_t *out)
{
    for (size_t i = 0; i < nq; i++)
        for (size_t b = 0; b < nblocks; b++)
            for (int l = 0; l < 16; l++) {
                int32_t acc = 0;
                for (size_t g = 0; g < groups; g++)
                    for (int r = 0; r < 4; r++)
                        acc += (int32_t)q[i * 4 * groups + 4 * g + r] * t[((b * groups + g) * 16 + l) * 4 + r];
                out[i * 16 * nblocks + b * 16 + l] = acc;
            }
}

static uint32_t argmax_q8_scalar(const int32_t *dots, const int32_t *sums, const float *penalty, float unit,
                                 size_t n)
{
    uint32_t best = 0;
    float most = -INFINITY;
    for (size_t p = 0; p < n; p++) {
        const float s = unit * (float)(dots[p] - 128 * sums[p]) - (penalty ? penalty[p] : 0.0f);
        if (s > most) {
            most = s;
            best = (uint32_t)p;
        }
    }
    return best;
}

static void vq_nearest_scalar(const float *x, size_t n, unsigned dims, unsigned bits, const float *pts,
                              const float *half_sq, uint8_t *codes, float *recon)
{
    const unsigned points = 1u << (dims * bits), mask = (1u << bits) - 1;
    for (size_t t = 0; t < n; t++) {
        const float *v = x + t * dims;
        float most = -INFINITY;
        unsigned best = 0;
        for (unsigned p = 0; p < points; p++) {
            float s = pts[p] * v[0];
            for (unsigned i = 1; i < dims; i++)
                s = s + pts[TQ_VQ_STRIDE * i + p] * v[i];
            s = s - half_sq[p];
            if (s > most) {
                most = s;
                best = p;
            }
        }
        for (unsigned i = 0; i < dims; i++) {
            codes[t * dims + i] = (uint8_t)((best >> (i * bits)) & mask);
            recon[t * dims + i] = pts[TQ_VQ_STRIDE * i + best];
        }
    }
}

static double dot_f64_scalar(const float *a, const float *b, size_t n)
{
    double lane[LANES64] = {0};
    for (size_t j = 0; j < n; j++) {
        double p = (double)a[j] * (double)b[j];
        lane[j % LANES64] = lane[j % LANES64] + p;
    }
    return tq_fold8(lane);
}

static double l2sq_f64_scalar(const float *a, const float *b, size_t n)
{
    double lane[LANES64] = {0};
    for (size_t j = 0; j < n; j++) {
        double t = (double)a[j] - (double)b[j];
        double p = t * t;
        lane[j % LANES64] = lane[j % LANES64] + p;
    }
    return tq_fold8(lane);
}

static void dot_codes_scalar(const uint8_t *codes, size_t nrows, size_t stride,
                             unsigned bits, const float *table, const float *q,
                             size_t d, float *out)
{
    for (size_t r = 0; r < nrows; r++) {
        const uint8_t *row = codes + r * stride;
        float lane[LANES32] = {0};
        for (size_t j = 0; j < d; j++) {
            float p = q[j] * table[tq_code_at(row, j, bits)];
            lane[j % LANES32] = lane[j % LANES32] + p;
        }
        out[r] = tq_fold16(lane);
    }
}

static float dot_u8_scalar(const uint8_t *codes, const float *table, const float *q, size_t d)
{
    float lane[LANES32] = {0};
    for (size_t j = 0; j < d; j++) {
        float p = q[j] * table[codes[j]];
        lane[j % LANES32] = lane[j % LANES32] + p;
    }
    return tq_fold16(lane);
}

/* Float-table estimates of rows whose nibbles hold several codes: a scalar
 * lookup each in nibble_dots' eight chains, four pairs a step so that each
 * chain's index is a constant and the chains stay in registers. One path
 * for every level: computing a nibble's several codes (two or four
 * products) measured no faster at 2 bits and slower at 1. */
void tq_nibble_lookups(const uint8_t *const *blocks, const uint8_t *lanes, size_t n, size_t npairs,
                           const float *f, float *out)
{
    for (size_t i = 0; i < n; i++) {
        float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        const uint8_t *row = blocks[i] + lanes[i];
        size_t p = 0;
        for (; p + 4 <= npairs; p += 4)
            for (size_t k = 0; k < 4; k++) {
                const unsigned byte = row[32 * (p + k)];
                s[2 * k] = s[2 * k] + f[32 * (p + k) + (byte & 15u)];
                s[2 * k + 1] = s[2 * k + 1] + f[32 * (p + k) + 16 + (byte >> 4)];
            }
        for (size_t k = 0; p < npairs; p++, k++) {
            const unsigned byte = row[32 * p];
            s[2 * k] = s[2 * k] + f[32 * p + (byte & 15u)];
            s[2 * k + 1] = s[2 * k + 1] + f[32 * p + 16 + (byte >> 4)];
        }
        out[i] = tq_fold_chains8(s);
    }
}

static void nibble_dots_scalar(const uint8_t *const *blocks, const uint8_t *lanes, size_t n, size_t npairs,
                               const float *q, const float *table, size_t d, unsigned bits, float *out)
{
    const unsigned mask = (1u << bits) - 1;
    for (size_t i = 0; i < n; i++) {
        float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (size_t t = 0; t < 2 * npairs; t++) {
            const unsigned byte = blocks[i][32 * (t / 2) + lanes[i]], x = t % 2 ? byte >> 4 : byte & 15u;
            s[t % 8] = s[t % 8] + (t < d ? q[t] * table[x & mask] : 0.0f);
        }
        out[i] = tq_fold_chains8(s);
    }
}

static void scan_block_scalar(const uint8_t *block, size_t npairs, const uint8_t *lut, uint32_t out[32])
{
    for (int v = 0; v < TQ_SCAN_BLOCK; v++) {
        uint32_t sum = 0;
        for (size_t p = 0; p < npairs; p++) {
            uint8_t byte = block[32 * p + v];
            sum += lut[tq_scan_lut_offset(2 * p) + (byte & 15)];
            sum += lut[tq_scan_lut_offset(2 * p + 1) + (byte >> 4)];
        }
        out[v] = sum;
    }
}

static void scan_block_multi_scalar(const uint8_t *block, size_t npairs, const uint8_t *const *luts, size_t nq,
                                    uint32_t *out)
{
    for (size_t i = 0; i < nq; i++)
        scan_block_scalar(block, npairs, luts[i], out + 32 * i);
}

void tq_scan_lut_rows_scalar(const float *q, size_t d, unsigned per, const float *sel, unsigned width,
                             size_t lookups, float *f)
{
    for (size_t t = 0; t < lookups; t++)
        for (unsigned c = 0; c < width; c++) {
            float acc = 0.0f;
            for (unsigned i = 0; i < per && t * per + i < d; i++)
                acc = acc + q[t * per + i] * sel[width * i + c];
            f[width * t + c] = acc;
        }
}

static inline uint8_t quantize_entry(float f, float lo, float inv)
{
    float v = (f - lo) * inv + 0.5f;
    return (uint8_t)(v <= 0.0f ? 0.0f : v >= (float)TQ_SCAN_LUT_MAX ? (float)TQ_SCAN_LUT_MAX : v);
}

float tq_row_extremes_scalar(const float *f, size_t rows, unsigned width, float *lo)
{
    float spread = 0.0f;
    for (size_t t = 0; t < rows; t++) {
        const float *row = f + (size_t)width * t;
        /* sixteen lanes, a wider row folded into them a quarter at a time
         * (independent chains: one chain of 64 compares was the slow part
         * of a small 3-bit table build), then the lanes */
        float mn[16], mx[16];
        for (unsigned k = 0; k < 16; k++)
            mn[k] = mx[k] = row[k];
        for (unsigned c = 16; c < width; c += 16)
            for (unsigned k = 0; k < 16; k++) {
                mn[k] = row[c + k] < mn[k] ? row[c + k] : mn[k];
                mx[k] = row[c + k] > mx[k] ? row[c + k] : mx[k];
            }
        float l = mn[0], h = mx[0];
        for (unsigned k = 1; k < 16; k++) {
            l = mn[k] < l ? mn[k] : l;
            h = mx[k] > h ? mx[k] : h;
        }
        lo[t] = l;
        spread = spread > h - l ? spread : h - l;
    }
    return spread;
}

float tq_row_extremes16_scalar(const float *f, size_t rows, float *lo)
{
    return tq_row_extremes_scalar(f, rows, 16, lo);
}

void tq_scan_lut_quantize_scalar(const float *f, const float *lo, size_t lookups, unsigned width, float inv,
                                 uint8_t *lut)
{
    if (width == 64) {
        for (size_t i = 0; i < 64 * lookups; i++)
            lut[i] = quantize_entry(f[i], lo[i / 64], inv);
        return;
    }
    for (size_t t = 0; t < lookups; t++) {
        uint8_t *row = lut + tq_scan_lut_offset(t);
        for (int c = 0; c < 16; c++)
            row[c] = row[16 + c] = quantize_entry(f[16 * t + c], lo[t], inv);
    }
    /* lookups is even: a last group of one pair lacks nibbles 4g+2, 4g+3. */
    if (lookups % 4) {
        memset(lut + tq_scan_lut_offset(lookups), 0, 32);
        memset(lut + tq_scan_lut_offset(lookups + 1), 0, 32);
    }
}

void tq_scan6_block_multi_scalar(const uint8_t *block, size_t groups, const uint8_t *const *luts, size_t nq,
                                 uint32_t *out)
{
    for (size_t i = 0; i < nq; i++)
        for (int v = 0; v < TQ_SCAN_BLOCK; v++) {
            uint32_t sum = 0;
            for (size_t g = 0; g < groups; g++) {
                const uint8_t *planes = block + 96 * g + v, *t = luts[i] + 256 * g;
                const unsigned a = planes[0], b = planes[32], c = planes[64];
                sum += t[a & 63u];
                sum += t[64 + (b & 63u)];
                sum += t[128 + (c & 63u)];
                sum += t[192 + ((a >> 6) | (b >> 6) << 2 | (c >> 6) << 4)];
            }
            out[32 * i + v] = sum;
        }
}

static uint32_t select_one(const uint32_t *code_sum, const uint32_t *sign_sum, const float *scalars,
                           const tq_key_params *p, float threshold, float *key)
{
    uint32_t mask = 0;
    for (int v = 0; v < TQ_SCAN_BLOCK; v++) {
        const float norm = scalars[v], corr = scalars[TQ_SCAN_BLOCK + v];
        float s = p->code_delta * (float)code_sum[v] + p->code_bias;
        if (p->prod)
            s = s + (scalars[2 * TQ_SCAN_BLOCK + v] * p->qjl) * (p->sign_delta * (float)sign_sum[v] + p->sign_bias);
        const float g = corr * s;
        float k;
        switch (p->metric) {
        case TQ_KEY_L2: k = -((p->qq + norm * norm) - (2.0f * norm) * g); break;
        case TQ_KEY_IP: k = norm * g + p->bias; break;
        default: k = (norm * g + p->bias) / p->qnorm; break;
        }
        key[v] = k;
        mask |= (uint32_t)(k > threshold) << v;
    }
    return mask;
}

void tq_block_select_scalar(const uint32_t *code_sum, const uint32_t *sign_sum, const float *scalars,
                            const tq_key_params *const *p, const float *threshold, size_t nq, float *key,
                            uint32_t *mask)
{
    for (size_t i = 0; i < nq; i++)
        mask[i] = select_one(code_sum + 32 * i, sign_sum + 32 * i, scalars, p[i], threshold[i], key + 32 * i);
}

void tq_scan_select_composed(const tq_simd_kernels *k, bool sextets, const uint8_t *blocks, size_t nblocks,
                             size_t block_bytes, size_t units, const uint8_t *const *luts, size_t nq,
                             const float *scalars, const tq_key_params *const *p, const float *threshold, float *key,
                             uint32_t *mask)
{
    _Alignas(64) uint32_t sums[TQ_SCAN_MAX_QUERIES * TQ_SCAN_BLOCK];
    for (size_t b = 0; b < nblocks; b++) {
        const uint8_t *block = blocks + b * block_bytes;
        if (sextets)
            k->scan6_block_multi(block, units, luts, nq, sums);
        else
            k->scan_block_multi(block, units, luts, nq, sums);
        /* mse: the sign sums are unread */
        k->block_select(sums, sums, scalars + TQ_SCALARS_MSE_BLOCK * b, p, threshold, nq, key + 32 * nq * b,
                        mask + nq * b);
    }
}

static void scan_select_scalar(const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t npairs,
                               const uint8_t *const *luts, size_t nq, const float *scalars,
                               const tq_key_params *const *p, const float *threshold, float *key, uint32_t *mask)
{
    tq_scan_select_composed(&tq_simd_kernels_scalar, false, blocks, nblocks, block_bytes, npairs, luts, nq, scalars,
                            p, threshold, key, mask);
}

static void scan6_select_scalar(const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t groups,
                                const uint8_t *const *luts, size_t nq, const float *scalars,
                                const tq_key_params *const *p, const float *threshold, float *key, uint32_t *mask)
{
    tq_scan_select_composed(&tq_simd_kernels_scalar, true, blocks, nblocks, block_bytes, groups, luts, nq, scalars, p,
                            threshold, key, mask);
}

uint16_t tq_half_from_float(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
    if (abs >= 0x477ff000u) /* rounds past 65504 */
        return (uint16_t)(sign | 0x7c00u);
    if (abs < 0x38800000u) { /* below 2^-14: a half subnormal, in units of 2^-24 */
        if (abs < 0x33000000u)
            return (uint16_t)sign; /* at most half the smallest subnormal: rounds to zero */
        const uint32_t shift = 126u - (abs >> 23), mant = (abs & 0x7fffffu) | 0x800000u;
        uint32_t q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1u)))
            q++; /* may become the smallest normal, which is the right encoding */
        return (uint16_t)(sign | q);
    }
    /* normal: rebias the exponent, round 23 mantissa bits to 10 */
    uint32_t h = ((abs >> 13) - (112u << 10));
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* may carry into the exponent, which is right */
    return (uint16_t)(sign | h);
}

float tq_float_from_half(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            uint32_t m = mant;
            do {
                e++;
                m <<= 1;
            } while (!(m & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        /* A NaN comes out quiet, as F16C makes it. */
        x = sign | 0x7f800000u | (mant ? 0x400000u : 0) | (mant << 13);
    } else {
        x = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static void float_to_half_scalar(const float *f, uint16_t *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h[i] = tq_half_from_float(f[i]);
}

static void half_to_float_scalar(const uint16_t *h, float *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        f[i] = tq_float_from_half(h[i]);
}

const tq_simd_kernels tq_simd_kernels_scalar = {
    .fwht = tq_fwht_scalar,
    .mul = mul_scalar,
    .scale = scale_scalar,
    .quantize = tq_quantize_scalar,
    .pack = tq_pack_scalar,
    .dot = dot_scalar,
    .dot_matrix = dot_matrix_scalar,
    .dot_q8_blocks = dot_q8_blocks_scalar,
    .argmax_q8 = argmax_q8_scalar,
    .vq_nearest = vq_nearest_scalar,
    .l2sq = l2sq_scalar,
    .dot_half = dot_half_scalar,
    .l2sq_half = l2sq_half_scalar,
    .dot_f64 = dot_f64_scalar,
    .l2sq_f64 = l2sq_f64_scalar,
    .dot_codes = dot_codes_scalar,
    .dot_u8 = dot_u8_scalar,
    .nibble_dots = nibble_dots_scalar,
    .float_to_half = float_to_half_scalar,
    .half_to_float = half_to_float_scalar,
    .scan_block = scan_block_scalar,
    .scan_block_multi = scan_block_multi_scalar,
    .scan_lut_rows = tq_scan_lut_rows_scalar,
    .row_extremes16 = tq_row_extremes16_scalar,
    .scan_lut_quantize = tq_scan_lut_quantize_scalar,
    .scan6_block_multi = tq_scan6_block_multi_scalar,
    .block_select = tq_block_select_scalar,
    .scan_select = scan_select_scalar,
    .scan6_select = scan6_select_scalar,
};
