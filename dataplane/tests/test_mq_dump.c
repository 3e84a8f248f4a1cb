/*
 * test_mq_dump.c - test helper: writes every committed message of a spool
 * to OUTDIR/<queue id> in one scan (mxedge-spool cat rescans the spool per
 * message, too slow for a hundred checks on a loaded CI machine).
 *
 * usage: test_mq_dump SPOOL_DIR OUT_DIR   (exit 0, or 1 with a message)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "spool.h"

static int dump(const struct spool_message *m, void *arg)
{
	char path[4096], qid[SPOOL_QID_LEN + 1];
	FILE *f;

	spool_qid_format(m->qid, qid);
	snprintf(path, sizeof(path), "%s/%s", (const char *)arg, qid);
	f = fopen(path, "wb");
	if (f == NULL)
		return -errno;
	if (m->len && fwrite(m->data, 1, m->len, f) != m->len) {
		fclose(f);
		return -EIO;
	}
	return fclose(f) == 0 ? 0 : -EIO;
}

int main(int argc, char **argv)
{
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: test_mq_dump SPOOL_DIR OUT_DIR\n");
		return 1;
	}
	rc = spool_scan(argv[1], dump, argv[2], NULL);
	if (rc < 0) {
		fprintf(stderr, "test_mq_dump: %s: %s\n", argv[1], strerror(-rc));
		return 1;
	}
	return 0;
}
