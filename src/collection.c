/*
 * A collection: a directory holding a manifest, one live write-ahead log
 * and immutable segment files, and in memory a mutable segment, the key
 * map and a reference-counted snapshot of the segment list.
 *
 *   DIR/MANIFEST          the commit point of every change to the file set
 *   DIR/LOCK              flock'd by the one process that has it open
 *   DIR/wal/<id>.log      the live log: every write since the last seal
 *   DIR/seg/<id>.tqs      sealed segments; <id>.del their tombstones
 *
 * Writes (serialized by write_lock): check every element, make sure the
 * mutable segment has room (sealing it first when full, so a batch's log
 * records and its rows always belong to the same segment generation), copy
 * keys and attributes and reserve the key map (so nothing after the log
 * write can fail), append one log write for the batch, then encode each
 * element into the next row. A row becomes visible when the segment's row
 * count is published with a release store; an upsert marks the old row
 * deleted just before, so a reader sees the old element or the new one,
 * never both.
 *
 * Sealing writes the mutable segment's live rows as a segment file, new
 * tombstone files for sealed segments whose deletions changed, and an
 * empty log, then commits them with a new manifest and drops the old log.
 * Compaction rewrites segments that are a fifth deleted, or small, into
 * one. Both build everything new before the manifest rename and only
 * delete old files after it, so a crash at any point leaves the old state
 * or the new one; files no manifest names are removed at open.
 *
 * Readers take the current snapshot (a mutex held for a pointer copy and a
 * count) and search it without locks: sealed segments never change except
 * for tombstone bits (set atomically), the mutable segment's arrays never
 * move (fixed capacity, mapped up front, pages committed as rows arrive),
 * and a segment is freed only when the last snapshot naming it is
 * released. Sealed segments are hashed in full before their first search
 * (or at open with verify), so damaged bytes are reported, never served.
 */
#include "store.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

/* Log record types. An add's row is tq_codec_row_save's bytes: WAL_ADD in
 * storage format 1 (3-bit codes in whole nibbles; written before the
 * sextet layout, read and converted at replay), WAL_ADD_ROW2 in format 2
 * (no input length under cosine; read with the length taken as 1),
 * WAL_ADD_ROW3 in the current one. A log may hold several kinds: one
 * written by an older build and appended to by this one. */
enum { WAL_ADD = 1, WAL_REMOVE = 2, WAL_ADD_ROW2 = 3, WAL_ADD_ROW3 = 4 };

/* Attribute fields a sealed segment keeps parsed for filters; a filter on
 * more fields than this reads the rest from JSON. */
#define MAX_COLUMNS 32

typedef struct seg {
    int refs;                 /* snapshots naming it; under snap_lock */
    bool sealed;
    uint64_t id;              /* file id (sealed) */
    uint64_t del_id;          /* tombstone file id in the manifest, 0 none */
    bool del_dirty;           /* deletions since del_id was written; writer only */
    tq_segment_file file;     /* sealed */
    /* mutable: fixed-capacity arrays, never moved */
    size_t cap;
    tq_rows_out out;
    void *maps[7];
    size_t map_len[7];
    char **keys, **attrs;
    uint32_t *key_lens, *attr_lens;
    size_t n;                 /* published rows: release store, acquire load */
    uint32_t *deleted;        /* one bit per row, set atomically */
    size_t ndeleted;          /* atomic */
    pthread_mutex_t verify_lock;
    int verified;             /* 0 not yet, 1 good, -1 damaged (verify_err) */
    bool partition_failed;    /* sealed: the partitioner gave up on it (atomic) */
    bool merge_failed;        /* sealed: a background merge of it failed (atomic) */
    tq_error verify_err;
    /* sealed: attribute columns built for filters, published by ncols
     * (release); built under verify_lock. */
    size_t ncols;
    char *col_name[MAX_COLUMNS];
    uint32_t col_name_len[MAX_COLUMNS];
    tq_attr_column cols[MAX_COLUMNS];
} seg;

struct tq_snapshot {
    int refs;                 /* under the collection's snap_lock */
    pthread_mutex_t *lock;
    size_t nsegs;             /* sealed segments, then the mutable one */
    seg **segs;
};

/* Fields below write_lock belong to the one writer at a time (adds,
 * removes, seals, compactions); the map and the current snapshot have
 * locks of their own because readers use them too. */
struct tq_collection {
    char *dir;
    int lock_fd;              /* flock'd LOCK file: one process per directory */
    tq_collection_options opts;
    tq_codec codec;           /* fixed at open (the mean is set once, before any row) */
    pthread_mutex_t write_lock, snap_lock;
    pthread_rwlock_t map_lock;
    tq_keymap map;            /* map_lock */
    uint64_t attributed;      /* map_lock: live keys whose row has attributes (VINFO's count) */
    tq_snapshot *current;     /* snap_lock: sealed segments, then the mutable one */
    /* write_lock: */
    tq_encode_scratch scratch;
    seg *mut;
    uint64_t next_file_id;
    uint64_t wal_id, wal_first_lsn;
    tq_wal *wal;
    bool broken;              /* a committed change could not be taken in: reopen */
    uint8_t *payload;         /* log framing scratch */
    size_t payload_cap;
    tq_wal_entry *entries;
    size_t entries_cap;
    uint64_t torn_bytes;      /* cut from the log's tail at open */
    /* The background partitioner (see its section): part_lock guards the
     * flags; the thread runs while part_started. */
    pthread_t part_thread;
    bool part_started;
    pthread_mutex_t part_lock;
    pthread_cond_t part_cond, part_idle; /* part_cond on CLOCK_MONOTONIC */
    bool part_wake, part_busy, part_stop;
    unsigned part_hurry;      /* callers of wait_partitioned: no waiting for a pause */
    uint64_t last_add_ns;     /* CLOCK_MONOTONIC when the latest add ended (atomic) */
    unsigned adds_running;    /* adds under way, sealing included (atomic) */
    bool idle_seal_off;       /* an idle seal failed: none until an add re-arms it (atomic) */
};

/* ------------------------------------------------------------- logging */

static void say(const tq_collection *c, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(const tq_collection *c, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* The library never prints: without a callback the message is dropped
     * (the stats still count what recovery did). */
    if (c->opts.log)
        c->opts.log(c->opts.log_ctx, level, msg);
}

static void file_path(const tq_collection *c, char *out, const char *sub, uint64_t id, const char *ext)
{
    snprintf(out, PATH_MAX, "%s/%s/%08llu.%s", c->dir, sub, (unsigned long long)id, ext);
}

/* ------------------------------------------------------------ segments */

static size_t seg_rows(const seg *s)
{
    return s->sealed ? (size_t)s->file.rows : __atomic_load_n(&s->n, __ATOMIC_ACQUIRE);
}

/* Rows not deleted (a count that deletions may lower meanwhile). */
static size_t live_rows_of(const seg *s)
{
    return seg_rows(s) - __atomic_load_n(&s->ndeleted, __ATOMIC_RELAXED);
}

static const char *seg_key(const seg *s, size_t row, uint32_t *len)
{
    if (s->sealed) {
        *len = (uint32_t)(s->file.key_off[row + 1] - s->file.key_off[row]);
        return s->file.key_bytes + s->file.key_off[row];
    }
    *len = s->key_lens[row];
    return s->keys[row];
}

static const char *seg_attr(const seg *s, size_t row, uint32_t *len)
{
    if (s->sealed) {
        *len = (uint32_t)(s->file.attr_off[row + 1] - s->file.attr_off[row]);
        return *len ? s->file.attr_bytes + s->file.attr_off[row] : NULL;
    }
    *len = s->attr_lens[row];
    return s->attrs[row];
}

/* Does this row carry attributes? */
static bool row_attributed(const seg *s, size_t row)
{
    uint32_t len = 0;
    seg_attr(s, row, &len);
    return len != 0;
}

static bool seg_is_deleted(const seg *s, size_t row)
{
    return __atomic_load_n(&s->deleted[row / 32], __ATOMIC_RELAXED) >> (row % 32) & 1u;
}

static void seg_mark_deleted(seg *s, size_t row)
{
    uint32_t bit = 1u << (row % 32);
    if (!(__atomic_fetch_or(&s->deleted[row / 32], bit, __ATOMIC_RELAXED) & bit)) {
        __atomic_fetch_add(&s->ndeleted, 1, __ATOMIC_RELAXED);
        if (s->sealed)
            s->del_dirty = true;
    }
}

/* The rows as the search reads them, as of now. */
static tq_rows seg_view(const seg *s)
{
    tq_rows v;
    if (s->sealed) {
        v = s->file.view;
    } else {
        v = tq_rows_view(&s->out, 0);
        v.growing = true;
    }
    v.n = seg_rows(s);
    v.deleted = s->deleted;
    v.ndeleted = __atomic_load_n(&s->ndeleted, __ATOMIC_RELAXED);
    return v;
}

static void seg_free(seg *s)
{
    if (!s)
        return;
    if (s->sealed) {
        tq_segment_close(&s->file);
    } else {
        /* every slot: stopping at 6 left a cosine segment's lengths mapped */
        for (size_t i = 0; i < sizeof(s->maps) / sizeof(s->maps[0]); i++)
            if (s->maps[i])
                munmap(s->maps[i], s->map_len[i]);
        /* Either array may be missing when the segment's allocation failed. */
        for (size_t r = 0; r < s->cap; r++) {
            if (s->keys)
                tq_free(s->keys[r]);
            if (s->attrs)
                tq_free(s->attrs[r]);
        }
        tq_free(s->keys);
        tq_free(s->attrs);
        tq_free(s->key_lens);
        tq_free(s->attr_lens);
    }
    for (size_t i = 0; i < s->ncols; i++) {
        tq_free(s->col_name[i]);
        tq_attr_column_free(&s->cols[i]);
    }
    tq_free(s->deleted);
    pthread_mutex_destroy(&s->verify_lock);
    tq_free(s);
}

static seg *seg_alloc(void)
{
    seg *s = tq_calloc(1, sizeof(*s));
    if (s)
        pthread_mutex_init(&s->verify_lock, NULL);
    return s;
}

/* Anonymous zero pages reserved for the whole capacity: nothing is
 * committed until a row is written, and the arrays never move. */
static void *reserve_pages(seg *s, int slot, size_t bytes)
{
    if (bytes == 0)
        return NULL;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* Rows are written in order: 2 MiB faults instead of 4 KiB ones, past
     * each array's first 2 MiB, so that a set of a few vectors (a server
     * may hold thousands) stays a few pages. */
    const size_t small = (size_t)2 << 20;
    if (bytes > small)
        tq_advise_huge((uint8_t *)p + small, bytes - small);
    s->maps[slot] = p;
    s->map_len[slot] = bytes;
    return p;
}

static int new_mutable(const tq_collection *c, size_t cap, seg **out, tq_error *err)
{
    const tq_codec *k = &c->codec;
    const size_t blocks = (cap + TQ_SCAN_BLOCK - 1) / TQ_SCAN_BLOCK, d = k->cfg.d;
    seg *s = seg_alloc();
    if (!s)
        return tq_err(err, TQ_ENOMEM, "out of memory for a segment");
    s->cap = cap;
    bool ok = true;
    if (k->q.mse_bits)
        ok &= (s->out.code_blocks = reserve_pages(s, 0, blocks * k->q.code_layout.block_bytes)) != NULL;
    if (k->q.variant == TQ_VARIANT_PROD)
        ok &= (s->out.sign_blocks = reserve_pages(s, 1, blocks * k->q.sign_layout.block_bytes)) != NULL;
    ok &= (s->out.sc = reserve_pages(s, 2, blocks * tq_scalar_block_floats(&k->q) * sizeof(float))) != NULL;
    if (k->cfg.refine == TQ_REFINE_FP32)
        ok &= (s->out.vectors = reserve_pages(s, 3, cap * d * sizeof(float))) != NULL;
    if (k->cfg.refine == TQ_REFINE_CODE8)
        ok &= (s->out.refine8 = reserve_pages(s, 4, cap * d)) != NULL;
    if (k->cfg.refine == TQ_REFINE_FP16)
        ok &= (s->out.half = reserve_pages(s, 5, cap * d * sizeof(uint16_t))) != NULL;
    if (k->cfg.metric == TQ_METRIC_COSINE)
        ok &= (s->out.lengths = reserve_pages(s, 6, cap * sizeof(float))) != NULL;
    s->keys = tq_calloc(cap, sizeof(char *));
    s->attrs = tq_calloc(cap, sizeof(char *));
    s->key_lens = tq_calloc(cap, sizeof(uint32_t));
    s->attr_lens = tq_calloc(cap, sizeof(uint32_t));
    s->deleted = tq_calloc(blocks ? blocks : 1, sizeof(uint32_t));
    if (!ok || !s->keys || !s->attrs || !s->key_lens || !s->attr_lens || !s->deleted) {
        seg_free(s);
        return tq_err(err, TQ_ENOMEM, "out of memory reserving a segment of %zu rows", cap);
    }
    *out = s;
    return TQ_OK;
}

