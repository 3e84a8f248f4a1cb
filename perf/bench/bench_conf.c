/* Address policy, address and size-list parsing for mxedge-bench. */
#include "bench.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool bench_addr_allowed(const struct sockaddr *sa)
{
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    uint32_t a = ntohl(s4->sin_addr.s_addr);
    if ((a >> 24) == 127)
      return true;                      /* 127.0.0.0/8 loopback */
    if ((a & 0xfffe0000u) == 0xc6120000u)
      return true;                      /* 198.18.0.0/15, RFC 2544 */
    return false;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    const uint8_t *b = s6->sin6_addr.s6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
      return true;
    /* 2001:db8::/32, RFC 3849. v4-mapped forms are refused on purpose:
     * they would let an IPv4 address bypass the IPv4 rule above. */
    return b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8;
  }
  return false;
}

static int parse_port(const char *s, uint16_t *port)
{
  char *end;
  unsigned long v;

  if (!*s || !isdigit((unsigned char)*s))
    return -EINVAL;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno || *end || v == 0 || v > 65535)
    return -EINVAL;
  *port = (uint16_t)v;
  return 0;
}

int bench_parse_addr(const char *s, uint16_t default_port,
                     struct sockaddr_storage *out, socklen_t *len)
{
  char host[INET6_ADDRSTRLEN + 1];
  const char *port_s = NULL;
  uint16_t port = default_port;
  size_t hl;

  memset(out, 0, sizeof(*out));
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close)
      return -EINVAL;
    hl = (size_t)(close - s - 1);
    if (close[1] == ':')
      port_s = close + 2;
    else if (close[1])
      return -EINVAL;
    s++;
  } else {
    const char *colon = strchr(s, ':');
    /* A bare IPv6 address has several colons and no port. */
    if (colon && !strchr(colon + 1, ':')) {
      hl = (size_t)(colon - s);
      port_s = colon + 1;
    } else {
      hl = strlen(s);
    }
  }
  if (hl == 0 || hl >= sizeof(host))
    return -EINVAL;
  memcpy(host, s, hl);
  host[hl] = '\0';
  if (port_s && parse_port(port_s, &port) < 0)
    return -EINVAL;

  struct sockaddr_in *s4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    *len = sizeof(*s4);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    *len = sizeof(*s6);
    return 0;
  }
  return -EINVAL;
}

static int parse_size(const char *s, char **end, uint64_t *out)
{
  unsigned long long v;

  if (!isdigit((unsigned char)*s))
    return -EINVAL;
  errno = 0;
  v = strtoull(s, end, 10);
  if (errno)
    return -EINVAL;
  if (**end == 'k' || **end == 'K') {
    v *= 1024;
    (*end)++;
  } else if (**end == 'm' || **end == 'M') {
    v *= 1024 * 1024;
    (*end)++;
  }
  *out = v;
  return 0;
}

int bench_parse_sizes(const char *s, struct bench_size *sizes, unsigned *n)
{
  uint64_t total = 0;
  unsigned k = 0;
  const char *p = s;

  if (!*p)
    return -EINVAL;
  for (;;) {
    char *end;
    uint64_t bytes, weight = 1;

    if (k == BENCH_MAX_SIZES)
      return -EINVAL;
    if (parse_size(p, &end, &bytes) < 0)
      return -EINVAL;
    if (bytes < BENCH_MIN_MSG_SIZE || bytes > BENCH_MAX_MSG_SIZE)
      return -EINVAL;
    p = end;
    if (*p == ':') {
      p++;
      if (!isdigit((unsigned char)*p))
        return -EINVAL;
      errno = 0;
      weight = strtoull(p, &end, 10);
      if (errno || weight > 1000000)
        return -EINVAL;
      p = end;
    }
    sizes[k].bytes = (uint32_t)bytes;
    sizes[k].weight = (uint32_t)weight;
    total += weight;
    k++;
    if (!*p)
      break;
    if (*p != ',')
      return -EINVAL;
    p++;
  }
  if (total == 0)
    return -EINVAL;
  *n = k;
  return 0;
}

