/* Scripted packet tests for tcp/ on a virtual clock (packetdrill-style).
 *
 * Usage: tcp_script FILE...   Each file holds cases ("=== name" starts one).
 * Every case builds a fresh stack (198.18.0.1 / 2001:db8::1, MAC 02:00:00:00:00:01)
 * facing a scripted peer (198.18.0.2 / 2001:db8::2, MAC 02:00:00:00:00:02)
 * and runs lines of the form
 *
 *   TIME COMMAND ...           TIME in seconds, absolute or +relative
 *
 * Commands (sequence numbers are relative, as in packetdrill: inbound seq
 * and outbound ack count from the peer's ISN, inbound ack and outbound seq
 * from the stack's ISS, learned from its first SYN or SYN-ACK):
 *   listen PORT | connect | write N | read N | avail N | shutdown | close | abort
 *   < FLAGS S:E(L) [ack A] [win W] [<opts>] [port P] [badcsum] [trunc N]
 *           [ipbadcsum] [frag] [tcpoff N]     inject a segment from the peer
 *   > FLAGS S:E(L) [ack A] [win W] [<opts>] [port P]
 *                                 expect exactly this segment next (+-5 ms)
 *   event accept|connected|readable|writable|eof|closed [ERRNO]
 *   noevent NAME | state NAME | drop REASON N | stat NAME N
 *   < arp who-has IP [tell IP] | > arp reply | > arp who-has IP
 *   < icmp echo ID SEQ LEN | > icmp echoreply ID SEQ LEN
 *   < icmp fragneeded MTU SEQ | < icmp6 toobig MTU SEQ
 *   < ns TARGET [nolla] | > na TARGET | > ns TARGET | < na TARGET
 *   < icmp6 echo ID SEQ LEN | > icmp6 echoreply ID SEQ LEN | < raw HEX
 *   opt NAME VALUE (before the first timed line: stack configuration)
 * Payload bytes are a fixed function of their stream offset in each
 * direction, so every read and every expected data segment also checks the
 * bytes themselves. Any frame the stack sends that no '>' line expects fails
 * the case. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "tcp.h"

#define BASE_NS 1000000000000ULL     /* virtual clock starts at 1000 s */
#define TOL_NS 5000000ULL
#define PEER_ISN 1000000u
#define MAXQ 256
#define MAXCONN 8

static const uint8_t stack_mac[6] = { 2, 0, 0, 0, 0, 1 };
static const uint8_t peer_mac[6] = { 2, 0, 0, 0, 0, 2 };

struct frame { uint64_t t; uint8_t *d; uint32_t len; };

struct pconn {                        /* peer-side view of one connection */
	uint16_t port;
	struct tcp_conn *c;
	uint32_t iss;
	int have_iss;
	uint32_t events;
	int err;
	uint64_t rd_pos, wr_pos;      /* stream offsets read / written */
	uint32_t last_tsval;
	int closed;
};

struct ctx {
	const char *file, *name;
	int line;
	struct tcp_config cfg;
	struct tcp_stack *st;
	uint64_t now;                 /* script-relative ns */
	struct frame q[MAXQ];
	unsigned qn;
	struct pconn pc[MAXCONN];
	unsigned npc;
	int v6;
	uint16_t lport;
	long bufs_out;
	char err[512];
	int failed;
	int noseed;
};

static struct ctx *G;

static void fail(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct ctx *x, const char *fmt, ...)
{
	if (x->failed)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->err, sizeof(x->err), fmt, ap);
	va_end(ap);
	x->failed = 1;
}

static uint8_t pat_in(uint64_t off) { return (uint8_t)(off * 7 + 3); }
static uint8_t pat_out(uint64_t off) { return (uint8_t)(off * 131 + 7); }

/* ---- stack callbacks ---- */
static uint8_t *cb_alloc(void *ctx, uint32_t len, void **h)
{
	uint8_t *p = malloc(len);
	*h = p;
	return p;
}

static void cb_send(void *ctx, void *h, uint32_t len, const struct tcp_txmeta *m)
{
	struct ctx *x = ctx;
	if (x->qn >= MAXQ) {
		fail(x, "output queue overflow");
		free(h);
		return;
	}
	x->q[x->qn].t = x->now;
	x->q[x->qn].d = h;
	x->q[x->qn].len = len;
	x->qn++;
}

static void buf_rel(struct tcp_buf *b)
{
	G->bufs_out--;
	free((void *)b->data);
	free(b);
}

static struct pconn *pconn_get(struct ctx *x, uint16_t port)
{
	for (unsigned i = 0; i < x->npc; i++)
		if (x->pc[i].port == port)
			return &x->pc[i];
	if (x->npc >= MAXCONN)
		return &x->pc[0];
	struct pconn *p = &x->pc[x->npc++];
	memset(p, 0, sizeof(*p));
	p->port = port;
	return p;
}

static void poll_events(struct ctx *x)
{
	struct tcp_event ev[32];
	unsigned n;
	while ((n = tcp_events(x->st, ev, 32)) > 0) {
		for (unsigned i = 0; i < n; i++) {
			struct tcp_conn_info in;
			tcp_conn_get_info(ev[i].conn, &in);
			struct pconn *p = pconn_get(x, in.rport);
			p->c = ev[i].conn;
			p->events |= ev[i].events;
			if (ev[i].events & 0x20)
				p->err = ev[i].error;
		}
	}
}

static void run_to(struct ctx *x, uint64_t t)
{
	if (x->now >= t)
		return;        /* same tick: app actions keep coalescing */
	while (x->now < t) {
		uint64_t step = 1000000ULL - (x->now % 1000000ULL);
		x->now = x->now + step > t ? t : x->now + step;
		tcp_service(x->st, BASE_NS + x->now);
		poll_events(x);
	}
}

