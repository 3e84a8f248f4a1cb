# shellcheck shell=bash
# scenario: relay drain, N queued 4 KB messages delivered to smtp-sink
# The SUT first accepts N messages while it holds relaying back (Postfix:
# defer_transports = relay), then is told to deliver them all; the time from
# that order until smtp-sink has taken the last one gives messages/s.
run_drain() {
  local sc=drain n=5000 runs=$PERF_RUNS sys r
  [ -n "$PERF_QUICK" ] && n=500
  perf_meta $sc title="relay drain of $n queued messages to smtp-sink" metric=drained_per_s \
    unit="messages/s" queued=$n \
    columns="drain_s:drain s,delivered:delivered (SUT log),sink_count:smtp-sink count,queued:queued" \
    load="mxedge-bench --count $n --sessions 20 --per-session 50 --pipelining (to fill the queue)"
  for sys in $(perf_systems mxedge-dpdk postfix); do
    if ! declare -F "$(perf_sys_fn $sys flush)" >/dev/null && [ "$(sut $sys status)" = ok ]; then
      perf_unavailable $sc $sys "not built yet: mxedge has no relay to downstream servers (its driver has no way to hold and release a queue)"
      continue
    fi
    perf_sut_up $sc $sys drain || continue
    for r in $(seq "$runs"); do
      perf_sink_start
      local raw=$PERF_OUT/raw/$sc-$sys-fill-$r.json sent0 sink0
      perf_log "$sys: run $r/$runs: queueing $n messages"
      perf_bench "$raw" --target "$(sut $sys addr)" --sessions 20 --per-session 50 \
        --pipelining --count "$n" --duration 120 --quiet || continue
      local acc; acc=$(perf_json "$raw" 'd["messages_accepted"]')
      # Everything must have left the incoming/active queues (deferred).
      sut_hook $sys wait_deferred 60 "$acc" || perf_log "$sys: not all messages deferred"
      sent0=$(sut $sys sent_count); sink0=$(perf_sink_count)
      perf_log "$sys: $acc queued; delivering"
      local t0 t1 sent
      t0=$(date +%s.%N)
      sut $sys flush
      local end=$(( $(date +%s) + 120 ))
      while :; do
        sent=$(( $(sut $sys sent_count) - sent0 ))
        [ "$sent" -ge "$acc" ] && break
        [ "$(date +%s)" -ge "$end" ] && { perf_log "$sys: drain incomplete after 120 s ($sent/$acc)"; break; }
        sleep 0.05
      done
      t1=$(date +%s.%N)
      sleep 0.5
      local secs sinkc
      secs=$(perf_calc "$t1 - $t0")
      sinkc=$(( $(perf_sink_count) - sink0 ))
      perf_record $sc $sys "$n queued" "$r" drained_per_s="$(perf_calc "$sent / $secs")" \
        drain_s="$secs" delivered="$sent" sink_count="$sinkc" queued="$acc"
      perf_log "$sys: drained $sent in ${secs}s (sink counted $sinkc)"
      perf_sink_stop
    done
    sut $sys stop
  done
}
