/*
 * The public entry points for collections: argument checks at the API
 * boundary and translation to the collection engine, where the work is.
 */
#include "api.h"
#include "store.h"

#include <assert.h>

static_assert(TQVEC_MIN_SEGMENT_ROWS == TQ_MIN_SEGMENT_ROWS && TQVEC_DEFAULT_SEGMENT_ROWS == TQ_DEFAULT_SEGMENT_ROWS &&
                  TQVEC_MAX_SEGMENT_ROWS == TQ_MAX_SEGMENT_ROWS,
              "segment size limits differ");
static_assert(TQVEC_DEFAULT_MERGE_FACTOR == TQ_DEFAULT_MERGE_FACTOR, "merge factor defaults differ");
static_assert(TQVEC_MAX_KEY_BYTES == TQ_MAX_KEY_BYTES && TQVEC_MAX_ATTRS_BYTES == TQ_MAX_ATTR_BYTES,
              "public and internal element limits differ");
static_assert((int)TQVEC_FSYNC_ALWAYS == (int)TQ_FSYNC_ALWAYS && (int)TQVEC_FSYNC_EVERYSEC == (int)TQ_FSYNC_EVERYSEC &&
                  (int)TQVEC_FSYNC_NO == (int)TQ_FSYNC_NO,
              "fsync numbering differs");
static_assert((int)TQVEC_LOG_WARNING == (int)TQ_LOG_WARNING && (int)TQVEC_LOG_NOTICE == (int)TQ_LOG_NOTICE,
              "log levels differ");

struct tqvec_collection {
    tq_collection *c;
};

struct tqvec_results {
    tq_snapshot *snap;
    size_t nq, k;
    size_t *counts;
    tqvec_match *matches; /* nq * k */
    char *owned;          /* key bytes the results own (random keys), else NULL */
};

int tqvec_collection_open(const char *dir, const tqvec_collection_options *opts, tqvec_collection **out,
                          tqvec_error *err)
{
    if (!out)
        return api_error(err, TQVEC_EARG, "out must not be NULL");
    *out = NULL;
    if (!dir || !opts)
        return api_error(err, TQVEC_EARG, "dir and options must not be NULL");
    if (!all_zero(opts->reserved, sizeof(opts->reserved) / sizeof(opts->reserved[0])))
        return api_error(err, TQVEC_EARG, "reserved option fields must be zero");
    if (opts->bits < 0)
        return api_error(err, TQVEC_EARG, "bits %d is outside %d..%d", opts->bits, TQVEC_MIN_BITS, TQVEC_MAX_BITS);
    if (opts->fsync < 0 || opts->fsync > TQVEC_FSYNC_NO)
        return api_error(err, TQVEC_EARG, "unknown fsync policy %d", opts->fsync);
    if (opts->segment_rows > TQVEC_MAX_SEGMENT_ROWS)
        return api_error(err, TQVEC_EARG, "segment_rows %u is above the limit %d", opts->segment_rows,
                         TQVEC_MAX_SEGMENT_ROWS);
    if (opts->merge_factor == 1)
        return api_error(err, TQVEC_EARG, "merge_factor 1 merges nothing (0: the default; 2 or more; TQVEC_MERGE_NEVER)");
    if (opts->codebook < 0 || opts->codebook > TQVEC_CODEBOOK_VECTOR)
        return api_error(err, TQVEC_EARG, "unknown codebook %d", opts->codebook);
    if (opts->create && opts->dim == 0)
        return api_error(err, TQVEC_EARG, "creating a collection needs its dimension");
    tq_collection_options o = {
        .cfg = config_with_defaults(opts->dim, opts->metric, opts->bits, opts->variant, opts->correction,
                                    opts->seed, opts->refine, opts->center, opts->codebook),
        .any_codebook = opts->codebook == TQVEC_CODEBOOK_DEFAULT,
        .create = opts->create != 0,
        .fsync = opts->fsync ? (tq_fsync_policy)opts->fsync : TQ_FSYNC_EVERYSEC,
        .segment_rows = opts->segment_rows,
        .verify = opts->verify != 0,
        .log = opts->log,
        .log_ctx = opts->log_ctx,
        .partition_rows = opts->partition_rows == TQVEC_PARTITION_NEVER ? SIZE_MAX : opts->partition_rows,
        .merge_factor = opts->merge_factor == TQVEC_MERGE_NEVER ? SIZE_MAX : opts->merge_factor,
    };
    if (!opts->dim)
        o.cfg.d = 0; /* open whatever is there */
    if (!opts->center)
        o.cfg.center = 0; /* not asked: auto for a new collection, any for one that exists */
    tqvec_collection *h = tq_calloc(1, sizeof(*h));
    if (!h)
        return api_error(err, TQVEC_ENOMEM, "out of memory opening %s", dir);
    tq_error e;
    if (tq_collection_open(dir, &o, &h->c, &e)) {
        tq_free(h);
        return export_error(&e, err);
    }
    *out = h;
    return TQVEC_OK;
}

