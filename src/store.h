/*
 * store: the on-disk side of a collection. Everything here does I/O; the
 * quantizer and search live in index/ and never touch files.
 *
 * Pieces, one file each:
 *   fileio  small POSIX helpers every writer shares: whole writes, fsync of
 *           a file and its directory, atomic replace by rename
 *   wal     the write-ahead log: checksummed, numbered records appended with
 *           one write per batch, fsync policy, replay with torn-tail repair
 *
 * Every on-disk structure starts with a magic, a format version and an
 * XXH3-64 checksum, and every reader checks all three before trusting a
 * byte; a failed check is TQ_ECORRUPT naming the file and the place.
 */
#ifndef TQ_STORE_H
#define TQ_STORE_H

#include "tq_index.h"

#include <sys/types.h>

/* ---------------------------------------------------------------- fileio */

/* write() all n bytes, retrying short writes and EINTR. */
int tq_write_all(int fd, const void *buf, size_t n, const char *path, tq_error *err);
/* fdatasync, with the path in the error. */
int tq_sync_fd(int fd, const char *path, tq_error *err);
/* fsync the directory holding path, so a create or rename in it is durable. */
int tq_sync_parent_dir(const char *path, tq_error *err);

/* ------------------------------------------------------------------- wal */

/* How often appended records reach the disk, as Redis's appendfsync:
 * ALWAYS before an append returns; EVERYSEC from a background thread once
 * a second (a crash of the machine, not of the process, can lose the last
 * second); NO leaves it to the kernel. */
typedef enum tq_fsync_policy {
    TQ_FSYNC_ALWAYS = 1,
    TQ_FSYNC_EVERYSEC = 2,
    TQ_FSYNC_NO = 3,
} tq_fsync_policy;

/* A payload larger than this is refused on append and is corruption on
 * replay, so a flipped length byte cannot make replay read gigabytes. */
#define TQ_WAL_MAX_PAYLOAD (64u << 20)
#define TQ_WAL_HEADER_BYTES 32u
/* Record framing: 16-byte header, payload padded to 8, 8-byte checksum. */
#define TQ_WAL_RECORD_OVERHEAD 24u

typedef struct tq_wal tq_wal;

typedef struct tq_wal_entry {
    uint16_t type;        /* nonzero; meaning is the caller's */
    const void *payload;
    uint32_t len;
} tq_wal_entry;

/* Create a new, empty log at path (which must not exist) whose first record
 * will get sequence number first_lsn; the file and its directory are
 * fsynced before this returns. */
int tq_wal_create(const char *path, uint64_t first_lsn, tq_fsync_policy policy, tq_wal **out, tq_error *err);
/* Open an existing log for appending after tq_wal_replay() accepted it:
 * end is the replay's valid_bytes and next_lsn its next_lsn. */
int tq_wal_open(const char *path, uint64_t end, uint64_t next_lsn, tq_fsync_policy policy, tq_wal **out,
                tq_error *err);
/* Append n entries with one write(); they get consecutive sequence numbers,
 * the first stored in *first_lsn (may be NULL). Durable per the policy when
 * this returns TQ_OK. On a failed write the file is cut back to its length
 * before the call; if that also fails, or an fsync fails (the kernel may
 * have dropped the dirty pages, so a retry could report success for lost
 * data), the log refuses every further append with TQ_EIO. Not thread
 * safe: the collection serializes its writers. */
int tq_wal_append(tq_wal *w, const tq_wal_entry *entries, size_t n, uint64_t *first_lsn, tq_error *err);
/* fdatasync now, whatever the policy. */
int tq_wal_sync(tq_wal *w, tq_error *err);
uint64_t tq_wal_next_lsn(const tq_wal *w);
uint64_t tq_wal_bytes(const tq_wal *w);
/* Stop the background syncer, sync unless the policy is NO, close. A failed
 * final sync is returned; the handle is freed either way. NULL is fine. */
int tq_wal_close(tq_wal *w, tq_error *err);

typedef int (*tq_wal_visit_fn)(void *ctx, uint16_t type, uint64_t lsn, const uint8_t *payload, uint32_t len,
                               tq_error *err);

typedef struct tq_wal_replay_info {
    uint64_t first_lsn;   /* from the file header */
    uint64_t next_lsn;    /* one past the last valid record */
    uint64_t records;     /* valid records visited */
    uint64_t valid_bytes; /* length of the valid prefix, header included */
    uint64_t torn_bytes;  /* bytes after it that were (or, without repair, would be) cut */
} tq_wal_replay_info;

/* Visit every valid record in order. A damaged tail (an incomplete or
 * failing record with nothing valid after it: what a crash mid-append
 * leaves) ends the log; with repair it is truncated away and the file
 * synced, and info->torn_bytes says how much went. A failing record with a
 * valid one after it is damage inside the log, not a torn write: that is
 * TQ_ECORRUPT naming the offset, and nothing is truncated. A visit that
 * returns nonzero stops the replay with its error. */
int tq_wal_replay(const char *path, tq_wal_visit_fn visit, void *ctx, bool repair, tq_wal_replay_info *info,
                  tq_error *err);

#endif
