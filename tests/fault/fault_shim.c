/*
 * A test-only LD_PRELOAD shim that makes chosen system or allocator calls
 * fail: TQ_FAULT="<kind>:<n>:<errno>[,...]" fails the n-th call of that kind
 * made after the program calls tq_fault_arm() (found with dlsym, so the
 * program runs unchanged without the shim). TQ_FAULT="count" only counts;
 * tq_fault_report() writes "kind count" lines to a file descriptor.
 *
 * Kinds: write (write, pwrite), fsync (fsync, fdatasync), rename, mmap,
 * truncate (ftruncate), alloc (jemalloc's mallocx and rallocx, which is all
 * tqvec allocates through). The real calls come from dlsym(RTLD_NEXT).
 * Reports use the raw system call, so they are never counted or failed.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

enum { K_WRITE, K_FSYNC, K_RENAME, K_MMAP, K_TRUNCATE, K_ALLOC, K_COUNT };
static const char *const kind_names[K_COUNT] = {"write", "fsync", "rename", "mmap", "truncate", "alloc"};

static atomic_long counts[K_COUNT];
static atomic_int armed;
/* Per kind: which call fails (0: none) and with what errno. Several kinds
 * may be given, comma-separated, e.g. a failed write and then a failed
 * truncate cutting it back. */
static long target_n[K_COUNT];
static int target_errno[K_COUNT];
static int parsed;

static void parse(void)
{
    if (parsed)
        return;
    parsed = 1;
    const char *spec = getenv("TQ_FAULT");
    while (spec && *spec) {
        char name[32];
        long n;
        int e;
        if (sscanf(spec, "%31[a-z]:%ld:%d", name, &n, &e) == 3)
            for (int k = 0; k < K_COUNT; k++)
                if (!strcmp(name, kind_names[k])) {
                    target_n[k] = n;
                    target_errno[k] = e;
                }
        spec = strchr(spec, ',');
        spec = spec ? spec + 1 : NULL;
    }
}

void tq_fault_arm(void);
void tq_fault_disarm(void);
void tq_fault_report(int fd);

void tq_fault_arm(void)
{
    parse();
    atomic_store(&armed, 1);
}

void tq_fault_disarm(void)
{
    atomic_store(&armed, 0);
}

void tq_fault_report(int fd)
{
    char line[64];
    for (int k = 0; k < K_COUNT; k++) {
        int len = snprintf(line, sizeof(line), "%s %ld\n", kind_names[k], atomic_load(&counts[k]));
        syscall(SYS_write, fd, line, (size_t)len);
    }
}

/* Whether this call of kind k is the one to fail (errno set if so). */
static int fail_now(int k)
{
    if (!atomic_load(&armed))
        return 0;
    long n = atomic_fetch_add(&counts[k], 1) + 1;
    if (n == target_n[k]) {
        errno = target_errno[k];
        return 1;
    }
    return 0;
}

/* The next definition of name (libc's, jemalloc's), looked up once. */
#define REAL(ret, name, ...)                                      \
    static ret (*real_##name)(__VA_ARGS__);                      \
    if (!real_##name)                                             \
        *(void **)&real_##name = dlsym(RTLD_NEXT, #name)

void *mallocx(size_t size, int flags);
void *rallocx(void *p, size_t size, int flags);

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(ssize_t, write, int, const void *, size_t);
    return fail_now(K_WRITE) ? -1 : real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
    return fail_now(K_WRITE) ? -1 : real_pwrite(fd, buf, n, off);
}

int fsync(int fd)
{
    REAL(int, fsync, int);
    return fail_now(K_FSYNC) ? -1 : real_fsync(fd);
}

int fdatasync(int fd)
{
    REAL(int, fdatasync, int);
    return fail_now(K_FSYNC) ? -1 : real_fdatasync(fd);
}

int rename(const char *from, const char *to)
{
    REAL(int, rename, const char *, const char *);
    return fail_now(K_RENAME) ? -1 : real_rename(from, to);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    REAL(void *, mmap, void *, size_t, int, int, int, off_t);
    return fail_now(K_MMAP) ? MAP_FAILED : real_mmap(addr, len, prot, flags, fd, off);
}

int ftruncate(int fd, off_t len)
{
    REAL(int, ftruncate, int, off_t);
    return fail_now(K_TRUNCATE) ? -1 : real_ftruncate(fd, len);
}

void *mallocx(size_t size, int flags)
{
    REAL(void *, mallocx, size_t, int);
    return fail_now(K_ALLOC) ? NULL : real_mallocx(size, flags);
}

void *rallocx(void *p, size_t size, int flags)
{
    REAL(void *, rallocx, void *, size_t, int);
    return fail_now(K_ALLOC) ? NULL : real_rallocx(p, size, flags);
}