static int open_sealed(tq_collection *c, uint64_t id, uint64_t del_id, uint64_t rows, seg **out, tq_error *err)
{
    char path[PATH_MAX];
    file_path(c, path, "seg", id, "tqs");
    seg *s = seg_alloc();
    if (!s)
        return tq_err(err, TQ_ENOMEM, "out of memory for a segment");
    s->sealed = true;
    s->id = id;
    s->del_id = del_id;
    int rc = tq_segment_open(path, &c->codec, &s->file, err);
    if (!rc && s->file.rows != rows)
        rc = tq_err(err, TQ_ECORRUPT, "%s: %llu rows, the manifest says %llu", path,
                    (unsigned long long)s->file.rows, (unsigned long long)rows);
    if (!rc && !(s->deleted = tq_calloc((size_t)(rows + 31) / 32 + 1, sizeof(uint32_t))))
        rc = tq_err(err, TQ_ENOMEM, "out of memory for tombstones");
    if (!rc && del_id) {
        uint64_t count;
        file_path(c, path, "seg", del_id, "del");
        rc = tq_tombstones_read(path, rows, s->deleted, &count, err);
        s->ndeleted = (size_t)count;
    }
    if (rc) {
        seg_free(s);
        return rc;
    }
    *out = s;
    return TQ_OK;
}

/* Hash a sealed segment once; later calls return the first answer. */
static int seg_verify(seg *s, tq_error *err)
{
    if (!s->sealed || __atomic_load_n(&s->verified, __ATOMIC_ACQUIRE) == 1)
        return TQ_OK;
    pthread_mutex_lock(&s->verify_lock);
    if (s->verified == 0) {
        int rc = tq_segment_verify(&s->file, &s->verify_err);
        __atomic_store_n(&s->verified, rc ? -1 : 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&s->verify_lock);
    if (s->verified < 0) {
        if (err)
            *err = s->verify_err;
        return s->verify_err.code;
    }
    return TQ_OK;
}

/* ----------------------------------------------------------- snapshots */

static tq_snapshot *snapshot_new(tq_collection *c, seg *const *segs, size_t n)
{
    tq_snapshot *s = tq_calloc(1, sizeof(*s));
    if (!s || !(s->segs = tq_malloc((n ? n : 1) * sizeof(seg *)))) {
        tq_free(s);
        return NULL;
    }
    s->refs = 1;
    s->lock = &c->snap_lock;
    s->nsegs = n;
    memcpy(s->segs, segs, n * sizeof(seg *));
    pthread_mutex_lock(&c->snap_lock);
    for (size_t i = 0; i < n; i++)
        segs[i]->refs++;
    pthread_mutex_unlock(&c->snap_lock);
    return s;
}

static tq_snapshot *snapshot_acquire(tq_collection *c)
{
    pthread_mutex_lock(&c->snap_lock);
    tq_snapshot *s = c->current;
    s->refs++;
    pthread_mutex_unlock(&c->snap_lock);
    return s;
}

void tq_snapshot_release(tq_snapshot *s)
{
    if (!s)
        return;
    pthread_mutex_t *lock = s->lock;
    pthread_mutex_lock(lock);
    bool last = --s->refs == 0;
    size_t nfree = 0;
    if (last)
        for (size_t i = 0; i < s->nsegs; i++)
            if (--s->segs[i]->refs == 0)
                s->segs[nfree++] = s->segs[i];
    pthread_mutex_unlock(lock);
    if (!last)
        return;
    for (size_t i = 0; i < nfree; i++)
        seg_free(s->segs[i]);
    tq_free(s->segs);
    tq_free(s);
}

/* Make segs the current list; the old snapshot goes when its last reader
 * lets go. */
static void snapshot_publish(tq_collection *c, tq_snapshot *next)
{
    pthread_mutex_lock(&c->snap_lock);
    tq_snapshot *old = c->current;
    c->current = next;
    pthread_mutex_unlock(&c->snap_lock);
    tq_snapshot_release(old);
}

/* ------------------------------------------------------------ manifest */

/* Write the manifest naming these sealed segments and this log. An error
 * with *committed set means it is in place but maybe not durable: the
 * caller takes the change in, deletes nothing the old manifest named (a
 * machine crash could bring it back), and marks the collection broken. */
static int commit_manifest(tq_collection *c, seg *const *sealed, size_t nsealed, uint64_t wal_id,
                           uint64_t wal_first_lsn, bool *committed, tq_error *err)
{
    *committed = false;
    tq_manifest m = {.cfg = c->codec.cfg, .next_file_id = c->next_file_id, .wal_id = wal_id,
                     .wal_first_lsn = wal_first_lsn, .nsegments = (uint32_t)nsealed, .mean = c->codec.mean};
    m.segments = tq_calloc(nsealed ? nsealed : 1, sizeof(tq_manifest_segment));
    if (!m.segments)
        return tq_err(err, TQ_ENOMEM, "out of memory writing the manifest");
    for (size_t i = 0; i < nsealed; i++)
        m.segments[i] = (tq_manifest_segment){sealed[i]->id, sealed[i]->file.rows, sealed[i]->del_id};
    int rc = tq_manifest_write(c->dir, &m, committed, err);
    tq_free(m.segments);
    if (rc && *committed)
        c->broken = true;
    return rc;
}

/* --------------------------------------------------------- row copying */

/* Where a gathered row came from: its segment's index in the list given,
 * and its row there. */
typedef struct row_origin {
    uint32_t source, row;
} row_origin;

/* The live rows of some segments gathered into fresh arrays, in order, with
 * their names pointing into the source segments. */
typedef struct gathered {
    tq_rows_out out;
    size_t n;
    const char **key, **attr;
    uint32_t *key_len, *attr_len;
    row_origin *origin;       /* when asked for */
} gathered;

static void gathered_free(gathered *g)
{
    tq_rows_out_free(&g->out);
    tq_free(g->key);
    tq_free(g->attr);
    tq_free(g->key_len);
    tq_free(g->attr_len);
    tq_free(g->origin);
    memset(g, 0, sizeof(*g));
}

/* Room for n rows' names; false when out of memory. */
static bool gathered_names(gathered *g, size_t n)
{
    g->key = tq_calloc(n + 1, sizeof(char *));
    g->attr = tq_calloc(n + 1, sizeof(char *));
    g->key_len = tq_calloc(n + 1, sizeof(uint32_t));
    g->attr_len = tq_calloc(n + 1, sizeof(uint32_t));
    return g->key && g->attr && g->key_len && g->attr_len;
}

static tq_row_names gathered_row_names(const gathered *g)
{
    return (tq_row_names){.key = g->key, .key_len = g->key_len, .attr = g->attr, .attr_len = g->attr_len};
}

/* with_origin: g->origin says where each row came from. */
static int gather_live(tq_collection *c, seg *const *segs, size_t nsegs, bool with_origin, gathered *g,
                       tq_error *err)
{
    const tq_codec *k = &c->codec;
    memset(g, 0, sizeof(*g));
    /* The writer lock is held unless the origin is asked for (a background
     * merge): then deletions may go on meanwhile, and room for every row
     * keeps a deletion counted before its bit is seen from cutting off a
     * live row. */
    size_t room = 0;
    for (size_t i = 0; i < nsegs; i++)
        room += with_origin ? seg_rows(segs[i]) : live_rows_of(segs[i]);
    bool ok = tq_rows_out_alloc(k, room, &g->out) == TQ_OK && gathered_names(g, room) &&
              (!with_origin || (g->origin = tq_malloc((room + 1) * sizeof(row_origin))));
    if (!ok) {
        gathered_free(g);
        return tq_err(err, TQ_ENOMEM, "out of memory gathering %zu rows", room);
    }
    for (size_t i = 0; i < nsegs; i++) {
        const seg *s = segs[i];
        tq_rows src = seg_view(s);
        for (size_t r = 0; r < src.n && g->n < room; r++) {
            if (seg_is_deleted(s, r))
                continue;
            const size_t to = g->n++;
            tq_codec_row_copy(k, &src, r, &g->out, to);
            if (g->origin)
                g->origin[to] = (row_origin){(uint32_t)i, (uint32_t)r};
            g->key[to] = seg_key(s, r, &g->key_len[to]);
            g->attr[to] = seg_attr(s, r, &g->attr_len[to]);
        }
    }
    return TQ_OK;
}

/* Point every key of a new sealed segment at its row there. */
static void repoint_keys(tq_collection *c, seg *s)
{
    pthread_rwlock_wrlock(&c->map_lock);
    for (size_t r = 0; r < s->file.rows; r++) {
        uint32_t len;
        const char *key = seg_key(s, r, &len);
        /* The map has room: the key is already in it. */
        tq_keymap_put(&c->map, key, len, s, r, NULL);
    }
    pthread_rwlock_unlock(&c->map_lock);
}


/* ------------------------------------------------------- partitioning */

/* Rows put in partition order with their names: what a partitioned
 * segment file is written from. */
typedef struct sorted_rows {
    tq_partitioning part;
    tq_partitions view;
    gathered rows;
} sorted_rows;

static void sorted_rows_free(sorted_rows *r)
{
    tq_partitioning_free(&r->part);
    gathered_free(&r->rows);
    memset(r, 0, sizeof(*r));
}

/* Compaction clusters on every core, as a build would (the writer is
 * waiting for it anyway). */
static unsigned partition_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : n > (long)TQ_MAX_THREADS ? TQ_MAX_THREADS : (unsigned)n;
}

/* Cluster rows and reorder them by partition, with in's names and origins
 * (when it has them), into out. rows NULL: in's own gathered rows, which
 * are reordered in place and move to out (a merge or compaction holds its
 * rows once, not twice); else rows of a mapping, copied in order. */
static int sort_by_partition(const tq_collection *c, gathered *in, const tq_rows *rows, unsigned threads,
                             const bool *stop, sorted_rows *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    const size_t n = in->n;
    const tq_rows own = tq_rows_view(&in->out, n);
    int rc = tq_partition_rows(&c->codec, rows ? rows : &own, tq_partition_default_nlist(&c->codec, n),
                               c->codec.cfg.seed, threads, stop, &out->part, err);
    if (rc)
        return rc;
    const uint32_t *order = out->part.order;
    gathered *g = &out->rows;
    bool ok = gathered_names(g, n) && (!in->origin || (g->origin = tq_malloc((n + 1) * sizeof(row_origin))));
    if (ok && rows) {
        ok = tq_rows_gather(&c->codec, rows, order, n, &g->out) == TQ_OK;
    } else if (ok && (ok = tq_rows_permute(&c->codec, &in->out, n, order) == TQ_OK)) {
        g->out = in->out;
        memset(&in->out, 0, sizeof(in->out));
    }
    if (!ok) {
        sorted_rows_free(out);
        return tq_err(err, TQ_ENOMEM, "out of memory ordering %zu rows by partition", n);
    }
    g->n = n;
    for (size_t i = 0; i < n; i++) {
        g->key[i] = in->key[order[i]];
        g->key_len[i] = in->key_len[order[i]];
        g->attr[i] = in->attr[order[i]];
        g->attr_len[i] = in->attr_len[order[i]];
        if (g->origin)
            g->origin[i] = in->origin[order[i]];
    }
    out->view = tq_partitioning_view(&out->part);
    return TQ_OK;
}

static bool wants_partitions(const tq_collection *c, const seg *s)
{
    return s->sealed && !s->file.parts.nlist && !__atomic_load_n(&s->partition_failed, __ATOMIC_RELAXED) &&
           s->file.rows >= c->opts.partition_rows;
}

static uint64_t monotonic_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* There may be a segment to partition. */
static void partitioner_wake(tq_collection *c)
{
    if (!c->part_started)
        return;
    pthread_mutex_lock(&c->part_lock);
    c->part_wake = true;
    pthread_cond_signal(&c->part_cond);
    pthread_mutex_unlock(&c->part_lock);
}

static tq_rows sorted_view(const sorted_rows *r)
{
    tq_rows v = tq_rows_view(&r->rows.out, r->rows.n);
    v.parts = &r->view;
    return v;
}

/* --------------------------------------------------------- seal, compact */

/* Writer lock held. Write the mutable segment's live rows, fresh tombstone
 * files and an empty log; commit; switch. */
