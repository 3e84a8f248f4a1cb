/* SYN flood mode of mxedge-bench, for the shield scenario: bare TCP SYNs
 * from a raw IPv4 socket, paced to a rate, bounded by a count and the
 * duration cap. Source addresses are drawn from 198.18.0.0/15 only (the
 * benchmark network, RFC 2544), so spoofed packets can never name a real
 * host; the target passed bench_config_check's address policy. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FLOOD_BURST 64

static uint64_t flood_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint16_t csum_fold(uint32_t sum)
{
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const void *p, size_t len)
{
  const uint8_t *b = p;
  for (size_t i = 0; i + 1 < len; i += 2)
    sum += (uint32_t)(b[i] << 8 | b[i + 1]);
  if (len & 1)
    sum += (uint32_t)(b[len - 1] << 8);
  return sum;
}

/* Builds one SYN (IPv4 + TCP with an MSS option, 44 bytes) into pkt. */
static size_t build_syn(uint8_t *pkt, uint32_t saddr, uint32_t daddr,
                        uint16_t sport, uint16_t dport, uint32_t seq)
{
  struct iphdr *ip = (struct iphdr *)pkt;
  struct tcphdr *tcp = (struct tcphdr *)(pkt + sizeof(*ip));
  uint8_t *opt = (uint8_t *)(tcp + 1);
  uint32_t sum;
  struct { uint32_t s, d; uint8_t z, p; uint16_t l; } __attribute__((packed)) ph;

  memset(pkt, 0, 44);
  ip->version = 4;
  ip->ihl = 5;
  ip->tot_len = htons(44);
  ip->ttl = 64;
  ip->protocol = IPPROTO_TCP;
  ip->saddr = saddr;
  ip->daddr = daddr;
  /* The kernel fills in id and the IP checksum for IP_HDRINCL (raw(7)). */
  tcp->source = sport;
  tcp->dest = dport;
  tcp->seq = htonl(seq);
  tcp->doff = 6;
  tcp->syn = 1;
  tcp->window = htons(64240);
  opt[0] = 2;          /* MSS, RFC 9293 §3.7.1 */
  opt[1] = 4;
  opt[2] = 1460 >> 8;
  opt[3] = 1460 & 0xff;
  ph.s = saddr;
  ph.d = daddr;
  ph.z = 0;
  ph.p = IPPROTO_TCP;
  ph.l = htons(24);
  sum = csum_add(0, &ph, sizeof(ph));
  sum = csum_add(sum, tcp, 24);
  tcp->check = htons(csum_fold(sum));
  return 44;
}

int bench_flood(const struct bench_config *cfg, uint64_t *sent, double *elapsed_s)
{
  const struct sockaddr_in *dst = (const struct sockaddr_in *)&cfg->target;
  uint64_t t0, deadline, interval, next, n = 0, rng = 0x9E3779B97F4A7C15ull;
  uint8_t pkt[44];
  int fd, one = 1, rc = 0;

  *sent = 0;
  *elapsed_s = 0;
  if (cfg->target.ss_family != AF_INET || !(cfg->rate > 0) || cfg->max_messages == 0)
    return -EINVAL;
  fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd < 0)
    return -errno;
  if (setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof(one)) < 0) {
    rc = -errno;
    goto out;
  }
  t0 = flood_now_ns();
  deadline = t0 + (uint64_t)(cfg->duration_s * 1e9);
  interval = (uint64_t)(1e9 / cfg->rate);
  next = t0;
  while (n < cfg->max_messages) {
    uint64_t now = flood_now_ns();
    if (now >= deadline)
      break;
    if (now < next) {
      uint64_t d = next - now;
      struct timespec ts = { .tv_sec = (time_t)(d / 1000000000ull),
                             .tv_nsec = (long)(d % 1000000000ull) };
      nanosleep(&ts, NULL);
      continue;
    }
    for (unsigned k = 0; k < FLOOD_BURST && n < cfg->max_messages && next <= now; k++) {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      /* 198.18.0.0/15: 0xc6120000 | 17 random bits, never .0 or .255 */
      uint32_t host = (uint32_t)(rng & 0x1ffff);
      if ((host & 0xff) == 0 || (host & 0xff) == 0xff)
        host ^= 0x1;
      uint32_t saddr = htonl(0xc6120000u | host);
      uint16_t sport = htons((uint16_t)(1024 + ((rng >> 20) % 60000)));
      size_t len = build_syn(pkt, saddr, dst->sin_addr.s_addr, sport, dst->sin_port,
                             (uint32_t)(rng >> 32));
      if (sendto(fd, pkt, len, 0, (const struct sockaddr *)dst, sizeof(*dst)) < 0) {
        if (errno == ENOBUFS || errno == EAGAIN)
          break;      /* the device queue is full: pace, do not spin */
        rc = -errno;
        goto out;
      }
      n++;
      next += interval;
    }
  }
  *elapsed_s = (double)(flood_now_ns() - t0) / 1e9;
out:
  *sent = n;
  close(fd);
  return rc;
}
