/*
 * Lloyd-Max codebooks against independent oracles (centroids scaled by
 * sqrt(d), positive half) and the structural properties every codebook must
 * have.
 */
#include <criterion/criterion.h>

#include "tq_index.h"

static void expect_positive_half(uint32_t d, unsigned bits, const double *want, unsigned n, double tol)
{
    const tq_codebook *cb = tq_codebook_get(d, bits);
    cr_assert_not_null(cb, "codebook d=%u b=%u", d, bits);
    unsigned half = cb->levels / 2;
    for (unsigned i = 0; i < n; i++) {
        double got = cb->centroid[half + i] * sqrt((double)d);
        cr_assert(fabs(got - want[i]) <= tol, "d=%u b=%u centroid %u: %.6f, want %.5f", d, bits, i, got, want[i]);
    }
}

Test(codebook, gaussian_limit)
{
    /* Large d approaches the Gaussian Lloyd-Max values: b=1 ±0.79788,
     * b=2 ±0.45278, ±1.51042. */
    expect_positive_half(16384, 1, (const double[]){0.79788}, 1, 2e-4);
    expect_positive_half(16384, 2, (const double[]){0.45278, 1.51042}, 2, 2e-4);
}

Test(codebook, oracles_at_finite_d)
{
    expect_positive_half(128, 2, (const double[]){0.45245, 1.50519}, 2, 1e-5);
    const tq_codebook *cb = tq_codebook_get(128, 4);
    cr_assert(fabs(cb->centroid[15] * sqrt(128.0) - 2.68886) <= 1e-5, "d=128 b=4 outermost %.6f",
              cb->centroid[15] * sqrt(128.0));
    expect_positive_half(1536, 3, (const double[]){0.24504, 0.75578, 1.34330, 2.15023}, 4, 1e-5);
}

Test(codebook, per_vector_mse_at_1536)
{
    const double want[] = {0.36317, 0.11736, 0.03450, 0.00949};
    for (unsigned b = 1; b <= 4; b++) {
        const tq_codebook *cb = tq_codebook_get(1536, b);
        double got = cb->mse * 1536;
        cr_assert(fabs(got - want[b - 1]) <= 1e-5, "b=%u per-vector mse %.6f, want %.5f", b, got, want[b - 1]);
    }
}

Test(codebook, uniform_density_at_d3)
{
    /* At d = 3 a sphere coordinate is uniform on [-1, 1] (Archimedes), so
     * the optimal quantizer is uniform: centroids (2i+1)/L - 1. */
    const tq_codebook *cb = tq_codebook_get(3, 3);
    for (unsigned i = 0; i < 8; i++)
        cr_assert(fabs(cb->centroid[i] - ((2.0 * i + 1) / 8 - 1)) < 1e-9, "centroid %u = %.12f", i, cb->centroid[i]);
}

Test(codebook, structure_for_every_d_and_bits)
{
    const uint32_t dims[] = {2, 3, 4, 50, 128, 784, 1536, 4096, 16384, 65536};
    for (size_t t = 0; t < sizeof(dims) / sizeof(dims[0]); t++) {
        double prev_mse = INFINITY;
        for (unsigned b = 1; b <= 8; b++) {
            if (b > 4 && b < 8)
                continue;
            const tq_codebook *cb = tq_codebook_get(dims[t], b);
            cr_assert_not_null(cb);
            cr_assert_eq(cb->levels, 1u << b);
            for (unsigned i = 0; i < cb->levels; i++) {
                cr_assert(fabs(cb->centroid[i] + cb->centroid[cb->levels - 1 - i]) < 1e-15, "symmetric");
                cr_assert(cb->centroid[i] > -1.0 && cb->centroid[i] < 1.0, "inside the sphere");
                if (i)
                    cr_assert(cb->centroid[i] > cb->centroid[i - 1], "d=%u b=%u ascending at %u", dims[t], b, i);
            }
            for (unsigned i = 0; i + 1 < cb->levels; i++)
                cr_assert(cb->bound[i] > cb->centroid[i] && cb->bound[i] < cb->centroid[i + 1], "bounds between");
            cr_assert(cb->mse > 0 && cb->mse < prev_mse, "d=%u b=%u mse %.3g not below %.3g", dims[t], b, cb->mse,
                      prev_mse);
            cr_assert(cb->mse < 1.0 / dims[t], "mse below the variance");
            prev_mse = cb->mse;
        }
    }
}

