/*
 * The command table and the server commands: connection (PING, HELLO,
 * AUTH, ...), keyspace (DEL, EXISTS, SCAN, ...), persistence (SAVE,
 * BGSAVE) and introspection (INFO, COMMAND, CONFIG GET). The vector-set
 * commands live with the vector sets.
 *
 * Replies and error strings are Redis's, word for word where a client may
 * test them (NOAUTH, WRONGPASS, "wrong number of arguments", "unknown
 * command"), so clients and their error handling work unchanged. SELECT
 * picks one of `databases` keyspaces (16 by default, as Redis); each holds
 * vector sets only, so TYPE answers "vectorset" or "none". The generic key
 * commands live in keys.c.
 */
#include "daemon.h"

#include <pthread.h>
#include <xxhash.h>

#include <ctype.h>
#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

bool tqd_arg_is(const tqd_arg *a, const char *word)
{
    size_t n = strlen(word);
    return a->len == n && strncasecmp(a->p, word, n) == 0;
}

/* The argument as a C string in tmp (cap bytes); false if empty or longer. */
static bool arg_cstr(const tqd_arg *a, char *tmp, size_t cap)
{
    if (a->len == 0 || a->len >= cap)
        return false;
    memcpy(tmp, a->p, a->len);
    tmp[a->len] = 0;
    return !isspace((unsigned char)tmp[0]); /* as Redis: no leading space */
}

bool tqd_arg_ll(const tqd_arg *a, long long *v)
{
    char tmp[32], *end;
    if (!arg_cstr(a, tmp, sizeof(tmp)))
        return false;
    errno = 0;
    long long n = strtoll(tmp, &end, 10);
    if (errno || *end)
        return false;
    *v = n;
    return true;
}

bool tqd_arg_double(const tqd_arg *a, double *v)
{
    char tmp[64], *end;
    if (!arg_cstr(a, tmp, sizeof(tmp)))
        return false;
    errno = 0;
    double d = strtod(tmp, &end);
    /* As Redis: no NaN, all of it a number. */
    if (*end || d != d || errno == ERANGE)
        return false;
    *v = d;
    return true;
}

bool tqd_glob(const char *pat, size_t plen, const char *s, size_t slen)
{
    while (plen) {
        switch (*pat) {
        case '*':
            while (plen > 1 && pat[1] == '*') {
                pat++;
                plen--;
            }
            if (plen == 1)
                return true;
            for (size_t i = 0; i <= slen; i++)
                if (tqd_glob(pat + 1, plen - 1, s + i, slen - i))
                    return true;
            return false;
        case '?':
            if (!slen)
                return false;
            s++;
            slen--;
            break;
        case '[': {
            if (!slen)
                return false;
            pat++;
            plen--;
            bool negate = plen && *pat == '^', match = false;
            if (negate) {
                pat++;
                plen--;
            }
            while (plen && *pat != ']') {
                if (*pat == '\\' && plen >= 2) {
                    pat++;
                    plen--;
                    match |= *pat == *s;
                } else if (plen >= 3 && pat[1] == '-' && pat[2] != ']') {
                    char lo = pat[0] < pat[2] ? pat[0] : pat[2], hi = pat[0] < pat[2] ? pat[2] : pat[0];
                    match |= *s >= lo && *s <= hi;
                    pat += 2;
                    plen -= 2;
                } else {
                    match |= *pat == *s;
                }
                pat++;
                plen--;
            }
            if (!plen)
                return false; /* unclosed class matches nothing */
            if (match == negate)
                return false;
            s++;
            slen--;
            break;
        }
        case '\\':
            if (plen >= 2) {
                pat++;
                plen--;
            }
            /* fall through */
        default:
            if (!slen || *pat != *s)
                return false;
            s++;
            slen--;
            break;
        }
        pat++;
        plen--;
    }
    return slen == 0;
}

void tqd_arg_lower(const tqd_arg *a, char *out, size_t cap)
{
    size_t n = a->len < cap - 1 ? a->len : cap - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)a->p[i]);
    out[n] = 0;
}

/* Constant time in the length of the secret, whatever the guess. */
static bool password_matches(const tqd_arg *guess)
{
    const char *secret = tqd.cfg.requirepass;
    size_t n = strlen(secret);
    unsigned diff = (unsigned)(guess->len != n);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)secret[i] ^ (unsigned char)(i < guess->len ? guess->p[i] : 0);
    return diff == 0;
}

/* -------------------------------------------------------- connection */

static void cmd_ping(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    if (argc > 2)
        tqd_reply_error(r, "ERR wrong number of arguments for 'ping' command");
    else if (argc == 2)
        tqd_reply_bulk(r, argv[1].p, argv[1].len);
    else
        tqd_reply_simple(r, "PONG");
}

static void cmd_echo(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argc;
    tqd_reply_bulk(r, argv[1].p, argv[1].len);
}

static bool do_auth(tqd_client *cl, const tqd_arg *user, const tqd_arg *pass, tqd_reply *r)
{
    if (!tqd.cfg.requirepass) {
        tqd_reply_error(r, "ERR AUTH <password> called without any password configured for the default user. Are "
                           "you sure your configuration is correct?");
        return false;
    }
    if ((user && !tqd_arg_is(user, "default")) || !password_matches(pass)) {
        tqd_log(TQD_LOG_VERBOSE, "client %llu (%s): wrong password", (unsigned long long)cl->id, cl->addr);
        tqd_reply_error(r, "WRONGPASS invalid username-password pair or user is disabled.");
        return false;
    }
    cl->authed = true;
    return true;
}

