/* Live configuration commands of the edge's control socket (dp_admin.c),
 * driven through the protocol's frame handler: config.get/set, bulk list
 * loads, reload, audit and the state file, with every error an operator
 * can provoke. The integration tests (test_live.sh) add real sessions. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../dp.h"
#include "mlog.h"

#define ARGS(...) (char *[]){ __VA_ARGS__ }
#define NARGS(...) (int)(sizeof((char *[]){ __VA_ARGS__ }) / sizeof(char *))
#define PARSE(cfg, ...) dp_config_parse((cfg), NARGS(__VA_ARGS__), ARGS(__VA_ARGS__))

static uint64_t clock_ms = 1000000;

static uint64_t fake_now(void)
{
	return clock_ms;
}

struct env {
	char dir[64], yaml[128], state[128];
	struct dp_config cfg;
	struct tbl_set *t;
	struct dp_admin adm;
	volatile unsigned ndomains;
};

static const struct ctl_peer admin_peer = { 4242, 0, 0, CTL_ADMIN };
static const struct ctl_peer ro_peer = { 4343, 65534, 65534, CTL_READONLY };

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static const char yaml1[] =
	"io: kernel\n"
	"limits:\n"
	"  max_sessions_per_client: 3\n"
	"  session_max_s: 600\n"
	"domains:\n"
	"  live.test:\n"
	"blocklist:\n"
	"  - 198.18.66.0/24\n";

static void env_start(struct env *e)
{
	char err[512] = "";

	e->t = tbl_create();
	assert_non_null(e->t);
	memset(&e->adm, 0, sizeof(e->adm));
	e->adm.tables = e->t;
	e->adm.now_ms = fake_now;
	e->adm.ndomains = &e->ndomains;
	assert_int_equal(PARSE(&e->cfg, "--io=kernel", "--config", e->yaml, "--no-control",
			       "--state-dir", e->state), 0);
	if (dp_admin_start(&e->adm, &e->cfg, err, sizeof(err)) != 0)
		fail_msg("dp_admin_start: %s", err);
}

static void env_stop(struct env *e)
{
	dp_admin_stop(&e->adm);
	tbl_destroy(e->t);
	dp_config_free(&e->cfg);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	strcpy(e->dir, "/tmp/mxt-dplive.XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->yaml, sizeof(e->yaml), "%s/edge.yaml", e->dir);
	snprintf(e->state, sizeof(e->state), "%s/state", e->dir);
	write_file(e->yaml, yaml1);
	env_start(e);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	char cmd[128];

	env_stop(e);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	assert_int_equal(system(cmd), 0);
	free(e);
	return 0;
}

/* Runs "cmd" with the JSON @args as @peer; returns the reply. */
static json_t *call(struct env *e, const struct ctl_peer *peer, const char *cmd,
		    const char *args)
{
	const struct ctl_command *cmds;
	char frame[4096];
	size_t n;

	cmds = dp_admin_commands(&n);
	snprintf(frame, sizeof(frame), "{\"v\":1,\"id\":1,\"cmd\":\"%s\",\"args\":%s}", cmd,
		 args ? args : "{}");
	return ctl_handle_frame(cmds, n, &e->adm, peer, frame, strlen(frame));
}

/* The result of a successful call (borrowed from *keep, which the caller
 * frees). */
static json_t *ok(struct env *e, const char *cmd, const char *args, json_t **keep)
{
	json_t *r = call(e, &admin_peer, cmd, args);

	if (!json_is_true(json_object_get(r, "ok"))) {
		char *s = json_dumps(r, 0);

		fail_msg("%s %s: %s", cmd, args ? args : "", s);
	}
	*keep = r;
	return json_object_get(r, "result");
}

/* A change that must succeed. */
static void run(struct env *e, const char *cmd, const char *args)
{
	json_t *keep;

	ok(e, cmd, args, &keep);
	json_decref(keep);
}

