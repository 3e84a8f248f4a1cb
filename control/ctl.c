/*
 * ctl.c - control protocol server and client (see ctl.h).
 *
 * The server runs in a supervisor thread (never on a dataplane lcore): it
 * polls non-blocking sockets, so one slow or malicious client cannot stall
 * the others or the thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "mlog.h"

#define OUT_MAX (4u << 20) /* pending reply bytes before a client is dropped */

struct client {
	int fd;
	struct ctl_peer peer;
	char *in;
	size_t inlen, incap;
	char *out;
	size_t outlen, outcap;
	bool closing;  /* drop after the pending output is sent */
	time_t last;   /* last activity, for the idle timeout */
};

/* A connection with no request for this long is closed, so idle or stuck
 * clients cannot hold all CTL_MAX_CLIENTS slots. */
#define IDLE_SECONDS 60

struct ctl_server {
	int fd;
	char *path;
	gid_t sock_gid;
	const struct ctl_command *cmds;
	size_t ncmds;
	void *ctx;
	struct client cl[CTL_MAX_CLIENTS];
};

/* ---- request logic ----------------------------------------------------- */

/* Length of the longest prefix of @s (at most @max bytes) that is valid
 * UTF-8 and ends on a character boundary: messages echo user input, and a
 * cut inside a character would make the whole reply unencodable. */
static size_t utf8_prefix(const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < max && p[i]) {
		size_t n = p[i] < 0x80 ? 1 : (p[i] & 0xe0) == 0xc0 ? 2 :
			   (p[i] & 0xf0) == 0xe0 ? 3 : (p[i] & 0xf8) == 0xf0 ? 4 : 0;
		size_t k;

		if (n == 0 || i + n > max)
			break;
		for (k = 1; k < n; k++)
			if ((p[i + k] & 0xc0) != 0x80)
				return i;
		i += n;
	}
	return i;
}

/* A fixed reply for when even an error reply cannot be built. */
static const char reply_fallback[] = "{\"v\":1,\"id\":null,\"ok\":false,"
	"\"error\":{\"code\":\"internal\",\"message\":\"reply could not be encoded\"}}";

static json_t *reply_error(json_t *id, const char *code, const char *msg)
{
	json_t *r = json_pack("{s:i, s:O, s:b, s:{s:s, s:s%}}", "v", CTL_VERSION,
			      "id", id ? id : json_null(), "ok", 0, "error", "code",
			      code, "message", msg, utf8_prefix(msg, strlen(msg)));

	return r ? r : json_loads(reply_fallback, 0, NULL);
}

static json_t *help_result(const struct ctl_command *cmds, size_t ncmds)
{
	json_t *arr = json_array();
	size_t i;

	json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "command", "help",
					     "role", "read-only", "help",
					     "list the commands"));
	for (i = 0; i < ncmds; i++)
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s}",
			"command", cmds[i].name,
			"role", cmds[i].admin ? "admin" : "read-only",
			"help", cmds[i].help ? cmds[i].help : ""));
	return arr;
}

