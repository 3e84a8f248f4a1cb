/* shield_abi.h — structures shared by the XDP shield program (shield.bpf.c)
 * and its loader library (shield.c). Everything here is part of the map ABI:
 * pinned maps outlive processes, so layouts only ever grow at the end.
 *
 * Included from BPF code (types from <linux/types.h>) and from user space.
 */
#ifndef MXEDGE_SHIELD_ABI_H
#define MXEDGE_SHIELD_ABI_H

#include <linux/types.h>

/* Map names. Every map carries the mxedge_ prefix because DPDK's net_af_xdp
 * PMD pins LIBBPF_PIN_BY_NAME maps directly under /sys/fs/bpf (it sets no
 * pin root); kernel map names are limited to 15 characters. */
#define SHIELD_MAP_CONFIG  "mxedge_cfg"
#define SHIELD_MAP_GEN     "mxedge_gen"
#define SHIELD_MAP_META    "mxedge_meta"
#define SHIELD_MAP_COUNTERS "mxedge_cnt"
#define SHIELD_MAP_RATE    "mxedge_rate"
#define SHIELD_MAP_SYNMETER "mxedge_synm"
#define SHIELD_MAP_EVENTS  "mxedge_events"
#define SHIELD_MAP_OWN     "mxedge_own"

enum {
	SHIELD_MAX_PORTS = 4,      /* SMTP ports the shield guards */
	SHIELD_MAX_V4_PLENS = 8,   /* distinct IPv4 prefix lengths /25../31 */
	SHIELD_MAX_V6_PLENS = 24,  /* distinct IPv6 prefix lengths < /32 probed */
	SHIELD_MAX_V6_NODE_LENS = 16, /* distinct probed lengths /32../127 under
	                              * one /32 (beyond its inline prefixes) */
	SHIELD_V4_BITMAP_WORDS = (1u << 24) / 64, /* 64 IPv4 /24 blocks per word */
	SHIELD_V6_EXT_MAX = 6,     /* IPv6 extension headers walked */
	SHIELD_MAX_OWN = 4,        /* dataplane addresses per family */
	SHIELD_V6_NODE_INLINE = 6, /* IPv6 /32../64 prefixes held in a /32 node */
};

/* Two lists, each with two generations: bulk loads fill the inactive
 * generation and flip the active index (mxedge_gen[list]) atomically. */
enum shield_list {
	SHIELD_LIST_BLOCK = 0,
	SHIELD_LIST_ALLOW = 1,
	SHIELD_LIST_COUNT = 2,
};

/* mxedge_gen[list] value: bit 0 is the active generation; SHIELD_GEN_EMPTY
 * says the active generation holds no entry, so the program skips the
 * list's lookups (the allowlist is empty on most edges, and it is
 * consulted on every drop). Writers that predate the flag never set it,
 * which only costs lookups. */
#define SHIELD_GEN_EMPTY 0x2u

/* In mxedge_gen[SHIELD_LIST_BLOCK] only: the allowlist is empty, so a
 * blocked source is dropped without reading the allowlist's word (one map
 * read less on every block drop). A hint that may only err towards "not
 * empty": the loader clears it before the allowlist gets its first entry
 * and sets it after the last one is gone. */
#define SHIELD_GEN_ALLOW_EMPTY 0x4u

/* Why a packet got its verdict. Each reason implies exactly one verdict
 * (shield_reason_verdict() in the library); counters are indexed by it. */
enum shield_reason {
	SHIELD_R_PASS_NOT_IP = 0,      /* not IPv4/IPv6 (ARP, LLDP, ...) */
	SHIELD_R_PASS_NOT_TCP,         /* IP but not TCP */
	SHIELD_R_PASS_NOT_SMTP,        /* TCP to a port the shield does not guard */
	SHIELD_R_PASS_FRAGMENT,        /* non-first fragment: no ports to judge */
	SHIELD_R_PASS_NO_XSK,          /* SMTP, but no AF_XDP socket on this queue */
	SHIELD_R_REDIRECT,             /* SMTP to the AF_XDP socket of the queue */
	SHIELD_R_DROP_MALFORMED,       /* truncated/invalid IP or TCP header */
	SHIELD_R_DROP_FRAGMENT,        /* first fragment of fragmented SMTP */
	SHIELD_R_DROP_BLOCK_EXACT,     /* source in a /32 or /128 block entry */
	SHIELD_R_DROP_BLOCK_PREFIX,    /* source in a blocked prefix */
	SHIELD_R_DROP_RATE,            /* source over its new-connection rate */
	SHIELD_R_DROP_SYNFLOOD,        /* flood mode, SYN we cannot cookie */
	SHIELD_R_TX_SYNCOOKIE,         /* flood mode, answered with a SYN cookie */
	SHIELD_R_COUNT,
};

