/*
 * The generic key commands of Redis over the keyspace: existence and type
 * (EXISTS, TOUCH, TYPE, DBSIZE, KEYS, SCAN, RANDOMKEY), removal (DEL, UNLINK, FLUSHDB,
 * FLUSHALL), names and databases (RENAME, RENAMENX, MOVE, COPY), expiry
 * (EXPIRE and its relatives, TTL, PERSIST), serialization (DUMP, RESTORE)
 * and introspection (OBJECT, MEMORY USAGE). Every key is a vector set, so
 * these act on whole collections: RENAME and MOVE move the open
 * collection's directory, COPY and DUMP take a backup of its files.
 *
 * DUMP's payload is ours, not Redis's RDB encoding (which has no vector
 * sets of tqvec's kind): the collection's own files, each already
 * versioned and checksummed, framed as
 *   "TQVDUMP\0", u32 format 1, u32 file count,
 *   per file: u16 path length, path (relative: MANIFEST, tqvecd.meta when
 *             the set has a shape, seg/..., wal/...),
 *             u64 length, bytes,
 *   u64 XXH3-64 of everything before it.
 * RESTORE checks the frame and its checksum ("DUMP payload version or
 * checksum are wrong" otherwise, as Redis says), writes the files into a
 * staged directory and opens it with every byte verified ("Bad data
 * format" when it is no collection), and only then gives it the key.
 */
#include "daemon.h"

#include <xxhash.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static bool db_index(const tqd_arg *a, int *db, tqd_reply *r)
{
    long long n;
    if (!tqd_arg_ll(a, &n)) {
        tqd_reply_error(r, "ERR value is not an integer or out of range");
        return false;
    }
    if (n < 0 || n >= tqd.cfg.databases) {
        tqd_reply_error(r, "ERR DB index is out of range");
        return false;
    }
    *db = (int)n;
    return true;
}

bool tqd_db_index(const tqd_arg *a, int *db, tqd_reply *r)
{
    return db_index(a, db, r);
}

/* ------------------------------------------------- existence and removal */

static void cmd_dbsize(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argv;
    (void)argc;
    tqd_reply_int(r, (long long)tqd_keyspace_count(cl->db, NULL));
}

static void cmd_exists(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    long long n = 0;
    for (size_t i = 1; i < argc; i++) {
        tqd_vset *v = tqd_keyspace_get(cl->db, argv[i].p, argv[i].len);
        n += v != NULL;
        tqd_vset_release(v);
    }
    tqd_reply_int(r, n);
}

static void cmd_del(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    long long n = 0;
    for (size_t i = 1; i < argc; i++)
        n += tqd_keyspace_drop(cl->db, argv[i].p, argv[i].len);
    tqd_reply_int(r, n);
}

/* TOUCH: access times are not tracked, so it only counts what exists. */
static void cmd_touch(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    cmd_exists(cl, argv, argc, r);
}