static void cmd_auth(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    if (argc > 3) {
        tqd_reply_error(r, "ERR syntax error");
        return;
    }
    if (do_auth(cl, argc == 3 ? &argv[1] : NULL, &argv[argc - 1], r))
        tqd_reply_simple(r, "OK");
}

static void cmd_hello(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    long long proto = cl->proto;
    size_t i = 1;
    if (argc >= 2) {
        if (!tqd_arg_ll(&argv[1], &proto)) {
            tqd_reply_error(r, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (proto != 2 && proto != 3) {
            tqd_reply_error(r, "NOPROTO unsupported protocol version");
            return;
        }
        i = 2;
    }
    const char *setname = NULL;
    size_t setname_len = 0;
    for (; i < argc; i++) {
        if (tqd_arg_is(&argv[i], "AUTH") && i + 2 < argc) {
            if (!do_auth(cl, &argv[i + 1], &argv[i + 2], r))
                return;
            i += 2;
        } else if (tqd_arg_is(&argv[i], "SETNAME") && i + 1 < argc) {
            setname = argv[i + 1].p;
            setname_len = argv[i + 1].len;
            i++;
        } else {
            char name[32];
            tqd_arg_lower(&argv[i], name, sizeof(name));
            tqd_reply_error(r, "ERR Syntax error in HELLO option '%s'", name);
            return;
        }
    }
    if (!cl->authed) {
        tqd_reply_error(r, "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                           "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                           "select the RESP protocol version at the same time");
        return;
    }
    if (setname) {
        size_t n = setname_len < sizeof(cl->name) - 1 ? setname_len : sizeof(cl->name) - 1;
        memcpy(cl->name, setname, n);
        cl->name[n] = 0;
    }
    cl->proto = (int)proto;
    r->proto = cl->proto;
    tqd_reply_map(r, 7);
    tqd_reply_cstr(r, "server");
    tqd_reply_cstr(r, "tqvecd");
    tqd_reply_cstr(r, "version");
    tqd_reply_cstr(r, tqvec_version());
    tqd_reply_cstr(r, "proto");
    tqd_reply_int(r, proto);
    tqd_reply_cstr(r, "id");
    tqd_reply_int(r, (long long)cl->id);
    tqd_reply_cstr(r, "mode");
    tqd_reply_cstr(r, "standalone");
    tqd_reply_cstr(r, "role");
    tqd_reply_cstr(r, "master");
    tqd_reply_cstr(r, "modules");
    tqd_reply_array(r, 0);
}

static void cmd_select(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argc;
    int db;
    if (tqd_db_index(&argv[1], &db, r)) {
        cl->db = db;
        tqd_reply_simple(r, "OK");
    }
}

static void cmd_quit(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argv;
    (void)argc;
    tqd_reply_simple(r, "OK");
    cl->close_after_reply = true;
}

static void cmd_shutdown(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    for (size_t i = 1; i < argc; i++) {
        if (tqd_arg_is(&argv[i], "ABORT")) {
            tqd_reply_error(r, "ERR No shutdown in progress.");
            return;
        }
        if (!tqd_arg_is(&argv[i], "SAVE") && !tqd_arg_is(&argv[i], "NOSAVE") && !tqd_arg_is(&argv[i], "NOW") &&
            !tqd_arg_is(&argv[i], "FORCE")) {
            tqd_reply_error(r, "ERR syntax error");
            return;
        }
    }
    /* As Redis: no reply on success, the connection just closes. Every
     * acknowledged write is already in a log, so SAVE/NOSAVE change nothing. */
    tqd_log(TQD_LOG_WARNING, "user requested shutdown (client %llu, %s)", (unsigned long long)cl->id, cl->addr);
    cl->close_after_reply = true;
    atomic_store(&tqd.shutdown_requested, 1);
    tqd_server_wake();
}

static void cmd_client(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    const tqd_arg *sub = &argv[1];
    if (tqd_arg_is(sub, "ID") && argc == 2) {
        tqd_reply_int(r, (long long)cl->id);
    } else if (tqd_arg_is(sub, "SETNAME") && argc == 3) {
        for (size_t i = 0; i < argv[2].len; i++)
            if (argv[2].p[i] <= ' ' || argv[2].p[i] > '~') {
                tqd_reply_error(r, "ERR Client names cannot contain spaces, newlines or special characters.");
                return;
            }
        size_t n = argv[2].len < sizeof(cl->name) - 1 ? argv[2].len : sizeof(cl->name) - 1;
        memcpy(cl->name, argv[2].p, n);
        cl->name[n] = 0;
        tqd_reply_simple(r, "OK");
    } else if (tqd_arg_is(sub, "GETNAME") && argc == 2) {
        if (cl->name[0])
            tqd_reply_cstr(r, cl->name);
        else
            tqd_reply_null(r);
    } else if (tqd_arg_is(sub, "SETINFO") && argc == 4) {
        tqd_reply_simple(r, "OK"); /* library name and version: accepted, not kept */
    } else if ((tqd_arg_is(sub, "INFO") && argc == 2) || (tqd_arg_is(sub, "LIST") && argc == 2)) {
        char line[320];
        snprintf(line, sizeof(line), "id=%llu addr=%s name=%s age=%llu db=%d resp=%d\n", (unsigned long long)cl->id,
                 cl->addr, cl->name, (unsigned long long)((tqd_now_ms() - cl->created_ms) / 1000), cl->db,
                 cl->proto);
        tqd_reply_cstr(r, line);
    } else {
        char name[32];
        tqd_arg_lower(sub, name, sizeof(name));
        tqd_reply_error(r, "ERR unknown subcommand or wrong number of arguments for '%s'. Try CLIENT HELP.", name);
    }
}

/* -------------------------------------------------------- persistence */

static void cmd_save(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argv;
    (void)argc;
    tqvec_error err;
    if (atomic_load(&tqd.bgsave_running)) {
        tqd_reply_error(r, "ERR Background save already in progress");
    } else if (tqd_keyspace_save(&err)) {
        tqd_reply_tqvec_error(r, &err);
    } else {
        atomic_store(&tqd.last_save_s, tqd_now_ms() / 1000);
        tqd_reply_simple(r, "OK");
    }
}

static void *bgsave_main(void *arg)
{
    (void)arg;
    tqvec_error err;
    if (tqd_keyspace_save(&err))
        tqd_log(TQD_LOG_WARNING, "background save failed: %s", err.message);
    else {
        atomic_store(&tqd.last_save_s, tqd_now_ms() / 1000);
        tqd_log(TQD_LOG_NOTICE, "background save done");
    }
    atomic_store(&tqd.bgsave_running, 0);
    return NULL;
}

static void cmd_bgsave(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    if (argc > 2 || (argc == 2 && !tqd_arg_is(&argv[1], "SCHEDULE"))) {
        tqd_reply_error(r, "ERR syntax error");
        return;
    }
    int expected = 0;
    if (!atomic_compare_exchange_strong(&tqd.bgsave_running, &expected, 1)) {
        tqd_reply_error(r, "ERR Background save already in progress");
        return;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, bgsave_main, NULL)) {
        atomic_store(&tqd.bgsave_running, 0);
        tqd_reply_error(r, "ERR cannot start a background save thread");
        return;
    }
    pthread_detach(t);
    tqd_reply_simple(r, "Background saving started");
}

static void cmd_lastsave(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argv;
    (void)argc;
    uint64_t t = atomic_load(&tqd.last_save_s);
    tqd_reply_int(r, (long long)(t ? t : tqd.start_ms / 1000));
}

/* ------------------------------------------------------ introspection */

static void memory_stats(size_t *allocated, size_t *resident)
{
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch);
    mallctl("epoch", &epoch, &sz, &epoch, sz);
    sz = sizeof(size_t);
    if (mallctl("stats.allocated", allocated, &sz, NULL, 0))
        *allocated = 0;
    sz = sizeof(size_t);
    if (mallctl("stats.resident", resident, &sz, NULL, 0))
        *resident = 0;
}

