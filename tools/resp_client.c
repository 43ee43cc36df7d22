/*
 * The RESP client declared in resp_client.h: blocking sockets, one buffer
 * each way, replies parsed recursively into flat parts.
 */
#include "resp_client.h"
#include "tq_tools.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>



int resp_connect(const char *where, resp_client *c, char *why, size_t cap)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    if (where[0] == '/') {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", where);
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a))) {
            snprintf(why, cap, "cannot connect to %s: %s", where, strerror(errno));
            return -1;
        }
    } else {
        char host[256];
        snprintf(host, sizeof(host), "%s", where);
        char *colon = strrchr(host, ':');
        const char *port = colon ? colon + 1 : "6380";
        if (colon)
            *colon = 0;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
        int rc = getaddrinfo(host, port, &hints, &res);
        if (rc) {
            snprintf(why, cap, "cannot resolve %s: %s", where, gai_strerror(rc));
            return -1;
        }
        for (struct addrinfo *a = res; a && c->fd < 0; a = a->ai_next) {
            c->fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (c->fd >= 0 && connect(c->fd, a->ai_addr, a->ai_addrlen)) {
                close(c->fd);
                c->fd = -1;
            }
        }
        freeaddrinfo(res);
        if (c->fd < 0) {
            snprintf(why, cap, "cannot connect to %s: %s", where, strerror(errno));
            return -1;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return 0;
}

void resp_close(resp_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    tq_free(c->in);
    tqd_buf_free(&c->out);
    for (size_t i = 0; i < c->parts_cap; i++)
        tq_free(c->part[i]);
    tq_free(c->part);
    tq_free(c->part_len);
}

/* Queue one command (args of given lengths) for the next flush. */
bool resp_queue(resp_client *c, size_t argc, const char *const *argv, const size_t *lens)
{
    size_t need = 32;
    for (size_t i = 0; i < argc; i++)
        need += lens[i] + 32;
    if (!tqd_buf_reserve(&c->out, need))
        return false;
    char *p = c->out.p + c->out.len;
    p += sprintf(p, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++) {
        p += sprintf(p, "$%zu\r\n", lens[i]);
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    c->out.len = (size_t)(p - c->out.p);
    return true;
}

int resp_flush(resp_client *c)
{
    size_t at = 0;
    while (at < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + at, c->out.len - at, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        at += (size_t)n;
    }
    c->out.len = 0;
    return 0;
}

/* Receive more input with room for at least `room` unread bytes (the
 * unread part moved to the front first); false when the connection ends. */
static bool client_fill(resp_client *c, size_t room)
{
    if (c->in_cap - c->in_pos < room) {
        if (c->in_len > c->in_pos)
            memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
        c->in_len -= c->in_pos;
        c->in_pos = 0;
        if (c->in_cap < room + 65536) {
            char *p = tq_realloc(c->in, room + 65536);
            if (!p)
                return false;
            c->in = p;
            c->in_cap = room + 65536;
        }
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        c->in_len += (size_t)n;
        return true;
    }
}

/* A line ending in \r\n from the input, reading as needed. */
static char *read_line(resp_client *c, size_t *len)
{
    for (;;) {
        char *start = c->in + c->in_pos;
        char *nl = c->in_len > c->in_pos ? memchr(start, '\n', c->in_len - c->in_pos) : NULL;
        if (nl && nl > start && nl[-1] == '\r') {
            *len = (size_t)(nl - 1 - start);
            c->in_pos = (size_t)(nl + 1 - c->in);
            return start;
        }
        if (!client_fill(c, c->in_len - c->in_pos + 65536))
            return NULL;
    }
}

/* n more bytes plus \r\n after the current position. */
static char *read_bytes(resp_client *c, size_t n)
{
    while (c->in_len - c->in_pos < n + 2)
        if (!client_fill(c, n + 2))
            return NULL;
    char *p = c->in + c->in_pos;
    c->in_pos += n + 2;
    return p;
}

static bool add_part(resp_client *c, const char *p, size_t n)
{
    if (c->nparts == c->parts_cap) {
        size_t cap = c->parts_cap ? c->parts_cap * 2 : 16;
        char **part = tq_realloc(c->part, cap * sizeof(char *));
        if (part)
            c->part = part;
        size_t *len = tq_realloc(c->part_len, cap * sizeof(size_t));
        if (len)
            c->part_len = len;
        if (!part || !len)
            return false;
        for (size_t i = c->parts_cap; i < cap; i++)
            c->part[i] = NULL;
        c->parts_cap = cap;
    }
    char *copy = tq_realloc(c->part[c->nparts], n + 1);
    if (!copy)
        return false;
    memcpy(copy, p, n);
    copy[n] = 0;
    c->part[c->nparts] = copy;
    c->part_len[c->nparts++] = n;
    return true;
}

static int read_value(resp_client *c, int depth)
{
    size_t len;
    char *line = read_line(c, &len);
    if (!line || len == 0 || depth > 8)
        return -1;
    char type = line[0];
    line[len] = 0;
    long long n = strtoll(line + 1, NULL, 10);
    switch (type) {
    case '-':
        c->error = true;
        /* fall through */
    case '+':
    case ':':
    case ',':
    case '#':
        return add_part(c, line + 1, len - 1) ? 0 : -1;
    case '_':
        return add_part(c, "", 0) ? 0 : -1;
    case '$':
    case '=': {
        if (n < 0)
            return add_part(c, "", 0) ? 0 : -1;
        char *p = read_bytes(c, (size_t)n);
        return p && add_part(c, p, (size_t)n) ? 0 : -1;
    }
    case '*':
    case '%':
    case '~':
        for (long long i = 0; i < (type == '%' ? 2 * n : n); i++)
            if (read_value(c, depth + 1))
                return -1;
        return 0;
    default:
        return -1;
    }
}

/* Read one reply into c->part; -1 if the connection failed. */
int resp_reply(resp_client *c)
{
    c->nparts = 0;
    c->error = false;
    return read_value(c, 0);
}

int resp_call(resp_client *c, size_t argc, const char *const *argv)
{
    size_t lens[32];
    if (argc > 32)
        return -1;
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (!resp_queue(c, argc, argv, lens) || resp_flush(c) || resp_reply(c))
        return -1;
    return c->error ? -1 : 0;
}

bool resp_reply_number(const resp_client *c, const char *name, long long *out)
{
    for (size_t i = 0; i + 1 < c->nparts; i++)
        if (!strcmp(c->part[i], name)) {
            *out = strtoll(c->part[i + 1], NULL, 10);
            return true;
        }
    if (c->nparts == 1) { /* INFO: one bulk string of "name:value" lines */
        const size_t n = strlen(name);
        for (const char *at = strstr(c->part[0], name); at; at = strstr(at + 1, name))
            if ((at == c->part[0] || at[-1] == '\n') && at[n] == ':') {
                *out = strtoll(at + n + 1, NULL, 10);
                return true;
            }
    }
    return false;
}


int resp_add_rows(resp_client *c, const char *key, const tq_matrix *x, size_t pipeline, tool_progress *prog,
                  char *why, size_t cap, const char *quant)
{
    for (size_t from = 0; from < x->n; from += pipeline) {
        size_t to = from + pipeline < x->n ? from + pipeline : x->n;
        for (size_t i = from; i < to; i++) {
            char id[24];
            snprintf(id, sizeof(id), "%zu", i);
            const char *args[] = {"VADD", key, "FP32", (const char *)(x->data + i * x->d), id, quant};
            size_t lens[] = {4, strlen(key), 4, x->d * sizeof(float), strlen(id), quant ? strlen(quant) : 0};
            if (!resp_queue(c, quant ? 6 : 5, args, lens)) {
                snprintf(why, cap, "out of memory");
                return -1;
            }
        }
        if (resp_flush(c)) {
            snprintf(why, cap, "connection lost");
            return -1;
        }
        for (size_t i = from; i < to; i++) {
            if (resp_reply(c)) {
                snprintf(why, cap, "connection lost");
                return -1;
            }
            if (c->error) {
                snprintf(why, cap, "VADD row %zu: %s", i, c->part[0]);
                return -1;
            }
        }
        if (prog)
            tool_progress_update(prog, to);
    }
    return 0;
}
