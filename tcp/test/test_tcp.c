/* Unit tests for tcp/ (cmocka): API contracts, SYN flood acceptance,
 * stack-to-stack transfers over an impaired virtual wire. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "tcp.h"
#include "vwire.h"

static uint8_t *null_alloc(void *ctx, uint32_t len, void **h)
{
	static uint8_t buf[2048];
	*h = buf;
	return len <= sizeof(buf) ? buf : NULL;
}

static void null_send(void *ctx, void *h, uint32_t len, const struct tcp_txmeta *m)
{
	(*(unsigned long *)ctx)++;
}

static uint16_t csum16(const uint8_t *p, size_t n, uint32_t s);

static void base_cfg(struct tcp_config *c, unsigned long *sent)
{
	memset(c, 0, sizeof(*c));
	uint8_t mac[6] = { 2, 0, 0, 0, 0, 1 };
	memcpy(c->mac, mac, 6);
	inet_pton(AF_INET, "198.18.0.1", &c->ip4);
	inet_pton(AF_INET, "255.255.255.0", &c->ip4_mask);
	c->ops.ctx = sent;
	c->ops.tx_alloc = null_alloc;
	c->ops.tx_send = null_send;
	memcpy(c->secret, "unit-test-secret", 16);
}

static void test_create_rejects_bad_config(void **state)
{
	unsigned long sent = 0;
	struct tcp_config c;

	base_cfg(&c, &sent);
	c.ops.tx_send = NULL;
	errno = 0;
	assert_null(tcp_create(&c));
	assert_int_equal(errno, EINVAL);

	base_cfg(&c, &sent);
	c.ip4 = 0;                       /* no address at all */
	assert_null(tcp_create(&c));
	assert_int_equal(errno, EINVAL);

	base_cfg(&c, &sent);
	c.mac[0] = 1;                    /* multicast MAC */
	assert_null(tcp_create(&c));

	base_cfg(&c, &sent);
	c.mtu = 100;
	assert_null(tcp_create(&c));

	base_cfg(&c, &sent);
	c.syncookies = 3;
	assert_null(tcp_create(&c));

	base_cfg(&c, &sent);
	inet_pton(AF_INET6, "2001:db8::1", c.ip6);
	c.ip6_prefixlen = 0;             /* v6 address without prefix */
	assert_null(tcp_create(&c));

	assert_null(tcp_create(NULL));
	tcp_destroy(NULL);
}

static void test_listen_and_connect_errors(void **state)
{
	unsigned long sent = 0;
	struct tcp_config c;
	base_cfg(&c, &sent);
	c.max_conns = 1;
	struct tcp_stack *st = tcp_create(&c);
	assert_non_null(st);
	assert_int_equal(tcp_listen(st, 0), -EINVAL);
	assert_int_equal(tcp_listen(st, 25), 0);
	assert_int_equal(tcp_listen(st, 25), -EEXIST);
	for (int p = 1; p < 16; p++)
		assert_int_equal(tcp_listen(st, (uint16_t)(1000 + p)), 0);
	assert_int_equal(tcp_listen(st, 2000), -ENOSPC);
	assert_int_equal(tcp_unlisten(st, 25), 0);
	assert_int_equal(tcp_unlisten(st, 25), -ENOENT);

	struct tcp_addr a = { .family = 6 };
	inet_pton(AF_INET6, "2001:db8::2", a.a);
	assert_null(tcp_connect(st, &a, 25, 0, 1));
	assert_int_equal(errno, EAFNOSUPPORT);
	struct tcp_addr b = { .family = 4 };
	inet_pton(AF_INET, "198.19.5.5", b.a);    /* off-link, no gateway */
	assert_null(tcp_connect(st, &b, 25, 0, 1));
	assert_int_equal(errno, ENETUNREACH);
	inet_pton(AF_INET, "198.18.0.2", b.a);
	struct tcp_conn *cn = tcp_connect(st, &b, 25, 5555, 1);
	assert_non_null(cn);
	assert_null(tcp_connect(st, &b, 25, 5556, 1));   /* budget: 1 conn */
	assert_int_equal(errno, ENOBUFS);
	/* Before the handshake completes, sending is refused. */
	assert_int_equal(tcp_send(cn, "x", 1), -ENOTCONN);
	assert_int_equal(tcp_recv_consume(cn, 1), -EINVAL);
	assert_int_equal(tcp_shutdown(cn), -ENOTCONN);
	tcp_close(cn);
	struct tcp_stats s;
	tcp_stats_get(st, &s);
	assert_int_equal(s.conns_active, 0);
	tcp_destroy(st);
}

