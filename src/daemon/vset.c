/*
 * The vector-set commands of Redis 8 (VADD, VSIM, VREM, VCARD, VDIM, VEMB,
 * VINFO, VSETATTR, VGETATTR, VISMEMBER, VRANDMEMBER, VRANGE, VLINKS) over
 * collections, and the extensions for what Redis cannot say (TQ.CREATE,
 * VSIM ... RERANK).
 *
 * Syntax, replies and error strings follow Redis where we support a
 * feature. What differs, because the index is a TurboQuant scan and not
 * an HNSW graph:
 *   - A set made by VADD is cosine with 4-bit codes plus refine data for
 *     re-ranking chosen by the quantization option: Q8 (the default, as in
 *     Redis) keeps 8-bit codes (d bytes), NOQUANT keeps the fp32 vector,
 *     BIN keeps 1-bit codes and nothing else. A later VADD naming another
 *     of the three is refused with Redis's "quantization mismatch" error.
 *   - EF at VSIM sets the re-rank depth: the best max(EF, COUNT) code
 *     estimates are re-scored on the refine data (rounded up to a multiple
 *     of COUNT); without EF, TQD_DEFAULT_RERANK * COUNT are. EF and M at
 *     VADD, CAS and NOTHREAD shape a graph we do not have: accepted,
 *     checked, ignored.
 *   - TRUTH scores every element with float tables and re-ranks the
 *     deepest list allowed: exact whenever the set has fp32 refine data and
 *     at most COUNT * TQVEC_MAX_RERANK elements.
 *   - FILTER runs inside the scan, so VSIM returns min(COUNT, matching)
 *     elements at any selectivity; FILTER-EF is accepted and not needed.
 *   - A set's sealed segments are partitioned (k-means, in the background),
 *     and VSIM scans the partitions its calibration says a recall@10 of
 *     TQD_DEFAULT_RECALL needs; VSIM ... RECALL r asks for another recall,
 *     VSIM ... NPROBE n for n partitions (0: every element, as TRUTH).
 *   - REDUCE projects with seeded random signs (Achlioptas), kept as a seed
 *     beside the collection; one-dimensional sets are stored padded to
 *     two dimensions (a rotation needs two). VDIM and VEMB report what
 *     Redis reports: the reduced dimension and vector, or the one
 *     coordinate.
 *   - VEMB returns the vector at the scale it was added with, from the
 *     finest data kept (exact with NOQUANT); VEMB RAW returns the set's
 *     code name, the vector as an FP32 blob and its L2 norm.
 *   - Scores: cosine sets report 1 - distance/2 in [0, 1] as Redis does;
 *     l2 and ip sets (TQ.CREATE) report the squared distance or the inner
 *     product, and EPSILON needs a cosine set.
 *   - VINFO gives Redis's fields with the nearest true values (hnsw-m 0 and
 *     max-level 0: there is no graph; hnsw-max-node-uid counts stored rows)
 *     and ours after them ("encoding" is our code layout).
 *   - VLINKS answers one level, the element's nearest neighbours, since
 *     there are no links; VRANGE costs a pass over every name (names are
 *     hashed, not kept in order).
 *   - A set disappears when VREM removes its last element, as in Redis.
 */
#include "daemon.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Random seeds for VRANDMEMBER: distinct per call, no global lock. */
static uint64_t random_seed(void)
{
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30)) + atomic_fetch_add(&counter, 0x9e3779b97f4a7c15ull);
}

/* "FP32 blob" or "VALUES n v1 .. vn" at argv[at]: a malloc'd vector, or
 * NULL (the caller replies "invalid vector specification"). */
static float *parse_vector(const tqd_arg *argv, size_t argc, size_t at, size_t *dim, size_t *consumed)
{
    if (at + 1 >= argc)
        return NULL;
    if (tqd_arg_is(&argv[at], "FP32")) {
        const tqd_arg *blob = &argv[at + 1];
        if (blob->len < 4 || blob->len % 4)
            return NULL;
        float *v = malloc(blob->len);
        if (!v)
            return NULL;
        memcpy(v, blob->p, blob->len); /* little-endian, as every Redis client sends it */
        *dim = blob->len / 4;
        *consumed = 2;
        return v;
    }
    if (tqd_arg_is(&argv[at], "VALUES")) {
        long long n;
        if (!tqd_arg_ll(&argv[at + 1], &n) || n < 1 || (unsigned long long)n > argc - at - 2)
            return NULL;
        float *v = malloc((size_t)n * sizeof(float));
        if (!v)
            return NULL;
        for (long long j = 0; j < n; j++) {
            double x;
            if (!tqd_arg_double(&argv[at + 2 + j], &x)) {
                free(v);
                return NULL;
            }
            v[j] = (float)x;
        }
        *dim = (size_t)n;
        *consumed = 2 + (size_t)n;
        return v;
    }
    return NULL;
}

static void reply_dim_mismatch(tqd_reply *r, size_t got, uint32_t has)
{
    tqd_reply_error(r, "ERR Vector dimension mismatch - got %zu but set has %u", got, has);
}

/* The quantization options of VADD as collection settings. */
enum { QUANT_UNSET, QUANT_Q8, QUANT_NOQUANT, QUANT_BIN };

static int quant_of(const tqd_vset *v)
{
    if (v->refine == TQVEC_REFINE_FP32)
        return QUANT_NOQUANT;
    if (v->refine == TQVEC_REFINE_CODE8)
        return QUANT_Q8;
    if (v->bits == 1 && v->refine == TQVEC_REFINE_NONE)
        return QUANT_BIN;
    return QUANT_UNSET; /* made by TQ.CREATE with other settings */
}

static const char *code_name(const tqd_vset *v)
{
    static const char *const names[] = {"tq1", "tq2", "tq3", "tq4"};
    static _Thread_local char buf[32];
    snprintf(buf, sizeof(buf), "%s+%s", v->bits >= 1 && v->bits <= 4 ? names[v->bits - 1] : "tq",
             tqd_refine_name(v->refine));
    return buf;
}

/* The reply to an element write (VREM, VSETATTR), as Redis gives it:
 * 1 when done, 0 when there is no such key or element. */
static void reply_element_write(tqd_reply *r, int rc, const tqvec_error *err)
{
    if (rc == TQVEC_OK)
        tqd_reply_bool(r, true);
    else if (rc == TQVEC_ENOTFOUND)
        tqd_reply_bool(r, false);
    else
        tqd_reply_tqvec_error(r, err);
}

/* --------------------------------------------------------------- shape */

/* The dimension a set's vectors arrive in (VADD, VSIM FP32/VALUES). */
static uint32_t input_dim(const tqd_vset *v)
{
    return v->shape.kind == TQD_SHAPE_PLAIN ? v->dim : v->shape.input_dim;
}

/* The dimension VDIM, VEMB and VINFO report: the stored one, except that a
 * one-dimensional set is padded to two inside. */
