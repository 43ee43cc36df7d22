/*
 * RESP, the Redis serialization protocol: requests in, replies out.
 *
 * Requests are multibulk ("*<n>\r\n" then n times "$<len>\r\n<bytes>\r\n",
 * what every client library sends) or inline (one line of words, what a
 * person types into telnet; double quotes take \-escapes, single quotes do
 * not). The parser is restartable: it is called again from the start of
 * the request when more bytes arrive, and keeps no state between calls.
 * It believes no length it reads: counts above max_args and bulk lengths
 * above max_bytes are protocol errors at once, before any byte of the
 * body has arrived, so a declared 4 GB string costs nothing.
 *
 * Arguments point into the read buffer (inline quotes are unescaped in
 * place, which never lengthens them), so a request is never copied.
 *
 * Replies follow the client's protocol version: RESP3 has maps, doubles,
 * booleans and a single null; RESP2 gets them as the flat arrays, bulk
 * strings, integers and the two nulls Redis sends there.
 */
#include "daemon.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest count or length line, and longest inline request, as Redis. */
#define MAX_LINE (64u * 1024)

bool tqd_buf_reserve(tqd_buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

bool tqd_buf_append(tqd_buf *b, const void *p, size_t n)
{
    if (!tqd_buf_reserve(b, n))
        return false;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return true;
}

void tqd_buf_free(tqd_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------- parsing */

static bool push_arg(tqd_request *req, const char *p, size_t len)
{
    if (req->argc == req->args_cap) {
        size_t cap = req->args_cap ? req->args_cap * 2 : 16;
        tqd_arg *a = realloc(req->argv, cap * sizeof(*a));
        if (!a)
            return false;
        req->argv = a;
        req->args_cap = cap;
    }
    req->argv[req->argc++] = (tqd_arg){p, len};
    return true;
}

/* A "<digits>\r\n" line at buf[*at]: 1 parsed, 0 incomplete, -1 bad. */
static int read_number_line(const char *buf, size_t len, size_t *at, long long *v)
{
    const char *start = buf + *at;
    const char *nl = memchr(start, '\r', len - *at);
    if (!nl)
        return len - *at > MAX_LINE ? -1 : 0;
    if ((size_t)(nl - buf) + 1 >= len)
        return 0; /* the '\n' has not arrived */
    if (nl[1] != '\n' || nl == start || nl - start > 20)
        return -1;
    bool neg = *start == '-';
    long long n = 0;
    for (const char *p = start + neg; p < nl; p++) {
        if (*p < '0' || *p > '9' || n > (LLONG_MAX - 9) / 10)
            return -1;
        n = n * 10 + (*p - '0');
    }
    if (neg && nl == start + 1)
        return -1;
    *v = neg ? -n : n;
    *at = (size_t)(nl - buf) + 2;
    return 1;
}

static int parse_multibulk(const char *buf, size_t len, size_t max_bytes, size_t max_args, tqd_request *req)
{
    size_t at = 1;
    long long n;
    int rc = read_number_line(buf, len, &at, &n);
    if (rc <= 0) {
        req->error = "Protocol error: invalid multibulk length";
        return rc < 0 ? TQD_PARSE_ERROR : TQD_PARSE_MORE;
    }
    if (n > (long long)max_args) {
        req->error = "Protocol error: invalid multibulk length";
        return TQD_PARSE_ERROR;
    }
    for (long long i = 0; i < n; i++) {
        if (at >= len)
            return TQD_PARSE_MORE;
        if (buf[at] != '$') {
            /* Per thread: the message outlives this call until replied. */
            static _Thread_local char local[64];
            snprintf(local, sizeof(local), "Protocol error: expected '$', got '%c'",
                     buf[at] >= 32 && buf[at] < 127 ? buf[at] : '?');
            req->error = local;
            return TQD_PARSE_ERROR;
        }
        at++;
        long long blen;
        rc = read_number_line(buf, len, &at, &blen);
        if (rc < 0 || (rc > 0 && (blen < 0 || (unsigned long long)blen > max_bytes))) {
            req->error = "Protocol error: invalid bulk length";
            return TQD_PARSE_ERROR;
        }
        if (rc == 0)
            return TQD_PARSE_MORE;
        if (len - at < (size_t)blen + 2)
            return TQD_PARSE_MORE;
        if (buf[at + blen] != '\r' || buf[at + blen + 1] != '\n') {
            req->error = "Protocol error: bulk string not followed by CRLF";
            return TQD_PARSE_ERROR;
        }
        if (!push_arg(req, buf + at, (size_t)blen)) {
            req->error = "Protocol error: out of memory for the arguments";
            return TQD_PARSE_ERROR;
        }
        at += (size_t)blen + 2;
        if (at > max_bytes + MAX_LINE) {
            req->error = "Protocol error: request too large";
            return TQD_PARSE_ERROR;
        }
    }
    req->consumed = at;
    return TQD_PARSE_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Split one inline line into words, unescaping quotes in place. */
static int parse_inline(char *buf, size_t len, tqd_request *req)
{
    char *nl = memchr(buf, '\n', len);
    if (!nl) {
        if (len > MAX_LINE) {
            req->error = "Protocol error: too big inline request";
            return TQD_PARSE_ERROR;
        }
        return TQD_PARSE_MORE;
    }
    char *end = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;
    char *p = buf;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end)
            break;
        char *word = p, *w = p;
        if (*p == '"' || *p == '\'') {
            const char q = *p++;
            bool closed = false;
            while (p < end) {
                if (q == '"' && *p == '\\' && p + 1 < end) {
                    char e = p[1];
                    int h1, h2;
                    if (e == 'x' && p + 3 < end && (h1 = hexval(p[2])) >= 0 && (h2 = hexval(p[3])) >= 0) {
                        *w++ = (char)(h1 * 16 + h2);
                        p += 4;
                        continue;
                    }
                    *w++ = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e == 'b' ? '\b' : e == 'a' ? '\a' : e;
                    p += 2;
                } else if (q == '\'' && *p == '\\' && p + 1 < end && p[1] == '\'') {
                    *w++ = '\'';
                    p += 2;
                } else if (*p == q) {
                    p++;
                    closed = true;
                    break;
                } else {
                    *w++ = *p++;
                }
            }
            /* A closing quote must end the word, as redis-server requires. */
            if (!closed || (p < end && *p != ' ' && *p != '\t')) {
                req->error = "Protocol error: unbalanced quotes in request";
                return TQD_PARSE_ERROR;
            }
        } else {
            while (p < end && *p != ' ' && *p != '\t')
                *w++ = *p++;
        }
        if (!push_arg(req, word, (size_t)(w - word))) {
            req->error = "Protocol error: out of memory for the arguments";
            return TQD_PARSE_ERROR;
        }
    }
    req->consumed = (size_t)(nl - buf) + 1;
    return TQD_PARSE_OK;
}

int tqd_parse(const char *buf, size_t len, size_t max_bytes, size_t max_args, tqd_request *req)
{
    req->argc = 0;
    req->consumed = 0;
    req->error = NULL;
    if (len == 0)
        return TQD_PARSE_MORE;
    if (buf[0] == '*')
        return parse_multibulk(buf, len, max_bytes, max_args, req);
    /* Inline requests rewrite quoted words in place; the buffer is the
     * connection's own. */
    return parse_inline((char *)(uintptr_t)buf, len, req);
}

/* ------------------------------------------------------------- replies */

static void put(tqd_reply *r, const char *p, size_t n)
{
    if (r->oom || !tqd_buf_append(r->out, p, n))
        r->oom = true;
}

static void putf(tqd_reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(tqd_reply *r, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    put(r, tmp, (size_t)n);
}

void tqd_reply_simple(tqd_reply *r, const char *s)
{
    put(r, "+", 1);
    put(r, s, strlen(s));
    put(r, "\r\n", 2);
}

void tqd_reply_error(tqd_reply *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(msg))
        n = sizeof(msg) - 1;
    /* An error is one line: the protocol has no escape for CR or LF. */
    for (int i = 0; i < n; i++)
        if (msg[i] == '\r' || msg[i] == '\n')
            msg[i] = ' ';
    put(r, "-", 1);
    put(r, msg, (size_t)n);
    put(r, "\r\n", 2);
}

void tqd_reply_int(tqd_reply *r, long long v)
{
    putf(r, ":%lld\r\n", v);
}

void tqd_reply_bulk(tqd_reply *r, const char *p, size_t n)
{
    putf(r, "$%zu\r\n", n);
    put(r, p, n);
    put(r, "\r\n", 2);
}

void tqd_reply_cstr(tqd_reply *r, const char *s)
{
    tqd_reply_bulk(r, s, strlen(s));
}

void tqd_reply_null(tqd_reply *r)
{
    if (r->proto == 3)
        put(r, "_\r\n", 3);
    else
        put(r, "$-1\r\n", 5);
}

void tqd_reply_null_array(tqd_reply *r)
{
    if (r->proto == 3)
        put(r, "_\r\n", 3);
    else
        put(r, "*-1\r\n", 5);
}

void tqd_reply_array(tqd_reply *r, size_t n)
{
    putf(r, "*%zu\r\n", n);
}

void tqd_reply_map(tqd_reply *r, size_t pairs)
{
    if (r->proto == 3)
        putf(r, "%%%zu\r\n", pairs);
    else
        putf(r, "*%zu\r\n", pairs * 2);
}

void tqd_reply_double(tqd_reply *r, double v)
{
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.17g", v);
    if (r->proto == 3) {
        put(r, ",", 1);
        put(r, tmp, (size_t)n);
        put(r, "\r\n", 2);
    } else {
        tqd_reply_bulk(r, tmp, (size_t)n);
    }
}

void tqd_reply_bool(tqd_reply *r, bool v)
{
    if (r->proto == 3)
        put(r, v ? "#t\r\n" : "#f\r\n", 4);
    else
        put(r, v ? ":1\r\n" : ":0\r\n", 4);
}

void tqd_reply_tqvec_error(tqd_reply *r, const tqvec_error *e)
{
    tqd_reply_error(r, "ERR %s", e->message[0] ? e->message : tqvec_errstr(e->code));
}
