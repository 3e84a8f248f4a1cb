# shellcheck shell=bash
# scenario: CPU cost per accepted message (all SUT processes, relay included)
# Instruction counts would be the machine-independent measure, but this VM
# exposes no hardware counters (`perf stat -e instructions true` says
# "<not supported>"), so the scenario measures CPU time: user + system time
# of every process in the SUT's namespace, including children that exited
# and were reaped during the run (their time lands in the parent's
# cutime/cstime), over an accept run plus the relay of what it accepted.
run_cpu() {
  local sc=cpu dur=5 n=20 sys r hz
  hz=$(getconf CLK_TCK)
  [ -n "$PERF_QUICK" ] && dur=3
  local counters="no (linux-perf not installed)"
  if command -v perf >/dev/null; then
    counters="no"
    perf stat -e instructions true 2>&1 | grep -qE '[0-9] +instructions' && counters="yes"
  fi
  perf_meta $sc title="CPU time per accepted message (all processes)" metric=cpu_ms_per_msg \
    unit="CPU ms/message" hw_counters="$counters" \
    columns="user_ms_per_msg:user ms,sys_ms_per_msg:system ms,accepted:messages,sys_share:kernel share,loadavg:load avg,instr_per_msg:user-space instructions/msg (callgrind)" ratio_to=postfix \
    load="mxedge-bench --sessions $n --size 4096 --duration $dur, then until relayed" \
    note="Hardware instruction counters available: $counters (perf stat -e instructions). CPU time is read from /proc for every process in the SUT namespace (clock tick $((1000 / hz)) ms). mxedge-dpdk polls: its worker lcore naps only after 20 us without a frame (--idle-sleep), so under load its CPU time includes the empty polls between frames: an upper bound that falls as the offered load rises, not the work a message costs."
  perf_sink_start
  for sys in $(perf_systems mxedge-dpdk mxedge-kernel postfix); do
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
  run_cpu_callgrind
  perf_sink_stop
}

