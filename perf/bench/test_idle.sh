#!/usr/bin/env bash
# perf-smoke: the idle scenario end to end on the kernel-socket mxedge
# (the quickest system to start): `perf/run --quick idle` holds 300
# sessions, reads the server's memory, sends one fresh message while they
# are held, and writes a row a README table would quote. Checks that the
# row is there with every session held, the fresh message accepted, memory
# that grew with the sessions, and nothing of the run left behind.
#   test_idle.sh PATH/TO/mxedge-bench
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
top=$(cd "$here/../.." && pwd)
bench=$(readlink -f "$1")
PERF_BUILD=$(cd "$(dirname "$bench")/../.." && pwd)
export PERF_BUILD PERF_MXEDGE_BUILD=$PERF_BUILD
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root"

out=$(mktemp -d /tmp/mxedge-perf-idle.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT

"$top/perf/run" --quick --runs 1 --max-seconds 280 --systems mxedge-kernel --out "$out" idle \
  >"$out/log" 2>&1 &
pid=$!
wait $pid || fail "perf/run idle failed: $(tail -20 "$out/log")"
! ip netns list | grep -q "^mxt$pid-" || fail "namespaces of perf/run $pid left behind"
for f in idle.json idle.md; do
  [ -s "$out/$f" ] || fail "$f missing: $(tail -20 "$out/log")"
done
/usr/bin/python3 - "$out/idle.json" <<'PY' || fail "idle.json is not what it should be: $(tail -20 "$out/log")"
import json, sys
d = json.load(open(sys.argv[1]))
k = d["systems"]["mxedge-kernel"]
if k["status"] != "ok":
    # Not built in this tree: listed as such, without numbers.
    assert "cases" not in k or not k["cases"], k
    sys.exit(0)
m = k["cases"]["300 sessions"]["median"]
assert m["held"] == 300, m
# A user would notice an edge full of idle sessions that stops taking mail.
assert m["fresh_accepted"] == 1, m
# Held sessions cost the server memory: user space and kernel sockets.
assert m["user_kb_per_session"] > 0 and m["kernel_kb_per_session"] > 0, m
assert m["processes"] == 1 and m["client_procs"] >= 1, m
PY
grep -q "^| mxedge-kernel | 300 sessions | \*\*" "$out/idle.md" \
  || grep -q "not built" "$out/idle.md" || fail "no mxedge-kernel row in idle.md"
echo "ok: idle scenario: 300 sessions held, fresh message accepted while held"
