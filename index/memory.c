/*
 * The one allocator module; every other file sees malloc & co. poisoned.
 *
 * Built twice, and each target links the one it needs:
 *   - jemalloc (executables, the static library): allocation through its
 *     extended API (mallocx/rallocx/dallocx), so tqvec's memory is
 *     jemalloc's whatever allocator the process links first;
 *   - TQ_ALLOCATOR_LIBC (the shared library): the host process's malloc.
 *     A library that Python or another runtime dlopen()s cannot bring
 *     Debian's jemalloc along: it uses initial-exec TLS (2.6 KB), and a
 *     process that did not start with it fails the load with "cannot
 *     allocate memory in static TLS block".
 *
 * jemalloc leaves mallocx(0) and dallocx(NULL) undefined; these wrappers
 * give them the C meanings callers expect.
 */
#ifdef TQ_ALLOCATOR_LIBC
/* Before the index header, whose poison forbids these names afterwards. */
#include <malloc.h>
#include <stdlib.h>

static void *libc_malloc(size_t n)
{
    return malloc(n);
}
static void *libc_calloc(size_t count, size_t size)
{
    return calloc(count, size);
}
static void *libc_realloc(void *p, size_t n)
{
    return realloc(p, n);
}
static void *libc_aligned(size_t align, size_t n)
{
    void *p = NULL;
    return posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, n) ? NULL : p;
}
static void libc_free(void *p)
{
    free(p);
}
static size_t libc_allocated(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
#else
#include <jemalloc/jemalloc.h>
#endif

#include "tq_index.h"

#include <sys/mman.h>
#include <unistd.h>

#ifdef TQ_ALLOCATOR_LIBC

void *tq_malloc(size_t n)
{
    return libc_malloc(n ? n : 1);
}

void *tq_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    return libc_calloc(count ? count : 1, size ? size : 1);
}

void *tq_realloc(void *p, size_t n)
{
    return libc_realloc(p, n ? n : 1);
}

void *tq_aligned_alloc(size_t align, size_t n)
{
    return libc_aligned(align, n ? n : 1);
}

void tq_free(void *p)
{
    libc_free(p);
}

size_t tq_mem_allocated(void)
{
    return libc_allocated();
}

#else

void *tq_malloc(size_t n)
{
    return mallocx(n ? n : 1, 0);
}

void *tq_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    size_t n = count * size;
    return mallocx(n ? n : 1, MALLOCX_ZERO);
}

void *tq_realloc(void *p, size_t n)
{
    if (!p)
        return tq_malloc(n);
    return rallocx(p, n ? n : 1, 0);
}

void *tq_aligned_alloc(size_t align, size_t n)
{
    return mallocx(n ? n : 1, MALLOCX_ALIGN(align));
}

void tq_free(void *p)
{
    if (p)
        dallocx(p, 0);
}

size_t tq_mem_allocated(void)
{
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch), allocated = 0, asz = sizeof(allocated);
    if (mallctl("epoch", &epoch, &sz, &epoch, sz) != 0)
        return 0;
    if (mallctl("stats.allocated", &allocated, &asz, NULL, 0) != 0)
        return 0;
    return allocated;
}

#endif

void tq_advise_huge(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    const size_t huge = (size_t)2 << 20;
    if (!p || bytes < huge)
        return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1), end = ((uintptr_t)p + bytes) & ~(page - 1);
    if (end > start)
        (void)madvise((void *)start, end - start, MADV_HUGEPAGE); /* advice: a refusal changes nothing */
#else
    (void)p;
    (void)bytes;
#endif
}

char *tq_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tq_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
