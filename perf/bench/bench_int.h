/* Private to perf/bench: the session engine's state, shared by the socket
 * engine (bench_engine.c) and the DPDK engine (bench_dpdk.c) so that both
 * drive the very same SMTP client state machine. A transport supplies
 * struct bench_io (open, send, want_out, release) and feeds the engine
 * connection events through the bench_sess_* calls below; everything
 * SMTP (replies expected, pipelining, BDAT, counting, histograms, the
 * duration/grace bounds) stays in bench_engine.c.
 */
#ifndef MXEDGE_BENCH_INT_H
#define MXEDGE_BENCH_INT_H

#include "bench.h"

#include <pthread.h>
#include <sys/uio.h>

#define LINE_LEN 78                       /* body line incl. CRLF */
#define TAIL_LEN 158                      /* last line: up to 157 bytes */

struct bench_thread;
struct bench_sess;

/* A transport. All calls come from the thread that owns t. */
struct bench_io {
  /* Starts a connection to cfg->target for s: sets s->fd or s->conn and
   * returns 0 (a connected/failed report follows), or returns -errno with
   * nothing left open. */
  int (*open)(struct bench_thread *t, struct bench_sess *s, uint64_t now);
  /* Sends from v[0..n): returns the bytes taken (0 when there is no room:
   * the transport calls bench_sess_flush once there is, if want_out asked
   * for it), or -errno when the connection is dead. */
  long (*send)(struct bench_thread *t, struct bench_sess *s,
               const struct iovec *v, int n);
  /* Asks (on) or stops asking to be told when sending can resume. */
  void (*want_out)(struct bench_thread *t, struct bench_sess *s, bool on);
  /* Lets the connection go: gracefully, or with a reset (abortive) so a
   * failed session leaves no TIME_WAIT behind. Clears nothing in s. */
  void (*release)(struct bench_thread *t, struct bench_sess *s, bool abortive);
};

enum sstate {
  S_FREE = 0,
  S_CONNECTING,
  S_ACTIVE,     /* waiting for replies / writing commands */
  S_HOLD,       /* idle after EHLO (hold mode) */
  S_DRAIN,      /* 221 seen, waiting for the server to close */
  S_BACKOFF,    /* failed; restart after `deadline` */
};

enum expect {
  X_GREET = 1, X_EHLO, X_MAIL, X_RCPT, X_DATA, X_EOD, X_QUIT,
};

struct bench_sess {
  int fd;                        /* socket transport: the socket, else -1 */
  void *conn;                    /* other transports: their connection */
  uint8_t state;
  uint8_t nexp, iexp;            /* expected replies exp[iexp..nexp) */
  uint8_t failed;                /* current transaction already counted */
  uint8_t rcpt_sent, rcpt_ok;
  uint8_t niov, iiov;
  uint8_t eod_on_flush;          /* stamp t_eod when the write completes */
  uint8_t want_out;              /* asked the transport for send space */
  uint8_t opening;               /* counted in thread's `opening` */
  uint8_t chunking;              /* server advertised CHUNKING */
  uint8_t ticket;                /* first message claimed at session start */
  uint8_t exp[BENCH_MAX_RCPTS + 4];
  uint16_t rlen;
  uint32_t msgs_done;
  uint32_t cur_size;
  size_t iov_off;
  uint64_t t_connect, t_eod, deadline;
  struct iovec iov[8];
  char bdat[32];
  char rbuf[512];                /* RFC 5321 §4.5.3.1.5: reply line <= 512 */
};

