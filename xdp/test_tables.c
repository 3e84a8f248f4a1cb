/* test_tables.c — the shield's tables as the control plane uses them:
 * CIDR parsing, add/del/list, bulk replacement by swap, bad files, TTL
 * expiry, pinned access — each checked by what the program then does. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <pthread.h>

#include "shield.h"
#include "testenv.h"

static struct shield *S;

static int setup(void **state)
{
	struct shield_load_opts o = { .no_pin = 1 };
	struct shield_config c;

	S = shield_load(&o);
	if (!S)
		return -1;
	shield_config_defaults(&c);
	shield_config_set_rate(&c, 0, 0);
	shield_config_set_flood(&c, 0, SHIELD_FLOOD_HANDOFF);
	c.sample_every = 0;
	return shield_config_set(S, &c);
}

static int teardown(void **state)
{
	shield_close(S);
	return 0;
}

/* Verdict for a SYN to port 25 from src. */
static int verdict(struct shield *s, const char *src)
{
	struct testenv_pkt p = { .family = strchr(src, ':') ? 6 : 4, .src = src,
				 .dport = 25, .tcpflags = 0x10 };
	uint8_t buf[256];
	size_t n = testenv_build(buf, sizeof(buf), &p);

	return testenv_run(shield_prog_fd(s), buf, n, 0, 0, NULL, NULL);
}

static char *write_file(const char *text)
{
	static char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/tmp/mxs-test-%d.txt", (int)getpid());
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static void test_cidr_parse(void **state)
{
	struct shield_cidr c;
	char buf[64];

	assert_int_equal(shield_cidr_parse("198.18.0.0/15", &c), 0);
	assert_int_equal(c.family, 4);
	assert_int_equal(c.plen, 15);
	assert_int_equal(shield_cidr_parse("198.19.255.7/15", &c), 0); /* host bits cleared */
	assert_int_equal(shield_cidr_format(&c, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "198.18.0.0/15");
	assert_int_equal(shield_cidr_parse("2001:db8::1", &c), 0);
	assert_int_equal(c.plen, 128);
	assert_int_equal(shield_cidr_parse("2001:db8:ab:cd::/62", &c), 0);
	assert_int_equal(shield_cidr_format(&c, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "2001:db8:ab:cc::/62");
	assert_int_equal(shield_cidr_parse("::ffff:198.18.1.0/120", &c), 0);
	assert_int_equal(c.family, 4);
	assert_int_equal(c.plen, 24);
	assert_int_equal(shield_cidr_parse("198.18.0.0/33", &c), -EINVAL);
	assert_int_equal(shield_cidr_parse("2001:db8::/129", &c), -EINVAL);
	assert_int_equal(shield_cidr_parse("198.18.0.0/", &c), -EINVAL);
	assert_int_equal(shield_cidr_parse("198.18.0.0/1x", &c), -EINVAL);
	assert_int_equal(shield_cidr_parse("198.18.0", &c), -EINVAL);
	assert_int_equal(shield_cidr_parse("example.com", &c), -EINVAL);
	assert_int_equal(shield_cidr_parse("", &c), -EINVAL);
}

struct collect {
	char items[16][64];
	int n;
};

static int collect_cb(const struct shield_cidr *c, uint64_t expires, void *arg)
{
	struct collect *col = arg;

	if (col->n < 16)
		shield_cidr_format(c, col->items[col->n++], 64);
	return 0;
}

static int has(const struct collect *col, const char *s)
{
	int i;

	for (i = 0; i < col->n; i++)
		if (!strcmp(col->items[i], s))
			return 1;
	return 0;
}

static void test_add_list_del(void **state)
{
	struct shield_cidr c;
	struct collect col = { .n = 0 };
	uint64_t n, exp;

	assert_int_equal(shield_cidr_parse("198.18.1.0/24", &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 0), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 0), 0); /* idempotent */
	assert_int_equal(shield_cidr_parse("2001:db8:1::/48", &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 12345), 0);
	assert_int_equal(shield_lookup(S, SHIELD_LIST_BLOCK, &c, &exp), 1);
	assert_int_equal(exp, 12345);
	assert_int_equal(shield_count(S, SHIELD_LIST_BLOCK, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(shield_list_entries(S, SHIELD_LIST_BLOCK, collect_cb, &col), 0);
	assert_int_equal(col.n, 2);
	assert_true(has(&col, "198.18.1.0/24"));
	assert_true(has(&col, "2001:db8:1::/48"));
	assert_int_equal(verdict(S, "198.18.1.77"), XDP_DROP);
	assert_int_equal(verdict(S, "2001:db8:1:2::3"), XDP_DROP);

	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), -ENOENT);
	assert_int_equal(verdict(S, "2001:db8:1:2::3"), XDP_PASS);
	assert_int_equal(shield_cidr_parse("198.18.1.0/24", &c), 0);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
	assert_int_equal(verdict(S, "198.18.1.77"), XDP_PASS);
	assert_int_equal(shield_count(S, SHIELD_LIST_BLOCK, &n), 0);
	assert_int_equal(n, 0);
}

static void test_v6_short_prefix(void **state)
{
	struct shield_cidr c;

	/* shorter than /32: probed by length, not through a /32 node */
	assert_int_equal(shield_cidr_parse("2001:d00::/24", &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 0), 0);
	assert_int_equal(verdict(S, "2001:db8:1234::1"), XDP_DROP);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
	assert_int_equal(verdict(S, "2001:db8:1234::1"), XDP_PASS);
}

static void test_overlapping_prefix_delete(void **state)
{
	struct shield_cidr big, small;

	/* a /16 and a /20 inside it share /24 blocks of the bitmap: removing
	 * the /16 must keep the /20's blocks, removing the /20 then clears */
	assert_int_equal(shield_cidr_parse("198.19.0.0/16", &big), 0);
	assert_int_equal(shield_cidr_parse("198.19.32.0/20", &small), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &big, 0), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &small, 0), 0);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &big), 0);
	assert_int_equal(verdict(S, "198.19.40.1"), XDP_DROP);
	assert_int_equal(verdict(S, "198.19.1.1"), XDP_PASS);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &small), 0);
	assert_int_equal(verdict(S, "198.19.40.1"), XDP_PASS);
}

