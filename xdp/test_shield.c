/* test_shield.c — the shield's verdicts on crafted packets, through
 * bpf_prog_test_run_opts (root; runs in its own network namespace). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/bpf.h>

#include "shield.h"
#include "testenv.h"

static struct shield *S;
static int IFX; /* mxs0 in our namespace, 4 RX queues */

static struct shield_counter before[SHIELD_C_SLOTS];

static int setup(void **state)
{
	struct shield_load_opts o = { .no_pin = 1 };
	struct shield_config c;

	S = shield_load(&o);
	if (!S)
		return -1;
	/* rate limit and flood detection off unless a test turns them on */
	shield_config_defaults(&c);
	shield_config_set_rate(&c, 0, 0);
	shield_config_set_flood(&c, 0, SHIELD_FLOOD_HANDOFF);
	c.sample_every = 0;
	if (shield_config_set(S, &c))
		return -1;
	return shield_counters(S, before);
}

static int teardown(void **state)
{
	testenv_xsk_close_all();
	shield_close(S);
	S = NULL;
	return 0;
}

/* Counter delta of one slot since the last call for that slot. */
static uint64_t delta(unsigned slot)
{
	struct shield_counter now[SHIELD_C_SLOTS];
	uint64_t d;

	assert_int_equal(shield_counters(S, now), 0);
	d = now[slot].packets - before[slot].packets;
	before[slot] = now[slot];
	return d;
}

static void reset_deltas(void)
{
	assert_int_equal(shield_counters(S, before), 0);
}

static int run_q(const struct testenv_pkt *p, uint32_t queue)
{
	uint8_t buf[512];
	size_t n = testenv_build(buf, sizeof(buf), p);

	assert_true(n > 0);
	return testenv_run(shield_prog_fd(S), buf, n, IFX, queue, NULL, NULL);
}

static int run(const struct testenv_pkt *p)
{
	return run_q(p, 0);
}

/* Runs p and checks verdict and that exactly this reason counted it. */
static void expect(const struct testenv_pkt *p, int action, unsigned reason)
{
	reset_deltas();
	assert_int_equal(run(p), action);
	assert_int_equal(delta(reason), 1);
	assert_int_equal(shield_reason_verdict(reason), action);
}

static void add(enum shield_list l, const char *cidr)
{
	struct shield_cidr c;

	assert_int_equal(shield_cidr_parse(cidr, &c), 0);
	assert_int_equal(shield_add(S, l, &c, 0), 0);
}

static void del(enum shield_list l, const char *cidr)
{
	struct shield_cidr c;

	assert_int_equal(shield_cidr_parse(cidr, &c), 0);
	assert_int_equal(shield_del(S, l, &c), 0);
}

#define SYN 0x02
#define ACK 0x10

static void test_non_ip_passes(void **state)
{
	uint8_t arp[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x08, 0x06 };

	reset_deltas();
	assert_int_equal(testenv_run(shield_prog_fd(S), arp, sizeof(arp), IFX, 0,
				     NULL, NULL), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_IP), 1);
}

static void test_non_tcp_and_non_smtp_pass(void **state)
{
	struct testenv_pkt udp = { .family = 4, .proto = 17, .dport = 25 };
	struct testenv_pkt ssh = { .family = 4, .dport = 22, .tcpflags = SYN };
	struct testenv_pkt ssh6 = { .family = 6, .dport = 22, .tcpflags = SYN };

	/* even from a blocked source: the shield guards SMTP ports only */
	add(SHIELD_LIST_BLOCK, "198.18.0.2");
	add(SHIELD_LIST_BLOCK, "2001:db8::2");
	expect(&udp, XDP_PASS, SHIELD_R_PASS_NOT_TCP);
	expect(&ssh, XDP_PASS, SHIELD_R_PASS_NOT_SMTP);
	expect(&ssh6, XDP_PASS, SHIELD_R_PASS_NOT_SMTP);
	del(SHIELD_LIST_BLOCK, "198.18.0.2");
	del(SHIELD_LIST_BLOCK, "2001:db8::2");
}

