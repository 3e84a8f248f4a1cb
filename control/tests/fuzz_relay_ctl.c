/* libFuzzer harness: fuzzed requests through mxedge-control's command
 * dispatch (relay.c's queue.*, audit, route.*) in-process, no socket, on a relay
 * with one queued message (so show/hold/release/delete/flush find
 * something: "@QID@" in an input becomes its queue id; its route is a
 * closed loopback port, so attempts are deferred). Every input must get a
 * well-formed reply, never a crash, leak or NULL. State lives on /dev/shm:
 * changes are fsynced. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfg.h"
#include "ctl.h"
#include "relay.h"
#include "spool.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct relay *relay;
static struct cfg c;
static const struct ctl_command *cmds;
static size_t ncmds;
static char dir[64];
static char qid[SPOOL_QID_LEN + 1];

/* One durable message in @spool for tj@held.test; its id into qid. */
static void inject(const char *spool)
{
	struct spool_config sc = { .dir = spool, .writers = 1 };
	struct spool_rcpt rc = { "tj@held.test", NULL, NULL };
	struct spool_envelope env = { 0 };
	static const char body[] = "Subject: fuzz\r\n\r\nbody\r\n";
	struct spool_writer *w;
	struct spool_msg m;
	struct spool *sp = spool_open(&sc, NULL);
	uint64_t last = 0, id;
	int i;

	if (sp == NULL)
		abort();
	w = spool_writer(sp, 0);
	env.client_addr = "198.18.7.23";
	env.client_name = env.helo = "mail.example.org";
	env.mail_from = "alice@sender.test";
	env.mail_params = "";
	env.nrcpt = 1;
	env.rcpts = &rc;
	env.arrival_us = 1795913600000000ull;
	id = spool_qid_new(w, 1795913600000ull);
	if (spool_begin(w, &m, id, &env) || spool_data(w, &m, body, sizeof(body) - 1) ||
	    spool_end(w, &m, &last))
		abort();
	for (i = 0; i < 10000 && !spool_durable(w, last); i++)
		usleep(1000);
	if (!spool_durable(w, last))
		abort();
	spool_qid_format(id, qid);
	spool_close(sp);
}

static void cleanup(void)
{
	char cmd[128];

	relay_free(relay);
	event_base_free(base);
	cfg_free(&c);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_relay_ctl: could not remove %s\n", dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char spool[128], err[512], yaml[1024];

	(void)argc, (void)argv;
	snprintf(dir, sizeof(dir), "%s/mxt-fuzzrelay.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(spool, sizeof(spool), "%s/spool", dir);
	if (mkdir(spool, 0750) < 0)
		abort();
	inject(spool);
	snprintf(yaml, sizeof(yaml), "relay:\n  state_dir: %s/state\n  log_file: %s/mail.log\n"
		 "domains:\n  held.test: { route: { host: 127.0.0.1, port: 1 } }\n", dir, dir);
	cfg_defaults(&c);
	if (cfg_load("fuzz.yaml", yaml, strlen(yaml), &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_relay_ctl: %s\n", err);
		abort();
	}
	base = event_base_new();
	relay = base ? relay_new(base, &c, spool, err, sizeof(err)) : NULL;
	if (relay == NULL) {
		fprintf(stderr, "fuzz_relay_ctl: %s\n", base ? err : "no event base");
		abort();
	}
	cmds = relay_commands(&ncmds);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_peer peer = { 1, 1000, 1000, size % 3 ? CTL_ADMIN : CTL_READONLY };
	char *frame = malloc(size * 3 + 1), *o = frame;
	const uint8_t *p = data, *end = data + size;
	json_t *r;

	if (frame == NULL)
		return 0;
	while (p < end) {
		if (end - p >= 5 && memcmp(p, "@QID@", 5) == 0) {
			memcpy(o, qid, SPOOL_QID_LEN);
			o += SPOOL_QID_LEN;
			p += 5;
		} else {
			*o++ = (char)*p++;
		}
	}
	r = ctl_handle_frame(cmds, ncmds, relay, &peer, frame, (size_t)(o - frame));
	free(frame);

	if (r == NULL || !json_is_object(r) || !json_is_boolean(json_object_get(r, "ok")))
		abort();
	if (!json_is_true(json_object_get(r, "ok")) &&
	    !json_is_string(json_object_get(json_object_get(r, "error"), "message")))
		abort();
	json_decref(r);
	/* timers the commands armed (a flush) run, bounded: no network here,
	 * routes are absent, so attempts fail fast. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	return 0;
}
