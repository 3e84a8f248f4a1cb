# shellcheck shell=bash
# scenario: CPU cost per accepted message (all SUT processes, relay included)
# Instruction counts would be the machine-independent measure, but this VM
# exposes no hardware counters (`perf stat -e instructions true` says
# "<not supported>"), so the scenario measures CPU time: user + system time
# of every process in the SUT's namespace, including children that exited
# and were reaped during the run (their time lands in the parent's
# cutime/cstime), over an accept run plus the relay of what it accepted.
perf_ns_cpu_ticks() {  # "user sys" clock ticks of a namespace's processes
  local p u=0 s=0 f
  for p in $(ip netns pids "$(netns_name "$1")" 2>/dev/null); do
    # /proc/PID/stat fields after the ")" : utime=12 stime=13 cutime=14 cstime=15
    f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    u=$(( u + ${12} + ${14} )); s=$(( s + ${13} + ${15} ))
  done
  echo "$u $s"
}

run_cpu() {
  local sc=cpu dur=10 n=20 sys r hz
  hz=$(getconf CLK_TCK)
  [ -n "$PERF_QUICK" ] && dur=3
  local counters="no (linux-perf not installed)"
  if command -v perf >/dev/null; then
    counters="no"
    perf stat -e instructions true 2>&1 | grep -qE '[0-9] +instructions' && counters="yes"
  fi
  perf_meta $sc title="CPU time per accepted message (all processes)" metric=cpu_ms_per_msg \
    unit="CPU ms/message" hw_counters="$counters" \
    columns="user_ms_per_msg:user ms,sys_ms_per_msg:system ms,accepted:messages,sys_share:kernel share" \
    load="mxedge-bench --sessions $n --size 4096 --duration $dur, then until relayed" \
    note="Hardware instruction counters available: $counters (perf stat -e instructions). CPU time is read from /proc for every process in the SUT namespace (clock tick $((1000 / hz)) ms)."
  perf_sink_start
  for sys in mxedge-dpdk mxedge-kernel postfix; do
    perf_sut_up $sc $sys accept || continue
    perf_bench "$PERF_WORK/warm.json" --target "$(sut $sys addr)" --sessions $n --duration 1 --quiet || true
    sut_hook $sys wait_empty 60 || true
    for r in $(seq "$PERF_RUNS"); do
      local raw=$PERF_OUT/raw/$sc-$sys-$r.json c0 c1
      c0=$(perf_ns_cpu_ticks sut)
      perf_log "$sys: run $r/$PERF_RUNS (${dur}s)"
      perf_bench "$raw" --target "$(sut $sys addr)" --sessions $n --size 4096 --duration "$dur" --quiet || continue
      sut_hook $sys wait_empty 60 || perf_log "$sys: queue not empty after 60 s"
      c1=$(perf_ns_cpu_ticks sut)
      local acc u s
      acc=$(perf_json "$raw" 'd["messages_accepted"]')
      u=$(( ${c1% *} - ${c0% *} )); s=$(( ${c1#* } - ${c0#* } ))
      [ "$acc" -gt 0 ] || continue
      perf_record $sc $sys "$n sessions, 4 KB" "$r" \
        cpu_ms_per_msg="$(perf_calc "($u + $s) * 1000 / $hz / $acc")" \
        user_ms_per_msg="$(perf_calc "$u * 1000 / $hz / $acc")" \
        sys_ms_per_msg="$(perf_calc "$s * 1000 / $hz / $acc")" \
        sys_share="$(perf_calc "$s / ($u + $s + 0.000001)")" accepted="$acc" raw="${raw#"$PERF_OUT"/}"
      perf_log "$sys: $acc messages, $(( (u + s) * 1000 / hz )) CPU ms"
    done
    sut $sys stop
  done
  perf_sink_stop
}
