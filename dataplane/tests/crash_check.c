/*
 * crash_check - checks a spool directory against what a client was told.
 *
 *   crash_check SPOOL ACKS HOSTNAME
 *
 * ACKS has one line per "250 2.0.0 Ok: queued as QID" a client received:
 *   QID LEN SHA256
 * where LEN and SHA256 describe the message bytes the client sent (after
 * SMTP dot-unstuffing, i.e. what the edge must store). For every line the
 * spool must hold a committed message QID whose stored bytes are one
 * Received: header naming HOSTNAME and QID followed by exactly those LEN
 * bytes. Queue ids must be unique in the spool and among the acks.
 *
 * Prints one summary line
 *   acked=N committed=M incomplete=I torn_tail_bytes=T damaged_bytes=D corrupt_segments=C
 * and exits 0, or prints every problem and exits 1 (2 for usage or I/O
 * errors). Read-only: it never changes the spool.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "spool.h"

struct ack {
	uint64_t qid;
	uint64_t len;
	char sha[65];
	char txt[SPOOL_QID_LEN + 1];
	unsigned seen;     /* committed messages found with this id */
	unsigned line;
};

struct state {
	struct ack *acks;
	size_t nacks;
	const char *hostname;
	uint64_t committed;
	unsigned problems;
	uint64_t *qids;    /* every committed id, for the uniqueness check */
	size_t nqids, capqids;
};

static int cmp_ack(const void *a, const void *b)
{
	const struct ack *x = a, *y = b;

	return x->qid < y->qid ? -1 : x->qid > y->qid;
}

static int cmp_u64(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	return *x < *y ? -1 : *x > *y;
}

static void sha256_hex(const unsigned char *p, size_t n, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0, i;

	EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL);
	for (i = 0; i < mdlen && i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	out[64] = '\0';
}

__attribute__((format(printf, 2, 3)))
static void problem(struct state *st, const char *fmt, ...)
{
	va_list ap;

	st->problems++;
	if (st->problems > 20)
		return; /* the count at the end says how many */
	va_start(ap, fmt);
	fputs("crash_check: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
}

/* The stored prefix must be exactly one Received: header (RFC 5321
 * §4.4: the edge prepends its trace line and changes nothing else). */
static bool received_ok(const unsigned char *p, size_t n, const char *host,
			const char *qid)
{
	size_t i;

	if (n < 12 || memcmp(p, "Received: ", 10) != 0 ||
	    p[n - 2] != '\r' || p[n - 1] != '\n')
		return false;
	/* Continuation lines start with white space (RFC 5322 §2.2.3), so
	 * no CRLF inside may be followed by a non-blank. */
	for (i = 0; i + 2 < n; i++)
		if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] != ' ' &&
		    p[i + 2] != '\t')
			return false;
	return memmem(p, n, host, strlen(host)) != NULL &&
	       memmem(p, n, qid, strlen(qid)) != NULL;
}

static int scan_cb(const struct spool_message *m, void *arg)
{
	struct state *st = arg;
	struct ack key = { .qid = m->qid }, *a;
	char sha[65];

	st->committed++;
	if (st->nqids == st->capqids) {
		size_t cap = st->capqids ? st->capqids * 2 : 1024;
		uint64_t *q = realloc(st->qids, cap * sizeof(*q));

		if (q == NULL)
			return -ENOMEM;
		st->qids = q;
		st->capqids = cap;
	}
	st->qids[st->nqids++] = m->qid;
	a = bsearch(&key, st->acks, st->nacks, sizeof(*st->acks), cmp_ack);
	if (a == NULL)
		return 0; /* committed but never acknowledged: allowed */
	a->seen++;
	if (m->len < a->len) {
		problem(st, "%s: stored %" PRIu64 " bytes, client sent %" PRIu64,
			a->txt, m->len, a->len);
		return 0;
	}
	sha256_hex(m->data + (m->len - a->len), a->len, sha);
	if (strcmp(sha, a->sha) != 0)
		problem(st, "%s: stored bytes differ from what the client sent "
			"(%" PRIu64 " bytes)", a->txt, a->len);
	else if (!received_ok(m->data, m->len - a->len, st->hostname, a->txt))
		problem(st, "%s: the %" PRIu64 " bytes before the message are not "
			"one Received: header by %s for this id", a->txt,
			m->len - a->len, st->hostname);
	return 0;
}

static int load_acks(struct state *st, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256];
	size_t cap = 0;
	unsigned lineno = 0;

	if (f == NULL) {
		fprintf(stderr, "crash_check: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		struct ack a;
		char qid[32], sha[80];
		unsigned long long len;

		lineno++;
		memset(&a, 0, sizeof(a));
		if (sscanf(line, "%31s %llu %79s", qid, &len, sha) != 3 ||
		    spool_qid_parse(qid, &a.qid) < 0 || strlen(sha) != 64) {
			fprintf(stderr, "crash_check: %s:%u: expected 'QID LEN SHA256'\n",
				path, lineno);
			fclose(f);
			return -1;
		}
		a.len = len;
		a.line = lineno;
		memcpy(a.sha, sha, 65);
		spool_qid_format(a.qid, a.txt);
		if (st->nacks == cap) {
			struct ack *n;

			cap = cap ? cap * 2 : 1024;
			n = realloc(st->acks, cap * sizeof(*n));
			if (n == NULL) {
				fclose(f);
				return -1;
			}
			st->acks = n;
		}
		st->acks[st->nacks++] = a;
	}
	fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	struct state st;
	struct spool_recovery rep;
	size_t i;
	int rc, status = 2;

	if (argc != 4) {
		fprintf(stderr, "usage: crash_check SPOOL ACKS HOSTNAME\n");
		return 2;
	}
	memset(&st, 0, sizeof(st));
	st.hostname = argv[3];
	if (load_acks(&st, argv[2]) < 0)
		goto out;
	qsort(st.acks, st.nacks, sizeof(*st.acks), cmp_ack);
	for (i = 1; i < st.nacks; i++)
		if (st.acks[i].qid == st.acks[i - 1].qid)
			problem(&st, "%s: the client was given this queue id twice "
				"(lines %u and %u)", st.acks[i].txt,
				st.acks[i - 1].line, st.acks[i].line);
	rc = spool_scan(argv[1], scan_cb, &st, &rep);
	if (rc < 0) {
		fprintf(stderr, "crash_check: %s: %s\n", argv[1], strerror(-rc));
		goto out;
	}
	qsort(st.qids, st.nqids, sizeof(*st.qids), cmp_u64);
	for (i = 1; i < st.nqids; i++)
		if (st.qids[i] == st.qids[i - 1]) {
			char t[SPOOL_QID_LEN + 1];

			spool_qid_format(st.qids[i], t);
			problem(&st, "%s: two committed messages share this id", t);
		}
	for (i = 0; i < st.nacks; i++)
		if (st.acks[i].seen == 0)
			problem(&st, "%s: acknowledged with 250 but not committed "
				"in the spool", st.acks[i].txt);
	printf("acked=%zu committed=%" PRIu64 " incomplete=%" PRIu64
	       " torn_tail_bytes=%" PRIu64 " damaged_bytes=%" PRIu64
	       " corrupt_segments=%u problems=%u\n", st.nacks, st.committed,
	       rep.incomplete, rep.torn_bytes, rep.damaged_bytes,
	       rep.corrupt_segments, st.problems);
	status = st.problems ? 1 : 0;
out:
	free(st.acks);
	free(st.qids);
	return status;
}
