#!/usr/bin/env bash
# mxedge-control relays spooled mail to the customer's server, a real
# Postfix in its own namespace:
#  1. the server is down: messages are deferred (Postfix-format log lines),
#     listed by `queue.list`, and after it returns `queue.flush` delivers
#     them, byte for byte (dot-stuffing, 8-bit) apart from Postfix's headers;
#  2. one recipient accepted, one refused with 550: the first is delivered,
#     the second bounced with an RFC 3464 report that reaches the sender's
#     own route from <>; pflogsumm counts the log correctly;
#  3. kill -9 in the middle of a burst and a restart: every message is
#     delivered, none lost, duplicates only for what was in flight;
#  4. a destination that never answers: the 15-day lifetime (time-scaled to
#     seconds) expires and the sender gets a bounce.
set -euo pipefail
control=$1 ctl=$2 inject=$3
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
work=$(mktemp -d /tmp/mxt-relay.XXXXXX)
chmod 755 "$work"
mlog=$work/mail.log pf=$work/postfix
fail() {
  echo "FAIL: $*" >&2
  for f in "$mlog" "$work/mail2.log" "$work/control.out" "$pf/log/maillog"; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -25 "$f" >&2; }
  done
  exit 1
}
# wait_for SECONDS CMD...: polls CMD (bounded) until it succeeds.
wait_for() {
  local end=$(( $(date +%s) + $1 )); shift
  while [ "$(date +%s)" -lt "$end" ]; do "$@" && return 0; sleep 0.1; done
  return 1
}
count() { grep -c -- "$1" "$2" 2>/dev/null || true; }
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; }

netns_init
netns_host edge
netns_host mx
netns_link edge mx 198.18.70.1/24 198.18.70.2/24

# ---- the customer's server: a private Postfix delivering to maildirs ----
mkdir -p "$pf"/{etc,spool,data,log,mail}
chown postfix "$pf/data"
chown nobody:nogroup "$pf/mail"
sed -E -e 's/^(\S+\s+\S+\s+\S+\s+\S+\s+)y(\s)/\1n\2/' \
       -e 's/^smtp(\s+)inet/198.18.70.2:25\1inet/' /etc/postfix/master.cf >"$pf/etc/master.cf"
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
virtual_mailbox_domains = customer.test, sender.test
virtual_mailbox_base = $pf/mail
virtual_mailbox_maps = texthash:$pf/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
inet_interfaces = 198.18.70.2
inet_protocols = ipv4
mynetworks = 198.18.70.0/24
smtpd_peername_lookup = no
biff = no
CF
printf '%s\n' "tj@customer.test customer.test/tj/" "alice@sender.test sender.test/alice/" \
  >"$pf/etc/vmailbox"
pf_start() {
  netns_exec mx postfix -c "$pf/etc" start >"$work/pf-start.log" 2>&1 \
    || fail "postfix start: $(cat "$work/pf-start.log")"
  wait_for 10 sh -c "nsenter --net=/run/netns/$(netns_name mx) ss -ltn | grep -q '198.18.70.2:25 '" \
    || fail "postfix does not listen"
}
pf_stop() {
  netns_exec mx postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
  wait_for 10 sh -c "[ -z \"\$(ip netns pids $(netns_name mx))\" ]" || true
  ip netns pids "$(netns_name mx)" | xargs -r kill -KILL 2>/dev/null || true
}
delivered() { find "$pf/mail/$1/new" -type f 2>/dev/null | wc -l; }

# ---- the message: dot-stuffing cases and 8-bit bytes --------------------
mkmsg() {  # mkmsg TAG FILE
  printf '%s\r\n' \
    "Received: from mail.example.org (mail.example.org [198.18.7.23])" \
    "	by edge.test (mxedge) with ESMTP id $1-@@N@@" \
    "	for <tj@customer.test>; Sun, 29 Nov 2026 10:06:12 +0000" \
    "From: Alice <alice@sender.test>" \
    "To: tj@customer.test" \
    "Subject: relay test $1 @@N@@" \
    "Message-ID: <$1-@@N@@.relaytest@sender.test>" \
    "MIME-Version: 1.0" \
    "Content-Type: text/plain; charset=utf-8" \
    "Content-Transfer-Encoding: 8bit" \
    "" \
    "Hello TJ, message $1 @@N@@." \
    ".a line that starts with a dot" \
    "..and one with two" \
    "." \
    "Grüße, naïve café — 8-bit bytes pass through untouched." \
    "last line" >"$2"
}
mkmsg p1 "$work/p1.eml"; mkmsg p2 "$work/p2.eml"; mkmsg p3 "$work/p3.eml"; mkmsg p4 "$work/p4.eml"

