/*
 * index: TurboQuant (Zandieh et al., arXiv 2504.19874) and the flat search
 * built on it. Everything here is pure computation over memory: no I/O, no
 * locks beyond the codebook cache. Kernels come from simd/.
 *
 * Pieces, one file each:
 *   memory     the only allocator entry points (jemalloc); raw malloc and
 *              friends are poisoned below for every file that includes this
 *   error      status codes (numerically equal to the public TQVEC_E*) and
 *              the error-detail struct
 *   rng        splitmix64, the one source of seeded randomness
 *   rotation   seeded randomized Hadamard rotation that keeps dimension d
 *   codebook   Lloyd-Max centroids for the sphere-coordinate density (and
 *              the cache of solved tables both codebooks use)
 *   vcodebook  vector codebooks: 16 points per nibble of 1- and 2-bit codes
 *   quantizer  encode (mse / prod variants, correction factor), query
 *              preparation, score estimates
 *   scan       the blocked nibble layout of codes and the per-query 8-bit
 *              tables the fast-scan kernel sums
 *   topk       bounded best-k selection with deterministic tie-breaking
 *   pool       the persistent worker threads a search splits its scan over
 *   codec      configuration + quantizer + refine codebook + centering mean:
 *              validates vectors and encodes them into rows
 *   search     the three-stage search over any number of row sets
 *   flat       an in-memory index: one growing set of rows
 */
#ifndef TQ_INDEX_H
#define TQ_INDEX_H

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq_simd.h"

/* ---------------------------------------------------------------- memory */

void *tq_malloc(size_t n);
void *tq_calloc(size_t count, size_t size);
void *tq_realloc(void *p, size_t n);
/* Ask for 2 MiB pages over bytes at p (arrays of at least that size that
 * are about to be written through: an index's or a segment's rows). A
 * first write to each 4 KiB page is a fault; on the VMs measured here the
 * faults of an index's growing arrays cost as much as encoding its
 * vectors (bench encode, d = 1536, 20,000 vectors: 171K vectors/s, 311K
 * with 2 MiB pages). Advice only: where the kernel declines, nothing
 * changes. */
void tq_advise_huge(void *p, size_t bytes);
/* align: a power of two; the block is freed with tq_free. */
void *tq_aligned_alloc(size_t align, size_t n);
void tq_free(void *p);
char *tq_strdup(const char *s);
/* Bytes currently allocated by this process (jemalloc's stats.allocated,
 * refreshed on call; glibc's mallinfo2 in the shared library); 0 if
 * unavailable. */
size_t tq_mem_allocated(void);

#pragma GCC poison malloc calloc realloc free strdup aligned_alloc posix_memalign

/* ----------------------------------------------------------------- error */

/* Same numbers as the public TQVEC_E* codes, so the library passes them
 * through unchanged. */
enum {
    TQ_OK = 0,
    TQ_EARG = 1,         /* invalid argument or option */
    TQ_EDIM = 2,         /* vector dimension does not match */
    TQ_EVALUE = 3,       /* NaN, infinity, or a vector that cannot be used */
    TQ_ENOTFOUND = 4,
    TQ_ECORRUPT = 5,     /* stored data fails a check */
    TQ_EIO = 6,
    TQ_ENOMEM = 7,
    TQ_EBUSY = 8,
    TQ_EUNSUPPORTED = 9, /* valid request this build or format cannot serve */
};

typedef struct tq_error {
    int code;
    int sys_errno; /* errno of the failing system call, or 0 */
    char msg[256];
} tq_error;

/* Record code and a formatted message in err (which may be NULL); returns
 * code so callers can `return tq_err(...)`. */
