/*
 * The power-cut workload and its checker (driven by powercut.py).
 *
 *   powercut work ROOT      under the fault shim in recording mode: creates
 *                           the collection ROOT/c (fsync always, 16-row
 *                           segments) and runs adds, upserts, removes,
 *                           attribute changes and compactions, marking each
 *                           acknowledgement in the shim's journal;
 *   powercut check DIR ACKS opens DIR (a state the driver rebuilt as a disk
 *                           could hold it after a cut), without the shim,
 *                           and checks it against the acknowledgements made
 *                           before the cut (ACKS, one mark a line; the last
 *                           line may be "inflight ..." for the operation the
 *                           cut interrupted, which may have happened or not).
 *
 * The checker prints one line: "ok KEYS" (KEYS acknowledged states checked),
 * "lost ...", "wrong ..." (present with contents no acknowledged state
 * had), or "unopened MESSAGE" when the collection cannot be opened (then
 * only a message naming a file is acceptable, which the driver checks).
 * Vectors are a function of (key, version), kept as fp32 refine data, so
 * get() returns them exactly.
 */
#include "tqvec.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 8
#define KEYS 24
#define STEPS 90

static void vector_of(int key, int version, float *v)
{
    for (int j = 0; j < DIM; j++)
        v[j] = (float)(key * 31 + version * 7 + j * 3 % 11) + (j == key % DIM ? 50.0f : 0.0f);
}

static void (*mark_fn)(const char *);
static void (*arm_fn)(void);

static void mark(const char *fmt, int a, int b)
{
    char text[64];
    snprintf(text, sizeof(text), fmt, a, b);
    if (mark_fn)
        mark_fn(text);
}

static int work(const char *root)
{
    *(void **)&mark_fn = dlsym(RTLD_DEFAULT, "tq_powercut_mark");
    *(void **)&arm_fn = dlsym(RTLD_DEFAULT, "tq_fault_arm");
    if (!mark_fn || !arm_fn) {
        fprintf(stderr, "powercut: run under the fault shim\n");
        return 2;
    }
    arm_fn();
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/c", root);
    tqvec_collection_options o = {.dim = DIM, .metric = TQVEC_METRIC_L2, .bits = 4, .refine = TQVEC_REFINE_FP32,
                                  .create = 1, .fsync = TQVEC_FSYNC_ALWAYS, .segment_rows = 16};
    tqvec_collection *c;
    tqvec_error err;
    if (tqvec_collection_open(dir, &o, &c, &err)) {
        fprintf(stderr, "powercut: %s\n", err.message);
        return 1;
    }
    mark("create %d %d", 0, 0);
    int version[KEYS] = {0};
    unsigned seed = 12345;
    for (int step = 0; step < STEPS; step++) {
        seed = seed * 1103515245u + 12345u;
        const int key = (int)(seed >> 16) % KEYS, what = (int)(seed >> 8) % 10;
        char name[16];
        snprintf(name, sizeof(name), "k%d", key);
        if (what < 6) { /* add or upsert */
            float v[DIM];
            const int ver = version[key] + 1;
            vector_of(key, ver, v);
            char attrs[32];
            int alen = snprintf(attrs, sizeof(attrs), "{\"v\":%d}", ver);
            tqvec_element e = {.key = name, .key_len = strlen(name), .vector = v, .attrs = attrs,
                               .attrs_len = (size_t)alen};
            mark("inflight add %d %d", key, ver);
            if (tqvec_collection_add(c, &e, 1, NULL, &err))
                goto fail;
            version[key] = ver;
            mark("add %d %d", key, ver);
        } else if (what < 8) { /* remove */
            if (!version[key])
                continue;
            mark("inflight rm %d %d", key, version[key]);
            if (tqvec_collection_remove(c, name, strlen(name), &err))
                goto fail;
            version[key] = 0;
            mark("rm %d %d", key, 0);
        } else if (what < 9) { /* attributes only */
            if (!version[key])
                continue;
            char attrs[32];
            int alen = snprintf(attrs, sizeof(attrs), "{\"v\":%d,\"a\":1}", version[key]);
            mark("inflight attr %d %d", key, version[key]);
            if (tqvec_collection_set_attrs(c, name, strlen(name), attrs, (size_t)alen, &err))
                goto fail;
            mark("attr %d %d", key, version[key]);
        } else {
            mark("inflight compact %d %d", 0, 0);
            if (tqvec_collection_compact(c, &err))
                goto fail;
            mark("compact %d %d", 0, 0);
        }
    }
    return tqvec_collection_close(c, NULL) ? 1 : 0;
fail:
    fprintf(stderr, "powercut: %s\n", err.message);
    return 1;
}

