/*
 * The transaction log: what makes an EXEC of several writes whole after a
 * crash. A set's writes are durable in its own collection's log, but a
 * transaction touching several sets (or mixing VADD with VREM, RENAME...)
 * is several appends to several logs, and a crash between them would
 * leave it in part. So before such an EXEC runs its first write, its
 * queued commands go here; after each command, how far it got; at the
 * end, that it ended. At start, before serving, a transaction that began
 * and did not end is finished from where it stopped (redo): the commands
 * it had done stay done, the rest run now. Each command is safe to run a
 * second time when it was cut off while running (VADD and VREM are
 * upserts and removes, RENAME or MOVE of a key already moved finds no
 * source, COPY ... REPLACE copies the same source again), which is the
 * only command a redo can repeat.
 *
 *   DIR/tqvecd.txlog, records back to back:
 *     u32 payload length, u16 kind, u16 0, u64 transaction id, payload,
 *     u64 XXH3-64 of everything before it in the record
 *   BEGIN   u32 db, u32 n, then n commands: u32 argc, argc x (u32 length, bytes)
 *   DONE    u32 commands done, u32 the client's db after them
 *   END     (empty)
 * A record that does not check ends the reading (a torn tail). The file is
 * emptied at start, once every transaction in it is finished, and while
 * serving whenever it has grown past TXLOG_RESET_BYTES and none is open.
 *
 * Durability: BEGIN is synced before the first write runs unless
 * appendfsync is no (else a power cut could keep some of the writes, each
 * synced by its collection, and lose the record that finishes the rest).
 * DONE is synced after the commands that must not run twice once later
 * ones have (RENAME, MOVE, COPY: the source may exist again), so a power
 * cut repeats only commands a repeat leaves as they were; END is not
 * synced (a finished transaction run again from its last DONE changes
 * nothing).
 */
#include "daemon.h"

#include <xxhash.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { TX_BEGIN = 1, TX_DONE = 2, TX_END = 3 };
#define TXLOG_NAME "tqvecd.txlog"
#define TXLOG_RESET_BYTES ((off_t)4 << 20)
#define TXLOG_MAX_RECORD ((uint32_t)1 << 30)

static struct {
    int fd;
    char *path;
    int fsync;
    uint64_t next_tx;
} tl = {.fd = -1};

static bool put_u32(tqd_buf *b, uint32_t v)
{
    return tqd_buf_append(b, &v, 4);
}

/* Append one record; false on failure (the file is cut back). */
static bool append(uint16_t kind, uint64_t tx, const void *payload, uint32_t len, bool sync)
{
    tqd_buf b = {0};
    uint16_t zero = 0;
    bool ok = put_u32(&b, len) && tqd_buf_append(&b, &kind, 2) && tqd_buf_append(&b, &zero, 2) && tqd_buf_append(&b, &tx, 8) &&
              (len == 0 || tqd_buf_append(&b, payload, len));
    uint64_t sum = ok ? XXH3_64bits(b.p, b.len) : 0;
    ok = ok && tqd_buf_append(&b, &sum, 8);
    off_t at = ok ? lseek(tl.fd, 0, SEEK_END) : -1;
    ok = at >= 0 && tqd_write_all(tl.fd, b.p, b.len);
    ok = ok && (!sync || tl.fsync == TQVEC_FSYNC_NO || fdatasync(tl.fd) == 0);
    if (!ok && at >= 0 && ftruncate(tl.fd, at) != 0)
        tqd_log(TQD_LOG_WARNING, "cannot cut %s back after a failed write: %s", tl.path, strerror(errno));
    tqd_buf_free(&b);
    return ok;
}

/* ----------------------------------------------------------- recovery */

typedef struct pending {
    uint64_t tx;
    const uint8_t *begin; /* its BEGIN payload */
    uint32_t begin_len;
    uint32_t done, db;
    bool ended;
} pending;

/* The commands of a BEGIN payload from command `from` on, run as the
 * client would have run them. false if the payload does not parse. */
static bool redo(const pending *t)
{
    const uint8_t *p = t->begin, *end = t->begin + t->begin_len;
    uint32_t db, n;
    if (end - p < 8)
        return false;
    memcpy(&db, p, 4);
    memcpy(&n, p + 4, 4);
    p += 8;
    tqd_client cl = {.proto = 2, .authed = true, .db = t->done ? (int)t->db : (int)db};
    tqd_buf out = {0};
    tqd_reply r = {.out = &out, .proto = 2};
    bool ok = true;
    for (uint32_t i = 0; i < n && ok; i++) {
        uint32_t argc;
        ok = end - p >= 4;
        if (!ok)
            break;
        memcpy(&argc, p, 4);
        p += 4;
        tqd_arg *argv = argc && argc < (1u << 24) ? calloc(argc, sizeof(*argv)) : NULL;
        ok = argv != NULL;
        for (uint32_t j = 0; ok && j < argc; j++) {
            uint32_t len;
            ok = end - p >= 4 && (memcpy(&len, p, 4), (size_t)(end - p - 4) >= len);
            if (ok) {
                argv[j] = (tqd_arg){(const char *)p + 4, len};
                p += 4 + len;
            }
        }
        if (ok && i >= t->done) {
            out.len = 0;
            tqd_execute(&cl, argv, argc, &r);
        }
        free(argv);
    }
    tqd_buf_free(&out);
    tqd_client_release(&cl);
    return ok;
}