int tqvec_collection_close(tqvec_collection *c, tqvec_error *err)
{
    if (!c)
        return TQVEC_OK;
    tq_error e;
    int rc = tq_collection_close(c->c, &e);
    tq_free(c);
    return rc ? export_error(&e, err) : TQVEC_OK;
}

/* Elements as the engine takes them; sizes checked here so that a size_t
 * length cannot wrap the engine's 32-bit ones. */
static int convert(const tqvec_element *in, size_t n, tq_element *out, tqvec_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (in[i].key_len > TQVEC_MAX_KEY_BYTES)
            return api_error(err, TQVEC_EARG, "element %zu: key of %zu bytes exceeds the %d-byte limit", i,
                             in[i].key_len, TQVEC_MAX_KEY_BYTES);
        if (in[i].attrs_len > TQVEC_MAX_ATTRS_BYTES)
            return api_error(err, TQVEC_EARG, "element %zu: attributes of %zu bytes exceed the %d-byte limit", i,
                             in[i].attrs_len, TQVEC_MAX_ATTRS_BYTES);
        out[i] = (tq_element){.key = in[i].key, .key_len = (uint32_t)in[i].key_len, .vector = in[i].vector,
                              .attr = in[i].attrs, .attr_len = (uint32_t)in[i].attrs_len};
    }
    return TQVEC_OK;
}

int tqvec_collection_add(tqvec_collection *c, const tqvec_element *elems, size_t n, size_t *added,
                         tqvec_error *err)
{
    if (added)
        *added = 0;
    if (!c || (n && !elems))
        return api_error(err, TQVEC_EARG, "collection and elements must not be NULL");
    tq_element small[16];
    tq_element *conv = n <= 16 ? small : tq_malloc(n * sizeof(tq_element));
    if (!conv)
        return api_error(err, TQVEC_ENOMEM, "out of memory for %zu elements", n);
    int rc = convert(elems, n, conv, err);
    if (!rc) {
        tq_error e;
        if (tq_collection_add(c->c, conv, n, added, &e))
            rc = export_error(&e, err);
    }
    if (conv != small)
        tq_free(conv);
    return rc;
}

int tqvec_collection_remove(tqvec_collection *c, const char *key, size_t key_len, tqvec_error *err)
{
    if (!c || !key)
        return api_error(err, TQVEC_EARG, "collection and key must not be NULL");
    if (key_len > TQVEC_MAX_KEY_BYTES)
        return api_error(err, TQVEC_EARG, "a key is 0 to %d bytes, not %zu", TQVEC_MAX_KEY_BYTES, key_len);
    tq_error e;
    return tq_collection_remove(c->c, key, (uint32_t)key_len, &e) ? export_error(&e, err) : TQVEC_OK;
}

int tqvec_collection_get(tqvec_collection *c, const char *key, size_t key_len, float *vector, char *attrs,
                         size_t attrs_cap, size_t *attrs_len, tqvec_error *err)
{
    if (attrs_len)
        *attrs_len = 0;
    if (!c || !key)
        return api_error(err, TQVEC_EARG, "collection and key must not be NULL");
    if (key_len > TQVEC_MAX_KEY_BYTES)
        return api_error(err, TQVEC_EARG, "a key is 0 to %d bytes, not %zu", TQVEC_MAX_KEY_BYTES, key_len);
    tq_error e;
    if (tq_collection_get(c->c, key, (uint32_t)key_len, vector, attrs, attrs ? attrs_cap : 0, attrs_len, &e))
        return export_error(&e, err);
    return TQVEC_OK;
}