json_t *ctl_handle_frame(const struct ctl_command *cmds, size_t ncmds,
			 void *ctx, const struct ctl_peer *peer,
			 const char *frame, size_t len)
{
	json_error_t jerr;
	json_t *req, *v, *id, *cmd, *args, *result = NULL, *reply;
	const char *name, *code = "internal";
	char *msg = NULL, buf[256];
	size_t i;

	req = json_loadb(frame, len, JSON_REJECT_DUPLICATES, &jerr);
	if (req == NULL) {
		snprintf(buf, sizeof(buf), "invalid JSON at column %d: %s",
			 jerr.column, jerr.text);
		return reply_error(NULL, "bad_request", buf);
	}
	if (!json_is_object(req)) {
		json_decref(req);
		return reply_error(NULL, "bad_request", "a request is a JSON object");
	}
	id = json_object_get(req, "id");
	if (id && !json_is_integer(id) && !json_is_string(id))
		id = NULL;
	v = json_object_get(req, "v");
	cmd = json_object_get(req, "cmd");
	args = json_object_get(req, "args");
	if (!json_is_integer(v) || json_integer_value(v) != CTL_VERSION) {
		snprintf(buf, sizeof(buf), "\"v\" must be %d (protocol version)",
			 CTL_VERSION);
		reply = reply_error(id, "bad_version", buf);
		goto out;
	}
	if (!json_is_string(cmd)) {
		reply = reply_error(id, "bad_request", "\"cmd\" must be a string");
		goto out;
	}
	if (args && !json_is_object(args)) {
		reply = reply_error(id, "bad_request", "\"args\" must be an object");
		goto out;
	}
	name = json_string_value(cmd);
	if (strcmp(name, "help") == 0) {
		reply = json_pack("{s:i, s:O, s:b, s:o}", "v", CTL_VERSION, "id",
				  id ? id : json_null(), "ok", 1, "result",
				  help_result(cmds, ncmds));
		goto out;
	}
	for (i = 0; i < ncmds; i++)
		if (strcmp(cmds[i].name, name) == 0)
			break;
	if (i == ncmds) {
		snprintf(buf, sizeof(buf), "unknown command \"%.*s\" (try \"help\")",
			 (int)utf8_prefix(name, 64), name);
		reply = reply_error(id, "unknown_command", buf);
		goto out;
	}
	if (cmds[i].admin && peer->role != CTL_ADMIN) {
		snprintf(buf, sizeof(buf), "\"%.*s\" needs the admin role (uid %u is read-only)",
			 (int)utf8_prefix(name, 64), name, (unsigned)peer->uid);
		reply = reply_error(id, "permission_denied", buf);
		goto out;
	}
	if (args == NULL) {
		args = json_object();
		json_object_set_new(req, "args", args);
	}
	if (cmds[i].fn(ctx, peer, args, &result, &code, &msg) == 0) {
		mlog(MLOG_DEBUG, "control: %s from uid %u pid %d: ok", cmds[i].name,
		     (unsigned)peer->uid, (int)peer->pid);
		reply = json_pack("{s:i, s:O, s:b, s:o}", "v", CTL_VERSION, "id",
				  id ? id : json_null(), "ok", 1, "result",
				  result ? result : json_null());
	} else {
		json_decref(result);
		mlog(MLOG_DEBUG, "control: %s from uid %u pid %d: %s", cmds[i].name,
		     (unsigned)peer->uid, (int)peer->pid, code ? code : "failed");
		reply = reply_error(id, code ? code : "failed",
				    msg ? msg : "command failed");
	}
	free(msg);
out:
	json_decref(req);
	return reply;
}

/* ---- server ------------------------------------------------------------ */

static void client_drop(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->in);
	free(c->out);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static int buf_append(char **buf, size_t *len, size_t *cap, const char *p,
		      size_t n, size_t max)
{
	if (*len + n > max)
		return -ENOBUFS;
	if (*len + n > *cap) {
		size_t ncap = *cap ? *cap : 4096;
		char *nb;

		while (ncap < *len + n)
			ncap *= 2;
		nb = realloc(*buf, ncap);
		if (nb == NULL)
			return -ENOMEM;
		*buf = nb;
		*cap = ncap;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	return 0;
}

static void client_flush(struct client *c)
{
	while (c->outlen > 0) {
		ssize_t n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->closing = true, c->outlen = 0;
			return;
		}
		memmove(c->out, c->out + n, c->outlen - (size_t)n);
		c->outlen -= (size_t)n;
	}
}

