#!/usr/bin/env bash
# Crash consistency of mxedge --io=kernel: 20 times, start it (2 threads),
# let 6 client sessions send messages, and kill -9 it at a random moment
# while they do. Clients record the queue id of every "250 2.0.0 Ok: queued
# as ID" and what they sent. After the last run: mxedge-spool verify finds
# no corrupt segment, every acknowledged message is in the spool with
# exactly the bytes sent (after the Received: header), and no queue id was
# given twice. Bounded: each run sends for at most a few seconds.
#   test_crash.sh MXEDGE MXEDGE-SPOOL KIO_SPOOLDUMP
set -euo pipefail
mxedge=$1 tool=$2 dump=$3
here=$(dirname "$(readlink -f "$0")")
source "$here/../../../tests/lib/netns.sh"
py=/usr/bin/python3
fail() { echo "FAIL: $*" >&2; exit 1; }

netns_init
work=$(mktemp -d /tmp/mxt-kio-crash.XXXXXX)
trap 'netns_cleanup; rm -rf "$work"' EXIT
spool=$work/spool
netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24

# The client: sessions send until the server goes away, then stop; every
# acknowledged message is one "ACK QID RUN SESSION SEQ SIZE" line, written
# only after the 250 arrived.
cat >"$work/client.py" <<'EOF'
import re, smtplib, sys, threading, time
run, out = int(sys.argv[1]), open(sys.argv[2], "a")
lock = threading.Lock()
deadline = time.time() + 8
def body(run, k, i):
    size = 500 + (run * 7919 + k * 104729 + i * 1299709) % 20000
    line = b"%d-%d-%d " % (run, k, i)
    text = (line * (size // len(line) + 1))[:size]
    return b"Subject: crash %d %d %d\r\n\r\n" % (run, k, i) + text + b"\r\n"
def session(k):
    i = 0
    try:
        s = smtplib.SMTP("198.18.0.1", 25, local_hostname="crash.test", timeout=5)
        s.ehlo()
        while time.time() < deadline:
            b = body(run, k, i)
            s.mail("crash@client.test"); s.rcpt("rcpt%d@customer.test" % k)
            code, msg = s.data(b)
            if code != 250:
                break
            qid = re.search(rb"queued as ([0-9A-Za-z]{11})", msg).group(1).decode()
            with lock:
                out.write("ACK %s %d %d %d %d\n" % (qid, run, k, i, len(b)))
                out.flush()
            i += 1
    except (OSError, smtplib.SMTPException):
        pass  # the server was killed
ts = [threading.Thread(target=session, args=(k,)) for k in range(6)]
for t in ts: t.start()
for t in ts: t.join()
EOF

: >"$work/acked"
RANDOM=5151   # seeded: a failure can be replayed
for i in $(seq 1 20); do
  netns_spawn edge "$mxedge" --io=kernel --addr 198.18.0.1/24 --smtp-port 25 \
    --spool "$spool" --queues 2 --hostname mx.test --no-control >"$work/log.$i" 2>&1
  pid=$NETNS_LAST_PID
  for _ in $(seq 200); do
    grep -q "running on" "$work/log.$i" && break
    kill -0 "$pid" 2>/dev/null || fail "run $i: mxedge exited: $(cat "$work/log.$i")"
    sleep 0.05
  done
  grep -q "running on" "$work/log.$i" || fail "run $i did not start: $(cat "$work/log.$i")"
  netns_exec client timeout 20 $py "$work/client.py" "$i" "$work/acked" &
  client=$!
  sleep "0.$((RANDOM % 7 + 3))"
  kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
  wait "$client" || fail "run $i: client failed"
done
n=$(grep -c '^ACK ' "$work/acked" || true)
[ "$n" -ge 100 ] || fail "only $n messages acknowledged in 20 runs: test too weak"
"$tool" verify "$spool" >"$work/verify" || fail "verify: $(cat "$work/verify")"
grep -q "corrupt_segments=0" "$work/verify" || fail "verify: $(cat "$work/verify")"
"$dump" --all "$spool" >"$work/all" || fail "reading the spool"
# One more restart on the spool the 20 crashes left: recovery reports what
# verify counts, the process serves a message and stops cleanly on SIGTERM.
committed=$(sed -n 's/.* messages=\([0-9]*\) .*/\1/p' "$work/verify")
netns_spawn edge "$mxedge" --io=kernel --addr 198.18.0.1/24 --smtp-port 25 \
  --spool "$spool" --queues 2 --hostname mx.test --no-control >"$work/log.last" 2>&1
pid=$NETNS_LAST_PID
for _ in $(seq 200); do grep -q "running on" "$work/log.last" && break; sleep 0.05; done
grep -q "mxedge: spool $spool: $committed messages," "$work/log.last" \
  || fail "recovery after the crashes: $(cat "$work/log.last")"
netns_exec client $py -c '
import smtplib
with smtplib.SMTP("198.18.0.1", 25, local_hostname="after.test", timeout=20) as s:
    s.sendmail("a@client.test", ["b@customer.test"], b"Subject: after\r\n\r\nok\r\n")
' || fail "no service after the crashes"
kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM: $(cat "$work/log.last")"
[ "$("$tool" list "$spool" | wc -l)" -eq $((committed + 1)) ] || fail "message after restart not stored"
$py - "$work/acked" "$work/all" <<'EOF' || fail "acknowledged messages"
import sys
acks = [l.split() for l in open(sys.argv[1]) if l.startswith("ACK ") and l.endswith("\n")]
data = open(sys.argv[2], "rb").read()
stored, pos = {}, 0
while pos < len(data):
    nl = data.index(b"\n", pos)
    qid, ln = data[pos:nl].decode().split()
    start = nl + 1
    stored[qid] = data[start:start + int(ln)]
    pos = start + int(ln) + 1
def body(run, k, i):
    size = 500 + (run * 7919 + k * 104729 + i * 1299709) % 20000
    line = b"%d-%d-%d " % (run, k, i)
    text = (line * (size // len(line) + 1))[:size]
    return b"Subject: crash %d %d %d\r\n\r\n" % (run, k, i) + text + b"\r\n"
qids = [a[1] for a in acks]
if len(set(qids)) != len(qids):
    sys.exit("queue id acknowledged twice")
for _, qid, run, k, i, size in acks:
    if qid not in stored:
        sys.exit("acknowledged %s (run %s) is not in the spool" % (qid, run))
    sent = body(int(run), int(k), int(i))
    # The stored message is our Received: header (first line plus
    # continuation lines) followed by exactly the bytes the client sent.
    got = stored[qid]
    lines = got.split(b"\r\n")
    j = 1
    while j < len(lines) and lines[j][:1] in (b"\t", b" "):
        j += 1
    if not lines[0].startswith(b"Received: from crash.test") or \
       b"\r\n".join(lines[j:]) != sent:
        sys.exit("acknowledged %s (run %s) stored differently" % (qid, run))
print("ok: %d acknowledged messages intact, %d committed in the spool" % (len(acks), len(stored)))
EOF
echo "ok: 20 kill -9 runs of mxedge --io=kernel while 6 sessions sent; $n acknowledged" \
  "messages survived; $(cat "$work/verify")"
