/*
 * dp_admin.c - the control socket of an edge process (DPDK or
 * --io=kernel): policy tables (blocklist, allowlist, domains), live knobs
 * (config.*), status and statistics, persistence of every change and the
 * audit log. Runs in the supervisor thread, never on an lcore; changes
 * reach the lcores through RCU without stopping them.
 *
 * Persistence: STATE_DIR/state.json holds the operator's changes as a delta
 * over the YAML file (entries added, entries of the file removed, domains
 * set or removed, knobs overridden), recomputed from the live tables after
 * every change and replaced atomically (write a temporary file, fsync,
 * rename, fsync the directory). At start and on config.reload the delta is
 * applied on top of the file, so an operator's change wins over the file
 * until it is undone through the socket. TTL expiries are kept as wall-clock
 * times so an entry that expired while the process was down stays gone.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>

#include "dp.h"
#include "mlog.h"

/* Entries the audit command can show; older ones stay in the file. */
#define AUDIT_RING 1000
/* Bulk list files: at most this many bad lines are named in an error. */
#define LOAD_BAD_SHOWN 10
#define LOAD_MAX_BYTES (256u << 20)

/* A configuration value operators can read and (when live) change. */
struct knob {
	const char *key;
	bool live;              /* false: only a restart applies a change */
	uint64_t min, max;
	size_t off;             /* in struct cfg */
	size_t size;            /* 4 (unsigned) or 8 (uint64_t) */
	bool named;             /* a log level: shown and set by name (mlog.h) */
};

#define KNOB(k, l, lo, hi, field) \
	{ k, l, lo, hi, offsetof(struct cfg, field), sizeof(((struct cfg *)0)->field), false }
/* Ranges are the YAML parser's (control/cfg.c), so a value accepted here
 * is one the file would accept too. */
static const struct knob knobs[] = {
	KNOB("limits.max_sessions_per_client", true, 0, 100000000, max_sessions_per_client),
	KNOB("limits.session_max_s", true, 0, 864000, session_max_s),
	KNOB("limits.max_message_size", true, 1024, 1ULL << 40, max_message_size),
	KNOB("limits.max_recipients", true, 1, 100000, max_recipients),
	KNOB("limits.max_errors", true, 1, 1000, max_errors),
	KNOB("timeouts.command_s", true, 1, 86400, command_timeout_s),
	KNOB("timeouts.data_s", true, 1, 86400, data_timeout_s),
	{ "log.level", true, MLOG_ERROR, MLOG_DEBUG, offsetof(struct cfg, log_level),
	  sizeof(((struct cfg *)0)->log_level), true },
	/* Sizes the session pools and the TCP stack: a restart. */
	KNOB("limits.max_sessions", false, 1, 100000000, max_sessions),
};
#define NKNOBS (sizeof(knobs) / sizeof(knobs[0]))

/* Settings only a restart applies; config.reload reports changes to them. */
static const struct {
	const char *key;
	size_t off, size;
} restart_only[] = {
#define RO(k, field) { k, offsetof(struct cfg, field), sizeof(((struct cfg *)0)->field) }
	RO("hostname", hostname), RO("io", io), RO("port", port), RO("queues", queues),
	RO("listen", listen), RO("spool.dir", spool_dir),
	RO("spool.segment_mb", spool_segment_mb), RO("control.socket", control_socket),
	RO("state.dir", state_dir), RO("smtp.bare_lf", bare_lf_normalise),
	RO("smtp.chunking", chunking), RO("smtp.smtputf8", smtputf8),
#undef RO
};

struct dp_admin_priv {
	const struct dp_config *cfg;
	struct cfg boot;           /* the file as the process started (scalars only) */
	struct cfg base;           /* the file as last (re)loaded: the delta's base */
	uint64_t kval[NKNOBS];     /* running values */
	json_t *overrides;         /* knob key -> value set through the socket */
	char state_path[300];      /* "" = no state dir: memory only */
	char state_dir[256];
	int auditfd;
	json_t *audit_ring;        /* the newest AUDIT_RING entries */
	struct ctl_server *cs;
	uint64_t next_expire;
};

static volatile sig_atomic_t reload_requested;

static void on_sighup(int sig)
{
	(void)sig;
	reload_requested = 1;
}

void dp_admin_sighup(void)
{
	reload_requested = 1;
}

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


/* ---- knobs ------------------------------------------------------------- */

/* Indexes into knobs[], in its order. */
enum {
	K_PER_CLIENT = 0, K_SESSION_MAX, K_MAX_SIZE, K_MAX_RCPTS, K_MAX_ERRORS,
	K_CMD_TMO, K_DATA_TMO, K_LOG_LEVEL,
};

static uint64_t knob_get(const struct cfg *c, const struct knob *k)
{
	const char *f = (const char *)c + k->off;

	if (k->size == sizeof(uint64_t)) {
		uint64_t v;

		memcpy(&v, f, sizeof(v));
		return v;
	}
	unsigned u;

	memcpy(&u, f, sizeof(u));
	return u;
}

static const struct knob *knob_find(const char *key, size_t *idx)
{
	for (size_t i = 0; i < NKNOBS; i++)
		if (strcmp(knobs[i].key, key) == 0) {
			*idx = i;
			return &knobs[i];
		}
	return NULL;
}

/* A knob's value as the protocol shows it: a level by name, else a number. */
static json_t *knob_json(const struct knob *k, uint64_t v)
{
	return k->named ? json_string(mlog_name((int)v)) : json_integer((json_int_t)v);
}

/* A value as given for @k: a level name, or a number within its range
 * (a JSON integer or a string of digits: a shell user may quote it). */
static bool knob_parse(const struct knob *k, json_t *v, uint64_t *out)
{
	const char *s = json_string_value(v);
	char *end;

	if (k->named) {
		int l = mlog_parse(s);

		*out = (uint64_t)l;
		return l >= 0;
	}
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
	} else {
		if (s == NULL || *s < '0' || *s > '9')
			return false;
		errno = 0;
		*out = strtoull(s, &end, 10);
		if (errno != 0 || *end != '\0')
			return false;
	}
	return *out >= k->min && *out <= k->max;
}

/* The running value of live knob @i: the operator's override, else the
 * file's. Overrides were validated (knob_parse) when stored. */
static uint64_t knob_effective(struct dp_admin_priv *p, size_t i)
{
	json_t *o = json_object_get(p->overrides, knobs[i].key);
	uint64_t v;

	if (o && knob_parse(&knobs[i], o, &v))
		return v;
	return knob_get(&p->base, &knobs[i]);
}

static int knobs_publish(struct dp_admin *a)
{
	struct tbl_knobs k = {
		.max_sessions_per_client = (uint32_t)a->priv->kval[K_PER_CLIENT],
		.session_max_s = (uint32_t)a->priv->kval[K_SESSION_MAX],
		.max_message_size = a->priv->kval[K_MAX_SIZE],
		.max_recipients = (uint32_t)a->priv->kval[K_MAX_RCPTS],
		.max_errors = (uint32_t)a->priv->kval[K_MAX_ERRORS],
		.command_timeout_s = (uint32_t)a->priv->kval[K_CMD_TMO],
		.data_timeout_s = (uint32_t)a->priv->kval[K_DATA_TMO],
	};

	mlog_set_level((int)a->priv->kval[K_LOG_LEVEL]);

	return tbl_knobs_set(a->tables, &k);
}

/* ---- small helpers ------------------------------------------------------ */

static uint64_t wall_now(void)
{
	return (uint64_t)time(NULL);
}

