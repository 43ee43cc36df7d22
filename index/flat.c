/*
 * Flat (exhaustive) search over TurboQuant codes held in memory.
 *
 * Storage is struct-of-arrays, row i being the i-th vector added: scalar
 * codes and (prod) sign sketches in scan blocks of 32 vectors, per-vector
 * scalars, and optionally refine data for re-ranking: the float vectors
 * (normalized for cosine), or 8-bit Lloyd-Max codes of the rotated unit
 * vector (a quarter of the bytes; relative error about 0.6 % of the norm,
 * enough to swap near-ties at rank k: re-ranked recall@10 0.97-0.996 where
 * floats give 1.0). Rows of a block that hold no vector yet are
 * zero nibbles and are never reported.
 *
 * Search with the default LUT scorer is three stages:
 *   1. coarse: the simd scan kernel sums 8-bit query tables over every
 *      block; the best C = k' + k'/8 + 16 estimates (k' = k, or
 *      k * rerank) are kept;
 *   2. re-score: those C get the float-table estimate, which is the float
 *      scorer's value, so 8-bit table rounding cannot cost recall unless a
 *      true top-k' vector falls outside the top C coarse estimates;
 *   3. re-rank (optional): the best k' are rescored on the refine data
 *      (exactly with floats, to 8 bits with code8) and the best k returned.
 * The float scorer (TQ_SCORER_FLOAT) runs stage 2 on every vector: the
 * reference the LUT scorer is measured against.
 *
 * Internally a larger key is better: l2 uses the negated distance estimate
 * ||q||^2 + ||x||^2 - 2 ||x|| g, ip uses ||x|| g and cosine ||x|| g/||q||
 * (cosine encodes the normalized vector, so ||x|| is 1 unless centered);
 * results go out in the metric's units.
 *
 * Centering (optional, TQ_CENTER_FIRST_BATCH): the mean of the first add's
 * vectors (normalized ones for cosine) is subtracted from every vector
 * before encoding. Codes then spend their bits on what distinguishes
 * vectors rather than on what they share: recall@10 at 4 bits went from
 * 0.9445 to 0.9615 on fashion-mnist and 0.891 to 0.914 on siftsmall. l2 is
 * unchanged by a common shift, so the query is centered too; for ip and
 * cosine <q, x> = <q, x - mean> + <q, mean>, so the query stays as it is and
 * <q, mean> is added back to every estimate. Re-ranking on fp32 uses the
 * stored original vectors and is exact either way.
 *
 * Concurrency: tq_flat_add needs exclusive access; searches only read and
 * may run in parallel, each with its own scratch.
 */
#include "tq_index.h"

struct tq_flat {
    tq_flat_config cfg;
    tq_quantizer q;
    tq_qscratch scratch;      /* encode scratch, used by add only */
    uint8_t *codes, *signs;   /* one vector's unpacked codes, used by add only */
    size_t n, cap_blocks;
    uint8_t *code_blocks;     /* cap_blocks * q.code_layout.block_bytes */
    uint8_t *sign_blocks;     /* cap_blocks * q.sign_layout.block_bytes (prod) */
    tq_code_scalars *sc;      /* cap_blocks * 32 */
    float *vectors;           /* cap_blocks * 32 * d (refine fp32) */
    uint8_t *refine8;         /* cap_blocks * 32 * d (refine code8) */
    const tq_codebook *cb8;   /* refine code8 */
    float *mean;              /* centering: d floats, set by the first add */
    float *tmp;               /* add scratch: one normalized or centered vector */
};

