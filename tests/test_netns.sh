#!/usr/bin/env bash
# The namespaced test network: hosts reach each other over v4 and v6, and
# every namespace/interface is gone afterwards, also when the test fails or
# is killed (meson's timeout sends SIGTERM).
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
source "$here/lib/netns.sh"

fail() { echo "FAIL: $*" >&2; exit 1; }

netns_init
netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
netns_link edge client 2001:db8::1/64 2001:db8::2/64

netns_exec client ping -c1 -W2 198.18.0.1 >/dev/null || fail "v4 ping client->edge"
netns_exec edge ping -c1 -W2 198.18.0.2 >/dev/null || fail "v4 ping edge->client"
netns_exec client ping -6 -c1 -W2 2001:db8::1 >/dev/null || fail "v6 ping client->edge"
# The hosts are isolated from the machine's own network.
ip -n "$(netns_name client)" route | grep -q default && fail "client has a default route"
echo "ok: v4 and v6 between namespaced hosts"

# Each host sees its own interfaces in /sys and has one bpffs that all of
# its processes share (pinned maps must be visible across processes).
[ "$(netns_exec edge stat -f -c %T /sys/fs/bpf)" = bpf_fs ] || fail "no bpffs in host"
netns_exec edge ls /sys/class/net | grep -qx "$(netns_ifname edge client)" || fail "edge /sys lacks its veth"
netns_exec edge ls /sys/class/net | grep -qx "$(netns_ifname client edge)" && fail "edge /sys shows client's veth"
netns_exec edge mkdir /sys/fs/bpf/mxt-shared
netns_exec edge test -d /sys/fs/bpf/mxt-shared || fail "bpffs not shared between processes of a host"
netns_exec client test -d /sys/fs/bpf/mxt-shared && fail "bpffs shared between hosts"
[ "$(netns_exec edge pwd)" = "$PWD" ] || fail "working directory not kept"
echo "ok: per-host /sys and shared bpffs"

# A child that fails half-way leaves nothing behind.
child=$(mktemp)
cat >"$child" <<EOC
source "$here/lib/netns.sh"
netns_init
netns_host a; netns_host b
netns_link a b 198.19.1.1/30 198.19.1.2/30
echo \$\$ > "$child.pid"
EOC
echo 'false' >>"$child"
bash -e "$child" && fail "child should have failed"
cpid=$(cat "$child.pid")
ip netns list | grep -q "mxt$cpid" && fail "namespaces of failed child left behind"
ip -all link show 2>/dev/null | grep -q "v$cpid" && fail "interfaces of failed child left behind"
echo "ok: cleanup after failure"

# A child killed by SIGTERM (as meson does on timeout) also cleans up.
sed -i 's/^false$/sleep 30 \& wait/' "$child"
bash -e "$child" & kpid=$!
for _ in $(seq 50); do [ -s "$child.pid" ] && [ "$(cat "$child.pid")" = "$kpid" ] && break; sleep 0.1; done
[ "$(cat "$child.pid")" = "$kpid" ] || fail "child did not start"
ip netns list | grep -q "mxt$kpid" || fail "child namespaces not created"
kill -TERM "$kpid"; wait "$kpid" || true
ip netns list | grep -q "mxt$kpid" && fail "namespaces of killed child left behind"
echo "ok: cleanup after SIGTERM"

# Addresses outside the test ranges are refused with a clear message.
out=$(bash -c "source '$here/lib/netns.sh'; netns_init; netns_host x; netns_host y; netns_link x y 10.0.0.1/24 10.0.0.2/24" 2>&1) \
  && fail "10.0.0.0/8 address accepted"
echo "$out" | grep -q "outside 198.18.0.0/15" || fail "unclear refusal: $out"
echo "ok: non-test addresses refused"
rm -f "$child" "$child.pid"
