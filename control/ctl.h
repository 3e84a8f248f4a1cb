/*
 * ctl.h - the mxedge control protocol: typed, framed JSON requests over a
 * Unix stream socket, and the server and client ends of it.
 *
 * Framing: one JSON object per line (newline-delimited JSON), at most
 * CTL_MAX_FRAME bytes. Version 1 (docs/CONTROL.md):
 *   request  {"v":1, "id":<int>, "cmd":"<name>", "args":{...}}
 *   reply    {"v":1, "id":<same>, "ok":true,  "result":<any>}
 *            {"v":1, "id":<same>, "ok":false, "error":{"code":"<word>",
 *                                                      "message":"<text>"}}
 * A malformed frame gets an error reply (code "bad_request"), never a
 * crash or a dropped connection without a word.
 *
 * Roles: a peer whose SO_PEERCRED uid is 0 or the socket owner's, or whose
 * gid is the socket's group, is "admin"; anyone else who can connect is
 * "read-only" and may only run commands marked read-only.
 */
#ifndef MXEDGE_CTL_H
#define MXEDGE_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#define CTL_VERSION 1
#define CTL_MAX_FRAME (1u << 20)
#define CTL_MAX_CLIENTS 32

enum ctl_role { CTL_READONLY = 0, CTL_ADMIN = 1 };

/* Who sent a request (for permission checks and the audit log). */
struct ctl_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	enum ctl_role role;
};

/*
 * A command handler. @args is the request's "args" object (never NULL; {}
 * when absent). On success return 0 and set *result (a new reference, or
 * NULL for null); on failure return -1 and set *code (a static word such as
 * "bad_args", "not_found") and *msg (a new string the server frees).
 */
typedef int (*ctl_handler)(void *ctx, const struct ctl_peer *peer,
			   json_t *args, json_t **result, const char **code,
			   char **msg);

struct ctl_command {
	const char *name;       /* e.g. "blocklist.add" */
	bool admin;             /* true: admin role required */
	ctl_handler fn;
	const char *help;       /* one line for "help" */
};

struct ctl_server;

/*
 * ctl_server_open - listen on @path (an existing socket file is replaced
 * only if nothing answers on it), mode 0660. @cmds is an array of @ncmds
 * commands, borrowed for the server's lifetime; "help" is built in.
 * Returns the server or NULL with errno set.
 */
struct ctl_server *ctl_server_open(const char *path,
				   const struct ctl_command *cmds,
				   size_t ncmds, void *ctx);

/*
 * ctl_server_poll - accept connections and serve complete requests, waiting
 * at most @timeout_ms (0 = do not wait). Never blocks on a slow client: a
 * client whose replies cannot be written is dropped. Returns the number of
 * requests served, or -errno on a fatal error.
 */
int ctl_server_poll(struct ctl_server *s, int timeout_ms);

/* ctl_server_close - close everything and unlink the socket. NULL ok. */
void ctl_server_close(struct ctl_server *s);

/*
 * ctl_handle_frame - the server's request logic on one frame (exposed for
 * tests and the fuzzer): parses @frame (@len bytes, without newline),
 * checks version, command and role, runs the handler and returns the reply
 * object (new reference; never NULL unless out of memory).
 */
json_t *ctl_handle_frame(const struct ctl_command *cmds, size_t ncmds,
			 void *ctx, const struct ctl_peer *peer,
			 const char *frame, size_t len);

/*
 * ctl_call - client: connect to @path, send {"cmd": @cmd, "args": @args}
 * (args may be NULL; borrowed), wait up to @timeout_ms for the reply.
 * Returns the reply object (new reference) or NULL with errno set
 * (ECONNREFUSED/ENOENT: nothing listening; ETIMEDOUT; EPROTO: bad reply).
 */
json_t *ctl_call(const char *path, const char *cmd, json_t *args,
		 int timeout_ms);

#endif /* MXEDGE_CTL_H */
