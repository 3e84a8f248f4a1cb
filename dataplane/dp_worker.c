/*
 * dp_worker.c - one worker lcore: DPDK queue pair -> userspace TCP stack ->
 * SMTP engine -> spool writer, run to completion.
 *
 * Everything is preallocated in dp_worker_create(); the loop makes no
 * syscalls (the clocks come from the TSC), takes no locks and allocates
 * nothing. A session's 250 after DATA goes out only once the spool's sync
 * thread reports the message's END record durable (DESIGN.md durability
 * rule, RFC 5321 §4.1.1.4: the server accepts responsibility with the 250).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/prctl.h>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_random.h>
#include <rte_ring.h>

#include "dp.h"
#include "elog.h"
#include "etx.h"
#include "smtp.h"
#include "spool.h"
#include "tcp.h"

#define RX_BURST 32
#define TX_BURST 64
#define EV_BURST 64
/* Envelope text (MAIL FROM, parameters, RCPTs) a session may hold until
 * DATA; past it RCPT gets 452 (RFC 5321 §4.5.3.1.10 allows that). */
#define ENV_BYTES 8192
/* Input handed to the engine per call and the send-buffer room we want
 * before feeding: a short pipelined command can earn a reply several times
 * its size, and the engine's write op must take every reply byte. */
#define FEED_MAX 4096
#define SEND_RESERVE (24u * 1024)
/* Ring room kept free before feeding a chunk: the chunk itself plus the
 * BEGIN record of the largest envelope and record headers. */
#define SPOOL_RESERVE (FEED_MAX + ENV_BYTES + 4096)
/* Graceful stop: sessions in a transaction get this long to finish. */
#define STOP_GRACE_MS 5000
#define STOP_LINGER_MS 300
/* How often the worker publishes its TCP stack's counters. */
#define SNAPSHOT_NS (100ull * 1000000ull)
/* How long an lcore keeps polling an idle queue before it naps. */
#define IDLE_SPIN_NS (20ull * 1000ull)
/* Naps double while the queue stays idle, up to this (ns). */
#define IDLE_NAP_MAX_NS 1000000L

_Static_assert(TCP_DROP__COUNT <= DP_TCP_DROP_SLOTS,
	       "dp_lcore_stats.tcp_drops is too small for enum tcp_drop");

struct dp_sess {
	struct dp_worker *w;
	struct tcp_conn *conn;
	struct dp_sess *prev, *next;      /* active list / free list (next) */
	struct dp_sess *pprev, *pnext;    /* poll list */
	bool on_poll;
	bool overflow;                    /* a reply did not fit: abort */
	uint64_t start_ms;                /* accepted at (session_max_s) */
	bool counted;                     /* holds a per-client slot: ckey */
	uint8_t ckey[ETX_CLIENT_KEY];
	struct etx_tx t;                  /* transaction, log state (etx.h) */
	char env[ENV_BYTES];              /* t's envelope text */
	_Alignas(16) uint8_t smtp[SMTP_SESSION_MAX];
};

struct dp_worker {
	struct dp_worker_params p;
	struct etx_ctx x;                 /* shared transaction code (etx.h) */
	struct etx_clients *clients;      /* sessions per client */
	unsigned per_client;              /* 0: no per-client limit */
	uint64_t session_max_ms;          /* 0: no lifetime cap */
	struct smtp_limits lim;           /* the engine limits last applied */
	struct tcp_stack *tcp;
	struct smtp_server *smtp;
	struct dp_sess *sess;             /* the preallocated pool */
	struct dp_sess *free_list;
	struct dp_sess *active;
	struct dp_sess *poll;
	uint64_t tsc_hz;
	uint64_t wall_base_ns;            /* wall clock at tsc_base */
	uint64_t tsc_base;
	uint64_t now_ns;                  /* this loop iteration's clock */
	unsigned ntx;
	struct rte_mbuf *txq[TX_BURST];
	char busy_reply[96];
	char expired_reply[96];
	/* Frames for other workers, collected per burst and handed over in
	 * one ring operation per owner. */
	unsigned nout[DP_MAX_WORKERS];
	struct rte_mbuf *out[DP_MAX_WORKERS][RX_BURST];
};

