/*
 * CPU feature detection and the kernel table.
 *
 * Detection reads CPUID and, for the AVX levels, XGETBV: a CPU can report
 * AVX-512 while the OS does not save the ZMM state, and then the instructions
 * fault. The AVX-512 level needs F, BW, VL and DQ (what every AVX-512 CPU
 * since Skylake-X has, and all the kernels use).
 *
 * The active table is a pointer set once under pthread_once; tq_simd_force()
 * may repoint it later (tests, TQVEC_SIMD), which is why it is documented as
 * not safe against concurrent kernel calls.
 *
 * This file must stay baseline x86-64: it runs before anyone knows whether
 * AVX exists.
 */
#if defined(__AVX__) || defined(__AVX2__) || defined(__AVX512F__)
#error "the dispatch file must be compiled for baseline x86-64"
#endif

#include "tq_simd.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t read_xcr0(void)
{
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

/* AVX-512 VBMI (one-instruction 64-entry byte lookups, for the 3-bit
 * scan) is not part of the AVX-512 level: Skylake-X has the level without
 * it, and then that one kernel comes from the AVX2 table. */
static int cpu_vbmi;
/* AVX-512 VNNI (byte dot products, for ranking partitions) likewise. */
static int cpu_vnni;
/* FMA, which the AVX2 dot_matrix needs (AVX-512F has its own). */
static int cpu_fma;

static tq_simd_level detect_cpu(void)
{
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return TQ_SIMD_SCALAR;
    int osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1, f16c = (ecx >> 29) & 1;
    cpu_fma = (ecx >> 12) & 1;
    if (!osxsave || !avx || !f16c)
        return TQ_SIMD_SCALAR;
    uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) /* XMM and YMM state */
        return TQ_SIMD_SCALAR;
    if (__get_cpuid_max(0, NULL) < 7)
        return TQ_SIMD_SCALAR;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    int avx2 = (ebx >> 5) & 1;
    if (!avx2)
        return TQ_SIMD_SCALAR;
    int avx512f = (ebx >> 16) & 1, avx512dq = (ebx >> 17) & 1;
    int avx512bw = (ebx >> 30) & 1, avx512vl = (ebx >> 31) & 1;
    cpu_vbmi = (ecx >> 1) & 1;
    cpu_vnni = (ecx >> 11) & 1;
    if (avx512f && avx512dq && avx512bw && avx512vl && (xcr0 & 0xe0) == 0xe0)
        return TQ_SIMD_AVX512;
    return TQ_SIMD_AVX2;
}
#else
static tq_simd_level detect_cpu(void)
{
    return TQ_SIMD_SCALAR;
}
#endif

static tq_simd_level compiled_cap(tq_simd_level cpu)
{
#ifndef TQ_HAVE_AVX512
    if (cpu == TQ_SIMD_AVX512)
        cpu = TQ_SIMD_AVX2;
#endif
#ifndef TQ_HAVE_AVX2
    if (cpu == TQ_SIMD_AVX2)
        cpu = TQ_SIMD_SCALAR;
#endif
    return cpu;
}

#ifdef TQ_HAVE_AVX2
static tq_simd_kernels avx2_table; /* the AVX2 kernels, the scalar dot_matrix without FMA */
#endif
#ifdef TQ_HAVE_AVX512
static tq_simd_kernels avx512_table; /* the AVX-512 kernels, VBMI's where the CPU has it */

/* Without VBMI: the table's own (AVX2) sextet scan and AVX-512 keys. */
static void scan6_select_without_vbmi(const uint8_t *blocks, size_t nblocks, size_t block_bytes, size_t groups,
                                      const uint8_t *const *luts, size_t nq, const float *scalars,
                                      const tq_key_params *const *p, const float *threshold, float *key,
                                      uint32_t *mask)
{
    tq_scan_select_composed(&avx512_table, true, blocks, nblocks, block_bytes, groups, luts, nq, scalars, p,
                            threshold, key, mask);
}
#endif
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static const tq_simd_kernels *active = &tq_simd_kernels_scalar;
static tq_simd_level active_level = TQ_SIMD_SCALAR;
static tq_simd_level best_level = TQ_SIMD_SCALAR;
static int env_unusable;

