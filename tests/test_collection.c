/*
 * Collections (tq_collection_*): persistence through the log and through
 * sealed segments, upserts and deletes, compaction, answers equal to an
 * in-memory index of the live vectors, damage reported by file and section,
 * torn log tails, bad input, the directory lock, readers beside a writer,
 * a writer killed with SIGKILL hundreds of times (its segments being
 * partitioned in the background) without losing an acknowledged write, and
 * partitioned segments answering as flat ones.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store.h"

#define D 24

#include "temp_dir.h"

TestSuite(collection, .init = make_dir, .fini = remove_dir);

static tq_config config(tq_metric metric, tq_refine refine)
{
    return (tq_config){.d = D, .metric = metric, .bits = 4, .variant = TQ_VARIANT_MSE,
                       .correction = TQ_CORRECTION_IP, .seed = 42, .refine = refine, .center = TQ_CENTER_NONE};
}

static char warnings[2048];

static void capture(void *ctx, int level, const char *msg)
{
    (void)ctx;
    if (level == TQ_LOG_WARNING)
        snprintf(warnings + strlen(warnings), sizeof(warnings) - strlen(warnings), "%s\n", msg);
}

static tq_collection *open_coll(const tq_config *cfg, size_t segment_rows, tq_fsync_policy fsync)
{
    tq_collection_options o = {.cfg = *cfg, .create = true, .fsync = fsync, .segment_rows = segment_rows,
                               .log = capture};
    tq_collection *c;
    tq_error err;
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "%s", err.msg);
    return c;
}

static void vector_of(size_t i, unsigned version, float *v)
{
    for (int j = 0; j < D; j++)
        v[j] = (float)sin((double)(i * 31 + (size_t)j * 7 + version * 13)) + (j == 0 ? 1.5f : 0.0f);
}

static void add_one(tq_collection *c, size_t i, unsigned version)
{
    char key[32], attr[32];
    float v[D];
    vector_of(i, version, v);
    snprintf(key, sizeof(key), "doc-%zu", i);
    snprintf(attr, sizeof(attr), "{\"v\":%u}", version);
    tq_element e = {.key = key, .key_len = (uint32_t)strlen(key), .vector = v, .attr = attr,
                    .attr_len = (uint32_t)strlen(attr)};
    tq_error err;
    cr_assert_eq(tq_collection_add(c, &e, 1, NULL, &err), TQ_OK, "%s", err.msg);
}

static void remove_one(tq_collection *c, size_t i)
{
    char key[32];
    snprintf(key, sizeof(key), "doc-%zu", i);
    tq_error err;
    cr_assert_eq(tq_collection_remove(c, key, (uint32_t)strlen(key), &err), TQ_OK, "%s", err.msg);
}

/* The live state the test expects: version per element, 0 = absent. */
#define N 300
static unsigned state[N];

/* Elements [from, to) at version 1, recorded in state. */
static void add_range(tq_collection *c, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        add_one(c, i, 1);
        state[i] = 1;
    }
}

/* Search the collection and an in-memory index of the live vectors; the
 * same keys with the same scores must come back. */
static void check_against_reference(tq_collection *c, const tq_config *cfg)
{
    size_t live = 0, row_of[N];
    float *x = tq_malloc(N * D * sizeof(float));
    for (size_t i = 0; i < N; i++)
        if (state[i]) {
            vector_of(i, state[i], x + live * D);
            row_of[live++] = i;
        }
    tq_collection_stats st;
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.live, live, "live count %llu, expected %zu", (unsigned long long)st.live, live);
    cr_assert_eq(tq_collection_count_attributed(c), live, "every live element has attributes");
    tq_flat *ref;
    cr_assert_eq(tq_flat_create(cfg, &ref, NULL), TQ_OK);
    if (live)
        cr_assert_eq(tq_flat_add(ref, x, live, NULL), TQ_OK);
    for (size_t qi = 0; qi < 5; qi++) {
        float q[D];
        vector_of(qi * 17 + 3, 9, q);
        tq_search_opts o = {.k = 10, .scorer = TQ_SCORER_LUT, .rerank = cfg->refine == TQ_REFINE_NONE ? 0 : 2};
        tq_hit want[10];
        size_t nwant, ngot;
        tq_match got[10];
        tq_snapshot *snap;
        tq_error err;
        cr_assert_eq(tq_flat_search_batch(ref, q, 1, &o, want, &nwant, NULL), TQ_OK);
        cr_assert_eq(tq_collection_search(c, q, 1, &o, NULL, got, &ngot, &snap, &err), TQ_OK, "%s", err.msg);
        cr_assert_eq(ngot, nwant, "query %zu: %zu hits, expected %zu", qi, ngot, nwant);
        for (size_t h = 0; h < ngot; h++) {
            char key[32];
            size_t i = row_of[want[h].id];
            snprintf(key, sizeof(key), "doc-%zu", i);
            cr_assert(got[h].key_len == strlen(key) && !memcmp(got[h].key, key, got[h].key_len),
                      "query %zu hit %zu: '%.*s', expected %s", qi, h, (int)got[h].key_len, got[h].key, key);
            cr_assert(fabsf(got[h].score - want[h].score) <= 1e-5f * (1.0f + fabsf(want[h].score)),
                      "query %zu hit %zu: score %g against %g", qi, h, (double)got[h].score, (double)want[h].score);
            char attr[32];
            snprintf(attr, sizeof(attr), "{\"v\":%u}", state[i]);
            cr_assert(got[h].attr_len == strlen(attr) && !memcmp(got[h].attr, attr, got[h].attr_len));
        }
        tq_snapshot_release(snap);
    }
    tq_flat_free(ref);
    tq_free(x);
}

static void reopen_and_check(tq_collection **c, const tq_config *cfg, size_t segment_rows)
{
    cr_assert_eq(tq_collection_close(*c, NULL), TQ_OK);
    *c = open_coll(cfg, segment_rows, TQ_FSYNC_NO);
    check_against_reference(*c, cfg);
}

Test(collection, survives_reopen_seal_upsert_delete_and_compaction)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_FP32);
    memset(state, 0, sizeof(state));
    tq_collection *c = open_coll(&cfg, 64, TQ_FSYNC_NO);
    add_range(c, 0, 40);
    check_against_reference(c, &cfg);
    reopen_and_check(&c, &cfg, 64); /* all in the log */
    add_range(c, 40, N);
    tq_collection_stats st;
    tq_collection_stats_get(c, &st);
    cr_assert_geq(st.segments, 4, "sealed %u segments", st.segments);
    check_against_reference(c, &cfg);
    reopen_and_check(&c, &cfg, 64);
    for (size_t i = 0; i < N; i += 3) { /* upserts across sealed segments and the log */
        add_one(c, i, 2);
        state[i] = 2;
    }
    for (size_t i = 1; i < N; i += 4) {
        remove_one(c, i);
        state[i] = 0;
    }
    check_against_reference(c, &cfg);
    reopen_and_check(&c, &cfg, 64);
    tq_error err;
    cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.deleted, 0, "compaction left %llu deleted rows", (unsigned long long)st.deleted);
    check_against_reference(c, &cfg);
    reopen_and_check(&c, &cfg, 64);

    /* get: attributes and the stored vector. */
    float v[D], want[D];
    char attr[16];
    size_t alen;
    cr_assert_eq(tq_collection_get(c, "doc-3", 5, v, attr, sizeof(attr), &alen, &err), TQ_OK, "%s", err.msg);
    vector_of(3, 2, want);
    cr_assert(alen == 7 && !memcmp(attr, "{\"v\":2}", 7));
    cr_assert(!memcmp(v, want, sizeof(v)), "fp32 refine returns the vector as stored");
    cr_assert_eq(tq_collection_get(c, "doc-1", 5, v, NULL, 0, NULL, &err), TQ_ENOTFOUND);
    cr_assert_eq(tq_collection_get(c, "doc-3", 5, NULL, attr, 3, &alen, &err), TQ_EARG, "buffer too small");
    cr_assert_eq(alen, 7);
    tq_collection_close(c, NULL);
}

/* Lines of this process's memory map: one per mapping. */
static size_t mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert_not_null(f);
    size_t n = 0;
    for (int ch; (ch = fgetc(f)) != EOF;)
        n += ch == '\n';
    fclose(f);
    return n;
}

/* Every mutable segment's arrays are unmapped when it is sealed or the
 * collection closes: a cosine segment's lengths (the last of its arrays)
 * once stayed mapped, one mapping per segment for the life of a daemon. */
