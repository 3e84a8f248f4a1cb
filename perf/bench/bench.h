/* mxedge-bench: SMTP load generator for the mxedge benchmark suite.
 *
 * One public header for the tool's modules (prefix bench_):
 *   bench_conf.c    address policy, target/source and size-list parsing
 *   bench_hist.c    log-linear latency histograms (microseconds)
 *   bench_engine.c  the epoll session engine, one thread per core
 *   bench_report.c  JSON and human-readable reports
 *   bench_main.c    command line
 *
 * The generator only ever connects to loopback, 198.18.0.0/15 (RFC 2544
 * benchmark network) or 2001:db8::/32 (RFC 3849 documentation range); every
 * run is bounded by a hard duration cap. STARTTLS is not supported yet (it
 * comes once mxedge has TLS). See perf/README.md.
 */
#ifndef MXEDGE_BENCH_H
#define MXEDGE_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define BENCH_MAX_SOURCES 64
#define BENCH_MAX_SIZES 16
#define BENCH_MAX_RCPTS 16
#define BENCH_MIN_MSG_SIZE 256        /* room for the fixed header block */
#define BENCH_MAX_MSG_SIZE (64u << 20)
#define BENCH_MAX_PROCS 64            /* hold mode: --procs */

/* ---- Address policy and parsing (bench_conf.c) ------------------------- */

/* Whether a socket address may be used as a target or source.
 * Accepts an AF_INET or AF_INET6 address; returns true only for
 * 127.0.0.0/8, ::1, 198.18.0.0/15 and 2001:db8::/32. */
bool bench_addr_allowed(const struct sockaddr *sa);

/* Parses a numeric "ADDR", "ADDR:PORT", "[V6]" or "[V6]:PORT" (no DNS).
 * Port defaults to default_port when absent (0 for source addresses).
 * Fills *out and *len; returns 0, or -EINVAL for a malformed string. */
int bench_parse_addr(const char *s, uint16_t default_port,
                     struct sockaddr_storage *out, socklen_t *len);

/* One entry of a message size distribution. */
struct bench_size {
  uint32_t bytes;
  uint32_t weight;
};

/* Parses "4096" or "1024:50,4096:40,65536:10" (size[:weight], sizes may
 * carry a k/K or m/M suffix) into sizes[0..*n). Returns 0, or -EINVAL for
 * malformed input, a size outside [BENCH_MIN_MSG_SIZE, BENCH_MAX_MSG_SIZE],
 * a zero total weight or more than BENCH_MAX_SIZES entries. */
int bench_parse_sizes(const char *s, struct bench_size *sizes, unsigned *n);

/* ---- Histograms (bench_hist.c) ----------------------------------------- */

/* Values below 16 have exact buckets; above, 16 sub-buckets per power of
 * two (relative error <= 1/16) up to 2^44 us. */
#define BENCH_HIST_SUB 16
#define BENCH_HIST_MAXEXP 44
#define BENCH_HIST_BUCKETS (BENCH_HIST_SUB + (BENCH_HIST_MAXEXP - 4 + 1) * BENCH_HIST_SUB)

struct bench_hist {
  uint64_t count;
  uint64_t sum;
  uint64_t min;
  uint64_t max;
  uint64_t buckets[BENCH_HIST_BUCKETS];
};

/* Clears a histogram. */
void bench_hist_init(struct bench_hist *h);
/* Records one value (microseconds); never fails, huge values saturate. */
void bench_hist_record(struct bench_hist *h, uint64_t v);
/* Adds src's samples to dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* Returns the value at quantile q in [0,1]: the upper edge of the bucket
 * holding that rank, clamped to [min, max]; 0 for an empty histogram. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);
/* Bucket index for a value, and the inclusive upper edge of a bucket. */
unsigned bench_hist_bucket(uint64_t v);
uint64_t bench_hist_upper(unsigned bucket);

/* ---- Engine (bench_engine.c) ------------------------------------------- */

enum bench_mode {
  BENCH_CLOSED = 0, /* keep `sessions` sessions busy */
  BENCH_OPEN,       /* start sessions at `rate` per second */
  BENCH_HOLD,       /* open `sessions` sessions, EHLO, then keep them idle */
};

