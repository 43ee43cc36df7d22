/*
 * The keyspace: each key of each database is a vector set, kept as a tqvec
 * collection in its own directory under --dir.
 *
 *   DIR/tqvecd.lock      flock'd by the one daemon serving DIR
 *   DIR/tqvecd.txlog     transactions in flight (txlog.c)
 *   DIR/v-<hex>/         the collection of key <hex> (its bytes) in db 0
 *   DIR/v<db>-<hex>/     ... in database db > 0
 *   DIR/v.../tqvecd.meta what the daemon keeps beside the collection: the
 *                        key's expiry (absent: none)
 *   DIR/.drop-<n>-<hex>  a dropped key's directory, deleted after its last
 *                        user; leftovers of a crash are deleted at start
 *   DIR/.stage-<n>       a copy being made (COPY, RESTORE), renamed into
 *                        place when complete; leftovers deleted at start
 *
 * Key bytes never become a path: they are hex-encoded, so "../x", "/" or
 * a NUL cannot leave DIR or collide, and the directory name decodes back
 * to the database and key at start (no catalogue to keep in step). The
 * price is a limit of TQD_MAX_KEY_BYTES on key length.
 *
 * Lock order: a key's write_lock, then the keyspace lock. The keyspace lock
 * guards the table and every refs/dropped/db/name/expire_ms field; it is
 * held for lookups, never across a collection call except open, close,
 * move and the renames of a drop or of a staged copy. A drop renames the
 * directory (the commit point: after a crash the key is gone) under the
 * key's write_lock, so no writer of that key is mid-change and none will
 * write again (they check dropped after taking the lock); searches already
 * running finish on their snapshot, and the last release closes the
 * collection and deletes the files. A rename moves the open collection's
 * directory (tqvec_collection_move) under the same two locks.
 *
 * Expiry: a key past its time is absent to every lookup at once and is
 * dropped by the next lookup that would create it, or by the sweeper
 * thread (ten times a second), whichever comes first.
 */
#include "daemon.h"

#include <xxhash.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct {
    pthread_mutex_t lock;
    tqd_vset **v;
    size_t n, cap;
    char *root;
    int lock_fd;
    int fsync;
    uint32_t segment_rows;
    uint32_t partition_rows;
    uint32_t merge_factor;
    int max;
    int databases;
    uint64_t drops, stages, uids;
    /* the expiry sweeper */
    pthread_t sweeper;
    bool sweeping, stop;
    pthread_cond_t wake;
} ks = {.lock = PTHREAD_MUTEX_INITIALIZER, .lock_fd = -1, .wake = PTHREAD_COND_INITIALIZER};

const char *tqd_metric_name(int metric)
{
    switch (metric) {
    case TQVEC_METRIC_L2:
        return "l2";
    case TQVEC_METRIC_IP:
        return "ip";
    default:
        return "cosine";
    }
}

const char *tqd_refine_name(int refine)
{
    switch (refine) {
    case TQVEC_REFINE_CODE8:
        return "code8";
    case TQVEC_REFINE_FP32:
        return "fp32";
    case TQVEC_REFINE_FP16:
        return "fp16";
    default:
        return "none";
    }
}

int64_t tqd_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void collection_log(void *ctx, int level, const char *message)
{
    /* ctx is the key's name buffer, which lives as long as its collection
     * (a rename rewrites it in place). */
    tqd_log(level == TQVEC_LOG_WARNING ? TQD_LOG_WARNING : TQD_LOG_NOTICE, "vector set '%s': %s", (const char *)ctx,
            message);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path))
        tqd_log(TQD_LOG_WARNING, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

void tqd_remove_tree(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *key_dir(int db, const char *name, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(ks.root) + 16 + 2 * len + 1;
    char *p = malloc(n);
    if (!p)
        return NULL;
    int at = db ? snprintf(p, n, "%s/v%d-", ks.root, db) : snprintf(p, n, "%s/v-", ks.root);
    for (size_t i = 0; i < len; i++) {
        p[at++] = hex[(unsigned char)name[i] >> 4];
        p[at++] = hex[(unsigned char)name[i] & 15];
    }
    p[at] = 0;
    return p;
}

/* The key a directory entry names (and its database), or 0 if it is not
 * one of ours. */
static size_t decode_key(const char *entry, char *out, int *db)
{
    if (entry[0] != 'v')
        return 0;
    const char *h = entry + 1;
    *db = 0;
    if (*h != '-') {
        char *end;
        long n = strtol(h, &end, 10);
        if (end == h || *end != '-' || n < 1 || n >= TQD_MAX_DATABASES || h[0] == '0')
            return 0;
        *db = (int)n;
        h = end;
    }
    h++;
    size_t n = strlen(h);
    if (n == 0 || n % 2 || n / 2 > TQD_MAX_KEY_BYTES)
        return 0;
    for (size_t i = 0; i < n; i += 2) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char c = h[i + j];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0)
                return 0;
            v = v * 16 + d;
        }
        out[i / 2] = (char)v;
    }
    return n / 2;
}

