/*
 * Configuration file tests: a full file sets every value; every mistake an
 * operator can make is refused with FILE:LINE:COLUMN and what was expected.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../cfg.h"

static const char full[] =
	"# mxedge configuration\n"
	"hostname: edge1.example.net\n"
	"io: kernel\n"
	"port: af_xdp:eth1\n"
	"queues: 4\n"
	"listen:\n"
	"  - 198.18.0.1:25\n"
	"  - \"[2001:db8::1]:2525\"\n"
	"spool:\n"
	"  dir: /var/spool/mx\n"
	"  segment_mb: 128\n"
	"limits:\n"
	"  max_message_size: 25M\n"
	"  max_sessions: 5000\n"
	"  max_recipients: 500\n"
	"  max_errors: 10\n"
	"timeouts: { command_s: 60, data_s: 120 }\n"
	"control:\n"
	"  socket: /tmp/ctl.sock\n"
	"smtp:\n"
	"  bare_lf: normalise\n"
	"  chunking: false\n"
	"  smtputf8: no\n"
	"domains:\n"
	"  customer.test:\n"
	"    max_size: 1048576\n"
	"    route: { host: 198.19.0.25, port: 2525, tls: required }\n"
	"  other.test:\n"
	"  third.test:\n"
	"    route:\n"
	"      host: mx.third.test\n"
	"relay:\n"
	"  state_dir: /var/lib/mx/relay\n"
	"  log_file: /var/log/mx/mail.log\n"
	"  socket: /tmp/relay.sock\n"
	"  metrics: 127.0.0.1:9187\n"
	"  min_backoff: 5m\n"
	"  max_backoff: 1h\n"
	"  lifetime: 5d\n"
	"  timeout: 60s\n"
	"  concurrency: 4\n"
	"  max_msgs_per_conn: 7\n"
	"  time_scale: 0.001\n"
	"blocklist: [198.18.99.0/24, \"2001:db8:bad::/48\"]\n"
	"allowlist:\n"
	"  - 198.18.0.2\n";

static void test_full(void **state)
{
	struct cfg c;
	char err[512] = "";

	cfg_defaults(&c);
	assert_int_equal(cfg_load("edge.yaml", full, strlen(full), &c, err, sizeof(err)), 0);
	assert_string_equal(c.hostname, "edge1.example.net");
	assert_int_equal(c.io, CFG_IO_KERNEL);
	assert_string_equal(c.port, "af_xdp:eth1");
	assert_int_equal(c.queues, 4);
	assert_int_equal(c.nlisten, 2);
	assert_string_equal(c.listen[1], "[2001:db8::1]:2525");
	assert_string_equal(c.spool_dir, "/var/spool/mx");
	assert_int_equal(c.spool_segment_mb, 128);
	assert_true(c.max_message_size == 25u << 20);
	assert_int_equal(c.max_sessions, 5000);
	assert_int_equal(c.max_recipients, 500);
	assert_int_equal(c.max_errors, 10);
	assert_int_equal(c.command_timeout_s, 60);
	assert_int_equal(c.data_timeout_s, 120);
	assert_string_equal(c.control_socket, "/tmp/ctl.sock");
	assert_true(c.bare_lf_normalise);
	assert_false(c.chunking);
	assert_false(c.smtputf8);
	assert_int_equal(c.ndomains, 3);
	assert_string_equal(c.domains[0].name, "customer.test");
	assert_int_equal(c.domains[0].max_size, 1048576);
	assert_int_equal(c.domains[0].line, 25);
	assert_string_equal(c.domains[0].route.host, "198.19.0.25");
	assert_int_equal(c.domains[0].route.port, 2525);
	assert_int_equal(c.domains[0].route.tls, CFG_TLS_REQUIRED);
	assert_int_equal(c.domains[1].max_size, 0);
	assert_string_equal(c.domains[1].route.host, ""); /* no route */
	/* a route with only a host: port 25, opportunistic TLS */
	assert_string_equal(c.domains[2].route.host, "mx.third.test");
	assert_int_equal(c.domains[2].route.port, 25);
	assert_int_equal(c.domains[2].route.tls, CFG_TLS_OPPORTUNISTIC);
	assert_ptr_equal(cfg_domain_find(&c, "THIRD.test"), &c.domains[2]);
	assert_null(cfg_domain_find(&c, "nowhere.test"));
	assert_string_equal(c.relay.state_dir, "/var/lib/mx/relay");
	assert_string_equal(c.relay.log_file, "/var/log/mx/mail.log");
	assert_string_equal(c.relay.socket, "/tmp/relay.sock");
	assert_string_equal(c.relay.metrics, "127.0.0.1:9187");
	assert_int_equal(c.relay.min_backoff_s, 300);
	assert_int_equal(c.relay.max_backoff_s, 3600);
	assert_int_equal(c.relay.lifetime_s, 5 * 86400);
	assert_int_equal(c.relay.timeout_s, 60);
	assert_int_equal(c.relay.concurrency, 4);
	assert_int_equal(c.relay.max_msgs_per_conn, 7);
	assert_true(c.relay.time_scale > 0.00099 && c.relay.time_scale < 0.00101);
	assert_int_equal(c.nblocklist, 2);
	assert_string_equal(c.blocklist[1].text, "2001:db8:bad::/48");
	assert_int_equal(c.blocklist[1].line, 44);
	assert_int_equal(c.nallowlist, 1);
	assert_int_equal(c.allowlist[0].line, 46);
	cfg_free(&c);
}