static void expect_err(struct env *e, const struct ctl_peer *peer, const char *cmd,
		       const char *args, const char *code, const char *text)
{
	json_t *r = call(e, peer, cmd, args), *err = json_object_get(r, "error");
	const char *c = json_string_value(json_object_get(err, "code"));
	const char *m = json_string_value(json_object_get(err, "message"));

	if (c == NULL || strcmp(c, code) != 0 || m == NULL || strstr(m, text) == NULL)
		fail_msg("%s %s: want %s \"%s\", got %s \"%s\"", cmd, args ? args : "", code,
			 text, c ? c : "(none)", m ? m : "(none)");
	json_decref(r);
}

static json_int_t knob(struct env *e, const char *key)
{
	char args[128];
	json_t *keep, *r;
	json_int_t v;

	snprintf(args, sizeof(args), "{\"key\":\"%s\"}", key);
	r = ok(e, "config.get", args, &keep);
	v = json_integer_value(json_object_get(r, "value"));
	json_decref(keep);
	return v;
}

static void test_config_set(void **state)
{
	struct env *e = *state;
	json_t *keep, *r;

	assert_int_equal(tbl_knobs(e->t)->max_sessions_per_client, 3);
	assert_int_equal(tbl_knobs(e->t)->session_max_s, 600);
	r = ok(e, "config.set", "{\"key\":\"limits.max_sessions_per_client\",\"value\":7}", &keep);
	assert_int_equal(json_integer_value(json_object_get(r, "old")), 3);
	assert_int_equal(json_integer_value(json_object_get(r, "new")), 7);
	json_decref(keep);
	/* the workers' view changed, and a quoted number works too */
	assert_int_equal(tbl_knobs(e->t)->max_sessions_per_client, 7);
	run(e, "config.set", "{\"key\":\"limits.session_max_s\",\"value\":\"30\"}");
	assert_int_equal(tbl_knobs(e->t)->session_max_s, 30);
	assert_int_equal(knob(e, "limits.session_max_s"), 30);

	expect_err(e, &admin_peer, "config.set", "{\"key\":\"limits.session_max_s\",\"value\":-1}",
		   "bad_args", "limits.session_max_s: expected a whole number 0..864000");
	expect_err(e, &admin_peer, "config.set",
		   "{\"key\":\"limits.session_max_s\",\"value\":864001}", "bad_args",
		   "limits.session_max_s: expected a whole number 0..864000");
	expect_err(e, &admin_peer, "config.set", "{\"key\":\"limits.session_max_s\",\"value\":1.5}",
		   "bad_args", "expected a whole number");
	expect_err(e, &admin_peer, "config.set", "{\"key\":\"limits.session_max_s\"}",
		   "bad_args", "expected a whole number");
	expect_err(e, &admin_peer, "config.set", "{\"key\":\"limits.nope\",\"value\":1}",
		   "bad_args", "unknown key \"limits.nope\"");
	expect_err(e, &admin_peer, "config.set", "{\"key\":7,\"value\":1}",
		   "bad_args", "\"key\" is required");
	expect_err(e, &admin_peer, "config.set",
		   "{\"key\":\"limits.max_sessions\",\"value\":100}", "restart_required",
		   "limits.max_sessions cannot change while running");
	expect_err(e, &admin_peer, "config.set",
		   "{\"key\":\"timeouts.data_s\",\"value\":0}", "bad_args",
		   "timeouts.data_s: expected a whole number 1..86400");
	expect_err(e, &ro_peer, "config.set",
		   "{\"key\":\"limits.session_max_s\",\"value\":5}", "permission_denied", "admin");
	expect_err(e, &admin_peer, "config.get", "{\"key\":\"x\"}", "bad_args",
		   "unknown key \"x\"");
	/* nothing of that changed a value */
	assert_int_equal(knob(e, "limits.session_max_s"), 30);
	assert_int_equal(knob(e, "timeouts.data_s"), 180);
	/* read-only peers may look */
	r = call(e, &ro_peer, "config.get", NULL);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_true(json_array_size(json_object_get(r, "result")) >= 8);
	json_decref(r);
}

