/*
 * tools: a minimal blocking RESP2 client for the command line's talks with
 * tqvecd (load, bench server, eval --server). Commands go out as multibulk
 * with binary FP32 blobs, many per write when pipelined; a reply is read
 * into a flat list of its scalar parts (nesting flattened), which is all
 * VADD, VSIM, VCARD and INFO need.
 */
#ifndef TQ_RESP_CLIENT_H
#define TQ_RESP_CLIENT_H

#include "daemon.h"
#include "tq_tools.h"

typedef struct resp_client {
    int fd;
    char *in;
    size_t in_len, in_cap, in_pos;
    tqd_buf out;
    /* the last reply, flattened */
    size_t nparts;
    char **part;
    size_t *part_len, parts_cap;
    bool error;               /* the reply (or a nested part) was an error */
} resp_client;

/* HOST:PORT (default port 6380) or a /unix/socket path; why gets the reason. */
int resp_connect(const char *where, resp_client *c, char *why, size_t cap);
void resp_close(resp_client *c);
/* Queue one command (args of given lengths) for the next flush. */
bool resp_queue(resp_client *c, size_t argc, const char *const *argv, const size_t *lens);
int resp_flush(resp_client *c);
/* Read one reply into c->part; -1 if the connection failed. */
int resp_reply(resp_client *c);
/* One command of text arguments, one reply: -1 when the connection fails
 * or the reply is an error (c->part[0], when there is one, says which). */
int resp_call(resp_client *c, size_t argc, const char *const *argv);
/* The number named `name` in the last reply: a name/value pair of a flat
 * array or map (VINFO), or a "name:value" line of a bulk string (INFO). */
bool resp_reply_number(const resp_client *c, const char *name, long long *out);
/* Every row of x as VADD key FP32 <row> <row number> [quant], `pipeline`
 * commands per write; -1 with why set on the first failure. */
int resp_add_rows(resp_client *c, const char *key, const tq_matrix *x, size_t pipeline, tool_progress *prog,
                  char *why, size_t cap, const char *quant);

#endif
