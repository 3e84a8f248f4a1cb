# shellcheck shell=bash
# scenario: accept rate, 4 KB messages, 20 and 200 sessions, fsync on
# Closed loop: each session sends one 4 KB message and quits. The runs are
# rounds: in each, every system is started, measured at 20 and 200 sessions
# and stopped, in turn, so the shared machine's changing load falls on all
# of them alike. Each measurement uses two clients in turn against the same
# server: Postfix's own smtp-source (the rate quoted: the same client for
# every system, as the issue asks) with a message count sized from a 1 s
# warm-up to last about $src_s seconds, then mxedge-bench for the
# end-of-DATA→250 and connect→220 latency percentiles (smtp-source reports
# none). Each client's count of accepted messages is checked against the
# server's own count. Postfix relays everything to smtp-sink while it
# accepts (a real MX does both) and is given time to empty its queue before
# each measurement, so every one starts from the same state.
accept_source() {  # accept_source SYS N COUNT -> "seconds" of a complete send, or fails
  local t0 t1
  t0=$(date +%s.%N)
  netns_exec cli timeout 120 smtp-source -s "$2" -m "$3" -l 3900 -f load@bench.test \
    -t rcpt@bench.test "$(sut "$1" addr)" >"$PERF_WORK/source.log" 2>&1 & wait $! || {
    perf_log "$1: smtp-source failed: $(tail -2 "$PERF_WORK/source.log")"; return 1; }
  t1=$(date +%s.%N)
  perf_calc "$t1 - $t0"
}

accept_case() {  # accept_case SYS N RUN: warm-up, smtp-source, mxedge-bench, record
  local sys=$1 n=$2 r=$3 raw=$PERF_OUT/raw/accept-$1-$2-$3.json m
  perf_log "$sys: $n sessions, round $r/$PERF_RUNS: warm-up ${warm}s"
  perf_bench "$PERF_WORK/warm.json" --target "$(sut $sys addr)" --sessions "$n" \
    --duration "$warm" --quiet || true
  # smtp-source sends a fixed count: size it from the warm-up's rate.
  m=$(perf_json "$PERF_WORK/warm.json" "int(min(60000, max(200, d['accepted_per_s'] * $src_s)))" 2>/dev/null) || m=500
  sut_hook $sys wait_empty 60 || perf_log "$sys: queue not empty after 60 s"
  local before after mid secs srcm=() sent_n=""
  before=$(sut_hook $sys received_count)
  perf_log "$sys: $n sessions, round $r/$PERF_RUNS: smtp-source, $m messages"
  if secs=$(accept_source "$sys" "$n" "$m"); then
    srcm=(accepted_per_s="$(perf_calc "$m / $secs")" sent="$m" source_s="$secs")
    sent_n=$m
    perf_log "$sys: $n sessions: smtp-source $m messages in ${secs}s ($(perf_calc "$m / $secs" | cut -d. -f1)/s)"
  fi
  # The server's count of what smtp-source sent; the relay goes on
  # during the bench part, as it does while any MX accepts.
  mid=$(accept_settle "$sys" "$before" "$sent_n")
  [ ${#srcm[@]} -eq 0 ] || [ -z "$before" ] || srcm+=(server_sent=$((mid - before)))
  perf_log "$sys: $n sessions, round $r/$PERF_RUNS: mxedge-bench (${dur}s)"
  perf_bench "$raw" --target "$(sut $sys addr)" --sessions "$n" --size 4096 \
    --duration "$dur" --timeout 30 || return 0
  sut_hook $sys wait_empty 60 || perf_log "$sys: queue not empty after 60 s"
  after=$(sut_hook $sys received_count)
  # perf_bench_metrics names the bench's rate accepted_per_s; here that
  # name is smtp-source's, the bench's becomes bench_per_s.
  local bm
  bm=$(perf_bench_metrics "$raw" | sed 's/^accepted_per_s=/bench_per_s=/; s/ accepted_per_s=/ bench_per_s=/')
  # shellcheck disable=SC2086
  perf_record accept $sys "$n sessions" "$r" $bm "${srcm[@]}" \
    ${before:+server_accepted=$((after - mid))} raw="${raw#"$PERF_OUT"/}"
  perf_log "$sys: $n sessions: bench $(sed -n 2p "$raw.txt" | sed 's/^ *//')"
}

accept_settle() {  # accept_settle SYS BEFORE SENT -> the server's count once it has SENT more (max 15 s)
  local i c
  for i in $(seq 75); do
    c=$(sut_hook "$1" received_count)
    [ -z "$c" ] || [ -z "$3" ] || [ $((c - $2)) -ge "$3" ] && break
    sleep 0.2
  done
  echo "$c"
}

run_accept() {
  local sc=accept sys n r
  # Read by accept_case (dynamic scope).
  local dur=3 src_s=3 warm=1 sessions=(20 200)
  if [ -n "$PERF_QUICK" ]; then dur=2; src_s=2; sessions=(20); fi
  perf_meta $sc title="accepted messages/s, 4 KB, fsync on" latency=eod_250 \
    columns="bench_per_s:mxedge-bench msg/s,eod_250_p50_ms:EOD→250 p50 ms,eod_250_p99_ms:p99 ms,connect_220_p50_ms:connect→220 p50 ms,errors:errors,server_sent:server counted (smtp-source),sent:smtp-source sent,server_accepted:server counted (bench),accepted:bench accepted,loadavg:load avg" \
    size=4096 duration_s=$dur warmup_s=$warm sessions="${sessions[*]}" ratio_to=postfix \
    metric=accepted_per_s unit="messages/s, smtp-source" \
    load="smtp-source -s N -m M -l 3900 (M sized to about ${src_s}s), then mxedge-bench --sessions N --per-session 1 --size 4096 --duration $dur (closed loop), per round; rounds rotate through the systems" \
    note="Rate: smtp-source, M messages over wall time, one message per connection. Latency: mxedge-bench in the same run. Postfix relays to smtp-sink while it accepts; mxedge only accepts and spools here (250 only after fdatasync): its relay, mxedge-control, is measured in the drain scenario. mxedge-dpdk: the DPDK dataplane on the sut veth through net_af_xdp, one worker lcore (plus the main lcore); the client's checksum and segmentation offloads are off while it runs (generic XDP). mxedge-kernel: see mxedge_kernel_impl in the JSON."
  perf_sink_start
  # Rounds: every system once per round, in turn, so a change in the
  # shared machine's load hits all of them alike instead of whichever
  # happened to run last. Each round starts every system afresh.
  local systems=() down=()
  mapfile -t systems < <(perf_systems mxedge-dpdk mxedge-kernel postfix)
  for r in $(seq "$PERF_RUNS"); do
    for sys in "${systems[@]}"; do
      case " ${down[*]} " in *" $sys "*) continue ;; esac
      perf_sut_up $sc $sys accept || { down+=("$sys"); continue; }
      for n in "${sessions[@]}"; do
        accept_case "$sys" "$n" "$r"
      done
      sut $sys stop
    done
  done
  perf_sink_stop
}