Test(collection, sealing_and_closing_unmap_every_array)
{
    const tq_config cfg = config(TQ_METRIC_COSINE, TQ_REFINE_FP32);
    memset(state, 0, sizeof(state));
    size_t before = 0;
    /* the first round warms what is kept across rounds: freed threads'
     * stacks, the allocator's extents */
    for (int round = 0; round < 4; round++) {
        if (round == 1)
            before = mappings();
        tq_collection *c = open_coll(&cfg, 64, TQ_FSYNC_NO);
        add_range(c, 0, N); /* seals several segments */
        cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
    }
    cr_assert_leq(mappings(), before, "%zu mappings after three rounds, %zu before", mappings(), before);
}

Test(collection, codes_only_and_ip_metric)
{
    const tq_config cfg = config(TQ_METRIC_IP, TQ_REFINE_NONE);
    memset(state, 0, sizeof(state));
    tq_collection *c = open_coll(&cfg, 50, TQ_FSYNC_EVERYSEC);
    add_range(c, 0, 130);
    remove_one(c, 7);
    state[7] = 0;
    check_against_reference(c, &cfg);
    reopen_and_check(&c, &cfg, 50);
    /* Without refine floats, get decodes the codes: close, not equal. */
    float v[D], want[D];
    tq_error err;
    cr_assert_eq(tq_collection_get(c, "doc-20", 6, v, NULL, 0, NULL, &err), TQ_OK, "%s", err.msg);
    vector_of(20, 1, want);
    double e2 = 0, n2 = 0;
    for (int j = 0; j < D; j++) {
        e2 += (double)(v[j] - want[j]) * (v[j] - want[j]);
        n2 += (double)want[j] * want[j];
    }
    cr_assert_lt(e2 / n2, 0.05, "decoded vector relative error %g", e2 / n2);
    tq_collection_close(c, NULL);
}

/* A vector-codebook collection (2 bits): the codebook survives the log,
 * sealing, reopening and compaction (answers equal an in-memory index of
 * the live rows), it is what the manifest (version 2) and every segment
 * (format 7) say, and asking for the scalar codebook is refused. */
/* A vector-codebook collection at `bits` (2: nibbles, 3: sextets) keeps
 * its rows and its codebook across reopens and compaction, says so in its
 * manifest and segments, and refuses to open as a scalar one. */
static void check_vector_codebook_stored(unsigned bits)
{
    tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_NONE);
    cfg.bits = bits;
    cfg.codebook = TQ_CODEBOOK_VECTOR;
    memset(state, 0, sizeof(state));
    tq_collection *c = open_coll(&cfg, 40, TQ_FSYNC_NO);
    cr_assert_not_null(tq_collection_codec(c)->q.vcb);
    add_range(c, 0, 100);
    for (size_t i = 0; i < 100; i += 5) {
        remove_one(c, i);
        state[i] = 0;
    }
    check_against_reference(c, &cfg);
    reopen_and_check(&c, &cfg, 40);
    tq_error err;
    cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
    reopen_and_check(&c, &cfg, 40);
    cr_assert_not_null(tq_collection_codec(c)->q.vcb);
    cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);

    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    FILE *f = fopen(path, "rb");
    uint32_t head[12];
    cr_assert(f && fread(head, 4, 12, f) == 12);
    fclose(f);
    cr_assert_eq(head[2], 2, "manifest version %u", head[2]);
    cr_assert_eq(head[11], (uint32_t)TQ_CODEBOOK_VECTOR);
    snprintf(path, sizeof(path), "ls %s/seg/*.tqs > %s/list", dir, dir);
    cr_assert_eq(system(path), 0);
    snprintf(path, sizeof(path), "%s/list", dir);
    FILE *list = fopen(path, "r");
    char name[PATH_MAX];
    int segments = 0;
    while (fscanf(list, "%1023s", name) == 1) {
        FILE *g = fopen(name, "rb");
        cr_assert(g && fread(head, 4, 12, g) == 12);
        fclose(g);
        cr_assert_eq(head[2], 7, "%s: format %u", name, head[2]);
        cr_assert_eq(head[11], (uint32_t)TQ_CODEBOOK_VECTOR, "%s", name);
        segments++;
    }
    fclose(list);
    cr_assert_geq(segments, 1);

    tq_collection_options o = {.cfg = cfg, .log = capture};
    o.cfg.codebook = TQ_CODEBOOK_SCALAR;
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_EARG, "a scalar codebook asked of a vector one");
    o.any_codebook = true; /* the API's default: whatever the collection has */
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_codec(c)->cfg.codebook, TQ_CODEBOOK_VECTOR);
    tq_collection_close(c, NULL);
}

Test(collection, vector_codebook_is_stored_and_checked)
{
    check_vector_codebook_stored(2);
}

Test(collection, vector_codebook_at_3_bits_is_stored_and_checked)
{
    check_vector_codebook_stored(3);
}

Test(collection, fp16_refine_data)
{
    const tq_config cfg = config(TQ_METRIC_COSINE, TQ_REFINE_FP16);
    memset(state, 0, sizeof(state));
    tq_collection *c = open_coll(&cfg, 70, TQ_FSYNC_NO);
    add_range(c, 0, 150);
    check_against_reference(c, &cfg);
    reopen_and_check(&c, &cfg, 70);
    /* get: the vector as given, its direction to half precision. */
    float v[D], want[D];
    tq_error err;
    cr_assert_eq(tq_collection_get(c, "doc-9", 5, v, NULL, 0, NULL, &err), TQ_OK, "%s", err.msg);
    vector_of(9, 1, want);
    for (int j = 0; j < D; j++)
        cr_assert(fabs(v[j] - want[j]) <= 1e-3 * (1 + fabs(want[j])), "coordinate %d: %g against %g", j,
                  (double)v[j], (double)want[j]);
    tq_collection_close(c, NULL);

    /* Beyond the half range: refused under l2, where vectors are stored as given. */
    const tq_config l2 = config(TQ_METRIC_L2, TQ_REFINE_FP16);
    remove_dir();
    make_dir();
    c = open_coll(&l2, 70, TQ_FSYNC_NO);
    float big[D] = {0};
    big[4] = 70000.0f;
    tq_element e = {.key = "big", .key_len = 3, .vector = big};
    cr_assert_eq(tq_collection_add(c, &e, 1, NULL, &err), TQ_EVALUE);
    cr_assert(strstr(err.msg, "fp16"), "%s", err.msg);
    tq_collection_close(c, NULL);
}

