/*
 * test_elog.c - the reception log: line formats pflogsumm parses, the
 * logger thread writes every published record once and in order, reopen
 * for logrotate, and a full ring drops (counted) instead of blocking.
 */
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

/* 2026-11-29T10:06:12.000042 UTC */
#define T0 (1795946772ull * 1000000ull + 42)

static void rec_init(struct elog_rec *r, enum elog_kind kind, enum elog_stage st)
{
	memset(r, 0, sizeof(*r));
	r->wall_us = T0;
	r->kind = (uint8_t)kind;
	r->stage = (uint8_t)st;
	r->esmtp = true;
	strcpy(r->addr, "198.18.0.2");
}

static const char *fmt(const struct elog_rec *r)
{
	static char line[1024];

	elog_format(r, "mx.example", 77, line, sizeof(line));
	return line;
}

static void test_formats(void **state)
{
	struct elog_rec r;

	(void)state;
	rec_init(&r, ELOG_CONNECT, ELOG_ST_CONNECT);
	assert_string_equal(fmt(&r), "2026-11-29T10:06:12.000042+00:00 mx.example "
			    "mxedge/smtpd[77]: connect from unknown[198.18.0.2]");

	rec_init(&r, ELOG_CLIENT, ELOG_ST_EOM);
	strcpy(r.qid, "0a1B2c3D4e5");
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/smtpd[77]: 0a1B2c3D4e5: client=unknown[198.18.0.2]");

	rec_init(&r, ELOG_MSGID, ELOG_ST_EOM);
	strcpy(r.qid, "0a1B2c3D4e5");
	strcpy(r.text, "<abc@example.org>");
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/cleanup[77]: 0a1B2c3D4e5: message-id=<abc@example.org>");
	r.text[0] = '\0'; /* no Message-ID header: Postfix logs <> */
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/cleanup[77]: 0a1B2c3D4e5: message-id=<>");

	rec_init(&r, ELOG_REJECT, ELOG_ST_RCPT);
	strcpy(r.text, "550 5.1.2 Recipient domain not accepted here");
	strcpy(r.from, "a@sender.test");
	strcpy(r.to, "x@elsewhere.test");
	strcpy(r.helo, "client.test");
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/smtpd[77]: NOQUEUE: reject: RCPT from unknown[198.18.0.2]: "
			    "550 5.1.2 <x@elsewhere.test>: Recipient domain not accepted here; "
			    "from=<a@sender.test> to=<x@elsewhere.test> proto=ESMTP "
			    "helo=<client.test>");

	rec_init(&r, ELOG_REJECT, ELOG_ST_CONNECT);
	strcpy(r.text, "554 5.7.1 Client host rejected: access denied");
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/smtpd[77]: NOQUEUE: reject: CONNECT from unknown[198.18.0.2]: "
			    "554 5.7.1 Client host rejected: access denied; proto=SMTP");

	rec_init(&r, ELOG_DISCONNECT, ELOG_ST_EOM);
	r.cmd_all[ELOG_CMD_EHLO] = r.cmd_ok[ELOG_CMD_EHLO] = 1;
	r.cmd_all[ELOG_CMD_MAIL] = r.cmd_ok[ELOG_CMD_MAIL] = 1;
	r.cmd_all[ELOG_CMD_RCPT] = r.cmd_ok[ELOG_CMD_RCPT] = 1;
	r.cmd_all[ELOG_CMD_DATA] = r.cmd_ok[ELOG_CMD_DATA] = 1;
	r.cmd_all[ELOG_CMD_QUIT] = r.cmd_ok[ELOG_CMD_QUIT] = 1;
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/smtpd[77]: disconnect from unknown[198.18.0.2] ehlo=1 "
			    "mail=1 rcpt=1 data=1 quit=1 commands=5");
	r.cmd_all[ELOG_CMD_RCPT] = 2;
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/smtpd[77]: disconnect from unknown[198.18.0.2] ehlo=1 "
			    "mail=1 rcpt=1/2 data=1 quit=1 commands=5/6");

	rec_init(&r, ELOG_LOST, ELOG_ST_DATA);
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/smtpd[77]: lost connection after DATA from unknown[198.18.0.2]");
	rec_init(&r, ELOG_TIMEOUT, ELOG_ST_EOM);
	assert_string_equal(strstr(fmt(&r), "mxedge/"),
			    "mxedge/smtpd[77]: timeout after END-OF-MESSAGE from unknown[198.18.0.2]");

	/* A line never overflows its buffer. */
	{
		char small[40];

		rec_init(&r, ELOG_CONNECT, ELOG_ST_CONNECT);
		assert_int_equal(elog_format(&r, "mx.example", 77, small, sizeof(small)),
				 (int)sizeof(small) - 1);
		assert_int_equal(strlen(small), sizeof(small) - 1);
	}
}