/* Monotonic expiry (ms, 0 = never) as wall-clock seconds (0 = never). */
static uint64_t exp_to_wall(struct dp_admin *a, uint64_t exp_ms, uint64_t now_ms)
{
	if (exp_ms == 0)
		return 0;
	return wall_now() + (exp_ms > now_ms ? (exp_ms - now_ms + 999) / 1000 : 0);
}

static int fail_msg(const char **code, char **msg, const char *c, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail_msg(const char **code, char **msg, const char *c, const char *fmt, ...)
{
	va_list ap;
	char buf[512];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	*code = c;
	*msg = strdup(buf);
	return -1;
}

static int count_domain(const char *d, const struct tbl_domain_policy *pol, void *arg)
{
	(void)d;
	(void)pol;
	++*(size_t *)arg;
	return 0;
}

static size_t domain_count(struct tbl_set *t)
{
	size_t n = 0;

	tbl_domain_list(t, count_domain, &n);
	return n;
}

static void ndomains_refresh(struct dp_admin *a)
{
	if (a->ndomains)
		*a->ndomains = (unsigned)domain_count(a->tables);
}

/* ---- prefix vectors (for the delta and bulk loads) ---------------------- */

struct pvec {
	struct tbl_prefix *v;
	uint64_t *exp;
	size_t n, cap;
};

static int pvec_push(struct pvec *pv, const struct tbl_prefix *p, uint64_t exp)
{
	if (pv->n == pv->cap) {
		size_t cap = pv->cap ? pv->cap * 2 : 64;
		struct tbl_prefix *v = realloc(pv->v, cap * sizeof(*v));
		uint64_t *e;

		if (v == NULL)
			return -ENOMEM;
		pv->v = v;
		e = realloc(pv->exp, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		pv->exp = e;
		pv->cap = cap;
	}
	pv->v[pv->n] = *p;
	pv->exp[pv->n++] = exp;
	return 0;
}

static void pvec_free(struct pvec *pv)
{
	free(pv->v);
	free(pv->exp);
	memset(pv, 0, sizeof(*pv));
}

static int pvec_cb(const struct tbl_prefix *p, uint64_t exp, void *arg)
{
	return pvec_push(arg, p, exp) ? 1 : 0;
}

static int pfx_cmp(const void *x, const void *y)
{
	return memcmp(x, y, sizeof(struct tbl_prefix));
}

static bool pfx_in(const struct tbl_prefix *sorted, size_t n, const struct tbl_prefix *p)
{
	return n && bsearch(p, sorted, n, sizeof(*p), pfx_cmp) != NULL;
}

/* The prefixes of a configuration list, sorted (they parsed at load). */
static int base_prefixes(const struct cfg_entry *e, size_t n, struct tbl_prefix **out)
{
	struct tbl_prefix *v = calloc(n ? n : 1, sizeof(*v));
	size_t k = 0;

	if (v == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (tbl_prefix_parse(e[i].text, false, &v[k]) == 0)
			k++;
	qsort(v, k, sizeof(*v), pfx_cmp);
	*out = v;
	return (int)k;
}

/* ---- shield --------------------------------------------------------------- */

/* Replaces the shield's list @l with the table's (one generation flip, no
 * window without protection). Returns the "xdp" word for replies. */
static const char *shield_resync(struct dp_admin *a, enum tbl_list l)
{
	struct pvec pv = { 0 };
	struct shield_bulk *b;
	uint64_t now = a->now_ms();
	int rc = 0;

	if (a->shield == NULL)
		return "off";
	if (tbl_prefix_list(a->tables, l, pvec_cb, &pv) != 0) {
		pvec_free(&pv);
		return "failed: dataplane only";
	}
	b = shield_bulk_begin(a->shield, shield_list_of(l));
	if (b == NULL) {
		pvec_free(&pv);
		return "failed: dataplane only";
	}
	for (size_t i = 0; i < pv.n && rc == 0; i++) {
		struct shield_cidr c = to_cidr(&pv.v[i]);

		rc = shield_bulk_add(b, &c, exp_to_wall(a, pv.exp[i], now));
	}
	pvec_free(&pv);
	if (rc < 0) {
		shield_bulk_abort(b);
		return rc == -ENOSPC ? "full: dataplane only" : "failed: dataplane only";
	}
	rc = shield_bulk_commit(b);
	return rc == 0 ? "applied" : rc == -ENOSPC ? "full: dataplane only" :
	       "failed: dataplane only";
}

/* ---- audit log ------------------------------------------------------------ */

/*
 * Records one change: when, who (SO_PEERCRED uid/pid; -1 for SIGHUP), what
 * and the old and new value (@old and @new are stolen; NULL = null). The
 * file is append-only and synced per entry: changes are rare and an audit
 * entry must not be lost to a crash right after the reply.
 */
static void audit(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
		  const char *target, json_t *old, json_t *new)
{
	struct dp_admin_priv *p = a->priv;
	struct timespec now;
	struct tm tm;
	char ts[40], *line;
	json_t *o;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	o = json_pack("{s:s, s:I, s:I, s:s, s:s, s:o, s:o}", "time", ts,
		      "uid", peer ? (json_int_t)peer->uid : (json_int_t)-1,
		      "pid", peer ? (json_int_t)peer->pid : (json_int_t)-1,
		      "cmd", cmd, "target", target,
		      "old", old ? old : json_null(), "new", new ? new : json_null());
	if (o == NULL)
		return;
	if (p->auditfd >= 0 && (line = json_dumps(o, JSON_COMPACT)) != NULL) {
		size_t n = strlen(line);

		line[n] = '\n'; /* json_dumps' NUL becomes the line end */
		if (write(p->auditfd, line, n + 1) != (ssize_t)(n + 1) ||
		    fdatasync(p->auditfd) < 0)
			mlog(MLOG_ERROR, "audit log: %s", strerror(errno));
		free(line);
	}
	json_array_append_new(p->audit_ring, o);
	if (json_array_size(p->audit_ring) > AUDIT_RING)
		json_array_remove(p->audit_ring, 0);
}

/* Fills the ring with the newest entries of an existing audit log. */
static void audit_ring_load(struct dp_admin_priv *p, const char *path)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	long size;

	if (f == NULL)
		return;
	/* The last megabyte holds far more than AUDIT_RING entries. */
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > (1L << 20)) {
		fseek(f, size - (1L << 20), SEEK_SET);
		if (getline(&line, &cap, f) < 0) /* skip the partial line */
			goto out;
	} else {
		rewind(f);
	}
	while (getline(&line, &cap, f) > 0) {
		json_t *o = json_loads(line, 0, NULL);

		if (!json_is_object(o)) {
			json_decref(o);
			continue;
		}
		json_array_append_new(p->audit_ring, o);
		if (json_array_size(p->audit_ring) > AUDIT_RING)
			json_array_remove(p->audit_ring, 0);
	}
out:
	free(line);
	fclose(f);
}

/* ---- state file ----------------------------------------------------------- */

struct dom_arg {
	json_t *set, *names;
	const struct cfg *base;
};

static int delta_domain_cb(const char *d, const struct tbl_domain_policy *pol, void *arg)
{
	struct dom_arg *da = arg;
	const struct cfg_domain *bd = cfg_domain_find(da->base, d);

	json_object_set_new(da->names, d, json_true());
	if (bd == NULL || bd->max_size != pol->max_message_size)
		json_array_append_new(da->set, json_pack("{s:s, s:I}", "domain", d,
			"max_size", (json_int_t)pol->max_message_size));
	return 0;
}

/* The operator's changes: what the live tables and knobs hold beyond (or
 * without) the base file. NULL when out of memory. */
static json_t *state_delta(struct dp_admin *a)
{
	struct dp_admin_priv *p = a->priv;
	const struct {
		const char *name;
		enum tbl_list l;
		const struct cfg_entry *e;
		size_t n;
	} lists[2] = {
		{ "blocklist", TBL_BLOCK, p->base.blocklist, p->base.nblocklist },
		{ "allowlist", TBL_ALLOW, p->base.allowlist, p->base.nallowlist },
	};
	json_t *d = json_pack("{s:i, s:O}", "version", 1, "knobs", p->overrides);
	uint64_t now = a->now_ms();
	char buf[64];

	if (d == NULL)
		return NULL;
	for (int k = 0; k < 2; k++) {
		struct pvec pv = { 0 };
		struct tbl_prefix *base = NULL;
		json_t *add = json_array(), *del = json_array();
		int nb = base_prefixes(lists[k].e, lists[k].n, &base);

		if (nb < 0 || tbl_prefix_list(a->tables, lists[k].l, pvec_cb, &pv) != 0) {
			free(base);
			pvec_free(&pv);
			json_decref(add);
			json_decref(del);
			json_decref(d);
			return NULL;
		}
		for (size_t i = 0; i < pv.n; i++) {
			if (pv.exp[i] == 0 && pfx_in(base, (size_t)nb, &pv.v[i]))
				continue;
			tbl_prefix_format(&pv.v[i], buf, sizeof(buf));
			json_array_append_new(add, pv.exp[i] ?
				json_pack("{s:s, s:I}", "prefix", buf, "expires",
					  (json_int_t)exp_to_wall(a, pv.exp[i], now)) :
				json_pack("{s:s, s:n}", "prefix", buf, "expires"));
		}
		if (pv.n)
			qsort(pv.v, pv.n, sizeof(*pv.v), pfx_cmp);
		for (int i = 0; i < nb; i++)
			if (!pfx_in(pv.v, pv.n, &base[i])) {
				tbl_prefix_format(&base[i], buf, sizeof(buf));
				json_array_append_new(del, json_string(buf));
			}
		free(base);
		pvec_free(&pv);
		json_object_set_new(d, lists[k].name, json_pack("{s:o, s:o}", "add", add,
								"del", del));
	}
	{
		struct dom_arg da = { json_array(), json_object(), &p->base };
		json_t *del = json_array();

		tbl_domain_list(a->tables, delta_domain_cb, &da);
		for (size_t i = 0; i < p->base.ndomains; i++) {
			char low[254];
			size_t j;

			for (j = 0; p->base.domains[i].name[j] && j + 1 < sizeof(low); j++)
				low[j] = (char)tolower((unsigned char)p->base.domains[i].name[j]);
			low[j] = '\0';
			if (json_object_get(da.names, low) == NULL)
				json_array_append_new(del, json_string(low));
		}
		json_decref(da.names);
		json_object_set_new(d, "domains", json_pack("{s:o, s:o}", "set", da.set,
							    "del", del));
	}
	return d;
}

/* Writes the delta atomically: a crash leaves the old file or the new one.
 * Returns 0 or -errno (with @why filled). */
static int state_save(struct dp_admin *a, char *why, size_t whylen)
{
	struct dp_admin_priv *p = a->priv;
	char tmp[320];
	json_t *d;
	char *text = NULL;
	int fd = -1, dfd = -1, rc = 0;
	size_t len, off = 0;

	if (!p->state_path[0])
		return 0;
	d = state_delta(a);
	text = d ? json_dumps(d, JSON_INDENT(1)) : NULL;
	json_decref(d);
	if (text == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", p->state_path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	len = strlen(text);
	text[len++] = '\n';
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);

		if (w < 0) {
			rc = -errno;
			goto fail;
		}
		off += (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		rc = -errno;
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, p->state_path) < 0) {
		rc = -errno;
		goto fail;
	}
	/* The rename itself is durable only once the directory is synced. */
	dfd = open(p->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0)
		rc = -errno;
fail:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	free(text);
	if (rc)
		snprintf(why, whylen, "saving %s: %s", p->state_path, strerror(-rc));
	return rc;
}