int tqvec_collection_search(tqvec_collection *c, const float *queries, size_t nq, const tqvec_search_params *params,
                            tqvec_results **out, tqvec_error *err)
{
    if (!out)
        return api_error(err, TQVEC_EARG, "out must not be NULL");
    *out = NULL;
    if (!c || (nq && !queries))
        return api_error(err, TQVEC_EARG, "collection and queries must not be NULL");
    tq_search_opts opts;
    int rc = search_opts(params, &opts, err);
    if (rc)
        return rc;
    if (opts.k > TQVEC_MAX_K)
        return api_error(err, TQVEC_EARG, "k %zu is above the limit %d", opts.k, TQVEC_MAX_K);
    tqvec_results *r = tq_calloc(1, sizeof(*r));
    if (r) {
        r->counts = tq_calloc(nq + 1, sizeof(size_t));
        r->matches = tq_calloc(nq * opts.k + 1, sizeof(tqvec_match));
    }
    if (!r || !r->counts || !r->matches) {
        tqvec_results_free(r);
        return api_error(err, TQVEC_ENOMEM, "out of memory for %zu x %zu results", nq, opts.k);
    }
    r->nq = nq;
    r->k = opts.k;
    tq_match *m = tq_malloc((nq * opts.k + 1) * sizeof(tq_match));
    tq_filter *filter = NULL;
    tq_error e;
    if (!m) {
        rc = api_error(err, TQVEC_ENOMEM, "out of memory for %zu x %zu results", nq, opts.k);
    } else if (params && params->filter && tq_filter_compile(params->filter, strlen(params->filter), &filter, &e)) {
        rc = export_error(&e, err);
    } else if (tq_collection_search(c->c, queries, nq, &opts, filter, m, r->counts, &r->snap, &e)) {
        rc = export_error(&e, err);
    } else {
        for (size_t q = 0; q < nq; q++)
            for (size_t i = 0; i < r->counts[q]; i++) {
                const tq_match *src = &m[q * opts.k + i];
                r->matches[q * opts.k + i] = (tqvec_match){.key = src->key, .key_len = src->key_len,
                                                           .score = src->score, .attrs = src->attr,
                                                           .attrs_len = src->attr_len};
            }
    }
    tq_free(m);
    tq_filter_free(filter);
    if (rc) {
        tqvec_results_free(r);
        return rc;
    }
    *out = r;
    return TQVEC_OK;
}

int tqvec_collection_set_attrs(tqvec_collection *c, const char *key, size_t key_len, const char *attrs,
                               size_t attrs_len, tqvec_error *err)
{
    if (!c || !key || (attrs_len && !attrs))
        return api_error(err, TQVEC_EARG, "collection, key and attributes must not be NULL");
    if (key_len > TQVEC_MAX_KEY_BYTES)
        return api_error(err, TQVEC_EARG, "a key is 0 to %d bytes, not %zu", TQVEC_MAX_KEY_BYTES, key_len);
    if (attrs_len > TQVEC_MAX_ATTRS_BYTES)
        return api_error(err, TQVEC_EARG, "attributes of %zu bytes exceed the %d-byte limit", attrs_len,
                         TQVEC_MAX_ATTRS_BYTES);
    tq_error e;
    if (tq_collection_set_attr(c->c, key, (uint32_t)key_len, attrs, (uint32_t)attrs_len, &e))
        return export_error(&e, err);
    return TQVEC_OK;
}

/* A results object of one list holding the keys s copied out (scores 0,
 * no attributes); takes s's memory either way. */
