/*
 * store: the on-disk side of a collection. Everything here does I/O; the
 * quantizer and search live in index/ and never touch files.
 *
 * Pieces, one file each:
 *   fileio  small POSIX helpers every writer shares: whole writes, fsync of
 *           a file and its directory, atomic replace by rename
 *   wal     the write-ahead log: checksummed, numbered records appended with
 *           one write per batch, fsync policy, replay with torn-tail repair
 *   segment immutable segment files: rows in the scan layout, keys and
 *           attributes, written once, mapped read-only, verified
 *   manifest the collection's root: config, centering mean, live segments
 *           and their tombstone files, replaced atomically
 *   keymap  key -> (segment, row), open addressing over XXH3 hashes
 *   collection the engine: writes through the WAL into a mutable segment,
 *           sealing, deletes, compaction, snapshots for readers
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

/* Little-endian fields of on-disk structures, read and written through
 * memcpy (no alignment assumed). Every supported target is little-endian. */
static inline void tq_put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}
static inline void tq_put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static inline void tq_put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}
static inline uint16_t tq_get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t tq_get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t tq_get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* write() all n bytes, retrying short writes and EINTR. */
int tq_write_all(int fd, const void *buf, size_t n, const char *path, tq_error *err);
/* open(path, flags) and its size; TQ_ENOTFOUND if it does not exist. */
int tq_open_sized(const char *path, int flags, int *fd, uint64_t *size, tq_error *err);
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

/* --------------------------------------------------------------- segment */

/* Rows at which the mutable segment is sealed (its arrays are reserved for
 * this many rows up front). */
#define TQ_DEFAULT_ALLOWLIST_BELOW 0.05
#define TQ_MIN_SEGMENT_ROWS 1u
#define TQ_DEFAULT_SEGMENT_ROWS 131072u
#define TQ_MAX_SEGMENT_ROWS (1u << 24)
/* Below this a segment's flat scan costs about what probing would. */
#define TQ_DEFAULT_PARTITION_ROWS 4096u
/* Sealed segments are merged in the background this many of a size at a
 * time (see the collection's background section). */
#define TQ_DEFAULT_MERGE_FACTOR 4u
/* The most row bytes (codes, scalars, refine data) one merge gathers into
 * memory (it reorders them in place): four million rows at d = 128, 4
 * bits with half-precision refine data are 1.3 GB. */
#define TQ_MERGE_MAX_BYTES ((size_t)2 << 30)

/* Longest key and attribute blob an element may have; with a row of the
 * largest dimension they fit one log record (TQ_WAL_MAX_PAYLOAD). */
#define TQ_MAX_KEY_BYTES 4096u
#define TQ_MAX_ATTR_BYTES (16u << 20)

/* Section kinds of a segment file, in file order. */
enum {
    TQ_SEC_CODES = 1,   /* scan blocks of scalar codes */
    TQ_SEC_SIGNS = 2,   /* scan blocks of sign sketches (prod) */
    TQ_SEC_SCALARS = 3, /* scalar planes by block (format 6; before, tq_code_scalars per row) */
    TQ_SEC_REFINE = 4,  /* fp32 vectors or code8 bytes per row */
    TQ_SEC_KEYS = 5,    /* u32 offsets[rows + 1], then the key bytes */
    TQ_SEC_ATTRS = 6,   /* u64 offsets[rows + 1], then the attribute bytes */
    TQ_SEC_LENGTHS = 7, /* cosine: a float per row, the input's norm (format 3 on; empty otherwise) */
    TQ_SEC_PARTITIONS = 8, /* rows grouped by partition (format 4 on; empty for a flat segment):
                              u32 nlist, u32 0, float centroids[nlist * d], u32 offsets[nlist + 1] */
    TQ_SEC_COUNT = 8,
};

/* Keys and attributes of the rows being written, row i's key being
 * key[i] (key_len[i] bytes) and its attributes attr[i] (attr_len[i], 0 for
 * none). */
typedef struct tq_row_names {
    const char *const *key;
    const uint32_t *key_len;
    const char *const *attr;
    const uint32_t *attr_len;
} tq_row_names;

/* Write rows [0, rows->n) with their names to a new segment file at path,
 * fsynced with its directory, and rows->parts when the rows are grouped by
 * partition. Rows marked deleted are written too (the caller compacts
 * first when it wants them gone). */
int tq_segment_write(const char *path, const tq_codec *c, const tq_rows *rows, const tq_row_names *names,
                     tq_error *err);

/* A segment file mapped read-only. Only the header, the section table and
 * the key section are checked on open; the other sections are checked by
 * tq_segment_verify (every byte hashed once), which a collection runs
 * before a segment's first search, or at open when asked to. */
