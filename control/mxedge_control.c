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
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "cfg.h"
#include "ctl.h"
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
	const struct ctl_command *cmds;
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
	cmds = relay_commands(&ncmds);
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
	relay_free(r);
	if (base)
		event_base_free(base);
	cfg_free(&c);
	return rc;
}