static void test_conn_state_budget(void **state)
{
	/* Issue goal: <= 1 KB of stack state per idle established conn. */
	printf("# struct tcp_conn = %zu bytes\n", tcp_conn_state_size());
	assert_true(tcp_conn_state_size() <= 1024);
	assert_string_equal(tcp_drop_reason_name(TCP_DROP_TCP_CSUM), "tcp_csum");
	assert_string_equal(tcp_drop_reason_name(9999), "?");
	assert_string_equal(tcp_state_name(TCP_TIME_WAIT), "TIME_WAIT");
}

/* ---- stack-to-stack transfers over the virtual wire ---- */

struct xfer {
	struct tcp_conn *c[2];
	uint64_t sent[2], rcvd[2], total;
	int eof[2], bad, closed[2];
	uint64_t seed;
};

static uint8_t pat(uint64_t seed, int dir, uint64_t off)
{
	return (uint8_t)((off * 2654435761u) >> 7 ^ (uint64_t)dir * 0x5a ^ seed);
}

static void pump_events(struct vwire *w, struct xfer *x, int side)
{
	struct tcp_event ev[16];
	unsigned n;
	while ((n = tcp_events(w->side[side].st, ev, 16)) > 0) {
		for (unsigned i = 0; i < n; i++) {
			if (ev[i].events & TCP_EV_ACCEPT)
				x->c[side] = ev[i].conn;
			if (ev[i].events & TCP_EV_CLOSED)
				x->closed[side] = ev[i].error ? ev[i].error : -1;
		}
	}
}

static void app_step(struct vwire *w, struct xfer *x, int side)
{
	struct tcp_conn *c = x->c[side];
	if (!c || x->closed[side] > 0)
		return;
	/* read (zero-copy views) and verify */
	struct tcp_iov iov[8];
	unsigned k;
	while ((k = tcp_recv_peek(c, iov, 8)) > 0) {
		size_t tot = 0;
		for (unsigned i = 0; i < k; i++) {
			for (uint32_t j = 0; j < iov[i].len; j++)
				if (iov[i].base[j] != pat(x->seed, 1 - side, x->rcvd[side] + tot + j))
					x->bad = 1;
			tot += iov[i].len;
		}
		x->rcvd[side] += tot;
		tcp_recv_consume(c, tot);
	}
	if (tcp_recv_eof(c))
		x->eof[side] = 1;
	/* write as much as fits */
	uint8_t buf[16384];
	while (x->sent[side] < x->total) {
		size_t n = x->total - x->sent[side];
		if (n > sizeof(buf))
			n = sizeof(buf);
		for (size_t j = 0; j < n; j++)
			buf[j] = pat(x->seed, side, x->sent[side] + j);
		long r = tcp_send(c, buf, n);
		if (r <= 0)
			break;
		x->sent[side] += (uint64_t)r;
	}
	if (x->sent[side] == x->total)
		tcp_shutdown(c);
}

/* Transfers total bytes in both directions at once; returns 0 when both
 * sides received everything byte-exact and saw EOF. */