static void client_reply(struct client *c, json_t *reply)
{
	char *s = reply ? json_dumps(reply, JSON_COMPACT) : NULL;

	json_decref(reply);
	if (s == NULL)
		s = strdup(reply_fallback); /* every request gets an answer */
	if (s == NULL) {
		c->closing = true;
		return;
	}
	if (buf_append(&c->out, &c->outlen, &c->outcap, s, strlen(s), OUT_MAX) ||
	    buf_append(&c->out, &c->outlen, &c->outcap, "\n", 1, OUT_MAX)) {
		/* a client that does not read its replies is dropped */
		c->closing = true;
		c->outlen = 0;
	}
	free(s);
	client_flush(c);
}

/* Serves every complete line in the client's input. */
static int client_serve(struct ctl_server *s, struct client *c)
{
	size_t off = 0;
	int served = 0;
	char *nl;

	while (!c->closing && (nl = memchr(c->in + off, '\n', c->inlen - off)) != NULL) {
		char *line = c->in + off;
		size_t n = (size_t)(nl - line);

		if (n > 0 && !(n == 1 && line[0] == '\r'))
			client_reply(c, ctl_handle_frame(s->cmds, s->ncmds, s->ctx,
							 &c->peer, line, n));
		served++;
		off += n + 1;
	}
	/* one compaction per read, not one per line */
	if (off) {
		memmove(c->in, c->in + off, c->inlen - off);
		c->inlen -= off;
	}
	if (c->inlen > CTL_MAX_FRAME) {
		char buf[96];

		snprintf(buf, sizeof(buf), "frame longer than %u bytes", CTL_MAX_FRAME);
		client_reply(c, reply_error(NULL, "frame_too_large", buf));
		c->closing = true;
	}
	return served;
}

static void client_accept(struct ctl_server *s)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd, i;

	while ((fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		for (i = 0; i < CTL_MAX_CLIENTS; i++)
			if (s->cl[i].fd < 0)
				break;
		if (i == CTL_MAX_CLIENTS ||
		    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			static const char busy[] = "{\"v\":1,\"id\":null,\"ok\":false,"
				"\"error\":{\"code\":\"busy\",\"message\":\"too many control clients\"}}\n";

			(void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			close(fd);
			continue;
		}
		s->cl[i].fd = fd;
		s->cl[i].last = time(NULL);
		s->cl[i].peer.pid = cred.pid;
		s->cl[i].peer.uid = cred.uid;
		s->cl[i].peer.gid = cred.gid;
		s->cl[i].peer.role = (cred.uid == 0 || cred.uid == geteuid() ||
				      cred.gid == s->sock_gid) ? CTL_ADMIN : CTL_READONLY;
	}
}

int ctl_server_poll(struct ctl_server *s, int timeout_ms)
{
	struct pollfd pfd[CTL_MAX_CLIENTS + 1];
	int idx[CTL_MAX_CLIENTS + 1];
	int n = 0, i, served = 0, rc;

	pfd[n].fd = s->fd;
	pfd[n].events = POLLIN;
	idx[n++] = -1;
	for (i = 0; i < CTL_MAX_CLIENTS; i++) {
		if (s->cl[i].fd < 0)
			continue;
		pfd[n].fd = s->cl[i].fd;
		pfd[n].events = (s->cl[i].closing ? 0 : POLLIN) |
				(s->cl[i].outlen ? POLLOUT : 0);
		idx[n++] = i;
	}
	rc = poll(pfd, (nfds_t)n, timeout_ms);
	if (rc < 0)
		return errno == EINTR ? 0 : -errno;
	for (i = 1; i < n; i++) {
		struct client *c = &s->cl[idx[i]];

		if (pfd[i].revents & POLLOUT)
			client_flush(c);
		if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
			char buf[16384];
			ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
				client_drop(c);
				continue;
			}
			if (r > 0 && buf_append(&c->in, &c->inlen, &c->incap, buf,
						(size_t)r, CTL_MAX_FRAME + sizeof(buf)) < 0) {
				client_drop(c);
				continue;
			}
			c->last = time(NULL);
			served += client_serve(s, c);
		}
		if (c->fd >= 0 && ((c->closing && c->outlen == 0) ||
				   time(NULL) - c->last > IDLE_SECONDS))
			client_drop(c);
	}
	if (pfd[0].revents & POLLIN)
		client_accept(s);
	return served;
}

