/*
 * mxedge-spool - inspect a spool directory (operators, tests).
 *
 *   mxedge-spool list DIR        one line per committed message
 *   mxedge-spool cat DIR QID     the message bytes, as stored
 *   mxedge-spool verify DIR      recovery report; exit 1 on damage
 *
 * Read-only: it never modifies the spool (recovery truncation is done by the
 * dataplane when it opens the spool).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "spool.h"

static int list_cb(const struct spool_message *m, void *arg)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0, i;
	char qid[SPOOL_QID_LEN + 1];

	(void)arg;
	spool_qid_format(m->qid, qid);
	EVP_Digest(m->data, m->len, md, &mdlen, EVP_sha256(), NULL);
	printf("%s w=%u size=%" PRIu64 " sha256=", qid, m->writer, m->len);
	for (i = 0; i < mdlen; i++)
		printf("%02x", md[i]);
	printf(" client=%s helo=%s from=<%s> nrcpt=%u",
	       m->env.client_addr ? m->env.client_addr : "-",
	       m->env.helo ? m->env.helo : "-", m->env.mail_from, m->env.nrcpt);
	for (i = 0; i < m->env.nrcpt; i++)
		printf(" to=<%s>", m->env.rcpts[i].addr);
	printf("\n");
	return 0;
}

struct cat_arg {
	uint64_t qid;
	int found;
};

static int cat_cb(const struct spool_message *m, void *arg)
{
	struct cat_arg *a = arg;

	if (m->qid != a->qid)
		return 0;
	if (fwrite(m->data, 1, m->len, stdout) != m->len)
		return -EIO;
	a->found = 1;
	return 1; /* stop scanning */
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mxedge-spool list DIR | cat DIR QID | verify DIR\n");
}

int main(int argc, char **argv)
{
	struct spool_recovery rep;
	int rc;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "list")) {
		rc = spool_scan(argv[2], list_cb, NULL, &rep);
	} else if (argc == 4 && !strcmp(argv[1], "cat")) {
		struct cat_arg a = { 0, 0 };

		if (spool_qid_parse(argv[3], &a.qid) < 0) {
			fprintf(stderr, "mxedge-spool: '%s' is not a queue id "
				"(11 characters of 0-9A-Za-z)\n", argv[3]);
			return 2;
		}
		rc = spool_scan(argv[2], cat_cb, &a, &rep);
		if (rc == 1)
			rc = 0;
		if (rc == 0 && !a.found) {
			fprintf(stderr, "mxedge-spool: no committed message %s in %s\n",
				argv[3], argv[2]);
			return 1;
		}
	} else if (argc == 3 && !strcmp(argv[1], "verify")) {
		rc = spool_scan(argv[2], NULL, NULL, &rep);
		if (rc == 0) {
			printf("segments=%u records=%" PRIu64 " messages=%" PRIu64
			       " incomplete=%" PRIu64 " torn_tail_bytes=%" PRIu64
			       " damaged_bytes=%" PRIu64 " corrupt_segments=%u\n",
			       rep.segments, rep.records, rep.messages, rep.incomplete,
			       rep.torn_bytes, rep.damaged_bytes, rep.corrupt_segments);
			return rep.corrupt_segments ? 1 : 0;
		}
	} else {
		usage(stderr);
		return 2;
	}
	if (rc < 0) {
		fprintf(stderr, "mxedge-spool: %s: %s\n", argv[2], strerror(-rc));
		return 1;
	}
	return 0;
}
