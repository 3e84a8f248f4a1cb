/*
 * main.c - the mxedge dataplane process.
 *
 * Brings up DPDK (EAL, one port, one RX/TX queue pair per worker lcore) and
 * runs the worker loops until SIGINT/SIGTERM or --duration. With an edge
 * address (--addr or listen:) each worker runs the userspace TCP stack, the
 * SMTP engine and its own spool writer (dp_worker.c); without one the
 * workers only receive and count frames (port bring-up checks).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <arpa/inet.h>
#include <sys/stat.h>

#include "dp.h"
#include "spool.h"

#define RX_DESC 1024
#define TX_DESC 1024
#define BURST 32
#define MBUF_CACHE 256
/* Preallocated SMTP sessions per worker lcore (memory: ~9 KiB each). */
#define SESSIONS_PER_LCORE 1024
/* Spool ring per writer; the workers' backpressure needs its size. */
#define SPOOL_RING_BYTES (8u << 20)

static volatile int stop_requested;
/* Accepted domains configured (RCPT accepts every domain while it is 0);
 * written by the main lcore, read by the workers. */
static volatile unsigned domain_count;
static struct dp_lcore_stats lcore_stats[RTE_MAX_LCORE];

struct worker {
	uint16_t port;
	uint16_t queue;
	struct dp_worker *dp;   /* NULL: count frames only */
};
static struct worker workers[RTE_MAX_LCORE];

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* Run-to-completion loop of one worker lcore: no locks, no syscalls. */
static int worker_loop(void *arg)
{
	const struct worker *w = arg;
	struct dp_lcore_stats *st = &lcore_stats[rte_lcore_id()];
	struct rte_mbuf *pkts[BURST];
	uint16_t n, i;

	if (w->dp)
		return dp_worker_run(w->dp);
	while (!stop_requested) {
		n = rte_eth_rx_burst(w->port, w->queue, pkts, BURST);
		if (n == 0)
			continue;
		st->rx_bursts++;
		st->rx_packets += n;
		for (i = 0; i < n; i++)
			st->rx_bytes += rte_pktmbuf_pkt_len(pkts[i]);
		rte_pktmbuf_free_bulk(pkts, n);
	}
	return 0;
}

static int port_init(uint16_t port, const struct dp_config *cfg,
		     struct rte_mempool *pool)
{
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	struct rte_ether_addr mac;
	uint16_t q, nb_rx = RX_DESC, nb_tx = TX_DESC;
	int rc;

	memset(&conf, 0, sizeof(conf));
	rc = rte_eth_dev_info_get(port, &info);
	if (rc)
		return rc;
	if (cfg->queues > info.max_rx_queues || cfg->queues > info.max_tx_queues) {
		fprintf(stderr, "mxedge: port %u (%s) offers %u rx / %u tx queues, "
			"%u asked for\n", port, info.driver_name,
			info.max_rx_queues, info.max_tx_queues, cfg->queues);
		return -EINVAL;
	}
	rc = rte_eth_dev_configure(port, (uint16_t)cfg->queues,
				   (uint16_t)cfg->queues, &conf);
	if (rc)
		return rc;
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rx, &nb_tx);
	if (rc)
		return rc;
	for (q = 0; q < cfg->queues; q++) {
		rc = rte_eth_rx_queue_setup(port, q, nb_rx,
					    rte_eth_dev_socket_id(port), NULL, pool);
		if (rc)
			return rc;
		rc = rte_eth_tx_queue_setup(port, q, nb_tx,
					    rte_eth_dev_socket_id(port), NULL);
		if (rc)
			return rc;
	}
	rc = rte_eth_dev_start(port);
	if (rc)
		return rc;
	rte_eth_promiscuous_enable(port);
	rte_eth_macaddr_get(port, &mac);
	printf("mxedge: port %u driver=%s mac=" RTE_ETHER_ADDR_PRT_FMT
	       " queues=%u\n", port, info.driver_name,
	       RTE_ETHER_ADDR_BYTES(&mac), cfg->queues);
	return 0;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* What the status command reports about this process. */
struct proc_info {
	const struct dp_config *cfg;
	uint16_t port;
	const char *driver;
	uint64_t started_ms;
};

static json_t *admin_status(void *arg)
{
	const struct proc_info *pi = arg;

	return json_pack("{s:s, s:s, s:s, s:i, s:I}", "io", "dpdk",
			 "port", pi->cfg->port_name, "driver", pi->driver,
			 "queues", (int)pi->cfg->queues, "uptime_s",
			 (json_int_t)((mono_ms() - pi->started_ms) / 1000));
}

