/*
 * TurboQuant encode, decode and inner-product estimates.
 *
 * A vector x is stored as its norm ||x|| and a code of u = R x/||x||, a
 * point on the sphere whose coordinates all follow the density the codebook
 * was solved for:
 *
 *   mse   each coordinate of u quantized to `bits` bits by the Lloyd-Max
 *         codebook; reconstruction u~ = centroids of the codes.
 *   prod  (bits-1)-bit mse code, then one sign bit per coordinate of P r,
 *         r = u - u~_mse the residual and P a second, independent seeded
 *         rotation, plus ||r||. The paper's QJL uses a dense Gaussian matrix
 *         (O(d^2) time and memory per vector); an orthogonal P keeps O(d log d)
 *         and stays unbiased: for P uniformly random, each P r/||r|| is a
 *         uniform point on the sphere, so E[sign((Pr)_j) (Py)_j] =
 *         E|u_1| <r, y>/||r||, and
 *             <r, y>  ≈  ||r|| / (d E|u_1|) * sum_j sign((Pr)_j) (Py)_j.
 *         E|u_1| = Γ(d/2) / (√π Γ((d+1)/2)) exactly, not the Gaussian
 *         √(2/(πd)), so small d carry no bias either.
 *
 * Correction (beyond the paper, on by default). The mse reconstruction
 * shrinks: <u, u~> < 1 (2/π at one bit), and by a different amount for each
 * vector, which scrambles l2 rankings when norms differ. We store
 * corr = 1/<u, u~> (u~ the variant's own reconstruction) and estimate
 *     <q, x>  ≈  ||x|| * corr * <R q, u~>,
 * which is exact for q = x and removes the shrinkage. TQ_CORRECTION_NONE
 * stores 1 and gives the paper's estimator.
 *
 * A zero vector has no direction: it is stored with norm 0 and the code of
 * u = 0, so every estimate involving it is 0, which is exact.
 */
#include "tq_index.h"

int tq_quantizer_init(tq_quantizer *q, uint32_t d, unsigned bits, tq_variant variant,
                      tq_correction correction, uint64_t seed, tq_error *err)
{
    memset(q, 0, sizeof(*q));
    if (d < TQ_MIN_DIM || d > TQ_MAX_DIM)
        return tq_err(err, TQ_EDIM, "dimension %u is outside %u..%u", d, TQ_MIN_DIM, TQ_MAX_DIM);
    if (bits < TQ_MIN_BITS || bits > TQ_MAX_CODE_BITS)
        return tq_err(err, TQ_EARG, "bits %u is outside %u..%u", bits, TQ_MIN_BITS, TQ_MAX_CODE_BITS);
    if (variant != TQ_VARIANT_MSE && variant != TQ_VARIANT_PROD)
        return tq_err(err, TQ_EARG, "unknown quantizer variant %d", (int)variant);
    if (correction != TQ_CORRECTION_IP && correction != TQ_CORRECTION_NONE)
        return tq_err(err, TQ_EARG, "unknown correction %d", (int)correction);
    q->d = d;
    q->bits = bits;
    q->variant = variant;
    q->correction = correction;
    q->mse_bits = variant == TQ_VARIANT_PROD ? bits - 1 : bits;
    int rc = tq_rotation_init(&q->rot, d, seed, 0, err);
    if (rc)
        return rc;
    if (q->mse_bits > 0) {
        q->cb = tq_codebook_get(d, q->mse_bits);
        if (!q->cb) {
            tq_quantizer_free(q);
            return tq_err(err, TQ_ENOMEM, "out of memory computing the d=%u, %u-bit codebook", d, q->mse_bits);
        }
        for (unsigned i = 0; i < q->cb->levels; i++)
            q->table[i] = q->cb->centroid_f[i];
        q->code_bytes = ((size_t)d * q->mse_bits + 7) / 8;
        tq_scan_layout_init(&q->code_layout, d, q->mse_bits);
    }
    q->sign_table[0] = -1.0f;
    q->sign_table[1] = 1.0f;
    if (variant == TQ_VARIANT_PROD) {
        rc = tq_rotation_init(&q->qjl, d, tq_seed_derive(seed, 0x514a4cull), 0, err);
        if (rc) {
            tq_quantizer_free(q);
            return rc;
        }
        q->qjl_scale = (float)(1.0 / (d * tq_sphere_abs_mean(d)));
        q->sign_bytes = ((size_t)d + 7) / 8;
        tq_scan_layout_init(&q->sign_layout, d, 1);
    }
    return TQ_OK;
}

