/*
 * The codec: one configuration's quantizer, refine codebook and centering
 * mean, and the row operations built on them — checking vectors, encoding
 * one into a row of the scan layout, reading codes back. An in-memory index
 * and a stored collection both encode through here, so a row means the same
 * bytes wherever it lives.
 *
 * A row holds: the scalar codes and (prod) sign sketches in scan blocks of
 * 32 vectors, the per-vector scalars, and optionally refine data for
 * re-ranking: the float vector (normalized for cosine), or 8-bit Lloyd-Max
 * codes of the rotated unit vector (a quarter of the bytes; relative error
 * about 0.6 % of the norm, enough to swap near-ties at rank k: re-ranked
 * recall@10 0.97-0.996 where floats give 1.0).
 *
 * Centering: a mean is subtracted from every vector (normalized first for
 * cosine) before encoding. Codes then spend their bits on what
 * distinguishes vectors rather than on what they share: recall@10 at 4 bits
 * went from 0.9445 to 0.9615 on fashion-mnist and 0.891 to 0.914 on
 * siftsmall. l2 is unchanged by a common shift, so the search centers the
 * query too, and so does cosine (ranked as l2 between unit vectors, see
 * search.c); for ip <q, x> = <q, x - mean> + <q, mean>, so the query stays
 * as it is and <q, mean> is added back to every estimate. Re-ranking on
 * fp32 uses the stored original vectors and is exact either way.
 *
 * The mean is the first add's, frozen (every row is encoded against it).
 * TQ_CENTER_AUTO, the default, takes it only when that add brings at least
 * TQ_CENTER_AUTO_MIN_ROWS vectors to an empty index: the sample mean of n
 * rows is off from the true one by tr(Cov)/n in squared norm, 0.4 % of the
 * spread at 256 rows, while the shared datasets' means are 11 % to 58 % of
 * a vector's squared norm. A first add of a few vectors (one VADD) would
 * center on them alone, so such an index stays uncentered for good. Auto
 * leaves ip uncentered: its query cannot be centered (that needs each
 * row's ||x||), and with the query whole the gain measured within noise
 * (lex-cohere at 4 bits: 0.980 to 0.985 over four seeds, centered or not).
 */
#include "tq_index.h"

tq_rows tq_rows_view(const tq_rows_out *out, size_t n)
{
    return (tq_rows){.n = n, .code_blocks = out->code_blocks, .sign_blocks = out->sign_blocks, .sc = out->sc,
                     .vectors = out->vectors, .refine8 = out->refine8, .half = out->half,
                     .lengths = out->lengths};
}

/* One array of rows about to be written row by row (gathered or encoded):
 * on 2 MiB pages where it is that large (tq_advise_huge). */
static void *rows_array(size_t count, size_t size, bool zeroed)
{
    void *p = zeroed ? tq_calloc(count, size) : tq_malloc(count * size);
    tq_advise_huge(p, count * size);
    return p;
}

