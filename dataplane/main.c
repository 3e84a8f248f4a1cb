/*
 * main.c - the mxedge dataplane process.
 *
 * Brings up DPDK (EAL, one port, one RX/TX queue pair per worker lcore, or
 * fewer queues than workers) and runs the worker loops until SIGINT/SIGTERM
 * or --duration. With an edge address (--addr or listen:) each worker runs
 * the userspace TCP stack, the SMTP engine and its own spool writer
 * (dp_worker.c); without one the queues' workers only receive and count
 * frames (port bring-up checks). With several workers, flows are kept on
 * their lcore by the NIC (RSS: symmetric key, RETA programmed and read
 * back here) or by software hand-off over rte_rings (dp_flow.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
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
#include <rte_ring.h>

#include <arpa/inet.h>
#include <sys/stat.h>

#include "dp.h"
#include "elog.h"
#include "kio.h"
#include "spool.h"
#include "tcp.h"

#define RX_DESC 1024
#define TX_DESC 1024
#define BURST 32
#define MBUF_CACHE 256
/* Spool ring per writer; the workers' backpressure needs its size. */
#define SPOOL_RING_BYTES (8u << 20)
/* Hand-off rings between workers (frames), power of two. */
#define HANDOFF_RING 2048
#define RETA_MAX RTE_ETH_RSS_RETA_SIZE_512

static volatile int stop_requested;
/* Accepted domains configured (RCPT accepts every domain while it is 0);
 * written by the main lcore, read by the workers. */
static volatile unsigned domain_count;
static struct dp_lcore_stats lcore_stats[RTE_MAX_LCORE];

struct worker {
	uint16_t port;
	uint16_t queue;
	bool has_queue;
	struct dp_worker *dp;   /* NULL: count frames only */
};
static struct worker workers[RTE_MAX_LCORE];
/* Flow owner per hash bucket (software RETA, or the port's RETA). */
static uint8_t owner_of[RETA_MAX];
static unsigned owner_n;
static struct rte_ring *inbox[DP_MAX_WORKERS];
static struct rte_ring *tx_rings[DP_MAX_WORKERS];
static unsigned workers_live;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* The reception log (elog.h). SIGHUP reopens its file for logrotate and
 * reloads the configuration, as operators expect of a mail daemon. */
static struct elog *mail_log;

