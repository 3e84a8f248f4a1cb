#!/usr/bin/env bash
# Issue 6, on one veth: mxedge (DPDK, net_af_xdp) with the shield as its
# XDP program. An allowed client resolves the dataplane's addresses (ARP and
# NDP go through the shield to DPDK's own stack) and delivers mail over
# IPv4 and IPv6 (smtplib, swaks); a blocked source cannot complete a TCP handshake (the
# shield's drop counter rises, the dataplane's RX stays flat) while the
# allowed one goes on delivering; the kernel's own address on the same
# veth keeps answering ping and a TCP service, also for the blocked source.
# The edge listens on a non-default port (2525), which the dataplane writes
# into the shield's config: the lists guard 2525, and port 25 is no longer
# SMTP for the shield (a blocked source's SYN to it is not dropped in XDP).
#   test_dp_shield.sh MXEDGE MXEDGECTL MXEDGE_SPOOL SHIELD_BPF_O MXEDGE_SHIELD
set -euo pipefail
mxedge=$1 ctl=$2 spooltool=$3 obj=$4 cli=$5
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
py=/usr/bin/python3
if [ ! -x "$mxedge" ]; then
  echo "SKIP: the DPDK dataplane ($mxedge) is not built"
  exit 77
fi
fail() { echo "FAIL: $*" >&2; [ -f "${log:-}" ] && grep -v "^lib\(bpf\|xdp\)" "$log" | tail -30 >&2; exit 1; }

bpffs_ensure
netns_init
work=$(mktemp -d /tmp/mxt-dpsh.XXXXXX)
chmod 755 "$work"
log="$work/log" sock="$work/control.sock" spool="$work/spool"
# Pins live in each test host's own bpffs (tests/lib/netns.sh) and go
# with it.
cleanup_all() { netns_cleanup; rm -rf "$work"; }
trap cleanup_all EXIT
trap 'cleanup_all; exit 143' TERM
trap 'cleanup_all; exit 130' INT

# A generous reply timeout: ASan builds on a crowded machine are slow.
c() { "$ctl" --socket "$sock" --timeout 30 "$@"; }
rx() { c --json stats | $py -c 'import json,sys; print(sum(l["rx_packets"] for l in json.load(sys.stdin)["result"] if l.get("lcore") != "total"))'; }
xdp_count() { c --json shield | $py -c "import json,sys; print(sum(r['packets'] for r in json.load(sys.stdin)['result'] if r['reason'] == '$1'))"; }

netns_host edge
netns_host client
# The edge's kernel keeps .3 / ::3 (management) on the very veth DPDK
# drives; the dataplane is .1 / ::1. The client has an allowed address
# (.2, ::2) and one that gets blocked (.4).
netns_link edge client 198.18.0.3/24 198.18.0.2/24
netns_link edge client 2001:db8::3/64 2001:db8::2/64
eif=$(netns_ifname edge client)
cif=$(netns_ifname client edge)
netns_exec client ip addr add 198.18.0.4/24 dev "$cif"
# Generic XDP sees what the peer put on the wire: no partial checksums.
netns_exec client ethtool -K "$cif" tx off tso off gso off >/dev/null 2>&1 || true

netns_spawn edge "$mxedge" --port "af_xdp:$eif" --xdp-prog "$obj" \
  --addr 198.18.0.1/24 --addr 2001:db8::1/64 --smtp-port 2525 --spool "$spool" \
  --hostname mx.edge.test --control "$sock" --no-huge --duration 200 >"$log" 2>&1
pid=$NETNS_LAST_PID
for _ in $(seq 300); do
  grep -q "running on" "$log" && [ -S "$sock" ] && break
  kill -0 "$pid" 2>/dev/null || fail "mxedge exited early"
  sleep 0.1