static void appendf(tqd_buf *b, bool *oom, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void appendf(tqd_buf *b, bool *oom, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !tqd_buf_reserve(b, (size_t)n + 1)) {
        *oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static bool want_section(const tqd_arg *argv, size_t argc, const char *name)
{
    if (argc < 2)
        return true;
    for (size_t i = 1; i < argc; i++)
        if (tqd_arg_is(&argv[i], name) || tqd_arg_is(&argv[i], "all") || tqd_arg_is(&argv[i], "everything") ||
            tqd_arg_is(&argv[i], "default"))
            return true;
    return false;
}

static void info_vectorsets(tqd_buf *b, bool *oom)
{
    tqd_names names;
    if (tqd_keyspace_names(-1, &names)) {
        *oom = true;
        return;
    }
    for (size_t i = 0; i < names.n; i++) {
        tqd_vset *v = tqd_keyspace_get(names.db[i], names.name[i], names.len[i]);
        if (!v)
            continue;
        tqvec_collection_info in;
        tqvec_collection_get_info(v->c, &in);
        /* The listing's copies of the name and database: a RENAME may be
         * changing v's meanwhile. */
        const char *name = names.name[i];
        const int db = names.db[i];
        char dbname[16];
        snprintf(dbname, sizeof(dbname), "db%d", db);
        /* Key bytes are printed only when plain, since INFO is lines of text. */
        bool plain = true;
        for (size_t j = 0; j < names.len[i]; j++)
            plain &= name[j] > ' ' && name[j] <= '~' && name[j] != ':' && name[j] != ',';
        appendf(b, oom,
                "vset_%s%s%s:size=%llu,dim=%u,metric=%s,bits=%d,refine=%s,deleted=%llu,segments=%u,unsealed=%llu,"
                "log_bytes=%llu,bytes_per_vector=%llu\r\n",
                db ? dbname : "", db ? ":" : "", plain ? name : "(binary)", (unsigned long long)in.count, in.dim,
                tqd_metric_name(in.metric),
                in.bits, tqd_refine_name(in.refine), (unsigned long long)in.deleted, in.segments,
                (unsigned long long)in.unsealed, (unsigned long long)in.log_bytes,
                (unsigned long long)(in.bytes_per_vector + in.refine_bytes_per_vector));
        tqd_vset_release(v);
    }
    tqd_names_free(&names);
}

static void cmd_info(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    tqd_buf b = {0};
    bool oom = false;
    const uint64_t now = tqd_now_ms();
    if (want_section(argv, argc, "server"))
        appendf(&b, &oom,
                "# Server\r\ntqvec_version:%s\r\nredis_mode:standalone\r\nmultiplexing_api:%s\r\nsimd:%s\r\n"
                "process_id:%d\r\ntcp_port:%d\r\nuptime_in_seconds:%llu\r\nexecutable:tqvecd\r\n"
                "worker_threads:%d\r\n\r\n",
                tqvec_version(), tqd.io_backend, tqvec_simd_level(), (int)getpid(), tqd.cfg.port,
                (unsigned long long)((now - tqd.start_ms) / 1000), tqd.cfg.threads);
    if (want_section(argv, argc, "clients"))
        appendf(&b, &oom, "# Clients\r\nconnected_clients:%llu\r\nmaxclients:%d\r\n\r\n",
                (unsigned long long)atomic_load(&tqd.clients), tqd.cfg.maxclients);
    if (want_section(argv, argc, "memory")) {
        size_t allocated, resident;
        memory_stats(&allocated, &resident);
        appendf(&b, &oom,
                "# Memory\r\nused_memory:%zu\r\nused_memory_human:%.2fM\r\nused_memory_rss:%zu\r\n"
                "mem_allocator:jemalloc\r\n\r\n",
                allocated, (double)allocated / (1 << 20), resident);
    }
    if (want_section(argv, argc, "persistence"))
        appendf(&b, &oom,
                "# Persistence\r\nloading:0\r\naof_enabled:1\r\nappendfsync:%s\r\nbgsave_in_progress:%d\r\n"
                "rdb_bgsave_in_progress:%d\r\nlastsave:%llu\r\n\r\n",
                tqd_fsync_name(tqd.cfg.appendfsync), atomic_load(&tqd.bgsave_running),
                atomic_load(&tqd.bgsave_running),
                (unsigned long long)(atomic_load(&tqd.last_save_s) ? atomic_load(&tqd.last_save_s)
                                                                   : tqd.start_ms / 1000));
    if (want_section(argv, argc, "stats"))
        appendf(&b, &oom,
                "# Stats\r\ntotal_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
                "rejected_connections:%llu\r\ntotal_net_input_bytes:%llu\r\ntotal_net_output_bytes:%llu\r\n"
                "vsim_batched_searches:%llu\r\nvsim_batched_queries:%llu\r\n\r\n",
                (unsigned long long)atomic_load(&tqd.connections_received),
                (unsigned long long)atomic_load(&tqd.commands),
                (unsigned long long)atomic_load(&tqd.rejected_connections),
                (unsigned long long)atomic_load(&tqd.net_in), (unsigned long long)atomic_load(&tqd.net_out),
                (unsigned long long)atomic_load(&tqd.vsim_runs),
                (unsigned long long)atomic_load(&tqd.vsim_run_queries));
    if (want_section(argv, argc, "keyspace")) {
        appendf(&b, &oom, "# Keyspace\r\n");
        for (int db = 0; db < tqd.cfg.databases; db++) {
            size_t expires, n = tqd_keyspace_count(db, &expires);
            if (n)
                appendf(&b, &oom, "db%d:keys=%zu,expires=%zu,avg_ttl=0\r\n", db, n, expires);
        }
        appendf(&b, &oom, "\r\n");
    }
    if (want_section(argv, argc, "vectorsets")) {
        appendf(&b, &oom, "# Vectorsets\r\n");
        info_vectorsets(&b, &oom);
        appendf(&b, &oom, "\r\n");
    }
    if (oom)
        tqd_reply_error(r, "ERR out of memory building INFO");
    else
        tqd_reply_bulk(r, b.p ? b.p : "", b.len >= 2 ? b.len - 2 : b.len);
    tqd_buf_free(&b);
}

static void cmd_config(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    if (tqd_arg_is(&argv[1], "RESETSTAT") && argc == 2) {
        tqd_reply_simple(r, "OK");
        return;
    }
    if (tqd_arg_is(&argv[1], "SET") && argc >= 4 && argc % 2 == 0) {
        /* Every pair checked before any applies, as Redis does. */
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 2; i + 1 < argc; i += 2) {
                char name[64], value[256], why[160];
                snprintf(name, sizeof(name), "%.*s", (int)(argv[i].len < 63 ? argv[i].len : 63), argv[i].p);
                snprintf(value, sizeof(value), "%.*s", (int)(argv[i + 1].len < 255 ? argv[i + 1].len : 255),
                         argv[i + 1].p);
                int rc = tqd_config_set(&tqd.cfg, name, value, pass == 1, why, sizeof(why));
                if (rc == -2) {
                    tqd_reply_error(r, "ERR Unknown option or number of arguments for CONFIG SET - '%s'", name);
                    return;
                }
                if (rc) {
                    tqd_reply_error(r, "ERR CONFIG SET failed (possibly related to argument '%s') - %s", name, why);
                    return;
                }
            }
        tqd_reply_simple(r, "OK");
        return;
    }
    if (!tqd_arg_is(&argv[1], "GET") || argc < 3) {
        tqd_reply_error(r, "ERR unknown subcommand or wrong number of arguments for 'config'. Try CONFIG HELP.");
        return;
    }
    tqd_config_item items[TQD_CONFIG_ITEMS];
    const size_t nitems = tqd_config_items(&tqd.cfg, items);
    bool hit[TQD_CONFIG_ITEMS] = {false};
    size_t n = 0;
    for (size_t i = 2; i < argc; i++)
        for (size_t j = 0; j < nitems; j++)
            if (!hit[j] && tqd_glob(argv[i].p, argv[i].len, items[j].name, strlen(items[j].name))) {
                hit[j] = true;
                n++;
            }
    tqd_reply_map(r, n);
    for (size_t j = 0; j < nitems; j++)
        if (hit[j]) {
            tqd_reply_cstr(r, items[j].name);
            tqd_reply_cstr(r, items[j].value);
        }
}

static void cmd_time(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    (void)argv;
    (void)argc;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char s[32], us[24];
    snprintf(s, sizeof(s), "%lld", (long long)ts.tv_sec);
    snprintf(us, sizeof(us), "%ld", ts.tv_nsec / 1000);
    tqd_reply_array(r, 2);
    tqd_reply_cstr(r, s);
    tqd_reply_cstr(r, us);
}

static void cmd_command(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r);

/* ---------------------------------------------------------- MULTI/EXEC */

/* Transactions: MULTI queues the client's commands (each checked as it
 * arrives: an unknown command or a wrong argument count is refused then,
 * and EXEC answers EXECABORT and runs none of them); EXEC runs the queue
 * with no other client's command in between, replying one array of the
 * replies; DISCARD drops it. "In between" is kept by one lock: every other
 * command runs holding it shared, EXEC holds it exclusive (preferring
 * writers, so a steady stream of searches cannot hold EXEC off). Before
 * this, MULTI and EXEC were unknown commands and the writes between them
 * were applied although the client's EXEC failed.
 *
 * WATCH: every key has a version, raised by each command that may change
 * it (VADD, VREM, VSETATTR, TQ.CREATE, DEL, UNLINK; FLUSHALL and FLUSHDB
 * raise a global count instead). Versions live in a table keyed by the
 * key's XXH3-64; EXEC compares the watched ones under the exclusive lock,
 * so no write can slip between the check and the run. A command that
 * failed still raises its key's version: a transaction may abort for a
 * write that did nothing, never run past one that did. */
static pthread_rwlock_t exec_lock;
static pthread_once_t exec_lock_once = PTHREAD_ONCE_INIT;

static void exec_lock_init(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&exec_lock, &a);
    pthread_rwlockattr_destroy(&a);
}