/* The SMTP engine's limits are live: published to the workers in the same
 * RCU struct (the workers hand them to smtp_server_set_limits). */
static void test_config_set_smtp_limits(void **state)
{
	struct env *e = *state;
	const struct tbl_knobs *k = tbl_knobs(e->t);

	/* the file's values (defaults here) are published at start */
	assert_int_equal(k->max_message_size, 50ULL << 20);
	assert_int_equal(k->max_recipients, 100);
	assert_int_equal(k->command_timeout_s, 300);
	assert_int_equal(k->data_timeout_s, 180);
	assert_int_equal(k->max_errors, 20);
	run(e, "config.set", "{\"key\":\"limits.max_message_size\",\"value\":4096}");
	run(e, "config.set", "{\"key\":\"limits.max_recipients\",\"value\":2}");
	run(e, "config.set", "{\"key\":\"limits.max_errors\",\"value\":5}");
	run(e, "config.set", "{\"key\":\"timeouts.command_s\",\"value\":7}");
	run(e, "config.set", "{\"key\":\"timeouts.data_s\",\"value\":\"9\"}");
	k = tbl_knobs(e->t);
	assert_int_equal(k->max_message_size, 4096);
	assert_int_equal(k->max_recipients, 2);
	assert_int_equal(k->max_errors, 5);
	assert_int_equal(k->command_timeout_s, 7);
	assert_int_equal(k->data_timeout_s, 9);
	assert_int_equal(k->max_sessions_per_client, 3); /* untouched */
	expect_err(e, &admin_peer, "config.set",
		   "{\"key\":\"limits.max_message_size\",\"value\":1023}", "bad_args",
		   "limits.max_message_size: expected a whole number 1024..");
	expect_err(e, &admin_peer, "config.set",
		   "{\"key\":\"limits.max_recipients\",\"value\":0}", "bad_args",
		   "limits.max_recipients: expected a whole number 1..100000");
	/* survives a restart (state.json) */
	env_stop(e);
	env_start(e);
	k = tbl_knobs(e->t);
	assert_int_equal(k->max_message_size, 4096);
	assert_int_equal(k->command_timeout_s, 7);
	assert_int_equal(knob(e, "timeouts.data_s"), 9);
}

/* log.level: a live knob by name, through config.set or log.level; the
 * level decides which lines are written. */
