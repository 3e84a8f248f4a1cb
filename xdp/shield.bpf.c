// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0)
/* shield.bpf.c — the mxedge XDP DoS shield.
 *
 * Per packet, in the NIC driver:
 *   non-IP, non-TCP, non-SMTP-port          -> XDP_PASS (kernel, unchanged)
 *   malformed/truncated TCP to an SMTP port -> XDP_DROP (and broken IP headers)
 *   blocklisted source (unless allowlisted) -> XDP_DROP
 *   SYN over the source's rate              -> XDP_DROP (unless allowlisted)
 *   SYN during a flood (cookie mode)        -> XDP_TX SYN-ACK with a cookie
 *   otherwise SMTP                          -> redirect to xsks_map[rx queue],
 *                                              XDP_PASS if no socket is bound
 *   ARP/NDP/other non-SMTP for the
 *   dataplane's own addresses               -> the same redirect
 * Lists are O(1) structures, not LPM tries (xdp/README.md "Lookup
 * structures"): IPv4 in DIR-24-8 style (a /24 array answers prefixes up to
 * /24; a /24 with longer entries has a 256-bit leaf, read from a slot array
 * laid out by the last bulk load, else from a hash: at most two lookups);
 * IPv6 via a /32 node that holds up to 6 of its /32../64 prefixes inline
 * (compared, not looked up) and says which other lengths exist below it,
 * then one probe per such length (/128 in the exact hash; lengths shorter
 * than /32 probed by length). Each list has two generations; bulk loads
 * fill the inactive one and flip mxedge_gen[list], which also flags an
 * empty set (skipped). Non-SMTP frames for the dataplane's own addresses
 * (mxedge_own: ARP, NDP, ping) go to AF_XDP too.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "shield_abi.h"

#ifndef SHIELD_BLOCK_ENTRIES
#define SHIELD_BLOCK_ENTRIES (1u << 20)
#endif
#ifndef SHIELD_ALLOW_ENTRIES
#define SHIELD_ALLOW_ENTRIES (1u << 18)
#endif
/* Leaf slots per generation (struct shield_v4_slot, 72 bytes each,
 * preallocated; mmapable so a bulk load writes them with one memcpy):
 * /24 blocks with /25../32 entries beyond these are answered by the leaf
 * hash. */
#ifndef SHIELD_BLOCK_SLOTS
#define SHIELD_BLOCK_SLOTS (1u << 18)
#endif
#ifndef SHIELD_ALLOW_SLOTS
#define SHIELD_ALLOW_SLOTS (1u << 16)
#endif
/* 0: leaves from the hash only, as before the slot array (the A/B build
 * perf/xdp compares against, on the same maps). */
#ifndef SHIELD_LEAF_SLOTS
#define SHIELD_LEAF_SLOTS 1
#endif
#ifndef SHIELD_RATE_ENTRIES
#define SHIELD_RATE_ENTRIES (1u << 18)
#endif

/* Raw SYN cookie helpers (kernel >= 6.0); libbpf 1.1's helper table
 * predates them, the numbers come from <linux/bpf.h>'s __BPF_FUNC_MAPPER. */
static __s64 (*shield_gen_cookie_v4)(struct iphdr *iph, struct tcphdr *th,
				     __u32 th_len) = (void *)204;
static __s64 (*shield_gen_cookie_v6)(struct ipv6hdr *iph, struct tcphdr *th,
				     __u32 th_len) = (void *)205;

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct frag_hdr6 {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

/* ---- maps ---------------------------------------------------------------- */

#define EXACT_MAP(name, n)                                                     \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_HASH);                               \
		__uint(max_entries, n);                                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, struct shield_addr);                               \
		__type(value, struct shield_entry);                            \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} name SEC(".maps")
#define PFX_MAP(name, n)                                                       \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_HASH);                               \
		__uint(max_entries, n);                                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, struct shield_pfx_key);                            \
		__type(value, struct shield_entry);                            \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} name SEC(".maps")
#define BITMAP_MAP(name)                                                       \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_ARRAY);                              \
		__uint(max_entries, SHIELD_V4_BITMAP_WORDS);                   \
		__type(key, __u32);                                            \
		__type(value, struct shield_v4_word);                          \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} name SEC(".maps")

#define LEAF_MAP(name, n)                                                      \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_HASH);                               \
		__uint(max_entries, n);                                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, __u32);                                            \
		__type(value, struct shield_v4_leaf);                          \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} name SEC(".maps")

#define SLOT_MAP(name, n)                                                      \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_ARRAY);                              \
		__uint(max_entries, n);                                        \
		__uint(map_flags, BPF_F_MMAPABLE);                             \
		__type(key, __u32);                                            \
		__type(value, struct shield_v4_slot);                          \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} name SEC(".maps")

#define NODE_MAP(name, n)                                                      \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_HASH);                               \
		__uint(max_entries, n);                                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, __u32);                                            \
		__type(value, struct shield_v6_node);                          \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} name SEC(".maps")

/* b = block, a = allow; x = exact, w = /24 array, p = prefix, l = /24 leaf
 * (hash), s = /24 leaf slots (array), v = IPv6 /32 node; 0/1 = generation.
 * Maps whose value grew got a new letter (v, w), so maps pinned by an
 * older object are not reused with the wrong layout. */