static void test_smtp_without_socket_passes(void **state)
{
	struct testenv_pkt p4 = { .family = 4, .dport = 25, .tcpflags = SYN };
	struct testenv_pkt p6 = { .family = 6, .dport = 587, .tcpflags = ACK, .payload = 100 };

	expect(&p4, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	expect(&p6, XDP_PASS, SHIELD_R_PASS_NO_XSK);
}

static void test_block_exact(void **state)
{
	struct testenv_pkt p4 = { .family = 4, .src = "198.18.7.7", .dport = 25, .tcpflags = SYN };
	struct testenv_pkt p6 = { .family = 6, .src = "2001:db8:7::7", .dport = 465, .tcpflags = ACK };
	struct testenv_pkt other = { .family = 4, .src = "198.18.7.8", .dport = 25, .tcpflags = SYN };

	add(SHIELD_LIST_BLOCK, "198.18.7.7");
	add(SHIELD_LIST_BLOCK, "2001:db8:7::7/128");
	expect(&p4, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);
	expect(&p6, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);
	expect(&other, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	del(SHIELD_LIST_BLOCK, "198.18.7.7");
	del(SHIELD_LIST_BLOCK, "2001:db8:7::7");
	expect(&p4, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	expect(&p6, XDP_PASS, SHIELD_R_PASS_NO_XSK);
}

static void test_block_prefix(void **state)
{
	struct testenv_pkt p = { .family = 4, .dport = 25, .tcpflags = SYN };
	struct testenv_pkt p6 = { .family = 6, .dport = 25, .tcpflags = SYN };

	add(SHIELD_LIST_BLOCK, "198.19.0.0/16");      /* bitmap */
	add(SHIELD_LIST_BLOCK, "198.18.9.16/28");     /* /28 hash */
	add(SHIELD_LIST_BLOCK, "2001:db8:aa::/48");   /* IPv6 hash */
	add(SHIELD_LIST_BLOCK, "2001:db8:bb:cc::/63");
	p.src = "198.19.200.1";
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_PREFIX);
	p.src = "198.18.9.31";
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_PREFIX);
	p.src = "198.18.9.32"; /* just outside the /28 */
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	p.src = "198.18.9.15";
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	p6.src = "2001:db8:aa:ffff::1";
	expect(&p6, XDP_DROP, SHIELD_R_DROP_BLOCK_PREFIX);
	p6.src = "2001:db8:bb:cd::1";
	expect(&p6, XDP_DROP, SHIELD_R_DROP_BLOCK_PREFIX);
	p6.src = "2001:db8:bb:ce::1";
	expect(&p6, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	p6.src = "2001:db8:ab::1";
	expect(&p6, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	del(SHIELD_LIST_BLOCK, "198.19.0.0/16");
	del(SHIELD_LIST_BLOCK, "198.18.9.16/28");
	del(SHIELD_LIST_BLOCK, "2001:db8:aa::/48");
	del(SHIELD_LIST_BLOCK, "2001:db8:bb:cc::/63");
	p.src = "198.19.200.1";
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	p6.src = "2001:db8:aa:ffff::1";
	expect(&p6, XDP_PASS, SHIELD_R_PASS_NO_XSK);
}

static void test_allowlist_wins(void **state)
{
	struct testenv_pkt p = { .family = 4, .src = "198.18.50.5", .dport = 25, .tcpflags = SYN };
	struct testenv_pkt q = { .family = 4, .src = "198.18.50.6", .dport = 25, .tcpflags = SYN };
	struct testenv_pkt p6 = { .family = 6, .src = "2001:db8:50::5", .dport = 25, .tcpflags = SYN };

	add(SHIELD_LIST_BLOCK, "198.18.0.0/16");
	add(SHIELD_LIST_BLOCK, "2001:db8:50::5");
	add(SHIELD_LIST_ALLOW, "198.18.50.5");        /* exact allow in a blocked prefix */
	add(SHIELD_LIST_ALLOW, "2001:db8:50::/64");   /* allow prefix over an exact block */
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	assert_int_equal(delta(SHIELD_C_ALLOW_HIT), 1);
	expect(&q, XDP_DROP, SHIELD_R_DROP_BLOCK_PREFIX);
	assert_int_equal(delta(SHIELD_C_ALLOW_HIT), 0);
	expect(&p6, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	assert_int_equal(delta(SHIELD_C_ALLOW_HIT), 1);
	del(SHIELD_LIST_ALLOW, "198.18.50.5");
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_PREFIX);
	del(SHIELD_LIST_BLOCK, "198.18.0.0/16");
	del(SHIELD_LIST_BLOCK, "2001:db8:50::5");
	del(SHIELD_LIST_ALLOW, "2001:db8:50::/64");
}

static void test_vlan(void **state)
{
	struct testenv_pkt p = { .family = 4, .src = "198.18.60.1", .dport = 25, .tcpflags = SYN };

	add(SHIELD_LIST_BLOCK, "198.18.60.1");
	p.vlans = 1;
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);
	p.vlans = 2;
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);
	p.family = 6;
	p.src = NULL;
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	p.dport = 80;
	expect(&p, XDP_PASS, SHIELD_R_PASS_NOT_SMTP);
	del(SHIELD_LIST_BLOCK, "198.18.60.1");
}

static void test_ip_options_and_ext_headers_parsed(void **state)
{
	struct testenv_pkt p = { .family = 4, .src = "198.18.61.1", .dport = 25,
				 .tcpflags = SYN, .ip_opt_words = 3 };
	struct testenv_pkt p6 = { .family = 6, .src = "2001:db8:61::1", .dport = 25,
				  .tcpflags = SYN, .v6_ext = 3 };

	add(SHIELD_LIST_BLOCK, "198.18.61.1");
	add(SHIELD_LIST_BLOCK, "2001:db8:61::1");
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);
	expect(&p6, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);
	p6.v6_ext = 6; /* the most we walk */
	expect(&p6, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);
	p6.v6_ext = 7; /* one more than we walk: cannot judge, drop */
	expect(&p6, XDP_DROP, SHIELD_R_DROP_MALFORMED);
	p6.v6_ext = 7;
	p6.dport = 22; /* unknown port too: still not judged as SMTP */
	expect(&p6, XDP_DROP, SHIELD_R_DROP_MALFORMED);
	del(SHIELD_LIST_BLOCK, "198.18.61.1");
	del(SHIELD_LIST_BLOCK, "2001:db8:61::1");
}