const char *bench_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
  char host[INET6_ADDRSTRLEN];

  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
    snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
    snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
  } else {
    snprintf(buf, len, "(family %d)", sa->sa_family);
  }
  return buf;
}

int bench_config_check(const struct bench_config *cfg, char *err, size_t errlen)
{
  char a[64];

  if (!bench_addr_allowed((const struct sockaddr *)&cfg->target)) {
    snprintf(err, errlen, "refusing target %s: only loopback (127.0.0.0/8, ::1), "
             "198.18.0.0/15 and 2001:db8::/32 may be targeted",
             bench_addr_str((const struct sockaddr *)&cfg->target, a, sizeof(a)));
    return -EINVAL;
  }
  if (((const struct sockaddr *)&cfg->target)->sa_family == AF_INET &&
      ((const struct sockaddr_in *)&cfg->target)->sin_port == 0) {
    snprintf(err, errlen, "target port must not be 0");
    return -EINVAL;
  }
  for (unsigned i = 0; i < cfg->n_sources; i++) {
    const struct sockaddr *s = (const struct sockaddr *)&cfg->sources[i];
    if (!bench_addr_allowed(s)) {
      snprintf(err, errlen, "refusing source %s: only loopback, 198.18.0.0/15 "
               "and 2001:db8::/32 may be used", bench_addr_str(s, a, sizeof(a)));
      return -EINVAL;
    }
    if (s->sa_family != ((const struct sockaddr *)&cfg->target)->sa_family) {
      snprintf(err, errlen, "source %s is not of the target's address family",
               bench_addr_str(s, a, sizeof(a)));
      return -EINVAL;
    }
  }
  if (!(cfg->duration_s > 0) || cfg->duration_s > 86400) {
    snprintf(err, errlen, "--duration must be in (0, 86400] seconds (a hard cap)");
    return -EINVAL;
  }
  if (cfg->threads < 1 || cfg->threads > 256) {
    snprintf(err, errlen, "--threads must be in [1, 256]");
    return -EINVAL;
  }
  if (cfg->sessions < 1 || cfg->sessions > 4000000) {
    snprintf(err, errlen, "--sessions must be in [1, 4000000]");
    return -EINVAL;
  }
  if (cfg->mode == BENCH_OPEN && !(cfg->rate > 0)) {
    snprintf(err, errlen, "--open needs --rate > 0 (sessions per second)");
    return -EINVAL;
  }
  if (cfg->rcpts < 1 || cfg->rcpts > BENCH_MAX_RCPTS) {
    snprintf(err, errlen, "--rcpts must be in [1, %d]", BENCH_MAX_RCPTS);
    return -EINVAL;
  }
  if (cfg->n_sizes < 1) {
    snprintf(err, errlen, "no message sizes");
    return -EINVAL;
  }
  if (!(cfg->timeout_s > 0)) {
    snprintf(err, errlen, "--timeout must be > 0");
    return -EINVAL;
  }
  if (strlen(cfg->helo) > 200 || strlen(cfg->mail_from) > 200 ||
      strlen(cfg->rcpt_to) > 200 || strpbrk(cfg->helo, "\r\n <>") ||
      strpbrk(cfg->mail_from, "\r\n <>") || strpbrk(cfg->rcpt_to, "\r\n <>") ||
      !strchr(cfg->rcpt_to, '@')) {
    snprintf(err, errlen, "--helo/--from/--to must be short, without spaces, "
             "brackets or line breaks (and --to needs an @)");
    return -EINVAL;
  }
  return 0;
}

/* ---- DPDK engine options (checked here so both builds share them) ---- */

