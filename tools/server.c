/*
 * The command line's side of tqvecd: `tqvec serve` runs the daemon,
 * `tqvec load` fills a vector set over RESP, `tqvec bench server` measures
 * VSIM end to end (recall, QPS, latency percentiles over N connections)
 * and, with --local, the same searches in-process on the same collection
 * directory, so the ratio comes from one run.
 * The RESP client they use is resp_client.c.
 */
#include "resp_client.h"
#include "tq_tools.h"

#include <pthread.h>

int cmd_serve(int argc, char **argv)
{
    return tqd_main(argc, argv);
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
    resp_client c;
    char why[300];
    int rc = 0;
    if (resp_connect(server, &c, why, sizeof(why))) {
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
        if (resp_call(&c, 8, args, lens) || c.error) {
            rc = tool_fail("load", "TQ.CREATE %s: %s", key, c.nparts ? c.part[0] : "connection lost");
            goto out;
        }
    }
    tool_progress prog;
    tool_progress_begin(&prog, "load", "vec", x.n);
    const double t0 = tool_now();
    if (resp_add_rows(&c, key, &x, pipeline, &prog, why, sizeof(why), quant))
        rc = tool_fail("load", "%s", why);
    tool_progress_end(&prog);
    if (!rc) {
        double s = tool_now() - t0;
        printf("loaded %zu vectors (d=%zu) into '%s' in %.2f s: %.0f VADD/s (pipeline %zu)\n", x.n, x.d, key, s,
               (double)x.n / s, pipeline);
    }
out:
    resp_close(&c);
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
    resp_client c = {.fd = -1};
    if (t->server && resp_connect(t->server, &c, t->why, sizeof(t->why))) {
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
            resp_queue(&c, t->has_rerank ? 8 : 6, args, lens);
        }
        if (t->server && resp_flush(&c)) {
            snprintf(t->why, sizeof(t->why), "connection lost");
            atomic_store(&t->failed, 1);
            break;
        }
        for (size_t i = from; i < to; i++) {
            int32_t *out = t->found + i * t->k;
            for (size_t j = 0; j < t->k; j++)
                out[j] = -1;
            if (t->server) {
                if (resp_reply(&c) || c.error) {
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
        resp_close(&c);
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