static uint32_t reported_dim(const tqd_vset *v)
{
    return v->shape.kind == TQD_SHAPE_PAD ? 1 : v->dim;
}

/* REDUCE's projection holds at most this many entries (64 MB). */
#define MAX_PROJECTION_ENTRIES ((size_t)1 << 24)

/* The REDUCE projection, rows of input_dim entries, one per stored
 * coordinate: random signs scaled by 1/sqrt(stored dim) (Achlioptas's
 * projection, which keeps angles as a Gaussian one does), the signs the
 * bits of splitmix64 from the set's seed. Integer arithmetic only, so
 * every build makes the same matrix from the same seed. Built on first
 * use; NULL when out of memory. */
static const float *projection_of(tqd_vset *v)
{
    float *p = atomic_load(&v->projection);
    if (p)
        return p;
    const size_t in = v->shape.input_dim, out = v->dim;
    if (!(p = malloc(in * out * sizeof(float))))
        return NULL;
    const float scale = 1.0f / sqrtf((float)out);
    uint64_t state = v->shape.seed, bits = 0;
    for (size_t i = 0; i < in * out; i++) {
        if (i % 64 == 0) {
            uint64_t z = (state += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            bits = z ^ (z >> 31);
        }
        p[i] = (bits >> (i % 64) & 1) ? scale : -scale;
    }
    float *none = NULL;
    if (!atomic_compare_exchange_strong(&v->projection, &none, p)) {
        free(p); /* another thread built it first */
        p = none;
    }
    return p;
}

/* A vector arriving at a shaped set (input_dim floats) as the set stores
 * it (v->dim floats, malloc'd); NULL when out of memory. A plain set
 * stores vectors as they arrive. */
static float *stored_form(tqd_vset *v, const float *in)
{
    float *out = malloc(v->dim * sizeof(float));
    if (!out)
        return NULL;
    if (v->shape.kind == TQD_SHAPE_PAD) {
        out[0] = in[0];
        out[1] = 0.0f;
    } else {
        const float *p = projection_of(v);
        const size_t n = v->shape.input_dim;
        if (!p) {
            free(out);
            return NULL;
        }
        for (uint32_t i = 0; i < v->dim; i++) {
            float acc = 0.0f;
            for (size_t j = 0; j < n; j++)
                acc += p[i * n + j] * in[j];
            out[i] = acc;
        }
    }
    return out;
}

/* ---------------------------------------------------------------- VADD */

/* The element's current attributes (malloc'd, *len 0 and NULL if none). */
static int current_attrs(tqd_vset *v, const tqd_arg *elem, char **out, size_t *len, bool *exists,
                         tqvec_error *err)
{
    *out = NULL;
    *len = 0;
    size_t n = 0;
    int rc = tqvec_collection_get(v->c, elem->p, elem->len, NULL, NULL, 0, &n, err);
    if (exists)
        *exists = rc == TQVEC_OK;
    if (rc == TQVEC_ENOTFOUND || (rc == TQVEC_OK && n == 0))
        return TQVEC_OK;
    if (rc)
        return rc;
    if (!(*out = malloc(n)))
        return TQVEC_ENOMEM;
    if ((rc = tqvec_collection_get(v->c, elem->p, elem->len, NULL, *out, n, len, err))) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* One VADD's arguments. */
typedef struct vadd_req {
    float *vec;               /* as given (input_dim floats), malloc'd */
    size_t dim;
    long long reduce;         /* REDUCE's dimension, 0 without */
    const tqd_arg *elem, *attr;
    int quant;
} vadd_req;

/* Parse a VADD; false after replying with the error. */
static bool vadd_parse(const tqd_arg *argv, size_t argc, vadd_req *a, tqd_reply *r)
{
    *a = (vadd_req){.quant = QUANT_UNSET};
    /* REDUCE dim comes right before the vector, as in Redis. */
    size_t vec_at = 2;
    if (tqd_arg_is(&argv[2], "REDUCE")) {
        if (!tqd_arg_ll(&argv[3], &a->reduce) || a->reduce < TQVEC_MIN_DIM || a->reduce > TQVEC_MAX_DIM) {
            tqd_reply_error(r, "ERR invalid vector specification");
            return false;
        }
        vec_at = 4;
    }
    size_t consumed;
    if (!(a->vec = parse_vector(argv, argc, vec_at, &a->dim, &consumed))) {
        tqd_reply_error(r, "ERR invalid vector specification");
        return false;
    }
    const size_t elem_at = vec_at + consumed;
    if (a->reduce && (size_t)a->reduce >= a->dim) {
        tqd_reply_error(r, "ERR REDUCE dimension %lld must be below the vector's %zu", a->reduce, a->dim);
    } else if (a->reduce && (size_t)a->reduce * a->dim > MAX_PROJECTION_ENTRIES) {
        tqd_reply_error(r, "ERR REDUCE from %zu to %lld needs a projection above %zu entries", a->dim, a->reduce,
                        MAX_PROJECTION_ENTRIES);
    } else if (a->dim > TQVEC_MAX_DIM) {
        tqd_reply_error(r, "ERR vector dimension %zu is above the limit %d", a->dim, TQVEC_MAX_DIM);
    } else if (elem_at >= argc) {
        tqd_reply_error(r, "ERR wrong number of arguments for 'vadd' command");
    } else {
        a->elem = &argv[elem_at];
        for (size_t j = elem_at + 1; j < argc; j++) {
            long long n;
            if (tqd_arg_is(&argv[j], "CAS")) {
                continue;
            } else if (tqd_arg_is(&argv[j], "NOQUANT")) {
                a->quant = QUANT_NOQUANT;
            } else if (tqd_arg_is(&argv[j], "Q8")) {
                a->quant = QUANT_Q8;
            } else if (tqd_arg_is(&argv[j], "BIN")) {
                a->quant = QUANT_BIN;
            } else if (tqd_arg_is(&argv[j], "EF") && j + 1 < argc) {
                if (!tqd_arg_ll(&argv[++j], &n) || n <= 0 || n > 1000000) {
                    tqd_reply_error(r, "ERR invalid EF");
                    goto fail;
                }
            } else if (tqd_arg_is(&argv[j], "M") && j + 1 < argc) {
                if (!tqd_arg_ll(&argv[++j], &n) || n < 4 || n > 4096) {
                    tqd_reply_error(r, "ERR invalid M");
                    goto fail;
                }
            } else if (tqd_arg_is(&argv[j], "SETATTR") && j + 1 < argc) {
                a->attr = &argv[++j];
            } else {
                tqd_reply_error(r, "ERR invalid option after element");
                goto fail;
            }
        }
        return true;
    }
fail:
    free(a->vec);
    a->vec = NULL;
    return false;
}

/* Whether the parsed VADD fits the existing set v; false after replying
 * with the error. */
static bool vadd_fits(const tqd_vset *v, const vadd_req *a, tqd_reply *r)
{
    if (v->dropped) {
        tqd_reply_error(r, "ERR the key was deleted while being written; retry");
    } else if (input_dim(v) != a->dim) {
        reply_dim_mismatch(r, a->dim, input_dim(v));
    } else if (a->reduce && (v->shape.kind != TQD_SHAPE_REDUCE || v->dim != a->reduce)) {
        tqd_reply_error(r, "ERR REDUCE %lld does not match the set (%s)", a->reduce,
                        v->shape.kind == TQD_SHAPE_REDUCE ? "reduced to another dimension" : "made without REDUCE");
    } else if (a->quant != QUANT_UNSET && a->quant != quant_of(v)) {
        tqd_reply_error(r, "ERR asked quantization mismatch with existing vector set");
    } else {
        return true;
    }
    return false;
}

/* The element VADD adds: its stored form and its attributes (without
 * SETATTR an update keeps the element's attributes, and an empty SETATTR
 * removes them, as in Redis). *stored (a shaped set's converted vector,
 * else NULL) and *keep are the caller's to free;
 * *exists (when asked) tells whether the element is there already. */
static int vadd_element(tqd_vset *v, const vadd_req *a, tqvec_element *e, float **stored, char **keep,
                        bool *exists, tqvec_error *err)
{
    size_t keep_len = 0;
    int rc = TQVEC_OK;
    if (!a->attr)
        rc = current_attrs(v, a->elem, keep, &keep_len, exists, err);
    else if (exists)
        *exists = tqvec_collection_get(v->c, a->elem->p, a->elem->len, NULL, NULL, 0, NULL, NULL) == TQVEC_OK;
    if (rc)
        return rc;
    if (v->shape.kind != TQD_SHAPE_PLAIN && !(*stored = stored_form(v, a->vec))) {
        snprintf(err->message, sizeof(err->message), "out of memory");
        return err->code = TQVEC_ENOMEM;
    }
    *e = (tqvec_element){.key = a->elem->p, .key_len = a->elem->len, .vector = *stored ? *stored : a->vec,
                         .attrs = a->attr ? (a->attr->len ? a->attr->p : NULL) : *keep,
                         .attrs_len = a->attr ? a->attr->len : keep_len};
    return TQVEC_OK;
}

static void cmd_vadd(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    vadd_req a;
    if (!vadd_parse(argv, argc, &a, r))
        return;
    /* A new set's shape: REDUCE's projection, or one dimension padded. */
    tqd_shape shape = {0};
    if (a.reduce)
        shape = (tqd_shape){.kind = TQD_SHAPE_REDUCE, .input_dim = (uint32_t)a.dim, .seed = random_seed()};
    else if (a.dim == 1)
        shape = (tqd_shape){.kind = TQD_SHAPE_PAD, .input_dim = 1};
    tqvec_collection_options create = {0};
    create.dim = (uint32_t)(a.reduce ? (size_t)a.reduce : a.dim == 1 ? 2 : a.dim);
    create.metric = TQVEC_METRIC_COSINE;
    create.bits = a.quant == QUANT_BIN ? 1 : 4;
    create.refine = a.quant == QUANT_BIN       ? TQVEC_REFINE_NONE
                    : a.quant == QUANT_NOQUANT ? TQVEC_REFINE_FP32
                                               : TQVEC_REFINE_CODE8;
    tqvec_error err = {0};
    tqd_vset *v = NULL;
    bool created;
    size_t added = 0;
    char *keep = NULL;
    float *stored = NULL;
    int rc;
    /* A drop may win the race between finding the key and locking it;
     * then the key is new again. */
    for (int attempt = 0;; attempt++) {
        if ((rc = tqd_keyspace_get_or_create(cl->db, argv[1].p, argv[1].len, &create, &shape, &v, &created,
                                             &err))) {
            tqd_reply_tqvec_error(r, &err);
            goto out;
        }
        pthread_mutex_lock(&v->write_lock);
        if (!v->dropped || attempt == 3)
            break;
        pthread_mutex_unlock(&v->write_lock);
        tqd_vset_release(v);
        v = NULL;
    }
    tqvec_element e;
    if (vadd_fits(v, &a, r)) {
        if ((rc = vadd_element(v, &a, &e, &stored, &keep, NULL, &err)) ||
            (rc = tqvec_collection_add(v->c, &e, 1, &added, &err)))
            tqd_reply_tqvec_error(r, &err);
        else
            tqd_reply_bool(r, added == 1);
    }
    /* A set VADD created but could not fill must not linger empty. */
    if (created && !added)
        tqd_keyspace_drop_if_empty(v);
    pthread_mutex_unlock(&v->write_lock);
out:
    tqd_vset_release(v);
    free(keep);
    free(a.vec);
    free(stored);
}

/* Consecutive VADDs to one existing set (pipelined, or queued in a
 * transaction) are one tqvec_collection_add: one log append, so a
 * transaction of them is after a crash either whole or absent, and
 * ingest pays one write for the run. The run ends before a VADD that
 * names another set, would be refused (it is answered on its own, with its
 * error), or repeats an element of the run (its kept attributes depend on
 * the one before). */
static size_t vadd_run(tqd_client *cl, const tqd_request *reqs, size_t n, tqd_reply *r)
{
    const tqd_arg *key = &reqs[0].argv[1];
    tqd_vset *v = tqd_keyspace_get(cl->db, key->p, key->len);
    if (!v) { /* the first creates the set; the others follow as a run */
        cmd_vadd(cl, reqs[0].argv, reqs[0].argc, r);
        return 1;
    }
    vadd_req *a = calloc(n, sizeof(*a));
    tqvec_element *e = calloc(n, sizeof(*e));
    float **stored = calloc(n, sizeof(*stored));
    char **keep = calloc(n, sizeof(*keep));
    bool *fresh = calloc(n, sizeof(*fresh));
    tqd_buf quiet = {0};
    tqd_reply silent = {.out = &quiet, .proto = r->proto};
    tqvec_error err;
    size_t m = 0;
    pthread_mutex_lock(&v->write_lock);
    for (; a && e && stored && keep && fresh && m < n; m++) {
        const tqd_request *rq = &reqs[m];
        if (rq->argc < 5 || rq->argv[1].len != key->len || memcmp(rq->argv[1].p, key->p, key->len) ||
            !vadd_parse(rq->argv, rq->argc, &a[m], &silent))
            break;
        bool repeat = false;
        for (size_t i = 0; i < m && !repeat; i++)
            repeat = a[i].elem->len == a[m].elem->len && !memcmp(a[i].elem->p, a[m].elem->p, a[m].elem->len);
        bool exists;
        if (repeat || !vadd_fits(v, &a[m], &silent) ||
            vadd_element(v, &a[m], &e[m], &stored[m], &keep[m], &exists, &err))
            break;
        fresh[m] = !exists;
    }
    tqd_buf_free(&quiet);
    size_t done = 0;
    if (m >= 2 && tqvec_collection_add(v->c, e, m, NULL, &err) == TQVEC_OK) {
        for (size_t i = 0; i < m; i++)
            tqd_reply_bool(r, fresh[i]);
        done = m;
    }
    pthread_mutex_unlock(&v->write_lock);
    for (size_t i = 0; a && i < n; i++)
        free(a[i].vec);
    for (size_t i = 0; stored && keep && i < n; i++) {
        free(stored[i]);
        free(keep[i]);
    }
    free(a);
    free(e);
    free(stored);
    free(keep);
    free(fresh);
    tqd_vset_release(v);
    if (!done) { /* nothing to share, or the add refused one of them: one at a time */
        cmd_vadd(cl, reqs[0].argv, reqs[0].argc, r);
        done = 1;
    }
    return done;
}

/* ---------------------------------------------------------------- VSIM */

typedef struct vsim_args {
    bool withscores, withattribs, truth;
    long long count, ef, rerank, nprobe;
    double epsilon, recall;
    char *filter;
} vsim_args;

/* Options after the query; false after replying with the error. */
static bool parse_vsim_options(const tqd_arg *argv, size_t argc, size_t j, vsim_args *a, tqd_reply *r)
{
    for (; j < argc; j++) {
        long long n;
        if (tqd_arg_is(&argv[j], "WITHSCORES")) {
            a->withscores = true;
        } else if (tqd_arg_is(&argv[j], "WITHATTRIBS")) {
            a->withattribs = true;
        } else if (tqd_arg_is(&argv[j], "TRUTH")) {
            a->truth = true;
        } else if (tqd_arg_is(&argv[j], "NOTHREAD")) {
            continue;
        } else if (tqd_arg_is(&argv[j], "COUNT") && j + 1 < argc) {
            if (!tqd_arg_ll(&argv[++j], &a->count) || a->count <= 0) {
                tqd_reply_error(r, "ERR invalid COUNT");
                return false;
            }
            /* Redis answers a COUNT beyond the set with what there is; a
             * search here returns at most TQVEC_MAX_K, which is all of any
             * smaller set. */
            if (a->count > TQVEC_MAX_K)
                a->count = TQVEC_MAX_K;
        } else if (tqd_arg_is(&argv[j], "EPSILON") && j + 1 < argc) {
            if (!tqd_arg_double(&argv[++j], &a->epsilon) || a->epsilon <= 0) {
                tqd_reply_error(r, "ERR invalid EPSILON");
                return false;
            }
        } else if (tqd_arg_is(&argv[j], "EF") && j + 1 < argc) {
            if (!tqd_arg_ll(&argv[++j], &a->ef) || a->ef <= 0 || a->ef > 1000000) {
                tqd_reply_error(r, "ERR invalid EF");
                return false;
            }
        } else if (tqd_arg_is(&argv[j], "NPROBE") && j + 1 < argc) {
            if (!tqd_arg_ll(&argv[++j], &a->nprobe) || a->nprobe < 0 || a->nprobe > UINT32_MAX) {
                tqd_reply_error(r, "ERR invalid NPROBE");
                return false;
            }
            a->recall = 0;
        } else if (tqd_arg_is(&argv[j], "RECALL") && j + 1 < argc) {
            if (!tqd_arg_double(&argv[++j], &a->recall) || !(a->recall > 0 && a->recall <= 1)) {
                tqd_reply_error(r, "ERR invalid RECALL: above 0, at most 1");
                return false;
            }
            a->nprobe = -1;
        } else if (tqd_arg_is(&argv[j], "RERANK") && j + 1 < argc) {
            if (!tqd_arg_ll(&argv[++j], &a->rerank) || a->rerank < 0 || a->rerank > TQVEC_MAX_RERANK) {
                tqd_reply_error(r, "ERR invalid RERANK: 0 to %d", TQVEC_MAX_RERANK);
                return false;
            }
        } else if (tqd_arg_is(&argv[j], "FILTER-EF") && j + 1 < argc) {
            if (!tqd_arg_ll(&argv[++j], &n) || n <= 0) {
                tqd_reply_error(r, "ERR invalid FILTER-EF");
                return false;
            }
        } else if (tqd_arg_is(&argv[j], "FILTER") && j + 1 < argc) {
            const tqd_arg *f = &argv[++j];
            if (memchr(f->p, 0, f->len)) {
                tqd_reply_error(r, "ERR syntax error in FILTER expression near: (a NUL byte)");
                return false;
            }
            free(a->filter);
            if (!(a->filter = malloc(f->len + 1))) {
                tqd_reply_error(r, "ERR out of memory");
                return false;
            }
            memcpy(a->filter, f->p, f->len);
            a->filter[f->len] = 0;
        } else {
            tqd_reply_error(r, "ERR syntax error in VSIM command");
            return false;
        }
    }
    return true;
}

/* One VSIM request made ready to search: its query vector and options. */
typedef struct vsim_query {
    float *vec;
    vsim_args a;
    tqvec_search_params p;
    bool cosine;
} vsim_query;

static void vsim_query_free(vsim_query *q)
{
    free(q->vec);
    free(q->a.filter);
    q->vec = NULL;
    q->a.filter = NULL;
}

/* Parse a VSIM on set v into q; false after replying with the error. */
static bool vsim_prepare(tqd_vset *v, const tqd_arg *argv, size_t argc, vsim_query *q, tqd_reply *r)
{
    *q = (vsim_query){.a = {.count = 10, .rerank = -1, .nprobe = -1, .epsilon = 2.0, .recall = TQD_DEFAULT_RECALL}};
    size_t dim = 0, consumed = 0;
    tqvec_error err;
    const tqd_arg *how = &argv[2];
    if (tqd_arg_is(how, "ELE")) {
        dim = v->dim;
        consumed = 2;
        if (!(q->vec = malloc(dim * sizeof(float)))) {
            tqd_reply_error(r, "ERR out of memory");
            return false;
        }
        int rc = tqvec_collection_get(v->c, argv[3].p, argv[3].len, q->vec, NULL, 0, NULL, &err);
        if (rc == TQVEC_ENOTFOUND) {
            tqd_reply_error(r, "ERR element not found in set");
            goto fail;
        }
        if (rc) {
            tqd_reply_tqvec_error(r, &err);
            goto fail;
        }
    } else if (!tqd_arg_is(how, "FP32") && !tqd_arg_is(how, "VALUES")) {
        tqd_reply_error(r, "ERR vector type must be ELE, FP32 or VALUES");
        return false;
    } else if (!(q->vec = parse_vector(argv, argc, 2, &dim, &consumed))) {
        tqd_reply_error(r, "ERR invalid vector specification");
        return false;
    } else if (dim != input_dim(v)) {
        reply_dim_mismatch(r, dim, input_dim(v));
        goto fail;
    } else if (v->shape.kind != TQD_SHAPE_PLAIN) {
        float *stored = stored_form(v, q->vec);
        free(q->vec);
        if (!(q->vec = stored)) {
            tqd_reply_error(r, "ERR out of memory");
            return false;
        }
    }
    if (!parse_vsim_options(argv, argc, 2 + consumed, &q->a, r))
        goto fail;
    const vsim_args *a = &q->a;
    q->cosine = v->metric == TQVEC_METRIC_COSINE || v->metric == TQVEC_METRIC_DEFAULT;
    if (a->epsilon != 2.0 && !q->cosine) {
        tqd_reply_error(r, "ERR EPSILON needs a cosine vector set; this one is %s", tqd_metric_name(v->metric));
        goto fail;
    }
    q->p.k = (uint32_t)a->count;
    q->p.filter = a->filter;
    if (v->refine != TQVEC_REFINE_NONE) {
        long long depth = a->rerank >= 0 ? a->rerank
                          : a->ef > 0    ? (a->ef + a->count - 1) / a->count
                                         : TQD_DEFAULT_RERANK;
        if (a->truth)
            depth = TQVEC_MAX_RERANK;
        q->p.rerank = (uint32_t)(depth < 0 ? 0 : depth > TQVEC_MAX_RERANK ? TQVEC_MAX_RERANK : depth);
    }
    if (a->truth)
        q->p.scorer = TQVEC_SCORER_FLOAT;
    else if (a->nprobe >= 0)
        q->p.nprobe = (uint32_t)a->nprobe;
    else
        q->p.target_recall = (float)a->recall;
    return true;
fail:
    vsim_query_free(q);
    return false;
}

/* Whether two prepared queries can share one search call. */
static bool same_search(const vsim_query *x, const vsim_query *y)
{
    return x->p.k == y->p.k && x->p.rerank == y->p.rerank && x->p.scorer == y->p.scorer &&
           x->p.nprobe == y->p.nprobe && x->p.target_recall == y->p.target_recall &&
           (x->a.filter == NULL) == (y->a.filter == NULL) && (!x->a.filter || !strcmp(x->a.filter, y->a.filter));
}

/* A match's score as VSIM reports it: cosine sets give Redis's
 * similarity, 1 - cosine distance / 2, in [0, 1]; others their metric's. */
static double reported_score(bool cosine, float score)
{
    if (!cosine)
        return (double)score;
    double sc = (1.0 + (double)score) / 2.0;
    return sc < 0 ? 0 : sc > 1 ? 1 : sc;
}

/* The reply to query qi of a search's results. */
static void vsim_reply(tqd_reply *r, const tqvec_results *res, size_t qi, const vsim_query *q)
{
    const vsim_args *a = &q->a;
    size_t n = tqvec_results_count(res, qi);
    if (q->cosine)
        for (size_t i = 0; i < n; i++)
            if ((1.0 - (double)tqvec_results_get(res, qi, i)->score) / 2.0 > a->epsilon) {
                n = i;
                break;
            }
    const bool as_map = r->proto == 3 && (a->withscores || a->withattribs);
    if (as_map)
        tqd_reply_map(r, n);
    else
        tqd_reply_array(r, n * (1 + a->withscores + a->withattribs));
    for (size_t i = 0; i < n; i++) {
        const tqvec_match *m = tqvec_results_get(res, qi, i);
        tqd_reply_bulk(r, m->key, m->key_len);
        if (r->proto == 3 && a->withscores && a->withattribs)
            tqd_reply_array(r, 2);
        if (a->withscores)
            tqd_reply_double(r, reported_score(q->cosine, m->score));
        if (a->withattribs) {
            if (m->attrs)
                tqd_reply_bulk(r, m->attrs, m->attrs_len);
            else
                tqd_reply_null(r);
        }
    }
}

static void cmd_vsim(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    if (!v) {
        tqd_reply_array(r, 0);
        return;
    }
    vsim_query q;
    tqvec_results *res = NULL;
    tqvec_error err;
    if (vsim_prepare(v, argv, argc, &q, r)) {
        if (tqvec_collection_search(v->c, q.vec, 1, &q.p, &res, &err))
            tqd_reply_tqvec_error(r, &err);
        else
            vsim_reply(r, res, 0, &q);
        vsim_query_free(&q);
    }
    tqvec_results_free(res);
    tqd_vset_release(v);
}

/* Pipelined VSIMs on one set with the same search options (COUNT, EF or
 * RERANK, FILTER, TRUTH) are answered by one search call for all their
 * queries, whose scan reads each block once for several queries. The run
 * ends before the first request that names another set, searches
 * differently, or has an error (that one is answered on its own, with its
 * error, after the run). */
static size_t vsim_run(tqd_client *cl, const tqd_request *reqs, size_t n, tqd_reply *r)
{
    const tqd_arg *key = &reqs[0].argv[1];
    tqd_vset *v = tqd_keyspace_get(cl->db, key->p, key->len);
    if (!v) {
        cmd_vsim(cl, reqs[0].argv, reqs[0].argc, r);
        return 1;
    }
    vsim_query q[TQD_MAX_RUN];
    size_t m = 0;
    if (!vsim_prepare(v, reqs[0].argv, reqs[0].argc, &q[0], r)) {
        tqd_vset_release(v);
        return 1;
    }
    /* The others are prepared with their errors sent nowhere: a request
     * that fails is answered by cmd_vsim on its own turn. */
    tqd_buf quiet = {0};
    tqd_reply silent = {.out = &quiet, .proto = r->proto};
    for (m = 1; m < n && m < TQD_MAX_RUN; m++) {
        const tqd_request *rq = &reqs[m];
        if (rq->argc < 4 || rq->argv[1].len != key->len || memcmp(rq->argv[1].p, key->p, key->len) ||
            !vsim_prepare(v, rq->argv, rq->argc, &q[m], &silent))
            break;
        if (!same_search(&q[0], &q[m])) {
            vsim_query_free(&q[m]);
            break;
        }
    }
    tqd_buf_free(&quiet);
    float *queries = m > 1 ? malloc(m * v->dim * sizeof(float)) : NULL;
    tqvec_results *res = NULL;
    tqvec_error err;
    if (m > 1 && !queries)
        m = 1; /* answer the first alone; the others on their own turns */
    for (size_t i = 0; i < m && queries; i++)
        memcpy(queries + i * v->dim, q[i].vec, v->dim * sizeof(float));
    int rc = tqvec_collection_search(v->c, m > 1 ? queries : q[0].vec, m, &q[0].p, &res, &err);
    if (m > 1) {
        atomic_fetch_add(&tqd.vsim_runs, 1);
        atomic_fetch_add(&tqd.vsim_run_queries, m);
    }
    for (size_t i = 0; i < m; i++) {
        if (rc)
            tqd_reply_tqvec_error(r, &err);
        else
            vsim_reply(r, res, i, &q[i]);
        vsim_query_free(&q[i]);
    }
    tqvec_results_free(res);
    free(queries);
    tqd_vset_release(v);
    return m;
}

/* ------------------------------------------------- the small commands */

static void cmd_vrem(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    if (!v) {
        tqd_reply_bool(r, false);
        return;
    }
    pthread_mutex_lock(&v->write_lock);
    tqvec_error err;
    int rc = v->dropped ? TQVEC_ENOTFOUND : tqvec_collection_remove(v->c, argv[2].p, argv[2].len, &err);
    if (rc == TQVEC_OK)
        tqd_keyspace_drop_if_empty(v);
    pthread_mutex_unlock(&v->write_lock);
    reply_element_write(r, rc, &err);
    tqd_vset_release(v);
}

static void cmd_vcard(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    tqvec_collection_info in = {0};
    if (v)
        tqvec_collection_get_info(v->c, &in);
    tqd_reply_int(r, (long long)in.count);
    tqd_vset_release(v);
}

static void cmd_vdim(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    if (!v)
        tqd_reply_error(r, "ERR key does not exist");
    else
        tqd_reply_int(r, reported_dim(v));
    tqd_vset_release(v);
}

static void cmd_vemb(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    bool raw = false;
    for (size_t j = 3; j < argc; j++) {
        if (!tqd_arg_is(&argv[j], "RAW")) {
            tqd_reply_error(r, "ERR invalid option");
            return;
        }
        raw = true;
    }
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    float *vec = v ? malloc(v->dim * sizeof(float)) : NULL;
    tqvec_error err;
    int rc = !v ? TQVEC_ENOTFOUND : !vec ? TQVEC_ENOMEM
                                         : tqvec_collection_get(v->c, argv[2].p, argv[2].len, vec, NULL, 0, NULL, &err);
    if (rc == TQVEC_ENOTFOUND) {
        tqd_reply_null(r);
    } else if (rc == TQVEC_ENOMEM && !vec) {
        tqd_reply_error(r, "ERR out of memory");
    } else if (rc) {
        tqd_reply_tqvec_error(r, &err);
    } else if (raw) {
        /* A padded set's vector is its first coordinate; a reduced one's
         * the projection (the input is not kept), as Redis. */
        const uint32_t n = reported_dim(v);
        double norm = 0;
        for (uint32_t i = 0; i < n; i++)
            norm += (double)vec[i] * (double)vec[i];
        tqd_reply_array(r, 3);
        tqd_reply_simple(r, code_name(v));
        tqd_reply_bulk(r, (const char *)vec, n * sizeof(float));
        tqd_reply_double(r, sqrt(norm));
    } else {
        tqd_reply_array(r, reported_dim(v));
        for (uint32_t i = 0; i < reported_dim(v); i++)
            tqd_reply_double(r, (double)vec[i]);
    }
    free(vec);
    tqd_vset_release(v);
}

static void cmd_vinfo(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    if (!v) {
        tqd_reply_null_array(r);
        return;
    }
    tqvec_collection_info in;
    tqvec_collection_get_info(v->c, &in);
    uint64_t attributed = 0;
    tqvec_collection_count_attributed(v->c, &attributed);
    static const char *const variants[] = {"mse", "mse", "prod"};
    static const char *const redis_quant[] = {[QUANT_UNSET] = "tq", [QUANT_Q8] = "int8",
                                              [QUANT_NOQUANT] = "f32", [QUANT_BIN] = "bin"};
    tqd_reply_map(r, 23);
    /* Redis's fields first, with the nearest true values (there is no
     * graph: no links, one level), then ours. */
    tqd_reply_simple(r, "quant-type");
    tqd_reply_simple(r, redis_quant[quant_of(v)]);
    tqd_reply_simple(r, "hnsw-m");
    tqd_reply_int(r, 0);
    tqd_reply_simple(r, "vector-dim");
    tqd_reply_int(r, reported_dim(v));
    tqd_reply_simple(r, "projection-input-dim");
    tqd_reply_int(r, v->shape.kind == TQD_SHAPE_REDUCE ? v->shape.input_dim : 0);
    tqd_reply_simple(r, "size");
    tqd_reply_int(r, (long long)in.count);
    tqd_reply_simple(r, "max-level");
    tqd_reply_int(r, 0);
    tqd_reply_simple(r, "attributes-count");
    tqd_reply_int(r, (long long)attributed);
    tqd_reply_simple(r, "vset-uid");
    tqd_reply_int(r, (long long)v->uid);
    /* rows stored: live ones and those awaiting compaction */
    tqd_reply_simple(r, "hnsw-max-node-uid");
    tqd_reply_int(r, (long long)(in.count + in.deleted));
    tqd_reply_simple(r, "encoding");
    tqd_reply_simple(r, code_name(v));
    tqd_reply_simple(r, "metric");
    tqd_reply_simple(r, tqd_metric_name(in.metric));
    tqd_reply_simple(r, "bits");
    tqd_reply_int(r, in.bits);
    tqd_reply_simple(r, "variant");
    tqd_reply_simple(r, variants[in.variant >= 0 && in.variant <= 2 ? in.variant : 0]);
    tqd_reply_simple(r, "refine");
    tqd_reply_simple(r, tqd_refine_name(in.refine));
    /* auto until the first add decides: first-batch (centered on its
     * mean) or none */
    tqd_reply_simple(r, "centering");
    tqd_reply_simple(r, in.center == TQVEC_CENTER_FIRST_BATCH ? "first-batch"
                        : in.center == TQVEC_CENTER_NONE      ? "none"
                                                              : "auto");
    tqd_reply_simple(r, "codebook");
    tqd_reply_simple(r, in.codebook == TQVEC_CODEBOOK_VECTOR ? "vector" : "scalar");
    tqd_reply_simple(r, "bytes-per-vector");
    tqd_reply_int(r, (long long)(in.bytes_per_vector + in.refine_bytes_per_vector));
    /* the part of it kept only for re-ranking (not scanned) */
    tqd_reply_simple(r, "refine-bytes-per-vector");
    tqd_reply_int(r, (long long)in.refine_bytes_per_vector);
    tqd_reply_simple(r, "deleted-rows");
    tqd_reply_int(r, (long long)in.deleted);
    tqd_reply_simple(r, "segments");
    tqd_reply_int(r, in.segments);
    tqd_reply_simple(r, "unsealed-rows");
    tqd_reply_int(r, (long long)in.unsealed);
    tqd_reply_simple(r, "partitions");
    tqd_reply_int(r, (long long)tqvec_collection_partitions(v->c));
    tqd_reply_simple(r, "simd");
    tqd_reply_simple(r, in.simd);
    tqd_vset_release(v);
}

static void cmd_vsetattr(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    if (!v) {
        tqd_reply_bool(r, false);
        return;
    }
    pthread_mutex_lock(&v->write_lock);
    tqvec_error err;
    int rc = v->dropped ? TQVEC_ENOTFOUND
                        : tqvec_collection_set_attrs(v->c, argv[2].p, argv[2].len, argv[3].p, argv[3].len, &err);
    pthread_mutex_unlock(&v->write_lock);
    reply_element_write(r, rc, &err);
    tqd_vset_release(v);
}

static void cmd_vgetattr(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    char *attrs = NULL;
    size_t len = 0;
    tqvec_error err;
    int rc = v ? current_attrs(v, &argv[2], &attrs, &len, NULL, &err) : TQVEC_OK;
    if (rc && rc != TQVEC_ENOTFOUND)
        tqd_reply_tqvec_error(r, &err);
    else if (!attrs)
        tqd_reply_null(r);
    else
        tqd_reply_bulk(r, attrs, len);
    free(attrs);
    tqd_vset_release(v);
}

static void cmd_vismember(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    bool found = v &&
                 tqvec_collection_get(v->c, argv[2].p, argv[2].len, NULL, NULL, 0, NULL, NULL) == TQVEC_OK;
    tqd_reply_bool(r, found);
    tqd_vset_release(v);
}

static void cmd_vrandmember(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    if (argc > 3) {
        tqd_reply_error(r, "ERR wrong number of arguments for 'vrandmember' command");
        return;
    }
    long long count = 1;
    if (argc == 3 && !tqd_arg_ll(&argv[2], &count)) {
        tqd_reply_error(r, "ERR value is not an integer or out of range");
        return;
    }
    if (count > TQVEC_MAX_K || count < -(long long)TQVEC_MAX_K) {
        tqd_reply_error(r, "ERR count is out of range (at most %d)", TQVEC_MAX_K);
        return;
    }
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    tqvec_results *res = NULL;
    tqvec_error err;
    size_t want = (size_t)(count < 0 ? -count : count);
    if (v && want && tqvec_collection_random_keys(v->c, want, count < 0, random_seed(), &res, &err)) {
        tqd_reply_tqvec_error(r, &err);
    } else {
        size_t n = tqvec_results_count(res, 0);
        if (argc == 2) {
            if (n)
                tqd_reply_bulk(r, tqvec_results_get(res, 0, 0)->key, tqvec_results_get(res, 0, 0)->key_len);
            else
                tqd_reply_null(r);
        } else {
            tqd_reply_array(r, n);
            for (size_t i = 0; i < n; i++)
                tqd_reply_bulk(r, tqvec_results_get(res, 0, i)->key, tqvec_results_get(res, 0, i)->key_len);
        }
    }
    tqvec_results_free(res);
    tqd_vset_release(v);
}

/* One end of a VRANGE: "-" / "+" (open), "[name" (inclusive), "(name". */
static bool range_bound(const tqd_arg *a, const char *open, tqvec_key_bound *b)
{
    *b = (tqvec_key_bound){0};
    if (a->len == 1 && a->p[0] == open[0])
        return true;
    if (a->len < 1 || (a->p[0] != '[' && a->p[0] != '('))
        return false;
    *b = (tqvec_key_bound){.key = a->p + 1, .key_len = a->len - 1, .inclusive = a->p[0] == '['};
    return true;
}

/* VRANGE key start end [count]: element names in byte order, at most count
 * (all when negative or absent). */
static void cmd_vrange(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    if (argc > 5) {
        tqd_reply_error(r, "ERR wrong number of arguments for 'vrange' command");
        return;
    }
    tqvec_key_bound lo, hi;
    if (!range_bound(&argv[2], "-", &lo) || !range_bound(&argv[3], "+", &hi)) {
        tqd_reply_error(r, "ERR min or max not valid string range item");
        return;
    }
    long long count = -1;
    if (argc == 5 && !tqd_arg_ll(&argv[4], &count)) {
        tqd_reply_error(r, "ERR value is not an integer or out of range");
        return;
    }
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    tqvec_results *res = NULL;
    tqvec_error err;
    if (v && count != 0 &&
        tqvec_collection_key_range(v->c, &lo, &hi, count < 0 ? SIZE_MAX : (size_t)count, &res, &err)) {
        tqd_reply_tqvec_error(r, &err);
    } else {
        size_t n = tqvec_results_count(res, 0);
        tqd_reply_array(r, n);
        for (size_t i = 0; i < n; i++)
            tqd_reply_bulk(r, tqvec_results_get(res, 0, i)->key, tqvec_results_get(res, 0, i)->key_len);
    }
    tqvec_results_free(res);
    tqd_vset_release(v);
}

/* Neighbours VLINKS reports, as Redis's default M. */
#define VLINKS_NEIGHBOURS 16

/* VLINKS key element [WITHSCORES]: there is no graph, so the one level
 * reported (level 0) holds the element's nearest neighbours, as a graph's
 * bottom level would; tools that walk links see a sensible neighbourhood. */
static void cmd_vlinks(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    bool withscores = false;
    for (size_t j = 3; j < argc; j++) {
        if (!tqd_arg_is(&argv[j], "WITHSCORES")) {
            tqd_reply_error(r, "ERR syntax error");
            return;
        }
        withscores = true;
    }
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    float *vec = v ? malloc(v->dim * sizeof(float)) : NULL;
    tqvec_results *res = NULL;
    tqvec_error err;
    int rc = !v ? TQVEC_ENOTFOUND : !vec ? TQVEC_ENOMEM
                                         : tqvec_collection_get(v->c, argv[2].p, argv[2].len, vec, NULL, 0, NULL, &err);
    if (rc == TQVEC_OK) {
        tqvec_search_params p = {.k = VLINKS_NEIGHBOURS + 1,
                                 .rerank = v->refine != TQVEC_REFINE_NONE ? TQD_DEFAULT_RERANK : 0};
        rc = tqvec_collection_search(v->c, vec, 1, &p, &res, &err);
    }
    if (rc == TQVEC_ENOTFOUND) {
        tqd_reply_null(r);
    } else if (rc) {
        if (rc == TQVEC_ENOMEM && !vec)
            tqd_reply_error(r, "ERR out of memory");
        else
            tqd_reply_tqvec_error(r, &err);
    } else {
        const bool cosine = v->metric == TQVEC_METRIC_COSINE || v->metric == TQVEC_METRIC_DEFAULT;
        size_t n = tqvec_results_count(res, 0), shown = 0;
        const tqvec_match *self = NULL;
        for (size_t i = 0; i < n; i++) {
            const tqvec_match *m = tqvec_results_get(res, 0, i);
            if (m->key_len == argv[2].len && !memcmp(m->key, argv[2].p, m->key_len))
                self = m;
        }
        shown = n - (self != NULL);
        if (shown > VLINKS_NEIGHBOURS)
            shown = VLINKS_NEIGHBOURS;
        tqd_reply_array(r, 1);
        if (withscores && r->proto == 3)
            tqd_reply_map(r, shown);
        else
            tqd_reply_array(r, shown * (1 + withscores));
        for (size_t i = 0, done = 0; i < n && done < shown; i++) {
            const tqvec_match *m = tqvec_results_get(res, 0, i);
            if (m == self)
                continue;
            tqd_reply_bulk(r, m->key, m->key_len);
            if (withscores)
                tqd_reply_double(r, reported_score(cosine, m->score));
            done++;
        }
    }
    tqvec_results_free(res);
    free(vec);
    tqd_vset_release(v);
}

/* ---------------------------------------------------------- extensions */

/* Word -> value for TQ.CREATE's enumerated options. */
static bool pick(const tqd_arg *a, const char *const *words, const int *values, size_t n, int *out)
{
    for (size_t i = 0; i < n; i++)
        if (tqd_arg_is(a, words[i])) {
            *out = values[i];
            return true;
        }
    return false;
}

/* TQ.CREATE key DIM d [METRIC cosine|l2|ip] [BITS 1..4] [VARIANT mse|prod]
 *   [REFINE none|code8|fp16|fp32] [SEED n] [CENTER auto|none|first-batch] */
static void cmd_tq_create(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    static const char *const metrics[] = {"cosine", "l2", "ip"};
    static const int metric_v[] = {TQVEC_METRIC_COSINE, TQVEC_METRIC_L2, TQVEC_METRIC_IP};
    static const char *const variants[] = {"mse", "prod"};
    static const int variant_v[] = {TQVEC_VARIANT_MSE, TQVEC_VARIANT_PROD};
    static const char *const refines[] = {"none", "code8", "fp16", "fp32"};
    static const int refine_v[] = {TQVEC_REFINE_NONE, TQVEC_REFINE_CODE8, TQVEC_REFINE_FP16, TQVEC_REFINE_FP32};
    static const char *const centers[] = {"auto", "none", "first-batch"};
    static const int center_v[] = {TQVEC_CENTER_AUTO, TQVEC_CENTER_NONE, TQVEC_CENTER_FIRST_BATCH};
    static const char *const codebooks[] = {"scalar", "vector"};
    static const int codebook_v[] = {TQVEC_CODEBOOK_SCALAR, TQVEC_CODEBOOK_VECTOR};
    tqvec_collection_options o = {0};
    o.metric = TQVEC_METRIC_COSINE;
    for (size_t j = 2; j < argc; j += 2) {
        long long n;
        const tqd_arg *opt = &argv[j], *val = j + 1 < argc ? &argv[j + 1] : NULL;
        bool ok = val != NULL;
        if (ok && tqd_arg_is(opt, "DIM"))
            ok = tqd_arg_ll(val, &n) && n >= TQVEC_MIN_DIM && n <= TQVEC_MAX_DIM && (o.dim = (uint32_t)n);
        else if (ok && tqd_arg_is(opt, "BITS"))
            ok = tqd_arg_ll(val, &n) && n >= TQVEC_MIN_BITS && n <= TQVEC_MAX_BITS && (o.bits = (int)n);
        else if (ok && tqd_arg_is(opt, "SEED"))
            ok = tqd_arg_ll(val, &n) && n > 0 && ((o.seed = (uint64_t)n), true);
        else if (ok && tqd_arg_is(opt, "METRIC"))
            ok = pick(val, metrics, metric_v, 3, &o.metric);
        else if (ok && tqd_arg_is(opt, "VARIANT"))
            ok = pick(val, variants, variant_v, 2, &o.variant);
        else if (ok && tqd_arg_is(opt, "REFINE"))
            ok = pick(val, refines, refine_v, 4, &o.refine);
        else if (ok && tqd_arg_is(opt, "CENTER"))
            ok = pick(val, centers, center_v, 3, &o.center);
        else if (ok && tqd_arg_is(opt, "CODEBOOK"))
            ok = pick(val, codebooks, codebook_v, 2, &o.codebook);
        else
            ok = false;
        if (!ok) {
            char name[32];
            size_t n2 = opt->len < sizeof(name) - 1 ? opt->len : sizeof(name) - 1;
            memcpy(name, opt->p, n2);
            name[n2] = 0;
            tqd_reply_error(r, "ERR invalid TQ.CREATE option '%s' (DIM %d..%d, METRIC cosine|l2|ip, BITS %d..%d, "
                               "VARIANT mse|prod, REFINE none|code8|fp16|fp32, SEED n, CENTER auto|none|first-batch, "
                               "CODEBOOK scalar|vector)",
                            name, TQVEC_MIN_DIM, TQVEC_MAX_DIM, TQVEC_MIN_BITS, TQVEC_MAX_BITS);
            return;
        }
    }
    if (!o.dim) {
        tqd_reply_error(r, "ERR TQ.CREATE needs DIM");
        return;
    }
    tqd_vset *v;
    bool created;
    tqvec_error err;
    if (tqd_keyspace_get_or_create(cl->db, argv[1].p, argv[1].len, &o, NULL, &v, &created, &err)) {
        tqd_reply_tqvec_error(r, &err);
        return;
    }
    if (created)
        tqd_reply_simple(r, "OK");
    else
        tqd_reply_error(r, "BUSYKEY Target key name already exists.");
    tqd_vset_release(v);
}

/* TQ.COMPACT key: seal the log into a segment and rewrite deleted-heavy
 * segments now (SAVE does it for every key). */
static void cmd_tq_compact(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    tqvec_error err;
    if (!v) {
        tqd_reply_error(r, "ERR key does not exist");
        return;
    }
    pthread_mutex_lock(&v->write_lock);
    int rc = v->dropped ? TQVEC_OK : tqvec_collection_compact(v->c, &err);
    pthread_mutex_unlock(&v->write_lock);
    if (rc)
        tqd_reply_tqvec_error(r, &err);
    else
        tqd_reply_simple(r, "OK");
    tqd_vset_release(v);
}

const tqd_command tqd_vset_commands[] = {
    {"vadd", cmd_vadd, -5, false, 1, vadd_run, TQD_WRITES},
    {"vsim", cmd_vsim, -4, false, 1, vsim_run, TQD_READS},
    {"vrem", cmd_vrem, 3, false, 1, NULL, TQD_WRITES},
    {"vcard", cmd_vcard, 2, false, 1, NULL, TQD_READS},
    {"vdim", cmd_vdim, 2, false, 1, NULL, TQD_READS},
    {"vemb", cmd_vemb, -3, false, 1, NULL, TQD_READS},
    {"vinfo", cmd_vinfo, 2, false, 1, NULL, TQD_READS},
    {"vsetattr", cmd_vsetattr, 4, false, 1, NULL, TQD_WRITES},
    {"vgetattr", cmd_vgetattr, 3, false, 1, NULL, TQD_READS},
    {"vismember", cmd_vismember, 3, false, 1, NULL, TQD_READS},
    {"vrandmember", cmd_vrandmember, -2, false, 1, NULL, TQD_READS},
    {"vrange", cmd_vrange, -4, false, 1, NULL, TQD_READS},
    {"vlinks", cmd_vlinks, -3, false, 1, NULL, TQD_READS},
    {"tq.create", cmd_tq_create, -4, false, 1, NULL, TQD_WRITES},
    {"tq.compact", cmd_tq_compact, 2, false, 1, NULL, TQD_READS},
};
const size_t tqd_vset_command_count = sizeof(tqd_vset_commands) / sizeof(tqd_vset_commands[0]);
