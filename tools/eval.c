/*
 * tqvec eval: the evaluation harness. Recall and latency over a sweep of
 * configurations (bits x variant x correction x center, then per index
 * scorer x re-rank x k x threads x clients), against exact ground truth
 * from a file or computed here, on one of three targets:
 *   memory  an in-memory index built from the base (encode time measured)
 *   dir     a stored collection (--dir; built from the base when absent)
 *   server  a running tqvecd (--server HOST:PORT), end to end over RESP;
 *           one vector set per index configuration, created with TQ.CREATE
 *           and loaded with pipelined VADD when it does not exist yet.
 *
 * Method: each query is sent on its own (or --batch at a time: one batch
 * call in memory, a pipeline of VSIMs on a server) by `clients` concurrent
 * threads or connections pulling from a shared counter; `threads` splits
 * each search inside the engine. QPS is queries / wall time of the whole
 * set; latency is per query (a batch's time / its size in memory; the time
 * to the query's reply on a server). metrics.c defines the recall figures;
 * report.c writes JSON lines, the plots and the report pages, every record
 * carrying dataset checksum, seed, revision, CPU, SIMD level and command.
 */
#include "tq_tools.h"

#include "resp_client.h"

#define MAX_LIST 16

typedef struct eval_opts {
    const char *base, *queries, *gt, *json, *name, *report;
    int metric;
    unsigned bits[MAX_LIST], rerank[MAX_LIST], ks[MAX_LIST], threads[MAX_LIST], clients[MAX_LIST];
    int nbits, nrerank, nk, nthreads, nclients;
    unsigned nprobe[MAX_LIST];
    int nnprobe;
    double target[MAX_LIST];  /* --target-recall: more probe settings, after the nprobe values */
    int ntarget;
    bool nprobe_given;
    bool partition;     /* partition the in-memory index (--nlist, or a nonzero --nprobe) */
    bool nlist_given;
    unsigned nlist;     /* its partitions; 0: the default for the count */
    int variant[MAX_LIST], correction[MAX_LIST], scorer[MAX_LIST];
    int nvariant, ncorrection, nscorer;
    int refine; /* index into refine_names, or -1 for the default */
    int center[MAX_LIST], ncenter;
    int codebook[MAX_LIST], ncodebook;
    size_t max_queries, max_base, kmax;
    uint64_t seed;
    size_t batch;       /* queries per search call, or VSIMs per pipeline */
    size_t repeat;      /* runs of the query set per point; QPS is their median */
    const char *dir;    /* evaluate this stored collection (built from --base if absent) */
    const char *server; /* evaluate a running tqvecd */
    const char *key;    /* its vector set (default: one per configuration) */
    int targets[3], ntargets; /* indexes into target_names, in sweep order */
    size_t points;            /* sweep points in all, for the progress line */
} eval_opts;

enum { TARGET_MEMORY, TARGET_DIR, TARGET_SERVER };
static const char *const target_names[] = {"memory", "dir", "server"};

static const char *const variant_names[] = {"mse", "prod"};
static const char *const correction_names[] = {"ip", "none"};
static const int variant_values[] = {TQVEC_VARIANT_MSE, TQVEC_VARIANT_PROD};
static const int correction_values[] = {TQVEC_CORRECTION_IP, TQVEC_CORRECTION_NONE};
static const char *const scorer_names[] = {"lut", "float"};
/* In tqvec_refine order (value - 1), so refine_names[refine - 1] names it. */
static const char *const refine_names[] = {"none", "code8", "fp32", "fp16"};
static const int refine_values[] = {TQVEC_REFINE_NONE, TQVEC_REFINE_CODE8, TQVEC_REFINE_FP32, TQVEC_REFINE_FP16};
static const char *const center_names[] = {"auto", "none", "mean"};
static const int center_values[] = {TQVEC_CENTER_AUTO, TQVEC_CENTER_NONE, TQVEC_CENTER_FIRST_BATCH};
/* The same, as TQ.CREATE spells them. */
static const char *const center_create_names[] = {"auto", "none", "first-batch"};
static const int scorer_values[] = {TQVEC_SCORER_LUT, TQVEC_SCORER_FLOAT};
/* default: whatever a new index gets (the record names the one it got) */
static const char *const codebook_names[] = {"default", "scalar", "vector"};
static const int codebook_values[] = {TQVEC_CODEBOOK_DEFAULT, TQVEC_CODEBOOK_SCALAR, TQVEC_CODEBOOK_VECTOR};

static size_t center_index(int center)
{
    for (size_t i = 0; i < sizeof(center_values) / sizeof(center_values[0]); i++)
        if (center_values[i] == center)
            return i;
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: tqvec eval --base FILE [--queries FILE] [--gt FILE] [--metric l2|ip|cosine]\n"
            "                  [--bits 1,2,3,4] [--variant mse,prod] [--correction ip,none]\n"
            "                  [--center auto,none,mean] [--codebook default,scalar,vector]\n"
            "                  [--rerank 0,4,16] [--refine fp32|fp16|code8]\n"
            "                  [--scorer lut,float] [-k 10[,100]] [--threads 1[,2]] [--clients 1[,2]]\n"
            "                  [--json FILE|-] [--report DIR] [--nq N] [--nb N] [--seed S] [--batch B]\n"
            "                  [--repeat R] [--name NAME] [--dir DIR] [--server HOST:PORT [--key NAME]]\n"
            "                  [--targets memory,dir,server] [--nlist N] [--nprobe 8,16,32]\n"
            "                  [--target-recall 0.9,0.95]\n"
            "Vector files: .fvecs, .bvecs, .npy, IDX, or an ann-benchmarks .hdf5 (its train set;\n"
            "then test, neighbors and the metric come from the same file unless given).\n"
            "Ground truth: .ivecs (0-based rows) or FILE.hdf5:neighbors; without --gt it is\n"
            "computed exactly on every core. Lists sweep: every combination is measured.\n"
            "--threads splits each search; --clients runs that many query streams at once\n"
            "(connections with --server); --batch sends B queries per call (pipelined VSIMs\n"
            "on a server); --repeat runs each point R times and reports the median QPS.\n"
            "--dir evaluates a stored collection whose keys are row numbers of --base,\n"
            "building it when DIR holds none. --server evaluates tqvecd end to end:\n"
            "one vector set per index configuration (tqeval:<dataset>:<settings>, or --key),\n"
            "created and loaded over RESP when absent. --targets measures the same points on\n"
            "several of these in one run (default: the one --dir/--server names, else memory).\n"
            "--nlist partitions the in-memory index (k-means into N clusters, 0: 4 sqrt(n)) after\n"
            "the add, timed as part of the build; --nprobe sweeps how many partitions a query scans\n"
            "(0: all; a nonzero value partitions with the default --nlist); --target-recall sweeps\n"
            "recalls asked of the calibration instead (after the --nprobe values).\n"
            "--report DIR writes an SVG plot of\n"
            "recall against QPS per k, a Markdown and a self-contained HTML report, and the\n"
            "JSON lines.\n");
}

