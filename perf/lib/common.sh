# shellcheck shell=bash
# Shared plumbing of perf/run: logging and progress, the private network,
# the scratch directory, recording results, and cleanup of everything a run
# started (also on Ctrl-C and SIGTERM).
#
# Results: every measurement is one JSON line appended to
# $PERF_OUT/<scenario>.jsonl by perf_record / perf_unavailable; perf/lib/report.py
# turns those into <scenario>.json, <scenario>.md and plots.

PERF_TOP=${PERF_TOP:?}
PERF_LIB=$PERF_TOP/perf/lib
# shellcheck source=../../tests/lib/netns.sh
source "$PERF_TOP/tests/lib/netns.sh"

PERF_WORK=""           # scratch dir of this run (private Postfix, dumps)
PERF_T0=$(date +%s)

perf_log() { printf '[%4ds] %s\n' $(( $(date +%s) - PERF_T0 )) "$*" >&2; }
perf_die() { perf_log "error: $*"; exit 1; }

perf_cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  # netns_cleanup kills what was spawned and everything left in our
  # namespaces (Postfix's master and its children included), then
  # deletes the namespaces and their veths.
  netns_cleanup
  if [ -n "$PERF_WORK" ] && [ -d "$PERF_WORK" ] && [ -z "${PERF_KEEP:-}" ]; then
    rm -rf "$PERF_WORK"
  fi
  return $rc
}

# Sets up the namespaces and the scratch directory; installs the traps.
#   cli (198.18.0.2, extra sources 198.18.0.10-.17) <-> sut (198.18.0.1)
#   sut (198.18.1.1) <-> snk (198.18.1.2)
perf_init() {
  netns_init
  trap perf_cleanup EXIT
  trap 'perf_log "interrupted, cleaning up"; exit 130' INT
  trap 'perf_log "terminated, cleaning up"; exit 143' TERM HUP
  PERF_WORK=$(mktemp -d /var/tmp/mxedge-perf.XXXXXX)
  chmod 755 "$PERF_WORK"
  perf_log "scratch directory $PERF_WORK"
  netns_host cli
  netns_host sut
  netns_host snk
  netns_link cli sut 198.18.0.2/24 198.18.0.1/24
  local i
  for i in $(seq 10 17); do
    ip -n "$(netns_name cli)" addr add 198.18.0.$i/24 dev "$(netns_ifname cli sut)"
  done
  netns_link sut snk 198.18.1.1/24 198.18.1.2/24
  # Per-namespace knobs only: the machine's own settings stay untouched.
  netns_exec cli sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
  netns_exec sut sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192 \
    net.ipv4.ip_local_port_range="1024 65000"
  netns_exec snk sysctl -qw net.core.somaxconn=8192
  PERF_SUT_ADDR=198.18.0.1
  PERF_CLI_ADDR=198.18.0.2
  PERF_SINK_ADDR=198.18.1.2
  PERF_SUT_RELAY_ADDR=198.18.1.1
  PERF_CLI_SOURCES=(198.18.0.10 198.18.0.11 198.18.0.12 198.18.0.13
                    198.18.0.14 198.18.0.15 198.18.0.16 198.18.0.17)
}

