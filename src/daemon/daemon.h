/*
 * tqvecd: the k-NN daemon. It speaks RESP2/RESP3 so every Redis client can
 * talk to it, and serves each key as a tqvec collection with the commands
 * of Redis 8 vector sets. It is glue over tqvec.h, the way Redis's vset.c
 * sits on hnsw.c: nothing here knows how vectors are stored.
 *
 * Pieces, one file each:
 *   resp      request parsing (multibulk and inline) and reply encoding
 *   server    the io_uring loop, connections, the worker pool, shutdown
 *   keyspace  (database, key) -> open collection, directories under --dir
 *   commands  the command table, the server commands (PING, INFO, ...) and
 *             transactions
 *   keys      the generic key commands (DEL, RENAME, EXPIRE, DUMP, ...)
 *   txlog     the transaction log that finishes a crashed EXEC at start
 *   vset      the vector-set commands (VADD, VSIM, ...) and our extensions
 *   config    options from the command line and a config file
 *
 * Threads: one loop thread does all socket I/O; a connection's parsed
 * requests run on a worker, one connection on one worker at a time (so a
 * pipeline's replies keep their order) while other connections run on the
 * other workers. While a worker owns a connection the loop does not touch
 * its buffers; ownership passes back through a queue and an eventfd.
 */
#ifndef TQD_DAEMON_H
#define TQD_DAEMON_H

#include "tqvec.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- config */

#define TQD_DEFAULT_PORT 6380
#define TQD_MIN_CLIENTS 1
#define TQD_DEFAULT_CLIENTS 10000
#define TQD_MAX_CLIENTS 100000
#define TQD_MIN_REQUEST_BYTES 1024
#define TQD_DEFAULT_REQUEST_BYTES (64u << 20)
#define TQD_MAX_REQUEST_BYTES (1u << 30)
#define TQD_DEFAULT_ARGS (1u << 20)
#define TQD_MIN_THREADS 1
#define TQD_MAX_THREADS 256
#define TQD_DEFAULT_COLLECTIONS 1024
#define TQD_MAX_COLLECTIONS 65536
#define TQD_DEFAULT_DATABASES 16
#define TQD_MAX_DATABASES 65536
/* A key becomes a directory name (hex-encoded), which file systems limit
 * to 255 bytes. */
#define TQD_MAX_KEY_BYTES 100
/* Re-rank depth of VSIM when it gives no EF: k * this many candidates are
 * re-scored on the refine data. */
#define TQD_DEFAULT_RERANK 16
/* The recall@10 a VSIM without NPROBE or RECALL asks of a set's
 * partitioned segments (their calibration picks the partitions to scan;
 * segments not partitioned are scanned whole). Above 0.95 by the largest
 * shortfall measured on the shared datasets (0.02), so that the default
 * reaches 0.95 on each. */
#define TQD_DEFAULT_RECALL 0.97f

enum { TQD_LOG_DEBUG, TQD_LOG_VERBOSE, TQD_LOG_NOTICE, TQD_LOG_WARNING };

typedef struct tqd_config {
    char *dir;
    char *bind;
    int port;
    char *unixsocket;
    int threads;
    char *requirepass;
    int appendfsync;          /* tqvec_fsync */
    int maxclients;
    size_t max_request_bytes;
    size_t max_args;
    int max_collections;
    int databases;            /* SELECT 0 .. databases - 1 */
    uint32_t segment_rows;    /* 0: the library's default */
    uint32_t partition_rows;  /* sealed segments this large are partitioned; 0: the library's default */
    uint32_t merge_factor;    /* sealed segments merged this many of a size at a time; 0: the library's default */
    int loglevel;
    bool daemonize;
    char *pidfile;
    bool protected_mode;
} tqd_config;

/* Defaults, then argv (and a --config file where it appears). On error
 * prints the reason and returns nonzero. */
int tqd_config_parse(tqd_config *cfg, int argc, char **argv);
void tqd_config_free(tqd_config *cfg);
const char *tqd_fsync_name(int policy);
/* Every option with its current value, for CONFIG GET. */
#define TQD_CONFIG_ITEMS 24
typedef struct tqd_config_item {
    const char *name;
    char value[1024];
} tqd_config_item;
size_t tqd_config_items(const tqd_config *cfg, tqd_config_item *items);
/* CONFIG SET: the options that can change while serving (loglevel,
 * maxclients); only checked unless apply. -1 with why for a bad value or
 * an option read only at start, -2 for an unknown one. */
int tqd_config_set(tqd_config *cfg, const char *name, const char *value, bool apply, char *why, size_t cap);

void tqd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
extern int tqd_loglevel;

/* ------------------------------------------------------------------ resp */

typedef struct tqd_buf {
    char *p;
    size_t len, cap;
} tqd_buf;