static void test_too_many_v6_lengths(void **state)
{
	struct shield_cidr c;
	char buf[64];
	int len, ok = 0, r = 0;

	/* lengths /65../127 below one /32 (2001:db8::/32) are probed by
	 * length: at most SHIELD_MAX_V6_NODE_LENS of them, more are refused */
	for (len = 80; len < 80 + SHIELD_MAX_V6_NODE_LENS + 1; len++) {
		snprintf(buf, sizeof(buf), "2001:db8:ffff::/%d", len);
		assert_int_equal(shield_cidr_parse(buf, &c), 0);
		r = shield_add(S, SHIELD_LIST_BLOCK, &c, 0);
		if (r)
			break;
		ok++;
	}
	assert_int_equal(ok, SHIELD_MAX_V6_NODE_LENS);
	assert_int_equal(r, -ENOSPC);
	/* the refused one is not half-added; the others still work */
	assert_int_equal(shield_lookup(S, SHIELD_LIST_BLOCK, &c, NULL), 0);
	assert_int_equal(verdict(S, "2001:db8:ffff::1"), XDP_DROP);
	/* a length below another /32 is fine (table entries only: no packet
	 * leaves this host) */
	assert_int_equal(shield_cidr_parse("2001:db9::/99", &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 0), 0);
	assert_int_equal(verdict(S, "2001:db9::1"), XDP_DROP);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
	for (len = 80; len < 80 + SHIELD_MAX_V6_NODE_LENS; len++) {
		snprintf(buf, sizeof(buf), "2001:db8:ffff::/%d", len);
		assert_int_equal(shield_cidr_parse(buf, &c), 0);
		assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
	}
	assert_int_equal(verdict(S, "2001:db8:ffff::1"), XDP_PASS);
}

static void add6(const char *cidr, uint64_t expires)
{
	struct shield_cidr c;

	assert_int_equal(shield_cidr_parse(cidr, &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, expires), 0);
}

