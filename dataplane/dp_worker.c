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

enum tx_state {
	TX_NONE = 0, /* no transaction */
	TX_ENV,      /* MAIL seen: envelope collecting in env[] */
	TX_BEGUN,    /* BEGIN record appended, body streaming */
	TX_ENDED,    /* END record appended, 250 waits for durability */
};

enum pend {
	PEND_NONE = 0,
	PEND_BEGIN,   /* DATA answered PENDING: BEGIN hit a full ring */
	PEND_END,     /* EOM answered PENDING: END hit a full ring */
	PEND_DURABLE, /* EOM answered PENDING: waiting for the sync thread */
};

struct dp_sess {
	struct dp_worker *w;
	struct tcp_conn *conn;
	struct dp_sess *prev, *next;      /* active list / free list (next) */
	struct dp_sess *pprev, *pnext;    /* poll list */
	bool on_poll;
	bool overflow;                    /* a reply did not fit: abort */
	bool body_failed;
	enum tx_state tx;
	enum pend pend;
	uint64_t qid;
	uint64_t commit_off;
	uint64_t arrival_us;
	uint64_t start_ms;                /* accepted at (session_max_s) */
	bool counted;                     /* holds a per-client slot: ckey */
	uint8_t ckey[16];
	struct spool_msg msg;
	char qid_txt[SPOOL_QID_LEN + 1];
	char peer[56];                    /* for Received: ("IPv6:..." form) */
	char client[48];                  /* plain address for the envelope */
	/* env[]: mail_from NUL params NUL, then per RCPT addr NUL notify NUL
	 * orcpt NUL (empty = absent). */
	unsigned env_len, nrcpt;
	char env[ENV_BYTES];
	_Alignas(16) uint8_t smtp[SMTP_SESSION_MAX];
};

/* Sessions one client holds (limits.max_sessions_per_client): an open
 * addressing table (linear probing) with room for twice the session pool,
 * so it is never more than half full. n == 0: empty slot. */
struct dp_client {
	uint8_t key[16];
	uint32_t n;
};

struct dp_worker {
	struct dp_worker_params p;
	struct dp_client *clients;
	uint32_t cmask;
	uint64_t cseed;                   /* random: addresses cannot aim at a chain */
	unsigned per_client;              /* 0: no per-client limit */
	uint64_t session_max_ms;          /* 0: no lifetime cap */
	struct tcp_stack *tcp;
	struct smtp_server *smtp;
	struct dp_sess *sess;             /* the preallocated pool */
	struct dp_sess *free_list;
	struct dp_sess *active;
	struct dp_sess *poll;
	struct spool_rcpt *rcpts;         /* scratch for spool_begin */
	unsigned max_rcpts;
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

/* The per-client key: an IPv4 address as ::ffff:a.b.c.d, an IPv6
 * address cut to its /64 (one site or host usually holds a whole /64, so
 * counting single IPv6 addresses would not limit anybody). */
static void client_key(const struct tcp_addr *a, uint8_t key[16])
{
	memset(key, 0, 16);
	if (a->family == 4) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, a->a, 4);
	} else {
		memcpy(key, a->a, 8);
	}
}

static uint32_t client_hash(const struct dp_worker *w, const uint8_t key[16])
{
	uint64_t a, b, h;

	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	h = (a ^ w->cseed) * 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h = (h ^ b) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return (uint32_t)h & w->cmask;
}

/* The slot of @key, or the empty slot where it would go. */
static struct dp_client *client_slot(struct dp_worker *w, const uint8_t key[16])
{
	uint32_t i = client_hash(w, key);

	while (w->clients[i].n && memcmp(w->clients[i].key, key, 16))
		i = (i + 1) & w->cmask;
	return &w->clients[i];
}

/* A session of @key ended; frees the slot at zero (backward-shift deletion
 * keeps every probe chain intact without tombstones). */
static void client_put(struct dp_worker *w, const uint8_t key[16])
{
	struct dp_client *c = client_slot(w, key);
	uint32_t i, j, k;

	if (c->n == 0 || --c->n)
		return;
	i = (uint32_t)(c - w->clients);
	for (j = (i + 1) & w->cmask; w->clients[j].n; j = (j + 1) & w->cmask) {
		k = client_hash(w, w->clients[j].key);
		/* Move j back into the hole at i unless its home k lies
		 * cyclically in (i, j]. */
		if (i <= j ? (k <= i || k > j) : (k <= i && k > j)) {
			w->clients[i] = w->clients[j];
			w->clients[j].n = 0;
			i = j;
		}
	}
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
		client_put(w, s->ckey);
		s->counted = false;
	}
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
/* envelope                                                            */

