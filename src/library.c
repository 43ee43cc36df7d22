/*
 * The public entry points for the in-memory index, version and kernel level:
 * argument checking at the API boundary and translation between the public
 * option structs and index/'s configuration. Engine logic stays in index/.
 */
#include "api.h"

#include <assert.h>

#define SAME(a, b) ((int)(a) == (int)(b))
static_assert(SAME(TQVEC_EARG, TQ_EARG) && SAME(TQVEC_EDIM, TQ_EDIM) && SAME(TQVEC_EVALUE, TQ_EVALUE) &&
              SAME(TQVEC_ENOTFOUND, TQ_ENOTFOUND) && SAME(TQVEC_ECORRUPT, TQ_ECORRUPT) &&
              SAME(TQVEC_EIO, TQ_EIO) && SAME(TQVEC_ENOMEM, TQ_ENOMEM) && SAME(TQVEC_EBUSY, TQ_EBUSY) &&
              SAME(TQVEC_EUNSUPPORTED, TQ_EUNSUPPORTED), "public and internal error codes differ");
static_assert(SAME(TQVEC_METRIC_L2, TQ_METRIC_L2) && SAME(TQVEC_METRIC_IP, TQ_METRIC_IP) &&
              SAME(TQVEC_METRIC_COSINE, TQ_METRIC_COSINE), "metric numbering differs");
static_assert(SAME(TQVEC_MAX_K, TQ_MAX_K) && SAME(TQVEC_MAX_RERANK, TQ_MAX_RERANK) &&
              SAME(TQVEC_MAX_DIM, TQ_MAX_DIM) && SAME(TQVEC_MIN_DIM, TQ_MIN_DIM) &&
              SAME(TQVEC_MAX_THREADS, TQ_MAX_THREADS), "limits differ");
static_assert(sizeof(tqvec_hit) == sizeof(tq_hit), "hit layouts differ");
static_assert(SAME(TQVEC_CENTER_NONE, TQ_CENTER_NONE) && SAME(TQVEC_CENTER_FIRST_BATCH, TQ_CENTER_FIRST_BATCH) &&
                  SAME(TQVEC_CENTER_AUTO, TQ_CENTER_AUTO),
              "center numbering differs");
static_assert(SAME(TQVEC_REFINE_NONE, TQ_REFINE_NONE) && SAME(TQVEC_REFINE_CODE8, TQ_REFINE_CODE8) &&
              SAME(TQVEC_REFINE_FP32, TQ_REFINE_FP32) && SAME(TQVEC_REFINE_FP16, TQ_REFINE_FP16),
              "refine numbering differs");
static_assert(SAME(TQVEC_SCORER_LUT, TQ_SCORER_LUT) && SAME(TQVEC_SCORER_FLOAT, TQ_SCORER_FLOAT),
              "scorer numbering differs");

int public_codebook(const tq_config *cfg)
{
    return cfg->codebook == TQ_CODEBOOK_VECTOR ? TQVEC_CODEBOOK_VECTOR : TQVEC_CODEBOOK_SCALAR;
}

#define STR2(x) #x
#define STR(x) STR2(x)

struct tqvec_index {
    tq_flat *flat;
};

int export_error(const tq_error *in, tqvec_error *out)
{
    if (out) {
        out->code = in->code;
        out->sys_errno = in->sys_errno;
        memcpy(out->message, in->msg, sizeof(out->message));
    }
    return in->code;
}

