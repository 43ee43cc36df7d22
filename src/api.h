/*
 * Helpers every public entry point shares (defined with the index API):
 * error export, argument checks and the one place public defaults apply.
 */
#ifndef TQ_API_H
#define TQ_API_H

#include "tqvec.h"
#include "tq_index.h"

/* Copy internal error detail to the caller's struct; returns the code. */
int export_error(const tq_error *in, tqvec_error *out);
int api_error(tqvec_error *out, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool all_zero(const uint32_t *v, size_t n);
/* Public search parameters to internal options, defaults applied. */
int search_opts(const tqvec_search_params *params, tq_search_opts *opts, tqvec_error *err);
/* Public option values (0 = default) to an internal config. */
tq_config config_with_defaults(uint32_t dim, int metric, int bits, int variant, int correction, uint64_t seed,
                               int refine, int center, int codebook);
/* The tqvec_codebook a configuration uses. */
int public_codebook(const tq_config *cfg);

#endif