# Every delivered copy in maildir D equals its original (CRLF -> LF, as
# Postfix stores it) after Postfix's own Return-Path/Delivered-To/Received;
# prints "TAG-N" per copy.
check_copies() {
  /usr/bin/python3 - "$pf/mail/$1/new" "$work" <<'PY'
import os, re, sys
d, work = sys.argv[1], sys.argv[2]
for f in sorted(os.listdir(d)):
    data = open(os.path.join(d, f), 'rb').read()
    i = data.find(b'Received: from mail.example.org')
    if i < 0:
        sys.exit('%s: our message not found' % f)
    m = re.search(rb'Message-ID: <(p\d)-(\d+)\.relaytest', data)
    tag, n = m.group(1).decode(), m.group(2).decode()
    want = open(os.path.join(work, tag + '.eml'), 'rb').read()
    want = want.replace(b'@@N@@', n.encode()).replace(b'\r\n', b'\n')
    if data[i:] != want:
        sys.exit('%s: %s-%s differs from what was spooled' % (f, tag, n))
    print('%s-%s' % (tag, n))
PY
}

cat >"$work/relay.yaml" <<CF
hostname: edge.test
spool:
  dir: $work/spool
relay:
  state_dir: $work/state
  log_file: $mlog
  socket: $work/relay.sock
  metrics: 127.0.0.1:9187
  # 300 s minimum backoff become 30 s: a retry before that is the flush
  time_scale: 0.1
  concurrency: 4
  timeout: 20s
domains:
  customer.test:
    route: { host: 198.18.70.2, port: 25, tls: none }
  sender.test:
    route: { host: 198.18.70.2, port: 25 }
CF
"$control" --config "$work/relay.yaml" --check >/dev/null || fail "--check refused a valid file"
echo "relay: { time_scale: 3 }" >"$work/bad.yaml"
out=$("$control" --config "$work/bad.yaml" --check 2>&1) && fail "--check accepted time_scale 3"
echo "$out" | grep -q "bad.yaml:1:22: relay.time_scale" || fail "--check message: $out"

c() { "$ctl" --socket "$work/relay.sock" "$@"; }
start_control() {
  netns_spawn edge "$control" --config "$1" >>"$work/control.out" 2>&1
  cpid=$NETNS_LAST_PID
  wait_for 10 test -S "$2" || fail "mxedge-control did not start"
}

# ---- 1. server down: deferred; back up: flushed and delivered exactly ----
"$inject" "$work/spool" 3 "$work/p1.eml" alice@sender.test "SIZE=600 BODY=8BITMIME" \
  tj@customer.test >/dev/null || fail "inject"
start_control "$work/relay.yaml" "$work/relay.sock"
wait_for 15 at_least "status=deferred" "$mlog" 3 || fail "no deferral while the server is down"
grep -q 'mxedge/smtp\[[0-9]*\]: [0-9A-Za-z]\{11\}: to=<tj@customer.test>, relay=none, delay=[0-9.]*, delays=[0-9.]*/[0-9.]*/[0-9.]*/[0-9.]*, dsn=4.4.1, status=deferred (connect to 198.18.70.2\[198.18.70.2\]:25: Connection refused)' "$mlog" \
  || fail "deferral line is not in Postfix's format"
grep -q '^[0-9-]*T[0-9:.]*[+-][0-9][0-9]:[0-9][0-9] edge.test mxedge/qmgr\[[0-9]*\]: [0-9A-Za-z]\{11\}: from=<alice@sender.test>, size=[0-9]*, nrcpt=1 (queue active)' "$mlog" \
  || fail "no queue-active line with an RFC 3339 time"
[ "$(c --json queue.list | grep -o '"qid"' | wc -l)" = 3 ] || fail "queue.list does not show 3 messages"
qid=$(c --json queue.list | grep -o '"qid": *"[0-9A-Za-z]*"' | head -1 | sed 's/.*"\([0-9A-Za-z]*\)"$/\1/')
c --json queue.show qid="$qid" | grep -q '"state": *"deferred"' || fail "queue.show"
c queue.show qid=nonsense >/dev/null 2>&1 && fail "queue.show accepted a bad id"
{ c queue.show qid=00000000000 2>&1 || true; } | grep -qi "no such message" || fail "queue.show of an unknown id"
# One message is put on hold: the flush leaves it alone, and it stays held
# across the kill -9 restart of phase 3.
c queue.hold qid="$qid" >/dev/null || fail "queue.hold"
grep -q "mxedge/postsuper\[[0-9]*\]: $qid: placed on hold" "$mlog" || fail "no hold line"
pf_start
c queue.flush >/dev/null || fail "queue.flush"
wait_for 10 at_least "to=<tj@customer.test>.*status=sent" "$mlog" 2 \
  || fail "not delivered within 10 s of the flush (the backoff alone is >= 22 s)"
