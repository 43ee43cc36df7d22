/*
 * The evaluation's arithmetic, kept apart from I/O so tests can check it on
 * hand-computed cases: recall against exact ground truth, latency
 * summaries, and the Pareto frontier of recall against QPS.
 *
 * Recall definitions (as in the TurboQuant and ann-benchmarks papers):
 *   recall@k     |k results ∩ true top-k| / k, averaged over queries
 *   recall@1     fraction of queries whose first result is the true nearest
 *   recall@1@k   fraction whose true nearest is anywhere in the k results
 *   recall@k by distance  ann-benchmarks' "knn" measure: a result counts
 *                when its exact distance is at most the k-th true
 *                neighbour's distance + 1e-3, so a result tied with a true
 *                neighbour (duplicates in the data) is not a miss. Distances
 *                as ann-benchmarks defines them: euclidean (not squared),
 *                angular = 1 - cosine, dot = -inner product.
 * A truth row may end in -1 (the base had fewer than k rows); those slots
 * are not counted, so a perfect answer on a tiny base still scores 1.
 */
#include "tq_tools.h"

void tool_recall_init(tool_recall *r, size_t k)
{
    *r = (tool_recall){.k = k};
}

void tool_recall_add(tool_recall *r, const int64_t *found, size_t nfound, const int32_t *truth)
{
    size_t valid = 0, hits = 0;
    for (size_t t = 0; t < r->k; t++) {
        if (truth[t] < 0)
            continue;
        valid++;
        for (size_t f = 0; f < nfound && f < r->k; f++)
            if (found[f] == truth[t]) {
                hits++;
                break;
            }
    }
    r->queries++;
    r->truth_slots += valid;
    r->hits += hits;
    if (truth[0] >= 0) {
        r->top1 += nfound > 0 && found[0] == truth[0];
        for (size_t f = 0; f < nfound && f < r->k; f++)
            if (found[f] == truth[0]) {
                r->one_in_k++;
                break;
            }
    }
}

double tool_distance(int metric, const float *a, const float *b, size_t d)
{
    double dot = 0, aa = 0, bb = 0, l2 = 0;
    for (size_t i = 0; i < d; i++) {
        const double x = a[i], y = b[i];
        dot += x * y;
        aa += x * x;
        bb += y * y;
        l2 += (x - y) * (x - y);
    }
    switch (metric) {
    case TQVEC_METRIC_L2:
        return sqrt(l2);
    case TQVEC_METRIC_COSINE:
        return aa > 0 && bb > 0 ? 1.0 - dot / sqrt(aa * bb) : 1.0;
    default:
        return -dot;
    }
}

void tool_recall_add_by_distance(tool_recall *r, const double *found_dist, size_t nfound, double kth_true_dist,
                                 size_t true_slots)
{
    size_t hits = 0;
    for (size_t f = 0; f < nfound && f < r->k; f++)
        hits += found_dist[f] <= kth_true_dist + TOOL_RECALL_EPSILON;
    r->dist_hits += hits < true_slots ? hits : true_slots;
    r->dist_slots += true_slots;
}

void tool_recall_add_query(tool_recall *r, int metric, const tq_matrix *base, const float *q, const int64_t *found,
                           size_t nfound, const int32_t *truth)
{
    tool_recall_add(r, found, nfound, truth);
    size_t slots = 0;
    while (slots < r->k && truth[slots] >= 0)
        slots++;
    if (slots == 0)
        return;
    double dist[1000]; /* k <= 1000 */
    for (size_t j = 0; j < nfound && j < r->k && j < 1000; j++)
        dist[j] = tool_distance(metric, q, base->data + (size_t)found[j] * base->d, base->d);
    const double kth = tool_distance(metric, q, base->data + (size_t)truth[slots - 1] * base->d, base->d);
    tool_recall_add_by_distance(r, dist, nfound < r->k ? nfound : r->k, kth, slots);
}

double tool_recall_at_k_by_distance(const tool_recall *r)
{
    return r->dist_slots ? (double)r->dist_hits / (double)r->dist_slots : 0.0;
}

double tool_recall_at_k(const tool_recall *r)
{
    return r->truth_slots ? (double)r->hits / (double)r->truth_slots : 0.0;
}

double tool_recall_at_1(const tool_recall *r)
{
    return r->queries ? (double)r->top1 / (double)r->queries : 0.0;
}

double tool_recall_1_at_k(const tool_recall *r)
{
    return r->queries ? (double)r->one_in_k / (double)r->queries : 0.0;
}

void tool_latency_summarize(double *us, size_t n, tool_latency *out)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += us[i];
    out->mean = n ? sum / (double)n : 0.0;
    /* tool_quantile sorts; the later calls find it sorted. */
    out->p50 = tool_quantile(us, n, 0.50);
    out->p95 = tool_quantile(us, n, 0.95);
    out->p99 = tool_quantile(us, n, 0.99);
}

void tool_pareto(const double *recall, const double *qps, size_t n, bool *on)
{
    for (size_t i = 0; i < n; i++) {
        on[i] = true;
        for (size_t j = 0; j < n && on[i]; j++)
            if (recall[j] >= recall[i] && qps[j] >= qps[i] && (recall[j] > recall[i] || qps[j] > qps[i]))
                on[i] = false;
    }
}
