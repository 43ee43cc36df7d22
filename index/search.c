/*
 * The three-stage search over sets of encoded rows (tq_rows): an in-memory
 * index is one set, a stored collection one set per segment, all encoded
 * by one codec.
 *
 *   1. coarse: the simd scan kernel sums 8-bit query tables over every
 *      block of every set; the best C = k' + k'/8 + 8 estimates (k' = k,
 *      or k * rerank) are kept;
 *   2. re-score: those C get the float-table estimate, which is the float
 *      scorer's value, so 8-bit table rounding cannot cost recall unless a
 *      true top-k' vector falls outside the top C coarse estimates;
 *   3. re-rank (optional): the best k' are rescored on the refine data
 *      (exactly with floats, to 8 bits with code8) and the best k returned.
 *      With re-ranking the LUT scorer skips stage 2 and re-ranks all C:
 *      cheaper, and never worse (a superset of stage 2's k', finer data).
 * The float scorer (TQ_SCORER_FLOAT) runs stage 2 on every vector: the
 * reference the LUT scorer is measured against.
 *
 * Deleted rows are masked to -inf right after a block's keys are computed,
 * before the heap sees them, so a search returns exactly min(k, live) hits
 * whatever the share of deletes. An attribute filter is evaluated in the
 * same place, for each row whose estimate would enter the heap: the answer
 * holds exactly min(k, matching) rows at any selectivity, and the filter
 * runs on the fewest rows that guarantee it.
 *
 * Internally a larger key is better: l2 uses the negated distance estimate
 * ||q||^2 + ||x||^2 - 2 ||x|| g, ip uses ||x|| g and cosine ||x|| g/||q||
 * (cosine encodes the normalized vector, so ||x|| is 1 unless centered);
 * results go out in the metric's units.
 *
 * Centered cosine is ranked as l2 between unit vectors (rank_metric): with
 * q and x on the unit sphere, cos(q, x) = 1 - ||q - x||^2 / 2, and
 * ||q - x|| = ||(q - m) - (x - m)|| lets the query be centered as the codes
 * are. Keeping q whole and adding <q, m> instead (as ip does) leaves the
 * estimate's error proportional to ||q|| rather than ||q - m||: recall@10
 * at 1 bit, fiori-minilm, 0.766 that way against 0.836 centered.
 *
 * Work is split across the worker pool by blocks (all sets' blocks in one
 * sequence), each part with its own heaps; the parts' heaps are merged by
 * the same total order (key, then id), so the answer does not depend on the
 * split. A batch of queries walks the blocks in chunks that stay in cache
 * while every query of the batch scans them.
 */
#include "tq_index.h"

/* Where row id `id` lives: its set and the row inside it. */
typedef struct row_ref {
    const tq_rows *set;
    size_t row;
} row_ref;

/* A block a probing search scans: rows of `mask` in block `block` of set
 * `set` (the rest belong to partitions not probed). */
typedef struct block_visit {
    uint32_t set;
    uint32_t mask;
    size_t block;
} block_visit;

/* One search call's shared state; parts write only their own collectors. */
typedef struct search_job {
    const tq_codec *c;
    const tq_simd_kernels *k; /* looked up once: tq_simd() per block showed in profiles */
    const tq_rows *sets;
    size_t nsets;
    const size_t *first_block; /* nsets + 1: cumulative blocks */
    const size_t *first_row;   /* nsets + 1: cumulative rows */
    const block_visit *visits; /* probing: the nblocks blocks this pass scans, in row order; NULL: all */
    const tq_search_opts *opts;
    tq_query *pq;              /* nq prepared queries */
    size_t nq;
    size_t nblocks, blocks_per_part;
    tq_collector *cols;        /* nparts * nq first-stage collectors */
    struct block_sums *scratch; /* nparts * chunk_blocks(): a sliced scan's sums; NULL when unsliced */
} search_job;

static row_ref find_row(const search_job *job, uint64_t id)
{
    size_t lo = 0, hi = job->nsets - 1;
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        if (job->first_row[mid] <= id)
            lo = mid;
        else
            hi = mid - 1;
    }
    return (row_ref){&job->sets[lo], (size_t)(id - job->first_row[lo])};
}

/* The metric keys are computed in: the configured one, but l2 for
 * centered cosine (see the top of the file). */
static tq_metric rank_metric(const tq_codec *c)
{
    return c->mean && c->cfg.metric == TQ_METRIC_COSINE ? TQ_METRIC_L2 : c->cfg.metric;
}

/* A zero vector under centered cosine: its code holds -mean, which the l2
 * form cannot score as the 0 a vector without direction gets (its
 * estimate is about 1/2), so the later stages, which know the row, give it
 * its exact key when the inputs' lengths are kept (-2: cos = 0). The first
 * stage may still pass it on as a candidate. */
static bool centered_zero_row(const tq_codec *c, row_ref r)
{
    return c->mean && c->cfg.metric == TQ_METRIC_COSINE && r.set->lengths && r.set->lengths[r.row] == 0.0f;
}

static float estimate_key(tq_metric metric, float g, const tq_code_scalars *sc, const tq_query *pq)
{
    switch (metric) {
    case TQ_METRIC_L2:
        return -(pq->qnorm * pq->qnorm + sc->norm * sc->norm - 2.0f * sc->norm * g);
    case TQ_METRIC_IP:
        return sc->norm * g + pq->bias;
    case TQ_METRIC_COSINE:
        return (sc->norm * g + pq->bias) / pq->qnorm;
    }
    return 0.0f;
}

/* The re-rank key of one row from its refine data. */
static float refine_key(const tq_codec *c, const float *query, const tq_query *pq, row_ref r)
{
    const tq_simd_kernels *k = tq_simd();
    const size_t d = c->cfg.d;
    const float qnorm = pq->input_norm;
    if (c->cfg.refine == TQ_REFINE_CODE8) {
        if (centered_zero_row(c, r))
            return -2.0f;
        float g = k->dot_u8(r.set->refine8 + r.row * d, c->cb8->centroid_f, pq->qr, d);
        const tq_code_scalars sc = tq_scalars_get(&c->q, r.set->sc, r.row);
        return estimate_key(rank_metric(c), g, &sc, pq);
    }
    /* fp16 rows are read once, widened inside the kernels (the same values
     * as widening the row first) */
    const bool half = c->cfg.refine == TQ_REFINE_FP16;
    const float *v = r.set->vectors + r.row * d;
    const uint16_t *h = half ? r.set->half + r.row * d : NULL;
    if (c->cfg.metric == TQ_METRIC_L2)
        return -(half ? k->l2sq_half(query, h, d) : k->l2sq(query, v, d));
    const float dot = half ? k->dot_half(query, h, d) : k->dot(query, v, d);
    switch (c->cfg.metric) {
    case TQ_METRIC_IP:
        return dot;
    case TQ_METRIC_COSINE:
        /* Centered: -||q/||q|| - v||^2 for the unit vector v, as ranked. */
        if (c->mean)
            return 2.0f * (dot / qnorm) - 2.0f;
        return dot / qnorm;
    case TQ_METRIC_L2:
        break;
    }
    return 0.0f;
}

/* Rows whose float-table estimates the kernels take in one call: at least
 * a block's (collect_block hands them a block's live rows). */
#define FLOAT_KEY_ROWS 64
_Static_assert(TQ_SCAN_BLOCK <= FLOAT_KEY_ROWS, "a block's rows in one call");

/* The float-table estimates of n rows (n <= FLOAT_KEY_ROWS): stage 2, and
 * the float scorer. The kernels take the rows together, two at a time: one
 * at a time, a candidate's chain of dependent adds was most of its cost.
 * Not inlined, and returning early for no rows: otherwise GCC 12 took
 * the arrays below for possibly unset where collect_block calls it (a false
 * alarm); a call per block or per 64 candidates costs nothing. */
__attribute__((noinline)) static void float_keys_some(const tq_codec *c, const tq_query *pq, const row_ref *rows,
                                                     size_t n, float *keys)
{
    const tq_quantizer *q = &c->q;
    if (n == 0)
        return;
    const uint8_t *blocks[FLOAT_KEY_ROWS];
    uint8_t lanes[FLOAT_KEY_ROWS];
    float code_dot[FLOAT_KEY_ROWS], sign_dot[FLOAT_KEY_ROWS];
    for (size_t i = 0; i < n; i++) {
        lanes[i] = (uint8_t)(rows[i].row % TQ_SCAN_BLOCK);
        code_dot[i] = sign_dot[i] = 0.0f;
    }
    if (q->mse_bits) {
        for (size_t i = 0; i < n; i++)
            blocks[i] = rows[i].set->code_blocks + rows[i].row / TQ_SCAN_BLOCK * q->code_layout.block_bytes;
        tq_scan_lut_exact_rows(&q->code_layout, &pq->code_lut, blocks, lanes, n, code_dot);
    }
    if (q->variant == TQ_VARIANT_PROD) {
        for (size_t i = 0; i < n; i++)
            blocks[i] = rows[i].set->sign_blocks + rows[i].row / TQ_SCAN_BLOCK * q->sign_layout.block_bytes;
        tq_scan_lut_exact_rows(&q->sign_layout, &pq->sign_lut, blocks, lanes, n, sign_dot);
    }
    for (size_t i = 0; i < n; i++) {
        const tq_code_scalars sc = tq_scalars_get(q, rows[i].set->sc, rows[i].row);
        keys[i] = centered_zero_row(c, rows[i])
                      ? -2.0f
                      : estimate_key(rank_metric(c), tq_unit_estimate(q, &sc, code_dot[i], sign_dot[i]), &sc, pq);
    }
}

