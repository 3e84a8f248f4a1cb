#!/usr/bin/env bash
# Hand-off to DPDK: dpdk-testpmd's net_af_xdp PMD loads the shield object
# (xdp_prog= devarg) on the edge's veth and receives the SMTP traffic the
# shield redirects to its AF_XDP socket; non-SMTP traffic still reaches the
# kernel; and the loader updates the shield's maps (pinned by the PMD under
# /sys/fs/bpf/mxedge_*) while the PMD owns the program: a source blocked then
# stops reaching DPDK.
# Usage: test_pmd.sh MXEDGE_SHIELD_CLI SHIELD_BPF_O   (root; skipped without
# dpdk-testpmd, Debian package dpdk-dev). Bounded: testpmd runs under timeout.
set -euo pipefail
cli=$1
obj=$2
here=$(dirname "$(readlink -f "$0")")
top=$here/..
source "$top/tests/lib/netns.sh"
source "$top/tests/lib/bpffs.sh"
py=/usr/bin/python3

if ! command -v dpdk-testpmd >/dev/null; then
  echo "SKIP: dpdk-testpmd not installed (Debian package dpdk-dev)"
  exit 77
fi
fail() { echo "FAIL: $*" >&2; [ -f "${log:-}" ] && tail -20 "$log" >&2; exit 1; }

bpffs_ensure
# The PMD pins by map name directly under /sys/fs/bpf (it sets no pin root),
# so runs of this test must not overlap; stale pins of a killed run go.
exec 9>/run/lock/mxedge-shield-pmd.lock
flock -w 120 9 || fail "another PMD test holds the lock"
rm -f /sys/fs/bpf/mxedge_*

netns_init
work=$(mktemp -d /tmp/mxt-pmd.XXXXXX)
log=$work/testpmd.log
pmd_pid=
cleanup_all() {
  if [ -n "$pmd_pid" ]; then
    kill -INT "$pmd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pmd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pmd_pid" 2>/dev/null || true
  fi
  rm -f /sys/fs/bpf/mxedge_*
  rm -rf "$work" "/sys/fs/bpf/mxt$$-pmd"
  netns_cleanup
}
trap cleanup_all EXIT
trap 'cleanup_all; exit 143' TERM
trap 'cleanup_all; exit 130' INT

netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
cif=$(netns_ifname client edge)
netns_exec client ip addr add 198.18.0.3/24 dev "$cif"
netns_exec client ip addr add 198.18.0.4/24 dev "$cif"
eif=$(netns_ifname edge client)
edge_ns=/run/netns/$(netns_name edge)
shield() { "$cli" --pin-dir /sys/fs/bpf "$@"; }

# Management listener in the edge's kernel (non-SMTP port).
netns_spawn edge "$py" "$here/test_smtpd.py" "$work/mail.txt" 198.18.0.1,2222

# Tables filled before DPDK starts: our loader creates and pins the maps
# where the PMD's libbpf will look for them, and the PMD reuses them.
shield load >/dev/null || fail "pre-load into /sys/fs/bpf"
shield add block 198.18.0.4 >/dev/null || fail "pre-load entry"

# nsenter --net keeps this mount namespace, so the PMD sees bpffs.
timeout 240 nsenter --net="$edge_ns" dpdk-testpmd -l 0-1 --no-huge -m 1024 \
  --no-shconf --no-pci --vdev="net_af_xdp0,iface=$eif,xdp_prog=$obj" \
  -- --stats-period 1 --forward-mode=rxonly </dev/null >"$log" 2>&1 &
pmd_pid=$!
for _ in $(seq 200); do
  grep -q "start packet forwarding" "$log" 2>/dev/null && [ -e /sys/fs/bpf/mxedge_cfg ] && break
  kill -0 "$pmd_pid" 2>/dev/null || fail "dpdk-testpmd exited early"
  sleep 0.1
done
grep -q "start packet forwarding" "$log" || fail "dpdk-testpmd did not start"
[ -e /sys/fs/bpf/mxedge_cfg ] || fail "PMD did not pin the shield's maps"

