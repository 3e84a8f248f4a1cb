/*
 * libFuzzer harness over the whole SMTP engine.
 *
 * Input layout: byte 0 picks the configuration (bare-LF policy, STARTTLS,
 * CHUNKING, small limits), byte 1 seeds the choices the "caller" makes
 * (segment sizes, accept / reject / pending answers, timeouts); the rest
 * is the client's byte stream.  Besides the sanitizers, the harness checks
 * what a client would notice: every reply line is "ddd" SP/"-" text CRLF,
 * body bytes only flow inside an accepted DATA/BDAT, events stay in order,
 * the engine never claims more bytes than it was given, and it never stalls
 * while input is left and nothing is pending.  Each input is run whole and
 * in random segments: replies, stored bytes and events must be identical.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	uint32_t rng;     /* the caller's answers: drawn per event */
	uint32_t seg_rng; /* segmentation and timeouts: drawn per read */
	int in_content;   /* DATA event seen, EOM/ABORT not yet */
	int in_tx;
	size_t out_bytes;
	int pending_type;
	uint64_t out_hash;  /* FNV-1a over every reply byte */
	uint64_t tx_hash;   /* FNV-1a over the open transaction's body */
	uint64_t body_hash; /* over the bodies that reached EOM */
	uint64_t events;    /* event types except BODY, in order */
	bool body_faults;   /* BODY upcalls may fail (not segmentation-stable) */
};

static uint32_t next(struct fz *f)
{
	f->rng = f->rng * 1103515245u + 12345u;
	return f->rng >> 16;
}

static uint32_t next_seg(struct fz *f)
{
	f->seg_rng = f->seg_rng * 1103515245u + 12345u;
	return f->seg_rng >> 16;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t i;

	if (h == 0)
		h = 14695981039346656037ull;
	for (i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant violated: %s\n", what);
		abort();
	}
}

static void fz_write(void *ctx, const void *buf, size_t len)
{
	struct fz *f = ctx;
	const char *p = buf, *end = p + len;

	f->out_bytes += len;
	f->out_hash = fnv(f->out_hash, buf, len);
	/* RFC 5321 §4.2: Reply-line = Reply-code [ SP / "-" text ] CRLF */
	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		check(lf != NULL, "reply not CRLF-terminated");
		check(lf - p >= 5 && lf[-1] == '\r', "short reply line");
		check(p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '5' &&
		      p[2] >= '0' && p[2] <= '9', "reply code");
		check(p[3] == ' ' || p[3] == '-', "reply separator");
		check(memchr(p, '\r', (size_t)(lf - p - 1)) == NULL, "bare CR in reply");
		p = lf + 1;
	}
}

/* The engine accepted what the event proposed: track the transaction. */
static void accepted(struct fz *f, int type)
{
	if (type == SMTP_EV_MAIL)
		f->in_tx = 1;
	else if (type == SMTP_EV_DATA)
		f->in_content = 1;
	else if (type == SMTP_EV_EOM)
		f->in_tx = f->in_content = 0;
}

static int fz_event(void *ctx, struct smtp_session *s, struct smtp_event *ev)
{
	struct fz *f = ctx;
	uint32_t r;

	if (ev->type == SMTP_EV_BODY) {
		check(f->in_content, "body bytes outside DATA/BDAT");
		check(ev->len > 0 && ev->data != NULL, "empty body chunk");
		/* reads every byte: ASan sees out-of-bounds pointers */
		f->tx_hash = fnv(f->tx_hash, ev->data, ev->len);
		/* how many chunks a body arrives in depends on segmentation,
		 * so only the non-differential run draws answers here */
		if (f->body_faults && next_seg(f) % 64 == 0) {
			ev->reply = "452 4.3.1 Insufficient system storage";
			return SMTP_REJECT;
		}
		return SMTP_ACCEPT;
	}
	r = next(f);
	f->events = f->events * 31 + (uint64_t)ev->type;
	switch (ev->type) {
	case SMTP_EV_MAIL:
		check(!f->in_tx, "MAIL inside a transaction");
		f->tx_hash = 0;
		ev->queue_id = "FUZZQ1";
		break;
	case SMTP_EV_DATA:
		check(f->in_tx && !f->in_content, "DATA event out of order");
		break;
	case SMTP_EV_EOM:
		check(f->in_content, "EOM without DATA");
		/* Only complete messages count: what an aborted one passed up
		 * before its error (size, bare LF) may depend on segmentation,
		 * and the caller throws it away. */
		f->body_hash = fnv(f->body_hash, &f->tx_hash, sizeof(f->tx_hash));
		f->tx_hash = 0;
		/* the transaction ends with this answer, whatever it is */
		f->in_tx = f->in_content = 0;
		break;
	case SMTP_EV_ABORT:
		f->tx_hash = 0;
		f->in_tx = 0;
		f->in_content = 0;
		return SMTP_ACCEPT;
	case SMTP_EV_EARLY_TALKER:
	case SMTP_EV_STARTTLS:
		return SMTP_ACCEPT;
	default:
		break;
	}
	f->pending_type = ev->type;
	switch (r % 8) {
	case 0:
		ev->reply = (r & 8) ? "550 5.7.1 no" : "421 4.3.0 bye";
		return SMTP_REJECT;
	case 1:
	case 2:
		return SMTP_PENDING;
	default:
		accepted(f, ev->type);
		return SMTP_ACCEPT;
	}
}

