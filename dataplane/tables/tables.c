/*
 * tables.c - RCU-protected policy tables (see tables.h).
 *
 * Built on liburcu's QSBR flavour and its lock-free resizable hash table
 * (rculfhash): readers never lock, the writer removes nodes and frees them
 * with call_rcu after every reader has passed a quiescent state.
 */
#define _LGPL_SOURCE /* inline the QSBR read-side fast paths */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-qsbr.h>
#include <urcu/rculfhash.h>

#include "tables.h"

#define V4 0
#define V6 1
#define MAXLEN6 128

struct pnode {
	struct cds_lfht_node node;
	struct tbl_prefix p;
	uint64_t expires_ms;
	struct rcu_head rcu;
};

struct tbl_pset {
	/* Prefix lengths that have a table; bit L set once ht[f][L] is
	 * published. v4 uses bits 0..32 of lens[V4][0]; v6 0..128. */
	uint64_t lens[2][3];
	struct cds_lfht *ht[2][MAXLEN6 + 1];
	size_t count;
};

struct dnode {
	struct cds_lfht_node node;
	struct tbl_domain_policy pol;
	uint8_t len;
	char name[254];
	struct rcu_head rcu;
};

struct tbl_set {
	struct tbl_pset *lists[2];  /* RCU-published */
	struct cds_lfht *domains;
	struct tbl_knobs *knobs;    /* RCU-published, immutable once published */
	pthread_mutex_t wlock;      /* serialises writers, never taken by readers */
};

/* ---- prefix text ------------------------------------------------------- */

static void prefix_mask(uint8_t *a, unsigned len, unsigned bytes)
{
	unsigned i;

	for (i = 0; i < bytes; i++) {
		if (len >= 8 * (i + 1))
			continue;
		if (len <= 8 * i)
			a[i] = 0;
		else
			a[i] &= (uint8_t)(0xff << (8 - (len - 8 * i)));
	}
}

int tbl_prefix_parse(const char *s, bool lenient, struct tbl_prefix *p)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	uint8_t orig[16];
	unsigned long len;
	unsigned bytes;

	if (s == NULL || strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	memset(p, 0, sizeof(*p));
	if (inet_pton(AF_INET, buf, p->addr) == 1) {
		p->family = 4;
		bytes = 4;
	} else if (inet_pton(AF_INET6, buf, p->addr) == 1) {
		p->family = 6;
		bytes = 16;
	} else {
		return -EINVAL;
	}
	len = bytes * 8;
	if (slash) {
		if (!isdigit((unsigned char)slash[1]))
			return -EINVAL;
		errno = 0;
		len = strtoul(slash + 1, &end, 10);
		if (errno || *end != '\0' || len > bytes * 8 || end - (slash + 1) > 3)
			return -EINVAL;
	}
	p->len = (uint8_t)len;
	memcpy(orig, p->addr, 16);
	prefix_mask(p->addr, p->len, bytes);
	if (!lenient && memcmp(orig, p->addr, 16) != 0)
		return -EINVAL; /* host bits set: probably a typo */
	return 0;
}

void tbl_prefix_format(const struct tbl_prefix *p, char *out, size_t outlen)
{
	char a[INET6_ADDRSTRLEN];

	inet_ntop(p->family == 4 ? AF_INET : AF_INET6, p->addr, a, sizeof(a));
	snprintf(out, outlen, "%s/%u", a, p->len);
}

/* ---- hashing ----------------------------------------------------------- */

static unsigned long mix64(uint64_t x)
{
	/* splitmix64 finaliser: good avalanche for structured keys */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (unsigned long)x;
}

static unsigned long prefix_hash(const uint8_t *a, unsigned len)
{
	uint64_t w0, w1;

	memcpy(&w0, a, 8);
	memcpy(&w1, a + 8, 8);
	return mix64(w0 ^ mix64(w1 ^ len));
}

struct pkey {
	const uint8_t *addr;
};

