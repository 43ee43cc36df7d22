/*
 * FILTER expressions (tq_filter_*): the grammar, precedence, the value
 * rules Redis vector sets use (coercions, null, truth), missing fields and
 * bad JSON as no match, `in` over tuples, arrays and strings, unicode,
 * deep nesting and the length limits.
 */
#include <criterion/criterion.h>

#include "store.h"

static bool run(const char *expr, const char *json)
{
    tq_filter *f;
    tq_error err;
    cr_assert_eq(tq_filter_compile(expr, strlen(expr), &f, &err), TQ_OK, "'%s': %s", expr, err.msg);
    tq_filter_eval *ev;
    cr_assert_eq(tq_filter_eval_init(f, &ev), TQ_OK);
    bool r = tq_filter_match(f, ev, json, json ? strlen(json) : 0);
    /* Running twice gives the same answer: no state leaks between runs. */
    cr_assert_eq(tq_filter_match(f, ev, json, json ? strlen(json) : 0), r, "'%s' changed on a second run", expr);
    tq_filter_eval_free(ev);
    tq_filter_free(f);
    return r;
}

#define YES(expr, json) cr_assert(run(expr, json), "'%s' on %s should match", expr, json)
#define NO(expr, json) cr_assert(!run(expr, json), "'%s' on %s should not match", expr, json)

static const char *movie = "{\"year\": 1984, \"rating\": 7.9, \"title\": \"The \\\"Matrix\\\"\", \"genre\": \"sci-fi\","
                           " \"tags\": [\"classic\", 3, true, null, [1]], \"seen\": true, \"sequel\": false,"
                           " \"studio\": null, \"meta\": {\"a\": 1}, \"snake_case\": 5, \"kebab-case\": 6,"
                           " \"cafe\": \"cr\\u00e8me \\ud83d\\ude00\", \"num_str\": \"42\"}";

Test(filter, arithmetic_and_precedence)
{
    YES("1 + 2 * 3 == 7", NULL);
    YES("(1 + 2) * 3 == 9", NULL);
    YES("2 ** 3 ** 2 == 512", NULL); /* right-associative */
    YES("10 % 4 == 2 and 7 / 2 == 3.5", NULL);
    YES("-3 + 5 == 2", NULL);
    YES("5 - -3 == 8", NULL);
    YES("(2) -1 == 1", NULL); /* after ')' a minus is an operator */
    YES("1e3 == 1000 and 2.5e-1 == 0.25", NULL);
    YES("not 0", NULL);
    YES("!0 and !!1", NULL);
    YES("not 1 == 0", NULL); /* (not 1) == 0 */
    YES("1 or 0 and 0", NULL); /* and binds tighter */
    NO("(1 or 0) and 0", NULL);
    YES("1 || 0 && 0", NULL);
    YES("3 > 2 and 2 >= 2 and 1 < 2 and 2 <= 2 and 1 != 2", NULL);
}

Test(filter, selectors_and_json_values)
{
    YES(".year >= 1980 and .rating > 7", movie);
    NO(".year > 1984", movie);
    YES(".title == 'The \"Matrix\"'", movie);
    YES(".seen == 1 and .sequel == 0 and .seen and not .sequel", movie);
    YES(".studio == null", movie);
    NO(".studio", movie); /* null is false */
    YES(".snake_case + .kebab-case == 11", movie);
    YES(".num_str == 42 and .num_str + 1 == 43", movie); /* string to number */
    YES(".genre == 'sci-fi' and \"sci-fi\" == .genre", movie);
    NO(".genre == 'Sci-Fi'", movie);
    YES(".cafe == 'crème 😀'", movie);           /* JSON \u escapes and surrogate pairs to UTF-8 */
    YES(".cafe == 'cr\\u00e8me \\ud83d\\ude00'", movie); /* the same escapes in the literal */
    YES("'è' in .cafe", movie);
}

