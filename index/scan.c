/*
 * Scan layout and query tables: the fast path of search.
 *
 * Codes are stored in blocks of TQ_SCAN_BLOCK (32) vectors in a layout the
 * simd scan kernels read (see the simd header), in one of two ways:
 *
 * Nibbles (1, 2 and 4 bits, and the prod variant's sign sketch): each
 * 4-bit nibble is one LUT index, holding
 *     1 coordinate at 4 bits,
 *     2 coordinates at 2 bits (c_2t | c_2t+1 << 2),
 *     4 coordinates at 1 bit (sign sketches of the prod variant too).
 * The nibble count is padded to even with zero nibbles (whose table rows are
 * all zero); nibble pair p of the 32 vectors fills 32 bytes.
 *
 * Sextets (3 bits): no 16-entry table can index a pair of 3-bit codes, and
 * one code a nibble would cost 4 bits a coordinate, so coordinates 2t and
 * 2t+1 form a 6-bit index x_t = c_2t | c_2t+1 << 3 into a 64-entry table
 * (AVX-512 VBMI looks 64 up with one byte permute). Sextets 4g..4g+3 of the
 * 32 vectors fill 96 bytes, three planes of one byte per vector:
 *     plane 0: x_4g   | (x_4g+3      & 3) << 6
 *     plane 1: x_4g+1 | (x_4g+3 >> 2 & 3) << 6
 *     plane 2: x_4g+2 | (x_4g+3 >> 4    ) << 6
 * so the first three are the low 6 bits of a byte (which the permute
 * reads, ignoring the top two) and the fourth is gathered from the top
 * bits: 3 bits a coordinate, padded to a group of 8 coordinates.
 *
 * For a query, each lookup t (nibble or sextet) gets a float table
 *     F[t][x] = sum over its coordinates j of q_j * centroid[c_j(x)]
 * (with a vector codebook, coordinate j of point x in place of the
 * centroid: 16 points a nibble at 1 and 2 bits, 64 a sextet at 3),
 * quantized to 7 bits with one scale for the whole query (so integer sums
 * stay additive): Q[t][x] = round((F[t][x] - min_t) / delta), delta =
 * max_t (max_x F[t][x] - min_t) / TQ_SCAN_LUT_MAX (127). Then
 *     sum_t F[t][x_t]  ≈  delta * (integer kernel sum) + sum_t min_t,
 * each lookup off by at most delta/2. 7 bits, not 8, so that the kernels
 * add a byte's two lookups before splitting the 16-bit lanes (see the simd
 * header): recall at every width on the shared datasets did not move, the
 * float re-score below absorbing the coarser first stage. FAISS shrinks its
 * tables further so that 16-bit accumulators cannot overflow (at d = 1536
 * that leaves about 43 levels); our kernels widen to 32 bits in time.
 * Search re-scores the best candidates with the float tables F (exact up to
 * float rounding), which keeps recall at that of float scoring.
 */
#include "tq_index.h"

static void lut_finish(const tq_scan_layout *L, tq_scan_lut *t, float range);

/* What the rows are built from, kept for tq_scan_lut_exact (the centroid
 * table zero-padded to 16). */
static void lut_begin(tq_scan_lut *t, const float *table, unsigned mask, const float *q)
{
    t->q = q;
    for (unsigned c = 0; c < 16; c++)
        t->table[c] = c <= mask ? table[c] : 0.0f;
    t->vb = NULL;
    t->vq_coords = 0;
}

static void layout_init(tq_scan_layout *L, uint32_t d, unsigned bits, bool sextets)
{
    memset(L, 0, sizeof(*L));
    L->d = d;
    L->bits = bits;
    if (sextets) {
        L->sextets = true;
        L->groups = ((d + 1) / 2 + 3) / 4;
        L->lookups = 4 * L->groups; /* sextets past d have no coordinates: their rows are 0 */
        L->entries = 64;
        L->units = L->groups;
        L->unit_bytes = 96;
        L->unit_lut_bytes = 256;
    } else {
        L->per_nibble = bits >= 3 ? 1 : bits == 2 ? 2 : 4;
        uint32_t nibbles = (d + L->per_nibble - 1) / L->per_nibble;
        L->nibbles = (nibbles + 1) & ~1u;
        L->npairs = L->nibbles / 2;
        L->lookups = L->nibbles;
        L->entries = 16;
        L->units = L->npairs;
        L->unit_bytes = 32;
        L->unit_lut_bytes = 64;
    }
    L->block_bytes = L->unit_bytes * L->units;
    L->lut_bytes = L->sextets ? L->unit_lut_bytes * L->units : TQ_SCAN_LUT_BYTES(L->npairs);
}

void tq_scan_layout_init(tq_scan_layout *L, uint32_t d, unsigned bits)
{
    layout_init(L, d, bits, bits == 3);
}