static void test_fragments(void **state)
{
	struct testenv_pkt p = { .family = 4, .dport = 25, .tcpflags = ACK, .payload = 64 };

	p.frag = 1;
	expect(&p, XDP_DROP, SHIELD_R_DROP_FRAGMENT);
	p.frag = 2;
	expect(&p, XDP_PASS, SHIELD_R_PASS_FRAGMENT);
	p.family = 6;
	p.frag = 1;
	expect(&p, XDP_DROP, SHIELD_R_DROP_FRAGMENT);
	p.frag = 2;
	expect(&p, XDP_PASS, SHIELD_R_PASS_FRAGMENT);
	p.frag = 1;
	p.dport = 443; /* fragments of other traffic are the kernel's business */
	expect(&p, XDP_PASS, SHIELD_R_PASS_NOT_SMTP);
}

/* Truncates a valid packet to len bytes (and keeps IP lengths as they are,
 * so they now overrun the frame). */
static int run_truncated(const struct testenv_pkt *p, size_t len)
{
	uint8_t buf[512];
	size_t n = testenv_build(buf, sizeof(buf), p);

	assert_true(n >= len);
	return testenv_run(shield_prog_fd(S), buf, len, IFX, 0, NULL, NULL);
}

static void test_truncated_and_malformed(void **state)
{
	struct testenv_pkt p = { .family = 4, .dport = 25, .tcpflags = SYN };
	struct testenv_pkt p6 = { .family = 6, .dport = 25, .tcpflags = SYN };
	uint8_t buf[512];
	size_t n;

	reset_deltas();
	assert_int_equal(run_truncated(&p, 14 + 10), XDP_DROP); /* half an IPv4 header */
	assert_int_equal(run_truncated(&p, 14 + 20 + 10), XDP_DROP); /* half a TCP header */
	assert_int_equal(run_truncated(&p6, 14 + 30), XDP_DROP);
	assert_int_equal(run_truncated(&p6, 14 + 40 + 12), XDP_DROP);
	assert_int_equal(delta(SHIELD_R_DROP_MALFORMED), 4);

	/* ihl < 5 */
	n = testenv_build(buf, sizeof(buf), &p);
	buf[14] = 0x44;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, n, IFX, 0, NULL, NULL), XDP_DROP);
	/* IPv4 total length beyond the frame */
	n = testenv_build(buf, sizeof(buf), &p);
	buf[14 + 2] = 0x05;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, n, IFX, 0, NULL, NULL), XDP_DROP);
	/* TCP data offset < 5 */
	n = testenv_build(buf, sizeof(buf), &p);
	buf[14 + 20 + 12] = 0x40;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, n, IFX, 0, NULL, NULL), XDP_DROP);
	/* TCP data offset past the IP payload */
	n = testenv_build(buf, sizeof(buf), &p);
	buf[14 + 20 + 12] = 0xf0;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, n, IFX, 0, NULL, NULL), XDP_DROP);
	/* IPv6 payload length beyond the frame */
	n = testenv_build(buf, sizeof(buf), &p6);
	buf[14 + 4] = 0x10;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, n, IFX, 0, NULL, NULL), XDP_DROP);
	/* wrong IP version in an IPv4 frame */
	n = testenv_build(buf, sizeof(buf), &p);
	buf[14] = 0x65;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, n, IFX, 0, NULL, NULL), XDP_DROP);
	assert_int_equal(delta(SHIELD_R_DROP_MALFORMED), 6);

	/* SYN+FIN and SYN+RST mean nothing (RFC 9293) */
	p.tcpflags = SYN | 0x01;
	expect(&p, XDP_DROP, SHIELD_R_DROP_MALFORMED);
	p.tcpflags = SYN | 0x04;
	expect(&p, XDP_DROP, SHIELD_R_DROP_MALFORMED);
	/* IP length consistent, TCP header cut short after the ports: judged by
	 * the port we can read (SMTP: drop; other: the kernel's business) */
	p.tcpflags = SYN;
	n = testenv_build(buf, sizeof(buf), &p);
	buf[14 + 3] = 30;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, 14 + 30, IFX, 0, NULL, NULL),
			 XDP_DROP);
	assert_int_equal(delta(SHIELD_R_DROP_MALFORMED), 1);
	p.dport = 22;
	n = testenv_build(buf, sizeof(buf), &p);
	buf[14 + 3] = 30;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, 14 + 30, IFX, 0, NULL, NULL),
			 XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_SMTP), 1);
	/* TCP with not even the ports (2 bytes) */
	p.dport = 25;
	n = testenv_build(buf, sizeof(buf), &p);
	buf[14 + 3] = 22;
	assert_int_equal(testenv_run(shield_prog_fd(S), buf, 14 + 22, IFX, 0, NULL, NULL),
			 XDP_DROP);
	assert_int_equal(delta(SHIELD_R_DROP_MALFORMED), 1);

	/* The lists come before the rest of the TCP header: a blocked source
	 * is dropped as blocked whatever its header says; an allowlisted one
	 * is still checked in full. */
	add(SHIELD_LIST_BLOCK, "198.18.22.0/24");
	add(SHIELD_LIST_ALLOW, "198.18.22.7");
	p.src = "198.18.22.1";
	p.tcpflags = SYN | 0x01;
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_PREFIX);
	p.src = "198.18.22.7";
	expect(&p, XDP_DROP, SHIELD_R_DROP_MALFORMED);
	del(SHIELD_LIST_ALLOW, "198.18.22.7");
	del(SHIELD_LIST_BLOCK, "198.18.22.0/24");
}

