/*
 * What a benchmark record needs so someone else can reproduce it: the
 * source revision, CPU model and SIMD level, the exact command line, a
 * checksum of the input files, and the process's peak memory.
 *
 * Peak RSS is the kernel's high-water mark (VmHWM). Writing "5" to
 * /proc/self/clear_refs resets it (Linux >= 4.0), which lets one process
 * report a peak per configuration; when the reset is refused the figure is
 * the process's peak so far and the record says so.
 */
#include "tq_revision.h"
#include "tq_tools.h"

#include <fcntl.h>
#include <xxhash.h>

static void read_cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10))
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            break;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(out, cap, "%.*s", (int)strcspn(v, "\n"), v);
        break;
    }
    fclose(f);
}

/* argv joined with single-quote shell quoting where a word needs it, so the
 * line can be pasted back into a shell. */
static void join_command(int argc, char **argv, char *out, size_t cap)
{
    size_t at = (size_t)snprintf(out, cap, "tqvec");
    for (int i = 0; i < argc && at < cap; i++) {
        const char *a = argv[i];
        bool plain = *a != 0;
        for (const char *c = a; *c && plain; c++)
            plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                    strchr("-_./=,:+@%", *c);
        if (plain) {
            at += (size_t)snprintf(out + at, cap - at, " %s", a);
            continue;
        }
        at += (size_t)snprintf(out + at, cap - at, " '");
        for (const char *c = a; *c && at < cap; c++)
            at += (size_t)snprintf(out + at, cap - at, *c == '\'' ? "'\\''" : "%c", *c);
        if (at < cap)
            at += (size_t)snprintf(out + at, cap - at, "'");
    }
}

void tool_provenance_init(tool_provenance *p, int argc, char **argv)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->revision, sizeof(p->revision), "%s", TQ_REVISION);
    snprintf(p->version, sizeof(p->version), "%s", tqvec_version());
    snprintf(p->simd, sizeof(p->simd), "%s", tqvec_simd_level());
    read_cpu_model(p->cpu, sizeof(p->cpu));
    join_command(argc, argv, p->command, sizeof(p->command));
    p->cores = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
}

int tool_files_checksum(const char *const *paths, size_t n, char out[17], tq_error *err)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return tq_err(err, TQ_ENOMEM, "out of memory");
    XXH3_64bits_reset(st);
    enum { CHUNK = 1 << 20 };
    char *buf = tq_malloc(CHUNK);
    int rc = buf ? 0 : tq_err(err, TQ_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = tq_err_sys(err, TQ_EIO, errno, "%s", paths[i]);
            break;
        }
        for (;;) {
            ssize_t got = read(fd, buf, CHUNK);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0)
                rc = tq_err_sys(err, TQ_EIO, errno, "%s", paths[i]);
            if (got <= 0)
                break;
            XXH3_64bits_update(st, buf, (size_t)got);
        }
        close(fd);
    }
    if (!rc)
        snprintf(out, 17, "%016llx", (unsigned long long)XXH3_64bits_digest(st));
    XXH3_freeState(st);
    tq_free(buf);
    return rc;
}

bool tool_peak_rss_reset(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok;
}

uint64_t tool_peak_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}