void tq_scan_layout_init_format1(tq_scan_layout *L, uint32_t d, unsigned bits)
{
    layout_init(L, d, bits, false);
}

/* Sextet t of a vector from its unpacked codes (0 past d). */
static unsigned sextet_of(const tq_scan_layout *L, const uint8_t *codes, uint32_t t)
{
    unsigned x = 2 * t < L->d ? codes[2 * t] : 0;
    if (2 * t + 1 < L->d)
        x |= (unsigned)codes[2 * t + 1] << 3;
    return x;
}

static void sextets_put(const tq_scan_layout *L, uint8_t *block, unsigned v, const uint8_t *codes)
{
    for (uint32_t g = 0; g < L->groups; g++) {
        const unsigned x3 = sextet_of(L, codes, 4 * g + 3);
        uint8_t *planes = block + 96 * (size_t)g + v;
        for (unsigned k = 0; k < 3; k++)
            planes[32 * k] = (uint8_t)(sextet_of(L, codes, 4 * g + k) | ((x3 >> (2 * k)) & 3u) << 6);
    }
}

/* Sextet t of vector v as stored. */
static unsigned sextet_at(const uint8_t *block, unsigned v, uint32_t t)
{
    const uint8_t *planes = block + 96 * (size_t)(t / 4) + v;
    if (t % 4 < 3)
        return planes[32 * (t % 4)] & 63u;
    return (unsigned)(planes[0] >> 6) | (unsigned)(planes[32] >> 6) << 2 | (unsigned)(planes[64] >> 6) << 4;
}

static void sextets_get(const tq_scan_layout *L, const uint8_t *block, unsigned v, uint8_t *codes)
{
    for (uint32_t j = 0; j < L->d; j++)
        codes[j] = (uint8_t)((sextet_at(block, v, j / 2) >> (3 * (j % 2))) & 7u);
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
    if (L->sextets) {
        sextets_put(L, block, v, codes);
        return;
    }
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
    /* Byte v of every 32 is vector v's, in both layouts. */
    for (size_t i = 0; i < L->block_bytes / 32; i++)
        block[32 * i + v] = 0;
}

static unsigned nibble_at(const uint8_t *block, unsigned v, uint32_t t)
{
    uint8_t byte = block[32 * (t / 2) + v];
    return t % 2 ? byte >> 4 : byte & 15u;
}

/* Called with a constant per, so that the loops over a byte's codes
 * unroll: with per read from the layout, a coordinate's byte and position
 * took a divide each, and this was a twelfth of partitioning (which
 * decodes every row). A byte at a time: the pairs whose codes all lie
 * below d, then the last one's. */
static inline void nibbles_get(const uint8_t *block, unsigned v, uint32_t d, const uint32_t per, unsigned bits,
                               uint8_t *codes)
{
    const unsigned mask = (1u << bits) - 1;
    const uint32_t whole = d / (2 * per);
    for (uint32_t p = 0; p < whole; p++) {
        const unsigned byte = block[32 * (size_t)p + v];
        for (uint32_t i = 0; i < 2 * per; i++) /* code i % per of nibble i / per */
            codes[2 * per * p + i] = (uint8_t)((byte >> (4 * (i / per) + (i % per) * bits)) & mask);
    }
    for (uint32_t j = 2 * per * whole; j < d; j++) {
        const unsigned nib = nibble_at(block, v, j / per);
        codes[j] = (uint8_t)((nib >> ((j % per) * bits)) & mask);
    }
}

void tq_scan_get(const tq_scan_layout *L, const uint8_t *block, unsigned v, uint8_t *codes)
{
    switch (L->sextets ? 0 : L->per_nibble) {
    case 0: sextets_get(L, block, v, codes); break;
    case 1: nibbles_get(block, v, L->d, 1, L->bits, codes); break;
    case 2: nibbles_get(block, v, L->d, 2, L->bits, codes); break;
    default: nibbles_get(block, v, L->d, 4, L->bits, codes); break;
    }
}

