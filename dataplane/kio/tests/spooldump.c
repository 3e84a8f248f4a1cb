/*
 * spooldump - print the envelope of one committed spool message as text,
 * for the kio tests (mxedge-spool list shows only part of it):
 *
 *   kio_spooldump DIR QID
 *   kio_spooldump --all DIR   every committed message as "QID LEN\n",
 *                             LEN message bytes, "\n" (one scan)
 *
 *   queue-id QID
 *   writer N
 *   client 198.18.0.2
 *   helo client.example
 *   mail-from <alice@example.org> BODY=8BITMIME SIZE=1000
 *   rcpt <bob@customer.test> notify=SUCCESS,FAILURE orcpt=rfc822;bob@x
 *   size 4331
 *
 * Control bytes and '\' in strings are printed as \xNN so one field is one
 * line. Exit 0, 1 when the message is not committed, 2 on bad arguments.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "spool.h"

static void field(const char *s)
{
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 32 || ch == 127 || ch == '\\')
			printf("\\x%02x", ch);
		else
			putchar(ch);
	}
}

struct arg {
	uint64_t qid;
	int found;
};

static int cb(const struct spool_message *m, void *p)
{
	struct arg *a = p;
	char q[SPOOL_QID_LEN + 1];
	unsigned i;

	if (m->qid != a->qid)
		return 0;
	spool_qid_format(m->qid, q);
	printf("queue-id %s\nwriter %u\nclient ", q, m->writer);
	field(m->env.client_addr);
	printf("\nhelo ");
	field(m->env.helo);
	printf("\nmail-from <");
	field(m->env.mail_from);
	printf(">");
	if (m->env.mail_params) {
		printf(" ");
		field(m->env.mail_params);
	}
	printf("\n");
	for (i = 0; i < m->env.nrcpt; i++) {
		printf("rcpt <");
		field(m->env.rcpts[i].addr);
		printf(">");
		if (m->env.rcpts[i].notify) {
			printf(" notify=");
			field(m->env.rcpts[i].notify);
		}
		if (m->env.rcpts[i].orcpt) {
			printf(" orcpt=");
			field(m->env.rcpts[i].orcpt);
		}
		printf("\n");
	}
	printf("size %" PRIu64 "\n", m->len);
	a->found = 1;
	return 1;
}

static int all_cb(const struct spool_message *m, void *p)
{
	char q[SPOOL_QID_LEN + 1];

	(void)p;
	spool_qid_format(m->qid, q);
	printf("%s %" PRIu64 "\n", q, m->len);
	if (fwrite(m->data, 1, m->len, stdout) != m->len)
		return -EIO;
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	struct arg a = { 0, 0 };
	int rc;

	if (argc == 3 && strcmp(argv[1], "--all") == 0) {
		rc = spool_scan(argv[2], all_cb, NULL, NULL);
		if (rc < 0)
			fprintf(stderr, "kio_spooldump: %s: %s\n", argv[2], strerror(-rc));
		return rc < 0 ? 1 : 0;
	}
	if (argc != 3 || spool_qid_parse(argv[2], &a.qid) < 0) {
		fprintf(stderr, "usage: kio_spooldump DIR QID\n");
		return 2;
	}
	rc = spool_scan(argv[1], cb, &a, NULL);
	if (rc < 0) {
		fprintf(stderr, "kio_spooldump: %s: %s\n", argv[1], strerror(-rc));
		return 1;
	}
	if (!a.found) {
		fprintf(stderr, "kio_spooldump: no committed message %s\n", argv[2]);
		return 1;
	}
	return 0;
}
