/*
 * test_etx.c - the edge transaction module (etx.h) driven through the real
 * SMTP engine, as both I/O modes drive it:
 *  - the spool records of a fixed envelope are byte for byte those of the
 *    same envelope written literally with spool_begin() (so neither mode's
 *    record format can drift);
 *  - a session produces exactly the expected Postfix-format log lines
 *    (connect, client=, message-id=, NOQUEUE reject, lost connection,
 *    disconnect with command counts);
 *  - the per-client session table holds exactly the limit, groups an IPv6
 *    /64, and stays consistent through many takes and puts.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "elog.h"
#include "etx.h"

/* 2026-11-29T10:06:12.000042Z */
#define T_US 1795946772000042ull

struct harness {
	struct etx_ctx x;
	struct etx_tx t;
	struct dp_lcore_stats st;
	struct spool_rcpt rcpts[8];
	char env[8192];
	struct smtp_server *srv;
	struct smtp_session *ss;
	_Alignas(16) uint8_t mem[SMTP_SESSION_MAX];
	char out[16384];
	size_t out_len;
	bool pending;
	/* The message bytes as the engine handed them over, per chunk. */
	unsigned nchunks;
	size_t chunk_len[64];
	char body[16384];
	size_t body_len;
};

static void h_write(void *ctx, const void *buf, size_t len)
{
	struct harness *h = ctx;

	etx_reply(&h->t, buf, len);
	assert_true(h->out_len + len < sizeof(h->out));
	memcpy(h->out + h->out_len, buf, len);
	h->out_len += len;
	h->out[h->out_len] = '\0';
}

static int h_event(void *ctx, struct smtp_session *ss, struct smtp_event *ev)
{
	struct harness *h = ctx;
	int rc = etx_event(&h->x, &h->t, ss, ev, T_US);

	if (ev->type == SMTP_EV_BODY && rc == SMTP_ACCEPT) {
		assert_true(h->nchunks < 64 && h->body_len + ev->len < sizeof(h->body));
		memcpy(h->body + h->body_len, ev->data, ev->len);
		h->body_len += ev->len;
		h->chunk_len[h->nchunks++] = ev->len;
	}
	if (rc == SMTP_PENDING)
		h->pending = true;
	return rc;
}

static int64_t h_time(void *ctx)
{
	(void)ctx;
	return (int64_t)(T_US / 1000000u);
}

static const struct smtp_ops h_ops = {
	.write = h_write, .event = h_event, .unix_time = h_time,
};

static void h_start(struct harness *h, struct spool_writer *w, struct tbl_set *tables,
		    const volatile unsigned *ndomains, struct elog_ring *log,
		    int family, const uint8_t *addr)
{
	struct smtp_config sc = { .hostname = "mx.test" };

	memset(h, 0, sizeof(*h));
	h->x = (struct etx_ctx){ .spool = w, .tables = tables, .ndomains = ndomains,
				 .stats = &h->st, .rcpts = h->rcpts, .max_rcpts = 8,
				 .log = log };
	h->srv = smtp_server_create(&sc, &h_ops);
	assert_non_null(h->srv);
	etx_session_start(&h->x, &h->t, family, addr, h->env, sizeof(h->env), T_US);
	h->ss = smtp_session_init(h->mem, h->srv, h, h->t.peer, 0);
	assert_int_equal(smtp_start(h->ss, 0), 0);
}

/* Answers a PENDING event the way the workers' poll pass does. */
static void h_poll(struct harness *h)
{
	struct etx_answer a;
	unsigned i;

	for (i = 0; i < 5000; i++) {
		if (etx_poll(&h->x, &h->t, h->ss, T_US, &a) == ETX_POLL_DONE) {
			h->pending = false;
			smtp_complete(h->ss, a.verdict, a.reply, 0);
			return;
		}
		usleep(1000);
	}
	fail_msg("the spool never made the message durable");
}

static void h_feed(struct harness *h, const char *in)
{
	size_t len = strlen(in), off = 0;
	unsigned guard;

	for (guard = 0; guard < 100000; guard++) {
		if (h->pending) {
			h_poll(h);
			continue;
		}
		if (off == len || smtp_wants(h->ss) != SMTP_WANT_INPUT)
			return;
		off += smtp_input(h->ss, (const uint8_t *)in + off, len - off, 0);
	}
	fail_msg("the engine did not take its input");
}

