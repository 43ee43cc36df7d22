/*
 * checkasm-style equivalence: every kernel of every SIMD level this CPU has
 * is run against the scalar reference on random and extreme inputs, and must
 * give the same bits. A level the CPU lacks is a visible skip, never a pass.
 *
 * Sizes cover n = 1 up to 16384, sizes that are not a multiple of any vector
 * width, and the boundaries of the masked tails.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include <sys/mman.h>
#include <unistd.h>

#include "tq_index.h"

static const size_t sizes[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 128, 129,
                               255, 384, 784, 1000, 1536, 4096, 16384};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
static const size_t pow2_sizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
#define NPOW2 (sizeof(pow2_sizes) / sizeof(pow2_sizes[0]))

/* Random floats, with a few extreme values mixed in when `extreme`: large
 * and tiny magnitudes, signed zeros, exact halves. */
static void fill(float *x, size_t n, tq_rng *r, bool extreme)
{
    static const float specials[] = {0.0f, -0.0f, 1e30f, -1e30f, 1e-30f, -1e-30f, 0.5f, -0.5f, 3.0e38f, 1.0f};
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(tq_rng_gauss(r) * 3.0);
        if (extreme && tq_rng_next(r) % 7 == 0)
            x[i] = specials[tq_rng_next(r) % 10];
    }
}

static const tq_simd_kernels *level_or_skip(tq_simd_level level)
{
    const tq_simd_kernels *k = tq_simd_table(level);
    if (!k)
        cr_skip_test("SIMD level %s is not available on this CPU or build", tq_simd_level_name(level));
    return k;
}

static bool same_bits_f(float a, float b)
{
    return memcmp(&a, &b, sizeof(float)) == 0;
}

static bool same_bits_d(double a, double b)
{
    return memcmp(&a, &b, sizeof(double)) == 0;
}

static void check_fwht(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    tq_rng r;
    tq_rng_seed(&r, 1);
    float *a = tq_malloc(16384 * sizeof(float)), *b = tq_malloc(16384 * sizeof(float));
    float *signs = tq_malloc(16384 * sizeof(float));
    for (size_t i = 0; i < 16384; i++)
        signs[i] = tq_rng_next(&r) & 1 ? -1.0f : 1.0f;
    for (size_t s = 0; s < NPOW2; s++)
        for (int variant = 0; variant < 3; variant++) {
            size_t n = pow2_sizes[s];
            fill(a, n, &r, variant == 2);
            memcpy(b, a, n * sizeof(float));
            const float *sg = variant == 0 ? NULL : signs;
            float scale = variant == 1 ? 1.0f : 0.03125f * 1.4142135f;
            ref->fwht(a, n, sg, scale);
            k->fwht(b, n, sg, scale);
            for (size_t i = 0; i < n; i++)
                cr_assert(same_bits_f(a[i], b[i]), "fwht %s n=%zu variant %d: [%zu] %a vs scalar %a",
                          tq_simd_level_name(level), n, variant, i, (double)b[i], (double)a[i]);
        }
    tq_free(a);
    tq_free(b);
    tq_free(signs);
}

static void check_elementwise(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    tq_rng r;
    tq_rng_seed(&r, 2);
    float *a = tq_malloc(16384 * sizeof(float)), *b = tq_malloc(16384 * sizeof(float));
    float *y = tq_malloc(16384 * sizeof(float));
    for (size_t s = 0; s < NSIZES; s++) {
        size_t n = sizes[s];
        fill(a, n, &r, true);
        fill(y, n, &r, true);
        memcpy(b, a, n * sizeof(float));
        ref->mul(a, y, n);
        k->mul(b, y, n);
        cr_assert(memcmp(a, b, n * sizeof(float)) == 0, "mul %s n=%zu", tq_simd_level_name(level), n);
        ref->scale(a, n, -0.3f);
        k->scale(b, n, -0.3f);
        cr_assert(memcmp(a, b, n * sizeof(float)) == 0, "scale %s n=%zu", tq_simd_level_name(level), n);
    }
    tq_free(a);
    tq_free(b);
    tq_free(y);
}

static void check_reductions(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    tq_rng r;
    tq_rng_seed(&r, 3);
    float *a = tq_malloc(16384 * sizeof(float)), *b = tq_malloc(16384 * sizeof(float));
    uint16_t *h = tq_malloc(16384 * sizeof(uint16_t));
    for (size_t s = 0; s < NSIZES; s++)
        for (int extreme = 0; extreme < 2; extreme++) {
            size_t n = sizes[s];
            fill(a, n, &r, extreme);
            fill(b, n, &r, extreme);
            const char *lv = tq_simd_level_name(level);
            cr_assert(same_bits_f(ref->dot(a, b, n), k->dot(a, b, n)), "dot %s n=%zu", lv, n);
            cr_assert(same_bits_f(ref->l2sq(a, b, n), k->l2sq(a, b, n)), "l2sq %s n=%zu", lv, n);
            cr_assert(same_bits_d(ref->dot_f64(a, b, n), k->dot_f64(a, b, n)), "dot_f64 %s n=%zu", lv, n);
            cr_assert(same_bits_d(ref->l2sq_f64(a, b, n), k->l2sq_f64(a, b, n)), "l2sq_f64 %s n=%zu", lv, n);
            /* b in half precision: the one-pass kernels equal widening
             * first, on every level */
            ref->float_to_half(b, h, n);
            ref->half_to_float(h, b, n);
            const float want_dot = ref->dot(a, b, n), want_l2 = ref->l2sq(a, b, n);
            cr_assert(same_bits_f(ref->dot_half(a, h, n), want_dot), "scalar dot_half n=%zu", n);
            cr_assert(same_bits_f(ref->l2sq_half(a, h, n), want_l2), "scalar l2sq_half n=%zu", n);
            cr_assert(same_bits_f(k->dot_half(a, h, n), want_dot), "dot_half %s n=%zu", lv, n);
            cr_assert(same_bits_f(k->l2sq_half(a, h, n), want_l2), "l2sq_half %s n=%zu", lv, n);
        }
    /* A sum of signed zeros keeps its sign only if untouched lanes stay
     * untouched: -0 * 1 summed over 3 elements is -0 on every path. */
    for (size_t i = 0; i < 3; i++) {
        a[i] = -0.0f;
        b[i] = 1.0f;
    }
    cr_assert(same_bits_f(k->dot(a, b, 3), ref->dot(a, b, 3)), "signed zero dot");
    tq_free(a);
    tq_free(b);
    tq_free(h);
}

static void check_quantize_pack(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    tq_rng r;
    tq_rng_seed(&r, 4);
    float *x = tq_malloc(16384 * sizeof(float));
    uint8_t *ca = tq_malloc(16384), *cb = tq_malloc(16384);
    uint8_t *pa = tq_malloc(16384 + TQ_CODE_PAD), *pb = tq_malloc(16384 + TQ_CODE_PAD);
    for (unsigned bits = 1; bits <= 8; bits++) {
        const tq_codebook *cbk = tq_codebook_get(128, bits);
        cr_assert_not_null(cbk);
        for (size_t s = 0; s < NSIZES; s++) {
            size_t n = sizes[s];
            for (size_t i = 0; i < n; i++) {
                x[i] = (float)(tq_rng_gauss(&r) / sqrt(128.0));
                /* Values exactly on a bound, and beyond the outermost. */
                if (i % 5 == 0)
                    x[i] = cbk->bound_f[tq_rng_next(&r) % (cbk->levels - 1)];
                if (i % 11 == 0)
                    x[i] = i % 2 ? 10.0f : -10.0f;
            }
            ref->quantize(x, n, cbk->bound_f, cbk->levels - 1, ca);
            k->quantize(x, n, cbk->bound_f, cbk->levels - 1, cb);
            cr_assert(memcmp(ca, cb, n) == 0, "quantize %s bits=%u n=%zu", tq_simd_level_name(level), bits, n);
            size_t nbytes = (n * bits + 7) / 8;
            memset(pa, 0xAA, nbytes + TQ_CODE_PAD);
            memset(pb, 0xAA, nbytes + TQ_CODE_PAD);
            ref->pack(ca, n, bits, pa);
            k->pack(ca, n, bits, pb);
            cr_assert(memcmp(pa, pb, nbytes + TQ_CODE_PAD) == 0, "pack %s bits=%u n=%zu (or wrote past the end)",
                      tq_simd_level_name(level), bits, n);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(tq_code_at(pa, i, bits), ca[i], "pack/unpack bits=%u n=%zu i=%zu", bits, n, i);
        }
    }
    tq_free(x);
    tq_free(ca);
    tq_free(cb);
    tq_free(pa);
    tq_free(pb);
}