/* See bench.h. */
int bench_dpdk_parse_port(const char *s, struct bench_dpdk_config *dc)
{
  const char *colon = strchr(s, ':');
  size_t n;

  if (colon == NULL)
    return -EINVAL;
  n = (size_t)(colon - s);
  if (n == 6 && strncmp(s, "af_xdp", 6) == 0)
    dc->kind = BENCH_DPDK_AF_XDP;
  else if (n == 3 && strncmp(s, "tap", 3) == 0)
    dc->kind = BENCH_DPDK_TAP;
  else
    return -EINVAL;
  n = strlen(colon + 1);
  if (n == 0 || n >= sizeof(dc->ifname) || strpbrk(colon + 1, ",= /"))
    return -EINVAL;
  memcpy(dc->ifname, colon + 1, n + 1);
  return 0;
}

/* See bench.h. */
int bench_dpdk_parse_addr(const char *s, struct bench_dpdk_config *dc)
{
  char buf[INET6_ADDRSTRLEN + 8];
  char *slash, *end;
  unsigned long plen;
  struct in_addr a4;

  if (strlen(s) >= sizeof(buf))
    return -EINVAL;
  strcpy(buf, s);
  slash = strchr(buf, '/');
  if (slash == NULL)
    return -EINVAL;
  *slash = 0;
  errno = 0;
  plen = strtoul(slash + 1, &end, 10);
  if (errno || *end || end == slash + 1)
    return -EINVAL;
  if (inet_pton(AF_INET, buf, &a4) == 1) {
    if (plen < 1 || plen > 32)
      return -EINVAL;
    dc->local.ss_family = AF_INET;
    ((struct sockaddr_in *)&dc->local)->sin_addr = a4;
    dc->local_len = sizeof(struct sockaddr_in);
  } else {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&dc->local;
    if (inet_pton(AF_INET6, buf, &s6->sin6_addr) != 1 || plen < 1 || plen > 128)
      return -EINVAL;
    s6->sin6_family = AF_INET6;
    dc->local_len = sizeof(*s6);
  }
  dc->plen = (uint8_t)plen;
  return 0;
}

/* See bench.h. */
int bench_dpdk_check(const struct bench_config *cfg, const struct bench_dpdk_config *dc,
                     char *err, size_t errlen)
{
  char ab[INET6_ADDRSTRLEN];

  if (bench_config_check(cfg, err, errlen) < 0)
    return -EINVAL;
  if (dc->ifname[0] == 0) {
    snprintf(err, errlen, "--port af_xdp:IFACE or tap:IFACE is required");
    return -EINVAL;
  }
  if (dc->local_len == 0) {
    snprintf(err, errlen, "--addr ADDR/PREFIX (the port's own address) is required");
    return -EINVAL;
  }
  if (!bench_addr_allowed((const struct sockaddr *)&dc->local)) {
    const struct sockaddr *l = (const struct sockaddr *)&dc->local;
    inet_ntop(l->sa_family, l->sa_family == AF_INET
              ? (const void *)&((const struct sockaddr_in *)l)->sin_addr
              : (const void *)&((const struct sockaddr_in6 *)l)->sin6_addr, ab, sizeof(ab));
    snprintf(err, errlen, "--addr %s is outside 127.0.0.0/8, 198.18.0.0/15 and "
             "2001:db8::/32: refused", ab);
    return -EINVAL;
  }
  if (dc->local.ss_family != cfg->target.ss_family) {
    snprintf(err, errlen, "--addr and --target must be of the same address family");
    return -EINVAL;
  }
  if (cfg->mode == BENCH_HOLD) {
    snprintf(err, errlen, "--hold is not available with the DPDK engine");
    return -EINVAL;
  }
  if (cfg->n_sources) {
    snprintf(err, errlen, "--source is not used by the DPDK engine: sessions leave "
             "from --addr, each on its own port");
    return -EINVAL;
  }
  if (cfg->sessions > 28000) {
    snprintf(err, errlen, "--sessions %u: the DPDK engine has 28232 source ports "
             "per target; at most 28000 sessions", cfg->sessions);
    return -EINVAL;
  }
  return 0;
}
