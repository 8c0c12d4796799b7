/* The far ends talking, for bench/bridge_pacing.py: paced PCMU tone RTP into the server's legs.
 *
 * Each line of PAIRS_FILE is "SRC_PORT DST_PORT": stream i sends, every 20 ms, one RTP packet
 * (PT 0, 160 bytes of a mu-law tone: 400 Hz for even i, 1000 Hz for odd i) to 127.0.0.1:DST_PORT
 * *from* 127.0.0.1:SRC_PORT.  SRC_PORT is the port a receiver (bench/c/rtp_receiver.c) already
 * owns and the call's SDP announced, so the server's leg takes these packets as coming from its
 * negotiated remote; a raw socket (root) writes the UDP header itself, so nothing has to bind
 * SRC_PORT a second time.  A drop-all socket filter keeps the raw socket from queueing copies of
 * every UDP datagram on the host.  Pacing as bench/c/paced_sender.c: one thread, absolute
 * CLOCK_MONOTONIC deadlines per 1 ms sub-slot, stream i in sub-slot i % 20.
 * Runs until SIGTERM/SIGINT (or DURATION_S), then prints {"sent": .., "failed": ..}.
 *
 *   raw_talker PAIRS_FILE [DURATION_S]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <math.h>
#include <unistd.h>

#define PTIME_SLOTS 20
#define SAMPLES 160
#define LEN (8 + 12 + SAMPLES)
#define MAX_STREAMS 20000

static volatile sig_atomic_t stop_now = 0;
static void on_term(int s) { (void)s; stop_now = 1; }

static unsigned char linear_to_ulaw(int pcm) { /* ITU-T G.711 mu-law, the classic segment search */
    static const int seg_end[8] = {0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF};
    int mask, seg;
    pcm >>= 2;
    if (pcm < 0) { pcm = -pcm; mask = 0x7F; } else { mask = 0xFF; }
    if (pcm > 8159) pcm = 8159;
    pcm += 0x84 >> 2;
    for (seg = 0; seg < 8 && pcm > (seg_end[seg] >> 2); seg++) {}
    if (seg >= 8) return (unsigned char)(0x7F ^ mask);
    return (unsigned char)(((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s PAIRS_FILE [DURATION_S]\n", argv[0]); return 2; }
    double duration = argc > 2 ? atof(argv[2]) : 0.0;
    FILE *fh = fopen(argv[1], "r");
    if (!fh) { perror("pairs file"); return 1; }
    static uint16_t src[MAX_STREAMS], dport[MAX_STREAMS], seq[MAX_STREAMS];
    static uint32_t ts[MAX_STREAMS];
    int n = 0;
    unsigned s, d;
    while (n < MAX_STREAMS && fscanf(fh, "%u %u", &s, &d) == 2) { src[n] = (uint16_t)s; dport[n] = (uint16_t)d; n++; }
    fclose(fh);
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
    if (fd < 0) { perror("raw socket (needs root / CAP_NET_RAW)"); return 1; }
    struct sock_filter drop_all = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog prog = {1, &drop_all};
    setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
    int sndbuf = 1 << 22;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    unsigned char tone[2][SAMPLES];
    for (int i = 0; i < SAMPLES; i++) {
        tone[0][i] = linear_to_ulaw((int)(8000 * sin(2 * M_PI * 400 * i / 8000.0)));
        tone[1][i] = linear_to_ulaw((int)(8000 * sin(2 * M_PI * 1000 * i / 8000.0)));
    }
    srand(4242);
    for (int i = 0; i < n; i++) { seq[i] = (uint16_t)rand(); ts[i] = (uint32_t)rand(); }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    struct sockaddr_in dst = {0};
    dst.sin_family = AF_INET;
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    unsigned char pkt[LEN];
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
            uint32_t ssrc = 0x20000000u + (uint32_t)i;
            pkt[0] = (unsigned char)(src[i] >> 8); pkt[1] = (unsigned char)src[i];
            pkt[2] = (unsigned char)(dport[i] >> 8); pkt[3] = (unsigned char)dport[i];
            pkt[4] = 0; pkt[5] = LEN;
            pkt[6] = 0; pkt[7] = 0; /* no UDP checksum (allowed on IPv4) */
            unsigned char *rtp = pkt + 8;
            rtp[0] = 0x80; rtp[1] = 0;
            rtp[2] = (unsigned char)(seq[i] >> 8); rtp[3] = (unsigned char)seq[i];
            rtp[4] = (unsigned char)(ts[i] >> 24); rtp[5] = (unsigned char)(ts[i] >> 16);
            rtp[6] = (unsigned char)(ts[i] >> 8); rtp[7] = (unsigned char)ts[i];
            rtp[8] = (unsigned char)(ssrc >> 24); rtp[9] = (unsigned char)(ssrc >> 16);
            rtp[10] = (unsigned char)(ssrc >> 8); rtp[11] = (unsigned char)ssrc;
            memcpy(rtp + 12, tone[i & 1], SAMPLES);
            if (sendto(fd, pkt, LEN, MSG_DONTWAIT, (struct sockaddr *)&dst, sizeof dst) == LEN) sent++;
            else failed++;
            seq[i]++;
            ts[i] += SAMPLES;
        }
    }
    printf("{\"sent\": %llu, \"failed\": %llu}\n", (unsigned long long)sent, (unsigned long long)failed);
    return 0;
}