static void del6(const char *cidr)
{
	struct shield_cidr c;

	assert_int_equal(shield_cidr_parse(cidr, &c), 0);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
}

/* IPv6 /32../64 prefixes live inline in their /32's node (answered by one
 * lookup), the rest of a crowded /32 is probed: every one of them drops,
 * a deleted or expired one stops dropping at once, and a bulk load builds
 * the same thing. (Table entries only: no packet leaves this host.) */
static void test_v6_inline_prefixes(void **state)
{
	char buf[64];
	size_t removed = 0;
	int i;

	/* 10 /48s in one /32: more than a node holds inline */
	for (i = 1; i <= 10; i++) {
		snprintf(buf, sizeof(buf), "2001:dbc:%x::/48", i);
		add6(buf, 0);
	}
	add6("2001:dbc:0:1::/64", 0);
	add6("2001:db9::/32", 0);
	add6("2001:dba:8000::/33", 0);
	add6("2001:dbb:0:1::/64", (uint64_t)time(NULL) - 1); /* already expired */
	for (i = 1; i <= 10; i++) {
		snprintf(buf, sizeof(buf), "2001:dbc:%x::99", i);
		assert_int_equal(verdict(S, buf), XDP_DROP);
	}
	assert_int_equal(verdict(S, "2001:dbc:b::1"), XDP_PASS);
	assert_int_equal(verdict(S, "2001:dbc:0:1::5"), XDP_DROP);
	assert_int_equal(verdict(S, "2001:dbc:0:2::5"), XDP_PASS);
	assert_int_equal(verdict(S, "2001:db9:ffff::1"), XDP_DROP);
	assert_int_equal(verdict(S, "2001:dba:8000::1"), XDP_DROP);
	assert_int_equal(verdict(S, "2001:dba:7fff::1"), XDP_PASS);
	assert_int_equal(verdict(S, "2001:dbb:0:1::1"), XDP_DROP);

	/* deletes: an inline one (the first added) and a probed one (the
	 * last); the others keep dropping */
	del6("2001:dbc:1::/48");
	del6("2001:dbc:a::/48");
	assert_int_equal(verdict(S, "2001:dbc:1::99"), XDP_PASS);
	assert_int_equal(verdict(S, "2001:dbc:a::99"), XDP_PASS);
	for (i = 2; i <= 9; i++) {
		snprintf(buf, sizeof(buf), "2001:dbc:%x::99", i);
		assert_int_equal(verdict(S, buf), XDP_DROP);
	}
	del6("2001:db9::/32");
	assert_int_equal(verdict(S, "2001:db9:ffff::1"), XDP_PASS);
	/* re-added after a delete: drops again */
	add6("2001:dbc:1::/48", 0);
	assert_int_equal(verdict(S, "2001:dbc:1::99"), XDP_DROP);
	/* expiry removes an inline prefix too */
	assert_int_equal(shield_expire(S, (uint64_t)time(NULL), &removed), 0);
	assert_int_equal(removed, 1);
	assert_int_equal(verdict(S, "2001:dbb:0:1::1"), XDP_PASS);

	/* the same set through a bulk load */
	{
		struct shield_bulk *b = shield_bulk_begin(S, SHIELD_LIST_BLOCK);
		struct shield_cidr c;

		assert_non_null(b);
		for (i = 1; i <= 10; i++) {
			snprintf(buf, sizeof(buf), "2001:dbc:%x::/48", i);
			assert_int_equal(shield_cidr_parse(buf, &c), 0);
			assert_int_equal(shield_bulk_add(b, &c, 0), 0);
		}
		assert_int_equal(shield_cidr_parse("2001:dba:8000::/33", &c), 0);
		assert_int_equal(shield_bulk_add(b, &c, 0), 0);
		assert_int_equal(shield_bulk_commit(b), 0);
	}
	for (i = 1; i <= 10; i++) {
		snprintf(buf, sizeof(buf), "2001:dbc:%x::99", i);
		assert_int_equal(verdict(S, buf), XDP_DROP);
	}
	assert_int_equal(verdict(S, "2001:dbc:b::1"), XDP_PASS);
	assert_int_equal(verdict(S, "2001:dbc:0:1::5"), XDP_PASS);
	assert_int_equal(verdict(S, "2001:dba:8000::1"), XDP_DROP);
	assert_int_equal(verdict(S, "2001:dba:7fff::1"), XDP_PASS);
	del6("2001:dbc:3::/48");
	assert_int_equal(verdict(S, "2001:dbc:3::99"), XDP_PASS);
	/* leave an empty list for the next test */
	{
		struct shield_bulk *b = shield_bulk_begin(S, SHIELD_LIST_BLOCK);

		assert_non_null(b);
		assert_int_equal(shield_bulk_commit(b), 0);
	}
	assert_int_equal(verdict(S, "2001:dbc:2::99"), XDP_PASS);
}