static json_t *admin_stats(void *arg)
{
	json_t *arr = json_array();
	unsigned lc;

	(void)arg;
	RTE_LCORE_FOREACH_WORKER(lc) {
		const struct dp_lcore_stats *st = &lcore_stats[lc];

		json_array_append_new(arr, json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			"lcore", (int)lc, "rx_packets", (json_int_t)st->rx_packets,
			"rx_bytes", (json_int_t)st->rx_bytes,
			"rx_bursts", (json_int_t)st->rx_bursts,
			"tx_packets", (json_int_t)st->tx_packets,
			"sessions", (json_int_t)st->sessions,
			"messages", (json_int_t)st->messages,
			"clients_blocked", (json_int_t)st->clients_blocked,
			"store_errors", (json_int_t)st->store_errors));
	}
	return arr;
}

/* Creates the socket's directory (e.g. /run/mxedge) when missing. */
static struct ctl_server *control_open(const char *path, struct dp_admin *adm)
{
	const struct ctl_command *cmds;
	char dir[sizeof(((struct dp_config *)0)->control)];
	struct ctl_server *cs;
	char *slash;
	size_t n;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		mkdir(dir, 0750);
	}
	cmds = dp_admin_commands(&n);
	cs = ctl_server_open(path, cmds, n, adm);
	if (cs == NULL)
		fprintf(stderr, "mxedge: control socket %s: %s\n", path, strerror(errno));
	return cs;
}

static int count_domain(const char *d, const struct tbl_domain_policy *pol,
			void *arg)
{
	(void)d;
	(void)pol;
	++*(unsigned *)arg;
	return 0;
}

