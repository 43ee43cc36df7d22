/*
 * The server: one io_uring loop for all socket I/O, a pool of workers for
 * the commands, and the start and stop of the daemon.
 *
 * A connection is always in exactly one of three states, so its buffers
 * have one owner at a time and no lock:
 *
 *   READING  a recv is in flight (loop owns it)
 *   WORKING  queued for or running on a worker, which parses every
 *            complete request in the read buffer, runs each, and appends
 *            the replies (worker owns it)
 *   WRITING  a send of the replies is in flight (loop owns it)
 *
 * READING -> WORKING when bytes arrive; WORKING -> WRITING when the worker
 * hands it back with replies left to send (or straight to READING);
 * WRITING -> WORKING again if requests are left in the buffer (a pipeline
 * longer than one reply batch), else READING. Nothing is read while the
 * replies are being written, so a client that does not read its replies
 * stops being read: that is the back-pressure, and the socket buffers
 * bound what one slow client can make us hold (a reply batch stops
 * growing at REPLY_BATCH bytes). A request may grow the read buffer up to
 * --max-request-bytes; beyond that it is a protocol error.
 *
 * Requests of one connection run in order on one worker; different
 * connections run in parallel. Writes to one collection are serialized by
 * the collection, searches run beside them (tqvec.h's contract).
 *
 * io_uring: Debian 12 ships liburing 2.3, and kernels differ, so the loop
 * uses only single-shot accept, recv and send, read, async cancel and
 * linked timeouts (all in 5.6+), and checks them with a probe at start. Completions carry
 * the connection pointer with the operation kind in its low bits.
 *
 * Stop (SIGTERM, SIGINT or SHUTDOWN): stop accepting, let running
 * requests finish and their replies go out (at most STOP_GRACE_MS), close
 * the connections, then close every collection, which syncs its log.
 */
#include "daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RING_ENTRIES 1024
#define READ_CHUNK (16u * 1024)
/* A worker stops running a connection's pipelined requests once this many
 * reply bytes wait, so they go out before more are produced. */
#define REPLY_BATCH (1u << 20)
#define STOP_GRACE_MS 10000
#define SPIN_US 50

tqd_server tqd;
static sigset_t stop_signals;

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_WAKE, OP_SIGNAL, OP_CANCEL };
enum { READING, WORKING, WRITING, DRAINING, IDLE };

typedef struct listener {
    int fd;
    bool unix_socket;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool armed;
} listener;

typedef struct conn {
    int fd;
    int state;
    int ops;                  /* io_uring operations in flight */
    bool dead;                /* close as soon as no operation is in flight */
    bool loopback;
    bool need_more;           /* the last job stopped at an incomplete request */
    bool protocol_error;      /* the stream broke: reply, then drain and close */
    size_t drained;
    tqd_client cl;
    char *rbuf;
    size_t rlen, rcap;
    tqd_buf out;
    size_t sent;
    tqd_request *run;         /* TQD_MAX_RUN parser scratch slots, used by the worker */
    struct conn *next;        /* job or done queue link */
    struct conn *prev_all, *next_all;
} conn;

static struct {
    struct io_uring ring;
    listener lst[2];
    int nlst;
    int wake_fd, signal_fd;
    uint64_t wake_buf;
    struct signalfd_siginfo sig_buf;
    conn *all;
    uint64_t next_id;
    bool stopping;
    uint64_t stop_deadline;
    /* workers */
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    conn *jobs, *jobs_tail;
    _Atomic size_t jobs_queued; /* what the spinning worker watches (no lock) */
    atomic_bool spinning;       /* a worker is watching the queue */
    _Atomic uintptr_t last_queued; /* the connection queued last (loop-written) */
    atomic_uint queued_in_a_row;   /* how many times in a row it was */
    conn *done;
    bool quit_workers;
} S = {.wake_fd = -1, .signal_fd = -1};

uint64_t tqd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t mono_ms(void)
{
    return mono_us() / 1000;
}