static void h_end(struct harness *h)
{
	etx_session_end(&h->x, &h->t, T_US);
	smtp_session_fini(h->ss);
	smtp_server_destroy(h->srv);
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* The one segment file of writer 0 in @dir. */
static char *segment_of(const char *dir, size_t *len)
{
	char path[512] = "";
	struct dirent *e;
	DIR *d = opendir(dir);

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strncmp(e->d_name, "w000-", 5) == 0 && strstr(e->d_name, ".seg"))
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
	closedir(d);
	assert_true(path[0] != '\0');
	return read_file(path, len);
}

static struct spool *open_spool(const char *dir)
{
	struct spool_config c = { .dir = dir, .writers = 1 };
	struct spool *sp = spool_open(&c, NULL);

	assert_non_null(sp);
	return sp;
}

static const char message[] =
	"From: Alice <alice@sender.test>\r\n"
	"To: tj@customer.test\r\n"
	"Subject: golden\r\n"
	"Message-ID:\r\n"
	" <golden-1@sender.test>\r\n"
	"\r\n"
	"Hello.\r\n"
	"..a dot-stuffed line\r\n"
	"Message-ID: <not-a-header@body>\r\n";

static void test_record_bytes(void **state)
{
	static const uint8_t client[4] = { 198, 18, 0, 2 };
	static const volatile unsigned ndomains = 1;
	char dir[] = "/tmp/etx-test.XXXXXX", a[300], b[300], logp[300];
	struct tbl_set *tables = tbl_create();
	struct tbl_domain_policy pol = { 0 };
	struct harness *h = calloc(1, sizeof(*h));
	struct elog *log;
	struct spool *sp;
	char *got, *want, *lines;
	size_t got_len, want_len, len, off = 0;
	char cmds[4096];
	unsigned i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/a", dir);
	snprintf(b, sizeof(b), "%s/b", dir);
	snprintf(logp, sizeof(logp), "%s/mail.log", dir);
	assert_non_null(tables);
	assert_int_equal(tbl_domain_set(tables, "customer.test", &pol), 0);
	log = elog_open(&(struct elog_config){ .path = logp, .hostname = "mx.test",
					       .rings = 1 });
	assert_non_null(log);

	/* Through etx, as a worker does it. */
	sp = open_spool(a);
	h_start(h, spool_writer(sp, 0), tables, &ndomains, elog_ring(log, 0), 4, client);
	snprintf(cmds, sizeof(cmds),
		 "EHLO client.test\r\n"
		 "MAIL FROM:<alice@sender.test> BODY=8BITMIME RET=HDRS SIZE=300 ENVID=env1\r\n"
		 "RCPT TO:<tj@customer.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;tj@customer.test\r\n"
		 "RCPT TO:<x@elsewhere.test>\r\n"
		 "RCPT TO:<bo@customer.test>\r\n"
		 "DATA\r\n%s.\r\nQUIT\r\n", message);
	h_feed(h, cmds);
	assert_non_null(strstr(h->out, "250 2.0.0 Ok: queued as "));
	assert_non_null(strstr(h->out, "550 5.1.2 Recipient domain not accepted here"));
	assert_int_equal(smtp_wants(h->ss), SMTP_WANT_CLOSE);
	assert_int_equal(h->st.messages, 1);
	assert_int_equal(h->st.rcpt_rejected, 1);
	h_end(h);
	spool_close(sp);

	/* The same envelope written literally, the same chunks of bytes. */
	sp = open_spool(b);
	{
		struct spool_writer *w = spool_writer(sp, 0);
		struct spool_rcpt r[2] = {
			{ "tj@customer.test", "SUCCESS,FAILURE", "rfc822;tj@customer.test" },
			{ "bo@customer.test", NULL, NULL },
		};
		struct spool_envelope env = {
			.arrival_us = T_US, .client_addr = "198.18.0.2",
			.helo = "client.test", .mail_from = "alice@sender.test",
			.mail_params = "BODY=8BITMIME RET=HDRS SIZE=300 ENVID=env1",
			.nrcpt = 2, .rcpts = r,
		};
		struct spool_msg m = { 0 };
		uint64_t qid = spool_qid_new(w, T_US / 1000), commit;

		assert_int_equal(spool_begin(w, &m, qid, &env), 0);
		for (i = 0; i < h->nchunks; i++) {
			assert_int_equal(spool_data(w, &m, h->body + off, h->chunk_len[i]), 0);
			off += h->chunk_len[i];
		}
		assert_int_equal(spool_end(w, &m, &commit), 0);
	}
	spool_close(sp);
	got = segment_of(a, &got_len);
	want = segment_of(b, &want_len);
	assert_int_equal(got_len, want_len);
	assert_memory_equal(got, want, got_len);
	/* The bytes are the engine's Received: header, then the message
	 * dot-unstuffed. */
	assert_true(h->body_len > sizeof(message) - 1);
	assert_memory_equal(h->body, "Received: from client.test (", 28);
	assert_non_null(memmem(h->body, h->body_len, "\r\n.a dot-stuffed line\r\n", 23));

	/* Exactly these lines, in this order. */
	elog_close(log);
	lines = read_file(logp, &len);
	{
		char expect[2048], *p, *q;
		const char *pfx = "2026-11-29T10:06:12.000042+00:00 mx.test ";
		/* The id of the records compared equal above. */
		const char *qid = h->t.qid_txt;

		snprintf(expect, sizeof(expect),
			 "mxedge/smtpd[%1$u]: connect from unknown[198.18.0.2]\n"
			 "mxedge/smtpd[%1$u]: NOQUEUE: reject: RCPT from unknown[198.18.0.2]: "
			 "550 5.1.2 <x@elsewhere.test>: Recipient domain not accepted here; "
			 "from=<alice@sender.test> to=<x@elsewhere.test> proto=ESMTP "
			 "helo=<client.test>\n"
			 "mxedge/smtpd[%1$u]: %2$s: client=unknown[198.18.0.2]\n"
			 "mxedge/cleanup[%1$u]: %2$s: message-id=<golden-1@sender.test>\n"
			 "mxedge/smtpd[%1$u]: disconnect from unknown[198.18.0.2] ehlo=1 "
			 "mail=1 rcpt=2/3 data=1 quit=1 commands=6/7\n",
			 (unsigned)getpid(), qid);
		/* Strip the (checked) prefix of every line. */
		for (p = lines, q = lines; *p; ) {
			assert_memory_equal(p, pfx, strlen(pfx));
			p += strlen(pfx);
			while (*p && *p != '\n')
				*q++ = *p++;
			if (*p)
				*q++ = *p++;
		}
		*q = '\0';
		assert_string_equal(lines, expect);
	}
	free(lines);
	free(got);
	free(want);
	free(h);
	tbl_destroy(tables);
	{
		char cmd[400];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
}

/* A blocklisted client and one that leaves in the middle: their lines. */
static void test_reject_and_lost(void **state)
{
	static const uint8_t blocked[4] = { 198, 18, 99, 1 };
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 };
	static const volatile unsigned ndomains = 0;
	char dir[] = "/tmp/etx-test.XXXXXX", logp[300], sdir[300], *lines, *p;
	struct tbl_set *tables = tbl_create();
	struct tbl_prefix pfx;
	struct harness *h = calloc(1, sizeof(*h));
	struct elog *log;
	struct spool *sp;
	size_t len;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(logp, sizeof(logp), "%s/mail.log", dir);
	snprintf(sdir, sizeof(sdir), "%s/spool", dir);
	assert_int_equal(tbl_prefix_parse("198.18.99.0/24", false, &pfx), 0);
	assert_int_equal(tbl_prefix_add(tables, TBL_BLOCK, &pfx, 0), 0);
	log = elog_open(&(struct elog_config){ .path = logp, .hostname = "mx.test",
					       .rings = 1 });
	sp = open_spool(sdir);

	h_start(h, spool_writer(sp, 0), tables, &ndomains, elog_ring(log, 0), 4, blocked);
	assert_non_null(strstr(h->out, "554 5.7.1 Client host rejected"));
	assert_int_equal(h->st.clients_blocked, 1);
	h_end(h);

	/* IPv6, leaves during DATA: the BEGIN record is aborted. */
	h_start(h, spool_writer(sp, 0), tables, &ndomains, elog_ring(log, 0), 6, v6);
	assert_string_equal(h->t.peer, "IPv6:2001:db8::2");
	h_feed(h, "HELO old.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.test>\r\nDATA\r\nSubj");
	assert_true(etx_busy(&h->t));
	h_end(h);
	assert_false(etx_busy(&h->t));
	spool_close(sp);
	elog_close(log);

	lines = read_file(logp, &len);
	p = lines;
#define NEXT(want) do { \
		char *nl = strchr(p, '\n'); \
		assert_non_null(nl); *nl = '\0'; \
		assert_non_null(strstr(p, "mxedge/")); \
		assert_string_equal(strchr(strstr(p, "mxedge/"), ' ') + 1, want); \
		p = nl + 1; \
	} while (0)
	NEXT("connect from unknown[198.18.99.1]");
	NEXT("NOQUEUE: reject: CONNECT from unknown[198.18.99.1]: 554 5.7.1 Client "
	     "host rejected: access denied; proto=SMTP");
	NEXT("disconnect from unknown[198.18.99.1] commands=0");
	NEXT("connect from unknown[2001:db8::2]");
	NEXT("lost connection after DATA from unknown[2001:db8::2]");
	NEXT("disconnect from unknown[2001:db8::2] helo=1 mail=1 rcpt=1 data=1 commands=4");
	assert_string_equal(p, "");
