/*
 * tqvec.h — the public C interface of tqvec, the whole contract: anything not
 * declared here is private and may change.
 *
 * tqvec stores vectors as TurboQuant codes (Zandieh et al., arXiv
 * 2504.19874): a seeded random rotation followed by a fixed Lloyd-Max scalar
 * codebook, so vectors are encoded the moment they arrive, with no training.
 *
 * Conventions
 *   - Every call returns an int status: TQVEC_OK (0) or a TQVEC_E* code.
 *     New codes may be added; treat unknown non-zero codes as errors and use
 *     tqvec_errstr() for text.
 *   - Calls that can fail take an optional tqvec_error* (may be NULL) that
 *     receives the code, the errno if a system call failed, and a message
 *     naming the bad value. It belongs to the caller, never to a handle.
 *   - Handles are opaque. Results go into buffers the caller sized; the
 *     number written is returned through an out-parameter.
 *   - In option structs, 0 means "the default" for every field.
 *   - The library never prints, aborts or exits.
 *
 * Thread safety is stated per call. "Exclusive" means no other call on the
 * same handle may run at the same time; "shared" calls may run concurrently
 * with each other.
 */
#ifndef TQVEC_H
#define TQVEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(TQVEC_STATIC_BUILD)
#define TQVEC_API __attribute__((visibility("default")))
#else
#define TQVEC_API
#endif

/* Read by meson for the project version: keep these three lines' form. */
#define TQVEC_VERSION_MAJOR 0
#define TQVEC_VERSION_MINOR 1
#define TQVEC_VERSION_PATCH 0
#define TQVEC_VERSION_NUMBER (TQVEC_VERSION_MAJOR * 10000 + TQVEC_VERSION_MINOR * 100 + TQVEC_VERSION_PATCH)

/* "MAJOR.MINOR.PATCH" of the library actually linked. */
TQVEC_API const char *tqvec_version(void);
/* TQVEC_VERSION_NUMBER of the library actually linked. */
TQVEC_API int tqvec_version_number(void);

/* ---------------------------------------------------------------- errors */

enum {
    TQVEC_OK = 0,
    TQVEC_EARG = 1,         /* invalid argument or option */
    TQVEC_EDIM = 2,         /* vector dimension does not match */
    TQVEC_EVALUE = 3,       /* NaN or infinity, or a zero vector under cosine */
    TQVEC_ENOTFOUND = 4,    /* no such element */
    TQVEC_ECORRUPT = 5,     /* stored data fails a check */
    TQVEC_EIO = 6,          /* a system call failed */
    TQVEC_ENOMEM = 7,       /* out of memory */
    TQVEC_EBUSY = 8,        /* resource in use */
    TQVEC_EUNSUPPORTED = 9, /* valid request this handle or build cannot serve */
};

typedef struct tqvec_error {
    int code;          /* same as the call's return value */
    int sys_errno;     /* errno of a failed system call, else 0 */
    char message[256]; /* NUL-terminated, names the offending value */
} tqvec_error;

/* Static text for a code; never NULL (unknown codes get a generic text). */
TQVEC_API const char *tqvec_errstr(int code);

/* ------------------------------------------------------------ parameters */

typedef enum tqvec_metric {
    TQVEC_METRIC_DEFAULT = 0, /* cosine */
    TQVEC_METRIC_L2 = 1,      /* squared Euclidean distance, smaller is nearer */
    TQVEC_METRIC_IP = 2,      /* inner product, larger is nearer */
    TQVEC_METRIC_COSINE = 3,  /* cosine similarity, larger is nearer */
} tqvec_metric;

typedef enum tqvec_variant {
    TQVEC_VARIANT_DEFAULT = 0, /* mse */
    TQVEC_VARIANT_MSE = 1,     /* b-bit scalar code per coordinate */
    TQVEC_VARIANT_PROD = 2,    /* (b-1)-bit code + 1-bit QJL sign sketch: unbiased ip */
} tqvec_variant;

typedef enum tqvec_correction {
    TQVEC_CORRECTION_DEFAULT = 0, /* ip */
    TQVEC_CORRECTION_IP = 1,      /* store 1/<u,u~> per vector: removes shrinkage */
    TQVEC_CORRECTION_NONE = 2,    /* the paper's plain estimator */
} tqvec_correction;

typedef enum tqvec_refine {
    TQVEC_REFINE_DEFAULT = 0, /* none */
    TQVEC_REFINE_NONE = 1,    /* codes only: no re-ranking */
    TQVEC_REFINE_CODE8 = 2,   /* + 8-bit codes (d bytes per vector) for re-ranking */
    TQVEC_REFINE_FP32 = 3,    /* + the float vectors (4d bytes) for exact re-ranking */
} tqvec_refine;

typedef enum tqvec_center {
    TQVEC_CENTER_DEFAULT = 0,     /* none */
    TQVEC_CENTER_NONE = 1,
    TQVEC_CENTER_FIRST_BATCH = 2, /* subtract the mean of the first add's vectors (frozen);
                                     helps l2 data far from the origin (fashion-mnist
                                     recall@10 0.9445 -> 0.9615 at 4 bits) */
} tqvec_center;

#define TQVEC_MIN_DIM 2
#define TQVEC_MAX_DIM 16384
#define TQVEC_MIN_BITS 1
#define TQVEC_DEFAULT_BITS 4
#define TQVEC_MAX_BITS 4
#define TQVEC_DEFAULT_SEED 0x7475726271756e74ull
#define TQVEC_MAX_K 100000
#define TQVEC_MAX_RERANK 1024
#define TQVEC_MAX_THREADS 64