/* ---- frame construction ---- */
static uint16_t csum(const void *d, size_t n, uint32_t s)
{
	const uint8_t *p = d;
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static uint32_t pseudo(int v6, const uint8_t *src, const uint8_t *dst, uint8_t proto, uint32_t len)
{
	uint32_t s = 0;
	int al = v6 ? 16 : 4;
	for (int i = 0; i < al; i += 2) {
		s += (uint32_t)(src[i] << 8 | src[i + 1]);
		s += (uint32_t)(dst[i] << 8 | dst[i + 1]);
	}
	return s + proto + len;
}

static void addr_of(int v6, int stack, uint8_t out[16])
{
	memset(out, 0, 16);
	if (v6) {
		inet_pton(AF_INET6, stack ? "2001:db8::1" : "2001:db8::2", out);
	} else {
		inet_pton(AF_INET, stack ? "198.18.0.1" : "198.18.0.2", out);
	}
}

static void inject(struct ctx *x, const uint8_t *f, uint32_t len)
{
	struct tcp_buf *b = calloc(1, sizeof(*b));
	uint8_t *d = malloc(len ? len : 1);
	memcpy(d, f, len);
	b->data = d;
	b->len = len;
	b->release = buf_rel;
	x->bufs_out++;
	tcp_input(x->st, b, BASE_NS + x->now);
	tcp_service(x->st, BASE_NS + x->now);
	poll_events(x);
}

/* Builds Ethernet + IP header for an L4 payload of l4len; returns offset of L4. */
static uint32_t build_ip(int v6, uint8_t *f, uint8_t proto, uint32_t l4len, uint8_t hlim,
                         const uint8_t *src, const uint8_t *dst, const uint8_t *dmac)
{
	memcpy(f, dmac, 6);
	memcpy(f + 6, peer_mac, 6);
	f[12] = v6 ? 0x86 : 0x08;
	f[13] = v6 ? 0xdd : 0x00;
	uint8_t *ip = f + 14;
	if (v6) {
		memset(ip, 0, 40);
		ip[0] = 0x60;
		ip[4] = (uint8_t)(l4len >> 8); ip[5] = (uint8_t)l4len;
		ip[6] = proto; ip[7] = hlim;
		memcpy(ip + 8, src, 16);
		memcpy(ip + 24, dst, 16);
		return 54;
	}
	memset(ip, 0, 20);
	ip[0] = 0x45;
	uint32_t tot = 20 + l4len;
	ip[2] = (uint8_t)(tot >> 8); ip[3] = (uint8_t)tot;
	ip[6] = 0x40;
	ip[8] = hlim; ip[9] = proto;
	memcpy(ip + 12, src, 4);
	memcpy(ip + 16, dst, 4);
	uint16_t c = csum(ip, 20, 0);
	ip[10] = (uint8_t)(c >> 8); ip[11] = (uint8_t)c;
	return 34;
}

/* ---- parsing helpers ---- */
static int parse_time(struct ctx *x, const char *tok, uint64_t *out)
{
	char *end;
	int rel = tok[0] == '+';
	double v = strtod(tok + rel, &end);
	if (*end || v < 0)
		return -1;
	uint64_t ns = (uint64_t)(v * 1e9 + 0.5);
	*out = rel ? x->now + ns : ns;
	return 0;
}

static uint8_t parse_flags(const char *s, int *ok)
{
	uint8_t f = 0;
	*ok = 1;
	for (; *s; s++) {
		switch (*s) {
		case 'S': f |= 0x02; break;
		case 'F': f |= 0x01; break;
		case 'R': f |= 0x04; break;
		case 'P': f |= 0x08; break;
		case '.': f |= 0x10; break;
		case 'U': f |= 0x20; break;
		default: *ok = 0;
		}
	}
	return f;
}

static void flags_str(uint8_t f, char *o)
{
	if (f & 0x02) *o++ = 'S';
	if (f & 0x01) *o++ = 'F';
	if (f & 0x04) *o++ = 'R';
	if (f & 0x08) *o++ = 'P';
	if (f & 0x20) *o++ = 'U';
	if (f & 0x10) *o++ = '.';
	*o = 0;
}

struct seqspec { uint32_t s, e, l; };

static int parse_seq(const char *t, struct seqspec *sp)
{
	unsigned long s, e, l;
	if (sscanf(t, "%lu:%lu(%lu)", &s, &e, &l) != 3 || e - s != l)
		return -1;
	sp->s = (uint32_t)s; sp->e = (uint32_t)e; sp->l = (uint32_t)l;
	return 0;
}

/* Options: "mss 1460,sackOK,TS val 1 ecr 2,nop,wscale 7,sack 1:10 20:30,eol"
 * Wildcard '*' in expected values. */
struct optitem {
	char kind[12];
	int nv;
	long v[8];                      /* -1 = wildcard */
};

static int parse_optlist(char *s, struct optitem *it, int max)
{
	int n = 0;
	char *save = NULL;
	for (char *p = strtok_r(s, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		if (n >= max)
			return -1;
		struct optitem *o = &it[n++];
		memset(o, 0, sizeof(*o));
		char *save2 = NULL;
		char *w = strtok_r(p, " ", &save2);
		if (!w)
			return -1;
		snprintf(o->kind, sizeof(o->kind), "%s", w);
		while ((w = strtok_r(NULL, " ", &save2))) {
			if (!strcmp(w, "val") || !strcmp(w, "ecr"))
				continue;
			if (o->nv >= 8)
				return -1;
			if (!strcmp(w, "*")) {
				o->v[o->nv++] = -1;
			} else if (strchr(w, ':')) {
				unsigned long a, b;
				if (sscanf(w, "%lu:%lu", &a, &b) != 2 || o->nv + 2 > 8)
					return -1;
				o->v[o->nv++] = (long)a;
				o->v[o->nv++] = (long)b;
			} else {
				char *end;
				o->v[o->nv++] = strtol(w, &end, 0);
				if (*end)
					return -1;
			}
		}
	}
	return n;
}

/* Encodes options for an inbound segment; sack/ecr translated. */
static int encode_opts(struct ctx *x, struct pconn *p, struct optitem *it, int n, uint8_t *o)
{
	int len = 0;
	for (int i = 0; i < n; i++) {
		struct optitem *q = &it[i];
		if (!strcmp(q->kind, "nop")) {
			o[len++] = 1;
		} else if (!strcmp(q->kind, "eol")) {
			o[len++] = 0;
		} else if (!strcmp(q->kind, "mss")) {
			o[len++] = 2; o[len++] = 4;
			o[len++] = (uint8_t)(q->v[0] >> 8); o[len++] = (uint8_t)q->v[0];
		} else if (!strcmp(q->kind, "wscale")) {
			o[len++] = 3; o[len++] = 3; o[len++] = (uint8_t)q->v[0];
		} else if (!strcmp(q->kind, "sackOK")) {
			o[len++] = 4; o[len++] = 2;
		} else if (!strcmp(q->kind, "TS")) {
			uint32_t val = (uint32_t)q->v[0];
			uint32_t ecr = q->v[1] < 0 ? p->last_tsval : (uint32_t)q->v[1];
			o[len++] = 8; o[len++] = 10;
			for (int k = 3; k >= 0; k--) o[len++] = (uint8_t)(val >> (8 * k));
			for (int k = 3; k >= 0; k--) o[len++] = (uint8_t)(ecr >> (8 * k));
		} else if (!strcmp(q->kind, "sack")) {
			o[len++] = 5; o[len++] = (uint8_t)(2 + 4 * q->nv);
			for (int j = 0; j < q->nv; j++) {
				uint32_t v = p->iss + (uint32_t)q->v[j];
				for (int k = 3; k >= 0; k--) o[len++] = (uint8_t)(v >> (8 * k));
			}
		} else if (!strcmp(q->kind, "bad")) {
			/* malformed: kind 2 with length 1 */
			o[len++] = 2; o[len++] = 1;
		} else if (!strcmp(q->kind, "raw")) {
			for (int j = 0; j < q->nv; j++) o[len++] = (uint8_t)q->v[j];
		} else {
			return -1;
		}
		if (len > 40)
			return -1;
	}
	while (len % 4)
		o[len++] = 1;
	return len;
}

/* Compares a received option block against expectations. */
static int match_opts(struct ctx *x, struct pconn *p, const uint8_t *o, uint32_t olen,
                      struct optitem *it, int n, char *why, size_t wl)
{
	uint32_t i = 0;
	int k = 0;
	while (i < olen) {
		uint8_t kind = o[i];
		if (k >= n) {
			if (kind == 0) break;
			snprintf(why, wl, "extra option kind %u", kind);
			return -1;
		}
		struct optitem *q = &it[k++];
		long got[8];
		int ng = 0;
		const char *name;
		uint32_t l = kind <= 1 ? 1 : (i + 1 < olen ? o[i + 1] : 0);
		if (l == 0 || i + l > olen) {
			snprintf(why, wl, "bad option length");
			return -1;
		}
		switch (kind) {
		case 0: name = "eol"; break;
		case 1: name = "nop"; break;
		case 2: name = "mss"; got[ng++] = o[i + 2] << 8 | o[i + 3]; break;
		case 3: name = "wscale"; got[ng++] = o[i + 2]; break;
		case 4: name = "sackOK"; break;
		case 5:
			name = "sack";
			for (uint32_t j = 2; j + 4 <= l && ng < 8; j += 4) {
				uint32_t v = (uint32_t)o[i + j] << 24 | o[i + j + 1] << 16 | o[i + j + 2] << 8 | o[i + j + 3];
				got[ng++] = (long)(uint32_t)(v - PEER_ISN);
			}
			break;
		case 8: {
			name = "TS";
			uint32_t v = (uint32_t)o[i + 2] << 24 | o[i + 3] << 16 | o[i + 4] << 8 | o[i + 5];
			uint32_t e = (uint32_t)o[i + 6] << 24 | o[i + 7] << 16 | o[i + 8] << 8 | o[i + 9];
			got[ng++] = v;
			got[ng++] = e;
			p->last_tsval = v;
			break;
		}
		default: name = "?"; break;
		}
		if (strcmp(name, q->kind)) {
			snprintf(why, wl, "option %d: got %.11s want %.11s", k, name, q->kind);
			return -1;
		}
		if (ng != q->nv && !(ng == 2 && !strcmp(name, "TS") && q->nv == 2)) {
			snprintf(why, wl, "option %s: %d values, want %d", name, ng, q->nv);
			return -1;
		}
		for (int j = 0; j < ng && j < q->nv; j++)
			if (q->v[j] >= 0 && q->v[j] != got[j]) {
				snprintf(why, wl, "option %s value %d: got %ld want %ld", name, j, got[j], q->v[j]);
				return -1;
			}
		i += l;
		if (kind == 0)
			break;
	}
	if (k < n) {
		snprintf(why, wl, "missing option %s", it[k].kind);
		return -1;
	}
	return 0;
}

/* ---- command execution ---- */

static char *tok_next(char **s)
{
	while (**s == ' ' || **s == '\t') (*s)++;
	if (!**s) return NULL;
	char *b = *s;
	while (**s && **s != ' ' && **s != '\t') (*s)++;
	if (**s) *(*s)++ = 0;
	return b;
}

static int start_stack(struct ctx *x)
{
	if (x->st)
		return 0;
	x->cfg.ops.ctx = x;
	x->cfg.ops.tx_alloc = cb_alloc;
	x->cfg.ops.tx_send = cb_send;
	x->st = tcp_create(&x->cfg);
	if (!x->st) {
		fail(x, "tcp_create: %s", strerror(errno));
		return -1;
	}
	if (!x->noseed) {
		struct tcp_addr a = { .family = 4 };
		addr_of(0, 0, a.a);
		tcp_neigh_add(x->st, &a, peer_mac);
		struct tcp_addr a6 = { .family = 6 };
		addr_of(1, 0, a6.a);
		tcp_neigh_add(x->st, &a6, peer_mac);
	}
	tcp_service(x->st, BASE_NS);
	x->qn = 0;              /* seeding sends nothing, but be safe */
	return 0;
}

static int set_opt(struct ctx *x, const char *k, const char *v)
{
	long n = strtol(v, NULL, 0);
	struct tcp_config *c = &x->cfg;
#define O(name) if (!strcmp(k, #name)) { c->name = (__typeof__(c->name))n; return 0; }
	O(no_sack) O(no_timestamps) O(no_wscale) O(syncookies) O(rcvbuf) O(sndbuf)
	O(max_conns) O(syn_backlog) O(rto_min_ms) O(rto_max_ms) O(rto_init_ms) O(delack_ms)
	O(msl_ms) O(max_retries) O(syn_retries) O(keepalive_ms) O(mtu) O(cc_reno)
	O(ooo_max_segs) O(rx_segs) O(tx_chunks) O(vlan_id) O(neigh_pending) O(neigh_timeout_ms) O(no_tlp)
#undef O
	if (!strcmp(k, "v6")) { x->v6 = (int)n; return 0; }
	if (!strcmp(k, "noseed")) { x->noseed = (int)n; return 0; }
	if (!strcmp(k, "lport")) { x->lport = (uint16_t)n; return 0; }
	return -1;
}

static const char *ev_names[] = { "accept", "connected", "readable", "writable", "eof", "closed" };

static uint32_t ev_bit(const char *n)
{
	for (unsigned i = 0; i < 6; i++)
		if (!strcmp(n, ev_names[i]))
			return 1u << i;
	return 0;
}

static int errno_of(const char *s)
{
	if (!strcmp(s, "ECONNRESET")) return ECONNRESET;
	if (!strcmp(s, "ETIMEDOUT")) return ETIMEDOUT;
	if (!strcmp(s, "ECONNREFUSED")) return ECONNREFUSED;
	if (!strcmp(s, "0")) return 0;
	return -1;
}

static uint64_t stat_by_name(struct ctx *x, const char *n, int *ok)
{
	struct tcp_stats s;
	tcp_stats_get(x->st, &s);
	*ok = 1;
#define S(f) if (!strcmp(n, #f)) return s.f;
	S(rx_frames) S(tx_frames) S(retransmits) S(fast_retransmits) S(rto_fired) S(syn_rcvd) S(rec_probes) S(tlp_probes)
	S(syncookies_sent) S(syncookies_ok) S(challenge_acks) S(conns_accepted)
	S(conns_connected) S(conns_reset) S(conns_timeout) S(time_wait_reused)
	S(time_wait_recycled) S(neigh_evicted) S(arp_replies) S(arp_requests) S(icmp_echo) S(icmp6_echo)
	S(ndp_adverts) S(ndp_solicits) S(pmtu_updates) S(conns_active)
#undef S
	for (unsigned i = 0; i < TCP_DROP__COUNT; i++)
		if (!strcmp(n, tcp_drop_reason_name(i)))
			return s.drops[i];
	*ok = 0;
	return 0;
}

/* Inbound TCP segment. */
static void cmd_in_tcp(struct ctx *x, char *rest)
{
	char optbuf[512];
	char *optstr = NULL, *lt = strchr(rest, '<');
	if (lt) {
		char *gt = strchr(lt, '>');
		if (!gt) { fail(x, "unterminated <options>"); return; }
		*gt = 0;
		snprintf(optbuf, sizeof(optbuf), "%s", lt + 1);
		optstr = optbuf;
		memmove(lt, gt + 1, strlen(gt + 1) + 1);
	}
	char *t = tok_next(&rest);
	int ok;
	uint8_t fl = parse_flags(t, &ok);
	if (!ok) { fail(x, "bad flags %s", t); return; }
	struct seqspec sp;
	t = tok_next(&rest);
	if (!t || parse_seq(t, &sp) < 0) { fail(x, "bad seq spec"); return; }
	uint32_t ack = 0, win = 65535, trunc = 0, tcpoff = 0;
	int badcsum = 0, ipbad = 0, frag = 0, has_ack = 0;
	uint16_t port = 40000;
	while ((t = tok_next(&rest))) {
		char *v;
		if (!strcmp(t, "ack") && (v = tok_next(&rest))) { ack = (uint32_t)strtoul(v, NULL, 0); has_ack = 1; }
		else if (!strcmp(t, "win") && (v = tok_next(&rest))) win = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(t, "port") && (v = tok_next(&rest))) port = (uint16_t)strtoul(v, NULL, 0);
		else if (!strcmp(t, "trunc") && (v = tok_next(&rest))) trunc = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(t, "tcpoff") && (v = tok_next(&rest))) tcpoff = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(t, "badcsum")) badcsum = 1;
		else if (!strcmp(t, "ipbadcsum")) ipbad = 1;
		else if (!strcmp(t, "frag")) frag = 1;
		else { fail(x, "unknown token %s", t); return; }
	}
	struct pconn *p = pconn_get(x, port);
	struct optitem it[16];
	int nit = 0;
	if (optstr && (nit = parse_optlist(optstr, it, 16)) < 0) { fail(x, "bad options"); return; }
	uint8_t opts[44];
	int olen = encode_opts(x, p, it, nit, opts);
	if (olen < 0) { fail(x, "bad options"); return; }
	uint8_t f[2048];
	uint32_t l4len = 20 + (uint32_t)olen + sp.l;
	uint8_t src[16], dst[16];
	addr_of(x->v6, 0, src);
	addr_of(x->v6, 1, dst);
	uint32_t off = build_ip(x->v6, f, 6, l4len, 64, src, dst, stack_mac);
	uint8_t *th = f + off;
	memset(th, 0, 20);
	th[0] = (uint8_t)(port >> 8); th[1] = (uint8_t)port;
	th[2] = (uint8_t)(x->lport >> 8); th[3] = (uint8_t)x->lport;
	uint32_t seq = PEER_ISN + sp.s, a = has_ack ? p->iss + ack : 0;
	for (int k = 0; k < 4; k++) { th[4 + k] = (uint8_t)(seq >> (24 - 8 * k)); th[8 + k] = (uint8_t)(a >> (24 - 8 * k)); }
	th[12] = (uint8_t)(((20 + olen) / 4) << 4);
	if (tcpoff) th[12] = (uint8_t)(tcpoff << 4);
	th[13] = fl;
	th[14] = (uint8_t)(win >> 8); th[15] = (uint8_t)win;
	memcpy(th + 20, opts, (size_t)olen);
	/* payload: peer stream offset = seq - 1 (SYN takes 0) */
	for (uint32_t i = 0; i < sp.l; i++)
		th[20 + olen + i] = pat_in((uint64_t)sp.s + i - 1);
	uint16_t c = csum(th, l4len, pseudo(x->v6, src, dst, 6, l4len));
	if (badcsum) c ^= 0x5555;
	th[16] = (uint8_t)(c >> 8); th[17] = (uint8_t)c;
	if (!x->v6 && (ipbad || frag)) {
		uint8_t *ip = f + 14;
		if (frag) ip[6] = 0x20;    /* MF */
		ip[10] = ip[11] = 0;
		uint16_t ic = csum(ip, 20, 0);
		if (ipbad) ic ^= 0x1111;
		ip[10] = (uint8_t)(ic >> 8); ip[11] = (uint8_t)ic;
	}
	uint32_t flen = off + l4len;
	if (trunc && trunc < flen)
		flen = trunc;
	inject(x, f, flen);
}