size_t dp_worker_mbuf_priv(void)
{
	return RTE_ALIGN(sizeof(struct tcp_buf), RTE_MBUF_PRIV_ALIGN);
}

/* ------------------------------------------------------------------ */
/* clocks: TSC based, no syscalls in the loop                          */

static uint64_t tsc_ns(const struct dp_worker *w)
{
	uint64_t c = rte_get_tsc_cycles() - w->tsc_base;

	return c / w->tsc_hz * 1000000000ull +
	       c % w->tsc_hz * 1000000000ull / w->tsc_hz;
}

static uint64_t now_ms(const struct dp_worker *w)
{
	return w->now_ns / 1000000u;
}

static uint64_t wall_us(const struct dp_worker *w)
{
	return (w->wall_base_ns + w->now_ns) / 1000u;
}

static int64_t smtp_unix_time(void *ctx)
{
	const struct dp_sess *s = ctx;

	return (int64_t)(wall_us(s->w) / 1000000u);
}

/* ------------------------------------------------------------------ */
/* frames                                                              */

static void rx_release(struct tcp_buf *b)
{
	rte_pktmbuf_free(b->opaque);
}

static void tx_flush(struct dp_worker *w)
{
	uint16_t sent;

	if (w->ntx == 0)
		return;
	if (w->p.has_queue)
		sent = rte_eth_tx_burst(w->p.port, w->p.queue, w->txq, (uint16_t)w->ntx);
	else /* no queue of our own: the queue's owner sends it */
		sent = (uint16_t)rte_ring_mp_enqueue_burst(w->p.tx_ring,
			(void *const *)w->txq, w->ntx, NULL);
	w->p.stats->tx_packets += sent;
	if (sent < w->ntx) {
		/* The ring is full: drop, TCP retransmits. */
		w->p.stats->tx_dropped += w->ntx - sent;
		rte_pktmbuf_free_bulk(&w->txq[sent], w->ntx - sent);
	}
	w->ntx = 0;
}

static uint8_t *tx_alloc(void *ctx, uint32_t len, void **handle)
{
	struct dp_worker *w = ctx;
	struct rte_mbuf *m;

	if (len > RTE_MBUF_DEFAULT_DATAROOM)
		return NULL;
	m = rte_pktmbuf_alloc(w->p.pool);
	if (m == NULL) {
		w->p.stats->tx_dropped++;
		return NULL;
	}
	*handle = m;
	return rte_pktmbuf_mtod(m, uint8_t *);
}

static void tx_send(void *ctx, void *handle, uint32_t len,
		    const struct tcp_txmeta *meta)
{
	struct dp_worker *w = ctx;
	struct rte_mbuf *m = handle;

	(void)meta; /* checksums are computed by the stack */
	m->data_len = (uint16_t)len;
	m->pkt_len = len;
	w->txq[w->ntx++] = m;
	if (w->ntx == TX_BURST)
		tx_flush(w);
}

/* ------------------------------------------------------------------ */
/* sessions: lists                                                     */

static struct smtp_session *sess_smtp(struct dp_sess *s)
{
	return (struct smtp_session *)(void *)s->smtp;
}

static void poll_add(struct dp_sess *s)
{
	struct dp_worker *w = s->w;

	if (s->on_poll)
		return;
	s->on_poll = true;
	s->pprev = NULL;
	s->pnext = w->poll;
	if (w->poll)
		w->poll->pprev = s;
	w->poll = s;
}

static void poll_del(struct dp_sess *s)
{
	struct dp_worker *w = s->w;

	if (!s->on_poll)
		return;
	if (s->pprev)
		s->pprev->pnext = s->pnext;
	else
		w->poll = s->pnext;
	if (s->pnext)
		s->pnext->pprev = s->pprev;
	s->on_poll = false;
	s->pprev = s->pnext = NULL;
}

/* Ends the session and releases the connection: graceful close (queued
 * replies and a FIN go out) unless a reply overflowed. Unread input is
 * discarded first so tcp_close does not turn into a reset that could eat
 * the last reply (RFC 9293 §3.10.4: unread data makes close abortive). */
