/*
 * relay.c - mxedge-control's relay engine (see relay.h).
 *
 * One libevent loop drives everything: a tick timer tails the spools,
 * starts due retries, commits bounces that became durable and syncs the
 * state log; bufferevents carry the ESMTP client connections.
 *
 * Objects: a message (rmsg) holds its envelope, bytes and per-recipient
 * state; a destination (rdest, one per route host:port) holds a FIFO of
 * jobs (one message's recipients for that route) and at most
 * relay.concurrency connections; a connection (rconn) takes jobs from its
 * destination's FIFO one after another (connection reuse) until the FIFO
 * is empty or relay.max_msgs_per_conn is reached.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "edge_metrics.h"
#include "relay.h"
#include "spool.h"

#define TICK_US 10000          /* spool tail / retry scan period */
#define SRC_MAIN 0             /* the dataplane's spool */
#define SRC_BOUNCE 1           /* our own bounce spool */
#define SRC_STORE 2            /* our store of long-deferred mail */
#define NSRC 3
#define IDX_MOVED UINT32_MAX   /* fkey.idx: the message moved to the store */
#define WRITER_UNKNOWN 0xff    /* fkey.writer of lines without an offset */
#define CMP_CHUNK (1u << 20)   /* bytes copied into the store per call */
#define REPLY_MAX 4096         /* a longer reply line is a protocol error */
/* Messages taken from a spool per read, growing while there is more:
 * small at first so the first connections open after a few messages,
 * four times larger each time because every read re-reads the rest of
 * the segment (spool_reader_poll loads up to the durable offset). */
#define READ_BATCH_MIN 32
#define READ_BATCH_MAX 2048

enum rst {
	R_PENDING,   /* waiting for an attempt (next_try_us) */
	R_INFLIGHT,  /* in a job */
	R_SENT,      /* final: accepted by the next hop */
	R_BOUNCE,    /* failed permanently; bounce not yet written */
	R_BWAIT,     /* bounce written, waiting until it is durable */
	R_FAILED,    /* final: failed, bounce durable (or none owed) */
};

struct rrcpt {
	char *addr, *notify, *orcpt;
	enum rst st;
	char dsn[16];
	char *diag;     /* last reply or reason, for logs and the bounce */
	char *remote;   /* next hop that gave it, or NULL */
};

struct rmsg {
	struct rmsg *next, *prev;
	unsigned src, writer;
	uint64_t qid;
	uint64_t off;              /* BEGIN offset in its writer's stream */
	char id[SPOOL_QID_LEN + 1];
	char *from, *params;
	uint64_t arrival_us, pickup_us;
	unsigned nrcpt, attempts, jobs;
	struct rrcpt *rcpt;
	unsigned char *data;
	size_t len;
	uint64_t next_try_us;      /* 0 = no retry scheduled */
	char *client, *helo;       /* kept for the store copy's envelope */
	uint64_t cmp_off;          /* store copy's BEGIN offset while moving */
	uint64_t bounce_off;       /* bounce commit offset while R_BWAIT */
	bool gone;                 /* removed; freed by the next tick */
	bool hold;                 /* on hold (queue.hold): never tried */
	char bounce_id[SPOOL_QID_LEN + 1];
};

struct rjob {
	struct rjob *next;
	struct rmsg *m;
	struct rdest *d;
	unsigned n;
	unsigned *idx;   /* recipient indices in m */
	int *code;       /* RCPT reply per recipient (0 = none yet) */
	char **text;
	uint64_t queued_us, start_us; /* for delays */
};

struct rdest {
	struct rdest *next;
	char host[254];
	unsigned port;
	enum cfg_tls tls;
	struct rjob *head, *tail;
	size_t queued;
	unsigned nconn, nwait;   /* connections; of them not yet ready */
	unsigned plain_retry;    /* next connections to open without TLS */
};

enum cst { C_CONNECT, C_GREET, C_EHLO, C_HELO, C_MAIL, C_RCPT, C_DATA, C_DOT,
	   C_RSET, C_QUIT, C_STARTTLS, C_TLS };

struct rconn {
	struct rconn *next, *prev;
	struct relay *r;
	struct rdest *d;
	struct bufferevent *bev;
	enum cst st;
	bool ready, pipelining, has_size, eightbit, utf8, dsn;
	bool starttls;           /* the server offered STARTTLS (RFC 3207) */
	bool tls_on;             /* the session is encrypted */
	bool no_tls;             /* opportunistic retry in plaintext */
	bool plain;              /* connected, no TLS filter: direct writes possible */
	bool direct;             /* EV_WRITE off: conn_flush() writes the output */
	const char *fail_dsn;    /* status for conn_fail(); NULL = 4.4.1 */
	uint64_t size_max;
	char peer[340];          /* "host[ip]:port" for logs */
	char remote[260];        /* host name for DSN Remote-MTA */
	struct rjob *job;
	struct rjob *pend;       /* next job, its commands sent behind the data */
	unsigned ri, accepted;   /* next RCPT reply expected; 2xx RCPTs */
	int mail_code;
	char *mail_text;
	unsigned nmsgs;
	uint64_t t_start, t_ready;
	/* reply being read (multi-line replies, RFC 5321 §4.2.1) */
	int code;
	char text[1024];
	size_t tlen;
	char ext[512];           /* EHLO keywords seen, space separated */
};

/* (src, qid, recipient) that reached a final state, from the state log,
 * with where the message sits in its spool (writer, BEGIN offset) so a
 * rewrite of the log can drop what lies below the low-water mark. */
struct fkey {
	uint64_t qid;
	uint64_t off;
	uint32_t idx;
	uint8_t src, used, writer;
	char kind;       /* 'S' sent, 'F' failed, 'M' moved to the store */
	bool rt;         /* added by this process (not read from the log) */
	bool mark;       /* state_rewrite(): an "M" whose store copy is queued */
};

/* Next attempt of a deferred message, from the state log ("T" lines). */
struct tkey {
	uint64_t qid, next_us;
	uint32_t attempts;
	uint8_t src, used;
};

struct relay {
	struct event_base *base;
	const struct cfg *cfg;
	struct cfg_relay rc;
	char hostname[254];
	struct spool_reader *rd[NSRC];
	struct spool *ssp;           /* the store of long-deferred mail */
	struct spool_writer *sw;
	struct rmsg *cmp;            /* being copied into the store */
	struct spool_msg csm;
	size_t cmp_done;
	uint64_t cmp_commit;         /* its END offset once complete, else 0 */
	uint64_t low[NSRC][SPOOL_MAX_WRITERS];  /* below: all final (state log) */
	uint64_t seen[NSRC][SPOOL_MAX_WRITERS]; /* BEGIN offset + 1 read last */
	uint64_t state_bytes;        /* size of the state log */
	uint64_t state_limit;        /* rewrite it beyond this size */
	struct tkey *tk;
	size_t tk_size, tk_used;
	uint64_t stat_compacted;
	struct spool *bsp;           /* bounce spool (we are its writer) */
	struct spool_writer *bw;
	int statefd;
	int auditfd;                 /* append-only audit log of admin changes */
	json_t *routes;              /* live route delta: domain -> route or null */
	bool state_dirty;
	bool bwait;                  /* a message may wait for its bounce's sync */
	char *sbuf;                  /* final-state lines not yet written */
	size_t slen, scap;
	FILE *log;
	struct event *tick;
	struct event *pump;          /* reads the next batch of the spools */
	unsigned batch;              /* messages per source per read */
	time_t log_sec;              /* second of the cached log prefix */
	char log_head[32];           /* "2026-11-29T10:06:12." */
	char log_tail[300];          /* "+00:00 HOST mxedge/" */
	size_t log_hlen, log_tlen;
	char pidtag[16];             /* "[PID]: " */
	size_t pidtag_len;
	struct evhttp *http;
	SSL_CTX *ssl;                /* STARTTLS client context */
	bool ssl_cas;                /* the system's CAs are loaded into it */
	struct rmsg *msgs;           /* all messages in the queue */
	size_t nmsgs;
	struct rdest *dests;
	struct rconn *conns;
	unsigned ticks;
	struct fkey *fin;
	size_t fin_size, fin_used;
	struct fkey *held;           /* messages on hold (idx unused); few */
	size_t nheld;
	uint64_t stat_sent, stat_bounced, stat_deferred, stat_picked, stat_conns;
	unsigned pid;
};

/* ---- time, logs ---------------------------------------------------------- */

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Configured seconds to real microseconds (relay.time_scale). */
static uint64_t scaled_us(const struct relay *r, uint64_t s)
{
	double us = (double)s * 1e6 * r->rc.time_scale;

	return us < 1 ? 1 : (uint64_t)us;
}

/*
 * One mail-log line in the layout log tools parse (PRODUCT.md):
 * "2026-11-29T10:06:12+00:00 HOST mxedge/PROG[PID]: QID: TEXT". The
 * offset carries a colon: that is RFC 3339 (§5.6), and pflogsumm's
 * RFC 3339 pattern requires it.
 */
__attribute__((format(printf, 4, 5)))
static void mlog(struct relay *r, const char *prog, const char *qid, const char *fmt, ...)
{
	char line[2048];
	struct timespec now;
	va_list ap;
	size_t n, k;
	long us;
	int m;

	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec != r->log_sec || r->log_hlen == 0) {
		/* The date, zone and host change at most once a second:
		 * formatted then, not for each of the ~3 lines per message. */
		char z[8];
		struct tm tm;

		localtime_r(&now.tv_sec, &tm);
		r->log_hlen = strftime(r->log_head, sizeof(r->log_head), "%Y-%m-%dT%H:%M:%S.", &tm);
		strftime(z, sizeof(z), "%z", &tm);
		m = snprintf(r->log_tail, sizeof(r->log_tail), "%.3s:%s %s mxedge/", z, z + 3,
			     r->hostname);
		r->log_tlen = m > 0 && (size_t)m < sizeof(r->log_tail) ? (size_t)m : 0;
		r->log_sec = now.tv_sec;
	}
	memcpy(line, r->log_head, r->log_hlen);
	n = r->log_hlen;
	us = now.tv_nsec / 1000;
	for (k = 6; k-- > 0; us /= 10)
		line[n + k] = (char)('0' + us % 10);
	n += 6;
	memcpy(line + n, r->log_tail, r->log_tlen);
	n += r->log_tlen;
	/* "PROG[PID]: QID: " by hand (three lines per message). PROG is
	 * one of ours, QID is SPOOL_QID_LEN; the line has room for both. */
	k = strlen(prog);
	memcpy(line + n, prog, k);
	n += k;
	memcpy(line + n, r->pidtag, r->pidtag_len);
	n += r->pidtag_len;
	/* Connection-level lines (TLS) carry no queue id, as in Postfix. */
	if (qid) {
		k = strnlen(qid, 64);
		memcpy(line + n, qid, k);
		n += k;
		line[n++] = ':';
		line[n++] = ' ';
	}
	if (n < sizeof(line) - 2) {
		va_start(ap, fmt);
		m = vsnprintf(line + n, sizeof(line) - 1 - n, fmt, ap);
		va_end(ap);
		if (m > 0)
			n += (size_t)m;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* Buffered; flushed once per tick (one write for many lines). */
	fwrite(line, 1, n, r->log);
}

/* Postfix-style delay: enough digits to be useful, "0" for nothing.
 * Fixed-point by hand (three calls per recipient line; printf's float
 * formatting was a visible share of the relay's CPU). */
static void fmt_delay(double s, char *out, size_t cap)
{
	char tmp[24];
	unsigned long v;
	unsigned dec, i;
	size_t n = 0;

	if (!(s >= 0.005)) {    /* also negative and NaN */
		snprintf(out, cap, "0");
		return;
	}
	if (s < 0.1) {
		v = (unsigned long)(s * 100 + 0.5);     /* 1..10: 0.01..0.10 */
		dec = 2;
	} else if (s < 10) {
		v = (unsigned long)(s * 10 + 0.5);      /* 1..100: 0.1..10.0 */
		dec = 1;
	} else if (s < 1e9) {
		v = (unsigned long)(s + 0.5);
		dec = 0;
	} else {
		snprintf(out, cap, "%.0f", s);
		return;
	}
	/* Digits from the right, the point after @dec of them, at least
	 * one digit before it. */
	for (i = 0; v || i <= dec; i++) {
		if (i == dec && dec)
			tmp[n++] = '.';
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	}
	for (i = 0; i < n && i + 1 < cap; i++)
		out[i] = tmp[n - 1 - i];
	out[i] = '\0';
}

/* ---- state log ------------------------------------------------------------ */

static uint64_t fkey_hash(unsigned src, uint64_t qid, uint32_t idx)
{
	uint64_t h = (qid ^ ((uint64_t)idx << 40) ^ ((uint64_t)src << 63)) * 0x9E3779B97F4A7C15ULL;

	/* The table is indexed by the low bits: fold the well-mixed high
	 * half in (queue ids that differ only in high bits otherwise
	 * cluster, and linear probing chains grow long). */
	return h ^ (h >> 32);
}

static struct fkey *fin_get(const struct relay *r, unsigned src, uint64_t qid, uint32_t idx)
{
	size_t mask, i;

	if (r->fin_size == 0)
		return NULL;
	mask = r->fin_size - 1;
	for (i = fkey_hash(src, qid, idx) & mask; r->fin[i].used; i = (i + 1) & mask)
		if (r->fin[i].qid == qid && r->fin[i].idx == idx && r->fin[i].src == src)
			return &r->fin[i];
	return NULL;
}

static bool fin_has(const struct relay *r, unsigned src, uint64_t qid, uint32_t idx)
{
	return fin_get(r, src, qid, idx) != NULL;
}

/* Adds @k (its used flag is set here) unless its key is present. */
static int fin_add(struct relay *r, struct fkey k)
{
	unsigned src = k.src;
	uint64_t qid = k.qid;
	uint32_t idx = k.idx;
	size_t mask, i;

	if (fin_has(r, src, qid, idx))
		return 0;
	if ((r->fin_used + 1) * 2 > r->fin_size) {
		size_t ns = r->fin_size ? r->fin_size * 2 : 1024;
		struct fkey *nt = calloc(ns, sizeof(*nt));

		if (nt == NULL)
			return -ENOMEM;
		for (size_t j = 0; j < r->fin_size; j++) {
			if (!r->fin[j].used)
				continue;
			i = fkey_hash(r->fin[j].src, r->fin[j].qid, r->fin[j].idx) & (ns - 1);
			while (nt[i].used)
				i = (i + 1) & (ns - 1);
			nt[i] = r->fin[j];
		}
		free(r->fin);
		r->fin = nt;
		r->fin_size = ns;
	}
	mask = r->fin_size - 1;
	for (i = fkey_hash(src, qid, idx) & mask; r->fin[i].used; i = (i + 1) & mask)
		;
	k.used = 1;
	r->fin[i] = k;
	r->fin_used++;
	return 0;
}