static void check_dot_codes(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    tq_rng r;
    tq_rng_seed(&r, 5);
    const size_t rows = 5;
    float *q = tq_malloc(16384 * sizeof(float));
    uint8_t *codes = tq_malloc(rows * 16384 / 2 + TQ_CODE_PAD);
    float table[16], oa[5], ob[5];
    for (unsigned bits = 1; bits <= 4; bits++)
        for (size_t s = 0; s < NSIZES; s++)
            for (int extreme = 0; extreme < 2; extreme++) {
                size_t d = sizes[s], stride = (d * bits + 7) / 8;
                fill(q, d, &r, extreme);
                for (int i = 0; i < 16; i++)
                    table[i] = extreme ? (i % 2 ? 3.0e38f : -1e-38f) : (float)tq_rng_gauss(&r);
                /* All-max codes on the extreme pass, random otherwise. */
                for (size_t i = 0; i < rows * stride + TQ_CODE_PAD; i++)
                    codes[i] = extreme ? 0xFF : (uint8_t)tq_rng_next(&r);
                ref->dot_codes(codes, rows, stride, bits, table, q, d, oa);
                k->dot_codes(codes, rows, stride, bits, table, q, d, ob);
                for (size_t i = 0; i < rows; i++)
                    cr_assert(same_bits_f(oa[i], ob[i]) || (isnan(oa[i]) && isnan(ob[i])),
                              "dot_codes %s bits=%u d=%zu row %zu: %a vs scalar %a", tq_simd_level_name(level),
                              bits, d, i, (double)ob[i], (double)oa[i]);
            }
    tq_free(q);
    tq_free(codes);
}

static void check_dot_u8(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    tq_rng r;
    tq_rng_seed(&r, 7);
    float *q = tq_malloc(16384 * sizeof(float)), table[256];
    uint8_t *codes = tq_malloc(16384);
    for (size_t s = 0; s < NSIZES; s++)
        for (int extreme = 0; extreme < 2; extreme++) {
            size_t d = sizes[s];
            fill(q, d, &r, extreme);
            fill(table, 256, &r, extreme);
            for (size_t j = 0; j < d; j++)
                codes[j] = extreme ? (uint8_t)(j % 2 ? 255 : 0) : (uint8_t)tq_rng_next(&r);
            float a = ref->dot_u8(codes, table, q, d), b = k->dot_u8(codes, table, q, d);
            cr_assert(same_bits_f(a, b) || (isnan(a) && isnan(b)), "dot_u8 %s d=%zu: %a vs scalar %a",
                      tq_simd_level_name(level), d, (double)b, (double)a);
        }
    tq_free(q);
    tq_free(codes);
}

/* Three scan blocks that end where an unreadable page begins: a kernel
 * reading past a block's last byte faults instead of passing. */
static uint8_t *guarded_blocks(size_t bytes, void **map, size_t *map_len)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), len = (bytes + page - 1) / page * page + page;
    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(m != MAP_FAILED);
    cr_assert(mprotect(m + len - page, page, PROT_NONE) == 0);
    *map = m;
    *map_len = len;
    return m + len - page - bytes;
}

/* nibble_dots on rows of three random blocks in a shuffled order with
 * repeats, counts odd and even (the kernels take two rows at a time), for
 * both layouts of one code a nibble (4 and 3 bits; several codes are
 * looked up by one function on every path, tq_nibble_lookups): pair
 * counts that end before, at and past d (odd counts too, and d not a
 * multiple of the 8- and 16-lane steps), random and extreme queries,
 * centroids and tables (signed zeros among them). The blocks end at an unreadable
 * page, so the rows whose last byte is a block's last (rows 29..31 of the
 * last block) are read without a byte past it. */
static void check_nibble_rows(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    enum { NBLOCKS = 3, NROWS = 101 };
    static const size_t counts[] = {1, 2, 3, 8, NROWS};
    static const unsigned layouts[][2] = {{1, 4}, {1, 3}};
    tq_rng r;
    tq_rng_seed(&r, 17);
    float *q = tq_malloc(16400 * sizeof(float)), table[16];
    for (size_t s = 0; s < NSIZES; s++)
        for (size_t l = 0; l < sizeof(layouts) / sizeof(layouts[0]); l++)
            for (size_t extra = 0; extra < 3; extra++) {
                const unsigned per = layouts[l][0], bits = layouts[l][1];
                const int extreme = (int)(extra % 2);
                const size_t d = sizes[s], nibbles = (d + per - 1) / per;
                const size_t npairs = (nibbles + 1) / 2 + extra, lookups = 2 * npairs, block_bytes = 32 * npairs;
                void *map;
                size_t map_len;
                uint8_t *blocks = guarded_blocks(NBLOCKS * block_bytes, &map, &map_len);
                fill(q, d, &r, extreme);
                for (size_t j = d; j < lookups; j++)
                    q[j] = 1e30f; /* past d: counts as nothing */
                fill(table, 16, &r, extreme);
                for (size_t i = 0; i < NBLOCKS * block_bytes; i++)
                    blocks[i] = (uint8_t)tq_rng_next(&r);
                const uint8_t *at[NROWS];
                uint8_t lanes[NROWS];
                for (size_t i = 0; i < NROWS; i++) {
                    /* every row of every block once (the last block's last
                     * rows first), then random ones again */
                    const size_t row = i < 32 * NBLOCKS ? 32 * NBLOCKS - 1 - (i * 37) % (32 * NBLOCKS)
                                                        : tq_rng_next(&r) % (32 * NBLOCKS);
                    at[i] = blocks + row / 32 * block_bytes;
                    lanes[i] = (uint8_t)(row % 32);
                }
                for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
                    const size_t n = counts[c];
                    float want[NROWS], got[NROWS];
                    ref->nibble_dots(at, lanes, n, npairs, q, table, d, bits, want);
                    k->nibble_dots(at, lanes, n, npairs, q, table, d, bits, got);
                    for (size_t i = 0; i < n; i++)
                        cr_assert(same_bits_f(want[i], got[i]) || (isnan(want[i]) && isnan(got[i])),
                                  "nibble_dots %s per=%u bits=%u d=%zu npairs=%zu n=%zu row %zu (lane %u): %a vs "
                                  "scalar %a",
                                  tq_simd_level_name(level), per, bits, d, npairs, n, i, lanes[i], (double)got[i],
                                  (double)want[i]);
                }
                munmap(map, map_len);
            }
    tq_free(q);
}

/* Every pair of a few vectors and centroids, each tile shape of the
 * kernels (and their edges) at sizes around the 8- and 16-lane steps: the
 * fast path's matrix is the scalar's bit for bit (every path fuses its
 * multiply-adds, so a lane's roundings are the same), and the scalar's is
 * the dot product to within the error of d fused roundings. */
