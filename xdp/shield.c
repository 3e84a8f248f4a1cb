/* shield.c — loader and table management for the XDP shield (shield.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "shield.h"
#include "shield.skel.h"

enum { GENS = 2 };

struct shield {
	struct shield_bpf *skel; /* NULL for shield_open_pinned handles */
	int exact[SHIELD_LIST_COUNT][GENS];
	int bitmap[SHIELD_LIST_COUNT][GENS];
	int pfx[SHIELD_LIST_COUNT][GENS];
	int leaf[SHIELD_LIST_COUNT][GENS];
	int node[SHIELD_LIST_COUNT][GENS];
	int slot[SHIELD_LIST_COUNT][GENS];
	int meta, gen, cfg, cnt, rate, synm, events;
	int own; /* -1: pinned by an object without mxedge_own */
	int owned; /* fds above were opened by us (pinned handle) */
	struct ring_buffer *rb;
	shield_event_cb ev_cb;
	void *ev_arg;
	int ev_n;
};

enum { KINDS = 6 };
/* exact, /24 array ("w"), prefix, /24 leaf hash, IPv6 /32 node ("v"), /24
 * leaf slots: the letters as in shield.bpf.c */
static const char *const map_kind = "xwplvs";

static void map_name(char *buf, size_t len, enum shield_list l, int kind, int gen)
{
	snprintf(buf, len, "mxedge_%c%c%d", l == SHIELD_LIST_BLOCK ? 'b' : 'a',
		 map_kind[kind], gen);
}

static int *kind_fd(struct shield *s, int kind, enum shield_list l, int gen)
{
	if (kind == 0)
		return &s->exact[l][gen];
	if (kind == 1)
		return &s->bitmap[l][gen];
	if (kind == 2)
		return &s->pfx[l][gen];
	if (kind == 3)
		return &s->leaf[l][gen];
	if (kind == 4)
		return &s->node[l][gen];
	return &s->slot[l][gen];
}

static struct shield *shield_alloc(void)
{
	struct shield *s = calloc(1, sizeof(*s));
	int l, g, k;

	if (!s)
		return NULL;
	for (l = 0; l < SHIELD_LIST_COUNT; l++)
		for (g = 0; g < GENS; g++)
			for (k = 0; k < KINDS; k++)
				*kind_fd(s, k, l, g) = -1;
	s->meta = s->gen = s->cfg = s->cnt = s->rate = s->synm = s->events = -1;
	s->own = -1;
	return s;
}

static int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];
	size_t n = strlen(dir);
	char *p;

	if (n == 0 || n >= sizeof(tmp))
		return -EINVAL;
	memcpy(tmp, dir, n + 1);
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

void shield_config_defaults(struct shield_config *c)
{
	memset(c, 0, sizeof(*c));
	c->flags = SHIELD_CFG_VALID;
	c->ports[0] = 25;
	c->ports[1] = 465;
	c->ports[2] = 587;
	shield_config_set_rate(c, 20, 40);
	shield_config_set_flood(c, 50000, SHIELD_FLOOD_HANDOFF);
	c->flood_hold_ns = 1000000000ull;
	c->sample_every = 64;
}

int shield_config_set_rate(struct shield_config *c, uint32_t rate, uint32_t burst)
{
	if (rate && burst == 0)
		return -EINVAL;
	if (!rate) {
		c->rate_interval_ns = 0;
		c->rate_tolerance_ns = 0;
		return 0;
	}
	c->rate_interval_ns = 1000000000ull / rate;
	if (!c->rate_interval_ns)
		c->rate_interval_ns = 1;
	c->rate_tolerance_ns = (uint64_t)(burst - 1) * c->rate_interval_ns;
	return 0;
}

void shield_config_set_flood(struct shield_config *c, uint64_t syn_per_sec,
			     enum shield_flood_mode mode)
{
	c->flood_mode = mode;
	/* per 100 ms window, at least 1 when enabled */
	c->flood_syn_per_window = syn_per_sec ? (syn_per_sec + 9) / 10 : 0;
	if (!c->flood_hold_ns)
		c->flood_hold_ns = 1000000000ull;
}

int shield_config_get(struct shield *s, struct shield_config *out)
{
	uint32_t zero = 0;

	if (bpf_map_lookup_elem(s->cfg, &zero, out))
		return -errno;
	if (!(out->flags & SHIELD_CFG_VALID))
		shield_config_defaults(out);
	return 0;
}

int shield_config_set(struct shield *s, const struct shield_config *c)
{
	struct shield_config v = *c;
	uint32_t zero = 0;
	int i, any = 0;

	for (i = 0; i < SHIELD_MAX_PORTS; i++)
		any |= v.ports[i] != 0;
	if (!any || v.flood_mode > SHIELD_FLOOD_XDP_COOKIE ||
	    (v.rate_interval_ns == 0 && v.rate_tolerance_ns != 0))
		return -EINVAL;
	if (v.sample_every > (1u << 31))
		return -EINVAL;
	while (v.sample_every & (v.sample_every - 1)) /* round up to 2^k */
		v.sample_every = (v.sample_every | (v.sample_every - 1)) + 1;
	v.flags |= SHIELD_CFG_VALID;
	if (bpf_map_update_elem(s->cfg, &zero, &v, BPF_ANY))
		return -errno;
	return 0;
}

int shield_ports_set(struct shield *s, const uint16_t *ports, size_t n)
{
	struct shield_config c;
	size_t i, k, used = 0;
	int err;

	if (!s || !ports || n == 0)
		return -EINVAL;
	err = shield_config_get(s, &c);
	if (err)
		return err;
	memset(c.ports, 0, sizeof(c.ports));
	for (i = 0; i < n; i++) {
		if (ports[i] == 0)
			return -EINVAL;
		for (k = 0; k < used && c.ports[k] != ports[i]; k++)
			;
		if (k < used)
			continue;
		if (used == SHIELD_MAX_PORTS)
			return -E2BIG;
		c.ports[used++] = ports[i];
	}
	return shield_config_set(s, &c);
}

int shield_own_set(struct shield *s, const struct shield_cidr *addrs, size_t n)
{
	struct shield_own v;
	uint32_t zero = 0;
	size_t i;

	if (!s || (n && !addrs))
		return -EINVAL;
	if (s->own < 0)
		return -EOPNOTSUPP;
	memset(&v, 0, sizeof(v));
	for (i = 0; i < n; i++) {
		const struct shield_cidr *c = &addrs[i];

		if (c->family == 4 && c->plen == 32) {
			if (v.n4 == SHIELD_MAX_OWN)
				return -E2BIG;
			memcpy(&v.v4[v.n4++], c->addr, 4);
		} else if (c->family == 6 && c->plen == 128) {
			if (v.n6 == SHIELD_MAX_OWN)
				return -E2BIG;
			memcpy(v.v6[v.n6++].a, c->addr, 16);
		} else {
			return -EINVAL;
		}
	}
	/* One array element: the program reads it per frame and may see a
	 * half-written list for an instant; a frame missed then is a lost
	 * ARP/NDP answer the peer retries, never a wrong drop. */
	if (bpf_map_update_elem(s->own, &zero, &v, BPF_ANY))
		return -errno;
	return 0;
}

int shield_own_get(struct shield *s, struct shield_cidr *out, size_t cap,
		   size_t *n)
{
	struct shield_own v;
	uint32_t zero = 0, i;
	size_t k = 0;

	if (!s || !n || (cap && !out))
		return -EINVAL;
	if (s->own < 0)
		return -EOPNOTSUPP;
	if (bpf_map_lookup_elem(s->own, &zero, &v))
		return -errno;
	if (v.n4 > SHIELD_MAX_OWN || v.n6 > SHIELD_MAX_OWN)
		return -EIO;
	if (v.n4 + v.n6 > cap)
		return -ENOSPC;
	for (i = 0; i < v.n4; i++, k++) {
		memset(&out[k], 0, sizeof(out[k]));
		out[k].family = 4;
		out[k].plen = 32;
		memcpy(out[k].addr, &v.v4[i], 4);
	}
	for (i = 0; i < v.n6; i++, k++) {
		out[k].family = 6;
		out[k].plen = 128;
		memcpy(out[k].addr, v.v6[i].a, 16);
	}
	*n = k;
	return 0;
}

static int fill_fds_from_skel(struct shield *s)
{
	struct bpf_object *obj = s->skel->obj;
	char name[32];
	int l, g, k;

	for (l = 0; l < SHIELD_LIST_COUNT; l++)
		for (g = 0; g < GENS; g++)
			for (k = 0; k < KINDS; k++) {
				struct bpf_map *m;

				map_name(name, sizeof(name), l, k, g);
				m = bpf_object__find_map_by_name(obj, name);
				if (!m)
					return -ENOENT;
				*kind_fd(s, k, l, g) = bpf_map__fd(m);
			}
	s->meta = bpf_map__fd(s->skel->maps.mxedge_meta);
	s->gen = bpf_map__fd(s->skel->maps.mxedge_gen);
	s->cfg = bpf_map__fd(s->skel->maps.mxedge_cfg);
	s->cnt = bpf_map__fd(s->skel->maps.mxedge_cnt);
	s->rate = bpf_map__fd(s->skel->maps.mxedge_rate);
	s->synm = bpf_map__fd(s->skel->maps.mxedge_synm);
	s->events = bpf_map__fd(s->skel->maps.mxedge_events);
	s->own = bpf_map__fd(s->skel->maps.mxedge_own);
	return 0;
}