Test(collection, bad_input_changes_nothing)
{
    const tq_config cfg = config(TQ_METRIC_COSINE, TQ_REFINE_NONE);
    tq_collection *c = open_coll(&cfg, 100, TQ_FSYNC_NO);
    add_one(c, 1, 1);
    float v[D];
    vector_of(2, 1, v);
    char longkey[TQ_MAX_KEY_BYTES + 1];
    memset(longkey, 'k', sizeof(longkey));
    tq_element good = {.key = "ok", .key_len = 2, .vector = v};
    float inf[D];
    vector_of(3, 1, inf);
    inf[D - 1] = INFINITY;
    tq_element bad[] = {
        {.key = NULL, .key_len = 0, .vector = v},
        {.key = longkey, .key_len = sizeof(longkey), .vector = v},
        {.key = "a", .key_len = 1, .vector = v, .attr = "x", .attr_len = TQ_MAX_ATTR_BYTES + 1},
        {.key = "z", .key_len = 1, .vector = inf},
    };
    const int codes[] = {TQ_EARG, TQ_EARG, TQ_EARG, TQ_EVALUE};
    tq_error err;
    for (int i = 0; i < 4; i++) {
        tq_element batch[2] = {good, bad[i]};
        cr_assert_eq(tq_collection_add(c, batch, 2, NULL, &err), codes[i], "case %d", i);
        cr_assert(strstr(err.msg, "element 1"), "%s", err.msg);
    }
    v[5] = NAN;
    cr_assert_eq(tq_collection_add(c, &good, 1, NULL, &err), TQ_EVALUE);
    cr_assert(strstr(err.msg, "coordinate 5") && strstr(err.msg, "'ok'"), "%s", err.msg);
    cr_assert_eq(tq_collection_remove(c, "nope", 4, &err), TQ_ENOTFOUND);
    tq_collection_stats st;
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.live, 1);
    cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
    c = open_coll(&cfg, 100, TQ_FSYNC_NO);
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.live, 1, "nothing rejected reached the log");
    /* The empty key is a key like any other (Redis allows it). */
    tq_element empty = {.key = "", .key_len = 0, .vector = v, .attr = "{}", .attr_len = 2};
    v[5] = 0.5f;
    cr_assert_eq(tq_collection_add(c, &empty, 1, NULL, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
    c = open_coll(&cfg, 100, TQ_FSYNC_NO);
    char got[8];
    size_t got_len;
    cr_assert_eq(tq_collection_get(c, "", 0, NULL, got, sizeof(got), &got_len, &err), TQ_OK, "%s", err.msg);
    cr_assert(got_len == 2 && !memcmp(got, "{}", 2));
    cr_assert_eq(tq_collection_remove(c, "", 0, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
    c = open_coll(&cfg, 100, TQ_FSYNC_NO);
    cr_assert_eq(tq_collection_get(c, "", 0, NULL, NULL, 0, NULL, &err), TQ_ENOTFOUND, "the removal was logged");

    tq_collection *second;
    tq_collection_options o = {.cfg = cfg};
    cr_assert_eq(tq_collection_open(dir, &o, &second, &err), TQ_EBUSY, "one process at a time");
    tq_collection_close(c, NULL);
    tq_config other = cfg;
    other.d = D + 1;
    o.cfg = other;
    cr_assert_eq(tq_collection_open(dir, &o, &second, &err), TQ_EARG, "different settings");
    o = (tq_collection_options){0};
    char missing[96];
    snprintf(missing, sizeof(missing), "%s/none", dir);
    cr_assert_eq(tq_collection_open(missing, &o, &second, &err), TQ_ENOTFOUND);
}

Test(collection, torn_log_tail_is_cut_with_a_warning)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_NONE);
    memset(state, 0, sizeof(state));
    tq_collection *c = open_coll(&cfg, 1000, TQ_FSYNC_ALWAYS);
    add_range(c, 0, 20);
    tq_collection_close(c, NULL);
    char path[128];
    snprintf(path, sizeof(path), "%s/wal/00000001.log", dir);
    int fd = open(path, O_WRONLY | O_APPEND);
    cr_assert_eq(write(fd, "\x40\x00\x00\x00\x01\x00garbage", 13), 13);
    close(fd);
    warnings[0] = 0;
    c = open_coll(&cfg, 1000, TQ_FSYNC_NO);
    cr_assert(strstr(warnings, "cut 13 bytes"), "warnings: %s", warnings);
    check_against_reference(c, &cfg);
    tq_collection_close(c, NULL);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s", path);
    return (uint64_t)st.st_size;
}

/* One add of several elements is one log append: cut anywhere inside it
 * (a crash part way through the write), none of its elements comes back,
 * and everything before it does. */
Test(collection, a_torn_batch_is_lost_whole)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_NONE);
    memset(state, 0, sizeof(state));
    tq_collection *c = open_coll(&cfg, 1000, TQ_FSYNC_NO);
    add_range(c, 0, 20);
    tq_collection_close(c, NULL);
    char path[128], cmd[400];
    snprintf(path, sizeof(path), "%s/wal/00000001.log", dir);
    const uint64_t before = file_size(path);
    c = open_coll(&cfg, 1000, TQ_FSYNC_NO);
    float v[5][D];
    tq_element batch[5];
    char keys[5][16];
    for (int i = 0; i < 5; i++) {
        vector_of(100 + (size_t)i, 1, v[i]);
        snprintf(keys[i], sizeof(keys[i]), "doc-%d", 100 + i);
        batch[i] = (tq_element){.key = keys[i], .key_len = (uint32_t)strlen(keys[i]), .vector = v[i]};
    }
    tq_error err;
    cr_assert_eq(tq_collection_add(c, batch, 5, NULL, &err), TQ_OK, "%s", err.msg);
    tq_collection_close(c, NULL);
    const uint64_t after = file_size(path);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s-full'", path, dir);
    cr_assert_eq(system(cmd), 0);
    for (uint64_t cut = before + 1; cut < after; cut += (after - before) / 23 + 1) {
        snprintf(cmd, sizeof(cmd), "head -c %llu '%s-full' > '%s'", (unsigned long long)cut, dir, path);
        cr_assert_eq(system(cmd), 0);
        c = open_coll(&cfg, 1000, TQ_FSYNC_NO);
        check_against_reference(c, &cfg); /* doc-0 .. doc-19 only */
        tq_collection_close(c, NULL);
    }
    snprintf(cmd, sizeof(cmd), "cp '%s-full' '%s'", dir, path);
    cr_assert_eq(system(cmd), 0);
    c = open_coll(&cfg, 1000, TQ_FSYNC_NO);
    tq_collection_stats st;
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.live, 25, "the whole append replays");
    tq_collection_close(c, NULL);
    snprintf(cmd, sizeof(cmd), "rm -f '%s-full'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Flip one byte in each section of a sealed segment, in the manifest and
 * in the middle of the log: each is reported with the file, and no search
 * answers from damaged bytes. */
Test(collection, damage_is_reported_never_served)
{
    const tq_config cfg = config(TQ_METRIC_COSINE, TQ_REFINE_CODE8); /* every section but signs */
    memset(state, 0, sizeof(state));
    tq_collection *c = open_coll(&cfg, 64, TQ_FSYNC_NO);
    add_range(c, 0, 100);
    tq_error err;
    cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg); /* everything sealed */
    tq_collection_close(c, NULL);
    char seg[128], cmd[256];
    snprintf(cmd, sizeof(cmd), "ls %s/seg/*.tqs | head -1", dir);
    FILE *p = popen(cmd, "r");
    cr_assert(fgets(seg, sizeof(seg), p));
    pclose(p);
    seg[strcspn(seg, "\n")] = 0;
    tq_segment_file sf;
    tq_codec codec;
    cr_assert_eq(tq_codec_init(&codec, &cfg, NULL), TQ_OK);
    cr_assert_eq(tq_segment_open(seg, &codec, &sf, &err), TQ_OK, "%s", err.msg);
    uint64_t off[TQ_SEC_COUNT + 1], len[TQ_SEC_COUNT + 1];
    memcpy(off, sf.sec_off, sizeof(off));
    memcpy(len, sf.sec_len, sizeof(len));
    tq_segment_close(&sf);
    tq_codec_free(&codec);
    const char *names[] = {"", "codes", "", "scalars", "refine", "keys", "attributes", "lengths"};
    for (int kind = 1; kind <= TQ_SEC_COUNT; kind++) {
        if (!len[kind])
            continue;
        off_t at = (off_t)(off[kind] + len[kind] / 2);
        int fd = open(seg, O_RDWR);
        uint8_t b, f;
        cr_assert_eq(pread(fd, &b, 1, at), 1);
        f = b ^ 0x10;
        cr_assert_eq(pwrite(fd, &f, 1, at), 1);
        tq_collection_options o = {.cfg = cfg, .log = capture};
        int rc = tq_collection_open(dir, &o, &c, &err);
        if (rc == TQ_OK) {
            float q[D];
            vector_of(1, 1, q);
            tq_search_opts so = {.k = 5, .scorer = TQ_SCORER_LUT};
            tq_match m[5];
            size_t n;
            tq_snapshot *snap;
            rc = tq_collection_search(c, q, 1, &so, NULL, m, &n, &snap, &err);
            tq_snapshot_release(snap);
            tq_collection_close(c, NULL);
        }
        cr_assert_eq(rc, TQ_ECORRUPT, "section %s: damage went unnoticed", names[kind]);
        cr_assert(strstr(err.msg, seg) && strstr(err.msg, names[kind]), "section %s: %s", names[kind], err.msg);
        cr_assert_eq(pwrite(fd, &b, 1, at), 1);
        close(fd);
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    int fd = open(path, O_RDWR);
    uint8_t b, f;
    cr_assert_eq(pread(fd, &b, 1, 70), 1);
    f = b ^ 1;
    cr_assert_eq(pwrite(fd, &f, 1, 70), 1);
    tq_collection_options o = {.cfg = cfg};
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "MANIFEST"), "%s", err.msg);
    cr_assert_eq(pwrite(fd, &b, 1, 70), 1);
    close(fd);

    /* A damaged record with valid ones after it in the live log. */
    c = open_coll(&cfg, 64, TQ_FSYNC_NO);
    for (size_t i = 200; i < 205; i++)
        add_one(c, i, 1);
    tq_collection_close(c, NULL);
    snprintf(cmd, sizeof(cmd), "ls %s/wal/*.log | head -1", dir);
    p = popen(cmd, "r");
    cr_assert(fgets(path, sizeof(path), p));
    pclose(p);
    path[strcspn(path, "\n")] = 0;
    fd = open(path, O_RDWR);
    cr_assert_eq(pread(fd, &b, 1, 32 + 40), 1);
    f = b ^ 4;
    cr_assert_eq(pwrite(fd, &f, 1, 32 + 40), 1);
    close(fd);
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, path), "%s", err.msg);
}

