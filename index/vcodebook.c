/*
 * Vector codebooks: points for the coordinates one table lookup covers, in
 * place of the product of per-coordinate Lloyd-Max codebooks: 16 for a scan
 * nibble's two coordinates at 2 bits or four at 1 bit, 64 for a sextet's
 * two coordinates at 3 bits.
 *
 * A nibble indexes a 16-entry table (a sextet a 64-entry one) whichever
 * reconstructions it stands for, so the scan costs the same; what changes
 * is where the points sit.
 * The scalar codebook's product puts them on a grid (4 x 4 at 2 bits, the
 * corners of a hypercube at 1 bit); coordinates of a rotated unit vector
 * are jointly near-Gaussian, whose 16-point quantizer is not a grid (rings
 * in 2-D). The error per coordinate falls by 8-10 % at 2 bits and 7-8 % at
 * 1 bit (TurboQuant's bound is for scalar codes; this is the same idea one
 * step further: more dimensions per codeword), and recall@10 without
 * re-rank rose by up to 0.02 on the shared datasets (README, "Recall per
 * bit"). At 3 bits the 8 x 8 grid's 64 points give way to 64 free ones in
 * 2-D: the error per coordinate falls by about 15 % (0.0349 to 0.0298 of
 * the variance for a Gaussian pair). Still data-oblivious: the points
 * depend on d and the width only.
 *
 * The points solve k-means (Lloyd) on samples of the exact marginal of m
 * coordinates of a uniform point on the sphere in R^d: direction uniform
 * on the m-sphere, squared radius Beta(m/2, (d-m)/2), whose CDF has closed
 * forms for m = 2 and 4:
 *     m = 2:  1 - (1-x)^b             b = (d-2)/2
 *     m = 4:  1 - (1-x)^b (1 + b x)   b = (d-4)/2
 * (d = m: the radius is 1). A last nibble short of coordinates (d not a
 * multiple of m) cannot index 16 points, so it keeps the scalar codes: the
 * quantizer's business, not this file's.
 *
 * Stored codes mean these points, and they are recomputed whenever an
 * index opens, so the solver is part of the storage format: it uses only
 * IEEE-exact operations (+ - * / sqrt, no libm, fixed order, the project
 * builds with -ffp-contract=off) and seeded integer randomness, which makes
 * the points bit-identical on every machine. Changing anything here
 * changes what stored codes mean; a test pins the points' fingerprint.
 *
 * Several k-means++ starts; the lowest error wins (the grid is a saddle of
 * Lloyd for a Gaussian, so it is not a start). Cached per (d, bits) like
 * the scalar codebooks.
 */
#include "tq_index.h"

#define SAMPLES 8192u
#define STARTS 3u
#define MAX_ROUNDS 100u

/* (1-x)^(e/2) for an integer e >= 0, by squaring: IEEE operations only. */
static double half_power(double one_minus_x, uint32_t e)
{
    double base = e % 2 ? sqrt(one_minus_x) : 1.0, sq = one_minus_x, out = base;
    for (uint32_t n = e / 2; n; n >>= 1) {
        if (n & 1)
            out *= sq;
        sq *= sq;
    }
    return out;
}

/* Squared radius of m of d coordinates with CDF value u, by bisection. */
static double radius_sq(uint32_t d, unsigned m, double u)
{
    const double b = (d - m) / 2.0;
    double lo = 0.0, hi = 1.0;
    for (int it = 0; it < 60; it++) {
        const double x = 0.5 * (lo + hi);
        double tail = half_power(1.0 - x, d - m);
        if (m == 4)
            tail *= 1.0 + b * x;
        if (1.0 - tail < u)
            lo = x;
        else
            hi = x;
    }
    return 0.5 * (lo + hi);
}

/* Samples scaled by sqrt(d) (unit variance per coordinate, so the
 * arithmetic below is well scaled at every d): radius quantiles paired
 * with seeded uniform directions. */