/* An option taking a list of counts in lo..hi. */
static int parse_counts(const char *opt, const char *arg, unsigned lo, unsigned hi, unsigned *out, int *n)
{
    if ((*n = tool_parse_uint_list(arg, lo, hi, out, MAX_LIST)) < 0)
        return tool_fail("eval", "%s wants a list of values in %u..%u, got '%s'", opt, lo, hi, arg);
    return 0;
}

static int parse_args(int argc, char **argv, eval_opts *o)
{
    static const struct option longopts[] = {
        {"base", required_argument, 0, 'b'},       {"queries", required_argument, 0, 'q'},
        {"gt", required_argument, 0, 'g'},         {"metric", required_argument, 0, 'm'},
        {"bits", required_argument, 0, 'B'},       {"variant", required_argument, 0, 'V'},
        {"correction", required_argument, 0, 'C'}, {"rerank", required_argument, 0, 'R'},
        {"json", required_argument, 0, 'j'},       {"nq", required_argument, 0, 'Q'},
        {"nb", required_argument, 0, 'N'},         {"seed", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'},    {"name", required_argument, 0, 'n'},
        {"scorer", required_argument, 0, 'S'},     {"refine", required_argument, 0, 'F'},
        {"center", required_argument, 0, 'M'},     {"codebook", required_argument, 0, 'W'},     {"batch", required_argument, 0, 'T'},
        {"dir", required_argument, 0, 'D'},        {"server", required_argument, 0, 'X'},
        {"key", required_argument, 0, 'K'},        {"clients", required_argument, 0, 'c'},
        {"report", required_argument, 0, 'P'},     {"k", required_argument, 0, 'k'},
        {"repeat", required_argument, 0, 'r'},     {"targets", required_argument, 0, 'G'},
        {"nlist", required_argument, 0, 'L'},      {"nprobe", required_argument, 0, 'p'},
        {"target-recall", required_argument, 0, 'e'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0},
    };
    *o = (eval_opts){.seed = TQVEC_DEFAULT_SEED, .batch = 1, .repeat = 1, .nk = 1, .nthreads = 1, .nclients = 1,
                     .nnprobe = 1};
    o->ks[0] = 10;
    o->threads[0] = 1;
    o->clients[0] = 1;
    o->bits[0] = 4;
    o->nbits = 1;
    o->nrerank = 1;
    o->variant[0] = 0;
    o->nvariant = 1;
    o->correction[0] = 0;
    o->ncorrection = 1;
    o->scorer[0] = 0;
    o->nscorer = 1;
    o->refine = -1;
    o->center[0] = 0;
    o->ncenter = 1;
    o->codebook[0] = 0;
    o->ncodebook = 1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': o->base = optarg; break;
        case 'q': o->queries = optarg; break;
        case 'g': o->gt = optarg; break;
        case 'j': o->json = optarg; break;
        case 'n': o->name = optarg; break;
        case 'm':
            if (!(o->metric = tool_parse_metric(optarg)))
                return tool_fail("eval", "unknown metric '%s' (l2, ip, cosine)", optarg);
            break;
        case 'B':
            if (parse_counts("--bits", optarg, TQVEC_MIN_BITS, TQVEC_MAX_BITS, o->bits, &o->nbits))
                return 1;
            break;
        case 'R':
            if (parse_counts("--rerank", optarg, 0, TQVEC_MAX_RERANK, o->rerank, &o->nrerank))
                return 1;
            break;
        case 'k':
            if (parse_counts("-k", optarg, 1, 1000, o->ks, &o->nk))
                return 1;
            break;
        case 't':
            if (parse_counts("--threads", optarg, 1, TQVEC_MAX_THREADS, o->threads, &o->nthreads))
                return 1;
            break;
        case 'c':
            if (parse_counts("--clients", optarg, 1, 256, o->clients, &o->nclients))
                return 1;
            break;
        case 'r':
            if (tool_parse_size(optarg, &o->repeat) || o->repeat < 1 || o->repeat > 100)
                return tool_fail("eval", "--repeat wants 1..100, got '%s'", optarg);
            break;
        case 'G':
            if ((o->ntargets = tool_parse_name_list(optarg, target_names, 3, o->targets, 3)) < 0)
                return tool_fail("eval", "--targets wants memory, dir and/or server, got '%s'", optarg);
            break;
        case 'L': {
            unsigned v[1];
            int one;
            if (parse_counts("--nlist", optarg, 0, 65536, v, &one))
                return 1;
            if (one != 1)
                return tool_fail("eval", "--nlist takes one value, got '%s'", optarg);
            o->nlist = v[0];
            o->partition = o->nlist_given = true;
            break;
        }
        case 'e': {
            char *list = tq_strdup(optarg), *save = NULL;
            o->ntarget = 0;
            for (char *t = strtok_r(list, ",", &save); t && o->ntarget < MAX_LIST; t = strtok_r(NULL, ",", &save)) {
                char *end;
                const double v = strtod(t, &end);
                if (*end || !(v > 0 && v <= 1)) {
                    tq_free(list);
                    return tool_fail("eval", "--target-recall wants values in (0, 1], got '%s'", optarg);
                }
                o->target[o->ntarget++] = v;
            }
            tq_free(list);
            o->partition |= o->ntarget > 0;
            break;
        }
        case 'p':
            o->nprobe_given = true;
            if (parse_counts("--nprobe", optarg, 0, 65536, o->nprobe, &o->nnprobe))
                return 1;
            for (int i = 0; i < o->nnprobe; i++)
                o->partition |= o->nprobe[i] > 0;
            break;
        case 'X': o->server = optarg; break;
        case 'K': o->key = optarg; break;
        case 'P': o->report = optarg; break;
        case 'V':
            if ((o->nvariant = tool_parse_name_list(optarg, variant_names, 2, o->variant, MAX_LIST)) < 0)
                return tool_fail("eval", "--variant wants mse and/or prod, got '%s'", optarg);
            break;
        case 'C':
            if ((o->ncorrection = tool_parse_name_list(optarg, correction_names, 2, o->correction, MAX_LIST)) < 0)
                return tool_fail("eval", "--correction wants ip and/or none, got '%s'", optarg);
            break;
        case 'M':
            if ((o->ncenter = tool_parse_name_list(optarg, center_names, 3, o->center, MAX_LIST)) < 0)
                return tool_fail("eval", "--center wants auto, none and/or mean, got '%s'", optarg);
            break;
        case 'W':
            if ((o->ncodebook = tool_parse_name_list(optarg, codebook_names, 3, o->codebook, MAX_LIST)) < 0)
                return tool_fail("eval", "--codebook wants default, scalar and/or vector, got '%s'", optarg);
            break;
        case 'F':
            if (tool_parse_name_list(optarg, refine_names, 4, &o->refine, 1) != 1)
                return tool_fail("eval", "--refine wants one of none, code8, fp32, fp16, got '%s'", optarg);
            break;
        case 'S':
            if ((o->nscorer = tool_parse_name_list(optarg, scorer_names, 2, o->scorer, MAX_LIST)) < 0)
                return tool_fail("eval", "--scorer wants lut and/or float, got '%s'", optarg);
            break;
        case 'Q':
            if (tool_parse_size(optarg, &o->max_queries))
                return tool_fail("eval", "--nq wants a count, got '%s'", optarg);
            break;
        case 'N':
            if (tool_parse_size(optarg, &o->max_base))
                return tool_fail("eval", "--nb wants a count, got '%s'", optarg);
            break;
        case 's': {
            size_t s;
            if (tool_parse_size(optarg, &s))
                return tool_fail("eval", "--seed wants an unsigned integer, got '%s'", optarg);
            o->seed = s ? s : TQVEC_DEFAULT_SEED;
            break;
        }
        case 'D':
            o->dir = optarg;
            break;
        case 'T':
            if (tool_parse_size(optarg, &o->batch) || o->batch < 1 || o->batch > 4096)
                return tool_fail("eval", "--batch wants 1..4096, got '%s'", optarg);
            break;
        case 'h':
            usage();
            return 2;
        default:
            usage();
            return 1;
        }
    }
    if (optind < argc)
        return tool_fail("eval", "unexpected argument '%s'", argv[optind]);
    if (!o->base) {
        usage();
        return tool_fail("eval", "--base is required");
    }
    if (!tq_hdf5_is_path(o->base) && (!o->queries || !o->metric)) {
        usage();
        return tool_fail("eval", "--queries and --metric are required (they come from the file only for .hdf5)");
    }
    if (o->gt && o->max_base)
        return tool_fail("eval", "--nb cuts the base, so a ground-truth file no longer applies: drop --gt");
    if (o->ntargets == 0) { /* the target the locations name */
        if (o->dir && o->server)
            return tool_fail("eval", "--dir and --server together need --targets (e.g. memory,dir,server)");
        o->targets[0] = o->server ? TARGET_SERVER : o->dir ? TARGET_DIR : TARGET_MEMORY;
        o->ntargets = 1;
    }
    bool wants[3] = {false, false, false};
    for (int i = 0; i < o->ntargets; i++)
        wants[o->targets[i]] = true;
    if (wants[TARGET_DIR] != (o->dir != NULL))
        return tool_fail("eval", o->dir ? "--dir is given but --targets has no 'dir'" : "target 'dir' needs --dir DIR");
    if (wants[TARGET_SERVER] != (o->server != NULL))
        return tool_fail("eval", o->server ? "--server is given but --targets has no 'server'"
                                           : "target 'server' needs --server HOST:PORT");
    if (o->key && !o->server)
        return tool_fail("eval", "--key names a vector set on --server");
    bool one_index = o->nbits == 1 && o->nvariant == 1 && o->ncorrection == 1 && o->ncenter == 1 &&
                     o->ncodebook == 1;
    if ((o->dir || o->key) && !one_index)
        return tool_fail("eval", "%s evaluates one index: give one value each for --bits, --variant, --correction, "
                                 "--center and --codebook", o->dir ? "--dir" : "--key");
    if (o->server && o->codebook[0] != 0)
        return tool_fail("eval", "tqvecd sets use the default codebook (TQ.CREATE has no other)");
    if (o->server && (o->ncorrection > 1 || o->correction[0] != 0 || o->nscorer > 1 || o->scorer[0] != 0))
        return tool_fail("eval", "tqvecd sets use correction ip and the lut scorer (TQ.CREATE has no other)");
    if (o->server && o->nthreads > 1)
        return tool_fail("eval", "--threads is the daemon's setting (tqvecd --threads); sweep --clients instead");
    o->kmax = 0;
    for (int i = 0; i < o->nk; i++)
        o->kmax = o->ks[i] > o->kmax ? o->ks[i] : o->kmax;
    /* The probe settings: the nprobe values, then the target recalls. */
    if (o->ntarget && !o->nprobe_given)
        o->nnprobe = 0;
    o->nnprobe += o->ntarget;
    o->points = (size_t)o->nbits * (size_t)o->nvariant * (size_t)o->ncorrection * (size_t)o->ncenter *
                (size_t)o->ncodebook *
                (size_t)o->ntargets * (size_t)o->nscorer * (size_t)o->nrerank * (size_t)o->nk *
                (size_t)o->nthreads * (size_t)o->nclients * (size_t)o->nnprobe;
    if (o->nlist_given && (o->dir || o->server))
        return tool_fail("eval", "--nlist partitions the in-memory index; stored sets partition their sealed "
                                 "segments themselves (4 sqrt(rows), at most 512 KiB of centroids, each)");
    return 0;
}

