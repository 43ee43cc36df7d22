/*
 * The daemon's front door: bytes as a client would send them, parsed into
 * requests and run through the command dispatcher against a real keyspace
 * (a scratch directory), as a worker would. Replies are discarded; a
 * crash, a hang or a sanitizer report is the failure.
 */
#include "daemon.h"
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_make_dir("resp");
    /* Small limits keep one input's work bounded (small segments also seal
     * often, so sealing is fuzzed too); everything else as run. */
    char *args[] = {"tqvecd", "--dir", fuzz_dir, "--appendfsync", "no", "--loglevel", "warning",
                    "--max-request-bytes", "65536", "--max-args", "2048", "--max-collections", "8",
                    "--segment-rows", "64", NULL};
    if (tqd_config_parse(&tqd.cfg, 15, args) || tqd_keyspace_open(&tqd.cfg) ||
        tqd_txlog_open(tqd.cfg.dir, tqd.cfg.appendfsync))
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The parser unescapes inline quotes in place: give it its own copy. */
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    tqd_request run[TQD_MAX_RUN] = {0};
    tqd_buf out = {0};
    tqd_client cl = {.id = 1, .proto = 2, .authed = true};
    size_t pos = 0;
    while (pos < size && !cl.close_after_reply) {
        if (tqd_parse(buf + pos, size - pos, tqd.cfg.max_request_bytes, tqd.cfg.max_args, &run[0]) != TQD_PARSE_OK)
            break;
        pos += run[0].consumed;
        /* BGSAVE would leave a thread running past this input. */
        if (!run[0].argc || tqd_arg_is(&run[0].argv[0], "BGSAVE"))
            continue;
        /* As a worker does: pipelined runs (VSIMs) answered together. */
        size_t more = tqd_parse_run(buf + pos, size - pos, tqd.cfg.max_request_bytes, tqd.cfg.max_args, run,
                                    TQD_MAX_RUN);
        tqd_reply r = {.out = &out, .proto = cl.proto};
        size_t done = tqd_execute_run(&cl, run, 1 + more, &r);
        for (size_t i = 1; i < done; i++)
            pos += run[i].consumed;
        out.len = 0;
    }
    tqd_buf_free(&out);
    tqd_client_release(&cl);
    for (size_t i = 0; i < TQD_MAX_RUN; i++)
        free(run[i].argv);
    free(buf);
    return 0;
}