static void check_dot_matrix(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    static const size_t dims[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 50, 100, 128, 384};
    tq_rng r;
    tq_rng_seed(&r, 11);
    const size_t nx = 9, nc = 11;
    float *x = tq_malloc(nx * 384 * sizeof(float)), *c = tq_malloc(nc * 384 * sizeof(float));
    float *want = tq_malloc(nx * nc * sizeof(float)), *got = tq_malloc(nx * nc * sizeof(float));
    for (size_t s = 0; s < sizeof(dims) / sizeof(dims[0]); s++)
        for (int extreme = 0; extreme < 2; extreme++) {
            const size_t d = dims[s];
            fill(x, nx * d, &r, extreme);
            fill(c, nc * d, &r, extreme);
            for (size_t m = 1; m <= nx; m += 4) /* 1, 5, 9 rows: whole tiles and remainders */
                for (size_t n = 1; n <= nc; n += 5) {
                    ref->dot_matrix(x, m, c, n, d, want);
                    k->dot_matrix(x, m, c, n, d, got);
                    for (size_t i = 0; i < m * n; i++) {
                        const float *xi = x + (i / n) * d, *cj = c + (i % n) * d;
                        double exact = 0.0, mag = 0.0;
                        for (size_t t = 0; t < d; t++) {
                            exact += (double)xi[t] * cj[t];
                            mag += fabs((double)xi[t] * cj[t]);
                        }
                        if (isfinite(mag) && mag < 1e37)
                            cr_assert(fabs(want[i] - exact) <= 1e-6 * (double)d * mag + 1e-30,
                                      "scalar dot_matrix d=%zu pair %zu: %a vs %a", d, i, (double)want[i], exact);
                        cr_assert(same_bits_f(want[i], got[i]) || (isnan(got[i]) && isnan(want[i])),
                                  "dot_matrix %s d=%zu %zux%zu pair %zu: %a vs scalar %a",
                                  tq_simd_level_name(level), d, m, n, i, (double)got[i], (double)want[i]);
                    }
                }
        }
    tq_free(x);
    tq_free(c);
    tq_free(want);
    tq_free(got);
}

/* 8-bit queries against blocks of 16 8-bit vectors, four dimensions at a
 * time: every level gives each lane's exact integer sum, one to six
 * queries at once (the kernels take them by fours), with the extremes (255
 * times -127 in every term) at the longest dimension. */
static void check_dot_q8_blocks(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    static const size_t dims[] = {1, 2, 7, 16, 50, 100, 384, 16384};
    tq_rng r;
    tq_rng_seed(&r, 12);
    enum { most = 7, most_q = 6 }; /* blocks: whole groups of 4 and remainders */
    uint8_t *q = tq_malloc(most_q * 16384);
    int8_t *t = tq_malloc(most * 16384 * 16);
    int32_t *want = tq_malloc(most_q * most * 16 * sizeof(int32_t)), *got = tq_malloc(most_q * most * 16 * sizeof(int32_t));
    for (size_t s = 0; s < sizeof(dims) / sizeof(dims[0]); s++)
        for (int extreme = 0; extreme < 2; extreme++) {
            const size_t d = dims[s], groups = (d + 3) / 4;
            for (size_t j = 0; j < most_q * 4 * groups; j++)
                q[j] = extreme ? 255 : (uint8_t)(tq_rng_next(&r) & 255);
            for (size_t i = 0; i < most * groups * 64; i++)
                t[i] = extreme ? (int8_t)(i % 2 ? -127 : 127) : (int8_t)((int)(tq_rng_next(&r) % 255) - 127);
            for (size_t nq = 1; nq <= most_q; nq++)
                for (size_t nb = 1; nb <= most; nb++) {
                    ref->dot_q8_blocks(q, nq, t, nb, groups, want);
                    k->dot_q8_blocks(q, nq, t, nb, groups, got);
                    for (size_t i = 0; i < nq * nb * 16; i++) {
                        const size_t qi = i / (nb * 16), lane = i % (nb * 16);
                        int64_t exact = 0;
                        for (size_t j = 0; j < 4 * groups; j++)
                            exact += (int64_t)q[qi * 4 * groups + j] *
                                     t[(((lane / 16) * groups + j / 4) * 16 + lane % 16) * 4 + j % 4];
                        cr_assert_eq(want[i], exact, "scalar dot_q8_blocks d=%zu query %zu lane %zu: %d, exactly %lld",
                                     d, qi, lane, want[i], (long long)exact);
                        cr_assert_eq(got[i], want[i],
                                     "dot_q8_blocks %s d=%zu queries %zu blocks %zu query %zu lane %zu: %d vs scalar %d",
                                     tq_simd_level_name(level), d, nq, nb, qi, lane, got[i], want[i]);
                    }
                }
        }
    tq_free(q);
    tq_free(t);
    tq_free(want);
    tq_free(got);
}

/* The best of a block's 8-bit sums: every level picks the scalar loop's
 * index, ties to the lowest, with and without a penalty, at lengths around
 * the vector widths, with runs of equal scores and far-apart extremes. */
/* argmax_q8's score of entry i, as the kernels round it. */
static float q8_score(const int32_t *dots, const int32_t *sums, const float *penalty, float unit, size_t i)
{
    return unit * (float)(dots[i] - 128 * sums[i]) - (penalty ? penalty[i] : 0.0f);
}

static void check_argmax_q8(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    enum { most = 300 };
    static const size_t lengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 255, most};
    int32_t dots[most], sums[most];
    float penalty[most];
    tq_rng r;
    tq_rng_seed(&r, 13);
    for (int trial = 0; trial < 200; trial++) {
        /* few distinct values (trial % 3 == 0) make ties common */
        const uint32_t spread = trial % 3 == 0 ? 4 : 1u << 20;
        for (size_t i = 0; i < most; i++) {
            dots[i] = (int32_t)(tq_rng_next(&r) % spread) - (int32_t)(spread / 2);
            sums[i] = trial % 3 == 0 ? 0 : (int32_t)(tq_rng_next(&r) % 4096) - 2048;
            penalty[i] = trial % 3 == 0 ? 0.5f * (float)(tq_rng_next(&r) % 2) : (float)tq_rng_gauss(&r) * 1000.0f;
        }
        if (trial % 5 == 1) /* the extremes the kernel's range allows */
            for (size_t i = 0; i < most; i++) {
                dots[i] = i % 2 ? 255 * 127 * 16384 : -255 * 127 * 16384;
                sums[i] = i % 3 ? 127 * 16384 : -127 * 16384;
            }
        const float unit = trial % 2 ? 0.001f : 3.5f;
        for (size_t s = 0; s < sizeof(lengths) / sizeof(lengths[0]); s++)
            for (int with = 0; with < 2; with++) {
                const size_t n = lengths[s];
                const float *pen = with ? penalty : NULL;
                const uint32_t want = ref->argmax_q8(dots, sums, pen, unit, n);
                /* the specification: no score above it, none equal before it */
                cr_assert(n == 0 ? want == 0 : want < n, "scalar argmax_q8 n=%zu: %u", n, want);
                for (size_t i = 0; i < n; i++) {
                    const float mine = q8_score(dots, sums, pen, unit, want), other = q8_score(dots, sums, pen, unit, i);
                    cr_assert(other < mine || (other == mine && i >= want), "scalar argmax_q8 n=%zu: %u, but %zu", n,
                              want, i);
                }
                const uint32_t got = k->argmax_q8(dots, sums, pen, unit, n);
                cr_assert_eq(got, want, "argmax_q8 %s trial %d n=%zu penalty %d: %u vs scalar %u",
                             tq_simd_level_name(level), trial, n, with, got, want);
            }
    }
}

/* Every half value to float, and float bit patterns across every exponent
 * (with the rounding-tie and overflow edges) to half: each level gives the
 * scalar reference's bits. */