char *tqd_keyspace_stage_dir(void)
{
    size_t n = strlen(ks.root) + 48;
    char *p = malloc(n);
    if (p) {
        pthread_mutex_lock(&ks.lock);
        uint64_t id = ++ks.stages;
        pthread_mutex_unlock(&ks.lock);
        snprintf(p, n, "%s/.stage-%d-%llu", ks.root, (int)getpid(), (unsigned long long)id);
    }
    return p;
}

/* ------------------------------------------------------------- meta file */

/* DIR/v.../tqvecd.meta, what the daemon keeps beside a collection:
 *   "TQVDMETA", u32 version, u32 0, i64 expiry in Unix ms (0: none),
 *   version 2 adds: u32 shape kind, u32 input dimension, u64 seed,
 *   then u64 XXH3-64 of every byte before it.
 * Version 1 (32 bytes: the expiry only) is still read. */
#define META_VERSION 2u

typedef struct meta {
    int64_t expire_ms;
    tqd_shape shape;
} meta;

static bool meta_is_plain(const meta *m)
{
    return m->expire_ms == 0 && m->shape.kind == TQD_SHAPE_PLAIN;
}

/* A missing file is the plain meta; a damaged one is an error (-1): the
 * shape cannot be guessed, and serving the set without it would corrupt
 * every later write. */
static int read_meta(const char *dir, meta *m)
{
    *m = (meta){0};
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/" TQD_META_FILE, dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    uint8_t b[64];
    size_t n = fread(b, 1, sizeof(b), f);
    fclose(f);
    uint32_t version = 0;
    if (n >= 16)
        memcpy(&version, b + 8, 4);
    const size_t want = version == 1 ? 32 : 48;
    uint64_t sum;
    if (n != want || memcmp(b, "TQVDMETA", 8) || (version != 1 && version != META_VERSION) ||
        (memcpy(&sum, b + want - 8, 8), sum != XXH3_64bits(b, want - 8))) {
        tqd_log(TQD_LOG_WARNING, "%s is damaged or of an unknown version", path);
        return -1;
    }
    memcpy(&m->expire_ms, b + 16, 8);
    if (version >= 2) {
        memcpy(&m->shape.kind, b + 24, 4);
        memcpy(&m->shape.input_dim, b + 28, 4);
        memcpy(&m->shape.seed, b + 32, 8);
    }
    if (m->expire_ms < 0 || m->shape.kind > TQD_SHAPE_REDUCE) {
        tqd_log(TQD_LOG_WARNING, "%s holds values out of range", path);
        return -1;
    }
    return 0;
}

bool tqd_write_all(int fd, const void *p, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, (const char *)p + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        done += (size_t)w;
    }
    return true;
}

static int sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 || fsync(fd) ? -1 : 0;
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Write dir's meta durably (or remove the file when there is nothing to
 * keep). */
static int write_meta(const char *dir, const meta *m, tqvec_error *err)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    snprintf(path, sizeof(path), "%s/" TQD_META_FILE, dir);
    snprintf(tmp, sizeof(tmp), "%s/" TQD_META_FILE ".tmp", dir);
    if (meta_is_plain(m)) {
        if (unlink(path) && errno != ENOENT)
            goto fail;
    } else {
        uint8_t b[48] = "TQVDMETA";
        uint32_t version = META_VERSION;
        memcpy(b + 8, &version, 4);
        memcpy(b + 16, &m->expire_ms, 8);
        memcpy(b + 24, &m->shape.kind, 4);
        memcpy(b + 28, &m->shape.input_dim, 4);
        memcpy(b + 32, &m->shape.seed, 8);
        uint64_t sum = XXH3_64bits(b, 40);
        memcpy(b + 40, &sum, 8);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            goto fail;
        bool ok = tqd_write_all(fd, b, sizeof(b)) && (ks.fsync == TQVEC_FSYNC_NO || !fdatasync(fd));
        close(fd);
        if (!ok || rename(tmp, path))
            goto fail;
    }
    if (ks.fsync != TQVEC_FSYNC_NO && sync_dir(dir))
        goto fail;
    return TQVEC_OK;
fail:
    snprintf(err->message, sizeof(err->message), "cannot write %.160s: %s", path, strerror(errno));
    return err->code = TQVEC_EIO;
}

static meta meta_of(const tqd_vset *v)
{
    return (meta){.expire_ms = v->expire_ms, .shape = v->shape};
}

/* ----------------------------------------------------------------- table */

static void vset_free(tqd_vset *v)
{
    if (!v)
        return;
    free(v->dir);
    free(atomic_load(&v->projection));
    pthread_mutex_destroy(&v->write_lock);
    free(v);
}

