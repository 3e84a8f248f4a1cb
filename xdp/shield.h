/* shield.h — loader and table API of the mxedge XDP shield (module prefix
 * shield_). Used by the mxedge-shield CLI and by the control plane.
 *
 * Model: one BPF object (shield.bpf.c) whose maps are pinned by name under a
 * pin directory (default /sys/fs/bpf/mxedge; DPDK's net_af_xdp PMD pins the
 * same maps directly under /sys/fs/bpf). A `struct shield` is either a
 * loaded program plus its maps (shield_load) or just the maps of a program
 * someone else loaded (shield_open_pinned) — table calls work on both.
 *
 * Writers: table-changing calls (add/del/bulk/expire) assume one writer
 * process at a time (the control plane); the XDP program reads concurrently
 * and always sees a complete generation.
 * Return conventions: int functions return 0 or -errno; constructors return
 * a pointer or NULL with errno set.
 */
#ifndef MXEDGE_SHIELD_H
#define MXEDGE_SHIELD_H

#include <stddef.h>
#include <stdint.h>

#include "shield_abi.h"

#define SHIELD_PIN_DIR_DEFAULT "/sys/fs/bpf/mxedge"
#define SHIELD_PROG_NAME "mxedge_shield"

struct shield;
struct shield_bulk;

/* A CIDR in its family's own terms: IPv4 address in addr[0..3] and plen
 * 0..32, or IPv6 address in addr[0..15] and plen 0..128. Host bits are 0. */
struct shield_cidr {
	uint8_t family; /* 4 or 6 */
	uint8_t plen;
	uint8_t addr[16];
};

struct shield_load_opts {
	const char *pin_dir;   /* NULL: SHIELD_PIN_DIR_DEFAULT */
	int no_pin;            /* private maps (tests, benchmarks) */
	uint32_t block_entries; /* 0: compiled default (1 Mi) per structure */
	uint32_t allow_entries; /* 0: compiled default (256 Ki) */
};

enum shield_attach_mode {
	SHIELD_ATTACH_AUTO = 0,   /* native if the driver supports it, else generic */
	SHIELD_ATTACH_NATIVE,
	SHIELD_ATTACH_GENERIC,
};

/* shield_load: opens the embedded object, reuses maps already pinned in the
 * pin directory (so tables survive reloads and are shared with the PMD when
 * the directory is /sys/fs/bpf) or creates and pins them, loads the
 * program and writes the default config unless a valid one is pinned.
 * Returns the handle (caller frees with shield_close) or NULL + errno. */
struct shield *shield_load(const struct shield_load_opts *opts);

/* shield_open_pinned: opens the pinned maps in pin_dir (NULL: default) of a
 * shield loaded elsewhere (our loader or the DPDK PMD). No program fd.
 * Returns the handle or NULL + errno (ENOENT: nothing pinned there). */
struct shield *shield_open_pinned(const char *pin_dir);

/* shield_pin_maps: pins every table of s (not xsks_map) under dir as well,
 * e.g. the maps DPDK's PMD pinned in /sys/fs/bpf into /sys/fs/bpf/mxedge, so
 * the control plane always finds them in one place. A map already pinned
 * there is accepted if it is the same map. Returns 0, -EEXIST (another map
 * holds the name), or -errno. */
int shield_pin_maps(struct shield *s, const char *dir);

/* shield_close: releases fds and memory; pinned maps and attached programs
 * stay. Accepts NULL. */
void shield_close(struct shield *s);

/* shield_prog_fd: the program fd (for bpf_prog_test_run_opts, attach), or
 * -1 for a handle from shield_open_pinned. */
int shield_prog_fd(const struct shield *s);

/* shield_xsks_map_fd: fd of xsks_map (AF_XDP sockets by RX queue), or -1
 * for a handle from shield_open_pinned (the socket owner holds that map). */
int shield_xsks_map_fd(const struct shield *s);

/* shield_attach: attaches the loaded program to ifindex in the given mode.
 * AUTO tries native first and falls back to generic. Replaces nothing: an
 * interface with another XDP program gives -EBUSY. Returns 0 or -errno. */
int shield_attach(struct shield *s, int ifindex, enum shield_attach_mode mode);

/* shield_detach: detaches the shield from ifindex, in whichever mode it is
 * attached. Returns 0, -ENOENT if no XDP program is attached, -EPERM if the
 * attached program is not the shield (it is left alone). */
int shield_detach(int ifindex);

/* Configuration (live: the program reads it per packet). */
void shield_config_defaults(struct shield_config *c);
/* shield_config_set_rate: rate new connections per second per source (0 =
 * no limit), burst >= 1. Returns 0 or -EINVAL. */
int shield_config_set_rate(struct shield_config *c, uint32_t rate, uint32_t burst);
/* shield_config_set_flood: global SYNs per second that start flood mode
 * (0 = never). */
void shield_config_set_flood(struct shield_config *c, uint64_t syn_per_sec,
			     enum shield_flood_mode mode);
int shield_config_get(struct shield *s, struct shield_config *out);
/* shield_config_set: validates (ports, sample rate; sample_every is rounded
 * up to a power of two) and writes c.
 * Returns 0, -EINVAL (bad field), or -errno from the map update. */
int shield_config_set(struct shield *s, const struct shield_config *c);

/* shield_ports_set: the TCP ports the shield guards (the dataplane's
 * listen ports): n of them, 1..SHIELD_MAX_PORTS, each 1..65535 (duplicates
 * are kept once). Every other setting stays as it is. Traffic to other
 * ports is then "not SMTP": it goes to the kernel, or to the dataplane if
 * addressed to one of its own addresses (shield_own_set). Returns 0,
 * -EINVAL (n = 0, NULL or port 0), -E2BIG (more distinct ports than
 * SHIELD_MAX_PORTS) or -errno. */
