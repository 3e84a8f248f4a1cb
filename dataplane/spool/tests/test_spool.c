/*
 * Spool tests: what is acknowledged is what a reader finds, byte for byte,
 * with its envelope; aborted and unfinished messages never show up; torn
 * tails are cut; queue ids never repeat; a full disk stops acknowledgements.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../spool.h"

static char tmpl[] = "/tmp/mxt-spool.XXXXXX";
static char dir[64];

static int setup(void **state)
{
	strcpy(tmpl, "/tmp/mxt-spool.XXXXXX");
	if (mkdtemp(tmpl) == NULL)
		return -1;
	snprintf(dir, sizeof(dir), "%s/spool", tmpl);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl);
	return system(cmd) == 0 ? 0 : -1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits (bounded, 10 s) until @off of @w is durable. */
static bool wait_durable(struct spool_writer *w, uint64_t off)
{
	for (int i = 0; i < 10000; i++) {
		if (spool_durable(w, off))
			return true;
		if (spool_writer_error(w))
			return false;
		usleep(1000);
	}
	return false;
}

static struct spool *open_spool(unsigned writers, size_t ring, uint64_t seg,
				struct spool_recovery *rep)
{
	struct spool_config cfg = {
		.dir = dir, .writers = writers, .ring_bytes = ring,
		.segment_bytes = seg,
	};
	struct spool *sp = spool_open(&cfg, rep);

	assert_non_null(sp);
	return sp;
}

/* ---- collected scan results ---- */
#define MAXMSG 4096
struct got {
	unsigned n;
	uint64_t qid[MAXMSG];
	uint64_t len[MAXMSG];
	uint32_t sum[MAXMSG];
	char from[MAXMSG][32];
	unsigned nrcpt[MAXMSG];
	char rcpt0[MAXMSG][48];
	char notify0[MAXMSG][24];
	char helo[MAXMSG][32];
	bool tls_null[MAXMSG];
};
static struct got got;

static uint32_t sum32(const unsigned char *p, uint64_t n)
{
	uint32_t h = 2166136261u;

	while (n--)
		h = (h ^ *p++) * 16777619u;
	return h;
}

static int collect(const struct spool_message *m, void *arg)
{
	unsigned i = got.n++;

	assert_true(i < MAXMSG);
	got.qid[i] = m->qid;
	got.len[i] = m->len;
	got.sum[i] = sum32(m->data, m->len);
	snprintf(got.from[i], sizeof(got.from[i]), "%s", m->env.mail_from);
	got.nrcpt[i] = m->env.nrcpt;
	snprintf(got.rcpt0[i], sizeof(got.rcpt0[i]), "%s",
		 m->env.nrcpt ? m->env.rcpts[0].addr : "");
	snprintf(got.notify0[i], sizeof(got.notify0[i]), "%s",
		 m->env.nrcpt && m->env.rcpts[0].notify ? m->env.rcpts[0].notify : "(null)");
	snprintf(got.helo[i], sizeof(got.helo[i]), "%s", m->env.helo ? m->env.helo : "");
	got.tls_null[i] = m->env.tls == NULL;
	return 0;
}

static int scan(struct spool_recovery *rep)
{
	memset(&got, 0, sizeof(got));
	return spool_scan(dir, collect, NULL, rep);
}

static const struct spool_rcpt rcpts[] = {
	{ "tj@customer.test", "SUCCESS,FAILURE", "rfc822;tj@customer.test" },
	{ "\"odd local\"@customer.test", NULL, NULL },
};

static struct spool_envelope env_for(const char *from)
{
	struct spool_envelope e = {
		.arrival_us = 1764410772000000ULL,
		.client_addr = "198.18.7.23",
		.client_name = "mail.example.org",
		.helo = "mail.example.org",
		.tls = NULL,
		.mail_from = from,
		.mail_params = "SIZE=4103 BODY=8BITMIME",
		.nrcpt = 2,
		.rcpts = rcpts,
	};
	return e;
}