/* Grow to hold `more` bytes beyond len; false when out of memory. */
bool tqd_buf_reserve(tqd_buf *b, size_t more);
/* Append n bytes; false when out of memory. */
bool tqd_buf_append(tqd_buf *b, const void *p, size_t n);
/* write(2) until all n bytes are out (EINTR retried); false on error. */
bool tqd_write_all(int fd, const void *p, size_t n);
void tqd_buf_free(tqd_buf *b);

typedef struct tqd_arg {
    const char *p;    /* into the connection's read buffer; not NUL-terminated */
    size_t len;
} tqd_arg;

enum { TQD_PARSE_OK, TQD_PARSE_MORE, TQD_PARSE_ERROR };

typedef struct tqd_request {
    size_t argc;
    tqd_arg *argv;    /* argc entries, owned by the parser's caller */
    size_t args_cap;
    size_t consumed;  /* bytes of the buffer this request used */
    const char *error; /* TQD_PARSE_ERROR: the Redis-style protocol error */
} tqd_request;

/* Parse one request at buf[0, len): TQD_PARSE_OK fills req, MORE means it
 * is incomplete, ERROR means the stream cannot be trusted any more. No
 * declared length is believed beyond max_bytes or max_args. */
int tqd_parse(const char *buf, size_t len, size_t max_bytes, size_t max_args, tqd_request *req);

/* Replies, encoded for the client's protocol (2 or 3) into out. Allocation
 * failure sets oom and drops the reply; the connection is then closed. */
typedef struct tqd_reply {
    tqd_buf *out;
    int proto;
    bool oom;
} tqd_reply;