int tq_err(tq_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, with sys_errno set to errno_value and strerror appended. */
int tq_err_sys(tq_error *err, int code, int errno_value, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------------------- rng */

typedef struct tq_rng {
    uint64_t state;
} tq_rng;

void tq_rng_seed(tq_rng *r, uint64_t seed);
uint64_t tq_rng_next(tq_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double tq_rng_uniform(tq_rng *r);
/* Standard normal (Box-Muller). */
double tq_rng_gauss(tq_rng *r);
/* Derive an independent stream's seed from a seed and a purpose tag. */
uint64_t tq_seed_derive(uint64_t seed, uint64_t tag);

/* -------------------------------------------------------------- rotation */

#define TQ_MIN_DIM 2u
#define TQ_MAX_DIM 65536u
#define TQ_DEFAULT_ROTATION_ROUNDS 3u

typedef struct tq_rotation {
    uint32_t d;
    uint32_t p;      /* largest power of two <= d */
    uint32_t rounds;
    uint32_t per_round; /* signs per round: p for the head, p more for the tail if p < d */
    float scale;     /* 1/sqrt(p): makes each Hadamard block orthonormal */
    float *signs;    /* rounds * per_round random +-1.0f */
} tq_rotation;

int tq_rotation_init(tq_rotation *rot, uint32_t d, uint64_t seed, uint32_t rounds, tq_error *err);
void tq_rotation_free(tq_rotation *rot);
/* x <- R x, in place. */
void tq_rotation_apply(const tq_rotation *rot, float *x);
/* x <- R^T x, in place (the exact inverse up to float rounding). */
void tq_rotation_invert(const tq_rotation *rot, float *x);

/* -------------------------------------------------------------- codebook */

#define TQ_MAX_BITS 8u

typedef struct tq_codebook {
    uint32_t d;
    unsigned bits;
    unsigned levels;          /* 2^bits */
    double centroid[256];     /* ascending, symmetric about 0 */
    double bound[255];        /* bound[i] = midpoint of centroid i and i+1 */
    float centroid_f[256];
    float bound_f[255];
    double mse;               /* expected squared error of one coordinate */
    unsigned iterations;      /* Lloyd iterations used */
    /* Grid over [grid_lo, grid_lo + TQ_CODEBOOK_GRID / grid_scale): entry g
     * counts the bounds below the cell's start, so quantizing is a lookup
     * plus a step or two (used past 4 bits, where comparing against every
     * bound is too slow). */
    float grid_lo, grid_scale;
    uint8_t grid[4096];
} tq_codebook;

#define TQ_CODEBOOK_GRID 4096

/* Tables solved once per (d, bits) and kept for the life of the process
 * (the scalar and the vector codebooks), thread-safe: the table of `size`
 * bytes for (d, bits), solved by `solve` on first use; NULL if that fails. */
typedef struct tq_solved_cache {
    pthread_mutex_t lock;
    struct tq_solved *head; /* guarded by lock */
} tq_solved_cache;
#define TQ_SOLVED_CACHE_INIT {PTHREAD_MUTEX_INITIALIZER, NULL}
const void *tq_solved_get(tq_solved_cache *cache, uint32_t d, unsigned bits, size_t size,
                          int (*solve)(void *table, uint32_t d, unsigned bits));

/* The Lloyd-Max codebook for one coordinate of a uniform point on the unit
 * sphere in R^d at `bits` bits (1..8), computed on first use and cached for
 * the life of the process (thread-safe). NULL if d or bits is out of range
 * or memory runs out. */
const tq_codebook *tq_codebook_get(uint32_t d, unsigned bits);
/* codes[i] = number of cb->bound_f strictly below x[i], exactly as the
 * quantize kernel defines it, for any bits (the kernel for up to 4). */
void tq_codebook_quantize(const tq_codebook *cb, const float *x, size_t n, uint8_t *codes);
/* Density constant c_d = E|u_1| for u uniform on the sphere in R^d. */
double tq_sphere_abs_mean(uint32_t d);

/* Points for the coordinates one table lookup covers, instead of the
 * product of scalar codebooks (see vcodebook.c): 16 for a nibble's m = 4 /
 * bits coordinates at 1 and 2 bits, 64 for a sextet's 2 coordinates at 3
 * bits. An index x holds code (x >> i bits) & mask for its i-th
 * coordinate, as with scalar codes, so layouts and kernels are unchanged;
 * only what an index means differs. */
#define TQ_VQ_POINTS_MAX TQ_VQ_STRIDE

typedef struct tq_vector_codebook {
    uint32_t d;
    unsigned bits;            /* 1, 2 or 3 */
    unsigned dims;            /* coordinates per point: 4 at 1 bit, else 2 */
    unsigned points;          /* 2^(dims bits): 16, or 64 at 3 bits */
    float point[4][TQ_VQ_POINTS_MAX]; /* point[i][x]: coordinate i of point x (0 past dims, d or points) */
    float half_sq[TQ_VQ_POINTS_MAX];  /* half each point's squared norm, as the vq_nearest kernel takes it */
    double mse;               /* error per coordinate on the solver's samples */
    double grid_mse;          /* the scalar codebooks' product on the same samples */
} tq_vector_codebook;

/* Coordinates of one point of the vector codebook at `bits`. */
static inline unsigned tq_vector_codebook_dims(unsigned bits)
{
    return bits == 1 ? 4u : 2u;
}
/* The vector codebook for d (at least its dims) and bits (1, 2 or 3),
 * computed on first use and cached for the life of the process
 * (thread-safe); NULL if out of range or out of memory. */
const tq_vector_codebook *tq_vector_codebook_get(uint32_t d, unsigned bits);
/* codes[j] for u[0..n), n a multiple of dims: each nibble's coordinates
 * take the nearest point's index (lowest on ties), and recon[j] the
 * reconstruction they stand for. */
void tq_vector_codebook_encode(const tq_vector_codebook *vb, const float *u, uint32_t n, uint8_t *codes,
                               float *recon);
/* u[j] = the reconstruction codes[0..n) stand for (n a multiple of dims). */
void tq_vector_codebook_decode(const tq_vector_codebook *vb, const uint8_t *codes, uint32_t n, float *u);

/* ------------------------------------------------------------------ scan */

/* Two layouts (the scan layout's design comment has both byte by byte):
 * nibbles, one 16-entry table lookup per 4 bits (1, 2 and 4 bits, and the
 * sign sketch); and sextets at 3 bits, one 64-entry lookup per pair of
 * codes, 3 bits a coordinate. */
typedef struct tq_scan_layout {
    uint32_t d;
    unsigned bits;        /* bits of each code: 1..4 */
    bool sextets;         /* the 3-bit layout */
    uint32_t per_nibble;  /* nibbles: coordinates per 4-bit nibble, 1, 2 or 4 */
    uint32_t nibbles;     /* nibbles: per vector, padded to even */
    uint32_t npairs;      /* nibbles: nibbles / 2 */
    uint32_t groups;      /* sextets: groups of 4 sextets (8 coordinates) */
    /* What both have: tables (one per nibble or sextet, `entries` wide,
     * `lookups` of them), and the units the kernels step over (a nibble
     * pair, or a sextet group) with their block and table bytes. */
    uint32_t lookups, entries;
    uint32_t units;
    size_t unit_bytes, unit_lut_bytes, lut_bytes;
    size_t block_bytes;   /* bytes of one block of TQ_SCAN_BLOCK vectors */
} tq_scan_layout;

/* A query's tables for one layout: float rows (`entries` per lookup) and
 * their 8-bit quantization, sum_t f[t][x] ≈ delta * sum_t q8[t][x] + bias. */
typedef struct tq_scan_lut {
    uint8_t *q8;
    float *f;
    float *row_lo;  /* each row's smallest reachable entry (inside f's block) */
    float delta, bias;
    /* What the rows were built from (q is the caller's, alive while the
     * tables are used): tq_scan_lut_exact computes one-code entries from
     * them instead of reading the float tables. */
    const float *q;
    float table[16];
    /* Sextet tables from a vector codebook: its points code the first
     * vq_coords coordinates (vb NULL: scalar codes throughout). */
    const tq_vector_codebook *vb;
    uint32_t vq_coords;
} tq_scan_lut;

void tq_scan_layout_init(tq_scan_layout *L, uint32_t d, unsigned bits);
/* The layout of storage format 1 (segment and log files written before the
 * sextet layout): nibbles at every width, a 3-bit code in a whole nibble.
 * Only for reading such files. */
void tq_scan_layout_init_format1(tq_scan_layout *L, uint32_t d, unsigned bits);
/* Store vector v (0..31) of a block from its d unpacked codes. */
void tq_scan_put(const tq_scan_layout *L, uint8_t *block, unsigned v, const uint8_t *codes);
/* Zero nibbles for vector v: the state of a row never written. */
void tq_scan_clear(const tq_scan_layout *L, uint8_t *block, unsigned v);
/* Read vector v's d unpacked codes back. */
void tq_scan_get(const tq_scan_layout *L, const uint8_t *block, unsigned v, uint8_t *codes);
int tq_scan_lut_init(tq_scan_lut *t, const tq_scan_layout *L);
void tq_scan_lut_free(tq_scan_lut *t);
/* Tables for query coordinates q (d floats) against a 16-entry centroid
 * table. */
void tq_scan_lut_build(const tq_scan_layout *L, const float *table, const float *q, tq_scan_lut *t);
/* The same for codes from the vector codebook vb (a nibble layout at 1
 * and 2 bits, sextets at 3), the first vq_coords coordinates by its
 * points, the rest by `table`. */
void tq_scan_lut_build_points(const tq_scan_layout *L, const tq_vector_codebook *vb, uint32_t vq_coords,
                              const float *table, const float *q, tq_scan_lut *t);
/* sum_t f[t][nib(v, t)] in float: the unquantized estimate of row v of a
 * block; _rows: of n rows at once, row i being row lanes[i] of blocks[i]
 * (the SIMD kernels take two at a time). */
float tq_scan_lut_exact(const tq_scan_layout *L, const tq_scan_lut *t, const uint8_t *block, unsigned v);
void tq_scan_lut_exact_rows(const tq_scan_layout *L, const tq_scan_lut *t, const uint8_t *const *blocks,
                            const uint8_t *lanes, size_t n, float *out);

/* ------------------------------------------------------------- quantizer */

typedef enum tq_variant { TQ_VARIANT_MSE = 1, TQ_VARIANT_PROD = 2 } tq_variant;
typedef enum tq_correction { TQ_CORRECTION_IP = 1, TQ_CORRECTION_NONE = 2 } tq_correction;

#define TQ_MIN_BITS 1u
#define TQ_MAX_CODE_BITS 4u
#define TQ_DEFAULT_BITS 4u

typedef struct tq_quantizer {
    uint32_t d;
    unsigned bits;            /* total bits per coordinate */
    unsigned mse_bits;        /* bits of the scalar code: bits, or bits-1 for prod */
    tq_variant variant;
    tq_correction correction;
    tq_rotation rot;          /* the TurboQuant rotation */
    tq_rotation qjl;          /* prod only: the sign-sketch projection */
    const tq_codebook *cb;    /* NULL when mse_bits == 0 */
    float table[16];          /* scalar-code centroids, zero-padded */
    /* The vector codebook (tq_quantizer_use_vector_codebook), NULL: scalar
     * codes. It codes the first vq_coords coordinates (d rounded down to
     * its dims); a last nibble short of coordinates keeps scalar codes. */
    const tq_vector_codebook *vcb;
    uint32_t vq_coords;
    float sign_table[16];     /* {-1, +1}: sign bits as a 1-bit code */
    float qjl_scale;          /* 1 / (d * E|u_1|) */
    size_t code_bytes;        /* bit-packed scalar code of one vector */
    size_t sign_bytes;        /* bit-packed sign sketch of one vector (prod) */
    tq_scan_layout code_layout; /* scan layout of the scalar codes (mse_bits > 0) */
    tq_scan_layout sign_layout; /* scan layout of the sign sketch (prod) */
} tq_quantizer;

/* One encoded vector's scalars. */
typedef struct tq_code_scalars {
    float norm;   /* ||x|| */
    float corr;   /* 1/<u, u~> with correction on, else 1 */
    float rnorm;  /* prod: ||u - u~_mse||, else 0 */
} tq_code_scalars;

/* Stored, a set's scalars are planes by scan block: block b's 32 norms,
 * then its 32 corrections, then (prod) its 32 residual norms, so a block's
 * keys read each with plain vector loads and an mse row stores 8 bytes, not
 * 12 (storage format 6; older files are rewritten so at open). Arrays of
 * them always hold whole blocks. */
static inline unsigned tq_scalar_planes(const tq_quantizer *q)
{
    return q->variant == TQ_VARIANT_PROD ? 3u : 2u;
}

/* Floats of one block's scalars. */
static inline size_t tq_scalar_block_floats(const tq_quantizer *q)
{
    return (size_t)TQ_SCAN_BLOCK * tq_scalar_planes(q);
}

static inline const float *tq_scalars_of_block(const tq_quantizer *q, const float *sc, size_t block)
{
    return sc + block * tq_scalar_block_floats(q);
}

static inline tq_code_scalars tq_scalars_get(const tq_quantizer *q, const float *sc, size_t row)
{
    const float *b = tq_scalars_of_block(q, sc, row / TQ_SCAN_BLOCK) + row % TQ_SCAN_BLOCK;
    return (tq_code_scalars){.norm = b[0],
                             .corr = b[TQ_SCAN_BLOCK],
                             .rnorm = q->variant == TQ_VARIANT_PROD ? b[2 * TQ_SCAN_BLOCK] : 0.0f};
}

static inline void tq_scalars_put(const tq_quantizer *q, float *sc, size_t row, const tq_code_scalars *v)
{
    float *b = sc + row / TQ_SCAN_BLOCK * tq_scalar_block_floats(q) + row % TQ_SCAN_BLOCK;
    b[0] = v->norm;
    b[TQ_SCAN_BLOCK] = v->corr;
    if (q->variant == TQ_VARIANT_PROD)
        b[2 * TQ_SCAN_BLOCK] = v->rnorm;
}

/* n rows of scalars one after another (storage formats 1 to 5) into planes
 * (whole blocks, lanes past n zeroed). */
void tq_scalars_from_rows(const tq_quantizer *q, const tq_code_scalars *rows, size_t n, float *sc);

/* Per-thread working memory for encode and decode. */
typedef struct tq_qscratch {
    float *u, *r, *pu;
    uint8_t *packed; /* one bit-packed code, TQ_CODE_PAD spare */
} tq_qscratch;

int tq_quantizer_init(tq_quantizer *q, uint32_t d, unsigned bits, tq_variant variant,
                      tq_correction correction, uint64_t seed, tq_error *err);
/* Code with the vector codebook (see vcodebook.c) instead of scalar codes:
 * an initialized quantizer whose scalar code has 1 or 2 bits and d at
 * least the codebook's dims, else TQ_EARG. */
int tq_quantizer_use_vector_codebook(tq_quantizer *q, tq_error *err);
void tq_quantizer_free(tq_quantizer *q);
int tq_qscratch_init(tq_qscratch *s, uint32_t d);
void tq_qscratch_free(tq_qscratch *s);
/* Encode one finite vector x (caller validated): d unpacked scalar codes
 * (when mse_bits > 0) and, for prod, d sign bits (0/1) as bytes. x may be
 * s->u (a vector built there is not copied again); the rotated unit vector
 * is left in s->u. */
void tq_quantizer_encode(const tq_quantizer *q, const float *x, tq_qscratch *s,
                         uint8_t *codes, uint8_t *signs, tq_code_scalars *out);
/* Reconstruct x~ (length d) from unpacked codes: the variant's decode. */
void tq_quantizer_decode(const tq_quantizer *q, const uint8_t *codes, const uint8_t *signs,
                         const tq_code_scalars *sc, float *x, tq_qscratch *s);

/* A query prepared for scoring: rotated once, projected once for prod, and
 * its scan tables built. One per thread. */
typedef struct tq_query {
    float *qr;    /* R q */
    float *qp;    /* P R q (prod only) */
    float qnorm;  /* ||q||, of the query as tabulated (centered when the codes are) */
    float input_norm; /* ||q|| of the query as given */
    tq_scan_lut code_lut, sign_lut;
    uint8_t *packed; /* scratch for the reference estimator */
    float bias;      /* added to ip/cosine estimates: <q, mean> when centered */
    float *centered; /* scratch: q - mean */
    float *recon;    /* scratch for the reference estimator: u~ (vector codebooks) */
    tq_key_params keys; /* turns this query's block sums into search keys */
} tq_query;

int tq_query_init(tq_query *pq, const tq_quantizer *q);
void tq_query_free(tq_query *pq);
void tq_quantizer_prepare(const tq_quantizer *q, const float *query, tq_query *pq);
/* The unit estimate g ≈ <q, x/||x||> of one vector from its unpacked codes,
 * by decode-and-dot in float (the reference the tables approximate):
 * g = corr * (<Rq, u~> + rnorm * qjl_scale * <PRq, s>). */
float tq_quantizer_estimate(const tq_quantizer *q, const tq_query *pq, const uint8_t *codes,
                            const uint8_t *signs, const tq_code_scalars *sc);
/* Combine the parts of g; the one formula every scorer uses. */
static inline float tq_unit_estimate(const tq_quantizer *q, const tq_code_scalars *sc, float code_dot,
                                     float sign_dot)
{
    if (q->variant == TQ_VARIANT_PROD)
        return sc->corr * (code_dot + sc->rnorm * q->qjl_scale * sign_dot);
    return sc->corr * code_dot;
}

/* ------------------------------------------------------------------ topk */

typedef struct tq_hit {
    uint64_t id;
    float score; /* larger is better inside the index */
} tq_hit;

/* Keeps the best `cap` hits seen; ties go to the lower id, so results are
 * deterministic whatever the scan order. */
typedef struct tq_topk {
    size_t cap, len;
    tq_hit *heap; /* min-heap on (score, -id): the worst kept hit at [0] */
} tq_topk;

int tq_topk_init(tq_topk *t, size_t cap);
void tq_topk_free(tq_topk *t);
void tq_topk_reset(tq_topk *t);
void tq_topk_push(tq_topk *t, uint64_t id, float score);
/* Would a hit with this score and id enter? */
bool tq_topk_accepts(const tq_topk *t, uint64_t id, float score);
/* Sort the kept hits best first into out (len entries; out may be t->heap);
 * the heap is left empty. Returns the count. */
size_t tq_topk_drain(tq_topk *t, tq_hit *out);

/* The scan's candidate collector: the same best `keep` as a tq_topk fed
 * the same hits, at a lower cost per hit. Hits are appended to a buffer of
 * `cap` slots; when it fills, one selection keeps the best `keep` and their
 * worst score becomes the threshold. The caller offers only hits scoring
 * strictly above the threshold, in increasing id order (so a hit that ties
 * the threshold loses to the kept one on id and may be skipped).
 *
 * A hit is packed into one integer that orders as (score, then lower id):
 * the score's bits made monotone in the high half, the id's complement in
 * the low half, so the selection compares integers and never branches on
 * a comparison. Ids must fit in 32 bits (tq_search checks). */
typedef struct tq_collector {
    size_t keep, cap, len;
    float threshold; /* -inf until the first selection */
    uint64_t *buf;   /* cap packed hits */
    tq_hit *out;     /* keep slots: tq_collector_finish's answer */
} tq_collector;

#define TQ_COLLECTOR_MAX_ID 0xFFFFFFFFu

static inline uint64_t tq_collector_pack(uint64_t id, float score)
{
    uint32_t u;
    score = score + 0.0f; /* -0 as +0: the two compare equal */
    memcpy(&u, &score, 4);
    u = u & 0x80000000u ? ~u : u | 0x80000000u;
    return (uint64_t)u << 32 | (uint32_t)~(uint32_t)id;
}

static inline uint64_t tq_collector_id(uint64_t packed)
{
    return (uint32_t)~(uint32_t)packed;
}

static inline float tq_collector_score(uint64_t packed)
{
    uint32_t u = (uint32_t)(packed >> 32);
    u = u & 0x80000000u ? u & 0x7FFFFFFFu : ~u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int tq_collector_init(tq_collector *c, size_t keep);
void tq_collector_free(tq_collector *c);
void tq_collector_reset(tq_collector *c);
/* Keep the best `keep` of the buffer and raise the threshold. */
void tq_collector_cut(tq_collector *c);
static inline void tq_collector_add(tq_collector *c, uint64_t id, float score)
{
    c->buf[c->len] = tq_collector_pack(id, score);
    /* The first threshold as soon as `keep` hits are in, as a heap's;
     * then a cut whenever the buffer fills. */
    if (++c->len == c->cap || c->len == c->keep)
        tq_collector_cut(c);
}
/* tq_collector_add for each row of a block's mask (bit v: id id0 + v,
 * score key[v]) whose score beats the threshold as it stands, in row
 * order, without a branch on it: each hit is written and counted only if
 * it beats (which do is a coin toss a branch predictor loses: it was a
 * sixth of a small search). The collector's fields stay in registers
 * across the rows: one call a row, each store into the buffer made the
 * compiler reload the length and threshold it might alias. */
static inline void tq_collector_offer_rows(tq_collector *c, uint64_t id0, const float *key, uint32_t mask)
{
    uint64_t *buf = c->buf;
    const size_t cap = c->cap, keep = c->keep;
    size_t len = c->len;
    float threshold = c->threshold;
    for (; mask; mask &= mask - 1) {
        const unsigned v = (unsigned)__builtin_ctz(mask);
        const bool in = key[v] > threshold;
        buf[len] = tq_collector_pack(id0 + v, key[v]);
        len += in;
        if ((len == cap) | (in & (len == keep))) {
            c->len = len;
            tq_collector_cut(c);
            len = c->len;
            threshold = c->threshold;
        }
    }
    c->len = len;
}
/* The kept hits into c->out, best first if `sorted` (else in no order);
 * returns their count. */
size_t tq_collector_finish(tq_collector *c, bool sorted);
/* Reorder h[0..n) so that h[0..m) are its m largest, in no order (packed
 * hits or any distinct keys; branch-free quickselect). */
void tq_select_largest(uint64_t *h, size_t n, size_t m);
/* a better than b under the index ordering. */
bool tq_hit_better(const tq_hit *a, const tq_hit *b);

/* ------------------------------------------------------------------ pool */

#define TQ_MAX_THREADS 64u

typedef void (*tq_pool_fn)(void *arg, unsigned part);
/* Run fn(arg, part) for every part in [0, nparts) on the process-wide
 * worker pool and the calling thread; returns when all parts are done.
 * Thread-safe. */
void tq_pool_run(unsigned nparts, tq_pool_fn fn, void *arg);

/* ------------------------------------------------------------------ flat */

typedef enum tq_metric { TQ_METRIC_L2 = 1, TQ_METRIC_IP = 2, TQ_METRIC_COSINE = 3 } tq_metric;

#define TQ_MAX_RERANK 1024u
#define TQ_MAX_K 100000u

/* Data kept beside the codes for re-ranking. */
typedef enum tq_refine {
    TQ_REFINE_NONE = 1,
    TQ_REFINE_CODE8 = 2, /* the rotated unit vector at 8 bits (Lloyd-Max): d bytes */
    TQ_REFINE_FP32 = 3,  /* the float vector (normalized for cosine): 4d bytes */
    TQ_REFINE_FP16 = 4,  /* the same in IEEE half precision: 2d bytes */
} tq_refine;

typedef enum tq_center {
    TQ_CENTER_NONE = 1,
    TQ_CENTER_FIRST_BATCH = 2, /* subtract the mean of the first add's vectors */
    TQ_CENTER_AUTO = 3,        /* the same for l2 and cosine when that add holds at least
                                  TQ_CENTER_AUTO_MIN_ROWS; none for ip */
} tq_center;

#define TQ_CENTER_AUTO_MIN_ROWS 256u

/* What a scalar code's nibble stands for (see vcodebook.c). The numbers
 * are stored (manifest and segment headers, where 0 was written before
 * there was a choice). */
typedef enum tq_codebook_kind {
    TQ_CODEBOOK_SCALAR = 0, /* one Lloyd-Max codebook per coordinate (the paper's) */
    TQ_CODEBOOK_VECTOR = 1, /* 16 points per nibble's coordinates: 1- and 2-bit scalar codes */
} tq_codebook_kind;

typedef struct tq_config {
    uint32_t d;
    tq_metric metric;
    unsigned bits;
    tq_variant variant;
    tq_correction correction;
    uint64_t seed;
    tq_refine refine;
    tq_center center;
    tq_codebook_kind codebook;
} tq_config;

/* The codebook a new index or collection gets when none is asked for. */
tq_codebook_kind tq_default_codebook(const tq_config *cfg);

typedef enum tq_scorer {
    TQ_SCORER_LUT = 1,   /* 8-bit table scan, then float re-score of the best */
    TQ_SCORER_FLOAT = 2, /* float tables for every vector: the reference */
} tq_scorer;

/* Which rows a search may return, asked inside the scan (only for rows
 * whose estimate would enter the candidate heap), from the scan's threads:
 * `part` (0 .. threads-1) lets the callback keep per-thread state. */
typedef struct tq_row_filter {
    bool (*accept)(void *ctx, unsigned part, size_t set, size_t row);
    void *ctx;
} tq_row_filter;

typedef struct tq_search_opts {
    size_t k;
    unsigned rerank;     /* exact re-rank of the best k*rerank; 0 = off */
    tq_scorer scorer;
    unsigned threads;    /* split the scan over this many threads; 0 or 1 = the caller only */
    const tq_row_filter *filter; /* NULL: every live row */
    uint32_t nprobe;     /* partitioned sets: scan the rows of this many partitions nearest the
                            query (more while fewer than k rows pass); 0 = every row */
    float target_recall; /* in (0, 1]: probe as many partitions as the sets' probe curves say
                            that recall needs (nprobe is then not used); 0 = off */
    bool first_stage;    /* the LUT scorer's first-stage candidates, ranked by their 7-bit
                            keys as a re-rank receives them (no float-table stage): the
                            calibration's view of what a re-rank of some depth keeps */
} tq_search_opts;

/* ----------------------------------------------------------------- codec */

/* What encoding rows and searching them both need: the configuration, its
 * quantizer, the 8-bit refine codebook and the centering mean. Every set of
 * rows searched together was encoded by one codec (or an identical one:
 * everything here follows from the config and the mean). */
typedef struct tq_codec {
    tq_config cfg;
    tq_quantizer q;
    const tq_codebook *cb8; /* refine code8 */
    float *mean;            /* centering: d floats once set, else NULL */
} tq_codec;

/* Encoded rows in the scan layout, struct of arrays, row i of each array
 * being the same vector: the unit a search reads. Whoever made them owns
 * the memory (a growing in-memory index, a mapped segment file). Arrays
 * hold whole blocks of TQ_SCAN_BLOCK rows; rows past n are zero nibbles. */
typedef struct tq_rows {
    size_t n;
    const uint8_t *code_blocks;   /* ceil(n/32) * q.code_layout.block_bytes (mse_bits > 0) */
    const uint8_t *sign_blocks;   /* ceil(n/32) * q.sign_layout.block_bytes (prod) */
    const float *sc;              /* ceil(n/32) blocks of scalar planes (tq_scalar_planes) */
    const float *vectors;         /* n * d (refine fp32) */
    const uint8_t *refine8;       /* n * d (refine code8) */
    const uint16_t *half;         /* n * d (refine fp16) */
    const float *lengths;         /* n (cosine): each input vector's norm before normalizing, so
                                     a get can give it back at its scale; NULL: not kept (rows
                                     stored before it was, or an index that never gets) */
    const uint32_t *deleted;      /* bit v of word b set: row 32b+v is deleted; NULL: none are;
                                     read atomically, so a writer may set bits during a search */
    size_t ndeleted;              /* set bits in deleted */
    bool growing;                 /* a writer is filling rows past n: the last, partial block is
                                     read a row at a time, never as a whole block */
    const struct tq_partitions *parts; /* rows grouped by partition (see partition); NULL: flat */
} tq_rows;

/* The same arrays, writable, for encoding into. */
typedef struct tq_rows_out {
    uint8_t *code_blocks, *sign_blocks;
    float *sc;                    /* scalar planes, whole blocks */
    float *vectors;
    uint8_t *refine8;
    uint16_t *half;
    float *lengths;               /* cosine; NULL: not kept */
} tq_rows_out;

/* Per-thread working memory for encoding rows. */
typedef struct tq_encode_scratch {
    tq_qscratch q;
    uint8_t *codes, *signs; /* one vector's unpacked codes */
    float *tmp;             /* one normalized or centered vector */
} tq_encode_scratch;

#define TQ_HALF_MAX 65504.0f

/* Free every array of heap-allocated rows (tq_malloc'd) and clear them. */
void tq_rows_out_free(tq_rows_out *rows);
/* Zeroed heap arrays for `rows` rows (whole blocks) of what c keeps. */
int tq_rows_out_alloc(const tq_codec *c, size_t rows, tq_rows_out *out);
/* The first n rows of writable arrays, as the search reads them. */
tq_rows tq_rows_view(const tq_rows_out *out, size_t n);

/* Validate cfg and set up the quantizer (and refine codebook); no mean. */
int tq_codec_init(tq_codec *c, const tq_config *cfg, tq_error *err);
void tq_codec_free(tq_codec *c);
/* Whether an add of n vectors to an index holding `stored` rows (live or
 * not) takes the centering mean from them: only the first add can. */
static inline bool tq_codec_centers_add(const tq_codec *c, size_t stored, size_t n)
{
    if (c->mean || stored > 0 || n == 0)
        return false;
    return c->cfg.center == TQ_CENTER_FIRST_BATCH ||
           (c->cfg.center == TQ_CENTER_AUTO && c->cfg.metric != TQ_METRIC_IP && n >= TQ_CENTER_AUTO_MIN_ROWS);
}
/* The centering in effect, for reports: auto says what it became once
 * rows are stored (first-batch with a mean, else none). */
static inline tq_center tq_codec_center_in_effect(const tq_codec *c, bool stored)
{
    if (c->cfg.center != TQ_CENTER_AUTO)
        return c->cfg.center;
    return c->mean ? TQ_CENTER_FIRST_BATCH : stored ? TQ_CENTER_NONE : TQ_CENTER_AUTO;
}
/* Set the centering mean from n vectors (normalized first for cosine):
 * their mean, or past 16,384 that of 16,384 of them evenly spaced. The
 * rows it reads are checked as tq_codec_check_vectors would (the message
 * names the row's index); on error the mean is left as it was. */
int tq_codec_set_mean(tq_codec *c, const float *const *rows, size_t n, tq_error *err);
/* Forget the mean (a first add that took it was rejected): uncentered. */
void tq_codec_drop_mean(tq_codec *c);
int tq_encode_scratch_init(tq_encode_scratch *s, uint32_t d);
void tq_encode_scratch_free(tq_encode_scratch *s);
/* Check vectors [from, to) of x: finite, norm representable, nonzero for
 * cosine. The message names the vector's index in x. */
int tq_codec_check_vectors(const tq_codec *c, const float *x, size_t from, size_t to, tq_error *err);
/* Encode one checked vector into row `row` of out. */
void tq_codec_encode(const tq_codec *c, tq_encode_scratch *s, const float *v, const tq_rows_out *out, size_t row);
/* Put rows [from, from + n) back to zero nibbles (their scalars and refine
 * data are left: nothing reads them past the row count). */
void tq_codec_clear_rows(const tq_codec *c, const tq_rows_out *out, size_t from, size_t n);
/* One encoded row as a flat byte string (its code and sign columns, its
 * scalars, its refine data, and under cosine the input's length): what the
 * log stores, so that replay copies rows instead of encoding them again. */
size_t tq_codec_row_bytes(const tq_codec *c);
/* Rows saved before cosine kept the length (log records of type 3 and
 * older): their size, and the current row made of one (the length taken
 * as 1, the unit vector being all that was kept; old and row may be the
 * same buffer, of tq_codec_row_bytes). */
size_t tq_codec_row_bytes_v2(const tq_codec *c);
void tq_codec_row_from_v2(const tq_codec *c, const uint8_t *old, uint8_t *row);
void tq_codec_row_save(const tq_codec *c, const tq_rows *rows, size_t row, uint8_t *dst);
void tq_codec_row_load(const tq_codec *c, const tq_rows_out *out, size_t row, const uint8_t *src);
/* Row `from` of src into row `to` of dst: the same as saving and loading
 * it, column to column (gathers and compactions move millions of rows; the
 * byte string in between doubled their copying). The rows may share arrays
 * but not be the same row. */
void tq_codec_row_copy(const tq_codec *c, const tq_rows *src, size_t from, const tq_rows_out *dst, size_t to);

/* Reading storage format 1 (see tq_scan_layout_init_format1). Only a codec
 * whose codes are 3 bits (mse 3, or prod 4) stored them differently: for
 * the others every function below is the identity. */
bool tq_codec_format1_differs(const tq_codec *c);
/* Code blocks of format 1 (blocks of them) rewritten in the current layout
 * into out (blocks * code_layout.block_bytes). */
void tq_codec_blocks_from_format1(const tq_codec *c, const uint8_t *old, size_t blocks, uint8_t *out);
/* A saved row of format 1: its size, and its conversion to a row of
 * tq_codec_row_bytes_v2. scratch: tq_codec_format1_scratch_bytes(c). */
size_t tq_codec_row_bytes_format1(const tq_codec *c);
size_t tq_codec_format1_scratch_bytes(const tq_codec *c);
void tq_codec_row_from_format1(const tq_codec *c, const uint8_t *old, uint8_t *row, uint8_t *scratch);
/* Row `row`'s refine data (tq_codec_refine_bytes_per_vector bytes), or
 * NULL when the rows keep none. */
const uint8_t *tq_codec_refine_row(const tq_codec *c, const tq_rows *rows, size_t row);
/* Bytes per vector of codes and scalars, and of refine data. */
size_t tq_codec_bytes_per_vector(const tq_codec *c);
size_t tq_codec_refine_bytes_per_vector(const tq_codec *c);
/* Row `row` as a vector of the space the codes were made from (the input
 * vector, normalized under cosine): exact from fp32 refine data, to half
 * precision from fp16, decoded from code8 or else from the scan codes. */
void tq_codec_reconstruct(const tq_codec *c, const tq_rows *rows, size_t row, tq_encode_scratch *s, float *x);
/* Row `row`'s unpacked codes (d bytes each; signs for prod) and scalars. */
void tq_codec_get_codes(const tq_codec *c, const tq_rows *rows, size_t row, uint8_t *codes, uint8_t *signs,
                        tq_code_scalars *sc);

/* ---------------------------------------------------------------- search */

/* Best min(k, live rows) hits for each of nq queries (row-major) over the
 * row sets together, in one pass over the codes; deleted rows are skipped
 * inside the scan. Results of query i go to out + i*k, best first, their
 * count to counts[i]. A hit's id numbers rows across the sets in order:
 * row r of set s is (rows in sets before s) + r. rerank > 0 re-scores the
 * best k*rerank estimates on the refine data. Scores are in the metric's
 * units: squared L2 distance, inner product, or cosine similarity. Every
 * query is checked before any is scanned; on error nothing is written.
 * Only reads: any number may run at once over the same rows. */
int tq_search(const tq_codec *c, const tq_rows *sets, size_t nsets, const float *queries, size_t nq,
              const tq_search_opts *opts, tq_hit *out, size_t *counts, tq_error *err);

/* ------------------------------------------------------------- partition */

/* Candidates the LUT scorer's first stage keeps for `wanted` (k, or k
 * times the re-rank depth): a margin for the 8-bit tables' rounding (see
 * tq_search). The calibration counts a re-rank's reach with it too. */
static inline size_t tq_first_stage_candidates(size_t wanted)
{
    return wanted + wanted / 8 + 8;
}

/* Without re-ranking, the candidates the float re-score (stage 2) gets for
 * k results: those it reorders are the 8-bit tables' near-ties only (see
 * search.c). */
static inline size_t tq_rescore_candidates(size_t k)
{
    return k + k / 8 + 4;
}

#define TQ_MAX_NLIST 65536u
#define TQ_MAX_CURVE 48u
#define TQ_CURVE_K 10u
#define TQ_CURVE_STRIDE (1u + TQ_CURVE_K)

/* Re-rank depths the calibration measures the full scan's recall at:
 * 1 << i for i < TQ_CALIB_DEPTHS (1 to 16). */
#define TQ_CALIB_DEPTHS 5u

/* The centroids as a query ranks them: each dimension j shifted by its
 * midrange over the centroids and scaled into [-127, 127] (c_pj ~ mid_j +
 * scale_j code_pj), stored for the 8-bit kernel (dot_q8_blocks' layout,
 * zero past nlist). Derived when the partitions are made or opened, never
 * stored: the format keeps the float centroids. */
typedef struct tq_centroid_table {
    uint32_t nlist, d, groups; /* groups: dimensions by fours, rounded up */
    float *mid, *scale;        /* d each */
    int32_t *code_sums;        /* nlist rounded up to 16: sum over j of code_pj */
    int8_t *codes;             /* (nlist + 15) / 16 blocks of groups * 64 bytes */
} tq_centroid_table;

tq_centroid_table *tq_centroid_table_new(const float *centroids, uint32_t nlist, uint32_t d);
void tq_centroid_table_free(tq_centroid_table *t);
/* Rows tq_centroid_assign sums against the table at once. */
#define TQ_CENTROID_ROWS 4
/* Bytes of the scratch tq_centroid_dots (m = 1) or tq_centroid_assign (m
 * = TQ_CENTROID_ROWS) needs at dimension d and nlist. */
size_t tq_centroid_scratch_bytes(uint32_t nlist, uint32_t d, size_t m);
/* out[p] ~ <query, centroid p> for every p < nlist: the query quantized
 * to 8 bits with one scale (the centroids' dimension scales folded in),
 * the integer dot products exact, so every CPU ranks alike. */
void tq_centroid_dots(const tq_centroid_table *t, const float *query, void *scratch, float *out);
/* best[i] = the lowest p maximizing <row i, centroid p> - penalty[p]
 * (penalty NULL: 0; l2 passes the half norms) by the same 8-bit dot
 * products, for m rows of d floats (how a row is assigned to its
 * partition): TQ_CENTROID_ROWS rows share each pass over the table. */
void tq_centroid_assign(const tq_centroid_table *t, const float *rows, size_t m, const float *penalty,
                        void *scratch, uint32_t *best);

/* A set of rows stored grouped by partition: rows [offsets[p],
 * offsets[p + 1]) are those nearest to centroid p. */
typedef struct tq_partitions {
    uint32_t nlist;
    const float *centroids;   /* nlist * d, in the space the codes were made from */
    const tq_centroid_table *table; /* the same, as a query ranks them */
    const float *half_norms;  /* nlist: ||c||^2 / 2 */
    const uint32_t *offsets;  /* nlist + 1, offsets[0] = 0, offsets[nlist] = rows */
    /* The probe curve: npoints points of TQ_CURVE_STRIDE floats, the share
     * of partitions probed, then for K = 1 .. TQ_CURVE_K the share of a
     * query's K nearest rows a search probing them finds relative to the
     * full scan (at tq_target_rerank's depth; segments partitioned before
     * stop 24: the share inside them), 1 at share 1, not always rising;
     * and the
     * recall@10 the full scan reaches (at tq_target_rerank's depth), what probing can at best keep. npoints 0: not calibrated. */
    uint32_t npoints;
    const float *curve;
    float quality;
    /* quality_at[i][K - 1]: the share of a query's K nearest (K = 1 ..
     * TQ_CURVE_K) that the full scan keeps re-ranking at depth 1 << i (i <
     * TQ_CALIB_DEPTHS; without refine data the codes alone, at i = 0): how
     * a search for a target recall picks its depth, K being the share of
     * the 10 nearest a set holds when several are searched together. All
     * 0: not measured (segments written before format 5). */
    float quality_at[TQ_CALIB_DEPTHS][TQ_CURVE_K];
} tq_partitions;

/* What partitioning a set of rows produces (owned arrays). */
typedef struct tq_partitioning {
    uint32_t nlist;
    float *centroids, *half_norms;
    tq_centroid_table *table;
    uint32_t *offsets;
    uint32_t *order;          /* rows: the row that goes to position i */
    uint32_t npoints;
    float *curve;             /* TQ_MAX_CURVE * TQ_CURVE_STRIDE */
    float quality;
    float quality_at[TQ_CALIB_DEPTHS][TQ_CURVE_K];
} tq_partitioning;

/* The re-rank depth a search for a target recall uses at least, the
 * calibration's: 0 without refine data; else deeper the coarser the
 * codes (16 at 1 bit, 8 at 2, 4 from 3), the depths at which each width
 * reaches its best recall per time on the shared datasets. */
unsigned tq_target_rerank(const tq_codec *c);
#define TQ_MIN_PARTITION_ROWS 64u

/* The default partition count for rows encoded by c: 4 sqrt(rows),
 * bounded so partitions average at least TQ_MIN_PARTITION_ROWS rows and
 * the centroids a query scores cost no more than the scan they save (see
 * partition.c). */
uint32_t tq_partition_default_nlist(const tq_codec *c, size_t rows);
/* Cluster the rows into nlist partitions (fewer if there are fewer rows):
 * seeded, deterministic, the same on every CPU and thread count. `stop`
 * (NULL: none), read atomically, cuts the work short when it turns true:
 * TQ_EBUSY, nothing made. */
int tq_partition_rows(const tq_codec *c, const tq_rows *rows, uint32_t nlist, uint64_t seed, unsigned threads,
                      const bool *stop, tq_partitioning *out, tq_error *err);
void tq_partitioning_free(tq_partitioning *p);
tq_partitions tq_partitioning_view(const tq_partitioning *p);
/* half_norms[p] = ||centroid p||^2 / 2 as the search computes it. */
void tq_partition_half_norms(const float *centroids, uint32_t nlist, uint32_t d, float *half_norms);
/* How near a centroid is to a query from their dot product: larger is
 * nearer, for each metric. l2: ||q - c||^2 = ||q||^2 - 2 (<q, c> -
 * ||c||^2 / 2), so the larger <q, c> - ||c||^2 / 2 the nearer; ip and
 * cosine rank by <q, c>. Inline: a query scores every partition. */
static inline float tq_partition_score(tq_metric metric, float dot, float half_norm)
{
    return metric == TQ_METRIC_L2 ? dot - half_norm : dot;
}
/* The share of p's partitions (0..1] a search probes to find `recall` of
 * a query's k (1..TQ_CURVE_K, fractional between the curves) nearest rows
 * of p, by its probe curve (1 without one, or when the recall is beyond
 * reach). */
double tq_partition_share(const tq_partitions *p, double recall, double k, float quality);
/* The share of a query's k (1..TQ_CURVE_K, fractional between the
 * measured ones) nearest rows of p that the full scan keeps at re-rank
 * depth `rerank`, as calibrated: the depth's own figures when measured,
 * else `quality` (tq_target_rerank's depth, recall@10). */
float tq_partition_quality(const tq_partitions *p, unsigned rerank, double k);
/* New heap rows holding rows order[0..n) of `rows` in that order. */
int tq_rows_gather(const tq_codec *c, const tq_rows *rows, const uint32_t *order, size_t n, tq_rows_out *out);
/* The same reordering of n rows in place (order a permutation): no second
 * copy of the rows, for sets gathered into memory already. */
int tq_rows_permute(const tq_codec *c, const tq_rows_out *rows, size_t n, const uint32_t *order);

/* ------------------------------------------------------------------ flat */

/* An in-memory index: one growing set of rows. */
typedef struct tq_flat tq_flat;

int tq_flat_create(const tq_config *cfg, tq_flat **out, tq_error *err);
void tq_flat_free(tq_flat *f);
/* Validate and encode n vectors (row-major, d floats each). All or nothing:
 * on error nothing is added. Not concurrent with other calls on f. */
int tq_flat_add(tq_flat *f, const float *x, size_t n, tq_error *err);
size_t tq_flat_count(const tq_flat *f);
const tq_codec *tq_flat_codec(const tq_flat *f);
/* The rows of an index never partitioned, for tq_search or reading codes
 * back; valid until the next add. */
tq_rows tq_flat_rows(const tq_flat *f);
/* Reorder every vector added so far into nlist partitions (0: the default
 * for the count), training on `threads` threads; vectors added later are
 * searched flat until the next call. Ids do not change. Exclusive. */
int tq_flat_partition(tq_flat *f, uint32_t nlist, unsigned threads, tq_error *err);
/* Partitions of the head; 0 if never partitioned. */
uint32_t tq_flat_nlist(const tq_flat *f);
/* tq_search over the index's rows. Safe from many threads at once. */
int tq_flat_search_batch(const tq_flat *f, const float *queries, size_t nq, const tq_search_opts *opts,
                         tq_hit *out, size_t *counts, tq_error *err);

/* Check that x[0..n) is finite; on failure report the first bad index. */
int tq_check_finite(const float *x, size_t n, size_t *bad);

#endif