static int prefix_match(struct cds_lfht_node *node, const void *key)
{
	const struct pnode *n = caa_container_of(node, struct pnode, node);
	const struct pkey *k = key;

	return memcmp(n->p.addr, k->addr, 16) == 0;
}

/* ---- thread registration ---------------------------------------------- */

/* Writer calls may come from a thread that is not an lcore reader (the
 * control thread): it is registered on first use and kept offline between
 * calls, so it never holds up a grace period. The key's destructor
 * unregisters it when the thread exits. */
static __thread int tls_state; /* 0 unknown, 1 reader (lcore), 2 auto writer */
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_exit(void *arg)
{
	(void)arg;
	urcu_qsbr_thread_online();
	urcu_qsbr_unregister_thread();
}

static void tls_init(void)
{
	pthread_key_create(&tls_key, tls_exit);
}

static void writer_enter(struct tbl_set *t)
{
	pthread_mutex_lock(&t->wlock);
	if (tls_state == 0) {
		pthread_once(&tls_once, tls_init);
		urcu_qsbr_register_thread();
		pthread_setspecific(tls_key, (void *)1);
		tls_state = 2;
	} else if (tls_state == 2) {
		urcu_qsbr_thread_online();
	}
}

static void writer_leave(struct tbl_set *t)
{
	if (tls_state == 2)
		urcu_qsbr_thread_offline();
	pthread_mutex_unlock(&t->wlock);
}

void tbl_reader_register(void)
{
	urcu_qsbr_register_thread();
	tls_state = 1;
}

void tbl_reader_unregister(void)
{
	urcu_qsbr_unregister_thread();
	tls_state = 0;
}

void tbl_quiescent(void)
{
	urcu_qsbr_quiescent_state();
}

void tbl_reader_offline(void)
{
	urcu_qsbr_thread_offline();
}

void tbl_reader_online(void)
{
	urcu_qsbr_thread_online();
}

/* ---- iteration ---------------------------------------------------------- */

/* liburcu's cds_lfht_for_each_entry() computes container_of(NULL) at the end
 * of the walk, which UBSan rightly flags; walk nodes and convert only real
 * ones. Safe against deleting the current node (the iterator has moved). */
#define LFHT_FOREACH(ht, it, nd)                                            \
	for (cds_lfht_first((ht), (it)); ((nd) = cds_lfht_iter_get_node(it)) != NULL; \
	     cds_lfht_next((ht), (it)))

/* cds_lfht_destroy() waits for the table's resize worker, which may itself
 * wait for a grace period: the calling thread must be offline meanwhile or
 * both wait for each other. Destroys the @n non-NULL tables of @hts. */
static void lfht_destroy_offline(struct cds_lfht **hts, size_t n)
{
	size_t i;

	urcu_qsbr_thread_offline();
	for (i = 0; i < n; i++)
		if (hts[i])
			cds_lfht_destroy(hts[i], NULL);
	urcu_qsbr_thread_online();
}

/* ---- prefix sets ------------------------------------------------------- */

static void pnode_free_rcu(struct rcu_head *h)
{
	free(caa_container_of(h, struct pnode, rcu));
}

struct tbl_pset *tbl_pset_new(void)
{
	return calloc(1, sizeof(struct tbl_pset));
}

/*
 * Calls @fn for every entry of @ps with the table holding it; a non-zero
 * return stops the walk and is returned. The walk survives @fn deleting
 * the entry it was given. Caller: a registered, online writer.
 */
static int pset_walk(struct tbl_pset *ps,
		     int (*fn)(struct cds_lfht *ht, struct pnode *n, void *arg),
		     void *arg)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *nd;
	unsigned f, l;
	int rc;

	for (f = 0; f < 2; f++) {
		for (l = 0; l <= MAXLEN6; l++) {
			if (ps->ht[f][l] == NULL)
				continue;
			LFHT_FOREACH(ps->ht[f][l], &it, nd) {
				rc = fn(ps->ht[f][l], caa_container_of(nd, struct pnode, node), arg);
				if (rc)
					return rc;
			}
		}
	}
	return 0;
}

