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
		   "{\"key\":\"timeouts.data_s\",\"value\":100}", "restart_required",
		   "timeouts.data_s cannot change while running");
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
	assert_int_equal(json_array_size(json_object_get(r, "changed")), 1);
	assert_int_equal(json_array_size(json_object_get(r, "restart_required")), 2);
	assert_string_equal(json_string_value(json_array_get(
		json_object_get(r, "restart_required"), 0)), "limits.max_recipients");
	assert_string_equal(json_string_value(json_array_get(
		json_object_get(r, "restart_required"), 1)), "hostname");
	assert_int_equal(json_integer_value(json_object_get(r, "domains")), 2);
	json_decref(keep);
	assert_int_equal(tbl_knobs(e->t)->session_max_s, 5);
	assert_int_equal(tbl_prefix_count(e->t, TBL_BLOCK), 2);
	/* live.test left the file; the operator's op.test stays */
	r = ok(e, "domain.list", NULL, &keep);
	assert_int_equal(json_array_size(r), 2);
	json_decref(keep);
	assert_int_equal(e->ndomains, 2);
	expect_err(e, &ro_peer, "config.reload", NULL, "permission_denied", "admin");
}

/* Without --config there is nothing to reload. */
static void test_reload_without_file(void **state)
{
	struct dp_config cfg;
	struct dp_admin adm = { 0 };
	struct tbl_set *t = tbl_create();
	const struct ctl_command *cmds;
	char err[256], frame[] = "{\"v\":1,\"cmd\":\"config.reload\"}";
	json_t *r;
	size_t n;

	(void)state;
	adm.tables = t;
	adm.now_ms = fake_now;
	assert_int_equal(PARSE(&cfg, "--io=kernel", "--no-control"), 0);
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
		cmocka_unit_test_setup_teardown(test_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
		cmocka_unit_test(test_reload_without_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