/* A name for the dataset in reports: --name, else the base file's folder. */
static void dataset_name(const eval_opts *o, char *out, size_t cap)
{
    if (o->name) {
        snprintf(out, cap, "%s", o->name);
        return;
    }
    const char *slash = strrchr(o->base, '/');
    if (!slash) {
        snprintf(out, cap, ".");
        return;
    }
    const char *start = slash;
    while (start > o->base && start[-1] != '/')
        start--;
    snprintf(out, cap, "%.*s", (int)(slash - start), start);
}

/* What every point is measured on. */
typedef struct eval_data {
    tq_matrix base, queries;
    tq_imatrix gt; /* at least kmax true neighbours per query */
    int metric;
} eval_data;

/* One measured point while its repeats run: its record (by index: the
 * record array grows) and the samples its figures come from. */
typedef struct point {
    size_t rec;
    const tool_target *target;
    tqvec_search_params sp;
    unsigned clients;
    double *qps; /* one per repeat */
    double *lat; /* repeat x nq */
} point;

/* One run of every query for a point (repeat number rep): its QPS and
 * latencies are stored; recall is taken from the first run, the answers
 * being the same every run (fixed seeds; ties broken by row). */
static int measure_once(point *pt, const eval_data *data, size_t batch, size_t rep, const char *label,
                        tool_eval_record *rec)
{
    const tq_matrix *queries = &data->queries;
    const size_t nq = queries->n, k = pt->sp.k;
    tool_query_result res;
    char why[320];
    if (tool_run_queries(pt->target, queries, nq, &pt->sp, pt->clients, batch, label, &res, why, sizeof(why)))
        return tool_fail("eval", "%s", why);
    pt->qps[rep] = res.wall_s > 0 ? (double)nq / res.wall_s : 0.0;
    memcpy(pt->lat + rep * nq, res.lat_us, nq * sizeof(double));
    if (rep == 0) {
        tool_recall acc;
        tool_recall_init(&acc, k);
        for (size_t i = 0; i < nq; i++)
            tool_recall_add_query(&acc, data->metric, &data->base, queries->data + i * queries->d,
                                  res.found + i * k, res.nfound[i], data->gt.data + i * data->gt.d);
        rec->recall_at_k = tool_recall_at_k(&acc);
        rec->recall_at_k_dist = tool_recall_at_k_by_distance(&acc);
        rec->recall_at_1 = tool_recall_at_1(&acc);
        rec->recall_1_at_k = tool_recall_1_at_k(&acc);
    }
    tool_query_result_free(&res);
    return 0;
}

