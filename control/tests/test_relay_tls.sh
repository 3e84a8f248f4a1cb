#!/usr/bin/env bash
# STARTTLS in mxedge-control's relay, against a real Postfix as the
# customer's server (self-signed certificate made here by openssl):
#   port 25   offers STARTTLS (smtpd_tls_security_level=may)
#   port 2525 offers no TLS
#   port 2526 offers STARTTLS but speaks only TLSv1.2, while the relay is
#             configured with tls_min_protocol: TLSv1.3, so handshakes fail
# Routes and what a user must see:
#   req.test     25   required       -> over TLS (Postfix's Received says
#                                       ESMTPS/TLSv1.3), byte-exact, three
#                                       messages on ONE TLS connection
#   may.test     25   opportunistic  -> over TLS
#   none.test    25   none           -> in clear although TLS is offered
#   opp.test     2525 opportunistic  -> in clear (not offered)
#   reqplain.test 2525 required      -> deferred dsn=4.7.4, still queued,
#                                       never delivered
#   fallback.test 2526 opportunistic -> handshake fails, retried at once in
#                                       plaintext (as Postfix does), delivered
set -euo pipefail
control=$1 ctl=$2 inject=$3
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
work=$(mktemp -d /tmp/mxt-relaytls.XXXXXX)
chmod 755 "$work"
mlog=$work/mail.log pf=$work/postfix
fail() {
  echo "FAIL: $*" >&2
  for f in "$mlog" "$work/control.out" "$pf/log/maillog"; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -30 "$f" >&2; }
  done
  exit 1
}
wait_for() {
  local end=$(( $(date +%s) + $1 )); shift
  while [ "$(date +%s)" -lt "$end" ]; do "$@" && return 0; sleep 0.1; done
  return 1
}
count() { grep -c -- "$1" "$2" 2>/dev/null || true; }

netns_init
netns_host edge
netns_host mx
netns_link edge mx 198.18.71.1/24 198.18.71.2/24

domains="req.test may.test none.test opp.test reqplain.test fallback.test"
mkdir -p "$pf"/{etc,spool,data,log,mail}
chown postfix "$pf/data"
chown nobody:nogroup "$pf/mail"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mx.customer.test \
  -keyout "$pf/etc/key.pem" -out "$pf/etc/cert.pem" >/dev/null 2>&1 || fail "openssl req"
sed -E -e 's/^(\S+\s+\S+\s+\S+\s+\S+\s+)y(\s)/\1n\2/' \
       -e 's/^smtp(\s+)inet/198.18.71.2:25\1inet/' /etc/postfix/master.cf >"$pf/etc/master.cf"
cat >>"$pf/etc/master.cf" <<'CF'
198.18.71.2:2525 inet n - n - - smtpd -o smtpd_tls_security_level=none
198.18.71.2:2526 inet n - n - - smtpd -o smtpd_tls_protocols=!SSLv2,!SSLv3,!TLSv1,!TLSv1.1,!TLSv1.3
CF
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
inet_interfaces = 198.18.71.2
inet_protocols = ipv4
mynetworks = 198.18.71.0/24
smtpd_peername_lookup = no
smtpd_tls_security_level = may
smtpd_tls_cert_file = $pf/etc/cert.pem
smtpd_tls_key_file = $pf/etc/key.pem
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
biff = no
CF
for d in $domains; do echo "tj@$d $d/tj/"; done >"$pf/etc/vmailbox"
netns_exec mx postfix -c "$pf/etc" start >"$work/pf-start.log" 2>&1 \
  || fail "postfix start: $(cat "$work/pf-start.log")"
listening() { nsenter --net="/run/netns/$(netns_name mx)" ss -ltn | grep -q "198.18.71.2:$1 "; }
for p in 25 2525 2526; do wait_for 10 listening $p || fail "postfix does not listen on $p"; done
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
    "Subject: tls test $1 @@N@@" \
    "Message-ID: <$1-@@N@@.tlstest@sender.test>" \
    "MIME-Version: 1.0" \
    "Content-Type: text/plain; charset=utf-8" \
    "Content-Transfer-Encoding: 8bit" \
    "" \
    "Hello TJ, message $1 @@N@@ over $2." \
    ".a line that starts with a dot" \
    "." \
    "Grüße — 8-bit bytes pass through untouched." \
    "last line" >"$3"
}
for d in $domains; do
  t=${d%.test}
  mkmsg "$t" "$d" "$work/$t.eml"
done

# check_copies DOMAIN: every copy equals its original after Postfix's own
# header lines; prints "TAG-N via ESMTPS|ESMTP" per copy.
check_copies() {
  /usr/bin/python3 - "$pf/mail/$1/tj/new" "$work" <<'PY'
import os, re, sys
d, work = sys.argv[1], sys.argv[2]
for f in sorted(os.listdir(d)):
    data = open(os.path.join(d, f), 'rb').read()
    i = data.find(b'Received: from mail.example.org')
    if i < 0:
        sys.exit('%s: our message not found' % f)
    m = re.search(rb'Message-ID: <(\w+)-(\d+)\.tlstest', data)
    tag, n = m.group(1).decode(), m.group(2).decode()
    want = open(os.path.join(work, tag + '.eml'), 'rb').read()
    want = want.replace(b'@@N@@', n.encode()).replace(b'\r\n', b'\n')
    if data[i:] != want:
        sys.exit('%s: %s-%s differs from what was spooled' % (f, tag, n))
    # Postfix's own Received line (before ours) says how it arrived.
    proto = re.search(rb'by mx\.customer\.test \(Postfix\) with (ESMTPS?) id', data[:i])
    print('%s-%s via %s' % (tag, n, proto.group(1).decode() if proto else '?'))
PY
}

