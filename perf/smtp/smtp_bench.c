/*
 * smtp_bench — parse throughput of the SMTP engine, one core.
 *
 * A pipelined session (RFC 2920) of 4 KB messages is fed through the
 * engine in TCP-sized segments, with callbacks that do what a spool writer
 * minimally must (see every body byte once, answer EOM synchronously).
 * Reports GB/s of client bytes and transactions/s per core (per second of
 * this thread's CPU time, so other jobs on a shared machine do not count;
 * the wall-clock figure is printed too), median of several runs, and the
 * engine state per idle session.
 *
 *   smtp_bench [--messages N] [--size BYTES] [--segment BYTES] [--runs N]
 *              [--sessions N] [--json]
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smtp.h"

struct ctx {
	uint64_t out_bytes;
	uint64_t body_bytes;
	uint64_t eoms;
	uint32_t sum;
};

static void b_write(void *c, const void *buf, size_t len)
{
	((struct ctx *)c)->out_bytes += len;
}

static int b_event(void *c, struct smtp_session *s, struct smtp_event *ev)
{
	struct ctx *x = c;

	if (ev->type == SMTP_EV_BODY) {
		x->body_bytes += ev->len;
		/* a spool writer reads every byte once (copy/checksum) */
		x->sum += ev->data[0] + ev->data[ev->len - 1];
	} else if (ev->type == SMTP_EV_MAIL) {
		ev->queue_id = "4QBENCH00001";
	} else if (ev->type == SMTP_EV_EOM) {
		x->eoms++;
	}
	return SMTP_ACCEPT;
}

