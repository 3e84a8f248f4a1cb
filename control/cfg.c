/*
 * cfg.c - configuration file parser (see cfg.h, docs/CONFIG.md).
 *
 * libyaml builds the document tree; this file walks it against the schema
 * below. Each key has a type and a destination; the walker reports the
 * first problem with the node's position.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "cfg.h"

struct walk {
	yaml_document_t *doc;
	struct cfg *c;
	char *err;
	size_t errlen;
	int rc;        /* first error wins */
};

__attribute__((format(printf, 3, 4)))
static int fail_at(struct walk *w, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[384];
	va_list ap;

	if (w->rc)
		return w->rc;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(w->err, w->errlen, "%s:%zu:%zu: %s", w->c->source,
		 n ? n->start_mark.line + 1 : 1, n ? n->start_mark.column + 1 : 1, msg);
	w->rc = -EINVAL;
	return w->rc;
}

static const char *scalar(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int get_str(struct walk *w, const yaml_node_t *n, const char *key,
		   char *dst, size_t cap)
{
	const char *s = scalar(n);

	if (s == NULL)
		return fail_at(w, n, "%s: expected a string", key);
	if (strlen(s) >= cap || memchr(s, '\0', n->data.scalar.length))
		return fail_at(w, n, "%s: longer than %zu bytes", key, cap - 1);
	strcpy(dst, s);
	return 0;
}

static int get_u64(struct walk *w, const yaml_node_t *n, const char *key,
		   uint64_t min, uint64_t max, uint64_t *out)
{
	const char *s = scalar(n);
	unsigned long long v;
	char *end;

	if (s == NULL || !isdigit((unsigned char)s[0]))
		return fail_at(w, n, "%s: expected a whole number %llu..%llu", key,
			       (unsigned long long)min, (unsigned long long)max);
	errno = 0;
	v = strtoull(s, &end, 10);
	/* size suffixes for byte counts: 10M, 50MB, 1G */
	if (*end) {
		static const struct { const char *sfx; unsigned long long mul; } sf[] = {
			{ "K", 1ULL << 10 }, { "KB", 1ULL << 10 }, { "M", 1ULL << 20 },
			{ "MB", 1ULL << 20 }, { "G", 1ULL << 30 }, { "GB", 1ULL << 30 },
		};

		for (size_t i = 0; i < sizeof(sf) / sizeof(sf[0]); i++)
			if (strcmp(end, sf[i].sfx) == 0) {
				if (__builtin_mul_overflow(v, sf[i].mul, &v))
					errno = ERANGE;
				end += strlen(end);
				break;
			}
	}
	if (errno || *end || v < min || v > max)
		return fail_at(w, n, "%s: expected a whole number %llu..%llu, got \"%s\"",
			       key, (unsigned long long)min, (unsigned long long)max, s);
	*out = v;
	return 0;
}

static int get_uint(struct walk *w, const yaml_node_t *n, const char *key,
		    unsigned min, unsigned max, unsigned *out)
{
	uint64_t v;
	int rc = get_u64(w, n, key, min, max, &v);

	if (rc == 0)
		*out = (unsigned)v;
	return rc;
}

static int get_bool(struct walk *w, const yaml_node_t *n, const char *key, bool *out)
{
	const char *s = scalar(n);

	if (s && (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")))
		*out = true;
	else if (s && (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")))
		*out = false;
	else
		return fail_at(w, n, "%s: expected true or false", key);
	return 0;
}

static int get_choice(struct walk *w, const yaml_node_t *n, const char *key,
		      const char *const *choices, int *out)
{
	const char *s = scalar(n);
	char list[128] = "";
	int i;

	for (i = 0; s && choices[i]; i++)
		if (strcmp(s, choices[i]) == 0) {
			*out = i;
			return 0;
		}
	for (i = 0; choices[i]; i++) {
		strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
		strncat(list, choices[i], sizeof(list) - strlen(list) - 1);
	}
	return fail_at(w, n, "%s: expected one of %s", key, list);
}

/* host:port, [v6]:port */
static int get_listen(struct walk *w, const yaml_node_t *n, const char *key, char *dst,
		      size_t cap)
{
	const char *s = scalar(n), *colon;
	char *end;
	unsigned long port;

	if (s == NULL)
		return fail_at(w, n, "%s: expected \"ADDRESS:PORT\" strings", key);
	colon = s[0] == '[' ? strstr(s, "]:") : strrchr(s, ':');
	if (colon == NULL || colon == s)
		goto bad;
	colon += s[0] == '[' ? 2 : 1;
	if (s[0] != '[' && memchr(s, ':', (size_t)(colon - 1 - s)))
		goto bad; /* a bare IPv6 address needs brackets */
	if (s[0] == '[' && colon - s < 4)
		goto bad; /* "[]:25": no address */
	port = strtoul(colon, &end, 10);
	if (*colon == '\0' || *end || port == 0 || port > 65535 || strlen(s) >= cap)
		goto bad;
	strcpy(dst, s);
	return 0;
bad:
	return fail_at(w, n, "%s: \"%s\" is not ADDRESS:PORT "
		       "(198.18.0.1:25, [2001:db8::1]:25)", key, s);
}

static int get_entries(struct walk *w, const yaml_node_t *n, const char *key,
		       struct cfg_entry **out, size_t *count)
{
	yaml_node_item_t *it;
	struct cfg_entry *v;
	size_t k = 0;

	if (n->type != YAML_SEQUENCE_NODE)
		return fail_at(w, n, "%s: expected a list", key);
	v = calloc((size_t)(n->data.sequence.items.top - n->data.sequence.items.start) + 1,
		   sizeof(*v));
	if (v == NULL)
		return w->rc = -ENOMEM;
	free(*out);
	*out = v;
	*count = 0;
	for (it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
		yaml_node_t *e = yaml_document_get_node(w->doc, *it);

		if (get_str(w, e, key, v[k].text, sizeof(v[k].text)))
			return w->rc;
		v[k].line = (unsigned)e->start_mark.line + 1;
		*count = ++k;
	}
	return 0;
}

/* Iterates the pairs of a mapping, giving key text and value node. */
#define FOREACH_PAIR(w, map, p, k, v)                                          \
	for (yaml_node_pair_t *p = (map)->data.mapping.pairs.start;            \
	     p < (map)->data.mapping.pairs.top &&                               \
	     ((k) = yaml_document_get_node((w)->doc, p->key)) != NULL &&         \
	     ((v) = yaml_document_get_node((w)->doc, p->value)) != NULL; p++)

static int expect_map(struct walk *w, const yaml_node_t *n, const char *what)
{
	if (n->type != YAML_MAPPING_NODE)
		return fail_at(w, n, "%s: expected a mapping (key: value lines)", what);
	return 0;
}

static int walk_section(struct walk *w, const yaml_node_t *map, const char *sect);

/* A repeated key would silently override the first one: refuse it. @p is
 * the pair being looked at in mapping @map; keys compare case-insensitively
 * (domain names do, and no two keys of ours differ by case only). */
static int check_repeat(struct walk *w, const yaml_node_t *map,
			const yaml_node_pair_t *p, const yaml_node_t *k)
{
	const char *key = scalar(k);

	for (const yaml_node_pair_t *q = map->data.mapping.pairs.start; key && q < p; q++) {
		const char *prev = scalar(yaml_document_get_node(w->doc, q->key));

		if (prev && strcasecmp(prev, key) == 0)
			return fail_at(w, k, "\"%s\" is given twice", key);
	}
	return 0;
}

/* route: { host: 198.18.0.2, port: 25, tls: none|opportunistic|required } */
static int get_route(struct walk *w, const yaml_node_t *map, struct cfg_domain *d)
{
	static const char *const tls[] = { "none", "opportunistic", "required", NULL };
	yaml_node_t *k, *v;
	int choice;

	if (expect_map(w, map, "route"))
		return w->rc;
	d->route.port = 25;
	d->route.tls = CFG_TLS_OPPORTUNISTIC;
	FOREACH_PAIR(w, map, p, k, v) {
		const char *key = scalar(k);

		if (check_repeat(w, map, p, k))
			return w->rc;
		if (key && strcmp(key, "host") == 0) {
			if (get_str(w, v, "route.host", d->route.host, sizeof(d->route.host)))
				return w->rc;
			if (!d->route.host[0] || strpbrk(d->route.host, " \t[]/"))
				return fail_at(w, v, "route.host: expected a host name or IP address");
		} else if (key && strcmp(key, "port") == 0) {
			if (get_uint(w, v, "route.port", 1, 65535, &d->route.port))
				return w->rc;
		} else if (key && strcmp(key, "tls") == 0) {
			if (get_choice(w, v, "route.tls", tls, &choice))
				return w->rc;
			d->route.tls = (enum cfg_tls)choice;
		} else {
			return fail_at(w, k, "unknown key \"%s\" in route of %s "
				       "(expected: host, port, tls)", key ? key : "?", d->name);
		}
	}
	if (!d->route.host[0])
		return fail_at(w, map, "route of %s: host is missing", d->name);
	return 0;
}

/* A duration: a whole number with an optional unit s, m, h or d. */
static int get_duration(struct walk *w, const yaml_node_t *n, const char *key,
			uint64_t min, uint64_t max, uint64_t *out)
{
	const char *s = scalar(n);
	unsigned long long v, mul = 1;
	char *end;

	if (s == NULL || !isdigit((unsigned char)s[0]))
		goto bad;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end && end[1] == '\0') {
		switch (*end) {
		case 's': mul = 1; break;
		case 'm': mul = 60; break;
		case 'h': mul = 3600; break;
		case 'd': mul = 86400; break;
		default: goto bad;
		}
		end++;
	}
	if (errno || *end || __builtin_mul_overflow(v, mul, &v) || v < min || v > max)
		goto bad;
	*out = v;
	return 0;
bad:
	return fail_at(w, n, "%s: expected a duration %llus..%llus (e.g. 300s, 5m, 15d)",
		       key, (unsigned long long)min, (unsigned long long)max);
}

static int walk_domains(struct walk *w, const yaml_node_t *map)
{
	yaml_node_t *k, *v, *k2, *v2;
	struct cfg *c = w->c;
	size_t n = 0;

	if (expect_map(w, map, "domains"))
		return w->rc;
	free(c->domains);
	c->ndomains = 0;
	c->domains = calloc((size_t)(map->data.mapping.pairs.top -
				     map->data.mapping.pairs.start) + 1,
			    sizeof(*c->domains));
	if (c->domains == NULL)
		return w->rc = -ENOMEM;
	FOREACH_PAIR(w, map, p, k, v) {
		struct cfg_domain *d = &c->domains[n];

		if (get_str(w, k, "domain name", d->name, sizeof(d->name)) ||
		    check_repeat(w, map, p, k))
			return w->rc;
		d->line = (unsigned)k->start_mark.line + 1;
		/* "customer.test:" with nothing after it means all defaults */
		if (!(v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0)) {
			if (expect_map(w, v, d->name))
				return w->rc;
			FOREACH_PAIR(w, v, p2, k2, v2) {
				const char *key = scalar(k2);

				if (check_repeat(w, v, p2, k2))
					return w->rc;
				if (key && strcmp(key, "max_size") == 0) {
					if (get_u64(w, v2, "max_size", 0, 1ULL << 40, &d->max_size))
						return w->rc;
				} else if (key && strcmp(key, "route") == 0) {
					if (get_route(w, v2, d))
						return w->rc;
				} else {
					return fail_at(w, k2, "unknown key \"%s\" in domain %s "
						       "(expected: max_size, route)", key ? key : "?", d->name);
				}
			}
		}
		c->ndomains = ++n;
	}
	return 0;
}

/* One table of keys per section; "" is the top level. */
static int walk_key(struct walk *w, const char *sect, const char *key,
		    const yaml_node_t *k, const yaml_node_t *v)
{
	static const char *const ios[] = { "dpdk", "kernel", NULL };
	static const char *const bare[] = { "reject", "normalise", NULL };
	struct cfg *c = w->c;
	int choice;

	if (!*sect) {
		if (!strcmp(key, "hostname"))
			return get_str(w, v, key, c->hostname, sizeof(c->hostname));
		if (!strcmp(key, "io")) {
			if (get_choice(w, v, key, ios, &choice) == 0)
				c->io = (enum cfg_io)choice;
			return w->rc;
		}
		if (!strcmp(key, "port"))
			return get_str(w, v, key, c->port, sizeof(c->port));
		if (!strcmp(key, "queues"))
			return get_uint(w, v, key, 1, 64, &c->queues);
		if (!strcmp(key, "listen")) {
			yaml_node_item_t *it;

			if (v->type != YAML_SEQUENCE_NODE)
				return fail_at(w, v, "listen: expected a list of ADDRESS:PORT");
			c->nlisten = 0;
			for (it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
				if (c->nlisten == CFG_MAX_LISTEN)
					return fail_at(w, v, "listen: at most %d addresses", CFG_MAX_LISTEN);
				if (get_listen(w, yaml_document_get_node(w->doc, *it), "listen",
					       c->listen[c->nlisten], sizeof(c->listen[0])))
					return w->rc;
				c->nlisten++;
			}
			return 0;
		}
		if (!strcmp(key, "spool") || !strcmp(key, "limits") ||
		    !strcmp(key, "timeouts") || !strcmp(key, "control") ||
		    !strcmp(key, "smtp") || !strcmp(key, "relay") ||
		    !strcmp(key, "state") || !strcmp(key, "log"))
			return walk_section(w, v, key);
		if (!strcmp(key, "domains"))
			return walk_domains(w, v);
		if (!strcmp(key, "blocklist"))
			return get_entries(w, v, key, &c->blocklist, &c->nblocklist);
		if (!strcmp(key, "allowlist"))
			return get_entries(w, v, key, &c->allowlist, &c->nallowlist);
		return fail_at(w, k, "unknown key \"%s\" (expected: hostname, io, port, "
			       "queues, listen, spool, limits, timeouts, control, smtp, "
			       "relay, state, log, domains, blocklist, allowlist)", key);
	}
	if (!strcmp(sect, "spool")) {
		if (!strcmp(key, "dir"))
			return get_str(w, v, "spool.dir", c->spool_dir, sizeof(c->spool_dir));
		if (!strcmp(key, "segment_mb"))
			return get_uint(w, v, "spool.segment_mb", 1, 4096, &c->spool_segment_mb);
		return fail_at(w, k, "unknown key \"%s\" in spool (expected: dir, segment_mb)", key);
	}
	if (!strcmp(sect, "limits")) {
		if (!strcmp(key, "max_message_size"))
			return get_u64(w, v, "limits.max_message_size", 1024, 1ULL << 40,
				       &c->max_message_size);
		if (!strcmp(key, "max_sessions"))
			return get_uint(w, v, "limits.max_sessions", 1, 100000000, &c->max_sessions);
		if (!strcmp(key, "sessions_per_lcore"))
			return get_uint(w, v, "limits.sessions_per_lcore", 1, CFG_MAX_SESSIONS_PER_LCORE,
					&c->sessions_per_lcore);
		if (!strcmp(key, "max_sessions_per_client"))
			return get_uint(w, v, "limits.max_sessions_per_client", 0, 100000000,
					&c->max_sessions_per_client);
		if (!strcmp(key, "session_max_s"))
			return get_uint(w, v, "limits.session_max_s", 0, 864000, &c->session_max_s);
		if (!strcmp(key, "max_recipients"))
			return get_uint(w, v, "limits.max_recipients", 1, 100000, &c->max_recipients);
		if (!strcmp(key, "max_errors"))
			return get_uint(w, v, "limits.max_errors", 1, 1000, &c->max_errors);
		return fail_at(w, k, "unknown key \"%s\" in limits (expected: max_message_size, "
			       "max_sessions, sessions_per_lcore, max_sessions_per_client, session_max_s, "
			       "max_recipients, max_errors)", key);
	}
	if (!strcmp(sect, "timeouts")) {
		if (!strcmp(key, "command_s"))
			return get_uint(w, v, "timeouts.command_s", 1, 86400, &c->command_timeout_s);
		if (!strcmp(key, "data_s"))
			return get_uint(w, v, "timeouts.data_s", 1, 86400, &c->data_timeout_s);
		return fail_at(w, k, "unknown key \"%s\" in timeouts (expected: command_s, data_s)", key);
	}
	if (!strcmp(sect, "control")) {
		if (!strcmp(key, "socket")) {
			if (get_str(w, v, "control.socket", c->control_socket,
				    sizeof(c->control_socket)))
				return w->rc;
			if (c->control_socket[0] != '/')
				return fail_at(w, v, "control.socket: expected an absolute path");
			return 0;
		}
		return fail_at(w, k, "unknown key \"%s\" in control (expected: socket)", key);
	}
	if (!strcmp(sect, "state")) {
		if (!strcmp(key, "dir")) {
			if (get_str(w, v, "state.dir", c->state_dir, sizeof(c->state_dir)))
				return w->rc;
			if (c->state_dir[0] != '/')
				return fail_at(w, v, "state.dir: expected an absolute path");
			return 0;
		}
		return fail_at(w, k, "unknown key \"%s\" in state (expected: dir)", key);
	}
	if (!strcmp(sect, "log")) {
		static const char *const levels[] = { "error", "warning", "info", "debug", NULL };

		if (!strcmp(key, "level")) {
			if (get_choice(w, v, "log.level", levels, &choice) == 0)
				c->log_level = (unsigned)choice;
			return w->rc;
		}
		return fail_at(w, k, "unknown key \"%s\" in log (expected: level)", key);
	}
	if (!strcmp(sect, "smtp")) {
		if (!strcmp(key, "bare_lf")) {
			if (get_choice(w, v, "smtp.bare_lf", bare, &choice) == 0)
				c->bare_lf_normalise = choice == 1;
			return w->rc;
		}
		if (!strcmp(key, "chunking"))
			return get_bool(w, v, "smtp.chunking", &c->chunking);
		if (!strcmp(key, "smtputf8"))
			return get_bool(w, v, "smtp.smtputf8", &c->smtputf8);
		return fail_at(w, k, "unknown key \"%s\" in smtp (expected: bare_lf, chunking, "
			       "smtputf8)", key);
	}
	if (!strcmp(sect, "relay")) {
		struct cfg_relay *r = &c->relay;

		if (!strcmp(key, "state_dir"))
			return get_str(w, v, "relay.state_dir", r->state_dir, sizeof(r->state_dir));
		if (!strcmp(key, "log_file"))
			return get_str(w, v, "relay.log_file", r->log_file, sizeof(r->log_file));
		if (!strcmp(key, "socket")) {
			if (get_str(w, v, "relay.socket", r->socket, sizeof(r->socket)))
				return w->rc;
			if (r->socket[0] != '/')
				return fail_at(w, v, "relay.socket: expected an absolute path");
			return 0;
		}
		if (!strcmp(key, "metrics")) {
			/* Metrics are for the local scraper only: loopback. */
			if (get_listen(w, v, "relay.metrics", r->metrics, sizeof(r->metrics)))
				return w->rc;
			if (strncmp(r->metrics, "127.", 4) && strncmp(r->metrics, "[::1]:", 6))
				return fail_at(w, v, "relay.metrics: expected a loopback "
					       "ADDRESS:PORT (127.0.0.1:9187, [::1]:9187)");
			return 0;
		}
		if (!strcmp(key, "min_backoff"))
			return get_duration(w, v, "relay.min_backoff", 1, 86400, &r->min_backoff_s);
		if (!strcmp(key, "max_backoff"))
			return get_duration(w, v, "relay.max_backoff", 1, 7 * 86400, &r->max_backoff_s);
		if (!strcmp(key, "lifetime"))
			return get_duration(w, v, "relay.lifetime", 1, 100 * 86400, &r->lifetime_s);
		if (!strcmp(key, "timeout"))
			return get_duration(w, v, "relay.timeout", 1, 3600, &r->timeout_s);
		if (!strcmp(key, "concurrency"))
			return get_uint(w, v, "relay.concurrency", 1, 1000, &r->concurrency);
		if (!strcmp(key, "max_msgs_per_conn"))
			return get_uint(w, v, "relay.max_msgs_per_conn", 1, 100000,
					&r->max_msgs_per_conn);
		if (!strcmp(key, "tls_min_protocol")) {
			static const char *const v_tls[] = { "TLSv1.2", "TLSv1.3", NULL };
			int ch;

			if (get_choice(w, v, "relay.tls_min_protocol", v_tls, &ch) == 0)
				r->tls_min_version = ch ? 0x0304 : 0x0303;
			return w->rc;
		}
		if (!strcmp(key, "compact_after"))
			return get_duration(w, v, "relay.compact_after", 1, 100 * 86400,
					    &r->compact_after_s);
		if (!strcmp(key, "state_log_max"))
			return get_u64(w, v, "relay.state_log_max", 4096, 1ULL << 40,
				       &r->state_log_max);
		if (!strcmp(key, "time_scale")) {
			const char *s = scalar(v);
			char *end;
			double d;

			errno = 0;
			d = s ? strtod(s, &end) : 0;
			if (s == NULL || errno || end == s || *end || !(d > 0 && d <= 1))
				return fail_at(w, v, "relay.time_scale: expected a number "
					       "above 0 and at most 1 (e.g. 0.001)");
			r->time_scale = d;
			return 0;
		}
		return fail_at(w, k, "unknown key \"%s\" in relay (expected: state_dir, "
			       "log_file, socket, metrics, min_backoff, max_backoff, lifetime, timeout, "
			       "concurrency, max_msgs_per_conn, tls_min_protocol, compact_after, "
			       "state_log_max, time_scale)", key);
	}
	return fail_at(w, k, "unknown section");
}

static int walk_section(struct walk *w, const yaml_node_t *map, const char *sect)
{
	yaml_node_t *k, *v;

	if (expect_map(w, map, *sect ? sect : "the configuration"))
		return w->rc;
	FOREACH_PAIR(w, map, p, k, v) {
		const char *key = scalar(k);

		if (key == NULL)
			return fail_at(w, k, "keys must be plain words");
		if (check_repeat(w, map, p, k))
			return w->rc;
		if (walk_key(w, sect, key, k, v))
			return w->rc;
	}
	return 0;
}

void cfg_defaults(struct cfg *c)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->source, "(defaults)");
	strcpy(c->hostname, "localhost");
	c->io = CFG_IO_DPDK;
	c->queues = 1;
	strcpy(c->spool_dir, "/var/spool/mxedge");
	c->spool_segment_mb = 64;
	strcpy(c->control_socket, "/run/mxedge/control.sock");
	c->max_message_size = 50ULL * 1024 * 1024;
	c->max_sessions = 100000;
	c->sessions_per_lcore = 1024;
	c->max_sessions_per_client = 50; /* Postfix smtpd_client_connection_count_limit */
	c->session_max_s = 600;     /* inactivity timeouts alone let a drip live forever */
	c->max_recipients = 100;    /* RFC 5321 §4.5.3.1.8 minimum */
	c->max_errors = 20;
	c->command_timeout_s = 300; /* RFC 5321 §4.5.3.2.7 */
	c->data_timeout_s = 180;    /* RFC 5321 §4.5.3.2.6 */
	c->log_level = 2;           /* info (mlog.h) */
	c->chunking = true;
	c->smtputf8 = true;
	strcpy(c->relay.state_dir, "/var/lib/mxedge/relay");
	strcpy(c->relay.socket, "/run/mxedge/relay.sock");
	c->relay.min_backoff_s = 300;     /* Postfix minimal_backoff_time */
	c->relay.max_backoff_s = 4000;    /* Postfix maximal_backoff_time */
	c->relay.lifetime_s = 15 * 86400; /* 15 days (PRODUCT.md) */
	c->relay.timeout_s = 300;         /* RFC 5321 §4.5.3.2 minimums are 2-10 min */
	c->relay.time_scale = 1.0;
	c->relay.concurrency = 20;        /* Postfix default_destination_concurrency_limit */
	c->relay.max_msgs_per_conn = 100;
	c->relay.tls_min_version = 0x0303;   /* TLSv1.2 (RFC 8996 retired 1.0/1.1) */
	c->relay.compact_after_s = 3600;
	c->relay.state_log_max = 64ULL << 20;
}

int cfg_load(const char *source, const char *text, size_t len, struct cfg *c,
	     char *err, size_t errlen)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	struct walk w = { &doc, c, err, errlen, 0 };

	snprintf(c->source, sizeof(c->source), "%s", source);
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, errlen, "%s:%zu:%zu: %s%s%s", source,
			 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			 parser.problem ? parser.problem : "syntax error",
			 parser.context ? " " : "", parser.context ? parser.context : "");
		yaml_parser_delete(&parser);
		return -EINVAL;
	}
	root = yaml_document_get_root_node(&doc);
	/* an empty file means "all defaults" */
	if (root && !(root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
		walk_section(&w, root, "");
	yaml_document_delete(&doc);
	if (w.rc == 0 && root) {
		/* a second document ("---") would be silently ignored */
		yaml_document_t extra;

		if (!yaml_parser_load(&parser, &extra)) {
			snprintf(err, errlen, "%s:%zu:%zu: %s", source,
				 parser.problem_mark.line + 1, parser.problem_mark.column + 1,
				 parser.problem ? parser.problem : "syntax error");
			w.rc = -EINVAL;
		} else {
			yaml_node_t *r2 = yaml_document_get_root_node(&extra);

			if (r2) {
				snprintf(err, errlen, "%s:%zu:%zu: a second YAML document; "
					 "the configuration is one document", source,
					 r2->start_mark.line + 1, r2->start_mark.column + 1);
				w.rc = -EINVAL;
			}
			yaml_document_delete(&extra);
		}
	}
	yaml_parser_delete(&parser);
	return w.rc;
}

int cfg_load_file(const char *path, struct cfg *c, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	int rc;

	if (f == NULL) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	do {
		if (len + 65536 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 65536;
			if (cap > (64u << 20) || (nb = realloc(buf, cap)) == NULL) {
				snprintf(err, errlen, "%s: too large or out of memory", path);
				free(buf);
				fclose(f);
				return -EFBIG;
			}
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	if (ferror(f)) {
		rc = -EIO;
		snprintf(err, errlen, "%s: read error", path);
	} else {
		rc = cfg_load(path, buf, len, c, err, errlen);
	}
	free(buf);
	fclose(f);
	return rc;
}

const struct cfg_domain *cfg_domain_find(const struct cfg *c, const char *name)
{
	for (size_t i = 0; i < c->ndomains; i++)
		if (strcasecmp(c->domains[i].name, name) == 0)
			return &c->domains[i];
	return NULL;
}

void cfg_free(struct cfg *c)
{
	free(c->domains);
	free(c->blocklist);
	free(c->allowlist);
	c->domains = NULL;
	c->blocklist = c->allowlist = NULL;
	c->ndomains = c->nblocklist = c->nallowlist = 0;
}