# Finds a built mxedge-bench, or $1 (mxedge-bench-dpdk) (perf/run builds
# one if none exists).
perf_find_bench() {
  local b n=${1:-mxedge-bench}
  for b in "${PERF_BUILD:-}" "$PERF_TOP/build/release" "$PERF_TOP/build/perf" "$PERF_TOP"/build/*; do
    [ -n "$b" ] && [ -x "$b/perf/bench/$n" ] && { echo "$b/perf/bench/$n"; return 0; }
  done
  return 1
}

# Runs mxedge-bench from the client namespace with a progress line per
# second; the JSON report goes to $1. Remaining args go to mxedge-bench.
# With --client dpdk, mxedge-bench-dpdk takes the cli veth through
# net_af_xdp for the run (the PMD detaches at exit) from an address of its
# own, 198.18.0.30 (no TIME_WAIT left by kernel clients in its way); the
# sut's kernel must then send complete checksums (generic XDP hands DPDK
# the frames as queued), so its offloads are off during the run.
perf_bench() {
  local json=$1; shift
  if [ "${PERF_CLIENT:-kernel}" = dpdk ]; then
    local sif; sif=$(netns_ifname sut cli)
    netns_exec sut ethtool -K "$sif" tx off tso off gso off >/dev/null 2>&1 || true
    local rc=0
    netns_exec cli "$PERF_BENCH_DPDK" --port "af_xdp:$(netns_ifname cli sut)" \
      --addr 198.18.0.30/24 --json "$json" --progress "$@" >"$json.txt" 2> >(sed 's/^/        /' >&2) &
    wait $! || rc=$?
    netns_exec sut ethtool -K "$sif" tx on tso on gso on >/dev/null 2>&1 || true
    [ $rc = 0 ] || { perf_log "mxedge-bench-dpdk failed: $(cat "$json.txt")"; return 1; }
    return 0
  fi
  netns_exec cli "$PERF_BENCH" --json "$json" --progress "$@" >"$json.txt" 2> >(sed 's/^/        /' >&2) &
  wait $! || { perf_log "mxedge-bench failed: $(cat "$json.txt")"; return 1; }
}

# smtp-sink as the downstream server in the snk namespace (port 25).
# Each message it takes is counted on stdout (-c); perf_sink_count reads it.
perf_sink_start() {
  PERF_SINK_LOG=$PERF_WORK/sink.out
  netns_spawn snk smtp-sink -u nobody -c -m 2048 "$PERF_SINK_ADDR:25" 2048 >"$PERF_SINK_LOG" 2>&1
  PERF_SINK_PID=$NETNS_LAST_PID
  local i
  for i in $(seq 50); do
    netns_exec snk ss -ltn 2>/dev/null | grep -q "$PERF_SINK_ADDR:25" && return 0
    sleep 0.1
  done
  perf_die "smtp-sink did not start: $(cat "$PERF_SINK_LOG")"
}
perf_sink_stop() {
  [ -n "${PERF_SINK_PID:-}" ] || return 0
  kill "$PERF_SINK_PID" 2>/dev/null || true
  wait "$PERF_SINK_PID" 2>/dev/null || true
  PERF_SINK_PID=""
}
# Messages smtp-sink has taken so far ("mesg=N" in its last counter line).
perf_sink_count() {
  tr '\r' '\n' <"$PERF_SINK_LOG" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1 | grep . || echo 0
}

# Waits until a log shows COUNT lines with PATTERN and smtp-sink has
# counted SINK0 + COUNT messages, or TIMEOUT seconds pass; prints
# "LINES SINKCOUNT EPOCH" with EPOCH the time both were first seen. One
# process polls both files every 10 ms (reading only what was appended),
# so the end of a drain is seen within about 10 ms whatever the machine's
# load, rather than after a round of grep/sed processes.
perf_wait_logged() {  # perf_wait_logged LOG PATTERN COUNT SINK0 TIMEOUT
  /usr/bin/python3 - "$1" "$2" "$3" "$PERF_SINK_LOG" "$4" "$5" <<'PY'
import re, sys, time
log, pat, count, sinklog, sink0, timeout = sys.argv[1:]
count, sink0, end = int(count), int(sink0), time.time() + float(timeout)
pat = pat.encode()
mesg = re.compile(rb"mesg=(\d+)")
lines = sink = 0
off = soff = 0
tail = stail = b""
while True:
    try:
        with open(log, "rb") as f:
            f.seek(off)
            chunk = f.read()
        off += len(chunk)
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        lines += data[:cut].count(pat)
        tail = data[cut:]
    except FileNotFoundError:
        pass
    with open(sinklog, "rb") as f:
        f.seek(soff)
        chunk = f.read()
    soff += len(chunk)
    data = stail + chunk
    found = mesg.findall(data)
    if found:
        sink = int(found[-1]) - sink0
    stail = data[-32:]
    now = time.time()
    if (lines >= count and sink >= count) or now >= end:
        print(lines, sink, "%.6f" % now)
        break
    time.sleep(0.01)
PY
}

# JSON helpers (Debian's python3; only the standard library is used).
perf_json() {  # perf_json FILE EXPR   e.g. perf_json r.json 'd["accepted_per_s"]'
  /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# Records one measured run: perf_record SCENARIO SYSTEM CASE RUN KEY=NUM...
# [raw=PATH]. Values are numbers; raw points at the mxedge-bench JSON.
perf_record() {
  local sc=$1 sys=$2 case=$3 run=$4; shift 4
  /usr/bin/python3 - "$PERF_OUT/$sc.jsonl" "$sys" "$case" "$run" "$@" <<'PY'
import json, sys
out, sysname, case, run = sys.argv[1:5]
rec = {"system": sysname, "case": case, "run": int(run), "metrics": {}}
# The shared machine's load when the run ended, beside every measurement.
with open("/proc/loadavg") as f:
    rec["metrics"]["loadavg"] = float(f.read().split()[0])
for kv in sys.argv[5:]:
    k, v = kv.split("=", 1)
    if k == "raw":
        rec["raw"] = v
    else:
        rec["metrics"][k] = float(v)
with open(out, "a") as f:
    f.write(json.dumps(rec) + "\n")
PY
}

# Records that a system could not be measured, and why ("not built yet: ...").
perf_unavailable() {
  local sc=$1 sys=$2 why=$3
  /usr/bin/python3 - "$PERF_OUT/$sc.jsonl" "$sys" "$why" <<'PY'
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"system": sys.argv[2], "status": sys.argv[3]}) + "\n")
PY
  perf_log "$sys: $why"
}

# Scenario metadata: perf_meta SCENARIO KEY=VALUE... (strings)
perf_meta() {
  local sc=$1; shift
  /usr/bin/python3 - "$PERF_OUT/$sc.jsonl" "$@" <<'PY'
import json, sys
meta = dict(kv.split("=", 1) for kv in sys.argv[2:])
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"meta": meta}) + "\n")
PY
}

# Loads the system-under-test drivers; each defines <name>_status,
# <name>_start PROFILE, <name>_stop, <name>_pids, <name>_addr (see
# perf/lib/drivers/README.md).
for _d in "$PERF_LIB"/drivers/*.sh; do
  # shellcheck source=/dev/null
  source "$_d"
done
unset _d

# The systems a scenario compares, minus those --systems leaves out.
perf_systems() {  # perf_systems SYSTEM... -> the selected ones, in order
  local s
  for s in "$@"; do
    case ",${PERF_SYSTEMS:-$s}," in *",$s,"*) echo "$s" ;; esac
  done
}

perf_sys_fn() { echo "${1//-/_}_$2"; }
sut() {  # sut SYSTEM ACTION args...
  local fn; fn=$(perf_sys_fn "$1" "$2"); shift 2
  "$fn" "$@"
}

# Metrics of one mxedge-bench JSON as KEY=VALUE words for perf_record.
perf_bench_metrics() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
e = d["errors"]
lat = d["latency_us"]
m = {
    "accepted_per_s": d["accepted_per_s"],
    "sessions_per_s": d["sessions_per_s"],
    "accepted": d["messages_accepted"],
    "attempted": d["messages_attempted"],
    "sessions": d["sessions_completed"],
    "errors": e["connect"] + e["timeout"] + e["disconnect"] + e["protocol"] + sum(e["replies"].values()),
    "connect_220_p50_ms": lat["connect_220"]["p50"] / 1e3,
    "connect_220_p99_ms": lat["connect_220"]["p99"] / 1e3,
    "eod_250_p50_ms": lat["eod_250"]["p50"] / 1e3,
    "eod_250_p99_ms": lat["eod_250"]["p99"] / 1e3,
    "eod_250_p999_ms": lat["eod_250"]["p999"] / 1e3,
    "elapsed_s": d["elapsed_s"],
}
print(" ".join(f"{k}={v}" for k, v in m.items()))
PY
}

# Calls SYSTEM's optional hook if its driver defines it (else succeeds).
sut_hook() {
  local fn; fn=$(perf_sys_fn "$1" "$2"); shift 2
  if declare -F "$fn" >/dev/null; then "$fn" "$@"; fi
}

# Starts SYSTEM with PROFILE, or records why it cannot be measured.
# Returns 1 when the scenario should skip it.
perf_sut_up() {  # perf_sut_up SCENARIO SYSTEM PROFILE
  local st
  st=$(sut "$2" status)
  if [ "$st" != ok ]; then
    perf_unavailable "$1" "$2" "$st"
    return 1
  fi
  perf_log "$2: starting ($3 profile)"
  if ! sut "$2" start "$3" 2>"$PERF_WORK/start.err"; then
    perf_unavailable "$1" "$2" "failed to start: $(head -c 300 "$PERF_WORK/start.err")"
    sut "$2" stop || true
    return 1
  fi
}

# Records a case that was not measured, with the reason (shown in the table).
perf_record_skip() {  # perf_record_skip SCENARIO SYSTEM CASE WHY
  /usr/bin/python3 - "$PERF_OUT/$1.jsonl" "$2" "$3" "$4" <<'PY'
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"system": sys.argv[2], "case": sys.argv[3], "skipped": sys.argv[4]}) + "\n")
PY
  perf_log "$2, $3: $4"
}

# CPU time of a namespace's processes: user + system time of every process
# in it, including children that exited and were reaped (their time lands
# in the parent's cutime/cstime). The difference of two readings is the
# work done in between, even if processes came and went.
perf_ns_cpu_ticks() {  # "user sys" clock ticks of a namespace's processes
  local p u=0 s=0 f
  for p in $(ip netns pids "$(netns_name "$1")" 2>/dev/null); do
    # Read with a builtin: a process per pid would take seconds on a
    # loaded machine, between the end of a measurement and this reading.
    { read -r f <"/proc/$p/stat"; } 2>/dev/null || continue
    f=${f##*) }
    # fields after the ")": utime=12 stime=13 cutime=14 cstime=15
    # shellcheck disable=SC2086
    set -- $f
    u=$(( u + ${12} + ${14} )); s=$(( s + ${13} + ${15} ))
  done
  echo "$u $s"
}

# Floating-point arithmetic without extra packages: perf_calc "1 / 3".
perf_calc() { awk "BEGIN { printf \"%.6f\\n\", $1 }"; }