typedef struct reader_job {
    tq_collection *c;
    volatile bool *stop;
    size_t searches, bad;
} reader_job;

static void *reader(void *arg)
{
    reader_job *j = arg;
    float q[D];
    vector_of(5, 3, q);
    tq_search_opts o = {.k = 10, .scorer = TQ_SCORER_LUT, .rerank = 2};
    while (!*j->stop) {
        tq_match m[10];
        size_t n;
        tq_snapshot *snap;
        if (tq_collection_search(j->c, q, 1, &o, NULL, m, &n, &snap, NULL) != TQ_OK) {
            j->bad++;
            continue;
        }
        /* The writer only adds, and 10 went in before the readers started. */
        if (n != 10)
            j->bad++;
        for (size_t i = 0; i < n; i++)
            if (m[i].key_len < 5 || memcmp(m[i].key, "doc-", 4) != 0)
                j->bad++;
        tq_snapshot_release(snap);
        j->searches++;
    }
    return NULL;
}

Test(collection, readers_beside_a_writer)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_FP32);
    memset(state, 0, sizeof(state));
    tq_collection *c = open_coll(&cfg, 40, TQ_FSYNC_NO);
    add_range(c, 0, 10);
    volatile bool stop = false;
    reader_job jobs[2] = {{c, &stop, 0, 0}, {c, &stop, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, reader, &jobs[i]);
    for (size_t i = 10; i < N; i++) {
        add_one(c, i, 1);
        state[i] = 1;
        if (i % 97 == 0) {
            tq_error err;
            cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
        }
    }
    stop = true;
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(jobs[i].bad, 0, "reader %d: %zu bad answers in %zu", i, jobs[i].bad, jobs[i].searches);
        cr_assert_gt(jobs[i].searches, 0);
    }
    check_against_reference(c, &cfg);
    tq_collection_close(c, NULL);
}

/* The writer runs in a child with fsync always, writing each operation to
 * a pipe before it starts ("I") and after it is acknowledged ("A"). The
 * parent kills it at random moments, reopens, and checks every key: an
 * acknowledged state must be there; only the one operation in flight may
 * have gone either way. Small segments make kills land inside seals and
 * compactions too. */
Test(collection, sigkill_loses_no_acknowledged_write, .timeout = 240)
{
    const tq_config cfg = config(TQ_METRIC_IP, TQ_REFINE_NONE);
    enum { KEYS = 48, KILLS = 200 };
    unsigned acked[KEYS] = {0}; /* version, 0 = absent */
    unsigned version = 1;
    size_t kills = 0, verified = 0;
    srand(2504);
    for (int round = 0; round < KILLS; round++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            /* Every sealed segment is partitioned in the background, so
             * kills land inside the partitioner's rewrite and switch too. */
            tq_collection_options o = {.cfg = cfg, .create = true, .fsync = TQ_FSYNC_ALWAYS, .segment_rows = 16,
                                       .partition_rows = 16, .log = capture};
            tq_collection *c;
            if (tq_collection_open(dir, &o, &c, NULL))
                _exit(3);
            for (unsigned op = 0;; op++) {
                unsigned v = version + op, k = (unsigned)rand() % KEYS;
                bool rm = rand() % 4 == 0;
                char line[64], key[16];
                snprintf(key, sizeof(key), "doc-%u", k);
                int len = snprintf(line, sizeof(line), "I %c %u %u\n", rm ? 'R' : 'A', k, v);
                if (write(fds[1], line, (size_t)len) != len)
                    _exit(4);
                int rc;
                if (rm) {
                    rc = tq_collection_remove(c, key, (uint32_t)strlen(key), NULL);
                    if (rc == TQ_ENOTFOUND)
                        rc = TQ_OK;
                } else {
                    float vec[D];
                    char attr[16];
                    vector_of(k, v, vec);
                    snprintf(attr, sizeof(attr), "%u", v);
                    tq_element e = {.key = key, .key_len = (uint32_t)strlen(key), .vector = vec, .attr = attr,
                                    .attr_len = (uint32_t)strlen(attr)};
                    rc = tq_collection_add(c, &e, 1, NULL, NULL);
                }
                if (rc)
                    _exit(5);
                line[0] = 'A';
                if (write(fds[1], line, (size_t)len) != len)
                    _exit(4);
                if (op % 37 == 36)
                    tq_collection_compact(c, NULL);
            }
        }
        close(fds[1]);
        usleep((useconds_t)(rand() % 12000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "writer exited on its own with %d", WEXITSTATUS(status));
        kills++;
        /* Read the child's journal: acknowledged ops, and the last in flight. */
        FILE *in = fdopen(fds[0], "r");
        char line[64];
        int pending_key = -1;
        unsigned max_v = version;
        while (fgets(line, sizeof(line), in)) {
            char what, op;
            unsigned k, v;
            if (sscanf(line, "%c %c %u %u", &what, &op, &k, &v) != 4)
                continue; /* a line cut by the kill: its op never started */
            if (v >= max_v)
                max_v = v + 1;
            if (what == 'I') {
                pending_key = (int)k;
            } else {
                acked[k] = op == 'A' ? v : 0;
                pending_key = -1;
            }
        }
        fclose(in);
        version = max_v;
        /* create: the kill may have come before the child created it. */
        tq_collection_options o = {.cfg = cfg, .create = true, .partition_rows = 16, .log = capture};
        tq_collection *c;
        tq_error err;
        cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "round %d: %s", round, err.msg);
        for (unsigned k = 0; k < KEYS; k++) {
            char key[16], attr[16];
            size_t alen;
            snprintf(key, sizeof(key), "doc-%u", k);
            int rc = tq_collection_get(c, key, (uint32_t)strlen(key), NULL, attr, sizeof(attr) - 1, &alen, &err);
            if ((int)k == pending_key) {
                /* Either outcome, but then it is what the log says from now on. */
                if (rc == TQ_OK) {
                    attr[alen] = 0;
                    acked[k] = (unsigned)atoi(attr);
                } else {
                    acked[k] = 0;
                }
                continue;
            }
            if (acked[k]) {
                cr_assert_eq(rc, TQ_OK, "round %d: acknowledged %s (version %u) is missing", round, key, acked[k]);
                attr[alen] = 0;
                cr_assert_eq((unsigned)atoi(attr), acked[k], "round %d: %s has version %s, acknowledged %u", round,
                             key, attr, acked[k]);
            } else {
                cr_assert_eq(rc, TQ_ENOTFOUND, "round %d: removed %s is back", round, key);
            }
            verified++;
        }
        tq_collection_close(c, NULL);
    }
    cr_assert_eq(kills, KILLS);
    cr_log_info("%zu kills, %zu key states verified", kills, verified);
}

/* Filtered search answers exactly as an index of the matching vectors
 * only, at any selectivity, and always with min(k, matching) results. */
static void check_filtered(double allowlist_below);

/* Both strategies — the filter inside the scan, and an allow-list made
 * first — and the default choice between them give the exact answer. */
Test(collection, filtered_search_is_exact_at_any_selectivity)
{
    check_filtered(-1);  /* never an allow-list */
    remove_dir();
    make_dir();
    check_filtered(2.0); /* always */
    remove_dir();
    make_dir();
    check_filtered(0);   /* chosen by a sample */
}

