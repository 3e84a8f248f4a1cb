/*
 * dp_flow.c - which worker lcore owns a received frame.
 *
 * Sessions never migrate between lcores (DESIGN.md hot-path rules): every
 * frame of a TCP connection must reach the one lcore whose TCP stack holds
 * the connection. The owner is a function of the connection's flow hash:
 * Toeplitz (the RSS hash NICs compute) with a key made of the 16-bit
 * pattern 0x6d5a repeated. With that key the hash is symmetric - swapping
 * source and destination addresses (shifted by 32 or 128 bits) and ports
 * (shifted by 16) meets the same key bits because the key repeats every 16
 * bits (Woo and Park, "Scalable TCP Session Monitoring with Symmetric
 * Receive-side Scaling", 2012) - so a segment and an ICMP error quoting the
 * segment we sent hash alike. Because it is the NIC's own hash, a NIC (or
 * the kernel under af_xdp, ethtool -X) programmed with the same key and an
 * equal-weight indirection table puts frames on the owner's queue already
 * and the software hand-off becomes the exception.
 *
 * Pure functions over frame bytes: no DPDK state, unit-tested with cmocka.
 */
#include <string.h>

#include <rte_thash.h>

#include "dp.h"

#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_IPV6 0x86dd
#define IPPROTO_TCP_ 6
#define IPPROTO_ICMP_ 1
#define IPPROTO_ICMPV6_ 58

/* 0x6d5a repeated: 40 bytes, enough for the IPv6 4-tuple (rte_softrss
 * reads one 32-bit key word past the tuple: 9 + 1 words). */
const uint8_t dp_rss_key[DP_RSS_KEY_LEN] = {
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
	0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
};

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

uint32_t dp_flow_hash(const uint8_t *key, int family, const uint8_t *src,
		      const uint8_t *dst, uint16_t sport, uint16_t dport)
{
	/* Input order of the RSS spec (Microsoft "RSS hashing"): source
	 * address, destination address, source port, destination port, each
	 * as on the wire; rte_softrss wants 32-bit words in host order. */
	uint32_t t[9];
	unsigned n = 0, i, words = family == 6 ? 4 : 1;

	for (i = 0; i < words; i++)
		t[n++] = rd32(src + 4 * i);
	for (i = 0; i < words; i++)
		t[n++] = rd32(dst + 4 * i);
	t[n++] = (uint32_t)sport << 16 | dport;
	return rte_softrss(t, n, key);
}

/* The TCP 4-tuple of an IPv4 packet at @ip (@len bytes), or -1 when it is
 * not an unfragmented TCP segment with its ports present. */
static int ip4_tcp_hash(const uint8_t *ip, uint32_t len, uint32_t *hash)
{
	uint32_t ihl;

	if (len < 20 || (ip[0] >> 4) != 4)
		return -1;
	ihl = (uint32_t)(ip[0] & 0xf) * 4;
	/* A fragment other than the first has no ports; the first one's
	 * ports would send it elsewhere than its tail: both go to worker 0,
	 * whose stack drops fragments (counted as ip_frag). */
	if (ihl < 20 || len < ihl + 4 || (rd16(ip + 6) & 0x3fff) != 0 ||
	    ip[9] != IPPROTO_TCP_)
		return -1;
	*hash = dp_flow_hash(dp_rss_key, 4, ip + 12, ip + 16, rd16(ip + ihl),
			     rd16(ip + ihl + 2));
	return 0;
}

static int ip6_tcp_hash(const uint8_t *ip, uint32_t len, uint32_t *hash)
{
	/* Extension headers are not followed: the stack accepts TCP only
	 * directly after the fixed header. */
	if (len < 44 || (ip[0] >> 4) != 6 || ip[6] != IPPROTO_TCP_)
		return -1;
	*hash = dp_flow_hash(dp_rss_key, 6, ip + 8, ip + 24, rd16(ip + 40),
			     rd16(ip + 42));
	return 0;
}

static enum dp_flow_class ip4_class(const uint8_t *ip, uint32_t len,
				    uint32_t *hash)
{
	uint32_t ihl;
	const uint8_t *ic;

	if (ip4_tcp_hash(ip, len, hash) == 0)
		return DP_FLOW_TCP;
	if (len < 20 || (ip[0] >> 4) != 4 || ip[9] != IPPROTO_ICMP_)
		return DP_FLOW_ANY;
	ihl = (uint32_t)(ip[0] & 0xf) * 4;
	if (ihl < 20 || len < ihl + 8 || (rd16(ip + 6) & 0x3fff) != 0)
		return DP_FLOW_ANY;
	ic = ip + ihl;
	/* RFC 792: destination unreachable (3, incl. "fragmentation needed",
	 * RFC 1191), time exceeded (11), parameter problem (12) quote the
	 * header of the datagram we sent: its connection's owner needs it. */
	if ((ic[0] == 3 || ic[0] == 11 || ic[0] == 12) &&
	    ip4_tcp_hash(ic + 8, len - ihl - 8, hash) == 0)
		return DP_FLOW_EMBEDDED;
	return DP_FLOW_ANY;
}

static enum dp_flow_class ip6_class(const uint8_t *ip, uint32_t len,
				    uint32_t *hash)
{
	const uint8_t *ic;

	if (ip6_tcp_hash(ip, len, hash) == 0)
		return DP_FLOW_TCP;
	if (len < 48 || (ip[0] >> 4) != 6 || ip[6] != IPPROTO_ICMPV6_)
		return DP_FLOW_ANY;
	ic = ip + 40;
	/* RFC 4443 §3: errors 1..4 (packet too big included) quote our
	 * packet after a 4-byte field. */
	if (ic[0] >= 1 && ic[0] <= 4 && ip6_tcp_hash(ic + 8, len - 48, hash) == 0)
		return DP_FLOW_EMBEDDED;
	/* RFC 4861 §7.2.5: an advertisement completes the resolution some
	 * worker started; every worker that probed must see it. */
	if (ic[0] == 136)
		return DP_FLOW_NEIGH_ALL;
	return DP_FLOW_ANY;
}

enum dp_flow_class dp_flow_classify(const uint8_t *f, uint32_t len,
				    uint32_t *hash)
{
	uint16_t type;

	if (len < 14)
		return DP_FLOW_ANY;
	type = rd16(f + 12);
	switch (type) {
	case ETH_P_IP:
		return ip4_class(f + 14, len - 14, hash);
	case ETH_P_IPV6:
		return ip6_class(f + 14, len - 14, hash);
	case ETH_P_ARP:
		/* RFC 826: a reply completes one worker's resolution; a
		 * request teaches every worker the sender's address. */
		if (len >= 14 + 8 && rd16(f + 14 + 6) == 2)
			return DP_FLOW_NEIGH_ALL;
		if (len >= 14 + 28 && rd16(f + 14 + 6) == 1)
			return DP_FLOW_ARP_REQUEST;
		return DP_FLOW_ANY;
	default:
		return DP_FLOW_ANY;
	}
}

void dp_flow_arp_as_reply(uint8_t *f, uint32_t len)
{
	/* The copy for the other workers: RFC 826's merge step runs for
	 * replies as for requests, but only requests are answered, so each
	 * worker learns the sender and the client gets one reply, not one per
	 * worker. */
	if (len >= 14 + 8 && rd16(f + 12) == ETH_P_ARP)
		f[14 + 7] = 2;
}
