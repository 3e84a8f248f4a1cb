/*
 * kio — kernel-socket adapter for the SMTP engine.  See kio.h.
 */
#include "kio.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP     16384u          /* per-connection receive buffer */
#define OUT_HIGH   (256u * 1024)   /* stop reading while this much is unsent */
#define ENV_MAX    (256u * 1024)   /* envelope text per transaction */
#define MAX_EVENTS 64

struct worker;

struct conn {
	int fd;
	int msg_fd;               /* tmp/<qid>.eml while a transaction is open */
	struct worker *w;
	struct conn *prev, *next; /* all connections of the worker */
	struct conn *next_commit; /* commit queue */
	struct conn *gprev, *gnext; /* greeting queue (greet delay) */
	uint64_t greet_at;        /* monotonic ms the greeting is due */
	bool greet_pending;
	uint32_t ev_mask;         /* what epoll watches now */
	bool closed;
	bool commit_queued;
	bool store_failed;
	char peer[INET6_ADDRSTRLEN + 8];
	char qid[32];
	char *env;                /* envelope text of the open transaction */
	size_t env_len, env_cap;
	uint64_t msg_size;
	unsigned nrcpt;
	char *out;                /* replies not yet written */
	size_t out_len, out_off, out_cap;
	size_t in_len;
	uint8_t in[IN_CAP];
	_Alignas(16) uint8_t sess[512];
};

struct worker {
	struct kio *k;
	unsigned id;
	pthread_t tid;
	int ep;
	int lfd[KIO_MAX_LISTEN];
	struct smtp_server *srv;
	struct conn *conns;
	struct conn *commits;     /* messages waiting for the group fsync */
	struct conn *greet_head, *greet_tail; /* FIFO: same delay for all */
	unsigned nconns;
	unsigned seq;
	int dirfd, tmpfd;
};