void tqd_server_wake(void)
{
    uint64_t one = 1;
    if (S.wake_fd < 0) /* no loop (the fuzz target runs commands alone) */
        return;
    if (write(S.wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        tqd_log(TQD_LOG_WARNING, "waking the loop: %s", strerror(errno));
}

/* ------------------------------------------------------------- workers */

/* Run every complete request in c's read buffer (worker side). */
static void run_requests(conn *c)
{
    tqd_reply r = {.out = &c->out, .proto = c->cl.proto};
    size_t pos = 0;
    c->need_more = false;
    while (!c->cl.close_after_reply && c->out.len < REPLY_BATCH) {
        tqd_request *req = &c->run[0];
        int rc = tqd_parse(c->rbuf + pos, c->rlen - pos, tqd.cfg.max_request_bytes, tqd.cfg.max_args, req);
        if (rc == TQD_PARSE_MORE) {
            c->need_more = true;
            break;
        }
        if (rc == TQD_PARSE_ERROR) {
            tqd_reply_error(&r, "ERR %s", req->error);
            tqd_log(TQD_LOG_VERBOSE, "client %llu (%s): %s; closing it", (unsigned long long)c->cl.id, c->cl.addr,
                    req->error);
            c->cl.close_after_reply = true;
            c->protocol_error = true;
            break;
        }
        pos += req->consumed;
        if (req->argc == 0)
            continue;
        /* Pipelined requests already here that can be answered with this
         * one (VSIMs: one search pass); requests after the answered ones
         * are parsed again on the next turn. */
        size_t more = tqd_parse_run(c->rbuf + pos, c->rlen - pos, tqd.cfg.max_request_bytes, tqd.cfg.max_args,
                                    c->run, TQD_MAX_RUN);
        size_t done = tqd_execute_run(&c->cl, c->run, 1 + more, &r);
        for (size_t i = 1; i < done; i++)
            pos += c->run[i].consumed;
        r.proto = c->cl.proto; /* HELLO may have switched it */
        atomic_fetch_add(&tqd.commands, done);
        if (r.oom) {
            c->cl.close_after_reply = true;
            break;
        }
    }
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
}

/* Reply from the worker when the socket takes it all at once (the usual
 * case), so the client is not kept waiting for the loop to wake; the loop
 * still gets the connection back to read again. */
static void send_replies(conn *c)
{
    if (c->out.len && !__atomic_load_n(&c->dead, __ATOMIC_RELAXED)) {
        ssize_t n = send(c->fd, c->out.p, c->out.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            c->sent = (size_t)n;
            atomic_fetch_add(&tqd.net_out, (uint64_t)n);
        }
    }
}

/* A client that waits for each reply sends its next request within tens
 * of microseconds of getting it. Handing the connection back to the loop
 * to arm a read, the read completing there and the request queued for a
 * worker again cost two thread wake-ups a request: one client's VSIMs on
 * siftsmall ran at 9,300 a second through the daemon against 37,000 in
 * process. So the worker that answered watches the socket itself for up
 * to SPIN_US, as the queue's watcher would (it holds the same token, so
 * there is still one watcher), and runs the next request at once when it
 * comes. It gives the connection back as before when anything else is
 * queued, the time is up, the replies did not all go out, the buffer
 * needs to grow, or the connection is closing; a read that finds the end
 * of the stream or an error leaves it to the loop's own read. Only a
 * connection that has the daemon to itself is watched (the last
 * ALONE_STREAK requests the loop queued were its own): with many clients
 * the loop's batched reads and sends serve them better, and 50
 * connections' PINGs lost 11 % of their throughput to watching. */
#define ALONE_STREAK 4u
static bool next_request_arrives(conn *c)
{
    if (c->sent < c->out.len || !c->need_more || c->cl.close_after_reply || c->protocol_error ||
        __atomic_load_n(&c->dead, __ATOMIC_RELAXED) || __atomic_load_n(&S.stopping, __ATOMIC_RELAXED) ||
        c->rcap - c->rlen < READ_CHUNK)
        return false;
    if (atomic_load_explicit(&S.last_queued, memory_order_relaxed) != (uintptr_t)c ||
        atomic_load_explicit(&S.queued_in_a_row, memory_order_relaxed) < ALONE_STREAK)
        return false;
    bool idle = false;
    if (!atomic_compare_exchange_strong(&S.spinning, &idle, true))
        return false;
    c->out.len = c->sent = 0;
    bool arrived = false;
    const uint64_t until = mono_us() + SPIN_US;
    while (!atomic_load_explicit(&S.jobs_queued, memory_order_relaxed) && mono_us() < until) {
        const ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, MSG_DONTWAIT);
        if (n > 0) {
            c->rlen += (size_t)n;
            atomic_fetch_add(&tqd.net_in, (uint64_t)n);
            arrived = true;
            break;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            break;
        __builtin_ia32_pause();
    }
    atomic_store(&S.spinning, false);
    return arrived;
}

static void *worker_main(void *arg)
{
    (void)arg;
    for (;;) {
        /* A client that waits for each reply sends its next request within
         * tens of microseconds; watching the queue that long first saves
         * the futex sleep and wake-up (about as long again) on every
         * request. An idle pool goes to sleep after SPIN_US. One watcher is
         * enough to catch the next request: a second only took a core from
         * the client or the loop (on two cores, one client's PINGs ran at
         * 12,000-16,000 a second with both workers watching, 22,000-24,000
         * with one). */
        bool idle = false;
        if (atomic_compare_exchange_strong(&S.spinning, &idle, true)) {
            const uint64_t spin_until = mono_us() + SPIN_US;
            while (!atomic_load_explicit(&S.jobs_queued, memory_order_relaxed) && mono_us() < spin_until)
                __builtin_ia32_pause();
            atomic_store(&S.spinning, false);
        }
        pthread_mutex_lock(&S.qlock);
        while (!S.jobs && !S.quit_workers)
            pthread_cond_wait(&S.qcond, &S.qlock);
        if (!S.jobs) {
            pthread_mutex_unlock(&S.qlock);
            return NULL;
        }
        conn *c = S.jobs;
        S.jobs = c->next;
        if (!S.jobs)
            S.jobs_tail = NULL;
        atomic_fetch_sub_explicit(&S.jobs_queued, 1, memory_order_relaxed);
        pthread_mutex_unlock(&S.qlock);

        run_requests(c);
        send_replies(c);
        while (next_request_arrives(c)) {
            run_requests(c);
            send_replies(c);
        }

        /* One wake-up covers every connection on the list: the loop takes
         * the whole list, so only the first to join an empty one writes. */
        pthread_mutex_lock(&S.qlock);
        bool first = S.done == NULL;
        c->next = S.done;
        S.done = c;
        pthread_mutex_unlock(&S.qlock);
        if (first)
            tqd_server_wake();
    }
}

static void queue_job(conn *c)
{
    c->state = WORKING;
    c->next = NULL;
    /* (the loop is the only writer of both) */
    const bool again = atomic_load_explicit(&S.last_queued, memory_order_relaxed) == (uintptr_t)c;
    const unsigned streak = again ? atomic_load_explicit(&S.queued_in_a_row, memory_order_relaxed) : 0;
    atomic_store_explicit(&S.queued_in_a_row, streak < ALONE_STREAK ? streak + 1 : streak, memory_order_relaxed);
    atomic_store_explicit(&S.last_queued, (uintptr_t)c, memory_order_relaxed);
    pthread_mutex_lock(&S.qlock);
    if (S.jobs_tail)
        S.jobs_tail->next = c;
    else
        S.jobs = c;
    S.jobs_tail = c;
    /* A lone job a watching worker will take needs no wake-up: waking a
     * sleeping worker only for it to find the queue empty cost as much as
     * the watching saved. The watcher checks the queue under the lock
     * before it sleeps, and stops watching before that, so the job cannot
     * be missed. */
    const size_t before = atomic_fetch_add_explicit(&S.jobs_queued, 1, memory_order_relaxed);
    if (before > 0 || !atomic_load(&S.spinning))
        pthread_cond_signal(&S.qcond);
    pthread_mutex_unlock(&S.qlock);
}

/* ----------------------------------------------------------- the ring */

static struct io_uring_sqe *get_sqe(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&S.ring);
    while (!sqe) {
        io_uring_submit(&S.ring);
        sqe = io_uring_get_sqe(&S.ring);
    }
    return sqe;
}

static void tag(struct io_uring_sqe *sqe, void *p, int op)
{
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)p | (uint64_t)op);
}

