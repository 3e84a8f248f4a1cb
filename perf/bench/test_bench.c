/* Unit tests of mxedge-bench's pure parts: which addresses it may target,
 * how options parse, and that latency percentiles are right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "bench.h"

static bool allowed(const char *s)
{
  struct sockaddr_storage ss;
  socklen_t len;
  assert_int_equal(bench_parse_addr(s, 25, &ss, &len), 0);
  return bench_addr_allowed((struct sockaddr *)&ss);
}

static void test_addr_policy(void **state)
{
  (void)state;
  assert_true(allowed("127.0.0.1"));
  assert_true(allowed("127.9.9.9:2525"));
  assert_true(allowed("198.18.0.1"));
  assert_true(allowed("198.19.255.254:25"));
  assert_true(allowed("::1"));
  assert_true(allowed("[2001:db8::1]:25"));
  assert_true(allowed("2001:db8:ffff::2"));
  /* Neighbours of the allowed ranges and real hosts are refused. */
  assert_false(allowed("198.17.255.255"));
  assert_false(allowed("198.20.0.0"));
  assert_false(allowed("8.8.8.8"));
  assert_false(allowed("10.0.0.1"));
  assert_false(allowed("0.0.0.0"));
  assert_false(allowed("2001:db9::1"));
  assert_false(allowed("2001:4860::8888"));
  assert_false(allowed("::ffff:8.8.8.8"));
  assert_false(allowed("::ffff:127.0.0.1"));
  assert_false(allowed("::"));
}

static void test_parse_addr(void **state)
{
  struct sockaddr_storage ss;
  socklen_t len;
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  char buf[80];
  (void)state;

  assert_int_equal(bench_parse_addr("198.18.0.1:2525", 25, &ss, &len), 0);
  assert_int_equal(s4->sin_family, AF_INET);
  assert_int_equal(ntohs(s4->sin_port), 2525);
  assert_int_equal(len, sizeof(*s4));
  assert_string_equal(bench_addr_str((struct sockaddr *)&ss, buf, sizeof(buf)), "198.18.0.1:2525");

  assert_int_equal(bench_parse_addr("198.18.0.1", 25, &ss, &len), 0);
  assert_int_equal(ntohs(s4->sin_port), 25);

  assert_int_equal(bench_parse_addr("[2001:db8::5]:587", 25, &ss, &len), 0);
  assert_int_equal(s6->sin6_family, AF_INET6);
  assert_int_equal(ntohs(s6->sin6_port), 587);
  assert_string_equal(bench_addr_str((struct sockaddr *)&ss, buf, sizeof(buf)), "[2001:db8::5]:587");
  assert_int_equal(bench_parse_addr("2001:db8::5", 25, &ss, &len), 0);
  assert_int_equal(ntohs(s6->sin6_port), 25);

  /* Names are never resolved; malformed ports are refused. */
  assert_int_equal(bench_parse_addr("localhost:25", 25, &ss, &len), -EINVAL);
  assert_int_equal(bench_parse_addr("198.18.0.1:", 25, &ss, &len), -EINVAL);
  assert_int_equal(bench_parse_addr("198.18.0.1:0", 25, &ss, &len), -EINVAL);
  assert_int_equal(bench_parse_addr("198.18.0.1:65536", 25, &ss, &len), -EINVAL);
  assert_int_equal(bench_parse_addr("198.18.0.1:25x", 25, &ss, &len), -EINVAL);
  assert_int_equal(bench_parse_addr("[2001:db8::1", 25, &ss, &len), -EINVAL);
  assert_int_equal(bench_parse_addr("", 25, &ss, &len), -EINVAL);
}

