/*
 * The quantizer's statistical contract: distortion at the Lloyd-Max optimum
 * (the codebook's own figures, within 3 %), an unbiased prod estimator
 * (checked against a control that must show bias), the correction making
 * self inner products exact, and identical codes on every SIMD level.
 */
#include <criterion/criterion.h>

#include "tq_index.h"

static void random_unit(tq_rng *r, float *x, uint32_t d)
{
    double s = 0;
    for (uint32_t i = 0; i < d; i++) {
        x[i] = (float)tq_rng_gauss(r);
        s += (double)x[i] * x[i];
    }
    float inv = (float)(1.0 / sqrt(s));
    for (uint32_t i = 0; i < d; i++)
        x[i] *= inv;
}

typedef struct coded {
    uint8_t code[16384];
    uint8_t signs[16384];
    tq_code_scalars sc;
} coded;

Test(quantizer, mse_distortion_matches_theory_at_1536)
{
    const uint32_t d = 1536;
    const double want[] = {0.36317, 0.11736, 0.03450, 0.00949};
    tq_rng r;
    tq_rng_seed(&r, 11);
    float *x = tq_malloc(d * sizeof(float)), *y = tq_malloc(d * sizeof(float));
    coded *c = tq_malloc(sizeof(coded));
    tq_qscratch s;
    cr_assert_eq(tq_qscratch_init(&s, d), TQ_OK);
    for (unsigned b = 1; b <= 4; b++) {
        tq_quantizer q;
        cr_assert_eq(tq_quantizer_init(&q, d, b, TQ_VARIANT_MSE, TQ_CORRECTION_NONE, 77, NULL), TQ_OK);
        double total = 0;
        const int n = 1000;
        for (int i = 0; i < n; i++) {
            random_unit(&r, x, d);
            tq_quantizer_encode(&q, x, &s, c->code, NULL, &c->sc);
            tq_quantizer_decode(&q, c->code, NULL, &c->sc, y, &s);
            double e = 0;
            for (uint32_t j = 0; j < d; j++)
                e += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
            total += e;
        }
        double mse = total / n;
        cr_assert(fabs(mse / want[b - 1] - 1) <= 0.03, "b=%u measured per-vector mse %.5f, theory %.5f", b, mse,
                  want[b - 1]);
        tq_quantizer_free(&q);
    }
    tq_qscratch_free(&s);
    tq_free(x);
    tq_free(y);
    tq_free(c);
}

/* Mean and standard error of (estimate - truth) of <x, y> for one fixed
 * pair, over `trials` independent seeds (the estimator's randomness). */
static void estimator_error(uint32_t d, unsigned bits, tq_variant v, int trials, double *mean, double *se)
{
    tq_rng r;
    tq_rng_seed(&r, 12);
    float *x = tq_malloc(d * sizeof(float)), *y = tq_malloc(d * sizeof(float));
    random_unit(&r, x, d);
    random_unit(&r, y, d);
    /* Correlate the pair so the shrinkage bias of plain mse is visible. */
    for (uint32_t i = 0; i < d; i++)
        y[i] = 0.6f * x[i] + 0.8f * y[i];
    double truth = 0;
    for (uint32_t i = 0; i < d; i++)
        truth += (double)x[i] * y[i];
    coded *c = tq_malloc(sizeof(coded));
    tq_qscratch s;
    cr_assert_eq(tq_qscratch_init(&s, d), TQ_OK);
    double sum = 0, sum2 = 0;
    for (int t = 0; t < trials; t++) {
        tq_quantizer q;
        tq_query pq;
        cr_assert_eq(tq_quantizer_init(&q, d, bits, v, TQ_CORRECTION_NONE, 1000 + (uint64_t)t, NULL), TQ_OK);
        cr_assert_eq(tq_query_init(&pq, &q), TQ_OK);
        tq_quantizer_encode(&q, x, &s, c->code, c->signs, &c->sc);
        tq_quantizer_prepare(&q, y, &pq);
        float g = tq_quantizer_estimate(&q, &pq, c->code, c->signs, &c->sc);
        double e = (double)c->sc.norm * g - truth;
        sum += e;
        sum2 += e * e;
        tq_query_free(&pq);
        tq_quantizer_free(&q);
    }
    *mean = sum / trials;
    *se = sqrt((sum2 / trials - *mean * *mean) / trials);
    tq_qscratch_free(&s);
    tq_free(x);
    tq_free(y);
    tq_free(c);
}

