#!/usr/bin/env bash
# mxedge-kio with real SMTP clients: Python smtplib and raw sockets
# (clients.py), swaks (pipelining, exact DATA) and Postfix's smtp-source
# (concurrent sessions).  Every accepted message must be in the spool,
# fsync'ed before its 250, byte-exact apart from the Received: header.
#   test_kio.sh PATH/TO/mxedge-kio
set -euo pipefail
kio=$1
here=$(dirname "$(readlink -f "$0")")
source "$here/../../../tests/lib/netns.sh"

fail() { echo "FAIL: $*" >&2; [ -f "${log:-/dev/null}" ] && tail -20 "$log" >&2; exit 1; }

netns_init
work=$(mktemp -d /tmp/kio-test.XXXXXX)
spool=$work/spool; mkdir -p "$spool"
log=$work/kio.log
trap 'netns_cleanup; rm -rf "$work"' EXIT

# Bad settings are refused at start with a message that says what is wrong.
refuse() {  # refuse "expected message" args...
  local want=$1 out rc=0; shift
  out=$("$kio" "$@" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] || fail "mxedge-kio $* started"
  echo "$out" | grep -qF -- "$want" || fail "mxedge-kio $*: unclear error: $out"
}
refuse "bad listen address" --listen 198.18.0.1 --spool "$spool"
refuse "bad listen address" --listen 198.18.0.999:25 --spool "$spool"
refuse "spool directory $work/missing" --listen 127.0.0.1:2526 --spool "$work/missing"
refuse "bad --threads" --listen 127.0.0.1:2526 --spool "$spool" --threads x
refuse "bad --max-size" --listen 127.0.0.1:2526 --spool "$spool" --max-size 0
refuse "--bare-lf takes reject or normalise" --listen 127.0.0.1:2526 --spool "$spool" --bare-lf maybe
refuse "usage:" --spool "$spool"
echo "ok: bad settings refused with a clear message"

netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
netns_link edge client 2001:db8::1/64 2001:db8::2/64

netns_spawn edge "$kio" --listen 198.18.0.1:25 --listen '[2001:db8::1]:25' \
  --spool "$spool" --threads 2 --hostname mx.test --max-size 2000000 >"$log" 2>&1
kpid=$NETNS_LAST_PID
for _ in $(seq 400); do grep -q "mxedge-kio: ready" "$log" && break; sleep 0.05; done
grep -q "mxedge-kio: ready" "$log" || fail "mxedge-kio did not start"
# SO_REUSEPORT: one listening socket per worker thread
n=$(netns_exec edge ss -Hltn 'sport = :25' | wc -l)
[ "$n" -eq 4 ] || fail "expected 4 listening sockets (2 threads x v4/v6), got $n"
echo "ok: 2 workers listening on v4 and v6 (SO_REUSEPORT)"

# --- Python smtplib + raw sockets -----------------------------------------
netns_exec client /usr/bin/python3 "$here/clients.py" 198.18.0.1 2001:db8::1 25 "$spool" 198.18.0.2 \
  || fail "python clients"