/* Read-only message material shared by all threads. */
struct bench_shared {
  const struct bench_config *cfg;
  char ehlo[256];
  size_t ehlo_len;
  char mail[256];
  size_t mail_len;
  char rcpts[BENCH_MAX_RCPTS * 260];
  size_t rcpt_off[BENCH_MAX_RCPTS + 1];
  char header[512];
  size_t header_len;
  char *lines;                   /* max size worth of LINE_LEN lines */
  char tail[TAIL_LEN];
  uint32_t weight_total;
  /* tickets and flags, the only shared writable state */
  uint64_t msg_claimed;
  uint64_t sess_claimed;
  int stop;                      /* 1: stop now */
  uint64_t hold_until;           /* hold mode: stop at this time (0: unset) */
  uint64_t t0;
  uint64_t soft_deadline;        /* no new messages or sessions after it */
  uint64_t hard_deadline;        /* soft + grace: everything is closed */
};

struct bench_thread {
  struct bench_shared *g;
  const struct bench_config *cfg;
  unsigned id;
  pthread_t tid;
  int epfd;                      /* socket transport */
  const struct bench_io *io;
  void *io_ctx;                  /* the transport's own state */
  uint64_t next_scan;
  struct bench_sess *s;
  unsigned n;
  unsigned *freelist;
  unsigned nfree;
  unsigned active;               /* sessions with a connection */
  unsigned opening;              /* hold: handshakes in flight */
  unsigned src_rr;
  uint64_t rng;
  uint64_t next_arrival, interval_ns;
  bool arrivals_done;
  uint64_t t_end;
  /* counters read by the progress reporter (single writer, relaxed) */
  uint64_t c_accepted, c_sessions, c_errors, c_held, c_attempted;
  struct bench_result r;
};

/* Allocates the shared message material and nth threads' session tables
 * for cfg (already checked), wires io/io_ctx into every thread and starts
 * the clock (t0, duration and grace deadlines, open-loop schedule).
 * Returns 0 with *gp and *thp owned by the caller (bench_engine_free), or
 * -ENOMEM/-EINVAL. */
int bench_engine_setup(const struct bench_config *cfg, unsigned nth,
                       const struct bench_io *io, void *io_ctx,
                       struct bench_shared **gp, struct bench_thread **thp);

/* Frees what bench_engine_setup made (closing epoll descriptors). */
void bench_engine_free(struct bench_shared *g, struct bench_thread *th, unsigned nth);

/* Fills *res with the merged counts of the first `started` threads and
 * the elapsed time up to the last thread's end. */
void bench_engine_collect(struct bench_shared *g, struct bench_thread *th,
                          unsigned started, struct bench_result *res);

/* Prints one progress line (t seconds into the run) on stderr; last_acc
 * and last_sess carry the previous line's totals for the rates. */
void bench_engine_progress(struct bench_thread *th, unsigned n,
                           const struct bench_config *c, double t,
                           uint64_t *last_acc, uint64_t *last_sess);

/* The engine's bookkeeping for one loop pass at time now: starts sessions
 * (closed loop: every free slot; open loop: due arrivals), times out
 * replies and ends backoffs. Returns false once the thread is done (stop
 * flag, hard deadline, hold over, or all work finished); the caller then
 * calls bench_thread_end. */
bool bench_thread_tick(struct bench_thread *t, uint64_t now);

/* Stamps the thread's end time and releases every connection still open
 * (gracefully). */
void bench_thread_end(struct bench_thread *t);

/* Transport reports. The connection of s completed (connected) or failed
 * with errno err (failed); n new bytes were put at s->rbuf + s->rlen
 * (received; n <= sizeof(s->rbuf) - s->rlen); the peer closed or reset
 * the connection (lost); sending can resume (flush, returns false if the
 * session ended). Each may end the session (s->fd -1, s->conn NULL). */
void bench_sess_connected(struct bench_thread *t, struct bench_sess *s, uint64_t now);
void bench_sess_failed(struct bench_thread *t, struct bench_sess *s, int err, uint64_t now);
void bench_sess_received(struct bench_thread *t, struct bench_sess *s, size_t n, uint64_t now);
void bench_sess_lost(struct bench_thread *t, struct bench_sess *s, uint64_t now);
bool bench_sess_flush(struct bench_thread *t, struct bench_sess *s, uint64_t now);

#endif
