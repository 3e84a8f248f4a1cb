/* shieldctl.c — mxedge-shield: load/attach/detach the XDP shield and manage
 * its tables from the command line (the control plane uses shield.h). */
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <linux/bpf.h>

#include "shield.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mxedge-shield [--pin-dir DIR] COMMAND [ARGS]\n"
		"  load                          load the program, create/reuse pinned maps\n"
		"  attach IFACE [--mode auto|native|generic]\n"
		"  detach IFACE\n"
		"  adopt FROM_DIR                pin the maps pinned in FROM_DIR (e.g. by\n"
		"                                DPDK's af_xdp PMD in /sys/fs/bpf) under DIR too\n"
		"  add block|allow CIDR [--ttl SECONDS]\n"
		"  del block|allow CIDR\n"
		"  list block|allow\n"
		"  bulk block|allow FILE [--ttl SECONDS]   replace the whole list\n"
		"  own [ADDR...|none]            the dataplane's own addresses: their ARP,\n"
		"                                NDP and non-SMTP traffic go to AF_XDP too\n"
		"  expire                        remove entries whose TTL has passed\n"
		"  stats                         counters per verdict reason\n"
		"  config [--ports P[,P..]] [--rate N --burst N] [--flood-syn N]\n"
		"         [--flood-mode handoff|cookie] [--flood-hold SECONDS] [--sample N]\n"
		"  events [--count N] [--timeout SECONDS]\n"
		"DIR defaults to %s; use /sys/fs/bpf for maps pinned by DPDK's af_xdp PMD.\n",
		SHIELD_PIN_DIR_DEFAULT);
}

static int die(const char *what, int err)
{
	fprintf(stderr, "mxedge-shield: %s: %s\n", what, strerror(err < 0 ? -err : err));
	return 1;
}

static int parse_list(const char *s, enum shield_list *l)
{
	if (s && !strcmp(s, "block"))
		*l = SHIELD_LIST_BLOCK;
	else if (s && !strcmp(s, "allow"))
		*l = SHIELD_LIST_ALLOW;
	else
		return -EINVAL;
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *e;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &e, 10);
	if (errno || *e)
		return -EINVAL;
	*out = v;
	return 0;
}

static int print_entry(const struct shield_cidr *c, uint64_t expires, void *arg)
{
	char buf[64];

	shield_cidr_format(c, buf, sizeof(buf));
	if (expires)
		printf("%s\texpires=%llu\n", buf, (unsigned long long)expires);
	else
		printf("%s\n", buf);
	return 0;
}

