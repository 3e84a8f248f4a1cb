/* Virtual wire between two tcp/ stacks on a virtual clock, for tests and
 * benchmarks (header-only; not part of the library). Frames sent by one
 * stack reach the other after a fixed delay, with seeded random loss,
 * duplication and reordering. */
#ifndef MXEDGE_TCP_VWIRE_H
#define MXEDGE_TCP_VWIRE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "tcp.h"

#define VW_MAXQ 4096

struct vw_frame {
	uint64_t due;
	uint32_t len;
	uint8_t *d;
	struct tcp_buf buf;
	struct vw_frame *next;      /* free list */
	struct vwire *w;
	uint8_t mem[2048];
};

#define VW_POOL (2 * VW_MAXQ + 256)

struct vw_side {
	struct vwire *w;
	int idx;
	struct tcp_stack *st;
};

struct vwire {
	struct vw_side side[2];
	struct vw_frame *q[2][VW_MAXQ];        /* frames travelling to side i */
	unsigned qn[2];
	uint64_t now, delay_ns;
	uint64_t rng;
	unsigned loss_ppm, dup_ppm, reorder_ppm;
	uint64_t sent, lost, dups, reordered, overflow, nobuf;
	struct vw_frame *pool, *free_list;   /* no malloc per frame */
};

static inline struct vw_frame *vw_get(struct vwire *w)
{
	if (!w->pool) {
		w->pool = calloc(VW_POOL, sizeof(*w->pool));
		for (unsigned i = 0; i < VW_POOL; i++) {
			w->pool[i].next = w->free_list;
			w->pool[i].w = w;
			w->pool[i].d = w->pool[i].mem;
			w->free_list = &w->pool[i];
		}
	}
	struct vw_frame *f = w->free_list;
	if (f)
		w->free_list = f->next;
	return f;
}

static inline void vw_put(struct vw_frame *f)
{
	f->next = f->w->free_list;
	f->w->free_list = f;
}

static inline uint64_t vw_rand(struct vwire *w)
{
	/* xorshift64*: deterministic per seed */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 2685821657736338717ULL;
}

static inline void vw_release(struct tcp_buf *b)
{
	vw_put(b->opaque);
}

static inline uint8_t *vw_alloc(void *ctx, uint32_t len, void **h)
{
	struct vw_side *s = ctx;
	struct vw_frame *f = len <= 2048 ? vw_get(s->w) : NULL;
	if (!f) {
		s->w->nobuf++;
		return NULL;
	}
	*h = f;
	return f->d;
}

static inline void vw_enqueue(struct vwire *w, int to, struct vw_frame *f, uint32_t len, uint64_t due)
{
	if (w->qn[to] >= VW_MAXQ) {
		w->overflow++;
		vw_put(f);
		return;
	}
	f->len = len;
	f->due = due;
	/* keep sorted by due time (stable) */
	unsigned i = w->qn[to];
	while (i > 0 && w->q[to][i - 1]->due > due) {
		w->q[to][i] = w->q[to][i - 1];
		i--;
	}
	w->q[to][i] = f;
	w->qn[to]++;
}

static inline void vw_send(void *ctx, void *h, uint32_t len, const struct tcp_txmeta *m)
{
	struct vw_side *s = ctx;
	struct vwire *w = s->w;
	int to = 1 - s->idx;
	struct vw_frame *d = h;
	w->sent++;
	if (w->loss_ppm && vw_rand(w) % 1000000 < w->loss_ppm) {
		w->lost++;
		vw_put(d);
		return;
	}
	uint64_t due = w->now + w->delay_ns;
	if (w->reorder_ppm && vw_rand(w) % 1000000 < w->reorder_ppm) {
		w->reordered++;
		due += w->delay_ns / 2 + vw_rand(w) % (w->delay_ns + 1);
	}
	if (w->dup_ppm && vw_rand(w) % 1000000 < w->dup_ppm) {
		struct vw_frame *c = vw_get(w);
		if (c) {
			memcpy(c->d, d->d, len);
			w->dups++;
			vw_enqueue(w, to, c, len, due + 1000);
		}
	}
	vw_enqueue(w, to, d, len, due);
}

/* Fills cfg for side idx (0: 198.18.1.1, 1: 198.18.1.2) wired to w. */
static inline void vw_config(struct vwire *w, int idx, struct tcp_config *cfg)
{
	uint8_t mac[6] = { 2, 0, 0, 0, 1, (uint8_t)(idx + 1) };
	memcpy(cfg->mac, mac, 6);
	inet_pton(AF_INET, idx ? "198.18.1.2" : "198.18.1.1", &cfg->ip4);
	inet_pton(AF_INET, "255.255.255.0", &cfg->ip4_mask);
	inet_pton(AF_INET6, idx ? "2001:db8:1::2" : "2001:db8:1::1", cfg->ip6);
	cfg->ip6_prefixlen = 64;
	w->side[idx].w = w;
	w->side[idx].idx = idx;
	cfg->ops.ctx = &w->side[idx];
	cfg->ops.tx_alloc = vw_alloc;
	cfg->ops.tx_send = vw_send;
}

/* Creates both stacks from the two configs (after vw_config) and seeds
 * each one's neighbour entry for the other. 0 or -1. */
static inline int vw_start(struct vwire *w, struct tcp_config *c0, struct tcp_config *c1)
{
	w->side[0].st = tcp_create(c0);
	w->side[1].st = tcp_create(c1);
	if (!w->side[0].st || !w->side[1].st)
		return -1;
	struct tcp_addr a = { .family = 4 };
	memcpy(a.a, &c1->ip4, 4);
	tcp_neigh_add(w->side[0].st, &a, c1->mac);
	memcpy(a.a, &c0->ip4, 4);
	tcp_neigh_add(w->side[1].st, &a, c0->mac);
	struct tcp_addr b = { .family = 6 };
	memcpy(b.a, c1->ip6, 16);
	tcp_neigh_add(w->side[0].st, &b, c1->mac);
	memcpy(b.a, c0->ip6, 16);
	tcp_neigh_add(w->side[1].st, &b, c0->mac);
	return 0;
}

/* Delivers every frame due by w->now, then services both stacks. */
static inline void vw_step(struct vwire *w)
{
	for (int to = 0; to < 2; to++) {
		unsigned k = 0;
		while (k < w->qn[to] && w->q[to][k]->due <= w->now)
			k++;
		struct vw_frame *due[VW_MAXQ];
		memcpy(due, w->q[to], k * sizeof(due[0]));
		memmove(w->q[to], w->q[to] + k, (w->qn[to] - k) * sizeof(due[0]));
		w->qn[to] -= k;
		for (unsigned i = 0; i < k; i++) {
			struct vw_frame *f = due[i];
			f->buf.data = f->d;
			f->buf.len = f->len;
			f->buf.release = vw_release;
			f->buf.opaque = f;
			tcp_input(w->side[to].st, &f->buf, w->now);
		}
	}
	tcp_service(w->side[0].st, w->now);
	tcp_service(w->side[1].st, w->now);
}

static inline void vw_destroy(struct vwire *w)
{
	tcp_destroy(w->side[0].st);
	tcp_destroy(w->side[1].st);
	free(w->pool);
	w->pool = NULL;
}

#endif