static int seal_nolock(tq_collection *c, tq_error *err)
{
    if (c->broken)
        return tq_err(err, TQ_EIO, "%s: an earlier change could not be completed; reopen the collection", c->dir);
    seg *mut = c->mut;
    if (seg_rows(mut) == 0)
        return TQ_OK;
    tq_snapshot *cur = c->current;
    const size_t nsealed = cur->nsegs - 1;
    char path[PATH_MAX];
    /* Without deletions the segment is written straight from the mutable
     * arrays; otherwise the live rows are gathered first. */
    gathered g = {0};
    tq_rows rows;
    tq_row_names names;
    int rc;
    if (__atomic_load_n(&mut->ndeleted, __ATOMIC_RELAXED) == 0) {
        rows = seg_view(mut);
        names = (tq_row_names){.key = (const char *const *)mut->keys, .key_len = mut->key_lens,
                               .attr = (const char *const *)mut->attrs, .attr_len = mut->attr_lens};
    } else {
        if ((rc = gather_live(c, &mut, 1, false, &g, err)))
            return rc;
        rows = tq_rows_view(&g.out, g.n);
        names = gathered_row_names(&g);
    }
    const uint64_t seg_id = rows.n ? c->next_file_id++ : 0;
    uint64_t *new_del = tq_calloc(2 * (nsealed + 1), sizeof(uint64_t));
    uint64_t *old_del = new_del ? new_del + nsealed + 1 : NULL;
    seg *next_mut = NULL, *sealed_new = NULL;
    seg **list = tq_calloc(nsealed + 2, sizeof(seg *));
    tq_wal *wal = NULL;
    const uint64_t wal_id = c->next_file_id++;
    if (!new_del || !list) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory sealing");
        goto undo;
    }
    if ((rc = new_mutable(c, c->opts.segment_rows, &next_mut, err)))
        goto undo;
    if (seg_id) {
        file_path(c, path, "seg", seg_id, "tqs");
        if ((rc = tq_segment_write(path, &c->codec, &rows, &names, err)))
            goto undo;
        if ((rc = open_sealed(c, seg_id, 0, rows.n, &sealed_new, err)))
            goto undo;
        sealed_new->verified = 1; /* written from memory just now */
    }
    for (size_t i = 0; i < nsealed; i++) {
        seg *s = cur->segs[i];
        if (!s->del_dirty)
            continue;
        new_del[i] = c->next_file_id++;
        file_path(c, path, "seg", new_del[i], "del");
        if ((rc = tq_tombstones_write(path, s->deleted, s->file.rows, err)))
            goto undo;
    }
    file_path(c, path, "wal", wal_id, "log");
    const uint64_t first_lsn = tq_wal_next_lsn(c->wal);
    if ((rc = tq_wal_create(path, first_lsn, c->opts.fsync, &wal, err)))
        goto undo;
    /* The manifest names the new tombstone ids; the segments take them
     * only once it is committed. */
    for (size_t i = 0; i < nsealed; i++) {
        old_del[i] = cur->segs[i]->del_id;
        if (new_del[i])
            cur->segs[i]->del_id = new_del[i];
        list[i] = cur->segs[i];
    }
    size_t nlist = nsealed;
    if (sealed_new)
        list[nlist++] = sealed_new;
    bool committed;
    if ((rc = commit_manifest(c, list, nlist, wal_id, first_lsn, &committed, err)) && !committed) {
        for (size_t i = 0; i < nsealed; i++)
            cur->segs[i]->del_id = old_del[i];
        goto undo;
    }
    /* Committed (durably unless rc says otherwise). Nothing below can fail. */
    const bool durable = rc == TQ_OK;
    for (size_t i = 0; i < nsealed; i++)
        if (new_del[i])
            cur->segs[i]->del_dirty = false;
    if (sealed_new)
        repoint_keys(c, sealed_new);
    list[nlist++] = next_mut;
    tq_snapshot *next = snapshot_new(c, list, nlist);
    if (!next) {
        /* The files are right; memory is not. Refuse further work. */
        c->broken = true;
        rc = tq_err(err, TQ_ENOMEM, "out of memory switching to the sealed segment; reopen the collection");
        goto cleanup;
    }
    snapshot_publish(c, next);
    c->mut = next_mut;
    next_mut = NULL;
    file_path(c, path, "wal", c->wal_id, "log");
    tq_wal_close(c->wal, NULL);
    if (durable)
        unlink(path);
    c->wal = wal;
    c->wal_id = wal_id;
    c->wal_first_lsn = first_lsn;
    wal = NULL;
    for (size_t i = 0; durable && i < nsealed; i++)
        if (new_del[i] && old_del[i]) {
            file_path(c, path, "seg", old_del[i], "del");
            unlink(path);
        }
    if (sealed_new) /* it may want partitions, or make a merge due */
        partitioner_wake(c);
    sealed_new = NULL;
    goto cleanup;
undo:
    if (seg_id) {
        file_path(c, path, "seg", seg_id, "tqs");
        unlink(path);
    }
    for (size_t i = 0; new_del && i < nsealed; i++)
        if (new_del[i]) {
            file_path(c, path, "seg", new_del[i], "del");
            unlink(path);
        }
    if (wal) {
        tq_wal_close(wal, NULL);
        wal = NULL;
        file_path(c, path, "wal", wal_id, "log");
        unlink(path);
    }
cleanup:
    seg_free(sealed_new);
    seg_free(next_mut);
    tq_free(new_del);
    tq_free(list);
    gathered_free(&g);
    return rc;
}

int tq_collection_compact(tq_collection *c, tq_error *err)
{
    pthread_mutex_lock(&c->write_lock);
    int rc = seal_nolock(c, err);
    if (rc)
        goto out;
    tq_snapshot *cur = c->current;
    const size_t nsealed = cur->nsegs - 1;
    seg **pick = tq_calloc(nsealed + 1, sizeof(seg *)), **keep = tq_calloc(nsealed + 2, sizeof(seg *));
    if (!pick || !keep) {
        tq_free(pick);
        tq_free(keep);
        rc = tq_err(err, TQ_ENOMEM, "out of memory compacting");
        goto out;
    }
    size_t npick = 0, nkeep = 0, with_deletes = 0;
    for (size_t i = 0; i < nsealed; i++) {
        seg *s = cur->segs[i];
        const size_t dead = __atomic_load_n(&s->ndeleted, __ATOMIC_RELAXED);
        if (dead * 5 >= s->file.rows || s->file.rows * 4 < c->opts.segment_rows) {
            pick[npick++] = s;
            with_deletes += dead > 0;
        } else {
            keep[nkeep++] = s;
        }
    }
    if (with_deletes == 0 && npick < 2) {
        tq_free(pick);
        tq_free(keep);
        goto out;
    }
    gathered g;
    sorted_rows sorted = {0};
    char path[PATH_MAX];
    seg *merged = NULL;
    uint64_t id = 0;
    if ((rc = gather_live(c, pick, npick, false, &g, err)))
        goto done;
    if (g.n) {
        tq_rows rows = tq_rows_view(&g.out, g.n);
        tq_row_names names = gathered_row_names(&g);
        /* The merged segment is partitioned as it is written: compaction
         * already rewrites every row. */
        if (g.n >= c->opts.partition_rows) {
            if ((rc = sort_by_partition(c, &g, NULL, partition_threads(), NULL, &sorted, err)))
                goto done;
            rows = sorted_view(&sorted);
            names = gathered_row_names(&sorted.rows);
        }
        id = c->next_file_id++;
        file_path(c, path, "seg", id, "tqs");
        if ((rc = tq_segment_write(path, &c->codec, &rows, &names, err)) ||
            (rc = open_sealed(c, id, 0, g.n, &merged, err))) {
            unlink(path);
            goto done;
        }
        merged->verified = 1;
        keep[nkeep++] = merged;
    }
    bool committed;
    if ((rc = commit_manifest(c, keep, nkeep, c->wal_id, c->wal_first_lsn, &committed, err)) && !committed) {
        if (id) {
            file_path(c, path, "seg", id, "tqs");
            unlink(path);
        }
        goto done;
    }
    if (merged)
        repoint_keys(c, merged);
    keep[nkeep++] = c->mut;
    tq_snapshot *next = snapshot_new(c, keep, nkeep);
    if (!next) {
        c->broken = true;
        rc = tq_err(err, TQ_ENOMEM, "out of memory switching to the compacted segment; reopen the collection");
        goto done;
    }
    merged = NULL;
    snapshot_publish(c, next);
    /* Readers still holding the old snapshot keep their mappings. After
     * a commit of unknown durability the old files stay (open removes
     * whatever the manifest does not name). */
    for (size_t i = 0; !rc && i < npick; i++) {
        file_path(c, path, "seg", pick[i]->id, "tqs");
        unlink(path);
        if (pick[i]->del_id) {
            file_path(c, path, "seg", pick[i]->del_id, "del");
            unlink(path);
        }
    }
done:
    seg_free(merged);
    gathered_free(&g);
    sorted_rows_free(&sorted);
    tq_free(pick);
    tq_free(keep);
out:
    pthread_mutex_unlock(&c->write_lock);
    return rc;
}


/* ------------------------------------------- background partitioning */

/* One background thread per collection (none when partition_rows is
 * never), woken by each seal and at open, rewrites sealed segments off the
 * write path, one job at a time:
 *
 *   merge  once merge_factor (F) segments are of one size class (class 0
 *          below F * segment_rows live rows, each next class F times
 *          larger), every segment of the lowest such class, oldest first,
 *          as many as TQ_MERGE_MAX_BYTES holds, becomes one segment without
 *          their deleted rows, partitioned when large enough. A row is
 *          rewritten about log_F(n / segment_rows) times, and n rows keep
 *          fewer than F segments per class, so a query scores a few sets
 *          of centroids rather than n / segment_rows of them: a million
 *          rows (d = 128, 4 bits, recall 0.95 asked) answered 5,647 QPS in
 *          eight segments and 20,835 merged into one. A thread behind the
 *          writers finds more than F in a class and merges them all at once.
 *   partition  else one segment of at least partition_rows rows without
 *          partitions: its rows clustered and written in partition order.
 *
 * The new file is written with no lock held (sealed rows never change);
 * then, under the writer lock for the switch only, the deletions made
 * meanwhile are carried over, a new manifest names the new file in place
 * of the old ones and the keys whose rows moved are repointed. Writers
 * never wait for the clustering. A crash before the commit leaves an
 * unnamed file that open removes; after it, the new segment. Until their
 * turn segments are searched as they are, so nothing waits on this. */

/* Is s in the current snapshot still (compaction may have replaced it)?
 * Writer lock held. */
static bool still_current(const tq_collection *c, const seg *s)
{
    const tq_snapshot *cur = c->current;
    for (size_t i = 0; i + 1 < cur->nsegs; i++)
        if (cur->segs[i] == s)
            return true;
    return false;
}

static bool among(seg *const *segs, size_t n, const seg *s)
{
    for (size_t i = 0; i < n; i++)
        if (segs[i] == s)
            return true;
    return false;
}

/* Put the new segment ns in the place of olds (writer lock held, ns's file
 * written): row i of ns is row from[i].row of olds[from[i].source]. */
static int switch_in(tq_collection *c, seg *const *olds, size_t nold, seg *ns, const row_origin *from, tq_error *err)
{
    char path[PATH_MAX];
    const size_t rows = (size_t)ns->file.rows;
    /* Deletions so far, durable in ns's own tombstones before the
     * manifest names it (the old segments' may be in the log only). */
    for (size_t i = 0; i < rows; i++)
        if (seg_is_deleted(olds[from[i].source], from[i].row))
            seg_mark_deleted(ns, i);
    ns->del_dirty = false;
    int rc = TQ_OK;
    if (ns->ndeleted) {
        ns->del_id = c->next_file_id++;
        file_path(c, path, "seg", ns->del_id, "del");
        if ((rc = tq_tombstones_write(path, ns->deleted, rows, err)))
            return rc;
    }
    /* ns goes where the first of them was; live keys are in one sealed
     * segment each, so the order of the rest does not matter. */
    tq_snapshot *cur = c->current;
    seg **list = tq_malloc(cur->nsegs * sizeof(seg *));
    if (!list)
        return tq_err(err, TQ_ENOMEM, "out of memory switching to a rewritten segment");
    size_t n = 0;
    bool placed = false;
    for (size_t i = 0; i < cur->nsegs; i++) {
        if (!among(olds, nold, cur->segs[i]))
            list[n++] = cur->segs[i];
        else if (!placed)
            list[n++] = ns, placed = true;
    }
    bool committed;
    if ((rc = commit_manifest(c, list, n - 1, c->wal_id, c->wal_first_lsn, &committed, err)) && !committed) {
        tq_free(list);
        return rc;
    }
    /* Keys still naming their old row move to the new one; a key upserted
     * or removed meanwhile names another row, or none, and stays. */
    pthread_rwlock_wrlock(&c->map_lock);
    for (size_t i = 0; i < rows; i++) {
        if (seg_is_deleted(ns, i))
            continue;
        uint32_t len;
        const char *key = seg_key(ns, i, &len);
        tq_keymap_entry *e = tq_keymap_find(&c->map, key, len);
        if (e && e->owner == olds[from[i].source] && e->row == from[i].row)
            tq_keymap_put(&c->map, key, len, ns, i, NULL);
    }
    pthread_rwlock_unlock(&c->map_lock);
    tq_snapshot *next = snapshot_new(c, list, n);
    tq_free(list);
    if (!next) {
        c->broken = true;
        return tq_err(err, TQ_ENOMEM, "out of memory switching to a rewritten segment; reopen the collection");
    }
    snapshot_publish(c, next);
    /* After a commit of unknown durability the old files stay (open
     * removes whatever the manifest does not name). */
    for (size_t i = 0; !rc && i < nold; i++) {
        file_path(c, path, "seg", olds[i]->id, "tqs");
        unlink(path);
        if (olds[i]->del_id) {
            file_path(c, path, "seg", olds[i]->del_id, "del");
            unlink(path);
        }
    }
    return rc;
}

