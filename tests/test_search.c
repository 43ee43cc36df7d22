/*
 * The in-memory index through the public API: recall floors against exact
 * ground truth on the shared real datasets, the exact contract of a search
 * (count, order, scores, determinism across SIMD levels and threads), and a
 * clear error for every bad input with the index left unchanged.
 */
#include <criterion/criterion.h>
#include <unistd.h>

#include "tq_datasets.h"
#include "tqvec.h"

typedef struct dataset {
    tq_matrix base, queries;
    tq_imatrix gt;
} dataset;

static bool load(const char *name, size_t max_queries, dataset *ds)
{
    const char *root = getenv("TQVEC_SHARED_DATASETS");
    if (!root)
        root = "../shared/datasets";
    char b[512], q[512], g[512];
    snprintf(b, sizeof(b), "%s/%s/base.fvecs", root, name);
    snprintf(q, sizeof(q), "%s/%s/query.fvecs", root, name);
    snprintf(g, sizeof(g), "%s/%s/gt.ivecs", root, name);
    if (access(b, R_OK) != 0) {
        /* CI runs with shared/ beside the clone: missing data there is a
         * broken set-up, not a reason to skip the recall floors. */
        cr_assert_null(getenv("CI"), "CI is set but %s is missing", b);
        return false;
    }
    tq_error err;
    cr_assert_eq(tq_fvecs_read(b, 0, &ds->base, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_fvecs_read(q, max_queries, &ds->queries, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_ivecs_read(g, max_queries, &ds->gt, &err), TQ_OK, "%s", err.msg);
    return true;
}

static void unload(dataset *ds)
{
    tq_matrix_free(&ds->base);
    tq_matrix_free(&ds->queries);
    tq_imatrix_free(&ds->gt);
}

/* recall@10 of an index of the base searched with sp; partitioned first
 * (default partitions) when `partition`. */
/* recall@10 of an index of the base vectors (seed 0: the default), partitioned or not. */
static double recall_seeded(const dataset *ds, tqvec_metric metric, int bits, tqvec_refine refine, bool partition,
                            const tqvec_search_params *sp, uint64_t seed)
{
    tqvec_index_options o = {.dim = (uint32_t)ds->base.d, .metric = metric, .bits = bits, .refine = refine,
                             .seed = seed};
    tqvec_index *ix;
    tqvec_error err;
    cr_assert_eq(tqvec_index_create(&o, &ix, &err), TQVEC_OK, "%s", err.message);
    cr_assert_eq(tqvec_index_add(ix, ds->base.data, ds->base.n, NULL, &err), TQVEC_OK, "%s", err.message);
    if (partition)
        cr_assert_eq(tqvec_index_partition(ix, 0, 2, &err), TQVEC_OK, "%s", err.message);
    tqvec_hit hits[10];
    size_t found = 0;
    for (size_t i = 0; i < ds->queries.n; i++) {
        size_t count;
        cr_assert_eq(tqvec_index_search(ix, ds->queries.data + i * ds->queries.d, sp, hits, 10, &count, &err),
                     TQVEC_OK, "%s", err.message);
        cr_assert_eq(count, 10);
        for (size_t a = 0; a < count; a++)
            for (size_t b = 0; b < 10; b++)
                found += (int64_t)hits[a].id == ds->gt.data[i * ds->gt.d + b];
    }
    tqvec_index_free(ix);
    return (double)found / (10.0 * (double)ds->queries.n);
}

static double recall_with(const dataset *ds, tqvec_metric metric, int bits, tqvec_refine refine, bool partition,
                          const tqvec_search_params *sp)
{
    return recall_seeded(ds, metric, bits, refine, partition, sp, 0);
}

static double recall_at_10(const dataset *ds, tqvec_metric metric, int bits, uint32_t rerank, tqvec_refine refine)
{
    const tqvec_search_params sp = {.k = 10, .rerank = rerank};
    return recall_with(ds, metric, bits, refine, false, &sp);
}

/* Floors from the [core] acceptance criteria (4 bits, default correction,
 * no re-rank), and 0.99 with re-rank 16 on float vectors. Re-ranking on
 * 8-bit codes (a quarter of the floats' bytes) measured 0.972 to 0.996 on
 * these sets: its floor is 0.96, and it must beat no re-rank clearly. */
static void check_floors(const char *name, tqvec_metric metric, double floor4, size_t max_queries)
{
    dataset ds = {0};
    if (!load(name, max_queries, &ds))
        cr_skip_test("shared dataset %s is not present", name);
    double r0 = recall_at_10(&ds, metric, 4, 0, TQVEC_REFINE_NONE);
    double r16 = recall_at_10(&ds, metric, 4, 16, TQVEC_REFINE_FP32);
    double r16c8 = recall_at_10(&ds, metric, 4, 16, TQVEC_REFINE_CODE8);
    double r16h = recall_at_10(&ds, metric, 4, 16, TQVEC_REFINE_FP16);
    cr_log_info("%s: recall@10 4-bit %.4f, re-rank 16 fp32 %.4f, fp16 %.4f, code8 %.4f", name, r0, r16, r16h,
                r16c8);
    cr_assert(r0 >= floor4, "%s: 4-bit recall@10 %.4f below %.2f", name, r0, floor4);
    cr_assert(r16 >= 0.99, "%s: re-ranked recall@10 %.4f below 0.99", name, r16);
    cr_assert(r16h >= r16 - 0.002, "%s: fp16 re-rank %.4f, fp32 %.4f", name, r16h, r16);
    cr_assert(r16c8 >= 0.96 && r16c8 > r0 + 0.01, "%s: code8 re-rank %.4f (fp32 %.4f, none %.4f)", name, r16c8,
              r16, r0);
    unload(&ds);
}

Test(recall, siftsmall) { check_floors("siftsmall", TQVEC_METRIC_L2, 0.87, 0); }
Test(recall, fashion_mnist, .timeout = 300) { check_floors("fashion-mnist", TQVEC_METRIC_L2, 0.94, 0); }
Test(recall, lex_cohere, .timeout = 300) { check_floors("lex-cohere", TQVEC_METRIC_IP, 0.98, 0); }
Test(recall, fiori_minilm) { check_floors("fiori-minilm", TQVEC_METRIC_COSINE, 0.90, 0); }
Test(recall, glove_50, .timeout = 300) { check_floors("glove-50", TQVEC_METRIC_COSINE, 0.80, 200); }

Test(recall, correction_helps_l2)
{
    /* The per-vector correction is the default because it fixes l2 ranking
     * when norms differ; the gain on siftsmall is large (0.73 -> 0.89). */
    dataset ds = {0};
    if (!load("siftsmall", 0, &ds))
        cr_skip_test("shared dataset siftsmall is not present");
    tqvec_index_options o = {.dim = 128, .metric = TQVEC_METRIC_L2, .bits = 4, .correction = TQVEC_CORRECTION_NONE};
    tqvec_index *ix;
    cr_assert_eq(tqvec_index_create(&o, &ix, NULL), TQVEC_OK);
    cr_assert_eq(tqvec_index_add(ix, ds.base.data, ds.base.n, NULL, NULL), TQVEC_OK);
    size_t found = 0;
    tqvec_hit hits[10];
    for (size_t i = 0; i < ds.queries.n; i++) {
        size_t count;
        cr_assert_eq(tqvec_index_search(ix, ds.queries.data + i * 128, NULL, hits, 10, &count, NULL), TQVEC_OK);
        for (size_t a = 0; a < count; a++)
            for (size_t b = 0; b < 10; b++)
                found += (int64_t)hits[a].id == ds.gt.data[i * ds.gt.d + b];
    }
    tqvec_index_free(ix);
    double plain = found / (10.0 * ds.queries.n), corrected = recall_at_10(&ds, TQVEC_METRIC_L2, 4, 0, 0);
    cr_assert(corrected > plain + 0.05, "correction %.4f vs none %.4f", corrected, plain);
    unload(&ds);
}

/* Field by field: tqvec_hit has padding after the score. */
static bool same_hits(const tqvec_hit *a, const tqvec_hit *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].id != b[i].id || memcmp(&a[i].score, &b[i].score, sizeof(float)))
            return false;
    return true;
}