Test(quantizer, prod_is_unbiased_and_mse_is_not)
{
    const int trials = 3000;
    double mean, se;
    for (unsigned bits = 1; bits <= 3; bits++) {
        estimator_error(128, bits, TQ_VARIANT_PROD, trials, &mean, &se);
        cr_assert(fabs(mean) <= 4 * se, "prod b=%u: bias %.5f is %.1f standard errors from zero", bits, mean,
                  mean / se);
    }
    /* Control: the plain 1-bit mse estimator shrinks inner products by about
     * 2/π, which this test must be able to see. */
    estimator_error(128, 1, TQ_VARIANT_MSE, trials, &mean, &se);
    cr_assert(fabs(mean) > 10 * se, "mse b=1 bias %.5f should be far from zero (se %.5f)", mean, se);
    cr_assert(mean < 0, "mse shrinks inner products");
}

Test(quantizer, correction_makes_self_inner_product_exact)
{
    const uint32_t d = 300;
    tq_rng r;
    tq_rng_seed(&r, 13);
    float x[300];
    coded *c = tq_malloc(sizeof(coded));
    tq_qscratch s;
    cr_assert_eq(tq_qscratch_init(&s, d), TQ_OK);
    for (int v = 0; v < 2; v++)
        for (unsigned b = 1; b <= 4; b++) {
            tq_variant variant = v ? TQ_VARIANT_PROD : TQ_VARIANT_MSE;
            tq_quantizer q;
            tq_query pq;
            cr_assert_eq(tq_quantizer_init(&q, d, b, variant, TQ_CORRECTION_IP, 3, NULL), TQ_OK);
            cr_assert_eq(tq_query_init(&pq, &q), TQ_OK);
            for (int i = 0; i < 20; i++) {
                random_unit(&r, x, d);
                for (uint32_t j = 0; j < d; j++)
                    x[j] *= 7.5f;
                tq_quantizer_encode(&q, x, &s, c->code, c->signs, &c->sc);
                tq_quantizer_prepare(&q, x, &pq);
                float g = tq_quantizer_estimate(&q, &pq, c->code, c->signs, &c->sc);
                double est = (double)c->sc.norm * g;
                cr_assert(fabs(est / (7.5 * 7.5) - 1) < 1e-4, "%s b=%u: <x,x> estimate %.6f, want %.6f",
                          v ? "prod" : "mse", b, est, 7.5 * 7.5);
            }
            tq_query_free(&pq);
            tq_quantizer_free(&q);
        }
    tq_qscratch_free(&s);
    tq_free(c);
}