static void test_parse_sizes(void **state)
{
  struct bench_size sz[BENCH_MAX_SIZES];
  unsigned n = 0;
  (void)state;

  assert_int_equal(bench_parse_sizes("4096", sz, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(sz[0].bytes, 4096);
  assert_int_equal(sz[0].weight, 1);

  assert_int_equal(bench_parse_sizes("1k:50,4K:40,1m:10", sz, &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(sz[0].bytes, 1024);
  assert_int_equal(sz[0].weight, 50);
  assert_int_equal(sz[1].bytes, 4096);
  assert_int_equal(sz[2].bytes, 1048576);
  assert_int_equal(sz[2].weight, 10);

  assert_int_equal(bench_parse_sizes("", sz, &n), -EINVAL);
  assert_int_equal(bench_parse_sizes("100", sz, &n), -EINVAL);       /* too small */
  assert_int_equal(bench_parse_sizes("65m", sz, &n), -EINVAL);       /* too big */
  assert_int_equal(bench_parse_sizes("4k:0", sz, &n), -EINVAL);      /* no weight */
  assert_int_equal(bench_parse_sizes("4k,", sz, &n), -EINVAL);
  assert_int_equal(bench_parse_sizes("4k;8k", sz, &n), -EINVAL);
  assert_int_equal(bench_parse_sizes("-4k", sz, &n), -EINVAL);
  assert_int_equal(bench_parse_sizes("1k,1k,1k,1k,1k,1k,1k,1k,1k,1k,1k,1k,1k,1k,1k,1k,1k",
                                     sz, &n), -EINVAL);
}

static void test_hist(void **state)
{
  static struct bench_hist h, h2;
  (void)state;

  bench_hist_init(&h);
  assert_int_equal(bench_hist_quantile(&h, 0.5), 0);
  /* 1..10000 us uniformly: percentiles within the 1/16 bucket error. */
  for (uint64_t v = 1; v <= 10000; v++)
    bench_hist_record(&h, v);
  assert_int_equal(h.count, 10000);
  assert_int_equal(h.min, 1);
  assert_int_equal(h.max, 10000);
  uint64_t p50 = bench_hist_quantile(&h, 0.5), p99 = bench_hist_quantile(&h, 0.99);
  assert_true(p50 >= 5000 && p50 <= 5000 + 5000 / 16);
  assert_true(p99 >= 9900 && p99 <= 10000);
  assert_int_equal(bench_hist_quantile(&h, 0.999), 10000);
  assert_int_equal(bench_hist_quantile(&h, 1.0), 10000);

  /* Small values are exact; a single outlier shows only at the top. */
  bench_hist_init(&h2);
  for (int i = 0; i < 999; i++)
    bench_hist_record(&h2, 7);
  bench_hist_record(&h2, 3000000);
  assert_int_equal(bench_hist_quantile(&h2, 0.5), 7);
  assert_int_equal(bench_hist_quantile(&h2, 0.99), 7);
  assert_int_equal(bench_hist_quantile(&h2, 0.9995), 3000000);

  /* Merging keeps counts, min and max. */
  bench_hist_merge(&h, &h2);
  assert_int_equal(h.count, 11000);
  assert_int_equal(h.min, 1);
  assert_int_equal(h.max, 3000000);

  /* Bucket edges are monotonic and every value lies in its bucket. */
  for (uint64_t v = 1; v < (1ull << 40); v = v * 3 + 1) {
    unsigned b = bench_hist_bucket(v);
    assert_true(v <= bench_hist_upper(b));
    if (b > 0)
      assert_true(v > bench_hist_upper(b - 1));
  }
  /* Huge values saturate instead of overflowing the table. */
  bench_hist_record(&h, UINT64_MAX);
  assert_int_equal(h.buckets[BENCH_HIST_BUCKETS - 1], 1);
}

static void base_config(struct bench_config *c)
{
  memset(c, 0, sizeof(*c));
  socklen_t len;
  assert_int_equal(bench_parse_addr("198.18.0.1:25", 25, &c->target, &len), 0);
  c->target_len = len;
  c->threads = 1;
  c->sessions = 1;
  c->rcpts = 1;
  c->sizes[0].bytes = 4096;
  c->sizes[0].weight = 1;
  c->n_sizes = 1;
  c->duration_s = 1;
  c->timeout_s = 1;
  c->helo = "h.bench.test";
  c->mail_from = "a@bench.test";
  c->rcpt_to = "b@bench.test";
}

static void test_config_check(void **state)
{
  static struct bench_config c;
  char err[256];
  socklen_t len;
  (void)state;

  base_config(&c);
  assert_int_equal(bench_config_check(&c, err, sizeof(err)), 0);

  /* A real host as target is refused with a message that says why. */
  assert_int_equal(bench_parse_addr("192.0.2.1:25", 25, &c.target, &len), 0);
  assert_int_equal(bench_config_check(&c, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "refusing target 192.0.2.1:25"));
  assert_non_null(strstr(err, "198.18.0.0/15"));

  base_config(&c);
  assert_int_equal(bench_parse_addr("10.1.1.1", 0, &c.sources[0], &len), 0);
  c.n_sources = 1;
  assert_int_equal(bench_config_check(&c, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "refusing source"));

  base_config(&c);
  assert_int_equal(bench_parse_addr("2001:db8::2", 0, &c.sources[0], &len), 0);
  c.n_sources = 1;
  assert_int_equal(bench_config_check(&c, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "address family"));

  /* Runs are always bounded. */
  base_config(&c);
  c.duration_s = 0;
  assert_int_equal(bench_config_check(&c, err, sizeof(err)), -EINVAL);

  base_config(&c);
  c.mode = BENCH_OPEN;
  assert_int_equal(bench_config_check(&c, err, sizeof(err)), -EINVAL);
  c.rate = 100;
  assert_int_equal(bench_config_check(&c, err, sizeof(err)), 0);

  /* Envelope strings cannot smuggle commands. */
  base_config(&c);
  c.mail_from = "a@b\r\nRSET";
  assert_int_equal(bench_config_check(&c, err, sizeof(err)), -EINVAL);
}

/* The DPDK engine's options: port and address syntax, and the checks that
 * run before EAL (a refused address must never reach the port). */
static void test_dpdk_options(void **state)
{
  static struct bench_config c;
  struct bench_dpdk_config dc;
  char err[256];
  (void)state;

  memset(&dc, 0, sizeof(dc));
  assert_int_equal(bench_dpdk_parse_port("af_xdp:veth1", &dc), 0);
  assert_int_equal(dc.kind, BENCH_DPDK_AF_XDP);
  assert_string_equal(dc.ifname, "veth1");
  assert_int_equal(bench_dpdk_parse_port("tap:t0", &dc), 0);
  assert_int_equal(dc.kind, BENCH_DPDK_TAP);
  assert_int_equal(bench_dpdk_parse_port("pci:0000:01:00.0", &dc), -EINVAL);
  assert_int_equal(bench_dpdk_parse_port("af_xdp:", &dc), -EINVAL);
  assert_int_equal(bench_dpdk_parse_port("af_xdp:a,b=c", &dc), -EINVAL);  /* no vdev smuggling */
  assert_int_equal(bench_dpdk_parse_port("veth1", &dc), -EINVAL);

  assert_int_equal(bench_dpdk_parse_addr("198.18.0.9/24", &dc), 0);
  assert_int_equal(dc.plen, 24);
  assert_int_equal(dc.local.ss_family, AF_INET);
  assert_int_equal(bench_dpdk_parse_addr("2001:db8::9/64", &dc), 0);
  assert_int_equal(dc.local.ss_family, AF_INET6);
  assert_int_equal(dc.plen, 64);
  assert_int_equal(bench_dpdk_parse_addr("198.18.0.9", &dc), -EINVAL);
  assert_int_equal(bench_dpdk_parse_addr("198.18.0.9/33", &dc), -EINVAL);
  assert_int_equal(bench_dpdk_parse_addr("198.18.0.9/0", &dc), -EINVAL);
  assert_int_equal(bench_dpdk_parse_addr("nohost/24", &dc), -EINVAL);

  base_config(&c);
  memset(&dc, 0, sizeof(dc));
  assert_int_equal(bench_dpdk_check(&c, &dc, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "--port"));
  assert_int_equal(bench_dpdk_parse_port("af_xdp:veth1", &dc), 0);
  assert_int_equal(bench_dpdk_check(&c, &dc, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "--addr"));
  assert_int_equal(bench_dpdk_parse_addr("198.18.0.9/24", &dc), 0);
  assert_int_equal(bench_dpdk_check(&c, &dc, err, sizeof(err)), 0);
  /* The port's own address is a source: the same ranges apply. */
  assert_int_equal(bench_dpdk_parse_addr("10.0.0.9/24", &dc), 0);
  assert_int_equal(bench_dpdk_check(&c, &dc, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "--addr 10.0.0.9 is outside"));
  assert_int_equal(bench_dpdk_parse_addr("2001:db8::9/64", &dc), 0);
  assert_int_equal(bench_dpdk_check(&c, &dc, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "same address family"));
  assert_int_equal(bench_dpdk_parse_addr("198.18.0.9/24", &dc), 0);
  /* The target check comes first, with the socket engine's words. */
  socklen_t len;
  assert_int_equal(bench_parse_addr("192.0.2.1:25", 25, &c.target, &len), 0);
  assert_int_equal(bench_dpdk_check(&c, &dc, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "refusing target 192.0.2.1:25"));
  base_config(&c);
  c.mode = BENCH_HOLD;
  assert_int_equal(bench_dpdk_check(&c, &dc, err, sizeof(err)), -EINVAL);
  base_config(&c);
  c.sessions = 28001;
  assert_int_equal(bench_dpdk_check(&c, &dc, err, sizeof(err)), -EINVAL);
  assert_non_null(strstr(err, "28232 source ports"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_addr_policy),
    cmocka_unit_test(test_parse_addr),
    cmocka_unit_test(test_parse_sizes),
    cmocka_unit_test(test_hist),
    cmocka_unit_test(test_config_check),
    cmocka_unit_test(test_dpdk_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
