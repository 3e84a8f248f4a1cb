/*
 * Relay unit tests: the retry schedule, status codes, dot-stuffing and the
 * RFC 3464 report are exact; the ESMTP client, against a scripted server
 * on loopback, gives each recipient its own outcome (sent, deferred,
 * bounced), never pipelines to a server that did not offer PIPELINING,
 * defers (never loses) what a dropped connection was carrying, and keeps
 * the STARTTLS policy (a "required" route is never sent in clear; an
 * opportunistic one goes on in clear when TLS fails). The relay's YAML
 * keys are parsed with FILE:LINE errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "../relay.h"
#include "spool.h"

/* ---- pure helpers ---- */

static void test_backoff(void **state)
{
	struct cfg c;
	uint64_t prev_lo = 0;

	cfg_defaults(&c);
	/* First retry: 300 s, jitter never below the minimum. */
	for (uint32_t rnd = 0; rnd < 2000; rnd += 7) {
		uint64_t s = relay_backoff_s(&c.relay, 1, rnd);

		assert_true(s >= 300 && s <= 375);
	}
	assert_int_equal(relay_backoff_s(&c.relay, 1, 0), 300);
	/* Doubling: attempt n lies around 300 * 2^(n-1) within +-25%,
	 * capped at 4000 s however many attempts failed. */
	for (unsigned a = 1; a <= 60; a++) {
		uint64_t lo = UINT64_MAX, hi = 0, base = 300;

		for (unsigned k = 1; k < a && base < 4000; k++)
			base *= 2;
		if (base > 4000)
			base = 4000;
		for (uint32_t rnd = 0; rnd < 5000; rnd += 13) {
			uint64_t s = relay_backoff_s(&c.relay, a, rnd * 2654435761u);

			assert_true(s >= 300 && s <= 4000);
			assert_true(s >= base - base / 4 && s <= base + base / 4);
			lo = s < lo ? s : lo;
			hi = s > hi ? s : hi;
		}
		assert_true(lo >= prev_lo || lo >= 3000); /* never shrinks */
		if (base >= 600 && base < 4000)
			assert_true(hi > lo); /* there is jitter */
		prev_lo = lo;
	}
}

static void test_dsn_of(void **state)
{
	char d[16];

	relay_dsn_of(550, "5.1.1 <x@y>: User unknown", d);
	assert_string_equal(d, "5.1.1");
	relay_dsn_of(451, "4.7.1 try later", d);
	assert_string_equal(d, "4.7.1");
	relay_dsn_of(550, "4.1.1 class differs from the reply", d);
	assert_string_equal(d, "5.0.0");
	relay_dsn_of(250, "Ok", d);
	assert_string_equal(d, "2.0.0");
	relay_dsn_of(552, "5.3.4", d);
	assert_string_equal(d, "5.3.4");
	relay_dsn_of(550, "5.1.1234 too many digits", d);
	assert_string_equal(d, "5.0.0");
	relay_dsn_of(421, NULL, d);
	assert_string_equal(d, "4.0.0");
}

static void test_dot_stuff(void **state)
{
	static const char msg[] = ".a\r\n..b\r\n.\r\nc";
	static const char want[] = "..a\r\n...b\r\n..\r\nc\r\n.\r\n";
	char out[64];
	size_t n;

	/* RFC 5321 §4.5.2: a leading dot doubled; the end is CRLF.CRLF. */
	n = relay_dot_stuff((const unsigned char *)msg, strlen(msg), NULL, 0);
	assert_int_equal(n, strlen(want));
	assert_int_equal(relay_dot_stuff((const unsigned char *)msg, strlen(msg), out,
					 sizeof(out)), strlen(want));
	assert_memory_equal(out, want, n);
	n = relay_dot_stuff((const unsigned char *)"x\r\n", 3, out, sizeof(out));
	assert_int_equal(n, 6);
	assert_memory_equal(out, "x\r\n.\r\n", 6);
	n = relay_dot_stuff((const unsigned char *)"", 0, out, sizeof(out));
	assert_int_equal(n, 3);
	assert_memory_equal(out, ".\r\n", 3);
}

/* The RFC 5321 §4.5.2 rule spelled out byte by byte: the oracle the
 * memchr/memcpy implementation is checked against. */
