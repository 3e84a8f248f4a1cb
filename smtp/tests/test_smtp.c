/*
 * Unit tests for the SMTP engine: every command, parameter and error path,
 * address syntax tables, smuggling vectors, pipelining with asynchronous
 * answers, and the same sessions split at every byte boundary.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "smtp.h"

/* ------------------------------------------------------------------ */
/* harness: a client-side view of one session                          */

struct dbuf {
	char *p;
	size_t n, cap;
};

static void db_add(struct dbuf *b, const void *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		b->cap = (b->n + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = '\0';
}

__attribute__((format(printf, 2, 3)))
static void db_printf(struct dbuf *b, const char *fmt, ...)
{
	char tmp[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	db_add(b, tmp, (size_t)n);
}

struct t {
	struct smtp_server *srv;
	struct smtp_session *s;
	struct dbuf out;     /* everything the engine sent */
	struct dbuf body;    /* message bytes of the current transaction */
	struct dbuf stored;  /* committed messages, separated by "\n=====\n" */
	struct dbuf log;     /* event log */
	int verdict[16];     /* per event type */
	const char *reply[16];
	uint64_t now;
	char qid[32];
	unsigned nqid;
};

static void t_write(void *ctx, const void *buf, size_t len)
{
	struct t *t = ctx;
	db_add(&t->out, buf, len);
}

static int t_event(void *ctx, struct smtp_session *s, struct smtp_event *ev)
{
	struct t *t = ctx;

	switch (ev->type) {
	case SMTP_EV_CONNECT:
		db_printf(&t->log, "CONNECT\n");
		break;
	case SMTP_EV_EARLY_TALKER:
		db_printf(&t->log, "EARLY\n");
		break;
	case SMTP_EV_HELO:
		db_printf(&t->log, "HELO %.*s %d\n", (int)ev->addr_len,
			  ev->addr, ev->esmtp);
		break;
	case SMTP_EV_MAIL:
		db_printf(&t->log, "MAIL <%.*s> size=%llu body=%d utf8=%d ret=%d envid=%.*s\n",
			  (int)ev->addr_len, ev->addr,
			  (unsigned long long)ev->size, ev->body, ev->smtputf8,
			  ev->ret, (int)ev->envid_len,
			  ev->envid ? ev->envid : "");
		snprintf(t->qid, sizeof(t->qid), "Q%04u", ++t->nqid);
		ev->queue_id = t->qid;
		t->body.n = 0;
		break;
	case SMTP_EV_RCPT:
		db_printf(&t->log, "RCPT <%.*s> notify=%u orcpt=%.*s\n",
			  (int)ev->addr_len, ev->addr, ev->notify,
			  (int)ev->orcpt_len, ev->orcpt ? ev->orcpt : "");
		break;
	case SMTP_EV_DATA:
		db_printf(&t->log, "DATA\n");
		break;
	case SMTP_EV_BODY:
		db_add(&t->body, ev->data, ev->len);
		break;
	case SMTP_EV_EOM:
		db_printf(&t->log, "EOM %llu bdat=%d\n",
			  (unsigned long long)ev->size, ev->bdat);
		if (t->verdict[ev->type] != SMTP_REJECT) {
			db_add(&t->stored, t->body.p ? t->body.p : "", t->body.n);
			db_add(&t->stored, "\n=====\n", 7);
		}
		t->body.n = 0;
		break;
	case SMTP_EV_ABORT:
		db_printf(&t->log, "ABORT\n");
		t->body.n = 0;
		break;
	case SMTP_EV_STARTTLS:
		db_printf(&t->log, "STARTTLS\n");
		break;
	}
	ev->reply = t->reply[ev->type];
	return t->verdict[ev->type];
}

static int64_t t_clock = 1795913600; /* Sun, 29 Nov 2026 00:53:20 +0000 */

static int64_t t_time(void *ctx)
{
	return t_clock;
}

static struct smtp_config base_cfg(void)
{
	struct smtp_config c = {
		.hostname = "mx.test",
		.max_message_size = 100000,
		.line_buffers = 4, /* tests run thousands of sessions */
	};
	return c;
}

static struct t *t_new_cfg(const struct smtp_config *cfg)
{
	static const struct smtp_ops ops = {
		.write = t_write, .event = t_event, .unix_time = t_time,
	};
	struct t *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->srv = smtp_server_create(cfg, &ops);
	assert_non_null(t->srv);
	t->s = smtp_session_init(malloc(smtp_session_size()), t->srv, t,
				 "198.18.0.2", 0);
	return t;
}

static struct t *t_new(void)
{
	struct smtp_config c = base_cfg();
	struct t *t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	return t;
}

static void t_free(struct t *t)
{
	smtp_session_fini(t->s);
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 0);
	free(t->s);
	smtp_server_destroy(t->srv);
	free(t->out.p);
	free(t->body.p);
	free(t->stored.p);
	free(t->log.p);
	free(t);
}

/* Feed a string; returns bytes consumed. */
static size_t feed(struct t *t, const char *str)
{
	return smtp_input(t->s, (const uint8_t *)str, strlen(str), t->now);
}

static size_t feedn(struct t *t, const char *p, size_t n)
{
	return smtp_input(t->s, (const uint8_t *)p, n, t->now);
}

/* Output since the last call. */
static size_t out_mark;
static const char *t_out(struct t *t)
{
	static char buf[1 << 16];
	size_t n = t->out.n - out_mark;

	if (n == 0) {
		buf[0] = '\0';
		return buf;
	}
	if (n >= sizeof(buf))
		n = sizeof(buf) - 1;
	memcpy(buf, t->out.p + out_mark, n);
	buf[n] = '\0';
	out_mark = t->out.n;
	return buf;
}

static void expect_out(struct t *t, const char *want)
{
	const char *got = t_out(t);
	if (strcmp(got, want) != 0)
		fail_msg("output\n--- got ---\n%s--- want ---\n%s", got, want);
}

/* Output since last check starts with `pfx`. */
static void expect_prefix(struct t *t, const char *pfx)
{
	const char *got = t_out(t);
	if (strncmp(got, pfx, strlen(pfx)) != 0)
		fail_msg("output\n--- got ---\n%s--- want prefix ---\n%s", got, pfx);
}

static struct t *t_ehlo(void)
{
	struct t *t = t_new();
	out_mark = 0;
	expect_out(t, "220 mx.test ESMTP mxedge\r\n");
	feed(t, "EHLO client.example\r\n");
	t_out(t);
	return t;
}

static const char *RECEIVED_PREFIX = "Received: from client.example ([198.18.0.2])\r\n";

/* ------------------------------------------------------------------ */
/* basic transaction                                                   */

static void test_basic_transaction(void **state)
{
	struct t *t = t_new();

	out_mark = 0;
	expect_out(t, "220 mx.test ESMTP mxedge\r\n");
	feed(t, "EHLO client.example\r\n");
	expect_out(t, "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n"
		      "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
		      "250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250 HELP\r\n");
	feed(t, "MAIL FROM:<alice@example.org>\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n");
	feed(t, "RCPT TO:<bob@customer.test>\r\n");
	expect_out(t, "250 2.1.5 Ok\r\n");
	feed(t, "DATA\r\n");
	expect_out(t, "354 End data with <CR><LF>.<CR><LF>\r\n");
	feed(t, "Subject: hi\r\n\r\nline one\r\n..leading dot\r\n.\r\n");
	expect_out(t, "250 2.0.0 Ok: queued as Q0001\r\n");
	feed(t, "QUIT\r\n");
	expect_out(t, "221 2.0.0 mx.test Bye\r\n");
	assert_int_equal(smtp_wants(t->s), SMTP_WANT_CLOSE);

	assert_non_null(strstr(t->stored.p,
		"Subject: hi\r\n\r\nline one\r\n.leading dot\r\n\n=====\n"));
	assert_memory_equal(t->stored.p, RECEIVED_PREFIX, strlen(RECEIVED_PREFIX));
	assert_non_null(strstr(t->stored.p,
		"\tby mx.test (mxedge) with ESMTP id Q0001;\r\n"
		"\tSun, 29 Nov 2026 "));
	assert_string_equal(t->log.p,
		"CONNECT\nHELO client.example 1\n"
		"MAIL <alice@example.org> size=0 body=0 utf8=0 ret=0 envid=\n"
		"RCPT <bob@customer.test> notify=0 orcpt=\nDATA\nEOM 39 bdat=0\n");
	t_free(t);
}

static void test_helo_and_simple_commands(void **state)
{
	struct t *t = t_new();

	out_mark = 0;
	t_out(t);
	feed(t, "HELO client.example\r\n");
	expect_out(t, "250 mx.test\r\n");
	feed(t, "MAIL FROM:<a@b.example> SIZE=10\r\n");
	expect_out(t, "555 5.5.4 Error: parameters need EHLO\r\n");
	feed(t, "NOOP\r\nNOOP anything\r\nRSET\r\nRSET x\r\n");
	expect_out(t, "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"
		      "501 5.5.4 Syntax: RSET\r\n");
	feed(t, "VRFY bob\r\nVRFY\r\nEXPN list\r\nHELP\r\n");
	expect_out(t, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
		      "501 5.5.4 Syntax: VRFY address\r\n"
		      "502 5.5.1 Error: EXPN not supported\r\n"
		      "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS\r\n");
	feed(t, "FOO bar\r\nSTARTTLS\r\n");
	expect_out(t, "500 5.5.2 Error: command not recognized\r\n"
		      "502 5.5.1 Error: command not offered here\r\n");
	feed(t, "ehlo lower.example\r\n");
	expect_prefix(t, "250-mx.test\r\n");
	feed(t, "HELO bad..name\r\nEHLO\r\nHELO [1.2.3.4]\r\nHELO [IPv6:2001:db8::1]\r\n"
		"HELO under_score.example\r\nHELO [1.2.3.400]\r\n");
	expect_out(t, "501 5.5.4 Syntax: HELO hostname\r\n"
		      "501 5.5.4 Syntax: EHLO hostname\r\n"
		      "250 mx.test\r\n250 mx.test\r\n250 mx.test\r\n"
		      "501 5.5.4 Syntax: HELO hostname\r\n");
	assert_string_equal(smtp_helo(t->s), "under_score.example");
	feed(t, "HELO [IPv6:2001:db8::1]\r\n");
	t_out(t);
	assert_string_equal(smtp_helo(t->s), "[IPv6:2001:db8::1]");
	t_free(t);
}

static void test_sequence_errors(void **state)
{
	struct t *t = t_new();

	out_mark = 0;
	t_out(t);
	feed(t, "MAIL FROM:<a@b.example>\r\n");
	expect_out(t, "503 5.5.1 Error: send HELO/EHLO first\r\n");
	feed(t, "EHLO c.example\r\n");
	t_out(t);
	feed(t, "RCPT TO:<a@b.example>\r\nDATA\r\n");
	expect_out(t, "503 5.5.1 Error: need MAIL command\r\n"
		      "503 5.5.1 Error: need MAIL command\r\n");
	feed(t, "MAIL FROM:<>\r\nMAIL FROM:<>\r\nDATA\r\nDATA x\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n"
		      "554 5.5.1 Error: no valid recipients\r\n"
		      "501 5.5.4 Syntax: DATA\r\n");
	/* RSET aborts the transaction: the caller is told */
	feed(t, "RSET\r\n");
	expect_out(t, "250 2.0.0 Ok\r\n");
	assert_non_null(strstr(t->log.p, "ABORT\n"));
	/* EHLO inside a transaction resets it (RFC 5321 §4.1.4) */
	feed(t, "MAIL FROM:<x@y.example>\r\nEHLO again.example\r\nRCPT TO:<a@b.example>\r\n");
	assert_non_null(strstr(t_out(t), "503 5.5.1 Error: need MAIL command\r\n"));
	t_free(t);
}

/* ------------------------------------------------------------------ */
/* address syntax (RFC 5321 §4.1.2) — table driven                     */

struct path_case {
	const char *in;
	int rc;
	const char *mbox; /* expected mailbox when rc == 0 */
	int utf8;
};

static void test_parse_path_table(void **state)
{
	static char longlocal[80], longpath[300];
	struct path_case cases[] = {
		{ "<user@example.org>", 0, "user@example.org", 0 },
		{ "<>", 0, "", 0 },
		{ "<first.last+tag@sub.example.org>", 0, "first.last+tag@sub.example.org", 0 },
		{ "<\"quoted local\"@example.org>", 0, "\"quoted local\"@example.org", 0 },
		{ "<\"a\\\"b\"@example.org>", 0, "\"a\\\"b\"@example.org", 0 },
		{ "<\"a>b\"@example.org>", 0, "\"a>b\"@example.org", 0 },
		{ "<user@[198.18.0.1]>", 0, "user@[198.18.0.1]", 0 },
		{ "<user@[IPv6:2001:db8::1]>", 0, "user@[IPv6:2001:db8::1]", 0 },
		{ "<user@[ipv6:2001:DB8:0:0:0:0:0:1]>", 0, "user@[ipv6:2001:DB8:0:0:0:0:0:1]", 0 },
		{ "<user@[x-tag:abc]>", 0, "user@[x-tag:abc]", 0 },
		{ "<@relay.example:user@example.org>", 0, "user@example.org", 0 },
		{ "<@a.example,@b.example:user@example.org>", 0, "user@example.org", 0 },
		{ "<Postmaster>", 0, "Postmaster", 0 },
		{ "<!#$%&'*+-/=?^_`{|}~@example.org>", 0, "!#$%&'*+-/=?^_`{|}~@example.org", 0 },
		{ "<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", 0, "j\xc3\xb6rg@b\xc3\xbc" "cher.example", 1 },
		{ "<user@xn--bcher-kva.example>", 0, "user@xn--bcher-kva.example", 0 },
		{ "<user@localhost>", 0, "user@localhost", 0 },
		/* errors */
		{ "user@example.org", -EINVAL, NULL, 0 },
		{ "<user@example.org", -EINVAL, NULL, 0 },
		{ "<user>", -EINVAL, NULL, 0 },
		{ "<@example.org>", -EINVAL, NULL, 0 },
		{ "<user@>", -EINVAL, NULL, 0 },
		{ "<.user@example.org>", -EINVAL, NULL, 0 },
		{ "<user.@example.org>", -EINVAL, NULL, 0 },
		{ "<us..er@example.org>", -EINVAL, NULL, 0 },
		{ "<us er@example.org>", -EINVAL, NULL, 0 },
		{ "<user@exa mple.org>", -EINVAL, NULL, 0 },
		{ "<user@-example.org>", -EINVAL, NULL, 0 },
		{ "<user@example-.org>", -EINVAL, NULL, 0 },
		{ "<user@example..org>", -EINVAL, NULL, 0 },
		{ "<user@example.org.>", -EINVAL, NULL, 0 },
		{ "<user@ex_ample.org>", -EINVAL, NULL, 0 },
		{ "<user@[198.18.0.256]>", -EINVAL, NULL, 0 },
		{ "<user@[IPv6:2001:db8::g]>", -EINVAL, NULL, 0 },
		{ "<user@[IPv6:1:2:3:4:5:6:7:8:9]>", -EINVAL, NULL, 0 },
		{ "<user@[198.18.0.1>", -EINVAL, NULL, 0 },
		{ "<\"unterminated@example.org>", -EINVAL, NULL, 0 },
		{ "<\"ctl\x01\"@example.org>", -EINVAL, NULL, 0 },
		{ "<us\x80r@example.org>", -EINVAL, NULL, 0 },       /* bad UTF-8 */
		{ "<us\xc0\xafr@example.org>", -EINVAL, NULL, 0 },   /* overlong */
		{ "<us\xed\xa0\x80r@example.org>", -EINVAL, NULL, 0 },/* surrogate */
		{ "<@relay.example user@example.org>", -EINVAL, NULL, 0 },
		{ "<a@b@example.org>", -EINVAL, NULL, 0 },
		{ "<user@example.org\x00>", -EINVAL, NULL, 0 },
		{ longlocal, -ENAMETOOLONG, NULL, 0 },
		{ longpath, -ENAMETOOLONG, NULL, 0 },
	};
	size_t i;

	memset(longlocal, 0, sizeof(longlocal));
	longlocal[0] = '<';
	memset(longlocal + 1, 'a', 65);
	strcat(longlocal, "@example.org>");
	memset(longpath, 0, sizeof(longpath));
	longpath[0] = '<';
	memcpy(longpath + 1, "a@", 2);
	for (i = 3; i < 260; i += 2)
		memcpy(longpath + i, "a.", 2);
	strcat(longpath, "org>");

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *mb = NULL;
		size_t ml = 0;
		bool u8 = false;
		size_t inlen = strlen(cases[i].in);
		int rc;

		if (strstr(cases[i].in, "org") && cases[i].in[inlen - 1] != '>' &&
		    cases[i].in[0] == '<' && strcmp(cases[i].in, "<user@example.org") != 0)
			inlen++; /* the embedded-NUL case */
		rc = smtp_parse_path(cases[i].in, inlen, true, &mb, &ml, &u8);
		if (rc != cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d, want %d", i, cases[i].in,
				 rc, cases[i].rc);
		if (rc == 0) {
			if (ml != strlen(cases[i].mbox) ||
			    memcmp(mb, cases[i].mbox, ml) != 0)
				fail_msg("case %zu: mailbox \"%.*s\", want \"%s\"",
					 i, (int)ml, mb, cases[i].mbox);
			assert_int_equal(u8, cases[i].utf8);
		}
	}
	/* "<>" only where a null path is allowed (RCPT needs a mailbox) */
	{
		const char *mb;
		size_t ml;
		bool u8;
		assert_int_equal(smtp_parse_path("<>", 2, false, &mb, &ml, &u8),
				 -EINVAL);
	}
}