static int run_xfer(uint64_t total, unsigned loss_ppm, unsigned dup_ppm, unsigned reorder_ppm,
                    uint64_t seed, int v6)
{
	struct vwire *w = calloc(1, sizeof(*w));
	struct tcp_config c0, c1;
	memset(&c0, 0, sizeof(c0));
	memset(&c1, 0, sizeof(c1));
	vw_config(w, 0, &c0);
	vw_config(w, 1, &c1);
	c0.sndbuf = c1.sndbuf = c0.rcvbuf = c1.rcvbuf = 256 * 1024;
	c0.tx_chunks = c1.tx_chunks = 512;
	c0.rx_segs = c1.rx_segs = 2048;
	c0.max_conns = c1.max_conns = 16;
	memcpy(c0.secret, "side-zero-secret", 16);
	memcpy(c1.secret, "side-one--secret", 16);
	w->delay_ns = 2000000;      /* 2 ms one way */
	w->rng = seed * 0x9E3779B97F4A7C15ULL + 1;
	w->loss_ppm = loss_ppm;
	w->dup_ppm = dup_ppm;
	w->reorder_ppm = reorder_ppm;
	w->now = 1000000000ULL;
	int rc = -1;
	if (vw_start(w, &c0, &c1) < 0)
		goto out;
	tcp_listen(w->side[1].st, 25);
	struct xfer x = { .total = total, .seed = seed };
	struct tcp_addr a = { .family = (uint8_t)(v6 ? 6 : 4) };
	if (v6)
		memcpy(a.a, c1.ip6, 16);
	else
		memcpy(a.a, &c1.ip4, 4);
	x.c[0] = tcp_connect(w->side[0].st, &a, 25, 0, w->now);
	if (!x.c[0])
		goto out;
	uint64_t deadline = w->now + 600ULL * 1000000000ULL;
	while (w->now < deadline) {
		w->now += 200000;     /* 0.2 ms steps */
		vw_step(w);
		for (int s = 0; s < 2; s++) {
			pump_events(w, &x, s);
			app_step(w, &x, s);
		}
		tcp_service(w->side[0].st, w->now);
		tcp_service(w->side[1].st, w->now);
		if (x.bad || x.closed[0] > 0 || x.closed[1] > 0)
			break;
		if (x.eof[0] && x.eof[1] && x.rcvd[0] == total && x.rcvd[1] == total)
			break;
	}
	if (!x.bad && x.rcvd[0] == total && x.rcvd[1] == total && x.eof[0] && x.eof[1])
		rc = 0;
	else
		printf("# xfer failed: seed %llu loss %u dup %u reorder %u: rcvd %llu/%llu of %llu, bad %d closed %d/%d\n",
		       (unsigned long long)seed, loss_ppm, dup_ppm, reorder_ppm,
		       (unsigned long long)x.rcvd[0], (unsigned long long)x.rcvd[1],
		       (unsigned long long)total, x.bad, x.closed[0], x.closed[1]);
	if (x.c[0]) tcp_close(x.c[0]);
	if (x.c[1]) tcp_close(x.c[1]);
out:
	vw_destroy(w);
	free(w);
	return rc;
}

static void test_xfer_clean(void **state)
{
	assert_int_equal(run_xfer(1, 0, 0, 0, 1, 0), 0);
	assert_int_equal(run_xfer(100000, 0, 0, 0, 2, 0), 0);
	assert_int_equal(run_xfer(2 << 20, 0, 0, 0, 3, 0), 0);
	assert_int_equal(run_xfer(300000, 0, 0, 0, 4, 1), 0);
}

static void test_xfer_impaired(void **state)
{
	/* seeded: the seed is printed on failure */
	for (uint64_t seed = 10; seed < 13; seed++) {
		assert_int_equal(run_xfer(500000, 10000, 10000, 10000, seed, 0), 0);
		assert_int_equal(run_xfer(500000, 50000, 50000, 50000, seed, 0), 0);
	}
	assert_int_equal(run_xfer(200000, 50000, 50000, 50000, 77, 1), 0);
}

/* ---- SYN flood acceptance (issue 4): 1 M SYNs from random sources leave
 * memory flat (cookies, no state per SYN) while an established session
 * keeps exchanging data. ---- */

static size_t rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * 4;
}

