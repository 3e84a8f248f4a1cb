/*
 * spool.c - durable message spool with group commit (see spool.h).
 *
 * Threads: each writer is used by exactly one thread (a dataplane lcore);
 * one sync thread per spool. They share, per writer, a single-producer
 * single-consumer byte ring and three offsets:
 *   head    - published by the writer after each whole record (release)
 *   tail    - bytes the sync thread has written to the file; ring space
 *             below it may be reused (release)
 *   durable - bytes covered by a completed fdatasync (release)
 * All offsets are logical stream offsets of that writer (they never wrap);
 * the ring index is offset & mask.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "spool.h"

#define REC_MAGIC 0x3152584dU /* "MXR1" little-endian */
enum rec_type { REC_BEGIN = 1, REC_DATA = 2, REC_END = 3, REC_ABORT = 4 };

/* On-disk record header; little-endian (x86-64, arm64 are). */
struct rec_hdr {
	uint32_t magic;
	uint8_t type;
	uint8_t pad[3];
	uint32_t len;  /* payload bytes */
	uint32_t crc;  /* CRC32 of header (crc = 0) and payload */
	uint64_t qid;
};
_Static_assert(sizeof(struct rec_hdr) == 24, "record header layout");

/* Largest payload of any record: a BEGIN holds at most 6 + 3 * nrcpt
 * strings; bound it so a corrupt length is recognised at once. */
#define REC_MAX_PAYLOAD (16u * 1024u * 1024u)
/* Largest encoded envelope (BEGIN payload): 1000 recipients of 256-byte
 * addresses with DSN parameters fit comfortably. */
#define ENV_MAX (1u << 20)
#define STR_ABSENT 0xffffu

/* Queue id layout: ms since 2020-01-01 (42 bits) | writer (7) | seq (15). */
#define QID_EPOCH_MS 1577836800000ULL
#define QID_WRITER_BITS 7
#define QID_SEQ_BITS 15
#define QID_SEQ_MAX ((1u << QID_SEQ_BITS) - 1)

struct spool_writer {
	/* Writer-thread state. */
	uint64_t wpos;          /* next byte to write; head lags until a record ends */
	uint64_t qid_ms;        /* queue-id clock (ms since QID_EPOCH_MS) */
	uint32_t qid_seq;
	unsigned idx;
	unsigned char *ring;
	uint64_t mask;
	unsigned char *scratch; /* BEGIN payload encoding, ENV_MAX bytes */
	_Atomic uint64_t full;

	_Alignas(64) _Atomic uint64_t head;
	_Alignas(64) _Atomic uint64_t tail;
	_Atomic uint64_t durable;
	_Atomic int error;      /* 0 or -errno, set once by the sync thread */
	_Atomic uint64_t syncs;
	_Atomic uint64_t sync_ns_max;

	/* Published durable offset, shared with reader processes (see
	 * struct spool_durfile); NULL until spool_open() maps it. */
	struct spool_durfile *pub;

	/* Sync-thread state. */
	_Alignas(64) int fd;
	uint64_t seg_start;     /* stream offset of the current segment's byte 0 */
};

/*
 * DIR/w<writer>.durable: one page, mmap()ed shared by the spool owner and
 * by reader processes (the control plane). The sync thread stores the
 * writer's durable stream offset after each completed fdatasync; readers
 * parse only records that end at or below it, so they never relay bytes
 * that a crash could still take back. The file itself is never synced: the
 * kernel can only write back a value that was stored after the data it
 * covers was synced, so whatever a reader finds, even after a power loss,
 * is at most what is really on disk.
 */
#define DURFILE_MAGIC 0x3144584dU /* "MXD1" */
struct spool_durfile {
	uint32_t magic;
	uint32_t version;
	_Atomic uint64_t durable;
	/* fdatasync latency, for the control plane's metrics. Appended in
	 * version 1's page: a file from an older writer reads as zeros. */
	_Atomic uint64_t sync_count;
	_Atomic uint64_t sync_ns_sum;
	_Atomic uint64_t sync_bucket[SPOOL_SYNC_BUCKETS];
};
#define DURFILE_SIZE 4096

struct spool {
	char *dir;
	int dirfd;
	int lockfd;      /* DIR/.lock, flock()ed for the spool's lifetime */
	unsigned nwriters;
	uint64_t segment_bytes;
	unsigned idle_poll_us;
	pthread_t sync_thread;
	bool thread_started;
	_Atomic bool stop;
	struct spool_writer *w[SPOOL_MAX_WRITERS];
};

/* ---- queue ids -------------------------------------------------------- */

static const char b62[] =
	"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void spool_qid_format(uint64_t qid, char *out)
{
	int i;

	/* Fixed width, most significant digit first: text order = id order. */
	for (i = SPOOL_QID_LEN - 1; i >= 0; i--) {
		out[i] = b62[qid % 62];
		qid /= 62;
	}
	out[SPOOL_QID_LEN] = '\0';
}

int spool_qid_parse(const char *s, uint64_t *qid)
{
	unsigned __int128 v = 0;
	const char *p;
	int i;

	for (i = 0; i < SPOOL_QID_LEN; i++) {
		if (s[i] == '\0' || (p = strchr(b62, s[i])) == NULL)
			return -EINVAL;
		v = v * 62 + (unsigned)(p - b62);
	}
	if (s[SPOOL_QID_LEN] != '\0' || v > UINT64_MAX)
		return -EINVAL;
	*qid = (uint64_t)v;
	return 0;
}

uint64_t spool_qid_new(struct spool_writer *w, uint64_t now_ms)
{
	uint64_t ms = now_ms > QID_EPOCH_MS ? now_ms - QID_EPOCH_MS : 0;

	if (ms > w->qid_ms) {
		w->qid_ms = ms;
		w->qid_seq = 0;
	} else if (w->qid_seq == QID_SEQ_MAX) {
		/* More than 32768 ids in one ms, or the clock went back: run
		 * the id clock ahead rather than ever repeat an id. */
		w->qid_ms++;
		w->qid_seq = 0;
	} else {
		w->qid_seq++;
	}
	return (w->qid_ms << (QID_WRITER_BITS + QID_SEQ_BITS)) |
	       ((uint64_t)w->idx << QID_SEQ_BITS) | w->qid_seq;
}

