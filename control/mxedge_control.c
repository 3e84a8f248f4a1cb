/*
 * mxedge-control - the control-plane daemon: relays the mail the dataplane
 * spooled to each domain's route, with retries and bounces, and answers
 * queue commands on its control socket.
 *
 *   mxedge-control [--config FILE] [--spool DIR] [--check]
 *
 * --check validates the configuration and exits (0 valid, 1 not). The
 * process runs in the foreground (systemd supervises it); SIGTERM/SIGINT
 * stop it cleanly. It never writes to the dataplane's spool, so the
 * dataplane keeps accepting mail while this process restarts.
 *
 * Besides the relay's commands the socket answers "log.level": the level of
 * this process's diagnostic log (log.level in the file), changed live by an
 * admin, kept in RELAY_STATE_DIR/control.json (so it survives a restart and
 * wins over the file until set back) and written to the audit log.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfg.h"
#include "ctl.h"
#include "mlog.h"
#include "relay.h"

#define DEFAULT_CONFIG "/etc/mxedge/mxedge.yaml"

static void usage(FILE *f)
{
	fprintf(f, "usage: mxedge-control [--config FILE] [--spool DIR] [--check]\n"
		"  --config FILE  configuration (default " DEFAULT_CONFIG ")\n"
		"  --spool DIR    the dataplane's spool (default: spool.dir of the config)\n"
		"  --check        validate the configuration and exit\n");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig, (void)what;
	event_base_loopexit(arg, NULL);
}

struct ctl_glue {
	struct ctl_server *srv;
	struct event *ev;
};

/* The control socket is served from the loop: ctl_server_poll() never
 * blocks with a zero timeout, so a short timer is enough for humans. */
static void on_ctl(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_glue *g = arg;
	struct timeval tv = { 0, 20000 };

	(void)fd, (void)what;
	if (ctl_server_poll(g->srv, 0) < 0)
		fprintf(stderr, "mxedge-control: control socket: %s\n", strerror(errno));
	evtimer_add(g->ev, &tv);
}

/* The process's own settings: where log.level changes are kept. */
static char state_dir[256];
static int file_level = MLOG_INFO;

/* Saves the operator's level in control.json (shared with the relay's live
 * routes; the key goes when it is the file's level again). Returns 0 or
 * -errno. */
static int level_save(int level)
{
	return relay_ctljson_set(state_dir, "log.level",
				 level == file_level ? NULL : json_string(mlog_name(level)));
}

/* The level saved by an operator, or -ENOENT; -EINVAL with @err for a file
 * that cannot be read as one. */
static int level_load(char *err, size_t errlen)
{
	char path[300];
	json_error_t je;
	json_t *d;
	int level;

	snprintf(path, sizeof(path), "%s/control.json", state_dir);
	if (access(path, F_OK) != 0)
		return -ENOENT;
	d = json_load_file(path, 0, &je);
	if (d && json_object_get(d, "log.level") == NULL) {
		/* only other live settings (routes) are kept */
		json_decref(d);
		return -ENOENT;
	}
	level = mlog_parse(json_string_value(json_object_get(d, "log.level")));
	if (level < 0)
		snprintf(err, errlen, "%.280s:%d: expected {\"log.level\": \"error|warning|info|"
			 "debug\"} (%.100s)", path, d ? 1 : je.line, d ? "bad value" : je.text);
	json_decref(d);
	return level < 0 ? -EINVAL : level;
}