static size_t ref_dot_stuff(const unsigned char *msg, size_t len, char *out)
{
	size_t n = 0;
	bool bol = true;

	for (size_t i = 0; i < len; i++) {
		if (bol && msg[i] == '.')
			out[n++] = '.';
		out[n++] = (char)msg[i];
		bol = msg[i] == '\n';
	}
	if (len > 0 && !(len >= 2 && msg[len - 2] == '\r' && msg[len - 1] == '\n')) {
		out[n++] = '\r';
		out[n++] = '\n';
	}
	memcpy(out + n, ".\r\n", 3);
	return n + 3;
}

/* Stuffs @msg with an exact-size buffer, a bound-size one and a too
 * small one, and checks each against @want. */
static void check_stuff(const char *msg, size_t len, const char *want, size_t wlen)
{
	size_t bound = relay_dot_stuff_bound(len);
	char *out = malloc(bound + 16);
	size_t n;

	assert_non_null(out);
	assert_true(bound >= wlen);
	assert_int_equal(relay_dot_stuff((const unsigned char *)msg, len, NULL, 0), wlen);
	memset(out, 'Z', bound + 16);
	n = relay_dot_stuff((const unsigned char *)msg, len, out, bound);
	assert_int_equal(n, wlen);
	assert_memory_equal(out, want, wlen);
	assert_int_equal(out[bound], 'Z');           /* nothing past the bound */
	memset(out, 'Z', bound + 16);
	n = relay_dot_stuff((const unsigned char *)msg, len, out, wlen);
	assert_int_equal(n, wlen);
	assert_memory_equal(out, want, wlen);
	assert_int_equal(out[wlen], 'Z');            /* exact fit: no overrun */
	memset(out, 'Z', bound + 16);
	/* One byte short: the size is reported and nothing is written. */
	n = relay_dot_stuff((const unsigned char *)msg, len, out, wlen - 1);
	assert_int_equal(n, wlen);
	assert_int_equal(out[0], 'Z');
	free(out);
}

#define CHECK_STUFF(msg, want) check_stuff(msg, sizeof(msg) - 1, want, sizeof(want) - 1)

static void test_dot_stuff_edges(void **state)
{
	/* Lines starting with '.', including a lone "." line that would
	 * end the DATA early if it went out unstuffed. */
	CHECK_STUFF(".", "..\r\n.\r\n");
	CHECK_STUFF(".\r\n", "..\r\n.\r\n");
	CHECK_STUFF("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n");
	CHECK_STUFF("..\r\n...\r\n", "...\r\n....\r\n.\r\n");
	CHECK_STUFF("a.b\r\n x.\r\n", "a.b\r\n x.\r\n.\r\n"); /* not at a line start */
	/* A bare LF starts a line (receivers that accept it see one); a
	 * bare CR does not. Bytes are never converted: the body stays as
	 * it was accepted. */
	CHECK_STUFF("a\n.b\r\n", "a\n..b\r\n.\r\n");
	CHECK_STUFF("a\r.b\r\n", "a\r.b\r\n.\r\n");
	CHECK_STUFF("\n.\n.", "\n..\n..\r\n.\r\n");
	/* Message without a final CRLF: one is added before ".CRLF". */
	CHECK_STUFF("no newline", "no newline\r\n.\r\n");
	CHECK_STUFF("ends in LF\n", "ends in LF\n\r\n.\r\n");
	CHECK_STUFF("ends in CR\r", "ends in CR\r\r\n.\r\n");
	CHECK_STUFF("ends in dot\r\n.", "ends in dot\r\n..\r\n.\r\n");
	CHECK_STUFF("\r\n", "\r\n.\r\n");
	CHECK_STUFF("\n", "\n\r\n.\r\n");
	CHECK_STUFF("\r", "\r\r\n.\r\n");
	/* The worst case for the bound: every byte-pair is ".\n". */
	CHECK_STUFF(".\n.\n.\n.", "..\n..\n..\n..\r\n.\r\n");
}

/* Random messages over the bytes that matter ('.', CR, LF, other), of
 * every length around the points where the copy loop switches between
 * lines, compared with the byte-by-byte rule. */
static void test_dot_stuff_random(void **state)
{
	static const char alpha[] = ".\r\nx";
	unsigned seed = 12345;
	unsigned char msg[600];
	char want[1000];

	for (unsigned iter = 0; iter < 20000; iter++) {
		size_t len = iter % 40 < 30 ? iter % 40 : (iter * 7919u) % sizeof(msg);

		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			msg[i] = (unsigned char)alpha[(seed >> 16) % 4];
		}
		check_stuff((const char *)msg, len, want, ref_dot_stuff(msg, len, want));
	}
}