#undef NEXT
	free(lines);
	free(h);
	tbl_destroy(tables);
	{
		char cmd[400];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
}

static void test_clients(void **state)
{
	enum { POOL = 64, KEYS = 200 };
	struct etx_clients *c = etx_clients_create(POOL, 12345);
	uint8_t k1[ETX_CLIENT_KEY], k2[ETX_CLIENT_KEY], k3[ETX_CLIENT_KEY];
	uint8_t a6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1 };
	unsigned model[KEYS] = { 0 }, held = 0, i, step;
	uint8_t a4[4] = { 198, 18, 0, 0 };

	(void)state;
	assert_non_null(c);
	assert_null(etx_clients_create(0, 1));
	/* The limit holds; a put frees one place. */
	etx_client_key(4, (const uint8_t[]){ 198, 18, 0, 2 }, k1);
	assert_int_equal(etx_clients_take(c, k1, 2), 0);
	assert_int_equal(etx_clients_take(c, k1, 2), 0);
	assert_int_equal(etx_clients_take(c, k1, 2), -EBUSY);
	etx_clients_put(c, k1);
	assert_int_equal(etx_clients_take(c, k1, 2), 0);
	/* Two addresses of one IPv6 /64 are one client, another /64 is not. */
	etx_client_key(6, a6, k2);
	a6[15] = 99;
	etx_client_key(6, a6, k3);
	assert_memory_equal(k2, k3, ETX_CLIENT_KEY);
	assert_int_equal(etx_clients_take(c, k2, 1), 0);
	assert_int_equal(etx_clients_take(c, k3, 1), -EBUSY);
	a6[7] = 2;
	etx_client_key(6, a6, k3);
	assert_int_equal(etx_clients_take(c, k3, 1), 0);
	etx_clients_put(c, k1);
	etx_clients_put(c, k1);
	etx_clients_put(c, k2);
	etx_clients_put(c, k3);
	etx_clients_destroy(c);

	/* Random takes and puts against a plain model: deletions must never
	 * cut a probe chain (the table is small, so chains are long). */
	c = etx_clients_create(POOL, 99);
	srand(7);
	for (step = 0; step < 200000; step++) {
		i = (unsigned)rand() % KEYS;
		a4[2] = (uint8_t)(i >> 8);
		a4[3] = (uint8_t)i;
		etx_client_key(4, a4, k1);
		if ((rand() & 1) && model[i] > 0) {
			etx_clients_put(c, k1);
			model[i]--;
			held--;
		} else if (held < POOL) {
			int rc = etx_clients_take(c, k1, 3);

			assert_int_equal(rc, model[i] < 3 ? 0 : -EBUSY);
			if (rc == 0) {
				model[i]++;
				held++;
			}
		}
	}
	etx_clients_destroy(c);
	etx_clients_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_bytes),
		cmocka_unit_test(test_reject_and_lost),
		cmocka_unit_test(test_clients),
	};

	setenv("TZ", "UTC", 1);
	tzset();
	tbl_reader_register();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
