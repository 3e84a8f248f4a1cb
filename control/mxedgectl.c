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

#include "ctl.h"

#define DEFAULT_SOCKET "/run/mxedge/control.sock"
#define DEFAULT_RELAY_SOCKET "/run/mxedge/relay.sock"

static void usage(FILE *f)
{
	fprintf(f,
"usage: mxedgectl [--socket PATH] [--json] [--timeout SEC] COMMAND [KEY=VALUE ...]\n"
"       mxedgectl [--socket PATH] COMMAND --args '{\"key\": ...}'\n"
"       mxedgectl [--relay] log level [error|warning|info|debug]\n"
"\n"
"  --socket PATH   control socket (default $MXEDGE_CONTROL or " DEFAULT_SOCKET ")\n"
"  --relay-socket PATH  mxedge-control's socket, for queue.* commands (default\n"
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
	json_t *args = json_object(), *reply, *err;
	bool as_json = false, sock_given = false, to_relay = false;
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
	if (!sock_given && (to_relay || strncmp(cmd, "queue.", 6) == 0))
		sock = rsock;
	for (int i = optind + 1; i < argc; i++) {
		char *eq = strchr(argv[i], '=');

		if (eq == NULL || eq == argv[i]) {
			fprintf(stderr, "mxedgectl: '%s': arguments are KEY=VALUE\n", argv[i]);
			json_decref(args);
			return 2;
		}
		*eq = '\0';
		json_object_set_new(args, argv[i], typed_value(eq + 1));
	}
	reply = ctl_call(sock, cmd, args, timeout_s * 1000);
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