Test(codebook, cached_and_range_checked)
{
    cr_assert_eq(tq_codebook_get(200, 2), tq_codebook_get(200, 2));
    cr_assert_null(tq_codebook_get(1, 2));
    cr_assert_null(tq_codebook_get(200, 0));
    cr_assert_null(tq_codebook_get(200, 9));
    cr_assert_null(tq_codebook_get(TQ_MAX_DIM + 1, 2));
}

Test(codebook, sphere_abs_mean)
{
    /* d=2: E|cos θ| = 2/π; d=3: E|U(-1,1)| = 1/2; large d → sqrt(2/(π d)). */
    cr_assert(fabs(tq_sphere_abs_mean(2) - 2 / M_PI) < 1e-12);
    cr_assert(fabs(tq_sphere_abs_mean(3) - 0.5) < 1e-12);
    cr_assert(fabs(tq_sphere_abs_mean(10000) / sqrt(2 / (M_PI * 10000)) - 1) < 1e-4);
}

Test(codebook, grid_quantizer_is_exact)
{
    /* The fast 8-bit path must give exactly the kernel's definition: the
     * count of bounds strictly below x, on bounds themselves, their float
     * neighbours, far outside, and at random. */
    const uint32_t dims[] = {2, 128, 1536, 16384, 65536};
    tq_rng r;
    tq_rng_seed(&r, 31);
    float x[4096];
    uint8_t fast[4096], ref[4096];
    for (size_t t = 0; t < sizeof(dims) / sizeof(dims[0]); t++)
        for (unsigned bits = 1; bits <= 8; bits += 7) {
            const tq_codebook *cb = tq_codebook_get(dims[t], bits);
            size_t n = 0;
            for (unsigned i = 0; i + 1 < cb->levels; i++) {
                x[n++] = cb->bound_f[i];
                x[n++] = nextafterf(cb->bound_f[i], -INFINITY);
                x[n++] = nextafterf(cb->bound_f[i], INFINITY);
            }
            x[n++] = 1e30f;
            x[n++] = -1e30f;
            x[n++] = 0.0f;
            while (n < 4096)
                x[n++] = (float)(tq_rng_gauss(&r) * 1.5 / sqrt(dims[t]));
            tq_codebook_quantize(cb, x, n, fast);
            tq_simd_kernels_scalar.quantize(x, n, cb->bound_f, cb->levels - 1, ref);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(fast[i], ref[i], "d=%u bits=%u x=%a: %u vs %u", dims[t], bits, (double)x[i], fast[i],
                             ref[i]);
        }
}

/* ---------------------------------------------------- vector codebooks */

Test(vector_codebook, lower_error_than_the_scalar_grid)
{
    /* On the solver's own samples the points beat the product of scalar
     * codebooks they replace: by 5 % or more once the marginal is
     * near-Gaussian (d >= 16), where the grid is a saddle of Lloyd (at 3
     * bits by 10 % or more: 64 free points in the plane against 8 x 8). */
    static const uint32_t dims[] = {4, 5, 16, 50, 128, 384, 1536, 16384};
    for (unsigned bits = 1; bits <= 3; bits++)
        for (size_t i = 0; i < sizeof(dims) / sizeof(dims[0]); i++) {
            const tq_vector_codebook *vb = tq_vector_codebook_get(dims[i], bits);
            cr_assert_not_null(vb, "d=%u b=%u", dims[i], bits);
            cr_assert_eq(vb->dims, bits == 1 ? 4u : 2u);
            cr_assert_eq(vb->points, bits == 3 ? 64u : 16u);
            cr_assert(vb->mse < vb->grid_mse, "d=%u b=%u: %g vs the grid's %g", dims[i], bits, vb->mse, vb->grid_mse);
            if (dims[i] >= 16)
                cr_assert(vb->mse < (bits == 3 ? 0.90 : 0.95) * vb->grid_mse, "d=%u b=%u: %g vs the grid's %g",
                          dims[i], bits, vb->mse, vb->grid_mse);
            /* the grid's own error is the scalar codebook's, measured by
             * the solver's samples (within their noise) */
            const tq_codebook *cb = tq_codebook_get(dims[i], bits);
            cr_assert(fabs(vb->grid_mse / cb->mse - 1.0) < 0.05, "d=%u b=%u: sampled grid error %g, exact %g", dims[i],
                      bits, vb->grid_mse, cb->mse);
        }
}

