/*
 * tqvec eval: recall and latency of the in-memory index over a grid of
 * configurations (bits x variant x correction x re-rank), against exact
 * ground truth from a file or computed here.
 *
 * Method: for each (bits, variant, correction) one index is built from the
 * whole base, timing the encode (the add call, single-threaded); then for
 * each re-rank depth every query is run once, one at a time on one thread,
 * timing each search. QPS is queries / total search time; p50/p99 are over
 * the per-query times. Recall figures:
 *   recall_at_k    mean |top-k found ∩ true top-k| / k
 *   recall_at_1    fraction of queries whose first hit is the true nearest
 *   recall_1_at_k  fraction whose true nearest is among the k hits (the
 *                  TurboQuant paper's Recall@1@k)
 */
#include "tq_tools.h"

#define MAX_LIST 16

typedef struct eval_opts {
    const char *base, *queries, *gt, *json, *name;
    int metric;
    unsigned bits[MAX_LIST], rerank[MAX_LIST];
    int nbits, nrerank;
    int variant[MAX_LIST], correction[MAX_LIST], scorer[MAX_LIST];
    int nvariant, ncorrection, nscorer;
    int refine; /* index into refine_names, or -1 for the default */
    int center[MAX_LIST], ncenter;
    size_t k, max_queries, max_base;
    uint64_t seed;
    unsigned threads; /* per search; ground truth uses every core */
    size_t batch;     /* queries per tqvec_index_search_batch call */
    const char *dir;  /* evaluate this stored collection (built from --base if absent) */
} eval_opts;

typedef struct eval_result {
    double recall_at_1, recall_at_k, recall_1_at_k;
    double qps, p50_us, p99_us, mean_us;
} eval_result;

static const char *const variant_names[] = {"mse", "prod"};
static const char *const correction_names[] = {"ip", "none"};
static const int variant_values[] = {TQVEC_VARIANT_MSE, TQVEC_VARIANT_PROD};
static const int correction_values[] = {TQVEC_CORRECTION_IP, TQVEC_CORRECTION_NONE};
static const char *const scorer_names[] = {"lut", "float"};
/* In tqvec_refine order (value - 1), so refine_names[refine - 1] names it. */
static const char *const refine_names[] = {"none", "code8", "fp32", "fp16"};
static const int refine_values[] = {TQVEC_REFINE_NONE, TQVEC_REFINE_CODE8, TQVEC_REFINE_FP32, TQVEC_REFINE_FP16};
static const char *const center_names[] = {"none", "mean"};
static const int center_values[] = {TQVEC_CENTER_NONE, TQVEC_CENTER_FIRST_BATCH};
static const int scorer_values[] = {TQVEC_SCORER_LUT, TQVEC_SCORER_FLOAT};