/* Blocks per chunk of a batched scan: about 256 KiB of codes, so a chunk
 * read for the first queries of a batch is still in cache for the others. */
static size_t chunk_blocks(const tq_codec *c)
{
    size_t bytes = c->q.code_layout.block_bytes + c->q.sign_layout.block_bytes;
    size_t n = bytes ? (256 * 1024) / bytes : 64;
    return n ? n : 1;
}

/* Table bytes per query and slice when a layout is scanned in slices (see
 * tq_search for when): the tables of TQ_SCAN_MAX_QUERIES queries over one
 * slice are 32 KiB and stay in L1 while the slice is summed over a chunk's
 * blocks. Unsliced, a query's tables at d = 4096 (128 KiB at 4 bits) were
 * re-read from L2 for every block. A slice is 128 nibble pairs (a whole
 * number of table groups) or 32 sextet groups; both layouts of the prod
 * variant take slice i together. */
#define SLICE_LUT_BYTES 8192u

static size_t slice_units(const tq_scan_layout *L)
{
    return SLICE_LUT_BYTES / L->unit_lut_bytes;
}

/* Blocks per chunk of a sliced scan, and the sums it keeps per part: one
 * block_sums (1 KiB) per block and group of queries. */
#define SLICED_CHUNK_BLOCKS 32
#define SLICED_SCRATCH(nq) ((size_t)SLICED_CHUNK_BLOCKS * (((nq) + TQ_SCAN_MAX_QUERIES - 1) / TQ_SCAN_MAX_QUERIES))

/* A block's table sums for the queries of one pass. */
struct block_sums {
    /* Aligned: the kernels store and reload these as whole 64-byte
     * vectors, and a store split across cache lines is not forwarded. */
    _Alignas(64) uint32_t code[TQ_SCAN_MAX_QUERIES][TQ_SCAN_BLOCK];
    uint32_t sign[TQ_SCAN_MAX_QUERIES][TQ_SCAN_BLOCK];
};
typedef struct block_sums block_sums;

/* Block b of the call's sequence as (set, block in it): *s is the set of
 * the previous block asked for, and blocks are asked for in order. */
static size_t local_block(const search_job *job, size_t b, size_t *s)
{
    while (b >= job->first_block[*s + 1])
        ++*s;
    return b - job->first_block[*s];
}

/* Rows of block lb of set s that are there and not deleted; 0 skips the
 * block (all deleted, or all filtered out by an allow-list). */
static uint32_t live_rows(const tq_rows *set, size_t lb, size_t *rows)
{
    const size_t base = lb * TQ_SCAN_BLOCK;
    *rows = set->n - base < TQ_SCAN_BLOCK ? set->n - base : TQ_SCAN_BLOCK;
    const uint32_t dead = set->deleted ? __atomic_load_n(&set->deleted[lb], __ATOMIC_RELAXED) : 0;
    return (*rows == TQ_SCAN_BLOCK ? 0xFFFFFFFFu : (1u << *rows) - 1) & ~dead;
}

/* Whether a block's first stage uses the integer kernels: not for the
 * float scorer, nor for a partial block still being filled (the kernel
 * would read the lanes being written; it is read a row at a time). */
static bool scans_block(const search_job *job, const tq_rows *set, size_t rows)
{
    return job->opts->scorer == TQ_SCORER_LUT && !(set->growing && rows < TQ_SCAN_BLOCK);
}

/* Sums over units [u0, u1) of one layout (nibble pairs or sextet groups)
 * for nq queries: stored into sum when u0 is 0, else added to it. */
static void layout_sums(const tq_simd_kernels *k, const tq_scan_layout *L, const uint8_t *blocks, size_t lb,
                        const tq_scan_lut *const *luts, size_t nq, size_t u0, size_t u1,
                        uint32_t (*sum)[TQ_SCAN_BLOCK])
{
    const uint8_t *tables[TQ_SCAN_MAX_QUERIES];
    for (size_t i = 0; i < nq; i++)
        tables[i] = luts[i]->q8 + L->unit_lut_bytes * u0;
    const uint8_t *block = blocks + lb * L->block_bytes + L->unit_bytes * u0;
    uint32_t part[TQ_SCAN_MAX_QUERIES][TQ_SCAN_BLOCK];
    uint32_t(*dst)[TQ_SCAN_BLOCK] = u0 == 0 ? sum : part;
    if (L->sextets)
        k->scan6_block_multi(block, u1 - u0, tables, nq, dst[0]);
    else
        k->scan_block_multi(block, u1 - u0, tables, nq, dst[0]);
    if (u0 == 0)
        return;
    for (size_t i = 0; i < nq; i++)
        for (int v = 0; v < TQ_SCAN_BLOCK; v++)
            sum[i][v] += part[i][v];
}

/* The sums of one block over slice `slice` of its layouts (slice SIZE_MAX:
 * all of them). */
static void block_sums_slice(const search_job *job, const tq_rows *set, size_t lb, size_t q0, size_t nq,
                             size_t slice, block_sums *out)
{
    const tq_quantizer *q = &job->c->q;
    const tq_scan_lut *luts[TQ_SCAN_MAX_QUERIES];
    if (!q->mse_bits && (slice == 0 || slice == SIZE_MAX))
        memset(out->code, 0, sizeof(out->code));
    const tq_scan_layout *layouts[2] = {q->mse_bits ? &q->code_layout : NULL,
                                        q->variant == TQ_VARIANT_PROD ? &q->sign_layout : NULL};
    const uint8_t *blocks[2] = {set->code_blocks, set->sign_blocks};
    uint32_t(*sums[2])[TQ_SCAN_BLOCK] = {out->code, out->sign};
    for (int which = 0; which < 2; which++) {
        const tq_scan_layout *L = layouts[which];
        if (!L)
            continue;
        size_t u0 = 0, u1 = L->units;
        if (slice != SIZE_MAX) {
            u0 = slice * slice_units(L);
            u1 = u0 + slice_units(L) < L->units ? u0 + slice_units(L) : L->units;
            if (u0 >= u1)
                continue;
        }
        for (size_t i = 0; i < nq; i++)
            luts[i] = which ? &job->pq[q0 + i].sign_lut : &job->pq[q0 + i].code_lut;
        layout_sums(job->k, L, blocks[which], lb, luts, nq, u0, u1, sums[which]);
    }
}

/* Slices of a sliced scan: enough for the longer layout. */
static size_t slice_count(const tq_quantizer *q)
{
    size_t n = 0;
    if (q->mse_bits)
        n = (q->code_layout.units + slice_units(&q->code_layout) - 1) / slice_units(&q->code_layout);
    if (q->variant == TQ_VARIANT_PROD) {
        size_t m = (q->sign_layout.units + slice_units(&q->sign_layout) - 1) / slice_units(&q->sign_layout);
        n = m > n ? m : n;
    }
    return n;
}

/* Whether a block offers any live row to any of nq queries: past the
 * first few blocks most offer none, and the collector call for such a
 * block was an eighth of a scan at 50 dimensions. */
static inline bool offers_any(const uint32_t *masks, size_t nq, uint32_t live)
{
    uint32_t offered = 0;
    for (size_t i = 0; i < nq; i++)
        offered |= masks[i];
    return (offered & live) != 0;
}

/* The rows of a block whose keys beat their query's threshold and are live
 * go to the query's collector. The filter is asked only for those rows: a
 * row that could not be kept need not be tested, and every row that could
 * is, so the answer holds min(k, matching) rows. */
static void collect_keys(const search_job *job, unsigned part, size_t s, size_t lb, uint32_t live, size_t nq,
                         tq_collector *const *cols, float (*keys)[TQ_SCAN_BLOCK], const uint32_t *masks)
{
    const size_t base = lb * TQ_SCAN_BLOCK;
    const uint64_t id0 = job->first_row[s] + base;
    const tq_row_filter *filter = job->opts->filter;
    for (size_t i = 0; i < nq; i++) {
        tq_collector *col = cols[i];
        const float *key = keys[i];
        /* Each row against the threshold as it stands: a cut inside this
         * block may have raised it. */
        if (!filter) {
            tq_collector_offer_rows(col, id0, key, masks[i] & live);
            continue;
        }
        for (uint32_t m = masks[i] & live; m; m &= m - 1) {
            const unsigned v = (unsigned)__builtin_ctz(m);
            if (key[v] > col->threshold && filter->accept(filter->ctx, part, s, base + v))
                tq_collector_add(col, id0 + v, key[v]);
        }
    }
}