int tq_rows_out_alloc(const tq_codec *c, size_t rows, tq_rows_out *out)
{
    memset(out, 0, sizeof(*out));
    const size_t blocks = (rows + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK + 1, d = c->cfg.d;
    const size_t n = blocks * TQ_SCAN_BLOCK;
    bool ok = (out->sc = rows_array(blocks, tq_scalar_block_floats(&c->q) * sizeof(float), true)) != NULL;
    if (c->q.mse_bits)
        ok &= (out->code_blocks = rows_array(blocks, c->q.code_layout.block_bytes, true)) != NULL;
    if (c->q.variant == TQ_VARIANT_PROD)
        ok &= (out->sign_blocks = rows_array(blocks, c->q.sign_layout.block_bytes, true)) != NULL;
    if (c->cfg.refine == TQ_REFINE_FP32)
        ok &= (out->vectors = rows_array(n * d, sizeof(float), false)) != NULL;
    if (c->cfg.refine == TQ_REFINE_FP16)
        ok &= (out->half = rows_array(n * d, sizeof(uint16_t), false)) != NULL;
    if (c->cfg.refine == TQ_REFINE_CODE8)
        ok &= (out->refine8 = rows_array(n * d, 1, false)) != NULL;
    if (c->cfg.metric == TQ_METRIC_COSINE)
        ok &= (out->lengths = tq_malloc(n * sizeof(float))) != NULL;
    if (!ok) {
        tq_rows_out_free(out);
        return TQ_ENOMEM;
    }
    return TQ_OK;
}

void tq_scalars_from_rows(const tq_quantizer *q, const tq_code_scalars *rows, size_t n, float *sc)
{
    const size_t blocks = (n + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK;
    memset(sc, 0, blocks * tq_scalar_block_floats(q) * sizeof(float));
    for (size_t row = 0; row < n; row++)
        tq_scalars_put(q, sc, row, &rows[row]);
}

void tq_rows_out_free(tq_rows_out *rows)
{
    tq_free(rows->code_blocks);
    tq_free(rows->sign_blocks);
    tq_free(rows->sc);
    tq_free(rows->vectors);
    tq_free(rows->refine8);
    tq_free(rows->half);
    tq_free(rows->lengths);
    memset(rows, 0, sizeof(*rows));
}

tq_codebook_kind tq_default_codebook(const tq_config *cfg)
{
    /* Where it measured better on every shared dataset (recall@10 without
     * re-rank, mean over twelve rotation seeds, README "Recall per bit"):
     * 1- and 2-bit mse codes. With prod's sign sketch of the residual it
     * gained nothing (siftsmall and fiori-minilm at 3 bits, six seeds). At
     * 3 bits (64 points a pair) it gained +0.0008 to +0.006 on four sets
     * and lost 0.0005 on lex-cohere (eight seeds) while encoding at 0.63x
     * the scalar codes' rate (64 points to search a pair): an option, not
     * the default. */
    return cfg->variant == TQ_VARIANT_MSE && cfg->bits <= 2 && cfg->d >= tq_vector_codebook_dims(cfg->bits)
               ? TQ_CODEBOOK_VECTOR
               : TQ_CODEBOOK_SCALAR;
}

int tq_codec_init(tq_codec *c, const tq_config *cfg, tq_error *err)
{
    memset(c, 0, sizeof(*c));
    if (cfg->metric != TQ_METRIC_L2 && cfg->metric != TQ_METRIC_IP && cfg->metric != TQ_METRIC_COSINE)
        return tq_err(err, TQ_EARG, "unknown metric %d", (int)cfg->metric);
    if (cfg->refine != TQ_REFINE_NONE && cfg->refine != TQ_REFINE_CODE8 && cfg->refine != TQ_REFINE_FP32 &&
        cfg->refine != TQ_REFINE_FP16)
        return tq_err(err, TQ_EARG, "unknown refine kind %d", (int)cfg->refine);
    if (cfg->center != TQ_CENTER_NONE && cfg->center != TQ_CENTER_FIRST_BATCH && cfg->center != TQ_CENTER_AUTO)
        return tq_err(err, TQ_EARG, "unknown centering %d", (int)cfg->center);
    if (cfg->codebook != TQ_CODEBOOK_SCALAR && cfg->codebook != TQ_CODEBOOK_VECTOR)
        return tq_err(err, TQ_EARG, "unknown codebook kind %d", (int)cfg->codebook);
    c->cfg = *cfg;
    int rc = tq_quantizer_init(&c->q, cfg->d, cfg->bits, cfg->variant, cfg->correction, cfg->seed, err);
    if (rc)
        return rc;
    if (cfg->codebook == TQ_CODEBOOK_VECTOR && (rc = tq_quantizer_use_vector_codebook(&c->q, err))) {
        tq_codec_free(c);
        return rc;
    }
    if (cfg->refine == TQ_REFINE_CODE8 && !(c->cb8 = tq_codebook_get(cfg->d, 8))) {
        tq_codec_free(c);
        return tq_err(err, TQ_ENOMEM, "out of memory computing the 8-bit refine codebook");
    }
    return TQ_OK;
}

void tq_codec_free(tq_codec *c)
{
    tq_quantizer_free(&c->q);
    tq_codec_drop_mean(c);
}

void tq_codec_drop_mean(tq_codec *c)
{
    tq_free(c->mean);
    c->mean = NULL;
}

/* Vector v, the index-th of its batch: finite, norm representable. */
static int check_one(const tq_codec *c, const float *v, size_t index, tq_error *err)
{
    const size_t d = c->cfg.d;
    /* One pass checks everything: the squared norm is NaN or infinite
     * exactly when a coordinate is, or when the norm overflows float. */
    float sq = tq_simd()->dot(v, v, d);
    size_t bad;
    if (!isfinite(sq)) {
        if (tq_check_finite(v, d, &bad))
            return tq_err(err, TQ_EVALUE, "vector %zu has a non-finite value at coordinate %zu", index, bad);
        return tq_err(err, TQ_EVALUE, "vector %zu has a norm too large for float32", index);
    }
    /* Cosine stores the normalized vector, which always fits. */
    if (c->cfg.refine == TQ_REFINE_FP16 && c->cfg.metric != TQ_METRIC_COSINE)
        for (size_t j = 0; j < d; j++)
            if (fabsf(v[j]) > TQ_HALF_MAX)
                return tq_err(err, TQ_EVALUE, "vector %zu: coordinate %zu is %g, beyond fp16 refine data (%g)", index,
                              j, (double)v[j], (double)TQ_HALF_MAX);
    return TQ_OK;
}

#define MEAN_SAMPLE 16384u

int tq_codec_set_mean(tq_codec *c, const float *const *rows, size_t n, tq_error *err)
{
    const size_t d = c->cfg.d;
    const tq_simd_kernels *k = tq_simd();
    double *acc = tq_calloc(d, sizeof(double));
    float *mean = tq_malloc(d * sizeof(float)), *part = tq_malloc(d * sizeof(float));
    if (!acc || !mean || !part) {
        tq_free(acc);
        tq_free(mean);
        tq_free(part);
        return tq_err(err, TQ_ENOMEM, "out of memory for the centering mean");
    }
    /* At most MEAN_SAMPLE rows, evenly spaced: the sample mean is then off
     * by tr(Cov)/16384 in squared norm, nothing next to the codes' error,
     * and the pass no longer grows with the batch (it was a fifth of a
     * centered build at d = 1536, a second full read of the input). Float
     * partial sums of 64 rows (relative error ~64 ulp), added up in double. */
    const size_t m = n < MEAN_SAMPLE ? n : MEAN_SAMPLE;
    for (size_t i0 = 0; i0 < m; i0 += 64) {
        memset(part, 0, d * sizeof(float));
        for (size_t i = i0; i < m && i < i0 + 64; i++) {
            const size_t at = m == n ? i : i * n / m;
            const float *v = rows[at];
            int rc = check_one(c, v, at, err);
            if (rc) {
                tq_free(acc);
                tq_free(mean);
                tq_free(part);
                return rc;
            }
            double sq = c->cfg.metric == TQ_METRIC_COSINE ? k->dot_f64(v, v, d) : 1.0;
            const float scale = sq > 0.0 ? (float)(1.0 / sqrt(sq)) : 0.0f; /* a zero vector counts as zero */
            /* (restrict, as in tq_codec_encode: vectorized only so) */
            float *restrict sum = part;
            const float *restrict in = v;
            for (size_t j = 0; j < d; j++)
                sum[j] += in[j] * scale;
        }
        for (size_t j = 0; j < d; j++)
            acc[j] += (double)part[j];
    }
    for (size_t j = 0; j < d; j++)
        mean[j] = (float)(acc[j] / (double)(m ? m : 1));
    tq_free(acc);
    tq_free(part);
    tq_free(c->mean);
    c->mean = mean;
    return TQ_OK;
}

int tq_encode_scratch_init(tq_encode_scratch *s, uint32_t d)
{
    memset(s, 0, sizeof(*s));
    s->codes = tq_malloc(2 * (size_t)d);
    s->tmp = tq_malloc((size_t)d * sizeof(float));
    if (!s->codes || !s->tmp || tq_qscratch_init(&s->q, d)) {
        tq_encode_scratch_free(s);
        return TQ_ENOMEM;
    }
    s->signs = s->codes + d;
    return TQ_OK;
}

void tq_encode_scratch_free(tq_encode_scratch *s)
{
    tq_qscratch_free(&s->q);
    tq_free(s->codes);
    tq_free(s->tmp);
    s->codes = s->signs = NULL;
    s->tmp = NULL;
}

int tq_codec_check_vectors(const tq_codec *c, const float *x, size_t from, size_t to, tq_error *err)
{
    for (size_t i = from; i < to; i++) {
        int rc = check_one(c, x + i * c->cfg.d, i, err);
        if (rc)
            return rc;
    }
    return TQ_OK;
}

void tq_codec_encode(const tq_codec *c, tq_encode_scratch *s, const float *v, const tq_rows_out *out, size_t row)
{
    const size_t d = c->cfg.d, block = row / TQ_SCAN_BLOCK;
    const unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
    const tq_quantizer *q = &c->q;
    const tq_simd_kernels *k = tq_simd();
    const float *enc = v;
    /* Cosine stores the direction; a zero vector has none and is kept as
     * zero, similar to nothing (similarity 0, as Redis scores it). */
    const float sq = c->cfg.metric == TQ_METRIC_COSINE ? k->dot(v, v, d) : 1.0f;
    const float unit_scale = sq > 0.0f ? 1.0f / sqrtf(sq) : 0.0f;
    if (c->mean) {
        /* One pass (the same products and differences as scaling, then
         * subtracting): a copy and two passes were a tenth of a centered
         * encode at d = 1536. */
        const float scale = c->cfg.metric == TQ_METRIC_COSINE ? unit_scale : 1.0f;
        /* (restrict: without it the loop was not vectorized, and centering
         * cost a sixth of a million-row build at d = 128.) Built in the
         * quantizer's scratch, where the encode would copy it. */
        float *restrict centered = s->q.u;
        const float *restrict in = v, *restrict mean = c->mean;
        for (size_t j = 0; j < d; j++)
            centered[j] = in[j] * scale - mean[j];
        enc = centered;
    } else if (c->cfg.metric == TQ_METRIC_COSINE) {
        memcpy(s->q.u, v, d * sizeof(float));
        k->scale(s->q.u, d, unit_scale);
        enc = s->q.u;
    }
    tq_code_scalars sc;
    tq_quantizer_encode(q, enc, &s->q, s->codes, s->signs, &sc);
    tq_scalars_put(q, out->sc, row, &sc);
    if (c->cfg.metric == TQ_METRIC_COSINE && out->lengths)
        out->lengths[row] = sqrtf(sq);
    if (q->mse_bits)
        tq_scan_put(&q->code_layout, out->code_blocks + block * q->code_layout.block_bytes, lane, s->codes);
    if (q->variant == TQ_VARIANT_PROD)
        tq_scan_put(&q->sign_layout, out->sign_blocks + block * q->sign_layout.block_bytes, lane, s->signs);
    if (c->cfg.refine == TQ_REFINE_FP32) {
        float *dst = out->vectors + row * d;
        memcpy(dst, v, d * sizeof(float));
        if (c->cfg.metric == TQ_METRIC_COSINE)
            k->scale(dst, d, unit_scale);
    } else if (c->cfg.refine == TQ_REFINE_FP16) {
        const float scale = c->cfg.metric == TQ_METRIC_COSINE ? unit_scale : 1.0f;
        /* Cosine stores the normalized vector; the scratch is free here. */
        const float *src = v;
        if (scale != 1.0f) {
            memcpy(s->tmp, v, d * sizeof(float));
            k->scale(s->tmp, d, scale);
            src = s->tmp;
        }
        k->float_to_half(src, out->half + row * d, d);
    } else if (c->cfg.refine == TQ_REFINE_CODE8) {
        /* The encode left the rotated unit vector in the scratch. */
        tq_codebook_quantize(c->cb8, s->q.u, d, out->refine8 + row * d);
    }
}

void tq_codec_clear_rows(const tq_codec *c, const tq_rows_out *out, size_t from, size_t n)
{
    const tq_quantizer *q = &c->q;
    for (size_t row = from; row < from + n; row++) {
        size_t block = row / TQ_SCAN_BLOCK;
        unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
        if (q->mse_bits)
            tq_scan_clear(&q->code_layout, out->code_blocks + block * q->code_layout.block_bytes, lane);
        if (q->variant == TQ_VARIANT_PROD)
            tq_scan_clear(&q->sign_layout, out->sign_blocks + block * q->sign_layout.block_bytes, lane);
    }
}

size_t tq_codec_bytes_per_vector(const tq_codec *c)
{
    /* what is stored (without correction the corrections are ones) */
    const size_t scalars = tq_scalar_planes(&c->q);
    size_t code = c->q.mse_bits ? c->q.code_layout.block_bytes / TQ_SCAN_BLOCK : 0;
    size_t sign = c->q.variant == TQ_VARIANT_PROD ? c->q.sign_layout.block_bytes / TQ_SCAN_BLOCK : 0;
    return code + sign + scalars * sizeof(float);
}

size_t tq_codec_refine_bytes_per_vector(const tq_codec *c)
{
    switch (c->cfg.refine) {
    case TQ_REFINE_NONE:
        return 0;
    case TQ_REFINE_CODE8:
        return c->cfg.d;
    case TQ_REFINE_FP32:
        return c->cfg.d * sizeof(float);
    case TQ_REFINE_FP16:
        return c->cfg.d * sizeof(uint16_t);
    }
    return 0;
}

void tq_codec_reconstruct(const tq_codec *c, const tq_rows *rows, size_t row, tq_encode_scratch *s, float *x)
{
    const size_t d = c->cfg.d;
    if (rows->vectors) {
        memcpy(x, rows->vectors + row * d, d * sizeof(float));
        return;
    }
    if (rows->half) {
        tq_simd()->half_to_float(rows->half + row * d, x, d);
        return;
    }
    tq_code_scalars sc;
    tq_codec_get_codes(c, rows, row, s->codes, s->signs, &sc);
    if (rows->refine8) {
        /* The 8-bit codes of the rotated unit vector: sixteen times finer
         * than the scan codes. */
        const uint8_t *c8 = rows->refine8 + row * d;
        for (size_t j = 0; j < d; j++)
            x[j] = c->cb8->centroid_f[c8[j]];
        tq_rotation_invert(&c->q.rot, x);
        tq_simd()->scale(x, d, sc.norm);
    } else {
        tq_quantizer_decode(&c->q, s->codes, s->signs, &sc, x, &s->q);
    }
    if (c->mean)
        for (size_t j = 0; j < d; j++)
            x[j] = x[j] + c->mean[j];
}

void tq_codec_get_codes(const tq_codec *c, const tq_rows *rows, size_t row, uint8_t *codes, uint8_t *signs,
                        tq_code_scalars *sc)
{
    const tq_quantizer *q = &c->q;
    size_t block = row / TQ_SCAN_BLOCK;
    unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
    if (q->mse_bits)
        tq_scan_get(&q->code_layout, rows->code_blocks + block * q->code_layout.block_bytes, lane, codes);
    if (q->variant == TQ_VARIANT_PROD)
        tq_scan_get(&q->sign_layout, rows->sign_blocks + block * q->sign_layout.block_bytes, lane, signs);
    *sc = tq_scalars_get(q, rows->sc, row);
}

static size_t column_bytes(const tq_scan_layout *L);

size_t tq_codec_row_bytes_v2(const tq_codec *c)
{
    const tq_quantizer *q = &c->q;
    return (q->mse_bits ? column_bytes(&q->code_layout) : 0) +
           (q->variant == TQ_VARIANT_PROD ? column_bytes(&q->sign_layout) : 0) + sizeof(tq_code_scalars) +
           tq_codec_refine_bytes_per_vector(c);
}

/* Cosine rows end with the input's length (a float). */
static size_t length_bytes(const tq_codec *c)
{
    return c->cfg.metric == TQ_METRIC_COSINE ? sizeof(float) : 0;
}

size_t tq_codec_row_bytes(const tq_codec *c)
{
    return tq_codec_row_bytes_v2(c) + length_bytes(c);
}

void tq_codec_row_from_v2(const tq_codec *c, const uint8_t *old, uint8_t *row)
{
    const size_t n = tq_codec_row_bytes_v2(c);
    memmove(row, old, n);
    if (length_bytes(c)) {
        const float unknown = 1.0f; /* the stored unit vector is all there is */
        memcpy(row + n, &unknown, sizeof(float));
    }
}

/* Byte i of a row's column in its block is at 32 i + lane, in both
 * layouts: a row is its column of block_bytes / 32 bytes. */
static size_t column_bytes(const tq_scan_layout *L)
{
    return L->block_bytes / TQ_SCAN_BLOCK;
}

static void column_out(const uint8_t *block, unsigned lane, size_t n, uint8_t *dst)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = block[32 * i + lane];
}

/* Row from's column of one layout's blocks into row to's. */
static void column_copy(const tq_scan_layout *L, const uint8_t *src, size_t from, uint8_t *dst, size_t to)
{
    const uint8_t *s = src + from / TQ_SCAN_BLOCK * L->block_bytes + from % TQ_SCAN_BLOCK;
    uint8_t *d = dst + to / TQ_SCAN_BLOCK * L->block_bytes + to % TQ_SCAN_BLOCK;
    for (size_t i = 0, n = column_bytes(L); i < n; i++)
        d[32 * i] = s[32 * i];
}

static void column_in(uint8_t *block, unsigned lane, size_t n, const uint8_t *src)
{
    for (size_t i = 0; i < n; i++)
        block[32 * i + lane] = src[i];
}

/* The refine array as bytes, whichever kind the config keeps: to read from
 * rows, and to write into arrays. */
static const uint8_t *refine_of(const tq_codec *c, const tq_rows *rows);

const uint8_t *tq_codec_refine_row(const tq_codec *c, const tq_rows *rows, size_t row)
{
    const uint8_t *base = refine_of(c, rows);
    return base ? base + row * tq_codec_refine_bytes_per_vector(c) : NULL;
}

static const uint8_t *refine_of(const tq_codec *c, const tq_rows *rows)
{
    switch (c->cfg.refine) {
    case TQ_REFINE_FP32: return (const uint8_t *)rows->vectors;
    case TQ_REFINE_FP16: return (const uint8_t *)rows->half;
    case TQ_REFINE_CODE8: return rows->refine8;
    case TQ_REFINE_NONE: return NULL;
    }
    return NULL;
}

static uint8_t *refine_of_out(const tq_codec *c, const tq_rows_out *out)
{
    switch (c->cfg.refine) {
    case TQ_REFINE_FP32: return (uint8_t *)out->vectors;
    case TQ_REFINE_FP16: return (uint8_t *)out->half;
    case TQ_REFINE_CODE8: return out->refine8;
    case TQ_REFINE_NONE: return NULL;
    }
    return NULL;
}

void tq_codec_row_save(const tq_codec *c, const tq_rows *rows, size_t row, uint8_t *dst)
{
    const tq_quantizer *q = &c->q;
    const size_t block = row / TQ_SCAN_BLOCK, refine = tq_codec_refine_bytes_per_vector(c);
    const unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
    if (q->mse_bits) {
        column_out(rows->code_blocks + block * q->code_layout.block_bytes, lane, column_bytes(&q->code_layout), dst);
        dst += column_bytes(&q->code_layout);
    }
    if (q->variant == TQ_VARIANT_PROD) {
        column_out(rows->sign_blocks + block * q->sign_layout.block_bytes, lane, column_bytes(&q->sign_layout), dst);
        dst += column_bytes(&q->sign_layout);
    }
    const tq_code_scalars sc = tq_scalars_get(q, rows->sc, row);
    memcpy(dst, &sc, sizeof(sc));
    if (refine)
        memcpy(dst + sizeof(tq_code_scalars), refine_of(c, rows) + row * refine, refine);
    if (length_bytes(c)) {
        const float length = rows->lengths ? rows->lengths[row] : 1.0f;
        memcpy(dst + sizeof(tq_code_scalars) + refine, &length, sizeof(float));
    }
}

void tq_codec_row_load(const tq_codec *c, const tq_rows_out *out, size_t row, const uint8_t *src)
{
    const tq_quantizer *q = &c->q;
    const size_t block = row / TQ_SCAN_BLOCK, refine = tq_codec_refine_bytes_per_vector(c);
    const unsigned lane = (unsigned)(row % TQ_SCAN_BLOCK);
    if (q->mse_bits) {
        column_in(out->code_blocks + block * q->code_layout.block_bytes, lane, column_bytes(&q->code_layout), src);
        src += column_bytes(&q->code_layout);
    }
    if (q->variant == TQ_VARIANT_PROD) {
        column_in(out->sign_blocks + block * q->sign_layout.block_bytes, lane, column_bytes(&q->sign_layout), src);
        src += column_bytes(&q->sign_layout);
    }
    tq_code_scalars sc;
    memcpy(&sc, src, sizeof(sc));
    tq_scalars_put(q, out->sc, row, &sc);
    if (refine)
        memcpy(refine_of_out(c, out) + row * refine, src + sizeof(tq_code_scalars), refine);
    if (length_bytes(c) && out->lengths)
        memcpy(&out->lengths[row], src + sizeof(tq_code_scalars) + refine, sizeof(float));
}

void tq_codec_row_copy(const tq_codec *c, const tq_rows *src, size_t from, const tq_rows_out *dst, size_t to)
{
    const tq_quantizer *q = &c->q;
    const size_t refine = tq_codec_refine_bytes_per_vector(c);
    if (q->mse_bits)
        column_copy(&q->code_layout, src->code_blocks, from, dst->code_blocks, to);
    if (q->variant == TQ_VARIANT_PROD)
        column_copy(&q->sign_layout, src->sign_blocks, from, dst->sign_blocks, to);
    const tq_code_scalars sc = tq_scalars_get(q, src->sc, from);
    tq_scalars_put(q, dst->sc, to, &sc);
    if (refine)
        memcpy(refine_of_out(c, dst) + to * refine, refine_of(c, src) + from * refine, refine);
    if (length_bytes(c) && dst->lengths)
        dst->lengths[to] = src->lengths ? src->lengths[from] : 1.0f;
}

/* ------------------------------------------------------------ format 1 */

bool tq_codec_format1_differs(const tq_codec *c)
{
    return c->q.mse_bits && c->q.code_layout.sextets;
}

void tq_codec_blocks_from_format1(const tq_codec *c, const uint8_t *old, size_t blocks, uint8_t *out)
{
    const tq_scan_layout *now = &c->q.code_layout;
    tq_scan_layout then;
    tq_scan_layout_init_format1(&then, now->d, now->bits);
    uint8_t codes[TQ_MAX_DIM];
    for (size_t b = 0; b < blocks; b++)
        for (unsigned lane = 0; lane < TQ_SCAN_BLOCK; lane++) {
            tq_scan_get(&then, old + b * then.block_bytes, lane, codes);
            tq_scan_put(now, out + b * now->block_bytes, lane, codes);
        }
}

size_t tq_codec_row_bytes_format1(const tq_codec *c)
{
    if (!tq_codec_format1_differs(c))
        return tq_codec_row_bytes_v2(c);
    tq_scan_layout then;
    tq_scan_layout_init_format1(&then, c->q.d, c->q.mse_bits);
    return tq_codec_row_bytes_v2(c) - column_bytes(&c->q.code_layout) + column_bytes(&then);
}

size_t tq_codec_format1_scratch_bytes(const tq_codec *c)
{
    tq_scan_layout then;
    tq_scan_layout_init_format1(&then, c->q.d, c->q.mse_bits ? c->q.mse_bits : 1);
    return then.block_bytes + c->q.code_layout.block_bytes + c->q.d;
}

void tq_codec_row_from_format1(const tq_codec *c, const uint8_t *old, uint8_t *row, uint8_t *scratch)
{
    if (!tq_codec_format1_differs(c)) {
        memcpy(row, old, tq_codec_row_bytes_v2(c));
        return;
    }
    /* The code column leads the row; the rest is the same bytes. As a
     * column is lane 0 of a block, the layouts' own get and put convert. */
    const tq_scan_layout *now = &c->q.code_layout;
    tq_scan_layout then;
    tq_scan_layout_init_format1(&then, now->d, now->bits);
    uint8_t *from = scratch, *to = scratch + then.block_bytes, *codes = to + now->block_bytes;
    memset(from, 0, then.block_bytes);
    column_in(from, 0, column_bytes(&then), old);
    tq_scan_get(&then, from, 0, codes);
    memset(to, 0, now->block_bytes);
    tq_scan_put(now, to, 0, codes);
    column_out(to, 0, column_bytes(now), row);
    memcpy(row + column_bytes(now), old + column_bytes(&then), tq_codec_row_bytes_v2(c) - column_bytes(now));
}
