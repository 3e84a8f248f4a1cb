/*
 * Unit tests of edge_metrics: the Prometheus text a scrape of
 * mxedge-control shows for the receiving edge — the spool's sync histogram
 * and the dataplane's counters — against a real spool and a stand-in
 * dataplane control socket.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "ctl.h"
#include "edge_metrics.h"

static char dir[64], sock[128];

/* What the stand-in dataplane answers. */
static bool have_drops = true;

static int h_stats(void *ctx, const struct ctl_peer *peer, json_t *args,
		   json_t **result, const char **code, char **msg)
{
	json_t *v = json_object_get(args, "view");

	(void)ctx, (void)peer;
	if (json_is_string(v) && strcmp(json_string_value(v), "drops") == 0) {
		if (!have_drops) {
			*code = "not_available";
			*msg = strdup("no drop counters");
			return -1;
		}
		*result = json_pack("[{s:s, s:i, s:i}, {s:s, s:i, s:i}, {s:s, s:i}]",
				    "reason", "sessions_busy", "lcore1", 3, "total", 3,
				    "reason", "tcp_bad_cookie", "lcore1", 0, "total", 0,
				    "reason", "evil\"} 1\nx{", "total", 9);
		return 0;
	}
	*result = json_pack("[{s:i, s:i, s:i, s:i, s:i, s:i},"
			    " {s:i, s:i, s:i, s:i, s:i, s:i},"
			    " {s:s, s:i, s:i, s:i, s:i, s:i}]",
			    "lcore", 1, "rx_packets", 100, "tx_packets", 90, "sessions", 10,
			    "messages", 7, "tcp_conns", 2,
			    "lcore", 2, "rx_packets", 50, "tx_packets", 40, "sessions", 5,
			    "messages", 4, "tcp_conns", 1,
			    "lcore", "total", "rx_packets", 150, "tx_packets", 130,
			    "sessions", 15, "messages", 11, "tcp_conns", 3);
	return 0;
}

static const struct ctl_command cmds[] = {
	{ "stats", false, h_stats, "counters" },
};

static atomic_bool serving;

static void *serve(void *arg)
{
	struct ctl_server *s = arg;

	while (atomic_load(&serving))
		ctl_server_poll(s, 20);
	return NULL;
}

/* The metrics text of one scrape (caller frees). */
static char *scrape(const struct spool_reader *rd, const char *dp)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	assert_non_null(b);
	assert_int_equal(emet_append(b, rd, dp, 1000), 0);
	n = evbuffer_get_length(b);
	s = calloc(1, n + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, n);
	evbuffer_free(b);
	return s;
}

static int count_cb(const struct spool_message *m, void *arg)
{
	(void)m;
	(*(int *)arg)++;
	return 0;
}

/* Three messages through a real spool; the reader has seen them. */
static struct spool_reader *filled_spool(void)
{
	struct spool_config cfg = { .dir = dir, .writers = 1 };
	struct spool_rcpt rc = { "b@customer.test", NULL, NULL };
	struct spool_envelope env = {
		.arrival_us = 1, .client_addr = "198.18.7.23", .helo = "client.test",
		.mail_from = "a@example.org", .mail_params = "", .nrcpt = 1, .rcpts = &rc,
	};
	struct spool *sp = spool_open(&cfg, NULL);
	struct spool_writer *w;
	struct spool_reader *rd;
	struct spool_msg m;
	uint64_t off = 0;
	int got = 0;

	assert_non_null(sp);
	w = spool_writer(sp, 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(spool_begin(w, &m, spool_qid_new(w, 1000 + (uint64_t)i), &env), 0);
		assert_int_equal(spool_data(w, &m, "Subject: x\r\n\r\nbody\r\n", 20), 0);
		assert_int_equal(spool_end(w, &m, &off), 0);
		for (int t = 0; t < 5000 && !spool_durable(w, off); t++)
			usleep(1000);
		assert_true(spool_durable(w, off));
	}
	spool_close(sp);
	rd = spool_reader_open(dir);
	assert_non_null(rd);
	assert_int_equal(spool_reader_poll(rd, count_cb, &got), 3);
	return rd;
}

