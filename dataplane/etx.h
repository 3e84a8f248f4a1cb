/*
 * etx.h - the edge transaction: what both I/O modes of the edge (the DPDK
 * worker, dp_worker.c, and `--io=kernel`, kio/kio.c) do with the SMTP
 * engine's events. One copy of the policy checks (blocklist, accepted
 * domains), of the envelope bookkeeping and of the spool records, so the
 * records of the two modes cannot drift apart; plus the per-client session
 * count (limits.max_sessions_per_client) and the Postfix-format reception
 * log lines (elog.h) of a session.
 *
 * Nothing here blocks, makes a syscall, takes a lock or allocates after
 * etx_clients_create(): every function may run on a worker lcore's hot
 * path. Clocks come from the caller (the DPDK worker reads the TSC, the
 * kernel mode the system clock).
 */
#ifndef MXEDGE_ETX_H
#define MXEDGE_ETX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp.h"
#include "elog.h"
#include "smtp.h"
#include "spool.h"

/* Per worker (lcore or thread): what the transactions of its sessions
 * share. Filled by the worker at creation; etx never frees anything in it. */
struct etx_ctx {
	struct spool_writer *spool;       /* the worker's own writer */
	struct tbl_set *tables;           /* client lists, accepted domains */
	const volatile unsigned *ndomains; /* accepted domains configured */
	struct dp_lcore_stats *stats;     /* the worker's counters */
	struct spool_rcpt *rcpts;         /* scratch: @max_rcpts entries */
	unsigned max_rcpts;
	struct elog_ring *log;            /* reception log ring, or NULL */
};

enum etx_state {
	ETX_NONE = 0, /* no transaction */
	ETX_ENV,      /* MAIL seen: envelope collecting in env[] */
	ETX_BEGUN,    /* BEGIN record appended, body streaming */
	ETX_ENDED,    /* END record appended, 250 waits for durability */
};

enum etx_pend {
	ETX_PEND_NONE = 0,
	ETX_PEND_BEGIN,   /* DATA answered PENDING: BEGIN hit a full ring */
	ETX_PEND_END,     /* EOM answered PENDING: END hit a full ring */
	ETX_PEND_DURABLE, /* EOM answered PENDING: waiting for the sync thread */
	ETX_PEND_ROOM,    /* the caller's own: input held until the ring has room */
};

#define ETX_MSGID_MAX 128

/* One session's transaction state; embedded in the caller's session and
 * set up with etx_session_start(). */
struct etx_tx {
	enum etx_state state;
	enum etx_pend pend;
	bool body_failed;
	uint64_t qid;
	uint64_t commit_off;
	uint64_t arrival_us;
	struct spool_msg msg;
	char qid_txt[SPOOL_QID_LEN + 1];
	int family;                   /* 4 or 6 */
	uint8_t addr[16];             /* the client's address */
	char client[48];              /* plain text form, for the envelope */
	char peer[56];                /* "IPv6:..." form for Received: */
	/* Reception log bookkeeping. */
	bool timed_out;               /* set by the caller: inactivity or
	                               * lifetime limit ended the session */
	bool quit;                    /* a 221 went out */
	bool closing;                 /* a 421/554 went out: we closed */
	bool esmtp;                   /* EHLO seen: proto=ESMTP */
	uint8_t stage;                /* enum elog_stage of the last command */
	uint16_t cmd_ok[ELOG_CMD__COUNT], cmd_all[ELOG_CMD__COUNT];
	uint8_t hdr_state;            /* Message-ID scanner (etx.c) */
	uint8_t hdr_match;
	uint8_t msgid_len;
	char msgid[ETX_MSGID_MAX];
	/* env[]: mail_from NUL params NUL, then per RCPT addr NUL notify NUL
	 * orcpt NUL (empty = absent); env_cap bytes in the caller's session. */
	unsigned env_len, env_cap, nrcpt;
	char *env;
};

/*
 * etx_session_start - reset @t for a new connection from @family (4 or 6)
 * address @addr (network byte order, 4 or 16 bytes), keeping its envelope
 * buffer @env of @env_cap bytes (the caller's; must outlive the session),
 * and log "connect from unknown[addr]" at @now_us (wall clock, µs).
 */
void etx_session_start(struct etx_ctx *x, struct etx_tx *t, int family,
		       const uint8_t *addr, char *env, unsigned env_cap,
		       uint64_t now_us);

/*
 * etx_event - handle one SMTP engine event for the session of @t (the
 * engine's smtp_ops.event upcall body). @ss is the engine session, @now_us
 * the wall clock in µs (arrival time, queue ids, log stamps). Applies the
 * client blocklist (CONNECT), the accepted domains (RCPT), collects the
 * envelope, appends the BEGIN/DATA/END/ABORT spool records. Returns an
 * enum smtp_verdict; with SMTP_PENDING (t->pend says why) the caller must
 * call etx_poll() for this session until it says ETX_POLL_DONE. After an
 * SMTP_EV_ABORT the caller stops polling the session.
 */
