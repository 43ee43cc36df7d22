/*
 * The vector file readers: the first byte picks the format (fvecs, ivecs,
 * bvecs, npy, IDX, gzip'd IDX), the rest is the file. Lengths and
 * dimensions in headers must be checked against the file, never believed.
 */
#include "fuzz_common.h"
#include "tq_datasets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_make_dir("datasets");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const names[] = {"x.fvecs", "x.ivecs", "x.bvecs", "x.npy", "x-idx3-ubyte", "x-idx3-ubyte.gz"};
    const char *name = names[data[0] % 6];
    char path[512];
    fuzz_write(name, data + 1, size - 1, path, sizeof(path));
    tq_error err;
    if (data[0] % 6 == 1) {
        tq_imatrix m;
        if (tq_ivecs_read(path, 64, &m, &err) == TQ_OK)
            tq_imatrix_free(&m);
    } else {
        tq_matrix m;
        if (tq_vectors_read(path, 64, &m, &err) == TQ_OK)
            tq_matrix_free(&m);
    }
    return 0;
}