static void test_ports_configurable(void **state)
{
	struct testenv_pkt p = { .family = 4, .dport = 25, .tcpflags = SYN };
	struct shield_config c, keep;

	assert_int_equal(shield_config_get(S, &keep), 0);
	c = keep;
	memset(c.ports, 0, sizeof(c.ports));
	c.ports[0] = 2525;
	assert_int_equal(shield_config_set(S, &c), 0);
	expect(&p, XDP_PASS, SHIELD_R_PASS_NOT_SMTP);
	p.dport = 2525;
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	memset(c.ports, 0, sizeof(c.ports)); /* no port at all is refused */
	assert_int_equal(shield_config_set(S, &c), -EINVAL);
	assert_int_equal(shield_config_set(S, &keep), 0);
}

/* The dataplane's listen ports replace the guarded set: a blocked source
 * is dropped on the new port, port 25 becomes "not SMTP" (and so is not
 * judged by the lists), bad sets are refused and change nothing, and the
 * other settings survive. */
static void test_ports_from_dataplane(void **state)
{
	struct testenv_pkt p = { .family = 4, .src = "198.18.21.1", .dport = 2525,
				 .tcpflags = SYN };
	static const uint16_t one[] = { 2525 }, dup[] = { 2525, 2526, 2525 },
			      bad[] = { 2525, 0 }, many[] = { 1, 2, 3, 4, 5 };
	struct shield_config keep, c;
	struct shield_cidr blk;

	assert_int_equal(shield_config_get(S, &keep), 0);
	c = keep;
	assert_int_equal(shield_config_set_rate(&c, 7, 9), 0);
	assert_int_equal(shield_config_set(S, &c), 0);
	assert_int_equal(shield_cidr_parse("198.18.21.1", &blk), 0);
	assert_int_equal(shield_add(S, SHIELD_LIST_BLOCK, &blk, 0), 0);

	assert_int_equal(shield_ports_set(S, one, 1), 0);
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);
	p.dport = 25;
	expect(&p, XDP_PASS, SHIELD_R_PASS_NOT_SMTP);
	assert_int_equal(shield_config_get(S, &c), 0);
	assert_int_equal(c.ports[0], 2525);
	assert_int_equal(c.ports[1], 0);
	assert_int_equal(c.rate_interval_ns, 1000000000ull / 7); /* untouched */

	assert_int_equal(shield_ports_set(S, dup, 3), 0);
	assert_int_equal(shield_config_get(S, &c), 0);
	assert_int_equal(c.ports[0], 2525);
	assert_int_equal(c.ports[1], 2526);
	assert_int_equal(c.ports[2], 0);
	p.dport = 2526;
	expect(&p, XDP_DROP, SHIELD_R_DROP_BLOCK_EXACT);

	assert_int_equal(shield_ports_set(S, bad, 2), -EINVAL);
	assert_int_equal(shield_ports_set(S, one, 0), -EINVAL);
	assert_int_equal(shield_ports_set(S, NULL, 1), -EINVAL);
	assert_int_equal(shield_ports_set(S, many, 5), -E2BIG);
	assert_int_equal(shield_config_get(S, &c), 0);
	assert_int_equal(c.ports[0], 2525); /* refused sets changed nothing */
	assert_int_equal(c.ports[1], 2526);

	assert_int_equal(shield_del(S, SHIELD_LIST_BLOCK, &blk), 0);
	assert_int_equal(shield_config_set(S, &keep), 0);
	p.dport = 25;
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
}

