/*
 * relay_util.c - the relay's pure helpers (relay.h): retry backoff, status
 * codes, dot-stuffing and RFC 3464 bounce messages. No I/O, so the unit
 * tests pin them down exactly.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay.h"

uint64_t relay_backoff_s(const struct cfg_relay *rc, unsigned attempt, uint32_t rnd)
{
	uint64_t d = rc->min_backoff_s, jitter;

	/* Doubling per failed attempt like Postfix's queue manager, so a
	 * server that is down for hours is not hammered, capped so mail
	 * still goes out soon after it returns. */
	while (attempt-- > 1 && d < rc->max_backoff_s)
		d *= 2;
	if (d > rc->max_backoff_s)
		d = rc->max_backoff_s;
	/* Jitter (-25%..+25%) spreads retries of mail deferred together
	 * (a destination outage) so they do not all return in one burst. */
	jitter = d / 2;
	if (jitter)
		d = d - d / 4 + rnd % (jitter + 1);
	if (d < rc->min_backoff_s)
		d = rc->min_backoff_s;
	if (d > rc->max_backoff_s)
		d = rc->max_backoff_s;
	return d;
}

void relay_dsn_of(int code, const char *text, char *out)
{
	const char *p = text;
	int cls = code / 100;

	/* RFC 3463 §2: class.subject.detail, subject and detail 1-3 digits. */
	if (p && p[0] == '0' + cls && p[1] == '.') {
		size_t a = strspn(p + 2, "0123456789"), b;

		if (a >= 1 && a <= 3 && p[2 + a] == '.') {
			b = strspn(p + 3 + a, "0123456789");
			if (b >= 1 && b <= 3 && (p[3 + a + b] == ' ' || p[3 + a + b] == '\0')) {
				snprintf(out, 16, "%.*s", (int)(3 + a + b), p);
				return;
			}
		}
	}
	snprintf(out, 16, "%d.0.0", cls >= 2 && cls <= 5 ? cls : 4);
}

size_t relay_dot_stuff_bound(size_t len)
{
	/* Every doubled dot needs a line start holding a '.', and line
	 * starts after the first need a '\n' before them: at most one
	 * extra byte per two input bytes, rounded up; then CRLF and ".CRLF". */
	return len + (len + 1) / 2 + 5;
}

/* Does the message lack a final CRLF (RFC 5321 §4.1.1.4: the body ends
 * with one before the terminating dot)? An empty message needs none. */
static bool needs_crlf(const unsigned char *msg, size_t len)
{
	return len > 0 && !(len >= 2 && msg[len - 2] == '\r' && msg[len - 1] == '\n');
}

/* The exact stuffed size: the line starts that hold a '.' (the first
 * byte and every byte after a '\n', bare LF included, as the writer
 * below) found with memchr, not byte by byte. */