/* recall@10 of a 4-bit default-scan index of ds at `bits`, centered or
 * not, and the mean error of its scores: relative to the squared
 * distance for l2, absolute for cosine (a similarity). */
static double recall_centered(const dataset *ds, tqvec_metric metric, int bits, bool center, double *mean_err)
{
    const uint32_t d = (uint32_t)ds->base.d;
    tqvec_index_options o = {.dim = d, .metric = metric, .bits = bits,
                             .center = center ? TQVEC_CENTER_FIRST_BATCH : TQVEC_CENTER_NONE};
    tqvec_index *ix;
    cr_assert_eq(tqvec_index_create(&o, &ix, NULL), TQVEC_OK);
    cr_assert_eq(tqvec_index_add(ix, ds->base.data, ds->base.n, NULL, NULL), TQVEC_OK);
    size_t found = 0, err_n = 0;
    double err_sum = 0;
    tqvec_hit hits[10];
    for (size_t i = 0; i < ds->queries.n; i++) {
        size_t count;
        const float *q = ds->queries.data + i * d;
        cr_assert_eq(tqvec_index_search(ix, q, NULL, hits, 10, &count, NULL), TQVEC_OK);
        for (size_t a = 0; a < count; a++) {
            for (size_t b = 0; b < 10; b++)
                found += (int64_t)hits[a].id == ds->gt.data[i * ds->gt.d + b];
            /* The estimate is of the true score, centered or not. */
            const float *x = ds->base.data + hits[a].id * d;
            double exact = 0;
            for (uint32_t j = 0; j < d; j++)
                exact += metric == TQVEC_METRIC_L2 ? ((double)q[j] - x[j]) * ((double)q[j] - x[j])
                                                   : (double)q[j] * x[j];
            err_sum += fabs(hits[a].score - exact) / (metric == TQVEC_METRIC_L2 ? exact : 1.0);
            err_n++;
        }
    }
    tqvec_index_free(ix);
    *mean_err = err_sum / (double)err_n;
    return found / (10.0 * ds->queries.n);
}

Test(recall, centering_helps_l2_and_keeps_scores_true)
{
    dataset ds = {0};
    if (!load("siftsmall", 0, &ds))
        cr_skip_test("shared dataset siftsmall is not present");
    double recall[2], rel_err[2];
    for (int c = 0; c < 2; c++)
        recall[c] = recall_centered(&ds, TQVEC_METRIC_L2, 4, c, &rel_err[c]);
    cr_log_info("siftsmall 4-bit: recall %.4f -> %.4f, mean relative distance error %.4f -> %.4f", recall[0],
                recall[1], rel_err[0], rel_err[1]);
    cr_assert(recall[1] > recall[0] + 0.01, "centered %.4f vs plain %.4f", recall[1], recall[0]);
    cr_assert(rel_err[1] < rel_err[0] && rel_err[0] < 0.1, "distance errors %.4f (plain), %.4f (centered)", rel_err[0],
              rel_err[1]);
    unload(&ds);
}