EXACT_MAP(mxedge_bx0, SHIELD_BLOCK_ENTRIES);
EXACT_MAP(mxedge_bx1, SHIELD_BLOCK_ENTRIES);
EXACT_MAP(mxedge_ax0, SHIELD_ALLOW_ENTRIES);
EXACT_MAP(mxedge_ax1, SHIELD_ALLOW_ENTRIES);
PFX_MAP(mxedge_bp0, SHIELD_BLOCK_ENTRIES);
PFX_MAP(mxedge_bp1, SHIELD_BLOCK_ENTRIES);
PFX_MAP(mxedge_ap0, SHIELD_ALLOW_ENTRIES);
PFX_MAP(mxedge_ap1, SHIELD_ALLOW_ENTRIES);
BITMAP_MAP(mxedge_bw0);
BITMAP_MAP(mxedge_bw1);
BITMAP_MAP(mxedge_aw0);
BITMAP_MAP(mxedge_aw1);
SLOT_MAP(mxedge_bs0, SHIELD_BLOCK_SLOTS);
SLOT_MAP(mxedge_bs1, SHIELD_BLOCK_SLOTS);
SLOT_MAP(mxedge_as0, SHIELD_ALLOW_SLOTS);
SLOT_MAP(mxedge_as1, SHIELD_ALLOW_SLOTS);
LEAF_MAP(mxedge_bl0, SHIELD_BLOCK_ENTRIES);
LEAF_MAP(mxedge_bl1, SHIELD_BLOCK_ENTRIES);
LEAF_MAP(mxedge_al0, SHIELD_ALLOW_ENTRIES);
LEAF_MAP(mxedge_al1, SHIELD_ALLOW_ENTRIES);
NODE_MAP(mxedge_bv0, SHIELD_BLOCK_ENTRIES);
NODE_MAP(mxedge_bv1, SHIELD_BLOCK_ENTRIES);
NODE_MAP(mxedge_av0, SHIELD_ALLOW_ENTRIES);
NODE_MAP(mxedge_av1, SHIELD_ALLOW_ENTRIES);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHIELD_LIST_COUNT * 2);
	__type(key, __u32);
	__type(value, struct shield_set_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mxedge_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHIELD_LIST_COUNT);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mxedge_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shield_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mxedge_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHIELD_C_SLOTS);
	__type(key, __u32);
	__type(value, struct shield_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mxedge_cnt SEC(".maps");

/* One bucket per source shared by all CPUs and RX queues (a per-CPU map
 * would multiply the limit by the number of queues). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SHIELD_RATE_ENTRIES);
	__type(key, struct shield_addr);
	__type(value, struct shield_rate);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mxedge_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shield_synmeter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mxedge_synm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mxedge_events SEC(".maps");

/* The dataplane's own addresses (struct shield_own in shield_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shield_own);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mxedge_own SEC(".maps");

/* The name DPDK's net_af_xdp PMD looks for. Not pinned: it belongs to the
 * process that binds the sockets (one per interface). */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

/* Used until the loader writes mxedge_cfg (e.g. when the PMD loads us). */
const volatile struct shield_config shield_defaults = {
	.flags = SHIELD_CFG_VALID,
	.ports = { 25, 465, 587, 0 },
	.flood_mode = SHIELD_FLOOD_HANDOFF,
	.rate_interval_ns = 1000000000ull / 20,      /* 20 new connections/s */
	.rate_tolerance_ns = 39 * (1000000000ull / 20), /* burst 40 */
	.flood_syn_per_window = 5000,                /* 50 k SYN/s */
	.flood_hold_ns = 1000000000ull,
	.sample_every = 64,
};

/* ---- helpers -------------------------------------------------------------- */

/* What the parser hands to the decision: offsets, not pointers, so the
 * decision is verified once instead of once per parse path. */
struct pkt {
	struct shield_addr src;
	__u16 dport;
	__u16 l3off;       /* Ethernet + VLAN tags */
	__u16 l4off;       /* from l3 */
	__u8 family;       /* 4 or 6 */
	__u8 tcpflags;     /* byte 13 of the TCP header */
	__u8 plain;        /* no IPv4 options, no IPv6 extension headers */
	__u8 pad[3];
};

int shield_list_match6(__u32 lg, const struct pkt *p);


static __always_inline int count(struct xdp_md *ctx, __u32 slot, int action)
{
	struct shield_counter *c = bpf_map_lookup_elem(&mxedge_cnt, &slot);

	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return action;
}

/* Counts the drop and, for 1 in sample_every drops (a power of two, per CPU
 * and reason), emits an event. The decision uses the counter we update
 * anyway — no helper call, no division — and comes before
 * bpf_ringbuf_reserve, so a flood does not make every CPU contend for the
 * ring's lock. */
static __always_inline int drop(struct xdp_md *ctx,
				const struct shield_config *cfg, __u32 reason,
				const struct pkt *p)
{
	struct shield_counter *c = bpf_map_lookup_elem(&mxedge_cnt, &reason);
	__u32 every = cfg->sample_every;
	struct shield_event *e;

	if (!c)
		return XDP_DROP;
	c->packets++;
	c->bytes += ctx->data_end - ctx->data;
	if (!every || (c->packets & (every - 1)))
		return XDP_DROP;
	e = bpf_ringbuf_reserve(&mxedge_events, sizeof(*e), 0);
	if (e) {
		e->ts_ns = bpf_ktime_get_ns();
		e->reason = reason;
		e->ifindex = ctx->ingress_ifindex;
		e->rx_queue = ctx->rx_queue_index;
		e->dport = p->dport;
		e->family = p->family;
		e->pad = 0;
		e->src = p->src;
		bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	}
	return XDP_DROP;
}

static __always_inline __u32 word_mask(__u32 plen, __u32 word)
{
	__u32 lo = word * 32;

	if (plen <= lo)
		return 0;
	if (plen >= lo + 32)
		return 0xffffffffu;
	return bpf_htonl(0xffffffffu << (32 - (plen - lo)));
}

enum { MATCH_NONE = 0, MATCH_EXACT = 1, MATCH_PREFIX = 2 };

/* 1 if x != 0, else 0, without a branch (keeps the verifier's path count
 * flat in the probe loop). */
#define NZ(x) ((((x) | -(x)) >> 63) & 1)

/* Index of the single set bit in b (BPF has no count-trailing-zeros). */
static __always_inline __u32 bit_index(__u64 b)
{
	return (__u32)(NZ(b & 0xffffffff00000000ull) << 5 |
		       NZ(b & 0xffff0000ffff0000ull) << 4 |
		       NZ(b & 0xff00ff00ff00ff00ull) << 3 |
		       NZ(b & 0xf0f0f0f0f0f0f0f0ull) << 2 |
		       NZ(b & 0xccccccccccccccccull) << 1 |
		       NZ(b & 0xaaaaaaaaaaaaaaaaull));
}

/* One IPv6 prefix probe: src masked to plen in the prefix hash of list/gen
 * lg (list * 2 + gen; a constant after inlining). Returns 1 on a hit.
 * Inlined: as a global function the call cost ~10 ns per probe. */
static __always_inline int pfx_probe(__u32 lg, const struct pkt *p, __u32 plen)
{
	struct shield_pfx_key k;
	void *m;

	plen &= 127;
	k.plen = plen;
	k.addr.w[0] = p->src.w[0] & word_mask(plen, 0);
	k.addr.w[1] = p->src.w[1] & word_mask(plen, 1);
	k.addr.w[2] = p->src.w[2] & word_mask(plen, 2);
	k.addr.w[3] = p->src.w[3] & word_mask(plen, 3);
	switch (lg) {
	case 0: m = bpf_map_lookup_elem(&mxedge_bp0, &k); break;
	case 1: m = bpf_map_lookup_elem(&mxedge_bp1, &k); break;
	case 2: m = bpf_map_lookup_elem(&mxedge_ap0, &k); break;
	case 3: m = bpf_map_lookup_elem(&mxedge_ap1, &k); break;
	default: m = NULL;
	}
	return m != NULL;
}

/* Number of set bits (BPF has no popcount instruction). */
static __always_inline __u32 popcount64(__u64 x)
{
	x -= (x >> 1) & 0x5555555555555555ull;
	x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
	return (__u32)((x * 0x0101010101010101ull) >> 56);
}

/* The leaf of /24 block blk, whose `longer` bit (bit) is set in w: from
 * the slot array when the word is laid out there and the slot's tag says
 * it is blk's (an array read), else from the leaf hash. NULL: none. */
static __always_inline const struct shield_v4_leaf *
v4_leaf(const struct shield_v4_word *w, __u64 bit, void *slots, void *leaves,
	__u32 blk)
{
	__u32 slot = w->base;

	if (SHIELD_LEAF_SLOTS && slot != SHIELD_SLOT_NONE) {
		const struct shield_v4_slot *sl;

		slot += popcount64(w->longer & (bit - 1));
		sl = bpf_map_lookup_elem(slots, &slot);
		if (sl && sl->tag == blk + 1)
			return &sl->leaf;
	}
	return bpf_map_lookup_elem(leaves, &blk);
}

/* IPv4: the /24 word, and the /24's leaf only when it has one. */
static __always_inline int v4_match(void *bitmap, void *slots, void *leaves,
				    const struct pkt *p)
{
	{
		__u32 host = bpf_ntohl(p->src.w[3]);
		__u32 blk = host >> 8;
		__u32 idx = blk >> 6;
		struct shield_v4_word *w = bpf_map_lookup_elem(bitmap, &idx);
		const struct shield_v4_leaf *leaf;
		__u64 bit = 1ull << (blk & 63);

		if (!w)
			return MATCH_NONE;
		if (w->covered & bit)
			return MATCH_PREFIX;
		if (!(w->longer & bit)) /* the common case: one array lookup */
			return MATCH_NONE;
		leaf = v4_leaf(w, bit, slots, leaves, blk);
		if (!leaf)
			return MATCH_NONE;
		bit = 1ull << (host & 63);
		idx = (host >> 6) & 3;
		if (leaf->exact[idx] & bit)
			return MATCH_EXACT;
		if (leaf->pfx[idx] & bit)
			return MATCH_PREFIX;
		return MATCH_NONE;
	}
}

/* IPv6: lengths shorter than /32 by probe, then the /32 node. */
static __always_inline int set_match6(void *exact, void *nodes, __u32 lg,
				      const struct shield_set_meta *m,
				      const struct pkt *p)
{
	__u32 i, n;

	/* IPv6 prefixes shorter than /32: few lengths, probed directly */
	n = m->n_v6_plens;
	for (i = 0; i < SHIELD_MAX_V6_PLENS; i++) {
		__u32 plen;

		if (i >= n)
			break;
		plen = m->v6_plens[i] & 31;
		if (pfx_probe(lg, p, plen))
			return MATCH_PREFIX;
	}
	{
		struct shield_v6_node *node = bpf_map_lookup_elem(nodes, &p->src.w[0]);
		__u64 lo, hi;

		if (!node) /* nothing under this /32: the common case */
			return MATCH_NONE;
		lo = node->lens[0];
		hi = node->lens[1];
		if ((hi >> 32) & 1 && bpf_map_lookup_elem(exact, &p->src))
			return MATCH_EXACT;
		/* /32../64 prefixes held in the node: compare, no lookup */
		n = node->n_inl;
		for (i = 0; i < SHIELD_V6_NODE_INLINE; i++) {
			if (i >= n)
				break;
			if ((p->src.w[1] & word_mask(node->inl[i].plen & 127, 1)) ==
			    node->inl[i].bits)
				return MATCH_PREFIX;
		}
		hi &= 0xffffffffull;
		/* probe each length present, lowest bit first */
		for (i = 0; i < SHIELD_MAX_V6_NODE_LENS; i++) {
			__u64 word = lo ? lo : hi, b;
			__u32 plen;

			if (!word)
				break;
			b = word & -word;
			plen = bit_index(b) + 32 + ((__u32)(!lo) << 6);
			if (lo)
				lo &= lo - 1;
			else
				hi &= hi - 1;
			if (pfx_probe(lg, p, plen))
				return MATCH_PREFIX;
		}
	}
	return MATCH_NONE;
}

/* IPv6 part of a list lookup for lg = list * 2 + generation. Global
 * (verified once) because of its probe loops. */
__noinline int shield_list_match6(__u32 lg, const struct pkt *p)
{
	const struct shield_set_meta *m;

	if (!p || lg > 3)
		return MATCH_NONE;
	m = bpf_map_lookup_elem(&mxedge_meta, &lg);
	if (!m)
		return MATCH_NONE;
	switch (lg) {
	case 0: return set_match6(&mxedge_bx0, &mxedge_bv0, 0, m, p);
	case 1: return set_match6(&mxedge_bx1, &mxedge_bv1, 1, m, p);
	case 2: return set_match6(&mxedge_ax0, &mxedge_av0, 2, m, p);
	default: return set_match6(&mxedge_ax1, &mxedge_av1, 3, m, p);
	}
}

/* Is p's source in the set of list whose mxedge_gen word is gw (active
 * generation in bit 0)? MATCH_NONE/EXACT/PREFIX. IPv4 is answered inline
 * (one or two lookups), IPv6 by the global above. */
static __always_inline int set_match(__u32 list, __u32 gw, const struct pkt *p)
{
	const struct shield_set_meta *m;
	__u32 gen = gw & 1, lg = list * 2 + gen;

	if (p->family != 4) {
		m = bpf_map_lookup_elem(&mxedge_meta, &lg);
		if (!m || (!m->n_exact && !m->n_pfx)) /* empty list */
			return MATCH_NONE;
		return shield_list_match6(lg, p);
	}
	/* IPv4 needs no summary: an empty set is all-zero words */
	if (list == SHIELD_LIST_BLOCK)
		return gen ? v4_match(&mxedge_bw1, &mxedge_bs1, &mxedge_bl1, p)
			   : v4_match(&mxedge_bw0, &mxedge_bs0, &mxedge_bl0, p);
	return gen ? v4_match(&mxedge_aw1, &mxedge_as1, &mxedge_al1, p)
		   : v4_match(&mxedge_aw0, &mxedge_as0, &mxedge_al0, p);
}

/* Is p's source in list (active generation)? MATCH_NONE/EXACT/PREFIX. */
static __always_inline int list_match(__u32 list, const struct pkt *p)
{
	__u32 *g = bpf_map_lookup_elem(&mxedge_gen, &list);

	if (!g || (*g & SHIELD_GEN_EMPTY))
		return MATCH_NONE;
	return set_match(list, *g, p);
}

/* GCRA form of a token bucket: a source may open a connection when its
 * theoretical arrival time is at most `tolerance` ahead of now. One u64 per
 * source, advanced with compare-and-swap so concurrent queues share it. */
static __always_inline int rate_ok(const struct shield_config *cfg,
				   const struct pkt *p, __u64 now)
{
	__u64 interval = cfg->rate_interval_ns;
	struct shield_addr key = p->src;
	struct shield_rate *r;
	int i;

	if (!interval)
		return 1;
	if (p->family == 6) { /* one bucket per IPv6 /64 */
		key.w[2] = 0;
		key.w[3] = 0;
	}
	r = bpf_map_lookup_elem(&mxedge_rate, &key);
	if (!r) {
		struct shield_rate fresh = { .tat = now + interval };

		if (bpf_map_update_elem(&mxedge_rate, &key, &fresh, BPF_NOEXIST) == 0)
			return 1;
		r = bpf_map_lookup_elem(&mxedge_rate, &key);
		if (!r)
			return 1;
	}
	for (i = 0; i < 4; i++) {
		__u64 tat = *(volatile __u64 *)&r->tat;
		__u64 base = tat > now ? tat : now;

		if (base - now > cfg->rate_tolerance_ns)
			return 0;
		if (__sync_val_compare_and_swap(&r->tat, tat, base + interval) == tat)
			return 1;
	}
	return 0; /* four lost races on one source: it is hammering us */
}

/* Global SYN meter: SYNs per 100 ms window; crossing the threshold starts
 * flood mode, which holds for flood_hold_ns after the last crossing. */
static __always_inline int flood_active(const struct shield_config *cfg,
					__u64 now)
{
	struct shield_synmeter *m;
	__u32 zero = 0;
	__u64 ws, n;

	if (!cfg->flood_syn_per_window)
		return 0;
	m = bpf_map_lookup_elem(&mxedge_synm, &zero);
	if (!m)
		return 0;
	ws = *(volatile __u64 *)&m->window_start;
	if (now - ws >= SHIELD_FLOOD_WINDOW_NS &&
	    __sync_val_compare_and_swap(&m->window_start, ws, now) == ws)
		__sync_lock_test_and_set(&m->count, 0);
	n = __sync_fetch_and_add(&m->count, 1) + 1;
	if (n > cfg->flood_syn_per_window) {
		m->flood_until = now + cfg->flood_hold_ns;
		return 1;
	}
	return now < *(volatile __u64 *)&m->flood_until;
}

static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Turns the SYN at th (IPv4 iph or IPv6 ip6h, exactly one non-NULL) into a
 * SYN-ACK carrying the cookie (RFC 4987 §3.6), MSS option only: without
 * timestamps a cookie cannot carry window scale or SACK (the kernel's own
 * cookies behave the same). Returns the new TCP header length or -1. */
static __always_inline int synack_rewrite(void *end, struct ethhdr *eth,
					  struct iphdr *iph,
					  struct ipv6hdr *ip6h,
					  struct tcphdr *th, __s64 cookie)
{
	__u8 mac[ETH_ALEN];
	__u32 seq = bpf_ntohl(th->seq), thlen = 20;
	__u16 mss = (__u16)(cookie >> 32);
	__u64 sum;
	__u16 sp;

	if ((void *)th + 24 <= end && th->doff >= 6) {
		__u8 *opt = (__u8 *)(th + 1);

		opt[0] = 2; /* RFC 9293 §3.2: MSS option, kind 2, length 4 */
		opt[1] = 4;
		opt[2] = mss >> 8;
		opt[3] = mss & 0xff;
		thlen = 24;
	}
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	sp = th->source;
	th->source = th->dest;
	th->dest = sp;
	th->ack_seq = bpf_htonl(seq + 1);
	th->seq = bpf_htonl((__u32)cookie);
	((__u8 *)th)[12] = (thlen / 4) << 4;          /* doff, reserved bits 0 */
	((__u8 *)th)[13] = 0x12;                      /* SYN | ACK */
	th->window = bpf_htons(65535);
	th->check = 0;
	th->urg_ptr = 0;

	if (iph) {
		struct {
			__be32 s, d;
			__u8 zero, proto;
			__be16 len;
		} ph;
		__be32 a = iph->saddr;

		iph->saddr = iph->daddr;
		iph->daddr = a;
		iph->tot_len = bpf_htons(20 + thlen);
		iph->id = 0;
		iph->frag_off = bpf_htons(0x4000); /* DF */
		iph->ttl = 64;
		iph->tos = 0;
		iph->check = 0;
		iph->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)iph, 20, 0));
		ph.s = iph->saddr;
		ph.d = iph->daddr;
		ph.zero = 0;
		ph.proto = IPPROTO_TCP;
		ph.len = bpf_htons(thlen);
		sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	} else if (ip6h) {
		struct {
			struct in6_addr s, d;
			__be32 len;
			__u8 zero[3], nh;
		} ph;
		struct in6_addr a = ip6h->saddr;

		ip6h->saddr = ip6h->daddr;
		ip6h->daddr = a;
		ip6h->payload_len = bpf_htons(thlen);
		ip6h->hop_limit = 64;
		ph.s = ip6h->saddr;
		ph.d = ip6h->daddr;
		ph.len = bpf_htonl(thlen);
		ph.zero[0] = ph.zero[1] = ph.zero[2] = 0;
		ph.nh = IPPROTO_TCP;
		sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	} else {
		return -1;
	}
	if (thlen == 24) {
		if ((void *)th + 24 > end)
			return -1;
		sum = bpf_csum_diff(0, 0, (__be32 *)th, 24, (__u32)sum);
	} else {
		sum = bpf_csum_diff(0, 0, (__be32 *)th, 20, (__u32)sum);
	}
	th->check = csum_fold(sum);
	return thlen;
}

