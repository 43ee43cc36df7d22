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
        if (resp_call(&c, 8, args)) {
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
    if (tq_vectors_read(queries, 0, &q, &e) || (gt && tq_ids_read(gt, 0, &truth, &e)))
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
    tool_target t = {.coll = coll, .server = server, .server_default_rerank = server && !has_rerank};
    if (server)
        snprintf(t.key, sizeof(t.key), "%s", key);
    tqvec_search_params sp = {.k = (uint32_t)k, .rerank = (uint32_t)rerank};
    tool_query_result res = {0};
    double *qps = tq_calloc(repeat, sizeof(double));
    if (!qps) {
        rc = tool_fail("bench server", "out of memory");
        goto done;
    }
    for (size_t rep = 0; rep < repeat && !rc; rep++) {
        char why[320];
        tool_query_result_free(&res);
        if (tool_run_queries(&t, &q, nq, &sp, (unsigned)clients, pipeline, NULL, &res, why, sizeof(why)))
            rc = tool_fail("bench server", "%s", why);
        else
            qps[rep] = (double)nq / res.wall_s;
    }
    if (!rc) {
        double recall = -1;
        if (gt) {
            tool_recall acc;
            tool_recall_init(&acc, k < truth.d ? k : truth.d);
            for (size_t i = 0; i < nq; i++)
                tool_recall_add(&acc, res.found + i * k, res.nfound[i], truth.data + (i % q.n) * truth.d);
            recall = tool_recall_at_k(&acc);
        }
        double med = tool_median(qps, repeat);
        tool_latency lat;
        tool_latency_summarize(res.lat_us, nq, &lat);
        printf("%-8s %s: %zu queries x %zu, k=%zu, rerank %zu, %zu %s, pipeline %zu\n", server ? "server" : "local",
               server ? server : local, nq, repeat, k, rerank, clients, server ? "connections" : "threads", pipeline);
        printf("  QPS (median of %zu) %.0f   latency us p50 %.0f p95 %.0f p99 %.0f", repeat, med, lat.p50, lat.p95,
               lat.p99);
        if (recall >= 0)
            printf("   recall@%zu %.4f", k, recall);
        printf("\n");
    }
done:
    tool_query_result_free(&res);
    tq_free(qps);
out:
    tqvec_collection_close(coll, NULL);
    tq_matrix_free(&q);
    tq_imatrix_free(&truth);
    return rc;
}
