#!/usr/bin/env bash
# The dataplane comes up on the port kinds CI can offer (af_xdp on a veth,
# net_tap), without hugepages, receives the frames a peer sends, reports
# them, and stops cleanly on SIGTERM and --duration. A bad port is refused.
set -euo pipefail
mxedge=$1
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
log=$(mktemp /tmp/mxt-dp.XXXXXX)
trap 'rm -f "$log"' RETURN

# Waits (bounded) until the log shows the dataplane is running.
wait_running() {
  for _ in $(seq 150); do
    grep -q "running on" "$log" && return 0
    kill -0 "$NETNS_LAST_PID" 2>/dev/null || { cat "$log"; fail "mxedge exited early"; }
    sleep 0.1
  done
  cat "$log"; fail "mxedge did not start in 15 s"
}
rx_of() { sed -n 's/^mxedge: port [0-9]* rx_packets=\([0-9]*\).*/\1/p' "$log"; }

netns_init
bpffs_ensure
netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
edge_if=$(netns_ifname edge client)

# --- af_xdp on the edge's veth: the production port source.
netns_spawn edge "$mxedge" --port "af_xdp:$edge_if" --no-huge --duration 60 >"$log" 2>&1
pid=$NETNS_LAST_PID
wait_running
grep -q "driver=net_af_xdp" "$log" || { cat "$log"; fail "af_xdp port not used"; }
# 30 broadcast echo requests: one frame each, no ARP involved.
netns_exec client ping -b -c 30 -i 0.02 -W 0.2 198.18.0.255 >/dev/null 2>&1 || true
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "mxedge ignored SIGTERM"
rc=0; wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || { cat "$log"; fail "mxedge exit status $rc after SIGTERM"; }
rx=$(rx_of)
[ -n "$rx" ] || { cat "$log"; fail "no port statistics printed"; }
[ "$rx" -ge 30 ] || { cat "$log"; fail "af_xdp received $rx frames, expected >= 30"; }
echo "ok: af_xdp port received $rx frames, stopped on SIGTERM"

# --- net_tap: DPDK creates the tap; the kernel side sends to it.
tap="dtap$$"; tap=${tap:0:15}
netns_spawn edge "$mxedge" --port "tap:$tap" --duration 8 >"$log" 2>&1
pid=$NETNS_LAST_PID
wait_running
netns_exec edge ip addr add 198.18.1.1/24 dev "$tap"
netns_exec edge ip link set "$tap" up
netns_exec edge ping -b -c 25 -i 0.02 -W 0.2 198.18.1.255 >/dev/null 2>&1 || true
wait "$pid" || fail "mxedge exit status $? after --duration"
rx=$(rx_of)
[ -n "$rx" ] && [ "$rx" -ge 25 ] || { cat "$log"; fail "tap received ${rx:-nothing}, expected >= 25"; }
echo "ok: tap port received $rx frames, stopped after --duration"

# --- A port that does not exist: clear error, non-zero exit, no hang.
rc=0
netns_exec edge timeout 60 "$mxedge" --port af_xdp:nosuchif0 --duration 5 >"$log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$log"; fail "missing interface: exit $rc"; }
echo "ok: missing interface refused (exit $rc)"
rc=0
"$mxedge" --port bogus:x >"$log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q -- "--port: expected" "$log" || { cat "$log"; fail "bad --port: exit $rc"; }
echo "ok: bad --port refused with a message"