static uint64_t tkey_hash(unsigned src, uint64_t qid)
{
	uint64_t h = (qid + src) * 0x9E3779B97F4A7C15ULL;

	return h ^ (h >> 32);
}

/* Records (or overwrites) the next attempt of (src, qid). */
static int tk_put(struct relay *r, unsigned src, uint64_t qid, uint64_t next_us,
		  uint32_t attempts)
{
	size_t mask, i;

	if ((r->tk_used + 1) * 2 > r->tk_size) {
		size_t ns = r->tk_size ? r->tk_size * 2 : 256;
		struct tkey *nt = calloc(ns, sizeof(*nt));

		if (nt == NULL)
			return -ENOMEM;
		for (size_t j = 0; j < r->tk_size; j++) {
			if (!r->tk[j].used)
				continue;
			i = tkey_hash(r->tk[j].src, r->tk[j].qid) & (ns - 1);
			while (nt[i].used)
				i = (i + 1) & (ns - 1);
			nt[i] = r->tk[j];
		}
		free(r->tk);
		r->tk = nt;
		r->tk_size = ns;
	}
	mask = r->tk_size - 1;
	for (i = tkey_hash(src, qid) & mask; r->tk[i].used; i = (i + 1) & mask)
		if (r->tk[i].qid == qid && r->tk[i].src == src)
			break;
	if (!r->tk[i].used)
		r->tk_used++;
	r->tk[i] = (struct tkey){ qid, next_us, attempts, (uint8_t)src, 1 };
	return 0;
}

static const struct tkey *tk_get(const struct relay *r, unsigned src, uint64_t qid)
{
	size_t mask, i;

	if (r->tk_size == 0)
		return NULL;
	mask = r->tk_size - 1;
	for (i = tkey_hash(src, qid) & mask; r->tk[i].used; i = (i + 1) & mask)
		if (r->tk[i].qid == qid && r->tk[i].src == src)
			return &r->tk[i];
	return NULL;
}

static bool held_has(const struct relay *r, unsigned src, uint64_t qid)
{
	for (size_t i = 0; i < r->nheld; i++)
		if (r->held[i].qid == qid && r->held[i].src == src)
			return true;
	return false;
}

static void held_set(struct relay *r, unsigned src, uint64_t qid, bool on)
{
	for (size_t i = 0; i < r->nheld; i++)
		if (r->held[i].qid == qid && r->held[i].src == src) {
			if (!on)
				r->held[i] = r->held[--r->nheld];
			return;
		}
	if (on) {
		struct fkey *n = realloc(r->held, (r->nheld + 1) * sizeof(*n));

		if (n == NULL)
			return;
		r->held = n;
		r->held[r->nheld++] = (struct fkey){ .qid = qid, .src = (uint8_t)src, .used = 1 };
	}
}

/*
 * Reads the state log; a torn last line (no newline, from a crash
 * mid-write) and unreadable lines are skipped. Lines:
 *   S|F SRC QID IDX [W OFF]  recipient IDX final: sent, failed (bounce durable)
 *   H|R SRC QID              put on hold, released
 *   T SRC QID NEXT_US N      deferred: next attempt (wall clock), attempts so far
 *   M SRC QID W OFF          moved into the store (SRC_STORE, same QID)
 *   L SRC W OFF              every message of writer W below OFF is final
 * W OFF is where the message's BEGIN record sits in its spool.
 */
static int state_load(struct relay *r)
{
	char line[160];
	FILE *f;
	int fd = dup(r->statefd);

	if (fd < 0)
		return -errno;
	f = fdopen(fd, "r");
	if (f == NULL) {
		close(fd);
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		char kind, id[SPOOL_QID_LEN + 2];
		unsigned src, idx, w, n;
		uint64_t qid, off, next;

		if (strchr(line, '\n') == NULL)
			continue;
		if (line[0] == 'L' && sscanf(line, "L %u %u %" SCNu64, &src, &w, &off) == 3 &&
		    src < NSRC && w < SPOOL_MAX_WRITERS) {
			if (off > r->low[src][w])
				r->low[src][w] = off;
			continue;
		}
		if (line[0] == 'T' &&
		    sscanf(line, "T %u %12s %" SCNu64 " %u", &src, id, &next, &n) == 4 &&
		    src < NSRC && spool_qid_parse(id, &qid) == 0) {
			if (tk_put(r, src, qid, next, n) < 0)
				goto nomem;
			continue;
		}
		if (line[0] == 'M' &&
		    sscanf(line, "M %u %12s %u %" SCNu64, &src, id, &w, &off) == 4 &&
		    src < NSRC && w < SPOOL_MAX_WRITERS && spool_qid_parse(id, &qid) == 0) {
			if (fin_add(r, (struct fkey){ .qid = qid, .off = off, .idx = IDX_MOVED,
						     .src = (uint8_t)src, .writer = (uint8_t)w,
						     .kind = 'M' }) < 0)
				goto nomem;
			continue;
		}
		/* "H|R SRC QID": put on hold, released (queue.hold/release). */
		if ((line[0] == 'H' || line[0] == 'R') &&
		    sscanf(line, "%c %u %12s", &kind, &src, id) == 3 && src < NSRC &&
		    spool_qid_parse(id, &qid) == 0) {
			held_set(r, src, qid, kind == 'H');
			continue;
		}
		n = (unsigned)sscanf(line, "%c %u %12s %u %u %" SCNu64, &kind, &src, id, &idx, &w,
				     &off);
		if ((n != 4 && n != 6) || (kind != 'S' && kind != 'F') || src >= NSRC ||
		    idx == IDX_MOVED || spool_qid_parse(id, &qid) < 0)
			continue;
		/* Lines written before offsets were recorded are kept forever. */
		if (n == 4 || w >= SPOOL_MAX_WRITERS) {
			w = WRITER_UNKNOWN;
			off = 0;
		}
		if (fin_add(r, (struct fkey){ .qid = qid, .off = off, .idx = idx,
					     .src = (uint8_t)src, .writer = (uint8_t)w,
					     .kind = kind }) < 0)
			goto nomem;
	}
	fclose(f);
	for (unsigned s = 0; s < NSRC; s++)
		memcpy(r->seen[s], r->low[s], sizeof(r->seen[s]));
	return 0;
nomem:
	fclose(f);
	return -ENOMEM;
}

/* Writes and syncs the final states gathered since the last call: one
 * write and one fdatasync per tick (group commit). */
static void state_flush(struct relay *r)
{
	size_t done = 0;

	while (done < r->slen) {
		ssize_t n = write(r->statefd, r->sbuf + done, r->slen - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "mxedge-control: state log write: %s\n", strerror(errno));
			break;
		}
		done += (size_t)n;
	}
	r->state_bytes += done;
	r->slen = 0;
	if (r->state_dirty && fdatasync(r->statefd) < 0)
		fprintf(stderr, "mxedge-control: state log sync: %s\n", strerror(errno));
	r->state_dirty = false;
}

static void state_line(struct relay *r, const char *line, int n);

/* Records a final state (written by the next tick). */
static void state_final(struct relay *r, struct rmsg *m, unsigned idx, bool sent)
{
	char line[96];
	int n = snprintf(line, sizeof(line), "%c %u %s %u %u %" PRIu64 "\n", sent ? 'S' : 'F',
			 m->src, m->id, idx, m->writer, m->off);

	state_line(r, line, n);
	(void)fin_add(r, (struct fkey){ .qid = m->qid, .off = m->off, .idx = idx,
				       .src = (uint8_t)m->src, .writer = (uint8_t)m->writer,
				       .kind = sent ? 'S' : 'F', .rt = true });
}

/* Appends one line to the state log buffer (written by the next tick). */
static void state_line(struct relay *r, const char *line, int n)
{
	if (r->slen + (size_t)n > r->scap) {
		size_t nc = r->scap ? r->scap * 2 : 65536;
		char *nb = realloc(r->sbuf, nc);

		if (nb == NULL) {
			state_flush(r); /* write what we have, then retry */
			nb = r->sbuf;
			nc = r->scap;
		}
		r->sbuf = nb;
		r->scap = nc;
	}
	if (r->slen + (size_t)n <= r->scap) {
		memcpy(r->sbuf + r->slen, line, (size_t)n);
		r->slen += (size_t)n;
	}
	r->state_dirty = true;
}

/* ---- messages ------------------------------------------------------------- */

static void msg_free(struct relay *r, struct rmsg *m)
{
	if (r->cmp == m) {
		/* Being copied into the store: an unfinished copy is
		 * abandoned; a finished one without its "M" line is an
		 * orphan that the next start ignores. */
		if (r->cmp_commit == 0)
			(void)spool_abort(r->sw, &r->csm);
		r->cmp = NULL;
		r->cmp_commit = 0;
	}
	if (m->prev)
		m->prev->next = m->next;
	else
		r->msgs = m->next;
	if (m->next)
		m->next->prev = m->prev;
	r->nmsgs--;
	for (unsigned i = 0; i < m->nrcpt; i++) {
		free(m->rcpt[i].addr);
		free(m->rcpt[i].notify);
		free(m->rcpt[i].orcpt);
		free(m->rcpt[i].diag);
		free(m->rcpt[i].remote);
	}
	free(m->rcpt);
	free(m->from);
	free(m->params);
	free(m->client);
	free(m->helo);
	free(m->data);
	free(m);
}

static void rcpt_set(struct rrcpt *rc, const char *dsn, const char *diag, const char *remote)
{
	snprintf(rc->dsn, sizeof(rc->dsn), "%s", dsn);
	free(rc->diag);
	rc->diag = strdup(diag ? diag : "");
	free(rc->remote);
	rc->remote = remote ? strdup(remote) : NULL;
}

/* Does the sender want a failure notice for @rc? RFC 3461 §4.1: NOTIFY
 * without FAILURE (or NEVER) means no. */
static bool wants_failure_dsn(const struct rmsg *m, const struct rrcpt *rc)
{
	if (m->from[0] == '\0')
		return false; /* RFC 5321 §4.5.5: never bounce a bounce */
	return rc->notify == NULL || strcasestr(rc->notify, "FAILURE") != NULL;
}

/* A MAIL FROM parameter of the message (case-insensitive KEY=), or NULL;
 * copies the value into @out. */
static const char *mail_param(const struct rmsg *m, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	const char *p = m->params;

	while (p && *p) {
		const char *e;

		p += strspn(p, " ");
		e = p + strcspn(p, " ");
		if ((size_t)(e - p) >= kl && strncasecmp(p, key, kl) == 0 &&
		    (p[kl] == '=' || p + kl == e)) {
			const char *v = p[kl] == '=' ? p + kl + 1 : e;

			snprintf(out, cap, "%.*s", (int)(e - v), v);
			return out;
		}
		p = e;
	}
	return NULL;
}

static void msg_settle(struct relay *r, struct rmsg *m);
static void dest_kick(struct relay *r, struct rdest *d);

/* Writes one bounce for every R_BOUNCE recipient of @m that is owed one
 * (others become R_FAILED at once). */
static void msg_bounce(struct relay *r, struct rmsg *m)
{
	struct relay_dsn_rcpt *dr = calloc(m->nrcpt, sizeof(*dr));
	struct spool_envelope env;
	struct spool_rcpt to;
	struct spool_msg sm;
	unsigned n = 0, i;
	uint64_t qid, off;
	size_t blen = 0;
	char *body = NULL, ret[16];
	int rc;

	for (i = 0; i < m->nrcpt; i++) {
		struct rrcpt *rr = &m->rcpt[i];

		if (rr->st != R_BOUNCE)
			continue;
		if (!wants_failure_dsn(m, rr)) {
			rr->st = R_FAILED;
			state_final(r, m, i, false);
			continue;
		}
		if (dr)
			dr[n++] = (struct relay_dsn_rcpt){ rr->addr, rr->orcpt, rr->dsn,
							   rr->remote, rr->diag };
	}
	if (n == 0 || dr == NULL)
		goto out;
	qid = spool_qid_new(r->bw, now_us() / 1000);
	spool_qid_format(qid, m->bounce_id);
	body = relay_bounce_build(r->hostname, m->id, m->from, m->arrival_us, dr, n,
				  m->data, m->len,
				  mail_param(m, "RET", ret, sizeof(ret)) && !strcasecmp(ret, "FULL"),
				  time(NULL), &blen);
	if (body == NULL)
		goto out; /* retried at the next settle */
	memset(&env, 0, sizeof(env));
	env.arrival_us = now_us();
	env.client_addr = "127.0.0.1";
	env.helo = r->hostname;
	env.mail_from = "";       /* RFC 3464 §2: notices go from <> */
	env.mail_params = "";
	to = (struct spool_rcpt){ m->from, NULL, NULL };
	env.nrcpt = 1;
	env.rcpts = &to;
	rc = spool_begin(r->bw, &sm, qid, &env);
	if (rc == 0)
		rc = spool_data(r->bw, &sm, body, blen);
	if (rc == 0)
		rc = spool_end(r->bw, &sm, &off);
	if (rc) {
		if (rc != -EAGAIN)
			fprintf(stderr, "mxedge-control: bounce spool: %s\n", strerror(-rc));
		goto out; /* the recipients stay R_BOUNCE: tried again */
	}
	for (i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].st == R_BOUNCE)
			m->rcpt[i].st = R_BWAIT;
	m->bounce_off = off;
	r->bwait = true;
out:
	free(body);
	free(dr);
}

/* Called when @m has no job left: expiry, bounces, retry or removal. */
static void msg_settle(struct relay *r, struct rmsg *m)
{
	uint64_t now = now_us();
	bool pending = false, waiting = false;
	unsigned i;

	if (m->jobs)
		return;
	for (i = 0; i < m->nrcpt; i++)
		pending |= m->rcpt[i].st == R_PENDING;
	/* RFC 5321 §4.5.4.1: give up after the queue lifetime. */
	if (pending && now >= m->arrival_us + scaled_us(r, r->rc.lifetime_s)) {
		mlog(r, "qmgr", m->id, "from=<%s>, status=expired, returned to sender", m->from);
		for (i = 0; i < m->nrcpt; i++) {
			struct rrcpt *rr = &m->rcpt[i];

			if (rr->st != R_PENDING)
				continue;
			/* RFC 3463: 4.4.7 delivery time expired */
			snprintf(rr->dsn, sizeof(rr->dsn), "4.4.7");
			if (rr->diag == NULL || !rr->diag[0])
				rcpt_set(rr, "4.4.7", "delivery time expired", NULL);
			rr->st = R_BOUNCE;
		}
		pending = false;
	}
	for (i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].st == R_BOUNCE) {
			msg_bounce(r, m);
			break;
		}
	for (i = 0; i < m->nrcpt; i++)
		waiting |= m->rcpt[i].st == R_BOUNCE || m->rcpt[i].st == R_BWAIT;
	if (pending) {
		uint64_t s = relay_backoff_s(&r->rc, m->attempts ? m->attempts : 1,
					     (uint32_t)random());
		char line[96];
		int n;

		m->next_try_us = now + scaled_us(r, s);
		/* Persisted so that a restart keeps the backoff instead of
		 * trying every deferred message at once. */
		n = snprintf(line, sizeof(line), "T %u %s %" PRIu64 " %u\n", m->src, m->id,
			     m->next_try_us, m->attempts);
		state_line(r, line, n);
	} else {
		m->next_try_us = 0;
	}
	if (!pending && !waiting) {
		/* Freed by the tick: callers up the stack may still hold
		 * @m (a connection failure settles many messages at once). */
		mlog(r, "qmgr", m->id, "removed");
		m->gone = true;
	}
}