typedef struct tq_segment_file {
    char *path;
    uint8_t *map;
    size_t size;
    uint64_t rows;
    tq_rows view;             /* arrays point into the map; deleted left NULL */
    const uint64_t *key_off;  /* rows + 1 */
    const char *key_bytes;
    const uint64_t *attr_off; /* rows + 1 */
    const char *attr_bytes;
    unsigned sections;        /* in the file: TQ_SEC_COUNT, or fewer in an older format */
    uint64_t sec_off[TQ_SEC_COUNT + 1], sec_len[TQ_SEC_COUNT + 1], sec_sum[TQ_SEC_COUNT + 1];
    uint8_t *converted_codes; /* a format-1 file's 3-bit codes in the current layout (view points here) */
    float *converted_scalars; /* a file of format 1 to 5: its scalars as planes (view points here) */
    tq_partitions parts;      /* a partitioned segment's (view.parts points here), else nlist 0 */
    float *half_norms;        /* parts' centroid half norms and */
    tq_centroid_table *table; /* the centroids as a query ranks them, computed at open */
} tq_segment_file;

int tq_segment_open(const char *path, const tq_codec *c, tq_segment_file *out, tq_error *err);
/* Hash every section against the table: TQ_ECORRUPT names the section. */
int tq_segment_verify(const tq_segment_file *s, tq_error *err);
void tq_segment_close(tq_segment_file *s);

/* ---------------------------------------------------------------- keymap */

/* Where a key's live row is: an owner (the collection's segment object)
 * and a row in it. The key bytes are not copied: they must stay valid
 * while the entry exists (they live in the owner's key storage). */
typedef struct tq_keymap_entry {
    uint64_t hash;   /* 0 marks an empty slot; real hashes are forced nonzero */
    const char *key;
    uint32_t len;
    void *owner;
    uint64_t row;
} tq_keymap_entry;

typedef struct tq_keymap {
    tq_keymap_entry *slots;
    size_t cap, count; /* cap is a power of two */
} tq_keymap;

void tq_keymap_init(tq_keymap *m);
void tq_keymap_free(tq_keymap *m);
tq_keymap_entry *tq_keymap_find(const tq_keymap *m, const char *key, uint32_t len);
/* Insert or repoint key; *old gets the previous location (owner NULL if
 * the key was new). TQ_ENOMEM leaves the map unchanged. */
int tq_keymap_put(tq_keymap *m, const char *key, uint32_t len, void *owner, uint64_t row, tq_keymap_entry *old);
/* Room for `more` new keys, so that many puts cannot fail. */
int tq_keymap_reserve(tq_keymap *m, size_t more);
/* Remove key; false if it was not there. */
bool tq_keymap_remove(tq_keymap *m, const char *key, uint32_t len);

/* -------------------------------------------------------------- manifest */

typedef struct tq_manifest_segment {
    uint64_t id;      /* file id: seg/<id>.tqs */
    uint64_t rows;
    uint64_t del_id;  /* tombstones in seg/<del_id>.del; 0: none */
} tq_manifest_segment;

typedef struct tq_manifest {
    tq_config cfg;
    uint64_t next_file_id;  /* every file the collection creates takes the next id */
    uint64_t wal_id;        /* the live log: wal/<wal_id>.log */
    uint64_t wal_first_lsn;
    uint32_t nsegments;
    tq_manifest_segment *segments;
    float *mean;            /* cfg.d floats, or NULL */
} tq_manifest;

/* Write MANIFEST.tmp in dir, fsync, rename over MANIFEST, fsync dir: a
 * crash leaves the old manifest or the new one, never a mix. *committed
 * (may be NULL) tells whether the rename happened: an error with it set
 * means the new manifest is in place but its durability is not known, so
 * nothing the old one names may be deleted. */
int tq_manifest_write(const char *dir, const tq_manifest *m, bool *committed, tq_error *err);
/* Read and check dir/MANIFEST; m's arrays are allocated (tq_manifest_free). */
int tq_manifest_read(const char *dir, tq_manifest *m, tq_error *err);
void tq_manifest_free(tq_manifest *m);

/* Tombstone files: one bit per row of a segment, set when deleted. */
int tq_tombstones_write(const char *path, const uint32_t *bits, uint64_t rows, tq_error *err);
/* Read into bits ((rows + 31) / 32 words); *count gets the set bits. */
int tq_tombstones_read(const char *path, uint64_t rows, uint32_t *bits, uint64_t *count, tq_error *err);

/* ---------------------------------------------------------------- filter */

/* Redis vector-set FILTER expressions over JSON attributes (the filter
 * module's design comment says exactly what they mean). */
#define TQ_FILTER_MAX_BYTES 16384u
#define TQ_FILTER_MAX_TOKENS 4096u

typedef struct tq_filter tq_filter;
typedef struct tq_filter_eval tq_filter_eval;