static void test_rate_limit_shared_across_queues(void **state)
{
	struct testenv_pkt p = { .family = 4, .src = "198.18.70.1", .dport = 25, .tcpflags = SYN };
	struct testenv_pkt ack = { .family = 4, .src = "198.18.70.1", .dport = 25, .tcpflags = ACK };
	struct testenv_pkt other = { .family = 4, .src = "198.18.70.2", .dport = 25, .tcpflags = SYN };
	struct testenv_pkt v6a = { .family = 6, .src = "2001:db8:70:1::a", .dport = 25, .tcpflags = SYN };
	struct testenv_pkt v6b = { .family = 6, .src = "2001:db8:70:1::b", .dport = 25, .tcpflags = SYN };
	struct testenv_pkt v6c = { .family = 6, .src = "2001:db8:70:2::a", .dport = 25, .tcpflags = SYN };
	struct shield_config c, keep;
	int i, passed = 0, cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);

	assert_int_equal(shield_config_get(S, &keep), 0);
	c = keep;
	assert_int_equal(shield_config_set_rate(&c, 1, 3), 0); /* 1/s, burst 3 */
	assert_int_equal(shield_config_set(S, &c), 0);
	assert_int_equal(shield_rate_reset(S), 0);
	reset_deltas();
	/* 8 SYNs spread over 4 RX queues (and both CPUs when there are two):
	 * one shared bucket lets exactly the burst through. */
	for (i = 0; i < 8; i++) {
		if (cpus > 1)
			assert_int_equal(testenv_pin_cpu(i % 2), 0);
		passed += run_q(&p, (uint32_t)(i % 4)) == XDP_PASS;
	}
	assert_int_equal(passed, 3);
	assert_int_equal(delta(SHIELD_R_DROP_RATE), 5);
	/* established traffic is not rate limited; other sources have their own bucket */
	expect(&ack, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	expect(&other, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	/* IPv6: one bucket per /64 */
	for (i = 0; i < 3; i++)
		assert_int_equal(run_q(i % 2 ? &v6a : &v6b, (uint32_t)i), XDP_PASS);
	expect(&v6b, XDP_DROP, SHIELD_R_DROP_RATE);
	expect(&v6c, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	/* an allowlisted source is exempt */
	add(SHIELD_LIST_ALLOW, "198.18.70.1");
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	del(SHIELD_LIST_ALLOW, "198.18.70.1");
	/* rate 0 turns the limit off */
	assert_int_equal(shield_config_set(S, &keep), 0);
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	testenv_pin_cpu(0);
}

static void test_xsk_redirect_and_empty_slot(void **state)
{
	struct testenv_pkt p = { .family = 4, .dport = 25, .tcpflags = ACK, .payload = 10 };
	int err;

	err = testenv_xsk_bind(IFX, 1, shield_xsks_map_fd(S));
	assert_int_equal(err, 0);
	reset_deltas();
	assert_int_equal(run_q(&p, 1), XDP_REDIRECT);
	assert_int_equal(delta(SHIELD_R_REDIRECT), 1);
	/* queue 2 has no socket: to the kernel, not into the void */
	assert_int_equal(run_q(&p, 2), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NO_XSK), 1);
	/* non-SMTP traffic on the socket's queue still goes to the kernel */
	p.dport = 22;
	assert_int_equal(run_q(&p, 1), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_SMTP), 1);
	testenv_xsk_close_all();
}

/* ARP over Ethernet for IPv4 (RFC 826), op 1 request or 2 reply. */
static size_t arp_frame(uint8_t *f, int op, const char *spa, const char *tpa)
{
	static const uint8_t hdr[22] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					 2, 0, 0, 0, 0, 2, 0x08, 0x06,
					 0, 1, 0x08, 0, 6, 4, 0, 0 };

	memset(f, 0, 60);
	memcpy(f, hdr, sizeof(hdr));
	f[21] = (uint8_t)op;
	memcpy(f + 22, hdr + 6, 6);                 /* sender MAC */
	inet_pton(AF_INET, spa, f + 28);
	inet_pton(AF_INET, tpa, f + 38);
	return 60;
}

