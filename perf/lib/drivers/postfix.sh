# shellcheck shell=bash
# System under test: Postfix as a relay-only MX, a private instance in the
# sut namespace, relaying everything for bench.test to smtp-sink in the snk
# namespace. Its config directory, queue and log live in $PERF_WORK/postfix;
# the machine's own Postfix configuration is not read or changed (root may
# use `postfix -c DIR` without alternate_config_directories).
#
# Durability: Postfix's cleanup(8) fsyncs every queue file before smtpd
# answers 250 to end-of-data; that is its default and cannot be turned off
# by configuration, so "fsync on" needs no setting.
#
# Profiles:
#   accept   relay-only MX, default process limits raised for 200 sessions
#   drain    as accept, with defer_transports=relay so messages pile up
#            until postfix_flush is called
#   idle     process limit raised so every idle session gets its smtpd
#            (PERF_IDLE_SESSIONS + 100)

postfix_status() {
  command -v postfix >/dev/null && [ -x /usr/lib/postfix/sbin/master ] \
    || { echo "not installed: Debian package postfix"; return 0; }
  command -v smtp-sink >/dev/null || { echo "not installed: smtp-sink (Debian package postfix)"; return 0; }
  echo ok
}

postfix_addr() { echo "$PERF_SUT_ADDR:25"; }

POSTFIX_DIR=""
postfix_start() {
  local profile=${1:-accept} limit=300
  POSTFIX_DIR=$PERF_WORK/postfix
  rm -rf "$POSTFIX_DIR"
  mkdir -p "$POSTFIX_DIR"/{etc,spool,data,log}
  chown postfix "$POSTFIX_DIR/data"
  [ "$profile" = idle ] && limit=$(( ${PERF_IDLE_SESSIONS:-1000} + 100 ))
  # master.cf: Debian's, with chroot off (a private instance has no chroot
  # tree) and smtpd listening on the sut address only.
  sed -E -e 's/^(\S+\s+\S+\s+\S+\s+\S+\s+)y(\s)/\1n\2/' \
         -e "s/^smtp(\s+)inet/$PERF_SUT_ADDR:25\1inet/" \
         /etc/postfix/master.cf >"$POSTFIX_DIR/etc/master.cf"
  cat >"$POSTFIX_DIR/etc/main.cf" <<EOF
# Private relay-only MX for mxedge benchmarks (perf/lib/drivers/postfix.sh).
compatibility_level = 3.6
queue_directory = $POSTFIX_DIR/spool
data_directory = $POSTFIX_DIR/data
maillog_file = $POSTFIX_DIR/log/maillog
maillog_file_prefixes = $POSTFIX_DIR/log
myhostname = sut.bench.test
mydomain = bench.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
relay_domains = bench.test
relay_recipient_maps =
relayhost = [$PERF_SINK_ADDR]:25
inet_interfaces = $PERF_SUT_ADDR
# With a single inet_interfaces address the SMTP client would use it as its
# source too; the sink's side of the network is a different link.
smtp_bind_address = $PERF_SUT_RELAY_ADDR
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
# No resolver in the namespaces: skip the per-client reverse lookup, which
# would otherwise time out quietly on every connection (DESIGN.md).
smtpd_peername_lookup = no
# All load comes from one client network; anvil's per-client limits would
# turn the benchmark into a test of those limits.
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = $limit
biff = no
EOF
  if [ "$profile" = drain ]; then
    echo "defer_transports = relay" >>"$POSTFIX_DIR/etc/main.cf"
  fi
  # POSTFIX_DAEMON_DIR: a private daemon_directory (the cpu scenario's
  # wrappers that run every daemon under callgrind).
  if [ -n "${POSTFIX_DAEMON_DIR:-}" ]; then
    echo "daemon_directory = $POSTFIX_DAEMON_DIR" >>"$POSTFIX_DIR/etc/main.cf"
  fi
  netns_exec sut postfix -c "$POSTFIX_DIR/etc" start >"$POSTFIX_DIR/start.log" 2>&1 \
    || { echo "postfix start failed: $(cat "$POSTFIX_DIR/start.log") $(tail -3 "$POSTFIX_DIR/log/maillog" 2>/dev/null)" >&2; return 1; }
  local i
  # Up to 30 s: under callgrind (cpu scenario) the master starts slowly.
  for i in $(seq 300); do
    netns_exec sut ss -ltn 2>/dev/null | grep -q "$PERF_SUT_ADDR:25 " && return 0
    sleep 0.1
  done
  echo "postfix did not listen on $PERF_SUT_ADDR:25: $(tail -3 "$POSTFIX_DIR/log/maillog")" >&2
  return 1
}

postfix_stop() {
  [ -n "$POSTFIX_DIR" ] || return 0
  netns_exec sut postfix -c "$POSTFIX_DIR/etc" stop >/dev/null 2>&1 || true
  # `postfix stop` returns before the children are gone; the namespace must
  # be empty before the next system starts. POSTFIX_STOP_WAIT (tenths of a
  # second, default 5 s) is longer under callgrind, which writes its
  # counts as each daemon exits.
  local i
  for i in $(seq "${POSTFIX_STOP_WAIT:-50}"); do
    [ -z "$(ip netns pids "$(netns_name sut)" 2>/dev/null)" ] && break
    sleep 0.1
  done
  ip netns pids "$(netns_name sut)" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  POSTFIX_DIR=""
}

# Every process of the instance (master and all its children).
postfix_pids() { ip netns pids "$(netns_name sut)"; }

# Messages in the queue (all queues), via postqueue's JSON output.
postfix_queue_count() {
  netns_exec sut postqueue -c "$POSTFIX_DIR/etc" -j 2>/dev/null | wc -l
}
# The same, cheaply: queue files on disk (no process per poll).
postfix_queue_files() {
  find "$POSTFIX_DIR"/spool/{incoming,active,deferred,maildrop,hold} -type f 2>/dev/null | wc -l
}

# Postfix's own log: one status=sent line per message delivered.
postfix_sent_log() { echo "$POSTFIX_DIR/log/maillog"; }

# Waits (bounded in time) until the queue is empty; returns 1 on timeout.
postfix_wait_empty() {
  local end=$(( $(date +%s) + ${1:-60} ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ "$(postfix_queue_files)" = 0 ] && return 0
    sleep 0.2
  done
  return 1
}

# Messages left in the queue, for the drain table.
postfix_queue_left() { postfix_queue_files; }

# drain profile: deliver everything queued now ("sendmail -q").
postfix_flush() {
  netns_exec sut postqueue -c "$POSTFIX_DIR/etc" -f
}

# Messages the instance has taken in so far (qmgr logs each new queue file
# once with its sender; the load generator's sender is load@bench.test).
postfix_received_count() {
  grep -c 'qmgr\[[0-9]*\]: [0-9A-F]*: from=<load@bench.test>' "$POSTFIX_DIR/log/maillog" 2>/dev/null || true
}

# drain profile: waits (bounded) until every accepted message has been
# through the queue manager and sits in the deferred queue.
postfix_wait_queued() {  # postfix_wait_queued SECONDS [COUNT]
  local end=$(( $(date +%s) + ${1:-60} ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ "$(find "$POSTFIX_DIR"/spool/{incoming,active,maildrop} -type f 2>/dev/null | wc -l)" = 0 ] \
      && return 0
    sleep 0.2
  done
  return 1
}
