/*
 * elog.c - reception log rings and the logger thread. See elog.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "elog.h"

#define ELOG_DEFAULT_SLOTS 4096u
/* The logger sleeps this long when every ring is empty: lines appear
 * within it, and an idle edge costs no CPU. */
#define IDLE_SLEEP_NS (20 * 1000000L)

/* Producer and consumer indexes on their own cache lines: the worker
 * writes head, the logger writes tail. */
struct elog_ring {
	_Alignas(64) uint64_t head;
	uint64_t dropped;
	_Alignas(64) uint64_t tail;
	uint64_t mask;
	struct elog_rec *slots;
};

struct elog {
	char *path;                 /* NULL: stderr */
	char hostname[256];
	unsigned pid;
	FILE *f;
	unsigned nrings;
	struct elog_ring *rings;
	pthread_t tid;
	bool started;
	volatile int stop;
	volatile int reopen;
};

static const char *const stage_name[ELOG_ST__COUNT] = {
	[ELOG_ST_CONNECT] = "CONNECT", [ELOG_ST_HELO] = "HELO",
	[ELOG_ST_EHLO] = "EHLO", [ELOG_ST_MAIL] = "MAIL",
	[ELOG_ST_RCPT] = "RCPT", [ELOG_ST_DATA] = "DATA",
	[ELOG_ST_BDAT] = "BDAT", [ELOG_ST_EOM] = "END-OF-MESSAGE",
};

static const char *const cmd_name[ELOG_CMD__COUNT] = {
	"helo", "ehlo", "mail", "rcpt", "data", "bdat", "quit",
};

struct elog_rec *elog_claim(struct elog_ring *r)
{
	uint64_t h = r->head;
	uint64_t t = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);

	if (h - t > r->mask) {
		__atomic_store_n(&r->dropped, r->dropped + 1, __ATOMIC_RELAXED);
		return NULL;
	}
	return &r->slots[h & r->mask];
}

void elog_publish(struct elog_ring *r)
{
	__atomic_store_n(&r->head, r->head + 1, __ATOMIC_RELEASE);
}

uint64_t elog_ring_dropped(const struct elog_ring *r)
{
	return __atomic_load_n(&r->dropped, __ATOMIC_RELAXED);
}

struct elog_ring *elog_ring(struct elog *l, unsigned idx)
{
	return l && idx < l->nrings ? &l->rings[idx] : NULL;
}

/* Appends to out[*n] what fits (snprintf semantics, never past cap - 1). */
__attribute__((format(printf, 4, 5)))
static void put(char *out, int cap, int *n, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (*n >= cap - 1)
		return;
	va_start(ap, fmt);
	k = vsnprintf(out + *n, (size_t)(cap - *n), fmt, ap);
	va_end(ap);
	if (k < 0)
		return;
	*n = *n + k < cap - 1 ? *n + k : cap - 1;
}

/* The reply of a RCPT reject with the recipient after the status codes,
 * as Postfix writes it ("550 5.1.2 <to>: text"), which pflogsumm groups by. */
static void put_reply(const struct elog_rec *r, char *out, int cap, int *n)
{
	const char *sp1 = strchr(r->text, ' ');
	const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;

	if (r->stage == ELOG_ST_RCPT && sp2 && sp2[1] != '<')
		put(out, cap, n, "%.*s <%s>:%s", (int)(sp2 - r->text), r->text,
		    r->to, sp2);
	else
		put(out, cap, n, "%s", r->text);
}

int elog_format(const struct elog_rec *r, const char *hostname, unsigned pid,
		char *out, int cap)
{
	const char *prog = r->kind == ELOG_MSGID ? "cleanup" : "smtpd";
	const char *stage = r->stage < ELOG_ST__COUNT ? stage_name[r->stage] : "?";
	char ts[32], z[8];
	struct tm tm;
	time_t sec = (time_t)(r->wall_us / 1000000u);
	unsigned ok = 0, all = 0, i;
	int n = 0;

	if (cap <= 0)
		return 0;
	out[0] = '\0';
	localtime_r(&sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	strftime(z, sizeof(z), "%z", &tm);
	put(out, cap, &n, "%s.%06u%.3s:%s %s mxedge/%s[%u]: ", ts,
	    (unsigned)(r->wall_us % 1000000u), z, z + 3, hostname, prog, pid);
	switch (r->kind) {
	case ELOG_CONNECT:
		put(out, cap, &n, "connect from unknown[%s]", r->addr);
		break;
	case ELOG_DISCONNECT:
		put(out, cap, &n, "disconnect from unknown[%s]", r->addr);
		/* Postfix: "rcpt=1/2" when some failed, "rcpt=1" else. */
		for (i = 0; i < ELOG_CMD__COUNT; i++) {
			if (r->cmd_all[i] == 0)
				continue;
			ok += r->cmd_ok[i];
			all += r->cmd_all[i];
			if (r->cmd_ok[i] == r->cmd_all[i])
				put(out, cap, &n, " %s=%u", cmd_name[i], r->cmd_all[i]);
			else
				put(out, cap, &n, " %s=%u/%u", cmd_name[i], r->cmd_ok[i],
				    r->cmd_all[i]);
		}
		if (ok == all)
			put(out, cap, &n, " commands=%u", all);
		else
			put(out, cap, &n, " commands=%u/%u", ok, all);
		break;
	case ELOG_CLIENT:
		put(out, cap, &n, "%s: client=unknown[%s]", r->qid, r->addr);
		break;
	case ELOG_MSGID:
		put(out, cap, &n, "%s: message-id=%s", r->qid,
		    r->text[0] ? r->text : "<>");
		break;
	case ELOG_REJECT:
		put(out, cap, &n, "%s: reject: %s from unknown[%s]: ",
		    r->qid[0] ? r->qid : "NOQUEUE", stage, r->addr);
		put_reply(r, out, cap, &n);
		if (r->stage == ELOG_ST_CONNECT) {
			put(out, cap, &n, "; proto=SMTP");
			break;
		}
		put(out, cap, &n, ";");
		if (r->stage >= ELOG_ST_MAIL)
			put(out, cap, &n, " from=<%s>", r->from);
		if (r->stage >= ELOG_ST_RCPT && r->to[0])
			put(out, cap, &n, " to=<%s>", r->to);
		put(out, cap, &n, " proto=%s", r->esmtp ? "ESMTP" : "SMTP");
		if (r->helo[0])
			put(out, cap, &n, " helo=<%s>", r->helo);
		break;
	case ELOG_LOST:
		put(out, cap, &n, "lost connection after %s from unknown[%s]", stage,
		    r->addr);
		break;
	case ELOG_TIMEOUT:
		put(out, cap, &n, "timeout after %s from unknown[%s]", stage, r->addr);
		break;
	default:
		put(out, cap, &n, "unknown record %u", r->kind);
		break;
	}
	return n;
}

static FILE *open_log(const char *path)
{
	FILE *f = fopen(path, "ae");

	if (f)
		setvbuf(f, NULL, _IOFBF, 64 * 1024);
	return f;
}

/* Writes everything published so far; returns the records written. */
static unsigned drain(struct elog *l)
{
	char line[1024];
	unsigned i, done = 0;

	for (i = 0; i < l->nrings; i++) {
		struct elog_ring *r = &l->rings[i];
		uint64_t t = r->tail;
		uint64_t h = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);

		for (; t != h; t++, done++) {
			int n = elog_format(&r->slots[t & r->mask], l->hostname,
					    l->pid, line, (int)sizeof(line) - 1);

			line[n++] = '\n';
			fwrite(line, 1, (size_t)n, l->f);
			/* Free the slot only after reading it. */
			__atomic_store_n(&r->tail, t + 1, __ATOMIC_RELEASE);
		}
	}
	if (done)
		fflush(l->f);
	return done;
}