int tq_flat_create(const tq_flat_config *cfg, tq_flat **out, tq_error *err)
{
    *out = NULL;
    if (cfg->metric != TQ_METRIC_L2 && cfg->metric != TQ_METRIC_IP && cfg->metric != TQ_METRIC_COSINE)
        return tq_err(err, TQ_EARG, "unknown metric %d", (int)cfg->metric);
    if (cfg->refine != TQ_REFINE_NONE && cfg->refine != TQ_REFINE_CODE8 && cfg->refine != TQ_REFINE_FP32)
        return tq_err(err, TQ_EARG, "unknown refine kind %d", (int)cfg->refine);
    if (cfg->center != TQ_CENTER_NONE && cfg->center != TQ_CENTER_FIRST_BATCH)
        return tq_err(err, TQ_EARG, "unknown centering %d", (int)cfg->center);
    tq_flat *f = tq_calloc(1, sizeof(*f));
    if (!f)
        return tq_err(err, TQ_ENOMEM, "out of memory for an index");
    f->cfg = *cfg;
    int rc = tq_quantizer_init(&f->q, cfg->d, cfg->bits, cfg->variant, cfg->correction, cfg->seed, err);
    if (rc) {
        tq_free(f);
        return rc;
    }
    f->codes = tq_malloc(2 * (size_t)cfg->d);
    f->tmp = tq_malloc((size_t)cfg->d * sizeof(float));
    if (!f->codes || !f->tmp || tq_qscratch_init(&f->scratch, cfg->d)) {
        tq_flat_free(f);
        return tq_err(err, TQ_ENOMEM, "out of memory for encode scratch");
    }
    f->signs = f->codes + cfg->d;
    if (cfg->refine == TQ_REFINE_CODE8 && !(f->cb8 = tq_codebook_get(cfg->d, 8))) {
        tq_flat_free(f);
        return tq_err(err, TQ_ENOMEM, "out of memory computing the 8-bit refine codebook");
    }
    *out = f;
    return TQ_OK;
}

void tq_flat_free(tq_flat *f)
{
    if (!f)
        return;
    tq_quantizer_free(&f->q);
    tq_qscratch_free(&f->scratch);
    tq_free(f->codes);
    tq_free(f->code_blocks);
    tq_free(f->sign_blocks);
    tq_free(f->sc);
    tq_free(f->vectors);
    tq_free(f->refine8);
    tq_free(f->mean);
    tq_free(f->tmp);
    tq_free(f);
}

size_t tq_flat_count(const tq_flat *f)
{
    return f->n;
}

const tq_quantizer *tq_flat_quantizer(const tq_flat *f)
{
    return &f->q;
}

const tq_flat_config *tq_flat_get_config(const tq_flat *f)
{
    return &f->cfg;
}

size_t tq_flat_bytes_per_vector(const tq_flat *f)
{
    size_t scalars = f->q.variant == TQ_VARIANT_PROD ? 3 : 2;
    if (f->q.correction == TQ_CORRECTION_NONE)
        scalars--;
    size_t code = f->q.mse_bits ? f->q.code_layout.block_bytes / TQ_SCAN_BLOCK : 0;
    size_t sign = f->q.variant == TQ_VARIANT_PROD ? f->q.sign_layout.block_bytes / TQ_SCAN_BLOCK : 0;
    return code + sign + scalars * sizeof(float);
}

size_t tq_flat_refine_bytes_per_vector(const tq_flat *f)
{
    switch (f->cfg.refine) {
    case TQ_REFINE_NONE:
        return 0;
    case TQ_REFINE_CODE8:
        return f->cfg.d;
    case TQ_REFINE_FP32:
        return f->cfg.d * sizeof(float);
    }
    return 0;
}

/* Grow one array from old_n to new_n elements of `size` bytes, zeroing the
 * new part. On failure *p is untouched. */
static int grow(void **p, size_t old_n, size_t new_n, size_t size)
{
    if (size == 0)
        return TQ_OK;
    uint8_t *q = tq_realloc(*p, new_n * size);
    if (!q)
        return TQ_ENOMEM;
    memset(q + old_n * size, 0, (new_n - old_n) * size);
    *p = q;
    return TQ_OK;
}

/* Room for `want` rows. On failure the arrays that did grow keep their
 * contents and n is unchanged, so the index stays consistent. */