static int gen_flag_refresh(struct shield *s, enum shield_list l);

struct shield *shield_load(const struct shield_load_opts *opts)
{
	struct shield_load_opts o = { 0 };
	const char *dir;
	struct shield *s = NULL;
	struct shield_config cfg;
	struct bpf_map *m;
	int err, l;

	if (opts)
		o = *opts;
	dir = o.pin_dir ? o.pin_dir : SHIELD_PIN_DIR_DEFAULT;
	s = shield_alloc();
	if (!s) {
		err = -ENOMEM;
		goto fail;
	}
	if (!o.no_pin) {
		err = mkdir_p(dir);
		if (err)
			goto fail;
	}
	{
		LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = dir);
		s->skel = shield_bpf__open_opts(&oo);
	}
	if (!s->skel) {
		err = -errno;
		goto fail;
	}
	bpf_object__for_each_map(m, s->skel->obj) {
		const char *n = bpf_map__name(m);

		if (o.no_pin && bpf_map__pin_path(m)) {
			err = bpf_map__set_pin_path(m, NULL);
			if (err)
				goto fail;
		}
		if (strncmp(n, "mxedge_", 7) || strlen(n) != 10)
			continue;
		if (n[8] == 'x' || n[8] == 'p' || n[8] == 'l' || n[8] == 'v') {
			uint32_t want = n[7] == 'b' ? o.block_entries : o.allow_entries;

			if (want && (err = bpf_map__set_max_entries(m, want)))
				goto fail;
		}
		if (n[8] == 's') { /* leaf slots: a quarter of the entries */
			uint32_t want = n[7] == 'b' ? o.block_entries : o.allow_entries;

			if (want && (err = bpf_map__set_max_entries(m, want / 4 > 2 ? want / 4 : 2)))
				goto fail;
		}
	}
	err = shield_bpf__load(s->skel);
	if (err)
		goto fail;
	err = fill_fds_from_skel(s);
	if (err)
		goto fail;
	{
		uint32_t zero = 0;

		if (bpf_map_lookup_elem(s->cfg, &zero, &cfg) == 0 &&
		    !(cfg.flags & SHIELD_CFG_VALID)) {
			shield_config_defaults(&cfg);
			err = shield_config_set(s, &cfg);
			if (err)
				goto fail;
		}
	}
	for (l = 0; l < SHIELD_LIST_COUNT; l++)
		if ((err = gen_flag_refresh(s, l)))
			goto fail;
	return s;
fail:
	shield_close(s);
	errno = -err;
	return NULL;
}

struct shield *shield_open_pinned(const char *pin_dir)
{
	const char *dir = pin_dir ? pin_dir : SHIELD_PIN_DIR_DEFAULT;
	struct shield *s = shield_alloc();
	struct {
		int *fd;
		const char *name;
	} fixed[] = {
		{ NULL, SHIELD_MAP_META }, { NULL, SHIELD_MAP_GEN },
		{ NULL, SHIELD_MAP_CONFIG }, { NULL, SHIELD_MAP_COUNTERS },
		{ NULL, SHIELD_MAP_RATE }, { NULL, SHIELD_MAP_SYNMETER },
		{ NULL, SHIELD_MAP_EVENTS },
	};
	char name[32];
	int err = 0, l, g, k;
	size_t i;

	if (!s) {
		errno = ENOMEM;
		return NULL;
	}
	s->owned = 1;
	fixed[0].fd = &s->meta;
	fixed[1].fd = &s->gen;
	fixed[2].fd = &s->cfg;
	fixed[3].fd = &s->cnt;
	fixed[4].fd = &s->rate;
	fixed[5].fd = &s->synm;
	fixed[6].fd = &s->events;
	for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		int fd;
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%s", dir, fixed[i].name);
		fd = bpf_obj_get(path);
		if (fd < 0) {
			err = -errno;
			goto fail;
		}
		*fixed[i].fd = fd;
	}
	for (l = 0; l < SHIELD_LIST_COUNT; l++)
		for (g = 0; g < GENS; g++)
			for (k = 0; k < KINDS; k++) {
				char path[PATH_MAX];
				int fd;

				map_name(name, sizeof(name), l, k, g);
				snprintf(path, sizeof(path), "%s/%s", dir, name);
				fd = bpf_obj_get(path);
				if (fd < 0) {
					err = -errno;
					goto fail;
				}
				*kind_fd(s, k, l, g) = fd;
			}
	/* Optional: objects older than the own-address map do not pin it. */
	{
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%s", dir, SHIELD_MAP_OWN);
		s->own = bpf_obj_get(path);
	}
	/* Maps written by an older loader (or fresh from the PMD) lack the
	 * empty flags; setting them is idempotent. */
	for (l = 0; l < SHIELD_LIST_COUNT; l++)
		gen_flag_refresh(s, l);
	return s;
fail:
	shield_close(s);
	errno = -err;
	return NULL;
}

void shield_close(struct shield *s)
{
	int l, g, k;

	if (!s)
		return;
	ring_buffer__free(s->rb);
	s->rb = NULL;
	if (s->owned) {
		int *fixed[] = { &s->meta, &s->gen, &s->cfg, &s->cnt,
				 &s->rate, &s->synm, &s->events, &s->own };
		size_t i;

		for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
			if (*fixed[i] >= 0)
				close(*fixed[i]);
		for (l = 0; l < SHIELD_LIST_COUNT; l++)
			for (g = 0; g < GENS; g++)
				for (k = 0; k < KINDS; k++)
					if (*kind_fd(s, k, l, g) >= 0)
						close(*kind_fd(s, k, l, g));
	}
	shield_bpf__destroy(s->skel);
	free(s);
}

static int pin_one(int fd, const char *dir, const char *name)
{
	char path[PATH_MAX];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	if (bpf_obj_pin(fd, path)) {
		if (errno != EEXIST)
			return -errno;
		/* already pinned there: fine if it is this very map */
		{
			struct bpf_map_info a, b;
			__u32 la = sizeof(a), lb = sizeof(b);
			int other = bpf_obj_get(path), same;

			if (other < 0)
				return -errno;
			memset(&a, 0, sizeof(a));
			memset(&b, 0, sizeof(b));
			same = !bpf_obj_get_info_by_fd(fd, &a, &la) &&
			       !bpf_obj_get_info_by_fd(other, &b, &lb) && a.id == b.id;
			close(other);
			if (!same)
				return -EEXIST;
		}
	}
	return 0;
}

int shield_pin_maps(struct shield *s, const char *dir)
{
	const struct {
		int fd;
		const char *name;
	} fixed[] = {
		{ s->meta, SHIELD_MAP_META }, { s->gen, SHIELD_MAP_GEN },
		{ s->cfg, SHIELD_MAP_CONFIG }, { s->cnt, SHIELD_MAP_COUNTERS },
		{ s->rate, SHIELD_MAP_RATE }, { s->synm, SHIELD_MAP_SYNMETER },
		{ s->events, SHIELD_MAP_EVENTS },
	};
	char name[32];
	int err, l, g, k;
	size_t i;

	if (!s || !dir)
		return -EINVAL;
	err = mkdir_p(dir);
	if (err)
		return err;
	for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		err = pin_one(fixed[i].fd, dir, fixed[i].name);
		if (err)
			return err;
	}
	if (s->own >= 0 && (err = pin_one(s->own, dir, SHIELD_MAP_OWN)))
		return err;
	for (l = 0; l < SHIELD_LIST_COUNT; l++)
		for (g = 0; g < GENS; g++)
			for (k = 0; k < KINDS; k++) {
				map_name(name, sizeof(name), l, k, g);
				err = pin_one(*kind_fd(s, k, l, g), dir, name);
				if (err)
					return err;
			}
	return 0;
}

int shield_prog_fd(const struct shield *s)
{
	return s->skel ? bpf_program__fd(s->skel->progs.mxedge_shield) : -1;
}

int shield_xsks_map_fd(const struct shield *s)
{
	return s->skel ? bpf_map__fd(s->skel->maps.xsks_map) : -1;
}

int shield_attach(struct shield *s, int ifindex, enum shield_attach_mode mode)
{
	int fd = shield_prog_fd(s);
	int err;

	if (fd < 0)
		return -EINVAL;
	if (mode == SHIELD_ATTACH_NATIVE || mode == SHIELD_ATTACH_AUTO) {
		err = bpf_xdp_attach(ifindex, fd,
				     XDP_FLAGS_UPDATE_IF_NOEXIST | XDP_FLAGS_DRV_MODE,
				     NULL);
		if (!err || mode == SHIELD_ATTACH_NATIVE)
			return err < 0 ? err : 0;
		if (err == -EBUSY || err == -EEXIST)
			return -EBUSY;
	}
	err = bpf_xdp_attach(ifindex, fd,
			     XDP_FLAGS_UPDATE_IF_NOEXIST | XDP_FLAGS_SKB_MODE, NULL);
	if (err == -EEXIST)
		err = -EBUSY;
	return err < 0 ? err : 0;
}

