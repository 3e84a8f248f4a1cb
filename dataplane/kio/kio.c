/*
 * kio.c - worker threads of `mxedge --io=kernel`: kernel sockets -> SMTP
 * engine -> spool writer. See kio.h.
 *
 * The loop per thread: epoll_wait -> recv -> smtp_input() -> engine events
 * (tables, spool records) -> replies flushed with one send per pass. A
 * session whose message ended waits on the thread's poll list until the
 * spool's sync thread reports the END record durable; only then does the
 * engine get SMTP_ACCEPT and the 250 go out (RFC 5321 §4.1.1.4: the 250
 * hands responsibility to us). The events themselves go to etx.c, the
 * code dp_worker.c uses too, so both I/O modes store the same records,
 * answer the same way and write the same log lines.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "elog.h"
#include "etx.h"
#include "kio.h"
#include "smtp.h"
#include "spool.h"

/* Client bytes held per session: what one recv() may bring and the most
 * handed to the engine per call. */
#define IN_CAP (16u * 1024)
/* Stop reading while this much reply text is unsent (a client that
 * pipelines without reading its answers). */
#define OUT_HIGH (64u * 1024)
/* Envelope text (MAIL FROM, parameters, RCPTs) a session may hold until
 * DATA; past it RCPT gets 452 (RFC 5321 §4.5.3.1.10 allows that). */
#define ENV_BYTES 16384
/* Ring room kept free before feeding input: a whole input buffer of body
 * plus the BEGIN record of the largest envelope and record headers. */
#define SPOOL_RESERVE (IN_CAP + ENV_BYTES + 4096)
#define MAX_EVENTS 64
#define LISTEN_MAX 2
/* Graceful stop: sessions in a transaction get this long to finish. */
#define STOP_GRACE_MS 5000
/* How long a thread sleeps while sessions wait for the sync thread. The
 * spool has no wake-up fd: a short timed wait keeps the 250 latency near
 * the fdatasync time without spinning a core. */
#define DURABLE_POLL_NS 100000

struct kworker;

struct kconn {
	int fd;
	struct kworker *w;
	struct kconn *prev, *next;   /* all sessions of the thread */
	struct kconn *pprev, *pnext; /* poll list */
	bool on_poll;
	bool broken;                 /* peer gone or unanswerable: drop */
	bool eof;                    /* peer sent FIN */
	bool counted;                /* holds a per-client slot: ckey */
	uint32_t ev_mask;            /* what epoll watches now */
	uint64_t start_ms;           /* accepted at (session_max_s) */
	uint8_t ckey[ETX_CLIENT_KEY];
	struct etx_tx t;             /* transaction, log state (etx.h) */
	char *out;                   /* replies not yet sent */
	size_t out_len, out_off, out_cap;
	size_t in_len;
	char env[ENV_BYTES];         /* t's envelope text */
	uint8_t in[IN_CAP];
	_Alignas(16) uint8_t smtp[SMTP_SESSION_MAX];
};

struct kworker {
	struct kio *k;
	unsigned id;
	pthread_t tid;
	bool started;
	int ep;
	int lfd[LISTEN_MAX];
	struct smtp_server *smtp;
	struct spool_writer *spool;
	struct etx_ctx x;            /* shared transaction code (etx.h) */
	struct etx_clients *clients; /* sessions per client */
	struct dp_lcore_stats *st;
	struct kconn *conns;
	struct kconn *poll;
	unsigned nconns;
	char busy_reply[96];
	char expired_reply[96];
	const char *hostname;
	unsigned per_client;         /* 0: no per-client limit */
	uint64_t session_max_ms;     /* 0: no lifetime cap */
	struct smtp_limits lim;      /* the engine limits last applied */
};