typedef struct tqd_watch {
    uint64_t hash, version;
} tqd_watch;

static struct {
    pthread_mutex_t lock;
    tqd_watch *slot; /* open addressing on hash; hash 0 marks a free slot */
    size_t cap, n;
    uint64_t flushes;
} versions = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t key_hash(int db, const char *key, size_t len)
{
    uint64_t h = XXH3_64bits_withSeed(key, len, (uint64_t)db);
    return h ? h : 1;
}

/* The version of a key (0 if never written); lock held. */
static tqd_watch *version_slot_nolock(uint64_t h, bool add)
{
    if (add && 2 * (versions.n + 1) > versions.cap) {
        size_t cap = versions.cap ? 2 * versions.cap : 256;
        tqd_watch *grown = calloc(cap, sizeof(tqd_watch));
        if (!grown)
            return NULL;
        for (size_t i = 0; i < versions.cap; i++)
            if (versions.slot[i].hash) {
                size_t j = versions.slot[i].hash & (cap - 1);
                while (grown[j].hash)
                    j = (j + 1) & (cap - 1);
                grown[j] = versions.slot[i];
            }
        free(versions.slot);
        versions.slot = grown;
        versions.cap = cap;
    }
    if (!versions.cap)
        return NULL;
    size_t j = h & (versions.cap - 1);
    while (versions.slot[j].hash && versions.slot[j].hash != h)
        j = (j + 1) & (versions.cap - 1);
    if (!versions.slot[j].hash) {
        if (!add)
            return NULL;
        versions.slot[j].hash = h;
        versions.n++;
    }
    return &versions.slot[j];
}

