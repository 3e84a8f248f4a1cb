/* Interop harness: runs the tcp/ stack on a TAP device so the Linux kernel's
 * TCP is the peer, with seeded loss, duplication and reordering injected in
 * both directions.
 *
 *   tcp_tap --tap NAME --mode listen|connect --bytes N [--v6]
 *           [--loss PPM] [--dup PPM] [--reorder PPM] [--seed S] [--timeout SEC]
 *
 * Addresses: the stack is 198.18.0.2/24 (2001:db8::2/64), the kernel side of
 * the TAP is 198.18.0.1 (2001:db8::1). Protocol of one transfer (port 5001
 * for listen mode, where the kernel connects; kernel port 5002 for connect
 * mode): the initiator sends N bytes of pattern(0) and shuts down its write
 * side; the acceptor checks them, answers with N bytes of pattern(1) and
 * closes; the initiator checks those. pattern(d)[i] is defined in peer.py
 * and below. Exit 0 when everything arrived byte-exact; otherwise a
 * message with the seed on stderr and exit 1. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

#include "tcp.h"

#define POOL 8192
#define FRAME 2048
#define DELAYQ 256

struct frame {
	struct tcp_buf buf;
	struct frame *next;
	uint32_t len;
	uint8_t d[FRAME];
};

struct delayed {
	uint64_t due;
	struct frame *f;
	int to_kernel;
};

static struct frame *pool, *free_list;
static int tapfd = -1;
static uint64_t rng;
static unsigned loss_ppm, dup_ppm, reorder_ppm;
static struct delayed dq[DELAYQ];
static unsigned dqn;
static uint64_t now_ns, stat_lost, stat_dup, stat_reord, stat_nobuf;
static struct tcp_stack *st;

static uint64_t mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ULL;
}

static int chance(unsigned ppm)
{
	return ppm && rnd() % 1000000 < ppm;
}

static uint8_t pattern(int dir, uint64_t i)
{
	return (uint8_t)(((i ^ (i >> 8) ^ (i >> 16)) * 131 + 7 + (uint64_t)dir * 101) & 0xff);
}

static struct frame *fget(void)
{
	struct frame *f = free_list;
	if (f)
		free_list = f->next;
	else
		stat_nobuf++;
	return f;
}

static void fput(struct frame *f)
{
	f->next = free_list;
	free_list = f;
}

static void rel(struct tcp_buf *b)
{
	fput(b->opaque);
}

static void to_stack(struct frame *f)
{
	memset(&f->buf, 0, sizeof(f->buf));
	f->buf.data = f->d;
	f->buf.len = f->len;
	f->buf.release = rel;
	f->buf.opaque = f;
	tcp_input(st, &f->buf, now_ns);
}

static void to_kernel(struct frame *f)
{
	if (write(tapfd, f->d, f->len) < 0 && errno != EAGAIN)
		perror("tap write");
	fput(f);
}

static void deliver(struct frame *f, int kernel)
{
	if (kernel)
		to_kernel(f);
	else
		to_stack(f);
}

/* Impairment stage shared by both directions. */
static void impair(struct frame *f, int kernel)
{
	if (chance(loss_ppm)) {
		stat_lost++;
		fput(f);
		return;
	}
	if (chance(dup_ppm)) {
		struct frame *c = fget();
		if (c) {
			memcpy(c->d, f->d, f->len);
			c->len = f->len;
			stat_dup++;
			deliver(c, kernel);
		}
	}
	if (chance(reorder_ppm) && dqn < DELAYQ) {
		/* hold it back 0.5-2.5 ms so later frames overtake it */
		stat_reord++;
		dq[dqn].due = now_ns + 500000 + rnd() % 2000000;
		dq[dqn].f = f;
		dq[dqn].to_kernel = kernel;
		dqn++;
		return;
	}
	deliver(f, kernel);
}

static void run_delayed(void)
{
	for (unsigned i = 0; i < dqn;) {
		if (dq[i].due <= now_ns) {
			struct delayed d = dq[i];
			dq[i] = dq[--dqn];
			deliver(d.f, d.to_kernel);
		} else {
			i++;
		}
	}
}

