/*
 * test_mq_flow.c - flow ownership (dp_flow.c): the hash is the NIC's RSS
 * hash (Microsoft's published vectors), symmetric with our key, and every
 * frame kind lands where its connection or its job is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>

#include "dp.h"

/* The key of Microsoft's "Verifying the RSS Hash Calculation". */
static const uint8_t ms_key[40] = {
	0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67,
	0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb,
	0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
	0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
};

static void a4(const char *s, uint8_t *out)
{
	assert_int_equal(inet_pton(AF_INET, s, out), 1);
}

static void a6(const char *s, uint8_t *out)
{
	assert_int_equal(inet_pton(AF_INET6, s, out), 1);
}

static void test_matches_nic_rss(void **state)
{
	uint8_t s[16], d[16];

	(void)state;
	/* A NIC programmed with the same key computes the same value, so a
	 * RETA it applies and ours agree. */
	a4("66.9.149.187", s);
	a4("161.142.100.80", d);
	assert_int_equal(dp_flow_hash(ms_key, 4, s, d, 2794, 1766), 0x51ccc178);
	a4("199.92.111.2", s);
	a4("65.69.140.83", d);
	assert_int_equal(dp_flow_hash(ms_key, 4, s, d, 14230, 4739), 0xc626b0ea);
	a6("3ffe:2501:200:1fff::7", s);
	a6("3ffe:2501:200:3::1", d);
	assert_int_equal(dp_flow_hash(ms_key, 6, s, d, 2794, 1766), 0x40207d3d);
}

static void test_symmetric(void **state)
{
	uint8_t s[16], d[16];
	unsigned i, k;

	(void)state;
	srand(7);
	for (i = 0; i < 2000; i++) {
		int fam = i % 2 ? 6 : 4;
		uint16_t sp = (uint16_t)rand(), dp = (uint16_t)rand();

		for (k = 0; k < 16; k++) {
			s[k] = (uint8_t)rand();
			d[k] = (uint8_t)rand();
		}
		assert_int_equal(dp_flow_hash(dp_rss_key, fam, s, d, sp, dp),
				 dp_flow_hash(dp_rss_key, fam, d, s, dp, sp));
	}
	/* The Microsoft key is not symmetric: the property comes from ours. */
	a4("66.9.149.187", s);
	a4("161.142.100.80", d);
	assert_int_not_equal(dp_flow_hash(ms_key, 4, s, d, 2794, 1766),
			     dp_flow_hash(ms_key, 4, d, s, 1766, 2794));
}

/* Frame builders: Ethernet + IPv4/IPv6 + 20-byte TCP header. */
static size_t eth(uint8_t *f, uint16_t type)
{
	memset(f, 0, 14);
	memset(f, 0x02, 6);
	memset(f + 6, 0x04, 6);
	f[12] = (uint8_t)(type >> 8);
	f[13] = (uint8_t)type;
	return 14;
}

static size_t ip4_tcp(uint8_t *p, const char *src, const char *dst,
		      uint16_t sport, uint16_t dport)
{
	memset(p, 0, 40);
	p[0] = 0x45;
	p[3] = 40;
	p[8] = 64;
	p[9] = 6;
	a4(src, p + 12);
	a4(dst, p + 16);
	p[20] = (uint8_t)(sport >> 8);
	p[21] = (uint8_t)sport;
	p[22] = (uint8_t)(dport >> 8);
	p[23] = (uint8_t)dport;
	p[32] = 0x50;
	return 40;
}

static size_t ip6_tcp(uint8_t *p, const char *src, const char *dst,
		      uint16_t sport, uint16_t dport)
{
	memset(p, 0, 60);
	p[0] = 0x60;
	p[5] = 20;
	p[6] = 6;
	p[7] = 64;
	a6(src, p + 8);
	a6(dst, p + 24);
	p[40] = (uint8_t)(sport >> 8);
	p[41] = (uint8_t)sport;
	p[42] = (uint8_t)(dport >> 8);
	p[43] = (uint8_t)dport;
	p[52] = 0x50;
	return 60;
}

static void test_tcp_both_directions(void **state)
{
	uint8_t f[256];
	uint32_t h1 = 0, h2 = 1;
	size_t n;

	(void)state;
	n = eth(f, 0x0800);
	n += ip4_tcp(f + n, "198.18.0.2", "198.18.0.1", 40000, 25);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h1), DP_FLOW_TCP);
	n = eth(f, 0x0800);
	n += ip4_tcp(f + n, "198.18.0.1", "198.18.0.2", 25, 40000);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h2), DP_FLOW_TCP);
	assert_int_equal(h1, h2);

	n = eth(f, 0x86dd);
	n += ip6_tcp(f + n, "2001:db8::2", "2001:db8::1", 40001, 25);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h1), DP_FLOW_TCP);
	n = eth(f, 0x86dd);
	n += ip6_tcp(f + n, "2001:db8::1", "2001:db8::2", 25, 40001);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h2), DP_FLOW_TCP);
	assert_int_equal(h1, h2);
}