static int reserve(tq_flat *f, size_t want, tq_error *err)
{
    size_t blocks = (want + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK;
    if (blocks <= f->cap_blocks)
        return TQ_OK;
    size_t cap = f->cap_blocks ? f->cap_blocks : 32;
    while (cap < blocks)
        cap *= 2;
    const size_t old = f->cap_blocks, d = f->cfg.d;
    bool prod = f->q.variant == TQ_VARIANT_PROD;
    if (grow((void **)&f->code_blocks, old, cap, f->q.mse_bits ? f->q.code_layout.block_bytes : 0) ||
        grow((void **)&f->sign_blocks, old, cap, prod ? f->q.sign_layout.block_bytes : 0) ||
        grow((void **)&f->sc, old, cap, TQ_SCAN_BLOCK * sizeof(tq_code_scalars)) ||
        grow((void **)&f->vectors, old, cap, f->cfg.refine == TQ_REFINE_FP32 ? TQ_SCAN_BLOCK * d * sizeof(float) : 0) ||
        grow((void **)&f->refine8, old, cap, f->cfg.refine == TQ_REFINE_CODE8 ? TQ_SCAN_BLOCK * d : 0))
        return tq_err(err, TQ_ENOMEM, "out of memory growing the index to %zu vectors", cap * TQ_SCAN_BLOCK);
    f->cap_blocks = cap;
    return TQ_OK;
}

/* The centering mean: of the n vectors of the first add (normalized for
 * cosine), accumulated in double. */
static int set_mean(tq_flat *f, const float *x, size_t n, tq_error *err)
{
    const size_t d = f->cfg.d;
    const tq_simd_kernels *k = tq_simd();
    double *acc = tq_calloc(d, sizeof(double));
    f->mean = tq_malloc(d * sizeof(float));
    if (!acc || !f->mean) {
        tq_free(acc);
        tq_free(f->mean);
        f->mean = NULL;
        return tq_err(err, TQ_ENOMEM, "out of memory for the centering mean");
    }
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * d;
        double scale = f->cfg.metric == TQ_METRIC_COSINE ? 1.0 / sqrt(k->dot_f64(v, v, d)) : 1.0;
        for (size_t j = 0; j < d; j++)
            acc[j] += (double)v[j] * scale;
    }
    for (size_t j = 0; j < d; j++)
        f->mean[j] = (float)(acc[j] / (double)n);
    tq_free(acc);
    return TQ_OK;
}

/* Checks vectors [from, to) of an add: finite, norm representable, and
 * nonzero for cosine. */
static int validate_rows(const tq_flat *f, const float *x, size_t from, size_t to, tq_error *err)
{
    const size_t d = f->cfg.d;
    for (size_t i = from; i < to; i++) {
        /* One pass checks everything: the squared norm is NaN or infinite
         * exactly when a coordinate is, or when the norm overflows float. */
        float sq = tq_simd()->dot(x + i * d, x + i * d, d);
        size_t bad;
        if (!isfinite(sq)) {
            if (tq_check_finite(x + i * d, d, &bad))
                return tq_err(err, TQ_EVALUE, "vector %zu has a non-finite value at coordinate %zu", i, bad);
            return tq_err(err, TQ_EVALUE, "vector %zu has a norm too large for float32", i);
        }
        if (f->cfg.metric == TQ_METRIC_COSINE && sq == 0.0f)
            return tq_err(err, TQ_EVALUE, "vector %zu is zero: it has no cosine similarity", i);
    }
    return TQ_OK;
}

