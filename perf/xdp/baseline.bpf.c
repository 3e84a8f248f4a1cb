// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0)
/* baseline.bpf.c — reference programs for bench_shield: the empty programs
 * (the test_run harness floor) and a one-lookup LPM-trie filter (the
 * structure issue 6 names, measured against the shield's O(1) layout). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr;
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 2 * 1024 * 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} bench_lpm_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024 * 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} bench_lpm_v6 SEC(".maps");

SEC("xdp")
int bench_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int bench_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

/* One exact-match hash lookup of the IPv4 source and nothing else: the
 * shield's /24 leaf hash (4-byte key, 64-byte value, no prealloc, 1 Mi
 * entries) against xdp-filter's map (per-CPU, 4-byte value, preallocated).
 * They tell what the hash lookup itself costs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024 * 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64[8]);
} bench_hash_leaf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} bench_hash_pc SEC(".maps");

static __always_inline int hash_src4(struct xdp_md *ctx, void *map)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 k;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	k = ip->saddr;
	return bpf_map_lookup_elem(map, &k) ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int bench_hash_leaf4(struct xdp_md *ctx)
{
	return hash_src4(ctx, &bench_hash_leaf);
}

SEC("xdp")
int bench_hash_pc4(struct xdp_md *ctx)
{
	return hash_src4(ctx, &bench_hash_pc);
}

/* Source address in an LPM trie -> drop, else pass. No VLAN, no ports:
 * the least an LPM-based shield would do. */
SEC("xdp")
int bench_lpm(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		struct lpm_v4_key k = { .prefixlen = 32 };

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		k.addr = ip->saddr;
		return bpf_map_lookup_elem(&bench_lpm_v4, &k) ? XDP_DROP : XDP_PASS;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct lpm_v6_key k = { .prefixlen = 128 };

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		__builtin_memcpy(k.addr, &ip6->saddr, 16);
		return bpf_map_lookup_elem(&bench_lpm_v6, &k) ? XDP_DROP : XDP_PASS;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