done
grep -q "running on" "$log" || fail "mxedge did not start in 30 s"
grep -q "XDP shield active" "$log" || fail "shield not active"
grep -q "telling the shield" "$log" && fail "dataplane could not set its addresses"
own=$(netns_exec edge "$cli" --pin-dir /sys/fs/bpf own | tr '\n' ' ')
[ "$own" = "198.18.0.1/32 2001:db8::1/128 " ] || fail "shield's own addresses: '$own'"
# A bad address set is refused with a clear message and changes nothing.
err=$(netns_exec edge "$cli" --pin-dir /sys/fs/bpf own 198.18.0.0/24 2>&1) && fail "own accepted a prefix"
echo "$err" | grep -q "not a host address" || fail "own error message: $err"
err=$(netns_exec edge "$cli" --pin-dir /sys/fs/bpf own 198.18.0.5 198.18.0.6 198.18.0.7 198.18.0.8 198.18.0.9 2>&1) \
  && fail "own accepted five IPv4 addresses"
echo "$err" | grep -q "at most 4 addresses per family" || fail "own error message: $err"
[ "$(netns_exec edge "$cli" --pin-dir /sys/fs/bpf own | tr '\n' ' ')" = "$own" ] || fail "a refused set changed the addresses"
echo "ok: the dataplane told the shield its addresses: $own (bad sets refused)"
grep -q "telling the shield our port" "$log" && fail "dataplane could not set its port"
ports=$(netns_exec edge "$cli" --pin-dir /sys/fs/bpf config | grep -o 'ports=[0-9,]*')
[ "$ports" = "ports=2525,0,0,0" ] || fail "shield's guarded ports: '$ports'"
echo "ok: the dataplane told the shield its listen port: $ports"

# A kernel TCP service on the management address of the same veth.
netns_spawn edge $py -c '
import socket
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8080)); s.listen(8)
while True:
    c, a = s.accept(); c.sendall(b"kernel\n"); c.close()
'
svc() {  # svc SRC DST: reads the kernel service's greeting from SRC
  netns_exec client timeout 5 $py -c '
import socket, sys
s = socket.create_connection((sys.argv[2], 8080), timeout=4, source_address=(sys.argv[1], 0))
print(s.recv(64).decode().strip())' "$1" "$2"
}

cat >"$work/send.py" <<'EOF'
import smtplib, sys
host, src, body = sys.argv[1:4]
s = smtplib.SMTP(host, 2525, local_hostname='client.test', timeout=20,
                 source_address=(src, 0))
