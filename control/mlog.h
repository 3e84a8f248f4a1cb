/*
 * mlog.h - the diagnostic log of mxedge's processes (the dataplane and
 * mxedge-control): operational messages on stderr, filtered by a level the
 * operator changes live (log.level; `mxedgectl log level LEVEL`).
 *
 * The mail logs (the dataplane's reception log, the relay's delivery log)
 * are not filtered: pflogsumm and the operator's tooling count on every
 * line of them. The level is one process-wide integer read with a relaxed
 * atomic load, so checking it costs nothing on any thread.
 */
#ifndef MXEDGE_MLOG_H
#define MXEDGE_MLOG_H

#include <stdbool.h>

/* Most to least severe; a level shows its own lines and the ones above. */
enum mlog_level { MLOG_ERROR = 0, MLOG_WARNING, MLOG_INFO, MLOG_DEBUG };
#define MLOG_NLEVELS 4

/* mlog_parse - "error", "warning", "info" or "debug" (case-sensitive, as
 * in the config file). Returns the level, or -EINVAL for anything else
 * (NULL included). */
int mlog_parse(const char *name);

/* mlog_name - the level's name ("info"); "?" out of range. Static string. */
const char *mlog_name(int level);

/* mlog_init - the program name lines start with (borrowed; a string
 * literal). Before the call lines start with "mxedge". */
void mlog_init(const char *prog);

/* mlog_set_level / mlog_level - the running level (default MLOG_INFO).
 * An out-of-range @level is ignored. Safe from any thread. */
void mlog_set_level(int level);
int mlog_level(void);

/* mlog_on - would a line at @level be written now? For callers that would
 * otherwise format an expensive message for nothing. */
bool mlog_on(int level);

/*
 * mlog - write "PROG: [LEVEL: ]TEXT\n" to stderr when @level is enabled
 * (info lines carry no tag, like Postfix's). One fprintf: lines of threads
 * do not interleave. Not for the per-packet path (stdio takes a lock).
 */
void mlog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* MXEDGE_MLOG_H */
