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
 * Partitioning (tq_flat_partition) reorders every row added so far by
 * partition, as a sealed segment is: those rows become the head, searched
 * by probing, and rows added later go to a flat tail that starts at the
 * next whole block. Ids stay the order of adds: the head keeps each row's
 * id, the tail's follow the head's count.
 *
 * Concurrency: tq_flat_add and tq_flat_partition need exclusive access;
 * searches only read and may run in parallel, each with its own scratch.
 */
#include "tq_index.h"

struct tq_flat {
    tq_codec codec;
    tq_encode_scratch scratch; /* used by add only */
    size_t n, cap_blocks;
    tq_rows_out rows;          /* cap_blocks blocks of each array the config keeps */
    /* After tq_flat_partition: rows [0, head) by partition, the tail at
     * [tail_start, n); without, head = tail_start = 0. */
    size_t head, tail_start;
    tq_partitioning part;
    tq_partitions part_view;
    uint32_t *ids;             /* head: the id of each row */
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
    tq_partitioning_free(&f->part);
    tq_free(f->ids);
    tq_free(f);
}

size_t tq_flat_count(const tq_flat *f)
{
    return f->head + (f->n - f->tail_start);
}

uint32_t tq_flat_nlist(const tq_flat *f)
{
    return f->part.nlist;
}

const tq_codec *tq_flat_codec(const tq_flat *f)
{
    return &f->codec;
}

tq_rows tq_flat_rows(const tq_flat *f)
{
    return tq_rows_view(&f->rows, f->n);
}

/* Rows [first, first + n) of the arrays, first a whole number of blocks. */
static tq_rows rows_from(const tq_flat *f, size_t first, size_t n)
{
    const tq_codec *c = &f->codec;
    const size_t d = c->cfg.d, b = first / TQ_SCAN_BLOCK;
    const tq_rows_out *r = &f->rows;
    return (tq_rows){
        .n = n,
        .code_blocks = r->code_blocks ? r->code_blocks + b * c->q.code_layout.block_bytes : NULL,
        .sign_blocks = r->sign_blocks ? r->sign_blocks + b * c->q.sign_layout.block_bytes : NULL,
        .sc = tq_scalars_of_block(&c->q, r->sc, b),
        .vectors = r->vectors ? r->vectors + first * d : NULL,
        .refine8 = r->refine8 ? r->refine8 + first * d : NULL,
        .half = r->half ? r->half + first * d : NULL,
        .lengths = r->lengths ? r->lengths + first : NULL,
    };
}

/* The head (partitioned) and the tail as the sets a search reads;
 * returns how many there are. */
