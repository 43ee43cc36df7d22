/*
 * The manifest is a collection's root: the configuration, the centering
 * mean, the live segments with their tombstone files, and which log is
 * live. Every change to the set of files is a new manifest, written beside
 * the old one and renamed over it, so the rename is the commit point; files
 * no manifest names are leftovers of an interrupted change and are removed
 * at open.
 *
 * MANIFEST (little-endian): magic "TQVECMAN", u32 format version, u32 0;
 * u32 d, metric, bits, variant, correction, refine, center, codebook (from
 * version 2; 0 before); u64 seed;
 * u64 next file id, u64 live log id, u64 the log's first sequence number;
 * u32 segment count, u32 mean present; per segment u64 id, u64 rows, u64
 * tombstone file id; d floats of mean when present; XXH3-64 of all before.
 *
 * Tombstone file (seg/<id>.del): magic "TQVECDEL", u32 version, u32 0,
 * u64 rows, u64 deleted count, (rows + 31) / 32 u32 words, XXH3-64 of all
 * before. A new one is written whenever a segment's deletions are made
 * durable; the log holds the deletions in between.
 */
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static const char manifest_magic[8] = {'T', 'Q', 'V', 'E', 'C', 'M', 'A', 'N'};
static const char tombstone_magic[8] = {'T', 'Q', 'V', 'E', 'C', 'D', 'E', 'L'};
/* Version 2: the u32 after center names the codebook (tq_codebook_kind;
 * 1 wrote 0, the scalar codebook). A collection with scalar codes still
 * writes 1, so builds from before the choice keep opening it; a vector
 * codebook's writes 2, which they refuse rather than misread. */
#define MANIFEST_VERSION 2u

static uint32_t manifest_version(const tq_config *c)
{
    return c->codebook == TQ_CODEBOOK_SCALAR ? 1u : 2u;
}
#define TOMBSTONE_VERSION 1u
#define FIXED_BYTES 88u /* through the mean-present flag */
#define MAX_SEGMENTS (1u << 20)

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *q = tq_realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put32(buf *b, uint32_t v)
{
    put(b, &v, 4);
}

static void put64(buf *b, uint64_t v)
{
    put(b, &v, 8);
}

/* Write bytes to path through path.tmp and a rename, fsyncing both the file
 * and the directory. */
/* *committed turns true once the rename has happened: from then on the new
 * file is the one readers see, even if the directory fsync after it fails
 * (then it may not survive a machine crash, and the caller must keep what
 * the old file named). */
static int replace_file(const char *path, const uint8_t *bytes, size_t n, bool *committed, tq_error *err)
{
    *committed = false;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return tq_err(err, TQ_EARG, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return tq_err_sys(err, TQ_EIO, errno, "%s: create", tmp);
    int rc = tq_write_all(fd, bytes, n, tmp, err);
    if (!rc)
        rc = tq_sync_fd(fd, tmp, err);
    close(fd);
    if (!rc && rename(tmp, path) != 0)
        rc = tq_err_sys(err, TQ_EIO, errno, "%s: rename to %s", tmp, path);
    if (rc) {
        unlink(tmp);
        return rc;
    }
    *committed = true;
    return tq_sync_parent_dir(path, err);
}

/* The whole of a small file, allocated. */
static int slurp(const char *path, uint8_t **out, size_t *len, tq_error *err)
{
    int fd;
    uint64_t size;
    int rc = tq_open_sized(path, O_RDONLY, &fd, &size, err);
    if (rc)
        return rc;
    size_t n = (size_t)size;
    uint8_t *p = tq_malloc(n ? n : 1);
    if (!p) {
        close(fd);
        return tq_err(err, TQ_ENOMEM, "out of memory reading %s", path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            close(fd);
            tq_free(p);
            return tq_err_sys(err, TQ_EIO, e, "%s: read", path);
        }
        got += (size_t)r;
    }
    close(fd);
    *out = p;
    *len = n;
    return TQ_OK;
}

int tq_manifest_write(const char *dir, const tq_manifest *m, bool *committed, tq_error *err)
{
    bool done = false;
    if (!committed)
        committed = &done;
    *committed = false;
    buf b = {0};
    const tq_config *c = &m->cfg;
    put(&b, manifest_magic, 8);
    put32(&b, manifest_version(c));
    put32(&b, 0);
    put32(&b, c->d);
    put32(&b, (uint32_t)c->metric);
    put32(&b, c->bits);
    put32(&b, (uint32_t)c->variant);
    put32(&b, (uint32_t)c->correction);
    put32(&b, (uint32_t)c->refine);
    put32(&b, (uint32_t)c->center);
    put32(&b, (uint32_t)c->codebook);
    put64(&b, c->seed);
    put64(&b, m->next_file_id);
    put64(&b, m->wal_id);
    put64(&b, m->wal_first_lsn);
    put32(&b, m->nsegments);
    put32(&b, m->mean ? 1 : 0);
    for (uint32_t i = 0; i < m->nsegments; i++) {
        put64(&b, m->segments[i].id);
        put64(&b, m->segments[i].rows);
        put64(&b, m->segments[i].del_id);
    }
    if (m->mean)
        put(&b, m->mean, c->d * sizeof(float));
    if (!b.oom)
        put64(&b, XXH3_64bits(b.p, b.len));
    int rc;
    if (b.oom) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory writing the manifest");
    } else {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/MANIFEST", dir);
        rc = replace_file(path, b.p, b.len, committed, err);
    }
    tq_free(b.p);
    return rc;
}

