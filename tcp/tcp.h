/* tcp/: userspace TCP/IP stack (Ethernet, ARP, IPv4, ICMP, IPv6, NDP,
 * ICMPv6, TCP) with no I/O and no DPDK calls.
 *
 * Model: one struct tcp_stack per lcore. The caller hands it received frames
 * (tcp_input), a monotonic clock in nanoseconds on every call, and gets
 * frames to transmit through two callbacks (tx_alloc / tx_send) plus socket
 * events (tcp_events). Nothing in here is shared between instances and
 * nothing allocates after tcp_create(): every table and pool is sized from
 * struct tcp_config and preallocated.
 *
 * Typical loop (one lcore):
 *     n = rx_burst(bufs);                 // wrap each frame in a tcp_buf
 *     tcp_input_burst(st, bufs, n, now);  // stack owns the bufs now
 *     tcp_service(st, now);               // timers + pending output
 *     while ((k = tcp_events(st, ev, 64)) > 0) { app handles ev[] ...
 *         tcp_recv_peek/consume, tcp_send, tcp_close ... }
 *     tcp_service(st, now);               // flushes what the app queued
 */
#ifndef MXEDGE_TCP_H
#define MXEDGE_TCP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tcp_stack;
struct tcp_conn;

/* A received frame. The caller fills data/len (the Ethernet frame), release
 * and opaque; the stack may keep the frame by reference (received payload is
 * queued without copying) and calls release(buf) exactly once when it is
 * done with it, possibly long after tcp_input() returned. The tcp_buf itself
 * must stay valid until release runs (embed it in the mbuf's private area or
 * in the caller's own buffer). release may be NULL for buffers that need no
 * release. */
struct tcp_buf {
	const uint8_t *data;
	uint32_t len;
	uint32_t rx_flags;              /* TCP_RX_* below */
	void (*release)(struct tcp_buf *buf);
	void *opaque;                   /* caller's (e.g. the rte_mbuf) */
	/* Stack-private link while the buffer is held; caller leaves it alone. */
	void *priv;
};

/* rx_flags: the port already verified these checksums (DPDK
 * RTE_MBUF_F_RX_IP_CKSUM_GOOD / RTE_MBUF_F_RX_L4_CKSUM_GOOD). */
#define TCP_RX_L3_CSUM_OK  0x1u
#define TCP_RX_L4_CSUM_OK  0x2u

/* Metadata passed with each transmitted frame (for checksum offload). */
struct tcp_txmeta {
	uint16_t l2_len, l3_len, l4_len;
	uint16_t is_ipv6;
	uint32_t flags;                 /* TCP_TX_* below */
};
/* The stack left the checksum for the port to fill: IPv4 header checksum is
 * 0, the TCP checksum field holds the pseudo-header sum (DPDK convention). */
#define TCP_TX_IP_CSUM   0x1u
#define TCP_TX_L4_CSUM   0x2u

/* Frame output. tx_alloc returns a writable buffer of at least len bytes
 * and a caller handle, or NULL when the caller has no buffer (the frame is
 * dropped and counted; TCP recovers by retransmission). tx_send hands the
 * filled frame (exactly len bytes) back for transmission; the caller owns
 * the buffer again from then on. Both are called only from inside
 * tcp_input/tcp_service/tcp_connect. */
struct tcp_ops {
	void *ctx;
	uint8_t *(*tx_alloc)(void *ctx, uint32_t len, void **handle);
	void (*tx_send)(void *ctx, void *handle, uint32_t len,
	                const struct tcp_txmeta *meta);
};

/* Instance configuration; zero means "default" for every numeric field. */
struct tcp_config {
	uint8_t mac[6];
	uint16_t vlan_id;               /* 0: untagged; else 802.1Q VID */
	uint16_t mtu;                   /* IP MTU, default 1500 */
	/* IPv4 (all zero: IPv4 disabled). Network byte order. */
	uint32_t ip4, ip4_mask, ip4_gw;
	/* IPv6 (all zero: IPv6 disabled); gw may be link-local. */
	uint8_t ip6[16];
	uint8_t ip6_prefixlen;
	uint8_t ip6_gw[16];