static void cmd_randomkey(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argv;
    (void)argc;
    tqd_names names;
    if (tqd_keyspace_names(cl->db, &names)) {
        tqd_reply_error(r, "ERR out of memory listing keys");
        return;
    }
    if (!names.n) {
        tqd_reply_null(r);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        size_t i = (size_t)(((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull) >> 32) % names.n;
        tqd_reply_bulk(r, names.name[i], names.len[i]);
    }
    tqd_names_free(&names);
}

static void cmd_type(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    tqd_reply_simple(r, v ? "vectorset" : "none");
    tqd_vset_release(v);
}

static void reply_names(int db, const tqd_arg *pattern, tqd_reply *r)
{
    tqd_names names;
    if (tqd_keyspace_names(db, &names)) {
        tqd_reply_error(r, "ERR out of memory listing keys");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < names.n; i++)
        n += !pattern || tqd_glob(pattern->p, pattern->len, names.name[i], names.len[i]);
    tqd_reply_array(r, n);
    for (size_t i = 0; i < names.n; i++)
        if (!pattern || tqd_glob(pattern->p, pattern->len, names.name[i], names.len[i]))
            tqd_reply_bulk(r, names.name[i], names.len[i]);
    tqd_names_free(&names);
}

static void cmd_keys(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argc;
    reply_names(cl->db, &argv[1], r);
}

/* One pass returns every key (cursor 0), which SCAN's contract allows:
 * the keyspace is a few thousand names at most. */
static void cmd_scan(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    long long cursor;
    if (!tqd_arg_ll(&argv[1], &cursor) || cursor < 0) {
        tqd_reply_error(r, "ERR invalid cursor");
        return;
    }
    const tqd_arg *pattern = NULL;
    bool other_type = false;
    for (size_t i = 2; i < argc; i++) {
        long long count;
        if (tqd_arg_is(&argv[i], "MATCH") && i + 1 < argc) {
            pattern = &argv[++i];
        } else if (tqd_arg_is(&argv[i], "COUNT") && i + 1 < argc) {
            if (!tqd_arg_ll(&argv[++i], &count) || count < 1) {
                tqd_reply_error(r, count < 1 ? "ERR syntax error" : "ERR value is not an integer or out of range");
                return;
            }
        } else if (tqd_arg_is(&argv[i], "TYPE") && i + 1 < argc) {
            other_type = !tqd_arg_is(&argv[++i], "vectorset");
        } else {
            tqd_reply_error(r, "ERR syntax error");
            return;
        }
    }
    tqd_reply_array(r, 2);
    tqd_reply_cstr(r, "0");
    if (cursor != 0 || other_type)
        tqd_reply_array(r, 0);
    else
        reply_names(cl->db, pattern, r);
}

static void cmd_flush(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    if (argc > 2 || (argc == 2 && !tqd_arg_is(&argv[1], "ASYNC") && !tqd_arg_is(&argv[1], "SYNC"))) {
        tqd_reply_error(r, "ERR syntax error");
        return;
    }
    const bool all = tqd_arg_is(&argv[0], "flushall");
    size_t n = tqd_keyspace_flush(all ? -1 : cl->db);
    if (all)
        tqd_log(TQD_LOG_NOTICE, "FLUSHALL dropped %zu vector sets", n);
    else
        tqd_log(TQD_LOG_NOTICE, "FLUSHDB dropped %zu vector sets of db %d", n, cl->db);
    tqd_reply_simple(r, "OK");
}

/* ------------------------------------------------ names and databases */

static void reply_keyspace_error(tqd_reply *r, int rc, const tqvec_error *err)
{
    if (rc == TQD_NO_KEY)
        tqd_reply_error(r, "ERR no such key");
    else if (rc == TQD_KEY_EXISTS)
        tqd_reply_error(r, "BUSYKEY Target key name already exists.");
    else
        tqd_reply_tqvec_error(r, err);
}

static void cmd_rename(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argc;
    const bool nx = tqd_arg_is(&argv[0], "renamenx");
    tqvec_error err;
    int rc = tqd_keyspace_rename(cl->db, argv[1].p, argv[1].len, cl->db, argv[2].p, argv[2].len, !nx, &err);
    if (nx && (rc == TQVEC_OK || rc == TQD_KEY_EXISTS)) {
        /* RENAMENX of a key onto itself answers 0, as Redis. */
        bool same = argv[1].len == argv[2].len && !memcmp(argv[1].p, argv[2].p, argv[1].len);
        tqd_reply_int(r, rc == TQVEC_OK && !same);
    } else if (rc) {
        reply_keyspace_error(r, rc, &err);
    } else {
        tqd_reply_simple(r, "OK");
    }
}

static void cmd_move(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argc;
    int to;
    if (!db_index(&argv[2], &to, r))
        return;
    if (to == cl->db) {
        tqd_reply_error(r, "ERR source and destination objects are the same");
        return;
    }
    tqvec_error err;
    int rc = tqd_keyspace_rename(cl->db, argv[1].p, argv[1].len, to, argv[1].p, argv[1].len, false, &err);
    if (rc == TQVEC_OK || rc == TQD_NO_KEY || rc == TQD_KEY_EXISTS) {
        if (rc == TQVEC_OK)
            tqd_key_changed(to, argv[1].p, argv[1].len);
        tqd_reply_int(r, rc == TQVEC_OK);
    } else {
        reply_keyspace_error(r, rc, &err);
    }
}

/* COPY source destination [DB n] [REPLACE] */
static void cmd_copy(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    int to = cl->db;
    bool replace = false;
    for (size_t i = 3; i < argc; i++) {
        if (tqd_arg_is(&argv[i], "REPLACE")) {
            replace = true;
        } else if (tqd_arg_is(&argv[i], "DB") && i + 1 < argc) {
            if (!db_index(&argv[++i], &to, r))
                return;
        } else {
            tqd_reply_error(r, "ERR syntax error");
            return;
        }
    }
    if (to == cl->db && argv[1].len == argv[2].len && !memcmp(argv[1].p, argv[2].p, argv[1].len)) {
        tqd_reply_error(r, "ERR source and destination objects are the same");
        return;
    }
    tqvec_error err;
    int rc = tqd_keyspace_copy(cl->db, argv[1].p, argv[1].len, to, argv[2].p, argv[2].len, replace, &err);
    if (rc == TQVEC_OK || rc == TQD_NO_KEY || rc == TQD_KEY_EXISTS) {
        if (rc == TQVEC_OK && to != cl->db)
            tqd_key_changed(to, argv[2].p, argv[2].len);
        tqd_reply_int(r, rc == TQVEC_OK);
    } else {
        reply_keyspace_error(r, rc, &err);
    }
}

/* --------------------------------------------------------------- expiry */

/* EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key t [NX|XX|GT|LT] */
static void cmd_expire(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    const bool ms = argv[0].p[0] == 'p' || argv[0].p[0] == 'P';
    const bool at = argv[0].len >= 8 && (argv[0].p[argv[0].len - 1] == 't' || argv[0].p[argv[0].len - 1] == 'T');
    long long t;
    if (!tqd_arg_ll(&argv[2], &t)) {
        tqd_reply_error(r, "ERR value is not an integer or out of range");
        return;
    }
    bool nx = false, xx = false, gt = false, lt = false;
    for (size_t i = 3; i < argc; i++) {
        if (tqd_arg_is(&argv[i], "NX"))
            nx = true;
        else if (tqd_arg_is(&argv[i], "XX"))
            xx = true;
        else if (tqd_arg_is(&argv[i], "GT"))
            gt = true;
        else if (tqd_arg_is(&argv[i], "LT"))
            lt = true;
        else {
            char opt[32];
            snprintf(opt, sizeof(opt), "%.*s", (int)(argv[i].len < 16 ? argv[i].len : 16), argv[i].p);
            tqd_reply_error(r, "ERR Unsupported option %s", opt);
            return;
        }
    }
    if ((nx && (xx || gt || lt)) || (gt && lt)) {
        tqd_reply_error(r, "ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    /* In Unix ms, refusing what overflows as Redis does. */
    const long long unit = ms ? 1 : 1000, now = tqd_unix_ms();
    if (t > LLONG_MAX / unit || t < LLONG_MIN / unit || (!at && ((t > 0 && t * unit > LLONG_MAX - now) ||
                                                                  (t < 0 && t * unit < LLONG_MIN + now)))) {
        char name[16];
        tqd_arg_lower(&argv[0], name, sizeof(name));
        tqd_reply_error(r, "ERR invalid expire time in '%s' command", name);
        return;
    }
    const long long when = at ? t * unit : now + t * unit;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    if (!v) {
        tqd_reply_int(r, 0);
        return;
    }
    /* A key without an expiry counts as an infinite one for GT and LT. */
    const int64_t cur = tqd_keyspace_expiry(v);
    bool ok = !(nx && cur) && !(xx && !cur) && !(gt && (!cur || when <= cur)) && !(lt && cur && when >= cur);
    tqvec_error err;
    if (!ok) {
        tqd_reply_int(r, 0);
    } else if (when <= now) {
        /* A time already past deletes the key now, as Redis does. */
        tqd_keyspace_drop(cl->db, argv[1].p, argv[1].len);
        tqd_reply_int(r, 1);
    } else if (tqd_keyspace_set_expiry(v, when, &err)) {
        tqd_reply_tqvec_error(r, &err);
    } else {
        tqd_reply_int(r, 1);
    }
    tqd_vset_release(v);
}

/* TTL, PTTL, EXPIRETIME, PEXPIRETIME */
static void cmd_ttl(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argc;
    const bool ms = argv[0].p[0] == 'p' || argv[0].p[0] == 'P';
    const bool absolute = argv[0].len > 4;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    const int64_t when = v ? tqd_keyspace_expiry(v) : 0;
    if (!v) {
        tqd_reply_int(r, -2);
    } else if (!when) {
        tqd_reply_int(r, -1);
    } else if (absolute) {
        tqd_reply_int(r, ms ? when : when / 1000);
    } else {
        long long left = when - tqd_unix_ms();
        left = left < 0 ? 0 : left;
        tqd_reply_int(r, ms ? left : (left + 500) / 1000);
    }
    tqd_vset_release(v);
}

static void cmd_persist(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    tqvec_error err;
    if (!v || !tqd_keyspace_expiry(v))
        tqd_reply_int(r, 0);
    else if (tqd_keyspace_set_expiry(v, 0, &err))
        tqd_reply_tqvec_error(r, &err);
    else
        tqd_reply_int(r, 1);
    tqd_vset_release(v);
}

/* -------------------------------------------------------- DUMP, RESTORE */

#define DUMP_MAGIC "TQVDUMP"
#define DUMP_FORMAT 1u
#define DUMP_MAX_FILES 100000u

/* Append the file at root/rel, framed. */
static bool put_file(tqd_buf *b, const char *root, const char *rel, uint32_t *count)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    uint16_t plen = (uint16_t)strlen(rel);
    uint64_t len = (uint64_t)st.st_size;
    bool ok = tqd_buf_append(b, &plen, 2) && tqd_buf_append(b, rel, plen) && tqd_buf_append(b, &len, 8) && tqd_buf_reserve(b, len);
    for (uint64_t done = 0; ok && done < len;) {
        ssize_t n = read(fd, b->p + b->len, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        if (ok) {
            b->len += (size_t)n;
            done += (uint64_t)n;
        }
    }
    close(fd);
    (*count)++;
    return ok;
}

/* Every file of a backup directory (MANIFEST, seg/ and wal/), framed. */
static bool dump_dir(const char *root, tqd_buf *b)
{
    uint32_t format = DUMP_FORMAT, count = 0;
    size_t count_at = sizeof(DUMP_MAGIC) + 4;
    char meta[PATH_MAX];
    snprintf(meta, sizeof(meta), "%s/" TQD_META_FILE, root);
    if (!tqd_buf_append(b, DUMP_MAGIC, sizeof(DUMP_MAGIC)) || !tqd_buf_append(b, &format, 4) || !tqd_buf_append(b, &count, 4) ||
        !put_file(b, root, "MANIFEST", &count) || (access(meta, F_OK) == 0 && !put_file(b, root, TQD_META_FILE, &count)))
        return false;
    static const char *const subs[] = {"seg", "wal"};
    for (int s = 0; s < 2; s++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", root, subs[s]);
        DIR *d = opendir(path);
        if (!d)
            return false;
        bool ok = true;
        struct dirent *e;
        while (ok && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char rel[300];
            snprintf(rel, sizeof(rel), "%s/%s", subs[s], e->d_name);
            ok = put_file(b, root, rel, &count);
        }
        closedir(d);
        if (!ok)
            return false;
    }
    memcpy(b->p + count_at, &count, 4);
    uint64_t sum = XXH3_64bits(b->p, b->len);
    return tqd_buf_append(b, &sum, 8);
}

/* A relative path of a dump: MANIFEST, the daemon's meta file, or seg/NAME
 * or wal/NAME with NAME plain. */
static bool safe_path(const char *p, size_t n)
{
    if ((n == 8 && !memcmp(p, "MANIFEST", 8)) ||
        (n == sizeof(TQD_META_FILE) - 1 && !memcmp(p, TQD_META_FILE, n)))
        return true;
    if (n < 5 || n > 255 || (memcmp(p, "seg/", 4) && memcmp(p, "wal/", 4)))
        return false;
    for (size_t i = 4; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'z') || p[i] == '.'))
            return false;
    return p[4] != '.';
}

enum { UNDUMP_OK, UNDUMP_BAD_FRAME, UNDUMP_IO };

/* Write a payload's files under stage (created here). */
static int undump(const char *p, size_t n, const char *stage)
{
    uint32_t format, count;
    uint64_t sum;
    const size_t head = sizeof(DUMP_MAGIC) + 8;
    if (n < head + 8 || memcmp(p, DUMP_MAGIC, sizeof(DUMP_MAGIC)))
        return UNDUMP_BAD_FRAME;
    memcpy(&format, p + sizeof(DUMP_MAGIC), 4);
    memcpy(&count, p + sizeof(DUMP_MAGIC) + 4, 4);
    memcpy(&sum, p + n - 8, 8);
    if (format != DUMP_FORMAT || count > DUMP_MAX_FILES || sum != XXH3_64bits(p, n - 8))
        return UNDUMP_BAD_FRAME;
    char path[PATH_MAX];
    if (mkdir(stage, 0755))
        return UNDUMP_IO;
    snprintf(path, sizeof(path), "%s/seg", stage);
    if (mkdir(path, 0755))
        return UNDUMP_IO;
    snprintf(path, sizeof(path), "%s/wal", stage);
    if (mkdir(path, 0755))
        return UNDUMP_IO;
    size_t at = head;
    const size_t end = n - 8;
    for (uint32_t i = 0; i < count; i++) {
        uint16_t plen;
        uint64_t len;
        if (end - at < 2)
            return UNDUMP_BAD_FRAME;
        memcpy(&plen, p + at, 2);
        at += 2;
        if (end - at < (size_t)plen + 8 || !safe_path(p + at, plen))
            return UNDUMP_BAD_FRAME;
        snprintf(path, sizeof(path), "%s/%.*s", stage, (int)plen, p + at);
        at += plen;
        memcpy(&len, p + at, 8);
        at += 8;
        if (len > end - at)
            return UNDUMP_BAD_FRAME;
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            return errno == EEXIST ? UNDUMP_BAD_FRAME : UNDUMP_IO;
        bool ok = tqd_write_all(fd, p + at, len) && (tqd.cfg.appendfsync == TQVEC_FSYNC_NO || !fdatasync(fd));
        close(fd);
        if (!ok)
            return UNDUMP_IO;
        at += len;
    }
    return at == end ? UNDUMP_OK : UNDUMP_BAD_FRAME;
}

static void cmd_dump(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argc;
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
    if (!v) {
        tqd_reply_null(r);
        return;
    }
    char *stage = tqd_keyspace_stage_dir();
    tqd_buf b = {0};
    tqvec_error err;
    int rc = stage ? tqd_keyspace_backup(v, stage, false, &err) : TQVEC_ENOMEM;
    if (rc == TQD_NO_KEY)
        tqd_reply_null(r);
    else if (rc)
        tqd_reply_tqvec_error(r, &err);
    else if (!dump_dir(stage, &b))
        tqd_reply_error(r, "ERR cannot serialize the vector set (out of memory or a file could not be read)");
    else
        tqd_reply_bulk(r, b.p, b.len);
    if (stage)
        tqd_remove_tree(stage);
    free(stage);
    tqd_buf_free(&b);
    tqd_vset_release(v);
}

/* RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f] */
static void cmd_restore(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    long long ttl, n;
    if (!tqd_arg_ll(&argv[2], &ttl)) {
        tqd_reply_error(r, "ERR value is not an integer or out of range");
        return;
    }
    if (ttl < 0) {
        tqd_reply_error(r, "ERR Invalid TTL value, must be >= 0");
        return;
    }
    bool replace = false, absttl = false;
    for (size_t i = 4; i < argc; i++) {
        if (tqd_arg_is(&argv[i], "REPLACE")) {
            replace = true;
        } else if (tqd_arg_is(&argv[i], "ABSTTL")) {
            absttl = true;
        } else if (tqd_arg_is(&argv[i], "IDLETIME") && i + 1 < argc) {
            if (!tqd_arg_ll(&argv[++i], &n) || n < 0) {
                tqd_reply_error(r, "ERR Invalid IDLETIME value, must be >= 0");
                return;
            }
        } else if (tqd_arg_is(&argv[i], "FREQ") && i + 1 < argc) {
            if (!tqd_arg_ll(&argv[++i], &n) || n < 0 || n > 255) {
                tqd_reply_error(r, "ERR Invalid FREQ value, must be >= 0 and <= 255");
                return;
            }
        } else {
            tqd_reply_error(r, "ERR syntax error");
            return;
        }
    }
    const int64_t when = ttl == 0 ? 0 : absttl ? ttl : tqd_unix_ms() + ttl;
    if (when && when <= tqd_unix_ms()) {
        /* Already expired: Redis answers OK and stores nothing. */
        if (replace)
            tqd_keyspace_drop(cl->db, argv[1].p, argv[1].len);
        tqd_reply_simple(r, "OK");
        return;
    }
    if (!replace) {
        tqd_vset *v = tqd_keyspace_get(cl->db, argv[1].p, argv[1].len);
        tqd_vset_release(v);
        if (v) { /* checked before the work; adopt checks again */
            tqd_reply_error(r, "BUSYKEY Target key name already exists.");
            return;
        }
    }
    char *stage = tqd_keyspace_stage_dir();
    if (!stage) {
        tqd_reply_error(r, "ERR out of memory");
        return;
    }
    int u = undump(argv[3].p, argv[3].len, stage);
    tqvec_error err;
    if (u == UNDUMP_BAD_FRAME) {
        tqd_reply_error(r, "ERR DUMP payload version or checksum are wrong");
    } else if (u == UNDUMP_IO) {
        tqd_reply_error(r, "ERR cannot write the restored vector set: %s", strerror(errno));
    } else if (when && tqd_keyspace_stage_expiry(stage, when, &err)) {
        tqd_reply_tqvec_error(r, &err);
    } else {
        int rc = tqd_keyspace_adopt(cl->db, argv[1].p, argv[1].len, stage, replace, &err);
        if (rc == TQVEC_ECORRUPT || rc == TQVEC_ENOTFOUND || rc == TQVEC_EARG)
            tqd_reply_error(r, "ERR Bad data format");
        else if (rc)
            reply_keyspace_error(r, rc, &err);
        else
            tqd_reply_simple(r, "OK");
        free(stage);
        return; /* adopt removed the stage */
    }
    tqd_remove_tree(stage);
    free(stage);
}

/* -------------------------------------------------------- introspection */

/* The set's code layout, as OBJECT ENCODING names it: "tq<bits>+<refine>". */
static void cmd_object(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    const tqd_arg *sub = &argv[1];
    if (tqd_arg_is(sub, "HELP") && argc == 2) {
        static const char *const help[] = {
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>", "    Return the kind of codes the vector set keeps (tq<bits>+<refine data>).",
            "FREQ <key>", "    Not tracked (no LFU eviction): an error, as Redis without an LFU policy.",
            "IDLETIME <key>", "    0: access times are not tracked.",
            "REFCOUNT <key>", "    1.",
        };
        tqd_reply_array(r, sizeof(help) / sizeof(help[0]));
        for (size_t i = 0; i < sizeof(help) / sizeof(help[0]); i++)
            tqd_reply_simple(r, help[i]);
        return;
    }
    if (argc != 3 || !(tqd_arg_is(sub, "ENCODING") || tqd_arg_is(sub, "FREQ") || tqd_arg_is(sub, "IDLETIME") ||
                       tqd_arg_is(sub, "REFCOUNT"))) {
        char name[32];
        snprintf(name, sizeof(name), "%.*s", (int)(sub->len < 24 ? sub->len : 24), sub->p);
        tqd_reply_error(r, "ERR unknown subcommand or wrong number of arguments for '%s'. Try OBJECT HELP.", name);
        return;
    }
    tqd_vset *v = tqd_keyspace_get(cl->db, argv[2].p, argv[2].len);
    if (!v) {
        tqd_reply_null(r);
    } else if (tqd_arg_is(sub, "ENCODING")) {
        char enc[32];
        snprintf(enc, sizeof(enc), "tq%d+%s", v->bits, tqd_refine_name(v->refine));
        tqd_reply_cstr(r, enc);
    } else if (tqd_arg_is(sub, "FREQ")) {
        tqd_reply_error(r, "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
                           "that when switching between policies at runtime LRU and LFU data will take some time "
                           "to adjust.");
    } else {
        tqd_reply_int(r, tqd_arg_is(sub, "REFCOUNT") ? 1 : 0);
    }
    tqd_vset_release(v);
}

static void add_sizes(const char *dir, unsigned long long *total)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (lstat(path, &st))
            continue;
        if (S_ISDIR(st.st_mode))
            add_sizes(path, total);
        else
            *total += (unsigned long long)st.st_size;
    }
    closedir(d);
}