static uint8_t *tx_alloc(void *ctx, uint32_t len, void **h)
{
	struct frame *f = len <= FRAME ? fget() : NULL;
	*h = f;
	return f ? f->d : NULL;
}

static void tx_send(void *ctx, void *h, uint32_t len, const struct tcp_txmeta *m)
{
	struct frame *f = h;
	f->len = len;
	impair(f, 1);
}

static int tap_open(const char *name)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		perror("/dev/net/tun");
		return -1;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		perror("TUNSETIFF");
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	const char *tap = NULL, *mode = "listen";
	uint64_t bytes = 1000, seed = 1;
	int v6 = 0;
	unsigned timeout = 60;
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		if (!strcmp(k, "--tap")) tap = v;
		else if (!strcmp(k, "--mode")) mode = v;
		else if (!strcmp(k, "--bytes")) bytes = strtoull(v, NULL, 0);
		else if (!strcmp(k, "--loss")) loss_ppm = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--dup")) dup_ppm = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--reorder")) reorder_ppm = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--seed")) seed = strtoull(v, NULL, 0);
		else if (!strcmp(k, "--timeout")) timeout = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--v6")) v6 = atoi(v);
		else {
			fprintf(stderr, "unknown option %s\n", k);
			return 2;
		}
	}
	if (!tap) {
		fprintf(stderr, "usage: %s --tap NAME [--mode listen|connect] [--bytes N] ...\n", argv[0]);
		return 2;
	}
	rng = seed * 0x9E3779B97F4A7C15ULL + 7;
	pool = calloc(POOL, sizeof(*pool));
	if (!pool)
		return 2;
	for (unsigned i = 0; i < POOL; i++)
		fput(&pool[i]);
	tapfd = tap_open(tap);
	if (tapfd < 0)
		return 2;

	struct tcp_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	uint8_t mac[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x02 };
	memcpy(cfg.mac, mac, 6);
	inet_pton(AF_INET, "198.18.0.2", &cfg.ip4);
	inet_pton(AF_INET, "255.255.255.0", &cfg.ip4_mask);
	inet_pton(AF_INET6, "2001:db8::2", cfg.ip6);
	cfg.ip6_prefixlen = 64;
	cfg.max_conns = 64;
	cfg.sndbuf = 1 << 20;
	cfg.rcvbuf = 1 << 20;
	cfg.tx_chunks = 1024;
	cfg.rx_segs = 4096;
	cfg.ooo_max_segs = 512;
	cfg.ops.tx_alloc = tx_alloc;
	cfg.ops.tx_send = tx_send;
	st = tcp_create(&cfg);
	if (!st) {
		perror("tcp_create");
		return 2;
	}

	struct tcp_conn *c = NULL;
	int initiator = !strcmp(mode, "connect");
	if (!initiator)
		tcp_listen(st, 5001);
	uint64_t start = mono(), deadline = start + (uint64_t)timeout * 1000000000ULL;
	uint64_t rcvd = 0, sent = 0, connect_at = start + 200000000ULL;
	int phase_send = initiator, done = 0, bad = 0, eof = 0, shut = 0, closed_err = 0;
	uint8_t buf[65536];

	while (!done) {
		now_ns = mono();
		if (now_ns > deadline)
			break;
		if (initiator && !c && now_ns >= connect_at) {
			struct tcp_addr a = { .family = (uint8_t)(v6 ? 6 : 4) };
			inet_pton(v6 ? AF_INET6 : AF_INET, v6 ? "2001:db8::1" : "198.18.0.1", a.a);
			c = tcp_connect(st, &a, 5002, 0, now_ns);
			if (!c) {
				perror("tcp_connect");
				break;
			}
		}
		struct pollfd p = { .fd = tapfd, .events = POLLIN };
		poll(&p, 1, dqn ? 0 : 1);
		now_ns = mono();
		for (int k = 0; k < 256; k++) {
			struct frame *f = fget();
			if (!f)
				break;
			ssize_t n = read(tapfd, f->d, FRAME);
			if (n <= 0) {
				fput(f);
				break;
			}
			f->len = (uint32_t)n;
			impair(f, 0);
		}
		run_delayed();
		tcp_service(st, now_ns);

		struct tcp_event ev[16];
		unsigned n;
		while ((n = tcp_events(st, ev, 16)) > 0) {
			for (unsigned i = 0; i < n; i++) {
				if ((ev[i].events & TCP_EV_ACCEPT) && !c)
					c = ev[i].conn;
				else if (ev[i].events & TCP_EV_ACCEPT)
					tcp_abort(ev[i].conn);
				if ((ev[i].events & TCP_EV_CLOSED) && ev[i].conn == c)
					closed_err = ev[i].error ? ev[i].error : -1;
			}
		}
		if (c && closed_err <= 0) {
			/* receive side: verify */
			size_t got;
			while ((got = tcp_recv(c, buf, sizeof(buf))) > 0) {
				for (size_t i = 0; i < got; i++)
					if (buf[i] != pattern(initiator ? 1 : 0, rcvd + i) && !bad) {
						fprintf(stderr, "byte %" PRIu64 " differs\n", rcvd + i);
						bad = 1;
					}
				rcvd += got;
			}
			if (tcp_recv_eof(c))
				eof = 1;
			/* acceptor answers once it has everything and the EOF */
			if (!initiator && eof && rcvd == bytes)
				phase_send = 1;
			if (phase_send && sent < bytes) {
				for (;;) {
					size_t want = bytes - sent < sizeof(buf) ? (size_t)(bytes - sent) : sizeof(buf);
					if (!want)
						break;
					for (size_t i = 0; i < want; i++)
						buf[i] = pattern(initiator ? 0 : 1, sent + i);
					long r = tcp_send(c, buf, want);
					if (r <= 0)
						break;
					sent += (uint64_t)r;
				}
			}
			if (phase_send && sent == bytes && !shut) {
				tcp_shutdown(c);
				shut = 1;
			}
			if (initiator && eof && rcvd == bytes)
				done = 1;
			if (!initiator && shut) {
				struct tcp_conn_info in;
				tcp_conn_get_info(c, &in);
				if (in.snd_queued == 0 && (in.state == TCP_TIME_WAIT || in.state == TCP_CLOSED ||
				                           in.state == TCP_FIN_WAIT_2 || in.state == TCP_CLOSING))
					done = 1;
			}
		}
		if (initiator && closed_err == ECONNREFUSED && rcvd == 0 && sent == 0) {
			/* the kernel-side server is not listening yet: retry */
			tcp_close(c);
			c = NULL;
			closed_err = 0;
			connect_at = now_ns + 100000000ULL;
		}
		if (bad || closed_err > 0)
			break;
		tcp_service(st, now_ns);
	}
	double secs = (double)(mono() - start) / 1e9;
	struct tcp_stats s;
	tcp_stats_get(st, &s);
	int ok = done && !bad && rcvd == bytes && sent == bytes;
	fprintf(ok ? stdout : stderr,
	        "%s: mode %s v%d bytes %" PRIu64 " loss %u dup %u reorder %u seed %" PRIu64
	        ": rcvd %" PRIu64 " sent %" PRIu64 " in %.2f s; injected lost %" PRIu64 " dup %" PRIu64
	        " reordered %" PRIu64 "; stack retransmits %" PRIu64 " rto %" PRIu64 " fast %" PRIu64
	        "%s%s\n",
	        ok ? "ok" : "FAIL", mode, v6 ? 6 : 4, bytes, loss_ppm, dup_ppm, reorder_ppm, seed,
	        rcvd, sent, secs, stat_lost, stat_dup, stat_reord, s.retransmits, s.rto_fired,
	        s.fast_retransmits, bad ? " (data mismatch)" : "",
	        closed_err > 0 ? " (connection reset/timed out)" : "");
	if (c)
		tcp_close(c);
	/* linger briefly so the last ACKs/FIN reach the kernel */
	uint64_t end = mono() + 100000000ULL;
	while ((now_ns = mono()) < end) {
		struct frame *f = fget();
		if (f) {
			ssize_t n = read(tapfd, f->d, FRAME);
			if (n > 0) {
				f->len = (uint32_t)n;
				to_stack(f);
			} else {
				fput(f);
			}
		}
		tcp_service(st, now_ns);
		usleep(1000);
	}
	tcp_destroy(st);
	close(tapfd);
	free(pool);
	return ok ? 0 : 1;
}