grep -q 'relay=198.18.70.2\[198.18.70.2\]:25, delay=[0-9.]*, delays=[0-9.]*/[0-9.]*/[0-9.]*/[0-9.]*, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as [0-9A-F]*)' "$mlog" \
  || fail "sent line is not in Postfix's format"
wait_for 10 at_least ": removed" "$mlog" 2 || fail "no removed lines"
wait_for 10 sh -c "[ \$(find '$pf/mail/customer.test/tj/new' -type f | wc -l) -ge 2 ]" || fail "not in the maildir"
copies=$(check_copies customer.test/tj) || fail "delivered copies differ: $copies"
[ "$(echo "$copies" | sort -u | wc -l)" = 2 ] || fail "expected 2 distinct copies: $copies"
grep -q "$qid: to=.*status=sent" "$mlog" && fail "the held message was delivered"
[ "$(c --json queue.list | grep -o '"qid"' | wc -l)" = 1 ] || fail "queue.list: not just the held message"
c --json queue.list | grep -q '"hold": *true' || fail "queue.list does not show the hold"

# ---- 2. per-recipient results and an RFC 3464 bounce ----------------------
"$inject" "$work/spool" 1 "$work/p2.eml" alice@sender.test "" \
  tj@customer.test,nobody@customer.test >/dev/null || fail "inject 2"
wait_for 15 grep -q "to=<nobody@customer.test>.*dsn=5.1.1, status=bounced (host 198.18.70.2 said: 550 5.1.1 <nobody@customer.test>" "$mlog" \
  || fail "550 recipient not bounced"
wait_for 15 grep -q "sender non-delivery notification" "$mlog" || fail "no bounce made"
wait_for 15 grep -q "to=<alice@sender.test>.*status=sent" "$mlog" || fail "bounce not delivered to the sender"
wait_for 10 sh -c "[ \$(find '$pf/mail/sender.test/alice/new' -type f 2>/dev/null | wc -l) -ge 1 ]" \
  || fail "bounce not in the sender's maildir"
b=$(find "$pf/mail/sender.test/alice/new" -type f | head -1)
for want in "Return-Path: <>" "report-type=delivery-status" "Content-Type: message/delivery-status" \
    "Reporting-MTA: dns; edge.test" "Final-Recipient: rfc822; nobody@customer.test" \
    "Action: failed" "Status: 5.1.1" "Remote-MTA: dns; 198.18.70.2" \
    "Diagnostic-Code: smtp; 550 5.1.1" "Content-Type: text/rfc822-headers" \
    "Message-ID: <p2-0.relaytest@sender.test>"; do
  grep -qF "$want" "$b" || fail "bounce lacks \"$want\""
done
grep -q "Final-Recipient: rfc822; tj@customer.test" "$b" && fail "bounce names the delivered recipient"
check_copies customer.test/tj | grep -q '^p2-0$' || fail "accepted recipient of the mixed message not delivered"
# pflogsumm (Debian) reads our log: 2 + 1 + the bounce delivered, 1 bounced,
# the 3 messages of phase 1 deferred.
cp "$mlog" "$work/mail.log.phase2"
pflogsumm --syslog-name=mxedge "$work/mail.log.phase2" >"$work/pflogsumm.txt" 2>&1 || fail "pflogsumm failed"
summ() { awk -v k="$1" '$2 == k && $1 ~ /^[0-9]+$/ { print $1; exit }' "$work/pflogsumm.txt"; }
[ "$(summ delivered)" = 4 ] || fail "pflogsumm delivered=$(summ delivered), expected 4"
[ "$(summ bounced)" = 1 ] || fail "pflogsumm bounced=$(summ bounced), expected 1"
[ "$(summ deferred)" = 3 ] || fail "pflogsumm deferred=$(summ deferred), expected 3"
# Prometheus metrics on the edge's loopback say the same.
netns_exec edge /usr/bin/python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9187/metrics", timeout=5).read().decode())' \
  >"$work/metrics.txt" || fail "no metrics"
for want in 'mxedge_relay_recipients_total{status="sent"} 4' \
    'mxedge_relay_recipients_total{status="bounced"} 1' \
    'mxedge_relay_recipients_total{status="deferred"} 3' \
    'mxedge_relay_queue_messages 1' 'mxedge_relay_queue_held_messages 1' \
    '# TYPE mxedge_relay_messages_total counter'; do
  grep -qxF "$want" "$work/metrics.txt" || fail "metrics lack \"$want\": $(cat "$work/metrics.txt")"
