/*
 * Partitioning a set of rows for sublinear search (an inverted file): the
 * rows are clustered by k-means on their own vectors and stored grouped by
 * cluster, so a query scores the centroids first and scans only the rows
 * of the few partitions nearest to it.
 *
 * The codes stay what they were (TurboQuant needs no training): only the
 * order of the rows changes, and beside them go the centroids and each
 * partition's first row. Nothing here is on the write path; a set of rows
 * is partitioned when it is sealed, compacted or, in memory, asked to be.
 *
 * What the clustering sees: each row reconstructed in the space its codes
 * were made from (the refine floats when kept, else decoded codes; unit
 * vectors under cosine). l2 runs Lloyd's k-means; ip and cosine run
 * spherical k-means (centroids kept at unit length, rows assigned by inner
 * product), which is what their queries rank by. Training uses a seeded
 * sample of at most TRAIN_PER_LIST rows per centroid; every row is then
 * assigned to its best centroid once. Both steps rank every centroid for
 * each row as a search ranks them for a query (8-bit centroids, see
 * tq_centroid_dots), split over the worker pool; the 8-bit dot products
 * are exact integers, so a set of rows is partitioned identically on any
 * CPU and with any thread count.
 *
 * Calibration: a seeded sample of the rows, used as queries, gets its exact
 * nearest neighbours among the other rows, and the partitions are ranked
 * for each as a search ranks them; the share of those neighbours lying in
 * the b best-ranked partitions, for b from 1 to nlist, is the set's probe
 * curve. A search asked for a recall instead of a probe count reads the
 * share of partitions it needs off the curves (tq_partition_share). The
 * same sample also measures how much of what the probed partitions hold a
 * search finds: the share of a query's K nearest (K = 1 .. 10) the full
 * scan keeps at each re-rank depth 1 to 16, from one scan without
 * re-ranking (a true neighbour is kept by a re-rank of depth D exactly
 * when it is among the first stage's candidates, tq_first_stage_candidates),
 * so that the search can trade scanned partitions against re-ranked rows.
 * The search multiplies the two; since a partial scan finds more than
 * that product (see joint_curve), the curve stores, at the calibration's
 * depth, what a search probing b partitions finds divided by what the
 * full scan finds, so that the product is what was measured.
 */
#include "tq_index.h"

/* Training rows per centroid, and Lloyd iterations: FAISS's defaults are
 * 256 and 25; measured here on glove-100 and siftsmall, 32 rows and 8
 * iterations lose under 0.005 recall@10 at equal probes and train several
 * times faster, and the sample bounds the cost whatever the set's size. */
#define TRAIN_PER_LIST 32u
#define TRAIN_ITERATIONS 8u
/* Calibration: sample queries and the neighbours each is scored on (the
 * recall@10 a search is asked for). The sample's noise is about
 * 1/sqrt(10 queries) of recall: with 256 a set's curve was off by up to
 * 0.014 (lex-cohere at 0.90 asked, 0.919 reached; 0.905 with 1,024), so
 * smaller sets, where it is cheap, get up to 1,024; the exact neighbours
 * cost queries x rows dot products, held to CALIBRATION_PAIRS (from
 * 131,072 rows on, 256 queries as before). */
#define CALIBRATION_QUERIES_MIN 256u
#define CALIBRATION_QUERIES_MAX 1024u
#define CALIBRATION_PAIRS (1u << 27)
#define CALIBRATION_K TQ_CURVE_K
/* Rows an assignment pass checks for a stop between, and at least gives
 * each worker. */
#define ROW_CHUNK 64u

/* Centroids (nlist * d floats) within this are allowed whatever the scan
 * balance below says: on fashion-mnist's 60,000 images (d = 784) the 4
 * sqrt(n) rule's 937 partitions (2.9 MB of centroids, streamed from memory
 * for every query) were most of a query's time, and 150 to 300 partitions
 * doubled QPS at recall 0.95; glove-100 (d = 100) did as well at 1,300 as
 * at 2,334, in half the partitioning time. */
#define CENTROID_BYTES_MAX (512u << 10)
/* About the partitions a search for recall 0.95 probes, for the balance
 * below (fitted: at a million rows, d = 128, 4 bits, 2,048 partitions
 * answered 20,507 QPS at recall 0.950 where 1,024 needed a deeper probe,
 * 16,839 at 0.967, and 4,096 gave 15,319). */
#define PROBED_PARTITIONS 16.0

uint32_t tq_partition_default_nlist(const tq_codec *c, size_t rows)
{
    /* 4 sqrt(n), as the usual IVF rule of thumb, but never partitions of
     * fewer than TQ_MIN_PARTITION_ROWS rows on average (below that a scan
     * block is mostly other partitions' rows), nor more centroids than
     * pay: a query scores all nlist (counted as 2d bytes each, as when
     * they were scored in half precision; the 8-bit table is d bytes and
     * scored several times faster, yet at a million rows, d = 128, 3,000
     * and 4,243 partitions answered recall 0.95 no faster than this rule's
     * 2,121) and scans about P partitions of n / nlist rows (b code bytes
     * each), least in all at nlist = sqrt(P n b / 2d). Centroids within
     * CENTROID_BYTES_MAX are allowed whatever that says. Capping at
     * CENTROID_BYTES_MAX alone made partitions grow with n past a million
     * rows: four million (d = 128) in 1,024 partitions answered 1,115 QPS
     * at recall 0.95, in 4,096 9,857. */
    const double d = c->cfg.d, b = (double)tq_codec_bytes_per_vector(c);
    double want = 4.0 * sqrt((double)rows);
    const double most = (double)rows / TQ_MIN_PARTITION_ROWS,
                 pays = fmax(sqrt(PROBED_PARTITIONS * (double)rows * b / (2.0 * d)), CENTROID_BYTES_MAX / (4.0 * d));
    if (want > most)
        want = most;
    if (want > pays)
        want = pays;
    if (want > TQ_MAX_NLIST)
        want = TQ_MAX_NLIST;
    return want < 1.0 ? 1u : (uint32_t)want;
}

/* The largest magnitude of an 8-bit code, a centroid's (a signed byte) or
 * the query's (an unsigned byte around 128): symmetric, so that 0 is a
 * level and both products and sums stay exact in the kernel's 32 bits. */
#define Q8_MAX 127.0f

/* Scaling each dimension by its own range over the centroids keeps 8 bits
 * of precision in every one (a global scale left the narrow dimensions of
 * uncentered data a few levels); shifting by the midrange uses both signs.
 * What the shift drops, <query, mid>, is the same for every centroid and
 * added back, so sets with different tables still rank together. */