/* XXH3 over the distinct input files (an ann-benchmarks file may be base,
 * queries and truth at once) into out. */
static int inputs_checksum(const eval_opts *o, char out[17])
{
    char files[3][4096];
    const char *paths[3];
    const char *specs[3] = {o->base, o->queries, o->gt};
    size_t nfiles = 0;
    for (int i = 0; i < 3; i++) {
        if (!specs[i])
            continue;
        tq_hdf5_spec(specs[i], files[nfiles], sizeof(files[nfiles]));
        bool seen = false;
        for (size_t j = 0; j < nfiles && !seen; j++)
            seen = !strcmp(files[j], files[nfiles]);
        if (!seen) {
            paths[nfiles] = files[nfiles];
            nfiles++;
        }
    }
    tq_error err;
    if (tool_files_checksum(paths, nfiles, out, &err))
        return tool_fail("eval", "%s", err.msg);
    return 0;
}

/* An ann-benchmarks file names its queries, truth and metric itself. */
static int resolve_hdf5(eval_opts *o, char *queries, size_t cap)
{
    if (!tq_hdf5_is_path(o->base))
        return 0;
    if (!tq_hdf5_available())
        return tool_fail("eval", "%s: this tqvec was built without HDF5 support (install libhdf5-dev and rebuild)",
                         o->base);
    if (!o->queries) {
        snprintf(queries, cap, "%s:test", o->base);
        o->queries = queries;
    }
    if (!o->gt && !o->max_base)
        o->gt = o->base; /* its "neighbors" */
    if (!o->metric) {
        char distance[64];
        tq_error err;
        if (tq_hdf5_distance(o->base, distance, sizeof(distance), &err))
            return tool_fail("eval", "%s (give --metric)", err.msg);
        o->metric = !strcmp(distance, "angular")     ? TQVEC_METRIC_COSINE
                    : !strcmp(distance, "euclidean") ? TQVEC_METRIC_L2
                    : !strcmp(distance, "dot")       ? TQVEC_METRIC_IP
                                                     : 0;
        if (!o->metric)
            return tool_fail("eval", "%s: distance '%s' is not one tqvec serves (angular, euclidean, dot)", o->base,
                             distance);
    }
    return 0;
}

