#!/usr/bin/env bash
# The XDP shield in front of the DPDK dataplane on a veth: the af_xdp PMD
# loads the shield, SMTP SYNs reach the dataplane, a source blocked with
# mxedgectl dies in XDP (the dataplane's counters stay flat), the allowlist
# wins over the block, and management traffic (ping) still reaches the
# kernel throughout.
set -euo pipefail
mxedge=$1 ctl=$2 obj=$3
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d /tmp/mxt-shdp.XXXXXX)
sock="$work/control.sock"
c() { "$ctl" --socket "$sock" "$@"; }
rx() { c --json stats | /usr/bin/python3 -c 'import json,sys; print(sum(l["rx_packets"] for l in json.load(sys.stdin)["result"] if l.get("lcore") != "total"))'; }
shield_count() { c --json shield | /usr/bin/python3 -c "import json,sys; print(sum(r['packets'] for r in json.load(sys.stdin)['result'] if r['reason'] == '$1'))"; }
# Three SMTP connection attempts from the client (SYNs, bounded by timeout).
attempts() { for _ in 1 2 3; do netns_exec client timeout 0.5 bash -c 'exec 3<>/dev/tcp/198.18.0.1/25' 2>/dev/null || true; done; }

netns_init
bpffs_ensure
netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
edge_if=$(netns_ifname edge client)
netns_spawn edge "$mxedge" --port "af_xdp:$edge_if" --xdp-prog "$obj" --control "$sock" \
  --no-huge --duration 150 >"$work/log" 2>&1
for _ in $(seq 200); do grep -q "running on" "$work/log" && [ -S "$sock" ] && break; sleep 0.1; done
grep -q "XDP shield active" "$work/log" || { cat "$work/log"; fail "shield not active"; }
c status | grep -q "xdp_shield *on" || fail "status does not show the shield"

r0=$(rx); attempts; r1=$(rx)
[ "$r1" -gt "$r0" ] || fail "SMTP SYNs did not reach the dataplane ($r0 -> $r1)"
echo "ok: SMTP SYNs redirected to the dataplane ($r0 -> $r1 frames)"

out=$(c blocklist.add prefix=198.18.0.2)
echo "$out" | grep -q "xdp *applied" || fail "block not applied to XDP: $out"
d0=$(shield_count drop_block_exact); r1=$(rx); attempts; r2=$(rx); d1=$(shield_count drop_block_exact)
[ "$r2" -eq "$r1" ] || fail "blocked source still reached the dataplane ($r1 -> $r2)"
[ "$d1" -gt "$d0" ] || fail "no drops counted in XDP ($d0 -> $d1)"
netns_exec client ping -c1 -W2 198.18.0.1 >/dev/null || fail "ping (management) blocked too"
echo "ok: blocked source dropped in XDP ($((d1 - d0)) packets), dataplane flat, ping passes"

c allowlist.add prefix=198.18.0.0/24 >/dev/null || fail "allowlist.add"
attempts; r3=$(rx)
[ "$r3" -gt "$r2" ] || fail "allowlist did not win over the block ($r2 -> $r3)"
c allowlist.del prefix=198.18.0.0/24 >/dev/null
c blocklist.del prefix=198.18.0.2 >/dev/null
attempts; r4=$(rx)
[ "$r4" -gt "$r3" ] || fail "unblocked source still dropped"
echo "ok: allowlist wins; unblock restores delivery"
kill -TERM "$NETNS_LAST_PID"; rc=0; wait "$NETNS_LAST_PID" || rc=$?
[ "$rc" -eq 0 ] || { grep -v "^lib\(bpf\|xdp\)" "$work/log" | tail -40; fail "exit status $rc after SIGTERM"; }
rm -rf "$work"
