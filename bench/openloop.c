/* An open-loop HTTP/1.1 load generator (bench only; built by bench/overload.py with cc -O2).
 *
 * Requests are scheduled at a fixed rate, whatever the server answers: request i is due at
 * start + i / rate. A due request goes out on an idle keep-alive connection, or on a new one
 * while fewer than --max-conns are open; with every connection busy it is counted as
 * `unsent` (the client's own cap, reported, never hidden). Latency counts from the scheduled
 * time, so a server that falls behind is seen as late answers, not as a slower sender
 * (no coordinated omission). One thread, epoll, non-blocking sockets: one core offers tens of
 * thousands of requests a second where a Python generator offers ~1,300.
 *
 * Usage: openloop HOST PORT PATH BODY_FILE RATE DURATION_S MAX_CONNS TIMEOUT_S
 * Prints one JSON object (the shape of `mlserve loadtest --json`, plus `schedule`).
 * Loopback only: HOST must be 127.0.0.1 or localhost.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { FREE, CONNECTING, BUSY, IDLE };
#define RBUF 65536

typedef struct {
    int fd, state, in_idle;  /* in_idle: listed in idle[] (entries are checked when taken) */
    long uses;         /* requests sent on this connection (a reset on a reused one: reset_reused) */
    double sched;      /* the scheduled time of the request in flight */
    size_t have;       /* bytes of the answer read so far */
    char *buf;
} conn_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static conn_t *conns;
static int *idle, n_idle, *free_slots, n_free, max_conns, epfd, open_conns;
static struct sockaddr_in addr;
static char *request;
static size_t request_len;
static double t0, duration, timeout_s;
static long status_counts[600], sent, unsent, late, answered, ok_in_window;
static long err_connect, err_reset, err_reset_reused, err_eof, err_timeout, err_write, err_parse;
static double *lat;  /* latency (ms) of each answer */
static long n_lat, cap_lat;
static long per_second_ok[3600], per_second_503[3600];
static double per_second_max_ms[3600];