/* One line of the audit log the relay keeps (same fields as its own). */
static void level_audit(const struct ctl_peer *peer, int old, int level)
{
	char path[300], ts[40];
	struct timespec now;
	struct tm tm;
	json_t *o;
	char *line;
	int fd;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	o = json_pack("{s:s, s:i, s:i, s:s, s:s, s:s}", "time", ts, "uid", (int)peer->uid,
		      "pid", (int)peer->pid, "cmd", "log.level", "old", mlog_name(old),
		      "new", mlog_name(level));
	line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	snprintf(path, sizeof(path), "%s/audit.log", state_dir);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (line && fd >= 0) {
		size_t n = strlen(line);

		line[n] = '\n';
		if (write(fd, line, n + 1) != (ssize_t)(n + 1) || fdatasync(fd) < 0)
			mlog(MLOG_ERROR, "audit log %s: %s", path, strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	free(line);
}

/* "log.level [level=LEVEL]": read by anyone, changed by an admin. */
static int h_log_level(void *ctx, const struct ctl_peer *peer, json_t *args,
		       json_t **res, const char **code, char **msg)
{
	json_t *jl = json_object_get(args, "level");
	int old = mlog_level(), level, rc;

	(void)ctx;
	if (jl == NULL) {
		*res = json_pack("{s:s}", "level", mlog_name(old));
		return 0;
	}
	if (peer->role != CTL_ADMIN) {
		*code = "permission_denied";
		if (asprintf(msg, "changing the log level needs the admin role (uid %u is "
			     "read-only)", (unsigned)peer->uid) < 0)
			*msg = NULL;
		return -1;
	}
	level = mlog_parse(json_string_value(jl));
	if (level < 0) {
		*code = "bad_args";
		*msg = strdup("log.level: expected error, warning, info or debug");
		return -1;
	}
	mlog_set_level(level);
	level_audit(peer, old, level);
	mlog(MLOG_INFO, "log.level: %s -> %s by uid %u", mlog_name(old), mlog_name(level),
	     (unsigned)peer->uid);
	*res = json_pack("{s:s, s:s, s:s}", "key", "log.level", "old", mlog_name(old),
			 "new", mlog_name(level));
	rc = level_save(level);
	if (rc < 0) {
		json_decref(*res);
		*res = NULL;
		*code = "not_persisted";
		if (asprintf(msg, "applied, but %s/control.json: %s; the change is lost at "
			     "restart", state_dir, strerror(-rc)) < 0)
			*msg = NULL;
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "spool", required_argument, NULL, 's' },
		{ "check", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = DEFAULT_CONFIG, *spool = NULL;
	struct event *sigterm = NULL, *sigint = NULL;
	struct ctl_glue g = { NULL, NULL };
	struct event_base *base = NULL;
	struct relay *r = NULL;
	const struct ctl_command *rcmds;
	struct ctl_command *cmds = NULL;
	bool check = false;
	char err[512];
	struct cfg c;
	size_t ncmds;
	int o, rc = 1;

	while ((o = getopt_long(argc, argv, "c:s:kh", opts, NULL)) != -1) {
		switch (o) {
		case 'c': config = optarg; break;
		case 's': spool = optarg; break;
		case 'k': check = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	cfg_defaults(&c);
	if (cfg_load_file(config, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "mxedge-control: %s\n", err);
		cfg_free(&c);
		return 1;
	}
	if (check) {
		printf("%s: ok (%zu domains)\n", config, c.ndomains);
		cfg_free(&c);
		return 0;
	}
	mlog_init("mxedge-control");
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	if (base == NULL) {
		fprintf(stderr, "mxedge-control: cannot create the event loop\n");
		goto out;
	}
	r = relay_new(base, &c, spool ? spool : c.spool_dir, err, sizeof(err));
	if (r == NULL) {
		fprintf(stderr, "mxedge-control: %s\n", err);
		goto out;
	}
	snprintf(state_dir, sizeof(state_dir), "%s", c.relay.state_dir);
	file_level = (int)c.log_level;
	mlog_set_level(file_level);
	o = level_load(err, sizeof(err));
	if (o == -EINVAL) {
		fprintf(stderr, "mxedge-control: %s\n", err);
		goto out;
	}
	if (o >= 0)
		mlog_set_level(o);
	rcmds = relay_commands(&ncmds);
	cmds = calloc(ncmds + 1, sizeof(*cmds));
	if (cmds == NULL)
		goto out;
	memcpy(cmds, rcmds, ncmds * sizeof(*cmds));
	cmds[ncmds++] = (struct ctl_command){ "log.level", false, h_log_level,
		"the diagnostic log's level; level=error|warning|info|debug changes it (admin)" };
	g.srv = ctl_server_open(c.relay.socket, cmds, ncmds, r);
	if (g.srv == NULL) {
		fprintf(stderr, "mxedge-control: %s: %s\n", c.relay.socket, strerror(errno));
		goto out;
	}
	g.ev = evtimer_new(base, on_ctl, &g);
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	if (g.ev == NULL || sigterm == NULL || sigint == NULL ||
	    evsignal_add(sigterm, NULL) < 0 || evsignal_add(sigint, NULL) < 0) {
		fprintf(stderr, "mxedge-control: cannot set up events\n");
		goto out;
	}
	on_ctl(-1, 0, &g);
	fprintf(stderr, "mxedge-control: relaying from %s (state in %s, socket %s)\n",
		spool ? spool : c.spool_dir, c.relay.state_dir, c.relay.socket);
	if (event_base_dispatch(base) < 0)
		fprintf(stderr, "mxedge-control: event loop failed\n");
	else
		rc = 0;
out:
	if (g.ev)
		event_free(g.ev);
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	ctl_server_close(g.srv);
	free(cmds);
	relay_free(r);
	if (base)
		event_base_free(base);
	cfg_free(&c);
	return rc;
}
