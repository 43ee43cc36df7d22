/*
 * Daemon options, from the command line and from a config file in the
 * redis.conf style ("port 6380", one per line, '#' comments). Both go
 * through one table, so every option has one name, one parser and one
 * range check. Later settings win: a --config file's lines apply where
 * --config appears among the arguments. Also the log writer.
 */
#include "daemon.h"
#include "tq_revision.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int tqd_loglevel = TQD_LOG_NOTICE;

void tqd_log(int level, const char *fmt, ...)
{
    if (level < __atomic_load_n(&tqd_loglevel, __ATOMIC_RELAXED)) /* CONFIG SET may change it */
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char when[64];
    strftime(when, sizeof(when), "%d %b %Y %H:%M:%S", &tm);
    /* One write per line, so lines from several threads do not interleave. */
    fprintf(stderr, "%d:M %s.%03d %c %s\n", (int)getpid(), when, (int)(tv.tv_usec / 1000), ".-*#"[level], msg);
}

const char *tqd_fsync_name(int policy)
{
    switch (policy) {
    case TQVEC_FSYNC_ALWAYS:
        return "always";
    case TQVEC_FSYNC_NO:
        return "no";
    default:
        return "everysec";
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: tqvecd [--dir DATA] [--bind ADDR] [--port N] [--unixsocket PATH] [--threads N]\n"
            "              [--requirepass PASS] [--appendfsync always|everysec|no] [--maxclients N]\n"
            "              [--max-request-bytes N] [--max-args N] [--max-collections N] [--segment-rows N]\n"
            "              [--partition-rows N|never] [--merge-factor N|never]\n"
            "              [--databases N]\n"
            "              [--loglevel debug|verbose|notice|warning] [--daemonize yes|no] [--pidfile PATH]\n"
            "              [--protected-mode yes|no] [--config FILE] | --version\n"
            "Serves every key as a vector set (Redis 8 vector-set commands) over RESP2/RESP3.\n"
            "Defaults: --dir tqvecd-data --bind 127.0.0.1 --port %d --threads <cores> --appendfsync everysec\n",
            TQD_DEFAULT_PORT);
}

static int set_string(char **dst, const char *v)
{
    char *p = strdup(v);
    if (!p)
        return -1;
    free(*dst);
    *dst = p;
    return 0;
}