	uint32_t max_conns;             /* default 1024 (includes TIME_WAIT) */
	uint32_t syn_backlog;           /* half-open before cookies, def max_conns/4 */
	uint32_t sndbuf;                /* per conn send buffer, def 64 KiB */
	uint32_t rcvbuf;                /* per conn receive limit, def 64 KiB */
	uint32_t tx_chunks;             /* 2 KiB send chunks, def max_conns*4 */
	uint32_t rx_segs;               /* held rx segments, def max_conns*8 */
	uint32_t ooo_max_segs;          /* per conn out-of-order segs, def 64 */
	uint32_t neigh_size;            /* ARP/NDP entries, def 256; at most half unresolved */
	uint32_t neigh_pending;         /* frames awaiting resolution, def 64 */

	uint32_t rto_min_ms;            /* default 200 (Linux); RFC 6298 1 s */
	uint32_t rto_max_ms;            /* default 60000 */
	uint32_t rto_init_ms;           /* default 1000 (RFC 6298 2.1) */
	uint32_t delack_ms;             /* default 40 */
	uint32_t msl_ms;                /* TIME_WAIT = 2*MSL, default 30000 */
	uint32_t max_retries;           /* RTO retransmissions, default 12 */
	uint32_t syn_retries;           /* default 5 */
	uint32_t keepalive_ms;          /* 0: keepalive off */
	uint32_t neigh_timeout_ms;      /* default 60000 */

	/* Feature switches (options offered in our SYN / SYN-ACK). */
	uint8_t no_sack, no_timestamps, no_wscale;
	uint8_t syncookies;             /* 0: under pressure, 1: always, 2: never */
	uint8_t tx_csum_offload;        /* port fills IPv4 + TCP checksums */
	uint8_t cc_reno;                /* 1: NewReno instead of CUBIC */
	uint8_t no_tlp;                 /* 1: no tail loss probes (RFC 8985 7) */
	/* Secret for ISNs (RFC 6528), SYN cookies and table hashing. All zero:
	 * drawn from getrandom() at creation. Tests set it for determinism. */
	uint8_t secret[16];

	struct tcp_ops ops;
};

/* Address of an endpoint: IPv4 in the first 4 bytes when family == 4. */
struct tcp_addr {
	uint8_t family;                 /* 4 or 6 */
	uint8_t a[16];
};

enum tcp_state {
	TCP_CLOSED = 0, TCP_LISTEN, TCP_SYN_SENT, TCP_SYN_RCVD, TCP_ESTABLISHED,
	TCP_FIN_WAIT_1, TCP_FIN_WAIT_2, TCP_CLOSE_WAIT, TCP_CLOSING,
	TCP_LAST_ACK, TCP_TIME_WAIT,
};

/* Event bits (a connection's pending events are OR-ed together). */
#define TCP_EV_ACCEPT     0x01u  /* passive open completed: app owns conn */
#define TCP_EV_CONNECTED  0x02u  /* active open completed */
#define TCP_EV_READABLE   0x04u  /* new in-order data (or EOF) to read */
#define TCP_EV_WRITABLE   0x08u  /* send buffer space freed after full */
#define TCP_EV_EOF        0x10u  /* peer sent FIN; no more data will come */
#define TCP_EV_CLOSED     0x20u  /* connection gone; error says why */

struct tcp_event {
	struct tcp_conn *conn;
	uint32_t events;
	int error;                      /* with CLOSED: 0, ECONNRESET,
	                                   ETIMEDOUT, ECONNREFUSED */
};

/* Read-only view into received data (zero-copy, points into held frames). */
struct tcp_iov {
	const uint8_t *base;
	uint32_t len;
};

struct tcp_conn_info {
	struct tcp_addr local, remote;
	uint16_t lport, rport;
	enum tcp_state state;
	uint32_t mss;                   /* effective send MSS */
	uint32_t snd_wscale, rcv_wscale;
	uint32_t sack_ok, ts_ok;
	uint32_t srtt_us, rto_us, cwnd, ssthresh;
	uint32_t snd_queued, rcv_queued;
	uint64_t retransmits;
};

/* Drop/event counters. Every dropped frame increments exactly one drop_*
 * reason (tcp_drop_reason_name gives names; tcp_stats_get fills all). */