static int env_put(struct dp_sess *s, const char *p, size_t n)
{
	if (n >= ENV_BYTES - s->env_len)
		return -ENOSPC;
	memcpy(s->env + s->env_len, p, n);
	s->env_len += (unsigned)n;
	s->env[s->env_len++] = '\0';
	return 0;
}

static const char *env_next(const char *p)
{
	return p + strlen(p) + 1;
}

/* MAIL parameters as the spool stores them: the RFC keywords. */
static void mail_params(const struct smtp_event *ev, char *out, size_t cap)
{
	static const char *const body[] = { "", " BODY=7BIT", " BODY=8BITMIME" };
	static const char *const ret[] = { "", " RET=FULL", " RET=HDRS" };
	int n;

	n = snprintf(out, cap, "%s%s%s", body[ev->body], ret[ev->ret],
		     ev->smtputf8 ? " SMTPUTF8" : "");
	if (n < 0 || (size_t)n >= cap)
		n = 0;
	if (ev->size)
		n += snprintf(out + n, cap - (size_t)n, " SIZE=%llu",
			      (unsigned long long)ev->size);
	if (ev->envid && (size_t)n < cap)
		snprintf(out + n, cap - (size_t)n, " ENVID=%.*s",
			 (int)ev->envid_len, ev->envid);
	/* Drop the leading blank. */
	if (out[0] == ' ')
		memmove(out, out + 1, strlen(out));
}

static int tx_begin(struct dp_sess *s)
{
	struct dp_worker *w = s->w;
	struct spool_envelope env;
	const char *p = s->env;
	unsigned i;

	memset(&env, 0, sizeof(env));
	env.arrival_us = s->arrival_us;
	env.client_addr = s->client;
	env.helo = smtp_helo(sess_smtp(s));
	env.mail_from = p;
	p = env_next(p);
	env.mail_params = p[0] ? p : NULL;
	p = env_next(p);
	for (i = 0; i < s->nrcpt && i < w->max_rcpts; i++) {
		w->rcpts[i].addr = p;
		p = env_next(p);
		w->rcpts[i].notify = p[0] ? p : NULL;
		p = env_next(p);
		w->rcpts[i].orcpt = p[0] ? p : NULL;
		p = env_next(p);
	}
	env.nrcpt = i;
	env.rcpts = w->rcpts;
	return spool_begin(w->p.spool, &s->msg, s->qid, &env);
}

static void tx_reset(struct dp_sess *s)
{
	s->tx = TX_NONE;
	s->pend = PEND_NONE;
	s->env_len = 0;
	s->nrcpt = 0;
	s->body_failed = false;
}

/* ------------------------------------------------------------------ */
/* SMTP engine upcalls                                                 */

static void smtp_write(void *ctx, const void *buf, size_t len)
{
	struct dp_sess *s = ctx;
	long n;

	if (s->conn == NULL || s->overflow)
		return;
	n = tcp_send(s->conn, buf, len);
	/* The engine needs every byte taken; we keep SEND_RESERVE free before
	 * feeding input, so only a client that pipelines far beyond what it
	 * reads gets here: drop it (smtp.h contract). */
	if (n < 0 || (size_t)n < len)
		s->overflow = true;
}

static bool rcpt_domain_ok(struct dp_worker *w, const char *a, size_t n)
{
	const char *at = memrchr(a, '@', n);

	if (*w->p.ndomains == 0)
		return true; /* no domain configured: accept all */
	/* RFC 5321 §4.5.1: "postmaster" without a domain must be accepted. */
	if (at == NULL)
		return n == 10 && strncasecmp(a, "postmaster", 10) == 0;
	return tbl_domain_lookup(w->p.tables, at + 1,
				 n - (size_t)(at + 1 - a)) != NULL;
}