static uint64_t qid_ms_of(uint64_t qid)
{
	return qid >> (QID_WRITER_BITS + QID_SEQ_BITS);
}

/* ---- writer side: records into the ring ------------------------------ */

static uint64_t ring_free(const struct spool_writer *w)
{
	uint64_t tail = atomic_load_explicit(&w->tail, memory_order_acquire);

	return (w->mask + 1) - (w->wpos - tail);
}

static void ring_put(struct spool_writer *w, const void *p, size_t n)
{
	uint64_t at = w->wpos & w->mask;
	size_t first = (size_t)(w->mask + 1 - at);

	if (first >= n) {
		memcpy(w->ring + at, p, n);
	} else {
		memcpy(w->ring + at, p, first);
		memcpy(w->ring, (const unsigned char *)p + first, n - first);
	}
	w->wpos += n;
}

/* Appends one record whose payload is the concatenation of @iov (cnt
 * pieces); all-or-nothing. The caller has checked ring space. */
struct piece {
	const void *p;
	size_t n;
};

static void put_record(struct spool_writer *w, uint8_t type, uint64_t qid,
		       const struct piece *pc, unsigned cnt)
{
	struct rec_hdr h;
	uLong crc;
	size_t len = 0;
	unsigned i;

	for (i = 0; i < cnt; i++)
		len += pc[i].n;
	memset(&h, 0, sizeof(h));
	h.magic = REC_MAGIC;
	h.type = type;
	h.len = (uint32_t)len;
	h.qid = qid;
	crc = crc32(0L, (const Bytef *)&h, sizeof(h));
	for (i = 0; i < cnt; i++)
		crc = crc32_z(crc, pc[i].p, pc[i].n);
	h.crc = (uint32_t)crc;
	ring_put(w, &h, sizeof(h));
	for (i = 0; i < cnt; i++)
		ring_put(w, pc[i].p, pc[i].n);
}

static void publish(struct spool_writer *w)
{
	atomic_store_explicit(&w->head, w->wpos, memory_order_release);
}

static int writer_check(struct spool_writer *w, size_t need)
{
	int err = atomic_load_explicit(&w->error, memory_order_relaxed);

	if (err)
		return err;
	if (ring_free(w) < need) {
		atomic_fetch_add_explicit(&w->full, 1, memory_order_relaxed);
		return -EAGAIN;
	}
	return 0;
}

/* Envelope encoding: u64 arrival_us, 6 strings, u32 nrcpt, 3 strings per
 * recipient. A string is u16 length (0xffff = absent) + bytes. */
static size_t str_size(const char *s)
{
	return 2 + (s ? strlen(s) : 0);
}

static unsigned char *put_str(unsigned char *p, const char *s)
{
	uint16_t n = s ? (uint16_t)strlen(s) : STR_ABSENT;

	memcpy(p, &n, 2);
	p += 2;
	if (s) {
		memcpy(p, s, n);
		p += n;
	}
	return p;
}

static bool str_ok(const char *s)
{
	return s == NULL || strlen(s) < STR_ABSENT;
}

int spool_begin(struct spool_writer *w, struct spool_msg *m, uint64_t qid,
		const struct spool_envelope *env)
{
	const char *f[6];
	size_t len = 8 + 4, i;
	unsigned char *buf, *p;
	struct piece pc;
	int rc;

	if (env == NULL || env->mail_from == NULL || qid == 0 ||
	    (env->nrcpt && env->rcpts == NULL))
		return -EINVAL;
	f[0] = env->client_addr; f[1] = env->client_name; f[2] = env->helo;
	f[3] = env->tls; f[4] = env->mail_from; f[5] = env->mail_params;
	for (i = 0; i < 6; i++) {
		if (!str_ok(f[i]))
			return -EINVAL;
		len += str_size(f[i]);
	}
	for (i = 0; i < env->nrcpt; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];

		if (r->addr == NULL || !str_ok(r->addr) || !str_ok(r->notify) ||
		    !str_ok(r->orcpt))
			return -EINVAL;
		len += str_size(r->addr) + str_size(r->notify) + str_size(r->orcpt);
	}
	/* an envelope the ring can never hold would wait forever */
	if (len > ENV_MAX || len + sizeof(struct rec_hdr) > (w->mask + 1) / 2)
		return -E2BIG;
	rc = writer_check(w, sizeof(struct rec_hdr) + len);
	if (rc)
		return rc;
	buf = p = w->scratch;
	memcpy(p, &env->arrival_us, 8);
	p += 8;
	for (i = 0; i < 6; i++)
		p = put_str(p, f[i]);
	memcpy(p, &env->nrcpt, 4);
	p += 4;
	for (i = 0; i < env->nrcpt; i++) {
		p = put_str(p, env->rcpts[i].addr);
		p = put_str(p, env->rcpts[i].notify);
		p = put_str(p, env->rcpts[i].orcpt);
	}
	pc.p = buf;
	pc.n = len;
	put_record(w, REC_BEGIN, qid, &pc, 1);
	publish(w);
	m->qid = qid;
	m->len = 0;
	m->chunks = 0;
	return 0;
}

int spool_data(struct spool_writer *w, struct spool_msg *m, const void *buf,
	       size_t len)
{
	size_t nrec = (len + SPOOL_CHUNK_MAX - 1) / SPOOL_CHUNK_MAX, off = 0;
	struct piece pc;
	int rc;

	if (len > (w->mask + 1) / 2)
		return -EINVAL;
	if (len == 0)
		return atomic_load_explicit(&w->error, memory_order_relaxed);
	rc = writer_check(w, len + nrec * sizeof(struct rec_hdr));
	if (rc)
		return rc;
	while (off < len) {
		pc.p = (const unsigned char *)buf + off;
		pc.n = len - off < SPOOL_CHUNK_MAX ? len - off : SPOOL_CHUNK_MAX;
		put_record(w, REC_DATA, m->qid, &pc, 1);
		off += pc.n;
		m->chunks++;
	}
	m->len += len;
	publish(w);
	return 0;
}

int spool_end(struct spool_writer *w, struct spool_msg *m, uint64_t *commit_off)
{
	unsigned char payload[12];
	struct piece pc = { payload, sizeof(payload) };
	int rc;

	rc = writer_check(w, sizeof(struct rec_hdr) + sizeof(payload));
	if (rc)
		return rc;
	memcpy(payload, &m->len, 8);
	memcpy(payload + 8, &m->chunks, 4);
	put_record(w, REC_END, m->qid, &pc, 1);
	publish(w);
	*commit_off = w->wpos;
	return 0;
}

