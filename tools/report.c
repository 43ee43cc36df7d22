/*
 * Evaluation output: JSON lines (one record per measured configuration,
 * each carrying the run's provenance so a line stands on its own), and a
 * report directory with an SVG plot per k, a Markdown page and a
 * self-contained HTML page showing the same plots and table.
 *
 * Curves: records that differ only in re-rank depth form one curve (the
 * search-time knob); the legend names a curve by the settings that vary in
 * this run, so a sweep over bits reads "4 bit", "2 bit", ... rather than
 * every setting every time.
 */
#include "tq_tools.h"

#include <sys/stat.h>

/* The distinct k values in record order. */
static size_t distinct_ks(const tool_eval_run *run, size_t *ks, size_t cap)
{
    size_t m = 0;
    for (size_t i = 0; i < run->nrec; i++) {
        bool seen = false;
        for (size_t j = 0; j < m && !seen; j++)
            seen = ks[j] == run->rec[i].k;
        if (!seen && m < cap)
            ks[m++] = run->rec[i].k;
    }
    return m;
}

void tool_eval_mark_pareto(tool_eval_run *run)
{
    double *recall = tq_malloc((run->nrec + 1) * sizeof(double)), *qps = tq_malloc((run->nrec + 1) * sizeof(double));
    bool *on = tq_malloc((run->nrec + 1) * sizeof(bool));
    size_t *idx = tq_malloc((run->nrec + 1) * sizeof(size_t));
    size_t ks[64], nk = distinct_ks(run, ks, 64);
    for (size_t ki = 0; ki < nk && recall && qps && on && idx; ki++) {
        size_t m = 0;
        for (size_t b = 0; b < run->nrec; b++)
            if (run->rec[b].k == ks[ki]) {
                idx[m] = b;
                recall[m] = run->rec[b].recall_at_k;
                qps[m++] = run->rec[b].qps;
            }
        tool_pareto(recall, qps, m, on);
        for (size_t i = 0; i < m; i++)
            run->rec[idx[i]].pareto = on[i];
    }
    tq_free(recall);
    tq_free(qps);
    tq_free(on);
    tq_free(idx);
}

void tool_eval_json(const tool_eval_run *run, const tool_eval_record *r, FILE *out)
{
    tool_json j;
    tool_json_begin(&j, out);
    tool_json_str(&j, "dataset", run->dataset);
    tool_json_str(&j, "dataset_checksum", run->checksum);
    tool_json_str(&j, "metric", run->metric);
    tool_json_int(&j, "n", (long long)run->n);
    tool_json_int(&j, "nq", (long long)run->nq);
    tool_json_int(&j, "d", (long long)run->d);
    tool_json_str(&j, "target", r->target);
    if (r->target_where)
        tool_json_str(&j, "target_where", r->target_where);
    tool_json_int(&j, "bits", r->bits);
    tool_json_str(&j, "variant", r->variant);
    tool_json_str(&j, "correction", r->correction);
    tool_json_str(&j, "center", r->center);
    tool_json_str(&j, "codebook", r->codebook);
    tool_json_str(&j, "scorer", r->scorer);
    tool_json_str(&j, "refine", r->refine);
    tool_json_int(&j, "rerank", r->rerank);
    tool_json_str(&j, "index", r->nlist ? "ivf" : "flat");
    tool_json_int(&j, "nlist", r->nlist);
    tool_json_int(&j, "nprobe", r->nprobe);
    tool_json_num(&j, "target_recall", r->target_recall);
    tool_json_int(&j, "k", (long long)r->k);
    tool_json_int(&j, "threads", r->threads);
    tool_json_int(&j, "clients", r->clients);
    tool_json_int(&j, "batch", (long long)r->source->batch);
    tool_json_int(&j, "repeat", (long long)r->source->repeat);
    tool_json_num(&j, "recall_at_1", r->recall_at_1);
    tool_json_num(&j, "recall_at_k", r->recall_at_k);
    tool_json_num(&j, "recall_1_at_k", r->recall_1_at_k);
    tool_json_num(&j, "recall_at_k_dist", r->recall_at_k_dist);
    tool_json_num(&j, "qps", r->qps);
    tool_json_num(&j, "mean_us", r->lat_us.mean);
    tool_json_num(&j, "p50_us", r->lat_us.p50);
    tool_json_num(&j, "p95_us", r->lat_us.p95);
    tool_json_num(&j, "p99_us", r->lat_us.p99);
    tool_json_num(&j, "build_s", r->build_s);
    tool_json_num(&j, "seal_s", r->seal_s);
    tool_json_num(&j, "build_vps", r->build_s > 0 ? (double)run->n / r->build_s : 0.0);
    tool_json_int(&j, "bytes_per_vector", (long long)r->bytes_per_vector);
    tool_json_int(&j, "rerank_bytes_per_vector", r->rerank ? (long long)r->rerank_bytes_per_vector : 0);
    tool_json_int(&j, "peak_rss_bytes", (long long)r->peak_rss);
    tool_json_str(&j, "peak_rss_scope", !strcmp(r->target, "server") ? "server" : r->source->peak_rss_scope);
    tool_json_bool(&j, "pareto", r->pareto);
    const tool_provenance *p = &r->source->prov;
    tool_json_int(&j, "seed", (long long)r->source->seed);
    tool_json_str(&j, "git_revision", p->revision);
    tool_json_str(&j, "version", p->version);
    tool_json_str(&j, "cpu", p->cpu);
    tool_json_int(&j, "cores", p->cores);
    tool_json_str(&j, "simd", p->simd);
    tool_json_str(&j, "command", p->command);
    tool_json_end(&j);
}

