/*
 * dp.h - mxedge dataplane: DPDK environment, ports and lcore loops.
 *
 * The dataplane owns one DPDK port with up to one RX/TX queue pair per
 * worker lcore; each worker runs its own TCP stack, SMTP sessions and spool
 * writer. Frames reach the lcore that owns their connection through the
 * NIC's RSS (symmetric key, verified RETA) or a software hand-off over
 * rte_rings (dp_flow.c). Everything here runs at start-up or on the worker
 * lcores; worker loops never block, never take locks and never exit the
 * process.
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

/* How frames find the worker lcore that owns their connection. */
enum dp_dispatch {
	DP_DISPATCH_AUTO = 0, /* RSS on PCI ports that offer a RETA, else software */
	DP_DISPATCH_RSS,      /* the NIC: symmetric key + RETA, verified at start */
	DP_DISPATCH_SOFTWARE, /* each queue's lcore hashes and hands frames over */
};

struct dp_config {
	enum cfg_io io;          /* --io / io:; kernel = Linux sockets (kio.h) */
	enum dp_port_kind port_kind;
	char port_name[64];      /* interface name, tap name or PCI address */
	char xdp_prog[256];      /* af_xdp: object for the PMD to load, or "" */
	unsigned queues;         /* RX/TX queue pairs of the port */
	unsigned workers;        /* worker lcores (>= queues; 0: = queues) */
	enum dp_dispatch dispatch;
	unsigned mem_mb;         /* memory when no hugepages are reserved */
	bool force_no_huge;      /* use --no-huge even if hugepages exist */
	unsigned idle_sleep_us;  /* nap of an idle worker lcore; 0 = busy-poll */
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
	char state_dir[256];     /* state.json + audit.log; "" = in memory */
	char log_file[256];      /* --log-file: reception log, "" = stderr */
};

#define DP_DEFAULT_CONTROL "/run/mxedge/control.sock"
#define DP_IDLE_SLEEP_US 50 /* --idle-sleep default */

/* Most worker lcores (and queues) one process runs. */
#define DP_MAX_WORKERS 64

/* Room for the TCP stack's drop reasons (enum tcp_drop) in the stats. */
#define DP_TCP_DROP_SLOTS 48

/* Per-lcore counters; each worker writes only its own slot. */
struct dp_lcore_stats {
	uint64_t rx_packets;      /* frames taken from the port's queue */
	uint64_t rx_bytes;
	uint64_t rx_bursts;
	uint64_t tx_packets;
	uint64_t tx_dropped;      /* tx ring full or no mbuf */
	uint64_t rx_dropped;      /* multi-segment frames */
	uint64_t sessions;        /* SMTP sessions started */
	uint64_t sessions_busy;   /* refused with 421: session pool empty */
	uint64_t sessions_client_limit; /* refused with 421 4.7.0: that client
	                           * (IPv6: /64) holds max_sessions_per_client */
	uint64_t sessions_expired; /* closed with 421 4.4.2 at session_max_s */
	uint64_t clients_blocked; /* refused with 554: blocklist */
	uint64_t messages;        /* 250 after the spool made them durable */
	uint64_t store_errors;    /* 451/452: spool failure or full */
	uint64_t rcpt_rejected;   /* 550: domain not accepted */
	uint64_t dispatched;      /* frames handed to another lcore */
	uint64_t received;        /* frames another lcore handed to this one */
	uint64_t dispatch_full;   /* hand-off dropped: the owner's ring was full */
	uint64_t neigh_copies;    /* ARP/NDP copies made for the other lcores */
	uint64_t log_dropped;     /* reception log lines lost: ring full (elog.h) */
	/* Snapshot of the lcore's TCP stack, refreshed by the worker about
	 * every 100 ms and at exit (tcp_stats_get is not for other threads). */
	uint64_t tcp_conns_active;
	uint64_t tcp_drops[DP_TCP_DROP_SLOTS];
} __attribute__((aligned(64)));

struct rte_mempool;
struct spool_writer;
struct tcp_stack;
struct dp_worker;

struct rte_ring;
struct elog_ring;

/* What a worker lcore needs; filled by main before launch. */
struct dp_worker_params {
	uint16_t port, queue;
	bool has_queue;                  /* polls RX/TX queue @queue itself */
	unsigned index, nworkers;        /* this worker among all of them */
	/* Hand-off between workers (NULL with one worker): inbox[i] is worker
	 * i's ring of frames it owns (multi-producer, single consumer). */
	struct rte_ring *const *inbox;
	/* Has a queue: frames queue-less workers transmit through it (or
	 * NULL). Has none: the ring of the worker whose queue it borrows. */
	struct rte_ring *tx_ring;
	/* Owner of a flow: owner_of[hash % owner_n] (a worker index); the
	 * port's RETA under RSS, i % nworkers in software. */
	const uint8_t *owner_of;
	unsigned owner_n;
	bool rss;                        /* the NIC already steers TCP flows */
	unsigned *live;                  /* workers still serving (shared) */
	struct rte_mempool *pool;        /* tx mbufs */
	const struct dp_config *cfg;
	struct tbl_set *tables;
	struct spool_writer *spool;      /* this worker's writer */
	size_t spool_ring_bytes;         /* its ring size (backpressure) */
	unsigned max_sessions;           /* preallocated SMTP sessions */
	const volatile int *stop;        /* set by the signal handler */
	const volatile unsigned *ndomains; /* accepted domains configured */
	struct dp_lcore_stats *stats;
	struct elog_ring *log;           /* reception log ring (elog.h) or NULL */
};

