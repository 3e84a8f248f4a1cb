/* The session engine of mxedge-bench: one thread per core, each with its own
 * epoll instance, session table and counters; threads share only a few
 * atomic "tickets" (messages and sessions left) and the stop flags.
 *
 * A session is a small state machine driven by a queue of the replies it
 * still expects (RFC 2920: with PIPELINING, MAIL, RCPT and DATA/BDAT go out
 * in one write and their replies come back in order). Message bodies are
 * never copied: every session writes from the same read-only buffers with
 * writev, so 100 k idle sessions cost well under 100 MB on the client.
 */
#include "bench_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define NS_PER_S 1000000000ull
#define SCAN_NS (50ull * 1000 * 1000)     /* timeout/backoff scan period */
#define BACKOFF_NS (20ull * 1000 * 1000)  /* after a failed connect */
#define HOLD_OPENING_MAX 128              /* hold: handshakes in flight */
#define ARRIVALS_PER_LOOP 512

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* Single-writer counter that another thread may read. */
static inline void bump(uint64_t *c)
{
  __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

static uint64_t rng_next(struct bench_thread *t)
{
  /* xorshift64*: cheap, good enough to pick message sizes */
  uint64_t x = t->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  t->rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static bool claim(uint64_t *ctr, uint64_t max)
{
  if (max == 0)
    return true;
  return __atomic_fetch_add(ctr, 1, __ATOMIC_RELAXED) < max;
}

static bool tickets_left(uint64_t *ctr, uint64_t max)
{
  return max == 0 || __atomic_load_n(ctr, __ATOMIC_RELAXED) < max;
}

static void count_errno(struct bench_thread *t, int e)
{
  t->r.err.connect++;
  if (e > 0 && e < (int)(sizeof(t->r.err.connect_errno) / sizeof(uint64_t)))
    t->r.err.connect_errno[e]++;
  bump(&t->c_errors);
}

static void count_reply(struct bench_thread *t, struct bench_sess *s, int code)
{
  if (s->failed)
    return;       /* only the first failure of a transaction tells anything */
  s->failed = 1;
  t->r.err.reply[code]++;
  bump(&t->c_errors);
}

static void set_events(struct bench_thread *t, struct bench_sess *s, bool out)
{
  if (s->want_out == out)
    return;
  s->want_out = out;
  t->io->want_out(t, s, out);
}

/* Closes the session; `ok` says whether it ended as planned. Closed-loop
 * and hold sessions are restarted by pump_starts (after a short backoff if
 * something failed, so a refusing server does not make us spin). */
static void end_session(struct bench_thread *t, struct bench_sess *s, bool ok, uint64_t now)
{
  if (s->fd >= 0 || s->conn) {
    /* Abort with RST: a failed session must not leave TIME_WAIT behind. */
    t->io->release(t, s, !ok);
    s->fd = -1;
    s->conn = NULL;
    t->active--;
  }
  if (s->opening) {
    s->opening = 0;
    t->opening--;
  }
  if (s->state == S_HOLD)
    __atomic_store_n(&t->c_held, t->c_held - 1, __ATOMIC_RELAXED);
  if (!ok && t->cfg->mode != BENCH_OPEN) {
    s->state = S_BACKOFF;
    s->deadline = now + BACKOFF_NS;
    return;
  }
  s->state = S_FREE;
  t->freelist[t->nfree++] = (unsigned)(s - t->s);
}

static void expect(struct bench_sess *s, uint8_t x)
{
  s->exp[s->nexp++] = x;
}

static void push_iov(struct bench_sess *s, const void *p, size_t len)
{
  s->iov[s->niov].iov_base = (void *)p;
  s->iov[s->niov].iov_len = len;
  s->niov++;
}

/* Writes what is queued; returns false if the session ended. */
static bool flush(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  if (s->fd < 0 && !s->conn)
    return false;
  while (s->iiov < s->niov) {
    struct iovec v[8];
    int k = 0;
    for (unsigned i = s->iiov; i < s->niov; i++, k++)
      v[k] = s->iov[i];
    v[0].iov_base = (char *)v[0].iov_base + s->iov_off;
    v[0].iov_len -= s->iov_off;
    long n = t->io->send(t, s, v, k);
    if (n == 0) {
      set_events(t, s, true);
      return true;
    }
    if (n < 0) {
      t->r.err.disconnect++;
      bump(&t->c_errors);
      end_session(t, s, false, now);
      return false;
    }
    size_t left = (size_t)n;
    while (left > 0 && s->iiov < s->niov) {
      size_t rem = s->iov[s->iiov].iov_len - s->iov_off;
      if (left >= rem) {
        left -= rem;
        s->iiov++;
        s->iov_off = 0;
      } else {
        s->iov_off += left;
        left = 0;
      }
    }
  }
  s->niov = s->iiov = 0;
  s->iov_off = 0;
  if (s->want_out)
    set_events(t, s, false);
  if (s->eod_on_flush) {
    s->eod_on_flush = 0;
    s->t_eod = now_ns();
  }
  return true;
}

static void queue_content(struct bench_thread *t, struct bench_sess *s)
{
  const struct bench_shared *g = t->g;
  size_t rest = s->cur_size - g->header_len;
  size_t k = rest / LINE_LEN, r = rest % LINE_LEN;

  if (r < 2 && k > 0) {  /* the tail line needs at least its CRLF */
    k--;
    r += LINE_LEN;
  }
  push_iov(s, g->header, g->header_len);
  if (k)
    push_iov(s, g->lines, k * LINE_LEN);
  push_iov(s, g->tail + TAIL_LEN - r, r);
}

static void queue_bdat(struct bench_thread *t, struct bench_sess *s)
{
  int n = snprintf(s->bdat, sizeof(s->bdat), "BDAT %u LAST\r\n", s->cur_size);
  push_iov(s, s->bdat, (size_t)n);
  queue_content(t, s);
  s->eod_on_flush = 1;
  expect(s, X_EOD);
}

static uint32_t pick_size(struct bench_thread *t)
{
  const struct bench_config *c = t->cfg;
  uint32_t w;

  if (c->n_sizes == 1)
    return c->sizes[0].bytes;
  w = (uint32_t)(rng_next(t) % t->g->weight_total);
  for (unsigned i = 0; i < c->n_sizes; i++) {
    if (w < c->sizes[i].weight)
      return c->sizes[i].bytes;
    w -= c->sizes[i].weight;
  }
  return c->sizes[c->n_sizes - 1].bytes;
}

static void send_quit(struct bench_sess *s)
{
  static const char quit[] = "QUIT\r\n";
  push_iov(s, quit, sizeof(quit) - 1);
  expect(s, X_QUIT);
}

/* After EHLO or a finished transaction: the next message or QUIT. */
static void next_step(struct bench_thread *t, struct bench_sess *s)
{
  const struct bench_config *c = t->cfg;
  const struct bench_shared *g = t->g;

  if (s->failed || s->msgs_done >= c->msgs_per_session ||
      (s->msgs_done > 0 && now_ns() >= g->soft_deadline) ||
      (!s->ticket && !claim(&t->g->msg_claimed, c->max_messages))) {
    send_quit(s);
    return;
  }
  s->ticket = 0;
  s->failed = 0;
  s->rcpt_sent = s->rcpt_ok = 0;
  s->cur_size = pick_size(t);
  t->r.messages_attempted++;
  bump(&t->c_attempted);
  push_iov(s, g->mail, g->mail_len);
  expect(s, X_MAIL);
  if (!c->pipelining)
    return;
  push_iov(s, g->rcpts, g->rcpt_off[c->rcpts]);
  for (unsigned i = 0; i < c->rcpts; i++)
    expect(s, X_RCPT);
  s->rcpt_sent = (uint8_t)c->rcpts;
  if (c->bdat) {
    queue_bdat(t, s);
  } else {
    static const char data[] = "DATA\r\n";
    push_iov(s, data, sizeof(data) - 1);
    expect(s, X_DATA);
  }
}

/* Handles one complete reply; returns false if the session ended. */
static bool on_reply(struct bench_thread *t, struct bench_sess *s, int code, uint64_t now)
{
  const struct bench_config *c = t->cfg;
  const struct bench_shared *g = t->g;
  uint8_t x;
  bool ok2 = code >= 200 && code < 300;

  if (s->iexp >= s->nexp) {
    t->r.err.protocol++;     /* a reply nobody asked for */
    bump(&t->c_errors);
    end_session(t, s, false, now);
    return false;
  }
  x = s->exp[s->iexp++];
  if (s->iexp == s->nexp)
    s->iexp = s->nexp = 0;
  s->deadline = now + (uint64_t)(c->timeout_s * NS_PER_S);

  if (code == 421 && x != X_QUIT) {
    /* RFC 5321 §3.8: the server is shutting the channel. */
    count_reply(t, s, code);
    end_session(t, s, false, now);
    return false;
  }
  switch (x) {
  case X_GREET:
    if (code != 220) {
      count_reply(t, s, code);
      send_quit(s);
      break;
    }
    bench_hist_record(&t->r.connect_220, (now - s->t_connect) / 1000);
    push_iov(s, g->ehlo, g->ehlo_len);
    expect(s, X_EHLO);
    break;
  case X_EHLO:
    if (!ok2) {
      count_reply(t, s, code);
      send_quit(s);
      break;
    }
    if (c->bdat && c->msgs_per_session && !s->chunking) {
      /* RFC 3030 §2: BDAT only after the server offers CHUNKING. */
      t->r.err.protocol++;
      bump(&t->c_errors);
      s->failed = 1;
      send_quit(s);
      break;
    }
    if (c->mode == BENCH_HOLD) {
      s->state = S_HOLD;
      s->deadline = 0;
      s->opening = 0;
      t->opening--;
      bump(&t->c_held);
      if (t->c_held > t->r.held_max)
        t->r.held_max = t->c_held;
      return true;
    }
    next_step(t, s);
    break;
  case X_MAIL:
    if (!ok2)
      count_reply(t, s, code);
    if (!c->pipelining) {
      if (s->failed) {
        send_quit(s);
        break;
      }
      push_iov(s, g->rcpts, g->rcpt_off[1]);
      expect(s, X_RCPT);
      s->rcpt_sent = 1;
    }
    break;
  case X_RCPT:
    if (ok2) {
      s->rcpt_ok++;
    } else if (!s->failed) {
      t->r.err.reply[code]++;    /* counted, but other recipients may pass */
      bump(&t->c_errors);
    }
    if (!c->pipelining) {
      if (s->rcpt_sent < c->rcpts) {
        push_iov(s, g->rcpts + g->rcpt_off[s->rcpt_sent],
                 g->rcpt_off[s->rcpt_sent + 1] - g->rcpt_off[s->rcpt_sent]);
        expect(s, X_RCPT);
        s->rcpt_sent++;
      } else if (s->rcpt_ok == 0) {
        s->failed = 1;
        send_quit(s);
      } else if (c->bdat) {
        queue_bdat(t, s);
      } else {
        static const char data[] = "DATA\r\n";
        push_iov(s, data, sizeof(data) - 1);
        expect(s, X_DATA);
      }
    }
    break;
  case X_DATA:
    if (code != 354) {
      if (s->rcpt_ok == 0)
        s->failed = 1;   /* the RCPT replies already told why */
      count_reply(t, s, code);
      s->msgs_done++;
      next_step(t, s);   /* sends QUIT: the transaction failed */
      break;
    }
    if (s->failed) {
      /* 354 after a failed MAIL: cannot send a clean message; give up. */
      t->r.err.protocol++;
      bump(&t->c_errors);
      end_session(t, s, false, now);
      return false;
    }
    {
      static const char dot[] = ".\r\n";
      queue_content(t, s);
      push_iov(s, dot, sizeof(dot) - 1);
      s->eod_on_flush = 1;
      expect(s, X_EOD);
    }
    break;
  case X_EOD:
    s->msgs_done++;
    if (ok2 && !s->failed) {
      t->r.messages_accepted++;
      t->r.bytes_accepted += s->cur_size;
      bump(&t->c_accepted);
      bench_hist_record(&t->r.eod_250, (now - s->t_eod) / 1000);
    } else {
      count_reply(t, s, code);
    }
    next_step(t, s);
    break;
  case X_QUIT:
    if (code == 221) {
      t->r.sessions_completed++;
      bump(&t->c_sessions);
    } else {
      count_reply(t, s, code);
    }
    /* Wait for the server to close first, so TIME_WAIT stays on its side
     * and a long run does not exhaust the client's ephemeral ports. */
    s->state = S_DRAIN;
    return true;
  }
  return s->niov ? flush(t, s, now) : true;
}

/* Parses complete reply lines in rbuf; returns false if the session ended. */
static bool parse_replies(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  size_t start = 0;

  for (;;) {
    char *nl = memchr(s->rbuf + start, '\n', s->rlen - start);
    if (!nl)
      break;
    char *line = s->rbuf + start;
    size_t len = (size_t)(nl - line) + 1;
    start += len;
    /* RFC 5321 §4.2: "ddd-text" continues, "ddd text" or "ddd" ends. */
    if (len < 4 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
        line[1] > '9' || line[2] < '0' || line[2] > '9' ||
        !(line[3] == ' ' || line[3] == '-' || line[3] == '\r' || line[3] == '\n')) {
      t->r.err.protocol++;
      bump(&t->c_errors);
      end_session(t, s, false, now);
      return false;
    }
    if (s->nexp > s->iexp && s->exp[s->iexp] == X_EHLO && len >= 12 &&
        strncasecmp(line + 4, "CHUNKING", 8) == 0)
      s->chunking = 1;
    if (line[3] == '-')
      continue;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (!on_reply(t, s, code, now))
      return false;
    if (s->state == S_DRAIN || s->state == S_HOLD) {
      s->rlen = 0;     /* nothing more is expected in this session */
      return true;
    }
  }
  if (start) {
    memmove(s->rbuf, s->rbuf + start, s->rlen - start);
    s->rlen = (uint16_t)(s->rlen - start);
  }
  if (s->rlen == sizeof(s->rbuf)) {
    t->r.err.protocol++;       /* a line longer than RFC 5321 allows */
    bump(&t->c_errors);
    end_session(t, s, false, now);
    return false;
  }
  return true;
}

/* See bench_int.h. */
void bench_sess_lost(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  if (s->state == S_DRAIN) {
    end_session(t, s, true, now);   /* the close we waited for after 221 */
    return;
  }
  t->r.err.disconnect++;
  bump(&t->c_errors);
  end_session(t, s, false, now);
}

/* See bench_int.h. */
void bench_sess_received(struct bench_thread *t, struct bench_sess *s, size_t n,
                         uint64_t now)
{
  if (s->state == S_DRAIN || s->state == S_HOLD) {
    if (s->state == S_HOLD) {
      /* An idle session got something, e.g. a 421 timeout: it is lost. */
      t->r.err.disconnect++;
      bump(&t->c_errors);
      end_session(t, s, false, now);
    }
    s->rlen = 0;   /* DRAIN: ignore anything after 221 */
    return;
  }
  s->rlen = (uint16_t)(s->rlen + n);
  parse_replies(t, s, now);
}

/* See bench_int.h. */
bool bench_sess_flush(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  return flush(t, s, now);
}

/* See bench_int.h. */
void bench_sess_failed(struct bench_thread *t, struct bench_sess *s, int err,
                       uint64_t now)
{
  count_errno(t, err);
  end_session(t, s, false, now);
}

/* See bench_int.h. */
void bench_sess_connected(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  s->state = S_ACTIVE;
  set_events(t, s, false);
  expect(s, X_GREET);
}

static void on_readable(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  ssize_t n = read(s->fd, s->rbuf + s->rlen, sizeof(s->rbuf) - s->rlen);

  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return;
  if (n <= 0) {
    bench_sess_lost(t, s, now);
    return;
  }
  bench_sess_received(t, s, (size_t)n, now);
}

static void on_connected(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  int err = 0;
  socklen_t el = sizeof(err);

  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
    err = errno;
  if (err) {
    bench_sess_failed(t, s, err, now);
    return;
  }
  bench_sess_connected(t, s, now);
}

/* The socket transport: non-blocking sockets on the thread's epoll. */
static int sock_open(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  const struct bench_config *c = t->cfg;
  int fd, one = 1, e;

  fd = socket(c->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (c->n_sources) {
    unsigned i = t->src_rr++ % c->n_sources;
    /* Let connect() choose the port per (source, target) pair, so each
     * source address brings its own ephemeral port range. */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&c->sources[i], c->source_len[i]) < 0)
      goto fail;
  }
  struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT,
                            .data.u32 = (uint32_t)(s - t->s) };
  if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
    goto fail;
  if (connect(fd, (const struct sockaddr *)&c->target, c->target_len) < 0 &&
      errno != EINPROGRESS)
    goto fail;
  s->fd = fd;
  return 0;
fail:
  e = errno;
  close(fd);       /* also leaves the epoll set */
  return -e;
}

