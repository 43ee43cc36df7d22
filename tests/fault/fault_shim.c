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
 *
 * Power-cut recording: with TQ_POWERCUT=<journal> and TQ_POWERCUT_ROOT=<dir>,
 * every call that changes what is under dir, once armed, is appended to the
 * journal before it runs, for the power-cut driver to replay up to any
 * point and cut back to what a disk could hold then. One line a call:
 *     O <path> <flags>          open (O_CREAT / O_TRUNC matter)
 *     W <path> <offset> <n>     write or pwrite, then the n bytes
 *     T <path> <length>         ftruncate
 *     S <path>                  fsync or fdatasync of a file
 *     D <path>                  fsync of a directory
 *     R <from> <to>             rename
 *     U <path>                  unlink
 *     M <path>                  mkdir
 *     A <text>                  tq_powercut_mark(): an acknowledgement
 * Paths are relative to the root. A lock keeps each call and its record
 * together (the log syncer thread writes too).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
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

/* ------------------------------------------------------ power-cut log */

static pthread_mutex_t journal_lock = PTHREAD_MUTEX_INITIALIZER;
static int journal_fd = -2; /* -2: not looked at yet; -1: off */
static char root[4096];
static size_t root_len;
#define MAX_FDS 4096
static char *fd_path[MAX_FDS]; /* relative path of an fd under the root */
static int fd_append[MAX_FDS];

static void journal_open(void)
{
    if (journal_fd != -2)
        return;
    const char *j = getenv("TQ_POWERCUT"), *r = getenv("TQ_POWERCUT_ROOT");
    journal_fd = -1;
    if (!j || !r || strlen(r) >= sizeof(root) - 1)
        return;
    snprintf(root, sizeof(root), "%s/", r);
    root_len = strlen(root);
    journal_fd = (int)syscall(SYS_open, j, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
}

static void journal_raw(const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = syscall(SYS_write, journal_fd, c, n);
        if (w <= 0)
            abort();
        c += w;
        n -= (size_t)w;
    }
}

/* path relative to the root, or NULL when outside it (not recorded). */
static const char *under_root(const char *path)
{
    if (path[0] != '/')
        return NULL;
    if (!strncmp(path, root, root_len - 1) && !path[root_len - 1])
        return ""; /* the root itself */
    if (strncmp(path, root, root_len))
        return NULL;
    return path + root_len;
}

static int recording(void)
{
    if (!atomic_load(&armed))
        return 0;
    journal_open();
    return journal_fd >= 0;
}

