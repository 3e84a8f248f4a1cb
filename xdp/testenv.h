/* testenv.h — helpers shared by the shield's unit tests and benchmarks
 * (not part of the library): crafted packets, bpf_prog_test_run_opts with
 * an xdp_md context, a private network namespace with a multi-queue veth,
 * and an AF_XDP socket to fill an xsks_map slot. Prefix testenv_. */
#ifndef MXEDGE_XDP_TESTENV_H
#define MXEDGE_XDP_TESTENV_H

#include <stddef.h>
#include <stdint.h>

struct testenv_pkt {
	int family;            /* 4 or 6 */
	int vlans;             /* 0, 1 or 2 tags */
	const char *src, *dst; /* addresses; NULL: 198.18.0.2 / 2001:db8::2 -> .1 */
	uint16_t sport, dport;
	uint8_t tcpflags;      /* e.g. 0x02 SYN */
	int ip_opt_words;      /* IPv4 options, 32-bit words (0..10) */
	int v6_ext;            /* IPv6 destination-options headers before TCP */
	int frag;              /* 0 none, 1 first fragment (MF), 2 later fragment */
	int mss;               /* add an MSS option (TCP header 24 bytes) */
	int payload;           /* payload bytes after the TCP header */
	uint8_t proto;         /* 0: TCP; else this L4 protocol (e.g. 17) */
	uint32_t seq;
};

/* Builds the packet into buf; returns its length or 0 if cap is too small.
 * Checksums are valid. */
size_t testenv_build(uint8_t *buf, size_t cap, const struct testenv_pkt *p);

/* Runs prog once on pkt with ingress_ifindex/rx_queue_index (both 0: no
 * ctx). out (may be NULL) receives the resulting packet, *out_len its size.
 * Returns the XDP action or -errno. */
int testenv_run(int prog_fd, const void *pkt, size_t len, int ifindex,
		uint32_t queue, void *out, uint32_t *out_len);

/* Enters a new network namespace with veth mxs0/mxs1, 4 RX queues each, up.
 * Returns mxs0's ifindex or -errno. */
int testenv_netns(void);

/* Binds an AF_XDP socket (copy mode, no program load) to ifindex/queue and
 * stores it in xsks_map_fd[queue]. Returns 0 or -errno. */
int testenv_xsk_bind(int ifindex, uint32_t queue, int xsks_map_fd);
/* Releases every socket testenv_xsk_bind created. */
void testenv_xsk_close_all(void);

/* Pins the calling thread to cpu. Returns 0 or -errno. */
int testenv_pin_cpu(int cpu);

#endif