static uint64_t key_version(uint64_t h)
{
    pthread_mutex_lock(&versions.lock);
    tqd_watch *w = version_slot_nolock(h, false);
    uint64_t v = w ? w->version : 0;
    pthread_mutex_unlock(&versions.lock);
    return v;
}

static void bump_nolock(uint64_t h)
{
    tqd_watch *w = version_slot_nolock(h, true);
    if (w)
        w->version++;
    else
        versions.flushes++;
}

void tqd_key_changed(int db, const char *name, size_t len)
{
    pthread_mutex_lock(&versions.lock);
    bump_nolock(key_hash(db, name, len));
    pthread_mutex_unlock(&versions.lock);
}

/* After a command ran: raise the versions of the keys it may have
 * changed in the client's database (keys of another database, MOVE's and
 * COPY ... DB's, are raised by the command). Out of memory, every watch is
 * broken instead (the global count), so a change is never missed. */
static void note_writes(const tqd_client *cl, const tqd_arg *argv, size_t argc)
{
    static const char *const one_key[] = {"vadd",   "vrem",    "vsetattr", "tq.create", "expire",
                                          "pexpire", "expireat", "pexpireat", "persist",  "restore",
                                          "move"};
    static const char *const two_keys[] = {"rename", "renamenx"};
    size_t first = 0, last = 0;
    for (size_t i = 0; i < sizeof(one_key) / sizeof(one_key[0]); i++)
        if (tqd_arg_is(&argv[0], one_key[i]))
            first = last = 1;
    for (size_t i = 0; i < sizeof(two_keys) / sizeof(two_keys[0]); i++)
        if (tqd_arg_is(&argv[0], two_keys[i]))
            first = 1, last = 2;
    if (tqd_arg_is(&argv[0], "copy"))
        first = last = 2;
    if (tqd_arg_is(&argv[0], "del") || tqd_arg_is(&argv[0], "unlink"))
        first = 1, last = argc - 1;
    const bool flush = tqd_arg_is(&argv[0], "flushall") || tqd_arg_is(&argv[0], "flushdb");
    if (!first && !flush)
        return;
    pthread_mutex_lock(&versions.lock);
    for (size_t i = first; first && i <= last && i < argc; i++)
        bump_nolock(key_hash(cl->db, argv[i].p, argv[i].len));
    if (flush)
        versions.flushes++;
    pthread_mutex_unlock(&versions.lock);
}