static void allow_bulk(const char *cidr)
{
	struct shield_bulk *b = shield_bulk_begin(S, SHIELD_LIST_ALLOW);
	struct shield_cidr c;

	assert_non_null(b);
	if (cidr) {
		assert_int_equal(shield_cidr_parse(cidr, &c), 0);
		assert_int_equal(shield_bulk_add(b, &c, 0), 0);
	}
	assert_int_equal(shield_bulk_commit(b), 0);
}

/* The program skips an empty list: the allowlist must win again as soon as
 * it is refilled, whether it was emptied by a delete or by a bulk load, and
 * an emptied blocklist must stop dropping. */
static void test_lists_emptied_and_refilled(void **state)
{
	struct shield_cidr blk, alw;
	uint64_t n = 1;

	assert_int_equal(shield_cidr_parse("198.18.5.5", &blk), 0);
	assert_int_equal(shield_cidr_parse("198.18.5.0/24", &alw), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &blk, 0), 0);
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_DROP);
	assert_int_equal(shield_add(S, SHIELD_LIST_ALLOW, &alw, 0), 0);
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_PASS);
	assert_int_equal(shield_del(S, SHIELD_LIST_ALLOW, &alw), 0);
	assert_int_equal(shield_count(S, SHIELD_LIST_ALLOW, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_DROP);
	allow_bulk("198.18.5.0/24");
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_PASS);
	allow_bulk(NULL);
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_DROP);
	assert_int_equal(shield_add(S, SHIELD_LIST_ALLOW, &alw, 0), 0);
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_PASS);
	/* the blocklist's word carries an "allowlist empty" hint: replacing
	 * the blocklist must keep the allowlist in force */
	{
		struct shield_bulk *b = shield_bulk_begin(S, SHIELD_LIST_BLOCK);

		assert_non_null(b);
		assert_int_equal(shield_bulk_add(b, &blk, 0), 0);
		assert_int_equal(shield_bulk_commit(b), 0);
	}
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_PASS);
	assert_int_equal(verdict(S, "198.18.5.6"), XDP_PASS);
	allow_bulk(NULL);
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_DROP);
	/* the blocklist emptied by a delete, then refilled */
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &blk), 0);
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_PASS);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &blk, 0), 0);
	assert_int_equal(verdict(S, "198.18.5.5"), XDP_DROP);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &blk), 0);
}

static void test_bulk_swap(void **state)
{
	struct shield_cidr c;
	char err[256];
	size_t loaded = 0;
	uint64_t n;
	char *path;

	assert_int_equal(shield_cidr_parse("198.18.200.1", &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 0), 0);
	path = write_file("# blocklist\n198.18.100.0/24\n\n2001:db8:100::/48  # comment\n"
			  "198.18.101.1\n198.18.101.1\n198.18.102.128/25 3600\n");
	assert_int_equal(shield_bulk_load_file(S, SHIELD_LIST_BLOCK, path, 1000, 0,
					       &loaded, err, sizeof(err)), 0);
	assert_int_equal(loaded, 5);
	assert_int_equal(shield_count(S, SHIELD_LIST_BLOCK, &n), 0);
	assert_int_equal(n, 4); /* the duplicate counted once */
	/* the new set is active, the old one (198.18.200.1) is gone */
	assert_int_equal(verdict(S, "198.18.100.9"), XDP_DROP);
	assert_int_equal(verdict(S, "2001:db8:100::9"), XDP_DROP);
	assert_int_equal(verdict(S, "198.18.101.1"), XDP_DROP);
	assert_int_equal(verdict(S, "198.18.102.200"), XDP_DROP);
	assert_int_equal(verdict(S, "198.18.102.100"), XDP_PASS);
	assert_int_equal(verdict(S, "198.18.200.1"), XDP_PASS);

	/* a second load replaces again (and reuses the first generation) */
	path = write_file("198.18.200.0/22\n");
	assert_int_equal(shield_bulk_load_file(S, SHIELD_LIST_BLOCK, path, 0, 0,
					       NULL, err, sizeof(err)), 0);
	assert_int_equal(verdict(S, "198.18.201.1"), XDP_DROP);
	assert_int_equal(verdict(S, "198.18.100.9"), XDP_PASS);
	unlink(path);
}