/* The cookie helper takes th_len as a constant size: one call per length
 * the TCP header can have (doff 5..15). */
#define GEN_COOKIE(fn, ip, th, doff, end, out)                                 \
	do {                                                                   \
		switch (doff) {                                                \
		case 5: if ((void *)(th) + 20 <= (end)) out = fn(ip, th, 20); break; \
		case 6: if ((void *)(th) + 24 <= (end)) out = fn(ip, th, 24); break; \
		case 7: if ((void *)(th) + 28 <= (end)) out = fn(ip, th, 28); break; \
		case 8: if ((void *)(th) + 32 <= (end)) out = fn(ip, th, 32); break; \
		case 9: if ((void *)(th) + 36 <= (end)) out = fn(ip, th, 36); break; \
		case 10: if ((void *)(th) + 40 <= (end)) out = fn(ip, th, 40); break; \
		case 11: if ((void *)(th) + 44 <= (end)) out = fn(ip, th, 44); break; \
		case 12: if ((void *)(th) + 48 <= (end)) out = fn(ip, th, 48); break; \
		case 13: if ((void *)(th) + 52 <= (end)) out = fn(ip, th, 52); break; \
		case 14: if ((void *)(th) + 56 <= (end)) out = fn(ip, th, 56); break; \
		case 15: if ((void *)(th) + 60 <= (end)) out = fn(ip, th, 60); break; \
		}                                                              \
	} while (0)

