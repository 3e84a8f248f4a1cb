/*
 * Control protocol tests: every malformed request gets a clear error reply
 * (and the server keeps serving), roles are enforced, replies carry the
 * request id, and a real socket round trip works with pipelined requests,
 * a client that never reads, and an oversized frame.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "../ctl.h"
#include "../mlog.h"

static int h_echo(void *ctx, const struct ctl_peer *peer, json_t *args,
		  json_t **result, const char **code, char **msg)
{
	(*(int *)ctx)++;
	*result = json_deep_copy(args);
	return 0;
}

static int h_fail(void *ctx, const struct ctl_peer *peer, json_t *args,
		  json_t **result, const char **code, char **msg)
{
	*code = "not_found";
	*msg = strdup("no such thing");
	return -1;
}

static const struct ctl_command cmds[] = {
	{ "echo", false, h_echo, "echo the args" },
	{ "set", true, h_echo, "admin only" },
	{ "fail", false, h_fail, "always fails" },
};
static const struct ctl_peer admin = { 1, 0, 0, CTL_ADMIN };
static const struct ctl_peer ro = { 1, 1000, 1000, CTL_READONLY };

static json_t *frame(const struct ctl_peer *peer, const char *s, int *calls)
{
	json_t *r = ctl_handle_frame(cmds, 3, calls, peer, s, strlen(s));

	assert_non_null(r);
	assert_int_equal(json_integer_value(json_object_get(r, "v")), 1);
	return r;
}

static void expect_error(const struct ctl_peer *peer, const char *req,
			 const char *code, const char *msg_part)
{
	int calls = 0;
	json_t *r = frame(peer, req, &calls);
	json_t *e = json_object_get(r, "error");

	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	if (msg_part && !strstr(json_string_value(json_object_get(e, "message")), msg_part))
		fail_msg("message '%s' lacks '%s'",
			 json_string_value(json_object_get(e, "message")), msg_part);
	assert_int_equal(calls, 0);
	json_decref(r);
}

static void test_errors(void **state)
{
	expect_error(&admin, "{not json", "bad_request", "invalid JSON at column");
	expect_error(&admin, "[1,2]", "bad_request", "JSON object");
	expect_error(&admin, "{\"cmd\":\"echo\"}", "bad_version", "\"v\" must be 1");
	expect_error(&admin, "{\"v\":2,\"cmd\":\"echo\"}", "bad_version", NULL);
	expect_error(&admin, "{\"v\":1}", "bad_request", "\"cmd\"");
	expect_error(&admin, "{\"v\":1,\"cmd\":7}", "bad_request", "\"cmd\"");
	expect_error(&admin, "{\"v\":1,\"cmd\":\"echo\",\"args\":[1]}", "bad_request", "\"args\"");
	expect_error(&admin, "{\"v\":1,\"cmd\":\"nope\"}", "unknown_command", "try \"help\"");
	expect_error(&admin, "{\"v\":1,\"cmd\":\"echo\",\"cmd\":\"set\"}", "bad_request", "duplicate");
	expect_error(&ro, "{\"v\":1,\"cmd\":\"set\"}", "permission_denied", "admin role");
	expect_error(&admin, "{\"v\":1,\"cmd\":\"fail\"}", "not_found", "no such thing");
	expect_error(&admin, "", "bad_request", NULL);
	expect_error(&admin, "{\"v\":1,\"cmd\":\"echo\"} trailing", "bad_request", NULL);
	/* a long non-ASCII name: the echoed part is cut on a character
	 * boundary, so the reply still encodes */
	expect_error(&admin, "{\"v\":1,\"cmd\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\u00e9\u00e9\"}",
		     "unknown_command", "try \"help\"");
	expect_error(&ro, "{\"v\":1,\"cmd\":\"\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac\"}",
		     "unknown_command", NULL);
}

static void test_success_and_ids(void **state)
{
	int calls = 0;
	json_t *r;

	r = frame(&admin, "{\"v\":1,\"id\":42,\"cmd\":\"echo\",\"args\":{\"a\":1}}", &calls);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 42);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "result"), "a")), 1);
	json_decref(r);
	/* read-only peers may run read-only commands; args default to {} */
	r = frame(&ro, "{\"v\":1,\"id\":\"x\",\"cmd\":\"echo\"}", &calls);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(r, "id")), "x");
	assert_true(json_is_object(json_object_get(r, "result")));
	json_decref(r);
	assert_int_equal(calls, 2);
	/* help lists every command with its role */
	r = frame(&ro, "{\"v\":1,\"cmd\":\"help\"}", &calls);
	assert_int_equal(json_array_size(json_object_get(r, "result")), 4);
	assert_string_equal(json_string_value(json_object_get(
		json_array_get(json_object_get(r, "result"), 2), "role")), "admin");
	json_decref(r);
}

/* ---- real socket ---- */

static char sockpath[108];
static atomic_bool stop_server;