Test(quantizer, same_codes_on_every_simd_level)
{
    const uint32_t dims[] = {2, 3, 77, 128, 784, 1536};
    tq_simd_level best = tq_simd_best_level();
    coded *a = tq_malloc(sizeof(coded)), *b = tq_malloc(sizeof(coded));
    for (size_t t = 0; t < sizeof(dims) / sizeof(dims[0]); t++)
        for (unsigned bits = 1; bits <= 4; bits++)
            for (int v = 0; v < 2; v++) {
                uint32_t d = dims[t];
                tq_quantizer q;
                cr_assert_eq(tq_quantizer_init(&q, d, bits, v ? TQ_VARIANT_PROD : TQ_VARIANT_MSE, TQ_CORRECTION_IP, 9,
                                               NULL), TQ_OK);
                tq_qscratch s;
                cr_assert_eq(tq_qscratch_init(&s, d), TQ_OK);
                float *x = tq_malloc(d * sizeof(float));
                tq_rng r;
                tq_rng_seed(&r, d * 31 + bits);
                for (uint32_t j = 0; j < d; j++)
                    x[j] = (float)tq_rng_gauss(&r);
                memset(a, 0, sizeof(*a));
                memset(b, 0, sizeof(*b));
                tq_simd_force(TQ_SIMD_SCALAR);
                tq_quantizer_encode(&q, x, &s, a->code, a->signs, &a->sc);
                tq_simd_force(best);
                tq_quantizer_encode(&q, x, &s, b->code, b->signs, &b->sc);
                cr_assert(memcmp(a, b, sizeof(*a)) == 0, "d=%u bits=%u %s: scalar and %s encodings differ", d, bits,
                          v ? "prod" : "mse", tq_simd_level_name(best));
                tq_free(x);
                tq_qscratch_free(&s);
                tq_quantizer_free(&q);
            }
    tq_free(a);
    tq_free(b);
}

Test(quantizer, zero_vector_encodes_to_zero_estimates)
{
    const uint32_t d = 64;
    float x[64] = {0}, y[64];
    coded *c = tq_malloc(sizeof(coded));
    tq_qscratch s;
    cr_assert_eq(tq_qscratch_init(&s, d), TQ_OK);
    tq_quantizer q;
    cr_assert_eq(tq_quantizer_init(&q, d, 2, TQ_VARIANT_PROD, TQ_CORRECTION_IP, 1, NULL), TQ_OK);
    tq_quantizer_encode(&q, x, &s, c->code, c->signs, &c->sc);
    cr_assert_eq(c->sc.norm, 0.0f);
    tq_quantizer_decode(&q, c->code, c->signs, &c->sc, y, &s);
    for (uint32_t j = 0; j < d; j++)
        cr_assert_eq(fabsf(y[j]), 0.0f);
    tq_quantizer_free(&q);
    tq_qscratch_free(&s);
    tq_free(c);
}

Test(quantizer, rejects_bad_configuration)
{
    tq_quantizer q;
    tq_error err;
    cr_assert_eq(tq_quantizer_init(&q, 64, 0, TQ_VARIANT_MSE, TQ_CORRECTION_IP, 1, &err), TQ_EARG);
    cr_assert_eq(tq_quantizer_init(&q, 64, 5, TQ_VARIANT_MSE, TQ_CORRECTION_IP, 1, &err), TQ_EARG);
    cr_assert(strstr(err.msg, "5") != NULL, "%s", err.msg);
    cr_assert_eq(tq_quantizer_init(&q, 64, 2, (tq_variant)7, TQ_CORRECTION_IP, 1, &err), TQ_EARG);
    cr_assert_eq(tq_quantizer_init(&q, 1, 2, TQ_VARIANT_MSE, TQ_CORRECTION_IP, 1, &err), TQ_EDIM);
}

/* A block of 32 rows of random codes (d up to 1000) put in with layout L,
 * each row read back whole and checked against what went in. */
static uint8_t *round_trip_block(const tq_scan_layout *L, unsigned bits, tq_rng *r, uint8_t codes[32][1000])
{
    uint8_t *block = tq_calloc(1, L->block_bytes), back[1000];
    for (int v = 0; v < 32; v++) {
        for (uint32_t j = 0; j < L->d; j++)
            codes[v][j] = (uint8_t)(tq_rng_next(r) % (1u << bits));
        tq_scan_put(L, block, (unsigned)v, codes[v]);
    }
    for (int v = 0; v < 32; v++) {
        tq_scan_get(L, block, (unsigned)v, back);
        cr_assert(!memcmp(back, codes[v], L->d), "%s layout, bits %u d %u vector %d round trip",
                  L->sextets ? "sextet" : "nibble", bits, L->d, v);
    }
    return block;
}