/* MEMORY USAGE key [SAMPLES n]: the bytes of the set's files. Segments are
 * mapped and the log's rows are held in memory, so this is what the set
 * occupies when resident (the key map's 40 bytes a key aside). */
static void cmd_memory(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    long long samples;
    if (tqd_arg_is(&argv[1], "USAGE") && (argc == 3 || (argc == 5 && tqd_arg_is(&argv[3], "SAMPLES")))) {
        if (argc == 5 && (!tqd_arg_ll(&argv[4], &samples) || samples < 0)) {
            tqd_reply_error(r, "ERR value is not an integer or out of range");
            return;
        }
        tqd_vset *v = tqd_keyspace_get(cl->db, argv[2].p, argv[2].len);
        if (!v) {
            tqd_reply_null(r);
            return;
        }
        unsigned long long total = 0;
        pthread_mutex_lock(&v->write_lock); /* the directory stays put meanwhile */
        add_sizes(v->dir, &total);
        pthread_mutex_unlock(&v->write_lock);
        tqd_reply_int(r, (long long)total);
        tqd_vset_release(v);
        return;
    }
    char name[32];
    snprintf(name, sizeof(name), "%.*s", (int)(argv[1].len < 24 ? argv[1].len : 24), argv[1].p);
    tqd_reply_error(r, "ERR unknown subcommand or wrong number of arguments for '%s'. Try MEMORY HELP.", name);
}

