/*
 * dp.h - mxedge dataplane: DPDK environment, ports and lcore loops.
 *
 * The dataplane owns one DPDK port with one RX/TX queue pair per worker
 * lcore. Everything here runs at start-up or on the worker lcores; worker
 * loops never block, never take locks and never exit the process.
 */
#ifndef MXEDGE_DP_H
#define MXEDGE_DP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "ctl.h"
#include "shield.h"
#include "tables.h"

/* Where the port's frames come from (DESIGN.md "Port sources"). */
enum dp_port_kind {
	DP_PORT_AF_XDP,    /* net_af_xdp on a kernel interface (production) */
	DP_PORT_TAP,       /* net_tap: a tap interface the PMD creates */
	DP_PORT_AF_PACKET, /* net_af_packet on a kernel interface */
	DP_PORT_PCI,       /* a PCI NIC bound to vfio-pci */
};

struct dp_config {
	enum cfg_io io;          /* --io / io:; kernel = Linux sockets (kio.h) */
	enum dp_port_kind port_kind;
	char port_name[64];      /* interface name, tap name or PCI address */
	char xdp_prog[256];      /* af_xdp: object for the PMD to load, or "" */
	unsigned queues;         /* RX/TX queue pairs = worker lcores */
	unsigned mem_mb;         /* memory when no hugepages are reserved */
	bool force_no_huge;      /* use --no-huge even if hugepages exist */
	unsigned duration_s;     /* stop by itself after this long; 0 = run */
	char eal_extra[256];     /* extra EAL arguments, space separated */
	char control[108];       /* control socket path ("" = none) */
	bool check_only;         /* --check-config: validate and exit */
	bool have_file;          /* --config given: @file is loaded */
	struct cfg file;         /* the configuration file (docs/CONFIG.md) */
	/* The edge's own addresses on the port (network byte order). With
	 * neither set the workers only receive and count frames. */
	uint32_t ip4, ip4_mask;
	uint8_t ip6[16];
	uint8_t ip6_prefixlen;   /* 0: no IPv6 address */
	uint16_t smtp_port;      /* default 25 */
	char hostname[254];      /* greeting, EHLO, Received: */
	char spool_dir[256];
};

#define DP_DEFAULT_CONTROL "/run/mxedge/control.sock"

/* Per-lcore counters; each worker writes only its own slot. */
struct dp_lcore_stats {
	uint64_t rx_packets;
	uint64_t rx_bytes;
	uint64_t rx_bursts;
	uint64_t tx_packets;
	uint64_t tx_dropped;      /* tx ring full or no mbuf */
	uint64_t rx_dropped;      /* multi-segment frames */
	uint64_t sessions;        /* SMTP sessions started */
	uint64_t sessions_busy;   /* refused with 421: session pool empty */
	uint64_t clients_blocked; /* refused with 554: blocklist */
	uint64_t messages;        /* 250 after the spool made them durable */
	uint64_t store_errors;    /* 451/452: spool failure or full */
	uint64_t rcpt_rejected;   /* 550: domain not accepted */
} __attribute__((aligned(64)));

struct rte_mempool;
struct spool_writer;
struct tcp_stack;
struct dp_worker;

/* What a worker lcore needs; filled by main before launch. */
struct dp_worker_params {
	uint16_t port, queue;
	struct rte_mempool *pool;        /* tx mbufs */
	const struct dp_config *cfg;
	struct tbl_set *tables;
	struct spool_writer *spool;      /* this worker's writer */
	size_t spool_ring_bytes;         /* its ring size (backpressure) */
	unsigned max_sessions;           /* preallocated SMTP sessions */
	const volatile int *stop;        /* set by the signal handler */
	const volatile unsigned *ndomains; /* accepted domains configured */
	struct dp_lcore_stats *stats;
};

/* Bytes of per-mbuf private area the worker needs (a struct tcp_buf). */
size_t dp_worker_mbuf_priv(void);

/*
 * dp_worker_create - preallocate everything one worker lcore needs: TCP
 * stack (listening on cfg->smtp_port), SMTP server and a pool of
 * @p->max_sessions sessions. Call on the main lcore before launch.
 * Returns the worker or NULL with errno set (a message went to stderr).
 * @p is copied. Free with dp_worker_destroy().
 */
struct dp_worker *dp_worker_create(const struct dp_worker_params *p);

/*
 * dp_worker_run - the run-to-completion loop (rte_eal_remote_launch entry,
 * @arg is a struct dp_worker *). Returns 0 once *stop was seen and every
 * session has finished or got 421 (graceful stop).
 */
int dp_worker_run(void *arg);

/* dp_worker_tcp_drops - frames @w's TCP stack dropped (every reason);
 * read it only after the worker's loop returned. */
uint64_t dp_worker_tcp_drops(const struct dp_worker *w);

/* dp_worker_destroy - free @w after its loop returned. NULL is a no-op. */
void dp_worker_destroy(struct dp_worker *w);

/*
 * dp_config_parse - fill @cfg from the command line (argv[0] excluded) and
 * the configuration file named by --config (options given on the command
 * line override the file). Accepts the options described by dp_usage().
 * Returns 0, or -EINVAL after printing a message that names the bad option
 * or FILE:LINE:COLUMN to stderr. A "--help" or "--version" request returns
 * 1 after printing to stdout. Free with dp_config_free().
 */
int dp_config_parse(struct dp_config *cfg, int argc, char **argv);

/* dp_config_free - release what dp_config_parse() allocated. */
void dp_config_free(struct dp_config *cfg);

/*
 * dp_tables_load - put the file's domains, blocklist and allowlist into @t
 * and, if @sh is not NULL, the lists into the XDP shield. A bad entry stops
 * with "FILE:LINE: ..." in @err and -EINVAL.
 */
int dp_tables_load(struct tbl_set *t, struct shield *sh, const struct cfg *c,
		   char *err, size_t errlen);


/* dp_usage - print the command-line help to @f (a FILE *). */
void dp_usage(void *f);

/*
 * dp_eal_argv - build the EAL argument vector for @cfg into @argv (at most
 * @max entries, strings owned by @buf of @buflen bytes). Uses hugepages when
 * the kernel has free ones, else --no-huge with cfg->mem_mb (CI has none).
 * Returns the argument count, or -ENOSPC.
 */
int dp_eal_argv(const struct dp_config *cfg, char **argv, int max,
		char *buf, size_t buflen);

/* dp_hugepages_free - free hugepages the kernel reports (0 if none). */
long dp_hugepages_free(void);

/* Control-socket commands of an edge process (dp_admin.c). */
struct dp_admin {
	struct tbl_set *tables;
	struct shield *shield;         /* XDP maps to mirror lists into, or NULL */
	uint64_t (*now_ms)(void);      /* monotonic clock for TTLs */
	json_t *(*status)(void *arg);  /* process-specific status object */
	json_t *(*stats)(void *arg);   /* per-lcore counters (array) */
	void *arg;
};

/*
 * dp_admin_commands - the command table to serve with ctl_server_open(),
 * with a struct dp_admin * as its ctx: status, stats, shield, blocklist.*,
 * allowlist.*, domain.*. Sets *n to the number of commands. List changes go
 * to the RCU tables and, when adm->shield is set, to the XDP shield's maps
 * too, so a blocked source dies in the driver before it costs an lcore.
 */
const struct ctl_command *dp_admin_commands(size_t *n);

/* dp_admin_expire - drop expired list entries from the tables and the
 * shield (call about once a second from the supervisor loop). */
void dp_admin_expire(struct dp_admin *a);

#endif /* MXEDGE_DP_H */