struct bench_config {
  enum bench_mode mode;
  struct sockaddr_storage target;
  socklen_t target_len;
  struct sockaddr_storage sources[BENCH_MAX_SOURCES];
  socklen_t source_len[BENCH_MAX_SOURCES];
  unsigned n_sources;
  unsigned threads;
  unsigned sessions;          /* closed: concurrency; open: cap; hold: count */
  double rate;                /* open loop: sessions started per second */
  unsigned msgs_per_session;  /* 0: connect, EHLO, QUIT */
  uint64_t max_messages;      /* 0: until the duration cap */
  uint64_t max_sessions;      /* 0: until the duration cap */
  unsigned rcpts;             /* recipients per message */
  struct bench_size sizes[BENCH_MAX_SIZES];
  unsigned n_sizes;
  bool pipelining;            /* RFC 2920 */
  bool bdat;                  /* RFC 3030 BDAT ... LAST instead of DATA */
  double duration_s;          /* no new messages/sessions after this */
  double grace_s;             /* then in-flight ones may finish; the run's
                                 hard cap is duration_s + grace_s */
  double hold_s;              /* hold mode: seconds to keep all sessions */
  double timeout_s;           /* per reply */
  const char *helo;
  const char *mail_from;
  const char *rcpt_to;        /* "user@domain"; "+N" is inserted for N>1 */
  const char *ready_file;     /* hold mode: created once all are held */
  bool progress;              /* one line per second on stderr */
  bool io_dpdk;               /* run by the DPDK engine (reports say "dpdk") */
  unsigned procs;             /* hold mode: processes (0 or 1: this one) */
  /* Hold mode over several processes (bench_procs.c): set only in the
   * children, NULL otherwise. */
  struct bench_coord *coord;
  unsigned coord_slot;        /* this child's index in coord */
};

/* Run totals, merged over threads. */
struct bench_errors {
  uint64_t connect;           /* connect() failed (see connect_errno) */
  uint64_t connect_errno[140];
  uint64_t timeout;           /* no reply within timeout_s */
  uint64_t disconnect;        /* peer closed or reset mid-session */
  uint64_t protocol;          /* malformed or overlong reply */
  uint64_t reply[1000];       /* unexpected reply codes (first per txn) */
};

struct bench_result {
  double elapsed_s;
  uint64_t sessions_started;
  uint64_t sessions_completed;  /* ended with 221 */
  uint64_t sessions_missed;     /* open loop: arrivals over the cap */
  uint64_t messages_attempted;
  uint64_t messages_accepted;   /* 2xx after end of data */
  uint64_t bytes_accepted;
  uint64_t held_max;            /* hold mode: most sessions idle at once */
  double hold_ready_s;          /* hold mode: time until all were held */
  int stop_signal;              /* SIGINT/SIGTERM that ended the run, or 0 */
  struct bench_errors err;
  struct bench_hist connect_220;  /* connect() -> 220 greeting */
  struct bench_hist eod_250;      /* last body byte written -> 250 */
};

/* Checks a configuration for consistency (modes, counts, addresses).
 * Returns 0, or -EINVAL with a message in err (errlen bytes). */
int bench_config_check(const struct bench_config *cfg, char *err, size_t errlen);

/* Runs the load as configured until the counts are done, the duration cap
 * passes, or SIGINT/SIGTERM arrives (the caller blocks those signals in all
 * threads before calling; bench_run waits for them). Fills *res (caller
 * owned). Returns 0, or -errno when the run could not start (threads,
 * epoll, file limits). */
int bench_run(const struct bench_config *cfg, struct bench_result *res);

/* Adds src's counts and histograms to dst (dst->elapsed_s becomes the
 * larger of the two; hold_ready_s and stop_signal are left to the caller). */
void bench_result_add(struct bench_result *dst, const struct bench_result *src);

/* ---- Hold mode over several processes (bench_procs.c) ------------------ */

/* Shared (MAP_SHARED) between the coordinating parent and its children.
 * Child i writes held[i] (sessions it holds now) and, at its end, res[i]
 * and rc[i]; the parent writes hold_until (CLOCK_MONOTONIC ns, once every
 * child's sessions are up, so all hold for the same hold_s) and stop. */
struct bench_coord {
  uint64_t held[BENCH_MAX_PROCS];
  uint64_t hold_until;
  uint32_t stop;
  int rc[BENCH_MAX_PROCS];
  struct bench_result res[BENCH_MAX_PROCS];
};