/* pset_walk callback for a set no reader can reach any more. The table's
 * own resize worker may still be walking its chains (rculfhash.h: a grace
 * period must pass between cds_lfht_del and freeing), so free via RCU. */
static int walk_free(struct cds_lfht *ht, struct pnode *n, void *arg)
{
	cds_lfht_del(ht, &n->node);
	urcu_qsbr_call_rcu(&n->rcu, pnode_free_rcu);
	return 0;
}

/* Frees a set no reader can reach any more (after a grace period). */
static void pset_destroy(struct tbl_pset *ps)
{
	if (ps == NULL)
		return;
	pset_walk(ps, walk_free, NULL);
	lfht_destroy_offline(&ps->ht[0][0], 2 * (MAXLEN6 + 1));
	free(ps);
}

void tbl_pset_free(struct tbl_pset *ps)
{
	/* A set being built was never published: the caller's thread may
	 * not be registered, so use it as a writer for the deletions. */
	static struct tbl_set dummy = { .wlock = PTHREAD_MUTEX_INITIALIZER };

	writer_enter(&dummy);
	pset_destroy(ps);
	writer_leave(&dummy);
}

/* Adds or refreshes @p in @ps; caller is a registered, online writer. */
static int pset_add(struct tbl_pset *ps, const struct tbl_prefix *p,
		    uint64_t expires_ms)
{
	unsigned f = p->family == 4 ? V4 : V6;
	unsigned bytes = f == V4 ? 4 : 16;
	struct cds_lfht *ht;
	struct cds_lfht_node *old;
	struct pnode *n;
	struct tbl_prefix norm;
	struct pkey key;

	if ((p->family != 4 && p->family != 6) || p->len > bytes * 8)
		return -EINVAL;
	norm = *p;
	memset(norm.addr + bytes, 0, 16 - bytes);
	prefix_mask(norm.addr, norm.len, bytes);
	ht = ps->ht[f][norm.len];
	if (ht == NULL) {
		ht = cds_lfht_new_flavor(1024, 1024, 0,
					 CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
					 &urcu_qsbr_flavor, NULL);
		if (ht == NULL)
			return -ENOMEM;
		rcu_assign_pointer(ps->ht[f][norm.len], ht);
		/* publish the length only after its table (uatomic_or alone
		 * orders nothing on weakly ordered CPUs) */
		cmm_smp_mb__before_uatomic_or();
		uatomic_or(&ps->lens[f][norm.len / 64], 1ULL << (norm.len % 64));
	}
	n = malloc(sizeof(*n));
	if (n == NULL)
		return -ENOMEM;
	cds_lfht_node_init(&n->node);
	n->p = norm;
	n->expires_ms = expires_ms;
	key.addr = norm.addr;
	old = cds_lfht_add_replace(ht, prefix_hash(norm.addr, norm.len),
				   prefix_match, &key, &n->node);
	if (old)
		urcu_qsbr_call_rcu(&caa_container_of(old, struct pnode, node)->rcu,
				   pnode_free_rcu);
	else
		ps->count++;
	return 0;
}

int tbl_pset_add(struct tbl_pset *ps, const struct tbl_prefix *p,
		 uint64_t expires_ms)
{
	static struct tbl_set dummy = { .wlock = PTHREAD_MUTEX_INITIALIZER };
	int rc;

	writer_enter(&dummy);
	rc = pset_add(ps, p, expires_ms);
	writer_leave(&dummy);
	return rc;
}

/* Reader: does any prefix of @ps contain the address? */
static bool pset_match(const struct tbl_pset *ps, unsigned f, const uint8_t *a)
{
	unsigned bytes = f == V4 ? 4 : 16, w, l;
	uint8_t key[16];
	struct pkey k = { key };
	struct cds_lfht_iter it;
	struct cds_lfht *ht;

	for (w = (f == V4 ? 1 : 3); w-- > 0;) {
		uint64_t bits = uatomic_read(&ps->lens[f][w]);

		while (bits) {
			/* longest first */
			l = w * 64 + 63 - (unsigned)__builtin_clzll(bits);
			bits &= ~(1ULL << (l % 64));
			memset(key, 0, sizeof(key));
			memcpy(key, a, bytes);
			prefix_mask(key, l, bytes);
			ht = rcu_dereference(((struct tbl_pset *)ps)->ht[f][l]);
			if (ht == NULL)
				continue;
			cds_lfht_lookup(ht, prefix_hash(key, l), prefix_match, &k, &it);
			if (cds_lfht_iter_get_node(&it))
				return true;
		}
	}
	return false;
}

