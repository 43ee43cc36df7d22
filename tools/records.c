/*
 * tqvec report: plots and pages from stored evaluation records, so runs
 * made at different times, on different targets or before and after a
 * change can be compared on one plot without measuring again.
 *
 * Every line of every file must be a record tools/eval-record.schema.json
 * describes (what `tqvec eval --json` writes); a line that is not is an
 * error naming file and line, not skipped. Records are grouped by dataset
 * name, and a group must be one dataset: same checksum, metric and sizes --
 * a plot never puts runs on different data side by side. Each distinct run
 * (command line, revision, CPU, seed) becomes a source labelled with its
 * file's name (plus #2, #3 when a file holds several runs), which names its
 * curves. The Pareto frontier is recomputed over the merged records.
 *
 * The peers' lines (../shared/peers/peers.py's JSON lines: a "method" and
 * "recall@10") are read too, so their curves share the axes: each method
 * becomes a target of its own ("peer:hnswlib.HNSW"), the rest of a record
 * what the line says (qps, p50/p99, build time, index bytes per vector).
 * They carry no checksum and name the metric as they ran it (ip for
 * normalized vectors), so they join a dataset by its name and sizes.
 */
#include "tq_tools.h"

#include <libgen.h>

enum { MAX_FIELDS = 64, MAX_SOURCES = 256 };

/* A record as read, with the data it claims to be measured on. */
typedef struct loaded_record {
    tool_eval_record rec;
    char dataset[128];
    char checksum[17];
    const char *metric;
    size_t n, nq, d;
} loaded_record;

/* A run, and the file it was read from (several runs may share one). */
typedef struct loaded_source {
    tool_eval_source src;
    char file[64];
} loaded_source;

typedef struct loaded {
    char **lines; /* each file's text, owning the strings records point to */
    size_t nlines, lines_cap;
    loaded_record *rec;
    size_t nrec, rec_cap;
    loaded_source *sources; /* MAX_SOURCES, fixed: records point into it */
    size_t nsources;
} loaded;

static const char *str_field(const tool_json_field *f, size_t n, const char *key, bool *ok)
{
    const tool_json_field *x = tool_json_find(f, n, key);
    if (!x || x->type != TOOL_JSON_STRING) {
        *ok = false;
        return "";
    }
    return x->str;
}

static double num_field(const tool_json_field *f, size_t n, const char *key, bool *ok)
{
    const tool_json_field *x = tool_json_find(f, n, key);
    if (!x || x->type != TOOL_JSON_NUMBER) {
        *ok = false;
        return 0;
    }
    return x->num;
}