static uint16_t csum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void test_syn_flood_memory_flat(void **state)
{
	struct vwire *w = calloc(1, sizeof(*w));
	struct tcp_config c0, c1;
	memset(&c0, 0, sizeof(c0));
	memset(&c1, 0, sizeof(c1));
	vw_config(w, 0, &c0);
	vw_config(w, 1, &c1);
	c1.max_conns = 64;
	c1.syn_backlog = 16;
	w->delay_ns = 100000;
	w->rng = 42;
	w->now = 1000000000ULL;
	assert_int_equal(vw_start(w, &c0, &c1), 0);
	tcp_listen(w->side[1].st, 25);
	struct xfer x = { .total = UINT64_MAX / 2, .seed = 5 };
	struct tcp_addr a = { .family = 4 };
	memcpy(a.a, &c1.ip4, 4);
	x.c[0] = tcp_connect(w->side[0].st, &a, 25, 0, w->now);
	for (int i = 0; i < 200; i++) {
		w->now += 100000;
		vw_step(w);
		pump_events(w, &x, 0);
		pump_events(w, &x, 1);
	}
	assert_non_null(x.c[1]);

	/* The flood: SYNs straight into the listener, random sources. */
	static uint8_t f[60];
	static struct tcp_buf b;
	uint8_t *ip = f + 14, *th = ip + 20;
	memcpy(f, c1.mac, 6);
	memcpy(f + 6, "\x02\x00\x00\x00\x09\x09", 6);
	f[12] = 8;
	f[13] = 0;
	size_t rss0 = 0;
	struct tcp_stats s0, s1;
	uint64_t rng = 12345, exchanged_before = 0;
	const unsigned N = 1000000;
	for (unsigned i = 0; i < N; i++) {
		rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
		memset(ip, 0, 40);
		ip[0] = 0x45; ip[3] = 40; ip[8] = 64; ip[9] = 6;
		ip[12] = 198; ip[13] = 19; ip[14] = (uint8_t)(rng >> 8); ip[15] = (uint8_t)(rng >> 16);
		memcpy(ip + 16, &c1.ip4, 4);
		uint16_t ck = csum16(ip, 20, 0);
		ip[10] = (uint8_t)(ck >> 8); ip[11] = (uint8_t)ck;
		th[0] = (uint8_t)(rng >> 24) | 0x80; th[1] = (uint8_t)(rng >> 32);
		th[2] = 0; th[3] = 25;
		memcpy(th + 4, &rng, 4);
		th[12] = 0x50; th[13] = 0x02; th[14] = 0xff; th[15] = 0xff;
		uint32_t ps = 0;
		for (int k = 12; k < 20; k += 2)
			ps += (uint32_t)(ip[k] << 8 | ip[k + 1]);
		ck = csum16(th, 20, ps + 6 + 20);
		th[16] = (uint8_t)(ck >> 8); th[17] = (uint8_t)ck;
		b.data = f;
		b.len = 54;
		b.release = NULL;
		tcp_input(w->side[1].st, &b, w->now);
		/* every 1000 SYNs, 0.1 ms passes and the session moves data */
		if (i % 1000 == 999) {
			w->now += 100000;
			vw_step(w);
			for (int s = 0; s < 2; s++) {
				pump_events(w, &x, s);
				app_step(w, &x, s);
			}
			/* the SYN-ACKs to the flood go to the wire model: drop them */
			for (int q = 0; q < 2; q++) {
				for (unsigned k = 0; k < w->qn[q]; k++) {
					if (w->q[q][k]->len >= 54 && (w->q[q][k]->d[14 + 20 + 13] & 0x12) == 0x12 &&
					    w->q[q][k]->d[14 + 16] == 198 && w->q[q][k]->d[14 + 17] == 19) {
						vw_put(w->q[q][k]);
						memmove(&w->q[q][k], &w->q[q][k + 1], (w->qn[q] - k - 1) * sizeof(void *));
						w->qn[q]--;
						k--;
					}
				}
			}
		}
		if (i == 100000) {
			rss0 = rss_kb();
			tcp_stats_get(w->side[1].st, &s0);
			exchanged_before = x.rcvd[0] + x.rcvd[1];
		}
	}
	size_t rss1 = rss_kb();
	tcp_stats_get(w->side[1].st, &s1);
	printf("# flood: %u SYNs, cookies %llu, conns %llu, rss %zu -> %zu KiB, bytes exchanged %llu -> %llu\n",
	       N, (unsigned long long)s1.syncookies_sent, (unsigned long long)s1.conns_active,
	       rss0, rss1, (unsigned long long)exchanged_before,
	       (unsigned long long)(x.rcvd[0] + x.rcvd[1]));
	/* no per-SYN state: the table holds the session plus the backlog */
	assert_true(s1.conns_active <= 1 + c1.syn_backlog);
	assert_true(s1.syncookies_sent >= N - c1.syn_backlog);
	/* memory flat across the last 900k SYNs (allow 1 MiB noise) */
	assert_true(rss1 <= rss0 + 1024);
	/* the session kept exchanging data all along, byte-exact */
	assert_false(x.bad);
	assert_true(x.rcvd[0] + x.rcvd[1] > exchanged_before + 1000000);
	assert_int_equal(x.closed[0] + x.closed[1], 0);
	tcp_close(x.c[0]);
	tcp_close(x.c[1]);
	vw_destroy(w);
	free(w);
}