static size_t dot_stuff_size(const unsigned char *msg, size_t len)
{
	const unsigned char *p = msg, *end = msg + len;
	size_t n = len + 3 + (needs_crlf(msg, len) ? 2 : 0);

	while (p < end) {
		const unsigned char *nl;

		if (*p == '.')
			n++;
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	return n;
}

size_t relay_dot_stuff(const unsigned char *msg, size_t len, char *out, size_t cap)
{
	const unsigned char *p = msg, *end = msg + len;
	char *o = out;

	/* A caller that reserved relay_dot_stuff_bound() bytes gets one
	 * pass; anyone else gets the size checked first. */
	if (out == NULL || cap < relay_dot_stuff_bound(len)) {
		size_t need = dot_stuff_size(msg, len);

		if (out == NULL || need > cap)
			return need;
	}
	/* RFC 5321 §4.5.2: a line that starts with '.' gets one more. A
	 * line starts at the first byte and after every '\n' (a bare LF
	 * too, as receivers that accept bare LF would see a line there);
	 * a bare CR does not start one. Whole lines go with one memcpy. */
	while (p < end) {
		const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t k = nl ? (size_t)(nl + 1 - p) : (size_t)(end - p);

		if (*p == '.')
			*o++ = '.';
		memcpy(o, p, k);
		o += k;
		p += k;
	}
	if (needs_crlf(msg, len)) {
		*o++ = '\r';
		*o++ = '\n';
	}
	memcpy(o, ".\r\n", 3);
	o += 3;
	return (size_t)(o - out);
}

/* A growing output buffer; on ENOMEM it stops growing and reports it. */
struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

__attribute__((format(printf, 2, 3)))
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = (b->cap + (size_t)n + 1) * 2;
		char *np = realloc(b->p, ncap);

		if (np == NULL) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

static void sb_put(struct sbuf *b, const void *p, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t ncap = (b->len + n + 1) * 2;
		char *np = realloc(b->p, ncap);

		if (np == NULL) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void rfc5322_date(time_t t, char *out, size_t cap)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, cap, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* Copies @s without CR/LF (a reply text must not break the report). */
static void sb_line_safe(struct sbuf *b, const char *s)
{
	for (; s && *s; s++)
		sb_put(b, *s == '\r' || *s == '\n' ? " " : s, 1);
}

char *relay_bounce_build(const char *hostname, const char *qid,
			 const char *sender, uint64_t arrival_us,
			 const struct relay_dsn_rcpt *rcpts, unsigned nrcpt,
			 const unsigned char *orig, size_t olen, bool full, time_t now,
			 size_t *outlen)
{
	struct sbuf b = { NULL, 0, 0, false };
	char date[64], adate[64], boundary[128];
	size_t hlen = olen;
	unsigned i;

	b.cap = 8192 + olen;
	b.p = malloc(b.cap);
	if (b.p == NULL)
		return NULL;
	b.p[0] = '\0';
	rfc5322_date(now, date, sizeof(date));
	rfc5322_date((time_t)(arrival_us / 1000000), adate, sizeof(adate));
	snprintf(boundary, sizeof(boundary), "%s.%lld/%s", qid, (long long)now, hostname);
	/* The original header ends at the first empty line (RFC 5322 §2.1). */
	for (size_t k = 0; !full && k + 1 < olen; k++)
		if (orig[k] == '\n' && (orig[k + 1] == '\n' ||
					(k + 2 < olen && orig[k + 1] == '\r' && orig[k + 2] == '\n'))) {
			hlen = k + 1;
			break;
		}
	sb_printf(&b,
		  "From: MAILER-DAEMON@%s (Mail Delivery System)\r\n"
		  "To: <%s>\r\n"
		  "Subject: Undelivered Mail Returned to Sender\r\n"
		  "Date: %s\r\n"
		  "Message-ID: <%s.%lld@%s>\r\n"
		  /* RFC 3834 §5: automatic responders must not answer this. */
		  "Auto-Submitted: auto-replied\r\n"
		  "MIME-Version: 1.0\r\n"
		  /* RFC 3462 (6522) report, RFC 3464 delivery-status. */
		  "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		  "\tboundary=\"%s\"\r\n"
		  "\r\n"
		  "This is a MIME-encapsulated message.\r\n"
		  "\r\n"
		  "--%s\r\n"
		  "Content-Description: Notification\r\n"
		  "Content-Type: text/plain; charset=us-ascii\r\n"
		  "\r\n"
		  "This is the mail system at host %s.\r\n"
		  "\r\n"
		  "Your message could not be delivered to one or more recipients.\r\n"
		  "The details are below; the message's header is attached.\r\n"
		  "\r\n",
		  hostname, sender, date, qid, (long long)now, hostname, boundary,
		  boundary, hostname);
	for (i = 0; i < nrcpt; i++) {
		sb_printf(&b, "<%s>: ", rcpts[i].addr);
		if (rcpts[i].remote)
			sb_printf(&b, "host %s said: ", rcpts[i].remote);
		sb_line_safe(&b, rcpts[i].diag);
		sb_printf(&b, "\r\n\r\n");
	}
	sb_printf(&b,
		  "--%s\r\n"
		  "Content-Description: Delivery report\r\n"
		  "Content-Type: message/delivery-status\r\n"
		  "\r\n"
		  "Reporting-MTA: dns; %s\r\n"
		  "X-Mxedge-Queue-ID: %s\r\n"
		  "Arrival-Date: %s\r\n",
		  boundary, hostname, qid, adate);
	for (i = 0; i < nrcpt; i++) {
		/* RFC 3464 §2.3: one per-recipient block per failed recipient. */
		sb_printf(&b, "\r\nFinal-Recipient: rfc822; %s\r\n", rcpts[i].addr);
		if (rcpts[i].orcpt) {
			const char *semi = strchr(rcpts[i].orcpt, ';');

			if (semi)
				sb_printf(&b, "Original-Recipient: %.*s; %s\r\n",
					  (int)(semi - rcpts[i].orcpt), rcpts[i].orcpt, semi + 1);
		}
		sb_printf(&b, "Action: failed\r\nStatus: %s\r\n", rcpts[i].status);
		if (rcpts[i].remote) {
			sb_printf(&b, "Remote-MTA: dns; %s\r\nDiagnostic-Code: smtp; ",
				  rcpts[i].remote);
			sb_line_safe(&b, rcpts[i].diag);
			sb_printf(&b, "\r\n");
		} else {
			sb_printf(&b, "Diagnostic-Code: X-Mxedge; ");
			sb_line_safe(&b, rcpts[i].diag);
			sb_printf(&b, "\r\n");
		}
	}
	/* RFC 3461 §4.3: RET=FULL asks for the whole message back. */
	sb_printf(&b,
		  "\r\n--%s\r\n"
		  "Content-Description: %s\r\n"
		  "Content-Type: %s\r\n"
		  "\r\n", boundary, full ? "Undelivered Message" : "Undelivered Message Headers",
		  full ? "message/rfc822" : "text/rfc822-headers");
	sb_put(&b, orig, hlen);
	if (hlen > 0 && orig[hlen - 1] != '\n')
		sb_printf(&b, "\r\n");
	sb_printf(&b, "\r\n--%s--\r\n", boundary);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	*outlen = b.len;
	return b.p;
}
