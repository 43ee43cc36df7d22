/*
 * The query engine `tqvec eval` and `tqvec bench server` share: a set of
 * queries run against a target (an in-memory index, a stored collection,
 * or a vector set on tqvecd over RESP) by N concurrent streams -- threads,
 * each with its own connection on a server -- that pull batches of queries
 * from one atomic counter. It records each query's result rows and latency
 * and the wall time of the whole set; the callers turn those into recall,
 * QPS and percentiles.
 *
 * Latency of a query: in process, its search call's time divided by the
 * batch size; on a server, the time from sending its pipeline to reading
 * its reply. Result keys must be base row numbers (as tool_add_rows and
 * tqvec load write them); anything else is an error, never a silent miss.
 * The first stream draws the progress line: a separate poller would have to
 * wake up and would blur the wall time.
 */
#include "resp_client.h"
#include "tq_tools.h"

#include <pthread.h>
#include <stdarg.h>

bool tool_key_row(const char *key, size_t len, int64_t *row)
{
    if (len == 0 || len > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (key[i] < '0' || key[i] > '9')
            return false;
        v = v * 10 + (key[i] - '0');
    }
    *row = v;
    return true;
}

/* One call's shared state. */
typedef struct query_run {
    const tool_target *target;
    const tq_matrix *queries;
    size_t nq;
    tqvec_search_params sp;
    size_t batch;
    tool_query_result *out;
    tool_progress *prog;
    _Atomic size_t next, done;
    _Atomic int failed;
    char why[320];
} query_run;

static void run_fail(query_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_fail(query_run *r, const char *fmt, ...)
{
    if (atomic_exchange(&r->failed, 1))
        return; /* the first failure is the one reported */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof(r->why), fmt, ap);
    va_end(ap);
}

static const float *query_vector(const query_run *r, size_t i)
{
    return r->queries->data + (i % r->queries->n) * r->queries->d;
}

/* Queries from..from+g through the library; false on failure. */
static bool search_local(query_run *r, size_t from, size_t g, tqvec_hit *hits, size_t *counts)
{
    const tool_target *t = r->target;
    const size_t k = r->sp.k;
    int64_t *found = r->out->found;
    tqvec_error err;
    /* A batch call needs its queries contiguous: wrap-around batches go
     * one by one. */
    const bool contiguous = (from % r->queries->n) + g <= r->queries->n;
    const double t0 = tool_now();
    int rc = 0;
    for (size_t b0 = 0; b0 < g && !rc; b0 += contiguous ? g : 1) {
        const size_t m = contiguous ? g : 1;
        const float *q = query_vector(r, from + b0);
        if (t->ix) {
            rc = m == 1 ? tqvec_index_search(t->ix, q, &r->sp, hits + b0 * k, k, &counts[b0], &err)
                        : tqvec_index_search_batch(t->ix, q, m, &r->sp, hits, counts, &err);
            for (size_t b = b0; b < b0 + m && !rc; b++)
                for (size_t i = 0; i < counts[b]; i++)
                    found[(from + b) * k + i] = (int64_t)hits[b * k + i].id;
            continue;
        }
        tqvec_results *res;
        if ((rc = tqvec_collection_search(t->coll, q, m, &r->sp, &res, &err)))
            break;
        for (size_t b = 0; b < m; b++) {
            counts[b0 + b] = tqvec_results_count(res, b);
            for (size_t i = 0; i < counts[b0 + b]; i++) {
                const tqvec_match *mt = tqvec_results_get(res, b, i);
                if (!tool_key_row(mt->key, mt->key_len, &found[(from + b0 + b) * k + i])) {
                    run_fail(r, "key '%.*s' is not a row number: the collection was not built with row keys",
                             (int)(mt->key_len < 40 ? mt->key_len : 40), mt->key);
                    tqvec_results_free(res);
                    return false;
                }
            }
        }
        tqvec_results_free(res);
    }
    if (rc) {
        run_fail(r, "search failed on queries %zu..%zu: %s", from, from + g - 1, err.message);
        return false;
    }
    const double us = (tool_now() - t0) * 1e6 / (double)g;
    for (size_t b = 0; b < g; b++) {
        r->out->nfound[from + b] = counts[b];
        r->out->lat_us[from + b] = us;
    }
    return true;
}