/* ---- frame-level checks: VLAN, checksum offload, ISNs ---- */

struct cap {
	uint8_t f[16][2048];
	uint32_t len[16];
	struct tcp_txmeta meta[16];
	unsigned n;
};

static uint8_t *cap_alloc(void *ctx, uint32_t len, void **h)
{
	struct cap *c = ctx;
	if (c->n >= 16 || len > 2048)
		return NULL;
	*h = c->f[c->n];
	return c->f[c->n];
}

static void cap_send(void *ctx, void *h, uint32_t len, const struct tcp_txmeta *m)
{
	struct cap *c = ctx;
	c->len[c->n] = len;
	c->meta[c->n] = *m;
	c->n++;
}

static struct tcp_stack *cap_stack(struct cap *cp, uint16_t vlan, int offload)
{
	struct tcp_config c;
	base_cfg(&c, NULL);
	c.ops.ctx = cp;
	c.ops.tx_alloc = cap_alloc;
	c.ops.tx_send = cap_send;
	c.vlan_id = vlan;
	c.tx_csum_offload = (uint8_t)offload;
	struct tcp_stack *st = tcp_create(&c);
	assert_non_null(st);
	struct tcp_addr a = { .family = 4 };
	inet_pton(AF_INET, "198.18.0.2", a.a);
	tcp_neigh_add(st, &a, (const uint8_t[6]){ 2, 0, 0, 0, 0, 2 });
	return st;
}

/* tcp_neigh_resolve: one ARP request for an unknown on-link peer, none
 * more while it is pending, 0 once the reply is in; no route is an error. */
static void test_neigh_resolve(void **state)
{
	struct cap cp = { .n = 0 };
	struct tcp_config c;
	struct tcp_addr peer = { .family = 4 }, far = { .family = 4 }, v6 = { .family = 6 };

	base_cfg(&c, NULL);
	c.ops.ctx = &cp;
	c.ops.tx_alloc = cap_alloc;
	c.ops.tx_send = cap_send;
	struct tcp_stack *st = tcp_create(&c);
	assert_non_null(st);
	inet_pton(AF_INET, "198.18.0.2", peer.a);
	inet_pton(AF_INET, "198.19.9.9", far.a);
	assert_int_equal(tcp_neigh_resolve(st, &peer, 1000), -EAGAIN);
	assert_int_equal(cp.n, 1);
	/* broadcast ARP request (op 1) for 198.18.0.2 from our MAC and IP */
	assert_memory_equal(cp.f[0], ((const uint8_t[6]){ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }), 6);
	assert_int_equal(cp.f[0][12], 0x08);
	assert_int_equal(cp.f[0][13], 0x06);
	assert_int_equal(cp.f[0][14 + 7], 1);
	assert_memory_equal(cp.f[0] + 14 + 24, peer.a, 4);
	assert_int_equal(tcp_neigh_resolve(st, &peer, 2000), -EAGAIN);
	assert_int_equal(cp.n, 1);                  /* no second request yet */
	uint8_t f[60] = { 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x06,
	                  0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 2, 198, 18, 0, 2,
	                  2, 0, 0, 0, 0, 1, 198, 18, 0, 1 };
	struct tcp_buf b = { .data = f, .len = 60 };
	tcp_input(st, &b, 3000);
	assert_int_equal(tcp_neigh_resolve(st, &peer, 4000), 0);
	assert_int_equal(cp.n, 1);
	assert_int_equal(tcp_neigh_resolve(st, &far, 4000), -ENETUNREACH);
	assert_int_equal(tcp_neigh_resolve(st, &v6, 4000), -EAFNOSUPPORT);
	assert_int_equal(tcp_neigh_resolve(st, NULL, 4000), -EINVAL);
	tcp_destroy(st);
}