static void arm_accept(listener *l)
{
    struct io_uring_sqe *sqe = get_sqe();
    l->addrlen = sizeof(l->addr);
    io_uring_prep_accept(sqe, l->fd, (struct sockaddr *)&l->addr, &l->addrlen, SOCK_CLOEXEC);
    tag(sqe, l, OP_ACCEPT);
    l->armed = true;
}

static void arm_wake(void)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_read(sqe, S.wake_fd, &S.wake_buf, sizeof(S.wake_buf), 0);
    tag(sqe, &S.wake_buf, OP_WAKE);
}

static void arm_signal(void)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_read(sqe, S.signal_fd, &S.sig_buf, sizeof(S.sig_buf), 0);
    tag(sqe, &S.sig_buf, OP_SIGNAL);
}

static void conn_close(conn *c)
{
    __atomic_store_n(&c->dead, true, __ATOMIC_RELAXED);
    if (c->ops || c->state == WORKING)
        return;
    close(c->fd);
    if (c->prev_all)
        c->prev_all->next_all = c->next_all;
    else
        S.all = c->next_all;
    if (c->next_all)
        c->next_all->prev_all = c->prev_all;
    free(c->rbuf);
    tqd_client_release(&c->cl);
    for (size_t i = 0; c->run && i < TQD_MAX_RUN; i++)
        free(c->run[i].argv);
    free(c->run);
    tqd_buf_free(&c->out);
    free(c);
    atomic_fetch_sub(&tqd.clients, 1);
}