static void test_log_level(void **state)
{
	struct env *e = *state;
	json_t *keep, *r;

	assert_int_equal(mlog_level(), MLOG_INFO);
	r = ok(e, "log.level", NULL, &keep);
	assert_string_equal(json_string_value(json_object_get(r, "level")), "info");
	json_decref(keep);
	r = ok(e, "config.get", "{\"key\":\"log.level\"}", &keep);
	assert_string_equal(json_string_value(json_object_get(r, "value")), "info");
	assert_string_equal(json_string_value(json_object_get(r, "max")), "debug");
	json_decref(keep);
	r = ok(e, "log.level", "{\"level\":\"debug\"}", &keep);
	assert_string_equal(json_string_value(json_object_get(r, "old")), "info");
	assert_string_equal(json_string_value(json_object_get(r, "new")), "debug");
	json_decref(keep);
	assert_int_equal(mlog_level(), MLOG_DEBUG);
	assert_true(mlog_on(MLOG_DEBUG));
	run(e, "config.set", "{\"key\":\"log.level\",\"value\":\"warning\"}");
	assert_int_equal(mlog_level(), MLOG_WARNING);
	assert_false(mlog_on(MLOG_INFO));
	expect_err(e, &admin_peer, "log.level", "{\"level\":\"loud\"}", "bad_args",
		   "log.level: expected error, warning, info or debug");
	expect_err(e, &admin_peer, "config.set", "{\"key\":\"log.level\",\"value\":3}",
		   "bad_args", "log.level: expected error, warning, info or debug");
	expect_err(e, &ro_peer, "log.level", "{\"level\":\"debug\"}", "permission_denied",
		   "read-only");
	r = call(e, &ro_peer, "log.level", NULL);
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	assert_int_equal(mlog_level(), MLOG_WARNING);
	/* audited with who, old and new; kept across a restart */
	r = ok(e, "audit", NULL, &keep);
	{
		json_t *last = json_array_get(r, json_array_size(r) - 1);

		assert_string_equal(json_string_value(json_object_get(last, "cmd")), "config.set");
		assert_string_equal(json_string_value(json_object_get(last, "target")), "log.level");
		assert_string_equal(json_string_value(json_object_get(last, "old")), "debug");
		assert_string_equal(json_string_value(json_object_get(last, "new")), "warning");
	}
	json_decref(keep);
	env_stop(e);
	mlog_set_level(MLOG_INFO);
	env_start(e);
	assert_int_equal(mlog_level(), MLOG_WARNING);
	/* the file sets it too; an operator's change wins until undone */
	write_file(e->yaml, "io: kernel\nlog:\n  level: debug\n");
	r = ok(e, "config.reload", NULL, &keep);
	assert_int_equal(json_array_size(json_object_get(r, "changed")), 1);  /* per_client 3 -> 50 */
	json_decref(keep);
	assert_int_equal(mlog_level(), MLOG_WARNING);
	run(e, "log.level", "{\"level\":\"debug\"}");
	r = ok(e, "config.get", "{\"key\":\"log.level\"}", &keep);
	assert_string_equal(json_string_value(json_object_get(r, "source")), "file");
	json_decref(keep);
	mlog_set_level(MLOG_INFO);
}

/* Without state.dir the changes go to SPOOL/state: they survive a restart
 * by default. */
static void test_default_state_dir(void **state)
{
	struct env *e = *state;
	char spool[128], path[200];
	struct dp_config cfg;
	struct dp_admin adm = { 0 };
	struct tbl_set *t = tbl_create();
	char err[256];

	snprintf(spool, sizeof(spool), "%s/spool", e->dir);
	assert_int_equal(PARSE(&cfg, "--io=kernel", "--config", e->yaml, "--no-control",
			       "--spool", spool), 0);
	snprintf(path, sizeof(path), "%s/state", spool);
	assert_string_equal(cfg.state_dir, path);
	adm.tables = t;
	adm.now_ms = fake_now;
	if (dp_admin_start(&adm, &cfg, err, sizeof(err)) != 0)
		fail_msg("dp_admin_start: %s", err);
	{
		const struct ctl_command *cmds;
		char frame[] = "{\"v\":1,\"cmd\":\"config.set\",\"args\":{\"key\":"
			       "\"limits.session_max_s\",\"value\":77}}";
		size_t n;
		json_t *r;

		cmds = dp_admin_commands(&n);
		r = ctl_handle_frame(cmds, n, &adm, &admin_peer, frame, strlen(frame));
		assert_true(json_is_true(json_object_get(r, "ok")));
		json_decref(r);
	}
	dp_admin_stop(&adm);
	tbl_destroy(t);
	dp_config_free(&cfg);
	snprintf(path, sizeof(path), "%s/state/state.json", spool);
	assert_int_equal(access(path, R_OK), 0);
	/* the next start finds it */
	t = tbl_create();
	memset(&adm, 0, sizeof(adm));
	adm.tables = t;
	adm.now_ms = fake_now;
	assert_int_equal(PARSE(&cfg, "--io=kernel", "--config", e->yaml, "--no-control",
			       "--spool", spool), 0);
	if (dp_admin_start(&adm, &cfg, err, sizeof(err)) != 0)
		fail_msg("dp_admin_start: %s", err);
	assert_int_equal(tbl_knobs(t)->session_max_s, 77);
	dp_admin_stop(&adm);
	tbl_destroy(t);
	dp_config_free(&cfg);
}

