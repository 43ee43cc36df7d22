/*
 * tqvec: the command-line front end. Dispatches to one subcommand per file;
 * the engine itself is in the library.
 */
#include "tq_tools.h"
#include "tq_revision.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: tqvec COMMAND [options]   (tqvec COMMAND --help for details)\n"
            "  build     add a vector file to a stored collection (created if new)\n"
            "  query     search a stored collection with a file of query vectors\n"
            "  info      a stored collection's settings and counts\n"
            "  compact   seal the log and rewrite segments with many deletions\n"
            "  verify    checksum every byte of a stored collection\n"
            "  eval      the evaluation harness: recall and speed over a sweep of settings and targets\n"
            "  report    plots and pages from stored eval records (compare runs)\n"
            "  serve     run the daemon tqvecd (same options)\n"
            "  load      add a vector file to a running daemon's vector set (VADD)\n"
            "  bench     micro-benchmarks (encode, scan, store, filter) and end-to-end VSIM (server)\n"
            "  gt        exact ground truth (ivecs) for base and query vectors\n"
            "  convert   convert vector files (fvecs, bvecs, npy, IDX)\n"
            "  synth     a seeded synthetic dataset (mixture of clusters) for scaling curves\n"
            "  version   print the version, git revision and SIMD level (also --version)\n"
            "Environment: TQVEC_SIMD=scalar|avx2|avx512 pins the kernel level.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    const char *cmd = argv[1];
    argc--;
    argv++;
    if (!strcmp(cmd, "build"))
        return cmd_build(argc, argv);
    if (!strcmp(cmd, "query"))
        return cmd_query(argc, argv);
    if (!strcmp(cmd, "info"))
        return cmd_info(argc, argv);
    if (!strcmp(cmd, "compact"))
        return cmd_compact(argc, argv);
    if (!strcmp(cmd, "verify"))
        return cmd_verify(argc, argv);
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc, argv);
    if (!strcmp(cmd, "load"))
        return cmd_load(argc, argv);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(argc, argv);
    if (!strcmp(cmd, "report"))
        return cmd_report(argc, argv);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc, argv);
    if (!strcmp(cmd, "gt"))
        return cmd_gt(argc, argv);
    if (!strcmp(cmd, "convert"))
        return cmd_convert(argc, argv);
    if (!strcmp(cmd, "synth"))
        return cmd_synth(argc, argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("tqvec %s (revision %s, simd %s)\n", tqvec_version(), TQ_REVISION, tqvec_simd_level());
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return tool_fail(cmd, "unknown command");
}