static void test_vlan_tagged_arp(void **state)
{
	struct cap cp = { .n = 0 };
	struct tcp_stack *st = cap_stack(&cp, 5, 0);
	uint8_t f[64] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 0x05, 0x08, 0x06,
	                  0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1 };
	struct tcp_buf b = { .data = f, .len = 64 };
	tcp_input(st, &b, 1000);
	assert_int_equal(cp.n, 1);
	/* reply carries the same 802.1Q tag and is an ARP reply */
	assert_int_equal(cp.f[0][12], 0x81);
	assert_int_equal(cp.f[0][13], 0x00);
	assert_int_equal(cp.f[0][15], 5);
	assert_int_equal(cp.f[0][16], 0x08);
	assert_int_equal(cp.f[0][17], 0x06);
	assert_int_equal(cp.f[0][18 + 7], 2);
	/* the wrong VLAN and untagged frames are dropped */
	f[15] = 6;
	tcp_input(st, &b, 1000);
	struct tcp_stats s;
	tcp_stats_get(st, &s);
	assert_int_equal(s.drops[TCP_DROP_VLAN], 1);
	assert_int_equal(cp.n, 1);
	tcp_destroy(st);
}

static uint16_t fold_sum(const uint8_t *p, size_t n, uint32_t s)
{
	return (uint16_t)~csum16(p, n, s);
}

static void test_checksum_offload(void **state)
{
	struct cap cp = { .n = 0 };
	struct tcp_stack *st = cap_stack(&cp, 0, 1);
	struct tcp_addr a = { .family = 4 };
	inet_pton(AF_INET, "198.18.0.2", a.a);
	assert_non_null(tcp_connect(st, &a, 25, 4000, 1000));
	assert_int_equal(cp.n, 1);
	const uint8_t *ip = cp.f[0] + 14, *th = ip + 20;
	/* IPv4 header checksum left 0 for the port, TCP field holds the
	 * pseudo-header sum (DPDK convention), metadata says so */
	assert_int_equal(ip[10] | ip[11], 0);
	assert_true(cp.meta[0].flags & TCP_TX_IP_CSUM);
	assert_true(cp.meta[0].flags & TCP_TX_L4_CSUM);
	assert_int_equal(cp.meta[0].l2_len, 14);
	assert_int_equal(cp.meta[0].l3_len, 20);
	uint32_t l4 = cp.len[0] - 34;
	assert_int_equal(cp.meta[0].l4_len, l4);
	uint32_t ps = 6 + l4;
	for (int k = 12; k < 20; k += 2)
		ps += (uint32_t)(ip[k] << 8 | ip[k + 1]);
	uint16_t got = (uint16_t)(th[16] << 8 | th[17]);
	assert_int_equal(got, fold_sum((const uint8_t *)"", 0, ps));
	tcp_destroy(st);

	/* rx: a frame marked L4_CSUM_OK skips verification; unmarked with a
	 * bad checksum is dropped */
	memset(&cp, 0, sizeof(cp));
	st = cap_stack(&cp, 0, 0);
	tcp_listen(st, 80);
	uint8_t f[54] = { 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0,
	                  0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1,
	                  0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0xde, 0xad, 0, 0 };
	uint16_t ic = csum16(f + 14, 20, 0);
	f[24] = (uint8_t)(ic >> 8);
	f[25] = (uint8_t)ic;
	struct tcp_buf b = { .data = f, .len = 54 };
	tcp_input(st, &b, 1000);
	struct tcp_stats s;
	tcp_stats_get(st, &s);
	assert_int_equal(s.drops[TCP_DROP_TCP_CSUM], 1);
	assert_int_equal(cp.n, 0);
	b.rx_flags = TCP_RX_L3_CSUM_OK | TCP_RX_L4_CSUM_OK;
	tcp_input(st, &b, 1000);
	assert_int_equal(cp.n, 1);            /* SYN-ACK */
	assert_int_equal(cp.f[0][14 + 20 + 13], 0x12);
	tcp_destroy(st);
}