static void on_hup(int sig)
{
	(void)sig;
	elog_reopen(mail_log);
	dp_admin_sighup();
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

/* The RSS configuration the port gets before it starts: our symmetric key
 * (0x6d5a repeated to the port's key length) over the TCP 4-tuple. */
static int rss_conf_fill(const struct rte_eth_dev_info *info,
			 struct rte_eth_conf *conf, uint8_t *key)
{
	unsigned klen = info->hash_key_size ? info->hash_key_size : DP_RSS_KEY_LEN, i;
	uint64_t want = RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_NONFRAG_IPV6_TCP;

	if (klen < DP_RSS_KEY_LEN || (info->flow_type_rss_offloads &
				      RTE_ETH_RSS_NONFRAG_IPV4_TCP) == 0) {
		fprintf(stderr, "mxedge: port (driver %s) cannot hash TCP flows with "
			"a %u-byte key (key size %u, hash types 0x%" PRIx64 "); use "
			"--dispatch software\n", info->driver_name, DP_RSS_KEY_LEN,
			info->hash_key_size, info->flow_type_rss_offloads);
		return -EINVAL;
	}
	for (i = 0; i < klen; i++)
		key[i] = dp_rss_key[i % 2];
	conf->rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
	conf->rx_adv_conf.rss_conf.rss_key = key;
	conf->rx_adv_conf.rss_conf.rss_key_len = (uint8_t)klen;
	conf->rx_adv_conf.rss_conf.rss_hf = want & info->flow_type_rss_offloads;
	if (info->rx_offload_capa & RTE_ETH_RX_OFFLOAD_RSS_HASH)
		conf->rxmode.offloads |= RTE_ETH_RX_OFFLOAD_RSS_HASH;
	return 0;
}

/* Programs the RETA (entry i -> queue i % nq), reads it and the hash key
 * back and refuses to run on any difference: a flow the NIC steers to one
 * queue must be owned by that queue's lcore (DESIGN.md hot-path rules). */
static int rss_program(uint16_t port, const struct rte_eth_dev_info *info,
		       unsigned nq, const uint8_t *key, unsigned klen)
{
	struct rte_eth_rss_reta_entry64 reta[RETA_MAX / RTE_ETH_RETA_GROUP_SIZE];
	struct rte_eth_rss_conf rc;
	uint8_t back[256];
	unsigned n = info->reta_size, i;
	int err;

	if (n == 0 || n > RETA_MAX || n % RTE_ETH_RETA_GROUP_SIZE) {
		fprintf(stderr, "mxedge: port (driver %s) has a RETA of %u entries; "
			"cannot map %u queues (use --dispatch software)\n",
			info->driver_name, n, nq);
		return -EINVAL;
	}
	memset(reta, 0, sizeof(reta));
	for (i = 0; i < n; i++) {
		reta[i / RTE_ETH_RETA_GROUP_SIZE].mask |= 1ull << (i % RTE_ETH_RETA_GROUP_SIZE);
		reta[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE] =
			(uint16_t)(i % nq);
	}
	err = rte_eth_dev_rss_reta_update(port, reta, (uint16_t)n);
	if (err) {
		fprintf(stderr, "mxedge: programming the RETA (%u entries) failed: %s\n",
			n, rte_strerror(-err));
		return err;
	}
	for (i = 0; i < n / RTE_ETH_RETA_GROUP_SIZE; i++)
		memset(reta[i].reta, 0xff, sizeof(reta[i].reta));
	err = rte_eth_dev_rss_reta_query(port, reta, (uint16_t)n);
	if (err) {
		fprintf(stderr, "mxedge: reading the RETA back failed: %s\n",
			rte_strerror(-err));
		return err;
	}
	for (i = 0; i < n; i++) {
		uint16_t q = reta[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE];

		if (q != i % nq) {
			fprintf(stderr, "mxedge: RETA readback mismatch at entry %u: "
				"programmed queue %u, the port reports %u; refusing to "
				"run with flows on the wrong lcore\n", i, i % nq, q);
			return -EIO;
		}
		owner_of[i] = (uint8_t)q;
	}
	owner_n = n;
	/* Some PMDs take the key only through this call, not from the
	 * configuration at dev_configure: set it explicitly, then check. */
	memset(&rc, 0, sizeof(rc));
	rc.rss_key = (uint8_t *)(uintptr_t)key;
	rc.rss_key_len = (uint8_t)klen;
	rc.rss_hf = (RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_NONFRAG_IPV6_TCP) &
		    info->flow_type_rss_offloads;
	err = rte_eth_dev_rss_hash_update(port, &rc);
	if (err && err != -ENOTSUP) {
		fprintf(stderr, "mxedge: programming the RSS key failed: %s\n",
			rte_strerror(-err));
		return err;
	}
	memset(&rc, 0, sizeof(rc));
	memset(back, 0, sizeof(back));
	rc.rss_key = back;
	rc.rss_key_len = (uint8_t)klen;
	err = rte_eth_dev_rss_hash_conf_get(port, &rc);
	if (err == 0 && (memcmp(back, key, klen) != 0 ||
			 (rc.rss_hf & RTE_ETH_RSS_NONFRAG_IPV4_TCP) == 0)) {
		fprintf(stderr, "mxedge: the port reports another RSS key or hash "
			"types (0x%" PRIx64 ") than programmed; flows would not be "
			"symmetric\n", rc.rss_hf);
		return -EIO;
	}
	if (err && err != -ENOTSUP) {
		fprintf(stderr, "mxedge: reading the RSS key back failed: %s\n",
			rte_strerror(-err));
		return err;
	}
	return 0;
}

static int port_init(uint16_t port, const struct dp_config *cfg,
		     struct rte_mempool *pool, bool rss)
{
	static uint8_t key[256];
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
	if (rss && (rc = rss_conf_fill(&info, &conf, key)) < 0)
		return rc;
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
	if (rss && (rc = rss_program(port, &info, cfg->queues, key,
				     conf.rx_adv_conf.rss_conf.rss_key_len)) != 0) {
		rte_eth_dev_stop(port);
		return rc;
	}
	rte_eth_promiscuous_enable(port);
	rte_eth_macaddr_get(port, &mac);
	printf("mxedge: port %u driver=%s mac=" RTE_ETHER_ADDR_PRT_FMT
	       " queues=%u\n", port, info.driver_name,
	       RTE_ETHER_ADDR_BYTES(&mac), cfg->queues);
	return 0;
}

/* Whether the NIC steers flows (RSS) or the workers hand frames over;
 * prints why when the configuration cannot be mapped. */
static int dispatch_choose(uint16_t port, const struct dp_config *cfg, bool *rss)
{
	struct rte_eth_dev_info info;
	unsigned nw = dp_workers(cfg);
	bool can;

	*rss = false;
	if (nw == 1)
		return 0;
	if (rte_eth_dev_info_get(port, &info))
		return -EINVAL;
	can = cfg->port_kind == DP_PORT_PCI && nw == cfg->queues &&
	      info.reta_size > 0 &&
	      (info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_TCP);
	if (cfg->dispatch == DP_DISPATCH_RSS && !can) {
		fprintf(stderr, "mxedge: --dispatch rss: port %s (driver %s) offers no "
			"RETA with TCP hashing (reta_size=%u, hash types 0x%" PRIx64
			"); use --dispatch software\n", cfg->port_name,
			info.driver_name, info.reta_size, info.flow_type_rss_offloads);
		return -EINVAL;
	}
	*rss = can && cfg->dispatch != DP_DISPATCH_SOFTWARE;
	return 0;
}

/* Rings of the software hand-off, and the software RETA. */
static int rings_create(const struct dp_config *cfg, bool rss)
{
	unsigned nw = dp_workers(cfg), i;
	char name[RTE_RING_NAMESIZE];

	if (!rss) {
		owner_n = DP_SOFT_RETA;
		for (i = 0; i < owner_n; i++)
			owner_of[i] = (uint8_t)(i % nw);
	}
	if (nw == 1)
		return 0;
	for (i = 0; i < nw; i++) {
		snprintf(name, sizeof(name), "mxedge_in%u", i);
		inbox[i] = rte_ring_create(name, HANDOFF_RING, rte_socket_id(),
					   RING_F_SC_DEQ);
		if (inbox[i] == NULL)
			goto fail;
		if (i < cfg->queues && nw > cfg->queues) {
			snprintf(name, sizeof(name), "mxedge_tx%u", i);
			tx_rings[i] = rte_ring_create(name, HANDOFF_RING, rte_socket_id(),
						      RING_F_SC_DEQ);
			if (tx_rings[i] == NULL)
				goto fail;
		}
	}
	return 0;
fail:
	fprintf(stderr, "mxedge: cannot create hand-off ring %s: %s; raise --mem\n",
		name, rte_strerror(rte_errno));
	return -ENOMEM;
}

/* Frees frames left in the rings after the workers stopped, and the rings. */
static void rings_free(void)
{
	void *m;
	unsigned i;

	for (i = 0; i < DP_MAX_WORKERS; i++) {
		if (inbox[i]) {
			while (rte_ring_dequeue(inbox[i], &m) == 0)
				rte_pktmbuf_free(m);
			rte_ring_free(inbox[i]);
			inbox[i] = NULL;
		}
		if (tx_rings[i]) {
			while (rte_ring_dequeue(tx_rings[i], &m) == 0)
				rte_pktmbuf_free(m);
			rte_ring_free(tx_rings[i]);
			tx_rings[i] = NULL;
		}
	}
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

static bool dispatch_rss;

static json_t *admin_status(void *arg)
{
	const struct proc_info *pi = arg;

	return json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:I}", "io", "dpdk",
			 "port", pi->cfg->port_name, "driver", pi->driver,
			 "queues", (int)pi->cfg->queues,
			 "workers", (int)dp_workers(pi->cfg),
			 "dispatch", dp_workers(pi->cfg) == 1 ? "none" :
				     dispatch_rss ? "rss" : "software",
			 "uptime_s",
			 (json_int_t)((mono_ms() - pi->started_ms) / 1000));
}