static int64_t fz_time(void *ctx)
{
	return 1796000000;
}

/*
 * One session over the input.  split: cut the stream into random segments
 * (else offer everything that is left each time); timeouts: sometimes jump
 * the clock past the deadline.
 */
static void run(const uint8_t *data, size_t size, bool split, bool timeouts,
		struct fz *f)
	/* timeouts also turns on failing BODY upcalls */
{
	static const struct smtp_ops ops = {
		.write = fz_write, .event = fz_event, .unix_time = fz_time,
	};
	struct smtp_config cfg = { .hostname = "mx.fuzz" };
	struct smtp_server *srv;
	struct smtp_session *s;
	size_t pos = 2, rounds = 0;
	uint64_t now = 0;
	_Alignas(16) uint8_t mem[512];

	cfg.bare_policy = (data[0] & 1) ? SMTP_BARE_NORMALISE : SMTP_BARE_REJECT;
	cfg.starttls = (data[0] & 2) != 0;
	cfg.no_chunking = (data[0] & 4) != 0;
	cfg.line_buffers = 2;
	if (data[0] & 8) {
		cfg.max_message_size = 300;
		cfg.max_rcpts = 2;
		cfg.max_line = 64;
		cfg.max_errors = 5;
		cfg.max_junk = 5;
	}
	memset(f, 0, sizeof(*f));
	f->body_faults = timeouts;
	f->rng = data[1];
	f->seg_rng = data[1] * 7u + 3u;
	srv = smtp_server_create(&cfg, &ops);
	check(srv != NULL, "server");
	check(smtp_session_size() <= sizeof(mem), "session size");
	s = smtp_session_init(mem, srv, f, "198.18.0.9", now);
	smtp_start(s, now);

	while (rounds++ < 100000) {
		enum smtp_want w = smtp_wants(s);
		size_t seg, used;

		if (w == SMTP_WANT_CLOSE)
			break;
		if (w == SMTP_WANT_ANSWER) {
			uint32_t r = next(f);
			int v = (r % 4 == 0) ? SMTP_REJECT : SMTP_ACCEPT;
			/* track first: completing DATA sends body at once */
			if (v == SMTP_ACCEPT)
				accepted(f, f->pending_type);
			check(smtp_complete(s, v,
					    (v == SMTP_REJECT && (r & 16)) ? "451 4.7.1 later" : NULL,
					    now) == 0, "complete refused");
			continue;
		}
		if (w == SMTP_WANT_TLS) {
			/* the caller drops the unread plaintext (RFC 3207) */
			pos = pos + (next(f) % 4 == 0 ? 0 : (size - pos) / 2);
			check(smtp_tls_started(s, "TLSv1.3", now) == 0, "tls");
			continue;
		}
		if (pos >= size)
			break;
		seg = size - pos;
		if (split && next_seg(f) % 2) {
			size_t lim = 1 + next_seg(f) % 97;
			if (seg > lim)
				seg = lim;
		}
		used = smtp_input(s, data + pos, seg, now);
		check(used <= seg, "consumed more than given");
		pos += used;
		/* only a full line-buffer pool may hold input back, and this
		 * session is alone with two buffers */
		check(used > 0 || smtp_wants(s) != SMTP_WANT_INPUT, "engine stalled");
		if (timeouts && next_seg(f) % 256 == 0) {
			now += 200000;
			smtp_timeout(s, now);
		}
	}
	smtp_session_fini(s);
	check(smtp_server_buffers_in_use(srv) == 0, "line buffer leaked");
	smtp_server_destroy(srv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz whole, split;

	if (size < 2)
		return 0;
	/* Differential: how the stream is segmented must not change a single
	 * reply byte, body byte or event (the answers depend on events only). */
	run(data, size, false, false, &whole);
	run(data, size, true, false, &split);
	check(whole.out_hash == split.out_hash && whole.out_bytes == split.out_bytes,
	      "replies depend on segmentation");
	check(whole.body_hash == split.body_hash, "stored bytes depend on segmentation");
	check(whole.events == split.events, "events depend on segmentation");
	/* and with timeouts firing at random points */
	run(data, size, true, true, &split);
	return 0;
}