/* ------------------------------------------------------------------ */
/* parameters                                                          */

static void test_mail_params(void **state)
{
	struct t *t = t_ehlo();

	feed(t, "MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2Bx\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n");
	assert_non_null(strstr(t->log.p,
		"MAIL <a@b.example> size=1000 body=2 utf8=0 ret=2 envid=QQ+2Bx\n"));
	feed(t, "RSET\r\n");
	t_out(t);
	/* RFC 1870 §6.1: refused at MAIL when the declared size is too big */
	feed(t, "MAIL FROM:<a@b.example> SIZE=100001\r\n");
	expect_out(t, "552 5.3.4 Message size exceeds fixed limit\r\n");
	feed(t, "MAIL FROM:<a@b.example> SIZE=12x\r\n"
		"MAIL FROM:<a@b.example> SIZE=1 SIZE=1\r\n"
		"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n"
		"MAIL FROM:<a@b.example> BODY=9BIT\r\n"
		"MAIL FROM:<a@b.example> RET=ALL\r\n"
		"MAIL FROM:<a@b.example> ENVID=a=b\r\n"
		"MAIL FROM:<a@b.example> FOO=bar\r\n"
		"MAIL FROM:<a@b.example> AUTH=<>\r\n"
		"MAIL FROM:<a@b.example>junk\r\n"
		"MAIL FROM:a@b.example\r\n"
		"MAIL TO:<a@b.example>\r\n"
		"MAIL FROM:<a@b..example>\r\n");
	expect_out(t, "501 5.5.4 Bad SIZE parameter\r\n"
		      "501 5.5.4 Bad SIZE parameter\r\n"
		      "555 5.5.4 Unsupported BODY type\r\n"
		      "555 5.5.4 Unsupported BODY type\r\n"
		      "501 5.5.4 Bad RET parameter\r\n"
		      "501 5.5.4 Bad MAIL parameter syntax\r\n"
		      "555 5.5.4 Unsupported MAIL parameter\r\n"
		      "555 5.5.4 Unsupported MAIL parameter\r\n"
		      "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
		      "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
		      "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
		      "501 5.1.7 Bad sender address syntax\r\n");
	/* Postfix-style leniency: a space after the colon */
	feed(t, "mail from: <a@b.example>\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n");
	t_free(t);
}

