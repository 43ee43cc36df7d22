/*
 * NumPy .npy files (format versions 1.0, 2.0 and 3.0).
 *
 * Layout: the 6 bytes "\x93NUMPY", major and minor version bytes, the header
 * length (uint16 LE in 1.0, uint32 LE in 2.0/3.0), then an ASCII Python dict
 * literal with keys 'descr', 'fortran_order' and 'shape', padded with spaces
 * and a newline so the data starts on a 64-byte boundary; then the raw array.
 * We read 2-D C-order little-endian float32 ('<f4') or float64 ('<f8', which
 * must fit float32), and write '<f4' in version 1.0.
 */
#include "tq_datasets.h"

#include <ctype.h>
#include <sys/stat.h>

#define NPY_MAGIC "\x93NUMPY"
#define MAX_HEADER 65536

/* The value text after 'key': in the header dict, or NULL. */
static const char *dict_value(const char *hdr, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "'%s'", key);
    const char *p = strstr(hdr, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p != ':')
        return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

static int parse_header(const char *path, const char *hdr, size_t *elem, size_t shape[2],
                        tq_error *err)
{
    const char *descr = dict_value(hdr, "descr");
    if (!descr)
        return tq_err(err, TQ_ECORRUPT, "%s: npy header has no 'descr'", path);
    if (!strncmp(descr, "'<f4'", 5))
        *elem = 4;
    else if (!strncmp(descr, "'<f8'", 5))
        *elem = 8;
    else
        return tq_err(err, TQ_EUNSUPPORTED, "%s: npy dtype %.8s is not supported (want '<f4' or '<f8')", path, descr);
    const char *fo = dict_value(hdr, "fortran_order");
    if (!fo)
        return tq_err(err, TQ_ECORRUPT, "%s: npy header has no 'fortran_order'", path);
    if (!strncmp(fo, "True", 4))
        return tq_err(err, TQ_EUNSUPPORTED, "%s: Fortran-order arrays are not supported", path);
    if (strncmp(fo, "False", 5))
        return tq_err(err, TQ_ECORRUPT, "%s: bad 'fortran_order' value", path);
    const char *sh = dict_value(hdr, "shape");
    if (!sh || *sh != '(')
        return tq_err(err, TQ_ECORRUPT, "%s: npy header has no 'shape' tuple", path);
    sh++;
    size_t dims = 0;
    while (dims < 3) {
        while (*sh == ' ')
            sh++;
        if (*sh == ')')
            break;
        if (!isdigit((unsigned char)*sh))
            return tq_err(err, TQ_ECORRUPT, "%s: bad 'shape' in npy header", path);
        char *end;
        unsigned long long v = strtoull(sh, &end, 10);
        if (dims < 2)
            shape[dims] = (size_t)v;
        dims++;
        sh = end;
        while (*sh == ' ')
            sh++;
        if (*sh == ',')
            sh++;
    }
    if (dims != 2)
        return tq_err(err, TQ_EUNSUPPORTED, "%s: npy array has %zu dimensions, want 2 (rows, dim)", path, dims);
    if (shape[1] == 0 || shape[1] > (1u << 20))
        return tq_err(err, TQ_ECORRUPT, "%s: npy row length %zu is outside 1..%u", path, shape[1], 1u << 20);
    return TQ_OK;
}