static tqd_vset *vset_new(int db, const char *name, size_t len)
{
    tqd_vset *v = calloc(1, sizeof(*v));
    if (!v || !(v->dir = key_dir(db, name, len))) {
        free(v);
        return NULL;
    }
    memcpy(v->name, name, len);
    v->name[len] = 0;
    v->name_len = len;
    v->db = db;
    pthread_mutex_init(&v->write_lock, NULL);
    return v;
}

static void vset_describe(tqd_vset *v)
{
    tqvec_collection_info info;
    tqvec_collection_get_info(v->c, &info);
    v->dim = info.dim;
    v->metric = info.metric;
    v->bits = info.bits;
    v->refine = info.refine;
}

/* Keyspace lock held. */
static int table_push(tqd_vset *v)
{
    if (ks.n == ks.cap) {
        size_t cap = ks.cap ? ks.cap * 2 : 16;
        tqd_vset **t = realloc(ks.v, cap * sizeof(*t));
        if (!t)
            return -1;
        ks.v = t;
        ks.cap = cap;
    }
    v->uid = ++ks.uids;
    ks.v[ks.n++] = v;
    return 0;
}

/* The daemon's options for v's collection, over base's settings (a new
 * set's) when given. */
static tqvec_collection_options open_options(tqd_vset *v, const tqvec_collection_options *base)
{
    tqvec_collection_options o = base ? *base : (tqvec_collection_options){0};
    o.fsync = ks.fsync;
    o.segment_rows = ks.segment_rows;
    o.partition_rows = ks.partition_rows;
    o.merge_factor = ks.merge_factor;
    o.log = collection_log;
    o.log_ctx = v->name;
    return o;
}

static bool expired(const tqd_vset *v, int64_t now)
{
    return v->expire_ms && now >= v->expire_ms;
}

static ssize_t find_nolock(int db, const char *name, size_t len)
{
    for (size_t i = 0; i < ks.n; i++)
        if (ks.v[i]->db == db && ks.v[i]->name_len == len && !memcmp(ks.v[i]->name, name, len))
            return (ssize_t)i;
    return -1;
}

/* Read v's meta and open its collection (checking every byte when
 * verify): what a set found on disk or handed over as a copy needs. */
static int load_vset(tqd_vset *v, bool verify, tqvec_error *err)
{
    meta m;
    if (read_meta(v->dir, &m)) {
        snprintf(err->message, sizeof(err->message), "%.200s/" TQD_META_FILE " is damaged", v->dir);
        return err->code = TQVEC_ECORRUPT;
    }
    v->expire_ms = m.expire_ms;
    v->shape = m.shape;
    tqvec_collection_options o = open_options(v, NULL);
    o.verify = verify;
    int rc = tqvec_collection_open(v->dir, &o, &v->c, err);
    if (!rc)
        vset_describe(v);
    return rc;
}

/* -------------------------------------------------------- open and close */

static void *sweep_main(void *arg);

