/*
 * The write-ahead log: every change to a collection is appended here before
 * it is acknowledged, and replayed into memory when the collection opens.
 *
 * File layout (little-endian, as every supported target is):
 *   header, 32 bytes: magic "TQVECWAL", u32 format version, u32 header
 *     size, u64 first sequence number, u64 XXH3-64 of the 24 bytes before
 *   records, back to back, each a multiple of 8 bytes:
 *     u32 payload length, u16 type (nonzero), u16 flags, u64 sequence
 *     number, payload zero-padded to 8, u64 XXH3-64 of everything before it
 *   flags: bit 0 (RECORD_MORE) on every record of an append but its last,
 *     so replay can tell a whole append from the front of a torn one
 *     (logs written before the flag have 0 there: one record per append)
 * Sequence numbers run on from the header's without gaps, so a record that
 * hashes correctly but sits in the wrong place (a stale block from an older
 * file, a duplicated write) is still caught.
 *
 * Torn tail or corruption? A crash in the middle of an append leaves at
 * most the tail of the file incomplete: the last records may be cut short
 * or garbage, and nothing valid follows them. So replay, on a record that
 * fails, looks for any valid record further on (records are 8-byte aligned,
 * so only aligned offsets need trying): none means a torn tail, which is
 * cut off with a warning in the replay info; one means the log was damaged
 * in place, and the collection must not open silently without the lost
 * records.
 *
 * Atomic appends: replay visits an append's records only once its last one
 * is there, so an append cut short by a crash is cut back whole, never
 * applied in part (one write() per append, but a crash can stop a write
 * part way). With EVERYSEC a thread fdatasyncs once a second when something
 * was written since the last sync, the way Redis's appendfsync everysec
 * does; the appending thread never waits for the disk.
 */
#include "store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

static const char wal_magic[8] = {'T', 'Q', 'V', 'E', 'C', 'W', 'A', 'L'};
#define WAL_VERSION 1u
#define RECORD_MORE 1u

struct tq_wal {
    int fd;
    char *path;
    tq_fsync_policy policy;
    uint64_t next_lsn;
    uint64_t size;   /* bytes in the file: the valid log */
    bool broken;     /* a failed write could not be undone, or an fsync failed */
    uint8_t *buf;    /* framing buffer reused across appends */
    size_t buf_cap;
    /* EVERYSEC syncer: written counts appends, synced what the last fdatasync
     * covered; both under lock. */
    pthread_t syncer;
    bool syncer_running, stopping;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    uint64_t written, synced;
    int sync_errno; /* first background fdatasync failure, reported by the next append */
};

static inline size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static void *syncer_main(void *arg)
{
    tq_wal *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&w->wake, &w->lock, &until);
        if (w->written == w->synced || w->sync_errno)
            continue;
        uint64_t target = w->written;
        pthread_mutex_unlock(&w->lock);
        int rc = fdatasync(w->fd);
        int e = errno;
        pthread_mutex_lock(&w->lock);
        if (rc == 0)
            w->synced = target;
        else
            w->sync_errno = e;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static int wal_new(const char *path, int fd, uint64_t size, uint64_t next_lsn, tq_fsync_policy policy,
                   tq_wal **out, tq_error *err)
{
    tq_wal *w = tq_calloc(1, sizeof(*w));
    if (!w || !(w->path = tq_strdup(path))) {
        tq_free(w);
        close(fd);
        return tq_err(err, TQ_ENOMEM, "out of memory opening %s", path);
    }
    w->fd = fd;
    w->size = size;
    w->next_lsn = next_lsn;
    w->policy = policy;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    if (policy == TQ_FSYNC_EVERYSEC) {
        int rc = pthread_create(&w->syncer, NULL, syncer_main, w);
        if (rc != 0) {
            tq_wal_close(w, NULL);
            return tq_err_sys(err, TQ_ENOMEM, rc, "%s: starting the fsync thread", path);
        }
        w->syncer_running = true;
    }
    *out = w;
    return TQ_OK;
}

