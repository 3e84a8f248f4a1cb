/* The DPDK engine of mxedge-bench (mxedge-bench-dpdk): the SMTP client of
 * bench_engine.c driven over mxedge's own TCP/IP stack (tcp/, active open)
 * on one DPDK port, so the kernel's socket layer is no longer the client's
 * bottleneck when the server is the DPDK dataplane.
 *
 * One lcore does everything, run to completion, like a dataplane worker:
 * rx burst -> tcp_input_burst -> tcp_service -> socket events -> the
 * engine's session state machine (bench_sess_*) -> tcp_service -> tx burst.
 * The stack resolves the target's MAC by ARP/NDP itself; every session
 * connects from the port's one address with its own ephemeral port
 * (32768-61000: 28232 sessions per target at a time).
 *
 * Bounds are the socket engine's: bench_config_check refuses targets and
 * source addresses outside loopback, 198.18.0.0/15 and 2001:db8::/32
 * before EAL starts (no frame leaves before that check), and the duration
 * and grace caps end the run by themselves.
 */
#include "bench_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "tcp.h"

#define BENCH_NS_PER_S 1000000000ull
#define RX_DESC 1024
#define TX_DESC 1024
#define BURST 32
#define MBUF_CACHE 256
#define RETRY_NS (10ull * 1000 * 1000)   /* blocked senders are retried */
#define IDLE_SPIN_NS (20ull * 1000)      /* poll this long before napping */
#define IDLE_NAP_MAX_NS 1000000L
#define LINGER_NS (200ull * 1000 * 1000) /* let the last FINs/RSTs leave */

struct dpk {
  uint16_t port;
  struct rte_mempool *pool;
  struct tcp_stack *tcp;
  struct tcp_addr dst;
  uint16_t dport;
  struct rte_mbuf *txq[BURST];
  unsigned ntx;
  uint64_t tx_dropped, rx_frames, tx_frames;
};

static uint64_t mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * BENCH_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- frames ------------------------------------------------------------ */

static void rx_release(struct tcp_buf *b)
{
  rte_pktmbuf_free(b->opaque);
}

static void tx_flush(struct dpk *d)
{
  uint16_t sent;

  if (d->ntx == 0)
    return;
  sent = rte_eth_tx_burst(d->port, 0, d->txq, (uint16_t)d->ntx);
  d->tx_frames += sent;
  if (sent < d->ntx) {
    /* The port's ring is full: drop, TCP retransmits. */
    d->tx_dropped += d->ntx - sent;
    rte_pktmbuf_free_bulk(&d->txq[sent], d->ntx - sent);
  }
  d->ntx = 0;
}

static uint8_t *tx_alloc(void *ctx, uint32_t len, void **handle)
{
  struct dpk *d = ctx;
  struct rte_mbuf *m;

  if (len > RTE_MBUF_DEFAULT_DATAROOM)
    return NULL;
  m = rte_pktmbuf_alloc(d->pool);
  if (m == NULL) {
    d->tx_dropped++;
    return NULL;
  }
  *handle = m;
  return rte_pktmbuf_mtod(m, uint8_t *);
}

static void tx_send(void *ctx, void *handle, uint32_t len, const struct tcp_txmeta *meta)
{
  struct dpk *d = ctx;
  struct rte_mbuf *m = handle;

  (void)meta; /* the stack computes checksums (no offload configured) */
  m->data_len = (uint16_t)len;
  m->pkt_len = len;
  d->txq[d->ntx++] = m;
  if (d->ntx == BURST)
    tx_flush(d);
}