static void journal_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void journal_line(const char *fmt, ...)
{
    char line[9000];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    journal_raw(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void tq_powercut_mark(const char *text);
void tq_powercut_mark(const char *text)
{
    if (!recording())
        return;
    pthread_mutex_lock(&journal_lock);
    journal_line("A %s\n", text);
    pthread_mutex_unlock(&journal_lock);
}

/* The next definition of name (libc's, jemalloc's), looked up once. */
#define REAL(ret, name, ...)                                      \
    static ret (*real_##name)(__VA_ARGS__);                      \
    if (!real_##name)                                             \
        *(void **)&real_##name = dlsym(RTLD_NEXT, #name)

void *mallocx(size_t size, int flags);
void *rallocx(void *p, size_t size, int flags);

/* A write of n bytes at off (-1: the fd's position, or its end with
 * O_APPEND) on a recorded fd: the record, under the lock the call is made
 * in. What was written is recorded, so a short write records its part. */
static void journal_write(int fd, const void *buf, ssize_t done, off_t off)
{
    if (off < 0) {
        struct stat st;
        off = fd_append[fd] && fstat(fd, &st) == 0 ? st.st_size - done : lseek(fd, 0, SEEK_CUR) - done;
    }
    journal_line("W %s %lld %lld\n", fd_path[fd], (long long)off, (long long)done);
    journal_raw(buf, (size_t)done);
}

static int recorded_fd(int fd)
{
    return fd >= 0 && fd < MAX_FDS && fd_path[fd] && recording();
}

int open(const char *path, int flags, ...);
int open(const char *path, int flags, ...)
{
    REAL(int, open, const char *, int, ...);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    const char *rel = recording() ? under_root(path) : NULL;
    if (!rel)
        return real_open(path, flags, mode);
    pthread_mutex_lock(&journal_lock);
    int fd = real_open(path, flags, mode);
    if (fd >= 0 && fd < MAX_FDS) {
        free(fd_path[fd]);
        fd_path[fd] = strdup(rel);
        fd_append[fd] = !!(flags & O_APPEND);
        if (flags & (O_CREAT | O_TRUNC))
            journal_line("O %s %d\n", rel, flags & (O_CREAT | O_TRUNC));
    }
    pthread_mutex_unlock(&journal_lock);
    return fd;
}

int close(int fd)
{
    REAL(int, close, int);
    if (fd >= 0 && fd < MAX_FDS && fd_path[fd]) {
        pthread_mutex_lock(&journal_lock);
        free(fd_path[fd]);
        fd_path[fd] = NULL;
        int rc = real_close(fd);
        pthread_mutex_unlock(&journal_lock);
        return rc;
    }
    return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(ssize_t, write, int, const void *, size_t);
    if (fail_now(K_WRITE))
        return -1;
    if (!recorded_fd(fd))
        return real_write(fd, buf, n);
    pthread_mutex_lock(&journal_lock);
    ssize_t done = real_write(fd, buf, n);
    if (done > 0)
        journal_write(fd, buf, done, -1);
    pthread_mutex_unlock(&journal_lock);
    return done;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
    if (fail_now(K_WRITE))
        return -1;
    if (!recorded_fd(fd))
        return real_pwrite(fd, buf, n, off);
    pthread_mutex_lock(&journal_lock);
    ssize_t done = real_pwrite(fd, buf, n, off);
    if (done > 0)
        journal_write(fd, buf, done, off);
    pthread_mutex_unlock(&journal_lock);
    return done;
}

/* fsync and fdatasync: a file's data, or a directory's entries. */
static int synced(int fd, int rc)
{
    if (rc == 0 && recorded_fd(fd)) {
        struct stat st;
        journal_line("%c %s\n", fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) ? 'D' : 'S', fd_path[fd]);
    }
    return rc;
}

int fsync(int fd)
{
    REAL(int, fsync, int);
    if (fail_now(K_FSYNC))
        return -1;
    pthread_mutex_lock(&journal_lock);
    int rc = synced(fd, real_fsync(fd));
    pthread_mutex_unlock(&journal_lock);
    return rc;
}

int fdatasync(int fd)
{
    REAL(int, fdatasync, int);
    if (fail_now(K_FSYNC))
        return -1;
    pthread_mutex_lock(&journal_lock);
    int rc = synced(fd, real_fdatasync(fd));
    pthread_mutex_unlock(&journal_lock);
    return rc;
}

int rename(const char *from, const char *to)
{
    REAL(int, rename, const char *, const char *);
    if (fail_now(K_RENAME))
        return -1;
    const char *a = recording() ? under_root(from) : NULL, *b = a ? under_root(to) : NULL;
    if (!a || !b)
        return real_rename(from, to);
    pthread_mutex_lock(&journal_lock);
    int rc = real_rename(from, to);
    if (rc == 0) {
        journal_line("R %s %s\n", a, b);
        /* Files open under a renamed directory now live under its new name. */
        const size_t alen = strlen(a);
        for (int fd = 0; fd < MAX_FDS; fd++) {
            char *old = fd_path[fd];
            if (old && !strncmp(old, a, alen) && old[alen] == '/') {
                char *moved = malloc(strlen(b) + strlen(old + alen) + 1);
                if (!moved)
                    abort();
                strcpy(moved, b);
                strcat(moved, old + alen);
                fd_path[fd] = moved;
                free(old);
            }
        }
    }
    pthread_mutex_unlock(&journal_lock);
    return rc;
}

int unlink(const char *path)
{
    REAL(int, unlink, const char *);
    const char *rel = recording() ? under_root(path) : NULL;
    if (!rel)
        return real_unlink(path);
    pthread_mutex_lock(&journal_lock);
    int rc = real_unlink(path);
    if (rc == 0)
        journal_line("U %s\n", rel);
    pthread_mutex_unlock(&journal_lock);
    return rc;
}

int mkdir(const char *path, mode_t mode)
{
    REAL(int, mkdir, const char *, mode_t);
    const char *rel = recording() ? under_root(path) : NULL;
    if (!rel)
        return real_mkdir(path, mode);
    pthread_mutex_lock(&journal_lock);
    int rc = real_mkdir(path, mode);
    if (rc == 0)
        journal_line("M %s\n", rel);
    pthread_mutex_unlock(&journal_lock);
    return rc;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    REAL(void *, mmap, void *, size_t, int, int, int, off_t);
    return fail_now(K_MMAP) ? MAP_FAILED : real_mmap(addr, len, prot, flags, fd, off);
}

int ftruncate(int fd, off_t len)
{
    REAL(int, ftruncate, int, off_t);
    if (fail_now(K_TRUNCATE))
        return -1;
    if (!recorded_fd(fd))
        return real_ftruncate(fd, len);
    pthread_mutex_lock(&journal_lock);
    int rc = real_ftruncate(fd, len);
    if (rc == 0)
        journal_line("T %s %lld\n", fd_path[fd], (long long)len);
    pthread_mutex_unlock(&journal_lock);
    return rc;
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
