/*
 * Policy table tests: an operator's blocklist/allowlist and domain changes
 * take effect at once, typos are refused, and lcores reading concurrently
 * never see a missing entry, a mix of two sets, or freed memory (ASan).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../tables.h"

static struct tbl_prefix P(const char *s)
{
	struct tbl_prefix p;

	assert_int_equal(tbl_prefix_parse(s, false, &p), 0);
	return p;
}

static enum tbl_verdict check(struct tbl_set *t, const char *a)
{
	uint8_t buf[16];

	if (inet_pton(AF_INET, a, buf) == 1)
		return tbl_client_check(t, 4, buf);
	assert_int_equal(inet_pton(AF_INET6, a, buf), 1);
	return tbl_client_check(t, 6, buf);
}

static void test_parse(void **state)
{
	static const struct {
		const char *in;
		int rc;
		const char *out;
	} cases[] = {
		{ "198.18.0.0/15", 0, "198.18.0.0/15" },
		{ "198.18.7.23", 0, "198.18.7.23/32" },
		{ "0.0.0.0/0", 0, "0.0.0.0/0" },
		{ "2001:db8::/32", 0, "2001:db8::/32" },
		{ "2001:db8::1", 0, "2001:db8::1/128" },
		{ "2001:db8:0:0:0:0:0:0/33", 0, "2001:db8::/33" },
		{ "::/0", 0, "::/0" },
		{ "198.18.0.1/15", -EINVAL, NULL },   /* host bits set */
		{ "198.18.0.0/33", -EINVAL, NULL },
		{ "198.18.0.0/", -EINVAL, NULL },
		{ "198.18.0.0/-1", -EINVAL, NULL },
		{ "198.18.0.0/1x", -EINVAL, NULL },
		{ "198.18.0.0/0015", -EINVAL, NULL },
		{ "198.18.0", -EINVAL, NULL },
		{ "2001:db8::/129", -EINVAL, NULL },
		{ "2001:db8::g", -EINVAL, NULL },
		{ "example.org", -EINVAL, NULL },
		{ "", -EINVAL, NULL },
		{ " 198.18.0.0/15", -EINVAL, NULL },
	};
	struct tbl_prefix p;
	char out[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = tbl_prefix_parse(cases[i].in, false, &p);

		if (rc != cases[i].rc)
			fail_msg("parse '%s': %d, expected %d", cases[i].in, rc, cases[i].rc);
		if (rc == 0) {
			tbl_prefix_format(&p, out, sizeof(out));
			assert_string_equal(out, cases[i].out);
		}
	}
	/* lenient parsing clears host bits instead of refusing */
	assert_int_equal(tbl_prefix_parse("198.18.0.1/15", true, &p), 0);
	tbl_prefix_format(&p, out, sizeof(out));
	assert_string_equal(out, "198.18.0.0/15");
	assert_int_equal(tbl_prefix_parse("2001:db8::ffff/112", true, &p), 0);
	tbl_prefix_format(&p, out, sizeof(out));
	assert_string_equal(out, "2001:db8::/112");
}