static void *logger_main(void *arg)
{
	struct elog *l = arg;
	struct timespec idle = { 0, IDLE_SLEEP_NS };

	for (;;) {
		bool stopping = __atomic_load_n(&l->stop, __ATOMIC_ACQUIRE);

		if (__atomic_exchange_n(&l->reopen, 0, __ATOMIC_ACQ_REL) && l->path) {
			FILE *nf = open_log(l->path);

			/* Keep writing to the old file rather than lose lines
			 * when the new one cannot be opened. */
			if (nf) {
				fclose(l->f);
				l->f = nf;
			} else {
				fprintf(stderr, "mxedge: reopen %s: %s\n", l->path,
					strerror(errno));
			}
		}
		if (drain(l) == 0) {
			if (stopping)
				break;
			nanosleep(&idle, NULL);
		}
	}
	return NULL;
}

struct elog *elog_open(const struct elog_config *c)
{
	unsigned slots = c->slots ? c->slots : ELOG_DEFAULT_SLOTS, i;
	struct elog *l;
	size_t off;
	int e = ENOMEM;

	if (c->rings == 0 || c->rings > 1024 || (slots & (slots - 1)) != 0) {
		errno = EINVAL;
		return NULL;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	snprintf(l->hostname, sizeof(l->hostname), "%s",
		 c->hostname && c->hostname[0] ? c->hostname : "localhost");
	l->pid = (unsigned)getpid();
	l->nrings = c->rings;
	l->rings = aligned_alloc(64, sizeof(*l->rings) * c->rings);
	if (l->rings == NULL)
		goto fail;
	memset(l->rings, 0, sizeof(*l->rings) * c->rings);
	for (i = 0; i < c->rings; i++) {
		l->rings[i].mask = slots - 1;
		l->rings[i].slots = calloc(slots, sizeof(struct elog_rec));
		if (l->rings[i].slots == NULL)
			goto fail;
		/* Touch every page now: no page fault on a worker's path,
		 * and the process's memory does not creep up as the ring
		 * fills for the first time. */
		for (off = 0; off < slots * sizeof(struct elog_rec); off += 4096)
			((volatile char *)l->rings[i].slots)[off] = 0;
	}
	if (c->path && c->path[0]) {
		l->path = strdup(c->path);
		if (l->path == NULL)
			goto fail;
		l->f = open_log(l->path);
		if (l->f == NULL) {
			e = errno;
			goto fail;
		}
	} else {
		l->f = stderr;
	}
	return l;
fail:
	elog_close(l);
	errno = e;
	return NULL;
}

int elog_start(struct elog *l)
{
	int e = pthread_create(&l->tid, NULL, logger_main, l);

	if (e)
		return -e;
	l->started = true;
	return 0;
}

void elog_reopen(struct elog *l)
{
	if (l)
		__atomic_store_n(&l->reopen, 1, __ATOMIC_RELEASE);
}

void elog_close(struct elog *l)
{
	unsigned i;

	if (l == NULL)
		return;
	if (l->started) {
		__atomic_store_n(&l->stop, 1, __ATOMIC_RELEASE);
		pthread_join(l->tid, NULL);
	} else if (l->f && l->rings) {
		drain(l);
	}
	if (l->f && l->f != stderr)
		fclose(l->f);
	else if (l->f)
		fflush(l->f);
	for (i = 0; l->rings && i < l->nrings; i++)
		free(l->rings[i].slots);
	free(l->rings);
	free(l->path);
	free(l);
}
