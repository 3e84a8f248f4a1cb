/* tcp/: userspace TCP/IP stack. See tcp.h for the model and API.
 *
 * Layout of this file: helpers (SipHash, checksums), data structures, the
 * hierarchical timer wheel, buffer pools, neighbour cache (ARP/NDP), frame
 * output, TCP output, TCP input (RFC 9293 3.10.7), ICMP/ICMPv6, Ethernet
 * dispatch, and the public API at the end. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <arpa/inet.h>

#include "tcp.h"
#include "tcp_int.h"

/* ------------------------------------------------------------------ */
/* SipHash-2-4 and checksums                                          */

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                        \
	do {                                                            \
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32); \
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                \
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                \
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32); \
	} while (0)

static uint64_t rd64le(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* See tcp_int.h. */
uint64_t tcp_siphash(const uint8_t key[16], const void *data, size_t len)
{
	const uint8_t *in = data;
	uint64_t k0 = rd64le(key), k1 = rd64le(key + 8);
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
	uint64_t b = (uint64_t)len << 56, m;
	size_t i, full = len & ~(size_t)7;

	for (i = 0; i < full; i += 8) {
		m = rd64le(in + i);
		v3 ^= m; SIPROUND; SIPROUND; v0 ^= m;
	}
	for (size_t j = 0; j < (len & 7); j++)
		b |= (uint64_t)in[full + j] << (8 * j);
	v3 ^= b; SIPROUND; SIPROUND; v0 ^= b;
	v2 ^= 0xff;
	SIPROUND; SIPROUND; SIPROUND; SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* See tcp_int.h. */
uint32_t tcp_csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t s = sum;
	while (len >= 8) {
		uint32_t a, b;
		memcpy(&a, p, 4);
		memcpy(&b, p + 4, 4);
		s += (uint64_t)a + b;
		p += 8;
		len -= 8;
	}
	while (len >= 2) {
		uint16_t w;
		memcpy(&w, p, 2);
		s += w;
		p += 2;
		len -= 2;
	}
	if (len) {
		uint16_t w = 0;
		memcpy(&w, p, 1);
		s += w;
	}
	while (s >> 32)
		s = (s & 0xffffffffu) + (s >> 32);
	return (uint32_t)s;
}

/* See tcp_int.h. */
uint16_t tcp_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static uint32_t csum_pseudo(int v6, const uint8_t *src, const uint8_t *dst,
                            uint8_t proto, uint32_t len)
{
	uint32_t s = 0;
	if (v6) {
		uint32_t l = htonl(len), nh = htonl(proto);
		s = tcp_csum_add(s, src, 16);
		s = tcp_csum_add(s, dst, 16);
		s = tcp_csum_add(s, &l, 4);
		s = tcp_csum_add(s, &nh, 4);
	} else {
		uint16_t w[2] = { htons(proto), htons((uint16_t)len) };
		s = tcp_csum_add(s, src, 4);
		s = tcp_csum_add(s, dst, 4);
		s = tcp_csum_add(s, w, 4);
	}
	return s;
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static inline void wr32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = (v >> 16) & 0xff; p[2] = (v >> 8) & 0xff; p[3] = v & 0xff;
}

/* ------------------------------------------------------------------ */
/* Data structures                                                    */

#define ETH_P_IP    0x0800
#define ETH_P_ARP   0x0806
#define ETH_P_IPV6  0x86dd
#define ETH_P_8021Q 0x8100

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10
#define TH_URG 0x20

#define NS_PER_MS 1000000ULL
#define NS_PER_US 1000ULL
#define CHUNK_SIZE 2048u
#define NIL UINT32_MAX
#define MAX_LISTEN 16
#define SB_MAX 6                 /* SACK scoreboard ranges kept per conn */
#define WHEEL_BITS 6
#define WHEEL_SLOTS (1u << WHEEL_BITS)
#define WHEEL_LEVELS 4
#define TICK_SHIFT 20            /* one tick = 2^20 ns ~ 1.05 ms */
#define MAX_FRAME(st) ((uint32_t)(st)->cfg.mtu + 18u)

/* A received segment held by reference. */
struct seg {
	struct seg *next;
	struct tcp_buf *buf;
	const uint8_t *data;
	uint32_t seq, len;
	uint8_t fin;
};

struct tnode {                   /* timer wheel entry (intrusive) */
	struct tnode *next, **pprev;
	uint64_t expire;         /* tick */
	uint8_t lvl;
};

struct sackblk { uint32_t s, e; };

enum {
	CF_SACK = 1u << 0, CF_TS = 1u << 1, CF_WS = 1u << 2,
	CF_APP_OWNED = 1u << 3, CF_APP_CLOSED = 1u << 4, CF_PASSIVE = 1u << 5,
	CF_FIN_QUEUED = 1u << 6, CF_FIN_SENT = 1u << 7, CF_PEER_FIN = 1u << 8,
	CF_IN_REC = 1u << 9, CF_PERSIST = 1u << 10, CF_ON_OUTQ = 1u << 11,
	CF_WANT_WRITABLE = 1u << 12, CF_ON_EVQ = 1u << 13, CF_HASHED = 1u << 14,
	CF_ACK_NOW = 1u << 15, CF_V6 = 1u << 16, CF_ON_TW = 1u << 17,
	CF_RTT_TIMING = 1u << 18, CF_DEAD = 1u << 19, CF_IN_USE = 1u << 20,
	CF_WIN_UPDATE = 1u << 21, CF_HALF_OPEN = 1u << 22, CF_KEEP_PROBE = 1u << 23,
	CF_REC_PROBE = 1u << 24, CF_TLP = 1u << 25, CF_TLP_DONE = 1u << 26,
};

struct tcp_conn {
	struct tcp_stack *st;
	struct tcp_conn *hnext;                 /* hash chain / free list */
	struct tcp_conn *ev_next, *ev_prev;     /* event queue */
	struct tcp_conn *tw_next, *tw_prev;     /* TIME_WAIT FIFO */
	struct tcp_conn *out_next;              /* output queue */
	struct tnode tn;
	void *udata;

	uint8_t laddr[16], raddr[16];
	uint16_t lport, rport;
	uint8_t state;
	uint8_t snd_ws, rcv_ws;
	uint8_t backoff, dupacks, retries;
	uint32_t flags;
	uint32_t hash;

	/* send side (RFC 9293 3.3.1) */
	uint32_t iss, snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2;
	uint32_t max_snd_wnd;                   /* RFC 5961 5.2 */
	uint16_t mss, peer_mss;
	uint32_t sq_seq, sq_len, sq_off;        /* send queue: seq of first byte,
	                                           bytes, offset in head chunk */
	uint32_t sq_head, sq_tail;              /* chunk indices */

	/* receive side */
	uint32_t irs, rcv_nxt, rcv_adv;         /* rcv_adv: right edge sent */
	uint32_t last_ack_sent;
	struct seg *rq_head, *rq_tail, *ooo;
	uint32_t rq_bytes, rq_off, rq_segs, ooo_bytes;
	uint16_t ooo_segs, unacked_segs;
	uint32_t last_ooo_seq;

	/* timestamps (RFC 7323) */
	uint32_t ts_recent, ts_off;

	/* RTT (RFC 6298), microseconds */
	uint32_t srtt, rttvar, rto;
	uint32_t rtt_seq;
	uint64_t rtt_t0;

	/* congestion control: bytes */
	uint32_t cwnd, ssthresh, recover, rexmit_nxt, high_sack;
	uint8_t nsb;
	struct sackblk sb[SB_MAX];
	double cu_wmax, cu_k, cu_west;          /* CUBIC (RFC 9438), segments */
	uint64_t cu_epoch;                      /* ns, 0 = not in CA epoch */

	/* timers: absolute ns, 0 = off */
	uint64_t t_rtx, t_delack, t_keep;
	uint64_t last_rx;

	uint32_t ev_mask;
	int16_t error;
	uint64_t retransmits;
};

struct neigh {
	uint8_t addr[16];
	uint8_t mac[6];
	uint8_t state;           /* 0 free, 1 incomplete, 2 reachable, 3 static */
	uint8_t v6, probes, npend;
	uint32_t next;           /* hash chain */
	uint32_t pend_head;      /* pending frame list */
	uint64_t expires, last_probe;
	uint64_t born;           /* creation order: oldest unresolved goes first */
};

enum { NB_FREE, NB_INCOMPLETE, NB_REACHABLE, NB_STATIC };

struct tcp_stack {
	struct tcp_config cfg;
	uint64_t now;
	int has4, has6;
	uint8_t ip6_ll[16];              /* our link-local (from MAC, EUI-64) */

	/* connections */
	struct tcp_conn *conns;
	struct tcp_conn *free_conns;
	struct tcp_conn **htab;
	uint32_t hmask;
	uint32_t nconns, nhalfopen;
	struct tcp_conn *tw_head, *tw_tail;
	struct tcp_conn *ev_head, *ev_tail;
	struct tcp_conn *out_head;
	uint16_t listen[MAX_LISTEN];
	uint32_t nlisten;
	uint32_t eph_next;

	/* pools */
	struct seg *segs, *free_segs;
	uint32_t nsegs_free;
	uint8_t *chunk_mem;
	uint32_t *chunk_next;
	uint32_t chunk_free, nchunks_free;

	/* neighbours */
	struct neigh *nb;
	uint32_t *nb_htab, nb_hmask;
	uint64_t nb_births;
	uint8_t *pend_mem;
	uint32_t *pend_len, *pend_next, pend_free;
	uint64_t next_housekeep;

	/* timer wheel */
	struct tnode *wheel[WHEEL_LEVELS][WHEEL_SLOTS];
	uint64_t wheel_tick;
	uint32_t wheel_count;
	uint32_t wheel_lvl_count[WHEEL_LEVELS];

	/* RFC 5961 section 7: challenge ACK rate limit */
	uint64_t chal_window;
	uint32_t chal_count;

	size_t memsize;
	struct tcp_stats stats;
};

static const char *const drop_names[TCP_DROP__COUNT] = {
	"truncated", "eth_type", "not_us", "vlan", "ip_hdr", "ip_csum",
	"ip_frag", "ip_proto", "arp_bad", "icmp_bad", "icmp_csum", "ndp_bad",
	"tcp_hdr", "tcp_csum", "tcp_opts", "no_conn", "no_listener",
	"bad_flags", "seq_out_of_window", "paws", "ack_invalid", "rst_invalid",
	"syn_in_window", "bad_cookie", "conn_limit", "rx_mem", "ooo_limit",
	"tx_nobuf", "neigh_pending", "neigh_full", "dup_data", "no_route",
};

static inline void drop(struct tcp_stack *st, enum tcp_drop r)
{
	st->stats.drops[r]++;
}

static void buf_release(struct tcp_buf *b)
{
	if (b && b->release)
		b->release(b);
}

/* ------------------------------------------------------------------ */
/* Hierarchical timer wheel: 4 levels x 64 slots, ~1 ms ticks, O(1)     */
/* insert and cancel; entries cascade down as time advances (the        */
/* classic Linux timer-wheel scheme).                                   */

static void wheel_link(struct tcp_stack *st, struct tnode *n)
{
	uint64_t delta = n->expire - st->wheel_tick;
	unsigned lvl;
	uint64_t max = (1ULL << (WHEEL_BITS * WHEEL_LEVELS)) - 1;

	if ((int64_t)delta < 0) {
		delta = 0;
		n->expire = st->wheel_tick;
	}
	if (delta > max) {
		delta = max;
		n->expire = st->wheel_tick + max;
	}
	for (lvl = 0; lvl < WHEEL_LEVELS - 1; lvl++)
		if (delta < (1ULL << (WHEEL_BITS * (lvl + 1))))
			break;
	unsigned idx = (unsigned)(n->expire >> (WHEEL_BITS * lvl)) & (WHEEL_SLOTS - 1);
	struct tnode **head = &st->wheel[lvl][idx];
	n->lvl = (uint8_t)lvl;
	st->wheel_lvl_count[lvl]++;
	n->next = *head;
	if (n->next)
		n->next->pprev = &n->next;
	n->pprev = head;
	*head = n;
}

static void wheel_del(struct tcp_stack *st, struct tnode *n)
{
	if (!n->pprev)
		return;
	*n->pprev = n->next;
	if (n->next)
		n->next->pprev = n->pprev;
	n->next = NULL;
	n->pprev = NULL;
	st->wheel_count--;
	st->wheel_lvl_count[n->lvl]--;
}

static void wheel_add(struct tcp_stack *st, struct tnode *n, uint64_t expire_tick)
{
	wheel_del(st, n);
	n->expire = expire_tick;
	wheel_link(st, n);
	st->wheel_count++;
}

static void conn_timer_fire(struct tcp_conn *c, uint64_t now);

/* Advances the wheel to the tick of now, firing expired entries. */
static void wheel_advance(struct tcp_stack *st, uint64_t now)
{
	uint64_t target = now >> TICK_SHIFT;

	if (st->wheel_count == 0) {
		if (target > st->wheel_tick)
			st->wheel_tick = target;
		return;
	}
	while (st->wheel_tick < target) {
		/* Nothing can happen before the next boundary of the lowest
		 * non-empty level: jump there (keeps large clock steps cheap). */
		unsigned low = 0;
		while (low < WHEEL_LEVELS - 1 && st->wheel_lvl_count[low] == 0)
			low++;
		if (low > 0) {
			uint64_t mask = (1ULL << (WHEEL_BITS * low)) - 1;
			uint64_t skip_to = st->wheel_tick | mask;     /* last tick before boundary */
			if (skip_to > st->wheel_tick)
				st->wheel_tick = skip_to < target ? skip_to : target;
			if (st->wheel_tick >= target)
				break;
		}
		st->wheel_tick++;
		uint64_t t = st->wheel_tick;
		/* Cascade: when a level's index wraps, the next level's current
		 * slot is redistributed into the lower levels. */
		for (unsigned lvl = 1; lvl < WHEEL_LEVELS; lvl++) {
			if (t & ((1ULL << (WHEEL_BITS * lvl)) - 1))
				break;
			unsigned idx = (unsigned)(t >> (WHEEL_BITS * lvl)) & (WHEEL_SLOTS - 1);
			struct tnode *n = st->wheel[lvl][idx];
			st->wheel[lvl][idx] = NULL;
			while (n) {
				struct tnode *nx = n->next;
				st->wheel_lvl_count[lvl]--;
				wheel_link(st, n);
				n = nx;
			}
		}
		unsigned idx0 = (unsigned)t & (WHEEL_SLOTS - 1);
		while (st->wheel[0][idx0]) {
			struct tnode *n = st->wheel[0][idx0];
			wheel_del(st, n);
			struct tcp_conn *c = (struct tcp_conn *)((char *)n - offsetof(struct tcp_conn, tn));
			conn_timer_fire(c, now);
		}
		if (st->wheel_count == 0) {
			st->wheel_tick = target;
			break;
		}
	}
}

/* Re-arms the connection's single wheel entry at its earliest deadline. */
static void conn_timer_update(struct tcp_conn *c)
{
	uint64_t d = 0;
	if (c->t_rtx)
		d = c->t_rtx;
	if (c->t_delack && (!d || c->t_delack < d))
		d = c->t_delack;
	if (c->t_keep && (!d || c->t_keep < d))
		d = c->t_keep;
	if (!d) {
		wheel_del(c->st, &c->tn);
		return;
	}
	/* Round up so a timer never fires before its deadline. */
	uint64_t tick = (d + (1ULL << TICK_SHIFT) - 1) >> TICK_SHIFT;
	if (c->tn.pprev && c->tn.expire == tick)
		return;
	wheel_add(c->st, &c->tn, tick);
}

/* ------------------------------------------------------------------ */
/* Pools                                                              */

static struct seg *seg_alloc(struct tcp_stack *st)
{
	struct seg *s = st->free_segs;
	if (!s)
		return NULL;
	st->free_segs = s->next;
	st->nsegs_free--;
	s->next = NULL;
	return s;
}

static void seg_free(struct tcp_stack *st, struct seg *s)
{
	buf_release(s->buf);
	s->buf = NULL;
	s->next = st->free_segs;
	st->free_segs = s;
	st->nsegs_free++;
}

static uint32_t chunk_alloc(struct tcp_stack *st)
{
	uint32_t i = st->chunk_free;
	if (i == NIL)
		return NIL;
	st->chunk_free = st->chunk_next[i];
	st->chunk_next[i] = NIL;
	st->nchunks_free--;
	return i;
}

static void chunk_free(struct tcp_stack *st, uint32_t i)
{
	st->chunk_next[i] = st->chunk_free;
	st->chunk_free = i;
	st->nchunks_free++;
}

static inline uint8_t *chunk_ptr(struct tcp_stack *st, uint32_t i)
{
	return st->chunk_mem + (size_t)i * CHUNK_SIZE;
}

/* Under pressure (RFC 4987 / DESIGN.md backpressure): few free connection
 * slots or rx segments left. New SYNs get cookies, windows shrink. */
static int under_pressure(const struct tcp_stack *st)
{
	uint32_t mc = st->cfg.max_conns;
	return st->nconns + mc / 8 >= mc ||
	       st->nsegs_free < st->cfg.rx_segs / 8;
}

/* ------------------------------------------------------------------ */
/* Connection table                                                   */

static uint32_t tuple_hash(const struct tcp_stack *st, int v6, const uint8_t *la,
                           uint16_t lp, const uint8_t *ra, uint16_t rp)
{
	uint8_t k[36];
	size_t al = v6 ? 16 : 4;
	memcpy(k, la, al);
	memcpy(k + al, ra, al);
	wr16(k + 2 * al, lp);
	wr16(k + 2 * al + 2, rp);
	return (uint32_t)tcp_siphash(st->cfg.secret, k, 2 * al + 4);
}

static struct tcp_conn *conn_lookup(struct tcp_stack *st, int v6, const uint8_t *la,
                                    uint16_t lp, const uint8_t *ra, uint16_t rp)
{
	uint32_t h = tuple_hash(st, v6, la, lp, ra, rp);
	size_t al = v6 ? 16 : 4;
	for (struct tcp_conn *c = st->htab[h & st->hmask]; c; c = c->hnext)
		if (c->hash == h && c->lport == lp && c->rport == rp &&
		    !!(c->flags & CF_V6) == !!v6 &&
		    !memcmp(c->raddr, ra, al) && !memcmp(c->laddr, la, al))
			return c;
	return NULL;
}

static void conn_hash_insert(struct tcp_stack *st, struct tcp_conn *c)
{
	c->hash = tuple_hash(st, c->flags & CF_V6, c->laddr, c->lport, c->raddr, c->rport);
	struct tcp_conn **b = &st->htab[c->hash & st->hmask];
	c->hnext = *b;
	*b = c;
	c->flags |= CF_HASHED;
}

static void conn_hash_remove(struct tcp_stack *st, struct tcp_conn *c)
{
	if (!(c->flags & CF_HASHED))
		return;
	struct tcp_conn **p = &st->htab[c->hash & st->hmask];
	while (*p && *p != c)
		p = &(*p)->hnext;
	if (*p)
		*p = c->hnext;
	c->hnext = NULL;
	c->flags &= ~CF_HASHED;
}

static void tw_unlink(struct tcp_stack *st, struct tcp_conn *c)
{
	if (!(c->flags & CF_ON_TW))
		return;
	if (c->tw_prev) c->tw_prev->tw_next = c->tw_next; else st->tw_head = c->tw_next;
	if (c->tw_next) c->tw_next->tw_prev = c->tw_prev; else st->tw_tail = c->tw_prev;
	c->tw_next = c->tw_prev = NULL;
	c->flags &= ~CF_ON_TW;
}

static void evq_unlink(struct tcp_stack *st, struct tcp_conn *c)
{
	if (!(c->flags & CF_ON_EVQ))
		return;
	if (c->ev_prev) c->ev_prev->ev_next = c->ev_next; else st->ev_head = c->ev_next;
	if (c->ev_next) c->ev_next->ev_prev = c->ev_prev; else st->ev_tail = c->ev_prev;
	c->ev_next = c->ev_prev = NULL;
	c->flags &= ~CF_ON_EVQ;
}

static void post_event(struct tcp_conn *c, uint32_t ev)
{
	struct tcp_stack *st = c->st;
	if (!(c->flags & CF_APP_OWNED) || (c->flags & CF_APP_CLOSED))
		return;
	c->ev_mask |= ev;
	if (c->flags & CF_ON_EVQ)
		return;
	c->flags |= CF_ON_EVQ;
	c->ev_next = NULL;
	c->ev_prev = st->ev_tail;
	if (st->ev_tail) st->ev_tail->ev_next = c; else st->ev_head = c;
	st->ev_tail = c;
}

static void outq_push(struct tcp_conn *c)
{
	if (c->flags & CF_ON_OUTQ)
		return;
	c->flags |= CF_ON_OUTQ;
	c->out_next = c->st->out_head;
	c->st->out_head = c;
}

static void rq_flush(struct tcp_stack *st, struct tcp_conn *c)
{
	struct seg *s, *n;
	for (s = c->rq_head; s; s = n) { n = s->next; seg_free(st, s); }
	for (s = c->ooo; s; s = n) { n = s->next; seg_free(st, s); }
	c->rq_head = c->rq_tail = c->ooo = NULL;
	c->rq_bytes = c->rq_off = c->rq_segs = c->ooo_bytes = 0;
	c->ooo_segs = 0;
}

static void sq_flush(struct tcp_stack *st, struct tcp_conn *c)
{
	uint32_t i = c->sq_head;
	while (i != NIL) {
		uint32_t n = st->chunk_next[i];
		chunk_free(st, i);
		i = n;
	}
	c->sq_head = c->sq_tail = NIL;
	c->sq_len = c->sq_off = 0;
}

static struct tcp_conn *conn_alloc(struct tcp_stack *st)
{
	struct tcp_conn *c = st->free_conns;
	if (!c) {
		/* Recycle the oldest TIME_WAIT connection nobody holds: the
		 * table is full and TIME_WAIT is the only state we can end
		 * early (RFC 6191 accepts this trade-off under pressure). */
		c = st->tw_head;
		while (c && (c->flags & CF_APP_OWNED) && !(c->flags & CF_APP_CLOSED))
			c = c->tw_next;
		if (!c)
			return NULL;
		st->stats.time_wait_recycled++;
		tw_unlink(st, c);
		conn_hash_remove(st, c);
		wheel_del(st, &c->tn);
		st->nconns--;
		st->stats.conns_active--;
		c->hnext = st->free_conns;
		st->free_conns = c;
	}
	st->free_conns = c->hnext;
	memset(c, 0, sizeof(*c));
	c->st = st;
	c->sq_head = c->sq_tail = NIL;
	c->flags = CF_IN_USE;
	st->nconns++;
	st->stats.conns_active++;
	return c;
}

/* Returns the slot to the free list; the conn must be unlinked from every
 * list except the ones handled here. */
static void conn_free(struct tcp_stack *st, struct tcp_conn *c)
{
	conn_hash_remove(st, c);
	tw_unlink(st, c);
	evq_unlink(st, c);
	wheel_del(st, &c->tn);
	rq_flush(st, c);
	sq_flush(st, c);
	if (c->flags & CF_HALF_OPEN)
		st->nhalfopen--;
	if (c->flags & CF_ON_OUTQ) {
		struct tcp_conn **p = &st->out_head;
		while (*p && *p != c)
			p = &(*p)->out_next;
		if (*p)
			*p = c->out_next;
	}
	c->flags = 0;
	c->hnext = st->free_conns;
	st->free_conns = c;
	st->nconns--;
	st->stats.conns_active--;
}

/* The protocol side is finished with c (CLOSED). If the app still holds
 * the handle, the slot lives on (unhashed) until tcp_close. */
static void conn_dead(struct tcp_conn *c, int err)
{
	struct tcp_stack *st = c->st;
	if (c->flags & CF_HALF_OPEN) {
		c->flags &= ~CF_HALF_OPEN;
		st->nhalfopen--;
	}
	c->state = TCP_CLOSED;
	c->t_rtx = c->t_delack = c->t_keep = 0;
	wheel_del(st, &c->tn);
	conn_hash_remove(st, c);
	tw_unlink(st, c);
	sq_flush(st, c);
	c->sq_len = 0;
	if ((c->flags & CF_APP_OWNED) && !(c->flags & CF_APP_CLOSED)) {
		c->flags |= CF_DEAD;
		if (err)
			c->error = (int16_t)err;
		post_event(c, TCP_EV_CLOSED);
		return;
	}
	conn_free(st, c);
}

/* ------------------------------------------------------------------ */
/* Frame output and neighbours (ARP RFC 826, NDP RFC 4861)            */

struct txctx {
	uint8_t *frame;
	void *handle;
	uint32_t pend;           /* pending slot index or NIL */
	struct neigh *nb;
	uint32_t l2len;
};

static const uint8_t bcast_mac[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

static uint32_t nb_hash(const struct tcp_stack *st, const uint8_t *a, int v6)
{
	return (uint32_t)tcp_siphash(st->cfg.secret, a, v6 ? 16 : 4) & st->nb_hmask;
}

static struct neigh *nb_find(struct tcp_stack *st, const uint8_t *a, int v6)
{
	size_t al = v6 ? 16 : 4;
	for (uint32_t i = st->nb_htab[nb_hash(st, a, v6)]; i != NIL; i = st->nb[i].next)
		if (st->nb[i].v6 == v6 && !memcmp(st->nb[i].addr, a, al))
			return &st->nb[i];
	return NULL;
}

static void nb_drop_pending(struct tcp_stack *st, struct neigh *n)
{
	uint32_t p = n->pend_head;
	while (p != NIL) {
		uint32_t nx = st->pend_next[p];
		st->pend_next[p] = st->pend_free;
		st->pend_free = p;
		drop(st, TCP_DROP_NEIGH_PENDING);
		p = nx;
	}
	n->pend_head = NIL;
	n->npend = 0;
}

static void nb_remove(struct tcp_stack *st, struct neigh *n)
{
	uint32_t idx = (uint32_t)(n - st->nb);
	uint32_t *p = &st->nb_htab[nb_hash(st, n->addr, n->v6)];
	while (*p != NIL && *p != idx)
		p = &st->nb[*p].next;
	if (*p == idx)
		*p = n->next;
	nb_drop_pending(st, n);
	n->state = NB_FREE;
}

/* Makes a table entry for a (the caller sets its state). resolved: the
 * entry will hold a MAC we just learnt (ARP/NDP, static), else it is an
 * unresolved (INCOMPLETE) next hop we are about to probe.
 *
 * Unresolved entries are what a spoofed on-link SYN flood creates: one per
 * forged source, none ever answered. So they are capped at half the table,
 * replace each other oldest first, and never push out a resolved peer:
 * established connections keep their MAC however long the flood lasts, and
 * a real host that ARPs for us always finds room (it may take the oldest
 * unresolved entry). Resolved entries go only when the table holds nothing
 * else, oldest expiry first. NULL: no entry may be taken. */
static struct neigh *nb_create(struct tcp_stack *st, const uint8_t *a, int v6, int resolved)
{
	struct neigh *free_e = NULL, *old_inc = NULL, *old_res = NULL, *victim;
	uint32_t n = st->cfg.neigh_size, ninc = 0, cap = n / 2 ? n / 2 : 1;
	for (uint32_t i = 0; i < n; i++) {
		struct neigh *e = &st->nb[i];
		if (e->state == NB_FREE) {
			if (!free_e)
				free_e = e;
		} else if (e->state == NB_INCOMPLETE) {
			ninc++;
			if (!old_inc || e->born < old_inc->born)
				old_inc = e;
		} else if (e->state == NB_REACHABLE &&
		           (!old_res || e->expires < old_res->expires)) {
			old_res = e;
		}
	}
	if (!resolved)
		victim = ninc >= cap ? old_inc : free_e ? free_e : old_inc;
	else
		victim = free_e ? free_e : old_inc ? old_inc : old_res;
	if (!victim)
		return NULL;
	if (victim->state != NB_FREE) {
		st->stats.neigh_evicted++;
		nb_remove(st, victim);
	}
	memset(victim, 0, sizeof(*victim));
	memcpy(victim->addr, a, v6 ? 16 : 4);
	victim->v6 = (uint8_t)v6;
	victim->pend_head = NIL;
	victim->born = ++st->nb_births;
	uint32_t h = nb_hash(st, a, v6);
	victim->next = st->nb_htab[h];
	st->nb_htab[h] = (uint32_t)(victim - st->nb);
	return victim;
}

static void tx_eth_header(struct tcp_stack *st, uint8_t *f, const uint8_t *dmac,
                          uint16_t type)
{
	memcpy(f, dmac, 6);
	memcpy(f + 6, st->cfg.mac, 6);
	if (st->cfg.vlan_id) {
		wr16(f + 12, ETH_P_8021Q);
		wr16(f + 14, st->cfg.vlan_id & 0x0fff);
		wr16(f + 16, type);
	} else {
		wr16(f + 12, type);
	}
}

static uint32_t l2_len(const struct tcp_stack *st)
{
	return st->cfg.vlan_id ? 18 : 14;
}

/* Sends a frame that needs no resolution (dst MAC known), built by fill. */
static uint8_t *tx_raw_begin(struct tcp_stack *st, uint32_t len, void **handle)
{
	uint8_t *f = st->cfg.ops.tx_alloc ? st->cfg.ops.tx_alloc(st->cfg.ops.ctx, len, handle) : NULL;
	if (!f)
		drop(st, TCP_DROP_TX_NOBUF);
	return f;
}

static void tx_raw_end(struct tcp_stack *st, void *handle, uint32_t len,
                       const struct tcp_txmeta *meta)
{
	struct tcp_txmeta m = { 0 };
	st->cfg.ops.tx_send(st->cfg.ops.ctx, handle, len, meta ? meta : &m);
	st->stats.tx_frames++;
}

static void ip6_solicited_node(const uint8_t *target, uint8_t out[16])
{
	static const uint8_t pfx[13] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff };
	memcpy(out, pfx, 13);
	memcpy(out + 13, target + 13, 3);
}

static void send_arp(struct tcp_stack *st, uint16_t op, const uint8_t *tmac,
                     const uint8_t *tip, const uint8_t *dmac);
static void send_ns(struct tcp_stack *st, const uint8_t *target, const uint8_t *dst_ip,
                    const uint8_t *dmac);

static void nb_probe(struct tcp_stack *st, struct neigh *n, uint64_t now)
{
	n->last_probe = now;
	n->probes++;
	if (!n->v6) {
		st->stats.arp_requests++;
		send_arp(st, 1, (const uint8_t[6]){ 0 }, n->addr, bcast_mac);
	} else {
		uint8_t snm[16], dmac[6] = { 0x33, 0x33 };
		ip6_solicited_node(n->addr, snm);
		memcpy(dmac + 2, snm + 12, 4);
		send_ns(st, n->addr, snm, dmac);
	}
}

/* Next hop for dst: on-link address itself, else the gateway. Returns NULL
 * when there is no route. */
static const uint8_t *route(struct tcp_stack *st, int v6, const uint8_t *dst)
{
	if (!v6) {
		uint32_t d;
		memcpy(&d, dst, 4);
		if ((d & st->cfg.ip4_mask) == (st->cfg.ip4 & st->cfg.ip4_mask))
			return dst;
		return st->cfg.ip4_gw ? (const uint8_t *)&st->cfg.ip4_gw : NULL;
	}
	if (dst[0] == 0xfe && (dst[1] & 0xc0) == 0x80)
		return dst;
	unsigned pl = st->cfg.ip6_prefixlen, i;
	for (i = 0; i + 8 <= pl; i += 8)
		if (dst[i / 8] != st->cfg.ip6[i / 8])
			goto offlink;
	if (pl % 8) {
		uint8_t m = (uint8_t)(0xff << (8 - pl % 8));
		if ((dst[pl / 8] & m) != (st->cfg.ip6[pl / 8] & m))
			goto offlink;
	}
	return dst;
offlink:
	for (i = 0; i < 16; i++)
		if (st->cfg.ip6_gw[i])
			return st->cfg.ip6_gw;
	return NULL;
}

/* Starts an IP frame to dst: resolves the next hop and returns a buffer
 * with the Ethernet header written (either the caller's tx buffer or a
 * pending slot while resolution is in progress). 0 or -1 (dropped). */
static int tx_begin(struct tcp_stack *st, int v6, const uint8_t *dst, uint32_t maxlen,
                    struct txctx *t, uint64_t now)
{
	const uint8_t *nh = route(st, v6, dst);
	t->pend = NIL;
	t->nb = NULL;
	t->l2len = l2_len(st);
	if (!nh) {
		drop(st, TCP_DROP_NO_ROUTE);
		return -1;
	}
	struct neigh *n = nb_find(st, nh, v6);
	if (!n) {
		n = nb_create(st, nh, v6, 0);
		if (!n) {
			drop(st, TCP_DROP_NEIGH_FULL);
			return -1;
		}
		n->state = NB_INCOMPLETE;
		nb_probe(st, n, now);
	}
	if (n->state == NB_INCOMPLETE) {
		if (n->npend >= 8 || st->pend_free == NIL || maxlen > MAX_FRAME(st)) {
			drop(st, TCP_DROP_NEIGH_PENDING);
			return -1;
		}
		uint32_t p = st->pend_free;
		st->pend_free = st->pend_next[p];
		t->pend = p;
		t->nb = n;
		t->frame = st->pend_mem + (size_t)p * MAX_FRAME(st);
		tx_eth_header(st, t->frame, bcast_mac, v6 ? ETH_P_IPV6 : ETH_P_IP);
		return 0;
	}
	if (n->state == NB_REACHABLE && now >= n->expires &&
	    now - n->last_probe >= 1000 * NS_PER_MS) {
		/* Stale: keep using the MAC but re-confirm; give up after 3
		 * unanswered probes (RFC 4861 7.3.3 style, simplified). */
		if (n->probes >= 3) {
			n->state = NB_INCOMPLETE;
			n->probes = 0;
			nb_probe(st, n, now);
			return tx_begin(st, v6, dst, maxlen, t, now);
		}
		nb_probe(st, n, now);
	}
	t->frame = tx_raw_begin(st, maxlen, &t->handle);
	if (!t->frame)
		return -1;
	tx_eth_header(st, t->frame, n->mac, v6 ? ETH_P_IPV6 : ETH_P_IP);
	return 0;
}

static void tx_end(struct tcp_stack *st, struct txctx *t, uint32_t len,
                   const struct tcp_txmeta *meta)
{
	if (t->pend != NIL) {
		/* Offload is not used for held frames: checksums were computed
		 * in software (see tcp_emit). */
		st->pend_len[t->pend] = len;
		st->pend_next[t->pend] = NIL;
		uint32_t *pp = &t->nb->pend_head;
		while (*pp != NIL)
			pp = &st->pend_next[*pp];
		*pp = t->pend;
		t->nb->npend++;
		return;
	}
	tx_raw_end(st, t->handle, len, meta);
}

/* A neighbour became reachable: send what waited for it. */
static void nb_resolved(struct tcp_stack *st, struct neigh *n, const uint8_t *mac, uint64_t now)
{
	memcpy(n->mac, mac, 6);
	if (n->state != NB_STATIC) {
		n->state = NB_REACHABLE;
		n->expires = now + (uint64_t)st->cfg.neigh_timeout_ms * NS_PER_MS;
	}
	n->probes = 0;
	uint32_t p = n->pend_head;
	n->pend_head = NIL;
	n->npend = 0;
	while (p != NIL) {
		uint32_t nx = st->pend_next[p];
		void *h;
		uint8_t *f = tx_raw_begin(st, st->pend_len[p], &h);
		if (f) {
			memcpy(f, st->pend_mem + (size_t)p * MAX_FRAME(st), st->pend_len[p]);
			memcpy(f, mac, 6);
			tx_raw_end(st, h, st->pend_len[p], NULL);
		}
		st->pend_next[p] = st->pend_free;
		st->pend_free = p;
		p = nx;
	}
}

/* Learns or refreshes addr -> mac. create: make an entry if none exists
 * (RFC 826: only when the packet was addressed to us). */
static void nb_learn(struct tcp_stack *st, const uint8_t *a, int v6, const uint8_t *mac,
                     int create, uint64_t now)
{
	if (mac[0] & 1)
		return;          /* multicast/broadcast is never a neighbour */
	struct neigh *n = nb_find(st, a, v6);
	if (!n && create) {
		n = nb_create(st, a, v6, 1);
		if (!n)
			return;
	}
	if (!n || n->state == NB_STATIC)
		return;
	nb_resolved(st, n, mac, now);
}

static void nb_housekeep(struct tcp_stack *st, uint64_t now)
{
	for (uint32_t i = 0; i < st->cfg.neigh_size; i++) {
		struct neigh *n = &st->nb[i];
		if (n->state == NB_INCOMPLETE && now - n->last_probe >= 1000 * NS_PER_MS) {
			if (n->probes >= 3)
				nb_remove(st, n);   /* pending frames dropped, counted */
			else
				nb_probe(st, n, now);
		} else if (n->state == NB_REACHABLE && n->probes >= 3 &&
		           now - n->last_probe >= 1000 * NS_PER_MS) {
			nb_remove(st, n);
		}
	}
}

static void send_arp(struct tcp_stack *st, uint16_t op, const uint8_t *tmac,
                     const uint8_t *tip, const uint8_t *dmac)
{
	void *h;
	uint32_t l2 = l2_len(st), len = l2 + 28;
	if (len < 60)
		len = 60;
	uint8_t *f = tx_raw_begin(st, len, &h);
	if (!f)
		return;
	memset(f, 0, len);
	tx_eth_header(st, f, dmac, ETH_P_ARP);
	uint8_t *a = f + l2;
	wr16(a, 1);
	wr16(a + 2, ETH_P_IP);
	a[4] = 6;
	a[5] = 4;
	wr16(a + 6, op);
	memcpy(a + 8, st->cfg.mac, 6);
	memcpy(a + 14, &st->cfg.ip4, 4);
	memcpy(a + 18, tmac, 6);
	memcpy(a + 24, tip, 4);
	tx_raw_end(st, h, len, NULL);
}

/* Writes an IPv6 header + ICMPv6 message (body already at f+l2+40) and sends. */
static void send_icmp6_raw(struct tcp_stack *st, uint8_t *f, void *h, const uint8_t *src,
                           const uint8_t *dst, uint32_t icmplen, uint8_t hlim)
{
	uint32_t l2 = l2_len(st);
	uint8_t *ip = f + l2, *ic = ip + 40;
	wr32(ip, 0x60000000);
	wr16(ip + 4, (uint16_t)icmplen);
	ip[6] = 58;
	ip[7] = hlim;
	memcpy(ip + 8, src, 16);
	memcpy(ip + 24, dst, 16);
	wr16(ic + 2, 0);
	uint32_t s = csum_pseudo(1, src, dst, 58, icmplen);
	s = tcp_csum_add(s, ic, icmplen);
	uint16_t ck = tcp_csum_fold(s);
	memcpy(ic + 2, &ck, 2);
	tx_raw_end(st, h, l2 + 40 + icmplen, NULL);
}

static void send_ns(struct tcp_stack *st, const uint8_t *target, const uint8_t *dst_ip,
                    const uint8_t *dmac)
{
	void *h;
	uint32_t l2 = l2_len(st), icl = 32;
	uint8_t *f = tx_raw_begin(st, l2 + 40 + icl, &h);
	if (!f)
		return;
	st->stats.ndp_solicits++;
	tx_eth_header(st, f, dmac, ETH_P_IPV6);
	uint8_t *ic = f + l2 + 40;
	memset(ic, 0, icl);
	ic[0] = 135;
	memcpy(ic + 8, target, 16);
	ic[24] = 1;                      /* source link-layer address option */
	ic[25] = 1;
	memcpy(ic + 26, st->cfg.mac, 6);
	send_icmp6_raw(st, f, h, st->cfg.ip6, dst_ip, icl, 255);
}

static void send_na(struct tcp_stack *st, const uint8_t *target, const uint8_t *dst_ip,
                    const uint8_t *dmac, int solicited)
{
	void *h;
	uint32_t l2 = l2_len(st), icl = 32;
	uint8_t *f = tx_raw_begin(st, l2 + 40 + icl, &h);
	if (!f)
		return;
	st->stats.ndp_adverts++;
	tx_eth_header(st, f, dmac, ETH_P_IPV6);
	uint8_t *ic = f + l2 + 40;
	memset(ic, 0, icl);
	ic[0] = 136;
	ic[4] = (uint8_t)((solicited ? 0x40 : 0) | 0x20);   /* S, O flags */
	memcpy(ic + 8, target, 16);
	ic[24] = 2;                      /* target link-layer address option */
	ic[25] = 1;
	memcpy(ic + 26, st->cfg.mac, 6);
	send_icmp6_raw(st, f, h, target, dst_ip, icl, 255);
}

/* ------------------------------------------------------------------ */
/* TCP segment output                                                 */

struct emit {
	int v6;
	const uint8_t *laddr, *raddr;
	uint16_t lport, rport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	const uint8_t *opt;
	uint32_t optlen;
	struct tcp_conn *data_conn;      /* payload from this conn's send queue */
	uint32_t data_off, data_len;
};

static void sq_copy(struct tcp_stack *st, const struct tcp_conn *c, uint32_t off,
                    uint8_t *dst, uint32_t len)
{
	uint32_t ci = c->sq_head, pos = c->sq_off + off;
	while (pos >= CHUNK_SIZE && ci != NIL) {
		ci = st->chunk_next[ci];
		pos -= CHUNK_SIZE;
	}
	while (len && ci != NIL) {
		uint32_t n = CHUNK_SIZE - pos;
		if (n > len)
			n = len;
		memcpy(dst, chunk_ptr(st, ci) + pos, n);
		dst += n;
		len -= n;
		pos = 0;
		ci = st->chunk_next[ci];
	}
}

static int tcp_emit(struct tcp_stack *st, const struct emit *e, uint64_t now)
{
	struct txctx t;
	uint32_t iplen = e->v6 ? 40 : 20;
	uint32_t thl = 20 + e->optlen;
	uint32_t l4len = thl + e->data_len;
	if (tx_begin(st, e->v6, e->raddr, l2_len(st) + iplen + l4len, &t, now) < 0)
		return -1;
	uint8_t *ip = t.frame + t.l2len, *th = ip + iplen;
	int offload = st->cfg.tx_csum_offload && t.pend == NIL;

	if (e->v6) {
		wr32(ip, 0x60000000);
		wr16(ip + 4, (uint16_t)l4len);
		ip[6] = 6;
		ip[7] = 64;
		memcpy(ip + 8, e->laddr, 16);
		memcpy(ip + 24, e->raddr, 16);
	} else {
		ip[0] = 0x45;
		ip[1] = 0;
		wr16(ip + 2, (uint16_t)(20 + l4len));
		wr16(ip + 4, 0);
		wr16(ip + 6, 0x4000);            /* DF: we do PMTU discovery */
		ip[8] = 64;
		ip[9] = 6;
		wr16(ip + 10, 0);
		memcpy(ip + 12, e->laddr, 4);
		memcpy(ip + 16, e->raddr, 4);
		if (!offload) {
			uint16_t ck = tcp_csum_fold(tcp_csum_add(0, ip, 20));
			memcpy(ip + 10, &ck, 2);
		}
	}
	wr16(th, e->lport);
	wr16(th + 2, e->rport);
	wr32(th + 4, e->seq);
	wr32(th + 8, e->ack);
	th[12] = (uint8_t)((thl / 4) << 4);
	th[13] = e->flags;
	wr16(th + 14, e->win);
	wr16(th + 16, 0);
	wr16(th + 18, 0);
	if (e->optlen)
		memcpy(th + 20, e->opt, e->optlen);
	if (e->data_len)
		sq_copy(st, e->data_conn, e->data_off, th + thl, e->data_len);
	uint32_t s = csum_pseudo(e->v6, e->laddr, e->raddr, 6, l4len);
	if (offload) {
		uint16_t ps = (uint16_t)~tcp_csum_fold(s);
		memcpy(th + 16, &ps, 2);
	} else {
		uint16_t ck = tcp_csum_fold(tcp_csum_add(s, th, l4len));
		memcpy(th + 16, &ck, 2);
	}
	struct tcp_txmeta m = {
		.l2_len = (uint16_t)t.l2len, .l3_len = (uint16_t)iplen,
		.l4_len = (uint16_t)thl, .is_ipv6 = (uint16_t)e->v6,
		.flags = offload ? (e->v6 ? TCP_TX_L4_CSUM : TCP_TX_IP_CSUM | TCP_TX_L4_CSUM) : 0,
	};
	tx_end(st, &t, t.l2len + iplen + l4len, &m);
	st->stats.tx_segs++;
	return 0;
}

static uint32_t ts_now(const struct tcp_conn *c, uint64_t now)
{
	return (uint32_t)(now / NS_PER_MS) + c->ts_off;
}

static uint32_t rcv_space(const struct tcp_conn *c)
{
	const struct tcp_stack *st = c->st;
	uint32_t used = c->rq_bytes, buf = st->cfg.rcvbuf;
	uint32_t w = used >= buf ? 0 : buf - used;
	/* Backpressure: when the instance's rx pool runs low, offer at most a
	 * few segments per connection (DESIGN.md: shrink windows). */
	if (st->nsegs_free < st->cfg.rx_segs / 8 && w > 4u * c->mss)
		w = 4u * c->mss;
	return w;
}

/* Window to advertise; never moves the right edge left (RFC 9293
 * 3.8.6.2.2) and only opens in steps of at least one MSS or half the
 * buffer (receiver SWS avoidance, RFC 9293 3.8.6.2.2). */
static uint32_t rcv_window(struct tcp_conn *c)
{
	uint32_t w = rcv_space(c);
	uint32_t cur = SEQ_GT(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t step = c->mss < c->st->cfg.rcvbuf / 2 ? c->mss : c->st->cfg.rcvbuf / 2;
	if (w < cur + step && w != c->st->cfg.rcvbuf)
		w = cur > w ? cur : (w - cur < step ? cur : w);
	if (w < cur)
		w = cur;
	uint32_t maxw = 65535u << c->rcv_ws;
	if (w > maxw)
		w = maxw;
	return w;
}

/* Builds the option block for a segment of c. */
static uint32_t build_opts(struct tcp_conn *c, uint8_t flags, uint8_t *o, uint64_t now,
                           uint32_t *maxsack)
{
	struct tcp_stack *st = c->st;
	uint32_t n = 0;
	if (flags & TH_SYN) {
		int sack = !st->cfg.no_sack && (!(c->flags & CF_PASSIVE) || (c->flags & CF_SACK));
		int ts = !st->cfg.no_timestamps && (!(c->flags & CF_PASSIVE) || (c->flags & CF_TS));
		int ws = !st->cfg.no_wscale && (!(c->flags & CF_PASSIVE) || (c->flags & CF_WS));
		uint16_t mss = (uint16_t)(st->cfg.mtu - ((c->flags & CF_V6) ? 60 : 40));
		o[n++] = 2; o[n++] = 4; wr16(o + n, mss); n += 2;
		if (sack && ts) {
			o[n++] = 4; o[n++] = 2;
		} else if (sack) {
			o[n++] = 1; o[n++] = 1; o[n++] = 4; o[n++] = 2;
		}
		if (ts) {
			if (!sack) { o[n++] = 1; o[n++] = 1; }
			o[n++] = 8; o[n++] = 10;
			wr32(o + n, ts_now(c, now)); n += 4;
			wr32(o + n, (c->flags & CF_PASSIVE) ? c->ts_recent : 0); n += 4;
		}
		if (ws) {
			o[n++] = 1; o[n++] = 3; o[n++] = 3; o[n++] = c->rcv_ws;
		}
		return n;
	}
	if (c->flags & CF_TS) {
		o[n++] = 1; o[n++] = 1; o[n++] = 8; o[n++] = 10;
		wr32(o + n, ts_now(c, now)); n += 4;
		wr32(o + n, c->ts_recent); n += 4;
	}
	/* SACK blocks (RFC 2018 4): the block holding the most recently
	 * received segment first, then the others in sequence order. */
	if ((c->flags & CF_SACK) && c->ooo && maxsack) {
		uint32_t room = (40 - n - 2) / 8, cnt = 0;
		if (room > *maxsack)
			room = *maxsack;
		struct sackblk blk[4];
		uint32_t nb = 0;
		struct seg *s = c->ooo;
		while (s && nb < 4 * 4) {
			uint32_t bs = s->seq, be = s->seq + s->len + s->fin;
			while (s->next && s->next->seq == be) {
				s = s->next;
				be = s->seq + s->len + s->fin;
			}
			int recent = SEQ_GEQ(c->last_ooo_seq, bs) && SEQ_LT(c->last_ooo_seq, be);
			if (recent && nb > 0) {
				memmove(&blk[1], &blk[0], sizeof(blk[0]) * (nb < 4 ? nb : 3));
				blk[0].s = bs; blk[0].e = be;
				if (nb < 4) nb++;
			} else if (nb < 4) {
				blk[nb].s = bs; blk[nb].e = be; nb++;
			}
			s = s->next;
		}
		if (nb > room)
			nb = room;
		if (nb) {
			o[n++] = 1; o[n++] = 1; o[n++] = 5; o[n++] = (uint8_t)(2 + 8 * nb);
			for (cnt = 0; cnt < nb; cnt++) {
				wr32(o + n, blk[cnt].s); n += 4;
				wr32(o + n, blk[cnt].e); n += 4;
			}
		}
	}
	return n;
}

/* Sends one segment of c: flags, seq, and dlen bytes of queued data at seq. */
static void conn_xmit(struct tcp_conn *c, uint8_t flags, uint32_t seq, uint32_t dlen,
                      uint64_t now)
{
	struct tcp_stack *st = c->st;
	uint8_t opt[40];
	uint32_t maxsack = 4;
	struct emit e = {
		.v6 = !!(c->flags & CF_V6), .laddr = c->laddr, .raddr = c->raddr,
		.lport = c->lport, .rport = c->rport, .seq = seq, .flags = flags,
		.opt = opt,
	};
	if (c->state != TCP_SYN_SENT) {
		e.flags |= TH_ACK;
		e.ack = c->rcv_nxt;
	}
	e.optlen = build_opts(c, flags, opt, now, &maxsack);
	uint32_t w = rcv_window(c);
	if (flags & TH_SYN)
		e.win = (uint16_t)(w > 65535 ? 65535 : w);
	else
		e.win = (uint16_t)(w >> c->rcv_ws);
	if (dlen) {
		e.data_conn = c;
		e.data_off = seq - c->sq_seq;
		e.data_len = dlen;
	}
	/* Even when the frame cannot leave (no tx buffer), behave as if it
	 * was sent: it counts as lost and the timers recover. */
	tcp_emit(st, &e, now);
	if (e.flags & TH_ACK) {
		c->rcv_adv = c->rcv_nxt + ((uint32_t)e.win << ((flags & TH_SYN) ? 0 : c->rcv_ws));
		c->last_ack_sent = c->rcv_nxt;
		c->unacked_segs = 0;
		c->t_delack = 0;
		c->flags &= ~(CF_ACK_NOW | CF_WIN_UPDATE);
	}
}

static void send_rst_reply(struct tcp_stack *st, int v6, const uint8_t *la, const uint8_t *ra,
                           uint16_t lp, uint16_t rp, uint32_t seq, uint32_t ack,
                           uint8_t flags, uint64_t now)
{
	struct emit e = {
		.v6 = v6, .laddr = la, .raddr = ra, .lport = lp, .rport = rp,
		.seq = seq, .ack = ack, .flags = flags,
	};
	tcp_emit(st, &e, now);
}

static void arm_rto(struct tcp_conn *c, uint64_t now)
{
	c->flags &= ~(CF_REC_PROBE | CF_TLP);
	uint64_t rto = (uint64_t)c->rto << c->backoff;
	uint64_t max = (uint64_t)c->st->cfg.rto_max_ms * 1000;
	if (rto > max)
		rto = max;
	c->t_rtx = now + rto * NS_PER_US;
	/* Tail loss probe (RFC 8985 7.2): PTO = 2 SRTT, plus the worst-case
	 * delayed ACK when one segment is in flight; only when it comes
	 * before the RTO, once per episode, outside recovery. */
	if (!c->st->cfg.no_tlp && c->srtt && !c->backoff &&
	    !(c->flags & (CF_IN_REC | CF_PERSIST | CF_TLP_DONE)) &&
	    (c->state == TCP_ESTABLISHED || c->state == TCP_CLOSE_WAIT ||
	     c->state == TCP_FIN_WAIT_1 || c->state == TCP_CLOSING || c->state == TCP_LAST_ACK)) {
		uint64_t pto = 2ULL * c->srtt * NS_PER_US;
		if (c->snd_max - c->snd_una <= c->mss)
			pto += 200 * NS_PER_MS;
		if (pto < 10 * NS_PER_MS)
			pto = 10 * NS_PER_MS;
		if (now + pto < c->t_rtx) {
			c->t_rtx = now + pto;
			c->flags |= CF_TLP;
		}
	}
	conn_timer_update(c);
}

/* Bytes in flight for SACK recovery (RFC 6675 "pipe", simplified: holes
 * below the highest SACKed byte count as lost unless retransmitted). */
static uint32_t sacked_bytes(const struct tcp_conn *c)
{
	uint32_t s = 0;
	for (unsigned i = 0; i < c->nsb; i++)
		s += c->sb[i].e - c->sb[i].s;
	return s;
}

static uint32_t pipe_estimate(const struct tcp_conn *c)
{
	uint32_t out = c->snd_max - c->snd_una;
	if (!(c->flags & CF_IN_REC) || !c->nsb)
		return out;
	uint32_t sacked = sacked_bytes(c);
	uint32_t lost = (c->high_sack - c->snd_una) - sacked;
	uint32_t rexmitted = 0;
	/* holes between una and rexmit_nxt were retransmitted */
	uint32_t pos = c->snd_una;
	for (unsigned i = 0; i < c->nsb && SEQ_LT(pos, c->rexmit_nxt); i++) {
		uint32_t he = SEQ_LT(c->sb[i].s, c->rexmit_nxt) ? c->sb[i].s : c->rexmit_nxt;
		if (SEQ_GT(he, pos))
			rexmitted += he - pos;
		pos = c->sb[i].e;
	}
	uint32_t p = out - sacked - lost + rexmitted;
	return (int32_t)p < 0 ? 0 : p;
}

/* First un-SACKed, un-retransmitted byte below high_sack (RFC 6675
 * NextSeg rule 1), with the length of its hole; 0 if none. */
static uint32_t next_hole(const struct tcp_conn *c, uint32_t *seq)
{
	uint32_t pos = SEQ_GT(c->rexmit_nxt, c->snd_una) ? c->rexmit_nxt : c->snd_una;
	for (unsigned i = 0; i < c->nsb; i++) {
		if (SEQ_LEQ(c->sb[i].e, pos))
			continue;
		if (SEQ_LT(pos, c->sb[i].s)) {
			*seq = pos;
			return c->sb[i].s - pos;
		}
		pos = c->sb[i].e;
	}
	return 0;
}

static uint32_t data_end(const struct tcp_conn *c)
{
	return c->sq_seq + c->sq_len;
}

/* The output engine: sends what the windows allow, a FIN when due, and an
 * ACK if one is owed. Nagle is off (SMTP replies go out at once), but all
 * writes queued before this call coalesce into full segments. */
static void tcp_output(struct tcp_conn *c, uint64_t now)
{
	struct tcp_stack *st = c->st;
	int sent = 0, sent_new = 0;

	if (c->state == TCP_CLOSED || c->state == TCP_TIME_WAIT || c->state == TCP_LISTEN)
		return;
	if (c->state == TCP_SYN_SENT || c->state == TCP_SYN_RCVD) {
		if (c->flags & CF_ACK_NOW)
			conn_xmit(c, TH_SYN, c->iss, 0, now);
		c->flags &= ~CF_ACK_NOW;
		return;
	}
	for (int guard = 0; guard < 1024; guard++) {
		uint32_t wnd = c->snd_wnd < c->cwnd ? c->snd_wnd : c->cwnd;
		uint32_t dend = data_end(c);
		uint32_t len = 0, seq = c->snd_nxt;
		uint8_t flags = 0;
		int rexmit = 0;

		if ((c->flags & CF_IN_REC) && (c->flags & CF_SACK) && c->nsb) {
			uint32_t pipe = pipe_estimate(c);
			if (pipe + c->mss > c->cwnd)
				break;
			uint32_t hs, hl = next_hole(c, &hs);
			if (hl && SEQ_LT(hs, dend)) {
				if (SEQ_GT(hs + hl, dend))
					hl = dend - hs;
				len = hl < c->mss ? hl : c->mss;
				seq = hs;
				rexmit = 1;
			} else {
				wnd = c->snd_wnd;
				if (SEQ_GEQ(c->snd_nxt, c->snd_una + wnd))
					break;
				len = SEQ_LT(c->snd_nxt, dend) ? dend - c->snd_nxt : 0;
				if (len > c->mss) len = c->mss;
				uint32_t room = c->snd_una + wnd - c->snd_nxt;
				if (len > room) len = room;
				if (!len && !((c->flags & CF_FIN_QUEUED) && c->snd_nxt == dend &&
				              !(c->flags & CF_FIN_SENT)))
					break;
			}
		} else {
			uint32_t inflight = c->snd_nxt - c->snd_una;
			if (SEQ_LT(c->snd_nxt, dend)) {
				len = dend - c->snd_nxt;
				if (len > c->mss) len = c->mss;
				uint32_t room = wnd > inflight ? wnd - inflight : 0;
				if (len > room) {
					/* Sender SWS avoidance: no runt segments unless
					 * that is all the peer ever offers. */
					if (room >= c->max_snd_wnd / 2 && room > 0)
						len = room;
					else
						len = 0;
				}
			}
		}
		if (!rexmit && (c->flags & CF_FIN_QUEUED) && seq + len == dend)
			flags |= TH_FIN;
		if (rexmit && (c->flags & CF_FIN_SENT) && seq + len == dend && SEQ_GT(c->snd_max, dend))
			flags |= TH_FIN;
		if (!len && !(flags & TH_FIN))
			break;
		if (len && seq + len == dend)
			flags |= TH_PSH;
		conn_xmit(c, flags, seq, len, now);
		sent = 1;
		uint32_t end = seq + len + ((flags & TH_FIN) ? 1 : 0);
		if (rexmit) {
			c->rexmit_nxt = end;
			c->retransmits++;
			st->stats.retransmits++;
		} else {
			if (SEQ_LT(seq, c->snd_max)) {
				c->retransmits++;
				st->stats.retransmits++;
			}
			c->snd_nxt = end;
		}
		if (flags & TH_FIN)
			c->flags |= CF_FIN_SENT;
		if (SEQ_GT(end, c->snd_max)) {
			sent_new = 1;
			/* Karn: time only new data, one segment at a time. */
			if (!(c->flags & CF_RTT_TIMING) && !(c->flags & CF_TS)) {
				c->flags |= CF_RTT_TIMING;
				c->rtt_seq = seq;
				c->rtt_t0 = now;
			}
			c->snd_max = end;
		}
		if (!c->t_rtx || (c->flags & CF_PERSIST)) {
			c->flags &= ~CF_PERSIST;
			arm_rto(c, now);
		}
		if (flags & TH_FIN)
			break;
	}
	/* RFC 8985 7.2: (re)start the loss probe timer after new data. */
	if (sent_new && !st->cfg.no_tlp && !c->backoff &&
	    !(c->flags & (CF_IN_REC | CF_PERSIST | CF_TLP_DONE)))
		arm_rto(c, now);
	/* Zero window with data waiting and nothing in flight: persist timer
	 * (RFC 9293 3.8.6.1). */
	if (!sent && c->snd_wnd == 0 && SEQ_LT(c->snd_nxt, data_end(c)) &&
	    c->snd_una == c->snd_max && !c->t_rtx) {
		c->flags |= CF_PERSIST;
		arm_rto(c, now);
	}
	if (!sent && (c->flags & (CF_ACK_NOW | CF_WIN_UPDATE)))
		conn_xmit(c, 0, c->snd_nxt, 0, now);
}

/* ------------------------------------------------------------------ */
/* TCP input                                                          */

struct topts {
	uint16_t mss;
	uint8_t ws, has_mss, has_ws, sack_ok, has_ts, nsack;
	uint32_t tsval, tsecr;
	struct sackblk sack[4];
};

struct seginfo {
	struct tcp_buf *buf;             /* NULL once the data was kept */
	int v6;
	const uint8_t *src, *dst;        /* remote, local */
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	const uint8_t *data;
	uint32_t dlen;
	struct topts o;
};

/* RFC 9293 3.1 option parsing; -1 on a malformed list. */
static int parse_opts(const uint8_t *p, uint32_t len, struct topts *o, uint8_t flags)
{
	uint32_t i = 0;
	memset(o, 0, sizeof(*o));
	while (i < len) {
		uint8_t k = p[i];
		if (k == 0)
			break;
		if (k == 1) {
			i++;
			continue;
		}
		if (i + 1 >= len)
			return -1;
		uint8_t l = p[i + 1];
		if (l < 2 || i + l > len)
			return -1;
		switch (k) {
		case 2:
			if (l != 4)
				return -1;
			if (flags & TH_SYN) {
				o->has_mss = 1;
				o->mss = rd16(p + i + 2);
			}
			break;
		case 3:
			if (l != 3)
				return -1;
			if (flags & TH_SYN) {
				o->has_ws = 1;
				/* RFC 7323 2.3: values above 14 are treated as 14. */
				o->ws = p[i + 2] > 14 ? 14 : p[i + 2];
			}
			break;
		case 4:
			if (l != 2)
				return -1;
			if (flags & TH_SYN)
				o->sack_ok = 1;
			break;
		case 5:
			if ((l - 2) % 8 || l < 10)
				return -1;
			for (uint32_t j = 0; j < (uint32_t)(l - 2) / 8 && o->nsack < 4; j++) {
				o->sack[o->nsack].s = rd32(p + i + 2 + 8 * j);
				o->sack[o->nsack].e = rd32(p + i + 6 + 8 * j);
				o->nsack++;
			}
			break;
		case 8:
			if (l != 10)
				return -1;
			o->has_ts = 1;
			o->tsval = rd32(p + i + 2);
			o->tsecr = rd32(p + i + 6);
			break;
		default:
			break;
		}
		i += l;
	}
	return 0;
}

static void rtt_sample(struct tcp_conn *c, uint32_t r_us)
{
	struct tcp_stack *st = c->st;
	if (r_us == 0)
		r_us = 1;
	if (!c->srtt) {
		c->srtt = r_us;
		c->rttvar = r_us / 2;
	} else {
		uint32_t d = c->srtt > r_us ? c->srtt - r_us : r_us - c->srtt;
		c->rttvar = (3 * c->rttvar + d) / 4;
		c->srtt = (7 * c->srtt + r_us) / 8;
	}
	/* RFC 6298 2.3: RTO = SRTT + max(G, 4 * RTTVAR). G = 1 ms tick. */
	uint32_t v = 4 * c->rttvar;
	if (v < 1000)
		v = 1000;
	uint64_t rto = (uint64_t)c->srtt + v;
	if (rto < (uint64_t)st->cfg.rto_min_ms * 1000)
		rto = (uint64_t)st->cfg.rto_min_ms * 1000;
	if (rto > (uint64_t)st->cfg.rto_max_ms * 1000)
		rto = (uint64_t)st->cfg.rto_max_ms * 1000;
	c->rto = (uint32_t)rto;
}

/* Congestion response to loss (fast retransmit or RTO): returns the new
 * ssthresh. CUBIC: RFC 9438 4.6 (beta 0.7, fast convergence 4.7);
 * NewReno: RFC 5681 eq. 4. */
static uint32_t cc_loss(struct tcp_conn *c)
{
	uint32_t flight = c->snd_max - c->snd_una, mss = c->mss;
	uint32_t ss;
	if (c->st->cfg.cc_reno) {
		ss = flight / 2;
	} else {
		double w = (double)c->cwnd / mss;
		if (w < c->cu_wmax)
			c->cu_wmax = w * (1.0 + 0.7) / 2.0;
		else
			c->cu_wmax = w;
		ss = (uint32_t)(c->cwnd * 0.7);
		c->cu_epoch = 0;
	}
	if (ss < 2 * mss)
		ss = 2 * mss;
	return ss;
}

static void cc_on_ack(struct tcp_conn *c, uint32_t acked, uint64_t now)
{
	uint32_t mss = c->mss;
	uint32_t cap = 2 * (c->st->cfg.sndbuf > 65535 ? c->st->cfg.sndbuf : 65535) + 4 * mss;
	if (c->cwnd < c->ssthresh) {
		/* Slow start, RFC 5681 3.1 with RFC 3465 L = 2. */
		c->cwnd += acked < 2 * mss ? acked : 2 * mss;
	} else if (c->st->cfg.cc_reno) {
		uint32_t inc = (uint32_t)((uint64_t)mss * mss / c->cwnd);
		c->cwnd += inc ? inc : 1;
	} else {
		/* CUBIC congestion avoidance, RFC 9438 4.2-4.4. */
		const double C = 0.4, beta = 0.7;
		double cw = (double)c->cwnd / mss;
		if (!c->cu_epoch) {
			c->cu_epoch = now;
			if (c->cu_wmax < cw)
				c->cu_wmax = cw;
			c->cu_k = cbrt((c->cu_wmax - cw) / C);
			c->cu_west = cw;
		}
		double t = (double)(now - c->cu_epoch) / 1e9;
		double rtt = (c->srtt ? c->srtt : 100000) / 1e6;
		double target = C * pow(t + rtt - c->cu_k, 3) + c->cu_wmax;
		if (target < cw)
			target = cw;
		if (target > 1.5 * cw)
			target = 1.5 * cw;
		double a = 3.0 * (1.0 - beta) / (1.0 + beta);
		c->cu_west += a * ((double)acked / mss) / cw;
		double wc = C * pow(t - c->cu_k, 3) + c->cu_wmax;
		if (c->cu_west > wc) {
			if (c->cu_west > cw)
				c->cwnd = (uint32_t)(c->cu_west * mss);
		} else {
			double inc = (target - cw) / cw * acked;
			c->cwnd += (uint32_t)inc;
		}
	}
	if (c->cwnd > cap)
		c->cwnd = cap;
}

static void sb_update(struct tcp_conn *c, const struct topts *o)
{
	for (unsigned i = 0; i < o->nsack; i++) {
		uint32_t s = o->sack[i].s, e = o->sack[i].e;
		/* Ignore bogus or stale blocks (RFC 2018 / RFC 6675 2). */
		if (!SEQ_LT(s, e) || SEQ_LEQ(e, c->snd_una) || SEQ_GT(e, c->snd_max) ||
		    e - s > c->snd_max - c->snd_una)
			continue;
		if (SEQ_LT(s, c->snd_una))
			s = c->snd_una;
		/* insert sorted, merging overlaps */
		struct sackblk nb[SB_MAX + 1];
		unsigned n = 0, j, placed = 0;
		for (j = 0; j < c->nsb; j++) {
			struct sackblk b = c->sb[j];
			if (SEQ_LT(b.e, s)) {
				nb[n++] = b;
				continue;
			}
			if (SEQ_GT(b.s, e)) {
				if (!placed) { nb[n].s = s; nb[n].e = e; n++; placed = 1; }
				nb[n++] = b;
				continue;
			}
			/* overlap/adjacent: merge into (s,e) */
			if (SEQ_LT(b.s, s)) s = b.s;
			if (SEQ_GT(b.e, e)) e = b.e;
		}
		if (!placed) { nb[n].s = s; nb[n].e = e; n++; }
		if (n > SB_MAX)
			n = SB_MAX;    /* keep the lowest ranges: they define holes */
		memcpy(c->sb, nb, n * sizeof(nb[0]));
		c->nsb = (uint8_t)n;
	}
	c->high_sack = c->nsb ? c->sb[c->nsb - 1].e : c->snd_una;
}

static void sb_trim(struct tcp_conn *c)
{
	unsigned n = 0;
	for (unsigned i = 0; i < c->nsb; i++) {
		if (SEQ_LEQ(c->sb[i].e, c->snd_una))
			continue;
		c->sb[n] = c->sb[i];
		if (SEQ_LT(c->sb[n].s, c->snd_una))
			c->sb[n].s = c->snd_una;
		n++;
	}
	c->nsb = (uint8_t)n;
	c->high_sack = n ? c->sb[n - 1].e : c->snd_una;
}

static void sq_consume(struct tcp_stack *st, struct tcp_conn *c, uint32_t n)
{
	c->sq_len -= n;
	c->sq_seq += n;
	n += c->sq_off;
	while (n >= CHUNK_SIZE && c->sq_head != NIL) {
		uint32_t nx = st->chunk_next[c->sq_head];
		chunk_free(st, c->sq_head);
		c->sq_head = nx;
		n -= CHUNK_SIZE;
	}
	c->sq_off = n;
	if (c->sq_head == NIL) {
		c->sq_tail = NIL;
		c->sq_off = 0;
	} else if (c->sq_len == 0 && c->sq_off == CHUNK_SIZE) {
		sq_flush(st, c);
	}
}

static int challenge_ack_allowed(struct tcp_stack *st, uint64_t now)
{
	/* RFC 5961 7: at most 1000 challenge ACKs per second per instance. */
	if (now - st->chal_window >= 1000 * NS_PER_MS) {
		st->chal_window = now;
		st->chal_count = 0;
	}
	if (st->chal_count >= 1000)
		return 0;
	st->chal_count++;
	return 1;
}

static void send_challenge_ack(struct tcp_conn *c, uint64_t now)
{
	struct tcp_stack *st = c->st;
	if (!challenge_ack_allowed(st, now))
		return;
	st->stats.challenge_acks++;
	conn_xmit(c, 0, c->snd_nxt, 0, now);
}

static void enter_time_wait(struct tcp_conn *c, uint64_t now)
{
	struct tcp_stack *st = c->st;
	c->state = TCP_TIME_WAIT;
	c->t_rtx = 0;
	c->t_delack = 0;
	c->t_keep = now + 2ULL * st->cfg.msl_ms * NS_PER_MS;
	sq_flush(st, c);
	if (!(c->flags & CF_ON_TW)) {
		c->flags |= CF_ON_TW;
		c->tw_next = NULL;
		c->tw_prev = st->tw_tail;
		if (st->tw_tail) st->tw_tail->tw_next = c; else st->tw_head = c;
		st->tw_tail = c;
	}
	conn_timer_update(c);
}

static int fin_acked(const struct tcp_conn *c)
{
	return (c->flags & CF_FIN_SENT) && SEQ_GT(c->snd_una, data_end(c));
}

/* Processes a new cumulative ACK (SND.UNA < ack <= SND.MAX). */
static void ack_new(struct tcp_conn *c, const struct seginfo *si, uint64_t now)
{
	struct tcp_stack *st = c->st;
	uint32_t ack = si->ack, acked = ack - c->snd_una;
	int was_full = tcp_send_space(c) == 0;

	/* RTT: timestamps give a sample per ACK (RFC 7323 4.1); otherwise
	 * one timed segment, never a retransmitted one (Karn, RFC 6298 3). */
	if ((c->flags & CF_TS) && si->o.has_ts && si->o.tsecr) {
		uint32_t r = ts_now(c, now) - si->o.tsecr;
		if (r < 60000)
			rtt_sample(c, r ? r * 1000 : 500);
	} else if ((c->flags & CF_RTT_TIMING) && SEQ_GT(ack, c->rtt_seq)) {
		c->flags &= ~CF_RTT_TIMING;
		rtt_sample(c, (uint32_t)((now - c->rtt_t0) / NS_PER_US));
	}
	if (SEQ_GT(ack, c->sq_seq)) {
		uint32_t n = ack - c->sq_seq;
		if (n > c->sq_len)
			n = c->sq_len;
		sq_consume(st, c, n);
	}
	c->snd_una = ack;
	if (ack == c->snd_max)
		c->flags &= ~CF_TLP_DONE;
	if (SEQ_LT(c->snd_nxt, ack))
		c->snd_nxt = ack;
	if (SEQ_LT(c->rexmit_nxt, ack))
		c->rexmit_nxt = ack;
	c->backoff = 0;
	c->retries = 0;
	sb_trim(c);

	if (c->flags & CF_IN_REC) {
		if (SEQ_GEQ(ack, c->recover)) {
			/* Full ACK: leave recovery (RFC 6582 3.2 step 3). */
			uint32_t flight = c->snd_max - c->snd_una;
			c->cwnd = c->ssthresh < flight + c->mss ? c->ssthresh : flight + c->mss;
			if (c->cwnd < 2 * c->mss)
				c->cwnd = 2 * c->mss;
			c->flags &= ~CF_IN_REC;
			c->dupacks = 0;
		} else if (!(c->flags & CF_SACK)) {
			/* Partial ACK: retransmit the next hole, deflate the
			 * window by what was acked (RFC 6582 3.2 step 5). */
			uint32_t len = data_end(c) - c->snd_una;
			if (len > c->mss) len = c->mss;
			if (len) {
				conn_xmit(c, 0, c->snd_una, len, now);
				c->retransmits++;
				st->stats.retransmits++;
			}
			c->cwnd = c->cwnd > acked ? c->cwnd - acked : 0;
			c->cwnd += c->mss;
			if (c->cwnd < c->mss) c->cwnd = c->mss;
		}
	} else {
		c->dupacks = 0;
		cc_on_ack(c, acked, now);
	}
	if (c->snd_una == c->snd_max) {
		c->t_rtx = 0;
		c->flags &= ~CF_PERSIST;
		conn_timer_update(c);
	} else {
		arm_rto(c, now);
	}
	if (was_full && tcp_send_space(c) > 0 && (c->flags & CF_WANT_WRITABLE)) {
		c->flags &= ~CF_WANT_WRITABLE;
		post_event(c, TCP_EV_WRITABLE);
	}
}

static void enter_recovery(struct tcp_conn *c, uint64_t now);

static void dupack(struct tcp_conn *c, uint64_t now)
{
	c->dupacks++;
	if (!(c->flags & CF_IN_REC)) {
		int lost = c->dupacks >= 3 ||
		           ((c->flags & CF_SACK) && sacked_bytes(c) >= 3u * c->mss) ||
		           /* the tail probe was SACKed but the hole before it
		            * was not: it is lost (RFC 8985 7.4) */
		           ((c->flags & (CF_SACK | CF_TLP_DONE)) == (CF_SACK | CF_TLP_DONE) && c->nsb);
		/* RFC 6582 3.2 step 2: no second reduction for losses from the
		 * same window (ack must be above recover). */
		if (!lost || SEQ_LT(c->snd_una, c->recover))
			return;
		enter_recovery(c, now);
	} else if (!(c->flags & CF_SACK)) {
		c->cwnd += c->mss;           /* RFC 6582 3.2 step 4 inflation */
	}
}

/* Fast retransmit and the start of fast recovery (RFC 6582 3.2 step 2,
 * RFC 6675 5 step 4). */
static void enter_recovery(struct tcp_conn *c, uint64_t now)
{
	struct tcp_stack *st = c->st;
	c->flags |= CF_IN_REC;
	c->recover = c->snd_max;
	c->ssthresh = cc_loss(c);
	st->stats.fast_retransmits++;
	uint32_t len = data_end(c) - c->snd_una;
	if (len > c->mss) len = c->mss;
	if (c->flags & CF_SACK) {
		c->cwnd = c->ssthresh;
		c->rexmit_nxt = c->snd_una;
	} else {
		c->cwnd = c->ssthresh + 3 * c->mss;
	}
	if (len) {
		conn_xmit(c, 0, c->snd_una, len, now);
		c->retransmits++;
		st->stats.retransmits++;
		c->rexmit_nxt = c->snd_una + len;
	}
	c->flags &= ~CF_RTT_TIMING;
	arm_rto(c, now);
}

static uint32_t rq_seg_limit(const struct tcp_stack *st)
{
	return 16 + st->cfg.rcvbuf / 256;
}

/* Out-of-order insert with overlap trimming; s covers [seq, seq+len). */
static int ooo_insert(struct tcp_stack *st, struct tcp_conn *c, struct seginfo *si,
                      uint32_t seq, const uint8_t *data, uint32_t len, int fin)
{
	struct seg **pp = &c->ooo;
	uint32_t end = seq + len;
	while (*pp && SEQ_LEQ((*pp)->seq + (*pp)->len, seq)) {
		if ((*pp)->fin && SEQ_LEQ((*pp)->seq + (*pp)->len, seq))
			return 0;    /* nothing valid lies beyond a FIN */
		pp = &(*pp)->next;
	}
	/* predecessor overlap handled by loop: *pp ends after seq */
	if (*pp && SEQ_LEQ((*pp)->seq, seq)) {
		uint32_t pe = (*pp)->seq + (*pp)->len;
		if (SEQ_GEQ(pe, end) && (!fin || (*pp)->fin)) {
			drop(st, TCP_DROP_DUP_DATA);
			return 0;
		}
		uint32_t d = pe - seq;
		if (d > len) d = len;
		seq += d; data += d; len -= d;
		pp = &(*pp)->next;
	}
	/* successors fully covered by us go away; partial overlap trims us */
	while (*pp && SEQ_LT((*pp)->seq, end)) {
		struct seg *n = *pp;
		if (SEQ_LEQ(n->seq + n->len, end) && !(n->fin && !fin)) {
			*pp = n->next;
			c->ooo_bytes -= n->len;
			c->ooo_segs--;
			seg_free(st, n);
			continue;
		}
		len = n->seq - seq;
		end = seq + len;
		fin = 0;
		break;
	}
	if (!len && !fin)
		return 0;
	if (c->ooo_segs >= st->cfg.ooo_max_segs) {
		drop(st, TCP_DROP_OOO_LIMIT);
		return -1;
	}
	struct seg *s = seg_alloc(st);
	if (!s) {
		drop(st, TCP_DROP_RX_MEM);
		return -1;
	}
	s->buf = si->buf;
	si->buf = NULL;
	s->data = data;
	s->seq = seq;
	s->len = len;
	s->fin = (uint8_t)fin;
	s->next = *pp;
	*pp = s;
	c->ooo_segs++;
	c->ooo_bytes += len;
	return 0;
}

static void rq_append(struct tcp_conn *c, struct seg *s)
{
	s->next = NULL;
	if (c->rq_tail) c->rq_tail->next = s; else c->rq_head = s;
	c->rq_tail = s;
	c->rq_bytes += s->len;
	c->rq_segs++;
	c->rcv_nxt += s->len;
}

/* Queues segment text (RFC 9293 3.10.7.4 seventh step). Returns 1 when a
 * FIN became in-order (caller processes it). */
static int rx_data(struct tcp_conn *c, struct seginfo *si, uint64_t now)
{
	struct tcp_stack *st = c->st;
	uint32_t seq = si->seq, len = si->dlen;
	const uint8_t *data = si->data;
	int fin = !!(si->flags & TH_FIN), fin_now = 0;

	if (si->flags & TH_SYN)
		seq++;           /* data on a SYN follows the SYN */
	if (SEQ_LT(seq, c->rcv_nxt)) {
		uint32_t d = c->rcv_nxt - seq;
		if (d > len) {
			fin = 0;     /* the FIN itself is old */
			d = len;
		}
		seq += d; data += d; len -= d;
	}
	uint32_t wend = c->rcv_nxt + (SEQ_GT(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0);
	if (SEQ_GT(seq + len, wend)) {
		len = SEQ_GT(wend, seq) ? wend - seq : 0;
		fin = 0;
	}
	if (seq == c->rcv_nxt) {
		if (len) {
			struct seg *s = NULL;
			if (c->rq_segs < rq_seg_limit(st))
				s = seg_alloc(st);
			if (!s) {
				drop(st, TCP_DROP_RX_MEM);
				c->flags |= CF_ACK_NOW;
				return 0;
			}
			s->buf = si->buf;
			si->buf = NULL;
			s->data = data;
			s->seq = seq;
			s->len = len;
			s->fin = 0;
			rq_append(c, s);
			post_event(c, TCP_EV_READABLE);
		}
		if (fin)
			fin_now = 1;
		if (c->ooo) {
			/* Filling a hole: ACK at once (RFC 5681 4.2). */
			c->flags |= CF_ACK_NOW;
			while (c->ooo && SEQ_LEQ(c->ooo->seq, c->rcv_nxt) && !fin_now) {
				struct seg *s = c->ooo;
				c->ooo = s->next;
				c->ooo_segs--;
				c->ooo_bytes -= s->len;
				uint32_t d = c->rcv_nxt - s->seq;
				if (d >= s->len) {
					if (s->fin && d == s->len)
						fin_now = 1;
					seg_free(st, s);
					continue;
				}
				s->data += d; s->seq += d; s->len -= d;
				if (s->fin)
					fin_now = 1;
				s->fin = 0;
				rq_append(c, s);
				post_event(c, TCP_EV_READABLE);
			}
			if (fin_now) {
				/* Anything queued beyond the FIN is bogus. */
				struct seg *s, *n;
				for (s = c->ooo; s; s = n) { n = s->next; seg_free(st, s); }
				c->ooo = NULL;
				c->ooo_segs = 0;
				c->ooo_bytes = 0;
			}
		}
		if (len) {
			/* Delayed ACK: every second full segment at once,
			 * otherwise within delack_ms (RFC 9293 3.8.6.3). */
			c->unacked_segs++;
			if (c->unacked_segs >= 2)
				c->flags |= CF_ACK_NOW;
			else if (!c->t_delack) {
				c->t_delack = now + (uint64_t)st->cfg.delack_ms * NS_PER_MS;
				conn_timer_update(c);
			}
		}
		return fin_now;
	}
	/* Out of order: keep it (bounded), ACK at once so the sender sees a
	 * duplicate ACK with SACK blocks (RFC 5681 4.2, RFC 2018). */
	c->flags |= CF_ACK_NOW;
	if (len || fin) {
		c->last_ooo_seq = seq;
		ooo_insert(st, c, si, seq, data, len, fin);
	}
	return 0;
}

static void handle_fin(struct tcp_conn *c, uint64_t now)
{
	c->rcv_nxt++;
	c->flags |= CF_PEER_FIN | CF_ACK_NOW;
	post_event(c, TCP_EV_EOF | TCP_EV_READABLE);
	switch (c->state) {
	case TCP_SYN_RCVD:
	case TCP_ESTABLISHED:
		c->state = TCP_CLOSE_WAIT;
		break;
	case TCP_FIN_WAIT_1:
		if (fin_acked(c))
			enter_time_wait(c, now);
		else
			c->state = TCP_CLOSING;
		break;
	case TCP_FIN_WAIT_2:
		enter_time_wait(c, now);
		break;
	default:
		break;
	}
}

static int seq_acceptable(const struct tcp_conn *c, const struct seginfo *si)
{
	uint32_t seglen = si->dlen + ((si->flags & TH_SYN) ? 1 : 0) + ((si->flags & TH_FIN) ? 1 : 0);
	uint32_t wnd = SEQ_GT(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t seq = si->seq;
	/* RFC 9293 3.10.7.4 first step, table of four cases. */
	if (seglen == 0) {
		if (wnd == 0)
			return seq == c->rcv_nxt;
		return SEQ_LEQ(c->rcv_nxt, seq) && SEQ_LT(seq, c->rcv_nxt + wnd);
	}
	if (wnd == 0)
		return 0;
	return (SEQ_LEQ(c->rcv_nxt, seq) && SEQ_LT(seq, c->rcv_nxt + wnd)) ||
	       (SEQ_LEQ(c->rcv_nxt, seq + seglen - 1) && SEQ_LT(seq + seglen - 1, c->rcv_nxt + wnd));
}

static void conn_established(struct tcp_conn *c, uint64_t now)
{
	struct tcp_stack *st = c->st;
	if (c->flags & CF_HALF_OPEN) {
		c->flags &= ~CF_HALF_OPEN;
		st->nhalfopen--;
	}
	c->state = TCP_ESTABLISHED;
	c->t_rtx = 0;
	c->backoff = 0;
	c->retries = 0;
	/* RFC 6928 initial window; RFC 5681 3.1 for loss after SYN retx. */
	c->cwnd = 10 * c->mss;
	c->ssthresh = UINT32_MAX / 2;
	c->recover = c->snd_una;
	c->last_rx = now;
	if (st->cfg.keepalive_ms)
		c->t_keep = now + (uint64_t)st->cfg.keepalive_ms * NS_PER_MS;
	conn_timer_update(c);
	if (c->flags & CF_PASSIVE) {
		st->stats.conns_accepted++;
		c->flags |= CF_APP_OWNED;
		post_event(c, TCP_EV_ACCEPT);
	} else {
		st->stats.conns_connected++;
		post_event(c, TCP_EV_CONNECTED | TCP_EV_WRITABLE);
	}
}

/* RFC 9293 3.10.7.4: segment arrives for a synchronized or SYN-RCVD conn. */
static void tcp_segment(struct tcp_conn *c, struct seginfo *si, uint64_t now)
{
	struct tcp_stack *st = c->st;
	uint8_t fl = si->flags;

	if (c->state == TCP_SYN_SENT) {
		if ((fl & TH_ACK) && (SEQ_LEQ(si->ack, c->iss) || SEQ_GT(si->ack, c->snd_max))) {
			if (!(fl & TH_RST))
				send_rst_reply(st, si->v6, si->dst, si->src, si->dport, si->sport,
				               si->ack, 0, TH_RST, now);
			drop(st, TCP_DROP_ACK_INVALID);
			return;
		}
		if (fl & TH_RST) {
			/* RFC 5961 3.2 / RFC 9293: only with an acceptable ACK. */
			if (fl & TH_ACK) {
				st->stats.conns_reset++;
				conn_dead(c, ECONNREFUSED);
			} else {
				drop(st, TCP_DROP_RST_INVALID);
			}
			return;
		}
		if (!(fl & TH_SYN)) {
			drop(st, TCP_DROP_BAD_FLAGS);
			return;
		}
		c->irs = si->seq;
		c->rcv_nxt = si->seq + 1;
		c->rcv_adv = c->rcv_nxt;
		if (si->o.has_mss && si->o.mss && si->o.mss < c->mss)
			c->mss = si->o.mss < 88 ? 88 : si->o.mss;
		c->peer_mss = si->o.has_mss ? si->o.mss : 536;
		if (si->o.has_ws && !st->cfg.no_wscale) {
			c->flags |= CF_WS;
			c->snd_ws = si->o.ws;
		} else {
			c->rcv_ws = 0;
			c->snd_ws = 0;
		}
		if (si->o.sack_ok && !st->cfg.no_sack)
			c->flags |= CF_SACK;
		if (si->o.has_ts && !st->cfg.no_timestamps) {
			c->flags |= CF_TS;
			c->ts_recent = si->o.tsval;
		}
		if (c->flags & CF_TS)
			c->mss -= 12;
		if (fl & TH_ACK) {
			if (!(c->flags & CF_TS) && !c->backoff)
				rtt_sample(c, (uint32_t)((now - c->rtt_t0) / NS_PER_US));
			else if ((c->flags & CF_TS) && si->o.tsecr)
				rtt_sample(c, (ts_now(c, now) - si->o.tsecr) * 1000);
			c->flags &= ~CF_RTT_TIMING;
			c->snd_una = si->ack;
			c->sq_seq = c->snd_una;
			c->snd_wnd = si->win;        /* unscaled in SYN (RFC 7323 2.2) */
			c->max_snd_wnd = c->snd_wnd;
			c->snd_wl1 = si->seq;
			c->snd_wl2 = si->ack;
			conn_established(c, now);
			c->flags |= CF_ACK_NOW;
			tcp_output(c, now);
		} else {
			/* Simultaneous open (RFC 9293 3.5 figure 7). */
			c->state = TCP_SYN_RCVD;
			c->flags |= CF_ACK_NOW;
			c->snd_wnd = si->win;
			tcp_output(c, now);
		}
		return;
	}

	if (c->state == TCP_SYN_RCVD && !(c->flags & CF_PASSIVE) &&
	    (fl & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK) && si->seq == c->irs) {
		/* Simultaneous open (RFC 9293 figure 7, line 6): the peer's
		 * SYN-ACK repeats its SYN and acknowledges ours. */
		fl &= (uint8_t)~TH_SYN;
		si->flags = fl;
		si->seq++;
		c->flags |= CF_ACK_NOW;
	}
	/* PAWS (RFC 7323 5.3): old timestamps are duplicates. */
	if ((c->flags & CF_TS) && si->o.has_ts && !(fl & TH_RST) &&
	    SEQ_LT(si->o.tsval, c->ts_recent)) {
		drop(st, TCP_DROP_PAWS);
		c->flags |= CF_ACK_NOW;
		tcp_output(c, now);
		return;
	}
	if (!seq_acceptable(c, si)) {
		if (!(fl & TH_RST)) {
			if (c->state == TCP_TIME_WAIT && (fl & TH_FIN)) {
				/* Retransmitted FIN: re-ACK, restart 2MSL
				 * (RFC 9293 3.10.7.4 eighth step). */
				c->t_keep = now + 2ULL * st->cfg.msl_ms * NS_PER_MS;
			}
			if (c->state == TCP_TIME_WAIT)
				conn_xmit(c, 0, c->snd_nxt, 0, now);
			else {
				c->flags |= CF_ACK_NOW;
				tcp_output(c, now);
			}
		}
		drop(st, TCP_DROP_SEQ_OUT_OF_WINDOW);
		return;
	}
	/* TS.Recent update (RFC 7323 4.3). */
	if ((c->flags & CF_TS) && si->o.has_ts && SEQ_LEQ(si->seq, c->last_ack_sent))
		c->ts_recent = si->o.tsval;

	if (fl & TH_RST) {
		/* RFC 5961 3.2: exact match resets, otherwise challenge. */
		if (si->seq != c->rcv_nxt) {
			send_challenge_ack(c, now);
			drop(st, TCP_DROP_RST_INVALID);
			return;
		}
		st->stats.conns_reset++;
		if (c->state == TCP_SYN_RCVD && (c->flags & CF_PASSIVE)) {
			conn_free(st, c);
			return;
		}
		int err = ECONNRESET;
		if (c->state == TCP_TIME_WAIT || c->state == TCP_CLOSING || c->state == TCP_LAST_ACK)
			err = 0;
		if (c->state != TCP_TIME_WAIT)
			rq_flush(st, c);
		conn_dead(c, err);
		return;
	}
	if (fl & TH_SYN) {
		/* RFC 5961 4.2: a SYN in a synchronized state gets a challenge
		 * ACK; SYN-RCVD retransmitted SYNs are caught above. */
		if (c->state == TCP_SYN_RCVD) {
			c->flags |= CF_ACK_NOW;
			tcp_output(c, now);
		} else {
			send_challenge_ack(c, now);
		}
		drop(st, TCP_DROP_SYN_IN_WINDOW);
		return;
	}
	if (!(fl & TH_ACK)) {
		drop(st, TCP_DROP_BAD_FLAGS);
		return;
	}
	if (c->state == TCP_SYN_RCVD) {
		if (SEQ_GT(si->ack, c->snd_una) && SEQ_LEQ(si->ack, c->snd_max)) {
			c->snd_wnd = (uint32_t)si->win << c->snd_ws;
			c->max_snd_wnd = c->snd_wnd;
			c->snd_wl1 = si->seq;
			c->snd_wl2 = si->ack;
			if ((c->flags & CF_TS) && si->o.tsecr)
				rtt_sample(c, (ts_now(c, now) - si->o.tsecr) * 1000);
			else if (!c->backoff)
				rtt_sample(c, (uint32_t)((now - c->rtt_t0) / NS_PER_US));
			c->snd_una = si->ack;
			c->sq_seq = c->snd_una;
			c->flags &= ~CF_RTT_TIMING;
			conn_established(c, now);
		} else {
			send_rst_reply(st, si->v6, si->dst, si->src, si->dport, si->sport,
			               si->ack, 0, TH_RST, now);
			drop(st, TCP_DROP_ACK_INVALID);
			return;
		}
	}
	/* RFC 5961 5.2: ACK must lie in [SND.UNA - MAX.SND.WND, SND.NXT]. */
	if (SEQ_GT(si->ack, c->snd_max) ||
	    SEQ_LT(si->ack, c->snd_una - (c->max_snd_wnd ? c->max_snd_wnd : 1))) {
		send_challenge_ack(c, now);
		drop(st, TCP_DROP_ACK_INVALID);
		return;
	}
	uint32_t win = (uint32_t)si->win << c->snd_ws;
	if (SEQ_GT(si->ack, c->snd_una)) {
		ack_new(c, si, now);
	} else if (si->ack == c->snd_una && si->dlen == 0 && !(fl & TH_FIN) &&
	           win == c->snd_wnd && c->snd_max != c->snd_una) {
		if (c->flags & CF_SACK)
			sb_update(c, &si->o);
		dupack(c, now);
	}
	if ((c->flags & CF_SACK) && si->o.nsack && SEQ_GT(si->ack, c->snd_una - 1))
		sb_update(c, &si->o);
	if ((c->flags & (CF_SACK | CF_TLP_DONE | CF_IN_REC)) == (CF_SACK | CF_TLP_DONE) &&
	    c->nsb && SEQ_GEQ(c->snd_una, c->recover) && c->snd_una != c->snd_max)
		enter_recovery(c, now);   /* the probe's SACK shows a hole */
	/* Window update (RFC 9293 3.10.7.4 fifth step, SND.WL1/WL2). */
	if (SEQ_LT(c->snd_wl1, si->seq) ||
	    (c->snd_wl1 == si->seq && SEQ_LEQ(c->snd_wl2, si->ack))) {
		int opened = c->snd_wnd == 0 && win > 0;
		c->snd_wnd = win;
		c->snd_wl1 = si->seq;
		c->snd_wl2 = si->ack;
		if (win > c->max_snd_wnd)
			c->max_snd_wnd = win;
		if (opened && (c->flags & CF_PERSIST)) {
			c->flags &= ~CF_PERSIST;
			c->t_rtx = 0;
			c->backoff = 0;
			conn_timer_update(c);
		}
	}
	if ((c->flags & CF_PERSIST) && si->ack == c->snd_una)
		c->retries = 0;      /* the peer answers our probes */
	if ((c->flags & (CF_IN_REC | CF_SACK)) == (CF_IN_REC | CF_SACK) && c->t_rtx &&
	    !(c->flags & CF_PERSIST)) {
		/* Lost retransmissions: RFC 6675 alone only finds them by RTO.
		 * If SACK recovery makes no progress for max(2 SRTT, 10 ms),
		 * treat the holes as lost again (the idea of RACK/TLP, RFC
		 * 8985, in its simplest form). Re-armed by every ACK. */
		uint64_t pto = 2ULL * c->srtt * NS_PER_US;
		if (pto < 10 * NS_PER_MS)
			pto = 10 * NS_PER_MS;
		if (now + pto < c->t_rtx) {
			c->flags |= CF_REC_PROBE;
			c->t_rtx = now + pto;
			conn_timer_update(c);
		}
	}

	switch (c->state) {
	case TCP_FIN_WAIT_1:
		if (fin_acked(c)) {
			c->state = TCP_FIN_WAIT_2;
			c->t_rtx = 0;
			if ((c->flags & CF_APP_CLOSED) && !c->t_keep) {
				/* Orphaned FIN_WAIT_2 must not last forever. */
				c->t_keep = now + 2ULL * st->cfg.msl_ms * NS_PER_MS;
			}
			conn_timer_update(c);
		}
		break;
	case TCP_CLOSING:
		if (fin_acked(c)) {
			enter_time_wait(c, now);
			return;
		}
		break;
	case TCP_LAST_ACK:
		if (fin_acked(c)) {
			conn_dead(c, 0);
			return;
		}
		break;
	case TCP_TIME_WAIT:
		return;
	default:
		break;
	}
	c->last_rx = now;
	if ((c->flags & CF_KEEP_PROBE) && c->state == TCP_ESTABLISHED) {
		/* The peer answered a keepalive probe. */
		c->flags &= ~CF_KEEP_PROBE;
		c->retries = 0;
		c->t_keep = now + (uint64_t)st->cfg.keepalive_ms * NS_PER_MS;
		conn_timer_update(c);
	}

	int fin = 0;
	if (c->state == TCP_ESTABLISHED || c->state == TCP_FIN_WAIT_1 ||
	    c->state == TCP_FIN_WAIT_2) {
		if (si->dlen || (fl & TH_FIN))
			fin = rx_data(c, si, now);
	} else if (fl & TH_FIN) {
		/* Already have the peer's FIN (CLOSE_WAIT, CLOSING, LAST_ACK):
		 * a duplicate was rejected by the sequence test; re-ACK. */
		c->flags |= CF_ACK_NOW;
	}
	if (fin)
		handle_fin(c, now);
	if (c->state == TCP_TIME_WAIT) {
		conn_xmit(c, 0, c->snd_nxt, 0, now);
		return;
	}
	tcp_output(c, now);
}

/* ---- SYN cookies (RFC 4987 3.6) ----
 * ISN = t:2 | mss:3 | wscale:4 | sack:1 | hash:22, t counting 64 s
 * periods; hash = SipHash(secret, 4-tuple, peer ISN, t, option bits).
 * The MSS index encodes the peer's MSS (what we may send), rounded down. */
static const uint16_t cookie_mss[8] = { 536, 1000, 1200, 1220, 1360, 1400, 1440, 1460 };

static uint32_t cookie_hash(struct tcp_stack *st, const struct seginfo *si, uint32_t peer_isn,
                            uint64_t t, uint32_t bits)
{
	uint8_t k[64];
	size_t al = si->v6 ? 16 : 4, n = 0;
	memcpy(k, si->src, al); n += al;
	memcpy(k + n, si->dst, al); n += al;
	wr16(k + n, si->sport); n += 2;
	wr16(k + n, si->dport); n += 2;
	wr32(k + n, peer_isn); n += 4;
	memcpy(k + n, &t, 8); n += 8;
	wr32(k + n, bits); n += 4;
	return (uint32_t)tcp_siphash(st->cfg.secret, k, n) & 0x3fffff;
}

static uint32_t cookie_make(struct tcp_stack *st, const struct seginfo *si, uint64_t now,
                            unsigned mssidx, unsigned ws, unsigned sack)
{
	uint64_t t = now / (64ULL * 1000 * NS_PER_MS);
	uint32_t bits = (uint32_t)(t & 3) << 30 | mssidx << 27 | ws << 23 | sack << 22;
	return bits | cookie_hash(st, si, si->seq, t, bits);
}

/* Returns 0 and the decoded options when ack-1 is a cookie we issued in the
 * last two periods. */
static int cookie_check(struct tcp_stack *st, const struct seginfo *si, uint64_t now,
                        unsigned *mssidx, unsigned *ws, unsigned *sack)
{
	uint32_t ck = si->ack - 1, peer_isn = si->seq - 1;
	uint64_t tnow = now / (64ULL * 1000 * NS_PER_MS);
	uint32_t bits = ck & ~0x3fffffu;
	for (uint64_t d = 0; d < 2 && d <= tnow; d++) {
		uint64_t t = tnow - d;
		if ((uint32_t)(t & 3) != ck >> 30)
			continue;
		if (cookie_hash(st, si, peer_isn, t, bits) == (ck & 0x3fffff)) {
			*mssidx = (ck >> 27) & 7;
			*ws = (ck >> 23) & 15;
			*sack = (ck >> 22) & 1;
			return 0;
		}
	}
	return -1;
}

static uint32_t make_isn(struct tcp_stack *st, int v6, const uint8_t *la, uint16_t lp,
                         const uint8_t *ra, uint16_t rp, uint64_t now)
{
	/* RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport,
	 * secretkey), M a 4 microsecond timer. */
	uint8_t k[37];
	size_t al = v6 ? 16 : 4;
	memcpy(k, la, al);
	memcpy(k + al, ra, al);
	wr16(k + 2 * al, lp);
	wr16(k + 2 * al + 2, rp);
	k[2 * al + 4] = 0x5a;    /* domain separation from table hashing */
	return (uint32_t)(now / 4000) + (uint32_t)tcp_siphash(st->cfg.secret, k, 2 * al + 5);
}

static uint32_t make_ts_off(struct tcp_stack *st, int v6, const uint8_t *la, uint16_t lp,
                            const uint8_t *ra, uint16_t rp)
{
	/* RFC 7323 7.1: per-connection timestamp offset. */
	uint8_t k[37];
	size_t al = v6 ? 16 : 4;
	memcpy(k, la, al);
	memcpy(k + al, ra, al);
	wr16(k + 2 * al, lp);
	wr16(k + 2 * al + 2, rp);
	k[2 * al + 4] = 0xa5;
	return (uint32_t)tcp_siphash(st->cfg.secret, k, 2 * al + 5);
}

static uint16_t base_mss(const struct tcp_stack *st, int v6)
{
	return (uint16_t)(st->cfg.mtu - (v6 ? 60 : 40));
}

static uint8_t our_wscale(const struct tcp_stack *st)
{
	uint8_t ws = 0;
	while (ws < 14 && (65535u << ws) < st->cfg.rcvbuf)
		ws++;
	return ws;
}

static void conn_init_tuple(struct tcp_conn *c, const struct seginfo *si)
{
	size_t al = si->v6 ? 16 : 4;
	memcpy(c->laddr, si->dst, al);
	memcpy(c->raddr, si->src, al);
	c->lport = si->dport;
	c->rport = si->sport;
	if (si->v6)
		c->flags |= CF_V6;
}

static void conn_init_common(struct tcp_stack *st, struct tcp_conn *c)
{
	c->rto = st->cfg.rto_init_ms * 1000;
	c->mss = base_mss(st, !!(c->flags & CF_V6));
	c->ts_off = make_ts_off(st, !!(c->flags & CF_V6), c->laddr, c->lport, c->raddr, c->rport);
	c->rcv_ws = st->cfg.no_wscale ? 0 : our_wscale(st);
}

static void syn_cookie_reply(struct tcp_stack *st, struct seginfo *si, uint64_t now)
{
	/* No state: answer from the SYN alone. */
	unsigned mssidx = 0, ws = 15, sack = 0;
	uint16_t peer = si->o.has_mss ? si->o.mss : 536, mine = base_mss(st, si->v6);
	for (unsigned i = 0; i < 8; i++)
		if (cookie_mss[i] <= peer && cookie_mss[i] <= mine)
			mssidx = i;
	if (si->o.has_ws && !st->cfg.no_wscale)
		ws = si->o.ws;
	if (si->o.sack_ok && !st->cfg.no_sack)
		sack = 1;
	struct tcp_conn tmp;
	memset(&tmp, 0, sizeof(tmp));
	tmp.st = st;
	conn_init_tuple(&tmp, si);
	conn_init_common(st, &tmp);
	tmp.flags |= CF_PASSIVE;
	if (sack) tmp.flags |= CF_SACK;
	if (ws != 15) tmp.flags |= CF_WS; else tmp.rcv_ws = 0;
	if (si->o.has_ts && !st->cfg.no_timestamps) {
		tmp.flags |= CF_TS;
		tmp.ts_recent = si->o.tsval;
	}
	uint8_t opt[40];
	uint32_t olen = build_opts(&tmp, TH_SYN, opt, now, NULL);
	struct emit e = {
		.v6 = si->v6, .laddr = si->dst, .raddr = si->src, .lport = si->dport,
		.rport = si->sport, .seq = cookie_make(st, si, now, mssidx, ws, sack),
		.ack = si->seq + 1, .flags = TH_SYN | TH_ACK,
		.win = (uint16_t)(st->cfg.rcvbuf > 65535 ? 65535 : st->cfg.rcvbuf),
		.opt = opt, .optlen = olen,
	};
	st->stats.syncookies_sent++;
	tcp_emit(st, &e, now);
}

static int is_listening(const struct tcp_stack *st, uint16_t port)
{
	for (uint32_t i = 0; i < st->nlisten; i++)
		if (st->listen[i] == port)
			return 1;
	return 0;
}

/* No connection matches (RFC 9293 3.10.7.1 CLOSED / 3.10.7.2 LISTEN). */
static void tcp_no_conn(struct tcp_stack *st, struct seginfo *si, uint64_t now)
{
	uint8_t fl = si->flags;
	int listening = is_listening(st, si->dport);

	if (fl & TH_RST) {
		drop(st, TCP_DROP_NO_CONN);
		return;
	}
	if (listening && (fl & TH_SYN) && !(fl & TH_ACK)) {
		if (fl & TH_FIN) {
			drop(st, TCP_DROP_BAD_FLAGS);
			return;
		}
		st->stats.syn_rcvd++;
		int cookies = st->cfg.syncookies == 1 ||
		              (st->cfg.syncookies == 0 &&
		               (st->nhalfopen >= st->cfg.syn_backlog || under_pressure(st)));
		struct tcp_conn *c = NULL;
		if (!cookies) {
			c = conn_alloc(st);
			if (!c) {
				if (st->cfg.syncookies == 2) {
					drop(st, TCP_DROP_CONN_LIMIT);
					return;
				}
				cookies = 1;
			}
		}
		if (cookies) {
			syn_cookie_reply(st, si, now);
			return;
		}
		c->flags |= CF_PASSIVE | CF_HALF_OPEN;
		st->nhalfopen++;
		conn_init_tuple(c, si);
		conn_init_common(st, c);
		c->state = TCP_SYN_RCVD;
		c->irs = si->seq;
		c->rcv_nxt = si->seq + 1;
		c->rcv_adv = c->rcv_nxt;
		c->iss = make_isn(st, si->v6, si->dst, si->dport, si->src, si->sport, now);
		c->snd_una = c->iss;
		c->snd_nxt = c->iss + 1;
		c->snd_max = c->iss + 1;
		c->sq_seq = c->iss + 1;
		c->recover = c->iss;
		c->snd_wnd = si->win;
		c->peer_mss = si->o.has_mss ? si->o.mss : 536;
		if (c->peer_mss < c->mss)
			c->mss = c->peer_mss < 88 ? 88 : c->peer_mss;
		if (si->o.has_ws && !st->cfg.no_wscale) {
			c->flags |= CF_WS;
			c->snd_ws = si->o.ws;
		} else {
			c->rcv_ws = 0;
		}
		if (si->o.sack_ok && !st->cfg.no_sack)
			c->flags |= CF_SACK;
		if (si->o.has_ts && !st->cfg.no_timestamps) {
			c->flags |= CF_TS;
			c->ts_recent = si->o.tsval;
			c->mss -= 12;
		}
		c->rtt_t0 = now;
		conn_hash_insert(st, c);
		c->flags |= CF_ACK_NOW;
		tcp_output(c, now);
		arm_rto(c, now);
		return;
	}
	if (listening && (fl & TH_ACK) && !(fl & TH_SYN) && st->cfg.syncookies != 2) {
		unsigned mssidx, ws, sack;
		if (cookie_check(st, si, now, &mssidx, &ws, &sack) == 0) {
			struct tcp_conn *c = conn_alloc(st);
			if (!c) {
				drop(st, TCP_DROP_CONN_LIMIT);
				return;
			}
			st->stats.syncookies_ok++;
			c->flags |= CF_PASSIVE;
			conn_init_tuple(c, si);
			conn_init_common(st, c);
			c->irs = si->seq - 1;
			c->rcv_nxt = si->seq;
			c->rcv_adv = c->rcv_nxt + (st->cfg.rcvbuf > 65535 ? 65535 : st->cfg.rcvbuf);
			c->iss = si->ack - 1;
			c->snd_una = si->ack;
			c->snd_nxt = c->snd_max = si->ack;
			c->sq_seq = si->ack;
			c->mss = cookie_mss[mssidx];
			c->peer_mss = c->mss;
			if (ws != 15) {
				c->flags |= CF_WS;
				c->snd_ws = (uint8_t)ws;
			} else {
				c->rcv_ws = 0;
			}
			if (sack)
				c->flags |= CF_SACK;
			/* Timestamps were offered iff the ACK carries them. */
			if (si->o.has_ts && !st->cfg.no_timestamps) {
				c->flags |= CF_TS;
				c->ts_recent = si->o.tsval;
				c->mss -= 12;
			}
			c->snd_wnd = (uint32_t)si->win << c->snd_ws;
			c->max_snd_wnd = c->snd_wnd;
			c->snd_wl1 = si->seq;
			c->snd_wl2 = si->ack;
			c->last_ack_sent = c->rcv_nxt;
			conn_hash_insert(st, c);
			conn_established(c, now);
			/* The ACK may carry data or a FIN: process it normally. */
			if (si->dlen || (si->flags & TH_FIN))
				tcp_segment(c, si, now);
			return;
		}
		drop(st, TCP_DROP_BAD_COOKIE);
		send_rst_reply(st, si->v6, si->dst, si->src, si->dport, si->sport,
		               si->ack, 0, TH_RST, now);
		return;
	}
	drop(st, listening ? TCP_DROP_NO_CONN : TCP_DROP_NO_LISTENER);
	/* RFC 9293 3.10.7.1: answer with a reset. */
	if (fl & TH_ACK)
		send_rst_reply(st, si->v6, si->dst, si->src, si->dport, si->sport,
		               si->ack, 0, TH_RST, now);
	else
		send_rst_reply(st, si->v6, si->dst, si->src, si->dport, si->sport, 0,
		               si->seq + si->dlen + ((fl & TH_SYN) ? 1 : 0) + ((fl & TH_FIN) ? 1 : 0),
		               TH_RST | TH_ACK, now);
}

static void send_rst_conn(struct tcp_conn *c);

static void conn_timer_fire(struct tcp_conn *c, uint64_t now)
{
	struct tcp_stack *st = c->st;

	if (c->t_keep && now >= c->t_keep) {
		uint64_t due = c->t_keep;
		c->t_keep = 0;
		if (c->state == TCP_TIME_WAIT || c->state == TCP_FIN_WAIT_2) {
			conn_dead(c, 0);
			return;
		}
		if ((c->flags & CF_APP_CLOSED) && (c->state == TCP_FIN_WAIT_1 ||
		    c->state == TCP_CLOSING || c->state == TCP_LAST_ACK)) {
			st->stats.conns_timeout++;
			send_rst_conn(c);
			conn_dead(c, ETIMEDOUT);
			return;
		}
		uint64_t ka = (uint64_t)st->cfg.keepalive_ms * NS_PER_MS;
		if (c->state == TCP_ESTABLISHED && ka && !(c->flags & CF_KEEP_PROBE) &&
		    now < c->last_rx + ka) {
			/* Traffic since arming: the deadline moved lazily. */
			c->t_keep = c->last_rx + ka;
		} else if (c->state == TCP_ESTABLISHED && ka) {
			/* Keepalive probe: SEG.SEQ = SND.NXT - 1 (RFC 9293
			 * 3.8.4), at most 9 unanswered. */
			c->flags |= CF_KEEP_PROBE;
			if (++c->retries > 9) {
				st->stats.conns_timeout++;
				conn_dead(c, ETIMEDOUT);
				return;
			}
			conn_xmit(c, 0, c->snd_nxt - 1, 0, now);
			/* from the deadline, not from now: no drift */
			c->t_keep = due + 75000ULL * NS_PER_MS;
		}
	}
	if (c->t_delack && now >= c->t_delack) {
		c->t_delack = 0;
		c->flags |= CF_ACK_NOW;
		tcp_output(c, now);
	}
	if (c->t_rtx && now >= c->t_rtx) {
		c->t_rtx = 0;
		if (c->flags & CF_PERSIST) {
			/* Zero-window probe: an old sequence number draws an
			 * ACK with the current window (RFC 9293 3.8.6.1). */
			if (++c->retries > st->cfg.max_retries) {
				st->stats.conns_timeout++;
				conn_dead(c, ETIMEDOUT);
				return;
			}
			conn_xmit(c, 0, c->snd_una - 1, 0, now);
			if (c->backoff < 16)
				c->backoff++;
			arm_rto(c, now);
			return;
		}
		if (c->flags & CF_TLP) {
			/* Tail loss probe: resend the last segment so its ACK
			 * (with SACK) reveals any loss in the tail without an
			 * RTO (RFC 8985 7.3). */
			c->flags &= ~CF_TLP;
			c->flags |= CF_TLP_DONE;
			if (c->snd_una != c->snd_max) {
				uint32_t dend = data_end(c);
				int fin = (c->flags & CF_FIN_SENT) && SEQ_GT(c->snd_max, dend);
				uint32_t end = fin ? dend : c->snd_max;
				uint32_t len = end - c->snd_una;
				if (len > c->mss)
					len = c->mss;
				st->stats.tlp_probes++;
				st->stats.retransmits++;
				c->retransmits++;
				conn_xmit(c, (uint8_t)((fin ? TH_FIN : 0) | (len ? TH_PSH : 0)), end - len, len, now);
			}
			arm_rto(c, now);
			return;
		}
		if (c->flags & CF_REC_PROBE) {
			c->flags &= ~CF_REC_PROBE;
			if (c->flags & CF_IN_REC) {
				st->stats.rec_probes++;
				c->rexmit_nxt = c->snd_una;
				tcp_output(c, now);
				if (!c->t_rtx)
					arm_rto(c, now);
				return;
			}
		}
		st->stats.rto_fired++;
		if (c->state == TCP_SYN_SENT || c->state == TCP_SYN_RCVD) {
			if (++c->retries > st->cfg.syn_retries) {
				st->stats.conns_timeout++;
				conn_dead(c, ETIMEDOUT);
				return;
			}
			c->backoff++;
			c->flags |= CF_ACK_NOW;
			tcp_output(c, now);
			arm_rto(c, now);
			return;
		}
		if (c->snd_una == c->snd_max)
			return;
		if (++c->retries > st->cfg.max_retries) {
			st->stats.conns_timeout++;
			conn_dead(c, ETIMEDOUT);
			return;
		}
		/* RFC 5681 3.1 / RFC 6298 5.5-5.7: back off, collapse cwnd,
		 * go back to SND.UNA; RFC 6582 4: recover = highest sent. */
		if (c->backoff == 0)
			c->ssthresh = cc_loss(c);
		c->cwnd = c->mss;
		if (c->backoff < 16)
			c->backoff++;
		c->flags &= ~(CF_IN_REC | CF_RTT_TIMING);
		c->dupacks = 0;
		c->nsb = 0;
		c->high_sack = c->snd_una;
		c->recover = c->snd_max;
		c->snd_nxt = c->snd_una;
		c->rexmit_nxt = c->snd_una;
		tcp_output(c, now);
		if (!c->t_rtx)
			arm_rto(c, now);
		return;
	}
	conn_timer_update(c);
}

static void tcp_rx(struct tcp_stack *st, struct seginfo *si, const uint8_t *l4, uint32_t l4len,
                   uint64_t now)
{
	if (l4len < 20) {
		drop(st, TCP_DROP_TCP_HDR);
		return;
	}
	uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
	if (doff < 20 || doff > l4len) {
		drop(st, TCP_DROP_TCP_HDR);
		return;
	}
	if (!(si->buf->rx_flags & TCP_RX_L4_CSUM_OK)) {
		uint32_t s = csum_pseudo(si->v6, si->src, si->dst, 6, l4len);
		if (tcp_csum_fold(tcp_csum_add(s, l4, l4len)) != 0) {
			drop(st, TCP_DROP_TCP_CSUM);
			return;
		}
	}
	si->sport = rd16(l4);
	si->dport = rd16(l4 + 2);
	si->seq = rd32(l4 + 4);
	si->ack = rd32(l4 + 8);
	si->flags = l4[13] & 0x3f;
	si->win = rd16(l4 + 14);
	si->data = l4 + doff;
	si->dlen = l4len - doff;
	if (si->sport == 0 || si->dport == 0) {
		drop(st, TCP_DROP_TCP_HDR);
		return;
	}
	if (parse_opts(l4 + 20, doff - 20, &si->o, si->flags) < 0) {
		drop(st, TCP_DROP_TCP_OPTS);
		return;
	}
	if ((si->flags & (TH_SYN | TH_RST)) == (TH_SYN | TH_RST) ||
	    (si->flags & (TH_SYN | TH_FIN)) == (TH_SYN | TH_FIN) || !(si->flags & 0x17)) {
		/* Nonsense combinations (SYN+RST, SYN+FIN, no control bit
		 * other than PSH/URG) are scans, not TCP. */
		drop(st, TCP_DROP_BAD_FLAGS);
		return;
	}
	st->stats.rx_segs++;
	struct tcp_conn *c = conn_lookup(st, si->v6, si->dst, si->dport, si->src, si->sport);
	if (c && c->state == TCP_TIME_WAIT && (si->flags & TH_SYN) && !(si->flags & TH_ACK) &&
	    (!(c->flags & CF_APP_OWNED) || (c->flags & CF_APP_CLOSED)) &&
	    (SEQ_GT(si->seq, c->rcv_nxt) ||
	     ((c->flags & CF_TS) && si->o.has_ts && SEQ_GT(si->o.tsval, c->ts_recent)))) {
		/* RFC 9293 3.6.1 / RFC 6191: a new SYN above the old sequence
		 * space (or with a newer timestamp) may reopen the tuple. */
		st->stats.time_wait_reused++;
		conn_free(st, c);
		c = NULL;
	}
	if (!c) {
		tcp_no_conn(st, si, now);
		return;
	}
	tcp_segment(c, si, now);
}

/* ------------------------------------------------------------------ */
/* ICMP / ICMPv6                                                      */

static void pmtu_update(struct tcp_stack *st, int v6, const uint8_t *inner, uint32_t ilen,
                        uint32_t mtu, uint64_t now)
{
	uint32_t ihl = v6 ? 40 : (uint32_t)(inner[0] & 0xf) * 4;
	if (ilen < ihl + 8 || (v6 ? inner[6] : inner[9]) != 6) {
		drop(st, TCP_DROP_ICMP_BAD);
		return;
	}
	const uint8_t *isrc = v6 ? inner + 8 : inner + 12, *idst = v6 ? inner + 24 : inner + 16;
	const uint8_t *t = inner + ihl;
	struct tcp_conn *c = conn_lookup(st, v6, isrc, rd16(t), idst, rd16(t + 2));
	uint32_t seq = rd32(t + 4);
	/* RFC 5927 4.1: only believe errors about data in flight. */
	if (!c || c->state < TCP_SYN_RCVD || SEQ_LT(seq, c->snd_una) || SEQ_GEQ(seq, c->snd_max)) {
		drop(st, TCP_DROP_ICMP_BAD);
		return;
	}
	uint32_t minmtu = v6 ? 1280 : 576;
	if (mtu < minmtu)
		mtu = minmtu;
	uint32_t mss = mtu - (v6 ? 60 : 40) - ((c->flags & CF_TS) ? 12 : 0);
	if (mss >= c->mss)
		return;
	st->stats.pmtu_updates++;
	c->mss = (uint16_t)mss;
	/* Resend what was lost with the smaller size at once (like a
	 * retransmission timeout without the congestion penalty). */
	c->snd_nxt = c->snd_una;
	c->flags &= ~CF_RTT_TIMING;
	tcp_output(c, now);
}

static void icmp4_rx(struct tcp_stack *st, const uint8_t *ip, uint32_t ihl, uint32_t totlen,
                     uint64_t now)
{
	const uint8_t *ic = ip + ihl;
	uint32_t len = totlen - ihl;
	if (len < 8) {
		drop(st, TCP_DROP_ICMP_BAD);
		return;
	}
	if (tcp_csum_fold(tcp_csum_add(0, ic, len)) != 0) {
		drop(st, TCP_DROP_ICMP_CSUM);
		return;
	}
	if (ic[0] == 8 && ic[1] == 0) {
		struct txctx t;
		if (20 + len > st->cfg.mtu) {
			drop(st, TCP_DROP_ICMP_BAD);
			return;
		}
		if (tx_begin(st, 0, ip + 12, l2_len(st) + 20 + len, &t, now) < 0)
			return;
		uint8_t *o = t.frame + t.l2len;
		o[0] = 0x45; o[1] = 0;
		wr16(o + 2, (uint16_t)(20 + len));
		wr16(o + 4, 0); wr16(o + 6, 0x4000);
		o[8] = 64; o[9] = 1; wr16(o + 10, 0);
		memcpy(o + 12, &st->cfg.ip4, 4);
		memcpy(o + 16, ip + 12, 4);
		uint16_t ck = tcp_csum_fold(tcp_csum_add(0, o, 20));
		memcpy(o + 10, &ck, 2);
		memcpy(o + 20, ic, len);
		o[20] = 0;
		wr16(o + 22, 0);
		ck = tcp_csum_fold(tcp_csum_add(0, o + 20, len));
		memcpy(o + 22, &ck, 2);
		st->stats.icmp_echo++;
		tx_end(st, &t, t.l2len + 20 + len, NULL);
		return;
	}
	if (ic[0] == 3 && ic[1] == 4) {
		/* Fragmentation needed (RFC 1191): next-hop MTU in bytes 6-7. */
		pmtu_update(st, 0, ic + 8, len - 8, rd16(ic + 6), now);
		return;
	}
	drop(st, TCP_DROP_ICMP_BAD);
}

static int is_our_ip6(const struct tcp_stack *st, const uint8_t *a)
{
	return !memcmp(a, st->cfg.ip6, 16) || !memcmp(a, st->ip6_ll, 16);
}

static void icmp6_rx(struct tcp_stack *st, const uint8_t *eth_src, const uint8_t *ip,
                     const uint8_t *ic, uint32_t len, uint64_t now)
{
	const uint8_t *src = ip + 8, *dst = ip + 24;
	if (len < 8) {
		drop(st, TCP_DROP_ICMP_BAD);
		return;
	}
	uint32_t s = csum_pseudo(1, src, dst, 58, len);
	if (tcp_csum_fold(tcp_csum_add(s, ic, len)) != 0) {
		drop(st, TCP_DROP_ICMP_CSUM);
		return;
	}
	static const uint8_t unspec[16];
	switch (ic[0]) {
	case 128: {
		if (!is_our_ip6(st, dst) || 40 + len > st->cfg.mtu) {
			drop(st, TCP_DROP_ICMP_BAD);
			return;
		}
		struct txctx t;
		if (tx_begin(st, 1, src, l2_len(st) + 40 + len, &t, now) < 0)
			return;
		uint8_t *o = t.frame + t.l2len;
		wr32(o, 0x60000000);
		wr16(o + 4, (uint16_t)len);
		o[6] = 58; o[7] = 64;
		memcpy(o + 8, dst, 16);
		memcpy(o + 24, src, 16);
		memcpy(o + 40, ic, len);
		o[40] = 129;
		wr16(o + 42, 0);
		uint32_t cs = csum_pseudo(1, dst, src, 58, len);
		uint16_t ck = tcp_csum_fold(tcp_csum_add(cs, o + 40, len));
		memcpy(o + 42, &ck, 2);
		st->stats.icmp6_echo++;
		tx_end(st, &t, t.l2len + 40 + len, NULL);
		return;
	}
	case 135:
	case 136: {
		/* RFC 4861 7.1.1/7.1.2 validity: hop limit 255, code 0, >= 24. */
		if (ip[7] != 255 || ic[1] != 0 || len < 24) {
			drop(st, TCP_DROP_NDP_BAD);
			return;
		}
		const uint8_t *target = ic + 8, *lladdr = NULL;
		uint32_t off = 24;
		while (off + 8 <= len) {
			uint32_t ol = (uint32_t)ic[off + 1] * 8;
			if (ol == 0 || off + ol > len) {
				drop(st, TCP_DROP_NDP_BAD);
				return;
			}
			if ((ic[off] == 1 && ic[0] == 135) || (ic[off] == 2 && ic[0] == 136))
				lladdr = ic + off + 2;
			off += ol;
		}
		if (ic[0] == 135) {
			if (!is_our_ip6(st, target)) {
				drop(st, TCP_DROP_NOT_US);
				return;
			}
			int dad = !memcmp(src, unspec, 16);
			if (!dad && lladdr)
				nb_learn(st, src, 1, lladdr, 1, now);
			static const uint8_t allnodes[16] = { 0xff, 2, [15] = 1 };
			const uint8_t *mac = lladdr ? lladdr : eth_src;
			if (dad) {
				uint8_t m[6] = { 0x33, 0x33, 0, 0, 0, 1 };
				send_na(st, target, allnodes, m, 0);
			} else {
				send_na(st, target, src, mac, 1);
			}
			return;
		}
		nb_learn(st, target, 1, lladdr ? lladdr : eth_src, 0, now);
		return;
	}
	case 2:
		if (len < 8 + 40 + 8) {
			drop(st, TCP_DROP_ICMP_BAD);
			return;
		}
		pmtu_update(st, 1, ic + 8, len - 8, rd32(ic + 4), now);
		return;
	default:
		drop(st, TCP_DROP_ICMP_BAD);
		return;
	}
}

/* ------------------------------------------------------------------ */
/* L2 / L3 input                                                      */

static void arp_rx(struct tcp_stack *st, const uint8_t *a, uint32_t len, uint64_t now)
{
	if (len < 28 || rd16(a) != 1 || rd16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4) {
		drop(st, TCP_DROP_ARP_BAD);
		return;
	}
	uint16_t op = rd16(a + 6);
	const uint8_t *sha = a + 8, *spa = a + 14, *tpa = a + 24;
	if (op != 1 && op != 2) {
		drop(st, TCP_DROP_ARP_BAD);
		return;
	}
	uint32_t sip;
	memcpy(&sip, spa, 4);
	if (sip == 0 || sip == 0xffffffffu || (sha[0] & 1)) {
		drop(st, TCP_DROP_ARP_BAD);
		return;
	}
	int for_us = st->has4 && !memcmp(tpa, &st->cfg.ip4, 4);
	/* RFC 826 packet reception: merge, then add if we are the target. */
	nb_learn(st, spa, 0, sha, for_us, now);
	if (!for_us) {
		drop(st, TCP_DROP_NOT_US);
		return;
	}
	if (op == 1) {
		st->stats.arp_replies++;
		send_arp(st, 2, sha, spa, sha);
	}
}

static void ip4_rx(struct tcp_stack *st, struct tcp_buf *b, const uint8_t *ip, uint32_t len,
                   uint64_t now)
{
	if (len < 20 || (ip[0] >> 4) != 4) {
		drop(st, TCP_DROP_IP_HDR);
		return;
	}
	uint32_t ihl = (uint32_t)(ip[0] & 0xf) * 4, tot = rd16(ip + 2);
	if (ihl < 20 || ihl > len || tot < ihl || tot > len) {
		drop(st, TCP_DROP_IP_HDR);
		return;
	}
	if (!(b->rx_flags & TCP_RX_L3_CSUM_OK) && tcp_csum_fold(tcp_csum_add(0, ip, ihl)) != 0) {
		drop(st, TCP_DROP_IP_CSUM);
		return;
	}
	if (!st->has4 || memcmp(ip + 16, &st->cfg.ip4, 4)) {
		drop(st, TCP_DROP_NOT_US);
		return;
	}
	if (rd16(ip + 6) & 0x3fff) {
		/* MF set or offset != 0: no reassembly (issue scope). */
		drop(st, TCP_DROP_IP_FRAG);
		return;
	}
	uint8_t s0 = ip[12];
	if (s0 >= 224 || s0 == 0 || s0 == 127) {
		drop(st, TCP_DROP_IP_HDR);   /* martian source */
		return;
	}
	if (ip[9] == 6) {
		struct seginfo si = { .buf = b, .v6 = 0, .src = ip + 12, .dst = ip + 16 };
		tcp_rx(st, &si, ip + ihl, tot - ihl, now);
		if (!si.buf)
			b->priv = b;         /* kept: tell tcp_input */
		return;
	}
	if (ip[9] == 1) {
		icmp4_rx(st, ip, ihl, tot, now);
		return;
	}
	drop(st, TCP_DROP_IP_PROTO);
}

static void ip6_rx(struct tcp_stack *st, struct tcp_buf *b, const uint8_t *eth_src,
                   const uint8_t *ip, uint32_t len, uint64_t now)
{
	if (len < 40 || (ip[0] >> 4) != 6) {
		drop(st, TCP_DROP_IP_HDR);
		return;
	}
	uint32_t plen = rd16(ip + 4);
	if (40 + plen > len) {
		drop(st, TCP_DROP_IP_HDR);
		return;
	}
	if (!st->has6) {
		drop(st, TCP_DROP_NOT_US);
		return;
	}
	const uint8_t *dst = ip + 24;
	uint8_t snm[16], snm_ll[16];
	ip6_solicited_node(st->cfg.ip6, snm);
	ip6_solicited_node(st->ip6_ll, snm_ll);
	static const uint8_t allnodes[16] = { 0xff, 2, [15] = 1 };
	int mcast = !memcmp(dst, snm, 16) || !memcmp(dst, snm_ll, 16) || !memcmp(dst, allnodes, 16);
	if (!is_our_ip6(st, dst) && !mcast) {
		drop(st, TCP_DROP_NOT_US);
		return;
	}
	if (ip[8] == 0xff) {
		drop(st, TCP_DROP_IP_HDR);   /* multicast source */
		return;
	}
	uint8_t nh = ip[6];
	const uint8_t *p = ip + 40;
	uint32_t rem = plen;
	/* Skip hop-by-hop, routing and destination options headers. */
	for (int i = 0; i < 4 && (nh == 0 || nh == 43 || nh == 60); i++) {
		if (rem < 8) {
			drop(st, TCP_DROP_IP_HDR);
			return;
		}
		uint32_t hl = ((uint32_t)p[1] + 1) * 8;
		if (hl > rem) {
			drop(st, TCP_DROP_IP_HDR);
			return;
		}
		nh = p[0];
		p += hl;
		rem -= hl;
	}
	if (nh == 44) {
		drop(st, TCP_DROP_IP_FRAG);
		return;
	}
	if (nh == 6 && !mcast) {
		struct seginfo si = { .buf = b, .v6 = 1, .src = ip + 8, .dst = dst };
		tcp_rx(st, &si, p, rem, now);
		if (!si.buf)
			b->priv = b;
		return;
	}
	if (nh == 58) {
		icmp6_rx(st, eth_src, ip, p, rem, now);
		return;
	}
	drop(st, TCP_DROP_IP_PROTO);
}

static void eth_rx(struct tcp_stack *st, struct tcp_buf *b, uint64_t now)
{
	const uint8_t *f = b->data;
	uint32_t len = b->len;
	if (!f || len < 14) {
		drop(st, TCP_DROP_TRUNCATED);
		return;
	}
	const uint8_t *dmac = f;
	int ok = !memcmp(dmac, st->cfg.mac, 6) || !memcmp(dmac, bcast_mac, 6) ||
	         (dmac[0] == 0x33 && dmac[1] == 0x33);
	if (!ok) {
		drop(st, TCP_DROP_NOT_US);
		return;
	}
	uint16_t type = rd16(f + 12);
	uint32_t off = 14;
	uint16_t vid = 0;
	if (type == ETH_P_8021Q) {
		if (len < 18) {
			drop(st, TCP_DROP_TRUNCATED);
			return;
		}
		vid = rd16(f + 14) & 0x0fff;
		type = rd16(f + 16);
		off = 18;
	}
	if (vid != st->cfg.vlan_id) {
		drop(st, TCP_DROP_VLAN);
		return;
	}
	switch (type) {
	case ETH_P_ARP:
		if (!st->has4) {
			drop(st, TCP_DROP_ETH_TYPE);
			return;
		}
		arp_rx(st, f + off, len - off, now);
		return;
	case ETH_P_IP:
		ip4_rx(st, b, f + off, len - off, now);
		return;
	case ETH_P_IPV6:
		ip6_rx(st, b, f + 6, f + off, len - off, now);
		return;
	default:
		drop(st, TCP_DROP_ETH_TYPE);
	}
}

/* ------------------------------------------------------------------ */
/* Public API                                                         */

/* See tcp.h. */
struct tcp_stack *tcp_create(const struct tcp_config *cfg)
{
	struct tcp_stack *st = NULL;
	int err = EINVAL;

	if (!cfg || !cfg->ops.tx_alloc || !cfg->ops.tx_send)
		goto fail;
	st = calloc(1, sizeof(*st));
	if (!st) {
		err = ENOMEM;
		goto fail;
	}
	st->cfg = *cfg;
	struct tcp_config *c = &st->cfg;
	static const uint8_t zero16[16];
	st->has4 = c->ip4 != 0;
	st->has6 = memcmp(c->ip6, zero16, 16) != 0;
	if ((!st->has4 && !st->has6) || (c->mac[0] & 1) || c->vlan_id > 4094)
		goto fail;
	if (!c->mtu) c->mtu = 1500;
	if (c->mtu < 1280 || c->mtu > 9000)
		goto fail;
	if (st->has6 && (c->ip6_prefixlen == 0 || c->ip6_prefixlen > 128))
		goto fail;
	if (!c->max_conns) c->max_conns = 1024;
	/* Half-open entries may take a quarter of the table at most by
	 * default: SYN cookies then engage while three quarters stay free for
	 * established sessions and TIME_WAIT (RFC 4987 §3.6). A fixed 256 let
	 * a SYN flood fill small tables before cookies started. */
	if (!c->syn_backlog) c->syn_backlog = c->max_conns / 4 ? c->max_conns / 4 : 1;
	if (!c->sndbuf) c->sndbuf = 64 * 1024;
	if (!c->rcvbuf) c->rcvbuf = 64 * 1024;
	if (c->rcvbuf > (1u << 30) || c->sndbuf > (1u << 30))
		goto fail;
	if (!c->tx_chunks) c->tx_chunks = c->max_conns * 4;
	if (!c->rx_segs) c->rx_segs = c->max_conns * 8;
	if (!c->ooo_max_segs) c->ooo_max_segs = 64;
	if (!c->neigh_size) c->neigh_size = 256;
	if (!c->neigh_pending) c->neigh_pending = 64;
	if (!c->rto_min_ms) c->rto_min_ms = 200;
	if (!c->rto_max_ms) c->rto_max_ms = 60000;
	if (!c->rto_init_ms) c->rto_init_ms = 1000;
	if (!c->delack_ms) c->delack_ms = 40;
	if (!c->msl_ms) c->msl_ms = 30000;
	if (!c->max_retries) c->max_retries = 12;
	if (!c->syn_retries) c->syn_retries = 5;
	if (!c->neigh_timeout_ms) c->neigh_timeout_ms = 60000;
	if (c->max_conns > (1u << 24) || c->rto_min_ms > c->rto_max_ms || c->syncookies > 2)
		goto fail;
	if (!memcmp(c->secret, zero16, 16) && getrandom(c->secret, 16, 0) != 16)
		goto fail;
	if (st->has6) {
		/* EUI-64 link-local address (RFC 4291 2.5.1) so NDP for
		 * fe80:: works against kernels that use it as next hop. */
		uint8_t *l = st->ip6_ll;
		l[0] = 0xfe; l[1] = 0x80;
		l[8] = c->mac[0] ^ 2; l[9] = c->mac[1]; l[10] = c->mac[2];
		l[11] = 0xff; l[12] = 0xfe;
		l[13] = c->mac[3]; l[14] = c->mac[4]; l[15] = c->mac[5];
	}

	err = ENOMEM;
	uint32_t hsize = 1;
	while (hsize < c->max_conns)
		hsize <<= 1;
	st->hmask = hsize - 1;
	st->conns = calloc(c->max_conns, sizeof(*st->conns));
	st->htab = calloc(hsize, sizeof(*st->htab));
	st->segs = calloc(c->rx_segs, sizeof(*st->segs));
	st->chunk_mem = malloc((size_t)c->tx_chunks * CHUNK_SIZE);
	st->chunk_next = malloc((size_t)c->tx_chunks * sizeof(uint32_t));
	uint32_t nbh = 1;
	while (nbh < c->neigh_size)
		nbh <<= 1;
	st->nb_hmask = nbh - 1;
	st->nb = calloc(c->neigh_size, sizeof(*st->nb));
	st->nb_htab = malloc((size_t)nbh * sizeof(uint32_t));
	st->pend_mem = malloc((size_t)c->neigh_pending * MAX_FRAME(st));
	st->pend_len = calloc(c->neigh_pending, sizeof(uint32_t));
	st->pend_next = malloc((size_t)c->neigh_pending * sizeof(uint32_t));
	if (!st->conns || !st->htab || !st->segs || !st->chunk_mem || !st->chunk_next ||
	    !st->nb || !st->nb_htab || !st->pend_mem || !st->pend_len || !st->pend_next)
		goto fail;
	for (uint32_t i = c->max_conns; i-- > 0;) {
		st->conns[i].hnext = st->free_conns;
		st->free_conns = &st->conns[i];
	}
	for (uint32_t i = c->rx_segs; i-- > 0;) {
		st->segs[i].next = st->free_segs;
		st->free_segs = &st->segs[i];
	}
	st->nsegs_free = c->rx_segs;
	for (uint32_t i = 0; i < c->tx_chunks; i++)
		st->chunk_next[i] = i + 1 < c->tx_chunks ? i + 1 : NIL;
	st->chunk_free = c->tx_chunks ? 0 : NIL;
	st->nchunks_free = c->tx_chunks;
	for (uint32_t i = 0; i < nbh; i++)
		st->nb_htab[i] = NIL;
	for (uint32_t i = 0; i < c->neigh_pending; i++)
		st->pend_next[i] = i + 1 < c->neigh_pending ? i + 1 : NIL;
	st->pend_free = c->neigh_pending ? 0 : NIL;
	st->eph_next = (uint32_t)tcp_siphash(c->secret, "eph", 3) % 28232;
	st->memsize = sizeof(*st) + (size_t)c->max_conns * sizeof(*st->conns) +
	              (size_t)hsize * sizeof(*st->htab) + (size_t)c->rx_segs * sizeof(*st->segs) +
	              (size_t)c->tx_chunks * (CHUNK_SIZE + 4) +
	              (size_t)c->neigh_size * sizeof(*st->nb) + (size_t)nbh * 4 +
	              (size_t)c->neigh_pending * (MAX_FRAME(st) + 8);
	return st;
fail:
	tcp_destroy(st);
	errno = err;
	return NULL;
}

/* See tcp.h. */
void tcp_destroy(struct tcp_stack *st)
{
	if (!st)
		return;
	if (st->conns) {
		for (uint32_t i = 0; i < st->cfg.max_conns; i++) {
			struct tcp_conn *c = &st->conns[i];
			if (!(c->flags & CF_IN_USE))
				continue;
			struct seg *s, *n;
			for (s = c->rq_head; s; s = n) { n = s->next; buf_release(s->buf); }
			for (s = c->ooo; s; s = n) { n = s->next; buf_release(s->buf); }
		}
	}
	free(st->conns);
	free(st->htab);
	free(st->segs);
	free(st->chunk_mem);
	free(st->chunk_next);
	free(st->nb);
	free(st->nb_htab);
	free(st->pend_mem);
	free(st->pend_len);
	free(st->pend_next);
	free(st);
}

/* See tcp.h. */
void tcp_input(struct tcp_stack *st, struct tcp_buf *buf, uint64_t now)
{
	if (!buf)
		return;
	st->now = now;
	st->stats.rx_frames++;
	buf->priv = NULL;
	eth_rx(st, buf, now);
	if (!buf->priv)
		buf_release(buf);
}

/* See tcp.h. */
unsigned tcp_input_burst(struct tcp_stack *st, struct tcp_buf **bufs, unsigned n, uint64_t now)
{
	for (unsigned i = 0; i < n; i++)
		tcp_input(st, bufs[i], now);
	return n;
}

/* See tcp.h. */
int tcp_service(struct tcp_stack *st, uint64_t now)
{
	st->now = now;
	wheel_advance(st, now);
	if (now >= st->next_housekeep) {
		st->next_housekeep = now + 100 * NS_PER_MS;
		nb_housekeep(st, now);
	}
	while (st->out_head) {
		struct tcp_conn *c = st->out_head;
		st->out_head = c->out_next;
		c->out_next = NULL;
		c->flags &= ~CF_ON_OUTQ;
		tcp_output(c, now);
	}
	return 0;
}

/* See tcp.h. */
unsigned tcp_events(struct tcp_stack *st, struct tcp_event *ev, unsigned max)
{
	unsigned n = 0;
	while (n < max && st->ev_head) {
		struct tcp_conn *c = st->ev_head;
		evq_unlink(st, c);
		ev[n].conn = c;
		ev[n].events = c->ev_mask;
		ev[n].error = c->error;
		c->ev_mask = 0;
		n++;
	}
	return n;
}

/* See tcp.h. */
int tcp_listen(struct tcp_stack *st, uint16_t port)
{
	if (!port)
		return -EINVAL;
	if (is_listening(st, port))
		return -EEXIST;
	if (st->nlisten >= MAX_LISTEN)
		return -ENOSPC;
	st->listen[st->nlisten++] = port;
	return 0;
}

/* See tcp.h. */
int tcp_unlisten(struct tcp_stack *st, uint16_t port)
{
	for (uint32_t i = 0; i < st->nlisten; i++)
		if (st->listen[i] == port) {
			st->listen[i] = st->listen[--st->nlisten];
			return 0;
		}
	return -ENOENT;
}

/* See tcp.h. */
struct tcp_conn *tcp_connect(struct tcp_stack *st, const struct tcp_addr *dst,
                             uint16_t dport, uint16_t lport, uint64_t now)
{
	if (!dst || !dport || (dst->family != 4 && dst->family != 6)) {
		errno = EINVAL;
		return NULL;
	}
	int v6 = dst->family == 6;
	if ((v6 && !st->has6) || (!v6 && !st->has4)) {
		errno = EAFNOSUPPORT;
		return NULL;
	}
	const uint8_t *la = v6 ? st->cfg.ip6 : (const uint8_t *)&st->cfg.ip4;
	if (!route(st, v6, dst->a)) {
		errno = ENETUNREACH;
		return NULL;
	}
	if (lport) {
		if (conn_lookup(st, v6, la, lport, dst->a, dport)) {
			errno = EADDRINUSE;
			return NULL;
		}
	} else {
		for (uint32_t i = 0; i < 28232; i++) {
			uint16_t p = (uint16_t)(32768 + (st->eph_next++ % 28232));
			if (!is_listening(st, p) && !conn_lookup(st, v6, la, p, dst->a, dport)) {
				lport = p;
				break;
			}
		}
		if (!lport) {
			errno = EADDRINUSE;
			return NULL;
		}
	}
	struct tcp_conn *c = conn_alloc(st);
	if (!c) {
		errno = ENOBUFS;
		return NULL;
	}
	st->now = now;
	size_t al = v6 ? 16 : 4;
	memcpy(c->laddr, la, al);
	memcpy(c->raddr, dst->a, al);
	c->lport = lport;
	c->rport = dport;
	if (v6)
		c->flags |= CF_V6;
	conn_init_common(st, c);
	c->flags |= CF_APP_OWNED;
	c->state = TCP_SYN_SENT;
	c->iss = make_isn(st, v6, la, lport, dst->a, dport, now);
	c->snd_una = c->iss;
	c->snd_nxt = c->snd_max = c->iss + 1;
	c->sq_seq = c->iss + 1;
	c->recover = c->iss;
	c->rtt_t0 = now;
	conn_hash_insert(st, c);
	c->flags |= CF_ACK_NOW;
	tcp_output(c, now);
	arm_rto(c, now);
	return c;
}

/* See tcp.h. */
size_t tcp_send_space(const struct tcp_conn *c)
{
	const struct tcp_stack *st = c->st;
	if (c->sq_len >= st->cfg.sndbuf)
		return 0;
	size_t room = st->cfg.sndbuf - c->sq_len;
	uint32_t total = c->sq_off + c->sq_len;
	size_t avail = (size_t)st->nchunks_free * CHUNK_SIZE;
	if (c->sq_head != NIL && total % CHUNK_SIZE)
		avail += CHUNK_SIZE - total % CHUNK_SIZE;
	return room < avail ? room : avail;
}

/* See tcp.h. */
long tcp_send(struct tcp_conn *c, const void *data, size_t len)
{
	struct tcp_stack *st = c->st;
	const uint8_t *p = data;
	if ((c->flags & (CF_FIN_QUEUED | CF_DEAD | CF_APP_CLOSED)) || c->state == TCP_CLOSED)
		return -EPIPE;
	if (c->state != TCP_ESTABLISHED && c->state != TCP_CLOSE_WAIT)
		return -ENOTCONN;
	size_t space = tcp_send_space(c);
	if (len > space)
		len = space;
	size_t done = 0;
	while (done < len) {
		uint32_t total = c->sq_off + c->sq_len;
		uint32_t fill = total % CHUNK_SIZE;
		if (c->sq_head == NIL || (fill == 0 && total > 0)) {
			uint32_t ci = chunk_alloc(st);
			if (ci == NIL)
				break;
			if (c->sq_head == NIL) {
				c->sq_head = c->sq_tail = ci;
				c->sq_off = 0;
			} else {
				st->chunk_next[c->sq_tail] = ci;
				c->sq_tail = ci;
			}
			fill = 0;
		}
		uint32_t n = CHUNK_SIZE - fill;
		if (n > len - done)
			n = (uint32_t)(len - done);
		memcpy(chunk_ptr(st, c->sq_tail) + fill, p + done, n);
		c->sq_len += n;
		done += n;
	}
	if (done < len || tcp_send_space(c) == 0)
		c->flags |= CF_WANT_WRITABLE;
	if (done)
		outq_push(c);
	return (long)done;
}

/* See tcp.h. */
unsigned tcp_recv_peek(struct tcp_conn *c, struct tcp_iov *iov, unsigned max)
{
	unsigned n = 0;
	uint32_t off = c->rq_off;
	for (struct seg *s = c->rq_head; s && n < max; s = s->next) {
		iov[n].base = s->data + off;
		iov[n].len = s->len - off;
		off = 0;
		n++;
	}
	return n;
}

/* See tcp.h. */
size_t tcp_recv_avail(const struct tcp_conn *c)
{
	return c->rq_bytes;
}

/* See tcp.h. */
int tcp_recv_consume(struct tcp_conn *c, size_t n)
{
	struct tcp_stack *st = c->st;
	if (n > c->rq_bytes)
		return -EINVAL;
	uint32_t before = rcv_space(c);
	c->rq_bytes -= (uint32_t)n;
	while (n) {
		struct seg *s = c->rq_head;
		uint32_t left = s->len - c->rq_off;
		if (n < left) {
			c->rq_off += (uint32_t)n;
			break;
		}
		n -= left;
		c->rq_head = s->next;
		if (!c->rq_head)
			c->rq_tail = NULL;
		c->rq_off = 0;
		c->rq_segs--;
		seg_free(st, s);
	}
	/* Window update only when the usable window at least doubles and
	 * grows by a segment (or half the buffer): RFC 9293 3.8.6.2.2 SWS
	 * avoidance, and the same rule Linux uses to avoid chatty updates. */
	uint32_t adv = SEQ_GT(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t after = rcv_space(c);
	uint32_t step = c->mss < st->cfg.rcvbuf / 2 ? c->mss : st->cfg.rcvbuf / 2;
	if (c->state >= TCP_ESTABLISHED && after > before && after >= 2 * adv &&
	    after - adv >= step) {
		c->flags |= CF_WIN_UPDATE;
		outq_push(c);
	}
	return 0;
}

/* See tcp.h. */
size_t tcp_recv(struct tcp_conn *c, void *dst, size_t len)
{
	uint8_t *d = dst;
	size_t done = 0;
	struct tcp_iov iov[16];
	while (done < len && c->rq_bytes) {
		unsigned k = tcp_recv_peek(c, iov, 16);
		size_t got = 0;
		for (unsigned i = 0; i < k && done + got < len; i++) {
			size_t n = iov[i].len;
			if (n > len - done - got)
				n = len - done - got;
			memcpy(d + done + got, iov[i].base, n);
			got += n;
		}
		tcp_recv_consume(c, got);
		done += got;
	}
	return done;
}

/* See tcp.h. */
int tcp_recv_eof(const struct tcp_conn *c)
{
	return (c->flags & CF_PEER_FIN) && c->rq_bytes == 0;
}

/* See tcp.h. */
int tcp_shutdown(struct tcp_conn *c)
{
	if (c->flags & CF_FIN_QUEUED)
		return 0;
	if (c->state == TCP_ESTABLISHED)
		c->state = TCP_FIN_WAIT_1;
	else if (c->state == TCP_CLOSE_WAIT)
		c->state = TCP_LAST_ACK;
	else
		return -ENOTCONN;
	c->flags |= CF_FIN_QUEUED;
	outq_push(c);
	return 0;
}

static void send_rst_conn(struct tcp_conn *c)
{
	struct tcp_stack *st = c->st;
	if (c->state < TCP_SYN_RCVD || c->state == TCP_TIME_WAIT)
		return;
	send_rst_reply(st, !!(c->flags & CF_V6), c->laddr, c->raddr, c->lport, c->rport,
	               c->snd_nxt, c->rcv_nxt, TH_RST | TH_ACK, st->now);
}

/* See tcp.h. */
void tcp_abort(struct tcp_conn *c)
{
	struct tcp_stack *st = c->st;
	send_rst_conn(c);
	conn_free(st, c);
}

/* See tcp.h. */
void tcp_close(struct tcp_conn *c)
{
	struct tcp_stack *st = c->st;
	evq_unlink(st, c);
	c->ev_mask = 0;
	c->flags |= CF_APP_CLOSED;
	if ((c->flags & CF_DEAD) || c->state == TCP_CLOSED || c->state == TCP_SYN_SENT) {
		conn_free(st, c);
		return;
	}
	if (c->rq_bytes || c->ooo) {
		/* Unread data: abortive close (RFC 9293 3.10.4, RFC 2525
		 * 2.17), so the peer knows it was not consumed. */
		st->stats.conns_reset++;
		tcp_abort(c);
		return;
	}
	switch (c->state) {
	case TCP_SYN_RCVD:
		/* only reachable through a simultaneous open */
		tcp_abort(c);
		return;
	case TCP_ESTABLISHED:
	case TCP_CLOSE_WAIT:
		tcp_shutdown(c);
		break;
	default:
		break;
	}
	if (c->state != TCP_TIME_WAIT) {
		/* An orphan must not live forever (a peer that keeps its
		 * window at zero would hold it): 2*MSL to finish the close,
		 * then it is reset (like Linux's orphan/FIN_WAIT_2 limits). */
		c->t_keep = st->now + 2ULL * st->cfg.msl_ms * NS_PER_MS;
		conn_timer_update(c);
	}
}

/* See tcp.h. */
void tcp_set_udata(struct tcp_conn *c, void *udata) { c->udata = udata; }

/* See tcp.h. */
void *tcp_get_udata(const struct tcp_conn *c) { return c->udata; }

/* See tcp.h. */
void tcp_conn_get_info(const struct tcp_conn *c, struct tcp_conn_info *in)
{
	memset(in, 0, sizeof(*in));
	int v6 = !!(c->flags & CF_V6);
	in->local.family = in->remote.family = v6 ? 6 : 4;
	memcpy(in->local.a, c->laddr, 16);
	memcpy(in->remote.a, c->raddr, 16);
	in->lport = c->lport;
	in->rport = c->rport;
	in->state = (enum tcp_state)c->state;
	in->mss = c->mss;
	in->snd_wscale = (c->flags & CF_WS) ? c->snd_ws : 0;
	in->rcv_wscale = (c->flags & CF_WS) ? c->rcv_ws : 0;
	in->sack_ok = !!(c->flags & CF_SACK);
	in->ts_ok = !!(c->flags & CF_TS);
	in->srtt_us = c->srtt;
	in->rto_us = c->rto;
	in->cwnd = c->cwnd;
	in->ssthresh = c->ssthresh;
	in->snd_queued = c->sq_len;
	in->rcv_queued = c->rq_bytes;
	in->retransmits = c->retransmits;
}

/* See tcp.h. */
int tcp_neigh_add(struct tcp_stack *st, const struct tcp_addr *addr, const uint8_t mac[6])
{
	if (!addr || (addr->family != 4 && addr->family != 6) || (mac[0] & 1))
		return -EINVAL;
	int v6 = addr->family == 6;
	struct neigh *n = nb_find(st, addr->a, v6);
	if (!n)
		n = nb_create(st, addr->a, v6, 1);
	if (!n)
		return -ENOSPC;
	n->state = NB_STATIC;
	nb_resolved(st, n, mac, st->now);
	return 0;
}

/* See tcp.h. */
int tcp_neigh_resolve(struct tcp_stack *st, const struct tcp_addr *addr, uint64_t now)
{
	if (!addr || (addr->family != 4 && addr->family != 6))
		return -EINVAL;
	int v6 = addr->family == 6;
	if ((v6 && !st->has6) || (!v6 && !st->has4))
		return -EAFNOSUPPORT;
	const uint8_t *nh = route(st, v6, addr->a);
	if (!nh)
		return -ENETUNREACH;
	struct neigh *n = nb_find(st, nh, v6);
	if (n && n->state != NB_INCOMPLETE)
		return 0;
	if (!n) {
		n = nb_create(st, nh, v6, 0);
		if (!n)
			return -ENOSPC;
		n->state = NB_INCOMPLETE;
		st->now = now;
		nb_probe(st, n, now);
	}
	return -EAGAIN;
}

/* See tcp.h. */
void tcp_stats_get(const struct tcp_stack *st, struct tcp_stats *out)
{
	*out = st->stats;
}

/* See tcp.h. */
const char *tcp_drop_reason_name(unsigned reason)
{
	return reason < TCP_DROP__COUNT ? drop_names[reason] : "?";
}

/* See tcp.h. */
const char *tcp_state_name(enum tcp_state s)
{
	static const char *const n[] = {
		"CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1",
		"FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT",
	};
	return (unsigned)s < sizeof(n) / sizeof(n[0]) ? n[s] : "?";
}

/* See tcp.h. */
size_t tcp_conn_state_size(void)
{
	return sizeof(struct tcp_conn);
}

/* See tcp.h. */
size_t tcp_stack_mem_size(const struct tcp_stack *st)
{
	return st->memsize;
}
