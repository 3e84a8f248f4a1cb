# shellcheck shell=bash
# scenario: relay drain, N queued 4 KB messages delivered to smtp-sink
# Each SUT first accepts N messages (fsync before every 250) while it holds
# relaying back, then is told to deliver them all; the time from that order
# until its log shows N sent and smtp-sink has counted N gives messages/s.
#  - Postfix: defer_transports = relay while it accepts; the messages wait
#    in the deferred queue; `postqueue -f` releases them.
#  - mxedge-relay: `mxedge --io=kernel` accepts into its spool while no
#    relay runs and is stopped; starting mxedge-control (route to the sink)
#    is the release, so its start-up and spool scan are inside the time.
# The runs are rounds: every system in turn per round, so a change in the
# shared machine's load hits all of them alike. CPU time is that of every
# process in the SUT namespace during the drain (Postfix: master, qmgr,
# smtp and the rest; mxedge: mxedge-control alone, the edge is stopped).
# N is 2000 by default (PERF_DRAIN_N overrides): Postfix takes each message
# in at a few hundred per second at best here (it fsyncs every queue file),
# so filling its queue is most of the scenario's time, and 2000 keeps three
# rounds well inside perf/run all's budget while the drains still last
# seconds (mxedge) to tens of seconds (Postfix).
run_drain() {
  local sc=drain n=${PERF_DRAIN_N:-2000} runs=$PERF_RUNS sys r hz systems=()
  hz=$(getconf CLK_TCK)
  [ -n "$PERF_QUICK" ] && n=${PERF_DRAIN_N:-500}
  perf_meta $sc title="relay drain of $n queued messages to smtp-sink" metric=drained_per_s \
    unit="messages/s" queued=$n ratio_to=postfix \
    columns="drain_s:drain s,cpu_ms_per_msg:CPU ms/msg,user_ms_per_msg:user ms,sys_ms_per_msg:system ms,delivered:delivered (SUT log),sink_count:smtp-sink count,queue_left:left in queue,fill_s:fill s,loadavg:load avg" \
    load="mxedge-bench --count $n --sessions 20 --per-session 50 --pipelining --size 4096 (to fill the queue), then release" \
    note="Drain: from the release (Postfix: postqueue -f; mxedge: starting mxedge-control on the spool mxedge --io=kernel filled) until the SUT logged $n status=sent and smtp-sink counted $n. Both relay with 20 connections to the sink and reuse connections. CPU: user+system time of every SUT process during the drain, from /proc (clock tick $((1000 / hz)) ms); mxedge: mxedge-control only (the edge is stopped). Rounds: every system once per round, $runs rounds."
  for sys in $(perf_systems mxedge-relay postfix); do
    if [ "$(sut $sys status)" != ok ]; then
      perf_unavailable $sc $sys "$(sut $sys status)"
      continue
    fi
    systems+=("$sys")
  done
  perf_sink_start
  for r in $(seq "$runs"); do
    for sys in "${systems[@]}"; do
      drain_run "$sc" "$sys" "$r" "$runs" "$n" "$hz"
    done
  done
  perf_sink_stop
}

drain_run() {  # drain_run SCENARIO SYSTEM RUN RUNS N HZ
  local sc=$1 sys=$2 r=$3 runs=$4 n=$5 hz=$6
  local raw=$PERF_OUT/raw/$sc-$sys-fill-$r.json sink0 acc f0 f1
  perf_sut_up $sc $sys drain || return 0
  perf_log "$sys: round $r/$runs: queueing $n messages"
  f0=$(date +%s.%N)
  if ! perf_bench "$raw" --target "$(sut $sys addr)" --sessions 20 --per-session 50 \
      --pipelining --size 4096 --count "$n" --duration 120 --quiet; then
    sut $sys stop; return 0
  fi
  acc=$(perf_json "$raw" 'd["messages_accepted"]')
  # Everything accepted must be queued and held before the clock starts.
  sut_hook $sys wait_queued 60 "$acc" || perf_log "$sys: not all messages queued"
  f1=$(date +%s.%N)
  sink0=$(perf_sink_count)
  perf_log "$sys: $acc queued in $(perf_calc "$f1 - $f0") s; delivering"
  local t0 t1 sent sinkc c0 c1
  c0=$(perf_ns_cpu_ticks sut)
  t0=$(date +%s.%N)
  sut $sys flush
  # Every delivery is one status=sent line in the SUT's mail log (both
  # write Postfix's format); the sink counts what arrived.
  read -r sent sinkc t1 < <(perf_wait_logged "$(sut $sys sent_log)" "status=sent" "$acc" "$sink0" 120)
  [ "$sent" -ge "$acc" ] && [ "$sinkc" -ge "$acc" ] \
    || perf_log "$sys: drain incomplete after 120 s ($sent/$acc, sink $sinkc)"
  c1=$(perf_ns_cpu_ticks sut)
  local secs u s left=0
  secs=$(perf_calc "$t1 - $t0")
  u=$(( ${c1% *} - ${c0% *} )); s=$(( ${c1#* } - ${c0#* } ))
  declare -F "$(perf_sys_fn $sys queue_left)" >/dev/null && left=$(sut $sys queue_left)
  perf_record $sc $sys "$n queued" "$r" drained_per_s="$(perf_calc "$sent / $secs")" \
    drain_s="$secs" delivered="$sent" sink_count="$sinkc" queued="$acc" queue_left="$left" \
    fill_s="$(perf_calc "$f1 - $f0")" \
    cpu_ms_per_msg="$(perf_calc "($u + $s) * 1000 / $hz / ($sent + 0.000001)")" \
    user_ms_per_msg="$(perf_calc "$u * 1000 / $hz / ($sent + 0.000001)")" \
    sys_ms_per_msg="$(perf_calc "$s * 1000 / $hz / ($sent + 0.000001)")" \
    raw="${raw#"$PERF_OUT"/}"
  perf_log "$sys: drained $sent in ${secs}s (sink counted $sinkc, $(( (u + s) * 1000 / hz )) CPU ms, $left left)"
  sut $sys stop
}
