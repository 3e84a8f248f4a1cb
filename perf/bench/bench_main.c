/* mxedge-bench command line; built twice: mxedge-bench (kernel sockets)
 * and, with BENCH_DPDK defined, mxedge-bench-dpdk (the same options plus
 * the DPDK port ones, run by bench_dpdk.c). Exit status: 0 when the run finished (read the
 * report for what it measured), 1 when it could not run, 2 for bad usage;
 * stopped by SIGINT/SIGTERM it writes its report and then dies of that
 * signal. */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
  fprintf(f,
"usage: mxedge-bench --target ADDR[:PORT] [options]\n"
"SMTP load generator; targets only loopback, 198.18.0.0/15 and 2001:db8::/32.\n"
"Modes:\n"
"  --closed             keep --sessions sessions busy (default)\n"
"  --open --rate R      start R sessions per second (open loop); --sessions caps\n"
"                       how many run at once, arrivals over it count as missed\n"
"  --hold               open --sessions sessions, EHLO, keep them idle for\n"
"                       --hold-seconds after all are up (memory per session)\n"
"Load:\n"
"  --sessions N         concurrent sessions (default 20)\n"
"  --per-session N      messages per session, 0 = connect/EHLO/QUIT (default 1)\n"
"  --count N            stop after N messages in total (default: duration only)\n"
"  --max-sessions N     stop after N sessions in total\n"
"  --size SPEC          message size in bytes, or a distribution\n"
"                       'size:weight,...' e.g. 1k:50,4k:40,64k:10 (default 4096)\n"
"  --rcpts N            recipients per message (default 1)\n"
"  --pipelining         send MAIL/RCPT/DATA in one write (RFC 2920)\n"
"  --bdat               BDAT n LAST instead of DATA (RFC 3030)\n"
"  --source ADDR        bind to this local address; repeat to round-robin\n"
"  --threads N          threads, one epoll loop each (default: online CPUs)\n"
"  --procs N            hold mode: split the sessions over N processes (default:\n"
"                       as many as the open-file hard limit needs, see README)\n"
"Bounds and output:\n"
"  --duration S         load time in seconds (default 30); then sessions in\n"
"                       flight finish their message and QUIT, within\n"
"  --grace S            seconds (default 5): duration+grace is a hard cap\n"
"  --hold-seconds S     hold mode: how long to keep the sessions (default 5)\n"
"  --timeout S          per-reply timeout (default 30)\n"
"  --helo NAME --from ADDR --to ADDR   envelope (defaults bench.test names)\n"
"  --json FILE          write the JSON report to FILE ('-' for stdout)\n"
"  --ready-file FILE    hold mode: create FILE once all sessions are held\n"
"  --progress/--quiet   one progress line per second on stderr (default: if a tty)\n"
"STARTTLS is not supported yet.\n"
"DPDK engine (mxedge-bench-dpdk, or --io dpdk there): mxedge's TCP stack on one\n"
"DPDK port and lcore, without hugepages; closed and open loop:\n"
"  --io kernel|dpdk     which engine (mxedge-bench: kernel; -dpdk: dpdk)\n"
"  --port af_xdp:IFACE|tap:IFACE   the port (af_xdp on an existing interface,\n"
"                       e.g. a veth; tap creates IFACE)\n"
"  --addr ADDR/PREFIX   the port's own address; the target must be on-link\n"
"                       (its MAC comes by ARP/NDP); sessions use ports 32768-61000\n"
"  --mem MB             EAL memory (default 256)   --lcore N (default 0)\n"
"  --idle-sleep US      nap base when idle, 0 = pure polling (default 20)\n"
"  --dpdk-stats         port and TCP counters on stderr at the end\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
  char *end;
  unsigned long long v;

  if (!*s || *s == '-')
    return -EINVAL;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno || *end)
    return -EINVAL;
  *out = v;
  return 0;
}

static int parse_double(const char *s, double *out)
{
  char *end;
  double v;

  errno = 0;
  v = strtod(s, &end);
  if (errno || *end || end == s || !(v >= 0))
    return -EINVAL;
  *out = v;
  return 0;
}

enum {
  O_CLOSED = 256, O_OPEN, O_HOLD, O_RATE, O_SESSIONS, O_PER, O_COUNT, O_MAXS,
  O_SIZE, O_RCPTS, O_PIPE, O_BDAT, O_SOURCE, O_THREADS, O_DUR, O_HOLDS,
  O_TIMEOUT, O_HELO, O_FROM, O_TO, O_JSON, O_READY, O_PROGRESS, O_QUIET,
  O_TARGET, O_HELP, O_GRACE, O_FLOOD, O_PROCS, O_IO, O_PORT, O_ADDR, O_MEM,
  O_LCORE, O_IDLE, O_DSTATS,
};

