#!/usr/bin/env bash
# perf-smoke: perf/run end to end with a short accept scenario, then an
# interrupted run. Checks that the results a README table would quote are
# produced and consistent (Postfix's own count of taken messages equals
# mxedge-bench's accepted count; parts not built are listed as such, with
# no numbers), and that nothing the run started outlives it, also after
# Ctrl-C.
#   test_run.sh PATH/TO/mxedge-bench
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
top=$(cd "$here/../.." && pwd)
bench=$(readlink -f "$1")
export PERF_BUILD=$(cd "$(dirname "$bench")/../.." && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root"

out=$(mktemp -d /tmp/mxedge-perf-smoke.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT

leftovers() {  # leftovers PID LOG: namespaces or processes of that perf/run
  ip netns list | grep -q "^mxt$1-" && echo "namespaces of $1"
  # Postfix daemons chdir to their queue directory inside the run's scratch
  # directory (named in its log): any such process is a leftover. Other
  # perf/run invocations on the machine have their own directories.
  local work
  work=$(sed -n 's/.*scratch directory \(\/var\/tmp\/mxedge-perf\.[A-Za-z0-9]*\)$/\1/p' "$2" | head -1)
  [ -n "$work" ] || { echo "no scratch directory in $2"; return 0; }
  find /proc/[0-9]*/cwd -maxdepth 0 -lname "$work/*" 2>/dev/null | head -3
  # mxedge runs from the tree with its spool in the scratch directory. (The
  # bracket keeps grep's own command line from matching its pattern.)
  grep -l -e "$work/mxedge[-]spool" /proc/[0-9]*/cmdline 2>/dev/null | head -3
  return 0
}

"$top/perf/run" --quick --runs 1 --out "$out" accept >"$out/log" 2>&1 &
pid=$!
wait $pid || fail "perf/run accept failed: $(tail -20 "$out/log")"
[ -z "$(leftovers $pid "$out/log")" ] || fail "left behind: $(leftovers $pid "$out/log")"
for f in accept.json accept.md; do
  [ -s "$out/$f" ] || fail "$f missing"
done
/usr/bin/python3 - "$out/accept.json" <<'PY' || fail "accept.json is not what it should be"
import json, sys
d = json.load(open(sys.argv[1]))
s = d["systems"]
pf = s["postfix"]
assert pf["status"] == "ok", pf["status"]
case = pf["cases"]["20 sessions"]
m = case["median"]
assert m["accepted_per_s"] > 0 and m["accepted"] > 0, m
assert m["errors"] == 0, m
# The server saw exactly what the load generator counted as accepted.
assert m["server_accepted"] == m["accepted"], m
assert m["server_sent"] == m["sent"] > 0, m
# mxedge: either listed as not built (and then without numbers), or, once
# its binaries are in the build, measured under the same checks as Postfix.
for name in ("mxedge-dpdk", "mxedge-kernel"):
    if s[name]["status"] == "ok":
        mm = s[name]["cases"]["20 sessions"]["median"]
        assert mm["accepted"] > 0 and mm["errors"] == 0, (name, mm)
        assert mm["server_accepted"] == mm["accepted"], (name, mm)
        # smtp-source's rate counts only messages the server really kept.
        assert mm["server_sent"] == mm["sent"] > 0, (name, mm)
        print("ok: %s measured: %.0f msg/s, server count == bench count" % (name, mm["accepted_per_s"]))
    else:
        assert s[name]["status"].startswith(("not built yet", "not installed")), s[name]
        assert not s[name]["cases"], s[name]
assert d["machine"]["cpus"] >= 1
print("ok: postfix accepted %.0f msg/s, server count %d == bench count %d"
      % (m["accepted_per_s"], m["server_accepted"], m["accepted"]))
PY
grep -q '^| postfix | 20 sessions | \*\*[0-9,.]*\*\*' "$out/accept.md" || fail "no postfix row in accept.md"
grep -qE '^\| mxedge-kernel \| (– \| not (built|wired) yet|20 sessions \| \*\*[0-9])' "$out/accept.md" \
  || fail "mxedge-kernel neither listed as not built nor measured"
if command -v gnuplot >/dev/null; then
  for f in accept.png accept-latency.png; do
    [ "$(head -c 4 "$out/$f" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "$f is not a PNG"
  done
  echo "ok: plots written"
else
  echo "note: gnuplot not installed, plots not checked"
fi
echo "ok: perf/run accept wrote JSON and Markdown, and cleaned up"

# Ctrl-C in the middle of a run: everything it started goes away. A
# terminal's Ctrl-C sends SIGINT to the foreground process group; emulate
# that with a fresh session (own group) and SIGINT restored to default
# (a non-interactive shell starts background jobs with it ignored).
/usr/bin/python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execv(sys.argv[1], sys.argv[1:])' "$top/perf/run" --quick --runs 1 --out "$out/int" accept >"$out/int.log" 2>&1 &
pid=$!
for _ in $(seq 1200); do
  grep -q "postfix: 20 sessions, round 1/1: warm-up" "$out/int.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "postfix: 20 sessions, round 1/1: warm-up" "$out/int.log" || fail "interrupted run never got to load: $(tail "$out/int.log")"
ip netns list | grep -q "^mxt$pid-" || fail "no namespaces while running"
leftovers $pid "$out/int.log" | grep -q "^/proc/" || fail "the leftover check does not see the running Postfix"
kill -INT -- -$pid
wait $pid && fail "interrupted perf/run exited 0"
[ -z "$(leftovers $pid "$out/int.log")" ] || fail "left behind after SIGINT: $(leftovers $pid "$out/int.log")"
grep -q "interrupted, cleaning up" "$out/int.log" || fail "no cleanup message"
echo "ok: SIGINT mid-run leaves no namespaces or Postfix processes"
