/* tqvec.h must compile on its own (no other include before it) and be
 * usable from C11 with every warning turned into an error. */
#include "tqvec.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", TQVEC_VERSION_MAJOR, TQVEC_VERSION_MINOR, TQVEC_VERSION_PATCH);
    if (strcmp(tqvec_version(), want) != 0 || tqvec_version_number() != TQVEC_VERSION_NUMBER) {
        fprintf(stderr, "header says %s, library says %s\n", want, tqvec_version());
        return 1;
    }
    tqvec_index_options opts = {.dim = 4};
    tqvec_index *ix = NULL;
    if (tqvec_index_create(&opts, &ix, NULL) != TQVEC_OK)
        return 1;
    tqvec_index_free(ix);
    return 0;
}
