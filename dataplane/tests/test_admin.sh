#!/usr/bin/env bash
# Operators change a running edge through its control socket with
# mxedgectl: blocklist/allowlist entries (with TTL), domains, status and
# stats; typos get clear errors; read-only users cannot change anything.
set -euo pipefail
mxedge=$1 ctl=$2
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d /tmp/mxt-admin.XXXXXX)
chmod 755 "$work"
sock="$work/control.sock"
c() { "$ctl" --socket "$sock" "$@"; }

# --check-config: good and bad files, with the position of the mistake
cat >"$work/edge.yaml" <<EOC
port: tap:atap$$
control:
  socket: $sock
domains:
  start.test:
    max_size: 5M
blocklist:
  - 198.18.66.0/24
EOC
"$mxedge" --check-config --config "$work/edge.yaml" | grep -q "edge.yaml: ok" || fail "good config not ok"
printf 'blocklist:\n  - 198.18.0.0/15\n  - 198.18.1.1/24\n' >"$work/bad.yaml"
rc=0; err=$("$mxedge" --check-config --config "$work/bad.yaml" 2>&1) || rc=$?
[ "$rc" -eq 1 ] && echo "$err" | grep -q "bad.yaml:3: \"198.18.1.1/24\" is not an address or prefix" \
  || fail "bad prefix in file: rc=$rc $err"
printf 'queues: 2\nqueuez: 3\n' >"$work/bad2.yaml"
rc=0; err=$("$mxedge" --check-config --config "$work/bad2.yaml" 2>&1) || rc=$?
[ "$rc" -eq 2 ] && echo "$err" | grep -q "bad2.yaml:2:1: unknown key \"queuez\"" \
  || fail "unknown key: rc=$rc $err"
echo "ok: --check-config reports mistakes with their position"

netns_init
netns_host edge
netns_spawn edge "$mxedge" --config "$work/edge.yaml" --duration 120 >"$work/log" 2>&1
for _ in $(seq 150); do [ -S "$sock" ] && grep -q "running on" "$work/log" && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$work/log"; fail "no control socket"; }

out=$(c status) || fail "status failed"
echo "$out" | grep -q "driver *net_tap" || fail "status lacks driver: $out"
echo "$out" | grep -q "version *0\." || fail "status lacks version: $out"
c stats | grep -q "^LCORE" || fail "stats is not a table"
# the configuration file's lists are the start-up state
c domain.list | grep -q "start.test *5242880" || fail "file domain missing: $(c domain.list)"
c blocklist.list | grep -q "198.18.66.0/24" || fail "file blocklist missing"
c blocklist.del prefix=198.18.66.0/24 >/dev/null || fail "del file entry"

c blocklist.add prefix=198.18.9.0/24 ttl=3600 >/dev/null || fail "blocklist.add"
c blocklist.add prefix=2001:db8:bad::/48 >/dev/null || fail "blocklist.add v6"
out=$(c blocklist.list)
echo "$out" | grep -Eq "198.18.9.0/24 +(3[0-5][0-9][0-9]|3600)$" || fail "list lacks TTL entry: $out"
echo "$out" | grep -q "2001:db8:bad::/48 *-$" || fail "list lacks v6 entry: $out"
c --json blocklist.list | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["ok"] and len(r["result"]) == 2, r' \
  || fail "--json output"
# A short TTL expires by itself; polled, so a loaded machine only waits longer.
c blocklist.add prefix=198.18.8.0/24 ttl=2 >/dev/null || fail "blocklist.add ttl=2"
gone=
for _ in $(seq 30); do
  sleep 0.5
  c blocklist.list | grep -q "198.18.8.0/24" || { gone=1; break; }
done
[ -n "$gone" ] || fail "TTL entry did not expire: $(c blocklist.list)"
c blocklist.list | grep -q "198.18.9.0/24" || fail "the long TTL entry expired too"
c blocklist.del prefix=198.18.9.0/24 >/dev/null || fail "blocklist.del"
c blocklist.del prefix=2001:db8:bad::/48 >/dev/null || fail "blocklist.del"
echo "ok: blocklist add/list/expire/del"

# typos: clear message, exit 1, nothing changed
rc=0; err=$(c blocklist.add prefix=198.18.9.1/24 2>&1) || rc=$?
[ "$rc" -eq 1 ] && echo "$err" | grep -q "host bits must be zero" || fail "bad prefix: rc=$rc $err"
rc=0; err=$(c blocklist.del prefix=198.18.1.0/24 2>&1) || rc=$?
[ "$rc" -eq 1 ] && echo "$err" | grep -q "not_found" || fail "del missing: $err"
rc=0; err=$(c blocklist.add prefix=198.18.1.0/24 ttl=soon 2>&1) || rc=$?
[ "$rc" -eq 1 ] && echo "$err" | grep -q "ttl" || fail "bad ttl: $err"
rc=0; err=$(c frobnicate 2>&1) || rc=$?
[ "$rc" -eq 1 ] && echo "$err" | grep -q "unknown command" || fail "unknown command: $err"
rc=0; err=$(c blocklist.add prefix 2>&1) || rc=$?
[ "$rc" -eq 2 ] && echo "$err" | grep -q "KEY=VALUE" || fail "usage error: $err"
[ "$(c blocklist.list)" = "ok" ] || [ -z "$(c blocklist.list | tail -n +2)" ] || fail "typos changed the list"
echo "ok: typos refused with clear messages"

c domain.add domain=Customer.Test max_size=1000000 >/dev/null || fail "domain.add"
c domain.list | grep -q "customer.test *1000000" || fail "domain.list: $(c domain.list)"
c allowlist.add prefix=198.18.0.2 >/dev/null || fail "allowlist.add"
c status | grep -q "allowlist_entries *1" || fail "status counts"
echo "ok: domains and allowlist"

# a read-only user can look but not change
chmod 666 "$sock"
ro() { setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" --socket "$sock" "$@"; }
ro status >/dev/null || fail "read-only status"
rc=0; err=$(ro blocklist.add prefix=198.18.5.0/24 2>&1) || rc=$?
[ "$rc" -eq 1 ] && echo "$err" | grep -q "admin role" || fail "read-only add: rc=$rc $err"
echo "ok: read-only role enforced"

rc=0; err=$("$ctl" --socket "$work/none.sock" status 2>&1) || rc=$?
[ "$rc" -eq 2 ] && echo "$err" | grep -q "cannot talk to mxedge" || fail "no daemon: $err"
kill -TERM "$NETNS_LAST_PID"; wait "$NETNS_LAST_PID" || fail "exit status after SIGTERM"
[ -S "$sock" ] && fail "socket left behind"
rm -rf "$work"
echo "ok: control socket removed at exit"