int shield_detach(int ifindex)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	struct bpf_prog_info info;
	__u32 len = sizeof(info), id, flags;
	int err, fd;

	err = bpf_xdp_query(ifindex, 0, &q);
	if (err)
		return err;
	switch (q.attach_mode) {
	case XDP_ATTACHED_DRV:
		id = q.prog_id;
		flags = XDP_FLAGS_DRV_MODE;
		break;
	case XDP_ATTACHED_SKB:
		id = q.skb_prog_id;
		flags = XDP_FLAGS_SKB_MODE;
		break;
	case XDP_ATTACHED_HW:
		id = q.hw_prog_id;
		flags = XDP_FLAGS_HW_MODE;
		break;
	case XDP_ATTACHED_NONE:
		return -ENOENT;
	default: /* several modes at once: not something we attached */
		return -EPERM;
	}
	fd = bpf_prog_get_fd_by_id(id);
	if (fd < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (!err && strcmp(info.name, SHIELD_PROG_NAME))
		err = -EPERM;
	if (!err) {
		LIBBPF_OPTS(bpf_xdp_attach_opts, ao, .old_prog_fd = fd);

		err = bpf_xdp_detach(ifindex, flags, &ao);
	}
	close(fd);
	return err;
}

/* ---- addresses --------------------------------------------------------- */

int shield_cidr_parse(const char *text, struct shield_cidr *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash;
	size_t alen;
	long plen = -1;
	int max, i;

	if (!text || !out)
		return -EINVAL;
	slash = strchr(text, '/');
	alen = slash ? (size_t)(slash - text) : strlen(text);
	if (alen == 0 || alen >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, text, alen);
	buf[alen] = 0;
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = 4;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = 6;
		max = 128;
	} else {
		return -EINVAL;
	}
	if (slash) {
		const char *p = slash + 1;

		if (*p < '0' || *p > '9')
			return -EINVAL;
		plen = 0;
		for (; *p >= '0' && *p <= '9'; p++) {
			plen = plen * 10 + (*p - '0');
			if (plen > max)
				return -EINVAL;
		}
		if (*p)
			return -EINVAL;
	} else {
		plen = max;
	}
	out->plen = (uint8_t)plen;
	if (out->family == 6 && plen >= 96) {
		static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

		if (!memcmp(out->addr, mapped, 12)) { /* ::ffff:a.b.c.d/n is IPv4 */
			memmove(out->addr, out->addr + 12, 4);
			memset(out->addr + 4, 0, 12);
			out->family = 4;
			out->plen = (uint8_t)(plen - 96);
			plen -= 96;
		}
	}
	for (i = 0; i < 16; i++) { /* clear host bits */
		int keep = (int)plen - i * 8;

		if (keep >= 8)
			continue;
		out->addr[i] &= keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
	}
	return 0;
}

int shield_cidr_format(const struct shield_cidr *c, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (!inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, a, sizeof(a)))
		return -EINVAL;
	if ((size_t)snprintf(buf, len, "%s/%u", a, c->plen) >= len)
		return -ENOSPC;
	return 0;
}

/* CIDR -> key in the program's 128-bit space (IPv4 as ::ffff:a.b.c.d). */
static uint32_t cidr_key(const struct shield_cidr *c, struct shield_addr *a)
{
	memset(a, 0, sizeof(*a));
	if (c->family == 4) {
		a->a[10] = a->a[11] = 0xff;
		memcpy(&a->a[12], c->addr, 4);
		return 96u + c->plen;
	}
	memcpy(a->a, c->addr, 16);
	return c->plen;
}

static void key_cidr(const struct shield_addr *a, uint32_t plen128,
		     struct shield_cidr *c)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(c, 0, sizeof(*c));
	if (plen128 >= 96 && !memcmp(a->a, mapped, 12)) {
		c->family = 4;
		c->plen = (uint8_t)(plen128 - 96);
		memcpy(c->addr, &a->a[12], 4);
	} else {
		c->family = 6;
		c->plen = (uint8_t)plen128;
		memcpy(c->addr, a->a, 16);
	}
}

static int cidr_valid(const struct shield_cidr *c)
{
	return c && ((c->family == 4 && c->plen <= 32) ||
		     (c->family == 6 && c->plen <= 128));
}

static int is_exact(const struct shield_cidr *c)
{
	return (c->family == 4 && c->plen == 32) || (c->family == 6 && c->plen == 128);
}

static int in_bitmap(const struct shield_cidr *c)
{
	return c->family == 4 && c->plen <= 24;
}

static uint32_t v4_host(const struct shield_cidr *c)
{
	uint32_t v;

	memcpy(&v, c->addr, 4);
	return ntohl(v);
}

/* ---- meta (per list/generation summary) --------------------------------- */

/* Sets or clears SHIELD_GEN_ALLOW_EMPTY in the blocklist's word (only
 * that bit; no write when it is already right). */
static int gen_allow_hint(struct shield *s, int allow_empty)
{
	uint32_t key = SHIELD_LIST_BLOCK, v = 0, want;

	if (bpf_map_lookup_elem(s->gen, &key, &v))
		return -errno;
	want = allow_empty ? v | SHIELD_GEN_ALLOW_EMPTY : v & ~SHIELD_GEN_ALLOW_EMPTY;
	if (want != v && bpf_map_update_elem(s->gen, &key, &want, BPF_ANY))
		return -errno;
	return 0;
}

/* Writes list l's mxedge_gen value: generation gen, flagged empty or not
 * (one aligned 4-byte update). The blocklist's word keeps its allowlist
 * hint; for the allowlist the hint is cleared before a non-empty set
 * becomes active and set only after an empty one has, so the program
 * never skips an allowlist that has entries. */
static int gen_write(struct shield *s, enum shield_list l, uint32_t gen, int empty)
{
	uint32_t key = l, v = (gen & 1) | (empty ? SHIELD_GEN_EMPTY : 0), old = 0;
	int err;

	if (l == SHIELD_LIST_BLOCK) {
		if (bpf_map_lookup_elem(s->gen, &key, &old))
			return -errno;
		v |= old & SHIELD_GEN_ALLOW_EMPTY;
	} else if (!empty && (err = gen_allow_hint(s, 0))) {
		return err;
	}
	if (bpf_map_update_elem(s->gen, &key, &v, BPF_ANY))
		return -errno;
	if (l == SHIELD_LIST_ALLOW && empty)
		return gen_allow_hint(s, 1);
	return 0;
}

/* Sets or clears list l's empty flag from its active generation's entry
 * counts (no write when the flag is already right), and the allowlist
 * hint in the blocklist's word from the allowlist's flag. */
static int gen_flag_refresh(struct shield *s, enum shield_list l)
{
	struct shield_set_meta m;
	uint32_t key = l, v = 0, want;
	int err = 0;

	if (bpf_map_lookup_elem(s->gen, &key, &v))
		return -errno;
	key = l * 2 + (v & 1);
	if (bpf_map_lookup_elem(s->meta, &key, &m))
		return -errno;
	want = (v & 1) | (m.n_exact == 0 && m.n_pfx == 0 ? SHIELD_GEN_EMPTY : 0);
	if (want != (v & (1 | SHIELD_GEN_EMPTY)))
		err = gen_write(s, l, v & 1, want & SHIELD_GEN_EMPTY);
	else if (l == SHIELD_LIST_ALLOW)
		err = gen_allow_hint(s, !!(want & SHIELD_GEN_EMPTY));
	return err;
}

static int active_gen(struct shield *s, enum shield_list l, uint32_t *gen)
{
	uint32_t key = l, v = 0;

	*gen = 0;
	if (bpf_map_lookup_elem(s->gen, &key, &v))
		return -errno;
	*gen = v & 1;
	return 0;
}

static int meta_read(struct shield *s, enum shield_list l, uint32_t gen,
		     struct shield_set_meta *m)
{
	uint32_t key = l * 2 + gen;

	return bpf_map_lookup_elem(s->meta, &key, m) ? -errno : 0;
}

/* The active generation of list @l and its metadata (entry counts). */
static int active_meta(struct shield *s, enum shield_list l, uint32_t *gen,
		       struct shield_set_meta *m)
{
	int err = active_gen(s, l, gen);

	return err ? err : meta_read(s, l, *gen, m);
}

static int meta_write(struct shield *s, enum shield_list l, uint32_t gen,
		      const struct shield_set_meta *m)
{
	uint32_t key = l * 2 + gen;

	return bpf_map_update_elem(s->meta, &key, m, BPF_ANY) ? -errno : 0;
}

/* Rebuilds the probe list of IPv6 lengths shorter than /32 (longer ones are
 * found through their /32 node; IPv4 through the /24 array and leaves). */
static int meta_plens(struct shield_set_meta *m)
{
	int p;

	m->n_v4_plens = 0; /* IPv4 longer than /24 lives in the leaves */
	m->n_v6_plens = 0;
	for (p = 31; p >= 0; p--) { /* /32 and longer: per-/32 nodes */
		if (!m->plen_count[p])
			continue;
		if (m->n_v6_plens >= SHIELD_MAX_V6_PLENS)
			return -ENOSPC;
		m->v6_plens[m->n_v6_plens++] = (uint8_t)p;
	}
	return 0;
}

static uint32_t *plen_slot(struct shield_set_meta *m, const struct shield_cidr *c)
{
	return c->family == 4 ? &m->v4_plen_count[c->plen] : &m->plen_count[c->plen];
}

/* ---- bitmap ------------------------------------------------------------- */

enum { BIT_COVERED = 0, BIT_LONGER = 1 };