/* ------------------------------------------------- in-memory flat index */

/* An in-memory index: vectors get ids 0, 1, 2, ... in the order added and are
 * searched exhaustively over their codes, optionally re-ranked exactly. */
typedef struct tqvec_index tqvec_index;

typedef struct tqvec_index_options {
    uint32_t dim;          /* required: TQVEC_MIN_DIM..TQVEC_MAX_DIM */
    int metric;            /* tqvec_metric */
    int bits;              /* 1..4 bits per coordinate; 0 = TQVEC_DEFAULT_BITS */
    int variant;           /* tqvec_variant */
    int correction;        /* tqvec_correction */
    uint64_t seed;         /* rotation seed; 0 = TQVEC_DEFAULT_SEED */
    int refine;            /* tqvec_refine: data kept for re-ranking */
    int center;            /* tqvec_center */
    uint32_t reserved[7];  /* must be zero */
} tqvec_index_options;

typedef enum tqvec_scorer {
    TQVEC_SCORER_DEFAULT = 0, /* lut */
    TQVEC_SCORER_LUT = 1,     /* SIMD scan of 8-bit query tables, float re-score of the best */
    TQVEC_SCORER_FLOAT = 2,   /* float tables for every vector: slower, the reference */
} tqvec_scorer;

typedef struct tqvec_search_params {
    uint32_t k;            /* results wanted; 0 = 10 */
    uint32_t rerank;       /* re-score the best k*rerank estimates on the refine data; 0 = off */
    uint32_t scorer;       /* tqvec_scorer */
    uint32_t threads;      /* split the scan over this many threads (a persistent pool,
                              no start-up per query); 0 or 1 = the calling thread only;
                              results do not depend on it */
    uint32_t reserved[4];  /* must be zero */
} tqvec_search_params;

typedef struct tqvec_hit {
    uint64_t id;
    float score;           /* l2: squared distance; ip: inner product; cosine: similarity */
} tqvec_hit;

typedef struct tqvec_index_info {
    uint32_t dim;
    int metric, bits, variant, correction;
    uint64_t seed;
    uint64_t count;            /* vectors held */
    int refine, center;
    uint64_t bytes_per_vector; /* compressed: codes and per-vector scalars */
    uint64_t refine_bytes_per_vector; /* refine data kept for re-ranking */
    const char *simd;          /* kernel level in use: "scalar", "avx2", "avx512" */
} tqvec_index_info;

/* Create an empty index. *out is NULL on error. Thread safety: any. Re-ranking
 * needs refine data: TQVEC_REFINE_FP32 (exact) or TQVEC_REFINE_CODE8 (a
 * quarter of the bytes; at 4 bits and re-rank 16, recall@10 0.97-0.996 on
 * the shared datasets where fp32 gives 1.0). */
TQVEC_API int tqvec_index_create(const tqvec_index_options *opts, tqvec_index **out,
                                 tqvec_error *err);
/* Free an index and everything it holds; NULL is accepted. Exclusive. */
TQVEC_API void tqvec_index_free(tqvec_index *index);
/* Encode and add n vectors (row-major, dim floats each). All or nothing: on
 * error (NaN/Inf, a zero vector under cosine, no memory) nothing is added.
 * If first_id is not NULL it receives the id of the first vector. Exclusive. */
TQVEC_API int tqvec_index_add(tqvec_index *index, const float *vectors, size_t n,
                              uint64_t *first_id, tqvec_error *err);
/* The min(k, count) best hits for one query (dim floats), best first, into
 * hits (capacity cap >= k). *count receives the number written. Shared: any
 * number of searches may run at once. */
TQVEC_API int tqvec_index_search(const tqvec_index *index, const float *query,
                                 const tqvec_search_params *params, tqvec_hit *hits,
                                 size_t cap, size_t *count, tqvec_error *err);
/* The same for nq queries (row-major) in one pass over the codes, which is
 * faster than nq calls when the codes exceed the cache. Results of query i
 * go to hits + i*k (hits holds nq*k entries, k as in params), their count
 * to counts[i]. Every query is checked before any is run. Shared. */
TQVEC_API int tqvec_index_search_batch(const tqvec_index *index, const float *queries, size_t nq,
                                       const tqvec_search_params *params, tqvec_hit *hits,
                                       size_t *counts, tqvec_error *err);
/* Fill *info. Shared. */
TQVEC_API int tqvec_index_get_info(const tqvec_index *index, tqvec_index_info *info);

/* ------------------------------------------------------------------ simd */

/* The kernel level in use: "scalar", "avx2" or "avx512". */
TQVEC_API const char *tqvec_simd_level(void);
/* Pin the kernel level by name. TQVEC_EUNSUPPORTED if this CPU or build lacks
 * it, TQVEC_EARG if the name is unknown. Call before any other tqvec work:
 * not safe while other calls run. The environment variable TQVEC_SIMD does
 * the same at start-up; tqvec_simd_check_env() reports whether it was
 * usable. */
TQVEC_API int tqvec_simd_force(const char *level, tqvec_error *err);
TQVEC_API int tqvec_simd_check_env(tqvec_error *err);

#ifdef __cplusplus
}
#endif

#endif
