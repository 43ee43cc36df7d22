/*
 * Small POSIX helpers shared by every writer in store: whole writes and the
 * fsync calls that make a file, or a name in a directory, durable. Errors
 * carry the path and errno so a caller can report exactly what failed.
 */
#include "store.h"

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

int tq_write_all(int fd, const void *buf, size_t n, const char *path, tq_error *err)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return tq_err_sys(err, TQ_EIO, errno, "%s: write", path);
        }
        p += w;
        n -= (size_t)w;
    }
    return TQ_OK;
}

int tq_open_sized(const char *path, int flags, int *fd, uint64_t *size, tq_error *err)
{
    *fd = open(path, flags | O_CLOEXEC);
    if (*fd < 0)
        return tq_err_sys(err, errno == ENOENT ? TQ_ENOTFOUND : TQ_EIO, errno, "%s: open", path);
    struct stat st;
    if (fstat(*fd, &st) != 0) {
        int e = errno;
        close(*fd);
        *fd = -1;
        return tq_err_sys(err, TQ_EIO, e, "%s: stat", path);
    }
    *size = (uint64_t)st.st_size;
    return TQ_OK;
}

int tq_sync_fd(int fd, const char *path, tq_error *err)
{
    if (fdatasync(fd) != 0)
        return tq_err_sys(err, TQ_EIO, errno, "%s: fdatasync", path);
    return TQ_OK;
}

int tq_sync_parent_dir(const char *path, tq_error *err)
{
    char copy[PATH_MAX];
    if (strlen(path) >= sizeof(copy))
        return tq_err(err, TQ_EARG, "path too long: %s", path);
    strcpy(copy, path);
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return tq_err_sys(err, TQ_EIO, errno, "%s: open directory", dir);
    int rc = TQ_OK;
    if (fsync(fd) != 0)
        rc = tq_err_sys(err, TQ_EIO, errno, "%s: fsync directory", dir);
    close(fd);
    return rc;
}
