/*
 * cfg.h - the mxedge configuration file (YAML, parsed with libyaml).
 *
 * One file configures an edge process; docs/CONFIG.md documents every key.
 * Every error names FILE:LINE:COLUMN and what was expected; unknown keys are
 * errors (a typo must not silently fall back to a default).
 */
#ifndef MXEDGE_CFG_H
#define MXEDGE_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_MAX_LISTEN 8
/* limits.sessions_per_lcore: the TCP stack holds twice as many connections
 * (closing ones) and caps them at 2^24; a million keeps that far off. */
#define CFG_MAX_SESSIONS_PER_LCORE 1000000

enum cfg_io { CFG_IO_DPDK = 0, CFG_IO_KERNEL = 1 };

/* A list entry kept as text with where it came from, so the component that
 * applies it (e.g. the prefix tables) can report FILE:LINE on a bad value. */
struct cfg_entry {
	char text[256];
	unsigned line;
};

/* TLS policy of a relay route (STARTTLS, RFC 3207): never, when offered,
 * or required (mail is deferred rather than ever sent in clear). */
enum cfg_tls { CFG_TLS_NONE = 0, CFG_TLS_OPPORTUNISTIC = 1, CFG_TLS_REQUIRED = 2 };

/* Where the relay sends a domain's mail: the customer's own server. */
struct cfg_route {
	char host[254];      /* IP address or host name; "" = no route */
	unsigned port;       /* default 25 */
	enum cfg_tls tls;    /* default opportunistic */
};

struct cfg_domain {
	char name[254];
	uint64_t max_size;   /* 0 = the global limit */
	struct cfg_route route;
	unsigned line;
};

/* mxedge-control's relay settings (section "relay:"). Durations are in
 * seconds of configured time; time_scale multiplies all of them (backoff,
 * lifetime) so tests can run the 15-day schedule in seconds. */
struct cfg_relay {
	char state_dir[256];     /* delivery state log and bounce spool */
	char log_file[256];      /* Postfix-format mail log; "" = stderr */
	char socket[108];        /* mxedge-control's control socket */
	char metrics[64];        /* Prometheus listener "ADDR:PORT"; "" = off */
	uint64_t min_backoff_s;  /* default 300 (Postfix minimal_backoff_time) */
	uint64_t max_backoff_s;  /* default 4000 (Postfix maximal_backoff_time) */
	uint64_t lifetime_s;     /* default 15 days */
	uint64_t timeout_s;      /* per SMTP reply/connect, default 300 */
	double time_scale;       /* 0 < x <= 1, default 1 */
	unsigned concurrency;    /* connections per destination, default 20 */
	unsigned max_msgs_per_conn; /* messages per connection before QUIT, default 100 */
	unsigned tls_min_version;   /* 0x0303 TLSv1.2 (default) or 0x0304 TLSv1.3 */
	uint64_t compact_after_s;   /* copy mail deferred this long out of the spool (1h) */
	uint64_t state_log_max;     /* rewrite the state log beyond this many bytes (64M) */
};

struct cfg {
	char source[256];            /* file name, for messages */
	char hostname[254];
	enum cfg_io io;
	char port[128];              /* DPDK port "KIND:NAME" */
	unsigned queues;
	char listen[CFG_MAX_LISTEN][64];
	unsigned nlisten;
	char spool_dir[256];
	unsigned spool_segment_mb;
	char control_socket[108];
	/* Where the dataplane keeps changes made through its control socket
	 * (state.json, a delta over this file) and its audit log; "" = keep
	 * them in memory only (lost at restart). */
	char state_dir[256];
	uint64_t max_message_size;
	unsigned max_sessions;
	/* DPDK dataplane: SMTP sessions preallocated per worker lcore (TCP
	 * connections, mbufs and SMTP state are sized from it at start). */
	unsigned sessions_per_lcore;
	unsigned max_sessions_per_client; /* per address (IPv6: per /64); 0 = off */
	unsigned session_max_s;      /* total session lifetime cap; 0 = off */
	unsigned max_recipients;
	unsigned max_errors;
	unsigned command_timeout_s;
	unsigned data_timeout_s;
	unsigned log_level;          /* enum mlog_level: log.level, default info */
	bool bare_lf_normalise;
	bool chunking;
	bool smtputf8;
	struct cfg_domain *domains;
	size_t ndomains;
	struct cfg_entry *blocklist;
	size_t nblocklist;
	struct cfg_entry *allowlist;
	size_t nallowlist;
	struct cfg_relay relay;
};

/* cfg_domain_find - the entry for domain @name (case-insensitive), or
 * NULL. Borrowed from @c. */
const struct cfg_domain *cfg_domain_find(const struct cfg *c, const char *name);

/* cfg_defaults - the embedded default configuration (docs/CONFIG.md). */
void cfg_defaults(struct cfg *c);

/*
 * cfg_load - parse @len bytes of YAML @text named @source into @c (which
 * starts from cfg_defaults()). Returns 0, or -EINVAL with a message
 * "SOURCE:LINE:COL: ..." in @err (@errlen bytes), or -ENOMEM. On error @c
 * holds nothing that needs freeing beyond cfg_free().
 */
int cfg_load(const char *source, const char *text, size_t len, struct cfg *c,
	     char *err, size_t errlen);

/* cfg_load_file - cfg_load() on a file; I/O errors are reported as
 * "PATH: strerror" with the -errno returned. */
int cfg_load_file(const char *path, struct cfg *c, char *err, size_t errlen);

/* cfg_free - free the lists of @c (the struct itself is the caller's). */
void cfg_free(struct cfg *c);

#endif /* MXEDGE_CFG_H */