static int results_of_keys(tq_sample *s, tqvec_results **out, tqvec_error *err)
{
    tqvec_results *r = tq_calloc(1, sizeof(*r));
    if (r) {
        r->counts = tq_calloc(1, sizeof(size_t));
        r->matches = tq_calloc(s->n + 1, sizeof(tqvec_match));
    }
    if (!r || !r->counts || !r->matches) {
        tqvec_results_free(r);
        tq_free(s->bytes);
        tq_free(s->lens);
        return api_error(err, TQVEC_ENOMEM, "out of memory for %zu keys", s->n);
    }
    r->nq = 1;
    r->k = s->n;
    r->counts[0] = s->n;
    r->owned = s->bytes;
    for (size_t i = 0, at = 0; i < s->n; i++) {
        r->matches[i] = (tqvec_match){.key = s->bytes + at, .key_len = s->lens[i]};
        at += s->lens[i];
    }
    tq_free(s->lens);
    *out = r;
    return TQVEC_OK;
}

int tqvec_collection_random_keys(tqvec_collection *c, size_t n, int allow_repeats, uint64_t seed,
                                 tqvec_results **out, tqvec_error *err)
{
    if (!out)
        return api_error(err, TQVEC_EARG, "out must not be NULL");
    *out = NULL;
    if (!c)
        return api_error(err, TQVEC_EARG, "collection must not be NULL");
    if (n > TQVEC_MAX_K)
        return api_error(err, TQVEC_EARG, "%zu keys is above the limit %d", n, TQVEC_MAX_K);
    tq_sample s;
    tq_error e;
    if (tq_collection_sample(c->c, n, allow_repeats != 0, seed, &s, &e))
        return export_error(&e, err);
    return results_of_keys(&s, out, err);
}

static bool bound_of(const tqvec_key_bound *in, tq_key_bound *out)
{
    *out = (tq_key_bound){0};
    if (!in || !in->key)
        return true;
    if (in->key_len > TQVEC_MAX_KEY_BYTES)
        return false;
    *out = (tq_key_bound){.key = in->key, .len = (uint32_t)in->key_len, .inclusive = in->inclusive != 0};
    return true;
}

int tqvec_collection_key_range(tqvec_collection *c, const tqvec_key_bound *lo, const tqvec_key_bound *hi,
                               size_t max, tqvec_results **out, tqvec_error *err)
{
    if (!out)
        return api_error(err, TQVEC_EARG, "out must not be NULL");
    *out = NULL;
    if (!c)
        return api_error(err, TQVEC_EARG, "collection must not be NULL");
    tq_key_bound l, h;
    if (!bound_of(lo, &l) || !bound_of(hi, &h))
        return api_error(err, TQVEC_EARG, "a range bound is longer than the %d-byte key limit", TQVEC_MAX_KEY_BYTES);
    tq_sample s;
    tq_error e;
    if (tq_collection_key_range(c->c, &l, &h, max, &s, &e))
        return export_error(&e, err);
    return results_of_keys(&s, out, err);
}

int tqvec_collection_count_attributed(tqvec_collection *c, uint64_t *count)
{
    if (!c || !count)
        return TQVEC_EARG;
    *count = tq_collection_count_attributed(c->c);
    return TQVEC_OK;
}

int tqvec_collection_backup(tqvec_collection *c, const char *dest, tqvec_error *err)
{
    if (!c || !dest)
        return api_error(err, TQVEC_EARG, "collection and destination must not be NULL");
    tq_error e;
    return tq_collection_backup(c->c, dest, &e) ? export_error(&e, err) : TQVEC_OK;
}

int tqvec_collection_move(tqvec_collection *c, const char *dir, tqvec_error *err)
{
    if (!c || !dir)
        return api_error(err, TQVEC_EARG, "collection and directory must not be NULL");
    tq_error e;
    return tq_collection_move(c->c, dir, &e) ? export_error(&e, err) : TQVEC_OK;
}

size_t tqvec_results_count(const tqvec_results *r, size_t q)
{
    return r && q < r->nq ? r->counts[q] : 0;
}

const tqvec_match *tqvec_results_get(const tqvec_results *r, size_t q, size_t i)
{
    return r && q < r->nq && i < r->counts[q] ? &r->matches[q * r->k + i] : NULL;
}

const tqvec_match *tqvec_results_list(const tqvec_results *r, size_t q, size_t *count)
{
    if (count)
        *count = tqvec_results_count(r, q);
    return r && q < r->nq && r->counts[q] ? &r->matches[q * r->k] : NULL;
}