int etx_event(struct etx_ctx *x, struct etx_tx *t, struct smtp_session *ss,
	      struct smtp_event *ev, uint64_t now_us);

/* What etx_poll() decided: the engine's answer to a PENDING event. */
struct etx_answer {
	int verdict;            /* SMTP_ACCEPT or SMTP_REJECT */
	const char *reply;      /* NULL (the engine's default) or a 4xx line */
};

enum etx_poll_result { ETX_POLL_WAIT = 0, ETX_POLL_DONE = 1 };

/*
 * etx_poll - retry what a PENDING answer waits for (t->pend BEGIN, END or
 * DURABLE) of the engine session @ss. Returns ETX_POLL_WAIT while still
 * waiting, or ETX_POLL_DONE with @a filled: the caller takes the session off its poll list and then
 * calls smtp_complete(ss, a->verdict, a->reply, ...) (in that order: the
 * engine may raise the next pipelined command's events inside
 * smtp_complete). ACCEPT means the spool took the BEGIN record (354) or
 * made the message durable (250, RFC 5321 §4.1.1.4; the "client=" and
 * "message-id=" log lines go out then); REJECT carries a 451.
 * ETX_PEND_NONE is DONE with ACCEPT; ETX_PEND_ROOM is the caller's own.
 */
enum etx_poll_result etx_poll(struct etx_ctx *x, struct etx_tx *t,
			      struct smtp_session *ss, uint64_t now_us,
			      struct etx_answer *a);

/*
 * etx_reply - tell etx about reply bytes the engine wrote (call from
 * smtp_ops.write): 221 counts QUIT, 421/554 mark a close by us, for the
 * session's log lines.
 */
void etx_reply(struct etx_tx *t, const void *buf, size_t len);

/*
 * etx_session_end - log how the session of @t ended: "timeout after CMD"
 * (t->timed_out) or "lost connection after CMD" (a client that left
 * without QUIT and without a closing reply from us), then "disconnect from
 * unknown[addr] ehlo=1 ... commands=N". Call once per session.
 */
void etx_session_end(struct etx_ctx *x, struct etx_tx *t, uint64_t now_us);

/* etx_busy - true while a transaction is open (graceful stop waits). */
static inline bool etx_busy(const struct etx_tx *t)
{
	return t->state != ETX_NONE;
}

/*
 * Per-client session counts (limits.max_sessions_per_client): a fixed
 * open-addressing table with room for twice the worker's session pool, so
 * it is never more than half full; O(1) per accept and close. The key is
 * an IPv4 address, or an IPv6 address cut to its /64 (one site usually
 * holds a whole /64, so single IPv6 addresses would limit nobody).
 */
struct etx_clients;

#define ETX_CLIENT_KEY 16

/* etx_clients_create - a table for @max_sessions sessions, hashed with
 * @seed (random: clients cannot aim at one probe chain). Returns it or
 * NULL (ENOMEM). Free with etx_clients_destroy(). */
struct etx_clients *etx_clients_create(unsigned max_sessions, uint64_t seed);

/* etx_clients_destroy - free @c; NULL is a no-op. */
void etx_clients_destroy(struct etx_clients *c);

/* etx_client_key - the table key of @family (4/6) address @addr. */
void etx_client_key(int family, const uint8_t *addr, uint8_t key[ETX_CLIENT_KEY]);

/*
 * etx_clients_take - count one more session for @key unless it already
 * holds @limit. Returns 0, or -EBUSY (nothing counted). At most
 * @max_sessions keys are held at once (the caller's pool bounds them).
 */
int etx_clients_take(struct etx_clients *c, const uint8_t key[ETX_CLIENT_KEY],
		     unsigned limit);

/* etx_clients_put - a session of @key ended (after a successful take). */
void etx_clients_put(struct etx_clients *c, const uint8_t key[ETX_CLIENT_KEY]);

struct tbl_knobs;

/*
 * etx_knobs_to_smtp - hand the live SMTP limits of @kn (config.set) to the
 * calling thread's engine @srv when they differ from @applied, the limits
 * last handed to it (updated here). smtp_server_set_limits applies size and
 * recipient limits from a session's next MAIL and timeouts at once, so no
 * session is dropped. Call only from the thread that owns @srv.
 */
void etx_knobs_to_smtp(struct smtp_server *srv, struct smtp_limits *applied,
		       const struct tbl_knobs *kn);

#endif /* MXEDGE_ETX_H */