static unsigned long long value_of(const char *text, const char *series)
{
	const char *p = text;
	size_t n = strlen(series);

	while ((p = strstr(p, series)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == ' ')
			return strtoull(p + n + 1, NULL, 10);
		p += n;
	}
	fail_msg("series %s missing in:\n%s", series, text);
	return 0;
}

static void test_full_scrape(void **state)
{
	struct spool_reader *rd = filled_spool();
	struct ctl_server *srv = ctl_server_open(sock, cmds, 1, NULL);
	pthread_t th;
	char *t;

	(void)state;
	assert_non_null(srv);
	atomic_store(&serving, true);
	have_drops = true;
	assert_int_equal(pthread_create(&th, NULL, serve, srv), 0);
	t = scrape(rd, sock);
	atomic_store(&serving, false);
	pthread_join(th, NULL);
	ctl_server_close(srv);

	/* The histogram: cumulative buckets, +Inf == count, each of the
	 * three messages was synced at least once. */
	assert_non_null(strstr(t, "# TYPE mxedge_spool_sync_seconds histogram\n"));
	assert_true(value_of(t, "mxedge_spool_sync_seconds_count") >= 1);
	assert_true(value_of(t, "mxedge_spool_sync_seconds_bucket{le=\"+Inf\"}") ==
		    value_of(t, "mxedge_spool_sync_seconds_count"));
	assert_true(value_of(t, "mxedge_spool_sync_seconds_bucket{le=\"0.00025\"}") <=
		    value_of(t, "mxedge_spool_sync_seconds_bucket{le=\"1\"}"));
	/* The dataplane's counters per lcore, never the total row. */
	assert_int_equal(value_of(t, "mxedge_edge_up"), 1);
	assert_int_equal(value_of(t, "mxedge_edge_messages_accepted_total{lcore=\"1\"}"), 7);
	assert_int_equal(value_of(t, "mxedge_edge_messages_accepted_total{lcore=\"2\"}"), 4);
	assert_int_equal(value_of(t, "mxedge_edge_sessions_total{lcore=\"2\"}"), 5);
	assert_int_equal(value_of(t, "mxedge_edge_tcp_connections{lcore=\"1\"}"), 2);
	assert_null(strstr(t, "lcore=\"total\""));
	assert_non_null(strstr(t, "# TYPE mxedge_edge_tcp_connections gauge\n"));
	assert_int_equal(value_of(t, "mxedge_edge_drops_total{reason=\"sessions_busy\"}"), 3);
	assert_int_equal(value_of(t, "mxedge_edge_drops_total{reason=\"tcp_bad_cookie\"}"), 0);
	/* A reason that is not a plain name never reaches a label. */
	assert_null(strstr(t, "evil"));
	free(t);
	spool_reader_close(rd);
}

static void test_dataplane_down_or_partial(void **state)
{
	struct spool_reader *rd = filled_spool();
	struct ctl_server *srv;
	pthread_t th;
	char *t;

	(void)state;
	/* Nothing listening: up 0, no edge counters, the histogram still. */
	t = scrape(rd, sock);
	assert_int_equal(value_of(t, "mxedge_edge_up"), 0);
	assert_null(strstr(t, "mxedge_edge_messages_accepted_total{"));
	assert_non_null(strstr(t, "mxedge_spool_sync_seconds_count "));
	free(t);
	/* No socket configured: not even the up gauge. */
	t = scrape(rd, "");
	assert_null(strstr(t, "mxedge_edge_up"));
	free(t);
	/* A dataplane without drop counters (kernel-socket mode). */
	srv = ctl_server_open(sock, cmds, 1, NULL);
	assert_non_null(srv);
	have_drops = false;
	atomic_store(&serving, true);
	assert_int_equal(pthread_create(&th, NULL, serve, srv), 0);
	t = scrape(rd, sock);
	atomic_store(&serving, false);
	pthread_join(th, NULL);
	ctl_server_close(srv);
	assert_int_equal(value_of(t, "mxedge_edge_up"), 1);
	assert_int_equal(value_of(t, "mxedge_edge_rx_packets_total{lcore=\"1\"}"), 100);
	assert_null(strstr(t, "mxedge_edge_drops_total{"));
	free(t);
	spool_reader_close(rd);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/mxt-emet.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(sock, sizeof(sock), "%s/dp.sock", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_full_scrape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dataplane_down_or_partial, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