/* Extra counter slots after the reasons: events, not verdicts. */
enum shield_event_slot {
	SHIELD_C_ALLOW_HIT = SHIELD_R_COUNT, /* allowlist overrode a drop */
	SHIELD_C_FLOOD_SYN,                  /* SYN seen while in flood mode */
	SHIELD_C_SLOTS,
};

struct shield_counter {
	__u64 packets;
	__u64 bytes;
};

/* SYN flood defence (see xdp/README.md "SYN floods"). */
enum shield_flood_mode {
	SHIELD_FLOOD_HANDOFF = 0, /* SYNs go on to the dataplane's cookie path */
	SHIELD_FLOOD_XDP_COOKIE = 1, /* XDP answers SYN-ACK with a kernel cookie */
};

#define SHIELD_CFG_VALID 0x1u  /* set by the loader; else rodata defaults */

struct shield_config {
	__u32 flags;               /* SHIELD_CFG_VALID */
	__u16 ports[SHIELD_MAX_PORTS]; /* guarded TCP ports, host order, 0 = unused */
	__u32 flood_mode;          /* enum shield_flood_mode */
	__u64 rate_interval_ns;    /* GCRA emission interval = 1e9 / rate; 0 = off */
	__u64 rate_tolerance_ns;   /* (burst - 1) * interval */
	__u64 flood_syn_per_window; /* SYNs per 100 ms window that mean "flood"; 0 = off */
	__u64 flood_hold_ns;       /* flood mode lasts this long after the last crossing */
	__u32 sample_every;        /* 1-in-N drops (N a power of two) become ring buffer
	                            * events; 0 = none */
	__u32 pad;
};

#define SHIELD_FLOOD_WINDOW_NS 100000000ull

/* Address key: IPv6 addresses as they are, IPv4 as v4-mapped ::ffff:a.b.c.d,
 * so one hash serves both families. */
struct shield_addr {
	union {
		__u8 a[16];
		__u32 w[4];        /* network order words */
	};
};

/* Prefix key: plen is the length in the 128-bit space (IPv4 /n = 96 + n),
 * addr is masked to plen. */
struct shield_pfx_key {
	__u32 plen;
	struct shield_addr addr;
};

/* Second level for a /24 whose `longer` bit is set: one bit per host for
 * /32 entries (exact) and for hosts inside /25../31 entries (pfx). Key:
 * the /24 block number (address >> 8, host order). */
struct shield_v4_leaf {
	__u64 exact[4];
	__u64 pfx[4];
};

/* IPv4 /24 map (DIR-24-8 style, one array lookup per packet): for the 64
 * /24 blocks of a word, `covered` says a prefix <= /24 covers the block
 * (drop without further lookups), `longer` says the block has a leaf
 * (struct shield_v4_leaf) with /25../32 entries: a second, last lookup.
 * `base`: the leaves of this word's `longer` blocks sit in the slot array
 * (struct shield_v4_slot) from index base, in block order, so a block's
 * leaf is slot base + (number of `longer` bits below its own) — an array
 * read instead of a hash lookup. SHIELD_SLOT_NONE: not laid out (a single
 * add/delete changed the word's `longer` bits since the last bulk load,
 * or the slots ran out): the leaf hash answers. */
struct shield_v4_word {
	__u64 covered;
	__u64 longer;
	__u32 base;
	__u32 pad;
};

#define SHIELD_SLOT_NONE 0xffffffffu