static int set_long(const char *name, const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi) {
        fprintf(stderr, "tqvecd: %s must be an integer in %lld..%lld, not '%s'\n", name, lo, hi, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int set_yesno(const char *name, const char *v, bool *out)
{
    if (!strcasecmp(v, "yes") || !strcasecmp(v, "no")) {
        *out = !strcasecmp(v, "yes");
        return 0;
    }
    fprintf(stderr, "tqvecd: %s must be yes or no, not '%s'\n", name, v);
    return -1;
}

static int load_file(tqd_config *cfg, const char *path, int depth);

/* One option by name (without dashes). */
static int apply(tqd_config *cfg, const char *name, const char *v, int depth)
{
    long long n;
    if (!strcmp(name, "dir"))
        return set_string(&cfg->dir, v);
    if (!strcmp(name, "bind"))
        return set_string(&cfg->bind, v);
    if (!strcmp(name, "unixsocket"))
        return set_string(&cfg->unixsocket, v);
    if (!strcmp(name, "requirepass"))
        return set_string(&cfg->requirepass, v);
    if (!strcmp(name, "pidfile"))
        return set_string(&cfg->pidfile, v);
    if (!strcmp(name, "port"))
        return set_long(name, v, 0, 65535, &n) ? -1 : (cfg->port = (int)n, 0);
    if (!strcmp(name, "threads"))
        return set_long(name, v, TQD_MIN_THREADS, TQD_MAX_THREADS, &n) ? -1 : (cfg->threads = (int)n, 0);
    if (!strcmp(name, "maxclients"))
        return set_long(name, v, TQD_MIN_CLIENTS, TQD_MAX_CLIENTS, &n) ? -1 : (cfg->maxclients = (int)n, 0);
    if (!strcmp(name, "max-request-bytes"))
        return set_long(name, v, TQD_MIN_REQUEST_BYTES, TQD_MAX_REQUEST_BYTES, &n)
                   ? -1
                   : (cfg->max_request_bytes = (size_t)n, 0);
    if (!strcmp(name, "max-args"))
        return set_long(name, v, 16, 1 << 24, &n) ? -1 : (cfg->max_args = (size_t)n, 0);
    if (!strcmp(name, "segment-rows"))
        return set_long(name, v, TQVEC_MIN_SEGMENT_ROWS, TQVEC_MAX_SEGMENT_ROWS, &n)
                   ? -1
                   : (cfg->segment_rows = (uint32_t)n, 0);
    if (!strcmp(name, "partition-rows")) {
        if (!strcmp(v, "never")) {
            cfg->partition_rows = TQVEC_PARTITION_NEVER;
            return 0;
        }
        return set_long(name, v, 1, TQVEC_MAX_SEGMENT_ROWS, &n) ? -1 : (cfg->partition_rows = (uint32_t)n, 0);
    }
    if (!strcmp(name, "merge-factor")) {
        if (!strcmp(v, "never")) {
            cfg->merge_factor = TQVEC_MERGE_NEVER;
            return 0;
        }
        return set_long(name, v, 2, 1024, &n) ? -1 : (cfg->merge_factor = (uint32_t)n, 0);
    }
    if (!strcmp(name, "databases"))
        return set_long(name, v, 1, TQD_MAX_DATABASES, &n) ? -1 : (cfg->databases = (int)n, 0);
    if (!strcmp(name, "max-collections"))
        return set_long(name, v, 1, TQD_MAX_COLLECTIONS, &n) ? -1 : (cfg->max_collections = (int)n, 0);
    if (!strcmp(name, "daemonize"))
        return set_yesno(name, v, &cfg->daemonize);
    if (!strcmp(name, "protected-mode"))
        return set_yesno(name, v, &cfg->protected_mode);
    if (!strcmp(name, "appendfsync")) {
        if (!strcmp(v, "always"))
            cfg->appendfsync = TQVEC_FSYNC_ALWAYS;
        else if (!strcmp(v, "everysec"))
            cfg->appendfsync = TQVEC_FSYNC_EVERYSEC;
        else if (!strcmp(v, "no"))
            cfg->appendfsync = TQVEC_FSYNC_NO;
        else {
            fprintf(stderr, "tqvecd: appendfsync must be always, everysec or no, not '%s'\n", v);
            return -1;
        }
        return 0;
    }
    if (!strcmp(name, "loglevel")) {
        static const char *const levels[] = {"debug", "verbose", "notice", "warning"};
        for (int i = 0; i < 4; i++)
            if (!strcmp(v, levels[i])) {
                cfg->loglevel = tqd_loglevel = i;
                return 0;
            }
        fprintf(stderr, "tqvecd: loglevel must be debug, verbose, notice or warning, not '%s'\n", v);
        return -1;
    }
    if (!strcmp(name, "config"))
        return load_file(cfg, v, depth + 1);
    fprintf(stderr, "tqvecd: unknown option '%s'\n", name);
    return -1;
}

static int load_file(tqd_config *cfg, const char *path, int depth)
{
    if (depth > 4) {
        fprintf(stderr, "tqvecd: config files include each other too deeply at %s\n", path);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "tqvecd: cannot read config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int rc = 0, lineno = 0;
    while (!rc && fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line + strspn(line, " \t");
        p[strcspn(p, "\r\n")] = 0;
        if (!*p || *p == '#')
            continue;
        char *name = p;
        p += strcspn(p, " \t");
        if (*p)
            *p++ = 0;
        p += strspn(p, " \t");
        size_t n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            p[--n] = 0;
        if (n >= 2 && (p[0] == '"' || p[0] == '\'') && p[n - 1] == p[0]) {
            p[n - 1] = 0;
            p++;
        }
        if ((rc = apply(cfg, name, p, depth)))
            fprintf(stderr, "tqvecd: at %s line %d\n", path, lineno);
    }
    fclose(f);
    return rc;
}

int tqd_config_parse(tqd_config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->port = TQD_DEFAULT_PORT;
    cfg->threads = cores < 1 ? 1 : cores > TQD_MAX_THREADS ? TQD_MAX_THREADS : (int)cores;
    cfg->appendfsync = TQVEC_FSYNC_EVERYSEC;
    cfg->maxclients = TQD_DEFAULT_CLIENTS;
    cfg->max_request_bytes = TQD_DEFAULT_REQUEST_BYTES;
    cfg->max_args = TQD_DEFAULT_ARGS;
    cfg->max_collections = TQD_DEFAULT_COLLECTIONS;
    cfg->databases = TQD_DEFAULT_DATABASES;
    cfg->loglevel = tqd_loglevel = TQD_LOG_NOTICE;
    cfg->protected_mode = true;
    if (set_string(&cfg->dir, "tqvecd-data") || set_string(&cfg->bind, "127.0.0.1"))
        return -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 1;
        }
        if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--version")) {
            printf("tqvecd %s (revision %s, simd %s)\n", tqvec_version(), TQ_REVISION, tqvec_simd_level());
            return 1;
        }
        if (strncmp(argv[i], "--", 2) || i + 1 >= argc) {
            fprintf(stderr, "tqvecd: expected --option value, got '%s'\n", argv[i]);
            usage();
            return -1;
        }
        if (apply(cfg, argv[i] + 2, argv[i + 1], 0))
            return -1;
        i++;
    }
    if (cfg->port == 0 && !cfg->unixsocket) {
        fprintf(stderr, "tqvecd: --port 0 without --unixsocket leaves nothing to listen on\n");
        return -1;
    }
    return 0;
}

