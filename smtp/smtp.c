/*
 * smtp — SMTP server protocol engine.  See smtp.h for the contract and
 * smtp/README.md for the design notes (memory accounting, smuggling).
 */
#include "smtp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEF_MAX_SIZE    (10u * 1024 * 1024)
#define DEF_MAX_RCPTS   100u  /* RFC 5321 §4.5.3.1.8 */
#define DEF_MAX_ERRORS  20u
#define DEF_MAX_JUNK    100u
#define DEF_MAX_LINE    1000u
#define DEF_LINE_BUFS   1024u
#define DEF_CMD_TMO     300000u /* RFC 5321 §4.5.3.2.7: 5 minutes */
#define DEF_DATA_TMO    180000u /* RFC 5321 §4.5.3.2.6: 3 minutes */
#define MAX_LINE_LIMIT  65000u  /* line_len is 16 bits */
#define HELO_MAX        255u    /* RFC 5321 §4.5.3.1.2 domain */
#define REPLY_MAX       1024u

/* A free line buffer links to the next one through its first bytes. */
struct linebuf {
	struct linebuf *next;
};

struct smtp_server {
	struct smtp_config cfg;
	struct smtp_ops ops;
	char *hostname;
	char *greeting;
	uint8_t *pool_mem;
	struct linebuf *free_bufs;
	size_t stride;           /* max_line rounded up for alignment */
	unsigned bufs_in_use;
};

enum st {
	ST_INIT = 0,  /* smtp_start() not called yet */
	ST_CMD,       /* reading commands */
	ST_DATA,      /* reading DATA content */
	ST_BDAT,      /* reading a BDAT chunk */
	ST_PENDING,   /* waiting for smtp_complete() */
	ST_TLS,       /* waiting for smtp_tls_started() */
	ST_CLOSE,     /* done; caller closes after flushing */
};

enum pend {
	P_NONE = 0, P_CONNECT, P_HELO, P_MAIL, P_RCPT, P_DATA, P_BDAT, P_EOM,
};

/* DATA scanner states (RFC 5321 §4.5.2 transparency, §4.1.1.4 end). */
enum dstate {
	D_BOL = 0, /* at the start of a line (after CRLF) */
	D_TEXT,    /* inside a line */
	D_CR,      /* last byte was a CR that has been passed on */
	D_DOT,     /* "." at line start, held back */
	D_DOTCR,   /* "." CR at line start, both held back */
};

enum {
	F_GREETED   = 1u << 0,
	F_HELO      = 1u << 1,
	F_ESMTP     = 1u << 2,
	F_TX        = 1u << 3,  /* MAIL accepted: transaction open */
	F_UTF8TX    = 1u << 4,  /* MAIL ... SMTPUTF8 */
	F_BDAT_TX   = 1u << 5,  /* BDAT used in this transaction */
	F_TLS       = 1u << 6,
	F_AUTH      = 1u << 7,
	F_EARLY     = 1u << 8,
	F_LONGLINE  = 1u << 9,  /* discarding the rest of an over-long line */
	F_BARE      = 1u << 10, /* bare CR/LF in content (reject policy) */
	F_TOOBIG    = 1u << 11,
	F_BODYFAIL  = 1u << 12,
	F_BDAT_LAST = 1u << 13,
	F_DISCARD   = 1u << 14, /* current BDAT chunk is read and dropped */
};
#define F_FAILED (F_BARE | F_TOOBIG | F_BODYFAIL)

struct smtp_session {
	struct smtp_server *srv;
	void *ctx;
	const char *peer;
	const char *tls_info;
	const char *queue_id;
	const char *fail_reply;  /* from a failed BODY upcall */
	uint8_t *line;           /* borrowed while a partial line is pending */
	uint64_t last_ms;
	uint64_t msg_size;       /* body bytes stored so far */
	uint64_t bdat_left;      /* bytes left in the current BDAT chunk */
	uint64_t bdat_chunk;     /* size of the current BDAT chunk */
	uint64_t tx_max_size;    /* the size limit this transaction's MAIL saw */
	uint32_t flags;
	uint16_t line_len;
	uint16_t nrcpt;
	uint16_t tx_max_rcpts;   /* the recipient limit of this transaction */
	uint16_t errors;
	uint16_t junk;
	uint8_t st;
	uint8_t pend;
	uint8_t dstate;
	char helo[HELO_MAX + 1];
};

_Static_assert(sizeof(struct smtp_session) <= SMTP_SESSION_MAX,
	       "engine state per idle session must stay <= 512 bytes");

/* ------------------------------------------------------------------ */
/* server                                                              */

struct smtp_server *smtp_server_create(const struct smtp_config *cfg,
				       const struct smtp_ops *ops)
{
	struct smtp_server *srv = NULL;
	size_t i;

	if (cfg == NULL || ops == NULL || ops->write == NULL ||
	    ops->event == NULL || cfg->hostname == NULL ||
	    cfg->hostname[0] == '\0' || strlen(cfg->hostname) > HELO_MAX ||
	    strpbrk(cfg->hostname, " \r\n") != NULL ||
	    (cfg->greeting != NULL && (strlen(cfg->greeting) > 400 ||
				       strpbrk(cfg->greeting, "\r\n"))) ||
	    cfg->max_line > MAX_LINE_LIMIT ||
	    (cfg->max_line != 0 && cfg->max_line < 64)) {
		errno = EINVAL;
		return NULL;
	}
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		goto fail;
	srv->cfg = *cfg;
	srv->ops = *ops;
	if (srv->cfg.max_message_size == 0)
		srv->cfg.max_message_size = DEF_MAX_SIZE;
	if (srv->cfg.max_rcpts == 0)
		srv->cfg.max_rcpts = DEF_MAX_RCPTS;
	if (srv->cfg.max_rcpts > 65535)
		srv->cfg.max_rcpts = 65535;
	if (srv->cfg.max_errors == 0)
		srv->cfg.max_errors = DEF_MAX_ERRORS;
	if (srv->cfg.max_errors > 65535)
		srv->cfg.max_errors = 65535;
	if (srv->cfg.max_junk == 0)
		srv->cfg.max_junk = DEF_MAX_JUNK;
	if (srv->cfg.max_junk > 65535)
		srv->cfg.max_junk = 65535;
	if (srv->cfg.max_line == 0)
		srv->cfg.max_line = DEF_MAX_LINE;
	if (srv->cfg.line_buffers == 0)
		srv->cfg.line_buffers = DEF_LINE_BUFS;
	if (srv->cfg.cmd_timeout_ms == 0)
		srv->cfg.cmd_timeout_ms = DEF_CMD_TMO;
	if (srv->cfg.data_timeout_ms == 0)
		srv->cfg.data_timeout_ms = DEF_DATA_TMO;
	srv->hostname = strdup(cfg->hostname);
	if (srv->hostname == NULL)
		goto fail;
	srv->cfg.hostname = srv->hostname;
	if (cfg->greeting != NULL) {
		srv->greeting = strdup(cfg->greeting);
		if (srv->greeting == NULL)
			goto fail;
	}
	srv->cfg.greeting = srv->greeting;
	/* All line buffers come from one block allocated here, so the hot
	 * path never calls malloc (DESIGN.md hot-path rules). */
	srv->stride = (srv->cfg.max_line + 15u) & ~(size_t)15u;
	srv->pool_mem = calloc(srv->cfg.line_buffers, srv->stride);
	if (srv->pool_mem == NULL)
		goto fail;
	for (i = srv->cfg.line_buffers; i-- > 0;) {
		struct linebuf *b =
			(struct linebuf *)(void *)(srv->pool_mem + i * srv->stride);
		b->next = srv->free_bufs;
		srv->free_bufs = b;
	}
	return srv;
fail:
	smtp_server_destroy(srv);
	errno = ENOMEM;
	return NULL;
}

void smtp_server_destroy(struct smtp_server *srv)
{
	if (srv == NULL)
		return;
	free(srv->pool_mem);
	srv->pool_mem = NULL;
	free(srv->hostname);
	free(srv->greeting);
	free(srv);
}