/* 0 below F * segment_rows live rows, then one more for each factor F. */
static unsigned size_class(const tq_collection *c, size_t live)
{
    const size_t f = c->opts.merge_factor;
    unsigned cls = 0;
    for (size_t bound = f * c->opts.segment_rows; live >= bound && bound <= SIZE_MAX / f; bound *= f)
        cls++;
    return cls;
}

#define MAX_SIZE_CLASSES 64

/* s's size class for merging, or MAX_SIZE_CLASSES when it takes no part:
 * a merge of it failed, or nothing in it is live (compaction drops it). */
static unsigned merge_class(const tq_collection *c, const seg *s)
{
    const size_t live = live_rows_of(s);
    if (__atomic_load_n(&s->merge_failed, __ATOMIC_RELAXED) || !live)
        return MAX_SIZE_CLASSES;
    const unsigned cls = size_class(c, live);
    return cls < MAX_SIZE_CLASSES ? cls : MAX_SIZE_CLASSES - 1;
}

/* The segments of the merge due, oldest first, into pick (room for every
 * sealed segment); 0 when none is. */
static size_t pick_merge(const tq_collection *c, const tq_snapshot *snap, seg **pick)
{
    if (c->opts.merge_factor == SIZE_MAX)
        return 0;
    size_t members[MAX_SIZE_CLASSES + 1] = {0};
    const size_t nsealed = snap->nsegs - 1;
    for (size_t i = 0; i < nsealed; i++)
        members[merge_class(c, snap->segs[i])]++;
    const size_t row_bytes = tq_codec_row_bytes(&c->codec);
    for (unsigned cls = 0; cls < MAX_SIZE_CLASSES; cls++) {
        if (members[cls] < c->opts.merge_factor)
            continue;
        size_t n = 0, rows = 0;
        for (size_t i = 0; i < nsealed; i++) {
            seg *s = snap->segs[i];
            if (merge_class(c, s) != cls)
                continue;
            /* Bounded by the rows it gathers, deleted ones too. */
            if ((rows + seg_rows(s)) * row_bytes > TQ_MERGE_MAX_BYTES || rows + seg_rows(s) > TQ_MAX_SEGMENT_ROWS)
                break;
            rows += seg_rows(s);
            pick[n++] = s;
        }
        if (n >= 2)
            return n;
    }
    return 0;
}

/* Rewrite sources (one segment to partition, or several to merge) as one
 * new segment and switch to it; TQ_OK also when a compaction replaced a
 * source meanwhile (the work goes). */
static int rewrite(tq_collection *c, seg *const *sources, size_t nsources, tq_error *err)
{
    int rc = TQ_OK;
    /* Damaged bytes must not be rewritten under fresh checksums. */
    for (size_t i = 0; i < nsources && !rc; i++)
        rc = seg_verify(sources[i], err);
    if (rc)
        return rc;
    gathered g = {0};
    sorted_rows sorted = {0};
    tq_rows view;
    tq_row_names names;
    if (nsources == 1) {
        /* From the mapping, deleted rows and all (they are carried over as
         * deletions): nothing is copied but the names. */
        const seg *s = sources[0];
        const size_t rows = (size_t)s->file.rows;
        if (!gathered_names(&g, rows) || !(g.origin = tq_malloc((rows + 1) * sizeof(row_origin)))) {
            gathered_free(&g);
            return tq_err(err, TQ_ENOMEM, "out of memory partitioning a segment of %zu rows", rows);
        }
        for (size_t r = 0; r < rows; r++) {
            g.key[r] = seg_key(s, r, &g.key_len[r]);
            g.attr[r] = seg_attr(s, r, &g.attr_len[r]);
            g.origin[r] = (row_origin){0, (uint32_t)r};
        }
        g.n = rows;
        view = s->file.view;
    } else {
        if ((rc = gather_live(c, sources, nsources, true, &g, err)))
            return rc;
        view = tq_rows_view(&g.out, g.n);
    }
    names = gathered_row_names(&g);
    const row_origin *from = g.origin;
    char path[PATH_MAX];
    if (g.n >= c->opts.partition_rows) {
        /* One thread, at a lower priority (partitioner_main): writers keep
         * the other cores. */
        if ((rc = sort_by_partition(c, &g, nsources == 1 ? &view : NULL, 1, &c->part_stop, &sorted, err)))
            goto out;
        from = sorted.rows.origin;
        view = sorted_view(&sorted);
        names = gathered_row_names(&sorted.rows);
    }
    if (!view.n)
        goto out; /* everything deleted meanwhile: compaction drops them */
    pthread_mutex_lock(&c->write_lock);
    const uint64_t id = c->next_file_id++;
    file_path(c, path, "seg", id, "tqs");
    pthread_mutex_unlock(&c->write_lock);
    rc = tq_segment_write(path, &c->codec, &view, &names, err);
    pthread_mutex_lock(&c->write_lock);
    /* (The path again under the lock: a move may have happened.) */
    file_path(c, path, "seg", id, "tqs");
    bool current = !rc && !c->broken;
    for (size_t i = 0; current && i < nsources; i++)
        current = still_current(c, sources[i]);
    seg *ns = NULL;
    if (!current || (rc = open_sealed(c, id, 0, view.n, &ns, err))) {
        unlink(path); /* failed, or a source compacted away meanwhile: the work goes */
    } else {
        ns->verified = 1; /* written from verified rows just now */
        if ((rc = switch_in(c, sources, nsources, ns, from, err)) && !c->broken) {
            unlink(path);
            if (ns->del_id) {
                file_path(c, path, "seg", ns->del_id, "del");
                unlink(path);
            }
            seg_free(ns);
        }
    }
    pthread_mutex_unlock(&c->write_lock);
out:
    sorted_rows_free(&sorted);
    gathered_free(&g);
    return rc;
}

/* Do one job if one is due (a merge first: it partitions what it merges);
 * false when none is. */
static bool background_one(tq_collection *c)
{
    tq_snapshot *snap = snapshot_acquire(c);
    seg **pick = tq_malloc(snap->nsegs * sizeof(seg *));
    size_t n = pick ? pick_merge(c, snap, pick) : 0;
    for (size_t i = 0; pick && !n && i + 1 < snap->nsegs; i++)
        if (wants_partitions(c, snap->segs[i]))
            pick[n++] = snap->segs[i];
    if (n) {
        tq_error err = {0};
        const int rc = rewrite(c, pick, n, &err);
        if (rc && rc != TQ_EBUSY) { /* (busy: stopped for a close, to be done at the next open) */
            /* Searched as they are; the next compaction rewrites them. */
            for (size_t i = 0; i < n; i++)
                __atomic_store_n(n == 1 ? &pick[i]->partition_failed : &pick[i]->merge_failed, true,
                                 __ATOMIC_RELAXED);
            if (n == 1)
                say(c, TQ_LOG_WARNING, "partitioning segment %08llu failed, it stays flat: %s",
                    (unsigned long long)pick[0]->id, err.msg);
            else
                say(c, TQ_LOG_WARNING, "merging %zu segments (from %08llu) failed, they stay as they are: %s", n,
                    (unsigned long long)pick[0]->id, err.msg);
        }
    }
    tq_free(pick);
    tq_snapshot_release(snap);
    return n > 0;
}

/* A job waits for the writers to pause: no add under way or ended in the
 * last QUIET_NS, or QUIET_MAX_NS at most. Rewriting while a bulk load runs slowed a
 * million-row load (d = 128) from 474K-640K to 365K-430K vectors/s even
 * at nice 10 and on the other core (both threads fault pages in and stream
 * memory), and partitioned segments the next merge rewrote anyway.
 * Waiting, the load runs at the flat rate and its segments are merged
 * once, at the end: a four-million-row load merged in two pieces mid-way
 * (as a pause between seals, or 30 s, let it) searched 5,653 QPS where one
 * segment gives 8,565. Writers that never pause get their segments
 * rewritten every QUIET_MAX_NS, several at a time. Part_lock held. */
#define QUIET_NS 500000000ull
#define QUIET_MAX_NS 120000000000ull

/* When (CLOCK_MONOTONIC ns) the writers will have paused for `pause`
 * ns, as it looks at `now`: later than now while an add is under way. */
static uint64_t paused_at(const tq_collection *c, uint64_t now, uint64_t pause)
{
    const bool adding = __atomic_load_n(&c->adds_running, __ATOMIC_RELAXED) > 0;
    return (adding ? now : __atomic_load_n(&c->last_add_ns, __ATOMIC_RELAXED)) + pause;
}

/* Part_lock held: sleep until `until` (CLOCK_MONOTONIC ns) or a signal. */
static void part_sleep_until(tq_collection *c, uint64_t until)
{
    const struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u), .tv_nsec = (long)(until % 1000000000u)};
    pthread_cond_timedwait(&c->part_cond, &c->part_lock, &ts);
}

static void wait_for_quiet(tq_collection *c)
{
    const uint64_t deadline = monotonic_ns() + QUIET_MAX_NS;
    for (;;) {
        const uint64_t now = monotonic_ns(), quiet = paused_at(c, now, QUIET_NS);
        if (c->part_stop || c->part_hurry || now >= quiet || now >= deadline)
            return;
        part_sleep_until(c, quiet < deadline ? quiet : deadline);
    }
}

/* A mutable segment of at least partition_rows rows is sealed once the
 * writers have paused for IDLE_SEAL_NS, so that it is partitioned (and
 * merged) like any other: until the next full seal its rows were scanned
 * flat by every query (131,072 rows at d = 128, 4 bits, about a
 * millisecond, where the partitioned rest of a million took 60 us). */
#define IDLE_SEAL_NS 2000000000ull

/* The mutable segment's rows, from the current snapshot. */
static size_t unsealed_rows(tq_collection *c)
{
    tq_snapshot *snap = snapshot_acquire(c);
    const size_t n = seg_rows(snap->segs[snap->nsegs - 1]);
    tq_snapshot_release(snap);
    return n;
}

static void seal_when_idle(tq_collection *c)
{
    tq_error err = {0};
    pthread_mutex_lock(&c->write_lock);
    int rc = TQ_OK;
    if (!c->broken && seg_rows(c->mut) >= c->opts.partition_rows)
        rc = seal_nolock(c, &err);
    pthread_mutex_unlock(&c->write_lock);
    if (rc) {
        /* The next add past partition_rows (or a full seal) tries again. */
        __atomic_store_n(&c->idle_seal_off, true, __ATOMIC_RELAXED);
        say(c, TQ_LOG_WARNING, "sealing the log while idle failed, it stays in the log: %s", err.msg);
    }
}

/* Part_lock held, nothing to do: wait for a wake, or until the writers have
 * paused long enough to seal a large mutable segment (then seal it). */
static void wait_idle(tq_collection *c)
{
    if (__atomic_load_n(&c->idle_seal_off, __ATOMIC_RELAXED) || unsealed_rows(c) < c->opts.partition_rows) {
        pthread_cond_wait(&c->part_cond, &c->part_lock);
        return;
    }
    const uint64_t now = monotonic_ns(), idle = paused_at(c, now, IDLE_SEAL_NS);
    if (now < idle) {
        part_sleep_until(c, idle);
        return;
    }
    pthread_mutex_unlock(&c->part_lock);
    seal_when_idle(c); /* wakes this thread for the new segment */
    pthread_mutex_lock(&c->part_lock);
}

static void *partitioner_main(void *arg)
{
    tq_collection *c = arg;
    /* Background work yields to writers and searches: on two cores,
     * clustering on both at normal priority cut a million-row ingest to
     * 0.6-0.75 of the flat build's rate. (Linux: a thread's nice value is
     * its own; failure leaves it at the default.) */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    pthread_mutex_lock(&c->part_lock);
    for (;;) {
        while (!c->part_stop && !c->part_wake)
            wait_idle(c);
        if (c->part_stop)
            break;
        c->part_wake = false;
        c->part_busy = true;
        for (bool more = true; more && !c->part_stop;) {
            wait_for_quiet(c);
            pthread_mutex_unlock(&c->part_lock);
            more = background_one(c);
            pthread_mutex_lock(&c->part_lock);
        }
        c->part_busy = false;
        pthread_cond_broadcast(&c->part_idle);
    }
    c->part_busy = false;
    pthread_cond_broadcast(&c->part_idle);
    pthread_mutex_unlock(&c->part_lock);
    return NULL;
}

static void partitioner_stop(tq_collection *c)
{
    if (!c->part_started)
        return;
    pthread_mutex_lock(&c->part_lock);
    __atomic_store_n(&c->part_stop, true, __ATOMIC_RELAXED);
    pthread_cond_signal(&c->part_cond);
    pthread_mutex_unlock(&c->part_lock);
    pthread_join(c->part_thread, NULL);
    c->part_started = false;
}

int tq_collection_wait_partitioned(tq_collection *c)
{
    if (!c->part_started)
        return TQ_OK;
    pthread_mutex_lock(&c->part_lock);
    c->part_hurry++;
    pthread_cond_signal(&c->part_cond);
    while (c->part_wake || c->part_busy)
        pthread_cond_wait(&c->part_idle, &c->part_lock);
    c->part_hurry--;
    pthread_mutex_unlock(&c->part_lock);
    return TQ_OK;
}

