/*
 * dp_config.c - command line, configuration file and EAL arguments of the
 * dataplane.
 */
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <sys/stat.h>

#include "dp.h"

void dp_usage(void *fp)
{
	FILE *f = fp;

	fprintf(f,
"usage: mxedge --port KIND:NAME [options]\n"
"       mxedge --io=kernel [options]\n"
"\n"
"  --io dpdk|kernel     DPDK dataplane (default), or Linux sockets with one\n"
"                       thread per --queues (no --port; without --addr it\n"
"                       listens on every address) (io:)\n"
"  --port KIND:NAME     where frames come from:\n"
"                         af_xdp:IFACE     kernel interface via AF_XDP (production)\n"
"                         tap:NAME         a tap interface created by DPDK\n"
"                         af_packet:IFACE  kernel interface via AF_PACKET\n"
"                         pci:BDF          PCI NIC bound to vfio-pci\n"
"  --queues N           RX/TX queue pairs of the port (default 1)\n"
"  --workers N          worker lcores, each with its own TCP stack, sessions\n"
"                       and spool writer (default: one per queue; may exceed\n"
"                       --queues: queue-less workers get their frames by hand-off)\n"
"  --dispatch MODE      how frames reach the lcore owning their connection:\n"
"                         auto      RSS on PCI ports with a RETA, else software\n"
"                         rss       NIC RSS, symmetric key, RETA verified at start\n"
"                         software  each queue's lcore hashes and hands over\n"
"  --xdp-prog PATH      af_xdp: XDP object the PMD attaches (the shield)\n"
"  --sessions-per-lcore N  SMTP sessions preallocated per worker lcore\n"
"                       (default 1024; limits.sessions_per_lcore); past them a\n"
"                       client gets 421 4.3.2. Mbufs are sized from it: raise\n"
"                       --mem with it (~33 KiB per session without hugepages)\n"
"  --mem MB             memory without hugepages (default 512)\n"
"  --no-huge            do not use hugepages even when reserved\n"
"  --idle-sleep US      a worker lcore idle for 20 us naps US, doubling up to\n"
"                       1 ms while nothing arrives, so an idle edge leaves its\n"
"                       CPU to others (default 50; 0 = always busy-poll, for\n"
"                       cores dedicated to mxedge)\n"
"  --duration SEC       stop by itself after SEC seconds (default: run)\n"
"  --eal 'ARGS'         extra DPDK EAL arguments\n"
"  --config FILE        configuration file (docs/CONFIG.md); options override it\n"
"  --check-config       validate the configuration and exit\n"
"  --addr ADDR/LEN      the edge's address on the port (IPv4 and/or IPv6,\n"
"                       once per family), e.g. 198.18.0.1/24, 2001:db8::1/64.\n"
"                       Without an address the workers only count frames.\n"
"                       Default: the config file's listen: addresses (/24, /64)\n"
"  --smtp-port N        SMTP listen port (default 25, or the listen: port)\n"
"  --spool DIR          spool directory (default /var/spool/mxedge, spool.dir)\n"
"  --hostname NAME      name in the greeting, EHLO and Received: (hostname:)\n"
"  --log-file PATH      Postfix-format reception log (default: stderr);\n"
"                       SIGHUP reopens it (logrotate)\n"
"  --control PATH       control socket for mxedgectl (default " DP_DEFAULT_CONTROL ")\n"
"  --no-control         no control socket\n"
"  --state-dir DIR      keep control-socket changes (state.json) and the audit\n"
"                       log in DIR (state.dir; default: SPOOL/state)\n"
"  --version            print the version\n"
"  --help               this text\n");
}

static int parse_uint(const char *opt, const char *s, unsigned min,
		      unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "mxedge: %s: expected a number %u..%u, got '%s'\n",
			opt, min, max, s);
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