/* Creates the state directory, and its parent when missing: the default,
 * SPOOL/state, comes before the spool directory on a first start.
 * Returns 0 or -errno. */
static int state_mkdir(const char *dir)
{
	char parent[256], *slash;

	if (mkdir(dir, 0750) == 0 || errno == EEXIST)
		return 0;
	if (errno != ENOENT)
		return -errno;
	snprintf(parent, sizeof(parent), "%s", dir);
	slash = strrchr(parent, '/');
	if (slash == NULL || slash == parent)
		return -ENOENT;
	*slash = '\0';
	if (mkdir(parent, 0750) < 0 && errno != EEXIST)
		return -errno;
	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* After a change: persist it, or tell the operator it will not survive. */
static int persist(struct dp_admin *a, const char **code, char **msg)
{
	char why[400];

	if (state_save(a, why, sizeof(why)) == 0)
		return 0;
	return fail_msg(code, msg, "not_persisted", "applied, but %s; the change is "
			"lost at restart", why);
}

/*
 * Applies a delta (state_delta's format) to @t (and @sh when not NULL):
 * added entries with their expiry (already expired ones skipped), removed
 * file entries, domains, knob overrides (into p->overrides). @src names the
 * delta in errors. Returns 0 or -EINVAL with @err filled.
 */
static int state_apply(struct dp_admin *a, struct tbl_set *t, struct shield *sh,
		       json_t *d, const char *src, char *err, size_t errlen)
{
	static const char *const names[2] = { "blocklist", "allowlist" };
	static const enum tbl_list ls[2] = { TBL_BLOCK, TBL_ALLOW };
	struct dp_admin_priv *p = a->priv;
	uint64_t wnow = wall_now(), mnow = a->now_ms();
	json_t *v, *e, *jk;
	const char *key;
	size_t i, ki;

	if (!json_is_object(d) || json_integer_value(json_object_get(d, "version")) != 1) {
		snprintf(err, errlen, "%s: not an mxedge state file (version 1)", src);
		return -EINVAL;
	}
	for (int k = 0; k < 2; k++) {
		json_t *l = json_object_get(d, names[k]);
		struct tbl_prefix pf;

		json_array_foreach(json_object_get(l, "add"), i, e) {
			json_t *je = json_object_get(e, "expires");
			const char *ps = json_string_value(json_object_get(e, "prefix"));
			uint64_t ex = json_is_integer(je) ? (uint64_t)json_integer_value(je) : 0;

			if (ps == NULL || tbl_prefix_parse(ps, false, &pf) < 0 ||
			    (je && !json_is_null(je) && !json_is_integer(je))) {
				snprintf(err, errlen, "%s: %s.add[%zu]: expected {\"prefix\": CIDR, "
					 "\"expires\": unix seconds or null}", src, names[k], i);
				return -EINVAL;
			}
			if (ex && ex <= wnow)
				continue; /* expired while we were down */
			if (tbl_prefix_add(t, ls[k], &pf, ex ? mnow + (ex - wnow) * 1000 : 0) < 0) {
				snprintf(err, errlen, "%s: %s.add[%zu]: out of memory", src, names[k], i);
				return -ENOMEM;
			}
			shield_mirror(sh, ls[k], &pf, true, (time_t)ex);
		}
		json_array_foreach(json_object_get(l, "del"), i, e) {
			if (!json_is_string(e) || tbl_prefix_parse(json_string_value(e), false, &pf) < 0) {
				snprintf(err, errlen, "%s: %s.del[%zu]: expected a CIDR string",
					 src, names[k], i);
				return -EINVAL;
			}
			/* gone from the file meanwhile: nothing to remove */
			if (tbl_prefix_del(t, ls[k], &pf) == 0)
				shield_mirror(sh, ls[k], &pf, false, 0);
		}
	}
	v = json_object_get(d, "domains");
	json_array_foreach(json_object_get(v, "set"), i, e) {
		json_t *jm = json_object_get(e, "max_size");
		struct tbl_domain_policy pol = { 0 };
		const char *dn = json_string_value(json_object_get(e, "domain"));

		if (jm && (!json_is_integer(jm) || json_integer_value(jm) < 0)) {
			snprintf(err, errlen, "%s: domains.set[%zu]: max_size must be bytes", src, i);
			return -EINVAL;
		}
		pol.max_message_size = (uint64_t)json_integer_value(jm);
		if (dn == NULL || tbl_domain_set(t, dn, &pol) < 0) {
			snprintf(err, errlen, "%s: domains.set[%zu]: expected {\"domain\": NAME, "
				 "\"max_size\": BYTES}", src, i);
			return -EINVAL;
		}
	}
	json_array_foreach(json_object_get(v, "del"), i, e) {
		if (!json_is_string(e)) {
			snprintf(err, errlen, "%s: domains.del[%zu]: expected a domain name", src, i);
			return -EINVAL;
		}
		(void)tbl_domain_del(t, json_string_value(e));
	}
	json_object_foreach(json_object_get(d, "knobs"), key, jk) {
		const struct knob *kn = knob_find(key, &ki);

		uint64_t kv;

		if (kn == NULL || !kn->live || !(kn->named ? json_is_string(jk) : json_is_integer(jk)) ||
		    !knob_parse(kn, jk, &kv)) {
			snprintf(err, errlen, "%s: knobs.%s: not a live knob or out of range", src, key);
			return -EINVAL;
		}
		json_object_set(p->overrides, key, jk);
	}
	return 0;
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

/* The entry for @p in a list, for the audit's "old" value. */
struct find_arg {
	const struct tbl_prefix *p;
	uint64_t exp;
	bool found;
};

static int find_cb(const struct tbl_prefix *p, uint64_t exp, void *arg)
{
	struct find_arg *fa = arg;

	if (memcmp(p, fa->p, sizeof(*p)) != 0)
		return 0;
	fa->exp = exp;
	fa->found = true;
	return 1;
}

static json_t *entry_json(struct dp_admin *a, enum tbl_list l, const struct tbl_prefix *p)
{
	struct find_arg fa = { p, 0, false };
	uint64_t now = a->now_ms();

	tbl_prefix_list(a->tables, l, find_cb, &fa);
	if (!fa.found)
		return NULL;
	return fa.exp ? json_pack("{s:I}", "expires_in", (json_int_t)(fa.exp > now ?
				  (fa.exp - now + 999) / 1000 : 0)) :
			json_pack("{s:n}", "expires_in");
}

static int h_prefix_add(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			json_t *args, json_t **result, const char **code, char **msg)
{
	struct tbl_prefix p;
	json_int_t ttl;
	json_t *old;
	char buf[64];
	int rc;

	if (prefix_args(args, &p, &ttl, code, msg))
		return -1;
	old = entry_json(a, list_of(cmd), &p);
	rc = tbl_prefix_add(a->tables, list_of(cmd), &p,
			    ttl ? a->now_ms() + (uint64_t)ttl * 1000 : 0);
	if (rc) {
		json_decref(old);
		*code = "failed";
		*msg = strdup(strerror(-rc));
		return -1;
	}
	rc = shield_mirror(a->shield, list_of(cmd), &p, true,
			   ttl ? time(NULL) + (time_t)ttl : 0);
	tbl_prefix_format(&p, buf, sizeof(buf));
	audit(a, peer, cmd, buf, old, ttl ? json_pack("{s:I}", "expires_in", ttl) :
					    json_pack("{s:n}", "expires_in"));
	if (persist(a, code, msg))
		return -1;
	*result = json_pack("{s:I, s:s}", "entries",
			    (json_int_t)tbl_prefix_count(a->tables, list_of(cmd)),
			    "xdp", a->shield == NULL ? "off" : rc == 0 ? "applied" :
			    rc == -ENOSPC ? "full: dataplane only" : "failed: dataplane only");
	return 0;
}

static int h_prefix_del(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			json_t *args, json_t **result, const char **code, char **msg)
{
	struct tbl_prefix p;
	json_int_t ttl;
	json_t *old;
	char buf[64];

	if (prefix_args(args, &p, &ttl, code, msg))
		return -1;
	tbl_prefix_format(&p, buf, sizeof(buf));
	old = entry_json(a, list_of(cmd), &p);
	shield_mirror(a->shield, list_of(cmd), &p, false, 0);
	if (tbl_prefix_del(a->tables, list_of(cmd), &p) < 0) {
		json_decref(old);
		return fail_msg(code, msg, "not_found", "%s is not in the %s", buf,
				list_of(cmd) == TBL_ALLOW ? "allowlist" : "blocklist");
	}
	audit(a, peer, cmd, buf, old, NULL);
	return persist(a, code, msg);
}

/*
 * "blocklist.load file=PATH [ttl=S] [replace=true]": CIDRs one per line,
 * '#' starts a comment. The whole file is checked first; any bad line
 * rejects it (naming the lines) and changes nothing. The new list is built
 * off line and swapped in whole, in the tables and the shield alike.
 */
static int h_prefix_load(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			 json_t *args, json_t **result, const char **code, char **msg)
{
	json_t *jf = json_object_get(args, "file"), *jt = json_object_get(args, "ttl");
	json_t *jr = json_object_get(args, "replace");
	enum tbl_list l = list_of(cmd);
	struct pvec cur = { 0 }, in = { 0 };
	struct tbl_pset *ps = NULL;
	char bad[LOAD_BAD_SHOWN * 12 + 16] = "", first[200] = "", *line = NULL;
	size_t cap = 0, before = tbl_prefix_count(a->tables, l), i, nbad = 0;
	unsigned lineno = 0;
	const char *path, *xdp;
	uint64_t exp = 0;
	struct stat st;
	FILE *f = NULL;
	int rc = -1;

	if (!json_is_string(jf))
		return bad_args(code, msg, "%s", "\"file\" is required: a file of CIDRs, "
				"one per line ('#' comments)");
	if (jt && (!json_is_integer(jt) || json_integer_value(jt) < 1 ||
		   json_integer_value(jt) > 86400LL * 3650))
		return bad_args(code, msg, "%s", "\"ttl\" must be whole seconds, 1 to 10 years");
	if (jr && !json_is_boolean(jr))
		return bad_args(code, msg, "%s", "\"replace\" must be true or false");
	path = json_string_value(jf);
	f = fopen(path, "re");
	if (f == NULL || fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > LOAD_MAX_BYTES) {
		rc = bad_args(code, msg, "cannot load %s: %s", path, f == NULL ? strerror(errno) :
			      !S_ISREG(st.st_mode) ? "not a regular file" : "larger than 256 MiB");
		goto out;
	}
	while (getline(&line, &cap, f) >= 0) {
		char *s = line, *e, *hash = strchr(line, '#');
		struct tbl_prefix p;

		lineno++;
		if (hash)
			*hash = '\0';
		while (*s == ' ' || *s == '\t')
			s++;
		e = s + strlen(s);
		while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (*s == '\0')
			continue;
		if (tbl_prefix_parse(s, false, &p) < 0) {
			if (nbad++ == 0)
				snprintf(first, sizeof(first), "%s:%u: \"%.100s\" is not an address "
					 "or prefix (host bits must be zero: 198.18.0.0/15)",
					 path, lineno, s);
			if (nbad <= LOAD_BAD_SHOWN)
				snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), "%s%u",
					 nbad > 1 ? ", " : "", lineno);
			continue;
		}
		if (pvec_push(&in, &p, 0) < 0) {
			rc = fail_msg(code, msg, "failed", "%s", strerror(ENOMEM));
			goto out;
		}
	}
	if (nbad) {
		rc = bad_args(code, msg, "%s; %zu bad line%s (%s%s), nothing loaded", first,
			      nbad, nbad > 1 ? "s" : "", bad, nbad > LOAD_BAD_SHOWN ? ", ..." : "");
		goto out;
	}
	if (jt)
		exp = a->now_ms() + (uint64_t)json_integer_value(jt) * 1000;
	ps = tbl_pset_new();
	if (ps == NULL || (!json_is_true(jr) && tbl_prefix_list(a->tables, l, pvec_cb, &cur))) {
		rc = fail_msg(code, msg, "failed", "%s", strerror(ENOMEM));
		goto out;
	}
	for (i = 0; i < cur.n + in.n; i++) {
		bool old = i < cur.n;

		if (tbl_pset_add(ps, old ? &cur.v[i] : &in.v[i - cur.n],
				 old ? cur.exp[i] : exp) < 0) {
			rc = fail_msg(code, msg, "failed", "%s", strerror(ENOMEM));
			goto out;
		}
	}
	tbl_prefix_swap(a->tables, l, ps);
	ps = NULL;
	xdp = shield_resync(a, l);
	audit(a, peer, cmd, path, json_pack("{s:I}", "entries", (json_int_t)before),
	      json_pack("{s:I, s:I, s:b, s:O?}", "entries",
			(json_int_t)tbl_prefix_count(a->tables, l), "loaded", (json_int_t)in.n,
			"replace", json_is_true(jr), "ttl", jt));
	if (persist(a, code, msg))
		goto out;
	*result = json_pack("{s:I, s:I, s:s}", "loaded", (json_int_t)in.n, "entries",
			    (json_int_t)tbl_prefix_count(a->tables, l), "xdp", xdp);
	rc = 0;
out:
	tbl_pset_free(ps);
	pvec_free(&cur);
	pvec_free(&in);
	free(line);
	if (f)
		fclose(f);
	return rc;
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

static int h_prefix_list(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			 json_t *args, json_t **result, const char **code, char **msg)
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

struct dfind_arg {
	const char *name;
	json_t *found;
};

static int dfind_cb(const char *d, const struct tbl_domain_policy *pol, void *arg)
{
	struct dfind_arg *fa = arg;

	if (strcasecmp(d, fa->name) != 0)
		return 0;
	fa->found = json_pack("{s:I}", "max_size", (json_int_t)pol->max_message_size);
	return 1;
}

static json_t *domain_json(struct dp_admin *a, const char *name)
{
	struct dfind_arg fa = { name, NULL };

	tbl_domain_list(a->tables, dfind_cb, &fa);
	return fa.found;
}

static int h_domain_add(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			json_t *args, json_t **result, const char **code, char **msg)
{
	json_t *jd = json_object_get(args, "domain");
	json_t *js = json_object_get(args, "max_size");
	struct tbl_domain_policy pol = { 0 };
	json_t *old;

	if (!json_is_string(jd))
		return bad_args(code, msg, "%s", "\"domain\" is required");
	if (js && (!json_is_integer(js) || json_integer_value(js) < 0))
		return bad_args(code, msg, "%s", "\"max_size\" must be bytes (0 = global limit)");
	if (js)
		pol.max_message_size = (uint64_t)json_integer_value(js);
	old = domain_json(a, json_string_value(jd));
	if (tbl_domain_set(a->tables, json_string_value(jd), &pol) < 0) {
		json_decref(old);
		return bad_args(code, msg, "\"%s\" is not a domain name (letters, digits, "
				"'-', '.', no trailing dot, at most 253 bytes)",
				json_string_value(jd));
	}
	audit(a, peer, cmd, json_string_value(jd), old,
	      json_pack("{s:I}", "max_size", (json_int_t)pol.max_message_size));
	ndomains_refresh(a);
	return persist(a, code, msg);
}

static int h_domain_del(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			json_t *args, json_t **result, const char **code, char **msg)
{
	json_t *jd = json_object_get(args, "domain");
	json_t *old;

	if (!json_is_string(jd))
		return bad_args(code, msg, "%s", "\"domain\" is required");
	old = domain_json(a, json_string_value(jd));
	if (tbl_domain_del(a->tables, json_string_value(jd)) < 0) {
		json_decref(old);
		*code = "not_found";
		*msg = strdup("no such domain");
		return -1;
	}
	audit(a, peer, cmd, json_string_value(jd), old, NULL);
	ndomains_refresh(a);
	return persist(a, code, msg);
}

static int domain_cb(const char *d, const struct tbl_domain_policy *pol, void *arg)
{
	json_array_append_new(arg, json_pack("{s:s, s:I}", "domain", d, "max_size",
					     (json_int_t)pol->max_message_size));
	return 0;
}

static int h_domain_list(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			 json_t *args, json_t **result, const char **code, char **msg)
{
	static const char *const tls[] = { "none", "opportunistic", "required" };
	json_t *row;
	size_t i;

	*result = json_array();
	tbl_domain_list(a->tables, domain_cb, *result);
	/* The relay route mxedge-control uses for the domain: the file's
	 * (routes are not changed through this socket); null = none. */
	json_array_foreach(*result, i, row) {
		const struct cfg_domain *d = cfg_domain_find(&a->priv->base,
			json_string_value(json_object_get(row, "domain")));
		char route[300];

		if (d == NULL || d->route.host[0] == '\0') {
			json_object_set_new(row, "route", json_null());
			continue;
		}
		snprintf(route, sizeof(route), "%s:%u tls=%s", d->route.host,
			 d->route.port ? d->route.port : 25u,
			 (unsigned)d->route.tls < 3 ? tls[d->route.tls] : "?");
		json_object_set_new(row, "route", json_string(route));
	}
	return 0;
}

static json_t *knob_row(struct dp_admin_priv *p, size_t i)
{
	return json_pack("{s:s, s:o, s:b, s:s, s:o, s:o}", "key", knobs[i].key,
			 "value", knob_json(&knobs[i], p->kval[i]), "live", knobs[i].live,
			 "source", json_object_get(p->overrides, knobs[i].key) ? "operator" :
				   "file",
			 "min", knob_json(&knobs[i], knobs[i].min),
			 "max", knob_json(&knobs[i], knobs[i].max));
}

static const char live_keys[] = "limits.max_sessions_per_client, limits.session_max_s, "
	"limits.max_message_size, limits.max_recipients, limits.max_errors, "
	"timeouts.command_s, timeouts.data_s, log.level";

/* "config.get [key=NAME]": every knob (or one) with its running value,
 * whether it is live, and who set it (the file or an operator). */
static int h_config_get(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			json_t *args, json_t **result, const char **code, char **msg)
{
	json_t *jk = json_object_get(args, "key");
	size_t i;

	if (jk) {
		if (!json_is_string(jk) || knob_find(json_string_value(jk), &i) == NULL)
			return bad_args(code, msg, "unknown key \"%s\"; keys: %s and (restart "
					"only) limits.max_sessions", json_is_string(jk) ?
					json_string_value(jk) : "?", live_keys);
		*result = knob_row(a->priv, i);
		return 0;
	}
	*result = json_array();
	for (i = 0; i < NKNOBS; i++)
		json_array_append_new(*result, knob_row(a->priv, i));
	return 0;
}

/* "config.set key=NAME value=V": a live knob, validated, published to the
 * workers (new sessions see it; open ones keep running), persisted. Setting
 * the file's value drops the override, so the file rules that key again. */
static int h_config_set(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			json_t *args, json_t **result, const char **code, char **msg)
{
	struct dp_admin_priv *p = a->priv;
	json_t *jk = json_object_get(args, "key"), *jv = json_object_get(args, "value");
	const struct knob *k;
	uint64_t v, old;
	size_t i;

	if (!json_is_string(jk))
		return bad_args(code, msg, "\"key\" is required; live keys: %s", live_keys);
	k = knob_find(json_string_value(jk), &i);
	if (k == NULL)
		return bad_args(code, msg, "unknown key \"%s\"; live keys: %s",
				json_string_value(jk), live_keys);
	if (!k->live)
		return fail_msg(code, msg, "restart_required", "%s cannot change while "
				"running: set it in the configuration file and restart mxedge "
				"(live keys: %s)", k->key, live_keys);
	if (k->named && (jv == NULL || !knob_parse(k, jv, &v)))
		return bad_args(code, msg, "%s: expected error, warning, info or debug", k->key);
	if (jv == NULL || !knob_parse(k, jv, &v))
		return bad_args(code, msg, "%s: expected a whole number %llu..%llu",
				k->key, (unsigned long long)k->min, (unsigned long long)k->max);
	old = p->kval[i];
	if (v == knob_get(&p->base, k))
		json_object_del(p->overrides, k->key);
	else
		json_object_set_new(p->overrides, k->key, knob_json(k, v));
	p->kval[i] = v;
	if (knobs_publish(a) < 0) {
		p->kval[i] = old;
		return fail_msg(code, msg, "failed", "%s", strerror(ENOMEM));
	}
	audit(a, peer, cmd, k->key, knob_json(k, old), knob_json(k, v));
	if (k->named)
		mlog(MLOG_INFO, "config.set %s: %s -> %s by uid %u", k->key,
		     mlog_name((int)old), mlog_name((int)v), (unsigned)peer->uid);
	else
		mlog(MLOG_INFO, "config.set %s: %llu -> %llu by uid %u", k->key,
		     (unsigned long long)old, (unsigned long long)v, (unsigned)peer->uid);
	if (persist(a, code, msg))
		return -1;
	*result = json_pack("{s:s, s:o, s:o}", "key", k->key, "old", knob_json(k, old),
			    "new", knob_json(k, v));
	return 0;
}

/* Domains of a scratch table, to find the live ones it no longer has. */
static int names_cb(const char *d, const struct tbl_domain_policy *pol, void *arg)
{
	json_object_set_new(arg, d, json_integer((json_int_t)pol->max_message_size));
	return 0;
}

struct copy_arg {
	struct tbl_pset *ps;
	int rc;
};

static int copy_cb(const struct tbl_prefix *p, uint64_t exp, void *arg)
{
	struct copy_arg *ca = arg;

	ca->rc = tbl_pset_add(ca->ps, p, exp);
	return ca->rc ? 1 : 0;
}

static json_t *counts(struct dp_admin *a)
{
	return json_pack("{s:I, s:I, s:I}",
			 "blocklist_entries", (json_int_t)tbl_prefix_count(a->tables, TBL_BLOCK),
			 "allowlist_entries", (json_int_t)tbl_prefix_count(a->tables, TBL_ALLOW),
			 "domains", (json_int_t)domain_count(a->tables));
}

/*
 * config.reload: re-reads the file the process started with. Everything is
 * checked before anything changes (a bad file names FILE:LINE and leaves
 * the running state alone): the file is parsed, its lists and domains are
 * built into scratch tables and the operator's delta is applied on top.
 * Then the lists are swapped in whole (tables and shield), domains brought
 * in line, live knobs published; settings only a restart applies are
 * reported, not applied.
 */
static int do_reload(struct dp_admin *a, const struct ctl_peer *peer,
		     json_t **result, const char **code, char **msg)
{
	struct dp_admin_priv *p = a->priv;
	static const enum tbl_list ls[2] = { TBL_BLOCK, TBL_ALLOW };
	json_t *delta = NULL, *changed = json_array(), *restart = json_array();
	json_t *names = json_object(), *live_names = json_object();
	json_t *before = counts(a), *oldk = json_object(), *newk = json_object();
	const char *path = p->cfg->file.source, *xdp = "off", *key;
	struct tbl_set *scratch = NULL;
	char err[600];
	struct cfg nc;
	json_t *v;
	size_t i;
	int rc = -1;

	cfg_defaults(&nc);
	if (!p->cfg->have_file) {
		rc = fail_msg(code, msg, "not_available", "%s", "started without --config: "
			      "there is no file to re-read");
		goto out;
	}
	if (cfg_load_file(path, &nc, err, sizeof(err)) < 0) {
		rc = fail_msg(code, msg, "bad_config", "%s; nothing changed", err);
		goto out;
	}
	delta = state_delta(a);
	scratch = tbl_create();
	if (delta == NULL || scratch == NULL) {
		rc = fail_msg(code, msg, "failed", "%s", strerror(ENOMEM));
		goto out;
	}
	if (dp_tables_load(scratch, NULL, &nc, err, sizeof(err)) < 0 ||
	    state_apply(a, scratch, NULL, delta, "state", err, sizeof(err)) < 0) {
		rc = fail_msg(code, msg, "bad_config", "%s; nothing changed", err);
		goto out;
	}
	/* Checked: from here on the new configuration is applied. */
	for (int k = 0; k < 2; k++) {
		struct copy_arg ca = { tbl_pset_new(), 0 };

		if (ca.ps == NULL || tbl_prefix_list(scratch, ls[k], copy_cb, &ca) != 0) {
			tbl_pset_free(ca.ps);
			rc = fail_msg(code, msg, "failed", "%s", strerror(ENOMEM));
			goto out;
		}
		tbl_prefix_swap(a->tables, ls[k], ca.ps);
		xdp = shield_resync(a, ls[k]);
	}
	tbl_domain_list(scratch, names_cb, names);
	tbl_domain_list(a->tables, names_cb, live_names);
	json_object_foreach(live_names, key, v)
		if (json_object_get(names, key) == NULL)
			(void)tbl_domain_del(a->tables, key);
	json_object_foreach(names, key, v) {
		struct tbl_domain_policy pol = { .max_message_size = (uint64_t)json_integer_value(v) };

		(void)tbl_domain_set(a->tables, key, &pol);
	}
	ndomains_refresh(a);
	cfg_free(&p->base);
	p->base = nc;
	cfg_defaults(&nc); /* p->base owns the lists now */
	for (i = 0; i < NKNOBS; i++) {
		uint64_t nv = knob_get(&p->base, &knobs[i]);

		if (knobs[i].live) {
			nv = knob_effective(p, i);
			if (nv == p->kval[i])
				continue;
			json_array_append_new(changed, json_pack("{s:s, s:o, s:o}", "key",
				knobs[i].key, "old", knob_json(&knobs[i], p->kval[i]),
				"new", knob_json(&knobs[i], nv)));
			json_object_set_new(oldk, knobs[i].key, knob_json(&knobs[i], p->kval[i]));
			json_object_set_new(newk, knobs[i].key, knob_json(&knobs[i], nv));
			p->kval[i] = nv;
		} else if (nv != p->kval[i]) {
			json_array_append_new(restart, json_string(knobs[i].key));
		}
	}
	for (i = 0; i < sizeof(restart_only) / sizeof(restart_only[0]); i++)
		if (memcmp((const char *)&p->boot + restart_only[i].off,
			   (const char *)&p->base + restart_only[i].off, restart_only[i].size))
			json_array_append_new(restart, json_string(restart_only[i].key));
	knobs_publish(a);
	json_object_set_new(before, "knobs", oldk);
	oldk = NULL;
	*result = counts(a);
	{
		json_t *after = counts(a);

		json_object_set_new(after, "knobs", newk);
		json_object_set_new(after, "restart_required", json_deep_copy(restart));
		newk = after;
	}
	json_object_set_new(*result, "file", json_string(path));
	json_object_set_new(*result, "changed", changed);
	json_object_set_new(*result, "restart_required", restart);
	json_object_set_new(*result, "xdp", json_string(xdp));
	changed = restart = NULL;
	audit(a, peer, "config.reload", path, before, newk);
	before = newk = NULL;
	if (persist(a, code, msg)) {
		json_decref(*result);
		*result = NULL;
		goto out;
	}
	rc = 0;
out:
	cfg_free(&nc);
	tbl_destroy(scratch);
	json_decref(delta);
	json_decref(changed);
	json_decref(restart);
	json_decref(names);
	json_decref(live_names);
	json_decref(before);
	json_decref(oldk);
	json_decref(newk);
	return rc;
}

static int h_config_reload(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
			   json_t *args, json_t **result, const char **code, char **msg)
{
	return do_reload(a, peer, result, code, msg);
}

/* "audit [limit=N]": the newest N changes (default 50), oldest first. */
static int h_audit(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
		   json_t *args, json_t **result, const char **code, char **msg)
{
	json_t *jl = json_object_get(args, "limit"), *ring = a->priv->audit_ring;
	size_t n = 50, total = json_array_size(ring);

	if (jl && (!json_is_integer(jl) || json_integer_value(jl) < 1 ||
		   json_integer_value(jl) > AUDIT_RING))
		return bad_args(code, msg, "\"limit\" must be 1..%d", AUDIT_RING);
	if (jl)
		n = (size_t)json_integer_value(jl);
	*result = json_array();
	for (size_t i = total > n ? total - n : 0; i < total; i++)
		json_array_append(*result, json_array_get(ring, i));
	return 0;
}

static int h_status(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
		    json_t *args, json_t **result, const char **code, char **msg)
{
	*result = a->status ? a->status(a->arg) : json_object();
	json_object_set_new(*result, "version", json_string(MXEDGE_VERSION));
	json_object_set_new(*result, "xdp_shield", json_string(a->shield ? "on" : "off"));
	json_object_set_new(*result, "blocklist_entries",
			    json_integer((json_int_t)tbl_prefix_count(a->tables, TBL_BLOCK)));
	json_object_set_new(*result, "allowlist_entries",
			    json_integer((json_int_t)tbl_prefix_count(a->tables, TBL_ALLOW)));
	json_object_set_new(*result, "state", json_string(a->priv && a->priv->state_path[0] ?
							  a->priv->state_path : "memory only"));
	return 0;
}

static int h_shield(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
		    json_t *args, json_t **result, const char **code, char **msg)
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
static int h_stats(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
		   json_t *args, json_t **result, const char **code, char **msg)
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

/* "log.level [level=LEVEL]": the level of this process's diagnostic log,
 * or a change of it (the admin role; persisted and audited like
 * config.set key=log.level, which it is). Read-only peers may look. */
static int h_log_level(struct dp_admin *a, const struct ctl_peer *peer, const char *cmd,
		       json_t *args, json_t **result, const char **code, char **msg)
{
	json_t *jl = json_object_get(args, "level"), *sargs;
	int rc;

	if (jl == NULL) {
		*result = json_pack("{s:s}", "level", mlog_name((int)a->priv->kval[K_LOG_LEVEL]));
		return 0;
	}
	if (peer->role != CTL_ADMIN)
		return fail_msg(code, msg, "permission_denied", "changing the log level needs "
				"the admin role (uid %u is read-only)", (unsigned)peer->uid);
	sargs = json_pack("{s:s, s:O}", "key", "log.level", "value", jl);
	if (sargs == NULL)
		return fail_msg(code, msg, "failed", "%s", strerror(ENOMEM));
	rc = h_config_set(a, peer, cmd, sargs, result, code, msg);
	json_decref(sargs);
	return rc;
}

/* ctl handlers get the command table's ctx; each wrapper knows its name. */
#define WRAP(fn, name, cmd)                                                     \
	static int w_##fn##_##name(void *ctx, const struct ctl_peer *peer,     \
				   json_t *args, json_t **result,              \
				   const char **code, char **msg)              \
	{                                                                       \
		return fn(ctx, peer, cmd, args, result, code, msg);             \
	}