static uint64_t tcp_drop_sum(const struct dp_lcore_stats *st)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < TCP_DROP__COUNT; i++)
		n += st->tcp_drops[i];
	return n;
}

/* One row of "stats": an lcore's counters (@lc >= 0) or the total. */
static json_t *stats_row(int lc, const struct worker *wk,
			 const struct dp_lcore_stats *st, uint64_t rx_errors)
{
	json_t *o = json_object();

	json_object_set_new(o, "lcore", lc >= 0 ? json_integer(lc) : json_string("total"));
	json_object_set_new(o, "queue", wk && wk->has_queue ?
			    json_integer(wk->queue) : json_null());
#define PUT(k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))
	PUT("rx_packets", st->rx_packets);
	PUT("rx_bytes", st->rx_bytes);
	PUT("tx_packets", st->tx_packets);
	PUT("dispatched", st->dispatched);
	PUT("received", st->received);
	PUT("neigh_copies", st->neigh_copies);
	dp_stats_put(o, st);
	PUT("tcp_conns", st->tcp_conns_active);
	PUT("rx_errors", rx_errors);
	PUT("rx_dropped", st->rx_dropped);
	PUT("tx_dropped", st->tx_dropped);
	PUT("dispatch_full", st->dispatch_full);
	PUT("not_for_us", st->tcp_drops[TCP_DROP_NOT_US]);
	PUT("tcp_drops", tcp_drop_sum(st));
#undef PUT
	return o;
}

