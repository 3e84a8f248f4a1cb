# shellcheck shell=bash
# scenario: accept rate, 4 KB messages, 20 and 200 sessions, fsync on
# Closed loop: each session sends one 4 KB message and quits, as smtp-source
# does without -d. The SUT relays everything to smtp-sink while it accepts
# (a real MX does both); between runs it is given time to empty its queue,
# so every run starts from the same state.
run_accept() {
  local sc=accept dur=10 warm=2 sessions=(20 200) sys n r raw
  if [ -n "$PERF_QUICK" ]; then dur=3; warm=1; sessions=(20); fi
  perf_meta $sc title="accepted messages/s, 4 KB, fsync on" latency=eod_250 \
    columns="eod_250_p50_ms:EOD→250 p50 ms,eod_250_p99_ms:p99 ms,connect_220_p50_ms:connect→220 p50 ms,errors:errors,server_accepted:server counted,accepted:bench accepted" \
    size=4096 duration_s=$dur warmup_s=$warm sessions="${sessions[*]}" \
    metric=accepted_per_s unit="messages/s" \
    load="mxedge-bench --sessions N --per-session 1 --size 4096 --duration $dur (closed loop)" \
    note="Postfix relays to smtp-sink while it accepts; mxedge --io=kernel (mxedge-kio) has no relay yet and only accepts and spools (fsync before 250)."
  perf_sink_start
  for sys in mxedge-dpdk mxedge-kernel postfix; do
    perf_sut_up $sc $sys accept || continue
    for n in "${sessions[@]}"; do
      perf_log "$sys: $n sessions, warm-up ${warm}s"
      perf_bench "$PERF_WORK/warm.json" --target "$(sut $sys addr)" --sessions "$n" \
        --duration "$warm" --quiet || true
      sut_hook $sys wait_empty 60 || perf_log "$sys: queue not empty after 60 s"
      for r in $(seq "$PERF_RUNS"); do
        raw=$PERF_OUT/raw/$sc-$sys-$n-$r.json
        local before after
        before=$(sut_hook $sys received_count)
        perf_log "$sys: $n sessions, run $r/$PERF_RUNS (${dur}s)"
        perf_bench "$raw" --target "$(sut $sys addr)" --sessions "$n" --size 4096 \
          --duration "$dur" --timeout 30 || continue
        sut_hook $sys wait_empty 60 || perf_log "$sys: queue not empty after 60 s"
        after=$(sut_hook $sys received_count)
        # shellcheck disable=SC2046
        perf_record $sc $sys "$n sessions" "$r" $(perf_bench_metrics "$raw") \
          ${before:+server_accepted=$((after - before))} raw="${raw#"$PERF_OUT"/}"
        perf_log "$sys: $n sessions: $(sed -n 2p "$raw.txt" | sed 's/^ *//')"
      done
    done
    sut $sys stop
  done
  perf_sink_stop
}
