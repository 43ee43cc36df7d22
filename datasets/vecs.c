/*
 * texmex vector files: fvecs, ivecs and bvecs. Each record is a
 * little-endian int32 dimension followed by that many elements; a file is a
 * sequence of records that must all share the first record's dimension.
 * The whole-record check (file size a multiple of the record size) catches a
 * truncated tail before anything is read; each record's own dimension field
 * is then checked too, since a corrupt field can hide inside a file of the
 * right size.
 */
#include "tq_datasets.h"

#include <sys/stat.h>

#define MAX_FILE_DIM (1u << 20)

typedef enum elem_kind { ELEM_F32, ELEM_I32, ELEM_U8 } elem_kind;

static size_t elem_size(elem_kind k)
{
    return k == ELEM_U8 ? 1 : 4;
}

static const char *kind_name(elem_kind k)
{
    return k == ELEM_F32 ? "fvecs" : k == ELEM_I32 ? "ivecs" : "bvecs";
}

/* Read records into dst (floats for F32/U8, int32 for I32). */
static int read_records(const char *path, elem_kind kind, size_t max_rows, size_t *n_out,
                        size_t *d_out, void **data_out, tq_error *err)
{
    int rc = TQ_OK;
    void *data = NULL;
    uint8_t *rec = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return tq_err_sys(err, TQ_EIO, errno, "cannot open %s", path);
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        rc = tq_err_sys(err, TQ_EIO, errno, "cannot stat %s", path);
        goto done;
    }
    int32_t d32;
    if (st.st_size < 4 || fread(&d32, 4, 1, fp) != 1) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: empty or shorter than one %s record header", path, kind_name(kind));
        goto done;
    }
    if (d32 <= 0 || (uint32_t)d32 > MAX_FILE_DIM) {
        rc = tq_err(err, TQ_ECORRUPT, "%s: first record has dimension %d (expected 1..%u)", path, d32, MAX_FILE_DIM);
        goto done;
    }
    size_t d = (size_t)d32, es = elem_size(kind), rec_size = 4 + d * es;
    if ((uint64_t)st.st_size % rec_size != 0) {
        rc = tq_err(err, TQ_ECORRUPT,
                    "%s: size %lld is not a whole number of %zu-byte records (d=%zu): truncated or not %s",
                    path, (long long)st.st_size, rec_size, d, kind_name(kind));
        goto done;
    }
    size_t n = (size_t)st.st_size / rec_size;
    if (max_rows && n > max_rows)
        n = max_rows;
    data = tq_malloc(n * d * 4);
    rec = tq_malloc(rec_size);
    if (!data || !rec) {
        rc = tq_err(err, TQ_ENOMEM, "%s: out of memory for %zu x %zu values", path, n, d);
        goto done;
    }
    tq_advise_huge(data, n * d * 4); /* filled next: a million 128-d rows were 125,000 faults */
    rewind(fp);
    for (size_t i = 0; i < n; i++) {
        if (fread(rec, rec_size, 1, fp) != 1) {
            rc = tq_err_sys(err, TQ_EIO, errno, "%s: read failed at record %zu", path, i);
            goto done;
        }
        int32_t di;
        memcpy(&di, rec, 4);
        if (di != d32) {
            rc = tq_err(err, TQ_ECORRUPT, "%s: record %zu has dimension %d, the first has %d", path, i, di, d32);
            goto done;
        }
        const uint8_t *payload = rec + 4;
        if (kind == ELEM_I32) {
            memcpy((int32_t *)data + i * d, payload, d * 4);
        } else if (kind == ELEM_F32) {
            float *row = (float *)data + i * d;
            memcpy(row, payload, d * 4);
            size_t bad;
            if (tq_check_finite(row, d, &bad)) {
                rc = tq_err(err, TQ_EVALUE, "%s: record %zu has a non-finite value at coordinate %zu", path, i, bad);
                goto done;
            }
        } else {
            float *row = (float *)data + i * d;
            for (size_t j = 0; j < d; j++)
                row[j] = (float)payload[j];
        }
    }
    *n_out = n;
    *d_out = d;
    *data_out = data;
    data = NULL;
done:
    tq_free(data);
    tq_free(rec);
    fclose(fp);
    return rc;
}

int tq_fvecs_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    return read_records(path, ELEM_F32, max_rows, &out->n, &out->d, (void **)&out->data, err);
}

int tq_bvecs_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    return read_records(path, ELEM_U8, max_rows, &out->n, &out->d, (void **)&out->data, err);
}

