/* Log-linear latency histograms: O(1) record, fixed size, mergeable across
 * threads (same idea as HdrHistogram with 4 significant bits). */
#include "bench.h"

#include <string.h>

void bench_hist_init(struct bench_hist *h)
{
  memset(h, 0, sizeof(*h));
}

unsigned bench_hist_bucket(uint64_t v)
{
  unsigned e;

  if (v < BENCH_HIST_SUB)
    return (unsigned)v;
  e = 63u - (unsigned)__builtin_clzll(v);      /* floor(log2 v) >= 4 */
  if (e > BENCH_HIST_MAXEXP)
    return BENCH_HIST_BUCKETS - 1;
  return BENCH_HIST_SUB + (e - 4) * BENCH_HIST_SUB +
         (unsigned)((v >> (e - 4)) & (BENCH_HIST_SUB - 1));
}

uint64_t bench_hist_upper(unsigned b)
{
  unsigned e, sub;

  if (b < BENCH_HIST_SUB)
    return b;
  e = (b - BENCH_HIST_SUB) / BENCH_HIST_SUB + 4;
  sub = (b - BENCH_HIST_SUB) % BENCH_HIST_SUB;
  return (((uint64_t)(BENCH_HIST_SUB + sub + 1)) << (e - 4)) - 1;
}

void bench_hist_record(struct bench_hist *h, uint64_t v)
{
  if (h->count == 0 || v < h->min)
    h->min = v;
  if (v > h->max)
    h->max = v;
  h->count++;
  h->sum += v;
  h->buckets[bench_hist_bucket(v)]++;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
  if (src->count == 0)
    return;
  if (dst->count == 0 || src->min < dst->min)
    dst->min = src->min;
  if (src->max > dst->max)
    dst->max = src->max;
  dst->count += src->count;
  dst->sum += src->sum;
  for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
    dst->buckets[i] += src->buckets[i];
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
  uint64_t rank, seen = 0;

  if (h->count == 0)
    return 0;
  if (q <= 0)
    return h->min;
  if (q >= 1)
    return h->max;
  /* The smallest value with at least ceil(q * count) samples at or below. */
  rank = (uint64_t)(q * (double)h->count);
  if ((double)rank < q * (double)h->count)
    rank++;
  if (rank == 0)
    rank = 1;
  for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
    seen += h->buckets[i];
    if (seen >= rank) {
      uint64_t u = bench_hist_upper(i);
      if (u > h->max)
        u = h->max;
      if (u < h->min)
        u = h->min;
      return u;
    }
  }
  return h->max;
}
