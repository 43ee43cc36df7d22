/*
 * Flat (exhaustive) search over TurboQuant codes held in memory.
 *
 * Storage is struct-of-arrays, row i being the i-th vector added: packed
 * scalar codes, packed sign sketches (prod), per-vector scalars, and
 * optionally the float vectors for exact re-ranking (normalized for cosine).
 * Code arrays carry TQ_CODE_PAD spare bytes that the kernels may read.
 *
 * Search scores every row through tq_quantizer_estimate in chunks (the one
 * scoring interface a faster scan layout replaces), keeps the best k, or the
 * best k*rerank when re-ranking, then rescores those exactly. Internally a
 * larger key is better: l2 uses the negated distance estimate
 *     ||q||^2 + ||x||^2 - 2 ||x|| g,
 * ip uses ||x|| g and cosine g/||q||; results go out in the metric's units.
 *
 * Concurrency: tq_flat_add needs exclusive access; searches only read and
 * may run in parallel, each with its own scratch.
 */
#include "tq_index.h"

#define SCORE_CHUNK 256

struct tq_flat {
    tq_flat_config cfg;
    tq_quantizer q;
    tq_qscratch scratch; /* encode scratch, used by add only */
    size_t n, cap;
    uint8_t *codes;
    uint8_t *signs;
    tq_code_scalars *sc;
    float *vectors;
};