static void test_bounce(void **state)
{
	static const char orig[] =
		"Subject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nsecret body\r\n";
	struct relay_dsn_rcpt r[2] = {
		{ "tj@customer.test", "rfc822;TJ@customer.test", "5.1.1", "mx.customer.test",
		  "550 5.1.1 User unknown\r\nInjected: header" },
		{ "ann@customer.test", NULL, "4.4.7", NULL, "delivery time expired" },
	};
	size_t len = 0;
	char *b = relay_bounce_build("edge.test", "15aBqdjn3fU", "list@example.org",
				     1764410772000000ULL, r, 2, (const unsigned char *)orig,
				     strlen(orig), false, 1764410800, &len);

	assert_non_null(b);
	assert_int_equal(strlen(b), len);
	assert_non_null(strstr(b, "To: <list@example.org>\r\n"));
	assert_non_null(strstr(b, "Auto-Submitted: auto-replied\r\n"));
	assert_non_null(strstr(b, "Content-Type: multipart/report; report-type=delivery-status;"));
	assert_non_null(strstr(b, "Reporting-MTA: dns; edge.test\r\n"));
	assert_non_null(strstr(b, "Arrival-Date: Sat, 29 Nov 2025"));
	assert_non_null(strstr(b, "\r\nFinal-Recipient: rfc822; tj@customer.test\r\n"
				  "Original-Recipient: rfc822; TJ@customer.test\r\n"
				  "Action: failed\r\nStatus: 5.1.1\r\n"
				  "Remote-MTA: dns; mx.customer.test\r\n"
				  "Diagnostic-Code: smtp; 550 5.1.1 User unknown  Injected: header\r\n"));
	assert_non_null(strstr(b, "Final-Recipient: rfc822; ann@customer.test\r\n"
				  "Action: failed\r\nStatus: 4.4.7\r\n"));
	/* A reply text can never add a header line to the report. */
	assert_null(strstr(b, "\r\nInjected: header"));
	/* The original's header is returned, its body is not. */
	assert_non_null(strstr(b, "Content-Type: text/rfc822-headers\r\n\r\n"
				  "Subject: hello\r\nMessage-ID: <m1@example.org>\r\n"));
	assert_null(strstr(b, "secret body"));
	assert_non_null(strstr(b, "--\r\n"));
	free(b);
	/* RET=FULL: the whole message comes back. */
	b = relay_bounce_build("edge.test", "15aBqdjn3fU", "list@example.org",
			       1764410772000000ULL, r, 1, (const unsigned char *)orig,
			       strlen(orig), true, 1764410800, &len);
	assert_non_null(b);
	assert_non_null(strstr(b, "Content-Type: message/rfc822\r\n\r\n"
				  "Subject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\n"
				  "secret body\r\n"));
	assert_null(strstr(b, "text/rfc822-headers"));
	free(b);
}

/* ---- the ESMTP client against a scripted server ---- */

struct script {
	const char *greeting;      /* NULL: "220 fake.test ESMTP" */
	const char *ehlo;          /* reply to EHLO */
	const char *mail;
	const char *rcpt[4];
	const char *data;
	const char *dot;
	const char *starttls;      /* reply to STARTTLS; NULL: 502. A 220 is
				    * followed by plaintext garbage and a hang-up,
				    * so the client's handshake fails */
	bool drop_after_data;      /* close the connection instead of the dot reply */
	int lfd, port;
	char got[16384];           /* commands received, as sent */
	size_t glen;
	int pipelined_early;       /* a command arrived before its predecessor's reply */
	int connections;
	int starttls_seen;
	int dots;                  /* messages received (end of data seen) */
	int behind_dot;            /* of them, followed at once by the next command */
};

static const char *route_tls = "none"; /* customer.test's policy in run_relay() */
static unsigned relay_conc = 20;       /* relay.concurrency in run_relay() */

