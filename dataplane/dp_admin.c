/*
 * dp_admin.c - control-socket commands of an edge process (DPDK or
 * --io=kernel): policy tables (blocklist, allowlist, domains), status and
 * statistics. Runs in the supervisor thread, never on an lcore; table
 * changes reach the lcores through RCU without stopping them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <linux/bpf.h>

#include "dp.h"

__attribute__((format(printf, 3, 4)))
static int bad_args(const char **code, char **msg, const char *fmt, ...)
{
	va_list ap;
	char buf[256];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	*code = "bad_args";
	*msg = strdup(buf);
	return -1;
}

static enum tbl_list list_of(const char *cmd)
{
	return strncmp(cmd, "allowlist", 9) == 0 ? TBL_ALLOW : TBL_BLOCK;
}

static enum shield_list shield_list_of(enum tbl_list l)
{
	return l == TBL_ALLOW ? SHIELD_LIST_ALLOW : SHIELD_LIST_BLOCK;
}

static struct shield_cidr to_cidr(const struct tbl_prefix *p)
{
	struct shield_cidr c = { .family = p->family, .plen = p->len };

	memcpy(c.addr, p->addr, sizeof(c.addr));
	return c;
}

/* Mirrors one list change into the XDP maps. The RCU tables stay the
 * source of truth (and the dataplane's own first stage on ports without
 * XDP); a shield failure is reported, the table change stands. */
static int shield_mirror(struct shield *sh, enum tbl_list l,
			 const struct tbl_prefix *p, bool add, time_t expires)
{
	struct shield_cidr c = to_cidr(p);

	if (sh == NULL)
		return 0;
	return add ? shield_add(sh, shield_list_of(l), &c, (uint64_t)expires)
		   : shield_del(sh, shield_list_of(l), &c);
}

/* Parses args.prefix (required) and args.ttl (optional seconds). */
static int prefix_args(json_t *args, struct tbl_prefix *p, json_int_t *ttl,
		       const char **code, char **msg)
{
	json_t *jp = json_object_get(args, "prefix");
	json_t *jt = json_object_get(args, "ttl");

	if (!json_is_string(jp))
		return bad_args(code, msg, "%s", "\"prefix\" is required: an IPv4/IPv6 "
				"address or prefix such as 198.18.0.0/15 or 2001:db8::/32");
	if (tbl_prefix_parse(json_string_value(jp), false, p) < 0)
		return bad_args(code, msg, "\"%s\" is not an address or prefix "
				"(host bits must be zero: 198.18.0.0/15, 2001:db8::/32)",
				json_string_value(jp));
	*ttl = 0;
	if (jt && (!json_is_integer(jt) || json_integer_value(jt) < 1 ||
		   json_integer_value(jt) > 86400LL * 3650))
		return bad_args(code, msg, "%s", "\"ttl\" must be whole seconds, 1 to 10 years");
	if (jt)
		*ttl = json_integer_value(jt);
	return 0;
}

static int h_prefix_add(struct dp_admin *a, const char *cmd, json_t *args,
			json_t **result, const char **code, char **msg)
{
	struct tbl_prefix p;
	json_int_t ttl;
	int rc;

	if (prefix_args(args, &p, &ttl, code, msg))
		return -1;
	rc = tbl_prefix_add(a->tables, list_of(cmd), &p,
			    ttl ? a->now_ms() + (uint64_t)ttl * 1000 : 0);
	if (rc) {
		*code = "failed";
		*msg = strdup(strerror(-rc));
		return -1;
	}
	rc = shield_mirror(a->shield, list_of(cmd), &p, true,
			   ttl ? time(NULL) + (time_t)ttl : 0);
	*result = json_pack("{s:I, s:s}", "entries",
			    (json_int_t)tbl_prefix_count(a->tables, list_of(cmd)),
			    "xdp", a->shield == NULL ? "off" : rc == 0 ? "applied" :
			    rc == -ENOSPC ? "full: dataplane only" : "failed: dataplane only");
	return 0;
}

