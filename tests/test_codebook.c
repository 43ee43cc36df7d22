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
