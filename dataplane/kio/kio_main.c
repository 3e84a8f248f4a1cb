/*
 * kio_main.c - the `mxedge --io=kernel` process: tables, spool, control
 * socket and the supervisor loop around the kio worker threads (kio.h).
 * Shaped like the DPDK main.c so both modes behave the same to operators:
 * the same config file, start-up lines, control commands and exit report.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "elog.h"
#include "kio.h"
#include "spool.h"

/* Spool ring per writer; the workers' backpressure needs its size. */
#define SPOOL_RING_BYTES (8u << 20)
/* Sessions per thread at most (each holds ~33 KiB while open). */
#define SESSIONS_PER_THREAD 65536

static volatile int stop_requested;
/* Accepted domains configured (RCPT accepts every domain while it is 0);
 * written by the supervisor, read by the workers. */
static volatile unsigned domain_count;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* The reception log (elog.h). SIGHUP reopens its file for logrotate and
 * reloads the configuration, as operators expect of a mail daemon. */
static struct elog *mail_log;

static void on_hup(int sig)
{
	(void)sig;
	elog_reopen(mail_log);
	dp_admin_sighup();
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* What the status and stats commands report about this process. */
struct proc_info {
	const struct dp_config *cfg;
	struct spool *spool;
	const struct dp_lcore_stats *stats;
	unsigned threads;
	uint64_t started_ms;
};

static json_t *admin_status(void *arg)
{
	const struct proc_info *pi = arg;

	return json_pack("{s:s, s:i, s:i, s:s, s:s, s:I}", "io", "kernel",
			 "threads", (int)pi->threads, "smtp_port",
			 (int)pi->cfg->smtp_port, "hostname", pi->cfg->hostname,
			 "spool", pi->cfg->spool_dir, "uptime_s",
			 (json_int_t)((mono_ms() - pi->started_ms) / 1000));
}

/* One object per thread with the DPDK path's per-lcore keys where they
 * mean the same; rx_bytes counts bytes read from client sockets. */
static json_t *admin_stats(void *arg)
{
	const struct proc_info *pi = arg;
	json_t *arr = json_array();
	unsigned i;

	for (i = 0; i < pi->threads; i++) {
		const struct dp_lcore_stats *st = &pi->stats[i];
		struct spool_writer_stats ws;

		spool_writer_stats(spool_writer(pi->spool, i), &ws);
		json_t *row = json_pack("{s:i, s:I}", "thread", (int)i,
					"rx_bytes", (json_int_t)st->rx_bytes);

		dp_stats_put(row, st);
		json_object_set_new(row, "spool_syncs", json_integer((json_int_t)ws.syncs));
		json_object_set_new(row, "spool_full", json_integer((json_int_t)ws.full));
		json_array_append_new(arr, row);
	}
	return arr;
}

/* spool_syncs next to messages shows the group commit at work: many
 * messages per fdatasync under concurrency. */
static void print_stats(const struct dp_lcore_stats *stats, unsigned threads,
			struct spool *spool)
{
	unsigned i;

	for (i = 0; i < threads; i++) {
		const struct dp_lcore_stats *st = &stats[i];
		struct spool_writer_stats ws;

		spool_writer_stats(spool_writer(spool, i), &ws);
		printf("mxedge: thread %u rx_bytes=%" PRIu64 " sessions=%" PRIu64
		       " sessions_busy=%" PRIu64 " clients_blocked=%" PRIu64
		       " messages=%" PRIu64 " store_errors=%" PRIu64
		       " rcpt_rejected=%" PRIu64 " spool_syncs=%" PRIu64
		       " sessions_client_limit=%" PRIu64
		       " sessions_expired=%" PRIu64 "\n", i,
		       st->rx_bytes, st->sessions, st->sessions_busy,
		       st->clients_blocked, st->messages, st->store_errors,
		       st->rcpt_rejected, ws.syncs, st->sessions_client_limit,
		       st->sessions_expired);
	}
	fflush(stdout);
}

int kio_main(struct dp_config *cfg)
{
	struct tbl_set *tables = NULL;
	struct spool *spool = NULL;
	struct dp_lcore_stats *stats = NULL;
	struct kio *k = NULL;
	struct spool_recovery rep;
	struct proc_info pi;
	struct dp_admin adm = { 0 };
	struct sigaction sa;
	struct kio_params kp;
	struct elog_ring *logs[SPOOL_MAX_WRITERS];
	uint64_t deadline;
	unsigned threads = cfg->queues, sessions, li;
	char err[512];
	int status = 1;

	tables = tbl_create();
	if (tables == NULL) {
		fprintf(stderr, "mxedge: cannot create policy tables\n");
		goto out;
	}
	/* Lists, domains, saved operator changes and live knobs, before any
	 * worker starts; requests are served from the loop below only. */
	adm = (struct dp_admin){ .tables = tables, .now_ms = mono_ms,
				.status = admin_status, .stats = admin_stats,
				.arg = &pi, .ndomains = &domain_count };
	if (dp_admin_start(&adm, cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "mxedge: %s\n", err);
		goto out;
	}
	if (!cfg->state_dir[0] && cfg->control[0])
		printf("mxedge: no state.dir: changes made through the control socket "
		       "last until restart\n");
	{
		struct spool_config sc = {
			.dir = cfg->spool_dir, .writers = threads,
			.segment_bytes = (uint64_t)cfg->file.spool_segment_mb << 20,
			.ring_bytes = SPOOL_RING_BYTES,
		};

		spool = spool_open(&sc, &rep);
	}
	if (spool == NULL) {
		fprintf(stderr, "mxedge: spool %s: %s\n", cfg->spool_dir,
			errno == EWOULDBLOCK ? "in use by another process" :
			strerror(errno));
		goto out;
	}
	printf("mxedge: spool %s: %" PRIu64 " messages, %" PRIu64
	       " incomplete, %" PRIu64 " torn-tail bytes, %u damaged segments\n",
	       cfg->spool_dir, rep.messages, rep.incomplete, rep.torn_bytes,
	       rep.corrupt_segments);
	stats = calloc(threads, sizeof(*stats));
	if (stats == NULL) {
		fprintf(stderr, "mxedge: %s\n", strerror(ENOMEM));
		goto out;
	}
	mail_log = elog_open(&(struct elog_config){ .path = cfg->log_file,
			     .hostname = cfg->hostname, .rings = threads });
	if (mail_log == NULL || elog_start(mail_log) < 0) {
		fprintf(stderr, "mxedge: log file %s: %s\n",
			cfg->log_file[0] ? cfg->log_file : "(stderr)", strerror(errno));
		goto out;
	}
	for (li = 0; li < threads && li < SPOOL_MAX_WRITERS; li++)
		logs[li] = elog_ring(mail_log, li);
	sessions = cfg->file.max_sessions / threads;
	if (sessions > SESSIONS_PER_THREAD)
		sessions = SESSIONS_PER_THREAD;
	if (sessions == 0)
		sessions = 1;
	kp = (struct kio_params){
		.cfg = cfg, .tables = tables, .spool = spool,
		.spool_ring_bytes = SPOOL_RING_BYTES, .threads = threads,
		.max_sessions = sessions, .stop = &stop_requested,
		.ndomains = &domain_count, .stats = stats, .logs = logs,
	};
	k = kio_create(&kp);
	if (k == NULL)
		goto out;
	pi = (struct proc_info){ cfg, spool, stats, threads, mono_ms() };

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (kio_start(k) < 0) {
		fprintf(stderr, "mxedge: cannot start worker threads\n");
		stop_requested = 1;
		kio_join(k);
		goto out;
	}
	{
		char a4[INET_ADDRSTRLEN] = "*", a6[INET6_ADDRSTRLEN] = "*";

		if (cfg->ip4)
			inet_ntop(AF_INET, &cfg->ip4, a4, sizeof(a4));
		if (cfg->ip6_prefixlen)
			inet_ntop(AF_INET6, cfg->ip6, a6, sizeof(a6));
		if (cfg->ip4 && !cfg->ip6_prefixlen)
			strcpy(a6, "-");
		if (cfg->ip6_prefixlen && !cfg->ip4)
			strcpy(a4, "-");
		printf("mxedge: SMTP on %s %s port %u as %s, %u sessions per thread, "
		       "spool %s (kernel sockets)\n", a4, a6, cfg->smtp_port,
		       cfg->hostname, sessions, cfg->spool_dir);
	}
	printf("mxedge: running on %u thread(s)\n", threads);
	fflush(stdout);

	deadline = cfg->duration_s ? mono_ms() + cfg->duration_s * 1000ull : 0;
	/* The main thread supervises: control socket, table expiry, reload. */
	while (!stop_requested) {
		if (deadline && mono_ms() >= deadline)
			break;
		dp_admin_poll(&adm, 100);
	}
	stop_requested = 1;
	kio_join(k);
	print_stats(stats, threads, spool);
	status = 0;
out:
	kio_destroy(k);
	elog_close(mail_log); /* after the workers: their last lines */
	mail_log = NULL;
	/* Syncs whatever was appended; nothing unsynced was acknowledged. */
	spool_close(spool);
	dp_admin_stop(&adm);
	tbl_destroy(tables);
	free(stats);
	return status;
}