/* -------------------------------------------------------------- writes */

/* Key and attribute copies for the next rows of the mutable segment, made
 * before the log write so that applying the records cannot fail. */
static int stage_names(tq_collection *c, const tq_element *elems, size_t n, tq_error *err)
{
    seg *m = c->mut;
    const size_t base = m->n;
    for (size_t i = 0; i < n; i++) {
        char *k = tq_malloc(elems[i].key_len);
        char *a = elems[i].attr_len ? tq_malloc(elems[i].attr_len) : NULL;
        if (!k || (elems[i].attr_len && !a)) {
            tq_free(k);
            tq_free(a);
            for (size_t j = 0; j < i; j++) {
                tq_free(m->keys[base + j]);
                tq_free(m->attrs[base + j]);
                m->keys[base + j] = m->attrs[base + j] = NULL;
            }
            return tq_err(err, TQ_ENOMEM, "out of memory for %zu keys", n);
        }
        memcpy(k, elems[i].key, elems[i].key_len);
        if (a)
            memcpy(a, elems[i].attr, elems[i].attr_len);
        tq_free(m->keys[base + i]);
        tq_free(m->attrs[base + i]);
        m->keys[base + i] = k;
        m->key_lens[base + i] = elems[i].key_len;
        m->attrs[base + i] = a;
        m->attr_lens[base + i] = elems[i].attr_len;
    }
    /* Room in the key map for every key being new. */
    pthread_rwlock_wrlock(&c->map_lock);
    int rc = tq_keymap_reserve(&c->map, n);
    pthread_rwlock_unlock(&c->map_lock);
    return rc ? tq_err(err, TQ_ENOMEM, "out of memory growing the key map") : TQ_OK;
}

/* Publish the next n rows (encoded, names staged), in order: repoint each
 * key, delete the row it had, then let readers see the row. Returns how
 * many keys were new. */
static size_t publish_rows(tq_collection *c, size_t n)
{
    seg *m = c->mut;
    size_t fresh = 0;
    pthread_rwlock_wrlock(&c->map_lock);
    for (size_t i = 0; i < n; i++) {
        const size_t r = m->n;
        tq_keymap_entry old;
        tq_keymap_put(&c->map, m->keys[r], m->key_lens[r], m, r, &old);
        c->attributed += m->attr_lens[r] != 0;
        if (old.owner) {
            c->attributed -= row_attributed(old.owner, (size_t)old.row);
            seg_mark_deleted(old.owner, (size_t)old.row);
        } else {
            fresh++;
        }
        __atomic_store_n(&m->n, r + 1, __ATOMIC_RELEASE);
    }
    pthread_rwlock_unlock(&c->map_lock);
    return fresh;
}

static bool apply_remove(tq_collection *c, const char *key, uint32_t len)
{
    pthread_rwlock_wrlock(&c->map_lock);
    tq_keymap_entry *e = tq_keymap_find(&c->map, key, len);
    bool found = e != NULL;
    if (found) {
        c->attributed -= row_attributed(e->owner, (size_t)e->row);
        seg_mark_deleted(e->owner, (size_t)e->row);
        tq_keymap_remove(&c->map, key, len);
    }
    pthread_rwlock_unlock(&c->map_lock);
    return found;
}

/* Sizes and presence: cheap, checked for the whole batch up front. */
static int check_element(const tq_element *e, size_t i, tq_error *err)
{
    if (!e->key)
        return tq_err(err, TQ_EARG, "element %zu has no key", i);
    if (e->key_len > TQ_MAX_KEY_BYTES)
        return tq_err(err, TQ_EARG, "element %zu: key of %u bytes exceeds the %u-byte limit", i, e->key_len,
                      TQ_MAX_KEY_BYTES);
    if (e->attr_len > TQ_MAX_ATTR_BYTES || (e->attr_len && !e->attr))
        return tq_err(err, TQ_EARG, "element %zu: attributes of %u bytes exceed the %u-byte limit", i, e->attr_len,
                      TQ_MAX_ATTR_BYTES);
    if (!e->vector)
        return tq_err(err, TQ_EARG, "element %zu has no vector", i);
    return TQ_OK;
}

/* The values: checked as each vector is encoded, while it is in cache. */
static int check_vector(const tq_collection *c, const tq_element *e, size_t i, tq_error *err)
{
    tq_error inner;
    if (!tq_codec_check_vectors(&c->codec, e->vector, 0, 1, &inner))
        return TQ_OK;
    /* The codec says "vector 0 has ..."; name the element instead. */
    const char *rest = strncmp(inner.msg, "vector 0", 8) ? inner.msg : inner.msg + 8;
    return tq_err(err, inner.code, "element %zu (key '%.*s')%s", i, (int)(e->key_len < 64 ? e->key_len : 64), e->key,
                  rest);
}

/* Room in c->payload and c->entries for n add records. */
static int frame_begin(tq_collection *c, const tq_element *elems, size_t n, tq_error *err)
{
    const size_t vbytes = tq_codec_row_bytes(&c->codec);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += 8 + elems[i].key_len + elems[i].attr_len + vbytes;
    if (total > c->payload_cap) {
        uint8_t *p = tq_realloc(c->payload, total);
        if (!p)
            return tq_err(err, TQ_ENOMEM, "out of memory framing %zu log records", n);
        c->payload = p;
        c->payload_cap = total;
    }
    if (n > c->entries_cap) {
        tq_wal_entry *e = tq_realloc(c->entries, n * sizeof(*e));
        if (!e)
            return tq_err(err, TQ_ENOMEM, "out of memory framing %zu log records", n);
        c->entries = e;
        c->entries_cap = n;
    }
    return TQ_OK;
}

/* Record i of the batch: u32 key length, u32 attribute length, key,
 * attributes, then the encoded row (tq_codec_row_save): the codec is fixed
 * when the collection is created, so the row is exactly what encoding the
 * vector again would give, and at 4 bits it is about an eighth of the
 * floats. Returns where the next record starts. */
static uint8_t *frame_one(tq_collection *c, size_t i, const tq_element *e, size_t row, uint8_t *p)
{
    uint32_t lens[2] = {e->key_len, e->attr_len};
    uint8_t *start = p;
    memcpy(p, lens, 8);
    memcpy(p + 8, e->key, e->key_len);
    p += 8 + e->key_len;
    if (e->attr_len)
        memcpy(p, e->attr, e->attr_len);
    p += e->attr_len;
    const tq_rows mut = tq_rows_view(&c->mut->out, row + 1);
    tq_codec_row_save(&c->codec, &mut, row, p);
    p += tq_codec_row_bytes(&c->codec);
    c->entries[i] = (tq_wal_entry){.type = WAL_ADD_ROW3, .payload = start, .len = (uint32_t)(p - start)};
    return p;
}

static int set_mean_from(tq_collection *c, const tq_element *elems, size_t n, tq_error *err)
{
    const float **rows = tq_malloc(n * sizeof(*rows));
    if (!rows)
        return tq_err(err, TQ_ENOMEM, "out of memory for the centering mean");
    for (size_t i = 0; i < n; i++)
        rows[i] = elems[i].vector;
    int rc = tq_codec_set_mean(&c->codec, rows, n, err);
    tq_free(rows);
    tq_snapshot *cur = c->current;
    bool committed = false;
    if (!rc)
        rc = commit_manifest(c, cur->segs, cur->nsegs - 1, c->wal_id, c->wal_first_lsn, &committed, err);
    if (rc && !committed)
        tq_codec_drop_mean(&c->codec);
    return rc;
}

/* Rows at which the mutable segment is sealed: segment_rows, unless the
 * segment is smaller. One replayed at open may already hold more (its
 * capacity was sized by the log); the next add seals it first. */
static size_t seal_at(const tq_collection *c)
{
    return c->opts.segment_rows < c->mut->cap ? c->opts.segment_rows : c->mut->cap;
}

int tq_collection_add(tq_collection *c, const tq_element *elems, size_t n, size_t *added, tq_error *err)
{
    if (added)
        *added = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = check_element(&elems[i], i, err);
        if (rc)
            return rc;
    }
    /* Counted before the lock: an add waiting behind a long seal (its
     * segment file written and synced) is a writer at work too. */
    __atomic_fetch_add(&c->adds_running, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&c->write_lock);
    int rc = TQ_OK;
    if (c->broken)
        rc = tq_err(err, TQ_EIO, "%s: an earlier change could not be completed; reopen the collection", c->dir);
    /* Rows stored, live or not: any sealed segment holds some. */
    const size_t stored = c->mut->n + (c->current->nsegs > 1);
    if (!rc && tq_codec_centers_add(&c->codec, stored, n)) {
        /* The mean comes from this batch: every vector is checked first. */
        for (size_t i = 0; i < n && !rc; i++)
            rc = check_vector(c, &elems[i], i, err);
        if (!rc)
            rc = set_mean_from(c, elems, n, err);
    }
    size_t done = 0, fresh = 0;
    while (!rc && done < n) {
        if (c->mut->n >= seal_at(c) && (rc = seal_nolock(c, err)))
            break;
        const size_t base = c->mut->n, room = seal_at(c) - base, chunk = n - done < room ? n - done : room;
        if ((rc = stage_names(c, elems + done, chunk, err)) || (rc = frame_begin(c, elems + done, chunk, err)))
            break;
        /* Check, encode (unpublished) and frame each vector in one visit,
         * so it is read from memory once; the log write follows, and only
         * then do the rows become visible. */
        uint8_t *p = c->payload;
        for (size_t i = 0; i < chunk && !rc; i++) {
            const tq_element *e = &elems[done + i];
            if ((rc = check_vector(c, e, done + i, err))) {
                tq_codec_clear_rows(&c->codec, &c->mut->out, base, i); /* unpublished: undo */
                break;
            }
            tq_codec_encode(&c->codec, &c->scratch, e->vector, &c->mut->out, base + i);
            p = frame_one(c, i, e, base + i, p);
        }
        if (rc)
            break;
        if ((rc = tq_wal_append(c->wal, c->entries, chunk, NULL, err))) {
            tq_codec_clear_rows(&c->codec, &c->mut->out, base, chunk);
            break;
        }
        const size_t before = c->mut->n;
        fresh += publish_rows(c, chunk);
        /* Past partition_rows the mutable segment is worth sealing when the
         * writers pause: the partitioner is told once per segment. */
        if (before < c->opts.partition_rows && c->mut->n >= c->opts.partition_rows) {
            __atomic_store_n(&c->idle_seal_off, false, __ATOMIC_RELAXED);
            partitioner_wake(c);
        }
        done += chunk;
    }
    __atomic_store_n(&c->last_add_ns, monotonic_ns(), __ATOMIC_RELAXED);
    __atomic_fetch_sub(&c->adds_running, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->write_lock);
    if (added)
        *added = fresh;
    return rc;
}

int tq_collection_remove(tq_collection *c, const char *key, uint32_t len, tq_error *err)
{
    if (!key || len > TQ_MAX_KEY_BYTES)
        return tq_err(err, TQ_EARG, "a key is 0 to %u bytes", TQ_MAX_KEY_BYTES);
    pthread_mutex_lock(&c->write_lock);
    int rc = TQ_OK;
    pthread_rwlock_rdlock(&c->map_lock);
    bool exists = tq_keymap_find(&c->map, key, len) != NULL;
    pthread_rwlock_unlock(&c->map_lock);
    if (c->broken) {
        rc = tq_err(err, TQ_EIO, "%s: an earlier change could not be completed; reopen the collection", c->dir);
    } else if (!exists) {
        rc = tq_err(err, TQ_ENOTFOUND, "no element '%.*s'", (int)(len < 64 ? len : 64), key);
    } else {
        uint8_t buf[4 + TQ_MAX_KEY_BYTES];
        memcpy(buf, &len, 4);
        memcpy(buf + 4, key, len);
        tq_wal_entry e = {.type = WAL_REMOVE, .payload = buf, .len = 4 + len};
        if (!(rc = tq_wal_append(c->wal, &e, 1, NULL, err)))
            apply_remove(c, key, len);
    }
    pthread_mutex_unlock(&c->write_lock);
    return rc;
}

/* Replace an element's attributes without touching its vector: the row's
 * stored bytes (codes, scalars, refine data) are copied into a new row, so
 * nothing is re-encoded and nothing is lost to a decode/encode round trip.
 * It is an ordinary add record in the log. */
