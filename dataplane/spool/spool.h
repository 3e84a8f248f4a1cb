/*
 * spool.h - durable message spool: per-writer append-only segment files with
 * group commit.
 *
 * Each writer (one per dataplane lcore or kernel-I/O thread) appends records
 * to its own in-memory ring; one sync thread moves ring bytes into the
 * writer's current segment file, fdatasync()s it, and then publishes the
 * writer's durable offset. A session may answer 250 for a message only when
 * spool_durable() says the message's END record is below that offset
 * (DESIGN.md, durability rule). Writers never make syscalls or take locks.
 *
 * A message is a sequence of records with the same queue id: BEGIN (the
 * envelope), DATA* (message bytes, any chunking), END (total length and
 * number of DATA records, so a lost middle record is detected) or ABORT. Records of different messages of one writer
 * interleave freely, so a session streams its body as it arrives and never
 * buffers a whole message. Every record carries a CRC32 over its header and
 * payload; recovery skips a torn tail or damaged bytes (resyncing at the
 * next valid record, never truncating or rewriting anything) and never
 * reports a message without a valid END.
 *
 * Segment files: DIR/w<writer>-<first stream offset, 16 hex>.seg
 */
#ifndef MXEDGE_SPOOL_H
#define MXEDGE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Queue ids: 64-bit, unique across writers and restarts, and ordered by
 * time. Text form: 11 characters of [0-9A-Za-z] (base 62, sorts like the
 * number). */
#define SPOOL_QID_LEN 11
#define SPOOL_MAX_WRITERS 128
/* Largest DATA record payload; spool_data() splits longer buffers. */
#define SPOOL_CHUNK_MAX (64u * 1024u)

/* One recipient: address and RFC 3461 DSN parameters (raw values). */
struct spool_rcpt {
	const char *addr;    /* without angle brackets; not NULL */
	const char *notify;  /* NOTIFY= value or NULL */
	const char *orcpt;   /* ORCPT= value or NULL */
};

/* The envelope of one message, as stored in its BEGIN record. Strings are
 * NUL-terminated, at most 65535 bytes each; NULL means absent. */
struct spool_envelope {
	uint64_t arrival_us;       /* wall clock, microseconds since epoch */
	const char *client_addr;   /* e.g. "198.18.0.2" or "2001:db8::2" */
	const char *client_name;   /* reverse name or NULL */
	const char *helo;
	const char *tls;           /* e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384" or NULL */
	const char *mail_from;     /* "" for the null reverse path */
	const char *mail_params;   /* MAIL FROM parameters, raw (SIZE=, BODY=, RET=, ENVID=, ...) */
	unsigned nrcpt;
	const struct spool_rcpt *rcpts;
};

struct spool;
struct spool_writer;

struct spool_config {
	const char *dir;          /* spool directory; created if missing */
	unsigned writers;         /* 1..SPOOL_MAX_WRITERS */
	size_t ring_bytes;        /* per writer, power of two, >= 512 KiB (default 8 MiB) */
	uint64_t segment_bytes;   /* rotate segments beyond this size (default 64 MiB) */
	unsigned idle_poll_us;    /* sync thread sleep when idle, < 1 s (default 50 us) */
};

/* What recovery found when the spool was opened. */
struct spool_recovery {
	unsigned segments;        /* segment files scanned */
	uint64_t records;         /* valid records */
	uint64_t messages;        /* committed messages (valid END) */
	uint64_t incomplete;      /* BEGIN without END/ABORT: never acknowledged */
	uint64_t torn_bytes;      /* torn tail of a writer's newest segment (left in place) */
	uint64_t damaged_bytes;   /* unreadable bytes elsewhere (left in place) */
	unsigned corrupt_segments; /* segments with damaged bytes; later records still read */
};

/*
 * spool_open - lock DIR against a second opener, recover it (read-only:
 * torn tails and damage are skipped, reported in @rep, and left on disk;
 * new writes go to fresh segments), then start the sync thread. @rep (may be NULL) receives what recovery found.
 * Returns the spool, or NULL with errno set (EINVAL for a bad config,
 * EWOULDBLOCK when another process has the spool open, or the error of the
 * failing system call).
 */