static bool valid_policy(tq_fsync_policy p)
{
    return p == TQ_FSYNC_ALWAYS || p == TQ_FSYNC_EVERYSEC || p == TQ_FSYNC_NO;
}

int tq_wal_create(const char *path, uint64_t first_lsn, tq_fsync_policy policy, tq_wal **out, tq_error *err)
{
    *out = NULL;
    if (!valid_policy(policy))
        return tq_err(err, TQ_EARG, "unknown fsync policy %d", (int)policy);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return tq_err_sys(err, TQ_EIO, errno, "%s: create", path);
    uint8_t h[TQ_WAL_HEADER_BYTES] = {0};
    memcpy(h, wal_magic, 8);
    tq_put32(h + 8, WAL_VERSION);
    tq_put32(h + 12, TQ_WAL_HEADER_BYTES);
    tq_put64(h + 16, first_lsn);
    tq_put64(h + 24, XXH3_64bits(h, 24));
    int rc = tq_write_all(fd, h, sizeof(h), path, err);
    if (!rc)
        rc = tq_sync_fd(fd, path, err);
    if (!rc)
        rc = tq_sync_parent_dir(path, err);
    if (rc) {
        close(fd);
        unlink(path);
        return rc;
    }
    return wal_new(path, fd, TQ_WAL_HEADER_BYTES, first_lsn, policy, out, err);
}

int tq_wal_open(const char *path, uint64_t end, uint64_t next_lsn, tq_fsync_policy policy, tq_wal **out,
                tq_error *err)
{
    *out = NULL;
    if (!valid_policy(policy))
        return tq_err(err, TQ_EARG, "unknown fsync policy %d", (int)policy);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return tq_err_sys(err, TQ_EIO, errno, "%s: open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tq_err_sys(err, TQ_EIO, e, "%s: stat", path);
    }
    if ((uint64_t)st.st_size != end) {
        close(fd);
        return tq_err(err, TQ_ECORRUPT, "%s: %lld bytes, but replay accepted %llu: replay with repair first",
                      path, (long long)st.st_size, (unsigned long long)end);
    }
    if (lseek(fd, (off_t)end, SEEK_SET) < 0) {
        int e = errno;
        close(fd);
        return tq_err_sys(err, TQ_EIO, e, "%s: seek", path);
    }
    return wal_new(path, fd, end, next_lsn, policy, out, err);
}

/* Frame entries into w->buf; returns the byte count or 0 on no memory. */
static size_t frame(tq_wal *w, const tq_wal_entry *entries, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += 16 + pad8(entries[i].len) + 8;
    if (total > w->buf_cap) {
        uint8_t *nb = tq_realloc(w->buf, total);
        if (!nb)
            return 0;
        w->buf = nb;
        w->buf_cap = total;
    }
    uint8_t *p = w->buf;
    uint64_t lsn = w->next_lsn;
    for (size_t i = 0; i < n; i++) {
        const tq_wal_entry *e = &entries[i];
        size_t body = 16 + pad8(e->len);
        memset(p, 0, body);
        tq_put32(p, e->len);
        tq_put16(p + 4, e->type);
        tq_put16(p + 6, i + 1 < n ? RECORD_MORE : 0);
        tq_put64(p + 8, lsn++);
        if (e->len)
            memcpy(p + 16, e->payload, e->len);
        tq_put64(p + body, XXH3_64bits(p, body));
        p += body + 8;
    }
    return total;
}