int main(int argc, char **argv)
{
  static const struct option opts[] = {
    {"closed", no_argument, 0, O_CLOSED}, {"open", no_argument, 0, O_OPEN},
    {"hold", no_argument, 0, O_HOLD}, {"syn-flood", no_argument, 0, O_FLOOD}, {"rate", required_argument, 0, O_RATE},
    {"sessions", required_argument, 0, O_SESSIONS},
    {"per-session", required_argument, 0, O_PER},
    {"count", required_argument, 0, O_COUNT},
    {"max-sessions", required_argument, 0, O_MAXS},
    {"size", required_argument, 0, O_SIZE}, {"rcpts", required_argument, 0, O_RCPTS},
    {"pipelining", no_argument, 0, O_PIPE}, {"bdat", no_argument, 0, O_BDAT},
    {"source", required_argument, 0, O_SOURCE},
    {"threads", required_argument, 0, O_THREADS},
    {"procs", required_argument, 0, O_PROCS},
    {"duration", required_argument, 0, O_DUR},
    {"hold-seconds", required_argument, 0, O_HOLDS},
    {"grace", required_argument, 0, O_GRACE},
    {"timeout", required_argument, 0, O_TIMEOUT},
    {"helo", required_argument, 0, O_HELO}, {"from", required_argument, 0, O_FROM},
    {"to", required_argument, 0, O_TO}, {"json", required_argument, 0, O_JSON},
    {"ready-file", required_argument, 0, O_READY},
    {"progress", no_argument, 0, O_PROGRESS}, {"quiet", no_argument, 0, O_QUIET},
    {"target", required_argument, 0, O_TARGET}, {"help", no_argument, 0, O_HELP},
    {"io", required_argument, 0, O_IO}, {"port", required_argument, 0, O_PORT},
    {"addr", required_argument, 0, O_ADDR}, {"mem", required_argument, 0, O_MEM},
    {"lcore", required_argument, 0, O_LCORE}, {"idle-sleep", required_argument, 0, O_IDLE},
    {"dpdk-stats", no_argument, 0, O_DSTATS},
    {0, 0, 0, 0},
  };
  static struct bench_config cfg;
  static struct bench_result res;
  static struct bench_dpdk_config dc = { .mem_mb = 256, .idle_sleep_us = 20 };
  bool dpdk_opts = false;
  const char *json = NULL, *target = NULL;
  bool flood = false;
  char err[256];
  uint64_t v;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int c, rc;
  sigset_t sigs;

  cfg.mode = BENCH_CLOSED;
  cfg.sessions = 20;
  cfg.msgs_per_session = 1;
  cfg.rcpts = 1;
  cfg.sizes[0].bytes = 4096;
  cfg.sizes[0].weight = 1;
  cfg.n_sizes = 1;
  cfg.duration_s = 30;
  cfg.hold_s = 5;
  cfg.grace_s = 5;
  cfg.timeout_s = 30;
  cfg.threads = ncpu > 0 ? (unsigned)ncpu : 1;
  cfg.helo = "mxedge-bench.bench.test";
  cfg.mail_from = "load@bench.test";
  cfg.rcpt_to = "rcpt@bench.test";
  cfg.progress = isatty(STDERR_FILENO);
#ifdef BENCH_DPDK
  cfg.io_dpdk = true;
#endif

#define BAD(...) do { fprintf(stderr, "mxedge-bench: " __VA_ARGS__); fputc('\n', stderr); return 2; } while (0)
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case O_CLOSED: cfg.mode = BENCH_CLOSED; break;
    case O_OPEN: cfg.mode = BENCH_OPEN; break;
    case O_HOLD: cfg.mode = BENCH_HOLD; break;
    case O_FLOOD: flood = true; break;
    case O_RATE:
      if (parse_double(optarg, &cfg.rate) < 0) BAD("bad --rate '%s'", optarg);
      break;
    case O_SESSIONS:
      if (parse_u64(optarg, &v) < 0 || v > 4000000) BAD("bad --sessions '%s'", optarg);
      cfg.sessions = (unsigned)v;
      break;
    case O_PER:
      if (parse_u64(optarg, &v) < 0 || v > 1000000) BAD("bad --per-session '%s'", optarg);
      cfg.msgs_per_session = (unsigned)v;
      break;
    case O_COUNT:
      if (parse_u64(optarg, &cfg.max_messages) < 0) BAD("bad --count '%s'", optarg);
      break;
    case O_MAXS:
      if (parse_u64(optarg, &cfg.max_sessions) < 0) BAD("bad --max-sessions '%s'", optarg);
      break;
    case O_SIZE:
      if (bench_parse_sizes(optarg, cfg.sizes, &cfg.n_sizes) < 0)
        BAD("bad --size '%s': want BYTES or BYTES:WEIGHT,... with sizes in [%d, %u] "
            "(k/m suffixes allowed), at most %d entries", optarg, BENCH_MIN_MSG_SIZE,
            BENCH_MAX_MSG_SIZE, BENCH_MAX_SIZES);
      break;
    case O_RCPTS:
      if (parse_u64(optarg, &v) < 0 || v > BENCH_MAX_RCPTS) BAD("bad --rcpts '%s'", optarg);
      cfg.rcpts = (unsigned)v;
      break;
    case O_PIPE: cfg.pipelining = true; break;
    case O_BDAT: cfg.bdat = true; break;
    case O_SOURCE:
      if (cfg.n_sources == BENCH_MAX_SOURCES) BAD("at most %d --source addresses", BENCH_MAX_SOURCES);
      if (bench_parse_addr(optarg, 0, &cfg.sources[cfg.n_sources],
                           &cfg.source_len[cfg.n_sources]) < 0)
        BAD("bad --source '%s': want a numeric IPv4 or IPv6 address", optarg);
      cfg.n_sources++;
      break;
    case O_THREADS:
      if (parse_u64(optarg, &v) < 0 || v > 256) BAD("bad --threads '%s'", optarg);
      cfg.threads = (unsigned)v;
      break;
    case O_PROCS:
      if (parse_u64(optarg, &v) < 0 || v < 1 || v > BENCH_MAX_PROCS)
        BAD("bad --procs '%s': want 1..%d", optarg, BENCH_MAX_PROCS);
      cfg.procs = (unsigned)v;
      break;
    case O_DUR:
      if (parse_double(optarg, &cfg.duration_s) < 0) BAD("bad --duration '%s'", optarg);
      break;
    case O_GRACE:
      if (parse_double(optarg, &cfg.grace_s) < 0 || cfg.grace_s > 600)
        BAD("bad --grace '%s': want 0..600 seconds", optarg);
      break;
    case O_HOLDS:
      if (parse_double(optarg, &cfg.hold_s) < 0) BAD("bad --hold-seconds '%s'", optarg);
      break;
    case O_TIMEOUT:
      if (parse_double(optarg, &cfg.timeout_s) < 0) BAD("bad --timeout '%s'", optarg);
      break;
    case O_HELO: cfg.helo = optarg; break;
    case O_FROM: cfg.mail_from = optarg; break;
    case O_TO: cfg.rcpt_to = optarg; break;
    case O_JSON: json = optarg; break;
    case O_READY: cfg.ready_file = optarg; break;
    case O_PROGRESS: cfg.progress = true; break;
    case O_QUIET: cfg.progress = false; break;
    case O_TARGET: target = optarg; break;
    case O_IO:
      if (strcmp(optarg, "kernel") == 0)
        cfg.io_dpdk = false;
      else if (strcmp(optarg, "dpdk") == 0)
        cfg.io_dpdk = true;
      else
        BAD("bad --io '%s': want kernel or dpdk", optarg);
      break;
    case O_PORT:
      if (bench_dpdk_parse_port(optarg, &dc) < 0)
        BAD("bad --port '%s': want af_xdp:IFACE or tap:IFACE", optarg);
      dpdk_opts = true;
      break;
    case O_ADDR:
      if (bench_dpdk_parse_addr(optarg, &dc) < 0)
        BAD("bad --addr '%s': want ADDR/PREFIX", optarg);
      dpdk_opts = true;
      break;
    case O_MEM:
      if (parse_u64(optarg, &v) < 0 || v < 64 || v > 65536) BAD("bad --mem '%s': want 64..65536 MB", optarg);
      dc.mem_mb = (unsigned)v;
      dpdk_opts = true;
      break;
    case O_LCORE:
      if (parse_u64(optarg, &v) < 0 || v > 1023) BAD("bad --lcore '%s'", optarg);
      dc.lcore = (unsigned)v;
      dpdk_opts = true;
      break;
    case O_IDLE:
      if (parse_u64(optarg, &v) < 0 || v > 10000) BAD("bad --idle-sleep '%s': want 0..10000 us", optarg);
      dc.idle_sleep_us = (unsigned)v;
      dpdk_opts = true;
      break;
    case O_DSTATS: dc.stats = true; dpdk_opts = true; break;
    case O_HELP: case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc)
    BAD("unexpected argument '%s' (see --help)", argv[optind]);
  if (!target)
    BAD("--target ADDR[:PORT] is required (see --help)");
  if (bench_parse_addr(target, 25, &cfg.target, &cfg.target_len) < 0)
    BAD("bad --target '%s': want a numeric ADDR[:PORT] or [V6ADDR]:PORT", target);