static int run_raw_q(const uint8_t *f, size_t n, uint32_t queue)
{
	return testenv_run(shield_prog_fd(S), f, n, IFX, queue, NULL, NULL);
}

/* ICMPv6 neighbour solicitation (RFC 4861 §4.3) for target, sent to its
 * solicited-node multicast group. */
static size_t ns_frame(uint8_t *f, size_t cap, const char *target)
{
	struct testenv_pkt p = { .family = 6, .proto = 58, .payload = 16,
				 .dst = "ff02::1:ff00:1" };
	size_t n = testenv_build(f, cap, &p);

	assert_true(n >= 14 + 40 + 24);
	f[14 + 40] = 135;
	f[14 + 40 + 1] = 0;
	memset(f + 14 + 40 + 4, 0, 4);
	inet_pton(AF_INET6, target, f + 14 + 40 + 8);
	return n;
}

static void set_own(const char *a, const char *b)
{
	struct shield_cidr c[2];

	assert_int_equal(shield_cidr_parse(a, &c[0]), 0);
	assert_int_equal(shield_cidr_parse(b, &c[1]), 0);
	assert_int_equal(shield_own_set(S, c, 2), 0);
}

/* The dataplane's own addresses: its ARP, NDP and non-SMTP traffic go to
 * its AF_XDP socket (DPDK's stack answers them); the kernel keeps all the
 * rest, and own addresses do not bypass the lists. */
static void test_own_addresses(void **state)
{
	struct testenv_pkt icmp = { .family = 4, .proto = 1 };
	struct testenv_pkt ssh = { .family = 4, .dport = 22, .tcpflags = SYN };
	struct testenv_pkt echo6 = { .family = 6, .proto = 58, .payload = 8 };
	struct testenv_pkt smtp = { .family = 4, .dport = 25, .tcpflags = SYN };
	struct shield_cidr got[8], bad[5];
	uint8_t f[256];
	size_t n, i;

	assert_int_equal(testenv_xsk_bind(IFX, 3, shield_xsks_map_fd(S)), 0);
	/* nothing configured (as after the PMD loads the object): kernel */
	reset_deltas();
	n = arp_frame(f, 1, "198.18.0.2", "198.18.0.1");
	assert_int_equal(run_raw_q(f, n, 3), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_IP), 1);
	assert_int_equal(run_q(&icmp, 3), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_TCP), 1);

	set_own("198.18.0.1", "2001:db8::1");
	assert_int_equal(shield_own_get(S, got, 8, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(got[0].family, 4);
	assert_int_equal(got[1].family, 6);
	assert_int_equal(shield_own_get(S, got, 1, &n), -ENOSPC);

	/* ARP request for us and the reply to our own request: ours */
	reset_deltas();
	n = arp_frame(f, 1, "198.18.0.2", "198.18.0.1");
	assert_int_equal(run_raw_q(f, n, 3), XDP_REDIRECT);
	assert_int_equal(delta(SHIELD_R_REDIRECT), 1);
	n = arp_frame(f, 2, "198.18.0.2", "198.18.0.1");
	assert_int_equal(run_raw_q(f, n, 3), XDP_REDIRECT);
	assert_int_equal(delta(SHIELD_R_REDIRECT), 1);
	/* no socket on the queue: the kernel, not the void */
	assert_int_equal(run_raw_q(f, n, 2), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NO_XSK), 1);
	/* ARP for the kernel's address, and truncated ARP: the kernel's */
	n = arp_frame(f, 1, "198.18.0.2", "198.18.0.3");
	assert_int_equal(run_raw_q(f, n, 3), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_IP), 1);
	n = arp_frame(f, 1, "198.18.0.2", "198.18.0.1");
	assert_int_equal(run_raw_q(f, 14 + 27, 3), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_IP), 1);
	assert_int_equal(delta(SHIELD_R_REDIRECT), 0);

	/* ICMP and non-SMTP TCP to us: ours; to another address: kernel */
	assert_int_equal(run_q(&icmp, 3), XDP_REDIRECT);
	assert_int_equal(run_q(&ssh, 3), XDP_REDIRECT);
	assert_int_equal(delta(SHIELD_R_REDIRECT), 2);
	icmp.dst = ssh.dst = "198.18.0.3";
	assert_int_equal(run_q(&icmp, 3), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_TCP), 1);
	assert_int_equal(run_q(&ssh, 3), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_SMTP), 1);

	/* NDP: a solicitation for us (to the solicited-node group), ICMPv6
	 * to us; a solicitation for another address stays with the kernel */
	n = ns_frame(f, sizeof(f), "2001:db8::1");
	assert_int_equal(run_raw_q(f, n, 3), XDP_REDIRECT);
	assert_int_equal(run_q(&echo6, 3), XDP_REDIRECT);
	assert_int_equal(delta(SHIELD_R_REDIRECT), 2);
	n = ns_frame(f, sizeof(f), "2001:db8::3");
	assert_int_equal(run_raw_q(f, n, 3), XDP_PASS);
	echo6.dst = "2001:db8::3";
	assert_int_equal(run_q(&echo6, 3), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_TCP), 2);

	/* own addresses open no door through the lists */
	add(SHIELD_LIST_BLOCK, "198.18.0.2");
	assert_int_equal(run_q(&smtp, 3), XDP_DROP);
	assert_int_equal(delta(SHIELD_R_DROP_BLOCK_EXACT), 1);
	del(SHIELD_LIST_BLOCK, "198.18.0.2");

	/* bad input is refused and changes nothing */
	assert_int_equal(shield_cidr_parse("198.18.0.0/24", &bad[0]), 0);
	assert_int_equal(shield_own_set(S, bad, 1), -EINVAL);
	for (i = 0; i < 5; i++) {
		char a[32];

		snprintf(a, sizeof(a), "198.18.0.%zu", 10 + i);
		assert_int_equal(shield_cidr_parse(a, &bad[i]), 0);
	}
	assert_int_equal(shield_own_set(S, bad, 5), -E2BIG);
	assert_int_equal(shield_own_get(S, got, 8, &n), 0);
	assert_int_equal(n, 2);

	/* cleared: ARP for the old address is the kernel's again */
	assert_int_equal(shield_own_set(S, NULL, 0), 0);
	reset_deltas();
	n = arp_frame(f, 1, "198.18.0.2", "198.18.0.1");
	assert_int_equal(run_raw_q(f, n, 3), XDP_PASS);
	assert_int_equal(delta(SHIELD_R_PASS_NOT_IP), 1);
	testenv_xsk_close_all();
}

