/*
 * Exact ground truth by brute force, in double precision.
 *
 * Distances use the lane-8 double kernels (products of floats are exact in
 * double, so only the sums round, identically on every SIMD path). Ties go
 * to the lower base row, as texmex and ann-benchmarks files do: rows are
 * visited in ascending order and a candidate must be strictly better than the
 * current k-th to enter.
 *
 * Cost is n_queries * n_base * d; the work is blocked so that a batch of
 * queries shares each cache-sized block of base rows (a 60,000 x 784 base is
 * read once per batch rather than once per query), and batches are handed to
 * threads through an atomic counter.
 */
#include "tq_datasets.h"

#include <stdatomic.h>
#include <unistd.h>

#define QUERY_BATCH 32
#define BLOCK_BYTES (256 * 1024)

typedef struct gt_job {
    const tq_matrix *base, *queries;
    tq_metric metric;
    size_t k;
    int32_t *ids;
    double *dist;
    double *base_norm; /* cosine only */
    atomic_size_t next_batch;
    atomic_size_t done;
    void (*progress)(void *ctx, size_t done);
    void *ctx;
    pthread_mutex_t progress_lock;
} gt_job;

/* Sorted best-first list of k (score, row); larger score is better. */
typedef struct best_list {
    size_t len;
    double *score;
    int32_t *row;
} best_list;

static void best_insert(best_list *b, size_t k, double score, int32_t row)
{
    if (b->len == k && !(score > b->score[k - 1]))
        return;
    size_t i = b->len < k ? b->len++ : k - 1;
    /* Shift down every entry this one beats; equal scores stay ahead. */
    while (i > 0 && score > b->score[i - 1]) {
        b->score[i] = b->score[i - 1];
        b->row[i] = b->row[i - 1];
        i--;
    }
    b->score[i] = score;
    b->row[i] = row;
}

static double similarity(const gt_job *job, const float *q, double qnorm, size_t row)
{
    const tq_simd_kernels *k = tq_simd();
    const float *x = job->base->data + row * job->base->d;
    switch (job->metric) {
    case TQ_METRIC_L2:
        return -k->l2sq_f64(q, x, job->base->d);
    case TQ_METRIC_IP:
        return k->dot_f64(q, x, job->base->d);
    case TQ_METRIC_COSINE: {
        double denom = qnorm * job->base_norm[row];
        return denom > 0.0 ? k->dot_f64(q, x, job->base->d) / denom : 0.0;
    }
    }
    return 0.0;
}

static void *gt_worker(void *arg)
{
    gt_job *job = arg;
    const size_t k = job->k, d = job->base->d, nb = job->base->n, nq = job->queries->n;
    size_t block_rows = BLOCK_BYTES / (d * sizeof(float));
    if (block_rows == 0)
        block_rows = 1;
    double *scores = tq_malloc(QUERY_BATCH * k * sizeof(double));
    int32_t *rows = tq_malloc(QUERY_BATCH * k * sizeof(int32_t));
    if (!scores || !rows)
        goto out;
    for (;;) {
        size_t batch = atomic_fetch_add(&job->next_batch, 1);
        size_t q0 = batch * QUERY_BATCH;
        if (q0 >= nq)
            break;
        size_t nbatch = nq - q0 < QUERY_BATCH ? nq - q0 : QUERY_BATCH;
        best_list lists[QUERY_BATCH];
        double qnorm[QUERY_BATCH];
        for (size_t j = 0; j < nbatch; j++) {
            lists[j] = (best_list){0, scores + j * k, rows + j * k};
            const float *q = job->queries->data + (q0 + j) * d;
            qnorm[j] = sqrt(tq_simd()->dot_f64(q, q, d));
        }
        for (size_t b0 = 0; b0 < nb; b0 += block_rows) {
            size_t b1 = b0 + block_rows < nb ? b0 + block_rows : nb;
            for (size_t j = 0; j < nbatch; j++) {
                const float *q = job->queries->data + (q0 + j) * d;
                for (size_t r = b0; r < b1; r++)
                    best_insert(&lists[j], k, similarity(job, q, qnorm[j], r), (int32_t)r);
            }
        }
        for (size_t j = 0; j < nbatch; j++) {
            int32_t *ids = job->ids + (q0 + j) * k;
            for (size_t i = 0; i < k; i++) {
                ids[i] = i < lists[j].len ? lists[j].row[i] : -1;
                if (job->dist) {
                    double s = i < lists[j].len ? lists[j].score[i] : (double)NAN;
                    job->dist[(q0 + j) * k + i] = job->metric == TQ_METRIC_L2 ? -s : s;
                }
            }
        }
        size_t done = atomic_fetch_add(&job->done, nbatch) + nbatch;
        if (job->progress) {
            pthread_mutex_lock(&job->progress_lock);
            job->progress(job->ctx, done);
            pthread_mutex_unlock(&job->progress_lock);
        }
    }
out:
    tq_free(scores);
    tq_free(rows);
    return NULL;
}

int tq_groundtruth(const tq_matrix *base, const tq_matrix *queries, tq_metric metric, size_t k,
                   unsigned threads, int32_t *ids, double *dist,
                   void (*progress)(void *ctx, size_t done), void *ctx, tq_error *err)
{
    if (base->d != queries->d)
        return tq_err(err, TQ_EDIM, "base has dimension %zu but queries have %zu", base->d, queries->d);
    if (k == 0)
        return tq_err(err, TQ_EARG, "k must be at least 1");
    if (base->n > INT32_MAX)
        return tq_err(err, TQ_EARG, "base has %zu rows; ground truth ids are int32", base->n);
    gt_job job = {
        .base = base, .queries = queries, .metric = metric, .k = k, .ids = ids, .dist = dist,
        .progress = progress, .ctx = ctx,
    };
    atomic_init(&job.next_batch, 0);
    atomic_init(&job.done, 0);
    pthread_mutex_init(&job.progress_lock, NULL);
    int rc = TQ_OK;
    if (metric == TQ_METRIC_COSINE) {
        job.base_norm = tq_malloc(base->n * sizeof(double));
        if (!job.base_norm) {
            rc = tq_err(err, TQ_ENOMEM, "out of memory for base norms");
            goto done;
        }
        for (size_t i = 0; i < base->n; i++) {
            const float *x = base->data + i * base->d;
            job.base_norm[i] = sqrt(tq_simd()->dot_f64(x, x, base->d));
        }
    }
    if (threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (threads > 256)
        threads = 256;
    pthread_t tid[256];
    unsigned started = 0;
    for (; started + 1 < threads; started++)
        if (pthread_create(&tid[started], NULL, gt_worker, &job) != 0)
            break;
    gt_worker(&job); /* the calling thread works too */
    for (unsigned i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    if (atomic_load(&job.done) != queries->n)
        rc = tq_err(err, TQ_ENOMEM, "out of memory in a ground-truth worker");
done:
    tq_free(job.base_norm);
    pthread_mutex_destroy(&job.progress_lock);
    return rc;
}