Test(recall, centered_cosine_centers_the_query_too)
{
    /* Sentence embeddings share a large mean (fiori-minilm: ||mean||^2 is
     * 0.48 of a vector's); centering the codes alone helps a little, the
     * query as well (cosine ranked as l2 between unit vectors) much more.
     * Scores stay cosine similarities (the vectors are unit). */
    dataset ds = {0};
    if (!load("fiori-minilm", 0, &ds))
        cr_skip_test("shared dataset fiori-minilm is not present");
    double recall[2], err[2];
    for (int c = 0; c < 2; c++)
        recall[c] = recall_centered(&ds, TQVEC_METRIC_COSINE, 1, c, &err[c]);
    cr_log_info("fiori-minilm 1-bit: recall %.4f plain, %.4f centered; mean |score - cosine| %.4f, %.4f", recall[0],
                recall[1], err[0], err[1]);
    cr_assert(recall[1] > recall[0] + 0.05, "centered %.4f vs plain %.4f", recall[1], recall[0]);
    cr_assert(err[1] < err[0] && err[0] < 0.05, "score errors %.4f (plain), %.4f (centered)", err[0], err[1]);
    unload(&ds);
}

/* <q, x> for ip, their cosine for cosine, in double. */
static double exact_score(int metric, const float *q, const float *x, uint32_t d)
{
    double dot = 0, qq = 0, xx = 0;
    for (uint32_t j = 0; j < d; j++) {
        dot += (double)q[j] * x[j];
        qq += (double)q[j] * q[j];
        xx += (double)x[j] * x[j];
    }
    return metric == TQVEC_METRIC_COSINE ? dot / sqrt(qq * xx) : dot;
}

