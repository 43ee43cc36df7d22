/*
 * The evaluation harness's arithmetic and SVG writer, on cases small
 * enough to compute by hand. (Rendering the SVG with a real renderer and
 * checking the JSON records against their schema is test_harness.py.)
 */
#include <criterion/criterion.h>
#include <math.h>

#include "tq_tools.h"

Test(metrics, recall_figures_by_hand)
{
    /* k = 3; two queries.
     * q0: truth 5 6 7, found 6 9 5 -> 2 of 3 in top-k; first (6) is not the
     *     nearest (5); nearest 5 is among the results.
     * q1: truth 1 2 3, found 1 4 8 -> 1 of 3; first is the nearest. */
    const int32_t truth[] = {5, 6, 7, 1, 2, 3};
    const int64_t f0[] = {6, 9, 5}, f1[] = {1, 4, 8};
    tool_recall r;
    tool_recall_init(&r, 3);
    tool_recall_add(&r, f0, 3, truth);
    tool_recall_add(&r, f1, 3, truth + 3);
    cr_assert_float_eq(tool_recall_at_k(&r), 3.0 / 6.0, 1e-12);
    cr_assert_float_eq(tool_recall_at_1(&r), 1.0 / 2.0, 1e-12);
    cr_assert_float_eq(tool_recall_1_at_k(&r), 2.0 / 2.0, 1e-12);
}

Test(metrics, short_answers_and_short_truth)
{
    tool_recall r;
    tool_recall_init(&r, 4);
    /* Fewer results than k: the missing ones count as misses. */
    const int32_t t0[] = {0, 1, 2, 3};
    const int64_t f0[] = {3, 0};
    tool_recall_add(&r, f0, 2, t0);
    cr_assert_float_eq(tool_recall_at_k(&r), 2.0 / 4.0, 1e-12);
    cr_assert_float_eq(tool_recall_at_1(&r), 0.0, 1e-12);
    cr_assert_float_eq(tool_recall_1_at_k(&r), 1.0, 1e-12);
    /* A base of two rows: truth ends in -1 and a perfect answer scores 1. */
    tool_recall s;
    tool_recall_init(&s, 4);
    const int32_t t1[] = {7, 3, -1, -1};
    const int64_t f1[] = {7, 3};
    tool_recall_add(&s, f1, 2, t1);
    cr_assert_float_eq(tool_recall_at_k(&s), 1.0, 1e-12);
    /* Duplicated results are not counted twice. */
    tool_recall u;
    tool_recall_init(&u, 2);
    const int32_t t2[] = {4, 5};
    const int64_t f2[] = {4, 4};
    tool_recall_add(&u, f2, 2, t2);
    cr_assert_float_eq(tool_recall_at_k(&u), 0.5, 1e-12);
    /* No queries: zero, not a division by zero. */
    tool_recall z;
    tool_recall_init(&z, 10);
    cr_assert_float_eq(tool_recall_at_k(&z), 0.0, 1e-12);
    cr_assert_float_eq(tool_recall_at_1(&z), 0.0, 1e-12);
}

Test(metrics, distance_threshold_recall_counts_ties)
{
    /* k = 3, true distances 1, 2, 3 (the 3rd is the threshold, + 1e-3).
     * Results at 1, 3.0005 (a near-tie with the 3rd: counts), 5 (no) -> 2/3.
     * A second query: 4 results can't score over its 3 slots. */
    tool_recall r;
    tool_recall_init(&r, 3);
    const double d0[] = {1.0, 3.0005, 5.0};
    tool_recall_add_by_distance(&r, d0, 3, 3.0, 3);
    cr_assert_float_eq(tool_recall_at_k_by_distance(&r), 2.0 / 3.0, 1e-12);
    const double d1[] = {0.5, 0.5, 0.5};
    tool_recall_add_by_distance(&r, d1, 3, 0.5, 3); /* duplicates of the true ones: all hits */
    cr_assert_float_eq(tool_recall_at_k_by_distance(&r), 5.0 / 6.0, 1e-12);
    /* only 2 true neighbours exist (tiny base): 2 slots */
    tool_recall s;
    tool_recall_init(&s, 3);
    const double d2[] = {0.1, 0.2};
    tool_recall_add_by_distance(&s, d2, 2, 0.2, 2);
    cr_assert_float_eq(tool_recall_at_k_by_distance(&s), 1.0, 1e-12);
}