static unsigned rx_pass(struct dpk *d, uint64_t now)
{
  struct rte_mbuf *pkts[BURST];
  struct tcp_buf *bufs[BURST];
  uint16_t n, i;
  unsigned k = 0;

  n = rte_eth_rx_burst(d->port, 0, pkts, BURST);
  for (i = 0; i < n; i++) {
    struct rte_mbuf *m = pkts[i];
    struct tcp_buf *b = rte_mbuf_to_priv(m);

    if (m->nb_segs != 1) {   /* our MTU fits one mbuf */
      rte_pktmbuf_free(m);
      continue;
    }
    b->data = rte_pktmbuf_mtod(m, const uint8_t *);
    b->len = m->data_len;
    b->rx_flags = 0;
    if ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD)
      b->rx_flags |= TCP_RX_L3_CSUM_OK;
    if ((m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
      b->rx_flags |= TCP_RX_L4_CSUM_OK;
    b->release = rx_release;
    b->opaque = m;
    b->priv = NULL;
    bufs[k++] = b;
  }
  d->rx_frames += n;
  if (k)
    tcp_input_burst(d->tcp, bufs, k, now);
  return n;
}

/* ---- the transport for bench_engine.c ---------------------------------- */

static int dpk_open(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  struct dpk *d = t->io_ctx;
  struct tcp_conn *c = tcp_connect(d->tcp, &d->dst, d->dport, 0, now);

  if (c == NULL)
    return -errno;
  tcp_set_udata(c, s);
  s->conn = c;
  return 0;
}

static long dpk_send(struct bench_thread *t, struct bench_sess *s,
                     const struct iovec *v, int n)
{
  long total = 0;

  for (int i = 0; i < n; i++) {
    long k = tcp_send(s->conn, v[i].iov_base, v[i].iov_len);
    if (k < 0)
      return total ? total : -EPIPE;
    total += k;
    if ((size_t)k < v[i].iov_len)
      break;   /* a WRITABLE event follows once the peer acknowledges */
  }
  return total;
}

static void dpk_want_out(struct bench_thread *t, struct bench_sess *s, bool on)
{
  /* The stack posts TCP_EV_WRITABLE by itself after a short tcp_send. */
}

static void dpk_release(struct bench_thread *t, struct bench_sess *s, bool abortive)
{
  if (abortive)
    tcp_abort(s->conn);
  else
    tcp_close(s->conn);
}

static const struct bench_io dpk_io = {
  .open = dpk_open, .send = dpk_send, .want_out = dpk_want_out,
  .release = dpk_release,
};

/* Reads what the connection holds into the session's reply buffer. */
static void sess_read(struct bench_thread *t, struct bench_sess *s,
                      struct tcp_conn *c, uint64_t now)
{
  size_t avail;

  while (s->conn == c && (avail = tcp_recv_avail(c)) > 0) {
    size_t room = sizeof(s->rbuf) - s->rlen;
    size_t k = tcp_recv(c, s->rbuf + s->rlen, avail < room ? avail : room);
    if (k == 0)
      break;
    bench_sess_received(t, s, k, now);
  }
  if (s->conn == c && tcp_recv_eof(c))
    bench_sess_lost(t, s, now);
}

static unsigned handle_events(struct bench_thread *t, struct dpk *d, uint64_t now)
{
  struct tcp_event ev[64];
  unsigned n, total = 0;

  while ((n = tcp_events(d->tcp, ev, 64)) > 0) {
    total += n;
    for (unsigned i = 0; i < n; i++) {
      struct tcp_conn *c = ev[i].conn;
      struct bench_sess *s = tcp_get_udata(c);
      uint32_t e = ev[i].events;

      if (s == NULL || s->conn != c)
        continue;
      if (s->state == S_CONNECTING) {
        if (e & TCP_EV_CONNECTED) {
          bench_sess_connected(t, s, now);
        } else if (e & TCP_EV_CLOSED) {
          bench_sess_failed(t, s, ev[i].error ? ev[i].error : ECONNREFUSED, now);
          continue;
        }
      }
      if (s->conn == c && (e & TCP_EV_WRITABLE) && s->niov &&
          !bench_sess_flush(t, s, now))
        continue;
      if (s->conn == c && (e & (TCP_EV_READABLE | TCP_EV_EOF)))
        sess_read(t, s, c, now);
      if (s->conn == c && (e & TCP_EV_CLOSED))
        bench_sess_lost(t, s, now);
    }
  }
  return total;
}

/* Senders blocked on a full send buffer whose space came back without an
 * event (the stack's chunk pool is shared by all connections). */
static void retry_blocked(struct bench_thread *t, uint64_t now)
{
  for (unsigned i = 0; i < t->n; i++) {
    struct bench_sess *s = &t->s[i];
    if (s->conn && s->niov && s->state == S_ACTIVE && tcp_send_space(s->conn) > 0)
      bench_sess_flush(t, s, now);
  }
}

/* ---- setup ------------------------------------------------------------- */

static bool iface_is_virtual(const char *ifname)
{
  char path[128];
  struct stat st;

  snprintf(path, sizeof(path), "/sys/class/net/%s", ifname);
  if (stat(path, &st) != 0)
    return false;
  snprintf(path, sizeof(path), "/sys/class/net/%s/device", ifname);
  return stat(path, &st) != 0;
}

static int eal_start(const struct bench_dpdk_config *dc)
{
  char vdev[160], mem[16], lcore[16];
  char *argv[16];
  int argc = 0;

  snprintf(lcore, sizeof(lcore), "%u", dc->lcore);
  snprintf(mem, sizeof(mem), "%u", dc->mem_mb ? dc->mem_mb : 256);
  if (dc->kind == BENCH_DPDK_AF_XDP)
    snprintf(vdev, sizeof(vdev), "net_af_xdp0,iface=%s,queue_count=1%s", dc->ifname,
             iface_is_virtual(dc->ifname) ? ",busy_budget=0" : "");
  else
    snprintf(vdev, sizeof(vdev), "net_tap0,iface=%s", dc->ifname);
  argv[argc++] = (char *)"mxedge-bench-dpdk";
  argv[argc++] = (char *)"-l";
  argv[argc++] = lcore;
  argv[argc++] = (char *)"--no-shconf";
  argv[argc++] = (char *)"--no-telemetry";
  argv[argc++] = (char *)"--log-level=*:warning";
  /* No hugepages: the generator must run where CI runs (--in-memory is
   * refused with --no-huge by EAL), and a distinct prefix keeps it out of
   * the way of a dataplane on the same machine. */
  argv[argc++] = (char *)"--no-huge";
  argv[argc++] = (char *)"-m";
  argv[argc++] = mem;
  argv[argc++] = (char *)"--file-prefix=mxedge-bench";
  argv[argc++] = (char *)"--no-pci";
  argv[argc++] = (char *)"--vdev";
  argv[argc++] = vdev;
  argv[argc] = NULL;
  if (rte_eal_init(argc, argv) < 0) {
    fprintf(stderr, "mxedge-bench: DPDK EAL init failed: %s\n", rte_strerror(rte_errno));
    return -EIO;
  }
  return 0;
}

static int port_start(struct dpk *d, const char *ifname, unsigned nb_mbuf)
{
  struct rte_eth_conf conf;
  uint16_t nb_rx = RX_DESC, nb_tx = TX_DESC;
  int rc;

  if (rte_eth_dev_count_avail() != 1) {
    fprintf(stderr, "mxedge-bench: expected 1 DPDK port on %s, found %u\n", ifname,
            rte_eth_dev_count_avail());
    return -ENODEV;
  }
  RTE_ETH_FOREACH_DEV(d->port)
    break;
  d->pool = rte_pktmbuf_pool_create("bench_mbufs", nb_mbuf, MBUF_CACHE,
                                    RTE_ALIGN(sizeof(struct tcp_buf), RTE_MBUF_PRIV_ALIGN),
                                    RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
  if (d->pool == NULL) {
    fprintf(stderr, "mxedge-bench: cannot create mbuf pool (%u mbufs): %s; raise --mem\n",
            nb_mbuf, rte_strerror(rte_errno));
    return -ENOMEM;
  }
  memset(&conf, 0, sizeof(conf));
  if ((rc = rte_eth_dev_configure(d->port, 1, 1, &conf)) != 0 ||
      (rc = rte_eth_dev_adjust_nb_rx_tx_desc(d->port, &nb_rx, &nb_tx)) != 0 ||
      (rc = rte_eth_rx_queue_setup(d->port, 0, nb_rx, rte_eth_dev_socket_id(d->port),
                                   NULL, d->pool)) != 0 ||
      (rc = rte_eth_tx_queue_setup(d->port, 0, nb_tx, rte_eth_dev_socket_id(d->port),
                                   NULL)) != 0 ||
      (rc = rte_eth_dev_start(d->port)) != 0) {
    fprintf(stderr, "mxedge-bench: port %s setup failed: %s\n", ifname, rte_strerror(-rc));
    return rc < 0 ? rc : -rc;
  }
  rte_eth_promiscuous_enable(d->port);
  return 0;
}

static struct tcp_stack *stack_create(struct dpk *d, const struct bench_config *cfg,
                                      const struct bench_dpdk_config *dc)
{
  struct tcp_config tc;
  struct rte_ether_addr mac;

  memset(&tc, 0, sizeof(tc));
  rte_eth_macaddr_get(d->port, &mac);
  memcpy(tc.mac, mac.addr_bytes, 6);
  if (dc->local.ss_family == AF_INET) {
    const struct sockaddr_in *l = (const struct sockaddr_in *)&dc->local;
    tc.ip4 = l->sin_addr.s_addr;
    tc.ip4_mask = htonl(dc->plen == 32 ? 0xffffffffu : ~(0xffffffffu >> dc->plen));
  } else {
    const struct sockaddr_in6 *l = (const struct sockaddr_in6 *)&dc->local;
    memcpy(tc.ip6, &l->sin6_addr, 16);
    tc.ip6_prefixlen = dc->plen;
  }
  /* Sessions plus as many closing connections; the server closes first
   * after 221 (TIME_WAIT stays on its side). A 16 KiB send buffer holds a
   * pipelined 4 KB transaction several times over; the chunk pool covers
   * every buffer so a sender never waits on another's. */
  tc.max_conns = cfg->sessions * 2 + 64;
  tc.sndbuf = 16 * 1024;
  tc.tx_chunks = tc.max_conns * 8;
  tc.rx_segs = tc.max_conns * 4;
  /* Every first SYN waits for the target's ARP/NDP answer. */
  tc.neigh_pending = cfg->sessions + 64;
  tc.ops.ctx = d;
  tc.ops.tx_alloc = tx_alloc;
  tc.ops.tx_send = tx_send;
  return tcp_create(&tc);
}

static int fill_dst(struct dpk *d, const struct bench_config *cfg)
{
  memset(&d->dst, 0, sizeof(d->dst));
  if (cfg->target.ss_family == AF_INET) {
    const struct sockaddr_in *t = (const struct sockaddr_in *)&cfg->target;
    d->dst.family = 4;
    memcpy(d->dst.a, &t->sin_addr, 4);
    d->dport = ntohs(t->sin_port);
  } else {
    const struct sockaddr_in6 *t = (const struct sockaddr_in6 *)&cfg->target;
    d->dst.family = 6;
    memcpy(d->dst.a, &t->sin6_addr, 16);
    d->dport = ntohs(t->sin6_port);
  }
  return 0;
}

/* ARP/NDP for the target before the clock starts: only 8 frames wait per
 * unresolved neighbour, so a burst of first SYNs would otherwise lose all
 * but 8 and wait a whole retransmission timeout. Returns 0, or -errno
 * with a message. */
static int resolve_target(struct dpk *d, const struct bench_config *cfg,
                          const struct bench_dpdk_config *dc)
{
  uint64_t end = mono_ns() + 4 * BENCH_NS_PER_S;
  char ab[INET6_ADDRSTRLEN + 8];
  int rc;

  for (;;) {
    uint64_t now = mono_ns();
    struct tcp_event ev[8];
    rx_pass(d, now);
    tcp_service(d->tcp, now);
    while (tcp_events(d->tcp, ev, 8) > 0)
      ;
    rc = tcp_neigh_resolve(d->tcp, &d->dst, now);
    tx_flush(d);
    if (rc != -EAGAIN || now >= end)
      break;
    nanosleep(&(struct timespec){ 0, 200000 }, NULL);
  }
  if (rc == 0)
    return 0;
  bench_addr_str((const struct sockaddr *)&cfg->target, ab, sizeof(ab));
  if (rc == -EAGAIN) {
    fprintf(stderr, "mxedge-bench: no ARP/NDP answer from %s on %s within 4 s\n", ab,
            dc->ifname);
    return -EHOSTUNREACH;
  }
  fprintf(stderr, "mxedge-bench: cannot reach %s from --addr: %s\n", ab, strerror(-rc));
  return rc;
}

/* Runs until the engine's thread is done; SIGINT/SIGTERM (blocked by the
 * caller) stop it early. */
static void run_loop(struct bench_thread *t, struct dpk *d, const struct bench_dpdk_config *dc,
                     struct bench_result *res)
{
  const struct bench_config *cfg = t->cfg;
  struct bench_shared *g = t->g;
  sigset_t sigs;
  uint64_t next_slow = 0, next_retry = 0, next_progress = g->t0 + BENCH_NS_PER_S;
  uint64_t idle_since = 0, last_acc = 0, last_sess = 0;
  const long nap_base = (long)dc->idle_sleep_us * 1000;
  struct timespec nap = { 0, nap_base };
  struct timespec zero = { 0, 0 };

  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  if (nap_base)
    prctl(PR_SET_TIMERSLACK, 1000ul, 0ul, 0ul, 0ul);
  for (;;) {
    uint64_t now = mono_ns();
    unsigned work;

    if (now >= next_slow) {
      int sig = sigtimedwait(&sigs, NULL, &zero);
      if (sig == SIGINT || sig == SIGTERM) {
        fprintf(stderr, "mxedge-bench: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        __atomic_store_n(&g->stop, 1, __ATOMIC_RELAXED);
        res->stop_signal = sig;
      }
      if (cfg->progress && now >= next_progress) {
        bench_engine_progress(t, 1, cfg, (double)(now - g->t0) / BENCH_NS_PER_S,
                              &last_acc, &last_sess);
        next_progress += BENCH_NS_PER_S;
      }
      next_slow = now + 100ull * 1000 * 1000;
    }
    if (!bench_thread_tick(t, now))
      break;
    work = rx_pass(d, now);
    tcp_service(d->tcp, now);
    work += handle_events(t, d, now);
    if (now >= next_retry) {
      retry_blocked(t, now);
      next_retry = now + RETRY_NS;
    }
    tcp_service(d->tcp, now);
    work += d->ntx;
    tx_flush(d);
    /* Nap when nothing happens, as the dataplane's workers do: on a
     * shared machine a spinning client takes the CPU from the server it
     * measures. */
    if (work) {
      idle_since = now;
      nap.tv_nsec = nap_base;
    } else if (nap_base && now - idle_since >= IDLE_SPIN_NS) {
      nanosleep(&nap, NULL);
      if (nap.tv_nsec < IDLE_NAP_MAX_NS)
        nap.tv_nsec *= 2;
    }
  }
  bench_thread_end(t);
  /* The closes just queued (FIN or RST) must reach the server. */
  for (uint64_t end = mono_ns() + LINGER_NS, now; (now = mono_ns()) < end;) {
    struct tcp_event ev[64];
    rx_pass(d, now);
    tcp_service(d->tcp, now);
    while (tcp_events(d->tcp, ev, 64) > 0)
      ;
    tx_flush(d);
    struct tcp_stats st;
    tcp_stats_get(d->tcp, &st);
    if (st.conns_active == 0)
      break;
    nanosleep(&(struct timespec){ 0, 100000 }, NULL);
  }
}

/* See bench.h. */
int bench_dpdk_run(const struct bench_config *cfg, const struct bench_dpdk_config *dc,
                   struct bench_result *res)
{
  struct bench_shared *g = NULL;
  struct bench_thread *th = NULL;
  struct dpk d;
  char err[256];
  int rc;
  bool eal = false, port = false;

  memset(res, 0, sizeof(*res));
  memset(&d, 0, sizeof(d));
  if (bench_dpdk_check(cfg, dc, err, sizeof(err)) < 0) {
    fprintf(stderr, "mxedge-bench: %s\n", err);
    return -EINVAL;
  }
  fill_dst(&d, cfg);
  rc = eal_start(dc);
  if (rc < 0)
    return rc;
  eal = true;
  rc = port_start(&d, dc->ifname, RX_DESC + TX_DESC + 2 * MBUF_CACHE +
                  cfg->sessions * 4 + 4096);
  if (rc < 0)
    goto out;
  port = true;
  d.tcp = stack_create(&d, cfg, dc);
  if (d.tcp == NULL) {
    rc = -errno;
    fprintf(stderr, "mxedge-bench: tcp stack: %s\n", strerror(errno));
    goto out;
  }
  rc = resolve_target(&d, cfg, dc);
  if (rc < 0)
    goto out;
  rc = bench_engine_setup(cfg, 1, &dpk_io, &d, &g, &th);
  if (rc < 0)
    goto out;
  run_loop(&th[0], &d, dc, res);
  bench_engine_collect(g, th, 1, res);
  if (dc->stats) {
    struct tcp_stats st;
    tcp_stats_get(d.tcp, &st);
    fprintf(stderr, "mxedge-bench: port %s: rx %llu tx %llu frames, tx dropped %llu; "
            "tcp: connected %llu, retransmits %llu, reset %llu, timeout %llu\n",
            dc->ifname, (unsigned long long)d.rx_frames, (unsigned long long)d.tx_frames,
            (unsigned long long)d.tx_dropped, (unsigned long long)st.conns_connected,
            (unsigned long long)st.retransmits, (unsigned long long)st.conns_reset,
            (unsigned long long)st.conns_timeout);
    for (unsigned i = 0; i < TCP_DROP__COUNT; i++)
      if (st.drops[i])
        fprintf(stderr, "mxedge-bench: tcp drops %s: %llu\n", tcp_drop_reason_name(i),
                (unsigned long long)st.drops[i]);
  }
  rc = 0;
out:
  bench_engine_free(g, th, 1);
  tcp_destroy(d.tcp);
  for (unsigned i = 0; i < d.ntx; i++)
    rte_pktmbuf_free(d.txq[i]);
  if (port) {
    rte_eth_dev_stop(d.port);
    rte_eth_dev_close(d.port);
  }
  rte_mempool_free(d.pool);
  if (eal)
    rte_eal_cleanup();
  return rc;
}