/* ---- destinations and jobs ------------------------------------------------ */

static struct rdest *dest_get(struct relay *r, const struct cfg_route *rt)
{
	struct rdest *d;

	for (d = r->dests; d; d = d->next)
		if (d->port == rt->port && d->tls == rt->tls && strcasecmp(d->host, rt->host) == 0)
			return d;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	snprintf(d->host, sizeof(d->host), "%s", rt->host);
	d->port = rt->port;
	d->tls = rt->tls;
	d->next = r->dests;
	r->dests = d;
	return d;
}

static void job_free(struct rjob *j)
{
	if (j == NULL)
		return;
	for (unsigned i = 0; i < j->n; i++)
		free(j->text[i]);
	free(j->text);
	free(j->code);
	free(j->idx);
	free(j);
}

/* Logs and applies one recipient's outcome: class of @code decides. */
static void rcpt_result(struct relay *r, struct rmsg *m, unsigned idx, const char *relay,
			const struct rjob *j, int code, const char *dsn, const char *why,
			const char *remote, uint64_t t_conn, uint64_t t_ready, uint64_t t_end)
{
	struct rrcpt *rr = &m->rcpt[idx];
	char dl[16], a[16], b[16], c[16], d[16];
	const char *status;
	double total, da, dc = 0, dd = 0, db;

	/* delays=a/b/c/d (Postfix): before the queue manager, in it
	 * (including time deferred), connection setup (0 on a reused
	 * connection), transmission; they add up to delay. */
	total = t_end > m->arrival_us ? (double)(t_end - m->arrival_us) / 1e6 : 0;
	da = m->pickup_us > m->arrival_us ? (double)(m->pickup_us - m->arrival_us) / 1e6 : 0;
	if (j && t_conn && t_ready > t_conn && t_conn >= j->queued_us)
		dc = (double)(t_ready - t_conn) / 1e6;
	if (j && j->start_us && t_end > j->start_us)
		dd = (double)(t_end - j->start_us) / 1e6;
	db = total - da - dc - dd;
	fmt_delay(total, dl, sizeof(dl));
	fmt_delay(da, a, sizeof(a));
	fmt_delay(db > 0 ? db : 0, b, sizeof(b));
	fmt_delay(dc, c, sizeof(c));
	fmt_delay(dd, d, sizeof(d));
	rcpt_set(rr, dsn, why, remote);
	if (code / 100 == 2) {
		rr->st = R_SENT;
		status = "sent";
		r->stat_sent++;
		state_final(r, m, idx, true);
	} else if (code / 100 == 5) {
		rr->st = R_BOUNCE;
		status = "bounced";
		r->stat_bounced++;
	} else {
		rr->st = R_PENDING;
		status = "deferred";
		r->stat_deferred++;
	}
	mlog(r, "smtp", m->id, "to=<%s>, relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s, "
	     "status=%s (%s)", rr->addr, relay, dl, a, b, c, d, rr->dsn, status, why);
}

/* A job ends: every recipient still in flight gets @code/@why (used for
 * connection failures; normal results were applied one by one). */
static void job_end(struct relay *r, struct rjob *j, const char *relay, int code,
		    const char *why, const char *fdsn, uint64_t t_conn, uint64_t t_ready)
{
	struct rmsg *m = j->m;
	char dsn[16];

	for (unsigned k = 0; k < j->n; k++) {
		if (m->rcpt[j->idx[k]].st != R_INFLIGHT)
			continue;
		const char *said = strstr(why, " said: ");

		/* The next hop's own enhanced code when it gave one; 4.4.1
		 * (RFC 3463: no answer from host) when it gave none. */
		if (fdsn)
			snprintf(dsn, sizeof(dsn), "%s", fdsn);
		else if (said && strlen(said) > 11)
			relay_dsn_of(code, said + 11, dsn);
		else
			snprintf(dsn, sizeof(dsn), "4.4.1");
		rcpt_result(r, m, j->idx[k], relay, j, code ? code : 451, dsn, why, NULL,
			    t_conn, t_ready, now_us());
	}
	m->jobs--;
	job_free(j);
	msg_settle(r, m);
}

static const char *const tls_names[] = { "none", "opportunistic", "required" };

/* The route of @domain now: an operator's live change (route.set/del,
 * kept in control.json) wins over the file. Read at every attempt, so a
 * change applies to the next try of queued mail while connections already
 * open finish on the old route. Returns false when there is none. */
static bool route_of(struct relay *r, const char *domain, struct cfg_route *out)
{
	const struct cfg_domain *dom;
	char key[254];
	json_t *v;
	size_t i;

	for (i = 0; domain[i] && i + 1 < sizeof(key); i++)
		key[i] = (char)tolower((unsigned char)domain[i]);
	key[i] = '\0';
	/* a name too long to be a domain is never in the delta */
	v = r->routes && !domain[i] ? json_object_get(r->routes, key) : NULL;
	if (v) {
		if (!json_is_object(v))
			return false; /* removed by an operator */
		const char *tls = json_string_value(json_object_get(v, "tls"));

		snprintf(out->host, sizeof(out->host), "%s",
			 json_string_value(json_object_get(v, "host")));
		out->port = (unsigned)json_integer_value(json_object_get(v, "port"));
		out->tls = CFG_TLS_OPPORTUNISTIC;
		for (unsigned t = 0; tls && t < 3; t++)
			if (strcmp(tls, tls_names[t]) == 0)
				out->tls = (enum cfg_tls)t;
		return true;
	}
	dom = cfg_domain_find(r->cfg, domain);
	if (dom == NULL || !dom->route.host[0])
		return false;
	*out = dom->route;
	return true;
}

/* Creates the jobs of @m's pending recipients, grouped by route. */
static void msg_dispatch(struct relay *r, struct rmsg *m)
{
	uint64_t now = now_us();
	struct rjob **mine = calloc(m->nrcpt ? m->nrcpt : 1, sizeof(*mine));
	unsigned i, nmine = 0;

	if (mine == NULL)
		return; /* stays as it is; retried at the next scan */
	m->next_try_us = 0;
	m->attempts++;
	for (i = 0; i < m->nrcpt; i++) {
		struct rrcpt *rr = &m->rcpt[i];
		const char *at = strrchr(rr->addr, '@');
		struct cfg_route rt;
		struct rdest *d;
		struct rjob *j;

		if (rr->st != R_PENDING)
			continue;
		if (!at || !route_of(r, at + 1, &rt)) {
			/* Mail to a domain without a route cannot go anywhere
			 * until one is configured; a bounce (from <>) that
			 * cannot be routed is dropped, never re-bounced. */
			rr->st = R_INFLIGHT;
			rcpt_result(r, m, i, "none", NULL, m->from[0] ? 451 : 550,
				    m->from[0] ? "4.4.4" : "5.4.4",
				    "no relay route for the recipient's domain", NULL, 0, 0, now);
			continue;
		}
		d = dest_get(r, &rt);
		if (d == NULL)
			continue; /* out of memory: stays pending, retried */
		j = NULL;
		for (unsigned k = 0; k < nmine; k++)
			if (mine[k]->d == d)
				j = mine[k];
		if (j == NULL) {
			j = calloc(1, sizeof(*j));
			if (j == NULL)
				continue;
			j->idx = calloc(m->nrcpt, sizeof(*j->idx));
			j->code = calloc(m->nrcpt, sizeof(*j->code));
			j->text = calloc(m->nrcpt, sizeof(*j->text));
			if (!j->idx || !j->code || !j->text) {
				job_free(j);
				continue;
			}
			j->m = m;
			j->d = d;
			j->queued_us = now;
			if (d->tail)
				d->tail->next = j;
			else
				d->head = j;
			d->tail = j;
			d->queued++;
			m->jobs++;
			mine[nmine++] = j;
		}
		j->idx[j->n++] = i;
		rr->st = R_INFLIGHT;
	}
	m->jobs++; /* hold @m while kicking: a failure can settle it */
	for (i = 0; i < nmine; i++)
		dest_kick(r, mine[i]->d);
	free(mine);
	m->jobs--;
	if (m->jobs == 0)
		msg_settle(r, m);
}

/* ---- the ESMTP client ----------------------------------------------------- */

