/*
 * Segment files: a sealed set of rows, written once and then only mapped.
 *
 * Layout (little-endian):
 *   header, 512 bytes: magic "TQVECSEG", u32 format version, u32 header
 *     size; the codec config (u32 d, metric, bits, variant, correction,
 *     refine, center, codebook (0 before format 7); u64 seed); u64 rows; u32 section count, u32 0;
 *     the section table, one entry per section {u32 kind, u32 0, u64 offset,
 *     u64 length, u64 XXH3-64 of the section}; zeros; and at byte 504 the
 *     XXH3-64 of bytes [0, 504)
 *   sections in kind order, each starting on a 64-byte boundary so the
 *     scan reads aligned blocks straight from the mapping: codes, signs,
 *     scalars (from format 6 planes by block, whole blocks; before, 12
 *     bytes a row), refine data (the arrays of index/'s tq_rows, byte for
 *     byte),
 *     keys and attributes (u64 offsets[rows + 1], then the bytes),
 *     under cosine the inputs' lengths (a float per row), and for a
 *     partitioned segment its partitions (u32 nlist, u32 npoints, the
 *     centroids as nlist * d floats, u32 offsets[nlist + 1]: the first row
 *     of each, the full scan's calibrated recall as a float, from format
 *     5 the share of a query's K nearest it keeps at each re-rank depth
 *     1, 2, 4, 8, 16 for K = 1 .. 10 (TQ_CALIB_DEPTHS * TQ_CURVE_K
 *     floats), and the probe curve as npoints points of TQ_CURVE_STRIDE
 *     floats)
 *
 * Opening checks the header, the table against the config (every length a
 * fixed-size section must have), and the key section's checksum, since
 * the key map reads every key anyway, and of the partitions section, whose
 * offsets steer the scan; it also bounds-checks the attribute and
 * partition offsets, so no damaged offset can send a read outside the
 * mapping. The
 * large sections are hashed by tq_segment_verify, at open when asked or
 * before the segment's first search: opening never reads a large segment
 * end to end, and no search reads bytes that were not checked.
 */
#include "store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static const char segment_magic[8] = {'T', 'Q', 'V', 'E', 'C', 'S', 'E', 'G'};
/* Format 6: the scalars are planes by block (see tq_scalar_planes), 8
 * bytes a row for mse instead of 12; older files' rows of scalars are
 * rewritten so in memory at open.
 * Format 5: the partitions carry the full scan's recall at each re-rank
 * depth (a format-4 file's, only at tq_target_rerank's, still serves).
 * Format 4: an eighth section, the partitions (empty when flat). Format 3:
 * a seventh section, the lengths of cosine inputs. Format 2:
 * 3-bit codes in the sextet layout. Older files are still read: formats 1
 * and 2 have six sections (cosine rows of them get back unit vectors), and
 * a format-1 file's 3-bit codes (whole nibbles then; every other width the
 * same bytes) are rewritten in memory at open.
 * Format 7: format 6 whose header's u32 after center names the codebook
 * (tq_codebook_kind; 0 before, the scalar codebook). Written only for a
 * vector codebook, so scalar segments stay readable by builds from before
 * the choice, and those refuse the others rather than misread them. */
#define SEGMENT_VERSION 7u

static uint32_t segment_version(const tq_config *cfg)
{
    return cfg->codebook == TQ_CODEBOOK_SCALAR ? 6u : 7u;
}
#define HEADER_BYTES 512u
#define HEADER_SUM_AT 504u
#define TABLE_AT 72u
#define SECTION_ALIGN 64u

static const char *const section_names[TQ_SEC_COUNT + 1] = {
    "?", "codes", "signs", "scalars", "refine", "keys", "attributes", "lengths", "partitions"};

static unsigned sections_of(uint32_t version)
{
    return version >= 4 ? TQ_SEC_PARTITIONS : version == 3 ? TQ_SEC_LENGTHS : TQ_SEC_ATTRS;
}

/* Floats of a partitions section's recalls: the full scan's, and from
 * format 5 the same at each re-rank depth. */
static uint64_t quality_floats(uint32_t version)
{
    return version >= 5 ? 1 + TQ_CALIB_DEPTHS * TQ_CURVE_K : 1;
}

