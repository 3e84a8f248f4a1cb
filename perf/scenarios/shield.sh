# shellcheck shell=bash
# scenario: XDP shield ns/packet (1 M prefixes) vs empty program vs xdp-filter; accept under SYN flood
# Part 1 runs the xdp/ component's own harness (perf/xdp/bench_shield,
# bpf_prog_test_run_opts on the same packets for every program) and takes
# its medians into this scenario's table: one row per packet path, one
# "system" per program. Part 2, the legitimate accept rate while a SYN flood
# runs, needs the shield attached in front of a running mxedge; it is listed
# as not built until that exists (the flood side is mxedge-bench --syn-flood).
run_shield() {
  local sc=shield prefixes=1000000 runs=$PERF_RUNS bs obj
  [ -n "$PERF_QUICK" ] && prefixes=20000
  perf_meta $sc title="XDP shield, ns/packet by path" metric=ns_per_packet unit="ns/packet" \
    prefixes=$prefixes \
    load="perf/xdp/bench_shield --prefixes $prefixes --runs $runs (bpf_prog_test_run_opts)"
  bs=$(mxedge_find perf/xdp/bench_shield || true)
  obj=$(mxedge_find perf/xdp/baseline.bpf.o 2>/dev/null || true)
  [ -z "$obj" ] && [ -n "$bs" ] && [ -f "$(dirname "$bs")/baseline.bpf.o" ] && obj=$(dirname "$bs")/baseline.bpf.o
  if [ -z "$bs" ] || [ -z "$obj" ]; then
    perf_unavailable $sc "xdp shield" "not built yet: xdp/ shield and its harness (perf/xdp/bench_shield not found under build/)"
  else
    local args=(--baseline "$obj" --prefixes "$prefixes" --runs "$runs" --out "$PERF_OUT/raw/shield")
    [ -n "$PERF_QUICK" ] && args+=(--smoke)
    perf_log "bench_shield ${args[*]}"
    if "$bs" "${args[@]}" >"$PERF_WORK/shield.log" 2>&1 & wait $!; then
      /usr/bin/python3 - "$PERF_OUT/raw/shield.json" "$PERF_OUT/$sc.jsonl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
with open(sys.argv[2], "a") as f:
    for r in d["results"]:
        f.write(json.dumps({"system": r["program"], "case": r["packet"], "run": 1,
                            "metrics": {"ns_per_packet": r["ns_median"]},
                            "raw": "raw/shield.json"}) + "\n")
PY
    else
      perf_unavailable $sc "xdp shield" "failed: $(tail -3 "$PERF_WORK/shield.log")"
    fi
  fi
  perf_unavailable $sc "accept under SYN flood" \
    "not built yet: needs the shield attached in front of a running mxedge (the flood side is mxedge-bench --syn-flood)"
}