Test(metrics, distances_as_ann_benchmarks_defines_them)
{
    const float a[] = {3, 0, 0, 0}, b[] = {0, 4, 0, 0}, c[] = {6, 0, 0, 0};
    cr_assert_float_eq(tool_distance(TQVEC_METRIC_L2, a, b, 4), 5.0, 1e-12); /* not squared */
    cr_assert_float_eq(tool_distance(TQVEC_METRIC_COSINE, a, b, 4), 1.0, 1e-12);
    cr_assert_float_eq(tool_distance(TQVEC_METRIC_COSINE, a, c, 4), 0.0, 1e-12);
    cr_assert_float_eq(tool_distance(TQVEC_METRIC_IP, a, c, 4), -18.0, 1e-12);
}

Test(metrics, latency_percentiles_nearest_rank)
{
    double us[20];
    for (int i = 0; i < 20; i++)
        us[i] = (double)(20 - i); /* 20, 19, ..., 1: unsorted on purpose */
    tool_latency l;
    tool_latency_summarize(us, 20, &l);
    cr_assert_float_eq(l.mean, 10.5, 1e-12);
    cr_assert_float_eq(l.p50, 10.0, 1e-12); /* rank ceil(0.5*20) = 10 */
    cr_assert_float_eq(l.p95, 19.0, 1e-12); /* rank 19 */
    cr_assert_float_eq(l.p99, 20.0, 1e-12); /* rank ceil(19.8) = 20 */
}

Test(metrics, pareto_frontier)
{
    /* (recall, qps): A(0.90, 100) B(0.95, 80) C(0.85, 90) D(0.99, 10)
     * E(0.95, 80) F(0.80, 200). C is beaten by A; B and E are equal, both on. */
    const double recall[] = {0.90, 0.95, 0.85, 0.99, 0.95, 0.80};
    const double qps[] = {100, 80, 90, 10, 80, 200};
    const bool want[] = {true, true, false, true, true, true};
    bool on[6];
    tool_pareto(recall, qps, 6, on);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(on[i], want[i], "point %d", i);
}

/* The plot's SVG text (through a temporary file: the allocator's names
 * are poisoned here, so no open_memstream buffer to free). */
static char *render(const tool_plot *p)
{
    static char buf[1 << 16];
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(tool_plot_svg(p, f), 0);
    rewind(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    cr_assert(n > 0 && n < sizeof(buf) - 1);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* Counts non-overlapping occurrences of needle in hay. */
static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + strlen(needle), needle))
        n++;
    return n;
}

Test(plot, svg_structure_escaping_and_undrawable_points)
{
    const double x1[] = {100, 1000, 20000}, y1[] = {0.5, 0.8, 0.95};
    const double x2[] = {50, -1, NAN, 3000}, y2[] = {0.6, 0.7, 0.8, 0.99};
    tool_plot_series series[] = {
        {.label = "4 bit <mse> & \"prod\"", .n = 3, .x = x1, .y = y1},
        {.label = "2 bit", .n = 4, .x = x2, .y = y2},
        {.label = "Pareto frontier", .n = 2, .x = x1, .y = y1, .dashed = true},
    };
    tool_plot p = {.title = "t & t", .x_label = "QPS", .y_label = "recall@10", .log_x = true, .y_max_one = true,
                   .nseries = 3, .series = series};
    const char *buf = render(&p);
    cr_assert(!strncmp(buf, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39));
    cr_assert(strstr(buf, "</svg>\n"));
    cr_assert(strstr(buf, "4 bit &lt;mse&gt; &amp; &quot;prod&quot;"), "labels are escaped");
    cr_assert(strstr(buf, "t &amp; t"));
    cr_assert_null(strstr(buf, "nan"), "no NaN coordinates");
    cr_assert_null(strstr(buf, "inf"));
    cr_assert_eq(count(buf, "<polyline"), 3);
    /* markers: 3 + 2 drawable of the second series; none on the dashed one */
    cr_assert_eq(count(buf, "<circle"), 5);
    cr_assert_eq(count(buf, "stroke-dasharray"), 2, "the frontier's line and its legend entry");
    /* log axis over 10..100k: decade labels present */
    cr_assert(strstr(buf, ">10<") && strstr(buf, ">100k<"), "decade tick labels");
    cr_assert(strstr(buf, ">recall@10<") && strstr(buf, ">QPS<"), "axis labels");
}