/* What the select kernels take for a group of queries: each query's key
 * parameters and code tables, and its collector's threshold as it stands. */
typedef struct {
    const tq_key_params *params[TQ_SCAN_MAX_QUERIES];
    const uint8_t *tables[TQ_SCAN_MAX_QUERIES];
    float thresholds[TQ_SCAN_MAX_QUERIES];
} select_inputs;

static void select_inputs_of(const search_job *job, size_t q0, size_t nq, tq_collector *const *cols,
                             select_inputs *in)
{
    for (size_t i = 0; i < nq; i++) {
        in->params[i] = &job->pq[q0 + i].keys;
        in->tables[i] = job->pq[q0 + i].code_lut.q8;
        in->thresholds[i] = cols[i]->threshold;
    }
}

/* Blocks [lb, lb + n) of a set, mse variant, summed and keyed in one
 * kernel call (the sextet kernel for the 3-bit layout). */
static void scan_select_blocks(const search_job *job, const tq_rows *set, size_t lb, size_t n,
                               const float *scalars, size_t nq, const select_inputs *in, float *keys,
                               uint32_t *masks)
{
    const tq_scan_layout *L = &job->c->q.code_layout;
    (L->sextets ? job->k->scan6_select : job->k->scan_select)(set->code_blocks + lb * L->block_bytes, n,
                                                             L->block_bytes, L->units, in->tables, nq, scalars,
                                                             in->params, in->thresholds, keys, masks);
}

/* One block's first stage for up to TQ_SCAN_MAX_QUERIES queries: keys from
 * the kernels' sums (sums NULL: summed here, over all pairs), or from the
 * float tables for a block the kernels do not read, then collection. */
static void collect_block(const search_job *job, unsigned part, size_t s, size_t lb, uint32_t live, size_t rows,
                          size_t q0, size_t nq, tq_collector *const *cols, const block_sums *sums)
{
    const tq_rows *set = &job->sets[s];
    const size_t base = lb * TQ_SCAN_BLOCK;
    float keys[TQ_SCAN_MAX_QUERIES][TQ_SCAN_BLOCK];
    uint32_t masks[TQ_SCAN_MAX_QUERIES];
    if (!scans_block(job, set, rows)) {
        /* The live rows' float-table keys, together: one row at a time
         * the kernels, which take rows in pairs, computed each twice. */
        row_ref refs[TQ_SCAN_BLOCK];
        unsigned lane[TQ_SCAN_BLOCK];
        float some[TQ_SCAN_BLOCK];
        size_t nl = 0;
        for (uint32_t m = live; m; m &= m - 1) {
            lane[nl] = (unsigned)__builtin_ctz(m);
            refs[nl] = (row_ref){set, base + lane[nl]};
            nl++;
        }
        for (size_t i = 0; i < nq; i++) {
            float_keys_some(job->c, &job->pq[q0 + i], refs, nl, some);
            masks[i] = 0;
            for (size_t r = 0; r < nl; r++) {
                keys[i][lane[r]] = some[r];
                masks[i] |= (uint32_t)(some[r] > cols[i]->threshold) << lane[r];
            }
        }
        collect_keys(job, part, s, lb, live, nq, cols, keys, masks);
        return;
    }
    const float *scalars = tq_scalars_of_block(&job->c->q, set->sc, lb);
    select_inputs in;
    select_inputs_of(job, q0, nq, cols, &in);
    if (sums) {
        job->k->block_select(sums->code[0], sums->sign[0], scalars, in.params, in.thresholds, nq, keys[0], masks);
    } else if (job->c->q.variant == TQ_VARIANT_MSE) {
        /* The common case in one kernel call: sums never leave registers. */
        scan_select_blocks(job, set, lb, 1, scalars, nq, &in, keys[0], masks);
    } else {
        block_sums all;
        block_sums_slice(job, set, lb, q0, nq, SIZE_MAX, &all);
        job->k->block_select(all.code[0], all.sign[0], scalars, in.params, in.thresholds, nq, keys[0], masks);
    }
    if (offers_any(masks, nq, live))
        collect_keys(job, part, s, lb, live, nq, cols, keys, masks);
}

/* The kernels take the queries of a pass in groups of up to
 * TQ_SCAN_MAX_QUERIES: the size of the group starting at query q0, and
 * its collectors in this part. */
static size_t group_size(const search_job *job, size_t q0)
{
    return job->nq - q0 < TQ_SCAN_MAX_QUERIES ? job->nq - q0 : TQ_SCAN_MAX_QUERIES;
}

static size_t group_collectors(const search_job *job, unsigned part, size_t q0, tq_collector **cols)
{
    const size_t nq = group_size(job, q0);
    for (size_t i = 0; i < nq; i++)
        cols[i] = &job->cols[part * job->nq + q0 + i];
    return nq;
}

/* Full blocks summed and keyed by one kernel call: the per-block cost of
 * a call and its set-up was a fifth of a one-query search at small d. The
 * thresholds are those at the run's start; a cut during the run only makes
 * collect_keys look at a few more rows. */
#define RUN_BLOCKS 8

/* Blocks the next run may take, after one of `last` blocks: a run's masks
 * use the thresholds at its start, and a first run of RUN_BLOCKS offered
 * all its 256 rows to the collectors (and paid the cuts that follow: at
 * 1,000 rows a fifth of the search). So runs start at one block and double
 * while the thresholds are still rising fast, until every collector of the
 * group has one. */
static size_t run_limit(tq_collector *const *cols, size_t nq, size_t last)
{
    for (size_t i = 0; i < nq; i++)
        if (cols[i]->threshold == -INFINITY)
            return 1;
    return last && 2 * last < RUN_BLOCKS ? 2 * last : RUN_BLOCKS;
}

/* Blocks [lb0, lb0 + n) of set s, all full and read by the kernels, for
 * the mse variant: keys in one call, then collected block by block. */
static void collect_run(const search_job *job, unsigned part, size_t s, size_t lb0, size_t n,
                        const uint32_t *live, size_t q0, size_t nq, tq_collector *const *cols)
{
    const tq_rows *set = &job->sets[s];
    float keys[RUN_BLOCKS][TQ_SCAN_MAX_QUERIES][TQ_SCAN_BLOCK];
    uint32_t masks[RUN_BLOCKS][TQ_SCAN_MAX_QUERIES];
    select_inputs in;
    select_inputs_of(job, q0, nq, cols, &in);
    /* keys and masks are packed by the query count: block j's at j nq */
    scan_select_blocks(job, set, lb0, n, tq_scalars_of_block(&job->c->q, set->sc, lb0), nq, &in, keys[0][0],
                       masks[0]);
    float (*packed_keys)[TQ_SCAN_BLOCK] = keys[0];
    for (size_t j = 0; j < n; j++)
        if (offers_any(masks[0] + j * nq, nq, live[j]))
            collect_keys(job, part, s, lb0 + j, live[j], nq, cols, packed_keys + j * nq, masks[0] + j * nq);
}

/* Every row of a run live. */
static const uint32_t all_live[RUN_BLOCKS] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu,
                                              0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
_Static_assert(RUN_BLOCKS == 8, "all_live spells out RUN_BLOCKS entries");

/* Whether blocks [b, b + n) of a flat scan are n full blocks of one set
 * that has no deletes (set *s, its block *lb): a run taken whole. */
static bool whole_run(const search_job *job, size_t b, size_t c1, size_t n, size_t *s, size_t *lb)
{
    if (b + n > c1)
        return false;
    *lb = local_block(job, b, s);
    const tq_rows *set = &job->sets[*s];
    return !set->deleted && (*lb + n) * TQ_SCAN_BLOCK <= set->n;
}

/* The first stage of the queries of one pass over blocks [c0, c1), for
 * codes short enough that one query's tables stay in L1: block by block,
 * each summed over all its pairs for TQ_SCAN_MAX_QUERIES queries at once
 * (full blocks of the mse variant in runs of RUN_BLOCKS). */
