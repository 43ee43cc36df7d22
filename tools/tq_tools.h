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
int cmd_build(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_compact(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_bench_server(int argc, char **argv);

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
void tool_json_end(tool_json *j);

/* Open "-" as stdout, else the file for writing; NULL on failure. */
FILE *tool_open_output(const char *path);
void tool_close_output(FILE *fp);

#endif