/* A leaf in the slot array, tagged with its /24 block number + 1: the
 * program uses a slot only when the tag matches (a word read while the
 * loader rewrites it may point anywhere; a mismatch falls back to the
 * hash). Tag 0, what a fresh array holds, is no block. The last slot of
 * the array is never a leaf: its exact[0] holds how many slots the last
 * bulk load of that generation used (so the next one clears only those). */
struct shield_v4_slot {
	struct shield_v4_leaf leaf;
	__u32 tag;
	__u32 pad;
};

/* IPv6 first level: one node per /32 (key: the address's first 32 bits,
 * network order) under which entries of length /32../128 exist. Up to
 * SHIELD_V6_NODE_INLINE prefixes of length /32../64 live in the node itself
 * (inl[]: bits 32..63 of the prefix and its length), so a source under
 * such a prefix is answered by this one lookup. Every other length below
 * the /32 has a bit in lens (bit i: length 32 + i; bit 96: /128 exact
 * entries) and is probed in the prefix (or exact) hash. An inline entry
 * always mirrors an existing prefix (deleted with it); a lens bit may stay
 * set after its last entry is deleted (one wasted probe, never a wrong
 * verdict) until the next bulk load. */
struct shield_v6_inl {
	__be32 bits;               /* prefix bits 32..63 (address word 1), masked */
	__u32 plen;                /* 32..64 */
};

struct shield_v6_node {
	__u64 lens[2];
	__u32 n_inl;               /* used entries of inl */
	__u32 pad;
	struct shield_v6_inl inl[SHIELD_V6_NODE_INLINE];
};

/* Entry value in the exact and prefix hashes. The program only tests
 * presence; expiry is enforced by user space (shield_expire()). */
struct shield_entry {
	__u64 expires;             /* unix seconds, 0 = never */
};

/* Per (list, generation) summary the program uses to skip empty structures
 * and to know which prefix lengths to probe. Index = list * 2 + gen. */
struct shield_set_meta {
	__u32 n_exact;             /* entries in the exact hash */
	__u32 n_v4_bitmap;         /* IPv4 prefixes <= /24 (in the bitmap) */
	__u32 n_pfx;               /* entries in the prefix hash (all lengths) */
	__u8 n_v4_plens;           /* unused (IPv4 /25../32 live in the leaves) */
	__u8 n_v6_plens;           /* lengths in v6_plens */
	__u8 pad[2];
	__u8 v4_plens[SHIELD_MAX_V4_PLENS]; /* 128-bit space lengths 121..127 */
	__u8 v6_plens[SHIELD_MAX_V6_PLENS]; /* IPv6 lengths 0..31 (shorter than a node) */
	__u32 plen_count[129];     /* user space bookkeeping: IPv6 entries per length */
	__u32 v4_plen_count[33];   /* user space bookkeeping: IPv4 entries per length */
};

/* Per-source token bucket as GCRA: one theoretical arrival time per source,
 * updated with compare-and-swap so every RX queue shares one bucket. */
struct shield_rate {
	__u64 tat;
};

struct shield_synmeter {
	__u64 window_start;
	__u64 count;
	__u64 flood_until;
};

/* Sampled drop event in the mxedge_events ring buffer. */
struct shield_event {
	__u64 ts_ns;               /* bpf_ktime_get_ns() */
	__u32 reason;              /* enum shield_reason */
	__u32 ifindex;
	__u32 rx_queue;
	__u16 dport;               /* host order */
	__u8 family;               /* 4 or 6 */
	__u8 pad;
	struct shield_addr src;
};

/* The dataplane's own addresses on the shielded interface (mxedge_own[0]).
 * DPDK's TCP/IP stack answers ARP and NDP for them itself, so frames that
 * are for these addresses and are not SMTP (ARP whose target is one of them,
 * ICMPv6 neighbour solicitations for them, any other IP packet to them) go
 * to the AF_XDP socket too; everything else that is not SMTP stays with the
 * kernel. All zero (the state after the PMD loads the object): no such
 * frames, ARP/NDP go to the kernel as before. */
struct shield_own {
	__u32 n4;                  /* used entries of v4 */
	__u32 n6;                  /* used entries of v6 */
	__be32 v4[SHIELD_MAX_OWN]; /* network order */
	struct shield_addr v6[SHIELD_MAX_OWN];
};

#endif