int tq_collection_set_attr(tq_collection *c, const char *key, uint32_t len, const char *attr, uint32_t attr_len,
                           tq_error *err)
{
    if (!key || len > TQ_MAX_KEY_BYTES)
        return tq_err(err, TQ_EARG, "a key is 0 to %u bytes", TQ_MAX_KEY_BYTES);
    if (attr_len > TQ_MAX_ATTR_BYTES || (attr_len && !attr))
        return tq_err(err, TQ_EARG, "attributes of %u bytes exceed the %u-byte limit", attr_len, TQ_MAX_ATTR_BYTES);
    const tq_codec *k = &c->codec;
    uint8_t *row = tq_malloc(tq_codec_row_bytes(k));
    if (!row)
        return tq_err(err, TQ_ENOMEM, "out of memory copying a row");
    pthread_mutex_lock(&c->write_lock);
    int rc = TQ_OK;
    if (c->broken)
        rc = tq_err(err, TQ_EIO, "%s: an earlier change could not be completed; reopen the collection", c->dir);
    else if (c->mut->n >= seal_at(c))
        rc = seal_nolock(c, err);
    /* Looked up after any seal (which repoints keys); the writer lock keeps
     * the entry and its segment where they are until the row is copied. */
    tq_keymap_entry found = {0};
    if (!rc) {
        pthread_rwlock_rdlock(&c->map_lock);
        tq_keymap_entry *e = tq_keymap_find(&c->map, key, len);
        if (e)
            found = *e;
        pthread_rwlock_unlock(&c->map_lock);
        if (!found.owner)
            rc = tq_err(err, TQ_ENOTFOUND, "no element '%.*s'", (int)(len < 64 ? len : 64), key);
        else
            rc = seg_verify(found.owner, err);
    }
    tq_element el = {.key = key, .key_len = len, .attr = attr_len ? attr : NULL, .attr_len = attr_len};
    if (!rc && !(rc = stage_names(c, &el, 1, err)) && !(rc = frame_begin(c, &el, 1, err))) {
        const size_t base = c->mut->n;
        const tq_rows src = seg_view(found.owner);
        tq_codec_row_save(k, &src, (size_t)found.row, row);
        tq_codec_row_load(k, &c->mut->out, base, row);
        frame_one(c, 0, &el, base, c->payload);
        if ((rc = tq_wal_append(c->wal, c->entries, 1, NULL, err)))
            tq_codec_clear_rows(k, &c->mut->out, base, 1);
        else
            publish_rows(c, 1);
    }
    pthread_mutex_unlock(&c->write_lock);
    tq_free(row);
    return rc;
}

/* --------------------------------------------------------------- reads */

int tq_collection_get(tq_collection *c, const char *key, uint32_t len, float *vector, char *attr, size_t cap,
                      size_t *attr_len, tq_error *err)
{
    if (attr_len)
        *attr_len = 0;
    const tq_codec *k = &c->codec;
    tq_encode_scratch scratch = {0};
    if (vector && tq_encode_scratch_init(&scratch, k->cfg.d)) {
        tq_encode_scratch_free(&scratch);
        return tq_err(err, TQ_ENOMEM, "out of memory decoding a vector");
    }
    int rc = TQ_OK;
    pthread_rwlock_rdlock(&c->map_lock);
    tq_keymap_entry *e = tq_keymap_find(&c->map, key, len);
    if (!e) {
        rc = tq_err(err, TQ_ENOTFOUND, "no element '%.*s'", (int)(len < 64 ? len : 64), key);
        goto out;
    }
    seg *s = e->owner;
    size_t row = (size_t)e->row;
    if ((rc = seg_verify(s, err)))
        goto out;
    uint32_t alen;
    const char *a = seg_attr(s, row, &alen);
    if (attr_len)
        *attr_len = alen;
    if (alen > cap && attr) {
        rc = tq_err(err, TQ_EARG, "attributes of '%.*s' are %u bytes, the buffer holds %zu",
                    (int)(len < 64 ? len : 64), key, alen, cap);
        goto out;
    }
    if (attr && alen)
        memcpy(attr, a, alen);
    if (vector) {
        tq_rows v = seg_view(s);
        tq_codec_reconstruct(k, &v, row, &scratch, vector);
        /* Cosine keeps the unit vector and the input's length apart: the
         * vector comes back at the scale it was given (rows stored before
         * lengths were kept come back as unit vectors). */
        if (v.lengths)
            tq_simd()->scale(vector, k->cfg.d, v.lengths[row]);
    }
out:
    pthread_rwlock_unlock(&c->map_lock);
    if (vector)
        tq_encode_scratch_free(&scratch);
    return rc;
}

/* Copy the picked keys out (map_lock held), because their bytes may go
 * with a compaction once the lock is released. */
static int copy_keys(const tq_keymap_entry *const *pick, size_t n, tq_sample *out, tq_error *err)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += pick[i]->len;
    out->lens = tq_malloc((n + 1) * sizeof(uint32_t));
    out->bytes = tq_malloc(bytes + 1);
    if (!out->lens || !out->bytes) {
        tq_free(out->lens);
        tq_free(out->bytes);
        memset(out, 0, sizeof(*out));
        return tq_err(err, TQ_ENOMEM, "out of memory copying %zu keys", n);
    }
    for (size_t i = 0, at = 0; i < n; i++) {
        memcpy(out->bytes + at, pick[i]->key, pick[i]->len);
        out->lens[i] = pick[i]->len;
        at += pick[i]->len;
    }
    out->n = n;
    return TQ_OK;
}

/* Keys picked uniformly at random from the key map. Slots are probed at
 * random, which is uniform over keys because each key has one slot; a map
 * left sparse by removals (under an eighth full) is walked once instead,
 * so a pick never probes without bound. */
int tq_collection_sample(tq_collection *c, size_t n, bool repeats, uint64_t seed, tq_sample *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    tq_rng rng;
    tq_rng_seed(&rng, seed);
    int rc = TQ_OK;
    pthread_rwlock_rdlock(&c->map_lock);
    const tq_keymap *m = &c->map;
    const size_t live = m->count;
    const size_t want = repeats ? (live ? n : 0) : (n < live ? n : live);
    const tq_keymap_entry **pick = tq_malloc((want + 1) * sizeof(*pick));
    const tq_keymap_entry **all = NULL;
    uint32_t *taken = NULL;
    if (!pick) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory sampling %zu keys", want);
        goto out;
    }
    const bool walk = live * 8 < m->cap || (!repeats && want * 2 > live);
    if (walk && want) {
        if (!(all = tq_malloc(live * sizeof(*all)))) {
            rc = tq_err(err, TQ_ENOMEM, "out of memory sampling %zu keys", want);
            goto out;
        }
        size_t j = 0;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].hash)
                all[j++] = &m->slots[i];
        for (size_t i = 0; i < want; i++) {
            /* Distinct: a partial Fisher-Yates shuffle; repeats: draws. */
            size_t r = repeats ? (size_t)(tq_rng_next(&rng) % live) : i + (size_t)(tq_rng_next(&rng) % (live - i));
            const tq_keymap_entry *t = all[r];
            if (!repeats) {
                all[r] = all[i];
                all[i] = t;
            }
            pick[i] = t;
        }
    } else if (want) {
        if (!repeats && !(taken = tq_calloc(m->cap / 32 + 1, sizeof(uint32_t)))) {
            rc = tq_err(err, TQ_ENOMEM, "out of memory sampling %zu keys", want);
            goto out;
        }
        for (size_t i = 0; i < want;) {
            size_t s = (size_t)(tq_rng_next(&rng) & (m->cap - 1));
            if (!m->slots[s].hash || (taken && (taken[s / 32] >> (s % 32) & 1u)))
                continue;
            if (taken)
                taken[s / 32] |= 1u << (s % 32);
            pick[i++] = &m->slots[s];
        }
    }
    rc = copy_keys(pick, want, out, err);
out:
    pthread_rwlock_unlock(&c->map_lock);
    tq_free(pick);
    tq_free(all);
    tq_free(taken);
    return rc;
}

/* Byte order of keys: memcmp, a prefix before the longer key. */
static int key_order(const char *a, uint32_t alen, const char *b, uint32_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

static int entry_order(const void *x, const void *y)
{
    const tq_keymap_entry *a = *(const tq_keymap_entry *const *)x, *b = *(const tq_keymap_entry *const *)y;
    return key_order(a->key, a->len, b->key, b->len);
}

static bool within(const tq_key_bound *b, const tq_keymap_entry *e, int side)
{
    if (!b->key)
        return true;
    int c = key_order(e->key, e->len, b->key, b->len) * side;
    return c > 0 || (c == 0 && b->inclusive);
}

/* The map keeps no order, so a range is a pass over every key and a sort
 * of those inside it. */
int tq_collection_key_range(tq_collection *c, const tq_key_bound *lo, const tq_key_bound *hi, size_t max,
                            tq_sample *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    pthread_rwlock_rdlock(&c->map_lock);
    const tq_keymap *m = &c->map;
    const tq_keymap_entry **in = tq_malloc((m->count + 1) * sizeof(*in));
    int rc = TQ_OK;
    if (!in) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory listing %zu keys", m->count);
    } else {
        size_t n = 0;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].hash && within(lo, &m->slots[i], 1) && within(hi, &m->slots[i], -1))
                in[n++] = &m->slots[i];
        qsort(in, n, sizeof(*in), entry_order);
        rc = copy_keys(in, n < max ? n : max, out, err);
    }
    pthread_rwlock_unlock(&c->map_lock);
    tq_free(in);
    return rc;
}

static const char *seg_attr_fn(void *ctx, size_t row, uint32_t *len)
{
    return seg_attr(ctx, row, len);
}

/* The column of field `name` in a sealed segment, built on first use (the
 * first filtered search touching it pays one pass over the attributes);
 * NULL when the segment keeps no more columns, or out of memory: the
 * caller then reads JSON. */
static const tq_attr_column *seg_column(seg *s, const char *name, uint32_t len)
{
    size_t n = __atomic_load_n(&s->ncols, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++)
        if (s->col_name_len[i] == len && !memcmp(s->col_name[i], name, len))
            return &s->cols[i];
    const tq_attr_column *found = NULL;
    pthread_mutex_lock(&s->verify_lock);
    n = s->ncols;
    for (size_t i = 0; i < n && !found; i++)
        if (s->col_name_len[i] == len && !memcmp(s->col_name[i], name, len))
            found = &s->cols[i];
    if (!found && n < MAX_COLUMNS && (s->col_name[n] = tq_malloc(len ? len : 1))) {
        memcpy(s->col_name[n], name, len);
        s->col_name_len[n] = len;
        if (tq_attr_column_build(name, len, (size_t)s->file.rows, seg_attr_fn, s, &s->cols[n]) == TQ_OK) {
            found = &s->cols[n];
            __atomic_store_n(&s->ncols, n + 1, __ATOMIC_RELEASE);
        } else {
            tq_free(s->col_name[n]);
            s->col_name[n] = NULL;
        }
    }
    pthread_mutex_unlock(&s->verify_lock);
    return found;
}

/* The attribute filter as the scan asks it: one evaluator per thread, per
 * set the columns of the filter's fields (NULL: read JSON), and the sets
 * already narrowed to an allow-list (their mask says it all). */
typedef struct filter_ctx {
    const tq_snapshot *snap;
    const tq_filter *filter;
    tq_filter_eval **evals;
    const tq_attr_column ***cols;
    uint32_t **masks;         /* per set: deleted | filtered out, or NULL */
} filter_ctx;

static bool accept_row(void *arg, unsigned part, size_t set, size_t row)
{
    const filter_ctx *fc = arg;
    if (fc->masks[set])
        return true;
    if (fc->cols[set])
        return tq_filter_match_columns(fc->filter, fc->evals[part], fc->cols[set], row);
    uint32_t len;
    const char *attr = seg_attr(fc->snap->segs[set], row, &len);
    return tq_filter_match(fc->filter, fc->evals[part], attr, len);
}

/* Columns for every sealed set, when every field of the filter has one. */
static int bind_columns(const tq_snapshot *s, const tq_filter *filter, filter_ctx *fc, tq_error *err)
{
    const size_t nsel = tq_filter_selector_count(filter);
    fc->cols = tq_calloc(s->nsegs, sizeof(*fc->cols));
    if (!fc->cols)
        return tq_err(err, TQ_ENOMEM, "out of memory for a search");
    for (size_t i = 0; i < s->nsegs && nsel; i++) {
        seg *sg = s->segs[i];
        if (!sg->sealed)
            continue;
        const tq_attr_column **cols = tq_malloc(nsel * sizeof(*cols));
        if (!cols)
            return tq_err(err, TQ_ENOMEM, "out of memory for a search");
        bool all = true;
        for (size_t k = 0; k < nsel && all; k++) {
            uint32_t len;
            const char *name = tq_filter_selector(filter, k, &len);
            all = (cols[k] = seg_column(sg, name, len)) != NULL;
        }
        if (all)
            fc->cols[i] = cols;
        else
            tq_free(cols);
    }
    return TQ_OK;
}

/* Strategy by estimated selectivity: a filter that a sample says passes
 * fewer than allowlist_below of a sealed segment's rows is run over the
 * segment's columns first, and the rows it rejects join the deleted mask.
 * The scan then skips blocks with nothing allowed and never calls the
 * filter for that segment; at higher selectivity the filter runs inside
 * the scan, on just the rows that could enter the heap, which costs less
 * than testing every row. */
