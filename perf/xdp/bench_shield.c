/* bench_shield.c — ns/packet of the XDP shield through bpf_prog_test_run_opts
 * with a large blocklist loaded, beside the empty XDP_DROP/XDP_PASS
 * programs, a one-lookup LPM-trie filter and xdp-tools' xdp-filter objects,
 * on the same packets in the same run; plus the time to load the list.
 * Results: JSON and a Markdown table (medians of several runs).
 *
 *   bench_shield --baseline OBJ [--xdpfilt-dir DIR] [--prefixes N] [--hash-refs]
 *                [--repeat R] [--runs K] [--no-lpm] [--out PREFIX] [--smoke]
 *                [--variant OBJ]... [--variant-any OBJ]... [--xdpfilt-entries N]
 * --hash-refs adds two one-lookup reference programs (a hash like the
 * shield's /24 leaves, and one like xdp-filter's): what a lookup costs.
 * --variant loads another build of shield.bpf.o on the very same maps (an
 * A/B of program changes inside one run: the machine's noise hits both);
 * --variant-any does the same without checking its verdicts (ablations:
 * builds cut short at some point of the program to time what precedes it).
 * --xdpfilt-entries sizes xdp-filter's filter_ipv4 to N entries and fills
 * it with N - 1 random sources besides the blocked one, so both programs
 * look up in a map of the same size (default: its own 10 000, one entry).
 * Root only (BPF, private network namespace). Bounded: runs*cases*programs
 * test runs of `repeat` packets each.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "shield.h"
#include "testenv.h"

enum { MAX_PROGS = 14, MAX_CASES = 12, MAX_RUNS = 31 };

struct prog {
	const char *name;
	int fd;
	struct bpf_object *obj;
};

struct bcase {
	const char *name;
	struct testenv_pkt pkt;
	uint32_t queue;
	int shield_expect;     /* XDP action the shield must return */
	int rate_limit;        /* measure with the per-source rate limit on */
	uint8_t frame[256];
	size_t len;
	double ns[MAX_PROGS][MAX_RUNS];
	int verdict[MAX_PROGS];
};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rng_state = x;
	return x;
}

/* Random prefix outside 198.18.0.0/15 and 2001:db8::/32 (the benchmark's
 * own packets live there). Mix: 60% IPv4 /24, 15% IPv4 /16../23,
 * 5% IPv4 /25../31, 10% IPv4 /32, 10% IPv6 /32../64 (5 lengths). */
static void random_cidr(struct shield_cidr *c)
{
	unsigned r = (unsigned)(rng() % 100);
	uint32_t a;

	memset(c, 0, sizeof(*c));
	if (r >= 90) {
		static const uint8_t lens[5] = { 32, 40, 48, 56, 64 };
		uint64_t hi = rng();

		c->family = 6;
		c->plen = lens[rng() % 5];
		hi = (hi & 0x00ffffffffffffffull) | 0x2a00000000000000ull; /* 2a00::/8 */
		for (int i = 0; i < 8; i++)
			c->addr[i] = (uint8_t)(hi >> (56 - 8 * i));
		for (int i = c->plen / 8; i < 16; i++)
			c->addr[i] = 0;
		return;
	}
	c->family = 4;
	c->plen = r < 60 ? 24 : r < 75 ? (uint8_t)(16 + rng() % 8)
		: r < 80 ? (uint8_t)(25 + rng() % 7) : 32;
	do {
		a = (uint32_t)rng();
	} while ((a >> 17) == (0xc6120000u >> 17) || (a >> 24) == 0 || (a >> 28) >= 0xe);
	a &= c->plen ? 0xffffffffu << (32 - c->plen) : 0;
	a = htonl(a);
	memcpy(c->addr, &a, 4);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
	double t[MAX_RUNS];

	memcpy(t, v, sizeof(double) * (size_t)n);
	qsort(t, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* The fastest run: noise from a shared machine only ever adds time, so
 * the minimum is the steadier estimate of a program's own cost. */
static double minimum(const double *v, int n)
{
	double m = v[0];
	int i;

	for (i = 1; i < n; i++)
		if (v[i] < m)
			m = v[i];
	return m;
}

/* One timed test run: average ns per packet as the kernel measures it. */
static int time_run(int fd, const struct bcase *c, int ifindex, uint32_t repeat,
		    double *ns, int *verdict)
{
	struct xdp_md md = { .data_end = (uint32_t)c->len,
			     .ingress_ifindex = (uint32_t)ifindex,
			     .rx_queue_index = c->queue };
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = c->frame,
		    .data_size_in = (uint32_t)c->len, .ctx_in = &md,
		    .ctx_size_in = sizeof(md), .repeat = repeat);

	if (bpf_prog_test_run_opts(fd, &o))
		return -errno;
	*ns = (double)o.duration;
	*verdict = (int)o.retval;
	return 0;
}

/* A program that rewrites the packet (the cookie SYN-ACK) cannot be timed
 * with repeat > 1 — the second repetition would see its own output — nor in
 * live-frames mode, where recycled pages keep the rewritten contents. So:
 * n single runs on a fresh copy each, median of the kernel's per-run time
 * (includes the timer overhead, identical for the reference programs). */
static int time_single(int fd, const uint8_t *frame, size_t len, int ifindex,
		       int n, double *ns)
{
	static double v[4001];
	uint8_t out[256];
	int i;

	if (n > 4001)
		n = 4001;
	for (i = 0; i < n; i++) {
		struct xdp_md md = { .data_end = (uint32_t)len,
				     .ingress_ifindex = (uint32_t)ifindex };
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame,
			    .data_size_in = (uint32_t)len, .ctx_in = &md,
			    .ctx_size_in = sizeof(md), .repeat = 1,
			    .data_out = out, .data_size_out = sizeof(out));

		if (bpf_prog_test_run_opts(fd, &o))
			return -errno;
		v[i] = (double)o.duration;
	}
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	*ns = v[n / 2];
	return 0;
}