static int recover(const uint8_t *map, size_t size)
{
    pending *txs = NULL;
    size_t ntx = 0, cap = 0, off = 0;
    while (size - off >= 24) {
        uint32_t len;
        uint16_t kind, zero;
        uint64_t tx, sum;
        memcpy(&len, map + off, 4);
        memcpy(&kind, map + off + 4, 2);
        memcpy(&zero, map + off + 6, 2);
        memcpy(&tx, map + off + 8, 8);
        if (len > TXLOG_MAX_RECORD || size - off - 24 < len || zero || kind < TX_BEGIN || kind > TX_END)
            break;
        memcpy(&sum, map + off + 16 + len, 8);
        if (sum != XXH3_64bits(map + off, 16 + len))
            break;
        const uint8_t *payload = map + off + 16;
        off += 24 + len;
        if (kind == TX_BEGIN) {
            if (ntx == cap) {
                cap = cap ? 2 * cap : 16;
                pending *grown = realloc(txs, cap * sizeof(*txs));
                if (!grown) {
                    free(txs);
                    return -1;
                }
                txs = grown;
            }
            txs[ntx++] = (pending){.tx = tx, .begin = payload, .begin_len = len};
            continue;
        }
        for (size_t i = ntx; i-- > 0;)
            if (txs[i].tx == tx) {
                if (kind == TX_END)
                    txs[i].ended = true;
                else if (len == 8)
                    memcpy(&txs[i].done, payload, 4), memcpy(&txs[i].db, payload + 4, 4);
                break;
            }
    }
    if (off < size)
        tqd_log(TQD_LOG_WARNING, "%s: %zu bytes at its end do not check (cut by a crash); ignored", tl.path,
                size - off);
    int rc = 0;
    for (size_t i = 0; i < ntx; i++) {
        if (txs[i].ended)
            continue;
        tqd_log(TQD_LOG_WARNING, "finishing transaction %llu, interrupted after %u of its commands",
                (unsigned long long)txs[i].tx, txs[i].done);
        if (!redo(&txs[i])) {
            tqd_log(TQD_LOG_WARNING, "%s: transaction %llu's commands do not parse", tl.path,
                    (unsigned long long)txs[i].tx);
            rc = -1;
        }
    }
    free(txs);
    return rc;
}

int tqd_txlog_open(const char *dir, int fsync_policy)
{
    tl.fsync = fsync_policy;
    size_t n = strlen(dir) + sizeof(TXLOG_NAME) + 2;
    if (!(tl.path = malloc(n)))
        return -1;
    snprintf(tl.path, n, "%s/" TXLOG_NAME, dir);
    tl.fd = open(tl.path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct stat st;
    if (tl.fd < 0 || fstat(tl.fd, &st)) {
        tqd_log(TQD_LOG_WARNING, "cannot open %s: %s", tl.path, strerror(errno));
        return -1;
    }
    int rc = 0;
    if (st.st_size > 0) {
        uint8_t *map = malloc((size_t)st.st_size);
        ssize_t got = map ? pread(tl.fd, map, (size_t)st.st_size, 0) : -1;
        rc = got == st.st_size ? recover(map, (size_t)st.st_size) : -1;
        free(map);
        if (rc)
            tqd_log(TQD_LOG_WARNING, "cannot finish the transactions in %s: not starting", tl.path);
    }
    /* Everything in it is done: start empty. */
    if (!rc && (ftruncate(tl.fd, 0) || (tl.fsync != TQVEC_FSYNC_NO && fdatasync(tl.fd)))) {
        tqd_log(TQD_LOG_WARNING, "cannot empty %s: %s", tl.path, strerror(errno));
        rc = -1;
    }
    return rc;
}

void tqd_txlog_close(void)
{
    if (tl.fd >= 0)
        close(tl.fd);
    tl.fd = -1;
    free(tl.path);
    tl.path = NULL;
}

/* -------------------------------------------------------------- logging */

uint64_t tqd_txlog_begin(int db, const tqd_queued *q, size_t n)
{
    if (tl.fd < 0)
        return 0;
    tqd_buf b = {0};
    bool ok = put_u32(&b, (uint32_t)db) && put_u32(&b, (uint32_t)n);
    for (size_t i = 0; ok && i < n; i++) {
        ok = put_u32(&b, (uint32_t)q[i].argc);
        for (size_t j = 0; ok && j < q[i].argc; j++)
            ok = put_u32(&b, (uint32_t)q[i].argv[j].len) && tqd_buf_append(&b, q[i].argv[j].p, q[i].argv[j].len);
    }
    uint64_t tx = ++tl.next_tx;
    ok = ok && b.len <= TXLOG_MAX_RECORD && append(TX_BEGIN, tx, b.p, (uint32_t)b.len, true);
    tqd_buf_free(&b);
    return ok ? tx : 0;
}

void tqd_txlog_progress(uint64_t tx, size_t done, int db, bool sync)
{
    uint32_t p[2] = {(uint32_t)done, (uint32_t)db};
    if (!append(TX_DONE, tx, p, sizeof(p), sync))
        tqd_log(TQD_LOG_WARNING, "%s: cannot note a transaction's progress: %s", tl.path, strerror(errno));
}

void tqd_txlog_end(uint64_t tx)
{
    if (!append(TX_END, tx, NULL, 0, false))
        tqd_log(TQD_LOG_WARNING, "%s: cannot note a transaction's end: %s", tl.path, strerror(errno));
    struct stat st;
    /* Called with no other transaction open (EXEC runs alone). */
    if (fstat(tl.fd, &st) == 0 && st.st_size > TXLOG_RESET_BYTES && ftruncate(tl.fd, 0) != 0)
        tqd_log(TQD_LOG_WARNING, "cannot empty %s: %s", tl.path, strerror(errno));
}
