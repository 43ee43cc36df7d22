/*
 * tqvecd's entry point; the daemon itself is a library so that
 * `tqvec serve` runs the same code.
 */
#include "daemon.h"

int main(int argc, char **argv)
{
    return tqd_main(argc, argv);
}
