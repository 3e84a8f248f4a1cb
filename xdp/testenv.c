/* testenv.c — see testenv.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/if_ether.h>
#include <xdp/xsk.h>

#include "testenv.h"

static uint32_t csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)(p[len - 1] << 8);
	return sum;
}

static uint16_t csum_fin(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((uint16_t)~sum);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = (v >> 16) & 0xff;
	p[2] = (v >> 8) & 0xff;
	p[3] = v & 0xff;
}

size_t testenv_build(uint8_t *buf, size_t cap, const struct testenv_pkt *p)
{
	static const uint8_t dmac[6] = { 0x02, 0, 0, 0, 0, 0x01 };
	static const uint8_t smac[6] = { 0x02, 0, 0, 0, 0, 0x02 };
	uint8_t saddr[16], daddr[16];
	size_t off = 0, l3, l4, iplen, thlen, l4len, total;
	uint8_t proto = p->proto ? p->proto : 6;
	int i;

	thlen = proto == 6 ? (p->mss ? 24 : 20) : 8;
	l4len = thlen + (size_t)p->payload;
	if (p->family == 4) {
		iplen = 20 + (size_t)p->ip_opt_words * 4;
	} else {
		iplen = 40 + (size_t)p->v6_ext * 8 + (p->frag ? 8 : 0);
	}
	total = 14 + (size_t)p->vlans * 4 + iplen + l4len;
	if (total > cap)
		return 0;
	memset(buf, 0, total);
	memcpy(buf, dmac, 6);
	memcpy(buf + 6, smac, 6);
	off = 12;
	for (i = 0; i < p->vlans; i++) {
		put16(buf + off, i == 0 && p->vlans == 2 ? 0x88a8 : 0x8100);
		put16(buf + off + 2, (uint16_t)(100 + i));
		off += 4;
	}
	put16(buf + off, p->family == 4 ? 0x0800 : 0x86dd);
	off += 2;
	l3 = off;
	if (p->family == 4) {
		inet_pton(AF_INET, p->src ? p->src : "198.18.0.2", saddr);
		inet_pton(AF_INET, p->dst ? p->dst : "198.18.0.1", daddr);
		buf[l3] = 0x40 | (uint8_t)(iplen / 4);
		put16(buf + l3 + 2, (uint16_t)(iplen + l4len));
		put16(buf + l3 + 4, 0x1234);
		put16(buf + l3 + 6, p->frag == 1 ? 0x2000 : p->frag == 2 ? 0x0010 : 0x4000);
		buf[l3 + 8] = 64;
		buf[l3 + 9] = proto;
		memcpy(buf + l3 + 12, saddr, 4);
		memcpy(buf + l3 + 16, daddr, 4);
		for (i = 0; i < p->ip_opt_words * 4; i++)
			buf[l3 + 20 + i] = 1; /* NOP options */
		put16(buf + l3 + 10, ntohs(csum_fin(csum_add(0, buf + l3, iplen))));
	} else {
		size_t nh_off = l3 + 6, cur = l3 + 40;

		inet_pton(AF_INET6, p->src ? p->src : "2001:db8::2", saddr);
		inet_pton(AF_INET6, p->dst ? p->dst : "2001:db8::1", daddr);
		buf[l3] = 0x60;
		put16(buf + l3 + 4, (uint16_t)(iplen - 40 + l4len));
		buf[l3 + 7] = 64;
		memcpy(buf + l3 + 8, saddr, 16);
		memcpy(buf + l3 + 24, daddr, 16);
		for (i = 0; i < p->v6_ext; i++) {
			buf[nh_off] = 60; /* destination options, 8 bytes, PadN */
			nh_off = cur;
			buf[cur + 1] = 0;
			buf[cur + 2] = 1;
			buf[cur + 3] = 4;
			cur += 8;
		}
		if (p->frag) {
			buf[nh_off] = 44;
			nh_off = cur;
			put16(buf + cur + 2, p->frag == 1 ? 0x0001 : 0x0100);
			put32(buf + cur + 4, 0xabcd);
			cur += 8;
		}
		buf[nh_off] = proto;
	}
	l4 = l3 + iplen;
	if (proto == 6) {
		put16(buf + l4, p->sport ? p->sport : 40000);
		put16(buf + l4 + 2, p->dport);
		put32(buf + l4 + 4, p->seq ? p->seq : 1000);
		buf[l4 + 12] = (uint8_t)((thlen / 4) << 4);
		buf[l4 + 13] = p->tcpflags;
		put16(buf + l4 + 14, 64240);
		if (p->mss) {
			buf[l4 + 20] = 2;
			buf[l4 + 21] = 4;
			put16(buf + l4 + 22, (uint16_t)p->mss);
		}
	} else {
		put16(buf + l4, p->sport ? p->sport : 40000);
		put16(buf + l4 + 2, p->dport);
		put16(buf + l4 + 4, (uint16_t)l4len);
	}
	for (i = 0; i < p->payload; i++)
		buf[l4 + thlen + i] = 'x';
	{
		uint32_t sum = 0;
		uint8_t ph[4] = { 0, 0, 0, proto };

		if (p->family == 4) {
			sum = csum_add(sum, saddr, 4);
			sum = csum_add(sum, daddr, 4);
			sum += proto + (uint32_t)l4len;
		} else {
			uint8_t len32[4];

			put32(len32, (uint32_t)l4len);
			sum = csum_add(sum, saddr, 16);
			sum = csum_add(sum, daddr, 16);
			sum = csum_add(sum, len32, 4);
			sum = csum_add(sum, ph, 4);
		}
		sum = csum_add(sum, buf + l4, l4len);
		put16(buf + l4 + (proto == 6 ? 16 : 6), ntohs(csum_fin(sum)));
	}
	return total;
}

