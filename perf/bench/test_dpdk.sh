#!/usr/bin/env bash
# mxedge-bench-dpdk (the DPDK engine: mxedge's TCP stack, active open, on a
# net_af_xdp port over a veth, no hugepages) in namespace "gen" against a
# server in namespace "sut":
#   - a target or --addr outside the test ranges is refused with a clear
#     error before EAL starts: not one frame reaches the server's side;
#   - Postfix's smtp-sink: every message the generator reports accepted is
#     in the sink's dump directory (plain and pipelined, 4 KB);
#   - net_tap as the port (the tap's kernel side carries smtp-sink);
#   - mxedge --io=kernel (IPv4 and IPv6) and the DPDK dataplane: the
#     generator's accepted count equals the records in mxedge's spool;
#   - the run is bounded: a closed target port ends at the duration cap
#     with the refusals counted as connect errors, a server that never
#     greets with reply timeouts.
#   test_dpdk.sh MXEDGE_BENCH_DPDK MXEDGE MXEDGE_SPOOL
set -euo pipefail
bench=$(readlink -f "$1") mxedge=$(readlink -f "$2") spooltool=$(readlink -f "$3")
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
py=/usr/bin/python3
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v smtp-sink >/dev/null || fail "smtp-sink not found (Debian package postfix)"
command -v ethtool >/dev/null || fail "ethtool not found (Debian package ethtool)"

work=$(mktemp -d /tmp/mxt-dpbench.XXXXXX)
chmod 755 "$work"
mkdir "$work/dump" && chmod 777 "$work/dump"
# DPDK 22.11's af_xdp PMD leaves libxdp's umem handle (80 bytes) behind at
# close once frames were transmitted (as in dataplane/tests/test_smtp_dp.sh).
echo "leak:xsk_umem__create" >"$work/lsan.supp"
export LSAN_OPTIONS="suppressions=$work/lsan.supp"

netns_init
trap 'netns_cleanup; rm -rf "$work"' EXIT
netns_host sut
netns_host gen
bpffs_ensure
netns_link sut gen 198.18.7.1/24 198.18.7.3/24
netns_link sut gen 2001:db8:7::1/64 2001:db8:7::3/64
sif=$(netns_ifname sut gen) gif=$(netns_ifname gen sut)
# The generator's address is its own (DPDK owns gen's veth through XDP);
# the kernel's addresses on that side are never used.
gaddr=198.18.7.20/24 gaddr6=2001:db8:7::20/64
# The server side's kernel must put complete checksums on the wire: generic
# XDP hands DPDK the frames as queued (no partial checksums, no TSO).
netns_exec sut ethtool -K "$sif" tx off tso off gso off >/dev/null 2>&1 || true
# Nothing of gen's kernel may talk on the link during the refusal check.
netns_exec gen sysctl -qw "net.ipv6.conf.$gif.disable_ipv6=1"

