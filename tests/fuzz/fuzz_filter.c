/*
 * FILTER expressions: the input is an expression, a NUL, then a JSON
 * document. The expression is compiled; if it compiles it is run on the
 * document, on a few fixed ones, and through the column path (a column
 * per selector over those documents, then the allow-list loop), so the
 * compiler, both evaluators and the JSON field extraction all see it.
 */
#include "fuzz_common.h"
#include "store.h"

static const char *const docs[] = {
    "{\"year\":1999,\"genre\":\"drama\",\"tags\":[\"a\",\"b\"],\"ok\":true,\"n\":null}",
    "{\"year\":\"2001\",\"rating\":4.5,\"name\":\"\\u00e9t\\u00e9\"}",
    "not json",
    "{}",
    "[1,2,3]",
};
#define NDOCS (sizeof(docs) / sizeof(docs[0]))

static const char *doc_at(void *ctx, size_t row, uint32_t *len)
{
    const char *const *d = ctx;
    *len = (uint32_t)strlen(d[row]);
    return d[row];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t elen = nul ? (size_t)(nul - data) : size;
    const char *json = nul ? (const char *)nul + 1 : NULL;
    size_t jlen = nul ? size - elen - 1 : 0;
    tq_filter *f;
    tq_error err;
    if (tq_filter_compile((const char *)data, elen, &f, &err))
        return 0;
    tq_filter_eval *ev;
    if (tq_filter_eval_init(f, &ev) == TQ_OK) {
        tq_filter_match(f, ev, json, jlen);
        for (size_t i = 0; i < NDOCS; i++)
            tq_filter_match(f, ev, docs[i], strlen(docs[i]));
        size_t nsel = tq_filter_selector_count(f);
        tq_attr_column *cols = tq_calloc(nsel + 1, sizeof(*cols));
        const tq_attr_column **colp = tq_calloc(nsel + 1, sizeof(*colp));
        bool built = cols && colp;
        for (size_t i = 0; built && i < nsel; i++) {
            uint32_t len;
            const char *name = tq_filter_selector(f, i, &len);
            built = tq_attr_column_build(name, len, NDOCS, doc_at, (void *)docs, &cols[i]) == TQ_OK;
            colp[i] = &cols[i];
        }
        if (built) {
            uint32_t bits[1] = {0};
            tq_filter_allow_columns(f, ev, colp, NDOCS, bits);
            for (size_t r = 0; r < NDOCS; r++)
                tq_filter_match_columns(f, ev, colp, r);
        }
        for (size_t i = 0; cols && i < nsel; i++)
            tq_attr_column_free(&cols[i]);
        tq_free(cols);
        tq_free(colp);
        tq_filter_eval_free(ev);
    }
    tq_filter_free(f);
    return 0;
}