/* How many processes a hold run of cfg->sessions needs: 1 when this
 * process may open sessions + 64 descriptors (raising its soft limit, or
 * the hard one where allowed), else enough that each stays under the
 * open-file hard limit; 0 when that would take more than BENCH_MAX_PROCS. */
unsigned bench_procs_needed(const struct bench_config *cfg);

/* Runs a hold-mode load split over procs child processes (fork; the
 * sessions are divided evenly, each child runs bench_run with its share
 * and cfg->threads threads). The parent reports progress, writes the ready
 * file once all sessions of all children are held, then lets them hold
 * hold_s, and forwards SIGINT/SIGTERM (blocked by the caller, as for
 * bench_run) to them. Fills *res with the merged result (caller owned).
 * Returns 0, -EINVAL for a mode other than hold or procs outside
 * 1..BENCH_MAX_PROCS, or -errno when the shared memory or a fork failed
 * (children already started are stopped and reaped). */
int bench_run_procs(const struct bench_config *cfg, unsigned procs,
                    struct bench_result *res);

/* ---- SYN flood (bench_flood.c) ----------------------------------------- */

/* Sends bare TCP SYNs to cfg->target (IPv4 only) from random sources in
 * 198.18.0.0/15, at cfg->rate packets/s, at most cfg->max_messages of them,
 * stopping at cfg->duration_s. Needs CAP_NET_RAW. Sets *sent and
 * *elapsed_s; returns 0, -EINVAL for an IPv6 target or a missing rate or
 * count, or -errno from the raw socket. */
int bench_flood(const struct bench_config *cfg, uint64_t *sent, double *elapsed_s);

/* ---- DPDK engine (bench_dpdk.c, only in mxedge-bench-dpdk) ------------- */

enum bench_dpdk_kind { BENCH_DPDK_AF_XDP = 1, BENCH_DPDK_TAP };

struct bench_dpdk_config {
  enum bench_dpdk_kind kind;
  char ifname[64];            /* af_xdp: an existing interface; tap: created */
  struct sockaddr_storage local;  /* the port's own address (port unused) */
  socklen_t local_len;
  uint8_t plen;               /* its prefix length: the target is on-link */
  unsigned mem_mb;            /* EAL memory without hugepages (0: 256) */
  unsigned lcore;             /* the one lcore the engine runs on */
  unsigned idle_sleep_us;     /* nap base when idle (0: pure polling) */
  bool stats;                 /* port and TCP counters on stderr at the end */
};

/* Parses "af_xdp:IFACE" or "tap:IFACE" into dc->kind/ifname. Returns 0 or
 * -EINVAL. */
int bench_dpdk_parse_port(const char *s, struct bench_dpdk_config *dc);

/* Parses "ADDR/PREFIX" (IPv4 or IPv6) into dc->local/local_len/plen.
 * Returns 0 or -EINVAL. */
int bench_dpdk_parse_addr(const char *s, struct bench_dpdk_config *dc);

/* bench_config_check plus what the DPDK engine needs: a port, an allowed
 * --addr of the target's family, closed or open loop, no --source, at most
 * 28000 sessions. Returns 0, or -EINVAL with a message in err. */
int bench_dpdk_check(const struct bench_config *cfg, const struct bench_dpdk_config *dc,
                     char *err, size_t errlen);

/* Runs cfg's load through DPDK port dc with mxedge's TCP stack on one
 * lcore (EAL is started and cleaned up here, without hugepages; call once
 * per process). Checks everything (bench_dpdk_check) before EAL starts, so
 * a refused address sends nothing. SIGINT/SIGTERM must be blocked by the
 * caller; one stops the run early (res->stop_signal). Fills *res (caller
 * owned). Returns 0, or -errno when the run could not start (EAL, port,
 * memory; a message is on stderr). */
int bench_dpdk_run(const struct bench_config *cfg, const struct bench_dpdk_config *dc,
                   struct bench_result *res);

/* ---- Reports (bench_report.c) ------------------------------------------ */

/* Writes the result as one JSON object (with the configuration) to f.
 * Returns 0 or -EIO. */
int bench_report_json(FILE *f, const struct bench_config *cfg,
                      const struct bench_result *res);
/* Writes a human-readable summary to f. */
void bench_report_text(FILE *f, const struct bench_config *cfg,
                       const struct bench_result *res);
/* Formats an address as "1.2.3.4:25" or "[2001:db8::1]:25" into buf. */
const char *bench_addr_str(const struct sockaddr *sa, char *buf, size_t len);

#endif