static void test_rcpt_params_and_limits(void **state)
{
	struct smtp_config c = base_cfg();
	struct t *t;
	int i;

	c.max_rcpts = 3;
	c.max_errors = 50;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	feed(t, "EHLO c.example\r\nMAIL FROM:<>\r\n");
	out_mark = t->out.n;
	feed(t, "RCPT TO:<a@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b.example\r\n");
	expect_out(t, "250 2.1.5 Ok\r\n");
	assert_non_null(strstr(t->log.p,
		"RCPT <a@b.example> notify=6 orcpt=rfc822;a+40b.example\n"));
	feed(t, "RCPT TO:<b@b.example> NOTIFY=NEVER\r\n");
	expect_out(t, "250 2.1.5 Ok\r\n");
	feed(t, "RCPT TO:<c@b.example> NOTIFY=NEVER,DELAY\r\n"
		"RCPT TO:<c@b.example> NOTIFY=SOMETIMES\r\n"
		"RCPT TO:<c@b.example> NOTIFY=SUCCESS,\r\n"
		"RCPT TO:<c@b.example> ORCPT=rfc822\r\n"
		"RCPT TO:<c@b.example> ORCPT=rfc822;a+4\r\n"
		"RCPT TO:<c@b.example> XYZ\r\n"
		"RCPT TO:<>\r\n"
		"RCPT TO:<c@b.example\r\n");
	expect_out(t, "501 5.5.4 Bad NOTIFY parameter\r\n"
		      "501 5.5.4 Bad NOTIFY parameter\r\n"
		      "501 5.5.4 Bad NOTIFY parameter\r\n"
		      "501 5.5.4 Bad ORCPT parameter\r\n"
		      "501 5.5.4 Bad ORCPT parameter\r\n"
		      "555 5.5.4 Unsupported RCPT parameter\r\n"
		      "501 5.1.3 Bad recipient address syntax\r\n"
		      "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
	feed(t, "RCPT TO:<Postmaster>\r\n");
	expect_out(t, "250 2.1.5 Ok\r\n");
	/* RFC 5321 §4.5.3.1.10: over the limit -> 452 */
	for (i = 0; i < 2; i++)
		feed(t, "RCPT TO:<d@b.example>\r\n");
	expect_out(t, "452 4.5.3 Error: too many recipients\r\n"
		      "452 4.5.3 Error: too many recipients\r\n");
	t_free(t);
}

static void test_smtputf8(void **state)
{
	struct t *t = t_ehlo();

	feed(t, "MAIL FROM:<j\xc3\xb6rg@example.org>\r\n");
	expect_out(t, "553 5.6.7 Non-ASCII sender needs SMTPUTF8\r\n");
	feed(t, "MAIL FROM:<a@example.org>\r\nRCPT TO:<\xc3\xbc@example.org>\r\nRSET\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n553 5.6.7 Non-ASCII recipient needs SMTPUTF8\r\n"
		      "250 2.0.0 Ok\r\n");
	feed(t, "MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8 BODY=8BITMIME\r\n"
		"RCPT TO:<\xc3\xbc@b\xc3\xbc" "cher.example>\r\nDATA\r\n"
		"Subject: gr\xc3\xbc\xc3\x9f" "e\r\n\r\n8bit \xff body\r\n.\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "354 End data with <CR><LF>.<CR><LF>\r\n"
		      "250 2.0.0 Ok: queued as Q0002\r\n");
	assert_non_null(strstr(t->stored.p, "with UTF8SMTP id Q0002;"));
	assert_non_null(strstr(t->stored.p, "8bit \xff body\r\n\n====="));
	t_free(t);
}

/* ------------------------------------------------------------------ */
/* DATA                                                                */

static void test_dot_unstuffing(void **state)
{
	struct t *t = t_ehlo();

	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	t_out(t);
	/* RFC 5321 §4.5.2: one leading dot is removed from every line
	 * that starts with one; ". x" and ".." lines keep the rest. */
	feed(t, "..\r\n...\r\n.x\r\n. \r\nno.dot\r\n\r\n..\r\n.\r\n");
	expect_out(t, "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_non_null(strstr(t->stored.p,
		"+0000\r\n.\r\n..\r\nx\r\n \r\nno.dot\r\n\r\n.\r\n\n=====\n"));
	/* empty message */
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n.\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "354 End data with <CR><LF>.<CR><LF>\r\n"
		      "250 2.0.0 Ok: queued as Q0002\r\n");
	assert_non_null(strstr(t->log.p, "EOM 0 bdat=0\n"));
	t_free(t);
}

/*
 * SMTP smuggling (SEC Consult 2023, CVE-2023-51764/51765/51766): none of
 * these may end the message.  After each vector the client "smuggles" a
 * second transaction; it must stay message content and never be run.
 */
struct vec {
	const char *b;
	size_t len;
	bool bare; /* contains a bare CR or LF (rejected by default) */
};
#define V(s, bare) { s, sizeof(s) - 1, bare }
static const struct vec smuggle_vectors[] = {
	V("\n.\n", true), V("\n.\r\n", true), V("\r\n.\n", true),
	V("\r.\r\n", true), V("\r\n.\r", true), V("\r\n\x00.\r\n", false),
	V("\r.\n", true), V("\n.\r", true), V("\n\r\n.\n", true),
	V("\r\n.\r\r\n", true), V("\r\n .\r\n", false),
	V("\r\n.\x00\r\n", false), V("\n\n.\n\n", true),
	V("\r\r.\r\r", true),
};
#define NVEC (sizeof(smuggle_vectors) / sizeof(smuggle_vectors[0]))

static void run_smuggle(enum smtp_bare_policy pol, const char *vec,
			size_t veclen, bool bare)
{
	struct smtp_config c = base_cfg();
	struct t *t;
	char msg[512];
	size_t n = 0;
	const char *smuggled = "MAIL FROM:<evil@attacker.example>\r\n"
			       "RCPT TO:<victim@customer.test>\r\nDATA\r\n"
			       "From: ceo@customer.test\r\n\r\nsmuggled\r\n";

	c.bare_policy = pol;
	c.max_errors = 100;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	feed(t, "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n"
		"RCPT TO:<c@d.example>\r\nDATA\r\n");
	out_mark = t->out.n;
	memcpy(msg + n, "Subject: x\r\n\r\nbody", 18);
	n += 18;
	memcpy(msg + n, vec, veclen);
	n += veclen;
	memcpy(msg + n, smuggled, strlen(smuggled));
	n += strlen(smuggled);
	memcpy(msg + n, ".\r\n", 3);
	n += 3;
	assert_int_equal(feedn(t, msg, n), n);
	/* Exactly one reply for the whole thing: the message was one. */
	{
		const char *o = t_out(t);
		const char *want = pol == SMTP_BARE_REJECT && bare
			? "550 5.6.0 Message contains bare CR or LF; lines must end with CRLF\r\n"
			: "250 2.0.0 Ok: queued as Q0001\r\n";
		if (strcmp(o, want) != 0)
			fail_msg("vector %zu bytes [%02x %02x %02x]: got \"%s\"",
				 veclen, (unsigned char)vec[0],
				 (unsigned char)vec[1], (unsigned char)vec[2], o);
	}
	/* the smuggled MAIL never became a transaction */
	assert_null(strstr(t->log.p, "evil@attacker"));
	if (pol == SMTP_BARE_NORMALISE) {
		/* stored as one message that contains the smuggled text,
		 * with every line ending a CRLF */
		size_t k, m = t->stored.n - 7; /* without the separator */
		const char *p = t->stored.p;
		assert_non_null(memmem(p, t->stored.n, "smuggled\r\n\n=====", 16));
		assert_non_null(memmem(p, t->stored.n, "evil@attacker.example", 21));
		for (k = 0; k < m; k++) {
			if (p[k] == '\n')
				assert_true(k > 0 && p[k - 1] == '\r');
			if (p[k] == '\r')
				assert_true(k + 1 < m && p[k + 1] == '\n');
		}
	} else if (bare) {
		assert_true(t->stored.n == 0);
		assert_non_null(strstr(t->log.p, "ABORT\n"));
	} else {
		assert_non_null(memmem(t->stored.p, t->stored.n,
				       "evil@attacker.example", 21));
	}
	t_free(t);
}