int smtp_server_set_limits(struct smtp_server *srv,
			   const struct smtp_limits *l)
{
	if (srv == NULL || l == NULL)
		return -EINVAL;
	/* 0 keeps the running value: a caller that never set a field (a
	 * table that was not published yet) cannot reset it to a default. */
	if (l->max_message_size)
		srv->cfg.max_message_size = l->max_message_size;
	if (l->max_rcpts)
		srv->cfg.max_rcpts = l->max_rcpts > 65535 ? 65535 : l->max_rcpts;
	if (l->max_errors)
		srv->cfg.max_errors = l->max_errors > 65535 ? 65535 : l->max_errors;
	if (l->cmd_timeout_ms)
		srv->cfg.cmd_timeout_ms = l->cmd_timeout_ms;
	if (l->data_timeout_ms)
		srv->cfg.data_timeout_ms = l->data_timeout_ms;
	return 0;
}

size_t smtp_session_size(void)
{
	return sizeof(struct smtp_session);
}

unsigned smtp_server_buffers_in_use(const struct smtp_server *srv)
{
	return srv->bufs_in_use;
}

static uint8_t *buf_get(struct smtp_server *srv)
{
	struct linebuf *b = srv->free_bufs;

	if (b == NULL)
		return NULL;
	srv->free_bufs = b->next;
	srv->bufs_in_use++;
	return (uint8_t *)b;
}

static void buf_put(struct smtp_session *s)
{
	struct linebuf *b = (struct linebuf *)(void *)s->line;

	if (b == NULL)
		return;
	b->next = s->srv->free_bufs;
	s->srv->free_bufs = b;
	s->srv->bufs_in_use--;
	s->line = NULL;
	s->line_len = 0;
}

/* ------------------------------------------------------------------ */
/* replies                                                             */

static void set_close(struct smtp_session *s)
{
	s->st = ST_CLOSE;
	s->pend = P_NONE;
	buf_put(s);
}

static int emit(struct smtp_session *s, struct smtp_event *ev)
{
	return s->srv->ops.event(s->ctx, s, ev);
}

static void tx_reset(struct smtp_session *s)
{
	s->flags &= ~(uint32_t)(F_TX | F_UTF8TX | F_BDAT_TX | F_FAILED |
				F_BDAT_LAST | F_DISCARD);
	s->nrcpt = 0;
	s->msg_size = 0;
	s->queue_id = NULL;
	s->fail_reply = NULL;
}

/* The open transaction is abandoned: tell the caller to drop its spool. */
static void tx_abort(struct smtp_session *s)
{
	if (s->flags & F_TX) {
		struct smtp_event ev = { .type = SMTP_EV_ABORT };
		emit(s, &ev);
	}
	tx_reset(s);
}

static void write_line(struct smtp_session *s, const char *txt, size_t n)
{
	char buf[REPLY_MAX + 2];

	if (n > REPLY_MAX)
		n = REPLY_MAX;
	memcpy(buf, txt, n);
	buf[n++] = '\r';
	buf[n++] = '\n';
	s->srv->ops.write(s->ctx, buf, n);
}

static void close_421(struct smtp_session *s, const char *why);

/*
 * Send one reply line.  4xx/5xx replies count against max_errors
 * (then 421 and close); a 421 closes the session (RFC 5321 §3.8).
 */
static void reply(struct smtp_session *s, const char *txt)
{
	size_t n = strlen(txt);

	if (s->st == ST_CLOSE)
		return; /* nothing after the closing reply */
	write_line(s, txt, n);
	if (n >= 3 && txt[0] == '4' && txt[1] == '2' && txt[2] == '1') {
		tx_abort(s);
		set_close(s);
		return;
	}
	if (txt[0] == '4' || txt[0] == '5') {
		if (++s->errors >= s->srv->cfg.max_errors)
			close_421(s, "Error: too many errors");
	}
}