static int print_event(const struct shield_event *e, void *arg)
{
	char a[INET6_ADDRSTRLEN];

	if (e->family == 4)
		inet_ntop(AF_INET, &e->src.a[12], a, sizeof(a));
	else
		inet_ntop(AF_INET6, e->src.a, a, sizeof(a));
	printf("%llu %s src=%s dport=%u ifindex=%u queue=%u\n",
	       (unsigned long long)e->ts_ns, shield_reason_name(e->reason), a,
	       e->dport, e->ifindex, e->rx_queue);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pin-dir", required_argument, NULL, 'd' },
		{ "mode", required_argument, NULL, 'm' },
		{ "ttl", required_argument, NULL, 't' },
		{ "ports", required_argument, NULL, 'p' },
		{ "rate", required_argument, NULL, 'r' },
		{ "burst", required_argument, NULL, 'b' },
		{ "flood-syn", required_argument, NULL, 'f' },
		{ "flood-mode", required_argument, NULL, 'F' },
		{ "sample", required_argument, NULL, 's' },
		{ "flood-hold", required_argument, NULL, 'H' },
		{ "count", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *pin_dir = NULL, *mode_s = "auto", *ports_s = NULL, *fmode_s = NULL;
	uint64_t ttl = 0, rate = UINT64_MAX, burst = 0, flood = UINT64_MAX;
	uint64_t sample = UINT64_MAX, count = 10, timeout = 5, hold = UINT64_MAX;
	struct shield *s = NULL;
	const char *cmd;
	int c, rc = 0, err;

	/* GNU getopt permutes: options may come before or after the command */
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': pin_dir = optarg; break;
		case 'm': mode_s = optarg; break;
		case 'p': ports_s = optarg; break;
		case 'F': fmode_s = optarg; break;
		case 't': if (parse_u64(optarg, &ttl)) return die("--ttl", EINVAL); break;
		case 'r': if (parse_u64(optarg, &rate)) return die("--rate", EINVAL); break;
		case 'b': if (parse_u64(optarg, &burst)) return die("--burst", EINVAL); break;
		case 'f': if (parse_u64(optarg, &flood)) return die("--flood-syn", EINVAL); break;
		case 's': if (parse_u64(optarg, &sample)) return die("--sample", EINVAL); break;
		case 'H': if (parse_u64(optarg, &hold) || hold == 0 || hold > 3600) return die("--flood-hold (1..3600 s)", EINVAL); break;
		case 'c': if (parse_u64(optarg, &count)) return die("--count", EINVAL); break;
		case 'T': if (parse_u64(optarg, &timeout)) return die("--timeout", EINVAL); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind++];
	argv += optind;
	argc -= optind;

	if (!strcmp(cmd, "load") || !strcmp(cmd, "attach")) {
		struct shield_load_opts lo = { .pin_dir = pin_dir };
		enum shield_attach_mode mode;
		int ifindex = 0;

		if (!strcmp(cmd, "attach")) {
			if (argc != 1) {
				usage(stderr);
				return 2;
			}
			ifindex = (int)if_nametoindex(argv[0]);
			if (!ifindex)
				return die(argv[0], errno);
		}
		if (!strcmp(mode_s, "auto"))
			mode = SHIELD_ATTACH_AUTO;
		else if (!strcmp(mode_s, "native"))
			mode = SHIELD_ATTACH_NATIVE;
		else if (!strcmp(mode_s, "generic"))
			mode = SHIELD_ATTACH_GENERIC;
		else
			return die("--mode (auto|native|generic)", EINVAL);
		s = shield_load(&lo);
		if (!s)
			return die("load", errno);
		if (ifindex) {
			err = shield_attach(s, ifindex, mode);
			if (err) {
				rc = die("attach", err);
				goto out;
			}
			printf("attached to %s\n", argv[0]);
		} else {
			printf("loaded, maps pinned in %s\n",
			       pin_dir ? pin_dir : SHIELD_PIN_DIR_DEFAULT);
		}
		goto out;
	}
	if (!strcmp(cmd, "detach")) {
		int ifindex;

		if (argc != 1) {
			usage(stderr);
			return 2;
		}
		ifindex = (int)if_nametoindex(argv[0]);
		if (!ifindex)
			return die(argv[0], errno);
		err = shield_detach(ifindex);
		if (err == -EPERM) {
			fprintf(stderr, "mxedge-shield: the XDP program on %s is not the shield; left alone\n",
				argv[0]);
			return 1;
		}
		if (err)
			return die("detach", err);
		printf("detached from %s\n", argv[0]);
		return 0;
	}

	if (!strcmp(cmd, "adopt")) {
		const char *to = pin_dir ? pin_dir : SHIELD_PIN_DIR_DEFAULT;

		if (argc != 1) {
			usage(stderr);
			return 2;
		}
		s = shield_open_pinned(argv[0]);
		if (!s) {
			fprintf(stderr, "mxedge-shield: no shield maps pinned in %s (%s)\n",
				argv[0], strerror(errno));
			return 1;
		}
		err = shield_pin_maps(s, to);
		if (err)
			rc = die(to, err);
		else
			printf("maps of %s pinned in %s\n", argv[0], to);
		goto out;
	}

	s = shield_open_pinned(pin_dir);
	if (!s) {
		fprintf(stderr, "mxedge-shield: no shield maps pinned in %s (%s); run 'load' or 'attach' first\n",
			pin_dir ? pin_dir : SHIELD_PIN_DIR_DEFAULT, strerror(errno));
		return 1;
	}
	if (!strcmp(cmd, "add") || !strcmp(cmd, "del")) {
		enum shield_list l;
		struct shield_cidr cidr;

		if (argc != 2 || parse_list(argv[0], &l)) {
			usage(stderr);
			rc = 2;
			goto out;
		}
		if (shield_cidr_parse(argv[1], &cidr)) {
			fprintf(stderr, "mxedge-shield: not an address or CIDR: '%s'\n", argv[1]);
			rc = 1;
			goto out;
		}
		if (!strcmp(cmd, "add"))
			err = shield_add(s, l, &cidr, ttl ? (uint64_t)time(NULL) + ttl : 0);
		else
			err = shield_del(s, l, &cidr);
		if (err)
			rc = die(argv[1], err);
	} else if (!strcmp(cmd, "list")) {
		enum shield_list l;

		if (argc != 1 || parse_list(argv[0], &l)) {
			usage(stderr);
			rc = 2;
			goto out;
		}
		err = shield_list_entries(s, l, print_entry, NULL);
		if (err)
			rc = die("list", err);
	} else if (!strcmp(cmd, "bulk")) {
		enum shield_list l;
		char msg[512];
		size_t loaded = 0;
		uint64_t now = (uint64_t)time(NULL);
		struct timespec t0, t1;

		if (argc != 2 || parse_list(argv[0], &l)) {
			usage(stderr);
			rc = 2;
			goto out;
		}
		clock_gettime(CLOCK_MONOTONIC, &t0);
		err = shield_bulk_load_file(s, l, argv[1], now, ttl ? now + ttl : 0,
					    &loaded, msg, sizeof(msg));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (err) {
			fprintf(stderr, "mxedge-shield: %s\n", msg[0] ? msg : strerror(-err));
			rc = 1;
			goto out;
		}
		printf("loaded %zu entries in %.3f s\n", loaded,
		       (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	} else if (!strcmp(cmd, "own")) {
		struct shield_cidr own[2 * SHIELD_MAX_OWN];
		size_t n = 0, i;
		char buf[64];

		if (argc == 0) {
			err = shield_own_get(s, own, 2 * SHIELD_MAX_OWN, &n);
			if (err) {
				rc = die("own", err);
				goto out;
			}
			for (i = 0; i < n; i++) {
				shield_cidr_format(&own[i], buf, sizeof(buf));
				printf("%s\n", buf);
			}
			goto out;
		}
		if (!(argc == 1 && !strcmp(argv[0], "none"))) {
			for (i = 0; i < (size_t)argc; i++) {
				if (i == 2 * SHIELD_MAX_OWN ||
				    shield_cidr_parse(argv[i], &own[i]) ||
				    own[i].plen != (own[i].family == 4 ? 32 : 128)) {
					fprintf(stderr, "mxedge-shield: own: '%s' is not a host "
						"address (at most %d per family)\n", argv[i],
						SHIELD_MAX_OWN);
					rc = 1;
					goto out;
				}
			}
			n = (size_t)argc;
		}
		err = shield_own_set(s, own, n);
		if (err == -E2BIG) {
			fprintf(stderr, "mxedge-shield: own: at most %d addresses per family\n",
				SHIELD_MAX_OWN);
			rc = 1;
		} else if (err) {
			rc = die("own", err);
		}
	} else if (!strcmp(cmd, "expire")) {
		size_t removed = 0;

		err = shield_expire(s, (uint64_t)time(NULL), &removed);
		if (err)
			rc = die("expire", err);
		else
			printf("removed %zu expired entries\n", removed);
	} else if (!strcmp(cmd, "stats")) {
		struct shield_counter cnt[SHIELD_C_SLOTS];
		unsigned i;

		err = shield_counters(s, cnt);
		if (err) {
			rc = die("stats", err);
			goto out;
		}
		for (i = 0; i < SHIELD_C_SLOTS; i++)
			printf("%-18s %12llu packets %14llu bytes\n", shield_reason_name(i),
			       (unsigned long long)cnt[i].packets,
			       (unsigned long long)cnt[i].bytes);
	} else if (!strcmp(cmd, "config")) {
		struct shield_config cfg;

		err = shield_config_get(s, &cfg);
		if (err) {
			rc = die("config", err);
			goto out;
		}
		if (ports_s) {
			char *dup = strdup(ports_s), *tok, *save = NULL;
			int i = 0;

			memset(cfg.ports, 0, sizeof(cfg.ports));
			for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				uint64_t v;

				if (parse_u64(tok, &v) || v == 0 || v > 65535 || i >= SHIELD_MAX_PORTS) {
					free(dup);
					rc = die("--ports (1..4 ports, 1..65535)", EINVAL);
					goto out;
				}
				cfg.ports[i++] = (uint16_t)v;
			}
			free(dup);
		}
		if (rate != UINT64_MAX &&
		    shield_config_set_rate(&cfg, (uint32_t)rate, burst ? (uint32_t)burst : (uint32_t)rate)) {
			rc = die("--rate/--burst", EINVAL);
			goto out;
		}
		if (flood != UINT64_MAX || fmode_s) {
			enum shield_flood_mode fm = cfg.flood_mode;

			if (fmode_s && !strcmp(fmode_s, "handoff"))
				fm = SHIELD_FLOOD_HANDOFF;
			else if (fmode_s && !strcmp(fmode_s, "cookie"))
				fm = SHIELD_FLOOD_XDP_COOKIE;
			else if (fmode_s) {
				rc = die("--flood-mode (handoff|cookie)", EINVAL);
				goto out;
			}
			shield_config_set_flood(&cfg, flood != UINT64_MAX ? flood
					        : cfg.flood_syn_per_window * 10, fm);
		}
		if (sample != UINT64_MAX)
			cfg.sample_every = (uint32_t)sample;
		if (hold != UINT64_MAX)
			cfg.flood_hold_ns = hold * 1000000000ull;
		err = shield_config_set(s, &cfg);
		if (err) {
			rc = die("config", err);
			goto out;
		}
		printf("ports=%u,%u,%u,%u rate_interval_ns=%llu tolerance_ns=%llu "
		       "flood_syn_per_100ms=%llu flood_mode=%s sample_every=%u\n",
		       cfg.ports[0], cfg.ports[1], cfg.ports[2], cfg.ports[3],
		       (unsigned long long)cfg.rate_interval_ns,
		       (unsigned long long)cfg.rate_tolerance_ns,
		       (unsigned long long)cfg.flood_syn_per_window,
		       cfg.flood_mode == SHIELD_FLOOD_XDP_COOKIE ? "cookie" : "handoff",
		       cfg.sample_every);
	} else if (!strcmp(cmd, "events")) {
		uint64_t got = 0;
		time_t until = time(NULL) + (time_t)timeout;

		while (got < count && time(NULL) < until) {
			err = shield_events_poll(s, 200, print_event, NULL);
			if (err < 0) {
				rc = die("events", err);
				break;
			}
			got += (uint64_t)err;
		}
	} else {
		usage(stderr);
		rc = 2;
	}
out:
	shield_close(s);
	return rc;
}