#ifndef BENCH_DPDK
  if (cfg.io_dpdk)
    BAD("--io dpdk: this build has no DPDK engine; run mxedge-bench-dpdk");
#endif
  if (dpdk_opts && !cfg.io_dpdk)
    BAD("--port/--addr/--mem/--lcore/--idle-sleep/--dpdk-stats are for --io dpdk");
  if (cfg.io_dpdk) {
    if (flood)
      BAD("--syn-flood uses raw sockets: run it with --io kernel");
    cfg.threads = 1;   /* one lcore */
    if (bench_dpdk_check(&cfg, &dc, err, sizeof(err)) < 0)
      BAD("%s", err);
  }
  if (bench_config_check(&cfg, err, sizeof(err)) < 0)
    BAD("%s", err);
  if (flood && (cfg.target.ss_family != AF_INET || !(cfg.rate > 0) || cfg.max_messages == 0))
    BAD("--syn-flood needs an IPv4 --target, --rate R and --count N");
  if (cfg.procs && (cfg.mode != BENCH_HOLD || flood))
    BAD("--procs is for --hold only");
  if (cfg.procs > cfg.sessions)
    BAD("--procs %u is more than --sessions %u", cfg.procs, cfg.sessions);
  if (cfg.mode == BENCH_HOLD && !flood && cfg.procs == 0) {
    /* Each held session is a descriptor, and the limit is per process. */
    cfg.procs = bench_procs_needed(&cfg);
    if (cfg.procs == 0)
      BAD("cannot hold %u sessions: the open-file hard limit (ulimit -Hn) would "
          "need more than %d processes", cfg.sessions, BENCH_MAX_PROCS);
  }
