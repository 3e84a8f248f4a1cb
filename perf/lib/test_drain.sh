#!/usr/bin/env bash
# perf-smoke: perf/run drain end to end with a small queue (100 messages,
# one round). For every system that is built (mxedge-relay: mxedge
# --io=kernel fills the spool, mxedge-control drains it; Postfix), the
# table must show what a user would check: every queued message delivered
# (the SUT's own log), counted by smtp-sink, none left in the queue, a
# rate and a CPU cost; and nothing the run started may outlive it.
#   test_drain.sh PATH/TO/mxedge-bench
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
top=$(cd "$here/../.." && pwd)
bench=$(readlink -f "$1")
PERF_BUILD=$(cd "$(dirname "$bench")/../.." && pwd)
export PERF_BUILD
export PERF_MXEDGE_BUILD=$PERF_BUILD PERF_DRAIN_N=100
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root"

out=$(mktemp -d /tmp/mxedge-perf-drain.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT

"$top/perf/run" --quick --runs 1 --max-seconds 280 --out "$out" drain >"$out/log" 2>&1 \
  || fail "perf/run drain failed: $(tail -20 "$out/log")"
work=$(sed -n 's/.*scratch directory \(\/var\/tmp\/mxedge-perf\.[A-Za-z0-9]*\)$/\1/p' "$out/log" | head -1)
[ -n "$work" ] || fail "no scratch directory in the log"
# mxedge-control and mxedge run with their configuration/spool in the
# scratch directory; Postfix daemons have their cwd there.
left=$( { grep -l -e "$work/mxedge[-]" /proc/[0-9]*/cmdline 2>/dev/null || true; \
         find /proc/[0-9]*/cwd -maxdepth 0 -lname "$work/*" 2>/dev/null || true; } | head -3)
[ -z "$left" ] || fail "left behind: $left"
[ ! -e "$work" ] || fail "scratch directory $work not removed"

/usr/bin/python3 - "$out/drain.json" <<'PY' || fail "drain.json is not what it should be: $(tail -20 "$out/log")"
import json, sys
d = json.load(open(sys.argv[1]))
s = d["systems"]
measured = 0
for name in ("mxedge-relay", "postfix"):
    st = s[name]["status"]
    if st != "ok":
        # Not built or not installed: said so, and no numbers.
        assert st.startswith(("not built yet", "not installed")), (name, st)
        assert not s[name]["cases"], (name, s[name])
        print("ok: %s listed as: %s" % (name, st))
        continue
    m = s[name]["cases"]["100 queued"]["median"]
    assert m["queued"] == 100, (name, m)
    # Nothing lost on the way: the SUT logged every message as sent, the
    # sink took every one, and the queue is empty.
    assert m["delivered"] == m["queued"] == m["sink_count"], (name, m)
    assert m["queue_left"] == 0, (name, m)
    assert m["drained_per_s"] > 0 and m["drain_s"] > 0, (name, m)
    assert m["cpu_ms_per_msg"] > 0, (name, m)
    measured += 1
    print("ok: %s drained 100 in %.2f s (%.0f msg/s, %.2f CPU ms/msg)"
          % (name, m["drain_s"], m["drained_per_s"], m["cpu_ms_per_msg"]))
assert s["mxedge-relay"]["status"] == "ok", "mxedge-relay not measured: " + s["mxedge-relay"]["status"]
PY
grep -q '^| mxedge-relay | 100 queued | \*\*[0-9,.]*\*\*' "$out/drain.md" || fail "no mxedge-relay row in drain.md"
echo "ok: perf/run drain wrote JSON and Markdown, and cleaned up"
