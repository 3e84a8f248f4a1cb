/*
 * etx.c - the edge transaction shared by the DPDK worker and --io=kernel:
 * SMTP events -> policy -> spool records, the per-client session table and
 * the reception log records. See etx.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "etx.h"

#define STORE_ERROR "451 4.3.0 Error: queue file write error"

/* ------------------------------------------------------------------ */
/* reception log records                                               */

static void copy_cut(char *dst, size_t cap, const char *src, size_t len)
{
	if (len >= cap)
		len = cap - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* A record of @kind with the session's common fields, or NULL when there
 * is no log or its ring is full (counted: the stats show lost lines). */
static struct elog_rec *log_rec(struct etx_ctx *x, const struct etx_tx *t,
				enum elog_kind kind, uint64_t now_us)
{
	struct elog_rec *r;

	if (x->log == NULL)
		return NULL;
	r = elog_claim(x->log);
	if (r == NULL) {
		x->stats->log_dropped++;
		return NULL;
	}
	r->wall_us = now_us;
	r->kind = (uint8_t)kind;
	r->stage = t->stage;
	r->esmtp = t->esmtp;
	r->qid[0] = r->helo[0] = r->from[0] = r->to[0] = r->text[0] = '\0';
	copy_cut(r->addr, sizeof(r->addr), t->client, strlen(t->client));
	return r;
}

/* "NOQUEUE: reject: STAGE from unknown[addr]: REPLY; from=<> to=<> ..." */
static void log_reject(struct etx_ctx *x, const struct etx_tx *t,
		       struct smtp_session *ss, const struct smtp_event *ev,
		       uint64_t now_us)
{
	struct elog_rec *r = log_rec(x, t, ELOG_REJECT, now_us);
	const char *helo;

	if (r == NULL)
		return;
	helo = ss ? smtp_helo(ss) : NULL;
	if (helo)
		copy_cut(r->helo, sizeof(r->helo), helo, strlen(helo));
	if (ev->reply)
		copy_cut(r->text, sizeof(r->text), ev->reply, strlen(ev->reply));
	if (t->stage == ELOG_ST_MAIL)
		copy_cut(r->from, sizeof(r->from), ev->addr, ev->addr_len);
	else if (t->env_len && t->state != ETX_NONE)
		copy_cut(r->from, sizeof(r->from), t->env, strlen(t->env));
	if (t->stage == ELOG_ST_RCPT)
		copy_cut(r->to, sizeof(r->to), ev->addr, ev->addr_len);
	/* Before a queue file exists Postfix says NOQUEUE; our queue id of
	 * an open transaction names it once the body started. */
	if (t->stage >= ELOG_ST_DATA && t->qid)
		memcpy(r->qid, t->qid_txt, sizeof(t->qid_txt));
	elog_publish(x->log);
}

static void count(struct etx_tx *t, enum elog_cmd c, bool ok)
{
	if (t->cmd_all[c] < UINT16_MAX) {
		t->cmd_all[c]++;
		t->cmd_ok[c] += ok;
	}
}

/* ------------------------------------------------------------------ */
/* Message-ID from the header section, for "QID: message-id=<...>" as   */
/* Postfix's cleanup logs it (the first Message-ID header, unfolded).   */

enum {
	HS_LINE = 0,  /* at the start of a header line */
	HS_OTHER,     /* inside some other header line */
	HS_NAME,      /* matching "message-id:" (hdr_match chars so far) */
	HS_VALUE,     /* copying the value */
	HS_DONE,      /* header section over */
	HS_CR,        /* CR at a line start: a blank line if LF follows */
	HS_FOLD,      /* at a line start after the value: folded? */
};

static void scan_headers(struct etx_tx *t, const uint8_t *p, size_t n)
{
	static const char name[] = "message-id:";
	size_t i;

	for (i = 0; i < n && t->hdr_state != HS_DONE; i++) {
		uint8_t c = p[i];

		switch (t->hdr_state) {
		case HS_FOLD:
			if (c == ' ' || c == '\t') {
				t->hdr_state = HS_VALUE;
				break;
			}
			/* a new header line */
			/* fall through */
		case HS_LINE:
			if (c == '\r')
				t->hdr_state = HS_CR;
			else if (c == '\n')
				t->hdr_state = HS_DONE;
			else if ((c | 0x20) == 'm' && t->msgid_len == 0) {
				t->hdr_state = HS_NAME;
				t->hdr_match = 1;
			} else
				t->hdr_state = HS_OTHER;
			break;
		case HS_CR:
			t->hdr_state = c == '\n' ? HS_DONE : HS_OTHER;
			break;
		case HS_OTHER:
			if (c == '\n')
				t->hdr_state = HS_LINE;
			break;
		case HS_NAME:
			if (c == '\n')
				t->hdr_state = HS_LINE;
			else if ((uint8_t)(c | 0x20) == (uint8_t)name[t->hdr_match] ||
				 (c == ':' && name[t->hdr_match] == ':')) {
				if (name[++t->hdr_match] == '\0')
					t->hdr_state = HS_VALUE;
			} else
				t->hdr_state = HS_OTHER;
			break;
		case HS_VALUE:
			if (c == '\n')
				t->hdr_state = HS_FOLD;
			else if (c != '\r' && c != ' ' && c != '\t' &&
				 t->msgid_len < ETX_MSGID_MAX - 1) {
				t->msgid[t->msgid_len++] = (char)c;
				t->msgid[t->msgid_len] = '\0';
			}
			break;
		}
	}
}

/* ------------------------------------------------------------------ */
/* envelope                                                            */

static int env_put(struct etx_tx *t, const char *p, size_t n)
{
	if (n >= t->env_cap - t->env_len)
		return -ENOSPC;
	memcpy(t->env + t->env_len, p, n);
	t->env_len += (unsigned)n;
	t->env[t->env_len++] = '\0';
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

/* The BEGIN record from the collected envelope. */
static int tx_begin(struct etx_ctx *x, struct etx_tx *t, const char *helo)
{
	struct spool_envelope env;
	const char *p = t->env;
	unsigned i;

	memset(&env, 0, sizeof(env));
	env.arrival_us = t->arrival_us;
	env.client_addr = t->client;
	env.helo = helo;
	env.mail_from = p;
	p = env_next(p);
	env.mail_params = p[0] ? p : NULL;
	p = env_next(p);
	for (i = 0; i < t->nrcpt && i < x->max_rcpts; i++) {
		x->rcpts[i].addr = p;
		p = env_next(p);
		x->rcpts[i].notify = p[0] ? p : NULL;
		p = env_next(p);
		x->rcpts[i].orcpt = p[0] ? p : NULL;
		p = env_next(p);
	}
	env.nrcpt = i;
	env.rcpts = x->rcpts;
	return spool_begin(x->spool, &t->msg, t->qid, &env);
}

static void tx_reset(struct etx_tx *t)
{
	t->state = ETX_NONE;
	t->pend = ETX_PEND_NONE;
	t->env_len = 0;
	t->nrcpt = 0;
	t->body_failed = false;
}

static bool rcpt_domain_ok(struct etx_ctx *x, const char *a, size_t n)
{
	const char *at = memrchr(a, '@', n);

	if (*x->ndomains == 0)
		return true; /* no domain configured: accept all */
	/* RFC 5321 §4.5.1: "postmaster" without a domain must be accepted. */
	if (at == NULL)
		return n == 10 && strncasecmp(a, "postmaster", 10) == 0;
	return tbl_domain_lookup(x->tables, at + 1,
				 n - (size_t)(at + 1 - a)) != NULL;
}

/* ------------------------------------------------------------------ */
/* sessions                                                            */

void etx_session_start(struct etx_ctx *x, struct etx_tx *t, int family,
		       const uint8_t *addr, char *env, unsigned env_cap,
		       uint64_t now_us)
{
	struct elog_rec *r;

	memset(t, 0, sizeof(*t));
	t->env = env;
	t->env_cap = env_cap;
	t->family = family == 6 ? 6 : 4;
	memcpy(t->addr, addr, t->family == 4 ? 4 : 16);
	inet_ntop(t->family == 4 ? AF_INET : AF_INET6, t->addr, t->client,
		  sizeof(t->client));
	/* RFC 5321 §4.1.3: an IPv6 address literal carries the tag. */
	snprintf(t->peer, sizeof(t->peer), "%s%s", t->family == 6 ? "IPv6:" : "",
		 t->client);
	t->stage = ELOG_ST_CONNECT;
	r = log_rec(x, t, ELOG_CONNECT, now_us);
	if (r)
		elog_publish(x->log);
}

void etx_reply(struct etx_tx *t, const void *buf, size_t len)
{
	const char *p = buf;

	if (len < 4 || p[3] == '-')
		return; /* a continuation line says nothing new */
	if (!memcmp(p, "221", 3))
		count(t, ELOG_CMD_QUIT, true);
	else if (!memcmp(p, "421", 3) || !memcmp(p, "554", 3))
		t->closing = true;
}

void etx_session_end(struct etx_ctx *x, struct etx_tx *t, uint64_t now_us)
{
	struct elog_rec *r;

	if (t->timed_out || (!t->cmd_all[ELOG_CMD_QUIT] && !t->closing)) {
		r = log_rec(x, t, t->timed_out ? ELOG_TIMEOUT : ELOG_LOST, now_us);
		if (r)
			elog_publish(x->log);
	}
	r = log_rec(x, t, ELOG_DISCONNECT, now_us);
	if (r) {
		memcpy(r->cmd_ok, t->cmd_ok, sizeof(r->cmd_ok));
		memcpy(r->cmd_all, t->cmd_all, sizeof(r->cmd_all));
		elog_publish(x->log);
	}
}

int etx_event(struct etx_ctx *x, struct etx_tx *t, struct smtp_session *ss,
	      struct smtp_event *ev, uint64_t now_us)
{
	char params[256];
	int rc;

	switch (ev->type) {
	case SMTP_EV_CONNECT:
		if (tbl_client_check(x->tables, t->family, t->addr) == TBL_BLOCKED) {
			x->stats->clients_blocked++;
			ev->reply = "554 5.7.1 Client host rejected: access denied";
			log_reject(x, t, ss, ev, now_us);
			return SMTP_REJECT;
		}
		return SMTP_ACCEPT;
	case SMTP_EV_HELO:
		t->esmtp = ev->esmtp;
		t->stage = ev->esmtp ? ELOG_ST_EHLO : ELOG_ST_HELO;
		count(t, ev->esmtp ? ELOG_CMD_EHLO : ELOG_CMD_HELO, true);
		return SMTP_ACCEPT;
	case SMTP_EV_MAIL:
		tx_reset(t);
		t->stage = ELOG_ST_MAIL;
		t->arrival_us = now_us;
		t->qid = spool_qid_new(x->spool, now_us / 1000u);
		spool_qid_format(t->qid, t->qid_txt);
		memset(&t->msg, 0, sizeof(t->msg));
		mail_params(ev, params, sizeof(params));
		if (env_put(t, ev->addr, ev->addr_len) < 0 ||
		    env_put(t, params, strlen(params)) < 0) {
			ev->reply = "552 5.3.4 Envelope too large";
			t->env_len = 0;
			count(t, ELOG_CMD_MAIL, false);
			log_reject(x, t, ss, ev, now_us);
			return SMTP_REJECT;
		}
		count(t, ELOG_CMD_MAIL, true);
		t->state = ETX_ENV;
		ev->queue_id = t->qid_txt;
		return SMTP_ACCEPT;
	case SMTP_EV_RCPT: {
		unsigned save = t->env_len;
		char notify[40];

		t->stage = ELOG_ST_RCPT;
		if (!rcpt_domain_ok(x, ev->addr, ev->addr_len)) {
			x->stats->rcpt_rejected++;
			ev->reply = "550 5.1.2 Recipient domain not accepted here";
			count(t, ELOG_CMD_RCPT, false);
			log_reject(x, t, ss, ev, now_us);
			return SMTP_REJECT;
		}
		snprintf(notify, sizeof(notify), "%s%s%s%s",
			 (ev->notify & SMTP_NOTIFY_NEVER) ? "NEVER" : "",
			 (ev->notify & SMTP_NOTIFY_SUCCESS) ? "SUCCESS," : "",
			 (ev->notify & SMTP_NOTIFY_FAILURE) ? "FAILURE," : "",
			 (ev->notify & SMTP_NOTIFY_DELAY) ? "DELAY," : "");
		if (notify[0] && notify[strlen(notify) - 1] == ',')
			notify[strlen(notify) - 1] = '\0';
		if (t->nrcpt >= x->max_rcpts ||
		    env_put(t, ev->addr, ev->addr_len) < 0 ||
		    env_put(t, notify, strlen(notify)) < 0 ||
		    env_put(t, ev->orcpt ? ev->orcpt : "",
			    ev->orcpt ? ev->orcpt_len : 0) < 0) {
			t->env_len = save;
			ev->reply = "452 4.5.3 Too many recipients";
			count(t, ELOG_CMD_RCPT, false);
			log_reject(x, t, ss, ev, now_us);
			return SMTP_REJECT;
		}
		count(t, ELOG_CMD_RCPT, true);
		t->nrcpt++;
		return SMTP_ACCEPT;
	}
	case SMTP_EV_DATA:
		t->stage = ELOG_ST_DATA;
		t->hdr_state = HS_LINE;
		t->msgid_len = 0;
		t->msgid[0] = '\0';
		rc = tx_begin(x, t, smtp_helo(ss));
		count(t, ELOG_CMD_DATA, rc == 0 || rc == -EAGAIN);
		if (rc == 0) {
			t->state = ETX_BEGUN;
			return SMTP_ACCEPT;
		}
		if (rc == -EAGAIN) {
			/* Ring full: the 354 waits until the sync thread
			 * frees room; the caller's poll pass retries. */
			t->pend = ETX_PEND_BEGIN;
			return SMTP_PENDING;
		}
		x->stats->store_errors++;
		ev->reply = STORE_ERROR;
		log_reject(x, t, ss, ev, now_us);
		return SMTP_REJECT;
	case SMTP_EV_BODY:
		if (t->body_failed)
			return SMTP_REJECT;
		rc = spool_data(x->spool, &t->msg, ev->data, ev->len);
		if (rc < 0) {
			/* Feeding stops before the ring is this full, so
			 * this is a spool failure (or a huge chunk). */
			t->body_failed = true;
			x->stats->store_errors++;
			ev->reply = rc == -EAGAIN ?
				"452 4.3.1 Insufficient system storage" : STORE_ERROR;
			return SMTP_REJECT;
		}
		if (t->hdr_state != HS_DONE)
			scan_headers(t, ev->data, ev->len);
		return SMTP_ACCEPT;
	case SMTP_EV_EOM:
		t->stage = ELOG_ST_EOM;
		if (t->body_failed) {
			ev->reply = STORE_ERROR;
			log_reject(x, t, ss, ev, now_us);
			return SMTP_REJECT;
		}
		rc = spool_end(x->spool, &t->msg, &t->commit_off);
		if (rc == 0 || rc == -EAGAIN) {
			if (rc == 0)
				t->state = ETX_ENDED;
			t->pend = rc == 0 ? ETX_PEND_DURABLE : ETX_PEND_END;
			return SMTP_PENDING;
		}
		x->stats->store_errors++;
		ev->reply = STORE_ERROR;
		log_reject(x, t, ss, ev, now_us);
		return SMTP_REJECT;
	case SMTP_EV_ABORT:
		/* An ENDED message stays: it may already be durable, and
		 * keeping it only risks a duplicate (smtp.h). */
		if (t->state == ETX_BEGUN)
			(void)spool_abort(x->spool, &t->msg);
		tx_reset(t);
		return SMTP_ACCEPT;
	default:
		return SMTP_ACCEPT;
	}
}

/* The message is durable and answered 250: the lines Postfix's smtpd and
 * cleanup write for a received message (pflogsumm counts "client="). */
static void log_received(struct etx_ctx *x, const struct etx_tx *t,
			 uint64_t now_us)
{
	struct elog_rec *r = log_rec(x, t, ELOG_CLIENT, now_us);

	if (r) {
		memcpy(r->qid, t->qid_txt, sizeof(t->qid_txt));
		elog_publish(x->log);
	}
	r = log_rec(x, t, ELOG_MSGID, now_us);
	if (r) {
		memcpy(r->qid, t->qid_txt, sizeof(t->qid_txt));
		memcpy(r->text, t->msgid, t->msgid_len + 1u);
		elog_publish(x->log);
	}
}

enum etx_poll_result etx_poll(struct etx_ctx *x, struct etx_tx *t,
			      struct smtp_session *ss, uint64_t now_us,
			      struct etx_answer *a)
{
	int err = spool_writer_error(x->spool);
	int rc;

	a->verdict = SMTP_ACCEPT;
	a->reply = NULL;
	switch (t->pend) {
	case ETX_PEND_BEGIN:
		rc = tx_begin(x, t, smtp_helo(ss));
		if (rc == -EAGAIN)
			return ETX_POLL_WAIT;
		t->pend = ETX_PEND_NONE;
		if (rc == 0) {
			t->state = ETX_BEGUN;
		} else {
			x->stats->store_errors++;
			a->verdict = SMTP_REJECT;
			a->reply = STORE_ERROR;
		}
		return ETX_POLL_DONE;
	case ETX_PEND_END:
		rc = spool_end(x->spool, &t->msg, &t->commit_off);
		if (rc == -EAGAIN)
			return ETX_POLL_WAIT;
		if (rc == 0) {
			t->state = ETX_ENDED;
			t->pend = ETX_PEND_DURABLE;
			return ETX_POLL_WAIT;
		}
		tx_reset(t);
		x->stats->store_errors++;
		a->verdict = SMTP_REJECT;
		a->reply = STORE_ERROR;
		return ETX_POLL_DONE;
	case ETX_PEND_DURABLE:
		if (err == 0 && !spool_durable(x->spool, t->commit_off))
			return ETX_POLL_WAIT;
		tx_reset(t);
		/* RFC 5321 §4.1.1.4: 250 only once the message is on
		 * stable storage; 451 if the spool failed. */
		if (err == 0) {
			x->stats->messages++;
			log_received(x, t, now_us);
		} else {
			x->stats->store_errors++;
			a->verdict = SMTP_REJECT;
			a->reply = STORE_ERROR;
		}
		return ETX_POLL_DONE;
	case ETX_PEND_ROOM:
	case ETX_PEND_NONE:
		break;
	}
	return ETX_POLL_DONE;
}

/* ------------------------------------------------------------------ */
/* per-client session counts                                           */

/* n == 0: empty slot. */
struct etx_client {
	uint8_t key[ETX_CLIENT_KEY];
	uint32_t n;
};

struct etx_clients {
	uint32_t mask;
	uint64_t seed;
	struct etx_client slot[];
};

struct etx_clients *etx_clients_create(unsigned max_sessions, uint64_t seed)
{
	struct etx_clients *c;
	uint32_t size;

	if (max_sessions == 0 || max_sessions > (1u << 30)) {
		errno = EINVAL;
		return NULL;
	}
	/* Twice the pool: never more than half full, short probe chains. */
	for (size = 1; size < 2 * max_sessions; size <<= 1)
		;
	c = calloc(1, sizeof(*c) + (size_t)size * sizeof(c->slot[0]));
	if (c == NULL)
		return NULL;
	c->mask = size - 1;
	c->seed = seed;
	return c;
}

void etx_clients_destroy(struct etx_clients *c)
{
	free(c);
}

void etx_client_key(int family, const uint8_t *addr, uint8_t key[ETX_CLIENT_KEY])
{
	memset(key, 0, ETX_CLIENT_KEY);
	if (family == 4) {
		key[10] = key[11] = 0xff; /* ::ffff:a.b.c.d */
		memcpy(key + 12, addr, 4);
	} else {
		memcpy(key, addr, 8);     /* the /64 */
	}
}

static uint32_t client_hash(const struct etx_clients *c, const uint8_t key[16])
{
	uint64_t a, b, h;

	memcpy(&a, key, 8);
	memcpy(&b, key + 8, 8);
	h = (a ^ c->seed) * 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h = (h ^ b) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return (uint32_t)h & c->mask;
}

/* The slot of @key, or the empty slot where it would go. */
static struct etx_client *client_slot(struct etx_clients *c, const uint8_t key[16])
{
	uint32_t i = client_hash(c, key);

	while (c->slot[i].n && memcmp(c->slot[i].key, key, 16))
		i = (i + 1) & c->mask;
	return &c->slot[i];
}

int etx_clients_take(struct etx_clients *c, const uint8_t key[ETX_CLIENT_KEY],
		     unsigned limit)
{
	struct etx_client *s = client_slot(c, key);

	if (s->n >= limit)
		return -EBUSY;
	memcpy(s->key, key, 16);
	s->n++;
	return 0;
}

/* Frees the slot at zero with backward-shift deletion, which keeps every
 * probe chain intact without tombstones. */
void etx_clients_put(struct etx_clients *c, const uint8_t key[ETX_CLIENT_KEY])
{
	struct etx_client *s = client_slot(c, key);
	uint32_t i, j, k;

	if (s->n == 0 || --s->n)
		return;
	i = (uint32_t)(s - c->slot);
	for (j = (i + 1) & c->mask; c->slot[j].n; j = (j + 1) & c->mask) {
		k = client_hash(c, c->slot[j].key);
		/* Move j back into the hole at i unless its home k lies
		 * cyclically in (i, j]. */
		if (i <= j ? (k <= i || k > j) : (k <= i && k > j)) {
			c->slot[i] = c->slot[j];
			c->slot[j].n = 0;
			i = j;
		}
	}
}

void etx_knobs_to_smtp(struct smtp_server *srv, struct smtp_limits *applied,
		       const struct tbl_knobs *kn)
{
	struct smtp_limits l = {
		.max_message_size = kn->max_message_size,
		.max_rcpts = kn->max_recipients,
		.max_errors = kn->max_errors,
		.cmd_timeout_ms = kn->command_timeout_s * 1000u,
		.data_timeout_ms = kn->data_timeout_s * 1000u,
	};

	if (memcmp(&l, applied, sizeof(l)) != 0) {
		smtp_server_set_limits(srv, &l);
		*applied = l;
	}
}