static struct frame *next_frame(struct ctx *x, uint64_t t)
{
	/* Let timers run up to t + tolerance, stopping at the first frame. */
	if (x->qn == 0) {
		tcp_service(x->st, BASE_NS + x->now);
		poll_events(x);
	}
	while (x->qn == 0 && x->now < t + TOL_NS) {
		uint64_t nt = x->now + 1000000ULL;
		run_to(x, nt > t + TOL_NS ? t + TOL_NS : nt);
	}
	if (x->qn == 0) {
		fail(x, "expected a frame at %.3f, none sent", (double)t / 1e9);
		return NULL;
	}
	struct frame *fr = &x->q[0];
	if (fr->t + TOL_NS < t || fr->t > t + TOL_NS) {
		fail(x, "frame sent at %.3f, expected at %.3f", (double)fr->t / 1e9, (double)t / 1e9);
		return NULL;
	}
	return fr;
}

static void pop_frame(struct ctx *x)
{
	free(x->q[0].d);
	memmove(&x->q[0], &x->q[1], sizeof(x->q[0]) * (x->qn - 1));
	x->qn--;
}

/* Parses an outgoing IP frame; returns L4 pointer or NULL. */
static const uint8_t *l4_of(struct ctx *x, struct frame *fr, uint8_t proto, uint32_t *l4len,
                            const uint8_t **ip)
{
	uint32_t l2 = x->cfg.vlan_id ? 18 : 14;
	if (fr->len < l2 + 20) return NULL;
	if (memcmp(fr->d, peer_mac, 6) && !(fr->d[0] == 0x33 && fr->d[1] == 0x33)) {
		fail(x, "frame not addressed to the peer MAC");
		return NULL;
	}
	const uint8_t *p = fr->d + l2;
	*ip = p;
	if (x->v6) {
		if ((p[0] >> 4) != 6 || p[6] != proto) return NULL;
		uint32_t pl = (uint32_t)(p[4] << 8 | p[5]);
		if (l2 + 40 + pl != fr->len) { fail(x, "bad IPv6 length"); return NULL; }
		uint8_t s[16], d[16];
		addr_of(1, 1, s); addr_of(1, 0, d);
		if (memcmp(p + 8, s, 16) || memcmp(p + 24, d, 16)) { fail(x, "bad IPv6 addresses"); return NULL; }
		if (csum(p + 40, pl, pseudo(1, p + 8, p + 24, proto, pl))) { fail(x, "bad L4 checksum in IPv6 frame"); return NULL; }
		*l4len = pl;
		return p + 40;
	}
	if (p[0] != 0x45 || p[9] != proto) return NULL;
	uint32_t tot = (uint32_t)(p[2] << 8 | p[3]);
	if (tot < 20 || l2 + tot > fr->len) { fail(x, "bad IPv4 length"); return NULL; }
	if (csum(p, 20, 0)) { fail(x, "bad IPv4 header checksum"); return NULL; }
	uint8_t s[16], d[16];
	addr_of(0, 1, s); addr_of(0, 0, d);
	if (memcmp(p + 12, s, 4) || memcmp(p + 16, d, 4)) { fail(x, "bad IPv4 addresses"); return NULL; }
	if (csum(p + 20, tot - 20, proto == 1 ? 0 : pseudo(0, p + 12, p + 16, proto, tot - 20))) { fail(x, "bad L4 checksum"); return NULL; }
	*l4len = tot - 20;
	return p + 20;
}