static void conn_send(struct rconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_send(struct rconn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
}

static void conn_free(struct rconn *c)
{
	struct relay *r = c->r;
	struct rdest *d = c->d;

	if (!c->ready)
		d->nwait--;
	d->nconn--;
	if (c->prev)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	bufferevent_free(c->bev);
	free(c->mail_text);
	free(c);
	dest_kick(r, d);
}

/* The connection failed (or was refused by its greeting): the job in hand
 * is deferred, and if the next hop never became ready on any connection,
 * so is every job queued for it (the destination is down; Postfix's
 * queue manager does the same), which keeps a dead destination from
 * costing one connect per queued message. */
static void conn_fail(struct rconn *c, int code, const char *why)
{
	struct relay *r = c->r;
	struct rdest *d = c->d;
	uint64_t t = now_us();
	const char *relay = c->ready || c->st > C_CONNECT ? c->peer : "none";

	if (c->job) {
		job_end(r, c->job, relay, code, why, c->fail_dsn, c->t_start, c->t_ready);
		c->job = NULL;
	}
	if (c->pend) {
		job_end(r, c->pend, relay, code, why, c->fail_dsn, c->t_start, c->t_ready);
		c->pend = NULL;
	}
	/* Only when no other connection to it works: one failed connect
	 * (a per-client limit, say) must not hold up a working destination. */
	if (!c->ready && d->nconn == d->nwait) {
		while (d->head) {
			struct rjob *j = d->head;

			d->head = j->next;
			d->queued--;
			job_end(r, j, relay, code, why, c->fail_dsn, c->t_start, t);
		}
		d->tail = NULL;
	}
	conn_free(c);
}

static void conn_next(struct rconn *c);

/* Appends the message with dot-stuffing (RFC 5321 §4.5.2). */
static int conn_send_body(struct rconn *c, const struct rmsg *m)
{
	/* Reserving the worst case (len * 1.5 + 5) lets the stuffing run
	 * as one pass straight into the output buffer. */
	size_t bound = relay_dot_stuff_bound(m->len);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct evbuffer_iovec v;

	if (evbuffer_reserve_space(out, (ev_ssize_t)bound, &v, 1) < 1 || v.iov_len < bound)
		return -ENOMEM;
	v.iov_len = relay_dot_stuff(m->data, m->len, v.iov_base, bound);
	return evbuffer_commit_space(out, &v, 1) == 0 ? 0 : -ENOMEM;
}

static void send_rcpt(struct rconn *c, const struct rjob *j, unsigned k)
{
	struct rrcpt *rr = &j->m->rcpt[j->idx[k]];

	/* RFC 3461 §4: NOTIFY and ORCPT pass through when DSN is offered. */
	conn_send(c, "RCPT TO:<%s>%s%s%s%s\r\n", rr->addr,
		  c->dsn && rr->notify ? " NOTIFY=" : "", c->dsn && rr->notify ? rr->notify : "",
		  c->dsn && rr->orcpt ? " ORCPT=" : "", c->dsn && rr->orcpt ? rr->orcpt : "");
}

/* Can @m go over @c at all? If not, fails the recipients of @j with the
 * reason (RFC 6531 §3.2: SMTPUTF8 needs the server's support; RFC 1870
 * §6: never send what the server declared too big) and returns false. */
static bool txn_possible(struct rconn *c, struct rjob *j, bool fail)
{
	struct rmsg *m = j->m;
	const char *dsn = NULL, *why = NULL;
	int code = 0;
	char v[256];

	if (!c->utf8 && mail_param(m, "SMTPUTF8", v, sizeof(v)) != NULL) {
		code = 550;
		dsn = "5.6.7";
		why = "SMTPUTF8 is required, but was not offered by the host";
	} else if (c->has_size && c->size_max && m->len > c->size_max) {
		code = 552;
		dsn = "5.3.4";
		why = "message size exceeds the limit of the next hop";
	}
	if (why == NULL)
		return true;
	for (unsigned k = 0; fail && k < j->n; k++)
		rcpt_result(c->r, m, j->idx[k], c->peer, j, code, dsn, why, c->remote,
			    c->t_start, c->t_ready, now_us());
	return false;
}

/* Sends MAIL FROM for @j and, when the server pipelines (RFC 2920 §3.1:
 * MAIL, RCPTs and DATA in one group), its RCPTs and DATA. */
static void txn_send(struct rconn *c, struct rjob *j)
{
	struct rmsg *m = j->m;
	char v[256], ret[32] = "", envid[160] = "", body[32] = "";
	bool utf8 = mail_param(m, "SMTPUTF8", v, sizeof(v)) != NULL;

	j->start_us = now_us();
	if (c->dsn) {
		if (mail_param(m, "RET", v, sizeof(v)))
			snprintf(ret, sizeof(ret), " RET=%.20s", v);
		if (mail_param(m, "ENVID", v, sizeof(v)))
			snprintf(envid, sizeof(envid), " ENVID=%.140s", v);
	}
	if (c->eightbit && mail_param(m, "BODY", v, sizeof(v)))
		snprintf(body, sizeof(body), " BODY=%.12s", v);
	if (c->has_size)
		conn_send(c, "MAIL FROM:<%s> SIZE=%zu%s%s%s%s\r\n", m->from, m->len, body,
			  utf8 ? " SMTPUTF8" : "", ret, envid);
	else
		conn_send(c, "MAIL FROM:<%s>%s%s%s%s\r\n", m->from, body,
			  utf8 ? " SMTPUTF8" : "", ret, envid);
	if (c->pipelining) {
		for (unsigned k = 0; k < j->n; k++)
			send_rcpt(c, j, k);
		conn_send(c, "DATA\r\n");
	}
}

/* Starts the transaction for c->job. */
static void conn_start(struct rconn *c)
{
	c->job->start_us = now_us();
	if (!txn_possible(c, c->job, true))
		goto done;
	c->ri = c->accepted = 0;
	c->mail_code = 0;
	txn_send(c, c->job);
	c->st = C_MAIL;
	return;
done:
	c->job->m->jobs--;
	{
		struct rmsg *mm = c->job->m;

		job_free(c->job);
		c->job = NULL;
		msg_settle(c->r, mm);
	}
	conn_next(c);
}

/*
 * RFC 2920 §3.1: the message content may be the first "command" of a
 * group, so the next job's MAIL, RCPTs and DATA go out right behind the
 * end of data, in the same write: one round trip per message on a reused
 * connection instead of two. Their replies follow the one to the dot.
 */
static void conn_prefetch(struct rconn *c)
{
	struct rdest *d = c->d;
	struct rjob *j = d->head;

	if (!c->pipelining || j == NULL || c->pend ||
	    c->nmsgs >= c->r->rc.max_msgs_per_conn || !txn_possible(c, j, false))
		return; /* conn_next() takes it (or says why) after the dot */
	d->head = j->next;
	if (d->head == NULL)
		d->tail = NULL;
	d->queued--;
	j->next = NULL;
	c->nmsgs++;
	c->pend = j;
	txn_send(c, j);
}

/* Takes the next job of the destination, or says goodbye. */
static void conn_next(struct rconn *c)
{
	struct rdest *d = c->d;

	if (d->head == NULL || c->nmsgs >= c->r->rc.max_msgs_per_conn) {
		conn_send(c, "QUIT\r\n");
		c->st = C_QUIT;
		return;
	}
	c->job = d->head;
	d->head = c->job->next;
	if (d->head == NULL)
		d->tail = NULL;
	d->queued--;
	c->job->next = NULL;
	c->nmsgs++;
	conn_start(c);
}

/* Applies the transaction's outcome per recipient; @code/@text is the
 * reply to the end of data (or to DATA when it failed). */
static void conn_txn_done(struct rconn *c, int code, const char *text)
{
	struct rjob *j = c->job;
	struct rmsg *m = j->m;
	uint64_t t = now_us();
	char dsn[16], why[1400];

	for (unsigned k = 0; k < j->n; k++) {
		int rc = c->mail_code / 100 != 2 ? c->mail_code : j->code[k];
		const char *rt = c->mail_code / 100 != 2 ? c->mail_text : j->text[k];
		const char *cmd = c->mail_code / 100 != 2 ? "MAIL FROM" : "RCPT TO";

		if (rc / 100 == 2) {
			rc = code;
			rt = text;
			cmd = "end of DATA";
		}
		if (rc == 0) {
			rc = 451;
			rt = "451 4.4.2 no reply";
		}
		relay_dsn_of(rc, rt + (strlen(rt) > 4 ? 4 : strlen(rt)), dsn);
		if (rc / 100 == 2)
			snprintf(why, sizeof(why), "%s", rt);
		else
			snprintf(why, sizeof(why), "host %s said: %s (in reply to %s command)",
				 c->remote, rt, cmd);
		rcpt_result(c->r, m, j->idx[k], c->peer, j, rc, dsn, why, c->remote,
			    c->t_start, c->t_ready, t);
		/* The bounce's Diagnostic-Code is the reply itself. */
		free(m->rcpt[j->idx[k]].diag);
		m->rcpt[j->idx[k]].diag = strdup(rt);
	}
	m->jobs--;
	job_free(j);
	c->job = NULL;
	msg_settle(c->r, m);
}

static void ehlo_parse(struct rconn *c, const char *line)
{
	char kw[64];
	size_t n = strcspn(line, " ");

	if (n == 0 || n >= sizeof(kw))
		return;
	memcpy(kw, line, n);
	kw[n] = '\0';
	if (!strcasecmp(kw, "PIPELINING"))
		c->pipelining = true;
	else if (!strcasecmp(kw, "8BITMIME"))
		c->eightbit = true;
	else if (!strcasecmp(kw, "SMTPUTF8"))
		c->utf8 = true;
	else if (!strcasecmp(kw, "DSN"))
		c->dsn = true;
	else if (!strcasecmp(kw, "STARTTLS"))
		c->starttls = true;
	else if (!strcasecmp(kw, "SIZE")) {
		c->has_size = true;
		c->size_max = strtoull(line + n, NULL, 10);
	} else
		return;
	if (strlen(c->ext) + n + 2 < sizeof(c->ext)) {
		strcat(c->ext, c->ext[0] ? " " : "");
		strcat(c->ext, kw);
	}
}

/* The session can carry mail: take the first job. */
static void conn_ready(struct rconn *c)
{
	c->ready = true;
	c->d->nwait--;
	c->t_ready = now_us();
	conn_next(c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* The STARTTLS client context, created at the first use; NULL when
 * OpenSSL cannot make one. */
static SSL_CTX *tls_ctx(struct relay *r)
{
	if (r->ssl)
		return r->ssl;
	r->ssl = SSL_CTX_new(TLS_client_method());
	if (r->ssl && !SSL_CTX_set_min_proto_version(r->ssl, (int)r->rc.tls_min_version)) {
		SSL_CTX_free(r->ssl);
		r->ssl = NULL;
	}
	if (r->ssl == NULL) {
		ERR_clear_error();
		return NULL;
	}
	/* Not enforced (a later issue brings verification and DANE); the
	 * system's CAs are loaded at the first STARTTLS (conn_tls_start). */
	SSL_CTX_set_verify(r->ssl, SSL_VERIFY_NONE, NULL);
	return r->ssl;
}

/* After the server's 220 to STARTTLS: the TLS handshake, over the same
 * socket (a bufferevent filter). Returns false when the connection is gone. */
static bool conn_tls_start(struct rconn *c)
{
	struct relay *r = c->r;
	struct timeval tv = { (time_t)r->rc.timeout_s, 0 };
	struct bufferevent *tb;
	unsigned char a6[16];
	SSL *ssl;

	/* Plaintext the server sent after its 220 would be read as if it
	 * came over TLS (the STARTTLS command injection, CVE-2011-0411):
	 * whatever arrived before the handshake is discarded. */
	evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
	if (tls_ctx(r) == NULL)
		goto fail;
	if (!r->ssl_cas) {
		/* Once, and only when TLS is used: the system's CAs make the
		 * logged verification result meaningful. */
		if (!SSL_CTX_set_default_verify_paths(r->ssl))
			ERR_clear_error();
		r->ssl_cas = true;
	}
	ssl = SSL_new(r->ssl);
	if (ssl == NULL)
		goto fail;
	/* RFC 6066 §3: SNI carries host names, never address literals. */
	if (inet_pton(AF_INET, c->d->host, a6) != 1 && inet_pton(AF_INET6, c->d->host, a6) != 1)
		SSL_set_tlsext_host_name(ssl, c->d->host);
	/* The filter writes through the plain bufferevent: it must write
	 * on its own again. */
	c->plain = false;
	if (c->direct) {
		c->direct = false;
		bufferevent_enable(c->bev, EV_WRITE);
	}
	tb = bufferevent_openssl_filter_new(r->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
					    BEV_OPT_CLOSE_ON_FREE);
	if (tb == NULL) {
		SSL_free(ssl);
		goto fail;
	}
	c->bev = tb; /* owns the plain one now */
	/* Servers often close without close_notify after QUIT. */
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	bufferevent_setcb(tb, conn_read_cb, NULL, conn_event_cb, c);
	bufferevent_set_timeouts(tb, &tv, &tv);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
	c->st = C_TLS;
	return true;
fail:
	c->fail_dsn = "4.7.5";
	conn_fail(c, 451, "cannot set up a TLS session (out of memory)");
	return false;
}

/* The handshake is done: log it the way Postfix does, forget what the
 * server said in clear and say EHLO again (RFC 3207 §4.2). */
static void conn_tls_up(struct rconn *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	const SSL_CIPHER *ci = SSL_get_current_cipher(ssl);
	X509 *cert = SSL_get_peer_certificate(ssl);
	long vr = SSL_get_verify_result(ssl);
	int alg = 0, bits = ci ? SSL_CIPHER_get_bits(ci, &alg) : 0;

	/* Verification is not enforced yet (certificates and DANE are a
	 * later issue), but its result is logged so operators see it. */
	if (cert && vr != X509_V_OK)
		mlog(c->r, "smtp", NULL, "certificate verification failed for %s: %s",
		     c->peer, X509_verify_cert_error_string(vr));
	mlog(c->r, "smtp", NULL, "%s TLS connection established to %s: %s with cipher %s "
	     "(%d/%d bits)", cert == NULL ? "Anonymous" : vr == X509_V_OK ? "Trusted" :
	     "Untrusted", c->peer, SSL_get_version(ssl), ci ? SSL_CIPHER_get_name(ci) : "?",
	     bits, alg);
	X509_free(cert);
	c->tls_on = true;
	c->pipelining = c->has_size = c->eightbit = c->utf8 = c->dsn = c->starttls = false;
	c->size_max = 0;
	c->ext[0] = '\0';
	conn_send(c, "EHLO %s\r\n", c->r->hostname);
	c->st = C_EHLO;
}

/* One complete reply: @code and its text (lines joined by spaces).
 * Returns false when the connection is gone. */
static bool conn_reply(struct rconn *c, int code, const char *text)
{
	char full[1100];
	bool ok = code / 100 == 2, mail_ok;

	snprintf(full, sizeof(full), "%d %s", code, text);
	switch (c->st) {
	case C_CONNECT:
	case C_GREET:
		if (code != 220) {
			char why[1600];

			snprintf(why, sizeof(why), "host %s refused to talk to me: %s",
				 c->peer, full);
			conn_fail(c, code / 100 == 5 ? 451 : code, why);
			return false;
		}
		conn_send(c, "EHLO %s\r\n", c->r->hostname);
		c->st = C_EHLO;
		return true;
	case C_EHLO:
	case C_HELO:
		if (!ok) {
			if (c->st == C_EHLO && code / 100 == 5) {
				/* RFC 5321 §3.2: fall back to HELO. */
				conn_send(c, "HELO %s\r\n", c->r->hostname);
				c->st = C_HELO;
				return true;
			}
			char why[1600];

			snprintf(why, sizeof(why), "host %s said: %s (in reply to %s command)",
				 c->peer, full, c->st == C_EHLO ? "EHLO" : "HELO");
			conn_fail(c, code / 100 == 5 ? 451 : code, why);
			return false;
		}
		if (!c->tls_on && !c->no_tls && c->d->tls != CFG_TLS_NONE) {
			if (c->starttls && c->st == C_EHLO) {
				conn_send(c, "STARTTLS\r\n");
				c->st = C_STARTTLS;
				return true;
			}
			if (c->d->tls == CFG_TLS_REQUIRED) {
				/* Never in clear what the customer wants
				 * encrypted: deferred (and in the end
				 * expired), like Postfix's "encrypt" level. */
				char why[600];

				snprintf(why, sizeof(why), "TLS is required, but was not "
					 "offered by host %s", c->peer);
				c->fail_dsn = "4.7.4";
				conn_fail(c, 451, why);
				return false;
			}
		}
		conn_ready(c);
		return true;
	case C_STARTTLS:
		if (code != 220) {
			char why[1600];

			if (c->d->tls != CFG_TLS_REQUIRED) {
				/* Opportunistic: the session is still good
				 * (RFC 3207 §4: a refusal changes nothing), go
				 * on in clear. */
				conn_ready(c);
				return true;
			}
			snprintf(why, sizeof(why), "TLS is required, but host %s refused to "
				 "start TLS: %s", c->peer, full);
			c->fail_dsn = "4.7.4";
			conn_fail(c, 451, why);
			return false;
		}
		return conn_tls_start(c);
	case C_TLS:
		return true; /* nothing is read in clear once the handshake began */
	case C_MAIL:
		c->mail_code = code;
		free(c->mail_text);
		c->mail_text = strdup(full);
		if (c->pipelining) {
			c->st = c->job->n ? C_RCPT : C_DATA;
			return true;
		}
		if (!ok) {
			conn_txn_done(c, code, full);
			conn_send(c, "RSET\r\n");
			c->st = C_RSET;
			return true;
		}
		send_rcpt(c, c->job, 0);
		c->st = C_RCPT;
		return true;
	case C_RCPT:
		c->job->code[c->ri] = code;
		free(c->job->text[c->ri]);
		c->job->text[c->ri] = strdup(full);
		if (ok && c->mail_code / 100 == 2)
			c->accepted++;
		c->ri++;
		if (c->ri < c->job->n) {
			if (!c->pipelining)
				send_rcpt(c, c->job, c->ri);
			return true;
		}
		if (c->pipelining) {
			c->st = C_DATA;
		} else if (c->accepted) {
			conn_send(c, "DATA\r\n");
			c->st = C_DATA;
		} else {
			conn_txn_done(c, code, full);
			conn_send(c, "RSET\r\n");
			c->st = C_RSET;
		}
		return true;
	case C_DATA:
		if (code == 354 && c->accepted && c->mail_code / 100 == 2) {
			if (conn_send_body(c, c->job->m) < 0) {
				conn_fail(c, 451, "out of memory sending the message");
				return false;
			}
			c->st = C_DOT;
			conn_prefetch(c);
			return true;
		}
		if (code == 354) {
			/* RFC 2920 §3.1 says a server rejects DATA when no
			 * RCPT succeeded; this one did not. Ending the data
			 * now would send an empty message: hang up. */
			conn_fail(c, 451, "354 to DATA without an accepted recipient");
			return false;
		}
		/* DATA refused: a transaction whose MAIL was accepted is
		 * still open (RFC 5321 §4.1.1.5), so RSET before the next
		 * MAIL, or it would get 503. */
		mail_ok = c->mail_code / 100 == 2;
		conn_txn_done(c, code, full);
		if (mail_ok) {
			conn_send(c, "RSET\r\n");
			c->st = C_RSET;
		} else {
			conn_next(c);
		}
		return true;
	case C_DOT:
		/* The transaction is over whatever the reply (RFC 5321
		 * §4.1.1.4); the next one may already be on its way. */
		conn_txn_done(c, code, full);
		if (c->pend) {
			c->job = c->pend;
			c->pend = NULL;
			c->ri = c->accepted = 0;
			c->mail_code = 0;
			c->st = C_MAIL;
			return true;
		}
		conn_next(c);
		return true;
	case C_RSET:
		conn_next(c);
		return true;
	case C_QUIT:
		conn_free(c);
		return false;
	}
	return true;
}

/*
 * Direct writes on plain connections: what a reply made us send goes out
 * with one writev at the end of the read callback, instead of arming
 * EPOLLOUT, returning to epoll_wait and disarming it again (two epoll_ctl
 * and a loop round per write, most of the relay's syscalls in a drain).
 * When the socket cannot take everything, the bufferevent's own write
 * event takes over until the output is empty again.
 */
static void conn_direct(struct rconn *c)
{
	if (c->plain && !c->direct &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		bufferevent_disable(c->bev, EV_WRITE);
		c->direct = true;
	}
}

static void conn_flush(struct rconn *c)
{
	struct evbuffer *out;

	if (!c->direct)
		return;
	out = bufferevent_get_output(c->bev);
	while (evbuffer_get_length(out) > 0)
		if (evbuffer_write(out, bufferevent_getfd(c->bev)) <= 0)
			break;
	if (evbuffer_get_length(out) > 0) {
		/* Full, or failed: the bufferevent writes the rest when
		 * the socket allows, or reports the error (conn_event_cb). */
		c->direct = false;
		bufferevent_enable(c->bev, EV_WRITE);
	}
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct rconn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t n;

	conn_direct(c);
	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
		int code;
		bool last;

		/* RFC 5321 §4.2: three digits, then '-' (more) or SP/end. */
		if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
		    line[2] < '0' || line[2] > '9' || (n > 3 && line[3] != ' ' && line[3] != '-')) {
			free(line);
			conn_fail(c, 451, "malformed reply from the next hop");
			return;
		}
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		last = n == 3 || line[3] == ' ';
		if (c->tlen == 0)
			c->code = code;
		if (c->st == C_EHLO && c->tlen > 0 && n > 4)
			ehlo_parse(c, line + 4);
		if (n > 4 && c->tlen + n < sizeof(c->text) - 2) {
			if (c->tlen)
				c->text[c->tlen++] = ' ';
			memcpy(c->text + c->tlen, line + 4, n - 4);
			c->tlen += n - 4;
		}
		c->text[c->tlen] = '\0';
		if (c->tlen == 0 && !last) {
			c->text[0] = ' ';  /* an empty first line still starts a reply */
			c->tlen = 1;
		}
		free(line);
		if (last) {
			char text[sizeof(c->text)];

			snprintf(text, sizeof(text), "%s", c->text);
			c->tlen = 0;
			c->text[0] = '\0';
			if (!conn_reply(c, c->code, text) || c->bev != bev)
				return; /* the connection is gone, or now speaks TLS */
		}
	}
	if (evbuffer_get_length(in) > REPLY_MAX) {
		conn_fail(c, 451, "reply line too long from the next hop");
		return;
	}
	conn_flush(c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct rconn *c = arg;
	char why[700];
	static const char *const names[] = { "connect", "greeting", "EHLO", "HELO",
		"MAIL FROM", "RCPT TO", "DATA", "end of DATA", "RSET", "QUIT", "STARTTLS",
		"TLS handshake" };

	if (what & BEV_EVENT_CONNECTED) {
		if (c->st == C_TLS) {
			conn_tls_up(c);
		} else {
			c->st = C_GREET;
			c->plain = true;
		}
		return;
	}
	if (c->st == C_TLS) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		char ebuf[256];

		if (e)
			ERR_error_string_n(e, ebuf, sizeof(ebuf));
		else
			snprintf(ebuf, sizeof(ebuf), "%s", what & BEV_EVENT_TIMEOUT ?
				 "timed out" : "lost connection");
		snprintf(why, sizeof(why), "Cannot start TLS: handshake failure with %s: %s",
			 c->peer, ebuf);
		if (c->d->tls == CFG_TLS_OPPORTUNISTIC) {
			/* As Postfix does at level "may" (smtp_connect.c,
			 * tls_retry_plain): the same server again at once,
			 * on a new connection, without TLS. */
			mlog(c->r, "smtp", NULL, "%s; retrying in plaintext", why);
			c->d->plain_retry++;
			conn_free(c);
			return;
		}
		c->fail_dsn = "4.7.5"; /* RFC 3463: cryptographic failure */
		conn_fail(c, 451, why);
		return;
	}
	if (c->st == C_QUIT) {
		conn_free(c);
		return;
	}
	if (c->st == C_CONNECT)
		snprintf(why, sizeof(why), "connect to %s: %s", c->peer,
			 what & BEV_EVENT_TIMEOUT ? "Connection timed out" :
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	else
		snprintf(why, sizeof(why), "%s with %s while waiting for the reply to %s",
			 what & BEV_EVENT_TIMEOUT ? "conversation timed out" : "lost connection",
			 c->peer, names[c->st]);
	conn_fail(c, what & BEV_EVENT_TIMEOUT ? 451 : 0, why);
}

static void conn_open(struct relay *r, struct rdest *d)
{
	struct addrinfo hints, *ai = NULL;
	struct rconn *c;
	char port[8], ip[64];
	struct timeval tv = { (time_t)r->rc.timeout_s, 0 };
	int rc;

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return;
	c->r = r;
	c->d = d;
	c->t_start = now_us();
	if (d->plain_retry) {
		c->no_tls = true;
		d->plain_retry--;
	}
	r->stat_conns++;
	c->next = r->conns;
	if (r->conns)
		r->conns->prev = c;
	r->conns = c;
	snprintf(port, sizeof(port), "%u", d->port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	/* Routes are normally IP addresses; a name is resolved here, once
	 * per connection (blocking, but only the control plane waits). */
	rc = getaddrinfo(d->host, port, &hints, &ai);
	d->nconn++;
	d->nwait++;
	c->bev = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		d->nconn--;
		d->nwait--;
		r->conns = c->next;
		if (r->conns)
			r->conns->prev = NULL;
		free(c);
		if (ai)
			freeaddrinfo(ai);
		return;
	}
	bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (rc != 0) {
		char why[400];

		snprintf(c->peer, sizeof(c->peer), "%s:%u", d->host, d->port);
		snprintf(why, sizeof(why), "Host or domain name not found. Name service error "
			 "for name=%s: %s", d->host, gai_strerror(rc));
		conn_fail(c, 451, why);
		return;
	}
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST))
		snprintf(ip, sizeof(ip), "?");
	snprintf(c->peer, sizeof(c->peer), "%s[%s]:%u", d->host, ip, d->port);
	snprintf(c->remote, sizeof(c->remote), "%s", d->host);
	if (bufferevent_socket_connect(c->bev, ai->ai_addr, (int)ai->ai_addrlen) < 0) {
		char why[400];

		snprintf(why, sizeof(why), "connect to %s: %s", c->peer, strerror(errno));
		freeaddrinfo(ai);
		conn_fail(c, 0, why);
		return;
	}
	freeaddrinfo(ai);
}