static void check_half(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    enum { N = 65536 + 37 }; /* not a multiple of any vector width */
    uint16_t *h = tq_malloc(N * sizeof(uint16_t)), *ha = tq_malloc(N * sizeof(uint16_t)),
             *hb = tq_malloc(N * sizeof(uint16_t));
    float *fa = tq_malloc(N * sizeof(float)), *fb = tq_malloc(N * sizeof(float));
    for (size_t i = 0; i < N; i++)
        h[i] = (uint16_t)i;
    ref->half_to_float(h, fa, N);
    k->half_to_float(h, fb, N);
    for (size_t i = 0; i < N; i++)
        cr_assert(same_bits_f(fa[i], fb[i]), "half_to_float %s of 0x%04zx: %a vs scalar %a",
                  tq_simd_level_name(level), i % 65536, (double)fb[i], (double)fa[i]);
    tq_rng r;
    tq_rng_seed(&r, 16);
    for (size_t i = 0; i < N; i++) {
        uint32_t bits = (uint32_t)tq_rng_next(&r);
        if (i % 4 == 1)
            bits = (bits & 0x80000000u) | ((uint32_t)(100 + i % 60) << 23) | (bits & 0x1fffu) | 0x1000u; /* ties */
        if (i % 4 == 2)
            bits = (bits & 0x80000000u) | (0x477fe000u + (uint32_t)(i % 8192)); /* around 65504 */
        memcpy(&fa[i], &bits, 4);
        if (isnan(fa[i]))
            fa[i] = 0.0f; /* NaN payloads are not part of the contract */
    }
    ref->float_to_half(fa, ha, N);
    k->float_to_half(fa, hb, N);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(ha[i], hb[i], "float_to_half %s of %a: 0x%04x vs scalar 0x%04x", tq_simd_level_name(level),
                     (double)fa[i], hb[i], ha[i]);
    tq_free(h);
    tq_free(ha);
    tq_free(hb);
    tq_free(fa);
    tq_free(fb);
}

/* Query tables in the kernels' layout from one 16-byte table per nibble
 * (plain[16t + c]): each copied twice, absent nibbles of the last group 0. */
static void arrange_tables(const uint8_t *plain, size_t npairs, uint8_t *lut)
{
    memset(lut, 0xA5, TQ_SCAN_LUT_BYTES(npairs)); /* any byte left unwritten shows */
    for (size_t t = 0; t < 2 * npairs; t++) {
        memcpy(lut + tq_scan_lut_offset(t), plain + 16 * t, 16);
        memcpy(lut + tq_scan_lut_offset(t) + 16, plain + 16 * t, 16);
    }
    if (npairs % 2) {
        memset(lut + tq_scan_lut_offset(2 * npairs), 0, 32);
        memset(lut + tq_scan_lut_offset(2 * npairs + 1), 0, 32);
    }
}

static void check_scan_block(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    /* Pair counts around the 16-bit flush interval and up to d = 16384 at
     * 4 bits (8192 pairs). */
    static const size_t npairs[] = {1, 2, 3, 4, 7, 64, 127, 128, 129, 255, 256, 257, 1000, 8192};
    tq_rng r;
    tq_rng_seed(&r, 6);
    uint8_t *block = tq_malloc(32 * 8192), *plain = tq_malloc(32 * 8192);
    uint8_t *lut[TQ_SCAN_MAX_QUERIES];
    for (int i = 0; i < TQ_SCAN_MAX_QUERIES; i++)
        lut[i] = tq_malloc(TQ_SCAN_LUT_BYTES(8192));
    uint32_t a[32], b[32], multi[32 * TQ_SCAN_MAX_QUERIES];
    for (size_t s = 0; s < sizeof(npairs) / sizeof(npairs[0]); s++)
        for (int kind = 0; kind < 3; kind++) {
            size_t np = npairs[s];
            for (size_t i = 0; i < 32 * np; i++)
                /* kind 0 random; 1 all-max codes and tables (the overflow
                 * case: TQ_SCAN_LUT_MAX per entry); 2 random codes, max
                 * tables. */
                block[i] = kind == 1 ? 0xFF : (uint8_t)tq_rng_next(&r);
            for (int qi = 0; qi < TQ_SCAN_MAX_QUERIES; qi++) {
                for (size_t i = 0; i < 32 * np; i++)
                    plain[i] = kind == 0 ? (uint8_t)(tq_rng_next(&r) % (TQ_SCAN_LUT_MAX + 1)) : TQ_SCAN_LUT_MAX;
                arrange_tables(plain, np, lut[qi]);
            }
            ref->scan_block(block, np, lut[0], a);
            k->scan_block(block, np, lut[0], b);
            for (int v = 0; v < 32; v++)
                cr_assert_eq(a[v], b[v], "scan_block %s npairs=%zu kind %d vector %d: %u vs scalar %u",
                             tq_simd_level_name(level), np, kind, v, b[v], a[v]);
            if (kind == 1)
                cr_assert_eq(a[0], TQ_SCAN_LUT_MAX * 2u * np, "all-max sum is TQ_SCAN_LUT_MAX per nibble");
            /* Every query count of the multi-query kernel: query i's sums
             * equal the single-query reference with its own tables. */
            for (size_t nq = 1; nq <= TQ_SCAN_MAX_QUERIES; nq++) {
                k->scan_block_multi(block, np, (const uint8_t *const *)lut, nq, multi);
                for (size_t qi = 0; qi < nq; qi++) {
                    ref->scan_block(block, np, lut[qi], a);
                    for (int v = 0; v < 32; v++)
                        cr_assert_eq(multi[32 * qi + v], a[v],
                                     "scan_block_multi %s npairs=%zu nq=%zu query %zu vector %d: %u vs %u",
                                     tq_simd_level_name(level), np, nq, qi, v, multi[32 * qi + v], a[v]);
                }
            }
        }
    tq_free(block);
    tq_free(plain);
    for (int i = 0; i < TQ_SCAN_MAX_QUERIES; i++)
        tq_free(lut[i]);
}

static void check_scan_lut_rows(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    tq_rng r;
    tq_rng_seed(&r, 14);
    float *q = tq_malloc(16384 * sizeof(float)), *a = tq_malloc(16 * 16384 * sizeof(float));
    float *b = tq_malloc(16 * 16384 * sizeof(float)), sel[4 * 64];
    /* Nibble rows (16 wide, 1, 2 or 4 coordinates) and sextet rows (64
     * wide, 2 coordinates). */
    static const unsigned shapes[][2] = {{1, 16}, {2, 16}, {4, 16}, {2, 64}};
    for (size_t sh = 0; sh < 4; sh++)
        for (size_t si = 0; si < NSIZES; si++) {
            const unsigned per = shapes[sh][0], width = shapes[sh][1];
            const size_t d = sizes[si], lookups = ((d + per - 1) / per + 3) & ~(size_t)3;
            if (lookups * width > 16 * 16384)
                continue;
            fill(q, d, &r, true);
            fill(sel, 4 * 64, &r, false);
            ref->scan_lut_rows(q, d, per, sel, width, lookups, a);
            k->scan_lut_rows(q, d, per, sel, width, lookups, b);
            for (size_t i = 0; i < width * lookups; i++)
                cr_assert(same_bits_f(a[i], b[i]) || (isnan(a[i]) && isnan(b[i])),
                          "scan_lut_rows %s per=%u width=%u d=%zu entry %zu: %a vs scalar %a",
                          tq_simd_level_name(level), per, width, d, i, (double)b[i], (double)a[i]);
            /* The reference against its definition on one entry. */
            float want = 0.0f + q[0] * sel[5];
            for (unsigned i = 1; i < per && i < d; i++)
                want = want + q[i] * sel[width * i + 5];
            cr_assert(same_bits_f(a[5], want) || (isnan(a[5]) && isnan(want)), "row 0 entry 5");
        }
    tq_free(q);
    tq_free(a);
    tq_free(b);
}