enum { WALK_TCP = 0, WALK_NOT_TCP = 1, WALK_MALFORMED = 2, WALK_LATER_FRAG = 3 };

int shield_v6_walk(struct xdp_md *ctx, __u32 l3off);

/* RFC 8200 §4: walks at most SHIELD_V6_EXT_MAX extension headers after the
 * IPv6 header at l3off. Returns (WALK_* << 16) | (first-fragment << 14) |
 * offset of the upper-layer header from l3. Global: its loop is verified
 * once, not once per parse path of the caller. */
__noinline int shield_v6_walk(struct xdp_md *ctx, __u32 l3off)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6h = data + (l3off & 0x1f);
	int is_frag = 0;
	__u32 i;
	void *cur;
	__u8 nh;

	if ((void *)(ip6h + 1) > end)
		return WALK_MALFORMED << 16;
	nh = ip6h->nexthdr;
	cur = ip6h + 1;
	for (i = 0; i < SHIELD_V6_EXT_MAX; i++) {
		struct ipv6_opt_hdr *oh = cur;
		struct frag_hdr6 *fh = cur;

		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
		    nh == IPPROTO_DSTOPTS) {
			if ((void *)(oh + 1) > end)
				return WALK_MALFORMED << 16;
			nh = oh->nexthdr;
			cur += (oh->hdrlen + 1) * 8;
		} else if (nh == IPPROTO_AH) {
			if ((void *)(oh + 1) > end)
				return WALK_MALFORMED << 16;
			nh = oh->nexthdr;
			cur += (oh->hdrlen + 2) * 4;
		} else if (nh == IPPROTO_FRAGMENT) {
			if ((void *)(fh + 1) > end)
				return WALK_MALFORMED << 16;
			if (bpf_ntohs(fh->frag_off) & 0xfff8)
				return WALK_LATER_FRAG << 16;
			is_frag = 1;
			nh = fh->nexthdr;
			cur = fh + 1;
		} else {
			break;
		}
	}
	if (nh != IPPROTO_TCP) {
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
		    nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH ||
		    nh == IPPROTO_FRAGMENT) /* more than we walk */
			return WALK_MALFORMED << 16;
		return WALK_NOT_TCP << 16;
	}
	return is_frag << 14 | (int)((cur - (void *)ip6h) & 0x3fff);
}