int tqd_keyspace_open(const tqd_config *cfg)
{
    ks.fsync = cfg->appendfsync;
    ks.segment_rows = cfg->segment_rows;
    ks.partition_rows = cfg->partition_rows;
    ks.merge_factor = cfg->merge_factor;
    ks.max = cfg->max_collections;
    ks.databases = cfg->databases;
    if (!(ks.root = strdup(cfg->dir)))
        return -1;
    if (mkdir(ks.root, 0755) && errno != EEXIST) {
        tqd_log(TQD_LOG_WARNING, "cannot create the data directory %s: %s", ks.root, strerror(errno));
        return -1;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/tqvecd.lock", ks.root);
    ks.lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (ks.lock_fd < 0 || flock(ks.lock_fd, LOCK_EX | LOCK_NB)) {
        tqd_log(TQD_LOG_WARNING, "cannot lock %s (%s): is another tqvecd serving %s?", path, strerror(errno),
                ks.root);
        return -1;
    }
    DIR *d = opendir(ks.root);
    if (!d) {
        tqd_log(TQD_LOG_WARNING, "cannot read %s: %s", ks.root, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (!strncmp(e->d_name, ".drop-", 6) || !strncmp(e->d_name, ".stage-", 7)) {
            snprintf(path, sizeof(path), "%s/%s", ks.root, e->d_name);
            tqd_log(TQD_LOG_NOTICE, "removing %s, %s before the last stop", path,
                    e->d_name[1] == 'd' ? "dropped" : "a copy not completed");
            tqd_remove_tree(path);
            continue;
        }
        char key[TQD_MAX_KEY_BYTES];
        int db;
        size_t len = decode_key(e->d_name, key, &db);
        if (!len)
            continue;
        if (db >= ks.databases) {
            /* Serving without it would look like data loss. */
            tqd_log(TQD_LOG_WARNING, "%s/%s holds a key of database %d, but databases is %d: raise it", ks.root,
                    e->d_name, db, ks.databases);
            rc = -1;
            break;
        }
        tqd_vset *v = vset_new(db, key, len);
        if (!v) {
            rc = -1;
            break;
        }
        tqvec_error err;
        int orc = load_vset(v, false, &err);
        struct stat st;
        snprintf(path, sizeof(path), "%s/MANIFEST", v->dir);
        if (orc == TQVEC_ENOTFOUND && stat(path, &st) != 0 && errno == ENOENT) {
            /* A set whose creation never committed (no manifest: a crash or
             * power cut inside TQ.CREATE or a first VADD, before the
             * reply): nothing in it was acknowledged. */
            tqd_log(TQD_LOG_NOTICE, "removing %s, a vector set whose creation did not complete", v->dir);
            tqd_remove_tree(v->dir);
            vset_free(v);
            continue;
        }
        if (orc) {
            tqd_log(TQD_LOG_WARNING, "cannot open vector set '%s' in %s: %s", v->name, v->dir, err.message);
            vset_free(v);
            rc = -1;
            break;
        }
        if (table_push(v)) {
            tqvec_collection_close(v->c, NULL);
            vset_free(v);
            rc = -1;
        }
    }
    closedir(d);
    if (!rc) {
        tqd_log(TQD_LOG_NOTICE, "%zu vector sets loaded from %s", ks.n, ks.root);
        ks.stop = false;
        ks.sweeping = pthread_create(&ks.sweeper, NULL, sweep_main, NULL) == 0;
        if (!ks.sweeping)
            tqd_log(TQD_LOG_WARNING, "cannot start the expiry thread: expired keys go when next looked up");
    }
    return rc;
}

void tqd_keyspace_close(void)
{
    if (ks.sweeping) {
        pthread_mutex_lock(&ks.lock);
        ks.stop = true;
        pthread_cond_signal(&ks.wake);
        pthread_mutex_unlock(&ks.lock);
        pthread_join(ks.sweeper, NULL);
        ks.sweeping = false;
    }
    for (size_t i = 0; i < ks.n; i++) {
        tqvec_error err;
        if (tqvec_collection_close(ks.v[i]->c, &err))
            tqd_log(TQD_LOG_WARNING, "closing '%s': %s", ks.v[i]->name, err.message);
        vset_free(ks.v[i]);
    }
    free(ks.v);
    ks.v = NULL;
    ks.n = ks.cap = 0;
    if (ks.lock_fd >= 0)
        close(ks.lock_fd);
    ks.lock_fd = -1;
    free(ks.root);
    ks.root = NULL;
}

/* ---------------------------------------------------------------- lookup */

tqd_vset *tqd_keyspace_get(int db, const char *name, size_t len)
{
    const int64_t now = tqd_unix_ms();
    pthread_mutex_lock(&ks.lock);
    ssize_t i = find_nolock(db, name, len);
    tqd_vset *v = i >= 0 && !expired(ks.v[i], now) ? ks.v[i] : NULL;
    if (v)
        v->refs++;
    pthread_mutex_unlock(&ks.lock);
    return v;
}

static bool check_key(size_t len, tqvec_error *err)
{
    if (len == 0 || len > TQD_MAX_KEY_BYTES) {
        snprintf(err->message, sizeof(err->message), "a vector set's key is 1 to %d bytes, not %zu",
                 TQD_MAX_KEY_BYTES, len);
        err->code = TQVEC_EARG;
        return false;
    }
    return true;
}

static bool room_for_one_more(tqvec_error *err)
{
    if (ks.n < (size_t)ks.max)
        return true;
    snprintf(err->message, sizeof(err->message), "max number of vector sets reached (%d)", ks.max);
    err->code = TQVEC_EBUSY;
    return false;
}

static bool expire_if_due(int db, const char *name, size_t len);

int tqd_keyspace_get_or_create(int db, const char *name, size_t len, const tqvec_collection_options *opts,
                               const tqd_shape *shape, tqd_vset **out, bool *created, tqvec_error *err)
{
    *out = NULL;
    *created = false;
    if (!check_key(len, err))
        return err->code;
    pthread_mutex_lock(&ks.lock);
    int rc = TQVEC_OK;
    ssize_t i = find_nolock(db, name, len);
    if (i >= 0 && expired(ks.v[i], tqd_unix_ms())) {
        /* Rare: drop it (which takes its write lock first), then look again. */
        pthread_mutex_unlock(&ks.lock);
        expire_if_due(db, name, len);
        pthread_mutex_lock(&ks.lock);
        i = find_nolock(db, name, len);
    }
    if (i >= 0) {
        *out = ks.v[i];
        ks.v[i]->refs++;
        goto out;
    }
    if (!room_for_one_more(err)) {
        rc = err->code;
        goto out;
    }
    tqd_vset *v = vset_new(db, name, len);
    if (!v) {
        snprintf(err->message, sizeof(err->message), "out of memory creating a vector set");
        rc = err->code = TQVEC_ENOMEM;
        goto out;
    }
    tqvec_collection_options o = open_options(v, opts);
    o.create = 1;
    /* A shape goes into the directory before the collection: a set whose
     * manifest exists always has its shape (one without a manifest is
     * removed at start). The collection makes its directory otherwise,
     * and syncs it into the data directory before the set can be
     * acknowledged. */
    meta m = {.shape = shape ? *shape : (tqd_shape){0}};
    v->shape = m.shape;
    if (!meta_is_plain(&m) && mkdir(v->dir, 0755) && errno != EEXIST) {
        snprintf(err->message, sizeof(err->message), "cannot create %.160s: %s", v->dir, strerror(errno));
        rc = err->code = TQVEC_EIO;
    } else if (!meta_is_plain(&m) && (rc = write_meta(v->dir, &m, err))) {
        tqd_remove_tree(v->dir);
    } else if ((rc = tqvec_collection_open(v->dir, &o, &v->c, err)) != TQVEC_OK) {
        tqd_remove_tree(v->dir);
    } else if (table_push(v)) {
        tqvec_collection_close(v->c, NULL);
        tqd_remove_tree(v->dir);
        snprintf(err->message, sizeof(err->message), "out of memory creating a vector set");
        rc = err->code = TQVEC_ENOMEM;
    }
    if (rc) {
        vset_free(v);
        goto out;
    }
    vset_describe(v);
    v->refs = 1;
    *out = v;
    *created = true;
    tqd_log(TQD_LOG_VERBOSE, "created vector set '%s' in db %d (dim %u, %s, %d bits, refine %s)", v->name, db,
            v->dim, tqd_metric_name(v->metric), v->bits, tqd_refine_name(v->refine));
out:
    pthread_mutex_unlock(&ks.lock);
    return rc;
}

void tqd_vset_release(tqd_vset *v)
{
    if (!v)
        return;
    pthread_mutex_lock(&ks.lock);
    bool last = --v->refs == 0 && v->dropped;
    pthread_mutex_unlock(&ks.lock);
    if (!last)
        return;
    tqvec_collection_close(v->c, NULL);
    tqd_remove_tree(v->dir);
    vset_free(v);
}

/* ------------------------------------------------------------------ drop */

/* fsync the data directory: a rename in it (a drop) is durable once its
 * entry is. */
static void sync_root(void)
{
    if (ks.fsync != TQVEC_FSYNC_NO && sync_dir(ks.root))
        tqd_log(TQD_LOG_WARNING, "cannot sync %s: %s", ks.root, strerror(errno));
}

/* Keyspace lock and v->write_lock held, v in the table at i. */
static void drop_nolock(tqd_vset *v, size_t i)
{
    char *trash = malloc(strlen(ks.root) + 64 + 2 * v->name_len);
    if (trash) {
        sprintf(trash, "%s/.drop-%llu-%s", ks.root, (unsigned long long)++ks.drops, strrchr(v->dir, '/') + 1);
        if (rename(v->dir, trash))
            tqd_log(TQD_LOG_WARNING, "cannot move %s aside: %s", v->dir, strerror(errno));
        else
            sync_root(); /* else a power cut could bring the set back (found by the power-cut test) */
        free(v->dir);
        v->dir = trash;
    }
    v->dropped = true;
    ks.v[i] = ks.v[--ks.n];
}

/* Drop the key if it is still v, and (when only_if is given) only_if(v)
 * holds under the locks. */
static bool drop_checked(tqd_vset *v, bool (*only_if)(const tqd_vset *))
{
    pthread_mutex_lock(&v->write_lock);
    pthread_mutex_lock(&ks.lock);
    ssize_t i = find_nolock(v->db, v->name, v->name_len);
    bool dropped = i >= 0 && ks.v[i] == v && (!only_if || only_if(v));
    if (dropped)
        drop_nolock(v, (size_t)i);
    pthread_mutex_unlock(&ks.lock);
    pthread_mutex_unlock(&v->write_lock);
    return dropped;
}

bool tqd_keyspace_drop(int db, const char *name, size_t len)
{
    tqd_vset *v = tqd_keyspace_get(db, name, len);
    if (!v)
        return false;
    bool dropped = drop_checked(v, NULL);
    tqd_vset_release(v);
    return dropped;
}

void tqd_keyspace_drop_if_empty(tqd_vset *v)
{
    tqvec_collection_info info;
    tqvec_collection_get_info(v->c, &info);
    if (info.count)
        return;
    pthread_mutex_lock(&ks.lock);
    ssize_t i = find_nolock(v->db, v->name, v->name_len);
    if (i >= 0 && ks.v[i] == v)
        drop_nolock(v, (size_t)i);
    pthread_mutex_unlock(&ks.lock);
}

static bool is_expired_now(const tqd_vset *v)
{
    return expired(v, tqd_unix_ms());
}

/* Drop the key if its time has come; true if it did. */
static bool expire_if_due(int db, const char *name, size_t len)
{
    pthread_mutex_lock(&ks.lock);
    ssize_t i = find_nolock(db, name, len);
    tqd_vset *v = i >= 0 && expired(ks.v[i], tqd_unix_ms()) ? ks.v[i] : NULL;
    if (v)
        v->refs++;
    pthread_mutex_unlock(&ks.lock);
    if (!v)
        return false;
    bool dropped = drop_checked(v, is_expired_now);
    if (dropped) {
        tqd_log(TQD_LOG_VERBOSE, "vector set '%s' in db %d expired", v->name, db);
        tqd_key_changed(db, name, len);
    }
    tqd_vset_release(v);
    return dropped;
}

/* One pass dropping every key past its time; keyspace lock held (it is
 * released around each drop). */
static void sweep_nolock(void)
{
    const int64_t now = tqd_unix_ms();
    for (size_t i = 0; i < ks.n && !ks.stop; i++) {
        if (!expired(ks.v[i], now))
            continue;
        int db = ks.v[i]->db;
        char name[TQD_MAX_KEY_BYTES];
        size_t len = ks.v[i]->name_len;
        memcpy(name, ks.v[i]->name, len);
        pthread_mutex_unlock(&ks.lock);
        expire_if_due(db, name, len);
        pthread_mutex_lock(&ks.lock);
        i = (size_t)-1; /* the table changed: look again from the start */
    }
}

void tqd_keyspace_expire_due(void)
{
    pthread_mutex_lock(&ks.lock);
    sweep_nolock();
    pthread_mutex_unlock(&ks.lock);
}

static void *sweep_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ks.lock);
    while (!ks.stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&ks.wake, &ks.lock, &until);
        sweep_nolock();
    }
    pthread_mutex_unlock(&ks.lock);
    return NULL;
}