/* Opens connections while jobs wait and the concurrency limit allows. */
static void dest_kick(struct relay *r, struct rdest *d)
{
	while (d->head && d->nwait < d->queued && d->nconn < r->rc.concurrency) {
		unsigned before = d->nconn;

		conn_open(r, d);
		if (d->nconn == before)
			break; /* failed at once (and deferred what was queued) */
	}
}

/* ---- spool tailing, the tick ---------------------------------------------- */

struct pick_ctx {
	struct relay *r;
	unsigned src;
	unsigned n, max;     /* messages offered so far, the batch */
};

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int pick(const struct spool_message *sm, struct pick_ctx *pc);

/* A batch ends after pc->max messages: the positive return stops the
 * poll after this message (spool.h: it is not offered again), so the
 * loop gets back to the connections before the rest is read. */
static int on_spooled(const struct spool_message *sm, void *arg)
{
	struct pick_ctx *pc = arg;
	int rc = pick(sm, pc);

	if (rc == 0 && ++pc->n >= pc->max)
		return 1;
	return rc;
}

static int pick(const struct spool_message *sm, struct pick_ctx *pc)
{
	struct relay *r = pc->r;
	const struct tkey *tk;
	struct fkey *mv;
	struct rmsg *m;
	unsigned i, final = 0;

	if (sm->writer < SPOOL_MAX_WRITERS) {
		/* Below the low-water mark everything is final (the state
		 * log was rewritten without those messages' lines). */
		if (sm->off < r->low[pc->src][sm->writer])
			return 0;
		if (sm->off + 1 > r->seen[pc->src][sm->writer])
			r->seen[pc->src][sm->writer] = sm->off + 1;
	}
	/* Moved into the store: that copy is the one to deliver. */
	if (pc->src != SRC_STORE && fin_has(r, pc->src, sm->qid, IDX_MOVED))
		return 0;
	if (pc->src == SRC_STORE) {
		/* A store copy counts only once its move is recorded, and
		 * only at start-up: at run time the message it copies is
		 * already in memory. */
		mv = fin_get(r, SRC_MAIN, sm->qid, IDX_MOVED);
		if (mv == NULL || mv->rt)
			return 0;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->src = pc->src;
	m->writer = sm->writer;
	m->off = sm->off;
	m->qid = sm->qid;
	spool_qid_format(sm->qid, m->id);
	m->from = strdup(sm->env.mail_from);
	m->params = strdup(sm->env.mail_params ? sm->env.mail_params : "");
	m->client = strdup(sm->env.client_addr ? sm->env.client_addr : "");
	m->helo = strdup(sm->env.helo ? sm->env.helo : "");
	m->arrival_us = sm->env.arrival_us;
	m->pickup_us = now_us();
	m->nrcpt = sm->env.nrcpt;
	m->rcpt = calloc(m->nrcpt ? m->nrcpt : 1, sizeof(*m->rcpt));
	m->data = malloc(sm->len ? sm->len : 1);
	m->len = sm->len;
	if (!m->from || !m->params || !m->client || !m->helo || !m->rcpt || !m->data)
		goto nomem;
	memcpy(m->data, sm->data, sm->len);
	for (i = 0; i < m->nrcpt; i++) {
		struct rrcpt *rr = &m->rcpt[i];

		rr->addr = strdup(sm->env.rcpts[i].addr);
		rr->notify = dup_or_null(sm->env.rcpts[i].notify);
		rr->orcpt = dup_or_null(sm->env.rcpts[i].orcpt);
		if (rr->addr == NULL)
			goto nomem;
		/* Recipients finished before a restart are not tried again. */
		if (fin_has(r, m->src, m->qid, i)) {
			rr->st = R_SENT;
			final++;
		}
	}
	m->next = r->msgs;
	if (r->msgs)
		r->msgs->prev = m;
	r->msgs = m;
	r->nmsgs++;
	if (final == m->nrcpt) {
		msg_free(r, m);
		return 0;
	}
	r->stat_picked++;
	tk = tk_get(r, m->src, m->qid);
	if (tk) {
		/* Deferred before a restart: keep its place in the backoff. */
		m->attempts = tk->attempts;
		if (tk->next_us > now_us())
			m->next_try_us = tk->next_us;
	}
	if (held_has(r, m->src, m->qid)) {
		m->hold = true; /* held before a restart: stays held */
		mlog(r, "qmgr", m->id, "from=<%s>, size=%zu, nrcpt=%u (queue hold)", m->from,
		     m->len, m->nrcpt);
		return 0;
	}
	if (m->next_try_us)
		return 0; /* tried by the retry scan when its time comes */
	mlog(r, "qmgr", m->id, "from=<%s>, size=%zu, nrcpt=%u (queue active)", m->from,
	     m->len, m->nrcpt);
	msg_dispatch(r, m);
	return 0;
nomem:
	for (i = 0; m->rcpt && i < m->nrcpt; i++) {
		free(m->rcpt[i].addr);
		free(m->rcpt[i].notify);
		free(m->rcpt[i].orcpt);
	}
	free(m->rcpt);
	free(m->from);
	free(m->params);
	free(m->client);
	free(m->helo);
	free(m->data);
	free(m);
	return -ENOMEM;
}

/* The lowest BEGIN offset of every queued message per source and writer
 * (UINT64_MAX: none): it pins its segment and all later ones. */
static void pending_low(const struct relay *r, uint64_t keep[NSRC][SPOOL_MAX_WRITERS])
{
	for (unsigned s = 0; s < NSRC; s++)
		for (unsigned w = 0; w < SPOOL_MAX_WRITERS; w++)
			keep[s][w] = UINT64_MAX;
	for (const struct rmsg *m = r->msgs; m; m = m->next)
		if (!m->gone && m->writer < SPOOL_MAX_WRITERS && m->off < keep[m->src][m->writer])
			keep[m->src][m->writer] = m->off;
	/* A copy into the store not yet recorded is not final either. */
	if (r->cmp && r->cmp->cmp_off < keep[SRC_STORE][0])
		keep[SRC_STORE][0] = r->cmp->cmp_off;
}

/* Deletes spool segments that hold nothing pending any more (once a
 * second). */
static void release_segments(struct relay *r)
{
	static uint64_t keep[NSRC][SPOOL_MAX_WRITERS];

	pending_low(r, keep);
	for (unsigned s = 0; s < NSRC; s++) {
		int n = spool_reader_release(r->rd[s], keep[s]);

		if (n < 0)
			fprintf(stderr, "mxedge-control: releasing spool segments: %s\n",
				strerror(-n));
		/* Segments went: the low-water marks moved, so lines a
		 * rewrite had to keep (mail then still queued) may now go.
		 * Without this a log that stopped growing after a rewrite
		 * that kept them would stay at its size. */
		if (n > 0)
			r->state_limit = r->rc.state_log_max;
	}
}

/* ---- the store: long-deferred mail leaves the spool ------------------------
 *
 * A segment stays on disk while any message in it is pending, so one
 * message deferred for days would pin every later segment of its writer
 * (gigabytes). A message deferred for relay.compact_after is therefore
 * copied, with the same queue id, into the relay's own store
 * (state_dir/store, the spool format); once the copy is durable an "M" line
 * (plus the recipients already final, its retry time and hold) is synced
 * to the state log, and from then on the copy is the message: the original
 * no longer pins its segment. One message is copied at a time, in pieces,
 * so a large one never stalls the loop or overflows the store's ring. */

static bool compactable(const struct relay *r, const struct rmsg *m, uint64_t now)
{
	return m->src == SRC_MAIN && !m->gone && (m->next_try_us || m->hold) &&
	       now > m->arrival_us &&
	       now - m->arrival_us >= scaled_us(r, r->rc.compact_after_s);
}

/* Starts copying @m: its BEGIN record. Returns 0, -EAGAIN (ring full), or
 * another -errno. */
static int compact_begin(struct relay *r, struct rmsg *m)
{
	struct spool_writer_stats st;
	struct spool_envelope env;
	struct spool_rcpt *to = calloc(m->nrcpt ? m->nrcpt : 1, sizeof(*to));
	int rc;

	if (to == NULL)
		return -ENOMEM;
	for (unsigned i = 0; i < m->nrcpt; i++)
		to[i] = (struct spool_rcpt){ m->rcpt[i].addr, m->rcpt[i].notify,
					     m->rcpt[i].orcpt };
	memset(&env, 0, sizeof(env));
	env.arrival_us = m->arrival_us;
	env.client_addr = m->client;
	env.helo = m->helo;
	env.mail_from = m->from;
	env.mail_params = m->params;
	env.nrcpt = m->nrcpt;
	env.rcpts = to;
	/* Everything appended so far is published: the BEGIN goes here. */
	spool_writer_stats(r->sw, &st);
	rc = spool_begin(r->sw, &r->csm, m->qid, &env);
	free(to);
	if (rc == 0) {
		m->cmp_off = st.appended;
		r->cmp = m;
		r->cmp_done = 0;
		r->cmp_commit = 0;
	}
	return rc;
}

/* The copy of r->cmp is durable: record the move and switch to it. */
static void compact_commit(struct relay *r)
{
	struct rmsg *m = r->cmp;
	char line[128];
	int n;

	n = snprintf(line, sizeof(line), "M %u %s %u %" PRIu64 "\n", m->src, m->id, m->writer,
		     m->off);
	state_line(r, line, n);
	(void)fin_add(r, (struct fkey){ .qid = m->qid, .off = m->off, .idx = IDX_MOVED,
				       .src = (uint8_t)m->src, .writer = (uint8_t)m->writer,
				       .kind = 'M', .rt = true });
	m->src = SRC_STORE;
	m->writer = 0;
	m->off = m->cmp_off;
	for (unsigned i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].st == R_SENT || m->rcpt[i].st == R_FAILED)
			state_final(r, m, i, m->rcpt[i].st == R_SENT);
	if (m->hold) {
		n = snprintf(line, sizeof(line), "H %u %s\n", m->src, m->id);
		state_line(r, line, n);
		held_set(r, m->src, m->qid, true);
	}
	if (m->next_try_us > 1) {
		n = snprintf(line, sizeof(line), "T %u %s %" PRIu64 " %u\n", m->src, m->id,
			     m->next_try_us, m->attempts);
		state_line(r, line, n);
	}
	/* Synced before the original's segment can be released. */
	state_flush(r);
	r->stat_compacted++;
	mlog(r, "qmgr", m->id, "moved from the spool to the relay store after %.0f s in the queue",
	     (double)(now_us() - m->arrival_us) / 1e6);
	r->cmp = NULL;
	r->cmp_commit = 0;
}

