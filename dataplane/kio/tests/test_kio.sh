#!/usr/bin/env bash
# mxedge --io=kernel with real SMTP clients: Python smtplib and raw sockets
# (clients.py), swaks (pipelining, exact DATA) and Postfix's smtp-source
# (concurrent sessions over two threads). Every accepted message must be in
# the spool byte-exact apart from the Received: header (mxedge-spool cat);
# the same YAML config file as the DPDK path; blocklist and domains changed
# live with mxedgectl; limits, timeouts, a full disk and SIGTERM.
#   test_kio.sh MXEDGE MXEDGECTL MXEDGE-SPOOL KIO_SPOOLDUMP
set -euo pipefail
mxedge=$1 ctl=$2 spooltool=$3 dump=$4
here=$(dirname "$(readlink -f "$0")")
source "$here/../../../tests/lib/netns.sh"
py=/usr/bin/python3

fail() { echo "FAIL: $*" >&2; [ -f "${log:-/dev/null}" ] && tail -20 "$log" >&2; exit 1; }

netns_init
work=$(mktemp -d /tmp/mxt-kio.XXXXXX)
chmod 755 "$work"
spool=$work/spool
log=$work/kio.log sock=$work/control.sock
trap 'netns_cleanup; rm -rf "$work"' EXIT
c() { "$ctl" --socket "$sock" "$@"; }
count() { "$spooltool" list "$spool" | wc -l; }
wait_running() {  # wait_running LOG PID
  for _ in $(seq 300); do
    grep -q "mxedge: running on" "$1" && return 0
    kill -0 "$2" 2>/dev/null || fail "mxedge exited early: $(cat "$1")"
    sleep 0.05
  done
  fail "mxedge did not start: $(cat "$1")"
}

