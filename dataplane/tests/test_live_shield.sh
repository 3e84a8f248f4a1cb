#!/usr/bin/env bash
# Bulk list loads and config.reload reach the XDP shield, not only the
# dataplane's RCU tables: the af_xdp PMD loads the shield on a veth, a file
# loaded with blocklist.load makes the client's SYNs die in XDP (the
# dataplane's counters stay flat), replace=true takes the block away again in
# one generation flip, and a reload whose file blocks the client does too.
#   test_live_shield.sh MXEDGE MXEDGECTL SHIELD_BPF_O
set -euo pipefail
mxedge=$1 ctl=$2 obj=$3
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
py=/usr/bin/python3
work=$(mktemp -d /tmp/mxt-lsh.XXXXXX)
sock="$work/control.sock" log="$work/log"
fail() { echo "FAIL: $*" >&2; grep -v "^lib\(bpf\|xdp\)" "$log" | tail -20 >&2 || true; exit 1; }
c() { "$ctl" --socket "$sock" "$@"; }
rx() { c --json stats | $py -c 'import json,sys; print(sum(l["rx_packets"] for l in json.load(sys.stdin)["result"] if l.get("lcore") != "total"))'; }
drops() { c --json shield | $py -c 'import json,sys; print(sum(r["packets"] for r in json.load(sys.stdin)["result"] if r["reason"].startswith("drop_block")))'; }
# Three SMTP connection attempts from the client (SYNs, bounded by timeout).
attempts() { for _ in 1 2 3; do netns_exec client timeout 0.5 bash -c 'exec 3<>/dev/tcp/198.18.0.1/25' 2>/dev/null || true; done; }
blocked() {  # blocked WHAT: the client's SYNs die in XDP
  local d0 r0 d1 r1
  d0=$(drops); r0=$(rx); attempts; r1=$(rx); d1=$(drops)
  [ "$r1" -eq "$r0" ] || fail "$1: blocked source reached the dataplane ($r0 -> $r1)"
  [ "$d1" -gt "$d0" ] || fail "$1: no drops counted in XDP ($d0 -> $d1)"
}
passes() {  # passes WHAT: the client's SYNs reach the dataplane
  local r0 r1
  r0=$(rx); attempts; r1=$(rx)
  [ "$r1" -gt "$r0" ] || fail "$1: SYNs did not reach the dataplane ($r0 -> $r1)"
}

netns_init
trap 'netns_cleanup; [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT
bpffs_ensure
netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
edge_if=$(netns_ifname edge client)
# The af_xdp PMD's own leaks at close are suppressed by meson's
# LSAN_OPTIONS (tests/sanitizers/lsan.supp).
cat >"$work/edge.yaml" <<EOC
blocklist:
  - 198.18.99.0/24
EOC
netns_spawn edge "$mxedge" --port "af_xdp:$edge_if" --xdp-prog "$obj" --control "$sock" \
  --config "$work/edge.yaml" --state-dir "$work/state" --no-huge --duration 150 >"$log" 2>&1
pid=$NETNS_LAST_PID
for _ in $(seq 300); do grep -q "running on" "$log" && [ -S "$sock" ] && break; sleep 0.1; done
grep -q "XDP shield active" "$log" || fail "shield not active"
passes "start"

printf '# feed\n198.18.0.2\n2001:db8:bad::/48\n' >"$work/feed.txt"
out=$(c blocklist.load file="$work/feed.txt") || fail "blocklist.load: $out"
echo "$out" | grep -q "xdp *applied" || fail "load not applied to XDP: $out"
blocked "blocklist.load"
echo "ok: a bulk-loaded block drops the client in XDP"

printf '198.18.77.0/24\n' >"$work/feed2.txt"
out=$(c blocklist.load file="$work/feed2.txt" replace=true) || fail "replace: $out"
echo "$out" | grep -q "xdp *applied" || fail "replace not applied to XDP: $out"
passes "replace=true"
echo "ok: replace=true swaps the shield's list in whole"

printf 'blocklist:\n  - 198.18.0.0/24\n' >"$work/edge.yaml"
out=$(c config.reload) || fail "config.reload: $out"
echo "$out" | grep -q "xdp *applied" || fail "reload not applied to XDP: $out"
blocked "config.reload"
c allowlist.add prefix=198.18.0.2 >/dev/null || fail "allowlist.add"
passes "allowlist after reload"
echo "ok: config.reload pushes the file's lists into the shield"

# The shield's maps stay pinned after we exit: leave them empty for the
# next test on this machine (a spoofed flood from 198.18.0.0/24 would die here).
: >"$work/empty.txt"
c blocklist.load file="$work/empty.txt" replace=true >/dev/null || fail "emptying the blocklist"
c allowlist.load file="$work/empty.txt" replace=true >/dev/null || fail "emptying the allowlist"
kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || fail "exit status $rc after SIGTERM"