static void test_bulk_bad_file_changes_nothing(void **state)
{
	char err[256];
	uint64_t n;
	char *path;

	path = write_file("198.18.210.0/24\n");
	assert_int_equal(shield_bulk_load_file(S, SHIELD_LIST_BLOCK, path, 0, 0,
					       NULL, err, sizeof(err)), 0);
	path = write_file("198.18.211.0/24\n198.18.300.1\n198.18.212.0/24\n");
	assert_int_equal(shield_bulk_load_file(S, SHIELD_LIST_BLOCK, path, 0, 0,
					       NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":2:"));
	assert_non_null(strstr(err, "198.18.300.1"));
	path = write_file("198.18.211.0/24 -5\n");
	assert_int_equal(shield_bulk_load_file(S, SHIELD_LIST_BLOCK, path, 0, 0,
					       NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "TTL"));
	assert_int_equal(shield_bulk_load_file(S, SHIELD_LIST_BLOCK, "/nonexistent/x",
					       0, 0, NULL, err, sizeof(err)), -ENOENT);
	/* still the last good set */
	assert_int_equal(verdict(S, "198.18.210.5"), XDP_DROP);
	assert_int_equal(verdict(S, "198.18.211.5"), XDP_PASS);
	assert_int_equal(shield_count(S, SHIELD_LIST_BLOCK, &n), 0);
	assert_int_equal(n, 1);
	unlink(path);
}

struct hammer {
	volatile int stop;
	long runs, passed;
};

/* Runs a packet from a source blocked in every set the swap test loads. */
static void *hammer_run(void *arg)
{
	struct hammer *h = arg;

	while (!h->stop) {
		int v = verdict(S, "198.18.240.7");

		h->runs++;
		h->passed += v != XDP_DROP;
	}
	return NULL;
}

static void test_swap_has_no_window(void **state)
{
	struct hammer h = { 0 };
	pthread_t t;
	int round, i;

	/* Two different sets, both containing 198.18.240.0/24 (as a prefix in
	 * one, as an exact entry in the other): while they replace each other
	 * repeatedly, a packet from 198.18.240.7 must never pass. A
	 * clear-and-refill loader would let some through. */
	for (round = 0; round < 8; round++) {
		struct shield_bulk *b = shield_bulk_begin(S, SHIELD_LIST_BLOCK);
		struct shield_cidr c;
		char buf[64];

		assert_non_null(b);
		for (i = 0; i < 2000; i++) {
			snprintf(buf, sizeof(buf), "198.19.%d.%d/%d", i / 250, i % 250,
				 round % 2 ? 32 : 30);
			assert_int_equal(shield_cidr_parse(buf, &c), 0);
			assert_int_equal(shield_bulk_add(b, &c, 0), 0);
		}
		assert_int_equal(shield_cidr_parse(round % 2 ? "198.18.240.7"
							     : "198.18.240.0/24", &c), 0);
		assert_int_equal(shield_bulk_add(b, &c, 0), 0);
		assert_int_equal(shield_bulk_commit(b), 0);
		if (round == 0) /* the source is blocked from here on */
			assert_int_equal(pthread_create(&t, NULL, hammer_run, &h), 0);
	}
	h.stop = 1;
	pthread_join(t, NULL);
	assert_true(h.runs > 100);
	assert_int_equal(h.passed, 0);
}