static void check_filtered(double allowlist_below)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_FP32);
    tq_collection_options opts = {.cfg = cfg, .create = true, .fsync = TQ_FSYNC_NO, .segment_rows = 64,
                                  .allowlist_below = allowlist_below};
    tq_collection *c;
    cr_assert_eq(tq_collection_open(dir, &opts, &c, NULL), TQ_OK);
    for (size_t i = 0; i < N; i++) {
        char key[32], attr[64];
        float v[D];
        vector_of(i, 1, v);
        snprintf(key, sizeof(key), "doc-%zu", i);
        snprintf(attr, sizeof(attr), "{\"i\": %zu, \"g\": \"grp%zu\"}", i, i % 10);
        tq_element e = {.key = key, .key_len = (uint32_t)strlen(key), .vector = v, .attr = attr,
                        .attr_len = (uint32_t)strlen(attr)};
        cr_assert_eq(tq_collection_add(c, &e, 1, NULL, NULL), TQ_OK);
    }
    /* Removed elements stay out under either strategy. */
    static const size_t removed[] = {17, 40, 52, 107, 294};
    for (size_t r = 0; r < sizeof(removed) / sizeof(removed[0]); r++) {
        char key[32];
        snprintf(key, sizeof(key), "doc-%zu", removed[r]);
        cr_assert_eq(tq_collection_remove(c, key, (uint32_t)strlen(key), NULL), TQ_OK);
    }
    static const char *const exprs[] = {".i % 2 == 0", ".g in ['grp1', 'grp2']", ".i % 100 == 7", ".i == 17",
                                        ".i == 18", ".i < 0", "'grp' in .g and .i >= 290", ".i < 60"};
    for (size_t t = 0; t < sizeof(exprs) / sizeof(exprs[0]); t++) {
        tq_filter *f;
        tq_error err;
        cr_assert_eq(tq_filter_compile(exprs[t], strlen(exprs[t]), &f, &err), TQ_OK, "%s", err.msg);
        tq_filter_eval *ev;
        cr_assert_eq(tq_filter_eval_init(f, &ev), TQ_OK);
        /* The reference: an index of the matching vectors. */
        float *x = tq_malloc(N * D * sizeof(float));
        size_t nmatch = 0, row_of[N];
        for (size_t i = 0; i < N; i++) {
            char attr[64];
            snprintf(attr, sizeof(attr), "{\"i\": %zu, \"g\": \"grp%zu\"}", i, i % 10);
            bool gone = false;
            for (size_t r = 0; r < sizeof(removed) / sizeof(removed[0]); r++)
                gone |= removed[r] == i;
            if (!gone && tq_filter_match(f, ev, attr, strlen(attr))) {
                vector_of(i, 1, x + nmatch * D);
                row_of[nmatch++] = i;
            }
        }
        tq_flat *ref;
        cr_assert_eq(tq_flat_create(&cfg, &ref, NULL), TQ_OK);
        if (nmatch)
            cr_assert_eq(tq_flat_add(ref, x, nmatch, NULL), TQ_OK);
        for (unsigned threads = 1; threads <= 2; threads++) {
            float q[D];
            vector_of(123, 4, q);
            tq_search_opts o = {.k = 10, .scorer = TQ_SCORER_LUT, .rerank = 2, .threads = threads};
            tq_hit want[10];
            tq_match got[10];
            size_t nwant, ngot;
            tq_snapshot *snap;
            cr_assert_eq(tq_flat_search_batch(ref, q, 1, &o, want, &nwant, NULL), TQ_OK);
            cr_assert_eq(tq_collection_search(c, q, 1, &o, f, got, &ngot, &snap, &err), TQ_OK, "%s", err.msg);
            cr_assert_eq(ngot, nmatch < 10 ? nmatch : 10, "'%s': %zu results for %zu matching", exprs[t], ngot, nmatch);
            cr_assert_eq(ngot, nwant);
            for (size_t h = 0; h < ngot; h++) {
                char key[32];
                snprintf(key, sizeof(key), "doc-%zu", row_of[want[h].id]);
                cr_assert(got[h].key_len == strlen(key) && !memcmp(got[h].key, key, got[h].key_len),
                          "'%s' hit %zu: '%.*s', expected %s", exprs[t], h, (int)got[h].key_len, got[h].key, key);
            }
            tq_snapshot_release(snap);
        }
        tq_flat_free(ref);
        tq_free(x);
        tq_filter_eval_free(ev);
        tq_filter_free(f);
    }
    tq_collection_close(c, NULL);
}

/* Attributes replaced in place keep the vector bit for bit (fp32 refine
 * data and codes alike), in the log, after a seal and after a reopen. */
Test(collection, set_attr_keeps_the_stored_row)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_NONE);
    tq_collection *c = open_coll(&cfg, 64, TQ_FSYNC_NO);
    add_range(c, 0, 100);
    float before[D], after[D];
    char attr[64];
    size_t alen;
    tq_error err;
    cr_assert_eq(tq_collection_get(c, "doc-7", 5, before, NULL, 0, NULL, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_set_attr(c, "doc-7", 5, "{\"v\":5}", 7, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_set_attr(c, "doc-70", 6, NULL, 0, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_set_attr(c, "nope", 4, "{}", 2, &err), TQ_ENOTFOUND);
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(tq_collection_get(c, "doc-7", 5, after, attr, sizeof(attr), &alen, &err), TQ_OK, "%s", err.msg);
        cr_assert(alen == 7 && !memcmp(attr, "{\"v\":5}", 7), "round %d: attributes '%.*s'", round, (int)alen, attr);
        cr_assert(!memcmp(before, after, sizeof(before)), "round %d: the vector changed", round);
        cr_assert_eq(tq_collection_get(c, "doc-70", 6, NULL, attr, sizeof(attr), &alen, &err), TQ_OK);
        cr_assert_eq(alen, 0, "round %d: removed attributes still %zu bytes", round, alen);
        tq_collection_stats st;
        tq_collection_stats_get(c, &st);
        cr_assert_eq(st.live, 100, "round %d: %llu live", round, (unsigned long long)st.live);
        if (round == 0)
            cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
        if (round == 1) {
            cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
            c = open_coll(&cfg, 64, TQ_FSYNC_NO);
        }
    }
    tq_collection_close(c, NULL);
}

/* Distinct samples hold distinct live keys; draws with repeats hold
 * exactly n; a removed key is never drawn; the seed fixes the draw. */
Test(collection, random_keys)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_NONE);
    tq_collection *c = open_coll(&cfg, 1000, TQ_FSYNC_NO);
    tq_sample s, t;
    tq_error err;
    cr_assert_eq(tq_collection_sample(c, 5, true, 1, &s, &err), TQ_OK);
    cr_assert_eq(s.n, 0, "an empty collection gave %zu keys", s.n);
    tq_free(s.bytes);
    tq_free(s.lens);
    add_range(c, 0, 200);
    for (size_t i = 0; i < 200; i += 2)
        remove_one(c, i);
    const size_t asks[] = {1, 10, 60, 100, 500};
    for (size_t a = 0; a < sizeof(asks) / sizeof(asks[0]); a++) {
        for (int repeats = 0; repeats < 2; repeats++) {
            cr_assert_eq(tq_collection_sample(c, asks[a], repeats, 7, &s, &err), TQ_OK, "%s", err.msg);
            size_t want = repeats ? asks[a] : (asks[a] < 100 ? asks[a] : 100);
            cr_assert_eq(s.n, want, "n %zu repeats %d: %zu keys", asks[a], repeats, s.n);
            bool seen[200] = {false};
            for (size_t i = 0, at = 0; i < s.n; at += s.lens[i++]) {
                unsigned id;
                char key[16];
                cr_assert(s.lens[i] < sizeof(key));
                memcpy(key, s.bytes + at, s.lens[i]);
                key[s.lens[i]] = 0;
                cr_assert(sscanf(key, "doc-%u", &id) == 1 && id < 200 && id % 2 == 1, "drew '%s'", key);
                cr_assert(repeats || !seen[id], "'%s' drawn twice", key);
                seen[id] = true;
            }
            cr_assert_eq(tq_collection_sample(c, asks[a], repeats, 7, &t, &err), TQ_OK);
            cr_assert(t.n == s.n && !memcmp(t.lens, s.lens, s.n * sizeof(uint32_t)), "seeded draws differ");
            tq_free(s.bytes);
            tq_free(s.lens);
            tq_free(t.bytes);
            tq_free(t.lens);
        }
    }
    tq_collection_close(c, NULL);
}

/* get() decodes from the finest data kept: 8-bit refine codes give about
 * a tenth of the error of the 4-bit scan codes (Lloyd-Max at 8 bits). */
Test(collection, get_decodes_from_code8_refine_data)
{
    double err_of[2];
    const tq_refine refines[2] = {TQ_REFINE_NONE, TQ_REFINE_CODE8};
    for (int r = 0; r < 2; r++) {
        const tq_config cfg = config(TQ_METRIC_L2, refines[r]);
        tq_collection *c = open_coll(&cfg, 1000, TQ_FSYNC_NO);
        add_range(c, 0, 40);
        double num = 0, den = 0;
        for (size_t i = 0; i < 40; i++) {
            char key[32];
            float want[D], got[D];
            vector_of(i, 1, want);
            snprintf(key, sizeof(key), "doc-%zu", i);
            tq_error err;
            cr_assert_eq(tq_collection_get(c, key, (uint32_t)strlen(key), got, NULL, 0, NULL, &err), TQ_OK, "%s",
                         err.msg);
            for (int j = 0; j < D; j++) {
                num += (double)(got[j] - want[j]) * (got[j] - want[j]);
                den += (double)want[j] * want[j];
            }
        }
        err_of[r] = sqrt(num / den);
        tq_collection_close(c, NULL);
        remove_dir();
        make_dir();
    }
    cr_assert(err_of[0] > 0.03 && err_of[0] < 0.2, "4-bit relative error %g", err_of[0]);
    cr_assert(err_of[1] < err_of[0] / 5, "code8 relative error %g against 4-bit %g", err_of[1], err_of[0]);
}

