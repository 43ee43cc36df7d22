/*
 * ann-benchmarks HDF5 files, read through libhdf5 when the build found it.
 *
 * Layout (ann-benchmarks' own writer): datasets "train" (n x d float32,
 * the base), "test" (queries), "neighbors" (queries x 100 int32, 0-based
 * rows of train, nearest first) and "distances"; a file attribute
 * "distance" ("euclidean", "angular", "dot", "hamming", "jaccard"). We read
 * any 2-D dataset whose element class is float (into float32) or integer
 * (into int32), optionally only its first rows (a hyperslab, so taking
 * 10,000 rows of a 1M-row train set reads 10,000). Values are checked like
 * every other reader: NaN/Inf are errors naming the row.
 *
 * libhdf5 is optional: without it every entry point returns a clear
 * "built without HDF5" error and tq_hdf5_available() says so, which is how
 * tests and callers skip. The library's automatic error-stack printing is
 * switched off: failures are reported once, through tq_error.
 */
/* Before our headers, which poison malloc/free names hdf5.h declares. */
#ifdef TQ_HAVE_HDF5
#include <hdf5.h>
#endif

#include "tq_datasets.h"

#include <math.h>

#ifdef TQ_HAVE_HDF5

bool tq_hdf5_available(void)
{
    return true;
}

/* One open file and dataset, closed by hdf5_close whatever was opened. */
typedef struct hdf5_handle {
    hid_t file, set, space;
} hdf5_handle;

static void hdf5_close(hdf5_handle *h)
{
    if (h->space >= 0)
        H5Sclose(h->space);
    if (h->set >= 0)
        H5Dclose(h->set);
    if (h->file >= 0)
        H5Fclose(h->file);
}