static void arm_send(conn *c);

static void arm_recv(conn *c)
{
    if (c->rcap - c->rlen < READ_CHUNK) {
        /* Room for the largest request allowed plus its framing, no more. */
        size_t limit = tqd.cfg.max_request_bytes + 2 * READ_CHUNK;
        size_t cap = c->rcap * 2 < c->rlen + READ_CHUNK ? c->rlen + READ_CHUNK : c->rcap * 2;
        if (cap > limit)
            cap = limit;
        char *p = cap > c->rcap ? realloc(c->rbuf, cap) : NULL;
        if (!p && c->rcap - c->rlen == 0) {
            /* Full and the request is still incomplete: too large. */
            tqd_reply r = {.out = &c->out, .proto = c->cl.proto};
            tqd_reply_error(&r, "ERR Protocol error: request larger than max-request-bytes (%zu)",
                            tqd.cfg.max_request_bytes);
            c->cl.close_after_reply = true;
            c->protocol_error = true;
            arm_send(c);
            return;
        }
        if (p) {
            c->rbuf = p;
            c->rcap = cap;
        }
    }
    c->state = READING;
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    tag(sqe, c, OP_RECV);
    c->ops++;
}

static void arm_send(conn *c)
{
    c->state = WRITING;
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_send(sqe, c->fd, c->out.p + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
    tag(sqe, c, OP_SEND);
    c->ops++;
}

/* After a protocol error the client may still be sending the rest of its
 * request. Closing with unread bytes makes the kernel answer with a reset,
 * which can destroy the error reply before the client reads it; so stop
 * writing, read and discard until the client closes, DRAIN_LIMIT bytes
 * have gone, or a read waits DRAIN_WAIT_MS (a linked timeout). */
#define DRAIN_LIMIT (64u << 20)
#define DRAIN_WAIT_MS 1000

static void arm_drain(conn *c)
{
    static struct __kernel_timespec wait = {.tv_sec = DRAIN_WAIT_MS / 1000,
                                            .tv_nsec = (DRAIN_WAIT_MS % 1000) * 1000000L};
    c->state = DRAINING;
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_recv(sqe, c->fd, c->rbuf, c->rcap, 0);
    io_uring_sqe_set_flags(sqe, IOSQE_IO_LINK);
    tag(sqe, c, OP_RECV);
    c->ops++;
    sqe = get_sqe();
    io_uring_prep_link_timeout(sqe, &wait, 0);
    tag(sqe, NULL, OP_CANCEL);
}

/* The replies are out (or there were none): what next. */
static void after_write(conn *c)
{
    c->out.len = c->sent = 0;
    if (c->out.cap > 4 * REPLY_BATCH)
        tqd_buf_free(&c->out);
    if (c->protocol_error && !c->dead && !S.stopping) {
        shutdown(c->fd, SHUT_WR);
        arm_drain(c);
    } else if (c->cl.close_after_reply || c->dead || S.stopping) {
        c->state = IDLE;
        conn_close(c);
    } else if (!c->need_more) {
        queue_job(c);
    } else {
        arm_recv(c);
    }
}

static bool is_loopback(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->ss_family == AF_INET6) {
        const struct in6_addr *x = &((const struct sockaddr_in6 *)a)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(x) ||
               (IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127);
    }
    return a->ss_family == AF_UNIX;
}

