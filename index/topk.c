/*
 * Bounded best-k selection: a binary min-heap of the kept hits, the worst at
 * the root, so a candidate is compared once against the root and most are
 * rejected there. Order is (score descending, id ascending): equal scores go
 * to the lower id, which makes results independent of scan order and thread
 * split, and matches how ground truth files break ties.
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