/* Appends a whole message, retrying while the ring is full. */
static uint64_t put_message(struct spool_writer *w, const char *from,
			    const unsigned char *body, size_t len, size_t chunk,
			    uint64_t *qid_out)
{
	struct spool_envelope e = env_for(from);
	struct spool_msg m;
	uint64_t off, qid = spool_qid_new(w, now_ms());
	size_t pos = 0;
	int rc;

	while ((rc = spool_begin(w, &m, qid, &e)) == -EAGAIN)
		usleep(100);
	assert_int_equal(rc, 0);
	while (pos < len) {
		size_t n = len - pos < chunk ? len - pos : chunk;

		while ((rc = spool_data(w, &m, body + pos, n)) == -EAGAIN)
			usleep(100);
		assert_int_equal(rc, 0);
		pos += n;
	}
	while ((rc = spool_end(w, &m, &off)) == -EAGAIN)
		usleep(100);
	assert_int_equal(rc, 0);
	if (qid_out)
		*qid_out = qid;
	return off;
}

static unsigned char *random_body(size_t len, unsigned seed)
{
	unsigned char *b = malloc(len ? len : 1);

	srand(seed);
	for (size_t i = 0; i < len; i++)
		b[i] = (unsigned char)(rand() & 0xff);
	return b;
}

/* ---- tests ---- */

static void test_qid_text(void **state)
{
	char a[SPOOL_QID_LEN + 1], b[SPOOL_QID_LEN + 1];
	uint64_t v, vals[] = { 0, 1, 61, 62, 0x123456789abcdefULL, UINT64_MAX };

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		spool_qid_format(vals[i], a);
		assert_int_equal(strlen(a), SPOOL_QID_LEN);
		assert_int_equal(spool_qid_parse(a, &v), 0);
		assert_true(v == vals[i]);
		if (i) { /* text order follows numeric order */
			spool_qid_format(vals[i - 1], b);
			assert_true(strcmp(b, a) < 0);
		}
	}
	assert_int_equal(spool_qid_parse("short", &v), -EINVAL);
	assert_int_equal(spool_qid_parse("0000000000!", &v), -EINVAL);
	assert_int_equal(spool_qid_parse("000000000000", &v), -EINVAL);
	assert_int_equal(spool_qid_parse("zzzzzzzzzzz", &v), -EINVAL); /* > 2^64 */
}

static void test_qid_monotonic(void **state)
{
	struct spool *sp = open_spool(2, 0, 0, NULL);
	struct spool_writer *w0 = spool_writer(sp, 0), *w1 = spool_writer(sp, 1);
	uint64_t prev = 0, q, t = now_ms();

	assert_null(spool_writer(sp, 2));
	/* 100k ids in the same ms, then the clock going back: still unique
	 * and increasing, and two writers never collide. */
	for (int i = 0; i < 100000; i++) {
		q = spool_qid_new(w0, i < 50000 ? t : t - 5000);
		assert_true(q > prev);
		prev = q;
		assert_true(spool_qid_new(w1, t) != q);
	}
	spool_close(sp);
}

static void test_roundtrip(void **state)
{
	struct spool_recovery rep;
	struct spool *sp = open_spool(1, 0, 0, &rep);
	struct spool_writer *w = spool_writer(sp, 0);
	const char *body = "Received: from x\r\nSubject: hi\r\n\r\nhello\r\n";
	uint64_t qid, off;

	assert_int_equal(rep.messages, 0);
	off = put_message(w, "list@example.org", (const unsigned char *)body,
			  strlen(body), 7, &qid);
	assert_true(wait_durable(w, off));
	spool_close(sp);

	assert_int_equal(scan(&rep), 0);
	assert_int_equal(got.n, 1);
	assert_true(got.qid[0] == qid);
	assert_int_equal(got.len[0], strlen(body));
	assert_int_equal(got.sum[0], sum32((const unsigned char *)body, strlen(body)));
	assert_string_equal(got.from[0], "list@example.org");
	assert_int_equal(got.nrcpt[0], 2);
	assert_string_equal(got.rcpt0[0], "tj@customer.test");
	assert_string_equal(got.notify0[0], "SUCCESS,FAILURE");
	assert_string_equal(got.helo[0], "mail.example.org");
	assert_true(got.tls_null[0]);
	assert_int_equal(rep.incomplete, 0);
	assert_int_equal(rep.torn_bytes, 0);
}