static void scan_chunk(const search_job *job, unsigned part, size_t c0, size_t c1)
{
    const bool runs = job->c->q.variant == TQ_VARIANT_MSE && job->opts->scorer == TQ_SCORER_LUT;
    for (size_t q0 = 0; q0 < job->nq; q0 += TQ_SCAN_MAX_QUERIES) {
        tq_collector *cols[TQ_SCAN_MAX_QUERIES];
        const size_t nq = group_collectors(job, part, q0, cols);
        uint32_t run_live[RUN_BLOCKS];
        size_t run_s = 0, run_lb = 0, run_n = 0, s = 0, run_max = run_limit(cols, nq, 0);
        for (size_t b = c0; b < c1; b++) {
            size_t lb, rows;
            uint32_t live;
            if (!job->visits && runs && !run_n && whole_run(job, b, c1, run_max, &s, &lb)) {
                /* run_max full blocks of a set without deletes: the run the
                 * checks below would form, without them (at 50 dimensions
                 * they were a tenth of a one-query scan) */
                collect_run(job, part, s, lb, run_max, all_live, q0, nq, cols);
                b += run_max - 1;
                run_max = run_limit(cols, nq, run_max);
                continue;
            }
            if (job->visits) {
                s = job->visits[b].set;
                lb = job->visits[b].block;
                live = live_rows(&job->sets[s], lb, &rows) & job->visits[b].mask;
            } else {
                lb = local_block(job, b, &s);
                live = live_rows(&job->sets[s], lb, &rows);
            }
            const bool joins = runs && live && rows == TQ_SCAN_BLOCK && scans_block(job, &job->sets[s], rows);
            /* A run ends at a block it cannot take, a gap, a set's end or
             * its length; blocks stay in order either way. */
            if (run_n && (!joins || s != run_s || lb != run_lb + run_n || run_n == run_max)) {
                collect_run(job, part, run_s, run_lb, run_n, run_live, q0, nq, cols);
                run_n = 0;
                run_max = run_limit(cols, nq, run_max);
            }
            if (joins) {
                if (!run_n) {
                    run_s = s;
                    run_lb = lb;
                }
                run_live[run_n++] = live;
            } else if (live) {
                collect_block(job, part, s, lb, live, rows, q0, nq, cols, NULL);
            }
        }
        if (run_n)
            collect_run(job, part, run_s, run_lb, run_n, run_live, q0, nq, cols);
    }
}

/* The same for long codes, tiled so that
 * neither the tables nor the codes are re-read from memory: for each slice
 * of pairs, the slice's tables of every query of the pass (64 bytes a pair
 * each: 8 KiB per query, 256 KiB for 32) and the slice of every block of
 * the chunk are summed, group by group of TQ_SCAN_MAX_QUERIES queries; the
 * sums wait in `scratch` (one block_sums per block and group) until the
 * last slice, then the blocks are collected in order. Unsliced, a query's
 * tables at d = 4096 (128 KiB at 4 bits) were re-read from L2 for every
 * block, and from memory once 32 queries' tables were prepared. */
static void scan_chunk_sliced(const search_job *job, unsigned part, size_t c0, size_t c1, block_sums *scratch)
{
    const tq_quantizer *q = &job->c->q;
    const size_t ngroups = (job->nq + TQ_SCAN_MAX_QUERIES - 1) / TQ_SCAN_MAX_QUERIES, nslices = slice_count(q);
    for (size_t slice = 0; slice < nslices; slice++)
        for (size_t g = 0; g < ngroups; g++) {
            const size_t q0 = g * TQ_SCAN_MAX_QUERIES, nq = group_size(job, q0);
            size_t s = 0;
            for (size_t b = c0; b < c1; b++) {
                size_t lb = local_block(job, b, &s), rows;
                const tq_rows *set = &job->sets[s];
                if (live_rows(set, lb, &rows) && scans_block(job, set, rows))
                    block_sums_slice(job, set, lb, q0, nq, slice, &scratch[(b - c0) * ngroups + g]);
            }
        }
    for (size_t g = 0; g < ngroups; g++) {
        tq_collector *cols[TQ_SCAN_MAX_QUERIES];
        const size_t q0 = g * TQ_SCAN_MAX_QUERIES, nq = group_collectors(job, part, q0, cols);
        size_t s = 0;
        for (size_t b = c0; b < c1; b++) {
            size_t lb = local_block(job, b, &s), rows;
            const uint32_t live = live_rows(&job->sets[s], lb, &rows);
            if (live)
                collect_block(job, part, s, lb, live, rows, q0, nq, cols, &scratch[(b - c0) * ngroups + g]);
        }
    }
}

/* First stage over the blocks of one part, chunk by chunk (each chunk's
 * codes stay in cache while every query of the pass scans them). Rows
 * arrive in increasing order per collector, which the collector's tie rule
 * relies on. */
static void search_part(void *arg, unsigned part)
{
    search_job *job = arg;
    size_t b0 = part * job->blocks_per_part;
    size_t b1 = b0 + job->blocks_per_part < job->nblocks ? b0 + job->blocks_per_part : job->nblocks;
    const size_t chunk = job->scratch ? SLICED_CHUNK_BLOCKS : chunk_blocks(job->c);
    for (size_t c0 = b0; c0 < b1; c0 += chunk) {
        size_t c1 = c0 + chunk < b1 ? c0 + chunk : b1;
        if (job->scratch)
            scan_chunk_sliced(job, part, c0, c1, job->scratch + (size_t)part * SLICED_SCRATCH(job->nq));
        else
            scan_chunk(job, part, c0, c1);
    }
}

/* With re-ranking, stage 3 takes every first-stage candidate instead
 * of the best k' by float tables (see finish_query), in any order. */
static bool refines_all(const tq_search_opts *opts)
{
    return opts->scorer == TQ_SCORER_LUT && opts->rerank;
}

/* Stage 2 runs (finish_query): the LUT scorer without re-ranking, unless
 * the caller asked for the first stage's own ranking. */
static bool rescores(const tq_search_opts *opts)
{
    return opts->scorer == TQ_SCORER_LUT && !opts->rerank && !opts->first_stage;
}

/* The first stage's hits must come best first only where their order is
 * the answer's: stage 2 and stage 3 rank them again. */
static bool first_stage_sorted(const tq_search_opts *opts)
{
    return !refines_all(opts) && !rescores(opts);
}

/* The refine bytes of the candidates asked for before any is read: their
 * rows are scattered over the refine data, and one miss at a time was a
 * third of a probing search. */
static void prefetch_refine(const search_job *job, const tq_hit *hits, size_t n)
{
    const size_t bytes = tq_codec_refine_bytes_per_vector(job->c);
    for (size_t i = 0; i < n; i++) {
        const row_ref r = find_row(job, hits[i].id);
        const uint8_t *p = tq_codec_refine_row(job->c, r.set, r.row);
        /* Whole rows up to 2 KiB (d = 1024 at fp16): at d = 784 asking for
         * the first 256 bytes only left the re-rank a quarter of a query. */
        for (size_t o = 0; o < bytes && o < 2048; o += 64)
            __builtin_prefetch(p + o);
    }
}

/* Stages 2 and 3 for one query, from the merged first-stage hits (best
 * first in `first`, nfirst of them, unless first_stage_sorted says their
 * order does not matter). */
static size_t finish_query(const search_job *job, const float *query, const tq_query *pq, tq_hit *first,
                           size_t nfirst, tq_collector *mid, tq_topk *best, tq_hit *out)
{
    const tq_codec *c = job->c;
    const tq_search_opts *opts = job->opts;
    size_t n = nfirst;
    /* With re-ranking, stage 3 takes every first-stage candidate instead
     * of the best k' by float tables: a row's refine score (one SIMD dot)
     * costs less than its float-table estimate (a lookup a nibble), and
     * re-ranking a superset of stage 2's k' on finer data loses nothing
     * stage 2 would have kept. */
    const bool straight_to_refine = refines_all(opts);
    if (rescores(opts)) {
        /* Into a collector, which keeps the same best k' as a heap (the
         * same total order) at a lower cost: added whatever their keys,
         * since the hits come in no id order. */
        tq_collector_reset(mid);
        for (size_t i0 = 0; i0 < nfirst; i0 += FLOAT_KEY_ROWS) {
            const size_t m = nfirst - i0 < FLOAT_KEY_ROWS ? nfirst - i0 : FLOAT_KEY_ROWS;
            row_ref rows[FLOAT_KEY_ROWS];
            float keys[FLOAT_KEY_ROWS];
            for (size_t i = 0; i < m; i++)
                rows[i] = find_row(job, first[i0 + i].id);
            float_keys_some(c, pq, rows, m, keys);
            for (size_t i = 0; i < m; i++)
                tq_collector_add(mid, first[i0 + i].id, keys[i]);
        }
        n = tq_collector_finish(mid, true);
        first = mid->out;
    }
    if (n > mid->keep && !straight_to_refine)
        n = mid->keep; /* float scorer: the first stage already kept k' */
    if (opts->rerank) {
        prefetch_refine(job, first, n);
        tq_topk_reset(best);
        for (size_t i = 0; i < n; i++)
            tq_topk_push(best, first[i].id, refine_key(c, query, pq, find_row(job, first[i].id)));
        n = tq_topk_drain(best, out);
    } else {
        memcpy(out, first, n * sizeof(tq_hit));
    }
    if (c->cfg.metric == TQ_METRIC_L2)
        for (size_t i = 0; i < n; i++)
            out[i].score = -out[i].score;
    else if (rank_metric(c) == TQ_METRIC_L2) /* centered cosine: -||q - x||^2 to cos */
        for (size_t i = 0; i < n; i++)
            out[i].score = 1.0f + 0.5f * out[i].score;
    return n;
}