static int count_lines(const char *path, const char *needle)
{
	char line[1024];
	FILE *f = fopen(path, "r");
	int n = 0;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

static void publish_n(struct elog_ring *ring, unsigned n, unsigned first)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		struct elog_rec *r;

		while ((r = elog_claim(ring)) == NULL) {
			struct timespec ts = { 0, 1000000 };

			nanosleep(&ts, NULL); /* the test waits; a worker drops */
		}
		rec_init(r, ELOG_CONNECT, ELOG_ST_CONNECT);
		snprintf(r->addr, sizeof(r->addr), "198.18.%u.%u",
			 (first + i) / 256, (first + i) % 256);
		elog_publish(ring);
	}
}

/* Every record reaches the file exactly once, in order; SIGHUP-style
 * reopen after a rename starts a new file and loses nothing. */
static void test_thread_and_reopen(void **state)
{
	char dir[] = "/tmp/elog-test.XXXXXX", path[256], moved[256], line[256];
	struct elog_config c = { .hostname = "mx.example", .rings = 2, .slots = 64 };
	struct elog *l;
	FILE *f;
	unsigned i = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/mail.log", dir);
	snprintf(moved, sizeof(moved), "%s/mail.log.1", dir);
	c.path = path;
	l = elog_open(&c);
	assert_non_null(l);
	assert_int_equal(elog_start(l), 0);
	publish_n(elog_ring(l, 0), 500, 0);
	publish_n(elog_ring(l, 1), 10, 1000);
	/* Wait (bounded) for the logger, then rotate. */
	for (i = 0; i < 500 && count_lines(path, "connect from") < 510; i++)
		usleep(10000);
	assert_int_equal(count_lines(path, "connect from"), 510);
	assert_int_equal(rename(path, moved), 0);
	elog_reopen(l);
	for (i = 0; i < 500 && access(path, F_OK) != 0; i++)
		usleep(10000);
	publish_n(elog_ring(l, 0), 7, 2000);
	elog_close(l);
	assert_int_equal(count_lines(moved, "connect from"), 510);
	assert_int_equal(count_lines(path, "connect from"), 7);
	/* Ring 0's records are in publication order. */
	f = fopen(moved, "r");
	assert_non_null(f);
	for (i = 0; i < 500;) {
		char want[64];

		assert_non_null(fgets(line, sizeof(line), f));
		if (strstr(line, "[198.18.3."))
			continue; /* ring 1's */
		snprintf(want, sizeof(want), "[198.18.%u.%u]\n", i / 256, i % 256);
		assert_non_null(strstr(line, want));
		i++;
	}
	fclose(f);
	unlink(path);
	unlink(moved);
	rmdir(dir);
}

/* Nobody drains: a full ring refuses at once and counts every refusal;
 * the producer never waits for the logger. */
static void test_full_ring_drops(void **state)
{
	struct elog_config c = { .path = "/dev/null", .hostname = "h", .rings = 1,
				 .slots = 16 };
	struct elog *l = elog_open(&c);
	struct elog_ring *ring;
	unsigned i, got = 0;

	(void)state;
	assert_non_null(l);
	ring = elog_ring(l, 0);
	for (i = 0; i < 100000; i++) {
		struct elog_rec *r = elog_claim(ring);

		if (r == NULL)
			continue;
		rec_init(r, ELOG_CONNECT, ELOG_ST_CONNECT);
		elog_publish(ring);
		got++;
	}
	assert_int_equal(got, 16);
	assert_int_equal(elog_ring_dropped(ring), 100000 - 16);
	assert_null(elog_ring(l, 1));
	elog_close(l);
}

static void test_bad_config(void **state)
{
	struct elog_config c = { .hostname = "h", .rings = 1, .slots = 12 };

	(void)state;
	assert_null(elog_open(&c)); /* not a power of two */
	c.slots = 16;
	c.rings = 0;
	assert_null(elog_open(&c));
	c.rings = 1;
	c.path = "/nonexistent-dir/mail.log";
	assert_null(elog_open(&c));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_formats),
		cmocka_unit_test(test_thread_and_reopen),
		cmocka_unit_test(test_full_ring_drops),
		cmocka_unit_test(test_bad_config),
	};

	setenv("TZ", "UTC", 1);
	tzset();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
