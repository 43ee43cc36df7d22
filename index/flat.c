/*
 * The in-memory index: one growing set of rows (the codec encodes them,
 * the search module searches them). Arrays grow by doubling and are
 * zeroed as they grow, so rows not yet written are zero nibbles.
 *
 * An add checks and encodes a chunk of vectors at a time: the check pulls
 * the chunk into cache for the encode instead of reading the whole batch
 * from memory twice. A bad vector unwinds the rows already encoded, so an
 * add is all or nothing. With centering on the first batch the mean needs
 * every vector of that batch checked first.
 *
 * Concurrency: tq_flat_add needs exclusive access; searches only read and
 * may run in parallel, each with its own scratch.
 */
#include "tq_index.h"

struct tq_flat {
    tq_codec codec;
    tq_encode_scratch scratch; /* used by add only */
    size_t n, cap_blocks;
    tq_rows_out rows;          /* cap_blocks blocks of each array the config keeps */
};

int tq_flat_create(const tq_config *cfg, tq_flat **out, tq_error *err)
{
    *out = NULL;
    tq_flat *f = tq_calloc(1, sizeof(*f));
    if (!f)
        return tq_err(err, TQ_ENOMEM, "out of memory for an index");
    int rc = tq_codec_init(&f->codec, cfg, err);
    if (rc) {
        tq_free(f);
        return rc;
    }
    if (tq_encode_scratch_init(&f->scratch, cfg->d)) {
        tq_flat_free(f);
        return tq_err(err, TQ_ENOMEM, "out of memory for encode scratch");
    }
    *out = f;
    return TQ_OK;
}

void tq_flat_free(tq_flat *f)
{
    if (!f)
        return;
    tq_codec_free(&f->codec);
    tq_encode_scratch_free(&f->scratch);
    tq_rows_out_free(&f->rows);
    tq_free(f);
}

size_t tq_flat_count(const tq_flat *f)
{
    return f->n;
}

const tq_codec *tq_flat_codec(const tq_flat *f)
{
    return &f->codec;
}

tq_rows tq_flat_rows(const tq_flat *f)
{
    return tq_rows_view(&f->rows, f->n);
}

/* Grow one array from old_n to new_n elements of `size` bytes, zeroing the
 * new part. On failure *p is untouched. */
static int grow(void **p, size_t old_n, size_t new_n, size_t size)
{
    if (size == 0)
        return TQ_OK;
    uint8_t *q = tq_realloc(*p, new_n * size);
    if (!q)
        return TQ_ENOMEM;
    memset(q + old_n * size, 0, (new_n - old_n) * size);
    *p = q;
    return TQ_OK;
}

/* Room for `want` rows. On failure the arrays that did grow keep their
 * contents and n is unchanged, so the index stays consistent. */
static int reserve(tq_flat *f, size_t want, tq_error *err)
{
    size_t blocks = (want + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK;
    if (blocks <= f->cap_blocks)
        return TQ_OK;
    size_t cap = f->cap_blocks ? f->cap_blocks : 32;
    while (cap < blocks)
        cap *= 2;
    const tq_codec *c = &f->codec;
    const size_t old = f->cap_blocks, d = c->cfg.d;
    const bool prod = c->q.variant == TQ_VARIANT_PROD;
    const tq_refine refine = c->cfg.refine;
    if (grow((void **)&f->rows.code_blocks, old, cap, c->q.mse_bits ? c->q.code_layout.block_bytes : 0) ||
        grow((void **)&f->rows.sign_blocks, old, cap, prod ? c->q.sign_layout.block_bytes : 0) ||
        grow((void **)&f->rows.sc, old, cap, TQ_SCAN_BLOCK * sizeof(tq_code_scalars)) ||
        grow((void **)&f->rows.vectors, old, cap, refine == TQ_REFINE_FP32 ? TQ_SCAN_BLOCK * d * sizeof(float) : 0) ||
        grow((void **)&f->rows.refine8, old, cap, refine == TQ_REFINE_CODE8 ? TQ_SCAN_BLOCK * d : 0) ||
        grow((void **)&f->rows.half, old, cap, refine == TQ_REFINE_FP16 ? TQ_SCAN_BLOCK * d * sizeof(uint16_t) : 0))
        return tq_err(err, TQ_ENOMEM, "out of memory growing the index to %zu vectors", cap * TQ_SCAN_BLOCK);
    f->cap_blocks = cap;
    return TQ_OK;
}

/* Vectors checked and encoded per step of an add. */
#define ADD_CHUNK 64

int tq_flat_add(tq_flat *f, const float *x, size_t n, tq_error *err)
{
    const tq_codec *c = &f->codec;
    const size_t d = c->cfg.d;
    const bool set_mean = c->cfg.center == TQ_CENTER_FIRST_BATCH && !c->mean && n > 0;
    size_t checked = 0;
    int rc;
    if (set_mean) {
        if ((rc = tq_codec_check_vectors(c, x, 0, n, err)))
            return rc;
        checked = n;
    }
    if ((rc = reserve(f, f->n + n, err)))
        return rc;
    if (set_mean && (rc = tq_codec_set_mean(&f->codec, x, n, err)))
        return rc;
    for (size_t i = 0; i < n; i += ADD_CHUNK) {
        size_t end = i + ADD_CHUNK < n ? i + ADD_CHUNK : n;
        if (end > checked && (rc = tq_codec_check_vectors(c, x, i, end, err))) {
            tq_codec_clear_rows(c, &f->rows, f->n, i);
            return rc;
        }
        for (size_t j = i; j < end; j++)
            tq_codec_encode(c, &f->scratch, x + j * d, &f->rows, f->n + j);
    }
    f->n += n;
    return TQ_OK;
}

int tq_flat_search_batch(const tq_flat *f, const float *queries, size_t nq, const tq_search_opts *opts,
                         tq_hit *out, size_t *counts, tq_error *err)
{
    tq_rows rows = tq_flat_rows(f);
    return tq_search(&f->codec, &rows, 1, queries, nq, opts, out, counts, err);
}