int tqd_keyspace_set_expiry(tqd_vset *v, int64_t when_ms, tqvec_error *err)
{
    pthread_mutex_lock(&v->write_lock);
    int rc = TQVEC_OK;
    if (v->dropped) {
        snprintf(err->message, sizeof(err->message), "the key was deleted meanwhile");
        rc = err->code = TQVEC_ENOTFOUND;
    } else {
        meta m = meta_of(v);
        m.expire_ms = when_ms;
        if (!(rc = write_meta(v->dir, &m, err))) {
            pthread_mutex_lock(&ks.lock);
            v->expire_ms = when_ms;
            pthread_mutex_unlock(&ks.lock);
        }
    }
    pthread_mutex_unlock(&v->write_lock);
    return rc;
}

int64_t tqd_keyspace_expiry(tqd_vset *v)
{
    pthread_mutex_lock(&ks.lock);
    int64_t when = v->expire_ms;
    pthread_mutex_unlock(&ks.lock);
    return when;
}

/* -------------------------------------------------- rename, copy, adopt */

/* The set a rename or copy starts from, with a reference, once the new
 * name is known to be possible; NULL with *rc set otherwise. */
static tqd_vset *source_of(int db, const char *name, size_t len, size_t to_len, int *rc, tqvec_error *err)
{
    tqd_vset *v = NULL;
    if (!check_key(to_len, err))
        *rc = err->code;
    else if (!(v = tqd_keyspace_get(db, name, len)))
        *rc = TQD_NO_KEY;
    return v;
}