/* ---- the program ----------------------------------------------------------- */

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

static __always_inline const struct shield_config *config(void)
{
	const struct shield_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&mxedge_cfg, &zero);
	if (!cfg || !(cfg->flags & SHIELD_CFG_VALID))
		cfg = (const struct shield_config *)&shield_defaults;
	return cfg;
}

/* Answers the SYN described by p with a cookie SYN-ACK (XDP_TX). Only for
 * plain headers (IPv4 without options, IPv6 without extension headers). */
static __always_inline int syncookie_tx(struct xdp_md *ctx,
					const struct shield_config *cfg,
					const struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 l3off = p->l3off & 0x1f, doff, l4off;
	struct ethhdr *eth = data;
	struct tcphdr *th;
	__s64 ck = -1;
	int thlen, delta;

	if (!p->plain)
		return drop(ctx, cfg, SHIELD_R_DROP_SYNFLOOD, p);
	l4off = p->family == 4 ? 20 : 40;
	th = data + l3off + l4off;
	if ((void *)(eth + 1) > end || (void *)(th + 1) > end)
		return drop(ctx, cfg, SHIELD_R_DROP_SYNFLOOD, p);
	doff = th->doff;
	if (p->family == 4) {
		struct iphdr *iph = data + l3off;

		if ((void *)(iph + 1) > end)
			return drop(ctx, cfg, SHIELD_R_DROP_SYNFLOOD, p);
		GEN_COOKIE(shield_gen_cookie_v4, iph, th, doff, end, ck);
		if (ck < 0)
			return drop(ctx, cfg, SHIELD_R_DROP_SYNFLOOD, p);
		thlen = synack_rewrite(end, eth, iph, NULL, th, ck);
	} else {
		struct ipv6hdr *ip6h = data + l3off;

		if ((void *)(ip6h + 1) > end)
			return drop(ctx, cfg, SHIELD_R_DROP_SYNFLOOD, p);
		GEN_COOKIE(shield_gen_cookie_v6, ip6h, th, doff, end, ck);
		if (ck < 0)
			return drop(ctx, cfg, SHIELD_R_DROP_SYNFLOOD, p);
		thlen = synack_rewrite(end, eth, NULL, ip6h, th, ck);
	}
	if (thlen < 0)
		return drop(ctx, cfg, SHIELD_R_DROP_SYNFLOOD, p);
	delta = (int)(l3off + l4off + thlen) - (int)(end - data);
	if (delta < 0 && bpf_xdp_adjust_tail(ctx, delta))
		return drop(ctx, cfg, SHIELD_R_DROP_SYNFLOOD, p);
	return count(ctx, SHIELD_R_TX_SYNCOOKIE, XDP_TX);
}