/* Compile expr[0, len); a syntax error is TQ_EARG with the message
 * "syntax error in FILTER expression near: <the rest from the error>". */
int tq_filter_compile(const char *expr, size_t len, tq_filter **out, tq_error *err);
void tq_filter_free(tq_filter *f);
/* Working memory for running f; one per thread. */
int tq_filter_eval_init(const tq_filter *f, tq_filter_eval **out);
void tq_filter_eval_free(tq_filter_eval *ev);
/* One field's value for every row of a segment, parsed once so filters do
 * not read JSON per element per query. Strings point into the attribute
 * bytes (or the column's own blocks when they had escapes), arrays are the
 * raw JSON text; rows whose attributes lack the field, or are not valid
 * JSON, are marked missing. */
enum { TQ_ATTR_NUM, TQ_ATTR_STR, TQ_ATTR_NULL, TQ_ATTR_TUPLE, TQ_ATTR_ARRAY, TQ_ATTR_MISSING };
typedef struct tq_attr_value {
    int type;
    double num;
    const char *s;  /* string bytes, array text (a tuple's first step, inside filters) */
    size_t len;
} tq_attr_value;

typedef struct tq_attr_column {
    tq_attr_value *v; /* one per row */
    size_t n;
    void *blocks;     /* unescaped strings, freed with the column */
} tq_attr_column;

typedef const char *(*tq_attr_fn)(void *ctx, size_t row, uint32_t *len);
/* Build the column of `field` for rows [0, n), reading attributes with get
 * (which must return bytes that outlive the column). */
int tq_attr_column_build(const char *field, uint32_t flen, size_t n, tq_attr_fn get, void *ctx,
                         tq_attr_column *out);
void tq_attr_column_free(tq_attr_column *c);
/* The selectors of a compiled filter, in program order (repeats included). */
size_t tq_filter_selector_count(const tq_filter *f);
const char *tq_filter_selector(const tq_filter *f, size_t i, uint32_t *len);
/* tq_filter_match with the row's fields taken from columns: cols[i] is the
 * column of selector i. */
bool tq_filter_match_columns(const tq_filter *f, tq_filter_eval *ev, const tq_attr_column *const *cols, size_t row);

/* Bit r of bits ((n + 31) / 32 words) set when row r passes, from columns;
 * returns how many pass. The common `.field <op> number` runs as a plain
 * loop over the column. */
size_t tq_filter_allow_columns(const tq_filter *f, tq_filter_eval *ev, const tq_attr_column *const *cols, size_t n,
                               uint32_t *bits);

/* Whether the attributes json[0, len) (NULL: none) pass: a missing field or
 * attributes that are not a JSON object fail, never error. Allocates only
 * to grow its buffer for an escaped string longer than any seen before. */
bool tq_filter_match(const tq_filter *f, tq_filter_eval *ev, const char *json, size_t len);

/* ------------------------------------------------------------ collection */

typedef struct tq_collection tq_collection;

typedef void (*tq_log_fn)(void *ctx, int level, const char *message);
enum { TQ_LOG_WARNING = 1, TQ_LOG_NOTICE = 2 };

typedef struct tq_collection_options {
    tq_config cfg;            /* used when creating; checked against an existing collection when cfg.d != 0 */
    bool any_codebook;        /* cfg.codebook is a default, not asked for: an existing collection's is fine */
    bool create;              /* create the directory's collection if it has none */
    tq_fsync_policy fsync;
    size_t segment_rows;      /* the mutable segment is sealed at this many rows */
    bool verify;              /* hash every segment at open instead of before its first search */
    tq_log_fn log;            /* warnings (a torn log tail, leftover files); NULL: dropped */
    /* Filters expected to pass fewer than this share of a sealed segment's
     * rows are turned into an allow-list first (0: TQ_DEFAULT_ALLOWLIST_BELOW;
     * above 1: always; negative: never). */
    double allowlist_below;
    void *log_ctx;
    /* Sealed segments of at least this many rows are partitioned (in the
     * background, and by compaction); 0: TQ_DEFAULT_PARTITION_ROWS, SIZE_MAX:
     * never. */
    size_t partition_rows;
    /* The background partitioner also merges sealed segments once this
     * many are of one size class (0: TQ_DEFAULT_MERGE_FACTOR, SIZE_MAX:
     * never; at least 2). */
    size_t merge_factor;
} tq_collection_options;

typedef struct tq_element {
    const char *key;
    uint32_t key_len;
    const float *vector;      /* d floats */
    const char *attr;         /* NULL or attr_len bytes */
    uint32_t attr_len;
} tq_element;

/* A search hit resolved to its element, valid while the snapshot it came
 * from is held (tq_collection_search hands one back). */
