/*
 * spool_inject - test helper: writes messages into a spool with the
 * spool writer API, as the dataplane does, and waits until they are
 * durable (what the dataplane waits for before it answers 250).
 *
 *   spool_inject DIR COUNT FILE FROM PARAMS RCPT[,RCPT...] [RCPT0[,RCPT...]]
 *
 * FILE is the message (CRLF lines); every "@@N@@" in it becomes the
 * message's number (0..COUNT-1), so each message is distinct. PARAMS are
 * the MAIL FROM parameters ("" for none). RCPT0, when given, are message
 * 0's recipients instead (one odd message among many in one segment).
 * Prints one line per message:
 * "N QUEUEID".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "spool.h"

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long n;

	if (f == NULL || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) < 0 || (b = malloc((size_t)n + 1)) == NULL ||
	    fread(b, 1, (size_t)n, f) != (size_t)n) {
		if (f)
			fclose(f);
		free(b);
		return NULL;
	}
	fclose(f);
	b[n] = '\0';
	*len = (size_t)n;
	return b;
}

/* @tmpl with every "@@N@@" replaced by @i; caller frees. */
/* Splits the comma-separated @s (modified) into @out; returns the count. */
static unsigned split_rcpts(char *s, struct spool_rcpt *out, unsigned max)
{
	char *tok, *save = NULL;
	unsigned n = 0;

	for (tok = strtok_r(s, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save))
		out[n++] = (struct spool_rcpt){ tok, NULL, NULL };
	return n;
}

static char *instantiate(const char *tmpl, size_t len, unsigned i, size_t *outlen)
{
	char num[16], *out = malloc(len * 2 + 64), *o = out;
	const char *p = tmpl, *end = tmpl + len;
	int nl = snprintf(num, sizeof(num), "%u", i);

	if (out == NULL)
		return NULL;
	while (p < end) {
		if (end - p >= 5 && memcmp(p, "@@N@@", 5) == 0) {
			memcpy(o, num, (size_t)nl);
			o += nl;
			p += 5;
		} else {
			*o++ = *p++;
		}
	}
	*outlen = (size_t)(o - out);
	return out;
}

int main(int argc, char **argv)
{
	struct spool_config cfg = { 0 };
	struct spool_rcpt rcpts[64], rcpts0[64];
	struct spool_envelope env;
	struct spool_writer *w;
	struct spool *sp;
	unsigned count, nrcpt = 0, nrcpt0 = 0, i;
	char *tmpl, *list, *list0 = NULL;
	uint64_t last = 0;
	size_t tlen;

	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: spool_inject DIR COUNT FILE FROM PARAMS RCPT[,RCPT...] "
			"[RCPT0[,RCPT...]]\n");
		return 2;
	}
	count = (unsigned)strtoul(argv[2], NULL, 10);
	tmpl = slurp(argv[3], &tlen);
	if (tmpl == NULL) {
		fprintf(stderr, "spool_inject: %s: %s\n", argv[3], strerror(errno));
		return 1;
	}
	list = strdup(argv[6]);
	nrcpt = list ? split_rcpts(list, rcpts, 64) : 0;
	if (argc == 8) {
		list0 = strdup(argv[7]);
		nrcpt0 = list0 ? split_rcpts(list0, rcpts0, 64) : 0;
	}
	cfg.dir = argv[1];
	cfg.writers = 1;
	sp = spool_open(&cfg, NULL);
	if (sp == NULL) {
		fprintf(stderr, "spool_inject: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	w = spool_writer(sp, 0);
	memset(&env, 0, sizeof(env));
	env.client_addr = "198.18.7.23";
	env.client_name = "mail.example.org";
	env.helo = "mail.example.org";
	env.mail_from = argv[4];
	env.mail_params = argv[5];
	env.nrcpt = nrcpt;
	env.rcpts = rcpts;
	for (i = 0; i < count; i++) {
		struct spool_msg m;
		size_t blen = 0;
		char *body = instantiate(tmpl, tlen, i, &blen), id[SPOOL_QID_LEN + 1];
		uint64_t qid = spool_qid_new(w, now_us() / 1000);
		int rc;

		if (body == NULL) {
			fprintf(stderr, "spool_inject: out of memory\n");
			return 1;
		}
		env.arrival_us = now_us();
		env.nrcpt = i == 0 && nrcpt0 ? nrcpt0 : nrcpt;
		env.rcpts = i == 0 && nrcpt0 ? rcpts0 : rcpts;
		/* -EAGAIN: the ring is full until the sync thread catches up. */
		while ((rc = spool_begin(w, &m, qid, &env)) == -EAGAIN)
			usleep(1000);
		if (rc == 0)
			while ((rc = spool_data(w, &m, body, blen)) == -EAGAIN)
				usleep(1000);
		if (rc == 0)
			while ((rc = spool_end(w, &m, &last)) == -EAGAIN)
				usleep(1000);
		free(body);
		if (rc) {
			fprintf(stderr, "spool_inject: message %u: %s\n", i, strerror(-rc));
			return 1;
		}
		spool_qid_format(qid, id);
		printf("%u %s\n", i, id);
	}
	for (i = 0; i < 10000 && !spool_durable(w, last); i++)
		usleep(1000);
	if (!spool_durable(w, last)) {
		fprintf(stderr, "spool_inject: not durable after 10 s\n");
		return 1;
	}
	spool_close(sp);
	free(list);
	free(list0);
	free(tmpl);
	return 0;
}
