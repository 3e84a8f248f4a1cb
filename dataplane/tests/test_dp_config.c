/* Command-line and EAL-argument tests of the dataplane: an operator's typo
 * must be refused with a message, never turned into odd EAL devargs. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../dp.h"

#define ARGS(...) (char *[]){ __VA_ARGS__ }
#define NARGS(...) (int)(sizeof((char *[]){ __VA_ARGS__ }) / sizeof(char *))
#define PARSE(cfg, ...) dp_config_parse((cfg), NARGS(__VA_ARGS__), ARGS(__VA_ARGS__))

static int find_arg(char **argv, int argc, const char *s)
{
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], s) == 0)
			return i;
	return -1;
}

/* A virtual interface (no device behind it; lo is one everywhere) gets
 * busy_budget=0 so the PMD does not make a syscall on every empty poll. */
static void test_af_xdp_virtual_iface_no_rx_kick(void **state)
{
	struct dp_config cfg;
	char *argv[64], buf[2048];
	int argc, i;

	assert_int_equal(PARSE(&cfg, "--port", "af_xdp:lo", "--no-huge"), 0);
	argc = dp_eal_argv(&cfg, argv, 64, buf, sizeof(buf));
	assert_true(argc > 0);
	i = find_arg(argv, argc, "--vdev");
	assert_true(i > 0);
	assert_string_equal(argv[i + 1],
		"net_af_xdp0,iface=lo,queue_count=1,busy_budget=0");
	dp_config_free(&cfg);
}

static void test_af_xdp_port(void **state)
{
	struct dp_config cfg;
	char *argv[64], buf[2048];
	int argc, i;

	assert_int_equal(PARSE(&cfg, "--port", "af_xdp:veth0", "--queues", "2",
			       "--xdp-prog", "/tmp/shield.o", "--no-huge"), 0);
	assert_int_equal(cfg.port_kind, DP_PORT_AF_XDP);
	assert_string_equal(cfg.port_name, "veth0");
	assert_int_equal(cfg.queues, 2);
	argc = dp_eal_argv(&cfg, argv, 64, buf, sizeof(buf));
	assert_true(argc > 0);
	assert_null(argv[argc]);
	i = find_arg(argv, argc, "--vdev");
	assert_true(i > 0);
	assert_string_equal(argv[i + 1],
		"net_af_xdp0,iface=veth0,queue_count=2,xdp_prog=/tmp/shield.o");
	/* one main lcore plus one worker per queue; with fewer CPUs than
	 * that, lcores are mapped onto the CPUs (--lcores 0@c,1@c,2@c) */
	i = find_arg(argv, argc, "-l");
	if (i > 0) {
		assert_string_equal(argv[i + 1], "0-2");
	} else {
		i = find_arg(argv, argc, "--lcores");
		assert_true(i > 0);
		assert_non_null(strstr(argv[i + 1], "0@"));
		assert_non_null(strstr(argv[i + 1], ",2@"));
		assert_null(strstr(argv[i + 1], ",3@"));
	}
	assert_true(find_arg(argv, argc, "--no-huge") > 0);
	i = find_arg(argv, argc, "-m");
	assert_string_equal(argv[i + 1], "512");
	assert_true(find_arg(argv, argc, "--no-pci") > 0);
}

static void test_tap_and_packet_and_pci(void **state)
{
	struct dp_config cfg;
	char *argv[64], buf[2048];
	int argc;

	assert_int_equal(PARSE(&cfg, "--port", "tap:dtap0", "--mem", "256"), 0);
	argc = dp_eal_argv(&cfg, argv, 64, buf, sizeof(buf));
	assert_string_equal(argv[find_arg(argv, argc, "--vdev") + 1],
			    "net_tap0,iface=dtap0");
	assert_int_equal(PARSE(&cfg, "--port", "af_packet:eth1", "--queues", "3"), 0);
	argc = dp_eal_argv(&cfg, argv, 64, buf, sizeof(buf));
	assert_string_equal(argv[find_arg(argv, argc, "--vdev") + 1],
			    "net_af_packet0,iface=eth1,qpairs=3");
	assert_int_equal(PARSE(&cfg, "--port", "pci:0000:03:00.0"), 0);
	argc = dp_eal_argv(&cfg, argv, 64, buf, sizeof(buf));
	assert_string_equal(argv[find_arg(argv, argc, "-a") + 1], "0000:03:00.0");
	assert_int_equal(find_arg(argv, argc, "--no-pci"), -1);
}