static int64_t b_time(void *c)
{
	return 1795913600;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this thread: on a shared machine the wall clock also counts
 * the time other jobs held the core; "per core" figures use this. */
static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* One transaction in wire form: MAIL, RCPT, DATA, a `size`-byte body of
 * 78-byte lines (some starting with a dot, to be unstuffed), ".". */
static char *make_txn(size_t size, size_t *len)
{
	static const char head[] =
		"MAIL FROM:<sender@example.org> SIZE=4096\r\n"
		"RCPT TO:<rcpt@customer.test>\r\nDATA\r\n"
		"From: sender@example.org\r\nTo: rcpt@customer.test\r\n"
		"Subject: benchmark message\r\nMessage-ID: <b@example.org>\r\n\r\n";
	char *p = malloc(size + sizeof(head) + 64);
	size_t n = sizeof(head) - 1, line = 0;

	if (p == NULL)
		return NULL;
	memcpy(p, head, n);
	while (n + 3 < size + sizeof(head) - 1) {
		if (line % 10 == 0)
			p[n++] = '.'; /* dot-stuffed: the engine removes one */
		while ((n % 78) != 76 && n + 3 < size + sizeof(head) - 1) {
			p[n] = (char)('a' + (n % 26));
			n++;
		}
		p[n++] = '\r';
		p[n++] = '\n';
		line++;
	}
	if (p[n - 1] != '\n') {
		p[n++] = '\r';
		p[n++] = '\n';
	}
	memcpy(p + n, ".\r\n", 3);
	n += 3;
	*len = n;
	return p;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "messages", required_argument, NULL, 'm' },
		{ "size", required_argument, NULL, 's' },
		{ "segment", required_argument, NULL, 'g' },
		{ "runs", required_argument, NULL, 'r' },
		{ "sessions", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct smtp_ops ops = {
		.write = b_write, .event = b_event, .unix_time = b_time,
	};
	struct smtp_config cfg = { .hostname = "mx.bench.example" };
	unsigned long messages = 100000, size = 4096, segment = 16384, runs = 5;
	unsigned long sessions = 100000;
	int json = 0, c, rc = 1;
	double *gbps = NULL, *tps = NULL, *wall = NULL;
	struct smtp_server *srv = NULL;
	char *txn = NULL, *stream = NULL;
	uint8_t *mem = NULL;
	size_t tlen, slen, per = 16, i;
	unsigned long r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': messages = strtoul(optarg, NULL, 10); break;
		case 's': size = strtoul(optarg, NULL, 10); break;
		case 'g': segment = strtoul(optarg, NULL, 10); break;
		case 'r': runs = strtoul(optarg, NULL, 10); break;
		case 'S': sessions = strtoul(optarg, NULL, 10); break;
		case 'j': json = 1; break;
		default:
			fprintf(stderr, "usage: smtp_bench [--messages N] [--size B] "
				"[--segment B] [--runs N] [--sessions N] [--json]\n");
			return 2;
		}
	}
	if (messages == 0 || size < 200 || segment == 0 || runs == 0 ||
	    runs > 100 || size > 10000000) {
		fprintf(stderr, "smtp_bench: bad arguments\n");
		return 2;
	}
	if (messages % per != 0)
		messages += per - messages % per;
	srv = smtp_server_create(&cfg, &ops);
	txn = make_txn(size, &tlen);
	if (srv == NULL || txn == NULL)
		goto out;
	/* `per` transactions back to back, replayed: the stream is one long
	 * pipelined session, cut into segments regardless of boundaries. */
	slen = tlen * per;
	stream = malloc(slen);
	gbps = calloc(runs, sizeof(double));
	tps = calloc(runs, sizeof(double));
	wall = calloc(runs, sizeof(double));
	if (stream == NULL || gbps == NULL || tps == NULL || wall == NULL)
		goto out;
	for (i = 0; i < per; i++)
		memcpy(stream + i * tlen, txn, tlen);

	for (r = 0; r < runs; r++) {
		_Alignas(16) uint8_t sm[512];
		struct ctx x = { 0 };
		struct smtp_session *s = smtp_session_init(sm, srv, &x, "198.18.0.2", 0);
		uint64_t bytes = 0;
		double t0, c0, dt, ct;
		unsigned long rep;

		smtp_start(s, 0);
		smtp_input(s, (const uint8_t *)"EHLO bench.example\r\n", 20, 0);
		t0 = now_s();
		c0 = cpu_s();
		for (rep = 0; rep < messages / per; rep++) {
			size_t pos = 0;
			while (pos < slen) {
				size_t n = slen - pos < segment ? slen - pos : segment;
				size_t used = smtp_input(s, (const uint8_t *)stream + pos, n, 0);
				if (used == 0) {
					fprintf(stderr, "smtp_bench: engine stalled\n");
					goto out;
				}
				pos += used;
			}
			bytes += slen;
		}
		ct = cpu_s() - c0;
		dt = now_s() - t0;
		if (x.eoms != messages) {
			fprintf(stderr, "smtp_bench: %llu of %lu messages accepted\n",
				(unsigned long long)x.eoms, messages);
			goto out;
		}
		smtp_session_fini(s);
		gbps[r] = (double)bytes / ct / 1e9;
		tps[r] = (double)messages / ct;
		wall[r] = (double)bytes / dt / 1e9;
		if (!json)
			printf("run %lu: %.3f GB/s, %.0f transactions/s per CPU-second "
			       "(wall clock: %.3f GB/s; %llu body bytes)\n",
			       r + 1, gbps[r], tps[r], wall[r],
			       (unsigned long long)x.body_bytes);
	}
	qsort(gbps, runs, sizeof(double), cmp_d);
	qsort(tps, runs, sizeof(double), cmp_d);
	qsort(wall, runs, sizeof(double), cmp_d);

	/* Idle sessions: greeted, EHLO done, nothing pending.  Their engine
	 * state is the fixed session struct; no line buffer is held. */
	mem = malloc(sessions * smtp_session_size());
	if (mem == NULL && sessions > 0)
		goto out;
	{
		struct ctx x = { 0 };
		for (i = 0; i < sessions; i++) {
			struct smtp_session *s = smtp_session_init(
				mem + i * smtp_session_size(), srv, &x, "198.18.0.2", 0);
			smtp_start(s, 0);
			smtp_input(s, (const uint8_t *)"EHLO idle.example\r\n", 19, 0);
		}
		if (smtp_server_buffers_in_use(srv) != 0) {
			fprintf(stderr, "smtp_bench: idle sessions hold line buffers\n");
			goto out;
		}
		for (i = 0; i < sessions; i++)
			smtp_session_fini((struct smtp_session *)(void *)(mem + i * smtp_session_size()));
	}
	if (json)
		printf("{\"bench\":\"smtp_engine\",\"message_size\":%lu,\"messages\":%lu,"
		       "\"segment\":%lu,\"runs\":%lu,\"gbps_median\":%.3f,"
		       "\"transactions_per_s_median\":%.0f,\"gbps_min\":%.3f,"
		       "\"gbps_max\":%.3f,\"wall_gbps_median\":%.3f,"
		       "\"idle_session_bytes\":%zu,\"idle_sessions_checked\":%lu}\n",
		       size, messages, segment, runs, gbps[runs / 2], tps[runs / 2],
		       gbps[0], gbps[runs - 1], wall[runs / 2], smtp_session_size(),
		       sessions);
	else
		printf("median of %lu runs: %.3f GB/s, %.0f transactions/s per core "
		       "(per CPU-second; wall clock %.3f GB/s) "
		       "(%lu-byte messages, %lu-byte segments)\n"
		       "engine state per idle session: %zu bytes (%lu idle sessions, "
		       "0 line buffers held)\n",
		       runs, gbps[runs / 2], tps[runs / 2], wall[runs / 2], size, segment,
		       smtp_session_size(), sessions);
	rc = 0;
out:
	free(mem);
	free(gbps);
	free(tps);
	free(wall);
	free(stream);
	free(txn);
	smtp_server_destroy(srv);
	return rc;
}
