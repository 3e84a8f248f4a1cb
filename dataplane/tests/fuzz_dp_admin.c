/* libFuzzer harness: fuzzed requests through the edge's command dispatch
 * (dp_admin.c: lists, domains, config.get/set/reload, log.level, audit)
 * in-process, no socket. Every input must get a well-formed reply (never a
 * crash, leak or NULL); a reply that claims success for config.set must
 * have changed the published knobs consistently (config.get agrees).
 *
 * The state directory is on /dev/shm (each change is fsynced: tmpfs keeps
 * that cheap). Inputs naming /dev, /proc or /sys are skipped so a fuzzed
 * "blocklist.load file=/dev/zero" cannot turn one run into a 256 MB read. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../dp.h"
#include "mlog.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dp_config cfg;
static struct dp_admin adm;
static const struct ctl_command *cmds;
static size_t ncmds;
static char dir[64];
static uint64_t clock_ms = 1000000;

static uint64_t fake_now(void)
{
	return clock_ms;
}

static void cleanup(void)
{
	char cmd[128];

	dp_admin_stop(&adm);
	tbl_destroy(adm.tables);
	dp_config_free(&cfg);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_dp_admin: could not remove %s\n", dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char yaml[128], state[128], spool[128], err[512];
	char *args[] = { "--io=kernel", "--no-control", "--config", yaml,
			 "--state-dir", state, "--spool", spool };
	FILE *f;

	(void)argc, (void)argv;
	snprintf(dir, sizeof(dir), "%s/mxt-fuzzadm.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(yaml, sizeof(yaml), "%s/edge.yaml", dir);
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(spool, sizeof(spool), "%s/spool", dir);
	f = fopen(yaml, "w");
	if (f == NULL)
		abort();
	fputs("io: kernel\nlimits:\n  max_sessions_per_client: 3\ndomains:\n  a.test:\n"
	      "blocklist:\n  - 198.18.66.0/24\n", f);
	fclose(f);
	if (dp_config_parse(&cfg, (int)(sizeof(args) / sizeof(args[0])), args) != 0)
		abort();
	adm.tables = tbl_create();
	adm.now_ms = fake_now;
	if (adm.tables == NULL || dp_admin_start(&adm, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_dp_admin: %s\n", err);
		abort();
	}
	cmds = dp_admin_commands(&ncmds);
	mlog_set_level(MLOG_ERROR); /* the fuzzer's output stays readable */
	atexit(cleanup);
	return 0;
}

/* After a successful config.set the published value is what config.get
 * shows. */
static void check_set(json_t *req, json_t *reply)
{
	const char *key = json_string_value(json_object_get(json_object_get(reply, "result"),
							    "key"));
	char frame[256];
	struct ctl_peer peer = { 1, 0, 0, CTL_ADMIN };
	json_t *g;

	(void)req;
	if (key == NULL)
		abort();
	snprintf(frame, sizeof(frame), "{\"v\":1,\"cmd\":\"config.get\",\"args\":{\"key\":\"%s\"}}",
		 key);
	g = ctl_handle_frame(cmds, ncmds, &adm, &peer, frame, strlen(frame));
	if (!json_is_true(json_object_get(g, "ok")) ||
	    !json_equal(json_object_get(json_object_get(g, "result"), "value"),
			json_object_get(json_object_get(reply, "result"), "new")))
		abort();
	json_decref(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_peer peer = { 1, 1000, 1000, size % 3 ? CTL_ADMIN : CTL_READONLY };
	json_t *r, *req;

	if (memmem(data, size, "/dev", 4) || memmem(data, size, "/proc", 5) ||
	    memmem(data, size, "/sys", 4))
		return 0;
	clock_ms += 1000;
	r = ctl_handle_frame(cmds, ncmds, &adm, &peer, (const char *)data, size);
	if (r == NULL || !json_is_object(r) || !json_is_boolean(json_object_get(r, "ok")))
		abort();
	if (!json_is_true(json_object_get(r, "ok")) &&
	    !json_is_string(json_object_get(json_object_get(r, "error"), "message")))
		abort();
	req = json_loadb((const char *)data, size, 0, NULL);
	if (json_is_true(json_object_get(r, "ok")) && req &&
	    json_is_string(json_object_get(req, "cmd")) &&
	    strcmp(json_string_value(json_object_get(req, "cmd")), "config.set") == 0)
		check_set(req, r);
	json_decref(req);
	json_decref(r);
	dp_admin_poll(&adm, 0); /* TTL expiry, a reload SIGHUP asked for */
	mlog_set_level(MLOG_ERROR); /* a fuzzed log.level must not flood the output */
	return 0;
}