static void sess_close(struct dp_sess *s)
{
	struct dp_worker *w = s->w;
	struct tcp_conn *c = s->conn;

	poll_del(s);
	if (s->counted) {
		etx_clients_put(w->clients, s->ckey);
		s->counted = false;
	}
	etx_session_end(&w->x, &s->t, wall_us(w));
	smtp_session_fini(sess_smtp(s)); /* raises ABORT for an open tx */
	if (s->prev)
		s->prev->next = s->next;
	else
		w->active = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->conn = NULL;
	s->next = w->free_list;
	s->prev = NULL;
	w->free_list = s;
	if (c == NULL)
		return;
	tcp_set_udata(c, NULL);
	if (s->overflow) {
		tcp_abort(c);
		return;
	}
	tcp_recv_consume(c, tcp_recv_avail(c));
	tcp_close(c);
}

/* ------------------------------------------------------------------ */
/* SMTP engine upcalls                                                 */

static void smtp_write(void *ctx, const void *buf, size_t len)
{
	struct dp_sess *s = ctx;
	long n;

	if (s->conn == NULL || s->overflow)
		return;
	etx_reply(&s->t, buf, len);
	n = tcp_send(s->conn, buf, len);
	/* The engine needs every byte taken; we keep SEND_RESERVE free before
	 * feeding input, so only a client that pipelines far beyond what it
	 * reads gets here: drop it (smtp.h contract). */
	if (n < 0 || (size_t)n < len)
		s->overflow = true;
}

/* The engine's events go to the shared transaction code; the session
 * only keeps the poll list in step with what it waits for. */
static int smtp_event(void *ctx, struct smtp_session *ss, struct smtp_event *ev)
{
	struct dp_sess *s = ctx;
	int rc = etx_event(&s->w->x, &s->t, ss, ev, wall_us(s->w));

	if (rc == SMTP_PENDING)
		poll_add(s);
	else if (ev->type == SMTP_EV_ABORT)
		poll_del(s);
	return rc;
}

/* ------------------------------------------------------------------ */
/* driving a session                                                   */

static bool spool_has_room(const struct dp_worker *w)
{
	struct spool_writer_stats st;

	/* Conservative: bytes not yet durable still occupy the ring. */
	spool_writer_stats(w->p.spool, &st);
	return w->p.spool_ring_bytes - (st.appended - st.durable) >= SPOOL_RESERVE;
}

/* Feeds held input to the engine while it wants some and there is room for
 * its replies and for the spool records; otherwise parks the session on
 * the poll list. Closes it when the engine or the peer is done. */
static void sess_drive(struct dp_sess *s)
{
	struct dp_worker *w = s->w;
	struct smtp_session *ss = sess_smtp(s);
	struct tcp_iov iov[1];
	size_t len, used;

	while (!s->overflow && smtp_wants(ss) == SMTP_WANT_INPUT) {
		if (tcp_recv_avail(s->conn) == 0)
			break;
		if (tcp_send_space(s->conn) < SEND_RESERVE || !spool_has_room(w)) {
			poll_add(s); /* backpressure: the peer's window closes */
			return;
		}
		if (tcp_recv_peek(s->conn, iov, 1) == 0)
			break;
		len = iov[0].len < FEED_MAX ? iov[0].len : FEED_MAX;
		used = smtp_input(ss, iov[0].base, len, now_ms(w));
		if (used)
			tcp_recv_consume(s->conn, used);
		else if (smtp_wants(ss) == SMTP_WANT_INPUT) {
			poll_add(s); /* engine's line buffers are all lent */
			return;
		}
	}
	/* STARTTLS is not offered by this dataplane yet; WANT_TLS cannot
	 * happen, and a client that vanished mid-answer is dropped too. */
	if (s->overflow || smtp_wants(ss) == SMTP_WANT_CLOSE ||
	    smtp_wants(ss) == SMTP_WANT_TLS ||
	    (smtp_wants(ss) == SMTP_WANT_INPUT && tcp_recv_avail(s->conn) == 0 &&
	     tcp_recv_eof(s->conn)))
		sess_close(s);
}

/* Starts a session on a new connection; returns it, or NULL when the
 * connection was refused or already closed (the handle is gone then). */
static struct dp_sess *sess_accept(struct dp_worker *w, struct tcp_conn *c)
{
	struct dp_sess *s = w->free_list;
	struct tcp_conn_info ci;
	uint8_t key[ETX_CLIENT_KEY];
	bool counted = false;

