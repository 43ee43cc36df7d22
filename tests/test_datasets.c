/*
 * Dataset readers and writers on good files and on every way a file can be
 * wrong (fvecs, ivecs, bvecs, npy, IDX, ann-benchmarks HDF5), and ground truth against a naive double-precision search.
 */
/* hdf5.h before our headers, which poison the allocator names it uses. */
#ifdef TQ_HAVE_HDF5
#include <hdf5.h>
#endif
#include <criterion/criterion.h>
#include <zlib.h>

#include "tq_datasets.h"

#include "temp_dir.h"

TestSuite(datasets, .init = make_dir, .fini = remove_dir);

static const char *path(const char *name)
{
    static char buf[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
    return buf[i];
}

static tq_matrix sample(size_t n, size_t d, bool integers)
{
    tq_matrix m = {n, d, tq_malloc(n * d * sizeof(float))};
    for (size_t i = 0; i < n * d; i++)
        m.data[i] = integers ? (float)((i * 37) % 256) : (float)sin((double)i) * 3.5f;
    return m;
}

static void write_bytes(const char *p, const void *data, size_t n)
{
    FILE *fp = fopen(p, "wb");
    cr_assert_not_null(fp);
    cr_assert_eq(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

static size_t read_bytes(const char *p, void *buf, size_t cap)
{
    FILE *fp = fopen(p, "rb");
    cr_assert_not_null(fp);
    size_t n = fread(buf, 1, cap, fp);
    fclose(fp);
    return n;
}

Test(datasets, fvecs_bvecs_npy_round_trips)
{
    tq_matrix m = sample(17, 13, false), b = sample(9, 5, true), got;
    tq_error err;
    cr_assert_eq(tq_fvecs_write(path("a.fvecs"), &m, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_vectors_read(path("a.fvecs"), 0, &got, &err), TQ_OK, "%s", err.msg);
    cr_assert(got.n == 17 && got.d == 13 && !memcmp(got.data, m.data, 17 * 13 * 4));
    tq_matrix_free(&got);
    cr_assert_eq(tq_fvecs_read(path("a.fvecs"), 5, &got, &err), TQ_OK);
    cr_assert_eq(got.n, 5, "max_rows limits the rows read");
    tq_matrix_free(&got);

    cr_assert_eq(tq_npy_write(path("a.npy"), &m, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_vectors_read(path("a.npy"), 0, &got, &err), TQ_OK, "%s", err.msg);
    cr_assert(got.n == 17 && got.d == 13 && !memcmp(got.data, m.data, 17 * 13 * 4));
    tq_matrix_free(&got);
    /* NumPy's own rule: the data starts on a 64-byte boundary. */
    uint8_t buf[256];
    read_bytes(path("a.npy"), buf, sizeof(buf));
    size_t hlen = buf[8] | (size_t)buf[9] << 8;
    cr_assert_eq((10 + hlen) % 64, 0);
    cr_assert_eq(buf[10 + hlen - 1], '\n');

    cr_assert_eq(tq_bvecs_write(path("a.bvecs"), &b, &err), TQ_OK, "%s", err.msg);
    cr_assert_eq(tq_vectors_read(path("a.bvecs"), 0, &got, &err), TQ_OK, "%s", err.msg);
    cr_assert(got.n == 9 && got.d == 5 && !memcmp(got.data, b.data, 9 * 5 * 4));
    tq_matrix_free(&got);
    cr_assert_eq(tq_bvecs_write(path("bad.bvecs"), &m, &err), TQ_EVALUE, "non-integers cannot be bytes");
    tq_matrix_free(&m);
    tq_matrix_free(&b);
}

Test(datasets, ivecs_round_trip)
{
    int32_t v[6] = {0, -1, 5, 7, 2147483647, 3};
    tq_imatrix m = {3, 2, v}, got;
    tq_error err;
    cr_assert_eq(tq_ivecs_write(path("g.ivecs"), &m, &err), TQ_OK);
    cr_assert_eq(tq_ivecs_read(path("g.ivecs"), 0, &got, &err), TQ_OK);
    cr_assert(got.n == 3 && got.d == 2 && !memcmp(got.data, v, sizeof(v)));
    tq_imatrix_free(&got);
}

Test(datasets, corrupt_vecs_files_are_rejected_with_detail)
{
    tq_matrix m = sample(4, 3, false), got;
    tq_error err;
    cr_assert_eq(tq_fvecs_write(path("c.fvecs"), &m, &err), TQ_OK);
    uint8_t buf[256];
    size_t n = read_bytes(path("c.fvecs"), buf, sizeof(buf));
    cr_assert_eq(n, 4 * 16);

    write_bytes(path("trunc.fvecs"), buf, n - 3);
    cr_assert_eq(tq_fvecs_read(path("trunc.fvecs"), 0, &got, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "truncated"), "%s", err.msg);
    cr_assert_null(got.data, "nothing returned on error");

    uint8_t bad[256];
    memcpy(bad, buf, n);
    int32_t other = 2;
    memcpy(bad + 2 * 16, &other, 4); /* record 2 claims d=2 */
    write_bytes(path("dims.fvecs"), bad, n);
    cr_assert_eq(tq_fvecs_read(path("dims.fvecs"), 0, &got, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "record 2"), "%s", err.msg);

    memcpy(bad, buf, n);
    float nan = NAN;
    memcpy(bad + 16 + 4 + 2 * 4, &nan, 4); /* record 1, coordinate 2 */
    write_bytes(path("nan.fvecs"), bad, n);
    cr_assert_eq(tq_fvecs_read(path("nan.fvecs"), 0, &got, &err), TQ_EVALUE);
    cr_assert(strstr(err.msg, "record 1") && strstr(err.msg, "coordinate 2"), "%s", err.msg);

    int32_t neg = -5;
    memcpy(bad, buf, n);
    memcpy(bad, &neg, 4);
    write_bytes(path("neg.fvecs"), bad, n);
    cr_assert_eq(tq_fvecs_read(path("neg.fvecs"), 0, &got, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "-5"), "%s", err.msg);

    write_bytes(path("empty.fvecs"), buf, 0);
    cr_assert_eq(tq_fvecs_read(path("empty.fvecs"), 0, &got, &err), TQ_ECORRUPT);
    cr_assert_eq(tq_fvecs_read(path("missing.fvecs"), 0, &got, &err), TQ_EIO);
    cr_assert_neq(err.sys_errno, 0);
    cr_assert_eq(tq_vectors_read(path("x.txt"), 0, &got, &err), TQ_EARG);
    tq_matrix_free(&m);
}

static void write_npy(const char *p, int version, const char *dict, const void *data, size_t nbytes)
{
    uint8_t buf[4096];
    size_t pre = version == 1 ? 10 : 12, len = strlen(dict);
    size_t hlen = (pre + len + 1 + 63) / 64 * 64 - pre;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)version;
    buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + pre, dict, len);
    memset(buf + pre + len, ' ', hlen - len - 1);
    buf[pre + hlen - 1] = '\n';
    memcpy(buf + pre + hlen, data, nbytes);
    write_bytes(p, buf, pre + hlen + nbytes);
}

Test(datasets, npy_variants_and_errors)
{
    double f8[6] = {1.5, -2.0, 3.25, 0.0, 1e-3, 7.0};
    tq_matrix got;
    tq_error err;
    write_npy(path("f8.npy"), 2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", f8, sizeof(f8));
    cr_assert_eq(tq_npy_read(path("f8.npy"), 0, &got, &err), TQ_OK, "%s", err.msg);
    cr_assert(got.n == 2 && got.d == 3 && got.data[2] == 3.25f && got.data[4] == (float)1e-3);
    tq_matrix_free(&got);

    write_npy(path("fo.npy"), 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", f8, 24);
    cr_assert_eq(tq_npy_read(path("fo.npy"), 0, &got, &err), TQ_EUNSUPPORTED);
    write_npy(path("i4.npy"), 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", f8, 24);
    cr_assert_eq(tq_npy_read(path("i4.npy"), 0, &got, &err), TQ_EUNSUPPORTED);
    cr_assert(strstr(err.msg, "<i4"), "%s", err.msg);
    write_npy(path("1d.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", f8, 24);
    cr_assert_eq(tq_npy_read(path("1d.npy"), 0, &got, &err), TQ_EUNSUPPORTED);
    write_npy(path("short.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }", f8, 24);
    cr_assert_eq(tq_npy_read(path("short.npy"), 0, &got, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "promises"), "%s", err.msg);
    double big[1] = {1e300};
    write_npy(path("big.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }", big, 8);
    cr_assert_eq(tq_npy_read(path("big.npy"), 0, &got, &err), TQ_EVALUE);
    write_bytes(path("magic.npy"), "NOTNUMPY..........", 18);
    cr_assert_eq(tq_npy_read(path("magic.npy"), 0, &got, &err), TQ_ECORRUPT);
}

static void write_idx(const char *p, bool gz, uint32_t n, uint32_t rows, uint32_t cols, size_t keep)
{
    uint8_t buf[1024];
    uint32_t hdr[4] = {0x00000803, n, rows, cols};
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 4; b++)
            buf[i * 4 + b] = (uint8_t)(hdr[i] >> (24 - 8 * b));
    size_t total = 16 + (size_t)n * rows * cols;
    for (size_t i = 16; i < total; i++)
        buf[i] = (uint8_t)(i * 7);
    if (keep && keep < total)
        total = keep;
    if (gz) {
        gzFile g = gzopen(p, "wb");
        cr_assert_not_null(g);
        cr_assert_eq(gzwrite(g, buf, (unsigned)total), (int)total);
        gzclose(g);
    } else {
        write_bytes(p, buf, total);
    }
}

Test(datasets, idx_images_plain_and_gzip)
{
    tq_matrix got;
    tq_error err;
    for (int gz = 0; gz < 2; gz++) {
        const char *p = path(gz ? "img-idx3-ubyte.gz" : "img-idx3-ubyte");
        write_idx(p, gz, 3, 4, 5, 0);
        cr_assert_eq(tq_vectors_read(p, 0, &got, &err), TQ_OK, "%s", err.msg);
        cr_assert(got.n == 3 && got.d == 20);
        cr_assert_eq(got.data[21], (float)(uint8_t)((16 + 21) * 7));
        tq_matrix_free(&got);
    }
    write_idx(path("t-idx3-ubyte"), false, 3, 4, 5, 16 + 30);
    cr_assert_eq(tq_idx_read(path("t-idx3-ubyte"), 0, &got, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "image 1"), "%s", err.msg);
    write_bytes(path("m-idx3-ubyte"), "\0\0\x08\x01\0\0\0\0", 8);
    cr_assert_eq(tq_idx_read(path("m-idx3-ubyte"), 0, &got, &err), TQ_ECORRUPT);
}

static int naive_cmp_metric;
static const double *naive_scores;

static int naive_cmp(const void *a, const void *b)
{
    int ia = *(const int *)a, ib = *(const int *)b;
    double sa = naive_scores[ia], sb = naive_scores[ib];
    if (sa != sb)
        return naive_cmp_metric == TQ_METRIC_L2 ? (sa < sb ? -1 : 1) : (sa > sb ? -1 : 1);
    return ia - ib;
}

Test(datasets, groundtruth_matches_naive_search)
{
    const size_t nb = 300, nq = 37, d = 19, k = 10;
    tq_matrix base = sample(nb, d, false), queries = sample(nq, d, true);
    /* Duplicates make exact ties: the lower row must come first. */
    memcpy(base.data + 200 * d, base.data + 100 * d, d * sizeof(float));
    memcpy(queries.data, base.data + 100 * d, d * sizeof(float));
    int32_t *ids = tq_malloc(nq * k * sizeof(int32_t)), *ids1 = tq_malloc(nq * k * sizeof(int32_t));
    double *scores = tq_malloc(nb * sizeof(double));
    int *order = tq_malloc(nb * sizeof(int));
    for (int metric = 1; metric <= 3; metric++) {
        tq_error err;
        cr_assert_eq(tq_groundtruth(&base, &queries, (tq_metric)metric, k, 2, ids, NULL, NULL, NULL, &err), TQ_OK);
        cr_assert_eq(tq_groundtruth(&base, &queries, (tq_metric)metric, k, 1, ids1, NULL, NULL, NULL, &err), TQ_OK);
        cr_assert(!memcmp(ids, ids1, nq * k * sizeof(int32_t)), "thread count changed the answer");
        for (size_t q = 0; q < nq; q++) {
            const float *qv = queries.data + q * d;
            double qn = 0;
            for (size_t j = 0; j < d; j++)
                qn += (double)qv[j] * qv[j];
            for (size_t i = 0; i < nb; i++) {
                const float *x = base.data + i * d;
                double dot = 0, l2 = 0, xn = 0;
                for (size_t j = 0; j < d; j++) {
                    dot += (double)qv[j] * x[j];
                    l2 += ((double)qv[j] - x[j]) * ((double)qv[j] - x[j]);
                    xn += (double)x[j] * x[j];
                }
                scores[i] = metric == TQ_METRIC_L2 ? l2 : metric == TQ_METRIC_IP ? dot : dot / sqrt(qn * xn);
                order[i] = (int)i;
            }
            naive_cmp_metric = metric;
            naive_scores = scores;
            qsort(order, nb, sizeof(int), naive_cmp);
            for (size_t i = 0; i < k; i++)
                cr_assert_eq(ids[q * k + i], order[i], "metric %d query %zu rank %zu: %d, naive %d", metric, q, i,
                             ids[q * k + i], order[i]);
        }
        if (metric == TQ_METRIC_L2) {
            cr_assert_eq(ids[0], 100, "exact duplicate first");
            cr_assert_eq(ids[1], 200, "its tie next");
        }
    }
    tq_matrix small = sample(3, d, false);
    tq_error err;
    cr_assert_eq(tq_groundtruth(&small, &queries, TQ_METRIC_L2, 5, 1, ids, NULL, NULL, NULL, &err), TQ_OK);
    cr_assert(ids[3] == -1 && ids[4] == -1, "rows past the base are -1");
    tq_matrix wrong = sample(3, d + 1, false);
    cr_assert_eq(tq_groundtruth(&wrong, &queries, TQ_METRIC_L2, 5, 1, ids, NULL, NULL, NULL, &err), TQ_EDIM);
    tq_matrix_free(&small);
    tq_matrix_free(&wrong);
    tq_matrix_free(&base);
    tq_matrix_free(&queries);
    tq_free(ids);
    tq_free(ids1);
    tq_free(scores);
    tq_free(order);
}

/* ------------------------------------------------- ann-benchmarks HDF5 */

#ifdef TQ_HAVE_HDF5
/* A file laid out as ann-benchmarks writes it: train/test float32,
 * neighbors int32, "distance" a variable-length string attribute. */
static void write_hdf5(const char *p, const tq_matrix *train, const tq_matrix *test, const int32_t *nbrs,
                       size_t nk, const char *distance, hid_t float_type)
{
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0);
    const struct {
        const char *name;
        hsize_t dims[2];
        hid_t file_type, mem_type;
        const void *data;
    } sets[] = {
        {"train", {train->n, train->d}, float_type, H5T_NATIVE_FLOAT, train->data},
        {"test", {test->n, test->d}, float_type, H5T_NATIVE_FLOAT, test->data},
        {"neighbors", {test->n, nk}, H5T_STD_I32LE, H5T_NATIVE_INT32, nbrs},
    };
    for (size_t i = 0; i < 3; i++) {
        hid_t sp = H5Screate_simple(2, sets[i].dims, NULL);
        hid_t ds = H5Dcreate2(f, sets[i].name, sets[i].file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        cr_assert(ds >= 0);
        cr_assert(H5Dwrite(ds, sets[i].mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, sets[i].data) >= 0);
        H5Dclose(ds);
        H5Sclose(sp);
    }
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "distance", st, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Awrite(a, st, &distance) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(st);
    H5Fclose(f);
}
#endif

Test(datasets, hdf5_ann_benchmarks_file)
{
    if (!tq_hdf5_available())
        cr_skip_test("built without libhdf5");
#ifdef TQ_HAVE_HDF5
    tq_matrix train = sample(50, 12, false), test = sample(7, 12, false);
    int32_t nbrs[7 * 5];
    for (int i = 0; i < 7 * 5; i++)
        nbrs[i] = (i * 11) % 50;
    /* stored as float64 too: the reader converts to float32 */
    for (int wide = 0; wide < 2; wide++) {
        const char *p = path(wide ? "wide.hdf5" : "ann.hdf5");
        write_hdf5(p, &train, &test, nbrs, 5, "angular", wide ? H5T_IEEE_F64LE : H5T_IEEE_F32LE);
        tq_matrix m;
        tq_imatrix ids;
        tq_error err;
        cr_assert_eq(tq_vectors_read(p, 0, &m, &err), 0, "%s", err.msg);
        cr_assert_eq(m.n, 50);
        cr_assert_eq(m.d, 12);
        cr_assert_arr_eq(m.data, train.data, 50 * 12 * sizeof(float));
        tq_matrix_free(&m);
        char spec[300];
        snprintf(spec, sizeof(spec), "%s:test", p);
        cr_assert_eq(tq_vectors_read(spec, 3, &m, &err), 0, "%s", err.msg);
        cr_assert_eq(m.n, 3, "max_rows reads the first rows only");
        cr_assert_arr_eq(m.data, test.data, 3 * 12 * sizeof(float));
        tq_matrix_free(&m);
        cr_assert_eq(tq_hdf5_read_ids(p, "neighbors", 0, &ids, &err), 0, "%s", err.msg);
        cr_assert_eq(ids.n, 7);
        cr_assert_eq(ids.d, 5);
        cr_assert_arr_eq(ids.data, nbrs, sizeof(nbrs));
        tq_imatrix_free(&ids);
        char distance[32];
        cr_assert_eq(tq_hdf5_distance(p, distance, sizeof(distance), &err), 0, "%s", err.msg);
        cr_assert_str_eq(distance, "angular");
    }
    tq_matrix_free(&train);
    tq_matrix_free(&test);
#endif
}

Test(datasets, corrupt_hdf5_files_are_rejected_with_detail)
{
    if (!tq_hdf5_available())
        cr_skip_test("built without libhdf5");
#ifdef TQ_HAVE_HDF5
    tq_matrix train = sample(40, 8, false), test = sample(4, 8, false);
    int32_t nbrs[4 * 3] = {0};
    char good[256]; /* path() reuses its buffers */
    snprintf(good, sizeof(good), "%s", path("good.hdf5"));
    write_hdf5(good, &train, &test, nbrs, 3, "euclidean", H5T_IEEE_F32LE);
    static char bytes[1 << 16];
    size_t n = read_bytes(good, bytes, sizeof(bytes));
    cr_assert(n > 512 && n < sizeof(bytes));
    tq_matrix m;
    tq_imatrix ids;
    tq_error err;

    cr_assert_eq(tq_hdf5_read(path("absent.hdf5"), "train", 0, &m, &err), TQ_EIO);
    cr_assert_eq(tq_hdf5_read(good, "nothing", 0, &m, &err), TQ_ENOTFOUND);
    cr_assert(strstr(err.msg, "no dataset 'nothing'"), "%s", err.msg);
    cr_assert_eq(tq_hdf5_read(good, "neighbors", 0, &m, &err), TQ_EUNSUPPORTED, "ids are not vectors");
    cr_assert(strstr(err.msg, "holds integers"), "%s", err.msg);
    cr_assert_eq(tq_hdf5_read_ids(good, "train", 0, &ids, &err), TQ_EUNSUPPORTED);
    cr_assert_null(m.data);

    /* the signature destroyed */
    bytes[0] ^= 0x5a;
    write_bytes(path("nosig.hdf5"), bytes, n);
    cr_assert_eq(tq_hdf5_read(path("nosig.hdf5"), "train", 0, &m, &err), TQ_ECORRUPT);
    cr_assert(strstr(err.msg, "not a readable HDF5 file"), "%s", err.msg);
    bytes[0] ^= 0x5a;
    /* cut short at several points: an error every time, never a crash */
    for (size_t cut = 64; cut < n; cut += n / 7) {
        write_bytes(path("cut.hdf5"), bytes, cut);
        cr_assert_neq(tq_hdf5_read(path("cut.hdf5"), "train", 0, &m, &err), 0, "cut at %zu of %zu", cut, n);
        cr_assert_null(m.data);
    }
    /* a NaN in the data */
    tq_matrix bad = sample(40, 8, false);
    bad.data[8 * 17 + 3] = NAN;
    write_hdf5(path("nan.hdf5"), &bad, &test, nbrs, 3, "euclidean", H5T_IEEE_F32LE);
    cr_assert_eq(tq_hdf5_read(path("nan.hdf5"), "train", 0, &m, &err), TQ_EVALUE);
    cr_assert(strstr(err.msg, "row 17"), "%s", err.msg);
    /* a 1-D dataset */
    hid_t f = H5Fopen(good, H5F_ACC_RDWR, H5P_DEFAULT);
    hsize_t dim = 5;
    hid_t sp = H5Screate_simple(1, &dim, NULL);
    hid_t ds = H5Dcreate2(f, "flat", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, train.data);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);
    cr_assert_eq(tq_hdf5_read(good, "flat", 0, &m, &err), TQ_EUNSUPPORTED);
    cr_assert(strstr(err.msg, "not a 2-D array"), "%s", err.msg);
    tq_matrix_free(&bad);
    tq_matrix_free(&train);
    tq_matrix_free(&test);
#endif
}
