/*
 * The command line's side of tqvecd: `tqvec serve` runs the daemon,
 * `tqvec load` fills a vector set over RESP, `tqvec bench server` measures
 * VSIM end to end (recall, QPS, latency percentiles over N connections)
 * and, with --local, the same searches in-process on the same collection
 * directory, so the ratio comes from one run.
 *
 * The client is a minimal blocking RESP2 client: commands go out as
 * multibulk with binary FP32 blobs, many per write when pipelined; replies
 * are read into a flat list of their scalar parts (nesting flattened), which
 * is all VADD and VSIM need.
 */
#include "daemon.h"
#include "tq_tools.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

int cmd_serve(int argc, char **argv)
{
    return tqd_main(argc, argv);
}

/* ---------------------------------------------------------- the client */

typedef struct client {
    int fd;
    char *in;
    size_t in_len, in_cap, in_pos;
    tqd_buf out;
    /* the last reply, flattened */
    size_t nparts;
    char **part;
    size_t *part_len, parts_cap;
    bool error;               /* the reply (or a nested part) was an error */
} client;

static int client_connect(const char *where, client *c, char *why, size_t cap)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    if (where[0] == '/') {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", where);
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a))) {
            snprintf(why, cap, "cannot connect to %s: %s", where, strerror(errno));
            return -1;
        }
    } else {
        char host[256];
        snprintf(host, sizeof(host), "%s", where);
        char *colon = strrchr(host, ':');
        const char *port = colon ? colon + 1 : "6380";
        if (colon)
            *colon = 0;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
        int rc = getaddrinfo(host, port, &hints, &res);
        if (rc) {
            snprintf(why, cap, "cannot resolve %s: %s", where, gai_strerror(rc));
            return -1;
        }
        for (struct addrinfo *a = res; a && c->fd < 0; a = a->ai_next) {
            c->fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (c->fd >= 0 && connect(c->fd, a->ai_addr, a->ai_addrlen)) {
                close(c->fd);
                c->fd = -1;
            }
        }
        freeaddrinfo(res);
        if (c->fd < 0) {
            snprintf(why, cap, "cannot connect to %s: %s", where, strerror(errno));
            return -1;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return 0;
}

static void client_close(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    tq_free(c->in);
    tqd_buf_free(&c->out);
    for (size_t i = 0; i < c->parts_cap; i++)
        tq_free(c->part[i]);
    tq_free(c->part);
    tq_free(c->part_len);
}

/* Queue one command (args of given lengths) for the next flush. */
static bool client_queue(client *c, size_t argc, const char *const *argv, const size_t *lens)
{
    size_t need = 32;
    for (size_t i = 0; i < argc; i++)
        need += lens[i] + 32;
    if (!tqd_buf_reserve(&c->out, need))
        return false;
    char *p = c->out.p + c->out.len;
    p += sprintf(p, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++) {
        p += sprintf(p, "$%zu\r\n", lens[i]);
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    c->out.len = (size_t)(p - c->out.p);
    return true;
}

static int client_flush(client *c)
{
    size_t at = 0;
    while (at < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + at, c->out.len - at, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        at += (size_t)n;
    }
    c->out.len = 0;
    return 0;
}

/* Receive more input with room for at least `room` unread bytes (the
 * unread part moved to the front first); false when the connection ends. */
static bool client_fill(client *c, size_t room)
{
    if (c->in_cap - c->in_pos < room) {
        if (c->in_len > c->in_pos)
            memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
        c->in_len -= c->in_pos;
        c->in_pos = 0;
        if (c->in_cap < room + 65536) {
            char *p = tq_realloc(c->in, room + 65536);
            if (!p)
                return false;
            c->in = p;
            c->in_cap = room + 65536;
        }
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        c->in_len += (size_t)n;
        return true;
    }
}

/* A line ending in \r\n from the input, reading as needed. */
static char *read_line(client *c, size_t *len)
{
    for (;;) {
        char *start = c->in + c->in_pos;
        char *nl = c->in_len > c->in_pos ? memchr(start, '\n', c->in_len - c->in_pos) : NULL;
        if (nl && nl > start && nl[-1] == '\r') {
            *len = (size_t)(nl - 1 - start);
            c->in_pos = (size_t)(nl + 1 - c->in);
            return start;
        }
        if (!client_fill(c, c->in_len - c->in_pos + 65536))
            return NULL;
    }
}

/* n more bytes plus \r\n after the current position. */
static char *read_bytes(client *c, size_t n)
{
    while (c->in_len - c->in_pos < n + 2)
        if (!client_fill(c, n + 2))
            return NULL;
    char *p = c->in + c->in_pos;
    c->in_pos += n + 2;
    return p;
}

static bool add_part(client *c, const char *p, size_t n)
{
    if (c->nparts == c->parts_cap) {
        size_t cap = c->parts_cap ? c->parts_cap * 2 : 16;
        char **part = tq_realloc(c->part, cap * sizeof(char *));
        if (part)
            c->part = part;
        size_t *len = tq_realloc(c->part_len, cap * sizeof(size_t));
        if (len)
            c->part_len = len;
        if (!part || !len)
            return false;
        for (size_t i = c->parts_cap; i < cap; i++)
            c->part[i] = NULL;
        c->parts_cap = cap;
    }
    char *copy = tq_realloc(c->part[c->nparts], n + 1);
    if (!copy)
        return false;
    memcpy(copy, p, n);
    copy[n] = 0;
    c->part[c->nparts] = copy;
    c->part_len[c->nparts++] = n;
    return true;
}

static int read_value(client *c, int depth)
{
    size_t len;
    char *line = read_line(c, &len);
    if (!line || len == 0 || depth > 8)
        return -1;
    char type = line[0];
    line[len] = 0;
    long long n = strtoll(line + 1, NULL, 10);
    switch (type) {
    case '-':
        c->error = true;
        /* fall through */
    case '+':
    case ':':
    case ',':
    case '#':
        return add_part(c, line + 1, len - 1) ? 0 : -1;
    case '_':
        return add_part(c, "", 0) ? 0 : -1;
    case '$':
    case '=': {
        if (n < 0)
            return add_part(c, "", 0) ? 0 : -1;
        char *p = read_bytes(c, (size_t)n);
        return p && add_part(c, p, (size_t)n) ? 0 : -1;
    }
    case '*':
    case '%':
    case '~':
        for (long long i = 0; i < (type == '%' ? 2 * n : n); i++)
            if (read_value(c, depth + 1))
                return -1;
        return 0;
    default:
        return -1;
    }
}

/* Read one reply into c->part; -1 if the connection failed. */
static int client_reply(client *c)
{
    c->nparts = 0;
    c->error = false;
    return read_value(c, 0);
}

/* One command, one reply. */
static int client_call(client *c, size_t argc, const char *const *argv, const size_t *lens)
{
    if (!client_queue(c, argc, argv, lens) || client_flush(c))
        return -1;
    return client_reply(c);
}

/* ---------------------------------------------------------------- load */

static void load_usage(void)
{
    fprintf(stderr,
            "usage: tqvec load --server HOST:PORT|/unix/path --key NAME --base FILE [--nb N]\n"
            "                  [--metric cosine|l2|ip] [--quant q8|noquant|bin] [--pipeline N]\n"
            "Adds every row of FILE to the vector set NAME with VADD ... FP32 <blob> <row>\n"
            "(keys are row numbers, as tqvec eval expects). A metric other than cosine\n"
            "creates the set first with TQ.CREATE (4 bits, code8 refine data).\n");
}

int cmd_load(int argc, char **argv)
{
    const char *server = NULL, *key = NULL, *base = NULL, *quant = NULL;
    int metric = TQVEC_METRIC_COSINE;
    size_t pipeline = 256, nb = 0;
    static const struct option opts[] = {
        {"server", required_argument, 0, 's'}, {"key", required_argument, 0, 'k'},
        {"base", required_argument, 0, 'b'},   {"metric", required_argument, 0, 'm'},
        {"quant", required_argument, 0, 'q'},  {"pipeline", required_argument, 0, 'p'},
        {"nb", required_argument, 0, 'n'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 's': server = optarg; break;
        case 'k': key = optarg; break;
        case 'b': base = optarg; break;
        case 'q': quant = optarg; break;
        case 'm':
            if (!(metric = tool_parse_metric(optarg)))
                return tool_fail("load", "unknown metric '%s'", optarg);
            break;
        case 'p':
            if (tool_parse_size(optarg, &pipeline) || pipeline < 1 || pipeline > 100000)
                return tool_fail("load", "--pipeline takes 1..100000");
            break;
        case 'n':
            if (tool_parse_size(optarg, &nb))
                return tool_fail("load", "--nb takes a count");
            break;
        case 'h': load_usage(); return 0;
        default: load_usage(); return 1;
        }
    }
    if (!server || !key || !base) {
        load_usage();
        return 1;
    }
    if (quant && strcmp(quant, "q8") && strcmp(quant, "noquant") && strcmp(quant, "bin"))
        return tool_fail("load", "--quant is q8, noquant or bin, not '%s'", quant);
    tq_matrix x;
    tq_error e;
    if (tq_vectors_read(base, nb, &x, &e))
        return tool_fail("load", "%s", e.msg);
    client c;
    char why[300];
    int rc = 0;
    if (client_connect(server, &c, why, sizeof(why))) {
        tq_matrix_free(&x);
        return tool_fail("load", "%s", why);
    }
    if (metric != TQVEC_METRIC_COSINE) {
        char dim[16];
        snprintf(dim, sizeof(dim), "%zu", x.d);
        const char *args[] = {"TQ.CREATE", key, "DIM", dim, "METRIC", tool_metric_name(metric), "REFINE", "code8"};
        size_t lens[8];
        for (int i = 0; i < 8; i++)
            lens[i] = strlen(args[i]);
        if (client_call(&c, 8, args, lens) || c.error) {
            rc = tool_fail("load", "TQ.CREATE %s: %s", key, c.nparts ? c.part[0] : "connection lost");
            goto out;
        }
    }
    tool_progress prog;
    tool_progress_begin(&prog, "load", "vec", x.n);
    const double t0 = tool_now();
    for (size_t from = 0; from < x.n && !rc; from += pipeline) {
        size_t to = from + pipeline < x.n ? from + pipeline : x.n;
        for (size_t i = from; i < to; i++) {
            char id[24];
            snprintf(id, sizeof(id), "%zu", i);
            const char *args[] = {"VADD", key, "FP32", (const char *)(x.data + i * x.d), id, quant ? quant : "Q8"};
            size_t lens[] = {4, strlen(key), 4, x.d * sizeof(float), strlen(id), quant ? strlen(quant) : 2};
            if (!client_queue(&c, quant ? 6 : 5, args, lens)) {
                rc = tool_fail("load", "out of memory");
                break;
            }
        }
        if (!rc && client_flush(&c))
            rc = tool_fail("load", "connection lost");
        for (size_t i = from; i < to && !rc; i++) {
            if (client_reply(&c))
                rc = tool_fail("load", "connection lost");
            else if (c.error)
                rc = tool_fail("load", "VADD row %zu: %s", i, c.part[0]);
        }
        tool_progress_update(&prog, to);
    }
    tool_progress_end(&prog);
    if (!rc) {
        double s = tool_now() - t0;
        printf("loaded %zu vectors (d=%zu) into '%s' in %.2f s: %.0f VADD/s (pipeline %zu)\n", x.n, x.d, key, s,
               (double)x.n / s, pipeline);
    }
out:
    client_close(&c);
    tq_matrix_free(&x);
    return rc;
}

/* -------------------------------------------------------- bench server */

typedef struct bench_target {
    const char *server;       /* or NULL: in-process on local */
    tqvec_collection *local;
    const char *key;
    const tq_matrix *q;
    size_t k, rerank;
    bool has_rerank;
    size_t nq, pipeline;
    int32_t *found;           /* nq * k result ids, -1 empty */
    double *lat_us;           /* nq */
    _Atomic size_t next;
    _Atomic int failed;
    char why[300];
} bench_target;

/* One connection (or one in-process thread): takes queries from the shared
 * counter, a batch of `pipeline` at a time. */
static void *bench_worker(void *arg)
{
    bench_target *t = arg;
    client c = {.fd = -1};
    if (t->server && client_connect(t->server, &c, t->why, sizeof(t->why))) {
        atomic_store(&t->failed, 1);
        return NULL;
    }
    char kbuf[16], rbuf[16];
    snprintf(kbuf, sizeof(kbuf), "%zu", t->k);
    snprintf(rbuf, sizeof(rbuf), "%zu", t->rerank);
    for (;;) {
        size_t from = atomic_fetch_add(&t->next, t->pipeline);
        if (from >= t->nq || atomic_load(&t->failed))
            break;
        size_t to = from + t->pipeline < t->nq ? from + t->pipeline : t->nq;
        double start = tool_now();
        for (size_t i = from; i < to && t->server; i++) {
            const char *args[] = {"VSIM", t->key, "FP32", (const char *)(t->q->data + (i % t->q->n) * t->q->d),
                                  "COUNT", kbuf, "RERANK", rbuf};
            size_t lens[] = {4, strlen(t->key), 4, t->q->d * sizeof(float), 5, strlen(kbuf), 6, strlen(rbuf)};
            client_queue(&c, t->has_rerank ? 8 : 6, args, lens);
        }
        if (t->server && client_flush(&c)) {
            snprintf(t->why, sizeof(t->why), "connection lost");
            atomic_store(&t->failed, 1);
            break;
        }
        for (size_t i = from; i < to; i++) {
            int32_t *out = t->found + i * t->k;
            for (size_t j = 0; j < t->k; j++)
                out[j] = -1;
            if (t->server) {
                if (client_reply(&c) || c.error) {
                    snprintf(t->why, sizeof(t->why), "VSIM: %s", c.nparts ? c.part[0] : "connection lost");
                    atomic_store(&t->failed, 1);
                    break;
                }
                for (size_t j = 0; j < c.nparts && j < t->k; j++)
                    out[j] = (int32_t)strtol(c.part[j], NULL, 10);
            } else {
                tqvec_search_params p = {.k = (uint32_t)t->k, .rerank = (uint32_t)t->rerank};
                tqvec_results *res;
                tqvec_error err;
                if (tqvec_collection_search(t->local, t->q->data + (i % t->q->n) * t->q->d, 1, &p, &res, &err)) {
                    snprintf(t->why, sizeof(t->why), "search: %s", err.message);
                    atomic_store(&t->failed, 1);
                    break;
                }
                for (size_t j = 0; j < tqvec_results_count(res, 0); j++) {
                    const tqvec_match *m = tqvec_results_get(res, 0, j);
                    char id[24];
                    size_t n = m->key_len < sizeof(id) - 1 ? m->key_len : sizeof(id) - 1;
                    memcpy(id, m->key, n);
                    id[n] = 0;
                    out[j] = (int32_t)strtol(id, NULL, 10);
                }
                tqvec_results_free(res);
            }
            t->lat_us[i] = (tool_now() - start) * 1e6;
        }
    }
    if (t->server)
        client_close(&c);
    return NULL;
}

static void bench_server_usage(void)
{
    fprintf(stderr,
            "usage: tqvec bench server (--server HOST:PORT --key NAME | --local DIR) --queries FILE\n"
            "                          [--gt FILE] [--k 10] [--rerank N] [--clients 2] [--nq N]\n"
            "                          [--pipeline 1] [--repeat 1]\n"
            "VSIM end to end over N connections (or, with --local, the same searches in-process\n"
            "on N threads over the collection directory DIR): recall@k against --gt (keys are\n"
            "row numbers, as tqvec load writes them), QPS, and latency percentiles.\n"
            "--repeat runs the whole query set that many times and reports the median QPS.\n");
}

int cmd_bench_server(int argc, char **argv)
{
    const char *server = NULL, *key = NULL, *local = NULL, *queries = NULL, *gt = NULL;
    size_t k = 10, rerank = 0, clients = 2, nq = 0, pipeline = 1, repeat = 1;
    bool has_rerank = false;
    static const struct option opts[] = {
        {"server", required_argument, 0, 's'}, {"key", required_argument, 0, 'K'},
        {"local", required_argument, 0, 'L'},  {"queries", required_argument, 0, 'q'},
        {"gt", required_argument, 0, 'g'},     {"k", required_argument, 0, 'k'},
        {"rerank", required_argument, 0, 'r'}, {"clients", required_argument, 0, 'c'},
        {"nq", required_argument, 0, 'n'},     {"pipeline", required_argument, 0, 'p'},
        {"repeat", required_argument, 0, 'R'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        size_t *dst = NULL;
        switch (ch) {
        case 's': server = optarg; break;
        case 'K': key = optarg; break;
        case 'L': local = optarg; break;
        case 'q': queries = optarg; break;
        case 'g': gt = optarg; break;
        case 'k': dst = &k; break;
        case 'r': dst = &rerank; has_rerank = true; break;
        case 'c': dst = &clients; break;
        case 'n': dst = &nq; break;
        case 'p': dst = &pipeline; break;
        case 'R': dst = &repeat; break;
        case 'h': bench_server_usage(); return 0;
        default: bench_server_usage(); return 1;
        }
        if (dst && tool_parse_size(optarg, dst))
            return tool_fail("bench server", "expected a count, not '%s'", optarg);
    }
    if ((!server == !local) || (server && !key) || !queries || k < 1 || k > 1000 || clients < 1 || clients > 256 ||
        pipeline < 1 || repeat < 1) {
        bench_server_usage();
        return 1;
    }
    tq_matrix q = {0};
    tq_imatrix truth = {0};
    tq_error e;
    if (tq_vectors_read(queries, 0, &q, &e) || (gt && tq_ivecs_read(gt, 0, &truth, &e)))
        return tool_fail("bench server", "%s", e.msg);
    if (!nq)
        nq = q.n;
    int rc = 0;
    tqvec_collection *coll = NULL;
    if (local) {
        tqvec_collection_options o = {0};
        tqvec_error err;
        if (tqvec_collection_open(local, &o, &coll, &err)) {
            rc = tool_fail("bench server", "%s: %s", local, err.message);
            goto out;
        }
        tqvec_collection_info info;
        tqvec_collection_get_info(coll, &info);
        if (!has_rerank)
            rerank = info.refine == TQVEC_REFINE_NONE ? 0 : TQD_DEFAULT_RERANK;
    }
    if (server && !has_rerank)
        rerank = TQD_DEFAULT_RERANK; /* the daemon's default, for the report */
    bench_target t = {.server = server, .local = coll, .key = key, .q = &q, .k = k, .rerank = rerank,
                      .has_rerank = has_rerank, .nq = nq, .pipeline = pipeline};
    t.found = tq_malloc(nq * k * sizeof(int32_t));
    t.lat_us = tq_malloc(nq * sizeof(double));
    double *qps = tq_calloc(repeat, sizeof(double));
    pthread_t *th = tq_calloc(clients, sizeof(pthread_t));
    if (!t.found || !t.lat_us || !qps || !th) {
        rc = tool_fail("bench server", "out of memory");
        goto done;
    }
    for (size_t rep = 0; rep < repeat && !rc; rep++) {
        atomic_store(&t.next, 0);
        double t0 = tool_now();
        for (size_t i = 0; i < clients; i++)
            pthread_create(&th[i], NULL, bench_worker, &t);
        for (size_t i = 0; i < clients; i++)
            pthread_join(th[i], NULL);
        qps[rep] = (double)nq / (tool_now() - t0);
        if (atomic_load(&t.failed))
            rc = tool_fail("bench server", "%s", t.why);
    }
    if (!rc) {
        double recall = -1;
        if (gt) {
            size_t hit = 0, total = 0;
            for (size_t i = 0; i < nq; i++) {
                const int32_t *want = truth.data + (i % q.n) * truth.d;
                for (size_t j = 0; j < k && j < truth.d; j++, total++)
                    for (size_t h = 0; h < k; h++)
                        if (t.found[i * k + h] == want[j]) {
                            hit++;
                            break;
                        }
            }
            recall = (double)hit / (double)total;
        }
        double med = tool_median(qps, repeat);
        double p50 = tool_quantile(t.lat_us, nq, 0.50), p95 = tool_quantile(t.lat_us, nq, 0.95),
               p99 = tool_quantile(t.lat_us, nq, 0.99);
        printf("%-8s %s: %zu queries x %zu, k=%zu, rerank %zu, %zu %s, pipeline %zu\n", server ? "server" : "local",
               server ? server : local, nq, repeat, k, rerank, clients, server ? "connections" : "threads", pipeline);
        printf("  QPS (median of %zu) %.0f   latency us p50 %.0f p95 %.0f p99 %.0f", repeat, med, p50, p95, p99);
        if (recall >= 0)
            printf("   recall@%zu %.4f", k, recall);
        printf("\n");
    }
done:
    tq_free(th);
    tq_free(qps);
    tq_free(t.found);
    tq_free(t.lat_us);
out:
    tqvec_collection_close(coll, NULL);
    tq_matrix_free(&q);
    tq_imatrix_free(&truth);
    return rc;
}