static void test_eal_extra_split(void **state)
{
	struct dp_config cfg;
	char *argv[64], buf[2048];
	int argc;

	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--eal", "--log-level=*:debug  -n 4"), 0);
	argc = dp_eal_argv(&cfg, argv, 64, buf, sizeof(buf));
	assert_string_equal(argv[argc - 3], "--log-level=*:debug");
	assert_string_equal(argv[argc - 2], "-n");
	assert_string_equal(argv[argc - 1], "4");
	/* too small a buffer is reported, not overrun */
	assert_int_equal(dp_eal_argv(&cfg, argv, 64, buf, 40), -ENOSPC);
	assert_int_equal(dp_eal_argv(&cfg, argv, 4, buf, sizeof(buf)), -ENOSPC);
}

static void test_rejects(void **state)
{
	struct dp_config cfg;

	assert_int_equal(PARSE(&cfg, "--queues", "1"), -EINVAL);      /* no port */
	assert_int_equal(PARSE(&cfg, "--port", "dpdk:x"), -EINVAL);   /* kind */
	assert_int_equal(PARSE(&cfg, "--port", "tap:"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "veth0"), -EINVAL);
	/* a comma would smuggle extra devargs into the vdev string */
	assert_int_equal(PARSE(&cfg, "--port", "af_xdp:veth0,xdp_prog=/x"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--queues", "0"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--queues", "65"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--queues", "2x"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--mem", "64"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--xdp-prog", "/x.o"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "af_xdp:v", "--xdp-prog", "/a,b.o"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--bogus"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "stray"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port"), -EINVAL);
}

static void test_control_option(void **state)
{
	struct dp_config cfg;

	assert_int_equal(PARSE(&cfg, "--port", "tap:t"), 0);
	assert_string_equal(cfg.control, DP_DEFAULT_CONTROL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--control", "/tmp/x.sock"), 0);
	assert_string_equal(cfg.control, "/tmp/x.sock");
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--no-control"), 0);
	assert_string_equal(cfg.control, "");
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--control", ""), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--control",
		"/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock"), -EINVAL);
}

static const char *write_file(const char *text)
{
	static char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/tmp/mxt-dpcfg.%d.yaml", getpid());
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static void test_config_file(void **state)
{
	struct dp_config cfg;
	const char *path = write_file("port: af_xdp:eth7\nqueues: 3\n"
				      "control:\n  socket: /tmp/f.sock\n"
				      "blocklist: [198.18.99.0/24]\n");

	/* the file supplies the port; the command line overrides it */
	assert_int_equal(PARSE(&cfg, "--config", (char *)path), 0);
	assert_true(cfg.have_file);
	assert_string_equal(cfg.port_name, "eth7");
	assert_int_equal(cfg.queues, 3);
	assert_string_equal(cfg.control, "/tmp/f.sock");
	assert_int_equal(cfg.file.nblocklist, 1);
	dp_config_free(&cfg);
	assert_int_equal(PARSE(&cfg, "--queues", "1", "--config", (char *)path,
			       "--port", "tap:t9"), 0);
	assert_int_equal(cfg.port_kind, DP_PORT_TAP);
	assert_int_equal(cfg.queues, 1);
	dp_config_free(&cfg);
	/* file errors are refused before anything starts */
	path = write_file("queues: many\n");
	assert_int_equal(PARSE(&cfg, "--config", (char *)path), -EINVAL);
	dp_config_free(&cfg);
	path = write_file("port: dpdk:0\n");
	assert_int_equal(PARSE(&cfg, "--config", (char *)path), -EINVAL);
	dp_config_free(&cfg);
	assert_int_equal(PARSE(&cfg, "--config", "/nonexistent/x.yaml"), -EINVAL);
	dp_config_free(&cfg);
	/* --check-config needs no port */
	path = write_file("hostname: a.test\n");
	assert_int_equal(PARSE(&cfg, "--check-config", "--config", (char *)path), 0);
	assert_true(cfg.check_only);
	dp_config_free(&cfg);
	unlink(path);
}

static void test_smtp_options(void **state)
{
	struct dp_config cfg;
	const char *path;
	/* 198.18.0.1 and /24 in network byte order */
	const uint8_t a4[4] = { 198, 18, 0, 1 }, m24[4] = { 255, 255, 255, 0 };
	const uint8_t a6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };

	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--addr", "198.18.0.1/24",
			       "--addr", "2001:db8::1/64", "--smtp-port", "2525",
			       "--spool", "/tmp/sp", "--hostname", "mx.test"), 0);
	assert_memory_equal(&cfg.ip4, a4, 4);
	assert_memory_equal(&cfg.ip4_mask, m24, 4);
	assert_memory_equal(cfg.ip6, a6, 16);
	assert_int_equal(cfg.ip6_prefixlen, 64);
	assert_int_equal(cfg.smtp_port, 2525);
	assert_string_equal(cfg.spool_dir, "/tmp/sp");
	assert_string_equal(cfg.hostname, "mx.test");
	dp_config_free(&cfg);
	/* defaults: port 25, no address (frames are only counted) */
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0"), 0);
	assert_int_equal(cfg.smtp_port, 25);
	assert_int_equal(cfg.ip4, 0);
	assert_int_equal(cfg.ip6_prefixlen, 0);
	assert_string_equal(cfg.spool_dir, "/var/spool/mxedge");
	dp_config_free(&cfg);
	/* typos are refused */
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--addr", "198.18.0.300/24"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--addr", "198.18.0.1/33"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--addr", "2001:db8::1/129"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--smtp-port", "0"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--hostname", "a b"), -EINVAL);
	/* several queues and workers serve SMTP (flows stay on their lcore by
	 * RSS or software hand-off); a queue without a worker, or RSS that
	 * only a PCI port's RETA can give, is refused */
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--addr", "198.18.0.1",
			       "--queues", "2"), 0);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--addr", "198.18.0.1",
			       "--workers", "2"), 0);
	assert_int_equal(dp_workers(&cfg), 2);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--queues", "2",
			       "--workers", "1"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--queues", "2",
			       "--dispatch", "rss"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t0", "--dispatch", "fast"), -EINVAL);
	/* the file's listen:, spool.dir and hostname; the command line wins */
	path = write_file("port: tap:t1\nhostname: file.test\n"
			  "listen: [\"198.18.0.1:587\", \"[2001:db8::1]:587\"]\n"
			  "spool:\n  dir: /tmp/fsp\n");
	assert_int_equal(PARSE(&cfg, "--config", (char *)path), 0);
	assert_memory_equal(&cfg.ip4, a4, 4);
	assert_memory_equal(&cfg.ip4_mask, m24, 4);
	assert_int_equal(cfg.ip6_prefixlen, 64);
	assert_int_equal(cfg.smtp_port, 587);
	assert_string_equal(cfg.hostname, "file.test");
	assert_string_equal(cfg.spool_dir, "/tmp/fsp");
	dp_config_free(&cfg);
	assert_int_equal(PARSE(&cfg, "--config", (char *)path, "--smtp-port", "25",
			       "--hostname", "cli.test"), 0);
	assert_int_equal(cfg.smtp_port, 25);
	assert_string_equal(cfg.hostname, "cli.test");
	dp_config_free(&cfg);
	unlink(path);
}