static int h_prefix_del(struct dp_admin *a, const char *cmd, json_t *args,
			json_t **result, const char **code, char **msg)
{
	struct tbl_prefix p;
	json_int_t ttl;
	char buf[64];

	if (prefix_args(args, &p, &ttl, code, msg))
		return -1;
	shield_mirror(a->shield, list_of(cmd), &p, false, 0);
	if (tbl_prefix_del(a->tables, list_of(cmd), &p) < 0) {
		tbl_prefix_format(&p, buf, sizeof(buf));
		*code = "not_found";
		*msg = malloc(128);
		if (*msg)
			snprintf(*msg, 128, "%s is not in the %s", buf,
				 list_of(cmd) == TBL_ALLOW ? "allowlist" : "blocklist");
		return -1;
	}
	return 0;
}

struct list_arg {
	json_t *arr;
	size_t limit;
	uint64_t now;
};

static int list_cb(const struct tbl_prefix *p, uint64_t expires_ms, void *arg)
{
	struct list_arg *la = arg;
	char buf[64];

	if (json_array_size(la->arr) >= la->limit)
		return 1;
	tbl_prefix_format(p, buf, sizeof(buf));
	if (expires_ms)
		json_array_append_new(la->arr, json_pack("{s:s, s:I}", "prefix", buf,
			"expires_in", (json_int_t)(expires_ms > la->now ?
						   (expires_ms - la->now + 999) / 1000 : 0)));
	else
		json_array_append_new(la->arr, json_pack("{s:s, s:n}", "prefix", buf,
							 "expires_in"));
	return 0;
}

static int h_prefix_list(struct dp_admin *a, const char *cmd, json_t *args,
			 json_t **result, const char **code, char **msg)
{
	json_t *jl = json_object_get(args, "limit");
	struct list_arg la = { json_array(), 1000, a->now_ms() };

	/* replies stay well below the control socket's per-client buffer */
	if (jl && (!json_is_integer(jl) || json_integer_value(jl) < 1 ||
		   json_integer_value(jl) > 10000)) {
		json_decref(la.arr);
		return bad_args(code, msg, "%s", "\"limit\" must be 1..10000");
	}
	if (jl)
		la.limit = (size_t)json_integer_value(jl);
	tbl_prefix_list(a->tables, list_of(cmd), list_cb, &la);
	*result = la.arr;
	return 0;
}

static int h_domain_add(struct dp_admin *a, const char *cmd, json_t *args,
			json_t **result, const char **code, char **msg)
{
	json_t *jd = json_object_get(args, "domain");
	json_t *js = json_object_get(args, "max_size");
	struct tbl_domain_policy pol = { 0 };

	if (!json_is_string(jd))
		return bad_args(code, msg, "%s", "\"domain\" is required");
	if (js && (!json_is_integer(js) || json_integer_value(js) < 0))
		return bad_args(code, msg, "%s", "\"max_size\" must be bytes (0 = global limit)");
	if (js)
		pol.max_message_size = (uint64_t)json_integer_value(js);
	if (tbl_domain_set(a->tables, json_string_value(jd), &pol) < 0)
		return bad_args(code, msg, "\"%s\" is not a domain name (letters, digits, "
				"'-', '.', no trailing dot, at most 253 bytes)",
				json_string_value(jd));
	return 0;
}

static int h_domain_del(struct dp_admin *a, const char *cmd, json_t *args,
			json_t **result, const char **code, char **msg)
{
	json_t *jd = json_object_get(args, "domain");

	if (!json_is_string(jd))
		return bad_args(code, msg, "%s", "\"domain\" is required");
	if (tbl_domain_del(a->tables, json_string_value(jd)) < 0) {
		*code = "not_found";
		*msg = strdup("no such domain");
		return -1;
	}
	return 0;
}

