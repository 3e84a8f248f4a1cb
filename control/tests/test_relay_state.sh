#!/usr/bin/env bash
# mxedge-control's durable delivery state across restarts, against a real
# Postfix as the customer's server:
#  A. persisted retry times: a message deferred (server down) keeps its
#     next-attempt time over a restart: the restarted relay does not try it
#     before that time even though the server is back, and delivers it after;
#  B. compaction: one message deferred for relay.compact_after (time-scaled)
#     sits in a segment with 399 delivered ones; it is moved into the relay's
#     store, the segment is deleted, the state log is rewritten once it grows
#     past relay.state_log_max, and after kill -9 + restart the message is
#     still queued (nothing else re-delivered) and, once its server returns,
#     delivered byte for byte.
set -euo pipefail
control=$1 ctl=$2 inject=$3
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
work=$(mktemp -d /tmp/mxt-relaystate.XXXXXX)
chmod 755 "$work"
pf=$work/postfix
fail() {
  echo "FAIL: $*" >&2
  for f in "$work/a.log" "$work/b.log" "$work/control.out" "$pf/log/maillog"; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -25 "$f" >&2; }
  done
  exit 1
}
wait_for() {
  local end=$(( $(date +%s) + $1 )); shift
  while [ "$(date +%s)" -lt "$end" ]; do "$@" && return 0; sleep 0.1; done
  return 1
}
count() { grep -c -- "$1" "$2" 2>/dev/null || true; }
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; }
now_ms() { date +%s%3N; }

netns_init
netns_host edge
netns_host mx
netns_link edge mx 198.18.72.1/24 198.18.72.2/24

domains="customer.test later.test stuck.test"
mkdir -p "$pf"/{etc,spool,data,log,mail}
chown postfix "$pf/data"
chown nobody:nogroup "$pf/mail"
sed -E -e 's/^(\S+\s+\S+\s+\S+\s+\S+\s+)y(\s)/\1n\2/' \
       -e 's/^smtp(\s+)inet/198.18.72.2:25\1inet/' /etc/postfix/master.cf >"$pf/etc/master.cf"
