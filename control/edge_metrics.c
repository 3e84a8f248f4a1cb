/*
 * edge_metrics - Prometheus text for the receiving edge (edge_metrics.h).
 *
 * Why a control-socket call per scrape rather than a shared-memory page:
 * the dataplane already keeps per-lcore counters for `mxedgectl stats`, its
 * main thread answers within a poll round, and a scrape every few seconds
 * costs it one JSON reply. The sync histogram comes from the spool's files
 * instead, because the relay maps them anyway and they also describe a
 * dataplane that is down.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "ctl.h"
#include "edge_metrics.h"

/* Per-lcore counters of "stats": JSON key, metric name, type, help. */
static const struct {
	const char *key, *name, *type, *help;
} lcore_metrics[] = {
	{ "rx_packets", "mxedge_edge_rx_packets_total", "counter",
	  "Frames the lcore took from its port queue." },
	{ "tx_packets", "mxedge_edge_tx_packets_total", "counter",
	  "Frames the lcore sent." },
	{ "sessions", "mxedge_edge_sessions_total", "counter",
	  "SMTP sessions started." },
	{ "messages", "mxedge_edge_messages_accepted_total", "counter",
	  "Messages answered 250 after the spool made them durable." },
	{ "tcp_conns", "mxedge_edge_tcp_connections", "gauge",
	  "Open TCP connections." },
};

/* Label value: the lcore number, or the row's own string. */
static void lcore_label(json_t *row, char *out, size_t len)
{
	json_t *lc = json_object_get(row, "lcore");

	if (json_is_integer(lc))
		snprintf(out, len, "%" JSON_INTEGER_FORMAT, json_integer_value(lc));
	else
		snprintf(out, len, "%s", json_is_string(lc) ? json_string_value(lc) : "?");
}

/* Is @row the "total" row (summing it with the lcores would count twice)? */
static bool is_total(json_t *row)
{
	json_t *lc = json_object_get(row, "lcore");

	return json_is_string(lc) && strcmp(json_string_value(lc), "total") == 0;
}

static int put_sync_hist(struct evbuffer *b, const struct spool_reader *rd)
{
	struct spool_sync_hist h;
	uint64_t cum = 0;
	unsigned i;
	int rc = 0;

	spool_reader_sync_hist(rd, &h);
	rc |= evbuffer_add_printf(b,
		"# HELP mxedge_spool_sync_seconds Time of each spool fdatasync (group commit).\n"
		"# TYPE mxedge_spool_sync_seconds histogram\n") < 0;
	for (i = 0; i < SPOOL_SYNC_BUCKETS; i++) {
		cum += h.bucket[i];
		if (i < SPOOL_SYNC_BUCKETS - 1)
			rc |= evbuffer_add_printf(b,
				"mxedge_spool_sync_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
				(double)spool_sync_bound_ns[i] / 1e9, cum) < 0;
		else
			rc |= evbuffer_add_printf(b,
				"mxedge_spool_sync_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
				cum) < 0;
	}
	rc |= evbuffer_add_printf(b, "mxedge_spool_sync_seconds_sum %.9f\n"
				  "mxedge_spool_sync_seconds_count %" PRIu64 "\n",
				  (double)h.sum_ns / 1e9, h.count) < 0;
	return rc ? -ENOMEM : 0;
}

/* The reply's result array, or NULL when the call failed. */
static json_t *call_rows(const char *sock, json_t *args, int timeout_ms)
{
	json_t *rep = ctl_call(sock, "stats", args, timeout_ms), *res;

	if (rep == NULL)
		return NULL;
	res = json_object_get(rep, "result");
	if (!json_is_true(json_object_get(rep, "ok")) || !json_is_array(res)) {
		json_decref(rep);
		return NULL;
	}
	json_incref(res);
	json_decref(rep);
	return res;
}

static int put_lcores(struct evbuffer *b, json_t *rows)
{
	char label[32];
	size_t i, m;
	json_t *row;
	int rc = 0;

	for (m = 0; m < sizeof(lcore_metrics) / sizeof(lcore_metrics[0]); m++) {
		rc |= evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n",
					  lcore_metrics[m].name, lcore_metrics[m].help,
					  lcore_metrics[m].name, lcore_metrics[m].type) < 0;
		json_array_foreach(rows, i, row) {
			json_t *v = json_object_get(row, lcore_metrics[m].key);

			if (is_total(row) || !json_is_integer(v))
				continue;
			lcore_label(row, label, sizeof(label));
			rc |= evbuffer_add_printf(b, "%s{lcore=\"%s\"} %" JSON_INTEGER_FORMAT "\n",
						  lcore_metrics[m].name, label,
						  json_integer_value(v)) < 0;
		}
	}
	return rc;
}

static int put_drops(struct evbuffer *b, json_t *rows)
{
	size_t i;
	json_t *row;
	int rc = 0;

	rc |= evbuffer_add_printf(b,
		"# HELP mxedge_edge_drops_total Frames, connections and commands the dataplane dropped or refused, by reason.\n"
		"# TYPE mxedge_edge_drops_total counter\n") < 0;
	json_array_foreach(rows, i, row) {
		json_t *r = json_object_get(row, "reason"), *t = json_object_get(row, "total");
		const char *s;

		if (!json_is_string(r) || !json_is_integer(t))
			continue;
		/* Reason names are ours ([a-z0-9_]); anything else is not
		 * put into a label unescaped. */
		s = json_string_value(r);
		if (s[strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_")] != '\0')
			continue;
		rc |= evbuffer_add_printf(b, "mxedge_edge_drops_total{reason=\"%s\"} %"
					  JSON_INTEGER_FORMAT "\n", s, json_integer_value(t)) < 0;
	}
	return rc;
}

int emet_append(struct evbuffer *b, const struct spool_reader *rd,
		const char *dp_socket, int timeout_ms)
{
	json_t *rows = NULL, *drops = NULL, *args = NULL;
	int rc = 0;

	if (rd && put_sync_hist(b, rd) < 0)
		return -ENOMEM;
	if (dp_socket == NULL || dp_socket[0] == '\0')
		return 0;
	rows = call_rows(dp_socket, NULL, timeout_ms);
	rc |= evbuffer_add_printf(b,
		"# HELP mxedge_edge_up Whether the dataplane answered on its control socket.\n"
		"# TYPE mxedge_edge_up gauge\nmxedge_edge_up %d\n", rows != NULL) < 0;
	if (rows == NULL)
		goto out;
	rc |= put_lcores(b, rows);
	args = json_pack("{s:s}", "view", "drops");
	drops = args ? call_rows(dp_socket, args, timeout_ms) : NULL;
	if (drops)
		rc |= put_drops(b, drops);
out:
	json_decref(rows);
	json_decref(drops);
	json_decref(args);
	return rc ? -ENOMEM : 0;
}