tq_centroid_table *tq_centroid_table_new(const float *centroids, uint32_t nlist, uint32_t d)
{
    const uint32_t groups = (d + 3) / 4, blocks = (nlist + 15) / 16;
    tq_centroid_table *t = tq_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    *t = (tq_centroid_table){.nlist = nlist, .d = d, .groups = groups};
    t->mid = tq_malloc(d * sizeof(float));
    t->scale = tq_malloc(d * sizeof(float));
    t->code_sums = tq_calloc((size_t)blocks * 16, sizeof(int32_t));
    t->codes = tq_calloc((size_t)blocks * groups * 64, 1);
    if (!t->mid || !t->scale || !t->code_sums || !t->codes) {
        tq_centroid_table_free(t);
        return NULL;
    }
    for (uint32_t j = 0; j < d; j++) {
        float lo = centroids[j], hi = centroids[j];
        for (uint32_t p = 1; p < nlist; p++) {
            const float x = centroids[(size_t)p * d + j];
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        t->mid[j] = 0.5f * lo + 0.5f * hi;
        const float half = 0.5f * hi - 0.5f * lo;
        t->scale[j] = half > 0.0f && isfinite(half) ? half / Q8_MAX : 0.0f;
        const float inv = t->scale[j] > 0.0f ? 1.0f / t->scale[j] : 0.0f;
        for (uint32_t p = 0; p < nlist; p++) {
            float v = rintf((centroids[(size_t)p * d + j] - t->mid[j]) * inv);
            v = v > Q8_MAX ? Q8_MAX : v < -Q8_MAX ? -Q8_MAX : v;
            t->codes[(((size_t)(p / 16) * groups + j / 4) * 16 + p % 16) * 4 + j % 4] = (int8_t)v;
            t->code_sums[p] += (int32_t)v;
        }
    }
    return t;
}

void tq_centroid_table_free(tq_centroid_table *t)
{
    if (!t)
        return;
    tq_free(t->mid);
    tq_free(t->scale);
    tq_free(t->code_sums);
    tq_free(t->codes);
    tq_free(t);
}

/* The scratch for m queries: their 8-bit forms (4 groups bytes each),
 * their sums (16 per block of centroids each), then one query scaled. */
static size_t q8_bytes(size_t groups, size_t m)
{
    return (m * 4 * groups + 63) / 64 * 64;
}

static size_t sums_stride(uint32_t nlist)
{
    return ((size_t)nlist + 15) / 16 * 16;
}

size_t tq_centroid_scratch_bytes(uint32_t nlist, uint32_t d, size_t m)
{
    return q8_bytes(((size_t)d + 3) / 4, m) + m * sums_stride(nlist) * sizeof(int32_t) + (size_t)d * sizeof(float);
}

/* One query in 8 bits for the table, into q8 (y: d floats of room);
 * returns the unit of its levels. Written for the compiler to vectorize (a
 * query is a few hundred dimensions and this is per set and query): the
 * largest |y| compared as integers (the same order for non-negative
 * floats), rounding to nearest even by adding and subtracting 1.5 2^23
 * (|values| <= 127 here). */
static float quantize_query(const tq_centroid_table *t, const float *query, float *restrict y, uint8_t *restrict q8)
{
    const uint32_t d = t->d;
    uint32_t most_bits = 0;
    for (uint32_t j = 0; j < d; j++) {
        y[j] = query[j] * t->scale[j];
        uint32_t u;
        memcpy(&u, &y[j], 4);
        u &= 0x7FFFFFFFu;
        most_bits = u > most_bits ? u : most_bits;
    }
    float most;
    memcpy(&most, &most_bits, 4);
    /* y_j ~ unit (q8_j - 128); padding dimensions 128, times a zero code */
    const float unit = most > 0.0f ? most / Q8_MAX : 1.0f, inv = most > 0.0f ? Q8_MAX / most : 0.0f;
    const float round = 0x1.8p23f;
    for (uint32_t j = 0; j < d; j++)
        q8[j] = (uint8_t)(128 + (int32_t)((y[j] * inv + round) - round));
    for (uint32_t j = d; j < 4 * t->groups; j++)
        q8[j] = 128;
    return unit;
}

/* Queries [0, m) quantized and summed against every centroid: their
 * units into unit[], their sums at the scratch's sums region. */
static int32_t *q8_sums(const tq_centroid_table *t, const float *queries, size_t m, void *scratch, float *unit)
{
    uint8_t *q8 = scratch;
    int32_t *sums = (int32_t *)(void *)(q8 + q8_bytes(t->groups, m));
    float *y = (float *)(void *)(sums + m * sums_stride(t->nlist));
    for (size_t i = 0; i < m; i++)
        unit[i] = quantize_query(t, queries + i * t->d, y, q8 + i * 4 * t->groups);
    tq_simd()->dot_q8_blocks(q8, m, t->codes, (t->nlist + 15) / 16, t->groups, sums);
    return sums;
}

void tq_centroid_dots(const tq_centroid_table *t, const float *query, void *scratch, float *out)
{
    float unit;
    const int32_t *dots = q8_sums(t, query, 1, scratch, &unit);
    const float shift = tq_simd()->dot(query, t->mid, t->d);
    /* |dots| <= 255 127 d and |128 sums| <= 128 127 d, and the difference
     * is the sum of (q8 - 128) c8, at most 128 127 d: all within 32 bits
     * up to d = TQ_MAX_DIM (65,536) */
    for (uint32_t p = 0; p < t->nlist; p++)
        out[p] = unit * (float)(dots[p] - 128 * t->code_sums[p]) + shift;
}

void tq_centroid_assign(const tq_centroid_table *t, const float *rows, size_t m, const float *penalty,
                        void *scratch, uint32_t *best)
{
    float unit[TQ_CENTROID_ROWS];
    for (size_t i0 = 0; i0 < m; i0 += TQ_CENTROID_ROWS) {
        const size_t mm = m - i0 < TQ_CENTROID_ROWS ? m - i0 : TQ_CENTROID_ROWS;
        const int32_t *dots = q8_sums(t, rows + i0 * t->d, mm, scratch, unit);
        /* <row, mid> is the same for every centroid: left out */
        for (size_t i = 0; i < mm; i++)
            best[i0 + i] = tq_simd()->argmax_q8(dots + i * sums_stride(t->nlist), t->code_sums, penalty, unit[i],
                                                t->nlist);
    }
}

void tq_partitioning_free(tq_partitioning *p)
{
    if (!p)
        return;
    tq_free(p->centroids);
    tq_centroid_table_free(p->table);
    tq_free(p->curve);
    tq_free(p->half_norms);
    tq_free(p->offsets);
    tq_free(p->order);
    memset(p, 0, sizeof(*p));
}

tq_partitions tq_partitioning_view(const tq_partitioning *p)
{
    tq_partitions v = {.nlist = p->nlist, .centroids = p->centroids, .table = p->table,
                       .half_norms = p->half_norms, .offsets = p->offsets, .npoints = p->npoints,
                       .curve = p->curve, .quality = p->quality};
    memcpy(v.quality_at, p->quality_at, sizeof(v.quality_at));
    return v;
}

void tq_partition_half_norms(const float *centroids, uint32_t nlist, uint32_t d, float *half_norms)
{
    const tq_simd_kernels *k = tq_simd();
    for (uint32_t p = 0; p < nlist; p++)
        half_norms[p] = 0.5f * k->dot(centroids + (size_t)p * d, centroids + (size_t)p * d, d);
}

/* Part `part` of nparts' even shares of [0, n): [*from, *to). */
static void part_share(size_t n, unsigned nparts, unsigned part, size_t *from, size_t *to)
{
    const size_t per = (n + nparts - 1) / nparts;
    *from = part * per < n ? part * per : n;
    *to = *from + per < n ? *from + per : n;
}

/* Has the caller asked the work to stop? */
static bool stopping(const bool *stop)
{
    return stop && __atomic_load_n(stop, __ATOMIC_RELAXED);
}

/* One assignment pass: rows x[0..n) to their best centroid, ranked as a
 * search ranks partitions (tq_centroid_dots): a row then lies in the
 * partition its own query would probe first. The 8-bit dot products read a
 * quarter of the bytes of float centroids and take 64 products an
 * instruction (VNNI), TQ_CENTROID_ROWS rows to each pass over the table:
 * a million rows (d = 128, 2,121 partitions) took 13.6 s to partition
 * with float dot products, 4.1 s so. */
typedef struct assign_job {
    tq_metric metric;
    uint32_t d, nlist;
    const float *x;          /* n * d */
    size_t n;
    const float *centroids;
    float *half_norms;       /* nlist: refreshed by each pass */
    tq_centroid_table *table; /* the centroids in 8 bits: rebuilt whenever they move */
    uint32_t *assign;        /* n */
    uint8_t *scratch;        /* nparts * assign_scratch_bytes() */
    unsigned nparts;
    const bool *stop;        /* checked every ROW_CHUNK rows (see tq_partition_rows) */
} assign_job;

/* One part's scratch (tq_centroid_assign's), a whole number of cache lines. */
static size_t assign_scratch_bytes(uint32_t nlist, uint32_t d)
{
    return (tq_centroid_scratch_bytes(nlist, d, TQ_CENTROID_ROWS) + 63) / 64 * 64;
}

static void assign_part(void *arg, unsigned part)
{
    assign_job *job = arg;
    size_t r0, r1;
    part_share(job->n, job->nparts, part, &r0, &r1);
    const size_t bytes = assign_scratch_bytes(job->nlist, job->d);
    uint8_t *scratch = job->scratch + part * bytes;
    const float *penalty = job->metric == TQ_METRIC_L2 ? job->half_norms : NULL;
    for (size_t i = r0; i < r1 && !stopping(job->stop); i += ROW_CHUNK) {
        const size_t m = r1 - i < ROW_CHUNK ? r1 - i : ROW_CHUNK;
        tq_centroid_assign(job->table, job->x + i * job->d, m, penalty, scratch, job->assign + i);
    }
}

/* The centroids moved: their half norms and 8-bit table again. */
static int refresh_centroids(assign_job *job)
{
    tq_partition_half_norms(job->centroids, job->nlist, job->d, job->half_norms);
    tq_centroid_table_free(job->table);
    job->table = tq_centroid_table_new(job->centroids, job->nlist, job->d);
    return job->table ? TQ_OK : TQ_ENOMEM;
}

static void assign_rows(const assign_job *job)
{
    unsigned nparts = job->nparts;
    if (nparts > job->n / ROW_CHUNK)
        nparts = job->n / ROW_CHUNK ? (unsigned)(job->n / ROW_CHUNK) : 1;
    assign_job j = *job;
    j.nparts = nparts;
    tq_pool_run(nparts, assign_part, &j);
}

/* Spherical k-means keeps centroids at unit length. */
static void normalize_centroids(float *centroids, uint32_t nlist, uint32_t d)
{
    const tq_simd_kernels *k = tq_simd();
    for (uint32_t p = 0; p < nlist; p++) {
        float *c = centroids + (size_t)p * d;
        const float sq = k->dot(c, c, d);
        if (sq > 0.0f)
            k->scale(c, d, 1.0f / sqrtf(sq));
    }
}

/* New centroids as the means of their rows (normalized for spherical
 * k-means). An empty centroid takes over half of the largest cluster: a
 * copy of that cluster's centroid nudged apart from it, as FAISS does. */
static void update_centroids(const assign_job *job, float *centroids, size_t *count, tq_rng *rng)
{
    const uint32_t d = job->d, nlist = job->nlist;
    double *sum = tq_calloc((size_t)nlist * d, sizeof(double));
    memset(count, 0, nlist * sizeof(size_t));
    if (!sum)
        return; /* keep the previous centroids: a slower clustering, not a wrong one */
    for (size_t i = 0; i < job->n; i++) {
        const uint32_t p = job->assign[i];
        const float *x = job->x + i * d;
        double *s = sum + (size_t)p * d;
        for (uint32_t j = 0; j < d; j++)
            s[j] += (double)x[j];
        count[p]++;
    }
    for (uint32_t p = 0; p < nlist; p++)
        if (count[p])
            for (uint32_t j = 0; j < d; j++)
                centroids[(size_t)p * d + j] = (float)(sum[(size_t)p * d + j] / (double)count[p]);
    for (uint32_t p = 0; p < nlist; p++) {
        if (count[p])
            continue;
        uint32_t big = 0;
        for (uint32_t q = 1; q < nlist; q++)
            if (count[q] > count[big])
                big = q;
        if (count[big] < 2)
            break;
        float *a = centroids + (size_t)p * d, *b = centroids + (size_t)big * d;
        for (uint32_t j = 0; j < d; j++) {
            const float nudge = (float)((tq_rng_uniform(rng) - 0.5) * 1e-3) * (fabsf(b[j]) + 1e-6f);
            a[j] = b[j] + nudge;
            b[j] = b[j] - nudge;
        }
        count[p] = count[big] / 2;
        count[big] -= count[p];
    }
    if (job->metric != TQ_METRIC_L2)
        normalize_centroids(centroids, nlist, d);
    tq_free(sum);
}

/* Rows which[0..n) of a set reconstructed into x (n * d floats). */
static void reconstruct_rows(const tq_codec *c, const tq_rows *rows, const uint32_t *which, size_t n,
                             tq_encode_scratch *s, float *x)
{
    for (size_t i = 0; i < n; i++)
        tq_codec_reconstruct(c, rows, which[i], s, x + i * c->cfg.d);
}


/* Exact neighbours of the sample queries over one slab of rows, the
 * queries split over the worker pool. */
typedef struct calib_job {
    tq_metric metric;
    uint32_t d;
    const float *q;             /* nq sample vectors */
    const uint32_t *qrow;       /* their rows */
    size_t nq;
    const float *x;             /* the slab: rows [r0, r0 + m) */
    const float *half_sq;       /* ||x||^2 / 2 of each slab row (l2) */
    size_t r0, m;
    float *best;                /* nq * CALIBRATION_K scores, best first */
    uint32_t *best_row;
    float *dots;                /* nparts * CALIB_QUERY_BLOCK * CALIB_ROW_BLOCK */
    unsigned nparts;
} calib_job;

#define CALIB_QUERY_BLOCK 16u
/* Hits of the calibration's ranking by the codes: the deepest re-rank's
 * reach (see calibrate). */
#define CALIB_DEPTH_HITS tq_first_stage_candidates((size_t)(CALIBRATION_K + 1) << (TQ_CALIB_DEPTHS - 1))
#define CALIB_ROW_BLOCK 512u

static void calib_part(void *arg, unsigned part)
{
    calib_job *job = arg;
    const tq_simd_kernels *k = tq_simd();
    size_t q0, q1;
    part_share(job->nq, job->nparts, part, &q0, &q1);
    float *dots = job->dots + (size_t)part * CALIB_QUERY_BLOCK * CALIB_ROW_BLOCK;
    for (size_t qb = q0; qb < q1; qb += CALIB_QUERY_BLOCK) {
        const size_t nqb = q1 - qb < CALIB_QUERY_BLOCK ? q1 - qb : CALIB_QUERY_BLOCK;
        for (size_t i0 = 0; i0 < job->m; i0 += CALIB_ROW_BLOCK) {
            const size_t nr = job->m - i0 < CALIB_ROW_BLOCK ? job->m - i0 : CALIB_ROW_BLOCK;
            k->dot_matrix(job->q + qb * job->d, nqb, job->x + i0 * job->d, nr, job->d, dots);
            for (size_t a = 0; a < nqb; a++) {
                const size_t qi = qb + a;
                float *best = job->best + qi * CALIBRATION_K;
                uint32_t *best_row = job->best_row + qi * CALIBRATION_K;
                for (size_t r = 0; r < nr; r++) {
                    const size_t row = job->r0 + i0 + r;
                    /* l2 ranks by <q, x> - ||x||^2 / 2, as the centroids. */
                    const float sc = job->metric == TQ_METRIC_L2 ? dots[a * nr + r] - job->half_sq[i0 + r]
                                                                 : dots[a * nr + r];
                    if (!(sc > best[CALIBRATION_K - 1]) || row == job->qrow[qi])
                        continue;
                    size_t at = CALIBRATION_K - 1;
                    while (at > 0 && sc > best[at - 1]) {
                        best[at] = best[at - 1];
                        best_row[at] = best_row[at - 1];
                        at--;
                    }
                    best[at] = sc;
                    best_row[at] = (uint32_t)row;
                }
            }
        }
    }
}

/* prank[p] = where partition p ranks, best first, by packed keys
 * (keys[p] = tq_collector_pack(p, score): score, then lower index). A
 * stable radix sort on the score alone, from index order, leaves equal
 * scores in index order, so the ranks are a full sort's; qsort with a
 * comparison callback was a sixteenth of an in-memory build at glove-50's
 * 1,265 partitions. keys holds 2 nlist: the keys, then scratch; both are
 * overwritten. */
static void rank_partitions(uint64_t *keys, uint32_t nlist, uint32_t *prank)
{
    uint64_t *a = keys, *b = keys + nlist;
    /* in place: the score's complement above the index, so that
     * ascending is best first */
    for (uint32_t p = 0; p < nlist; p++)
        a[p] = (uint64_t)~(uint32_t)(a[p] >> 32) << 32 | p;
    for (unsigned shift = 32; shift < 64; shift += 8) {
        uint32_t at[256] = {0};
        for (uint32_t i = 0; i < nlist; i++)
            at[(a[i] >> shift) & 255]++;
        uint32_t sum = 0;
        for (unsigned v = 0; v < 256; v++) {
            const uint32_t c = at[v];
            at[v] = sum;
            sum += c;
        }
        for (uint32_t i = 0; i < nlist; i++)
            b[at[(a[i] >> shift) & 255]++] = a[i];
        uint64_t *t = a;
        a = b;
        b = t;
    }
    for (uint32_t r = 0; r < nlist; r++)
        prank[(uint32_t)a[r]] = r;
}

static int compare_u32(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* What a search probing b partitions finds, for the probe curve (see the
 * top of this file): the search multiplies the curve by the full scan's
 * share, and a product of coverage and that share assumed that the
 * neighbours probing misses and those the codes lose are independent, and
 * that a neighbour keeps its place among fewer rows. A partial scan finds
 * more: the rows of unprobed partitions no longer compete for the first
 * stage's candidates, and the neighbours in far partitions are the ones
 * the codes rank low anyway. A recall asked for landed up to 0.026 above
 * the target at 0.90 (siftsmall, lex-cohere), probing more than it needed.
 * So each sample neighbour counts where it is found for real: its
 * partition among the first b, and fewer than the calibration depth's
 * window of the rows ranked ahead of it in theirs. */
typedef struct found_counts {
    double per;        /* the depth's first-stage candidates per neighbour (see calibrate) */
    int64_t *at;       /* at[(K - 1) (nlist + 2) + b]: neighbours j < K found probing b partitions,
                          as a difference array over b */
    uint32_t *ahead;   /* CALIB_DEPTH_HITS: scratch */
} found_counts;

/* One sample query's neighbours: prank[p] is where partition p ranks for
 * it, hits its full scan's ranking, place[j] where neighbour j came in it
 * (CALIB_DEPTH_HITS: not in it). */
static void count_found(found_counts *fc, uint32_t nlist, const uint32_t *prank, const uint32_t *assign,
                        const uint32_t *neighbours, const tq_hit *hits, size_t nhits, const size_t *place)
{
    for (size_t j = 0; j < CALIBRATION_K; j++) {
        const uint32_t row = neighbours[j];
        if (row == UINT32_MAX)
            continue;
        /* the partitions of the rows ranked ahead of it, nearest first */
        const size_t n_ahead = place[j] < nhits ? place[j] : nhits;
        for (size_t h = 0; h < n_ahead; h++)
            fc->ahead[h] = prank[assign[hits[h].id]];
        qsort(fc->ahead, n_ahead, sizeof(uint32_t), compare_u32);
        const uint32_t home = prank[assign[row]];
        for (size_t kk = j + 1; kk <= CALIBRATION_K; kk++) {
            /* Found probing b partitions when its own is among them (b >
             * home) and fewer than `window` rows ahead of it are (b <= the
             * window-th nearest partition of theirs). */
            const size_t window = (size_t)ceil(kk * fc->per) + 1;
            const uint32_t last = n_ahead >= window ? fc->ahead[window - 1] : nlist;
            if (last > home) {
                fc->at[(kk - 1) * ((size_t)nlist + 2) + home + 1]++;
                fc->at[(kk - 1) * ((size_t)nlist + 2) + last + 1]--;
            }
        }
    }
}

/* The curve's points (at point_b[i] partitions) as what was found there
 * relative to the full scan's share (quality_at[depth_index]); pairs[j]:
 * the sample's j-th neighbours. */
static void found_points(found_counts *fc, uint32_t nlist, const uint64_t *pairs, const uint32_t *point_b,
                         unsigned depth_index, tq_partitioning *out)
{
    uint64_t want = 0;
    for (size_t kk = 1; kk <= CALIBRATION_K; kk++) {
        want += pairs[kk - 1];
        int64_t *f = fc->at + (kk - 1) * ((size_t)nlist + 2);
        for (uint32_t b = 1; b <= nlist + 1; b++)
            f[b] += f[b - 1];
        const double full = out->quality_at[depth_index][kk - 1];
        for (uint32_t i = 0; i < out->npoints && want && full > 0.0; i++)
            out->curve[(size_t)i * TQ_CURVE_STRIDE + kk] = (float)((double)f[point_b[i]] / (double)want / full);
    }
}

/* A code8 re-rank orders its candidates by the rows' 8-bit codes, not by
 * the vectors, so a neighbour among the candidates can still lose its place:
 * what the ranking in calibrate counts (a re-rank keeps what reaches it)
 * promised more than such searches found. On fashion-mnist's 60,000 images
 * (4 bits, uncentered, code8, as `tqvec load` makes a set) a recall of 0.97
 * asked gave 0.947, 0.95 gave 0.928. So for code8 the sample is searched
 * once more as a search runs, over all rows at the default depth, and every
 * depth's quality is scaled by what that found against what was promised
 * there. fp16 and fp32 re-rank on the vectors themselves (to their
 * precision) and keep the ranking's figures. */
static void scale_by_refine_loss(const tq_codec *c, const tq_rows *rows, const float *q, size_t nq,
                                 const uint32_t *qrow, const uint32_t *best_row, unsigned target,
                                 unsigned depth_index, unsigned nparts, tq_partitioning *out)
{
    enum { K = CALIBRATION_K };
    tq_hit *hits = tq_malloc(nq * (K + 1) * sizeof(tq_hit));
    size_t *counts = tq_malloc(nq * sizeof(size_t));
    /* one more than K: the query is a row and finds itself */
    tq_search_opts so = {.k = K + 1, .rerank = target, .scorer = TQ_SCORER_LUT, .threads = nparts};
    if (hits && counts && tq_search(c, rows, 1, q, nq, &so, hits, counts, NULL) == TQ_OK) {
        uint64_t found = 0, want = 0;
        for (size_t qi = 0; qi < nq; qi++) {
            uint32_t top[K];
            size_t ntop = 0;
            for (size_t h = 0; h < counts[qi] && ntop < K; h++)
                if (hits[qi * (K + 1) + h].id != qrow[qi])
                    top[ntop++] = (uint32_t)hits[qi * (K + 1) + h].id;
            for (size_t j = 0; j < K; j++) {
                const uint32_t row = best_row[qi * K + j];
                if (row == UINT32_MAX)
                    continue;
                want++;
                for (size_t t = 0; t < ntop; t++)
                    found += top[t] == row;
            }
        }
        const double promised = out->quality_at[depth_index][K - 1];
        const double measured = want ? (double)found / (double)want : 1.0;
        if (want && promised > 0.0 && measured < promised) {
            const float f = (float)(measured / promised);
            for (unsigned i = 0; i < TQ_CALIB_DEPTHS; i++)
                for (unsigned kk = 0; kk < K; kk++)
                    out->quality_at[i][kk] *= f;
            out->quality *= f;
        }
    }
    tq_free(hits);
    tq_free(counts);
}

/* The probe curve of a partitioned set (see the top of this file), from
 * its rows (in their order before the partition sort) and each row's
 * partition. */
static int calibrate(const tq_codec *c, const tq_rows *rows, const uint32_t *assign, uint64_t seed,
                     unsigned nparts, const bool *stop, tq_partitioning *out)
{
    const uint32_t d = c->cfg.d, nlist = out->nlist;
    const size_t n = rows->n, budget = n ? CALIBRATION_PAIRS / n : 0;
    const size_t sample = budget < CALIBRATION_QUERIES_MIN   ? CALIBRATION_QUERIES_MIN
                          : budget > CALIBRATION_QUERIES_MAX ? CALIBRATION_QUERIES_MAX
                                                             : budget;
    const size_t nq = n - 1 < sample ? n - 1 : sample;
    if (nq == 0 || nlist == 1)
        return TQ_OK; /* one row, or one partition: nothing to choose */
    const size_t slab = 8192;
    tq_encode_scratch s;
    if (tq_encode_scratch_init(&s, d))
        return TQ_ENOMEM;
    float *q = tq_malloc(nq * d * sizeof(float)), *x = tq_malloc(slab * d * sizeof(float));
    float *half_sq = tq_malloc(slab * sizeof(float)), *best = tq_malloc(nq * CALIBRATION_K * sizeof(float));
    float *dots = tq_malloc((size_t)nparts * CALIB_QUERY_BLOCK * CALIB_ROW_BLOCK * sizeof(float));
    float *cscore = tq_malloc(nlist * sizeof(float));
    void *rank_scratch = tq_malloc(tq_centroid_scratch_bytes(nlist, d, 1));
    uint32_t *qrow = tq_malloc(nq * sizeof(uint32_t)), *best_row = tq_malloc(nq * CALIBRATION_K * sizeof(uint32_t));
    uint32_t *which = tq_malloc(slab * sizeof(uint32_t));
    /* hist[j * (nlist + 1) + r]: the j-th neighbours whose partition ranks r. */
    uint64_t *hist = tq_calloc(CALIBRATION_K * ((size_t)nlist + 1), sizeof(uint64_t));
    tq_hit *found = tq_malloc(nq * CALIB_DEPTH_HITS * sizeof(tq_hit));
    size_t *nfound = tq_malloc(nq * sizeof(size_t)), *place = tq_malloc(nq * CALIBRATION_K * sizeof(size_t));
    uint64_t *keys = tq_malloc(2 * (size_t)nlist * sizeof(uint64_t)); /* and rank_partitions' scratch */
    uint32_t *prank = tq_malloc(nlist * sizeof(uint32_t)), *ahead = tq_malloc(CALIB_DEPTH_HITS * sizeof(uint32_t));
    int64_t *found_at = tq_calloc(CALIBRATION_K * ((size_t)nlist + 2), sizeof(int64_t));
    int rc = TQ_ENOMEM;
    if (!q || !x || !half_sq || !best || !dots || !cscore || !rank_scratch || !qrow || !best_row || !which ||
        !hist || !found || !nfound || !place || !keys || !prank || !ahead || !found_at)
        goto done;
    /* Distinct sample rows, seeded (a stream of its own). */
    tq_rng rng;
    tq_rng_seed(&rng, tq_seed_derive(seed, 0x43414C49u /* "CALI" */));
    for (size_t i = 0; i < nq; i++) {
        bool dup;
        do {
            qrow[i] = (uint32_t)(tq_rng_next(&rng) % n);
            dup = false;
            for (size_t j = 0; j < i && !dup; j++)
                dup = qrow[j] == qrow[i];
        } while (dup);
    }
    reconstruct_rows(c, rows, qrow, nq, &s, q);
    for (size_t i = 0; i < nq * CALIBRATION_K; i++) {
        best[i] = -INFINITY;
        best_row[i] = UINT32_MAX;
    }
    const tq_simd_kernels *k = tq_simd();
    calib_job job = {.metric = c->cfg.metric, .d = d, .q = q, .qrow = qrow, .nq = nq, .x = x, .half_sq = half_sq,
                     .best = best, .best_row = best_row, .dots = dots,
                     .nparts = nparts < nq ? nparts : (unsigned)nq};
    for (size_t r0 = 0; r0 < n && !stopping(stop); r0 += slab) {
        const size_t m = n - r0 < slab ? n - r0 : slab;
        for (size_t i = 0; i < m; i++)
            which[i] = (uint32_t)(r0 + i);
        reconstruct_rows(c, rows, which, m, &s, x);
        for (size_t i = 0; i < m; i++)
            half_sq[i] = 0.5f * k->dot(x + i * d, x + i * d, d);
        job.r0 = r0;
        job.m = m;
        tq_pool_run(job.nparts, calib_part, &job);
    }
    /* How much of what the probed partitions hold a search finds: the
     * share of the sample's K nearest the full scan of these rows keeps at
     * each re-rank depth, read off one ranking by the codes (the row
     * itself is among the hits, hence one more). A re-rank receives the
     * first stage's candidates as its 7-bit keys rank them, so that is the
     * ranking read: ranked after the float-table stage instead, the
     * neighbours came out ahead of where a search gets them, and at 100,000
     * rows (d = 128, 4 bits) depth 1 promised 0.918 where queries got
     * 0.871, depth 2 0.968 for 0.942: a recall asked for fell 0.01-0.025
     * short. Without refine data only the codes' own best K count (no
     * re-rank: the float-table stage then decides, and is read). */
    const bool refined = c->cfg.refine != TQ_REFINE_NONE;
    tq_search_opts so = {.k = CALIB_DEPTH_HITS, .scorer = TQ_SCORER_LUT, .threads = nparts, .first_stage = refined};
    const unsigned target = tq_target_rerank(c);
    const unsigned depth_index = target > 1 ? (unsigned)__builtin_ctz(target) : 0;
    out->quality = 1.0f;
    const bool ranked = !stopping(stop) && tq_search(c, rows, 1, q, nq, &so, found, nfound, NULL) == TQ_OK;
    if (ranked) {
        const unsigned depths = refined ? TQ_CALIB_DEPTHS : 1;
        /* Where each true neighbour came in the ranking (CALIB_DEPTH_HITS:
         * not among the hits). */
        for (size_t qi = 0; qi < nq; qi++)
            for (size_t j = 0; j < CALIBRATION_K; j++) {
                const uint32_t row = best_row[qi * CALIBRATION_K + j];
                size_t h = 0;
                while (h < nfound[qi] && found[qi * CALIB_DEPTH_HITS + h].id != row)
                    h++;
                place[qi * CALIBRATION_K + j] = row == UINT32_MAX || h == nfound[qi] ? CALIB_DEPTH_HITS : h;
            }
        for (unsigned i = 0; i < depths; i++)
            for (unsigned kk = 1; kk <= CALIBRATION_K; kk++) {
                /* A set holding K of a query's 10 nearest gets about K / 10
                 * of the first stage's candidates for k = 10 at depth D,
                 * K (D + D/8 + 0.8) of them (tq_first_stage_candidates),
                 * plus the row itself here; without re-ranking, K. */
                const double per = refined ? (double)(1u << i) * 1.125 + 0.8 : 1.0;
                const size_t window = (size_t)ceil(kk * per) + 1;
                uint64_t hits = 0, want = 0;
                for (size_t qi = 0; qi < nq; qi++)
                    for (size_t j = 0; j < kk; j++) {
                        if (best_row[qi * CALIBRATION_K + j] == UINT32_MAX)
                            continue;
                        want++;
                        hits += place[qi * CALIBRATION_K + j] < window;
                    }
                out->quality_at[i][kk - 1] = want && hits ? (float)((double)hits / (double)want) : 1.0f;
            }
        out->quality = out->quality_at[depth_index][CALIBRATION_K - 1];
    }
    /* Where each partition ranks for each sample query, by the 8-bit
     * centroids as the search ranks (score, then lower index): the
     * neighbours' own partitions make the coverage histogram, and with
     * the full scan's ranking, what a partial scan finds (found_counts). */
    found_counts fc = {.per = refined ? (double)(1u << depth_index) * 1.125 + 0.8 : 1.0, .at = found_at,
                       .ahead = ahead};
    uint64_t pairs[CALIBRATION_K] = {0};
    for (size_t i = 0; i < nq; i++) {
        tq_centroid_dots(out->table, q + i * d, rank_scratch, cscore);
        for (uint32_t p = 0; p < nlist; p++)
            keys[p] = tq_collector_pack(p, tq_partition_score(c->cfg.metric, cscore[p], out->half_norms[p]));
        rank_partitions(keys, nlist, prank);
        for (size_t j = 0; j < CALIBRATION_K; j++) {
            const uint32_t row = best_row[i * CALIBRATION_K + j];
            if (row == UINT32_MAX)
                continue;
            hist[j * ((size_t)nlist + 1) + prank[assign[row]]]++;
            pairs[j]++;
        }
        if (ranked)
            count_found(&fc, nlist, prank, assign, best_row + i * CALIBRATION_K, found + i * CALIB_DEPTH_HITS,
                        nfound[i], place + i * CALIBRATION_K);
    }
    /* Points at ranks growing by a quarter (and by one at first), the
     * last at nlist, where every neighbour is covered. Each point holds,
     * for K = 1 .. CALIBRATION_K, the share of the first K neighbours
     * covered; then, once the full scan's ranking is known, what is found
     * there relative to the full scan. */
    uint64_t covered[CALIBRATION_K] = {0};
    uint32_t b = 0, next = 1, point_b[TQ_MAX_CURVE];
    out->npoints = 0;
    while (b < nlist) {
        const bool last = out->npoints == TQ_MAX_CURVE - 1;
        const uint32_t upto = last ? nlist : next;
        for (; b < upto; b++)
            for (size_t j = 0; j < CALIBRATION_K; j++)
                covered[j] += hist[j * ((size_t)nlist + 1) + b];
        float *point = out->curve + (size_t)out->npoints * TQ_CURVE_STRIDE;
        point[0] = (float)b / (float)nlist;
        uint64_t num = 0, den = 0;
        for (size_t j = 0; j < CALIBRATION_K; j++) {
            num += covered[j];
            den += pairs[j];
            point[1 + j] = den ? (float)((double)num / (double)den) : 1.0f;
        }
        point_b[out->npoints++] = b;
        next = b + (b / 4 > 1 ? b / 4 : 1);
        if (next > nlist)
            next = nlist;
    }
    if (ranked)
        found_points(&fc, nlist, pairs, point_b, depth_index, out);
    if (ranked && c->cfg.refine == TQ_REFINE_CODE8 && !stopping(stop))
        scale_by_refine_loss(c, rows, q, nq, qrow, best_row, target, depth_index, nparts, out);
    rc = TQ_OK;
done:
    tq_encode_scratch_free(&s);
    tq_free(q);
    tq_free(x);
    tq_free(half_sq);
    tq_free(best);
    tq_free(dots);
    tq_free(cscore);
    tq_free(rank_scratch);
    tq_free(qrow);
    tq_free(best_row);
    tq_free(which);
    tq_free(hist);
    tq_free(found);
    tq_free(nfound);
    tq_free(place);
    tq_free(keys);
    tq_free(prank);
    tq_free(ahead);
    tq_free(found_at);
    return rc;
}

/* A point's share of a query's k nearest covered, k fractional: between
 * the curves of the whole counts around it. */
static double covered_at(const float *point, double k)
{
    const unsigned k0 = (unsigned)k, k1 = k0 < TQ_CURVE_K ? k0 + 1 : k0;
    return (double)point[k0] + ((double)point[k1] - (double)point[k0]) * (k - k0);
}

unsigned tq_target_rerank(const tq_codec *c)
{
    if (c->cfg.refine == TQ_REFINE_NONE)
        return 0;
    return c->cfg.bits <= 1 ? 16u : c->cfg.bits == 2 ? 8u : 4u;
}

float tq_partition_quality(const tq_partitions *p, unsigned rerank, double k)
{
    k = k < 1 ? 1 : k > TQ_CURVE_K ? TQ_CURVE_K : k;
    for (unsigned i = 0; i < TQ_CALIB_DEPTHS; i++)
        if ((rerank <= 1 ? 1u : rerank) == 1u << i && p->quality_at[i][0] > 0.0f) {
            const float *q = p->quality_at[i];
            const unsigned k0 = (unsigned)k, k1 = k0 < TQ_CURVE_K ? k0 + 1 : k0;
            return (float)((double)q[k0 - 1] + ((double)q[k1 - 1] - (double)q[k0 - 1]) * (k - k0));
        }
    return p->quality;
}

double tq_partition_share(const tq_partitions *p, double recall, double k, float quality)
{
    if (!p->npoints)
        return 1.0;
    k = k < 1 ? 1 : k > TQ_CURVE_K ? TQ_CURVE_K : k;
    /* What the probed partitions must cover for a search, which finds
     * `quality` of what they hold, to reach the recall. */
    const double cover = recall / (double)(quality > 0.0f ? quality : 1.0f);
    const float *prev = NULL;
    for (uint32_t i = 0; i < p->npoints; i++) {
        const float *pt = p->curve + (size_t)i * TQ_CURVE_STRIDE;
        const double r1 = covered_at(pt, k);
        if (r1 >= cover) {
            if (!prev)
                return (double)pt[0];
            /* Linear between the points around it. */
            const double f0 = prev[0], r0 = covered_at(prev, k), f1 = pt[0];
            return r1 > r0 ? f0 + (f1 - f0) * (cover - r0) / (r1 - r0) : f1;
        }
        prev = pt;
    }
    return 1.0;
}

int tq_partition_rows(const tq_codec *c, const tq_rows *rows, uint32_t nlist, uint64_t seed, unsigned threads,
                      const bool *stop, tq_partitioning *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    const uint32_t d = c->cfg.d;
    const size_t n = rows->n;
    if (n == 0 || nlist == 0)
        return tq_err(err, TQ_EARG, "partitioning needs rows and at least one partition");
    if (n > UINT32_MAX)
        return tq_err(err, TQ_EUNSUPPORTED, "a partitioned set holds at most 2^32 - 1 rows, not %zu", n);
    if (nlist > n)
        nlist = (uint32_t)n;
    if (nlist > TQ_MAX_NLIST)
        nlist = TQ_MAX_NLIST;
    const unsigned nparts = threads > 1 ? (threads < TQ_MAX_THREADS ? threads : TQ_MAX_THREADS) : 1;
    const size_t ntrain = (size_t)nlist * TRAIN_PER_LIST < n ? (size_t)nlist * TRAIN_PER_LIST : n;
    /* Rows are reconstructed a slab at a time for the final assignment, so
     * memory stays bounded at any n. */
    const size_t slab = ntrain > 65536 ? ntrain : 65536;
    tq_encode_scratch scratch;
    float *x = NULL;
    assign_job job = {0};
    uint32_t *which = NULL, *assign = NULL;
    size_t *count = NULL;
    int rc = TQ_ENOMEM;
    if (tq_encode_scratch_init(&scratch, d))
        return tq_err(err, TQ_ENOMEM, "out of memory partitioning %zu rows", n);
    out->nlist = nlist;
    out->centroids = tq_malloc((size_t)nlist * d * sizeof(float));
    out->half_norms = tq_malloc(nlist * sizeof(float));
    out->offsets = tq_calloc((size_t)nlist + 1, sizeof(uint32_t));
    out->order = tq_malloc(n * sizeof(uint32_t));
    out->curve = tq_malloc(TQ_MAX_CURVE * TQ_CURVE_STRIDE * sizeof(float));
    x = tq_malloc((slab < n ? slab : n) * d * sizeof(float));
    job.scratch = tq_malloc((size_t)nparts * assign_scratch_bytes(nlist, d));
    which = tq_malloc(n * sizeof(uint32_t));
    assign = tq_malloc(n * sizeof(uint32_t));
    count = tq_calloc(nlist, sizeof(size_t));
    if (!out->centroids || !out->half_norms || !out->offsets || !out->order || !out->curve || !x || !job.scratch ||
        !which || !assign || !count)
        goto done;

    /* The training sample: a seeded partial Fisher-Yates shuffle; its
     * first nlist rows seed the centroids. */
    tq_rng rng;
    tq_rng_seed(&rng, tq_seed_derive(seed, 0x50415254u /* "PART" */));
    for (size_t i = 0; i < n; i++)
        which[i] = (uint32_t)i;
    for (size_t i = 0; i < ntrain; i++) {
        size_t j = i + (size_t)(tq_rng_next(&rng) % (n - i));
        uint32_t t = which[i];
        which[i] = which[j];
        which[j] = t;
    }
    reconstruct_rows(c, rows, which, ntrain, &scratch, x);
    memcpy(out->centroids, x, (size_t)nlist * d * sizeof(float));
    job = (assign_job){.metric = c->cfg.metric, .d = d, .nlist = nlist, .x = x, .n = ntrain,
                       .centroids = out->centroids, .half_norms = out->half_norms, .assign = assign,
                       .scratch = job.scratch, .nparts = nparts, .stop = stop};
    if (c->cfg.metric != TQ_METRIC_L2)
        normalize_centroids(out->centroids, nlist, d);
    if (refresh_centroids(&job))
        goto done;
    for (unsigned it = 0; it < TRAIN_ITERATIONS && ntrain > nlist && !stopping(stop); it++) {
        assign_rows(&job);
        update_centroids(&job, out->centroids, count, &rng);
        if (refresh_centroids(&job))
            goto done;
    }

    /* Every row to its partition, slab by slab in storage order. */
    for (size_t i = 0; i < n; i++)
        which[i] = (uint32_t)i;
    for (size_t r0 = 0; r0 < n && !stopping(stop); r0 += slab) {
        const size_t m = n - r0 < slab ? n - r0 : slab;
        reconstruct_rows(c, rows, which + r0, m, &scratch, x);
        job.x = x;
        job.n = m;
        job.assign = assign + r0;
        assign_rows(&job);
    }
    out->table = job.table; /* the half norms are the final centroids' too */
    job.table = NULL;
    if (stopping(stop) || (rc = calibrate(c, rows, assign, seed, nparts, stop, out)) || stopping(stop)) {
        rc = rc ? rc : TQ_EBUSY;
        goto done;
    }
    rc = TQ_ENOMEM;

    /* Counting sort: partition p's rows keep their storage order. */
    for (size_t i = 0; i < n; i++)
        out->offsets[assign[i] + 1]++;
    for (uint32_t p = 0; p < nlist; p++)
        out->offsets[p + 1] += out->offsets[p];
    memcpy(which, out->offsets, nlist * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++)
        out->order[which[assign[i]]++] = (uint32_t)i;
    rc = TQ_OK;
done:
    tq_encode_scratch_free(&scratch);
    tq_free(x);
    tq_free(job.scratch);
    tq_centroid_table_free(job.table);
    tq_free(which);
    tq_free(assign);
    tq_free(count);
    if (rc) {
        tq_partitioning_free(out);
        return rc == TQ_EBUSY ? tq_err(err, rc, "partitioning %zu rows stopped on request", n)
                              : tq_err(err, rc, "out of memory partitioning %zu rows", n);
    }
    return TQ_OK;
}

int tq_rows_gather(const tq_codec *c, const tq_rows *rows, const uint32_t *order, size_t n, tq_rows_out *out)
{
    int rc = tq_rows_out_alloc(c, n, out);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        tq_codec_row_copy(c, rows, order[i], out, i);
    return TQ_OK;
}

int tq_rows_permute(const tq_codec *c, const tq_rows_out *rows, size_t n, const uint32_t *order)
{
    const size_t bytes = tq_codec_row_bytes(c);
    uint8_t *first = tq_malloc(bytes);
    uint64_t *placed = tq_calloc(n / 64 + 1, sizeof(uint64_t));
    if (!first || !placed) {
        tq_free(first);
        tq_free(placed);
        return TQ_ENOMEM;
    }
    const tq_rows view = tq_rows_view(rows, n);
    /* Each cycle of the permutation once: its first row aside, every
     * other row moved into the place that takes it, the first row last. */
    for (size_t start = 0; start < n; start++) {
        if (placed[start / 64] >> (start % 64) & 1)
            continue;
        tq_codec_row_save(c, &view, start, first);
        size_t to = start;
        for (size_t from = order[to]; from != start; to = from, from = order[to]) {
            tq_codec_row_copy(c, &view, from, rows, to);
            placed[to / 64] |= 1ull << (to % 64);
        }
        tq_codec_row_load(c, rows, to, first);
        placed[to / 64] |= 1ull << (to % 64);
    }
    tq_free(first);
    tq_free(placed);
    return TQ_OK;
}