cat >"$pf/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $pf/spool
data_directory = $pf/data
maillog_file = $pf/log/maillog
maillog_file_prefixes = $pf/log
myhostname = mx.customer.test
mydomain = customer.test
mydestination =
local_recipient_maps =
relay_domains =
virtual_mailbox_domains = ${domains// /, }
virtual_mailbox_base = $pf/mail
virtual_mailbox_maps = texthash:$pf/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
inet_interfaces = 198.18.72.2
inet_protocols = ipv4
mynetworks = 198.18.72.0/24
smtpd_peername_lookup = no
biff = no
CF
for d in $domains; do echo "tj@$d $d/tj/"; done >"$pf/etc/vmailbox"
listening() { nsenter --net="/run/netns/$(netns_name mx)" ss -ltn | grep -q "198.18.72.2:$1 "; }
netns_exec mx postfix -c "$pf/etc" start >"$work/pf-start.log" 2>&1 \
  || fail "postfix start: $(cat "$work/pf-start.log")"
wait_for 10 listening 25 || fail "postfix does not listen on 25"
# open_port PORT: the customer's server "returns" on PORT.
open_port() {
  echo "198.18.72.2:$1 inet n - n - - smtpd" >>"$pf/etc/master.cf"
  netns_exec mx postfix -c "$pf/etc" reload >/dev/null 2>&1 || fail "postfix reload"
  wait_for 10 listening "$1" || fail "postfix does not listen on $1"
}
pf_stop() {
  netns_exec mx postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
  wait_for 10 sh -c "[ -z \"\$(ip netns pids $(netns_name mx))\" ]" || true
  ip netns pids "$(netns_name mx)" | xargs -r kill -KILL 2>/dev/null || true
}
trap 'pf_stop; netns_cleanup' EXIT

mkmsg() {  # mkmsg TAG DOMAIN FILE
  printf '%s\r\n' \
    "Received: from mail.example.org (mail.example.org [198.18.7.23])" \
    "	by edge.test (mxedge) with ESMTP id $1-@@N@@" \
    "	for <tj@$2>; Sun, 29 Nov 2026 10:06:12 +0000" \
    "From: Alice <alice@sender.test>" \
    "To: tj@$2" \
    "Subject: state test $1 @@N@@" \
    "Message-ID: <$1-@@N@@.statetest@sender.test>" \
    "" \
    "Message $1 @@N@@." \
    ".a line that starts with a dot" \
    "Grüße — 8-bit bytes." \
    "last line" >"$3"
}
mkmsg a later.test "$work/a.eml"
mkmsg b customer.test "$work/b.eml"
check_copies() {  # check_copies DOMAIN -> "TAG-N" per copy, exit 1 on a difference
  /usr/bin/python3 - "$pf/mail/$1/tj/new" "$work" <<'PY'
import os, re, sys
d, work = sys.argv[1], sys.argv[2]
for f in sorted(os.listdir(d)):
    data = open(os.path.join(d, f), 'rb').read()
    i = data.find(b'Received: from mail.example.org')
    m = re.search(rb'Message-ID: <(\w+)-(\d+)\.statetest', data)
    if i < 0 or m is None:
        sys.exit('%s: our message not found' % f)
    tag, n = m.group(1).decode(), m.group(2).decode()
    want = open(os.path.join(work, tag + '.eml'), 'rb').read()
    want = want.replace(b'@@N@@', n.encode()).replace(b'\r\n', b'\n')
    if data[i:] != want:
        sys.exit('%s: %s-%s differs from what was spooled' % (f, tag, n))
    print('%s-%s' % (tag, n))
PY
}
start_control() {  # start_control CONFIG SOCKET
  netns_spawn edge "$control" --config "$1" >>"$work/control.out" 2>&1
  cpid=$NETNS_LAST_PID
  wait_for 10 test -S "$2" || fail "mxedge-control did not start"
}
stop_control() {  # stop_control SIGNAL
  kill "-$1" "$cpid"
  wait "$cpid" 2>/dev/null || true
}

# ---- A. the next-attempt time survives a restart ---------------------------
cat >"$work/a.yaml" <<CF
hostname: edge.test
spool: { dir: $work/spool-a }
relay:
  state_dir: $work/state-a
  log_file: $work/a.log
  socket: $work/a.sock
  time_scale: 0.08    # the 300 s backoff: 18-30 s with its jitter
domains:
  later.test: { route: { host: 198.18.72.2, port: 2600 } }
CF
"$inject" "$work/spool-a" 1 "$work/a.eml" alice@sender.test "" tj@later.test >/dev/null \
  || fail "inject A"
start_control "$work/a.yaml" "$work/a.sock"
wait_for 10 at_least "to=<tj@later.test>.*status=deferred" "$work/a.log" 1 \
  || fail "A: not deferred while the server is down"
t0=$(now_ms)
stop_control TERM
start_control "$work/a.yaml" "$work/a.sock"
[ $(( $(now_ms) - t0 )) -lt 12000 ] || fail "A: the restart took too long to test anything"
one_attempt() { "$ctl" --socket "$work/a.sock" --json queue.list | grep -q '"attempts": *1'; }
wait_for 3 one_attempt || fail "A: the restarted relay does not list the message with its 1 attempt"
open_port 2600   # the server is back; the relay waits for its time anyway
# The earliest retry is 18 s after the deferral: until 15 s, nothing.
while [ $(( $(now_ms) - t0 )) -lt 15000 ]; do sleep 0.1; done
[ "$(count "status=sent" "$work/a.log")" = 0 ] || fail "A: retried at once after the restart"
[ "$(count "status=deferred" "$work/a.log")" = 1 ] || fail "A: tried again before its time"
wait_for 60 at_least "to=<tj@later.test>.*status=sent" "$work/a.log" 1 \
  || fail "A: not delivered after its retry time"
dt=$(( $(now_ms) - t0 ))
[ "$dt" -ge 17000 ] || fail "A: delivered ${dt} ms after the deferral, before the backoff"
copies=$(check_copies later.test) || fail "A: $copies"
[ "$copies" = "a-0" ] || fail "A: delivered copies: $copies"
stop_control TERM
echo "A: retried $dt ms after the deferral, across a restart"

# ---- B. compaction ----------------------------------------------------------
cat >"$work/b.yaml" <<CF
hostname: edge.test
spool: { dir: $work/spool-b }
relay:
  state_dir: $work/state-b
  log_file: $work/b.log
  socket: $work/b.sock
  time_scale: 0.01       # compact_after 120 s -> 1.2 s, backoff 300 s -> ~3 s
  compact_after: 120s
  state_log_max: 4096
domains:
  customer.test: { route: { host: 198.18.72.2, port: 25 } }
  stuck.test: { route: { host: 198.18.72.2, port: 2601 } }
CF
# One segment: message 0 for stuck.test, 399 for customer.test.
out=$("$inject" "$work/spool-b" 400 "$work/b.eml" alice@sender.test "" tj@customer.test \
  tj@stuck.test) || fail "inject B"
stuck=$(echo "$out" | awk '$1 == 0 { print $2 }')
# A second run: a second, newer segment (the newest is never deleted).
"$inject" "$work/spool-b" 1 "$work/b.eml" alice@sender.test "" tj@customer.test >/dev/null \
  || fail "inject B2"
segs() { ls "$work/spool-b" | grep -c '\.seg$' || true; }
[ "$(segs)" = 2 ] || fail "B: expected 2 segments, got $(ls "$work/spool-b")"
start_control "$work/b.yaml" "$work/b.sock"
wait_for 90 at_least "to=<tj@customer.test>.*status=sent" "$work/b.log" 400 \
  || fail "B: the 400 deliverable messages were not sent"
wait_for 20 grep -q "$stuck: moved from the spool to the relay store" "$work/b.log" \
  || fail "B: the long-deferred message was not moved to the store"
wait_for 10 sh -c "[ \$(ls '$work/spool-b' | grep -c '\\.seg\$') = 1 ]" \
  || fail "B: the segment of the moved message was not deleted: $(ls "$work/spool-b")"
wait_for 10 grep -q "state log rewritten" "$work/control.out" || fail "B: state log not rewritten"
# Rewritten again only once it doubled while the mail still pinned it.
[ "$(count "state log rewritten" "$work/control.out")" -le 4 ] || fail "B: rewritten again and again"
# 400 "S" lines alone take over 12 KB: a rewrite must have dropped most.
shrunk() { awk '/state log rewritten/ && $7 * 4 < $5 { ok = 1 } END { exit !ok }' "$work/control.out"; }
wait_for 10 shrunk || fail "B: no rewrite dropped the lines of delivered mail"
size=$(stat -c %s "$work/state-b/state.log")
[ "$size" -lt 8192 ] || fail "B: state log $size bytes"
"$ctl" --socket "$work/b.sock" --json status | grep -q '"moved_to_store": *1' \
  || fail "B: status does not count the move"
stop_control KILL
sent=$(count "status=sent" "$work/b.log")
start_control "$work/b.yaml" "$work/b.sock"
listed() { "$ctl" --socket "$work/b.sock" --json queue.list 2>/dev/null | grep -q "\"qid\": *\"$stuck\""; }
wait_for 10 listed || fail "B: the moved message is not queued after kill -9 and a restart"
sleep 2
[ "$("$ctl" --socket "$work/b.sock" --json queue.list | grep -o '"qid"' | wc -l)" = 1 ] \
  || fail "B: after the restart the queue holds more than the moved message"
[ "$(count "status=sent" "$work/b.log")" = "$sent" ] || fail "B: delivered mail was sent again"
open_port 2601
"$ctl" --socket "$work/b.sock" queue.flush >/dev/null || fail "B: queue.flush"
wait_for 15 grep -q "$stuck: to=<tj@stuck.test>.*status=sent" "$work/b.log" \
  || fail "B: the moved message was not delivered once its server returned"
wait_for 10 sh -c "[ -n \"\$(ls -A '$pf/mail/stuck.test/tj/new' 2>/dev/null)\" ]" \
  || fail "B: not in the maildir"
sleep 1
copies=$(check_copies stuck.test) || fail "B: $copies"
[ "$copies" = "b-0" ] || fail "B: stuck.test copies: $copies"
n=$(check_copies customer.test | sort -u | wc -l)
all=$(check_copies customer.test | wc -l)
[ "$n" = 400 ] && [ "$all" = 400 ] || fail "B: customer.test got $all copies of $n messages, expected 400"
stop_control TERM
echo "relay-state: ok"
[ -n "${KEEP:-}" ] || rm -rf "$work"