struct kio {
	struct kio_params p;
	struct kworker *w;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct smtp_session *sess_smtp(struct kconn *c)
{
	return (struct smtp_session *)(void *)c->smtp;
}

/* ------------------------------------------------------------------ */
/* output                                                              */

static void smtp_write(void *ctx, const void *buf, size_t len)
{
	struct kconn *c = ctx;
	size_t cap;
	char *np;

	if (c->broken)
		return;
	etx_reply(&c->t, buf, len);
	if (c->out_len + len > c->out_cap) {
		cap = c->out_cap ? c->out_cap : 1024;
		while (cap < c->out_len + len)
			cap *= 2;
		/* Reading stops at OUT_HIGH, so this stays bounded by it plus
		 * the replies to one input buffer. */
		np = realloc(c->out, cap);
		if (np == NULL) {
			c->broken = true; /* cannot answer: drop the client */
			return;
		}
		c->out = np;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
}

/* Sends what the socket takes; false when the connection is broken. */
static bool out_flush(struct kconn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off,
				 c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return true;
			return false;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return true;
}

/* ------------------------------------------------------------------ */
/* lists                                                               */

static void poll_add(struct kconn *c)
{
	struct kworker *w = c->w;

	if (c->on_poll)
		return;
	c->on_poll = true;
	c->pprev = NULL;
	c->pnext = w->poll;
	if (w->poll)
		w->poll->pprev = c;
	w->poll = c;
}

static void poll_del(struct kconn *c)
{
	struct kworker *w = c->w;

	if (!c->on_poll)
		return;
	if (c->pprev)
		c->pprev->pnext = c->pnext;
	else
		w->poll = c->pnext;
	if (c->pnext)
		c->pnext->pprev = c->pprev;
	c->on_poll = false;
	c->pprev = c->pnext = NULL;
}

/* Ends the session. Unread input is drained first: closing a socket with
 * unread data sends a reset that can destroy the last reply in flight
 * (RFC 9293 §3.10.4). */
static void conn_free(struct kconn *c)
{
	struct kworker *w = c->w;
	char sink[512];

	poll_del(c);
	if (c->counted)
		etx_clients_put(w->clients, c->ckey);
	etx_session_end(&w->x, &c->t, wall_us());
	smtp_session_fini(sess_smtp(c)); /* raises ABORT for an open tx */
	epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
	if (!c->broken) {
		(void)out_flush(c);
		shutdown(c->fd, SHUT_WR);
		while (recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
	}
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	free(c->out);
	free(c);
}

/* ------------------------------------------------------------------ */
/* SMTP engine upcalls                                                 */

static int64_t smtp_unix_time(void *ctx)
{
	(void)ctx;
	return (int64_t)time(NULL);
}

/* The engine's events go to the shared transaction code; the session
 * only keeps the poll list in step with what it waits for. */
static int smtp_event(void *ctx, struct smtp_session *ss, struct smtp_event *ev)
{
	struct kconn *c = ctx;
	int rc = etx_event(&c->w->x, &c->t, ss, ev, wall_us());

	if (rc == SMTP_PENDING)
		poll_add(c);
	else if (ev->type == SMTP_EV_ABORT)
		poll_del(c);
	return rc;
}

/* ------------------------------------------------------------------ */
/* driving a session                                                   */

static bool spool_has_room(const struct kworker *w)
{
	struct spool_writer_stats st;

	/* Conservative: bytes not yet durable still occupy the ring. */
	spool_writer_stats(w->spool, &st);
	return w->k->p.spool_ring_bytes - (st.appended - st.durable) >=
	       SPOOL_RESERVE;
}

static void conn_set_events(struct kconn *c)
{
	uint32_t want = 0;
	struct epoll_event ev;

	if (smtp_wants(sess_smtp(c)) == SMTP_WANT_INPUT && !c->eof &&
	    c->in_len < IN_CAP && c->out_len - c->out_off < OUT_HIGH &&
	    c->t.pend != ETX_PEND_ROOM)
		want |= EPOLLIN;
	if (c->out_off < c->out_len)
		want |= EPOLLOUT;
	if (want == c->ev_mask)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = want;
	ev.data.ptr = c;
	epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->ev_mask = want;
}

/* Feeds held input to the engine while it wants some and the spool ring
 * has room (else parks the session: backpressure, the client's window
 * closes), sends the replies, closes when the engine or the peer is done. */
static void conn_drive(struct kconn *c)
{
	struct smtp_session *s = sess_smtp(c);
	size_t used;

	while (c->in_len > 0 && smtp_wants(s) == SMTP_WANT_INPUT &&
	       !c->broken && c->out_len - c->out_off < OUT_HIGH) {
		if (!spool_has_room(c->w)) {
			c->t.pend = ETX_PEND_ROOM;
			poll_add(c);
			break;
		}
		used = smtp_input(s, c->in, c->in_len, mono_ms());
		if (used == 0)
			break; /* the engine's line buffers are all lent */
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
	/* STARTTLS is not offered in this mode yet: WANT_TLS cannot happen. */
	if (smtp_wants(s) == SMTP_WANT_TLS)
		c->broken = true;
	if (!c->broken && !out_flush(c))
		c->broken = true;
	/* After the client's FIN, what input is left and cannot be consumed
	 * is an unfinished line: nothing more will complete it. */
	if (c->broken || smtp_wants(s) == SMTP_WANT_CLOSE ||
	    (smtp_wants(s) == SMTP_WANT_INPUT && c->eof && c->t.pend != ETX_PEND_ROOM &&
	     (c->in_len == 0 || c->out_len - c->out_off < OUT_HIGH))) {
		conn_free(c);
		return;
	}
	conn_set_events(c);
}

static void conn_read(struct kconn *c)
{
	ssize_t n;

	if (c->in_len < IN_CAP && !c->eof) {
		n = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
		if (n > 0) {
			c->in_len += (size_t)n;
			c->w->st->rx_bytes += (uint64_t)n;
			c->w->st->rx_bursts++;
		} else if (n == 0) {
			c->eof = true;
		} else if (errno != EAGAIN && errno != EINTR) {
			c->broken = true; /* client gone: abort what is open */
		}
	}
	conn_drive(c);
}

/* The client's address family (4 or 6; a v4-mapped IPv6 address is the
 * IPv4 client it stands for) and address bytes. */
static int peer_addr(const struct sockaddr_storage *ss, uint8_t addr[16])
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			memcpy(addr, &a->sin6_addr.s6_addr[12], 4);
			return 4;
		}
		memcpy(addr, &a->sin6_addr, 16);
		return 6;
	}
	memcpy(addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	return 4;
}

static void accept_all(struct kworker *w, int lfd)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct epoll_event ev;
		struct kconn *c;
		uint8_t addr[16], key[ETX_CLIENT_KEY];
		int one = 1, family;
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		if (w->nconns >= w->k->p.max_sessions ||
		    (c = calloc(1, sizeof(*c))) == NULL) {
			/* RFC 5321 §3.8: 421 when the service is not available. */
			w->st->sessions_busy++;
			(void)!send(fd, w->busy_reply, strlen(w->busy_reply),
				    MSG_NOSIGNAL);
			close(fd);
			continue;
		}
		family = peer_addr(&ss, addr);
		etx_client_key(family, addr, key);
		if (w->per_client &&
		    etx_clients_take(w->clients, key, w->per_client) < 0) {
			/* As Postfix's smtpd_client_connection_count_limit;
			 * RFC 3463 X.7.0: security or policy status. */
			char r[160], client[48];

			inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, client,
				  sizeof(client));
			w->st->sessions_client_limit++;
			snprintf(r, sizeof(r), "421 4.7.0 %.60s Error: too many "
				 "connections from %s\r\n", w->hostname, client);
			(void)!send(fd, r, strlen(r), MSG_NOSIGNAL);
			close(fd);
			free(c);
			continue;
		}
		if (w->per_client) {
			memcpy(c->ckey, key, sizeof(key));
			c->counted = true;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		c->w = w;
		c->start_ms = mono_ms();
		etx_session_start(&w->x, &c->t, family, addr, c->env,
				  sizeof(c->env), wall_us());
		c->next = w->conns;
		if (w->conns)
			w->conns->prev = c;
		w->conns = c;
		w->nconns++;
		w->st->sessions++;
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		c->ev_mask = EPOLLIN;
		epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
		smtp_session_init(c->smtp, w->smtp, c, c->t.peer, mono_ms());
		smtp_start(sess_smtp(c), mono_ms());
		conn_drive(c);
	}
}