static void test_null_sender_empty_body(void **state)
{
	struct spool *sp = open_spool(1, 0, 0, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	uint64_t off = put_message(w, "", (const unsigned char *)"", 0, 1, NULL);

	assert_true(wait_durable(w, off));
	spool_close(sp);
	assert_int_equal(scan(NULL), 0);
	assert_int_equal(got.n, 1);
	assert_string_equal(got.from[0], "");
	assert_int_equal(got.len[0], 0);
}

static void test_interleaved_and_abort(void **state)
{
	struct spool *sp = open_spool(1, 0, 0, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	struct spool_envelope e1 = env_for("a@example.org"), e2 = env_for("b@example.org");
	struct spool_msg m1, m2, m3;
	uint64_t off1, off3, q1, q2, q3;

	q1 = spool_qid_new(w, now_ms());
	q2 = spool_qid_new(w, now_ms());
	q3 = spool_qid_new(w, now_ms());
	assert_int_equal(spool_begin(w, &m1, q1, &e1), 0);
	assert_int_equal(spool_begin(w, &m2, q2, &e2), 0);
	assert_int_equal(spool_data(w, &m1, "AAA", 3), 0);
	assert_int_equal(spool_data(w, &m2, "BBBB", 4), 0);
	assert_int_equal(spool_data(w, &m1, "aaa", 3), 0);
	assert_int_equal(spool_begin(w, &m3, q3, &e1), 0);
	assert_int_equal(spool_abort(w, &m2), 0);     /* e.g. client sent RSET */
	assert_int_equal(spool_data(w, &m3, "CC", 2), 0);
	assert_int_equal(spool_end(w, &m3, &off3), 0);
	assert_int_equal(spool_end(w, &m1, &off1), 0);
	assert_true(off1 > off3);
	assert_true(wait_durable(w, off1));
	spool_close(sp);

	assert_int_equal(scan(NULL), 0);
	assert_int_equal(got.n, 2);           /* commit order: m3 then m1 */
	assert_true(got.qid[0] == q3 && got.qid[1] == q1);
	assert_int_equal(got.sum[1], sum32((const unsigned char *)"AAAaaa", 6));
	assert_int_equal(got.sum[0], sum32((const unsigned char *)"CC", 2));
}

static void test_unfinished_never_reported(void **state)
{
	struct spool_recovery rep;
	struct spool *sp = open_spool(1, 0, 0, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	struct spool_envelope e = env_for("a@example.org");
	struct spool_msg m;
	uint64_t off;

	off = put_message(w, "done@example.org", (const unsigned char *)"x", 1, 1, NULL);
	assert_int_equal(spool_begin(w, &m, spool_qid_new(w, now_ms()), &e), 0);
	assert_int_equal(spool_data(w, &m, "partial", 7), 0);
	assert_true(wait_durable(w, off));
	spool_close(sp);   /* the session died mid-DATA */
	assert_int_equal(scan(&rep), 0);
	assert_int_equal(got.n, 1);
	assert_string_equal(got.from[0], "done@example.org");
	assert_int_equal(rep.incomplete, 1);
}

static void test_big_messages_and_rotation(void **state)
{
	struct spool_recovery rep;
	/* Smallest ring and 1 MiB segments: forces backpressure (-EAGAIN
	 * retries), chunk splitting and many segment rotations. */
	struct spool *sp = open_spool(1, 512 * 1024, 1 << 20, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	uint32_t sums[40];
	size_t lens[40];
	uint64_t off = 0;

	for (unsigned i = 0; i < 40; i++) {
		lens[i] = (size_t)i * 37000 + 1;
		unsigned char *b = random_body(lens[i], i);

		sums[i] = sum32(b, lens[i]);
		off = put_message(w, "big@example.org", b, lens[i],
				  i % 2 ? 200000 : 1000, NULL);
		free(b);
	}
	assert_true(wait_durable(w, off));
	spool_close(sp);
	assert_int_equal(scan(&rep), 0);
	assert_true(rep.segments > 10);
	assert_int_equal(got.n, 40);
	for (unsigned i = 0; i < 40; i++) {
		assert_int_equal(got.len[i], lens[i]);
		assert_int_equal(got.sum[i], sums[i]);
	}
}

struct thr {
	struct spool_writer *w;
	unsigned n;
	unsigned seed;
};

static void *writer_thread(void *arg)
{
	struct thr *t = arg;
	uint64_t off = 0;

	for (unsigned i = 0; i < t->n; i++) {
		size_t len = (size_t)(rand_r(&t->seed) % 9000);
		unsigned char *b = random_body(len, t->seed + i);

		off = put_message(t->w, "t@example.org", b, len, 1500, NULL);
		free(b);
	}
	return wait_durable(t->w, off) ? t : NULL;
}

static void test_two_writers_concurrent(void **state)
{
	struct spool *sp = open_spool(2, 1 << 20, 4 << 20, NULL);
	struct thr t[2] = { { spool_writer(sp, 0), 1500, 1 },
			    { spool_writer(sp, 1), 1500, 2 } };
	pthread_t th[2];
	void *ret;
	struct spool_writer_stats st;

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer_thread, &t[i]), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(th[i], &ret), 0);
		assert_non_null(ret);
	}
	spool_writer_stats(spool_writer(sp, 0), &st);
	assert_true(st.durable == st.appended);
	/* group commit: far fewer syncs than messages */
	assert_true(st.syncs > 0 && st.syncs <= 1500);
	spool_close(sp);
	assert_int_equal(scan(NULL), 0);
	assert_int_equal(got.n, 3000);
	for (unsigned i = 1; i < got.n; i++)
		assert_true(got.qid[i] != got.qid[i - 1]);
}

/* Path of writer 0's newest segment. */
static void last_segment(char *out, size_t n)
{
	char cmd[256];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "ls '%s'/w000-*.seg | sort | tail -1", dir);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(out, (int)n, f));
	out[strcspn(out, "\n")] = '\0';
	pclose(f);
}