/* Sets or clears one kind of bit for nblk /24 blocks from first_blk. */
static int bitmap_or_range(int fd, uint32_t first_blk, uint64_t nblk, int which,
			   int set)
{
	uint64_t b = first_blk, last = first_blk + nblk;

	while (b < last) {
		uint32_t idx = (uint32_t)(b >> 6);
		struct shield_v4_word w;
		__u64 mask = 0, old, *f = which == BIT_COVERED ? &w.covered : &w.longer;

		if (bpf_map_lookup_elem(fd, &idx, &w))
			return -errno;
		for (; b < last && (b >> 6) == idx; b++)
			mask |= 1ull << (b & 63);
		old = *f;
		*f = set ? (*f | mask) : (*f & ~mask);
		/* other blocks' leaves would shift in the slot layout: the
		 * word's leaves come from the hash until the next bulk load */
		if (which == BIT_LONGER && *f != old)
			w.base = SHIELD_SLOT_NONE;
		if (bpf_map_update_elem(fd, &idx, &w, BPF_ANY))
			return -errno;
	}
	return 0;
}

/* After deleting an IPv4 prefix <= /24: re-derive the bits of its /24
 * blocks from the prefixes that remain (any length 0..24 covering a block). */
static int bitmap_recompute(struct shield *s, enum shield_list l, uint32_t gen,
			    const struct shield_set_meta *m, uint32_t first_blk,
			    uint64_t nblk)
{
	int bfd = s->bitmap[l][gen], pfd = s->pfx[l][gen];
	uint64_t b;
	int err;

	err = bitmap_or_range(bfd, first_blk, nblk, BIT_COVERED, 0);
	if (err)
		return err;
	for (b = first_blk; b < first_blk + nblk; b++) {
		int len;

		for (len = 0; len <= 24; len++) {
			struct shield_pfx_key k;
			struct shield_entry e;
			uint32_t net;

			if (!m->v4_plen_count[len])
				continue;
			net = len ? (uint32_t)(b << 8) & (0xffffffffu << (32 - len)) : 0;
			memset(&k, 0, sizeof(k));
			k.plen = 96 + len;
			k.addr.a[10] = k.addr.a[11] = 0xff;
			k.addr.w[3] = htonl(net);
			if (bpf_map_lookup_elem(pfd, &k, &e) == 0) {
				err = bitmap_or_range(bfd, (uint32_t)b, 1, BIT_COVERED, 1);
				if (err)
					return err;
				break;
			}
		}
	}
	return 0;
}

/* ---- IPv4 leaves (/25../32 inside one /24) ------------------------------ */

static int leaf_empty(const struct shield_v4_leaf *lf)
{
	int i;

	for (i = 0; i < 4; i++)
		if (lf->exact[i] || lf->pfx[i])
			return 0;
	return 1;
}

static void leaf_bits(struct shield_v4_leaf *lf, int pfx, uint32_t first,
		      uint32_t n, int set)
{
	uint32_t h;

	for (h = first; h < first + n && h < 256; h++) {
		__u64 *w = pfx ? &lf->pfx[h >> 6] : &lf->exact[h >> 6];

		if (set)
			*w |= 1ull << (h & 63);
		else
			*w &= ~(1ull << (h & 63));
	}
}

static uint32_t popcount64(uint64_t x)
{
	return (uint32_t)__builtin_popcountll(x);
}

/* A leaf whose /24 already has its `longer` bit: when the word is laid
 * out in the slot array, the slot is rewritten in place (its tag stays;
 * a single add or delete changes bits of one entry, and the program sees
 * each bit old or new, as it would a hash element replaced under it). */
static int leaf_slot_update(struct shield *s, enum shield_list l, uint32_t gen,
			    uint32_t blk, const struct shield_v4_leaf *lf, int *done)
{
	uint32_t idx = blk >> 6, slot;
	struct shield_v4_word w;
	struct shield_v4_slot sv;
	uint64_t bit = 1ull << (blk & 63);

	*done = 0;
	if (bpf_map_lookup_elem(s->bitmap[l][gen], &idx, &w))
		return -errno;
	if (!(w.longer & bit))
		return 0;
	*done = 1;
	if (w.base == SHIELD_SLOT_NONE)
		return 0;
	slot = w.base + popcount64(w.longer & (bit - 1));
	if (bpf_map_lookup_elem(s->slot[l][gen], &slot, &sv))
		return -errno;
	if (sv.tag != blk + 1) { /* not laid out as the word says: use the hash */
		w.base = SHIELD_SLOT_NONE;
		return bpf_map_update_elem(s->bitmap[l][gen], &idx, &w, BPF_ANY) ? -errno : 0;
	}
	sv.leaf = *lf;
	return bpf_map_update_elem(s->slot[l][gen], &slot, &sv, BPF_ANY) ? -errno : 0;
}

/* Writes a leaf and keeps the /24's `longer` bit in step: set only after
 * the leaf exists, cleared before an empty leaf is deleted; a leaf laid
 * out in the slot array is updated there too. */
static int leaf_store(struct shield *s, enum shield_list l, uint32_t gen,
		      uint32_t blk, const struct shield_v4_leaf *lf)
{
	int fd = s->leaf[l][gen], err, done;

	if (leaf_empty(lf)) {
		err = bitmap_or_range(s->bitmap[l][gen], blk, 1, BIT_LONGER, 0);
		if (err)
			return err;
		if (bpf_map_delete_elem(fd, &blk) && errno != ENOENT)
			return -errno;
		return 0;
	}
	if (bpf_map_update_elem(fd, &blk, lf, BPF_ANY))
		return errno == E2BIG ? -ENOSPC : -errno;
	err = leaf_slot_update(s, l, gen, blk, lf, &done);
	if (err || done)
		return err;
	return bitmap_or_range(s->bitmap[l][gen], blk, 1, BIT_LONGER, 1);
}

