/*
 * smtp — SMTP server protocol engine (RFC 5321 + ESMTP extensions), no I/O.
 *
 * Bytes in, bytes out, events up:
 *   - the caller feeds received bytes with smtp_input(); the engine consumes
 *     what it can and returns the count consumed.  Bytes it did not consume
 *     (because it is waiting for an asynchronous answer, for STARTTLS, or is
 *     closing) stay owned by the caller, who presents them again later;
 *   - replies leave through ops.write (the caller appends them to its send
 *     buffer and flushes when smtp_input() returns: RFC 2920 §3.1 pipelining);
 *   - events (HELO, MAIL, RCPT, DATA, body chunks, end of message, ...) go up
 *     through ops.event.  The caller answers SMTP_ACCEPT, SMTP_REJECT (with a
 *     reply line of its own) or SMTP_PENDING, and later calls smtp_complete().
 *     While an answer is pending the engine consumes no further input, so
 *     pipelined commands are processed and answered strictly in order.
 *
 * Threading: a struct smtp_server and all its sessions belong to one thread
 * (one lcore or one kio worker).  No locks, no syscalls, no allocation after
 * smtp_server_create(): usable from a DPDK run-to-completion loop.
 *
 * Memory: a session is smtp_session_size() bytes (<= 512, checked at build
 * time).  A command line that arrives split across reads is kept in a line
 * buffer borrowed from the server's preallocated pool only while the partial
 * line is pending; idle sessions hold none.  DATA/BDAT bodies are never
 * buffered: body chunks point into the caller's input.
 *
 * Time: every entry point takes the caller's monotonic clock in ms; the
 * Received: header's date comes from ops.unix_time.
 */
#ifndef MXEDGE_SMTP_H
#define MXEDGE_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct smtp_server;
struct smtp_session;

/* Answers to events (returned by ops.event, passed to smtp_complete()). */
enum smtp_verdict {
	SMTP_ACCEPT = 0,   /* go on; the engine sends its default reply */
	SMTP_REJECT = 1,   /* refuse; ev->reply (or the default refusal) is sent */
	SMTP_PENDING = 2,  /* answer comes later through smtp_complete() */
};

/* What a bare CR or LF (not part of CRLF) does, in commands and in DATA. */
enum smtp_bare_policy {
	SMTP_BARE_REJECT = 0,    /* 500 for the command / 550 for the message */
	SMTP_BARE_NORMALISE = 1, /* treated as CRLF, never as end of data */
};

enum smtp_event_type {
	SMTP_EV_CONNECT = 1, /* before the greeting: connection policy check */
	SMTP_EV_EARLY_TALKER,/* input arrived before the greeting (reported once) */
	SMTP_EV_HELO,        /* HELO/EHLO accepted syntactically: name, esmtp */
	SMTP_EV_MAIL,        /* MAIL FROM: reverse path + parameters; set queue_id */
	SMTP_EV_RCPT,        /* RCPT TO: forward path + DSN parameters */
	SMTP_EV_DATA,        /* message content is about to start (DATA or 1st BDAT) */
	SMTP_EV_BODY,        /* a chunk of message bytes (Received: header first) */
	SMTP_EV_EOM,         /* end of message: commit durably, then answer */
	SMTP_EV_ABORT,       /* the open transaction is gone (RSET, error, close);
			      * also raised by smtp_session_fini() while an EOM
			      * answer is pending: no 250 went out, so dropping
			      * the message is safe; keeping it (already durable)
			      * only risks a duplicate when the client retries */
	SMTP_EV_STARTTLS,    /* 220 sent: flush, discard unconsumed input, do TLS */
};

/* MAIL BODY= (RFC 6152). */
enum smtp_body_type { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
/* MAIL RET= (RFC 3461 §4.3). */
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };
/* RCPT NOTIFY= bits (RFC 3461 §4.1); 0 = not given. */
#define SMTP_NOTIFY_NEVER   0x1u
#define SMTP_NOTIFY_SUCCESS 0x2u
#define SMTP_NOTIFY_FAILURE 0x4u
#define SMTP_NOTIFY_DELAY   0x8u

/*
 * One event.  Strings are NOT NUL-terminated (pointer + length) and point
 * into the caller's input or a line buffer: valid only during the callback.
 */
struct smtp_event {
	enum smtp_event_type type;

	/* HELO: name (domain or address literal). MAIL/RCPT: mailbox without
	 * angle brackets and source route; len 0 for the null path "<>". */
	const char *addr;
	size_t addr_len;
	bool esmtp;             /* HELO: true for EHLO */

	/* MAIL parameters (RFC 1870, 6152, 6531, 3461). */
	uint64_t size;          /* MAIL SIZE= (0 = not given); EOM: body bytes */
	enum smtp_body_type body;
	bool smtputf8;
	enum smtp_ret ret;
	const char *envid;      /* xtext as received */
	size_t envid_len;