static void refuse(int fd, const char *msg)
{
    /* Best effort: the client may already be gone. */
    if (write(fd, msg, strlen(msg)) < 0)
        tqd_log(TQD_LOG_VERBOSE, "refusing a client: %s", strerror(errno));
    close(fd);
}

static void on_accept(listener *l, int res)
{
    l->armed = false;
    if (S.stopping) {
        if (res >= 0)
            close(res);
        return;
    }
    arm_accept(l);
    if (res < 0) {
        if (res != -ECANCELED)
            tqd_log(TQD_LOG_WARNING, "accept: %s", strerror(-res));
        return;
    }
    atomic_fetch_add(&tqd.connections_received, 1);
    if (atomic_load(&tqd.clients) >= (uint64_t)__atomic_load_n(&tqd.cfg.maxclients, __ATOMIC_RELAXED)) {
        atomic_fetch_add(&tqd.rejected_connections, 1);
        refuse(res, "-ERR max number of clients reached\r\n");
        return;
    }
    bool loop = l->unix_socket || is_loopback(&l->addr);
    if (tqd.cfg.protected_mode && !tqd.cfg.requirepass && !loop) {
        atomic_fetch_add(&tqd.rejected_connections, 1);
        refuse(res, "-DENIED tqvecd is running in protected mode because protected mode is enabled and no "
                    "password is set. In this mode connections are only accepted from the loopback interface. "
                    "To accept others, set a password with --requirepass (recommended), or disable protected "
                    "mode with --protected-mode no if this network is trusted.\r\n");
        return;
    }
    conn *c = calloc(1, sizeof(*c));
    if (!c || !(c->rbuf = malloc(READ_CHUNK * 2)) || !(c->run = calloc(TQD_MAX_RUN, sizeof(tqd_request)))) {
        if (c)
            free(c->rbuf);
        free(c);
        refuse(res, "-ERR out of memory\r\n");
        return;
    }
    c->fd = res;
    c->rcap = READ_CHUNK * 2;
    c->loopback = loop;
    c->cl.id = ++S.next_id;
    c->cl.proto = 2;
    c->cl.authed = tqd.cfg.requirepass == NULL;
    c->cl.created_ms = tqd_now_ms();
    if (l->unix_socket) {
        snprintf(c->cl.addr, sizeof(c->cl.addr), "%s:0", tqd.cfg.unixsocket);
    } else {
        int one = 1;
        setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        char host[INET6_ADDRSTRLEN] = "?", port[8] = "0";
        getnameinfo((struct sockaddr *)&l->addr, l->addrlen, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->cl.addr, sizeof(c->cl.addr), "%s:%s", host, port);
    }
    c->next_all = S.all;
    if (S.all)
        S.all->prev_all = c;
    S.all = c;
    atomic_fetch_add(&tqd.clients, 1);
    arm_recv(c);
}