static int load_inputs(const eval_opts *o, tq_matrix *base, tq_matrix *queries, tq_imatrix *gt)
{
    tq_error err;
    if (tq_vectors_read(o->base, o->max_base, base, &err))
        return tool_fail("eval", "%s", err.msg);
    if (tq_vectors_read(o->queries, o->max_queries, queries, &err))
        return tool_fail("eval", "%s", err.msg);
    if (base->d != queries->d)
        return tool_fail("eval", "base has dimension %zu but queries have %zu", base->d, queries->d);
    if (base->n == 0 || queries->n == 0)
        return tool_fail("eval", "base and queries must not be empty");
    if (o->gt) {
        if (tq_ids_read(o->gt, o->max_queries, gt, &err))
            return tool_fail("eval", "%s", err.msg);
        if (gt->n < queries->n)
            return tool_fail("eval", "%s has %zu rows for %zu queries", o->gt, gt->n, queries->n);
        if (gt->d < o->kmax)
            return tool_fail("eval", "%s holds %zu neighbours per query, fewer than k=%zu", o->gt, gt->d, o->kmax);
        for (size_t i = 0; i < queries->n * gt->d; i++)
            if (gt->data[i] < -1 || gt->data[i] >= (int64_t)base->n)
                return tool_fail("eval", "%s: row %zu names base row %d, outside 0..%zu", o->gt, i / gt->d,
                                 gt->data[i], base->n - 1);
        return 0;
    }
    gt->n = queries->n;
    gt->d = o->kmax;
    gt->data = tq_malloc(gt->n * gt->d * sizeof(int32_t));
    if (!gt->data)
        return tool_fail("eval", "out of memory for ground truth");
    tool_progress prog;
    tool_progress_begin(&prog, "ground truth", "queries", queries->n);
    double t0 = tool_now();
    int rc = tq_groundtruth(base, queries, (tq_metric)o->metric, o->kmax, 0, gt->data, NULL,
                            tool_progress_callback, &prog, &err);
    tool_progress_end(&prog);
    if (rc)
        return tool_fail("eval", "ground truth: %s", err.msg);
    fprintf(stderr, "ground truth: %zu queries x %zu base, exact, %.1f s\n", queries->n, base->n, tool_now() - t0);
    return 0;
}

/* The collection in o->dir, built from the base (keys = row numbers) when
 * the directory holds none; *build_s is the build time, 0 if it existed. */
static int open_or_build(const eval_opts *o, const tqvec_collection_options *create, const tq_matrix *base,
                         tqvec_collection **c, double *build_s)
{
    tqvec_collection_options plain = {0};
    tqvec_error err;
    *build_s = 0;
    if (!tqvec_collection_open(o->dir, &plain, c, &err))
        return 0;
    if (err.code != TQVEC_ENOTFOUND)
        return tool_fail("eval", "%s", err.message);
    if (tqvec_collection_open(o->dir, create, c, &err))
        return tool_fail("eval", "%s", err.message);
    tool_progress prog;
    tool_progress_begin(&prog, "build", "vectors", base->n);
    double t0 = tool_now();
    int rc = 0;
    if (tool_add_rows(*c, base, NULL, &prog, &err) || tqvec_collection_sync(*c, &err))
        rc = tool_fail("eval", "building %s: %s", o->dir, err.message);
    *build_s = tool_now() - t0;
    tool_progress_end(&prog);
    if (rc) {
        tqvec_collection_close(*c, NULL);
        *c = NULL;
    }
    return rc;
}

/* The configuration's vector set on the server: reused when it holds the
 * base, else created with TQ.CREATE and loaded with pipelined VADD (timed
 * as the build). Bytes per vector (scanned, and refine) from VINFO. */
static int server_set(const eval_opts *o, const tqvec_collection_options *co, const char *refine,
                      const tq_matrix *base, tool_target *t, double *build_s, uint64_t *bytes_per_vector,
                      uint64_t *refine_bytes, unsigned *nlist)
{
    resp_client c;
    char why[320];
    if (resp_connect(o->server, &c, why, sizeof(why)))
        return tool_fail("eval", "%s", why);
    int rc = 0;
    long long have = 0;
    *build_s = 0;
    if (resp_call(&c, 2, (const char *[]){"VCARD", t->key})) {
        rc = tool_fail("eval", "VCARD %s: %s", t->key, c.nparts ? c.part[0] : "connection lost");
        goto out;
    }
    have = strtoll(c.part[0], NULL, 10);
    if (have != 0 && have != (long long)base->n) {
        rc = tool_fail("eval", "%s on %s holds %lld elements, the base has %zu: DEL it or give another --key", t->key,
                       o->server, have, base->n);
        goto out;
    }
    if (have == 0) {
        char dim[16], bits[8], seed[24];
        snprintf(dim, sizeof(dim), "%u", co->dim);
        snprintf(bits, sizeof(bits), "%d", co->bits);
        snprintf(seed, sizeof(seed), "%llu", (unsigned long long)co->seed);
        const char *args[] = {"TQ.CREATE", t->key, "DIM", dim, "METRIC", tool_metric_name(co->metric), "BITS", bits,
                              "VARIANT", co->variant == TQVEC_VARIANT_PROD ? "prod" : "mse", "REFINE", refine,
                              "SEED", seed, "CENTER", center_create_names[center_index(co->center)]};
        if (resp_call(&c, 16, args)) {
            rc = tool_fail("eval", "TQ.CREATE %s: %s", t->key, c.nparts ? c.part[0] : "connection lost");
            goto out;
        }
        tool_progress prog;
        tool_progress_begin(&prog, "load", "vectors", base->n);
        const double t0 = tool_now();
        rc = resp_add_rows(&c, t->key, base, 256, &prog, why, sizeof(why), NULL);
        *build_s = tool_now() - t0;
        tool_progress_end(&prog);
        if (rc) {
            rc = tool_fail("eval", "loading %s: %s", t->key, why);
            goto out;
        }
        /* SAVE seals what the log holds and returns once the sealed
         * segments are partitioned: part of the build. */
        if (o->partition) {
            if (resp_call(&c, 1, (const char *[]){"SAVE"})) {
                rc = tool_fail("eval", "SAVE: %s", c.nparts ? c.part[0] : "connection lost");
                goto out;
            }
            *build_s = tool_now() - t0;
        }
    }
    if (o->partition && resp_call(&c, 2, (const char *[]){"VINFO", t->key}) == 0) {
        long long parts = 0;
        if (resp_reply_number(&c, "partitions", &parts))
            *nlist = (unsigned)parts;
    }
    long long total = 0, kept = 0;
    if (resp_call(&c, 2, (const char *[]){"VINFO", t->key}) || !resp_reply_number(&c, "bytes-per-vector", &total) ||
        !resp_reply_number(&c, "refine-bytes-per-vector", &kept))
        rc = tool_fail("eval", "VINFO %s: %s", t->key, c.nparts ? c.part[0] : "connection lost");
    *bytes_per_vector = (uint64_t)(total - kept);
    *refine_bytes = (uint64_t)kept;
out:
    resp_close(&c);
    return rc;
}

