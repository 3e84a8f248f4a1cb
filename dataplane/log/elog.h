/*
 * elog.h - the edge's reception log: Postfix-format mail-log lines
 * ("connect from", "client=", "message-id=", "NOQUEUE: reject: ...",
 * "disconnect from ...") that pflogsumm and other Postfix tools read
 * (PRODUCT.md, Logs), written without slowing the workers.
 *
 * A worker (DPDK lcore or kernel-I/O thread) fills a fixed-size record in
 * its own single-producer/single-consumer ring: a few copies, no syscall,
 * no lock, no allocation. One logger thread drains every ring, formats the
 * lines and writes them with buffered stdio. When a ring is full the record
 * is dropped and counted (elog_ring_dropped), never waited for: the mail
 * path matters more than its log.
 *
 * Line layout, the same as mxedge-control's log (control/relay.c):
 * "2026-11-29T10:06:12.123456+00:00 HOST mxedge/smtpd[PID]: TEXT". The
 * offset has a colon (RFC 3339 §5.6): pflogsumm's RFC 3339 pattern needs it.
 * The client is "unknown[ADDR]": the edge does no reverse DNS.
 */
#ifndef MXEDGE_ELOG_H
#define MXEDGE_ELOG_H

#include <stdbool.h>
#include <stdint.h>

/* What a record says. */
enum elog_kind {
	ELOG_CONNECT = 1, /* smtpd: connect from unknown[ADDR] */
	ELOG_DISCONNECT,  /* smtpd: disconnect from unknown[ADDR] ehlo=1 ... */
	ELOG_CLIENT,      /* smtpd: QID: client=unknown[ADDR] */
	ELOG_MSGID,       /* cleanup: QID: message-id=<...> */
	ELOG_REJECT,      /* smtpd: NOQUEUE|QID: reject: STAGE from ...: REPLY; ... */
	ELOG_LOST,        /* smtpd: lost connection after STAGE from ... */
	ELOG_TIMEOUT,     /* smtpd: timeout after STAGE from ... */
};

/* The SMTP stage a line names (Postfix's words). */
enum elog_stage {
	ELOG_ST_CONNECT = 0, ELOG_ST_HELO, ELOG_ST_EHLO, ELOG_ST_MAIL,
	ELOG_ST_RCPT, ELOG_ST_DATA, ELOG_ST_BDAT, ELOG_ST_EOM, ELOG_ST__COUNT
};

/* Commands counted on the disconnect line, in Postfix's order. */
enum elog_cmd {
	ELOG_CMD_HELO = 0, ELOG_CMD_EHLO, ELOG_CMD_MAIL, ELOG_CMD_RCPT,
	ELOG_CMD_DATA, ELOG_CMD_BDAT, ELOG_CMD_QUIT, ELOG_CMD__COUNT
};

/* One log record. Strings are NUL-terminated and cut to their field. */
struct elog_rec {
	uint64_t wall_us;        /* when, µs since the epoch */
	uint8_t kind;            /* enum elog_kind */
	uint8_t stage;           /* enum elog_stage (REJECT, LOST, TIMEOUT) */
	bool esmtp;              /* proto=ESMTP (else SMTP) */
	uint16_t cmd_ok[ELOG_CMD__COUNT];  /* DISCONNECT: accepted ... */
	uint16_t cmd_all[ELOG_CMD__COUNT]; /* ... of issued */
	char qid[12];            /* "" = NOQUEUE */
	char addr[46];           /* client address, text */
	char helo[64];
	char from[128];
	char to[128];
	char text[160];          /* REJECT: the reply; MSGID: the header value */
};

struct elog;
struct elog_ring;

struct elog_config {
	const char *path;        /* log file (appended), NULL or "" = stderr */
	const char *hostname;    /* the HOST field */
	unsigned rings;          /* one per worker, 1..1024 */
	unsigned slots;          /* records per ring, a power of two (0: 4096) */
};

/*
 * elog_open - open the log file and allocate @c->rings rings. Returns the
 * logger (not yet running) or NULL with errno set (the file's open error,
 * EINVAL for a bad config, ENOMEM). Free with elog_close().
 */
struct elog *elog_open(const struct elog_config *c);

/* elog_ring - ring @idx of @l, for exactly one producer thread; NULL when
 * @l is NULL or @idx is not below its ring count. */
struct elog_ring *elog_ring(struct elog *l, unsigned idx);

/* elog_start - start the logger thread. Returns 0 or -errno. */
int elog_start(struct elog *l);

/*
 * elog_reopen - ask the logger thread to reopen the file (logrotate moved
 * it). Async-signal-safe: call it from a SIGHUP handler. No-op on stderr.
 */
void elog_reopen(struct elog *l);

/*
 * elog_close - stop the logger thread after it wrote every record already
 * published, close the file and free @l. Producers must have stopped.
 * NULL is a no-op.
 */
void elog_close(struct elog *l);

/*
 * elog_claim - the next free record of @r for the ring's producer, or NULL
 * when the ring is full (the drop is counted). Fill it, then elog_publish.
 * Lock-free, no syscall.
 */
struct elog_rec *elog_claim(struct elog_ring *r);

/* elog_publish - hand the record from elog_claim() to the logger. */
void elog_publish(struct elog_ring *r);

/* elog_ring_dropped - records @r dropped because it was full. Any thread. */
uint64_t elog_ring_dropped(const struct elog_ring *r);

/*
 * elog_format - the line for @rec (without newline) into @out of @cap
 * bytes, with @hostname and @pid in the prefix. Returns the length (cut
 * to cap - 1). For the logger thread and tests.
 */
int elog_format(const struct elog_rec *rec, const char *hostname, unsigned pid,
		char *out, int cap);

#endif /* MXEDGE_ELOG_H */
