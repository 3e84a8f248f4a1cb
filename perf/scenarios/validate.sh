# shellcheck shell=bash
# scenario: mxedge-bench vs Postfix smtp-source on the same load (tool check)
# Both tools send the same number of 4 KB messages over 20 sessions, one
# message per session, to the same server, alternating, and the rate is
# messages / wall time of the whole send. Servers: smtp-sink (nearly free,
# so the tools themselves are measured) and the private Postfix (the
# realistic case). smtp-source's -l counts only the body after its own
# header block; the size below makes both messages 4 KB on the wire.
run_validate() {
  local sc=validate n=2000 r tool srv
  [ -n "$PERF_QUICK" ] && n=300
  perf_meta $sc title="mxedge-bench vs smtp-source, $n messages, 20 sessions" \
    metric=accepted_per_s unit="messages/s" \
    columns="elapsed_s:seconds,accepted:messages" \
    load="smtp-source -s 20 -m $n -l 3900 vs mxedge-bench --sessions 20 --count $n --size 4096"
  for srv in smtp-sink postfix; do
    if [ "$srv" = smtp-sink ]; then
      netns_spawn sut smtp-sink -u nobody -m 1024 "$PERF_SUT_ADDR:25" 1024 >/dev/null 2>&1
      local vsink=$NETNS_LAST_PID
      sleep 0.5
    else
      perf_sink_start
      perf_sut_up $sc postfix accept || continue
    fi
    for r in $(seq "$PERF_RUNS"); do
      for tool in smtp-source mxedge-bench; do
        local t0 t1 acc secs raw=$PERF_OUT/raw/$sc-$srv-$tool-$r.json
        perf_log "$srv: $tool, run $r/$PERF_RUNS ($n messages)"
        t0=$(date +%s.%N)
        if [ $tool = smtp-source ]; then
          netns_exec cli timeout 300 smtp-source -s 20 -m "$n" -l 3900 -f load@bench.test \
            -t rcpt@bench.test "$PERF_SUT_ADDR:25" >"$PERF_WORK/source.log" 2>&1 & wait $! || {
            perf_log "smtp-source failed: $(tail -2 "$PERF_WORK/source.log")"; continue; }
          t1=$(date +%s.%N)
          acc=$n
        else
          perf_bench "$raw" --target "$PERF_SUT_ADDR:25" --sessions 20 --count "$n" \
            --size 4096 --duration 300 --quiet || continue
          t1=$(date +%s.%N)
          acc=$(perf_json "$raw" 'd["messages_accepted"]')
        fi
        secs=$(perf_calc "$t1 - $t0")
        perf_record $sc "$tool" "$srv" "$r" accepted_per_s="$(perf_calc "$acc / $secs")" \
          elapsed_s="$secs" accepted="$acc"
        [ "$srv" = postfix ] && { sut_hook postfix wait_empty 60 || true; }
      done
    done
    if [ "$srv" = smtp-sink ]; then
      kill "$vsink" 2>/dev/null || true; wait "$vsink" 2>/dev/null || true
    else
      sut postfix stop
      perf_sink_stop
    fi
  done
}