# Instructions per accepted message in user space, counted by callgrind
# (no hardware counters here); N is small because everything runs ~50
# times slower under valgrind.
#  - mxedge (kernel sockets): after a warm-up its counters are zeroed
#    (callgrind_control -z), N messages are accepted, the counters dumped.
#  - Postfix: its daemons drop privileges and become non-dumpable, so
#    callgrind_control cannot reach them while they sleep (vgdb then needs
#    ptrace, which this container does not allow). Instead every daemon
#    runs under callgrind from the start: a private daemon_directory holds
#    one wrapper script per daemon (exec valgrind ... /usr/lib/postfix/sbin/
#    NAME), and each process writes its counts when it exits. Only what
#    runs inside event_loop() is counted (--collect-atstart=no
#    --toggle-collect=event_loop): every Postfix daemon initialises, then
#    serves requests from event_loop(), so process start-up is left out
#    while all request work is in (including lazy set-up on a process's
#    first request, which mxedge's warm-up excludes: a slight overcount).
#    The sum over all processes (master, smtpd, cleanup, qmgr,
#    trivial-rewrite, smtp, ...) is divided by the messages accepted and
#    relayed to smtp-sink.
# Kernel work (system calls, TCP, the file system) is not counted: it is
# what the /proc rows add.
cpu_cg_sum() {  # cpu_cg_sum DIR GLOB [NEWER_THAN] -> summed Ir of the callgrind files
  local total=0 f v
  for f in "$1"/$2; do
    [ -e "$f" ] || continue
    [ -z "${3:-}" ] || [ "$f" -nt "$3" ] || continue
    v=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$f" | head -1)
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}
cpu_cg_pids() {  # the processes of the sut namespace that run under callgrind
  local p
  for p in $(ip netns pids "$(netns_name sut)" 2>/dev/null); do
    case $(readlink "/proc/$p/exe" 2>/dev/null) in *callgrind*) echo "$p" ;; esac
  done
}
cpu_cg_annotate() {  # cpu_cg_annotate SYS DIR [NEWER_THAN]: flat profile of one file per program
  local f prog seen=""
  for f in $(find "$2" -type f ${3:+-newer "$3"} | sort); do
    prog=$(basename "$f"); prog=${prog%%.*}
    case " $seen " in *" $prog "*) continue ;; esac
    seen="$seen $prog"
    { echo "## $1: $prog ($(basename "$f")), callgrind_annotate, inclusive cost"
      callgrind_annotate --inclusive=yes "$f" 2>/dev/null | sed -n '/PROGRAM TOTALS/,$p' | head -40 || true
    } >>"$PERF_OUT/cpu-callgrind-$1.txt"
  done
}
cpu_cg_send() {  # cpu_cg_send SYS COUNT RAW -> messages accepted
  perf_bench "$3" --target "$(sut "$1" addr)" --sessions 2 --count "$2" --size 4096 \
    --duration 300 --timeout 120 --quiet || { echo 0; return 0; }
  sut_hook "$1" wait_empty 120 || perf_log "$1: queue not empty after 120 s"
  perf_json "$3" 'd["messages_accepted"]'
}
cpu_cg_mxedge() {
  local sys=mxedge-kernel n=$1 case=$2 dir=$PERF_WORK/cg-mxedge marker=$PERF_WORK/cg-mxedge.zero
  rm -rf "$dir"; mkdir -p "$dir"
  MXEDGE_WRAP="valgrind -q --tool=callgrind --callgrind-out-file=$dir/mxedge.%p" \
    perf_sut_up cpu $sys accept || return 0
  perf_log "$sys: under callgrind: warm-up, then $n messages"
  cpu_cg_send $sys 6 "$PERF_WORK/warm.json" >/dev/null
  # shellcheck disable=SC2046
  timeout 60 callgrind_control -z $(cpu_cg_pids) >/dev/null 2>&1 || perf_log "$sys: callgrind_control -z failed"
  touch "$marker"
  local raw=$PERF_OUT/raw/cpu-$sys-callgrind.json acc a
  acc=$(cpu_cg_send $sys "$n" "$raw")
  # shellcheck disable=SC2046
  timeout 60 callgrind_control -d $(cpu_cg_pids) >/dev/null 2>&1 || perf_log "$sys: callgrind_control -d failed"
  sleep 1
  a=$(cpu_cg_sum "$dir" 'mxedge.*' "$marker")
  if [ "$acc" -gt 0 ] && [ "$a" -gt 0 ]; then
    perf_record cpu $sys "$case" 1 instr_per_msg="$(perf_calc "$a / $acc")" \
      accepted="$acc" raw="${raw#"$PERF_OUT"/}"
    perf_log "$sys: callgrind: $(( a / acc )) instructions per message"
  else
    perf_record_skip cpu $sys "$case" "failed: no callgrind counts ($acc messages accepted)"
  fi
  cpu_cg_annotate $sys "$dir" "$marker"
  sut $sys stop
}
# Wrapper daemon_directory for Postfix: every ELF daemon of
# /usr/lib/postfix/sbin runs under callgrind (one output file per
# process, written at exit); scripts (postfix-script, post-install) are
# linked as they are.
cpu_cg_postfix_dir() {  # cpu_cg_postfix_dir WRAPDIR OUTDIR
  local f name
  rm -rf "$1" "$2"; mkdir -p "$1" "$2"
  chmod 755 "$2"
  # callgrind creates its output file when the daemon starts (as root)
  # and writes it at exit, after the daemon dropped to the postfix user:
  # the wrapper (same pid as the daemon, since it execs) creates the file
  # first and lets anyone write it. No sticky bit on the directory, or
  # fs.protected_regular would keep root from opening it.
  for f in /usr/lib/postfix/sbin/*; do
    name=$(basename "$f")
    if [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then
      printf '#!/bin/sh\nf=%s/%s.$$\n: >"$f" && chmod 666 "$f"\nexec valgrind -q --tool=callgrind --collect-atstart=no --toggle-collect=event_loop --callgrind-out-file="$f" %s "$@"\n' \
        "$2" "$name" "$f" >"$1/$name"
      chmod 755 "$1/$name"
    else
      ln -s "$f" "$1/$name"
    fi
  done
}
cpu_cg_term_all() {  # cpu_cg_term_all SECONDS: SIGTERM to the sut's processes, wait
  local i
  ip netns pids "$(netns_name sut)" 2>/dev/null | xargs -r kill -TERM 2>/dev/null || true
  for i in $(seq $(( $1 * 10 ))); do
    [ -z "$(ip netns pids "$(netns_name sut)" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  perf_log "still running after SIGTERM: $(ip netns pids "$(netns_name sut)" | xargs -r ps -o comm= -p | tr '\n' ' ')"
}
CG_RES=""
cpu_cg_postfix_run() {  # cpu_cg_postfix_run COUNT RAW; CG_RES="messages instructions processes"
  local out=$PERF_WORK/cg-postfix acc total procs
  CG_RES="0 0 0"
  cpu_cg_postfix_dir "$PERF_WORK/pf-daemons" "$out"
  POSTFIX_DAEMON_DIR=$PERF_WORK/pf-daemons perf_sut_up cpu postfix accept || return 0
  acc=$(cpu_cg_send postfix "$1" "$2")
  # Each daemon writes its totals as it exits: SIGTERM to every process
  # (valgrind dumps on it; `postfix stop` leaves idle daemons to notice
  # the master is gone, and they were killed before they wrote).
  cpu_cg_term_all 60
  sut postfix stop
  total=$(cpu_cg_sum "$out" '*')
  procs=$(find "$out" -type f | wc -l)
  CG_RES="$acc $total $procs"
}
cpu_cg_postfix() {
  local n=$1 case=$2 m i p
  perf_log "postfix: every daemon under callgrind (request work only): $n messages"
  cpu_cg_postfix_run "$n" "$PERF_OUT/raw/cpu-postfix-callgrind.json"
  read -r m i p <<<"$CG_RES"
  perf_log "postfix: callgrind: $m messages: $i instructions in $p processes"
  if [ "$m" -gt 0 ] && [ "$i" -gt 0 ]; then
    perf_record cpu postfix "$case" 1 instr_per_msg="$(perf_calc "$i / $m")" \
      accepted="$m" cg_processes="$p" raw="raw/cpu-postfix-callgrind.json"
    perf_log "postfix: callgrind: $(( i / m )) instructions per message"
  else
    perf_record_skip cpu postfix "$case" \
      "failed: no callgrind counts ($m messages, $i instructions in $p processes)"
  fi
  rm -f "$PERF_OUT/cpu-callgrind-postfix.txt"
  cpu_cg_annotate postfix "$PERF_WORK/cg-postfix"
}
run_cpu_callgrind() {
  local n=50 sys
  [ -n "$PERF_QUICK" ] && n=10
  if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
    perf_unavailable cpu "callgrind" "not installed: valgrind (Debian package valgrind)"
    return 0
  fi
  perf_meta cpu cg_messages=$n \
    cg_note="Instructions (callgrind, user space only), 4 KB messages over 2 sessions. mxedge-kernel: after a warm-up, counters zeroed before and dumped after $n messages. Postfix: every daemon under callgrind from its start (wrapper daemon_directory), counting only inside event_loop() (request work, not process start-up), summed over all processes at exit, for $n messages accepted and relayed."
  for sys in $(perf_systems mxedge-dpdk mxedge-kernel postfix); do
    local case="callgrind, $n messages"
    rm -f "$PERF_OUT/cpu-callgrind-$sys.txt"
    [ "$(sut $sys status)" = ok ] || continue
    case $sys in
      mxedge-dpdk) perf_record_skip cpu $sys "$case" \
        "not measured: the DPDK worker busy-polls, so callgrind would count idle polls with the work, at ~50x slowdown of a TSC-timed loop" ;;
      mxedge-kernel) cpu_cg_mxedge "$n" "$case" ;;
      postfix) cpu_cg_postfix "$n" "$case" ;;
    esac
  done
}