static void on_recv(conn *c, int res)
{
    c->ops--;
    if (c->state == DRAINING) {
        c->drained += res > 0 ? (size_t)res : 0;
        if (res > 0 && c->drained < DRAIN_LIMIT && !S.stopping) {
            arm_drain(c);
        } else {
            c->state = IDLE;
            conn_close(c);
        }
        return;
    }
    if (res <= 0 || c->dead || S.stopping) {
        if (res < 0 && res != -ECANCELED && res != -ECONNRESET)
            tqd_log(TQD_LOG_VERBOSE, "client %llu: recv: %s", (unsigned long long)c->cl.id, strerror(-res));
        c->state = IDLE;
        conn_close(c);
        return;
    }
    c->rlen += (size_t)res;
    atomic_fetch_add(&tqd.net_in, (uint64_t)res);
    queue_job(c);
}

static void on_send(conn *c, int res)
{
    c->ops--;
    if (res <= 0) {
        c->state = IDLE;
        conn_close(c);
        return;
    }
    c->sent += (size_t)res;
    atomic_fetch_add(&tqd.net_out, (uint64_t)res);
    if (c->sent < c->out.len)
        arm_send(c);
    else
        after_write(c);
}

/* Connections the workers finished with. */
static void on_wake(void)
{
    pthread_mutex_lock(&S.qlock);
    conn *list = S.done;
    S.done = NULL;
    pthread_mutex_unlock(&S.qlock);
    while (list) {
        conn *c = list;
        list = c->next;
        c->state = IDLE;
        if (c->sent < c->out.len)
            arm_send(c);
        else
            after_write(c);
    }
    if (atomic_load(&tqd.shutdown_requested) && !S.stopping) {
        __atomic_store_n(&S.stopping, true, __ATOMIC_RELAXED);
        tqd_log(TQD_LOG_WARNING, "SHUTDOWN requested: stopping");
    }
}

/* ------------------------------------------------------------ listening */

static int listen_tcp(const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc) {
        tqd_log(TQD_LOG_WARNING, "cannot resolve --bind %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 511)) {
            tqd_log(TQD_LOG_WARNING, "cannot listen on %s:%d: %s", host, port, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(a.sun_path)) {
        tqd_log(TQD_LOG_WARNING, "unix socket path too long: %s", path);
        return -1;
    }
    strcpy(a.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 511)) {
        tqd_log(TQD_LOG_WARNING, "cannot listen on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    chmod(path, 0700);
    return fd;
}

/* The io_uring operations this loop uses, present in this kernel. */
static int probe_ring(void)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(&S.ring);
    if (!p) {
        tqd_log(TQD_LOG_WARNING, "io_uring: the kernel cannot be probed for operations (before 5.6?)");
        return -1;
    }
    static const struct {
        int op;
        const char *name;
    } need[] = {{IORING_OP_ACCEPT, "accept"}, {IORING_OP_RECV, "recv"}, {IORING_OP_SEND, "send"},
                {IORING_OP_READ, "read"}, {IORING_OP_ASYNC_CANCEL, "async cancel"},
                {IORING_OP_LINK_TIMEOUT, "link timeout"}};
    int rc = 0;
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (!io_uring_opcode_supported(p, need[i].op)) {
            tqd_log(TQD_LOG_WARNING, "io_uring: this kernel lacks %s", need[i].name);
            rc = -1;
        }
    io_uring_free_probe(p);
    return rc;
}

/* --------------------------------------------------------------- stop */

static void begin_stop(const char *why)
{
    if (!S.stopping)
        tqd_log(TQD_LOG_WARNING, "%s: stopping", why);
    __atomic_store_n(&S.stopping, true, __ATOMIC_RELAXED);
}

/* Once per loop turn while stopping: cancel what waits on clients and
 * listeners; the loop ends when every connection is closed. */
static void advance_stop(void)
{
    if (!S.stop_deadline) {
        S.stop_deadline = mono_ms() + STOP_GRACE_MS;
        for (int i = 0; i < S.nlst; i++) {
            if (S.lst[i].armed) {
                struct io_uring_sqe *sqe = get_sqe();
                io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)&S.lst[i] | OP_ACCEPT, 0);
                tag(sqe, NULL, OP_CANCEL);
            }
        }
    }
    bool late = mono_ms() > S.stop_deadline;
    for (conn *c = S.all; c; c = c->next_all) {
        if (c->state == READING || (late && c->state == WRITING)) {
            struct io_uring_sqe *sqe = get_sqe();
            io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)c | (c->state == READING ? OP_RECV : OP_SEND), 0);
            tag(sqe, NULL, OP_CANCEL);
            __atomic_store_n(&c->dead, true, __ATOMIC_RELAXED);
        }
    }
}