/* Maps of a loaded program by name: a variant of the shield reuses them. */
static int prog_map_fd(int prog_fd, const char *name)
{
	uint32_t ids[64], i;
	struct bpf_prog_info info = { .nr_map_ids = 64,
				      .map_ids = (uint64_t)(unsigned long)ids };
	uint32_t len = sizeof(info);

	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
		return -errno;
	for (i = 0; i < info.nr_map_ids && i < 64; i++) {
		struct bpf_map_info mi = { 0 };
		uint32_t mlen = sizeof(mi);
		int fd = bpf_map_get_fd_by_id(ids[i]);

		if (fd < 0)
			continue;
		if (!bpf_obj_get_info_by_fd(fd, &mi, &mlen) && !strcmp(mi.name, name))
			return fd;
		close(fd);
	}
	return -ENOENT;
}

/* Opens and loads a BPF object without pins. share_fd >= 0: every map
 * named like one of that program's maps is that map. filt_entries > 0:
 * xdp-filter's filter_ipv4 gets that many entries. */
static struct bpf_object *open_obj_ex(const char *path, int share_fd,
				      uint32_t filt_entries)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_map *m;
	struct bpf_program *p;

	if (!obj)
		return NULL;
	/* no pins in /sys/fs/bpf from a benchmark */
	bpf_object__for_each_map(m, obj) {
		bpf_map__set_pin_path(m, NULL);
		if (filt_entries && !strcmp(bpf_map__name(m), "filter_ipv4"))
			bpf_map__set_max_entries(m, filt_entries);
		if (share_fd >= 0) {
			int fd = prog_map_fd(share_fd, bpf_map__name(m));

			if (fd >= 0) {
				int err = bpf_map__reuse_fd(m, fd);

				close(fd);
				if (err) {
					bpf_object__close(obj);
					return NULL;
				}
			}
		}
	}
	bpf_object__for_each_program(p, obj)
		bpf_program__set_type(p, BPF_PROG_TYPE_XDP);
	if (bpf_object__load(obj)) {
		bpf_object__close(obj);
		return NULL;
	}
	return obj;
}

static struct bpf_object *open_obj(const char *path)
{
	return open_obj_ex(path, -1, 0);
}

static const char *verdict_name(int v)
{
	switch (v) {
	case XDP_ABORTED: return "ABORTED";
	case XDP_DROP: return "DROP";
	case XDP_PASS: return "PASS";
	case XDP_TX: return "TX";
	case XDP_REDIRECT: return "REDIRECT";
	default: return "?";
	}
}

/* Fills xdp-filter's filter_ipv4 (per-CPU hash: flags in the low bits,
 * MAP_FLAG_SRC = 1) with the benchmark's exact blocked source. The alw_*
 * objects are xdp-filter's "--policy allow" programs: pass by default, drop
 * what the maps list — a blocklist, the same job as the shield's. */