	if (s == NULL || *w->p.stop) {
		/* RFC 5321 §3.8: 421 when the service is not available. */
		w->p.stats->sessions_busy++;
		(void)tcp_send(c, w->busy_reply, strlen(w->busy_reply));
		goto refuse;
	}
	tcp_conn_get_info(c, &ci);
	if (w->per_client) {
		etx_client_key(ci.remote.family, ci.remote.a, key);
		if (etx_clients_take(w->clients, key, w->per_client) < 0) {
			/* One address must not hold the whole pool; Postfix's
			 * anvil answers the same (smtpd_client_connection_
			 * count_limit), RFC 3463 X.7.0 security/policy. */
			char r[160], client[48];

			inet_ntop(ci.remote.family == 4 ? AF_INET : AF_INET6,
				  ci.remote.a, client, sizeof(client));

			w->p.stats->sessions_client_limit++;
			snprintf(r, sizeof(r), "421 4.7.0 %.60s Error: too many "
				 "connections from %s\r\n", w->p.cfg->hostname, client);
			(void)tcp_send(c, r, strlen(r));
			goto refuse;
		}
		counted = true;
	}
	w->free_list = s->next;
	memset(s, 0, offsetof(struct dp_sess, env));
	s->w = w;
	s->conn = c;
	s->next = w->active;
	if (w->active)
		w->active->prev = s;
	w->active = s;
	tcp_set_udata(c, s);
	if (counted) {
		memcpy(s->ckey, key, sizeof(key));
		s->counted = true;
	}
	s->start_ms = now_ms(w);
	etx_session_start(&w->x, &s->t, ci.remote.family, ci.remote.a, s->env,
			  sizeof(s->env), wall_us(w));
	w->p.stats->sessions++;
	smtp_session_init(s->smtp, w->smtp, s, s->t.peer, now_ms(w));
	smtp_start(sess_smtp(s), now_ms(w));
	sess_drive(s);
	return s->conn == c ? s : NULL;
refuse:
	tcp_recv_consume(c, tcp_recv_avail(c));
	tcp_close(c);
	return NULL;
}

/* Returns the number of events handled. */
static unsigned handle_events(struct dp_worker *w)
{
	struct tcp_event ev[EV_BURST];
	unsigned n, i, total = 0;

	while ((n = tcp_events(w->tcp, ev, EV_BURST)) > 0) {
		total += n;
		for (i = 0; i < n; i++) {
			struct dp_sess *s;
			bool fresh = false;

			if (ev[i].events & TCP_EV_ACCEPT) {
				s = sess_accept(w, ev[i].conn);
				fresh = true; /* sess_drive read what is there */
			} else {
				s = tcp_get_udata(ev[i].conn);
			}
			if (s == NULL)
				continue;
			if (ev[i].events & TCP_EV_CLOSED)
				sess_close(s);
			else if (!fresh)
				sess_drive(s);
		}
	}
	return total;
}

/* Answers what the spool decided and retries parked sessions; returns how
 * many sessions got their answer. */
static unsigned poll_pass(struct dp_worker *w)
{
	struct dp_sess *s = w->poll, *next;
	struct etx_answer ans;
	unsigned done = 0;

	for (; s; s = next) {
		struct smtp_session *ss = sess_smtp(s);
		enum etx_pend was = s->t.pend;

		next = s->pnext;
		if (etx_poll(&w->x, &s->t, ss, wall_us(w), &ans) == ETX_POLL_WAIT)
			continue;
		poll_del(s);
		if (was != ETX_PEND_NONE)
			smtp_complete(ss, ans.verdict, ans.reply, now_ms(w));
		done++;
		if (s->conn)
			sess_drive(s);
	}
	return done;
}

/* Inactivity timeouts (the engine's), then the total lifetime cap: a
 * client dripping one byte just inside data_s would otherwise keep its
 * session forever. A session whose message is waiting on the spool is
 * left to get its answer; any other open transaction is aborted, so
 * nothing of it is kept (RFC 5321 §3.8: 421, then close). */