done
# the spool writer's fdatasync latencies reach the relay's scrape
grep -Eq '^mxedge_spool_sync_seconds_count [1-9]' "$work/metrics.txt" \
  && grep -q '^mxedge_spool_sync_seconds_bucket{le="+Inf"} [1-9]' "$work/metrics.txt" \
  || fail "no spool sync histogram: $(grep spool_sync "$work/metrics.txt")"

# ---- 3. kill -9 during a burst, restart: nothing lost ----------------------
n3=150
"$inject" "$work/spool" $n3 "$work/p3.eml" alice@sender.test "" tj@customer.test >/dev/null \
  || fail "inject 3"
wait_for 20 at_least "status=sent" "$mlog" 15 || fail "burst does not start"
kill -KILL "$cpid"
wait "$cpid" 2>/dev/null || true
sent_before=$(count "status=sent" "$mlog")
start_control "$work/relay.yaml" "$work/relay.sock"
held_listed() { c --json queue.show qid="$qid" 2>/dev/null | grep -q '"hold": *true'; }
wait_for 10 held_listed \
  || fail "the hold did not survive kill -9 and a restart"
c queue.release qid="$qid" >/dev/null || fail "queue.release"
# Every change made through the socket is in the audit log, with who.
audit=$(c --json audit)
for want in '"cmd": "queue.hold", "qid": "'$qid'", "old": "active", "new": "held"' \
    '"cmd": "queue.flush"' '"cmd": "queue.release", "qid": "'$qid'", "old": "held", "new": "active"'; do
  echo "$audit" | tr -d '\n' | sed 's/  */ /g' | grep -qF "$want" || fail "audit lacks $want: $audit"
done
echo "$audit" | grep -q '"uid": 0' || fail "audit does not say who"
wait_for 60 sh -c "[ \$(find '$pf/mail/customer.test/tj/new' -type f | wc -l) -ge $((3 + 1 + n3)) ]" \
  || fail "after kill -9 and restart not everything arrived ($(delivered customer.test/tj))"
sleep 1
copies=$(check_copies customer.test/tj) || fail "copies differ after restart: $copies"
got=$(echo "$copies" | grep -c '^p3-' || true)
uniq3=$(echo "$copies" | grep '^p3-' | sort -u | wc -l)
[ "$uniq3" = $n3 ] || fail "only $uniq3 of $n3 messages arrived after kill -9"
[ "$got" -le $((n3 + 8)) ] || fail "$((got - n3)) duplicates: more than what was in flight"
echo "kill -9 after $sent_before sent lines: $n3 messages, $((got - n3)) delivered twice"
# Every message is final: the relay deleted every segment but the newest
# (three injector runs made three).
wait_for 5 sh -c "[ \$(ls '$work/spool' | grep -c '\\.seg\$') = 1 ]" \
  || fail "spool segments not released: $(ls "$work/spool")"
kill -TERM "$cpid"
wait "$cpid" || fail "mxedge-control did not exit cleanly on SIGTERM"

# ---- 4. a dead destination: 15 days (scaled) later the sender hears -------
cat >"$work/relay2.yaml" <<CF
hostname: edge.test
spool: { dir: $work/spool2 }
relay:
  state_dir: $work/state2
  log_file: $work/mail2.log
  socket: $work/relay2.sock
  time_scale: 0.00001   # 15 days are 13 s; the 300 s backoff 3 ms
domains:
  down.test:
    route: { host: 198.18.70.2, port: 2526 }
  sender.test:
    route: { host: 198.18.70.2, port: 25 }
CF
"$inject" "$work/spool2" 1 "$work/p4.eml" alice@sender.test "" x@down.test >/dev/null || fail "inject 4"
start_control "$work/relay2.yaml" "$work/relay2.sock"
wait_for 40 grep -q "from=<alice@sender.test>, status=expired, returned to sender" "$work/mail2.log" \
  || fail "no expiry"
defers=$(count "to=<x@down.test>.*status=deferred" "$work/mail2.log")
[ "$defers" -ge 3 ] || fail "only $defers attempts before expiry"
wait_for 15 sh -c "[ \$(find '$pf/mail/sender.test/alice/new' -type f | wc -l) -ge 2 ]" \
  || fail "expiry bounce not delivered"
grep -l "Final-Recipient: rfc822; x@down.test" "$pf/mail/sender.test/alice/new"/* >/dev/null \
  || fail "expiry bounce does not name the recipient"
grep -h "^Status: " $(grep -l "x@down.test" "$pf/mail/sender.test/alice/new"/*) | grep -q "Status: 4.4" \
  || fail "expiry bounce status is not 4.4.x"
kill -TERM "$cpid"
wait "$cpid" || fail "mxedge-control did not exit cleanly"
pf_stop
echo "relay: ok ($defers attempts before expiry)"
rm -rf "$work"