count() { find "$spool" -maxdepth 1 -name '*.env' | wc -l; }
# strip the Received: header (first line + continuation lines)
strip_received() { /usr/bin/python3 -c '
import sys
d = open(sys.argv[1], "rb").read()
lines = d.split(b"\r\n")
i = 1
while lines[i].startswith(b"\t"):
    i += 1
sys.stdout.buffer.write(b"\r\n".join(lines[i:]))' "$1"; }

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
grep -q '250 2.0.0 Ok: queued as' "$work/swaks.out" || { cat "$work/swaks.out"; fail "swaks: no queued reply"; }
qid=$(sed -n 's/.*queued as \([0-9A-F]*\).*/\1/p' "$work/swaks.out" | tail -1)
[ "$(count)" -eq $((before + 1)) ] || fail "swaks message not stored"
strip_received "$spool/$qid.eml" >"$work/swaks.stored"
cmp "$work/swaks.eml" "$work/swaks.stored" || fail "swaks: stored bytes differ from sent"
grep -q '^rcpt <carol@customer.test>$' "$spool/$qid.env" || fail "swaks: 2nd recipient missing"
grep -q 'with ESMTP id '"$qid" "$spool/$qid.eml" || fail "swaks: Received header"
echo "ok: swaks --pipeline message stored byte-exact ($qid), 2 recipients"

# swaks with 8-bit content (the server offers 8BITMIME)
printf 'Subject: 8bit\r\n\r\nK\xc3\xb6ln \xff\xfe\r\n' >"$work/swaks8.eml"
printf '.' | cat "$work/swaks8.eml" - >"$work/swaks8.wire"
netns_exec client swaks --server 198.18.0.1 --port 25 --from a@example.org \
  --to bob@customer.test --data "@$work/swaks8.wire" --no-data-fixup >"$work/swaks8.out" 2>&1 \
  || { cat "$work/swaks8.out"; fail "swaks 8bit"; }
qid=$(sed -n 's/.*queued as \([0-9A-F]*\).*/\1/p' "$work/swaks8.out" | tail -1)
strip_received "$spool/$qid.eml" | cmp - "$work/swaks8.eml" || fail "swaks 8bit: stored bytes differ"
echo "ok: swaks 8-bit body stored byte-exact"

# swaks smuggling attempt: bare LF before the dot must not end DATA
printf 'Subject: s\r\n\r\nx\n.\nMAIL FROM:<ceo@customer.test>\r\n.' >"$work/smuggle.eml"
netns_exec client swaks --server 198.18.0.1 --port 25 --from a@example.org \
  --to bob@customer.test --data "@$work/smuggle.eml" --no-data-fixup >"$work/smuggle.out" 2>&1 || true
grep -q '<\*\* *550 5.6.0' "$work/smuggle.out" || { cat "$work/smuggle.out"; fail "swaks smuggling not refused"; }
grep -l 'ceo@customer.test' "$spool"/*.env && fail "smuggled envelope stored"
echo "ok: swaks smuggling attempt refused with 550"

# --- Postfix smtp-source: concurrent sessions -----------------------------
before=$(count)
netns_exec client timeout 120 smtp-source -s 10 -m 200 -l 4096 -f src@example.org \
  -t bob@customer.test -M source.example 198.18.0.1:25 \
  || fail "smtp-source"
after=$(count)
[ $((after - before)) -eq 200 ] || fail "smtp-source: $((after - before)) of 200 messages stored"
# each stored message holds the 4096-byte body smtp-source sent
small=$(find "$spool" -maxdepth 1 -name '*.eml' -newer "$work/smuggle.out" -size -4k | wc -l)
[ "$small" -eq 0 ] || fail "smtp-source: $small stored messages shorter than the body sent"
netns_exec client timeout 120 smtp-source -s 5 -m 50 -l 4096 -r 3 -d -f src@example.org \
  -t rcpt@customer.test 198.18.0.1:25 || fail "smtp-source -d -r 3"
[ $(( $(count) - after )) -eq 50 ] || fail "smtp-source -d: not all 50 messages stored"
grep -c '^rcpt ' "$(ls -t "$spool"/*.env | head -1)" | grep -qx 3 || fail "smtp-source -r 3: 3 recipients expected"
echo "ok: smtp-source 10 sessions x 200 messages and 50 more with 3 recipients, all stored"

# --- timeouts and connection limit (a second instance) ---------------------
netns_spawn edge "$kio" --listen 198.18.0.1:2525 --spool "$spool" --threads 1 \
  --hostname mx.test --timeout 1 --max-conns 2 >"$work/kio2.log" 2>&1
for _ in $(seq 400); do grep -q "mxedge-kio: ready" "$work/kio2.log" && break; sleep 0.05; done
netns_exec client /usr/bin/python3 - <<'PY' || fail "timeout / max-conns"
import socket, time
def conn():
    s = socket.create_connection(("198.18.0.1", 2525), timeout=10)
    return s, s.recv(200)
a, ga = conn()
b, gb = conn()
c, gc = conn()   # third connection: over --max-conns 2
assert ga.startswith(b"220 ") and gb.startswith(b"220 "), (ga, gb)
assert gc.startswith(b"421 4.3.2"), gc
assert c.recv(100) == b"", "over-limit connection not closed"
# b opens a transaction and stalls inside DATA
b.sendall(b"EHLO c.example\r\nMAIL FROM:<t@example.org>\r\nRCPT TO:<x@customer.test>\r\nDATA\r\npartial\r\n")
# idle for longer than --timeout 1: RFC 5321 §4.5.3.2 timeout, 421, close
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
grep -l '<t@example.org>' "$spool"/*.env && fail "timed-out transaction was stored"

# --- greet pause: early talkers are detected and reported ------------------
netns_spawn edge "$kio" --listen 198.18.0.1:2527 --spool "$spool" --threads 1 \
  --hostname mx.test --greet-delay 700 >"$work/kio4.log" 2>&1
for _ in $(seq 400); do grep -q "mxedge-kio: ready" "$work/kio4.log" && break; sleep 0.05; done
netns_exec client /usr/bin/python3 - <<'PY' || fail "greet pause"
import socket, time
def read_until(s, n):
    data = b""
    while data.count(b"\r\n") < n:
        d = s.recv(4096)
        assert d, data
        data += d
    return data
# polite client: waits for the 220, which comes after the pause
t0 = time.time()
p = socket.create_connection(("198.18.0.1", 2527), timeout=10)
g = read_until(p, 1)
assert g.startswith(b"220 ") and time.time() - t0 >= 0.6, (g, time.time() - t0)
p.sendall(b"QUIT\r\n")
assert read_until(p, 1).startswith(b"221"), "polite QUIT"
# early talker: speaks before the greeting; its command is held, not read
# (RFC 5321 §4.3.1), and answered only after the 220
e = socket.create_connection(("198.18.0.1", 2527), timeout=10)
e.sendall(b"EHLO early.example\r\n")
data = read_until(e, 2)
assert data.startswith(b"220 ") and b"\r\n250-mx.test\r\n" in data, data
e.close()
print("ok: greet pause: polite client greeted after the pause, early talker's EHLO held until after the 220")
PY
sleep 0.3
[ "$(grep -c 'early talker 198.18.0.2' "$work/kio4.log")" -eq 1 ] \
  || fail "early talker not reported exactly once: $(cat "$work/kio4.log")"
echo "ok: early talker reported once, polite client not reported"

# --- a full spool disk: clear temporary error, nothing half-written ---------
# mxedge-kio runs in a private mount namespace with a 256 KiB tmpfs spool.
small=$work/small; mkdir -p "$small"
netns_spawn edge unshare -m sh -c \
  "mount -t tmpfs -o size=256k mxedge-test '$small' && exec '$kio' --listen 198.18.0.1:2526 \
   --spool '$small' --threads 1 --hostname mx.test" >"$work/kio3.log" 2>&1
small_pid=$NETNS_LAST_PID  # unshare and sh exec, so this is mxedge-kio
for _ in $(seq 400); do grep -q "mxedge-kio: ready" "$work/kio3.log" && break; sleep 0.05; done
grep -q "mxedge-kio: ready" "$work/kio3.log" || fail "mxedge-kio on a small tmpfs did not start"
netns_exec client /usr/bin/python3 - <<'PY' || fail "disk full"
import smtplib
with smtplib.SMTP("198.18.0.1", 2526, local_hostname="c.example", timeout=30) as s:
    s.ehlo()
    s.mail("a@example.org"); s.rcpt("b@customer.test")
    code, msg = s.data(b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 400)
    assert code == 452 and msg.startswith(b"4.3.1"), (code, msg)
    # the session goes on, and a message that fits is stored
    s.mail("a@example.org"); s.rcpt("b@customer.test")
    code, msg = s.data(b"Subject: small\r\n\r\nfits\r\n")
    assert code == 250, (code, msg)
print("ok: disk full: 452 4.3.1 for the message that did not fit, the next one stored")
PY
# what the server left in its private tmpfs: one message, nothing in tmp/
left=$(nsenter -t "$small_pid" -m ls -R "$small" 2>/dev/null || true)
echo "$left" | grep -q '\.eml$' || fail "disk full: the small message is missing ($left)"
[ "$(echo "$left" | grep -c '\.eml$')" -eq 1 ] || fail "disk full: partial message left behind: $left"

# nothing half-written is left in tmp/, every message has its envelope
[ -z "$(ls -A "$spool/tmp")" ] || fail "leftovers in spool/tmp: $(ls "$spool/tmp" | head)"
for f in "$spool"/*.eml; do [ -f "${f%.eml}.env" ] || fail "no envelope for $f"; done
# the server is still healthy and stops cleanly on SIGTERM
kill -TERM "$kpid"; wait "$kpid" || fail "mxedge-kio exit status $?"
echo "ok: spool consistent, clean shutdown"