gen() {  # gen NAME ARGS...: one run; the JSON goes to $work/NAME.json
  local name=$1; shift
  netns_exec gen timeout 120 "$bench" --port "af_xdp:$gif" --quiet \
    --json "$work/$name.json" "$@" >"$work/$name.txt" 2>"$work/$name.err" \
    || fail "$name: mxedge-bench-dpdk exited $?: $(tail -5 "$work/$name.err")"
}
jget() { $py -c 'import json,sys
d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"; }
errors() { $py -c 'import json,sys
d=json.load(open(sys.argv[1]))["errors"]
print(d["connect"]+d["timeout"]+d["disconnect"]+d["protocol"]+sum(d["replies"].values()))' "$1"; }
check() {  # check NAME WANT SERVER_COUNT
  local acc; acc=$(jget "$work/$1.json" messages_accepted)
  [ "$acc" = "$2" ] || fail "$1: accepted $acc, want $2: $(cat "$work/$1.txt")"
  [ "$3" = "$acc" ] || fail "$1: the server counts $3, the generator $acc"
  [ "$(errors "$work/$1.json")" = 0 ] || fail "$1: errors: $(cat "$work/$1.txt")"
  [ "$(jget "$work/$1.json" config.io)" = dpdk ] || fail "$1: report does not say io dpdk"
  echo "ok: $1: generator accepted $acc, server counts $3"
}

# --- refused addresses: an error before EAL, no frame on the link ---------
rx() { netns_exec sut cat "/sys/class/net/$sif/statistics/rx_packets"; }
rx0=$(rx)
if out=$(netns_exec gen "$bench" --port "af_xdp:$gif" --addr $gaddr \
    --target 192.0.2.10:25 --duration 2 2>&1); then
  fail "a public target was accepted"
else
  [ $? = 2 ] || fail "public target: exit status is not 2 (usage): $out"
fi
grep -q "refusing target 192.0.2.10:25" <<<"$out" || fail "unclear target refusal: $out"
if out=$(netns_exec gen "$bench" --port "af_xdp:$gif" --addr 10.9.9.9/24 \
    --target 198.18.7.1:25 --duration 2 2>&1); then
  fail "a source address outside the test ranges was accepted"
fi
grep -q -- "--addr 10.9.9.9 is outside" <<<"$out" || fail "unclear --addr refusal: $out"
grep -qi "EAL" <<<"$out" && fail "EAL started for a refused address: $out"
netns_exec gen ip link show dev "$gif" | grep -q "xdp" && fail "an XDP program was attached"
sleep 0.5
[ "$(rx)" = "$rx0" ] || fail "frames reached the server side after a refusal ($rx0 -> $(rx))"
echo "ok: refused target and --addr: clear errors, no frame sent"

# --- (a) Postfix's smtp-sink ------------------------------------------------
netns_spawn sut smtp-sink -u nobody -d "$work/dump/m" 198.18.7.1:25 256
sink=$NETNS_LAST_PID
for _ in $(seq 50); do
  netns_exec sut ss -ltnH "sport = :25" | grep -q . && break; sleep 0.1
done
gen sink-plain --addr $gaddr --target 198.18.7.1:25 --sessions 20 --count 300 --duration 60
sleep 0.3
check sink-plain 300 "$(find "$work/dump" -type f | wc -l)"
gen sink-pipe --addr $gaddr --target 198.18.7.1:25 --sessions 20 --per-session 5 \
  --pipelining --count 300 --duration 60
sleep 0.3
check sink-pipe 300 $(( $(find "$work/dump" -type f | wc -l) - 300 ))
# What went on the wire is a 4 KB message (smtp-sink stores LF line ends,
# its own header block first and a blank line last; undo that).
$py - "$work/dump" <<'PY' || fail "stored messages are not 4 KB as sent"
import os, sys
for name in os.listdir(sys.argv[1]):
    data = open(os.path.join(sys.argv[1], name), "rb").read()
    parts = data.split(b"\nFrom: <load@bench.test>\n", 1)
    assert len(parts) == 2, name
    msg = b"From: <load@bench.test>\n" + parts[1][:-1]
    assert len(msg) + msg.count(b"\n") == 4096, (name, len(msg))
PY
echo "ok: smtp-sink stored 600 messages of 4096 bytes"
kill "$sink"; wait "$sink" 2>/dev/null || true

# net_tap: the generator creates the tap in its namespace; its kernel side
# (given an address as soon as it appears) carries smtp-sink there. ARP is
# re-probed every second, so the address may come a moment after the port.
tap=t$$dpb; tap=${tap:0:15}
netns_exec gen ip addr add 198.18.9.1/24 dev lo
netns_spawn gen smtp-sink -u nobody -d "$work/dump/t" 198.18.9.1:25 256
for _ in $(seq 50); do
  netns_exec gen ss -ltnH "sport = :25" | grep -q . && break; sleep 0.1
done
netns_exec gen timeout 120 "$bench" --port "tap:$tap" --addr 198.18.9.2/24 --target 198.18.9.1:25 \
  --sessions 10 --count 100 --duration 60 --quiet --json "$work/tap.json" >"$work/tap.txt" 2>"$work/tap.err" &
tpid=$!
for _ in $(seq 100); do netns_exec gen ip link show dev "$tap" >/dev/null 2>&1 && break; sleep 0.05; done
netns_exec gen ip addr del 198.18.9.1/24 dev lo
netns_exec gen ip addr add 198.18.9.1/24 dev "$tap"
netns_exec gen ip link set "$tap" up
wait $tpid || fail "tap: mxedge-bench-dpdk exited $?: $(tail -5 "$work/tap.err")"
sleep 0.3
check tap 100 "$(find "$work/dump" -type f -name 't*' | wc -l)"

# A closed port: RSTs are connect errors, nothing is accepted, and the run
# ends by itself at duration + grace.
start=$(date +%s)
gen refused --addr $gaddr --target 198.18.7.1:25 --sessions 4 --duration 2 --grace 1
[ $(( $(date +%s) - start )) -le 10 ] || fail "refused: the 2 s duration cap did not hold"
[ "$(jget "$work/refused.json" messages_accepted)" = 0 ] || fail "refused: accepted something"
[ "$(jget "$work/refused.json" errors.connect_errno.ECONNREFUSED)" -ge 1 ] \
  || fail "refused: no ECONNREFUSED counted: $(cat "$work/refused.txt")"
echo "ok: closed port: ECONNREFUSED counted, run stopped at its cap"

# A server that accepts and never greets: the per-reply timeout ends each
# session (counted), and the run still stops at its cap.
netns_spawn sut $py -c 'import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.7.1", 25)); s.listen(64); s.settimeout(0.5); held = []
end = time.time() + 40
while time.time() < end:
    try: held.append(s.accept()[0])
    except OSError: pass'
silent=$NETNS_LAST_PID
for _ in $(seq 50); do
  netns_exec sut ss -ltnH "sport = :25" | grep -q . && break; sleep 0.1
done
start=$(date +%s)
gen silent --addr $gaddr --target 198.18.7.1:25 --sessions 2 --timeout 1 --duration 3 --grace 1
[ $(( $(date +%s) - start )) -le 12 ] || fail "silent: the duration cap did not hold"
[ "$(jget "$work/silent.json" messages_accepted)" = 0 ] || fail "silent: accepted something"
[ "$(jget "$work/silent.json" errors.timeout)" -ge 2 ] \
  || fail "silent: reply timeouts not counted: $(cat "$work/silent.txt")"
kill "$silent"; wait "$silent" 2>/dev/null || true
echo "ok: a server that never greets: reply timeouts counted, run stopped at its cap"

# --- mxedge: its spool is its own count ------------------------------------
printf 'limits:\n  max_sessions_per_client: 0\n' >"$work/mxedge.yaml"
mx_start() {  # mx_start LOG ARGS...
  local log=$1; shift
  rm -rf "$work/spool"
  netns_spawn sut "$mxedge" --config "$work/mxedge.yaml" --smtp-port 25 --spool "$work/spool" \
    --hostname sut.bench.test --no-control --duration 250 "$@" >"$log" 2>&1
  mx=$NETNS_LAST_PID
}
mx_stop() {
  kill -TERM "$mx" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$mx" 2>/dev/null || break; sleep 0.1; done
  wait "$mx" 2>/dev/null || true
}
spooled() { "$spooltool" list "$work/spool" | wc -l; }

# (a) mxedge --io=kernel, IPv4 then IPv6 (NDP for the target).
mx_start "$work/kernel.log" --io=kernel --addr 198.18.7.1/24 --addr 2001:db8:7::1/64
for _ in $(seq 100); do
  netns_exec sut ss -ltnH "sport = :25" | grep -q . && break
  kill -0 "$mx" || fail "mxedge --io=kernel exited: $(tail -5 "$work/kernel.log")"
  sleep 0.1
done
gen kernel --addr $gaddr --target 198.18.7.1:25 --sessions 20 --per-session 5 --pipelining \
  --count 300 --duration 60
check kernel 300 "$(spooled)"
gen kernel6 --addr $gaddr6 --target '[2001:db8:7::1]:25' --sessions 10 --count 100 --duration 60
check kernel6 100 $(( $(spooled) - 300 ))
mx_stop

# (b) the DPDK dataplane on the sut veth (af_xdp, --no-huge).
mx_start "$work/dpdk.log" --port "af_xdp:$sif" --addr 198.18.7.1/24 --no-huge
for _ in $(seq 300); do
  grep -q "running on" "$work/dpdk.log" && break
  kill -0 "$mx" || fail "mxedge (DPDK) exited: $(tail -5 "$work/dpdk.log")"
  sleep 0.1
done
grep -q "SMTP on 198.18.7.1" "$work/dpdk.log" || fail "mxedge (DPDK) did not start: $(tail -5 "$work/dpdk.log")"
gen dpdk --addr $gaddr --target 198.18.7.1:25 --sessions 20 --count 300 --duration 60
check dpdk 300 "$(spooled)"
gen dpdk-pipe --addr $gaddr --target 198.18.7.1:25 --sessions 50 --per-session 5 --pipelining \
  --count 500 --duration 60
check dpdk-pipe 500 $(( $(spooled) - 300 ))
mx_stop
echo "ok: all"
