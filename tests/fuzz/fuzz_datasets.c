/*
 * The vector file readers: the first byte picks the format (fvecs, ivecs,
 * bvecs, npy, IDX, gzip'd IDX), the rest is the file. Lengths and
 * dimensions in headers must be checked against the file, never believed.
 * Byte value 6 picks the evaluation records' JSON-lines parser instead
 * (what `tqvec report` reads), on the rest as one line.
 */
#include "fuzz_common.h"
#include "tq_datasets.h"
#include "tq_tools.h"

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
    if (data[0] % 7 == 6) {
        static char line[1 << 16];
        size_t n = size - 1 < sizeof(line) - 1 ? size - 1 : sizeof(line) - 1;
        memcpy(line, data + 1, n);
        line[n] = 0;
        tool_json_field fields[64];
        size_t nfields;
        char why[128];
        if (tool_json_parse_object(line, fields, 64, &nfields, why, sizeof(why)) == 0)
            for (size_t i = 0; i < nfields; i++) /* every string must be terminated in the buffer */
                if (fields[i].str && strlen(fields[i].str) > n)
                    __builtin_trap();
        return 0;
    }
    static const char *const names[] = {"x.fvecs", "x.ivecs", "x.bvecs", "x.npy", "x-idx3-ubyte", "x-idx3-ubyte.gz"};
    const char *name = names[data[0] % 7];
    char path[512];
    fuzz_write(name, data + 1, size - 1, path, sizeof(path));
    tq_error err;
    if (data[0] % 7 == 1) {
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