static void test_ttl_expiry(void **state)
{
	struct shield_cidr a, b, c;
	size_t removed = 0;

	assert_int_equal(shield_cidr_parse("198.18.220.1", &a), 0);
	assert_int_equal(shield_cidr_parse("198.18.221.0/24", &b), 0);
	assert_int_equal(shield_cidr_parse("2001:db8:220::/56", &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &a, 1000), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &b, 2000), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 0), 0); /* never */
	assert_int_equal(shield_expire(S, 999, &removed), 0);
	assert_int_equal(removed, 0);
	assert_int_equal(verdict(S, "198.18.220.1"), XDP_DROP);
	assert_int_equal(shield_expire(S, 1000, &removed), 0);
	assert_int_equal(removed, 1);
	assert_int_equal(verdict(S, "198.18.220.1"), XDP_PASS);
	assert_int_equal(verdict(S, "198.18.221.1"), XDP_DROP);
	assert_int_equal(shield_expire(S, 5000, &removed), 0);
	assert_int_equal(removed, 1);
	assert_int_equal(verdict(S, "198.18.221.1"), XDP_PASS);
	assert_int_equal(verdict(S, "2001:db8:220::1"), XDP_DROP);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
}

/* A map of s's program by name (the test reaches behind the library to
 * prove which structure answered). */
static int prog_map_fd(struct shield *s, const char *name)
{
	uint32_t ids[64], i;
	struct bpf_prog_info info = { .nr_map_ids = 64,
				      .map_ids = (uint64_t)(unsigned long)ids };
	uint32_t len = sizeof(info);

	if (bpf_obj_get_info_by_fd(shield_prog_fd(s), &info, &len))
		return -errno;
	for (i = 0; i < info.nr_map_ids && i < 64; i++) {
		struct bpf_map_info mi;
		uint32_t mlen = sizeof(mi);
		int fd = bpf_map_get_fd_by_id(ids[i]);

		memset(&mi, 0, sizeof(mi));
		if (fd < 0)
			continue;
		if (!bpf_obj_get_info_by_fd(fd, &mi, &mlen) && !strcmp(mi.name, name))
			return fd;
		close(fd);
	}
	return -ENOENT;
}

/* Active generation of list l (bit 0 of mxedge_gen[l]). */
static uint32_t active_gen_of(struct shield *s, enum shield_list l)
{
	int fd = prog_map_fd(s, "mxedge_gen");
	uint32_t key = l, v = 0;

	assert_true(fd >= 0);
	assert_int_equal(bpf_map_lookup_elem(fd, &key, &v), 0);
	close(fd);
	return v & 1;
}

static void bulk_block(struct shield *s, enum shield_list l, const char *const *cidrs,
		       size_t n)
{
	struct shield_bulk *b = shield_bulk_begin(s, l);
	struct shield_cidr c;
	size_t i;

	assert_non_null(b);
	for (i = 0; i < n; i++) {
		assert_int_equal(shield_cidr_parse(cidrs[i], &c), 0);
		assert_int_equal(shield_bulk_add(b, &c, 0), 0);
	}
	assert_int_equal(shield_bulk_commit(b), 0);
}

/* Verdicts of the /25../32 entries of several /24s in one 64-block word
 * of the /24 array (198.18.64.0 - 198.18.127.255) and one elsewhere. */
static void check_word(struct shield *s, int with_65)
{
	assert_int_equal(verdict(s, "198.18.64.5"), XDP_DROP);
	assert_int_equal(verdict(s, "198.18.64.6"), XDP_PASS);
	/* another block's host number: each block reads its own leaf */
	assert_int_equal(verdict(s, "198.18.65.5"), XDP_PASS);
	assert_int_equal(verdict(s, "198.18.65.6"), with_65 ? XDP_DROP : XDP_PASS);
	assert_int_equal(verdict(s, "198.18.70.128"), XDP_DROP);
	assert_int_equal(verdict(s, "198.18.70.255"), XDP_DROP);
	assert_int_equal(verdict(s, "198.18.70.127"), XDP_PASS);
	assert_int_equal(verdict(s, "198.18.127.255"), XDP_DROP);
	assert_int_equal(verdict(s, "198.18.127.254"), XDP_PASS);
	assert_int_equal(verdict(s, "198.18.66.5"), XDP_PASS);
	assert_int_equal(verdict(s, "198.18.200.1"), XDP_DROP);
	assert_int_equal(verdict(s, "198.18.200.2"), XDP_PASS);
}

