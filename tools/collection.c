/*
 * Stored collections from the command line: build (add a vector file, with
 * keys from a text file or row numbers), query, info, compact and verify.
 * All of it is glue over the tqvec_collection_* calls.
 */
#include "tq_tools.h"

static char cmd_build_name[] = "build", cmd_other_name[16];

static void log_to_stderr(void *ctx, int level, const char *message)
{
    fprintf(stderr, "tqvec %s: %s: %s\n", (const char *)ctx, level == TQVEC_LOG_WARNING ? "warning" : "note",
            message);
}

static int open_existing(const char *cmd, const char *dir, int verify, tqvec_collection **c)
{
    snprintf(cmd_other_name, sizeof(cmd_other_name), "%s", cmd);
    tqvec_collection_options o = {.verify = verify, .log = log_to_stderr, .log_ctx = cmd_other_name};
    tqvec_error err;
    if (tqvec_collection_open(dir, &o, c, &err))
        return tool_fail(cmd, "%s", err.message);
    return 0;
}

/* n lines of a text file (keys, or JSON attributes), at most max bytes
 * each; NULL path: the row numbers (for keys) or nothing (attributes). */
static int read_lines(const char *path, size_t n, size_t max, bool numbers, const char *what, char ***out)
{
    *out = tq_calloc(n ? n : 1, sizeof(char *));
    char *line = tq_malloc(max + 2);
    int rc = 0;
    if (!*out || !line) {
        tq_free(line);
        return tool_fail("build", "out of memory for %zu %s", n, what);
    }
    if (!path) {
        for (size_t i = 0; i < n && numbers && !rc; i++) {
            snprintf(line, max + 2, "%zu", i);
            if (!((*out)[i] = tq_strdup(line)))
                rc = tool_fail("build", "out of memory for %zu %s", n, what);
        }
        tq_free(line);
        return rc;
    }
    FILE *fp = fopen(path, "r");
    if (!fp) {
        tq_free(line);
        return tool_fail("build", "%s: %s", path, strerror(errno));
    }
    size_t i = 0;
    while (!rc && i < n && fgets(line, (int)(max + 2), fp)) {
        size_t len = strlen(line);
        if (len == max + 1 && line[len - 1] != '\n') {
            rc = tool_fail("build", "%s: line %zu is longer than %zu bytes", path, i + 1, max);
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!((*out)[i++] = tq_strdup(line)))
            rc = tool_fail("build", "out of memory for %zu %s", n, what);
    }
    fclose(fp);
    tq_free(line);
    if (!rc && i < n)
        rc = tool_fail("build", "%s has %zu %s for %zu vectors", path, i, what, n);
    return rc;
}

static void free_keys(char **keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++)
        tq_free(keys[i]);
    tq_free(keys);
}

static void build_usage(void)
{
    fprintf(stderr, "usage: tqvec build --input VECTORS --dir DIR [--keys KEYS.txt] [--attrs ATTRS.jsonl]\n"
                    "                   [--metric l2|ip|cosine]\n"
                    "                   [--bits 1..4] [--variant mse|prod] [--refine none|code8|fp16|fp32]\n"
                    "                   [--center auto|none|first-batch] [--codebook scalar|vector]\n"
                    "                   [--fsync always|everysec|no] [--segment-rows N] [--limit N]\n"
                    "Creates the collection when DIR holds none (the settings apply then), else adds\n"
                    "to it (same key: replaced). Keys: one per line, else the row numbers;\n"
                    "attributes: one JSON object per line (an empty line: none). --center: codes of\n"
                    "the vectors less the first add's mean (auto: for l2 and cosine when that add\n"
                    "brings 256 vectors or more). --codebook: what a 1- to 3-bit code stands for\n"
                    "(default: vector at 1 and 2 bits mse, else scalar).\n");
}