int spool_abort(struct spool_writer *w, struct spool_msg *m)
{
	int rc = writer_check(w, sizeof(struct rec_hdr));

	if (rc)
		return rc;
	put_record(w, REC_ABORT, m->qid, NULL, 0);
	publish(w);
	return 0;
}

bool spool_durable(const struct spool_writer *w, uint64_t off)
{
	return atomic_load_explicit(&w->durable, memory_order_acquire) >= off;
}

uint64_t spool_durable_offset(const struct spool_writer *w)
{
	return atomic_load_explicit(&w->durable, memory_order_acquire);
}

int spool_writer_error(const struct spool_writer *w)
{
	return atomic_load_explicit(&w->error, memory_order_acquire);
}

void spool_writer_stats(const struct spool_writer *w,
			struct spool_writer_stats *st)
{
	st->appended = atomic_load_explicit(&w->head, memory_order_relaxed);
	st->durable = atomic_load_explicit(&w->durable, memory_order_relaxed);
	st->syncs = atomic_load_explicit(&w->syncs, memory_order_relaxed);
	st->full = atomic_load_explicit(&w->full, memory_order_relaxed);
	st->sync_ns_max = atomic_load_explicit(&w->sync_ns_max, memory_order_relaxed);
}

struct spool_writer *spool_writer(struct spool *sp, unsigned idx)
{
	return idx < sp->nwriters ? sp->w[idx] : NULL;
}

/* ---- sync thread ------------------------------------------------------ */