cat >"$work/relay.yaml" <<CF
hostname: edge.test
spool: { dir: $work/spool }
relay:
  state_dir: $work/state
  log_file: $mlog
  socket: $work/relay.sock
  concurrency: 1
  timeout: 20s
  tls_min_protocol: TLSv1.3
domains:
  req.test:      { route: { host: 198.18.71.2, port: 25, tls: required } }
  may.test:      { route: { host: 198.18.71.2, port: 25, tls: opportunistic } }
  none.test:     { route: { host: 198.18.71.2, port: 25, tls: none } }
  opp.test:      { route: { host: 198.18.71.2, port: 2525, tls: opportunistic } }
  reqplain.test: { route: { host: 198.18.71.2, port: 2525, tls: required } }
  fallback.test: { route: { host: 198.18.71.2, port: 2526, tls: opportunistic } }
CF
"$control" --config "$work/relay.yaml" --check >/dev/null || fail "--check refused the TLS config"
echo "relay: { tls_min_protocol: SSLv3 }" >"$work/bad.yaml"
out=$("$control" --config "$work/bad.yaml" --check 2>&1) && fail "--check accepted SSLv3"
echo "$out" | grep -q "bad.yaml:1:28: relay.tls_min_protocol: expected one of TLSv1.2, TLSv1.3" \
  || fail "--check message: $out"

for d in $domains; do
  n=1; [ "$d" = req.test ] && n=3
  "$inject" "$work/spool" $n "$work/${d%.test}.eml" alice@sender.test "BODY=8BITMIME" \
    "tj@$d" >/dev/null || fail "inject $d"
done
netns_spawn edge "$control" --config "$work/relay.yaml" >>"$work/control.out" 2>&1
cpid=$NETNS_LAST_PID
wait_for 10 test -S "$work/relay.sock" || fail "mxedge-control did not start"
c() { "$ctl" --socket "$work/relay.sock" "$@"; }

wait_for 30 sh -c "[ \$(grep -c 'status=sent' '$mlog') -ge 7 ]" \
  || fail "not all of the 7 deliverable messages were sent"
wait_for 10 grep -q "to=<tj@reqplain.test>.*dsn=4.7.4, status=deferred (TLS is required, but was not offered by host 198.18.71.2\[198.18.71.2\]:2525)" "$mlog" \
  || fail "required TLS without STARTTLS offered is not deferred with 4.7.4"
sleep 1  # let Postfix's virtual agent finish writing the maildirs
declare -A want=([req]="3 ESMTPS" [may]="1 ESMTPS" [none]="1 ESMTP" [opp]="1 ESMTP" \
                 [fallback]="1 ESMTP")
for t in "${!want[@]}"; do
  set -- ${want[$t]}
  copies=$(check_copies "$t.test") || fail "$t.test: $copies"
  [ "$(echo "$copies" | grep -c " via $2\$")" = "$1" ] \
    || fail "$t.test: expected $1 copies via $2, got: $copies"
done
[ -z "$(ls -A "$pf/mail/reqplain.test/tj/new" 2>/dev/null)" ] \
  || fail "mail for a TLS-required route was delivered in clear"
c --json queue.list | grep -q '"nrcpt"' || fail "the deferred message left the queue"
[ "$(c --json queue.list | grep -o '"qid"' | wc -l)" = 1 ] || fail "queue.list: not just the deferred message"

# Our log: Postfix's TLS line, the verification result of the self-signed
# certificate, and reuse: one TLS connection per route on port 25 (req.test's
# three messages went over one).
tls25=$(count "mxedge/smtp\[[0-9]*\]: Untrusted TLS connection established to 198.18.71.2\[198.18.71.2\]:25: TLSv1.3 with cipher [A-Z0-9_-]* ([0-9]*/[0-9]* bits)" "$mlog")
[ "$tls25" = 2 ] || fail "expected 2 TLS connections to port 25 (req, may), got $tls25"
grep -q "certificate verification failed for 198.18.71.2\[198.18.71.2\]:25: self-signed certificate" "$mlog" \
  || fail "the peer's verification result is not logged"
grep -q "Cannot start TLS: handshake failure with 198.18.71.2\[198.18.71.2\]:2526: .*; retrying in plaintext" "$mlog" \
  || fail "no handshake failure and plaintext retry for fallback.test"
grep -q "to=<tj@fallback.test>, relay=198.18.71.2\[198.18.71.2\]:2526, .*status=sent" "$mlog" \
  || fail "fallback.test not sent after the plaintext retry"
grep -q "to=<tj@fallback.test>.*status=deferred" "$mlog" && fail "fallback.test was deferred instead of retried in plaintext"
# Postfix's log says TLS for exactly those two sessions.
pft=$(count "Anonymous TLS connection established from .*198.18.71.1.*TLSv1.3" "$pf/log/maillog")
[ "$pft" = 2 ] || fail "Postfix logged $pft TLS sessions, expected 2"

# The deferred one stays deferred on retry and is never sent in clear.
c queue.flush >/dev/null || fail "queue.flush"
wait_for 10 sh -c "[ \$(grep -c 'to=<tj@reqplain.test>.*status=deferred' '$mlog') -ge 2 ]" \
  || fail "the flush did not retry the TLS-required message"
[ -z "$(ls -A "$pf/mail/reqplain.test/tj/new" 2>/dev/null)" ] || fail "delivered in clear after a flush"
kill -TERM "$cpid"
wait "$cpid" || fail "mxedge-control did not exit cleanly"
echo "relay-tls: ok"
[ -n "${KEEP:-}" ] || rm -rf "$work"