int api_error(tqvec_error *out, int code, const char *fmt, ...)
{
    if (out) {
        va_list ap;
        va_start(ap, fmt);
        out->code = code;
        out->sys_errno = 0;
        vsnprintf(out->message, sizeof(out->message), fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *tqvec_version(void)
{
    return STR(TQVEC_VERSION_MAJOR) "." STR(TQVEC_VERSION_MINOR) "." STR(TQVEC_VERSION_PATCH);
}

int tqvec_version_number(void)
{
    return TQVEC_VERSION_NUMBER;
}

const char *tqvec_errstr(int code)
{
    switch (code) {
    case TQVEC_OK:
        return "ok";
    case TQVEC_EARG:
        return "invalid argument";
    case TQVEC_EDIM:
        return "dimension mismatch";
    case TQVEC_EVALUE:
        return "invalid vector value";
    case TQVEC_ENOTFOUND:
        return "not found";
    case TQVEC_ECORRUPT:
        return "corrupt data";
    case TQVEC_EIO:
        return "I/O error";
    case TQVEC_ENOMEM:
        return "out of memory";
    case TQVEC_EBUSY:
        return "busy";
    case TQVEC_EUNSUPPORTED:
        return "not supported";
    default:
        return "unknown error";
    }
}

bool all_zero(const uint32_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i])
            return false;
    return true;
}

tq_config config_with_defaults(uint32_t dim, int metric, int bits, int variant, int correction, uint64_t seed,
                               int refine, int center, int codebook)
{
    tq_config cfg = {
        .d = dim,
        .metric = metric ? (tq_metric)metric : TQ_METRIC_COSINE,
        .bits = bits > 0 ? (unsigned)bits : TQ_DEFAULT_BITS,
        .variant = variant ? (tq_variant)variant : TQ_VARIANT_MSE,
        .correction = correction ? (tq_correction)correction : TQ_CORRECTION_IP,
        .seed = seed ? seed : TQVEC_DEFAULT_SEED,
        .refine = refine ? (tq_refine)refine : TQ_REFINE_NONE,
        .center = center ? (tq_center)center : TQ_CENTER_AUTO,
    };
    cfg.codebook = codebook == TQVEC_CODEBOOK_VECTOR   ? TQ_CODEBOOK_VECTOR
                   : codebook == TQVEC_CODEBOOK_SCALAR ? TQ_CODEBOOK_SCALAR
                                                       : tq_default_codebook(&cfg);
    return cfg;
}

int tqvec_index_create(const tqvec_index_options *opts, tqvec_index **out, tqvec_error *err)
{
    if (!out)
        return api_error(err, TQVEC_EARG, "out must not be NULL");
    *out = NULL;
    if (!opts)
        return api_error(err, TQVEC_EARG, "options must not be NULL");
    if (!all_zero(opts->reserved, sizeof(opts->reserved) / sizeof(opts->reserved[0])))
        return api_error(err, TQVEC_EARG, "reserved option fields must be zero");
    if (opts->bits < 0)
        return api_error(err, TQVEC_EARG, "bits %d is outside %d..%d", opts->bits, TQVEC_MIN_BITS, TQVEC_MAX_BITS);
    if (opts->codebook < 0 || opts->codebook > TQVEC_CODEBOOK_VECTOR)
        return api_error(err, TQVEC_EARG, "unknown codebook %d", opts->codebook);
    tq_config cfg = config_with_defaults(opts->dim, opts->metric, opts->bits, opts->variant, opts->correction,
                                         opts->seed, opts->refine, opts->center, opts->codebook);
    tqvec_index *ix = tq_calloc(1, sizeof(*ix));
    if (!ix)
        return api_error(err, TQVEC_ENOMEM, "out of memory for an index");
    tq_error e;
    if (tq_flat_create(&cfg, &ix->flat, &e)) {
        tq_free(ix);
        return export_error(&e, err);
    }
    *out = ix;
    return TQVEC_OK;
}

void tqvec_index_free(tqvec_index *index)
{
    if (!index)
        return;
    tq_flat_free(index->flat);
    tq_free(index);
}

int tqvec_index_add(tqvec_index *index, const float *vectors, size_t n, uint64_t *first_id,
                    tqvec_error *err)
{
    if (!index || (!vectors && n))
        return api_error(err, TQVEC_EARG, "index and vectors must not be NULL");
    if (first_id)
        *first_id = tq_flat_count(index->flat);
    tq_error e;
    if (tq_flat_add(index->flat, vectors, n, &e))
        return export_error(&e, err);
    return TQVEC_OK;
}

int search_opts(const tqvec_search_params *params, tq_search_opts *opts, tqvec_error *err)
{
    if (params && !all_zero(params->reserved, sizeof(params->reserved) / sizeof(params->reserved[0])))
        return api_error(err, TQVEC_EARG, "reserved search fields must be zero");
    *opts = (tq_search_opts){0}; /* every field, those the API does not set included */
    opts->k = params && params->k ? params->k : 10;
    opts->rerank = params ? params->rerank : 0;
    opts->scorer = params && params->scorer ? (tq_scorer)params->scorer : TQ_SCORER_LUT;
    opts->threads = params ? params->threads : 0;
    opts->nprobe = params ? params->nprobe : 0;
    opts->target_recall = params ? params->target_recall : 0.0f;
    if (!(opts->target_recall >= 0.0f && opts->target_recall <= 1.0f))
        return api_error(err, TQVEC_EARG, "target_recall %g is outside 0..1", (double)opts->target_recall);
    opts->filter = NULL;
    return TQVEC_OK;
}

int tqvec_index_search(const tqvec_index *index, const float *query,
                       const tqvec_search_params *params, tqvec_hit *hits, size_t cap,
                       size_t *count, tqvec_error *err)
{
    if (count)
        *count = 0;
    if (!index || !query || !hits || !count)
        return api_error(err, TQVEC_EARG, "index, query, hits and count must not be NULL");
    tq_search_opts opts;
    int rc = search_opts(params, &opts, err);
    if (rc)
        return rc;
    if (params && params->filter)
        return api_error(err, TQVEC_EUNSUPPORTED, "an in-memory index keeps no attributes to filter on");
    if (cap < opts.k)
        return api_error(err, TQVEC_EARG, "hits capacity %zu is below k=%zu", cap, opts.k);
    tq_error e;
    if (tq_flat_search_batch(index->flat, query, 1, &opts, (tq_hit *)hits, count, &e))
        return export_error(&e, err);
    return TQVEC_OK;
}

int tqvec_index_search_batch(const tqvec_index *index, const float *queries, size_t nq,
                             const tqvec_search_params *params, tqvec_hit *hits, size_t *counts,
                             tqvec_error *err)
{
    if (!index || (nq && (!queries || !hits || !counts)))
        return api_error(err, TQVEC_EARG, "index, queries, hits and counts must not be NULL");
    tq_search_opts opts;
    int rc = search_opts(params, &opts, err);
    if (rc)
        return rc;
    if (params && params->filter)
        return api_error(err, TQVEC_EUNSUPPORTED, "an in-memory index keeps no attributes to filter on");
    tq_error e;
    if (tq_flat_search_batch(index->flat, queries, nq, &opts, (tq_hit *)hits, counts, &e))
        return export_error(&e, err);
    return TQVEC_OK;
}

int tqvec_index_partition(tqvec_index *index, uint32_t nlist, uint32_t threads, tqvec_error *err)
{
    if (!index)
        return api_error(err, TQVEC_EARG, "index must not be NULL");
    if (threads > TQVEC_MAX_THREADS)
        return api_error(err, TQVEC_EARG, "threads %u is above the limit %d", threads, TQVEC_MAX_THREADS);
    tq_error e;
    if (tq_flat_partition(index->flat, nlist, threads, &e))
        return export_error(&e, err);
    return TQVEC_OK;
}

uint32_t tqvec_index_partitions(const tqvec_index *index)
{
    return index ? tq_flat_nlist(index->flat) : 0;
}

int tqvec_index_get_info(const tqvec_index *index, tqvec_index_info *info)
{
    if (!index || !info)
        return TQVEC_EARG;
    const tq_codec *codec = tq_flat_codec(index->flat);
    const tq_config *cfg = &codec->cfg;
    info->dim = cfg->d;
    info->metric = (int)cfg->metric;
    info->bits = (int)cfg->bits;
    info->variant = (int)cfg->variant;
    info->correction = (int)cfg->correction;
    info->seed = cfg->seed;
    info->count = tq_flat_count(index->flat);
    info->refine = (int)cfg->refine;
    info->center = (int)tq_codec_center_in_effect(codec, info->count > 0);
    info->bytes_per_vector = tq_codec_bytes_per_vector(codec);
    info->refine_bytes_per_vector = tq_codec_refine_bytes_per_vector(codec);
    info->simd = tqvec_simd_level();
    info->codebook = public_codebook(cfg);
    return TQVEC_OK;
}

const char *tqvec_simd_level(void)
{
    return tq_simd_level_name(tq_simd_active_level());
}

int tqvec_simd_force(const char *level, tqvec_error *err)
{
    int lv = level ? tq_simd_parse_level(level) : -1;
    if (lv < 0)
        return api_error(err, TQVEC_EARG, "unknown SIMD level '%s' (scalar, avx2, avx512)", level ? level : "(null)");
    if (tq_simd_force((tq_simd_level)lv))
        return api_error(err, TQVEC_EUNSUPPORTED, "SIMD level '%s' is not available on this CPU or build (best: %s)",
                         level, tq_simd_level_name(tq_simd_best_level()));
    return TQVEC_OK;
}

int tqvec_simd_check_env(tqvec_error *err)
{
    if (tq_simd_env_unusable())
        return api_error(err, TQVEC_EUNSUPPORTED, "TQVEC_SIMD='%s' is unknown or not available on this CPU or build (best: %s)",
                         getenv("TQVEC_SIMD"), tq_simd_level_name(tq_simd_best_level()));
    return TQVEC_OK;
}
