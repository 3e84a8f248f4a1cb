/*
 * mxedgectl - operators' command line for mxedge's control socket.
 *
 *   mxedgectl [--socket PATH] [--json] [--timeout SEC] COMMAND [KEY=VALUE ...]
 *
 * Two daemons answer: the edge (status, stats, config, lists, domains,
 * audit, log level) and mxedge-control's relay (queue.*). queue.* commands
 * go to the relay's socket (--relay-socket, $MXEDGE_RELAY or
 * /run/mxedge/relay.sock); --relay sends any command there (e.g. "log
 * level" or "audit" of the relay). An explicit --socket wins for every
 * command. "log level [LEVEL]" reads or sets log.level.
 *
 * Domains and their relay routes: "domain add NAME --route HOST[:PORT]
 * [--tls POLICY]" sets the route on mxedge-control (route.set) and then adds
 * the domain to the edge (domain.add), putting the old route back if the
 * edge refuses; "domain del NAME" removes the domain from the edge and then
 * its route from mxedge-control; "domain list" shows the edge's domains
 * with mxedge-control's live routes when it answers. route.* commands go
 * to mxedge-control only.
 *
 * KEY=VALUE pairs become the request's "args" (integers and true/false are
 * sent as JSON numbers and booleans); --args '{...}' passes JSON as is.
 * "config get" is the same as "config.get" (a group word and a verb).
 * Output is a human table by default, the raw JSON reply with --json.
 * Exit status: 0 ok, 1 the command failed, 2 usage or connection error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl.h"

#define DEFAULT_SOCKET "/run/mxedge/control.sock"
#define DEFAULT_RELAY_SOCKET "/run/mxedge/relay.sock"

static void usage(FILE *f)
{
	fprintf(f,
"usage: mxedgectl [--socket PATH] [--json] [--timeout SEC] COMMAND [KEY=VALUE ...]\n"
"       mxedgectl [--socket PATH] COMMAND --args '{\"key\": ...}'\n"
"       mxedgectl [--relay] log level [error|warning|info|debug]\n"
"       mxedgectl domain add NAME [--route HOST[:PORT] [--tls POLICY]]\n"
"       mxedgectl domain del NAME | domain list\n"
"       mxedgectl route set NAME --route HOST[:PORT] [--tls none|opportunistic|required]\n"
"       mxedgectl route del NAME | route list\n"
"\n"
"  --socket PATH   control socket (default $MXEDGE_CONTROL or " DEFAULT_SOCKET ")\n"
"  --relay-socket PATH  mxedge-control's socket, for queue.* and route.* (default\n"
"                  $MXEDGE_RELAY or " DEFAULT_RELAY_SOCKET ")\n"
"  --relay         send the command to mxedge-control (log level, audit, help)\n"
"  --json          print the JSON reply instead of a table\n"
"  --timeout SEC   give up waiting for a reply after SEC seconds (default 10)\n"
"\n"
"'mxedgectl help' lists the commands the running edge offers; a command may\n"
"be given as two words: 'mxedgectl config get' = 'mxedgectl config.get'.\n");
}

/* A value as the user typed it: integer, boolean or string. */
static json_t *typed_value(const char *s)
{
	char *end;
	long long v;

	if (strcmp(s, "true") == 0)
		return json_true();
	if (strcmp(s, "false") == 0)
		return json_false();
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*s && *end == '\0' && errno == 0 && (s[0] != '0' || s[1] == '\0'))
		return json_integer(v);
	return json_string(s);
}

