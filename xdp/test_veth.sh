#!/usr/bin/env bash
# The shield on a veth in namespaces: a blocklisted source cannot complete a
# TCP handshake to the edge's SMTP listener, an allowed one delivers a
# message (over IPv4 and IPv6); non-SMTP traffic from the blocked source still
# reaches the kernel; a bulk swap and an allowlist entry take effect live;
# detach restores plain kernel behaviour.
# With no AF_XDP socket bound, SMTP goes to the kernel listener (the empty
# xsks_map slot must not black-hole it).
# Usage: test_veth.sh MXEDGE_SHIELD_CLI   (root)
set -euo pipefail
cli=$1
here=$(dirname "$(readlink -f "$0")")
top=$here/..
source "$top/tests/lib/netns.sh"
source "$top/tests/lib/bpffs.sh"
py=/usr/bin/python3

fail() { echo "FAIL: $*" >&2; exit 1; }

netns_init
bpffs_ensure
pin=/sys/fs/bpf/mxt$$-shield
work=$(mktemp -d /tmp/mxt-veth.XXXXXX)
edge_if=
cleanup_all() {
  if [ -n "$edge_if" ]; then
    nsenter --net="/run/netns/$(netns_name edge)" "$cli" detach "$edge_if" >/dev/null 2>&1 || true
  fi
  rm -rf "$pin" "$pin-client" "$work"
  netns_cleanup
}
trap cleanup_all EXIT
trap 'cleanup_all; exit 143' TERM
trap 'cleanup_all; exit 130' INT

netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
netns_link edge client 2001:db8::1/64 2001:db8::2/64
cif=$(netns_ifname client edge)
netns_exec client ip addr add 198.18.0.3/24 dev "$cif"
netns_exec client ip -6 addr add 2001:db8::3/64 dev "$cif" nodad
edge_if=$(netns_ifname edge client)

edge() { nsenter --net="/run/netns/$(netns_name edge)" "$@"; }
shield() { "$cli" --pin-dir "$pin" "$@"; }

netns_spawn edge "$py" "$here/test_smtpd.py" "$work/mail.txt" 198.18.0.1,25 2001:db8::1,25 198.18.0.1,2222
for _ in $(seq 50); do
  netns_exec edge ss -ltn | grep -q ':2222 ' && netns_exec edge ss -ltn | grep -q '\]:25 ' && break
  sleep 0.1
done

send() { netns_exec client "$py" "$here/test_send.py" "$@"; }
delivered() { grep -qx "$1" "$work/mail.txt" 2>/dev/null; }

# Without the shield everyone gets through.
send 198.18.0.3 198.18.0.1 25 before-shield || fail "baseline delivery failed"

edge "$cli" --pin-dir "$pin" attach "$edge_if" >/dev/null || fail "attach"
shield add block 198.18.0.3 >/dev/null
shield add block 2001:db8::3 >/dev/null

rc=0; send 198.18.0.3 198.18.0.1 25 blocked-v4 || rc=$?
[ "$rc" -eq 3 ] || fail "blocked IPv4 source: expected handshake timeout, got rc=$rc"
rc=0; send 2001:db8::3 2001:db8::1 25 blocked-v6 || rc=$?
[ "$rc" -eq 3 ] || fail "blocked IPv6 source: expected handshake timeout, got rc=$rc"
send 198.18.0.2 198.18.0.1 25 allowed-v4 || fail "allowed IPv4 source could not deliver"
send 2001:db8::2 2001:db8::1 25 allowed-v6 || fail "allowed IPv6 source could not deliver"
delivered allowed-v4 || fail "allowed-v4 message not received"
delivered allowed-v6 || fail "allowed-v6 message not received"
delivered blocked-v4 && fail "blocked-v4 message was received"
# Management traffic from the blocked source is the kernel's business.
send 198.18.0.3 198.18.0.1 2222 mgmt || fail "non-SMTP port from blocked source did not pass"
netns_exec client ping -c1 -W2 -I 198.18.0.3 198.18.0.1 >/dev/null || fail "ping from blocked source"
echo "ok: blocked source cannot handshake, allowed source delivers (v4+v6)"

stats=$(shield stats)
drops=$(awk '$1=="drop_block_exact"{print $2}' <<<"$stats")
nox=$(awk '$1=="pass_no_xsk"{print $2}' <<<"$stats")
[ "$drops" -ge 2 ] || fail "drop_block_exact=$drops"
[ "$nox" -ge 2 ] || fail "pass_no_xsk=$nox (no socket bound: SMTP must pass to the kernel)"
echo "ok: counters drop_block_exact=$drops pass_no_xsk=$nox"