WRAP(h_prefix_add, blocklist, "blocklist.add")
WRAP(h_prefix_add, allowlist, "allowlist.add")
WRAP(h_prefix_del, blocklist, "blocklist.del")
WRAP(h_prefix_del, allowlist, "allowlist.del")
WRAP(h_prefix_load, blocklist, "blocklist.load")
WRAP(h_prefix_load, allowlist, "allowlist.load")
WRAP(h_prefix_list, blocklist, "blocklist.list")
WRAP(h_prefix_list, allowlist, "allowlist.list")
WRAP(h_domain_add, domain, "domain.add")
WRAP(h_domain_del, domain, "domain.del")
WRAP(h_domain_list, domain, "domain.list")
WRAP(h_config_get, config, "config.get")
WRAP(h_config_set, config, "config.set")
WRAP(h_config_reload, config, "config.reload")
WRAP(h_audit, audit, "audit")
WRAP(h_log_level, log, "log.level")
WRAP(h_status, status, "status")
WRAP(h_stats, stats, "stats")
WRAP(h_shield, shield, "shield")

static const struct ctl_command admin_cmds[] = {
	{ "status", false, w_h_status_status, "process, port and table summary" },
	{ "stats", false, w_h_stats_stats,
	  "per-lcore counters and the total [view=drops: drops by reason per lcore]" },
	{ "shield", false, w_h_shield_shield, "XDP shield counters per verdict reason" },
	{ "blocklist.add", true, w_h_prefix_add_blocklist,
	  "block a client address or prefix: prefix=CIDR [ttl=SECONDS]" },
	{ "blocklist.del", true, w_h_prefix_del_blocklist, "unblock: prefix=CIDR" },
	{ "blocklist.load", true, w_h_prefix_load_blocklist,
	  "add a file of CIDRs (one per line, # comments; all or nothing): "
	  "file=PATH [ttl=SECONDS] [replace=true]" },
	{ "blocklist.list", false, w_h_prefix_list_blocklist, "blocked prefixes [limit=N]" },
	{ "allowlist.add", true, w_h_prefix_add_allowlist,
	  "always accept a client (wins over the blocklist): prefix=CIDR [ttl=SECONDS]" },
	{ "allowlist.del", true, w_h_prefix_del_allowlist, "prefix=CIDR" },
	{ "allowlist.load", true, w_h_prefix_load_allowlist,
	  "file=PATH [ttl=SECONDS] [replace=true] (as blocklist.load)" },
	{ "allowlist.list", false, w_h_prefix_list_allowlist, "allowed prefixes [limit=N]" },
	{ "domain.add", true, w_h_domain_add_domain,
	  "accept mail for a domain: domain=NAME [max_size=BYTES]" },
	{ "domain.del", true, w_h_domain_del_domain, "domain=NAME" },
	{ "domain.list", false, w_h_domain_list_domain, "accepted domains" },
	{ "config.get", false, w_h_config_get_config,
	  "knobs with their running values, live or restart-only [key=NAME]" },
	{ "config.set", true, w_h_config_set_config,
	  "change a live knob for new sessions: key=NAME value=V" },
	{ "config.reload", true, w_h_config_reload_config,
	  "re-read the configuration file (all or nothing); also on SIGHUP" },
	{ "audit", false, w_h_audit_audit, "changes made through this socket, newest last "
	  "[limit=N]" },
	{ "log.level", false, w_h_log_level_log, "the diagnostic log's level; "
	  "level=error|warning|info|debug changes it (admin)" },
};