/* Which settings vary across the run's records: only those name a curve. */
typedef struct varying {
    bool source, target, bits, variant, correction, center, codebook, scorer, threads, clients;
} varying;

static bool is_peer(const tool_eval_record *r)
{
    return !strncmp(r->target, "peer:", 5);
}

/* The peers' records name their curves by method alone and do not count
 * here, except to set the run and target apart. */
static varying find_varying(const tool_eval_run *run)
{
    varying v = {0};
    const tool_eval_record *a = NULL;
    for (size_t i = 0; i < run->nrec; i++) {
        const tool_eval_record *b = &run->rec[i];
        if (!a) {
            a = b;
            continue;
        }
        if (is_peer(a) != is_peer(b) || is_peer(b)) {
            v.source |= a->source != b->source;
            v.target |= strcmp(a->target, b->target) != 0;
            continue;
        }
        v.source |= a->source != b->source;
        v.target |= strcmp(a->target, b->target) != 0;
        v.bits |= a->bits != b->bits;
        v.variant |= strcmp(a->variant, b->variant) != 0;
        v.correction |= strcmp(a->correction, b->correction) != 0;
        v.center |= strcmp(a->center, b->center) != 0;
        v.codebook |= strcmp(a->codebook, b->codebook) != 0;
        v.scorer |= strcmp(a->scorer, b->scorer) != 0;
        v.threads |= a->threads != b->threads;
        v.clients |= a->clients != b->clients;
    }
    return v;
}

static void curve_label(const tool_eval_record *r, const varying *v, char *out, size_t cap)
{
    size_t at = v->source ? (size_t)snprintf(out, cap, "%s: ", r->source->label) : 0;
    if (v->target && at < cap)
        at += (size_t)snprintf(out + at, cap - at, "%s, ", r->target);
#define PART(cond, ...)                                                                                       \
    if ((cond) && at < cap)                                                                                   \
    at += (size_t)snprintf(out + at, cap - at, __VA_ARGS__)
    if (is_peer(r)) { /* the method says it all */
        if (!v->target && at < cap)
            snprintf(out + at, cap - at, "%s", r->target + 5);
        else if (at >= 2 && out[at - 2] == ',')
            out[at - 2] = 0;
        return;
    }
    PART(true, "%u bit", r->bits);
    PART(r->nlist > 0, " rerank %u", r->rerank);
    PART(r->target_recall > 0, " for a recall");
    PART(v->variant, " %s", r->variant);
    PART(v->correction, " corr=%s", r->correction);
    PART(v->center, " center=%s", r->center);
    PART(v->codebook, " %s codebook", r->codebook);
    PART(v->scorer, " %s", r->scorer);
    PART(v->threads, " %u thr", r->threads);
    PART(v->clients, " %u cli", r->clients);
#undef PART
}