static void cmd_out_tcp(struct ctx *x, uint64_t t, char *rest)
{
	char optbuf[512];
	char *optstr = NULL, *lt = strchr(rest, '<');
	if (lt) {
		char *gt = strrchr(lt, '>');
		if (!gt) { fail(x, "unterminated <options>"); return; }
		*gt = 0;
		snprintf(optbuf, sizeof(optbuf), "%s", lt + 1);
		optstr = optbuf;
		memmove(lt, gt + 1, strlen(gt + 1) + 1);
	}
	char *tk = tok_next(&rest);
	int ok;
	uint8_t fl = parse_flags(tk, &ok);
	if (!ok) { fail(x, "bad flags %s", tk); return; }
	struct seqspec sp;
	tk = tok_next(&rest);
	if (!tk || parse_seq(tk, &sp) < 0) { fail(x, "bad seq spec"); return; }
	long ack = -1, win = -1;
	uint16_t port = 40000;
	char *v;
	while ((tk = tok_next(&rest))) {
		if (!strcmp(tk, "ack") && (v = tok_next(&rest))) ack = strtol(v, NULL, 0);
		else if (!strcmp(tk, "win") && (v = tok_next(&rest))) win = strtol(v, NULL, 0);
		else if (!strcmp(tk, "port") && (v = tok_next(&rest))) port = (uint16_t)strtoul(v, NULL, 0);
		else { fail(x, "unknown token %s", tk); return; }
	}
	struct frame *fr = next_frame(x, t);
	if (!fr) return;
	const uint8_t *ip;
	uint32_t l4len;
	const uint8_t *th = l4_of(x, fr, 6, &l4len, &ip);
	if (!th) { if (!x->failed) fail(x, "expected a TCP segment, got something else"); return; }
	struct pconn *p = pconn_get(x, port);
	uint16_t dport = (uint16_t)(th[2] << 8 | th[3]), sport = (uint16_t)(th[0] << 8 | th[1]);
	uint32_t seq = (uint32_t)th[4] << 24 | th[5] << 16 | th[6] << 8 | th[7];
	uint32_t a = (uint32_t)th[8] << 24 | th[9] << 16 | th[10] << 8 | th[11];
	uint32_t doff = (uint32_t)(th[12] >> 4) * 4;
	uint8_t gfl = th[13] & 0x3f;
	uint16_t gwin = (uint16_t)(th[14] << 8 | th[15]);
	uint32_t dlen = l4len - doff;
	char gf[8], wf[8];
	flags_str(gfl, gf);
	flags_str(fl, wf);
	if (dport != port || sport != x->lport) { fail(x, "ports %u->%u, want %u->%u", sport, dport, x->lport, port); return; }
	if (gfl & 0x02) { p->iss = seq; p->have_iss = 1; }
	uint32_t rseq = seq - p->iss, rack = a - PEER_ISN;
	if (gfl != fl) { fail(x, "flags %s want %s (seq %u ack %u len %u)", gf, wf, rseq, rack, dlen); return; }
	if (rseq != sp.s || dlen != sp.l) { fail(x, "seq %u(%u) want %u(%u)", rseq, dlen, sp.s, sp.l); return; }
	if (ack >= 0 && rack != (uint32_t)ack) { fail(x, "ack %u want %ld", rack, ack); return; }
	if (win >= 0 && gwin != win) { fail(x, "win %u want %ld", gwin, win); return; }
	char why[2048];
	if (optstr) {
		struct optitem it[16];
		int nit = parse_optlist(optstr, it, 16);
		if (nit < 0) { fail(x, "bad options"); return; }
		if (match_opts(x, p, th + 20, doff - 20, it, nit, why, sizeof(why)) < 0) { fail(x, "%s", why); return; }
	} else {
		struct optitem none[1];
		/* still learn TS val for ecr * */
		(void)none;
		for (uint32_t i = 20; i + 10 <= doff;) {
			if (th[i] == 1) { i++; continue; }
			if (th[i] == 8) { p->last_tsval = (uint32_t)th[i + 2] << 24 | th[i + 3] << 16 | th[i + 4] << 8 | th[i + 5]; break; }
			if (th[i] == 0 || th[i + 1] < 2) break;
			i += th[i + 1];
		}
	}
	for (uint32_t i = 0; i < dlen; i++)
		if (th[doff + i] != pat_out((uint64_t)rseq + i - 1)) {
			fail(x, "payload byte %u differs", i);
			return;
		}
	pop_frame(x);
}