static void test_icmp_errors_follow_their_connection(void **state)
{
	uint8_t f[256];
	uint32_t conn = 0, h = 1;
	size_t n, ip;

	(void)state;
	n = eth(f, 0x0800);
	n += ip4_tcp(f + n, "198.18.0.2", "198.18.0.1", 40000, 25);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &conn), DP_FLOW_TCP);
	/* RFC 1191: "fragmentation needed" quoting the segment we sent. */
	n = eth(f, 0x0800);
	ip = n;
	memset(f + n, 0, 28);
	f[n] = 0x45;
	f[n + 9] = 1;
	a4("198.18.9.9", f + n + 12);
	a4("198.18.0.1", f + n + 16);
	n += 20;
	f[n] = 3;
	f[n + 1] = 4;
	n += 8;
	n += ip4_tcp(f + n, "198.18.0.1", "198.18.0.2", 25, 40000);
	f[ip + 3] = (uint8_t)(n - ip);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), DP_FLOW_EMBEDDED);
	assert_int_equal(h, conn);
	/* An echo request is nobody's connection. */
	f[ip + 20] = 8;
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), DP_FLOW_ANY);

	/* RFC 4443 packet too big quoting our IPv6 segment. */
	n = eth(f, 0x86dd);
	n += ip6_tcp(f + n, "2001:db8::2", "2001:db8::1", 40001, 25);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &conn), DP_FLOW_TCP);
	n = eth(f, 0x86dd);
	ip = n;
	memset(f + n, 0, 48);
	f[n] = 0x60;
	f[n + 6] = 58;
	f[n + 7] = 64;
	a6("2001:db8::99", f + n + 8);
	a6("2001:db8::1", f + n + 24);
	f[n + 40] = 2;
	n += 48;
	n += ip6_tcp(f + n, "2001:db8::1", "2001:db8::2", 25, 40001);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), DP_FLOW_EMBEDDED);
	assert_int_equal(h, conn);
	/* Neighbour advertisement: every worker; solicitation: worker 0. */
	f[ip + 40] = 136;
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), DP_FLOW_NEIGH_ALL);
	f[ip + 40] = 135;
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), DP_FLOW_ANY);
}

static void test_arp_and_odd_frames(void **state)
{
	uint8_t f[128];
	uint32_t h;
	size_t n;

	(void)state;
	n = eth(f, 0x0806);
	memset(f + n, 0, 28);
	f[n + 1] = 1;        /* Ethernet */
	f[n + 2] = 0x08;     /* IPv4 */
	f[n + 4] = 6;
	f[n + 5] = 4;
	f[n + 7] = 1;        /* request */
	n += 28;
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), DP_FLOW_ARP_REQUEST);
	/* The other workers' copy: a reply, learned but not answered. */
	dp_flow_arp_as_reply(f, (uint32_t)n);
	assert_int_equal(f[14 + 7], 2);
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), DP_FLOW_NEIGH_ALL);

	/* A later IPv4 fragment has no ports: worker 0 (its stack drops it). */
	n = eth(f, 0x0800);
	n += ip4_tcp(f + n, "198.18.0.2", "198.18.0.1", 40000, 25);
	f[14 + 6] = 0x00;
	f[14 + 7] = 0x10;
	assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), DP_FLOW_ANY);
	/* A segment cut before its ports ends is not hashed (worker 0, whose
	 * stack counts it as truncated); from the ports on it is. */
	f[14 + 7] = 0x00;
	for (n = 0; n < 40; n++)
		assert_int_equal(dp_flow_classify(f, (uint32_t)n, &h), n < 38 ?
				 DP_FLOW_ANY : DP_FLOW_TCP);
	n = eth(f, 0x88cc);
	assert_int_equal(dp_flow_classify(f, 60, &h), DP_FLOW_ANY);
}

static void test_spreads_over_workers(void **state)
{
	uint8_t s[4], d[4];
	unsigned count[2] = { 0, 0 }, port;

	(void)state;
	/* Owner = software RETA (i % workers) at hash % DP_SOFT_RETA: many
	 * client ports from one address reach both of two workers. */
	a4("198.18.0.2", s);
	a4("198.18.0.1", d);
	for (port = 40000; port < 40200; port++)
		count[(dp_flow_hash(dp_rss_key, 4, s, d, (uint16_t)port, 25) %
		       DP_SOFT_RETA) % 2]++;
	assert_true(count[0] > 40);
	assert_true(count[1] > 40);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matches_nic_rss),
		cmocka_unit_test(test_symmetric),
		cmocka_unit_test(test_tcp_both_directions),
		cmocka_unit_test(test_icmp_errors_follow_their_connection),
		cmocka_unit_test(test_arp_and_odd_frames),
		cmocka_unit_test(test_spreads_over_workers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