int tq_wal_append(tq_wal *w, const tq_wal_entry *entries, size_t n, uint64_t *first_lsn, tq_error *err)
{
    if (w->broken)
        return tq_err(err, TQ_EIO, "%s: the log failed earlier and takes no more writes; reopen the collection",
                      w->path);
    if (w->policy == TQ_FSYNC_EVERYSEC) {
        pthread_mutex_lock(&w->lock);
        int e = w->sync_errno;
        pthread_mutex_unlock(&w->lock);
        if (e) {
            w->broken = true;
            return tq_err_sys(err, TQ_EIO, e, "%s: background fdatasync", w->path);
        }
    }
    if (n == 0) {
        if (first_lsn)
            *first_lsn = w->next_lsn;
        return TQ_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (entries[i].type == 0)
            return tq_err(err, TQ_EARG, "log record type 0 is reserved");
        if (entries[i].len > TQ_WAL_MAX_PAYLOAD)
            return tq_err(err, TQ_EARG, "log record of %u bytes exceeds the %u-byte limit", entries[i].len,
                          TQ_WAL_MAX_PAYLOAD);
    }
    size_t bytes = frame(w, entries, n);
    if (!bytes)
        return tq_err(err, TQ_ENOMEM, "out of memory framing %zu log records", n);
    int rc = tq_write_all(w->fd, w->buf, bytes, w->path, err);
    if (rc) {
        /* Cut the partial batch back off so the file stays a valid log; the
         * next write must start where this one did. */
        if (ftruncate(w->fd, (off_t)w->size) != 0 || lseek(w->fd, (off_t)w->size, SEEK_SET) < 0)
            w->broken = true;
        return rc;
    }
    if (w->policy == TQ_FSYNC_ALWAYS && (rc = tq_sync_fd(w->fd, w->path, err))) {
        w->broken = true;
        return rc;
    }
    if (first_lsn)
        *first_lsn = w->next_lsn;
    w->next_lsn += n;
    w->size += bytes;
    if (w->policy == TQ_FSYNC_EVERYSEC) {
        pthread_mutex_lock(&w->lock);
        w->written += bytes;
        pthread_mutex_unlock(&w->lock);
    }
    return TQ_OK;
}

int tq_wal_sync(tq_wal *w, tq_error *err)
{
    if (w->broken)
        return tq_err(err, TQ_EIO, "%s: the log failed earlier", w->path);
    pthread_mutex_lock(&w->lock);
    uint64_t target = w->written;
    pthread_mutex_unlock(&w->lock);
    int rc = tq_sync_fd(w->fd, w->path, err);
    if (rc) {
        w->broken = true;
        return rc;
    }
    pthread_mutex_lock(&w->lock);
    if (w->synced < target)
        w->synced = target;
    pthread_mutex_unlock(&w->lock);
    return TQ_OK;
}

uint64_t tq_wal_next_lsn(const tq_wal *w)
{
    return w->next_lsn;
}

uint64_t tq_wal_bytes(const tq_wal *w)
{
    return w->size;
}

int tq_wal_close(tq_wal *w, tq_error *err)
{
    if (!w)
        return TQ_OK;
    if (w->syncer_running) {
        pthread_mutex_lock(&w->lock);
        w->stopping = true;
        pthread_cond_signal(&w->wake);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->syncer, NULL);
    }
    int rc = TQ_OK;
    if (w->policy != TQ_FSYNC_NO && !w->broken && w->fd >= 0)
        rc = tq_sync_fd(w->fd, w->path, err);
    if (w->fd >= 0)
        close(w->fd);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    tq_free(w->buf);
    tq_free(w->path);
    tq_free(w);
    return rc;
}

/* ---------------------------------------------------------------- replay */

/* The record at off, if it is whole, checksums, and carries lsn (any lsn
 * when want_lsn is NULL); its size goes to *size. */
static bool record_ok(const uint8_t *map, uint64_t filesize, uint64_t off, const uint64_t *want_lsn,
                      uint64_t *size)
{
    if (filesize - off < TQ_WAL_RECORD_OVERHEAD)
        return false;
    const uint8_t *p = map + off;
    uint32_t len = tq_get32(p);
    if (len > TQ_WAL_MAX_PAYLOAD || tq_get16(p + 4) == 0 || (tq_get16(p + 6) & ~RECORD_MORE) != 0)
        return false;
    uint64_t body = 16 + pad8(len);
    if (body + 8 > filesize - off)
        return false;
    if (XXH3_64bits(p, body) != tq_get64(p + body))
        return false;
    if (want_lsn && tq_get64(p + 8) != *want_lsn)
        return false;
    *size = body + 8;
    return true;
}