static char *cell(json_t *v)
{
	if (json_is_string(v))
		return strdup(json_string_value(v));
	if (v == NULL || json_is_null(v))
		return strdup("-");
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Prints an array of objects as an aligned table (columns: the keys of the
 * first row, in order). */
static void print_table(json_t *rows)
{
	json_t *first = json_array_get(rows, 0), *row, *v;
	const char *key;
	size_t ncol = json_object_size(first), i, j, r;
	size_t *w = calloc(ncol ? ncol : 1, sizeof(size_t));
	const char **keys = calloc(ncol ? ncol : 1, sizeof(char *));

	i = 0;
	json_object_foreach(first, key, v) {
		keys[i] = key;
		w[i++] = strlen(key);
	}
	json_array_foreach(rows, r, row) {
		for (j = 0; j < ncol; j++) {
			char *c = cell(json_object_get(row, keys[j]));

			if (c && strlen(c) > w[j])
				w[j] = strlen(c);
			free(c);
		}
	}
	for (j = 0; j < ncol; j++) {
		for (const char *k = keys[j]; *k; k++)
			putchar(*k >= 'a' && *k <= 'z' ? *k - 32 : *k);
		printf("%*s", j + 1 < ncol ? (int)(w[j] - strlen(keys[j]) + 2) : 0, "");
	}
	putchar('\n');
	json_array_foreach(rows, r, row) {
		for (j = 0; j < ncol; j++) {
			char *c = cell(json_object_get(row, keys[j]));

			printf("%s%*s", c ? c : "",
			       j + 1 < ncol ? (int)(w[j] - strlen(c ? c : "") + 2) : 0, "");
			free(c);
		}
		putchar('\n');
	}
	free(w);
	free(keys);
}

static void print_human(json_t *result)
{
	const char *key;
	json_t *v;
	size_t w = 0;

	if (result == NULL || json_is_null(result)) {
		printf("ok\n");
	} else if (json_is_array(result) && json_array_size(result) > 0 &&
		   json_is_object(json_array_get(result, 0))) {
		print_table(result);
	} else if (json_is_array(result)) {
		size_t i;

		json_array_foreach(result, i, v) {
			char *c = cell(v);

			printf("%s\n", c ? c : "");
			free(c);
		}
	} else if (json_is_object(result)) {
		json_object_foreach(result, key, v)
			if (strlen(key) > w)
				w = strlen(key);
		json_object_foreach(result, key, v) {
			char *c = cell(v);

			printf("%-*s  %s\n", (int)w, key, c ? c : "");
			free(c);
		}
	} else {
		char *c = cell(result);

		printf("%s\n", c ? c : "");
		free(c);
	}
}

/* The error of a failed reply on stderr as "mxedgectl: WHERE: MESSAGE (CODE)". */
static void print_error(const char *where, json_t *reply)
{
	json_t *err = json_object_get(reply, "error");

	fprintf(stderr, "mxedgectl: %s%s%s (%s)\n", where ? where : "", where ? ": " : "",
		json_string_value(json_object_get(err, "message")) ?: "failed",
		json_string_value(json_object_get(err, "code")) ?: "error");
}

static bool reply_ok(json_t *reply)
{
	return json_is_true(json_object_get(reply, "ok"));
}

/* "--route HOST[:PORT]" into args host (and port); false on a bad value. */
static bool route_arg(json_t *args, const char *v)
{
	const char *colon = strrchr(v, ':');
	char host[256];
	char *end;
	long port;

	/* one colon = HOST:PORT; none (or an IPv6 address) = HOST only */
	if (colon && strchr(v, ':') == colon) {
		if ((size_t)(colon - v) >= sizeof(host) || colon == v)
			return false;
		errno = 0;
		port = strtol(colon + 1, &end, 10);
		if (colon[1] == '\0' || *end || errno || port < 1 || port > 65535)
			return false;
		memcpy(host, v, (size_t)(colon - v));
		host[colon - v] = '\0';
		json_object_set_new(args, "host", json_string(host));
		json_object_set_new(args, "port", json_integer(port));
		return true;
	}
	if (!*v)
		return false;
	json_object_set_new(args, "host", json_string(v));
	return true;
}

/* Puts the route that was in place back after domain.add failed: @old is
 * route.set's "old" ("HOST:PORT tls=POLICY" or "none"). Best effort; the
 * caller reports the failure either way. */
static void route_undo(const char *rsock, const char *domain, const char *old, int timeout_ms)
{
	json_t *a = json_pack("{s:s}", "domain", domain), *rep;
	const char *tls = old ? strstr(old, " tls=") : NULL;
	char hp[300];

	if (a == NULL || old == NULL)
		goto out;
	if (tls == NULL) {
		rep = ctl_call(rsock, "route.del", a, timeout_ms);
	} else {
		snprintf(hp, sizeof(hp), "%.*s", (int)(tls - old), old);
		json_object_set_new(a, "tls", json_string(tls + 5));
		if (!route_arg(a, hp))
			goto out;
		rep = ctl_call(rsock, "route.set", a, timeout_ms);
	}
	json_decref(rep);
out:
	json_decref(a);
}

/* "domain.list": the edge's rows with each route replaced by the relay's
 * live one (route.list) when mxedge-control answers; else the file's, as
 * the edge read it, with a note on stderr. */
static void domain_list_routes(json_t *reply, const char *rsock, int timeout_ms)
{
	json_t *rows = json_object_get(reply, "result"), *rl, *row, *rr;
	size_t i, k;

	if (!json_is_array(rows))
		return;
	rl = ctl_call(rsock, "route.list", NULL, timeout_ms);
	if (!reply_ok(rl)) {
		fprintf(stderr, "mxedgectl: routes as in the file: mxedge-control at %s did "
			"not answer route.list\n", rsock);
		json_decref(rl);
		return;
	}
	json_array_foreach(rows, i, row) {
		const char *d = json_string_value(json_object_get(row, "domain"));
		json_t *route = json_null();

		json_array_foreach(json_object_get(rl, "result"), k, rr) {
			char text[330];

			if (!d || strcasecmp(d, json_string_value(json_object_get(rr, "domain")) ?: "") != 0)
				continue;
			snprintf(text, sizeof(text), "%s:%d tls=%s",
				 json_string_value(json_object_get(rr, "host")) ?: "",
				 (int)json_integer_value(json_object_get(rr, "port")),
				 json_string_value(json_object_get(rr, "tls")) ?: "");
			json_decref(route);
			route = json_string(text);
		}
		json_object_set_new(row, "route", route);
	}
	json_decref(rl);
}

/* "domain add NAME --route ...": the route goes to mxedge-control first
 * (it checks host, port and tls, so a bad route changes nothing), then the
 * domain to the edge; when the edge refuses, the relay's previous route is
 * put back. Returns the exit status. */
static int domain_add_routed(const char *sock, const char *rsock, json_t *args,
			     json_t *rargs, bool as_json, int timeout_ms)
{
	json_t *rrep, *erep;
	char *old = NULL;
	int status = 1;

	json_object_set(rargs, "domain", json_object_get(args, "domain"));
	rrep = ctl_call(rsock, "route.set", rargs, timeout_ms);
	if (rrep == NULL) {
		fprintf(stderr, "mxedgectl: cannot talk to mxedge-control at %s: %s; nothing "
			"was changed\n", rsock, strerror(errno));
		return 2;
	}
	if (!reply_ok(rrep)) {
		print_error("route", rrep);
		json_decref(rrep);
		return 1;
	}
	old = strdup(json_string_value(json_object_get(json_object_get(rrep, "result"), "old")) ?: "none");
	erep = ctl_call(sock, "domain.add", args, timeout_ms);
	if (!reply_ok(erep)) {
		if (erep)
			print_error("domain", erep);
		else
			fprintf(stderr, "mxedgectl: cannot talk to mxedge at %s: %s\n", sock,
				strerror(errno));
		route_undo(rsock, json_string_value(json_object_get(args, "domain")), old, timeout_ms);
		status = erep ? 1 : 2;
		goto out;
	}
	status = 0;
	if (as_json) {
		json_t *o = json_pack("{s:b, s:{s:O, s:O}}", "ok", 1, "result", "domain",
				      json_object_get(erep, "result"), "route",
				      json_object_get(rrep, "result"));
		char *t = o ? json_dumps(o, JSON_INDENT(2)) : NULL;

		printf("%s\n", t ? t : "");
		free(t);
		json_decref(o);
	} else {
		print_human(json_object_get(rrep, "result"));
	}
out:
	free(old);
	json_decref(rrep);
	json_decref(erep);
	return status;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "args", required_argument, NULL, 'a' },
		{ "relay-socket", required_argument, NULL, 'r' },
		{ "relay", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = getenv("MXEDGE_CONTROL"), *rsock = getenv("MXEDGE_RELAY");
	json_t *args = json_object(), *rargs = NULL, *reply, *err;
	bool as_json = false, sock_given = false, to_relay = false, routed;
	int timeout_s = 10, c, status;
	char *end, joined[128];
	const char *cmd;

	if (sock == NULL || *sock == '\0')
		sock = DEFAULT_SOCKET;
	if (rsock == NULL || *rsock == '\0')
		rsock = DEFAULT_RELAY_SOCKET;
	while ((c = getopt_long(argc, argv, "+s:jt:a:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			sock = optarg;
			sock_given = true;
			break;
		case 'r':
			rsock = optarg;
			break;
		case 'R':
			to_relay = true;
			break;
		case 'j':
			as_json = true;
			break;
		case 't':
			timeout_s = (int)strtol(optarg, &end, 10);
			if (*end || timeout_s < 1 || timeout_s > 3600) {
				fprintf(stderr, "mxedgectl: --timeout: expected 1..3600 seconds\n");
				json_decref(args);
				return 2;
			}
			break;
		case 'a': {
			json_error_t je;

			json_decref(args);
			args = json_loads(optarg, 0, &je);
			if (!json_is_object(args)) {
				fprintf(stderr, "mxedgectl: --args: expected a JSON object (%s)\n",
					args ? "not an object" : je.text);
				json_decref(args);
				return 2;
			}
			break;
		}
		case 'h':
			usage(stdout);
			json_decref(args);
			return 0;
		default:
			usage(stderr);
			json_decref(args);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		json_decref(args);
		return 2;
	}
	cmd = argv[optind];
	if (strchr(cmd, '.') == NULL && optind + 1 < argc && strchr(argv[optind + 1], '=') == NULL) {
		int n = snprintf(joined, sizeof(joined), "%s.%s", cmd, argv[optind + 1]);

		if (n > 0 && (size_t)n < sizeof(joined)) {
			cmd = joined;
			optind++;
		}
	}
	/* "log level debug": the level is the one positional word */
	if (strcmp(cmd, "log.level") == 0 && optind + 2 == argc && strchr(argv[optind + 1], '=') == NULL) {
		json_object_set_new(args, "level", json_string(argv[optind + 1]));
		optind++;
	}
	routed = strcmp(cmd, "domain.add") == 0 || strcmp(cmd, "domain.del") == 0 ||
		 strncmp(cmd, "route.", 6) == 0;
	if (!sock_given && (to_relay || strncmp(cmd, "queue.", 6) == 0 ||
			    strncmp(cmd, "route.", 6) == 0))
		sock = rsock;
	rargs = json_object();
	for (int i = optind + 1; i < argc; i++) {
		char *eq = strchr(argv[i], '=');

		/* "domain add NAME --route HOST[:PORT] --tls POLICY" */
		if (routed && (strcmp(argv[i], "--route") == 0 || strcmp(argv[i], "--tls") == 0)) {
			if (i + 1 >= argc || (argv[i][2] == 'r' && !route_arg(rargs, argv[i + 1]))) {
				fprintf(stderr, "mxedgectl: %s: expected %s\n", argv[i],
					argv[i][2] == 'r' ? "HOST[:PORT] (port 1..65535)" :
					"none, opportunistic or required");
				json_decref(args);
				json_decref(rargs);
				return 2;
			}
			if (argv[i][2] == 't')
				json_object_set_new(rargs, "tls", json_string(argv[i + 1]));
			i++;
			continue;
		}
		if (routed && eq == NULL && argv[i][0] != '-' && !json_object_get(args, "domain")) {
			json_object_set_new(args, "domain", json_string(argv[i]));
			continue;
		}
		if (eq == NULL || eq == argv[i]) {
			fprintf(stderr, "mxedgectl: '%s': arguments are KEY=VALUE\n", argv[i]);
			json_decref(args);
			json_decref(rargs);
			return 2;
		}
		*eq = '\0';
		json_object_set_new(args, argv[i], typed_value(eq + 1));
	}
	if (json_object_size(rargs) && strncmp(cmd, "route.", 6) == 0) {
		json_object_update(args, rargs);
		json_object_clear(rargs);
	}
	if (json_object_size(rargs)) {
		if (strcmp(cmd, "domain.add") != 0) {
			fprintf(stderr, "mxedgectl: --route and --tls go with 'domain add' or "
				"'route set'\n");
			status = 2;
		} else if (!json_object_get(rargs, "host")) {
			fprintf(stderr, "mxedgectl: --tls needs --route HOST[:PORT]\n");
			status = 2;
		} else {
			status = domain_add_routed(sock, rsock, args, rargs, as_json,
						   timeout_s * 1000);
		}
		json_decref(args);
		json_decref(rargs);
		return status;
	}
	json_decref(rargs);
	reply = ctl_call(sock, cmd, args, timeout_s * 1000);
	/* "domain del" also removes the route the relay has for the domain
	 * (none is fine); a domain the edge does not know changes nothing. */
	if (reply_ok(reply) && strcmp(cmd, "domain.del") == 0 && !sock_given) {
		json_t *rd = ctl_call(rsock, "route.del", args, timeout_s * 1000);
		const char *code = json_string_value(json_object_get(json_object_get(rd, "error"),
								     "code"));

		if (rd == NULL || (!reply_ok(rd) && (!code || strcmp(code, "not_found") != 0))) {
			if (rd)
				print_error("domain removed from the edge, but its route", rd);
			else
				fprintf(stderr, "mxedgectl: domain removed from the edge, but "
					"mxedge-control at %s did not answer: its route stays\n", rsock);
			json_object_set_new(reply, "ok", json_false());
			json_object_set_new(reply, "error", json_pack("{s:s, s:s}", "code", "partial",
					    "message", "domain removed from the edge only"));
		}
		json_decref(rd);
	}
	if (reply_ok(reply) && strcmp(cmd, "domain.list") == 0 && !sock_given)
		domain_list_routes(reply, rsock, timeout_s * 1000);
	json_decref(args);
	if (reply == NULL) {
		fprintf(stderr, "mxedgectl: cannot talk to mxedge at %s: %s\n", sock,
			errno == EPROTO ? "malformed or missing reply" : strerror(errno));
		return 2;
	}
	status = json_is_true(json_object_get(reply, "ok")) ? 0 : 1;
	if (as_json) {
		char *s = json_dumps(reply, JSON_INDENT(2));

		printf("%s\n", s ? s : "");
		free(s);
	} else if (status == 0) {
		print_human(json_object_get(reply, "result"));
	} else {
		err = json_object_get(reply, "error");
		fprintf(stderr, "mxedgectl: %s (%s)\n",
			json_string_value(json_object_get(err, "message")) ?: "failed",
			json_string_value(json_object_get(err, "code")) ?: "error");
	}
	json_decref(reply);
	return status;
}