static int parse_port(struct dp_config *cfg, const char *s)
{
	static const struct {
		const char *name;
		enum dp_port_kind kind;
	} kinds[] = {
		{ "af_xdp", DP_PORT_AF_XDP },
		{ "tap", DP_PORT_TAP },
		{ "af_packet", DP_PORT_AF_PACKET },
		{ "pci", DP_PORT_PCI },
	};
	const char *colon = strchr(s, ':');
	size_t klen, i;

	if (colon == NULL || colon[1] == '\0')
		goto bad;
	klen = (size_t)(colon - s);
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (strlen(kinds[i].name) == klen &&
		    memcmp(kinds[i].name, s, klen) == 0)
			break;
	}
	if (i == sizeof(kinds) / sizeof(kinds[0]))
		goto bad;
	/* Names end up inside EAL devargs: keep them to a safe alphabet. */
	if (strlen(colon + 1) >= sizeof(cfg->port_name) ||
	    strspn(colon + 1, "abcdefghijklmnopqrstuvwxyz"
			      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-:") !=
		    strlen(colon + 1))
		goto bad;
	cfg->port_kind = kinds[i].kind;
	strcpy(cfg->port_name, colon + 1);
	return 0;
bad:
	fprintf(stderr, "mxedge: --port: expected af_xdp:IFACE, tap:NAME, "
			"af_packet:IFACE or pci:BDF, got '%s'\n", s);
	return -EINVAL;
}

/* "ADDR/LEN" (or a bare ADDR with @deflen4 / @deflen6) into the v4 or v6
 * slot of @cfg. Returns 0 or -EINVAL after a message naming @what. */
static int parse_addr(struct dp_config *cfg, const char *what, const char *s,
		      unsigned deflen4, unsigned deflen6)
{
	char host[64];
	const char *slash = strchr(s, '/');
	size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned len;
	struct in_addr a4;

	if (hlen == 0 || hlen >= sizeof(host))
		goto bad;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, &a4) == 1) {
		len = deflen4;
		if (slash && parse_uint(what, slash + 1, 1, 32, &len) < 0)
			return -EINVAL;
		if (a4.s_addr == 0)
			goto bad;
		cfg->ip4 = a4.s_addr;
		cfg->ip4_mask = htonl(0xffffffffu << (32 - len));
		return 0;
	}
	if (inet_pton(AF_INET6, host, cfg->ip6) == 1) {
		len = deflen6;
		if (slash && parse_uint(what, slash + 1, 1, 128, &len) < 0)
			return -EINVAL;
		cfg->ip6_prefixlen = (uint8_t)len;
		return 0;
	}
bad:
	fprintf(stderr, "mxedge: %s: expected ADDRESS/PREFIXLEN (IPv4 or IPv6), "
		"got '%s'\n", what, s);
	return -EINVAL;
}

/* A config file listen: entry "ADDR:PORT" / "[ADDR6]:PORT": the port is
 * the SMTP port, a specific address is the edge's address. */
static int apply_listen(struct dp_config *cfg, const char *e)
{
	char host[64];
	const char *colon, *h = e;
	size_t hlen;
	unsigned port;

	if (e[0] == '[') {
		const char *rb = strchr(e, ']');
		if (rb == NULL)
			return -EINVAL;
		h = e + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(e, ':');
		if (colon == NULL)
			return -EINVAL;
		hlen = (size_t)(colon - e);
	}
	if (*colon != ':' || hlen >= sizeof(host) ||
	    parse_uint("listen", colon + 1, 1, 65535, &port) < 0)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	cfg->smtp_port = (uint16_t)port;
	if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 || host[0] == '\0')
		return 0;
	return parse_addr(cfg, "listen", host, 24, 64);
}

/* Loads the configuration file and takes the dataplane's settings from it. */
static int apply_file(struct dp_config *cfg, const char *path, bool *have_port)
{
	char err[512];

	if (cfg->have_file) {
		fprintf(stderr, "mxedge: --config given twice\n");
		return -EINVAL;
	}
	if (cfg_load_file(path, &cfg->file, err, sizeof(err)) < 0) {
		fprintf(stderr, "mxedge: %s\n", err);
		return -EINVAL;
	}
	cfg->have_file = true;
	if (cfg->file.port[0]) {
		char line[160];

		snprintf(line, sizeof(line), "%s", cfg->file.port);
		if (parse_port(cfg, line) < 0) {
			fprintf(stderr, "mxedge: %s: port: see above\n", path);
			return -EINVAL;
		}
		*have_port = true;
	}
	cfg->io = cfg->file.io;
	cfg->queues = cfg->file.queues;
	strcpy(cfg->control, cfg->file.control_socket);
	snprintf(cfg->hostname, sizeof(cfg->hostname), "%s", cfg->file.hostname);
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s", cfg->file.spool_dir);
	snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s", cfg->file.state_dir);
	for (unsigned i = 0; i < cfg->file.nlisten; i++) {
		if (apply_listen(cfg, cfg->file.listen[i]) < 0) {
			fprintf(stderr, "mxedge: %s: listen: bad entry \"%s\"\n",
				path, cfg->file.listen[i]);
			return -EINVAL;
		}
	}
	return 0;
}