static void test_load(void **state)
{
	struct env *e = *state;
	char path[200], args[400];
	json_t *keep, *r;

	snprintf(path, sizeof(path), "%s/bad.txt", e->dir);
	write_file(path, "198.18.1.0/24\n\n# c\n198.18.2.1/24\n198.18.3.0/24 # x\nfoo\n");
	snprintf(args, sizeof(args), "{\"file\":\"%s\"}", path);
	expect_err(e, &admin_peer, "blocklist.load", args, "bad_args",
		   "bad.txt:4: \"198.18.2.1/24\" is not an address or prefix");
	expect_err(e, &admin_peer, "blocklist.load", args, "bad_args",
		   "2 bad lines (4, 6), nothing loaded");
	assert_int_equal(tbl_prefix_count(e->t, TBL_BLOCK), 1);
	expect_err(e, &admin_peer, "blocklist.load", "{}", "bad_args", "\"file\" is required");
	expect_err(e, &admin_peer, "blocklist.load", "{\"file\":\"/nonexistent/x\"}", "bad_args",
		   "cannot load /nonexistent/x: No such file or directory");
	snprintf(args, sizeof(args), "{\"file\":\"%s\",\"ttl\":0}", path);
	expect_err(e, &admin_peer, "blocklist.load", args, "bad_args", "\"ttl\" must be");
	snprintf(args, sizeof(args), "{\"file\":\"%s\",\"replace\":\"yes\"}", path);
	expect_err(e, &admin_peer, "blocklist.load", args, "bad_args", "\"replace\" must be");
	snprintf(args, sizeof(args), "{\"file\":\"%s\"}", e->dir);
	expect_err(e, &admin_peer, "blocklist.load", args, "bad_args", "not a regular file");

	snprintf(path, sizeof(path), "%s/good.txt", e->dir);
	write_file(path, "198.18.1.0/24\r\n  2001:db8:1::/48\t\n198.18.66.0/24\n");
	snprintf(args, sizeof(args), "{\"file\":\"%s\",\"ttl\":60}", path);
	r = ok(e, "blocklist.load", args, &keep);
	assert_int_equal(json_integer_value(json_object_get(r, "loaded")), 3);
	assert_int_equal(json_integer_value(json_object_get(r, "entries")), 3);
	assert_string_equal(json_string_value(json_object_get(r, "xdp")), "off");
	json_decref(keep);
	uint8_t a[4] = { 198, 18, 1, 9 };
	assert_int_equal(tbl_client_check(e->t, 4, a), TBL_BLOCKED);
	/* replace: exactly the file */
	write_file(path, "198.18.5.0/24\n");
	snprintf(args, sizeof(args), "{\"file\":\"%s\",\"replace\":true}", path);
	run(e, "blocklist.load", args);
	assert_int_equal(tbl_prefix_count(e->t, TBL_BLOCK), 1);
	assert_int_equal(tbl_client_check(e->t, 4, a), TBL_NONE);
	expect_err(e, &ro_peer, "allowlist.load", args, "permission_denied", "admin");
}

/* Changes survive a restart; a TTL entry that expired meanwhile does not;
 * the state file is a delta over the YAML (a removed file entry stays
 * removed). */