int tq_flat_create(const tq_flat_config *cfg, tq_flat **out, tq_error *err)
{
    *out = NULL;
    if (cfg->metric != TQ_METRIC_L2 && cfg->metric != TQ_METRIC_IP && cfg->metric != TQ_METRIC_COSINE)
        return tq_err(err, TQ_EARG, "unknown metric %d", (int)cfg->metric);
    tq_flat *f = tq_calloc(1, sizeof(*f));
    if (!f)
        return tq_err(err, TQ_ENOMEM, "out of memory for an index");
    f->cfg = *cfg;
    int rc = tq_quantizer_init(&f->q, cfg->d, cfg->bits, cfg->variant, cfg->correction, cfg->seed, err);
    if (rc) {
        tq_free(f);
        return rc;
    }
    if (tq_qscratch_init(&f->scratch, cfg->d)) {
        tq_flat_free(f);
        return tq_err(err, TQ_ENOMEM, "out of memory for encode scratch");
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
    tq_free(f->signs);
    tq_free(f->sc);
    tq_free(f->vectors);
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
    return f->q.code_bytes + f->q.sign_bytes + scalars * sizeof(float);
}

/* Grow every array to hold `want` rows. On failure the arrays that did grow
 * keep their contents and n is unchanged, so the index stays consistent. */
static int reserve(tq_flat *f, size_t want, tq_error *err)
{
    if (want <= f->cap)
        return TQ_OK;
    size_t cap = f->cap ? f->cap : 1024;
    while (cap < want)
        cap *= 2;
    const size_t d = f->cfg.d;
    uint8_t *codes = tq_realloc(f->codes, cap * f->q.code_bytes + TQ_CODE_PAD);
    if (!codes)
        goto oom;
    f->codes = codes;
    if (f->q.sign_bytes) {
        uint8_t *signs = tq_realloc(f->signs, cap * f->q.sign_bytes + TQ_CODE_PAD);
        if (!signs)
            goto oom;
        f->signs = signs;
    }
    tq_code_scalars *sc = tq_realloc(f->sc, cap * sizeof(*sc));
    if (!sc)
        goto oom;
    f->sc = sc;
    if (f->cfg.keep_vectors) {
        float *v = tq_realloc(f->vectors, cap * d * sizeof(float));
        if (!v)
            goto oom;
        f->vectors = v;
    }
    f->cap = cap;
    return TQ_OK;
oom:
    return tq_err(err, TQ_ENOMEM, "out of memory growing the index to %zu vectors", cap);
}

int tq_flat_add(tq_flat *f, const float *x, size_t n, tq_error *err)
{
    const size_t d = f->cfg.d;
    for (size_t i = 0; i < n; i++) {
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
    int rc = reserve(f, f->n + n, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        size_t row = f->n + i;
        const float *v = x + i * d;
        tq_quantizer_encode(&f->q, v, &f->scratch, f->codes + row * f->q.code_bytes,
                            f->signs ? f->signs + row * f->q.sign_bytes : NULL, &f->sc[row]);
        if (f->cfg.keep_vectors) {
            float *dst = f->vectors + row * d;
            memcpy(dst, v, d * sizeof(float));
            if (f->cfg.metric == TQ_METRIC_COSINE)
                tq_simd()->scale(dst, d, 1.0f / f->sc[row].norm);
        }
    }
    f->n += n;
    return TQ_OK;
}

static float estimate_key(tq_metric metric, float g, const tq_code_scalars *sc, float qnorm)
{
    switch (metric) {
    case TQ_METRIC_L2:
        return -(qnorm * qnorm + sc->norm * sc->norm - 2.0f * sc->norm * g);
    case TQ_METRIC_IP:
        return sc->norm * g;
    case TQ_METRIC_COSINE:
        return g / qnorm;
    }
    return 0.0f;
}

static float exact_key(const tq_flat *f, const float *query, float qnorm, size_t row)
{
    const tq_simd_kernels *k = tq_simd();
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

int tq_flat_search(const tq_flat *f, const float *query, size_t k, unsigned rerank,
                   tq_hit *out, size_t *count, tq_error *err)
{
    *count = 0;
    const size_t d = f->cfg.d;
    size_t bad;
    if (tq_check_finite(query, d, &bad))
        return tq_err(err, TQ_EVALUE, "query has a non-finite value at coordinate %zu", bad);
    if (k > TQ_MAX_K)
        return tq_err(err, TQ_EARG, "k %zu is above the limit %u", k, TQ_MAX_K);
    if (rerank > TQ_MAX_RERANK)
        return tq_err(err, TQ_EARG, "rerank %u is above the limit %u", rerank, TQ_MAX_RERANK);
    if (rerank > 0 && !f->cfg.keep_vectors)
        return tq_err(err, TQ_EUNSUPPORTED, "re-ranking needs the float vectors, which this index does not keep");
    if (k == 0 || f->n == 0)
        return TQ_OK;

    tq_query pq;
    tq_topk cand = {0}, best = {0};
    float *g = tq_malloc(2 * SCORE_CHUNK * sizeof(float));
    size_t ncand = rerank ? k * rerank : k;
    if (ncand > f->n)
        ncand = f->n;
    int rc = tq_query_init(&pq, (uint32_t)d);
    if (rc || !g || tq_topk_init(&cand, ncand) || (rerank && tq_topk_init(&best, k))) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory for search scratch");
        goto done;
    }
    tq_quantizer_prepare(&f->q, query, &pq);
    if (f->cfg.metric == TQ_METRIC_COSINE && pq.qnorm == 0.0f) {
        rc = tq_err(err, TQ_EVALUE, "query is zero: it has no cosine similarity");
        goto done;
    }
    for (size_t base = 0; base < f->n; base += SCORE_CHUNK) {
        size_t rows = f->n - base < SCORE_CHUNK ? f->n - base : SCORE_CHUNK;
        tq_quantizer_estimate(&f->q, &pq, rows, f->codes + base * f->q.code_bytes,
                              f->signs ? f->signs + base * f->q.sign_bytes : NULL,
                              f->sc + base, g, g + SCORE_CHUNK);
        for (size_t i = 0; i < rows; i++)
            tq_topk_push(&cand, base + i, estimate_key(f->cfg.metric, g[i], &f->sc[base + i], pq.qnorm));
    }
    size_t n = tq_topk_drain(&cand, cand.heap);
    if (rerank) {
        for (size_t i = 0; i < n; i++)
            tq_topk_push(&best, cand.heap[i].id, exact_key(f, query, pq.qnorm, cand.heap[i].id));
        n = tq_topk_drain(&best, out);
    } else {
        memcpy(out, cand.heap, n * sizeof(tq_hit));
    }
    if (f->cfg.metric == TQ_METRIC_L2)
        for (size_t i = 0; i < n; i++)
            out[i].score = -out[i].score;
    *count = n;
done:
    tq_query_free(&pq);
    tq_topk_free(&cand);
    tq_topk_free(&best);
    tq_free(g);
    return rc;
}