int tq_quantizer_use_vector_codebook(tq_quantizer *q, tq_error *err)
{
    if (q->mse_bits < 1 || q->mse_bits > 3)
        return tq_err(err, TQ_EARG,
                      "the vector codebook needs 1- to 3-bit scalar codes (mse 1 to 3 bits, prod 2 to 4)");
    const unsigned dims = tq_vector_codebook_dims(q->mse_bits);
    if (q->d < dims)
        return tq_err(err, TQ_EARG, "the vector codebook at %u bits needs at least %u dimensions", q->mse_bits, dims);
    q->vcb = tq_vector_codebook_get(q->d, q->mse_bits);
    if (!q->vcb)
        return tq_err(err, TQ_ENOMEM, "out of memory computing the d=%u, %u-bit vector codebook", q->d, q->mse_bits);
    q->vq_coords = q->d / dims * dims;
    return TQ_OK;
}

/* u~ of the scalar codes from coordinate `from` on. */
static void reconstruct_scalar(const tq_quantizer *q, const uint8_t *codes, uint32_t from, float *x)
{
    for (uint32_t j = from; j < q->d; j++)
        x[j] = q->mse_bits ? q->table[codes[j]] : 0.0f;
}

/* u~ of unpacked codes, coordinate by coordinate. */
static void reconstruct(const tq_quantizer *q, const uint8_t *codes, float *x)
{
    if (q->vcb)
        tq_vector_codebook_decode(q->vcb, codes, q->vq_coords, x);
    reconstruct_scalar(q, codes, q->vq_coords, x);
}

void tq_quantizer_free(tq_quantizer *q)
{
    if (!q)
        return;
    tq_rotation_free(&q->rot);
    tq_rotation_free(&q->qjl);
}

int tq_qscratch_init(tq_qscratch *s, uint32_t d)
{
    s->u = tq_malloc(3 * (size_t)d * sizeof(float));
    s->packed = tq_malloc((size_t)d / 2 + 1 + TQ_CODE_PAD);
    if (!s->u || !s->packed) {
        tq_qscratch_free(s);
        return TQ_ENOMEM;
    }
    s->r = s->u + d;
    s->pu = s->r + d;
    return TQ_OK;
}

void tq_qscratch_free(tq_qscratch *s)
{
    if (!s)
        return;
    tq_free(s->u);
    tq_free(s->packed);
    memset(s, 0, sizeof(*s));
}

/* <v, reconstruction> of one vector's unpacked codes, through the packed
 * form so that it is the dot_codes kernel's lane-16 sum on every path. */
static float codes_dot(const tq_simd_kernels *k, const uint8_t *codes, unsigned bits, const float *table,
                       const float *v, uint32_t d, uint8_t *packed)
{
    float out;
    k->pack(codes, d, bits, packed);
    k->dot_codes(packed, 1, 0, bits, table, v, d, &out);
    return out;
}

void tq_quantizer_encode(const tq_quantizer *q, const float *x, tq_qscratch *s,
                         uint8_t *codes, uint8_t *signs, tq_code_scalars *out)
{
    const tq_simd_kernels *k = tq_simd();
    const uint32_t d = q->d;
    float norm = sqrtf(k->dot(x, x, d));
    if (x != s->u) /* a caller may have built x in the scratch already */
        memcpy(s->u, x, d * sizeof(float));
    if (norm > 0.0f)
        k->scale(s->u, d, 1.0f / norm);
    tq_rotation_apply(&q->rot, s->u);

    float self = 0.0f; /* <u, u~> */
    if (q->vcb) {
        /* u~ in s->pu, free until the sign sketch below */
        const uint32_t vq = q->vq_coords;
        tq_vector_codebook_encode(q->vcb, s->u, vq, codes, s->pu);
        k->quantize(s->u + vq, d - vq, q->cb->bound_f, q->cb->levels - 1, codes + vq);
        reconstruct_scalar(q, codes, vq, s->pu);
        self = k->dot(s->u, s->pu, d);
    } else if (q->mse_bits > 0) {
        k->quantize(s->u, d, q->cb->bound_f, q->cb->levels - 1, codes);
        self = codes_dot(k, codes, q->mse_bits, q->table, s->u, d, s->packed);
    }
    out->norm = norm;
    out->rnorm = 0.0f;
    if (q->variant == TQ_VARIANT_PROD) {
        for (uint32_t j = 0; j < d; j++)
            s->r[j] = s->u[j] - (q->vcb ? s->pu[j] : q->mse_bits ? q->table[codes[j]] : 0.0f);
        out->rnorm = sqrtf(k->dot(s->r, s->r, d));
        tq_rotation_apply(&q->qjl, s->r);
        for (uint32_t j = 0; j < d; j++)
            signs[j] = s->r[j] >= 0.0f;
        memcpy(s->pu, s->u, d * sizeof(float));
        tq_rotation_apply(&q->qjl, s->pu);
        float sketch = codes_dot(k, signs, 1, q->sign_table, s->pu, d, s->packed);
        self = self + out->rnorm * q->qjl_scale * sketch;
    }
    out->corr = q->correction == TQ_CORRECTION_IP && self > 0.0f ? 1.0f / self : 1.0f;
}

