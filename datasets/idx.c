/*
 * IDX image files (LeCun's MNIST format, also Fashion-MNIST's), read through
 * zlib so that the gzip-compressed files Debian ships work unchanged (zlib's
 * gzread passes plain files through).
 *
 * Layout: big-endian uint32 magic 0x00000803 (unsigned bytes, 3 dimensions),
 * then the big-endian uint32 sizes n, rows, cols, then n*rows*cols bytes.
 * Each image becomes one row of rows*cols floats holding 0..255.
 */
#include "tq_datasets.h"

#include <zlib.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int tq_idx_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return tq_err_sys(err, TQ_EIO, errno, "cannot open %s", path);
    int rc = TQ_OK;
    uint8_t *row = NULL, hdr[16];
    if (gzread(gz, hdr, 16) != 16) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: shorter than an IDX3 header", path);
        goto done;
    }
    if (be32(hdr) != 0x00000803) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: magic 0x%08x is not an IDX3 unsigned-byte file (0x00000803)",
                    path, be32(hdr));
        goto done;
    }
    size_t n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12), d = rows * cols;
    if (d == 0 || rows > 65536 || cols > 65536 || d > (1u << 20)) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: image size %zu x %zu is implausible", path, rows, cols);
        goto done;
    }
    if (max_rows && n > max_rows)
        n = max_rows;
    out->data = tq_malloc(n * d * sizeof(float));
    row = tq_malloc(d);
    if (!out->data || !row) {
        rc = tq_err(err, TQ_ENOMEM, "%s: out of memory for %zu images", path, n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (gzread(gz, row, (unsigned)d) != (int)d) {
            rc = tq_err(err, TQ_ECORRUPT, "%s: truncated at image %zu of %zu", path, i, n);
            goto done;
        }
        for (size_t j = 0; j < d; j++)
            out->data[i * d + j] = (float)row[j];
    }
    out->n = n;
    out->d = d;
done:
    if (rc)
        tq_matrix_free(out);
    tq_free(row);
    gzclose(gz);
    return rc;
}