/* One step of compaction (called once a second). */
static void compact_tick(struct relay *r)
{
	uint64_t now = now_us();
	int rc = 0;

	if (r->cmp == NULL) {
		struct rmsg *m;

		for (m = r->msgs; m; m = m->next)
			if (compactable(r, m, now))
				break;
		if (m == NULL || (rc = compact_begin(r, m)) != 0)
			goto out;
	}
	while (r->cmp_commit == 0 && r->cmp_done < r->cmp->len) {
		size_t n = r->cmp->len - r->cmp_done;

		if (n > CMP_CHUNK)
			n = CMP_CHUNK;
		if ((rc = spool_data(r->sw, &r->csm, r->cmp->data + r->cmp_done, n)) != 0)
			goto out;
		r->cmp_done += n;
	}
	if (r->cmp_commit == 0 && (rc = spool_end(r->sw, &r->csm, &r->cmp_commit)) != 0)
		goto out;
	if (spool_durable(r->sw, r->cmp_commit))
		compact_commit(r);
out:
	if (rc && rc != -EAGAIN) {
		fprintf(stderr, "mxedge-control: relay store: %s\n", strerror(-rc));
		if (r->cmp) {
			(void)spool_abort(r->sw, &r->csm);
			r->cmp = NULL;
		}
	}
}

/* ---- state log rewrite ------------------------------------------------------
 *
 * The log only grows (a line per final recipient, retry, hold). Past
 * relay.state_log_max it is rewritten with what a restart still needs: per
 * source and writer a low-water mark ("L": every message below it is final,
 * so a restart skips those), the lines of messages at or above it, holds,
 * and the next attempt of each deferred message. Written to a temporary
 * file, synced, renamed over the log (atomic), directory synced. */
static int state_rewrite(struct relay *r)
{
	static uint64_t low[NSRC][SPOOL_MAX_WRITERS];
	char path[512], tmp[520];
	struct fkey *keep = NULL;
	size_t nkeep = 0, i;
	uint64_t before = r->state_bytes;
	FILE *f = NULL;
	int fd = -1, dfd = -1, e = 0;

	state_flush(r);
	pending_low(r, low);
	for (unsigned s = 0; s < NSRC; s++)
		for (unsigned w = 0; w < SPOOL_MAX_WRITERS; w++)
			if (r->seen[s][w] < low[s][w])
				low[s][w] = r->seen[s][w]; /* not read yet: not final */
	snprintf(path, sizeof(path), "%s/state.log", r->rc.state_dir);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		e = errno;
		goto fail;
	}
	fd = -1;
	keep = calloc(r->fin_used ? r->fin_used : 1, sizeof(*keep));
	if (keep == NULL) {
		e = ENOMEM;
		goto fail;
	}
	for (unsigned s = 0; s < NSRC; s++)
		for (unsigned w = 0; w < SPOOL_MAX_WRITERS; w++)
			if (low[s][w])
				fprintf(f, "L %u %u %" PRIu64 "\n", s, w, low[s][w]);
	/* An "M" line stays while its store copy is queued (a restart
	 * accepts a store copy only with one) or while the original is
	 * above the low-water mark (a restart skips it only with one). */
	for (struct rmsg *m = r->msgs; m; m = m->next) {
		struct fkey *k = m->src == SRC_STORE ? fin_get(r, SRC_MAIN, m->qid, IDX_MOVED) : NULL;

		if (k)
			k->mark = true;
	}
	for (i = 0; i < r->fin_size; i++) {
		struct fkey *k = &r->fin[i];
		char id[SPOOL_QID_LEN + 1];
		bool mark = k->mark;

		k->mark = false;
		if (!k->used || (!mark && k->writer != WRITER_UNKNOWN &&
				 k->off < low[k->src][k->writer]))
			continue;
		keep[nkeep++] = *k;
		spool_qid_format(k->qid, id);
		if (k->kind == 'M')
			fprintf(f, "M %u %s %u %" PRIu64 "\n", k->src, id, k->writer, k->off);
		else if (k->writer == WRITER_UNKNOWN)
			fprintf(f, "%c %u %s %u\n", k->kind, k->src, id, k->idx);
		else
			fprintf(f, "%c %u %s %u %u %" PRIu64 "\n", k->kind, k->src, id, k->idx,
				k->writer, k->off);
	}
	for (i = 0; i < r->nheld; i++) {
		char id[SPOOL_QID_LEN + 1];

		spool_qid_format(r->held[i].qid, id);
		fprintf(f, "H %u %s\n", r->held[i].src, id);
	}
	/* Retry times read at start-up for messages perhaps not read back
	 * yet (while still in the future), then the queue's own, which
	 * come later and so win on the next load. */
	for (i = 0; i < r->tk_size; i++) {
		char id[SPOOL_QID_LEN + 1];

		if (!r->tk[i].used || r->tk[i].next_us <= now_us())
			continue;
		spool_qid_format(r->tk[i].qid, id);
		fprintf(f, "T %u %s %" PRIu64 " %u\n", r->tk[i].src, id, r->tk[i].next_us,
			r->tk[i].attempts);
	}
	for (struct rmsg *m = r->msgs; m; m = m->next)
		if (!m->gone && m->next_try_us > 1)
			fprintf(f, "T %u %s %" PRIu64 " %u\n", m->src, m->id, m->next_try_us,
				m->attempts);
	if (fflush(f) != 0 || fdatasync(fileno(f)) < 0) {
		e = errno;
		goto fail;
	}
	fd = open(tmp, O_RDWR | O_APPEND | O_CLOEXEC);
	if (fd < 0 || rename(tmp, path) < 0) {
		e = errno;
		goto fail;
	}
	dfd = open(r->rc.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	r->state_bytes = (uint64_t)ftell(f);
	fclose(f);
	close(r->statefd);
	r->statefd = fd;
	/* The in-memory table shrinks the same way. */
	memset(r->fin, 0, r->fin_size * sizeof(*r->fin));
	r->fin_used = 0;
	for (i = 0; i < nkeep; i++)
		(void)fin_add(r, keep[i]);
	free(keep);
	memcpy(r->low, low, sizeof(low));
	/* What cannot be dropped yet (mail still queued) must not make us
	 * rewrite at every tick: the next rewrite waits for the log to
	 * double. */
	r->state_limit = r->state_bytes * 2 > r->rc.state_log_max ? r->state_bytes * 2 :
			 r->rc.state_log_max;
	fprintf(stderr, "mxedge-control: state log rewritten: %" PRIu64 " -> %" PRIu64
		" bytes\n", before, r->state_bytes);
	return 0;
fail:
	fprintf(stderr, "mxedge-control: rewriting %s: %s\n", path, strerror(e));
	r->state_limit = r->state_bytes * 2; /* not again at the next tick */
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(keep);
	return -e;
}

/*
 * Reads up to r->batch newly committed messages from each spool and
 * dispatches them. When a source had more, the batch grows and the pump
 * event runs again as soon as the loop has served the connections, so a
 * deep spool (a restart, a drain) is read while the first messages are
 * already being sent instead of in one long blocking pass.
 */
static void spool_pump(struct relay *r)
{
	static const struct timeval zero = { 0, 0 };
	bool more = false;

	for (unsigned s = 0; s < NSRC; s++) {
		struct pick_ctx pc = { r, s, 0, r->batch };
		int n = r->rd[s] ? spool_reader_poll(r->rd[s], on_spooled, &pc) : 0;

		if (n < 0)
			fprintf(stderr, "mxedge-control: reading spool %u: %s\n", s,
				strerror(-n));
		else if (pc.n >= pc.max)
			more = true;
	}
	if (!more) {
		r->batch = READ_BATCH_MIN;
		return;
	}
	if (r->batch < READ_BATCH_MAX)
		r->batch *= 4;
	evtimer_add(r->pump, &zero);
}

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	spool_pump(arg);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	uint64_t now = now_us();
	struct rmsg *m, *next;
	struct timeval tv = { 0, TICK_US };
	bool scan;

	(void)fd;
	(void)what;
	if (!evtimer_pending(r->pump, NULL))
		spool_pump(r);
	/* Output queued outside a read callback (none is expected) still
	 * goes out within a tick. */
	for (struct rconn *c = r->conns; c; c = c->next)
		conn_flush(c);
	/* The queue is walked on the retry scan's ticks, and on the others
	 * only while a bounce may be waiting for its sync: walking a deep
	 * queue (a drain) every 10 ms was a visible share of the CPU. */
	scan = r->ticks % 10 == 0 || r->bwait;
	r->bwait = false;
	for (m = scan ? r->msgs : NULL; m; m = next) {
		next = m->next;
		if (m->gone) {
			msg_free(r, m);
			continue;
		}
		if (m->bounce_off && spool_durable(r->bw, m->bounce_off)) {
			/* Only now is the failure final: the sender will hear. */
			mlog(r, "bounce", m->id, "sender non-delivery notification: %s",
			     m->bounce_id);
			m->bounce_off = 0;
			for (unsigned i = 0; i < m->nrcpt; i++)
				if (m->rcpt[i].st == R_BWAIT) {
					m->rcpt[i].st = R_FAILED;
					state_final(r, m, i, false);
				}
			if (m->jobs == 0 && m->next_try_us == 0) {
				msg_settle(r, m);
				continue;
			}
		}
		if (m->bounce_off)
			r->bwait = true;
		/* The retry scan is linear in the queue: every 10th tick. */
		if (r->ticks % 10 || m->hold)
			continue;
		if (m->jobs == 0 && m->next_try_us && m->next_try_us <= now) {
			msg_dispatch(r, m);
		} else if (m->jobs == 0 && m->bounce_off == 0) {
			for (unsigned i = 0; i < m->nrcpt; i++)
				if (m->rcpt[i].st == R_BOUNCE) { /* spool was full */
					msg_settle(r, m);
					break;
				}
		}
	}
	r->ticks++;
	/* Final states are durable before any segment they free is
	 * deleted: one write and one fdatasync for everything this tick
	 * gathered (group commit). */
	if (r->state_dirty)
		state_flush(r);
	if (r->ticks % 100 == 1) {
		compact_tick(r);
		release_segments(r);
		if (r->state_dirty)
			state_flush(r);
	}
	/* Rewritten only when the retry scan is not due: no message is
	 * being settled, every line is in r->fin / the queue. */
	if (r->state_bytes > r->state_limit && r->ticks % 10 == 5)
		(void)state_rewrite(r);
	fflush(r->log);
	evtimer_add(r->tick, &tv);
}

/* ---- audit log ------------------------------------------------------------ */

/* Appends one change made through the control socket: when, who (peer
 * uid/pid from SO_PEERCRED), what, old and new value; synced at once
 * (changes are rare, and an audit trail that loses the last entry on a
 * crash is no audit trail). One JSON object per line. */
static void audit_kv(struct relay *r, const struct ctl_peer *peer, const char *cmd,
		     const char *key, const char *val, const char *old, const char *new)
{
	char ts[40];
	struct timespec now;
	struct tm tm;
	json_t *o;
	char *line;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	o = json_pack("{s:s, s:i, s:i, s:s, s:s?, s:s, s:s}", "time", ts, "uid",
		      peer ? (int)peer->uid : -1, "pid", peer ? (int)peer->pid : -1, "cmd", cmd,
		      key, val, "old", old, "new", new);
	line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (line) {
		size_t n = strlen(line);

		line[n] = '\n'; /* json_dumps' NUL becomes the line end */
		if (write(r->auditfd, line, n + 1) != (ssize_t)(n + 1) || fdatasync(r->auditfd) < 0)
			fprintf(stderr, "mxedge-control: audit log: %s\n", strerror(errno));
	}
	free(line);
	json_decref(o);
}

static void audit(struct relay *r, const struct ctl_peer *peer, const char *cmd,
		  const char *qid, const char *old, const char *new)
{
	audit_kv(r, peer, cmd, "qid", qid, old, new);
}