/* ---------------------------------------------------------------- main */

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        tqd_log(TQD_LOG_WARNING, "cannot write pidfile %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    return 0;
}

static int setup(void)
{
    S.signal_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
    S.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (S.signal_fd < 0 || S.wake_fd < 0) {
        tqd_log(TQD_LOG_WARNING, "signalfd/eventfd: %s", strerror(errno));
        return -1;
    }
    int rc = io_uring_queue_init(RING_ENTRIES, &S.ring, 0);
    if (rc) {
        tqd_log(TQD_LOG_WARNING, "io_uring_queue_init: %s (is io_uring disabled on this system?)", strerror(-rc));
        return -1;
    }
    if (probe_ring())
        return -1;
    if (tqd.cfg.port) {
        int fd = listen_tcp(tqd.cfg.bind, tqd.cfg.port);
        if (fd < 0)
            return -1;
        S.lst[S.nlst++] = (listener){.fd = fd};
    }
    if (tqd.cfg.unixsocket) {
        int fd = listen_unix(tqd.cfg.unixsocket);
        if (fd < 0)
            return -1;
        S.lst[S.nlst++] = (listener){.fd = fd, .unix_socket = true};
    }
    pthread_mutex_init(&S.qlock, NULL);
    pthread_cond_init(&S.qcond, NULL);
    S.nthreads = tqd.cfg.threads;
    S.threads = calloc((size_t)S.nthreads, sizeof(pthread_t));
    if (!S.threads)
        return -1;
    for (int i = 0; i < S.nthreads; i++)
        if (pthread_create(&S.threads[i], NULL, worker_main, NULL)) {
            S.nthreads = i;
            tqd_log(TQD_LOG_WARNING, "cannot start worker threads");
            return -1;
        }
    return 0;
}

static void run_loop(void)
{
    for (int i = 0; i < S.nlst; i++)
        arm_accept(&S.lst[i]);
    arm_wake();
    arm_signal();
    for (;;) {
        if (S.stopping) {
            advance_stop();
            if (!S.all)
                break;
        }
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000};
        int rc = io_uring_submit_and_wait_timeout(&S.ring, &cqe, 1, S.stopping ? &ts : NULL, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR) {
            tqd_log(TQD_LOG_WARNING, "io_uring wait: %s", strerror(-rc));
            break;
        }
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&S.ring, head, cqe)
        {
            seen++;
            uint64_t data = io_uring_cqe_get_data64(cqe);
            int op = (int)(data & 7);
            void *p = (void *)(uintptr_t)(data & ~(uint64_t)7);
            switch (op) {
            case OP_ACCEPT:
                on_accept(p, cqe->res);
                break;
            case OP_RECV:
                on_recv(p, cqe->res);
                break;
            case OP_SEND:
                on_send(p, cqe->res);
                break;
            case OP_WAKE:
                on_wake();
                arm_wake();
                break;
            case OP_SIGNAL:
                if (cqe->res > 0)
                    begin_stop(S.sig_buf.ssi_signo == SIGINT ? "SIGINT received" : "SIGTERM received");
                arm_signal();
                break;
            default:
                break;
            }
        }
        io_uring_cq_advance(&S.ring, seen);
    }
}