static int domain_cb(const char *d, const struct tbl_domain_policy *pol, void *arg)
{
	json_array_append_new(arg, json_pack("{s:s, s:I}", "domain", d, "max_size",
					     (json_int_t)pol->max_message_size));
	return 0;
}

static int h_domain_list(struct dp_admin *a, const char *cmd, json_t *args,
			 json_t **result, const char **code, char **msg)
{
	*result = json_array();
	tbl_domain_list(a->tables, domain_cb, *result);
	return 0;
}

static int h_status(struct dp_admin *a, const char *cmd, json_t *args,
		    json_t **result, const char **code, char **msg)
{
	*result = a->status ? a->status(a->arg) : json_object();
	json_object_set_new(*result, "version", json_string(MXEDGE_VERSION));
	json_object_set_new(*result, "xdp_shield", json_string(a->shield ? "on" : "off"));
	json_object_set_new(*result, "blocklist_entries",
			    json_integer((json_int_t)tbl_prefix_count(a->tables, TBL_BLOCK)));
	json_object_set_new(*result, "allowlist_entries",
			    json_integer((json_int_t)tbl_prefix_count(a->tables, TBL_ALLOW)));
	return 0;
}

static int h_shield(struct dp_admin *a, const char *cmd, json_t *args,
		    json_t **result, const char **code, char **msg)
{
	struct shield_counter cnt[SHIELD_C_SLOTS];
	unsigned r;
	int rc;

	if (a->shield == NULL) {
		*code = "not_available";
		*msg = strdup("no XDP shield on this port (af_xdp with --xdp-prog only)");
		return -1;
	}
	rc = shield_counters(a->shield, cnt);
	if (rc < 0) {
		*code = "failed";
		*msg = strdup(strerror(-rc));
		return -1;
	}
	*result = json_array();
	for (r = 0; r < SHIELD_R_COUNT; r++)
		json_array_append_new(*result, json_pack("{s:s, s:s, s:I, s:I}",
			"reason", shield_reason_name(r),
			"verdict", shield_reason_verdict(r) == XDP_DROP ? "drop" :
				   shield_reason_verdict(r) == XDP_PASS ? "pass" :
				   shield_reason_verdict(r) == XDP_TX ? "tx" : "redirect",
			"packets", (json_int_t)cnt[r].packets,
			"bytes", (json_int_t)cnt[r].bytes));
	return 0;
}

/* "stats": a row per lcore plus a total row; "stats view=drops": a row
 * per drop reason with a column per lcore and the total. */
static int h_stats(struct dp_admin *a, const char *cmd, json_t *args,
		   json_t **result, const char **code, char **msg)
{
	json_t *jv = json_object_get(args, "view");
	const char *view = json_is_string(jv) ? json_string_value(jv) : NULL;

	if (jv && (view == NULL || (strcmp(view, "lcores") != 0 &&
				    strcmp(view, "drops") != 0)))
		return bad_args(code, msg, "%s", "\"view\" must be \"lcores\" (default) "
				"or \"drops\"");
	if (view && strcmp(view, "drops") == 0) {
		if (a->drops == NULL) {
			*code = "not_available";
			*msg = strdup("this process keeps no drop counters by reason");
			return -1;
		}
		*result = a->drops(a->arg);
		return 0;
	}
	*result = a->stats ? a->stats(a->arg) : json_array();
	return 0;
}

