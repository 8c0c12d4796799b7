/* Independent RTP receiver for bench/pacing.py.
 *
 * Binds N UDP ports (BASE, BASE+2, ..., BASE+2(N-1)) on 127.0.0.1 and reads every datagram
 * with recvmmsg and its kernel receive timestamp (SO_TIMESTAMPNS), so the receiver's own
 * scheduling does not distort the inter-arrival gaps it measures.
 *
 * Timeline: prints {"ready": true} once every port is bound.  The measurement window
 * starts on SIGUSR1 (or at once with START_NOW=1) and lasts DURATION_S seconds, then the
 * receiver prints its JSON result and exits by itself (SIGTERM ends the window early; with
 * no SIGUSR1 within MAX_WAIT_S it gives up and prints an empty result).  With WINDOWS=K > 1
 * it measures K back-to-back windows of DURATION_S each, printing one JSON line as each ends
 * (counters reset in between; a gap spanning a boundary counts in the later window), so one
 * sender can be compared with itself window by window (bench/pacing.py --paired).  Inside the window,
 * each stream's packets during its first SKIP_S seconds (counted from the first packet the
 * stream ever delivered) are ignored, so a stream's start-up never counts.
 *
 * Result: packets, lost (by seq), seq errors (seq step != 1), ts errors (ts step != ptime
 * samples when the seq step is 1), SSRC changes and distinct SSRCs per port, ports that
 * delivered nothing in the window, and a histogram of |gap - ptime| in 10 µs bins
 * (Python derives p50/p99/max from it).
 *
 *   rtp_receiver BASE_PORT N DURATION_S [SKIP_S=1] [PTIME_MS=20] [START_NOW=0] [MAX_WAIT_S=600] [WINDOWS=1]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
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

#define BINS 20000 /* 10 µs bins up to 200 ms; the last bin holds everything beyond */
#define BATCH 32
#define MAX_SSRC 8

struct stream {
    int fd;
    int seen;          /* a previous in-window packet exists (seq/ts/last_ns valid) */
    int64_t first_ns;  /* first packet ever on this port, 0 = none yet */
    uint16_t seq;
    uint32_t ts;
    uint32_t ssrc;
    int64_t last_ns;
    uint64_t packets;  /* in-window, after skip */
    int nssrc;
    uint32_t ssrcs[MAX_SSRC];
};

static volatile sig_atomic_t start_flag = 0, stop_flag = 0;
static void on_usr1(int s) { (void)s; start_flag = 1; }
static void on_term(int s) { (void)s; stop_flag = 1; }

static int64_t mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int64_t real_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static uint64_t hist[BINS + 1];
static uint64_t packets = 0, lost = 0, seq_err = 0, ts_err = 0, ssrc_changes = 0, bad = 0, skipped = 0;

/* One window's JSON line. */
static void print_result(const struct stream *st, int n, int started, double window_s) {
    int silent = 0, multi_ssrc = 0, max_ssrc = 0;
    uint64_t distinct = 0;
    for (int i = 0; i < n; i++) {
        if (st[i].packets == 0) silent++;
        if (st[i].nssrc > 1) multi_ssrc++;
        if (st[i].nssrc > max_ssrc) max_ssrc = st[i].nssrc;
        distinct += (uint64_t)st[i].nssrc;
    }
    printf("{\"started\": %d, \"window_s\": %.3f, \"ports\": %d, \"packets\": %llu, \"lost\": %llu, "
           "\"seq_errors\": %llu, \"ts_errors\": %llu, \"ssrc_changes\": %llu, \"ssrcs_total\": %llu, "
           "\"ports_multi_ssrc\": %d, \"max_ssrcs_per_port\": %d, \"silent_ports\": %d, \"malformed\": %llu, "
           "\"skipped\": %llu, \"bin_us\": 10, \"hist\": [",
           started, window_s, n, (unsigned long long)packets, (unsigned long long)lost,
           (unsigned long long)seq_err, (unsigned long long)ts_err, (unsigned long long)ssrc_changes,
           (unsigned long long)distinct, multi_ssrc, max_ssrc, silent, (unsigned long long)bad,
           (unsigned long long)skipped);
    int last = BINS;
    while (last > 0 && hist[last] == 0) last--;
    for (int i = 0; i <= last; i++) printf(i ? ",%llu" : "%llu", (unsigned long long)hist[i]);
    printf("]}\n");
    fflush(stdout);
}

/* Counters back to zero for the next window; each stream keeps its last packet, so the gap
 * that spans the boundary is measured (in the new window). */
