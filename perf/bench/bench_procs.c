/* Hold mode over several processes.
 *
 * Every idle session costs the client one descriptor, and RLIMIT_NOFILE is
 * per process: where root may not raise the hard limit (a container
 * without CAP_SYS_RESOURCE: 20000 here), one process cannot hold 100 k
 * sessions. The parent forks children, gives each an even share, and
 * coordinates them through a MAP_SHARED struct bench_coord: it watches
 * their held counts, and once all sessions of all children are up it sets
 * one hold_until for all of them, so the server sees every session at
 * once for the whole hold time. Source addresses are used by every child
 * (IP_BIND_ADDRESS_NO_PORT lets the kernel pick a free port per 4-tuple
 * across processes, so each source brings its own port range).
 */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ull
#define NOFILE_SPARE 64   /* descriptors besides the sessions (as bench_run) */

static uint64_t mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

unsigned bench_procs_needed(const struct bench_config *cfg)
{
  struct rlimit rl;
  uint64_t need = (uint64_t)cfg->sessions + NOFILE_SPARE, per;

  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return 1;   /* bench_run will say why it cannot raise the limit */
  if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need)
    return 1;
  /* Root with CAP_SYS_RESOURCE may raise the hard limit: then one
   * process does (bench_run raises the soft limit the same way). */
  rl.rlim_cur = rl.rlim_max = need;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
    return 1;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max <= NOFILE_SPARE)
    return 0;
  per = rl.rlim_max - NOFILE_SPARE;
  per = (cfg->sessions + per - 1) / per;
  return per > BENCH_MAX_PROCS ? 0 : (unsigned)per;
}

/* The child: run its share and leave the result in the shared page. */
static void child_main(const struct bench_config *cfg, struct bench_coord *k,
                       unsigned slot, unsigned share)
{
  struct bench_config c = *cfg;
  int rc;

  c.sessions = share;
  c.coord = k;
  c.coord_slot = slot;
  c.ready_file = NULL;   /* the parent writes it, once for all */
  c.progress = false;    /* the parent reports the sum */
  rc = bench_run(&c, &k->res[slot]);
  __atomic_store_n(&k->rc[slot], rc, __ATOMIC_RELEASE);
  fflush(NULL);
  _exit(rc < 0 ? 1 : 0);
}

static uint64_t held_sum(struct bench_coord *k, unsigned n)
{
  uint64_t h = 0;
  for (unsigned i = 0; i < n; i++)
    h += __atomic_load_n(&k->held[i], __ATOMIC_RELAXED);
  return h;
}

static void signal_all(const pid_t *pids, unsigned n, int sig)
{
  for (unsigned i = 0; i < n; i++)
    if (pids[i] > 0)
      kill(pids[i], sig);
}

int bench_run_procs(const struct bench_config *cfg, unsigned procs,
                    struct bench_result *res)
{
  struct bench_coord *k;
  pid_t pids[BENCH_MAX_PROCS];
  unsigned started = 0, alive = 0;
  int rc = 0, failed_rc = 0;
  sigset_t sigs;
  uint64_t t0, hard, next_progress;

  memset(res, 0, sizeof(*res));
  if (cfg->mode != BENCH_HOLD || procs < 1 || procs > BENCH_MAX_PROCS ||
      procs > cfg->sessions)
    return -EINVAL;
  k = mmap(NULL, sizeof(*k), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (k == MAP_FAILED)
    return -errno;
  memset(k, 0, sizeof(*k));
  memset(pids, 0, sizeof(pids));
  fflush(NULL);   /* nothing buffered may be written twice */
  t0 = mono_ns();
  /* The children stop themselves at duration + grace; the parent waits a
   * little longer for their reports, then kills what is left. */
  hard = t0 + (uint64_t)((cfg->duration_s + cfg->grace_s + 5) * NS_PER_S);
  for (unsigned i = 0; i < procs; i++) {
    unsigned share = cfg->sessions / procs + (i < cfg->sessions % procs);
    pid_t p = fork();
    if (p < 0) {
      rc = -errno;
      break;
    }
    if (p == 0)
      child_main(cfg, k, i, share);
    pids[i] = p;
    started++;
    alive++;
  }
  if (rc < 0) {
    fprintf(stderr, "mxedge-bench: fork failed after %u processes: %s\n",
            started, strerror(-rc));
    __atomic_store_n(&k->stop, 1, __ATOMIC_RELAXED);
  }

  /* The caller blocked SIGINT/SIGTERM (inherited by the children, which
   * wait for them in bench_run): here they are forwarded. */
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  next_progress = t0 + NS_PER_S;
  while (alive > 0) {
    struct timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
    int sig = sigtimedwait(&sigs, NULL, &ts), st;
    uint64_t now = mono_ns();
    pid_t p;

    if (sig == SIGINT || sig == SIGTERM) {
      fprintf(stderr, "mxedge-bench: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
      res->stop_signal = sig;
      __atomic_store_n(&k->stop, 1, __ATOMIC_RELAXED);
      signal_all(pids, started, sig);
    }
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
      for (unsigned i = 0; i < started; i++) {
        if (pids[i] != p)
          continue;
        pids[i] = -1;
        alive--;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
          int crc = __atomic_load_n(&k->rc[i], __ATOMIC_ACQUIRE);
          if (failed_rc == 0)
            failed_rc = crc < 0 ? crc : -ECHILD;
        }
        /* One child gone before all were held: the count can never be
         * reached, so the others need not wait for their duration cap. */
        if (__atomic_load_n(&k->hold_until, __ATOMIC_RELAXED) == 0)
          __atomic_store_n(&k->stop, 1, __ATOMIC_RELAXED);
      }
    }
    if (res->hold_ready_s == 0 && rc == 0 && held_sum(k, started) >= cfg->sessions) {
      res->hold_ready_s = (double)(now - t0) / NS_PER_S;
      __atomic_store_n(&k->hold_until, now + (uint64_t)(cfg->hold_s * NS_PER_S),
                       __ATOMIC_RELAXED);
      fprintf(stderr, "mxedge-bench: holding %u sessions in %u processes after %.2fs\n",
              cfg->sessions, procs, res->hold_ready_s);
      if (cfg->ready_file) {
        FILE *f = fopen(cfg->ready_file, "w");
        if (f) {
          fprintf(f, "%u\n", cfg->sessions);
          fclose(f);
        }
      }
    }
    if (cfg->progress && now >= next_progress) {
      fprintf(stderr, "  %6.1fs  held %llu/%u  (%u processes)\n", (double)(now - t0) / NS_PER_S,
              (unsigned long long)held_sum(k, started), cfg->sessions, alive);
      next_progress += NS_PER_S;
    }
    if (now >= hard && alive > 0) {
      signal_all(pids, started, SIGKILL);
      hard = UINT64_MAX;
    }
  }
  /* Each child's elapsed time is from its own start; the run's is the
   * longest (bench_result_add keeps the larger). */
  for (unsigned i = 0; i < started; i++)
    bench_result_add(res, &k->res[i]);
  munmap(k, sizeof(*k));
  if (rc == 0)
    rc = failed_rc;
  return rc;
}
