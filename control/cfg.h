/*
 * cfg.h - the mxedge configuration file (YAML, parsed with libyaml).
 *
 * One file configures an edge process; docs/CONFIG.md documents every key.
 * Every error names FILE:LINE:COLUMN and what was expected; unknown keys are
 * errors (a typo must not silently fall back to a default).
 */
#ifndef MXEDGE_CFG_H
#define MXEDGE_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CFG_MAX_LISTEN 8

enum cfg_io { CFG_IO_DPDK = 0, CFG_IO_KERNEL = 1 };

/* A list entry kept as text with where it came from, so the component that
 * applies it (e.g. the prefix tables) can report FILE:LINE on a bad value. */
struct cfg_entry {
	char text[256];
	unsigned line;
};

struct cfg_domain {
	char name[254];
	uint64_t max_size;   /* 0 = the global limit */
	unsigned line;
};

struct cfg {
	char source[256];            /* file name, for messages */
	char hostname[254];
	enum cfg_io io;
	char port[128];              /* DPDK port "KIND:NAME" */
	unsigned queues;
	char listen[CFG_MAX_LISTEN][64];
	unsigned nlisten;
	char spool_dir[256];
	unsigned spool_segment_mb;
	char control_socket[108];
	uint64_t max_message_size;
	unsigned max_sessions;
	unsigned max_recipients;
	unsigned max_errors;
	unsigned command_timeout_s;
	unsigned data_timeout_s;
	bool bare_lf_normalise;
	bool chunking;
	bool smtputf8;
	struct cfg_domain *domains;
	size_t ndomains;
	struct cfg_entry *blocklist;
	size_t nblocklist;
	struct cfg_entry *allowlist;
	size_t nallowlist;
};

/* cfg_defaults - the embedded default configuration (docs/CONFIG.md). */
void cfg_defaults(struct cfg *c);

/*
 * cfg_load - parse @len bytes of YAML @text named @source into @c (which
 * starts from cfg_defaults()). Returns 0, or -EINVAL with a message
 * "SOURCE:LINE:COL: ..." in @err (@errlen bytes), or -ENOMEM. On error @c
 * holds nothing that needs freeing beyond cfg_free().
 */
int cfg_load(const char *source, const char *text, size_t len, struct cfg *c,
	     char *err, size_t errlen);

/* cfg_load_file - cfg_load() on a file; I/O errors are reported as
 * "PATH: strerror" with the -errno returned. */
int cfg_load_file(const char *path, struct cfg *c, char *err, size_t errlen);

/* cfg_free - free the lists of @c (the struct itself is the caller's). */
void cfg_free(struct cfg *c);

#endif /* MXEDGE_CFG_H */