void tq_quantizer_decode(const tq_quantizer *q, const uint8_t *codes, const uint8_t *signs,
                         const tq_code_scalars *sc, float *x, tq_qscratch *s)
{
    const uint32_t d = q->d;
    reconstruct(q, codes, x);
    if (q->variant == TQ_VARIANT_PROD) {
        float amp = sc->rnorm * q->qjl_scale;
        for (uint32_t j = 0; j < d; j++)
            s->r[j] = signs[j] ? amp : -amp;
        tq_rotation_invert(&q->qjl, s->r);
        for (uint32_t j = 0; j < d; j++)
            x[j] = x[j] + s->r[j];
    }
    tq_rotation_invert(&q->rot, x);
    tq_simd()->scale(x, d, sc->norm);
}

int tq_query_init(tq_query *pq, const tq_quantizer *q)
{
    memset(pq, 0, sizeof(*pq));
    const uint32_t d = q->d;
    pq->qr = tq_malloc(4 * (size_t)d * sizeof(float));
    pq->packed = tq_malloc((size_t)d / 2 + 1 + TQ_CODE_PAD);
    if (!pq->qr || !pq->packed)
        goto oom;
    pq->qp = pq->qr + d;
    pq->centered = pq->qp + d;
    pq->recon = pq->centered + d;
    if (q->mse_bits > 0 && tq_scan_lut_init(&pq->code_lut, &q->code_layout))
        goto oom;
    if (q->variant == TQ_VARIANT_PROD && tq_scan_lut_init(&pq->sign_lut, &q->sign_layout))
        goto oom;
    return TQ_OK;
oom:
    tq_query_free(pq);
    return TQ_ENOMEM;
}

void tq_query_free(tq_query *pq)
{
    if (!pq)
        return;
    tq_free(pq->qr);
    tq_free(pq->packed);
    pq->bias = 0.0f;
    tq_scan_lut_free(&pq->code_lut);
    tq_scan_lut_free(&pq->sign_lut);
    memset(pq, 0, sizeof(*pq));
}

void tq_quantizer_prepare(const tq_quantizer *q, const float *query, tq_query *pq)
{
    const tq_simd_kernels *k = tq_simd();
    pq->qnorm = sqrtf(k->dot(query, query, q->d));
    pq->bias = 0.0f;
    memcpy(pq->qr, query, q->d * sizeof(float));
    tq_rotation_apply(&q->rot, pq->qr);
    if (q->vcb)
        tq_scan_lut_build_points(&q->code_layout, q->vcb, q->vq_coords, q->table, pq->qr, &pq->code_lut);
    else if (q->mse_bits > 0)
        tq_scan_lut_build(&q->code_layout, q->table, pq->qr, &pq->code_lut);
    if (q->variant == TQ_VARIANT_PROD) {
        memcpy(pq->qp, pq->qr, q->d * sizeof(float));
        tq_rotation_apply(&q->qjl, pq->qp);
        tq_scan_lut_build(&q->sign_layout, q->sign_table, pq->qp, &pq->sign_lut);
    }
}

float tq_quantizer_estimate(const tq_quantizer *q, const tq_query *pq, const uint8_t *codes,
                            const uint8_t *signs, const tq_code_scalars *sc)
{
    const tq_simd_kernels *k = tq_simd();
    float code_dot = 0.0f;
    if (q->vcb) {
        reconstruct(q, codes, pq->recon);
        code_dot = k->dot(pq->recon, pq->qr, q->d);
    } else if (q->mse_bits) {
        code_dot = codes_dot(k, codes, q->mse_bits, q->table, pq->qr, q->d, pq->packed);
    }
    float sign_dot = q->variant == TQ_VARIANT_PROD
                         ? codes_dot(k, signs, 1, q->sign_table, pq->qp, q->d, pq->packed)
                         : 0.0f;
    return tq_unit_estimate(q, sc, code_dot, sign_dot);
}