static void test_verdicts(void **state)
{
	struct tbl_set *t = tbl_create();
	struct tbl_prefix p;

	assert_non_null(t);
	assert_int_equal(check(t, "198.18.0.1"), TBL_NONE);
	p = P("198.18.0.0/16");
	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &p, 0), 0);
	p = P("198.19.5.7");
	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &p, 0), 0);
	p = P("2001:db8:bad::/48");
	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &p, 0), 0);
	p = P("198.18.3.0/24");               /* allowlist wins inside a block */
	assert_int_equal(tbl_prefix_add(t, TBL_ALLOW, &p, 0), 0);
	p = P("2001:db8:bad:1::5");
	assert_int_equal(tbl_prefix_add(t, TBL_ALLOW, &p, 0), 0);

	assert_int_equal(check(t, "198.18.200.1"), TBL_BLOCKED);
	assert_int_equal(check(t, "198.18.3.99"), TBL_ALLOWED);
	assert_int_equal(check(t, "198.19.5.7"), TBL_BLOCKED);
	assert_int_equal(check(t, "198.19.5.8"), TBL_NONE);
	assert_int_equal(check(t, "198.17.255.255"), TBL_NONE);
	assert_int_equal(check(t, "2001:db8:bad:ffff::1"), TBL_BLOCKED);
	assert_int_equal(check(t, "2001:db8:bad:1::5"), TBL_ALLOWED);
	assert_int_equal(check(t, "2001:db8:bad:1::6"), TBL_BLOCKED);
	assert_int_equal(check(t, "2001:db8:bae::1"), TBL_NONE);
	/* a v4 rule never matches a v6 address with the same leading bytes */
	assert_int_equal(check(t, "c612::1"), TBL_NONE);
	assert_int_equal(tbl_client_check(t, 5, "xxxx"), TBL_NONE);
	assert_int_equal(tbl_prefix_count(t, TBL_BLOCK), 3);
	assert_int_equal(tbl_prefix_count(t, TBL_ALLOW), 2);

	/* delete, and deleting twice */
	p = P("198.18.3.0/24");
	assert_int_equal(tbl_prefix_del(t, TBL_ALLOW, &p), 0);
	assert_int_equal(tbl_prefix_del(t, TBL_ALLOW, &p), -ENOENT);
	assert_int_equal(check(t, "198.18.3.99"), TBL_BLOCKED);
	p = P("198.18.0.0/17");                /* not the stored length */
	assert_int_equal(tbl_prefix_del(t, TBL_BLOCK, &p), -ENOENT);
	/* a whole-Internet rule */
	p = P("0.0.0.0/0");
	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &p, 0), 0);
	assert_int_equal(check(t, "203.0.113.9"), TBL_BLOCKED);
	tbl_destroy(t);
}

static int count_cb(const struct tbl_prefix *p, uint64_t exp, void *arg)
{
	char buf[64];

	tbl_prefix_format(p, buf, sizeof(buf));
	if (strcmp(buf, "2001:db8:bad::/48") == 0)
		(*(int *)arg) += 100;
	(*(int *)arg)++;
	return 0;
}

static int dom_cb(const char *d, const struct tbl_domain_policy *pol, void *arg)
{
	assert_string_equal(d, "customer.test");
	assert_int_equal(pol->route_id, 3);
	return 7; /* stops the walk and is returned */
}

static void test_listing(void **state)
{
	struct tbl_set *t = tbl_create();
	struct tbl_domain_policy pol = { .route_id = 3 };
	struct tbl_prefix p;
	int n = 0;

	p = P("198.18.0.0/16");
	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &p, 0), 0);
	p = P("2001:db8:bad::/48");
	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &p, 0), 0);
	p = P("198.19.0.1");
	assert_int_equal(tbl_prefix_add(t, TBL_ALLOW, &p, 0), 0);
	assert_int_equal(tbl_prefix_list(t, TBL_BLOCK, count_cb, &n), 0);
	assert_int_equal(n, 102);
	assert_int_equal(tbl_domain_set(t, "Customer.Test", &pol), 0);
	assert_int_equal(tbl_domain_list(t, dom_cb, NULL), 7);
	tbl_destroy(t);
}

static void test_ttl(void **state)
{
	struct tbl_set *t = tbl_create();
	struct tbl_prefix p = P("198.18.9.0/24"), q = P("2001:db8::/64");

	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &p, 1000), 0);
	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &q, 0), 0);
	assert_int_equal(tbl_expire(t, 999), 0);
	assert_int_equal(check(t, "198.18.9.1"), TBL_BLOCKED);
	/* re-adding refreshes the expiry and does not duplicate */
	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &p, 5000), 0);
	assert_int_equal(tbl_prefix_count(t, TBL_BLOCK), 2);
	assert_int_equal(tbl_expire(t, 1000), 0);
	assert_int_equal(tbl_expire(t, 5000), 1);
	assert_int_equal(check(t, "198.18.9.1"), TBL_NONE);
	assert_int_equal(check(t, "2001:db8::7"), TBL_BLOCKED);  /* no TTL */
	assert_int_equal(tbl_prefix_count(t, TBL_BLOCK), 1);
	tbl_destroy(t);
}

