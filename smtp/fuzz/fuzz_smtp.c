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
 * while input is left and nothing is pending.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	uint32_t rng;
	int in_content;   /* DATA event seen, EOM/ABORT not yet */
	int in_tx;
	size_t out_bytes;
	int pending_type;
};

static uint32_t next(struct fz *f)
{
	f->rng = f->rng * 1103515245u + 12345u;
	return f->rng >> 16;
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
	uint32_t r = next(f);

	switch (ev->type) {
	case SMTP_EV_MAIL:
		check(!f->in_tx, "MAIL inside a transaction");
		ev->queue_id = "FUZZQ1";
		break;
	case SMTP_EV_DATA:
		check(f->in_tx && !f->in_content, "DATA event out of order");
		break;
	case SMTP_EV_BODY:
		check(f->in_content, "body bytes outside DATA/BDAT");
		check(ev->len > 0 && ev->data != NULL, "empty body chunk");
		/* touch every byte so ASan sees out-of-bounds pointers */
		{
			volatile uint8_t x = 0;
			for (size_t i = 0; i < ev->len; i++)
				x ^= ev->data[i];
			(void)x;
		}
		if (r % 64 == 0) {
			ev->reply = "452 4.3.1 Insufficient system storage";
			return SMTP_REJECT;
		}
		return SMTP_ACCEPT;
	case SMTP_EV_EOM:
		check(f->in_content, "EOM without DATA");
		/* the transaction ends with this answer, whatever it is */
		f->in_tx = f->in_content = 0;
		break;
	case SMTP_EV_ABORT:
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct smtp_ops ops = {
		.write = fz_write, .event = fz_event, .unix_time = fz_time,
	};
	struct smtp_config cfg = { .hostname = "mx.fuzz" };
	struct smtp_server *srv;
	struct smtp_session *s;
	struct fz f = { 0 };
	size_t pos = 2, rounds = 0;
	uint64_t now = 0;
	_Alignas(16) uint8_t mem[512];

	if (size < 2)
		return 0;
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
	f.rng = data[1];
	srv = smtp_server_create(&cfg, &ops);
	if (srv == NULL)
		return 0;
	check(smtp_session_size() <= sizeof(mem), "session size");
	s = smtp_session_init(mem, srv, &f, "198.18.0.9", now);
	smtp_start(s, now);

	while (rounds++ < 100000) {
		enum smtp_want w = smtp_wants(s);
		size_t seg, used;

		if (w == SMTP_WANT_CLOSE)
			break;
		if (w == SMTP_WANT_ANSWER) {
			uint32_t r = next(&f);
			int v = (r % 4 == 0) ? SMTP_REJECT : SMTP_ACCEPT;
			/* track first: completing DATA sends body at once */
			if (v == SMTP_ACCEPT)
				accepted(&f, f.pending_type);
			check(smtp_complete(s, v,
					    (v == SMTP_REJECT && (r & 16)) ? "451 4.7.1 later" : NULL,
					    now) == 0, "complete refused");
			continue;
		}
		if (w == SMTP_WANT_TLS) {
			/* the caller drops the unread plaintext (RFC 3207) */
			pos = pos + (next(&f) % 4 == 0 ? 0 : (size - pos) / 2);
			check(smtp_tls_started(s, "TLSv1.3", now) == 0, "tls");
			continue;
		}
		if (pos >= size)
			break;
		seg = size - pos;
		if (next(&f) % 2) {
			size_t lim = 1 + next(&f) % 97;
			if (seg > lim)
				seg = lim;
		}
		used = smtp_input(s, data + pos, seg, now);
		check(used <= seg, "consumed more than given");
		pos += used;
		if (used == 0 && smtp_wants(s) == SMTP_WANT_INPUT) {
			/* only a full line-buffer pool may hold input, and
			 * this session is alone with two buffers */
			check(0, "engine stalled");
		}
		if (next(&f) % 256 == 0) {
			now += 200000;
			smtp_timeout(s, now);
		}
	}
	smtp_session_fini(s);
	check(smtp_server_buffers_in_use(srv) == 0, "line buffer leaked");
	smtp_server_destroy(srv);
	return 0;
}
