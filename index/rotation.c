/*
 * The TurboQuant rotation, made fast and dimension-preserving.
 *
 * The paper rotates by a dense random orthogonal matrix (O(d^2) per vector).
 * We use R = prod over rounds of (H_tail S_tail H_head S_head): S_* diagonal
 * matrices of seeded random signs, H_head the orthonormal Walsh-Hadamard
 * transform on coordinates [0, p) and H_tail the same on [d-p, d), p the
 * largest power of two <= d (the tail pair is skipped when p == d). Each
 * factor is orthogonal, so R is; the cost is O(d log d) and no padding to a
 * power of two is needed (it would cost up to 2x the code bytes). The two
 * overlapping blocks let every coordinate mix with every other within a
 * round; three rounds spread even adversarial inputs (one-hot vectors,
 * Hadamard rows, constant vectors) so that rotated coordinates behave like
 * those of a random point on the sphere, which is what the fixed codebook
 * assumes.
 *
 * Departure from the DESIGN sketch (one sign vector per round): the tail
 * block has signs of its own. Without them, when the blocks overlap almost
 * entirely (d = p + 1, say 1025), H_head turns a one-hot vector into a
 * constant block and H_tail folds that constant straight back into a single
 * coordinate: max |y| * sqrt(d) was 32 at d = 1025 and 39 at d = 10000,
 * against about 8 with the extra signs.
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
    uint32_t per_round = p < d ? 2 * p : p;
    rot->signs = tq_malloc((size_t)rounds * per_round * sizeof(float));
    if (!rot->signs)
        return tq_err(err, TQ_ENOMEM, "out of memory for a %u-dimensional rotation", d);
    rot->d = d;
    rot->p = p;
    rot->per_round = per_round;
    rot->rounds = rounds;
    rot->scale = (float)(1.0 / sqrt((double)p));
    for (uint32_t k = 0; k < rounds; k++) {
        tq_rng rng;
        tq_rng_seed(&rng, tq_seed_derive(seed, 0x524f54ull + k));
        float *s = rot->signs + (size_t)k * per_round;
        for (uint32_t i = 0; i < per_round; i += 64) {
            uint64_t bits = tq_rng_next(&rng);
            for (uint32_t j = i; j < per_round && j < i + 64; j++)
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
        const float *signs = rot->signs + (size_t)r * rot->per_round;
        k->fwht(x, p, signs, rot->scale);
        if (p < d)
            k->fwht(x + (d - p), p, signs + p, rot->scale);
    }
}

void tq_rotation_invert(const tq_rotation *rot, float *x)
{
    const tq_simd_kernels *k = tq_simd();
    const uint32_t d = rot->d, p = rot->p;
    for (uint32_t r = rot->rounds; r-- > 0;) {
        const float *signs = rot->signs + (size_t)r * rot->per_round;
        if (p < d) {
            k->fwht(x + (d - p), p, NULL, rot->scale);
            k->mul(x + (d - p), signs + p, p);
        }
        k->fwht(x, p, NULL, rot->scale);
        k->mul(x, signs, p);
    }
}