static off_t file_size(const char *p)
{
	struct stat st;

	assert_int_equal(stat(p, &st), 0);
	return st.st_size;
}

static void test_torn_tail_recovery(void **state)
{
	struct spool_recovery rep;
	struct spool *sp = open_spool(1, 0, 0, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	char seg[256], marker[300];
	uint64_t off, q[3], qnew;
	off_t size;
	int fd;

	for (int i = 0; i < 3; i++)
		off = put_message(w, "r@example.org", (const unsigned char *)"0123456789", 10, 4, &q[i]);
	assert_true(wait_durable(w, off));
	spool_close(sp);

	/* A crash mid-write: the last message's END record is cut short,
	 * and garbage follows (e.g. a zeroed, allocated block). */
	last_segment(seg, sizeof(seg));
	size = file_size(seg);
	assert_int_equal(truncate(seg, size - 5), 0);
	fd = open(seg, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "\0\0\0\0\0\0\0\0garbage", 15), 15);
	close(fd);

	sp = open_spool(1, 0, 0, &rep);
	assert_int_equal(rep.messages, 2);
	assert_int_equal(rep.incomplete, 1);
	assert_true(rep.torn_bytes == 24 + 12 - 5 + 15);
	assert_int_equal(rep.corrupt_segments, 0);
	/* nothing on disk is destroyed; the torn tail is marked as such */
	assert_true(file_size(seg) == size - 5 + 15);
	snprintf(marker, sizeof(marker), "%s.torn", seg);
	assert_int_equal(access(marker, F_OK), 0);
	w = spool_writer(sp, 0);
	/* a clock far in the past must not produce an old id again */
	qnew = spool_qid_new(w, 1000);
	assert_true(qnew > q[2]);
	off = put_message(w, "after@example.org", (const unsigned char *)"new", 3, 3, NULL);
	assert_true(wait_durable(w, off));
	spool_close(sp);

	/* later scans still call it a torn tail, not damage */
	assert_int_equal(scan(&rep), 0);
	assert_int_equal(got.n, 3);
	assert_true(got.qid[0] == q[0] && got.qid[1] == q[1]);
	assert_string_equal(got.from[2], "after@example.org");
	assert_true(rep.torn_bytes == 24 + 12 - 5 + 15);
	assert_int_equal(rep.corrupt_segments, 0);
}

/* Damage inside the newest segment, before acknowledged records: the
 * records after it must survive recovery (not be cut off as a "tail"). */