struct ctl_server *ctl_server_open(const char *path,
				   const struct ctl_command *cmds,
				   size_t ncmds, void *ctx)
{
	struct sockaddr_un sa;
	struct ctl_server *s;
	struct stat st;
	int fd, err, i;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (path == NULL || strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	strcpy(sa.sun_path, path);
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->fd = -1;
	for (i = 0; i < CTL_MAX_CLIENTS; i++)
		s->cl[i].fd = -1;
	s->cmds = cmds;
	s->ncmds = ncmds;
	s->ctx = ctx;
	s->path = strdup(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || s->path == NULL)
		goto fail;
	s->fd = fd;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int probe;

		if (errno != EADDRINUSE)
			goto fail;
		/* A stale socket from a crash is replaced; a live one is not. */
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			errno = EADDRINUSE;
			goto fail;
		}
		if (probe >= 0)
			close(probe);
		/* Only a dead socket is ours to replace: a mistyped path must
		 * never cost the operator a regular file. */
		if (lstat(path, &st) < 0)
			goto fail;
		if (!S_ISSOCK(st.st_mode)) {
			errno = EEXIST;
			goto fail;
		}
		if (unlink(path) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto fail;
	}
	if (chmod(path, 0660) < 0 || stat(path, &st) < 0 || listen(fd, 16) < 0)
		goto fail;
	s->sock_gid = st.st_gid;
	return s;
fail:
	err = errno;
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	free(s);
	errno = err;
	return NULL;
}

void ctl_server_close(struct ctl_server *s)
{
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < CTL_MAX_CLIENTS; i++)
		if (s->cl[i].fd >= 0)
			client_drop(&s->cl[i]);
	close(s->fd);
	unlink(s->path);
	free(s->path);
	free(s);
}

/* ---- client ------------------------------------------------------------ */

static long ms_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000 +
	       (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

json_t *ctl_call(const char *path, const char *cmd, json_t *args,
		 int timeout_ms)
{
	struct sockaddr_un sa;
	struct timespec deadline;
	json_t *req, *reply = NULL;
	char *line = NULL, *in = NULL, *nl;
	size_t inlen = 0, incap = 0, off = 0, len;
	int fd = -1, err = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	strcpy(sa.sun_path, path);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L)
		deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;

	/* "o" steals the reference: give it one of its own */
	req = json_pack("{s:i, s:i, s:s, s:o}", "v", CTL_VERSION, "id", 1, "cmd",
			cmd, "args", args ? json_incref(args) : json_object());
	in = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (in == NULL) {
		err = ENOMEM;
		goto out;
	}
	len = strlen(in);
	line = malloc(len + 1);
	if (line == NULL) {
		err = ENOMEM;
		goto out;
	}
	memcpy(line, in, len);
	line[len++] = '\n';
	free(in);
	in = NULL;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = errno;
		goto out;
	}
	while (off < len) {
		ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			goto out;
		}
		off += (size_t)n;
	}
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		char buf[16384];
		long left = ms_left(&deadline);
		ssize_t n;

		if (left <= 0) {
			err = ETIMEDOUT;
			goto out;
		}
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0) {
			err = n == 0 ? EPROTO : errno;
			if (err == EINTR)
				continue;
			goto out;
		}
		if (buf_append(&in, &inlen, &incap, buf, (size_t)n, 64u << 20) < 0) {
			err = EPROTO;
			goto out;
		}
		nl = memchr(in, '\n', inlen);
		if (nl) {
			reply = json_loadb(in, (size_t)(nl - in), 0, NULL);
			if (reply == NULL || !json_is_object(reply)) {
				json_decref(reply);
				reply = NULL;
				err = EPROTO;
			}
			goto out;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(line);
	free(in);
	if (reply == NULL)
		errno = err ? err : EPROTO;
	return reply;
}