enum tbl_verdict tbl_client_check(const struct tbl_set *t, int family,
				  const void *addr)
{
	unsigned f = family == 4 ? V4 : V6;
	const struct tbl_pset *allow, *block;

	if (family != 4 && family != 6)
		return TBL_NONE;
	allow = rcu_dereference(((struct tbl_set *)t)->lists[TBL_ALLOW]);
	if (pset_match(allow, f, addr))
		return TBL_ALLOWED;
	block = rcu_dereference(((struct tbl_set *)t)->lists[TBL_BLOCK]);
	if (pset_match(block, f, addr))
		return TBL_BLOCKED;
	return TBL_NONE;
}

int tbl_prefix_add(struct tbl_set *t, enum tbl_list list,
		   const struct tbl_prefix *p, uint64_t expires_ms)
{
	int rc;

	if (list != TBL_ALLOW && list != TBL_BLOCK)
		return -EINVAL;
	writer_enter(t);
	rc = pset_add(t->lists[list], p, expires_ms);
	writer_leave(t);
	return rc;
}

int tbl_prefix_del(struct tbl_set *t, enum tbl_list list,
		   const struct tbl_prefix *p)
{
	struct tbl_pset *ps;
	struct tbl_prefix norm;
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;
	struct pkey key;
	unsigned f, bytes;
	int rc = -ENOENT;

	if ((list != TBL_ALLOW && list != TBL_BLOCK) ||
	    (p->family != 4 && p->family != 6))
		return -EINVAL;
	f = p->family == 4 ? V4 : V6;
	bytes = f == V4 ? 4 : 16;
	if (p->len > bytes * 8)
		return -EINVAL;
	norm = *p;
	memset(norm.addr + bytes, 0, 16 - bytes);
	prefix_mask(norm.addr, norm.len, bytes);
	key.addr = norm.addr;
	writer_enter(t);
	ps = t->lists[list];
	if (ps->ht[f][norm.len]) {
		cds_lfht_lookup(ps->ht[f][norm.len], prefix_hash(norm.addr, norm.len),
				prefix_match, &key, &it);
		node = cds_lfht_iter_get_node(&it);
		if (node && cds_lfht_del(ps->ht[f][norm.len], node) == 0) {
			urcu_qsbr_call_rcu(&caa_container_of(node, struct pnode, node)->rcu,
					   pnode_free_rcu);
			ps->count--;
			rc = 0;
		}
	}
	writer_leave(t);
	return rc;
}

int tbl_prefix_swap(struct tbl_set *t, enum tbl_list list, struct tbl_pset *ps)
{
	struct tbl_pset *old;

	if ((list != TBL_ALLOW && list != TBL_BLOCK) || ps == NULL)
		return -EINVAL;
	writer_enter(t);
	old = rcu_xchg_pointer(&t->lists[list], ps);
	/* Readers that loaded the old set finish with it before their next
	 * quiescent state; after that nobody can reach it. */
	urcu_qsbr_synchronize_rcu();
	pset_destroy(old);
	writer_leave(t);
	return 0;
}

struct expire_arg {
	struct tbl_pset *ps;
	uint64_t now_ms;
	size_t removed;
};

static int walk_expire(struct cds_lfht *ht, struct pnode *n, void *arg)
{
	struct expire_arg *ea = arg;

	if (n->expires_ms != 0 && n->expires_ms <= ea->now_ms &&
	    cds_lfht_del(ht, &n->node) == 0) {
		urcu_qsbr_call_rcu(&n->rcu, pnode_free_rcu);
		ea->ps->count--;
		ea->removed++;
	}
	return 0;
}