int tq_wal_replay(const char *path, tq_wal_visit_fn visit, void *ctx, bool repair, tq_wal_replay_info *info,
                  tq_error *err)
{
    memset(info, 0, sizeof(*info));
    int fd;
    uint64_t filesize;
    int rc = tq_open_sized(path, repair ? O_RDWR : O_RDONLY, &fd, &filesize, err);
    if (rc)
        return rc;
    if (filesize < TQ_WAL_HEADER_BYTES) {
        close(fd);
        return tq_err(err, TQ_ECORRUPT, "%s: %llu bytes, shorter than the log header", path,
                      (unsigned long long)filesize);
    }
    uint8_t *map = mmap(NULL, filesize, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(fd);
        return tq_err_sys(err, TQ_EIO, e, "%s: mmap", path);
    }
    if (memcmp(map, wal_magic, 8) != 0) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: not a tqvec log (bad magic)", path);
        goto out;
    }
    if (XXH3_64bits(map, 24) != tq_get64(map + 24)) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: log header fails its checksum", path);
        goto out;
    }
    if (tq_get32(map + 8) != WAL_VERSION || tq_get32(map + 12) != TQ_WAL_HEADER_BYTES) {
        rc = tq_err(err, TQ_EUNSUPPORTED, "%s: log format version %u, this build reads %u", path,
                    tq_get32(map + 8), WAL_VERSION);
        goto out;
    }
    info->first_lsn = tq_get64(map + 16);
    /* An append at a time: its records are checked up to the one without
     * RECORD_MORE before any is visited. `failed` is where checking
     * stopped; the records of an append cut short before it are valid
     * but go with the tail. */
    uint64_t lsn = info->first_lsn, off = TQ_WAL_HEADER_BYTES, failed = filesize, failed_lsn = 0;
    while (off < filesize) {
        uint64_t end = off, next = lsn, size;
        bool more = true;
        while (more && end < filesize && record_ok(map, filesize, end, &next, &size)) {
            more = (tq_get16(map + end + 6) & RECORD_MORE) != 0;
            end += size;
            next++;
        }
        if (more) {
            failed = end;
            failed_lsn = next;
            break;
        }
        for (; off < end; off += TQ_WAL_RECORD_OVERHEAD + pad8(tq_get32(map + off))) {
            const uint8_t *p = map + off;
            if ((rc = visit(ctx, tq_get16(p + 4), lsn, p + 16, tq_get32(p), err)))
                goto out;
            info->records++;
            lsn++;
        }
    }
    info->next_lsn = lsn;
    info->valid_bytes = off;
    if (off < filesize) {
        for (uint64_t later = failed + 8; later + TQ_WAL_RECORD_OVERHEAD <= filesize; later += 8) {
            uint64_t unused;
            if (record_ok(map, filesize, later, NULL, &unused)) {
                rc = tq_err(err, TQ_ECORRUPT,
                            "%s: record %llu at offset %llu is damaged and valid records follow at offset %llu",
                            path, (unsigned long long)failed_lsn, (unsigned long long)failed,
                            (unsigned long long)later);
                goto out;
            }
        }
        info->torn_bytes = filesize - off;
        if (repair) {
            if (ftruncate(fd, (off_t)off) != 0) {
                rc = tq_err_sys(err, TQ_EIO, errno, "%s: truncating the torn tail", path);
                goto out;
            }
            rc = tq_sync_fd(fd, path, err);
        }
    }
out:
    munmap(map, filesize);
    close(fd);
    return rc;
}