/* Adds @src's counters into @dst (the total row). */
static void stats_add(struct dp_lcore_stats *dst, const struct dp_lcore_stats *src)
{
	const uint64_t *s = (const uint64_t *)src;
	uint64_t *d = (uint64_t *)dst;
	size_t i;

	for (i = 0; i < sizeof(*src) / sizeof(uint64_t); i++)
		d[i] += s[i];
}

static json_t *admin_stats(void *arg)
{
	const struct proc_info *pi = arg;
	struct dp_lcore_stats tot;
	struct rte_eth_stats es;
	json_t *arr = json_array();
	bool have_es;
	unsigned lc;

	memset(&tot, 0, sizeof(tot));
	have_es = rte_eth_stats_get(pi->port, &es) == 0;
	RTE_LCORE_FOREACH_WORKER(lc) {
		const struct worker *wk = &workers[lc];
		uint64_t qerr = 0;

		if (!wk->has_queue && wk->dp == NULL)
			continue; /* not one of ours */
		if (have_es && wk->has_queue && wk->queue < RTE_ETHDEV_QUEUE_STAT_CNTRS)
			qerr = es.q_errors[wk->queue];
		json_array_append_new(arr, stats_row((int)lc, wk, &lcore_stats[lc], qerr));
		stats_add(&tot, &lcore_stats[lc]);
	}
	/* The port's own error counters: per queue where the PMD keeps them,
	 * port-wide in the total (input errors + missed + no mbuf). */
	json_array_append_new(arr, stats_row(-1, NULL, &tot, have_es ?
				es.ierrors + es.imissed + es.rx_nombuf : 0));
	return arr;
}

