/* JSON and human-readable reports of a mxedge-bench run. Every string
 * written here comes from the program or from bench_config_check'ed
 * options (no quotes, spaces or control characters), so none needs JSON
 * escaping beyond what json_str does. */
#include "bench.h"

#include <errno.h>
#include <string.h>

static const char *mode_name(enum bench_mode m)
{
  switch (m) {
  case BENCH_CLOSED: return "closed";
  case BENCH_OPEN: return "open";
  case BENCH_HOLD: return "hold";
  }
  return "?";
}

static void json_str(FILE *f, const char *s)
{
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      fprintf(f, "\\u%04x", (unsigned char)*s);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

static double rate(uint64_t n, double s)
{
  return s > 0 ? (double)n / s : 0;
}

static void json_hist(FILE *f, const char *name, const struct bench_hist *h, bool last)
{
  fprintf(f, "    \"%s\": {\"count\": %llu, \"min\": %llu, \"mean\": %.1f, "
          "\"p50\": %llu, \"p90\": %llu, \"p99\": %llu, \"p999\": %llu, \"max\": %llu,\n"
          "      \"buckets\": [", name, (unsigned long long)h->count,
          (unsigned long long)h->min, h->count ? (double)h->sum / (double)h->count : 0.0,
          (unsigned long long)bench_hist_quantile(h, 0.50),
          (unsigned long long)bench_hist_quantile(h, 0.90),
          (unsigned long long)bench_hist_quantile(h, 0.99),
          (unsigned long long)bench_hist_quantile(h, 0.999),
          (unsigned long long)h->max);
  /* Non-empty buckets as [upper edge us, count], for CDF plots. */
  bool first = true;
  for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
    if (!h->buckets[i])
      continue;
    fprintf(f, "%s[%llu, %llu]", first ? "" : ", ",
            (unsigned long long)bench_hist_upper(i), (unsigned long long)h->buckets[i]);
    first = false;
  }
  fprintf(f, "]}%s\n", last ? "" : ",");
}

int bench_report_json(FILE *f, const struct bench_config *c, const struct bench_result *r)
{
  char a[80];
  bool first;

  fprintf(f, "{\n  \"tool\": \"mxedge-bench\",\n  \"version\": \"%s\",\n", MXEDGE_VERSION);
  fprintf(f, "  \"config\": {\"mode\": \"%s\", \"io\": \"%s\", \"target\": ",
          mode_name(c->mode), c->io_dpdk ? "dpdk" : "kernel");
  json_str(f, bench_addr_str((const struct sockaddr *)&c->target, a, sizeof(a)));
  fprintf(f, ", \"sources\": [");
  for (unsigned i = 0; i < c->n_sources; i++) {
    if (i)
      fputs(", ", f);
    json_str(f, bench_addr_str((const struct sockaddr *)&c->sources[i], a, sizeof(a)));
  }
  fprintf(f, "], \"threads\": %u, \"sessions\": %u, \"rate\": %.3f, "
          "\"messages_per_session\": %u, \"max_messages\": %llu, \"max_sessions\": %llu, "
          "\"rcpts\": %u, \"pipelining\": %s, \"bdat\": %s, \"duration_cap_s\": %.3f, "
          "\"grace_s\": %.3f, \"hold_s\": %.3f, \"timeout_s\": %.3f, \"sizes\": [",
          c->threads, c->sessions, c->rate, c->msgs_per_session,
          (unsigned long long)c->max_messages, (unsigned long long)c->max_sessions,
          c->rcpts, c->pipelining ? "true" : "false", c->bdat ? "true" : "false",
          c->duration_s, c->grace_s, c->hold_s, c->timeout_s);
  for (unsigned i = 0; i < c->n_sizes; i++)
    fprintf(f, "%s{\"bytes\": %u, \"weight\": %u}", i ? ", " : "",
            c->sizes[i].bytes, c->sizes[i].weight);
  fprintf(f, "]},\n");
  fprintf(f, "  \"elapsed_s\": %.6f,\n", r->elapsed_s);
  fprintf(f, "  \"sessions_started\": %llu,\n  \"sessions_completed\": %llu,\n"
          "  \"sessions_missed\": %llu,\n  \"messages_attempted\": %llu,\n"
          "  \"messages_accepted\": %llu,\n  \"bytes_accepted\": %llu,\n",
          (unsigned long long)r->sessions_started, (unsigned long long)r->sessions_completed,
          (unsigned long long)r->sessions_missed, (unsigned long long)r->messages_attempted,
          (unsigned long long)r->messages_accepted, (unsigned long long)r->bytes_accepted);
  fprintf(f, "  \"accepted_per_s\": %.2f,\n  \"sessions_per_s\": %.2f,\n",
          rate(r->messages_accepted, r->elapsed_s), rate(r->sessions_completed, r->elapsed_s));
  fprintf(f, "  \"held_max\": %llu,\n  \"hold_ready_s\": %.3f,\n  \"procs\": %u,\n",
          (unsigned long long)r->held_max, r->hold_ready_s, c->procs > 1 ? c->procs : 1);
  fprintf(f, "  \"errors\": {\"connect\": %llu, \"timeout\": %llu, \"disconnect\": %llu, "
          "\"protocol\": %llu,\n    \"connect_errno\": {",
          (unsigned long long)r->err.connect, (unsigned long long)r->err.timeout,
          (unsigned long long)r->err.disconnect, (unsigned long long)r->err.protocol);
  first = true;
  for (size_t k = 0; k < sizeof(r->err.connect_errno) / sizeof(uint64_t); k++) {
    if (!r->err.connect_errno[k])
      continue;
    const char *nm = strerrorname_np((int)k);
    fprintf(f, "%s\"%s\": %llu", first ? "" : ", ", nm ? nm : "E?",
            (unsigned long long)r->err.connect_errno[k]);
    first = false;
  }
  fprintf(f, "},\n    \"replies\": {");
  first = true;
  for (int k = 0; k < 1000; k++) {
    if (!r->err.reply[k])
      continue;
    fprintf(f, "%s\"%d\": %llu", first ? "" : ", ", k, (unsigned long long)r->err.reply[k]);
    first = false;
  }
  fprintf(f, "}},\n  \"latency_us\": {\n");
  json_hist(f, "connect_220", &r->connect_220, false);
  json_hist(f, "eod_250", &r->eod_250, true);
  fprintf(f, "  }\n}\n");
  return ferror(f) ? -EIO : 0;
}