struct spool *spool_open(const struct spool_config *cfg,
			 struct spool_recovery *rep);

/*
 * spool_close - sync everything appended so far, stop the sync thread, close
 * files and free @sp. Writers must no longer be used. NULL is a no-op.
 */
void spool_close(struct spool *sp);

/* spool_writer - writer @idx (< cfg->writers). Owned by @sp; use from one
 * thread only. */
struct spool_writer *spool_writer(struct spool *sp, unsigned idx);

/*
 * spool_qid_new - next queue id of @w, given the wall clock in ms. Ids are
 * strictly increasing per writer and never repeat across restarts of the
 * same spool directory (recovery seeds the clock from the largest id seen).
 */
uint64_t spool_qid_new(struct spool_writer *w, uint64_t now_ms);

/* spool_qid_format - write the 11-character text form of @qid plus NUL
 * into @out (at least SPOOL_QID_LEN + 1 bytes). */
void spool_qid_format(uint64_t qid, char *out);

/* spool_qid_parse - parse the text form; returns 0 or -EINVAL. */
int spool_qid_parse(const char *s, uint64_t *qid);

/*
 * spool_begin/spool_data/spool_end/spool_abort - append the records of
 * message @qid. All return 0, -EAGAIN when the ring lacks room (nothing was
 * appended: retry after spool_durable() progress, i.e. apply backpressure),
 * -EINVAL for bad arguments (queue id 0, a string of 65535 bytes or more,
 * no mail_from, @len above ring_bytes / 2), or -E2BIG for an envelope above
 * 1 MiB or half the ring, encoded.
 * spool_data() appends @len bytes in DATA records of at most
 * SPOOL_CHUNK_MAX; it is all-or-nothing.
 * spool_end() stores the total length and DATA record count of the
 * message (kept in @m by the calls) and sets *commit_off: the message is
 * durable once spool_durable(w, *commit_off).
 * After spool_writer_error() reports a failure, all of them return it.
 */
struct spool_msg {
	uint64_t qid;
	uint64_t len;     /* message bytes appended so far */
	uint32_t chunks;  /* DATA records appended so far */
};
int spool_begin(struct spool_writer *w, struct spool_msg *m, uint64_t qid,
		const struct spool_envelope *env);
int spool_data(struct spool_writer *w, struct spool_msg *m, const void *buf,
	       size_t len);
int spool_end(struct spool_writer *w, struct spool_msg *m, uint64_t *commit_off);
int spool_abort(struct spool_writer *w, struct spool_msg *m);

/* spool_durable - true once every record below stream offset @off of @w is
 * on stable storage. Lock-free; cheap enough to poll every loop. */
bool spool_durable(const struct spool_writer *w, uint64_t off);

/*
 * spool_writer_error - 0, or -errno when the sync thread could not write or
 * sync this writer's segment (disk full, I/O error). Such a writer never
 * becomes durable again (after a failed fsync the file's state is unknown):
 * sessions waiting on it must answer 451 and the operator must act.
 */
int spool_writer_error(const struct spool_writer *w);

/* spool_durable_offset - the writer's current durable stream offset. */
uint64_t spool_durable_offset(const struct spool_writer *w);

/* Statistics of one writer, read from any thread (approximate). */
struct spool_writer_stats {
	uint64_t appended;    /* stream offset written by the writer */
	uint64_t durable;     /* stream offset known durable */
	uint64_t syncs;       /* fdatasync calls for this writer */
	uint64_t full;        /* appends refused with -EAGAIN */
	uint64_t sync_ns_max; /* slowest fdatasync seen */
};
void spool_writer_stats(const struct spool_writer *w,
			struct spool_writer_stats *st);