/* Rows of 64 (the sextet tables' width): the smallest entry and the
 * largest spread, with each row's extremes planted at every position. */
Test(row_extremes, rows_of_64_entries)
{
    enum { rows = 130 };
    tq_rng r;
    tq_rng_seed(&r, 16);
    float *f = tq_malloc(64 * rows * sizeof(float)), lo[rows + 1];
    for (size_t i = 0; i < 64 * (size_t)rows; i++)
        f[i] = (float)tq_rng_gauss(&r);
    float want_spread = 0.0f;
    for (size_t t = 0; t < rows; t++) {
        f[64 * t + t % 64] = -40.0f - (float)(t % 5);
        f[64 * t + (t * 7 + 11) % 64] = 30.0f + (float)(t % 9);
        const float spread = 70.0f + (float)(t % 9) + (float)(t % 5);
        want_spread = spread > want_spread ? spread : want_spread;
    }
    lo[rows] = 1234.0f;
    const float got = tq_row_extremes_scalar(f, rows, 64, lo);
    cr_assert_eq(got, want_spread, "spread %g, want %g", (double)got, (double)want_spread);
    for (size_t t = 0; t < rows; t++)
        cr_assert_eq(lo[t], -40.0f - (float)(t % 5), "row %zu: %g", t, (double)lo[t]);
    cr_assert_eq(lo[rows], 1234.0f, "writes only the rows asked");
    tq_free(f);
}

/* Row extremes against the scalar loop, at row counts around the
 * sixteen-row tree, with the extremes at every position of a row. */
static void check_row_extremes16(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    static const size_t counts[] = {0, 1, 15, 16, 17, 31, 32, 33, 192, 1000};
    tq_rng r;
    tq_rng_seed(&r, 15);
    float *f = tq_malloc(16 * 1000 * sizeof(float)), *a = tq_malloc(1001 * sizeof(float));
    float *b = tq_malloc(1001 * sizeof(float));
    for (size_t s = 0; s < sizeof(counts) / sizeof(counts[0]); s++) {
        const size_t n = counts[s];
        fill(f, 16 * n, &r, false);
        for (size_t t = 0; t < n; t++) {
            f[16 * t + t % 16] = -50.0f - (float)(t % 7);     /* the smallest at lane t mod 16 */
            f[16 * t + (t * 5 + 3) % 16] = 60.0f + (float)t; /* the largest elsewhere */
        }
        a[n] = b[n] = 1234.0f;
        const float sa = ref->row_extremes16(f, n, a), sb = k->row_extremes16(f, n, b);
        cr_assert(same_bits_f(sa, sb), "row_extremes16 %s rows=%zu spread %a vs scalar %a", tq_simd_level_name(level),
                  n, (double)sb, (double)sa);
        for (size_t t = 0; t < n; t++)
            cr_assert(same_bits_f(a[t], b[t]), "row_extremes16 %s rows=%zu row %zu: %a vs scalar %a",
                      tq_simd_level_name(level), n, t, (double)b[t], (double)a[t]);
        cr_assert(b[n] == 1234.0f, "writes only the rows asked");
        /* The reference against its definition. */
        if (n)
            cr_assert(a[n - 1] == -50.0f - (float)((n - 1) % 7) && sa >= 110.0f + (float)(n - 1) - 0.001f,
                      "reference rows=%zu: lo %g spread %g", n, (double)a[n - 1], (double)sa);
    }
    tq_free(f);
    tq_free(a);
    tq_free(b);
}

static void check_scan_lut_quantize(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    static const size_t counts[] = {2, 4, 6, 8, 10, 128, 258, 1536, 4096};
    tq_rng r;
    tq_rng_seed(&r, 11);
    float *f = tq_malloc(64 * 4096 * sizeof(float)), *lo = tq_malloc(4096 * sizeof(float));
    uint8_t *a = tq_malloc(64 * 4096), *b = tq_malloc(64 * 4096);
    for (unsigned width = 16; width <= 64; width *= 4)
        for (size_t s = 0; s < sizeof(counts) / sizeof(counts[0]); s++) {
            size_t n = counts[s];
            if (width == 64 && n % 4)
                continue; /* sextet tables come in whole groups */
            fill(f, width * n, &r, false);
            for (size_t t = 0; t < n; t++) {
                float *row = f + width * t;
                lo[t] = row[0];
                for (unsigned c = 1; c < width; c++)
                    lo[t] = row[c] < lo[t] ? row[c] : lo[t];
                /* Exact halves, entries below the offset and beyond the
                 * top: rounding and both clamps. */
                if (t % 5 == 1)
                    row[3] = lo[t] + 7.5f * 0.125f;
                if (t % 7 == 2)
                    row[5] = lo[t] - 1.0f;
                if (t % 3 == 0)
                    row[9] = lo[t] + 1000.0f;
            }
            const float inv = 8.0f; /* delta 1/8: exact halves above */
            size_t bytes = width == 16 ? TQ_SCAN_LUT_BYTES(n / 2) : 64 * n;
            memset(a, 0x5A, bytes);
            memset(b, 0xC3, bytes);
            ref->scan_lut_quantize(f, lo, n, width, inv, a);
            k->scan_lut_quantize(f, lo, n, width, inv, b);
            for (size_t i = 0; i < bytes; i++)
                cr_assert_eq(a[i], b[i], "scan_lut_quantize %s width=%u lookups=%zu byte %zu: %u vs scalar %u",
                             tq_simd_level_name(level), width, n, i, b[i], a[i]);
            /* The reference against its own definition. */
            for (size_t t = 0; t < n; t++)
                for (unsigned c = 0; c < width; c++) {
                    float v = (f[width * t + c] - lo[t]) * inv + 0.5f;
                    unsigned want = v <= 0.0f ? 0 : v >= TQ_SCAN_LUT_MAX ? TQ_SCAN_LUT_MAX : (unsigned)v;
                    if (width == 64) {
                        cr_assert_eq(a[64 * t + c], want, "sextet %zu entry %u", t, c);
                    } else {
                        cr_assert_eq(a[tq_scan_lut_offset(t) + c], want, "nibble %zu entry %u", t, c);
                        cr_assert_eq(a[tq_scan_lut_offset(t) + 16 + c], want, "second copy");
                    }
                }
        }
    tq_free(f);
    tq_free(lo);
    tq_free(a);
    tq_free(b);
}

/* The sextet scan (3-bit codes) of every query count against the scalar
 * reference, around the 16-bit widening interval and with all-max bytes
 * and tables (the overflow case); and the reference against sums taken
 * straight from the layout's definition. */