static void unwatch(tqd_client *cl)
{
    cl->nwatched = 0;
}

static void cmd_watch(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    if (!cl->nwatched) {
        pthread_mutex_lock(&versions.lock);
        cl->watch_flushes = versions.flushes;
        pthread_mutex_unlock(&versions.lock);
    }
    for (size_t i = 1; i < argc; i++) {
        if (cl->nwatched == cl->watched_cap) {
            size_t cap = cl->watched_cap ? 2 * cl->watched_cap : 8;
            tqd_watch *w = realloc(cl->watched, cap * sizeof(*w));
            if (!w) {
                tqd_reply_error(r, "ERR out of memory watching keys");
                return;
            }
            cl->watched = w;
            cl->watched_cap = cap;
        }
        const uint64_t h = key_hash(cl->db, argv[i].p, argv[i].len);
        cl->watched[cl->nwatched++] = (tqd_watch){h, key_version(h)};
    }
    tqd_reply_simple(r, "OK");
}

static void cmd_unwatch(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argv;
    (void)argc;
    unwatch(cl);
    tqd_reply_simple(r, "OK");
}

/* Whether a watched key changed since WATCH; exclusive lock held. */
static bool watch_broken(const tqd_client *cl)
{
    if (!cl->nwatched)
        return false;
    pthread_mutex_lock(&versions.lock);
    bool broken = versions.flushes != cl->watch_flushes;
    for (size_t i = 0; !broken && i < cl->nwatched; i++) {
        tqd_watch *w = version_slot_nolock(cl->watched[i].hash, false);
        broken = (w ? w->version : 0) != cl->watched[i].version;
    }
    pthread_mutex_unlock(&versions.lock);
    return broken;
}

static void discard_queue(tqd_client *cl)
{
    for (size_t i = 0; i < cl->nqueued; i++) {
        free(cl->queued[i].argv);
        free(cl->queued[i].bytes);
    }
    cl->nqueued = 0;
    cl->multi = cl->multi_refused = false;
}

void tqd_client_release(tqd_client *cl)
{
    discard_queue(cl);
    free(cl->queued);
    free(cl->watched);
    cl->queued = NULL;
    cl->watched = NULL;
    cl->queued_cap = cl->watched_cap = cl->nwatched = 0;
}

/* Copy a request into the client's queue; false when out of memory. */
static bool enqueue(tqd_client *cl, const tqd_arg *argv, size_t argc)
{
    if (cl->nqueued == cl->queued_cap) {
        size_t cap = cl->queued_cap ? 2 * cl->queued_cap : 8;
        tqd_queued *q = realloc(cl->queued, cap * sizeof(*q));
        if (!q)
            return false;
        cl->queued = q;
        cl->queued_cap = cap;
    }
    size_t total = 0;
    for (size_t i = 0; i < argc; i++)
        total += argv[i].len;
    tqd_queued *q = &cl->queued[cl->nqueued];
    q->argc = argc;
    q->argv = malloc(argc * sizeof(tqd_arg));
    q->bytes = malloc(total ? total : 1);
    if (!q->argv || !q->bytes) {
        free(q->argv);
        free(q->bytes);
        return false;
    }
    char *at = q->bytes;
    for (size_t i = 0; i < argc; i++) {
        memcpy(at, argv[i].p, argv[i].len);
        q->argv[i] = (tqd_arg){at, argv[i].len};
        at += argv[i].len;
    }
    cl->nqueued++;
    return true;
}

static void cmd_multi(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argv;
    (void)argc;
    if (cl->multi) {
        tqd_reply_error(r, "ERR MULTI calls can not be nested");
        return;
    }
    cl->multi = true;
    cl->multi_refused = false;
    tqd_reply_simple(r, "OK");
}

static void cmd_discard(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argv;
    (void)argc;
    if (!cl->multi) {
        tqd_reply_error(r, "ERR DISCARD without MULTI");
        return;
    }
    discard_queue(cl);
    unwatch(cl);
    tqd_reply_simple(r, "OK");
}

static const tqd_command *runnable(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r);
static const tqd_command *lookup(const tqd_arg *name);