/* Answers what the spool decided and retries parked sessions. */
static void poll_pass(struct kworker *w)
{
	struct kconn *c = w->poll, *next;
	struct etx_answer ans;

	for (; c; c = next) {
		struct smtp_session *ss = sess_smtp(c);
		enum etx_pend was = c->t.pend;

		next = c->pnext;
		if (was == ETX_PEND_ROOM) {
			/* Input held back: resume once the ring has room. */
			if (!spool_has_room(w) && spool_writer_error(w->spool) == 0)
				continue;
			poll_del(c);
			c->t.pend = ETX_PEND_NONE;
		} else {
			if (etx_poll(&w->x, &c->t, ss, wall_us(), &ans) == ETX_POLL_WAIT)
				continue;
			poll_del(c);
			if (was != ETX_PEND_NONE)
				smtp_complete(ss, ans.verdict, ans.reply, mono_ms());
		}
		conn_drive(c);
	}
}

static void timeouts(struct kworker *w)
{
	struct kconn *c, *next;
	uint64_t now = mono_ms();

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (smtp_timeout(sess_smtp(c), now)) {
			c->t.timed_out = true;
			conn_drive(c);
			continue;
		}
		/* Total lifetime cap: inactivity timeouts alone let a client
		 * dripping a byte inside data_s keep its session forever. A
		 * message waiting on the spool still gets its answer; any
		 * other open transaction is aborted (RFC 5321 §3.8). */
		if (w->session_max_ms == 0 || now - c->start_ms < w->session_max_ms ||
		    c->t.pend != ETX_PEND_NONE)
			continue;
		w->st->sessions_expired++;
		c->t.timed_out = true;
		if (smtp_wants(sess_smtp(c)) == SMTP_WANT_INPUT ||
		    smtp_wants(sess_smtp(c)) == SMTP_WANT_ANSWER)
			smtp_write(c, w->expired_reply, strlen(w->expired_reply));
		conn_free(c);
	}
}