const struct ctl_command *dp_admin_commands(size_t *n)
{
	*n = sizeof(admin_cmds) / sizeof(admin_cmds[0]);
	return admin_cmds;
}

static void admin_expire(struct dp_admin *a)
{
	size_t removed;

	tbl_expire(a->tables, a->now_ms());
	if (a->shield)
		shield_expire(a->shield, (uint64_t)time(NULL), &removed);
}

/* A deep copy of @src's lists, so the base outlives a reload of dp_config. */
static int cfg_copy(struct cfg *dst, const struct cfg *src)
{
	*dst = *src;
	dst->domains = calloc(src->ndomains + 1, sizeof(*dst->domains));
	dst->blocklist = calloc(src->nblocklist + 1, sizeof(*dst->blocklist));
	dst->allowlist = calloc(src->nallowlist + 1, sizeof(*dst->allowlist));
	if (dst->domains == NULL || dst->blocklist == NULL || dst->allowlist == NULL) {
		cfg_free(dst);
		return -ENOMEM;
	}
	if (src->ndomains)
		memcpy(dst->domains, src->domains, src->ndomains * sizeof(*dst->domains));
	if (src->nblocklist)
		memcpy(dst->blocklist, src->blocklist, src->nblocklist * sizeof(*dst->blocklist));
	if (src->nallowlist)
		memcpy(dst->allowlist, src->allowlist, src->nallowlist * sizeof(*dst->allowlist));
	return 0;
}

