/* Independent RTP receiver for bench/pacing.py.
 *
 * Binds N UDP ports (base, base+2, ...) on 127.0.0.1 and reads every datagram with its
 * kernel receive timestamp (SO_TIMESTAMPNS), so the receiver's own scheduling does not
 * distort the inter-arrival gaps it measures.  SIGUSR1 starts the measurement window
 * (per-stream state is reset so warm-up is excluded); SIGTERM ends it and prints JSON:
 * packets, loss and sequence/timestamp errors, SSRC changes, and a histogram of
 * |gap - ptime| in 10 µs bins.
 *
 *   rtp_receiver BASE_PORT N [PTIME_MS]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define BINS 10000 /* 10 µs bins up to 100 ms */

struct stream {
    int fd;
    int seen;
    uint16_t seq;
    uint32_t ts;
    uint32_t ssrc;
    int64_t last_ns;
};

static volatile sig_atomic_t measuring = 0, reset_pending = 0, stop_now = 0;
static void on_usr1(int s) { (void)s; reset_pending = 1; }
static void on_term(int s) { (void)s; stop_now = 1; }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s BASE_PORT N [PTIME_MS]\n", argv[0]); return 2; }
    int base = atoi(argv[1]), n = atoi(argv[2]);
    int64_t ptime_ns = (argc > 3 ? atoi(argv[3]) : 20) * 1000000LL;
    uint32_t samples = (uint32_t)(ptime_ns / 125000); /* 8 kHz */
    struct rlimit rl = {n + 64, n + 64};
    setrlimit(RLIMIT_NOFILE, &rl);
    struct stream *st = calloc(n, sizeof *st);
    static uint64_t hist[BINS + 1];
    uint64_t packets = 0, lost = 0, seq_err = 0, ts_err = 0, ssrc_changes = 0, bad = 0;
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int one = 1, rcv = 1 << 18;
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(base + 2 * i)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
        st[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    signal(SIGUSR1, on_usr1);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    printf("{\"ready\": true}\n");
    fflush(stdout);
    struct epoll_event evs[256];
    unsigned char buf[2048], ctrl[256];
    while (!stop_now) {
        if (reset_pending) {
            for (int i = 0; i < n; i++) st[i].seen = 0;
            reset_pending = 0;
            measuring = 1;
        }
        int k = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < k; e++) {
            struct stream *s = &st[evs[e].data.u32];
            for (;;) {
                struct iovec iov = {buf, sizeof buf};
                struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
                ssize_t len = recvmsg(s->fd, &m, 0);
                if (len < 0) break;
                if (!measuring) continue;
                if (len < 12 || (buf[0] >> 6) != 2) { bad++; continue; }
                int64_t now = 0;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
                    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
                        struct timespec t; memcpy(&t, CMSG_DATA(c), sizeof t);
                        now = (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
                    }
                uint16_t seq = (uint16_t)(buf[2] << 8 | buf[3]);
                uint32_t ts = (uint32_t)buf[4] << 24 | buf[5] << 16 | buf[6] << 8 | buf[7];
                uint32_t ssrc = (uint32_t)buf[8] << 24 | buf[9] << 16 | buf[10] << 8 | buf[11];
                packets++;
                if (s->seen) {
                    if (ssrc != s->ssrc) ssrc_changes++;
                    uint16_t step = (uint16_t)(seq - s->seq);
                    if (step != 1) {
                        seq_err++;
                        if (step > 1 && step < 0x8000) lost += step - 1;
                    } else if ((uint32_t)(ts - s->ts) != samples) {
                        ts_err++;
                    }
                    int64_t dev = now - s->last_ns - ptime_ns;
                    if (dev < 0) dev = -dev;
                    int64_t bin = dev / 10000;
                    hist[bin > BINS ? BINS : bin]++;
                }
                s->seen = 1; s->seq = seq; s->ts = ts; s->ssrc = ssrc; s->last_ns = now;
            }
        }
    }
    printf("{\"packets\": %llu, \"lost\": %llu, \"seq_errors\": %llu, \"ts_errors\": %llu, "
           "\"ssrc_changes\": %llu, \"malformed\": %llu, \"bin_us\": 10, \"hist\": [",
           (unsigned long long)packets, (unsigned long long)lost, (unsigned long long)seq_err,
           (unsigned long long)ts_err, (unsigned long long)ssrc_changes, (unsigned long long)bad);
    int last = BINS;
    while (last > 0 && hist[last] == 0) last--;
    for (int i = 0; i <= last; i++) printf(i ? ",%llu" : "%llu", (unsigned long long)hist[i]);
    printf("]}\n");
    return 0;
}