/* Graceful stop: sessions outside a transaction (or all, once @force)
 * get 421 (RFC 5321 §3.8) and are closed. Returns the sessions left. */
static unsigned stop_pass(struct kworker *w, bool force)
{
	static const char bye[] = "421 4.3.2 Service shutting down\r\n";
	struct kconn *c, *next;
	unsigned left = 0;

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (!force && etx_busy(&c->t)) {
			left++;
			continue;
		}
		if (smtp_wants(sess_smtp(c)) == SMTP_WANT_INPUT ||
		    smtp_wants(sess_smtp(c)) == SMTP_WANT_ANSWER)
			smtp_write(c, bye, sizeof(bye) - 1);
		conn_free(c);
	}
	return left;
}

static void stop_listening(struct kworker *w)
{
	unsigned i;

	for (i = 0; i < LISTEN_MAX; i++) {
		if (w->lfd[i] < 0)
			continue;
		epoll_ctl(w->ep, EPOLL_CTL_DEL, w->lfd[i], NULL);
		close(w->lfd[i]);
		w->lfd[i] = -1;
	}
}

static int wait_events(struct kworker *w, struct epoll_event *evs)
{
	struct timespec ts = { 0, 200 * 1000000L };
	int n;

	if (w->poll)
		ts.tv_nsec = DURABLE_POLL_NS;
	/* Offline while blocked: table writers need not wait for us. */
	tbl_reader_offline();
	n = epoll_pwait2(w->ep, evs, MAX_EVENTS, &ts, NULL);
	if (n < 0 && errno == ENOSYS)
		n = epoll_wait(w->ep, evs, MAX_EVENTS, w->poll ? 1 : 200);
	tbl_reader_online();
	return n;
}

static void *worker_main(void *arg)
{
	struct kworker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	uint64_t next_tick = mono_ms() + 1000, stop_at = 0;
	int n, i;

	tbl_reader_register();
	for (;;) {
		n = wait_events(w, evs);
		for (i = 0; i < n; i++) {
			uintptr_t tag = (uintptr_t)evs[i].data.ptr;
			struct kconn *c;

			if (tag < LISTEN_MAX) {
				if (w->lfd[tag] >= 0)
					accept_all(w, w->lfd[tag]);
				continue;
			}
			c = evs[i].data.ptr;
			if (evs[i].events & EPOLLOUT && !out_flush(c))
				c->broken = true;
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				conn_read(c);
			else
				conn_drive(c);
		}
		if (w->poll)
			poll_pass(w);
		if (mono_ms() >= next_tick) {
			timeouts(w);
			next_tick = mono_ms() + 1000;
		}
		if (*w->k->p.stop) {
			if (stop_at == 0) {
				stop_listening(w);
				stop_at = mono_ms() + STOP_GRACE_MS;
			}
			if (stop_pass(w, mono_ms() >= stop_at) == 0)
				break;
		}
		/* Live knobs (config.set/reload): copied before the
		 * quiescent state that ends our hold on them. */
		{
			const struct tbl_knobs *kn = tbl_knobs(w->k->p.tables);

			w->per_client = kn->max_sessions_per_client;
			w->session_max_ms = (uint64_t)kn->session_max_s * 1000u;
			etx_knobs_to_smtp(w->smtp, &w->lim, kn);
		}
		tbl_quiescent();
	}
	tbl_reader_unregister();
	return NULL;
}