/* The layout of storage format 1 (a 3-bit code in a whole nibble), which
 * only reading old files uses: codes go in and come back out. */
Test(scan, format1_layout_round_trip)
{
    static const uint32_t dims[] = {1, 2, 3, 7, 8, 9, 50, 128, 129};
    tq_rng r;
    tq_rng_seed(&r, 78);
    for (unsigned bits = 1; bits <= 4; bits++)
        for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
            const uint32_t d = dims[di];
            tq_scan_layout L;
            tq_scan_layout_init_format1(&L, d, bits);
            cr_assert(!L.sextets);
            uint8_t codes[32][1000];
            tq_free(round_trip_block(&L, bits, &r, codes));
        }
}

/* Both scan layouts at many dimensions: codes go in and come back out; a
 * cleared row reads as zero codes; the float tables give sum_j q_j t[c_j];
 * and the 8-bit kernel sums reproduce it within half a table step per
 * lookup (the bound the scan layout states). */
Test(scan, layouts_round_trip_and_tables_agree)
{
    static const uint32_t dims[] = {2, 3, 7, 8, 9, 15, 16, 17, 50, 100, 128, 129, 384, 1000};
    tq_rng r;
    tq_rng_seed(&r, 77);
    const float table[16] = {-1.5f, -1.0f, -0.6f, -0.25f, 0.25f, 0.6f, 1.0f, 1.5f,
                             -0.1f, 0.1f, 0.3f, 0.7f, 1.1f, 1.3f, 1.7f, 2.0f};
    for (unsigned bits = 1; bits <= 4; bits++)
        for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
            const uint32_t d = dims[di];
            tq_scan_layout L;
            tq_scan_layout_init(&L, d, bits);
            cr_assert_eq(L.sextets, bits == 3);
            cr_assert_eq(L.block_bytes, L.units * L.unit_bytes);
            if (bits == 3)
                cr_assert_eq(L.block_bytes / 32, 3 * ((d + 7) / 8), "3 bits a coordinate, d=%u", d);
            else
                cr_assert_eq(L.block_bytes / 32, L.npairs, "one byte per nibble pair");
            uint8_t codes[32][1000], back[1000];
            uint8_t *block = round_trip_block(&L, bits, &r, codes);
            /* Tables: a random query, every vector's float-table sum and
             * its kernel sum against the direct sum. */
            float q[1000];
            for (uint32_t j = 0; j < d; j++)
                q[j] = (float)tq_rng_gauss(&r);
            tq_scan_lut lut;
            cr_assert_eq(tq_scan_lut_init(&lut, &L), TQ_OK);
            tq_scan_lut_build(&L, table, q, &lut);
            const uint8_t *tables[1] = {lut.q8};
            uint32_t sums[32];
            if (L.sextets)
                tq_simd()->scan6_block_multi(block, L.units, tables, 1, sums);
            else
                tq_simd()->scan_block_multi(block, L.units, tables, 1, sums);
            for (int v = 0; v < 32; v++) {
                double want = 0.0, mag = 0.0;
                for (uint32_t j = 0; j < d; j++) {
                    want += (double)q[j] * table[codes[v][j]];
                    mag += fabs((double)q[j] * table[codes[v][j]]);
                }
                float exact = tq_scan_lut_exact(&L, &lut, block, (unsigned)v);
                cr_assert(fabs(exact - want) <= 1e-5 * (mag + 1.0), "bits %u d %u vector %d: %g vs %g", bits, d,
                          v, (double)exact, want);
                if (!L.sextets) {
                    /* The entries it computes from the query are the float
                     * tables' own, bit for bit: the sum of the vector's
                     * table entries in the same chains is the same float. */
                    float chain[8] = {0};
                    for (uint32_t t = 0; t < L.lookups; t++) {
                        const unsigned byte = block[32 * (t / 2) + (unsigned)v], x = t % 2 ? byte >> 4 : byte & 15u;
                        chain[t % 8] = chain[t % 8] + lut.f[16 * (size_t)t + x];
                    }
                    const float from_tables = ((chain[0] + chain[1]) + (chain[2] + chain[3])) +
                                              ((chain[4] + chain[5]) + (chain[6] + chain[7]));
                    cr_assert(!memcmp(&from_tables, &exact, sizeof(float)),
                              "bits %u d %u vector %d: %a from the query, %a from the tables", bits, d, v,
                              (double)exact, (double)from_tables);
                }
                double coarse = (double)lut.delta * sums[v] + lut.bias;
                cr_assert(fabs(coarse - want) <= 0.5 * lut.delta * L.lookups + 1e-4 * (mag + 1.0),
                          "bits %u d %u vector %d: 8-bit sum %g vs %g (step %g)", bits, d, v, coarse, want,
                          (double)lut.delta);
            }
            tq_scan_clear(&L, block, 5);
            tq_scan_get(&L, block, 5, back);
            for (uint32_t j = 0; j < d; j++)
                cr_assert_eq(back[j], 0, "a cleared row reads as zero codes");
            tq_scan_get(&L, block, 6, back);
            cr_assert(!memcmp(back, codes[6], d), "clearing one row leaves the others");
            tq_scan_lut_free(&lut);
            tq_free(block);
        }
}