/* Hands the frame to the AF_XDP socket of its RX queue. The slot is looked
 * up first: with no socket bound on this queue the frame goes to the kernel
 * instead of being lost. */
static __always_inline int to_dataplane(struct xdp_md *ctx)
{
	__u32 qid = ctx->rx_queue_index;

	if (!bpf_map_lookup_elem(&xsks_map, &qid))
		return count(ctx, SHIELD_R_PASS_NO_XSK, XDP_PASS);
	count(ctx, SHIELD_R_REDIRECT, 0);
	return bpf_redirect_map(&xsks_map, qid, XDP_PASS);
}

static __always_inline const struct shield_own *own_addrs(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mxedge_own, &zero);
}

static __always_inline int own4(const struct shield_own *o, __be32 a)
{
	__u32 i;

	if (!o)
		return 0;
	for (i = 0; i < SHIELD_MAX_OWN; i++)
		if (i < o->n4 && o->v4[i] == a)
			return 1;
	return 0;
}

static __always_inline int own6(const struct shield_own *o,
				const struct shield_addr *a)
{
	__u32 i;

	if (!o)
		return 0;
	for (i = 0; i < SHIELD_MAX_OWN; i++)
		if (i < o->n6 && o->v6[i].w[0] == a->w[0] &&
		    o->v6[i].w[1] == a->w[1] && o->v6[i].w[2] == a->w[2] &&
		    o->v6[i].w[3] == a->w[3])
			return 1;
	return 0;
}

/* Non-SMTP traffic: to the dataplane when it is addressed to one of the
 * dataplane's own addresses (the kernel does not own them and would drop
 * it; DPDK's stack answers ICMP and resets unknown ports itself), else to
 * the kernel counted under `reason`. The IP header is re-read from
 * l3off; its fixed part was checked by the parser. */
static __always_inline int pass_or_own(struct xdp_md *ctx, const struct pkt *p,
				       __u32 reason)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	const struct shield_own *o = own_addrs();
	void *l3 = data + (p->l3off & 0x1f);

	if (!o || (!o->n4 && !o->n6))
		return count(ctx, reason, XDP_PASS);
	if (p->family == 4) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) <= end && own4(o, iph->daddr))
			return to_dataplane(ctx);
	} else {
		struct ipv6hdr *ip6h = l3;
		struct shield_addr d;

		if ((void *)(ip6h + 1) <= end) {
			__builtin_memcpy(&d, &ip6h->daddr, 16);
			if (own6(o, &d))
				return to_dataplane(ctx);
		}
	}
	return count(ctx, reason, XDP_PASS);
}

/* RFC 826 ARP over Ethernet for IPv4: fixed layout, the target protocol
 * address at offset 24. */
#define ARP_TPA_OFF 24
#define ARP_LEN 28

/* ARP whose target is a dataplane address: the dataplane's stack answers
 * requests for its addresses and needs the replies to its own requests
 * (both carry its address as the target). All other ARP is the kernel's. */
static __always_inline int arp_frame(struct xdp_md *ctx, void *l3)
{
	void *end = (void *)(long)ctx->data_end;
	const struct shield_own *o;
	__u8 *a = l3;
	__be32 tpa;

	if ((void *)(a + ARP_LEN) > end)
		return count(ctx, SHIELD_R_PASS_NOT_IP, XDP_PASS);
	o = own_addrs();
	if (!o || !o->n4)
		return count(ctx, SHIELD_R_PASS_NOT_IP, XDP_PASS);
	/* htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4 */
	if (a[0] != 0 || a[1] != 1 || a[2] != 0x08 || a[3] != 0 || a[4] != 6 ||
	    a[5] != 4)
		return count(ctx, SHIELD_R_PASS_NOT_IP, XDP_PASS);
	__builtin_memcpy(&tpa, a + ARP_TPA_OFF, 4);
	if (own4(o, tpa))
		return to_dataplane(ctx);
	return count(ctx, SHIELD_R_PASS_NOT_IP, XDP_PASS);
}