void dp_config_free(struct dp_config *cfg)
{
	cfg_free(&cfg->file);
}

int dp_config_parse(struct dp_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "io", required_argument, NULL, 'i' },
		{ "queues", required_argument, NULL, 'q' },
		{ "workers", required_argument, NULL, 'w' },
		{ "dispatch", required_argument, NULL, 'D' },
		{ "xdp-prog", required_argument, NULL, 'x' },
		{ "mem", required_argument, NULL, 'm' },
		{ "sessions-per-lcore", required_argument, NULL, 'T' },
		{ "no-huge", no_argument, NULL, 'H' },
		{ "idle-sleep", required_argument, NULL, 'I' },
		{ "duration", required_argument, NULL, 'd' },
		{ "eal", required_argument, NULL, 'e' },
		{ "control", required_argument, NULL, 'c' },
		{ "config", required_argument, NULL, 'f' },
		{ "check-config", no_argument, NULL, 'k' },
		{ "no-control", no_argument, NULL, 'C' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "addr", required_argument, NULL, 'a' },
		{ "smtp-port", required_argument, NULL, 'P' },
		{ "spool", required_argument, NULL, 's' },
		{ "hostname", required_argument, NULL, 'n' },
		{ "log-file", required_argument, NULL, 'L' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool have_port = false;
	int c, rc;
	/* getopt wants argv[0]; callers pass the arguments only. */
	char *args[argc + 2];

	memset(cfg, 0, sizeof(*cfg));
	cfg->queues = 1;
	cfg->mem_mb = 512;
	cfg->idle_sleep_us = DP_IDLE_SLEEP_US;
	strcpy(cfg->control, DP_DEFAULT_CONTROL);
	cfg_defaults(&cfg->file);
	cfg->smtp_port = 25;
	snprintf(cfg->hostname, sizeof(cfg->hostname), "%s", cfg->file.hostname);
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s", cfg->file.spool_dir);
	args[0] = (char *)"mxedge";
	memcpy(&args[1], argv, sizeof(char *) * (size_t)argc);
	args[argc + 1] = NULL;
	/* First pass: only --config, so the rest of the command line can
	 * override what the file says. */
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc + 1, args, "", opts, NULL)) != -1) {
		if (c == 'f') {
			rc = apply_file(cfg, optarg, &have_port);
			if (rc)
				return rc;
		}
	}
	optind = 1;
	while ((c = getopt_long(argc + 1, args, "", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 'p':
			rc = parse_port(cfg, optarg);
			have_port = rc == 0;
			break;
		case 'i':
			if (strcmp(optarg, "dpdk") == 0) {
				cfg->io = CFG_IO_DPDK;
			} else if (strcmp(optarg, "kernel") == 0) {
				cfg->io = CFG_IO_KERNEL;
			} else {
				fprintf(stderr, "mxedge: --io: expected dpdk or kernel, got '%s'\n",
					optarg);
				rc = -EINVAL;
			}
			break;
		case 'q':
			rc = parse_uint("--queues", optarg, 1, DP_MAX_WORKERS, &cfg->queues);
			break;
		case 'w':
			rc = parse_uint("--workers", optarg, 1, DP_MAX_WORKERS, &cfg->workers);
			break;
		case 'D':
			if (strcmp(optarg, "auto") == 0)
				cfg->dispatch = DP_DISPATCH_AUTO;
			else if (strcmp(optarg, "rss") == 0)
				cfg->dispatch = DP_DISPATCH_RSS;
			else if (strcmp(optarg, "software") == 0)
				cfg->dispatch = DP_DISPATCH_SOFTWARE;
			else {
				fprintf(stderr, "mxedge: --dispatch: expected auto, rss or "
					"software, got '%s'\n", optarg);
				rc = -EINVAL;
			}
			break;
		case 'x':
			if (strlen(optarg) >= sizeof(cfg->xdp_prog) ||
			    strpbrk(optarg, ", ") != NULL) {
				fprintf(stderr, "mxedge: --xdp-prog: path too long or contains ',' or ' '\n");
				rc = -EINVAL;
			} else {
				strcpy(cfg->xdp_prog, optarg);
			}
			break;
		case 'm':
			rc = parse_uint("--mem", optarg, 128, 1 << 20, &cfg->mem_mb);
			break;
		case 'T':
			rc = parse_uint("--sessions-per-lcore", optarg, 1,
					CFG_MAX_SESSIONS_PER_LCORE, &cfg->file.sessions_per_lcore);
			break;
		case 'H':
			cfg->force_no_huge = true;
			break;
		case 'I':
			rc = parse_uint("--idle-sleep", optarg, 0, 10000, &cfg->idle_sleep_us);
			break;
		case 'd':
			rc = parse_uint("--duration", optarg, 1, 86400 * 365,
					&cfg->duration_s);
			break;
		case 'e':
			if (strlen(optarg) >= sizeof(cfg->eal_extra)) {
				fprintf(stderr, "mxedge: --eal: too long\n");
				rc = -EINVAL;
			} else {
				strcpy(cfg->eal_extra, optarg);
			}
			break;
		case 'c':
			if (strlen(optarg) >= sizeof(cfg->control) || optarg[0] == '\0') {
				fprintf(stderr, "mxedge: --control: path empty or longer than %zu bytes\n",
					sizeof(cfg->control) - 1);
				rc = -EINVAL;
			} else {
				strcpy(cfg->control, optarg);
			}
			break;
		case 'C':
			cfg->control[0] = '\0';
			break;
		case 'S':
			if (strlen(optarg) >= sizeof(cfg->state_dir) || optarg[0] != '/') {
				fprintf(stderr, "mxedge: --state-dir: expected an absolute path "
					"shorter than %zu bytes\n", sizeof(cfg->state_dir));
				rc = -EINVAL;
			} else {
				strcpy(cfg->state_dir, optarg);
			}
			break;
		case 'a':
			rc = parse_addr(cfg, "--addr", optarg, 24, 64);
			break;
		case 'P': {
			unsigned v = 0;

			rc = parse_uint("--smtp-port", optarg, 1, 65535, &v);
			cfg->smtp_port = (uint16_t)v;
			break;
		}
		case 's':
			if (strlen(optarg) >= sizeof(cfg->spool_dir) || optarg[0] == '\0') {
				fprintf(stderr, "mxedge: --spool: path empty or too long\n");
				rc = -EINVAL;
			} else {
				strcpy(cfg->spool_dir, optarg);
			}
			break;
		case 'n':
			if (strlen(optarg) >= sizeof(cfg->hostname) || optarg[0] == '\0' ||
			    strpbrk(optarg, " \t\r\n") != NULL) {
				fprintf(stderr, "mxedge: --hostname: empty, too long or contains white space\n");
				rc = -EINVAL;
			} else {
				strcpy(cfg->hostname, optarg);
			}
			break;
		case 'L':
			if (strlen(optarg) >= sizeof(cfg->log_file)) {
				fprintf(stderr, "mxedge: --log-file: path too long\n");
				rc = -EINVAL;
			} else {
				strcpy(cfg->log_file, optarg);
			}
			break;
		case 'f':
			break; /* loaded in the first pass */
		case 'k':
			cfg->check_only = true;
			break;
		case 'V':
			printf("mxedge %s\n", MXEDGE_VERSION);
			return 1;
		case 'h':
			dp_usage(stdout);
			return 1;
		default:
			fprintf(stderr, "mxedge: unknown or incomplete option '%s' (see --help)\n",
				args[optind - 1]);
			return -EINVAL;
		}
		if (rc)
			return rc;
	}
	if (optind < argc + 1) {
		fprintf(stderr, "mxedge: unexpected argument '%s' (see --help)\n",
			args[optind]);
		return -EINVAL;
	}
	/* Operators' changes survive a restart by default: the spool is the
	 * instance's own durable directory (docs/ARCHITECTURE.md, "Where
	 * live changes are kept"); the spool ignores names that are not its
	 * segments. A dataplane without SMTP addresses has no spool (only
	 * the port and the shield): its changes stay in memory, as they do
	 * when state.dir names nothing, rather than land in a default spool
	 * directory other such processes would share. */
	if (cfg->state_dir[0] == '\0' &&
	    (cfg->io == CFG_IO_KERNEL || cfg->ip4 != 0 || cfg->ip6_prefixlen != 0) &&
	    snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s/state",
		     cfg->spool_dir) >= (int)sizeof(cfg->state_dir)) {
		fprintf(stderr, "mxedge: spool directory too long for its state "
			"directory; set state.dir\n");
		return -EINVAL;
	}
	if (cfg->io == CFG_IO_KERNEL)
		return 0; /* kernel sockets: no port, one thread per queue */
	if (!have_port && !cfg->check_only) {
		fprintf(stderr, "mxedge: --port is required, on the command line or as "
			"port: in the --config file (see --help)\n");
		return -EINVAL;
	}
	if (cfg->workers && cfg->workers < cfg->queues) {
		/* Every queue needs an lcore polling it, or its frames (and
		 * the connections they belong to) would be stranded. */
		fprintf(stderr, "mxedge: --workers %u is fewer than --queues %u; every "
			"queue needs its own worker lcore\n", cfg->workers, cfg->queues);
		return -EINVAL;
	}
	if (cfg->dispatch == DP_DISPATCH_RSS && dp_workers(cfg) > cfg->queues) {
		fprintf(stderr, "mxedge: --dispatch rss needs one queue per worker "
			"(%u workers, %u queues); use --dispatch software\n",
			dp_workers(cfg), cfg->queues);
		return -EINVAL;
	}
	if (cfg->dispatch == DP_DISPATCH_RSS && cfg->port_kind != DP_PORT_PCI) {
		/* af_xdp and af_packet: the kernel picks the queue (ethtool
		 * -X on the NIC); net_tap has flow-rule RSS but no RETA. */
		fprintf(stderr, "mxedge: --dispatch rss needs a PCI port whose RETA "
			"the process programs; on %s ports the kernel spreads frames: "
			"use --dispatch software (or auto)\n",
			cfg->port_kind == DP_PORT_AF_XDP ? "af_xdp" :
			cfg->port_kind == DP_PORT_TAP ? "tap" : "af_packet");
		return -EINVAL;
	}
	if (cfg->xdp_prog[0] && cfg->port_kind != DP_PORT_AF_XDP) {
		fprintf(stderr, "mxedge: --xdp-prog needs an af_xdp port\n");
		return -EINVAL;
	}
	return 0;
}