/* Key ranges: byte order, open and closed ends, a cap, deleted keys gone. */
Test(collection, key_range_in_byte_order)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_NONE);
    tq_collection *c = open_coll(&cfg, 64, TQ_FSYNC_NO);
    add_range(c, 0, 150); /* doc-0 .. doc-149, in three segments and the log */
    remove_one(c, 100);
    tq_sample s;
    tq_error err;
    const tq_key_bound open = {0}, from = {.key = "doc-10", .len = 6, .inclusive = false},
                       to = {.key = "doc-11", .len = 6, .inclusive = true};
    /* (doc-10, doc-11]: doc-101..doc-109 (doc-100 sorts before doc-101,
     * and is deleted anyway), doc-11; not doc-110 (longer than the bound). */
    cr_assert_eq(tq_collection_key_range(c, &from, &to, SIZE_MAX, &s, &err), TQ_OK, "%s", err.msg);
    const char *want[] = {"doc-101", "doc-102", "doc-103", "doc-104", "doc-105",
                          "doc-106", "doc-107", "doc-108", "doc-109", "doc-11"};
    cr_assert_eq(s.n, 10, "%zu keys", s.n);
    for (size_t i = 0, at = 0; i < s.n; at += s.lens[i++])
        cr_assert(s.lens[i] == strlen(want[i]) && !memcmp(s.bytes + at, want[i], s.lens[i]), "key %zu: '%.*s'",
                  i, (int)s.lens[i], s.bytes + at);
    tq_free(s.bytes);
    tq_free(s.lens);
    /* Unbounded, capped: the first three in order; then everything, sorted. */
    cr_assert_eq(tq_collection_key_range(c, &open, &open, 3, &s, &err), TQ_OK);
    cr_assert(s.n == 3 && !memcmp(s.bytes, "doc-0doc-1doc-10", 16));
    tq_free(s.bytes);
    tq_free(s.lens);
    cr_assert_eq(tq_collection_key_range(c, &open, &open, SIZE_MAX, &s, &err), TQ_OK);
    cr_assert_eq(s.n, 149);
    for (size_t i = 1, at = s.lens[0]; i < s.n; at += s.lens[i++]) {
        const char *prev = s.bytes + at - s.lens[i - 1], *cur = s.bytes + at;
        size_t n = s.lens[i - 1] < s.lens[i] ? s.lens[i - 1] : s.lens[i];
        int o = memcmp(prev, cur, n);
        cr_assert(o < 0 || (o == 0 && s.lens[i - 1] < s.lens[i]), "keys %zu and %zu out of order", i - 1, i);
    }
    tq_free(s.bytes);
    tq_free(s.lens);
    /* The count of attributed keys as they come and go, across a reopen
     * and a compaction. */
    cr_assert_eq(tq_collection_count_attributed(c), 149);
    cr_assert_eq(tq_collection_set_attr(c, "doc-7", 5, NULL, 0, &err), TQ_OK);
    cr_assert_eq(tq_collection_count_attributed(c), 148);
    add_one(c, 7, 2); /* an upsert with attributes */
    cr_assert_eq(tq_collection_count_attributed(c), 149);
    cr_assert_eq(tq_collection_set_attr(c, "doc-20", 6, NULL, 0, &err), TQ_OK);
    remove_one(c, 20); /* removing a key without attributes */
    remove_one(c, 21);
    cr_assert_eq(tq_collection_count_attributed(c), 147);
    cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
    c = open_coll(&cfg, 64, TQ_FSYNC_NO);
    cr_assert_eq(tq_collection_count_attributed(c), 147);
    cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_count_attributed(c), 147);
    tq_collection_close(c, NULL);
}

/* A backup opens as the same collection (sealed rows, tombstones, the log's
 * writes), stays independent of the original, and refuses an existing
 * destination; a moved collection keeps working (seal, compact, reopen). */
Test(collection, backup_and_move)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_FP32);
    tq_collection *c = open_coll(&cfg, 64, TQ_FSYNC_NO);
    add_range(c, 0, 150);
    for (size_t i = 0; i < 150; i += 7) {
        remove_one(c, i);
        state[i] = 0;
    }
    add_one(c, 3, 2);
    state[3] = 2;
    char copy[128], moved[128];
    snprintf(copy, sizeof(copy), "%s-copy", dir);
    snprintf(moved, sizeof(moved), "%s-moved", dir);
    tq_error err;
    cr_assert_eq(tq_collection_backup(c, copy, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_backup(c, copy, &err), TQ_EARG, "an existing destination was written over");
    /* The original moves on; the copy must not see it. */
    add_one(c, 200 % N, 3);
    tq_collection_close(c, NULL);
    tq_collection_options o = {.cfg = cfg, .fsync = TQ_FSYNC_NO, .segment_rows = 64, .log = capture};
    tq_collection *b;
    cr_assert_eq(tq_collection_open(copy, &o, &b, &err), TQ_OK, "%s", err.msg);
    check_against_reference(b, &cfg);
    /* Move it and keep writing: new files go to the new place. */
    cr_assert_eq(tq_collection_move(b, moved, &err), TQ_OK, "%s", err.msg);
    struct stat st;
    cr_assert(stat(copy, &st) != 0 && errno == ENOENT, "the old directory is still there");
    add_range(b, 150, 260);
    cr_assert_eq(tq_collection_compact(b, &err), TQ_OK, "%s", err.msg);
    check_against_reference(b, &cfg);
    cr_assert_eq(tq_collection_close(b, NULL), TQ_OK);
    cr_assert_eq(tq_collection_open(moved, &o, &b, &err), TQ_OK, "%s", err.msg);
    check_against_reference(b, &cfg);
    tq_collection_close(b, NULL);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", moved);
    cr_assert_eq(system(cmd), 0);
}

static double norm_of(const float *v)
{
    double n2 = 0;
    for (int j = 0; j < D; j++)
        n2 += (double)v[j] * v[j];
    return sqrt(n2);
}

/* Under cosine a get gives the vector back at its length, whether the row
 * is in the log, a sealed segment or a compacted one, after a reopen; rows
 * of a format-2 collection (tests/data/format2, from before lengths were
 * kept) come back as the unit vectors they were stored as, beside new rows
 * at their length, before and after compaction into the current format. */
Test(collection, cosine_gets_keep_the_length)
{
    const tq_refine refines[] = {TQ_REFINE_NONE, TQ_REFINE_CODE8, TQ_REFINE_FP16, TQ_REFINE_FP32};
    const double tolerance[] = {0.25, 0.02, 1e-3, 1e-6}; /* relative, by what is kept */
    for (size_t r = 0; r < 4; r++) {
        const tq_config cfg = config(TQ_METRIC_COSINE, refines[r]);
        remove_dir();
        make_dir();
        tq_collection *c = open_coll(&cfg, 64, TQ_FSYNC_NO);
        add_range(c, 0, 150); /* two sealed segments and the log */
        for (int pass = 0; pass < 3; pass++) {
            if (pass == 1)
                reopen_and_check(&c, &cfg, 64);
            if (pass == 2) {
                tq_error err;
                cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
            }
            for (size_t i = 0; i < 150; i += 13) {
                float v[D], want[D];
                char key[16];
                snprintf(key, sizeof(key), "doc-%zu", i);
                tq_error err;
                cr_assert_eq(tq_collection_get(c, key, (uint32_t)strlen(key), v, NULL, 0, NULL, &err), TQ_OK);
                vector_of(i, 1, want);
                double diff = 0;
                for (int j = 0; j < D; j++)
                    diff += ((double)v[j] - want[j]) * ((double)v[j] - want[j]);
                cr_assert(sqrt(diff) <= tolerance[r] * norm_of(want), "refine %d pass %d %s: off by %g of %g",
                          refines[r], pass, key, sqrt(diff), norm_of(want));
            }
        }
        tq_collection_close(c, NULL);
    }

    const char *data = getenv("TQVEC_TEST_DATA");
    cr_assert_not_null(data, "TQVEC_TEST_DATA names tests/data");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r '%s/format2/cos8' '%s'", dir, data, dir);
    cr_assert_eq(system(cmd), 0);
    tq_collection_options o = {.fsync = TQ_FSYNC_NO, .segment_rows = 64, .log = capture}; /* its own settings */
    tq_collection *c;
    tq_error err;
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "%s", err.msg);
    cr_assert(tq_collection_codec(c)->cfg.metric == TQ_METRIC_COSINE && tq_collection_codec(c)->cfg.d == D);
    float big[D];
    for (int j = 0; j < D; j++)
        big[j] = 10.0f + (float)j;
    tq_element e = {.key = "new", .key_len = 3, .vector = big};
    cr_assert_eq(tq_collection_add(c, &e, 1, NULL, &err), TQ_OK, "%s", err.msg);
    for (int pass = 0; pass < 2; pass++) {
        float v[D];
        const char *old[] = {"3", "80"}; /* one sealed row, one from the log */
        for (int k = 0; k < 2; k++) {
            cr_assert_eq(tq_collection_get(c, old[k], (uint32_t)strlen(old[k]), v, NULL, 0, NULL, &err), TQ_OK,
                         "%s", err.msg);
            cr_assert(fabs(norm_of(v) - 1.0) < 0.01, "pass %d: old row %s has length %g", pass, old[k], norm_of(v));
        }
        cr_assert_eq(tq_collection_get(c, "new", 3, v, NULL, 0, NULL, &err), TQ_OK, "%s", err.msg);
        cr_assert(fabs(norm_of(v) / norm_of(big) - 1.0) < 0.01, "pass %d: new row has length %g, not %g", pass,
                  norm_of(v), norm_of(big));
        if (pass == 0)
            cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
    }
    tq_collection_close(c, NULL);
}