/* ICMPv6 right after the IPv6 header (neighbour discovery never carries
 * extension headers): to the dataplane if addressed to it, or if it is a
 * neighbour solicitation (RFC 4861 §4.3, sent to the solicited-node
 * multicast group) whose target is a dataplane address. */
static __always_inline int icmp6_frame(struct xdp_md *ctx,
				       struct ipv6hdr *ip6h)
{
	void *end = (void *)(long)ctx->data_end;
	const struct shield_own *o = own_addrs();
	__u8 *icmp = (__u8 *)(ip6h + 1);
	struct shield_addr a;

	if (!o || !o->n6)
		return count(ctx, SHIELD_R_PASS_NOT_TCP, XDP_PASS);
	__builtin_memcpy(&a, &ip6h->daddr, 16);
	if (own6(o, &a))
		return to_dataplane(ctx);
	/* type 135, code, checksum, reserved (4), target (16) */
	if ((void *)(icmp + 24) <= end && icmp[0] == 135) {
		__builtin_memcpy(&a, icmp + 8, 16);
		if (own6(o, &a))
			return to_dataplane(ctx);
	}
	return count(ctx, SHIELD_R_PASS_NOT_TCP, XDP_PASS);
}

/* IPv4 blocklist lookup for blocked(): the /24 word of generation gen and,
 * when the word says so, the /24's leaf. Returns the drop reason or 0. One
 * straight path per outcome (no match result merged with the IPv6 one),
 * so nothing is carried through the stack. */
static __always_inline __u32 block4(void *bitmap, void *slots, void *leaves,
				    __be32 saddr)
{
	__u32 host = bpf_ntohl(saddr), blk = host >> 8, idx = blk >> 6;
	struct shield_v4_word *w = bpf_map_lookup_elem(bitmap, &idx);
	const struct shield_v4_leaf *leaf;
	__u64 bit = 1ull << (blk & 63);

	if (!w)
		return 0;
	if (w->covered & bit)
		return SHIELD_R_DROP_BLOCK_PREFIX;
	if (!(w->longer & bit)) /* the common case: one array lookup */
		return 0;
	leaf = v4_leaf(w, bit, slots, leaves, blk);
	if (!leaf)
		return 0;
	bit = 1ull << (host & 63);
	idx = (host >> 6) & 3;
	if (leaf->exact[idx] & bit)
		return SHIELD_R_DROP_BLOCK_EXACT;
	if (leaf->pfx[idx] & bit)
		return SHIELD_R_DROP_BLOCK_PREFIX;
	return 0;
}

/* Is the source blocked (and not allowed)? Returns the drop reason, or 0
 * to go on. Only SMTP-port traffic gets here: the lists' scope. */
static __always_inline __u32 blocked(struct xdp_md *ctx, const struct pkt *p)
{
	__u32 list = SHIELD_LIST_BLOCK, gw, reason;
	__u32 *g = bpf_map_lookup_elem(&mxedge_gen, &list);
	int m;

	if (!g)
		return 0;
	gw = *g;
	if (gw & SHIELD_GEN_EMPTY)
		return 0;
	if (p->family == 4) {
		reason = gw & 1 ? block4(&mxedge_bw1, &mxedge_bs1, &mxedge_bl1,
					 p->src.w[3])
				: block4(&mxedge_bw0, &mxedge_bs0, &mxedge_bl0,
					 p->src.w[3]);
	} else {
		m = set_match(SHIELD_LIST_BLOCK, gw, p);
		reason = m == MATCH_NONE ? 0
			 : m == MATCH_EXACT ? SHIELD_R_DROP_BLOCK_EXACT
					    : SHIELD_R_DROP_BLOCK_PREFIX;
	}
	/* the blocklist's word says whether the allowlist is empty: then
	 * its own word is not read at all */
	if (!reason || (gw & SHIELD_GEN_ALLOW_EMPTY) ||
	    list_match(SHIELD_LIST_ALLOW, p) == MATCH_NONE)
		return reason;
	count(ctx, SHIELD_C_ALLOW_HIT, 0);
	return 0;
}

/* A well-formed SMTP-port segment from a source the lists let through:
 * rate, flood, hand-off. */
