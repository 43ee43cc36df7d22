/*
 * Fault injection: a workload of adds, removes and a compaction runs on a
 * collection (its sealed segments partitioned in the background) with one
 * system or allocator call made to fail (the
 * LD_PRELOAD shim beside this file), once for every call of each kind the
 * workload makes (sampled evenly when there are many). For every fault:
 *   - the child does not crash, and a failed call returned a nonzero code
 *     with a message;
 *   - the collection opens again (without the shim);
 *   - every add and remove acknowledged before the failure is there (the
 *     one that failed may have happened or not, as after a crash).
 * Acknowledgements travel over a pipe written with the raw system call, so
 * the shim never sees (or fails) them.
 *
 * usage: fault_injection SHIM.so [MAX_PER_KIND]     (fault_injection child DIR FD: the workload)
 */
#include "tqvec.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/tqvec-fault-XXXXXX");
    if (!mkdtemp(dir))
        abort();
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd))
        abort();
}

#define DIM 16
#define OPS 120

static void vec_of(int i, float *v)
{
    for (int j = 0; j < DIM; j++)
        v[j] = (float)((i * 7 + j * 13) % 17) - 8.0f + (j == 0 ? 20.0f : 0.0f);
}

static void ack(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ack(int fd, const char *fmt, ...)
{
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    syscall(SYS_write, fd, line, (size_t)n);
}

/* The workload, in the child. Exits 0 whatever the collection says; the
 * parent judges. */
static int child(const char *path, int fd)
{
    void (*arm)(void) = (void (*)(void))(uintptr_t)dlsym(RTLD_DEFAULT, "tq_fault_arm");
    void (*disarm)(void) = (void (*)(void))(uintptr_t)dlsym(RTLD_DEFAULT, "tq_fault_disarm");
    void (*report)(int) = (void (*)(int))(uintptr_t)dlsym(RTLD_DEFAULT, "tq_fault_report");
    /* Every sealed segment is partitioned in the background too, so faults
     * land in the partitioner's rewrite and switch as well. */
    tqvec_collection_options o = {.dim = DIM, .metric = TQVEC_METRIC_L2, .refine = TQVEC_REFINE_FP32,
                                  .create = 1, .fsync = TQVEC_FSYNC_ALWAYS, .segment_rows = 24,
                                  .partition_rows = 24};
    tqvec_collection *c;
    tqvec_error err;
    if (tqvec_collection_open(path, &o, &c, &err)) {
        ack(fd, "F open %s\n", err.message);
        return 0;
    }
    if (arm)
        arm();
    int rc = 0;
    for (int i = 0; i < OPS && !rc; i++) {
        char key[32], attrs[32];
        float v[DIM];
        vec_of(i, v);
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(attrs, sizeof(attrs), "{\"i\":%d}", i);
        tqvec_element e = {.key = key, .key_len = strlen(key), .vector = v, .attrs = attrs, .attrs_len = strlen(attrs)};
        ack(fd, "T %d\n", i);
        if ((rc = tqvec_collection_add(c, &e, 1, NULL, &err)))
            break;
        ack(fd, "A %d\n", i);
        if (i % 10 == 9) {
            snprintf(key, sizeof(key), "k%d", i - 5);
            ack(fd, "T %d\n", i - 5);
            if ((rc = tqvec_collection_remove(c, key, strlen(key), &err)))
                break;
            ack(fd, "R %d\n", i - 5);
        }
        if (i == OPS / 2 && (rc = tqvec_collection_compact(c, &err)))
            break;
    }
    if (rc)
        ack(fd, "E %d %s\n", rc, err.message);
    rc = tqvec_collection_close(c, &err);
    if (rc)
        ack(fd, "E %d %s\n", rc, err.message);
    if (disarm)
        disarm();
    if (report)
        report(fd);
    return 0;
}

typedef struct outcome {
    int added[OPS], removed[OPS];
    int tried;            /* the key of the last operation started */
    long counts[6];
    char error[400];
    int error_code;
    int status;
} outcome;

static const char *const kinds[] = {"write", "fsync", "rename", "mmap", "truncate", "alloc"};
static const int kind_errno[] = {ENOSPC, EIO, EIO, ENOMEM, EIO, ENOMEM};

static void run_child(const char *self, const char *shim, const char *fault, const char *path, outcome *out)
{
    memset(out, 0, sizeof(*out));
    out->tried = -1;
    int p[2];
    if (pipe(p))
        abort();
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        char fd[16];
        snprintf(fd, sizeof(fd), "%d", p[1]);
        setenv("LD_PRELOAD", shim, 1);
        setenv("TQ_FAULT", fault, 1);
        execl(self, self, "child", path, fd, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        int i;
        long n;
        char name[32];
        if (line[0] == 'F') {
            snprintf(out->error, sizeof(out->error), "%.390s", line);
            out->error_code = -1;
        } else if (sscanf(line, "T %d", &i) == 1) {
            out->tried = i;
        } else if (sscanf(line, "A %d", &i) == 1 && i >= 0 && i < OPS)
            out->added[i] = 1;
        else if (sscanf(line, "R %d", &i) == 1 && i >= 0 && i < OPS)
            out->removed[i] = 1;
        else if (line[0] == 'E' && !out->error_code) {
            sscanf(line, "E %d", &out->error_code);
            const char *msg = strchr(line + 2, ' ');
            snprintf(out->error, sizeof(out->error), "%s", msg ? msg + 1 : "");
            out->error[strcspn(out->error, "\n")] = 0;
        } else if (sscanf(line, "%31s %ld", name, &n) == 2) {
            for (int k = 0; k < 6; k++)
                if (!strcmp(name, kinds[k]))
                    out->counts[k] = n;
        }
    }
    fclose(f);
    waitpid(pid, &out->status, 0);
}

/* 0 if the collection at path opens and holds what was acknowledged. */
static int verify(const char *path, const outcome *o, const char *fault, int *checked)
{
    tqvec_collection_options opts = {0};
    tqvec_collection *c;
    tqvec_error err;
    if (tqvec_collection_open(path, &opts, &c, &err)) {
        fprintf(stderr, "%s: the collection does not open again: %s\n", fault, err.message);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < OPS && !bad; i++) {
        /* The operation that failed may or may not have happened (as after
         * a crash in the middle of it); everything acknowledged must have. */
        if (!o->added[i] || (o->error_code && i == o->tried))
            continue;
        char key[32], attrs[64];
        float v[DIM], want[DIM];
        size_t alen;
        snprintf(key, sizeof(key), "k%d", i);
        int rc = tqvec_collection_get(c, key, strlen(key), v, attrs, sizeof(attrs), &alen, &err);
        if (o->removed[i]) {
            if (rc != TQVEC_ENOTFOUND) {
                fprintf(stderr, "%s: k%d was removed (acknowledged) but is there\n", fault, i);
                bad = 1;
            }
        } else if (rc) {
            fprintf(stderr, "%s: acknowledged k%d is lost: %s\n", fault, i, err.message);
            bad = 1;
        } else {
            vec_of(i, want);
            char wa[32];
            snprintf(wa, sizeof(wa), "{\"i\":%d}", i);
            if (memcmp(v, want, sizeof(v)) || alen != strlen(wa) || memcmp(attrs, wa, alen)) {
                fprintf(stderr, "%s: k%d came back different\n", fault, i);
                bad = 1;
            }
        }
        ++*checked;
    }
    tqvec_collection_close(c, NULL);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "child"))
        return child(argv[2], atoi(argv[3]));
    if (argc < 2) {
        fprintf(stderr, "usage: fault_injection SHIM.so [MAX_PER_KIND]\n");
        return 2;
    }
    const char *shim = argv[1];
    long max_per_kind = argc > 2 ? atol(argv[2]) : 40;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return 2;
    self[n] = 0;
    make_dir();
    char path[4200];
    snprintf(path, sizeof(path), "%s/c", dir);
    outcome base;
    run_child(self, shim, "count", path, &base);
    if (!WIFEXITED(base.status) || WEXITSTATUS(base.status) || base.error_code) {
        fprintf(stderr, "the workload fails without faults: %s\n", base.error);
        return 1;
    }
    int failures = 0, points = 0, errors_seen = 0, checked = 0;
    /* Six kinds alone, then a failed write whose cut-back truncate fails
     * too (the workload makes no truncate until a write has failed). */
    for (int k = 0; k < 7; k++) {
        long total = base.counts[k < 6 ? k : 0];
        long step = total > max_per_kind ? total / max_per_kind : 1;
        int tried = 0;
        for (long i = 1; i <= total; i += step) {
            char fault[64];
            if (k < 6)
                snprintf(fault, sizeof(fault), "%s:%ld:%d", kinds[k], i, kind_errno[k]);
            else
                snprintf(fault, sizeof(fault), "write:%ld:%d,truncate:1:%d", i, ENOSPC, EIO);
            remove_dir();
            make_dir();
            snprintf(path, sizeof(path), "%s/c", dir);
            outcome o;
            run_child(self, shim, fault, path, &o);
            points++;
            tried++;
            if (!WIFEXITED(o.status) || WEXITSTATUS(o.status)) {
                fprintf(stderr, "%s: the workload crashed (status 0x%x)\n", fault, o.status);
                failures++;
                continue;
            }
            if (o.error_code) {
                errors_seen++;
                if (!o.error[0]) {
                    fprintf(stderr, "%s: error %d without a message\n", fault, o.error_code);
                    failures++;
                }
            }
            failures += verify(path, &o, fault, &checked);
        }
        printf("fault %-16s %4ld calls in the workload, %3d injected\n", k < 6 ? kinds[k] : "write+truncate",
               total, tried);
    }
    remove_dir();
    printf("fault injection: %d fault points, %d reported as errors, %d acknowledged writes checked, %d failures\n",
           points, errors_seen, checked, failures);
    return failures ? 1 : 0;
}
