/*
 * Search over several row sets with deletions (tq_search): the answer
 * must equal that of one index holding the same live vectors, whatever the
 * split into sets, the thread count or the share of deleted rows.
 */
#include <criterion/criterion.h>

#include "tq_index.h"

#define D 40
#define TOTAL 330

static float *vectors(size_t n, uint64_t seed)
{
    float *x = tq_malloc(n * D * sizeof(float));
    tq_rng r;
    tq_rng_seed(&r, seed);
    for (size_t i = 0; i < n * D; i++)
        x[i] = (float)tq_rng_gauss(&r) + (i % D == 3 ? 2.0f : 0.0f);
    return x;
}

static tq_flat *flat_of(const tq_config *cfg, const float *x, size_t n)
{
    tq_flat *f;
    cr_assert_eq(tq_flat_create(cfg, &f, NULL), TQ_OK);
    cr_assert_eq(tq_flat_add(f, x, n, NULL), TQ_OK);
    return f;
}

static void same_hits(const tq_hit *a, size_t na, const tq_hit *b, size_t nb, const char *what)
{
    cr_assert_eq(na, nb, "%s: %zu hits against %zu", what, na, nb);
    for (size_t i = 0; i < na; i++) {
        cr_assert_eq(a[i].id, b[i].id, "%s: hit %zu is row %llu, expected %llu", what, i,
                     (unsigned long long)a[i].id, (unsigned long long)b[i].id);
        cr_assert(memcmp(&a[i].score, &b[i].score, sizeof(float)) == 0, "%s: hit %zu score %.9g against %.9g",
                  what, i, (double)a[i].score, (double)b[i].score);
    }
}

/* Sets of 100, 0 and 230 rows (block boundaries inside and across sets)
 * answer exactly as one index of all 330, for both scorers, with re-rank,
 * on 1 and 3 threads. */
Test(rows, several_sets_answer_as_one)
{
    float *x = vectors(TOTAL, 7);
    const size_t split[3] = {100, 0, 230};
    for (int variant = TQ_VARIANT_MSE; variant <= TQ_VARIANT_PROD; variant++) {
        tq_config cfg = {.d = D, .metric = TQ_METRIC_L2, .bits = 3, .variant = variant,
                         .correction = TQ_CORRECTION_IP, .seed = 99, .refine = TQ_REFINE_FP32,
                         .center = TQ_CENTER_NONE};
        tq_flat *whole = flat_of(&cfg, x, TOTAL);
        tq_flat *part[3];
        tq_rows sets[3];
        for (size_t s = 0, at = 0; s < 3; at += split[s], s++) {
            part[s] = flat_of(&cfg, x + at * D, split[s]);
            sets[s] = tq_flat_rows(part[s]);
        }
        const float *queries = x + 5 * D; /* three queries that are base rows */
        for (int scorer = TQ_SCORER_LUT; scorer <= TQ_SCORER_FLOAT; scorer++)
            for (unsigned threads = 1; threads <= 3; threads += 2) {
                tq_search_opts o = {.k = 12, .rerank = 2, .scorer = scorer, .threads = threads};
                tq_hit a[36], b[36];
                size_t na[3], nb[3];
                tq_rows all = tq_flat_rows(whole);
                cr_assert_eq(tq_search(tq_flat_codec(whole), &all, 1, queries, 3, &o, a, na, NULL), TQ_OK);
                cr_assert_eq(tq_search(tq_flat_codec(part[0]), sets, 3, queries, 3, &o, b, nb, NULL), TQ_OK);
                for (int q = 0; q < 3; q++)
                    same_hits(a + 12 * q, na[q], b + 12 * q, nb[q], "three sets against one");
            }
        tq_flat_free(whole);
        for (int s = 0; s < 3; s++)
            tq_flat_free(part[s]);
    }
    tq_free(x);
}

/* Deleting rows is the same as never adding them: compare against an index
 * of the live rows only, mapping its row numbers back. */