typedef struct tq_match {
    const char *key;
    uint32_t key_len;
    float score;
    const char *attr;
    uint32_t attr_len;
} tq_match;

typedef struct tq_snapshot tq_snapshot;

typedef struct tq_collection_stats {
    uint64_t live, deleted;   /* elements, and rows awaiting compaction */
    uint32_t segments;        /* sealed */
    uint32_t partitioned;     /* of them, partitioned */
    uint64_t partitions;      /* in all of those */
    uint64_t mutable_rows;
    uint64_t wal_bytes;
    uint64_t torn_bytes;      /* cut from an incomplete log tail at open */
} tq_collection_stats;

int tq_collection_open(const char *dir, const tq_collection_options *opts, tq_collection **out, tq_error *err);
/* Seal nothing, sync the log, release everything. NULL is fine. */
int tq_collection_close(tq_collection *c, tq_error *err);
const tq_codec *tq_collection_codec(const tq_collection *c);
/* Upsert n elements: one log write, then each is searchable. *added counts
 * the keys that were new. Every element is checked first; on error nothing
 * is written. Writers are serialized; readers are not blocked. */
int tq_collection_add(tq_collection *c, const tq_element *elems, size_t n, size_t *added, tq_error *err);
int tq_collection_remove(tq_collection *c, const char *key, uint32_t len, tq_error *err);
/* The element's vector (its refine floats when kept, else decoded from
 * its 8-bit refine codes when kept, else from its scan codes) into vector (d floats, may be NULL) and a copy of its
 * attributes into attr (cap bytes; *attr_len gets the full length, and
 * TQ_EARG if cap is too small). */
int tq_collection_get(tq_collection *c, const char *key, uint32_t len, float *vector, char *attr, size_t cap,
                      size_t *attr_len, tq_error *err);
/* Search a consistent snapshot, keeping only elements whose attributes
 * pass filter (NULL: all); the matches (nq * k, counts per query) point
 * into *snap, which the caller releases with tq_snapshot_release. */
int tq_collection_search(tq_collection *c, const float *queries, size_t nq, const tq_search_opts *opts,
                         const tq_filter *filter, tq_match *matches, size_t *counts, tq_snapshot **snap,
                         tq_error *err);
void tq_snapshot_release(tq_snapshot *s);
/* Replace key's attributes (attr_len 0: remove them), keeping its stored
 * row bytes exactly; TQ_ENOTFOUND if absent. A writer like add. */
int tq_collection_set_attr(tq_collection *c, const char *key, uint32_t len, const char *attr, uint32_t attr_len,
                           tq_error *err);
/* Keys picked at random: min(n, live) distinct ones, or with repeats n
 * draws (none when empty); copied into one block (tq_free bytes and lens). */
typedef struct tq_sample {
    size_t n;
    char *bytes;    /* the keys back to back */
    uint32_t *lens;
} tq_sample;
int tq_collection_sample(tq_collection *c, size_t n, bool repeats, uint64_t seed, tq_sample *out, tq_error *err);
/* One end of a key range: NULL key for none. */
typedef struct tq_key_bound {
    const char *key;
    uint32_t len;
    bool inclusive;
} tq_key_bound;
/* The first max live keys between lo and hi, in byte order (memcmp; a
 * prefix first), copied out as for a sample. */
int tq_collection_key_range(tq_collection *c, const tq_key_bound *lo, const tq_key_bound *hi, size_t max,
                            tq_sample *out, tq_error *err);
/* Live elements that have attributes (a pass over every key). */
uint64_t tq_collection_count_attributed(tq_collection *c);
/* Write a consistent copy of the collection's files into dest, a
 * directory that must not exist yet; it can be opened as a collection of
 * its own. Its manifest is written last, so a copy cut short is no
 * collection. A writer like add (writes wait for the copy). */
int tq_collection_backup(tq_collection *c, const char *dest, tq_error *err);
/* Rename the collection's directory to dir (same file system, dir must
 * not exist) and go on working there. A writer like add; searches
 * running meanwhile are not disturbed. */
int tq_collection_move(tq_collection *c, const char *dir, tq_error *err);
int tq_collection_sync(tq_collection *c, tq_error *err);
/* Seal the mutable segment, then rewrite sealed segments that are at least
 * a fifth deleted, or small, into one. */
int tq_collection_compact(tq_collection *c, tq_error *err);
/* Return once the background partitioner has nothing left to do (every
 * sealed segment that wants partitions has them, or has failed, and no
 * merge is due). */
int tq_collection_wait_partitioned(tq_collection *c);
/* Hash every byte of every sealed segment now. */
int tq_collection_verify(tq_collection *c, tq_error *err);
void tq_collection_stats_get(tq_collection *c, tq_collection_stats *st);

#endif
