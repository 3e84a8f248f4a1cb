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
  local total=0 p v
  for p in $(ip netns pids "$(netns_name "$1")" 2>/dev/null); do
    v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || true
    total=$(( total + ${v:-0} ))
  done
  echo $total
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

run_idle() {
  local sc=idle counts=(10000 100000) sys n
  [ -n "$PERF_QUICK" ] && counts=(300)
  perf_meta $sc title="memory per idle session" metric=user_kb_per_session unit="KB/session" \
    counts="${counts[*]}" \
    columns="kernel_kb_per_session:kernel KB/session (server side),pss_mb:SUT PSS MB while held,held:held,processes:SUT processes,ready_s:s to open all" \
    load="mxedge-bench --hold --sessions N --hold-seconds 5 (EHLO, then idle)" \
    note="User memory: the SUT's PSS summed over all its processes, held minus before. Kernel memory: per server-side socket, the slab objects of a TCP socket (/proc/slabinfo: TCP, sock_inode_cache, filp, dentry) plus its buffers as reported by ss -tm. mxedge-dpdk preallocates its sessions (TCP, SMTP and spool state for its limit) and mbufs at start; their pages are faulted in on first use, so the user column is what held sessions actually touch and the PSS column is its whole footprint. Its TCP state lives in that memory, not in kernel sockets (kernel column 0)."
  # Postfix forks one smtpd per session, and its master starts the next one
  # only when the last is up (measured here: about 8 per second on the
  # loaded CI-class machine), so 10 k sessions would take ~20 minutes. Its
  # cost is one process per session, linear in N: it is measured at a
  # count that opens in about a minute.
  local pf_n=500
  [ -n "$PERF_QUICK" ] && pf_n=100
  for sys in $(perf_systems mxedge-dpdk mxedge-kernel postfix); do
    local st; st=$(sut $sys status)
    if [ "$st" != ok ]; then
      perf_unavailable $sc $sys "$st"
      continue
    fi
    local list=("${counts[@]}") limit
    # A server with a fixed session limit is measured at the limit and the
    # larger counts say why they were not.
    limit=$(sut_hook $sys session_limit)
    if [ -n "$limit" ]; then
      list=()
      local at=$(( limit > 1024 ? limit - 24 : limit * 1000 / 1024 ))
      [ -n "$PERF_QUICK" ] && [ "$at" -gt "${counts[0]}" ] && at=${counts[0]}
      for n in "${counts[@]}"; do
        if [ "$n" -gt "$limit" ]; then
          perf_record_skip $sc $sys "$n sessions" "skipped: $sys serves at most $limit sessions ($(sut_hook $sys session_limit_why)); see the $at row"
        else
          list+=("$n")
        fi
      done
      [ ${#list[@]} -gt 0 ] || list=("$at")
    fi
    if [ "$sys" = postfix ]; then
      list=("$pf_n")
      for n in "${counts[@]}"; do
        [ "$n" -gt "$pf_n" ] || continue
        local why; why=$(idle_fits "$n" 1400)
        perf_record_skip $sc $sys "$n sessions" "${why:-skipped: one smtpd per session, started serially: too slow to open within the time bound}; linear in N, see the $pf_n row"
      done
    fi
    for n in "${list[@]}"; do
      # Both ends need one descriptor per session; raising the hard limit
      # needs CAP_SYS_RESOURCE, which a container may not grant.
      if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt $(( n + 100 )) ]; then
        perf_record_skip $sc $sys "$n sessions" "skipped: open-file hard limit here is $(ulimit -Hn) (RLIMIT_NOFILE), $n sessions need more"
        continue
      fi
      PERF_IDLE_SESSIONS=$n perf_sut_up $sc $sys idle || break
      sleep 1
      local pss0 slab0 sock0 ready=$PERF_WORK/ready raw=$PERF_OUT/raw/$sc-$sys-$n.json
      pss0=$(perf_ns_pss_kb sut)
      rm -f "$ready"
      perf_log "$sys: opening $n idle sessions"
      local srcs=() s
      for s in "${PERF_CLI_SOURCES[@]}"; do srcs+=(--source "$s"); done
      netns_exec cli "$PERF_BENCH" --hold --sessions "$n" --hold-seconds 8 --duration 240 \
        --timeout 60 --ready-file "$ready" --progress "${srcs[@]}" \
        --target "$(sut $sys addr)" --json "$raw" >"$raw.txt" 2> >(sed 's/^/        /' >&2) &
      local bpid=$! i
      for i in $(seq 2400); do
        [ -e "$ready" ] && break
        kill -0 $bpid 2>/dev/null || break
        sleep 0.1
      done
      local pss1 buf1 procs socks kkb
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
      fi
      wait $bpid || true
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
          ready_s="$(perf_json "$raw" 'd["hold_ready_s"]')" raw="${raw#"$PERF_OUT"/}"
        perf_log "$sys: $n sessions: $(( (pss1 - pss0) / n )) KB user per session, $procs processes"
      fi
      sut $sys stop
      unset pss1
    done
  done
}
