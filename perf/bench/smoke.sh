#!/usr/bin/env bash
# perf-smoke: mxedge-bench against Postfix's smtp-sink on loopback, small and
# bounded. Checks what a user of the numbers relies on: every message the
# tool reports as accepted really reached the server (smtp-sink's dump files
# are counted), with the configured size, in plain, pipelined and
# multi-message sessions; a refused connection is reported as an error, not
# as load; a target outside the test ranges is refused before any traffic.
#   smoke.sh PATH/TO/mxedge-bench
set -euo pipefail
bench=$(readlink -f "$1")
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v smtp-sink >/dev/null || fail "smtp-sink not found (Debian package postfix)"

work=$(mktemp -d /tmp/mxedge-smoke.XXXXXX)
sink_pid=""
cleanup() {
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null && wait "$sink_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
chmod 755 "$work"
mkdir "$work/dump" && chmod 777 "$work/dump"

# A free loopback port for the sink: try a few random ones.
port=""
for _ in $(seq 20); do
  p=$((20000 + RANDOM % 30000))
  smtp-sink -u nobody -d "$work/dump/m" 127.0.0.1:$p 256 &
  sink_pid=$!
  # A sink that lost the bind race may still be alive after a short
  # sleep on a loaded machine: only one that listens counts.
  for _ in $(seq 20); do
    kill -0 "$sink_pid" 2>/dev/null || break
    ss -tlnpH "sport = :$p" | grep -q "pid=$sink_pid," && break
    sleep 0.1
  done
  if ss -tlnpH "sport = :$p" | grep -q "pid=$sink_pid,"; then
    port=$p; break
  fi
  kill "$sink_pid" 2>/dev/null || true
  wait "$sink_pid" 2>/dev/null || true
  sink_pid=""
done
[ -n "$port" ] || fail "could not start smtp-sink"

json_get() {  # json_get FILE KEY  (top-level key, or errors.KEY)
  python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"
}

run() {  # run NAME EXPECTED_MSGS mxedge-bench-args...
  local name=$1 want=$2; shift 2
  local before after
  before=$(find "$work/dump" -type f | wc -l)
  "$bench" --target 127.0.0.1:$port --duration 20 --quiet --json "$work/$name.json" "$@" \
    >"$work/$name.txt" || fail "$name: mxedge-bench exited $?"
  # smtp-sink writes the dump before its 250; allow a moment for the fs.
  sleep 0.2
  after=$(find "$work/dump" -type f | wc -l)
  local acc errs
  acc=$(json_get "$work/$name.json" messages_accepted)
  errs=$(python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))["errors"]
print(d["connect"]+d["timeout"]+d["disconnect"]+d["protocol"]+sum(d["replies"].values()))' "$work/$name.json")
  [ "$acc" = "$want" ] || fail "$name: accepted $acc, want $want ($(cat "$work/$name.txt"))"
  [ $((after - before)) = "$want" ] || fail "$name: sink stored $((after - before)) messages, bench says $acc"
  [ "$errs" = 0 ] || fail "$name: $errs errors: $(cat "$work/$name.txt")"
  echo "ok: $name: $acc accepted, sink stored $((after - before))"
}

run plain 200 --sessions 10 --count 200
run pipelined 300 --sessions 20 --count 300 --pipelining --per-session 5 --size 1k:1,8k:1
run multi-rcpt 50 --sessions 5 --count 50 --rcpts 3 --threads 1

# Sizes on the wire are as configured: smtp-sink stores each message with LF
# line ends, its own header block first and a blank line after; undo that.
/usr/bin/env python3 - "$work/dump" <<'PY' || fail "stored messages are not what mxedge-bench sent"
import os, sys, collections
sizes = collections.Counter()
for name in os.listdir(sys.argv[1]):
    data = open(os.path.join(sys.argv[1], name), "rb").read()
    parts = data.split(b"\nFrom: <load@bench.test>\n", 1)
    assert len(parts) == 2, name + ": header block missing"
    msg = b"From: <load@bench.test>\n" + parts[1][:-1]   # drop the sink's blank line
    sizes[len(msg) + msg.count(b"\n")] += 1                # back to CRLF
# plain (200) and multi-rcpt (50) send 4 KB; pipelined mixes 1 KB and 8 KB.
assert set(sizes) <= {1024, 4096, 8192}, sizes
assert sizes[4096] == 250 and sizes[1024] + sizes[8192] == 300, sizes
assert sizes[1024] > 50 and sizes[8192] > 50, sizes        # both drawn
PY
echo "ok: message sizes on the wire are as configured (4k; 1k/8k mix)"

# Several source addresses: sessions come from each of them in turn.
before=$(find "$work/dump" -type f | wc -l)
run sources 40 --sessions 4 --count 40 --source 127.0.0.2 --source 127.0.0.3
for a in 127.0.0.2 127.0.0.3; do
  k=$(grep -l "^X-Client-Addr: $a\$" -r "$work/dump" | wc -l)
  [ "$k" -ge 15 ] || fail "sources: only $k messages from $a"
done
echo "ok: messages came from both source addresses"

# Open loop: arrivals follow the clock, not the completions.
"$bench" --target 127.0.0.1:$port --open --rate 100 --sessions 50 --duration 2 --quiet \
  --json "$work/open.json" >/dev/null