/* The daemon's resident memory (INFO memory), 0 if it does not say. */
static uint64_t server_rss(const char *server)
{
    resp_client c;
    char why[320];
    long long rss = 0;
    if (resp_connect(server, &c, why, sizeof(why)))
        return 0;
    if (resp_call(&c, 2, (const char *[]){"INFO", "memory"}) || !resp_reply_number(&c, "used_memory_rss", &rss))
        rss = 0;
    resp_close(&c);
    return (uint64_t)rss;
}

/* The index or set one sweep configuration is measured on. */
typedef struct eval_index {
    tool_target target;
    tqvec_index *ix;
    tqvec_collection *coll;
    double build_s, seal_s;
    unsigned nlist;
    uint64_t bytes_per_vector, refine_bytes;
    int codebook; /* tqvec_codebook the index got */
} eval_index;

static int build_index(const eval_opts *o, int kind, const tqvec_index_options *opts, const char *refine_name,
                       const char *dataset, const tq_matrix *base, eval_index *out)
{
    memset(out, 0, sizeof(*out));
    tqvec_error err;
    tqvec_collection_options co = {.dim = opts->dim, .metric = opts->metric, .bits = opts->bits,
                                   .variant = opts->variant, .correction = opts->correction, .seed = opts->seed,
                                   .refine = opts->refine, .center = opts->center, .codebook = opts->codebook,
                                   .create = 1};
    if (kind == TARGET_SERVER) {
        out->target.server = o->server;
        if (o->key)
            snprintf(out->target.key, sizeof(out->target.key), "%s", o->key);
        else
            snprintf(out->target.key, sizeof(out->target.key), "tqeval:%s:%zu:%s:b%d:%s:%s:%s:s%llu", dataset,
                     base->n, tool_metric_name(opts->metric), opts->bits,
                     opts->variant == TQVEC_VARIANT_PROD ? "prod" : "mse",
                     center_names[center_index(opts->center)], refine_name,
                     (unsigned long long)opts->seed);
        return server_set(o, &co, refine_name, base, &out->target, &out->build_s, &out->bytes_per_vector,
                          &out->refine_bytes, &out->nlist);
    }
    if (kind == TARGET_DIR) {
        if (open_or_build(o, &co, base, &out->coll, &out->build_s))
            return 1;
        if (o->partition) {
            /* Partitioned as sealed: the rows still in the log sealed too,
             * and the background partitioner waited for (a build's time
             * includes it). */
            const double t1 = tool_now();
            if (out->build_s > 0 && tqvec_collection_compact(out->coll, &err))
                return tool_fail("eval", "sealing %s: %s", o->dir, err.message);
            tqvec_collection_wait_partitioned(out->coll, NULL);
            out->seal_s = tool_now() - t1;
            if (out->build_s > 0)
                out->build_s += out->seal_s;
            out->nlist = (unsigned)tqvec_collection_partitions(out->coll);
        }
        tqvec_collection_info info;
        tqvec_collection_get_info(out->coll, &info);
        if (info.dim != base->d || info.metric != o->metric)
            return tool_fail("eval", "%s holds dimension %u, metric %s; the base has %zu, %s asked", o->dir,
                             info.dim, tool_metric_name(info.metric), base->d, tool_metric_name(o->metric));
        out->bytes_per_vector = info.bytes_per_vector;
        out->refine_bytes = info.refine_bytes_per_vector;
        out->codebook = info.codebook;
        out->target.coll = out->coll;
        return 0;
    }
    if (tqvec_index_create(opts, &out->ix, &err))
        return tool_fail("eval", "%s", err.message);
    const double t0 = tool_now();
    if (tqvec_index_add(out->ix, base->data, base->n, NULL, &err))
        return tool_fail("eval", "adding the base: %s", err.message);
    if (o->partition) {
        /* As a sealer would: every core of the machine. */
        const long cores = sysconf(_SC_NPROCESSORS_ONLN);
        const uint32_t threads = cores < 1 ? 1 : cores > TQVEC_MAX_THREADS ? TQVEC_MAX_THREADS : (uint32_t)cores;
        const double t1 = tool_now();
        if (tqvec_index_partition(out->ix, o->nlist, threads, &err))
            return tool_fail("eval", "partitioning: %s", err.message);
        out->seal_s = tool_now() - t1;
        out->nlist = tqvec_index_partitions(out->ix);
    }
    out->build_s = tool_now() - t0;
    tqvec_index_info info;
    tqvec_index_get_info(out->ix, &info);
    out->bytes_per_vector = info.bytes_per_vector;
    out->refine_bytes = info.refine_bytes_per_vector;
    out->codebook = info.codebook;
    out->target.ix = out->ix;
    return 0;
}

static void free_index(eval_index *x)
{
    tqvec_index_free(x->ix);
    tqvec_collection_close(x->coll, NULL);
    memset(x, 0, sizeof(*x));
}

/* Appends a record, growing the array; NULL when out of memory. */
static tool_eval_record *new_record(tool_eval_run *run, size_t *cap)
{
    if (run->nrec == *cap) {
        size_t n = *cap ? *cap * 2 : 32;
        tool_eval_record *p = tq_realloc(run->rec, n * sizeof(*p));
        if (!p)
            return NULL;
        run->rec = p;
        *cap = n;
    }
    tool_eval_record *r = &run->rec[run->nrec++];
    memset(r, 0, sizeof(*r));
    return r;
}

static void print_header(FILE *table)
{
    fprintf(table, "%-6s %4s %-6s %-4s %-4s %-5s %6s %4s %3s %3s %5s | %6s %6s %6s | %8s %8s %8s %8s | %7s %5s %6s %s\n",
            "target", "bits", "var", "corr", "cent", "score", "rerank", "k", "thr", "cli", "probe", "R@1", "R@k", "R1@k",
            "QPS", "p50 us", "p95 us", "p99 us", "build s", "B/vec", "RSS MB", "");
}