static void reset_counters(struct stream *st, int n) {
    memset(hist, 0, sizeof hist);
    packets = lost = seq_err = ts_err = ssrc_changes = bad = skipped = 0;
    for (int i = 0; i < n; i++) {
        st[i].packets = 0;
        st[i].nssrc = st[i].seen ? 1 : 0;
        if (st[i].seen) st[i].ssrcs[0] = st[i].ssrc;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s BASE_PORT N DURATION_S [SKIP_S] [PTIME_MS] [START_NOW] [MAX_WAIT_S] [WINDOWS]\n", argv[0]);
        return 2;
    }
    int base = atoi(argv[1]), n = atoi(argv[2]);
    double duration = atof(argv[3]);
    double skip = argc > 4 ? atof(argv[4]) : 1.0;
    int64_t ptime_ns = (argc > 5 ? atoi(argv[5]) : 20) * 1000000LL;
    int start_now = argc > 6 ? atoi(argv[6]) : 0;
    double max_wait = argc > 7 ? atof(argv[7]) : 600.0;
    int windows = argc > 8 ? atoi(argv[8]) : 1;
    if (windows < 1) windows = 1;
    uint32_t samples = (uint32_t)(ptime_ns / 125000); /* 8 kHz */
    int64_t skip_ns = (int64_t)(skip * 1e9);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = (rlim_t)n + 64;
        if (rl.rlim_max < rl.rlim_cur) rl.rlim_max = rl.rlim_cur;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) { perror("setrlimit RLIMIT_NOFILE"); return 1; }
    }

    struct stream *st = calloc((size_t)n, sizeof *st);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0) { perror("socket"); return 1; }
        int one = 1, rcv = 1 << 18;
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(base + 2 * i))};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            fprintf(stderr, "bind 127.0.0.1:%d: %s\n", base + 2 * i, strerror(errno));
            return 1;
        }
        st[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    signal(SIGUSR1, on_usr1);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    printf("{\"ready\": true}\n");
    fflush(stdout);

    static unsigned char bufs[BATCH][2048];
    static unsigned char ctrls[BATCH][CMSG_SPACE(sizeof(struct timespec)) + 64];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    struct epoll_event evs[512];

    int64_t t_ready = mono_ns(), window_start = 0, window_end = 0;
    int measuring = 0, started = 0;
    if (start_now) start_flag = 1;
    /* SO_TIMESTAMPNS stamps are CLOCK_REALTIME; window bounds are kept in that clock too. */
    int64_t window_start_rt = 0;
    while (!stop_flag) {
        int64_t now_mono = mono_ns();
        if (start_flag && !started) {
            started = measuring = 1;
            window_start = now_mono;
            window_start_rt = real_ns();
            window_end = window_start + (int64_t)(duration * 1e9);
            for (int i = 0; i < n; i++) st[i].seen = 0;
        }
        if (started && now_mono >= window_end) {
            if (--windows == 0) break;
            print_result(st, n, started, (double)(now_mono - window_start) / 1e9);
            reset_counters(st, n);
            window_start = now_mono;
            window_start_rt = 0; /* later windows take every packet read from now on */
            window_end = window_start + (int64_t)(duration * 1e9);
        }
        if (!started && now_mono - t_ready > (int64_t)(max_wait * 1e9)) break;
        int k = epoll_wait(ep, evs, 512, 20);
        for (int e = 0; e < k; e++) {
            struct stream *s = &st[evs[e].data.u32];
            for (;;) {
                for (int j = 0; j < BATCH; j++) {
                    iov[j].iov_base = bufs[j];
                    iov[j].iov_len = sizeof bufs[j];
                    memset(&msgs[j].msg_hdr, 0, sizeof msgs[j].msg_hdr);
                    msgs[j].msg_hdr.msg_iov = &iov[j];
                    msgs[j].msg_hdr.msg_iovlen = 1;
                    msgs[j].msg_hdr.msg_control = ctrls[j];
                    msgs[j].msg_hdr.msg_controllen = sizeof ctrls[j];
                }
                int got = recvmmsg(s->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                for (int j = 0; j < got; j++) {
                    unsigned char *buf = bufs[j];
                    unsigned len = msgs[j].msg_len;
                    int64_t ts_ns = 0;
                    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[j].msg_hdr); c; c = CMSG_NXTHDR(&msgs[j].msg_hdr, c))
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
                            struct timespec t;
                            memcpy(&t, CMSG_DATA(c), sizeof t);
                            ts_ns = (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
                        }
                    if (ts_ns == 0) ts_ns = real_ns();
                    if (s->first_ns == 0) s->first_ns = ts_ns;
                    if (!measuring || ts_ns < window_start_rt) continue;
                    if (ts_ns - s->first_ns < skip_ns) { skipped++; continue; }
                    if (len < 12 || (buf[0] >> 6) != 2) { bad++; continue; }
                    uint16_t seq = (uint16_t)(buf[2] << 8 | buf[3]);
                    uint32_t ts = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
                    uint32_t ssrc = (uint32_t)buf[8] << 24 | (uint32_t)buf[9] << 16 | (uint32_t)buf[10] << 8 | buf[11];
                    packets++;
                    s->packets++;
                    int known = 0;
                    for (int q = 0; q < s->nssrc; q++) known |= s->ssrcs[q] == ssrc;
                    if (!known && s->nssrc < MAX_SSRC) s->ssrcs[s->nssrc++] = ssrc;
                    if (s->seen) {
                        if (ssrc != s->ssrc) ssrc_changes++;
                        uint16_t step = (uint16_t)(seq - s->seq);
                        if (step != 1) {
                            seq_err++;
                            if (step > 1 && step < 0x8000) lost += step - 1u;
                        } else if ((uint32_t)(ts - s->ts) != samples) {
                            ts_err++;
                        }
                        int64_t dev = ts_ns - s->last_ns - ptime_ns;
                        if (dev < 0) dev = -dev;
                        int64_t bin = dev / 10000;
                        hist[bin > BINS ? BINS : bin]++;
                    }
                    s->seen = 1;
                    s->seq = seq;
                    s->ts = ts;
                    s->ssrc = ssrc;
                    s->last_ns = ts_ns;
                }
                if (got < BATCH) break;
            }
        }
    }
    print_result(st, n, started, started ? (double)(mono_ns() - window_start) / 1e9 : 0.0);
    return 0;
}