int testenv_run(int prog_fd, const void *pkt, size_t len, int ifindex,
		uint32_t queue, void *out, uint32_t *out_len)
{
	struct xdp_md md = { .data_end = (uint32_t)len, /* the frame, not empty */
			     .ingress_ifindex = (uint32_t)ifindex,
			     .rx_queue_index = queue };
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt,
		    .data_size_in = (uint32_t)len, .repeat = 1);
	int err;

	if (ifindex) {
		o.ctx_in = &md;
		o.ctx_size_in = sizeof(md);
	}
	if (out) {
		o.data_out = out;
		o.data_size_out = out_len ? *out_len : 0;
	}
	err = bpf_prog_test_run_opts(prog_fd, &o);
	if (err)
		return -errno;
	if (out_len)
		*out_len = o.data_size_out;
	return (int)o.retval;
}

int testenv_netns(void)
{
	int idx;

	if (unshare(CLONE_NEWNET))
		return -errno;
	if (system("ip link add mxs0 numrxqueues 4 numtxqueues 4 type veth peer "
		   "name mxs1 numrxqueues 4 numtxqueues 4 && ip link set mxs0 up && "
		   "ip link set mxs1 up && ip link set lo up"))
		return -EIO;
	idx = (int)if_nametoindex("mxs0");
	return idx ? idx : -ENODEV;
}

enum { XSK_MAX = 8, XSK_FRAMES = 64 };

static struct {
	struct xsk_socket *xsk;
	struct xsk_umem *umem;
	void *area;
	struct xsk_ring_prod fq;
	struct xsk_ring_cons cq, rx;
	struct xsk_ring_prod tx;
} xsks[XSK_MAX];
static int n_xsks;

int testenv_xsk_bind(int ifindex, uint32_t queue, int xsks_map_fd)
{
	struct xsk_socket_config sc = {
		.rx_size = XSK_RING_CONS__DEFAULT_NUM_DESCS,
		.tx_size = XSK_RING_PROD__DEFAULT_NUM_DESCS,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.bind_flags = XDP_COPY,
	};
	size_t size = (size_t)XSK_FRAMES * XSK_UMEM__DEFAULT_FRAME_SIZE;
	char ifname[IF_NAMESIZE];
	int err, fd;

	if (n_xsks >= XSK_MAX || !if_indextoname((unsigned)ifindex, ifname))
		return -EINVAL;
	xsks[n_xsks].area = mmap(NULL, size, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (xsks[n_xsks].area == MAP_FAILED)
		return -errno;
	err = xsk_umem__create(&xsks[n_xsks].umem, xsks[n_xsks].area, size,
			       &xsks[n_xsks].fq, &xsks[n_xsks].cq, NULL);
	if (err)
		goto fail;
	err = xsk_socket__create(&xsks[n_xsks].xsk, ifname, queue,
				 xsks[n_xsks].umem, &xsks[n_xsks].rx,
				 &xsks[n_xsks].tx, &sc);
	if (err)
		goto fail;
	fd = xsk_socket__fd(xsks[n_xsks].xsk);
	if (bpf_map_update_elem(xsks_map_fd, &queue, &fd, BPF_ANY)) {
		err = -errno;
		goto fail;
	}
	n_xsks++;
	return 0;
fail:
	if (xsks[n_xsks].xsk)
		xsk_socket__delete(xsks[n_xsks].xsk);
	if (xsks[n_xsks].umem)
		xsk_umem__delete(xsks[n_xsks].umem);
	munmap(xsks[n_xsks].area, size);
	memset(&xsks[n_xsks], 0, sizeof(xsks[0]));
	return err;
}

void testenv_xsk_close_all(void)
{
	size_t size = (size_t)XSK_FRAMES * XSK_UMEM__DEFAULT_FRAME_SIZE;

	while (n_xsks > 0) {
		n_xsks--;
		xsk_socket__delete(xsks[n_xsks].xsk);
		xsk_umem__delete(xsks[n_xsks].umem);
		munmap(xsks[n_xsks].area, size);
		memset(&xsks[n_xsks], 0, sizeof(xsks[0]));
	}
}

int testenv_pin_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}