static void check_scan6(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    enum { NQ = TQ_SCAN_MAX_QUERIES, MAXG = 2048 };
    static const size_t groups[] = {1, 2, 3, 63, 64, 65, 127, 128, 129, 1000, 2048};
    tq_rng r;
    tq_rng_seed(&r, 15);
    uint8_t *block = tq_malloc(96 * MAXG), *lut[NQ];
    for (int i = 0; i < NQ; i++)
        lut[i] = tq_malloc(256 * MAXG);
    uint32_t want[NQ * 32], got[NQ * 32];
    for (size_t gi = 0; gi < sizeof(groups) / sizeof(groups[0]); gi++)
        for (int kind = 0; kind < 3; kind++) {
            const size_t g = groups[gi];
            for (size_t i = 0; i < 96 * g; i++)
                block[i] = kind == 1 ? 0xFF : (uint8_t)tq_rng_next(&r);
            for (int qi = 0; qi < NQ; qi++)
                for (size_t i = 0; i < 256 * g; i++)
                    lut[qi][i] = kind == 0 ? (uint8_t)(tq_rng_next(&r) % (TQ_SCAN_LUT_MAX + 1)) : TQ_SCAN_LUT_MAX;
            for (size_t nq = 1; nq <= NQ; nq++) {
                ref->scan6_block_multi(block, g, (const uint8_t *const *)lut, nq, want);
                k->scan6_block_multi(block, g, (const uint8_t *const *)lut, nq, got);
                for (size_t i = 0; i < 32 * nq; i++)
                    cr_assert_eq(got[i], want[i], "scan6 %s groups=%zu kind %d nq=%zu query %zu vector %zu: %u vs %u",
                                 tq_simd_level_name(level), g, kind, nq, i / 32, i % 32, got[i], want[i]);
            }
            if (kind == 1)
                cr_assert_eq(want[0], TQ_SCAN_LUT_MAX * 4u * g, "all-max sum is TQ_SCAN_LUT_MAX per sextet");
            /* Vector 7 of query 0 from the definition: sextet 4g+k (k < 3)
             * is the low 6 bits of plane k, sextet 4g+3 the top bits. */
            uint32_t sum = 0;
            for (size_t gg = 0; gg < g; gg++) {
                unsigned x[4] = {0, 0, 0, 0};
                for (int kk = 0; kk < 3; kk++) {
                    unsigned byte = block[96 * gg + 32 * kk + 7];
                    x[kk] = byte & 63u;
                    x[3] |= (byte >> 6) << (2 * kk);
                }
                for (int kk = 0; kk < 4; kk++)
                    sum += lut[0][256 * gg + 64 * kk + x[kk]];
            }
            cr_assert_eq(want[7], sum, "reference against the definition, groups=%zu", g);
        }
    tq_free(block);
    for (int i = 0; i < NQ; i++)
        tq_free(lut[i]);
}

static void check_block_select(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    enum { NQ = TQ_SCAN_MAX_QUERIES };
    tq_rng r;
    tq_rng_seed(&r, 12);
    uint32_t code_sum[NQ * 32], sign_sum[NQ * 32], ma[NQ], mb[NQ];
    float ka[NQ * 32], kb[NQ * 32], thr[NQ];
    tq_key_params params[NQ];
    const tq_key_params *pp[NQ] = {&params[0], &params[1], &params[2], &params[3]};
    /* Planes of norms, corrections and residual norms; an mse block has
     * only the first two, so for mse they end at an unreadable page. */
    void *map[2];
    size_t map_len[2];
    float *planes3 = (float *)(void *)guarded_blocks(96 * sizeof(float), &map[0], &map_len[0]);
    float *planes2 = (float *)(void *)guarded_blocks(64 * sizeof(float), &map[1], &map_len[1]);
    for (int trial = 0; trial < 300; trial++) {
        const bool prod = (trial / 3) % 2;
        float *scalars = prod ? planes3 : planes2;
        for (int v = 0; v < 32; v++) {
            scalars[v] = (float)fabs(tq_rng_gauss(&r)) * 10.0f;
            scalars[32 + v] = 1.0f + (float)tq_rng_gauss(&r) * 0.01f;
            if (prod)
                scalars[64 + v] = (float)fabs(tq_rng_gauss(&r)) * 0.3f;
        }
        const size_t nq = 1 + (size_t)trial % NQ;
        for (size_t i = 0; i < nq; i++) {
            for (int v = 0; v < 32; v++) {
                code_sum[32 * i + v] = (uint32_t)(tq_rng_next(&r) % (255u * 16384));
                sign_sum[32 * i + v] = (uint32_t)(tq_rng_next(&r) % (255u * 4096));
            }
            params[i] = (tq_key_params){.metric = (tq_key_metric)(trial % 3), .prod = prod,
                                        .code_delta = (float)fabs(tq_rng_gauss(&r)) * 1e-3f,
                                        .code_bias = (float)tq_rng_gauss(&r),
                                        .sign_delta = (float)fabs(tq_rng_gauss(&r)) * 1e-3f,
                                        .sign_bias = (float)tq_rng_gauss(&r), .qjl = 1.25f,
                                        .qq = 4.0f + (float)i, .bias = (float)tq_rng_gauss(&r), .qnorm = 2.0f};
            thr[i] = -INFINITY;
        }
        /* A threshold at one row's key splits the block; -inf takes all. */
        ref->block_select(code_sum, sign_sum, scalars, pp, thr, nq, ka, ma);
        for (size_t i = 0; i < nq; i++)
            thr[i] = (trial + i) % 4 == 3 ? -INFINITY : ka[32 * i + (trial + i) % 32];
        ref->block_select(code_sum, sign_sum, scalars, pp, thr, nq, ka, ma);
        k->block_select(code_sum, sign_sum, scalars, pp, thr, nq, kb, mb);
        for (size_t i = 0; i < nq; i++) {
            for (int v = 0; v < 32; v++)
                cr_assert(same_bits_f(ka[32 * i + v], kb[32 * i + v]),
                          "block_select %s trial %d query %zu row %d: %a vs scalar %a", tq_simd_level_name(level),
                          trial, i, v, (double)kb[32 * i + v], (double)ka[32 * i + v]);
            cr_assert_eq(ma[i], mb[i], "block_select %s trial %d query %zu mask %08x vs scalar %08x",
                         tq_simd_level_name(level), trial, i, mb[i], ma[i]);
            if ((trial + i) % 4 == 3)
                cr_assert_eq(ma[i], 0xFFFFFFFFu, "every finite key beats -inf");
            else
                cr_assert_eq((ma[i] >> ((trial + i) % 32)) & 1, 0u, "a key does not beat itself");
        }
    }
    munmap(map[0], map_len[0]);
    munmap(map[1], map_len[1]);
}

/* The fused scan and select against the scalar scan followed by the
 * scalar select: the same keys to the bit and the same masks, for every
 * query count, around the flush interval, at every metric. */
