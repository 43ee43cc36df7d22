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
#define TQVEC_VERSION_MINOR 2
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
    TQVEC_EVALUE = 3,       /* NaN or infinity, or a zero query under cosine */
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
    TQVEC_REFINE_FP16 = 4,    /* + the vectors in half precision (2d bytes; coordinates up to 65504) */
} tqvec_refine;

typedef enum tqvec_center {
    TQVEC_CENTER_DEFAULT = 0,     /* auto (before 0.2: none); opening an existing collection,
                                     whatever it was made with */
    TQVEC_CENTER_NONE = 1,
    TQVEC_CENTER_FIRST_BATCH = 2, /* subtract the mean of the first add's vectors (frozen);
                                     helps data far from the origin (recall@10 at 1 bit:
                                     fashion-mnist 0.717 -> 0.784, fiori-minilm 0.730 -> 0.836) */
    TQVEC_CENTER_AUTO = 3,        /* l2 and cosine: first-batch when the first add into the
                                     empty index or collection holds at least 256 vectors,
                                     else none for good; ip: none */
} tqvec_center;

/* What a code's table index stands for at 1 to 3 bits (the variant's
 * scalar code: mse 1 to 3 bits, prod 2 to 4). */
typedef enum tqvec_codebook {
    TQVEC_CODEBOOK_DEFAULT = 0, /* vector for the mse variant at 1 and 2 bits (at 1 bit from
                                   dim 4), else scalar; opening an existing collection,
                                   whatever it was made with */
    TQVEC_CODEBOOK_SCALAR = 1,  /* one Lloyd-Max codebook per coordinate (the paper's) */
    TQVEC_CODEBOOK_VECTOR = 2,  /* points for the coordinates one lookup covers: 16 for 2 (2 bits)
                                   or 4 (1 bit), 64 for 2 at 3 bits; solved once per dimension for
                                   the sphere's density: the same bytes and scan speed, a lower
                                   error (at 3 bits encoding at 0.63x the scalar codes' rate);
                                   dimensions at least 2 (2 and 3 bits) or 4 (1 bit) */
} tqvec_codebook;