static uint16_t csum16(const uint8_t *p, size_t n, uint32_t sum)
{
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		sum += (uint32_t)(p[n - 1] << 8);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

static void check_synack(const uint8_t *in, const uint8_t *out, uint32_t out_len,
			 int family)
{
	size_t l3 = 14, ipl = family == 4 ? 20 : 40, l4 = l3 + ipl;
	uint32_t seq_in, ack_out;
	uint32_t ph = 0;

	assert_int_equal(out_len, l4 + 24);
	assert_memory_equal(out, in + 6, 6);       /* MACs swapped */
	assert_memory_equal(out + 6, in, 6);
	if (family == 4) {
		assert_memory_equal(out + l3 + 12, in + l3 + 16, 4); /* IPs swapped */
		assert_memory_equal(out + l3 + 16, in + l3 + 12, 4);
		assert_int_equal(csum16(out + l3, 20, 0), 0xffff);  /* IP checksum */
		ph = csum16(out + l3 + 12, 8, 6 + 24);
	} else {
		assert_memory_equal(out + l3 + 8, in + l3 + 24, 16);
		assert_memory_equal(out + l3 + 24, in + l3 + 8, 16);
		assert_int_equal(out[l3 + 4] << 8 | out[l3 + 5], 24);
		ph = csum16(out + l3 + 8, 32, 6 + 24);
	}
	assert_memory_equal(out + l4, in + l4 + 2, 2);  /* ports swapped */
	assert_memory_equal(out + l4 + 2, in + l4, 2);
	assert_int_equal(out[l4 + 13], 0x12);           /* SYN|ACK */
	seq_in = (uint32_t)in[l4 + 4] << 24 | in[l4 + 5] << 16 | in[l4 + 6] << 8 | in[l4 + 7];
	ack_out = (uint32_t)out[l4 + 8] << 24 | out[l4 + 9] << 16 | out[l4 + 10] << 8 | out[l4 + 11];
	assert_int_equal(ack_out, seq_in + 1);
	assert_int_equal(out[l4 + 20], 2);              /* MSS option */
	assert_int_equal(out[l4 + 21], 4);
	assert_int_equal(csum16(out + l4, 24, ph), 0xffff); /* TCP checksum */
}

static void test_syn_flood_cookie_and_handoff(void **state)
{
	struct testenv_pkt p = { .family = 4, .dport = 25, .tcpflags = SYN, .mss = 1460,
				 .payload = 0, .seq = 0x11223344 };
	struct shield_config c, keep;
	uint8_t in[256], out[256];
	uint32_t out_len = sizeof(out);
	size_t n;
	int fam;

	assert_int_equal(shield_config_get(S, &keep), 0);
	c = keep;
	shield_config_set_flood(&c, 1, SHIELD_FLOOD_XDP_COOKIE); /* 1 SYN per window */
	assert_int_equal(shield_config_set(S, &c), 0);
	for (fam = 4; fam <= 6; fam += 2) {
		p.family = fam;
		n = testenv_build(in, sizeof(in), &p);
		testenv_run(shield_prog_fd(S), in, n, IFX, 0, NULL, NULL); /* crosses */
		reset_deltas();
		out_len = sizeof(out);
		assert_int_equal(testenv_run(shield_prog_fd(S), in, n, IFX, 0, out, &out_len),
				 XDP_TX);
		assert_int_equal(delta(SHIELD_R_TX_SYNCOOKIE), 1);
		assert_int_equal(delta(SHIELD_C_FLOOD_SYN), 1);
		check_synack(in, out, out_len, fam);
	}
	/* non-SYN traffic is untouched by flood mode */
	p.tcpflags = ACK;
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	/* a SYN with IP options cannot get a cookie here: dropped in flood */
	p.family = 4;
	p.tcpflags = SYN;
	p.ip_opt_words = 1;
	expect(&p, XDP_DROP, SHIELD_R_DROP_SYNFLOOD);
	/* hand-off mode: SYNs go on (to the dataplane's cookie path) */
	p.ip_opt_words = 0;
	shield_config_set_flood(&c, 1, SHIELD_FLOOD_HANDOFF);
	assert_int_equal(shield_config_set(S, &c), 0);
	run(&p);
	expect(&p, XDP_PASS, SHIELD_R_PASS_NO_XSK);
	assert_int_equal(delta(SHIELD_C_FLOOD_SYN), 1);
	assert_int_equal(shield_config_set(S, &keep), 0);
}

struct ev_seen {
	int n;
	struct shield_event last;
};

static int on_event(const struct shield_event *e, void *arg)
{
	struct ev_seen *s = arg;

	s->n++;
	s->last = *e;
	return 0;
}

static void test_drop_events_sampled(void **state)
{
	struct testenv_pkt p = { .family = 4, .src = "198.18.80.1", .dport = 25, .tcpflags = SYN };
	struct shield_config c, keep;
	struct ev_seen seen = { 0 };
	uint8_t want[4] = { 198, 18, 80, 1 };
	int i, r;

	add(SHIELD_LIST_BLOCK, "198.18.80.1");
	assert_int_equal(shield_config_get(S, &keep), 0);
	c = keep;
	c.sample_every = 1;
	assert_int_equal(shield_config_set(S, &c), 0);
	assert_int_equal(run(&p), XDP_DROP);
	r = shield_events_poll(S, 100, on_event, &seen);
	assert_int_equal(r, 1);
	assert_int_equal(seen.last.reason, SHIELD_R_DROP_BLOCK_EXACT);
	assert_int_equal(seen.last.family, 4);
	assert_int_equal(seen.last.dport, 25);
	assert_memory_equal(&seen.last.src.a[12], want, 4);
	/* 1 in 1000: far fewer events than drops */
	c.sample_every = 1000;
	assert_int_equal(shield_config_set(S, &c), 0);
	for (i = 0; i < 200; i++)
		run(&p);
	seen.n = 0;
	shield_events_poll(S, 0, on_event, &seen);
	assert_true(seen.n < 20);
	assert_int_equal(shield_config_set(S, &keep), 0);
	del(SHIELD_LIST_BLOCK, "198.18.80.1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_non_ip_passes),
		cmocka_unit_test(test_non_tcp_and_non_smtp_pass),
		cmocka_unit_test(test_smtp_without_socket_passes),
		cmocka_unit_test(test_block_exact),
		cmocka_unit_test(test_block_prefix),
		cmocka_unit_test(test_allowlist_wins),
		cmocka_unit_test(test_vlan),
		cmocka_unit_test(test_ip_options_and_ext_headers_parsed),
		cmocka_unit_test(test_fragments),
		cmocka_unit_test(test_truncated_and_malformed),
		cmocka_unit_test(test_ports_configurable),
		cmocka_unit_test(test_ports_from_dataplane),
		cmocka_unit_test(test_rate_limit_shared_across_queues),
		cmocka_unit_test(test_xsk_redirect_and_empty_slot),
		cmocka_unit_test(test_own_addresses),
		cmocka_unit_test(test_syn_flood_cookie_and_handoff),
		cmocka_unit_test(test_drop_events_sampled),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test_shield: needs root (BPF, network namespace)\n");
		return 77;
	}
	IFX = testenv_netns();
	if (IFX < 0) {
		fprintf(stderr, "test_shield: cannot create test namespace: %s\n",
			strerror(-IFX));
		return 1;
	}
	return cmocka_run_group_tests(tests, setup, teardown);
}
