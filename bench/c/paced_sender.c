/* Minimal C paced RTP sender: the yardstick bench/pacing.py compares mediasrv against.
 *
 * One thread.  Absolute CLOCK_MONOTONIC deadlines (clock_nanosleep with TIMER_ABSTIME),
 * one per 1 ms sub-slot, so a late wake-up never shifts later packets.  Stream i is
 * staggered into sub-slot i % 20 of the 20 ms packet time and sends one 172-byte RTP packet
 * (12-byte header, PT 0 = PCMU, 160 payload bytes) per 20 ms to 127.0.0.1:BASE_PORT+2i with
 * its own SSRC, seq +1 and timestamp +160 per packet, with a non-blocking sendto.
 * Runs until SIGTERM/SIGINT (or DURATION_S if given), then prints {"sent": .., "failed": ..}.
 *
 *   paced_sender BASE_PORT N [DURATION_S]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PTIME_SLOTS 20 /* 20 ms packet time in 1 ms sub-slots */
#define PKT 172

static volatile sig_atomic_t stop_now = 0;
static void on_term(int s) { (void)s; stop_now = 1; }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s BASE_PORT N [DURATION_S]\n", argv[0]); return 2; }
    int base = atoi(argv[1]), n = atoi(argv[2]);
    double duration = argc > 3 ? atof(argv[3]) : 0.0;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = (rlim_t)n + 64;
        if (rl.rlim_max < rl.rlim_cur) rl.rlim_max = rl.rlim_cur;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) { perror("setrlimit RLIMIT_NOFILE"); return 1; }
    }
    int *fd = calloc((size_t)n, sizeof *fd);
    struct sockaddr_in *dst = calloc((size_t)n, sizeof *dst);
    uint16_t *seq = calloc((size_t)n, sizeof *seq);
    uint32_t *ts = calloc((size_t)n, sizeof *ts);
    srand(12345);
    for (int i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd[i] < 0) { perror("socket"); return 1; }
        dst[i].sin_family = AF_INET;
        dst[i].sin_port = htons((uint16_t)(base + 2 * i));
        dst[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        seq[i] = (uint16_t)rand();
        ts[i] = (uint32_t)rand();
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    unsigned char pkt[PKT];
    memset(pkt, 0xFF, sizeof pkt); /* PCMU silence */
    pkt[0] = 0x80;                 /* V=2, no padding/extension/CSRC */
    pkt[1] = 0;                    /* M=0, PT=0 */
    struct timespec start, next;
    clock_gettime(CLOCK_MONOTONIC, &start);
    next = start;
    uint64_t sent = 0, failed = 0;
    for (uint64_t tick = 0; !stop_now; tick++) {
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) != 0 && !stop_now) {}
        if (duration > 0 && (double)(next.tv_sec - start.tv_sec) + (next.tv_nsec - start.tv_nsec) / 1e9 >= duration) break;
        for (int i = (int)(tick % PTIME_SLOTS); i < n; i += PTIME_SLOTS) {
            uint32_t ssrc = 0x10000000u + (uint32_t)i;
            pkt[2] = (unsigned char)(seq[i] >> 8); pkt[3] = (unsigned char)seq[i];
            pkt[4] = (unsigned char)(ts[i] >> 24); pkt[5] = (unsigned char)(ts[i] >> 16);
            pkt[6] = (unsigned char)(ts[i] >> 8); pkt[7] = (unsigned char)ts[i];
            pkt[8] = (unsigned char)(ssrc >> 24); pkt[9] = (unsigned char)(ssrc >> 16);
            pkt[10] = (unsigned char)(ssrc >> 8); pkt[11] = (unsigned char)ssrc;
            if (sendto(fd[i], pkt, sizeof pkt, MSG_DONTWAIT, (struct sockaddr *)&dst[i], sizeof dst[i]) == PKT)
                sent++;
            else
                failed++;
            seq[i]++;
            ts[i] += 160;
        }
    }
    printf("{\"sent\": %llu, \"failed\": %llu}\n", (unsigned long long)sent, (unsigned long long)failed);
    return 0;
}