	/* RCPT DSN parameters (RFC 3461 §4). */
	unsigned notify;
	const char *orcpt;      /* "addr-type;xtext" as received */
	size_t orcpt_len;

	/* BODY: message bytes as stored (dot-unstuffed; Received: first). */
	const uint8_t *data;
	size_t len;

	/* EOM: the message arrived through BDAT (else DATA). */
	bool bdat;

	/* ---- answer fields, set by the caller ---- */
	/* A whole reply line without CRLF ("550 5.1.1 No such user"), used
	 * with SMTP_REJECT (or to replace the default reply of SMTP_ACCEPT).
	 * Caller-owned; must stay valid until the callback returns.  A reply
	 * starting with "421" also closes the session (RFC 5321 §3.8). */
	const char *reply;
	/* MAIL: the transaction's queue id (for the Received: header and the
	 * "queued as" reply).  Caller-owned; valid until EOM or ABORT.  Set
	 * it before returning, also when returning SMTP_PENDING. */
	const char *queue_id;
};

struct smtp_ops {
	/* Append reply bytes to the session's output.  Must take all bytes
	 * (the caller buffers); a caller that cannot should close the session. */
	void (*write)(void *ctx, const void *buf, size_t len);
	/* Event upcall; returns an enum smtp_verdict.  For SMTP_EV_BODY a
	 * non-ACCEPT return marks the transaction failed (ev->reply is then
	 * sent at end of data, e.g. "452 4.3.1 Insufficient system storage").
	 * SMTP_PENDING is allowed for CONNECT, HELO, MAIL, RCPT, DATA, EOM.
	 * The ABORT, EARLY_TALKER and STARTTLS return values are ignored. */
	int (*event)(void *ctx, struct smtp_session *s, struct smtp_event *ev);
	/* Seconds since the epoch for the Received: date; NULL = 0. */
	int64_t (*unix_time)(void *ctx);
};

struct smtp_config {
	const char *hostname;       /* our name in greeting, EHLO, Received: */
	const char *greeting;       /* text after "220 <hostname> "; NULL = default */
	uint64_t max_message_size;  /* SIZE limit in bytes (RFC 1870); 0 = 10 MB */
	unsigned max_rcpts;         /* per message; 0 = 100 (RFC 5321 §4.5.3.1.8) */
	unsigned max_errors;        /* per session, then 421; 0 = 20 */
	unsigned max_junk;          /* commands outside a transaction; 0 = 100 */
	unsigned max_line;          /* command line incl. CRLF; 0 = 1000 */
	unsigned line_buffers;      /* pool size (partial lines); 0 = 1024 */
	enum smtp_bare_policy bare_policy;
	uint32_t cmd_timeout_ms;    /* 0 = 300000 (RFC 5321 §4.5.3.2.7) */
	uint32_t data_timeout_ms;   /* 0 = 180000 (RFC 5321 §4.5.3.2.6) */
	bool starttls;              /* advertise STARTTLS (caller can do TLS) */
	bool no_chunking;           /* do not advertise CHUNKING/BDAT */
	bool no_smtputf8;           /* do not advertise SMTPUTF8 */
};

/*
 * Create a server (one per thread): copies the config (hostname and greeting
 * strings are copied too), preallocates the line-buffer pool.
 * Returns the server, or NULL with errno (EINVAL bad config, ENOMEM).
 * The caller owns it and frees it with smtp_server_destroy() after all its
 * sessions are finished.
 */
struct smtp_server *smtp_server_create(const struct smtp_config *cfg,
				       const struct smtp_ops *ops);

/*
 * Limits the operator may change while sessions run (config.set). A field
 * of 0 keeps the running value.
 */
struct smtp_limits {
	uint64_t max_message_size;  /* SIZE limit in bytes (RFC 1870) */
	unsigned max_rcpts;         /* per message */
	unsigned max_errors;        /* per session */
	uint32_t cmd_timeout_ms;
	uint32_t data_timeout_ms;
};

/*
 * Change the server's limits for its sessions. Only the thread that drives
 * the server's sessions may call it (no locking). Effect on sessions in
 * progress: the size and recipient limits apply from the next MAIL FROM
 * (an open transaction keeps the limits it started with; EHLO advertises
 * the new SIZE at once); timeouts apply at once, counted from the
 * session's last command or data bytes; max_errors applies at the next
 * error reply. Returns 0, or -EINVAL when srv or l is NULL.
 */
int smtp_server_set_limits(struct smtp_server *srv,
			   const struct smtp_limits *l);

/* Free a server; NULL is ignored.  All sessions must be finished first. */
void smtp_server_destroy(struct smtp_server *srv);

