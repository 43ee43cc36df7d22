/*
 * The write-ahead log: round trips, sequence numbers across reopen, torn
 * tails cut at every byte, damage inside the log refused, framing limits,
 * and a write that fails half way (RLIMIT_FSIZE) cut back cleanly.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

#include <xxhash.h>

typedef struct seen {
    size_t n;
    uint16_t type[256];
    uint64_t lsn[256];
    uint32_t len[256];
    uint8_t first[256]; /* first payload byte, or 0 */
    size_t stop_after;  /* fail the visit after this many records; 0 = never */
} seen;

static int record(void *ctx, uint16_t type, uint64_t lsn, const uint8_t *payload, uint32_t len, tq_error *err)
{
    seen *s = ctx;
    if (s->stop_after && s->n == s->stop_after)
        return tq_err(err, TQ_EVALUE, "visit refused record %llu", (unsigned long long)lsn);
    cr_assert_lt(s->n, 256);
    s->type[s->n] = type;
    s->lsn[s->n] = lsn;
    s->len[s->n] = len;
    s->first[s->n] = len ? payload[0] : 0;
    /* Every payload byte written by write_log() is its own index mod 251. */
    for (uint32_t i = 0; i < len; i++)
        cr_assert_eq(payload[i], (uint8_t)((payload[0] + i) % 251), "payload byte %u of lsn %llu", i,
                     (unsigned long long)lsn);
    s->n++;
    return TQ_OK;
}

#include "temp_dir.h"

TestSuite(wal, .init = make_dir, .fini = remove_dir);

static void path_of(char *out, const char *name)
{
    snprintf(out, 128, "%s/%s", dir, name);
}

/* Payload i has length lens[i] and bytes (i*7 + j) mod 251. */
static uint8_t payload_buf[8][4096];

static void fill_entries(tq_wal_entry *e, const uint32_t *lens, size_t n, size_t base)
{
    for (size_t i = 0; i < n; i++) {
        for (uint32_t j = 0; j < lens[i]; j++)
            payload_buf[i][j] = (uint8_t)(((base + i) * 7 + j) % 251);
        e[i] = (tq_wal_entry){.type = (uint16_t)(1 + (base + i) % 3), .payload = payload_buf[i], .len = lens[i]};
    }
}

