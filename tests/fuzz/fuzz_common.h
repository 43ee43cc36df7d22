/*
 * What every fuzz target shares: a private scratch directory (on tmpfs when
 * there is one, since the loaders read files) and writing an input there.
 * Targets are built by the `fuzz` meson option with clang's libFuzzer;
 * tools/fuzz runs them.
 */
#ifndef TQ_FUZZ_COMMON_H
#define TQ_FUZZ_COMMON_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir[256];

static void fuzz_make_dir(const char *name)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/tqvec-fuzz-%s-XXXXXX", base, name);
    if (!mkdtemp(fuzz_dir))
        abort();
}

/* Write data to fuzz_dir/name (replacing it); the path goes to out. */
static void fuzz_write(const char *name, const uint8_t *data, size_t size, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", fuzz_dir, name);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        abort();
    for (size_t at = 0; at < size;) {
        ssize_t n = write(fd, data + at, size - at);
        if (n <= 0)
            abort();
        at += (size_t)n;
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