/* Lock two sets' write locks in one global order (by address), so two
 * renames between the same names cannot deadlock. */
static void lock_pair(tqd_vset *a, tqd_vset *b)
{
    if (b && (uintptr_t)b < (uintptr_t)a) {
        tqd_vset *t = a;
        a = b;
        b = t;
    }
    pthread_mutex_lock(&a->write_lock);
    if (b)
        pthread_mutex_lock(&b->write_lock);
}

static void unlock_pair(tqd_vset *a, tqd_vset *b)
{
    if (b)
        pthread_mutex_unlock(&b->write_lock);
    pthread_mutex_unlock(&a->write_lock);
}

int tqd_keyspace_rename(int db, const char *name, size_t len, int to_db, const char *to, size_t to_len,
                        bool replace, tqvec_error *err)
{
    int rc = TQVEC_OK;
    tqd_vset *v = source_of(db, name, len, to_len, &rc, err);
    if (!v)
        return rc;
    if (db == to_db && len == to_len && !memcmp(name, to, len)) {
        tqd_vset_release(v);
        return TQVEC_OK;
    }
    expire_if_due(to_db, to, to_len);
    char *dir = key_dir(to_db, to, to_len);
    /* The target, if there is one, is locked with the source and dropped
     * under the same locks as the rename: no writer can create it in
     * between. Found before locking, so checked again after; a target
     * that changed meanwhile means another try. */
    for (int attempt = 0;; attempt++) {
        pthread_mutex_lock(&ks.lock);
        ssize_t j = find_nolock(to_db, to, to_len);
        tqd_vset *target = j >= 0 ? ks.v[j] : NULL;
        if (target)
            target->refs++;
        pthread_mutex_unlock(&ks.lock);
        lock_pair(v, target);
        pthread_mutex_lock(&ks.lock);
        ssize_t i = find_nolock(db, name, len);
        j = find_nolock(to_db, to, to_len);
        bool moved = (j >= 0 ? ks.v[j] : NULL) != target;
        if (!dir) {
            snprintf(err->message, sizeof(err->message), "out of memory renaming a key");
            rc = err->code = TQVEC_ENOMEM;
        } else if (i < 0 || ks.v[i] != v) {
            rc = TQD_NO_KEY;
        } else if (moved) {
            rc = TQD_KEY_EXISTS; /* the target changed since it was looked up: try again */
        } else if (target && !replace) {
            rc = TQD_KEY_EXISTS;
        } else {
            if (target)
                drop_nolock(target, (size_t)j);
            if (!(rc = tqvec_collection_move(v->c, dir, err))) {
                free(v->dir);
                v->dir = dir;
                dir = NULL;
                v->db = to_db;
                memcpy(v->name, to, to_len);
                v->name[to_len] = 0;
                v->name_len = to_len;
            }
        }
        pthread_mutex_unlock(&ks.lock);
        unlock_pair(v, target);
        tqd_vset_release(target);
        if (!moved || rc != TQD_KEY_EXISTS || attempt == 99)
            break;
    }
    free(dir);
    tqd_vset_release(v);
    return rc;
}