int tq_scan_lut_init(tq_scan_lut *t, const tq_scan_layout *L)
{
    t->q8 = tq_malloc(L->lut_bytes);
    t->f = tq_malloc((size_t)L->lookups * (L->entries + 1) * sizeof(float));
    if (!t->q8 || !t->f) {
        tq_scan_lut_free(t);
        return TQ_ENOMEM;
    }
    t->row_lo = t->f + (size_t)L->lookups * L->entries;
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

/* Coordinates one lookup covers: a nibble's, or a sextet's two. */
static unsigned lookup_coords(const tq_scan_layout *L)
{
    return L->sextets ? 2u : L->per_nibble;
}

void tq_scan_lut_build(const tq_scan_layout *L, const float *table, const float *q, tq_scan_lut *t)
{
    /* per: coordinates a lookup covers; entries: its table's width. */
    const unsigned per = lookup_coords(L), bits = L->bits, mask = (1u << bits) - 1;
    const unsigned entries = L->entries, reachable = bits * per >= 4 ? entries : 1u << (bits * per);
    const float tmin = table[0], tmax = table[mask]; /* centroid tables ascend */
    const uint32_t lookups = L->lookups, d = L->d;
    float *lo = t->row_lo;
    lut_begin(t, table, mask, q);
    /* Each coordinate's code is chosen independently, so a row's smallest
     * and largest entries are sums of per-coordinate extremes; the
     * smallest becomes the row's offset. The loops below run over whole
     * arrays without branches on the data, so the compiler vectorizes
     * them; the sums keep the order of the specification (coordinates of
     * a lookup in increasing order, starting from 0). */
    enum { CHUNK = 256 };
    float mn[4 * CHUNK], mx[4 * CHUNK], spread[8] = {0};
    for (uint32_t n0 = 0; n0 < lookups; n0 += CHUNK) {
        const uint32_t n1 = n0 + CHUNK < lookups ? n0 + CHUNK : lookups;
        /* Per coordinate, its smallest and largest product (0 past d). */
        const uint32_t j0 = n0 * per, j1 = n1 * per < d ? n1 * per : (j0 < d ? d : j0);
        for (uint32_t j = j0; j < j1; j++) {
            const float a = q[j] * tmin, b = q[j] * tmax;
            mn[j - j0] = a < b ? a : b;
            mx[j - j0] = a < b ? b : a;
        }
        for (uint32_t j = j1; j < n1 * per; j++)
            mn[j - j0] = mx[j - j0] = 0.0f;
        /* Per lookup, the sums over its coordinates, in order (a 0 past d
         * adds nothing: a sum from +0 never becomes -0). Eight lookups a
         * step, so that the eight chains of the spread's max (exact in any
         * grouping) stay in registers: indexed by n % 8 they went through
         * memory and waited on their own stores. */
        for (uint32_t n = n0; n < n1; n += 8) {
#pragma GCC unroll 8
            for (uint32_t k = 0; k < 8; k++) {
                if (n + k >= n1)
                    break;
                float l = 0.0f, h = 0.0f;
                for (uint32_t i = 0; i < per; i++) {
                    l = l + mn[(n + k - n0) * per + i];
                    h = h + mx[(n + k - n0) * per + i];
                }
                lo[n + k] = l;
                spread[k] = spread[k] > h - l ? spread[k] : h - l;
            }
        }
    }
    float range = 0.0f;
    for (int i = 0; i < 8; i++)
        range = range > spread[i] ? range : spread[i];
    /* sel[i][x]: the centroid that table index x gives the lookup's i-th
     * coordinate, so row n is sum_i q_j * sel[i][x]. */
    float sel[4 * 64];
    for (unsigned i = 0; i < per; i++)
        for (unsigned x = 0; x < entries; x++)
            sel[entries * i + x] = table[(x >> (i * bits)) & mask];
    tq_simd()->scan_lut_rows(q, d, per, sel, entries, lookups, t->f);
    /* Entries no code can reach (none at present: every layout's index
     * bits are all code bits) quantize to 0. */
    for (uint32_t n = 0; reachable < entries && n < lookups; n++)
        for (unsigned x = reachable; x < entries; x++)
            t->f[(size_t)entries * n + x] = lo[n];
    lut_finish(L, t, range);
}

void tq_scan_lut_build_points(const tq_scan_layout *L, const tq_vector_codebook *vb, uint32_t vq_coords,
                              const float *table, const float *q, tq_scan_lut *t)
{
    const unsigned per = lookup_coords(L), bits = L->bits, mask = (1u << bits) - 1;
    const unsigned entries = L->entries;
    const uint32_t lookups = L->lookups, d = L->d;
    lut_begin(t, table, mask, q);
    t->vb = vb;
    t->vq_coords = vq_coords;
    float sel[4 * 64];
    for (unsigned i = 0; i < per; i++)
        for (unsigned x = 0; x < entries; x++)
            sel[entries * i + x] = vb->point[i][x];
    tq_simd()->scan_lut_rows(q, d, per, sel, entries, lookups, t->f);
    /* A last lookup short of coordinates holds scalar codes: its row the
     * kernel's sum order over the coordinates present. */
    if (vq_coords < d) {
        float *row = t->f + (size_t)entries * (vq_coords / per);
        for (unsigned x = 0; x < entries; x++) {
            float e = 0.0f;
            for (uint32_t j = vq_coords; j < d; j++)
                e = e + q[j] * table[(x >> ((j - vq_coords) * bits)) & mask];
            row[x] = e;
        }
    }
    /* Points are not a product of per-coordinate choices: each row's
     * extremes are read off the row (a scalar loop was as long as the rest
     * of a 2-bit table build). */
    const float range = entries == 64 ? tq_row_extremes_scalar(t->f, lookups, 64, t->row_lo)
                                      : tq_simd()->row_extremes16(t->f, lookups, t->row_lo);
    lut_finish(L, t, range);
}

/* The offsets' sum, the scale, and the 8-bit tables, from the float rows,
 * their smallest entries and the largest spread. */
static void lut_finish(const tq_scan_layout *L, tq_scan_lut *t, float range)
{
    const uint32_t lookups = L->lookups;
    const unsigned entries = L->entries;
    const float *lo = t->row_lo;
    /* Four chains, folded in a fixed order (one chain of double adds cost
     * as much as the rest of a small table build); in four variables, as
     * an array indexed by n % 4 they went through memory and waited on
     * their own stores. */
    double p0 = 0.0, p1 = 0.0, p2 = 0.0, p3 = 0.0;
    uint32_t n4 = 0;
    for (; n4 + 4 <= lookups; n4 += 4) {
        p0 += (double)lo[n4];
        p1 += (double)lo[n4 + 1];
        p2 += (double)lo[n4 + 2];
        p3 += (double)lo[n4 + 3];
    }
    if (n4 < lookups)
        p0 += (double)lo[n4];
    if (n4 + 1 < lookups)
        p1 += (double)lo[n4 + 1];
    if (n4 + 2 < lookups)
        p2 += (double)lo[n4 + 2];
    const double bias = (p0 + p1) + (p2 + p3);
    t->delta = range > 0.0f ? range / (float)TQ_SCAN_LUT_MAX : 1.0f;
    t->bias = (float)bias;
    tq_simd()->scan_lut_quantize(t->f, lo, lookups, entries, 1.0f / t->delta, t->q8);
}

/* Sextet rows (3 bits) in scalar code: entry(t, x) = (0 + q[2t] c[x & 7])
 * + q[2t+1] c[x >> 3], a missing coordinate's product left out, computed
 * from the query and the centroids like the nibble kernels' one-code
 * entries (the tables of a large d do not stay in cache across a batch);
 * with a vector codebook, (0 + q[2t] p0[x]) + q[2t+1] p1[x] for the pairs
 * its points code. Eight chains (lookups 8i+0..7) folded in a fixed
 * order. */
static float sextet_exact(const tq_scan_layout *L, const tq_scan_lut *t, const uint8_t *block, unsigned v)
{
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const float *q = t->q, *c = t->table;
    const float *p0 = t->vb ? t->vb->point[0] : NULL, *p1 = t->vb ? t->vb->point[1] : NULL;
    const uint32_t d = L->d, vq = t->vq_coords;
    for (uint32_t g = 0; g < L->groups; g++) {
        const uint8_t *planes = block + 96 * (size_t)g + v;
        const unsigned a = planes[0], b = planes[32], cc = planes[64];
        const unsigned x[4] = {a & 63u, b & 63u, cc & 63u, (a >> 6) | (b >> 6) << 2 | (cc >> 6) << 4};
        for (int k = 0; k < 4; k++) {
            const uint32_t j = 8 * g + 2 * (uint32_t)k;
            float e = 0.0f;
            if (j < vq) {
                e = e + q[j] * p0[x[k]];
                e = e + q[j + 1] * p1[x[k]];
            } else {
                if (j < d)
                    e = e + q[j] * c[x[k] & 7u];
                if (j + 1 < d)
                    e = e + q[j + 1] * c[x[k] >> 3];
            }
            const int i = 4 * (int)(g % 2) + k;
            s[i] = s[i] + e;
        }
    }
    return tq_fold_chains8(s);
}

void tq_scan_lut_exact_rows(const tq_scan_layout *L, const tq_scan_lut *t, const uint8_t *const *blocks,
                            const uint8_t *lanes, size_t n, float *out)
{
    if (L->sextets) {
        for (size_t i = 0; i < n; i++)
            out[i] = sextet_exact(L, t, blocks[i], lanes[i]);
    } else if (L->per_nibble == 1) {
        /* one code a nibble computed from q (at d = 4096 re-reading the
         * tables was a fifth of the search) */
        tq_simd()->nibble_dots(blocks, lanes, n, L->npairs, t->q, t->table, L->d, L->bits, out);
    } else {
        tq_nibble_lookups(blocks, lanes, n, L->npairs, t->f, out);
    }
}

float tq_scan_lut_exact(const tq_scan_layout *L, const tq_scan_lut *t, const uint8_t *block, unsigned v)
{
    const uint8_t lane = (uint8_t)v;
    float out;
    tq_scan_lut_exact_rows(L, t, &block, &lane, 1, &out);
    return out;
}