static void encode_row(tq_flat *f, const float *v, size_t row)
{
    const size_t d = f->cfg.d, block = row / TQ_SCAN_BLOCK;
    const unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
    const tq_quantizer *q = &f->q;
    const tq_simd_kernels *k = tq_simd();
    const float *enc = v;
    if (f->cfg.metric == TQ_METRIC_COSINE || f->mean) {
        memcpy(f->tmp, v, d * sizeof(float));
        if (f->cfg.metric == TQ_METRIC_COSINE)
            k->scale(f->tmp, d, 1.0f / sqrtf(k->dot(v, v, d)));
        if (f->mean)
            for (size_t j = 0; j < d; j++)
                f->tmp[j] = f->tmp[j] - f->mean[j];
        enc = f->tmp;
    }
    tq_quantizer_encode(q, enc, &f->scratch, f->codes, f->signs, &f->sc[row]);
    if (q->mse_bits)
        tq_scan_put(&q->code_layout, f->code_blocks + block * q->code_layout.block_bytes, lane, f->codes);
    if (q->variant == TQ_VARIANT_PROD)
        tq_scan_put(&q->sign_layout, f->sign_blocks + block * q->sign_layout.block_bytes, lane, f->signs);
    if (f->cfg.refine == TQ_REFINE_FP32) {
        float *dst = f->vectors + row * d;
        memcpy(dst, v, d * sizeof(float));
        if (f->cfg.metric == TQ_METRIC_COSINE)
            k->scale(dst, d, 1.0f / sqrtf(k->dot(v, v, d)));
    } else if (f->cfg.refine == TQ_REFINE_CODE8) {
        /* The encode left the rotated unit vector in the scratch. */
        tq_codebook_quantize(f->cb8, f->scratch.u, d, f->refine8 + row * d);
    }
}

/* Puts rows [from, to) back to zero nibbles, as rows never written are:
 * the scan reads whole blocks. The per-row scalars and refine data past
 * f->n are never read. */
static void clear_rows(tq_flat *f, size_t from, size_t to)
{
    const tq_quantizer *q = &f->q;
    for (size_t row = from; row < to; row++) {
        size_t block = row / TQ_SCAN_BLOCK;
        unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
        if (q->mse_bits)
            tq_scan_clear(&q->code_layout, f->code_blocks + block * q->code_layout.block_bytes, lane);
        if (q->variant == TQ_VARIANT_PROD)
            tq_scan_clear(&q->sign_layout, f->sign_blocks + block * q->sign_layout.block_bytes, lane);
    }
}

/* Vectors are checked and encoded a chunk at a time, so the check pulls a
 * chunk into cache for the encode instead of reading the whole batch from
 * memory twice; a bad vector unwinds the chunks already encoded, so an add
 * is all or nothing. */
#define ADD_CHUNK 64