int tq_manifest_read(const char *dir, tq_manifest *m, tq_error *err)
{
    memset(m, 0, sizeof(*m));
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    uint8_t *p;
    size_t n;
    int rc = slurp(path, &p, &n, err);
    if (rc)
        return rc;
    if (n < FIXED_BYTES + 8 || memcmp(p, manifest_magic, 8) != 0) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: not a tqvec manifest", path);
        goto out;
    }
    if (XXH3_64bits(p, n - 8) != tq_get64(p + n - 8)) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: manifest fails its checksum", path);
        goto out;
    }
    if (tq_get32(p + 8) < 1 || tq_get32(p + 8) > MANIFEST_VERSION) {
        rc = tq_err(err, TQ_EUNSUPPORTED, "%s: manifest format version %u, this build reads 1 to %u", path,
                    tq_get32(p + 8), MANIFEST_VERSION);
        goto out;
    }
    m->cfg = (tq_config){.d = tq_get32(p + 16), .metric = (tq_metric)tq_get32(p + 20), .bits = tq_get32(p + 24),
                         .variant = (tq_variant)tq_get32(p + 28), .correction = (tq_correction)tq_get32(p + 32),
                         .refine = (tq_refine)tq_get32(p + 36), .center = (tq_center)tq_get32(p + 40),
                         .codebook = (tq_codebook_kind)tq_get32(p + 44), .seed = tq_get64(p + 48)};
    if (tq_get32(p + 8) == 1 && m->cfg.codebook != TQ_CODEBOOK_SCALAR) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: a version 1 manifest names a codebook", path);
        goto out;
    }
    m->next_file_id = tq_get64(p + 56);
    m->wal_id = tq_get64(p + 64);
    m->wal_first_lsn = tq_get64(p + 72);
    m->nsegments = tq_get32(p + 80);
    const bool has_mean = tq_get32(p + 84) != 0;
    const uint64_t need = FIXED_BYTES + (uint64_t)m->nsegments * 24 + (has_mean ? (uint64_t)m->cfg.d * 4 : 0) + 8;
    if (m->nsegments > MAX_SEGMENTS || m->cfg.d < TQ_MIN_DIM || m->cfg.d > TQ_MAX_DIM || need != n) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: manifest sizes are inconsistent", path);
        goto out;
    }
    m->segments = tq_calloc(m->nsegments ? m->nsegments : 1, sizeof(tq_manifest_segment));
    if (has_mean)
        m->mean = tq_malloc(m->cfg.d * sizeof(float));
    if (!m->segments || (has_mean && !m->mean)) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory reading %s", path);
        goto out;
    }
    const uint8_t *at = p + FIXED_BYTES;
    for (uint32_t i = 0; i < m->nsegments; i++, at += 24)
        m->segments[i] = (tq_manifest_segment){tq_get64(at), tq_get64(at + 8), tq_get64(at + 16)};
    if (has_mean)
        memcpy(m->mean, at, m->cfg.d * sizeof(float));
out:
    tq_free(p);
    if (rc)
        tq_manifest_free(m);
    return rc;
}

void tq_manifest_free(tq_manifest *m)
{
    tq_free(m->segments);
    tq_free(m->mean);
    m->segments = NULL;
    m->mean = NULL;
}

int tq_tombstones_write(const char *path, const uint32_t *bits, uint64_t rows, tq_error *err)
{
    const size_t words = (size_t)((rows + 31) / 32);
    uint64_t count = 0;
    for (size_t i = 0; i < words; i++)
        count += (uint64_t)__builtin_popcount(bits[i]);
    buf b = {0};
    put(&b, tombstone_magic, 8);
    put32(&b, TOMBSTONE_VERSION);
    put32(&b, 0);
    put64(&b, rows);
    put64(&b, count);
    put(&b, bits, words * 4);
    if (!b.oom)
        put64(&b, XXH3_64bits(b.p, b.len));
    if (b.oom) {
        tq_free(b.p);
        return tq_err(err, TQ_ENOMEM, "out of memory writing %s", path);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int rc = fd < 0 ? tq_err_sys(err, TQ_EIO, errno, "%s: create", path) : TQ_OK;
    if (!rc)
        rc = tq_write_all(fd, b.p, b.len, path, err);
    if (!rc)
        rc = tq_sync_fd(fd, path, err);
    if (fd >= 0)
        close(fd);
    if (!rc)
        rc = tq_sync_parent_dir(path, err);
    if (rc && fd >= 0)
        unlink(path);
    tq_free(b.p);
    return rc;
}

int tq_tombstones_read(const char *path, uint64_t rows, uint32_t *bits, uint64_t *count, tq_error *err)
{
    uint8_t *p;
    size_t n;
    int rc = slurp(path, &p, &n, err);
    if (rc)
        return rc;
    const size_t words = (size_t)((rows + 31) / 32);
    if (n != 32 + words * 4 + 8 || memcmp(p, tombstone_magic, 8) != 0) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: not a tombstone file for %llu rows", path, (unsigned long long)rows);
    } else if (XXH3_64bits(p, n - 8) != tq_get64(p + n - 8)) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: tombstones fail their checksum", path);
    } else if (tq_get32(p + 8) != TOMBSTONE_VERSION || tq_get64(p + 16) != rows) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: tombstone file version or row count does not match", path);
    } else {
        memcpy(bits, p + 32, words * 4);
        uint64_t c = 0;
        for (size_t i = 0; i < words; i++)
            c += (uint64_t)__builtin_popcount(bits[i]);
        if (rows % 32 && words && bits[words - 1] >> (rows % 32))
            rc = tq_err(err, TQ_ECORRUPT, "%s: tombstones past the last row", path);
        else if (c != tq_get64(p + 24))
            rc = tq_err(err, TQ_ECORRUPT, "%s: tombstone count does not match its bits", path);
        *count = c;
    }
    tq_free(p);
    return rc;
}