static void timeouts(struct dp_worker *w)
{
	struct dp_sess *s, *next;
	uint64_t now = now_ms(w);

	for (s = w->active; s; s = next) {
		next = s->next;
		if (smtp_timeout(sess_smtp(s), now)) {
			s->t.timed_out = true;
			sess_drive(s);
			continue;
		}
		if (w->session_max_ms == 0 || now - s->start_ms < w->session_max_ms ||
		    s->t.pend != ETX_PEND_NONE)
			continue;
		w->p.stats->sessions_expired++;
		s->t.timed_out = true;
		if (smtp_wants(sess_smtp(s)) == SMTP_WANT_INPUT ||
		    smtp_wants(sess_smtp(s)) == SMTP_WANT_ANSWER)
			(void)tcp_send(s->conn, w->expired_reply, strlen(w->expired_reply));
		sess_close(s);
	}
}

/* Graceful stop: sessions outside a transaction (or all, after the grace
 * time) get 421 (RFC 5321 §3.8) and are closed. Returns the sessions left. */
static unsigned stop_pass(struct dp_worker *w, bool force)
{
	static const char bye[] = "421 4.3.2 Service shutting down\r\n";
	struct dp_sess *s, *next;
	unsigned left = 0;

	for (s = w->active; s; s = next) {
		next = s->next;
		if (!force && etx_busy(&s->t)) {
			left++;
			continue;
		}
		if (smtp_wants(sess_smtp(s)) == SMTP_WANT_INPUT ||
		    smtp_wants(sess_smtp(s)) == SMTP_WANT_ANSWER)
			(void)tcp_send(s->conn, bye, sizeof(bye) - 1);
		etx_reply(&s->t, bye, sizeof(bye) - 1);
		sess_close(s);
	}
	return left;
}

/* Wraps a frame this worker owns into the tcp_buf in its private area.
 * Returns false (frame freed) for a chained frame: our MTU fits one mbuf. */
