/*
 * Scan layout and query tables: the fast path of search.
 *
 * Codes are stored in blocks of TQ_SCAN_BLOCK (32) vectors in the nibble
 * layout the simd scan kernel reads (see the simd header): each 4-bit
 * nibble is one LUT index, holding
 *     1 coordinate at 4 and 3 bits (a 3-bit code leaves the top bit 0),
 *     2 coordinates at 2 bits (c_2t | c_2t+1 << 2),
 *     4 coordinates at 1 bit (sign sketches of the prod variant too).
 * The nibble count is padded to even with zero nibbles (whose table rows are
 * all zero). Storage is therefore bits/8 bytes per coordinate except at 3
 * bits, which costs 4 bits per coordinate in this layout: no 16-entry table
 * can index a 3-bit code pair.
 *
 * For a query, each nibble position t gets a float table
 *     F[t][c] = sum over the nibble's coordinates j of q_j * centroid[c_j],
 * quantized to 8 bits with one scale for the whole query (so integer sums
 * stay additive): Q[t][c] = round((F[t][c] - min_t) / delta), delta =
 * max_t (max_c F[t][c] - min_t) / 255. Then
 *     sum_t F[t][nib_t]  ≈  delta * (integer kernel sum) + sum_t min_t,
 * each nibble off by at most delta/2. FAISS shrinks its tables further so
 * that 16-bit accumulators cannot overflow (at d = 1536 that leaves about 43
 * levels); our kernels widen to 32 bits in time, so all 256 levels stay.
 * Search re-scores the best candidates with the float tables F (exact up to
 * float rounding), which keeps recall at that of float scoring.
 */
#include "tq_index.h"

void tq_scan_layout_init(tq_scan_layout *L, uint32_t d, unsigned bits)
{
    L->d = d;
    L->bits = bits;
    L->per_nibble = bits >= 3 ? 1 : bits == 2 ? 2 : 4;
    uint32_t nibbles = (d + L->per_nibble - 1) / L->per_nibble;
    L->nibbles = (nibbles + 1) & ~1u;
    L->npairs = L->nibbles / 2;
    L->block_bytes = (size_t)TQ_SCAN_BLOCK * L->npairs;
}

/* Nibble t of a vector from its unpacked codes. */
static unsigned nibble_of(const tq_scan_layout *L, const uint8_t *codes, uint32_t t)
{
    unsigned nib = 0;
    for (uint32_t i = 0; i < L->per_nibble; i++) {
        uint32_t j = t * L->per_nibble + i;
        if (j < L->d)
            nib |= (unsigned)codes[j] << (i * L->bits);
    }
    return nib;
}

/* Called with a constant m so the inner loop unrolls. */
static inline void put_whole_bytes(uint8_t *block, unsigned v, const uint8_t *codes, uint32_t whole,
                                   const uint32_t m)
{
    const uint32_t shift = 8 / m;
    for (uint32_t p = 0; p < whole; p++) {
        const uint8_t *c = codes + (size_t)p * m;
        unsigned byte = 0;
        for (uint32_t i = 0; i < m; i++)
            byte |= (unsigned)c[i] << (i * shift);
        block[32 * p + v] = (uint8_t)byte;
    }
}

void tq_scan_put(const tq_scan_layout *L, uint8_t *block, unsigned v, const uint8_t *codes)
{
    /* Byte p of a vector holds codes [p*m, p*m+m), code i at bit i*shift:
     * the general nibble_of() reduces to this, and the loop over whole
     * bytes needs no bounds checks (this runs once per vector on add). */
    const uint32_t whole = L->d / (2 * L->per_nibble);
    switch (L->per_nibble) {
    case 1: put_whole_bytes(block, v, codes, whole, 2); break;
    case 2: put_whole_bytes(block, v, codes, whole, 4); break;
    default: put_whole_bytes(block, v, codes, whole, 8); break;
    }
    for (uint32_t p = whole; p < L->npairs; p++) {
        unsigned lo = nibble_of(L, codes, 2 * p), hi = nibble_of(L, codes, 2 * p + 1);
        block[32 * p + v] = (uint8_t)(lo | hi << 4);
    }
}

void tq_scan_clear(const tq_scan_layout *L, uint8_t *block, unsigned v)
{
    for (uint32_t p = 0; p < L->npairs; p++)
        block[32 * p + v] = 0;
}

unsigned tq_scan_nibble(const uint8_t *block, unsigned v, uint32_t t)
{
    uint8_t byte = block[32 * (t / 2) + v];
    return t % 2 ? byte >> 4 : byte & 15u;
}

void tq_scan_get(const tq_scan_layout *L, const uint8_t *block, unsigned v, uint8_t *codes)
{
    unsigned mask = (1u << L->bits) - 1;
    for (uint32_t j = 0; j < L->d; j++) {
        unsigned nib = tq_scan_nibble(block, v, j / L->per_nibble);
        codes[j] = (uint8_t)((nib >> ((j % L->per_nibble) * L->bits)) & mask);
    }
}

int tq_scan_lut_init(tq_scan_lut *t, const tq_scan_layout *L)
{
    t->q8 = tq_malloc(TQ_SCAN_LUT_BYTES(L->npairs));
    t->f = tq_malloc((size_t)L->nibbles * 17 * sizeof(float));
    if (!t->q8 || !t->f) {
        tq_scan_lut_free(t);
        return TQ_ENOMEM;
    }
    t->row_lo = t->f + (size_t)L->nibbles * 16;
    return TQ_OK;
}