/* Integers from their text: a 64-bit seed does not fit a double. */
static unsigned long long uint_field(const tool_json_field *f, size_t n, const char *key, bool *ok)
{
    const tool_json_field *x = tool_json_find(f, n, key);
    if (!x || x->type != TOOL_JSON_NUMBER || x->str[0] == '-') {
        *ok = false;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(x->str, &end, 10);
    if (errno || *end) {
        *ok = false;
        return 0;
    }
    return v;
}

/* The source a record came from: an existing one when file and run match. */
static const tool_eval_source *find_source(loaded *L, const char *file, const tool_eval_source *s, char *why,
                                           size_t cap)
{
    size_t same_file = 0;
    for (size_t i = 0; i < L->nsources; i++) {
        const tool_eval_source *t = &L->sources[i].src;
        if (strcmp(L->sources[i].file, file))
            continue;
        same_file++;
        if (!strcmp(t->prov.command, s->prov.command) && !strcmp(t->prov.revision, s->prov.revision) &&
            !strcmp(t->prov.cpu, s->prov.cpu) && t->seed == s->seed && t->batch == s->batch &&
            t->repeat == s->repeat)
            return t;
    }
    if (L->nsources == MAX_SOURCES) {
        snprintf(why, cap, "more than %d runs", MAX_SOURCES);
        return NULL;
    }
    loaded_source *t = &L->sources[L->nsources++];
    t->src = *s;
    snprintf(t->file, sizeof(t->file), "%s", file);
    if (same_file)
        snprintf(t->src.label, sizeof(t->src.label), "%.50s#%zu", file, same_file + 1);
    else
        snprintf(t->src.label, sizeof(t->src.label), "%s", file);
    return &t->src;
}

/* The record being read (L->rec[L->nrec], its figures filled): the data
 * it was measured on, its check, and its run; then it is kept. `ok`: every
 * field read so far was there; `what` names the kind of line in errors. */
static int keep_record(loaded *L, const tool_json_field *f, size_t n, bool ok, const char *checksum, const char *what,
                       const char *file_label, const tool_eval_source *s, char *why, size_t cap)
{
    loaded_record *lr = &L->rec[L->nrec];
    snprintf(lr->dataset, sizeof(lr->dataset), "%s", str_field(f, n, "dataset", &ok));
    snprintf(lr->checksum, sizeof(lr->checksum), "%s", checksum);
    lr->metric = str_field(f, n, "metric", &ok);
    lr->n = (size_t)uint_field(f, n, "n", &ok);
    lr->nq = (size_t)uint_field(f, n, "nq", &ok);
    lr->d = (size_t)uint_field(f, n, "d", &ok);
    if (!ok || lr->rec.k == 0 || !(lr->rec.qps > 0)) {
        snprintf(why, cap, "not a %s record (a field is missing or of the wrong type)", what);
        return -1;
    }
    if (!(lr->rec.source = find_source(L, file_label, s, why, cap)))
        return -1;
    L->nrec++;
    return 0;
}

/* L owns text from now on (records point into it); nonzero when out of
 * memory, text then still the caller's. */
static int keep_text(loaded *L, char *text)
{
    if (L->nlines == L->lines_cap) {
        size_t c = L->lines_cap ? L->lines_cap * 2 : 16;
        char **p = tq_realloc(L->lines, c * sizeof(char *));
        if (!p)
            return -1;
        L->lines = p;
        L->lines_cap = c;
    }
    L->lines[L->nlines++] = text;
    return 0;
}

/* A peers.py line (its fields parsed, the record slot reserved) into a
 * record; "peer:" and the method name its target. */
static int add_peer_record(loaded *L, const tool_json_field *f, size_t n, const char *file_label, char *why,
                           size_t cap)
{
    bool ok = true;
    tool_eval_source s = {.batch = 1, .repeat = 1};
    snprintf(s.prov.command, sizeof(s.prov.command), "../shared/peers/peers.py (%s)",
             str_field(f, n, "run", &ok));
    snprintf(s.peak_rss_scope, sizeof(s.peak_rss_scope), "none");
    const char *method = str_field(f, n, "method", &ok);
    const tool_json_field *setting = tool_json_find(f, n, "setting");
    const tool_json_field *bits = tool_json_find(f, n, "bits_per_dim");
    loaded_record *lr = &L->rec[L->nrec];
    char *target = tq_malloc(strlen(method) + 6);
    if (!target || keep_text(L, target)) {
        tq_free(target);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    snprintf(target, strlen(method) + 6, "peer:%s", method);
    tool_eval_record r = {
        .target = target,
        .bits = bits && bits->type == TOOL_JSON_NUMBER ? (unsigned)atof(bits->str) : 0,
        .threads = (unsigned)uint_field(f, n, "search_threads", &ok),
        .clients = 1,
        .variant = "-",
        .correction = "-",
        .center = "-",
        .codebook = "-",
        .scorer = setting && setting->type == TOOL_JSON_STRING ? setting->str : "-",
        .refine = "-",
        .k = (size_t)uint_field(f, n, "k", &ok),
        .recall_at_k = num_field(f, n, "recall@10", &ok),
        .recall_1_at_k = num_field(f, n, "recall1@10", &ok),
        .qps = num_field(f, n, "qps", &ok),
        .lat_us = {.p50 = num_field(f, n, "p50_us", &ok), .p99 = num_field(f, n, "p99_us", &ok)},
        .build_s = num_field(f, n, "build_s", &ok),
        .bytes_per_vector = (uint64_t)num_field(f, n, "index_B", &ok),
    };
    lr->rec = r;
    return keep_record(L, f, n, ok, "", "peers.py", file_label, &s, why, cap);
}

/* One line into a record; why names what is wrong. */
static int add_record(loaded *L, char *line, const char *file_label, char *why, size_t cap)
{
    tool_json_field f[MAX_FIELDS];
    size_t n;
    if (tool_json_parse_object(line, f, MAX_FIELDS, &n, why, cap))
        return -1;
    if (L->nrec == L->rec_cap) {
        size_t c = L->rec_cap ? L->rec_cap * 2 : 64;
        loaded_record *r = tq_realloc(L->rec, c * sizeof(*r));
        if (!r) {
            snprintf(why, cap, "out of memory");
            return -1;
        }
        L->rec = r;
        L->rec_cap = c;
    }
    if (tool_json_find(f, n, "method"))
        return add_peer_record(L, f, n, file_label, why, cap);
    bool ok = true;
    tool_eval_source s = {0};
    snprintf(s.prov.command, sizeof(s.prov.command), "%s", str_field(f, n, "command", &ok));
    snprintf(s.prov.revision, sizeof(s.prov.revision), "%s", str_field(f, n, "git_revision", &ok));
    snprintf(s.prov.version, sizeof(s.prov.version), "%s", str_field(f, n, "version", &ok));
    snprintf(s.prov.cpu, sizeof(s.prov.cpu), "%s", str_field(f, n, "cpu", &ok));
    snprintf(s.prov.simd, sizeof(s.prov.simd), "%s", str_field(f, n, "simd", &ok));
    snprintf(s.peak_rss_scope, sizeof(s.peak_rss_scope), "%s", str_field(f, n, "peak_rss_scope", &ok));
    s.prov.cores = (unsigned)uint_field(f, n, "cores", &ok);
    s.seed = uint_field(f, n, "seed", &ok);
    s.batch = (size_t)uint_field(f, n, "batch", &ok);
    s.repeat = (size_t)uint_field(f, n, "repeat", &ok);
    tool_eval_record r = {
        .target = str_field(f, n, "target", &ok),
        .bits = (unsigned)uint_field(f, n, "bits", &ok),
        .rerank = (unsigned)uint_field(f, n, "rerank", &ok),
        .threads = (unsigned)uint_field(f, n, "threads", &ok),
        .clients = (unsigned)uint_field(f, n, "clients", &ok),
        .variant = str_field(f, n, "variant", &ok),
        .correction = str_field(f, n, "correction", &ok),
        .center = str_field(f, n, "center", &ok),
        .codebook = tool_json_find(f, n, "codebook") ? str_field(f, n, "codebook", &ok) : "scalar", /* absent before the choice */
        .scorer = str_field(f, n, "scorer", &ok),
        .refine = str_field(f, n, "refine", &ok),
        .k = (size_t)uint_field(f, n, "k", &ok),
        .recall_at_1 = num_field(f, n, "recall_at_1", &ok),
        .recall_at_k = num_field(f, n, "recall_at_k", &ok),
        .recall_1_at_k = num_field(f, n, "recall_1_at_k", &ok),
        .recall_at_k_dist = num_field(f, n, "recall_at_k_dist", &ok),
        .qps = num_field(f, n, "qps", &ok),
        .lat_us = {num_field(f, n, "mean_us", &ok), num_field(f, n, "p50_us", &ok), num_field(f, n, "p95_us", &ok),
                   num_field(f, n, "p99_us", &ok)},
        .build_s = num_field(f, n, "build_s", &ok),
        .bytes_per_vector = uint_field(f, n, "bytes_per_vector", &ok),
        .rerank_bytes_per_vector = uint_field(f, n, "rerank_bytes_per_vector", &ok),
        .peak_rss = uint_field(f, n, "peak_rss_bytes", &ok),
    };
    /* Records of partitioned indexes carry these; older ones are flat. */
    bool has = true;
    r.nlist = (unsigned)uint_field(f, n, "nlist", &has);
    r.nprobe = has ? (unsigned)uint_field(f, n, "nprobe", &has) : 0;
    r.seal_s = has ? num_field(f, n, "seal_s", &has) : 0.0;
    r.target_recall = has ? num_field(f, n, "target_recall", &has) : 0.0;
    if (!has)
        r.nlist = r.nprobe = 0, r.seal_s = r.target_recall = 0.0;
    const tool_json_field *where = tool_json_find(f, n, "target_where");
    r.target_where = where && where->type == TOOL_JSON_STRING ? where->str : NULL;
    L->rec[L->nrec].rec = r;
    const char *checksum = str_field(f, n, "dataset_checksum", &ok);
    return keep_record(L, f, n, ok, checksum, "tqvec eval", file_label, &s, why, cap);
}

/* The whole file into one buffer (kept: records point into it). */
static char *read_all(FILE *fp, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = tq_malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, fp);
        if (n < cap - 1)
            break;
        char *bigger = tq_realloc(buf, cap * 2);
        if (!bigger)
            tq_free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (buf)
        buf[n] = 0;
    *len = n;
    return buf;
}

static int load_file(loaded *L, const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return tool_fail("report", "%s: %s", path, strerror(errno));
    char copy[4096], label[64];
    snprintf(copy, sizeof(copy), "%s", path);
    snprintf(label, sizeof(label), "%s", basename(copy));
    char *dot = strrchr(label, '.');
    if (dot && dot != label)
        *dot = 0;
    size_t len;
    char *text = read_all(fp, &len);
    int rc = !text ? tool_fail("report", "out of memory") : ferror(fp) ? tool_fail("report", "%s: read error", path) : 0;
    fclose(fp);
    if (!rc && keep_text(L, text))
        rc = tool_fail("report", "out of memory");
    if (rc) {
        tq_free(text);
        return rc;
    }
    if (memchr(text, 0, len))
        return tool_fail("report", "%s: a NUL byte: not a JSON lines file", path);
    size_t lineno = 0, records = 0;
    for (char *line = text; *line && !rc;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        lineno++;
        if (line[strspn(line, " \t\r")]) {
            char why[256];
            if (add_record(L, line, label, why, sizeof(why)))
                rc = tool_fail("report", "%s:%zu: %s", path, lineno, why);
            records++;
        }
        line = nl ? nl + 1 : line + strlen(line);
    }
    if (!rc && records == 0)
        rc = tool_fail("report", "%s: no records", path);
    return rc;
}

static void loaded_free(loaded *L)
{
    for (size_t i = 0; i < L->nlines; i++)
        tq_free(L->lines[i]);
    tq_free(L->lines);
    tq_free(L->rec);
    tq_free(L->sources);
}

/* The records of one dataset (the first not yet taken, from `first`) as
 * a run, checked to be one dataset; *nsources gets how many runs. */
static int group_run(const loaded *L, size_t first, bool *taken, tool_eval_run *run, tool_eval_record *recs,
                     size_t *nsources)
{
    const loaded_record *a = &L->rec[first];
    memset(run, 0, sizeof(*run));
    snprintf(run->dataset, sizeof(run->dataset), "%s", a->dataset);
    snprintf(run->checksum, sizeof(run->checksum), "%s", a->checksum);
    run->metric = a->metric;
    run->n = a->n;
    run->nq = a->nq;
    run->d = a->d;
    run->rec = recs;
    *nsources = 0;
    for (size_t i = first; i < L->nrec; i++) {
        const loaded_record *b = &L->rec[i];
        if (taken[i] || strcmp(b->dataset, a->dataset))
            continue;
        /* A peer's line has no checksum, and its own name for the metric. */
        const bool peer = !a->checksum[0] || !b->checksum[0];
        if ((!peer && (strcmp(b->checksum, a->checksum) || strcmp(b->metric, a->metric))) || b->n != a->n ||
            b->nq != a->nq || b->d != a->d)
            return tool_fail("report",
                             "dataset '%s': runs %s and %s measured different data (checksum %s vs %s, n %zu vs "
                             "%zu, nq %zu vs %zu): they cannot share a plot",
                             a->dataset, a->rec.source->label, b->rec.source->label, a->checksum, b->checksum, a->n,
                             b->n, a->nq, b->nq);
        taken[i] = true;
        bool seen = false;
        for (size_t r = 0; r < run->nrec && !seen; r++)
            seen = recs[r].source == b->rec.source;
        *nsources += !seen;
        recs[run->nrec++] = b->rec;
    }
    return 0;
}

static void report_usage(void)
{
    fprintf(stderr,
            "usage: tqvec report --out DIR FILE.jsonl [FILE.jsonl ...]\n"
            "Plots and pages (SVG per k, Markdown, HTML, merged JSON lines) from stored\n"
            "tqvec eval --json records, one report per dataset. Each run is named by its\n"
            "file (before.jsonl, after.jsonl, ...); runs on different data are refused.\n");
}

int cmd_report(int argc, char **argv)
{
    const char *out = NULL;
    static const struct option opts[] = {{"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case 'h': report_usage(); return 0;
        default: report_usage(); return 1;
        }
    }
    if (!out || optind >= argc) {
        report_usage();
        return 1;
    }
    loaded L = {0};
    L.sources = tq_calloc(MAX_SOURCES, sizeof(loaded_source));
    int rc = L.sources ? 0 : tool_fail("report", "out of memory");
    for (int i = optind; i < argc && !rc; i++)
        rc = load_file(&L, argv[i]);
    bool *taken = rc ? NULL : tq_calloc(L.nrec + 1, sizeof(bool));
    tool_eval_record *recs = rc ? NULL : tq_malloc((L.nrec + 1) * sizeof(*recs));
    if (!rc && (!taken || !recs))
        rc = tool_fail("report", "out of memory");
    for (size_t i = 0; i < L.nrec && !rc; i++) {
        if (taken[i])
            continue;
        tool_eval_run run;
        size_t nsources;
        if ((rc = group_run(&L, i, taken, &run, recs, &nsources)))
            break;
        tool_eval_mark_pareto(&run);
        tq_error err;
        if (tool_eval_report(&run, out, &err))
            rc = tool_fail("report", "%s", err.msg);
        else
            printf("%s: %zu records from %zu run%s -> %s/%s.md, .html, -k<k>.svg, .jsonl\n", run.dataset,
                   run.nrec, nsources, nsources == 1 ? "" : "s", out, run.dataset);
    }
    tq_free(taken);
    tq_free(recs);
    loaded_free(&L);
    return rc;
}