static void usage(void)
{
    fprintf(stderr,
            "usage: tqvec eval --base FILE --queries FILE [--gt FILE] --metric l2|ip|cosine\n"
            "                  [--bits 1,2,3,4] [--variant mse,prod] [--correction ip,none]\n"
            "                  [--center none,mean] [--rerank 0,4,16] [--refine fp32|fp16|code8]\n"
            "                  [--scorer lut,float] [-k 10] [--json FILE|-]\n"
            "                  [--nq N] [--nb N] [--seed S] [--threads T] [--batch B] [--name NAME]\n"
            "                  [--dir DIR]\n"
            "Vector files: .fvecs, .bvecs, .npy or IDX; ground truth: .ivecs (0-based rows).\n"
            "Without --gt, exact ground truth is computed on every core.\n"
            "--threads splits each search; --batch sends B queries per call (latency per\n"
            "query is then the call's time / B). --dir evaluates a stored collection whose\n"
            "keys are row numbers of --base, building it from --base with the (single)\n"
            "settings given when DIR holds none.\n");
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
        {"center", required_argument, 0, 'M'},     {"batch", required_argument, 0, 'T'},
        {"dir", required_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0},
    };
    *o = (eval_opts){.k = 10, .seed = TQVEC_DEFAULT_SEED, .threads = 1, .batch = 1};
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
            if ((o->nbits = tool_parse_uint_list(optarg, TQVEC_MIN_BITS, TQVEC_MAX_BITS, o->bits, MAX_LIST)) < 0)
                return tool_fail("eval", "--bits wants a list of values in %d..%d, got '%s'", TQVEC_MIN_BITS,
                                 TQVEC_MAX_BITS, optarg);
            break;
        case 'R':
            if ((o->nrerank = tool_parse_uint_list(optarg, 0, TQVEC_MAX_RERANK, o->rerank, MAX_LIST)) < 0)
                return tool_fail("eval", "--rerank wants a list of values in 0..%d, got '%s'", TQVEC_MAX_RERANK,
                                 optarg);
            break;
        case 'V':
            if ((o->nvariant = tool_parse_name_list(optarg, variant_names, 2, o->variant, MAX_LIST)) < 0)
                return tool_fail("eval", "--variant wants mse and/or prod, got '%s'", optarg);
            break;
        case 'C':
            if ((o->ncorrection = tool_parse_name_list(optarg, correction_names, 2, o->correction, MAX_LIST)) < 0)
                return tool_fail("eval", "--correction wants ip and/or none, got '%s'", optarg);
            break;
        case 'M':
            if ((o->ncenter = tool_parse_name_list(optarg, center_names, 2, o->center, MAX_LIST)) < 0)
                return tool_fail("eval", "--center wants none and/or mean, got '%s'", optarg);
            break;
        case 'F':
            if (tool_parse_name_list(optarg, refine_names, 4, &o->refine, 1) != 1)
                return tool_fail("eval", "--refine wants one of none, code8, fp32, fp16, got '%s'", optarg);
            break;
        case 'S':
            if ((o->nscorer = tool_parse_name_list(optarg, scorer_names, 2, o->scorer, MAX_LIST)) < 0)
                return tool_fail("eval", "--scorer wants lut and/or float, got '%s'", optarg);
            break;
        case 'k':
            if (tool_parse_size(optarg, &o->k) || o->k == 0 || o->k > 1000)
                return tool_fail("eval", "-k wants 1..1000, got '%s'", optarg);
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
        case 't': {
            size_t t;
            if (tool_parse_size(optarg, &t) || t < 1 || t > TQVEC_MAX_THREADS)
                return tool_fail("eval", "--threads wants 1..%d, got '%s'", TQVEC_MAX_THREADS, optarg);
            o->threads = (unsigned)t;
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
    if (!o->base || !o->queries || !o->metric) {
        usage();
        return tool_fail("eval", "--base, --queries and --metric are required");
    }
    if (o->gt && o->max_base)
        return tool_fail("eval", "--nb cuts the base, so a ground-truth file no longer applies: drop --gt");
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

/* What is evaluated: an in-memory index, or a stored collection whose keys
 * are the base's row numbers. */
typedef struct eval_target {
    const tqvec_index *ix;
    tqvec_collection *coll;
} eval_target;

/* g queries into hits (k per query) and counts, ids being base rows. */
static int target_search(const eval_target *t, const float *q, size_t g, const tqvec_search_params *sp,
                         tqvec_hit *hits, size_t *counts, tqvec_error *err)
{
    if (t->ix)
        return g == 1 ? tqvec_index_search(t->ix, q, sp, hits, sp->k, &counts[0], err)
                      : tqvec_index_search_batch(t->ix, q, g, sp, hits, counts, err);
    tqvec_results *r;
    int rc = tqvec_collection_search(t->coll, q, g, sp, &r, err);
    if (rc)
        return rc;
    for (size_t b = 0; b < g && !rc; b++) {
        counts[b] = tqvec_results_count(r, b);
        for (size_t i = 0; i < counts[b]; i++) {
            const tqvec_match *m = tqvec_results_get(r, b, i);
            uint64_t id = 0;
            for (size_t c = 0; c < m->key_len && !rc; c++) {
                if (m->key[c] < '0' || m->key[c] > '9' || m->key_len > 18) {
                    snprintf(err->message, sizeof(err->message),
                             "key '%.*s' is not a row number: --dir needs a collection built with row keys",
                             (int)(m->key_len < 40 ? m->key_len : 40), m->key);
                    rc = err->code = TQVEC_EARG;
                }
                id = id * 10 + (uint64_t)(m->key[c] - '0');
            }
            hits[b * sp->k + i] = (tqvec_hit){.id = id, .score = m->score};
        }
    }
    tqvec_results_free(r);
    return rc;
}

static int run_queries(const eval_target *target, const tq_matrix *queries, const int32_t *gt, size_t gt_k,
                       size_t k, unsigned rerank, int scorer, const eval_opts *o, const char *label,
                       eval_result *res)
{
    const size_t nq = queries->n, batch = o->batch;
    size_t hits_found = 0, top1 = 0, one_in_k = 0;
    double *lat = tq_malloc(nq * sizeof(double));
    tqvec_hit *hits = tq_malloc(batch * k * sizeof(tqvec_hit));
    size_t *counts = tq_malloc(batch * sizeof(size_t));
    if (!lat || !hits || !counts) {
        tq_free(lat);
        tq_free(hits);
        tq_free(counts);
        return tool_fail("eval", "out of memory");
    }
    tqvec_search_params sp = {.k = (uint32_t)k, .rerank = rerank, .scorer = (uint32_t)scorer,
                              .threads = o->threads};
    tool_progress prog;
    tool_progress_begin(&prog, label, "queries", nq);
    double total = 0.0;
    int failed = 0;
    for (size_t i = 0; i < nq; i += batch) {
        const size_t g = nq - i < batch ? nq - i : batch;
        const float *q = queries->data + i * queries->d;
        tqvec_error err;
        double t0 = tool_now();
        int rc = target_search(target, q, g, &sp, hits, counts, &err);
        double t = tool_now() - t0;
        if (rc) {
            failed = tool_fail("eval", "search failed on queries %zu..%zu: %s", i, i + g - 1, err.message);
            break;
        }
        total += t;
        for (size_t b = 0; b < g; b++) {
            const size_t qi = i + b, count = counts[b];
            const tqvec_hit *h = hits + b * k;
            const int32_t *truth = gt + qi * gt_k;
            lat[qi] = t / (double)g;
            for (size_t a = 0; a < count; a++)
                for (size_t c = 0; c < k; c++)
                    if ((int64_t)h[a].id == truth[c]) {
                        hits_found++;
                        break;
                    }
            if (count > 0 && (int64_t)h[0].id == truth[0])
                top1++;
            for (size_t a = 0; a < count; a++)
                if ((int64_t)h[a].id == truth[0]) {
                    one_in_k++;
                    break;
                }
        }
        tool_progress_update(&prog, i + g);
    }
    tool_progress_end(&prog);
    if (!failed) {
        res->recall_at_k = (double)hits_found / ((double)nq * (double)k);
        res->recall_at_1 = (double)top1 / (double)nq;
        res->recall_1_at_k = (double)one_in_k / (double)nq;
        res->qps = total > 0 ? (double)nq / total : 0.0;
        res->mean_us = total / (double)nq * 1e6;
        res->p50_us = tool_quantile(lat, nq, 0.50) * 1e6;
        res->p99_us = tool_quantile(lat, nq, 0.99) * 1e6;
    }
    tq_free(lat);
    tq_free(hits);
    tq_free(counts);
    return failed;
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
        if (tq_ivecs_read(o->gt, o->max_queries, gt, &err))
            return tool_fail("eval", "%s", err.msg);
        if (gt->n < queries->n)
            return tool_fail("eval", "%s has %zu rows for %zu queries", o->gt, gt->n, queries->n);
        if (gt->d < o->k)
            return tool_fail("eval", "%s holds %zu neighbours per query, fewer than k=%zu", o->gt, gt->d, o->k);
        for (size_t i = 0; i < queries->n * gt->d; i++)
            if (gt->data[i] < -1 || gt->data[i] >= (int64_t)base->n)
                return tool_fail("eval", "%s: row %zu names base row %d, outside 0..%zu", o->gt, i / gt->d,
                                 gt->data[i], base->n - 1);
        return 0;
    }
    gt->n = queries->n;
    gt->d = o->k;
    gt->data = tq_malloc(gt->n * gt->d * sizeof(int32_t));
    if (!gt->data)
        return tool_fail("eval", "out of memory for ground truth");
    tool_progress prog;
    tool_progress_begin(&prog, "ground truth", "queries", queries->n);
    double t0 = tool_now();
    int rc = tq_groundtruth(base, queries, (tq_metric)o->metric, o->k, 0, gt->data, NULL,
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

int cmd_eval(int argc, char **argv)
{
    eval_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 2 ? 0 : rc;
    tqvec_error terr;
    if (tqvec_simd_check_env(&terr))
        return tool_fail("eval", "%s", terr.message);

    tq_matrix base = {0}, queries = {0};
    tq_imatrix gt = {0};
    FILE *json = NULL;
    tqvec_index *ix = NULL;
    tqvec_collection *coll = NULL;
    if (o.dir && (o.nbits > 1 || o.nvariant > 1 || o.ncorrection > 1 || o.ncenter > 1)) {
        rc = tool_fail("eval", "--dir evaluates one collection: give one value each for --bits, --variant, "
                               "--correction and --center");
        goto done;
    }
    if ((rc = load_inputs(&o, &base, &queries, &gt)))
        goto done;
    if (o.json && !(json = tool_open_output(o.json))) {
        rc = tool_fail("eval", "cannot write %s: %s", o.json, strerror(errno));
        goto done;
    }
    /* With JSON on stdout the table moves to stderr, so stdout stays
     * machine-readable. */
    FILE *table = json == stdout ? stderr : stdout;
    char name[256];
    dataset_name(&o, name, sizeof(name));
    /* Re-ranking needs refine data: floats unless --refine says otherwise. */
    bool reranks = false;
    for (int r = 0; r < o.nrerank; r++)
        reranks |= o.rerank[r] > 0;
    int refine = o.refine >= 0 ? refine_values[o.refine] : reranks ? TQVEC_REFINE_FP32 : TQVEC_REFINE_NONE;
    const char *refine_name = refine_names[refine - 1];

    fprintf(table,
            "dataset %s: %zu base x %zu queries, d=%zu, metric %s, k=%zu, refine %s, simd %s, threads %u, batch %zu\n",
            name, base.n, queries.n, base.d, tool_metric_name(o.metric), o.k, refine_name, tqvec_simd_level(),
            o.threads, o.batch);
    fprintf(table, "%4s %-5s %-5s %-5s %-5s %6s | %7s %7s %7s | %9s %9s %9s | %8s %10s | %7s\n", "bits", "var",
            "corr", "cent", "score", "rerank", "R@1", "R@k", "R1@k", "QPS", "p50 us", "p99 us", "enc s", "enc vec/s",
            "B/vec");
    for (int bi = 0; bi < o.nbits; bi++)
        for (int vi = 0; vi < o.nvariant; vi++)
            for (int ci = 0; ci < o.ncorrection; ci++)
            for (int mi = 0; mi < o.ncenter; mi++) {
                const char *center = center_names[o.center[mi]];
                tqvec_index_options opts = {
                    .center = center_values[o.center[mi]],
                    .dim = (uint32_t)base.d,
                    .metric = o.metric,
                    .bits = (int)o.bits[bi],
                    .variant = variant_values[o.variant[vi]],
                    .correction = correction_values[o.correction[ci]],
                    .seed = o.seed,
                    .refine = refine,
                };
                eval_target target = {0};
                double encode_s;
                uint64_t bytes_per_vector, refine_bytes;
                if (o.dir) {
                    tqvec_collection_options co = {
                        .dim = opts.dim, .metric = opts.metric, .bits = opts.bits, .variant = opts.variant,
                        .correction = opts.correction, .seed = opts.seed, .refine = opts.refine,
                        .center = opts.center, .create = 1};
                    if ((rc = open_or_build(&o, &co, &base, &coll, &encode_s)))
                        goto done;
                    tqvec_collection_info cinfo;
                    tqvec_collection_get_info(coll, &cinfo);
                    if (cinfo.dim != base.d || cinfo.metric != o.metric) {
                        rc = tool_fail("eval", "%s holds dimension %u, metric %s; the base has %zu, %s asked", o.dir,
                                       cinfo.dim, tool_metric_name(cinfo.metric), base.d, tool_metric_name(o.metric));
                        goto done;
                    }
                    bytes_per_vector = cinfo.bytes_per_vector;
                    refine_bytes = cinfo.refine_bytes_per_vector;
                    target.coll = coll;
                } else {
                    if (tqvec_index_create(&opts, &ix, &terr)) {
                        rc = tool_fail("eval", "%s", terr.message);
                        goto done;
                    }
                    double t0 = tool_now();
                    if (tqvec_index_add(ix, base.data, base.n, NULL, &terr)) {
                        rc = tool_fail("eval", "adding the base: %s", terr.message);
                        goto done;
                    }
                    encode_s = tool_now() - t0;
                    tqvec_index_info info;
                    tqvec_index_get_info(ix, &info);
                    bytes_per_vector = info.bytes_per_vector;
                    refine_bytes = info.refine_bytes_per_vector;
                    target.ix = ix;
                }
                for (int si = 0; si < o.nscorer; si++)
                for (int ri = 0; ri < o.nrerank; ri++) {
                    const char *scorer = scorer_names[o.scorer[si]];
                    char label[96];
                    snprintf(label, sizeof(label), "b=%u %s %s %s %s rerank=%u", o.bits[bi],
                             variant_names[o.variant[vi]], correction_names[o.correction[ci]], center, scorer,
                             o.rerank[ri]);
                    eval_result res = {0};
                    if ((rc = run_queries(&target, &queries, gt.data, gt.d, o.k, o.rerank[ri], scorer_values[o.scorer[si]],
                                          &o, label, &res)))
                        goto done;
                    fprintf(table,
                            "%4u %-5s %-5s %-5s %-5s %6u | %7.4f %7.4f %7.4f | %9.0f %9.1f %9.1f | %8.3f %10.0f | %7llu\n",
                            o.bits[bi], variant_names[o.variant[vi]], correction_names[o.correction[ci]], center, scorer,
                            o.rerank[ri], res.recall_at_1, res.recall_at_k, res.recall_1_at_k, res.qps, res.p50_us,
                            res.p99_us, encode_s, encode_s > 0 ? (double)base.n / encode_s : 0.0,
                            (unsigned long long)bytes_per_vector);
                    fflush(table);
                    if (json) {
                        tool_json j;
                        tool_json_begin(&j, json);
                        tool_json_str(&j, "dataset", name);
                        tool_json_int(&j, "bits", o.bits[bi]);
                        tool_json_str(&j, "variant", variant_names[o.variant[vi]]);
                        tool_json_str(&j, "correction", correction_names[o.correction[ci]]);
                        tool_json_int(&j, "rerank", o.rerank[ri]);
                        tool_json_str(&j, "scorer", scorer);
                        tool_json_str(&j, "center", center);
                        tool_json_int(&j, "k", (long long)o.k);
                        tool_json_int(&j, "n", (long long)base.n);
                        tool_json_int(&j, "nq", (long long)queries.n);
                        tool_json_int(&j, "d", (long long)base.d);
                        tool_json_str(&j, "metric", tool_metric_name(o.metric));
                        tool_json_num(&j, "recall_at_1", res.recall_at_1);
                        tool_json_num(&j, "recall_at_k", res.recall_at_k);
                        tool_json_num(&j, "recall_1_at_k", res.recall_1_at_k);
                        tool_json_num(&j, "qps", res.qps);
                        tool_json_num(&j, "mean_us", res.mean_us);
                        tool_json_num(&j, "p50_us", res.p50_us);
                        tool_json_num(&j, "p99_us", res.p99_us);
                        tool_json_num(&j, "encode_s", encode_s);
                        tool_json_num(&j, "encode_vps", encode_s > 0 ? (double)base.n / encode_s : 0.0);
                        tool_json_int(&j, "bytes_per_vector", (long long)bytes_per_vector);
                        tool_json_str(&j, "refine", refine_name);
                        tool_json_int(&j, "rerank_bytes_per_vector",
                                      o.rerank[ri] ? (long long)refine_bytes : 0);
                        if (o.dir)
                            tool_json_str(&j, "dir", o.dir);
                        tool_json_int(&j, "seed", (long long)o.seed);
                        tool_json_int(&j, "threads", o.threads);
                        tool_json_int(&j, "batch", (long long)o.batch);
                        tool_json_str(&j, "simd", tqvec_simd_level());
                        tool_json_str(&j, "version", tqvec_version());
                        tool_json_end(&j);
                    }
                }
                tqvec_index_free(ix);
                ix = NULL;
            }
done:
    tqvec_index_free(ix);
    tqvec_collection_close(coll, NULL);
    tool_close_output(json);
    tq_matrix_free(&base);
    tq_matrix_free(&queries);
    tq_imatrix_free(&gt);
    return rc;
}
