/*
 * The FWHT body shared by the AVX2 and AVX-512 kernel files, written once
 * over a vector type. The including file defines, before including it:
 *   FWHT_VEC         the float vector type (__m256, __m512)
 *   FWHT_LANES       floats per vector (8, 16)
 *   FWHT_LOAD/STORE/ADD/SUB/MUL/SET1   the matching intrinsics
 *   FWHT_NAME        the kernel's name
 * and a function `static FWHT_VEC fwht_in_register(FWHT_VEC)` doing the
 * stages h = 1 .. FWHT_LANES/2 inside one vector. Each ISA file keeps its own
 * compiler flags; only the text is shared.
 *
 * Order of operations (the specification, kernels_scalar's tq_fwht_scalar):
 * sign multiply, butterflies stage by stage, scale multiply. The first pass
 * does the sign flip, the in-register stages of two vectors and the stage
 * between them; later passes do up to three stages over 2^stages vectors
 * loaded h floats apart; the last pass applies the scale.
 */

/* Always inlined with a constant `stages`, so the register array stays in
 * registers. */
static inline __attribute__((always_inline)) void fwht_pass(float *x, size_t n, size_t h, unsigned stages,
                                                            bool last, FWHT_VEC sv)
{
    const size_t span = h << stages;
    for (size_t i = 0; i < n; i += span)
        for (size_t j = i; j < i + h; j += FWHT_LANES) {
            FWHT_VEC v[8];
#pragma GCC unroll 8
            for (unsigned m = 0; m < (1u << stages); m++)
                v[m] = FWHT_LOAD(x + j + m * h);
#pragma GCC unroll 3
            for (unsigned s = 0; s < stages; s++) {
                unsigned hs = 1u << s;
#pragma GCC unroll 8
                for (unsigned m = 0; m < (1u << stages); m++)
                    if (!(m & hs)) {
                        FWHT_VEC a = v[m], b = v[m + hs];
                        v[m] = FWHT_ADD(a, b);
                        v[m + hs] = FWHT_SUB(a, b);
                    }
            }
#pragma GCC unroll 8
            for (unsigned m = 0; m < (1u << stages); m++)
                FWHT_STORE(x + j + m * h, last ? FWHT_MUL(v[m], sv) : v[m]);
        }
}

static void FWHT_NAME(float *x, size_t n, const float *signs, float scale)
{
    if (n < 2 * FWHT_LANES) {
        tq_fwht_scalar(x, n, signs, scale);
        return;
    }
    const FWHT_VEC sv = FWHT_SET1(scale);
    for (size_t i = 0; i < n; i += 2 * FWHT_LANES) {
        FWHT_VEC a = FWHT_LOAD(x + i), b = FWHT_LOAD(x + i + FWHT_LANES);
        if (signs) {
            a = FWHT_MUL(a, FWHT_LOAD(signs + i));
            b = FWHT_MUL(b, FWHT_LOAD(signs + i + FWHT_LANES));
        }
        a = fwht_in_register(a);
        b = fwht_in_register(b);
        FWHT_VEC s0 = FWHT_ADD(a, b), s1 = FWHT_SUB(a, b);
        if (n == 2 * FWHT_LANES) {
            s0 = FWHT_MUL(s0, sv);
            s1 = FWHT_MUL(s1, sv);
        }
        FWHT_STORE(x + i, s0);
        FWHT_STORE(x + i + FWHT_LANES, s1);
    }
    for (size_t h = 2 * FWHT_LANES; h < n;) {
        if ((h << 3) < n) {
            fwht_pass(x, n, h, 3, false, sv);
            h <<= 3;
        } else if ((h << 3) == n) {
            fwht_pass(x, n, h, 3, true, sv);
            h <<= 3;
        } else if ((h << 2) == n) {
            fwht_pass(x, n, h, 2, true, sv);
            h <<= 2;
        } else {
            fwht_pass(x, n, h, 1, true, sv);
            h <<= 1;
        }
    }
}