static int leaf_load(struct shield *s, enum shield_list l, uint32_t gen,
		     uint32_t blk, struct shield_v4_leaf *lf)
{
	if (bpf_map_lookup_elem(s->leaf[l][gen], &blk, lf) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	memset(lf, 0, sizeof(*lf));
	return 0;
}

/* Re-derives a leaf's prefix bits from the /25../31 entries that remain. */
static int leaf_recompute_pfx(struct shield *s, enum shield_list l, uint32_t gen,
			      const struct shield_set_meta *m, uint32_t blk)
{
	struct shield_v4_leaf lf;
	int len, err;

	err = leaf_load(s, l, gen, blk, &lf);
	if (err)
		return err;
	memset(lf.pfx, 0, sizeof(lf.pfx));
	for (len = 25; len <= 31; len++) {
		uint32_t sub, nsub = 1u << (len - 24), size = 1u << (32 - len);

		if (!m->v4_plen_count[len])
			continue;
		for (sub = 0; sub < nsub; sub++) {
			struct shield_pfx_key k;
			struct shield_entry e;

			memset(&k, 0, sizeof(k));
			k.plen = 96 + (uint32_t)len;
			k.addr.a[10] = k.addr.a[11] = 0xff;
			k.addr.w[3] = htonl(blk << 8 | sub * size);
			if (bpf_map_lookup_elem(s->pfx[l][gen], &k, &e) == 0)
				leaf_bits(&lf, 1, sub * size, size, 1);
		}
	}
	return leaf_store(s, l, gen, blk, &lf);
}

/* ---- single entries ------------------------------------------------------ */

/* ---- IPv6 /32 nodes ---------------------------------------------------- */

static int node_lens(const struct shield_v6_node *n)
{
	return __builtin_popcountll(n->lens[0]) +
	       __builtin_popcountll(n->lens[1] & 0xffffffffull);
}

/* Bits 32..63 of an IPv6 prefix of length 32..64, masked (network order). */
static uint32_t v6_word1(const struct shield_cidr *c)
{
	uint32_t w;

	memcpy(&w, c->addr + 4, 4);
	if (c->plen <= 32)
		return 0;
	return w & htonl(c->plen >= 64 ? 0xffffffffu : 0xffffffffu << (64 - c->plen));
}

/* Index of c in n's inline prefixes, or -1. */
static int node_inl_find(const struct shield_v6_node *n, const struct shield_cidr *c)
{
	uint32_t i, bits = v6_word1(c);

	for (i = 0; i < n->n_inl && i < SHIELD_V6_NODE_INLINE; i++)
		if (n->inl[i].plen == c->plen && n->inl[i].bits == bits)
			return (int)i;
	return -1;
}

/* Puts IPv6 entry c (length >= /32) into its /32 node, before the entry
 * itself is written: inline if it is a /32../64 prefix and there is room
 * (the program then answers with this lookup alone), else as a length to
 * probe. -ENOSPC if the node would need more probed lengths than the
 * program probes. */
static int node_add(struct shield *s, enum shield_list l, uint32_t gen,
		    const struct shield_cidr *c)
{
	struct shield_v6_node n;
	uint32_t key, bit;

	if (c->family != 6 || c->plen < 32)
		return 0;
	memcpy(&key, c->addr, 4);
	if (bpf_map_lookup_elem(s->node[l][gen], &key, &n)) {
		if (errno != ENOENT)
			return -errno;
		memset(&n, 0, sizeof(n));
	}
	bit = c->plen - 32u;
	if (c->plen <= 64 && node_inl_find(&n, c) >= 0)
		return 0;
	if (c->plen <= 64 && n.n_inl < SHIELD_V6_NODE_INLINE) {
		n.inl[n.n_inl].bits = v6_word1(c);
		n.inl[n.n_inl++].plen = c->plen;
	} else {
		if (n.lens[bit / 64] & (1ull << (bit % 64)))
			return 0;
		n.lens[bit / 64] |= 1ull << (bit % 64);
		if (node_lens(&n) > SHIELD_MAX_V6_NODE_LENS)
			return -ENOSPC;
	}
	if (bpf_map_update_elem(s->node[l][gen], &key, &n, BPF_ANY))
		return errno == E2BIG ? -ENOSPC : -errno;
	return 0;
}

/* Removes deleted IPv6 /32../64 prefix c from its node's inline prefixes
 * (an inline prefix must never outlive its entry: it alone drops). The
 * element is replaced whole, so the program sees the old or the new node. */
static int node_del(struct shield *s, enum shield_list l, uint32_t gen,
		    const struct shield_cidr *c)
{
	struct shield_v6_node n;
	uint32_t key;
	int i;

	if (c->family != 6 || c->plen < 32 || c->plen > 64)
		return 0;
	memcpy(&key, c->addr, 4);
	if (bpf_map_lookup_elem(s->node[l][gen], &key, &n))
		return errno == ENOENT ? 0 : -errno;
	i = node_inl_find(&n, c);
	if (i < 0)
		return 0;
	n.inl[i] = n.inl[n.n_inl - 1];
	memset(&n.inl[--n.n_inl], 0, sizeof(n.inl[0]));
	if (bpf_map_update_elem(s->node[l][gen], &key, &n, BPF_EXIST))
		return -errno;
	return 0;
}

/* Marks an IPv4 /25../32 entry in its /24's leaf (no-op for IPv6). */
static int leaf_add(struct shield *s, enum shield_list l, uint32_t gen,
		    const struct shield_cidr *c)
{
	struct shield_v4_leaf lf;
	uint32_t host = v4_host(c);
	int err;

	if (c->family != 4 || c->plen <= 24)
		return 0;
	err = leaf_load(s, l, gen, host >> 8, &lf);
	if (err)
		return err;
	leaf_bits(&lf, c->plen != 32, host & 0xff, 1u << (32 - c->plen), 1);
	return leaf_store(s, l, gen, host >> 8, &lf);
}

int shield_add(struct shield *s, enum shield_list l, const struct shield_cidr *c,
	       uint64_t expires)
{
	struct shield_set_meta m, old;
	struct shield_entry e = { .expires = expires };
	struct shield_pfx_key k;
	uint32_t gen = 0;
	int err;

	if (!s || l >= SHIELD_LIST_COUNT || !cidr_valid(c))
		return -EINVAL;
	err = active_meta(s, l, &gen, &m);
	if (err)
		return err;
	old = m;
	/* An empty list is skipped by the program: unflag it before the
	 * first entry appears. */
	if (m.n_exact == 0 && m.n_pfx == 0 && (err = gen_write(s, l, gen, 0)))
		return err;
	memset(&k, 0, sizeof(k));
	k.plen = cidr_key(c, &k.addr);
	err = node_add(s, l, gen, c);
	if (err)
		return err;
	if (is_exact(c)) {
		if (bpf_map_update_elem(s->exact[l][gen], &k.addr, &e, BPF_EXIST) == 0)
			return 0;
		m.n_exact++;
		err = meta_write(s, l, gen, &m);
		if (err)
			return err;
		if (bpf_map_update_elem(s->exact[l][gen], &k.addr, &e, BPF_NOEXIST)) {
			err = errno == E2BIG ? -ENOSPC : -errno;
			meta_write(s, l, gen, &old);
			return err;
		}
		return leaf_add(s, l, gen, c);
	}
	if (bpf_map_update_elem(s->pfx[l][gen], &k, &e, BPF_EXIST) == 0)
		return 0;
	m.n_pfx++;
	(*plen_slot(&m, c))++;
	if (in_bitmap(c))
		m.n_v4_bitmap++;
	else if ((err = meta_plens(&m)))
		return err;
	/* Probe lists first (an extra probe is harmless), then the entry; an
	 * inline node prefix must not outlive a failed add. */
	err = meta_write(s, l, gen, &m);
	if (err) {
		node_del(s, l, gen, c);
		return err;
	}
	if (bpf_map_update_elem(s->pfx[l][gen], &k, &e, BPF_NOEXIST)) {
		err = errno == E2BIG ? -ENOSPC : -errno;
		node_del(s, l, gen, c);
		meta_write(s, l, gen, &old);
		return err;
	}
	if (in_bitmap(c)) {
		uint32_t first = v4_host(c) >> 8;

		err = bitmap_or_range(s->bitmap[l][gen], first,
				      1ull << (24 - c->plen), BIT_COVERED, 1);
	} else {
		err = leaf_add(s, l, gen, c);
	}
	return err;
}

/* The end of a delete: the counts, then the empty flag once nothing is
 * left (the program then skips the list). */
static int del_done(struct shield *s, enum shield_list l, uint32_t gen,
		    const struct shield_set_meta *m)
{
	int err = meta_write(s, l, gen, m);

	if (!err && m->n_exact == 0 && m->n_pfx == 0)
		err = gen_write(s, l, gen, 1);
	return err;
}

int shield_del(struct shield *s, enum shield_list l, const struct shield_cidr *c)
{
	struct shield_set_meta m;
	struct shield_pfx_key k;
	uint32_t gen = 0;
	int err;

	if (!s || l >= SHIELD_LIST_COUNT || !cidr_valid(c))
		return -EINVAL;
	err = active_meta(s, l, &gen, &m);
	if (err)
		return err;
	memset(&k, 0, sizeof(k));
	k.plen = cidr_key(c, &k.addr);
	if (is_exact(c)) {
		if (bpf_map_delete_elem(s->exact[l][gen], &k.addr))
			return -errno;
		if (m.n_exact)
			m.n_exact--;
		if (c->family == 4) {
			struct shield_v4_leaf lf;
			uint32_t host = v4_host(c);

			err = leaf_load(s, l, gen, host >> 8, &lf);
			if (err)
				return err;
			leaf_bits(&lf, 0, host & 0xff, 1, 0);
			err = leaf_store(s, l, gen, host >> 8, &lf);
			if (err)
				return err;
		}
		return del_done(s, l, gen, &m);
	}
	if (bpf_map_delete_elem(s->pfx[l][gen], &k))
		return -errno;
	if (m.n_pfx)
		m.n_pfx--;
	if (*plen_slot(&m, c))
		(*plen_slot(&m, c))--;
	if (in_bitmap(c)) {
		if (m.n_v4_bitmap)
			m.n_v4_bitmap--;
		err = bitmap_recompute(s, l, gen, &m, v4_host(c) >> 8,
				       1ull << (24 - c->plen));
		if (err)
			return err;
	} else if (c->family == 4) {
		err = leaf_recompute_pfx(s, l, gen, &m, v4_host(c) >> 8);
		if (err)
			return err;
	} else {
		err = node_del(s, l, gen, c);
		if (err)
			return err;
		meta_plens(&m); /* shrinking cannot overflow */
	}
	return del_done(s, l, gen, &m);
}

int shield_lookup(struct shield *s, enum shield_list l,
		  const struct shield_cidr *c, uint64_t *expires)
{
	struct shield_pfx_key k;
	struct shield_entry e;
	uint32_t gen = 0;
	int err, r;

	if (!s || l >= SHIELD_LIST_COUNT || !cidr_valid(c))
		return -EINVAL;
	err = active_gen(s, l, &gen);
	if (err)
		return err;
	memset(&k, 0, sizeof(k));
	k.plen = cidr_key(c, &k.addr);
	if (is_exact(c))
		r = bpf_map_lookup_elem(s->exact[l][gen], &k.addr, &e);
	else
		r = bpf_map_lookup_elem(s->pfx[l][gen], &k, &e);
	if (r)
		return errno == ENOENT ? 0 : -errno;
	if (expires)
		*expires = e.expires;
	return 1;
}

/* Walks a hash map in batches; cb gets (key, value) pointers. */
typedef int (*walk_cb)(const void *key, const struct shield_entry *v, void *arg);

static int hash_walk(int fd, size_t key_size, walk_cb cb, void *arg)
{
	enum { CHUNK = 8192 };
	LIBBPF_OPTS(bpf_map_batch_opts, bo);
	struct shield_entry *vals = NULL;
	char *keys = NULL;
	uint64_t in_batch = 0, out_batch = 0;
	int first = 1, err = 0, done = 0;

	keys = malloc(key_size * CHUNK);
	vals = malloc(sizeof(*vals) * CHUNK);
	if (!keys || !vals) {
		err = -ENOMEM;
		goto out;
	}
	while (!done) {
		__u32 n = CHUNK, i;
		int r;

		r = bpf_map_lookup_batch(fd, first ? NULL : &in_batch, &out_batch,
					 keys, vals, &n, &bo);
		if (r && errno != ENOENT) {
			err = -errno;
			goto out;
		}
		done = r != 0;
		first = 0;
		in_batch = out_batch;
		for (i = 0; i < n; i++) {
			err = cb(keys + i * key_size, &vals[i], arg);
			if (err)
				goto out;
		}
	}
out:
	free(keys);
	free(vals);
	return err;
}

struct list_ctx {
	shield_entry_cb cb;
	void *arg;
	int exact;
};

static int list_one(const void *key, const struct shield_entry *v, void *arg)
{
	struct list_ctx *lc = arg;
	struct shield_cidr c;

	if (lc->exact) {
		key_cidr(key, 128, &c);
	} else {
		const struct shield_pfx_key *k = key;

		key_cidr(&k->addr, k->plen, &c);
	}
	return lc->cb(&c, v->expires, lc->arg);
}

int shield_list_entries(struct shield *s, enum shield_list l, shield_entry_cb cb,
			void *arg)
{
	struct list_ctx lc = { .cb = cb, .arg = arg, .exact = 1 };
	uint32_t gen = 0;
	int err;

	if (!s || l >= SHIELD_LIST_COUNT || !cb)
		return -EINVAL;
	err = active_gen(s, l, &gen);
	if (err)
		return err;
	err = hash_walk(s->exact[l][gen], sizeof(struct shield_addr), list_one, &lc);
	if (err)
		return err;
	lc.exact = 0;
	return hash_walk(s->pfx[l][gen], sizeof(struct shield_pfx_key), list_one, &lc);
}

int shield_count(struct shield *s, enum shield_list l, uint64_t *n)
{
	struct shield_set_meta m;
	uint32_t gen = 0;
	int err;

	if (!s || l >= SHIELD_LIST_COUNT || !n)
		return -EINVAL;
	err = active_meta(s, l, &gen, &m);
	if (err)
		return err;
	*n = (uint64_t)m.n_exact + m.n_pfx;
	return 0;
}

/* ---- bulk replacement ------------------------------------------------------ */

struct bulk_exact {
	struct shield_addr key;
	struct shield_entry val;
};

struct bulk_pfx {
	struct shield_pfx_key key;
	struct shield_entry val;
};

struct shield_bulk {
	struct shield *s;
	enum shield_list l;
	struct bulk_exact *ex;
	size_t n_ex, cap_ex;
	struct bulk_pfx *px;
	size_t n_px, cap_px;
};

struct shield_bulk *shield_bulk_begin(struct shield *s, enum shield_list l)
{
	struct shield_bulk *b;

	if (!s || l >= SHIELD_LIST_COUNT) {
		errno = EINVAL;
		return NULL;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->s = s;
	b->l = l;
	return b;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap;
	void *p;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 4096;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, ncap * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

int shield_bulk_add(struct shield_bulk *b, const struct shield_cidr *c,
		    uint64_t expires)
{
	int err;

	if (!b || !cidr_valid(c))
		return -EINVAL;
	if (is_exact(c)) {
		struct bulk_exact *e;

		err = grow((void **)&b->ex, &b->cap_ex, b->n_ex + 1, sizeof(*b->ex));
		if (err)
			return err;
		e = &b->ex[b->n_ex++];
		cidr_key(c, &e->key);
		e->val.expires = expires;
		return 0;
	} else {
		struct bulk_pfx *e;

		err = grow((void **)&b->px, &b->cap_px, b->n_px + 1, sizeof(*b->px));
		if (err)
			return err;
		e = &b->px[b->n_px++];
		memset(&e->key, 0, sizeof(e->key));
		e->key.plen = cidr_key(c, &e->key.addr);
		e->val.expires = expires;
		return 0;
	}
}

size_t shield_bulk_size(const struct shield_bulk *b)
{
	return b ? b->n_ex + b->n_px : 0;
}

void shield_bulk_abort(struct shield_bulk *b)
{
	if (!b)
		return;
	free(b->ex);
	free(b->px);
	free(b);
}

static int cmp_exact(const void *a, const void *b)
{
	return memcmp(&((const struct bulk_exact *)a)->key,
		      &((const struct bulk_exact *)b)->key, sizeof(struct shield_addr));
}

static int cmp_pfx(const void *a, const void *b)
{
	return memcmp(&((const struct bulk_pfx *)a)->key,
		      &((const struct bulk_pfx *)b)->key, sizeof(struct shield_pfx_key));
}

/* Empties a hash map (the inactive generation) in batches. */
static int hash_clear(int fd, size_t key_size, size_t val_size)
{
	enum { CHUNK = 16384 };
	LIBBPF_OPTS(bpf_map_batch_opts, bo);
	char *vals = malloc(val_size * CHUNK);
	char *keys = malloc(key_size * CHUNK);
	int err = 0;

	if (!keys || !vals) {
		err = -ENOMEM;
		goto out;
	}
	for (;;) {
		uint64_t out_batch = 0;
		__u32 n = CHUNK;
		int r;

		/* Always restart from the beginning: entries just deleted
		 * are gone, so the walk converges. */
		r = bpf_map_lookup_and_delete_batch(fd, NULL, &out_batch, keys,
						    vals, &n, &bo);
		if (r && errno != ENOENT) {
			err = -errno;
			goto out;
		}
		if (n == 0 || r)
			break;
	}
out:
	free(keys);
	free(vals);
	return err;
}

static int batch_put(int fd, const void *recs, size_t n, size_t rec_size,
		     size_t key_size)
{
	enum { CHUNK = 65536 };
	LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = BPF_ANY);
	char *keys = malloc(key_size * CHUNK);
	struct shield_entry *vals = malloc(sizeof(*vals) * CHUNK);
	size_t done = 0;
	int err = 0;

	if (!keys || !vals) {
		err = -ENOMEM;
		goto out;
	}
	while (done < n) {
		__u32 cnt = n - done > CHUNK ? CHUNK : (__u32)(n - done), i;

		for (i = 0; i < cnt; i++) {
			const char *r = (const char *)recs + (done + i) * rec_size;

			memcpy(keys + i * key_size, r, key_size);
			memcpy(&vals[i], r + rec_size - sizeof(struct shield_entry),
			       sizeof(struct shield_entry));
		}
		if (bpf_map_update_batch(fd, keys, vals, &cnt, &bo)) {
			err = errno == E2BIG || errno == ENOMEM ? -ENOSPC : -errno;
			goto out;
		}
		done += cnt;
	}
out:
	free(keys);
	free(vals);
	return err;
}

static int map_max_entries(int fd, uint32_t *n)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	*n = info.max_entries;
	return 0;
}

/* Slot i of a layout: leaf i when i < used, else an empty slot (tag 0). */
static void slot_value(struct shield_v4_slot *v, size_t i, size_t used,
		       const uint32_t *lkeys, const struct shield_v4_leaf *lvals)
{
	memset(v, 0, sizeof(*v));
	if (i < used) {
		v->leaf = lvals[i];
		v->tag = lkeys[i] + 1;
	}
}

/* Lays the nleaves leaves (blocks in ascending order) out in the slot
 * array fd of an inactive generation, word by word, and sets each word's
 * base in bitmap (SHIELD_SLOT_NONE for words without leaves and for the
 * words that no longer fit: those keep the hash). Only the slots this load
 * uses and those the generation's previous load used (cleared) are
 * written, so the cost follows the set, not the array: element by element
 * for a few, else through a shared mapping (BPF_F_MMAPABLE; mapping 18 MB
 * costs ~50 ms here). The generation switch that follows is a syscall,
 * which orders these stores before it. */
static int slots_lay_out(int fd, const uint32_t *lkeys,
			 const struct shield_v4_leaf *lvals, size_t nleaves,
			 struct shield_v4_word *bitmap, uint32_t nwords)
{
	enum { FEW = 4096 };
	size_t len, pg = (size_t)sysconf(_SC_PAGESIZE), i, j, used = 0, old, n;
	struct shield_v4_slot *sl, last;
	uint32_t nslots = 0, cap;
	int err;

	err = map_max_entries(fd, &nslots);
	if (err)
		return err;
	if (nslots < 2)
		return -EINVAL;
	cap = nslots - 1; /* the last slot holds the count */
	if (bpf_map_lookup_elem(fd, &cap, &last))
		return -errno;
	old = last.leaf.exact[0] < cap ? (size_t)last.leaf.exact[0] : cap;
	for (i = 0; i < nwords; i++)
		bitmap[i].base = SHIELD_SLOT_NONE;
	for (i = 0; i < nleaves; i = j) {
		uint32_t w = lkeys[i] >> 6;

		for (j = i; j < nleaves && lkeys[j] >> 6 == w; j++)
			;
		if (j > cap) /* blocks are in order: the later words too */
			break;
		bitmap[w].base = (uint32_t)i;
		used = j;
	}
	n = used > old ? used : old;
	memset(&last, 0, sizeof(last));
	last.leaf.exact[0] = used;
	if (n <= FEW) {
		for (i = 0; i < n; i++) {
			struct shield_v4_slot v;
			uint32_t k = (uint32_t)i;

			slot_value(&v, i, used, lkeys, lvals);
			if (bpf_map_update_elem(fd, &k, &v, BPF_ANY))
				return -errno;
		}
		return bpf_map_update_elem(fd, &cap, &last, BPF_ANY) ? -errno : 0;
	}
	len = ((size_t)nslots * sizeof(*sl) + pg - 1) / pg * pg;
	sl = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (sl == MAP_FAILED)
		return -errno;
	for (i = 0; i < n; i++)
		slot_value(&sl[i], i, used, lkeys, lvals);
	sl[cap] = last;
	munmap(sl, len);
	return 0;
}

/* Batch update from parallel key and value arrays. */
static int batch_put_kv(int fd, const void *keys, size_t key_size,
			const void *vals, size_t val_size, size_t n)
{
	enum { CHUNK = 65536 };
	LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = BPF_ANY);
	size_t done = 0;

	while (done < n) {
		__u32 cnt = n - done > CHUNK ? CHUNK : (__u32)(n - done);

		if (bpf_map_update_batch(fd, (const char *)keys + done * key_size,
					 (const char *)vals + done * val_size, &cnt, &bo))
			return errno == E2BIG || errno == ENOMEM ? -ENOSPC : -errno;
		done += cnt;
	}
	return 0;
}