/* Every element i < rows is there with version[i] (its vector and the
 * attribute {"v":version}), or absent where version[i] is 0, and nothing
 * else is live. */
static void check_versions(tq_collection *c, const unsigned *version, size_t rows, int pass)
{
    size_t live = 0;
    tq_error err;
    for (size_t i = 0; i < rows; i++) {
        char key[32], attr[48];
        size_t alen;
        float v[D], want[D];
        snprintf(key, sizeof(key), "doc-%zu", i);
        int rc = tq_collection_get(c, key, (uint32_t)strlen(key), v, attr, sizeof(attr), &alen, &err);
        if (!version[i]) {
            cr_assert_eq(rc, TQ_ENOTFOUND, "pass %d: removed %s is back", pass, key);
            continue;
        }
        live++;
        cr_assert_eq(rc, TQ_OK, "pass %d: %s: %s", pass, key, err.msg);
        vector_of(i, version[i], want);
        cr_assert(!memcmp(v, want, sizeof(v)), "pass %d: %s has another vector", pass, key);
        cr_assert(alen >= 7 && attr[5] == (char)('0' + version[i]), "pass %d: %s has version %.*s", pass, key,
                  (int)alen, attr);
    }
    tq_collection_stats st;
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.live, live, "pass %d: %llu live, %zu expected", pass, (unsigned long long)st.live, live);
}

/* Probing more partitions than any segment has answers exactly as the
 * flat scan: the same keys, bit-identical scores. */
static void check_probing_is_flat(tq_collection *c, const float *q, int pass)
{
    enum { K = 10 };
    tq_search_opts flat = {.k = K, .scorer = TQ_SCORER_LUT, .rerank = 2};
    tq_search_opts probe = flat;
    probe.nprobe = 100000;
    tq_match a[K], b[K];
    size_t na, nb;
    tq_snapshot *sa, *sb;
    tq_error err;
    cr_assert_eq(tq_collection_search(c, q, 1, &flat, NULL, a, &na, &sa, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_collection_search(c, q, 1, &probe, NULL, b, &nb, &sb, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(na, nb);
    for (size_t h = 0; h < na; h++)
        cr_assert(a[h].key_len == b[h].key_len && !memcmp(a[h].key, b[h].key, a[h].key_len) &&
                      !memcmp(&a[h].score, &b[h].score, sizeof(float)),
                  "pass %d, hit %zu: probing gives '%.*s' %g, flat '%.*s' %g", pass, h, (int)b[h].key_len, b[h].key,
                  (double)b[h].score, (int)a[h].key_len, a[h].key, (double)a[h].score);
    tq_snapshot_release(sa);
    tq_snapshot_release(sb);
}

/* Sealed segments partitioned in the background: searches probing every
 * partition answer exactly as the flat scan, before and after upserts,
 * removes and a reopen; writes made while a segment is being partitioned
 * are all there afterwards; a narrow filter probing one partition still
 * gets min(k, matching) rows; compaction partitions what it merges. */
Test(collection, partitioned_segments_answer_as_flat)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_FP32);
    enum { ROWS = 3000, K = 10 };
    tq_collection_options o = {.cfg = cfg, .create = true, .fsync = TQ_FSYNC_NO, .segment_rows = 500,
                               .partition_rows = 200, .merge_factor = SIZE_MAX /* several segments */,
                               .log = capture};
    tq_collection *c;
    tq_error err;
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "%s", err.msg);
    static unsigned version[ROWS];
    for (size_t i = 0; i < ROWS; i++) {
        char key[32], attr[48];
        float v[D];
        vector_of(i, 1, v);
        snprintf(key, sizeof(key), "doc-%zu", i);
        snprintf(attr, sizeof(attr), "{\"v\":1,\"n\":%zu}", i);
        tq_element e = {.key = key, .key_len = (uint32_t)strlen(key), .vector = v, .attr = attr,
                        .attr_len = (uint32_t)strlen(attr)};
        cr_assert_eq(tq_collection_add(c, &e, 1, NULL, &err), TQ_OK, "%s", err.msg);
        version[i] = 1;
        /* Upserts and removes while earlier segments are being partitioned. */
        if (i % 250 == 249) {
            const size_t old = i - 200;
            add_one(c, old, 2);
            version[old] = 2;
            remove_one(c, old - 7);
            version[old - 7] = 0;
        }
    }
    tq_collection_wait_partitioned(c);
    tq_collection_stats st;
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.partitioned, st.segments, "%u of %u sealed segments partitioned", st.partitioned, st.segments);
    cr_assert_geq(st.segments, 5);
    for (int pass = 0; pass < 3; pass++) {
        check_versions(c, version, ROWS, pass);
        for (size_t qi = 0; qi < 8; qi++) {
            float q[D];
            vector_of(qi * 131 + 5, 3, q);
            check_probing_is_flat(c, q, pass);
            tq_search_opts probe = {.k = K, .scorer = TQ_SCORER_LUT, .rerank = 2};
            size_t nb;
            tq_snapshot *sb;
            /* One partition probed, a filter passing 3 elements in 1000. */
            tq_filter *f;
            cr_assert_eq(tq_filter_compile(".v == 2", 7, &f, &err), TQ_OK, "%s", err.msg);
            probe.nprobe = 1;
            probe.k = 100;
            tq_match many[100];
            cr_assert_eq(tq_collection_search(c, q, 1, &probe, f, many, &nb, &sb, &err), TQ_OK, "%s", err.msg);
            size_t matching = 0;
            for (size_t i = 0; i < ROWS; i++)
                matching += version[i] == 2;
            cr_assert_eq(nb, matching < 100 ? matching : 100, "pass %d: %zu filtered hits of %zu matching", pass,
                         nb, matching);
            tq_snapshot_release(sb);
            tq_filter_free(f);
            /* Every selectivity from a half to a thousandth, one partition
             * probed: min(k, matching) elements, every one matching. */
            static const unsigned every[] = {2, 10, 100, 1000};
            for (int e = 0; e < 4; e++) {
                char expr[32];
                snprintf(expr, sizeof(expr), ".n %% %u == 0", every[e]);
                cr_assert_eq(tq_filter_compile(expr, strlen(expr), &f, &err), TQ_OK, "%s", err.msg);
                cr_assert_eq(tq_collection_search(c, q, 1, &probe, f, many, &nb, &sb, &err), TQ_OK, "%s", err.msg);
                matching = 0; /* elements still at version 1 keep their "n" */
                for (size_t i = 0; i < ROWS; i += every[e])
                    matching += version[i] == 1;
                cr_assert_eq(nb, matching < 100 ? matching : 100, "pass %d, %s: %zu hits of %zu matching", pass, expr,
                             nb, matching);
                for (size_t h = 0; h < nb; h++) {
                    char name[32];
                    snprintf(name, sizeof(name), "%.*s", (int)many[h].key_len, many[h].key);
                    const size_t i = (size_t)atol(name + 4);
                    cr_assert(i % every[e] == 0 && version[i] == 1, "pass %d, %s: %.*s does not match", pass, expr,
                              (int)many[h].key_len, many[h].key);
                }
                tq_snapshot_release(sb);
                tq_filter_free(f);
            }
        }
        if (pass == 0) {
            cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
            cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "%s", err.msg);
        } else if (pass == 1) {
            for (size_t i = 0; i < ROWS; i += 5) {
                remove_one(c, i);
                version[i] = 0;
            }
            cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
            tq_collection_wait_partitioned(c);
            tq_collection_stats_get(c, &st);
            cr_assert_eq(st.partitioned, st.segments, "after compaction %u of %u partitioned", st.partitioned,
                         st.segments);
        }
    }
    cr_assert_eq(warnings[0], 0, "warnings: %s", warnings);
    tq_collection_close(c, NULL);
}