static void teardown(void)
{
    pthread_mutex_lock(&S.qlock);
    S.quit_workers = true;
    pthread_cond_broadcast(&S.qcond);
    pthread_mutex_unlock(&S.qlock);
    for (int i = 0; i < S.nthreads; i++)
        pthread_join(S.threads[i], NULL);
    free(S.threads);
    for (int i = 0; i < S.nlst; i++)
        close(S.lst[i].fd);
    if (tqd.cfg.unixsocket)
        unlink(tqd.cfg.unixsocket);
    io_uring_queue_exit(&S.ring);
}

/* Tell systemd (Type=notify) how the daemon is doing: one datagram to
 * $NOTIFY_SOCKET, the protocol sd_notify(3) documents, written here rather
 * than linking libsystemd for it. Without the variable, nothing happens. */
static void notify_service_manager(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(addr.sun_path))
        return;
    memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@') /* an abstract socket */
        addr.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        tqd_log(TQD_LOG_WARNING, "notifying the service manager: %s", strerror(errno));
    close(fd);
}

int tqd_main(int argc, char **argv)
{
    int rc = tqd_config_parse(&tqd.cfg, argc, argv);
    if (rc)
        return rc > 0 ? 0 : 2;
    if (tqd.cfg.daemonize && daemon(1, 1)) {
        fprintf(stderr, "tqvecd: daemonize: %s\n", strerror(errno));
        return 1;
    }
    tqvec_error err;
    if (tqvec_simd_check_env(&err)) {
        tqd_log(TQD_LOG_WARNING, "%s", err.message);
        return 1;
    }
    /* Blocked before any thread starts (collections start their own log
     * syncers when opened), so every thread inherits the mask and the
     * signals reach only the signalfd. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    tqd.start_ms = tqd_now_ms();
    tqd.io_backend = "io_uring";
    tqd_log(TQD_LOG_NOTICE, "tqvecd %s starting (pid %d, simd %s, %d worker threads, appendfsync %s)",
            tqvec_version(), (int)getpid(), tqvec_simd_level(), tqd.cfg.threads, tqd_fsync_name(tqd.cfg.appendfsync));
    if (tqd.cfg.pidfile && write_pidfile(tqd.cfg.pidfile))
        return 1;
    if (tqd_keyspace_open(&tqd.cfg) || tqd_txlog_open(tqd.cfg.dir, tqd.cfg.appendfsync)) {
        tqd_txlog_close();
        tqd_keyspace_close();
        return 1;
    }
    if (setup()) {
        tqd_txlog_close();
        tqd_keyspace_close();
        return 1;
    }
    if (tqd.cfg.port)
        tqd_log(TQD_LOG_NOTICE, "ready to accept connections on %s:%d", tqd.cfg.bind, tqd.cfg.port);
    if (tqd.cfg.unixsocket)
        tqd_log(TQD_LOG_NOTICE, "ready to accept connections on %s", tqd.cfg.unixsocket);
    notify_service_manager("READY=1\nSTATUS=ready to accept connections");
    run_loop();
    notify_service_manager("STOPPING=1");
    /* A BGSAVE still compacting holds collections that are about to close. */
    while (atomic_load(&tqd.bgsave_running))
        usleep(10000);
    teardown();
    tqd_log(TQD_LOG_NOTICE, "closing vector sets (syncing their logs)");
    tqd_txlog_close();
    tqd_keyspace_close();
    if (tqd.cfg.pidfile)
        unlink(tqd.cfg.pidfile);
    tqd_log(TQD_LOG_WARNING, "tqvecd is now ready to exit, bye bye...");
    tqd_config_free(&tqd.cfg);
    return 0;
}