static int narrow_to_allowlists(const tq_collection *c, const tq_snapshot *s, const tq_filter *filter,
                                filter_ctx *fc, tq_rows *sets, tq_error *err)
{
    const double below = c->opts.allowlist_below ? c->opts.allowlist_below : TQ_DEFAULT_ALLOWLIST_BELOW;
    if (!(fc->masks = tq_calloc(s->nsegs, sizeof(uint32_t *))))
        return tq_err(err, TQ_ENOMEM, "out of memory for a search");
    for (size_t i = 0; i < s->nsegs; i++) {
        const size_t n = sets[i].n;
        if (!fc->cols[i] || n == 0 || below < 0)
            continue;
        if (below <= 1) {
            /* Up to 256 rows spread over the segment. */
            const size_t step = n > 256 ? n / 256 : 1;
            size_t tried = 0, passed = 0;
            for (size_t r = 0; r < n; r += step, tried++)
                passed += tq_filter_match_columns(filter, fc->evals[0], fc->cols[i], r);
            if ((double)passed >= below * (double)tried)
                continue;
        }
        const size_t words = (n + 31) / 32;
        uint32_t *mask = tq_malloc(words * sizeof(uint32_t));
        if (!mask)
            return tq_err(err, TQ_ENOMEM, "out of memory for a search");
        tq_filter_allow_columns(filter, fc->evals[0], fc->cols[i], n, mask);
        size_t masked = 0;
        for (size_t w = 0; w < words; w++) {
            uint32_t dead = ~mask[w] | (sets[i].deleted ? __atomic_load_n(&sets[i].deleted[w], __ATOMIC_RELAXED) : 0);
            if (w == words - 1 && n % 32)
                dead &= (1u << (n % 32)) - 1; /* no bits past the last row */
            mask[w] = dead;
            masked += (size_t)__builtin_popcount(dead);
        }
        fc->masks[i] = mask;
        sets[i].deleted = mask;
        sets[i].ndeleted = masked;
    }
    return TQ_OK;
}

int tq_collection_search(tq_collection *c, const float *queries, size_t nq, const tq_search_opts *opts,
                         const tq_filter *filter, tq_match *matches, size_t *counts, tq_snapshot **snap,
                         tq_error *err)
{
    *snap = NULL;
    tq_snapshot *s = snapshot_acquire(c);
    const unsigned nparts = opts->threads > 1 ? opts->threads : 1;
    tq_filter_eval *evals_small[4] = {0}, **evals = evals_small;
    filter_ctx fc = {.snap = s, .filter = filter};
    tq_row_filter rf = {.accept = accept_row, .ctx = &fc};
    tq_search_opts o = *opts;
    tq_rows *sets = tq_malloc(s->nsegs * sizeof(tq_rows));
    size_t *first = tq_malloc((s->nsegs + 1) * sizeof(size_t));
    tq_hit *hits = tq_malloc((nq * opts->k + 1) * sizeof(tq_hit));
    int rc = TQ_OK;
    if (!sets || !first || !hits) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory for a search");
        goto out;
    }
    if (filter) {
        if (nparts > 4 && !(evals = tq_calloc(nparts, sizeof(*evals)))) {
            rc = tq_err(err, TQ_ENOMEM, "out of memory for a search");
            goto out;
        }
        for (unsigned p = 0; p < nparts; p++)
            if (tq_filter_eval_init(filter, &evals[p])) {
                rc = tq_err(err, TQ_ENOMEM, "out of memory for a search");
                goto out;
            }
        fc.evals = evals;
        if ((rc = bind_columns(s, filter, &fc, err)))
            goto out;
        o.filter = &rf;
    }
    first[0] = 0;
    for (size_t i = 0; i < s->nsegs; i++) {
        if ((rc = seg_verify(s->segs[i], err)))
            goto out;
        sets[i] = seg_view(s->segs[i]);
        first[i + 1] = first[i] + sets[i].n;
    }
    if (filter && (rc = narrow_to_allowlists(c, s, filter, &fc, sets, err)))
        goto out;
    if ((rc = tq_search(&c->codec, sets, s->nsegs, queries, nq, &o, hits, counts, err)))
        goto out;
    for (size_t qi = 0; qi < nq; qi++)
        for (size_t j = 0; j < counts[qi]; j++) {
            const tq_hit *h = &hits[qi * opts->k + j];
            size_t si = 0;
            while (h->id >= first[si + 1])
                si++;
            const size_t row = (size_t)(h->id - first[si]);
            tq_match *m = &matches[qi * opts->k + j];
            m->key = seg_key(s->segs[si], row, &m->key_len);
            m->attr = seg_attr(s->segs[si], row, &m->attr_len);
            m->score = h->score;
        }
out:
    if (filter) {
        for (unsigned p = 0; p < nparts && evals; p++)
            tq_filter_eval_free(evals[p]);
        if (evals != evals_small)
            tq_free(evals);
        for (size_t i = 0; fc.cols && i < s->nsegs; i++)
            tq_free((void *)fc.cols[i]);
        tq_free((void *)fc.cols);
        for (size_t i = 0; fc.masks && i < s->nsegs; i++)
            tq_free(fc.masks[i]);
        tq_free(fc.masks);
    }
    tq_free(sets);
    tq_free(first);
    tq_free(hits);
    if (rc)
        tq_snapshot_release(s);
    else
        *snap = s;
    return rc;
}

int tq_collection_sync(tq_collection *c, tq_error *err)
{
    pthread_mutex_lock(&c->write_lock);
    int rc = tq_wal_sync(c->wal, err);
    pthread_mutex_unlock(&c->write_lock);
    return rc;
}

/* Kept as rows are published and removed (publish_rows, apply_remove) and
 * counted once at open: a pass over the key map for every VINFO took 30 ms
 * at a million keys, holding off writers all the while. */
uint64_t tq_collection_count_attributed(tq_collection *c)
{
    pthread_rwlock_rdlock(&c->map_lock);
    const uint64_t n = c->attributed;
    pthread_rwlock_unlock(&c->map_lock);
    return n;
}

/* The count from scratch: a pass over the key map (map_lock held). */
static uint64_t count_attributed_keys(const tq_collection *c)
{
    uint64_t n = 0;
    for (size_t i = 0; i < c->map.cap; i++) {
        const tq_keymap_entry *e = &c->map.slots[i];
        if (e->hash)
            n += row_attributed(e->owner, (size_t)e->row);
    }
    return n;
}

/* ---------------------------------------------------- backup and move */

static int copy_file(const char *from, const char *to, tq_error *err)
{
    int in, out = -1;
    uint64_t size;
    int rc = tq_open_sized(from, O_RDONLY, &in, &size, err);
    if (rc)
        return rc;
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = tq_malloc(CHUNK);
    if (!buf) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory copying %s", from);
        goto out;
    }
    if ((out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
        rc = tq_err_sys(err, errno == EEXIST ? TQ_EARG : TQ_EIO, errno, "%s: create", to);
        goto out;
    }
    for (uint64_t done = 0; done < size && !rc;) {
        ssize_t n = read(in, buf, size - done < CHUNK ? (size_t)(size - done) : CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? tq_err_sys(err, TQ_EIO, errno, "%s: read", from)
                       : tq_err(err, TQ_EIO, "%s: shorter than it was when opened", from);
            break;
        }
        rc = tq_write_all(out, buf, (size_t)n, to, err);
        done += (uint64_t)n;
    }
    if (!rc)
        rc = tq_sync_fd(out, to, err);
out:
    tq_free(buf);
    close(in);
    if (out >= 0)
        close(out);
    return rc;
}

/* Copy root/sub/<id>.ext from the collection into dest. */
static int copy_numbered(const tq_collection *c, const char *dest, const char *sub, uint64_t id, const char *ext,
                         tq_error *err)
{
    char from[PATH_MAX], to[PATH_MAX];
    file_path(c, from, sub, id, ext);
    snprintf(to, sizeof(to), "%s/%s/%08llu.%s", dest, sub, (unsigned long long)id, ext);
    return copy_file(from, to, err);
}

int tq_collection_backup(tq_collection *c, const char *dest, tq_error *err)
{
    char path[PATH_MAX], to[PATH_MAX];
    tq_manifest m = {0};
    pthread_mutex_lock(&c->write_lock);
    int rc = TQ_OK;
    if (c->broken) {
        rc = tq_err(err, TQ_EIO, "%s: an earlier change could not be completed; reopen the collection", c->dir);
        goto out;
    }
    /* Under the write lock the manifest on disk names every file of the
     * current state, and the log holds every acknowledged write since. */
    if ((rc = tq_manifest_read(c->dir, &m, err)))
        goto out;
    if (mkdir(dest, 0755)) {
        rc = tq_err_sys(err, errno == EEXIST ? TQ_EARG : TQ_EIO, errno, "%s: mkdir", dest);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/seg", dest);
    snprintf(to, sizeof(to), "%s/wal", dest);
    if (mkdir(path, 0755) || mkdir(to, 0755)) {
        rc = tq_err_sys(err, TQ_EIO, errno, "%s: mkdir", dest);
        goto out;
    }
    for (uint32_t i = 0; i < m.nsegments && !rc; i++) {
        rc = copy_numbered(c, dest, "seg", m.segments[i].id, "tqs", err);
        if (!rc && m.segments[i].del_id)
            rc = copy_numbered(c, dest, "seg", m.segments[i].del_id, "del", err);
    }
    if (!rc)
        rc = copy_numbered(c, dest, "wal", m.wal_id, "log", err);
    /* The files' names durable, then the manifest: the commit point. */
    snprintf(path, sizeof(path), "%s/seg/x", dest);
    snprintf(to, sizeof(to), "%s/wal/x", dest);
    if (!rc && !(rc = tq_sync_parent_dir(path, err)) && !(rc = tq_sync_parent_dir(to, err))) {
        snprintf(path, sizeof(path), "%s/MANIFEST", c->dir);
        snprintf(to, sizeof(to), "%s/MANIFEST", dest);
        if (!(rc = copy_file(path, to, err)) && !(rc = tq_sync_parent_dir(to, err)))
            rc = tq_sync_parent_dir(dest, err);
    }
out:
    pthread_mutex_unlock(&c->write_lock);
    tq_manifest_free(&m);
    return rc;
}

int tq_collection_move(tq_collection *c, const char *dir, tq_error *err)
{
    char *moved = tq_strdup(dir);
    if (!moved)
        return tq_err(err, TQ_ENOMEM, "out of memory moving %s", c->dir);
    pthread_mutex_lock(&c->write_lock);
    int rc = TQ_OK;
    struct stat st;
    if (lstat(dir, &st) == 0 || errno != ENOENT) {
        rc = tq_err(err, TQ_EARG, "%s already exists", dir);
    } else if (rename(c->dir, dir)) {
        rc = tq_err_sys(err, TQ_EIO, errno, "%s: rename to %s", c->dir, dir);
    } else {
        /* Both parents: the old entry gone and the new one there. */
        rc = tq_sync_parent_dir(dir, err);
        if (!rc)
            rc = tq_sync_parent_dir(c->dir, err);
        /* Every file this collection makes from now on goes under dir
         * (c->dir is read by writers only, under this lock). */
        tq_free(c->dir);
        c->dir = moved;
        moved = NULL;
    }
    pthread_mutex_unlock(&c->write_lock);
    tq_free(moved);
    return rc;
}

int tq_collection_verify(tq_collection *c, tq_error *err)
{
    tq_snapshot *s = snapshot_acquire(c);
    int rc = TQ_OK;
    for (size_t i = 0; i < s->nsegs && !rc; i++)
        rc = seg_verify(s->segs[i], err);
    tq_snapshot_release(s);
    return rc;
}

void tq_collection_stats_get(tq_collection *c, tq_collection_stats *st)
{
    memset(st, 0, sizeof(*st));
    tq_snapshot *s = snapshot_acquire(c);
    for (size_t i = 0; i < s->nsegs; i++) {
        size_t rows = seg_rows(s->segs[i]), dead = __atomic_load_n(&s->segs[i]->ndeleted, __ATOMIC_RELAXED);
        st->live += rows - dead;
        st->deleted += dead;
        if (s->segs[i]->sealed) {
            st->segments++;
            st->partitioned += s->segs[i]->file.parts.nlist > 0;
            st->partitions += s->segs[i]->file.parts.nlist;
        } else {
            st->mutable_rows = rows;
        }
    }
    tq_snapshot_release(s);
    pthread_mutex_lock(&c->write_lock);
    st->wal_bytes = tq_wal_bytes(c->wal);
    st->torn_bytes = c->torn_bytes;
    pthread_mutex_unlock(&c->write_lock);
}

const tq_codec *tq_collection_codec(const tq_collection *c)
{
    return &c->codec;
}

/* ---------------------------------------------------------- open, close */

/* Bytes an add record takes in the log at the least (a one-byte key, no
 * attributes): the log's size over this bounds the adds it can hold. */
static size_t min_add_record(const tq_codec *codec)
{
    return TQ_WAL_RECORD_OVERHEAD + 8 + 1 + tq_codec_row_bytes(codec);
}

static int replay_record(void *arg, uint16_t type, uint64_t lsn, const uint8_t *p, uint32_t len, tq_error *err)
{
    tq_collection *c = arg;
    if (type == WAL_ADD || type == WAL_ADD_ROW2 || type == WAL_ADD_ROW3) {
        const bool format1 = type == WAL_ADD;
        const size_t row_bytes = format1                ? tq_codec_row_bytes_format1(&c->codec)
                                 : type == WAL_ADD_ROW2 ? tq_codec_row_bytes_v2(&c->codec)
                                                        : tq_codec_row_bytes(&c->codec);
        uint32_t lens[2];
        if (len < 8 || (memcpy(lens, p, 8), (uint64_t)8 + lens[0] + lens[1] + row_bytes != len) ||
            lens[0] > TQ_MAX_KEY_BYTES || lens[1] > TQ_MAX_ATTR_BYTES)
            return tq_err(err, TQ_ECORRUPT, "log record %llu: an add of the wrong size", (unsigned long long)lsn);
        tq_element e = {.key = (const char *)p + 8, .key_len = lens[0],
                        .attr = lens[1] ? (const char *)p + 8 + lens[0] : NULL, .attr_len = lens[1]};
        const uint8_t *row = p + 8 + lens[0] + lens[1];
        if (type != WAL_ADD_ROW3) {
            /* An older row made current in the framing scratch, free during
             * replay: the row, then the format-1 conversion's scratch. */
            size_t need = tq_codec_row_bytes(&c->codec) + tq_codec_format1_scratch_bytes(&c->codec);
            if (need > c->payload_cap) {
                uint8_t *grown = tq_realloc(c->payload, need);
                if (!grown)
                    return tq_err(err, TQ_ENOMEM, "out of memory replaying the log");
                c->payload = grown;
                c->payload_cap = need;
            }
            if (format1)
                tq_codec_row_from_format1(&c->codec, row, c->payload, c->payload + tq_codec_row_bytes(&c->codec));
            else
                memcpy(c->payload, row, row_bytes);
            tq_codec_row_from_v2(&c->codec, c->payload, c->payload);
            row = c->payload;
        }
        int rc = stage_names(c, &e, 1, err);
        if (!rc) {
            tq_codec_row_load(&c->codec, &c->mut->out, c->mut->n, row);
            publish_rows(c, 1);
        }
        return rc;
    }
    if (type == WAL_REMOVE) {
        uint32_t klen;
        if (len < 4 || (memcpy(&klen, p, 4), (uint64_t)4 + klen != len))
            return tq_err(err, TQ_ECORRUPT, "log record %llu: a remove of the wrong size", (unsigned long long)lsn);
        apply_remove(c, (const char *)p + 4, klen); /* gone already if compacted away */
        return TQ_OK;
    }
    return tq_err(err, TQ_ECORRUPT, "log record %llu has unknown type %u", (unsigned long long)lsn, type);
}

/* Delete files in sub/ that the manifest does not name. */
static void remove_leftovers(tq_collection *c, const char *sub, const tq_manifest *m)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", c->dir, sub);
    DIR *dir = opendir(path);
    if (!dir)
        return;
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.')
            continue;
        unsigned long long id = 0;
        char ext[8] = "";
        bool named = false;
        if (sscanf(de->d_name, "%llu.%7s", &id, ext) == 2) {
            if (!strcmp(sub, "wal"))
                named = !strcmp(ext, "log") && id == m->wal_id;
            for (uint32_t i = 0; i < m->nsegments && !named; i++)
                named = (!strcmp(ext, "tqs") && id == m->segments[i].id) ||
                        (!strcmp(ext, "del") && id == m->segments[i].del_id && id);
        }
        if (!named) {
            snprintf(path, sizeof(path), "%s/%s/%s", c->dir, sub, de->d_name);
            if (unlink(path) == 0)
                say(c, TQ_LOG_NOTICE, "removed %s, left by an interrupted change", path);
        }
    }
    closedir(dir);
}