static int parse_ip(int v6, const char *s, uint8_t out[16])
{
	memset(out, 0, 16);
	return inet_pton(v6 ? AF_INET6 : AF_INET, s, out) == 1 ? 0 : -1;
}

static void cmd_in_other(struct ctx *x, const char *kind, char *rest)
{
	uint8_t f[2048], src[16], dst[16];
	char *t;
	addr_of(x->v6, 0, src);
	addr_of(x->v6, 1, dst);
	if (!strcmp(kind, "arp")) {
		/* < arp who-has IP [tell IP] [op N] [short] */
		t = tok_next(&rest);
		char *tip = tok_next(&rest);
		uint8_t tpa[16], spa[16];
		if (!t || !tip || parse_ip(0, tip, tpa)) { fail(x, "bad arp line"); return; }
		addr_of(0, 0, spa);
		int op = !strcmp(t, "who-has") ? 1 : 2, len = 42;
		while ((t = tok_next(&rest))) {
			if (!strcmp(t, "tell")) { char *s = tok_next(&rest); if (!s || parse_ip(0, s, spa)) { fail(x, "bad tell"); return; } }
			else if (!strcmp(t, "short")) len = 30;
			else if (!strcmp(t, "op")) { char *s = tok_next(&rest); op = s ? atoi(s) : 0; }
			else { fail(x, "unknown token %s", t); return; }
		}
		memset(f, 0, sizeof(f));
		memcpy(f, op == 1 ? (const uint8_t[6]){ 255, 255, 255, 255, 255, 255 } : stack_mac, 6);
		memcpy(f + 6, peer_mac, 6);
		f[12] = 8; f[13] = 6;
		uint8_t *a = f + 14;
		a[1] = 1; a[2] = 8; a[4] = 6; a[5] = 4; a[7] = (uint8_t)op;
		memcpy(a + 8, peer_mac, 6);
		memcpy(a + 14, spa, 4);
		if (op != 1) memcpy(a + 18, stack_mac, 6);
		memcpy(a + 24, tpa, 4);
		inject(x, f, len < 60 && len != 30 ? 60 : (uint32_t)len);
		return;
	}
	if (!strcmp(kind, "icmp") || !strcmp(kind, "icmp6")) {
		int v6 = !strcmp(kind, "icmp6");
		t = tok_next(&rest);
		if (!t) { fail(x, "bad icmp line"); return; }
		uint8_t ic[1600];
		uint32_t len;
		int badcsum = 0;
		addr_of(v6, 0, src);
		addr_of(v6, 1, dst);
		if (!strcmp(t, "echo")) {
			char *a = tok_next(&rest), *b = tok_next(&rest), *c = tok_next(&rest);
			if (!a || !b || !c) { fail(x, "bad echo"); return; }
			len = 8 + (uint32_t)atoi(c);
			if (len > 1500) len = 1500;
			memset(ic, 0, len);
			ic[0] = v6 ? 128 : 8;
			ic[4] = (uint8_t)(atoi(a) >> 8); ic[5] = (uint8_t)atoi(a);
			ic[6] = (uint8_t)(atoi(b) >> 8); ic[7] = (uint8_t)atoi(b);
			for (uint32_t i = 8; i < len; i++) ic[i] = (uint8_t)i;
		} else if (!strcmp(t, "fragneeded") || !strcmp(t, "toobig")) {
			char *m = tok_next(&rest), *s = tok_next(&rest);
			if (!m || !s) { fail(x, "bad fragneeded"); return; }
			uint32_t mtu = (uint32_t)atoi(m);
			struct pconn *p = pconn_get(x, 40000);
			memset(ic, 0, 8);
			ic[0] = v6 ? 2 : 3; ic[1] = v6 ? 0 : 4;
			if (v6) { ic[4] = (uint8_t)(mtu >> 24); ic[5] = (uint8_t)(mtu >> 16); ic[6] = (uint8_t)(mtu >> 8); ic[7] = (uint8_t)mtu; }
			else { ic[6] = (uint8_t)(mtu >> 8); ic[7] = (uint8_t)mtu; }
			/* embedded original datagram: stack -> peer */
			uint8_t *in = ic + 8;
			uint32_t ih = v6 ? 40 : 20;
			memset(in, 0, ih + 8);
			if (v6) { in[0] = 0x60; in[6] = 6; in[7] = 64; memcpy(in + 8, dst, 16); memcpy(in + 24, src, 16); }
			else { in[0] = 0x45; in[3] = 40 + 200; in[9] = 6; memcpy(in + 12, dst, 4); memcpy(in + 16, src, 4); }
			uint8_t *tt = in + ih;
			tt[0] = (uint8_t)(x->lport >> 8); tt[1] = (uint8_t)x->lport;
			tt[2] = 40000 >> 8; tt[3] = 40000 & 0xff;
			uint32_t sq = p->iss + (uint32_t)atoi(s);
			tt[4] = (uint8_t)(sq >> 24); tt[5] = (uint8_t)(sq >> 16); tt[6] = (uint8_t)(sq >> 8); tt[7] = (uint8_t)sq;
			len = 8 + ih + 8;
		} else {
			fail(x, "unknown icmp %s", t);
			return;
		}
		while ((t = tok_next(&rest))) {
			if (!strcmp(t, "badcsum")) badcsum = 1;
			else { fail(x, "unknown token %s", t); return; }
		}
		uint16_t c = csum(ic, len, v6 ? pseudo(1, src, dst, 58, len) : 0);
		if (badcsum) c ^= 0x4242;
		ic[2] = (uint8_t)(c >> 8); ic[3] = (uint8_t)c;
		uint32_t off = build_ip(v6, f, v6 ? 58 : 1, len, 64, src, dst, stack_mac);
		memcpy(f + off, ic, len);
		inject(x, f, off + len);
		return;
	}
	if (!strcmp(kind, "ns") || !strcmp(kind, "na")) {
		char *tg = tok_next(&rest);
		uint8_t target[16], ic[64];
		if (!tg || parse_ip(1, tg, target)) { fail(x, "bad ns target"); return; }
		int nolla = 0, hlim = 255, dad = 0;
		while ((t = tok_next(&rest))) {
			if (!strcmp(t, "nolla")) nolla = 1;
			else if (!strcmp(t, "hlim")) { char *s = tok_next(&rest); hlim = s ? atoi(s) : 0; }
			else if (!strcmp(t, "dad")) dad = 1;
			else { fail(x, "unknown token %s", t); return; }
		}
		addr_of(1, 0, src);
		uint32_t len = nolla ? 24 : 32;
		memset(ic, 0, len);
		ic[0] = !strcmp(kind, "ns") ? 135 : 136;
		if (ic[0] == 136) ic[4] = 0x60;
		memcpy(ic + 8, target, 16);
		if (!nolla) { ic[24] = ic[0] == 135 ? 1 : 2; ic[25] = 1; memcpy(ic + 26, peer_mac, 6); }
		if (dad) memset(src, 0, 16);
		uint8_t d[16];
		if (ic[0] == 135) {
			static const uint8_t pfx[13] = { 0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff };
			memcpy(d, pfx, 13);
			memcpy(d + 13, target + 13, 3);
		} else {
			addr_of(1, 1, d);
		}
		uint16_t c = csum(ic, len, pseudo(1, src, d, 58, len));
		ic[2] = (uint8_t)(c >> 8); ic[3] = (uint8_t)c;
		uint8_t dmac[6] = { 0x33, 0x33, d[12], d[13], d[14], d[15] };
		uint32_t off = build_ip(1, f, 58, len, (uint8_t)hlim, src, d, ic[0] == 135 ? dmac : stack_mac);
		memcpy(f + off, ic, len);
		inject(x, f, off + len);
		return;
	}
	if (!strcmp(kind, "raw")) {
		uint32_t n = 0;
		while ((t = tok_next(&rest)))
			for (char *h = t; h[0] && h[1] && n < sizeof(f); h += 2) {
				unsigned v;
				if (sscanf(h, "%2x", &v) != 1) { fail(x, "bad hex"); return; }
				f[n++] = (uint8_t)v;
			}
		inject(x, f, n);
		return;
	}
	fail(x, "unknown inbound kind %s", kind);
}