/* Bytes of a partitions section of nlist partitions at dimension d. */
static uint64_t partitions_bytes(uint32_t version, uint64_t nlist, uint64_t d, uint64_t npoints)
{
    return 8 + nlist * d * sizeof(float) + (nlist + 1) * sizeof(uint32_t) +
           (quality_floats(version) + npoints * TQ_CURVE_STRIDE) * sizeof(float);
}

static uint64_t align_up(uint64_t n)
{
    return (n + SECTION_ALIGN - 1) & ~(uint64_t)(SECTION_ALIGN - 1);
}

/* Lengths the fixed-size sections must have for this config and row count;
 * UINT64_MAX for the variable ones. */
static void fixed_lengths(const tq_codec *c, uint32_t version, uint64_t rows, uint64_t len[TQ_SEC_COUNT + 1])
{
    const tq_quantizer *q = &c->q;
    const uint64_t blocks = (rows + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK;
    tq_scan_layout codes = q->code_layout;
    if (version == 1 && q->mse_bits)
        tq_scan_layout_init_format1(&codes, q->d, q->mse_bits);
    len[TQ_SEC_CODES] = q->mse_bits ? blocks * codes.block_bytes : 0;
    len[TQ_SEC_SIGNS] = q->variant == TQ_VARIANT_PROD ? blocks * q->sign_layout.block_bytes : 0;
    len[TQ_SEC_SCALARS] = version >= 6 ? blocks * tq_scalar_block_floats(q) * sizeof(float)
                                       : rows * sizeof(tq_code_scalars);
    len[TQ_SEC_REFINE] = rows * tq_codec_refine_bytes_per_vector(c);
    len[TQ_SEC_KEYS] = UINT64_MAX;
    len[TQ_SEC_ATTRS] = UINT64_MAX;
    len[TQ_SEC_LENGTHS] = version >= 3 && c->cfg.metric == TQ_METRIC_COSINE ? rows * sizeof(float) : 0;
    len[TQ_SEC_PARTITIONS] = UINT64_MAX;
}


/* ----------------------------------------------------------------- write */

/* The file being written, through a buffer: name sections are written an
 * offset and a key at a time. */
typedef struct out_file {
    int fd;
    const char *path;
    uint64_t off;         /* bytes emitted, header included */
    XXH3_state_t *hash;   /* of the current section */
    uint8_t *buf;
    size_t used;
} out_file;

#define OUT_BUFFER (1u << 20)

static int flush_out(out_file *o, tq_error *err)
{
    int rc = o->used ? tq_write_all(o->fd, o->buf, o->used, o->path, err) : TQ_OK;
    o->used = 0;
    return rc;
}

static int put_raw(out_file *o, const void *p, size_t n, tq_error *err)
{
    o->off += n;
    if (n >= OUT_BUFFER) {
        int rc = flush_out(o, err);
        return rc ? rc : tq_write_all(o->fd, p, n, o->path, err);
    }
    if (o->used + n > OUT_BUFFER) {
        int rc = flush_out(o, err);
        if (rc)
            return rc;
    }
    memcpy(o->buf + o->used, p, n);
    o->used += n;
    return TQ_OK;
}

static int emit(out_file *o, const void *p, size_t n, tq_error *err)
{
    if (n == 0)
        return TQ_OK;
    XXH3_64bits_update(o->hash, p, n);
    return put_raw(o, p, n, err);
}

static int pad_to_alignment(out_file *o, tq_error *err)
{
    static const uint8_t zeros[SECTION_ALIGN];
    size_t pad = (size_t)(align_up(o->off) - o->off);
    return pad ? put_raw(o, zeros, pad, err) : TQ_OK;
}

/* Offsets then bytes of the keys (or attributes) of every row. */
static int emit_names(out_file *o, uint64_t rows, const char *const *bytes, const uint32_t *lens, tq_error *err)
{
    uint64_t at = 0;
    int rc = emit(o, &at, sizeof(at), err);
    for (uint64_t i = 0; i < rows && !rc; i++) {
        at += lens ? lens[i] : 0;
        rc = emit(o, &at, sizeof(at), err);
    }
    for (uint64_t i = 0; i < rows && !rc; i++)
        if (lens && lens[i])
            rc = emit(o, bytes[i], lens[i], err);
    return rc;
}

static int emit_partitions(out_file *o, const tq_codec *c, const tq_partitions *p, tq_error *err)
{
    if (!p)
        return TQ_OK;
    const uint32_t head[2] = {p->nlist, p->npoints};
    int rc = emit(o, head, sizeof(head), err);
    if (!rc)
        rc = emit(o, p->centroids, (size_t)p->nlist * c->cfg.d * sizeof(float), err);
    if (!rc)
        rc = emit(o, p->offsets, ((size_t)p->nlist + 1) * sizeof(uint32_t), err);
    if (!rc)
        rc = emit(o, &p->quality, sizeof(float), err);
    if (!rc)
        rc = emit(o, p->quality_at, sizeof(p->quality_at), err);
    if (!rc)
        rc = emit(o, p->curve, (size_t)p->npoints * TQ_CURVE_STRIDE * sizeof(float), err);
    return rc;
}

int tq_segment_write(const char *path, const tq_codec *c, const tq_rows *rows, const tq_row_names *names,
                     tq_error *err)
{
    const uint64_t n = rows->n;
    uint64_t len[TQ_SEC_COUNT + 1];
    fixed_lengths(c, segment_version(&c->cfg), n, len);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return tq_err_sys(err, TQ_EIO, errno, "%s: create", path);
    XXH3_state_t *hash = XXH3_createState();
    uint8_t *buf = tq_malloc(OUT_BUFFER);
    if (!hash || !buf) {
        XXH3_freeState(hash);
        tq_free(buf);
        close(fd);
        unlink(path);
        return tq_err(err, TQ_ENOMEM, "out of memory writing %s", path);
    }
    uint8_t header[HEADER_BYTES] = {0};
    uint64_t sec_off[TQ_SEC_COUNT + 1] = {0}, sec_len[TQ_SEC_COUNT + 1] = {0}, sec_sum[TQ_SEC_COUNT + 1] = {0};
    out_file o = {.fd = fd, .path = path, .off = HEADER_BYTES, .hash = hash, .buf = buf};
    /* The header goes last, once the table is known; reserve its bytes. */
    int rc = lseek(fd, HEADER_BYTES, SEEK_SET) < 0 ? tq_err_sys(err, TQ_EIO, errno, "%s: seek", path) : TQ_OK;
    const void *fixed[TQ_SEC_COUNT + 1] = {NULL, rows->code_blocks, rows->sign_blocks, rows->sc,
                                           NULL, NULL,              NULL,              rows->lengths};
    fixed[TQ_SEC_REFINE] = c->cfg.refine == TQ_REFINE_FP32   ? (const void *)rows->vectors
                           : c->cfg.refine == TQ_REFINE_FP16 ? (const void *)rows->half
                                                             : (const void *)rows->refine8;
    for (unsigned kind = 1; kind <= TQ_SEC_COUNT && !rc; kind++) {
        XXH3_64bits_reset(hash);
        sec_off[kind] = o.off;
        if (kind == TQ_SEC_KEYS)
            rc = emit_names(&o, n, names->key, names->key_len, err);
        else if (kind == TQ_SEC_ATTRS)
            rc = emit_names(&o, n, names->attr, names->attr_len, err);
        else if (kind == TQ_SEC_PARTITIONS)
            rc = emit_partitions(&o, c, rows->parts, err);
        else
            rc = emit(&o, fixed[kind], (size_t)len[kind], err);
        sec_len[kind] = o.off - sec_off[kind];
        sec_sum[kind] = XXH3_64bits_digest(hash);
        if (!rc)
            rc = pad_to_alignment(&o, err);
    }
    if (!rc)
        rc = flush_out(&o, err);
    XXH3_freeState(hash);
    tq_free(buf);
    if (!rc) {
        const tq_config *cfg = &c->cfg;
        memcpy(header, segment_magic, 8);
        uint32_t u32[10] = {segment_version(cfg), HEADER_BYTES, cfg->d, (uint32_t)cfg->metric, cfg->bits,
                            (uint32_t)cfg->variant, (uint32_t)cfg->correction, (uint32_t)cfg->refine,
                            (uint32_t)cfg->center, (uint32_t)cfg->codebook};
        memcpy(header + 8, u32, sizeof(u32));
        memcpy(header + 48, &cfg->seed, 8);
        memcpy(header + 56, &n, 8);
        uint32_t count[2] = {TQ_SEC_COUNT, 0};
        memcpy(header + 64, count, 8);
        for (unsigned kind = 1; kind <= TQ_SEC_COUNT; kind++) {
            uint8_t *e = header + TABLE_AT + (kind - 1) * 32;
            uint32_t k2[2] = {kind, 0};
            memcpy(e, k2, 8);
            memcpy(e + 8, &sec_off[kind], 8);
            memcpy(e + 16, &sec_len[kind], 8);
            memcpy(e + 24, &sec_sum[kind], 8);
        }
        uint64_t sum = XXH3_64bits(header, HEADER_SUM_AT);
        memcpy(header + HEADER_SUM_AT, &sum, 8);
        if (pwrite(fd, header, HEADER_BYTES, 0) != (ssize_t)HEADER_BYTES)
            rc = tq_err_sys(err, TQ_EIO, errno, "%s: writing the header", path);
    }
    if (!rc)
        rc = tq_sync_fd(fd, path, err);
    close(fd);
    if (!rc)
        rc = tq_sync_parent_dir(path, err);
    if (rc)
        unlink(path);
    return rc;
}

/* ------------------------------------------------------------------ open */

static int corrupt(tq_error *err, const char *path, const char *what)
{
    return tq_err(err, TQ_ECORRUPT, "%s: %s", path, what);
}

/* Offsets of a name section: rows + 1 of them, from 0, never decreasing,
 * the last one equal to the bytes after the table. */
static bool names_ok(const uint8_t *sec, uint64_t len, uint64_t rows)
{
    if (rows + 1 > len / 8)
        return false;
    const uint64_t room = len - (rows + 1) * 8;
    uint64_t prev = 0;
    for (uint64_t i = 0; i <= rows; i++) {
        uint64_t at = tq_get64(sec + i * 8);
        if ((i == 0 && at != 0) || at < prev || at > room)
            return false;
        prev = at;
    }
    return prev == room;
}

/* The partitions section, checked whole: its offsets decide which rows a
 * search reads, so they are trusted only once hashed and found to run
 * from 0 to the row count without going back. */
static int open_partitions(tq_segment_file *out, const tq_codec *c, uint32_t version, uint64_t rows, tq_error *err)
{
    const uint8_t *sec = out->map + out->sec_off[TQ_SEC_PARTITIONS];
    const uint64_t len = out->sec_len[TQ_SEC_PARTITIONS];
    if (XXH3_64bits(sec, len) != out->sec_sum[TQ_SEC_PARTITIONS])
        return corrupt(err, out->path, "section partitions fails its checksum");
    const uint32_t nlist = len >= 8 ? tq_get32(sec) : 0, npoints = len >= 8 ? tq_get32(sec + 4) : 0;
    if (nlist == 0 || nlist > rows || nlist > TQ_MAX_NLIST || npoints > TQ_MAX_CURVE ||
        len != partitions_bytes(version, nlist, c->cfg.d, npoints))
        return corrupt(err, out->path, "section partitions has an impossible partition count");
    const uint32_t *offsets = (const uint32_t *)(const void *)(sec + 8 + (size_t)nlist * c->cfg.d * sizeof(float));
    for (uint32_t p = 0; p < nlist; p++)
        if (offsets[p] > offsets[p + 1])
            return corrupt(err, out->path, "section partitions has offsets out of order");
    if (offsets[0] != 0 || offsets[nlist] != rows)
        return corrupt(err, out->path, "section partitions does not cover the rows");
    out->half_norms = tq_malloc(nlist * sizeof(float));
    const float *centroids = (const float *)(const void *)(sec + 8);
    out->table = tq_centroid_table_new(centroids, nlist, c->cfg.d);
    if (!out->half_norms || !out->table)
        return tq_err(err, TQ_ENOMEM, "out of memory opening %s", out->path);
    tq_partition_half_norms(centroids, nlist, c->cfg.d, out->half_norms);
    const float *quality = (const float *)(const void *)(offsets + nlist + 1);
    out->parts = (tq_partitions){.nlist = nlist, .centroids = centroids, .table = out->table,
                                 .half_norms = out->half_norms, .offsets = offsets, .npoints = npoints,
                                 .quality = quality[0], .curve = quality + quality_floats(version)};
    if (version >= 5)
        memcpy(out->parts.quality_at, quality + 1, sizeof(out->parts.quality_at));
    return TQ_OK;
}

int tq_segment_open(const char *path, const tq_codec *c, tq_segment_file *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    int fd;
    uint64_t size;
    int rc = tq_open_sized(path, O_RDONLY, &fd, &size, err);
    if (rc)
        return rc;
    if (size < HEADER_BYTES) {
        close(fd);
        return corrupt(err, path, "shorter than a segment header");
    }
    uint8_t *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return tq_err_sys(err, TQ_EIO, e, "%s: mmap", path);
    out->map = map;
    out->size = (size_t)size;
    out->path = tq_strdup(path);
    const tq_config *cfg = &c->cfg;
    if (!out->path) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory opening %s", path);
        goto fail;
    }
    if (memcmp(map, segment_magic, 8) != 0) {
        rc = corrupt(err, path, "not a tqvec segment (bad magic)");
        goto fail;
    }
    if (XXH3_64bits(map, HEADER_SUM_AT) != tq_get64(map + HEADER_SUM_AT)) {
        rc = corrupt(err, path, "segment header fails its checksum");
        goto fail;
    }
    const uint32_t version = tq_get32(map + 8);
    if (version < 1 || version > SEGMENT_VERSION || tq_get32(map + 12) != HEADER_BYTES) {
        rc = tq_err(err, TQ_EUNSUPPORTED, "%s: segment format version %u, this build reads 1 to %u", path,
                    version, SEGMENT_VERSION);
        goto fail;
    }
    if (tq_get32(map + 16) != cfg->d || tq_get32(map + 20) != (uint32_t)cfg->metric || tq_get32(map + 24) != cfg->bits ||
        tq_get32(map + 28) != (uint32_t)cfg->variant || tq_get32(map + 32) != (uint32_t)cfg->correction ||
        tq_get32(map + 36) != (uint32_t)cfg->refine || tq_get32(map + 40) != (uint32_t)cfg->center ||
        tq_get32(map + 44) != (uint32_t)cfg->codebook || tq_get64(map + 48) != cfg->seed) {
        rc = corrupt(err, path, "segment was encoded with a different configuration than the collection's");
        goto fail;
    }
    const uint64_t rows = tq_get64(map + 56);
    out->sections = sections_of(version);
    if (tq_get32(map + 64) != out->sections || rows > (uint64_t)1 << 40) {
        rc = corrupt(err, path, "segment header has an impossible section or row count");
        goto fail;
    }
    uint64_t want[TQ_SEC_COUNT + 1];
    fixed_lengths(c, version, rows, want);
    for (unsigned kind = 1; kind <= out->sections; kind++) {
        const uint8_t *entry = map + TABLE_AT + (kind - 1) * 32;
        uint64_t off = tq_get64(entry + 8), len = tq_get64(entry + 16);
        if (tq_get32(entry) != kind || off % SECTION_ALIGN || off < HEADER_BYTES || off > out->size ||
            len > out->size - off || (want[kind] != UINT64_MAX && len != want[kind])) {
            rc = tq_err(err, TQ_ECORRUPT, "%s: section table entry for %s is inconsistent with the file", path,
                        section_names[kind]);
            goto fail;
        }
        out->sec_off[kind] = off;
        out->sec_len[kind] = len;
        out->sec_sum[kind] = tq_get64(entry + 24);
    }
    if (XXH3_64bits(map + out->sec_off[TQ_SEC_KEYS], out->sec_len[TQ_SEC_KEYS]) != out->sec_sum[TQ_SEC_KEYS]) {
        rc = corrupt(err, path, "section keys fails its checksum");
        goto fail;
    }
    for (unsigned kind = TQ_SEC_KEYS; kind <= TQ_SEC_ATTRS; kind++)
        if (!names_ok(map + out->sec_off[kind], out->sec_len[kind], rows)) {
            rc = tq_err(err, TQ_ECORRUPT, "%s: section %s has offsets out of order or out of bounds", path,
                        section_names[kind]);
            goto fail;
        }
    if (out->sections >= TQ_SEC_PARTITIONS && out->sec_len[TQ_SEC_PARTITIONS] &&
        (rc = open_partitions(out, c, version, rows, err)))
        goto fail;
    out->rows = rows;
    out->key_off = (const uint64_t *)(const void *)(map + out->sec_off[TQ_SEC_KEYS]);
    out->key_bytes = (const char *)map + out->sec_off[TQ_SEC_KEYS] + (rows + 1) * 8;
    out->attr_off = (const uint64_t *)(const void *)(map + out->sec_off[TQ_SEC_ATTRS]);
    out->attr_bytes = (const char *)map + out->sec_off[TQ_SEC_ATTRS] + (rows + 1) * 8;
    const uint8_t *code_blocks = out->sec_len[TQ_SEC_CODES] ? map + out->sec_off[TQ_SEC_CODES] : NULL;
    if (version == 1 && code_blocks && tq_codec_format1_differs(c)) {
        /* Read once here, before the section is hashed (its first search
         * or verify still checks the file's bytes); damaged codes can only
         * give wrong codes, never a read outside the mapping. */
        const uint64_t blocks = (rows + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK;
        if (!(out->converted_codes = tq_malloc(blocks * c->q.code_layout.block_bytes + 1))) {
            rc = tq_err(err, TQ_ENOMEM, "out of memory converting the 3-bit codes of %s", path);
            goto fail;
        }
        tq_codec_blocks_from_format1(c, code_blocks, blocks, out->converted_codes);
        code_blocks = out->converted_codes;
    }
    const float *sc = (const float *)(const void *)(map + out->sec_off[TQ_SEC_SCALARS]);
    if (version < 6) {
        /* Rows of scalars, 12 bytes each, are read once here into planes,
         * as format 1's codes are (a damaged scalar can only give a wrong
         * key, never a read outside the mapping; verify still hashes the
         * file's bytes). */
        const uint64_t blocks = (rows + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK;
        if (!(out->converted_scalars = tq_malloc((blocks ? blocks : 1) * tq_scalar_block_floats(&c->q) * sizeof(float)))) {
            rc = tq_err(err, TQ_ENOMEM, "out of memory converting the scalars of %s", path);
            goto fail;
        }
        tq_scalars_from_rows(&c->q, (const tq_code_scalars *)(const void *)sc, rows, out->converted_scalars);
        sc = out->converted_scalars;
    }
    out->view = (tq_rows){
        .n = rows,
        .code_blocks = code_blocks,
        .sign_blocks = out->sec_len[TQ_SEC_SIGNS] ? map + out->sec_off[TQ_SEC_SIGNS] : NULL,
        .sc = sc,
        .vectors = cfg->refine == TQ_REFINE_FP32 ? (const float *)(const void *)(map + out->sec_off[TQ_SEC_REFINE])
                                                 : NULL,
        .refine8 = cfg->refine == TQ_REFINE_CODE8 ? map + out->sec_off[TQ_SEC_REFINE] : NULL,
        .half = cfg->refine == TQ_REFINE_FP16 ? (const uint16_t *)(const void *)(map + out->sec_off[TQ_SEC_REFINE])
                                              : NULL,
        .lengths = out->sec_len[TQ_SEC_LENGTHS] ? (const float *)(const void *)(map + out->sec_off[TQ_SEC_LENGTHS])
                                                : NULL,
        .parts = out->parts.nlist ? &out->parts : NULL,
    };
    return TQ_OK;
fail:
    tq_segment_close(out);
    return rc;
}

int tq_segment_verify(const tq_segment_file *s, tq_error *err)
{
    for (unsigned kind = 1; kind <= s->sections; kind++)
        if (XXH3_64bits(s->map + s->sec_off[kind], s->sec_len[kind]) != s->sec_sum[kind])
            return tq_err(err, TQ_ECORRUPT, "%s: section %s fails its checksum", s->path, section_names[kind]);
    return TQ_OK;
}

void tq_segment_close(tq_segment_file *s)
{
    if (s->map)
        munmap(s->map, s->size);
    tq_free(s->path);
    tq_free(s->converted_codes);
    tq_free(s->converted_scalars);
    tq_free(s->half_norms);
    tq_centroid_table_free(s->table);
    memset(s, 0, sizeof(*s));
}