int tq_ivecs_read(const char *path, size_t max_rows, tq_imatrix *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    return read_records(path, ELEM_I32, max_rows, &out->n, &out->d, (void **)&out->data, err);
}

/* Write n records of d elements; rows are given as a byte image already in
 * the element format. Written to path.tmp and renamed, so a failed write
 * never leaves a half file under the real name. */
static int write_records(const char *path, size_t n, size_t d, size_t es, const void *rows,
                         tq_error *err)
{
    if (d == 0 || d > MAX_FILE_DIM)
        return tq_err(err, TQ_EARG, "%s: dimension %zu cannot be written (1..%u)", path, d, MAX_FILE_DIM);
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return tq_err(err, TQ_EARG, "path too long: %s", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp)
        return tq_err_sys(err, TQ_EIO, errno, "cannot create %s", tmp);
    int32_t d32 = (int32_t)d;
    for (size_t i = 0; i < n; i++) {
        if (fwrite(&d32, 4, 1, fp) != 1 || fwrite((const uint8_t *)rows + i * d * es, es, d, fp) != d) {
            int e = errno;
            fclose(fp);
            remove(tmp);
            return tq_err_sys(err, TQ_EIO, e, "write to %s failed", tmp);
        }
    }
    if (fclose(fp) != 0) {
        int e = errno;
        remove(tmp);
        return tq_err_sys(err, TQ_EIO, e, "write to %s failed", tmp);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return tq_err_sys(err, TQ_EIO, e, "cannot rename %s to %s", tmp, path);
    }
    return TQ_OK;
}

int tq_fvecs_write(const char *path, const tq_matrix *m, tq_error *err)
{
    return write_records(path, m->n, m->d, 4, m->data, err);
}

int tq_ivecs_write(const char *path, const tq_imatrix *m, tq_error *err)
{
    return write_records(path, m->n, m->d, 4, m->data, err);
}

int tq_bvecs_write(const char *path, const tq_matrix *m, tq_error *err)
{
    uint8_t *bytes = tq_malloc(m->n * m->d);
    if (!bytes)
        return tq_err(err, TQ_ENOMEM, "out of memory converting %zu x %zu values to bytes", m->n, m->d);
    for (size_t i = 0; i < m->n * m->d; i++) {
        float v = m->data[i];
        if (!(v >= 0.0f && v <= 255.0f) || v != (float)(int)v) {
            tq_free(bytes);
            return tq_err(err, TQ_EVALUE, "%s: value %g at row %zu, coordinate %zu is not an integer in 0..255",
                          path, (double)v, i / m->d, i % m->d);
        }
        bytes[i] = (uint8_t)v;
    }
    int rc = write_records(path, m->n, m->d, 1, bytes, err);
    tq_free(bytes);
    return rc;
}

void tq_matrix_free(tq_matrix *m)
{
    if (m) {
        tq_free(m->data);
        memset(m, 0, sizeof(*m));
    }
}

void tq_imatrix_free(tq_imatrix *m)
{
    if (m) {
        tq_free(m->data);
        memset(m, 0, sizeof(*m));
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int tq_vectors_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err)
{
    if (ends_with(path, ".fvecs"))
        return tq_fvecs_read(path, max_rows, out, err);
    if (ends_with(path, ".bvecs"))
        return tq_bvecs_read(path, max_rows, out, err);
    if (ends_with(path, ".npy"))
        return tq_npy_read(path, max_rows, out, err);
    if (ends_with(path, "-ubyte") || ends_with(path, "-ubyte.gz") || ends_with(path, ".idx") ||
        ends_with(path, ".idx.gz"))
        return tq_idx_read(path, max_rows, out, err);
    char file[4096];
    const char *dataset = tq_hdf5_spec(path, file, sizeof(file));
    if (dataset)
        return tq_hdf5_read(file, *dataset ? dataset : "train", max_rows, out, err);
    memset(out, 0, sizeof(*out));
    return tq_err(err, TQ_EARG, "%s: unknown vector file type (expected .fvecs, .bvecs, .npy, IDX or .hdf5)", path);
}

int tq_ids_read(const char *path, size_t max_rows, tq_imatrix *out, tq_error *err)
{
    char file[4096];
    const char *dataset = tq_hdf5_spec(path, file, sizeof(file));
    if (dataset)
        return tq_hdf5_read_ids(file, *dataset ? dataset : "neighbors", max_rows, out, err);
    return tq_ivecs_read(path, max_rows, out, err);
}