__attribute__((format(printf, 2, 3)))
static void replyf(struct smtp_session *s, const char *fmt, ...)
{
	char buf[REPLY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	reply(s, buf);
}

static void close_421(struct smtp_session *s, const char *why)
{
	char buf[REPLY_MAX];

	if (s->st == ST_CLOSE)
		return;
	snprintf(buf, sizeof(buf), "421 4.7.0 %s %s", s->srv->cfg.hostname,
		 why);
	write_line(s, buf, strlen(buf));
	tx_abort(s);
	set_close(s);
}

/* Caller's reply if it gave one, else our default. */
static void reply_or(struct smtp_session *s, const char *given,
		     const char *dflt)
{
	reply(s, given != NULL && given[0] != '\0' ? given : dflt);
}

/* ------------------------------------------------------------------ */
/* syntax helpers (RFC 5321 §4.1.2, RFC 6531 §3.3)                     */

static int lc(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static bool ieq(const char *a, size_t alen, const char *b)
{
	size_t i;

	for (i = 0; i < alen; i++)
		if (b[i] == '\0' || lc((unsigned char)a[i]) != lc((unsigned char)b[i]))
			return false;
	return b[alen] == '\0';
}

static bool is_alpha(int c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alnum(int c) { return is_alpha(c) || is_digit(c); }

static bool is_atext(int c)
{
	return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Length of a well-formed UTF-8 multi-byte sequence at p, else 0
 * (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned c = p[0];

	if (c >= 0xc2 && c <= 0xdf) {
		return (n >= 2 && (p[1] & 0xc0) == 0x80) ? 2 : 0;
	}
	if (c >= 0xe0 && c <= 0xef) {
		if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if (c == 0xe0 && p[1] < 0xa0)
			return 0;
		if (c == 0xed && p[1] > 0x9f)
			return 0;
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		if (c == 0xf0 && p[1] < 0x90)
			return 0;
		if (c == 0xf4 && p[1] > 0x8f)
			return 0;
		return 4;
	}
	return 0;
}

/*
 * Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str].
 * `lenient` also takes '_' (common in HELO names).  UTF-8 U-labels are
 * taken when utf8 != NULL (RFC 6531 §3.3), and *utf8 is set.
 */
static bool parse_domain(const unsigned char *p, size_t n, bool lenient,
			 bool *utf8)
{
	size_t i = 0, label = 0;
	int last = '.';

	if (n == 0 || n > HELO_MAX)
		return false;
	while (i < n) {
		int c = p[i];

		if (c == '.') {
			if (label == 0 || last == '-')
				return false;
			label = 0;
			last = c;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t u = utf8 ? utf8_len(p + i, n - i) : 0;
			if (u == 0)
				return false;
			*utf8 = true;
			i += u;
			label += u;
			last = 'a';
			continue;
		}
		if (is_alnum(c) || (lenient && c == '_')) {
			/* ok */
		} else if (c == '-') {
			if (label == 0)
				return false;
		} else {
			return false;
		}
		if (++label > 63)
			return false;
		last = c;
		i++;
	}
	return last != '.' && last != '-';
}

/* address-literal = "[" ( IPv4 / "IPv6:" IPv6 / tag ":" dcontent ) "]" */
static bool parse_addr_literal(const unsigned char *p, size_t n)
{
	char tmp[64];
	unsigned char bin[16];
	size_t i;

	if (n < 3 || p[0] != '[' || p[n - 1] != ']')
		return false;
	p++;
	n -= 2;
	if (n >= 5 && ieq((const char *)p, 5, "ipv6:")) {
		if (n - 5 >= sizeof(tmp))
			return false;
		memcpy(tmp, p + 5, n - 5);
		tmp[n - 5] = '\0';
		return inet_pton(AF_INET6, tmp, bin) == 1;
	}
	if (n > 0 && is_digit(p[0])) {
		if (n >= sizeof(tmp))
			return false;
		memcpy(tmp, p, n);
		tmp[n] = '\0';
		return inet_pton(AF_INET, tmp, bin) == 1;
	}
	/* General-address-literal = Standardized-tag ":" 1*dcontent */
	for (i = 0; i < n && p[i] != ':'; i++)
		if (!is_alnum(p[i]) && p[i] != '-')
			return false;
	if (i == 0 || i + 1 >= n)
		return false;
	for (i++; i < n; i++)
		if (p[i] < 33 || p[i] > 126 || p[i] == '[' || p[i] == '\\' ||
		    p[i] == ']')
			return false;
	return true;
}

int smtp_parse_path(const char *path, size_t len, bool allow_null,
		    const char **mbox, size_t *mbox_len, bool *utf8)
{
	const unsigned char *p = (const unsigned char *)path;
	size_t i, n, lstart, llen;
	bool u8 = false;

	*utf8 = false;
	if (len < 2 || p[0] != '<' || p[len - 1] != '>')
		return -EINVAL;
	/* RFC 5321 §4.5.3.1.3: a path is at most 256 octets incl. <> */
	if (len > 256)
		return -ENAMETOOLONG;
	p++;
	n = len - 2;
	if (n == 0) {
		if (!allow_null)
			return -EINVAL;
		*mbox = path + 1;
		*mbox_len = 0;
		return 0;
	}
	i = 0;
	/* A-d-l: source routes are accepted and ignored (§4.1.2, App. C). */
	if (p[0] == '@') {
		for (;;) {
			size_t s0;
			if (i >= n || p[i] != '@')
				return -EINVAL;
			s0 = ++i;
			while (i < n && p[i] != ',' && p[i] != ':')
				i++;
			if (i >= n)
				return -EINVAL;
			if (!parse_domain(p + s0, i - s0, false, &u8) &&
			    !parse_addr_literal(p + s0, i - s0))
				return -EINVAL;
			if (p[i++] == ':')
				break;
		}
	}
	lstart = i;
	if (i < n && p[i] == '"') {
		/* Quoted-string: qtextSMTP / quoted-pairSMTP (+ UTF-8). */
		i++;
		for (;;) {
			if (i >= n)
				return -EINVAL;
			if (p[i] == '"')
				break;
			if (p[i] == '\\') {
				if (i + 1 >= n || p[i + 1] < 32 || p[i + 1] > 126)
					return -EINVAL;
				i += 2;
			} else if (p[i] >= 32 && p[i] <= 126) {
				i++;
			} else if (p[i] >= 0x80) {
				size_t u = utf8_len(p + i, n - i);
				if (u == 0)
					return -EINVAL;
				u8 = true;
				i += u;
			} else {
				return -EINVAL;
			}
		}
		i++;
	} else {
		/* Dot-string = Atom *("." Atom) */
		int last = '.';
		while (i < n && p[i] != '@') {
			if (p[i] == '.') {
				if (last == '.')
					return -EINVAL;
				last = '.';
				i++;
			} else if (p[i] >= 0x80) {
				size_t u = utf8_len(p + i, n - i);
				if (u == 0)
					return -EINVAL;
				u8 = true;
				i += u;
				last = 'a';
			} else if (is_atext(p[i])) {
				last = p[i++];
			} else {
				return -EINVAL;
			}
		}
		if (i == lstart || last == '.')
			return -EINVAL;
	}
	llen = i - lstart;
	if (i >= n || p[i] != '@') {
		/* RFC 5321 §4.1.1.3: "Postmaster" without a domain. */
		if (i == n && ieq((const char *)p + lstart, llen, "postmaster")) {
			*mbox = path + 1 + lstart;
			*mbox_len = llen;
			return 0;
		}
		return -EINVAL;
	}
	/* RFC 5321 §4.5.3.1.1: local part at most 64 octets. */
	if (llen > 64)
		return -ENAMETOOLONG;
	i++; /* the '@' */
	if (i >= n)
		return -EINVAL;
	if (p[i] == '[') {
		if (!parse_addr_literal(p + i, n - i))
			return -EINVAL;
	} else if (!parse_domain(p + i, n - i, false, &u8)) {
		return -EINVAL;
	}
	*mbox = path + 1 + lstart;
	*mbox_len = n - lstart;
	*utf8 = u8;
	return 0;
}

/* xtext (RFC 3461 §4): chars 33..126 except '+' and '=', or "+" HEX HEX */
static bool is_hex_upper(int c)
{
	return is_digit(c) || (c >= 'A' && c <= 'F');
}

static bool is_xtext(const unsigned char *p, size_t n)
{
	size_t i;

	if (n == 0)
		return false;
	for (i = 0; i < n; i++) {
		if (p[i] == '+') {
			if (i + 2 >= n)
				return false;
			if (!is_hex_upper(p[i + 1]) || !is_hex_upper(p[i + 2]))
				return false;
			i += 2;
		} else if (p[i] < 33 || p[i] > 126 || p[i] == '=') {
			return false;
		}
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* greeting / EHLO                                                     */

static void send_greeting(struct smtp_session *s)
{
	const struct smtp_config *c = &s->srv->cfg;

	/* RFC 5321 §4.2: the 220 greeting; RFC 2034 §3 keeps enhanced
	 * codes out of the greeting. */
	replyf(s, "220 %s %s", c->hostname,
	       c->greeting ? c->greeting : "ESMTP mxedge");
	s->flags |= F_GREETED;
	if (s->st == ST_INIT || s->st == ST_PENDING)
		s->st = ST_CMD;
}

static void send_ehlo(struct smtp_session *s)
{
	const struct smtp_config *c = &s->srv->cfg;
	char buf[REPLY_MAX];
	int n;

	if (!(s->flags & F_ESMTP)) {
		replyf(s, "250 %s", c->hostname);
		return;
	}
	/* RFC 5321 §4.1.1.1 multi-line reply: "250-" lines, last "250 ". */
	n = snprintf(buf, sizeof(buf),
		     "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n"
		     "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n%s%s%s"
		     "250-DSN\r\n250 HELP",
		     c->hostname, (unsigned long long)c->max_message_size,
		     c->no_smtputf8 ? "" : "250-SMTPUTF8\r\n",
		     c->no_chunking ? "" : "250-CHUNKING\r\n",
		     (c->starttls && !(s->flags & F_TLS)) ? "250-STARTTLS\r\n" : "");
	write_line(s, buf, (size_t)n);
}

/* ------------------------------------------------------------------ */
/* body                                                                */

/* Pass message bytes up, unless the transaction already failed. */
static void body_out(struct smtp_session *s, const uint8_t *p, size_t n)
{
	struct smtp_event ev = { .type = SMTP_EV_BODY };

	if (n == 0 || (s->flags & (F_FAILED | F_DISCARD)))
		return;
	/* RFC 1870 §6.2: over the limit the message is refused (552), but
	 * the rest is still read so the session stays in sync. */
	if (s->msg_size + n > s->tx_max_size) {
		s->flags |= F_TOOBIG;
		return;
	}
	s->msg_size += n;
	ev.data = p;
	ev.len = n;
	if (emit(s, &ev) != SMTP_ACCEPT) {
		s->flags |= F_BODYFAIL;
		s->fail_reply = ev.reply;
	}
}

static const char *month[12] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};
static const char *wday[7] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };

const char *smtp_protocol(const struct smtp_session *s)
{
	/* RFC 3848 (ESMTPS/ESMTPA/ESMTPSA) and RFC 6531 §3.7.3 (UTF8SMTP*) */
	static const char *const names[2][4] = {
		{ "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA" },
		{ "UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA" },
	};
	int i = ((s->flags & F_TLS) ? 1 : 0) + ((s->flags & F_AUTH) ? 2 : 0);

	if (!(s->flags & F_ESMTP))
		return "SMTP";
	return names[(s->flags & F_UTF8TX) ? 1 : 0][i];
}

/*
 * Trace header, RFC 5321 §4.4:
 *   Received: from HELO ([IP])
 *           (using TLS-INFO)
 *           by HOST (mxedge) with PROTO id QID;
 *           DATE
 */
/*
 * UTC calendar fields from seconds since the epoch, without gmtime_r():
 * glibc's takes a process-wide lock (tzset_lock), which has no place on
 * an lcore.  Days to civil date after H. Hinnant's algorithm.
 */
struct civil {
	int year, mon, mday, wday, hour, min, sec;
};

static void civil_from_unix(int64_t t, struct civil *c)
{
	int64_t days = t / 86400, rem = t % 86400, z, era, doe, yoe, doy, mp;

	if (rem < 0) {
		rem += 86400;
		days--;
	}
	c->hour = (int)(rem / 3600);
	c->min = (int)(rem / 60 % 60);
	c->sec = (int)(rem % 60);
	c->wday = (int)((days % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
	z = days + 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	c->mday = (int)(doy - (153 * mp + 2) / 5 + 1);
	c->mon = (int)(mp < 10 ? mp + 2 : mp - 10); /* 0 = January */
	c->year = (int)(yoe + era * 400 + (c->mon <= 1 ? 1 : 0));
}

static void send_received(struct smtp_session *s)
{
	char buf[1024];
	int64_t t = s->srv->ops.unix_time ? s->srv->ops.unix_time(s->ctx) : 0;
	struct civil tm;
	int n;

	civil_from_unix(t, &tm);
	n = snprintf(buf, sizeof(buf), "Received: from %s ([%s])\r\n",
		     s->helo, s->peer ? s->peer : "unknown");
	if (s->tls_info != NULL && (size_t)n < sizeof(buf))
		n += snprintf(buf + n, sizeof(buf) - (size_t)n,
			      "\t(using %s)\r\n", s->tls_info);
	if ((size_t)n < sizeof(buf))
		n += snprintf(buf + n, sizeof(buf) - (size_t)n,
			      "\tby %s (mxedge) with %s%s%s;\r\n"
			      "\t%s, %02d %s %04d %02d:%02d:%02d +0000\r\n",
			      s->srv->cfg.hostname, smtp_protocol(s),
			      s->queue_id ? " id " : "",
			      s->queue_id ? s->queue_id : "",
			      wday[tm.wday % 7], tm.mday,
			      month[tm.mon % 12], tm.year,
			      tm.hour, tm.min, tm.sec);
	if ((size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	{
		struct smtp_event ev = { .type = SMTP_EV_BODY };
		ev.data = (const uint8_t *)buf;
		ev.len = (size_t)n;
		if (emit(s, &ev) != SMTP_ACCEPT) {
			s->flags |= F_BODYFAIL;
			s->fail_reply = ev.reply;
		}
	}
}

/* The message is complete: answer for it (RFC 5321 §4.1.1.4, RFC 3030). */
static void end_of_message(struct smtp_session *s)
{
	struct smtp_event ev = { .type = SMTP_EV_EOM };
	int v;

	s->st = ST_CMD;
	if (s->flags & F_FAILED) {
		if (s->flags & F_TOOBIG)
			reply(s, "552 5.3.4 Message size exceeds fixed limit");
		else if (s->flags & F_BARE)
			/* RFC 5321 §2.3.8: CR and LF only as CRLF. */
			reply(s, "550 5.6.0 Message contains bare CR or LF; "
				 "lines must end with CRLF");
		else
			reply_or(s, s->fail_reply,
				 "451 4.3.0 Error: could not store message");
		tx_abort(s);
		return;
	}
	ev.size = s->msg_size;
	ev.bdat = (s->flags & F_BDAT_TX) != 0;
	v = emit(s, &ev);
	if (v == SMTP_PENDING) {
		s->st = ST_PENDING;
		s->pend = P_EOM;
		return;
	}
	if (v == SMTP_ACCEPT && ev.reply == NULL) {
		if (s->queue_id)
			replyf(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
		else
			reply(s, "250 2.0.0 Ok: queued");
	} else {
		reply_or(s, ev.reply, "554 5.7.1 Message rejected");
	}
	tx_reset(s);
}

/*
 * DATA content.  End of data is CRLF "." CRLF and nothing else (RFC 5321
 * §4.1.1.4); the CRLF before the dot is the last line's own, so D_BOL is
 * only entered after a real CRLF.  A bare CR or LF never starts a line, so
 * no smuggling variant ("\n.\n", "\r.\r\n", "\n.\r\n", ...) ends the data.
 * Bytes are passed up in runs that point into the caller's input.
 * Returns bytes consumed; sets ST_CMD (via end_of_message) at the end.
 */
static size_t data_scan(struct smtp_session *s, const uint8_t *p, size_t n)
{
	bool norm = s->srv->cfg.bare_policy == SMTP_BARE_NORMALISE;
	size_t i = 0, rs = 0;

	while (i < n) {
		switch (s->dstate) {
		case D_BOL:
			if (p[i] == '.') {
				/* RFC 5321 §4.5.2: the leading dot goes. */
				body_out(s, p + rs, i - rs);
				rs = ++i;
				s->dstate = D_DOT;
			} else {
				s->dstate = D_TEXT;
			}
			break;
		case D_DOT:
			if (p[i] == '\r') {
				rs = ++i;
				s->dstate = D_DOTCR;
			} else {
				s->dstate = D_TEXT;
			}
			break;
		case D_DOTCR:
			if (p[i] == '\n') {
				i++;
				end_of_message(s);
				return i;
			}
			/* The dot was stuffing; the held CR is a bare one. */
			body_out(s, (const uint8_t *)"\r", 1);
			rs = i;
			s->dstate = D_CR;
			break;
		case D_CR:
			if (p[i] == '\n') {
				i++;
				s->dstate = D_BOL;
				break;
			}
			/* bare CR: the CR itself is already passed on */
			if (norm) {
				body_out(s, p + rs, i - rs);
				body_out(s, (const uint8_t *)"\n", 1);
				rs = i;
			} else {
				s->flags |= F_BARE;
			}
			s->dstate = D_TEXT;
			break;
		case D_TEXT: {
			const uint8_t *lf = memchr(p + i, '\n', n - i);
			size_t end = lf ? (size_t)(lf - p) : n;
			const uint8_t *cr = memchr(p + i, '\r', end - i);

			if (cr == NULL) {
				if (lf == NULL) {
					i = n;
					break;
				}
				/* bare LF: never a line start (smuggling) */
				if (norm) {
					body_out(s, p + rs, end - rs);
					body_out(s, (const uint8_t *)"\r\n", 2);
					rs = end + 1;
				} else {
					s->flags |= F_BARE;
				}
				i = end + 1;
				break;
			}
			i = (size_t)(cr - p) + 1;
			if (i == end && lf != NULL) {
				i++;
				s->dstate = D_BOL;
			} else {
				s->dstate = D_CR;
			}
			break;
		}
		}
	}
	if (s->dstate != D_DOT && s->dstate != D_DOTCR)
		body_out(s, p + rs, i - rs);
	return i;
}

/* ------------------------------------------------------------------ */
/* commands                                                            */

static bool need_ehlo(struct smtp_session *s)
{
	if (s->flags & F_HELO)
		return true;
	reply(s, "503 5.5.1 Error: send HELO/EHLO first");
	return false;
}

static void junk(struct smtp_session *s)
{
	/* Commands outside a transaction are limited so a client cannot
	 * hold a session forever with NOOPs. */
	if (!(s->flags & F_TX) && ++s->junk > s->srv->cfg.max_junk)
		close_421(s, "Error: too many commands");
}

static void do_helo(struct smtp_session *s, const char *arg, size_t n,
		    bool esmtp)
{
	struct smtp_event ev = { .type = SMTP_EV_HELO };
	const unsigned char *u = (const unsigned char *)arg;
	int v;

	if (n == 0 || n > HELO_MAX ||
	    !(u[0] == '[' ? parse_addr_literal(u, n)
			  : parse_domain(u, n, true, NULL))) {
		reply(s, esmtp ? "501 5.5.4 Syntax: EHLO hostname"
			       : "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	/* RFC 5321 §4.1.4: EHLO/HELO resets any transaction. */
	tx_abort(s);
	memcpy(s->helo, arg, n);
	s->helo[n] = '\0';
	s->flags &= ~(uint32_t)(F_HELO | F_ESMTP);
	if (esmtp)
		s->flags |= F_ESMTP;
	ev.addr = arg;
	ev.addr_len = n;
	ev.esmtp = esmtp;
	v = emit(s, &ev);
	if (v == SMTP_PENDING) {
		s->st = ST_PENDING;
		s->pend = P_HELO;
		return;
	}
	if (v == SMTP_ACCEPT) {
		s->flags |= F_HELO;
		send_ehlo(s);
	} else {
		s->helo[0] = '\0';
		s->flags &= ~(uint32_t)F_ESMTP;
		reply_or(s, ev.reply, "550 5.7.1 Error: HELO rejected");
	}
}

/* Find the end of "<...>" at p (quotes and backslashes respected). */
static size_t path_end(const char *p, size_t n)
{
	size_t i;
	bool q = false;

	if (n == 0 || p[0] != '<')
		return 0;
	for (i = 1; i < n; i++) {
		if (q && p[i] == '\\') {
			i++;
			continue;
		}
		if (p[i] == '"')
			q = !q;
		else if (!q && p[i] == '>')
			return i + 1;
	}
	return 0;
}

/* Next esmtp-param: keyword [= value]; returns false at end. */
static bool next_param(const char **pp, const char *end, const char **kw,
		       size_t *kwlen, const char **val, size_t *vlen)
{
	const char *p = *pp;

	while (p < end && *p == ' ')
		p++;
	if (p >= end)
		return false;
	*kw = p;
	while (p < end && *p != ' ' && *p != '=')
		p++;
	*kwlen = (size_t)(p - *kw);
	*val = NULL;
	*vlen = 0;
	if (p < end && *p == '=') {
		*val = ++p;
		while (p < end && *p != ' ')
			p++;
		*vlen = (size_t)(p - *val);
	}
	*pp = p;
	return true;
}

static bool valid_keyword(const char *k, size_t n)
{
	size_t i;

	if (n == 0 || !is_alnum((unsigned char)k[0]))
		return false;
	for (i = 1; i < n; i++)
		if (!is_alnum((unsigned char)k[i]) && k[i] != '-')
			return false;
	return true;
}

static bool valid_value(const char *v, size_t n, bool utf8)
{
	size_t i;

	if (n == 0)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c >= 0x80 && utf8) {
			size_t u = utf8_len((const unsigned char *)v + i, n - i);
			if (u == 0)
				return false;
			i += u - 1;
		} else if (c < 33 || c > 126 || c == '=') {
			return false;
		}
	}
	return true;
}

/* "FROM:" / "TO:" then optional spaces (Postfix-style leniency). */
static bool skip_prefix(const char **pp, size_t *np, const char *pfx)
{
	size_t k = strlen(pfx);

	if (*np < k || !ieq(*pp, k, pfx))
		return false;
	*pp += k;
	*np -= k;
	while (*np > 0 && **pp == ' ') {
		(*pp)++;
		(*np)--;
	}
	return true;
}

/* The argument shape MAIL and RCPT share: "FROM:<path> params" / "TO:..." */
struct path_cmd {
	const char *prefix;   /* "FROM:" or "TO:" */
	bool allow_null;      /* "<>" allowed (MAIL only) */
	const char *syntax;   /* reply for a malformed argument */
	const char *too_long; /* reply for a path over the §4.5.3.1 limits */
	const char *bad;      /* reply for a bad address */
	const char *bad_param;/* reply for a malformed parameter */
};

static const struct path_cmd mail_cmd = {
	"FROM:", true, "501 5.5.4 Syntax: MAIL FROM:<address>",
	"501 5.1.7 Sender address too long", "501 5.1.7 Bad sender address syntax",
	"501 5.5.4 Bad MAIL parameter syntax",
};
static const struct path_cmd rcpt_cmd = {
	"TO:", false, "501 5.5.4 Syntax: RCPT TO:<address>",
	"501 5.1.3 Recipient address too long", "501 5.1.3 Bad recipient address syntax",
	"501 5.5.4 Bad RCPT parameter syntax",
};

/*
 * Parses "<prefix><path>[ params]" into ev->addr/addr_len and *utf8, and
 * leaves [*pp, *end) at the parameter list. Replies and returns false on a
 * syntax error.
 */
static bool parse_path_cmd(struct smtp_session *s, const char *a, size_t n,
			   const struct path_cmd *pc, struct smtp_event *ev,
			   bool *utf8, const char **pp, const char **end)
{
	size_t pe;
	int r;

	if (!skip_prefix(&a, &n, pc->prefix) || (pe = path_end(a, n)) == 0) {
		reply(s, pc->syntax);
		return false;
	}
	r = smtp_parse_path(a, pe, pc->allow_null, &ev->addr, &ev->addr_len, utf8);
	if (r < 0) {
		reply(s, r == -ENAMETOOLONG ? pc->too_long : pc->bad);
		return false;
	}
	*end = a + n;
	*pp = a + pe;
	if (*pp < *end && **pp != ' ') {
		reply(s, pc->syntax);
		return false;
	}
	return true;
}

/*
 * Checks one parameter before its keyword is interpreted. Replies and
 * returns false when parameters are not allowed or malformed.
 */
static bool param_ok(struct smtp_session *s, const struct path_cmd *pc,
		     const char *kw, size_t kwlen, const char *val, size_t vlen)
{
	if (!(s->flags & F_ESMTP)) {
		/* RFC 5321 §4.1.1.11: parameters need EHLO. */
		reply(s, "555 5.5.4 Error: parameters need EHLO");
		return false;
	}
	if (!valid_keyword(kw, kwlen) ||
	    (val != NULL && !valid_value(val, vlen, true))) {
		reply(s, pc->bad_param);
		return false;
	}
	return true;
}

static void do_mail(struct smtp_session *s, const char *a, size_t n)
{
	struct smtp_event ev = { .type = SMTP_EV_MAIL };
	const char *end, *pp, *kw, *val;
	size_t kwlen, vlen;
	bool utf8 = false, has_size = false;
	int v;

	if (!need_ehlo(s))
		return;
	if (s->flags & F_TX) {
		reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (!parse_path_cmd(s, a, n, &mail_cmd, &ev, &utf8, &pp, &end))
		return;
	while (next_param(&pp, end, &kw, &kwlen, &val, &vlen)) {
		if (!param_ok(s, &mail_cmd, kw, kwlen, val, vlen))
			return;
		if (ieq(kw, kwlen, "SIZE")) {
			uint64_t sz = 0;
			size_t i;
			if (has_size || val == NULL || vlen > 19) {
				reply(s, "501 5.5.4 Bad SIZE parameter");
				return;
			}
			for (i = 0; i < vlen; i++) {
				if (!is_digit((unsigned char)val[i])) {
					reply(s, "501 5.5.4 Bad SIZE parameter");
					return;
				}
				sz = sz * 10 + (uint64_t)(val[i] - '0');
			}
			has_size = true;
			ev.size = sz;
		} else if (ieq(kw, kwlen, "BODY")) {
			if (ev.body != SMTP_BODY_NONE || val == NULL) {
				reply(s, "501 5.5.4 Bad BODY parameter");
				return;
			}
			if (ieq(val, vlen, "7BIT"))
				ev.body = SMTP_BODY_7BIT;
			else if (ieq(val, vlen, "8BITMIME"))
				ev.body = SMTP_BODY_8BITMIME;
			else {
				/* BINARYMIME is not offered (RFC 3030 §3). */
				reply(s, "555 5.5.4 Unsupported BODY type");
				return;
			}
		} else if (ieq(kw, kwlen, "SMTPUTF8") &&
			   !s->srv->cfg.no_smtputf8) {
			if (ev.smtputf8 || val != NULL) {
				reply(s, "501 5.5.4 Bad SMTPUTF8 parameter");
				return;
			}
			ev.smtputf8 = true;
		} else if (ieq(kw, kwlen, "RET")) {
			if (ev.ret != SMTP_RET_NONE || val == NULL) {
				reply(s, "501 5.5.4 Bad RET parameter");
				return;
			}
			if (ieq(val, vlen, "FULL"))
				ev.ret = SMTP_RET_FULL;
			else if (ieq(val, vlen, "HDRS"))
				ev.ret = SMTP_RET_HDRS;
			else {
				reply(s, "501 5.5.4 Bad RET parameter");
				return;
			}
		} else if (ieq(kw, kwlen, "ENVID")) {
			/* RFC 3461 §4.4: xtext, at most 100 characters */
			if (ev.envid != NULL || val == NULL || vlen > 100 ||
			    !is_xtext((const unsigned char *)val, vlen)) {
				reply(s, "501 5.5.4 Bad ENVID parameter");
				return;
			}
			ev.envid = val;
			ev.envid_len = vlen;
		} else {
			reply(s, "555 5.5.4 Unsupported MAIL parameter");
			return;
		}
	}
	if (utf8 && !ev.smtputf8) {
		/* RFC 6531 §3.5 */
		reply(s, "553 5.6.7 Non-ASCII sender needs SMTPUTF8");
		return;
	}
	if (ev.size > s->srv->cfg.max_message_size) {
		/* RFC 1870 §6.1: refuse early on the declared size. */
		reply(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	tx_reset(s);
	/* Limits changed live (smtp_server_set_limits) apply from the next
	 * MAIL: a transaction keeps the ones it was accepted under, so a
	 * message already being sent is not refused half-way. */
	s->tx_max_size = s->srv->cfg.max_message_size;
	s->tx_max_rcpts = (uint16_t)s->srv->cfg.max_rcpts;
	if (ev.smtputf8)
		s->flags |= F_UTF8TX;
	v = emit(s, &ev);
	s->queue_id = ev.queue_id;
	if (v == SMTP_PENDING) {
		s->st = ST_PENDING;
		s->pend = P_MAIL;
		return;
	}
	if (v == SMTP_ACCEPT) {
		s->flags |= F_TX;
		s->junk = 0;
		reply_or(s, ev.reply, "250 2.1.0 Ok");
	} else {
		tx_reset(s);
		reply_or(s, ev.reply, "550 5.7.1 Sender rejected");
	}
}

static void do_rcpt(struct smtp_session *s, const char *a, size_t n)
{
	struct smtp_event ev = { .type = SMTP_EV_RCPT };
	const char *end, *pp, *kw, *val;
	size_t kwlen, vlen;
	bool utf8 = false;
	int v;

	if (!(s->flags & F_TX)) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->flags & F_BDAT_TX) {
		reply(s, "503 5.5.1 Error: RCPT after BDAT");
		return;
	}
	if (!parse_path_cmd(s, a, n, &rcpt_cmd, &ev, &utf8, &pp, &end))
		return;
	while (next_param(&pp, end, &kw, &kwlen, &val, &vlen)) {
		if (!param_ok(s, &rcpt_cmd, kw, kwlen, val, vlen))
			return;
		if (ieq(kw, kwlen, "NOTIFY")) {
			/* RFC 3461 §4.1: NEVER alone, or a list */
			const char *t = val, *vend;
			if (ev.notify != 0 || val == NULL) {
				reply(s, "501 5.5.4 Bad NOTIFY parameter");
				return;
			}
			vend = val + vlen;
			while (t < vend) {
				const char *c = memchr(t, ',', (size_t)(vend - t));
				size_t tl = (size_t)((c ? c : vend) - t);
				unsigned bit;
				if (ieq(t, tl, "NEVER"))
					bit = SMTP_NOTIFY_NEVER;
				else if (ieq(t, tl, "SUCCESS"))
					bit = SMTP_NOTIFY_SUCCESS;
				else if (ieq(t, tl, "FAILURE"))
					bit = SMTP_NOTIFY_FAILURE;
				else if (ieq(t, tl, "DELAY"))
					bit = SMTP_NOTIFY_DELAY;
				else
					bit = 0;
				if (bit == 0 || (ev.notify & bit)) {
					reply(s, "501 5.5.4 Bad NOTIFY parameter");
					return;
				}
				ev.notify |= bit;
				t += tl + (c ? 1 : 0);
				if (c != NULL && t == vend) {
					reply(s, "501 5.5.4 Bad NOTIFY parameter");
					return;
				}
			}
			if ((ev.notify & SMTP_NOTIFY_NEVER) &&
			    ev.notify != SMTP_NOTIFY_NEVER) {
				reply(s, "501 5.5.4 Bad NOTIFY parameter");
				return;
			}
		} else if (ieq(kw, kwlen, "ORCPT")) {
			/* RFC 3461 §4.2: addr-type ";" xtext */
			const char *semi = val ? memchr(val, ';', vlen) : NULL;
			if (ev.orcpt != NULL || semi == NULL || semi == val ||
			    vlen > 500 ||
			    !valid_keyword(val, (size_t)(semi - val)) ||
			    !is_xtext((const unsigned char *)semi + 1,
				      vlen - (size_t)(semi - val) - 1)) {
				reply(s, "501 5.5.4 Bad ORCPT parameter");
				return;
			}
			ev.orcpt = val;
			ev.orcpt_len = vlen;
		} else {
			reply(s, "555 5.5.4 Unsupported RCPT parameter");
			return;
		}
	}
	if (utf8 && !(s->flags & F_UTF8TX)) {
		reply(s, "553 5.6.7 Non-ASCII recipient needs SMTPUTF8");
		return;
	}
	if (s->nrcpt >= s->tx_max_rcpts) {
		/* RFC 5321 §4.5.3.1.10 */
		reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	v = emit(s, &ev);
	if (v == SMTP_PENDING) {
		s->st = ST_PENDING;
		s->pend = P_RCPT;
		return;
	}
	if (v == SMTP_ACCEPT) {
		s->nrcpt++;
		reply_or(s, ev.reply, "250 2.1.5 Ok");
	} else {
		reply_or(s, ev.reply, "550 5.1.1 Recipient rejected");
	}
}

/* Content may start: common checks for DATA and the first BDAT. */
static bool content_ok(struct smtp_session *s, bool bdat)
{
	if (!(s->flags & F_TX)) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return false;
	}
	if (s->nrcpt == 0) {
		/* RFC 5321 §3.3: "no valid recipients" */
		reply(s, "554 5.5.1 Error: no valid recipients");
		return false;
	}
	if (!bdat && (s->flags & F_BDAT_TX)) {
		/* RFC 3030 §2: DATA and BDAT do not mix in one transaction */
		reply(s, "503 5.5.1 Error: DATA after BDAT");
		return false;
	}
	return true;
}

static void start_data(struct smtp_session *s)
{
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	s->st = ST_DATA;
	s->dstate = D_BOL;
	s->msg_size = 0;
	send_received(s);
}

static void do_data(struct smtp_session *s, const char *a, size_t n)
{
	struct smtp_event ev = { .type = SMTP_EV_DATA };
	int v;

	if (n != 0) {
		reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (!content_ok(s, false))
		return;
	v = emit(s, &ev);
	if (v == SMTP_PENDING) {
		s->st = ST_PENDING;
		s->pend = P_DATA;
		return;
	}
	if (v == SMTP_ACCEPT) {
		start_data(s);
	} else {
		reply_or(s, ev.reply, "554 5.7.1 Error: transaction rejected");
		tx_abort(s);
	}
}

/* A BDAT chunk ends: reply for it (RFC 3030 §2). */
static void bdat_done(struct smtp_session *s)
{
	s->st = ST_CMD;
	if (s->flags & F_DISCARD) {
		s->flags &= ~(uint32_t)F_DISCARD;
		return; /* already answered when the command came */
	}
	if (s->flags & F_BDAT_LAST) {
		end_of_message(s);
		return;
	}
	if (s->flags & F_FAILED) {
		/* fail now; further BDATs get 503 until a new MAIL */
		end_of_message(s);
		return;
	}
	replyf(s, "250 2.0.0 %llu octets received",
	       (unsigned long long)s->bdat_chunk);
}

static void bdat_start_chunk(struct smtp_session *s)
{
	if (s->st == ST_CLOSE)
		return;
	s->st = ST_BDAT;
	if (s->bdat_left == 0)
		bdat_done(s);
}

static void do_bdat(struct smtp_session *s, const char *a, size_t n)
{
	struct smtp_event ev = { .type = SMTP_EV_DATA };
	uint64_t sz = 0;
	size_t i = 0;
	bool last = false;
	int v;

	if (s->srv->cfg.no_chunking) {
		reply(s, "502 5.5.1 Error: command not offered here");
		return;
	}
	while (i < n && is_digit((unsigned char)a[i]) && i < 19)
		sz = sz * 10 + (uint64_t)(a[i++] - '0');
	if (i == 0 || (i < n && a[i] != ' ')) {
		/* The chunk size is unknown, so the session cannot stay in
		 * sync with the client: close it (RFC 3030 §2). */
		reply(s, "501 5.5.4 Syntax: BDAT count [LAST]");
		close_421(s, "Error: BDAT syntax, closing");
		return;
	}
	while (i < n && a[i] == ' ')
		i++;
	if (i < n) {
		if (!ieq(a + i, n - i, "LAST")) {
			reply(s, "501 5.5.4 Syntax: BDAT count [LAST]");
			close_421(s, "Error: BDAT syntax, closing");
			return;
		}
		last = true;
	}
	s->bdat_left = sz;
	s->bdat_chunk = sz;
	s->flags &= ~(uint32_t)(F_DISCARD | F_BDAT_LAST);
	if (last)
		s->flags |= F_BDAT_LAST;
	if ((s->flags & F_BDAT_TX) && (s->flags & F_TX)) {
		bdat_start_chunk(s);
		return;
	}
	/* First chunk of the transaction. */
	if (!content_ok(s, true)) {
		/* RFC 3030 §2: the chunk is still read, and dropped. */
		s->flags |= F_DISCARD;
		bdat_start_chunk(s);
		return;
	}
	s->flags |= F_BDAT_TX;
	v = emit(s, &ev);
	if (v == SMTP_PENDING) {
		s->st = ST_PENDING;
		s->pend = P_BDAT;
		return;
	}
	if (v == SMTP_ACCEPT) {
		s->msg_size = 0;
		send_received(s);
	} else {
		reply_or(s, ev.reply, "554 5.7.1 Error: transaction rejected");
		tx_abort(s);
		s->flags |= F_DISCARD;
	}
	bdat_start_chunk(s);
}

static void do_starttls(struct smtp_session *s, size_t n)
{
	struct smtp_event ev = { .type = SMTP_EV_STARTTLS };

	if (n != 0) {
		reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->flags & F_TLS) {
		reply(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (!s->srv->cfg.starttls) {
		reply(s, "502 5.5.1 Error: command not offered here");
		return;
	}
	/* RFC 3207 §4: 220, then nothing more is read in clear: whatever
	 * the client pipelined after STARTTLS is dropped by the caller
	 * (CVE-2011-0411 command injection). */
	reply(s, "220 2.0.0 Ready to start TLS");
	tx_abort(s);
	s->st = ST_TLS;
	emit(s, &ev);
}

/* One complete command line (without its line end). */
static void command(struct smtp_session *s, const char *l, size_t n)
{
	const char *arg;
	size_t vlen = 0, alen;

	while (n > 0 && (l[n - 1] == ' ' || l[n - 1] == '\t'))
		n--;
	if (memchr(l, '\r', n) != NULL || memchr(l, '\0', n) != NULL) {
		reply(s, "500 5.5.2 Error: bad character in command");
		return;
	}
	while (vlen < n && l[vlen] != ' ')
		vlen++;
	arg = l + vlen;
	alen = n - vlen;
	if (alen > 0) {
		arg++;
		alen--;
	}

	if (ieq(l, vlen, "EHLO") || ieq(l, vlen, "HELO")) {
		junk(s);
		if (s->st == ST_CLOSE)
			return;
		do_helo(s, arg, alen, lc((unsigned char)l[0]) == 'e');
	} else if (ieq(l, vlen, "MAIL")) {
		do_mail(s, arg, alen);
	} else if (ieq(l, vlen, "RCPT")) {
		do_rcpt(s, arg, alen);
	} else if (ieq(l, vlen, "DATA")) {
		do_data(s, arg, alen);
	} else if (ieq(l, vlen, "BDAT")) {
		do_bdat(s, arg, alen);
	} else if (ieq(l, vlen, "RSET")) {
		junk(s);
		if (s->st == ST_CLOSE)
			return;
		if (alen != 0) {
			reply(s, "501 5.5.4 Syntax: RSET");
			return;
		}
		tx_abort(s);
		reply(s, "250 2.0.0 Ok");
	} else if (ieq(l, vlen, "NOOP")) {
		junk(s);
		if (s->st != ST_CLOSE)
			reply(s, "250 2.0.0 Ok");
	} else if (ieq(l, vlen, "QUIT")) {
		replyf(s, "221 2.0.0 %s Bye", s->srv->cfg.hostname);
		tx_abort(s);
		set_close(s);
	} else if (ieq(l, vlen, "VRFY")) {
		junk(s);
		if (s->st == ST_CLOSE)
			return;
		if (alen == 0)
			reply(s, "501 5.5.4 Syntax: VRFY address");
		else /* RFC 5321 §3.5.3 */
			reply(s, "252 2.5.0 Cannot VRFY user, but will accept "
				 "message and attempt delivery");
	} else if (ieq(l, vlen, "EXPN")) {
		junk(s);
		if (s->st != ST_CLOSE)
			reply(s, "502 5.5.1 Error: EXPN not supported");
	} else if (ieq(l, vlen, "HELP")) {
		junk(s);
		if (s->st != ST_CLOSE)
			reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA "
				 "BDAT RSET NOOP QUIT VRFY HELP STARTTLS");
	} else if (ieq(l, vlen, "STARTTLS")) {
		do_starttls(s, alen);
	} else {
		junk(s);
		if (s->st != ST_CLOSE)
			reply(s, "500 5.5.2 Error: command not recognized");
	}
}

/* A line ended by LF at l[n-1]; checks the line end, then runs it. */
static void line_done(struct smtp_session *s, const char *l, size_t n)
{
	if (s->flags & F_LONGLINE) {
		/* RFC 5321 §4.5.3.1.4 / §4.2.2: 500 Line too long */
		s->flags &= ~(uint32_t)F_LONGLINE;
		reply(s, "500 5.5.2 Error: line too long");
		return;
	}
	if (n > s->srv->cfg.max_line) {
		reply(s, "500 5.5.2 Error: line too long");
		return;
	}
	if (n >= 2 && l[n - 2] == '\r') {
		command(s, l, n - 2);
	} else if (s->srv->cfg.bare_policy == SMTP_BARE_NORMALISE) {
		command(s, l, n - 1);
	} else {
		/* RFC 5321 §2.3.8: lines end with CRLF only. */
		reply(s, "500 5.5.2 Error: bare <LF> received");
	}
}

/* Command mode: returns bytes consumed. */
static size_t cmd_scan(struct smtp_session *s, const uint8_t *p, size_t n)
{
	size_t max = s->srv->cfg.max_line;
	const uint8_t *lf = memchr(p, '\n', n);
	size_t k = lf ? (size_t)(lf - p) + 1 : n;

	if (s->flags & F_LONGLINE) {
		if (lf)
			line_done(s, NULL, 0);
		return k;
	}
	if (s->line != NULL) {
		/* A partial line is pending: append. */
		if (s->line_len + k > max) {
			buf_put(s);
			s->flags |= F_LONGLINE;
			if (lf)
				line_done(s, NULL, 0);
			return k;
		}
		memcpy(s->line + s->line_len, p, k);
		s->line_len = (uint16_t)(s->line_len + k);
		if (lf) {
			/* The line is handed over; give the buffer back
			 * after it ran (events see its bytes). */
			uint8_t *l = s->line;
			size_t ln = s->line_len;
			s->line = NULL;
			s->line_len = 0;
			line_done(s, (const char *)l, ln);
			s->line = l;
			buf_put(s);
		}
		return k;
	}
	if (lf) {
		line_done(s, (const char *)p, k);
		return k;
	}
	/* Partial line at the end of the input. */
	if (n > max) {
		s->flags |= F_LONGLINE;
		return n;
	}
	s->line = buf_get(s->srv);
	if (s->line == NULL)
		return 0; /* pool empty: the caller keeps the bytes */
	memcpy(s->line, p, n);
	s->line_len = (uint16_t)n;
	return n;
}

/* ------------------------------------------------------------------ */
/* public entry points                                                 */

struct smtp_session *smtp_session_init(void *mem, struct smtp_server *srv,
				       void *ctx, const char *peer,
				       uint64_t now_ms)
{
	struct smtp_session *s = mem;

	memset(s, 0, sizeof(*s));
	s->srv = srv;
	s->ctx = ctx;
	s->peer = peer;
	s->last_ms = now_ms;
	s->st = ST_INIT;
	return s;
}

int smtp_start(struct smtp_session *s, uint64_t now_ms)
{
	struct smtp_event ev = { .type = SMTP_EV_CONNECT };
	int v;

	if (s->st != ST_INIT)
		return -EINVAL;
	s->last_ms = now_ms;
	v = emit(s, &ev);
	if (v == SMTP_PENDING) {
		s->st = ST_PENDING;
		s->pend = P_CONNECT;
	} else if (v == SMTP_ACCEPT) {
		send_greeting(s);
	} else {
		/* RFC 5321 §3.1: 554 instead of the greeting */
		reply_or(s, ev.reply, "554 5.7.1 Error: connection rejected");
		set_close(s);
	}
	return 0;
}

size_t smtp_input(struct smtp_session *s, const uint8_t *data, size_t len,
		  uint64_t now_ms)
{
	size_t i = 0;

	if (len == 0)
		return 0;
	if (!(s->flags & F_GREETED)) {
		/* Early talker: the client spoke before our greeting
		 * (RFC 5321 §3.1 / §4.3.1: wait for the 220).  Reported
		 * once; the bytes stay with the caller. */
		if (!(s->flags & F_EARLY) && s->st != ST_CLOSE) {
			struct smtp_event ev = { .type = SMTP_EV_EARLY_TALKER };
			s->flags |= F_EARLY;
			emit(s, &ev);
		}
		return 0;
	}
	s->last_ms = now_ms;
	while (i < len) {
		switch (s->st) {
		case ST_CMD:
			{
				size_t k = cmd_scan(s, data + i, len - i);
				if (k == 0)
					return i;
				i += k;
			}
			break;
		case ST_DATA:
			i += data_scan(s, data + i, len - i);
			break;
		case ST_BDAT: {
			size_t k = len - i;
			if (k > s->bdat_left)
				k = (size_t)s->bdat_left;
			body_out(s, data + i, k);
			s->bdat_left -= k;
			i += k;
			if (s->bdat_left == 0)
				bdat_done(s);
			break;
		}
		default:
			return i;
		}
	}
	return i;
}

enum smtp_want smtp_wants(const struct smtp_session *s)
{
	switch (s->st) {
	case ST_INIT:
	case ST_PENDING:
		return SMTP_WANT_ANSWER;
	case ST_TLS:
		return SMTP_WANT_TLS;
	case ST_CLOSE:
		return SMTP_WANT_CLOSE;
	default:
		return SMTP_WANT_INPUT;
	}
}

int smtp_complete(struct smtp_session *s, enum smtp_verdict verdict,
		  const char *r, uint64_t now_ms)
{
	enum pend p = (enum pend)s->pend;
	bool ok = verdict == SMTP_ACCEPT;

	if (s->st != ST_PENDING || p == P_NONE || verdict == SMTP_PENDING)
		return -EINVAL;
	s->st = ST_CMD;
	s->pend = P_NONE;
	s->last_ms = now_ms;
	switch (p) {
	case P_CONNECT:
		if (ok && r == NULL) {
			send_greeting(s);
		} else if (ok) {
			reply(s, r);
			s->flags |= F_GREETED;
		} else {
			reply_or(s, r, "554 5.7.1 Error: connection rejected");
			set_close(s);
		}
		break;
	case P_HELO:
		if (ok) {
			s->flags |= F_HELO;
			send_ehlo(s);
		} else {
			s->helo[0] = '\0';
			s->flags &= ~(uint32_t)F_ESMTP;
			reply_or(s, r, "550 5.7.1 Error: HELO rejected");
		}
		break;
	case P_MAIL:
		if (ok) {
			s->flags |= F_TX;
			s->junk = 0;
			reply_or(s, r, "250 2.1.0 Ok");
		} else {
			tx_reset(s);
			reply_or(s, r, "550 5.7.1 Sender rejected");
		}
		break;
	case P_RCPT:
		if (ok) {
			s->nrcpt++;
			reply_or(s, r, "250 2.1.5 Ok");
		} else {
			reply_or(s, r, "550 5.1.1 Recipient rejected");
		}
		break;
	case P_DATA:
		if (ok) {
			start_data(s);
		} else {
			reply_or(s, r, "554 5.7.1 Error: transaction rejected");
			tx_abort(s);
		}
		break;
	case P_BDAT:
		if (ok) {
			s->msg_size = 0;
			send_received(s);
		} else {
			reply_or(s, r, "554 5.7.1 Error: transaction rejected");
			tx_abort(s);
			s->flags |= F_DISCARD;
		}
		bdat_start_chunk(s);
		break;
	case P_EOM:
		if (ok && r == NULL) {
			if (s->queue_id)
				replyf(s, "250 2.0.0 Ok: queued as %s",
				       s->queue_id);
			else
				reply(s, "250 2.0.0 Ok: queued");
		} else {
			reply_or(s, r, "554 5.7.1 Message rejected");
		}
		tx_reset(s);
		break;
	default:
		break;
	}
	return 0;
}

int smtp_tls_started(struct smtp_session *s, const char *tls_info,
		     uint64_t now_ms)
{
	if (s->st != ST_TLS)
		return -EINVAL;
	/* RFC 3207 §4.2: discard all knowledge obtained from the client. */
	tx_reset(s);
	s->flags &= ~(uint32_t)(F_HELO | F_ESMTP | F_AUTH);
	s->flags |= F_TLS;
	s->helo[0] = '\0';
	s->tls_info = tls_info;
	s->st = ST_CMD;
	s->last_ms = now_ms;
	buf_put(s);
	return 0;
}

void smtp_set_authenticated(struct smtp_session *s, bool auth)
{
	if (auth)
		s->flags |= F_AUTH;
	else
		s->flags &= ~(uint32_t)F_AUTH;
}

uint64_t smtp_deadline(const struct smtp_session *s)
{
	switch (s->st) {
	case ST_CMD:
		return s->last_ms + s->srv->cfg.cmd_timeout_ms;
	case ST_DATA:
	case ST_BDAT:
		return s->last_ms + s->srv->cfg.data_timeout_ms;
	default:
		return UINT64_MAX;
	}
}

bool smtp_timeout(struct smtp_session *s, uint64_t now_ms)
{
	if (now_ms < smtp_deadline(s))
		return false;
	/* RFC 5321 §4.5.3.2: the server may close after its timeout; a
	 * 421 tells the client why (§3.8). */
	{
		char buf[REPLY_MAX];
		snprintf(buf, sizeof(buf),
			 "421 4.4.2 %s Error: timeout exceeded",
			 s->srv->cfg.hostname);
		write_line(s, buf, strlen(buf));
	}
	tx_abort(s);
	set_close(s);
	return true;
}

void smtp_session_fini(struct smtp_session *s)
{
	if (s->srv == NULL)
		return;
	tx_abort(s);
	buf_put(s);
	s->st = ST_CLOSE;
	s->srv = NULL;
}

const char *smtp_helo(const struct smtp_session *s)
{
	return s->helo;
}

bool smtp_early_talker(const struct smtp_session *s)
{
	return (s->flags & F_EARLY) != 0;
}