const tqd_command tqd_key_commands[] = {
    {"dbsize", cmd_dbsize, 1, false, 0, NULL, TQD_READS},
    {"exists", cmd_exists, -2, false, -1, NULL, TQD_READS},
    {"del", cmd_del, -2, false, -1, NULL, TQD_WRITES},
    {"unlink", cmd_del, -2, false, -1, NULL, TQD_WRITES},
    {"type", cmd_type, 2, false, 1, NULL, TQD_READS},
    {"touch", cmd_touch, -2, false, -1, NULL, TQD_READS},
    {"randomkey", cmd_randomkey, 1, false, 0, NULL, TQD_READS},
    {"keys", cmd_keys, 2, false, 0, NULL, TQD_READS},
    {"scan", cmd_scan, -2, false, 0, NULL, TQD_READS},
    {"flushall", cmd_flush, -1, false, 0, NULL, TQD_WRITES},
    {"flushdb", cmd_flush, -1, false, 0, NULL, TQD_WRITES},
    {"rename", cmd_rename, 3, false, 2, NULL, TQD_WRITES_ONCE},
    {"renamenx", cmd_rename, 3, false, 2, NULL, TQD_WRITES_ONCE},
    {"move", cmd_move, 3, false, 1, NULL, TQD_WRITES_ONCE},
    {"copy", cmd_copy, -3, false, 2, NULL, TQD_WRITES_ONCE},
    {"expire", cmd_expire, -3, false, 1, NULL, TQD_WRITES},
    {"pexpire", cmd_expire, -3, false, 1, NULL, TQD_WRITES},
    {"expireat", cmd_expire, -3, false, 1, NULL, TQD_WRITES},
    {"pexpireat", cmd_expire, -3, false, 1, NULL, TQD_WRITES},
    {"ttl", cmd_ttl, 2, false, 1, NULL, TQD_READS},
    {"pttl", cmd_ttl, 2, false, 1, NULL, TQD_READS},
    {"expiretime", cmd_ttl, 2, false, 1, NULL, TQD_READS},
    {"pexpiretime", cmd_ttl, 2, false, 1, NULL, TQD_READS},
    {"persist", cmd_persist, 2, false, 1, NULL, TQD_WRITES},
    {"dump", cmd_dump, 2, false, 1, NULL, TQD_READS},
    {"restore", cmd_restore, -4, false, 1, NULL, TQD_WRITES},
    {"object", cmd_object, -2, false, 0, NULL, TQD_READS},
    {"memory", cmd_memory, -2, false, 0, NULL, TQD_READS},
};
const size_t tqd_key_command_count = sizeof(tqd_key_commands) / sizeof(tqd_key_commands[0]);