Test(plot, empty_plot_is_still_a_valid_frame)
{
    tool_plot p = {.title = "nothing", .x_label = "x", .y_label = "y", .log_x = true};
    const char *buf = render(&p);
    cr_assert(strstr(buf, "</svg>"));
    cr_assert_eq(count(buf, "<polyline"), 0);
    cr_assert_null(strstr(buf, "nan"));
}

/* ------------------------------------------- reading JSON lines back */

Test(jsonl, reads_what_the_writer_writes)
{
    FILE *f = tmpfile();
    tool_json j;
    tool_json_begin(&j, f);
    tool_json_str(&j, "s", "quote \" backslash \\ tab \t newline \n ctrl \x01 é");
    tool_json_int(&j, "seed", (long long)8391739247810670196LL);
    tool_json_num(&j, "x", 0.125);
    tool_json_num(&j, "nan", NAN);
    tool_json_bool(&j, "yes", true);
    tool_json_end(&j);
    rewind(f);
    char line[512];
    cr_assert_not_null(fgets(line, sizeof(line), f));
    fclose(f);
    tool_json_field fields[8];
    size_t n;
    char why[128];
    cr_assert_eq(tool_json_parse_object(line, fields, 8, &n, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(n, 5);
    cr_assert_str_eq(tool_json_find(fields, n, "s")->str, "quote \" backslash \\ tab \t newline \n ctrl \x01 é");
    const tool_json_field *seed = tool_json_find(fields, n, "seed");
    cr_assert_eq(seed->type, TOOL_JSON_NUMBER);
    cr_assert_str_eq(seed->str, "8391739247810670196", "the text survives where a double would not");
    cr_assert_float_eq(tool_json_find(fields, n, "x")->num, 0.125, 0);
    cr_assert_eq(tool_json_find(fields, n, "nan")->type, TOOL_JSON_NULL);
    cr_assert(tool_json_find(fields, n, "yes")->boolean);
    cr_assert_null(tool_json_find(fields, n, "absent"));
}

Test(jsonl, unicode_escapes)
{
    char line[] = "{\"a\": \"\\u00e9\\u20ac\\ud83d\\ude00\", \"b\" : -1.5e+3 , \"c\":{}}";
    /* the nested object at the end is refused; the same without it parses */
    tool_json_field f[4];
    size_t n;
    char why[128];
    cr_assert_neq(tool_json_parse_object(line, f, 4, &n, why, sizeof(why)), 0);
    cr_assert(strstr(why, "nested"), "%s", why);
    char ok[] = "{\"a\": \"\\u00e9\\u20ac\\ud83d\\ude00\", \"b\" : -1.5e+3 }";
    cr_assert_eq(tool_json_parse_object(ok, f, 4, &n, why, sizeof(why)), 0, "%s", why);
    cr_assert_str_eq(f[0].str, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    cr_assert_float_eq(f[1].num, -1500.0, 0);
}

Test(jsonl, malformed_lines_are_refused_with_a_column)
{
    static const char *const bad[] = {
        "",                        "[1]",                   "{\"a\": 01}",          "{\"a\": 1.}",
        "{\"a\": -}",              "{\"a\": .5}",           "{\"a\": 1e}",          "{\"a\": \"x}",
        "{\"a\": \"\x01\"}",       "{\"a\" 1}",             "{\"a\": 1,}",          "{\"a\": 1} x",
        "{\"a\": \"\\ud800\"}",    "{\"a\": \"\\udc00\"}",  "{\"a\": \"\\u12\"}",   "{\"a\": \"\\q\"}",
        "{\"a\": tru}",            "{a: 1}",                "{\"a\": 1",            "{\"a\": \"\\u0000\"}",
        "{\"a\": [1, 2]}",         "{\"a\": 1 \"b\": 2}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        char line[64];
        snprintf(line, sizeof(line), "%s", bad[i]);
        tool_json_field f[4];
        size_t n;
        char why[128] = "";
        cr_assert_neq(tool_json_parse_object(line, f, 4, &n, why, sizeof(why)), 0, "accepted: %s", bad[i]);
        cr_assert(strstr(why, "column"), "no position for %s: %s", bad[i], why);
    }
    /* more fields than room */
    char many[] = "{\"a\": 1, \"b\": 2, \"c\": 3}";
    tool_json_field f[2];
    size_t n;
    char why[128];
    cr_assert_neq(tool_json_parse_object(many, f, 2, &n, why, sizeof(why)), 0);
    cr_assert(strstr(why, "too many"), "%s", why);
}
