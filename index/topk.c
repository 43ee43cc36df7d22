/*
 * Bounded best-k selection: a binary min-heap of the kept hits, the worst at
 * the root, so a candidate is compared once against the root and most are
 * rejected there. Order is (score descending, id ascending): equal scores go
 * to the lower id, which makes results independent of scan order and thread
 * split, and matches how ground truth files break ties.
 *
 * The scan itself feeds a collector instead: a heap pays a sift-down per
 * accepted hit, which measured a fifth of a small search; a buffer that is
 * cut back to the best `keep` by one selection when full pays O(1) per hit.
 */
#include "tq_index.h"

bool tq_hit_better(const tq_hit *a, const tq_hit *b)
{
    return a->score > b->score || (a->score == b->score && a->id < b->id);
}

int tq_topk_init(tq_topk *t, size_t cap)
{
    t->cap = cap;
    t->len = 0;
    t->heap = tq_malloc((cap ? cap : 1) * sizeof(tq_hit));
    return t->heap ? TQ_OK : TQ_ENOMEM;
}

void tq_topk_free(tq_topk *t)
{
    if (t) {
        tq_free(t->heap);
        t->heap = NULL;
    }
}

void tq_topk_reset(tq_topk *t)
{
    t->len = 0;
}

static void sift_down(tq_hit *h, size_t len, size_t i)
{
    tq_hit x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= len)
            break;
        if (c + 1 < len && tq_hit_better(&h[c], &h[c + 1]))
            c++;
        if (!tq_hit_better(&x, &h[c]))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

bool tq_topk_accepts(const tq_topk *t, uint64_t id, float score)
{
    if (t->len < t->cap)
        return true;
    if (t->cap == 0)
        return false;
    tq_hit cand = {id, score};
    return tq_hit_better(&cand, &t->heap[0]);
}

void tq_topk_push(tq_topk *t, uint64_t id, float score)
{
    tq_hit cand = {id, score};
    if (t->len < t->cap) {
        size_t i = t->len++;
        while (i > 0) {
            size_t parent = (i - 1) / 2;
            if (!tq_hit_better(&t->heap[parent], &cand))
                break;
            t->heap[i] = t->heap[parent];
            i = parent;
        }
        t->heap[i] = cand;
    } else if (t->cap > 0 && tq_hit_better(&cand, &t->heap[0])) {
        t->heap[0] = cand;
        sift_down(t->heap, t->len, 0);
    }
}

size_t tq_topk_drain(tq_topk *t, tq_hit *out)
{
    size_t n = t->len;
    /* Heapsort: pop the worst into the slot the heap just gave up, so out may
     * be the heap's own array; out ends up best first. */
    while (t->len > 0) {
        tq_hit worst = t->heap[0];
        t->heap[0] = t->heap[--t->len];
        sift_down(t->heap, t->len, 0);
        out[t->len] = worst;
    }
    return n;
}

/* Slots beyond `keep`: a cut costs O(cap) and happens once per cap - keep
 * additions, so each addition costs O(1); the margin keeps the threshold
 * from lagging far behind a heap's. */
#define COLLECTOR_SLACK(keep) ((keep) / 2 + 16)

int tq_collector_init(tq_collector *c, size_t keep)
{
    c->keep = keep;
    c->cap = keep + COLLECTOR_SLACK(keep);
    c->len = 0;
    c->threshold = -INFINITY;
    c->buf = tq_malloc(c->cap * sizeof(uint64_t));
    c->out = tq_malloc((keep ? keep : 1) * sizeof(tq_hit));
    if (!c->buf || !c->out) {
        tq_collector_free(c);
        return TQ_ENOMEM;
    }
    return TQ_OK;
}

void tq_collector_free(tq_collector *c)
{
    if (c) {
        tq_free(c->buf);
        tq_free(c->out);
        c->buf = NULL;
        c->out = NULL;
    }
}

void tq_collector_reset(tq_collector *c)
{
    c->len = 0;
    c->threshold = -INFINITY;
}

/* Reorder h[0..n) so that h[0..m) are its m largest (any order).
 * Quickselect with a median-of-three pivot and a branch-free partition:
 * packed hits are distinct, so the result does not depend on the pivots
 * chosen. */
void tq_select_largest(uint64_t *h, size_t n, size_t m)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1 && m > lo && m < hi) {
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        const uint64_t a = h[lo], b = h[mid], c = h[last];
        /* The median of the three as the pivot, parked at the end. */
        const uint64_t pivot = a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
        const size_t at = pivot == a ? lo : pivot == b ? mid : last;
        h[at] = h[last];
        h[last] = pivot;
        size_t store = lo;
        /* h[lo..store) beat the pivot, h[store..i) do not. Swapping h[i]
         * with h[store] either way keeps that true, and no branch depends
         * on the comparison. */
        for (size_t i = lo; i < last; i++) {
            const uint64_t x = h[i];
            h[i] = h[store];
            h[store] = x;
            store += x > pivot;
        }
        h[last] = h[store];
        h[store] = pivot;
        /* The pivot now sits at store. */
        if (store == m || store + 1 == m)
            return;
        if (m < store)
            hi = store;
        else
            lo = store + 1;
    }
}

void tq_collector_cut(tq_collector *c)
{
    if (c->len < c->keep || c->keep == 0) {
        if (c->keep == 0)
            c->len = 0;
        return;
    }
    if (c->len > c->keep)
        tq_select_largest(c->buf, c->len, c->keep);
    c->len = c->keep;
    uint64_t worst = c->buf[0];
    for (size_t i = 1; i < c->len; i++)
        worst = c->buf[i] < worst ? c->buf[i] : worst;
    c->threshold = tq_collector_score(worst);
}

static int packed_descending(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x > y ? -1 : x < y ? 1 : 0;
}

size_t tq_collector_finish(tq_collector *c, bool sorted)
{
    tq_collector_cut(c);
    uint64_t *h = c->buf;
    const size_t n = c->len;
    if (sorted && n > 64) {
        qsort(h, n, sizeof(uint64_t), packed_descending);
    } else if (sorted) {
        /* A search's k' is usually a few dozen: insertion sort. */
        for (size_t i = 1; i < n; i++) {
            const uint64_t x = h[i];
            size_t j = i;
            for (; j > 0 && x > h[j - 1]; j--)
                h[j] = h[j - 1];
            h[j] = x;
        }
    }
    for (size_t i = 0; i < n; i++) {
        c->out[i].id = tq_collector_id(h[i]);
        c->out[i].score = tq_collector_score(h[i]);
    }
    return n;
}