static const char *const level_names[] = {"debug", "verbose", "notice", "warning"};

size_t tqd_config_items(const tqd_config *cfg, tqd_config_item *items)
{
    size_t n = 0;
#define ITEM(key, ...) (items[n].name = key, snprintf(items[n].value, sizeof(items[n].value), __VA_ARGS__), n++)
    ITEM("port", "%d", cfg->port);
    ITEM("bind", "%s", cfg->bind ? cfg->bind : "");
    ITEM("unixsocket", "%s", cfg->unixsocket ? cfg->unixsocket : "");
    ITEM("dir", "%s", cfg->dir);
    ITEM("threads", "%d", cfg->threads);
    ITEM("io-threads", "%d", cfg->threads);
    ITEM("requirepass", "%s", cfg->requirepass ? cfg->requirepass : "");
    ITEM("appendonly", "yes");
    ITEM("appendfsync", "%s", tqd_fsync_name(cfg->appendfsync));
    ITEM("save", "%s", "");
    ITEM("databases", "%d", cfg->databases);
    ITEM("maxclients", "%d", __atomic_load_n(&cfg->maxclients, __ATOMIC_RELAXED));
    ITEM("max-request-bytes", "%zu", cfg->max_request_bytes);
    ITEM("proto-max-bulk-len", "%zu", cfg->max_request_bytes);
    ITEM("max-args", "%zu", cfg->max_args);
    ITEM("max-collections", "%d", cfg->max_collections);
    ITEM("segment-rows", "%u", cfg->segment_rows ? cfg->segment_rows : (uint32_t)TQVEC_DEFAULT_SEGMENT_ROWS);
    if (cfg->partition_rows == TQVEC_PARTITION_NEVER)
        ITEM("partition-rows", "%s", "never");
    else
        ITEM("partition-rows", "%u", cfg->partition_rows ? cfg->partition_rows : (uint32_t)TQVEC_DEFAULT_PARTITION_ROWS);
    if (cfg->merge_factor == TQVEC_MERGE_NEVER)
        ITEM("merge-factor", "%s", "never");
    else
        ITEM("merge-factor", "%u", cfg->merge_factor ? cfg->merge_factor : (uint32_t)TQVEC_DEFAULT_MERGE_FACTOR);
    ITEM("loglevel", "%s", level_names[__atomic_load_n(&tqd_loglevel, __ATOMIC_RELAXED) & 3]);
    ITEM("daemonize", "%s", cfg->daemonize ? "yes" : "no");
    ITEM("pidfile", "%s", cfg->pidfile ? cfg->pidfile : "");
    ITEM("protected-mode", "%s", cfg->protected_mode ? "yes" : "no");
#undef ITEM
    return n;
}

int tqd_config_set(tqd_config *cfg, const char *name, const char *v, bool apply, char *why, size_t cap)
{
    if (!strcasecmp(name, "loglevel")) {
        for (int i = 0; i < 4; i++)
            if (!strcasecmp(v, level_names[i])) {
                if (apply) {
                    __atomic_store_n(&tqd_loglevel, i, __ATOMIC_RELAXED);
                    __atomic_store_n(&cfg->loglevel, i, __ATOMIC_RELAXED);
                }
                return 0;
            }
        snprintf(why, cap, "argument(s) must be one of the following: debug, verbose, notice, warning");
        return -1;
    }
    if (!strcasecmp(name, "maxclients")) {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end || n < TQD_MIN_CLIENTS || n > TQD_MAX_CLIENTS) {
            snprintf(why, cap, "argument must be between %d and %d inclusive", TQD_MIN_CLIENTS, TQD_MAX_CLIENTS);
            return -1;
        }
        if (apply)
            __atomic_store_n(&cfg->maxclients, (int)n, __ATOMIC_RELAXED);
        return 0;
    }
    tqd_config_item items[TQD_CONFIG_ITEMS];
    size_t n = tqd_config_items(cfg, items);
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(name, items[i].name)) {
            snprintf(why, cap, "tqvecd reads it at start only; restart with --%s", name);
            return -1;
        }
    snprintf(why, cap, "unknown option");
    return -2;
}

void tqd_config_free(tqd_config *cfg)
{
    free(cfg->dir);
    free(cfg->bind);
    free(cfg->unixsocket);
    free(cfg->requirepass);
    free(cfg->pidfile);
    memset(cfg, 0, sizeof(*cfg));
}
