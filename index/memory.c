/*
 * The one allocator module. tqvec allocates through jemalloc's extended API
 * (mallocx/rallocx/dallocx) so that its memory is jemalloc's whatever
 * allocator the host process links first (a Python interpreter loading
 * libtqvec, say). Every other file sees malloc & co. poisoned.
 *
 * jemalloc leaves mallocx(0) and dallocx(NULL) undefined; these wrappers
 * give them the C meanings callers expect.
 */
#include <jemalloc/jemalloc.h>

#include "tq_index.h"

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

char *tq_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tq_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
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