static void test_state_restart(void **state)
{
	struct env *e = *state;
	json_t *keep, *r;
	char path[200];
	FILE *f;

	run(e, "config.set", "{\"key\":\"limits.max_sessions_per_client\",\"value\":0}");
	run(e, "blocklist.add", "{\"prefix\":\"198.18.9.0/24\",\"ttl\":3600}");
	run(e, "blocklist.add", "{\"prefix\":\"198.18.8.0/24\",\"ttl\":1}");
	run(e, "blocklist.del", "{\"prefix\":\"198.18.66.0/24\"}");
	run(e, "domain.add", "{\"domain\":\"New.Test\",\"max_size\":1000}");
	run(e, "domain.del", "{\"domain\":\"live.test\"}");
	assert_int_equal(e->ndomains, 1);
	env_stop(e);
	sleep(2); /* the 1 s TTL entry expires while "down" */
	env_start(e);
	assert_int_equal(knob(e, "limits.max_sessions_per_client"), 0);
	assert_int_equal(tbl_knobs(e->t)->max_sessions_per_client, 0);
	assert_int_equal(tbl_prefix_count(e->t, TBL_BLOCK), 1); /* only 198.18.9.0/24 */
	uint8_t a9[4] = { 198, 18, 9, 1 }, a66[4] = { 198, 18, 66, 1 };
	assert_int_equal(tbl_client_check(e->t, 4, a9), TBL_BLOCKED);
	assert_int_equal(tbl_client_check(e->t, 4, a66), TBL_NONE);
	r = ok(e, "domain.list", NULL, &keep);
	assert_int_equal(json_array_size(r), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "domain")),
			    "new.test");
	json_decref(keep);
	assert_int_equal(e->ndomains, 1);
	/* the audit history came back from the file */
	r = ok(e, "audit", "{\"limit\":1000}", &keep);
	assert_int_equal(json_array_size(r), 6);
	r = json_array_get(r, 0);
	assert_string_equal(json_string_value(json_object_get(r, "cmd")), "config.set");
	assert_int_equal(json_integer_value(json_object_get(r, "uid")), 0);
	assert_int_equal(json_integer_value(json_object_get(r, "pid")), 4242);
	assert_int_equal(json_integer_value(json_object_get(r, "old")), 3);
	assert_int_equal(json_integer_value(json_object_get(r, "new")), 0);
	json_decref(keep);
	expect_err(e, &admin_peer, "audit", "{\"limit\":0}", "bad_args", "\"limit\" must be");
	/* setting the file's value drops the override */
	run(e, "config.set", "{\"key\":\"limits.max_sessions_per_client\",\"value\":3}");
	r = ok(e, "config.get", "{\"key\":\"limits.max_sessions_per_client\"}", &keep);
	assert_string_equal(json_string_value(json_object_get(r, "source")), "file");
	json_decref(keep);

	/* a damaged state file stops the start, naming it */
	env_stop(e);
	snprintf(path, sizeof(path), "%s/state.json", e->state);
	f = fopen(path, "w");
	fputs("{\"version\": 1, \"blocklist\": {\"add\": [{\"prefix\": \"198.18.1.1/24\"}]}}\n", f);
	fclose(f);
	char err[512] = "";

	e->t = tbl_create();
	e->adm = (struct dp_admin){ .tables = e->t, .now_ms = fake_now };
	assert_int_equal(PARSE(&e->cfg, "--io=kernel", "--config", e->yaml, "--no-control",
			       "--state-dir", e->state), 0);
	assert_int_equal(dp_admin_start(&e->adm, &e->cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "state.json: blocklist.add[0]: expected"));
}