enum tcp_drop {
	TCP_DROP_TRUNCATED = 0, TCP_DROP_ETH_TYPE, TCP_DROP_NOT_US, TCP_DROP_VLAN,
	TCP_DROP_IP_HDR, TCP_DROP_IP_CSUM, TCP_DROP_IP_FRAG, TCP_DROP_IP_PROTO,
	TCP_DROP_ARP_BAD, TCP_DROP_ICMP_BAD, TCP_DROP_ICMP_CSUM, TCP_DROP_NDP_BAD,
	TCP_DROP_TCP_HDR, TCP_DROP_TCP_CSUM, TCP_DROP_TCP_OPTS,
	TCP_DROP_NO_CONN, TCP_DROP_NO_LISTENER, TCP_DROP_BAD_FLAGS,
	TCP_DROP_SEQ_OUT_OF_WINDOW, TCP_DROP_PAWS, TCP_DROP_ACK_INVALID,
	TCP_DROP_RST_INVALID, TCP_DROP_SYN_IN_WINDOW, TCP_DROP_BAD_COOKIE,
	TCP_DROP_CONN_LIMIT, TCP_DROP_RX_MEM, TCP_DROP_OOO_LIMIT,
	TCP_DROP_TX_NOBUF, TCP_DROP_NEIGH_PENDING, TCP_DROP_NEIGH_FULL,
	TCP_DROP_DUP_DATA, TCP_DROP_NO_ROUTE,
	TCP_DROP__COUNT
};

struct tcp_stats {
	uint64_t rx_frames, tx_frames;
	uint64_t rx_segs, tx_segs, retransmits, fast_retransmits, rto_fired;
	uint64_t rec_probes;            /* SACK recovery re-probes (no RTO) */
	uint64_t tlp_probes;            /* tail loss probes sent */
	uint64_t syn_rcvd, syncookies_sent, syncookies_ok, challenge_acks;
	uint64_t conns_accepted, conns_connected, conns_reset, conns_timeout;
	uint64_t time_wait_reused, time_wait_recycled;
	uint64_t neigh_evicted;         /* entries replaced to make room */
	uint64_t arp_replies, arp_requests, icmp_echo, icmp6_echo, ndp_adverts,
	         ndp_solicits, pmtu_updates;
	uint64_t conns_active;          /* current, not a counter */
	uint64_t drops[TCP_DROP__COUNT];
};

/* Creates an instance. cfg is copied. Returns NULL with errno EINVAL (bad
 * configuration) or ENOMEM. The caller owns the result (tcp_destroy). */
struct tcp_stack *tcp_create(const struct tcp_config *cfg);

/* Frees the instance, releasing every held tcp_buf. Connections vanish
 * without sending anything. NULL is accepted. */
void tcp_destroy(struct tcp_stack *st);

/* Processes one received frame at time now (ns, monotonic). Takes ownership
 * of buf (release is called once, now or later). Never fails: bad frames are
 * dropped and counted. */
void tcp_input(struct tcp_stack *st, struct tcp_buf *buf, uint64_t now);

/* tcp_input for n frames; returns n. */
unsigned tcp_input_burst(struct tcp_stack *st, struct tcp_buf **bufs,
                         unsigned n, uint64_t now);

/* Runs expired timers and transmits what is pending (data queued by the
 * app, window updates, delayed work). Call after each input burst, after the
 * app acted on events, and at least every millisecond or so when idle.
 * Returns 0. */
int tcp_service(struct tcp_stack *st, uint64_t now);

/* Pops up to max pending events into ev[]; returns the count (0 if none). */
unsigned tcp_events(struct tcp_stack *st, struct tcp_event *ev, unsigned max);

/* Accepts passive opens on port (host order) for every configured address
 * family. Returns 0, -EEXIST, -ENOSPC (16 listeners max) or -EINVAL. */
int tcp_listen(struct tcp_stack *st, uint16_t port);

/* Stops accepting on port; established connections stay. 0 or -ENOENT. */
int tcp_unlisten(struct tcp_stack *st, uint16_t port);

/* Active open to dst:dport from the configured address of dst's family and
 * lport (0: an ephemeral port). Returns the connection (owned by the app
 * until tcp_close) or NULL with errno EINVAL, EADDRINUSE, ENOBUFS (budget),
 * EAFNOSUPPORT. The SYN goes out now (or after neighbour resolution). */
struct tcp_conn *tcp_connect(struct tcp_stack *st, const struct tcp_addr *dst,
                             uint16_t dport, uint16_t lport, uint64_t now);