/* IPv4 leaves laid out in the slot array by a bulk load: every block of a
 * word finds its own leaf; single adds and deletes afterwards (a new leaf
 * in a laid-out word, a changed leaf, an emptied leaf) keep every verdict
 * right; the slots really answer (the leaf hash emptied behind the
 * library's back changes nothing), and a slot whose tag does not match
 * is not used. */
static void test_v4_leaf_slots(void **state)
{
	static const char *const set[] = { "198.18.64.5", "198.18.65.6",
		"198.18.70.128/25", "198.18.127.255", "198.18.200.1" };
	struct shield_cidr c;
	char name[16];
	uint32_t g, blk;
	int fd;

	bulk_block(S, SHIELD_LIST_BLOCK, set, 5);
	check_word(S, 1);
	/* a changed leaf (its /24 already has one): rewritten in its slot */
	assert_int_equal(shield_cidr_parse("198.18.64.9", &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 0), 0);
	assert_int_equal(verdict(S, "198.18.64.9"), XDP_DROP);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
	assert_int_equal(verdict(S, "198.18.64.9"), XDP_PASS);
	check_word(S, 1);
	/* a new leaf in the laid-out word, then an emptied one */
	assert_int_equal(shield_cidr_parse("198.18.66.7", &c), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &c, 0), 0);
	assert_int_equal(verdict(S, "198.18.66.7"), XDP_DROP);
	check_word(S, 1);
	assert_int_equal(shield_cidr_parse("198.18.65.6", &c), 0);
	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &c), 0);
	check_word(S, 0);
	assert_int_equal(verdict(S, "198.18.66.7"), XDP_DROP);

	/* laid out again; then the leaf hash loses its entries */
	bulk_block(S, SHIELD_LIST_BLOCK, set, 5);
	check_word(S, 1);
	g = active_gen_of(S, SHIELD_LIST_BLOCK);
	snprintf(name, sizeof(name), "mxedge_bl%u", g);
	fd = prog_map_fd(S, name);
	assert_true(fd >= 0);
	for (blk = (0xc6124000u >> 8); blk <= (0xc612c800u >> 8); blk++)
		bpf_map_delete_elem(fd, &blk);
	close(fd);
	check_word(S, 1); /* answered by the slots */
	/* a slot tagged with another block is not used: 198.18.64.5's leaf
	 * (the word's first slot) then comes from the (emptied) hash */
	snprintf(name, sizeof(name), "mxedge_bw%u", g);
	fd = prog_map_fd(S, name);
	assert_true(fd >= 0);
	{
		struct shield_v4_word w;
		struct shield_v4_slot sl;
		uint32_t idx = (0xc6124000u >> 8) >> 6;
		int sfd;

		assert_int_equal(bpf_map_lookup_elem(fd, &idx, &w), 0);
		assert_true(w.base != SHIELD_SLOT_NONE);
		snprintf(name, sizeof(name), "mxedge_bs%u", g);
		sfd = prog_map_fd(S, name);
		assert_true(sfd >= 0);
		assert_int_equal(bpf_map_lookup_elem(sfd, &w.base, &sl), 0);
		assert_int_equal(sl.tag, 0xc61240u + 1);
		sl.tag = 0xc61241u + 1;
		assert_int_equal(bpf_map_update_elem(sfd, &w.base, &sl, BPF_ANY), 0);
		assert_int_equal(verdict(S, "198.18.64.5"), XDP_PASS);
		close(sfd);
	}
	close(fd);

	/* the allowlist's leaves are laid out the same way */
	bulk_block(S, SHIELD_LIST_BLOCK, set, 5);
	{
		static const char *const allow[] = { "198.18.64.5", "198.18.127.254/31" };

		bulk_block(S, SHIELD_LIST_ALLOW, allow, 2);
		assert_int_equal(verdict(S, "198.18.64.5"), XDP_PASS);
		assert_int_equal(verdict(S, "198.18.127.255"), XDP_PASS);
		assert_int_equal(verdict(S, "198.18.65.6"), XDP_DROP);
		bulk_block(S, SHIELD_LIST_ALLOW, allow, 0);
	}
	check_word(S, 1);
	bulk_block(S, SHIELD_LIST_BLOCK, set, 0);
	assert_int_equal(verdict(S, "198.18.64.5"), XDP_PASS);
}

