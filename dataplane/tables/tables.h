/*
 * tables.h - RCU-protected policy tables read lock-free by dataplane lcores.
 *
 * The control plane (one writer thread at a time) changes the tables while
 * lcores keep reading them. Readers use liburcu's QSBR flavour: a reader
 * thread calls tbl_reader_register() once, tbl_quiescent() once per loop
 * iteration (outside any use of a table result), and
 * tbl_reader_unregister() before it exits. Reads are plain loads: no lock,
 * no atomic read-modify-write, no syscall.
 *
 * Tables:
 *  - client prefixes: an allowlist and a blocklist of IPv4/IPv6 prefixes
 *    (exact /32 and /128 entries are prefixes too); one hash table per
 *    prefix length in use, so a lookup costs one hash probe per length in
 *    use, independent of the number of entries. The allowlist wins.
 *  - domains: accepted recipient domains and their policy.
 * A whole list can be replaced atomically (tbl_prefix_swap): readers see the
 * old set or the new one, never a mix and never an empty window.
 */
#ifndef MXEDGE_TABLES_H
#define MXEDGE_TABLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tbl_list { TBL_ALLOW = 0, TBL_BLOCK = 1 };
enum tbl_verdict { TBL_NONE = 0, TBL_ALLOWED = 1, TBL_BLOCKED = 2 };

struct tbl_prefix {
	uint8_t family;    /* 4 or 6 */
	uint8_t len;       /* 0..32 or 0..128 */
	uint8_t addr[16];  /* network byte order; bits beyond len are zero */
};

/* Policy of one accepted domain (more fields arrive with later issues). */
struct tbl_domain_policy {
	uint64_t max_message_size;  /* bytes; 0 = the global limit */
	uint32_t route_id;          /* relay route, owned by the control plane */
	bool quarantine;
	bool greylist;
};

/*
 * Live knobs: limits the control plane may change while sessions run
 * (config.set, config.reload). Published as one immutable struct through
 * the same QSBR domain as the lists, so a worker sees the old values or the
 * new ones, never a mix, and never takes a lock to read them.
 */
struct tbl_knobs {
	uint32_t max_sessions_per_client; /* per address (IPv6: /64); 0 = off */
	uint32_t session_max_s;           /* total session lifetime; 0 = off */
	/* SMTP engine limits (smtp_server_set_limits); 0 = not published
	 * yet: the worker keeps the value it was created with. */
	uint64_t max_message_size;        /* bytes */
	uint32_t max_recipients;
	uint32_t max_errors;
	uint32_t command_timeout_s;
	uint32_t data_timeout_s;
};

struct tbl_set;
struct tbl_pset;

/*
 * tbl_prefix_parse - parse "198.18.0.0/15", "2001:db8::/32" or a bare
 * address (a /32 or /128) into @p. Host bits below the length must be zero
 * unless @lenient, in which case they are cleared. Returns 0 or -EINVAL.
 */
int tbl_prefix_parse(const char *s, bool lenient, struct tbl_prefix *p);

/* tbl_prefix_format - "addr/len" into @out (at least 64 bytes). */
void tbl_prefix_format(const struct tbl_prefix *p, char *out, size_t outlen);

/* tbl_create - empty tables; NULL with errno set on failure. */
struct tbl_set *tbl_create(void);

/* tbl_destroy - free @t; no reader may use it any more. NULL is a no-op. */
void tbl_destroy(struct tbl_set *t);

/* ---- writer side (control thread; calls are serialised internally) ---- */

/*
 * tbl_prefix_add - add @p to @list with an expiry time (@expires_ms in the
 * caller's clock, 0 = never; see tbl_expire). Re-adding an existing prefix
 * updates its expiry. Returns 0, -EINVAL, or -ENOMEM.
 */
int tbl_prefix_add(struct tbl_set *t, enum tbl_list list,
		   const struct tbl_prefix *p, uint64_t expires_ms);

/* tbl_prefix_del - remove @p from @list. Returns 0 or -ENOENT. */
int tbl_prefix_del(struct tbl_set *t, enum tbl_list list,
		   const struct tbl_prefix *p);