Test(filter, missing_fields_and_bad_json_never_match)
{
    NO(".nope == 1", movie);
    NO(".nope != 1", movie); /* a missing field fails the whole expression */
    NO("not .nope", movie);
    NO(".meta == 1", movie); /* objects are not values */
    NO(".year > 0", "not json");
    NO(".year > 0", "[1, 2]");
    NO(".year > 0", "{\"year\": 1984");
    NO(".year > 0", "{\"year\": }");
    NO(".year > 0", NULL);
    YES("1 == 1", NULL); /* no selector: attributes are not needed */
    YES(".year == 1984", "{\"x\": [1, {\"y\": [2, 3]}], \"year\": 1984}");
}

Test(filter, coercions_as_redis)
{
    YES("'abc' == 0", NULL); /* mixed: both as numbers, 'abc' is 0 */
    YES("'5' == 5", NULL);
    NO("'5' == '5.0'", NULL); /* two strings: bytes */
    YES("'5' < '10'", NULL);  /* ordering is numeric */
    YES("null == null", NULL);
    NO("null == 0", NULL);
    NO("''", NULL);
    YES("'x'", NULL);
    YES("'2' * '3' == 6", NULL);
}

Test(filter, membership)
{
    YES(".genre in ['drama', 'sci-fi']", movie);
    NO(".genre in ['drama']", movie);
    YES(".year in [1983, 1984]", movie);
    YES("'classic' in .tags and 3 in .tags and 1 in .tags", movie); /* true is 1 */
    NO("'other' in .tags", movie);
    YES("'fi' in .genre", movie); /* substring */
    NO("'fa' in .genre", movie);
    YES("'' in .genre", movie);
    NO(".year in .genre", movie);
    YES("1 in [1]", NULL);
    NO("1 in []", NULL);
}

static void syntax_error_at(const char *expr, const char *near)
{
    tq_filter *f;
    tq_error err;
    cr_assert_eq(tq_filter_compile(expr, strlen(expr), &f, &err), TQ_EARG, "'%s' compiled", expr);
    cr_assert_null(f);
    char want[256];
    snprintf(want, sizeof(want), "syntax error in FILTER expression near: %s", near);
    cr_assert_str_eq(err.msg, want, "'%s'", expr);
}

Test(filter, syntax_errors_name_the_place)
{
    syntax_error_at("", "");
    syntax_error_at(".year >", ">");
    syntax_error_at("(1 + 2", "(1 + 2");
    syntax_error_at("1 + 2)", ")");
    syntax_error_at("1 2", "2");
    syntax_error_at("'open", "'open");
    syntax_error_at(".a == @", "@");
    syntax_error_at("1 === 2", "= 2");
    syntax_error_at(".café == 1", "é == 1"); /* selectors are ASCII letters, digits, _ and - as in Redis */
    syntax_error_at("[1, .x] == 1", ".x] == 1");
    syntax_error_at("1 in [1,", "[1,");
    syntax_error_at("1 xor 2", "xor 2");
}

Test(filter, deep_nesting_and_limits)
{
    /* 1000 nested parentheses and 1000 chained 'and's compile and run. */
    char *deep = tq_malloc(16384);
    size_t n = 0;
    for (int i = 0; i < 1000; i++)
        deep[n++] = '(';
    deep[n++] = '1';
    for (int i = 0; i < 1000; i++)
        deep[n++] = ')';
    deep[n] = 0;
    YES(deep, NULL);
    n = 0;
    n += (size_t)sprintf(deep, ".year");
    for (int i = 0; i < 1000; i++)
        n += (size_t)sprintf(deep + n, " and .year");
    YES(deep, movie);
    tq_free(deep);

    char *big = tq_malloc(TQ_FILTER_MAX_BYTES + 2);
    memset(big, ' ', TQ_FILTER_MAX_BYTES + 1);
    big[0] = '1';
    big[TQ_FILTER_MAX_BYTES + 1] = 0;
    tq_filter *f;
    tq_error err;
    cr_assert_eq(tq_filter_compile(big, strlen(big), &f, &err), TQ_EARG);
    cr_assert(strstr(err.msg, "limit"), "%s", err.msg);
    /* Too many tokens within the byte limit. */
    size_t m = 0;
    for (unsigned i = 0; i < TQ_FILTER_MAX_TOKENS / 2 + 1; i++)
        m += (size_t)sprintf(big + m, "1+");
    big[m++] = '1';
    big[m] = 0;
    cr_assert_eq(tq_filter_compile(big, m, &f, &err), TQ_EARG);
    cr_assert(strstr(err.msg, "tokens"), "%s", err.msg);
    tq_free(big);
}