int dp_admin_start(struct dp_admin *a, const struct dp_config *cfg,
		   char *err, size_t errlen)
{
	struct dp_admin_priv *p = calloc(1, sizeof(*p));
	struct sigaction sa;
	int rc;

	a->priv = p;
	if (p == NULL)
		goto nomem;
	p->cfg = cfg;
	p->auditfd = -1;
	p->overrides = json_object();
	p->audit_ring = json_array();
	cfg_defaults(&p->base);
	if (p->overrides == NULL || p->audit_ring == NULL || cfg_copy(&p->base, &cfg->file) < 0)
		goto nomem;
	p->boot = cfg->file;
	p->boot.domains = NULL;
	p->boot.blocklist = p->boot.allowlist = NULL;
	rc = dp_tables_load(a->tables, a->shield, &cfg->file, err, errlen);
	if (rc < 0)
		return rc;
	if (cfg->state_dir[0]) {
		char path[320];

		snprintf(p->state_dir, sizeof(p->state_dir), "%s", cfg->state_dir);
		rc = state_mkdir(p->state_dir);
		if (rc < 0) {
			char dflt[sizeof(cfg->spool_dir) + 8];

			/* The default, SPOOL/state: the operator named only
			 * the spool, so the error names it. */
			snprintf(dflt, sizeof(dflt), "%s/state", cfg->spool_dir);
			if (strcmp(dflt, p->state_dir) == 0)
				snprintf(err, errlen, "spool %s: cannot create %s, where changes "
					 "made through the control socket are kept (state.dir "
					 "puts them elsewhere): %s", cfg->spool_dir, p->state_dir,
					 strerror(-rc));
			else
				snprintf(err, errlen, "state.dir %s: %s", p->state_dir,
					 strerror(-rc));
			return rc;
		}
		snprintf(p->state_path, sizeof(p->state_path), "%s/state.json", p->state_dir);
		snprintf(path, sizeof(path), "%s/audit.log", p->state_dir);
		audit_ring_load(p, path);
		p->auditfd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (p->auditfd < 0) {
			rc = -errno;
			snprintf(err, errlen, "audit log %s: %s", path, strerror(errno));
			return rc;
		}
		if (access(p->state_path, F_OK) == 0) {
			json_error_t je;
			json_t *d = json_load_file(p->state_path, 0, &je);

			if (d == NULL) {
				snprintf(err, errlen, "%s:%d: %s (move it away to start from "
					 "the configuration file alone)", p->state_path,
					 je.line, je.text);
				return -EINVAL;
			}
			rc = state_apply(a, a->tables, a->shield, d, p->state_path, err, errlen);
			json_decref(d);
			if (rc < 0)
				return rc;
		}
	}
	for (size_t i = 0; i < NKNOBS; i++)
		p->kval[i] = knobs[i].live ? knob_effective(p, i) : knob_get(&p->boot, &knobs[i]);
	if (knobs_publish(a) < 0)
		goto nomem;
	ndomains_refresh(a);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sighup;
	sa.sa_flags = SA_RESTART; /* the workers' syscalls need not see it */
	sigaction(SIGHUP, &sa, NULL);
	if (cfg->control[0]) {
		const struct ctl_command *cmds;
		char dir[sizeof(cfg->control)], *slash;
		size_t n;

		snprintf(dir, sizeof(dir), "%s", cfg->control);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			mkdir(dir, 0750);
		}
		cmds = dp_admin_commands(&n);
		p->cs = ctl_server_open(cfg->control, cmds, n, a);
		if (p->cs == NULL) {
			rc = -errno;
			snprintf(err, errlen, "control socket %s: %s", cfg->control, strerror(errno));
			return rc;
		}
	}
	return 0;