Test(search, centered_inner_products_add_the_mean_back)
{
    /* Data far from the origin: the mean dominates every inner product. */
    const uint32_t d = 64;
    const size_t n = 500;
    float *x = tq_malloc(n * d * sizeof(float)), q[64];
    tq_rng r;
    tq_rng_seed(&r, 77);
    for (size_t i = 0; i < n * d; i++)
        x[i] = 5.0f + (float)tq_rng_gauss(&r);
    for (uint32_t j = 0; j < d; j++)
        q[j] = (float)tq_rng_gauss(&r) + 1.0f;
    for (int metric = TQVEC_METRIC_IP; metric <= TQVEC_METRIC_COSINE; metric++) {
        tqvec_index_options o = {.dim = d, .metric = metric, .bits = 4, .center = TQVEC_CENTER_FIRST_BATCH,
                                 .refine = TQVEC_REFINE_FP32};
        tqvec_index *ix;
        cr_assert_eq(tqvec_index_create(&o, &ix, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_add(ix, x, n, NULL, NULL), TQVEC_OK);
        tqvec_hit est[10], exact[10];
        size_t ne, nx;
        tqvec_search_params sp = {.k = 10}, rr = {.k = 10, .rerank = 8};
        cr_assert_eq(tqvec_index_search(ix, q, &sp, est, 10, &ne, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_search(ix, q, &rr, exact, 10, &nx, NULL), TQVEC_OK);
        for (size_t i = 0; i < ne; i++) {
            const double truth = exact_score(metric, q, x + est[i].id * d, d);
            cr_assert(fabs(est[i].score - truth) < 0.02 * fabs(truth), "metric %d: estimate %g, truth %g", metric,
                      (double)est[i].score, truth);
        }
        for (size_t i = 0; i < nx; i++) {
            /* Re-ranked on the float vectors: the metric's exact score. */
            const double truth = exact_score(metric, q, x + exact[i].id * d, d);
            cr_assert(fabs(exact[i].score - truth) < 1e-5 * fabs(truth), "metric %d: re-ranked %g, exact %g", metric,
                      (double)exact[i].score, truth);
            cr_assert(i == 0 || exact[i].score <= exact[i - 1].score, "best first");
        }
        tqvec_index_free(ix);
    }
    tq_free(x);
}

static tqvec_index *small_index(tqvec_metric metric, tqvec_refine refine, size_t n, uint32_t d)
{
    tqvec_index_options o = {.dim = d, .metric = metric, .bits = 3, .refine = refine};
    tqvec_index *ix;
    cr_assert_eq(tqvec_index_create(&o, &ix, NULL), TQVEC_OK);
    float *x = tq_malloc(n * d * sizeof(float));
    tq_rng r;
    tq_rng_seed(&r, 21);
    for (size_t i = 0; i < n * d; i++)
        x[i] = (float)tq_rng_gauss(&r);
    uint64_t first;
    cr_assert_eq(tqvec_index_add(ix, x, n, &first, NULL), TQVEC_OK);
    cr_assert_eq(first, 0);
    tq_free(x);
    return ix;
}

Test(search, count_order_and_exact_scores)
{
    const uint32_t d = 40;
    tqvec_index *ix = small_index(TQVEC_METRIC_L2, TQVEC_REFINE_FP32, 25, d);
    float q[40];
    for (uint32_t j = 0; j < d; j++)
        q[j] = 0.1f * (float)j;
    tqvec_hit hits[50];
    size_t count;
    tqvec_search_params sp = {.k = 50, .rerank = 2};
    cr_assert_eq(tqvec_index_search(ix, q, &sp, hits, 50, &count, NULL), TQVEC_OK);
    cr_assert_eq(count, 25, "k above the count returns every vector once");
    bool seen[25] = {false};
    for (size_t i = 0; i < count; i++) {
        cr_assert(hits[i].id < 25 && !seen[hits[i].id]);
        seen[hits[i].id] = true;
        if (i)
            cr_assert(hits[i].score >= hits[i - 1].score, "l2 results nearest first");
    }
    tqvec_index_info info;
    cr_assert_eq(tqvec_index_get_info(ix, &info), TQVEC_OK);
    cr_assert_eq(info.count, 25);
    cr_assert_eq(info.bits, 3);
    /* 3-bit codes take 3 bits in the sextet layout: 40 coordinates are 20
     * sextets, 5 groups of 3 bytes, plus the norm and the correction. */
    cr_assert_eq(info.bytes_per_vector, 40 * 3 / 8 + 8, "codes plus norm and correction");
    cr_assert_eq(info.refine_bytes_per_vector, 40 * 4, "float vectors");
    tqvec_index_free(ix);
}

Test(search, same_results_on_every_simd_level)
{
    const uint32_t d = 100;
    tqvec_hit a[10], b[10];
    size_t na, nb;
    float q[100];
    for (uint32_t j = 0; j < d; j++)
        q[j] = (float)cos(j * 0.3);
    tq_simd_level best = tq_simd_best_level();
    /* Every layout: nibbles at 1, 2 and 4 bits, sextets at 3 (and under
     * the prod variant at 4, with its 1-bit signs). */
    for (int bits = 1; bits <= 4; bits++)
    for (int variant = 1; variant <= 2; variant++)
    for (int codebook = TQVEC_CODEBOOK_SCALAR; codebook <= TQVEC_CODEBOOK_VECTOR; codebook++) {
        if ((bits == 1 && variant == 2) || (codebook == TQVEC_CODEBOOK_VECTOR && bits - (variant == 2) > 3))
            continue;
        tqvec_index_options o = {.dim = d, .metric = TQVEC_METRIC_IP, .bits = bits, .variant = variant,
                                 .codebook = codebook};
        tqvec_index *ix1, *ix2;
        float *x = tq_malloc(500 * d * sizeof(float));
        for (size_t i = 0; i < 500 * d; i++)
            x[i] = (float)sin(i * 0.77);
        tq_simd_force(TQ_SIMD_SCALAR);
        cr_assert_eq(tqvec_index_create(&o, &ix1, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_add(ix1, x, 500, NULL, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_search(ix1, q, NULL, a, 10, &na, NULL), TQVEC_OK);
        tq_simd_force(best);
        cr_assert_eq(tqvec_index_create(&o, &ix2, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_add(ix2, x, 500, NULL, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_search(ix2, q, NULL, b, 10, &nb, NULL), TQVEC_OK);
        cr_assert(na == nb && same_hits(a, b, na), "%d bits variant %d codebook %d: scalar and %s results differ",
                  bits, variant, codebook, tq_simd_level_name(best));
        tqvec_index_free(ix1);
        tqvec_index_free(ix2);
        tq_free(x);
    }
}

typedef struct search_job {
    const tqvec_index *ix;
    const float *queries;
    tqvec_hit *out;
} search_job;

static void *search_thread(void *arg)
{
    search_job *j = arg;
    size_t count;
    for (int i = 0; i < 50; i++)
        tqvec_index_search(j->ix, j->queries + i * 32, NULL, j->out + i * 10, 10, &count, NULL);
    return NULL;
}

Test(search, concurrent_searches_agree_with_sequential)
{
    tqvec_index *ix = small_index(TQVEC_METRIC_COSINE, TQVEC_REFINE_NONE, 2000, 32);
    float *queries = tq_malloc(50 * 32 * sizeof(float));
    for (int i = 0; i < 50 * 32; i++)
        queries[i] = (float)sin(i * 1.3);
    tqvec_hit *seq = tq_calloc(500, sizeof(tqvec_hit)), *t1 = tq_calloc(500, sizeof(tqvec_hit)),
              *t2 = tq_calloc(500, sizeof(tqvec_hit));
    search_job js = {ix, queries, seq}, j1 = {ix, queries, t1}, j2 = {ix, queries, t2};
    search_thread(&js);
    pthread_t a, b;
    pthread_create(&a, NULL, search_thread, &j1);
    pthread_create(&b, NULL, search_thread, &j2);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    cr_assert(same_hits(seq, t1, 500) && same_hits(seq, t2, 500));
    tqvec_index_free(ix);
    tq_free(queries);
    tq_free(seq);
    tq_free(t1);
    tq_free(t2);
}

Test(search, threads_and_batches_give_the_same_answers)
{
    const uint32_t d = 48;
    const size_t nq = 40;
    tqvec_index *ix = small_index(TQVEC_METRIC_L2, TQVEC_REFINE_CODE8, 3001, d);
    float *queries = tq_malloc(nq * d * sizeof(float));
    for (size_t i = 0; i < nq * d; i++)
        queries[i] = (float)cos(i * 0.61);
    tqvec_hit *one = tq_calloc(nq * 10, sizeof(tqvec_hit)), *many = tq_calloc(nq * 10, sizeof(tqvec_hit));
    size_t count, counts[40];
    for (int scorer = 1; scorer <= 2; scorer++)
        for (uint32_t rerank = 0; rerank <= 3; rerank += 3) {
            tqvec_search_params sp = {.k = 10, .rerank = rerank, .scorer = (uint32_t)scorer};
            for (size_t i = 0; i < nq; i++) {
                cr_assert_eq(tqvec_index_search(ix, queries + i * d, &sp, one + i * 10, 10, &count, NULL), TQVEC_OK);
                cr_assert_eq(count, 10);
            }
            for (uint32_t threads = 0; threads <= 7; threads += 3) {
                sp.threads = threads;
                memset(many, 0, nq * 10 * sizeof(tqvec_hit));
                cr_assert_eq(tqvec_index_search_batch(ix, queries, nq, &sp, many, counts, NULL), TQVEC_OK);
                for (size_t i = 0; i < nq; i++)
                    cr_assert_eq(counts[i], 10);
                cr_assert(same_hits(one, many, nq * 10), "scorer %d rerank %u threads %u: batch differs", scorer,
                          rerank, threads);
            }
        }
    /* A bad query anywhere in a batch: nothing runs, the error names it. */
    queries[7 * d + 5] = NAN;
    tqvec_error err;
    cr_assert_eq(tqvec_index_search_batch(ix, queries, nq, NULL, many, counts, &err), TQVEC_EVALUE);
    cr_assert(strstr(err.message, "query 7"), "%s", err.message);
    tqvec_search_params sp = {.threads = TQVEC_MAX_THREADS + 1};
    cr_assert_eq(tqvec_index_search_batch(ix, queries, 1, &sp, many, counts, &err), TQVEC_EARG);
    tqvec_index_free(ix);
    tq_free(queries);
    tq_free(one);
    tq_free(many);
}

Test(search, bad_inputs_get_clear_errors_and_change_nothing)
{
    const uint32_t d = 8;
    tqvec_index *ix = small_index(TQVEC_METRIC_COSINE, TQVEC_REFINE_NONE, 10, d);
    tqvec_error err;
    float bad[16] = {0};
    for (int i = 0; i < 16; i++)
        bad[i] = 1.0f;
    bad[8 + 3] = NAN;
    cr_assert_eq(tqvec_index_add(ix, bad, 2, NULL, &err), TQVEC_EVALUE);
    cr_assert(strstr(err.message, "vector 1") && strstr(err.message, "coordinate 3"), "%s", err.message);
    bad[8 + 3] = INFINITY;
    cr_assert_eq(tqvec_index_add(ix, bad, 2, NULL, &err), TQVEC_EVALUE);
    bad[8 + 3] = 3e38f;
    cr_assert_eq(tqvec_index_add(ix, bad, 2, NULL, &err), TQVEC_EVALUE, "norm overflow");
    tqvec_index_info info;
    tqvec_index_get_info(ix, &info);
    cr_assert_eq(info.count, 10, "failed adds added nothing");
    float zero[8] = {0};

    tqvec_hit hits[10];
    size_t count = 99;
    cr_assert_eq(tqvec_index_search(ix, zero, NULL, hits, 10, &count, &err), TQVEC_EVALUE);
    cr_assert_eq(count, 0);
    float q[8] = {1, 2, 3, 4, 5, 6, 7, NAN};
    cr_assert_eq(tqvec_index_search(ix, q, NULL, hits, 10, &count, &err), TQVEC_EVALUE);
    q[7] = 1;
    cr_assert_eq(tqvec_index_search(ix, q, NULL, hits, 5, &count, &err), TQVEC_EARG, "cap below k");
    cr_assert(strstr(err.message, "5"), "%s", err.message);
    tqvec_search_params sp = {.k = 3, .rerank = 4};
    cr_assert_eq(tqvec_index_search(ix, q, &sp, hits, 10, &count, &err), TQVEC_EUNSUPPORTED);
    sp = (tqvec_search_params){.k = 3, .reserved = {1}};
    cr_assert_eq(tqvec_index_search(ix, q, &sp, hits, 10, &count, &err), TQVEC_EARG);
    sp = (tqvec_search_params){.k = 3, .rerank = TQVEC_MAX_RERANK + 1};
    cr_assert_eq(tqvec_index_search(ix, q, &sp, hits, 10, &count, &err), TQVEC_EARG);
    sp = (tqvec_search_params){.k = 3};
    cr_assert_eq(tqvec_index_search(ix, q, &sp, hits, 10, &count, &err), TQVEC_OK);
    cr_assert_eq(count, 3);
    tqvec_index_free(ix);

    tqvec_index *none;
    tqvec_index_options o = {.dim = 1};
    cr_assert_eq(tqvec_index_create(&o, &none, &err), TQVEC_EDIM);
    cr_assert_null(none);
    o = (tqvec_index_options){.dim = 16, .bits = 5};
    cr_assert_eq(tqvec_index_create(&o, &none, &err), TQVEC_EARG);
    cr_assert(strstr(err.message, "5"), "%s", err.message);
    o = (tqvec_index_options){.dim = 16, .metric = 9};
    cr_assert_eq(tqvec_index_create(&o, &none, &err), TQVEC_EARG);
    o = (tqvec_index_options){.dim = 16, .refine = 7};
    cr_assert_eq(tqvec_index_create(&o, &none, &err), TQVEC_EARG);
    o = (tqvec_index_options){.dim = 16, .reserved = {0, 1}};
    cr_assert_eq(tqvec_index_create(&o, &none, &err), TQVEC_EARG);
    cr_assert_eq(tqvec_index_create(NULL, &none, &err), TQVEC_EARG);
    tqvec_index_free(NULL);
}

/* A batch rejected past its first chunks must leave the index as if it
 * had never been tried: the rows it encoded are unwound. */
Test(search, rejected_batch_leaves_no_trace)
{
    const uint32_t d = 24;
    const size_t before = 40, tried = 150, after = 50;
    float *x = tq_malloc((before + tried + after) * d * sizeof(float));
    for (size_t i = 0; i < (before + tried + after) * d; i++)
        x[i] = (float)sin((double)i * 0.37) + 0.1f;
    tqvec_index_options o = {.dim = d, .metric = TQVEC_METRIC_L2, .bits = 3, .variant = TQVEC_VARIANT_PROD};
    tqvec_index *clean, *tried_ix;
    tqvec_error err;
    cr_assert_eq(tqvec_index_create(&o, &clean, NULL), TQVEC_OK);
    cr_assert_eq(tqvec_index_create(&o, &tried_ix, NULL), TQVEC_OK);
    cr_assert_eq(tqvec_index_add(clean, x, before, NULL, NULL), TQVEC_OK);
    cr_assert_eq(tqvec_index_add(tried_ix, x, before, NULL, NULL), TQVEC_OK);

    float *bad = x + before * d;
    float saved = bad[100 * d + 7];
    bad[100 * d + 7] = NAN;
    cr_assert_eq(tqvec_index_add(tried_ix, bad, tried, NULL, &err), TQVEC_EVALUE);
    cr_assert(strstr(err.message, "vector 100"), "%s", err.message);
    bad[100 * d + 7] = saved;

    /* The good vectors after the failed batch land where it would have. */
    const float *more = x + (before + tried) * d;
    cr_assert_eq(tqvec_index_add(clean, more, after, NULL, NULL), TQVEC_OK);
    cr_assert_eq(tqvec_index_add(tried_ix, more, after, NULL, NULL), TQVEC_OK);
    tqvec_index_info info;
    tqvec_index_get_info(tried_ix, &info);
    cr_assert_eq(info.count, before + after);
    tqvec_search_params sp = {.k = 20};
    for (size_t qi = 0; qi < 10; qi++) {
        tqvec_hit a[20], b[20];
        size_t na, nb;
        const float *q = x + (qi * 13) * d;
        cr_assert_eq(tqvec_index_search(clean, q, &sp, a, 20, &na, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_search(tried_ix, q, &sp, b, 20, &nb, NULL), TQVEC_OK);
        cr_assert(na == 20 && nb == 20 && same_hits(a, b, na), "query %zu differs after a rejected batch", qi);
    }
    tqvec_index_free(clean);
    tqvec_index_free(tried_ix);
    tq_free(x);
}

Test(api, errstr_and_version)
{
    for (int c = 0; c <= 9; c++)
        cr_assert(tqvec_errstr(c) && strcmp(tqvec_errstr(c), "unknown error"), "code %d has text", c);
    cr_assert_str_eq(tqvec_errstr(12345), "unknown error");
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", TQVEC_VERSION_MAJOR, TQVEC_VERSION_MINOR, TQVEC_VERSION_PATCH);
    cr_assert_str_eq(tqvec_version(), want);
    tqvec_error err;
    cr_assert_eq(tqvec_simd_force("sse9", &err), TQVEC_EARG);
    cr_assert_eq(tqvec_simd_force("scalar", &err), TQVEC_OK);
    cr_assert_str_eq(tqvec_simd_level(), "scalar");
    cr_assert_eq(tqvec_simd_force(tq_simd_level_name(tq_simd_best_level()), &err), TQVEC_OK);
}

/* Under cosine a zero vector is stored and is similar to nothing: every
 * query scores it 0, with codes only, with each kind of refine data and
 * with centering (whose mean it does not move). A zero query is still an
 * error: it asks for no direction. */
Test(search, zero_vectors_under_cosine_score_zero)
{
    const uint32_t d = 16;
    const tqvec_refine refines[] = {TQVEC_REFINE_NONE, TQVEC_REFINE_CODE8, TQVEC_REFINE_FP16, TQVEC_REFINE_FP32};
    for (int center = 0; center < 2; center++)
        for (size_t r = 0; r < sizeof(refines) / sizeof(refines[0]); r++) {
            tqvec_index_options o = {.dim = d, .metric = TQVEC_METRIC_COSINE, .refine = refines[r],
                                     .center = center ? TQVEC_CENTER_FIRST_BATCH : TQVEC_CENTER_NONE};
            tqvec_index *ix;
            tqvec_error err;
            cr_assert_eq(tqvec_index_create(&o, &ix, &err), TQVEC_OK, "%s", err.message);
            float x[4 * 16] = {0};
            for (uint32_t j = 0; j < d; j++) {
                x[j] = 1.0f;                          /* row 0: along the diagonal */
                x[2 * d + j] = j % 2 ? 1.0f : -1.0f;  /* row 2: orthogonal to it; rows 1 and 3 zero */
            }
            cr_assert_eq(tqvec_index_add(ix, x, 4, NULL, &err), TQVEC_OK, "refine %d: %s", refines[r], err.message);
            tqvec_search_params sp = {.k = 4, .rerank = refines[r] == TQVEC_REFINE_NONE ? 0 : 4};
            tqvec_hit hits[4];
            size_t count;
            cr_assert_eq(tqvec_index_search(ix, x, &sp, hits, 4, &count, &err), TQVEC_OK, "%s", err.message);
            cr_assert_eq(count, 4);
            cr_assert_eq(hits[0].id, 0);
            for (size_t h = 1; h < 4; h++) {
                cr_assert(fabsf(hits[h].score) < 0.05f, "refine %d center %d: row %llu scores %g", refines[r],
                          center, (unsigned long long)hits[h].id, (double)hits[h].score);
                /* Exact where nothing approximates it: no centering (norm
                 * 0 zeroes the estimate), or re-ranked on the floats. A
                 * centered code holds -mean, whose estimate is only close. */
                bool exact = !center || refines[r] == TQVEC_REFINE_FP16 || refines[r] == TQVEC_REFINE_FP32;
                if (hits[h].id != 2 && exact)
                    cr_assert_eq(hits[h].score, 0.0f, "refine %d center %d: a zero vector scored %g", refines[r],
                                 center, (double)hits[h].score);
            }
            float zero[16] = {0};
            cr_assert_eq(tqvec_index_search(ix, zero, &sp, hits, 4, &count, &err), TQVEC_EVALUE);
            tqvec_index_free(ix);
        }
}

/* The largest dimension works end to end at every width: stored vectors
 * find themselves first with codes only, and the scalar kernels give the
 * best level's answers bit for bit (the 8-bit table sums of 65,536 lookups
 * stay exact in the 32-bit accumulators). */
Test(search, largest_dimension_at_every_width)
{
    const uint32_t d = TQVEC_MAX_DIM;
    const size_t n = 40;
    float *x = tq_malloc(n * d * sizeof(float));
    tq_rng r;
    tq_rng_seed(&r, 77);
    for (size_t i = 0; i < n * d; i++)
        x[i] = (float)tq_rng_gauss(&r);
    const tq_simd_level best = tq_simd_best_level();
    for (int bits = 1; bits <= 4; bits++) {
        tqvec_hit hits[2][3];
        size_t count[2];
        for (int level = 0; level < 2; level++) {
            tq_simd_force(level ? best : TQ_SIMD_SCALAR);
            tqvec_index_options o = {.dim = d, .metric = TQVEC_METRIC_COSINE, .bits = bits};
            tqvec_index *ix;
            tqvec_error err;
            cr_assert_eq(tqvec_index_create(&o, &ix, &err), TQVEC_OK, "%s", err.message);
            cr_assert_eq(tqvec_index_add(ix, x, n, NULL, &err), TQVEC_OK, "%s", err.message);
            for (size_t i = 0; i < n; i++) {
                tqvec_hit h[3];
                size_t c;
                tqvec_search_params sp = {.k = 3};
                cr_assert_eq(tqvec_index_search(ix, x + i * d, &sp, h, 3, &c, &err), TQVEC_OK, "%s", err.message);
                cr_assert(c == 3 && h[0].id == i, "%d bits: vector %zu found %llu first", bits, i,
                          (unsigned long long)h[0].id);
                if (i == 7) {
                    memcpy(hits[level], h, sizeof(h));
                    count[level] = c;
                }
            }
            tqvec_index_free(ix);
        }
        cr_assert(count[0] == count[1] && same_hits(hits[0], hits[1], count[0]),
                  "%d bits: scalar and %s results differ", bits, tq_simd_level_name(best));
    }
    tq_simd_force(best);
    tq_free(x);
}

/* Partitioned and searched for a target recall@10 (the calibration made
 * when partitioning picks the partitions): the recall reached lands within
 * 0.02 of 0.95 and 0.98 on the shared sets (lower targets overshoot on
 * sets this small: a partition is already a large share of their rows).
 * Probing every partition reaches the full scan's recall. The recall
 * reached is the mean over `seeds` rotations and partitionings: on
 * siftsmall's 100 queries it moves with the seed alone (0.948 to 0.974 at
 * 0.95 over six seeds, the mean 0.961), more than the target allows. */
static void check_calibration(const char *name, tqvec_metric metric, size_t max_queries, unsigned seeds)
{
    dataset ds = {0};
    if (!load(name, max_queries, &ds))
        cr_skip_test("shared dataset %s is not present", name);
    const tqvec_search_params flat = {.k = 10, .rerank = 16};
    const double full = recall_with(&ds, metric, 4, TQVEC_REFINE_FP16, false, &flat);
    const tqvec_search_params all = {.k = 10, .rerank = 16, .nprobe = 65536};
    cr_assert_eq(recall_with(&ds, metric, 4, TQVEC_REFINE_FP16, true, &all), full, "%s: probing every partition",
                 name);
    static const float targets[] = {0.95f, 0.98f};
    for (int i = 0; i < 2; i++) {
        const tqvec_search_params sp = {.k = 10, .target_recall = targets[i]};
        double got = 0;
        for (unsigned seed = 1; seed <= seeds; seed++)
            got += recall_seeded(&ds, metric, 4, TQVEC_REFINE_FP16, true, &sp, seeds > 1 ? seed : 0) / seeds;
        cr_log_info("%s: target %.2f reached %.4f (full scan %.4f)", name, (double)targets[i], got, full);
        cr_assert(fabs(got - (double)targets[i]) <= 0.02, "%s: asked for recall %.2f, reached %.4f", name,
                  (double)targets[i], got);
    }
    unload(&ds);
}

Test(calibration, siftsmall) { check_calibration("siftsmall", TQVEC_METRIC_L2, 0, 4); }
Test(calibration, fashion_mnist) { check_calibration("fashion-mnist", TQVEC_METRIC_L2, 2000, 1); }
Test(calibration, glove_50) { check_calibration("glove-50", TQVEC_METRIC_COSINE, 2000, 1); }

/* A store of several partitioned segments searched for a target recall
 * lands within 0.02 of it: each segment holds about a fifth of a query's
 * 10 nearest and gets about a fifth of the candidates, which its
 * calibration is read for. (Reading each as if it held all ten shows only
 * at scale: a million rows in eight segments reached 0.928 for 0.95; here
 * 0.961 against 0.966.) siftsmall in five segments of 2,000 rows. */
Test(calibration, several_segments, .timeout = 120)
{
    dataset ds = {0};
    if (!load("siftsmall", 0, &ds))
        cr_skip_test("shared dataset siftsmall is not present");
    char dir[] = "/tmp/tqvec-calib-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    tqvec_collection_options o = {.dim = 128, .metric = TQVEC_METRIC_L2, .bits = 4, .refine = TQVEC_REFINE_FP16,
                                  .create = 1, .fsync = TQVEC_FSYNC_NO, .segment_rows = 2000, .partition_rows = 1000,
                                  .merge_factor = TQVEC_MERGE_NEVER /* five sets of centroids */};
    tqvec_collection *c;
    tqvec_error err;
    cr_assert_eq(tqvec_collection_open(dir, &o, &c, &err), TQVEC_OK, "%s", err.message);
    static char keys[10000][24];
    tqvec_element *e = tq_malloc(ds.base.n * sizeof(*e));
    for (size_t i = 0; i < ds.base.n; i++) {
        snprintf(keys[i], sizeof(keys[i]), "%zu", i);
        e[i] = (tqvec_element){.key = keys[i], .key_len = strlen(keys[i]), .vector = ds.base.data + i * 128};
    }
    for (size_t i = 0; i < ds.base.n; i += 1000)
        cr_assert_eq(tqvec_collection_add(c, e + i, 1000, NULL, &err), TQVEC_OK, "%s", err.message);
    cr_assert_eq(tqvec_collection_compact(c, &err), TQVEC_OK, "%s", err.message); /* seals the last */
    cr_assert_eq(tqvec_collection_wait_partitioned(c, &err), TQVEC_OK, "%s", err.message);
    tqvec_collection_info info;
    tqvec_collection_get_info(c, &info);
    cr_assert_eq(info.segments, 5);
    cr_assert_eq(info.unsealed, 0);
    static const float targets[] = {0.95f, 0.98f};
    for (int t = 0; t < 2; t++) {
        const tqvec_search_params sp = {.k = 10, .target_recall = targets[t]};
        tqvec_results *res;
        cr_assert_eq(tqvec_collection_search(c, ds.queries.data, ds.queries.n, &sp, &res, &err), TQVEC_OK, "%s",
                     err.message);
        size_t found = 0;
        for (size_t q = 0; q < ds.queries.n; q++) {
            size_t count;
            const tqvec_match *m = tqvec_results_list(res, q, &count);
            for (size_t a = 0; a < count; a++) {
                char key[16] = {0}; /* keys are not NUL-terminated */
                memcpy(key, m[a].key, m[a].key_len < 15 ? m[a].key_len : 15);
                const long id = strtol(key, NULL, 10);
                for (size_t b = 0; b < 10; b++)
                    found += id == ds.gt.data[q * ds.gt.d + b];
            }
        }
        tqvec_results_free(res);
        const double got = found / (10.0 * ds.queries.n);
        cr_log_info("siftsmall in 5 segments: target %.2f reached %.4f", (double)targets[t], got);
        cr_assert(fabs(got - (double)targets[t]) <= 0.02, "asked for recall %.2f, reached %.4f", (double)targets[t],
                  got);
    }
    cr_assert_eq(tqvec_collection_close(c, &err), TQVEC_OK);
    tq_free(e);
    unload(&ds);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The default centering (auto) is the first batch's mean for l2 and
 * cosine when the first add brings at least 256 vectors, none otherwise
 * and for ip; the info says which it became. With a mean it finds
 * exactly what first-batch centering finds. */
Test(search, auto_centering_follows_the_first_add)
{
    const uint32_t d = 32;
    const size_t n = 600;
    float *x = tq_malloc(n * d * sizeof(float));
    tq_rng r;
    tq_rng_seed(&r, 8);
    for (size_t i = 0; i < n * d; i++)
        x[i] = 3.0f + (float)tq_rng_gauss(&r);
    const struct {
        tqvec_metric metric;
        size_t first;
        int center;
    } cases[] = {
        {TQVEC_METRIC_L2, 256, TQVEC_CENTER_FIRST_BATCH},  {TQVEC_METRIC_L2, 255, TQVEC_CENTER_NONE},
        {TQVEC_METRIC_COSINE, 600, TQVEC_CENTER_FIRST_BATCH}, {TQVEC_METRIC_COSINE, 1, TQVEC_CENTER_NONE},
        {TQVEC_METRIC_IP, 600, TQVEC_CENTER_NONE},
    };
    for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
        tqvec_index *ix, *same;
        tqvec_index_info info;
        tqvec_index_options o = {.dim = d, .metric = cases[t].metric, .bits = 2};
        cr_assert_eq(tqvec_index_create(&o, &ix, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_get_info(ix, &info), TQVEC_OK);
        cr_assert_eq(info.center, TQVEC_CENTER_AUTO, "undecided before any row");
        o.center = cases[t].center;
        cr_assert_eq(tqvec_index_create(&o, &same, NULL), TQVEC_OK);
        for (tqvec_index *i2 = ix;; i2 = same) {
            cr_assert_eq(tqvec_index_add(i2, x, cases[t].first, NULL, NULL), TQVEC_OK);
            if (cases[t].first < n)
                cr_assert_eq(tqvec_index_add(i2, x + cases[t].first * d, n - cases[t].first, NULL, NULL), TQVEC_OK);
            if (i2 == same)
                break;
        }
        cr_assert_eq(tqvec_index_get_info(ix, &info), TQVEC_OK);
        cr_assert_eq(info.center, cases[t].center, "case %zu: centering %d", t, info.center);
        tqvec_hit a[10], b[10];
        size_t na, nb;
        cr_assert_eq(tqvec_index_search(ix, x + 7 * d, NULL, a, 10, &na, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_search(same, x + 7 * d, NULL, b, 10, &nb, NULL), TQVEC_OK);
        cr_assert_eq(na, nb);
        for (size_t i = 0; i < na; i++)
            cr_assert(a[i].id == b[i].id && a[i].score == b[i].score, "case %zu hit %zu", t, i);
        tqvec_index_free(ix);
        tqvec_index_free(same);
    }
    tq_free(x);
    /* A first add rejected for a bad vector leaves the index undecided and
     * the next add decides, whether the mean's sample read the vector
     * (row 299 of 300) or not (the last of 16,385: the sample is 16,384
     * rows evenly spaced). */
    const size_t big = 16385, bad[2][2] = {{300, 299}, {16385, 16384}};
    float *y = tq_malloc(big * d * sizeof(float));
    for (size_t i = 0; i < big * d; i++)
        y[i] = 3.0f + (float)tq_rng_gauss(&r);
    for (int t = 0; t < 2; t++) {
        const size_t rows = bad[t][0], at = bad[t][1];
        tqvec_index *ix;
        tqvec_index_options o = {.dim = d, .metric = TQVEC_METRIC_L2, .bits = 2};
        cr_assert_eq(tqvec_index_create(&o, &ix, NULL), TQVEC_OK);
        const float keep = y[at * d + 5];
        y[at * d + 5] = NAN;
        tqvec_error err;
        cr_assert_eq(tqvec_index_add(ix, y, rows, NULL, &err), TQVEC_EVALUE);
        char want[32];
        snprintf(want, sizeof(want), "vector %zu ", at);
        cr_assert(strstr(err.message, want) != NULL, "%s", err.message);
        tqvec_index_info info;
        cr_assert_eq(tqvec_index_get_info(ix, &info), TQVEC_OK);
        cr_assert(info.count == 0 && info.center == TQVEC_CENTER_AUTO, "%llu rows, centering %d",
                  (unsigned long long)info.count, info.center);
        y[at * d + 5] = keep;
        cr_assert_eq(tqvec_index_add(ix, y, rows, NULL, NULL), TQVEC_OK);
        cr_assert_eq(tqvec_index_get_info(ix, &info), TQVEC_OK);
        cr_assert_eq(info.center, TQVEC_CENTER_FIRST_BATCH);
        tqvec_index_free(ix);
    }
    tq_free(y);
}