static void check_scan_select(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    enum { NQ = TQ_SCAN_MAX_QUERIES, NB = 3 };
    /* units: nibble pairs (32 bytes of block, tables arranged) or sextet
     * groups (96 bytes, 256 bytes of plain tables); NB blocks a call. */
    static const size_t units[] = {1, 2, 3, 63, 64, 65, 127, 128, 129, 392};
    tq_rng r;
    tq_rng_seed(&r, 13);
    uint8_t *blocks = tq_malloc(NB * 96 * 392), *plain = tq_malloc(256 * 392), *lut[NQ];
    for (int i = 0; i < NQ; i++)
        lut[i] = tq_malloc(256 * 392);
    float ka[NB * NQ * 32], kb[NB * NQ * 32], thr[NQ];
    /* mse: two planes a block, the last block's ending at an unreadable page */
    void *map;
    size_t map_len;
    float *scalars = (float *)(void *)guarded_blocks(NB * TQ_SCALARS_MSE_BLOCK * sizeof(float), &map, &map_len);
    uint32_t sums[NQ * 32], ma[NB * NQ], mb[NB * NQ];
    tq_key_params params[NQ];
    const tq_key_params *pp[NQ] = {&params[0], &params[1], &params[2], &params[3]};
    for (int sextets = 0; sextets < 2; sextets++)
        for (size_t si = 0; si < sizeof(units) / sizeof(units[0]); si++)
            for (int metric = 0; metric < 3; metric++)
                for (size_t nq = 1; nq <= NQ; nq++) {
                    const size_t nu = units[si], bb = (sextets ? 96 : 32) * nu;
                    for (size_t i = 0; i < NB * bb; i++)
                        blocks[i] = (uint8_t)tq_rng_next(&r);
                    for (int blk = 0; blk < NB; blk++)
                        for (int v = 0; v < 32; v++) {
                            scalars[TQ_SCALARS_MSE_BLOCK * blk + v] = (float)fabs(tq_rng_gauss(&r)) * 3.0f;
                            scalars[TQ_SCALARS_MSE_BLOCK * blk + 32 + v] = 1.0f + (float)tq_rng_gauss(&r) * 0.01f;
                        }
                    for (size_t i = 0; i < nq; i++) {
                        for (size_t j = 0; j < (sextets ? 256 : 32) * nu; j++)
                            plain[j] = (uint8_t)(tq_rng_next(&r) % (TQ_SCAN_LUT_MAX + 1));
                        if (sextets)
                            memcpy(lut[i], plain, 256 * nu);
                        else
                            arrange_tables(plain, nu, lut[i]);
                        params[i] = (tq_key_params){.metric = (tq_key_metric)metric, .prod = 0,
                                                    .code_delta = (float)fabs(tq_rng_gauss(&r)) * 1e-3f,
                                                    .code_bias = (float)tq_rng_gauss(&r), .qq = 2.0f,
                                                    .bias = (float)tq_rng_gauss(&r), .qnorm = 1.5f};
                        thr[i] = -INFINITY;
                    }
                    /* The reference, block by block: scan, then select;
                     * first with no threshold, then at one row's key of
                     * the middle block. */
                    for (int pass = 0; pass < 2; pass++)
                        for (size_t blk = 0; blk < NB; blk++) {
                            if (sextets)
                                ref->scan6_block_multi(blocks + blk * bb, nu, (const uint8_t *const *)lut, nq, sums);
                            else
                                ref->scan_block_multi(blocks + blk * bb, nu, (const uint8_t *const *)lut, nq, sums);
                            ref->block_select(sums, sums, scalars + TQ_SCALARS_MSE_BLOCK * blk, pp, thr, nq,
                                              ka + 32 * nq * blk,
                                              ma + nq * blk);
                            if (pass == 0 && blk == NB - 1)
                                for (size_t i = 0; i < nq; i++)
                                    thr[i] = ka[32 * nq + 32 * i + (i * 7 + si) % 32];
                        }
                    (sextets ? k->scan6_select : k->scan_select)(blocks, NB, bb, nu, (const uint8_t *const *)lut, nq,
                                                                 scalars, pp, thr, kb, mb);
                    for (size_t i = 0; i < NB * nq; i++) {
                        for (int v = 0; v < 32; v++)
                            cr_assert(same_bits_f(ka[32 * i + v], kb[32 * i + v]),
                                      "%s %s units=%zu metric %d nq=%zu block %zu query %zu row %d: %a vs %a",
                                      sextets ? "scan6_select" : "scan_select", tq_simd_level_name(level), nu,
                                      metric, nq, i / nq, i % nq, v, (double)kb[32 * i + v], (double)ka[32 * i + v]);
                        cr_assert_eq(ma[i], mb[i], "%s %s units=%zu nq=%zu block %zu query %zu mask %08x vs %08x",
                                     sextets ? "scan6_select" : "scan_select", tq_simd_level_name(level), nu, nq,
                                     i / nq, i % nq, mb[i], ma[i]);
                    }
                    for (size_t i = 0; i < nq; i++)
                        cr_assert(ma[nq + i] != 0xFFFFFFFFu, "the threshold row does not beat itself");
                }
    munmap(map, map_len);
    tq_free(blocks);
    tq_free(plain);
    for (int i = 0; i < NQ; i++)
        tq_free(lut[i]);
}

/* A vector codebook's nearest points: every level picks the scalar
 * loop's, which is the specification's (ties to the lowest index), and
 * writes the same codes and reconstruction, for pairs of 16 and 64 points
 * and fours of 16, at lengths around the vector widths, with duplicate
 * points (exact ties) and inputs on a coarse grid (ties between sums). */
static float vq_score(const float *pts, const float *half_sq, const float *v, unsigned dims, unsigned p)
{
    float sc = pts[p] * v[0];
    for (unsigned i = 1; i < dims; i++)
        sc = sc + pts[TQ_VQ_STRIDE * i + p] * v[i];
    return sc - half_sq[p];
}

static void check_vq_nearest(tq_simd_level level)
{
    const tq_simd_kernels *k = level_or_skip(level), *ref = &tq_simd_kernels_scalar;
    enum { most = 200 };
    static const size_t lengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, most};
    static const unsigned shapes[][2] = {{2, 2}, {4, 1}, {2, 3}}; /* dims, bits */
    float x[4 * most], pts[4 * TQ_VQ_STRIDE], half_sq[TQ_VQ_STRIDE], want_r[4 * most + 1], got_r[4 * most + 1];
    uint8_t want[4 * most + 1], got[4 * most + 1];
    tq_rng r;
    tq_rng_seed(&r, 29);
    for (int trial = 0; trial < 60; trial++)
        for (size_t sh = 0; sh < sizeof(shapes) / sizeof(shapes[0]); sh++) {
            const unsigned dims = shapes[sh][0], bits = shapes[sh][1], points = 1u << (dims * bits);
            const bool coarse = trial % 3 == 0;
            for (unsigned p = 0; p < points; p++) {
                for (unsigned i = 0; i < 4; i++)
                    pts[TQ_VQ_STRIDE * i + p] = i < dims ? (coarse ? (float)((int)(tq_rng_next(&r) % 5) - 2)
                                                                   : (float)tq_rng_gauss(&r))
                                                         : 0.0f;
                if (trial % 4 == 1 && p % 4 == 3) /* a duplicate of the point before */
                    for (unsigned i = 0; i < 4; i++)
                        pts[TQ_VQ_STRIDE * i + p] = pts[TQ_VQ_STRIDE * i + p - 1];
                float h = pts[p] * pts[p];
                for (unsigned i = 1; i < dims; i++)
                    h = h + pts[TQ_VQ_STRIDE * i + p] * pts[TQ_VQ_STRIDE * i + p];
                half_sq[p] = 0.5f * h;
            }
            for (size_t i = 0; i < dims * (size_t)most; i++)
                x[i] = coarse ? 0.5f * (float)((int)(tq_rng_next(&r) % 9) - 4) : (float)tq_rng_gauss(&r);
            for (size_t s = 0; s < sizeof(lengths) / sizeof(lengths[0]); s++) {
                const size_t n = lengths[s];
                ref->vq_nearest(x, n, dims, bits, pts, half_sq, want, want_r);
                for (size_t t = 0; t < n; t++) {
                    unsigned p = 0;
                    for (unsigned i = 0; i < dims; i++) {
                        cr_assert_lt(want[dims * t + i], 1u << bits);
                        p |= (unsigned)want[dims * t + i] << (i * bits);
                    }
                    for (unsigned i = 0; i < dims; i++)
                        cr_assert_eq(want_r[dims * t + i], pts[TQ_VQ_STRIDE * i + p],
                                     "scalar vq_nearest: reconstruction");
                    const float best = vq_score(pts, half_sq, x + dims * t, dims, p);
                    for (unsigned o = 0; o < points; o++) {
                        const float sc = vq_score(pts, half_sq, x + dims * t, dims, o);
                        cr_assert(sc < best || (sc == best && o >= p), "scalar vq_nearest dims %u bits %u: %u, but %u",
                                  dims, bits, p, o);
                    }
                }
                memset(got, 0xff, sizeof(got));
                for (size_t i = 0; i < sizeof(got_r) / sizeof(got_r[0]); i++)
                    got_r[i] = -7.0f;
                k->vq_nearest(x, n, dims, bits, pts, half_sq, got, got_r);
                cr_assert(!memcmp(got, want, n * dims) && !memcmp(got_r, want_r, n * dims * sizeof(float)),
                          "vq_nearest %s trial %d dims %u bits %u n=%zu differs from scalar",
                          tq_simd_level_name(level), trial, dims, bits, n);
                cr_assert(got[n * dims] == 0xff && got_r[n * dims] == -7.0f, "writes only n groups");
            }
        }
}