/* Give the collection staged in `stage` the key: renamed into place,
 * opened with every byte verified, in the table. Keyspace lock held, the
 * key free. */
static int install_nolock(int db, const char *name, size_t len, const char *stage, tqvec_error *err)
{
    int rc = TQVEC_OK;
    tqd_vset *v = NULL;
    if (!room_for_one_more(err)) {
        rc = err->code;
    } else if (!(v = vset_new(db, name, len))) {
        snprintf(err->message, sizeof(err->message), "out of memory adding a vector set");
        rc = err->code = TQVEC_ENOMEM;
    } else if (rename(stage, v->dir)) {
        snprintf(err->message, sizeof(err->message), "cannot rename %s to %s: %s", stage, v->dir, strerror(errno));
        rc = err->code = TQVEC_EIO;
    } else {
        sync_root();
        /* a copy from elsewhere: every byte checked before it is served */
        if ((rc = load_vset(v, true, err)) || table_push(v)) {
            if (!rc) {
                tqvec_collection_close(v->c, NULL);
                snprintf(err->message, sizeof(err->message), "out of memory adding a vector set");
                rc = err->code = TQVEC_ENOMEM;
            }
            tqd_remove_tree(v->dir);
        } else {
            v = NULL; /* in the table now */
        }
    }
    vset_free(v);
    return rc;
}

int tqd_keyspace_adopt(int db, const char *name, size_t len, const char *stage, bool replace, tqvec_error *err)
{
    int rc;
    if (!check_key(len, err)) {
        rc = err->code;
        goto out;
    }
    expire_if_due(db, name, len);
    /* As for rename: an existing key is locked, then dropped and replaced
     * under the keyspace lock, so no writer can create it in between. */
    for (int attempt = 0;; attempt++) {
        pthread_mutex_lock(&ks.lock);
        ssize_t j = find_nolock(db, name, len);
        tqd_vset *target = j >= 0 ? ks.v[j] : NULL;
        if (target)
            target->refs++;
        pthread_mutex_unlock(&ks.lock);
        if (target)
            pthread_mutex_lock(&target->write_lock);
        pthread_mutex_lock(&ks.lock);
        j = find_nolock(db, name, len);
        bool moved = (j >= 0 ? ks.v[j] : NULL) != target;
        if (moved || (target && !replace)) {
            rc = TQD_KEY_EXISTS;
        } else {
            if (target)
                drop_nolock(target, (size_t)j);
            rc = install_nolock(db, name, len, stage, err);
        }
        pthread_mutex_unlock(&ks.lock);
        if (target)
            pthread_mutex_unlock(&target->write_lock);
        tqd_vset_release(target);
        if (!moved || attempt == 99)
            break;
    }
out:
    if (rc)
        tqd_remove_tree(stage);
    return rc;
}

int tqd_keyspace_copy(int db, const char *name, size_t len, int to_db, const char *to, size_t to_len,
                      bool replace, tqvec_error *err)
{
    int rc = TQVEC_OK;
    tqd_vset *v = source_of(db, name, len, to_len, &rc, err);
    if (!v)
        return rc;
    char *stage = tqd_keyspace_stage_dir();
    if (!stage) {
        snprintf(err->message, sizeof(err->message), "out of memory copying a key");
        rc = err->code = TQVEC_ENOMEM;
        goto out;
    }
    /* As Redis: the copy keeps the expiry. */
    if ((rc = tqd_keyspace_backup(v, stage, true, err)))
        tqd_remove_tree(stage);
    else
        rc = tqd_keyspace_adopt(to_db, to, to_len, stage, replace, err);
out:
    free(stage);
    tqd_vset_release(v);
    return rc;
}

