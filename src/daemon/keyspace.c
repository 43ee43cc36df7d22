/*
 * The keyspace: each key is a vector set, kept as a tqvec collection in its
 * own directory under --dir.
 *
 *   DIR/tqvecd.lock     flock'd by the one daemon serving DIR
 *   DIR/v-<hex>/        the collection of the key whose bytes are <hex>
 *   DIR/.drop-<n>-<hex> a dropped key's directory, deleted after its last
 *                       user; leftovers of a crash are deleted at start
 *
 * Key bytes never become a path: they are hex-encoded, so "../x", "/" or
 * a NUL cannot leave DIR or collide, and the directory name decodes back
 * to the key at start (no catalogue to keep in step). The price is a limit
 * of TQD_MAX_KEY_BYTES on key length.
 *
 * Lock order: a key's write_lock, then the keyspace lock. The keyspace lock
 * guards the table and every refs/dropped field; it is held for lookups,
 * never across a collection call except open, close and the rename of a
 * drop. A drop renames the directory (the commit point: after a crash the
 * key is gone) under the key's write_lock, so no writer of that key is
 * mid-change and none will write again (they check dropped after taking
 * the lock); searches already running finish on their snapshot, and the
 * last release closes the collection and deletes the files.
 */
#include "daemon.h"

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
#include <unistd.h>

static struct {
    pthread_mutex_t lock;
    tqd_vset **v;
    size_t n, cap;
    char *root;
    int lock_fd;
    int fsync;
    uint32_t segment_rows;
    int max;
    uint64_t drops;
} ks = {.lock = PTHREAD_MUTEX_INITIALIZER, .lock_fd = -1};

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