#define LEVEL_TESTS(name, level)                                                                   \
    Test(checkasm_##name, fwht) { check_fwht(level); }                                              \
    Test(checkasm_##name, elementwise) { check_elementwise(level); }                                \
    Test(checkasm_##name, reductions) { check_reductions(level); }                                  \
    Test(checkasm_##name, quantize_pack) { check_quantize_pack(level); }                            \
    Test(checkasm_##name, dot_codes) { check_dot_codes(level); }                                    \
    Test(checkasm_##name, scan_block) { check_scan_block(level); }                                  \
    Test(checkasm_##name, scan_lut_quantize) { check_scan_lut_quantize(level); }                    \
    Test(checkasm_##name, scan_lut_rows) { check_scan_lut_rows(level); }                            \
    Test(checkasm_##name, row_extremes16) { check_row_extremes16(level); }                          \
    Test(checkasm_##name, scan6) { check_scan6(level); }                                            \
    Test(checkasm_##name, block_select) { check_block_select(level); }                              \
    Test(checkasm_##name, scan_select) { check_scan_select(level); }                                \
    Test(checkasm_##name, dot_u8) { check_dot_u8(level); }                                          \
    Test(checkasm_##name, nibble_rows) { check_nibble_rows(level); }                                \
    Test(checkasm_##name, dot_matrix) { check_dot_matrix(level); }                                  \
    Test(checkasm_##name, dot_q8_blocks) { check_dot_q8_blocks(level); }                            \
    Test(checkasm_##name, argmax_q8) { check_argmax_q8(level); }                                    \
    Test(checkasm_##name, vq_nearest) { check_vq_nearest(level); }                                  \
    Test(checkasm_##name, half) { check_half(level); }

LEVEL_TESTS(avx2, TQ_SIMD_AVX2)
LEVEL_TESTS(avx512, TQ_SIMD_AVX512)

/* The scalar reference against the compiler's own conversion (libgcc's
 * round-to-nearest-even), on every half and on float patterns around each
 * rounding boundary. */
__extension__ typedef _Float16 compiler_half;

Test(dispatch, half_reference_matches_the_compiler)
{
    for (uint32_t i = 0; i < 65536; i++) {
        compiler_half h;
        uint16_t bits = (uint16_t)i;
        memcpy(&h, &bits, 2);
        float want = (float)h, got = tq_float_from_half(bits);
        cr_assert(same_bits_f(want, got) || (isnan(want) && isnan(got)), "0x%04x: %a vs %a", i, (double)got,
                  (double)want);
        if (isnan(want))
            continue;
        /* The float halfway between this half and the next, and its
         * neighbours. */
        uint32_t fb;
        memcpy(&fb, &want, 4);
        for (int delta = -2; delta <= 2; delta++) {
            uint32_t probe = fb + (uint32_t)delta + (i % 2 ? 0x1000u : 0);
            float f;
            memcpy(&f, &probe, 4);
            if (isnan(f))
                continue;
            compiler_half r = (compiler_half)f;
            uint16_t rb;
            memcpy(&rb, &r, 2);
            cr_assert_eq(tq_half_from_float(f), rb, "%a: 0x%04x vs compiler 0x%04x", (double)f,
                         tq_half_from_float(f), rb);
        }
    }
}

Test(dispatch, scan_reference_sums)
{
    /* The reference on a hand-made block: vector v has nibbles v % 16 and
     * 15 - v % 16 in every pair; tables are entry value = index + 16 * t. */
    uint8_t block[32 * 3], plain[16 * 6], lut[TQ_SCAN_LUT_BYTES(3)];
    for (int p = 0; p < 3; p++)
        for (int v = 0; v < 32; v++)
            block[32 * p + v] = (uint8_t)((v % 16) | (15 - v % 16) << 4);
    for (int t = 0; t < 6; t++)
        for (int c = 0; c < 16; c++)
            plain[16 * t + c] = (uint8_t)(c + 16 * t);
    arrange_tables(plain, 3, lut);
    /* The layout written out by hand for nibbles 0..3 (group 0). */
    cr_assert_eq(lut[0], 0);
    cr_assert_eq(lut[16], 0);
    cr_assert_eq(lut[32], 32, "nibble 2 follows nibble 0's two copies");
    cr_assert_eq(lut[64], 16, "nibble 1 starts the second half");
    cr_assert_eq(lut[96], 48);
    cr_assert_eq(lut[128 + 32], 0, "absent nibble 6 is zero");
    uint32_t out[32];
    tq_simd_kernels_scalar.scan_block(block, 3, lut, out);
    for (int v = 0; v < 32; v++) {
        uint32_t want = 0;
        for (int t = 0; t < 6; t++)
            want += (uint32_t)((t % 2 ? 15 - v % 16 : v % 16) + 16 * t);
        cr_assert_eq(out[v], want, "vector %d", v);
    }
}

Test(dispatch, levels_and_forcing)
{
    tq_simd_level best = tq_simd_best_level();
    cr_assert_eq(tq_simd_parse_level("scalar"), TQ_SIMD_SCALAR);
    cr_assert_eq(tq_simd_parse_level("avx512"), TQ_SIMD_AVX512);
    cr_assert_eq(tq_simd_parse_level("sse9"), -1);
    cr_assert_eq(tq_simd_force(TQ_SIMD_SCALAR), 0);
    cr_assert_eq(tq_simd_active_level(), TQ_SIMD_SCALAR);
    cr_assert_eq(tq_simd(), &tq_simd_kernels_scalar);
    if (best < TQ_SIMD_AVX512) {
        /* Asking for a level the CPU lacks is an error and changes nothing. */
        cr_assert_eq(tq_simd_force(TQ_SIMD_AVX512), -1);
        cr_assert_eq(tq_simd_active_level(), TQ_SIMD_SCALAR);
    }
    cr_assert_eq(tq_simd_force(best), 0);
    cr_assert_eq(tq_simd_active_level(), best);
}

Test(dispatch, scalar_reference_semantics)
{
    /* The specification itself, on sums whose rounding tells the order apart
     * (1e8 + 1 rounds back to 1e8 in float). */
    float a[32] = {0}, b[32];
    for (int i = 0; i < 32; i++)
        b[i] = 1.0f;
    /* Lanes 0 and 1: (1e8 + 1) + (-1e8) = 0, where a left-to-right sum
     * would give 1e8 - 1e8 + 1 = 1. */
    a[0] = 1e8f;
    a[1] = -1e8f;
    a[16] = 1.0f;
    cr_assert_eq(tq_simd_kernels_scalar.dot(a, b, 32), 0.0f);
    /* Lanes 0, 8 and 1: the first fold cancels lane 0 with lane 8 before
     * lane 1's 1 joins, giving 1 where left to right gives 0. */
    memset(a, 0, sizeof(a));
    a[0] = 1e8f;
    a[1] = 1.0f;
    a[8] = -1e8f;
    cr_assert_eq(tq_simd_kernels_scalar.dot(a, b, 32), 1.0f);
}

/* With TQ_REQUIRE_LEVEL=<level> the run is about that level alone: if the
 * CPU or build lacks it, exit 77 before any test so meson reports a skip
 * rather than a pass. (The hook runs once, in the runner process.) */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    const char *need = getenv("TQ_REQUIRE_LEVEL");
    if (need && *need) {
        int lv = tq_simd_parse_level(need);
        if (lv < 0 || !tq_simd_table((tq_simd_level)lv)) {
            fprintf(stderr, "SKIP: SIMD level %s is not available on this CPU or build\n", need);
            exit(77);
        }
    }
}