# The program on the veth is the shield, loaded by the PMD (polled: the
# PMD may still be settling its port when testpmd prints its banner).
ok=
for _ in $(seq 50); do
  id=$(ip -n "$(netns_name edge)" -d link show "$eif" | sed -n 's/.*prog\/xdp id \([0-9]*\).*/\1/p' | head -1)
  info=$( [ -n "$id" ] && bpftool prog show id "$id" 2>&1 || true)
  if grep -q "name mxedge_shield" <<<"$info"; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || fail "the XDP program on $eif is not the shield: id=${id:-none} $info $(ip -n "$(netns_name edge)" -d link show "$eif")"
echo "ok: PMD loaded the shield (prog id $id) on the pre-loaded, pinned maps"

rx() { grep -a -o 'RX-packets: *[0-9]*' "$log" | tail -1 | awk '{print $2}'; }
counter() { shield stats | awk -v k="$1" '$1==k{print $2}'; }
syns() { # syns SRC N: N connection attempts to port 25, 0.3 s each
  netns_exec client "$py" -c '
import socket, sys
src, n = sys.argv[1], int(sys.argv[2])
for _ in range(n):
    s = socket.socket(); s.settimeout(0.3); s.bind((src, 0))
    try: s.connect(("198.18.0.1", 25))
    except OSError: pass
    s.close()' "$1" "$2"
}
wait_rx() { # wait_rx MIN: until testpmd has reported at least MIN packets
  for _ in $(seq 50); do [ "$(rx || echo 0)" -ge "$1" ] 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

redir0=$(counter redirect_xsk)
syns 198.18.0.2 5
wait_rx 5 || fail "testpmd saw $(rx) packets, expected >= 5 SMTP SYNs"
redir=$(( $(counter redirect_xsk) - redir0 ))
[ "$redir" -ge 5 ] || fail "redirect_xsk grew by $redir"
echo "ok: SMTP SYNs reached DPDK through AF_XDP (testpmd RX=$(rx), redirect_xsk +$redir)"

netns_exec client "$py" "$here/test_send.py" 198.18.0.3 198.18.0.1 2222 mgmt \
  || fail "non-SMTP port did not reach the kernel while the PMD owns the program"
echo "ok: non-SMTP traffic still reaches the kernel"

# Live table update while the PMD owns the program: the PMD's pins are
# adopted into our own pin directory (as the control plane would do with
# /sys/fs/bpf/mxedge), and the entry is added through that directory.
own=/sys/fs/bpf/mxt$$-pmd
"$cli" --pin-dir "$own" adopt /sys/fs/bpf >/dev/null || fail "adopt the PMD's maps"
"$cli" --pin-dir "$own" adopt /sys/fs/bpf >/dev/null || fail "adopt is not idempotent"
"$cli" --pin-dir "$own" add block 198.18.0.3 >/dev/null || fail "cannot add through the adopted pins"
shield list block | grep -qx '198.18.0.3/32' || fail "entry not visible through the PMD's own pins"
sleep 1.5
before=$(rx); drops0=$(counter drop_block_exact)
syns 198.18.0.3 5
syns 198.18.0.4 5 # blocked before the PMD started
sleep 1.5
after=$(rx); drops=$(( $(counter drop_block_exact) - drops0 ))
[ "$drops" -ge 10 ] || fail "drop_block_exact grew by $drops, expected >= 10"
[ "$after" -eq "$before" ] || fail "blocked source reached DPDK ($before -> $after)"
syns 198.18.0.2 3
wait_rx $((after + 3)) || fail "allowed source no longer reaches DPDK"
echo "ok: blocked (one entry pre-loaded, one added while the PMD runs): $drops SYNs dropped in XDP, DPDK RX unchanged; allowed still arrive"

kill -INT "$pmd_pid"
wait "$pmd_pid" || true
pmd_pid=
grep -q "Bye" "$log" || fail "testpmd did not shut down cleanly"
ip -n "$(netns_name edge)" link show "$eif" | grep -q "prog/xdp" && fail "program left on $eif after the PMD exited"
echo "ok: PMD shut down and detached"