nomem:
	snprintf(err, errlen, "%s", strerror(ENOMEM));
	return -ENOMEM;
}

void dp_admin_poll(struct dp_admin *a, int timeout_ms)
{
	struct dp_admin_priv *p = a->priv;

	if (p && p->cs)
		ctl_server_poll(p->cs, timeout_ms);
	else
		usleep((useconds_t)timeout_ms * 1000);
	if (p == NULL)
		return;
	if (a->now_ms() >= p->next_expire) {
		admin_expire(a);
		p->next_expire = a->now_ms() + 1000;
	}
	if (reload_requested) {
		json_t *res = NULL;
		const char *code = NULL;
		char *msg = NULL;

		reload_requested = 0;
		if (do_reload(a, NULL, &res, &code, &msg) == 0)
			printf("mxedge: SIGHUP: reloaded %s: %zu changed, %zu need a restart\n",
			       p->cfg->file.source, json_array_size(json_object_get(res, "changed")),
			       json_array_size(json_object_get(res, "restart_required")));
		else
			printf("mxedge: SIGHUP: reload failed (%s): %s\n", code, msg ? msg : "");
		fflush(stdout);
		json_decref(res);
		free(msg);
	}
	ndomains_refresh(a);
}

void dp_admin_stop(struct dp_admin *a)
{
	struct dp_admin_priv *p = a->priv;

	if (p == NULL)
		return;
	ctl_server_close(p->cs);
	if (p->auditfd >= 0)
		close(p->auditfd);
	json_decref(p->overrides);
	json_decref(p->audit_ring);
	cfg_free(&p->base);
	free(p);
	a->priv = NULL;
}

void dp_stats_put(json_t *o, const struct dp_lcore_stats *st)
{
#define PUT(k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))
	PUT("sessions", st->sessions);
	PUT("messages", st->messages);
	PUT("sessions_busy", st->sessions_busy);
	PUT("sessions_client_limit", st->sessions_client_limit);
	PUT("sessions_expired", st->sessions_expired);
	PUT("clients_blocked", st->clients_blocked);
	PUT("rcpt_rejected", st->rcpt_rejected);
	PUT("store_errors", st->store_errors);
	PUT("log_dropped", st->log_dropped);
#undef PUT
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
