/*
 * relay.h - mxedge-control's relay: tails the dataplane's spool, owns
 * delivery state, and relays every message to its recipient domain's
 * route (the customer's own server) with an asynchronous ESMTP client.
 *
 * Everything runs on one libevent loop (control/README.md says why).
 * Delivery state is an append-only log in relay.state_dir: one line per
 * recipient that reached a final state (sent, or failed with its bounce
 * durable), plus holds, next-attempt times of deferred mail and moves into
 * the store; it is rewritten (only what a restart still needs) once it
 * grows past relay.state_log_max. After a restart, every committed message
 * is read again from the spool and only recipients without a final line
 * are tried, each deferred message at its recorded next attempt, so mail
 * is delivered at least once and never lost; a recipient is delivered
 * twice only when the process dies between the next hop's 250 and the
 * sync of that line.
 *
 * Routes' TLS policy (none / opportunistic / required) is applied with
 * STARTTLS (OpenSSL); certificates are not verified yet. Mail deferred
 * for relay.compact_after is copied into the relay's store
 * (relay.state_dir/store) so that it no longer pins its spool segment.
 *
 * Bounces (RFC 3464) are written to the relay's own spool
 * (relay.state_dir/bounces, the spool.h format), tailed like the main
 * spool, and routed by the sender's domain like any other mail. A
 * recipient's failure is recorded only once its bounce is durable.
 */
#ifndef MXEDGE_RELAY_H
#define MXEDGE_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "cfg.h"
#include "ctl.h"

struct event_base;
struct relay;

/*
 * relay_new - start relaying from @spool_dir with configuration @c (copied
 * where needed; routes are read from @c->domains, which must outlive the
 * relay, under the live changes of relay.state_dir/control.json) on loop
 * @base: opens the state log, the bounce spool and the store
 * under c->relay.state_dir (created if missing), replays the state log,
 * creates the TLS client context when a route uses TLS (else at the
 * first STARTTLS), opens the mail log, and arms the loop's timers. The
 * first call also tunes the process's malloc for deep queues (64 MiB heap
 * steps, transparent huge pages, no trimming below 128 MiB: a drain's page
 * faults). Returns the relay or NULL with errno set and a message in @err
 * (@errlen bytes).
 */
struct relay *relay_new(struct event_base *base, const struct cfg *c,
			const char *spool_dir, char *err, size_t errlen);

/* relay_free - close connections (in-flight recipients stay pending for
 * the next start), sync the state log, free @r. NULL is a no-op. */
void relay_free(struct relay *r);

/* relay_commands - the control-socket commands of the relay (queue.list,
 * queue.show, queue.flush, queue.delete, queue.hold, queue.release, status,
 * audit, route.list, route.set, route.del); ctx is the relay. A route set or
 * removed live is kept in relay.state_dir/control.json ("routes": domain ->
 * {host, port, tls}, or null for a file route removed), read back by
 * relay_new(), and used from the next delivery attempt on. */
const struct ctl_command *relay_commands(size_t *n);

/*
 * relay_ctljson_set - set @key of @state_dir/control.json, the settings an
 * operator changed live (they win over the file at the next start), to
 * @value (reference stolen), or remove it when @value is NULL; the file is
 * removed when nothing is left in it. Written atomically (temporary file,
 * fsync, rename). The relay keeps "routes" there (route.set/route.del),
 * mxedge-control "log.level". Returns 0, -EINVAL for an existing file that
 * is not a JSON object (left as it is), or another -errno.
 */
int relay_ctljson_set(const char *state_dir, const char *key, json_t *value);

/* --- pure helpers, exposed for unit tests -------------------------------- */

/*
 * relay_backoff_s - seconds (of configured time) to wait before attempt
 * @attempt + 1 after @attempt failed ones (>= 1): min_backoff doubled per
 * attempt, capped at max_backoff, with up to -25%..+25% jitter from @rnd
 * (any 32-bit random value), never outside [min_backoff, max_backoff].
 */
uint64_t relay_backoff_s(const struct cfg_relay *rc, unsigned attempt, uint32_t rnd);

/*
 * relay_dsn_of - the RFC 3463 status for SMTP reply @code with @text:
 * the enhanced code at the start of @text when there is one whose class
 * matches @code's, else X.0.0. Writes at most 16 bytes to @out.
 */
void relay_dsn_of(int code, const char *text, char *out);

/*
 * relay_dot_stuff - RFC 5321 §4.5.2: append @len message bytes to @out
 * (@cap bytes) with a '.' doubled at each line start, a final CRLF if the
 * message lacks one, and the ".CRLF" terminator. A line starts at the
 * first byte and after every LF (bare LF included; a bare CR starts none).
 * Returns bytes written, or the size needed when @out is NULL or too small
 * (nothing written then). With @cap >= relay_dot_stuff_bound(@len) it is
 * one memchr/memcpy pass over @msg.
 */
size_t relay_dot_stuff(const unsigned char *msg, size_t len, char *out, size_t cap);

/* relay_dot_stuff_bound - an upper bound of relay_dot_stuff()'s output for
 * @len message bytes (len + ceil(len / 2) + 5). */
size_t relay_dot_stuff_bound(size_t len);

/* One failed recipient for a delivery status notification. */
struct relay_dsn_rcpt {
	const char *addr;
	const char *orcpt;     /* ORCPT= value ("rfc822;a@b") or NULL */
	const char *status;    /* "5.1.1" */
	const char *remote;    /* next hop name or NULL */
	const char *diag;      /* "550 5.1.1 User unknown" or a local reason */
};

/*
 * relay_bounce_build - an RFC 3464 multipart/report for the message with
 * queue id @qid from @sender (not ""), arrived at @arrival_us, whose
 * @nrcpt recipients failed; @orig (@olen bytes) is the original message,
 * returned whole (message/rfc822) when @full (the sender asked RET=FULL),
 * else its header only (text/rfc822-headers). @now is the Date:. Returns a
 * malloc()ed CRLF message (caller frees) with its length in *outlen, or
 * NULL on ENOMEM.
 */
char *relay_bounce_build(const char *hostname, const char *qid,
			 const char *sender, uint64_t arrival_us,
			 const struct relay_dsn_rcpt *rcpts, unsigned nrcpt,
			 const unsigned char *orig, size_t olen, bool full, time_t now,
			 size_t *outlen);

#endif /* MXEDGE_RELAY_H */