int tqvec_results_export(const tqvec_results *r, size_t q, tqvec_results_out *out)
{
    if (!out)
        return TQVEC_EARG;
    size_t n;
    const tqvec_match *m = tqvec_results_list(r, q, &n);
    const bool attrs = out->attrs_lens != NULL;
    size_t kb = 0, ab = 0;
    for (size_t i = 0; i < n; i++) {
        kb += m[i].key_len;
        ab += attrs && m[i].attrs ? m[i].attrs_len : 0;
    }
    out->count = n;
    out->keys_bytes = kb;
    out->attrs_bytes = ab;
    if ((n && (!out->scores || !out->key_lens)) || kb > out->keys_cap || (kb && !out->keys) ||
        (attrs && (ab > out->attrs_cap || (ab && !out->attrs))))
        return TQVEC_EARG;
    for (size_t i = 0, k = 0, a = 0; i < n; i++) {
        out->scores[i] = m[i].score;
        out->key_lens[i] = (uint32_t)m[i].key_len;
        memcpy(out->keys + k, m[i].key, m[i].key_len);
        k += m[i].key_len;
        if (attrs) {
            out->attrs_lens[i] = m[i].attrs ? (uint32_t)m[i].attrs_len : UINT32_MAX;
            if (m[i].attrs) {
                memcpy(out->attrs + a, m[i].attrs, m[i].attrs_len);
                a += m[i].attrs_len;
            }
        }
    }
    return TQVEC_OK;
}

void tqvec_results_free(tqvec_results *r)
{
    if (!r)
        return;
    tq_snapshot_release(r->snap);
    tq_free(r->counts);
    tq_free(r->matches);
    tq_free(r->owned);
    tq_free(r);
}

int tqvec_collection_sync(tqvec_collection *c, tqvec_error *err)
{
    if (!c)
        return api_error(err, TQVEC_EARG, "collection must not be NULL");
    tq_error e;
    return tq_collection_sync(c->c, &e) ? export_error(&e, err) : TQVEC_OK;
}

int tqvec_collection_compact(tqvec_collection *c, tqvec_error *err)
{
    if (!c)
        return api_error(err, TQVEC_EARG, "collection must not be NULL");
    tq_error e;
    return tq_collection_compact(c->c, &e) ? export_error(&e, err) : TQVEC_OK;
}

int tqvec_collection_wait_partitioned(tqvec_collection *c, tqvec_error *err)
{
    if (!c)
        return api_error(err, TQVEC_EARG, "collection must not be NULL");
    return tq_collection_wait_partitioned(c->c);
}

uint64_t tqvec_collection_partitions(tqvec_collection *c)
{
    if (!c)
        return 0;
    tq_collection_stats st;
    tq_collection_stats_get(c->c, &st);
    return st.partitions;
}

int tqvec_collection_verify(tqvec_collection *c, tqvec_error *err)
{
    if (!c)
        return api_error(err, TQVEC_EARG, "collection must not be NULL");
    tq_error e;
    return tq_collection_verify(c->c, &e) ? export_error(&e, err) : TQVEC_OK;
}

int tqvec_collection_get_info(tqvec_collection *c, tqvec_collection_info *info)
{
    if (!c || !info)
        return TQVEC_EARG;
    const tq_codec *codec = tq_collection_codec(c->c);
    const tq_config *cfg = &codec->cfg;
    tq_collection_stats st;
    tq_collection_stats_get(c->c, &st);
    *info = (tqvec_collection_info){
        .dim = cfg->d, .metric = (int)cfg->metric, .bits = (int)cfg->bits, .variant = (int)cfg->variant,
        .correction = (int)cfg->correction, .refine = (int)cfg->refine,
        .center = (int)tq_codec_center_in_effect(codec, st.live + st.deleted + st.mutable_rows > 0),
        .seed = cfg->seed, .count = st.live, .deleted = st.deleted, .segments = st.segments,
        .unsealed = st.mutable_rows, .log_bytes = st.wal_bytes, .torn_bytes = st.torn_bytes,
        .bytes_per_vector = tq_codec_bytes_per_vector(codec),
        .refine_bytes_per_vector = tq_codec_refine_bytes_per_vector(codec), .simd = tqvec_simd_level(),
        .codebook = public_codebook(cfg),
    };
    return TQVEC_OK;
}