/* Rotate and tabulate one query, centered as the codes are: l2 centers the
 * query, cosine its unit vector (ranked as l2, see rank_metric); ip keeps
 * it and adds <q, mean> to every estimate (an ip row's <mean, x - mean>
 * would need ||x||, which is not kept). */
static void prepare_query(const tq_codec *c, const float *query, tq_query *pq)
{
    const tq_simd_kernels *k = tq_simd();
    const size_t d = c->cfg.d;
    if (c->mean && c->cfg.metric != TQ_METRIC_IP) {
        const float input_norm = sqrtf(k->dot(query, query, d));
        const float scale = c->cfg.metric == TQ_METRIC_COSINE ? 1.0f / input_norm : 1.0f;
        /* restrict: otherwise every store might change the mean, and the
         * loop stayed scalar (a few % of a probing search at d = 784) */
        float *restrict centered = pq->centered;
        const float *restrict mean = c->mean;
        for (size_t j = 0; j < d; j++)
            centered[j] = query[j] * scale - mean[j];
        tq_quantizer_prepare(&c->q, pq->centered, pq);
        pq->input_norm = input_norm;
    } else {
        tq_quantizer_prepare(&c->q, query, pq);
        pq->input_norm = pq->qnorm; /* the same query was tabulated */
        if (c->mean)
            pq->bias = k->dot(query, c->mean, d);
    }
}

/* What block_select needs of a prepared query: the same formulas as
 * tq_unit_estimate() and estimate_key(), applied to 8-bit table sums. */
static void prepare_keys(const tq_codec *c, tq_query *pq)
{
    const tq_quantizer *q = &c->q;
    tq_key_params *kp = &pq->keys;
    const tq_metric metric = rank_metric(c);
    kp->metric = metric == TQ_METRIC_L2 ? TQ_KEY_L2 : metric == TQ_METRIC_IP ? TQ_KEY_IP : TQ_KEY_COSINE;
    kp->prod = q->variant == TQ_VARIANT_PROD;
    kp->code_delta = q->mse_bits ? pq->code_lut.delta : 0.0f;
    kp->code_bias = q->mse_bits ? pq->code_lut.bias : 0.0f;
    kp->sign_delta = kp->prod ? pq->sign_lut.delta : 0.0f;
    kp->sign_bias = kp->prod ? pq->sign_lut.bias : 0.0f;
    kp->qjl = q->qjl_scale;
    kp->qq = pq->qnorm * pq->qnorm;
    kp->bias = pq->bias;
    kp->qnorm = pq->qnorm;
}

static int check_query(const tq_codec *c, const float *query, size_t index, tq_error *err)
{
    const size_t d = c->cfg.d;
    size_t bad;
    if (tq_check_finite(query, d, &bad))
        return tq_err(err, TQ_EVALUE, "query %zu has a non-finite value at coordinate %zu", index, bad);
    if (c->cfg.metric == TQ_METRIC_COSINE && tq_simd()->dot(query, query, d) == 0.0f)
        return tq_err(err, TQ_EVALUE, "query %zu is zero: it has no cosine similarity", index);
    return TQ_OK;
}

/* Partition probing (sets with tq_partitions and opts->nprobe > 0): a
 * query scores every partitioned set's centroids and ranks all their
 * partitions together (the centroids of every set live in one space), scans
 * the rows of the best-ranked ones and every row of unpartitioned sets, and
 * if fewer than k rows got through (deletes, a filter) probes the next
 * partitions in rank order, doubling, until k have or none are left: the
 * answer always holds min(k, live and matching) rows, as a flat search's
 * does. Each round scans its blocks in row order, as the collectors' tie
 * rule wants.
 *
 * How many partitions nprobe means: with one partitioned set, nprobe. With
 * several (a collection's segments, each partitioned on its own at 4
 * sqrt(rows)), as many rows' worth as nprobe partitions of one set holding
 * all their rows would be: nprobe scaled by their partitions over the
 * default count for their rows together. A query then scans about the same
 * rows however a collection is split into segments.
 *
 * A target recall instead: each set probes the share of its own ranking
 * that its probe curve (tq_partitions) says the recall needs, read at the
 * share of the 10 nearest rows the set holds by its size. */
typedef struct probe_state {
    block_visit *visits;  /* room for every block plus one per partition boundary */
    float *scores;        /* one set's centroid scores: the largest nlist */
    void *rank_scratch;   /* tq_centroid_dots' for the largest nlist and d */
    uint64_t *keys;       /* every partition of every set, ranked: (score, lower number) packed
                             as the collector does; partitions numbered across the sets */
    uint8_t *chosen;      /* flags by that number: a round's partitions, read in row order
                             (all clear between rounds) */
    uint32_t *first;      /* nsets + 1: each set's first partition number */
    uint32_t total;       /* partitions in all */
    /* The partitions are ranked in groups, and a round takes ranks [from,
     * to) of each: one group of all of them for nprobe; one per set for a
     * target recall, each set then probed as its own curve says. */
    uint32_t ngroups;
    uint32_t *group;      /* ngroups + 1: each group's first partition number */
    uint32_t *start;      /* ngroups: the first round's `to` of each */
    uint32_t *from, *to;  /* ngroups: the current round's */
    /* A target recall rarely asks for whole partitions: the first round
     * scans the leading head_share of the rows of its last partition (rank
     * start - 1), as a partition's rows lie in no order a query favours;
     * the rest of it waits for a later round, if one is needed. partial:
     * that partition's number (PROBE_NONE: none pending), head_rows: the
     * rows of it scanned. One partition of 11 (fiori-minilm) or 156 was a
     * step of recall larger than the calibration's ±0.02. */
    float *head_share;    /* ngroups: in (0, 1], 1 for whole partitions */
    uint32_t *partial, *head_rows; /* ngroups */
    /* What the arrays hold room for: they are kept with the thread's search
     * scratch and grown only when a call needs more. */
    size_t cap_visits, cap_scores, cap_rank, cap_keys, cap_chosen, cap_first, cap_group, cap_share;
} probe_state;

static void probe_free(probe_state *ps)
{
    tq_free(ps->visits);
    tq_free(ps->scores);
    tq_free(ps->rank_scratch);
    tq_free(ps->keys);
    tq_free(ps->chosen);
    tq_free(ps->first);
    tq_free(ps->group);
    tq_free(ps->head_share);
    memset(ps, 0, sizeof(*ps));
}

static size_t probe_bytes(const probe_state *ps)
{
    return ps->cap_visits * sizeof(block_visit) + ps->cap_scores * sizeof(float) + ps->cap_rank +
           ps->cap_keys * sizeof(uint64_t) +
           ps->cap_chosen + (ps->cap_first + ps->cap_group) * sizeof(uint32_t) + ps->cap_share * sizeof(float);
}

/* Room for `want` elements of `size` bytes in *p (zeroed when grown, since
 * the contents need not survive). */
static bool probe_room(void **p, size_t *cap, size_t want, size_t size)
{
    if (want <= *cap)
        return true;
    tq_free(*p);
    *cap = 0;
    if (!(*p = tq_calloc(want, size)))
        return false;
    *cap = want;
    return true;
}