size_t tbl_expire(struct tbl_set *t, uint64_t now_ms)
{
	struct expire_arg ea = { NULL, now_ms, 0 };
	unsigned list;

	writer_enter(t);
	for (list = 0; list < 2; list++) {
		ea.ps = t->lists[list];
		pset_walk(ea.ps, walk_expire, &ea);
	}
	writer_leave(t);
	return ea.removed;
}

struct list_arg {
	int (*cb)(const struct tbl_prefix *p, uint64_t expires_ms, void *arg);
	void *arg;
};

static int walk_list(struct cds_lfht *ht, struct pnode *n, void *arg)
{
	struct list_arg *la = arg;

	return la->cb(&n->p, n->expires_ms, la->arg);
}

int tbl_prefix_list(struct tbl_set *t, enum tbl_list list,
		    int (*cb)(const struct tbl_prefix *p, uint64_t expires_ms,
			      void *arg), void *arg)
{
	struct list_arg la = { cb, arg };
	int rc;

	if (list != TBL_ALLOW && list != TBL_BLOCK)
		return -EINVAL;
	writer_enter(t);
	rc = pset_walk(t->lists[list], walk_list, &la);
	writer_leave(t);
	return rc;
}

int tbl_domain_list(struct tbl_set *t,
		    int (*cb)(const char *domain,
			      const struct tbl_domain_policy *pol, void *arg),
		    void *arg)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *nd;
	int rc = 0;

	writer_enter(t);
	LFHT_FOREACH(t->domains, &it, nd) {
		const struct dnode *n = caa_container_of(nd, struct dnode, node);
		char name[sizeof(n->name) + 1];

		memcpy(name, n->name, n->len);
		name[n->len] = '\0';
		rc = cb(name, &n->pol, arg);
		if (rc)
			break;
	}
	writer_leave(t);
	return rc;
}

size_t tbl_prefix_count(struct tbl_set *t, enum tbl_list list)
{
	size_t n;

	if (list != TBL_ALLOW && list != TBL_BLOCK)
		return 0;
	pthread_mutex_lock(&t->wlock);
	n = t->lists[list]->count;
	pthread_mutex_unlock(&t->wlock);
	return n;
}

/* ---- domains ----------------------------------------------------------- */

static unsigned long domain_hash(const char *d, size_t len)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (uint8_t)tolower((unsigned char)d[i])) * 1099511628211ULL;
	return mix64(h);
}

struct dkey {
	const char *name;
	size_t len;
};

static int domain_match(struct cds_lfht_node *node, const void *key)
{
	const struct dnode *n = caa_container_of(node, struct dnode, node);
	const struct dkey *k = key;

	return n->len == k->len && strncasecmp(n->name, k->name, k->len) == 0;
}

static void dnode_free_rcu(struct rcu_head *h)
{
	free(caa_container_of(h, struct dnode, rcu));
}

static bool domain_ok(const char *d, size_t len)
{
	size_t i;

	if (len == 0 || len > 253 || d[0] == '.' || d[len - 1] == '.')
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)d[i];

		/* LDH labels, plus UTF-8 octets for IDN domains (RFC 6531) */
		if (!(isalnum(c) || c == '-' || c == '.' || c >= 0x80))
			return false;
	}
	return true;
}

int tbl_domain_set(struct tbl_set *t, const char *domain,
		   const struct tbl_domain_policy *pol)
{
	size_t len = domain ? strlen(domain) : 0, i;
	struct cds_lfht_node *old;
	struct dnode *n;
	struct dkey k;

	if (!domain_ok(domain, len) || pol == NULL)
		return -EINVAL;
	n = calloc(1, sizeof(*n));
	if (n == NULL)
		return -ENOMEM;
	cds_lfht_node_init(&n->node);
	n->pol = *pol;
	n->len = (uint8_t)len;
	for (i = 0; i < len; i++)
		n->name[i] = (char)tolower((unsigned char)domain[i]);
	k.name = n->name;
	k.len = len;
	writer_enter(t);
	old = cds_lfht_add_replace(t->domains, domain_hash(n->name, len),
				   domain_match, &k, &n->node);
	if (old)
		urcu_qsbr_call_rcu(&caa_container_of(old, struct dnode, node)->rcu,
				   dnode_free_rcu);
	writer_leave(t);
	return 0;
}