/* More /24s with leaves than slots: the words beyond the slots are
 * answered by the leaf hash, every verdict stays right. */
static void test_v4_leaf_slots_run_out(void **state)
{
	struct shield_load_opts o = { .no_pin = 1, .block_entries = 64 };
	struct shield *s = shield_load(&o);
	struct shield_bulk *b;
	struct shield_cidr c;
	char a[32];
	int i;

	assert_non_null(s); /* 64 entries: 16 slots, 15 for leaves */
	b = shield_bulk_begin(s, SHIELD_LIST_BLOCK);
	assert_non_null(b);
	for (i = 0; i < 40; i++) { /* one /24 per word each */
		snprintf(a, sizeof(a), "10.%d.0.1", i);
		assert_int_equal(shield_cidr_parse(a, &c), 0);
		assert_int_equal(shield_bulk_add(b, &c, 0), 0);
	}
	assert_int_equal(shield_bulk_commit(b), 0);
	for (i = 0; i < 40; i++) {
		snprintf(a, sizeof(a), "10.%d.0.1", i);
		assert_int_equal(verdict(s, a), XDP_DROP);
		snprintf(a, sizeof(a), "10.%d.0.2", i);
		assert_int_equal(verdict(s, a), XDP_PASS);
	}
	shield_close(s);
}

static void test_pinned_maps_shared(void **state)
{
	char dir[64];
	struct shield_load_opts o = { .pin_dir = dir };
	struct shield *a, *b, *again;
	struct shield_cidr c;
	struct shield_config cfg;

	snprintf(dir, sizeof(dir), "/sys/fs/bpf/mxs-test-%d", (int)getpid());
	a = shield_load(&o);
	assert_non_null(a);
	b = shield_open_pinned(dir);
	assert_non_null(b);
	assert_int_equal(shield_prog_fd(b), -1);
	/* an entry added through the pins reaches the loaded program */
	assert_int_equal(shield_cidr_parse("198.18.230.0/24", &c), 0);
	assert_int_equal(shield_add(b, SHIELD_LIST_BLOCK, &c, 0), 0);
	assert_int_equal(verdict(a, "198.18.230.1"), XDP_DROP);
	assert_int_equal(shield_config_get(b, &cfg), 0);
	assert_int_equal(cfg.ports[0], 25);
	/* a reload reuses the pinned tables */
	again = shield_load(&o);
	assert_non_null(again);
	assert_int_equal(verdict(again, "198.18.230.1"), XDP_DROP);
	shield_close(again);
	shield_close(b);
	shield_close(a);
	assert_null(shield_open_pinned("/sys/fs/bpf/mxs-does-not-exist"));
	assert_int_equal(errno, ENOENT);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		assert_int_equal(system(cmd), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cidr_parse),
		cmocka_unit_test(test_add_list_del),
		cmocka_unit_test(test_v6_short_prefix),
		cmocka_unit_test(test_overlapping_prefix_delete),
		cmocka_unit_test(test_too_many_v6_lengths),
		cmocka_unit_test(test_v6_inline_prefixes),
		cmocka_unit_test(test_lists_emptied_and_refilled),
		cmocka_unit_test(test_bulk_swap),
		cmocka_unit_test(test_bulk_bad_file_changes_nothing),
		cmocka_unit_test(test_swap_has_no_window),
		cmocka_unit_test(test_ttl_expiry),
		cmocka_unit_test(test_pinned_maps_shared),
		cmocka_unit_test(test_v4_leaf_slots),
		cmocka_unit_test(test_v4_leaf_slots_run_out),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test_tables: needs root (BPF)\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, setup, teardown);
}