static void release(int i, int keep) {
    conn_t *c = &conns[i];
    c->have = 0;
    if (keep) {
        c->state = IDLE;
        if (!c->in_idle) {
            c->in_idle = 1;
            idle[n_idle++] = i;
        }
        return;
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = FREE;
    free_slots[n_free++] = i;
    open_conns--;
}

static void record(conn_t *c, int status, double t) {
    double ms = (t - c->sched) * 1000.0;
    if (n_lat == cap_lat) {
        cap_lat *= 2;
        lat = realloc(lat, cap_lat * sizeof *lat);
    }
    lat[n_lat++] = ms;
    answered++;
    if (status >= 0 && status < 600) status_counts[status]++;
    long sec = (long)(c->sched - t0);
    if (sec >= 0 && sec < 3600) {
        if (status >= 200 && status < 300) per_second_ok[sec]++;
        if (status == 503) per_second_503[sec]++;
        if (ms > per_second_max_ms[sec]) per_second_max_ms[sec] = ms;
    }
    if (status >= 200 && status < 300 && c->sched - t0 < duration) ok_in_window++;
}

static int send_request(int i, double sched, double t) {
    conn_t *c = &conns[i];
    c->sched = sched;
    c->have = 0;
    c->state = BUSY;
    c->uses++;
    if (t - sched > 0.010) late++;
    ssize_t n = send(c->fd, request, request_len, MSG_NOSIGNAL);
    if (n != (ssize_t)request_len) { /* a request is small: all of it fits the socket buffer */
        err_write++;
        release(i, 0);
        return -1;
    }
    sent++;
    return 0;
}

static void dispatch(double sched, double t) {
    while (n_idle > 0) {
        int i = idle[--n_idle];
        conns[i].in_idle = 0;
        if (conns[i].state != IDLE) continue; /* closed by the server since */
        /* As HTTP clients' pools do before reusing a connection (urllib3's
         * is_connection_dropped): one the server has closed meanwhile (its keep-alive timeout)
         * is readable; a request sent on it would meet a reset. */
        struct pollfd p = {.fd = conns[i].fd, .events = POLLIN | POLLRDHUP};
        if (poll(&p, 1, 0) != 0) {
            release(i, 0);
            continue;
        }
        send_request(i, sched, t);
        return;
    }
    if (n_free == 0) {
        unsent++;
        return;
    }
    int i = free_slots[--n_free];
    conn_t *c = &conns[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        err_connect++;
        free_slots[n_free++] = i;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->sched = sched;
    c->have = 0;
    if (!c->buf) c->buf = malloc(RBUF);
    open_conns++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 || errno == EINPROGRESS) {
        c->state = CONNECTING;
        c->uses = 0;
        return;
    }
    err_connect++;
    release(i, 0);
}

/* One complete answer in c->buf? Returns its status (and whether the server keeps the
 * connection) once the head and Content-Length bytes of body are in; -1 while incomplete. */
static int parse(conn_t *c, int *keep) {
    char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
    if (!end) return -1;
    size_t head = (size_t)(end - c->buf) + 4;
    if (c->have < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0) return -2;
    int status = atoi(c->buf + 9);
    long length = 0;
    *keep = 1;
    for (char *line = memchr(c->buf, '\n', head); line && line < end; line = memchr(line + 1, '\n', (size_t)(end - line))) {
        char *f = line + 1;
        if (strncasecmp(f, "content-length:", 15) == 0) length = atol(f + 15);
        if (strncasecmp(f, "connection:", 11) == 0) {
            char *v = f + 11;
            while (*v == ' ') v++;
            if (strncasecmp(v, "close", 5) == 0) *keep = 0;
        }
    }
    if (c->have < head + (size_t)length) return -1;
    return status;
}

static void on_event(int i, uint32_t events, double t) {
    conn_t *c = &conns[i];
    if (c->state == FREE) return;
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            err_connect++;
            release(i, 0);
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        send_request(i, c->sched, t);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->have, RBUF - c->have, 0);
        if (n > 0) {
            c->have += (size_t)n;
            int keep = 1, status = parse(c, &keep);
            if (status == -2 || (status == -1 && c->have == RBUF)) {
                err_parse++;
                release(i, 0);
                return;
            }
            if (status >= 0) {
                if (c->state == BUSY) record(c, status, t);
                release(i, keep);
                return;
            }
            continue;
        }
        if (n == 0) { /* closed by the server */
            if (c->state == BUSY) err_eof++;
            release(i, 0);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR) continue;
        if (c->state == BUSY) {
            if (c->uses > 1) err_reset_reused++;
            else err_reset++;
        }
        release(i, 0);
        return;
    }
}