static void draw_samples(uint32_t d, unsigned m, double *x)
{
    tq_rng rng;
    tq_rng_seed(&rng, tq_seed_derive(d, 0x7663626bull + m));
    const double root_d = sqrt((double)d);
    for (uint32_t s = 0; s < SAMPLES; s++) {
        const double r = d > m ? sqrt(radius_sq(d, m, (s + 0.5) / SAMPLES)) : 1.0;
        double dir[4], n2;
        do {
            n2 = 0.0;
            for (unsigned i = 0; i < m; i++) {
                dir[i] = 2.0 * tq_rng_uniform(&rng) - 1.0;
                n2 += dir[i] * dir[i];
            }
        } while (n2 > 1.0 || n2 < 1e-6);
        const double scale = r * root_d / sqrt(n2);
        for (unsigned i = 0; i < m; i++)
            x[(size_t)s * m + i] = dir[i] * scale;
    }
}

/* The solver's inner functions take m and the point count as constants
 * where they are inlined (kmeans below is instantiated for the three
 * codebooks): with m a variable
 * nothing was unrolled and a solve took 45 to 100 ms. The arithmetic and
 * its order are the same either way. */
#define SOLVER_INLINE static inline __attribute__((always_inline))

SOLVER_INLINE double dist_sq(const double *a, const double *b, unsigned m)
{
    double s = 0.0;
    for (unsigned i = 0; i < m; i++)
        s += (a[i] - b[i]) * (a[i] - b[i]);
    return s;
}

/* Index of the nearest point (lowest on ties) and its squared distance. */
SOLVER_INLINE unsigned nearest(const double *pts, unsigned npts, const double *x, unsigned m, double *dist)
{
    unsigned best = 0;
    double bd = dist_sq(pts, x, m);
    for (unsigned p = 1; p < npts; p++) {
        const double dd = dist_sq(pts + p * m, x, m);
        /* without a branch: which point is nearest is a coin toss */
        best = dd < bd ? p : best;
        bd = dd < bd ? dd : bd;
    }
    *dist = bd;
    return best;
}

/* One k-means run from a k-means++ start; returns its total error. */
SOLVER_INLINE double kmeans_of(const double *x, unsigned m, unsigned npts, tq_rng *rng, double *pts,
                               double *weight)
{
    /* k-means++: each new point a sample drawn with probability in
     * proportion to its squared distance from the points so far. */
    uint32_t first = (uint32_t)(tq_rng_next(rng) % SAMPLES);
    memcpy(pts, x + (size_t)first * m, m * sizeof(double));
    for (uint32_t s = 0; s < SAMPLES; s++)
        weight[s] = dist_sq(pts, x + (size_t)s * m, m);
    for (unsigned p = 1; p < npts; p++) {
        double total = 0.0;
        for (uint32_t s = 0; s < SAMPLES; s++)
            total += weight[s];
        double pick = tq_rng_uniform(rng) * total;
        uint32_t s = 0;
        for (; s + 1 < SAMPLES && pick >= weight[s]; s++)
            pick -= weight[s];
        memcpy(pts + p * m, x + (size_t)s * m, m * sizeof(double));
        for (uint32_t t = 0; t < SAMPLES; t++) {
            const double dd = dist_sq(pts + p * m, x + (size_t)t * m, m);
            weight[t] = dd < weight[t] ? dd : weight[t];
        }
    }
    double err = 0.0;
    for (unsigned round = 0; round < MAX_ROUNDS; round++) {
        double sum[TQ_VQ_POINTS_MAX * 4] = {0}, count[TQ_VQ_POINTS_MAX] = {0};
        double moved = 0.0;
        err = 0.0;
        for (uint32_t s = 0; s < SAMPLES; s++) {
            double dd;
            const unsigned p = nearest(pts, npts, x + (size_t)s * m, m, &dd);
            err += dd;
            count[p] += 1.0;
            for (unsigned i = 0; i < m; i++)
                sum[p * m + i] += x[(size_t)s * m + i];
        }
        for (unsigned p = 0; p < npts; p++) {
            if (count[p] == 0.0)
                continue; /* an empty cell keeps its point */
            for (unsigned i = 0; i < m; i++) {
                const double c = sum[p * m + i] / count[p];
                moved = moved > (c - pts[p * m + i]) * (c - pts[p * m + i])
                            ? moved : (c - pts[p * m + i]) * (c - pts[p * m + i]);
                pts[p * m + i] = c;
            }
        }
        if (moved < 1e-20)
            break;
    }
    return err;
}

