/*
 * tqvec synth: a seeded synthetic dataset for scaling curves (how search
 * speed and build time grow with n), never for quality claims, which come
 * from the real sets.
 *
 * The data is a mixture of many Gaussian clusters that differ in size
 * and spread, so that partitioning has structure to find but no cluster
 * is a clean ball: C centres drawn from N(0, 1) in d dimensions; cluster c
 * gets a weight from a Zipf(0.5) law over a random order and its own
 * spread s_c, log-uniform in [0.25, 1] (relative to the centres'
 * spread: the widest clusters overlap their neighbours, the tightest
 * still leave nearest neighbours apart by more than 4-bit codes blur);
 * a vector is a centre picked by weight plus s_c * N(0, I).
 * Queries are drawn from the same mixture (held out by construction), and
 * the exact top-100 ground truth by l2 is computed on every core.
 *
 * Every number comes from tq_rng streams of the seed, so one seed and size
 * always give the same files.
 */
#include "tq_tools.h"

#include <sys/stat.h>

typedef struct synth_opts {
    size_t n, nq, dim, clusters;
    uint64_t seed;
    const char *out;
} synth_opts;

static void synth_usage(void)
{
    fprintf(stderr, "usage: tqvec synth --n N --dim D --out DIR [--queries 1000] [--clusters C] [--seed S]\n"
                    "A seeded mixture of C Gaussian clusters of varied size and spread (default C = n / 1000,\n"
                    "at least 16) for scaling curves: DIR/base.fvecs, query.fvecs (same mixture, held out),\n"
                    "gt.ivecs (exact l2 top-100) and README.md.\n");
}

/* Rows [0, rows) of the mixture into x, from the stream `stream`. */
static void draw(const synth_opts *o, const float *centres, const double *cumulative, const float *spread,
                 uint64_t stream, float *x, size_t rows)
{
    tq_rng r;
    tq_rng_seed(&r, tq_seed_derive(o->seed, stream));
    for (size_t i = 0; i < rows; i++) {
        const double u = tq_rng_uniform(&r);
        size_t lo = 0, hi = o->clusters - 1;
        while (lo < hi) { /* the first cluster whose cumulative weight exceeds u */
            const size_t mid = (lo + hi) / 2;
            if (cumulative[mid] > u)
                hi = mid;
            else
                lo = mid + 1;
        }
        const float *c = centres + lo * o->dim;
        for (size_t j = 0; j < o->dim; j++)
            x[i * o->dim + j] = c[j] + spread[lo] * (float)tq_rng_gauss(&r);
    }
}

static int write_readme(const synth_opts *o)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/README.md", o->out);
    FILE *f = fopen(path, "w");
    if (!f)
        return tool_fail("synth", "cannot write %s: %s", path, strerror(errno));
    fprintf(f,
            "# synth-%zu-%zu: synthetic, for scaling curves only\n\n"
            "| | |\n|---|---|\n"
            "| metric | **l2** |\n"
            "| base | %zu x %zu (`base.fvecs`) |\n"
            "| queries | %zu (`query.fvecs`), drawn from the same mixture |\n"
            "| ground truth | exact l2 top-100 (`gt.ivecs`) |\n\n"
            "Made by `tqvec synth --n %zu --dim %zu --queries %zu --clusters %zu --seed %llu`: a mixture of\n"
            "%zu Gaussian clusters, Zipf(0.5) sizes, spreads log-uniform in [0.25, 1].\n",
            o->n, o->dim, o->n, o->dim, o->nq, o->n, o->dim, o->nq, o->clusters, (unsigned long long)o->seed,
            o->clusters);
    return fclose(f) ? tool_fail("synth", "writing %s: %s", path, strerror(errno)) : 0;
}

