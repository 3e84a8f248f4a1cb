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
};

#define DP_DEFAULT_CONTROL "/run/mxedge/control.sock"

/* Per-lcore counters; each worker writes only its own slot. */
struct dp_lcore_stats {
	uint64_t rx_packets;
	uint64_t rx_bytes;
	uint64_t rx_bursts;
	uint64_t tx_packets;
} __attribute__((aligned(64)));

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