/* A curve sweeps re-rank depth; for a partitioned index the partitions
 * probed at each depth (counts, or recalls asked for: two curves); a
 * peer's, its method's knob. */
static bool same_curve(const tool_eval_record *a, const tool_eval_record *b)
{
    return a->k == b->k && a->source == b->source && !strcmp(a->target, b->target) && a->bits == b->bits &&
           !strcmp(a->variant, b->variant) && !strcmp(a->correction, b->correction) && !strcmp(a->center, b->center) &&
           !strcmp(a->codebook, b->codebook) &&
           (!strcmp(a->scorer, b->scorer) || is_peer(a)) && a->threads == b->threads && a->clients == b->clients &&
           (!a->nlist || (a->rerank == b->rerank && (a->target_recall > 0) == (b->target_recall > 0)));
}

/* Along a curve: by re-rank depth, then by the partitions probed (counts,
 * then recalls asked for), then fastest first. */
static int by_rerank(const void *x, const void *y)
{
    const tool_eval_record *a = *(const tool_eval_record *const *)x, *b = *(const tool_eval_record *const *)y;
    if (a->rerank != b->rerank)
        return (a->rerank > b->rerank) - (a->rerank < b->rerank);
    if ((a->target_recall > 0) != (b->target_recall > 0))
        return (a->target_recall > 0) - (b->target_recall > 0);
    if (a->nprobe != b->nprobe)
        return (a->nprobe > b->nprobe) - (a->nprobe < b->nprobe);
    if (a->target_recall != b->target_recall)
        return (a->target_recall > b->target_recall) - (a->target_recall < b->target_recall);
    return (a->qps < b->qps) - (a->qps > b->qps);
}

static int by_qps(const void *x, const void *y)
{
    const tool_eval_record *a = *(const tool_eval_record *const *)x, *b = *(const tool_eval_record *const *)y;
    return (a->qps > b->qps) - (a->qps < b->qps);
}

/* The distinct targets of the run, in order, comma-separated, each with
 * its directory or address when `where`. */
static void target_list(const tool_eval_run *run, bool where, char *out, size_t cap)
{
    size_t at = 0;
    out[0] = 0;
    for (size_t i = 0; i < run->nrec && at < cap; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(run->rec[j].target, run->rec[i].target);
        if (!seen) {
            const char *place = where ? run->rec[i].target_where : NULL;
            at += (size_t)snprintf(out + at, cap - at, "%s%s%s%s", at ? ", " : "", run->rec[i].target,
                                   place ? " " : "", place ? place : "");
        }
    }
}