static long busy_count(void) {
    long n = 0;
    for (int i = 0; i < max_conns; i++) n += conns[i].state == BUSY || conns[i].state == CONNECTING;
    return n;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double q) {
    if (!n_lat) return 0;
    long k = (long)(q / 100.0 * n_lat + 0.5) - 1;
    if (k < 0) k = 0;
    if (k >= n_lat) k = n_lat - 1;
    return lat[k];
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s HOST PORT PATH BODY_FILE RATE DURATION_S MAX_CONNS TIMEOUT_S\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "127.0.0.1") != 0 && strcmp(argv[1], "localhost") != 0) {
        fprintf(stderr, "loopback only (127.0.0.1 or localhost)\n");
        return 2;
    }
    int port = atoi(argv[2]);
    const char *path = argv[3];
    double rate = atof(argv[5]);
    duration = atof(argv[6]);
    max_conns = atoi(argv[7]);
    timeout_s = atof(argv[8]);
    if (port <= 0 || rate <= 0 || duration <= 0 || duration > 3600 || max_conns <= 0 || timeout_s <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    FILE *f = fopen(argv[4], "rb");
    if (!f) { perror(argv[4]); return 2; }
    static char body[1 << 20];
    size_t body_len = fread(body, 1, sizeof body, f);
    fclose(f);
    request = malloc(body_len + 512);
    request_len = (size_t)sprintf(request,
        "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        "Content-Length: %zu\r\n\r\n", path, port, body_len);
    memcpy(request + request_len, body, body_len);
    request_len += body_len;

    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    conns = calloc((size_t)max_conns, sizeof *conns);
    idle = malloc(sizeof(int) * (size_t)max_conns);
    free_slots = malloc(sizeof(int) * (size_t)max_conns);
    for (int i = max_conns - 1; i >= 0; i--) { conns[i].fd = -1; free_slots[n_free++] = i; }
    cap_lat = 1 << 16;
    lat = malloc(cap_lat * sizeof *lat);
    epfd = epoll_create1(0);

    struct epoll_event events[1024];
    t0 = now_s();
    long next = 0, total = (long)(rate * duration);
    double last_sweep = t0, drain_end = t0 + duration + timeout_s + 1.0;
    for (;;) {
        double t = now_s();
        while (next < total && t0 + next / rate <= t) {
            dispatch(t0 + next / rate, t);
            next++;
        }
        if (next >= total && busy_count() == 0) break; /* everything answered */
        if (t > drain_end) break;
        if (t - last_sweep > 0.05) { /* answers overdue past the timeout */
            last_sweep = t;
            for (int i = 0; i < max_conns; i++)
                if (conns[i].state == BUSY && t - conns[i].sched > timeout_s) {
                    err_timeout++;
                    release(i, 0);
                }
        }
        int wait_ms = 1;
        int n = epoll_wait(epfd, events, 1024, wait_ms);
        t = now_s();
        for (int k = 0; k < n; k++) on_event((int)events[k].data.u32, events[k].events, t);
    }
    double elapsed = now_s() - t0;
    long still = 0;
    for (int i = 0; i < max_conns; i++) if (conns[i].state == BUSY || conns[i].state == CONNECTING) still++;

    long over3 = 0, over10 = 0;
    for (long k = 0; k < n_lat; k++) { over3 += lat[k] >= 3000.0; over10 += lat[k] >= 10000.0; }
    qsort(lat, (size_t)n_lat, sizeof *lat, cmp);
    printf("{\"engine\": \"openloop.c\", \"rate\": %g, \"duration_s\": %g, \"elapsed_s\": %.3f, "
           "\"requests\": %ld, \"scheduled\": %ld, \"sent\": %ld, \"unsent_client_cap\": %ld, "
           "\"max_conns\": %d, \"answered\": %ld, \"throughput\": %.1f, \"status_codes\": {",
           rate, duration, elapsed, total, total, sent, unsent, max_conns, answered,
           ok_in_window / duration);
    int first = 1;
    for (int s = 0; s < 600; s++)
        if (status_counts[s]) { printf("%s\"%d\": %ld", first ? "" : ", ", s, status_counts[s]); first = 0; }
    printf("}, \"transport_errors\": {");
    const char *names[] = {"connect", "reset", "reset_reused", "closed_before_answer", "timeout", "write", "parse", "unanswered_at_end"};
    long vals[] = {err_connect, err_reset, err_reset_reused, err_eof, err_timeout, err_write, err_parse, still};
    first = 1;
    for (int k = 0; k < 8; k++)
        if (vals[k]) { printf("%s\"%s\": %ld", first ? "" : ", ", names[k], vals[k]); first = 0; }
    printf("}, \"latencies\": {\"50th\": %.2f, \"90th\": %.2f, \"99th\": %.2f, \"max\": %.2f}, "
           "\"answers_over_3s\": %ld, \"answers_over_10s\": %ld, "
           "\"schedule\": {\"target_rps\": %g, \"sent_more_than_10ms_late\": %ld, "
           "\"unsent_client_cap\": %ld}, \"per_second\": [",
           pct(50), pct(90), pct(99), n_lat ? lat[n_lat - 1] : 0.0, over3, over10, rate, late, unsent);
    for (long s = 0; s < (long)duration && s < 3600; s++)
        printf("%s{\"ok\": %ld, \"503\": %ld, \"max_ms\": %.0f}", s ? ", " : "", per_second_ok[s],
               per_second_503[s], per_second_max_ms[s]);
    printf("]}\n");
    return 0;
}