static bool read_line(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	while (n + 1 < cap) {
		ssize_t k = recv(fd, buf + n, 1, 0);

		if (k <= 0)
			return false;
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return true;
}

static void say(int fd, const char *s)
{
	size_t n = strlen(s);

	if (write(fd, s, n) != (ssize_t)n)
		return;
}

static void *server_main(void *arg)
{
	struct script *sc = arg;
	char line[2048];
	int fd;

	while ((fd = accept(sc->lfd, NULL, NULL)) >= 0) {
		unsigned ri = 0;

		sc->connections++;
		say(fd, sc->greeting ? sc->greeting : "220 fake.test ESMTP\r\n");
		while (read_line(fd, line, sizeof(line))) {
			char peek;
			const char *reply = "250 ok\r\n";

			if (sc->glen + strlen(line) < sizeof(sc->got)) {
				memcpy(sc->got + sc->glen, line, strlen(line));
				sc->glen += strlen(line);
			}
			/* Without PIPELINING the client must wait for each
			 * reply (RFC 2920 §3.2) before sending again. */
			if (recv(fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
				sc->pipelined_early++;
			if (!strncmp(line, "EHLO", 4))
				reply = sc->ehlo;
			else if (!strncmp(line, "MAIL", 4))
				reply = sc->mail, ri = 0;
			else if (!strncmp(line, "RCPT", 4))
				reply = sc->rcpt[ri < 4 ? ri++ : 3];
			else if (!strncmp(line, "DATA", 4)) {
				reply = sc->data;
				if (!strncmp(reply, "354", 3)) {
					say(fd, reply);
					/* The data is recorded too, as received. */
					while (read_line(fd, line, sizeof(line))) {
						if (sc->glen + strlen(line) < sizeof(sc->got)) {
							memcpy(sc->got + sc->glen, line, strlen(line));
							sc->glen += strlen(line);
						}
						if (!strcmp(line, ".\r\n"))
							break;
					}
					sc->dots++;
					/* What the client sent in the same write as
					 * the end of data (RFC 2920 §3.1). */
					if (recv(fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
						sc->behind_dot++;
					if (sc->drop_after_data)
						break;
					reply = sc->dot;
				}
			} else if (!strncmp(line, "STARTTLS", 8)) {
				reply = sc->starttls ? sc->starttls : "502 5.5.1 no\r\n";
				sc->starttls_seen++;
				if (!strncmp(reply, "220", 3)) {
					say(fd, reply);
					say(fd, "this is not TLS\r\n");
					break;
				}
			} else if (!strncmp(line, "QUIT", 4)) {
				say(fd, "221 bye\r\n");
				break;
			}
			say(fd, reply);
		}
		close(fd);
	}
	return NULL;
}

static char tdir[64];

static int setup_dir(void **state)
{
	strcpy(tdir, "/tmp/mxt-relay.XXXXXX");
	return mkdtemp(tdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
	return system(cmd) == 0 ? 0 : -1;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Spools one message from alice@sender.test to @rcpts (comma list). */
static void spool_one(const char *rcpts)
{
	struct spool_config cfg = { 0 };
	struct spool_rcpt r[4];
	struct spool_envelope env = { 0 };
	struct spool_msg m;
	struct spool *sp;
	struct spool_writer *w;
	char path[128], list[256], *save = NULL;
	unsigned n = 0;
	uint64_t off, qid;
	static const char body[] = "Subject: t\r\n\r\n.dot\r\nbody\r\n";

	snprintf(path, sizeof(path), "%s/spool", tdir);
	snprintf(list, sizeof(list), "%s", rcpts);
	for (char *t = strtok_r(list, ",", &save); t && n < 4; t = strtok_r(NULL, ",", &save))
		r[n++] = (struct spool_rcpt){ t, NULL, NULL };
	cfg.dir = path;
	cfg.writers = 1;
	sp = spool_open(&cfg, NULL);
	assert_non_null(sp);
	w = spool_writer(sp, 0);
	env.arrival_us = wall_ms() * 1000;
	env.client_addr = "198.18.7.23";
	env.helo = "client.test";
	env.mail_from = "alice@sender.test";
	env.mail_params = "BODY=8BITMIME";
	env.nrcpt = n;
	env.rcpts = r;
	qid = spool_qid_new(w, wall_ms());
	assert_int_equal(spool_begin(w, &m, qid, &env), 0);
	assert_int_equal(spool_data(w, &m, body, strlen(body)), 0);
	assert_int_equal(spool_end(w, &m, &off), 0);
	for (int i = 0; i < 5000 && !spool_durable(w, off); i++)
		usleep(1000);
	assert_true(spool_durable(w, off));
	spool_close(sp);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *b = calloc(1, 65536);

	if (f) {
		size_t n = fread(b, 1, 65535, f);

		b[n] = '\0';
		fclose(f);
	}
	return b;
}

/* Runs a relay against @sc until the mail log holds @want_lines lines
 * matching @until (10 s at most). Returns the mail log. */
static char *run_relay(struct script *sc, const char *until, int want)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	struct event_base *base;
	struct relay *r;
	pthread_t th;
	char yaml[1024], err[256], logp[128], spoolp[128];
	struct cfg c;
	char *log = NULL;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sc->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(sc->lfd >= 0);
	assert_int_equal(bind(sc->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(sc->lfd, 8), 0);
	assert_int_equal(getsockname(sc->lfd, (struct sockaddr *)&sa, &sl), 0);
	sc->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&th, NULL, server_main, sc), 0);

	snprintf(logp, sizeof(logp), "%s/mail.log", tdir);
	snprintf(spoolp, sizeof(spoolp), "%s/spool", tdir);
	snprintf(yaml, sizeof(yaml),
		 "hostname: edge.test\n"
		 "relay: { state_dir: %s/state, log_file: %s, time_scale: 0.0001, timeout: 5s,"
		 " concurrency: %u }\n"
		 "domains:\n"
		 "  customer.test: { route: { host: 127.0.0.1, port: %d, tls: %s } }\n"
		 "  sender.test: { route: { host: 127.0.0.1, port: 1 } }\n",
		 tdir, logp, relay_conc, sc->port, route_tls);
	cfg_defaults(&c);
	assert_int_equal(cfg_load("t.yaml", yaml, strlen(yaml), &c, err, sizeof(err)), 0);
	base = event_base_new();
	assert_non_null(base);
	r = relay_new(base, &c, spoolp, err, sizeof(err));
	if (r == NULL)
		fail_msg("relay_new: %s", err);
	for (int i = 0; i < 1000; i++) {
		const char *p;
		int n = 0;

		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(1000);
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		free(log);
		log = slurp(logp);
		for (p = log; (p = strstr(p, until)) != NULL; p++)
			n++;
		if (n >= want)
			break;
	}
	relay_free(r);
	event_base_free(base);
	cfg_free(&c);
	shutdown(sc->lfd, SHUT_RDWR);
	close(sc->lfd);
	pthread_join(th, NULL);
	return log;
}

/* A server without PIPELINING; three recipients, three outcomes. */
static void test_client_per_recipient(void **state)
{
	struct script *sc = calloc(1, sizeof(*sc));
	char *log, *st, path[128];

	sc->ehlo = "250-fake.test\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n";
	sc->mail = "250 2.1.0 ok\r\n";
	sc->rcpt[0] = "250 2.1.5 ok\r\n";
	sc->rcpt[1] = "450 4.2.0 <b@customer.test>: mailbox busy\r\n";
	sc->rcpt[2] = "550 5.1.1 <c@customer.test>: no such user\r\n";
	sc->data = "354 go\r\n";
	sc->dot = "250 2.0.0 queued as ABC\r\n";
	spool_one("a@customer.test,b@customer.test,c@customer.test");
	log = run_relay(sc, "sender non-delivery notification", 1);
	assert_non_null(strstr(log, "to=<a@customer.test>, relay=127.0.0.1[127.0.0.1]:"));
	assert_non_null(strstr(log, "dsn=2.0.0, status=sent (250 2.0.0 queued as ABC)"));
	assert_non_null(strstr(log, "to=<b@customer.test>"));
	assert_non_null(strstr(log, "dsn=4.2.0, status=deferred (host 127.0.0.1 said: 450 4.2.0 "
			       "<b@customer.test>: mailbox busy (in reply to RCPT TO command))"));
	assert_non_null(strstr(log, "dsn=5.1.1, status=bounced (host 127.0.0.1 said: 550 5.1.1"));
	assert_non_null(strstr(log, "sender non-delivery notification"));
	/* commands one at a time, SIZE and BODY passed on, dot-stuffed */
	assert_int_equal(sc->pipelined_early, 0);
	assert_non_null(strstr(sc->got, "MAIL FROM:<alice@sender.test> SIZE=26 BODY=8BITMIME\r\n"));
	assert_non_null(strstr(sc->got, "RCPT TO:<c@customer.test>\r\nDATA\r\n"));
	/* final states: a sent, c failed once its bounce was durable; b open,
	 * with its next attempt recorded ("T") for a restart */
	snprintf(path, sizeof(path), "%s/state/state.log", tdir);
	st = slurp(path);
	{
		int fin[3] = { 0, 0, 0 }, retry = 0;
		char kind, id[16];
		unsigned src, idx, w;
		unsigned long long off;

		for (char *l = st; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
			if (sscanf(l, "%c %u %15s %u %u %llu", &kind, &src, id, &idx, &w, &off) == 6 &&
			    (kind == 'S' || kind == 'F') && idx < 3)
				fin[idx] = kind;
			if (l[0] == 'T')
				retry++;
		}
		assert_int_equal(fin[0], 'S');
		assert_int_equal(fin[1], 0);
		assert_int_equal(fin[2], 'F');
		assert_true(retry >= 1);
	}
	free(st);
	free(log);
	free(sc);
}

/* The next hop hangs up after the data: nothing is lost, all deferred,
 * and the retry (scaled backoff) goes out over a new connection. */
static void test_client_connection_lost(void **state)
{
	struct script *sc = calloc(1, sizeof(*sc));
	char *log;

	sc->ehlo = "250-fake.test\r\n250 PIPELINING\r\n";
	sc->mail = "250 ok\r\n";
	sc->rcpt[0] = sc->rcpt[1] = "250 ok\r\n";
	sc->data = "354 go\r\n";
	sc->dot = "250 ok\r\n";
	sc->drop_after_data = true;
	spool_one("a@customer.test,b@customer.test");
	log = run_relay(sc, "status=deferred (lost connection", 4);
	assert_non_null(strstr(log, "to=<a@customer.test>, relay=127.0.0.1[127.0.0.1]:"));
	assert_non_null(strstr(log, "status=deferred (lost connection with 127.0.0.1[127.0.0.1]:"));
	assert_null(strstr(log, "status=sent"));
	assert_null(strstr(log, "removed"));
	assert_true(sc->connections >= 2);
	/* with PIPELINING: MAIL, RCPTs and DATA in one group */
	assert_non_null(strstr(sc->got, "MAIL FROM:<alice@sender.test>\r\n"
			       "RCPT TO:<a@customer.test>\r\nRCPT TO:<b@customer.test>\r\nDATA\r\n"));
	free(log);
	free(sc);
}

/* A reused connection to a PIPELINING server: the next message's MAIL,
 * RCPT and DATA go out behind the previous end of data (one round trip
 * per message), every message arrives intact; a connection lost with a
 * message sent and the next one announced defers both, loses neither. */
static void test_client_pipelined_reuse(void **state)
{
	struct script *sc = calloc(1, sizeof(*sc));
	char *log, *p;
	int n = 0;

	relay_conc = 1;
	sc->ehlo = "250-fake.test\r\n250 PIPELINING\r\n";
	sc->mail = "250 ok\r\n";
	sc->rcpt[0] = "250 ok\r\n";
	sc->data = "354 go\r\n";
	sc->dot = "250 2.0.0 ok\r\n";
	for (int i = 0; i < 3; i++)
		spool_one("a@customer.test");
	log = run_relay(sc, "status=sent", 3);
	for (p = log; (p = strstr(p, "status=sent (250 2.0.0 ok)")) != NULL; p++)
		n++;
	assert_int_equal(n, 3);
	assert_int_equal(sc->connections, 1);
	assert_int_equal(sc->dots, 3);
	assert_int_equal(sc->behind_dot, 2);   /* messages 2 and 3 */
	for (n = 0, p = sc->got; (p = strstr(p, "Subject: t\r\n\r\n..dot\r\nbody\r\n")); p++)
		n++;
	assert_int_equal(n, 3);
	assert_non_null(strstr(sc->got, "body\r\n.\r\nMAIL FROM:<alice@sender.test>\r\n"
			       "RCPT TO:<a@customer.test>\r\nDATA\r\n"));
	free(log);
	free(sc);

	/* Lost after the data of message 1 (message 2 announced behind
	 * it): both deferred, then message 3 on the next connection too. */
	teardown_dir(state);
	setup_dir(state);
	sc = calloc(1, sizeof(*sc));
	sc->ehlo = "250-fake.test\r\n250 PIPELINING\r\n";
	sc->mail = "250 ok\r\n";
	sc->rcpt[0] = "250 ok\r\n";
	sc->data = "354 go\r\n";
	sc->dot = "250 ok\r\n";
	sc->drop_after_data = true;
	for (int i = 0; i < 3; i++)
		spool_one("a@customer.test");
	log = run_relay(sc, "status=deferred (lost connection", 3);
	for (n = 0, p = log; (p = strstr(p, "status=deferred (lost connection")); p++)
		n++;
	assert_true(n >= 3);
	assert_null(strstr(log, "status=sent"));
	assert_null(strstr(log, "removed"));
	assert_true(sc->connections >= 2);
	relay_conc = 20;
	free(log);
	free(sc);
}

/* What the next hop says is untrusted input: garbage, an endless line or
 * a refusal never crash the relay; the mail is deferred, not lost. */
static void test_client_bad_replies(void **state)
{
	static const struct {
		const char *greeting, *ehlo, *want;
	} cases[] = {
		{ "hello there\r\n", NULL, "status=deferred (malformed reply from the next hop)" },
		{ "220-ok\r\n2x0 bad continuation\r\n", NULL, "malformed reply" },
		{ "554 5.7.1 go away\r\n", NULL,
		  "status=deferred (host 127.0.0.1[127.0.0.1]:" },
		{ "220 ok\r\n", "250-x\r\n250-PIPELINING\r\n25\r\n", "malformed reply" },
		{ NULL, "421 4.3.2 shutting down\r\n",
		  "dsn=4.3.2, status=deferred (host 127.0.0.1[127.0.0.1]:" },
		{ NULL, NULL, "reply line too long" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct script *sc = calloc(1, sizeof(*sc));
		char *log, *big = NULL;

		sc->greeting = cases[i].greeting;
		sc->ehlo = cases[i].ehlo ? cases[i].ehlo : "250 fake.test\r\n";
		if (i == 5) { /* 8 KB without a line end */
			big = malloc(8200);
			memset(big, 'x', 8199);
			memcpy(big, "220-", 4);
			big[8199] = '\0';
			sc->greeting = big;
		}
		sc->mail = sc->rcpt[0] = sc->dot = "250 ok\r\n";
		sc->data = "354 go\r\n";
		spool_one("a@customer.test");
		log = run_relay(sc, cases[i].want, 1);
		if (strstr(log, cases[i].want) == NULL)
			fail_msg("case %zu: \"%s\" not in the log:\n%s", i, cases[i].want, log);
		assert_null(strstr(log, "status=sent"));
		free(log);
		free(big);
		free(sc);
		teardown_dir(state);
		setup_dir(state);
	}
}

/* Every recipient refused under PIPELINING: the server rejects DATA too;
 * the open transaction is reset before the next message's MAIL on the
 * same connection. */
static void test_client_all_rcpts_refused(void **state)
{
	struct script *sc = calloc(1, sizeof(*sc));
	char *log;

	sc->ehlo = "250-fake.test\r\n250 PIPELINING\r\n";
	sc->mail = "250 ok\r\n";
	sc->rcpt[0] = "550 5.1.1 no such user\r\n";
	sc->data = "554 5.5.1 no valid recipients\r\n";
	sc->dot = "250 ok\r\n";
	spool_one("x@customer.test");
	spool_one("y@customer.test");
	log = run_relay(sc, "status=bounced", 2);
	assert_non_null(strstr(log, "to=<x@customer.test>"));
	assert_non_null(strstr(log, "to=<y@customer.test>"));
	/* RSET then the next MAIL on the same connection (a new one would
	 * start with EHLO) */
	assert_non_null(strstr(sc->got, "DATA\r\nRSET\r\nMAIL FROM:<alice@sender.test>\r\n"));
	free(log);
	free(sc);
}

/* STARTTLS policy (RFC 3207) against servers that cannot give TLS. */
static void test_client_tls_policy(void **state)
{
	static const struct {
		const char *tls, *ehlo, *starttls, *want;
		bool sent;      /* delivered (in clear) */
		int conns;      /* at least this many connections */
	} cases[] = {
		/* required, not offered: deferred, never in clear */
		{ "required", "250 fake.test\r\n", NULL,
		  "dsn=4.7.4, status=deferred (TLS is required, but was not offered by host "
		  "127.0.0.1[127.0.0.1]:", false, 1 },
		/* required, offered but refused */
		{ "required", "250-fake.test\r\n250 STARTTLS\r\n", "454 4.7.0 TLS not available\r\n",
		  "dsn=4.7.4, status=deferred (TLS is required, but host 127.0.0.1[127.0.0.1]:", false,
		  1 },
		/* required, handshake fails */
		{ "required", "250-fake.test\r\n250 STARTTLS\r\n", "220 2.0.0 go ahead\r\n",
		  "dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure with 127.0.0.1", false,
		  1 },
		/* opportunistic, refused: on in clear on the same connection */
		{ "opportunistic", "250-fake.test\r\n250 STARTTLS\r\n", "454 4.7.0 not now\r\n",
		  "status=sent", true, 1 },
		/* opportunistic, handshake fails: a new connection without TLS */
		{ "opportunistic", "250-fake.test\r\n250 STARTTLS\r\n", "220 go ahead\r\n",
		  "status=sent", true, 2 },
		/* none: STARTTLS is never sent even when offered */
		{ "none", "250-fake.test\r\n250 STARTTLS\r\n", "220 go ahead\r\n",
		  "status=sent", true, 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct script *sc = calloc(1, sizeof(*sc));
		char *log;

		route_tls = cases[i].tls;
		sc->ehlo = cases[i].ehlo;
		sc->starttls = cases[i].starttls;
		sc->mail = sc->rcpt[0] = "250 ok\r\n";
		sc->data = "354 go\r\n";
		sc->dot = "250 2.0.0 queued\r\n";
		spool_one("a@customer.test");
		log = run_relay(sc, cases[i].want, 1);
		if (strstr(log, cases[i].want) == NULL)
			fail_msg("case %zu: \"%s\" not in the log:\n%s", i, cases[i].want, log);
		if (cases[i].sent) {
			assert_non_null(strstr(sc->got, "MAIL FROM:"));
		} else {
			/* not one byte of the envelope went out in clear */
			assert_null(strstr(sc->got, "MAIL FROM:"));
			assert_null(strstr(log, "status=sent"));
		}
		if (!strcmp(cases[i].tls, "none"))
			assert_int_equal(sc->starttls_seen, 0);
		assert_true(sc->connections >= cases[i].conns);
		if (cases[i].conns == 2)
			assert_non_null(strstr(log, "; retrying in plaintext"));
		free(log);
		free(sc);
		teardown_dir(state);
		setup_dir(state);
	}
	route_tls = "none";
}

/* The relay's keys: TLS minimum, compaction age, state log bound. */
static void test_cfg_relay_keys(void **state)
{
	struct cfg c;
	char err[256];
	static const char ok[] = "relay:\n  tls_min_protocol: TLSv1.3\n  compact_after: 30m\n"
				 "  state_log_max: 8M\n";
	static const struct { const char *yaml, *want; } bad[] = {
		{ "relay:\n  tls_min_protocol: TLSv1.1\n",
		  "t.yaml:2:21: relay.tls_min_protocol: expected one of TLSv1.2, TLSv1.3" },
		{ "relay:\n  compact_after: soon\n", "t.yaml:2:18: relay.compact_after" },
		{ "relay:\n  state_log_max: 10\n", "t.yaml:2:18: relay.state_log_max: expected a "
		  "whole number 4096.." },
	};

	cfg_defaults(&c);
	assert_int_equal(c.relay.tls_min_version, 0x0303);
	assert_int_equal(c.relay.compact_after_s, 3600);
	assert_int_equal(c.relay.state_log_max, 64u << 20);
	assert_int_equal(cfg_load("t.yaml", ok, strlen(ok), &c, err, sizeof(err)), 0);
	assert_int_equal(c.relay.tls_min_version, 0x0304);
	assert_int_equal(c.relay.compact_after_s, 1800);
	assert_int_equal(c.relay.state_log_max, 8u << 20);
	cfg_free(&c);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg_defaults(&c);
		assert_int_equal(cfg_load("t.yaml", bad[i].yaml, strlen(bad[i].yaml), &c, err,
					  sizeof(err)), -EINVAL);
		if (strstr(err, bad[i].want) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].want);
		cfg_free(&c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_dsn_of),
		cmocka_unit_test(test_dot_stuff),
		cmocka_unit_test(test_dot_stuff_edges),
		cmocka_unit_test(test_dot_stuff_random),
		cmocka_unit_test(test_bounce),
		cmocka_unit_test_setup_teardown(test_client_per_recipient, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_client_connection_lost, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_client_pipelined_reuse, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_client_bad_replies, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_client_all_rcpts_refused, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_client_tls_policy, setup_dir, teardown_dir),
		cmocka_unit_test(test_cfg_relay_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