static void cmd_out_other(struct ctx *x, uint64_t t, const char *kind, char *rest)
{
	struct frame *fr = next_frame(x, t);
	if (!fr) return;
	char *tk;
	if (!strcmp(kind, "arp")) {
		/* > arp reply | > arp who-has IP */
		tk = tok_next(&rest);
		uint32_t l2 = 14;
		if (fr->len < 42 || fr->d[12] != 8 || fr->d[13] != 6) { fail(x, "expected ARP"); return; }
		const uint8_t *a = fr->d + l2;
		uint8_t me[16], peer[16];
		addr_of(0, 1, me); addr_of(0, 0, peer);
		if (memcmp(a + 8, stack_mac, 6) || memcmp(a + 14, me, 4)) { fail(x, "ARP sender wrong"); return; }
		if (tk && !strcmp(tk, "reply")) {
			if (a[7] != 2 || memcmp(a + 18, peer_mac, 6) || memcmp(a + 24, peer, 4) || memcmp(fr->d, peer_mac, 6)) {
				fail(x, "not an ARP reply to the peer");
				return;
			}
		} else if (tk && !strcmp(tk, "who-has")) {
			char *ip = tok_next(&rest);
			uint8_t tpa[16];
			if (!ip || parse_ip(0, ip, tpa)) { fail(x, "bad ip"); return; }
			if (a[7] != 1 || memcmp(a + 24, tpa, 4) || fr->d[0] != 0xff) { fail(x, "not an ARP request for %s", ip); return; }
		} else {
			fail(x, "bad arp expectation");
			return;
		}
		pop_frame(x);
		return;
	}
	if (!strcmp(kind, "icmp") || !strcmp(kind, "icmp6")) {
		int v6 = !strcmp(kind, "icmp6");
		int sv = x->v6;
		x->v6 = v6;
		const uint8_t *ip;
		uint32_t l4len;
		const uint8_t *ic = l4_of(x, fr, v6 ? 58 : 1, &l4len, &ip);
		x->v6 = sv;
		if (!ic) { if (!x->failed) fail(x, "expected ICMP"); return; }
		tk = tok_next(&rest);
		char *a = tok_next(&rest), *b = tok_next(&rest), *c = tok_next(&rest);
		if (!tk || strcmp(tk, "echoreply") || !a || !b || !c) { fail(x, "bad icmp expectation"); return; }
		if (ic[0] != (v6 ? 129 : 0) || (ic[4] << 8 | ic[5]) != atoi(a) || (ic[6] << 8 | ic[7]) != atoi(b) ||
		    l4len != 8 + (uint32_t)atoi(c)) {
			fail(x, "echo reply mismatch (type %u len %u)", ic[0], l4len);
			return;
		}
		for (uint32_t i = 8; i < l4len; i++)
			if (ic[i] != (uint8_t)i) { fail(x, "echo payload differs"); return; }
		if (!v6 && ic[1] != 0) { fail(x, "bad code"); return; }
		pop_frame(x);
		return;
	}
	if (!strcmp(kind, "na") || !strcmp(kind, "ns")) {
		int sv = x->v6;
		x->v6 = 1;
		uint32_t l2 = 14;
		x->v6 = sv;
		if (fr->len < l2 + 40 + 24 || fr->d[12] != 0x86 || fr->d[13] != 0xdd) { fail(x, "expected IPv6"); return; }
		const uint8_t *ip = fr->d + l2, *ic = ip + 40;
		uint32_t pl = (uint32_t)(ip[4] << 8 | ip[5]);
		if (ip[6] != 58 || ip[7] != 255 || csum(ic, pl, pseudo(1, ip + 8, ip + 24, 58, pl))) { fail(x, "bad NDP packet"); return; }
		char *tg = tok_next(&rest);
		uint8_t target[16];
		if (!tg || parse_ip(1, tg, target)) { fail(x, "bad target"); return; }
		if (memcmp(ic + 8, target, 16)) { fail(x, "NDP target differs"); return; }
		if (!strcmp(kind, "na")) {
			if (ic[0] != 136 || !(ic[4] & 0x40) || pl < 32 || ic[24] != 2 || memcmp(ic + 26, stack_mac, 6)) {
				fail(x, "not a solicited NA with our MAC");
				return;
			}
		} else {
			if (ic[0] != 135 || fr->d[0] != 0x33 || pl < 32 || ic[24] != 1 || memcmp(ic + 26, stack_mac, 6)) {
				fail(x, "not a multicast NS with our MAC");
				return;
			}
		}
		pop_frame(x);
		return;
	}
	fail(x, "unknown outbound kind %s", kind);
}