int tbl_domain_del(struct tbl_set *t, const char *domain)
{
	size_t len = domain ? strlen(domain) : 0;
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;
	struct dkey k = { domain, len };
	int rc = -ENOENT;

	if (!domain_ok(domain, len))
		return -EINVAL;
	writer_enter(t);
	cds_lfht_lookup(t->domains, domain_hash(domain, len), domain_match, &k, &it);
	node = cds_lfht_iter_get_node(&it);
	if (node && cds_lfht_del(t->domains, node) == 0) {
		urcu_qsbr_call_rcu(&caa_container_of(node, struct dnode, node)->rcu,
				   dnode_free_rcu);
		rc = 0;
	}
	writer_leave(t);
	return rc;
}

const struct tbl_domain_policy *tbl_domain_lookup(const struct tbl_set *t,
						  const char *domain, size_t len)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;
	struct dkey k = { domain, len };

	if (len == 0 || len > 253)
		return NULL;
	cds_lfht_lookup(t->domains, domain_hash(domain, len), domain_match, &k, &it);
	node = cds_lfht_iter_get_node(&it);
	return node ? &caa_container_of(node, struct dnode, node)->pol : NULL;
}

/* ---- live knobs --------------------------------------------------------- */

int tbl_knobs_set(struct tbl_set *t, const struct tbl_knobs *k)
{
	struct tbl_knobs *nk = malloc(sizeof(*nk)), *old;

	if (nk == NULL)
		return -ENOMEM;
	*nk = *k;
	writer_enter(t);
	old = rcu_xchg_pointer(&t->knobs, nk);
	/* A worker copies the fields before its next quiescent state; after
	 * the grace period nobody holds the old copy. */
	urcu_qsbr_synchronize_rcu();
	writer_leave(t);
	free(old);
	return 0;
}

const struct tbl_knobs *tbl_knobs(const struct tbl_set *t)
{
	return rcu_dereference(((struct tbl_set *)t)->knobs);
}

/* ---- life cycle -------------------------------------------------------- */

struct tbl_set *tbl_create(void)
{
	struct tbl_set *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	pthread_mutex_init(&t->wlock, NULL);
	t->lists[TBL_ALLOW] = tbl_pset_new();
	t->lists[TBL_BLOCK] = tbl_pset_new();
	t->knobs = calloc(1, sizeof(*t->knobs));
	t->domains = cds_lfht_new_flavor(64, 64, 0, CDS_LFHT_AUTO_RESIZE,
					 &urcu_qsbr_flavor, NULL);
	if (t->lists[0] == NULL || t->lists[1] == NULL || t->domains == NULL ||
	    t->knobs == NULL) {
		free(t->knobs);
		free(t->lists[0]);
		free(t->lists[1]);
		if (t->domains)
			cds_lfht_destroy(t->domains, NULL);
		free(t);
		errno = ENOMEM;
		return NULL;
	}
	return t;
}

void tbl_destroy(struct tbl_set *t)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *nd;

	if (t == NULL)
		return;
	writer_enter(t);
	urcu_qsbr_synchronize_rcu();
	pset_destroy(t->lists[0]);
	pset_destroy(t->lists[1]);
	LFHT_FOREACH(t->domains, &it, nd) {
		cds_lfht_del(t->domains, nd);
		urcu_qsbr_call_rcu(&caa_container_of(nd, struct dnode, node)->rcu,
				   dnode_free_rcu);
	}
	lfht_destroy_offline(&t->domains, 1);
	free(t->knobs);
	writer_leave(t);
	/* nodes replaced or deleted earlier are still queued for call_rcu */
	urcu_qsbr_barrier();
	pthread_mutex_destroy(&t->wlock);
	free(t);
}