unsigned dp_workers(const struct dp_config *cfg)
{
	return cfg->workers ? cfg->workers : cfg->queues;
}

long dp_hugepages_free(void)
{
	char line[128];
	long n = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "HugePages_Free: %ld", &n) == 1)
			break;
	}
	fclose(f);
	return n;
}

/*
 * A kernel interface without a device behind it (veth, the demo's and the
 * tests' port). On such an interface the af_xdp socket works in copy mode
 * and the kernel fills its RX ring in the sender's context, so the PMD never
 * needs to kick RX. With a busy-poll budget (the PMD's default wherever the
 * kernel has SO_PREFER_BUSY_POLL) it makes a recvfrom() on every empty poll
 * anyway: 65 % of the worker's time in the accept benchmark (README,
 * "Where the time goes"). busy_budget=0 leaves the kick to the ring's
 * need-wakeup flag, which copy mode never raises. Physical NICs keep the
 * PMD's default: zero-copy drivers rely on the kick or on busy polling.
 */
static bool iface_is_virtual(const char *ifname)
{
	char path[128];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/class/net/%s", ifname);
	if (stat(path, &st) != 0)
		return false;
	snprintf(path, sizeof(path), "/sys/class/net/%s/device", ifname);
	return stat(path, &st) != 0;
}

