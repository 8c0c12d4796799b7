/* Minimal C paced RTP sender: the yardstick bench/pacing.py compares mediasrv against.
 *
 * One thread, absolute CLOCK_MONOTONIC deadlines (clock_nanosleep TIMER_ABSTIME) every
 * 1 ms sub-slot; stream i sends in sub-slot i % 20, one 172-byte RTP packet (PCMU, 160
 * payload bytes) per 20 ms, with its own SSRC and continuous seq/timestamp, on a
 * non-blocking UDP socket connected to BASE_PORT + 2i.  Runs until SIGTERM.
 *
 *   paced_sender BASE_PORT N
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_now = 0;
static void on_term(int s) { (void)s; stop_now = 1; }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s BASE_PORT N\n", argv[0]); return 2; }
    int base = atoi(argv[1]), n = atoi(argv[2]);
    struct rlimit rl = {n + 64, n + 64};
    setrlimit(RLIMIT_NOFILE, &rl);
    int *fd = calloc(n, sizeof *fd);
    uint16_t *seq = calloc(n, sizeof *seq);
    uint32_t *ts = calloc(n, sizeof *ts);
    for (int i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(base + 2 * i)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fd[i], (struct sockaddr *)&a, sizeof a);
        seq[i] = (uint16_t)rand();
        ts[i] = (uint32_t)rand();
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    unsigned char pkt[172];
    memset(pkt, 0xFF, sizeof pkt);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    uint64_t sent = 0;
    for (unsigned long tick = 0; !stop_now; tick++) {
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        for (int i = (int)(tick % 20); i < n; i += 20) {
            uint32_t ssrc = 0x10000000u + (uint32_t)i;
            pkt[0] = 0x80; pkt[1] = 0;
            pkt[2] = seq[i] >> 8; pkt[3] = seq[i] & 0xFF;
            pkt[4] = ts[i] >> 24; pkt[5] = ts[i] >> 16; pkt[6] = ts[i] >> 8; pkt[7] = ts[i];
            pkt[8] = ssrc >> 24; pkt[9] = ssrc >> 16; pkt[10] = ssrc >> 8; pkt[11] = ssrc;
            if (send(fd[i], pkt, sizeof pkt, 0) == (ssize_t)sizeof pkt) sent++;
            seq[i]++;
            ts[i] += 160;
        }
    }
    printf("{\"sent\": %llu}\n", (unsigned long long)sent);
    return 0;
}
