# shellcheck shell=bash
# scenario: memory per idle session at 10 k and 100 k sessions
# mxedge-bench --hold opens N sessions (EHLO done) and keeps them idle; the
# SUT's memory is read before and while they are held. User memory is the
# sum of PSS (smaps_rollup) over every process in the SUT's namespace, so a
# process-per-session server is charged for all its processes. Kernel memory
# is counted for the server's side of each connection only: the slab
# objects a TCP socket needs (TCP, sock_inode_cache, filp, dentry sizes
# from /proc/slabinfo) plus the buffer memory `ss -tm` reports for the
# SUT's established sockets. (Machine-wide Slab deltas were tried first:
# on a shared machine they drown in other activity.)
perf_ns_pss_kb() {  # sum of Pss over the processes of a namespace (KB)
  # One awk over every process's smaps_rollup: a process per file took
  # minutes for Postfix's 500 smtpd on the loaded machine (the hold could
  # end before the reading did). A process that exits meanwhile, or whose
  # file cannot be read, counts 0 (as before).
  local files=() p
  for p in $(ip netns pids "$(netns_name "$1")" 2>/dev/null); do
    files+=("/proc/$p/smaps_rollup")
  done
  [ ${#files[@]} -gt 0 ] || { echo 0; return 0; }
  # getline, not awk's file arguments: mawk stops at an unreadable file.
  awk 'BEGIN { s = 0
    for (i = 1; i < ARGC; i++) {
      while ((getline l < ARGV[i]) > 0)
        if (l ~ /^Pss:/) { split(l, a, " "); s += a[2] }
      close(ARGV[i])
    }
    print s }' "${files[@]}"
}
perf_sock_obj_bytes() {  # slab object bytes behind one TCP socket
  awk '$1=="TCP"||$1=="sock_inode_cache"||$1=="filp"||$1=="dentry"{b+=$4} END{print b+0}' /proc/slabinfo
}
perf_sock_buf_bytes() {  # buffer bytes of a namespace's established TCP sockets
  netns_exec "$1" ss -tmnH state established 2>/dev/null | \
    sed -n 's/.*skmem:(\([^)]*\)).*/\1/p' | tr ',' ' ' | \
    awk '{for(i=1;i<=NF;i++){k=substr($i,1,1); if($i ~ /^(r|t|f|w|o)[0-9]/) b+=substr($i,2)}} END{print b+0}'
}

# Whether N idle sessions fit the machine for a process-per-session server.
idle_fits() {  # idle_fits N KB_PER_SESSION -> prints reason when not
  local n=$1 per=$2 avail pidmax procs
  avail=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
  pidmax=$(cat /proc/sys/kernel/pid_max)
  procs=$(find /proc -maxdepth 1 -name "[0-9]*" 2>/dev/null | wc -l)
  if [ $(( n * per )) -gt $(( avail / 2 )) ]; then
    echo "skipped: needs about $(( n * per / 1048576 + 1 )) GB for $n sessions, half of MemAvailable is $(( avail / 2097152 )) GB"
  elif [ $(( procs + n + 2000 )) -gt "$pidmax" ]; then
    echo "skipped: needs $n processes, kernel.pid_max is $pidmax with $procs in use"
  fi
}

# The DPDK dataplane preallocates its sessions per worker lcore
# (limits.sessions_per_lcore, --sessions-per-lcore): each count runs on
# one worker lcore sized for it, so no hash imbalance needs headroom and
# no extra busy lcores share the 2 CPUs. The pool gets the count plus 5 %
# and 64 (the fresh message, sessions still closing from the ramp-up).
idle_dpdk_sessions() { echo $(( $1 + $1 / 20 + 64 )); }
# EAL memory without hugepages for S sessions: 8 mbufs per session (the
# pool is sized from the sessions: dataplane/main.c), each taking a whole
# 4 KB page without hugepages (a pool object never spans pages), plus the
# spool ring and the port's rings. Measured: 105,064 sessions start in
# 3600 MB and not in 3000.
idle_dpdk_mem_mb() { echo $(( 384 + $1 * 34 / 1000 )); }

# A fresh message while the sessions are held: what a user notices when
# an edge full of idle connections stops taking mail. One session, one
# 4 KB message, from the client's main address.
idle_fresh_message() {  # idle_fresh_message SYSTEM RAW -> KEY=VALUE words
  local out=$2
  netns_exec cli "$PERF_BENCH" --closed --sessions 1 --per-session 1 --count 1 \
    --duration 30 --grace 5 --timeout 20 --quiet --target "$(sut "$1" addr)" \
    --json "$out" >"$out.txt" 2>&1 || true
  if [ -s "$out" ]; then
    echo "fresh_accepted=$(perf_json "$out" 'd["messages_accepted"]')"
    echo "fresh_ms=$(perf_json "$out" '(d["latency_us"]["connect_220"]["max"] + d["latency_us"]["eod_250"]["max"]) / 1000.0')"
  else
    echo "fresh_accepted=0"
  fi
}

run_idle() {
  local sc=idle counts=(10000 100000) sys n
  [ -n "$PERF_QUICK" ] && counts=(300)
  # PERF_IDLE_COUNTS="10000 20000": other counts (a check of one case).
  [ -n "${PERF_IDLE_COUNTS:-}" ] && read -r -a counts <<<"$PERF_IDLE_COUNTS"
  perf_meta $sc title="memory per idle session" metric=user_kb_per_session unit="KB/session" \
    counts="${counts[*]}" \
    columns="kernel_kb_per_session:kernel KB/session (server side),pss_mb:SUT PSS MB while held,held:held,processes:SUT processes,ready_s:s to open all,fresh_accepted:fresh message accepted while held,fresh_ms:its connect→220 + EOD→250 ms,workers:worker lcores,client_procs:client processes" \
    load="mxedge-bench --hold --sessions N (EHLO, then idle; spread over processes and 8 source addresses); then one fresh 4 KB message" \
    note="User memory: the SUT's PSS summed over all its processes, held minus before. Kernel memory: per server-side socket, the slab objects of a TCP socket (/proc/slabinfo: TCP, sock_inode_cache, filp, dentry) plus its buffers as reported by ss -tm. mxedge-dpdk preallocates its sessions (TCP, SMTP and spool state, --sessions-per-lcore: the count plus 5 %) and their mbufs (8 per session) at start; the mbufs are written then, the session state is faulted in on first use, so the user column is what held sessions actually touch and the PSS column is its whole footprint (DPDK memory without hugepages included). Its TCP state lives in that memory, not in kernel sockets (kernel column 0). It runs them on one worker lcore. While the sessions are held, one more client sends a 4 KB message: fresh message accepted 1 means it got its 250. Postfix runs one smtpd per session; its process limit is raised to the count so every held session has its smtpd, and it is measured at the count it actually holds (held column)."
  # Postfix forks one smtpd per session, and its master starts the next one
  # only when the last is up (measured here: about 8 per second on the
  # loaded CI-class machine), so 10 k sessions would take ~20 minutes. Its
  # cost is one process per session, linear in N: it is measured at a
  # count that opens in about a minute (500 took 100-225 s, a fifth of
  # the time bound of perf/run all, for the same per-session figure).
  local pf_n=250
  [ -n "$PERF_QUICK" ] && pf_n=100
  local hardn; hardn=$(ulimit -Hn)
  # The DPDK command line gets the worker count per case (mxedge_spawn
  # reads this variable; the local keeps the driver's default intact).
  local dpdk_base=$PERF_MXEDGE_DPDK_CMD PERF_MXEDGE_DPDK_CMD=$PERF_MXEDGE_DPDK_CMD
  for sys in $(perf_systems mxedge-dpdk mxedge-kernel postfix); do
    local st; st=$(sut $sys status)
    if [ "$st" != ok ]; then
      perf_unavailable $sc $sys "$st"
      continue
    fi
    local list=() per maxw cap at
    case $sys in
      mxedge-dpdk)
        # Every count: the pool is a start-up setting, not a limit.
        list=("${counts[@]}")
        ;;
      mxedge-kernel)
        # One process holds every session, one descriptor each; raising
        # the hard limit needs CAP_SYS_RESOURCE, which a container may not
        # grant. It is measured at the largest count under the limit.
        for n in "${counts[@]}"; do
          if [ "$hardn" != unlimited ] && [ "$hardn" -lt $(( n + 200 )) ]; then
            at=$(( (hardn - 200) / 1000 * 1000 ))
            perf_record_skip $sc $sys "$n sessions" "skipped: needs $n descriptors in its one process, the open-file hard limit here is $hardn (RLIMIT_NOFILE; root cannot raise it without CAP_SYS_RESOURCE); see the $at row"
            [ "$at" -gt 0 ] && list+=("$at")
          else
            list+=("$n")
          fi
        done
        ;;
      postfix)
        list=("$pf_n")
        for n in "${counts[@]}"; do
          [ "$n" -gt "$pf_n" ] || continue
          local why; why=$(idle_fits "$n" 1400)
          perf_record_skip $sc $sys "$n sessions" "${why:-skipped: one smtpd per session, started serially: too slow to open within the time bound}; linear in N, see the $pf_n row"
        done
        ;;
    esac
    # A count listed twice (two skipped counts map to one row) runs once.
    mapfile -t list < <(printf '%s\n' "${list[@]}" | awk '!seen[$0]++')
    for n in "${list[@]}"; do
      local workers="" PERF_MXEDGE_START_TICKS=300
      PERF_MXEDGE_DPDK_CMD=$dpdk_base
      local PERF_MXEDGE_LIMITS=""
      if [ "$sys" = mxedge-dpdk ]; then
        local spl; spl=$(idle_dpdk_sessions "$n")
        workers=1
        PERF_MXEDGE_DPDK_CMD="$dpdk_base --sessions-per-lcore $spl --mem $(idle_dpdk_mem_mb "$spl")"
        # limits.max_sessions (100000 by default) is spread over the
        # workers before sessions_per_lcore caps each share.
        PERF_MXEDGE_LIMITS="max_sessions: $spl"
        # Its memory is faulted in at start (every mbuf is written):
        # 30 s to well over a minute for 100 k sessions on the loaded
        # 2-CPU machine, on top of the driver's 30 s.
        PERF_MXEDGE_START_TICKS=$(( 300 + spl / 100 ))
      fi
      PERF_IDLE_SESSIONS=$n perf_sut_up $sc $sys idle || break
      sleep 1
      local pss0 ready=$PERF_WORK/ready raw=$PERF_OUT/raw/$sc-$sys-$n.json
      pss0=$(perf_ns_pss_kb sut)
      rm -f "$ready"
      perf_log "$sys: opening $n idle sessions${workers:+ ($workers worker lcores)}"
      local srcs=() s
      for s in "${PERF_CLI_SOURCES[@]}"; do srcs+=(--source "$s"); done
      # Held up to 120 s after all are up: long enough for the readings and
      # the fresh message on a loaded machine; it is stopped (SIGTERM,
      # report written) once they are done. Opening is capped at 120 s plus
      # 1 s per 100 sessions (the bench's --duration ends a hold too).
      local dur=$(( 120 + n / 100 + 120 ))
      # netns_spawn: its pid is mxedge-bench itself (nsenter execs it), so
      # the SIGTERM below reaches it (and through it its child processes).
      netns_spawn cli "$PERF_BENCH" --hold --sessions "$n" --hold-seconds 120 --duration "$dur" \
        --timeout 60 --ready-file "$ready" --progress "${srcs[@]}" \
        --target "$(sut $sys addr)" --json "$raw" >"$raw.txt" 2> >(sed 's/^/        /' >&2)
      local bpid=$NETNS_LAST_PID i
      for i in $(seq $(( dur * 10 ))); do
        [ -e "$ready" ] && break
        kill -0 $bpid 2>/dev/null || break
        sleep 0.1
      done
      local pss1 buf1 procs socks kkb fresh=()
      if [ -e "$ready" ]; then
        sleep 2   # let the last processes settle
        pss1=$(perf_ns_pss_kb sut); buf1=$(perf_sock_buf_bytes sut)
        # An ss that fails (it did once at load average 90) must not read
        # as "no kernel sockets".
        local ssout
        if ssout=$(netns_exec sut ss -tnH state established 2>/dev/null); then
          socks=$(grep -c . <<<"$ssout" || true)
        else
          socks=""
        fi
        procs=$(ip netns pids "$(netns_name sut)" | wc -l)
        perf_log "$sys: $n held; one fresh message"
        mapfile -t fresh < <(idle_fresh_message $sys "$PERF_OUT/raw/$sc-$sys-$n-fresh.json")
        # Only a message sent while every session was still held counts.
        if ! kill -0 $bpid 2>/dev/null; then
          perf_log "$sys: the hold ended before the fresh message did: not counted"
          fresh=()
        fi
        perf_log "$sys: fresh message: ${fresh[*]:-not measured}"
        kill -TERM $bpid 2>/dev/null || true
      fi
      wait $bpid || true
      if [ -n "${pss1:-}" ] && [ ! -s "$raw" ]; then
        perf_log "$sys: mxedge-bench wrote no report"
        unset pss1
      fi
      if [ -z "${pss1:-}" ]; then
        perf_record_skip $sc $sys "$n sessions" "failed: not all $n sessions could be opened ($(sed -n 2p "$raw.txt" 2>/dev/null))"
      else
        # A userspace TCP stack holds its sessions without kernel sockets.
        kkb=0
        [ "$socks" = 0 ] || kkb=$(perf_calc "($(perf_sock_obj_bytes) + $buf1 / $n) / 1024")
        [ -n "$socks" ] || { kkb=""; perf_log "$sys: ss failed: kernel memory not read"; }
        perf_record $sc $sys "$n sessions" 1 \
          user_kb_per_session="$(perf_calc "($pss1 - $pss0) / $n")" \
          ${kkb:+kernel_kb_per_session="$kkb"} \
          held="$(perf_json "$raw" 'd["held_max"]')" processes="$procs" pss_mb="$(perf_calc "$pss1 / 1024")" \
          ready_s="$(perf_json "$raw" 'd["hold_ready_s"]')" "${fresh[@]}" \
          ${workers:+workers="$workers"} client_procs="$(perf_json "$raw" 'd.get("procs", 1)')" \
          raw="${raw#"$PERF_OUT"/}"
        perf_log "$sys: $n sessions: $(( (pss1 - pss0) / n )) KB user per session, $procs processes"
      fi
      sut $sys stop
      unset pss1
    done
  done
}
