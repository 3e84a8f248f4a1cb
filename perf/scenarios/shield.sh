# shellcheck shell=bash
# scenario: XDP shield ns/packet (1 M prefixes) vs empty program vs xdp-filter; accept under SYN flood
# Part 1 runs the xdp/ component's own harness (perf/xdp/bench_shield,
# bpf_prog_test_run_opts on the same packets for every program) and takes
# its medians into this scenario's table: one row per packet path, one
# "system" per program. Part 2 is the legitimate accept rate while a SYN
# flood runs, for the DPDK dataplane alone (its own SYN cookies), the
# dataplane behind the XDP shield, and Postfix (the flood side is
# mxedge-bench --syn-flood).
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
  shield_flood_part
}

# Part 2: legitimate accept rate (20 sessions, 4 KB) without and with a SYN
# flood from the client host (mxedge-bench --syn-flood, spoofed sources in
# 198.18.0.0/15 the SUT cannot answer). Postfix relies on the kernel's SYN
# cookies, the DPDK dataplane on its own TCP stack's, and behind the
# shield (mxedge-dpdk-shield, see its driver) the shield checks every SYN
# first and hands SMTP on to the dataplane.
shield_flood_part() {
  local sc=shield dur=5 rate=20000 r sys
  [ -n "$PERF_QUICK" ] && { dur=3; rate=5000; }
  perf_meta $sc flood_rate=$rate flood_duration_s=$dur \
    columns="accepted_per_s:legitimate accepted msg/s,syn_per_s:SYNs/s sent" \
    note="Accept under a SYN flood: 20 closed-loop sessions (4 KB) as in the accept scenario, without and with mxedge-bench --syn-flood --rate $rate from the client host (spoofed 198.18.0.0/15 sources the SUT cannot answer). mxedge-dpdk is the dataplane alone (its TCP stack answers with SYN cookies). mxedge-dpdk-shield is the same dataplane with the XDP shield attached by its af_xdp PMD (--xdp-prog shield.bpf.o) in its default configuration: per-source SYN rate 20/s burst 40, flood mode past 50 k SYN/s in hand-off (the dataplane validates its own cookies; XDP-minted cookies need kernel TCP), the load client's address on the allowlist (one source opening hundreds of sessions a second is what the rate limit stops). The spoofed sources are spread over 131 k addresses, so the rate limit drops few of them: the shield's counters after each flood run are in raw/shield-*-stats.txt. Postfix relies on the kernel's SYN cookies."
  perf_sink_start
  for sys in $(perf_systems mxedge-dpdk mxedge-dpdk-shield postfix); do
    perf_sut_up $sc $sys accept || continue
    perf_bench "$PERF_WORK/warm.json" --target "$(sut $sys addr)" --sessions 20 --duration 1 --quiet || true
    for r in $(seq "$PERF_RUNS"); do
      local flood case raw
      for flood in 0 "$rate"; do
        raw=$PERF_OUT/raw/$sc-$sys-flood$flood-$r.json
        sut_hook $sys wait_empty 60 || true
        local fpid=""
        if [ "$flood" != 0 ]; then
          netns_spawn cli "$PERF_BENCH" --syn-flood --target "$(sut $sys addr)" --rate "$flood" \
            --count $(( flood * (dur + 1) )) --duration $(( dur + 1 )) >"$PERF_WORK/flood.txt" 2>&1
          fpid=$NETNS_LAST_PID
          case="accept, SYN flood $flood/s"
        else
          case="accept, no flood"
        fi
        perf_log "$sys: $case, run $r/$PERF_RUNS (${dur}s)"
        perf_bench "$raw" --target "$(sut $sys addr)" --sessions 20 --size 4096 \
          --duration "$dur" --timeout 30 --quiet || continue
        local sent_rate=0
        if [ -n "$fpid" ]; then
          wait "$fpid" || true
          sent_rate=$(sed -n 's/.* (\([0-9]*\)\/s)$/\1/p' "$PERF_WORK/flood.txt")
          sut_hook $sys stats >"${raw%.json}-stats.txt"
        fi
        perf_record $sc $sys "$case" "$r" syn_per_s="${sent_rate:-0}" \
          accepted_per_s="$(perf_json "$raw" 'd["accepted_per_s"]')" raw="${raw#"$PERF_OUT"/}"
        perf_log "$sys: $case: $(sed -n 2p "$raw.txt" | sed 's/^ *//')"
      done
    done
    sut $sys stop
  done
  perf_sink_stop
}