static uint64_t rng(void);

static int xdpfilt_deny_src(struct bpf_object *obj, const char *addr,
			    uint32_t entries)
{
	struct bpf_map *m = bpf_object__find_map_by_name(obj, "filter_ipv4");
	int ncpu = libbpf_num_possible_cpus(), i, err;
	uint64_t *vals;
	uint32_t key, n;

	if (!m || ncpu < 1)
		return -ENOENT;
	vals = calloc((size_t)ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	for (i = 0; i < ncpu; i++)
		vals[i] = 1;
	inet_pton(AF_INET, addr, &key);
	err = bpf_map_update_elem(bpf_map__fd(m), &key, vals, BPF_ANY) ? -errno : 0;
	/* other sources, none in the benchmark's 198.18.0.0/15 */
	for (n = 1; !err && n < entries; n++) {
		uint32_t k = (uint32_t)rng() | 0x01000000u;

		if ((ntohl(k) >> 17) == (0xc6120000u >> 17))
			continue;
		if (bpf_map_update_elem(bpf_map__fd(m), &k, vals, BPF_ANY))
			err = -errno;
	}
	free(vals);
	return err;
}

struct lpm_v4_key {
	uint32_t prefixlen;
	uint32_t addr;
};

struct lpm_v6_key {
	uint32_t prefixlen;
	uint8_t addr[16];
};

static double load_lpm(struct bpf_object *obj, const struct shield_cidr *cidrs,
		       size_t n)
{
	int f4 = bpf_map__fd(bpf_object__find_map_by_name(obj, "bench_lpm_v4"));
	int f6 = bpf_map__fd(bpf_object__find_map_by_name(obj, "bench_lpm_v6"));
	double t0 = now_s();
	uint8_t one = 1;
	size_t i;

	for (i = 0; i < n; i++) {
		const struct shield_cidr *c = &cidrs[i];

		if (c->family == 4) {
			struct lpm_v4_key k = { .prefixlen = c->plen };

			memcpy(&k.addr, c->addr, 4);
			if (bpf_map_update_elem(f4, &k, &one, BPF_ANY))
				return -1;
		} else {
			struct lpm_v6_key k = { .prefixlen = c->plen };

			memcpy(k.addr, c->addr, 16);
			if (bpf_map_update_elem(f6, &k, &one, BPF_ANY))
				return -1;
		}
	}
	return now_s() - t0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "baseline", required_argument, NULL, 'b' },
		{ "xdpfilt-dir", required_argument, NULL, 'x' },
		{ "prefixes", required_argument, NULL, 'n' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "runs", required_argument, NULL, 'k' },
		{ "no-lpm", no_argument, NULL, 'L' },
		{ "out", required_argument, NULL, 'o' },
		{ "smoke", no_argument, NULL, 's' },
		{ "hash-refs", no_argument, NULL, 'H' },
		{ "variant", required_argument, NULL, 'V' },
		{ "variant-any", required_argument, NULL, 'A' },
		{ "xdpfilt-entries", required_argument, NULL, 'F' },
		{ 0 },
	};
	const char *baseline = NULL, *xdir = "/usr/lib/x86_64-linux-gnu/bpf", *out = NULL;
	size_t nprefixes = 1000000, i;
	uint32_t repeat = 1000000;
	int runs = 5, use_lpm = 1, smoke = 0, hash_refs = 0, c, ifindex, np = 0, nc = 0, p, r, rc = 1;
	const char *variants[4];
	int var_any[4] = { 0 };
	struct bpf_object *vobj[4] = { NULL };
	int nvar = 0, vi;
	uint32_t filt_entries = 0;
	struct prog progs[MAX_PROGS];
	static struct bcase cases[MAX_CASES];
	struct shield *s = NULL;
	struct shield_bulk *b = NULL;
	struct shield_cidr *cidrs = NULL;
	struct shield_config cfg;
	struct bpf_object *base = NULL, *filt_ip = NULL, *filt_all = NULL;
	double t_bulk = 0, t_file = 0, t_lpm = -1, flood_ns[4] = { 0 };
	uint8_t synframe[256];
	size_t synlen = 0;
	uint32_t flood_repeat = 0;
	char path[512], file[64];
	FILE *f;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'b': baseline = optarg; break;
		case 'x': xdir = optarg; break;
		case 'n': nprefixes = strtoul(optarg, NULL, 10); break;
		case 'r': repeat = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'k': runs = atoi(optarg); break;
		case 'L': use_lpm = 0; break;
		case 'o': out = optarg; break;
		case 's': smoke = 1; break;
		case 'H': hash_refs = 1; break;
		case 'V':
		case 'A':
			if (nvar == 4) {
				fprintf(stderr, "bench_shield: at most 4 variants\n");
				return 2;
			}
			var_any[nvar] = c == 'A';
			variants[nvar++] = optarg;
			break;
		case 'F': filt_entries = (uint32_t)strtoul(optarg, NULL, 10); break;
		default: return 2;
		}
	}
	if (smoke) {
		nprefixes = 20000;
		repeat = 20000;
		runs = 1;
	}
	if (!baseline || runs < 1 || runs > MAX_RUNS || repeat == 0) {
		fprintf(stderr, "usage: bench_shield --baseline OBJ [--xdpfilt-dir DIR] "
			"[--prefixes N] [--repeat R] [--runs 1..%d] [--no-lpm] "
			"[--hash-refs] [--out PREFIX] [--smoke] [--variant OBJ]... "
			"[--variant-any OBJ]... [--xdpfilt-entries N]\n", MAX_RUNS);
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "bench_shield: needs root\n");
		return 77;
	}
	ifindex = testenv_netns();
	if (ifindex < 0) {
		fprintf(stderr, "bench_shield: netns: %s\n", strerror(-ifindex));
		return 1;
	}

	/* --- the shield with N prefixes --- */
	{
		struct shield_load_opts lo = { .no_pin = 1 };

		s = shield_load(&lo);
	}
	if (!s) {
		perror("shield_load");
		goto out;
	}
	shield_config_defaults(&cfg);
	shield_config_set_rate(&cfg, 0, 0);
	shield_config_set_flood(&cfg, 0, SHIELD_FLOOD_HANDOFF);
	if (shield_config_set(s, &cfg))
		goto out;
	cidrs = calloc(nprefixes + 8, sizeof(*cidrs));
	if (!cidrs)
		goto out;
	for (i = 0; i < nprefixes; i++)
		random_cidr(&cidrs[i]);
	shield_cidr_parse("198.18.77.77", &cidrs[nprefixes++]);     /* exact */
	shield_cidr_parse("198.18.78.0/24", &cidrs[nprefixes++]);   /* prefix (bitmap) */
	shield_cidr_parse("198.18.79.64/27", &cidrs[nprefixes++]);  /* prefix (hash) */
	shield_cidr_parse("2001:db8:77::/48", &cidrs[nprefixes++]); /* prefix v6 */

	t_bulk = now_s();
	b = shield_bulk_begin(s, SHIELD_LIST_BLOCK);
	for (i = 0; b && i < nprefixes; i++)
		if (shield_bulk_add(b, &cidrs[i], 0))
			goto out;
	if (!b || shield_bulk_commit(b)) {
		fprintf(stderr, "bench_shield: bulk load failed\n");
		b = NULL;
		goto out;
	}
	b = NULL;
	t_bulk = now_s() - t_bulk;

	/* the same list again from a file (parse + swap), as an operator would */
	snprintf(file, sizeof(file), "/tmp/mxs-bench-%d.txt", (int)getpid());
	f = fopen(file, "w");
	if (!f)
		goto out;
	for (i = 0; i < nprefixes; i++) {
		char buf[64];

		shield_cidr_format(&cidrs[i], buf, sizeof(buf));
		fprintf(f, "%s\n", buf);
	}
	fclose(f);
	{
		char err[256];
		size_t loaded = 0;

		t_file = now_s();
		if (shield_bulk_load_file(s, SHIELD_LIST_BLOCK, file, 0, 0, &loaded, err,
					  sizeof(err))) {
			fprintf(stderr, "bench_shield: %s\n", err);
			unlink(file);
			goto out;
		}
		t_file = now_s() - t_file;
	}
	unlink(file);
	if (testenv_xsk_bind(ifindex, 0, shield_xsks_map_fd(s))) {
		fprintf(stderr, "bench_shield: cannot bind an AF_XDP socket\n");
		goto out;
	}

	/* --- reference programs --- */
	progs[np++] = (struct prog){ "mxedge_shield", shield_prog_fd(s), NULL };
	for (vi = 0; vi < nvar; vi++) {
		const char *slash = strrchr(variants[vi], '/');

		vobj[vi] = open_obj_ex(variants[vi], shield_prog_fd(s), 0);
		if (!vobj[vi]) {
			fprintf(stderr, "bench_shield: cannot load variant %s\n", variants[vi]);
			goto out;
		}
		progs[np++] = (struct prog){ slash ? slash + 1 : variants[vi],
			bpf_program__fd(bpf_object__find_program_by_name(vobj[vi],
									 SHIELD_PROG_NAME)),
			NULL };
	}
	base = open_obj(baseline);
	if (!base) {
		fprintf(stderr, "bench_shield: cannot load %s\n", baseline);
		goto out;
	}
	progs[np++] = (struct prog){ "empty XDP_DROP",
		bpf_program__fd(bpf_object__find_program_by_name(base, "bench_drop")), NULL };
	progs[np++] = (struct prog){ "empty XDP_PASS",
		bpf_program__fd(bpf_object__find_program_by_name(base, "bench_pass")), NULL };
	if (use_lpm) {
		t_lpm = load_lpm(base, cidrs, nprefixes);
		if (t_lpm < 0) {
			fprintf(stderr, "bench_shield: LPM load failed\n");
			goto out;
		}
		progs[np++] = (struct prog){ "LPM trie (1 lookup)",
			bpf_program__fd(bpf_object__find_program_by_name(base, "bench_lpm")), NULL };
	}
	if (hash_refs) {
		/* the exact blocked source in both one-lookup programs' maps,
		 * plus 100 k other keys in the shield-like one */
		int fl = bpf_map__fd(bpf_object__find_map_by_name(base, "bench_hash_leaf"));
		int fp = bpf_map__fd(bpf_object__find_map_by_name(base, "bench_hash_pc"));
		int ncpu = libbpf_num_possible_cpus();
		uint64_t leaf[8] = { 1 };
		uint32_t *pcv = calloc((size_t)(ncpu > 0 ? ncpu : 1), sizeof(*pcv)), k;

		if (!pcv)
			goto out;
		inet_pton(AF_INET, "198.18.77.77", &k);
		if (bpf_map_update_elem(fl, &k, leaf, BPF_ANY) ||
		    bpf_map_update_elem(fp, &k, pcv, BPF_ANY)) {
			free(pcv);
			goto out;
		}
		free(pcv);
		for (i = 0; i < 100000; i++) {
			k = (uint32_t)rng();
			bpf_map_update_elem(fl, &k, leaf, BPF_ANY);
		}
		progs[np++] = (struct prog){ "1 hash lookup (shield leaf map)",
			bpf_program__fd(bpf_object__find_program_by_name(base, "bench_hash_leaf4")), NULL };
		progs[np++] = (struct prog){ "1 hash lookup (xdp-filter map)",
			bpf_program__fd(bpf_object__find_program_by_name(base, "bench_hash_pc4")), NULL };
	}
	snprintf(path, sizeof(path), "%s/xdpfilt_alw_ip.o", xdir);
	filt_ip = open_obj_ex(path, -1, filt_entries);
	snprintf(path, sizeof(path), "%s/xdpfilt_alw_all.o", xdir);
	filt_all = open_obj_ex(path, -1, filt_entries);
	if (filt_ip && !xdpfilt_deny_src(filt_ip, "198.18.77.77", filt_entries))
		progs[np++] = (struct prog){ "xdp-filter alw_ip",
			bpf_program__fd(bpf_object__next_program(filt_ip, NULL)), NULL };
	else
		fprintf(stderr, "bench_shield: xdpfilt_alw_ip.o unavailable, skipped\n");
	if (filt_all && !xdpfilt_deny_src(filt_all, "198.18.77.77", filt_entries))
		progs[np++] = (struct prog){ "xdp-filter alw_all",
			bpf_program__fd(bpf_object__next_program(filt_all, NULL)), NULL };
	else
		fprintf(stderr, "bench_shield: xdpfilt_alw_all.o unavailable, skipped\n");

	/* --- packets (64-byte frames: SYN + 10 bytes) --- */
