/*
 * Readers beside a writer on one collection, without a test framework so
 * that it also runs under ThreadSanitizer (tools/test builds it with
 * -Db_sanitize=thread). Two reader threads search and get while the writer
 * adds, replaces, removes, seals and compacts; every answer is checked:
 *   - a search returns exactly min(k, live) matches, never a key twice;
 *   - a match's attributes name its own key (no torn row);
 *   - get of a key the writer has finished with returns its latest version.
 * Exit status 0 when every check held.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

#define D 32
#define KEYS 400

static tq_collection *coll;
static volatile int stop;
/* Per key, a sequence count (odd while the writer is changing the key) and
 * the version it settled on (0 = removed): a reader's get counts only if
 * the count was even and unchanged around it. */
static unsigned seq[KEYS], settled[KEYS];
static size_t failures;        /* atomic */

static void vector_of(unsigned k, unsigned v, float *x)
{
    for (int j = 0; j < D; j++)
        x[j] = (float)((k * 37 + (unsigned)j * 11 + v * 5) % 97) / 97.0f - 0.5f + (j == 0 ? 1.0f : 0.0f);
}

static void fail(const char *what)
{
    fprintf(stderr, "stress: %s\n", what);
    __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
}

static void *reader(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        float q[D];
        vector_of(seed++ % KEYS, 3, q);
        tq_search_opts o = {.k = 8, .scorer = TQ_SCORER_LUT, .rerank = 2};
        tq_match m[8];
        size_t n;
        tq_snapshot *snap;
        if (tq_collection_search(coll, q, 1, &o, NULL, m, &n, &snap, NULL) != TQ_OK) {
            fail("search failed");
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            char want[32];
            int len = snprintf(want, sizeof(want), "key=%.*s", (int)m[i].key_len, m[i].key);
            if (m[i].attr_len < (uint32_t)len || memcmp(m[i].attr, want, (size_t)len) != 0)
                fail("a match's attributes belong to another key");
            for (size_t j = 0; j < i; j++)
                if (m[j].key_len == m[i].key_len && !memcmp(m[j].key, m[i].key, m[i].key_len))
                    fail("a key came back twice");
        }
        tq_snapshot_release(snap);
        unsigned k = seed % KEYS;
        unsigned before = __atomic_load_n(&seq[k], __ATOMIC_ACQUIRE);
        if (before == 0 || before % 2)
            continue;
        unsigned want = __atomic_load_n(&settled[k], __ATOMIC_ACQUIRE);
        char key[16], attr[64];
        size_t alen;
        snprintf(key, sizeof(key), "k%u", k);
        int rc = tq_collection_get(coll, key, (uint32_t)strlen(key), NULL, attr, sizeof(attr) - 1, &alen, NULL);
        if (__atomic_load_n(&seq[k], __ATOMIC_ACQUIRE) != before)
            continue;
        if (want == 0 ? rc != TQ_ENOTFOUND : rc != TQ_OK)
            fail("get disagrees with a settled key");
        if (rc == TQ_OK) {
            char expect[32];
            attr[alen] = 0;
            snprintf(expect, sizeof(expect), "key=k%u v=%u", k, want);
            if (strcmp(attr, expect) != 0)
                fail("get returned an old version");
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/tqvec-stress-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    tq_collection_options o = {
        .cfg = {.d = D, .metric = TQ_METRIC_L2, .bits = 3, .variant = TQ_VARIANT_PROD, .correction = TQ_CORRECTION_IP,
                .seed = 3, .refine = TQ_REFINE_CODE8, .center = TQ_CENTER_NONE},
        .create = true, .fsync = TQ_FSYNC_EVERYSEC, .segment_rows = 64};
    tq_error err;
    if (tq_collection_open(dir, &o, &coll, &err)) {
        fprintf(stderr, "stress: %s\n", err.msg);
        return 2;
    }
    const unsigned rounds = argc > 1 ? (unsigned)atoi(argv[1]) : 3;
    pthread_t t[2];
    for (size_t i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, reader, (void *)(i * 1000 + 1));
    for (unsigned round = 1; round <= rounds; round++) {
        for (unsigned k = 0; k < KEYS; k++) {
            float x[D];
            char key[16], attr[32];
            vector_of(k, round, x);
            snprintf(key, sizeof(key), "k%u", k);
            snprintf(attr, sizeof(attr), "key=k%u v=%u", k, round);
            tq_element e = {.key = key, .key_len = (uint32_t)strlen(key), .vector = x, .attr = attr,
                            .attr_len = (uint32_t)strlen(attr)};
            bool removed = (k + round) % 5 == 0;
            __atomic_fetch_add(&seq[k], 1, __ATOMIC_ACQ_REL);
            if (tq_collection_add(coll, &e, 1, NULL, &err) ||
                (removed && tq_collection_remove(coll, key, (uint32_t)strlen(key), &err))) {
                fprintf(stderr, "stress: write: %s\n", err.msg);
                return 1;
            }
            __atomic_store_n(&settled[k], removed ? 0 : round, __ATOMIC_RELEASE);
            __atomic_fetch_add(&seq[k], 1, __ATOMIC_ACQ_REL);
            if (k % 150 == 149 && tq_collection_compact(coll, &err)) {
                fprintf(stderr, "stress: compact: %s\n", err.msg);
                return 1;
            }
        }
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    tq_collection_close(coll, NULL);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 2;
    size_t f = __atomic_load_n(&failures, __ATOMIC_RELAXED);
    printf("stress: %u rounds of %d keys, %zu failed checks\n", rounds, KEYS, f);
    return f ? 1 : 0;
}
