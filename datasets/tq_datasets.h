/*
 * datasets: reading and writing vector files, and exact ground truth.
 *
 * Formats
 *   fvecs  per record: int32 d (little-endian), then d float32
 *   ivecs  per record: int32 d, then d int32
 *   bvecs  per record: int32 d, then d uint8 (read as floats)
 *   npy    NumPy 1.0/2.0/3.0 header, C order, 2-D, '<f4' or '<f8' (f8 is
 *          narrowed to float32; a value that overflows float is an error)
 *   idx    MNIST-style IDX3 ubyte images (optionally gzip-compressed), each
 *          image flattened to one row of rows*cols floats
 *   hdf5   ann-benchmarks files (train/test/neighbors/distances), through
 *          libhdf5 when the build has it; "FILE.hdf5:NAME" names a dataset
 * Readers check everything a file could get wrong and name it in the error:
 * sizes that are not a whole number of records, records whose dimension
 * differs from the first, headers that lie, NaN/Inf values. A reader either
 * returns the whole matrix or nothing.
 */
#ifndef TQ_DATASETS_H
#define TQ_DATASETS_H

#include "tq_index.h"

typedef struct tq_matrix {
    size_t n, d;
    float *data; /* n*d, row-major, from tq_malloc */
} tq_matrix;

typedef struct tq_imatrix {
    size_t n, d;
    int32_t *data;
} tq_imatrix;

void tq_matrix_free(tq_matrix *m);
void tq_imatrix_free(tq_imatrix *m);

/* max_rows = 0 reads every record. */
int tq_fvecs_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err);
int tq_bvecs_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err);
int tq_ivecs_read(const char *path, size_t max_rows, tq_imatrix *out, tq_error *err);
int tq_npy_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err);
int tq_idx_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err);
/* ann-benchmarks HDF5 (hdf5.c). Without libhdf5 in the build every call
 * fails with TQ_EUNSUPPORTED and tq_hdf5_available() is false. */
bool tq_hdf5_available(void);
bool tq_hdf5_is_path(const char *path); /* ends in .hdf5 or .h5 */
/* Splits "FILE.hdf5:NAME" (or "FILE.hdf5") into the file, copied to file,
 * and returns NAME ("" when none is named); NULL when spec is no HDF5
 * path (file then gets spec whole). */
const char *tq_hdf5_spec(const char *spec, char *file, size_t cap);
/* A 2-D float dataset (e.g. "train", "test"), first max_rows rows (0: all). */
int tq_hdf5_read(const char *path, const char *dataset, size_t max_rows, tq_matrix *out, tq_error *err);
/* A 2-D integer dataset (e.g. "neighbors") as int32. */
int tq_hdf5_read_ids(const char *path, const char *dataset, size_t max_rows, tq_imatrix *out, tq_error *err);
/* The file's "distance" attribute ("angular", "euclidean", ...). */
int tq_hdf5_distance(const char *path, char *out, size_t cap, tq_error *err);

/* Chooses the reader by file name: .fvecs, .bvecs, .npy, .idx/.idx3-ubyte(.gz),
 * .hdf5/.h5 (dataset "train"), or "FILE.hdf5:NAME" (dataset NAME). */
int tq_vectors_read(const char *path, size_t max_rows, tq_matrix *out, tq_error *err);
/* Neighbour ids by file name: .ivecs, FILE.hdf5 (dataset "neighbors") or
 * FILE.hdf5:NAME. */
int tq_ids_read(const char *path, size_t max_rows, tq_imatrix *out, tq_error *err);

int tq_fvecs_write(const char *path, const tq_matrix *m, tq_error *err);
int tq_ivecs_write(const char *path, const tq_imatrix *m, tq_error *err);
/* Every value must be an integer in 0..255. */
int tq_bvecs_write(const char *path, const tq_matrix *m, tq_error *err);
int tq_npy_write(const char *path, const tq_matrix *m, tq_error *err);

/* Exact top-k of every query against base under metric, nearest first,
 * ties to the lower row, computed in double precision on `threads` threads
 * (0 = one per online CPU). ids gets queries->n * k rows (-1 past the end
 * when base has fewer than k rows); dist, if not NULL, the matching
 * distances (l2: squared distance; ip/cosine: similarity). progress, if not
 * NULL, is called now and then with the number of queries done. */
int tq_groundtruth(const tq_matrix *base, const tq_matrix *queries, tq_metric metric, size_t k,
                   unsigned threads, int32_t *ids, double *dist,
                   void (*progress)(void *ctx, size_t done), void *ctx, tq_error *err);

#endif
