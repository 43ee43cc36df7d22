/*
 * The on-disk loaders, fed damaged files: the first byte picks the kind
 * (write-ahead log replay, segment open and verify, manifest read,
 * tombstone read), the rest is the file. Every check must hold before a
 * byte is trusted, so no input may crash, hang or read out of bounds.
 */
#include "fuzz_common.h"
#include "store.h"

static tq_codec codec;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_make_dir("store");
    /* The settings of the checked-in seed files (tqvec build --dim 8). */
    tq_config cfg = {.d = 8, .metric = TQ_METRIC_COSINE, .bits = 4, .variant = TQ_VARIANT_MSE,
                     .correction = TQ_CORRECTION_IP, .seed = 0x7475726271756e74ull, .refine = TQ_REFINE_NONE,
                     .center = TQ_CENTER_NONE};
    if (tq_codec_init(&codec, &cfg, NULL))
        abort();
    return 0;
}

static int visit(void *ctx, uint16_t type, uint64_t lsn, const uint8_t *payload, uint32_t len, tq_error *err)
{
    (void)ctx;
    (void)type;
    (void)lsn;
    (void)err;
    /* Touch every byte the replay hands out. */
    volatile uint8_t sum = 0;
    for (uint32_t i = 0; i < len; i++)
        sum ^= payload[i];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char path[512];
    tq_error err;
    switch (data[0] % 4) {
    case 0: {
        fuzz_write("wal.log", data + 1, size - 1, path, sizeof(path));
        tq_wal_replay_info info;
        tq_wal_replay(path, visit, NULL, false, &info, &err);
        break;
    }
    case 1: {
        fuzz_write("seg.tqs", data + 1, size - 1, path, sizeof(path));
        tq_segment_file s;
        if (tq_segment_open(path, &codec, &s, &err) == TQ_OK) {
            tq_segment_verify(&s, &err);
            tq_segment_close(&s);
        }
        break;
    }
    case 2: {
        fuzz_write("MANIFEST", data + 1, size - 1, path, sizeof(path));
        tq_manifest m;
        if (tq_manifest_read(fuzz_dir, &m, &err) == TQ_OK)
            tq_manifest_free(&m);
        break;
    }
    default: {
        fuzz_write("t.del", data + 1, size - 1, path, sizeof(path));
        uint32_t bits[64];
        uint64_t count;
        tq_tombstones_read(path, 2000, bits, &count, &err);
        break;
    }
    }
    return 0;
}
