/*
 * The TurboQuant rotation, made fast and dimension-preserving.
 *
 * The paper rotates by a dense random orthogonal matrix (O(d^2) per vector).
 * We use R = prod over rounds of (H_tail H_head D_k): D_k a diagonal of
 * seeded random signs, H_head the orthonormal Walsh-Hadamard transform on
 * coordinates [0, p) and H_tail the same on [d-p, d), p the largest power of
 * two <= d (H_tail is skipped when p == d). Each factor is orthogonal, so R
 * is; the cost is O(d log d) and no padding to a power of two is needed (it
 * would cost up to 2x the code bytes). The two overlapping blocks let every
 * coordinate mix with every other within a round; three rounds spread even
 * adversarial inputs (one-hot vectors, Hadamard rows, constant vectors) so
 * that rotated coordinates behave like those of a random point on the sphere,
 * which is what the fixed codebook assumes.
 *
 * The rotation is a pure function of (seed, d, rounds): signs come from
 * splitmix64 seeded by tq_seed_derive(seed, round).
 */
#include "tq_index.h"

int tq_rotation_init(tq_rotation *rot, uint32_t d, uint64_t seed, uint32_t rounds, tq_error *err)
{
    memset(rot, 0, sizeof(*rot));
    if (d < TQ_MIN_DIM || d > TQ_MAX_DIM)
        return tq_err(err, TQ_EDIM, "dimension %u is outside %u..%u", d, TQ_MIN_DIM, TQ_MAX_DIM);
    if (rounds == 0)
        rounds = TQ_DEFAULT_ROTATION_ROUNDS;
    uint32_t p = 1;
    while (p * 2 <= d)
        p *= 2;
    rot->signs = tq_malloc((size_t)rounds * d * sizeof(float));
    if (!rot->signs)
        return tq_err(err, TQ_ENOMEM, "out of memory for a %u-dimensional rotation", d);
    rot->d = d;
    rot->p = p;
    rot->rounds = rounds;
    rot->scale = (float)(1.0 / sqrt((double)p));
    for (uint32_t k = 0; k < rounds; k++) {
        tq_rng rng;
        tq_rng_seed(&rng, tq_seed_derive(seed, 0x524f54ull + k));
        float *s = rot->signs + (size_t)k * d;
        for (uint32_t i = 0; i < d; i += 64) {
            uint64_t bits = tq_rng_next(&rng);
            for (uint32_t j = i; j < d && j < i + 64; j++)
                s[j] = (bits >> (j - i)) & 1 ? -1.0f : 1.0f;
        }
    }
    return TQ_OK;
}

void tq_rotation_free(tq_rotation *rot)
{
    if (!rot)
        return;
    tq_free(rot->signs);
    rot->signs = NULL;
}

void tq_rotation_apply(const tq_rotation *rot, float *x)
{
    const tq_simd_kernels *k = tq_simd();
    const uint32_t d = rot->d, p = rot->p;
    for (uint32_t r = 0; r < rot->rounds; r++) {
        const float *signs = rot->signs + (size_t)r * d;
        /* The sign flip is fused into the head transform; coordinates the
         * head does not cover are flipped before the tail transform reads
         * them. */
        k->fwht(x, p, signs, rot->scale);
        if (p < d) {
            k->mul(x + p, signs + p, d - p);
            k->fwht(x + (d - p), p, NULL, rot->scale);
        }
    }
}

void tq_rotation_invert(const tq_rotation *rot, float *x)
{
    const tq_simd_kernels *k = tq_simd();
    for (uint32_t r = rot->rounds; r-- > 0;) {
        if (rot->p < rot->d)
            k->fwht(x + (rot->d - rot->p), rot->p, NULL, rot->scale);
        k->fwht(x, rot->p, NULL, rot->scale);
        k->mul(x, rot->signs + (size_t)r * rot->d, rot->d);
    }
}