static int h_audit(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		   const char **code, char **msg)
{
	struct relay *r = ctx;
	json_int_t limit = 50;
	json_t *a, *lim = json_object_get(args, "limit");
	char path[512], line[4096];
	FILE *f;

	(void)peer;
	if (lim && (!json_is_integer(lim) || json_integer_value(lim) < 1)) {
		*code = "bad_args";
		*msg = strdup("limit must be a positive integer");
		return -1;
	}
	if (lim)
		limit = json_integer_value(lim);
	snprintf(path, sizeof(path), "%s/audit.log", r->rc.state_dir);
	f = fopen(path, "re");
	a = json_array();
	while (f && a && fgets(line, sizeof(line), f)) {
		json_t *e = json_loads(line, 0, NULL);

		if (e == NULL)
			continue; /* a torn last line after a crash */
		json_array_append_new(a, e);
		if ((json_int_t)json_array_size(a) > limit)
			json_array_remove(a, 0); /* keep the newest @limit */
	}
	if (f)
		fclose(f);
	*res = a;
	return 0;
}

/* ---- control commands ----------------------------------------------------- */

static const char *st_name(enum rst s)
{
	static const char *const n[] = { "deferred", "active", "sent", "bouncing",
					 "bouncing", "failed" };
	return n[s];
}

static json_t *msg_json(const struct rmsg *m, bool detail)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:i, s:I, s:i, s:b}", "qid", m->id,
			      "from", m->from, "size", (json_int_t)m->len, "nrcpt", (int)m->nrcpt,
			      "age_s", (json_int_t)((now_us() - m->arrival_us) / 1000000),
			      "attempts", (int)m->attempts, "hold", m->hold);

	if (o && detail) {
		json_t *a = json_array();

		for (unsigned i = 0; a && i < m->nrcpt; i++)
			json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s}",
				"to", m->rcpt[i].addr, "state", st_name(m->rcpt[i].st),
				"dsn", m->rcpt[i].dsn, "reason",
				m->rcpt[i].diag ? m->rcpt[i].diag : ""));
		json_object_set_new(o, "recipients", a);
	}
	return o;
}

static struct rmsg *msg_by_id(struct relay *r, json_t *args, const char **code, char **msg)
{
	const char *id = json_string_value(json_object_get(args, "qid"));
	uint64_t q;

	if (id == NULL || spool_qid_parse(id, &q) < 0) {
		*code = "bad_args";
		*msg = strdup("qid=QUEUEID (11 characters) is required");
		return NULL;
	}
	for (struct rmsg *m = r->msgs; m; m = m->next)
		if (m->qid == q && !m->gone)
			return m;
	*code = "not_found";
	*msg = strdup("no such message in the queue");
	return NULL;
}

static int h_list(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		  const char **code, char **msg)
{
	struct relay *r = ctx;
	json_t *a = json_array();

	(void)peer, (void)args, (void)code, (void)msg;
	for (struct rmsg *m = r->msgs; a && m; m = m->next)
		if (!m->gone)
			json_array_append_new(a, msg_json(m, false));
	*res = a;
	return 0;
}

static int h_show(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		  const char **code, char **msg)
{
	struct rmsg *m = msg_by_id(ctx, args, code, msg);

	(void)peer;
	if (m == NULL)
		return -1;
	*res = msg_json(m, true);
	return 0;
}

static int h_flush(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		   const char **code, char **msg)
{
	struct relay *r = ctx;
	int n = 0;

	(void)args, (void)code, (void)msg;
	/* Deferred mail is tried at the next tick, whatever its backoff. */
	for (struct rmsg *m = r->msgs; m; m = m->next)
		if (m->next_try_us && !m->gone) {
			m->next_try_us = 1;
			n++;
		}
	{
		char old[32];

		snprintf(old, sizeof(old), "%d deferred", n);
		audit(r, peer, "queue.flush", NULL, old, "retry now");
	}
	*res = json_pack("{s:i}", "flushed", n);
	return 0;
}

static int h_delete(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		    const char **code, char **msg)
{
	struct relay *r = ctx;
	struct rmsg *m = msg_by_id(r, args, code, msg);

	if (m == NULL)
		return -1;
	if (m->jobs || m->bounce_off) {
		*code = "busy";
		*msg = strdup("the message is being delivered or bounced; try again");
		return -1;
	}
	/* Deleted by the operator: final without a bounce. */
	for (unsigned i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].st == R_PENDING) {
			m->rcpt[i].st = R_FAILED;
			state_final(r, m, i, false);
		}
	mlog(r, "postsuper", m->id, "removed");
	audit(r, peer, "queue.delete", m->id, m->hold ? "held" : "queued", "deleted");
	msg_free(r, m);
	*res = json_pack("{s:i}", "deleted", 1);
	return 0;
}

static int hold_release(void *ctx, const struct ctl_peer *peer, json_t *args,
			json_t **res, const char **code, char **msg, bool on)
{
	struct relay *r = ctx;
	struct rmsg *m = msg_by_id(r, args, code, msg);
	char line[64];
	int n;

	if (m == NULL)
		return -1;
	if (m->hold != on) {
		/* Persisted: a held message stays held across restarts. */
		n = snprintf(line, sizeof(line), "%c %u %s\n", on ? 'H' : 'R', m->src, m->id);
		state_line(r, line, n);
		held_set(r, m->src, m->qid, on);
		m->hold = on;
		mlog(r, "postsuper", m->id, on ? "placed on hold" : "released from hold");
		audit(r, peer, on ? "queue.hold" : "queue.release", m->id,
		      on ? "active" : "held", on ? "held" : "active");
		if (!on && m->jobs == 0)
			m->next_try_us = 1; /* try at the next scan */
	}
	*res = json_pack("{s:s, s:b}", "qid", m->id, "hold", on);
	return 0;
}

static int h_hold(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		  const char **code, char **msg)
{
	return hold_release(ctx, peer, args, res, code, msg, true);
}

static int h_release(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		     const char **code, char **msg)
{
	return hold_release(ctx, peer, args, res, code, msg, false);
}

static int h_status(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		    const char **code, char **msg)
{
	struct relay *r = ctx;
	size_t deferred = 0;

	(void)peer, (void)args, (void)code, (void)msg;
	for (struct rmsg *m = r->msgs; m; m = m->next)
		deferred += m->next_try_us != 0;
	*res = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "queued", (json_int_t)r->nmsgs,
			 "deferred", (json_int_t)deferred, "picked_up", (json_int_t)r->stat_picked,
			 "sent", (json_int_t)r->stat_sent, "bounced", (json_int_t)r->stat_bounced,
			 "deferrals", (json_int_t)r->stat_deferred,
			 "moved_to_store", (json_int_t)r->stat_compacted);
	return 0;
}

/* ---- live routes (route.set, route.del, route.list) ----------------------- */

/* Live routes are a delta for quick changes, rewritten whole at each one;
 * bulk routing belongs in the file. The bound keeps a request loop from
 * growing the daemon and control.json without limit. */
#define ROUTES_MAX 10000