static void check_quiet(struct ctx *x)
{
	if (x->qn) {
		char d[200] = "";
		struct frame *fr = &x->q[0];
		const uint8_t *ip;
		uint32_t l4len;
		int sv = x->failed;
		const uint8_t *th = l4_of(x, fr, 6, &l4len, &ip);
		x->failed = sv;
		x->err[0] = x->err[0];
		if (th) {
			char gf[8];
			flags_str(th[13] & 0x3f, gf);
			struct pconn *p = pconn_get(x, (uint16_t)(th[2] << 8 | th[3]));
			uint32_t seq = (uint32_t)th[4] << 24 | th[5] << 16 | th[6] << 8 | th[7];
			uint32_t a = (uint32_t)th[8] << 24 | th[9] << 16 | th[10] << 8 | th[11];
			snprintf(d, sizeof(d), " (TCP %s seq %u ack %u len %u)", gf, seq - p->iss, a - PEER_ISN,
			         l4len - (uint32_t)(th[12] >> 4) * 4);
		}
		fail(x, "unexpected frame at %.3f%s", (double)fr->t / 1e9, d);
	}
}

static struct pconn *cur(struct ctx *x, uint16_t port)
{
	return pconn_get(x, port);
}

static void exec_line(struct ctx *x, char *line)
{
	char *s = line, *tt = tok_next(&s);
	if (!tt)
		return;
	if (!strcmp(tt, "opt")) {
		char *k = tok_next(&s), *v = tok_next(&s);
		if (!k || !v || x->st || set_opt(x, k, v) < 0)
			fail(x, "bad opt line");
		return;
	}
	uint64_t t;
	if (parse_time(x, tt, &t) < 0) {
		fail(x, "bad time '%s'", tt);
		return;
	}
	if (start_stack(x) < 0)
		return;
	char *cmd = tok_next(&s);
	if (!cmd) {
		fail(x, "missing command");
		return;
	}
	if (!strcmp(cmd, ">")) {
		char *kind = s;
		while (*kind == ' ') kind++;
		if (!strncmp(kind, "arp ", 4) || !strncmp(kind, "icmp ", 5) || !strncmp(kind, "icmp6 ", 6) ||
		    !strncmp(kind, "na ", 3) || !strncmp(kind, "ns ", 3)) {
			char *k = tok_next(&s);
			cmd_out_other(x, t, k, s);
		} else {
			cmd_out_tcp(x, t, s);
		}
		return;
	}
	if (t < x->now && x->now - t <= TOL_NS)
		t = x->now;      /* a '>' line waited into the tolerance window */
	if (t < x->now) {
		fail(x, "time goes backwards");
		return;
	}
	run_to(x, t);
	check_quiet(x);
	if (x->failed)
		return;
	uint16_t port = 40000;
	struct pconn *p = cur(x, port);
	if (!strcmp(cmd, "<")) {
		char *kind = s;
		while (*kind == ' ') kind++;
		if (!strncmp(kind, "arp ", 4) || !strncmp(kind, "icmp ", 5) || !strncmp(kind, "icmp6 ", 6) ||
		    !strncmp(kind, "ns ", 3) || !strncmp(kind, "na ", 3) || !strncmp(kind, "raw ", 4)) {
			char *k = tok_next(&s);
			cmd_in_other(x, k, s);
		} else {
			cmd_in_tcp(x, s);
		}
		return;
	}
	char *arg = tok_next(&s), *arg2 = tok_next(&s);
	if (arg2 && !strcmp(arg2, "port")) {
		char *pp = tok_next(&s);
		if (pp) p = cur(x, (uint16_t)atoi(pp));
	} else if (arg && !strcmp(arg, "port")) {
		p = cur(x, (uint16_t)atoi(arg2 ? arg2 : "0"));
		arg = tok_next(&s);
	}
	if (!strcmp(cmd, "listen")) {
		int r = tcp_listen(x->st, (uint16_t)atoi(arg ? arg : "0"));
		if (r) fail(x, "listen: %d", r);
	} else if (!strcmp(cmd, "connect")) {
		struct tcp_addr a = { .family = (uint8_t)(x->v6 ? 6 : 4) };
		addr_of(x->v6, 0, a.a);
		p->c = tcp_connect(x->st, &a, 40000, x->lport, BASE_NS + x->now);
		if (!p->c) fail(x, "connect: %s", strerror(errno));
		poll_events(x);
	} else if (!strcmp(cmd, "write")) {
		long n = atol(arg ? arg : "0"), want = arg2 && !strcmp(arg2, "expect") ? -2 : n;
		uint8_t *b = malloc((size_t)n + 1);
		for (long i = 0; i < n; i++) b[i] = pat_out(p->wr_pos + (uint64_t)i);
		if (!p->c) { fail(x, "write: no connection"); free(b); return; }
		long r = tcp_send(p->c, b, (size_t)n);
		free(b);
		if (want == -2) {
			char *e = tok_next(&s);
			want = e ? atol(e) : 0;
		}
		if (r != want) { fail(x, "write %ld returned %ld", n, r); return; }
		if (r > 0) p->wr_pos += (uint64_t)r;
		/* no service here: writes in one tick coalesce (flushed by
		 * the next line's clock step, as in the dataplane loop) */
	} else if (!strcmp(cmd, "read") || !strcmp(cmd, "avail")) {
		long n = atol(arg ? arg : "0");
		if (!p->c) { fail(x, "%s: no connection", cmd); return; }
		size_t av = tcp_recv_avail(p->c);
		if ((long)av != n) { fail(x, "%s: %zu bytes available, want %ld", cmd, av, n); return; }
		if (!strcmp(cmd, "read")) {
			uint8_t *b = malloc((size_t)n + 1);
			size_t got = tcp_recv(p->c, b, (size_t)n);
			for (size_t i = 0; i < got; i++)
				if (b[i] != pat_in(p->rd_pos + i)) { fail(x, "read byte %zu differs", i); break; }
			p->rd_pos += got;
			free(b);
			if ((long)got != n) fail(x, "read got %zu", got);
			tcp_service(x->st, BASE_NS + x->now);
			poll_events(x);
		}
	} else if (!strcmp(cmd, "shutdown")) {
		if (!p->c || tcp_shutdown(p->c)) { fail(x, "shutdown failed"); return; }
		tcp_service(x->st, BASE_NS + x->now);
	} else if (!strcmp(cmd, "close") || !strcmp(cmd, "abort")) {
		if (!p->c || p->closed) { fail(x, "%s: no connection", cmd); return; }
		if (!strcmp(cmd, "close")) tcp_close(p->c); else tcp_abort(p->c);
		p->closed = 1;
		p->c = NULL;
		tcp_service(x->st, BASE_NS + x->now);
		poll_events(x);
	} else if (!strcmp(cmd, "event") || !strcmp(cmd, "noevent")) {
		uint32_t b = ev_bit(arg ? arg : "");
		if (!b) { fail(x, "unknown event"); return; }
		int has = !!(p->events & b);
		if (!strcmp(cmd, "event")) {
			if (!has) { fail(x, "event %s not seen (have 0x%x)", arg, p->events); return; }
			if (b == 0x20 && arg2 && strcmp(arg2, "port")) {
				int e = errno_of(arg2);
				if (e != p->err) { fail(x, "closed with error %d, want %s", p->err, arg2); return; }
			}
			p->events &= ~b;
		} else if (has) {
			fail(x, "unexpected event %s", arg);
		}
	} else if (!strcmp(cmd, "state")) {
		if (!p->c) { fail(x, "state: no connection"); return; }
		struct tcp_conn_info in;
		tcp_conn_get_info(p->c, &in);
		if (strcmp(tcp_state_name(in.state), arg ? arg : "")) fail(x, "state %s want %s", tcp_state_name(in.state), arg);
	} else if (!strcmp(cmd, "drop") || !strcmp(cmd, "stat")) {
		int ok;
		uint64_t v = stat_by_name(x, arg ? arg : "", &ok);
		if (!ok) { fail(x, "unknown stat %s", arg); return; }
		if (!arg2 || v != strtoull(arg2, NULL, 0)) fail(x, "%s %s = %" PRIu64 " want %s", cmd, arg, v, arg2 ? arg2 : "?");
	} else if (!strcmp(cmd, "info")) {
		/* info FIELD VALUE: mss, sack, ts, wscale */
		if (!p->c) { fail(x, "info: no connection"); return; }
		struct tcp_conn_info in;
		tcp_conn_get_info(p->c, &in);
		long v = -1;
		if (!strcmp(arg, "mss")) v = in.mss;
		else if (!strcmp(arg, "sack")) v = in.sack_ok;
		else if (!strcmp(arg, "ts")) v = in.ts_ok;
		else if (!strcmp(arg, "snd_wscale")) v = in.snd_wscale;
		else if (!strcmp(arg, "rcv_wscale")) v = in.rcv_wscale;
		else if (!strcmp(arg, "cwnd_segs")) v = in.cwnd / in.mss;
		if (!arg2 || v != atol(arg2)) fail(x, "info %s = %ld want %s", arg, v, arg2 ? arg2 : "?");
	} else {
		fail(x, "unknown command %s", cmd);
	}
}

