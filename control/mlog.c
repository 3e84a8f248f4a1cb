/*
 * mlog.c - levelled diagnostic log (mlog.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mlog.h"

static const char *const names[MLOG_NLEVELS] = { "error", "warning", "info", "debug" };
static int cur_level = MLOG_INFO;
static const char *prog_name = "mxedge";

int mlog_parse(const char *name)
{
	if (name == NULL)
		return -EINVAL;
	for (int i = 0; i < MLOG_NLEVELS; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -EINVAL;
}

const char *mlog_name(int level)
{
	return level >= 0 && level < MLOG_NLEVELS ? names[level] : "?";
}

void mlog_init(const char *prog)
{
	if (prog != NULL)
		prog_name = prog;
}

void mlog_set_level(int level)
{
	if (level >= 0 && level < MLOG_NLEVELS)
		__atomic_store_n(&cur_level, level, __ATOMIC_RELAXED);
}

int mlog_level(void)
{
	return __atomic_load_n(&cur_level, __ATOMIC_RELAXED);
}

bool mlog_on(int level)
{
	return level <= mlog_level();
}

void mlog(int level, const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	if (!mlog_on(level))
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (level == MLOG_INFO)
		fprintf(stderr, "%s: %s\n", prog_name, text);
	else
		fprintf(stderr, "%s: %s: %s\n", prog_name, mlog_name(level), text);
}
