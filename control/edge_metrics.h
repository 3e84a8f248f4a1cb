/*
 * edge_metrics - the receiving edge's side of mxedge-control's Prometheus
 * metrics: the spool's fdatasync latency histogram (published by the
 * dataplane's sync thread in the spool's durable files) and the dataplane's
 * per-lcore counters and drops by reason (read over its control socket).
 */
#ifndef MXEDGE_EDGE_METRICS_H
#define MXEDGE_EDGE_METRICS_H

#include <event2/buffer.h>

#include "spool.h"

/*
 * emet_append - append the edge's metrics to @b in the Prometheus text
 * format (version 0.0.4): mxedge_spool_sync_seconds (histogram, from @rd;
 * borrowed), and, asking the dataplane at @dp_socket ("" or NULL: not
 * asked) with "stats" and "stats view=drops" within @timeout_ms each,
 * mxedge_edge_up, per-lcore counters (rx/tx packets, sessions, messages
 * accepted, TCP connections) and mxedge_edge_drops_total{reason}. A
 * dataplane that does not answer gives mxedge_edge_up 0 and no edge
 * counters; one without drop counters (kernel-socket mode) gives no drops.
 * Blocks for at most 2 * @timeout_ms. Returns 0, or -ENOMEM if @b could not
 * grow.
 */
int emet_append(struct evbuffer *b, const struct spool_reader *rd,
		const char *dp_socket, int timeout_ms);

#endif /* MXEDGE_EDGE_METRICS_H */
