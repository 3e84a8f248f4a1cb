# shellcheck shell=bash
# scenario: where mxedge's time goes under accept load (perf record, cpu-clock)
# Not part of `all` (it explains numbers rather than producing them). Each
# mxedge system gets the accept load (20 sessions, 4 KB, one message per
# session) while `perf record -e cpu-clock -g` samples its processes (the VM
# has no hardware counters; cpu-clock is a software timer event, which
# also sees the kernel side). The flat profile per system, by thread and by
# symbol, goes to profile-<system>.txt; the table gives the rate while
# sampled and the share of samples in the busiest symbols.
run_profile() {
  local sc=profile dur=8 n=20 sys
  [ -n "$PERF_QUICK" ] && dur=3
  perf_meta $sc title="where mxedge's time goes, accept load under perf record" \
    metric=accepted_per_s unit="messages/s, while sampled" \
    columns="samples:samples,top1_pct:top symbol %,top5_pct:top 5 symbols %" \
    load="mxedge-bench --sessions $n --size 4096 --duration $dur, perf record -e cpu-clock -F 997 -g" \
    note="Profiles: profile-<system>.txt beside this file (perf report --no-children, by thread and by symbol; kernel symbols included)."
  if ! command -v perf >/dev/null; then
    perf_unavailable $sc "perf" "not installed: linux-perf (Debian package linux-perf)"
    return 0
  fi
  for sys in $(perf_systems mxedge-dpdk mxedge-kernel); do
    perf_sut_up $sc $sys accept || continue
    perf_bench "$PERF_WORK/warm.json" --target "$(sut $sys addr)" --sessions $n --duration 1 --quiet || true
    local pids data=$PERF_WORK/perf-$sys.data raw=$PERF_OUT/raw/$sc-$sys.json txt=$PERF_OUT/profile-$sys.txt
    pids=$(sut $sys pids | paste -sd,)
    perf_log "$sys: sampling pids $pids for ${dur}s of load"
    perf record -q -e cpu-clock -F 997 -g -p "$pids" -o "$data" -- sleep $((dur + 1)) \
      >"$PERF_WORK/perf-record.log" 2>&1 &
    local rec=$!
    NETNS_PIDS+=("$rec")
    perf_bench "$raw" --target "$(sut $sys addr)" --sessions $n --size 4096 --duration "$dur" --quiet || true
    wait $rec || perf_log "$sys: perf record: $(tail -2 "$PERF_WORK/perf-record.log")"
    {
      echo "# $sys: perf record -e cpu-clock -F 997 -g, ${dur}s of mxedge-bench --sessions $n --size 4096"
      echo "# command line: $(cat "$PERF_WORK/mxedge.cmd" 2>/dev/null)"
      echo "## by thread"
      perf report -i "$data" --stdio --no-children --sort comm,pid -g none 2>/dev/null \
        | grep -v -e '^$' -e '^#' | head -20 || true
      echo "## by symbol (self time)"
      perf report -i "$data" --stdio --no-children --sort sym -g none --percent-limit 0.5 2>/dev/null \
        | grep -v -e '^$' -e '^#' | head -60 || true
    } >"$txt"
    local samples top1 top5
    samples=$(perf script -i "$data" -F tid 2>/dev/null | wc -l)
    read -r top1 top5 < <(sed -n '/^## by symbol/,$p' "$txt" | grep -E '^ +[0-9.]+%' | \
      awk '{gsub("%","",$1); if (NR==1) t1=$1; if (NR<=5) t5+=$1} END {print t1+0, t5+0}') || true
    if [ -s "$raw" ]; then
      perf_record $sc $sys "$n sessions" 1 accepted_per_s="$(perf_json "$raw" 'd["accepted_per_s"]')" \
        samples="${samples:-0}" top1_pct="$top1" top5_pct="$top5" raw="${raw#"$PERF_OUT"/}"
    fi
    perf_log "$sys: profile in $txt"
    sut $sys stop
  done
}