int tq_npy_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    int rc = TQ_OK;
    char *hdr = NULL;
    void *raw = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return tq_err_sys(err, TQ_EIO, errno, "cannot open %s", path);
    uint8_t pre[12];
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || fread(pre, 1, 10, fp) != 10 || memcmp(pre, NPY_MAGIC, 6)) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: not an npy file (bad magic or too short)", path);
        goto done;
    }
    size_t hlen, prefix;
    if (pre[6] == 1) {
        hlen = pre[8] | (size_t)pre[9] << 8;
        prefix = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, fp) != 2) {
            rc = tq_err(err, TQ_ECORRUPT, "%s: truncated npy header", path);
            goto done;
        }
        hlen = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        prefix = 12;
    } else {
        rc = tq_err(err, TQ_EUNSUPPORTED, "%s: npy format version %u is not supported", path, pre[6]);
        goto done;
    }
    if (hlen > MAX_HEADER) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: npy header length %zu is implausible", path, hlen);
        goto done;
    }
    hdr = tq_malloc(hlen + 1);
    if (!hdr) {
        rc = tq_err(err, TQ_ENOMEM, "out of memory");
        goto done;
    }
    if (fread(hdr, 1, hlen, fp) != hlen) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: truncated npy header", path);
        goto done;
    }
    hdr[hlen] = '\0';
    size_t elem = 0, shape[2] = {0, 0};
    if ((rc = parse_header(path, hdr, &elem, shape, err)))
        goto done;
    size_t n = shape[0], d = shape[1];
    uint64_t want = (uint64_t)prefix + hlen + (uint64_t)n * d * elem;
    if ((uint64_t)st.st_size != want) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: file has %lld bytes but its header promises %llu (%zu x %zu x %zu)",
                    path, (long long)st.st_size, (unsigned long long)want, n, d, elem);
        goto done;
    }
    if (max_rows && n > max_rows)
        n = max_rows;
    out->data = tq_malloc(n * d * sizeof(float));
    raw = elem == 8 ? tq_malloc(d * 8) : NULL;
    if (!out->data || (elem == 8 && !raw)) {
        rc = tq_err(err, TQ_ENOMEM, "%s: out of memory for %zu x %zu values", path, n, d);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        float *row = out->data + i * d;
        if (fread(elem == 8 ? raw : (void *)row, elem, d, fp) != d) {
            rc = tq_err_sys(err, TQ_EIO, errno, "%s: read failed at row %zu", path, i);
            goto done;
        }
        if (elem == 8)
            for (size_t j = 0; j < d; j++)
                row[j] = (float)((const double *)raw)[j];
        size_t bad;
        if (tq_check_finite(row, d, &bad)) {
            rc = tq_err(err, TQ_EVALUE, "%s: row %zu has a non-finite value (or one beyond float range) at column %zu",
                        path, i, bad);
            goto done;
        }
    }
    out->n = n;
    out->d = d;
done:
    if (rc)
        tq_matrix_free(out);
    tq_free(hdr);
    tq_free(raw);
    fclose(fp);
    return rc;
}

int tq_npy_write(const char *path, const tq_matrix *m, tq_error *err)
{
    char dict[128];
    int len = snprintf(dict, sizeof(dict), "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }",
                       m->n, m->d);
    /* Pad with spaces and a final newline so the data starts on a 64-byte
     * boundary, as NumPy itself does. */
    size_t total = 10 + (size_t)len + 1;
    size_t padded = (total + 63) / 64 * 64;
    size_t hlen = padded - 10;
    char hdr[256];
    memcpy(hdr, NPY_MAGIC, 6);
    hdr[6] = 1;
    hdr[7] = 0;
    hdr[8] = (char)(hlen & 0xFF);
    hdr[9] = (char)(hlen >> 8);
    memcpy(hdr + 10, dict, (size_t)len);
    memset(hdr + 10 + len, ' ', hlen - (size_t)len - 1);
    hdr[padded - 1] = '\n';

    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return tq_err(err, TQ_EARG, "path too long: %s", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp)
        return tq_err_sys(err, TQ_EIO, errno, "cannot create %s", tmp);
    bool ok = fwrite(hdr, 1, padded, fp) == padded &&
              fwrite(m->data, sizeof(float), m->n * m->d, fp) == m->n * m->d;
    int e = errno;
    if (fclose(fp) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        if (ok)
            e = errno;
        remove(tmp);
        return tq_err_sys(err, TQ_EIO, e, "cannot write %s", path);
    }
    return TQ_OK;
}