/* ---- neighbour table under a spoofed on-link SYN flood ---- */

static const uint8_t us_mac[6] = { 2, 0, 0, 0, 0, 1 };

static void host_mac(unsigned h, uint8_t mac[6])
{
	memcpy(mac, (const uint8_t[6]){ 2, 0, 0, 0, 1, 0 }, 6);
	mac[5] = (uint8_t)h;
}

/* ARP who-has 198.18.0.1 from 198.18.0.h (a real host resolving us). */
static void arp_from(struct tcp_stack *st, unsigned h, uint64_t now)
{
	uint8_t f[60] = { 0 }, mac[6];
	host_mac(h, mac);
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 8; f[13] = 6;
	memcpy(f + 14, (const uint8_t[8]){ 0, 1, 8, 0, 6, 4, 0, 1 }, 8);
	memcpy(f + 22, mac, 6);
	memcpy(f + 28, (const uint8_t[4]){ 198, 18, 0, (uint8_t)h }, 4);
	memcpy(f + 38, (const uint8_t[4]){ 198, 18, 0, 1 }, 4);
	struct tcp_buf b = { .data = f, .len = 60 };
	tcp_input(st, &b, now);
}

/* SYN to port 25 from 198.18.0.h (h >= 256: a forged 198.18.x.y source). */
static void syn_from(struct tcp_stack *st, unsigned h, uint16_t sport, uint64_t now)
{
	uint8_t f[54] = { 0 }, mac[6];
	host_mac(h & 0xff, mac);
	memcpy(f, us_mac, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 8;
	uint8_t *ip = f + 14, *th = ip + 20;
	ip[0] = 0x45; ip[3] = 40; ip[8] = 64; ip[9] = 6;
	memcpy(ip + 12, (const uint8_t[4]){ 198, 18, (uint8_t)(h >> 8), (uint8_t)h }, 4);
	memcpy(ip + 16, (const uint8_t[4]){ 198, 18, 0, 1 }, 4);
	th[0] = (uint8_t)(sport >> 8); th[1] = (uint8_t)sport;
	th[3] = 25;
	th[7] = 1;
	th[12] = 0x50; th[13] = 0x02; th[14] = 0xff; th[15] = 0xff;
	struct tcp_buf b = { .data = f, .len = 54,
	                     .rx_flags = TCP_RX_L3_CSUM_OK | TCP_RX_L4_CSUM_OK };
	tcp_input(st, &b, now);
}

/* After a SYN from host h: the stack answered with a SYN-ACK straight to
 * h's MAC (its neighbour entry survived), not with an ARP request. */
static void assert_synack_to(struct cap *cp, unsigned h)
{
	uint8_t mac[6];
	host_mac(h, mac);
	assert_int_equal(cp->n, 1);
	assert_memory_equal(cp->f[0], mac, 6);
	assert_int_equal(cp->f[0][12], 8);
	assert_int_equal(cp->f[0][13], 0);
	assert_int_equal(cp->f[0][14 + 20 + 13], 0x12);
}

static void test_neigh_spoofed_flood(void **state)
{
	struct cap cp = { .n = 0 };
	struct tcp_config c;
	base_cfg(&c, NULL);
	c.ops.ctx = &cp;
	c.ops.tx_alloc = cap_alloc;
	c.ops.tx_send = cap_send;
	c.neigh_size = 8;
	inet_pton(AF_INET, "255.254.0.0", &c.ip4_mask);   /* forged sources on-link */
	c.max_conns = 64;
	struct tcp_stack *st = tcp_create(&c);
	assert_non_null(st);
	assert_int_equal(tcp_listen(st, 25), 0);
	uint64_t now = 1000000000ULL;

	/* five real hosts resolve us and connect: five resolved entries */
	for (unsigned h = 2; h <= 6; h++) {
		cp.n = 0;
		arp_from(st, h, now);
		cp.n = 0;
		syn_from(st, h, 40000, now);
		assert_synack_to(&cp, h);
	}
	/* 2,000 SYNs from forged on-link sources, none of which answers ARP:
	 * each SYN-ACK (or cookie) waits on an ARP request */
	unsigned arps = 0;
	for (unsigned i = 0; i < 2000; i++) {
		cp.n = 0;
		now += 1000000;   /* 1 ms: 1,000 SYNs/s, housekeeping runs */
		syn_from(st, 256 + i, (uint16_t)(1000 + i), now);
		for (unsigned k = 0; k < cp.n; k++)
			arps += cp.f[k][12] == 8 && cp.f[k][13] == 6;
	}
	assert_true(arps >= 1000);   /* forged sources are still probed */
	/* every real host keeps its MAC right after the flood */
	for (unsigned h = 2; h <= 6; h++) {
		cp.n = 0;
		syn_from(st, h, 40001, now);
		assert_synack_to(&cp, h);
	}
	/* a newcomer that ARPs for us gets an entry although the table is
	 * full (it takes the oldest unresolved one), and is answered */
	cp.n = 0;
	arp_from(st, 7, now);
	assert_int_equal(cp.n, 1);   /* our ARP reply */
	cp.n = 0;
	syn_from(st, 7, 40000, now);
	assert_synack_to(&cp, 7);
	struct tcp_stats s;
	tcp_stats_get(st, &s);
	assert_true(s.neigh_evicted >= 1000);
	assert_int_equal(s.drops[TCP_DROP_NEIGH_FULL], 0);
	/* cookies engaged at a quarter of the table: no more half-open state */
	assert_true(s.conns_active <= 6 + 64 / 4);
	assert_true(s.syncookies_sent >= 2000 - 64 / 4);
	tcp_destroy(st);
}

static uint32_t syn_seq(struct cap *cp, unsigned i)
{
	const uint8_t *th = cp->f[i] + 34;
	return (uint32_t)th[4] << 24 | th[5] << 16 | th[6] << 8 | th[7];
}

static void test_isn_rfc6528(void **state)
{
	struct cap cp = { .n = 0 };
	struct tcp_stack *st = cap_stack(&cp, 0, 0);
	struct tcp_addr a = { .family = 4 };
	inet_pton(AF_INET, "198.18.0.2", a.a);
	uint64_t t0 = 5000000000ULL;
	struct tcp_conn *c = tcp_connect(st, &a, 25, 4000, t0);
	tcp_abort(c);
	c = tcp_connect(st, &a, 25, 4000, t0 + 1000000000ULL);      /* same tuple, +1 s */
	tcp_abort(c);
	c = tcp_connect(st, &a, 25, 4001, t0 + 1000000000ULL);      /* other tuple */
	tcp_abort(c);
	assert_int_equal(cp.n, 3);
	/* M: the 4 us clock moves the ISN by 250000 per second for a tuple */
	assert_int_equal(syn_seq(&cp, 1) - syn_seq(&cp, 0), 250000);
	/* F: another tuple gets an unrelated offset */
	uint32_t d = syn_seq(&cp, 2) - syn_seq(&cp, 1);
	assert_true(d > 1000000 && d < 0xfff00000u);
	tcp_destroy(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_rejects_bad_config),
		cmocka_unit_test(test_neigh_resolve),
		cmocka_unit_test(test_listen_and_connect_errors),
		cmocka_unit_test(test_conn_state_budget),
		cmocka_unit_test(test_xfer_clean),
		cmocka_unit_test(test_xfer_impaired),
		cmocka_unit_test(test_syn_flood_memory_flat),
		cmocka_unit_test(test_vlan_tagged_arp),
		cmocka_unit_test(test_neigh_spoofed_flood),
		cmocka_unit_test(test_checksum_offload),
		cmocka_unit_test(test_isn_rfc6528),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