static void test_smuggling_vectors(void **state)
{
	size_t i;

	for (i = 0; i < NVEC; i++) {
		const struct vec *v = &smuggle_vectors[i];
		run_smuggle(SMTP_BARE_REJECT, v->b, v->len, v->bare);
		run_smuggle(SMTP_BARE_NORMALISE, v->b, v->len, v->bare);
	}
}

/* Vectors that contain a genuine CRLF "." CRLF do end the data there,
 * and what follows is read as commands — that is the standard. */
static void test_real_end_after_bare_cr(void **state)
{
	struct smtp_config c = base_cfg();
	struct t *t;

	c.bare_policy = SMTP_BARE_NORMALISE;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	feed(t, "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n"
		"RCPT TO:<c@d.example>\r\nDATA\r\n");
	out_mark = t->out.n;
	/* "\r\r\n.\r\n": the first CR is bare, then CRLF . CRLF is real */
	feedn(t, "x\r\r\n.\r\nNOOP\r\n", 13);
	expect_out(t, "250 2.0.0 Ok: queued as Q0001\r\n250 2.0.0 Ok\r\n");
	assert_non_null(strstr(t->stored.p, "x\r\n\r\n\n=====\n"));
	t_free(t);
}

static void test_bare_lf_in_commands(void **state)
{
	struct t *t = t_ehlo();
	struct smtp_config c = base_cfg();

	feed(t, "NOOP\n");
	expect_out(t, "500 5.5.2 Error: bare <LF> received\r\n");
	feed(t, "NO\rOP\r\n");
	expect_out(t, "500 5.5.2 Error: bad character in command\r\n");
	feed(t, "NOOP\r\n");
	expect_out(t, "250 2.0.0 Ok\r\n");
	t_free(t);

	c.bare_policy = SMTP_BARE_NORMALISE;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	out_mark = t->out.n;
	/* lines ended by bare LF are taken; in DATA a bare LF becomes CRLF
	 * but never starts a line, so "\n.\r\n" does not end the data */
	feed(t, "EHLO c.example\nMAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\nDATA\n"
		"line\n.\r\nx\r\n.\r\n");
	{
		const char *o = t_out(t);
		assert_non_null(strstr(o, "250 HELP\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 "));
		assert_non_null(strstr(o, "250 2.0.0 Ok: queued as Q0001\r\n"));
	}
	assert_non_null(strstr(t->stored.p, "+0000\r\nline\r\n.\r\nx\r\n\n====="));
	t_free(t);
}

static void test_message_too_big(void **state)
{
	struct smtp_config c = base_cfg();
	struct t *t;
	char big[300];

	c.max_message_size = 1000;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	feed(t, "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n"
		"RCPT TO:<c@d.example>\r\nDATA\r\n");
	out_mark = t->out.n;
	memset(big, 'x', sizeof(big));
	memcpy(big + sizeof(big) - 2, "\r\n", 2);
	for (int i = 0; i < 5; i++)
		feedn(t, big, sizeof(big));
	expect_out(t, "");
	feed(t, ".\r\nNOOP\r\n");
	expect_out(t, "552 5.3.4 Message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n");
	assert_non_null(strstr(t->log.p, "ABORT\n"));
	assert_null(strstr(t->log.p, "EOM"));
	t_free(t);
}

static void test_body_write_failure(void **state)
{
	struct t *t = t_ehlo();

	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	t_out(t);
	t->verdict[SMTP_EV_BODY] = SMTP_REJECT;
	t->reply[SMTP_EV_BODY] = "452 4.3.1 Insufficient system storage";
	feed(t, "hello\r\n.\r\n");
	expect_out(t, "452 4.3.1 Insufficient system storage\r\n");
	assert_null(strstr(t->log.p, "EOM"));
	assert_non_null(strstr(t->log.p, "ABORT\n"));
	t_free(t);
}

/* ------------------------------------------------------------------ */
/* BDAT (RFC 3030)                                                     */

static void test_bdat(void **state)
{
	struct t *t = t_ehlo();

	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
		"BDAT 7\r\nline1\r\nBDAT 10 LAST\r\n.\r\nx\n.\r\n\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "250 2.0.0 7 octets received\r\n"
		      "250 2.0.0 Ok: queued as Q0001\r\n");
	/* chunk bytes are stored exactly as sent: no unstuffing, no
	 * end-of-data search, bare LF allowed (length-delimited) */
	assert_non_null(strstr(t->stored.p,
		"+0000\r\nline1\r\n.\r\nx\n.\r\n\r\n\n=====\n"));
	assert_non_null(strstr(t->log.p, "EOM 17 bdat=1\n"));

	/* BDAT 0 LAST; BDAT without MAIL: the chunk is read and dropped */
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 0 LAST\r\n"
		"BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "250 2.0.0 Ok: queued as Q0002\r\n"
		      "503 5.5.1 Error: need MAIL command\r\n"
		      "250 2.0.0 Ok\r\n");
	/* DATA after BDAT, RCPT after BDAT */
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 3\r\nabcDATA\r\n"
		"RCPT TO:<e@d.example>\r\nBDAT 2 last\r\nde");
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "250 2.0.0 3 octets received\r\n"
		      "503 5.5.1 Error: DATA after BDAT\r\n"
		      "503 5.5.1 Error: RCPT after BDAT\r\n"
		      "250 2.0.0 Ok: queued as Q0003\r\n");
	assert_non_null(strstr(t->stored.p, "+0000\r\nabcde\n=====\n"));
	/* first BDAT before any RCPT */
	feed(t, "MAIL FROM:<a@b.example>\r\nBDAT 4 LAST\r\nNOOPRSET\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n554 5.5.1 Error: no valid recipients\r\n"
		      "250 2.0.0 Ok\r\n");
	/* a BDAT whose size cannot be read ends the session */
	feed(t, "BDAT x\r\n");
	expect_out(t, "501 5.5.4 Syntax: BDAT count [LAST]\r\n"
		      "421 4.7.0 mx.test Error: BDAT syntax, closing\r\n");
	assert_int_equal(smtp_wants(t->s), SMTP_WANT_CLOSE);
	t_free(t);
}

static void test_bdat_too_big(void **state)
{
	struct smtp_config c = base_cfg();
	struct t *t;
	char chunk[600];

	c.max_message_size = 1000;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	feed(t, "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	out_mark = t->out.n;
	memset(chunk, 'y', sizeof(chunk));
	feed(t, "BDAT 600\r\n");
	feedn(t, chunk, 600);
	feed(t, "BDAT 600\r\n");
	feedn(t, chunk, 600);
	feed(t, "BDAT 600 LAST\r\n");
	feedn(t, chunk, 600);
	expect_out(t, "250 2.0.0 600 octets received\r\n"
		      "552 5.3.4 Message size exceeds fixed limit\r\n"
		      "503 5.5.1 Error: need MAIL command\r\n");
	assert_null(strstr(t->log.p, "EOM"));
	t_free(t);
}

/* ------------------------------------------------------------------ */
/* limits, errors, line length                                         */

static void test_error_limit(void **state)
{
	struct smtp_config c = base_cfg();
	struct t *t;
	size_t used;
	const char *in = "BAD\r\nBAD\r\nBAD\r\nNOOP\r\n";

	c.max_errors = 3;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	out_mark = t->out.n;
	used = feed(t, in);
	expect_out(t, "500 5.5.2 Error: command not recognized\r\n"
		      "500 5.5.2 Error: command not recognized\r\n"
		      "500 5.5.2 Error: command not recognized\r\n"
		      "421 4.7.0 mx.test Error: too many errors\r\n");
	assert_int_equal(smtp_wants(t->s), SMTP_WANT_CLOSE);
	assert_int_equal(used, 15); /* the NOOP is not read */
	assert_int_equal(feed(t, "NOOP\r\n"), 0);
	expect_out(t, "");
	t_free(t);
}

static void test_junk_limit(void **state)
{
	struct smtp_config c = base_cfg();
	struct t *t;
	int i;

	c.max_junk = 5;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	out_mark = t->out.n;
	for (i = 0; i < 5; i++)
		feed(t, "NOOP\r\n");
	t_out(t);
	feed(t, "NOOP\r\n");
	expect_out(t, "421 4.7.0 mx.test Error: too many commands\r\n");
	t_free(t);
}

static void test_long_lines(void **state)
{
	struct t *t = t_ehlo();
	char line[1200];

	memset(line, 'A', sizeof(line));
	memcpy(line, "NOOP ", 5);
	memcpy(line + sizeof(line) - 2, "\r\n", 2);
	/* in one piece */
	feedn(t, line, sizeof(line));
	expect_out(t, "500 5.5.2 Error: line too long\r\n");
	/* split: the partial part goes into a borrowed buffer, then
	 * overflows it */
	feedn(t, line, 600);
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 1);
	feedn(t, line + 600, 500);
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 0);
	expect_out(t, "");
	feedn(t, line + 1100, 100);
	expect_out(t, "500 5.5.2 Error: line too long\r\n");
	/* exactly at the limit (1000 incl. CRLF) is fine */
	memcpy(line + 998, "\r\n", 2);
	feedn(t, line, 1000);
	expect_out(t, "250 2.0.0 Ok\r\n");
	/* the session goes on normally */
	feed(t, "NOOP\r\n");
	expect_out(t, "250 2.0.0 Ok\r\n");
	t_free(t);
}

