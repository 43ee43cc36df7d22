/*
 * The rotation: orthogonal (norms and inner products preserved, inverse
 * exact to float rounding), a pure function of (seed, d), the same on every
 * SIMD level, and spreading adversarial inputs.
 */
#include <criterion/criterion.h>

#include "tq_index.h"

static const uint32_t dims[] = {2, 3, 4, 5, 7, 16, 17, 100, 127, 128, 129, 384, 784, 1000, 1023, 1024, 1025,
                                1536, 3000, 4096, 10000, 16383, 16384, 65535, 65536};
#define NDIMS (sizeof(dims) / sizeof(dims[0]))

static double norm2(const float *x, uint32_t d)
{
    double s = 0;
    for (uint32_t i = 0; i < d; i++)
        s += (double)x[i] * x[i];
    return s;
}

Test(rotation, preserves_norms_and_inner_products)
{
    tq_rng r;
    tq_rng_seed(&r, 7);
    for (size_t t = 0; t < NDIMS; t++) {
        uint32_t d = dims[t];
        tq_rotation rot;
        cr_assert_eq(tq_rotation_init(&rot, d, 99, 0, NULL), TQ_OK);
        float *x = tq_malloc(d * sizeof(float)), *y = tq_malloc(d * sizeof(float));
        for (int rep = 0; rep < 4; rep++) {
            for (uint32_t i = 0; i < d; i++) {
                x[i] = (float)tq_rng_gauss(&r);
                y[i] = (float)tq_rng_gauss(&r);
            }
            double nx = norm2(x, d), ny = norm2(y, d), ip = 0;
            for (uint32_t i = 0; i < d; i++)
                ip += (double)x[i] * y[i];
            tq_rotation_apply(&rot, x);
            tq_rotation_apply(&rot, y);
            double rip = 0;
            for (uint32_t i = 0; i < d; i++)
                rip += (double)x[i] * y[i];
            cr_assert(fabs(sqrt(norm2(x, d) / nx) - 1.0) < 1e-5, "d=%u norm ratio %.9f", d, sqrt(norm2(x, d) / nx));
            cr_assert(fabs(rip - ip) < 1e-5 * sqrt(nx * ny), "d=%u inner product %g vs %g", d, rip, ip);
        }
        tq_free(x);
        tq_free(y);
        tq_rotation_free(&rot);
    }
}

Test(rotation, inverse_round_trip)
{
    tq_rng r;
    tq_rng_seed(&r, 8);
    for (size_t t = 0; t < NDIMS; t++) {
        uint32_t d = dims[t];
        tq_rotation rot;
        cr_assert_eq(tq_rotation_init(&rot, d, 5, 0, NULL), TQ_OK);
        float *x = tq_malloc(d * sizeof(float)), *orig = tq_malloc(d * sizeof(float));
        for (uint32_t i = 0; i < d; i++)
            orig[i] = x[i] = (float)tq_rng_gauss(&r);
        tq_rotation_apply(&rot, x);
        tq_rotation_invert(&rot, x);
        double err = 0, n = sqrt(norm2(orig, d));
        for (uint32_t i = 0; i < d; i++)
            err = fmax(err, fabs((double)x[i] - orig[i]));
        cr_assert(err < 1e-5 * n, "d=%u round-trip max error %g (norm %g)", d, err, n);
        tq_free(x);
        tq_free(orig);
        tq_rotation_free(&rot);
    }
}

Test(rotation, determined_by_seed_and_same_on_every_level)
{
    const uint32_t d = 1536;
    float *a = tq_malloc(d * sizeof(float)), *b = tq_malloc(d * sizeof(float)), *c = tq_malloc(d * sizeof(float));
    tq_rotation r1, r2, r3;
    cr_assert_eq(tq_rotation_init(&r1, d, 42, 0, NULL), TQ_OK);
    cr_assert_eq(tq_rotation_init(&r2, d, 42, 0, NULL), TQ_OK);
    cr_assert_eq(tq_rotation_init(&r3, d, 43, 0, NULL), TQ_OK);
    for (uint32_t i = 0; i < d; i++)
        a[i] = b[i] = c[i] = (float)sin(i * 0.37);
    tq_simd_level best = tq_simd_best_level();
    cr_assert_eq(tq_simd_force(TQ_SIMD_SCALAR), 0);
    tq_rotation_apply(&r1, a);
    cr_assert_eq(tq_simd_force(best), 0);
    tq_rotation_apply(&r2, b);
    tq_rotation_apply(&r3, c);
    cr_assert(memcmp(a, b, d * sizeof(float)) == 0, "same seed: scalar and %s rotations differ",
              tq_simd_level_name(best));
    cr_assert(memcmp(a, c, d * sizeof(float)) != 0, "different seeds gave the same rotation");
    tq_rotation_free(&r1);
    tq_rotation_free(&r2);
    tq_rotation_free(&r3);
    tq_free(a);
    tq_free(b);
    tq_free(c);
}

/* Rotated adversarial unit vectors must look like random points on the
 * sphere: no coordinate far above the sqrt(2 ln d)/sqrt(d) a random one has.
 * The bound 10/sqrt(d) holds with margin (worst seen: 8.1 at d=16383);
 * without per-block signs d=1025 reached 32. */
Test(rotation, spreads_adversarial_inputs)
{
    for (size_t t = 0; t < NDIMS; t++) {
        uint32_t d = dims[t];
        if (d < 16)
            continue;
        tq_rotation rot;
        cr_assert_eq(tq_rotation_init(&rot, d, 123, 0, NULL), TQ_OK);
        uint32_t p = rot.p;
        float *x = tq_malloc(d * sizeof(float));
        double limit = 10.0 / sqrt((double)d);
        /* kind 0: one-hot at every position (every 7th past 2048);
         * kind 1: Hadamard rows on [0, p); kind 2: the constant vector. */
        for (int kind = 0; kind < 3; kind++) {
            uint32_t reps = kind == 0 ? d : kind == 1 ? (p < 64 ? p : 64) : 1;
            for (uint32_t i = 0; i < reps; i += kind == 0 && d > 2048 ? 7 : 1) {
                for (uint32_t j = 0; j < d; j++) {
                    if (kind == 0)
                        x[j] = j == i ? 1.0f : 0.0f;
                    else if (kind == 1)
                        x[j] = j < p ? (__builtin_popcount(i & j) & 1 ? -1.0f : 1.0f) : 0.0f;
                    else
                        x[j] = 1.0f;
                }
                float n = (float)sqrt(norm2(x, d));
                for (uint32_t j = 0; j < d; j++)
                    x[j] /= n;
                tq_rotation_apply(&rot, x);
                double m = 0;
                for (uint32_t j = 0; j < d; j++)
                    m = fmax(m, fabs(x[j]));
                cr_assert(m <= limit, "d=%u kind %d input %u: max |coordinate| %.4f > %.4f (= %.2f/sqrt(d))", d, kind,
                          i, m, limit, m * sqrt((double)d));
            }
        }
        tq_free(x);
        tq_rotation_free(&rot);
    }
}

Test(rotation, rejects_bad_dimensions)
{
    tq_rotation rot;
    tq_error err;
    cr_assert_eq(tq_rotation_init(&rot, 1, 1, 0, &err), TQ_EDIM);
    cr_assert(strstr(err.msg, "1") != NULL, "message names the value: %s", err.msg);
    cr_assert_eq(tq_rotation_init(&rot, TQ_MAX_DIM + 1, 1, 0, &err), TQ_EDIM);
    tq_rotation_free(&rot);
}