python3 - "$work/open.json" <<'PY' || fail "open loop did not hold its rate"
import json, sys
d = json.load(open(sys.argv[1]))
started = d["sessions_started"] + d["sessions_missed"]
assert 180 <= started <= 220, started          # 100/s for 2 s
assert d["messages_accepted"] == d["messages_attempted"] >= 180, d
PY
echo "ok: open loop started ~200 sessions in 2 s at 100/s"

# Hold mode: N sessions open and idle; the ready file appears.
rm -f "$work/ready"
"$bench" --target 127.0.0.1:$port --hold --sessions 200 --hold-seconds 1 --duration 20 --quiet \
  --ready-file "$work/ready" --json "$work/hold.json" >/dev/null
[ "$(json_get "$work/hold.json" held_max)" = 200 ] || fail "hold: not 200 held"
[ -s "$work/ready" ] || fail "hold: no ready file"
echo "ok: 200 sessions held idle"

# Hold mode over several processes (the open-file limit is per process):
# every process really holds its share while the ready file is there.
rm -f "$work/ready"
"$bench" --target 127.0.0.1:$port --hold --procs 3 --sessions 240 --hold-seconds 2 \
  --duration 20 --quiet --ready-file "$work/ready" --json "$work/procs.json" >/dev/null &
bpid=$!
for _ in $(seq 200); do [ -e "$work/ready" ] && break; sleep 0.1; done
[ -e "$work/ready" ] || fail "procs: no ready file within 20 s"
pids=$(ss -tnpH state established dst 127.0.0.1:$port | grep -o 'pid=[0-9]*' | sort | uniq -c)
wait $bpid || fail "procs: mxedge-bench exited $?"
[ "$(wc -l <<<"$pids")" = 3 ] || fail "procs: sessions not held by 3 processes: $pids"
[ "$(awk '{s+=$1} END{print s}' <<<"$pids")" = 240 ] || fail "procs: not 240 sessions while ready: $pids"
[ "$(json_get "$work/procs.json" held_max)" = 240 ] || fail "procs: report says not 240 held"
[ "$(json_get "$work/procs.json" procs)" = 3 ] || fail "procs: report says not 3 processes"
echo "ok: 240 sessions held by 3 processes at once"

# An open-file hard limit below the count: the sessions are spread over
# enough processes by themselves (where root may raise the limit, one
# process raises it instead); either way all are held.
rm -f "$work/ready"
( ulimit -n 100 && ulimit -Hn 100 &&
  "$bench" --target 127.0.0.1:$port --hold --sessions 240 --hold-seconds 1 --duration 20 \
    --quiet --ready-file "$work/ready" --json "$work/nofile.json" >/dev/null ) \
  || fail "nofile: mxedge-bench failed under ulimit -Hn 100"
[ "$(json_get "$work/nofile.json" held_max)" = 240 ] || fail "nofile: not 240 held under ulimit -Hn 100"
[ -s "$work/ready" ] || fail "nofile: no ready file"
echo "ok: 240 sessions held under an open-file hard limit of 100 ($(json_get "$work/nofile.json" procs) processes)"
if out=$("$bench" --target 127.0.0.1:$port --procs 2 --duration 1 2>&1); then
  fail "procs accepted outside hold mode"
fi
grep -q -- "--procs is for --hold only" <<<"$out" || fail "unclear --procs refusal: $out"

# Sessions without messages: connect, EHLO, QUIT; all complete, none stored.
before=$(find "$work/dump" -type f | wc -l)
"$bench" --target 127.0.0.1:$port --duration 20 --quiet --sessions 10 --per-session 0 \
  --max-sessions 300 --json "$work/sess.json" >/dev/null
[ "$(json_get "$work/sess.json" sessions_completed)" = 300 ] || fail "sessions: not 300 completed"
[ "$(find "$work/dump" -type f | wc -l)" = "$before" ] || fail "sessions: messages were stored"
echo "ok: 300 connect/EHLO/QUIT sessions"

# smtp-sink does not offer CHUNKING: BDAT must be reported, not sent.
"$bench" --target 127.0.0.1:$port --duration 20 --quiet --bdat --count 5 \
  --json "$work/bdat.json" >/dev/null
[ "$(json_get "$work/bdat.json" messages_accepted)" = 0 ] || fail "bdat: accepted without CHUNKING"
[ "$(json_get "$work/bdat.json" errors.protocol)" -ge 1 ] || fail "bdat: no protocol error counted"
echo "ok: BDAT without CHUNKING is an error"

# A closed port: errors counted, nothing accepted, the duration cap holds.
kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; sink_pid=""
start=$(date +%s)
"$bench" --target 127.0.0.1:$port --duration 2 --quiet --sessions 4 \
  --json "$work/refused.json" >/dev/null || fail "refused: exit $?"
[ $(( $(date +%s) - start )) -le 5 ] || fail "refused: the 2 s duration cap did not hold"
[ "$(json_get "$work/refused.json" messages_accepted)" = 0 ] || fail "refused: accepted something"
[ "$(json_get "$work/refused.json" errors.connect_errno.ECONNREFUSED)" -ge 1 ] || fail "refused: no ECONNREFUSED"
echo "ok: connection refused is reported as errors, run stops at its cap"

# Addresses outside the test ranges are refused before any traffic.
if out=$("$bench" --target 192.0.2.10:25 --duration 1 2>&1); then fail "public target accepted"; fi
echo "$out" | grep -q "refusing target 192.0.2.10:25" || fail "unclear refusal: $out"
echo "ok: public target refused"