static void test_domains(void **state)
{
	struct tbl_set *t = tbl_create();
	struct tbl_domain_policy pol = { .max_message_size = 1000, .route_id = 7 };
	const struct tbl_domain_policy *got;

	assert_int_equal(tbl_domain_set(t, "Customer.TEST", &pol), 0);
	got = tbl_domain_lookup(t, "customer.test", 13);
	assert_non_null(got);
	assert_int_equal(got->route_id, 7);
	assert_non_null(tbl_domain_lookup(t, "CUSTOMER.test", 13));
	/* lookups take a length: the rest of the buffer is not part of it */
	assert_non_null(tbl_domain_lookup(t, "customer.test>", 13));
	assert_null(tbl_domain_lookup(t, "customer.tes", 12));
	assert_null(tbl_domain_lookup(t, "sub.customer.test", 17));
	pol.route_id = 9;
	assert_int_equal(tbl_domain_set(t, "customer.test", &pol), 0);
	assert_int_equal(tbl_domain_lookup(t, "customer.test", 13)->route_id, 9);
	assert_int_equal(tbl_domain_del(t, "CUSTOMER.TEST"), 0);
	assert_null(tbl_domain_lookup(t, "customer.test", 13));
	assert_int_equal(tbl_domain_del(t, "customer.test"), -ENOENT);
	assert_int_equal(tbl_domain_set(t, "", &pol), -EINVAL);
	assert_int_equal(tbl_domain_set(t, "bad domain.test", &pol), -EINVAL);
	assert_int_equal(tbl_domain_set(t, "trailing.dot.", &pol), -EINVAL);
	assert_int_equal(tbl_domain_set(t, "a@b.test", &pol), -EINVAL);
	assert_int_equal(tbl_domain_set(t, "b\xc3\xbc" "cher.test", &pol), 0);
	assert_non_null(tbl_domain_lookup(t, "b\xc3\xbc" "cher.test", 12));
	tbl_destroy(t);
}

static void test_bulk_swap(void **state)
{
	struct tbl_set *t = tbl_create();
	struct tbl_pset *ps = tbl_pset_new();
	struct tbl_prefix p = { .family = 4, .len = 24 };
	struct tbl_prefix q = P("198.18.0.0/16");
	uint8_t a[4];

	assert_int_equal(tbl_prefix_add(t, TBL_BLOCK, &q, 0), 0);
	/* 200k /24s built off line, then swapped in as a whole */
	for (uint32_t i = 0; i < 200000; i++) {
		uint32_t net = htonl((10u << 24) + (i << 8));

		memcpy(p.addr, &net, 4);
		assert_int_equal(tbl_pset_add(ps, &p, 0), 0);
	}
	assert_int_equal(check(t, "10.0.5.1"), TBL_NONE);
	assert_int_equal(tbl_prefix_swap(t, TBL_BLOCK, ps), 0);
	assert_int_equal(tbl_prefix_count(t, TBL_BLOCK), 200000);
	for (uint32_t i = 0; i < 200000; i += 997) {
		uint32_t h = htonl((10u << 24) + (i << 8) + 77);

		memcpy(a, &h, 4);
		assert_int_equal(tbl_client_check(t, 4, a), TBL_BLOCKED);
	}
	assert_int_equal(check(t, "13.13.63.1"), TBL_BLOCKED); /* i = 199999 */
	assert_int_equal(check(t, "13.13.64.1"), TBL_NONE);    /* i = 200000 */
	/* the old set is gone with the swap */
	assert_int_equal(check(t, "198.18.1.1"), TBL_NONE);
	assert_int_equal(tbl_pset_add(ps = tbl_pset_new(), &(struct tbl_prefix){ .family = 9 }, 0), -EINVAL);
	tbl_pset_free(ps);
	tbl_destroy(t);
}

/* ---- concurrency ---- */

struct shared {
	struct tbl_set *t;
	atomic_bool stop;
	atomic_ulong lookups;
	atomic_int errors;
};