static void collection_log(void *ctx, int level, const char *message)
{
    /* ctx is the key's name, which lives as long as its collection (the
     * directory path changes when the key is dropped). */
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

static void remove_tree(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *key_dir(const char *name, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(ks.root) + 4 + 2 * len + 1;
    char *p = malloc(n);
    if (!p)
        return NULL;
    int at = snprintf(p, n, "%s/v-", ks.root);
    for (size_t i = 0; i < len; i++) {
        p[at++] = hex[(unsigned char)name[i] >> 4];
        p[at++] = hex[(unsigned char)name[i] & 15];
    }
    p[at] = 0;
    return p;
}

/* The key a directory entry names, or 0 if it is not one of ours. */
static size_t decode_key(const char *entry, char *out)
{
    if (strncmp(entry, "v-", 2))
        return 0;
    const char *h = entry + 2;
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

static void vset_free(tqd_vset *v)
{
    if (!v)
        return;
    free(v->name);
    free(v->dir);
    pthread_mutex_destroy(&v->write_lock);
    free(v);
}

static tqd_vset *vset_new(const char *name, size_t len, char *dir)
{
    tqd_vset *v = calloc(1, sizeof(*v));
    if (!v || !(v->name = malloc(len + 1))) {
        free(v);
        free(dir);
        return NULL;
    }
    memcpy(v->name, name, len);
    v->name[len] = 0;
    v->name_len = len;
    v->dir = dir;
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
    ks.v[ks.n++] = v;
    return 0;
}

static tqvec_collection_options open_options(const tqd_vset *v)
{
    tqvec_collection_options o = {0};
    o.fsync = ks.fsync;
    o.segment_rows = ks.segment_rows;
    o.log = collection_log;
    o.log_ctx = v->name;
    return o;
}

int tqd_keyspace_open(const tqd_config *cfg)
{
    ks.fsync = cfg->appendfsync;
    ks.segment_rows = cfg->segment_rows;
    ks.max = cfg->max_collections;
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
        if (!strncmp(e->d_name, ".drop-", 6)) {
            snprintf(path, sizeof(path), "%s/%s", ks.root, e->d_name);
            tqd_log(TQD_LOG_NOTICE, "removing %s, dropped before the last stop", path);
            remove_tree(path);
            continue;
        }
        char key[TQD_MAX_KEY_BYTES];
        size_t len = decode_key(e->d_name, key);
        if (!len)
            continue;
        tqd_vset *v = vset_new(key, len, key_dir(key, len));
        if (!v || !v->dir) {
            vset_free(v);
            rc = -1;
            break;
        }
        tqvec_collection_options o = open_options(v);
        tqvec_error err;
        int orc = tqvec_collection_open(v->dir, &o, &v->c, &err);
        struct stat st;
        snprintf(path, sizeof(path), "%s/MANIFEST", v->dir);
        if (orc == TQVEC_ENOTFOUND && stat(path, &st) != 0 && errno == ENOENT) {
            /* A set whose creation never committed (no manifest: a crash or
             * power cut inside TQ.CREATE or a first VADD, before the
             * reply): nothing in it was acknowledged. */
            tqd_log(TQD_LOG_NOTICE, "removing %s, a vector set whose creation did not complete", v->dir);
            remove_tree(v->dir);
            vset_free(v);
            continue;
        }
        if (orc) {
            tqd_log(TQD_LOG_WARNING, "cannot open vector set '%s' in %s: %s", v->name, v->dir, err.message);
            vset_free(v);
            rc = -1;
            break;
        }
        vset_describe(v);
        if (table_push(v)) {
            tqvec_collection_close(v->c, NULL);
            vset_free(v);
            rc = -1;
        }
    }
    closedir(d);
    if (!rc)
        tqd_log(TQD_LOG_NOTICE, "%zu vector sets loaded from %s", ks.n, ks.root);
    return rc;
}

void tqd_keyspace_close(void)
{
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

static ssize_t find_nolock(const char *name, size_t len)
{
    for (size_t i = 0; i < ks.n; i++)
        if (ks.v[i]->name_len == len && !memcmp(ks.v[i]->name, name, len))
            return (ssize_t)i;
    return -1;
}

tqd_vset *tqd_keyspace_get(const char *name, size_t len)
{
    pthread_mutex_lock(&ks.lock);
    ssize_t i = find_nolock(name, len);
    tqd_vset *v = i >= 0 ? ks.v[i] : NULL;
    if (v)
        v->refs++;
    pthread_mutex_unlock(&ks.lock);
    return v;
}

int tqd_keyspace_get_or_create(const char *name, size_t len, const tqvec_collection_options *opts, tqd_vset **out,
                               bool *created, tqvec_error *err)
{
    *out = NULL;
    *created = false;
    if (len == 0 || len > TQD_MAX_KEY_BYTES) {
        snprintf(err->message, sizeof(err->message), "a vector set's key is 1 to %d bytes, not %zu",
                 TQD_MAX_KEY_BYTES, len);
        return err->code = TQVEC_EARG;
    }
    pthread_mutex_lock(&ks.lock);
    int rc = TQVEC_OK;
    ssize_t i = find_nolock(name, len);
    if (i >= 0) {
        *out = ks.v[i];
        ks.v[i]->refs++;
        goto out;
    }
    if (ks.n >= (size_t)ks.max) {
        snprintf(err->message, sizeof(err->message), "max number of vector sets reached (%d)", ks.max);
        rc = err->code = TQVEC_EBUSY;
        goto out;
    }
    tqd_vset *v = vset_new(name, len, key_dir(name, len));
    if (!v || !v->dir) {
        vset_free(v);
        snprintf(err->message, sizeof(err->message), "out of memory creating a vector set");
        rc = err->code = TQVEC_ENOMEM;
        goto out;
    }
    tqvec_collection_options o = *opts;
    o.fsync = ks.fsync;
    o.segment_rows = ks.segment_rows;
    o.create = 1;
    o.log = collection_log;
    o.log_ctx = v->name;
    /* The collection makes its directory, and syncs it into the data
     * directory before the set can be acknowledged. */
    if ((rc = tqvec_collection_open(v->dir, &o, &v->c, err)) != TQVEC_OK) {
        remove_tree(v->dir);
    } else if (table_push(v)) {
        tqvec_collection_close(v->c, NULL);
        remove_tree(v->dir);
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
    tqd_log(TQD_LOG_VERBOSE, "created vector set '%s' (dim %u, %s, %d bits, refine %s)", v->name, v->dim,
            tqd_metric_name(v->metric), v->bits, tqd_refine_name(v->refine));
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
    remove_tree(v->dir);
    vset_free(v);
}

/* fsync the data directory: a rename in it (a drop) is durable once its
 * entry is. */
static void sync_root(void)
{
    int fd = open(ks.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd))
        tqd_log(TQD_LOG_WARNING, "cannot sync %s: %s", ks.root, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* Keyspace lock and v->write_lock held, v in the table at i. */
static void drop_nolock(tqd_vset *v, size_t i)
{
    char *trash = malloc(strlen(ks.root) + 64 + 2 * v->name_len);
    if (trash) {
        sprintf(trash, "%s/.drop-%llu-%s", ks.root, (unsigned long long)++ks.drops, strrchr(v->dir, '/') + 3);
        if (rename(v->dir, trash))
            tqd_log(TQD_LOG_WARNING, "cannot move %s aside: %s", v->dir, strerror(errno));
        else if (ks.fsync != TQVEC_FSYNC_NO)
            sync_root(); /* else a power cut could bring the set back (found by the power-cut test) */
        free(v->dir);
        v->dir = trash;
    }
    v->dropped = true;
    ks.v[i] = ks.v[--ks.n];
}

bool tqd_keyspace_drop(const char *name, size_t len)
{
    tqd_vset *v = tqd_keyspace_get(name, len);
    if (!v)
        return false;
    pthread_mutex_lock(&v->write_lock);
    pthread_mutex_lock(&ks.lock);
    ssize_t i = find_nolock(name, len);
    bool dropped = i >= 0 && ks.v[i] == v;
    if (dropped) {
        drop_nolock(v, (size_t)i);
    }
    pthread_mutex_unlock(&ks.lock);
    pthread_mutex_unlock(&v->write_lock);
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
    ssize_t i = find_nolock(v->name, v->name_len);
    if (i >= 0 && ks.v[i] == v)
        drop_nolock(v, (size_t)i);
    pthread_mutex_unlock(&ks.lock);
}

size_t tqd_keyspace_count(void)
{
    pthread_mutex_lock(&ks.lock);
    size_t n = ks.n;
    pthread_mutex_unlock(&ks.lock);
    return n;
}

static int by_name(const void *a, const void *b)
{
    const tqd_vset *x = *(tqd_vset *const *)a, *y = *(tqd_vset *const *)b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

int tqd_keyspace_names(tqd_names *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&ks.lock);
    int rc = 0;
    tqd_vset **copy = malloc((ks.n + 1) * sizeof(*copy));
    out->name = calloc(ks.n + 1, sizeof(char *));
    out->len = calloc(ks.n + 1, sizeof(size_t));
    if (!copy || !out->name || !out->len) {
        rc = -1;
    } else {
        if (ks.n) /* an empty table may not be allocated yet */
            memcpy(copy, ks.v, ks.n * sizeof(*copy));
        qsort(copy, ks.n, sizeof(*copy), by_name);
        for (size_t i = 0; i < ks.n && !rc; i++) {
            if (!(out->name[i] = malloc(copy[i]->name_len + 1))) {
                rc = -1;
                break;
            }
            memcpy(out->name[i], copy[i]->name, copy[i]->name_len + 1);
            out->len[i] = copy[i]->name_len;
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
    memset(n, 0, sizeof(*n));
}

int tqd_keyspace_save(tqvec_error *err)
{
    tqd_names names;
    if (tqd_keyspace_names(&names)) {
        snprintf(err->message, sizeof(err->message), "out of memory listing vector sets");
        return err->code = TQVEC_ENOMEM;
    }
    int rc = TQVEC_OK;
    for (size_t i = 0; i < names.n; i++) {
        tqd_vset *v = tqd_keyspace_get(names.name[i], names.len[i]);
        if (!v)
            continue; /* dropped meanwhile */
        pthread_mutex_lock(&v->write_lock);
        int r = v->dropped ? TQVEC_OK : tqvec_collection_compact(v->c, rc ? NULL : err);
        pthread_mutex_unlock(&v->write_lock);
        tqd_vset_release(v);
        if (r && !rc)
            rc = r;
    }
    tqd_names_free(&names);
    return rc;
}
