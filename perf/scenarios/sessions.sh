# shellcheck shell=bash
# scenario: session rate, connect -> EHLO -> QUIT, 20 and 200 sessions
# Closed loop without messages: each session connects, waits for the 220
# greeting, sends EHLO, then QUIT, and starts over once the server closed.
run_sessions() {
  local sc=sessions dur=4 sessions=(20 200) sys n r raw
  if [ -n "$PERF_QUICK" ]; then dur=3; sessions=(20); fi
  perf_meta $sc title="connect, EHLO, QUIT sessions/s" metric=sessions_per_s unit="sessions/s" ratio_to=postfix \
    latency=connect_220 duration_s=$dur sessions="${sessions[*]}" \
    columns="connect_220_p50_ms:connect→220 p50 ms,connect_220_p99_ms:p99 ms,errors:errors,sessions:sessions,loadavg:load avg" \
    load="mxedge-bench --sessions N --per-session 0 --duration $dur (closed loop)"
  perf_sink_start
  for sys in $(perf_systems mxedge-dpdk mxedge-kernel postfix); do
    perf_sut_up $sc $sys accept || continue
    for n in "${sessions[@]}"; do
      perf_bench "$PERF_WORK/warm.json" --target "$(sut $sys addr)" --sessions "$n" \
        --per-session 0 --duration 1 --quiet || true
      for r in $(seq "$PERF_RUNS"); do
        raw=$PERF_OUT/raw/$sc-$sys-$n-$r.json
        perf_log "$sys: $n sessions, run $r/$PERF_RUNS (${dur}s)"
        perf_bench "$raw" --target "$(sut $sys addr)" --sessions "$n" --per-session 0 \
          --duration "$dur" --timeout 30 || continue
        # shellcheck disable=SC2046
        perf_record $sc $sys "$n sessions" "$r" $(perf_bench_metrics "$raw") raw="${raw#"$PERF_OUT"/}"
        perf_log "$sys: $n sessions: $(sed -n 3p "$raw.txt" | sed 's/^ *//')"
      done
    done
    sut $sys stop
  done
  perf_sink_stop
}