/* ------------------------------------------------------------------ */
/* pipelining and asynchronous answers                                 */

static void test_pipelining_in_order(void **state)
{
	struct t *t = t_new();

	out_mark = t->out.n;
	/* RFC 2920: a whole session in one write */
	feed(t, "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@d.example>\r\n"
		"RCPT TO:<bad@d.example>\r\nRCPT TO:<y@d.example>\r\nDATA\r\n"
		"hello\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<z@d.example>\r\n"
		"DATA\r\nsecond\r\n.\r\nQUIT\r\n");
	expect_prefix(t, "250-mx.test");
	{
		const char *o = t->out.p;
		const char *want = "250 HELP\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
			"250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
			"250 2.0.0 Ok: queued as Q0001\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
			"354 End data with <CR><LF>.<CR><LF>\r\n"
			"250 2.0.0 Ok: queued as Q0002\r\n221 2.0.0 mx.test Bye\r\n";
		assert_non_null(strstr(o, want));
	}
	t_free(t);
}

static void test_async_rcpt_and_commit(void **state)
{
	struct t *t = t_ehlo();
	const char *in = "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@d.example>\r\n"
			 "RCPT TO:<y@d.example>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\n";
	size_t used, total = 0, len = strlen(in);

	t->verdict[SMTP_EV_RCPT] = SMTP_PENDING;
	used = feed(t, in);
	/* held right after the first RCPT: nothing after it is answered */
	assert_int_equal(used, strlen("MAIL FROM:<a@b.example>\r\nRCPT TO:<x@d.example>\r\n"));
	expect_out(t, "250 2.1.0 Ok\r\n");
	assert_int_equal(smtp_wants(t->s), SMTP_WANT_ANSWER);
	assert_int_equal(smtp_input(t->s, (const uint8_t *)in + used,
				    len - used, 0), 0);
	assert_int_equal(smtp_complete(t->s, SMTP_REJECT,
				       "550 5.1.1 <x@d.example>: no such user", 0), 0);
	expect_out(t, "550 5.1.1 <x@d.example>: no such user\r\n");
	total = used;
	used = smtp_input(t->s, (const uint8_t *)in + total, len - total, 0);
	total += used;
	assert_int_equal(smtp_complete(t->s, SMTP_ACCEPT, NULL, 0), 0);
	expect_out(t, "250 2.1.5 Ok\r\n");
	/* now the end-of-message commit is pending: no 250 before it */
	t->verdict[SMTP_EV_EOM] = SMTP_PENDING;
	used = smtp_input(t->s, (const uint8_t *)in + total, len - total, 0);
	total += used;
	expect_out(t, "354 End data with <CR><LF>.<CR><LF>\r\n");
	assert_int_equal(total, len - 6); /* NOOP is held */
	assert_int_equal(smtp_complete(t->s, SMTP_ACCEPT, NULL, 0), 0);
	expect_out(t, "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_int_equal(smtp_complete(t->s, SMTP_ACCEPT, NULL, 0), -EINVAL);
	used = smtp_input(t->s, (const uint8_t *)in + total, len - total, 0);
	assert_int_equal(used, 6);
	expect_out(t, "250 2.0.0 Ok\r\n");
	t_free(t);
}

static void test_async_mail_data_helo(void **state)
{
	struct t *t = t_new();

	out_mark = t->out.n;
	t_out(t);
	t->verdict[SMTP_EV_HELO] = SMTP_PENDING;
	assert_int_equal(feed(t, "EHLO c.example\r\nNOOP\r\n"), 16);
	expect_out(t, "");
	smtp_complete(t->s, SMTP_ACCEPT, NULL, 0);
	expect_prefix(t, "250-mx.test\r\n");
	t->verdict[SMTP_EV_MAIL] = SMTP_PENDING;
	feed(t, "MAIL FROM:<a@b.example>\r\n");
	smtp_complete(t->s, SMTP_REJECT, "451 4.7.1 try later", 0);
	expect_out(t, "451 4.7.1 try later\r\n");
	feed(t, "RCPT TO:<a@b.example>\r\n");
	expect_out(t, "503 5.5.1 Error: need MAIL command\r\n");
	smtp_complete(t->s, SMTP_ACCEPT, NULL, 0);
	t->verdict[SMTP_EV_MAIL] = SMTP_ACCEPT;
	t->verdict[SMTP_EV_DATA] = SMTP_PENDING;
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<a@b.example>\r\nDATA\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	smtp_complete(t->s, SMTP_ACCEPT, NULL, 0);
	expect_out(t, "354 End data with <CR><LF>.<CR><LF>\r\n");
	/* the caller's reply can close the session */
	t->verdict[SMTP_EV_EOM] = SMTP_REJECT;
	t->reply[SMTP_EV_EOM] = "421 4.3.0 spool gone";
	feed(t, "x\r\n.\r\n");
	expect_out(t, "421 4.3.0 spool gone\r\n");
	assert_int_equal(smtp_wants(t->s), SMTP_WANT_CLOSE);
	t_free(t);
}

static void test_connect_pending_and_early_talker(void **state)
{
	struct smtp_config c = base_cfg();
	struct t *t = t_new_cfg(&c);

	t->verdict[SMTP_EV_CONNECT] = SMTP_PENDING;
	smtp_start(t->s, 0);
	out_mark = 0;
	expect_out(t, "");
	/* RFC 5321 §4.3.1: the client must wait for the greeting */
	assert_int_equal(feed(t, "EHLO early.example\r\n"), 0);
	assert_int_equal(feed(t, "EHLO early.example\r\n"), 0);
	assert_true(smtp_early_talker(t->s));
	assert_string_equal(t->log.p, "CONNECT\nEARLY\n");
	smtp_complete(t->s, SMTP_ACCEPT, NULL, 0);
	expect_out(t, "220 mx.test ESMTP mxedge\r\n");
	assert_int_equal(feed(t, "NOOP\r\n"), 6);
	expect_out(t, "250 2.0.0 Ok\r\n");
	t_free(t);

	/* a connection refused by policy */
	t = t_new_cfg(&c);
	t->verdict[SMTP_EV_CONNECT] = SMTP_REJECT;
	smtp_start(t->s, 0);
	out_mark = 0;
	expect_out(t, "554 5.7.1 Error: connection rejected\r\n");
	assert_int_equal(smtp_wants(t->s), SMTP_WANT_CLOSE);
	t_free(t);
}

static void test_starttls(void **state)
{
	struct smtp_config c = base_cfg();
	struct t *t;
	size_t used;

	c.starttls = true;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	feed(t, "EHLO c.example\r\n");
	assert_non_null(strstr(t->out.p, "250-STARTTLS\r\n"));
	out_mark = t->out.n;
	feed(t, "STARTTLS x\r\n");
	expect_out(t, "501 5.5.4 Syntax: STARTTLS\r\n");
	/* RFC 3207 §4: pipelined plaintext after STARTTLS is not read */
	used = feed(t, "STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n");
	assert_int_equal(used, 10);
	expect_out(t, "220 2.0.0 Ready to start TLS\r\n");
	assert_int_equal(smtp_wants(t->s), SMTP_WANT_TLS);
	assert_int_equal(feed(t, "MAIL FROM:<injected@evil.example>\r\n"), 0);
	assert_int_equal(smtp_tls_started(t->s, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384", 0), 0);
	/* RFC 3207 §4.2: state is reset, EHLO is needed again */
	feed(t, "MAIL FROM:<a@b.example>\r\n");
	expect_out(t, "503 5.5.1 Error: send HELO/EHLO first\r\n");
	feed(t, "EHLO c.example\r\n");
	assert_null(strstr(t_out(t), "STARTTLS"));
	feed(t, "STARTTLS\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nx\r\n.\r\n");
	expect_out(t, "503 5.5.1 Error: TLS already active\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "354 End data with <CR><LF>.<CR><LF>\r\n"
		      "250 2.0.0 Ok: queued as Q0001\r\n");
	assert_non_null(strstr(t->stored.p,
		"Received: from c.example ([198.18.0.2])\r\n"
		"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
		"\tby mx.test (mxedge) with ESMTPS id Q0001;\r\n"));
	assert_null(strstr(t->log.p, "injected"));
	smtp_set_authenticated(t->s, true);
	assert_string_equal(smtp_protocol(t->s), "ESMTPSA");
	t_free(t);
}

static void test_timeouts(void **state)
{
	struct t *t = t_ehlo();

	assert_int_equal(smtp_deadline(t->s), 300000);
	assert_false(smtp_timeout(t->s, 299999));
	t->now = 1000;
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	t_out(t);
	/* data timeout: 3 minutes after the last bytes */
	assert_int_equal(smtp_deadline(t->s), 181000);
	assert_false(smtp_timeout(t->s, 180999));
	assert_true(smtp_timeout(t->s, 181000));
	expect_out(t, "421 4.4.2 mx.test Error: timeout exceeded\r\n");
	/* closed: no second 421 */
	assert_false(smtp_timeout(t->s, 999999999));
	expect_out(t, "");
	assert_int_equal(smtp_wants(t->s), SMTP_WANT_CLOSE);
	assert_non_null(strstr(t->log.p, "ABORT\n"));
	t_free(t);
}

/* config.set while sessions run: an open transaction keeps the limits its
 * MAIL was accepted under, the next MAIL and EHLO see the new ones, and a
 * new timeout counts from the session's last command. */
static void test_live_limits(void **state)
{
	struct t *t = t_ehlo();
	struct smtp_limits l = { .max_message_size = 50, .max_rcpts = 1 };
	char body[120];

	t->now = 1000;
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	assert_int_equal(smtp_server_set_limits(t->srv, &l), 0);
	/* the transaction in progress: old limits (100000 bytes, 100 rcpts) */
	feed(t, "RCPT TO:<e@d.example>\r\nDATA\r\n");
	expect_out(t, "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	memset(body, 'x', sizeof(body));
	memcpy(body + sizeof(body) - 2, "\r\n", 2);
	feedn(t, body, sizeof(body));
	feed(t, ".\r\n");
	expect_out(t, "250 2.0.0 Ok: queued as Q0001\r\n");
	/* the next transaction: new limits */
	feed(t, "EHLO client.example\r\n");
	assert_non_null(strstr(t_out(t), "250-SIZE 50\r\n"));
	feed(t, "MAIL FROM:<a@b.example> SIZE=60\r\n");
	expect_out(t, "552 5.3.4 Message size exceeds fixed limit\r\n");
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
		"RCPT TO:<e@d.example>\r\nDATA\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "452 4.5.3 Error: too many recipients\r\n"
		      "354 End data with <CR><LF>.<CR><LF>\r\n");
	feedn(t, body, sizeof(body));
	feed(t, ".\r\n");
	expect_out(t, "552 5.3.4 Message size exceeds fixed limit\r\n");
	/* zero fields keep the running values */
	memset(&l, 0, sizeof(l));
	assert_int_equal(smtp_server_set_limits(t->srv, &l), 0);
	feed(t, "EHLO client.example\r\n");
	assert_non_null(strstr(t_out(t), "250-SIZE 50\r\n"));
	assert_int_equal(smtp_deadline(t->s), 1000 + 300000);
	/* a shorter command timeout applies at once, from the last command */
	l.cmd_timeout_ms = 2000;
	smtp_server_set_limits(t->srv, &l);
	assert_int_equal(smtp_deadline(t->s), 3000);
	assert_false(smtp_timeout(t->s, 2999));
	assert_true(smtp_timeout(t->s, 3000));
	expect_out(t, "421 4.4.2 mx.test Error: timeout exceeded\r\n");
	assert_int_equal(smtp_server_set_limits(NULL, &l), -EINVAL);
	assert_int_equal(smtp_server_set_limits(t->srv, NULL), -EINVAL);
	t_free(t);
}

/* While the caller owes an answer, the time is the caller's: no timeout. */
static void test_no_timeout_while_pending(void **state)
{
	struct t *t = t_ehlo();

	t->verdict[SMTP_EV_RCPT] = SMTP_PENDING;
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	t_out(t);
	assert_int_equal(smtp_deadline(t->s), UINT64_MAX);
	assert_false(smtp_timeout(t->s, 10u * 3600 * 1000));
	expect_out(t, "");
	/* the clock restarts with the answer */
	smtp_complete(t->s, SMTP_ACCEPT, NULL, 5000);
	assert_int_equal(smtp_deadline(t->s), 305000);
	t_free(t);
}

static void test_line_buffer_pool(void **state)
{
	struct smtp_config c = base_cfg();
	struct smtp_session *s2;
	struct t *t;

	c.line_buffers = 1;
	t = t_new_cfg(&c);
	smtp_start(t->s, 0);
	s2 = smtp_session_init(malloc(smtp_session_size()), t->srv, t, "198.18.0.3", 0);
	smtp_start(s2, 0);
	out_mark = t->out.n;
	/* idle sessions hold no line buffer */
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 0);
	assert_int_equal(feed(t, "NO"), 2);
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 1);
	/* pool empty: the second session leaves the bytes with the caller */
	assert_int_equal(smtp_input(s2, (const uint8_t *)"NO", 2, 0), 0);
	/* ...and a complete line still needs no buffer */
	assert_int_equal(smtp_input(s2, (const uint8_t *)"NOOP\r\n", 6, 0), 6);
	assert_int_equal(feed(t, "OP\r\n"), 4);
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 0);
	expect_out(t, "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
	smtp_session_fini(s2);
	free(s2);
	assert_true(smtp_session_size() <= 512);
	t_free(t);
}

static void test_bad_config(void **state)
{
	struct smtp_ops ops = { .write = t_write, .event = t_event };
	struct smtp_config c = base_cfg();

	c.hostname = "bad host";
	errno = 0;
	assert_null(smtp_server_create(&c, &ops));
	assert_int_equal(errno, EINVAL);
	c = base_cfg();
	ops.event = NULL;
	assert_null(smtp_server_create(&c, &ops));
	assert_int_equal(errno, EINVAL);
}

/* ------------------------------------------------------------------ */
/* segmentation: the engine must not care how TCP splits the stream   */

static const char split_session[] =
	"EHLO client.example\r\n"
	"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n"
	"RCPT TO:<c@d.example> NOTIFY=FAILURE\r\nRCPT TO:<e@d.example>\r\nDATA\r\n"
	"Subject: split\r\n\r\n..stuffed\r\n..\r\nx\r\n\r\n.\r\n"
	"NOOP\r\nMAIL FROM:<> SMTPUTF8\r\nRCPT TO:<\xc3\xbc@d.example>\r\n"
	"BDAT 5\r\n12345BDAT 3 LAST\r\n.\r\n"
	"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
	"a\n.\nb\r.\r\nc\r\n.\n\r\n.\r\n"       /* smuggling: rejected */
	"BOGUS\r\nRSET\r\nQUIT\r\n";

struct run_result {
	struct dbuf out, stored, log;
};

static void run_split(const char *in, size_t len, const size_t *cuts,
		      size_t ncuts, struct run_result *r)
{
	struct t *t = t_new();
	size_t pos = 0, ci = 0;

	/* The caller keeps unconsumed bytes and offers them again with the
	 * next segment, as a TCP receive buffer would. */
	while (pos < len) {
		size_t end = ci < ncuts ? cuts[ci++] : len;
		while (pos < end) {
			size_t used = smtp_input(t->s, (const uint8_t *)in + pos,
						 end - pos, 0);
			pos += used;
			if (used == 0)
				break;
		}
		if (smtp_wants(t->s) == SMTP_WANT_CLOSE)
			break;
	}
	db_add(&r->out, t->out.p, t->out.n);
	db_add(&r->stored, t->stored.p ? t->stored.p : "", t->stored.n);
	db_add(&r->log, t->log.p, t->log.n);
	t_free(t);
}

static void cmp_result(const struct run_result *a, const struct run_result *b,
		       const char *what)
{
	if (a->out.n != b->out.n || memcmp(a->out.p, b->out.p, a->out.n) != 0)
		fail_msg("%s: output differs\n--- whole ---\n%s--- split ---\n%s",
			 what, a->out.p, b->out.p);
	if (a->stored.n != b->stored.n ||
	    memcmp(a->stored.p, b->stored.p, a->stored.n) != 0)
		fail_msg("%s: stored messages differ", what);
	assert_string_equal(a->log.p, b->log.p);
}

static void free_result(struct run_result *r)
{
	free(r->out.p);
	free(r->stored.p);
	free(r->log.p);
	memset(r, 0, sizeof(*r));
}

static void test_split_every_byte(void **state)
{
	size_t len = sizeof(split_session) - 1;
	struct run_result whole = { 0 }, part = { 0 };
	size_t i, j;
	size_t *cuts = malloc(len * sizeof(size_t));

	run_split(split_session, len, NULL, 0, &whole);
	/* sanity: the reference run did what a user expects */
	assert_non_null(strstr(whole.out.p, "250 2.0.0 Ok: queued as Q0001\r\n"));
	assert_non_null(strstr(whole.out.p, "250 2.0.0 5 octets received\r\n"));
	assert_non_null(strstr(whole.out.p, "250 2.0.0 Ok: queued as Q0002\r\n"));
	assert_non_null(strstr(whole.out.p, "550 5.6.0 Message contains bare CR or LF"));
	assert_non_null(strstr(whole.out.p, "221 2.0.0 mx.test Bye\r\n"));
	assert_non_null(strstr(whole.stored.p, "\r\n.stuffed\r\n.\r\nx\r\n\r\n\n=====\n"));
	assert_non_null(strstr(whole.stored.p, "+0000\r\n12345.\r\n\n=====\n"));

	/* two pieces, cut at every byte */
	for (i = 1; i < len; i++) {
		char what[64];
		run_split(split_session, len, &i, 1, &part);
		snprintf(what, sizeof(what), "cut at %zu", i);
		cmp_result(&whole, &part, what);
		free_result(&part);
	}
	/* one byte at a time */
	for (j = 0; j < len; j++)
		cuts[j] = j + 1;
	run_split(split_session, len, cuts, len, &part);
	cmp_result(&whole, &part, "byte by byte");
	free_result(&part);
	/* three pieces around every pair of CR/LF/dot positions */
	for (i = 1; i < len; i++) {
		if (strchr("\r\n.", split_session[i]) == NULL)
			continue;
		for (j = i + 1; j < len && j < i + 4; j++) {
			size_t c2[2] = { i, j };
			run_split(split_session, len, c2, 2, &part);
			cmp_result(&whole, &part, "three pieces");
			free_result(&part);
		}
	}
	free(cuts);
	free_result(&whole);
}

/* Each smuggling vector, split at every byte, still never ends DATA. */
static void test_smuggling_split(void **state)
{
	size_t v;

	for (v = 0; v < NVEC; v++) {
		char in[512];
		size_t n = 0, i, vl = smuggle_vectors[v].len;
		struct run_result whole = { 0 }, part = { 0 };

		n = (size_t)snprintf(in, sizeof(in),
			"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n"
			"RCPT TO:<c@d.example>\r\nDATA\r\nbody");
		memcpy(in + n, smuggle_vectors[v].b, vl);
		n += vl;
		n += (size_t)snprintf(in + n, sizeof(in) - n,
			"MAIL FROM:<evil@x.example>\r\n.\r\nQUIT\r\n");
		run_split(in, n, NULL, 0, &whole);
		assert_null(strstr(whole.log.p, "evil"));
		if (smuggle_vectors[v].bare)
			assert_non_null(strstr(whole.out.p, "550 5.6.0"));
		else
			assert_non_null(strstr(whole.out.p, "250 2.0.0 Ok: queued"));
		for (i = 1; i < n; i++) {
			run_split(in, n, &i, 1, &part);
			cmp_result(&whole, &part, "smuggle split");
			free_result(&part);
		}
		free_result(&whole);
	}
}

/* Every reply carries an RFC 3463 enhanced status code, except the
 * greeting and the HELO/EHLO answers (RFC 2034 §3). */
static void test_enhanced_codes_everywhere(void **state)
{
	struct run_result r = { 0 };
	char *line, *save = NULL;

	run_split(split_session, sizeof(split_session) - 1, NULL, 0, &r);
	for (line = strtok_r(r.out.p, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		unsigned a, b, c, d;
		char sep;
		if (strncmp(line, "220 mx.test ESMTP", 17) == 0 ||
		    strncmp(line, "250-", 4) == 0 || strncmp(line, "250 HELP", 8) == 0)
			continue;
		if (strncmp(line, "354 ", 4) == 0)
			continue; /* intermediate reply */
		if (sscanf(line, "%3u%c%u.%u.%u", &a, &sep, &b, &c, &d) != 5 ||
		    b != a / 100)
			fail_msg("reply without enhanced code: %s", line);
	}
	free_result(&r);
}


/* Body chunks point into the caller's input: no copies (only the engine's
 * own Received: header comes from elsewhere), and dot-unstuffing skips
 * bytes instead of moving them. */
static const uint8_t *zc_lo, *zc_hi;
static unsigned zc_outside, zc_chunks;
static size_t zc_bytes;

static void zc_write(void *ctx, const void *buf, size_t len)
{
}

static int zc_event(void *ctx, struct smtp_session *s, struct smtp_event *ev)
{
	if (ev->type == SMTP_EV_BODY) {
		zc_chunks++;
		zc_bytes += ev->len;
		if (ev->data < zc_lo || ev->data + ev->len > zc_hi)
			zc_outside++;
	}
	return SMTP_ACCEPT;
}

static void test_body_zero_copy(void **state)
{
	static const struct smtp_ops ops = { .write = zc_write, .event = zc_event };
	struct smtp_config c = base_cfg();
	struct smtp_server *srv = smtp_server_create(&c, &ops);
	struct smtp_session *s;
	static const char in[] =
		"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
		"DATA\r\nline 1\r\n..dotted\r\nline 3\r\n.\r\n"
		"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 10 LAST\r\n0123456789";

	assert_non_null(srv);
	s = smtp_session_init(malloc(smtp_session_size()), srv, NULL, "198.18.0.2", 0);
	smtp_start(s, 0);
	zc_lo = (const uint8_t *)in;
	zc_hi = zc_lo + sizeof(in) - 1;
	assert_int_equal(smtp_input(s, zc_lo, sizeof(in) - 1, 0), sizeof(in) - 1);
	/* two Received: headers come from the engine, everything else from
	 * the input: "line 1\r\n", "dotted\r\nline 3\r\n" and the chunk */
	assert_int_equal(zc_outside, 2);
	assert_int_equal(zc_chunks, 5);
	smtp_session_fini(s);
	free(s);
	smtp_server_destroy(srv);
}


/* Refusals by the caller, parameter corner cases and the remaining
 * pending paths, each as the client sees it. */
static void test_caller_refusals(void **state)
{
	struct t *t = t_new();

	out_mark = t->out.n;
	t_out(t);
	t->verdict[SMTP_EV_HELO] = SMTP_REJECT;
	feed(t, "EHLO spammer.example\r\nMAIL FROM:<a@b.example>\r\n");
	expect_out(t, "550 5.7.1 Error: HELO rejected\r\n"
		      "503 5.5.1 Error: send HELO/EHLO first\r\n");
	assert_string_equal(smtp_helo(t->s), "");
	t->verdict[SMTP_EV_HELO] = SMTP_PENDING;
	feed(t, "HELO x.example\r\n");
	smtp_complete(t->s, SMTP_REJECT, NULL, 0);
	expect_out(t, "550 5.7.1 Error: HELO rejected\r\n");
	t->verdict[SMTP_EV_HELO] = SMTP_ACCEPT;
	feed(t, "HELO x.example\r\n");
	expect_out(t, "250 mx.test\r\n");
	assert_string_equal(smtp_protocol(t->s), "SMTP");

	t->verdict[SMTP_EV_MAIL] = SMTP_REJECT;
	feed(t, "MAIL FROM:<a@b.example>\r\n");
	expect_out(t, "550 5.7.1 Sender rejected\r\n");
	t->verdict[SMTP_EV_MAIL] = SMTP_ACCEPT;
	t->verdict[SMTP_EV_RCPT] = SMTP_REJECT;
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n550 5.1.1 Recipient rejected\r\n");
	t->verdict[SMTP_EV_RCPT] = SMTP_ACCEPT;
	t->verdict[SMTP_EV_DATA] = SMTP_REJECT;
	feed(t, "RCPT TO:<c@d.example>\r\nDATA\r\nRCPT TO:<c@d.example>\r\n");
	expect_out(t, "250 2.1.5 Ok\r\n554 5.7.1 Error: transaction rejected\r\n"
		      "503 5.5.1 Error: need MAIL command\r\n");
	/* DATA refused after pending, and EOM refused after pending */
	t->verdict[SMTP_EV_DATA] = SMTP_PENDING;
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
	smtp_complete(t->s, SMTP_REJECT, "451 4.3.0 try later", 0);
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 try later\r\n");
	t->verdict[SMTP_EV_DATA] = SMTP_ACCEPT;
	t->verdict[SMTP_EV_EOM] = SMTP_PENDING;
	feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nx\r\n.\r\n");
	smtp_complete(t->s, SMTP_REJECT, "554 5.7.1 spam", 0);
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
		      "554 5.7.1 spam\r\n");
	t_free(t);
}

static void test_bdat_pending_and_refused(void **state)
{
	struct t *t = t_ehlo();
	const char *in = "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
			 "BDAT 5 LAST\r\nhelloNOOP\r\n";
	size_t used, len = strlen(in);

	t->verdict[SMTP_EV_DATA] = SMTP_PENDING;
	used = feed(t, in);
	/* the chunk is not read while the caller decides */
	assert_int_equal(used, len - 11);
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	smtp_complete(t->s, SMTP_ACCEPT, NULL, 0);
	used += smtp_input(t->s, (const uint8_t *)in + used, len - used, 0);
	assert_int_equal(used, len);
	expect_out(t, "250 2.0.0 Ok: queued as Q0001\r\n250 2.0.0 Ok\r\n");
	assert_non_null(strstr(t->stored.p, "+0000\r\nhello\n=====\n"));
	/* refused after pending: the chunk is read and dropped, in sync */
	used = feed(t, in);
	smtp_complete(t->s, SMTP_REJECT, NULL, 0);
	used += smtp_input(t->s, (const uint8_t *)in + used, len - used, 0);
	assert_int_equal(used, len);
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "554 5.7.1 Error: transaction rejected\r\n250 2.0.0 Ok\r\n");
	/* refused at once */
	t->verdict[SMTP_EV_DATA] = SMTP_REJECT;
	feed(t, in);
	expect_out(t, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		      "554 5.7.1 Error: transaction rejected\r\n250 2.0.0 Ok\r\n");
	feed(t, "BDAT 5 LAZT\r\n");
	expect_out(t, "501 5.5.4 Syntax: BDAT count [LAST]\r\n"
		      "421 4.7.0 mx.test Error: BDAT syntax, closing\r\n");
	t_free(t);

	/* CHUNKING switched off: not offered, BDAT unknown */
	{
		struct smtp_config c = base_cfg();
		c.no_chunking = true;
		c.no_smtputf8 = true;
		c.greeting = "ESMTP ready";
		t = t_new_cfg(&c);
		smtp_start(t->s, 0);
		out_mark = 0;
		expect_out(t, "220 mx.test ESMTP ready\r\n");
		feed(t, "EHLO c.example\r\n");
		{
			const char *o = t_out(t);
			assert_null(strstr(o, "CHUNKING"));
			assert_null(strstr(o, "SMTPUTF8"));
		}
		feed(t, "BDAT 3\r\nMAIL FROM:<a@b.example> SMTPUTF8\r\n");
		expect_out(t, "502 5.5.1 Error: command not offered here\r\n"
			      "555 5.5.4 Unsupported MAIL parameter\r\n");
		t_free(t);
	}
}