/* "stats view=drops": one row per reason, a column per lcore, the total. */
static json_t *admin_drops(void *arg)
{
	static const struct {
		const char *name;
		size_t off;
	} own[] = {
#define F(n) { #n, offsetof(struct dp_lcore_stats, n) }
		F(rx_dropped), F(tx_dropped), F(dispatch_full), F(sessions_busy),
		F(sessions_client_limit), F(sessions_expired),
		F(clients_blocked), F(rcpt_rejected), F(store_errors),
#undef F
	};
	const struct proc_info *pi = arg;
	struct rte_eth_stats es;
	json_t *arr = json_array();
	unsigned lc, r, nown = sizeof(own) / sizeof(own[0]);
	char col[32], name[64];

	for (r = 0; r < nown + TCP_DROP__COUNT + 3; r++) {
		json_t *o = json_object();
		uint64_t tot = 0;

		if (r < nown)
			snprintf(name, sizeof(name), "%s", own[r].name);
		else if (r < nown + TCP_DROP__COUNT)
			snprintf(name, sizeof(name), "tcp_%s",
				 tcp_drop_reason_name(r - nown));
		else
			snprintf(name, sizeof(name), "port_%s",
				 (const char *[]){ "rx_errors", "rx_missed",
						   "rx_nombuf" }[r - nown - TCP_DROP__COUNT]);
		json_object_set_new(o, "reason", json_string(name));
		RTE_LCORE_FOREACH_WORKER(lc) {
			const struct dp_lcore_stats *st = &lcore_stats[lc];
			uint64_t v;

			if (!workers[lc].has_queue && workers[lc].dp == NULL)
				continue;
			snprintf(col, sizeof(col), "lcore%u", lc);
			if (r >= nown + TCP_DROP__COUNT) {
				json_object_set_new(o, col, json_null());
				continue;
			}
			v = r < nown ? *(const uint64_t *)((const char *)st + own[r].off)
				     : st->tcp_drops[r - nown];
			tot += v;
			json_object_set_new(o, col, json_integer((json_int_t)v));
		}
		if (r >= nown + TCP_DROP__COUNT && rte_eth_stats_get(pi->port, &es) == 0)
			tot = (uint64_t[]){ es.ierrors, es.imissed,
					    es.rx_nombuf }[r - nown - TCP_DROP__COUNT];
		json_object_set_new(o, "total", json_integer((json_int_t)tot));
		json_array_append_new(arr, o);
	}
	return arr;
}