/* Queries from..from+g as pipelined VSIMs on conn; false on failure. */
static bool search_server(query_run *r, resp_client *conn, size_t from, size_t g)
{
    const tool_target *t = r->target;
    const size_t k = r->sp.k, d = r->queries->d;
    char kbuf[16], rbuf[16], pbuf[32];
    snprintf(kbuf, sizeof(kbuf), "%u", r->sp.k);
    snprintf(rbuf, sizeof(rbuf), "%u", r->sp.rerank);
    /* The probing asked for, named explicitly (the daemon's default is a
     * target recall); the daemon's defaults for both when asked. */
    const bool recall = r->sp.target_recall > 0.0f;
    if (recall)
        snprintf(pbuf, sizeof(pbuf), "%.9g", (double)r->sp.target_recall);
    else
        snprintf(pbuf, sizeof(pbuf), "%u", r->sp.nprobe);
    const double t0 = tool_now();
    for (size_t i = from; i < from + g; i++) {
        const char *args[] = {"VSIM",  t->key, "FP32", (const char *)query_vector(r, i), "COUNT", kbuf,
                              "RERANK", rbuf,  recall ? "RECALL" : "NPROBE", pbuf};
        const size_t lens[] = {4, strlen(t->key), 4, d * sizeof(float), 5, strlen(kbuf), 6, strlen(rbuf),
                               6, strlen(pbuf)};
        if (!resp_queue(conn, t->server_default_rerank ? 6 : 10, args, lens)) {
            run_fail(r, "out of memory");
            return false;
        }
    }
    if (resp_flush(conn)) {
        run_fail(r, "connection to %s lost", t->server);
        return false;
    }
    for (size_t i = from; i < from + g; i++) {
        if (resp_reply(conn) || conn->error) {
            run_fail(r, "VSIM: %s", conn->nparts ? conn->part[0] : "connection lost");
            return false;
        }
        r->out->lat_us[i] = (tool_now() - t0) * 1e6;
        size_t n = conn->nparts < k ? conn->nparts : k;
        for (size_t j = 0; j < n; j++)
            if (!tool_key_row(conn->part[j], conn->part_len[j], &r->out->found[i * k + j])) {
                run_fail(r, "element '%.40s' is not a row number: the set was not loaded from this base",
                         conn->part[j]);
                return false;
            }
        r->out->nfound[i] = n;
    }
    return true;
}

typedef struct stream_arg {
    query_run *run;
    bool draws_progress;
} stream_arg;

/* One query stream: batches from the shared counter until none are left. */
static void *query_stream(void *arg)
{
    query_run *r = ((stream_arg *)arg)->run;
    tool_progress *prog = ((stream_arg *)arg)->draws_progress ? r->prog : NULL;
    resp_client conn = {.fd = -1};
    tqvec_hit *hits = tq_malloc(r->batch * r->sp.k * sizeof(tqvec_hit));
    size_t *counts = tq_malloc(r->batch * sizeof(size_t));
    if (!hits || !counts)
        run_fail(r, "out of memory");
    else if (r->target->server) {
        char why[300];
        if (resp_connect(r->target->server, &conn, why, sizeof(why)))
            run_fail(r, "%s", why);
    }
    while (!atomic_load(&r->failed)) {
        size_t from = atomic_fetch_add(&r->next, r->batch);
        if (from >= r->nq)
            break;
        size_t g = r->nq - from < r->batch ? r->nq - from : r->batch;
        if (!(r->target->server ? search_server(r, &conn, from, g) : search_local(r, from, g, hits, counts)))
            break;
        size_t done = atomic_fetch_add(&r->done, g) + g;
        if (prog)
            tool_progress_update(prog, done);
    }
    if (r->target->server)
        resp_close(&conn);
    tq_free(hits);
    tq_free(counts);
    return NULL;
}

void tool_query_result_free(tool_query_result *res)
{
    tq_free(res->found);
    tq_free(res->nfound);
    tq_free(res->lat_us);
    memset(res, 0, sizeof(*res));
}

int tool_run_queries(const tool_target *target, const tq_matrix *queries, size_t nq, const tqvec_search_params *sp,
                     unsigned clients, size_t batch, const char *label, tool_query_result *out, char *why,
                     size_t cap)
{
    memset(out, 0, sizeof(*out));
    const size_t k = sp->k;
    tool_progress prog;
    query_run r = {.target = target, .queries = queries, .nq = nq, .sp = *sp, .batch = batch, .out = out,
                   .prog = label ? &prog : NULL};
    out->found = tq_malloc((nq * k + 1) * sizeof(int64_t));
    out->nfound = tq_calloc(nq + 1, sizeof(size_t));
    out->lat_us = tq_malloc((nq + 1) * sizeof(double));
    pthread_t *th = tq_calloc(clients, sizeof(pthread_t));
    stream_arg *args = tq_calloc(clients, sizeof(stream_arg));
    int rc = 0;
    if (!out->found || !out->nfound || !out->lat_us || !th || !args) {
        snprintf(why, cap, "out of memory");
        rc = -1;
        goto done;
    }
    if (label)
        tool_progress_begin(&prog, label, "queries", nq);
    const double t0 = tool_now();
    unsigned started = 0;
    if (clients == 1) {
        /* On this thread: a search keeps its scratch per thread, so a
         * thread started for each run paid the allocation and its page
         * faults (and the thread's start) inside the timing, every repeat:
         * a tenth of a 50-query run on a small set. */
        args[0] = (stream_arg){.run = &r, .draws_progress = true};
        query_stream(&args[0]);
    }
    for (; clients > 1 && started < clients; started++) {
        args[started] = (stream_arg){.run = &r, .draws_progress = started == 0};
        if (pthread_create(&th[started], NULL, query_stream, &args[started])) {
            run_fail(&r, "cannot start a query thread");
            break;
        }
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    out->wall_s = tool_now() - t0;
    if (label)
        tool_progress_end(&prog);
    if (atomic_load(&r.failed)) {
        snprintf(why, cap, "%s", r.why);
        rc = -1;
    }
done:
    tq_free(th);
    tq_free(args);
    if (rc)
        tool_query_result_free(out);
    return rc;
}