static void print_record(FILE *table, const tool_eval_record *r, bool mark_pareto)
{
    char probe[16];
    if (r->target_recall > 0)
        snprintf(probe, sizeof(probe), "r%.3g", r->target_recall);
    else if (r->nlist)
        snprintf(probe, sizeof(probe), "%u", r->nprobe);
    else
        snprintf(probe, sizeof(probe), "flat");
    fprintf(table,
            "%-6s %4u %-4s%s %-4s %-4s %-5s %6u %4zu %3u %3u %5s | %6.4f %6.4f %6.4f | %8.0f %8.1f %8.1f %8.1f | "
            "%7.3f %5llu %6.1f %s\n",
            r->target, r->bits, r->variant, strcmp(r->codebook, "vector") ? "  " : "+v", r->correction, r->center, r->scorer, r->rerank, r->k, r->threads, r->clients,
            probe, r->recall_at_1, r->recall_at_k, r->recall_1_at_k, r->qps, r->lat_us.p50, r->lat_us.p95, r->lat_us.p99,
            r->build_s, (unsigned long long)r->bytes_per_vector, (double)r->peak_rss / 1048576.0,
            mark_pareto && r->pareto ? "*" : "");
    fflush(table);
}

/* Every search-time point (scorer x re-rank x k x threads x clients) of
 * one index configuration on each of its built targets. The repeats run in
 * rounds, and within a round each point runs on every target in turn, so
 * a burst of noise on this shared machine lands on all targets alike
 * instead of on whichever ran during it. fields[t] holds what target t's
 * index fixes. */
static int sweep_config(const eval_opts *o, const eval_index *indexes, const tool_eval_record *fields,
                        const eval_data *data, tool_eval_run *run, size_t *cap, size_t *done, FILE *table)
{
    const size_t nq = data->queries.n, per_target = (size_t)o->nscorer * (size_t)o->nrerank * (size_t)o->nk *
                                                    (size_t)o->nthreads * (size_t)o->nclients * (size_t)o->nnprobe;
    const size_t npoints = per_target * (size_t)o->ntargets;
    point *pts = tq_calloc(npoints, sizeof(point));
    int rc = pts ? 0 : tool_fail("eval", "out of memory");
    /* Records in report order: target, then scorer, re-rank, k, threads, clients, nprobe. */
    for (size_t i = 0; i < npoints && !rc; i++) {
        const size_t t = i / per_target, j = i % per_target;
        size_t rest = j;
        const size_t pi = rest % (size_t)o->nnprobe;
        rest /= (size_t)o->nnprobe;
        const size_t li = rest % (size_t)o->nclients;
        rest /= (size_t)o->nclients;
        const size_t ti = rest % (size_t)o->nthreads;
        rest /= (size_t)o->nthreads;
        const size_t ki = rest % (size_t)o->nk;
        rest /= (size_t)o->nk;
        const size_t ri = rest % (size_t)o->nrerank, si = rest / (size_t)o->nrerank;
        tool_eval_record *rec = new_record(run, cap);
        pts[i].qps = tq_calloc(o->repeat, sizeof(double));
        pts[i].lat = tq_malloc(o->repeat * nq * sizeof(double));
        if (!rec || !pts[i].qps || !pts[i].lat) {
            rc = tool_fail("eval", "out of memory");
            break;
        }
        *rec = fields[t];
        rec->scorer = scorer_names[o->scorer[si]];
        rec->rerank = o->rerank[ri];
        rec->k = o->ks[ki];
        rec->threads = o->threads[ti];
        rec->clients = o->clients[li];
        const int nvalues = o->nnprobe - o->ntarget;
        rec->nprobe = rec->nlist && (int)pi < nvalues ? o->nprobe[pi] : 0;
        rec->target_recall = (int)pi >= nvalues ? o->target[(int)pi - nvalues] : 0.0;
        pts[i].rec = run->nrec - 1;
        pts[i].target = &indexes[t].target;
        pts[i].clients = o->clients[li];
        pts[i].sp = (tqvec_search_params){.k = o->ks[ki], .rerank = o->rerank[ri],
                                          .scorer = (uint32_t)scorer_values[o->scorer[si]],
                                          .threads = o->threads[ti], .nprobe = rec->nprobe,
                                          .target_recall = (float)rec->target_recall};
    }
    for (size_t rep = 0; rep < o->repeat && !rc; rep++)
        for (size_t j = 0; j < per_target && !rc; j++)
            for (size_t t = 0; t < (size_t)o->ntargets && !rc; t++) {
                point *pt = &pts[t * per_target + j];
                tool_eval_record *rec = &run->rec[pt->rec];
                char label[160];
                snprintf(label, sizeof(label), "[%zu/%zu] %s b=%u %s %s rerank=%u k=%zu t=%u c=%u p=%u", ++*done,
                         o->points * o->repeat, rec->target, rec->bits, rec->variant, rec->scorer, rec->rerank,
                         rec->k, rec->threads, rec->clients, rec->nprobe);
                rc = measure_once(pt, data, o->batch, rep, label, rec);
                if (!rc && rep + 1 == o->repeat) /* after its last queries: the mark they reached */
                    rec->peak_rss = pt->target->server ? server_rss(o->server) : tool_peak_rss();
            }
    for (size_t i = 0; i < npoints && !rc; i++) {
        tool_eval_record *rec = &run->rec[pts[i].rec];
        rec->qps = tool_median(pts[i].qps, o->repeat);
        tool_latency_summarize(pts[i].lat, o->repeat * nq, &rec->lat_us);
        print_record(table, rec, false);
    }
    for (size_t i = 0; pts && i < npoints; i++) {
        tq_free(pts[i].qps);
        tq_free(pts[i].lat);
    }
    tq_free(pts);
    return rc;
}