/*
 * tbl_pset_new/tbl_pset_add/tbl_pset_free - build a whole prefix set off
 * line (bulk load), then install it with tbl_prefix_swap. tbl_pset_add
 * returns 0, -EINVAL or -ENOMEM.
 */
struct tbl_pset *tbl_pset_new(void);
int tbl_pset_add(struct tbl_pset *ps, const struct tbl_prefix *p,
		 uint64_t expires_ms);
void tbl_pset_free(struct tbl_pset *ps);

/* tbl_prefix_swap - make @ps the new @list (taking ownership), wait until no
 * reader can see the old one, and free it. Returns 0. */
int tbl_prefix_swap(struct tbl_set *t, enum tbl_list list, struct tbl_pset *ps);

/* tbl_expire - remove entries of both lists whose expiry is <= @now_ms.
 * Returns how many were removed. */
size_t tbl_expire(struct tbl_set *t, uint64_t now_ms);

/*
 * tbl_prefix_list - call @cb for each entry of @list (writer side; the
 * table is not changed meanwhile). A non-zero return from @cb stops the walk
 * and is returned; otherwise 0.
 */
int tbl_prefix_list(struct tbl_set *t, enum tbl_list list,
		    int (*cb)(const struct tbl_prefix *p, uint64_t expires_ms,
			      void *arg), void *arg);

/* tbl_domain_list - the same for domains. */
int tbl_domain_list(struct tbl_set *t,
		    int (*cb)(const char *domain,
			      const struct tbl_domain_policy *pol, void *arg),
		    void *arg);

/* tbl_prefix_count - entries in @list (writer side, exact). */
size_t tbl_prefix_count(struct tbl_set *t, enum tbl_list list);

/*
 * tbl_domain_set - add or replace the policy of @domain (case-insensitive,
 * without trailing dot, at most 253 bytes). Returns 0, -EINVAL, -ENOMEM.
 */
int tbl_domain_set(struct tbl_set *t, const char *domain,
		   const struct tbl_domain_policy *pol);
/* tbl_domain_del - returns 0 or -ENOENT. */
int tbl_domain_del(struct tbl_set *t, const char *domain);

/*
 * tbl_knobs_set - publish a copy of @k as the live knobs; returns once no
 * reader can still see the previous copy (which is then freed). Returns 0
 * or -ENOMEM (the previous knobs stay). tbl_create() starts with all zero.
 */
int tbl_knobs_set(struct tbl_set *t, const struct tbl_knobs *k);

/* ---- reader side (registered QSBR threads) --------------------------- */

/*
 * tbl_knobs - the live knobs (never NULL). Like tbl_domain_lookup, the
 * pointer is valid until the caller's next tbl_quiescent(): workers copy the
 * fields they need once per loop iteration. Also callable by the writer.
 */
const struct tbl_knobs *tbl_knobs(const struct tbl_set *t);

void tbl_reader_register(void);
void tbl_reader_unregister(void);
/* tbl_quiescent - this thread holds no table result any more. */
void tbl_quiescent(void);
/* tbl_reader_offline/online - around blocking waits of a registered
 * thread (e.g. an idle lcore sleeping), so writers need not wait for it. */
void tbl_reader_offline(void);
void tbl_reader_online(void);

/*
 * tbl_client_check - verdict for a client address (@family 4 with 4 bytes
 * at @addr, or 6 with 16 bytes): TBL_ALLOWED if any allowlist prefix
 * matches, else TBL_BLOCKED if any blocklist prefix matches, else TBL_NONE.
 */
enum tbl_verdict tbl_client_check(const struct tbl_set *t, int family,
				  const void *addr);

/*
 * tbl_domain_lookup - policy of @domain (@len bytes, case-insensitive), or
 * NULL if the domain is not accepted. The pointer stays valid until the
 * calling thread's next tbl_quiescent(); copy what must live longer.
 */
const struct tbl_domain_policy *tbl_domain_lookup(const struct tbl_set *t,
						  const char *domain, size_t len);

#endif /* MXEDGE_TABLES_H */