/* A string with escapes longer than the evaluator's first buffer: the run
 * grows it and still answers. */
Test(filter, long_escaped_strings)
{
    const size_t n = 20000;
    char *json = tq_malloc(n + 64);
    size_t m = (size_t)sprintf(json, "{\"s\": \"");
    for (size_t i = 0; i < n / 2; i++)
        m += (size_t)sprintf(json + m, "\\t");
    m += (size_t)sprintf(json + m, "needle\"}");
    YES("'needle' in .s", json);
    NO("'pin' in .s", json);
    tq_free(json);
}

static const char *const docs[] = {
    "{\"a\": 1, \"s\": \"x\\ty\", \"t\": [1, \"two\"]}",
    "{\"a\": 2.5, \"s\": \"plain\"}",
    "{\"s\": null}",
    "not json",
    "{\"a\": true, \"s\": \"\\u00e9t\\u00e9\", \"t\": []}",
    "{\"a\": {\"nested\": 1}}",
    "",
    "{\"a\": -3e2, \"s\": \"\", \"t\": [\"x\\ty\"]}",
};
#define NDOCS (sizeof(docs) / sizeof(docs[0]))

static const char *doc_at(void *ctx, size_t row, uint32_t *len)
{
    (void)ctx;
    *len = (uint32_t)strlen(docs[row]);
    return *len ? docs[row] : NULL;
}

/* Columns give the same answers as reading the JSON, row by row. */
Test(filter, columns_agree_with_json)
{
    static const char *const exprs[] = {".a > 0", ".s == 'x\\ty'", ".s", "'x\\ty' in .t", ".a + 1 == -299",
                                        "not .s", ".s == null", "'t' in .s and .a", ".a == 1 or .s == 'été'",
                                        "1 == 1"};
    for (size_t e = 0; e < sizeof(exprs) / sizeof(exprs[0]); e++) {
        tq_filter *f;
        cr_assert_eq(tq_filter_compile(exprs[e], strlen(exprs[e]), &f, NULL), TQ_OK, "%s", exprs[e]);
        tq_filter_eval *ev;
        cr_assert_eq(tq_filter_eval_init(f, &ev), TQ_OK);
        size_t nsel = tq_filter_selector_count(f);
        tq_attr_column cols[8];
        const tq_attr_column *ptrs[8];
        for (size_t k = 0; k < nsel; k++) {
            uint32_t len;
            const char *name = tq_filter_selector(f, k, &len);
            cr_assert_eq(tq_attr_column_build(name, len, NDOCS, doc_at, NULL, &cols[k]), TQ_OK);
            ptrs[k] = &cols[k];
        }
        for (size_t r = 0; r < NDOCS; r++) {
            uint32_t len;
            const char *json = doc_at(NULL, r, &len);
            bool want = tq_filter_match(f, ev, json, len);
            bool got = nsel ? tq_filter_match_columns(f, ev, ptrs, r) : want;
            cr_assert_eq(got, want, "'%s' on doc %zu: columns say %d, JSON %d", exprs[e], r, got, want);
        }
        for (size_t k = 0; k < nsel; k++)
            tq_attr_column_free(&cols[k]);
        tq_filter_eval_free(ev);
        tq_filter_free(f);
    }
}

/* Found by fuzz_filter: a filter whose only string literal is empty has no
 * string pool, and comparing with it must not offset a NULL pointer
 * (UBSan). Also its answers. */
Test(filter, empty_string_literals_alone)
{
    cr_assert(run(".s == ''", "{\"s\":\"\"}"));
    cr_assert(!run(".s == ''", "{\"s\":\"x\"}"));
    cr_assert(!run(" 199 == ''", "{}"));
    cr_assert(run("'' in .s", "{\"s\":\"abc\"}"));
    cr_assert(run(".s in ['']", "{\"s\":\"\"}"));
}