static void print_stats(uint16_t port)
{
	struct rte_eth_stats es;
	uint64_t rx = 0, bytes = 0;
	unsigned lc;

	RTE_LCORE_FOREACH_WORKER(lc) {
		const struct dp_lcore_stats *st = &lcore_stats[lc];

		printf("mxedge: lcore %u rx_packets=%" PRIu64 " rx_bytes=%" PRIu64
		       " rx_bursts=%" PRIu64 " tx_packets=%" PRIu64
		       " tx_dropped=%" PRIu64 " sessions=%" PRIu64
		       " sessions_busy=%" PRIu64 " clients_blocked=%" PRIu64
		       " messages=%" PRIu64 " store_errors=%" PRIu64
		       " rcpt_rejected=%" PRIu64 "\n", lc, st->rx_packets,
		       st->rx_bytes, st->rx_bursts, st->tx_packets, st->tx_dropped,
		       st->sessions, st->sessions_busy, st->clients_blocked,
		       st->messages, st->store_errors, st->rcpt_rejected);
		if (workers[lc].dp)
			printf("mxedge: lcore %u tcp_drops=%" PRIu64 "\n", lc,
			       dp_worker_tcp_drops(workers[lc].dp));
		rx += lcore_stats[lc].rx_packets;
		bytes += lcore_stats[lc].rx_bytes;
	}
	if (rte_eth_stats_get(port, &es) == 0)
		printf("mxedge: port %u rx_packets=%" PRIu64 " rx_bytes=%" PRIu64
		       " rx_missed=%" PRIu64 " rx_errors=%" PRIu64
		       " rx_nombuf=%" PRIu64 "\n", port, rx, bytes,
		       es.imissed, es.ierrors, es.rx_nombuf);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct dp_config cfg;
	char *eal_argv[64];
	char eal_buf[2048];
	struct rte_mempool *pool = NULL;
	uint16_t port = 0;
	unsigned lc, q = 0, nb_mbuf;
	int eal_argc, rc, status = EXIT_FAILURE;
	time_t deadline;
	struct tbl_set *tables = NULL;
	struct shield *shield = NULL;
	struct ctl_server *cs = NULL;
	struct rte_eth_dev_info dinfo;
	struct proc_info pi;
	struct dp_admin adm;
	uint64_t next_expire = 0;
	struct spool *spool = NULL;
	bool smtp_on;
	unsigned sessions = 0, nd;

	rc = dp_config_parse(&cfg, argc - 1, argv + 1);
	if (rc == 1)
		return EXIT_SUCCESS;
	if (rc < 0) {
		dp_config_free(&cfg);
		return 2;
	}
	if (cfg.have_file && cfg.file.io == CFG_IO_KERNEL) {
		fprintf(stderr, "mxedge: %s: io: kernel is served by mxedge-kio for now; "
			"this binary runs the DPDK dataplane\n", cfg.file.source);
		dp_config_free(&cfg);
		return 2;
	}
	if (cfg.check_only) {
		char err[512];

		tables = tbl_create();
		rc = tables ? dp_tables_load(tables, NULL, &cfg.file, err, sizeof(err)) : -ENOMEM;
		tbl_destroy(tables);
		if (rc < 0)
			fprintf(stderr, "mxedge: %s\n", rc == -ENOMEM ? strerror(ENOMEM) : err);
		else
			printf("%s: ok\n", cfg.file.source);
		dp_config_free(&cfg);
		return rc < 0 ? 1 : EXIT_SUCCESS;
	}
	eal_argc = dp_eal_argv(&cfg, eal_argv, 64, eal_buf, sizeof(eal_buf));
	if (eal_argc < 0) {
		fprintf(stderr, "mxedge: EAL arguments too long\n");
		return 2;
	}
	if (rte_eal_init(eal_argc, eal_argv) < 0) {
		fprintf(stderr, "mxedge: DPDK EAL init failed: %s\n",
			rte_strerror(rte_errno));
		return EXIT_FAILURE;
	}
	if (rte_eth_dev_count_avail() != 1) {
		fprintf(stderr, "mxedge: expected 1 DPDK port, found %u\n",
			rte_eth_dev_count_avail());
		goto out;
	}
	if (rte_lcore_count() < cfg.queues + 1) {
		fprintf(stderr, "mxedge: %u queues need %u lcores, EAL has %u\n",
			cfg.queues, cfg.queues + 1, rte_lcore_count());
		goto out;
	}
	smtp_on = cfg.ip4 != 0 || cfg.ip6_prefixlen != 0;
	if (smtp_on) {
		sessions = cfg.file.max_sessions / cfg.queues;
		if (sessions > SESSIONS_PER_LCORE)
			sessions = SESSIONS_PER_LCORE;
		if (sessions == 0)
			sessions = 1;
	}
	/* Enough mbufs to fill every RX ring plus per-lcore caches, plus the
	 * received frames the TCP stacks may hold (8 per connection). */
	nb_mbuf = cfg.queues * (RX_DESC + TX_DESC + 2 * MBUF_CACHE + sessions * 8) + 1024;
	pool = rte_pktmbuf_pool_create("mxedge_mbufs", nb_mbuf, MBUF_CACHE,
				       (uint16_t)dp_worker_mbuf_priv(),
				       RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
	if (pool == NULL) {
		fprintf(stderr, "mxedge: cannot create mbuf pool (%u mbufs): %s; "
			"raise --mem\n", nb_mbuf, rte_strerror(rte_errno));
		goto out;
	}
	RTE_ETH_FOREACH_DEV(port)
		break;
	rc = port_init(port, &cfg, pool);
	if (rc) {
		fprintf(stderr, "mxedge: port %s setup failed: %s\n",
			cfg.port_name, rte_strerror(-rc));
		goto out;
	}

	tables = tbl_create();
	if (tables == NULL) {
		fprintf(stderr, "mxedge: cannot create policy tables\n");
		goto out;
	}
	if (cfg.port_kind == DP_PORT_AF_XDP && cfg.xdp_prog[0]) {
		/* The PMD loaded our shield and pinned its maps by name under
		 * /sys/fs/bpf; pin them under the shield's own directory too, so
		 * mxedge-shield and the control plane find them in one place. */
		shield = shield_open_pinned("/sys/fs/bpf");
		if (shield == NULL) {
			fprintf(stderr, "mxedge: %s is not the mxedge shield (no pinned "
				"mxedge_* maps: %s); lists stay in the dataplane only\n",
				cfg.xdp_prog, strerror(errno));
		} else {
			rc = shield_pin_maps(shield, SHIELD_PIN_DIR_DEFAULT);
			if (rc < 0)
				fprintf(stderr, "mxedge: pinning shield maps in %s: %s\n",
					SHIELD_PIN_DIR_DEFAULT, strerror(-rc));
			printf("mxedge: XDP shield active on %s\n", cfg.port_name);
			/* Our ARP/NDP/ICMP must reach us, not the kernel. */
			struct shield_cidr own[2] = { { .family = 4, .plen = 32 } };
			size_t nown = cfg.ip4 != 0;

			memcpy(own[0].addr, &cfg.ip4, 4);
			if (cfg.ip6_prefixlen != 0) {
				own[nown] = (struct shield_cidr){ .family = 6, .plen = 128 };
				memcpy(own[nown++].addr, cfg.ip6, 16);
			}
			rc = shield_own_set(shield, own, nown);
			if (rc < 0)
				fprintf(stderr, "mxedge: telling the shield our addresses: %s\n",
					strerror(-rc));
		}
	}
	{
		char err[512];

		if (dp_tables_load(tables, shield, &cfg.file, err, sizeof(err)) < 0) {
			fprintf(stderr, "mxedge: %s\n", err);
			goto out;
		}
	}
	rte_eth_dev_info_get(port, &dinfo);
	pi = (struct proc_info){ &cfg, port, dinfo.driver_name, mono_ms() };
	adm = (struct dp_admin){ tables, shield, mono_ms, admin_status, admin_stats, &pi };
	if (cfg.control[0] && (cs = control_open(cfg.control, &adm)) == NULL)
		goto out;

	if (smtp_on) {
		struct spool_config sc = {
			.dir = cfg.spool_dir, .writers = cfg.queues,
			.segment_bytes = (uint64_t)cfg.file.spool_segment_mb << 20,
			.ring_bytes = SPOOL_RING_BYTES,
		};
		struct spool_recovery rep;

		spool = spool_open(&sc, &rep);
		if (spool == NULL) {
			fprintf(stderr, "mxedge: spool %s: %s\n", cfg.spool_dir,
				strerror(errno));
			goto out;
		}
		printf("mxedge: spool %s: %" PRIu64 " messages, %" PRIu64
		       " incomplete, %" PRIu64 " torn-tail bytes, %u damaged segments\n",
		       cfg.spool_dir, rep.messages, rep.incomplete, rep.torn_bytes,
		       rep.corrupt_segments);
	}
	nd = 0;
	tbl_domain_list(tables, count_domain, &nd);
	domain_count = nd;
	RTE_LCORE_FOREACH_WORKER(lc) {
		if (q == cfg.queues)
			break;
		workers[lc].port = port;
		workers[lc].queue = (uint16_t)q;
		if (smtp_on) {
			struct dp_worker_params wp = {
				.port = port, .queue = (uint16_t)q, .pool = pool,
				.cfg = &cfg, .tables = tables,
				.spool = spool_writer(spool, q),
				.spool_ring_bytes = SPOOL_RING_BYTES,
				.max_sessions = sessions, .stop = &stop_requested,
				.ndomains = &domain_count, .stats = &lcore_stats[lc],
			};

			workers[lc].dp = dp_worker_create(&wp);
			if (workers[lc].dp == NULL)
				goto out;
		}
		q++;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	q = 0;
	RTE_LCORE_FOREACH_WORKER(lc) {
		if (q == cfg.queues)
			break;
		q++;
		rte_eal_remote_launch(worker_loop, &workers[lc], lc);
	}
	if (smtp_on) {
		char a4[INET_ADDRSTRLEN] = "-", a6[INET6_ADDRSTRLEN] = "-";

		if (cfg.ip4)
			inet_ntop(AF_INET, &cfg.ip4, a4, sizeof(a4));
		if (cfg.ip6_prefixlen)
			inet_ntop(AF_INET6, cfg.ip6, a6, sizeof(a6));
		printf("mxedge: SMTP on %s %s port %u as %s, %u sessions per lcore, "
		       "spool %s\n", a4, a6, cfg.smtp_port, cfg.hostname, sessions,
		       cfg.spool_dir);
	}
	printf("mxedge: running on %u worker lcore(s)\n", q);
	fflush(stdout);

	deadline = cfg.duration_s ? time(NULL) + cfg.duration_s : 0;
	/* The main lcore supervises: control socket, table expiry. */
	while (!stop_requested) {
		if (deadline && time(NULL) >= deadline) {
			stop_requested = 1;
			break;
		}
		if (cs)
			ctl_server_poll(cs, 100);
		else
			usleep(100 * 1000);
		if (mono_ms() >= next_expire) {
			dp_admin_expire(&adm);
			next_expire = mono_ms() + 1000;
		}
		nd = 0;
		tbl_domain_list(tables, count_domain, &nd);
		domain_count = nd;
	}
	rte_eal_mp_wait_lcore();
	print_stats(port);
	rte_eth_dev_stop(port);
	rte_eth_dev_close(port);
	status = EXIT_SUCCESS;
out:
	RTE_LCORE_FOREACH_WORKER(lc) {
		dp_worker_destroy(workers[lc].dp);
		workers[lc].dp = NULL;
	}
	spool_close(spool);
	ctl_server_close(cs);
	shield_close(shield);
	tbl_destroy(tables);
	rte_mempool_free(pool);
	rte_eal_cleanup();
	dp_config_free(&cfg);
	return status;
}
