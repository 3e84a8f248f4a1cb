/*
 * kio — kernel-socket I/O for the SMTP engine (the `--io=kernel` baseline).
 *
 * One worker thread per core, each with its own epoll instance, its own
 * listening socket per address (SO_REUSEPORT: the kernel spreads new
 * connections over the workers) and its own struct smtp_server, so workers
 * share nothing and take no locks.  The loop is thin: read -> smtp_input()
 * -> write, with the engine's events turned into a message store.
 *
 * Message store (until the dataplane spool exists): every accepted message
 * is a pair of files in the spool directory,
 *     <qid>.eml  the message bytes exactly as the engine delivered them
 *                (Received: header first, then the client's bytes, dot-
 *                unstuffed for DATA, as sent for BDAT)
 *     <qid>.env  the envelope (text lines, see dataplane/kio/README.md)
 * written under tmp/, fsync'ed, renamed into place, and the directory
 * fsync'ed BEFORE the 250 reply (DESIGN.md durability rule).  Commits are
 * grouped: every message that ended during one pass of the event loop is
 * synced together, then all of them are answered (one directory fsync).
 */
#ifndef MXEDGE_KIO_H
#define MXEDGE_KIO_H

#include <stdbool.h>
#include <stddef.h>

#include "smtp.h"

#define KIO_MAX_LISTEN 8

struct kio_config {
	const char *listen[KIO_MAX_LISTEN]; /* "198.18.0.1:25", "[2001:db8::1]:25" */
	unsigned nlisten;
	unsigned threads;        /* 0 = one per online CPU */
	const char *spool_dir;   /* must exist and be writable */
	unsigned max_conns;      /* per worker; 0 = 10000 */
	bool quiet;              /* no per-message log lines on stderr */
	unsigned greet_delay_ms; /* greet pause; early talkers are logged */
	struct smtp_config smtp; /* engine settings (hostname, limits, ...) */
};

struct kio;

/*
 * Validate the config, create the spool's tmp/ directory, and bind one
 * listening socket per address and worker (SO_REUSEPORT).  Returns the
 * instance, or NULL with errno set (message on stderr: setup-time only).
 * Ownership: the caller frees it with kio_destroy().
 */
struct kio *kio_create(const struct kio_config *cfg);

/*
 * Run the workers until kio_stop(); blocks.  Returns 0, or -errno when a
 * worker could not start.
 */
int kio_run(struct kio *k);

/* Ask kio_run() to return (async-signal-safe). */
void kio_stop(struct kio *k);

/* Close sockets and free; NULL is ignored. */
void kio_destroy(struct kio *k);

#endif