static void test_reload(void **state)
{
	struct env *e = *state;
	json_t *keep, *r;

	run(e, "domain.add", "{\"domain\":\"op.test\"}");
	write_file(e->yaml, "io: kernel\nlimits:\n  session_max_s: 5\n  max_sesions: 1\n");
	expect_err(e, &admin_peer, "config.reload", NULL, "bad_config",
		   "edge.yaml:4:3: unknown key \"max_sesions\" in limits");
	write_file(e->yaml, "io: kernel\nlimits:\n  session_max_s: 5\nblocklist:\n"
		   "  - 198.18.0.0/15\n  - 198.18.7.1/24\n");
	expect_err(e, &admin_peer, "config.reload", NULL, "bad_config",
		   "edge.yaml:6: \"198.18.7.1/24\" is not an address or prefix");
	assert_int_equal(knob(e, "limits.session_max_s"), 600);
	assert_int_equal(tbl_prefix_count(e->t, TBL_BLOCK), 1);
	write_file(e->yaml, "io: kernel\nhostname: other.test\nlimits:\n  session_max_s: 5\n"
		   "  max_sessions_per_client: 3\n  max_recipients: 7\ndomains:\n  a.test:\n"
		   "blocklist:\n  - 198.18.66.0/24\n  - 198.18.67.0/24\n");
	r = ok(e, "config.reload", NULL, &keep);
	/* session_max_s and max_recipients (live since issue #7's knobs) */
	assert_int_equal(json_array_size(json_object_get(r, "changed")), 2);
	assert_int_equal(json_array_size(json_object_get(r, "restart_required")), 1);
	assert_string_equal(json_string_value(json_array_get(
		json_object_get(r, "restart_required"), 0)), "hostname");
	assert_int_equal(json_integer_value(json_object_get(r, "domains")), 2);
	json_decref(keep);
	assert_int_equal(tbl_knobs(e->t)->session_max_s, 5);
	assert_int_equal(tbl_knobs(e->t)->max_recipients, 7);
	assert_int_equal(tbl_prefix_count(e->t, TBL_BLOCK), 2);
	/* live.test left the file; the operator's op.test stays */
	r = ok(e, "domain.list", NULL, &keep);
	assert_int_equal(json_array_size(r), 2);
	json_decref(keep);
	assert_int_equal(e->ndomains, 2);
	expect_err(e, &ro_peer, "config.reload", NULL, "permission_denied", "admin");
}

/* domain.list shows the relay route each domain has in the file. */
static void test_domain_routes(void **state)
{
	struct env *e = *state;
	json_t *keep, *r, *row;
	size_t i;
	int seen = 0;

	write_file(e->yaml, "io: kernel\ndomains:\n  r.test: { route: { host: 198.18.72.2, "
		   "port: 2525, tls: required } }\n  d.test: { route: { host: mx.d.test } }\n"
		   "  n.test:\n");
	run(e, "config.reload", NULL);
	run(e, "domain.add", "{\"domain\":\"op.test\"}");
	r = ok(e, "domain.list", NULL, &keep);
	assert_int_equal(json_array_size(r), 4);
	json_array_foreach(r, i, row) {
		const char *d = json_string_value(json_object_get(row, "domain"));
		json_t *route = json_object_get(row, "route");

		assert_non_null(route);
		if (strcmp(d, "r.test") == 0)
			assert_string_equal(json_string_value(route), "198.18.72.2:2525 tls=required");
		else if (strcmp(d, "d.test") == 0)
			assert_string_equal(json_string_value(route), "mx.d.test:25 tls=opportunistic");
		else
			assert_true(json_is_null(route));
		seen++;
	}
	assert_int_equal(seen, 4);
	json_decref(keep);
}

/* Without --config there is nothing to reload. */
static void test_reload_without_file(void **state)
{
	struct dp_config cfg;
	struct dp_admin adm = { 0 };
	struct tbl_set *t = tbl_create();
	const struct ctl_command *cmds;
	char err[256], frame[] = "{\"v\":1,\"cmd\":\"config.reload\"}";
	struct env *e = *state;
	char spool[128];
	json_t *r;
	size_t n;

	/* the spool directory of the test: its state goes to SPOOL/state */
	snprintf(spool, sizeof(spool), "%s/spool2", e->dir);
	adm.tables = t;
	adm.now_ms = fake_now;
	assert_int_equal(PARSE(&cfg, "--io=kernel", "--no-control", "--spool", spool), 0);
	assert_int_equal(dp_admin_start(&adm, &cfg, err, sizeof(err)), 0);
	cmds = dp_admin_commands(&n);
	r = ctl_handle_frame(cmds, n, &adm, &admin_peer, frame, strlen(frame));
	assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"),
							       "code")), "not_available");
	json_decref(r);
	dp_admin_stop(&adm);
	tbl_destroy(t);
	dp_config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_set_smtp_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_level, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_state_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_without_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_domain_routes, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