static void test_damage_in_newest_segment(void **state)
{
	struct spool_recovery rep;
	struct spool *sp = open_spool(1, 0, 0, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	char seg[256];
	uint64_t off = 0;
	int fd;

	for (int i = 0; i < 3; i++) {
		off = put_message(w, "d@example.org", (const unsigned char *)"0123456789", 10, 10, NULL);
		assert_true(wait_durable(w, off)); /* each of them got its 250 */
	}
	spool_close(sp);
	last_segment(seg, sizeof(seg));
	fd = open(seg, O_RDWR);
	assert_int_equal(pwrite(fd, "X", 1, 30), 1);   /* inside message 1 */
	close(fd);

	sp = open_spool(1, 0, 0, &rep);
	assert_int_equal(rep.messages, 2);             /* messages 2 and 3 */
	assert_int_equal(rep.corrupt_segments, 1);
	assert_true(rep.damaged_bytes > 0);
	assert_int_equal(rep.torn_bytes, 0);
	spool_close(sp);
	assert_int_equal(scan(&rep), 0);
	assert_int_equal(got.n, 2);
}

static void test_second_opener_refused(void **state)
{
	struct spool_config cfg = { .dir = dir, .writers = 1 };
	struct spool *sp = open_spool(1, 0, 0, NULL), *sp2;

	sp2 = spool_open(&cfg, NULL);
	assert_null(sp2);
	assert_int_equal(errno, EWOULDBLOCK);
	spool_close(sp);
	sp2 = spool_open(&cfg, NULL);          /* free again after close */
	assert_non_null(sp2);
	spool_close(sp2);
}

static void test_corrupt_middle_segment(void **state)
{
	struct spool_recovery rep;
	struct spool *sp = open_spool(1, 512 * 1024, 64 * 1024, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	unsigned char *b = random_body(30000, 7);
	char cmd[256], first[256];
	uint64_t off = 0;
	FILE *f;
	int fd;

	/* one sync per message, so segments rotate at message boundaries */
	for (int i = 0; i < 12; i++) {
		off = put_message(w, "c@example.org", b, 30000, 30000, NULL);
		assert_true(wait_durable(w, off));
	}
	spool_close(sp);
	free(b);
	snprintf(cmd, sizeof(cmd), "ls '%s'/w000-*.seg | sort | head -1", dir);
	f = popen(cmd, "r");
	assert_non_null(fgets(first, sizeof(first), f));
	pclose(f);
	first[strcspn(first, "\n")] = '\0';
	/* flip one payload byte of the first segment's first DATA record */
	fd = open(first, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "X", 1, 300), 1);
	close(fd);

	assert_int_equal(scan(&rep), 0);
	assert_int_equal(rep.corrupt_segments, 1);
	/* only the damaged message is lost: the scan resyncs after it */
	assert_int_equal(got.n, 11);
	for (unsigned i = 0; i < got.n; i++)
		assert_int_equal(got.len[i], 30000);
}

static void test_bad_arguments(void **state)
{
	struct spool_config bad = { .dir = dir, .writers = 0 };
	struct spool *sp;
	struct spool_writer *w;
	struct spool_envelope e = env_for("a@b");
	struct spool_msg m;
	char *huge;

	assert_null(spool_open(&bad, NULL));
	assert_int_equal(errno, EINVAL);
	bad.writers = 1;
	bad.ring_bytes = 3 << 20;          /* not a power of two */
	assert_null(spool_open(&bad, NULL));
	assert_int_equal(errno, EINVAL);

	bad.ring_bytes = 0;
	bad.idle_poll_us = 1000000;           /* nanosleep would refuse it */
	assert_null(spool_open(&bad, NULL));
	assert_int_equal(errno, EINVAL);

	sp = open_spool(1, 512 * 1024, 0, NULL);
	w = spool_writer(sp, 0);
	assert_int_equal(spool_begin(w, &m, 0, &e), -EINVAL);   /* qid 0 */
	e.mail_from = NULL;
	assert_int_equal(spool_begin(w, &m, 1, &e), -EINVAL);
	e = env_for("a@b");
	huge = malloc(70000);
	memset(huge, 'h', 69999);
	huge[69999] = '\0';
	e.helo = huge;
	assert_int_equal(spool_begin(w, &m, 1, &e), -EINVAL);
	free(huge);
	{
		/* an envelope larger than half the ring can never fit: E2BIG,
		 * not an -EAGAIN the caller would retry forever */
		struct spool_rcpt many[5000];
		char addr[64];

		snprintf(addr, sizeof(addr), "%045d@customer.test", 0);
		for (int i = 0; i < 5000; i++)
			many[i] = (struct spool_rcpt){ addr, NULL, NULL };
		e = env_for("a@b");
		e.rcpts = many;
		e.nrcpt = 5000;
		assert_int_equal(spool_begin(w, &m, 1, &e), -E2BIG);
	}
	spool_close(sp);
	assert_int_equal(scan(NULL), 0);
	assert_int_equal(got.n, 0);
}

static void test_disk_full_stops_acks(void **state)
{
	struct spool_recovery rep;
	struct spool *sp;
	struct spool_writer *w;
	unsigned char *b = random_body(100000, 3);
	uint64_t off = 0, acked = 0;
	int i, err = 0;

	if (geteuid() != 0) {
		free(b);
		skip();
	}
	mkdir(dir, 0750);
	assert_int_equal(mount("tmpfs", dir, "tmpfs", 0, "size=1m"), 0);
	sp = open_spool(1, 0, 0, NULL);
	w = spool_writer(sp, 0);
	for (i = 0; i < 40; i++) {
		struct spool_envelope e = env_for("full@example.org");
		struct spool_msg m;
		uint64_t q = spool_qid_new(w, now_ms());

		if ((err = spool_begin(w, &m, q, &e)) == 0 &&
		    (err = spool_data(w, &m, b, 100000)) == 0 &&
		    (err = spool_end(w, &m, &off)) == 0) {
			if (wait_durable(w, off))
				acked++;
			else
				break;
		} else if (err != -EAGAIN) {
			break;
		}
	}
	assert_int_equal(spool_writer_error(w), -ENOSPC);
	assert_false(spool_durable(w, off));
	/* once failed, appends report the error instead of piling up */
	{
		struct spool_envelope e = env_for("x@example.org");
		struct spool_msg m;

		assert_int_equal(spool_begin(w, &m, 9, &e), -ENOSPC);
	}
	spool_close(sp);
	/* every acknowledged message is intact; nothing else is reported */
	assert_int_equal(scan(&rep), 0);
	assert_int_equal(got.n, acked);
	assert_true(acked >= 5 && acked < 11);
	for (unsigned j = 0; j < got.n; j++)
		assert_int_equal(got.sum[j], sum32(b, 100000));
	free(b);
	assert_int_equal(umount(dir), 0);
}


/* ---- tailing reader ---- */

static int reader_poll(struct spool_reader *r)
{
	return spool_reader_poll(r, collect, NULL);
}

/* The control plane tails a live spool: each committed message once, in
 * order, whole, across segment rotation; an unfinished one never. */
static void test_reader_tails_live_spool(void **state)
{
	struct spool *sp = open_spool(2, 0, 256 * 1024, NULL);
	struct spool_writer *w = spool_writer(sp, 0), *w1 = spool_writer(sp, 1);
	struct spool_reader *r = spool_reader_open(dir);
	unsigned char *body = random_body(100000, 7);
	struct spool_envelope e = env_for("a@example.org");
	struct spool_msg open_msg;
	uint64_t qids[20], off = 0;
	int total = 0, rc;

	assert_non_null(r);
	memset(&got, 0, sizeof(got));
	assert_int_equal(reader_poll(r), 0);
	/* A message still being received is never offered. */
	assert_int_equal(spool_begin(w1, &open_msg, spool_qid_new(w1, now_ms()), &e), 0);
	assert_int_equal(spool_data(w1, &open_msg, "partial", 7), 0);
	for (int i = 0; i < 20; i++) {
		off = put_message(w, "a@example.org", body, 5000 + (size_t)i * 4000, 3000,
				  &qids[i]);
		if (i % 5 == 4) { /* poll while the writer is busy */
			assert_true(wait_durable(w, off));
			rc = reader_poll(r);
			assert_true(rc >= 0);
			total += rc;
		}
	}
	assert_true(wait_durable(w, off));
	rc = reader_poll(r);
	assert_true(rc >= 0);
	total += rc;
	assert_int_equal(total, 20);
	assert_int_equal(got.n, 20);
	for (int i = 0; i < 20; i++) {
		assert_true(got.qid[i] == qids[i]);
		assert_int_equal(got.len[i], 5000 + i * 4000);
		assert_int_equal(got.sum[i], sum32(body, 5000 + (size_t)i * 4000));
	}
	/* Nothing new: nothing offered again. */
	assert_int_equal(reader_poll(r), 0);
	assert_int_equal(spool_end(w1, &open_msg, &off), 0);
	assert_true(wait_durable(w1, off));
	assert_int_equal(reader_poll(r), 1);
	assert_int_equal(got.len[20], 7);
	spool_close(sp);
	spool_reader_close(r);
	free(body);
}

/* Bytes above the published durable offset are never read, even when they
 * sit complete in the file: a crash could still take them back. */
static void test_reader_respects_durable_offset(void **state)
{
	struct spool *sp = open_spool(1, 0, 0, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	struct spool_reader *r;
	uint64_t off1, off2, v;
	char path[128];
	int fd;

	off1 = put_message(w, "a@example.org", (const unsigned char *)"one\r\n", 5, 64, NULL);
	off2 = put_message(w, "b@example.org", (const unsigned char *)"two\r\n", 5, 64, NULL);
	assert_true(wait_durable(w, off2));
	spool_close(sp);
	/* Pretend the sync thread had only covered the first message. */
	snprintf(path, sizeof(path), "%s/w000.durable", dir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	v = off1;
	assert_int_equal(pwrite(fd, &v, 8, 8), 8);
	r = spool_reader_open(dir);
	assert_non_null(r);
	memset(&got, 0, sizeof(got));
	assert_int_equal(reader_poll(r), 1);
	assert_string_equal(got.from[0], "a@example.org");
	assert_int_equal(reader_poll(r), 0);
	v = off2;
	assert_int_equal(pwrite(fd, &v, 8, 8), 8);
	assert_int_equal(reader_poll(r), 1);
	assert_string_equal(got.from[1], "b@example.org");
	close(fd);
	spool_reader_close(r);
	assert_null(spool_reader_open("/nonexistent/mxedge-spool"));
}

/* The sync thread's fdatasync latencies reach another process through the
 * durable files: every sync lands in exactly one bucket, the sum is the
 * time spent, and a second run of the owner keeps counting. */
static void test_reader_sync_histogram(void **state)
{
	struct spool *sp = open_spool(2, 0, 0, NULL);
	struct spool_reader *r = spool_reader_open(dir);
	struct spool_writer_stats st0, st1;
	struct spool_sync_hist h;
	uint64_t off, first, n = 0;
	unsigned b;

	assert_non_null(r);
	spool_reader_sync_hist(r, &h);
	assert_true(h.count == 0); /* nothing mapped yet */
	for (int i = 0; i < 6; i++) {
		off = put_message(spool_writer(sp, (unsigned)i % 2), "a@example.org",
				  (const unsigned char *)"x\r\n", 3, 64, NULL);
		assert_true(wait_durable(spool_writer(sp, (unsigned)i % 2), off));
	}
	memset(&got, 0, sizeof(got));
	assert_int_equal(reader_poll(r), 6);
	spool_writer_stats(spool_writer(sp, 0), &st0);
	spool_writer_stats(spool_writer(sp, 1), &st1);
	spool_reader_sync_hist(r, &h);
	assert_true(h.count >= 2);
	assert_true(h.count == st0.syncs + st1.syncs);
	for (b = 0; b < SPOOL_SYNC_BUCKETS; b++)
		n += h.bucket[b];
	assert_true(n == h.count);
	assert_true(h.sum_ns > 0);
	assert_true(h.sum_ns <= h.count * (st0.sync_ns_max > st1.sync_ns_max ?
					   st0.sync_ns_max : st1.sync_ns_max));
	for (b = 1; b < SPOOL_SYNC_BUCKETS - 1; b++)
		assert_true(spool_sync_bound_ns[b] > spool_sync_bound_ns[b - 1]);
	first = h.count;
	spool_close(sp);
	/* The owner restarts: the counts go on from where they were. */
	sp = open_spool(2, 0, 0, NULL);
	off = put_message(spool_writer(sp, 0), "b@example.org",
			  (const unsigned char *)"y\r\n", 3, 64, NULL);
	assert_true(wait_durable(spool_writer(sp, 0), off));
	spool_reader_sync_hist(r, &h);
	assert_true(h.count > first);
	spool_close(sp);
	spool_reader_close(r);
}

/* After a crash the reader skips the torn tail and continues with the
 * messages of the next run. */
static void test_reader_after_torn_tail(void **state)
{
	struct spool *sp = open_spool(1, 0, 0, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	struct spool_reader *r;
	struct spool_recovery rep;
	char path[128];
	uint64_t off;
	int fd;

	off = put_message(w, "a@example.org", (const unsigned char *)"one\r\n", 5, 64, NULL);
	assert_true(wait_durable(w, off));
	spool_close(sp);
	/* A torn record at the end of the only segment. */
	snprintf(path, sizeof(path), "%s/w000-0000000000000000.seg", dir);
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "MXR1torn-record-bytes", 21), 21);
	close(fd);
	sp = open_spool(1, 0, 0, NULL);
	w = spool_writer(sp, 0);
	off = put_message(w, "b@example.org", (const unsigned char *)"two\r\n", 5, 64, NULL);
	assert_true(wait_durable(w, off));
	r = spool_reader_open(dir);
	memset(&got, 0, sizeof(got));
	assert_int_equal(reader_poll(r), 2);
	assert_string_equal(got.from[0], "a@example.org");
	assert_string_equal(got.from[1], "b@example.org");
	spool_reader_report(r, &rep);
	assert_int_equal(rep.damaged_bytes, 21);
	spool_close(sp);
	spool_reader_close(r);
}

static unsigned count_segments(void)
{
	char cmd[160];
	FILE *f;
	unsigned n = 0;

	snprintf(cmd, sizeof(cmd), "ls '%s' | grep -c '\\.seg$'", dir);
	f = popen(cmd, "r");
	if (f == NULL || fscanf(f, "%u", &n) != 1)
		n = 0;
	if (f)
		pclose(f);
	return n;
}

static uint64_t got_off[MAXMSG];

static int collect_off(const struct spool_message *m, void *arg)
{
	got_off[got.n] = m->off;
	return collect(m, arg);
}

/* Segments are deleted once the reader's user no longer needs them, never
 * the newest, never one holding a needed message; the spool still opens
 * and recovers afterwards. */
static void test_reader_release(void **state)
{
	struct spool *sp = open_spool(1, 0, 64 * 1024, NULL);
	struct spool_writer *w = spool_writer(sp, 0);
	unsigned char *body = random_body(30000, 3);
	uint64_t keep[SPOOL_MAX_WRITERS], off = 0, qids[12];
	struct spool_reader *r;
	struct spool_recovery rep;
	unsigned before;

	for (int i = 0; i < 12; i++) {
		off = put_message(w, "a@example.org", body, 30000, 8192, &qids[i]);
		assert_true(wait_durable(w, off));
	}
	r = spool_reader_open(dir);
	memset(&got, 0, sizeof(got));
	assert_int_equal(spool_reader_poll(r, collect_off, NULL), 12);
	before = count_segments();
	assert_true(before >= 4);
	for (int i = 0; i < SPOOL_MAX_WRITERS; i++)
		keep[i] = UINT64_MAX;
	/* Message 6 is still needed: its segment and later ones stay. */
	keep[0] = got_off[6];
	assert_true(spool_reader_release(r, keep) > 0);
	spool_reader_close(r);
	spool_close(sp);
	memset(&got, 0, sizeof(got));
	assert_int_equal(scan(&rep), 0);
	assert_true(got.n >= 6 && got.n < 12);
	assert_true(got.qid[got.n - 6] == qids[6]); /* 6..11 all there */
	assert_true(got.qid[got.n - 1] == qids[11]);
	assert_int_equal(rep.damaged_bytes, 0);
	/* Nothing needed any more: only the newest segment stays. */
	sp = open_spool(1, 0, 64 * 1024, &rep);
	assert_int_equal(rep.damaged_bytes, 0);
	r = spool_reader_open(dir);
	memset(&got, 0, sizeof(got));
	assert_true(spool_reader_poll(r, collect_off, NULL) >= 6);
	keep[0] = UINT64_MAX;
	assert_true(spool_reader_release(r, keep) > 0);
	assert_int_equal(count_segments(), 1);
	/* and the spool keeps working */
	w = spool_writer(sp, 0);
	off = put_message(w, "b@example.org", body, 100, 8192, NULL);
	assert_true(wait_durable(w, off));
	assert_int_equal(spool_reader_poll(r, collect, NULL), 1);
	spool_reader_close(r);
	spool_close(sp);
	free(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_qid_text, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qid_monotonic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_null_sender_empty_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interleaved_and_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unfinished_never_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_big_messages_and_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_writers_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage_in_newest_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_opener_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_middle_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full_stops_acks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_tails_live_spool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_respects_durable_offset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_after_torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_sync_histogram, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