const uint64_t spool_sync_bound_ns[SPOOL_SYNC_BUCKETS - 1] = {
	250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000,
	50000000, 100000000, 250000000, 500000000, 1000000000,
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Creates the segment that starts at stream offset @start and makes its
 * directory entry durable, so synced data in it is reachable after a crash. */
static int segment_create(struct spool *sp, struct spool_writer *w, uint64_t start)
{
	char name[64];
	int fd;

	snprintf(name, sizeof(name), "w%03u-%016" PRIx64 ".seg", w->idx, start);
	fd = openat(sp->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	if (fsync(sp->dirfd) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	if (w->fd >= 0)
		close(w->fd);
	w->fd = fd;
	w->seg_start = start;
	return 0;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = write(fd, p, n);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static void writer_fail(struct spool_writer *w, int err)
{
	fprintf(stderr, "spool: writer %u: %s; no further message on it will be "
		"acknowledged\n", w->idx, strerror(-err));
	atomic_store_explicit(&w->error, err, memory_order_release);
}

/* Moves published ring bytes of @w into its segment. Returns true if it
 * wrote anything (the writer then needs a sync). */
static bool writer_flush(struct spool *sp, struct spool_writer *w)
{
	uint64_t head = atomic_load_explicit(&w->head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&w->tail, memory_order_relaxed);
	uint64_t at, n, first;
	int rc;

	if (head == tail || atomic_load_explicit(&w->error, memory_order_relaxed))
		return false;
	if (tail - w->seg_start >= sp->segment_bytes) {
		/* The previous batch was synced before we got here, so the
		 * old segment is complete on disk; records never straddle. */
		rc = segment_create(sp, w, tail);
		if (rc) {
			writer_fail(w, rc);
			return false;
		}
	}
	n = head - tail;
	at = tail & w->mask;
	first = w->mask + 1 - at;
	if (first >= n) {
		rc = write_all(w->fd, w->ring + at, n);
	} else {
		rc = write_all(w->fd, w->ring + at, first);
		if (rc == 0)
			rc = write_all(w->fd, w->ring, n - first);
	}
	if (rc) {
		writer_fail(w, rc);
		return false;
	}
	/* The bytes are in the page cache: the ring space can be reused. */
	atomic_store_explicit(&w->tail, head, memory_order_release);
	return true;
}

static void writer_sync(struct spool_writer *w)
{
	uint64_t upto = atomic_load_explicit(&w->tail, memory_order_relaxed);
	uint64_t t0 = mono_ns(), dt;

	if (fdatasync(w->fd) < 0) {
		/* After a failed fsync the page state is unknown: never
		 * retry and claim durability (the "fsyncgate" lesson). */
		writer_fail(w, -errno);
		return;
	}
	dt = mono_ns() - t0;
	atomic_fetch_add_explicit(&w->syncs, 1, memory_order_relaxed);
	if (dt > atomic_load_explicit(&w->sync_ns_max, memory_order_relaxed))
		atomic_store_explicit(&w->sync_ns_max, dt, memory_order_relaxed);
	atomic_store_explicit(&w->durable, upto, memory_order_release);
	if (w->pub) {
		struct spool_durfile *f = w->pub;
		unsigned b = 0;

		/* Only this thread writes these: relaxed add is enough, the
		 * reader wants a consistent-enough snapshot, not a fence. */
		while (b < SPOOL_SYNC_BUCKETS - 1 && dt > spool_sync_bound_ns[b])
			b++;
		atomic_fetch_add_explicit(&f->sync_bucket[b], 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&f->sync_ns_sum, dt, memory_order_relaxed);
		atomic_fetch_add_explicit(&f->sync_count, 1, memory_order_relaxed);
		atomic_store_explicit(&f->durable, upto, memory_order_release);
	}
}

static void *sync_main(void *arg)
{
	struct spool *sp = arg;
	bool dirty[SPOOL_MAX_WRITERS];
	bool any, stopping;
	unsigned i;

	for (;;) {
		/* Read stop before flushing: whatever was published before
		 * spool_close() asked us to stop is flushed and synced. */
		stopping = atomic_load_explicit(&sp->stop, memory_order_acquire);
		any = false;
		for (i = 0; i < sp->nwriters; i++) {
			dirty[i] = writer_flush(sp, sp->w[i]);
			any |= dirty[i];
		}
		/* One sync per writer per round covers every record written
		 * in it: that is the group commit. */
		for (i = 0; i < sp->nwriters; i++)
			if (dirty[i])
				writer_sync(sp->w[i]);
		if (!any) {
			struct timespec ts = { 0, (long)sp->idle_poll_us * 1000 };

			if (stopping)
				break;
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

/* ---- scanning (recovery and readers) ---------------------------------- */

struct seg {
	unsigned writer;
	uint64_t start;
	char name[64];
};

static int seg_cmp(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;

	if (x->writer != y->writer)
		return x->writer < y->writer ? -1 : 1;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Lists segment files of @dirfd sorted by (writer, start). */
static int list_segments(int dirfd, struct seg **out, size_t *count)
{
	struct seg *v = NULL, *nv;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int fd = dup(dirfd);

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		unsigned wi;
		uint64_t start;
		char tail;

		if (sscanf(de->d_name, "w%3u-%16" SCNx64 ".se%c", &wi, &start, &tail) != 3 ||
		    tail != 'g' || strlen(de->d_name) != 25 || wi >= SPOOL_MAX_WRITERS)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			nv = realloc(v, cap * sizeof(*v));
			if (nv == NULL) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		v[n].writer = wi;
		v[n].start = start;
		snprintf(v[n].name, sizeof(v[n].name), "%s", de->d_name);
		n++;
	}
	closedir(d);
	if (n > 1)
		qsort(v, n, sizeof(*v), seg_cmp);
	*out = v;
	*count = n;
	return 0;
}

/* A message being reassembled from one writer's records. */
struct pend {
	uint64_t qid;          /* 0 = empty slot */
	unsigned char *env;    /* BEGIN payload copy */
	uint32_t env_len;
	unsigned char *data;
	uint64_t len, cap;
	uint32_t chunks;
	uint64_t begin_off;    /* stream offset of the BEGIN record */
};

struct scan {
	int dirfd;
	bool keep_data;
	int (*cb)(const struct spool_message *, void *);
	void *arg;
	struct spool_recovery rep;
	uint64_t max_qid;
	uint64_t cur_off;      /* stream offset of the record being applied */
	/* open addressing on qid, linear probing, power-of-two size */
	struct pend *tab;
	size_t tab_size, tab_used;
};

static void pend_free(struct pend *p)
{
	free(p->env);
	free(p->data);
	memset(p, 0, sizeof(*p));
}

static struct pend *pend_find(struct scan *s, uint64_t qid, bool create)
{
	size_t i, mask;

	if (create && (s->tab_used + 1) * 2 > s->tab_size) {
		size_t nsize = s->tab_size ? s->tab_size * 2 : 64, j;
		struct pend *nt = calloc(nsize, sizeof(*nt));

		if (nt == NULL)
			return NULL;
		for (j = 0; j < s->tab_size; j++) {
			if (s->tab[j].qid == 0)
				continue;
			i = (size_t)(s->tab[j].qid * 0x9E3779B97F4A7C15ULL) & (nsize - 1);
			while (nt[i].qid)
				i = (i + 1) & (nsize - 1);
			nt[i] = s->tab[j];
		}
		free(s->tab);
		s->tab = nt;
		s->tab_size = nsize;
	}
	if (s->tab_size == 0)
		return NULL;
	mask = s->tab_size - 1;
	for (i = (size_t)(qid * 0x9E3779B97F4A7C15ULL) & mask;; i = (i + 1) & mask) {
		if (s->tab[i].qid == qid)
			return &s->tab[i];
		if (s->tab[i].qid == 0) {
			if (!create)
				return NULL;
			s->tab[i].qid = qid;
			s->tab_used++;
			return &s->tab[i];
		}
	}
}

/* Removes @p keeping linear-probing chains intact (backward shift). */
static void pend_remove(struct scan *s, struct pend *p)
{
	size_t mask = s->tab_size - 1, i = (size_t)(p - s->tab), j, k;

	pend_free(p);
	s->tab_used--;
	for (j = (i + 1) & mask; s->tab[j].qid; j = (j + 1) & mask) {
		k = (size_t)(s->tab[j].qid * 0x9E3779B97F4A7C15ULL) & mask;
		/* Move j into the hole at i if its home k is not in (i, j]. */
		if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
			s->tab[i] = s->tab[j];
			memset(&s->tab[j], 0, sizeof(s->tab[j]));
			i = j;
		}
	}
}

static const unsigned char *get_str(const unsigned char *p,
				    const unsigned char *end, const char **out,
				    char **store)
{
	uint16_t n;

	if (end - p < 2)
		return NULL;
	memcpy(&n, p, 2);
	p += 2;
	if (n == STR_ABSENT) {
		*out = NULL;
		return p;
	}
	if (end - p < n)
		return NULL;
	/* Strings are stored without NUL: copy into NUL-terminated storage. */
	memcpy(*store, p, n);
	(*store)[n] = '\0';
	*out = *store;
	*store += n + 1;
	return p + n;
}

/* Decodes a BEGIN payload into @env. Allocates *rcpts and *strings (the
 * NUL-terminated copies; each string takes at most its 2-byte length field
 * plus its bytes, so len + 1 bytes suffice); the caller frees both, also on
 * error. Returns 0, -EINVAL for a malformed payload, or -ENOMEM. */
static int env_decode(const unsigned char *p, uint32_t len,
		      struct spool_envelope *env, struct spool_rcpt **rcpts,
		      char **strings)
{
	const unsigned char *end = p + len;
	const char *f[6];
	char *store;
	uint32_t n, i;

	*rcpts = NULL;
	/* Every string needs at most its bytes + 1 (len field is 2). */
	*strings = store = malloc((size_t)len + 1);
	if (store == NULL)
		return -ENOMEM;
	if (len < 12)
		return -EINVAL;
	memcpy(&env->arrival_us, p, 8);
	p += 8;
	for (i = 0; i < 6; i++)
		if ((p = get_str(p, end, &f[i], &store)) == NULL)
			return -EINVAL;
	if (end - p < 4)
		return -EINVAL;
	memcpy(&n, p, 4);
	p += 4;
	if (n > len / 6)
		return -EINVAL;
	*rcpts = calloc(n ? n : 1, sizeof(**rcpts));
	if (*rcpts == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		if ((p = get_str(p, end, &(*rcpts)[i].addr, &store)) == NULL ||
		    (p = get_str(p, end, &(*rcpts)[i].notify, &store)) == NULL ||
		    (p = get_str(p, end, &(*rcpts)[i].orcpt, &store)) == NULL ||
		    (*rcpts)[i].addr == NULL)
			return -EINVAL;
	}
	if (p != end || f[4] == NULL)
		return -EINVAL;
	env->client_addr = f[0]; env->client_name = f[1]; env->helo = f[2];
	env->tls = f[3]; env->mail_from = f[4]; env->mail_params = f[5];
	env->nrcpt = n;
	env->rcpts = *rcpts;
	return 0;
}

static int deliver(struct scan *s, struct pend *p, unsigned writer)
{
	struct spool_message msg;
	struct spool_rcpt *rcpts = NULL;
	char *strings = NULL;
	int rc;

	memset(&msg, 0, sizeof(msg));
	rc = env_decode(p->env, p->env_len, &msg.env, &rcpts, &strings);
	if (rc == 0) {
		msg.qid = p->qid;
		msg.writer = writer;
		msg.off = p->begin_off;
		msg.data = p->data ? p->data : (const unsigned char *)"";
		msg.len = p->len;
		rc = s->cb(&msg, s->arg);
	} else if (rc == -EINVAL) {
		rc = 0; /* CRC-valid but undecodable: not ours to report */
	}
	free(rcpts);
	free(strings);
	return rc;
}

/* Applies one valid record. Returns 0, a callback's value, or -ENOMEM. */
static int apply(struct scan *s, const struct rec_hdr *h,
		 const unsigned char *pl, unsigned writer)
{
	struct pend *p;
	uint64_t mlen;
	uint32_t chunks;
	int rc = 0;

	s->rep.records++;
	if (h->qid == 0)
		return 0; /* never written by spool_begin; 0 marks empty slots */
	if (h->qid > s->max_qid)
		s->max_qid = h->qid;
	switch (h->type) {
	case REC_BEGIN:
		p = pend_find(s, h->qid, true);
		if (p == NULL)
			return -ENOMEM;
		if (p->env)     /* a repeated BEGIN restarts the message */
			pend_free(p), p->qid = h->qid;
		p->env = malloc(h->len ? h->len : 1);
		if (p->env == NULL)
			return -ENOMEM;
		memcpy(p->env, pl, h->len);
		p->env_len = h->len;
		p->begin_off = s->cur_off;
		break;
	case REC_DATA:
		p = pend_find(s, h->qid, false);
		if (p == NULL)
			break;
		if (s->keep_data) {
			if (p->len + h->len > p->cap) {
				uint64_t ncap = p->cap ? p->cap : 4096;
				unsigned char *nd;

				while (ncap < p->len + h->len)
					ncap *= 2;
				nd = realloc(p->data, ncap);
				if (nd == NULL)
					return -ENOMEM;
				p->data = nd;
				p->cap = ncap;
			}
			memcpy(p->data + p->len, pl, h->len);
		}
		p->len += h->len;
		p->chunks++;
		break;
	case REC_END:
		p = pend_find(s, h->qid, false);
		if (p == NULL || h->len != 12)
			break;
		memcpy(&mlen, pl, 8);
		memcpy(&chunks, pl + 8, 4);
		if (mlen == p->len && chunks == p->chunks) {
			s->rep.messages++;
			if (s->cb)
				rc = deliver(s, p, writer);
		}
		pend_remove(s, p);
		break;
	case REC_ABORT:
		p = pend_find(s, h->qid, false);
		if (p)
			pend_remove(s, p);
		break;
	default:
		break;
	}
	return rc;
}

/* Is there a valid record at @pos of @buf (@size bytes)? Fills @h. */
static bool rec_at(const unsigned char *buf, off_t size, off_t pos,
		   struct rec_hdr *h)
{
	uint32_t crc;
	bool ok;

	if (size - pos < (off_t)sizeof(*h))
		return false;
	memcpy(h, buf + pos, sizeof(*h));
	if (h->magic != REC_MAGIC || h->len > REC_MAX_PAYLOAD ||
	    h->type < REC_BEGIN || h->type > REC_ABORT ||
	    size - pos - (off_t)sizeof(*h) < (off_t)h->len)
		return false;
	crc = h->crc;
	h->crc = 0;
	ok = crc == (uint32_t)crc32_z(crc32(0L, (const Bytef *)h, sizeof(*h)),
				      buf + pos + sizeof(*h), h->len);
	h->crc = crc;
	return ok;
}

/*
 * Scans one segment. Damage never stops the scan: the scanner resyncs at
 * the next valid record (magic and CRC), so records after a damaged spot —
 * possibly acknowledged mail — are still read. Bytes that belong to no
 * valid record are counted in *mid (followed by a valid record: damage)
 * and *tail (up to the end of the file: a torn tail, or damage if this is
 * not the writer's newest segment). Returns 0, a callback's value or
 * -errno. Nothing is ever truncated or rewritten.
 */
static int scan_segment(struct scan *s, const struct seg *sg, off_t *size,
			off_t *mid, off_t *tail)
{
	static const uint32_t magic = REC_MAGIC;
	unsigned char *buf = NULL;
	struct rec_hdr h;
	struct stat st;
	off_t pos = 0, bad_from = -1;
	int fd, rc = 0;

	*mid = *tail = 0;
	fd = openat(s->dirfd, sg->name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* Deleted since the listing: the control plane released it
		 * (nothing in it was pending). */
		*size = 0;
		return 0;
	}
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	*size = st.st_size;
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (off_t got = 0; got < st.st_size;) {
		ssize_t r = pread(fd, buf + got, (size_t)(st.st_size - got), got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = r < 0 ? -errno : -EIO;
			goto out;
		}
		got += r;
	}
	s->rep.segments++;
	while (pos < st.st_size) {
		const unsigned char *next;

		if (rec_at(buf, st.st_size, pos, &h)) {
			if (bad_from >= 0) {
				*mid += pos - bad_from;
				bad_from = -1;
			}
			s->cur_off = sg->start + (uint64_t)pos;
			rc = apply(s, &h, buf + pos + sizeof(h), sg->writer);
			if (rc)
				goto out;
			pos += (off_t)sizeof(h) + h.len;
			continue;
		}
		if (bad_from < 0)
			bad_from = pos;
		next = memmem(buf + pos + 1, (size_t)(st.st_size - pos - 1), &magic,
			      sizeof(magic));
		pos = next ? (off_t)(next - buf) : st.st_size;
	}
	if (bad_from >= 0)
		*tail = st.st_size - bad_from;
out:
	free(buf);
	close(fd);
	return rc;
}

static void scan_reset_pending(struct scan *s)
{
	size_t i;

	for (i = 0; i < s->tab_size; i++)
		if (s->tab[i].qid) {
			s->rep.incomplete++;
			pend_free(&s->tab[i]);
		}
	s->tab_used = 0;
}

/* NAME.torn marks a segment whose tail was torn by a crash (its content:
 * the offset where the tail starts). */
static bool torn_marked(int dirfd, const char *name)
{
	char marker[80];

	snprintf(marker, sizeof(marker), "%s.torn", name);
	return faccessat(dirfd, marker, F_OK, 0) == 0;
}

static int torn_mark(int dirfd, const char *name, off_t from)
{
	char marker[80], text[32];
	int fd, n, rc = 0;

	snprintf(marker, sizeof(marker), "%s.torn", name);
	fd = openat(dirfd, marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	n = snprintf(text, sizeof(text), "%lld\n", (long long)from);
	if (write_all(fd, (const unsigned char *)text, (size_t)n) < 0 || fsync(fd) < 0 ||
	    fsync(dirfd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* Scans every segment of the directory. Segment contents are never
 * changed; with @mark_torn (spool_open), a torn tail gets its marker file.
 * *next_off[w] (if not NULL) gets the stream offset after writer w's files,
 * where a new segment may start without overlapping anything on disk. */
static int scan_dir(struct scan *s, bool mark_torn, uint64_t *next_off)
{
	struct seg *segs = NULL;
	size_t n = 0, i;
	int rc;

	rc = list_segments(s->dirfd, &segs, &n);
	if (rc)
		return rc;
	for (i = 0; i < n; i++) {
		bool last = i + 1 == n || segs[i + 1].writer != segs[i].writer;
		off_t size = 0, mid = 0, tail = 0;

		rc = scan_segment(s, &segs[i], &size, &mid, &tail);
		if (rc)
			break;
		/* Rotation happens only after a sync, so only the newest
		 * segment of a writer can end in unsynced (torn) bytes. When
		 * the spool is opened after a crash, a marker remembers that,
		 * because the segment stops being the newest right after. */
		if (tail && !last && !torn_marked(s->dirfd, segs[i].name))
			mid += tail;
		else if (tail)
			s->rep.torn_bytes += (uint64_t)tail;
		if (tail && last && mark_torn) {
			rc = torn_mark(s->dirfd, segs[i].name, size - tail);
			if (rc)
				break;
		}
		if (mid) {
			fprintf(stderr, "spool: %s: %lld damaged bytes skipped; records "
				"after them were still read\n", segs[i].name, (long long)mid);
			s->rep.corrupt_segments++;
			s->rep.damaged_bytes += (uint64_t)mid;
		}
		if (next_off && segs[i].start + (uint64_t)size > next_off[segs[i].writer])
			next_off[segs[i].writer] = segs[i].start + (uint64_t)size;
		if (last)
			/* Messages do not continue into another writer's
			 * files: whatever is still open never got a 250. */
			scan_reset_pending(s);
	}
	scan_reset_pending(s);
	free(segs);
	free(s->tab);
	s->tab = NULL;
	s->tab_size = s->tab_used = 0;
	return rc;
}

int spool_scan(const char *dir,
	       int (*cb)(const struct spool_message *msg, void *arg),
	       void *arg, struct spool_recovery *rep)
{
	struct scan s;
	int rc;

	memset(&s, 0, sizeof(s));
	s.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s.dirfd < 0)
		return -errno;
	s.keep_data = true;
	s.cb = cb;
	s.arg = arg;
	rc = scan_dir(&s, false, NULL);
	close(s.dirfd);
	if (rep)
		*rep = s.rep;
	return rc;
}

/* ---- incremental reader (control plane) -------------------------------- */

struct rwriter {
	struct spool_durfile *pub;  /* NULL: not (yet) mapped */
	bool started;
	uint64_t pos;               /* stream offset of the next unparsed byte */
	struct scan s;              /* messages begun but not ended */
};

struct spool_reader {
	int dirfd;
	unsigned char *buf;
	size_t cap;
	struct spool_recovery rep;
	struct rwriter w[SPOOL_MAX_WRITERS];
};

static int durfile_map(int dirfd, unsigned idx, bool create,
		       struct spool_durfile **out);

struct spool_reader *spool_reader_open(const char *dir)
{
	struct spool_reader *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dirfd < 0) {
		int err = errno;

		free(r);
		errno = err;
		return NULL;
	}
	return r;
}

void spool_reader_close(struct spool_reader *r)
{
	unsigned i;

	if (r == NULL)
		return;
	for (i = 0; i < SPOOL_MAX_WRITERS; i++) {
		struct scan *s = &r->w[i].s;

		for (size_t j = 0; j < s->tab_size; j++)
			pend_free(&s->tab[j]);
		free(s->tab);
		if (r->w[i].pub)
			munmap(r->w[i].pub, DURFILE_SIZE);
	}
	close(r->dirfd);
	free(r->buf);
	free(r);
}

void spool_reader_report(const struct spool_reader *r, struct spool_recovery *rep)
{
	*rep = r->rep;
}

void spool_reader_sync_hist(const struct spool_reader *r, struct spool_sync_hist *h)
{
	unsigned i, b;

	memset(h, 0, sizeof(*h));
	for (i = 0; i < SPOOL_MAX_WRITERS; i++) {
		const struct spool_durfile *f = r->w[i].pub;

		if (f == NULL)
			continue;
		h->count += atomic_load_explicit(&f->sync_count, memory_order_relaxed);
		h->sum_ns += atomic_load_explicit(&f->sync_ns_sum, memory_order_relaxed);
		for (b = 0; b < SPOOL_SYNC_BUCKETS; b++)
			h->bucket[b] += atomic_load_explicit(&f->sync_bucket[b],
							     memory_order_relaxed);
	}
}

/* Reads [from, to) of segment @name into r->buf. Returns 0 or -errno. */
static int reader_load(struct spool_reader *r, const char *name, uint64_t from,
		       uint64_t *to)
{
	struct stat st;
	size_t n, got = 0;
	int fd, rc = 0;

	fd = openat(r->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 1 : -errno; /* deleted meanwhile */
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if ((uint64_t)st.st_size < *to)
		*to = (uint64_t)st.st_size;
	if (*to <= from) {
		*to = from;
		goto out;
	}
	n = (size_t)(*to - from);
	if (n > r->cap) {
		unsigned char *nb = realloc(r->buf, n);

		if (nb == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		r->buf = nb;
		r->cap = n;
	}
	while (got < n) {
		ssize_t k = pread(fd, r->buf + got, n - got, (off_t)(from + got));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			rc = k < 0 ? -errno : -EIO;
			goto out;
		}
		got += (size_t)k;
	}
out:
	close(fd);
	return rc;
}

int spool_reader_poll(struct spool_reader *r,
		      int (*cb)(const struct spool_message *msg, void *arg),
		      void *arg)
{
	static const uint32_t magic = REC_MAGIC;
	uint64_t bound[SPOOL_MAX_WRITERS];
	struct seg *segs = NULL;
	size_t nseg = 0, i;
	uint64_t before = r->rep.messages;
	int rc;

	/* Listing first, bounds second: a listed segment's predecessor was
	 * synced whole before it was created, so its bytes lie below any
	 * bound read afterwards; a segment created after the listing is
	 * simply read at the next poll. Only writers with segments are
	 * looked at (no per-poll probing of absent .durable files). */
	rc = list_segments(r->dirfd, &segs, &nseg);
	if (rc)
		return rc;
	for (i = 0; i < nseg; i++) {
		struct rwriter *rw = &r->w[segs[i].writer];

		if (rw->pub == NULL)
			(void)durfile_map(r->dirfd, segs[i].writer, false, &rw->pub);
		bound[segs[i].writer] = rw->pub ?
			atomic_load_explicit(&rw->pub->durable, memory_order_acquire) : 0;
	}
	for (i = 0; i < nseg; i++) {
		const struct seg *sg = &segs[i];
		struct rwriter *rw = &r->w[sg->writer];
		bool last = i + 1 == nseg || segs[i + 1].writer != sg->writer;
		uint64_t next = last ? UINT64_MAX : segs[i + 1].start;
		/* The writer moved to the next segment only after this one
		 * was written and synced whole. */
		bool complete = !last && bound[sg->writer] >= next;
		uint64_t from, to, at = 0, n;

		if (rw->pub == NULL)
			continue; /* no published offset: nothing is known durable */
		if (!rw->started || rw->pos < sg->start) {
			rw->pos = sg->start;
			rw->started = true;
		}
		if (rw->pos >= next)
			continue;
		from = rw->pos - sg->start;
		to = bound[sg->writer] > sg->start ? bound[sg->writer] - sg->start : 0;
		rc = reader_load(r, sg->name, from, &to);
		if (rc > 0) { /* the segment was deleted: nothing left to read */
			rc = 0;
			continue;
		}
		if (rc)
			break;
		n = to - from;
		rw->s.keep_data = true;
		rw->s.cb = cb;
		rw->s.arg = arg;
		while (at < n) {
			struct rec_hdr h;
			const unsigned char *nx;

			if (rec_at(r->buf, (off_t)n, (off_t)at, &h)) {
				rw->s.rep.records = 0;
				rw->s.cur_off = sg->start + from + at;
				rc = apply(&rw->s, &h, r->buf + at + sizeof(h), sg->writer);
				r->rep.records++;
				if (rw->s.rep.messages) {
					r->rep.messages += rw->s.rep.messages;
					rw->s.rep.messages = 0;
				}
				at += sizeof(h) + h.len;
				if (rc)
					break;
				continue;
			}
			/* Below the bound every byte is synced, so an unreadable
			 * record there is damage, unless it simply is not whole
			 * yet in the newest segment: then wait for more. */
			if (!complete) {
				if (n - at < sizeof(h))
					break;
				memcpy(&h, r->buf + at, sizeof(h));
				if ((h.magic == REC_MAGIC && h.len <= REC_MAX_PAYLOAD &&
				     h.type >= REC_BEGIN && h.type <= REC_ABORT &&
				     n - at - sizeof(h) < h.len))
					break;
			}
			nx = memmem(r->buf + at + 1, (size_t)(n - at - 1), &magic, sizeof(magic));
			r->rep.damaged_bytes += (nx ? (uint64_t)(nx - r->buf) : n) - at;
			at = nx ? (uint64_t)(nx - r->buf) : n;
			if (nx == NULL && complete) {
				/* A torn tail: the writer crashed here, so
				 * nothing still open can ever end. */
				scan_reset_pending(&rw->s);
				r->rep.incomplete += rw->s.rep.incomplete;
				rw->s.rep.incomplete = 0;
			}
		}
		rw->pos = sg->start + from + at;
		if (rc)
			break;
		if (complete && rw->pos >= sg->start + from + n)
			rw->pos = next;
	}
	free(segs);
	if (rc)
		return rc;
	return (int)(r->rep.messages - before > INT32_MAX ? INT32_MAX :
		     r->rep.messages - before);
}

int spool_reader_release(struct spool_reader *r, const uint64_t *keep)
{
	struct seg *segs = NULL;
	size_t n = 0, i;
	int rc, deleted = 0;

	rc = list_segments(r->dirfd, &segs, &n);
	if (rc)
		return rc;
	for (i = 0; i + 1 < n; i++) {
		const struct seg *sg = &segs[i];
		const struct rwriter *rw = &r->w[sg->writer];
		uint64_t limit = keep[sg->writer], end = segs[i + 1].start;
		char marker[80];

		/* Never the newest segment of a writer (the spool owner may
		 * be writing it), never what the reader has not finished. */
		if (segs[i + 1].writer != sg->writer || !rw->started)
			continue;
		if (rw->pos < limit)
			limit = rw->pos;
		for (size_t j = 0; j < rw->s.tab_size; j++)
			if (rw->s.tab[j].qid && rw->s.tab[j].begin_off < limit)
				limit = rw->s.tab[j].begin_off;
		if (end > limit)
			continue;
		if (unlinkat(r->dirfd, sg->name, 0) < 0 && errno != ENOENT) {
			rc = -errno;
			break;
		}
		snprintf(marker, sizeof(marker), "%s.torn", sg->name);
		(void)unlinkat(r->dirfd, marker, 0);
		deleted++;
	}
	free(segs);
	return rc ? rc : deleted;
}

/* Maps DIR/w<idx>.durable; @create (the owner) creates and sizes it.
 * Returns 0, -ENOENT (reader, no file yet) or -errno. */
static int durfile_map(int dirfd, unsigned idx, bool create,
		       struct spool_durfile **out)
{
	struct spool_durfile *m;
	struct stat st;
	char name[32];
	int fd, rc = 0;

	snprintf(name, sizeof(name), "w%03u.durable", idx);
	fd = openat(dirfd, name, (create ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	if (create && ftruncate(fd, DURFILE_SIZE) < 0) {
		rc = -errno;
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (st.st_size < DURFILE_SIZE) {
		rc = -EINVAL;
		goto out;
	}
	m = mmap(NULL, DURFILE_SIZE, create ? PROT_READ | PROT_WRITE : PROT_READ,
		 MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		rc = -errno;
		goto out;
	}
	if (create) {
		m->magic = DURFILE_MAGIC;
		m->version = 1;
	} else if (m->magic != DURFILE_MAGIC || m->version != 1) {
		munmap(m, DURFILE_SIZE);
		rc = -EINVAL;
		goto out;
	}
	*out = m;
out:
	close(fd);
	return rc;
}

/* ---- open / close ----------------------------------------------------- */

static void writer_free(struct spool_writer *w)
{
	if (w == NULL)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->pub)
		munmap(w->pub, DURFILE_SIZE);
	free(w->ring);
	free(w->scratch);
	free(w);
}

void spool_close(struct spool *sp)
{
	unsigned i;

	if (sp == NULL)
		return;
	if (sp->thread_started) {
		atomic_store_explicit(&sp->stop, true, memory_order_release);
		pthread_join(sp->sync_thread, NULL);
	}
	for (i = 0; i < sp->nwriters; i++)
		writer_free(sp->w[i]);
	if (sp->dirfd >= 0)
		close(sp->dirfd);
	if (sp->lockfd >= 0)
		close(sp->lockfd); /* releases the flock */
	free(sp->dir);
	free(sp);
}

struct spool *spool_open(const struct spool_config *cfg,
			 struct spool_recovery *rep)
{
	uint64_t next_off[SPOOL_MAX_WRITERS] = { 0 };
	size_t ring = cfg->ring_bytes ? cfg->ring_bytes : 8u << 20;
	struct spool *sp = NULL;
	struct scan s;
	unsigned i;
	int rc;

	if (cfg->dir == NULL || cfg->writers == 0 || cfg->idle_poll_us >= 1000000 ||
	    cfg->writers > SPOOL_MAX_WRITERS || (ring & (ring - 1)) ||
	    ring < 4 * (SPOOL_CHUNK_MAX + sizeof(struct rec_hdr))) {
		errno = EINVAL;
		return NULL;
	}
	sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return NULL;
	sp->dirfd = -1;
	sp->lockfd = -1;
	sp->segment_bytes = cfg->segment_bytes ? cfg->segment_bytes : 64u << 20;
	sp->idle_poll_us = cfg->idle_poll_us ? cfg->idle_poll_us : 50;
	sp->dir = strdup(cfg->dir);
	if (sp->dir == NULL)
		goto fail_errno;
	if (mkdir(cfg->dir, 0750) < 0 && errno != EEXIST)
		goto fail_errno;
	sp->dirfd = open(cfg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dirfd < 0)
		goto fail_errno;
	/* Two processes on one spool would each take the other's unsynced
	 * bytes for a torn tail and interleave segments: refuse the second. */
	sp->lockfd = openat(sp->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (sp->lockfd < 0)
		goto fail_errno;
	if (flock(sp->lockfd, LOCK_EX | LOCK_NB) < 0)
		goto fail_errno;

	memset(&s, 0, sizeof(s));
	s.dirfd = sp->dirfd;
	rc = scan_dir(&s, true, next_off);
	if (rc) {
		errno = rc < 0 ? -rc : EIO;
		goto fail;
	}
	if (rep)
		*rep = s.rep;

	for (i = 0; i < cfg->writers; i++) {
		struct spool_writer *w;

		w = aligned_alloc(64, sizeof(*w));
		if (w == NULL)
			goto fail_errno;
		memset(w, 0, sizeof(*w));
		w->fd = -1;
		sp->w[i] = w;
		sp->nwriters = i + 1;
		w->idx = i;
		w->mask = ring - 1;
		w->ring = malloc(ring);
		w->scratch = malloc(ENV_MAX);
		if (w->ring == NULL || w->scratch == NULL)
			goto fail_errno;
		/* Continue the stream after everything on disk, in a fresh
		 * segment: a torn tail stays where it is, unread, and no
		 * byte that might be evidence is ever destroyed. */
		w->wpos = next_off[i];
		atomic_store(&w->head, w->wpos);
		atomic_store(&w->tail, w->wpos);
		atomic_store(&w->durable, w->wpos);
		/* Ids continue above anything already in the spool: with the
		 * sequence exhausted for the newest ms seen, the next id is
		 * in a later ms whatever the clock says. */
		w->qid_ms = qid_ms_of(s.max_qid);
		w->qid_seq = s.max_qid ? QID_SEQ_MAX : 0;
		rc = segment_create(sp, w, w->wpos);
		if (rc == -EEXIST) {
			/* An empty segment left at this offset by a crash. */
			char name[64];

			snprintf(name, sizeof(name), "w%03u-%016" PRIx64 ".seg", i, w->wpos);
			if (unlinkat(sp->dirfd, name, 0) == 0)
				rc = segment_create(sp, w, w->wpos);
		}
		if (rc) {
			errno = -rc;
			goto fail;
		}
		rc = durfile_map(sp->dirfd, i, true, &w->pub);
		if (rc) {
			errno = -rc;
			goto fail;
		}
		/* Everything recovery found is on disk (torn bytes included,
		 * which a reader skips like recovery does). */
		atomic_store_explicit(&w->pub->durable, w->wpos, memory_order_release);
	}
	rc = pthread_create(&sp->sync_thread, NULL, sync_main, sp);
	if (rc) {
		errno = rc;
		goto fail;
	}
	sp->thread_started = true;
	return sp;
fail_errno:
fail:
	rc = errno;
	spool_close(sp);
	errno = rc;
	return NULL;
}
