/*
 * A fresh temporary directory per test (Criterion runs each test in its own
 * process, so one static path serves): TestSuite(x, .init = make_dir,
 * .fini = remove_dir), then build paths under `dir`.
 */
#ifndef TQ_TEST_TEMP_DIR_H
#define TQ_TEST_TEMP_DIR_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/tqvec-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

#endif