Test(vector_codebook, cached_range_checked_and_pinned)
{
    cr_assert_eq(tq_vector_codebook_get(128, 2), tq_vector_codebook_get(128, 2));
    cr_assert_not_null(tq_vector_codebook_get(128, 3));
    cr_assert_null(tq_vector_codebook_get(128, 4));
    cr_assert_null(tq_vector_codebook_get(1, 3), "a 3-bit point has 2 coordinates");
    cr_assert_null(tq_vector_codebook_get(3, 1), "a 1-bit point has 4 coordinates");
    cr_assert_null(tq_vector_codebook_get(1, 2));
    /* Stored codes mean these points and every open recomputes them: a
     * change of the solver changes what every stored vector-codebook index
     * means. These fingerprints (FNV-1a over the points' bits, coordinate
     * by coordinate) were taken when each width's points were made (1 and
     * 2 bits with format 7, 3 bits in stop 27); they may only change with a
     * new codebook kind. */
    static const struct {
        uint32_t d;
        unsigned bits;
        uint64_t fingerprint;
    } pinned[] = {{50, 1, 0x160bc6cd907ef6a8ull},  {128, 2, 0x1f0b19cad375c2ffull}, {1536, 2, 0x181f9c3cd6b5575eull},
                  {50, 3, 0x66944436bd37b009ull},  {1536, 3, 0xbcb3978e49f529f6ull}};
    for (size_t i = 0; i < sizeof(pinned) / sizeof(pinned[0]); i++) {
        const tq_vector_codebook *vb = tq_vector_codebook_get(pinned[i].d, pinned[i].bits);
        uint64_t h = 0xcbf29ce484222325ull;
        for (unsigned c = 0; c < 4; c++) {
            const unsigned char *p = (const unsigned char *)vb->point[c];
            for (size_t k = 0; k < vb->points * sizeof(float); k++)
                h = (h ^ p[k]) * 0x100000001b3ull;
        }
        cr_assert_eq(h, pinned[i].fingerprint, "d=%u b=%u: points fingerprint %#llx", pinned[i].d, pinned[i].bits,
                     (unsigned long long)h);
    }
}

Test(vector_codebook, encode_takes_the_nearest_point)
{
    tq_rng r;
    tq_rng_seed(&r, 5);
    for (unsigned bits = 1; bits <= 3; bits++) {
        const uint32_t d = 96;
        const tq_vector_codebook *vb = tq_vector_codebook_get(d, bits);
        float u[96], back[96], recon[96];
        uint8_t codes[96];
        for (int trial = 0; trial < 50; trial++) {
            for (uint32_t j = 0; j < d; j++)
                u[j] = (float)(tq_rng_gauss(&r) / sqrt((double)d));
            tq_vector_codebook_encode(vb, u, d, codes, recon);
            tq_vector_codebook_decode(vb, codes, d, back);
            cr_assert(!memcmp(recon, back, sizeof(back)), "b=%u: the encode's reconstruction is the decode's", bits);
            for (uint32_t j0 = 0; j0 < d; j0 += vb->dims) {
                double got = 0.0, best = INFINITY;
                for (unsigned i = 0; i < vb->dims; i++) {
                    cr_assert_lt(codes[j0 + i], 1u << bits);
                    got += (u[j0 + i] - back[j0 + i]) * (double)(u[j0 + i] - back[j0 + i]);
                }
                for (unsigned p = 0; p < vb->points; p++) {
                    double e = 0.0;
                    for (unsigned i = 0; i < vb->dims; i++)
                        e += (u[j0 + i] - vb->point[i][p]) * (double)(u[j0 + i] - vb->point[i][p]);
                    best = e < best ? e : best;
                }
                cr_assert(got <= best * (1 + 1e-5) + 1e-12, "b=%u nibble %u: error %g, nearest point's %g", bits,
                          j0 / vb->dims, got, best);
            }
        }
    }
}
