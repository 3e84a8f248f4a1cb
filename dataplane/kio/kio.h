/*
 * kio.h - `mxedge --io=kernel`: the edge on Linux kernel sockets.
 *
 * The same SMTP engine (smtp/), spool (dataplane/spool), policy tables
 * (dataplane/tables) and control-socket commands (dp_admin.c) as the DPDK
 * dataplane, with the kernel's TCP/IP stack instead of DPDK + tcp/. It is
 * the baseline for benchmarks and the fallback where DPDK cannot run.
 *
 * One worker thread per configured queue, each with its own epoll
 * instance, its own listening socket per address (SO_REUSEPORT: the kernel
 * spreads connections, a session never leaves its thread), its own SMTP
 * server and its own spool writer; workers share nothing but the RCU
 * tables. A 250 after DATA/BDAT goes out only once spool_durable() reports
 * the message's END record on stable storage (DESIGN.md durability rule);
 * the spool's sync thread group-commits all threads' sessions.
 */
#ifndef MXEDGE_KIO_H
#define MXEDGE_KIO_H

#include <stddef.h>

#include "dp.h"

struct kio;
struct spool;
struct elog_ring;

/* What the workers need; filled by kio_main() or a test. */
struct kio_params {
	const struct dp_config *cfg;     /* addresses, port, hostname, limits */
	struct tbl_set *tables;          /* read by the workers (QSBR readers) */
	struct spool *spool;             /* writer i belongs to thread i */
	size_t spool_ring_bytes;         /* each writer's ring (backpressure) */
	unsigned threads;                /* 1..SPOOL_MAX_WRITERS */
	unsigned max_sessions;           /* per thread; more get 421 */
	const volatile int *stop;        /* set by the signal handler */
	const volatile unsigned *ndomains; /* accepted domains configured */
	struct dp_lcore_stats *stats;    /* @threads slots, one per thread */
	struct elog_ring *const *logs;   /* @threads reception log rings
	                                  * (elog.h), or NULL: no log */
};

/*
 * kio_create - bind the listening sockets (cfg->ip4 and/or cfg->ip6 on
 * cfg->smtp_port; neither: 0.0.0.0 and [::]) once per thread with
 * SO_REUSEPORT and prepare every thread's SMTP server and epoll instance.
 * @p is copied; the objects it points to must outlive the result.
 * Returns the instance, or NULL with errno set after a message on stderr.
 * Free with kio_destroy().
 */
struct kio *kio_create(const struct kio_params *p);

/*
 * kio_start - start the worker threads. Returns 0, or -errno when a thread
 * could not start (threads already started stop once *stop is set; call
 * kio_join() in both cases).
 */
int kio_start(struct kio *k);

/*
 * kio_join - wait for the workers. They return once *p->stop was seen and
 * every session has finished its transaction or got 421 (graceful stop).
 */
void kio_join(struct kio *k);

/* kio_destroy - close sockets and free @k after kio_join(). NULL is a
 * no-op. */
void kio_destroy(struct kio *k);

/*
 * kio_main - the whole `mxedge --io=kernel` process for a parsed @cfg
 * (dp_config_parse()): policy tables from the config file, the spool (one
 * writer per thread, recovery report on stdout), the control socket with
 * dp_admin_commands(), the workers; runs until SIGTERM/SIGINT or
 * cfg->duration_s, then stops gracefully, syncs the spool and prints the
 * per-thread counters. Returns the process exit status (0, or 1 after a
 * message on stderr). @cfg stays the caller's.
 */
int kio_main(struct dp_config *cfg);

#endif /* MXEDGE_KIO_H */