static void test_param_corners(void **state)
{
	struct t *t = t_ehlo();
	char lp[80], cmd[200];

	feed(t, "MAIL FROM:<a@b.example> BODY=7BIT BODY=7BIT\r\n"
		"MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n"
		"MAIL FROM:<a@b.example> SMTPUTF8 SMTPUTF8\r\n"
		"MAIL FROM:<a@b.example> RET=FULL RET=FULL\r\n"
		"MAIL FROM:<a@b.example> ENVID=x ENVID=y\r\n"
		"MAIL FROM:<a@b.example> ENVID=a+4\r\n"
		"MAIL FROM:<a@b.example> -X=1\r\n");
	expect_out(t, "501 5.5.4 Bad BODY parameter\r\n"
		      "501 5.5.4 Bad SMTPUTF8 parameter\r\n"
		      "501 5.5.4 Bad SMTPUTF8 parameter\r\n"
		      "501 5.5.4 Bad RET parameter\r\n"
		      "501 5.5.4 Bad ENVID parameter\r\n"
		      "501 5.5.4 Bad ENVID parameter\r\n"
		      "501 5.5.4 Bad MAIL parameter syntax\r\n");
	/* RFC 5321 §4.5.3.1.1: local part over 64 octets */
	memset(lp, 'a', 65);
	lp[65] = '\0';
	snprintf(cmd, sizeof(cmd), "MAIL FROM:<%s@b.example>\r\n", lp);
	feed(t, cmd);
	expect_out(t, "501 5.1.7 Sender address too long\r\n");
	feed(t, "MAIL FROM:<a@b.example> BODY=7BIT RET=FULL SMTPUTF8\r\n");
	expect_out(t, "250 2.1.0 Ok\r\n");
	assert_non_null(strstr(t->log.p, "body=1 utf8=1 ret=1"));
	snprintf(cmd, sizeof(cmd), "RCPT TO:<%s@b.example>\r\n", lp);
	feed(t, cmd);
	feed(t, "RCPT TO:<c@d.example>junk\r\nRCPT TO:<c@d.example> -BAD\r\n"
		"RCPT TO:<c@d.example> NOTIFY=SUCCESS NOTIFY=DELAY\r\n"
		"RCPT TO:<\xf0\x9f\x93\xa7@d.example>\r\n"
		"RCPT TO:<\"\xf0\x9f\x93\xa7 x\"@d.example>\r\n"
		"RCPT TO:<c@d.example> ORCPT=utf-8;\xc3\xbc\r\n");
	expect_out(t, "501 5.1.3 Recipient address too long\r\n"
		      "501 5.5.4 Syntax: RCPT TO:<address>\r\n"
		      "501 5.5.4 Bad RCPT parameter syntax\r\n"
		      "501 5.5.4 Bad NOTIFY parameter\r\n"
		      "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
		      "501 5.5.4 Bad ORCPT parameter\r\n");
	t_free(t);

	/* RCPT parameters need EHLO too */
	t = t_new();
	feed(t, "HELO c.example\r\nMAIL FROM:<a@b.example>\r\n");
	out_mark = t->out.n;
	feed(t, "RCPT TO:<c@d.example> NOTIFY=NEVER\r\n");
	expect_out(t, "555 5.5.4 Error: parameters need EHLO\r\n");
	t_free(t);
}