int cmd_build(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"input", required_argument, 0, 'i'}, {"dir", required_argument, 0, 'd'},
        {"keys", required_argument, 0, 'k'},  {"metric", required_argument, 0, 'm'},
        {"attrs", required_argument, 0, 'a'},
        {"bits", required_argument, 0, 'b'},  {"variant", required_argument, 0, 'v'},
        {"refine", required_argument, 0, 'r'}, {"fsync", required_argument, 0, 'f'},
        {"segment-rows", required_argument, 0, 's'}, {"limit", required_argument, 0, 'l'},
        {"center", required_argument, 0, 'c'}, {"codebook", required_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *input = NULL, *dir = NULL, *keys_path = NULL, *attrs_path = NULL;
    tqvec_collection_options o = {.create = 1, .metric = TQVEC_METRIC_COSINE, .log = log_to_stderr,
                                  .log_ctx = cmd_build_name};
    size_t limit = 0, v;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'i': input = optarg; break;
        case 'd': dir = optarg; break;
        case 'k': keys_path = optarg; break;
        case 'a': attrs_path = optarg; break;
        case 'm':
            if (!(o.metric = tool_parse_metric(optarg)))
                return tool_fail("build", "unknown metric '%s'", optarg);
            break;
        case 'b':
            if (tool_parse_size(optarg, &v) || v < 1 || v > 4)
                return tool_fail("build", "--bits wants 1..4, got '%s'", optarg);
            o.bits = (int)v;
            break;
        case 'v':
            if (strcmp(optarg, "mse") && strcmp(optarg, "prod"))
                return tool_fail("build", "--variant wants mse or prod, got '%s'", optarg);
            o.variant = strcmp(optarg, "mse") ? TQVEC_VARIANT_PROD : TQVEC_VARIANT_MSE;
            break;
        case 'r':
            o.refine = !strcmp(optarg, "none") ? TQVEC_REFINE_NONE : !strcmp(optarg, "code8") ? TQVEC_REFINE_CODE8
                     : !strcmp(optarg, "fp32") ? TQVEC_REFINE_FP32 : !strcmp(optarg, "fp16") ? TQVEC_REFINE_FP16 : -1;
            if (o.refine < 0)
                return tool_fail("build", "--refine wants none, code8, fp16 or fp32, got '%s'", optarg);
            break;
        case 'c':
            o.center = !strcmp(optarg, "auto") ? TQVEC_CENTER_AUTO : !strcmp(optarg, "none") ? TQVEC_CENTER_NONE
                     : !strcmp(optarg, "first-batch") ? TQVEC_CENTER_FIRST_BATCH : -1;
            if (o.center < 0)
                return tool_fail("build", "--center wants auto, none or first-batch, got '%s'", optarg);
            break;
        case 'q':
            o.codebook = !strcmp(optarg, "scalar") ? TQVEC_CODEBOOK_SCALAR
                       : !strcmp(optarg, "vector") ? TQVEC_CODEBOOK_VECTOR : -1;
            if (o.codebook < 0)
                return tool_fail("build", "--codebook wants scalar or vector, got '%s'", optarg);
            break;
        case 'f':
            if ((o.fsync = tool_parse_fsync(optarg)) < 0)
                return tool_fail("build", "--fsync wants always, everysec or no, got '%s'", optarg);
            break;
        case 's':
            if (tool_parse_size(optarg, &v) || v < 1 || v > UINT32_MAX)
                return tool_fail("build", "--segment-rows wants a positive count, got '%s'", optarg);
            o.segment_rows = (uint32_t)v;
            break;
        case 'l':
            if (tool_parse_size(optarg, &limit))
                return tool_fail("build", "--limit wants a count, got '%s'", optarg);
            break;
        default:
            build_usage();
            return 2;
        }
    }
    if (!input || !dir) {
        build_usage();
        return tool_fail("build", "--input and --dir are required");
    }
    tq_matrix x;
    tq_error e;
    if (tq_vectors_read(input, limit, &x, &e))
        return tool_fail("build", "%s", e.msg);
    o.dim = (uint32_t)x.d;
    char **keys = NULL, **attrs = NULL;
    int rc = read_lines(keys_path, x.n, TQVEC_MAX_KEY_BYTES, true, "keys", &keys);
    if (!rc)
        rc = read_lines(attrs_path, x.n, TQVEC_MAX_ATTRS_BYTES, false, "attributes", &attrs);
    tqvec_collection *c = NULL;
    tqvec_error err;
    if (!rc && tqvec_collection_open(dir, &o, &c, &err)) {
        /* An existing collection of other settings: open it as it is, and
         * refuse only a different dimension. */
        tqvec_collection_options plain = {.log = log_to_stderr, .log_ctx = cmd_build_name, .fsync = o.fsync};
        if (err.code != TQVEC_EARG || tqvec_collection_open(dir, &plain, &c, &err))
            rc = tool_fail("build", "%s", err.message);
    }
    tqvec_collection_info info;
    if (!rc) {
        tqvec_collection_get_info(c, &info);
        if (info.dim != x.d)
            rc = tool_fail("build", "%s holds vectors of dimension %u; %s has %zu", dir, info.dim, input, x.d);
    }
    const size_t batch = 1000;
    tqvec_element *elems = rc ? NULL : tq_malloc(batch * sizeof(tqvec_element));
    if (!rc && !elems)
        rc = tool_fail("build", "out of memory");
    size_t added = 0;
    double t0 = tool_now();
    tool_progress prog;
    tool_progress_begin(&prog, "build", "vectors", x.n);
    for (size_t i = 0; !rc && i < x.n; i += batch) {
        size_t m = x.n - i < batch ? x.n - i : batch, fresh;
        for (size_t j = 0; j < m; j++)
            elems[j] = (tqvec_element){.key = keys[i + j], .key_len = strlen(keys[i + j]),
                                       .vector = x.data + (i + j) * x.d, .attrs = attrs[i + j],
                                       .attrs_len = attrs[i + j] ? strlen(attrs[i + j]) : 0};
        if (tqvec_collection_add(c, elems, m, &fresh, &err))
            rc = tool_fail("build", "rows %zu..%zu: %s", i, i + m - 1, err.message);
        added += fresh;
        tool_progress_update(&prog, i + m);
    }
    tool_progress_end(&prog);
    double t = tool_now() - t0;
    if (!rc && tqvec_collection_sync(c, &err))
        rc = tool_fail("build", "%s", err.message);
    if (!rc) {
        tqvec_collection_get_info(c, &info);
        printf("%s: %zu vectors (%zu new) in %.2f s, %.0f vectors/s; %llu elements in %u segments + %llu unsealed\n",
               dir, x.n, added, t, t > 0 ? (double)x.n / t : 0.0, (unsigned long long)info.count, info.segments,
               (unsigned long long)info.unsealed);
    }
    if (c && tqvec_collection_close(c, &err) && !rc)
        rc = tool_fail("build", "%s", err.message);
    tq_free(elems);
    free_keys(keys, x.n);
    free_keys(attrs, x.n);
    tq_free(x.data);
    return rc;
}