int relay_ctljson_set(const char *state_dir, const char *key, json_t *value)
{
	char path[300], tmp[310];
	json_error_t je;
	json_t *d = NULL;
	char *text = NULL;
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/control.json", state_dir);
	if (access(path, F_OK) == 0) {
		d = json_load_file(path, 0, &je);
		if (!json_is_object(d)) {
			rc = -EINVAL;
			goto fail;
		}
	} else {
		d = json_object();
	}
	if (d == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if (value)
		json_object_set(d, key, value);
	else
		json_object_del(d, key);
	json_object_del(d, "version");
	if (json_object_size(d) == 0) {
		/* nothing differs from the file: no file at all */
		if (unlink(path) < 0 && errno != ENOENT)
			rc = -errno;
		goto fail;
	}
	json_object_set_new(d, "version", json_integer(1));
	text = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
	if (text == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Atomically: temporary file, fsync, rename. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fsync(fd) < 0) {
		rc = errno ? -errno : -EIO;
		close(fd);
		goto fail;
	}
	close(fd);
	if (rename(tmp, path) < 0)
		rc = -errno;
fail:
	free(text);
	json_decref(d);
	json_decref(value);
	return rc;
}

/* A domain name as RFC 1035 letters, digits, hyphens and dots (lowercased
 * into @out, 254 bytes); false for anything else. */
static bool route_domain(const char *s, char *out)
{
	size_t i;

	if (s == NULL || !*s || *s == '.' || *s == '-' || strlen(s) > 253)
		return false;
	for (i = 0; s[i]; i++) {
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-')
			return false;
		out[i] = (char)tolower((unsigned char)s[i]);
	}
	out[i] = '\0';
	return true;
}

/* Validates one route object {host, port, tls} (as route.set takes it and
 * control.json keeps it) into a fresh normalised object, or NULL with a
 * message in @why. */
static json_t *route_check(json_t *host, json_t *port, json_t *tls, const char **why)
{
	const char *h = json_string_value(host), *t = tls ? json_string_value(tls) : "opportunistic";
	json_int_t p = port ? (json_is_integer(port) ? json_integer_value(port) : -1) : 25;
	unsigned k;

	if (host == NULL) {
		*why = "host is missing (host=NAME or IP address)";
		return NULL;
	}
	/* the same rule as route.host in the file (cfg.c) */
	if (h == NULL || !*h || strlen(h) > 253 || strpbrk(h, " \t\r\n[]/\"\\")) {
		*why = "host: expected a host name or IP address";
		return NULL;
	}
	if (p < 1 || p > 65535) {
		*why = "port: expected 1..65535";
		return NULL;
	}
	for (k = 0; t && k < 3; k++)
		if (strcmp(t, tls_names[k]) == 0)
			break;
	if (t == NULL || k == 3) {
		*why = "tls: expected none, opportunistic or required";
		return NULL;
	}
	return json_pack("{s:s, s:I, s:s}", "host", h, "port", p, "tls", tls_names[k]);
}

/* "host:port tls=POLICY" of @domain's current route, or "none". */
static void route_text(struct relay *r, const char *domain, char *out, size_t len)
{
	struct cfg_route rt;

	if (route_of(r, domain, &rt))
		snprintf(out, len, "%s:%u tls=%s", rt.host, rt.port, tls_names[rt.tls % 3]);
	else
		snprintf(out, len, "none");
}

/* Reads the live routes kept in state_dir/control.json (absent: none).
 * Returns 0, or -EINVAL with @err naming the file and the bad entry. */
static int routes_load(struct relay *r, char *err, size_t errlen)
{
	char path[300];
	json_error_t je;
	json_t *d, *v, *jr;
	const char *dom, *why = "expected an object";
	char key[254];
	int rc = 0;

	r->routes = json_object();
	if (r->routes == NULL)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/control.json", r->rc.state_dir);
	if (access(path, F_OK) != 0)
		return 0;
	d = json_load_file(path, 0, &je);
	if (!json_is_object(d)) {
		snprintf(err, errlen, "%.280s:%d: %.150s", path, je.line,
			 d ? "expected a JSON object" : je.text);
		rc = -EINVAL;
		goto fail;
	}
	jr = json_object_get(d, "routes");
	if (jr && !json_is_object(jr)) {
		snprintf(err, errlen, "%.280s: \"routes\": expected an object", path);
		rc = -EINVAL;
		goto fail;
	}
	json_object_foreach(jr, dom, v) {
		json_t *e = NULL;

		if (!route_domain(dom, key))
			why = "not a domain name";
		else if (json_is_null(v))
			e = json_null();
		else if (json_is_object(v))
			e = route_check(json_object_get(v, "host"), json_object_get(v, "port"),
					json_object_get(v, "tls"), &why);
		if (e == NULL) {
			snprintf(err, errlen, "%.280s: route of \"%.100s\": %s", path, dom, why);
			rc = -EINVAL;
			goto fail;
		}
		json_object_set_new(r->routes, key, e);
	}
fail:
	json_decref(d);
	return rc;
}

/* Applies @next (the whole delta) after it is durable in control.json:
 * a change that cannot be kept is not made. */
static int routes_commit(struct relay *r, json_t *next, const char **code, char **msg)
{
	int rc = relay_ctljson_set(r->rc.state_dir, "routes",
				   json_object_size(next) ? json_incref(next) : NULL);

	if (rc < 0) {
		json_decref(next);
		*code = "not_persisted";
		if (asprintf(msg, "%s/control.json: %s; nothing was changed", r->rc.state_dir,
			     strerror(-rc)) < 0)
			*msg = NULL;
		return -1;
	}
	json_decref(r->routes);
	r->routes = next;
	return 0;
}

static int bad_args(const char **code, char **msg, const char *cmd, const char *why)
{
	*code = "bad_args";
	if (asprintf(msg, "%s: %s", cmd, why) < 0)
		*msg = NULL;
	return -1;
}

/* "route.set domain=D host=H [port=25] [tls=opportunistic]" (admin). */
static int h_route_set(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		       const char **code, char **msg)
{
	struct relay *r = ctx;
	char dom[254], old[300], now[300];
	const char *why = NULL;
	json_t *e, *next;

	if (!route_domain(json_string_value(json_object_get(args, "domain")), dom))
		return bad_args(code, msg, "route.set", "domain: expected a domain name (domain=NAME)");
	e = route_check(json_object_get(args, "host"), json_object_get(args, "port"),
			json_object_get(args, "tls"), &why);
	if (e == NULL)
		return bad_args(code, msg, "route.set", why);
	if (json_object_size(r->routes) >= ROUTES_MAX && !json_object_get(r->routes, dom)) {
		json_decref(e);
		*code = "limit";
		if (asprintf(msg, "route.set: at most %d live routes; put them in the "
			     "configuration file", ROUTES_MAX) < 0)
			*msg = NULL;
		return -1;
	}
	route_text(r, dom, old, sizeof(old));
	next = json_deep_copy(r->routes);
	if (next == NULL || json_object_set_new(next, dom, e) < 0) {
		json_decref(next);
		*code = "internal";
		*msg = strdup("out of memory");
		return -1;
	}
	if (routes_commit(r, next, code, msg) < 0)
		return -1;
	route_text(r, dom, now, sizeof(now));
	audit_kv(r, peer, "route.set", "domain", dom, old, now);
	*res = json_pack("{s:s, s:s, s:s}", "domain", dom, "old", old, "new", now);
	return 0;
}

/* "route.del domain=D" (admin): the domain has no route from now on (its
 * mail is deferred, 4.4.4), even when the file gives it one. */
static int h_route_del(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
		       const char **code, char **msg)
{
	struct relay *r = ctx;
	const struct cfg_domain *fd;
	struct cfg_route rt;
	char dom[254], old[300];
	json_t *next;

	if (!route_domain(json_string_value(json_object_get(args, "domain")), dom))
		return bad_args(code, msg, "route.del", "domain: expected a domain name (domain=NAME)");
	if (!route_of(r, dom, &rt)) {
		*code = "not_found";
		if (asprintf(msg, "route.del: %s has no route", dom) < 0)
			*msg = NULL;
		return -1;
	}
	route_text(r, dom, old, sizeof(old));
	fd = cfg_domain_find(r->cfg, dom);
	next = json_deep_copy(r->routes);
	if (next == NULL) {
		*code = "internal";
		*msg = strdup("out of memory");
		return -1;
	}
	/* A file route is masked (null); a live-only one simply goes. */
	if (fd && fd->route.host[0])
		json_object_set_new(next, dom, json_null());
	else
		json_object_del(next, dom);
	if (routes_commit(r, next, code, msg) < 0)
		return -1;
	audit_kv(r, peer, "route.del", "domain", dom, old, "none");
	*res = json_pack("{s:s, s:s, s:s}", "domain", dom, "old", old, "new", "none");
	return 0;
}

static void route_row(json_t *a, const char *dom, const struct cfg_route *rt, const char *src)
{
	json_array_append_new(a, json_pack("{s:s, s:s, s:i, s:s, s:s}", "domain", dom,
					   "host", rt->host, "port", (int)rt->port,
					   "tls", tls_names[rt->tls % 3], "source", src));
}

/* "route.list": every domain's route now; source "file" or "live". */
static int h_route_list(void *ctx, const struct ctl_peer *peer, json_t *args, json_t **res,
			const char **code, char **msg)
{
	struct relay *r = ctx;
	struct cfg_route rt;
	const char *dom;
	json_t *a = json_array(), *v;

	(void)peer, (void)args, (void)code, (void)msg;
	for (size_t i = 0; a && i < r->cfg->ndomains; i++) {
		const struct cfg_domain *d = &r->cfg->domains[i];
		char key[254];

		if (!route_domain(d->name, key) || json_object_get(r->routes, key))
			continue;
		if (d->route.host[0])
			route_row(a, d->name, &d->route, "file");
	}
	json_object_foreach(r->routes, dom, v)
		if (a && json_is_object(v) && route_of(r, dom, &rt))
			route_row(a, dom, &rt, "live");
	*res = a;
	return 0;
}

static const struct ctl_command relay_cmds[] = {
	{ "status", false, h_status, "relay queue summary and counters" },
	{ "queue.list", false, h_list, "messages in the relay queue" },
	{ "queue.show", false, h_show, "one message and its recipients: qid=QUEUEID" },
	{ "queue.flush", true, h_flush, "retry every deferred message now" },
	{ "queue.delete", true, h_delete, "drop a message without a bounce: qid=QUEUEID" },
	{ "audit", false, h_audit, "changes made through this socket, newest last: [limit=N]" },
	{ "queue.hold", true, h_hold, "never try a message until released: qid=QUEUEID" },
	{ "queue.release", true, h_release, "release a held message (tried now): qid=QUEUEID" },
	{ "route.list", false, h_route_list, "every domain's relay route (source: file or live)" },
	{ "route.set", true, h_route_set,
	  "set a domain's route live: domain=D host=H [port=25] [tls=none|opportunistic|required]" },
	{ "route.del", true, h_route_del, "remove a domain's route live: domain=D" },
};

const struct ctl_command *relay_commands(size_t *n)
{
	*n = sizeof(relay_cmds) / sizeof(relay_cmds[0]);
	return relay_cmds;
}

/* ---- Prometheus metrics ------------------------------------------------- */

static void metrics_cb(struct evhttp_request *req, void *arg)
{
	struct relay *r = arg;
	struct evbuffer *b = evbuffer_new();
	struct spool_recovery rep;
	uint64_t oldest = 0, now = now_us();
	size_t queued = 0, held = 0, conns = 0;

	if (b == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	for (struct rmsg *m = r->msgs; m; m = m->next) {
		if (m->gone)
			continue;
		queued++;
		held += m->hold;
		if (now > m->arrival_us && now - m->arrival_us > oldest)
			oldest = now - m->arrival_us;
	}
	for (struct rconn *c = r->conns; c; c = c->next)
		conns++;
	spool_reader_report(r->rd[SRC_MAIN], &rep);
	evbuffer_add_printf(b,
		"# HELP mxedge_relay_messages_total Messages read from the spool by the relay.\n"
		"# TYPE mxedge_relay_messages_total counter\n"
		"mxedge_relay_messages_total %" PRIu64 "\n"
		"# HELP mxedge_relay_recipients_total Delivery attempts per recipient by outcome.\n"
		"# TYPE mxedge_relay_recipients_total counter\n"
		"mxedge_relay_recipients_total{status=\"sent\"} %" PRIu64 "\n"
		"mxedge_relay_recipients_total{status=\"deferred\"} %" PRIu64 "\n"
		"mxedge_relay_recipients_total{status=\"bounced\"} %" PRIu64 "\n"
		"# HELP mxedge_relay_queue_messages Messages in the relay queue.\n"
		"# TYPE mxedge_relay_queue_messages gauge\n"
		"mxedge_relay_queue_messages %zu\n"
		"# HELP mxedge_relay_queue_held_messages Messages on hold.\n"
		"# TYPE mxedge_relay_queue_held_messages gauge\n"
		"mxedge_relay_queue_held_messages %zu\n"
		"# HELP mxedge_relay_queue_oldest_seconds Age of the oldest queued message.\n"
		"# TYPE mxedge_relay_queue_oldest_seconds gauge\n"
		"mxedge_relay_queue_oldest_seconds %.3f\n"
		"# HELP mxedge_relay_connections Open connections to next hops.\n"
		"# TYPE mxedge_relay_connections gauge\n"
		"mxedge_relay_connections %zu\n"
		"# HELP mxedge_relay_connections_total Connections opened to next hops.\n"
		"# TYPE mxedge_relay_connections_total counter\n"
		"mxedge_relay_connections_total %" PRIu64 "\n"
		"# HELP mxedge_spool_damaged_bytes_total Spool bytes skipped as damaged by the relay.\n"
		"# TYPE mxedge_spool_damaged_bytes_total counter\n"
		"mxedge_spool_damaged_bytes_total %" PRIu64 "\n",
		r->stat_picked, r->stat_sent, r->stat_deferred, r->stat_bounced, queued, held,
		(double)oldest / 1e6, conns, r->stat_conns, rep.damaged_bytes);
	/* The receiving edge: spool sync latency, the dataplane's counters
	 * and drops (asked on its control socket; it answers at once). */
	if (emet_append(b, r->rd[SRC_MAIN], r->cfg->control_socket, 500) < 0) {
		evbuffer_free(b);
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

/* Listens on relay.metrics ("127.0.0.1:9187", "[::1]:9187"). */
static int metrics_open(struct relay *r, char *err, size_t errlen)
{
	char host[64];
	const char *colon = strrchr(r->rc.metrics, ':');
	unsigned port;

	snprintf(host, sizeof(host), "%.*s", (int)(colon - r->rc.metrics), r->rc.metrics);
	if (host[0] == '[') { /* evhttp wants the bare IPv6 address */
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	port = (unsigned)strtoul(colon + 1, NULL, 10);
	r->http = evhttp_new(r->base);
	if (r->http == NULL || evhttp_bind_socket(r->http, host, (ev_uint16_t)port) < 0) {
		snprintf(err, errlen, "relay.metrics %s: cannot listen", r->rc.metrics);
		return -EADDRINUSE;
	}
	evhttp_set_allowed_methods(r->http, EVHTTP_REQ_GET);
	evhttp_set_cb(r->http, "/metrics", metrics_cb, r);
	return 0;
}

/* ---- setup ------------------------------------------------------------------ */

/*
 * A drain copies every queued message into the heap and the spool reader
 * loads whole segments: with 4 KiB pages that is a page fault per 4 KiB
 * touched (4,400 in a 2000-message drain, most of the kernel time on a
 * virtualised host). The heap is grown in one 64 MiB step, kept (no trim)
 * and marked for transparent huge pages (THP "madvise" mode), and large
 * buffers come from it instead of separate mmaps; what glibc's
 * glibc.malloc.hugetlb=1 tunable does, without an environment setting.
 * Best effort: any step that fails leaves the defaults.
 */
static void heap_prepare(void)
{
	static bool done;
	const uintptr_t huge = 2u << 20;
	uintptr_t lo, hi;
	void *p;

	if (done)
		return;
	done = true;
	if (!mallopt(M_TOP_PAD, 64 << 20) || !mallopt(M_TRIM_THRESHOLD, 128 << 20) ||
	    !mallopt(M_MMAP_THRESHOLD, 32 << 20))
		return;
	lo = (uintptr_t)sbrk(0);
	p = malloc(16 << 20);   /* grows the heap by this and M_TOP_PAD */
	hi = (uintptr_t)sbrk(0);
	free(p);
	lo = (lo + huge - 1) & ~(huge - 1);
	hi &= ~(huge - 1);
	if (p != NULL && hi > lo)
		(void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

struct relay *relay_new(struct event_base *base, const struct cfg *c,
			const char *spool_dir, char *err, size_t errlen)
{
	struct spool_config sc;
	struct relay *r;
	char path[512];
	struct timeval tv = { 0, 0 };
	int e;

	heap_prepare();
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->statefd = -1;
	r->auditfd = -1;
	r->base = base;
	r->cfg = c;
	r->rc = c->relay;
	r->pid = (unsigned)getpid();
	r->pidtag_len = (size_t)snprintf(r->pidtag, sizeof(r->pidtag), "[%u]: ", r->pid);
	snprintf(r->hostname, sizeof(r->hostname), "%s", c->hostname);
	if (mkdir(r->rc.state_dir, 0750) < 0 && errno != EEXIST) {
		e = errno;
		snprintf(err, errlen, "%s: %s", r->rc.state_dir, strerror(e));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/state.log", r->rc.state_dir);
	r->statefd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (r->statefd < 0) {
		e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/audit.log", r->rc.state_dir);
	r->auditfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (r->auditfd < 0) {
		e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		goto fail;
	}
	if (routes_load(r, err, errlen) < 0) {
		e = EINVAL;
		goto fail;
	}
	if ((e = -state_load(r)) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		goto fail;
	}
	{
		struct stat st;

		if (fstat(r->statefd, &st) == 0)
			r->state_bytes = (uint64_t)st.st_size;
		r->state_limit = r->rc.state_log_max;
	}
	/* The bounce spool is ours; its lock also keeps a second
	 * mxedge-control off the same state directory. */
	snprintf(path, sizeof(path), "%s/bounces", r->rc.state_dir);
	memset(&sc, 0, sizeof(sc));
	sc.dir = path;
	sc.writers = 1;
	sc.ring_bytes = 1u << 20;
	sc.idle_poll_us = 10000; /* bounces are not latency-critical */
	r->bsp = spool_open(&sc, NULL);
	if (r->bsp == NULL) {
		e = errno;
		snprintf(err, errlen, "%s: %s", path, e == EWOULDBLOCK ?
			 "in use by another mxedge-control" : strerror(e));
		goto fail;
	}
	r->bw = spool_writer(r->bsp, 0);
	r->rd[SRC_BOUNCE] = spool_reader_open(path);
	r->rd[SRC_MAIN] = spool_reader_open(spool_dir);
	if (r->rd[SRC_MAIN] == NULL || r->rd[SRC_BOUNCE] == NULL) {
		e = errno;
		snprintf(err, errlen, "%s: %s", r->rd[SRC_MAIN] ? path : spool_dir, strerror(e));
		goto fail;
	}
	/* The store of long-deferred mail: same format, also ours. */
	snprintf(path, sizeof(path), "%s/store", r->rc.state_dir);
	sc.dir = path;
	sc.ring_bytes = 4u * CMP_CHUNK;
	r->ssp = spool_open(&sc, NULL);
	r->sw = r->ssp ? spool_writer(r->ssp, 0) : NULL;
	r->rd[SRC_STORE] = r->ssp ? spool_reader_open(path) : NULL;
	if (r->rd[SRC_STORE] == NULL) {
		e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		goto fail;
	}
	if (r->rc.log_file[0]) {
		r->log = fopen(r->rc.log_file, "ae");
		if (r->log == NULL) {
			e = errno;
			snprintf(err, errlen, "%s: %s", r->rc.log_file, strerror(e));
			goto fail;
		}
		/* Flushed once per tick: a drain logs ~3 lines per message,
		 * so a 64 KiB buffer means one write per tick, not 15. */
		setvbuf(r->log, NULL, _IOFBF, 1u << 16);
	} else {
		r->log = stderr;
	}
	if (r->rc.metrics[0] && (e = -metrics_open(r, err, errlen)) != 0)
		goto fail;
	/* OpenSSL's set-up is a visible part of the start-up (about 10 M
	 * instructions): done now only when a configured route uses TLS
	 * (so a problem shows at start), else at the first STARTTLS. */
	for (size_t i = 0; i < c->ndomains; i++)
		if (c->domains[i].route.tls != CFG_TLS_NONE) {
			if (tls_ctx(r) == NULL) {
				e = ENOMEM;
				snprintf(err, errlen, "cannot create the TLS client context");
				goto fail;
			}
			break;
		}
	r->batch = READ_BATCH_MIN;
	r->pump = evtimer_new(base, pump_cb, r);
	r->tick = evtimer_new(base, tick_cb, r);
	if (r->pump == NULL || r->tick == NULL || evtimer_add(r->tick, &tv) < 0) {
		e = ENOMEM;
		snprintf(err, errlen, "cannot arm the relay timer");
		goto fail;
	}
	srandom((unsigned)(now_us() ^ getpid()));
	return r;
fail:
	relay_free(r);
	errno = e;
	return NULL;
}

void relay_free(struct relay *r)
{
	if (r == NULL)
		return;
	/* In-flight recipients have no final line in the state log, so
	 * the next start tries them again: nothing to record here. */
	while (r->conns) {
		struct rconn *c = r->conns;

		r->conns = c->next;
		job_free(c->job);
		job_free(c->pend);
		bufferevent_free(c->bev);
		free(c->mail_text);
		free(c);
	}
	for (struct rdest *d = r->dests; d; d = d->next)
		while (d->head) {
			struct rjob *j = d->head;

			d->head = j->next;
			job_free(j);
		}
	while (r->msgs)
		msg_free(r, r->msgs); /* also abandons a copy into the store */
	if (r->tick)
		event_free(r->tick);
	if (r->pump)
		event_free(r->pump);
	if (r->http)
		evhttp_free(r->http);
	if (r->statefd >= 0) {
		state_flush(r);
		close(r->statefd);
	}
	if (r->auditfd >= 0)
		close(r->auditfd);
	json_decref(r->routes);
	free(r->sbuf);
	for (unsigned s = 0; s < NSRC; s++)
		spool_reader_close(r->rd[s]);
	spool_close(r->bsp);
	spool_close(r->ssp);
	while (r->dests) {
		struct rdest *d = r->dests;

		r->dests = d->next;
		free(d);
	}
	if (r->log && r->log != stderr)
		fclose(r->log);
	else if (r->log)
		fflush(r->log);
	SSL_CTX_free(r->ssl);
	free(r->fin);
	free(r->tk);
	free(r->held);
	free(r);
}