/* ------------------------------------------------------------------ */
/* setup                                                               */

static int listen_on(const struct sockaddr_storage *ss, socklen_t sl,
		     const char *text)
{
	int fd, one = 1, rc;

	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* One socket per thread on the same address: the kernel spreads
	 * connections over them (SO_REUSEPORT), no shared accept queue. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    (ss->ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (const struct sockaddr *)ss, sl) < 0 || listen(fd, 1024) < 0)
		goto fail;
	return fd;
fail:
	rc = -errno;
	fprintf(stderr, "mxedge: cannot listen on %s: %s\n", text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

/* The addresses to listen on: the configured ones, else both wildcards. */
static unsigned listen_addrs(const struct dp_config *cfg,
			     struct sockaddr_storage *ss, socklen_t *sl,
			     char text[][INET6_ADDRSTRLEN + 8])
{
	bool any = cfg->ip4 == 0 && cfg->ip6_prefixlen == 0;
	char a[INET6_ADDRSTRLEN];
	unsigned n = 0;

	memset(ss, 0, sizeof(*ss) * LISTEN_MAX);
	if (cfg->ip4 || any) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss[n];

		s4->sin_family = AF_INET;
		s4->sin_port = htons(cfg->smtp_port);
		s4->sin_addr.s_addr = cfg->ip4;
		sl[n] = sizeof(*s4);
		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
		snprintf(text[n], INET6_ADDRSTRLEN + 8, "%s:%u", a, cfg->smtp_port);
		n++;
	}
	if (cfg->ip6_prefixlen || any) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss[n];

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(cfg->smtp_port);
		if (!any)
			memcpy(&s6->sin6_addr, cfg->ip6, 16);
		sl[n] = sizeof(*s6);
		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
		snprintf(text[n], INET6_ADDRSTRLEN + 8, "[%s]:%u", a, cfg->smtp_port);
		n++;
	}
	return n;
}

/* A hash seed clients cannot guess (they could otherwise aim their
 * addresses at one probe chain of the per-client table). */
static uint64_t client_seed(unsigned i)
{
	uint64_t seed;

	if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		seed = wall_us() * 0x9e3779b97f4a7c15ull + i;
	return seed;
}

struct kio *kio_create(const struct kio_params *p)
{
	static const struct smtp_ops ops = {
		.write = smtp_write, .event = smtp_event,
		.unix_time = smtp_unix_time,
	};
	const struct dp_config *cfg = p->cfg;
	const struct cfg *f = &cfg->file;
	struct sockaddr_storage ss[LISTEN_MAX];
	socklen_t sl[LISTEN_MAX];
	char text[LISTEN_MAX][INET6_ADDRSTRLEN + 8];
	struct smtp_config sc;
	struct kio *k;
	unsigned i, j, nl;
	int rc = ENOMEM;