/* Queues up to len bytes for sending (copied). Returns the bytes accepted
 * (may be less than len: send buffer full; a WRITABLE event follows when
 * space frees), -EPIPE after shutdown/close or on a dead connection,
 * -ENOTCONN before the handshake completed. Data leaves on tcp_service;
 * writes between two tcp_service calls coalesce into full segments. */
long tcp_send(struct tcp_conn *c, const void *data, size_t len);

/* Bytes that tcp_send would accept right now. */
size_t tcp_send_space(const struct tcp_conn *c);

/* Fills up to max views of in-order received data without copying; returns
 * the view count. Views stay valid until tcp_recv_consume/tcp_close. */
unsigned tcp_recv_peek(struct tcp_conn *c, struct tcp_iov *iov, unsigned max);

/* Releases the first n received bytes (n <= tcp_recv_avail). Opens the
 * receive window (a window update goes out on tcp_service if it matters).
 * Returns 0 or -EINVAL. */
int tcp_recv_consume(struct tcp_conn *c, size_t n);

/* Received in-order bytes waiting to be consumed. */
size_t tcp_recv_avail(const struct tcp_conn *c);

/* Copies up to len received bytes to dst and consumes them. Returns the
 * count, 0 at EOF or when nothing is queued (check tcp_recv_eof). */
size_t tcp_recv(struct tcp_conn *c, void *dst, size_t len);

/* True once the peer's FIN has been received and all data before it read. */
int tcp_recv_eof(const struct tcp_conn *c);

/* Half close: a FIN follows the queued data. 0 or -ENOTCONN. */
int tcp_shutdown(struct tcp_conn *c);

/* Graceful close and release of the handle: queued data and a FIN are sent,
 * the stack finishes the close (TIME_WAIT etc.) on its own; a close that
 * cannot finish within 2*MSL (e.g. the peer keeps a zero window) is reset.
 * Unread received data makes it an abortive close (RST, RFC 9293 3.10.4 /
 * RFC 2525 2.17). The handle is invalid after this call. */
void tcp_close(struct tcp_conn *c);

/* Abortive close: sends RST, releases the handle. */
void tcp_abort(struct tcp_conn *c);

/* App pointer stored with the connection. */
void tcp_set_udata(struct tcp_conn *c, void *udata);
void *tcp_get_udata(const struct tcp_conn *c);

/* Connection details (addresses, state, options, RTT, windows). */
void tcp_conn_get_info(const struct tcp_conn *c, struct tcp_conn_info *info);

/* Adds or replaces a static neighbour (ARP/NDP) entry; addr is IPv4
 * (family 4) or IPv6. 0, -ENOSPC or -EINVAL. */
int tcp_neigh_add(struct tcp_stack *st, const struct tcp_addr *addr,
                  const uint8_t mac[6]);

/* Starts or checks the link-layer resolution of the next hop towards addr
 * (ARP, RFC 826; NDP, RFC 4861 7.2) without sending anything else, so an
 * active opener can learn its peer's MAC before a burst of SYNs (only 8
 * frames wait per unresolved neighbour). Returns 0 when the MAC is known,
 * -EAGAIN while a request is out (one is sent now when none is; the stack
 * re-probes every second and gives up after 3, as for any neighbour),
 * -ENETUNREACH without a route, -EAFNOSUPPORT for a family not configured,
 * -EINVAL, or -ENOSPC when the table has no room. */
int tcp_neigh_resolve(struct tcp_stack *st, const struct tcp_addr *addr, uint64_t now);

/* Copies the counters. */
void tcp_stats_get(const struct tcp_stack *st, struct tcp_stats *out);

/* Name of a drop reason ("truncated", "tcp_csum", ...), "?" if out of range. */
const char *tcp_drop_reason_name(unsigned reason);

/* Name of a state ("ESTABLISHED", ...). */
const char *tcp_state_name(enum tcp_state s);

/* Bytes of stack state per connection (the fixed per-connection struct,
 * excluding buffered data), and the instance's total preallocated memory. */
size_t tcp_conn_state_size(void);
size_t tcp_stack_mem_size(const struct tcp_stack *st);

#ifdef __cplusplus
}
#endif
#endif /* MXEDGE_TCP_H */
