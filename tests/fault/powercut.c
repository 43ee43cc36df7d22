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
 *   powercut work-daemon ROOT / check-daemon DIR ACKS
 *                           the same through tqvecd's command layer (the
 *                           keyspace in ROOT/c: TQ.CREATE, VADD, VREM,
 *                           VSETATTR, DEL of whole sets), as a worker runs
 *                           commands, appendfsync always;
 *   powercut work-everysec ROOT
 *                           the collection workload with fsync everysec and
 *                           a pause between steps, so acknowledgements
 *                           span several seconds; its check takes the
 *                           cut's time (check DIR ACKS SECONDS) and accepts,
 *                           per key, any state acknowledged in the last
 *                           second before the cut, or the one before.
 *
 * The checker prints one line: "ok KEYS" (KEYS acknowledged states checked),
 * "lost ...", "wrong ..." (present with contents no acknowledged state
 * had), or "unopened MESSAGE" when the collection cannot be opened (then
 * only a message naming a file is acceptable, which the driver checks).
 * Vectors are a function of (key, version), kept as fp32 refine data, so
 * get() returns them exactly.
 */
#include "daemon.h"
#include "tqvec.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/* An acknowledgement with the time it was made (seconds, monotonic). */
static void mark(const char *fmt, int a, int b)
{
    char text[96];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(text, sizeof(text), fmt, a, b);
    snprintf(text + n, sizeof(text) - (size_t)n, " @%.6f", (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
    if (mark_fn)
        mark_fn(text);
}

static int find_shim(void)
{
    *(void **)&mark_fn = dlsym(RTLD_DEFAULT, "tq_powercut_mark");
    *(void **)&arm_fn = dlsym(RTLD_DEFAULT, "tq_fault_arm");
    if (!mark_fn || !arm_fn) {
        fprintf(stderr, "powercut: run under the fault shim\n");
        return 0;
    }
    return 1;
}

static int work(const char *root, bool everysec)
{
    if (!find_shim())
        return 2;
    arm_fn();
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/c", root);
    tqvec_collection_options o = {.dim = DIM, .metric = TQVEC_METRIC_L2, .bits = 4, .refine = TQVEC_REFINE_FP32,
                                  .create = 1, .fsync = everysec ? TQVEC_FSYNC_EVERYSEC : TQVEC_FSYNC_ALWAYS,
                                  /* everysec: no seals, whose syncs would make the log's
                                   * rows durable sooner than its syncer does */
                                  .segment_rows = everysec ? 4096 : 16};
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
        if (everysec)
            nanosleep(&(struct timespec){.tv_nsec = 40 * 1000 * 1000}, NULL);
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
        } else if (!everysec) {
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

/* Per key: the states it may be in after the cut, newest first: the one
 * acknowledged last, the one in flight at the cut, and under everysec
 * every one acknowledged within the second before the cut and the last one
 * before that second. */
#define MAX_STATES 64
typedef struct expect {
    int n;
    int version[MAX_STATES], attr[MAX_STATES];
    bool settled; /* a state acknowledged more than a second before the cut is in */
} expect;

static void allow(expect *e, int version, int attr)
{
    if (e->n < MAX_STATES) {
        e->version[e->n] = version;
        e->attr[e->n] = attr;
        e->n++;
    }
}

/* Read ACKS into per-key expectations. window: seconds before the cut in
 * which acknowledged writes may be lost (0: none may); cut: the cut's
 * time. Keys are "k<n>" (collection) or "s<set>/e<n>" numbered set * 100
 * + n (daemon). Returns whether the create was acknowledged, -1 on a bad
 * file. */
static int read_acks(const char *acks, double window, double cut, expect *e, int nkeys)
{
    FILE *f = fopen(acks, "r");
    if (!f)
        return -1;
    char line[160], op[16];
    int key, ver, created = 0;
    double at;
    for (int k = 0; k < nkeys; k++)
        e[k] = (expect){.n = 1}; /* absent */
    while (fgets(line, sizeof(line), f)) {
        const bool inflight = !strncmp(line, "inflight ", 9);
        if (sscanf(line + (inflight ? 9 : 0), "%15s %d %d @%lf", op, &key, &ver, &at) != 4)
            continue;
        if (!strcmp(op, "create")) {
            created = 1;
            continue;
        }
        if (!strcmp(op, "del")) { /* a whole set: its keys key*100 .. +99 */
            for (int k = key * 100; k < key * 100 + 100 && k < nkeys; k++) {
                if (inflight || (window > 0 && at > cut - window)) {
                    allow(&e[k], 0, 0);
                } else {
                    e[k] = (expect){.n = 1};
                }
            }
            continue;
        }
        if (key < 0 || key >= nkeys || !strcmp(op, "compact"))
            continue;
        const int v = !strcmp(op, "rm") ? 0 : ver, a = !strcmp(op, "attr");
        if (inflight || (window > 0 && at > cut - window))
            allow(&e[key], v, a); /* may or may not have reached the disk */
        else
            e[key] = (expect){.n = 1, .version = {v}, .attr = {a}};
    }
    fclose(f);
    return created;
}

/* Whether element `name` of c is in the state (version 0: absent; the
 * vector of key and version, attributes {"v":version} or with "a":1). */
static int element_matches(tqvec_collection *c, const char *name, int key, int version, int attr)
{
    char attrs[64], want[64];
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

static int state_matches(tqvec_collection *c, int key, int version, int attr)
{
    char name[16];
    snprintf(name, sizeof(name), "k%d", key);
    return element_matches(c, name, key, version, attr);
}

static int any_state(const expect *e, int k, int (*matches)(void *, int, int, int), void *ctx)
{
    for (int i = 0; i < e[k].n; i++)
        if (matches(ctx, k, e[k].version[i], e[k].attr[i]))
            return 1;
    return 0;
}

static int collection_matches(void *ctx, int key, int version, int attr)
{
    return state_matches(ctx, key, version, attr);
}

static int check(const char *dir, const char *acks, double window, double cut)
{
    expect e[KEYS];
    int created = read_acks(acks, window, cut, e, KEYS);
    if (created < 0)
        return 2;
    tqvec_collection_options o = {0};
    tqvec_collection *c;
    tqvec_error err;
    if (tqvec_collection_open(dir, &o, &c, &err)) {
        /* Before the create was acknowledged, no collection is fine. */
        printf("%s %s\n", created ? "unopened" : "ok-uncreated", err.message);
        return 0;
    }
    int checked = 0;
    for (int k = 0; k < KEYS; k++, checked++)
        if (!any_state(e, k, collection_matches, c)) {
            printf("lost-or-wrong key k%d (acknowledged version %d%s)\n", k, e[k].version[0],
                   e[k].attr[0] ? " with attributes" : "");
            tqvec_collection_close(c, NULL);
            return 0;
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

/* ------------------------------------------------------------- tqvecd */

#define SETS 3
#define ELEMS 10

/* Run one command; 1 if it did not reply with an error. */
static int run(tqd_client *cl, tqd_buf *out, const char *const *words, const size_t *lens, size_t n)
{
    tqd_arg argv[16];
    for (size_t i = 0; i < n; i++)
        argv[i] = (tqd_arg){words[i], lens ? lens[i] : strlen(words[i])};
    out->len = 0;
    tqd_reply r = {.out = out, .proto = 2};
    tqd_execute(cl, argv, n, &r);
    return out->len && out->p[0] != '-';
}

static int daemon_open(const char *dir)
{
    static char path[4096];
    snprintf(path, sizeof(path), "%s", dir);
    char *args[] = {"tqvecd", "--dir", path, "--appendfsync", "always", "--segment-rows", "16",
                    "--loglevel", "warning", NULL};
    return !tqd_config_parse(&tqd.cfg, 9, args) && !tqd_keyspace_open(&tqd.cfg);
}

static int work_daemon(const char *root)
{
    if (!find_shim())
        return 2;
    arm_fn();
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/c", root);
    /* The data directory is the administrator's, made durable before the
     * daemon starts. */
    int rootfd = -1;
    if (mkdir(dir, 0755) || (rootfd = open(root, O_RDONLY | O_DIRECTORY)) < 0 || fsync(rootfd) || close(rootfd) ||
        !daemon_open(dir))
        return 1;
    mark("create %d %d", 0, 0);
    tqd_client cl = {.id = 1, .proto = 2, .authed = true};
    tqd_buf out = {0};
    int version[SETS * 100] = {0}, exists[SETS] = {0};
    unsigned seed = 777;
    for (int step = 0; step < STEPS; step++) {
        seed = seed * 1103515245u + 12345u;
        const int set = (int)(seed >> 16) % SETS, elem = (int)(seed >> 4) % ELEMS, what = (int)(seed >> 8) % 12;
        const int key = set * 100 + elem;
        char sname[8], ename[8], json[32];
        snprintf(sname, sizeof(sname), "s%d", set);
        snprintf(ename, sizeof(ename), "e%d", elem);
        if (!exists[set]) {
            const char *w[] = {"TQ.CREATE", sname, "DIM", "8", "METRIC", "l2", "REFINE", "fp32"};
            if (!run(&cl, &out, w, NULL, 8))
                goto fail;
            exists[set] = 1;
        }
        if (what < 7) {
            float v[DIM];
            const int ver = version[key] + 1;
            vector_of(key, ver, v);
            int jl = snprintf(json, sizeof(json), "{\"v\":%d}", ver);
            const char *w[] = {"VADD", sname, "FP32", (const char *)v, ename, "SETATTR", json};
            const size_t l[] = {4, strlen(sname), 4, sizeof(v), strlen(ename), 7, (size_t)jl};
            mark("inflight add %d %d", key, ver);
            if (!run(&cl, &out, w, l, 7))
                goto fail;
            version[key] = ver;
            mark("add %d %d", key, ver);
        } else if (what < 9) {
            if (!version[key])
                continue;
            const char *w[] = {"VREM", sname, ename};
            mark("inflight rm %d %d", key, 0);
            if (!run(&cl, &out, w, NULL, 3))
                goto fail;
            version[key] = 0;
            mark("rm %d %d", key, 0);
        } else if (what < 10) {
            const char *w[] = {"TQ.COMPACT", sname};
            mark("inflight compact %d %d", set, 0);
            if (!run(&cl, &out, w, NULL, 2))
                goto fail;
            mark("compact %d %d", set, 0);
        } else if (what < 11) {
            if (!version[key])
                continue;
            int jl = snprintf(json, sizeof(json), "{\"v\":%d,\"a\":1}", version[key]);
            const char *w[] = {"VSETATTR", sname, ename, json};
            const size_t l[] = {8, strlen(sname), strlen(ename), (size_t)jl};
            mark("inflight attr %d %d", key, version[key]);
            if (!run(&cl, &out, w, l, 4))
                goto fail;
            mark("attr %d %d", key, version[key]);
        } else {
            const char *w[] = {"DEL", sname};
            mark("inflight del %d %d", set, 0);
            if (!run(&cl, &out, w, NULL, 2))
                goto fail;
            for (int k = set * 100; k < set * 100 + 100; k++)
                version[k] = 0;
            exists[set] = 0;
            mark("del %d %d", set, 0);
        }
    }
    tqd_buf_free(&out);
    tqd_keyspace_close();
    return 0;
fail:
    fprintf(stderr, "powercut: command failed: %.*s\n", (int)out.len, out.p);
    return 1;
}

static int daemon_matches(void *ctx, int key, int version, int attr)
{
    (void)ctx;
    char sname[8];
    snprintf(sname, sizeof(sname), "s%d", key / 100);
    tqd_vset *v = tqd_keyspace_get(0, sname, strlen(sname));
    if (!v)
        return version == 0;
    char name[16];
    snprintf(name, sizeof(name), "e%d", key % 100);
    int ok = element_matches(v->c, name, key, version, attr);
    tqd_vset_release(v);
    return ok;
}

static int check_daemon(const char *dir, const char *acks)
{
    static expect e[SETS * 100];
    int created = read_acks(acks, 0.0, 0.0, e, SETS * 100);
    if (created < 0)
        return 2;
    struct stat st;
    if (stat(dir, &st) != 0 || !daemon_open(dir)) {
        printf("%s the data directory does not open\n", created ? "unopened" : "ok-uncreated");
        return 0;
    }
    int checked = 0;
    for (int set = 0; set < SETS; set++) {
        for (int k = set * 100; k < set * 100 + ELEMS; k++, checked++)
            if (!any_state(e, k, daemon_matches, NULL)) {
                printf("lost-or-wrong key s%d/e%d (acknowledged version %d%s)\n", set, k % 100, e[k].version[0],
                       e[k].attr[0] ? " with attributes" : "");
                tqd_keyspace_close();
                return 0;
            }
        char sname[8];
        snprintf(sname, sizeof(sname), "s%d", set);
        tqd_vset *v = tqd_keyspace_get(0, sname, strlen(sname));
        tqvec_error err;
        int vrc = v ? tqvec_collection_verify(v->c, &err) : TQVEC_OK;
        if (v)
            tqd_vset_release(v);
        if (vrc) {
            printf("unverified set %s: %s\n", sname, err.message);
            tqd_keyspace_close();
            return 0;
        }
    }
    tqd_keyspace_close();
    printf("ok %d\n", checked);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "work"))
        return work(argv[2], false);
    if (argc == 3 && !strcmp(argv[1], "work-everysec"))
        return work(argv[2], true);
    if (argc == 3 && !strcmp(argv[1], "work-daemon"))
        return work_daemon(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "check"))
        return check(argv[2], argv[3], 0.0, 0.0);
    if (argc == 5 && !strcmp(argv[1], "check"))
        return check(argv[2], argv[3], 1.0, atof(argv[4]));
    if (argc == 4 && !strcmp(argv[1], "check-daemon"))
        return check_daemon(argv[2], argv[3]);
    fprintf(stderr, "usage: powercut work|work-everysec|work-daemon ROOT | powercut check DIR ACKS [CUT_TIME] | "
                    "powercut check-daemon DIR ACKS\n");
    return 2;
}