static size_t flat_sets(const tq_flat *f, tq_rows sets[2])
{
    if (!f->part.nlist) {
        sets[0] = tq_flat_rows(f);
        return 1;
    }
    sets[0] = rows_from(f, 0, f->head);
    sets[0].parts = &f->part_view;
    sets[1] = rows_from(f, f->tail_start, f->n - f->tail_start);
    return 2;
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
    tq_advise_huge(q, new_n * size); /* before the zeroing touches the new part */
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
        grow((void **)&f->rows.sc, old, cap, tq_scalar_block_floats(&c->q) * sizeof(float)) ||
        grow((void **)&f->rows.vectors, old, cap, refine == TQ_REFINE_FP32 ? TQ_SCAN_BLOCK * d * sizeof(float) : 0) ||
        grow((void **)&f->rows.refine8, old, cap, refine == TQ_REFINE_CODE8 ? TQ_SCAN_BLOCK * d : 0) ||
        grow((void **)&f->rows.half, old, cap, refine == TQ_REFINE_FP16 ? TQ_SCAN_BLOCK * d * sizeof(uint16_t) : 0) ||
        grow((void **)&f->rows.lengths, old, cap,
             c->cfg.metric == TQ_METRIC_COSINE ? TQ_SCAN_BLOCK * sizeof(float) : 0))
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
    const bool set_mean = tq_codec_centers_add(c, f->n, n);
    int rc;
    if ((rc = reserve(f, f->n + n, err)))
        return rc;
    if (set_mean) {
        /* The mean reads (and checks) a sample; every row is still checked
         * as it is encoded, in cache, and a rejected batch takes its mean
         * away with it (checking all of it first was a second pass over a
         * batch too large for the caches). */
        const float **rows = tq_malloc(n * sizeof(*rows));
        if (!rows)
            return tq_err(err, TQ_ENOMEM, "out of memory for the centering mean");
        for (size_t i = 0; i < n; i++)
            rows[i] = x + i * d;
        rc = tq_codec_set_mean(&f->codec, rows, n, err);
        tq_free(rows);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n; i += ADD_CHUNK) {
        size_t end = i + ADD_CHUNK < n ? i + ADD_CHUNK : n;
        if ((rc = tq_codec_check_vectors(c, x, i, end, err))) {
            tq_codec_clear_rows(c, &f->rows, f->n, i);
            if (set_mean)
                tq_codec_drop_mean(&f->codec);
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
    tq_rows sets[2];
    const size_t nsets = flat_sets(f, sets);
    int rc = tq_search(&f->codec, sets, nsets, queries, nq, opts, out, counts, err);
    if (rc || !f->part.nlist)
        return rc;
    /* Search ids number the head's rows, then the tail's: the tail's are
     * already the ids of adds. */
    for (size_t i = 0; i < nq; i++)
        for (size_t j = 0; j < counts[i]; j++) {
            tq_hit *h = &out[i * opts->k + j];
            if (h->id < f->head)
                h->id = f->ids[h->id];
        }
    return TQ_OK;
}

int tq_flat_partition(tq_flat *f, uint32_t nlist, unsigned threads, tq_error *err)
{
    const tq_codec *c = &f->codec;
    const size_t count = tq_flat_count(f);
    if (count == 0)
        return TQ_OK;
    if (count > UINT32_MAX)
        return tq_err(err, TQ_EUNSUPPORTED, "a partitioned index holds at most 2^32 - 1 vectors, not %zu", count);
    if (nlist == 0)
        nlist = tq_partition_default_nlist(c, count);
    /* What gets partitioned: every row in id order in one set. Before a
     * first partitioning that is the index's own rows; after, the head as
     * it was and then the tail, copied into one. */
    tq_rows_out all = {0}, sorted = {0};
    tq_partitioning part = {0};
    const bool copy = f->part.nlist > 0;
    uint32_t *ids = tq_malloc(count * sizeof(uint32_t)), *all_ids = copy ? tq_malloc(count * sizeof(uint32_t)) : NULL;
    int rc = !ids || (copy && !all_ids) ? TQ_ENOMEM : copy ? tq_rows_out_alloc(c, count, &all) : TQ_OK;
    if (rc)
        goto done;
    tq_rows all_view = tq_flat_rows(f);
    if (copy) {
        tq_rows sets[2];
        const size_t nsets = flat_sets(f, sets);
        for (size_t s = 0, i = 0; s < nsets; s++)
            for (size_t r = 0; r < sets[s].n; r++, i++) {
                tq_codec_row_copy(c, &sets[s], r, &all, i);
                all_ids[i] = s == 0 ? f->ids[r] : (uint32_t)i;
            }
        all_view = tq_rows_view(&all, count);
    }
    if ((rc = tq_partition_rows(c, &all_view, nlist, c->cfg.seed, threads, NULL, &part, err)))
        goto fail;
    if ((rc = tq_rows_gather(c, &all_view, part.order, count, &sorted)))
        goto done;
    for (size_t i = 0; i < count; i++)
        ids[i] = copy ? all_ids[part.order[i]] : part.order[i];
    /* Nothing below fails: switch. */
    tq_rows_out_free(&f->rows);
    f->rows = sorted;
    f->cap_blocks = (count + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK + 1;
    f->head = count;
    f->tail_start = f->n = (count + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK * TQ_SCAN_BLOCK;
    tq_partitioning_free(&f->part);
    f->part = part;
    f->part_view = tq_partitioning_view(&f->part);
    tq_free(f->ids);
    f->ids = ids;
    ids = NULL;
    memset(&part, 0, sizeof(part));
done:
    if (rc == TQ_ENOMEM)
        tq_err(err, rc, "out of memory partitioning %zu vectors", count);
fail:
    tq_partitioning_free(&part);
    tq_rows_out_free(&all);
    tq_free(ids);
    tq_free(all_ids);
    return rc;
}