/* ctl handlers get the command table's ctx; each wrapper knows its name. */
#define WRAP(fn, name)                                                          \
	static int w_##fn##_##name(void *ctx, const struct ctl_peer *peer,     \
				   json_t *args, json_t **result,              \
				   const char **code, char **msg)              \
	{                                                                       \
		(void)peer;                                                     \
		return fn(ctx, #name, args, result, code, msg);                 \
	}
WRAP(h_prefix_add, blocklist)
WRAP(h_prefix_add, allowlist)
WRAP(h_prefix_del, blocklist)
WRAP(h_prefix_del, allowlist)
WRAP(h_prefix_list, blocklist)
WRAP(h_prefix_list, allowlist)
WRAP(h_domain_add, domain)
WRAP(h_domain_del, domain)
WRAP(h_domain_list, domain)
WRAP(h_status, status)
WRAP(h_stats, stats)
WRAP(h_shield, shield)

static const struct ctl_command admin_cmds[] = {
	{ "status", false, w_h_status_status, "process, port and table summary" },
	{ "stats", false, w_h_stats_stats,
	  "per-lcore counters and the total [view=drops: drops by reason per lcore]" },
	{ "shield", false, w_h_shield_shield, "XDP shield counters per verdict reason" },
	{ "blocklist.add", true, w_h_prefix_add_blocklist,
	  "block a client address or prefix: prefix=CIDR [ttl=SECONDS]" },
	{ "blocklist.del", true, w_h_prefix_del_blocklist, "unblock: prefix=CIDR" },
	{ "blocklist.list", false, w_h_prefix_list_blocklist, "blocked prefixes [limit=N]" },
	{ "allowlist.add", true, w_h_prefix_add_allowlist,
	  "always accept a client (wins over the blocklist): prefix=CIDR [ttl=SECONDS]" },
	{ "allowlist.del", true, w_h_prefix_del_allowlist, "prefix=CIDR" },
	{ "allowlist.list", false, w_h_prefix_list_allowlist, "allowed prefixes [limit=N]" },
	{ "domain.add", true, w_h_domain_add_domain,
	  "accept mail for a domain: domain=NAME [max_size=BYTES]" },
	{ "domain.del", true, w_h_domain_del_domain, "domain=NAME" },
	{ "domain.list", false, w_h_domain_list_domain, "accepted domains" },
};

const struct ctl_command *dp_admin_commands(size_t *n)
{
	*n = sizeof(admin_cmds) / sizeof(admin_cmds[0]);
	return admin_cmds;
}

void dp_admin_expire(struct dp_admin *a)
{
	size_t removed;

	tbl_expire(a->tables, a->now_ms());
	if (a->shield)
		shield_expire(a->shield, (uint64_t)time(NULL), &removed);
}

int dp_tables_load(struct tbl_set *t, struct shield *sh, const struct cfg *c,
		   char *err, size_t errlen)
{
	const struct { const struct cfg_entry *v; size_t n; enum tbl_list list; } lists[] = {
		{ c->blocklist, c->nblocklist, TBL_BLOCK },
		{ c->allowlist, c->nallowlist, TBL_ALLOW },
	};
	struct tbl_prefix p;
	size_t i, k;
	int rc;

	for (k = 0; k < 2; k++) {
		for (i = 0; i < lists[k].n; i++) {
			const struct cfg_entry *e = &lists[k].v[i];

			if (tbl_prefix_parse(e->text, false, &p) < 0) {
				snprintf(err, errlen, "%s:%u: \"%s\" is not an address or prefix "
					 "(host bits must be zero: 198.18.0.0/15, 2001:db8::/32)",
					 c->source, e->line, e->text);
				return -EINVAL;
			}
			rc = tbl_prefix_add(t, lists[k].list, &p, 0);
			if (rc == 0)
				rc = shield_mirror(sh, lists[k].list, &p, true, 0);
			if (rc < 0) {
				snprintf(err, errlen, "%s:%u: %s", c->source, e->line,
					 strerror(-rc));
				return rc;
			}
		}
	}
	for (i = 0; i < c->ndomains; i++) {
		struct tbl_domain_policy pol = { .max_message_size = c->domains[i].max_size };

		if (tbl_domain_set(t, c->domains[i].name, &pol) < 0) {
			snprintf(err, errlen, "%s:%u: \"%s\" is not a domain name (letters, "
				 "digits, '-', '.', no trailing dot)", c->source,
				 c->domains[i].line, c->domains[i].name);
			return -EINVAL;
		}
	}
	return 0;
}