/* Upper bound of smtp_session_size(), for sizing mempool objects at
 * compile time (checked by a static assertion in smtp.c). */
#define SMTP_SESSION_MAX 512

/* Bytes a session needs (<= SMTP_SESSION_MAX); the caller provides that
 * much storage, aligned like a pointer. */
size_t smtp_session_size(void);

/* Line buffers of the server's pool currently lent to sessions. */
unsigned smtp_server_buffers_in_use(const struct smtp_server *srv);

/*
 * Initialise a session in caller storage `mem` (smtp_session_size() bytes,
 * pointer-aligned).  `ctx` is passed to every op.  `peer` is the client's
 * address as text (for Received:); caller-owned, must outlive the session.
 * Sends nothing yet: call smtp_start().  Returns the session (== mem).
 */
struct smtp_session *smtp_session_init(void *mem, struct smtp_server *srv,
				       void *ctx, const char *peer,
				       uint64_t now_ms);

/*
 * Start the session: raises SMTP_EV_CONNECT; on ACCEPT sends the 220
 * greeting, on REJECT the reply (default "554 5.7.1") and closes,
 * on PENDING waits for smtp_complete().  Returns 0, or -EINVAL when the
 * session was already started.
 */
int smtp_start(struct smtp_session *s, uint64_t now_ms);

/*
 * Feed received bytes.  Returns how many bytes were consumed (0..len); the
 * caller keeps the rest and presents them again (followed by newer bytes)
 * once smtp_wants() says SMTP_WANT_INPUT again.  Never fails: protocol
 * errors produce SMTP replies.
 */
size_t smtp_input(struct smtp_session *s, const uint8_t *data, size_t len,
		  uint64_t now_ms);

/* What the session waits for. */
enum smtp_want {
	SMTP_WANT_INPUT = 0, /* more client bytes */
	SMTP_WANT_ANSWER,    /* smtp_complete() for a PENDING event */
	SMTP_WANT_TLS,       /* caller: flush, drop unconsumed input, handshake,
			      * then smtp_tls_started() */
	SMTP_WANT_CLOSE,     /* caller: flush output, then close the connection */
};
enum smtp_want smtp_wants(const struct smtp_session *s);

/*
 * Answer the PENDING event.  `reply` (may be NULL) as in struct smtp_event.
 * Sends the reply; afterwards the caller feeds held input again.
 * Returns 0, or -EINVAL when no event is pending.
 */
int smtp_complete(struct smtp_session *s, enum smtp_verdict verdict,
		  const char *reply, uint64_t now_ms);

/*
 * TLS is up after STARTTLS (RFC 3207 §4.2): the engine forgets everything
 * learned from the client (HELO, transaction) and waits for EHLO.
 * `tls_info` (e.g. "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384") appears in
 * Received:; caller-owned, must outlive the session.  Returns 0 or -EINVAL.
 */
int smtp_tls_started(struct smtp_session *s, const char *tls_info,
		     uint64_t now_ms);

/* Mark the session authenticated (Received: says ESMTPA/ESMTPSA). */
void smtp_set_authenticated(struct smtp_session *s, bool auth);

/* Monotonic ms at which the session times out (UINT64_MAX when waiting for
 * the caller, who owns that time). */
uint64_t smtp_deadline(const struct smtp_session *s);

/*
 * Check the timeout: past the deadline sends "421 4.4.2" and closes (an open
 * transaction is aborted).  Returns true when the session timed out.
 */
bool smtp_timeout(struct smtp_session *s, uint64_t now_ms);

/*
 * End the session (connection gone or closed): an open transaction is
 * aborted (SMTP_EV_ABORT), a borrowed line buffer goes back to the pool.
 * The storage may then be reused.  Safe to call twice.
 */
void smtp_session_fini(struct smtp_session *s);

/* The HELO/EHLO name (NUL-terminated, "" before HELO); engine-owned. */
const char *smtp_helo(const struct smtp_session *s);

/* True when input arrived before the greeting was sent. */
bool smtp_early_talker(const struct smtp_session *s);

/* Protocol name for Received: "with" (RFC 3848, RFC 6531 §3.7.3). */
const char *smtp_protocol(const struct smtp_session *s);

/* Parse a path "<...>" per RFC 5321 §4.1.2 (table-driven tests use it).
 * On success returns 0 and sets *mbox / *mbox_len to the mailbox (len 0 for
 * "<>" when allow_null) and *utf8 when it has non-ASCII (RFC 6531).
 * Returns -EINVAL for a syntax error, -ENAMETOOLONG over the §4.5.3.1 limits. */
int smtp_parse_path(const char *p, size_t len, bool allow_null,
		    const char **mbox, size_t *mbox_len, bool *utf8);

#ifdef __cplusplus
}
#endif
#endif