#define CASE(N, FAM, SRC, PORT, FLAGS, EXP, RL)                                \
	cases[nc++] = (struct bcase){ .name = N, .pkt = { .family = FAM, .src = SRC, \
		.dport = PORT, .tcpflags = FLAGS, .payload = FAM == 4 ? 10 : 0 }, \
		.shield_expect = EXP, .rate_limit = RL }
	CASE("blocked-by-exact", 4, "198.18.77.77", 25, 0x02, XDP_DROP, 0);
	CASE("blocked-by-prefix (/24 array)", 4, "198.18.78.9", 25, 0x02, XDP_DROP, 0);
	CASE("blocked-by-prefix (/27 hash)", 4, "198.18.79.70", 25, 0x02, XDP_DROP, 0);
	CASE("blocked-by-prefix IPv6 /48", 6, "2001:db8:77::9", 25, 0x02, XDP_DROP, 0);
	CASE("allowed-and-redirected (ACK)", 4, "198.18.0.2", 25, 0x10, XDP_REDIRECT, 0);
	CASE("allowed-and-redirected IPv6, /32 has entries", 6, "2001:db8::2", 25, 0x10,
	     XDP_REDIRECT, 0);
	/* a crafted source outside the test range: the frame never leaves
	 * bpf_prog_test_run */
	CASE("allowed-and-redirected IPv6, /32 empty", 6, "2001:db9::2", 25, 0x10,
	     XDP_REDIRECT, 0);
	CASE("allowed SYN, rate limit on", 4, "198.18.0.2", 25, 0x02, XDP_REDIRECT, 1);
	CASE("non-SMTP pass (port 22)", 4, "198.18.77.77", 22, 0x02, XDP_PASS, 0);
	for (i = 0; i < (size_t)nc; i++) {
		cases[i].len = testenv_build(cases[i].frame, sizeof(cases[i].frame),
					     &cases[i].pkt);
		if (!cases[i].len)
			goto out;
	}

	/* --- measure: every run visits every case and program in turn --- */
	for (r = 0; r < runs; r++) {
		for (i = 0; i < (size_t)nc; i++) {
			struct shield_config rc_cfg = cfg;

			if (cases[i].rate_limit) /* a rate no single source reaches here */
				shield_config_set_rate(&rc_cfg, 1000000000u, 1000000000u);
			if (shield_config_set(s, &rc_cfg))
				goto out;
			for (p = 0; p < np; p++) {
				int v = -1;

				if (time_run(progs[p].fd, &cases[i], ifindex, repeat,
					     &cases[i].ns[p][r], &v)) {
					fprintf(stderr, "bench_shield: test run failed: %s\n",
						strerror(errno));
					goto out;
				}
				cases[i].verdict[p] = v;
				if (p <= nvar && !(p > 0 && var_any[p - 1]) &&
				    v != cases[i].shield_expect) {
					fprintf(stderr, "bench_shield: %s: %s said %s, expected %s\n",
						cases[i].name, progs[p].name, verdict_name(v),
						verdict_name(cases[i].shield_expect));
					goto out;
				}
			}
		}
	}

	/* --- SYN flood: XDP cookie vs hand-off (single runs) --- */
	{
		struct testenv_pkt sp = { .family = 4, .src = "198.18.0.2", .dport = 25,
					  .tcpflags = 0x02, .mss = 1460 };
		struct shield_counter c0[SHIELD_C_SLOTS], c1[SHIELD_C_SLOTS];
		struct shield_config fc = cfg;
		int m, n1 = smoke ? 201 : 4001;

		synlen = testenv_build(synframe, sizeof(synframe), &sp);
		for (m = 0; m < 4; m++) {
			int fd = m < 2 ? shield_prog_fd(s)
				: bpf_program__fd(bpf_object__find_program_by_name(
					base, m == 2 ? "bench_drop" : "bench_tx"));

			shield_config_set_flood(&fc, 1, m == 0 ? SHIELD_FLOOD_XDP_COOKIE
							: SHIELD_FLOOD_HANDOFF);
			if (shield_config_set(s, &fc) || shield_counters(s, c0))
				goto out;
			if (time_single(fd, synframe, synlen, ifindex, n1, &flood_ns[m])) {
				fprintf(stderr, "bench_shield: single run failed: %s\n",
					strerror(errno));
				goto out;
			}
			if (shield_counters(s, c1))
				goto out;
			/* every SYN after the first crossing took the flood path */
			if (m == 0 && c1[SHIELD_R_TX_SYNCOOKIE].packets -
				      c0[SHIELD_R_TX_SYNCOOKIE].packets + 1 < (uint64_t)n1) {
				fprintf(stderr, "bench_shield: cookie path not taken\n");
				goto out;
			}
			if (m == 1 && c1[SHIELD_C_FLOOD_SYN].packets -
				      c0[SHIELD_C_FLOOD_SYN].packets + 1 < (uint64_t)n1) {
				fprintf(stderr, "bench_shield: hand-off flood path not taken\n");
				goto out;
			}
		}
		flood_repeat = (uint32_t)n1;
		if (shield_config_set(s, &cfg))
			goto out;
	}

	/* --- report --- */
	{
		FILE *js = stdout, *md = stdout;
		char jpath[512], mpath[512];

		if (out) {
			snprintf(jpath, sizeof(jpath), "%s.json", out);
			snprintf(mpath, sizeof(mpath), "%s.md", out);
			js = fopen(jpath, "w");
			md = fopen(mpath, "w");
			if (!js || !md)
				goto out;
		}
		fprintf(js, "{\n  \"benchmark\": \"xdp-shield\",\n  \"prefixes\": %zu,\n"
			"  \"repeat\": %u,\n  \"runs\": %d,\n  \"load_bulk_api_s\": %.3f,\n"
			"  \"load_file_s\": %.3f,\n  \"load_lpm_s\": %.3f,\n  \"results\": [\n",
			nprefixes, repeat, runs, t_bulk, t_file, t_lpm);
		for (i = 0; i < (size_t)nc; i++)
			for (p = 0; p < np; p++)
				fprintf(js, "    {\"packet\": \"%s\", \"program\": \"%s\", "
					"\"ns_median\": %.1f, \"ns_min\": %.1f, \"verdict\": \"%s\"}%s\n",
					cases[i].name, progs[p].name,
					median(cases[i].ns[p], runs), minimum(cases[i].ns[p], runs),
					verdict_name(cases[i].verdict[p]),
					i + 1 == (size_t)nc && p + 1 == np ? "" : ",");
		fprintf(js, "  ],\n  \"syn_flood_single_runs\": {\"runs\": %u, "
			"\"xdp_cookie_tx_ns\": %.1f, \"handoff_redirect_ns\": %.1f, "
			"\"empty_drop_ns\": %.1f, \"empty_tx_ns\": %.1f}\n}\n",
			flood_repeat, flood_ns[0], flood_ns[1], flood_ns[2], flood_ns[3]);

		fprintf(md, "\nns/packet, median of %d runs of %u packets each; %zu block "
			"entries loaded (load: bulk API %.2f s, file %.2f s%s).\n\n",
			runs, repeat, nprefixes, t_bulk, t_file,
			t_lpm >= 0 ? ", LPM trie per-element" : "");
		if (t_lpm >= 0)
			fprintf(md, "LPM trie load (per-element updates): %.2f s.\n\n", t_lpm);
		fprintf(md, "| packet |");
		for (p = 0; p < np; p++)
			fprintf(md, " %s |", progs[p].name);
		fprintf(md, "\n|---|");
		for (p = 0; p < np; p++)
			fprintf(md, "---|");
		fprintf(md, "\n");
		for (i = 0; i < (size_t)nc; i++) {
			fprintf(md, "| %s |", cases[i].name);
			for (p = 0; p < np; p++)
				fprintf(md, " %.1f %s |", median(cases[i].ns[p], runs),
					verdict_name(cases[i].verdict[p]));
			fprintf(md, "\n");
		}
		fprintf(md, "\nSYN flood mode, median of %u single runs (repeat=1, fresh "
			"frame each, timer overhead included): XDP cookie SYN-ACK (XDP_TX) "
			"%.1f ns, hand-off (redirect to AF_XDP) %.1f ns; empty XDP_DROP "
			"%.1f ns, empty XDP_TX %.1f ns.\n", flood_repeat,
			flood_ns[0], flood_ns[1], flood_ns[2], flood_ns[3]);
		if (out) {
			fclose(js);
			fclose(md);
			printf("wrote %s and %s\n", jpath, mpath);
		}
	}
	rc = 0;
out:
	shield_bulk_abort(b);
	testenv_xsk_close_all();
	bpf_object__close(filt_ip);
	bpf_object__close(filt_all);
	bpf_object__close(base);
	for (vi = 0; vi < nvar; vi++)
		bpf_object__close(vobj[vi]);
	shield_close(s);
	free(cidrs);
	return rc;
}