/* A partial line already longer than the limit needs no buffer, and one
 * that overflows its buffer in the segment that ends it still gets 500. */
static void test_long_partial_lines(void **state)
{
	struct t *t = t_ehlo();
	char big[1500];

	memset(big, 'N', sizeof(big));
	assert_int_equal(feedn(t, big, sizeof(big)), sizeof(big));
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 0);
	feed(t, "tail\r\nNOOP\r\n");
	expect_out(t, "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
	feedn(t, big, 900);
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 1);
	{
		char seg[208];
		memset(seg, 'N', 200);
		memcpy(seg + 200, "\r\nNOOP\r\n", 8);
		feedn(t, seg, sizeof(seg));
	}
	expect_out(t, "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(smtp_server_buffers_in_use(t->srv), 0);
	t_free(t);
}


/* The Received: date (RFC 5322 §3.3) matches the C library's gmtime_r()
 * over leap years, century rules and a sweep of 5000 random instants. */
static void test_received_date(void **state)
{
	static const int64_t fixed[] = {
		0, 59, 86399, 86400, 951782400 /* 2000-02-29 */,
		951868800 /* 2000-03-01 */, 1709164800 /* 2024-02-29 */,
		4102444799 /* 2099-12-31 */, 4107542400 /* 2100-03-01 */,
		253402300799 /* 9999-12-31 23:59:59 */,
	};
	const int nfixed = (int)(sizeof(fixed) / sizeof(fixed[0]));
	uint64_t x = 88172645463325252ull;
	struct t *t = t_ehlo();
	int i;

	for (i = 0; i < 5000 + nfixed; i++) {
		char want[64];
		const char *got, *p;
		struct tm tm;
		time_t tt;

		if (i < nfixed) {
			t_clock = fixed[i];
		} else {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			t_clock = (int64_t)(x % 253402300800ull);
		}
		tt = (time_t)t_clock;
		gmtime_r(&tt, &tm);
		strftime(want, sizeof(want), "\t%a, %d %b %Y %H:%M:%S +0000\r\n", &tm);
		t->stored.n = 0; /* only this message */
		feed(t, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n.\r\n");
		assert_true(t->stored.n > 0);
		/* the date is the header's last line */
		got = NULL;
		for (p = t->stored.p; (p = strstr(p, "\r\n\t")) != NULL; p += 2)
			got = p + 2;
		assert_non_null(got);
		if (strncmp(got, want, strlen(want)) != 0)
			fail_msg("t=%lld: got \"%.40s\", want \"%s\"",
				 (long long)t_clock, got, want);
	}
	t_clock = 1795913600;
	t_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic_transaction),
		cmocka_unit_test(test_helo_and_simple_commands),
		cmocka_unit_test(test_sequence_errors),
		cmocka_unit_test(test_parse_path_table),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_rcpt_params_and_limits),
		cmocka_unit_test(test_smtputf8),
		cmocka_unit_test(test_dot_unstuffing),
		cmocka_unit_test(test_smuggling_vectors),
		cmocka_unit_test(test_real_end_after_bare_cr),
		cmocka_unit_test(test_bare_lf_in_commands),
		cmocka_unit_test(test_message_too_big),
		cmocka_unit_test(test_body_write_failure),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_bdat_too_big),
		cmocka_unit_test(test_error_limit),
		cmocka_unit_test(test_junk_limit),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_pipelining_in_order),
		cmocka_unit_test(test_async_rcpt_and_commit),
		cmocka_unit_test(test_async_mail_data_helo),
		cmocka_unit_test(test_connect_pending_and_early_talker),
		cmocka_unit_test(test_starttls),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_live_limits),
		cmocka_unit_test(test_no_timeout_while_pending),
		cmocka_unit_test(test_line_buffer_pool),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_split_every_byte),
		cmocka_unit_test(test_smuggling_split),
		cmocka_unit_test(test_enhanced_codes_everywhere),
		cmocka_unit_test(test_body_zero_copy),
		cmocka_unit_test(test_caller_refusals),
		cmocka_unit_test(test_bdat_pending_and_refused),
		cmocka_unit_test(test_param_corners),
		cmocka_unit_test(test_long_partial_lines),
		cmocka_unit_test(test_received_date),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