#define TQVEC_MIN_DIM 2
#define TQVEC_MAX_DIM 65536
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
    int codebook;          /* tqvec_codebook */
    uint32_t reserved[6];  /* must be zero */
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
    uint32_t nprobe;       /* partitioned rows (tqvec_index_partition, sealed segments): scan the
                              nprobe partitions nearest the query (over several partitioned
                              segments, the best-ranked of all of them, as many rows' worth as
                              nprobe partitions of one index of their rows), more while fewer
                              than k rows pass; 0 = every row (exact as flat) */
    float target_recall;   /* in (0, 1]: instead of nprobe, probe as many partitions as the
                              recall@10 asked for needs, read off each partitioned set's probe
                              curve (calibrated when it was partitioned); 0 = off */
    uint32_t reserved[2];  /* must be zero */
    /* Collections only: a FILTER expression over each element's JSON
     * attributes, in the syntax of Redis vector sets (".year >= 1980 and
     * .genre in ['drama', 'crime']"); NULL = none. Evaluated inside the
     * scan, so a search returns min(k, matching elements) whatever the
     * selectivity. A syntax error is TQVEC_EARG naming the place. */
    const char *filter;
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
    int refine, center;        /* center in effect: auto is reported as what it became */
    uint64_t bytes_per_vector; /* compressed: codes and per-vector scalars */
    uint64_t refine_bytes_per_vector; /* refine data kept for re-ranking */
    const char *simd;          /* kernel level in use: "scalar", "avx2", "avx512" */
    int codebook;              /* tqvec_codebook: scalar or vector */
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
 * error (NaN/Inf, no memory) nothing is added. Under cosine a zero vector
 * is stored as zero: it has similarity 0 with every query (Redis's rule).
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
/* Partition every vector added so far for sublinear search: k-means on the
 * index's own vectors into nlist clusters (0 = 4 sqrt(count), at least 64
 * vectors a cluster on average), trained on `threads` threads (0 or 1: the
 * caller's), then the rows reordered by cluster. Searches with
 * params.nprobe > 0 scan only the nprobe clusters nearest the query;
 * vectors added afterwards are scanned in full until the next call. Ids do
 * not change. Deterministic for a given seed, on any CPU. Exclusive. */
TQVEC_API int tqvec_index_partition(tqvec_index *index, uint32_t nlist, uint32_t threads,
                                    tqvec_error *err);
/* Partitions made by the last tqvec_index_partition; 0 if never. Shared. */
TQVEC_API uint32_t tqvec_index_partitions(const tqvec_index *index);
/* Fill *info. Shared. */
TQVEC_API int tqvec_index_get_info(const tqvec_index *index, tqvec_index_info *info);

/* ----------------------------------------------------------- collections */

/* A collection: a directory that keeps elements (a string key, a vector and
 * an optional attribute blob, JSON by convention) across restarts. Writes go
 * to a write-ahead log before they are acknowledged and are searchable by
 * the next query; the log is sealed into immutable segment files as it
 * grows. One process opens a directory at a time (TQVEC_EBUSY otherwise). */
typedef struct tqvec_collection tqvec_collection;

/* When acknowledged writes reach the disk, as Redis's appendfsync. A crash
 * of the process loses nothing under any policy; a crash of the machine
 * loses nothing under ALWAYS and at most the last second under EVERYSEC. */
typedef enum tqvec_fsync {
    TQVEC_FSYNC_DEFAULT = 0,  /* everysec */
    TQVEC_FSYNC_ALWAYS = 1,   /* fdatasync before every add or remove returns */
    TQVEC_FSYNC_EVERYSEC = 2, /* a background thread syncs once a second */
    TQVEC_FSYNC_NO = 3,       /* the kernel decides */
} tqvec_fsync;

enum { TQVEC_LOG_WARNING = 1, TQVEC_LOG_NOTICE = 2 };

typedef struct tqvec_collection_options {
    /* Settings fixed when the collection is created (0 = default, as for
     * tqvec_index_options). Opening an existing collection with dim != 0
     * checks that every one of them matches (center only when asked: 0
     * opens any). */
    uint32_t dim;
    int metric, bits, variant, correction;
    uint64_t seed;
    int refine, center;
    int create;            /* nonzero: create the collection if dir has none */
    int fsync;             /* tqvec_fsync */
    uint32_t segment_rows; /* seal the log into a segment at this many rows;
                              TQVEC_MIN_SEGMENT_ROWS..TQVEC_MAX_SEGMENT_ROWS, 0 = default */
    int verify;            /* nonzero: checksum every segment at open (else before its first search) */
    /* Recovery notes (a torn log tail cut, leftover files removed); NULL:
     * none are reported (tqvec_collection_info still counts torn bytes). */
    void (*log)(void *ctx, int level, const char *message);
    void *log_ctx;
    /* Sealed segments of at least this many rows are partitioned for
     * sublinear search (k-means on their own rows, in a background thread
     * off the write path; compaction partitions what it merges), then
     * searched by probing when params.nprobe > 0. A log holding this many
     * rows is sealed by the same thread once writes pause for 2 s (rather
     * than scanned flat until segment_rows fill it). 0 = the default
     * (4096); TQVEC_PARTITION_NEVER keeps every segment flat. */
    uint32_t partition_rows;
    /* The same thread merges sealed segments once merge_factor of them are
     * of one size class (each class merge_factor times the last, starting
     * at merge_factor * segment_rows), so a query scores a few sets of
     * centroids however many segments were sealed. 0 = the default (4);
     * TQVEC_MERGE_NEVER keeps every sealed segment as written. */
    uint32_t merge_factor;
    int codebook;          /* tqvec_codebook (checked against an existing collection only when
                              asked: 0 opens any) */
    uint32_t reserved[5];  /* must be zero */
} tqvec_collection_options;

#define TQVEC_MIN_SEGMENT_ROWS 1
#define TQVEC_DEFAULT_SEGMENT_ROWS 131072
#define TQVEC_MAX_SEGMENT_ROWS (1 << 24)
#define TQVEC_DEFAULT_PARTITION_ROWS 4096
#define TQVEC_PARTITION_NEVER UINT32_MAX
#define TQVEC_DEFAULT_MERGE_FACTOR 4
#define TQVEC_MERGE_NEVER UINT32_MAX
#define TQVEC_MAX_KEY_BYTES 4096
#define TQVEC_MAX_ATTRS_BYTES (16 << 20)

typedef struct tqvec_element {
    const char *key;       /* 0..TQVEC_MAX_KEY_BYTES bytes, any content (not NULL) */
    size_t key_len;
    const float *vector;   /* dim floats */
    const char *attrs;     /* NULL, or attrs_len bytes (at most TQVEC_MAX_ATTRS_BYTES) */
    size_t attrs_len;
} tqvec_element;

/* Open (or with opts->create, create) the collection in dir. Replays the
 * log; a record cut short by a crash at its end is dropped with a note, a
 * damaged record inside the log is TQVEC_ECORRUPT. *out is NULL on error. */
TQVEC_API int tqvec_collection_open(const char *dir, const tqvec_collection_options *opts,
                                    tqvec_collection **out, tqvec_error *err);
/* Sync the log and release everything; NULL is accepted. Exclusive. */
TQVEC_API int tqvec_collection_close(tqvec_collection *c, tqvec_error *err);
/* Add or replace (same key) n elements with one log write. Every element is
 * checked first (key and attribute sizes, NaN/Inf); on a bad one nothing
 * is written and the message names it. A zero vector under cosine is
 * stored, similar to nothing (as for tqvec_index_add).
 * *added (may be NULL) gets the number of keys that were new. Writers are
 * serialized with each other; searches and gets run beside them. */
TQVEC_API int tqvec_collection_add(tqvec_collection *c, const tqvec_element *elems, size_t n, size_t *added,
                                   tqvec_error *err);
/* Remove by key; TQVEC_ENOTFOUND if absent. Like add for concurrency. */
TQVEC_API int tqvec_collection_remove(tqvec_collection *c, const char *key, size_t key_len, tqvec_error *err);
/* An element's vector into vector (dim floats; NULL to skip) — the stored
 * floats with fp32 or fp16 refine data, else decoded from the 8-bit refine
 * codes when kept, else from the scan codes; under cosine the direction is
 * what is stored and it comes back at the length it was added with (an
 * element stored before lengths were kept, in segment format 2 or older,
 * comes back normalized) — and its attributes into attrs (attrs_cap bytes; NULL to
 * skip). *attrs_len gets the attributes' full length; TQVEC_EARG if they do
 * not fit. TQVEC_ENOTFOUND if the key is absent. Shared. */
TQVEC_API int tqvec_collection_get(tqvec_collection *c, const char *key, size_t key_len, float *vector,
                                   char *attrs, size_t attrs_cap, size_t *attrs_len, tqvec_error *err);

/* Replace an element's attributes (attrs_len 0: remove them) and keep its
 * vector exactly as stored (nothing is re-encoded). TQVEC_ENOTFOUND if the
 * key is absent. Like add for concurrency. */
TQVEC_API int tqvec_collection_set_attrs(tqvec_collection *c, const char *key, size_t key_len, const char *attrs,
                                         size_t attrs_len, tqvec_error *err);

/* Search results: nq lists of matches, each best first. The key and
 * attribute pointers stay valid until tqvec_results_free, whatever writes
 * or compactions happen meanwhile (the results hold a snapshot). */
typedef struct tqvec_results tqvec_results;

typedef struct tqvec_match {
    const char *key;       /* not NUL-terminated */
    size_t key_len;
    float score;           /* in the metric's units, as tqvec_hit */
    const char *attrs;     /* NULL when the element has none */
    size_t attrs_len;
} tqvec_match;

/* The min(k, live elements) best matches for each of nq queries (row-major,
 * dim floats each), from one consistent snapshot of the collection. Shared:
 * never blocked by writers. */
TQVEC_API int tqvec_collection_search(tqvec_collection *c, const float *queries, size_t nq,
                                      const tqvec_search_params *params, tqvec_results **out,
                                      tqvec_error *err);
/* Matches of query q (0 if q is out of range). */
TQVEC_API size_t tqvec_results_count(const tqvec_results *r, size_t q);
/* Match i of query q, or NULL if out of range. */
TQVEC_API const tqvec_match *tqvec_results_get(const tqvec_results *r, size_t q, size_t i);
/* All matches of query q as one array of *count entries (best first), for
 * bindings that read them in bulk; NULL with *count 0 if q is out of range.
 * Valid until tqvec_results_free. */
TQVEC_API const tqvec_match *tqvec_results_list(const tqvec_results *r, size_t q, size_t *count);
/* Query q's matches copied out in bulk, for bindings where a call per
 * match is the cost (Python): scores[i], key_lens[i] and the keys back to
 * back in keys; when attrs_lens is not NULL, also attrs_lens[i]
 * (UINT32_MAX: none) and the attributes back to back in attrs. The arrays
 * hold at least tqvec_results_count(r, q) entries. On return count,
 * keys_bytes and attrs_bytes say what was (or would be) written;
 * TQVEC_EARG, with nothing copied, if keys_cap or attrs_cap is too small. */
typedef struct tqvec_results_out {
    float *scores;
    uint32_t *key_lens;
    char *keys;
    size_t keys_cap;
    uint32_t *attrs_lens;  /* NULL: attributes not wanted */
    char *attrs;
    size_t attrs_cap;
    size_t count, keys_bytes, attrs_bytes; /* set by the call */
} tqvec_results_out;
TQVEC_API int tqvec_results_export(const tqvec_results *r, size_t q, tqvec_results_out *out);
TQVEC_API void tqvec_results_free(tqvec_results *r);

/* Keys drawn at random, uniformly over live elements, as a results object
 * with one list (query 0; scores 0, no attributes): min(n, count)
 * distinct keys, or with allow_repeats exactly n independent draws (none
 * when the collection is empty). The same seed on the same contents gives
 * the same keys. Shared. */
TQVEC_API int tqvec_collection_random_keys(tqvec_collection *c, size_t n, int allow_repeats, uint64_t seed,
                                           tqvec_results **out, tqvec_error *err);

/* One end of a key range; key NULL: unbounded on that side. */
typedef struct tqvec_key_bound {
    const char *key;
    size_t key_len;
    int inclusive;         /* nonzero: the bound itself is in the range */
} tqvec_key_bound;

/* The first max live keys between lo and hi (NULL: unbounded) in byte
 * order (memcmp, a key before the longer keys it prefixes), as a results
 * object with one list (query 0; scores 0, no attributes): for paging
 * through a collection by key. Keys live in a hash map, so a call costs a
 * pass over every key plus a sort of those in the range. Shared. */
TQVEC_API int tqvec_collection_key_range(tqvec_collection *c, const tqvec_key_bound *lo, const tqvec_key_bound *hi,
                                         size_t max, tqvec_results **out, tqvec_error *err);

/* How many live elements have attributes: a pass over every key. Shared. */
TQVEC_API int tqvec_collection_count_attributed(tqvec_collection *c, uint64_t *count);

/* Copy the collection, as it is now, into dest: a directory that must not
 * exist (TQVEC_EARG if it does), on any file system. The copy is a
 * collection of its own, opened like any other; its manifest is written
 * (and synced) last, so a copy cut short by a crash is not mistaken for
 * one. Writes wait while it runs; searches do not. */
TQVEC_API int tqvec_collection_backup(tqvec_collection *c, const char *dest, tqvec_error *err);
/* Rename the collection's directory to dir (which must not exist, on the
 * same file system) and keep it open there: no reload, searches running
 * meanwhile finish undisturbed. Like add for concurrency. */
TQVEC_API int tqvec_collection_move(tqvec_collection *c, const char *dir, tqvec_error *err);

/* fdatasync the log now, whatever the policy. Like add for concurrency. */
TQVEC_API int tqvec_collection_sync(tqvec_collection *c, tqvec_error *err);
/* Seal the log into a segment, then rewrite segments that are at least a
 * fifth deleted, or small, into one, dropping deleted rows. Searches keep
 * running on their snapshot throughout. Like add for concurrency. */
TQVEC_API int tqvec_collection_compact(tqvec_collection *c, tqvec_error *err);
/* Wait until the background partitioner is idle: every sealed segment of
 * at least partition_rows rows is partitioned (or failed to be, which a
 * log message says; it is then searched flat) and no merge is due. Its
 * work otherwise waits for writes to pause (no add for half a second, two
 * minutes at most); a wait starts it at once. For builds and benchmarks that want
 * the partitioned state before they query. Shared. */
TQVEC_API int tqvec_collection_wait_partitioned(tqvec_collection *c, tqvec_error *err);
/* Partitions over all partitioned sealed segments (0: every segment is
 * flat). Shared. */
TQVEC_API uint64_t tqvec_collection_partitions(tqvec_collection *c);
/* Checksum every byte of every segment now; TQVEC_ECORRUPT names the file
 * and section. Shared. */
TQVEC_API int tqvec_collection_verify(tqvec_collection *c, tqvec_error *err);

typedef struct tqvec_collection_info {
    uint32_t dim;
    int metric, bits, variant, correction, refine;
    int center;                /* in effect: auto is reported as what it became once rows are stored */
    uint64_t seed;
    uint64_t count;            /* live elements */
    uint64_t deleted;          /* rows awaiting compaction */
    uint32_t segments;         /* sealed segment files */
    uint64_t unsealed;         /* rows only in the log so far */
    uint64_t log_bytes;
    uint64_t torn_bytes;       /* cut from an incomplete log tail when opened */
    uint64_t bytes_per_vector, refine_bytes_per_vector;
    const char *simd;
    int codebook;              /* tqvec_codebook: scalar or vector */
} tqvec_collection_info;

/* Fill *info. Shared. */
TQVEC_API int tqvec_collection_get_info(tqvec_collection *c, tqvec_collection_info *info);

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