/* state.dir: where the dataplane persists operator changes; empty by
 * default (docs/CONFIG.md), and a relative path is refused. */
static void test_state_dir(void **state)
{
	static const char good[] = "state:\n  dir: /var/lib/mxedge\n";
	static const char rel[] = "state:\n  dir: var/lib\n";
	static const char typo[] = "state:\n  dri: /x\n";
	struct cfg c;
	char err[512] = "";

	(void)state;
	cfg_defaults(&c);
	assert_string_equal(c.state_dir, "");
	assert_int_equal(cfg_load("s.yaml", good, strlen(good), &c, err, sizeof(err)), 0);
	assert_string_equal(c.state_dir, "/var/lib/mxedge");
	cfg_free(&c);
	cfg_defaults(&c);
	assert_int_equal(cfg_load("s.yaml", rel, strlen(rel), &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "s.yaml:2:8: state.dir: expected an absolute path");
	cfg_free(&c);
	cfg_defaults(&c);
	assert_int_equal(cfg_load("s.yaml", typo, strlen(typo), &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "s.yaml:2:3: unknown key \"dri\" in state"));
	cfg_free(&c);
}

static void test_defaults_and_empty(void **state)
{
	struct cfg c;
	char err[256];

	cfg_defaults(&c);
	assert_int_equal(cfg_load("empty.yaml", "", 0, &c, err, sizeof(err)), 0);
	assert_int_equal(c.io, CFG_IO_DPDK);
	assert_int_equal(c.max_recipients, 100);
	assert_int_equal(c.command_timeout_s, 300);
	assert_int_equal(c.data_timeout_s, 180);
	assert_true(c.chunking && c.smtputf8 && !c.bare_lf_normalise);
	assert_string_equal(c.control_socket, "/run/mxedge/control.sock");
	/* relay defaults are Postfix's and the product's 15 days */
	assert_int_equal(c.relay.min_backoff_s, 300);
	assert_int_equal(c.relay.max_backoff_s, 4000);
	assert_int_equal(c.relay.lifetime_s, 15 * 86400);
	assert_true(c.relay.time_scale == 1.0);
	assert_int_equal(c.log_level, 2); /* info */
	assert_int_equal(cfg_load("c.yaml", "# only a comment\n", 17, &c, err, sizeof(err)), 0);
	assert_int_equal(cfg_load("c.yaml", "log:\n  level: debug\n", 20, &c, err, sizeof(err)), 0);
	assert_int_equal(c.log_level, 3);
	cfg_free(&c);
}

static void test_errors(void **state)
{
	static const struct {
		const char *yaml;
		const char *msg;
	} cases[] = {
		{ "hostnme: x\n", "c.yaml:1:1: unknown key \"hostnme\"" },
		{ "io: fast\n", "c.yaml:1:5: io: expected one of dpdk, kernel" },
		{ "queues: 0\n", "c.yaml:1:9: queues: expected a whole number 1..64" },
		{ "queues: 4x\n", "queues: expected a whole number 1..64, got \"4x\"" },
		{ "queues: -1\n", "c.yaml:1:9: queues" },
		{ "listen: 198.18.0.1:25\n", "c.yaml:1:9: listen: expected a list" },
		{ "listen: [198.18.0.1]\n", "is not ADDRESS:PORT" },
		{ "listen: [\"2001:db8::1:25\"]\n", "is not ADDRESS:PORT" },
		{ "listen: [198.18.0.1:99999]\n", "is not ADDRESS:PORT" },
		{ "hostname: a\nhostname: b\n", "c.yaml:2:1: \"hostname\" is given twice" },
		{ "limits:\n  max_message_size: 10Q\n", "c.yaml:2:21: limits.max_message_size" },
		{ "limits:\n  max_message_size: 99999999999999999999G\n", "limits.max_message_size" },
		{ "limits: 5\n", "c.yaml:1:9: limits: expected a mapping" },
		{ "limits:\n  max_sessionz: 5\n", "c.yaml:2:3: unknown key \"max_sessionz\" in limits" },
		{ "smtp:\n  chunking: maybe\n", "c.yaml:2:13: smtp.chunking: expected true or false" },
		{ "smtp:\n  bare_lf: fix\n", "expected one of reject, normalise" },
		{ "log:\n  level: loud\n",
		  "c.yaml:2:10: log.level: expected one of error, warning, info, debug" },
		{ "log:\n  levle: info\n", "c.yaml:2:3: unknown key \"levle\" in log (expected: level)" },
		{ "domains:\n  customer.test:\n    max_sise: 5\n",
		  "c.yaml:3:5: unknown key \"max_sise\" in domain customer.test" },
		{ "domains: [a.test]\n", "domains: expected a mapping" },
		{ "blocklist: 198.18.0.0/15\n", "c.yaml:1:12: blocklist: expected a list" },
		{ "blocklist: [[1]]\n", "blocklist: expected a string" },
		{ "hostname: [a]\n", "hostname: expected a string" },
		{ "- a\n- b\n", "the configuration: expected a mapping" },
		{ "hostname: \"unterminated\n", "c.yaml:" },
		{ "a: b: c\n", "c.yaml:1:5: mapping values are not allowed" },
		{ "hostname: a\n---\nhostnme: typo\n", "c.yaml:3:1: a second YAML document" },
		{ "domains:\n  a.test:\n    max_size: 1\n    max_size: 2\n", "c.yaml:4:5: \"max_size\" is given twice" },
		{ "domains:\n  a.test:\n  A.Test:\n", "c.yaml:3:3: \"A.Test\" is given twice" },
		{ "listen: [\"[]:25\"]\n", "is not ADDRESS:PORT" },
		{ "domains:\n  a.test:\n    route: 198.18.0.2\n",
		  "c.yaml:3:12: route: expected a mapping" },
		{ "domains:\n  a.test:\n    route: { port: 25 }\n",
		  "c.yaml:3:12: route of a.test: host is missing" },
		{ "domains:\n  a.test:\n    route: { host: \"[198.18.0.2]\" }\n",
		  "route.host: expected a host name or IP address" },
		{ "domains:\n  a.test:\n    route: { host: h, port: 0 }\n",
		  "route.port: expected a whole number 1..65535" },
		{ "domains:\n  a.test:\n    route: { host: h, tls: maybe }\n",
		  "route.tls: expected one of none, opportunistic, required" },
		{ "domains:\n  a.test:\n    route: { host: h, hots: x }\n",
		  "c.yaml:3:23: unknown key \"hots\" in route of a.test" },
		{ "relay:\n  lifetime: 15 days\n", "c.yaml:2:13: relay.lifetime: expected a duration" },
		{ "relay:\n  min_backoff: 0s\n", "relay.min_backoff: expected a duration 1s..86400s" },
		{ "relay:\n  time_scale: 2\n", "c.yaml:2:15: relay.time_scale: expected a number" },
		{ "relay:\n  time_scale: 0\n", "relay.time_scale: expected a number" },
		{ "relay:\n  time_scale: fast\n", "relay.time_scale: expected a number" },
		{ "relay:\n  concurrency: 0\n", "relay.concurrency: expected a whole number 1..1000" },
		{ "relay:\n  socket: run/x\n", "relay.socket: expected an absolute path" },
		{ "relay:\n  metrics: 198.18.0.1:9187\n", "c.yaml:2:12: relay.metrics: expected a loopback" },
		{ "relay:\n  metrics: 9187\n", "relay.metrics" },
		{ "relay:\n  retries: 3\n", "c.yaml:2:3: unknown key \"retries\" in relay" },
		{ "control:\n  socket: \"\"\n", "c.yaml:2:11: control.socket: expected an absolute path" },
		{ "control:\n  socket: /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
		  "control.socket: longer than 107 bytes" },
	};
	struct cfg c;
	char err[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		cfg_defaults(&c);
		err[0] = '\0';
		rc = cfg_load("c.yaml", cases[i].yaml, strlen(cases[i].yaml), &c, err, sizeof(err));
		if (rc != -EINVAL || strstr(err, cases[i].msg) == NULL)
			fail_msg("case %zu (%s): rc=%d err=\"%s\", expected \"%s\"",
				 i, cases[i].yaml, rc, err, cases[i].msg);
		cfg_free(&c);
	}
}

static void test_file(void **state)
{
	char path[] = "/tmp/mxt-cfg.XXXXXX", err[512];
	struct cfg c;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, full, strlen(full)), (ssize_t)strlen(full));
	close(fd);
	cfg_defaults(&c);
	assert_int_equal(cfg_load_file(path, &c, err, sizeof(err)), 0);
	assert_string_equal(c.source, path);
	cfg_free(&c);
	unlink(path);
	cfg_defaults(&c);
	assert_int_equal(cfg_load_file(path, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "No such file"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_state_dir),
		cmocka_unit_test(test_defaults_and_empty),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