static void query_usage(void)
{
    fprintf(stderr, "usage: tqvec query --dir DIR --queries VECTORS [-k 10] [--rerank R] [--nq N]\n"
                    "                   [--threads T] [--attrs] [--filter EXPR] [--nprobe P | --target-recall R]\n"
                    "Prints one line per query: its row, then key:score for each match, best first.\n"
                    "Partitioned segments are scanned whole unless --nprobe (partitions) or\n"
                    "--target-recall (a recall@10 their calibration turns into partitions) says.\n"
                    "--filter takes a Redis vector-set FILTER expression over the attributes,\n"
                    "e.g. '.year >= 1980 and .genre in [\"drama\", \"crime\"]'.\n");
}

int cmd_query(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dir", required_argument, 0, 'd'},   {"queries", required_argument, 0, 'q'},
        {"rerank", required_argument, 0, 'r'}, {"nq", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"attrs", no_argument, 0, 'a'},
        {"filter", required_argument, 0, 'F'}, {"nprobe", required_argument, 0, 'p'},
        {"target-recall", required_argument, 0, 'R'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
    };
    const char *dir = NULL, *queries = NULL;
    tqvec_search_params sp = {.k = 10};
    char *end;
    size_t nq = 0, v;
    bool attrs = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "k:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd': dir = optarg; break;
        case 'q': queries = optarg; break;
        case 'a': attrs = true; break;
        case 'F': sp.filter = optarg; break;
        case 'k':
            if (tool_parse_size(optarg, &v) || v < 1 || v > TQVEC_MAX_K)
                return tool_fail("query", "-k wants 1..%d, got '%s'", TQVEC_MAX_K, optarg);
            sp.k = (uint32_t)v;
            break;
        case 'r':
            if (tool_parse_size(optarg, &v) || v > TQVEC_MAX_RERANK)
                return tool_fail("query", "--rerank wants 0..%d, got '%s'", TQVEC_MAX_RERANK, optarg);
            sp.rerank = (uint32_t)v;
            break;
        case 'n':
            if (tool_parse_size(optarg, &nq))
                return tool_fail("query", "--nq wants a count, got '%s'", optarg);
            break;
        case 't':
            if (tool_parse_size(optarg, &v) || v < 1 || v > TQVEC_MAX_THREADS)
                return tool_fail("query", "--threads wants 1..%d, got '%s'", TQVEC_MAX_THREADS, optarg);
            sp.threads = (uint32_t)v;
            break;
        case 'p':
            if (tool_parse_size(optarg, &v) || v > UINT32_MAX)
                return tool_fail("query", "--nprobe wants a count of partitions, got '%s'", optarg);
            sp.nprobe = (uint32_t)v;
            break;
        case 'R':
            sp.target_recall = strtof(optarg, &end);
            if (*end || !(sp.target_recall > 0 && sp.target_recall <= 1))
                return tool_fail("query", "--target-recall wants a recall in (0, 1], got '%s'", optarg);
            break;
        default:
            query_usage();
            return 2;
        }
    }
    if (!dir || !queries) {
        query_usage();
        return tool_fail("query", "--dir and --queries are required");
    }
    tq_matrix q;
    tq_error e;
    if (tq_vectors_read(queries, nq, &q, &e))
        return tool_fail("query", "%s", e.msg);
    tqvec_collection *c;
    int rc = open_existing("query", dir, 0, &c);
    if (rc) {
        tq_free(q.data);
        return rc;
    }
    tqvec_collection_info info;
    tqvec_collection_get_info(c, &info);
    tqvec_error err;
    double total = 0;
    if (info.dim != q.d)
        rc = tool_fail("query", "%s holds vectors of dimension %u; %s has %zu", dir, info.dim, queries, q.d);
    for (size_t i = 0; !rc && i < q.n; i++) {
        tqvec_results *r;
        double t0 = tool_now();
        if (tqvec_collection_search(c, q.data + i * q.d, 1, &sp, &r, &err)) {
            rc = tool_fail("query", "query %zu: %s", i, err.message);
            break;
        }
        total += tool_now() - t0;
        printf("%zu", i);
        for (size_t j = 0; j < tqvec_results_count(r, 0); j++) {
            const tqvec_match *m = tqvec_results_get(r, 0, j);
            printf(" %.*s:%.6g", (int)m->key_len, m->key, (double)m->score);
            if (attrs && m->attrs)
                printf(" %.*s", (int)m->attrs_len, m->attrs);
        }
        printf("\n");
        tqvec_results_free(r);
    }
    if (!rc && q.n)
        fprintf(stderr, "tqvec query: %zu queries, %.1f us each on average (%.0f QPS)\n", q.n,
                total / (double)q.n * 1e6, (double)q.n / total);
    tqvec_collection_close(c, NULL);
    tq_free(q.data);
    return rc;
}