struct kio {
	struct kio_config cfg;
	struct worker *w;
	unsigned nw;
	atomic_int stop;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ */
/* output                                                              */

static void out_append(struct conn *c, const void *p, size_t n)
{
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 1024;
		char *np;
		while (cap < c->out_len + n)
			cap *= 2;
		np = realloc(c->out, cap);
		if (np == NULL) {
			c->closed = true; /* cannot answer: drop the client */
			return;
		}
		c->out = np;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
}

static void kio_write(void *ctx, const void *buf, size_t len)
{
	out_append(ctx, buf, len);
}

/* Write what we can; returns false when the connection is broken. */
static bool out_flush(struct conn *c)
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
/* message store                                                       */

/* Room for n more envelope bytes (plus a NUL); 0 or -errno. */
static int env_reserve(struct conn *c, size_t n)
{
	size_t cap;
	char *np;

	if (c->env_len + n + 1 <= c->env_cap)
		return 0;
	if (c->env_len + n + 1 > ENV_MAX)
		return -ENOSPC;
	cap = c->env_cap ? c->env_cap * 2 : 1024;
	while (cap < c->env_len + n + 1)
		cap *= 2;
	np = realloc(c->env, cap);
	if (np == NULL)
		return -ENOMEM;
	c->env = np;
	c->env_cap = cap;
	return 0;
}

static int env_add(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int env_add(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int n, rc;

	for (;;) {
		size_t room = c->env_cap - c->env_len;
		va_start(ap, fmt);
		n = vsnprintf(c->env ? c->env + c->env_len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -EINVAL;
		if ((size_t)n < room) {
			c->env_len += (size_t)n;
			return 0;
		}
		rc = env_reserve(c, (size_t)n);
		if (rc < 0)
			return rc;
	}
}

/* Envelope strings are written as received; control bytes and '\\' are
 * escaped as \xNN so one field is always one line. */
static void env_field(struct conn *c, const char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	if (env_reserve(c, n * 4) < 0)
		return;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (ch < 32 || ch == 127 || ch == '\\') {
			c->env[c->env_len++] = '\\';
			c->env[c->env_len++] = 'x';
			c->env[c->env_len++] = hex[ch >> 4];
			c->env[c->env_len++] = hex[ch & 15];
		} else {
			c->env[c->env_len++] = (char)ch;
		}
	}
	c->env[c->env_len] = '\0';
}

static void tx_discard(struct conn *c)
{
	char name[64];

	if (c->msg_fd >= 0) {
		close(c->msg_fd);
		c->msg_fd = -1;
	}
	if (c->qid[0] != '\0') {
		/* also after a failed commit that already closed the file */
		snprintf(name, sizeof(name), "%s.eml", c->qid);
		unlinkat(c->w->tmpfd, name, 0);
	}
	c->env_len = 0;
	c->qid[0] = '\0';
	c->store_failed = false;
}

static int tx_begin(struct conn *c)
{
	struct worker *w = c->w;
	struct timespec ts;
	char name[64];
	int tries;

	tx_discard(c);
	clock_gettime(CLOCK_REALTIME, &ts);
	for (tries = 0; tries < 16; tries++) {
		/* time in µs, worker, sequence: unique across workers and
		 * restarts; O_EXCL guards against the impossible anyway */
		snprintf(c->qid, sizeof(c->qid), "%013llX%02X%04X",
			 (unsigned long long)ts.tv_sec * 1000000ull +
				 (unsigned long long)ts.tv_nsec / 1000u,
			 w->id & 0xff, w->seq++ & 0xffff);
		snprintf(name, sizeof(name), "%s.eml", c->qid);
		c->msg_fd = openat(w->tmpfd, name,
				   O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		if (c->msg_fd >= 0)
			break;
		if (errno != EEXIST)
			return -errno;
	}
	if (c->msg_fd < 0)
		return -EEXIST;
	c->env_len = 0;
	c->msg_size = 0;
	c->nrcpt = 0;
	return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *q = p;

	while (n > 0) {
		ssize_t r = write(fd, q, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		q += r;
		n -= (size_t)r;
	}
	return 0;
}

/*
 * Make one message durable: fsync the message, write + fsync the envelope,
 * rename both into the spool (envelope last: it marks a complete message).
 * The caller fsyncs the spool directory once for the whole group.
 */
static int tx_commit_files(struct conn *c)
{
	struct worker *w = c->w;
	char a[64], b[64];
	int fd = -1, rc = 0;

	/* fdatasync also persists the file size (all we need to read it
	 * back); the rename is made durable by the directory fsync. */
	if (fdatasync(c->msg_fd) < 0) {
		rc = -errno;
		goto fail;
	}
	close(c->msg_fd);
	c->msg_fd = -1;
	snprintf(a, sizeof(a), "%s.env", c->qid);
	fd = openat(w->tmpfd, a, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = write_all(fd, c->env, c->env_len);
	if (rc == 0 && fdatasync(fd) < 0)
		rc = -errno;
	close(fd);
	fd = -1;
	if (rc < 0)
		goto fail;
	snprintf(a, sizeof(a), "%s.eml", c->qid);
	if (renameat(w->tmpfd, a, w->dirfd, a) < 0) {
		rc = -errno;
		goto fail;
	}
	snprintf(a, sizeof(a), "%s.env", c->qid);
	if (renameat(w->tmpfd, a, w->dirfd, a) < 0) {
		rc = -errno;
		snprintf(b, sizeof(b), "%s.eml", c->qid);
		unlinkat(w->dirfd, b, 0);
		goto fail;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	snprintf(a, sizeof(a), "%s.env", c->qid);
	unlinkat(w->tmpfd, a, 0);
	return rc;
}

/* ------------------------------------------------------------------ */
/* engine events                                                       */

static int64_t kio_unix_time(void *ctx)
{
	return (int64_t)time(NULL);
}

static int kio_event(void *ctx, struct smtp_session *s, struct smtp_event *ev)
{
	struct conn *c = ctx;
	static const char *const body_names[] = { "", "7BIT", "8BITMIME" };
	static const char *const ret_names[] = { "", "FULL", "HDRS" };

	switch (ev->type) {
	case SMTP_EV_MAIL:
		if (tx_begin(c) < 0) {
			ev->reply = "451 4.3.0 Error: cannot create queue file";
			return SMTP_REJECT;
		}
		ev->queue_id = c->qid;
		env_add(c, "queue-id %s\nclient %s\nhelo ", c->qid, c->peer);
		env_field(c, smtp_helo(s), strlen(smtp_helo(s)));
		env_add(c, "\nprotocol %s\nmail-from <", smtp_protocol(s));
		env_field(c, ev->addr, ev->addr_len);
		env_add(c, ">");
		if (ev->size)
			env_add(c, " size=%llu", (unsigned long long)ev->size);
		if (ev->body)
			env_add(c, " body=%s", body_names[ev->body]);
		if (ev->smtputf8)
			env_add(c, " smtputf8");
		if (ev->ret)
			env_add(c, " ret=%s", ret_names[ev->ret]);
		if (ev->envid) {
			env_add(c, " envid=");
			env_field(c, ev->envid, ev->envid_len);
		}
		env_add(c, "\n");
		return SMTP_ACCEPT;
	case SMTP_EV_RCPT:
		if (env_add(c, "rcpt <") < 0) {
			ev->reply = "452 4.5.3 Error: envelope too large";
			return SMTP_REJECT;
		}
		env_field(c, ev->addr, ev->addr_len);
		env_add(c, ">");
		if (ev->notify) {
			env_add(c, " notify=%s%s%s%s",
				(ev->notify & SMTP_NOTIFY_NEVER) ? "NEVER" : "",
				(ev->notify & SMTP_NOTIFY_SUCCESS) ? "SUCCESS," : "",
				(ev->notify & SMTP_NOTIFY_FAILURE) ? "FAILURE," : "",
				(ev->notify & SMTP_NOTIFY_DELAY) ? "DELAY," : "");
			if (c->env[c->env_len - 1] == ',')
				c->env_len--;
		}
		if (ev->orcpt) {
			env_add(c, " orcpt=");
			env_field(c, ev->orcpt, ev->orcpt_len);
		}
		env_add(c, "\n");
		c->nrcpt++;
		return SMTP_ACCEPT;
	case SMTP_EV_BODY:
		if (c->msg_fd < 0 || write_all(c->msg_fd, ev->data, ev->len) < 0) {
			ev->reply = "452 4.3.1 Insufficient system storage";
			return SMTP_REJECT;
		}
		c->msg_size += ev->len;
		return SMTP_ACCEPT;
	case SMTP_EV_EOM:
		env_add(c, "size %llu\n", (unsigned long long)ev->size);
		/* The 250 waits for the group fsync at the end of this loop
		 * pass: RFC 5321 §4.1.1.4 / DESIGN.md durability rule. */
		c->next_commit = c->w->commits;
		c->w->commits = c;
		c->commit_queued = true;
		return SMTP_PENDING;
	case SMTP_EV_ABORT:
		tx_discard(c);
		return SMTP_ACCEPT;
	case SMTP_EV_CONNECT:
		if (c->w->k->cfg.greet_delay_ms == 0)
			return SMTP_ACCEPT;
		/* Greet pause: the 220 waits; a client that talks first is an
		 * early talker (RFC 5321 §4.3.1 says wait for the greeting). */
		c->greet_at = now_ms() + c->w->k->cfg.greet_delay_ms;
		c->greet_pending = true;
		c->gprev = c->w->greet_tail;
		c->gnext = NULL;
		if (c->w->greet_tail)
			c->w->greet_tail->gnext = c;
		else
			c->w->greet_head = c;
		c->w->greet_tail = c;
		return SMTP_PENDING;
	case SMTP_EV_EARLY_TALKER:
		if (!c->w->k->cfg.quiet)
			fprintf(stderr, "mxedge-kio: early talker %s\n", c->peer);
		return SMTP_ACCEPT;
	default:
		return SMTP_ACCEPT;
	}
}

/* ------------------------------------------------------------------ */
/* connections                                                         */

static void conn_set_events(struct conn *c)
{
	struct smtp_session *s = (struct smtp_session *)(void *)c->sess;
	uint32_t want = 0;
	struct epoll_event ev;

	if ((smtp_wants(s) == SMTP_WANT_INPUT || c->greet_pending) &&
	    c->in_len < IN_CAP && c->out_len - c->out_off < OUT_HIGH)
		want |= EPOLLIN;
	if (c->out_off < c->out_len)
		want |= EPOLLOUT;
	if (want == c->ev_mask)
		return;
	ev.events = want;
	ev.data.ptr = c;
	epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->ev_mask = want;
}

static void conn_free(struct conn *c)
{
	struct worker *w = c->w;
	struct smtp_session *s = (struct smtp_session *)(void *)c->sess;

	if (c->greet_pending) {
		if (c->gprev)
			c->gprev->gnext = c->gnext;
		else
			w->greet_head = c->gnext;
		if (c->gnext)
			c->gnext->gprev = c->gprev;
		else
			w->greet_tail = c->gprev;
	}
	smtp_session_fini(s); /* aborts an open transaction */
	tx_discard(c);
	epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	free(c->out);
	free(c->env);
	free(c);
}

/* Feed held input to the engine, send replies, close when it says so. */
static void conn_drive(struct conn *c)
{
	struct smtp_session *s = (struct smtp_session *)(void *)c->sess;
	uint64_t now = now_ms();

	if (c->greet_pending && c->in_len > 0)
		smtp_input(s, c->in, c->in_len, now); /* reports, keeps them */
	while (c->in_len > 0 && smtp_wants(s) == SMTP_WANT_INPUT &&
	       !c->closed) {
		size_t used = smtp_input(s, c->in, c->in_len, now);
		if (used == 0)
			break; /* engine's line-buffer pool is empty: wait */
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
	if (smtp_wants(s) == SMTP_WANT_TLS) {
		/* STARTTLS is not offered by kio; never reached. */
		c->closed = true;
	}
	if (!out_flush(c))
		c->closed = true;
	if (c->commit_queued)
		return; /* the commit pass answers and drives again */
	if (c->closed || (smtp_wants(s) == SMTP_WANT_CLOSE &&
			  c->out_off >= c->out_len)) {
		conn_free(c);
		return;
	}
	conn_set_events(c);
}

static void conn_read(struct conn *c)
{
	struct smtp_session *s = (struct smtp_session *)(void *)c->sess;
	ssize_t n;

	if ((smtp_wants(s) != SMTP_WANT_INPUT && !c->greet_pending) ||
	    c->in_len >= IN_CAP) {
		conn_set_events(c);
		return;
	}
	n = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		c->closed = true; /* client gone: abort what is open */
	} else if (n > 0) {
		c->in_len += (size_t)n;
	}
	conn_drive(c);
}

static void accept_all(struct worker *w, int lfd)
{
	const struct kio_config *cfg = &w->k->cfg;

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct epoll_event ev;
		struct conn *c;
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1;

		if (fd < 0)
			return;
		if (w->nconns >= (cfg->max_conns ? cfg->max_conns : 10000u) ||
		    (c = calloc(1, sizeof(*c))) == NULL) {
			static const char busy[] =
				"421 4.3.2 Too many connections, try later\r\n";
			(void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL);
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		c->msg_fd = -1;
		c->w = w;
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
				inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12],
					  c->peer, sizeof(c->peer));
			else {
				/* RFC 5321 §4.1.3 IPv6 address literal */
				memcpy(c->peer, "IPv6:", 5);
				inet_ntop(AF_INET6, &a->sin6_addr, c->peer + 5,
					  sizeof(c->peer) - 5);
			}
		} else {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr,
				  c->peer, sizeof(c->peer));
		}
		c->next = w->conns;
		if (w->conns)
			w->conns->prev = c;
		w->conns = c;
		w->nconns++;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		c->ev_mask = EPOLLIN;
		epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
		smtp_session_init(c->sess, w->srv, c, c->peer, now_ms());
		smtp_start((struct smtp_session *)(void *)c->sess, now_ms());
		conn_drive(c);
	}
}

/* Group commit: sync every message that ended in this pass, one directory
 * fsync for all, then answer each and let it read on. */
static void commit_pass(struct worker *w)
{
	struct conn *c, *list = w->commits;
	int dir_rc = 0;

	if (list == NULL)
		return;
	w->commits = NULL;
	for (c = list; c; c = c->next_commit)
		c->store_failed = tx_commit_files(c) < 0;
	if (fsync(w->dirfd) < 0)
		dir_rc = -errno;
	for (c = list; c;) {
		struct conn *next = c->next_commit;
		struct smtp_session *s = (struct smtp_session *)(void *)c->sess;
		bool ok = !c->store_failed && dir_rc == 0;

		c->commit_queued = false;
		c->next_commit = NULL;
		if (ok && !w->k->cfg.quiet)
			fprintf(stderr, "mxedge-kio: %s: client=%s, size=%llu, nrcpt=%u (queued)\n",
				c->qid, c->peer, (unsigned long long)c->msg_size,
				c->nrcpt);
		if (!ok) {
			/* 451 goes out: nothing of this message may stay */
			if (!c->store_failed) {
				char name[64];
				snprintf(name, sizeof(name), "%s.env", c->qid);
				unlinkat(w->dirfd, name, 0);
				snprintf(name, sizeof(name), "%s.eml", c->qid);
				unlinkat(w->dirfd, name, 0);
			}
			tx_discard(c);
		}
		smtp_complete(s, ok ? SMTP_ACCEPT : SMTP_REJECT,
			      ok ? NULL : "451 4.3.0 Error: queue file write error",
			      now_ms());
		c->qid[0] = '\0';
		c->env_len = 0;
		conn_drive(c);
		c = next;
	}
}

static void timeouts(struct worker *w)
{
	struct conn *c = w->conns;
	uint64_t now = now_ms();

	while (c) {
		struct conn *next = c->next;
		if (smtp_timeout((struct smtp_session *)(void *)c->sess, now))
			conn_drive(c);
		c = next;
	}
}

/* Send the greetings that are due (all share one delay: FIFO order). */
static void greet_pass(struct worker *w)
{
	uint64_t now = now_ms();

	while (w->greet_head && w->greet_head->greet_at <= now) {
		struct conn *c = w->greet_head;
		w->greet_head = c->gnext;
		if (w->greet_head)
			w->greet_head->gprev = NULL;
		else
			w->greet_tail = NULL;
		c->greet_pending = false;
		c->gprev = c->gnext = NULL;
		smtp_complete((struct smtp_session *)(void *)c->sess,
			      SMTP_ACCEPT, NULL, now);
		conn_drive(c);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	uint64_t last_tick = now_ms();

	while (!atomic_load(&w->k->stop)) {
		int wait_ms = 200;
		int n;

		if (w->greet_head) {
			uint64_t now = now_ms();
			uint64_t due = w->greet_head->greet_at;
			wait_ms = due <= now ? 0 : (due - now < 200 ? (int)(due - now) : 200);
		}
		n = epoll_wait(w->ep, evs, MAX_EVENTS, wait_ms);
		int i;

		for (i = 0; i < n; i++) {
			uintptr_t tag = (uintptr_t)evs[i].data.ptr;
			if (tag < KIO_MAX_LISTEN) {
				accept_all(w, w->lfd[tag]);
				continue;
			}
			{
				struct conn *c = evs[i].data.ptr;
				if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
					if (!out_flush(c))
						c->closed = true;
				}
				if (c->commit_queued)
					continue;
				if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
					conn_read(c);
				else
					conn_drive(c);
			}
		}
		commit_pass(w);
		greet_pass(w);
		if (now_ms() - last_tick >= 1000) {
			last_tick = now_ms();
			timeouts(w);
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* setup                                                               */

static int parse_addr(const char *s, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	char host[128];
	const char *colon;
	long port;
	char *end;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = '\0';
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
	}
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port <= 0 || port > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		*len = sizeof(*a);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a);
		return 0;
	}
	return -EINVAL;
}

static int listen_on(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, rc;

	rc = parse_addr(addr, &ss, &sl);
	if (rc < 0) {
		fprintf(stderr, "kio: bad listen address \"%s\" (want IP:PORT or [IPv6]:PORT)\n", addr);
		return rc;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* One socket per worker on the same address: the kernel spreads
	 * connections over them (SO_REUSEPORT), no shared accept queue. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    (ss.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
		rc = -errno;
		fprintf(stderr, "kio: cannot listen on %s: %s\n", addr, strerror(errno));
		close(fd);
		return rc;
	}
	return fd;
}

struct kio *kio_create(const struct kio_config *cfg)
{
	static const struct smtp_ops ops = {
		.write = kio_write, .event = kio_event,
		.unix_time = kio_unix_time,
	};
	struct kio *k = NULL;
	unsigned i, j;
	int rc = -EINVAL, dirfd = -1;

	if (cfg == NULL || cfg->nlisten == 0 || cfg->nlisten > KIO_MAX_LISTEN ||
	    cfg->spool_dir == NULL) {
		fprintf(stderr, "kio: need at least one listen address and a spool directory\n");
		goto fail;
	}
	k = calloc(1, sizeof(*k));
	if (k == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	k->cfg = *cfg;
	k->nw = cfg->threads;
	if (k->nw == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		k->nw = n > 0 ? (unsigned)n : 1;
	}
	dirfd = open(cfg->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		rc = -errno;
		fprintf(stderr, "kio: spool directory %s: %s\n", cfg->spool_dir,
			strerror(errno));
		goto fail;
	}
	if (mkdirat(dirfd, "tmp", 0750) < 0 && errno != EEXIST) {
		rc = -errno;
		fprintf(stderr, "kio: cannot create %s/tmp: %s\n", cfg->spool_dir,
			strerror(errno));
		goto fail;
	}
	k->w = calloc(k->nw, sizeof(*k->w));
	if (k->w == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < k->nw; i++) {
		struct worker *w = &k->w[i];
		w->k = k;
		w->id = i;
		w->ep = -1;
		w->dirfd = -1;
		w->tmpfd = -1;
		for (j = 0; j < KIO_MAX_LISTEN; j++)
			w->lfd[j] = -1;
	}
	for (i = 0; i < k->nw; i++) {
		struct worker *w = &k->w[i];
		w->srv = smtp_server_create(&cfg->smtp, &ops);
		if (w->srv == NULL) {
			rc = -errno;
			fprintf(stderr, "kio: bad SMTP settings (hostname?)\n");
			goto fail;
		}
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		w->dirfd = dup(dirfd);
		w->tmpfd = openat(dirfd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (w->ep < 0 || w->dirfd < 0 || w->tmpfd < 0) {
			rc = -errno;
			goto fail;
		}
		for (j = 0; j < cfg->nlisten; j++) {
			struct epoll_event ev = { .events = EPOLLIN };
			w->lfd[j] = listen_on(cfg->listen[j]);
			if (w->lfd[j] < 0) {
				rc = w->lfd[j];
				goto fail;
			}
			ev.data.ptr = (void *)(uintptr_t)j;
			epoll_ctl(w->ep, EPOLL_CTL_ADD, w->lfd[j], &ev);
		}
	}
	close(dirfd);
	return k;
fail:
	if (dirfd >= 0)
		close(dirfd);
	kio_destroy(k);
	errno = -rc;
	return NULL;
}

int kio_run(struct kio *k)
{
	unsigned i, started = 0;
	int rc = 0;

	for (i = 0; i < k->nw; i++) {
		int e = pthread_create(&k->w[i].tid, NULL, worker_main, &k->w[i]);
		if (e != 0) {
			rc = -e;
			atomic_store(&k->stop, 1);
			break;
		}
		started++;
		/* One worker per core: pin worker i to online CPU i (mod the
		 * CPU count).  Best effort; an unpinned worker still works. */
		{
			long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET((int)(i % (unsigned long)(ncpu > 0 ? ncpu : 1)), &set);
			pthread_setaffinity_np(k->w[i].tid, sizeof(set), &set);
		}
	}
	for (i = 0; i < started; i++)
		pthread_join(k->w[i].tid, NULL);
	return rc;
}

void kio_stop(struct kio *k)
{
	atomic_store(&k->stop, 1);
}

void kio_destroy(struct kio *k)
{
	unsigned i, j;

	if (k == NULL)
		return;
	for (i = 0; k->w && i < k->nw; i++) {
		struct worker *w = &k->w[i];
		while (w->conns)
			conn_free(w->conns);
		for (j = 0; j < KIO_MAX_LISTEN; j++)
			if (w->lfd[j] >= 0)
				close(w->lfd[j]);
		if (w->ep >= 0)
			close(w->ep);
		if (w->dirfd >= 0)
			close(w->dirfd);
		if (w->tmpfd >= 0)
			close(w->tmpfd);
		smtp_server_destroy(w->srv);
	}
	free(k->w);
	free(k);
}