/* Appends one string to the vector, copying it into the caller's buffer. */
static int push(char **argv, int *argc, int max, char **pos, char *end,
		const char *s)
{
	size_t n = strlen(s) + 1;

	if (*argc >= max - 1 || (size_t)(end - *pos) < n)
		return -ENOSPC;
	memcpy(*pos, s, n);
	argv[(*argc)++] = *pos;
	argv[*argc] = NULL;
	*pos += n;
	return 0;
}

int dp_eal_argv(const struct dp_config *cfg, char **argv, int max,
		char *buf, size_t buflen)
{
	char *pos = buf, *end = buf + buflen;
	char tmp[512], extra[sizeof(cfg->eal_extra)], *tok, *save = NULL;
	int argc = 0;

#define PUSH(s) do { if (push(argv, &argc, max, &pos, end, (s))) return -ENOSPC; } while (0)
	PUSH("mxedge");
	/* Main lcore 0 supervises; workers take lcores 1..N. When the CPUs
	 * we may run on are fewer than the lcores, map lcores onto them
	 * round robin (--lcores 0@c0,1@c1,2@c0...): threads then share CPUs,
	 * which works (CI has 2 cores) but does not scale. */
	{
		cpu_set_t set;
		unsigned cpus[CPU_SETSIZE], ncpu = 0, i, nl = dp_workers(cfg) + 1;
		int c, len = 0;

		CPU_ZERO(&set);
		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			for (c = 0; c < CPU_SETSIZE; c++)
				if (CPU_ISSET(c, &set))
					cpus[ncpu++] = (unsigned)c;
		if (ncpu == 0 || nl <= ncpu) {
			snprintf(tmp, sizeof(tmp), "0-%u", nl - 1);
			PUSH("-l");
		} else {
			for (i = 0; i < nl && len < (int)sizeof(tmp); i++)
				len += snprintf(tmp + len, sizeof(tmp) - (size_t)len, "%s%u@%u",
						i ? "," : "", i, cpus[i % ncpu]);
			if (len >= (int)sizeof(tmp))
				return -ENOSPC;
			PUSH("--lcores");
		}
		PUSH(tmp);
	}
	PUSH("--no-shconf");
	PUSH("--no-telemetry");
	PUSH("--log-level=*:warning");
	if (cfg->force_no_huge || dp_hugepages_free() <= 0) {
		/* --in-memory is refused with --no-huge by EAL (DESIGN.md). */
		PUSH("--no-huge");
		snprintf(tmp, sizeof(tmp), "%u", cfg->mem_mb);
		PUSH("-m");
		PUSH(tmp);
	} else {
		PUSH("--in-memory");
	}
	switch (cfg->port_kind) {
	case DP_PORT_PCI:
		PUSH("-a");
		PUSH(cfg->port_name);
		break;
	case DP_PORT_AF_XDP:
		PUSH("--no-pci");
		snprintf(tmp, sizeof(tmp), "net_af_xdp0,iface=%s,queue_count=%u%s%s%s",
			 cfg->port_name, cfg->queues,
			 cfg->xdp_prog[0] ? ",xdp_prog=" : "", cfg->xdp_prog,
			 iface_is_virtual(cfg->port_name) ? ",busy_budget=0" : "");
		PUSH("--vdev");
		PUSH(tmp);
		break;
	case DP_PORT_TAP:
		PUSH("--no-pci");
		snprintf(tmp, sizeof(tmp), "net_tap0,iface=%s", cfg->port_name);
		PUSH("--vdev");
		PUSH(tmp);
		break;
	case DP_PORT_AF_PACKET:
		PUSH("--no-pci");
		snprintf(tmp, sizeof(tmp), "net_af_packet0,iface=%s,qpairs=%u",
			 cfg->port_name, cfg->queues);
		PUSH("--vdev");
		PUSH(tmp);
		break;
	}
	memcpy(extra, cfg->eal_extra, sizeof(extra));
	for (tok = strtok_r(extra, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
		PUSH(tok);
#undef PUSH
	return argc;
}