#undef BAD

  if (flood) {
    uint64_t sent;
    double secs;
    rc = bench_flood(&cfg, &sent, &secs);
    if (rc < 0) {
      fprintf(stderr, "mxedge-bench: SYN flood failed after %llu packets: %s\n",
              (unsigned long long)sent, strerror(-rc));
      return 1;
    }
    printf("mxedge-bench %s: SYN flood against %s: %llu SYNs in %.2f s (%.0f/s)\n",
           MXEDGE_VERSION, target, (unsigned long long)sent, secs, secs > 0 ? sent / secs : 0.0);
    if (json) {
      FILE *f = strcmp(json, "-") == 0 ? stdout : fopen(json, "w");
      if (!f) {
        fprintf(stderr, "mxedge-bench: cannot write %s: %s\n", json, strerror(errno));
        return 1;
      }
      fprintf(f, "{\"tool\": \"mxedge-bench\", \"mode\": \"syn-flood\", \"rate\": %.1f, "
              "\"count\": %llu, \"sent\": %llu, \"elapsed_s\": %.6f}\n", cfg.rate,
              (unsigned long long)cfg.max_messages, (unsigned long long)sent, secs);
      if (f != stdout && fclose(f) != 0)
        return 1;
    }
    return 0;
  }

  /* Every thread inherits this mask; bench_run collects the signals. */
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

#ifdef BENCH_DPDK
  if (cfg.io_dpdk)
    rc = bench_dpdk_run(&cfg, &dc, &res);
  else
#endif
  if (cfg.procs > 1)
    rc = bench_run_procs(&cfg, cfg.procs, &res);
  else
    rc = bench_run(&cfg, &res);
  if (rc < 0) {
    fprintf(stderr, "mxedge-bench: run failed: %s\n", strerror(-rc));
    return 1;
  }
  bench_report_text(stdout, &cfg, &res);
  if (json) {
    FILE *f = strcmp(json, "-") == 0 ? stdout : fopen(json, "w");
    if (!f) {
      fprintf(stderr, "mxedge-bench: cannot write %s: %s\n", json, strerror(errno));
      return 1;
    }
    rc = bench_report_json(f, &cfg, &res);
    if (f != stdout && fclose(f) != 0)
      rc = -EIO;
    if (rc < 0) {
      fprintf(stderr, "mxedge-bench: writing %s failed\n", json);
      return 1;
    }
  }
  if (res.stop_signal) {
    /* Interrupted: the report is out; now die of the signal, so a calling
     * shell sees the interrupt and stops too (instead of taking it as
     * handled and going on with its next command). */
    fflush(NULL);
    signal(res.stop_signal, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    raise(res.stop_signal);
    return 128 + res.stop_signal;
  }
  return 0;
}