/* The vector codebook through the quantizer: the scan tables agree with
 * decode-and-dot (a last nibble short of coordinates keeping scalar
 * codes), the correction still makes <x, x> exact, codes are the same on
 * every SIMD level (nibble tables at 1 and 2 bits, sextet tables at 3),
 * and 4-bit codes are refused. */
Test(quantizer, vector_codebook_tables_decode_and_correction_agree)
{
    static const uint32_t dims[] = {2, 3, 4, 5, 7, 50, 77, 128, 300};
    static const struct {
        unsigned bits;
        tq_variant variant;
    } widths[] = {{1, TQ_VARIANT_MSE},  {2, TQ_VARIANT_MSE},  {2, TQ_VARIANT_PROD},
                  {3, TQ_VARIANT_PROD}, {3, TQ_VARIANT_MSE}, {4, TQ_VARIANT_PROD}};
    const tq_simd_level best = tq_simd_best_level();
    coded *c = tq_malloc(sizeof(coded)), *other = tq_malloc(sizeof(coded));
    tq_rng r;
    tq_rng_seed(&r, 21);
    for (size_t w = 0; w < sizeof(widths) / sizeof(widths[0]); w++)
        for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
            const uint32_t d = dims[di];
            const unsigned mse_bits = widths[w].bits - (widths[w].variant == TQ_VARIANT_PROD);
            tq_quantizer q;
            tq_error err;
            cr_assert_eq(tq_quantizer_init(&q, d, widths[w].bits, widths[w].variant, TQ_CORRECTION_IP, 4, NULL), TQ_OK);
            const unsigned per = tq_vector_codebook_dims(mse_bits);
            if (d < per) {
                cr_assert_eq(tq_quantizer_use_vector_codebook(&q, &err), TQ_EARG, "d=%u", d);
                tq_quantizer_free(&q);
                continue;
            }
            cr_assert_eq(tq_quantizer_use_vector_codebook(&q, &err), TQ_OK, "%s", err.msg);
            cr_assert_eq(q.vq_coords, d / per * per);
            cr_assert_eq(q.code_layout.sextets, mse_bits == 3);
            tq_qscratch s;
            tq_query pq;
            cr_assert_eq(tq_qscratch_init(&s, d), TQ_OK);
            cr_assert_eq(tq_query_init(&pq, &q), TQ_OK);
            float *x = tq_malloc(2 * d * sizeof(float)), *y = x + d;
            uint8_t *block = tq_calloc(1, q.code_layout.block_bytes);
            for (int trial = 0; trial < 8; trial++) {
                random_unit(&r, x, d);
                for (uint32_t j = 0; j < d; j++)
                    x[j] *= 3.0f;
                tq_simd_force(TQ_SIMD_SCALAR);
                memset(other, 0, sizeof(*other));
                tq_quantizer_encode(&q, x, &s, other->code, other->signs, &other->sc);
                tq_simd_force(best);
                memset(c, 0, sizeof(*c));
                tq_quantizer_encode(&q, x, &s, c->code, c->signs, &c->sc);
                cr_assert(!memcmp(c, other, sizeof(*c)), "d=%u b=%u: codes differ between scalar and %s", d,
                          widths[w].bits, tq_simd_level_name(best));
                /* self inner product, exact by the correction */
                tq_quantizer_prepare(&q, x, &pq);
                const double self = (double)c->sc.norm * tq_quantizer_estimate(&q, &pq, c->code, c->signs, &c->sc);
                cr_assert(fabs(self / 9.0 - 1.0) < 1e-4, "d=%u b=%u: <x,x> estimate %g, want 9", d, widths[w].bits,
                          self);
                /* tables against decode-and-dot, for another query */
                for (uint32_t j = 0; j < d; j++)
                    y[j] = (float)tq_rng_gauss(&r);
                tq_quantizer_prepare(&q, y, &pq);
                tq_scan_put(&q.code_layout, block, 3, c->code);
                tq_scan_get(&q.code_layout, block, 3, other->code);
                cr_assert(!memcmp(other->code, c->code, d), "d=%u: codes round trip through the layout", d);
                float *u = tq_malloc(d * sizeof(float));
                tq_code_scalars unit = {.norm = 1.0f, .corr = 1.0f, .rnorm = 0.0f};
                tq_quantizer vq_only = q;
                vq_only.variant = TQ_VARIANT_MSE; /* the scalar part alone */
                tq_quantizer_decode(&vq_only, c->code, NULL, &unit, u, &s);
                tq_rotation_apply(&q.rot, u); /* back to the rotated frame the tables live in */
                double want = 0.0, mag = 0.0;
                for (uint32_t j = 0; j < d; j++) {
                    want += (double)pq.qr[j] * u[j];
                    mag += fabs((double)pq.qr[j] * u[j]);
                }
                const float exact = tq_scan_lut_exact(&q.code_layout, &pq.code_lut, block, 3);
                cr_assert(fabs(exact - want) <= 1e-4 * (mag + 1.0), "d=%u b=%u: table sum %g, decode %g", d,
                          widths[w].bits, (double)exact, want);
                const tq_scan_lut *t = &pq.code_lut;
                uint32_t sums[32];
                const uint8_t *tables[1] = {t->q8};
                (q.code_layout.sextets ? tq_simd()->scan6_block_multi
                                       : tq_simd()->scan_block_multi)(block, q.code_layout.units, tables, 1, sums);
                const double coarse = (double)t->delta * sums[3] + t->bias;
                cr_assert(fabs(coarse - want) <= 0.5 * t->delta * q.code_layout.lookups + 1e-4 * (mag + 1.0),
                          "d=%u b=%u: 8-bit sum %g vs %g", d, widths[w].bits, coarse, want);
                tq_free(u);
            }
            tq_free(block);
            tq_free(x);
            tq_query_free(&pq);
            tq_qscratch_free(&s);
            tq_quantizer_free(&q);
        }
    tq_free(c);
    tq_free(other);
    /* 4-bit scalar codes have no vector codebook */
    {
        tq_quantizer q;
        tq_error err;
        cr_assert_eq(tq_quantizer_init(&q, 64, 4, TQ_VARIANT_MSE, TQ_CORRECTION_IP, 1, NULL), TQ_OK);
        cr_assert_eq(tq_quantizer_use_vector_codebook(&q, &err), TQ_EARG);
        cr_assert(strstr(err.msg, "vector codebook") != NULL, "%s", err.msg);
        tq_quantizer_free(&q);
    }
}