static __always_inline int shield_admit(struct xdp_md *ctx,
					const struct shield_config *cfg,
					const struct pkt *p)
{
	if ((p->tcpflags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN) {
		/* Coarse clock (tick resolution, a few ms): enough for
		 * per-second rates, and far cheaper than bpf_ktime_get_ns
		 * under a hypervisor's clocksource. */
		__u64 now = bpf_ktime_get_coarse_ns();

		if (!rate_ok(cfg, p, now)) {
			if (list_match(SHIELD_LIST_ALLOW, p) == MATCH_NONE)
				return drop(ctx, cfg, SHIELD_R_DROP_RATE, p);
			count(ctx, SHIELD_C_ALLOW_HIT, 0);
		}
		if (flood_active(cfg, now)) {
			count(ctx, SHIELD_C_FLOOD_SYN, 0);
			if (cfg->flood_mode == SHIELD_FLOOD_XDP_COOKIE)
				return syncookie_tx(ctx, cfg, p);
		}
	}

	return to_dataplane(ctx);
}

/* Is port one of the guarded ports? The four 16-bit slots are compared two
 * at a time (SWAR, two 32-bit loads instead of four loads and eight
 * branches): slots ^ port has a zero half exactly where a slot equals the
 * port, and (x - 0x00010001) & ~x & 0x80008000 is non-zero iff x has a
 * zero half. Port 0 (reserved, never a listener; it is what an unused
 * slot holds) never matches. */
static __always_inline int smtp_port(const struct shield_config *cfg,
				     __u16 port)
{
	__u32 pp = port * 0x00010001u, a, b;

	__builtin_memcpy(&a, (const void *)&cfg->ports[0], 4);
	__builtin_memcpy(&b, (const void *)&cfg->ports[2], 4);
	a ^= pp;
	b ^= pp;
	return port && ((((a - 0x00010001u) & ~a) | ((b - 0x00010001u) & ~b)) &
			0x80008000u);
}

SEC("xdp")
int mxedge_shield(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	const struct shield_config *cfg;
	struct ethhdr *eth = data;
	struct pkt p = {};
	struct tcphdr *th;
	__u32 ip_end, l4off, i, reason;
	int is_frag = 0;
	void *l3, *l4;
	__u16 proto;

	if ((void *)(eth + 1) > end)
		return count(ctx, SHIELD_R_PASS_NOT_IP, XDP_PASS);
	proto = eth->h_proto;
	l3 = eth + 1;
	for (i = 0; i < 2; i++) { /* 802.1Q / 802.1ad, up to two tags */
		struct vlan_hdr *vh = l3;

		if (proto != bpf_htons(ETH_P_8021Q) &&
		    proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > end)
			return count(ctx, SHIELD_R_PASS_NOT_IP, XDP_PASS);
		proto = vh->encap_proto;
		l3 = vh + 1;
	}
	p.l3off = l3 - data;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = l3;
		__u32 hl, tot;
		__u16 frag;

		p.family = 4;
		if ((void *)(iph + 1) > end)
			return drop(ctx, config(), SHIELD_R_DROP_MALFORMED, &p);
		hl = iph->ihl * 4;
		tot = bpf_ntohs(iph->tot_len);
		if (iph->version != 4 || hl < 20 || tot < hl ||
		    l3 + tot > end)
			return drop(ctx, config(), SHIELD_R_DROP_MALFORMED, &p);
		if (iph->protocol != IPPROTO_TCP)
			return pass_or_own(ctx, &p, SHIELD_R_PASS_NOT_TCP);
		frag = bpf_ntohs(iph->frag_off);
		if (frag & 0x1fff) /* no TCP header here: the kernel decides */
			return count(ctx, SHIELD_R_PASS_FRAGMENT, XDP_PASS);
		is_frag = !!(frag & 0x2000);
		p.plain = hl == 20;
		p.src.w[2] = bpf_htonl(0xffff);
		p.src.w[3] = iph->saddr;
		l4off = hl;
		ip_end = tot;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = l3;
		__u8 nh;

		p.family = 6;
		if ((void *)(ip6h + 1) > end)
			return drop(ctx, config(), SHIELD_R_DROP_MALFORMED, &p);
		ip_end = 40 + bpf_ntohs(ip6h->payload_len);
		if (ip6h->version != 6 || l3 + ip_end > end)
			return drop(ctx, config(), SHIELD_R_DROP_MALFORMED, &p);
		__builtin_memcpy(&p.src, &ip6h->saddr, 16);
		nh = ip6h->nexthdr;
		if (nh == IPPROTO_ICMPV6)
			return icmp6_frame(ctx, ip6h);
		p.plain = nh == IPPROTO_TCP;
		if (p.plain) {
			l4off = 40;
		} else { /* extension headers: the rare case, walked apart */
			int w = shield_v6_walk(ctx, p.l3off);

			if (w >> 16 == WALK_NOT_TCP)
				return pass_or_own(ctx, &p, SHIELD_R_PASS_NOT_TCP);
			if (w >> 16 == WALK_LATER_FRAG)
				return count(ctx, SHIELD_R_PASS_FRAGMENT, XDP_PASS);
			if (w >> 16 != WALK_TCP)
				return drop(ctx, config(), SHIELD_R_DROP_MALFORMED, &p);
			l4off = w & 0x3fff;
			is_frag = (w >> 14) & 1;
		}
		if (l4off > ip_end)
			return drop(ctx, config(), SHIELD_R_DROP_MALFORMED, &p);
	} else if (proto == bpf_htons(ETH_P_ARP)) {
		return arp_frame(ctx, l3);
	} else {
		return count(ctx, SHIELD_R_PASS_NOT_IP, XDP_PASS);
	}

	l4off &= 0x3fff; /* bounded for the verifier; real values are far smaller */
	l4 = l3 + l4off;
	th = l4;
	if (l4 + 4 > end || l4off + 4 > ip_end) /* no room even for the ports */
		return drop(ctx, config(), SHIELD_R_DROP_MALFORMED, &p);
	p.dport = bpf_ntohs(th->dest);
	/* Read here, not at the top: traffic that is not TCP never needs it,
	 * and the pointer is not carried (spilled) through the parser. */
	cfg = config();
	if (!smtp_port(cfg, p.dport))
		return pass_or_own(ctx, &p, SHIELD_R_PASS_NOT_SMTP);
	/* Fragmented TCP to an MX is never needed (PMTUD, RFC 1191/8201) and
	 * the dataplane does not reassemble. */
	if (is_frag)
		return drop(ctx, cfg, SHIELD_R_DROP_FRAGMENT, &p);
	/* The lists before the rest of the TCP header: a blocked source is
	 * dropped (as blocked) whatever its header says, so the blocked path
	 * does no more than parse, look up and count. Everything the lists
	 * let through is checked in full below. */
	reason = blocked(ctx, &p);
	if (reason)
		return drop(ctx, cfg, reason, &p);
	if ((void *)(th + 1) > end || th->doff < 5 ||
	    l4off + th->doff * 4 > ip_end)
		return drop(ctx, cfg, SHIELD_R_DROP_MALFORMED, &p);
	p.tcpflags = ((__u8 *)th)[13];
	/* RFC 9293 §3.10.7: a SYN with RST or FIN has no meaning. */
	if ((p.tcpflags & TCPF_SYN) && (p.tcpflags & (TCPF_RST | TCPF_FIN)))
		return drop(ctx, cfg, SHIELD_R_DROP_MALFORMED, &p);
	p.l4off = l4off;
	return shield_admit(ctx, cfg, &p);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