static bool rx_wrap(struct dp_worker *w, struct rte_mbuf *m, struct tcp_buf **bufs,
		    unsigned *k)
{
	struct tcp_buf *b = rte_mbuf_to_priv(m);

	if (m->nb_segs != 1) {
		w->p.stats->rx_dropped++;
		rte_pktmbuf_free(m);
		return false;
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
	bufs[(*k)++] = b;
	return true;
}

static void hand_off(struct dp_worker *w, unsigned dst, struct rte_mbuf *m)
{
	w->out[dst][w->nout[dst]++] = m;
}

/* A private copy of a neighbour frame for every other worker: each stack
 * keeps its own ARP/NDP table, and the worker that sends a connection's
 * segments must know the peer's MAC (dataplane/README.md explains why
 * the tables are not shared). */
static void copy_to_others(struct dp_worker *w, struct rte_mbuf *m, bool as_reply)
{
	/* @as_reply: an ARP request; worker 0 answers it, the others get it
	 * as a reply so they learn the sender without answering too. */
	unsigned i;

	for (i = 0; i < w->p.nworkers; i++) {
		struct rte_mbuf *c;

		if (i == w->p.index || m->nb_segs != 1)
			continue;
		c = rte_pktmbuf_copy(m, w->p.pool, 0, UINT32_MAX);
		if (c == NULL) {
			w->p.stats->dispatch_full++;
			continue;
		}
		if (as_reply && i != 0)
			dp_flow_arp_as_reply(rte_pktmbuf_mtod(c, uint8_t *), c->data_len);
		w->p.stats->neigh_copies++;
		hand_off(w, i, c);
	}
}

/* Decides the owner of one received frame: keeps it (true) or queues it
 * for another worker (false). */
static bool dispatch(struct dp_worker *w, struct rte_mbuf *m)
{
	uint32_t hash = 0;
	unsigned dst;

	switch (dp_flow_classify(rte_pktmbuf_mtod(m, const uint8_t *),
				 m->data_len, &hash)) {
	case DP_FLOW_TCP:
		/* Under RSS the NIC steered the segment with the same
		 * symmetric hash and the RETA we verified at start. */
		if (w->p.rss)
			return true;
		/* fall through */
	case DP_FLOW_EMBEDDED:
		dst = w->p.owner_of[hash % w->p.owner_n];
		break;
	case DP_FLOW_NEIGH_ALL:
		copy_to_others(w, m, false);
		return true;
	case DP_FLOW_ARP_REQUEST:
		copy_to_others(w, m, true);
		/* Worker 0 answers: the peer gets one reply. */
		if (w->p.index != 0)
			dp_flow_arp_as_reply(rte_pktmbuf_mtod(m, uint8_t *), m->data_len);
		return true;
	default:
		dst = 0;
		break;
	}
	if (dst == w->p.index)
		return true;
	hand_off(w, dst, m);
	return false;
}

/* Hands the collected frames to their owners; a full ring drops them
 * (counted; TCP retransmits). */
static void flush_out(struct dp_worker *w)
{
	unsigned i, n;

	for (i = 0; i < w->p.nworkers; i++) {
		if (w->nout[i] == 0)
			continue;
		n = rte_ring_mp_enqueue_burst(w->p.inbox[i], (void *const *)w->out[i],
					      w->nout[i], NULL);
		w->p.stats->dispatched += n;
		if (n < w->nout[i]) {
			w->p.stats->dispatch_full += w->nout[i] - n;
			rte_pktmbuf_free_bulk(&w->out[i][n], w->nout[i] - n);
		}
		w->nout[i] = 0;
	}
}

/* Sends what the queue-less workers passed to this queue's owner. */
static void tx_relay(struct dp_worker *w)
{
	struct rte_mbuf *pkts[TX_BURST];
	unsigned n;
	uint16_t sent;

	while ((n = rte_ring_sc_dequeue_burst(w->p.tx_ring, (void **)pkts,
					      TX_BURST, NULL)) > 0) {
		sent = rte_eth_tx_burst(w->p.port, w->p.queue, pkts, (uint16_t)n);
		if (sent < n) {
			/* Counted by the sender as sent; the port's queue is
			 * full, so this is a tx drop here. */
			w->p.stats->tx_dropped += n - sent;
			rte_pktmbuf_free_bulk(&pkts[sent], n - sent);
		}
		if (n < TX_BURST)
			break;
	}
}

/* Returns the frames taken from the queue and the hand-off ring. */
static unsigned rx_pass(struct dp_worker *w)
{
	struct rte_mbuf *pkts[RX_BURST];
	struct tcp_buf *bufs[2 * RX_BURST];
	uint16_t n = 0, i;
	unsigned k = 0, r = 0;

	if (w->p.has_queue)
		n = rte_eth_rx_burst(w->p.port, w->p.queue, pkts, RX_BURST);
	if (n > 0) {
		w->p.stats->rx_bursts++;
		w->p.stats->rx_packets += n;
		for (i = 0; i < n; i++) {
			struct rte_mbuf *m = pkts[i];

			w->p.stats->rx_bytes += rte_pktmbuf_pkt_len(m);
			if (w->p.nworkers == 1 || dispatch(w, m))
				rx_wrap(w, m, bufs, &k);
		}
		if (w->p.nworkers > 1)
			flush_out(w);
	}
	if (w->p.nworkers > 1) {
		r = rte_ring_sc_dequeue_burst(w->p.inbox[w->p.index], (void **)pkts,
					      RX_BURST, NULL);
		w->p.stats->received += r;
		for (i = 0; i < r; i++)
			rx_wrap(w, pkts[i], bufs, &k);
	}
	if (k)
		tcp_input_burst(w->tcp, bufs, k, w->now_ns);
	return n + r;
}

/* Publishes the TCP stack's counters for the control socket. */
static void snapshot(struct dp_worker *w)
{
	struct tcp_stats st;
	unsigned i;

	tcp_stats_get(w->tcp, &st);
	for (i = 0; i < TCP_DROP__COUNT; i++)
		w->p.stats->tcp_drops[i] = st.drops[i];
	w->p.stats->tcp_conns_active = st.conns_active;
}

int dp_worker_run(void *arg)
{
	struct dp_worker *w = arg;
	uint64_t next_tick = 0, stop_at = 0, linger_until = 0, next_snap = 0;
	uint64_t idle_since = 0;
	const long nap_base = (long)w->p.cfg->idle_sleep_us * 1000;
	struct timespec nap = { 0, nap_base };
	unsigned work;
	bool done = false;

	tbl_reader_register();
	/* Naps are short: without this the kernel rounds them up by its
	 * default 50 us timer slack. */
	if (nap_base)
		prctl(PR_SET_TIMERSLACK, 1000ul, 0ul, 0ul, 0ul);
	for (;;) {
		w->now_ns = tsc_ns(w);
		work = rx_pass(w);
		tcp_service(w->tcp, w->now_ns);
		work += handle_events(w);
		if (w->poll)
			work += poll_pass(w);
		if (w->now_ns >= next_tick) {
			timeouts(w);
			next_tick = w->now_ns + 1000000000ull;
		}
		if (w->now_ns >= next_snap) {
			snapshot(w);
			next_snap = w->now_ns + SNAPSHOT_NS;
		}
		if (done) {
			/* Our sessions are finished; others may still need our
			 * queue (their frames arrive on it, theirs leave by it). */
			if (__atomic_load_n(w->p.live, __ATOMIC_ACQUIRE) == 0)
				break;
		} else if (*w->p.stop) {
			if (stop_at == 0) {
				tcp_unlisten(w->tcp, w->p.cfg->smtp_port);
				stop_at = w->now_ns + STOP_GRACE_MS * 1000000ull;
			}
			if (stop_pass(w, w->now_ns >= stop_at) == 0) {
				/* Let the last replies and FINs leave. */
				if (linger_until == 0)
					linger_until = w->now_ns + STOP_LINGER_MS * 1000000ull;
				else if (w->now_ns >= linger_until) {
					done = true;
					__atomic_sub_fetch(w->p.live, 1, __ATOMIC_RELEASE);
				}
			}
		}
		tcp_service(w->tcp, w->now_ns);
		work += w->ntx;
		tx_flush(w);
		if (w->p.tx_ring && w->p.has_queue)
			tx_relay(w);
		/* Live knobs (config.set/reload): copied before the
		 * quiescent state that ends our hold on them. */
		{
			const struct tbl_knobs *kn = tbl_knobs(w->p.tables);

			w->per_client = kn->max_sessions_per_client;
			w->session_max_ms = (uint64_t)kn->session_max_s * 1000u;
			etx_knobs_to_smtp(w->smtp, &w->lim, kn);
		}
		tbl_quiescent();
		/* Idle pacing: spin while traffic flows (a reply's answer comes
		 * back within microseconds), nap once nothing has happened for
		 * IDLE_SPIN_NS. On a box where the lcore shares its CPU (CI, a
		 * small VM, the clients of a benchmark) a busy-polling idle
		 * lcore takes the CPU from whoever would produce its next
		 * frame. No syscall while there is work; --idle-sleep 0 keeps
		 * pure polling for dedicated cores. */
		if (work) {
			idle_since = w->now_ns;
			nap.tv_nsec = nap_base;
		} else if (nap_base && w->now_ns - idle_since >= IDLE_SPIN_NS) {
			nanosleep(&nap, NULL);
			/* The longer the quiet, the longer the nap (an idle
			 * edge costs next to no CPU), but never past the
			 * spool's answer a session is waiting for. */
			if (w->poll == NULL && nap.tv_nsec < IDLE_NAP_MAX_NS)
				nap.tv_nsec *= 2;
		}
	}
	tx_flush(w);
	snapshot(w);
	tbl_reader_unregister();
	return 0;
}

/* ------------------------------------------------------------------ */
/* setup                                                               */

struct dp_worker *dp_worker_create(const struct dp_worker_params *p)
{
	static const struct smtp_ops ops = {
		.write = smtp_write, .event = smtp_event,
		.unix_time = smtp_unix_time,
	};
	const struct dp_config *cfg = p->cfg;
	const struct cfg *f = &cfg->file;
	struct tcp_config tc;
	struct smtp_config sc;
	struct rte_ether_addr mac;
	struct timespec ts;
	struct dp_worker *w;
	unsigned i;
	int rc;

	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return NULL;
	w->p = *p;
	w->tsc_hz = rte_get_tsc_hz();
	w->tsc_base = rte_get_tsc_cycles();
	clock_gettime(CLOCK_REALTIME, &ts);
	w->wall_base_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	snprintf(w->busy_reply, sizeof(w->busy_reply),
		 "421 4.3.2 %.40s Too many connections\r\n", cfg->hostname);
	snprintf(w->expired_reply, sizeof(w->expired_reply),
		 "421 4.4.2 %.40s Error: session time limit exceeded\r\n", cfg->hostname);
	w->per_client = tbl_knobs(p->tables)->max_sessions_per_client;
	w->session_max_ms = (uint64_t)tbl_knobs(p->tables)->session_max_s * 1000u;

	memset(&tc, 0, sizeof(tc));
	rte_eth_macaddr_get(p->port, &mac);
	memcpy(tc.mac, mac.addr_bytes, 6);
	tc.ip4 = cfg->ip4;
	tc.ip4_mask = cfg->ip4 ? cfg->ip4_mask : 0;
	if (cfg->ip6_prefixlen) {
		memcpy(tc.ip6, cfg->ip6, 16);
		tc.ip6_prefixlen = cfg->ip6_prefixlen;
	}
	/* Sessions plus as many TIME_WAIT/closing connections. */
	tc.max_conns = p->max_sessions * 2;
	tc.rx_segs = p->max_sessions * 8;
	tc.ops.ctx = w;
	tc.ops.tx_alloc = tx_alloc;
	tc.ops.tx_send = tx_send;
	w->tcp = tcp_create(&tc);
	if (w->tcp == NULL) {
		fprintf(stderr, "mxedge: tcp stack for queue %u: %s\n", p->queue,
			strerror(errno));
		goto fail;
	}
	rc = tcp_listen(w->tcp, cfg->smtp_port);
	if (rc < 0) {
		fprintf(stderr, "mxedge: listen on port %u: %s\n", cfg->smtp_port,
			strerror(-rc));
		errno = -rc;
		goto fail;
	}

	memset(&sc, 0, sizeof(sc));
	sc.hostname = cfg->hostname;
	sc.max_message_size = f->max_message_size;
	sc.max_rcpts = f->max_recipients;
	sc.max_errors = f->max_errors;
	sc.line_buffers = p->max_sessions;
	sc.bare_policy = f->bare_lf_normalise ? SMTP_BARE_NORMALISE : SMTP_BARE_REJECT;
	sc.cmd_timeout_ms = f->command_timeout_s * 1000u;
	sc.data_timeout_ms = f->data_timeout_s * 1000u;
	sc.no_chunking = !f->chunking;
	sc.no_smtputf8 = !f->smtputf8;
	w->smtp = smtp_server_create(&sc, &ops);
	if (w->smtp == NULL) {
		fprintf(stderr, "mxedge: SMTP settings refused (hostname '%s'?): %s\n",
			cfg->hostname, strerror(errno));
		goto fail;
	}
	w->x.spool = p->spool;
	w->x.tables = p->tables;
	w->x.ndomains = p->ndomains;
	w->x.stats = p->stats;
	w->x.log = p->log;
	w->x.max_rcpts = f->max_recipients ? f->max_recipients : 100;
	w->x.rcpts = calloc(w->x.max_rcpts, sizeof(*w->x.rcpts));
	w->sess = calloc(p->max_sessions, sizeof(*w->sess));
	w->clients = etx_clients_create(p->max_sessions, rte_rand());
	if (w->x.rcpts == NULL || w->sess == NULL || w->clients == NULL)
		goto fail;
	for (i = p->max_sessions; i-- > 0;) {
		w->sess[i].w = w;
		w->sess[i].next = w->free_list;
		w->free_list = &w->sess[i];
	}
	return w;
fail:
	rc = errno ? errno : ENOMEM;
	dp_worker_destroy(w);
	errno = rc;
	return NULL;
}

uint64_t dp_worker_tcp_drops(const struct dp_worker *w)
{
	struct tcp_stats st;
	uint64_t n = 0;
	unsigned i;

	tcp_stats_get(w->tcp, &st);
	for (i = 0; i < TCP_DROP__COUNT; i++)
		n += st.drops[i];
	return n;
}

void dp_worker_destroy(struct dp_worker *w)
{
	if (w == NULL)
		return;
	while (w->active)
		sess_close(w->active);
	tcp_destroy(w->tcp);
	smtp_server_destroy(w->smtp);
	etx_clients_destroy(w->clients);
	free(w->sess);
	free(w->x.rcpts);
	free(w);
}