static int hdf5_open_file(const char *path, hdf5_handle *h, tq_error *err)
{
    *h = (hdf5_handle){-1, -1, -1};
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    FILE *probe = fopen(path, "rb");
    if (!probe)
        return tq_err_sys(err, TQ_EIO, errno, "%s", path);
    fclose(probe);
    if (H5Fis_hdf5(path) <= 0)
        return tq_err(err, TQ_ECORRUPT, "%s: not a readable HDF5 file (bad signature or truncated)", path);
    if ((h->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0)
        return tq_err(err, TQ_ECORRUPT, "%s: HDF5 file cannot be opened (damaged?)", path);
    return 0;
}

/* Opens dataset `name`, checks it is 2-D of `class`, and gives its shape. */
static int hdf5_open_set(const char *path, const char *name, H5T_class_t class, hdf5_handle *h, size_t shape[2],
                         tq_error *err)
{
    if (hdf5_open_file(path, h, err))
        return err->code;
    if (H5Lexists(h->file, name, H5P_DEFAULT) <= 0)
        return tq_err(err, TQ_ENOTFOUND, "%s: no dataset '%s'", path, name);
    if ((h->set = H5Dopen2(h->file, name, H5P_DEFAULT)) < 0)
        return tq_err(err, TQ_ECORRUPT, "%s: dataset '%s' cannot be opened", path, name);
    hid_t type = H5Dget_type(h->set);
    H5T_class_t got = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (type >= 0)
        H5Tclose(type);
    if (got != class)
        return tq_err(err, TQ_EUNSUPPORTED, "%s: dataset '%s' holds %s, expected %s", path, name,
                      got == H5T_FLOAT ? "floats" : got == H5T_INTEGER ? "integers" : "another type",
                      class == H5T_FLOAT ? "floats" : "integers");
    hsize_t dims[2];
    if ((h->space = H5Dget_space(h->set)) < 0 || H5Sget_simple_extent_ndims(h->space) != 2 ||
        H5Sget_simple_extent_dims(h->space, dims, NULL) != 2)
        return tq_err(err, TQ_EUNSUPPORTED, "%s: dataset '%s' is not a 2-D array", path, name);
    if (dims[1] == 0 || dims[1] > (hsize_t)TQ_MAX_DIM)
        return tq_err(err, TQ_ECORRUPT, "%s: dataset '%s' has %llu columns (want 1..%u)", path, name,
                      (unsigned long long)dims[1], TQ_MAX_DIM);
    shape[0] = (size_t)dims[0];
    shape[1] = (size_t)dims[1];
    return 0;
}

/* Reads the first rows x cols values as mem_type into out. */
static int hdf5_read_rows(const char *path, const char *name, hdf5_handle *h, hid_t mem_type, size_t rows,
                          size_t cols, void *out, tq_error *err)
{
    hsize_t start[2] = {0, 0}, count[2] = {rows, cols};
    hid_t mem = H5Screate_simple(2, count, NULL);
    herr_t rc = mem < 0 ? -1 : H5Sselect_hyperslab(h->space, H5S_SELECT_SET, start, NULL, count, NULL);
    if (rc >= 0)
        rc = H5Dread(h->set, mem_type, mem, h->space, H5P_DEFAULT, out);
    if (mem >= 0)
        H5Sclose(mem);
    if (rc < 0)
        return tq_err(err, TQ_ECORRUPT, "%s: reading dataset '%s' failed (damaged or truncated file?)", path, name);
    return 0;
}

/* The first rows (max_rows, 0 = all) of a 2-D dataset of `class`, as
 * mem_type elements of `size` bytes, into a new array. */
static int read_2d(const char *path, const char *dataset, H5T_class_t class, hid_t mem_type, size_t size,
                   size_t max_rows, void **data, size_t shape[2], tq_error *err)
{
    *data = NULL;
    hdf5_handle h;
    int rc = hdf5_open_set(path, dataset, class, &h, shape, err);
    if (!rc) {
        shape[0] = max_rows && max_rows < shape[0] ? max_rows : shape[0];
        *data = tq_malloc((shape[0] ? shape[0] : 1) * shape[1] * size);
        if (!*data)
            rc = tq_err(err, TQ_ENOMEM, "%s: no memory for %zu x %zu values", path, shape[0], shape[1]);
        else
            rc = hdf5_read_rows(path, dataset, &h, mem_type, shape[0], shape[1], *data, err);
    }
    hdf5_close(&h);
    if (rc) {
        tq_free(*data);
        *data = NULL;
    }
    return rc;
}

int tq_hdf5_read(const char *path, const char *dataset, size_t max_rows, tq_matrix *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    size_t shape[2];
    void *data;
    int rc = read_2d(path, dataset, H5T_FLOAT, H5T_NATIVE_FLOAT, sizeof(float), max_rows, &data, shape, err);
    if (rc)
        return rc;
    *out = (tq_matrix){.n = shape[0], .d = shape[1], .data = data};
    for (size_t i = 0; i < out->n * out->d; i++)
        if (!isfinite(out->data[i])) {
            tq_matrix_free(out);
            return tq_err(err, TQ_EVALUE, "%s: '%s' row %zu holds a NaN or infinite value", path, dataset,
                          i / shape[1]);
        }
    return 0;
}

int tq_hdf5_read_ids(const char *path, const char *dataset, size_t max_rows, tq_imatrix *out, tq_error *err)
{
    memset(out, 0, sizeof(*out));
    size_t shape[2];
    void *data;
    int rc = read_2d(path, dataset, H5T_INTEGER, H5T_NATIVE_INT32, sizeof(int32_t), max_rows, &data, shape, err);
    if (!rc)
        *out = (tq_imatrix){.n = shape[0], .d = shape[1], .data = data};
    return rc;
}

int tq_hdf5_distance(const char *path, char *out, size_t cap, tq_error *err)
{
    hdf5_handle h;
    int rc = hdf5_open_file(path, &h, err);
    hid_t attr = -1, type = -1;
    if (!rc && H5Aexists(h.file, "distance") <= 0)
        rc = tq_err(err, TQ_ENOTFOUND, "%s: no 'distance' attribute (not an ann-benchmarks file?)", path);
    if (!rc && ((attr = H5Aopen(h.file, "distance", H5P_DEFAULT)) < 0 || (type = H5Aget_type(attr)) < 0 ||
                H5Tget_class(type) != H5T_STRING))
        rc = tq_err(err, TQ_ECORRUPT, "%s: attribute 'distance' is not a string", path);
    if (!rc) {
        /* ann-benchmarks writes it with h5py: a variable-length string. */
        if (H5Tis_variable_str(type) > 0) {
            char *s = NULL;
            hid_t mem = H5Tcopy(H5T_C_S1);
            H5Tset_size(mem, H5T_VARIABLE);
            H5Tset_cset(mem, H5Tget_cset(type)); /* h5py writes UTF-8 */
            if (H5Aread(attr, mem, &s) < 0 || !s)
                rc = tq_err(err, TQ_ECORRUPT, "%s: attribute 'distance' cannot be read", path);
            else
                snprintf(out, cap, "%s", s);
            if (s)
                H5free_memory(s);
            H5Tclose(mem);
        } else {
            size_t n = H5Tget_size(type);
            char buf[256] = {0};
            hid_t mem = H5Tcopy(H5T_C_S1);
            H5Tset_size(mem, sizeof(buf) - 1);
            H5Tset_cset(mem, H5Tget_cset(type));
            if (n == 0 || n >= sizeof(buf) || H5Aread(attr, mem, buf) < 0)
                rc = tq_err(err, TQ_ECORRUPT, "%s: attribute 'distance' cannot be read", path);
            else
                snprintf(out, cap, "%s", buf);
            H5Tclose(mem);
        }
    }
    if (type >= 0)
        H5Tclose(type);
    if (attr >= 0)
        H5Aclose(attr);
    hdf5_close(&h);
    return rc;
}

#else /* !TQ_HAVE_HDF5 */

bool tq_hdf5_available(void)
{
    return false;
}

static int no_hdf5(const char *path, tq_error *err)
{
    return tq_err(err, TQ_EUNSUPPORTED,
                  "%s: this tqvec was built without HDF5 support (install libhdf5-dev and rebuild)", path);
}

int tq_hdf5_read(const char *path, const char *dataset, size_t max_rows, tq_matrix *out, tq_error *err)
{
    (void)dataset, (void)max_rows;
    memset(out, 0, sizeof(*out));
    return no_hdf5(path, err);
}

int tq_hdf5_read_ids(const char *path, const char *dataset, size_t max_rows, tq_imatrix *out, tq_error *err)
{
    (void)dataset, (void)max_rows;
    memset(out, 0, sizeof(*out));
    return no_hdf5(path, err);
}

int tq_hdf5_distance(const char *path, char *out, size_t cap, tq_error *err)
{
    if (cap)
        out[0] = 0;
    return no_hdf5(path, err);
}

#endif

bool tq_hdf5_is_path(const char *path)
{
    size_t n = strlen(path);
    return (n > 5 && !strcmp(path + n - 5, ".hdf5")) || (n > 3 && !strcmp(path + n - 3, ".h5"));
}

const char *tq_hdf5_spec(const char *spec, char *file, size_t cap)
{
    const char *colon = strrchr(spec, ':');
    if (colon && colon > spec) {
        snprintf(file, cap, "%.*s", (int)(colon - spec), spec);
        if (tq_hdf5_is_path(file))
            return colon + 1;
    }
    snprintf(file, cap, "%s", spec);
    return tq_hdf5_is_path(file) ? "" : NULL;
}