/* Called without the lock held (it takes it exclusive). */
static void cmd_exec(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)argv;
    (void)argc;
    if (!cl->multi) {
        tqd_reply_error(r, "ERR EXEC without MULTI");
        return;
    }
    if (cl->multi_refused) {
        discard_queue(cl);
        tqd_reply_error(r, "EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    pthread_once(&exec_lock_once, exec_lock_init);
    pthread_rwlock_wrlock(&exec_lock);
    if (cl->nwatched)
        tqd_keyspace_expire_due();
    /* Several writes: logged first, so a crash part way is finished at
     * start (txlog.c). */
    size_t writes = 0;
    for (size_t i = 0; i < cl->nqueued; i++) {
        const tqd_command *c = lookup(&cl->queued[i].argv[0]);
        writes += c && c->writes != TQD_READS;
    }
    uint64_t tx = 0;
    if (watch_broken(cl)) {
        tqd_reply_null_array(r); /* a watched key changed: nothing runs */
    } else if (writes >= 2 && !(tx = tqd_txlog_begin(cl->db, cl->queued, cl->nqueued))) {
        tqd_reply_error(r, "ERR cannot log the transaction (nothing of it ran): %s", strerror(errno));
    } else {
        tqd_reply_array(r, cl->nqueued);
        const size_t n = cl->nqueued;
        cl->multi = false; /* the queued commands run as commands */
        for (size_t i = 0; i < n;) {
            const tqd_queued *q = &cl->queued[i];
            const tqd_command *c = runnable(cl, q->argv, q->argc, r);
            size_t same = 1;
            while (c && c->run && i + same < n && lookup(&cl->queued[i + same].argv[0]) == c)
                same++;
            /* Consecutive commands that answer runs run as one (VADDs to
             * one set: one log append, so the transaction's writes to it
             * survive a crash whole or not at all). */
            tqd_request *reqs = same > 1 ? calloc(same, sizeof(*reqs)) : NULL;
            size_t done = 1;
            if (!c) {
                /* refused when run (its error is in its slot) */
            } else if (reqs) {
                for (size_t j = 0; j < same; j++)
                    reqs[j] = (tqd_request){.argc = cl->queued[i + j].argc, .argv = cl->queued[i + j].argv};
                done = c->run(cl, reqs, same, r);
            } else {
                c->fn(cl, q->argv, q->argc, r);
            }
            for (size_t j = 0; c && j < done; j++)
                note_writes(cl, cl->queued[i + j].argv, cl->queued[i + j].argc);
            free(reqs);
            i += done;
            if (tx)
                tqd_txlog_progress(tx, i, cl->db, c && c->writes == TQD_WRITES_ONCE);
        }
        if (tx)
            tqd_txlog_end(tx);
    }
    pthread_rwlock_unlock(&exec_lock);
    discard_queue(cl);
    unwatch(cl);
}

static const tqd_command server_commands[] = {
    {"multi", cmd_multi, 1, false, 0, NULL, TQD_READS},
    {"exec", cmd_exec, 1, false, 0, NULL, TQD_READS},
    {"discard", cmd_discard, 1, false, 0, NULL, TQD_READS},
    {"watch", cmd_watch, -2, false, -1, NULL, TQD_READS},
    {"unwatch", cmd_unwatch, 1, false, 0, NULL, TQD_READS},
    {"ping", cmd_ping, -1, false, 0, NULL, TQD_READS},
    {"echo", cmd_echo, 2, false, 0, NULL, TQD_READS},
    {"auth", cmd_auth, -2, true, 0, NULL, TQD_READS},
    {"hello", cmd_hello, -1, true, 0, NULL, TQD_READS},
    {"select", cmd_select, 2, false, 0, NULL, TQD_READS},
    {"quit", cmd_quit, -1, true, 0, NULL, TQD_READS},
    {"shutdown", cmd_shutdown, -1, false, 0, NULL, TQD_READS},
    {"client", cmd_client, -2, false, 0, NULL, TQD_READS},
    {"save", cmd_save, 1, false, 0, NULL, TQD_READS},
    {"bgsave", cmd_bgsave, -1, false, 0, NULL, TQD_READS},
    {"lastsave", cmd_lastsave, 1, false, 0, NULL, TQD_READS},
    {"info", cmd_info, -1, false, 0, NULL, TQD_READS},
    {"config", cmd_config, -2, false, 0, NULL, TQD_READS},
    {"time", cmd_time, 1, false, 0, NULL, TQD_READS},
    {"command", cmd_command, -1, false, 0, NULL, TQD_READS},
};

/* The command tables, one per file that owns commands. */
static const struct {
    const tqd_command *c;
    const size_t *n;
} tables[] = {
    {server_commands, &(const size_t){sizeof(server_commands) / sizeof(server_commands[0])}},
    {tqd_key_commands, &tqd_key_command_count},
    {tqd_vset_commands, &tqd_vset_command_count},
};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))

static const tqd_command *lookup(const tqd_arg *name)
{
    for (size_t t = 0; t < NTABLES; t++)
        for (size_t i = 0; i < *tables[t].n; i++)
            if (tqd_arg_is(name, tables[t].c[i].name))
                return &tables[t].c[i];
    return NULL;
}

static void command_entry(const tqd_command *c, tqd_reply *r)
{
    /* The ten fields of Redis 7's COMMAND reply. */
    tqd_reply_array(r, 10);
    tqd_reply_cstr(r, c->name);
    tqd_reply_int(r, c->arity);
    tqd_reply_array(r, 0);
    tqd_reply_int(r, c->keys != 0);
    tqd_reply_int(r, c->keys);
    tqd_reply_int(r, c->keys != 0);
    tqd_reply_array(r, 0);
    tqd_reply_array(r, 0);
    tqd_reply_array(r, 0);
    tqd_reply_array(r, 0);
}