static const char *metric_text(int m)
{
    return tool_metric_name(m);
}

int cmd_info(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: tqvec info DIR\n");
        return 2;
    }
    tqvec_collection *c;
    int rc = open_existing("info", argv[1], 0, &c);
    if (rc)
        return rc;
    tqvec_collection_info i;
    tqvec_collection_get_info(c, &i);
    static const char *const refine[] = {"none", "none", "code8", "fp32", "fp16"};
    printf("collection %s\n"
           "  dim %u, metric %s, %d bits %s, %s codebook, correction %s, refine %s, centering %s, seed %llu\n"
           "  %llu elements, %llu deleted awaiting compaction, %u segments (%llu partitions), %llu rows in the log (%llu bytes)\n"
           "  %llu bytes per vector of codes, %llu of refine data; simd %s\n",
           argv[1], i.dim, metric_text(i.metric), i.bits, i.variant == TQVEC_VARIANT_PROD ? "prod" : "mse",
           i.codebook == TQVEC_CODEBOOK_VECTOR ? "vector" : "scalar",
           i.correction == TQVEC_CORRECTION_NONE ? "none" : "ip", refine[i.refine >= 0 && i.refine <= 4 ? i.refine : 0],
           i.center == TQVEC_CENTER_FIRST_BATCH ? "on the first batch's mean"
           : i.center == TQVEC_CENTER_AUTO      ? "auto (decided by the first add)"
                                                : "none",
           (unsigned long long)i.seed,
           (unsigned long long)i.count, (unsigned long long)i.deleted, i.segments,
           (unsigned long long)tqvec_collection_partitions(c), (unsigned long long)i.unsealed,
           (unsigned long long)i.log_bytes, (unsigned long long)i.bytes_per_vector,
           (unsigned long long)i.refine_bytes_per_vector, i.simd);
    tqvec_collection_close(c, NULL);
    return 0;
}

/* compact and verify: open, one call, report. */
static int one_call(const char *cmd, int argc, char **argv, int (*call)(tqvec_collection *, tqvec_error *))
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: tqvec %s DIR\n", cmd);
        return 2;
    }
    tqvec_collection *c;
    int rc = open_existing(cmd, argv[1], 0, &c);
    if (rc)
        return rc;
    tqvec_error err;
    double t0 = tool_now();
    if (call(c, &err))
        rc = tool_fail(cmd, "%s", err.message);
    else
        printf("%s: %s done in %.2f s\n", argv[1], cmd, tool_now() - t0);
    tqvec_error cerr;
    if (tqvec_collection_close(c, &cerr) && !rc)
        rc = tool_fail(cmd, "%s", cerr.message);
    return rc;
}

int cmd_compact(int argc, char **argv)
{
    return one_call("compact", argc, argv, tqvec_collection_compact);
}

int cmd_verify(int argc, char **argv)
{
    return one_call("verify", argc, argv, tqvec_collection_verify);
}