static int probe_init(probe_state *ps, const tq_codec *c, const tq_rows *sets, size_t nsets, size_t nblocks,
                      const tq_search_opts *opts)
{
    size_t most = 0, all = 0, rows = 0, partitioned = 0, everything = 0;
    for (size_t s = 0; s < nsets; s++) {
        everything += sets[s].n;
        if (sets[s].parts) {
            all += sets[s].parts->nlist;
            rows += sets[s].n;
            partitioned++;
            most = sets[s].parts->nlist > most ? sets[s].parts->nlist : most;
        }
    }
    if (!probe_room((void **)&ps->first, &ps->cap_first, nsets + 1, sizeof(uint32_t)) ||
        !probe_room((void **)&ps->group, &ps->cap_group, 6 * nsets + 1, sizeof(uint32_t)) ||
        !probe_room((void **)&ps->head_share, &ps->cap_share, nsets, sizeof(float)) ||
        !probe_room((void **)&ps->visits, &ps->cap_visits, nblocks + all + nsets + 1, sizeof(block_visit)) ||
        !probe_room((void **)&ps->scores, &ps->cap_scores, most + 1, sizeof(float)) ||
        !probe_room(&ps->rank_scratch, &ps->cap_rank, tq_centroid_scratch_bytes((uint32_t)most, c->cfg.d, 1), 1) ||
        !probe_room((void **)&ps->keys, &ps->cap_keys, all + 1, sizeof(uint64_t)) ||
        !probe_room((void **)&ps->chosen, &ps->cap_chosen, all + 1, 1)) {
        probe_free(ps);
        return TQ_ENOMEM;
    }
    ps->start = ps->group + nsets + 1;
    ps->from = ps->start + nsets;
    ps->to = ps->from + nsets;
    ps->partial = ps->to + nsets;
    ps->head_rows = ps->partial + nsets;
    ps->ngroups = 0;
    for (size_t s = 0, first = 0; s < nsets; s++) {
        ps->first[s] = (uint32_t)first;
        first += sets[s].parts ? sets[s].parts->nlist : 0;
    }
    ps->first[nsets] = (uint32_t)all;
    ps->total = (uint32_t)all;
    if (opts->target_recall > 0.0f) {
        /* Each set probes the share its curve asks for. A set holding a
         * share of all the rows holds about that share of a query's 10
         * nearest: their recall is what its curve is read at. */
        for (size_t s = 0; s < nsets; s++) {
            const tq_partitions *P = sets[s].parts;
            if (!P)
                continue;
            const double k = (double)TQ_CURVE_K * (double)sets[s].n / (double)everything;
            const double share =
                tq_partition_share(P, opts->target_recall, k, tq_partition_quality(P, opts->rerank, k));
            const double want = share * P->nlist < P->nlist ? share * P->nlist : P->nlist;
            const uint32_t start = want > 1.0 ? (uint32_t)ceil(want) : 1u;
            ps->group[ps->ngroups] = ps->first[s];
            ps->head_share[ps->ngroups] = want > start - 1 ? (float)(want - (start - 1)) : 1.0f;
            ps->start[ps->ngroups++] = start;
        }
    } else {
        /* With several sets, as many rows' worth as nprobe partitions of
         * one set of all their rows (see above). */
        const double scale = partitioned > 1 ? (double)all / tq_partition_default_nlist(c, rows) : 1.0;
        const double want = ceil(opts->nprobe * scale);
        ps->group[0] = 0;
        ps->head_share[0] = 1.0f;
        ps->start[ps->ngroups++] = want < all ? (uint32_t)want : (uint32_t)all;
    }
    ps->group[ps->ngroups] = (uint32_t)all;
    return TQ_OK;
}

/* What a search call allocates depends only on this; a thread keeps the
 * last call's allocations and reuses them when the next call has the same
 * shape (the per-call allocations were a tenth of a small search). */
typedef struct search_shape {
    uint32_t d;
    unsigned mse_bits;
    tq_variant variant;
    size_t batch, ncols, nfirst, nmid, k, nsums;
} search_shape;

typedef struct search_scratch {
    search_shape shape;
    size_t bytes;          /* about what it holds */
    tq_query *pq;          /* batch prepared queries */
    tq_collector *cols;    /* ncols: nparts * batch */
    block_sums *sums;      /* nsums: a sliced scan's sums, per part */
    tq_topk merged, best;
    tq_collector mid;      /* stage 2's best k' */
    probe_state probe;     /* a probing search's buffers, grown as calls need */
} search_scratch;

/* A thread keeps at most this much between calls (one query's tables are
 * about 100 bytes a coordinate at 4 bits; a batch of 32 at d = 4096 is
 * 13 MB, which is allocated per call instead). */
#define SCRATCH_KEEP_BYTES ((size_t)4 << 20)

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *arg)
{
    search_scratch *sc = arg;
    if (!sc)
        return;
    if (sc->pq)
        for (size_t i = 0; i < sc->shape.batch; i++)
            tq_query_free(&sc->pq[i]);
    if (sc->cols)
        for (size_t i = 0; i < sc->shape.ncols; i++)
            tq_collector_free(&sc->cols[i]);
    tq_free(sc->pq);
    tq_free(sc->cols);
    tq_free(sc->sums);
    tq_topk_free(&sc->merged);
    tq_collector_free(&sc->mid);
    tq_topk_free(&sc->best);
    probe_free(&sc->probe);
    tq_free(sc);
}

static void scratch_key_create(void)
{
    /* Without a key, nothing is kept: every call allocates. */
    if (pthread_key_create(&scratch_key, scratch_free))
        scratch_key = (pthread_key_t)-1;
}

static bool same_shape(const search_shape *a, const search_shape *b)
{
    return a->d == b->d && a->mse_bits == b->mse_bits && a->variant == b->variant && a->batch == b->batch &&
           a->ncols == b->ncols && a->nfirst == b->nfirst && a->nmid == b->nmid && a->k == b->k &&
           a->nsums == b->nsums;
}

static size_t scratch_bytes(const tq_quantizer *q, const search_shape *sh)
{
    size_t per_query = 16 * (size_t)q->d;
    const tq_scan_layout *layouts[2] = {&q->code_layout, &q->sign_layout};
    for (int i = 0; i < 2; i++) /* float tables and row offsets, 8-bit tables (unused layouts are zero) */
        per_query += (size_t)layouts[i]->lookups * (layouts[i]->entries + 1) * sizeof(float) + layouts[i]->lut_bytes;
    return sh->batch * per_query + sh->nsums * sizeof(block_sums) + sh->ncols * 12 * sh->nfirst;
}

static search_scratch *scratch_new(const tq_quantizer *q, const search_shape *sh)
{
    search_scratch *sc = tq_calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    sc->shape = *sh;
    sc->bytes = scratch_bytes(q, sh);
    sc->pq = tq_calloc(sh->batch, sizeof(tq_query));
    sc->cols = tq_calloc(sh->ncols, sizeof(tq_collector));
    sc->sums = sh->nsums ? tq_malloc(sh->nsums * sizeof(block_sums)) : NULL;
    bool ok = sc->pq && sc->cols && (!sh->nsums || sc->sums) && !tq_topk_init(&sc->merged, sh->nfirst) &&
              !tq_collector_init(&sc->mid, sh->nmid) && !tq_topk_init(&sc->best, sh->k);
    for (size_t i = 0; ok && i < sh->batch; i++)
        ok = !tq_query_init(&sc->pq[i], q);
    for (size_t i = 0; ok && i < sh->ncols; i++)
        ok = !tq_collector_init(&sc->cols[i], sh->nfirst);
    if (!ok) {
        scratch_free(sc);
        return NULL;
    }
    return sc;
}

/* This thread's kept scratch if it has the shape, else a new one. */
static search_scratch *scratch_take(const tq_quantizer *q, const search_shape *sh)
{
    pthread_once(&scratch_once, scratch_key_create);
    if (scratch_key != (pthread_key_t)-1) {
        search_scratch *kept = pthread_getspecific(scratch_key);
        /* Taken out while in use, so nothing else can find it. */
        pthread_setspecific(scratch_key, NULL);
        if (kept && same_shape(&kept->shape, sh))
            return kept;
        scratch_free(kept);
    }
    return scratch_new(q, sh);
}

static void scratch_give(search_scratch *sc)
{
    if (probe_bytes(&sc->probe) > SCRATCH_KEEP_BYTES)
        probe_free(&sc->probe);
    if (scratch_key == (pthread_key_t)-1 || sc->bytes > SCRATCH_KEEP_BYTES || pthread_setspecific(scratch_key, sc))
        scratch_free(sc);
}

/* Rank every partition of every partitioned set by nearness to the query
 * into ps->keys (once per query). */
static void probe_rank(const search_job *job, probe_state *ps, const float *query)
{
    const tq_codec *c = job->c;
    for (size_t s = 0; s < job->nsets; s++) {
        const tq_partitions *P = job->sets[s].parts;
        if (!P)
            continue;
        tq_centroid_dots(P->table, query, ps->rank_scratch, ps->scores);
        /* restrict and the count in a local: with every store possibly
         * changing ps or P (the build has no strict aliasing), the loop
         * reloaded its pointers and its bound each partition and stayed
         * scalar, a tenth of a probing search at 1,265 partitions */
        uint64_t *restrict keys = ps->keys + ps->first[s];
        const float *restrict scores = ps->scores, *restrict half_norms = P->half_norms;
        const uint32_t first = ps->first[s], nlist = P->nlist;
        const tq_metric metric = c->cfg.metric;
        for (uint32_t p = 0; p < nlist; p++)
            keys[p] = tq_collector_pack(first + p, tq_partition_score(metric, scores[p], half_norms[p]));
    }
}

/* Append the blocks of rows [r0, r1) of set s, merging a block shared with
 * the previous range. */
static size_t visit_rows(block_visit *v, size_t nv, uint32_t s, size_t r0, size_t r1)
{
    for (size_t lb = r0 / TQ_SCAN_BLOCK; r0 < r1; lb++) {
        const size_t end = (lb + 1) * TQ_SCAN_BLOCK < r1 ? (lb + 1) * TQ_SCAN_BLOCK : r1;
        const unsigned lo = (unsigned)(r0 % TQ_SCAN_BLOCK), width = (unsigned)(end - r0);
        const uint32_t mask = (width == 32 ? 0xFFFFFFFFu : ((1u << width) - 1)) << lo;
        if (nv && v[nv - 1].set == s && v[nv - 1].block == lb)
            v[nv - 1].mask |= mask;
        else
            v[nv++] = (block_visit){.set = s, .mask = mask, .block = lb};
        r0 = end;
    }
    return nv;
}