/* fdatasync latency histogram, published by the spool owner's sync thread
 * in DIR/w<N>.durable for other processes (the control plane's metrics).
 * bucket[i] counts syncs that took at most spool_sync_bound_ns[i] (and more
 * than the bound before it); the last bucket counts the slower ones. */
#define SPOOL_SYNC_BUCKETS 13
extern const uint64_t spool_sync_bound_ns[SPOOL_SYNC_BUCKETS - 1];
struct spool_sync_hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t bucket[SPOOL_SYNC_BUCKETS];
};

/* --- Reading committed messages (control plane, tools, tests) ---------- */

/* A committed message found by spool_scan(). Strings point into storage
 * owned by the scanner and valid only during the callback. */
struct spool_message {
	uint64_t qid;
	unsigned writer;
	struct spool_envelope env;
	const unsigned char *data; /* all message bytes */
	uint64_t len;
	uint64_t off;              /* writer stream offset of its BEGIN record */
};

/*
 * spool_scan - read every committed message in DIR (messages with a valid
 * BEGIN, DATA and END whose length and record count match) in commit
 * order per writer, calling @cb for each; a non-zero return from @cb stops the scan and
 * is returned. Does not modify the directory. Returns 0, the callback's
 * value, or -errno. @rep (may be NULL) gets the same counts as recovery.
 * Suitable for tools and tests: it holds message bytes in memory.
 */
int spool_scan(const char *dir,
	       int (*cb)(const struct spool_message *msg, void *arg),
	       void *arg, struct spool_recovery *rep);

/* --- Tailing a live spool from another process (the control plane) ------
 *
 * The spool owner publishes each writer's durable stream offset in
 * DIR/w<writer>.durable (one shared page, updated by the sync thread after
 * every completed fdatasync). A reader parses only records that end at or
 * below it: everything it hands out is on stable storage and was (or is
 * about to be) acknowledged with 250. The reader never writes to DIR and
 * takes no lock, so the dataplane keeps accepting mail while it runs.
 * Segments of a writer without a .durable file (a spool never opened by
 * this version) are not read.
 */
struct spool_reader;

/* spool_reader_open - a reader of DIR positioned at the start of every
 * writer's oldest segment. Returns it (caller frees with
 * spool_reader_close) or NULL with errno set. */
struct spool_reader *spool_reader_open(const char *dir);

/*
 * spool_reader_poll - call @cb once for every message committed (END
 * record durable) since the previous poll, per writer in commit order.
 * Cheap when nothing changed (one directory listing). Damaged bytes are
 * skipped as in recovery and counted (spool_reader_report). A non-zero
 * return from @cb stops the poll and is returned; that message is not
 * offered again. Returns the number of messages delivered, or -errno.
 */
int spool_reader_poll(struct spool_reader *r,
		      int (*cb)(const struct spool_message *msg, void *arg),
		      void *arg);

/*
 * spool_reader_release - delete the segments nobody needs any more: for
 * each writer w, those that end at or below @keep[w] (SPOOL_MAX_WRITERS
 * entries: the lowest spool_message.off the caller still needs, or
 * UINT64_MAX), that the reader has read completely (no message in it is
 * still being reassembled), and that are not the writer's newest. This is
 * how the control plane frees disk once every recipient of the messages
 * in a segment is final. Returns the number deleted, or -errno.
 */
int spool_reader_release(struct spool_reader *r, const uint64_t *keep);

/* spool_reader_report - records/messages read and bytes skipped so far. */
void spool_reader_report(const struct spool_reader *r, struct spool_recovery *rep);

/* spool_reader_sync_hist - the fdatasync latency histogram summed over the
 * writers this reader has seen (those spool_reader_poll() mapped so far).
 * The files outlive the owner, so the counts keep growing across its
 * restarts (a new spool directory starts from zero). */
void spool_reader_sync_hist(const struct spool_reader *r, struct spool_sync_hist *h);

/* spool_reader_close - free @r. NULL is a no-op. */
void spool_reader_close(struct spool_reader *r);

#endif /* MXEDGE_SPOOL_H */