static void end_case(struct ctx *x, int *pass, int *failn, int num)
{
	if (x->name) {
		if (!x->failed && x->st) {
			/* Anything still pending at the end is unexpected. */
			tcp_service(x->st, BASE_NS + x->now);
			check_quiet(x);
		}
		if (x->failed) {
			printf("not ok %d - %s: %s (%s:%d)\n", num, x->name, x->err, x->file, x->line);
			(*failn)++;
		} else {
			printf("ok %d - %s\n", num, x->name);
			(*pass)++;
		}
	}
	tcp_destroy(x->st);
	x->st = NULL;
	while (x->qn)
		pop_frame(x);
	if (x->bufs_out != 0 && x->name) {
		printf("not ok %d - %s: %ld rx buffers never released\n", num, x->name, x->bufs_out);
		(*failn)++;
		(*pass)--;
	}
	free((void *)x->name);
}

static void reset_case(struct ctx *x, const char *file, const char *name)
{
	memset(x, 0, sizeof(*x));
	x->file = file;
	x->name = name ? strdup(name) : NULL;
	memcpy(x->cfg.mac, stack_mac, 6);
	inet_pton(AF_INET, "198.18.0.1", &x->cfg.ip4);
	inet_pton(AF_INET, "255.255.255.0", &x->cfg.ip4_mask);
	inet_pton(AF_INET6, "2001:db8::1", x->cfg.ip6);
	x->cfg.ip6_prefixlen = 64;
	memcpy(x->cfg.secret, "mxedge-test-key!", 16);
	x->cfg.max_conns = 64;
	x->lport = 80;
}

int main(int argc, char **argv)
{
	static struct ctx x;
	int pass = 0, failn = 0, num = 0;
	G = &x;
	for (int fi = 1; fi < argc; fi++) {
		FILE *fp = fopen(argv[fi], "r");
		if (!fp) {
			fprintf(stderr, "%s: %s\n", argv[fi], strerror(errno));
			return 2;
		}
		char line[1024];
		int ln = 0;
		reset_case(&x, argv[fi], NULL);
		while (fgets(line, sizeof(line), fp)) {
			ln++;
			line[strcspn(line, "\r\n")] = 0;
			char *h = strchr(line, '#');
			if (h && !(h > line && h[-1] != ' ' && h[-1] != '\t'))
				*h = 0;
			if (!strncmp(line, "===", 3)) {
				if (x.name)
					end_case(&x, &pass, &failn, ++num);
				else
					tcp_destroy(x.st);
				char *nm = line + 3;
				while (*nm == ' ') nm++;
				reset_case(&x, argv[fi], nm);
				continue;
			}
			if (!x.name || x.failed)
				continue;
			x.line = ln;
			exec_line(&x, line);
		}
		if (x.name)
			end_case(&x, &pass, &failn, ++num);
		fclose(fp);
	}
	printf("1..%d\n# %d passed, %d failed\n", num, pass, failn);
	return failn || num == 0 ? 1 : 0;
}