static void cmd_command(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    (void)cl;
    size_t total = 0;
    for (size_t t = 0; t < NTABLES; t++)
        total += *tables[t].n;
    if (argc == 1 || (argc == 2 && tqd_arg_is(&argv[1], "LIST"))) {
        bool full = argc == 1;
        tqd_reply_array(r, total);
        for (size_t t = 0; t < NTABLES; t++)
            for (size_t i = 0; i < *tables[t].n; i++)
                full ? command_entry(&tables[t].c[i], r) : tqd_reply_cstr(r, tables[t].c[i].name);
    } else if (tqd_arg_is(&argv[1], "COUNT") && argc == 2) {
        tqd_reply_int(r, (long long)total);
    } else if (tqd_arg_is(&argv[1], "DOCS")) {
        tqd_reply_map(r, 0); /* no documentation strings; clients fall back to none */
    } else if (tqd_arg_is(&argv[1], "INFO")) {
        tqd_reply_array(r, argc - 2);
        for (size_t i = 2; i < argc; i++) {
            const tqd_command *c = lookup(&argv[i]);
            if (c)
                command_entry(c, r);
            else
                tqd_reply_null_array(r);
        }
    } else {
        char name[32];
        tqd_arg_lower(&argv[1], name, sizeof(name));
        tqd_reply_error(r, "ERR unknown subcommand or wrong number of arguments for '%s'. Try COMMAND HELP.", name);
    }
}

/* The command a request names if it may run now; else NULL after replying
 * why (unknown, not authenticated, wrong arity). */
static const tqd_command *runnable(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    const tqd_command *c = lookup(&argv[0]);
    if (!c) {
        char name[64], args[192] = "";
        tqd_arg_lower(&argv[0], name, sizeof(name));
        size_t at = 0;
        for (size_t i = 1; i < argc && at < sizeof(args) - 40; i++) {
            int n = snprintf(args + at, sizeof(args) - at, "'%.*s' ", (int)(argv[i].len < 32 ? argv[i].len : 32),
                             argv[i].p);
            at += (size_t)n < sizeof(args) - at ? (size_t)n : sizeof(args) - at - 1;
        }
        /* A command name is the client's bytes: keep the reply printable. */
        for (char *p = name; *p; p++)
            if (*p < ' ' || *p > '~')
                *p = '?';
        for (char *p = args; *p; p++)
            if (*p < ' ' || *p > '~')
                *p = '?';
        tqd_reply_error(r, "ERR unknown command '%s', with args beginning with: %s", name, args);
        return NULL;
    }
    if (!cl->authed && !c->no_auth) {
        tqd_reply_error(r, "NOAUTH Authentication required.");
        return NULL;
    }
    if ((c->arity > 0 && argc != (size_t)c->arity) || (c->arity < 0 && argc < (size_t)-c->arity)) {
        tqd_reply_error(r, "ERR wrong number of arguments for '%s' command", c->name);
        return NULL;
    }
    return c;
}

/* Inside MULTI: queue the request (or refuse it and mark the transaction)
 * unless it is one of the transaction's own commands. True if handled. */
static bool queued_in_multi(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    if (!cl->multi)
        return false;
    const tqd_command *c = lookup(&argv[0]);
    if (c && (c->fn == cmd_exec || c->fn == cmd_discard || c->fn == cmd_multi))
        return false;
    if (c && c->fn == cmd_watch) {
        tqd_reply_error(r, "ERR WATCH inside MULTI is not allowed");
        return true;
    }
    if (!runnable(cl, argv, argc, r)) {
        cl->multi_refused = true;
        return true;
    }
    if (!enqueue(cl, argv, argc)) {
        cl->multi_refused = true;
        tqd_reply_error(r, "ERR out of memory queueing the command");
        return true;
    }
    tqd_reply_simple(r, "QUEUED");
    return true;
}

void tqd_execute(tqd_client *cl, const tqd_arg *argv, size_t argc, tqd_reply *r)
{
    if (queued_in_multi(cl, argv, argc, r))
        return;
    const tqd_command *c = runnable(cl, argv, argc, r);
    if (!c)
        return;
    if (c->fn == cmd_exec) { /* takes the lock exclusive itself */
        c->fn(cl, argv, argc, r);
        return;
    }
    pthread_once(&exec_lock_once, exec_lock_init);
    pthread_rwlock_rdlock(&exec_lock);
    c->fn(cl, argv, argc, r);
    note_writes(cl, argv, argc);
    pthread_rwlock_unlock(&exec_lock);
}

size_t tqd_parse_run(const char *buf, size_t len, size_t max_bytes, size_t max_args, tqd_request *reqs, size_t cap)
{
    const tqd_command *c = lookup(&reqs[0].argv[0]);
    if (!c || !c->run)
        return 0;
    size_t n = 1, pos = 0;
    while (n < cap && tqd_parse(buf + pos, len - pos, max_bytes, max_args, &reqs[n]) == TQD_PARSE_OK &&
           reqs[n].argc > 0 && lookup(&reqs[n].argv[0]) == c)
        pos += reqs[n++].consumed;
    return n - 1;
}

size_t tqd_execute_run(tqd_client *cl, const tqd_request *reqs, size_t n, tqd_reply *r)
{
    const tqd_command *c = cl->multi ? NULL : lookup(&reqs[0].argv[0]);
    if (n < 2 || !c || !c->run || !cl->authed) {
        tqd_execute(cl, reqs[0].argv, reqs[0].argc, r);
        return 1;
    }
    if (!(c = runnable(cl, reqs[0].argv, reqs[0].argc, r)))
        return 1;
    /* The arity of the others is checked by the command (a request it
     * cannot take ends the run and is answered on its own). */
    pthread_once(&exec_lock_once, exec_lock_init);
    pthread_rwlock_rdlock(&exec_lock);
    size_t done = c->run(cl, reqs, n, r);
    for (size_t i = 0; i < done; i++)
        note_writes(cl, reqs[i].argv, reqs[i].argc);
    pthread_rwlock_unlock(&exec_lock);
    return done;
}