struct node_mark {
	uint32_t key;
	uint32_t bit;              /* length - 32 (96: a /128 exact entry) */
	uint32_t bits;             /* /32../64: prefix bits 32..63 */
};

static int cmp_node_mark(const void *a, const void *b)
{
	uint32_t x = ((const struct node_mark *)a)->key, y = ((const struct node_mark *)b)->key;

	return x < y ? -1 : x > y;
}

struct leaf_mark {
	uint32_t blk;
	uint16_t first, n;
	uint8_t pfx;
};

static int cmp_mark(const void *a, const void *b)
{
	uint32_t x = ((const struct leaf_mark *)a)->blk, y = ((const struct leaf_mark *)b)->blk;

	return x < y ? -1 : x > y;
}

int shield_bulk_commit(struct shield_bulk *b)
{
	static const uint32_t nwords = SHIELD_V4_BITMAP_WORDS;
	struct shield_set_meta m;
	struct shield *s;
	struct shield_v4_word *bitmap = NULL;
	struct shield_v4_leaf *lvals = NULL;
	struct leaf_mark *marks = NULL;
	struct node_mark *nmk = NULL;
	struct shield_v6_node *nvals = NULL;
	uint32_t *idx = NULL, *lkeys = NULL, *nkeys = NULL;
	uint32_t gen = 0, ngen;
	size_t i, j, nmarks = 0, nleaves = 0, nnm = 0, nnodes = 0;
	int err;

	if (!b)
		return -EINVAL;
	s = b->s;
	err = active_gen(s, b->l, &gen);
	if (err)
		goto out;
	ngen = gen ^ 1;

	/* Dedup (last expiry wins is not needed: keep the longest-lived). */
	if (b->n_ex) {
		qsort(b->ex, b->n_ex, sizeof(*b->ex), cmp_exact);
		for (i = 1, j = 0; i < b->n_ex; i++) {
			if (!cmp_exact(&b->ex[i], &b->ex[j]))
				continue;
			b->ex[++j] = b->ex[i];
		}
		b->n_ex = j + 1;
	}
	if (b->n_px) {
		qsort(b->px, b->n_px, sizeof(*b->px), cmp_pfx);
		for (i = 1, j = 0; i < b->n_px; i++) {
			if (!cmp_pfx(&b->px[i], &b->px[j]))
				continue;
			b->px[++j] = b->px[i];
		}
		b->n_px = j + 1;
	}

	memset(&m, 0, sizeof(m));
	m.n_exact = (uint32_t)b->n_ex;
	m.n_pfx = (uint32_t)b->n_px;
	bitmap = calloc(nwords, sizeof(*bitmap));
	idx = malloc(nwords * sizeof(*idx));
	marks = malloc((b->n_ex + b->n_px + 1) * sizeof(*marks));
	nmk = malloc((b->n_ex + b->n_px + 1) * sizeof(*nmk));
	if (!bitmap || !idx || !marks || !nmk) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < b->n_px; i++) {
		const struct shield_pfx_key *k = &b->px[i].key;

		struct shield_cidr c;

		key_cidr(&k->addr, k->plen, &c);
		(*plen_slot(&m, &c))++;
		if (in_bitmap(&c)) {
			uint64_t first = ntohl(k->addr.w[3]) >> 8;
			uint64_t n = 1ull << (120 - k->plen), x;

			m.n_v4_bitmap++;
			for (x = first; x < first + n; x++)
				bitmap[x >> 6].covered |= 1ull << (x & 63);
		} else if (c.family == 4) {
			uint32_t h = v4_host(&c);

			marks[nmarks++] = (struct leaf_mark){ .blk = h >> 8,
				.first = (uint16_t)(h & 0xff),
				.n = (uint16_t)(1u << (32 - c.plen)), .pfx = 1 };
		} else if (c.plen >= 32) {
			memcpy(&nmk[nnm].key, c.addr, 4);
			nmk[nnm].bits = c.plen <= 64 ? v6_word1(&c) : 0;
			nmk[nnm++].bit = c.plen - 32u;
		}
	}
	for (i = 0; i < b->n_ex; i++) {
		struct shield_cidr c;

		key_cidr(&b->ex[i].key, 128, &c);
		if (c.family == 4) {
			uint32_t h = v4_host(&c);

			marks[nmarks++] = (struct leaf_mark){ .blk = h >> 8,
				.first = (uint16_t)(h & 0xff), .n = 1, .pfx = 0 };
		} else {
			memcpy(&nmk[nnm].key, c.addr, 4);
			nmk[nnm++].bit = 96;
		}
	}
	/* One node per IPv6 /32 with entries of length >= /32 below it. */
	qsort(nmk, nnm, sizeof(*nmk), cmp_node_mark);
	nkeys = malloc((nnm + 1) * sizeof(*nkeys));
	nvals = calloc(nnm + 1, sizeof(*nvals));
	if (!nkeys || !nvals) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nnm; i++) {
		struct shield_v6_node *n;

		if (nnodes == 0 || nkeys[nnodes - 1] != nmk[i].key)
			nkeys[nnodes++] = nmk[i].key;
		n = &nvals[nnodes - 1];
		if (nmk[i].bit <= 32 && n->n_inl < SHIELD_V6_NODE_INLINE) {
			/* entries are deduplicated above: no inline twins */
			n->inl[n->n_inl].bits = nmk[i].bits;
			n->inl[n->n_inl++].plen = nmk[i].bit + 32;
			continue;
		}
		n->lens[nmk[i].bit / 64] |= 1ull << (nmk[i].bit % 64);
		if (node_lens(n) > SHIELD_MAX_V6_NODE_LENS) {
			err = -ENOSPC;
			goto out;
		}
	}
	/* One leaf per /24 that holds /25../32 entries. */
	qsort(marks, nmarks, sizeof(*marks), cmp_mark);
	lkeys = malloc((nmarks + 1) * sizeof(*lkeys));
	lvals = calloc(nmarks + 1, sizeof(*lvals));
	if (!lkeys || !lvals) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nmarks; i++) {
		uint32_t x = marks[i].blk;

		if (nleaves == 0 || lkeys[nleaves - 1] != x) {
			lkeys[nleaves++] = x;
			bitmap[x >> 6].longer |= 1ull << (x & 63);
		}
		leaf_bits(&lvals[nleaves - 1], marks[i].pfx, marks[i].first,
			  marks[i].n, 1);
	}
	err = meta_plens(&m);
	if (err)
		goto out;

	/* Fill the inactive generation: old contents out, new contents in. */
	err = hash_clear(s->exact[b->l][ngen], sizeof(struct shield_addr),
			 sizeof(struct shield_entry));
	if (!err)
		err = hash_clear(s->pfx[b->l][ngen], sizeof(struct shield_pfx_key),
				 sizeof(struct shield_entry));
	if (!err)
		err = hash_clear(s->leaf[b->l][ngen], sizeof(uint32_t),
				 sizeof(struct shield_v4_leaf));
	if (!err)
		err = batch_put_kv(s->leaf[b->l][ngen], lkeys, sizeof(*lkeys), lvals,
				   sizeof(*lvals), nleaves);
	if (!err) /* before the words that point into it */
		err = slots_lay_out(s->slot[b->l][ngen], lkeys, lvals, nleaves,
				    bitmap, nwords);
	if (!err)
		err = hash_clear(s->node[b->l][ngen], sizeof(uint32_t),
				 sizeof(struct shield_v6_node));
	if (!err)
		err = batch_put_kv(s->node[b->l][ngen], nkeys, sizeof(*nkeys), nvals,
				   sizeof(*nvals), nnodes);
	if (!err)
		err = batch_put(s->exact[b->l][ngen], b->ex, b->n_ex, sizeof(*b->ex),
				sizeof(struct shield_addr));
	if (!err)
		err = batch_put(s->pfx[b->l][ngen], b->px, b->n_px, sizeof(*b->px),
				sizeof(struct shield_pfx_key));
	if (err)
		goto out;
	for (i = 0; i < nwords; i++)
		idx[i] = (uint32_t)i;
	{
		LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = BPF_ANY);
		__u32 cnt = nwords;

		if (bpf_map_update_batch(s->bitmap[b->l][ngen], idx, bitmap, &cnt, &bo)) {
			err = -errno;
			goto out;
		}
	}
	err = meta_write(s, b->l, ngen, &m);
	if (err)
		goto out;
	/* The switch: one aligned 4-byte value (generation and empty flag). */
	err = gen_write(s, b->l, ngen, m.n_exact == 0 && m.n_pfx == 0);