int shield_ports_set(struct shield *s, const uint16_t *ports, size_t n);

/* shield_own_set: tells the shield the dataplane's own host addresses on
 * the interface (IPv4 /32, IPv6 /128; at most SHIELD_MAX_OWN per family;
 * n = 0 clears them). Frames for them that are not SMTP (ARP with one of
 * them as target, ICMPv6 neighbour solicitations for them, other IP
 * packets to them) then go to the AF_XDP socket, so DPDK's stack resolves
 * its neighbours and answers ping; other non-SMTP traffic stays with the
 * kernel. Replaces the previous set. Returns 0, -EINVAL (not a host
 * address), -E2BIG, -EOPNOTSUPP (the pinned object predates the map), or
 * -errno. shield_own_get copies the set into out (cap entries, IPv4
 * first) and sets *n; returns 0, -ENOSPC, -EOPNOTSUPP or -errno. */
int shield_own_set(struct shield *s, const struct shield_cidr *addrs, size_t n);
int shield_own_get(struct shield *s, struct shield_cidr *out, size_t cap,
		   size_t *n);

/* shield_cidr_parse: "198.18.0.0/15", "2001:db8::/32", or a bare address
 * (= /32, /128). Host bits beyond plen are cleared. Returns 0 or -EINVAL. */
int shield_cidr_parse(const char *text, struct shield_cidr *out);
/* shield_cidr_format: writes "addr/plen" into buf. Returns 0 or -ENOSPC. */
int shield_cidr_format(const struct shield_cidr *c, char *buf, size_t len);

/* Single entries in the active generation of a list. expires: unix
 * seconds, 0 = never (an existing entry gets the new expiry).
 * shield_add returns 0, -EINVAL, -ENOSPC (map full, or more distinct
 * prefix lengths than the program probes), or -errno.
 * shield_del returns 0 or -ENOENT. */
int shield_add(struct shield *s, enum shield_list l, const struct shield_cidr *c,
	       uint64_t expires);
int shield_del(struct shield *s, enum shield_list l, const struct shield_cidr *c);

/* shield_lookup: is this exact CIDR an entry of the list? Returns 1 (and
 * *expires if non-NULL), 0, or -errno. */
int shield_lookup(struct shield *s, enum shield_list l,
		  const struct shield_cidr *c, uint64_t *expires);

typedef int (*shield_entry_cb)(const struct shield_cidr *c, uint64_t expires,
			       void *arg);
/* shield_list_entries: calls cb for every entry of the active generation;
 * a non-zero cb result stops the walk and is returned. */
int shield_list_entries(struct shield *s, enum shield_list l, shield_entry_cb cb,
			void *arg);
/* shield_count: entries in the active generation (exact + prefixes). */
int shield_count(struct shield *s, enum shield_list l, uint64_t *n);

/* Whole-set replacement: begin collects entries in memory, commit writes
 * them into the inactive generation and flips the active index with one
 * 4-byte map update, so readers switch from the complete old set to the
 * complete new one with no window of no protection. The old generation is
 * kept (and cleared by the next commit's start, off the hot path).
 * begin returns a builder or NULL + errno; add returns 0/-EINVAL/-ENOMEM/
 * -ENOSPC; commit returns 0 or -errno and frees b in every case; abort
 * frees b and changes nothing. */
struct shield_bulk *shield_bulk_begin(struct shield *s, enum shield_list l);
int shield_bulk_add(struct shield_bulk *b, const struct shield_cidr *c,
		    uint64_t expires);
size_t shield_bulk_size(const struct shield_bulk *b);
int shield_bulk_commit(struct shield_bulk *b);
void shield_bulk_abort(struct shield_bulk *b);

/* shield_bulk_load_file: replaces list l with the CIDRs in path, one per
 * line ("CIDR" or "CIDR TTL_SECONDS"; '#' starts a comment; blank lines
 * ignored). Any bad line rejects the whole file and leaves the active set
 * untouched; err (if non-NULL) then names the line. expires applies to
 * lines without a TTL (0 = never); now is the time TTLs count from.
 * Returns 0 (and *loaded) or -errno. */
int shield_bulk_load_file(struct shield *s, enum shield_list l, const char *path,
			  uint64_t now, uint64_t expires, size_t *loaded,
			  char *err, size_t errlen);

/* shield_expire: removes entries whose expiry is <= now (unix seconds) from
 * both lists. Returns 0 (and *removed if non-NULL) or -errno. */
int shield_expire(struct shield *s, uint64_t now, size_t *removed);

/* shield_counters: per-reason (and event slot) counters summed over CPUs,
 * out has SHIELD_C_SLOTS elements. Returns 0 or -errno. */
int shield_counters(struct shield *s, struct shield_counter *out);
/* shield_counters_reset: zeroes all counters. */
int shield_counters_reset(struct shield *s);
/* shield_rate_reset: forgets every source's bucket. */
int shield_rate_reset(struct shield *s);

/* shield_reason_name: stable short name ("drop_block_exact"...), "?" if
 * unknown. shield_reason_verdict: XDP_DROP/XDP_PASS/XDP_TX/XDP_REDIRECT for
 * a reason, -1 for event slots. */
const char *shield_reason_name(unsigned reason);
int shield_reason_verdict(unsigned reason);

typedef int (*shield_event_cb)(const struct shield_event *e, void *arg);
/* shield_events_poll: delivers sampled drop events to cb, waiting up to
 * timeout_ms for the first. Returns the number delivered or -errno. */
int shield_events_poll(struct shield *s, int timeout_ms, shield_event_cb cb,
		       void *arg);

#endif