static const tq_simd_kernels *table_of(tq_simd_level level)
{
    switch (level) {
    case TQ_SIMD_SCALAR:
        return &tq_simd_kernels_scalar;
    case TQ_SIMD_AVX2:
#ifdef TQ_HAVE_AVX2
        return &avx2_table;
#else
        return NULL;
#endif
    case TQ_SIMD_AVX512:
#ifdef TQ_HAVE_AVX512
        return &avx512_table;
#else
        return NULL;
#endif
    }
    return NULL;
}

static void init_table(void)
{
    best_level = compiled_cap(detect_cpu());
#ifdef TQ_HAVE_AVX2
    avx2_table = tq_simd_kernels_avx2;
    if (!cpu_fma)
        avx2_table.dot_matrix = tq_simd_kernels_scalar.dot_matrix;
#endif
#ifdef TQ_HAVE_AVX512
    avx512_table = tq_simd_kernels_avx512;
    /* What stands in for a kernel that needs an extension the CPU lacks. */
#ifdef TQ_HAVE_AVX2
    const tq_simd_kernels *below = &tq_simd_kernels_avx2;
#else
    const tq_simd_kernels *below = &tq_simd_kernels_scalar;
#endif
    if (!cpu_vbmi) {
        avx512_table.scan6_block_multi = below->scan6_block_multi;
        avx512_table.scan6_select = scan6_select_without_vbmi;
    }
    if (!cpu_vnni)
        avx512_table.dot_q8_blocks = below->dot_q8_blocks;
#endif
    tq_simd_level want = best_level;
    /* An unusable TQVEC_SIMD cannot be reported from here (the library never
     * prints); the table stays at the best level and tq_simd_env_unusable()
     * lets front ends refuse to run. */
    const char *env = getenv("TQVEC_SIMD");
    if (env && *env) {
        int lv = tq_simd_parse_level(env);
        if (lv >= 0 && (tq_simd_level)lv <= best_level)
            want = (tq_simd_level)lv;
        else
            env_unusable = 1;
    }
    active = table_of(want);
    active_level = want;
}

const tq_simd_kernels *tq_simd_table(tq_simd_level level)
{
    pthread_once(&init_once, init_table);
    return level <= best_level ? table_of(level) : NULL;
}

const tq_simd_kernels *tq_simd(void)
{
    pthread_once(&init_once, init_table);
    return active;
}

tq_simd_level tq_simd_active_level(void)
{
    pthread_once(&init_once, init_table);
    return active_level;
}

tq_simd_level tq_simd_best_level(void)
{
    pthread_once(&init_once, init_table);
    return best_level;
}

int tq_simd_env_unusable(void)
{
    pthread_once(&init_once, init_table);
    return env_unusable;
}

int tq_simd_force(tq_simd_level level)
{
    pthread_once(&init_once, init_table);
    const tq_simd_kernels *t = tq_simd_table(level);
    if (!t)
        return -1;
    active = t;
    active_level = level;
    return 0;
}

int tq_simd_parse_level(const char *name)
{
    if (!strcmp(name, "scalar"))
        return TQ_SIMD_SCALAR;
    if (!strcmp(name, "avx2"))
        return TQ_SIMD_AVX2;
    if (!strcmp(name, "avx512"))
        return TQ_SIMD_AVX512;
    return -1;
}

const char *tq_simd_level_name(tq_simd_level level)
{
    switch (level) {
    case TQ_SIMD_SCALAR:
        return "scalar";
    case TQ_SIMD_AVX2:
        return "avx2";
    case TQ_SIMD_AVX512:
        return "avx512";
    }
    return "unknown";
}