static long sock_send(struct bench_thread *t, struct bench_sess *s,
                      const struct iovec *v, int n)
{
  ssize_t k = writev(s->fd, v, n);

  if (k < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  return k;
}

static void sock_want_out(struct bench_thread *t, struct bench_sess *s, bool on)
{
  struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0),
                            .data.u32 = (uint32_t)(s - t->s) };
  epoll_ctl(t->epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

static void sock_release(struct bench_thread *t, struct bench_sess *s, bool abortive)
{
  if (abortive) {
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  close(s->fd);
}

static const struct bench_io sock_io = {
  .open = sock_open, .send = sock_send, .want_out = sock_want_out,
  .release = sock_release,
};

/* Opens a new session in slot s; false if it failed at once. */
static bool start_session(struct bench_thread *t, struct bench_sess *s, uint64_t now)
{
  const struct bench_config *c = t->cfg;
  int rc;

  memset(s, 0, offsetof(struct bench_sess, iov));
  s->fd = -1;
  t->r.sessions_started++;
  if (c->mode == BENCH_HOLD) {
    s->opening = 1;
    t->opening++;
  }
  s->t_connect = now_ns();
  s->deadline = now + (uint64_t)(c->timeout_s * NS_PER_S);
  s->state = S_CONNECTING;
  s->want_out = 1;
  rc = t->io->open(t, s, now);
  if (rc < 0) {
    bench_sess_failed(t, s, -rc, now);
    return false;
  }
  t->active++;
  return true;
}

/* Closed loop and hold mode: keep every free slot busy. */
static void pump_starts(struct bench_thread *t, uint64_t now)
{
  const struct bench_config *c = t->cfg;
  struct bench_shared *g = t->g;

  while (t->nfree > 0) {
    if (c->mode == BENCH_HOLD && t->opening >= HOLD_OPENING_MAX)
      return;
    if (!claim(&g->sess_claimed, c->max_sessions))
      return;
    /* A session starts only with its first message secured, so a count-
     * bounded run opens no sessions that would have nothing to send. */
    if (c->msgs_per_session && c->mode != BENCH_HOLD &&
        !claim(&g->msg_claimed, c->max_messages))
      return;
    struct bench_sess *s = &t->s[t->freelist[--t->nfree]];
    start_session(t, s, now);
    s->ticket = c->msgs_per_session && c->mode != BENCH_HOLD;
  }
}

/* Open loop: sessions arrive on schedule whether or not earlier ones are
 * done; an arrival with no free slot is counted as missed, not queued. */
static void open_arrivals(struct bench_thread *t, uint64_t now)
{
  const struct bench_config *c = t->cfg;
  unsigned k = 0;

  while (!t->arrivals_done && now >= t->next_arrival && k++ < ARRIVALS_PER_LOOP) {
    t->next_arrival += t->interval_ns;
    if (!claim(&t->g->sess_claimed, c->max_sessions) ||
        (c->msgs_per_session && !claim(&t->g->msg_claimed, c->max_messages))) {
      t->arrivals_done = true;
      break;
    }
    if (t->nfree == 0) {
      t->r.sessions_missed++;
      continue;
    }
    struct bench_sess *s = &t->s[t->freelist[--t->nfree]];
    start_session(t, s, now);
    s->ticket = c->msgs_per_session > 0;
  }
}

static void scan(struct bench_thread *t, uint64_t now)
{
  for (unsigned i = 0; i < t->n; i++) {
    struct bench_sess *s = &t->s[i];
    if (s->state == S_BACKOFF) {
      if (now >= s->deadline) {
        s->state = S_FREE;
        t->freelist[t->nfree++] = i;
      }
    } else if ((s->fd >= 0 || s->conn) && s->deadline && now >= s->deadline &&
               s->state != S_HOLD && s->state != S_FREE) {
      if (s->state == S_DRAIN) {
        end_session(t, s, true, now);  /* 221 was seen; the close is late */
        continue;
      }
      t->r.err.timeout++;
      bump(&t->c_errors);
      end_session(t, s, false, now);
    }
  }
}

static bool thread_done(struct bench_thread *t)
{
  const struct bench_config *c = t->cfg;
  struct bench_shared *g = t->g;

  if (t->active > 0)
    return false;
  if (c->mode == BENCH_OPEN || t->arrivals_done)
    return t->arrivals_done;
  if (c->msgs_per_session && !tickets_left(&g->msg_claimed, c->max_messages))
    return true;
  return !tickets_left(&g->sess_claimed, c->max_sessions);
}

/* See bench_int.h. */
bool bench_thread_tick(struct bench_thread *t, uint64_t now)
{
  struct bench_shared *g = t->g;
  uint64_t hu = __atomic_load_n(&g->hold_until, __ATOMIC_RELAXED);

  if (__atomic_load_n(&g->stop, __ATOMIC_RELAXED) || now >= g->hard_deadline ||
      (hu && now >= hu))
    return false;
  /* After the soft deadline only what is in flight may finish: a message
   * whose data was sent gets its reply, so the server's count and ours
   * agree; the hard deadline cuts off whatever still hangs. */
  bool draining = now >= g->soft_deadline;
  if (draining && t->cfg->mode == BENCH_HOLD)
    return false;
  if (draining)
    t->arrivals_done = true;
  else if (t->cfg->mode == BENCH_OPEN)
    open_arrivals(t, now);
  else
    pump_starts(t, now);
  if (now >= t->next_scan) {
    scan(t, now);
    t->next_scan = now + SCAN_NS;
  }
  return !thread_done(t);
}

/* See bench_int.h. */
void bench_thread_end(struct bench_thread *t)
{
  __atomic_store_n(&t->t_end, now_ns(), __ATOMIC_RELEASE);
  for (unsigned i = 0; i < t->n; i++) {
    struct bench_sess *s = &t->s[i];
    if (s->fd >= 0 || s->conn) {
      t->io->release(t, s, false);
      s->fd = -1;
      s->conn = NULL;
    }
  }
}

static void *thread_main(void *arg)
{
  struct bench_thread *t = arg;
  struct epoll_event evs[256];

  for (;;) {
    uint64_t now = now_ns();
    if (!bench_thread_tick(t, now))
      break;
    int timeout_ms = 50;
    if (t->cfg->mode == BENCH_OPEN && !t->arrivals_done) {
      uint64_t d = t->next_arrival > now ? t->next_arrival - now : 0;
      if (d / 1000000 < (uint64_t)timeout_ms)
        timeout_ms = (int)(d / 1000000);
    }
    int n = epoll_wait(t->epfd, evs, 256, timeout_ms);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    now = now_ns();
    for (int i = 0; i < n; i++) {
      struct bench_sess *s = &t->s[evs[i].data.u32];
      uint32_t e = evs[i].events;
      if (s->fd < 0)
        continue;
      if (s->state == S_CONNECTING) {
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
          on_connected(t, s, now);
        continue;
      }
      if ((e & EPOLLOUT) && s->niov) {
        if (!flush(t, s, now))
          continue;
      }
      if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(t, s, now);
    }
  }
  bench_thread_end(t);
  return NULL;
}

static int build_shared(struct bench_shared *g, const struct bench_config *c)
{
  uint32_t maxsz = 0;
  const char *at = strchr(c->rcpt_to, '@');
  size_t off = 0;

  g->cfg = c;
  g->ehlo_len = (size_t)snprintf(g->ehlo, sizeof(g->ehlo), "EHLO %s\r\n", c->helo);
  g->mail_len = (size_t)snprintf(g->mail, sizeof(g->mail), "MAIL FROM:<%s>\r\n",
                                 c->mail_from);
  for (unsigned i = 0; i < c->rcpts; i++) {
    g->rcpt_off[i] = off;
    if (i == 0)
      off += (size_t)snprintf(g->rcpts + off, sizeof(g->rcpts) - off,
                              "RCPT TO:<%s>\r\n", c->rcpt_to);
    else
      off += (size_t)snprintf(g->rcpts + off, sizeof(g->rcpts) - off,
                              "RCPT TO:<%.*s+%u%s>\r\n", (int)(at - c->rcpt_to),
                              c->rcpt_to, i, at);
  }
  g->rcpt_off[c->rcpts] = off;
  g->header_len = (size_t)snprintf(g->header, sizeof(g->header),
      "From: <%s>\r\nTo: <%s>\r\nSubject: mxedge-bench load\r\n"
      "X-Mailer: mxedge-bench " MXEDGE_VERSION "\r\n\r\n", c->mail_from, c->rcpt_to);
  for (unsigned i = 0; i < c->n_sizes; i++) {
    if (c->sizes[i].bytes > maxsz)
      maxsz = c->sizes[i].bytes;
    g->weight_total += c->sizes[i].weight;
  }
  if (g->header_len + 2 > BENCH_MIN_MSG_SIZE)
    return -EINVAL;
  g->lines = malloc(maxsz + LINE_LEN);
  if (!g->lines)
    return -ENOMEM;
  /* Body lines never start with '.', so no dot-stuffing (RFC 5321 §4.5.2). */
  for (size_t i = 0; i < maxsz + LINE_LEN; i++) {
    size_t col = i % LINE_LEN;
    g->lines[i] = col == LINE_LEN - 2 ? '\r' : col == LINE_LEN - 1 ? '\n'
                                      : (char)('a' + (col + i / LINE_LEN) % 26);
  }
  memset(g->tail, 'z', TAIL_LEN - 2);
  g->tail[TAIL_LEN - 2] = '\r';
  g->tail[TAIL_LEN - 1] = '\n';
  return 0;
}

static int raise_nofile(unsigned need)
{
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return -errno;
  if (rl.rlim_cur >= need)
    return 0;
  if (rl.rlim_max < need)
    rl.rlim_max = need;       /* works as root; otherwise setrlimit says so */
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
    return -errno;
  return 0;
}

/* See bench_int.h. */
void bench_engine_progress(struct bench_thread *th, unsigned n,
                           const struct bench_config *c, double t,
                           uint64_t *last_acc, uint64_t *last_sess)
{
  uint64_t acc = 0, sess = 0, err = 0, held = 0, att = 0;

  for (unsigned i = 0; i < n; i++) {
    acc += __atomic_load_n(&th[i].c_accepted, __ATOMIC_RELAXED);
    sess += __atomic_load_n(&th[i].c_sessions, __ATOMIC_RELAXED);
    err += __atomic_load_n(&th[i].c_errors, __ATOMIC_RELAXED);
    held += __atomic_load_n(&th[i].c_held, __ATOMIC_RELAXED);
    att += __atomic_load_n(&th[i].c_attempted, __ATOMIC_RELAXED);
  }
  if (c->mode == BENCH_HOLD)
    fprintf(stderr, "  %6.1fs  held %llu/%u  errors %llu\n", t,
            (unsigned long long)held, c->sessions, (unsigned long long)err);
  else
    fprintf(stderr, "  %6.1fs  accepted %llu (%llu/s)  sessions %llu (%llu/s)  "
            "attempted %llu  errors %llu\n", t, (unsigned long long)acc,
            (unsigned long long)(acc - *last_acc), (unsigned long long)sess,
            (unsigned long long)(sess - *last_sess), (unsigned long long)att,
            (unsigned long long)err);
  *last_acc = acc;
  *last_sess = sess;
}

static uint64_t held_total(struct bench_thread *th, unsigned n)
{
  uint64_t held = 0;
  for (unsigned i = 0; i < n; i++)
    held += __atomic_load_n(&th[i].c_held, __ATOMIC_RELAXED);
  return held;
}

void bench_result_add(struct bench_result *dst, const struct bench_result *src)
{
  if (src->elapsed_s > dst->elapsed_s)
    dst->elapsed_s = src->elapsed_s;
  dst->sessions_started += src->sessions_started;
  dst->sessions_completed += src->sessions_completed;
  dst->sessions_missed += src->sessions_missed;
  dst->messages_attempted += src->messages_attempted;
  dst->messages_accepted += src->messages_accepted;
  dst->bytes_accepted += src->bytes_accepted;
  dst->held_max += src->held_max;
  dst->err.connect += src->err.connect;
  for (size_t k = 0; k < sizeof(src->err.connect_errno) / sizeof(uint64_t); k++)
    dst->err.connect_errno[k] += src->err.connect_errno[k];
  dst->err.timeout += src->err.timeout;
  dst->err.disconnect += src->err.disconnect;
  dst->err.protocol += src->err.protocol;
  for (int k = 0; k < 1000; k++)
    dst->err.reply[k] += src->err.reply[k];
  bench_hist_merge(&dst->connect_220, &src->connect_220);
  bench_hist_merge(&dst->eod_250, &src->eod_250);
}

/* See bench_int.h. */
int bench_engine_setup(const struct bench_config *cfg, unsigned nth,
                       const struct bench_io *io, void *io_ctx,
                       struct bench_shared **gp, struct bench_thread **thp)
{
  struct bench_shared *g;
  struct bench_thread *th;
  int rc;

  *gp = g = calloc(1, sizeof(*g));
  *thp = th = calloc(nth, sizeof(*th));
  if (!g || !th)
    return -ENOMEM;
  for (unsigned i = 0; i < nth; i++)
    th[i].epfd = -1;
  rc = build_shared(g, cfg);
  if (rc < 0)
    return rc;
  for (unsigned i = 0; i < nth; i++) {
    struct bench_thread *t = &th[i];
    t->g = g;
    t->cfg = cfg;
    t->id = i;
    t->io = io;
    t->io_ctx = io_ctx;
    t->n = cfg->sessions / nth + (i < cfg->sessions % nth);
    t->s = calloc(t->n, sizeof(*t->s));
    t->freelist = calloc(t->n, sizeof(*t->freelist));
    if (!t->s || !t->freelist)
      return -ENOMEM;
    for (unsigned k = 0; k < t->n; k++) {
      t->s[k].fd = -1;
      t->freelist[t->nfree++] = t->n - 1 - k;
    }
    t->rng = 0x9E3779B97F4A7C15ull * (i + 1);
    bench_hist_init(&t->r.connect_220);
    bench_hist_init(&t->r.eod_250);
  }
  g->t0 = now_ns();
  g->soft_deadline = g->t0 + (uint64_t)(cfg->duration_s * NS_PER_S);
  g->hard_deadline = g->soft_deadline + (uint64_t)(cfg->grace_s * NS_PER_S);
  for (unsigned i = 0; i < nth; i++) {
    struct bench_thread *t = &th[i];
    if (cfg->mode == BENCH_OPEN) {
      t->interval_ns = (uint64_t)((double)NS_PER_S * nth / cfg->rate);
      if (t->interval_ns == 0)
        t->interval_ns = 1;
      t->next_arrival = g->t0 + t->interval_ns * i / nth;
    }
  }
  return 0;
}

/* See bench_int.h. */
void bench_engine_collect(struct bench_shared *g, struct bench_thread *th,
                          unsigned started, struct bench_result *res)
{
  uint64_t t_end = g->t0;

  for (unsigned i = 0; i < started; i++)
    if (th[i].t_end > t_end)
      t_end = th[i].t_end;
  res->elapsed_s = (double)(t_end - g->t0) / NS_PER_S;
  bench_hist_init(&res->connect_220);
  bench_hist_init(&res->eod_250);
  for (unsigned i = 0; i < started; i++) {
    double el = res->elapsed_s;
    bench_result_add(res, &th[i].r);
    res->elapsed_s = el;
  }
}

/* See bench_int.h. */
void bench_engine_free(struct bench_shared *g, struct bench_thread *th, unsigned nth)
{
  if (th) {
    for (unsigned i = 0; i < nth; i++) {
      if (th[i].epfd >= 0)
        close(th[i].epfd);
      free(th[i].s);
      free(th[i].freelist);
    }
    free(th);
  }
  if (g) {
    free(g->lines);
    free(g);
  }
}

int bench_run(const struct bench_config *cfg, struct bench_result *res)
{
  struct bench_shared *g = NULL;
  struct bench_thread *th = NULL;
  unsigned nth = cfg->threads, started = 0;
  int rc = 0;
  sigset_t sigs;
  char errbuf[256];

  memset(res, 0, sizeof(*res));
  res->stop_signal = 0;
  if (bench_config_check(cfg, errbuf, sizeof(errbuf)) < 0)
    return -EINVAL;
  if (nth > cfg->sessions)
    nth = cfg->sessions;
  rc = raise_nofile(cfg->sessions + 64);
  if (rc < 0) {
    fprintf(stderr, "mxedge-bench: cannot raise the open-file limit to %u: %s\n",
            cfg->sessions + 64, strerror(-rc));
    return rc;
  }
  rc = bench_engine_setup(cfg, nth, &sock_io, NULL, &g, &th);
  if (rc < 0)
    goto fail;
  for (unsigned i = 0; i < nth; i++) {
    th[i].epfd = epoll_create1(EPOLL_CLOEXEC);
    if (th[i].epfd < 0) {
      rc = -errno;
      goto fail;
    }
  }
  for (unsigned i = 0; i < nth; i++) {
    struct bench_thread *t = &th[i];
    rc = -pthread_create(&t->tid, NULL, thread_main, t);
    if (rc < 0) {
      __atomic_store_n(&g->stop, 1, __ATOMIC_RELAXED);
      break;
    }
    started++;
  }

  /* The caller blocked SIGINT/SIGTERM; the workers inherited the mask, so
   * only this wait sees them: one stops the run, the report still comes. */
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  {
    uint64_t next_progress = g->t0 + NS_PER_S, last_acc = 0, last_sess = 0;
    for (;;) {
      struct timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
      int sig = sigtimedwait(&sigs, NULL, &ts);
      uint64_t now = now_ns();
      if (sig == SIGINT || sig == SIGTERM) {
        fprintf(stderr, "mxedge-bench: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        __atomic_store_n(&g->stop, 1, __ATOMIC_RELAXED);
        res->stop_signal = sig;
      }
      unsigned running = 0;
      for (unsigned i = 0; i < started; i++)
        running += __atomic_load_n(&th[i].t_end, __ATOMIC_RELAXED) == 0;
      if (running == 0)
        break;
      if (cfg->coord) {
        /* A child of bench_run_procs: the parent decides when every
         * process's sessions are up and how long they are held. */
        struct bench_coord *k = cfg->coord;
        __atomic_store_n(&k->held[cfg->coord_slot], held_total(th, started),
                         __ATOMIC_RELAXED);
        uint64_t hu = __atomic_load_n(&k->hold_until, __ATOMIC_RELAXED);
        if (hu && res->hold_ready_s == 0) {
          res->hold_ready_s = (double)(now - g->t0) / NS_PER_S;
          __atomic_store_n(&g->hold_until, hu, __ATOMIC_RELAXED);
        }
        if (__atomic_load_n(&k->stop, __ATOMIC_RELAXED))
          __atomic_store_n(&g->stop, 1, __ATOMIC_RELAXED);
      } else if (cfg->mode == BENCH_HOLD && res->hold_ready_s == 0 &&
          held_total(th, started) >= cfg->sessions) {
        res->hold_ready_s = (double)(now - g->t0) / NS_PER_S;
        __atomic_store_n(&g->hold_until, now + (uint64_t)(cfg->hold_s * NS_PER_S),
                         __ATOMIC_RELAXED);
        fprintf(stderr, "mxedge-bench: holding %u sessions after %.2fs\n",
                cfg->sessions, res->hold_ready_s);
        if (cfg->ready_file) {
          FILE *f = fopen(cfg->ready_file, "w");
          if (f) {
            fprintf(f, "%u\n", cfg->sessions);
            fclose(f);
          }
        }
      }
      if (cfg->progress && now >= next_progress) {
        bench_engine_progress(th, started, cfg, (double)(now - g->t0) / NS_PER_S,
                      &last_acc, &last_sess);
        next_progress += NS_PER_S;
      }
    }
  }
  for (unsigned i = 0; i < started; i++)
    pthread_join(th[i].tid, NULL);
  bench_engine_collect(g, th, started, res);
  if (rc == 0 && started < nth)
    rc = -EAGAIN;

fail:
  bench_engine_free(g, th, nth);
  return rc;
}