static void print_stats(uint16_t port)
{
	struct rte_eth_stats es;
	uint64_t rx = 0, bytes = 0;
	unsigned lc, i;

	RTE_LCORE_FOREACH_WORKER(lc) {
		const struct dp_lcore_stats *st = &lcore_stats[lc];

		if (!workers[lc].has_queue && workers[lc].dp == NULL)
			continue;
		printf("mxedge: lcore %u rx_packets=%" PRIu64 " rx_bytes=%" PRIu64
		       " rx_bursts=%" PRIu64 " tx_packets=%" PRIu64
		       " tx_dropped=%" PRIu64 " sessions=%" PRIu64
		       " sessions_busy=%" PRIu64 " clients_blocked=%" PRIu64
		       " messages=%" PRIu64 " store_errors=%" PRIu64
		       " rcpt_rejected=%" PRIu64 " dispatched=%" PRIu64
		       " received=%" PRIu64 " dispatch_full=%" PRIu64
		       " sessions_client_limit=%" PRIu64
		       " sessions_expired=%" PRIu64 "\n", lc,
		       st->rx_packets, st->rx_bytes, st->rx_bursts, st->tx_packets,
		       st->tx_dropped, st->sessions, st->sessions_busy,
		       st->clients_blocked, st->messages, st->store_errors,
		       st->rcpt_rejected, st->dispatched, st->received,
		       st->dispatch_full, st->sessions_client_limit,
		       st->sessions_expired);
		if (workers[lc].dp) {
			printf("mxedge: lcore %u tcp_drops=%" PRIu64 "\n", lc,
			       dp_worker_tcp_drops(workers[lc].dp));
			for (i = 0; i < TCP_DROP__COUNT; i++)
				if (st->tcp_drops[i])
					printf("mxedge: lcore %u tcp_drop %s=%" PRIu64 "\n",
					       lc, tcp_drop_reason_name(i), st->tcp_drops[i]);
		}
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
	struct rte_eth_dev_info dinfo;
	struct proc_info pi;
	struct dp_admin adm = { 0 };
	struct spool *spool = NULL;
	bool smtp_on, rss = false;
	unsigned sessions = 0, nw;

	rc = dp_config_parse(&cfg, argc - 1, argv + 1);
	if (rc == 1)
		return EXIT_SUCCESS;
	if (rc < 0) {
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
	if (cfg.io == CFG_IO_KERNEL) {
		/* --io=kernel: Linux sockets, no EAL (dataplane/kio). */
		rc = kio_main(&cfg);
		dp_config_free(&cfg);
		return rc;
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
		if (cfg.port_kind == DP_PORT_AF_XDP && cfg.queues > 1)
			/* The PMD maps queue i to the interface's combined
			 * channel i and refuses more than there are. */
			fprintf(stderr, "mxedge: af_xdp:%s cannot give %u queues: it has "
				"fewer combined channels (ethtool -l %s; a veth has "
				"none); use --queues 1 --workers %u for software "
				"dispatch\n", cfg.port_name, cfg.queues,
				cfg.port_name, dp_workers(&cfg));
		goto out;
	}
	RTE_ETH_FOREACH_DEV(port)
		break;
	/* Refuse what cannot be mapped before any memory is committed. */
	rte_eth_dev_info_get(port, &dinfo);
	if (cfg.queues > dinfo.max_rx_queues || cfg.queues > dinfo.max_tx_queues) {
		fprintf(stderr, "mxedge: port %s (%s) offers %u rx / %u tx queues, "
			"%u asked for\n", cfg.port_name, dinfo.driver_name,
			dinfo.max_rx_queues, dinfo.max_tx_queues, cfg.queues);
		goto out;
	}
	nw = dp_workers(&cfg);
	if (rte_lcore_count() < nw + 1) {
		fprintf(stderr, "mxedge: %u workers need %u lcores, EAL has %u\n",
			nw, nw + 1, rte_lcore_count());
		goto out;
	}
	smtp_on = cfg.ip4 != 0 || cfg.ip6_prefixlen != 0;
	if (!smtp_on)
		nw = cfg.queues; /* counting frames needs no hand-off */
	if (smtp_on) {
		/* limits.max_sessions spread over the workers, each holding
		 * at most limits.sessions_per_lcore (--sessions-per-lcore):
		 * every session, its TCP connection and its mbufs are
		 * preallocated, so this sizes the memory below. */
		sessions = cfg.file.max_sessions / nw;
		if (sessions > cfg.file.sessions_per_lcore)
			sessions = cfg.file.sessions_per_lcore;
		if (sessions == 0)
			sessions = 1;
		if (dispatch_choose(port, &cfg, &rss) < 0)
			goto out;
	}
	/* Enough mbufs to fill every RX and TX ring plus per-lcore caches,
	 * the received frames the TCP stacks may hold (8 per connection) and
	 * full hand-off rings. */
	nb_mbuf = cfg.queues * (RX_DESC + TX_DESC) +
		  nw * (2 * MBUF_CACHE + sessions * 8) +
		  (nw > 1 ? nw * HANDOFF_RING + (nw > cfg.queues ? cfg.queues * HANDOFF_RING : 0) : 0) +
		  1024;
	pool = rte_pktmbuf_pool_create("mxedge_mbufs", nb_mbuf, MBUF_CACHE,
				       (uint16_t)dp_worker_mbuf_priv(),
				       RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
	if (pool == NULL) {
		fprintf(stderr, "mxedge: cannot create mbuf pool (%u mbufs): %s; "
			"raise --mem\n", nb_mbuf, rte_strerror(rte_errno));
		goto out;
	}
	rc = port_init(port, &cfg, pool, rss);
	if (rc) {
		fprintf(stderr, "mxedge: port %s setup failed: %s\n",
			cfg.port_name, rte_strerror(-rc));
		goto out;
	}
	dispatch_rss = rss;
	if (smtp_on && rings_create(&cfg, rss) < 0)
		goto out;
	if (smtp_on && nw > 1)
		printf("mxedge: dispatch %s: %u workers, %u queue(s), %u-entry %s "
		       "RETA, symmetric key 0x6d5a\n", rss ? "rss" : "software", nw,
		       cfg.queues, owner_n, rss ? "port" : "software");

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
			/* The shield guards the port we listen on, not the
			 * compiled-in 25/465/587: the PMD loads the object
			 * itself, so the ports go into its pinned config. */
			rc = shield_ports_set(shield, &cfg.smtp_port, 1);
			if (rc < 0)
				fprintf(stderr, "mxedge: telling the shield our port %u: %s\n",
					cfg.smtp_port, strerror(-rc));
		}
	}
	rte_eth_dev_info_get(port, &dinfo);
	pi = (struct proc_info){ &cfg, port, dinfo.driver_name, mono_ms() };
	/* Lists (into the tables and the shield), domains, saved operator
	 * changes, live knobs and the control socket, before the workers. */
	adm = (struct dp_admin){ .tables = tables, .shield = shield, .now_ms = mono_ms,
				 .status = admin_status, .stats = admin_stats,
				 .drops = admin_drops, .arg = &pi, .ndomains = &domain_count };
	{
		char err[512];

		if (dp_admin_start(&adm, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "mxedge: %s\n", err);
			goto out;
		}
	}
	if (!cfg.state_dir[0] && cfg.control[0])
		printf("mxedge: no state.dir: changes made through the control socket "
		       "last until restart\n");

	if (smtp_on) {
		struct spool_config sc = {
			.dir = cfg.spool_dir, .writers = nw,
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
		mail_log = elog_open(&(struct elog_config){ .path = cfg.log_file,
				     .hostname = cfg.hostname, .rings = nw });
		if (mail_log == NULL || elog_start(mail_log) < 0) {
			fprintf(stderr, "mxedge: log file %s: %s\n",
				cfg.log_file[0] ? cfg.log_file : "(stderr)", strerror(errno));
			goto out;
		}
	}
	workers_live = nw;
	RTE_LCORE_FOREACH_WORKER(lc) {
		if (q == nw)
			break;
		/* Worker q polls queue q; workers beyond the queues borrow
		 * queue q % queues for transmitting and get their frames
		 * from the others' hand-off. */
		workers[lc].port = port;
		workers[lc].has_queue = q < cfg.queues;
		workers[lc].queue = (uint16_t)(q % cfg.queues);
		if (smtp_on) {
			struct dp_worker_params wp = {
				.port = port, .queue = workers[lc].queue,
				.has_queue = workers[lc].has_queue,
				.index = q, .nworkers = nw, .inbox = inbox,
				.tx_ring = tx_rings[q % cfg.queues],
				.owner_of = owner_of, .owner_n = owner_n,
				.rss = rss, .live = &workers_live,
				.pool = pool,
				.cfg = &cfg, .tables = tables,
				.spool = spool_writer(spool, q),
				.spool_ring_bytes = SPOOL_RING_BYTES,
				.max_sessions = sessions, .stop = &stop_requested,
				.ndomains = &domain_count, .stats = &lcore_stats[lc],
				.log = elog_ring(mail_log, q),
			};

			workers[lc].dp = dp_worker_create(&wp);
			if (workers[lc].dp == NULL)
				goto out;
		}
		q++;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_hup);
	q = 0;
	RTE_LCORE_FOREACH_WORKER(lc) {
		if (q == nw)
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
	/* The main lcore supervises: control socket, table expiry, reload. */
	while (!stop_requested) {
		if (deadline && time(NULL) >= deadline) {
			stop_requested = 1;
			break;
		}
		dp_admin_poll(&adm, 100);
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
	elog_close(mail_log); /* after the workers: their last lines */
	spool_close(spool);
	rings_free();
	dp_admin_stop(&adm);
	shield_close(shield);
	tbl_destroy(tables);
	rte_mempool_free(pool);
	rte_eal_cleanup();
	dp_config_free(&cfg);
	return status;
}