static void text_hist(FILE *f, const char *name, const struct bench_hist *h)
{
  if (!h->count) {
    fprintf(f, "  %-14s no samples\n", name);
    return;
  }
  fprintf(f, "  %-14s n=%llu  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n",
          name, (unsigned long long)h->count,
          bench_hist_quantile(h, 0.50) / 1e3, bench_hist_quantile(h, 0.90) / 1e3,
          bench_hist_quantile(h, 0.99) / 1e3, bench_hist_quantile(h, 0.999) / 1e3,
          (double)h->max / 1e3);
}

void bench_report_text(FILE *f, const struct bench_config *c, const struct bench_result *r)
{
  char a[80];
  uint64_t replies = 0;

  for (int k = 0; k < 1000; k++)
    replies += r->err.reply[k];
  fprintf(f, "mxedge-bench %s: %s loop against %s, %u sessions, %u thread(s)%s, %.2f s\n",
          MXEDGE_VERSION, mode_name(c->mode),
          bench_addr_str((const struct sockaddr *)&c->target, a, sizeof(a)),
          c->sessions, c->threads, c->io_dpdk ? " over DPDK" : "", r->elapsed_s);
  if (c->mode == BENCH_HOLD)
    fprintf(f, "  held          %llu of %u (all after %.2f s, %u process(es))\n",
            (unsigned long long)r->held_max, c->sessions, r->hold_ready_s,
            c->procs > 1 ? c->procs : 1);
  fprintf(f, "  accepted      %llu messages (%.1f/s, %.2f MB/s) of %llu attempted\n",
          (unsigned long long)r->messages_accepted, rate(r->messages_accepted, r->elapsed_s),
          rate(r->bytes_accepted, r->elapsed_s) / 1e6,
          (unsigned long long)r->messages_attempted);
  fprintf(f, "  sessions      %llu completed (%.1f/s) of %llu started",
          (unsigned long long)r->sessions_completed, rate(r->sessions_completed, r->elapsed_s),
          (unsigned long long)r->sessions_started);
  if (c->mode == BENCH_OPEN)
    fprintf(f, ", %llu arrivals missed (no free slot)", (unsigned long long)r->sessions_missed);
  fputc('\n', f);
  fprintf(f, "  errors        connect %llu, timeout %llu, disconnect %llu, protocol %llu, replies %llu",
          (unsigned long long)r->err.connect, (unsigned long long)r->err.timeout,
          (unsigned long long)r->err.disconnect, (unsigned long long)r->err.protocol,
          (unsigned long long)replies);
  for (int k = 0; k < 1000; k++)
    if (r->err.reply[k])
      fprintf(f, " [%d: %llu]", k, (unsigned long long)r->err.reply[k]);
  fputc('\n', f);
  text_hist(f, "connect->220", &r->connect_220);
  text_hist(f, "eod->250", &r->eod_250);
}
