/*
 * crash_writer - test helper: appends messages to a spool as fast as it can
 * and prints "ACK <qid> <size> <sha256> <commit offset>" for each one only
 * once spool_durable() says so, i.e. exactly when a session would answer
 * 250. The crash test kills it with SIGKILL and checks every ACKed message.
 * usage: crash_writer DIR SEED
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "../spool.h"

#define INFLIGHT 16

struct inflight {
	uint64_t qid, off, len;
	char sha[2 * 32 + 1];
	int used;
};

int main(int argc, char **argv)
{
	struct spool_config cfg = { 0 };
	struct spool_recovery rep;
	struct inflight in[INFLIGHT];
	static unsigned char body[8000];
	struct spool *sp;
	struct spool_writer *w;
	unsigned seed;

	if (argc != 3)
		return 2;
	seed = (unsigned)atoi(argv[2]);
	cfg.dir = argv[1];
	cfg.writers = 1;
	cfg.segment_bytes = 256 * 1024;
	sp = spool_open(&cfg, &rep);
	if (sp == NULL) {
		perror("spool_open");
		return 1;
	}
	fprintf(stderr, "recovered messages=%" PRIu64 " torn=%" PRIu64 "\n",
		rep.messages, rep.torn_bytes);
	w = spool_writer(sp, 0);
	memset(in, 0, sizeof(in));
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		struct spool_rcpt r = { "to@customer.test", NULL, NULL };
		struct spool_envelope e = { 0, "198.18.0.2", NULL, "client.test",
					    NULL, "from@example.org", NULL, 1, &r };
		unsigned char md[32];
		struct spool_msg m;
		struct timespec ts;
		unsigned i, mdlen;
		size_t len;
		int slot = -1;

		for (i = 0; i < INFLIGHT; i++) {
			if (in[i].used && spool_durable(w, in[i].off)) {
				char q[SPOOL_QID_LEN + 1];

				spool_qid_format(in[i].qid, q);
				printf("ACK %s %" PRIu64 " %s %" PRIu64 "\n",
				       q, in[i].len, in[i].sha, in[i].off);
				in[i].used = 0;
			}
			if (!in[i].used)
				slot = (int)i;
		}
		if (slot < 0) {
			usleep(50);
			continue;
		}
		len = (size_t)(rand_r(&seed) % sizeof(body));
		for (size_t k = 0; k < len; k++)
			body[k] = (unsigned char)rand_r(&seed);
		clock_gettime(CLOCK_REALTIME, &ts);
		in[slot].qid = spool_qid_new(w, (uint64_t)ts.tv_sec * 1000 +
						(uint64_t)ts.tv_nsec / 1000000);
		if (spool_begin(w, &m, in[slot].qid, &e) ||
		    spool_data(w, &m, body, len) ||
		    spool_end(w, &m, &in[slot].off)) {
			/* ring full: this message is dropped unacknowledged,
			 * as a session would answer 451 */
			usleep(100);
			continue;
		}
		EVP_Digest(body, len, md, &mdlen, EVP_sha256(), NULL);
		for (i = 0; i < 32; i++)
			sprintf(in[slot].sha + 2 * i, "%02x", md[i]);
		in[slot].len = len;
		in[slot].used = 1;
	}
}