out:
	free(bitmap);
	free(idx);
	free(marks);
	free(lkeys);
	free(lvals);
	free(nmk);
	free(nkeys);
	free(nvals);
	shield_bulk_abort(b);
	return err;
}

static char *skip_ws(char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

int shield_bulk_load_file(struct shield *s, enum shield_list l, const char *path,
			  uint64_t now, uint64_t expires, size_t *loaded,
			  char *err, size_t errlen)
{
	struct shield_bulk *b = NULL;
	char line[512];
	FILE *f = NULL;
	size_t lineno = 0;
	int rc = 0;

	if (err && errlen)
		err[0] = 0;
	f = fopen(path, "r");
	if (!f) {
		rc = -errno;
		if (err)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	b = shield_bulk_begin(s, l);
	if (!b) {
		rc = -errno;
		goto fail;
	}
	while (fgets(line, sizeof(line), f)) {
		struct shield_cidr c;
		char *p, *tok, *ttl, *e;
		uint64_t exp = expires;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			rc = -EINVAL;
			if (err)
				snprintf(err, errlen, "%s:%zu: line too long", path, lineno);
			goto fail;
		}
		if ((p = strchr(line, '#')))
			*p = 0;
		tok = skip_ws(line);
		for (p = tok; *p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r'; p++)
			;
		if (p == tok)
			continue;
		ttl = skip_ws(p);
		*p = 0;
		if (shield_cidr_parse(tok, &c)) {
			rc = -EINVAL;
			if (err)
				snprintf(err, errlen, "%s:%zu: not an address or CIDR: '%s'",
					 path, lineno, tok);
			goto fail;
		}
		if (*ttl && *ttl != '\n' && *ttl != '\r') {
			unsigned long long t;

			errno = 0;
			t = strtoull(ttl, &e, 10);
			e = skip_ws(e);
			if (errno || e == ttl || (*e && *e != '\n' && *e != '\r') ||
			    *ttl == '-' || t == 0) {
				rc = -EINVAL;
				if (err)
					snprintf(err, errlen,
						 "%s:%zu: bad TTL (want seconds > 0)",
						 path, lineno);
				goto fail;
			}
			exp = now + t;
		}
		rc = shield_bulk_add(b, &c, exp);
		if (rc) {
			if (err)
				snprintf(err, errlen, "%s:%zu: %s", path, lineno,
					 strerror(-rc));
			goto fail;
		}
	}
	if (ferror(f)) {
		rc = -EIO;
		if (err)
			snprintf(err, errlen, "%s: read error", path);
		goto fail;
	}
	fclose(f);
	f = NULL;
	if (loaded)
		*loaded = shield_bulk_size(b);
	rc = shield_bulk_commit(b);
	b = NULL;
	if (rc && err)
		snprintf(err, errlen, "%s: commit failed: %s", path, strerror(-rc));
	return rc;
fail:
	shield_bulk_abort(b);
	if (f)
		fclose(f);
	return rc;
}

/* ---- expiry ----------------------------------------------------------------- */

struct expire_ctx {
	uint64_t now;
	struct shield_cidr *dead;
	size_t n, cap;
	int exact;
};

static int expire_collect(const void *key, const struct shield_entry *v, void *arg)
{
	struct expire_ctx *x = arg;

	if (!v->expires || v->expires > x->now)
		return 0;
	if (grow((void **)&x->dead, &x->cap, x->n + 1, sizeof(*x->dead)))
		return -ENOMEM;
	if (x->exact) {
		key_cidr(key, 128, &x->dead[x->n++]);
	} else {
		const struct shield_pfx_key *k = key;

		key_cidr(&k->addr, k->plen, &x->dead[x->n++]);
	}
	return 0;
}

int shield_expire(struct shield *s, uint64_t now, size_t *removed)
{
	struct expire_ctx x = { .now = now };
	size_t total = 0, i;
	int err = 0, l;

	if (!s)
		return -EINVAL;
	for (l = 0; l < SHIELD_LIST_COUNT && !err; l++) {
		uint32_t gen = 0;

		x.n = 0;
		err = active_gen(s, l, &gen);
		if (err)
			break;
		x.exact = 1;
		err = hash_walk(s->exact[l][gen], sizeof(struct shield_addr),
				expire_collect, &x);
		if (err)
			break;
		x.exact = 0;
		err = hash_walk(s->pfx[l][gen], sizeof(struct shield_pfx_key),
				expire_collect, &x);
		if (err)
			break;
		for (i = 0; i < x.n; i++) {
			int r = shield_del(s, l, &x.dead[i]);

			if (r && r != -ENOENT) {
				err = r;
				break;
			}
			total += r == 0;
		}
	}
	free(x.dead);
	if (removed)
		*removed = total;
	return err;
}

/* ---- counters, events ---------------------------------------------------------- */

int shield_counters(struct shield *s, struct shield_counter *out)
{
	int ncpu = libbpf_num_possible_cpus();
	struct shield_counter *per;
	uint32_t k;
	int c, err = 0;

	if (!s || !out)
		return -EINVAL;
	if (ncpu < 0)
		return ncpu;
	per = calloc(ncpu, sizeof(*per));
	if (!per)
		return -ENOMEM;
	for (k = 0; k < SHIELD_C_SLOTS; k++) {
		out[k].packets = out[k].bytes = 0;
		if (bpf_map_lookup_elem(s->cnt, &k, per)) {
			err = -errno;
			break;
		}
		for (c = 0; c < ncpu; c++) {
			out[k].packets += per[c].packets;
			out[k].bytes += per[c].bytes;
		}
	}
	free(per);
	return err;
}

int shield_counters_reset(struct shield *s)
{
	int ncpu = libbpf_num_possible_cpus();
	struct shield_counter *per;
	uint32_t k;
	int err = 0;

	if (ncpu < 0)
		return ncpu;
	per = calloc(ncpu, sizeof(*per));
	if (!per)
		return -ENOMEM;
	for (k = 0; k < SHIELD_C_SLOTS && !err; k++)
		if (bpf_map_update_elem(s->cnt, &k, per, BPF_ANY))
			err = -errno;
	free(per);
	return err;
}

int shield_rate_reset(struct shield *s)
{
	struct shield_addr k;

	while (bpf_map_get_next_key(s->rate, NULL, &k) == 0)
		if (bpf_map_delete_elem(s->rate, &k))
			return -errno;
	return 0;
}

static const char *const reason_names[SHIELD_C_SLOTS] = {
	[SHIELD_R_PASS_NOT_IP] = "pass_not_ip",
	[SHIELD_R_PASS_NOT_TCP] = "pass_not_tcp",
	[SHIELD_R_PASS_NOT_SMTP] = "pass_not_smtp",
	[SHIELD_R_PASS_FRAGMENT] = "pass_fragment",
	[SHIELD_R_PASS_NO_XSK] = "pass_no_xsk",
	[SHIELD_R_REDIRECT] = "redirect_xsk",
	[SHIELD_R_DROP_MALFORMED] = "drop_malformed",
	[SHIELD_R_DROP_FRAGMENT] = "drop_fragment",
	[SHIELD_R_DROP_BLOCK_EXACT] = "drop_block_exact",
	[SHIELD_R_DROP_BLOCK_PREFIX] = "drop_block_prefix",
	[SHIELD_R_DROP_RATE] = "drop_rate",
	[SHIELD_R_DROP_SYNFLOOD] = "drop_synflood",
	[SHIELD_R_TX_SYNCOOKIE] = "tx_syncookie",
	[SHIELD_C_ALLOW_HIT] = "allowlist_hit",
	[SHIELD_C_FLOOD_SYN] = "flood_syn",
};

const char *shield_reason_name(unsigned reason)
{
	return reason < SHIELD_C_SLOTS ? reason_names[reason] : "?";
}

int shield_reason_verdict(unsigned reason)
{
	switch (reason) {
	case SHIELD_R_PASS_NOT_IP:
	case SHIELD_R_PASS_NOT_TCP:
	case SHIELD_R_PASS_NOT_SMTP:
	case SHIELD_R_PASS_FRAGMENT:
	case SHIELD_R_PASS_NO_XSK:
		return XDP_PASS;
	case SHIELD_R_REDIRECT:
		return XDP_REDIRECT;
	case SHIELD_R_TX_SYNCOOKIE:
		return XDP_TX;
	case SHIELD_R_DROP_MALFORMED:
	case SHIELD_R_DROP_FRAGMENT:
	case SHIELD_R_DROP_BLOCK_EXACT:
	case SHIELD_R_DROP_BLOCK_PREFIX:
	case SHIELD_R_DROP_RATE:
	case SHIELD_R_DROP_SYNFLOOD:
		return XDP_DROP;
	default:
		return -1;
	}
}

static int rb_event(void *ctx, void *data, size_t size)
{
	struct shield *s = ctx;
	int r;

	if (size < sizeof(struct shield_event))
		return 0;
	r = s->ev_cb(data, s->ev_arg);
	s->ev_n++;
	return r;
}

int shield_events_poll(struct shield *s, int timeout_ms, shield_event_cb cb,
		       void *arg)
{
	int r;

	if (!s || !cb)
		return -EINVAL;
	if (!s->rb) {
		s->rb = ring_buffer__new(s->events, rb_event, s, NULL);
		if (!s->rb)
			return -errno;
	}
	s->ev_cb = cb;
	s->ev_arg = arg;
	s->ev_n = 0;
	r = ring_buffer__poll(s->rb, timeout_ms);
	if (r < 0)
		return r == -EINTR ? s->ev_n : r;
	return s->ev_n;
}