/* How a round scans a chosen partition (ps->chosen). */
enum { PROBE_SKIP, PROBE_WHOLE, PROBE_HEAD, PROBE_TAIL };
#define PROBE_NONE UINT32_MAX

/* The group pending partial partition p belongs to. */
static uint32_t partial_group(const probe_state *ps, uint32_t p)
{
    uint32_t g = 0;
    while (ps->partial[g] != p)
        g++;
    return g;
}

/* The blocks of one round: ranks [from, to) of each group of partitions
 * (the first round's last one only in part when its group asks for a
 * share; a later round then scans the rest of it), and in the first round
 * every row of the unpartitioned sets, in row order. */
static size_t probe_round(const search_job *job, probe_state *ps, bool first_round)
{
    size_t nv = 0;
    for (uint32_t g = 0; g < ps->ngroups; g++) {
        uint64_t *keys = ps->keys + ps->group[g];
        const uint32_t n = ps->group[g + 1] - ps->group[g];
        /* The best `to`, then the best `from` of those moved ahead of the
         * rest (a previous round's, already scanned). */
        tq_select_largest(keys, n, ps->to[g]);
        tq_select_largest(keys, ps->to[g], ps->from[g]);
        uint32_t whole_to = ps->to[g];
        if (first_round) {
            ps->partial[g] = PROBE_NONE;
            if (ps->head_share[g] < 1.0f) {
                /* rank to - 1 last, so that it is the one cut */
                tq_select_largest(keys, ps->to[g], ps->to[g] - 1);
                ps->partial[g] = (uint32_t)tq_collector_id(keys[--whole_to]);
                ps->chosen[ps->partial[g]] = PROBE_HEAD;
            }
        } else if (ps->partial[g] != PROBE_NONE) {
            ps->chosen[ps->partial[g]] = PROBE_TAIL;
        }
        for (uint32_t i = ps->from[g]; i < whole_to; i++)
            ps->chosen[tq_collector_id(keys[i])] = PROBE_WHOLE;
    }
    for (size_t s = 0; s < job->nsets; s++) {
        const tq_rows *set = &job->sets[s];
        const tq_partitions *P = set->parts;
        if (!P) {
            if (first_round && set->n)
                nv = visit_rows(ps->visits, nv, (uint32_t)s, 0, set->n);
            continue;
        }
        uint8_t *chosen = ps->chosen + ps->first[s];
        const uint32_t nlist = P->nlist; /* a local: see probe_rank */
        for (uint32_t p = 0; p < nlist; p++) {
            /* A round chooses a few of thousands: clear flags are passed
             * over eight at a time (one at a time, this loop was a twentieth
             * of a probing search at 1,265 partitions). */
            uint64_t eight;
            if (p % 8 == 0 && p + 8 <= nlist && (memcpy(&eight, chosen + p, 8), eight == 0)) {
                p += 7;
                continue;
            }
            if (!chosen[p])
                continue;
            uint32_t r0 = P->offsets[p], r1 = P->offsets[p + 1];
            if (chosen[p] == PROBE_HEAD) {
                const uint32_t g = partial_group(ps, ps->first[s] + p);
                ps->head_rows[g] = (uint32_t)ceil((double)ps->head_share[g] * (double)(r1 - r0));
                r1 = r0 + ps->head_rows[g];
            } else if (chosen[p] == PROBE_TAIL) {
                const uint32_t g = partial_group(ps, ps->first[s] + p);
                r0 += ps->head_rows[g];
                ps->partial[g] = PROBE_NONE;
            }
            chosen[p] = PROBE_SKIP;
            if (r0 < r1)
                nv = visit_rows(ps->visits, nv, (uint32_t)s, r0, r1);
        }
    }
    return nv;
}

/* Query i's first-stage hits, best first, from the collectors of nparts
 * parts (part p's at cols[p * stride + i]): one part's collector is the
 * answer already; several parts' are merged by the same total order. */
static size_t first_stage(const search_job *job, tq_collector *cols, unsigned nparts, size_t stride, size_t i,
                          tq_topk *merged, tq_hit **first)
{
    if (nparts == 1) {
        *first = cols[i].out;
        return tq_collector_finish(&cols[i], first_stage_sorted(job->opts));
    }
    tq_topk_reset(merged);
    for (unsigned p = 0; p < nparts; p++) {
        tq_collector *col = &cols[p * stride + i];
        for (size_t j = 0; j < col->len; j++)
            tq_topk_push(merged, tq_collector_id(col->buf[j]), tq_collector_score(col->buf[j]));
    }
    *first = merged->heap;
    return tq_topk_drain(merged, merged->heap);
}

/* One query of a probing search, all three stages. */
static size_t probe_query(search_job *job, probe_state *ps, unsigned nparts, const float *query, tq_query *pq,
                          search_scratch *sc, tq_hit *out)
{
    for (unsigned p = 0; p < nparts; p++)
        tq_collector_reset(&sc->cols[p]);
    search_job one = *job;
    one.pq = pq;
    one.nq = 1;
    one.scratch = NULL;
    one.visits = ps->visits;
    probe_rank(job, ps, query);
    for (uint32_t g = 0; g < ps->ngroups; g++) {
        ps->from[g] = 0;
        ps->to[g] = ps->start[g];
    }
    for (bool first_round = true;; first_round = false) {
        one.nblocks = probe_round(job, ps, first_round);
        if (one.nblocks) {
            const unsigned n = nparts < one.nblocks ? nparts : (unsigned)one.nblocks;
            one.blocks_per_part = (one.nblocks + n - 1) / n;
            tq_pool_run(n, search_part, &one);
        }
        size_t held = 0;
        for (unsigned p = 0; p < nparts; p++)
            held += sc->cols[p].len;
        bool more = false;
        for (uint32_t g = 0; g < ps->ngroups; g++) {
            const uint32_t size = ps->group[g + 1] - ps->group[g];
            ps->from[g] = ps->to[g];
            ps->to[g] = ps->to[g] < size / 2 ? 2 * ps->to[g] : size;
            more |= ps->from[g] < size || ps->partial[g] != PROBE_NONE;
        }
        if (!more || held >= job->opts->k)
            break;
    }
    tq_hit *first;
    const size_t nf = first_stage(job, sc->cols, nparts, 1, 0, &sc->merged, &first);
    return finish_query(&one, query, pq, first, nf, &sc->mid, &sc->best, out);
}

/* Queries prepared per sub-batch: bounds the tables held at once (a query's
 * tables are about 80 bytes per coordinate at 4 bits). */
#define QUERY_BATCH 32
/* Row sets searched without allocating their block and row offsets. */
#define FEW_SETS 16

/* What re-ranking a row costs beside reading its refine bytes, in bytes of
 * codes scanned: on fashion-mnist 60K at 1 bit (fp16 refine, d = 784) one
 * more re-ranked row cost 220 ns and one more probed partition 0.094 ns
 * per code byte, so a row was worth ~2,300 code bytes, ~800 whatever its
 * size. */
#define RERANK_ROW_BYTES 800.0

/* The re-rank depth of a search for a target recall: of the depths the
 * sets were calibrated at, the one whose scan (the partitions their curves
 * ask for, given the full scan's recall at that depth) and re-rank cost
 * least, counted in bytes read; at least opts->rerank. tq_target_rerank's
 * (or opts->rerank, if deeper) when no partitioned set was calibrated at
 * every depth (segments from before format 5). */
static unsigned target_depth(const tq_codec *c, const tq_rows *sets, size_t nsets, const tq_search_opts *opts)
{
    const unsigned fixed = opts->rerank > tq_target_rerank(c) ? opts->rerank : tq_target_rerank(c);
    if (c->cfg.refine == TQ_REFINE_NONE)
        return fixed;
    size_t everything = 0, partitioned = 0;
    for (size_t s = 0; s < nsets; s++) {
        everything += sets[s].n;
        partitioned += sets[s].parts != NULL;
    }
    if (!partitioned || !everything)
        return fixed;
    const double code_bytes = (double)tq_codec_bytes_per_vector(c);
    const double row_bytes = (double)tq_codec_refine_bytes_per_vector(c) + RERANK_ROW_BYTES;
    unsigned best = fixed, deepest = 0;
    double best_cost = INFINITY;
    for (unsigned i = 0; i < TQ_CALIB_DEPTHS; i++) {
        const unsigned depth = 1u << i;
        if (depth < opts->rerank)
            continue;
        double scanned = 0; /* rows of the partitioned sets */
        bool reaches = true;
        for (size_t s = 0; s < nsets; s++) {
            const tq_partitions *P = sets[s].parts;
            if (!P)
                continue;
            if (!(P->quality_at[i][0] > 0.0f))
                return fixed;
            const double k = (double)TQ_CURVE_K * (double)sets[s].n / (double)everything;
            const float quality = tq_partition_quality(P, depth, k);
            scanned += tq_partition_share(P, opts->target_recall, k, quality) * (double)sets[s].n;
            reaches &= quality >= opts->target_recall;
        }
        deepest = depth;
        /* A depth whose full scan falls short of the target cannot reach
         * it however many partitions are probed (glove-50 at 1 bit: 0.37
         * at depth 1, 0.83 at 16); one just above it would need nearly
         * every partition, where the curves (drawn with the set's own rows
         * as queries, which find their neighbours more easily than outside
         * queries do) are least to be trusted: on a million stored rows a
         * depth whose calibrated recall passed 0.95 reached 0.949 for real
         * queries scanning everything, and the search 0.928. So the full
         * scan may lose at most half of what the target allows. */
        if (!reaches)
            continue;
        const double reranked = (double)tq_first_stage_candidates(opts->k * depth);
        const double cost = scanned * code_bytes + reranked * row_bytes;
        if (cost < best_cost) {
            best_cost = cost;
            best = depth;
        }
    }
    /* None reaches it: the best the codes can do. */
    return best_cost < (double)INFINITY ? best : deepest > fixed ? deepest : fixed;
}