/* Five records (lsn 100..104) in two appends; returns the file size. */
static uint64_t write_log(const char *path, tq_fsync_policy policy)
{
    tq_wal *w;
    tq_error err;
    cr_assert_eq(tq_wal_create(path, 100, policy, &w, &err), TQ_OK, "%s", err.msg);
    tq_wal_entry e[3];
    uint32_t lens1[2] = {13, 0}, lens2[3] = {200, 8, 3001};
    fill_entries(e, lens1, 2, 0);
    uint64_t first;
    cr_assert_eq(tq_wal_append(w, e, 2, &first, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(first, 100);
    fill_entries(e, lens2, 3, 2);
    cr_assert_eq(tq_wal_append(w, e, 3, &first, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(first, 102);
    cr_assert_eq(tq_wal_next_lsn(w), 105);
    uint64_t bytes = tq_wal_bytes(w);
    cr_assert_eq(tq_wal_close(w, &err), TQ_OK, "%s", err.msg);
    return bytes;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

Test(wal, round_trip_under_every_policy)
{
    const tq_fsync_policy policies[] = {TQ_FSYNC_ALWAYS, TQ_FSYNC_EVERYSEC, TQ_FSYNC_NO};
    const uint32_t lens[5] = {13, 0, 200, 8, 3001};
    for (int p = 0; p < 3; p++) {
        char path[128];
        snprintf(path, sizeof(path), "%s/log%d", dir, p);
        uint64_t bytes = write_log(path, policies[p]);
        uint64_t expect = TQ_WAL_HEADER_BYTES;
        for (int i = 0; i < 5; i++)
            expect += TQ_WAL_RECORD_OVERHEAD + ((lens[i] + 7) & ~7u);
        cr_assert_eq(bytes, expect);
        cr_assert_eq(file_size(path), expect);
        seen s = {0};
        tq_wal_replay_info info;
        tq_error err;
        cr_assert_eq(tq_wal_replay(path, record, &s, true, &info, &err), TQ_OK, "%s", err.msg);
        cr_assert_eq(s.n, 5);
        cr_assert_eq(info.records, 5);
        cr_assert_eq(info.first_lsn, 100);
        cr_assert_eq(info.next_lsn, 105);
        cr_assert_eq(info.valid_bytes, expect);
        cr_assert_eq(info.torn_bytes, 0);
        for (size_t i = 0; i < 5; i++) {
            cr_assert_eq(s.lsn[i], 100 + i);
            cr_assert_eq(s.len[i], lens[i]);
            cr_assert_eq(s.type[i], 1 + i % 3);
            if (lens[i])
                cr_assert_eq(s.first[i], (uint8_t)(i * 7 % 251));
        }
    }
}

Test(wal, reopen_continues_the_sequence)
{
    char path[128];
    path_of(path, "log");
    write_log(path, TQ_FSYNC_ALWAYS);
    seen s = {0};
    tq_wal_replay_info info;
    tq_error err;
    cr_assert_eq(tq_wal_replay(path, record, &s, true, &info, &err), TQ_OK, "%s", err.msg);
    tq_wal *w;
    cr_assert_eq(tq_wal_open(path, info.valid_bytes - 8, info.next_lsn, TQ_FSYNC_ALWAYS, &w, &err),
                 TQ_ECORRUPT, "a length other than the replayed one is refused");
    cr_assert_eq(tq_wal_open(path, info.valid_bytes, info.next_lsn, TQ_FSYNC_ALWAYS, &w, &err), TQ_OK, "%s",
                 err.msg);
    tq_wal_entry e;
    uint32_t len = 77;
    fill_entries(&e, &len, 1, 5);
    uint64_t first;
    cr_assert_eq(tq_wal_append(w, &e, 1, &first, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(first, 105);
    cr_assert_eq(tq_wal_close(w, &err), TQ_OK);
    seen again = {0};
    cr_assert_eq(tq_wal_replay(path, record, &again, false, &info, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(again.n, 6);
    cr_assert_eq(again.lsn[5], 105);
    cr_assert_eq(again.len[5], 77);
}

/* Cut the log at every byte inside its last append (records 102..104): the
 * whole records before the cut survive, the rest is trimmed, and the log
 * takes appends again. */
/* The second append (three records) cut at every length, inside any of
 * its records or between them: it is cut back whole, never replayed in
 * part, and the log takes appends again from there. */
Test(wal, torn_tail_is_cut_at_every_length)
{
    char path[128], orig[128];
    path_of(path, "log");
    path_of(orig, "orig");
    uint64_t full = write_log(orig, TQ_FSYNC_NO);
    const uint64_t second_append = TQ_WAL_HEADER_BYTES + (24 + 16) + (24 + 0);
    char cmd[512];
    for (uint64_t cut = second_append; cut < full; cut += (cut < second_append + 300 ? 1 : 97)) {
        snprintf(cmd, sizeof(cmd), "head -c %llu %s > %s", (unsigned long long)cut, orig, path);
        cr_assert_eq(system(cmd), 0);
        const size_t whole = 2;
        const uint64_t valid = second_append;
        seen s = {0};
        tq_wal_replay_info info;
        tq_error err;
        cr_assert_eq(tq_wal_replay(path, record, &s, true, &info, &err), TQ_OK, "cut %llu: %s",
                     (unsigned long long)cut, err.msg);
        cr_assert_eq(s.n, whole, "cut at %llu", (unsigned long long)cut);
        cr_assert_eq(info.valid_bytes, valid);
        cr_assert_eq(info.torn_bytes, cut - valid);
        cr_assert_eq(file_size(path), valid, "repair truncated the tail");
        tq_wal *w;
        cr_assert_eq(tq_wal_open(path, info.valid_bytes, info.next_lsn, TQ_FSYNC_NO, &w, &err), TQ_OK);
        tq_wal_entry e;
        uint32_t len = 5;
        fill_entries(&e, &len, 1, 9);
        cr_assert_eq(tq_wal_append(w, &e, 1, NULL, &err), TQ_OK);
        cr_assert_eq(tq_wal_close(w, &err), TQ_OK);
        seen after = {0};
        cr_assert_eq(tq_wal_replay(path, record, &after, false, &info, &err), TQ_OK, "%s", err.msg);
        cr_assert_eq(after.n, whole + 1);
        cr_assert_eq(after.lsn[whole], 100 + whole);
    }
}

Test(wal, garbage_after_the_last_record_is_a_torn_tail)
{
    char path[128];
    path_of(path, "log");
    uint64_t full = write_log(path, TQ_FSYNC_NO);
    int fd = open(path, O_WRONLY | O_APPEND);
    uint8_t junk[100];
    for (int i = 0; i < 100; i++)
        junk[i] = (uint8_t)(i * 37 + 11);
    cr_assert_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    seen s = {0};
    tq_wal_replay_info info;
    tq_error err;
    cr_assert_eq(tq_wal_replay(path, record, &s, false, &info, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(s.n, 5);
    cr_assert_eq(info.torn_bytes, 100);
    cr_assert_eq(file_size(path), full + 100, "without repair nothing is cut");
}

/* Flip each byte of record 102 (header, payload, padding, checksum): valid
 * records follow it, so this is damage, never a tail to cut. */
Test(wal, damage_inside_the_log_is_refused)
{
    char path[128];
    path_of(path, "log");
    uint64_t full = write_log(path, TQ_FSYNC_NO);
    const uint64_t start = TQ_WAL_HEADER_BYTES + (24 + 16) + 24, end = start + 24 + 200;
    for (uint64_t at = start; at < end; at += 3) {
        int fd = open(path, O_RDWR);
        uint8_t b;
        cr_assert_eq(pread(fd, &b, 1, (off_t)at), 1);
        uint8_t flipped = b ^ 0x20;
        cr_assert_eq(pwrite(fd, &flipped, 1, (off_t)at), 1);
        seen s = {0};
        tq_wal_replay_info info;
        tq_error err;
        cr_assert_eq(tq_wal_replay(path, record, &s, true, &info, &err), TQ_ECORRUPT, "flip at %llu",
                     (unsigned long long)at);
        cr_assert(strstr(err.msg, "offset") && strstr(err.msg, path), "%s", err.msg);
        cr_assert_eq(file_size(path), full, "a damaged log is never truncated");
        cr_assert_eq(pwrite(fd, &b, 1, (off_t)at), 1);
        close(fd);
    }
}

/* A correct record in the wrong place (a stale copy of record 100 where 102
 * belongs) hashes fine but breaks the sequence. */
Test(wal, a_record_out_of_sequence_is_damage)
{
    char path[128];
    path_of(path, "log");
    write_log(path, TQ_FSYNC_NO);
    /* Record 101 (empty payload, 24 bytes at offset 72) re-numbered 100 and
     * re-hashed: a valid record with the wrong number. */
    int fd = open(path, O_RDWR);
    uint8_t stale[24];
    cr_assert_eq(pread(fd, stale, 24, TQ_WAL_HEADER_BYTES + 40), 24);
    uint64_t lsn = 100;
    memcpy(stale + 8, &lsn, 8);
    uint64_t h = XXH3_64bits(stale, 16);
    memcpy(stale + 16, &h, 8);
    cr_assert_eq(pwrite(fd, stale, 24, TQ_WAL_HEADER_BYTES + 40), 24);
    close(fd);
    seen s = {0};
    tq_wal_replay_info info;
    tq_error err;
    cr_assert_eq(tq_wal_replay(path, record, &s, true, &info, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "record 101"), "%s", err.msg);
}

Test(wal, bad_headers)
{
    char path[128];
    path_of(path, "log");
    write_log(path, TQ_FSYNC_NO);
    seen s = {0};
    tq_wal_replay_info info;
    tq_error err;
    int fd = open(path, O_RDWR);
    uint8_t h[32];
    cr_assert_eq(pread(fd, h, 32, 0), 32);

    uint8_t bad[32];
    memcpy(bad, h, 32);
    bad[18] ^= 1; /* first lsn without a new checksum */
    cr_assert_eq(pwrite(fd, bad, 32, 0), 32);
    cr_assert_eq(tq_wal_replay(path, record, &s, false, &info, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "header"), "%s", err.msg);

    memcpy(bad, h, 32);
    bad[8] = 9; /* a future version, correctly hashed */
    uint64_t sum = XXH3_64bits(bad, 24);
    memcpy(bad + 24, &sum, 8);
    cr_assert_eq(pwrite(fd, bad, 32, 0), 32);
    cr_assert_eq(tq_wal_replay(path, record, &s, false, &info, &err), TQ_EUNSUPPORTED);
    cr_assert(strstr(err.msg, "version 9"), "%s", err.msg);

    memcpy(bad, h, 32);
    bad[0] = 'X';
    cr_assert_eq(pwrite(fd, bad, 32, 0), 32);
    cr_assert_eq(tq_wal_replay(path, record, &s, false, &info, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "magic"), "%s", err.msg);

    cr_assert_eq(ftruncate(fd, 20), 0);
    cr_assert_eq(tq_wal_replay(path, record, &s, false, &info, &err), TQ_ECORRUPT);
    close(fd);
    char missing[128];
    path_of(missing, "none");
    cr_assert_eq(tq_wal_replay(missing, record, &s, false, &info, &err), TQ_ENOTFOUND);
    cr_assert_eq(s.n, 0, "no record of a bad log is visited");
}

Test(wal, a_failing_visit_stops_the_replay)
{
    char path[128];
    path_of(path, "log");
    write_log(path, TQ_FSYNC_NO);
    seen s = {.stop_after = 3};
    tq_wal_replay_info info;
    tq_error err;
    cr_assert_eq(tq_wal_replay(path, record, &s, true, &info, &err), TQ_EVALUE);
    cr_assert(strstr(err.msg, "103"), "%s", err.msg);
    cr_assert_eq(s.n, 3);
}

Test(wal, bad_appends_write_nothing)
{
    char path[128];
    path_of(path, "log");
    tq_wal *w;
    tq_error err;
    cr_assert_eq(tq_wal_create(path, 1, 7, &w, &err), TQ_EARG, "unknown policy");
    cr_assert_eq(tq_wal_create(path, 1, TQ_FSYNC_NO, &w, &err), TQ_OK);
    tq_wal *second;
    cr_assert_eq(tq_wal_create(path, 1, TQ_FSYNC_NO, &second, &err), TQ_EIO, "never over an existing log");
    cr_assert_null(second);
    tq_wal_entry e[2] = {{.type = 1, .payload = "ab", .len = 2}, {.type = 0, .payload = "c", .len = 1}};
    cr_assert_eq(tq_wal_append(w, e, 2, NULL, &err), TQ_EARG);
    e[1] = (tq_wal_entry){.type = 2, .payload = "c", .len = TQ_WAL_MAX_PAYLOAD + 1};
    cr_assert_eq(tq_wal_append(w, e, 2, NULL, &err), TQ_EARG);
    cr_assert(strstr(err.msg, "limit"), "%s", err.msg);
    cr_assert_eq(tq_wal_next_lsn(w), 1);
    cr_assert_eq(tq_wal_close(w, &err), TQ_OK);
    cr_assert_eq(file_size(path), TQ_WAL_HEADER_BYTES);
}

/* A write that fails part way (the file-size limit stands in for a full
 * disk) is cut back, so the log stays valid and later appends land right
 * after the last good record. */
Test(wal, a_failed_write_is_cut_back)
{
    signal(SIGXFSZ, SIG_IGN);
    char path[128];
    path_of(path, "log");
    tq_wal *w;
    tq_error err;
    cr_assert_eq(tq_wal_create(path, 1, TQ_FSYNC_ALWAYS, &w, &err), TQ_OK);
    tq_wal_entry e[2];
    uint32_t small[2] = {100, 100};
    fill_entries(e, small, 2, 0);
    cr_assert_eq(tq_wal_append(w, e, 2, NULL, &err), TQ_OK);
    uint64_t good = tq_wal_bytes(w);

    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = good + 4000;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    uint32_t big[2] = {3000, 3000};
    fill_entries(e, big, 2, 2);
    cr_assert_eq(tq_wal_append(w, e, 2, NULL, &err), TQ_EIO);
    cr_assert_eq(err.sys_errno, EFBIG, "%s", err.msg);
    cr_assert_eq(file_size(path), good, "the partial batch was cut back");
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);

    cr_assert_eq(tq_wal_append(w, e, 2, NULL, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_wal_close(w, &err), TQ_OK);
    seen s = {0};
    tq_wal_replay_info info;
    cr_assert_eq(tq_wal_replay(path, record, &s, false, &info, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(s.n, 4);
    cr_assert_eq(s.lsn[3], 4);
    cr_assert_eq(s.len[2], 3000);
}