Test(rows, deleted_rows_are_skipped_inside_the_scan)
{
    float *x = vectors(TOTAL, 11);
    tq_config cfg = {.d = D, .metric = TQ_METRIC_IP, .bits = 4, .variant = TQ_VARIANT_MSE,
                     .correction = TQ_CORRECTION_IP, .seed = 5, .refine = TQ_REFINE_CODE8,
                     .center = TQ_CENTER_NONE};
    tq_flat *all = flat_of(&cfg, x, TOTAL);
    uint32_t deleted[(TOTAL + 31) / 32];
    const unsigned every[3] = {2, 7, 1}; /* delete every 2nd, every 7th, then all but three */
    for (int round = 0; round < 3; round++) {
        memset(deleted, 0, sizeof(deleted));
        size_t ndeleted = 0, live_rows[TOTAL], nlive = 0;
        float *live = tq_malloc(TOTAL * D * sizeof(float));
        for (size_t r = 0; r < TOTAL; r++) {
            bool dead = round < 2 ? r % every[round] == 0 : !(r == 17 || r == 64 || r == 301);
            if (dead) {
                deleted[r / 32] |= 1u << (r % 32);
                ndeleted++;
            } else {
                memcpy(live + nlive * D, x + r * D, D * sizeof(float));
                live_rows[nlive++] = r;
            }
        }
        tq_flat *ref = flat_of(&cfg, live, nlive);
        tq_rows rows = tq_flat_rows(all);
        rows.deleted = deleted;
        rows.ndeleted = ndeleted;
        tq_rows ref_rows = tq_flat_rows(ref);
        for (unsigned rerank = 0; rerank <= 4; rerank += 4) {
            tq_search_opts o = {.k = 10, .rerank = rerank, .scorer = TQ_SCORER_LUT, .threads = 2};
            tq_hit a[20], b[20];
            size_t na[2], nb[2];
            cr_assert_eq(tq_search(tq_flat_codec(all), &rows, 1, x + 40 * D, 2, &o, a, na, NULL), TQ_OK);
            cr_assert_eq(tq_search(tq_flat_codec(ref), &ref_rows, 1, x + 40 * D, 2, &o, b, nb, NULL), TQ_OK);
            for (int q = 0; q < 2; q++) {
                cr_assert_eq(na[q], nlive < 10 ? nlive : 10, "exactly min(k, live) hits");
                for (size_t i = 0; i < nb[q]; i++)
                    b[10 * q + i].id = live_rows[b[10 * q + i].id];
                same_hits(a + 10 * q, na[q], b + 10 * q, nb[q], "with deletions against live rows only");
                for (size_t i = 0; i < na[q]; i++)
                    cr_assert_eq(deleted[a[10 * q + i].id / 32] >> (a[10 * q + i].id % 32) & 1u, 0u);
            }
        }
        tq_flat_free(ref);
        tq_free(live);
    }
    tq_flat_free(all);
    tq_free(x);
}

Test(rows, nothing_live_gives_no_hits)
{
    float *x = vectors(40, 3);
    tq_config cfg = {.d = D, .metric = TQ_METRIC_COSINE, .bits = 2, .variant = TQ_VARIANT_MSE,
                     .correction = TQ_CORRECTION_IP, .seed = 1, .refine = TQ_REFINE_NONE, .center = TQ_CENTER_NONE};
    tq_flat *f = flat_of(&cfg, x, 40);
    uint32_t deleted[2] = {0xffffffffu, 0xffu};
    tq_rows rows = tq_flat_rows(f);
    rows.deleted = deleted;
    rows.ndeleted = 40;
    tq_search_opts o = {.k = 5, .scorer = TQ_SCORER_LUT};
    tq_hit h[5];
    size_t n = 99;
    cr_assert_eq(tq_search(tq_flat_codec(f), &rows, 1, x, 1, &o, h, &n, NULL), TQ_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(tq_search(tq_flat_codec(f), &rows, 0, x, 1, &o, h, &n, NULL), TQ_OK, "no sets at all");
    cr_assert_eq(n, 0);
    tq_flat_free(f);
    tq_free(x);
}

/* Reordering rows in place (tq_rows_permute) leaves exactly the bytes a
 * reordered copy (tq_rows_gather) holds, for a permutation made of cycles
 * of every length and fixed points, and rows spanning several blocks:
 * codes, scalars, refine data and cosine lengths. */
Test(rows, permuting_in_place_equals_gathering)
{
    float *x = vectors(TOTAL, 11);
    uint32_t order[TOTAL];
    tq_rng r;
    tq_rng_seed(&r, 5);
    for (uint32_t i = 0; i < TOTAL; i++)
        order[i] = i;
    for (uint32_t i = TOTAL - 1; i > 40; i--) { /* rows 0..40 stay where they are */
        const uint32_t j = 41 + (uint32_t)(tq_rng_next(&r) % (i - 40));
        const uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int metric = TQ_METRIC_L2; metric <= TQ_METRIC_COSINE; metric++) {
        tq_config cfg = {.d = D, .metric = metric, .bits = 3, .variant = TQ_VARIANT_PROD,
                         .correction = TQ_CORRECTION_IP, .seed = 3, .refine = TQ_REFINE_FP16,
                         .center = TQ_CENTER_NONE};
        tq_flat *f = flat_of(&cfg, x, TOTAL);
        const tq_codec *c = tq_flat_codec(f);
        const tq_rows src = tq_flat_rows(f);
        tq_rows_out copy, moved;
        cr_assert_eq(tq_rows_gather(c, &src, order, TOTAL, &copy), TQ_OK);
        /* The same rows, gathered in their own order, then permuted. */
        uint32_t same[TOTAL];
        for (uint32_t i = 0; i < TOTAL; i++)
            same[i] = i;
        cr_assert_eq(tq_rows_gather(c, &src, same, TOTAL, &moved), TQ_OK);
        cr_assert_eq(tq_rows_permute(c, &moved, TOTAL, order), TQ_OK);
        const tq_rows a = tq_rows_view(&copy, TOTAL), b = tq_rows_view(&moved, TOTAL);
        const size_t bytes = tq_codec_row_bytes(c);
        uint8_t *ra = tq_malloc(bytes), *rb = tq_malloc(bytes);
        for (size_t i = 0; i < TOTAL; i++) {
            tq_codec_row_save(c, &a, i, ra);
            tq_codec_row_save(c, &b, i, rb);
            cr_assert(!memcmp(ra, rb, bytes), "metric %d, row %zu (from %u) differs", metric, i, order[i]);
        }
        tq_free(ra);
        tq_free(rb);
        tq_rows_out_free(&copy);
        tq_rows_out_free(&moved);
        tq_flat_free(f);
    }
    tq_free(x);
}
