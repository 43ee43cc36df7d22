/*
 * tqvec convert and tqvec gt: dataset preparation. convert rewrites vectors
 * from any readable format (fvecs, bvecs, npy, IDX images) into fvecs, bvecs
 * or npy, chosen by the output name; gt writes exact top-k ground truth as
 * ivecs (0-based rows, nearest first, ties to the lower row).
 */
#include "tq_tools.h"

static bool has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

int cmd_convert(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"limit", required_argument, 0, 'l'}, {"skip", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    size_t limit = 0, skip = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (tool_parse_size(optarg, &limit))
                return tool_fail("convert", "--limit wants a count, got '%s'", optarg);
            break;
        case 's':
            if (tool_parse_size(optarg, &skip))
                return tool_fail("convert", "--skip wants a count, got '%s'", optarg);
            break;
        default:
            fprintf(stderr, "usage: tqvec convert IN OUT [--skip N] [--limit N]\n"
                            "IN: .fvecs .bvecs .npy or IDX (-ubyte[.gz]); OUT: .fvecs .bvecs or .npy\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (argc - optind != 2)
        return tool_fail("convert", "wants IN and OUT (see --help)");
    const char *in = argv[optind], *out = argv[optind + 1];
    tq_matrix m;
    tq_error err;
    if (tq_vectors_read(in, limit ? limit + skip : 0, &m, &err))
        return tool_fail("convert", "%s", err.msg);
    if (skip > m.n)
        skip = m.n;
    tq_matrix view = {m.n - skip, m.d, m.data + skip * m.d};
    int rc;
    if (has_suffix(out, ".fvecs"))
        rc = tq_fvecs_write(out, &view, &err);
    else if (has_suffix(out, ".bvecs"))
        rc = tq_bvecs_write(out, &view, &err);
    else if (has_suffix(out, ".npy"))
        rc = tq_npy_write(out, &view, &err);
    else
        rc = tq_err(&err, TQ_EARG, "%s: unknown output type (expected .fvecs, .bvecs or .npy)", out);
    tq_matrix_free(&m);
    if (rc)
        return tool_fail("convert", "%s", err.msg);
    fprintf(stderr, "wrote %zu vectors of dimension %zu to %s\n", view.n, view.d, out);
    return 0;
}

int cmd_gt(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"base", required_argument, 0, 'b'}, {"queries", required_argument, 0, 'q'},
        {"metric", required_argument, 0, 'm'}, {"out", required_argument, 0, 'o'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *base_path = NULL, *query_path = NULL, *out = NULL;
    int metric = 0;
    size_t k = 100, threads = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': base_path = optarg; break;
        case 'q': query_path = optarg; break;
        case 'o': out = optarg; break;
        case 'm':
            if (!(metric = tool_parse_metric(optarg)))
                return tool_fail("gt", "unknown metric '%s' (l2, ip, cosine)", optarg);
            break;
        case 'k':
            if (tool_parse_size(optarg, &k) || k == 0 || k > 10000)
                return tool_fail("gt", "-k wants 1..10000, got '%s'", optarg);
            break;
        case 't':
            if (tool_parse_size(optarg, &threads) || threads > 256)
                return tool_fail("gt", "--threads wants 0..256, got '%s'", optarg);
            break;
        default:
            fprintf(stderr, "usage: tqvec gt --base FILE --queries FILE --metric l2|ip|cosine --out GT.ivecs "
                            "[-k 100] [--threads T]\n");
            return c == 'h' ? 0 : 1;
        }
    }
    if (!base_path || !query_path || !out || !metric)
        return tool_fail("gt", "--base, --queries, --metric and --out are required");
    tq_matrix base = {0}, queries = {0};
    tq_imatrix gt = {0};
    tq_error err;
    int rc = 0;
    if (tq_vectors_read(base_path, 0, &base, &err) || tq_vectors_read(query_path, 0, &queries, &err)) {
        rc = tool_fail("gt", "%s", err.msg);
        goto done;
    }
    gt.n = queries.n;
    gt.d = k;
    gt.data = tq_malloc(gt.n * k * sizeof(int32_t));
    if (!gt.data) {
        rc = tool_fail("gt", "out of memory");
        goto done;
    }
    tool_progress prog;
    tool_progress_begin(&prog, "ground truth", "queries", queries.n);
    double t0 = tool_now();
    int grc = tq_groundtruth(&base, &queries, (tq_metric)metric, k, (unsigned)threads, gt.data, NULL,
                             tool_progress_callback, &prog, &err);
    tool_progress_end(&prog);
    if (grc || tq_ivecs_write(out, &gt, &err)) {
        rc = tool_fail("gt", "%s", err.msg);
        goto done;
    }
    fprintf(stderr, "wrote top-%zu of %zu queries against %zu base vectors to %s (%.1f s)\n", k, queries.n, base.n,
            out, tool_now() - t0);
done:
    tq_matrix_free(&base);
    tq_matrix_free(&queries);
    tq_imatrix_free(&gt);
    return rc;
}