int tqd_keyspace_backup(tqd_vset *v, const char *stage, bool with_expiry, tqvec_error *err)
{
    /* The key's write lock keeps a drop from moving the directory away
     * while it is copied. */
    pthread_mutex_lock(&v->write_lock);
    meta m = meta_of(v);
    if (!with_expiry)
        m.expire_ms = 0;
    int rc = v->dropped ? TQD_NO_KEY : tqvec_collection_backup(v->c, stage, err);
    if (!rc)
        rc = write_meta(stage, &m, err);
    pthread_mutex_unlock(&v->write_lock);
    return rc;
}

int tqd_keyspace_stage_expiry(const char *stage, int64_t when_ms, tqvec_error *err)
{
    meta m;
    if (read_meta(stage, &m)) {
        snprintf(err->message, sizeof(err->message), "the copy's " TQD_META_FILE " is damaged");
        return err->code = TQVEC_ECORRUPT;
    }
    m.expire_ms = when_ms;
    return write_meta(stage, &m, err);
}

/* ------------------------------------------------------------ listings */

static bool listed(const tqd_vset *v, int db, int64_t now)
{
    return (db < 0 || v->db == db) && !expired(v, now);
}

size_t tqd_keyspace_count(int db, size_t *expires)
{
    const int64_t now = tqd_unix_ms();
    size_t n = 0, e = 0;
    pthread_mutex_lock(&ks.lock);
    for (size_t i = 0; i < ks.n; i++)
        if (listed(ks.v[i], db, now)) {
            n++;
            e += ks.v[i]->expire_ms != 0;
        }
    pthread_mutex_unlock(&ks.lock);
    if (expires)
        *expires = e;
    return n;
}

static int by_name(const void *a, const void *b)
{
    const tqd_vset *x = *(tqd_vset *const *)a, *y = *(tqd_vset *const *)b;
    if (x->db != y->db)
        return (x->db > y->db) - (x->db < y->db);
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

int tqd_keyspace_names(int db, tqd_names *out)
{
    memset(out, 0, sizeof(*out));
    const int64_t now = tqd_unix_ms();
    pthread_mutex_lock(&ks.lock);
    int rc = 0;
    tqd_vset **copy = malloc((ks.n + 1) * sizeof(*copy));
    out->name = calloc(ks.n + 1, sizeof(char *));
    out->len = calloc(ks.n + 1, sizeof(size_t));
    out->db = calloc(ks.n + 1, sizeof(int));
    if (!copy || !out->name || !out->len || !out->db) {
        rc = -1;
    } else {
        size_t m = 0;
        for (size_t i = 0; i < ks.n; i++)
            if (listed(ks.v[i], db, now))
                copy[m++] = ks.v[i];
        qsort(copy, m, sizeof(*copy), by_name);
        for (size_t i = 0; i < m && !rc; i++) {
            if (!(out->name[i] = malloc(copy[i]->name_len + 1))) {
                rc = -1;
                break;
            }
            memcpy(out->name[i], copy[i]->name, copy[i]->name_len + 1);
            out->len[i] = copy[i]->name_len;
            out->db[i] = copy[i]->db;
            out->n++;
        }
    }
    pthread_mutex_unlock(&ks.lock);
    free(copy);
    if (rc)
        tqd_names_free(out);
    return rc;
}

void tqd_names_free(tqd_names *n)
{
    for (size_t i = 0; n->name && i < n->n; i++)
        free(n->name[i]);
    free(n->name);
    free(n->len);
    free(n->db);
    memset(n, 0, sizeof(*n));
}

int tqd_keyspace_save(tqvec_error *err)
{
    tqd_names names;
    if (tqd_keyspace_names(-1, &names)) {
        snprintf(err->message, sizeof(err->message), "out of memory listing vector sets");
        return err->code = TQVEC_ENOMEM;
    }
    int rc = TQVEC_OK;
    for (size_t i = 0; i < names.n; i++) {
        tqd_vset *v = tqd_keyspace_get(names.db[i], names.name[i], names.len[i]);
        if (!v)
            continue; /* dropped meanwhile */
        pthread_mutex_lock(&v->write_lock);
        int r = v->dropped ? TQVEC_OK : tqvec_collection_compact(v->c, rc ? NULL : err);
        pthread_mutex_unlock(&v->write_lock);
        /* The segments it sealed are partitioned when SAVE returns. */
        if (!r)
            tqvec_collection_wait_partitioned(v->c, NULL);
        tqd_vset_release(v);
        if (r && !rc)
            rc = r;
    }
    tqd_names_free(&names);
    return rc;
}

size_t tqd_keyspace_flush(int db)
{
    tqd_names names;
    if (tqd_keyspace_names(db, &names))
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < names.n; i++)
        n += tqd_keyspace_drop(names.db[i], names.name[i], names.len[i]);
    tqd_names_free(&names);
    return n;
}