/* The recall@k-vs-QPS plot of the records with this k. */
static int plot_for_k(const tool_eval_run *run, size_t k, FILE *out)
{
    const size_t n = run->nrec;
    /* Room for every record twice: once in its curve, once more when it
     * is on the frontier. */
    const tool_eval_record **order = tq_malloc((2 * n + 1) * sizeof(*order));
    double *x = tq_malloc((2 * n + 1) * sizeof(double)), *y = tq_malloc((2 * n + 1) * sizeof(double));
    tool_plot_series *series = tq_malloc((n + 1) * sizeof(*series));
    char (*labels)[96] = tq_malloc((n + 1) * sizeof(*labels));
    bool *done = tq_calloc(n + 1, sizeof(bool));
    int rc = -1;
    if (!order || !x || !y || !series || !labels || !done)
        goto out;
    varying v = find_varying(run);
    size_t used = 0, ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (done[i] || run->rec[i].k != k)
            continue;
        size_t start = used;
        for (size_t j = i; j < n; j++)
            if (!done[j] && same_curve(&run->rec[i], &run->rec[j])) {
                done[j] = true;
                order[used++] = &run->rec[j];
            }
        qsort(order + start, used - start, sizeof(*order), by_rerank);
        for (size_t j = start; j < used; j++) {
            x[j] = order[j]->qps;
            y[j] = order[j]->recall_at_k;
        }
        curve_label(&run->rec[i], &v, labels[ns], sizeof(labels[ns]));
        series[ns] = (tool_plot_series){.label = labels[ns], .n = used - start, .x = x + start, .y = y + start};
        ns++;
    }
    /* The frontier as a dashed reference, in QPS order, after the curves. */
    const tool_eval_record **front = order + used;
    double *fx = x + used, *fy = y + used;
    size_t nf = 0;
    for (size_t i = 0; i < n; i++)
        if (run->rec[i].k == k && run->rec[i].pareto)
            front[nf++] = &run->rec[i];
    qsort(front, nf, sizeof(*front), by_qps);
    for (size_t i = 0; i < nf; i++) {
        fx[i] = front[i]->qps;
        fy[i] = front[i]->recall_at_k;
    }
    if (nf > 1)
        series[ns++] = (tool_plot_series){.label = "Pareto frontier", .n = nf, .x = fx, .y = fy, .dashed = true};
    char title[256], ylabel[32], targets[64];
    target_list(run, false, targets, sizeof(targets));
    snprintf(title, sizeof(title), "%s (n=%zu, d=%zu, %s): recall@%zu vs QPS, %s", run->dataset, run->n, run->d,
             run->metric, k, targets);
    snprintf(ylabel, sizeof(ylabel), "recall@%zu", k);
    tool_plot plot = {.title = title, .x_label = "queries per second (log scale)", .y_label = ylabel, .log_x = true,
                      .y_max_one = true, .nseries = ns, .series = series};
    rc = tool_plot_svg(&plot, out);
out:
    tq_free(order), tq_free(x), tq_free(y), tq_free(series), tq_free(labels), tq_free(done);
    return rc;
}

/* Text into a page: HTML-escaped for html, as it is for Markdown. */
static void put_text(FILE *out, bool html, const char *s)
{
    for (; *s; s++) {
        if (html && *s == '<')
            fputs("&lt;", out);
        else if (html && *s == '>')
            fputs("&gt;", out);
        else if (html && *s == '&')
            fputs("&amp;", out);
        else
            fputc(*s, out);
    }
}

