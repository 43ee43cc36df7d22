/*
 * Helpers shared by the subcommands: option lists, timing, quantiles,
 * progress display and JSON lines. Output formats are part of the tools'
 * interface (scripts parse the JSON), so keys are only ever added.
 */
#include "tq_tools.h"

int tool_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tqvec %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int tool_parse_size(const char *s, size_t *out)
{
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = (size_t)v;
    return 0;
}

int tool_parse_uint_list(const char *s, unsigned lo, unsigned hi, unsigned *out, int cap)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        if (*p < '0' || *p > '9')
            return -1;
        unsigned long v = strtoul(p, &end, 10);
        if (v < lo || v > hi || n == cap)
            return -1;
        out[n++] = (unsigned)v;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        p = end;
    }
    return n ? n : -1;
}

int tool_parse_name_list(const char *s, const char *const *choices, int nchoices, int *out, int cap)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int i = 0; i < nchoices; i++)
            if (strlen(choices[i]) == len && !strncmp(p, choices[i], len))
                found = i;
        if (found < 0 || n == cap)
            return -1;
        out[n++] = found;
        p += len;
        if (*p == ',')
            p++;
    }
    return n ? n : -1;
}

int tool_add_rows(tqvec_collection *c, const tq_matrix *x, size_t (*attrs)(size_t row, char *buf, size_t cap),
                  tool_progress *prog, tqvec_error *err)
{
    enum { BATCH = 1000, KEY = 24, ATTR = 256 };
    char (*keys)[KEY] = tq_malloc(BATCH * KEY);
    char (*attr)[ATTR] = attrs ? tq_malloc(BATCH * ATTR) : NULL;
    tqvec_element *el = tq_malloc(BATCH * sizeof(tqvec_element));
    int rc = TQVEC_OK;
    if (!keys || !el || (attrs && !attr)) {
        rc = TQVEC_ENOMEM;
        snprintf(err->message, sizeof(err->message), "out of memory");
        err->code = rc;
    }
    for (size_t i = 0; i < x->n && !rc; i += BATCH) {
        const size_t m = x->n - i < BATCH ? x->n - i : BATCH;
        for (size_t j = 0; j < m; j++) {
            snprintf(keys[j], KEY, "%zu", i + j);
            el[j] = (tqvec_element){.key = keys[j], .key_len = strlen(keys[j]), .vector = x->data + (i + j) * x->d};
            if (attrs) {
                el[j].attrs = attr[j];
                el[j].attrs_len = attrs(i + j, attr[j], ATTR);
            }
        }
        rc = tqvec_collection_add(c, el, m, NULL, err);
        if (prog)
            tool_progress_update(prog, i + m);
    }
    tq_free(keys);
    tq_free(attr);
    tq_free(el);
    return rc;
}

int tool_parse_fsync(const char *s)
{
    return !strcmp(s, "always")     ? TQVEC_FSYNC_ALWAYS
           : !strcmp(s, "everysec") ? TQVEC_FSYNC_EVERYSEC
           : !strcmp(s, "no")       ? TQVEC_FSYNC_NO
                                    : -1;
}

int tool_parse_metric(const char *s)
{
    if (!strcmp(s, "l2"))
        return TQVEC_METRIC_L2;
    if (!strcmp(s, "ip"))
        return TQVEC_METRIC_IP;
    if (!strcmp(s, "cosine"))
        return TQVEC_METRIC_COSINE;
    return 0;
}

const char *tool_metric_name(int metric)
{
    switch (metric) {
    case TQVEC_METRIC_L2:
        return "l2";
    case TQVEC_METRIC_IP:
        return "ip";
    case TQVEC_METRIC_COSINE:
        return "cosine";
    }
    return "?";
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double tool_quantile(double *v, size_t n, double q)
{
    if (n == 0)
        return 0.0;
    qsort(v, n, sizeof(double), cmp_double);
    size_t rank = (size_t)ceil(q * (double)n);
    return v[rank == 0 ? 0 : rank - 1];
}

double tool_median(double *v, size_t n)
{
    if (n == 0)
        return 0.0;
    qsort(v, n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void tool_progress_begin(tool_progress *p, const char *label, const char *unit, size_t total)
{
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->start = tool_now();
    p->last_draw = 0.0;
    p->enabled = isatty(STDERR_FILENO) != 0;
}

static void progress_draw(tool_progress *p, size_t done, double t)
{
    double elapsed = t - p->start, rate = elapsed > 0 ? (double)done / elapsed : 0.0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0.0;
    int width = 30, filled = p->total ? (int)((double)width * (double)done / (double)p->total) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r%s [%s] %zu/%zu %s  %.0f/s  ETA %.0fs\033[K", p->label, bar, done, p->total,
            p->unit, rate, eta);
    fflush(stderr);
}

void tool_progress_update(tool_progress *p, size_t done)
{
    if (!p->enabled)
        return;
    double t = tool_now();
    if (t - p->last_draw < 0.1 && done < p->total)
        return;
    p->last_draw = t;
    progress_draw(p, done, t);
}

void tool_progress_end(tool_progress *p)
{
    if (p->enabled)
        fprintf(stderr, "\r\033[K");
}

void tool_progress_callback(void *ctx, size_t done)
{
    tool_progress_update(ctx, done);
}

void tool_json_begin(tool_json *j, FILE *fp)
{
    j->fp = fp;
    j->first = true;
    fputc('{', fp);
}

static void json_key(tool_json *j, const char *key)
{
    fprintf(j->fp, "%s\"%s\": ", j->first ? "" : ", ", key);
    j->first = false;
}

void tool_json_str(tool_json *j, const char *key, const char *value)
{
    json_key(j, key);
    fputc('"', j->fp);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(j->fp, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(j->fp, "\\u%04x", *p);
        else
            fputc(*p, j->fp);
    }
    fputc('"', j->fp);
}

void tool_json_int(tool_json *j, const char *key, long long value)
{
    json_key(j, key);
    fprintf(j->fp, "%lld", value);
}

void tool_json_num(tool_json *j, const char *key, double value)
{
    json_key(j, key);
    if (isfinite(value))
        fprintf(j->fp, "%.6g", value);
    else
        fputs("null", j->fp);
}

void tool_json_bool(tool_json *j, const char *key, bool value)
{
    json_key(j, key);
    fputs(value ? "true" : "false", j->fp);
}

void tool_json_end(tool_json *j)
{
    fputs("}\n", j->fp);
    fflush(j->fp);
}

FILE *tool_open_output(const char *path)
{
    if (!strcmp(path, "-"))
        return stdout;
    return fopen(path, "w");
}

void tool_close_output(FILE *fp)
{
    if (fp && fp != stdout)
        fclose(fp);
}