static double kmeans(const double *x, unsigned m, unsigned npts, tq_rng *rng, double *pts, double *weight)
{
    if (m == 4)
        return kmeans_of(x, 4, 16, rng, pts, weight);
    return npts == 16 ? kmeans_of(x, 2, 16, rng, pts, weight) : kmeans_of(x, 2, 64, rng, pts, weight);
}

static int vector_codebook_compute(tq_vector_codebook *vb, uint32_t d, unsigned bits)
{
    const unsigned dims = tq_vector_codebook_dims(bits), m = dims, npts = 1u << (dims * bits);
    double *x = tq_malloc((size_t)SAMPLES * (m + 1) * sizeof(double));
    if (!x)
        return TQ_ENOMEM;
    double *weight = x + (size_t)SAMPLES * m;
    draw_samples(d, m, x);
    tq_rng rng;
    tq_rng_seed(&rng, tq_seed_derive(d, 0x6b6d6561ull + bits));
    double best[TQ_VQ_POINTS_MAX * 4], pts[TQ_VQ_POINTS_MAX * 4], best_err = 0.0;
    for (unsigned start = 0; start < STARTS; start++) {
        const double err = kmeans(x, m, npts, &rng, pts, weight);
        if (start == 0 || err < best_err) {
            best_err = err;
            memcpy(best, pts, sizeof(pts));
        }
    }
    /* The product of scalar codebooks on the same samples: what the
     * points replace, for tests and reports. */
    const tq_codebook *cb = tq_codebook_get(d, bits);
    double grid_err = 0.0;
    if (cb) {
        const double root_d = sqrt((double)d);
        for (uint32_t s = 0; s < SAMPLES; s++)
            for (unsigned i = 0; i < m; i++) {
                double v = x[(size_t)s * m + i] / root_d, bd = -1.0;
                for (unsigned c = 0; c < cb->levels; c++) {
                    double e = (v - cb->centroid[c]) * (v - cb->centroid[c]);
                    bd = bd < 0.0 || e < bd ? e : bd;
                }
                grid_err += bd;
            }
    }
    tq_free(x);

    memset(vb, 0, sizeof(*vb));
    vb->d = d;
    vb->bits = bits;
    vb->dims = dims;
    vb->points = npts;
    const double inv_root_d = 1.0 / sqrt((double)d);
    for (unsigned p = 0; p < npts; p++)
        for (unsigned i = 0; i < m; i++)
            vb->point[i][p] = (float)(best[p * m + i] * inv_root_d);
    for (unsigned p = 0; p < npts; p++) {
        float h = vb->point[0][p] * vb->point[0][p];
        for (unsigned i = 1; i < m; i++)
            h = h + vb->point[i][p] * vb->point[i][p];
        vb->half_sq[p] = 0.5f * h;
    }
    vb->mse = best_err / ((double)SAMPLES * m) / d;
    vb->grid_mse = cb ? grid_err / ((double)SAMPLES * m) : 0.0;
    return TQ_OK;
}

static int solve_vector_codebook(void *table, uint32_t d, unsigned bits)
{
    return vector_codebook_compute(table, d, bits);
}

const tq_vector_codebook *tq_vector_codebook_get(uint32_t d, unsigned bits)
{
    static tq_solved_cache cache = TQ_SOLVED_CACHE_INIT;
    if (bits < 1 || bits > 3 || d < tq_vector_codebook_dims(bits) || d > TQ_MAX_DIM)
        return NULL;
    return tq_solved_get(&cache, d, bits, sizeof(tq_vector_codebook), solve_vector_codebook);
}

void tq_vector_codebook_encode(const tq_vector_codebook *vb, const float *u, uint32_t n, uint8_t *codes,
                               float *recon)
{
    tq_simd()->vq_nearest(u, n / vb->dims, vb->dims, vb->bits, &vb->point[0][0], vb->half_sq, codes, recon);
}

void tq_vector_codebook_decode(const tq_vector_codebook *vb, const uint8_t *codes, uint32_t n, float *u)
{
    const unsigned dims = vb->dims, bits = vb->bits;
    for (uint32_t j0 = 0; j0 + dims <= n; j0 += dims) {
        unsigned x = 0;
        for (unsigned i = 0; i < dims; i++)
            x |= (unsigned)codes[j0 + i] << (i * bits);
        for (unsigned i = 0; i < dims; i++)
            u[j0 + i] = vb->point[i][x];
    }
}
