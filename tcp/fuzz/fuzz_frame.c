/* libFuzzer harness over frame input (tcp_input) for tcp/.
 *
 * The input is a little program so the fuzzer reaches deep TCP states:
 *   op 0 LEN2 BYTES   raw Ethernet frame as given
 *   op 1 ...          TCP segment from 198.18.0.2:PORT to 198.18.0.1:80,
 *                     fields from the input, checksums filled in:
 *                     flags, port_lo, seq_off(4), ack_off(4), win(2),
 *                     optlen(1) opts, paylen(2)
 *                     (seq relative to a fixed peer ISN, ack relative to the
 *                     stack's last SYN-ACK sequence, so handshakes complete)
 *   op 2 MS           advance the clock by MS milliseconds
 *   op 3 ACT          app action: read all, write, shutdown, close, connect
 *   op 4 ...          like op 1 but IPv6
 * Invariants checked: no crash/UB (sanitizers), every rx buffer released
 * exactly once by tcp_destroy. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "tcp.h"

static uint8_t txbuf[9100];
static uint32_t last_synack_seq[2];
static long bufs_out;

static uint8_t *fz_alloc(void *ctx, uint32_t len, void **h)
{
	*h = txbuf;
	return len <= sizeof(txbuf) ? txbuf : NULL;
}

static void fz_send(void *ctx, void *h, uint32_t len, const struct tcp_txmeta *m)
{
	/* learn the stack's ISS from SYN-ACKs so the input can ACK them */
	uint32_t l2 = 14;
	if (len < l2 + 40)
		return;
	int v6 = txbuf[12] == 0x86;
	uint32_t ipl = v6 ? 40 : 20;
	if (len < l2 + ipl + 20)
		return;
	const uint8_t *th = txbuf + l2 + ipl;
	if ((th[13] & 0x12) == 0x12)
		last_synack_seq[v6] = (uint32_t)th[4] << 24 | th[5] << 16 | th[6] << 8 | th[7];
}

static void rel(struct tcp_buf *b)
{
	bufs_out--;
	free((void *)b->data);
	free(b);
}

