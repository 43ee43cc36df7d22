/*
 * Seeded randomness. splitmix64 (Steele, Lea, Flood 2014) is small, passes
 * BigCrush, and gives the same stream on every platform, which is what makes
 * a rotation a pure function of (seed, d): codes written on one machine score
 * correctly on another.
 */
#include "tq_index.h"

void tq_rng_seed(tq_rng *r, uint64_t seed)
{
    r->state = seed;
}

uint64_t tq_rng_next(tq_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double tq_rng_uniform(tq_rng *r)
{
    return (double)(tq_rng_next(r) >> 11) * 0x1.0p-53;
}

double tq_rng_gauss(tq_rng *r)
{
    /* 1 - uniform is in (0, 1], so the log is finite. */
    double u1 = 1.0 - tq_rng_uniform(r), u2 = tq_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t tq_seed_derive(uint64_t seed, uint64_t tag)
{
    tq_rng r;
    tq_rng_seed(&r, seed ^ (tag * 0xD1B54A32D192ED03ull));
    return tq_rng_next(&r);
}