void tqd_reply_simple(tqd_reply *r, const char *s);
void tqd_reply_error(tqd_reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tqd_reply_int(tqd_reply *r, long long v);
void tqd_reply_bulk(tqd_reply *r, const char *p, size_t n);
void tqd_reply_cstr(tqd_reply *r, const char *s);
void tqd_reply_null(tqd_reply *r);        /* RESP2 $-1 */
void tqd_reply_null_array(tqd_reply *r);  /* RESP2 *-1 */
void tqd_reply_array(tqd_reply *r, size_t n);
void tqd_reply_map(tqd_reply *r, size_t pairs); /* RESP2: an array of 2n */
void tqd_reply_double(tqd_reply *r, double v);  /* RESP2: a bulk string */
void tqd_reply_bool(tqd_reply *r, bool v);      /* RESP2: an integer */
/* The error for a tqvec status, "ERR <message>". */
void tqd_reply_tqvec_error(tqd_reply *r, const tqvec_error *e);

/* -------------------------------------------------------------- keyspace */

/* How a set's vectors arrive, when not at the collection's dimension:
 * REDUCE (VADD ... REDUCE dim: a seeded random projection from input_dim
 * down to the collection's) or one dimension (padded with a zero, since a
 * rotation needs two). Fixed when the set is created. */
enum { TQD_SHAPE_PLAIN = 0, TQD_SHAPE_PAD = 1, TQD_SHAPE_REDUCE = 2 };
typedef struct tqd_shape {
    uint32_t kind;
    uint32_t input_dim;       /* PAD: 1; REDUCE: the vectors' dimension */
    uint64_t seed;            /* REDUCE: the projection's */
} tqd_shape;

/* A key's collection, shared by reference: commands hold one while they
 * use it, so DEL can unlink a key whose collection a search still reads. */
typedef struct tqd_vset {
    char name[TQD_MAX_KEY_BYTES + 1]; /* NUL-terminated copy (keys may hold NULs) */
    size_t name_len;
    int db;
    char *dir;
    int64_t expire_ms;        /* Unix ms when the key goes; 0: never */
    tqd_shape shape;
    _Atomic(float *) projection; /* REDUCE: built on first use, freed with the set */
    uint64_t uid;             /* distinct per set while the daemon runs */
    tqvec_collection *c;
    /* Serializes read-modify-write commands on this key (VADD keeping old
     * attributes, VREM of the last element dropping the key). */
    pthread_mutex_t write_lock;
    int refs;                 /* under the keyspace lock */
    bool dropped;             /* unlinked: delete the files on last release */
    uint32_t dim;
    int metric, bits, refine;
} tqd_vset;

/* Results of keyspace calls beside the tqvec codes. */
enum { TQD_NO_KEY = 100, TQD_KEY_EXISTS = 101 };

/* Lock the data directory, remove leftovers of interrupted drops and
 * copies, open every collection in it, start the expiry sweeper. */
int tqd_keyspace_open(const tqd_config *cfg);
/* Sync and close everything (at shutdown, with no command running). */
void tqd_keyspace_close(void);
/* The key's collection in database db with a reference, or NULL if there
 * is none (or it has expired). */
tqd_vset *tqd_keyspace_get(int db, const char *name, size_t len);
/* Get, or create with opts if absent (*created tells which). */
int tqd_keyspace_get_or_create(int db, const char *name, size_t len, const tqvec_collection_options *opts,
                               const tqd_shape *shape, tqd_vset **out, bool *created, tqvec_error *err);
void tqd_vset_release(tqd_vset *v);
/* Unlink the key: new commands no longer find it; its files go when the
 * last reference is released. Returns false if it did not exist. */
bool tqd_keyspace_drop(int db, const char *name, size_t len);
/* Drop only if v is still the key's collection and holds no element. */
void tqd_keyspace_drop_if_empty(tqd_vset *v);
/* Drop every key of db (all databases when db < 0); returns how many. */
size_t tqd_keyspace_flush(int db);
/* Keys of db (all when db < 0); *expires (may be NULL) those with an expiry. */
size_t tqd_keyspace_count(int db, size_t *expires);
/* Names of every key of db (all when db < 0), in a stable order (database,
 * then bytes), copied: free with tqd_names_free. */
typedef struct tqd_names {
    size_t n;
    char **name;
    size_t *len;
    int *db;
} tqd_names;
int tqd_keyspace_names(int db, tqd_names *out);
void tqd_names_free(tqd_names *n);
/* Drop every key past its time now (the sweeper does it ten times a
 * second; EXEC first, so a watched key that expired counts as changed). */
void tqd_keyspace_expire_due(void);
/* Set (when_ms > 0, Unix ms) or clear (0) the key's expiry, durably. */
int tqd_keyspace_set_expiry(tqd_vset *v, int64_t when_ms, tqvec_error *err);
int64_t tqd_keyspace_expiry(tqd_vset *v);
/* Rename key (db, name) to (to_db, to), the open collection moved in
 * place, its expiry kept. TQD_NO_KEY, TQD_KEY_EXISTS (the target exists
 * and replace is false), or a tqvec error. */
int tqd_keyspace_rename(int db, const char *name, size_t len, int to_db, const char *to, size_t to_len,
                        bool replace, tqvec_error *err);
/* Copy key (db, name) to (to_db, to): a backup of its collection, opened
 * as a new set; results as for rename. */
int tqd_keyspace_copy(int db, const char *name, size_t len, int to_db, const char *to, size_t to_len,
                      bool replace, tqvec_error *err);
/* A fresh directory name under DIR for a copy being built (malloc'd);
 * leftovers are removed at start. */
char *tqd_keyspace_stage_dir(void);
/* A consistent copy of v's collection and shape into stage (a new
 * directory), with its expiry when with_expiry (COPY does, DUMP does not). */
int tqd_keyspace_backup(tqd_vset *v, const char *stage, bool with_expiry, tqvec_error *err);
/* Set the expiry of a staged copy before it is adopted (its shape kept). */
int tqd_keyspace_stage_expiry(const char *stage, int64_t when_ms, tqvec_error *err);
/* The name of the daemon's file beside a collection (for DUMP's payload). */
#define TQD_META_FILE "tqvecd.meta"
/* Make the collection staged in directory stage key (db, name): renamed
 * into place and opened with every byte verified. The stage is gone
 * afterwards either way. Results as for rename. */
int tqd_keyspace_adopt(int db, const char *name, size_t len, const char *stage, bool replace, tqvec_error *err);
void tqd_remove_tree(const char *path);
/* Wall-clock time in Unix ms (expiries). */
int64_t tqd_unix_ms(void);
/* Seal and sync every collection (SAVE); the first failure is returned. */
int tqd_keyspace_save(tqvec_error *err);
const char *tqd_metric_name(int metric);
const char *tqd_refine_name(int refine);

/* ---------------------------------------------------------------- server */

/* A command queued by MULTI: its arguments copied out of the read buffer. */
typedef struct tqd_queued {
    size_t argc;
    tqd_arg *argv;
    char *bytes;
} tqd_queued;

typedef struct tqd_client {
    uint64_t id;
    int proto;                /* 2 or 3 */
    int db;                   /* SELECT */
    bool authed;
    bool close_after_reply;
    char name[128];
    char addr[64];
    uint64_t created_ms;
    /* MULTI ... EXEC: the commands queued since MULTI, and whether one of
     * them was refused (EXEC then runs none: EXECABORT). */
    bool multi, multi_refused;
    tqd_queued *queued;
    size_t nqueued, queued_cap;
    /* WATCH: each watched key's hash and the version it had then, and the
     * FLUSHALL count then; EXEC runs nothing if any moved. */
    struct tqd_watch *watched;
    size_t nwatched, watched_cap;
    uint64_t watch_flushes;
} tqd_client;

/* Free what a client holds (its queued transaction); when it goes away. */
void tqd_client_release(tqd_client *cl);

/* Global state the commands read. */
typedef struct tqd_server {
    tqd_config cfg;
    uint64_t start_ms;
    _Atomic uint64_t commands, connections_received, rejected_connections, clients;
    _Atomic uint64_t net_in, net_out;
    /* Pipelined VSIMs answered by shared searches: searches, queries. */
    _Atomic uint64_t vsim_runs, vsim_run_queries;
    _Atomic int shutdown_requested;
    _Atomic int bgsave_running;
    _Atomic uint64_t last_save_s;
    const char *io_backend;
} tqd_server;

extern tqd_server tqd;

uint64_t tqd_now_ms(void);
/* Wake the loop (after SHUTDOWN). */
void tqd_server_wake(void);
/* The daemon: returns the process exit status. */
int tqd_main(int argc, char **argv);

/* -------------------------------------------------------------- commands */

/* The transaction log (txlog.c): EXECs of several writes, finished after
 * a crash. Open finishes what a crash interrupted (before serving). */
int tqd_txlog_open(const char *dir, int fsync_policy);
void tqd_txlog_close(void);
/* Log a transaction's commands before they run: its id, 0 if it could not
 * be logged (then it must not run). */
uint64_t tqd_txlog_begin(int db, const tqd_queued *q, size_t n);
/* done commands have run, leaving the client in db; sync: make it durable
 * now (after a command that must not run twice). */
void tqd_txlog_progress(uint64_t tx, size_t done, int db, bool sync);
void tqd_txlog_end(uint64_t tx);

/* A key may have changed other than by a command naming it (it expired):
 * WATCH must see it. */
void tqd_key_changed(int db, const char *name, size_t len);

/* Run one request; its reply goes to r. */
void tqd_execute(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r);

/* Pipelined requests of one command that can be answered together (VSIM:
 * one search pass for several queries). A worker parses the complete
 * requests that follow one of these (tqd_parse_run), up to TQD_MAX_RUN in
 * all, and tqd_execute_run answers as many of them as it can together, in
 * order; nothing waits for requests that have not arrived, so a lone
 * request is answered as before. */
#define TQD_MAX_RUN 32

/* After reqs[0] (parsed, not empty), parse the complete requests at
 * buf[0, len) that name the same command, when that command answers runs,
 * into reqs[1..cap): returns how many. Stops at anything else. */
size_t tqd_parse_run(const char *buf, size_t len, size_t max_bytes, size_t max_args, tqd_request *reqs, size_t cap);
/* Run reqs[0] and, when its command answers runs, as many of the n - 1
 * after it as it can answer together; replies go to r in request order.
 * Returns how many requests were answered (at least 1). */
size_t tqd_execute_run(tqd_client *cl, const tqd_request *reqs, size_t n, tqd_reply *r);

typedef void (*tqd_command_fn)(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r);
/* Answer reqs[0..n) (all this command, n >= 2) or a prefix of them, at
 * least reqs[0]; returns how many. */
typedef size_t (*tqd_command_run_fn)(tqd_client *cl, const tqd_request *reqs, size_t n, tqd_reply *r);

/* What a command does to the keyspace, for the transaction log. */
enum {
    TQD_READS = 0,
    TQD_WRITES = 1,      /* changes keys; running it again changes nothing more */
    TQD_WRITES_ONCE = 2, /* changes keys; must not run again once later commands have (RENAME, MOVE, COPY) */
};

typedef struct tqd_command {
    const char *name;
    tqd_command_fn fn;
    int arity;                /* as Redis: n exact, -n at least n */
    bool no_auth;             /* allowed before AUTH */
    int keys;                 /* 0: none, 1: the first argument, -1: every argument */
    tqd_command_run_fn run;   /* optional: answers pipelined runs together */
    int writes;               /* TQD_READS, TQD_WRITES or TQD_WRITES_ONCE */
} tqd_command;

/* The vector-set commands, for the command table. */
extern const tqd_command tqd_vset_commands[];
extern const size_t tqd_vset_command_count;
/* The generic key commands (keys.c). */
extern const tqd_command tqd_key_commands[];
extern const size_t tqd_key_command_count;
/* A database index argument; false after replying with the error. */
bool tqd_db_index(const tqd_arg *a, int *db, tqd_reply *r);

/* Argument helpers. */
bool tqd_arg_is(const tqd_arg *a, const char *word);
bool tqd_arg_ll(const tqd_arg *a, long long *v);
bool tqd_arg_double(const tqd_arg *a, double *v);
/* Lowercase copy of an argument (a command or option name), bounded and
 * NUL-terminated, for messages. */
void tqd_arg_lower(const tqd_arg *a, char *out, size_t cap);
/* Glob match as Redis's KEYS/SCAN MATCH: * ? [abc] [^a-z] and \ escapes. */
bool tqd_glob(const char *pat, size_t plen, const char *s, size_t slen);

#endif