static uint16_t csum(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void inject(struct tcp_stack *st, const uint8_t *f, size_t len, uint64_t now)
{
	struct tcp_buf *b = calloc(1, sizeof(*b));
	uint8_t *d = malloc(len ? len : 1);
	if (!b || !d) {
		free(b);
		free(d);
		return;
	}
	memcpy(d, f, len);
	b->data = d;
	b->len = (uint32_t)len;
	b->release = rel;
	bufs_out++;
	tcp_input(st, b, now);
}

struct rd {
	const uint8_t *p;
	size_t n;
};

static int get(struct rd *r, void *out, size_t k)
{
	if (r->n < k)
		return -1;
	memcpy(out, r->p, k);
	r->p += k;
	r->n -= k;
	return 0;
}

static void build_tcp(struct tcp_stack *st, struct rd *r, int v6, uint64_t now)
{
	uint8_t flags, plo, optlen, f[2000];
	uint32_t seqo, acko;
	uint16_t win, paylen;
	if (get(r, &flags, 1) || get(r, &plo, 1) || get(r, &seqo, 4) || get(r, &acko, 4) ||
	    get(r, &win, 2) || get(r, &optlen, 1))
		return;
	optlen = (uint8_t)((optlen % 41) & ~3u);
	uint8_t opts[40];
	if (get(r, opts, optlen) || get(r, &paylen, 2))
		return;
	paylen %= 1400;
	static const uint8_t smac[6] = { 2, 0, 0, 0, 0, 2 }, dmac[6] = { 2, 0, 0, 0, 0, 1 };
	memcpy(f, dmac, 6);
	memcpy(f + 6, smac, 6);
	uint32_t ipl = v6 ? 40 : 20, l4 = 20u + optlen + paylen;
	uint8_t *ip = f + 14, *th = ip + ipl;
	uint8_t src[16], dst[16];
	memset(src, 0, 16);
	memset(dst, 0, 16);
	if (v6) {
		f[12] = 0x86; f[13] = 0xdd;
		inet_pton(AF_INET6, "2001:db8::2", src);
		inet_pton(AF_INET6, "2001:db8::1", dst);
		memset(ip, 0, 40);
		ip[0] = 0x60; ip[4] = (uint8_t)(l4 >> 8); ip[5] = (uint8_t)l4; ip[6] = 6; ip[7] = 64;
		memcpy(ip + 8, src, 16);
		memcpy(ip + 24, dst, 16);
	} else {
		f[12] = 8; f[13] = 0;
		inet_pton(AF_INET, "198.18.0.2", src);
		inet_pton(AF_INET, "198.18.0.1", dst);
		memset(ip, 0, 20);
		ip[0] = 0x45; ip[2] = (uint8_t)((20 + l4) >> 8); ip[3] = (uint8_t)(20 + l4);
		ip[8] = 64; ip[9] = 6;
		memcpy(ip + 12, src, 4);
		memcpy(ip + 16, dst, 4);
		uint16_t c = csum(ip, 20, 0);
		ip[10] = (uint8_t)(c >> 8); ip[11] = (uint8_t)c;
	}
	uint16_t sport = (uint16_t)(40000 + (plo & 3));
	uint32_t seq = 1000000u + seqo, ack = last_synack_seq[v6] + acko;
	th[0] = (uint8_t)(sport >> 8); th[1] = (uint8_t)sport; th[2] = 0; th[3] = 80;
	th[4] = (uint8_t)(seq >> 24); th[5] = (uint8_t)(seq >> 16); th[6] = (uint8_t)(seq >> 8); th[7] = (uint8_t)seq;
	th[8] = (uint8_t)(ack >> 24); th[9] = (uint8_t)(ack >> 16); th[10] = (uint8_t)(ack >> 8); th[11] = (uint8_t)ack;
	th[12] = (uint8_t)(((20 + optlen) / 4) << 4);
	th[13] = flags;
	th[14] = (uint8_t)(win >> 8); th[15] = (uint8_t)win;
	th[16] = th[17] = th[18] = th[19] = 0;
	memcpy(th + 20, opts, optlen);
	for (uint32_t i = 0; i < paylen; i++)
		th[20 + optlen + i] = (uint8_t)(i * 7);
	uint32_t s = 6 + l4;
	for (int i = 0; i < (v6 ? 16 : 4); i += 2)
		s += (uint32_t)(src[i] << 8 | src[i + 1]) + (uint32_t)(dst[i] << 8 | dst[i + 1]);
	uint16_t c = csum(th, l4, s);
	th[16] = (uint8_t)(c >> 8); th[17] = (uint8_t)c;
	inject(st, f, 14 + ipl + l4, now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tcp_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	uint8_t mac[6] = { 2, 0, 0, 0, 0, 1 };
	memcpy(cfg.mac, mac, 6);
	inet_pton(AF_INET, "198.18.0.1", &cfg.ip4);
	inet_pton(AF_INET, "255.255.255.0", &cfg.ip4_mask);
	inet_pton(AF_INET6, "2001:db8::1", cfg.ip6);
	cfg.ip6_prefixlen = 64;
	cfg.max_conns = 8;
	cfg.syn_backlog = 4;
	cfg.rcvbuf = 8192;
	cfg.sndbuf = 8192;
	cfg.rx_segs = 32;
	cfg.tx_chunks = 16;
	cfg.neigh_size = 8;
	cfg.neigh_pending = 4;
	cfg.ooo_max_segs = 8;
	cfg.keepalive_ms = 5000;
	memcpy(cfg.secret, "fuzz-fuzz-fuzz!!", 16);
	cfg.ops.tx_alloc = fz_alloc;
	cfg.ops.tx_send = fz_send;
	struct tcp_stack *st = tcp_create(&cfg);
	if (!st)
		abort();
	tcp_listen(st, 80);
	if (size && (data[0] & 1)) {
		/* half the inputs start with a known peer MAC */
		struct tcp_addr a = { .family = 4 };
		inet_pton(AF_INET, "198.18.0.2", a.a);
		tcp_neigh_add(st, &a, (const uint8_t[6]){ 2, 0, 0, 0, 0, 2 });
		struct tcp_addr b = { .family = 6 };
		inet_pton(AF_INET6, "2001:db8::2", b.a);
		tcp_neigh_add(st, &b, (const uint8_t[6]){ 2, 0, 0, 0, 0, 2 });
	}
	last_synack_seq[0] = last_synack_seq[1] = 0;
	uint64_t now = 1000000000000ULL;
	struct tcp_conn *conns[8];
	unsigned nconns = 0;
	struct rd r = { data, size };
	uint8_t op;
	int steps = 0;
	while (steps++ < 256 && get(&r, &op, 1) == 0) {
		switch (op % 5) {
		case 0: {
			uint16_t len;
			if (get(&r, &len, 2))
				break;
			len %= 1600;
			if (r.n < len)
				len = (uint16_t)r.n;
			inject(st, r.p, len, now);
			r.p += len;
			r.n -= len;
			break;
		}
		case 1:
			build_tcp(st, &r, 0, now);
			break;
		case 4:
			build_tcp(st, &r, 1, now);
			break;
		case 2: {
			uint8_t ms;
			if (get(&r, &ms, 1))
				break;
			/* large jumps sometimes: exercise long timers */
			now += (ms & 0x80) ? (uint64_t)(ms & 0x7f) * 1000000000ULL : (uint64_t)ms * 1000000ULL;
			tcp_service(st, now);
			break;
		}
		case 3: {
			uint8_t act;
			if (get(&r, &act, 1))
				break;
			if ((act & 7) == 4) {
				struct tcp_addr a = { .family = 4 };
				inet_pton(AF_INET, "198.18.0.2", a.a);
				struct tcp_conn *c = tcp_connect(st, &a, 40000, 80, now);
				if (c && nconns < 8)
					conns[nconns++] = c;
				else if (c)
					tcp_abort(c);
				break;
			}
			if (!nconns)
				break;
			unsigned i = (act >> 3) % nconns;
			struct tcp_conn *c = conns[i];
			uint8_t b[32 * 97];
			switch (act & 7) {
			case 0: tcp_recv(c, b, sizeof(b)); break;
			case 1: memset(b, 'x', sizeof(b)); tcp_send(c, b, (size_t)(act >> 3) * 97); break;
			case 2: tcp_shutdown(c); break;
			case 3:
			case 5:
				if ((act & 7) == 3) tcp_close(c); else tcp_abort(c);
				conns[i] = conns[--nconns];
				break;
			default: {
				struct tcp_iov iov[4];
				unsigned k = tcp_recv_peek(c, iov, 4);
				if (k)
					tcp_recv_consume(c, iov[0].len);
			}
			}
			tcp_service(st, now);
			break;
		}
		}
		struct tcp_event ev[8];
		unsigned n;
		while ((n = tcp_events(st, ev, 8)) > 0)
			for (unsigned i = 0; i < n; i++) {
				int known = 0;
				for (unsigned k = 0; k < nconns; k++)
					known |= conns[k] == ev[i].conn;
				if (!known) {
					if (nconns < 8)
						conns[nconns++] = ev[i].conn;
					else
						tcp_abort(ev[i].conn);
				}
			}
	}
	tcp_service(st, now + 600ULL * 1000000000ULL);
	tcp_destroy(st);
	if (bufs_out != 0)
		abort();      /* a held frame was never released */
	return 0;
}