void tq_scan_lut_free(tq_scan_lut *t)
{
    if (t) {
        tq_free(t->q8);
        tq_free(t->f);
        t->q8 = NULL;
        t->f = NULL;
    }
}

void tq_scan_lut_build(const tq_scan_layout *L, const float *table, const float *q, tq_scan_lut *t)
{
    const unsigned per = L->per_nibble, bits = L->bits, mask = (1u << bits) - 1;
    const unsigned entries = bits * per >= 4 ? 16 : 1u << (bits * per);
    const float tmin = table[0], tmax = table[mask]; /* centroid tables ascend */
    const uint32_t nibbles = L->nibbles, d = L->d;
    float *lo = t->row_lo;
    /* Each coordinate's code is chosen independently, so a row's smallest
     * and largest entries are sums of per-coordinate extremes; the
     * smallest becomes the row's offset. The loops below run over whole
     * arrays without branches on the data, so the compiler vectorizes
     * them; the sums keep the order of the specification (coordinates of
     * a nibble in increasing order, starting from 0). */
    enum { CHUNK = 256 };
    float mn[4 * CHUNK], mx[4 * CHUNK], spread[8] = {0};
    for (uint32_t n0 = 0; n0 < nibbles; n0 += CHUNK) {
        const uint32_t n1 = n0 + CHUNK < nibbles ? n0 + CHUNK : nibbles;
        /* Per coordinate, its smallest and largest product (0 past d). */
        const uint32_t j0 = n0 * per, j1 = n1 * per < d ? n1 * per : (j0 < d ? d : j0);
        for (uint32_t j = j0; j < j1; j++) {
            const float a = q[j] * tmin, b = q[j] * tmax;
            mn[j - j0] = a < b ? a : b;
            mx[j - j0] = a < b ? b : a;
        }
        for (uint32_t j = j1; j < n1 * per; j++)
            mn[j - j0] = mx[j - j0] = 0.0f;
        /* Per nibble, the sums over its coordinates below d, in order. */
        for (uint32_t n = n0; n < n1; n++) {
            float l = 0.0f, h = 0.0f;
            for (uint32_t i = 0; i < per && n * per + i < d; i++) {
                l = l + mn[(n - n0) * per + i];
                h = h + mx[(n - n0) * per + i];
            }
            lo[n] = l;
            /* max is exact in any grouping: eight independent chains */
            spread[n % 8] = spread[n % 8] > h - l ? spread[n % 8] : h - l;
        }
    }
    float range = 0.0f;
    for (int i = 0; i < 8; i++)
        range = range > spread[i] ? range : spread[i];
    /* sel[i][c]: the centroid that nibble value c gives the nibble's i-th
     * coordinate, so row n is sum_i q_j * sel[i][c]. */
    float sel[4][16];
    for (unsigned i = 0; i < per; i++)
        for (unsigned c = 0; c < 16; c++)
            sel[i][c] = table[(c >> (i * bits)) & mask];
    const tq_simd_kernels *k = tq_simd();
    k->scan_lut_rows(q, d, per, sel[0], nibbles, t->f);
    /* Entries no code can reach (3-bit codes leave the top half of a
     * nibble's table unused) quantize to 0. */
    for (uint32_t n = 0; entries < 16 && n < nibbles; n++)
        for (unsigned c = entries; c < 16; c++)
            t->f[16 * n + c] = lo[n];
    /* Four chains, folded in a fixed order (one chain of double adds cost
     * as much as the rest of a small table build). */
    double part[4] = {0.0, 0.0, 0.0, 0.0};
    for (uint32_t n = 0; n < nibbles; n++)
        part[n % 4] += (double)lo[n];
    const double bias = (part[0] + part[1]) + (part[2] + part[3]);
    t->delta = range > 0.0f ? range / 255.0f : 1.0f;
    t->bias = (float)bias;
    k->scan_lut_quantize(t->f, lo, nibbles, 1.0f / t->delta, t->q8);
}

float tq_scan_lut_exact(const tq_scan_layout *L, const tq_scan_lut *t, const uint8_t *block, unsigned v)
{
    /* Eight partial sums (nibbles 8i+0..7), folded in a fixed order: with
     * fewer, the chain of dependent adds was the cost of re-scoring
     * candidates. The nibble count is even, so pairs are whole. */
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const float *f = t->f;
    uint32_t p = 0;
    for (; p + 4 <= L->npairs; p += 4, f += 128)
        for (int i = 0; i < 4; i++) {
            unsigned byte = block[32 * (p + i) + v];
            s[2 * i] = s[2 * i] + f[32 * i + (byte & 15u)];
            s[2 * i + 1] = s[2 * i + 1] + f[32 * i + 16 + (byte >> 4)];
        }
    for (int i = 0; p < L->npairs; p++, i++, f += 32) {
        unsigned byte = block[32 * p + v];
        s[2 * i] = s[2 * i] + f[byte & 15u];
        s[2 * i + 1] = s[2 * i + 1] + f[16 + (byte >> 4)];
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