static void md_escape(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|' || *s == '`' || *s == '*' || *s == '_' || *s == '<')
            fputc('\\', out);
        fputc(*s, out);
    }
}

/* The body shared by both pages: provenance, then per k a plot and a table.
 * html chooses tags and inlines the SVG; markdown links the SVG file. */
static int write_page(const tool_eval_run *run, bool html, FILE *out)
{
    size_t ks[64], nk = distinct_ks(run, ks, 64);
    const char *b = html ? "<b>" : "**", *eb = html ? "</b>" : "**";
    char targets[512];
    target_list(run, true, targets, sizeof(targets));
    if (html) {
        fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>tqvec eval: ", out);
        put_text(out, true, run->dataset);
        fputs("</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
              "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;"
              "text-align:right}code{font-size:12px}</style></head><body>\n<h2>",
              out);
        put_text(out, true, run->dataset);
        fputs("</h2>\n", out);
    } else {
        fprintf(out, "### %s\n\n", run->dataset);
    }
    fprintf(out, "%s%zu%s base vectors, %s%zu%s queries, d = %zu, metric %s, target ", b, run->n, eb, b, run->nq,
            eb, run->d, run->metric);
    put_text(out, html, targets);
    fprintf(out, "; data checksum xxh3 %s.%s", run->checksum, html ? "<br>\n" : "\n\n");
    /* Each run's provenance: one for a live evaluation, one per run merged. */
    for (size_t i = 0; i < run->nrec; i++) {
        const tool_eval_source *src = run->rec[i].source;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = run->rec[j].source == src;
        if (seen)
            continue;
        fputs("Run", out);
        if (src->label[0]) {
            fprintf(out, " %s", b);
            put_text(out, html, src->label);
            fputs(eb, out);
        }
        fputs(": ", out);
        fprintf(out, "revision %s; ", src->prov.revision);
        put_text(out, html, src->prov.cpu);
        fprintf(out, ", %u cores, SIMD %s; seed %llu, batch %zu, repeat %zu. Command: %s", src->prov.cores,
                src->prov.simd, (unsigned long long)src->seed, src->batch, src->repeat, html ? "<code>" : "`");
        put_text(out, html, src->prov.command);
        fputs(html ? "</code><br>\n" : "`\n\n", out);
    }
    for (size_t ki = 0; ki < nk; ki++) {
        if (html) {
            fputs("<div>\n", out);
            if (plot_for_k(run, ks[ki], out))
                return -1;
            fputs("</div>\n<table>\n<tr>", out);
        } else {
            fprintf(out, "![recall@%zu vs QPS on %s](", ks[ki], run->dataset);
            md_escape(out, run->dataset);
            fprintf(out, "-k%zu.svg)\n\n", ks[ki]);
        }
        static const char *const cols[] = {"target", "bits", "variant", "corr.", "center", "scorer", "re-rank", "threads",
                                           "clients", "R@1", "R@k", "R1@k", "R@k dist", "QPS", "mean µs", "p50 µs",
                                           "p95 µs", "p99 µs", "build s", "B/vec", "peak RSS MB", "Pareto", "nlist/nprobe"};
        /* The partitions column only when some record is partitioned, so
         * flat reports keep their columns. */
        bool any_ivf = false;
        for (size_t i = 0; i < run->nrec; i++)
            any_ivf |= run->rec[i].nlist > 0;
        const size_t ncols = sizeof(cols) / sizeof(*cols) - !any_ivf;
        for (size_t c = 0; c < ncols; c++)
            fprintf(out, html ? "<th>%s</th>" : "| %s ", cols[c]);
        fputs(html ? "</tr>\n" : "|\n", out);
        if (!html) {
            for (size_t c = 0; c < ncols; c++)
                fputs(c < 6 ? "|---" : "|---:", out);
            fputs("|\n", out);
        }
        for (size_t i = 0; i < run->nrec; i++) {
            const tool_eval_record *r = &run->rec[i];
            if (r->k != ks[ki])
                continue;
            char cell[23][48];
            snprintf(cell[0], 48, "%s", r->target);
            snprintf(cell[1], 48, "%u", r->bits);
            /* the codebook beside the variant: 1- and 2-bit codes have two */
            snprintf(cell[2], 48, "%s%s", r->variant, strcmp(r->codebook, "vector") ? "" : " (vector codebook)");
            snprintf(cell[3], 48, "%s", r->correction);
            snprintf(cell[4], 48, "%s", r->center);
            snprintf(cell[5], 48, "%s", r->scorer);
            snprintf(cell[6], 48, "%u", r->rerank);
            snprintf(cell[7], 48, "%u", r->threads);
            snprintf(cell[8], 48, "%u", r->clients);
            snprintf(cell[9], 48, "%.4f", r->recall_at_1);
            snprintf(cell[10], 48, "%.4f", r->recall_at_k);
            snprintf(cell[11], 48, "%.4f", r->recall_1_at_k);
            snprintf(cell[12], 48, "%.4f", r->recall_at_k_dist);
            snprintf(cell[13], 48, "%.0f", r->qps);
            snprintf(cell[14], 48, "%.1f", r->lat_us.mean);
            snprintf(cell[15], 48, "%.1f", r->lat_us.p50);
            snprintf(cell[16], 48, "%.1f", r->lat_us.p95);
            snprintf(cell[17], 48, "%.1f", r->lat_us.p99);
            snprintf(cell[18], 48, "%.3f", r->build_s);
            snprintf(cell[19], 48, "%llu", (unsigned long long)r->bytes_per_vector);
            snprintf(cell[20], 48, "%.1f", (double)r->peak_rss / 1048576.0);
            snprintf(cell[21], 48, "%s", r->pareto ? "yes" : "");
            if (r->nlist && r->target_recall > 0)
                snprintf(cell[22], 48, "%u/recall %.3g", r->nlist, r->target_recall);
            else if (r->nlist)
                snprintf(cell[22], 48, "%u/%u", r->nlist, r->nprobe);
            else
                snprintf(cell[22], 48, "flat");
            if (html)
                fputs("<tr>", out);
            for (size_t c = 0; c < ncols; c++)
                fprintf(out, html ? "<td>%s</td>" : "| %s ", cell[c]);
            fputs(html ? "</tr>\n" : "|\n", out);
        }
        fputs(html ? "</table>\n" : "\n", out);
    }
    static const char *const legend =
        "R@1: first result is the true nearest; R@k: share of the true top-k found; R1@k: true nearest "
        "among the k results; R@k dist: ann-benchmarks' measure, results within the k-th true distance + 1e-3 "
        "count (ties with a true neighbour are hits). QPS: queries over the wall time of the whole set (median of the repeats); "
        "latency per query, one at a time per client. B/vec: bytes scanned per vector (refine data for "
        "re-ranking is kept beside). Peak RSS: in memory and dir, this process's high-water mark during "
        "each index's build and queries (shared when memory and dir run together); on a server, the "
        "daemon's resident memory after the point.";
    fprintf(out, html ? "<p>%s</p>\n</body></html>\n" : "%s\n", legend);
    return ferror(out) ? -1 : 0;
}