	if (p->threads == 0 || p->threads > SPOOL_MAX_WRITERS ||
	    p->max_sessions == 0) {
		fprintf(stderr, "mxedge: %u threads (1..%u) with %u sessions each "
			"cannot run\n", p->threads, SPOOL_MAX_WRITERS, p->max_sessions);
		errno = EINVAL;
		return NULL;
	}
	k = calloc(1, sizeof(*k));
	if (k == NULL) {
		fprintf(stderr, "mxedge: %s\n", strerror(ENOMEM));
		return NULL;
	}
	k->p = *p;
	k->w = calloc(p->threads, sizeof(*k->w));
	if (k->w == NULL) {
		fprintf(stderr, "mxedge: %s\n", strerror(ENOMEM));
		goto fail;
	}
	for (i = 0; i < p->threads; i++) {
		k->w[i].ep = -1;
		for (j = 0; j < LISTEN_MAX; j++)
			k->w[i].lfd[j] = -1;
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
	nl = listen_addrs(cfg, ss, sl, text);
	for (i = 0; i < p->threads; i++) {
		struct kworker *w = &k->w[i];

		w->k = k;
		w->id = i;
		w->st = &p->stats[i];
		w->spool = spool_writer(p->spool, i);
		snprintf(w->busy_reply, sizeof(w->busy_reply),
			 "421 4.3.2 %.40s Too many connections\r\n", cfg->hostname);
		snprintf(w->expired_reply, sizeof(w->expired_reply),
			 "421 4.4.2 %.40s Error: session time limit exceeded\r\n",
			 cfg->hostname);
		w->hostname = cfg->hostname;
		w->per_client = tbl_knobs(p->tables)->max_sessions_per_client;
		w->session_max_ms = (uint64_t)tbl_knobs(p->tables)->session_max_s * 1000u;
		w->smtp = smtp_server_create(&sc, &ops);
		if (w->smtp == NULL) {
			rc = errno;
			fprintf(stderr, "mxedge: SMTP settings refused (hostname '%s'?): %s\n",
				cfg->hostname, strerror(errno));
			goto fail;
		}
		w->x.spool = w->spool;
		w->x.tables = p->tables;
		w->x.ndomains = p->ndomains;
		w->x.stats = w->st;
		w->x.log = p->logs ? p->logs[i] : NULL;
		w->x.max_rcpts = f->max_recipients ? f->max_recipients : 100;
		w->x.rcpts = calloc(w->x.max_rcpts, sizeof(*w->x.rcpts));
		w->clients = etx_clients_create(p->max_sessions, client_seed(i));
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		if (w->x.rcpts == NULL || w->clients == NULL || w->ep < 0) {
			rc = errno ? errno : ENOMEM;
			fprintf(stderr, "mxedge: thread %u: %s\n", i, strerror(rc));
			goto fail;
		}
		for (j = 0; j < nl; j++) {
			struct epoll_event ev;
			int fd = listen_on(&ss[j], sl[j], text[j]);

			if (fd < 0) {
				rc = -fd;
				goto fail;
			}
			w->lfd[j] = fd;
			memset(&ev, 0, sizeof(ev));
			ev.events = EPOLLIN;
			ev.data.ptr = (void *)(uintptr_t)j;
			if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
				rc = errno;
				fprintf(stderr, "mxedge: thread %u: epoll: %s\n", i,
					strerror(rc));
				goto fail;
			}
		}
	}
	return k;
fail:
	kio_destroy(k);
	errno = rc;
	return NULL;
}

int kio_start(struct kio *k)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned i;
	int e;

	for (i = 0; i < k->p.threads; i++) {
		struct kworker *w = &k->w[i];
		cpu_set_t set;

		e = pthread_create(&w->tid, NULL, worker_main, w);
		if (e != 0)
			return -e;
		w->started = true;
		/* One thread per core: thread i on CPU i modulo the count.
		 * Best effort; an unpinned thread still works. */
		CPU_ZERO(&set);
		CPU_SET((int)(i % (unsigned long)(ncpu > 0 ? ncpu : 1)), &set);
		pthread_setaffinity_np(w->tid, sizeof(set), &set);
	}
	return 0;
}

void kio_join(struct kio *k)
{
	unsigned i;

	for (i = 0; i < k->p.threads; i++) {
		if (k->w[i].started)
			pthread_join(k->w[i].tid, NULL);
		k->w[i].started = false;
	}
}

void kio_destroy(struct kio *k)
{
	unsigned i;

	if (k == NULL)
		return;
	for (i = 0; k->w && i < k->p.threads; i++) {
		struct kworker *w = &k->w[i];

		while (w->conns)
			conn_free(w->conns);
		stop_listening(w);
		if (w->ep >= 0)
			close(w->ep);
		smtp_server_destroy(w->smtp);
		etx_clients_destroy(w->clients);
		free(w->x.rcpts);
	}
	free(k->w);
	free(k);
}