# Whole-set swap: block the /24 and /64, but allowlist the good client.
printf '198.18.0.0/24\n2001:db8::/64\n' >"$work/block.txt"
shield bulk block "$work/block.txt" >/dev/null || fail "bulk load"
shield add allow 198.18.0.2 >/dev/null
send 198.18.0.2 198.18.0.1 25 allowlisted || fail "allowlisted source blocked"
rc=0; send 2001:db8::2 2001:db8::1 25 swapped-v6 || rc=$?
[ "$rc" -eq 3 ] || fail "source in bulk-loaded /64 got through (rc=$rc)"
shield list block | grep -qx '198.18.0.0/24' || fail "list does not show the bulk entry"
shield list block | grep -q '^198.18.0.3/' && fail "old set still listed after swap"
echo "ok: bulk swap and allowlist take effect live"

# A bad file changes nothing.
printf '198.18.0.0/24\nnot-a-cidr\n' >"$work/bad.txt"
out=$(shield bulk block "$work/bad.txt" 2>&1) && fail "bad file accepted"
grep -q "bad.txt:2" <<<"$out" || fail "unclear error: $out"
rc=0; send 2001:db8::2 2001:db8::1 25 still-blocked || rc=$?
[ "$rc" -eq 3 ] || fail "bad file changed the active set"
echo "ok: bad file rejected with its line, set unchanged"

# SYN flood mode with XDP cookies: the shield answers SYNs itself (XDP_TX)
# with kernel-format cookies; the edge kernel (tcp_syncookies=2 validates
# cookie ACKs without having seen the SYN) completes the handshake.
netns_exec edge sysctl -qw net.ipv4.tcp_syncookies=2
# A veth hands XDP_TX frames to its peer's XDP receive ring: the peer needs
# an XDP program too (any; a second shield instance passes everything that is
# not to an SMTP port, i.e. all of the client's inbound traffic).
nsenter --net="/run/netns/$(netns_name client)" "$cli" --pin-dir "$pin-client" \
  attach "$cif" >/dev/null || fail "attach on the client side"
shield config --flood-syn 1 --flood-mode cookie --flood-hold 60 >/dev/null || fail "config cookie mode"
# More than one SMTP SYN within 100 ms crosses the threshold: flood mode
# then holds for 60 s.
netns_exec client "$py" -c '
import socket
for _ in range(3):
    s = socket.socket(); s.settimeout(2); s.bind(("198.18.0.2", 0))
    try: s.connect(("198.18.0.1", 25))
    except OSError: pass
    s.close()'
tx0=$(shield stats | awk '$1=="tx_syncookie"{print $2}')
[ "$tx0" -ge 1 ] || fail "flood mode did not start"
for i in 1 2 3; do
  send 198.18.0.2 198.18.0.1 25 cookie-$i || fail "delivery $i with XDP SYN cookies failed"
done
tx=$(( $(shield stats | awk '$1=="tx_syncookie"{print $2}') - tx0 ))
[ "$tx" -ge 3 ] || fail "tx_syncookie grew by $tx: cookies not used"
delivered cookie-3 || fail "message sent through a cookie handshake not received"
shield config --flood-syn 0 --flood-mode handoff --flood-hold 1 >/dev/null
echo "ok: XDP SYN cookies ($tx SYN-ACKs from XDP) complete handshakes with the kernel"

edge "$cli" detach "$edge_if" >/dev/null || fail "detach"
edge_if_saved=$edge_if; edge_if=
send 2001:db8::2 2001:db8::1 25 after-detach || fail "delivery after detach"
ip -n "$(netns_name edge)" link show "$edge_if_saved" | grep -q xdp && fail "program still attached"
echo "ok: detach"

# Generic (skb) mode on request; the tables survive in the pins.
edge "$cli" --pin-dir "$pin" attach "$edge_if_saved" --mode generic >/dev/null || fail "generic attach"
edge_if=$edge_if_saved
ip -n "$(netns_name edge)" link show "$edge_if" | grep -q xdpgeneric || fail "not in generic mode"
rc=0; send 2001:db8::2 2001:db8::1 25 generic-blocked || rc=$?
[ "$rc" -eq 3 ] || fail "generic mode: blocked source got through (rc=$rc)"
send 198.18.0.2 198.18.0.1 25 generic-allowed || fail "generic mode: allowlisted source blocked"
edge "$cli" detach "$edge_if" >/dev/null || fail "detach generic"
edge_if=
echo "ok: generic mode attach/detach"