int cmd_eval(int argc, char **argv)
{
    eval_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 2 ? 0 : rc;
    tqvec_error terr;
    if (tqvec_simd_check_env(&terr))
        return tool_fail("eval", "%s", terr.message);
    char hdf5_queries[4200];
    if ((rc = resolve_hdf5(&o, hdf5_queries, sizeof(hdf5_queries))))
        return rc;

    eval_data data = {.metric = o.metric};
    FILE *json = NULL;
    eval_index indexes[3] = {0};
    size_t done_runs = 0;
    tool_eval_source source = {.seed = o.seed, .batch = o.batch, .repeat = o.repeat};
    tool_eval_run run = {0};
    size_t cap = 0;
    if ((rc = load_inputs(&o, &data.base, &data.queries, &data.gt)))
        goto done;
    if (o.json && !(json = tool_open_output(o.json))) {
        rc = tool_fail("eval", "cannot write %s: %s", o.json, strerror(errno));
        goto done;
    }
    tool_provenance_init(&source.prov, argc, argv);
    if ((rc = inputs_checksum(&o, run.checksum)))
        goto done;
    dataset_name(&o, run.dataset, sizeof(run.dataset));
    run.metric = tool_metric_name(o.metric);
    run.n = data.base.n;
    run.nq = data.queries.n;
    run.d = data.base.d;
    /* With JSON on stdout the table moves to stderr, so stdout stays
     * machine-readable. */
    FILE *table = json == stdout ? stderr : stdout;
    /* Re-ranking needs refine data: floats unless --refine says otherwise. */
    bool reranks = false;
    for (int r = 0; r < o.nrerank; r++)
        reranks |= o.rerank[r] > 0;
    int refine = o.refine >= 0 ? refine_values[o.refine] : reranks ? TQVEC_REFINE_FP32 : TQVEC_REFINE_NONE;
    const char *refine_name = refine_names[refine - 1];

    fprintf(table, "dataset %s: %zu base x %zu queries, d=%zu, metric %s, refine %s, simd %s, batch %zu, repeat %zu\n",
            run.dataset, data.base.n, data.queries.n, data.base.d, run.metric, refine_name, tqvec_simd_level(), o.batch, o.repeat);
    print_header(table);
    /* Per configuration unless two in-process targets (memory, dir) are
     * alive at once: their peaks then share one high-water mark. */
    int in_process = 0;
    for (int gi = 0; gi < o.ntargets; gi++)
        in_process += o.targets[gi] != TARGET_SERVER;
    bool peak_rss_per_config = in_process <= 1;
    for (int bi = 0; bi < o.nbits; bi++)
        for (int vi = 0; vi < o.nvariant; vi++)
            for (int ci = 0; ci < o.ncorrection; ci++)
                for (int ki = 0; ki < o.ncenter * o.ncodebook; ki++) {
                    /* center and codebook in one loop (a fifth nested one
                     * would not fit the page): codebook outer */
                    const int mi = ki % o.ncenter, cbi = ki / o.ncenter;
                    tqvec_index_options opts = {
                        .center = center_values[o.center[mi]],
                        .codebook = codebook_values[o.codebook[cbi]],
                        .dim = (uint32_t)data.base.d,
                        .metric = o.metric,
                        .bits = (int)o.bits[bi],
                        .variant = variant_values[o.variant[vi]],
                        .correction = correction_values[o.correction[ci]],
                        .seed = o.seed,
                        .refine = refine,
                    };
                    if (opts.codebook == TQVEC_CODEBOOK_VECTOR && opts.bits - (opts.variant == TQVEC_VARIANT_PROD) > 3) {
                        /* a sweep over widths and codebooks: only 1- to 3-bit codes have the vector one */
                        fprintf(stderr, "eval: skipping %d bits %s with the vector codebook (1- to 3-bit codes only)\n",
                                opts.bits, variant_names[o.variant[vi]]);
                        continue;
                    }
                    tool_eval_record fields[3];
                    for (int gi = 0; gi < o.ntargets; gi++) {
                        const int kind = o.targets[gi];
                        peak_rss_per_config &= tool_peak_rss_reset();
                        if ((rc = build_index(&o, kind, &opts, refine_name, run.dataset, &data.base, &indexes[gi])))
                            goto done;
                        fields[gi] = (tool_eval_record){
                            .source = &source,
                            .target = target_names[kind],
                            .target_where = kind == TARGET_SERVER ? o.server : kind == TARGET_DIR ? o.dir : NULL,
                            .bits = o.bits[bi],
                            .variant = variant_names[o.variant[vi]],
                            .correction = correction_names[o.correction[ci]],
                            .center = center_names[o.center[mi]],
                            .codebook = indexes[gi].codebook == TQVEC_CODEBOOK_VECTOR ? "vector" : "scalar",
                            .refine = refine_name,
                            .build_s = indexes[gi].build_s,
                            .seal_s = indexes[gi].seal_s,
                            .nlist = indexes[gi].nlist,
                            .bytes_per_vector = indexes[gi].bytes_per_vector,
                            .rerank_bytes_per_vector = indexes[gi].refine_bytes};
                    }
                    if ((rc = sweep_config(&o, indexes, fields, &data, &run, &cap, &done_runs, table)))
                        goto done;
                    for (int gi = 0; gi < o.ntargets; gi++)
                        free_index(&indexes[gi]);
                }
    snprintf(source.peak_rss_scope, sizeof(source.peak_rss_scope), "%s",
             peak_rss_per_config ? "configuration" : "process");
    tool_eval_mark_pareto(&run);
    fprintf(table, "Pareto frontier (recall@k against QPS, per k):\n");
    print_header(table);
    for (size_t i = 0; i < run.nrec; i++)
        if (run.rec[i].pareto)
            print_record(table, &run.rec[i], true);
    for (size_t i = 0; json && i < run.nrec; i++)
        tool_eval_json(&run, &run.rec[i], json);
    if (o.report) {
        tq_error err;
        if (tool_eval_report(&run, o.report, &err))
            rc = tool_fail("eval", "report: %s", err.msg);
        else
            fprintf(table, "report: %s/%s.md, .html, -k<k>.svg, .jsonl\n", o.report, run.dataset);
    }
done:
    for (int gi = 0; gi < 3; gi++)
        free_index(&indexes[gi]);
    tool_close_output(json);
    tq_free(run.rec);
    tq_matrix_free(&data.base);
    tq_matrix_free(&data.queries);
    tq_imatrix_free(&data.gt);
    return rc;
}
