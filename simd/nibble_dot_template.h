/*
 * nibble_dot (see tq_simd.h) over 256-bit vectors, shared by the AVX2 and
 * AVX-512 kernel files (each compiles it with its own flags; AVX-512 gains
 * nothing from wider vectors here, since the eight chains of the
 * specification are one __m256). The including file defines NIBBLE_DOT_NAME.
 *
 * A step takes four pairs (eight coordinates, lane i = chain i): their four
 * bytes, split into nibbles and interleaved low/high, index the 16-entry
 * table through two 8-entry permutes; lanes at or past d multiply a zero
 * from the masked load and are then cleared to +0 exactly as the reference
 * adds +0; lanes of pairs past npairs (the last step) keep their chain.
 */
static float NIBBLE_DOT_NAME(const uint8_t *block, unsigned v, size_t npairs, const float *q, const float *table,
                             size_t d)
{
    const __m256 tlo = _mm256_loadu_ps(table), thi = _mm256_loadu_ps(table + 8);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m128i nibble = _mm_set1_epi8(15);
    const __m256i dv = _mm256_set1_epi32((int)d);
    __m256 acc = _mm256_setzero_ps();
    for (size_t p = 0; p < npairs; p += 4) {
        const size_t np = npairs - p < 4 ? npairs - p : 4;
        uint32_t bytes = 0;
        for (size_t i = 0; i < np; i++)
            bytes |= (uint32_t)block[32 * (p + i) + v] << (8 * i);
        const __m128i b = _mm_cvtsi32_si128((int)bytes);
        const __m128i lo = _mm_and_si128(b, nibble), hi = _mm_and_si128(_mm_srli_epi16(b, 4), nibble);
        const __m256i idx = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
        /* bit 3 of the index, moved to the sign bit, picks the upper half */
        const __m256 c = _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, idx), _mm256_permutevar8x32_ps(thi, idx),
                                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
        const __m256i t = _mm256_add_epi32(_mm256_set1_epi32((int)(2 * p)), lane);
        const __m256i in_d = _mm256_cmpgt_epi32(dv, t);
        const __m256i exists = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(2 * (p + np))), t);
        const __m256 prod = _mm256_and_ps(_mm256_mul_ps(_mm256_maskload_ps(q + 2 * p, in_d), c),
                                          _mm256_castsi256_ps(in_d));
        acc = _mm256_blendv_ps(acc, _mm256_add_ps(acc, prod), _mm256_castsi256_ps(exists));
    }
    float s[8];
    _mm256_storeu_ps(s, acc);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