int tq_flat_add(tq_flat *f, const float *x, size_t n, tq_error *err)
{
    const size_t d = f->cfg.d;
    size_t checked = 0;
    if (f->cfg.center == TQ_CENTER_FIRST_BATCH && !f->mean && n > 0) {
        /* The mean must come from valid vectors, before any is encoded. */
        int rc = validate_rows(f, x, 0, n, err);
        if (rc)
            return rc;
        checked = n;
    }
    int rc = reserve(f, f->n + n, err);
    if (rc)
        return rc;
    if (f->cfg.center == TQ_CENTER_FIRST_BATCH && !f->mean && n > 0 && (rc = set_mean(f, x, n, err)))
        return rc;
    for (size_t i = 0; i < n; i += ADD_CHUNK) {
        size_t end = i + ADD_CHUNK < n ? i + ADD_CHUNK : n;
        if (end > checked && (rc = validate_rows(f, x, i, end, err))) {
            clear_rows(f, f->n, f->n + i);
            return rc;
        }
        for (size_t j = i; j < end; j++)
            encode_row(f, x + j * d, f->n + j);
    }
    f->n += n;
    return TQ_OK;
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
static float refine_key(const tq_flat *f, const float *query, const tq_query *pq, size_t row)
{
    const tq_simd_kernels *k = tq_simd();
    /* Cosine queries are never centered, so this is ||q|| for the floats. */
    const float qnorm = pq->qnorm;
    if (f->cfg.refine == TQ_REFINE_CODE8) {
        float g = k->dot_u8(f->refine8 + row * f->cfg.d, f->cb8->centroid_f, pq->qr, f->cfg.d);
        return estimate_key(f->cfg.metric, g, &f->sc[row], pq);
    }
    const float *v = f->vectors + row * f->cfg.d;
    switch (f->cfg.metric) {
    case TQ_METRIC_L2:
        return -k->l2sq(query, v, f->cfg.d);
    case TQ_METRIC_IP:
        return k->dot(query, v, f->cfg.d);
    case TQ_METRIC_COSINE:
        return k->dot(query, v, f->cfg.d) / qnorm;
    }
    return 0.0f;
}

/* The float-table estimate of one row: stage 2, and the float scorer. */
static float float_key(const tq_flat *f, const tq_query *pq, size_t row)
{
    const tq_quantizer *q = &f->q;
    size_t block = row / TQ_SCAN_BLOCK;
    unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
    float code_dot = 0.0f, sign_dot = 0.0f;
    if (q->mse_bits)
        code_dot = tq_scan_lut_exact(&q->code_layout, &pq->code_lut,
                                     f->code_blocks + block * q->code_layout.block_bytes, lane);
    if (q->variant == TQ_VARIANT_PROD)
        sign_dot = tq_scan_lut_exact(&q->sign_layout, &pq->sign_lut,
                                     f->sign_blocks + block * q->sign_layout.block_bytes, lane);
    return estimate_key(f->cfg.metric, tq_unit_estimate(q, &f->sc[row], code_dot, sign_dot), &f->sc[row], pq);
}

/* Keys of one block's rows from their table sums. Kept free of calls and
 * branches on the data so the compiler can vectorize it. */
static void block_keys(const tq_flat *f, const tq_code_scalars *sc, const uint32_t *code_sum,
                       const uint32_t *sign_sum, const tq_query *pq, float *key)
{
    /* The same formulas as tq_unit_estimate() and estimate_key(), with the
     * variant and metric tests hoisted out of the loops so they vectorize:
     * this runs for every vector of every block. */
    const tq_quantizer *q = &f->q;
    const float cd = q->mse_bits ? pq->code_lut.delta : 0.0f, cb = q->mse_bits ? pq->code_lut.bias : 0.0f;
    float g[TQ_SCAN_BLOCK];
    if (q->variant == TQ_VARIANT_PROD) {
        const float sd = pq->sign_lut.delta, sb = pq->sign_lut.bias, qjl = q->qjl_scale;
        for (int v = 0; v < TQ_SCAN_BLOCK; v++)
            g[v] = sc[v].corr * ((cd * (float)code_sum[v] + cb) + sc[v].rnorm * qjl * (sd * (float)sign_sum[v] + sb));
    } else {
        for (int v = 0; v < TQ_SCAN_BLOCK; v++)
            g[v] = sc[v].corr * (cd * (float)code_sum[v] + cb);
    }
    const float qq = pq->qnorm * pq->qnorm, bias = pq->bias, qnorm = pq->qnorm;
    switch (f->cfg.metric) {
    case TQ_METRIC_L2:
        for (int v = 0; v < TQ_SCAN_BLOCK; v++)
            key[v] = -(qq + sc[v].norm * sc[v].norm - 2.0f * sc[v].norm * g[v]);
        break;
    case TQ_METRIC_IP:
        for (int v = 0; v < TQ_SCAN_BLOCK; v++)
            key[v] = sc[v].norm * g[v] + bias;
        break;
    case TQ_METRIC_COSINE:
        for (int v = 0; v < TQ_SCAN_BLOCK; v++)
            key[v] = (sc[v].norm * g[v] + bias) / qnorm;
        break;
    }
}

/* Blocks per chunk of a batched scan: about 256 KiB of codes, so a chunk
 * read for the first query of a batch is still in cache for the others. */
static size_t chunk_blocks(const tq_flat *f)
{
    size_t bytes = f->q.code_layout.block_bytes + f->q.sign_layout.block_bytes;
    size_t n = bytes ? (256 * 1024) / bytes : 64;
    return n ? n : 1;
}

/* One search call's shared state; parts write only their own heaps. */
typedef struct search_job {
    const tq_flat *f;
    const tq_search_opts *opts;
    tq_query *pq;         /* nq prepared queries */
    size_t nq;
    size_t nblocks, blocks_per_part;
    tq_topk *heaps;       /* nparts * nq first-stage heaps */
} search_job;

/* First stage over the blocks of one part: 8-bit table sums (LUT scorer) or
 * float tables (float scorer). Rows arrive in increasing order, so a key
 * equal to the current worst kept loses the tie: only a strictly larger key
 * is pushed. */
static void search_part(void *arg, unsigned part)
{
    search_job *job = arg;
    const tq_flat *f = job->f;
    const tq_quantizer *q = &f->q;
    const tq_simd_kernels *k = tq_simd();
    const bool prod = q->variant == TQ_VARIANT_PROD, lut = job->opts->scorer == TQ_SCORER_LUT;
    size_t b0 = part * job->blocks_per_part;
    size_t b1 = b0 + job->blocks_per_part < job->nblocks ? b0 + job->blocks_per_part : job->nblocks;
    size_t chunk = chunk_blocks(f);
    uint32_t code_sum[TQ_SCAN_BLOCK] = {0}, sign_sum[TQ_SCAN_BLOCK] = {0};
    float key[TQ_SCAN_BLOCK];
    for (size_t c0 = b0; c0 < b1; c0 += chunk) {
        size_t c1 = c0 + chunk < b1 ? c0 + chunk : b1;
        for (size_t qi = 0; qi < job->nq; qi++) {
            const tq_query *pq = &job->pq[qi];
            tq_topk *heap = &job->heaps[part * job->nq + qi];
            float threshold = heap->len == heap->cap && heap->cap ? heap->heap[0].score : -INFINITY;
            for (size_t b = c0; b < c1; b++) {
                size_t base = b * TQ_SCAN_BLOCK, rows = f->n - base < TQ_SCAN_BLOCK ? f->n - base : TQ_SCAN_BLOCK;
                if (lut) {
                    if (q->mse_bits)
                        k->scan_block(f->code_blocks + b * q->code_layout.block_bytes, q->code_layout.npairs,
                                      pq->code_lut.q8, code_sum);
                    if (prod)
                        k->scan_block(f->sign_blocks + b * q->sign_layout.block_bytes, q->sign_layout.npairs,
                                      pq->sign_lut.q8, sign_sum);
                    block_keys(f, f->sc + base, code_sum, sign_sum, pq, key);
                } else {
                    for (size_t v = 0; v < rows; v++)
                        key[v] = float_key(f, pq, base + v);
                }
                /* threshold stays -inf until the heap is full, and keys are
                 * finite, so one compare decides. */
                for (size_t v = 0; v < rows; v++)
                    if (key[v] > threshold) {
                        tq_topk_push(heap, base + v, key[v]);
                        if (heap->len == heap->cap)
                            threshold = heap->heap[0].score;
                    }
            }
        }
    }
}

/* Stages 2 and 3 for one query, from the merged first-stage hits (best
 * first in `first`, nfirst of them). */
static size_t finish_query(const tq_flat *f, const tq_search_opts *opts, const float *query, const tq_query *pq,
                           tq_hit *first, size_t nfirst, tq_topk *mid, tq_topk *best, tq_hit *out)
{
    size_t n = nfirst;
    if (opts->scorer == TQ_SCORER_LUT) {
        tq_topk_reset(mid);
        for (size_t i = 0; i < nfirst; i++)
            tq_topk_push(mid, first[i].id, float_key(f, pq, first[i].id));
        n = tq_topk_drain(mid, first);
    }
    if (n > mid->cap)
        n = mid->cap; /* float scorer: the first stage already kept k' */
    if (opts->rerank) {
        tq_topk_reset(best);
        for (size_t i = 0; i < n; i++)
            tq_topk_push(best, first[i].id, refine_key(f, query, pq, first[i].id));
        n = tq_topk_drain(best, out);
    } else {
        memcpy(out, first, n * sizeof(tq_hit));
    }
    if (f->cfg.metric == TQ_METRIC_L2)
        for (size_t i = 0; i < n; i++)
            out[i].score = -out[i].score;
    return n;
}

/* Rotate and tabulate one query, centered as the codes are: l2 centers the
 * query; ip and cosine keep it and add <q, mean> to every estimate. */
static void prepare_query(const tq_flat *f, const float *query, tq_query *pq)
{
    const size_t d = f->cfg.d;
    if (f->mean && f->cfg.metric == TQ_METRIC_L2) {
        for (size_t j = 0; j < d; j++)
            pq->centered[j] = query[j] - f->mean[j];
        tq_quantizer_prepare(&f->q, pq->centered, pq);
        return;
    }
    tq_quantizer_prepare(&f->q, query, pq);
    if (f->mean)
        pq->bias = tq_simd()->dot(query, f->mean, d);
}

static int check_query(const tq_flat *f, const float *query, size_t index, tq_error *err)
{
    const size_t d = f->cfg.d;
    size_t bad;
    if (tq_check_finite(query, d, &bad))
        return tq_err(err, TQ_EVALUE, "query %zu has a non-finite value at coordinate %zu", index, bad);
    if (f->cfg.metric == TQ_METRIC_COSINE && tq_simd()->dot(query, query, d) == 0.0f)
        return tq_err(err, TQ_EVALUE, "query %zu is zero: it has no cosine similarity", index);
    return TQ_OK;
}

/* Queries prepared per sub-batch: bounds the tables held at once (a query's
 * tables are about 80 bytes per coordinate at 4 bits). */
#define QUERY_BATCH 32

int tq_flat_search_batch(const tq_flat *f, const float *queries, size_t nq, const tq_search_opts *opts,
                         tq_hit *out, size_t *counts, tq_error *err)
{
    const size_t d = f->cfg.d, k = opts->k;
    const unsigned rerank = opts->rerank;
    for (size_t i = 0; i < nq; i++)
        counts[i] = 0;
    if (k > TQ_MAX_K)
        return tq_err(err, TQ_EARG, "k %zu is above the limit %u", k, TQ_MAX_K);
    if (rerank > TQ_MAX_RERANK)
        return tq_err(err, TQ_EARG, "rerank %u is above the limit %u", rerank, TQ_MAX_RERANK);
    if (rerank > 0 && f->cfg.refine == TQ_REFINE_NONE)
        return tq_err(err, TQ_EUNSUPPORTED, "re-ranking needs refine data (code8 or fp32), which this index does not keep");
    if (opts->scorer != TQ_SCORER_LUT && opts->scorer != TQ_SCORER_FLOAT)
        return tq_err(err, TQ_EARG, "unknown scorer %d", (int)opts->scorer);
    if (opts->threads > TQ_MAX_THREADS)
        return tq_err(err, TQ_EARG, "threads %u is above the limit %u", opts->threads, TQ_MAX_THREADS);
    for (size_t i = 0; i < nq; i++) {
        int rc = check_query(f, queries + i * d, i, err);
        if (rc)
            return rc;
    }
    if (k == 0 || f->n == 0 || nq == 0)
        return TQ_OK;

    size_t nmid = rerank ? k * rerank : k;
    if (nmid > f->n)
        nmid = f->n;
    /* The LUT scorer's first stage keeps k' + k'/8 + 16 for the float
     * re-score: the 8-bit tables only reorder near-ties, and measured on
     * every shared dataset 4 extra candidates already give the float
     * scorer's recall; the margin covers larger k. */
    size_t nfirst = nmid;
    if (opts->scorer == TQ_SCORER_LUT) {
        nfirst = nmid + nmid / 8 + 16;
        if (nfirst > f->n)
            nfirst = f->n;
    }
    size_t nblocks = (f->n + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK;
    unsigned nparts = opts->threads > 1 ? opts->threads : 1;
    if (nparts > nblocks)
        nparts = (unsigned)nblocks;
    size_t batch = nq < QUERY_BATCH ? nq : QUERY_BATCH;

    int rc = TQ_OK;
    tq_query *pq = tq_calloc(batch, sizeof(tq_query));
    tq_topk *heaps = tq_calloc((size_t)nparts * batch, sizeof(tq_topk));
    tq_topk merged = {0}, mid = {0}, best = {0};
    if (!pq || !heaps || tq_topk_init(&merged, nfirst) || tq_topk_init(&mid, nmid) || tq_topk_init(&best, k))
        goto oom;
    for (size_t i = 0; i < batch; i++)
        if (tq_query_init(&pq[i], &f->q))
            goto oom;
    for (size_t i = 0; i < (size_t)nparts * batch; i++)
        if (tq_topk_init(&heaps[i], nfirst))
            goto oom;

    for (size_t q0 = 0; q0 < nq; q0 += batch) {
        size_t m = nq - q0 < batch ? nq - q0 : batch;
        for (size_t i = 0; i < m; i++)
            prepare_query(f, queries + (q0 + i) * d, &pq[i]);
        for (size_t i = 0; i < (size_t)nparts * batch; i++)
            tq_topk_reset(&heaps[i]);
        search_job job = {.f = f, .opts = opts, .pq = pq, .nq = m, .nblocks = nblocks,
                          .blocks_per_part = (nblocks + nparts - 1) / nparts, .heaps = heaps};
        tq_pool_run(nparts, search_part, &job);
        for (size_t i = 0; i < m; i++) {
            /* Merging by the same total order (key, then id) makes the
             * answer independent of how the blocks were split. */
            tq_topk_reset(&merged);
            for (unsigned p = 0; p < nparts; p++) {
                tq_topk *h = &heaps[p * m + i];
                for (size_t j = 0; j < h->len; j++)
                    tq_topk_push(&merged, h->heap[j].id, h->heap[j].score);
            }
            size_t nf = tq_topk_drain(&merged, merged.heap);
            counts[q0 + i] = finish_query(f, opts, queries + (q0 + i) * d, &pq[i], merged.heap, nf, &mid, &best,
                                          out + (q0 + i) * k);
        }
    }
    goto done;
oom:
    rc = tq_err(err, TQ_ENOMEM, "out of memory for search scratch");
done:
    if (pq)
        for (size_t i = 0; i < batch; i++)
            tq_query_free(&pq[i]);
    if (heaps)
        for (size_t i = 0; i < (size_t)nparts * batch; i++)
            tq_topk_free(&heaps[i]);
    tq_free(pq);
    tq_free(heaps);
    tq_topk_free(&merged);
    tq_topk_free(&mid);
    tq_topk_free(&best);
    return rc;
}

int tq_flat_search(const tq_flat *f, const float *query, const tq_search_opts *opts, tq_hit *out, size_t *count,
                   tq_error *err)
{
    return tq_flat_search_batch(f, query, 1, opts, out, count, err);
}

int tq_flat_get_codes(const tq_flat *f, size_t row, uint8_t *codes, uint8_t *signs, tq_code_scalars *sc)
{
    if (row >= f->n)
        return TQ_ENOTFOUND;
    const tq_quantizer *q = &f->q;
    size_t block = row / TQ_SCAN_BLOCK;
    unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
    if (q->mse_bits)
        tq_scan_get(&q->code_layout, f->code_blocks + block * q->code_layout.block_bytes, lane, codes);
    if (q->variant == TQ_VARIANT_PROD)
        tq_scan_get(&q->sign_layout, f->sign_blocks + block * q->sign_layout.block_bytes, lane, signs);
    *sc = f->sc[row];
    return TQ_OK;
}