s.ehlo()
assert s.mail('a@client.test')[0] == 250
assert s.rcpt('b@edge.test')[0] == 250
code, msg = s.data(body.replace('\n', '\r\n').encode() + b'\r\n')
print(code, msg.decode().split()[-1])
s.quit()
EOF
deliver() {  # deliver HOST SRC BODY: prints the queue id of a stored message
  local out qid
  out=$(netns_exec client timeout 40 $py "$work/send.py" "$1" "$2" "Subject: t

$3") || fail "delivery from $2 to $1 failed: $out"
  set -- $out "$3"
  [ "$1" = 250 ] || fail "end of DATA answered: $out"
  qid=$2
  "$spooltool" cat "$spool" "$qid" | grep -q "^$3" || fail "message $qid not in the spool"
  echo "$qid"
}

# 1. ARP through the shield: the client knows nothing of .1 yet.
netns_exec client ip neigh flush dev "$cif"
q=$(deliver 198.18.0.1 198.18.0.2 "allowed over IPv4")
netns_exec client ip neigh show 198.18.0.1 dev "$cif" | grep -q lladdr \
  || fail "client has no ARP entry for the dataplane"
echo "ok: ARP for the dataplane answered through the shield; mail stored ($q)"

# 2. NDP through the shield.
netns_exec client ip -6 neigh flush dev "$cif"
q6=$(deliver 2001:db8::1 2001:db8::2 "allowed over IPv6")
echo "ok: NDP for the dataplane answered through the shield; mail over IPv6 stored ($q6)"

# 3. Management on the same veth stays with the kernel; the dataplane
#    answers ping for its own address.
netns_exec client ping -c1 -W2 198.18.0.3 >/dev/null || fail "ping to the kernel's address"
netns_exec client ping -6 -c1 -W2 2001:db8::3 >/dev/null || fail "ping6 to the kernel's address"
[ "$(svc 198.18.0.2 198.18.0.3)" = kernel ] || fail "kernel TCP service on the same veth"
netns_exec client ping -c1 -W2 198.18.0.1 >/dev/null || fail "ping to the dataplane's address"
echo "ok: kernel ping/ping6/TCP service on the same veth; the dataplane answers its ping"

# 4. Block .4 through the control socket (mirrored into the shield).
out=$(c blocklist.add prefix=198.18.0.4)
echo "$out" | grep -q "xdp *applied" || fail "block not applied to XDP: $out"
# Pin the neighbour entry so that nothing but the blocked SYNs could reach
# the dataplane while its RX counter is watched.
mac=$(netns_exec client ip neigh show 198.18.0.1 dev "$cif" | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}')
netns_exec client ip neigh replace 198.18.0.1 lladdr "$mac" dev "$cif" nud permanent
sleep 0.5
d0=$(xdp_count drop_block_exact); r0=$(rx)
for _ in 1 2 3; do
  res=$(netns_exec client timeout 5 $py -c '
import socket
s = socket.socket()
s.bind(("198.18.0.4", 0)); s.settimeout(1.5)
try:
    s.connect(("198.18.0.1", 2525)); print("connected")
except (socket.timeout, OSError) as e:
    print("refused" if isinstance(e, ConnectionRefusedError) else "timeout")')
  [ "$res" = timeout ] || fail "blocked source: handshake $res"
done
d1=$(xdp_count drop_block_exact); r1=$(rx)
[ "$r1" -eq "$r0" ] || fail "blocked SYNs reached the dataplane (rx $r0 -> $r1)"
[ $((d1 - d0)) -ge 3 ] || fail "drop_block_exact rose by $((d1 - d0)), expected >= 3"
echo "ok: blocked source cannot complete a handshake: $((d1 - d0)) SYNs dropped in XDP, dataplane rx flat ($r0)"

# 5. ... while the allowed source on the same client and interface delivers,
#    and the blocked source still reaches the kernel's own services.
out=$(netns_exec client timeout 40 swaks --server 198.18.0.1 --port 2525 --local-interface 198.18.0.2 \
  --helo swaks.test --from s@client.test --to d@edge.test --body "swaks while .4 is blocked" 2>&1) \
  || fail "swaks from the allowed source: $out"
q=$(echo "$out" | grep -o 'queued as [0-9A-Za-z]*' | awk '{print $3}' | head -1)
[ -n "$q" ] || fail "swaks got no queue id: $out"
"$spooltool" cat "$spool" "$q" | grep -q "^swaks while .4 is blocked" || fail "swaks message not stored"
[ "$(svc 198.18.0.4 198.18.0.3)" = kernel ] || fail "kernel TCP service from the blocked source"
netns_exec client ping -I 198.18.0.4 -c1 -W2 198.18.0.3 >/dev/null || fail "ping from the blocked source"
"$spooltool" list "$spool" | grep -q "client=198.18.0.4" && fail "blocked source stored something"
echo "ok: allowed source delivers meanwhile ($q); management from the blocked source passes"

# 6. Port 25 per the new config: not guarded, so the blocked source's SYN
#    to it is not dropped in XDP; being for the dataplane's address, it
#    goes to the dataplane (redirect_xsk), which listens on 2525 only and
#    resets it.
d0=$(xdp_count drop_block_exact); n0=$(xdp_count redirect_xsk)
res=$(netns_exec client timeout 5 $py -c '
import socket
s = socket.socket()
s.bind(("198.18.0.4", 0)); s.settimeout(3)
try:
    s.connect(("198.18.0.1", 25)); print("connected")
except (socket.timeout, OSError) as e:
    print("refused" if isinstance(e, ConnectionRefusedError) else "timeout")')
[ "$res" = refused ] || fail "blocked source to port 25: $res, expected a reset from the dataplane"
d1=$(xdp_count drop_block_exact); n1=$(xdp_count redirect_xsk)
[ "$d1" -eq "$d0" ] || fail "port 25 SYN dropped as blocked ($d0 -> $d1)"
[ "$n1" -gt "$n0" ] || fail "port 25 SYN not handed to the dataplane (redirect_xsk $n0 -> $n1)"
echo "ok: port 25 is not guarded any more: handed to the dataplane and reset (redirect_xsk $n0 -> $n1)"

kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || fail "exit status $rc after SIGTERM"
echo "ok: clean exit"