int cmd_synth(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"n", required_argument, 0, 'n'},        {"dim", required_argument, 0, 'd'},
        {"queries", required_argument, 0, 'q'},  {"clusters", required_argument, 0, 'c'},
        {"seed", required_argument, 0, 's'},     {"out", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0},
    };
    synth_opts o = {.nq = 1000, .seed = 2504};
    size_t v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
        case 'd':
        case 'q':
        case 'c':
        case 's': {
            static const char *const names[] = {['n'] = "--n", ['d'] = "--dim", ['q'] = "--queries",
                                                ['c'] = "--clusters", ['s'] = "--seed"};
            if (tool_parse_size(optarg, &v))
                return tool_fail("synth", "%s wants a count, got '%s'", names[c], optarg);
            if (c == 'n')
                o.n = v;
            else if (c == 'd')
                o.dim = v;
            else if (c == 'q')
                o.nq = v;
            else if (c == 'c')
                o.clusters = v;
            else
                o.seed = v;
            break;
        }
        case 'o': o.out = optarg; break;
        default:
            synth_usage();
            return c == 'h' ? 0 : 1;
        }
    }
    if (!o.n || !o.dim || !o.out || !o.nq) {
        synth_usage();
        return tool_fail("synth", "--n, --dim and --out are required (and --queries at least 1)");
    }
    if (o.dim > TQVEC_MAX_DIM)
        return tool_fail("synth", "--dim is at most %d", TQVEC_MAX_DIM);
    if (!o.clusters)
        o.clusters = o.n / 1000 > 16 ? o.n / 1000 : 16;
    if (mkdir(o.out, 0755) && errno != EEXIST)
        return tool_fail("synth", "cannot create %s: %s", o.out, strerror(errno));

    float *centres = tq_malloc(o.clusters * o.dim * sizeof(float)), *spread = tq_malloc(o.clusters * sizeof(float));
    double *cumulative = tq_malloc(o.clusters * sizeof(double));
    tq_matrix base = {.n = o.n, .d = o.dim}, queries = {.n = o.nq, .d = o.dim};
    tq_imatrix gt = {.n = o.nq, .d = 100 < o.n ? 100 : o.n};
    base.data = tq_malloc(o.n * o.dim * sizeof(float));
    queries.data = tq_malloc(o.nq * o.dim * sizeof(float));
    gt.data = tq_malloc(gt.n * gt.d * sizeof(int32_t));
    int rc = 0;
    if (!centres || !spread || !cumulative || !base.data || !queries.data || !gt.data) {
        rc = tool_fail("synth", "out of memory for %zu x %zu", o.n, o.dim);
        goto done;
    }
    tq_rng r;
    tq_rng_seed(&r, tq_seed_derive(o.seed, 1));
    for (size_t i = 0; i < o.clusters * o.dim; i++)
        centres[i] = (float)tq_rng_gauss(&r);
    double total = 0;
    for (size_t k = 0; k < o.clusters; k++) {
        /* Zipf(0.5) over a random rank; spread log-uniform in [0.25, 1]
         * of the centres' unit spread per coordinate. */
        const size_t rank = 1 + (size_t)(tq_rng_next(&r) % o.clusters);
        cumulative[k] = total += 1.0 / sqrt((double)rank);
        spread[k] = (float)(0.25 * pow(4.0, tq_rng_uniform(&r)));
    }
    for (size_t k = 0; k < o.clusters; k++)
        cumulative[k] /= total;
    cumulative[o.clusters - 1] = 1.0;
    draw(&o, centres, cumulative, spread, 2, base.data, o.n);
    draw(&o, centres, cumulative, spread, 3, queries.data, o.nq);

    char path[4096];
    tq_error err;
    snprintf(path, sizeof(path), "%s/base.fvecs", o.out);
    if (tq_fvecs_write(path, &base, &err) ||
        (snprintf(path, sizeof(path), "%s/query.fvecs", o.out), tq_fvecs_write(path, &queries, &err))) {
        rc = tool_fail("synth", "%s", err.msg);
        goto done;
    }
    tool_progress prog;
    tool_progress_begin(&prog, "ground truth", "queries", o.nq);
    const double t0 = tool_now();
    int grc = tq_groundtruth(&base, &queries, TQ_METRIC_L2, gt.d, 0, gt.data, NULL, tool_progress_callback, &prog, &err);
    tool_progress_end(&prog);
    snprintf(path, sizeof(path), "%s/gt.ivecs", o.out);
    if (grc || tq_ivecs_write(path, &gt, &err)) {
        rc = tool_fail("synth", "%s", err.msg);
        goto done;
    }
    fprintf(stderr, "synth: %zu x %zu base, %zu queries, %zu clusters, ground truth in %.1f s -> %s\n", o.n, o.dim,
            o.nq, o.clusters, tool_now() - t0, o.out);
    rc = write_readme(&o);
done:
    tq_free(centres);
    tq_free(spread);
    tq_free(cumulative);
    tq_free(base.data);
    tq_free(queries.data);
    tq_free(gt.data);
    return rc;
}