# Bad settings are refused at start with a message that says what is wrong.
refuse() {  # refuse "expected message" args...
  local want=$1 out rc=0; shift
  out=$(timeout 20 "$mxedge" "$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "mxedge $* started"
  echo "$out" | grep -qF -- "$want" || fail "mxedge $*: unclear error: $out"
}
refuse "--io: expected dpdk or kernel" --io=epoll --spool "$spool"
refuse "--addr: expected ADDRESS/PREFIXLEN" --io=kernel --addr 198.18.0.999 --spool "$spool"
refuse "--queues: expected a number 1..64" --io=kernel --queues x --spool "$spool"
refuse "mxedge: spool /proc/mxedge-none" --io=kernel --smtp-port 2526 --no-control \
  --addr 127.0.0.1/8 --spool /proc/mxedge-none
echo "ok: bad settings refused with a clear message"

netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
netns_link edge client 2001:db8::1/64 2001:db8::2/64

# The same YAML file works for both modes (docs/CONFIG.md); io: kernel
# picks this one, port: is ignored by it.
cat >"$work/edge.yaml" <<EOF
hostname: mx.test
io: kernel
port: af_xdp:unused0
queues: 2
listen:
  - 198.18.0.1:25
  - "[2001:db8::1]:25"
spool:
  dir: $spool
limits:
  max_message_size: 2000000
blocklist:
  - 198.18.99.0/24
EOF
netns_spawn edge "$mxedge" --config "$work/edge.yaml" --control "$sock" >"$log" 2>&1
kpid=$NETNS_LAST_PID
wait_running "$log" "$kpid"
grep -q "mxedge: SMTP on 198.18.0.1 2001:db8::1 port 25 as mx.test" "$log" || fail "no SMTP line"
grep -q "running on 2 thread(s)" "$log" || fail "not 2 threads"
# SO_REUSEPORT: one listening socket per worker thread and address
n=$(netns_exec edge ss -Hltn 'sport = :25' | wc -l)
[ "$n" -eq 4 ] || fail "expected 4 listening sockets (2 threads x v4/v6), got $n"
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
c --json status | grep -q '"io": *"kernel"' || fail "status: $(c --json status)"
c blocklist.list | grep -q "198.18.99.0/24" || fail "config blocklist not loaded: $(c blocklist.list)"
echo "ok: config file with io: kernel, 2 threads listening on v4 and v6 (SO_REUSEPORT)"

# --- Python smtplib + raw sockets -----------------------------------------
netns_exec client $py "$here/clients.py" 198.18.0.1 2001:db8::1 25 "$spool" 198.18.0.2 \
  "$spooltool" "$dump" || fail "python clients"

# strip the Received: header (first line + continuation lines)
strip_received() { $py -c '
import sys
d = sys.stdin.buffer.read()
lines = d.split(b"\r\n")
i = 1
while lines[i].startswith(b"\t"):
    i += 1
sys.stdout.buffer.write(b"\r\n".join(lines[i:]))'; }
qid_of() { sed -n 's/.*queued as \([0-9A-Za-z]\{11\}\).*/\1/p' "$1" | tail -1; }

# --- swaks: pipelining, exact DATA ----------------------------------------
# --no-data-fixup sends the file as it is: it is written in wire form
# (dot-stuffed, with the final ".") and the expected stored form beside it.
printf 'From: swaks@example.org\r\nTo: bob@customer.test\r\nSubject: swaks pipelined\r\n\r\n.leading dot line\r\n..two\r\nbody line\r\n' >"$work/swaks.eml"
sed 's/^\./../' "$work/swaks.eml" >"$work/swaks.wire"
printf '.' >>"$work/swaks.wire"  # swaks adds the CRLF
before=$(count)
netns_exec client swaks --server 198.18.0.1 --port 25 --helo swaks.example \
  --from swaks@example.org --to bob@customer.test,carol@customer.test \
  --pipeline --data "@$work/swaks.wire" --no-data-fixup >"$work/swaks.out" 2>&1 \
  || { cat "$work/swaks.out"; fail "swaks --pipeline"; }
qid=$(qid_of "$work/swaks.out")
[ -n "$qid" ] || { cat "$work/swaks.out"; fail "swaks: no queued reply"; }
[ "$(count)" -eq $((before + 1)) ] || fail "swaks message not stored"
"$spooltool" cat "$spool" "$qid" | strip_received >"$work/swaks.stored"
cmp "$work/swaks.eml" "$work/swaks.stored" || fail "swaks: stored bytes differ from sent"
"$dump" "$spool" "$qid" | grep -q '^rcpt <carol@customer.test>$' || fail "swaks: 2nd recipient missing"
"$spooltool" cat "$spool" "$qid" | grep -q "with ESMTP id $qid;" || fail "swaks: Received header"
echo "ok: swaks --pipeline message stored byte-exact ($qid), 2 recipients"

# swaks with 8-bit content (the server offers 8BITMIME)
printf 'Subject: 8bit\r\n\r\nK\xc3\xb6ln \xff\xfe\r\n' >"$work/swaks8.eml"
printf '.' | cat "$work/swaks8.eml" - >"$work/swaks8.wire"
netns_exec client swaks --server 198.18.0.1 --port 25 --from a@example.org \
  --to bob@customer.test --data "@$work/swaks8.wire" --no-data-fixup >"$work/swaks8.out" 2>&1 \
  || { cat "$work/swaks8.out"; fail "swaks 8bit"; }
qid=$(qid_of "$work/swaks8.out")
"$spooltool" cat "$spool" "$qid" | strip_received | cmp - "$work/swaks8.eml" \
  || fail "swaks 8bit: stored bytes differ"
echo "ok: swaks 8-bit body stored byte-exact"

# swaks smuggling attempt: bare LF before the dot must not end DATA
printf 'Subject: s\r\n\r\nx\n.\nMAIL FROM:<ceo@customer.test>\r\n.' >"$work/smuggle.eml"
netns_exec client swaks --server 198.18.0.1 --port 25 --from a@example.org \
  --to bob@customer.test --data "@$work/smuggle.eml" --no-data-fixup >"$work/smuggle.out" 2>&1 || true
grep -q '<\*\* *550 5.6.0' "$work/smuggle.out" || { cat "$work/smuggle.out"; fail "swaks smuggling not refused"; }
"$spooltool" list "$spool" | grep -q 'ceo@customer.test' && fail "smuggled envelope stored"
echo "ok: swaks smuggling attempt refused with 550"

# --- Postfix smtp-source: concurrent sessions over both threads ------------
syncs() { c --json stats | $py -c 'import json,sys; print(sum(t["spool_syncs"] for t in json.load(sys.stdin)["result"]))'; }
before=$(count)
syncs0=$(syncs)
netns_exec client timeout 120 smtp-source -s 10 -m 200 -l 4096 -f src@example.org \
  -t bob@customer.test -M source.example 198.18.0.1:25 \
  || fail "smtp-source"
after=$(count)
[ $((after - before)) -eq 200 ] || fail "smtp-source: $((after - before)) of 200 messages stored"
# Group commit: with 10 sessions waiting at once, messages share an
# fdatasync; one sync per message would mean every 250 paid its own.
nsync=$(( $(syncs) - syncs0 ))
[ "$nsync" -lt 200 ] || fail "group commit: $nsync fdatasyncs for 200 concurrent messages"
echo "ok: group commit: 200 messages over 10 sessions needed $nsync fdatasyncs"
# each stored message holds the 4096-byte body smtp-source sent
short=$("$spooltool" list "$spool" | awk '/from=<src@example.org>/ { sub("size=", "", $3); if ($3 < 4096) n++ } END { print n + 0 }')
[ "$short" -eq 0 ] || fail "smtp-source: $short stored messages shorter than the body sent"
netns_exec client timeout 120 smtp-source -s 5 -m 50 -l 4096 -r 3 -d -f src3@example.org \
  -t rcpt@customer.test 198.18.0.1:25 || fail "smtp-source -d -r 3"
[ $(( $(count) - after )) -eq 50 ] || fail "smtp-source -d: not all 50 messages stored"
n3=$("$spooltool" list "$spool" | grep -c 'from=<src3@example.org> nrcpt=3 ')
[ "$n3" -eq 50 ] || fail "smtp-source -r 3: $n3 of 50 messages with 3 recipients"
# SO_REUSEPORT spread 200+ connections over both threads; each thread
# stored with its own spool writer, and the counters agree with the spool.
w0=$("$spooltool" list "$spool" | grep -c ' w=0 ')
w1=$("$spooltool" list "$spool" | grep -c ' w=1 ')
[ "$w0" -gt 0 ] && [ "$w1" -gt 0 ] || fail "sessions not spread over threads: w0=$w0 w1=$w1"
msgs=$(c --json stats | $py -c 'import json,sys; print(sum(t["messages"] for t in json.load(sys.stdin)["result"]))')
[ "$msgs" -eq "$(count)" ] || fail "stats count $msgs messages, the spool has $(count)"
echo "ok: smtp-source 10 sessions x 200 and 50 x 3 recipients stored; threads' writers w0=$w0 w1=$w1"

# --- policy tables changed live with mxedgectl -----------------------------
cat >"$work/send.py" <<'EOF'
import smtplib, sys
host, rcpt = sys.argv[1:3]
try:
    s = smtplib.SMTP(host, 25, local_hostname='client.test', timeout=20)
except smtplib.SMTPConnectError as e:
    print(e.smtp_code, e.smtp_error.decode()); sys.exit(0)
s.ehlo(); s.mail('a@client.test')
code, msg = s.rcpt(rcpt)
if code != 250:
    print(code, msg.decode()); s.quit(); sys.exit(0)
code, msg = s.data(b'Subject: policy\r\n\r\nbody\r\n')
print(code, msg.decode())
s.quit()
EOF
c domain.add domain=customer.test >/dev/null || fail "domain.add"
sleep 0.5   # the threads see the domain count within a supervisor tick
out=$(netns_exec client $py "$work/send.py" 198.18.0.1 x@other.test)
echo "$out" | grep -q "^550 5.1.2" || fail "unknown domain answered: $out"
out=$(netns_exec client $py "$work/send.py" 198.18.0.1 x@CUSTOMER.test)
[ "${out%% *}" = 250 ] || fail "configured domain refused: $out"
out=$(netns_exec client $py "$work/send.py" 198.18.0.1 postmaster)
[ "${out%% *}" = 250 ] || fail "postmaster refused: $out"
c domain.del domain=customer.test >/dev/null
echo "ok: domain.add: other domains get 550 5.1.2, the added one and postmaster 250"

before=$(count)
c blocklist.add prefix=198.18.0.2/32 >/dev/null || fail "blocklist.add"
out=$(netns_exec client $py "$work/send.py" 198.18.0.1 x@customer.test)
echo "$out" | grep -q "^554 5.7.1" || fail "blocked client answered: $out"
out=$(netns_exec client $py "$work/send.py" 2001:db8::1 x@customer.test)
[ "${out%% *}" = 250 ] || fail "IPv6 client not on the blocklist refused: $out"
c allowlist.add prefix=198.18.0.0/24 >/dev/null || fail "allowlist.add"
out=$(netns_exec client $py "$work/send.py" 198.18.0.1 x@customer.test)
[ "${out%% *}" = 250 ] || fail "allowlisted client refused: $out"
c allowlist.del prefix=198.18.0.0/24 >/dev/null
c blocklist.del prefix=198.18.0.2/32 >/dev/null
[ "$(count)" -eq $((before + 2)) ] || fail "blocked client stored something"
blocked=$(c --json stats | $py -c 'import json,sys; print(sum(t["clients_blocked"] for t in json.load(sys.stdin)["result"]))')
[ "$blocked" -eq 1 ] || fail "stats: clients_blocked=$blocked"
echo "ok: blocklist.add gives 554 5.7.1 at connect, allowlist wins, stats count it"

# --- timeouts and the session limit (a second instance) --------------------
cat >"$work/small.yaml" <<EOF
hostname: mx.test
io: kernel
queues: 1
listen:
  - 198.18.0.1:2525
spool:
  dir: $work/spool2
limits:
  max_sessions: 2
timeouts:
  command_s: 1
  data_s: 1
EOF
netns_spawn edge "$mxedge" --config "$work/small.yaml" --no-control >"$work/kio2.log" 2>&1
wait_running "$work/kio2.log" "$NETNS_LAST_PID"
netns_exec client $py - <<'PY' || fail "timeout / max_sessions"
import socket, time
def conn():
    s = socket.create_connection(("198.18.0.1", 2525), timeout=10)
    return s, s.recv(200)
a, ga = conn()
b, gb = conn()
c, gc = conn()   # third connection: over max_sessions 2
assert ga.startswith(b"220 ") and gb.startswith(b"220 "), (ga, gb)
assert gc.startswith(b"421 4.3.2"), gc
assert c.recv(100) == b"", "over-limit connection not closed"
# b opens a transaction and stalls inside DATA
b.sendall(b"EHLO c.example\r\nMAIL FROM:<t@example.org>\r\nRCPT TO:<x@customer.test>\r\nDATA\r\npartial\r\n")
# idle for longer than the 1 s timeout: RFC 5321 §4.5.3.2, 421, close
a.sendall(b"EHLO c.example\r\n")
t0 = time.time()
data = b""
while True:
    d = a.recv(1000)
    if not d:
        break
    data += d
elapsed = time.time() - t0
assert b"421 4.4.2 mx.test Error: timeout exceeded\r\n" in data, data
assert 0.9 <= elapsed < 15, elapsed
# a timeout inside DATA aborts the transaction: nothing is stored
data = b""
while True:
    d = b.recv(1000)
    if not d:
        break
    data += d
assert b"354 " in data and data.endswith(b"421 4.4.2 mx.test Error: timeout exceeded\r\n"), data
print("ok: idle client got 421 4.4.2 after %.1f s; over-limit connection got 421 4.3.2" % elapsed)
PY
"$spooltool" list "$work/spool2" | grep -q '<t@example.org>' && fail "timed-out transaction was stored"
"$spooltool" verify "$work/spool2" | grep -q "messages=0 incomplete=0" \
  || fail "timed-out transaction left records: $("$spooltool" verify "$work/spool2")"

# --- a full spool disk: 451, nothing acknowledged that is not stored -------
# This instance runs in a private mount namespace with a 256 KiB tmpfs spool.
small=$work/small; mkdir -p "$small"
netns_spawn edge unshare -m sh -c \
  "mount -t tmpfs -o size=256k mxedge-test '$small' && exec '$mxedge' --io=kernel \
   --addr 198.18.0.1/24 --smtp-port 2526 --spool '$small/spool' --queues 1 \
   --hostname mx.test --no-control" >"$work/kio3.log" 2>&1
small_pid=$NETNS_LAST_PID  # unshare and sh exec, so this is mxedge
wait_running "$work/kio3.log" "$small_pid"
netns_exec client $py - <<'PY' || fail "disk full"
import smtplib
with smtplib.SMTP("198.18.0.1", 2526, local_hostname="c.example", timeout=30) as s:
    s.ehlo()
    s.mail("a@example.org"); s.rcpt("b@customer.test")
    code, msg = s.data(b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 400)
    assert code == 451 and msg.startswith(b"4.3.0"), (code, msg)
    # the session goes on; the broken spool is never trusted again
    s.mail("a@example.org"); s.rcpt("b@customer.test")
    try:
        code, msg = s.data(b"Subject: small\r\n\r\nfits\r\n")
    except smtplib.SMTPDataError as e:
        code, msg = e.smtp_code, e.smtp_error
    assert code == 451, (code, msg)
    assert s.noop()[0] == 250
print("ok: disk full: 451 4.3.0 for the message that did not fit and the next, session usable")
PY
kill -TERM "$small_pid"; wait "$small_pid" || true
grep -Eq "store_errors=([2-9]|[1-9][0-9]+) " "$work/kio3.log" || fail "disk full: store_errors: $(cat "$work/kio3.log")"

# --- graceful stop: an idle session gets 421, the process exits 0 ----------
netns_exec client timeout 30 $py -c '
import smtplib, sys
s = smtplib.SMTP("198.18.0.1", 25, local_hostname="idle.test", timeout=25)
s.ehlo()
open(sys.argv[1], "w").write("ready\n")
code, msg = s.getreply()
print(code, msg.decode())
' "$work/idle.ready" >"$work/idle.out" 2>&1 &
idle=$!
for _ in $(seq 100); do [ -s "$work/idle.ready" ] && break; sleep 0.1; done
[ -s "$work/idle.ready" ] || fail "idle session did not start"
total=$(count)
kill -TERM "$kpid"
rc=0; wait "$kpid" || rc=$?
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM"
wait "$idle" || true
grep -q "^421 4.3.2" "$work/idle.out" || fail "idle session got: $(cat "$work/idle.out")"
[ ! -e "$sock" ] || fail "control socket left behind"
logged=$(sed -n 's/^mxedge: thread [0-9]* .* messages=\([0-9]*\) .*/\1/p' "$log" | awk '{ s += $1 } END { print s + 0 }')
[ "$logged" -eq "$total" ] || fail "exit report: $logged messages, the spool has $total"
"$spooltool" verify "$spool" | grep -q "messages=$total incomplete=0 torn_tail_bytes=0 damaged_bytes=0 corrupt_segments=0" \
  || fail "spool verify: $("$spooltool" verify "$spool")"
echo "ok: SIGTERM: 421 to the idle session, exit 0, spool clean ($total messages)"