/* A directory made durable: its entry in the parent is synced too, or a
 * power cut could take a created collection away with everything
 * acknowledged in it (found by the power-cut test). */
static int make_dir(const char *path, tq_error *err)
{
    if (mkdir(path, 0755) == 0)
        return tq_sync_parent_dir(path, err);
    if (errno != EEXIST)
        return tq_err_sys(err, TQ_EIO, errno, "%s: mkdir", path);
    return TQ_OK;
}

/* A new collection: directories, an empty log, then the manifest. */
static int create_layout(tq_collection *c, tq_error *err)
{
    char path[PATH_MAX];
    int rc;
    snprintf(path, sizeof(path), "%s/seg", c->dir);
    if ((rc = make_dir(path, err)))
        return rc;
    snprintf(path, sizeof(path), "%s/wal", c->dir);
    if ((rc = make_dir(path, err)))
        return rc;
    /* No manifest means nothing was ever committed here. */
    tq_manifest none = {0};
    remove_leftovers(c, "seg", &none);
    remove_leftovers(c, "wal", &none);
    c->wal_id = 1;
    c->next_file_id = 2;
    c->wal_first_lsn = 1;
    file_path(c, path, "wal", c->wal_id, "log");
    tq_wal *w;
    if ((rc = tq_wal_create(path, 1, TQ_FSYNC_NO, &w, err)))
        return rc;
    tq_wal_close(w, NULL);
    tq_manifest m = {.cfg = c->codec.cfg, .next_file_id = c->next_file_id, .wal_id = 1, .wal_first_lsn = 1};
    return tq_manifest_write(c->dir, &m, NULL, err);
}

static bool same_config(const tq_collection_options *opts, const tq_config *b)
{
    /* A center of 0 was not asked for: any is fine (the default changed
     * from none to auto, and collections made before open as they are);
     * so is a default codebook. */
    const tq_config *a = &opts->cfg;
    return a->d == b->d && a->metric == b->metric && a->bits == b->bits && a->variant == b->variant &&
           a->correction == b->correction && a->seed == b->seed && a->refine == b->refine &&
           (!a->center || a->center == b->center) && (opts->any_codebook || a->codebook == b->codebook);
}

int tq_collection_open(const char *dir, const tq_collection_options *opts, tq_collection **out, tq_error *err)
{
    *out = NULL;
    if (strlen(dir) > PATH_MAX - 64)
        return tq_err(err, TQ_EARG, "directory path too long: %s", dir);
    tq_collection *c = tq_calloc(1, sizeof(*c));
    if (!c || !(c->dir = tq_strdup(dir))) {
        tq_free(c);
        return tq_err(err, TQ_ENOMEM, "out of memory opening %s", dir);
    }
    c->opts = *opts;
    if (!c->opts.segment_rows)
        c->opts.segment_rows = TQ_DEFAULT_SEGMENT_ROWS;
    if (!c->opts.fsync)
        c->opts.fsync = TQ_FSYNC_EVERYSEC;
    if (!c->opts.partition_rows)
        c->opts.partition_rows = TQ_DEFAULT_PARTITION_ROWS;
    if (c->opts.merge_factor < 2) /* (1 would merge one segment forever) */
        c->opts.merge_factor = TQ_DEFAULT_MERGE_FACTOR;
    c->lock_fd = -1;
    pthread_mutex_init(&c->write_lock, NULL);
    pthread_mutex_init(&c->part_lock, NULL);
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&c->part_cond, &monotonic);
    pthread_condattr_destroy(&monotonic);
    pthread_cond_init(&c->part_idle, NULL);
    pthread_mutex_init(&c->snap_lock, NULL);
    pthread_rwlock_init(&c->map_lock, NULL);
    tq_keymap_init(&c->map);
    tq_manifest m = {0};
    seg **segs = NULL;
    size_t nsegs = 0;
    char path[PATH_MAX];
    int rc = TQ_OK;

    if (opts->create && (rc = make_dir(dir, err)))
        goto fail;
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    c->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->lock_fd < 0) {
        rc = tq_err_sys(err, errno == ENOENT ? TQ_ENOTFOUND : TQ_EIO, errno, "%s: open", path);
        goto fail;
    }
    if (flock(c->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = tq_err(err, TQ_EBUSY, "%s is open in another process", dir);
        goto fail;
    }
    rc = tq_manifest_read(dir, &m, err);
    if (rc == TQ_ENOTFOUND && opts->create) {
        tq_config cfg = opts->cfg;
        if (!cfg.center)
            cfg.center = TQ_CENTER_AUTO;
        if ((rc = tq_codec_init(&c->codec, &cfg, err)) || (rc = create_layout(c, err)) ||
            (rc = tq_manifest_read(dir, &m, err)))
            goto fail;
    } else if (rc) {
        goto fail;
    } else {
        if (opts->cfg.d && !same_config(opts, &m.cfg)) {
            rc = tq_err(err, TQ_EARG, "%s holds a collection of dimension %u with other settings than asked", dir,
                        m.cfg.d);
            goto fail;
        }
        if ((rc = tq_codec_init(&c->codec, &m.cfg, err)))
            goto fail;
    }
    if (m.mean) {
        c->codec.mean = m.mean;
        m.mean = NULL;
    }
    c->next_file_id = m.next_file_id;
    c->wal_id = m.wal_id;
    c->wal_first_lsn = m.wal_first_lsn;
    if (tq_encode_scratch_init(&c->scratch, c->codec.cfg.d)) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory opening %s", dir);
        goto fail;
    }
    remove_leftovers(c, "seg", &m);
    remove_leftovers(c, "wal", &m);

    segs = tq_calloc(m.nsegments + 1, sizeof(seg *));
    if (!segs) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory opening %s", dir);
        goto fail;
    }
    for (; nsegs < m.nsegments; nsegs++) {
        const tq_manifest_segment *ms = &m.segments[nsegs];
        if ((rc = open_sealed(c, ms->id, ms->del_id, ms->rows, &segs[nsegs], err)))
            goto fail;
        if (opts->verify && (rc = seg_verify(segs[nsegs], err)))
            goto fail;
        for (size_t r = 0; r < ms->rows; r++) {
            if (seg_is_deleted(segs[nsegs], r))
                continue;
            uint32_t len;
            const char *key = seg_key(segs[nsegs], r, &len);
            tq_keymap_entry old;
            if (tq_keymap_put(&c->map, key, len, segs[nsegs], r, &old)) {
                rc = tq_err(err, TQ_ENOMEM, "out of memory for the key map");
                goto fail;
            }
            if (old.owner)
                seg_mark_deleted(old.owner, (size_t)old.row);
        }
    }

    /* The log, in one pass: its records go into a mutable segment sized by
     * the most adds the file could hold (pages are committed only as rows
     * arrive), and a torn tail is cut. */
    file_path(c, path, "wal", c->wal_id, "log");
    struct stat wst;
    if (stat(path, &wst) != 0) {
        rc = tq_err_sys(err, errno == ENOENT ? TQ_ENOTFOUND : TQ_EIO, errno, "%s: stat", path);
        goto fail;
    }
    size_t cap = (size_t)wst.st_size / min_add_record(&c->codec);
    if (cap < c->opts.segment_rows)
        cap = c->opts.segment_rows;
    if ((rc = new_mutable(c, cap, &c->mut, err)))
        goto fail;
    segs[nsegs++] = c->mut;
    if (!(c->current = snapshot_new(c, segs, nsegs))) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory opening %s", dir);
        goto fail;
    }
    tq_wal_replay_info info;
    if ((rc = tq_wal_replay(path, replay_record, c, true, &info, err)))
        goto fail;
    c->torn_bytes = info.torn_bytes;
    if (info.torn_bytes)
        say(c, TQ_LOG_WARNING, "%s: cut %llu bytes of an incomplete record at the end of the log (a write cut short by a crash)",
            path, (unsigned long long)info.torn_bytes);
    if ((rc = tq_wal_open(path, info.valid_bytes, info.next_lsn, c->opts.fsync, &c->wal, err)))
        goto fail;
    c->attributed = count_attributed_keys(c); /* before any other thread can move a key */
    if (c->opts.partition_rows != SIZE_MAX) {
        /* Without the thread nothing is lost: segments stay flat until a
         * compaction partitions them. */
        c->part_started = pthread_create(&c->part_thread, NULL, partitioner_main, c) == 0;
        if (!c->part_started)
            say(c, TQ_LOG_WARNING, "%s: no background partitioner (thread creation failed)", dir);
        partitioner_wake(c); /* segments sealed flat by an older build or before a crash */
    }
    tq_free(segs);
    tq_manifest_free(&m);
    *out = c;
    return TQ_OK;
fail:
    if (!c->current)
        for (size_t i = 0; i < nsegs; i++)
            seg_free(segs[i]);
    tq_free(segs);
    tq_manifest_free(&m);
    tq_collection_close(c, NULL);
    return rc;
}

int tq_collection_close(tq_collection *c, tq_error *err)
{
    if (!c)
        return TQ_OK;
    partitioner_stop(c);
    int rc = tq_wal_close(c->wal, err);
    if (c->current)
        tq_snapshot_release(c->current);
    tq_keymap_free(&c->map);
    tq_codec_free(&c->codec);
    tq_encode_scratch_free(&c->scratch);
    tq_free(c->payload);
    tq_free(c->entries);
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    pthread_mutex_destroy(&c->write_lock);
    pthread_mutex_destroy(&c->snap_lock);
    pthread_rwlock_destroy(&c->map_lock);
    pthread_mutex_destroy(&c->part_lock);
    pthread_cond_destroy(&c->part_cond);
    pthread_cond_destroy(&c->part_idle);
    tq_free(c->dir);
    tq_free(c);
    return rc;
}