/*
 * Flow ownership (dp_flow.c). dp_flow_classify looks at an Ethernet frame
 * and says where it must go:
 *   DP_FLOW_TCP         an IPv4/IPv6 TCP segment; *hash is its flow hash
 *   DP_FLOW_EMBEDDED    an ICMP/ICMPv6 error quoting one of our segments;
 *                       *hash is the quoted connection's flow hash
 *   DP_FLOW_NEIGH_ALL   ARP reply / neighbour advertisement: every worker
 *   DP_FLOW_ARP_REQUEST an ARP request: answered by worker 0, learned by all
 *   DP_FLOW_ANY         anything else: worker 0 (echo, NS, fragments, ...)
 * Never fails; malformed frames are DP_FLOW_ANY (the stack counts them).
 */
enum dp_flow_class {
	DP_FLOW_TCP,
	DP_FLOW_EMBEDDED,
	DP_FLOW_NEIGH_ALL,
	DP_FLOW_ARP_REQUEST,
	DP_FLOW_ANY,
};
#define DP_RSS_KEY_LEN 40
/* The symmetric Toeplitz key: 0x6d5a repeated. */
extern const uint8_t dp_rss_key[DP_RSS_KEY_LEN];
/* Software RETA size when the NIC has none (a power of two). */
#define DP_SOFT_RETA 128

enum dp_flow_class dp_flow_classify(const uint8_t *f, uint32_t len,
				    uint32_t *hash);

/*
 * dp_flow_hash - Toeplitz RSS hash of a TCP/UDP 4-tuple with @key (at
 * least DP_RSS_KEY_LEN bytes), as a NIC computes it: @family 4 or 6,
 * addresses in network byte order, ports in host order. With dp_rss_key
 * the result is the same with source and destination swapped.
 */
uint32_t dp_flow_hash(const uint8_t *key, int family, const uint8_t *src,
		      const uint8_t *dst, uint16_t sport, uint16_t dport);

/* dp_flow_arp_as_reply - turn the ARP request @f (a private copy) into a
 * reply, so a worker learns its sender without answering it again. */
void dp_flow_arp_as_reply(uint8_t *f, uint32_t len);

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

/* dp_workers - worker lcores of @cfg (cfg->workers, or one per
 * queue when it is 0). */
unsigned dp_workers(const struct dp_config *cfg);

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

/*
 * Control socket of an edge process (dp_admin.c), shared by the DPDK and
 * the --io=kernel main: policy tables, live knobs, their persistence
 * (STATE_DIR/state.json, a delta over the YAML file) and the audit log
 * (STATE_DIR/audit.log). Everything here runs in the supervisor thread,
 * never on an lcore; changes reach the lcores through RCU (tables.h).
 */
struct dp_admin_priv;
struct dp_admin {
	/* Filled by the caller before dp_admin_start(). */
	struct tbl_set *tables;
	struct shield *shield;         /* XDP maps to mirror lists into, or NULL */
	uint64_t (*now_ms)(void);      /* monotonic clock for TTLs */
	json_t *(*status)(void *arg);  /* process-specific status object */
	json_t *(*stats)(void *arg);   /* per-lcore counters (array) */
	void *arg;
	/* Drop counters by reason (array of {reason, lcore columns, total}),
	 * for "stats view=drops"; NULL when the process has none. */
	json_t *(*drops)(void *arg);
	/* Accepted domains configured, which the workers read (RCPT accepts
	 * every domain while it is 0); kept current by dp_admin_poll. */
	volatile unsigned *ndomains;
	struct dp_admin_priv *priv;    /* dp_admin.c's own */
};

/*
 * dp_admin_start - bring up the edge's policy state: the YAML file's lists
 * and domains (@cfg->file) into @a->tables and @a->shield, then the operator
 * changes saved in @cfg->state_dir/state.json on top (expired TTL entries
 * are skipped), the live knobs published to the workers (tbl_knobs), the
 * audit log opened and, when @cfg->control is set, the control socket
 * (its directory created if missing). Installs a SIGHUP handler that asks
 * for a config.reload. Call before the workers start; @cfg is borrowed for
 * the process' lifetime. Returns 0, or -errno with a message naming the file
 * (and line) in @err. Undo with dp_admin_stop() in every case.
 */
int dp_admin_start(struct dp_admin *a, const struct dp_config *cfg,
		   char *err, size_t errlen);

/* dp_admin_sighup - async-signal-safe: ask the next dp_admin_poll() to
 * reload the configuration file (SIGHUP). For processes whose own SIGHUP
 * handler also does other things (reopening the reception log). */
void dp_admin_sighup(void);

/*
 * dp_admin_poll - the supervisor's turn: serve the control socket (waiting
 * up to @timeout_ms; sleeps that long without one), expire TTL entries once
 * a second, run a reload SIGHUP asked for, refresh *a->ndomains.
 */
void dp_admin_poll(struct dp_admin *a, int timeout_ms);

/* dp_admin_stop - close the control socket (unlinking it) and the audit
 * log, free what dp_admin_start allocated. Safe after a failed start. */
void dp_admin_stop(struct dp_admin *a);

/*
 * dp_admin_commands - the command table dp_admin_start serves (with a
 * struct dp_admin * as ctx): status, stats, shield, blocklist.*,
 * allowlist.*, domain.*, config.*, audit. Sets *n to the number of commands.
 * Exposed for the control protocol's tests.
 */
const struct ctl_command *dp_admin_commands(size_t *n);

/*
 * dp_stats_put - add the SMTP counters every edge process reports (sessions,
 * messages, refusals by reason) from @st to the stats row @row, so both
 * modes name them alike. The caller adds its own keys before and after.
 */
void dp_stats_put(json_t *row, const struct dp_lcore_stats *st);

#endif /* MXEDGE_DP_H */