static void *reader(void *arg)
{
	struct shared *s = arg;
	uint8_t canary[4] = { 198, 18, 255, 1 }, other[4] = { 198, 19, 0, 1 };
	unsigned long n = 0;

	tbl_reader_register();
	while (!atomic_load(&s->stop)) {
		const struct tbl_domain_policy *d;

		/* the canary is in every set: a swap must never open a gap */
		if (tbl_client_check(s->t, 4, canary) != TBL_BLOCKED)
			atomic_fetch_add(&s->errors, 1);
		(void)tbl_client_check(s->t, 4, other);
		d = tbl_domain_lookup(s->t, "customer.test", 13);
		if (d == NULL || (d->max_message_size != 111 && d->max_message_size != 222))
			atomic_fetch_add(&s->errors, 1);
		n++;
		tbl_quiescent();
	}
	tbl_reader_unregister();
	atomic_fetch_add(&s->lookups, n);
	return NULL;
}

static void test_concurrent_readers(void **state)
{
	struct shared s = { .t = tbl_create() };
	struct tbl_domain_policy pol = { .max_message_size = 111 };
	struct tbl_prefix canary = P("198.18.255.0/24");
	pthread_t th[2];

	assert_int_equal(tbl_prefix_add(s.t, TBL_BLOCK, &canary, 0), 0);
	assert_int_equal(tbl_domain_set(s.t, "customer.test", &pol), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader, &s), 0);
	for (int round = 0; round < 300; round++) {
		struct tbl_pset *ps = tbl_pset_new();
		struct tbl_prefix p = P(round % 2 ? "198.19.0.0/16" : "198.19.0.0/24");

		assert_int_equal(tbl_pset_add(ps, &canary, 0), 0);
		assert_int_equal(tbl_pset_add(ps, &p, 0), 0);
		for (int k = 0; k < 50; k++) {
			struct tbl_prefix e = { .family = 4, .len = 32,
						.addr = { 203, 0, (uint8_t)round, (uint8_t)k } };

			assert_int_equal(tbl_pset_add(ps, &e, 0), 0);
		}
		assert_int_equal(tbl_prefix_swap(s.t, TBL_BLOCK, ps), 0);
		pol.max_message_size = round % 2 ? 111 : 222;
		assert_int_equal(tbl_domain_set(s.t, "customer.test", &pol), 0);
		/* incremental changes on the live set too */
		p = P("198.18.77.0/24");
		assert_int_equal(tbl_prefix_add(s.t, TBL_ALLOW, &p, 0), 0);
		assert_int_equal(tbl_prefix_del(s.t, TBL_ALLOW, &p), 0);
	}
	atomic_store(&s.stop, true);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	assert_int_equal(atomic_load(&s.errors), 0);
	assert_true(atomic_load(&s.lookups) > 300);
	tbl_destroy(s.t);
}

/* Knobs start at zero (limits off), and a reader sees each published
 * value whole; the previous copy is gone after tbl_knobs_set returns. */
static void test_knobs(void **state)
{
	struct tbl_set *t = tbl_create();
	struct tbl_knobs k = { .max_sessions_per_client = 7, .session_max_s = 60 };
	const struct tbl_knobs *r;

	(void)state;
	assert_non_null(t);
	r = tbl_knobs(t);
	assert_non_null(r);
	assert_int_equal(r->max_sessions_per_client, 0);
	assert_int_equal(r->session_max_s, 0);
	assert_int_equal(tbl_knobs_set(t, &k), 0);
	k.max_sessions_per_client = 9; /* the table holds its own copy */
	r = tbl_knobs(t);
	assert_int_equal(r->max_sessions_per_client, 7);
	assert_int_equal(r->session_max_s, 60);
	assert_int_equal(tbl_knobs_set(t, &k), 0);
	assert_int_equal(tbl_knobs(t)->max_sessions_per_client, 9);
	tbl_destroy(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_verdicts),
		cmocka_unit_test(test_ttl),
		cmocka_unit_test(test_listing),
		cmocka_unit_test(test_domains),
		cmocka_unit_test(test_bulk_swap),
		cmocka_unit_test(test_concurrent_readers),
		cmocka_unit_test(test_knobs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