static void *server_thread(void *arg)
{
	struct ctl_server *s = arg;
	int calls = 0;

	(void)calls;
	while (!atomic_load(&stop_server))
		if (ctl_server_poll(s, 20) < 0)
			return NULL;
	return s;
}

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sa.sun_path, sockpath);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static char *read_lines(int fd, int want)
{
	static char buf[65536];
	size_t len = 0;
	int lines = 0;

	while (lines < want) {
		ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);

		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			lines += buf[len + (size_t)i] == '\n';
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

static void test_socket(void **state)
{
	static int calls;
	struct ctl_server *s, *s2;
	pthread_t th;
	json_t *r, *args;
	void *ret;
	char *big;
	int fd, hog;

	snprintf(sockpath, sizeof(sockpath), "/tmp/mxt-ctl.%d.sock", getpid());
	unlink(sockpath);
	s = ctl_server_open(sockpath, cmds, 3, &calls);
	assert_non_null(s);
	/* a second server on a live socket is refused, not stolen */
	s2 = ctl_server_open(sockpath, cmds, 3, &calls);
	assert_null(s2);
	assert_int_equal(errno, EADDRINUSE);
	atomic_store(&stop_server, false);
	assert_int_equal(pthread_create(&th, NULL, server_thread, s), 0);

	/* a client that connects and never reads must not block others */
	hog = raw_connect();
	args = json_pack("{s:s}", "k", "v");
	r = ctl_call(sockpath, "echo", args, 5000);
	json_decref(args);
	assert_non_null(r);
	assert_string_equal(json_string_value(json_object_get(json_object_get(r, "result"), "k")), "v");
	json_decref(r);

	/* three pipelined requests in one write: three replies, in order */
	fd = raw_connect();
	const char *three = "{\"v\":1,\"id\":1,\"cmd\":\"echo\"}\n"
			    "garbage\n"
			    "{\"v\":1,\"id\":3,\"cmd\":\"fail\"}\n";
	assert_int_equal(write(fd, three, strlen(three)), (ssize_t)strlen(three));
	char *out = read_lines(fd, 3);
	assert_non_null(strstr(out, "\"id\":1,\"ok\":true"));
	assert_non_null(strstr(out, "bad_request"));
	assert_non_null(strstr(out, "\"id\":3,\"ok\":false"));
	assert_true(strstr(out, "\"id\":1") < strstr(out, "bad_request"));
	close(fd);

	/* an oversized frame gets a clear error and the connection closes */
	fd = raw_connect();
	big = malloc(CTL_MAX_FRAME + 100000);
	memset(big, 'x', CTL_MAX_FRAME + 100000);
	{
		size_t off = 0;
		while (off < CTL_MAX_FRAME + 100000) {
			ssize_t n = send(fd, big + off, CTL_MAX_FRAME + 100000 - off, MSG_NOSIGNAL);
			if (n <= 0)
				break;
			off += (size_t)n;
		}
	}
	free(big);
	out = read_lines(fd, 1);
	assert_non_null(strstr(out, "frame_too_large"));
	close(fd);

	/* the server still answers */
	r = ctl_call(sockpath, "help", NULL, 5000);
	assert_non_null(r);
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	close(hog);

	atomic_store(&stop_server, true);
	assert_int_equal(pthread_join(th, &ret), 0);
	assert_non_null(ret);
	ctl_server_close(s);
	assert_int_equal(access(sockpath, F_OK), -1);   /* socket removed */
	/* a regular file at the socket path is never replaced */
	{
		char path[128];
		FILE *f;

		snprintf(path, sizeof(path), "/tmp/mxt-ctl.%d.txt", getpid());
		f = fopen(path, "w");
		fputs("precious", f);
		fclose(f);
		assert_null(ctl_server_open(path, cmds, 3, &calls));
		assert_int_equal(errno, EEXIST);
		f = fopen(path, "r");
		assert_non_null(f);
		fclose(f);
		unlink(path);
	}
	/* nothing listening: a clear errno for the CLI */
	assert_null(ctl_call(sockpath, "help", NULL, 1000));
	assert_int_equal(errno, ENOENT);
}

/* Runs @fn with stderr captured; returns what it wrote (static buffer). */
static const char *captured(void (*fn)(void))
{
	static char buf[4096];
	FILE *tmp = tmpfile();
	int saved = dup(2);
	size_t n;

	assert_non_null(tmp);
	fflush(stderr);
	assert_int_equal(dup2(fileno(tmp), 2), 2);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	n = fread(buf, 1, sizeof(buf) - 1, tmp);
	buf[n] = '\0';
	fclose(tmp);
	return buf;
}

static void log_all(void)
{
	mlog(MLOG_ERROR, "e%d", 1);
	mlog(MLOG_WARNING, "w");
	mlog(MLOG_INFO, "i");
	mlog(MLOG_DEBUG, "d");
}

static void one_request(void)
{
	json_decref(frame(&admin, "{\"v\":1,\"cmd\":\"fail\"}", NULL));
}

/* The diagnostic log writes a level's lines and the more severe ones;
 * a request is a debug line (with who and the outcome). */
static void test_log_levels(void **state)
{
	assert_int_equal(mlog_parse("debug"), MLOG_DEBUG);
	assert_int_equal(mlog_parse("error"), MLOG_ERROR);
	assert_int_equal(mlog_parse("Debug"), -EINVAL);
	assert_int_equal(mlog_parse(NULL), -EINVAL);
	assert_string_equal(mlog_name(MLOG_WARNING), "warning");
	assert_string_equal(mlog_name(9), "?");
	mlog_init("mxtest");
	assert_int_equal(mlog_level(), MLOG_INFO);
	assert_string_equal(captured(log_all), "mxtest: error: e1\nmxtest: warning: w\nmxtest: i\n");
	mlog_set_level(MLOG_DEBUG);
	assert_string_equal(captured(log_all),
			    "mxtest: error: e1\nmxtest: warning: w\nmxtest: i\nmxtest: debug: d\n");
	assert_string_equal(captured(one_request),
			    "mxtest: debug: control: fail from uid 0 pid 1: not_found\n");
	mlog_set_level(MLOG_ERROR);
	assert_string_equal(captured(log_all), "mxtest: error: e1\n");
	assert_string_equal(captured(one_request), "");
	mlog_set_level(7); /* ignored */
	assert_int_equal(mlog_level(), MLOG_ERROR);
	mlog_set_level(MLOG_INFO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_success_and_ids),
		cmocka_unit_test(test_socket),
		cmocka_unit_test(test_log_levels),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
