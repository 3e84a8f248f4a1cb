/*
 * mxedge-kio: the SMTP engine served on kernel sockets (kio), storing
 * accepted messages durably as files.  Used by the integration tests and as
 * the kernel-socket baseline for benchmarks.
 *
 *   mxedge-kio --listen 198.18.0.1:25 [--listen [2001:db8::1]:25]
 *              --spool DIR [--threads N] [--hostname NAME]
 *              [--max-size BYTES] [--max-rcpts N] [--bare-lf reject|normalise]
 *              [--no-chunking] [--timeout SECONDS] [--max-conns N]
 *              [--greet-delay MS] [--quiet]
 *
 * Prints "mxedge-kio: ready" on stdout once every socket is bound; SIGTERM
 * or SIGINT stops it cleanly.
 */
#include <errno.h>
#include <stdint.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kio.h"

static struct kio *g_kio;

static void on_signal(int sig)
{
	if (g_kio)
		kio_stop(g_kio);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mxedge-kio --listen ADDR:PORT [--listen ...] --spool DIR\n"
		"                  [--threads N] [--hostname NAME] [--max-size BYTES]\n"
		"                  [--max-rcpts N] [--bare-lf reject|normalise]\n"
		"                  [--no-chunking] [--timeout SECONDS] [--max-conns N]\n"
		"                  [--greet-delay MS] [--quiet]\n");
}

static int parse_uint(const char *s, unsigned long long max,
		      unsigned long long *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end != '\0' || end == s || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "spool", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "hostname", required_argument, NULL, 'H' },
		{ "max-size", required_argument, NULL, 'm' },
		{ "max-rcpts", required_argument, NULL, 'r' },
		{ "bare-lf", required_argument, NULL, 'b' },
		{ "no-chunking", no_argument, NULL, 'C' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "max-conns", required_argument, NULL, 'c' },
		{ "greet-delay", required_argument, NULL, 'g' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct kio_config cfg = { 0 };
	char host[256];
	struct sigaction sa;
	unsigned long long v;
	int c, rc;

	if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	cfg.smtp.hostname = host;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (cfg.nlisten >= KIO_MAX_LISTEN) {
				fprintf(stderr, "mxedge-kio: at most %d --listen\n", KIO_MAX_LISTEN);
				return 2;
			}
			cfg.listen[cfg.nlisten++] = optarg;
			break;
		case 's':
			cfg.spool_dir = optarg;
			break;
		case 't':
			if (parse_uint(optarg, 256, &v) < 0) {
				fprintf(stderr, "mxedge-kio: bad --threads %s\n", optarg);
				return 2;
			}
			cfg.threads = (unsigned)v;
			break;
		case 'H':
			cfg.smtp.hostname = optarg;
			break;
		case 'm':
			if (parse_uint(optarg, 1ull << 40, &v) < 0 || v == 0) {
				fprintf(stderr, "mxedge-kio: bad --max-size %s\n", optarg);
				return 2;
			}
			cfg.smtp.max_message_size = v;
			break;
		case 'r':
			if (parse_uint(optarg, 65535, &v) < 0 || v == 0) {
				fprintf(stderr, "mxedge-kio: bad --max-rcpts %s\n", optarg);
				return 2;
			}
			cfg.smtp.max_rcpts = (unsigned)v;
			break;
		case 'b':
			if (strcmp(optarg, "reject") == 0)
				cfg.smtp.bare_policy = SMTP_BARE_REJECT;
			else if (strcmp(optarg, "normalise") == 0 ||
				 strcmp(optarg, "normalize") == 0)
				cfg.smtp.bare_policy = SMTP_BARE_NORMALISE;
			else {
				fprintf(stderr, "mxedge-kio: --bare-lf takes reject or normalise\n");
				return 2;
			}
			break;
		case 'C':
			cfg.smtp.no_chunking = true;
			break;
		case 'T':
			/* both the command and the data timeout (default 300/180 s,
			 * RFC 5321 §4.5.3.2) */
			if (parse_uint(optarg, 86400, &v) < 0 || v == 0) {
				fprintf(stderr, "mxedge-kio: bad --timeout %s\n", optarg);
				return 2;
			}
			cfg.smtp.cmd_timeout_ms = (uint32_t)(v * 1000);
			cfg.smtp.data_timeout_ms = (uint32_t)(v * 1000);
			break;
		case 'g':
			if (parse_uint(optarg, 60000, &v) < 0) {
				fprintf(stderr, "mxedge-kio: bad --greet-delay %s\n", optarg);
				return 2;
			}
			cfg.greet_delay_ms = (unsigned)v;
			break;
		case 'c':
			if (parse_uint(optarg, 1000000, &v) < 0 || v == 0) {
				fprintf(stderr, "mxedge-kio: bad --max-conns %s\n", optarg);
				return 2;
			}
			cfg.max_conns = (unsigned)v;
			break;
		case 'q':
			cfg.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || cfg.nlisten == 0 || cfg.spool_dir == NULL) {
		usage(stderr);
		return 2;
	}
	g_kio = kio_create(&cfg);
	if (g_kio == NULL)
		return 1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	printf("mxedge-kio: ready\n");
	fflush(stdout);
	rc = kio_run(g_kio);
	kio_destroy(g_kio);
	g_kio = NULL;
	if (rc < 0) {
		fprintf(stderr, "mxedge-kio: %s\n", strerror(-rc));
		return 1;
	}
	return 0;
}