/* Per key: the acknowledged version (0: absent), whether its attributes
 * were rewritten, and for the in-flight operation's key the other state it
 * may be in. */
typedef struct expect {
    int version, attr;
    int alt_version, alt_attr, has_alt;
} expect;

static int state_matches(tqvec_collection *c, int key, int version, int attr)
{
    char name[16], attrs[64], want[64];
    snprintf(name, sizeof(name), "k%d", key);
    float v[DIM], w[DIM];
    size_t alen = 0;
    int rc = tqvec_collection_get(c, name, strlen(name), v, attrs, sizeof(attrs), &alen, NULL);
    if (!version)
        return rc == TQVEC_ENOTFOUND;
    if (rc)
        return 0;
    vector_of(key, version, w);
    int wlen = attr ? snprintf(want, sizeof(want), "{\"v\":%d,\"a\":1}", version)
                    : snprintf(want, sizeof(want), "{\"v\":%d}", version);
    return !memcmp(v, w, sizeof(v)) && alen == (size_t)wlen && !memcmp(attrs, want, alen);
}

static int check(const char *dir, const char *acks)
{
    FILE *f = fopen(acks, "r");
    if (!f)
        return 2;
    expect e[KEYS] = {{0}};
    char line[128], op[16];
    int key, ver, created = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "inflight %15s %d %d", op, &key, &ver) == 3) {
            /* The interrupted operation: its key may be in either state. */
            if (!strcmp(op, "add")) {
                e[key].has_alt = 1, e[key].alt_version = ver, e[key].alt_attr = 0;
            } else if (!strcmp(op, "rm")) {
                e[key].has_alt = 1, e[key].alt_version = 0, e[key].alt_attr = 0;
            } else if (!strcmp(op, "attr")) {
                e[key].has_alt = 1, e[key].alt_version = ver, e[key].alt_attr = 1;
            }
            continue;
        }
        if (sscanf(line, "%15s %d %d", op, &key, &ver) != 3)
            continue;
        if (!strcmp(op, "create"))
            created = 1;
        else if (!strcmp(op, "add"))
            e[key] = (expect){.version = ver};
        else if (!strcmp(op, "rm"))
            e[key] = (expect){0};
        else if (!strcmp(op, "attr"))
            e[key] = (expect){.version = ver, .attr = 1};
    }
    fclose(f);
    tqvec_collection_options o = {0};
    tqvec_collection *c;
    tqvec_error err;
    if (tqvec_collection_open(dir, &o, &c, &err)) {
        /* Before the create was acknowledged, no collection is fine. */
        printf("%s %s\n", created ? "unopened" : "ok-uncreated", err.message);
        return 0;
    }
    int checked = 0;
    for (int k = 0; k < KEYS; k++) {
        int ok = state_matches(c, k, e[k].version, e[k].attr) ||
                 (e[k].has_alt && state_matches(c, k, e[k].alt_version, e[k].alt_attr));
        if (!ok) {
            printf("lost-or-wrong key k%d (acknowledged version %d%s)\n", k, e[k].version,
                   e[k].attr ? " with attributes" : "");
            tqvec_collection_close(c, NULL);
            return 0;
        }
        checked++;
    }
    if (tqvec_collection_verify(c, &err)) {
        printf("unverified %s\n", err.message);
        tqvec_collection_close(c, NULL);
        return 0;
    }
    tqvec_collection_close(c, NULL);
    printf("ok %d\n", checked);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "work"))
        return work(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "check"))
        return check(argv[2], argv[3]);
    fprintf(stderr, "usage: powercut work ROOT | powercut check DIR ACKS\n");
    return 2;
}
