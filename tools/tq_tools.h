/*
 * tools: the tqvec command line. Each subcommand lives in its own file and is
 * glue over tqvec.h (the engine) and datasets/ (files, ground truth); the
 * helpers here are what several subcommands share: list options, timing,
 * statistics, progress display and JSON output.
 */
#ifndef TQ_TOOLS_H
#define TQ_TOOLS_H

#include "tq_datasets.h"
#include "tqvec.h"

#include <getopt.h>
#include <time.h>
#include <unistd.h>

int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_gt(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_build(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_bench_server(int argc, char **argv);
int cmd_report(int argc, char **argv);

/* Print "tqvec <cmd>: <message>" to stderr; returns 1 (the exit status). */
int tool_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

double tool_now(void);

/* Comma-separated list of unsigned integers into out (at most cap). Returns
 * the count, or -1 on a malformed list or a value outside [lo, hi]. */
int tool_parse_uint_list(const char *s, unsigned lo, unsigned hi, unsigned *out, int cap);
/* Comma-separated list of names, each one of choices[0..nchoices); stores
 * the choice indexes. Returns the count or -1. */
int tool_parse_name_list(const char *s, const char *const *choices, int nchoices, int *out, int cap);
/* "l2", "ip", "cosine" to tqvec_metric; 0 if unknown. */
int tool_parse_metric(const char *s);
const char *tool_metric_name(int metric);
/* "always", "everysec", "no" to tqvec_fsync; -1 if unknown. */
int tool_parse_fsync(const char *s);
/* Strict unsigned parse of a whole string; -1 on failure. */
int tool_parse_size(const char *s, size_t *out);

/* Sorts v in place and returns the q-quantile (0..1), nearest rank. */
double tool_quantile(double *v, size_t n, double q);
double tool_median(double *v, size_t n);

/* Recall of a run against exact ground truth (metrics.c says how each
 * figure is defined). Add one query at a time; truth holds >= k ids. */
typedef struct tool_recall {
    size_t k, queries, truth_slots, hits, top1, one_in_k;
    size_t dist_slots, dist_hits; /* the distance-threshold measure */
} tool_recall;

/* ann-benchmarks' tolerance on the k-th true distance. */
#define TOOL_RECALL_EPSILON 1e-3

void tool_recall_init(tool_recall *r, size_t k);
void tool_recall_add(tool_recall *r, const int64_t *found, size_t nfound, const int32_t *truth);
double tool_recall_at_k(const tool_recall *r);
double tool_recall_at_1(const tool_recall *r);
double tool_recall_1_at_k(const tool_recall *r);
/* The distance-threshold measure: found_dist are the exact distances of the
 * results, kth_true_dist that of the k-th (or last existing) true
 * neighbour, true_slots how many true neighbours exist (<= k). */
void tool_recall_add_by_distance(tool_recall *r, const double *found_dist, size_t nfound, double kth_true_dist,
                                 size_t true_slots);
double tool_recall_at_k_by_distance(const tool_recall *r);
/* Both measures for one query: its result rows against the true ones, and
 * their exact distances to q (rows of base, under metric) against the k-th
 * true neighbour's. */
void tool_recall_add_query(tool_recall *r, int metric, const tq_matrix *base, const float *q, const int64_t *found,
                           size_t nfound, const int32_t *truth);
/* ann-benchmarks' distance under a tqvec metric, in double precision:
 * l2 euclidean, cosine 1 - cos, ip -dot. */
double tool_distance(int metric, const float *a, const float *b, size_t d);

typedef struct tool_latency {
    double mean, p50, p95, p99;
} tool_latency;

/* Summary of n per-query latencies (sorts us in place). */
void tool_latency_summarize(double *us, size_t n, tool_latency *out);

/* on[i] = no other point has recall and QPS both at least as high, one
 * higher (the recall-vs-QPS Pareto frontier; equal points are both on). */
void tool_pareto(const double *recall, const double *qps, size_t n, bool *on);

/* An SVG line plot (plot.c): one polyline per series, legend on the right. */
typedef struct tool_plot_series {
    const char *label;
    size_t n;
    const double *x, *y;
    bool dashed; /* a reference line (the Pareto frontier): grey, no markers */
} tool_plot_series;

typedef struct tool_plot {
    const char *title, *x_label, *y_label;
    bool log_x;
    bool y_max_one; /* clip the y axis at 1 (recall) */
    size_t nseries;
    const tool_plot_series *series;
} tool_plot;

/* Writes the whole SVG document; -1 on a write error. */
int tool_plot_svg(const tool_plot *p, FILE *out);

/* Reproducibility fields every benchmark record carries (provenance.c). */
typedef struct tool_provenance {
    char revision[64]; /* git describe of the source, "-dirty" if modified */
    char version[32];
    char cpu[128];
    char simd[16];
    char command[4096]; /* the command line, shell-quoted */
    unsigned cores;
} tool_provenance;

void tool_provenance_init(tool_provenance *p, int argc, char **argv);
/* XXH3-64 of the files' bytes in order, as 16 hex digits. */
int tool_files_checksum(const char *const *paths, size_t n, char out[17], tq_error *err);
/* Reset the peak-RSS mark; false if the kernel refused (then the peak is
 * the process's so far). */
bool tool_peak_rss_reset(void);
uint64_t tool_peak_rss(void); /* bytes */

/* What queries run against (query.c): an in-memory index, a stored
 * collection, or a vector set on tqvecd. Result keys are base row numbers. */
typedef struct tool_target {
    const tqvec_index *ix;
    tqvec_collection *coll;
    const char *server;         /* HOST:PORT or a unix socket path */
    char key[512];              /* the vector set on server */
    bool server_default_rerank; /* send no RERANK: the daemon's default applies */
} tool_target;

/* Per query: up to k result rows (nearest first) and its latency. */
typedef struct tool_query_result {
    int64_t *found; /* nq * k */
    size_t *nfound; /* nq */
    double *lat_us; /* nq */
    double wall_s;  /* the whole set */
} tool_query_result;

/* Runs queries 0..nq-1 (query i is row i mod queries->n) by `clients`
 * concurrent streams, `batch` per search call or pipeline. label, when not
 * NULL, titles a progress line. -1 with why set on the first failure. */
int tool_run_queries(const tool_target *target, const tq_matrix *queries, size_t nq, const tqvec_search_params *sp,
                     unsigned clients, size_t batch, const char *label, tool_query_result *out, char *why,
                     size_t cap);
void tool_query_result_free(tool_query_result *res);
/* A key that is a base row number ("0".."999999999999999999") to the row. */
bool tool_key_row(const char *key, size_t len, int64_t *row);

/* One run of `tqvec eval`: what its records share besides the data. A
 * merged report (tqvec report) holds records of several, each labelled. */
typedef struct tool_eval_source {
    char label[64];           /* "" for a live evaluation */
    tool_provenance prov;
    uint64_t seed;
    size_t batch, repeat;
    char peak_rss_scope[16];  /* configuration, process or server */
} tool_eval_source;

/* One measured configuration of `tqvec eval` (report.c writes them). */
typedef struct tool_eval_record {
    const tool_eval_source *source;
    const char *target;       /* memory, dir or server */
    const char *target_where; /* the directory or HOST:PORT, or NULL */
    unsigned bits, rerank, threads, clients;
    const char *variant, *correction, *center, *scorer, *refine;
    const char *codebook;     /* scalar or vector */
    size_t k;
    double recall_at_1, recall_at_k, recall_1_at_k;
    double recall_at_k_dist; /* ann-benchmarks' distance-threshold recall */
    double qps;
    tool_latency lat_us;
    double build_s;           /* encode (memory) or build/load time; 0 when reused */
    double seal_s;            /* of build_s, the partitioning; 0 for a flat index */
    unsigned nlist, nprobe;   /* partitions (0: flat) and those a query scans (0: all) */
    double target_recall;     /* asked for instead of nprobe; 0: not */
    uint64_t bytes_per_vector; /* scanned codes */
    uint64_t rerank_bytes_per_vector;
    uint64_t peak_rss;        /* bytes; the daemon's RSS for a server target */
    bool pareto;              /* on the recall@k-vs-QPS frontier of its k */
} tool_eval_record;

/* Records on one dataset: the data they share, the runs, the records. */
typedef struct tool_eval_run {
    char dataset[128];
    char checksum[17];        /* XXH3-64 of base, queries and truth files */
    const char *metric;
    size_t n, nq, d;
    tool_eval_record *rec;
    size_t nrec;
} tool_eval_run;

/* Sets rec[].pareto: the frontier among records of the same k. */
void tool_eval_mark_pareto(tool_eval_run *run);
/* One JSON line for record r (fields: tools/eval-record.schema.json). */
void tool_eval_json(const tool_eval_run *run, const tool_eval_record *r, FILE *out);
/* DIR/<dataset>.md and .html (self-contained, plots inline) and one
 * DIR/<dataset>-k<k>.svg per k: recall@k against QPS (log), a curve per
 * configuration along its re-rank depths, and the Pareto frontier. */
int tool_eval_report(const tool_eval_run *run, const char *dir, tq_error *err);

/* Progress line on stderr when it is a terminal: label, done/total, rate,
 * ETA; redrawn at most ten times a second. */
typedef struct tool_progress {
    const char *label;
    const char *unit;
    size_t total;
    double start, last_draw;
    bool enabled;
} tool_progress;

void tool_progress_begin(tool_progress *p, const char *label, const char *unit, size_t total);
void tool_progress_update(tool_progress *p, size_t done);
void tool_progress_end(tool_progress *p);
/* Adapter for tq_groundtruth's callback. */
void tool_progress_callback(void *ctx, size_t done);

/* Add every row of x to c, its key the row number, in batches of 1000 (one
 * log write each). attrs, when not NULL, writes row's attributes into buf
 * (cap bytes) and returns their length. prog (may be NULL) is advanced. */
int tool_add_rows(tqvec_collection *c, const tq_matrix *x, size_t (*attrs)(size_t row, char *buf, size_t cap),
                  tool_progress *prog, tqvec_error *err);

/* Minimal JSON object writer: one object per line. */
typedef struct tool_json {
    FILE *fp;
    bool first;
} tool_json;

void tool_json_begin(tool_json *j, FILE *fp);
void tool_json_str(tool_json *j, const char *key, const char *value);
void tool_json_int(tool_json *j, const char *key, long long value);
void tool_json_num(tool_json *j, const char *key, double value);
void tool_json_bool(tool_json *j, const char *key, bool value);
void tool_json_end(tool_json *j);

/* Reading a flat JSON object back (jsonl.c): fields point into the line,
 * which is modified in place (strings unescaped, numbers terminated). */
typedef enum { TOOL_JSON_STRING, TOOL_JSON_NUMBER, TOOL_JSON_BOOL, TOOL_JSON_NULL } tool_json_type;

typedef struct tool_json_field {
    const char *key;
    tool_json_type type;
    const char *str; /* STRING: the text; NUMBER: the number as written */
    double num;
    bool boolean;
} tool_json_field;

/* -1 with why set ("... at column N") when line is not one flat object. */
int tool_json_parse_object(char *line, tool_json_field *fields, size_t cap, size_t *n, char *why, size_t why_cap);
const tool_json_field *tool_json_find(const tool_json_field *fields, size_t n, const char *key);

/* Open "-" as stdout, else the file for writing; NULL on failure. */
FILE *tool_open_output(const char *path);
void tool_close_output(FILE *fp);

#endif