static int smtp_event(void *ctx, struct smtp_session *ss, struct smtp_event *ev)
{
	struct dp_sess *s = ctx;
	struct dp_worker *w = s->w;
	char params[256];
	int rc;

	switch (ev->type) {
	case SMTP_EV_CONNECT: {
		struct tcp_conn_info ci;

		tcp_conn_get_info(s->conn, &ci);
		if (tbl_client_check(w->p.tables, ci.remote.family,
				     ci.remote.a) == TBL_BLOCKED) {
			w->p.stats->clients_blocked++;
			ev->reply = "554 5.7.1 Client host rejected: access denied";
			return SMTP_REJECT;
		}
		return SMTP_ACCEPT;
	}
	case SMTP_EV_MAIL:
		tx_reset(s);
		s->qid = spool_qid_new(w->p.spool, wall_us(w) / 1000u);
		spool_qid_format(s->qid, s->qid_txt);
		s->arrival_us = wall_us(w);
		memset(&s->msg, 0, sizeof(s->msg));
		mail_params(ev, params, sizeof(params));
		if (env_put(s, ev->addr, ev->addr_len) < 0 ||
		    env_put(s, params, strlen(params)) < 0) {
			ev->reply = "552 5.3.4 Envelope too large";
			s->env_len = 0;
			return SMTP_REJECT;
		}
		s->tx = TX_ENV;
		ev->queue_id = s->qid_txt;
		return SMTP_ACCEPT;
	case SMTP_EV_RCPT: {
		unsigned save = s->env_len;
		char notify[40];

		if (!rcpt_domain_ok(w, ev->addr, ev->addr_len)) {
			w->p.stats->rcpt_rejected++;
			ev->reply = "550 5.1.2 Recipient domain not accepted here";
			return SMTP_REJECT;
		}
		snprintf(notify, sizeof(notify), "%s%s%s%s",
			 (ev->notify & SMTP_NOTIFY_NEVER) ? "NEVER" : "",
			 (ev->notify & SMTP_NOTIFY_SUCCESS) ? "SUCCESS," : "",
			 (ev->notify & SMTP_NOTIFY_FAILURE) ? "FAILURE," : "",
			 (ev->notify & SMTP_NOTIFY_DELAY) ? "DELAY," : "");
		if (notify[0] && notify[strlen(notify) - 1] == ',')
			notify[strlen(notify) - 1] = '\0';
		if (s->nrcpt >= w->max_rcpts ||
		    env_put(s, ev->addr, ev->addr_len) < 0 ||
		    env_put(s, notify, strlen(notify)) < 0 ||
		    env_put(s, ev->orcpt ? ev->orcpt : "", ev->orcpt ? ev->orcpt_len : 0) < 0) {
			s->env_len = save;
			ev->reply = "452 4.5.3 Too many recipients";
			return SMTP_REJECT;
		}
		s->nrcpt++;
		return SMTP_ACCEPT;
	}
	case SMTP_EV_DATA:
		rc = tx_begin(s);
		if (rc == 0) {
			s->tx = TX_BEGUN;
			return SMTP_ACCEPT;
		}
		if (rc == -EAGAIN) {
			/* Ring full: the 354 waits until the sync thread
			 * frees room; the loop retries. */
			s->pend = PEND_BEGIN;
			poll_add(s);
			return SMTP_PENDING;
		}
		w->p.stats->store_errors++;
		ev->reply = "451 4.3.0 Error: queue file write error";
		return SMTP_REJECT;
	case SMTP_EV_BODY:
		if (s->body_failed)
			return SMTP_REJECT;
		rc = spool_data(w->p.spool, &s->msg, ev->data, ev->len);
		if (rc < 0) {
			/* Feeding stops before the ring is this full, so
			 * this is a spool failure (or a huge chunk). */
			s->body_failed = true;
			w->p.stats->store_errors++;
			ev->reply = rc == -EAGAIN ?
				"452 4.3.1 Insufficient system storage" :
				"451 4.3.0 Error: queue file write error";
			return SMTP_REJECT;
		}
		return SMTP_ACCEPT;
	case SMTP_EV_EOM:
		if (s->body_failed) {
			ev->reply = "451 4.3.0 Error: queue file write error";
			return SMTP_REJECT;
		}
		rc = spool_end(w->p.spool, &s->msg, &s->commit_off);
		if (rc == 0 || rc == -EAGAIN) {
			if (rc == 0)
				s->tx = TX_ENDED;
			s->pend = rc == 0 ? PEND_DURABLE : PEND_END;
			poll_add(s);
			return SMTP_PENDING;
		}
		w->p.stats->store_errors++;
		ev->reply = "451 4.3.0 Error: queue file write error";
		return SMTP_REJECT;
	case SMTP_EV_ABORT:
		/* An ENDED message stays: it may already be durable, and
		 * keeping it only risks a duplicate (smtp.h). */
		if (s->tx == TX_BEGUN)
			(void)spool_abort(w->p.spool, &s->msg);
		poll_del(s);
		tx_reset(s);
		return SMTP_ACCEPT;
	default:
		return SMTP_ACCEPT;
	}
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
	struct dp_client *cl = NULL;
	struct tcp_conn_info ci;
	const char *pfx = "";
	uint8_t key[16];
	char client[48];

	if (s == NULL || *w->p.stop) {
		/* RFC 5321 §3.8: 421 when the service is not available. */
		w->p.stats->sessions_busy++;
		(void)tcp_send(c, w->busy_reply, strlen(w->busy_reply));
		goto refuse;
	}
	tcp_conn_get_info(c, &ci);
	inet_ntop(ci.remote.family == 4 ? AF_INET : AF_INET6, ci.remote.a,
		  client, sizeof(client));
	if (w->per_client) {
		client_key(&ci.remote, key);
		cl = client_slot(w, key);
		if (cl->n >= w->per_client) {
			/* One address must not hold the whole pool; Postfix's
			 * anvil answers the same (smtpd_client_connection_
			 * count_limit), RFC 3463 X.7.0 security/policy. */
			char r[160];

			w->p.stats->sessions_client_limit++;
			snprintf(r, sizeof(r), "421 4.7.0 %.60s Error: too many "
				 "connections from %s\r\n", w->p.cfg->hostname, client);
			(void)tcp_send(c, r, strlen(r));
			goto refuse;
		}
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
	if (cl) {
		memcpy(cl->key, key, 16);
		cl->n++;
		memcpy(s->ckey, key, 16);
		s->counted = true;
	}
	s->start_ms = now_ms(w);
	memcpy(s->client, client, sizeof(s->client));
	if (ci.remote.family == 6)
		pfx = "IPv6:"; /* RFC 5321 §4.1.3 address literal */
	snprintf(s->peer, sizeof(s->peer), "%s%s", pfx, s->client);
	w->p.stats->sessions++;
	smtp_session_init(s->smtp, w->smtp, s, s->peer, now_ms(w));
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
	int err = spool_writer_error(w->p.spool);
	unsigned done = 0;
	int rc;

	for (; s; s = next) {
		struct smtp_session *ss = sess_smtp(s);

		next = s->pnext;
		switch (s->pend) {
		case PEND_BEGIN:
			rc = tx_begin(s);
			if (rc == -EAGAIN)
				continue;
			poll_del(s);
			s->pend = PEND_NONE;
			if (rc == 0)
				s->tx = TX_BEGUN;
			else
				w->p.stats->store_errors++;
			smtp_complete(ss, rc == 0 ? SMTP_ACCEPT : SMTP_REJECT,
				      rc == 0 ? NULL : "451 4.3.0 Error: queue file write error",
				      now_ms(w));
			break;
		case PEND_END:
			rc = spool_end(w->p.spool, &s->msg, &s->commit_off);
			if (rc == -EAGAIN)
				continue;
			if (rc == 0) {
				s->tx = TX_ENDED;
				s->pend = PEND_DURABLE;
				continue;
			}
			poll_del(s);
			tx_reset(s);
			w->p.stats->store_errors++;
			smtp_complete(ss, SMTP_REJECT,
				      "451 4.3.0 Error: queue file write error", now_ms(w));
			break;
		case PEND_DURABLE:
			if (err == 0 && !spool_durable(w->p.spool, s->commit_off))
				continue;
			poll_del(s);
			tx_reset(s);
			if (err == 0)
				w->p.stats->messages++;
			else
				w->p.stats->store_errors++;
			/* RFC 5321 §4.1.1.4: 250 only once the message is
			 * on stable storage; 451 if the spool failed. */
			smtp_complete(ss, err == 0 ? SMTP_ACCEPT : SMTP_REJECT,
				      err == 0 ? NULL : "451 4.3.0 Error: queue file write error",
				      now_ms(w));
			break;
		case PEND_NONE:
			poll_del(s);
			break;
		}
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
			sess_drive(s);
			continue;
		}
		if (w->session_max_ms == 0 || now - s->start_ms < w->session_max_ms ||
		    s->pend != PEND_NONE)
			continue;
		w->p.stats->sessions_expired++;
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
		if (!force && s->tx != TX_NONE) {
			left++;
			continue;
		}
		if (smtp_wants(sess_smtp(s)) == SMTP_WANT_INPUT ||
		    smtp_wants(sess_smtp(s)) == SMTP_WANT_ANSWER)
			(void)tcp_send(s->conn, bye, sizeof(bye) - 1);
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
	w->max_rcpts = f->max_recipients ? f->max_recipients : 100;
	w->rcpts = calloc(w->max_rcpts, sizeof(*w->rcpts));
	w->sess = calloc(p->max_sessions, sizeof(*w->sess));
	for (w->cmask = 1; w->cmask < 2 * p->max_sessions; w->cmask <<= 1)
		;
	w->clients = calloc(w->cmask, sizeof(*w->clients));
	w->cmask--;
	w->cseed = rte_rand();
	if (w->rcpts == NULL || w->sess == NULL || w->clients == NULL)
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
	free(w->clients);
	free(w->sess);
	free(w->rcpts);
	free(w);
}
