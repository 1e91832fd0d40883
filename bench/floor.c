/*
 * bench/floor.c — the cheapest TCP proxy this benchmark knows how to write, as a floor for what
 * any proxy costs on this machine (bench/http.sh, legs `floor` and `floor2`).
 *
 *     floor LISTEN_PORT TARGET_PORT [splice]
 *
 * One thread, one epoll set, edge-triggered, each socket registered once; every accepted
 * connection gets a fresh non-blocking connection to 127.0.0.1:TARGET_PORT, and bytes are
 * copied both ways through one 16 KiB buffer per direction with read(2)/write(2). A direction
 * that reads end-of-stream shuts down its peer's write side once its buffer is written; a pair
 * closes when both directions are done or either socket fails. With `splice`, each direction
 * moves its bytes through a kernel pipe with splice(2) instead (bulk: the bytes never reach user
 * space). No runtime, no allocation per
 * read, no protocol, no limits, no logging: it is not a product, only the syscalls and TCP
 * state that every proxy between wrk and nginx pays for, so that `limmat` and `rathole` can be
 * read against it. Two of them in a chain (`floor2`) do the TCP work of a relay and a device
 * agent that open a connection between them per visitor, as rathole and PTTH do.
 *
 * Built by bench/http.sh with `cc -O2`; Linux only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 16384

struct pair;

/* One direction: bytes read from `src` wait in `buf` to be written to `dst`. */
struct dir {
    int src, dst;
    size_t len, off;
    int eof;  /* src said end-of-stream */
    int pipe[2]; /* splice mode: the kernel pipe between src and dst; len = bytes in it */
    int done; /* eof seen and everything written; dst's write side shut down */
    char buf[BUF];
};

/* The epoll cookie of one socket of a pair. */
struct side {
    struct pair *pair;
};

struct pair {
    struct dir up, down; /* client -> target, target -> client */
    struct side a, b;
    int dead;
};

static int ep;
static int splice_mode;
static struct sockaddr_in target;

static void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* End of stream read and everything written: shut down dst's write side, once. */
static int finish(struct dir *d) {
    if (!d->done) {
        shutdown(d->dst, SHUT_WR);
        d->done = 1;
    }
    return 0;
}

/* Splice mode: src -> pipe -> dst, up to 64 KiB at a time; as pump(). */
static int pump_splice(struct dir *d) {
    const unsigned flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
    for (;;) {
        if (d->len > 0) {
            ssize_t n = splice(d->pipe[0], NULL, d->dst, NULL, d->len, flags);
            if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
            d->len -= (size_t)n;
            if (d->len > 0) return 0;
        }
        if (d->eof) return finish(d);
        ssize_t n = splice(d->src, NULL, d->pipe[1], NULL, 65536, flags);
        if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        if (n == 0) d->eof = 1;
        d->len = (size_t)n;
    }
}

/* Moves what it can in one direction; -1 when the pair must close. */
static int pump(struct dir *d) {
    if (splice_mode) return pump_splice(d);
    for (;;) {
        if (d->off < d->len) {
            ssize_t n = write(d->dst, d->buf + d->off, d->len - d->off);
            if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
            d->off += (size_t)n;
            if (d->off < d->len) return 0;
            d->off = d->len = 0;
        }
        if (d->eof) return finish(d);
        ssize_t n = read(d->src, d->buf, BUF);
        if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        if (n == 0) {
            d->eof = 1;
            continue;
        }
        d->len = (size_t)n;
    }
}

static void close_pair(struct pair *p) {
    /* close() removes both sockets from the epoll set; events already returned for them in this
     * batch still point at `p`, so it is freed only after the batch (see main). */
    close(p->up.src);
    close(p->up.dst);
    if (splice_mode) {
        close(p->up.pipe[0]), close(p->up.pipe[1]);
        close(p->down.pipe[0]), close(p->down.pipe[1]);
    }
    p->dead = 1;
}

static void add(int fd, struct side *s) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void accept_all(int lfd) {
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            /* Edge-triggered: only "nothing left" may end the loop. */
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            return;
        }
        int t = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t < 0) {
            close(c);
            continue;
        }
        set_nodelay(c);
        set_nodelay(t);
        if (connect(t, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
            close(c);
            close(t);
            continue;
        }
        struct pair *p = calloc(1, sizeof *p);
        if (!p) {
            close(c);
            close(t);
            continue;
        }
        if (splice_mode && (pipe2(p->up.pipe, O_NONBLOCK | O_CLOEXEC) < 0 ||
                            pipe2(p->down.pipe, O_NONBLOCK | O_CLOEXEC) < 0)) {
            close(c);
            close(t);
            free(p); /* a leaked pipe here only shortens a benchmark */
            continue;
        }
        p->up.src = c, p->up.dst = t;
        p->down.src = t, p->down.dst = c;
        p->a.pair = p, p->b.pair = p;
        add(c, &p->a);
        add(t, &p->b);
    }
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "splice") != 0)) {
        fprintf(stderr, "usage: floor LISTEN_PORT TARGET_PORT [splice]\n");
        return 2;
    }
    splice_mode = argc == 4;
    signal(SIGPIPE, SIG_IGN);
    target.sin_family = AF_INET;
    target.sin_port = htons((unsigned short)atoi(argv[2]));
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((unsigned short)atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("floor: bind/listen");
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    static struct side listener;
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = &listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);

    struct epoll_event evs[256];
    struct pair *dead[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("floor: epoll_wait");
            return 1;
        }
        int ndead = 0;
        for (int i = 0; i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (s == &listener) {
                accept_all(lfd);
                continue;
            }
            struct pair *p = s->pair;
            if (p->dead) continue;
            if (pump(&p->up) < 0 || pump(&p->down) < 0 || (p->up.done && p->down.done)) {
                close_pair(p);
                dead[ndead++] = p;
            }
        }
        for (int i = 0; i < ndead; i++) free(dead[i]);
    }
}