/* dir/<dataset><suffix> opened for writing; name gets the path. */
static FILE *open_in(const char *dir, const tool_eval_run *run, const char *suffix, char *name, size_t cap)
{
    snprintf(name, cap, "%s/%s%s", dir, run->dataset, suffix);
    for (char *p = name + strlen(dir) + 1; *p; p++)
        if (*p == '/')
            *p = '_'; /* a dataset name never makes a subdirectory */
    return fopen(name, "w");
}

int tool_eval_report(const tool_eval_run *run, const char *dir, tq_error *err)
{
    if (mkdir(dir, 0755) && errno != EEXIST)
        return tq_err_sys(err, TQ_EIO, errno, "%s", dir);
    char name[4096];
    size_t ks[64], nk = distinct_ks(run, ks, 64);
    for (size_t i = 0; i < nk; i++) {
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "-k%zu.svg", ks[i]);
        FILE *f = open_in(dir, run, suffix, name, sizeof(name));
        if (!f)
            return tq_err_sys(err, TQ_EIO, errno, "%s", name);
        int rc = plot_for_k(run, ks[i], f);
        if (fclose(f) || rc)
            return tq_err(err, TQ_EIO, "%s: write failed", name);
    }
    for (int html = 0; html < 2; html++) {
        FILE *f = open_in(dir, run, html ? ".html" : ".md", name, sizeof(name));
        if (!f)
            return tq_err_sys(err, TQ_EIO, errno, "%s", name);
        int rc = write_page(run, html, f);
        if (fclose(f) || rc)
            return tq_err(err, TQ_EIO, "%s: write failed", name);
    }
    FILE *f = open_in(dir, run, ".jsonl", name, sizeof(name));
    if (!f)
        return tq_err_sys(err, TQ_EIO, errno, "%s", name);
    for (size_t i = 0; i < run->nrec; i++)
        tool_eval_json(run, &run->rec[i], f);
    if (fclose(f))
        return tq_err(err, TQ_EIO, "%s: write failed", name);
    return 0;
}