/* Sealed segments are merged in the background once merge_factor of them
 * are of one size class: four sealed segments of 100 rows become one, of
 * 400 (partitioned, since partition_rows is 300); upserts and removes made
 * while merges run are all there afterwards, before and after a reopen,
 * and probing every partition still answers as the flat scan. */
Test(collection, sealed_segments_merge_in_the_background)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_FP32);
    enum { ROWS = 2000 };
    tq_collection_options o = {.cfg = cfg, .create = true, .fsync = TQ_FSYNC_NO, .segment_rows = 100,
                               .partition_rows = 300, .log = capture};
    tq_collection *c;
    tq_error err;
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "%s", err.msg);
    static unsigned version[ROWS];
    /* Rows 0..399 fill four segments (the fourth sealed by the compaction,
     * which merges nothing: no deletions, no small segment). */
    for (size_t i = 0; i < 400; i++) {
        add_one(c, i, 1);
        version[i] = 1;
    }
    cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
    tq_collection_wait_partitioned(c);
    tq_collection_stats st;
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.segments, 1, "four segments of 100 stay %u", st.segments);
    cr_assert_eq(st.partitioned, 1);
    cr_assert_eq(st.live, 400);
    check_versions(c, version, ROWS, 0);
    /* Sixteen more seals with writes to rows of earlier segments between
     * them, while those are being merged. */
    for (size_t i = 400; i < ROWS; i++) {
        add_one(c, i, 1);
        version[i] = 1;
        if (i % 37 == 0) {
            const size_t old = (i * 7919) % i;
            add_one(c, old, 2);
            version[old] = 2;
            const size_t gone = (old + 3) % i;
            if (version[gone]) {
                remove_one(c, gone);
                version[gone] = 0;
            }
        }
    }
    cr_assert_eq(tq_collection_compact(c, &err), TQ_OK, "%s", err.msg);
    tq_collection_wait_partitioned(c);
    tq_collection_stats_get(c, &st);
    /* 20 seals; classes below 400, 1,600 and 6,400 rows hold fewer than
     * four each. */
    cr_assert_leq(st.segments, 9, "%u segments after 20 seals", st.segments);
    cr_assert_geq(st.partitioned, 1);
    for (int pass = 1; pass < 3; pass++) {
        check_versions(c, version, ROWS, pass);
        for (size_t qi = 0; qi < 8; qi++) {
            float q[D];
            vector_of(qi * 211 + 3, 3, q);
            check_probing_is_flat(c, q, pass);
        }
        cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
        cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "%s", err.msg);
        tq_collection_wait_partitioned(c);
    }
    cr_assert_eq(warnings[0], 0, "warnings: %s", warnings);
    tq_collection_close(c, NULL);
}

/* Once writes pause (2 s), a log of at least partition_rows rows is sealed
 * in the background and partitioned like any other segment, instead of
 * being scanned flat until the segment fills; a smaller one stays. */
Test(collection, a_large_log_is_sealed_when_writes_pause, .timeout = 60)
{
    const tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_FP32);
    tq_collection_options o = {.cfg = cfg, .create = true, .fsync = TQ_FSYNC_NO, .segment_rows = 100000,
                               .partition_rows = 300, .log = capture};
    tq_collection *c;
    tq_error err;
    cr_assert_eq(tq_collection_open(dir, &o, &c, &err), TQ_OK, "%s", err.msg);
    static unsigned version[600];
    for (size_t i = 0; i < 500; i++) {
        add_one(c, i, 1);
        version[i] = 1;
    }
    tq_collection_stats st;
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.mutable_rows, 500, "sealed while the writes went on");
    for (int waited = 0; waited < 100; waited++) { /* 10 s at most */
        tq_collection_stats_get(c, &st);
        if (st.mutable_rows == 0)
            break;
        usleep(100 * 1000);
    }
    tq_collection_wait_partitioned(c);
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.mutable_rows, 0, "a 500-row log is still unsealed after the writes paused");
    cr_assert_eq(st.segments, 1);
    cr_assert_eq(st.partitioned, 1);
    check_versions(c, version, 600, 0);
    float q[D];
    vector_of(77, 3, q);
    check_probing_is_flat(c, q, 0);
    /* Below partition_rows the log stays a log. */
    for (size_t i = 500; i < 600; i++) {
        add_one(c, i, 1);
        version[i] = 1;
    }
    usleep(3000 * 1000);
    tq_collection_stats_get(c, &st);
    cr_assert_eq(st.mutable_rows, 100);
    cr_assert_eq(st.segments, 1);
    check_versions(c, version, 600, 1);
    cr_assert_eq(warnings[0], 0, "warnings: %s", warnings);
    tq_collection_close(c, NULL);
}

/* Adds rows [from, to) as keys "auto-i" in one call. */
static void add_batch(tq_collection *c, size_t from, size_t to)
{
    static float v[400 * D];
    static char keys[400][16];
    tq_element e[400];
    cr_assert(to - from <= 400);
    for (size_t i = from; i < to; i++) {
        vector_of(i, 1, v + (i - from) * D);
        snprintf(keys[i - from], sizeof(keys[0]), "auto-%zu", i);
        e[i - from] = (tq_element){.key = keys[i - from], .key_len = (uint32_t)strlen(keys[i - from]),
                                   .vector = v + (i - from) * D};
    }
    tq_error err;
    cr_assert_eq(tq_collection_add(c, e, to - from, NULL, &err), TQ_OK, "%s", err.msg);
}

/* The default centering: a collection takes its mean from a first add of
 * at least TQ_CENTER_AUTO_MIN_ROWS vectors and keeps it through reopens;
 * one whose first add was smaller stays uncentered for good; and one made
 * before auto existed (none) opens with the centering left unasked. */
Test(collection, auto_centering_is_decided_by_the_first_add)
{
    for (int big = 0; big < 2; big++) {
        remove_dir();
        make_dir();
        tq_config cfg = config(TQ_METRIC_L2, TQ_REFINE_FP32);
        cfg.center = 0; /* not asked: auto */
        tq_collection *c = open_coll(&cfg, 1024, TQ_FSYNC_NO);
        cr_assert_eq(tq_collection_codec(c)->cfg.center, TQ_CENTER_AUTO);
        add_batch(c, 0, big ? TQ_CENTER_AUTO_MIN_ROWS : 10);
        cr_assert_eq(tq_collection_codec(c)->mean != NULL, big, "first add of %u rows", big ? TQ_CENTER_AUTO_MIN_ROWS : 10);
        add_batch(c, 300, 700); /* a later large add changes nothing */
        cr_assert_eq(tq_collection_codec(c)->mean != NULL, big);
        cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
        c = open_coll(&cfg, 1024, TQ_FSYNC_NO);
        cr_assert_eq(tq_collection_codec(c)->mean != NULL, big, "after reopen");
        /* The rows are found under the codec they were encoded with (re-
         * ranked: some rows of vector_of are near duplicates). */
        float q[D];
        vector_of(5, 1, q);
        tq_search_opts so = {.k = 1, .rerank = 8, .scorer = TQ_SCORER_LUT};
        tq_match m;
        size_t count;
        tq_error err;
        tq_snapshot *snap;
        cr_assert_eq(tq_collection_search(c, q, 1, &so, NULL, &m, &count, &snap, &err), TQ_OK, "%s", err.msg);
        cr_assert_eq(count, 1);
        cr_assert(m.key_len == 6 && !memcmp(m.key, "auto-5", 6) && m.score == 0.0f, "nearest of row 5 is %.*s at %g",
                  (int)m.key_len, m.key, (double)m.score);
        tq_snapshot_release(snap);
        cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
    }
    /* Made with none, opened without asking: fine, and still none. */
    remove_dir();
    make_dir();
    tq_config none = config(TQ_METRIC_L2, TQ_REFINE_NONE);
    tq_collection *c = open_coll(&none, 1024, TQ_FSYNC_NO);
    add_batch(c, 0, 300);
    cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
    tq_config unasked = none;
    unasked.center = 0;
    c = open_coll(&unasked, 1024, TQ_FSYNC_NO);
    cr_assert_eq(tq_collection_codec(c)->cfg.center, TQ_CENTER_NONE);
    cr_assert_null(tq_collection_codec(c)->mean);
    cr_assert_eq(tq_collection_close(c, NULL), TQ_OK);
}