int tq_search(const tq_codec *c, const tq_rows *sets, size_t nsets, const float *queries, size_t nq,
              const tq_search_opts *opts, tq_hit *out, size_t *counts, tq_error *err)
{
    /* A search for a target recall re-ranks as deep as its sets' calibration
     * says pays best; its probes follow from the recall at that depth. */
    tq_search_opts deeper;
    if (opts->target_recall > 0.0f) {
        deeper = *opts;
        deeper.rerank = target_depth(c, sets, nsets, opts);
        opts = &deeper;
    }
    const size_t d = c->cfg.d, k = opts->k;
    const unsigned rerank = opts->rerank;
    for (size_t i = 0; i < nq; i++)
        counts[i] = 0;
    if (k > TQ_MAX_K)
        return tq_err(err, TQ_EARG, "k %zu is above the limit %u", k, TQ_MAX_K);
    if (rerank > TQ_MAX_RERANK)
        return tq_err(err, TQ_EARG, "rerank %u is above the limit %u", rerank, TQ_MAX_RERANK);
    if (rerank > 0 && c->cfg.refine == TQ_REFINE_NONE)
        return tq_err(err, TQ_EUNSUPPORTED, "re-ranking needs refine data (code8 or fp32), which this index does not keep");
    if (opts->scorer != TQ_SCORER_LUT && opts->scorer != TQ_SCORER_FLOAT)
        return tq_err(err, TQ_EARG, "unknown scorer %d", (int)opts->scorer);
    if (opts->threads > TQ_MAX_THREADS)
        return tq_err(err, TQ_EARG, "threads %u is above the limit %u", opts->threads, TQ_MAX_THREADS);
    if (!(opts->target_recall >= 0.0f && opts->target_recall <= 1.0f))
        return tq_err(err, TQ_EARG, "target recall %g is outside 0..1", (double)opts->target_recall);
    for (size_t i = 0; i < nq; i++) {
        int rc = check_query(c, queries + i * d, i, err);
        if (rc)
            return rc;
    }
    size_t live = 0, rows = 0;
    for (size_t s = 0; s < nsets; s++) {
        live += sets[s].n - sets[s].ndeleted;
        rows += sets[s].n;
    }
    if (rows > (size_t)TQ_COLLECTOR_MAX_ID + 1)
        return tq_err(err, TQ_EUNSUPPORTED, "a search covers at most 2^32 rows, not %zu", rows);
    if (k == 0 || live == 0 || nq == 0)
        return TQ_OK;

    size_t offsets_small[2 * (FEW_SETS + 1)];
    size_t *offsets = nsets <= FEW_SETS ? offsets_small : tq_malloc(2 * (nsets + 1) * sizeof(size_t));
    if (!offsets)
        return tq_err(err, TQ_ENOMEM, "out of memory for search scratch");
    size_t *first_block = offsets, *first_row = offsets + nsets + 1;
    first_block[0] = first_row[0] = 0;
    for (size_t s = 0; s < nsets; s++) {
        first_block[s + 1] = first_block[s] + (sets[s].n + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK;
        first_row[s + 1] = first_row[s] + sets[s].n;
    }

    size_t nmid = rerank ? k * rerank : k;
    if (nmid > live)
        nmid = live;
    /* The LUT scorer's first stage keeps k' + k'/8 + 8 for a re-rank (all
     * of them are re-ranked: fewer lost recall, glove-50 at depth 4 and 1
     * bit 0.616 with + 4) and k + k/8 + 4 for the float re-score alone:
     * the 8-bit tables only reorder near-ties. (The margin was + 16, then
     * + 8; with + 4, recall@10 at 1 to 4 bits on the five shared sets and
     * recall@100 on siftsmall, fashion-mnist and glove-50 moved by at most
     * 0.00012, with + 0 by up to 0.002; re-scoring was a quarter of a
     * search of 728 rows at 2 bits.) */
    size_t nfirst = nmid;
    if (opts->scorer == TQ_SCORER_LUT) {
        nfirst = rerank ? tq_first_stage_candidates(nmid) : tq_rescore_candidates(nmid);
        if (nfirst > live)
            nfirst = live;
    }
    const size_t nblocks = first_block[nsets];
    unsigned nparts = opts->threads > 1 ? opts->threads : 1;
    if (nparts > nblocks)
        nparts = (unsigned)nblocks;
    size_t batch = nq < QUERY_BATCH ? nq : QUERY_BATCH;

    const size_t lut_bytes = (c->q.mse_bits ? c->q.code_layout.lut_bytes : 0) +
                             (c->q.variant == TQ_VARIANT_PROD ? c->q.sign_layout.lut_bytes : 0);
    /* Slicing pays when several queries' tables would not stay in L1
     * together; one query's stream well from L2
     * (measured at d = 1536 and 4096: unsliced was faster for one query,
     * sliced for four). */
    bool probing = false;
    for (size_t s = 0; (opts->nprobe || opts->target_recall > 0.0f) && s < nsets; s++)
        probing |= sets[s].parts != NULL;
    /* A probing search scans one query at a time (each its own blocks). */
    const bool sliced = !probing && opts->scorer == TQ_SCORER_LUT && batch > 1 &&
                        lut_bytes * (batch < TQ_SCAN_MAX_QUERIES ? batch : TQ_SCAN_MAX_QUERIES) > 64 * 1024;
    const search_shape shape = {.d = c->q.d, .mse_bits = c->q.mse_bits, .variant = c->q.variant, .batch = batch,
                                .ncols = (size_t)nparts * batch, .nfirst = nfirst, .nmid = nmid, .k = k,
                                .nsums = sliced ? (size_t)nparts * SLICED_SCRATCH(batch) : 0};
    int rc = TQ_OK;
    search_scratch *sc = scratch_take(&c->q, &shape);
    if (!sc) {
        if (offsets != offsets_small)
            tq_free(offsets);
        return tq_err(err, TQ_ENOMEM, "out of memory for search scratch");
    }
    tq_query *pq = sc->pq;
    tq_collector *cols = sc->cols;
    tq_topk *merged = &sc->merged, *best = &sc->best;
    tq_collector *mid = &sc->mid;

    probe_state *probe = &sc->probe;
    if (probing && probe_init(probe, c, sets, nsets, nblocks, opts)) {
        scratch_give(sc);
        if (offsets != offsets_small)
            tq_free(offsets);
        return tq_err(err, TQ_ENOMEM, "out of memory for search scratch");
    }
    search_job job = {.c = c, .k = tq_simd(), .sets = sets, .nsets = nsets, .first_block = first_block, .first_row = first_row,
                      .opts = opts, .pq = pq, .nblocks = nblocks,
                      .blocks_per_part = (nblocks + nparts - 1) / nparts, .cols = cols, .scratch = sc->sums};
    for (size_t q0 = 0; q0 < nq; q0 += batch) {
        size_t m = nq - q0 < batch ? nq - q0 : batch;
        for (size_t i = 0; i < m; i++) {
            prepare_query(c, queries + (q0 + i) * d, &pq[i]);
            prepare_keys(c, &pq[i]);
        }
        if (probing) {
            for (size_t i = 0; i < m; i++)
                counts[q0 + i] = probe_query(&job, probe, nparts, queries + (q0 + i) * d, &pq[i], sc,
                                             out + (q0 + i) * k);
            continue;
        }
        for (size_t i = 0; i < (size_t)nparts * batch; i++)
            tq_collector_reset(&cols[i]);
        job.nq = m;
        tq_pool_run(nparts, search_part, &job);
        for (size_t i = 0; i < m; i++) {
            tq_hit *first;
            const size_t nf = first_stage(&job, cols, nparts, m, i, merged, &first);
            counts[q0 + i] = finish_query(&job, queries + (q0 + i) * d, &pq[i], first, nf, mid, best,
                                          out + (q0 + i) * k);
        }
    }
    scratch_give(sc);
    if (offsets != offsets_small)
        tq_free(offsets);
    return rc;
}
