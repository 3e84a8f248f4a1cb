#!/usr/bin/env bash
# limits.sessions_per_lcore (--sessions-per-lcore): the sessions a worker
# lcore preallocates. With 3 per lcore (one worker) the edge serves 3
# sessions at once; the 4th connection gets "421 4.3.2 ... Too many
# connections" and is closed (nothing hangs); once one of the 3 quits, a
# new client is served and its message is accepted. The command line
# overrides the file's key. Bad values, on the command line or in the
# file, are refused at start with a message naming the option or key.
#   test_sessions_lcore.sh MXEDGE
set -euo pipefail
mxedge=$1
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
work=$(mktemp -d /tmp/mxt-spl.XXXXXX)
log=$work/log
fail() { echo "FAIL: $*" >&2; [ -f "$log" ] && tail -20 "$log" >&2; exit 1; }
# The af_xdp PMD's umem is freed by the kernel at exit, not by free().
echo "leak:xsk_umem__create" >"$work/lsan.supp"
export LSAN_OPTIONS="suppressions=$work/lsan.supp"

# Bad values: refused before anything starts, with a clear message.
refused() {  # refused WANT ARGS...: mxedge ARGS exits 2 and says WANT
  local want=$1 rc=0 out; shift
  out=$("$mxedge" "$@" 2>&1) || rc=$?
  [ "$rc" -eq 2 ] || fail "mxedge $* exited $rc, want 2: $out"
  grep -qF -- "$want" <<<"$out" || fail "mxedge $*: no '$want' in: $out"
}
for v in 0 -1 abc 1000001 ""; do
  refused "--sessions-per-lcore: expected a number 1..1000000, got '$v'" \
    --port af_xdp:lo --sessions-per-lcore "$v"
done
printf 'limits:\n  sessions_per_lcore: 0\n' >"$work/bad.yaml"
refused "bad.yaml:2:" --port af_xdp:lo --config "$work/bad.yaml"
refused "limits.sessions_per_lcore" --port af_xdp:lo --config "$work/bad.yaml"
printf 'limits:\n  sessions_per_lcore: many\n' >"$work/bad.yaml"
refused "limits.sessions_per_lcore" --port af_xdp:lo --config "$work/bad.yaml"
echo "ok: bad sessions_per_lcore values are refused with a message"

netns_init
netns_host edge
netns_host client
bpffs_ensure
netns_link edge client 198.18.62.1/24 198.18.62.2/24
cif=$(netns_ifname client edge)
# Generic XDP hands DPDK the frames as the peer queued them.
netns_exec client ethtool -K "$cif" tx off tso off gso off >/dev/null 2>&1 || true

# The file says 5; the command line's 3 wins. Every session comes from one
# client address: the per-client limit is off.
cat >"$work/mxedge.yaml" <<EOF
limits:
  sessions_per_lcore: 5
  max_sessions_per_client: 0
EOF
netns_spawn edge "$mxedge" --port "af_xdp:$(netns_ifname edge client)" --no-huge \
  --addr 198.18.62.1/24 --spool "$work/spool" --no-control --hostname mx.spl.test \
  --config "$work/mxedge.yaml" --sessions-per-lcore 3 --duration 150 >"$log" 2>&1
pid=$NETNS_LAST_PID
for _ in $(seq 600); do
  grep -q "running on" "$log" && break
  kill -0 "$pid" 2>/dev/null || fail "edge exited"
  sleep 0.2
done
grep -q "running on" "$log" || fail "edge did not start"
grep -q ", 3 sessions per lcore," "$log" || fail "the edge does not run 3 sessions per lcore"
for _ in $(seq 20); do
  netns_exec client ping -c1 -W1 198.18.62.1 >/dev/null 2>&1 && break
done

netns_exec client timeout 120 /usr/bin/python3 - <<'PY' || fail "session pool behaviour"
import smtplib, socket, sys, time

ADDR = ("198.18.62.1", 25)

def banner(s):
    """The server's first reply (possibly several lines)."""
    s.settimeout(20)
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()

held = []
for i in range(3):
    c = smtplib.SMTP(timeout=20)
    code, msg = c.connect(*ADDR)
    if code != 220:
        sys.exit(f"session {i + 1} of 3: {code} {msg!r}")
    c.ehlo("held.test")
    held.append(c)
print("ok: 3 sessions served")

# The 4th: refused with 421 4.3.2, and the server closes the connection.
s = socket.create_connection(ADDR, timeout=20)
b = banner(s)
if not b.startswith("421 4.3.2 ") or "Too many connections" not in b:
    sys.exit(f"4th session: want 421 4.3.2, got {b!r}")
s.settimeout(20)
try:
    rest = s.recv(100)
except ConnectionResetError:
    rest = b""
if rest != b"":
    sys.exit(f"4th session: not closed after the 421: {rest!r}")
s.close()
print("ok: the 4th session gets 421 4.3.2 and is closed")

# A held session still delivers.
held[0].sendmail("a@client.test", ["b@spl.test"], b"Subject: held\r\n\r\nheld\r\n")
print("ok: a held session delivers while the pool is full")

# One quits; its slot serves a new client (the close may take a moment:
# the server's FIN and the client's ACK).
held.pop().quit()
deadline = time.time() + 20
while True:
    s = socket.create_connection(ADDR, timeout=20)
    b = banner(s)
    s.close()
    if b.startswith("220 "):
        break
    if time.time() > deadline:
        sys.exit(f"after a QUIT no slot came free: {b!r}")
    time.sleep(0.5)
c = smtplib.SMTP(timeout=20)
code, msg = c.connect(*ADDR)
if code != 220:
    sys.exit(f"new session after a QUIT: {code} {msg!r}")
c.sendmail("a@client.test", ["b@spl.test"], b"Subject: new\r\n\r\nnew\r\n")
c.quit()
for h in held:
    h.quit()
print("ok: after one session quits a new client is served and delivers")
PY
kill -TERM "$pid"
wait "$pid" || fail "edge exit status $?"
echo "ok: limits.sessions_per_lcore / --sessions-per-lcore"
rm -rf "$work"