/* limits.sessions_per_lcore sizes the preallocated sessions: 1024 unless
 * the file or --sessions-per-lcore says otherwise (the option wins), and
 * nothing outside 1..CFG_MAX_SESSIONS_PER_LCORE gets through. */
static void test_sessions_per_lcore(void **state)
{
	struct dp_config cfg;
	const char *path;

	assert_int_equal(PARSE(&cfg, "--port", "tap:t"), 0);
	assert_int_equal(cfg.file.sessions_per_lcore, 1024);
	dp_config_free(&cfg);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--sessions-per-lcore", "110000"), 0);
	assert_int_equal(cfg.file.sessions_per_lcore, 110000);
	dp_config_free(&cfg);
	path = write_file("limits:\n  sessions_per_lcore: 4096\n");
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--config", (char *)path), 0);
	assert_int_equal(cfg.file.sessions_per_lcore, 4096);
	dp_config_free(&cfg);
	assert_int_equal(PARSE(&cfg, "--sessions-per-lcore", "7", "--port", "tap:t",
			       "--config", (char *)path), 0);
	assert_int_equal(cfg.file.sessions_per_lcore, 7);
	dp_config_free(&cfg);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--sessions-per-lcore", "0"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--sessions-per-lcore", "1000001"),
			 -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--sessions-per-lcore", "1k"), -EINVAL);
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--sessions-per-lcore"), -EINVAL);
	path = write_file("limits:\n  sessions_per_lcore: 0\n");
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--config", (char *)path), -EINVAL);
	dp_config_free(&cfg);
	path = write_file("limits:\n  sessions_per_lcore: 2000000\n");
	assert_int_equal(PARSE(&cfg, "--port", "tap:t", "--config", (char *)path), -EINVAL);
	dp_config_free(&cfg);
	unlink(path);
}

static void test_help_version(void **state)
{
	struct dp_config cfg;

	assert_int_equal(PARSE(&cfg, "--help"), 1);
	assert_int_equal(PARSE(&cfg, "--version"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_af_xdp_port),
		cmocka_unit_test(test_af_xdp_virtual_iface_no_rx_kick),
		cmocka_unit_test(test_tap_and_packet_and_pci),
		cmocka_unit_test(test_eal_extra_split),
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_control_option),
		cmocka_unit_test(test_config_file),
		cmocka_unit_test(test_smtp_options),
		cmocka_unit_test(test_sessions_per_lcore),
		cmocka_unit_test(test_help_version),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
