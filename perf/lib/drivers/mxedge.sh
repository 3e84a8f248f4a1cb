# shellcheck shell=bash
# Systems under test: mxedge itself.
#   mxedge-dpdk    the DPDK dataplane, build/*/dataplane/mxedge, on the sut
#                  veth through net_af_xdp (as dataplane/tests/test_smtp_dp.sh
#                  and scripts/run start it); hugepages when the machine has
#                  some reserved (mxedge picks them up itself), else --no-huge
#   mxedge-kernel  the same SMTP engine on kernel sockets: `mxedge --io=kernel`
#                  when `mxedge --help` lists --io, else `mxedge-kio`
#                  (dataplane/kio), which has its own file-per-message store
#
# Command lines are templates with placeholders {bin} {ip} {addr} (ip:25)
# {port} (the sut's DPDK port, af_xdp:IFACE) {spool} {relay}; each of
# PERF_MXEDGE_DPDK_CMD, PERF_MXEDGE_IO_CMD and PERF_MXEDGE_KIO_CMD overrides
# its default. Which kernel-socket program was measured is recorded in
# each scenario's JSON (meta mxedge_kernel_impl). mxedge has no relay yet,
# so it only accepts and spools; scenarios that need relaying list it as
# not built.

# shellcheck source=../../../tests/lib/bpffs.sh
source "$PERF_TOP/tests/lib/bpffs.sh"

mxedge_find() {  # mxedge_find RELATIVE_PATH (PERF_MXEDGE_BUILD may name a build dir)
  local b
  for b in ${PERF_MXEDGE_BUILD:-} "$PERF_TOP"/build/release "$PERF_TOP"/build/*; do
    [ -x "$b/$1" ] && { echo "$b/$1"; return 0; }
  done
  return 1
}

: "${PERF_MXEDGE_DPDK_CMD:={bin\} --config {config\} --port {port\} --addr {ip\}/24 --smtp-port 25 --spool {spool\} --hostname sut.bench.test --no-control}"
: "${PERF_MXEDGE_IO_CMD:={bin\} --io=kernel --config {config\} --addr {ip\}/24 --smtp-port 25 --spool {spool\} --queues 2 --hostname sut.bench.test --no-control}"
: "${PERF_MXEDGE_KIO_CMD:={bin\} --listen {addr\} --spool {spool\} --threads 2 --hostname sut.bench.test --quiet}"

# The kernel-socket row, chosen in one place: `mxedge --io=kernel` (same
# spool and group commit as the dataplane) once mxedge offers it.
mxedge_kernel_impl() {  # prints "io" or "kio", or nothing when neither is built
  local bin help=""
  # The help text is read whole first: grep -q would close the pipe early
  # and, under pipefail, a SIGPIPE'd mxedge would read as "no --io".
  bin=$(mxedge_find dataplane/mxedge) && help=$("$bin" --help 2>&1) || true
  if grep -q -e '--io\b' <<<"$help"; then
    echo io
  elif mxedge_find dataplane/kio/mxedge-kio >/dev/null; then
    echo kio
  fi
}

mxedge_kernel_status() {
  case $(mxedge_kernel_impl) in
    io|kio) echo ok ;;
    *) echo "not built yet: mxedge --io=kernel or mxedge-kio (neither under build/)" ;;
  esac
}
mxedge_dpdk_status() {
  mxedge_find dataplane/mxedge >/dev/null \
    || { echo "not built yet: mxedge DPDK dataplane (dataplane/mxedge not found under build/)"; return 0; }
  command -v ethtool >/dev/null || { echo "not installed: ethtool (Debian package ethtool)"; return 0; }
  echo ok
}

# What was measured, for the JSON (perf/run records it per scenario).
mxedge_describe() {
  local impl bin
  impl=$(mxedge_kernel_impl)
  case $impl in
    io) echo "mxedge_kernel_impl=mxedge --io=kernel" ;;
    kio) echo "mxedge_kernel_impl=mxedge-kio (dataplane/kio: file per message, fsync per group)" ;;
    *) echo "mxedge_kernel_impl=none" ;;
  esac
  if bin=$(mxedge_find dataplane/mxedge); then
    echo "mxedge_bin=$bin"
    if [ "$(awk '/^HugePages_Free:/{print $2}' /proc/meminfo)" -gt 0 ] 2>/dev/null; then
      echo "mxedge_dpdk_memory=hugepages ($(awk '/^HugePages_Free:/{print $2}' /proc/meminfo) free)"
    else
      echo "mxedge_dpdk_memory=--no-huge (no hugepages reserved)"
    fi
  fi
}

MXEDGE_PID=""
MXEDGE_SPOOL=""
MXEDGE_KIND=""
mxedge_fill() {  # mxedge_fill TEMPLATE BIN -> the command line
  local cmd=$1
  cmd=${cmd//\{addr\}/$PERF_SUT_ADDR:25}
  cmd=${cmd//\{ip\}/$PERF_SUT_ADDR}
  cmd=${cmd//\{port\}/af_xdp:$(netns_ifname sut cli)}
  cmd=${cmd//\{relay\}/$PERF_SINK_ADDR:25}
  cmd=${cmd//\{spool\}/$MXEDGE_SPOOL}
  cmd=${cmd//\{config\}/$MXEDGE_CONFIG}
  cmd=${cmd//\{bin\}/$2}
  echo "$cmd"
}
mxedge_spawn() {  # mxedge_spawn COMMAND...: in the sut namespace, more descriptors
  MXEDGE_SPOOL=$PERF_WORK/mxedge-spool
  rm -rf "$MXEDGE_SPOOL"; mkdir -p "$MXEDGE_SPOOL"
  # Every load generator session comes from one address: the per-client
  # limit (limits.max_sessions_per_client, 50 by default) would refuse them.
  MXEDGE_CONFIG=$PERF_WORK/mxedge.yaml
  printf 'limits:\n  max_sessions_per_client: 0\n' >"$MXEDGE_CONFIG"
  local cmd; cmd=$(mxedge_fill "$1" "$2")
  echo "$cmd" >"$PERF_WORK/mxedge.cmd"
  # Idle sessions need a descriptor each on the kernel-socket path; root
  # may raise the soft limit up to the hard one.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  # MXEDGE_WRAP: a command to run it under (the cpu scenario's callgrind).
  # shellcheck disable=SC2086
  netns_spawn sut ${MXEDGE_WRAP:-} $cmd >"$PERF_WORK/mxedge.log" 2>&1
  MXEDGE_PID=$NETNS_LAST_PID
}

mxedge_kernel_start() {
  local bin
  MXEDGE_KIND=$(mxedge_kernel_impl)
  case $MXEDGE_KIND in
    io) bin=$(mxedge_find dataplane/mxedge); mxedge_spawn "$PERF_MXEDGE_IO_CMD" "$bin" ;;
    kio) bin=$(mxedge_find dataplane/kio/mxedge-kio); mxedge_spawn "$PERF_MXEDGE_KIO_CMD" "$bin" ;;
    *) echo "no kernel-socket mxedge built" >&2; return 1 ;;
  esac
  local i
  for i in $(seq 300); do
    netns_exec sut ss -ltn 2>/dev/null | grep -q "$PERF_SUT_ADDR:25 " && return 0
    kill -0 "$MXEDGE_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "mxedge ($MXEDGE_KIND) did not listen on $PERF_SUT_ADDR:25: $(tail -5 "$PERF_WORK/mxedge.log")" >&2
  return 1
}

# The DPDK dataplane owns the sut veth through XDP: the kernel's address on
# it is never used. Generic XDP hands DPDK the frames exactly as the client
# queued them, so the client's checksum and segmentation offloads are off
# while it runs (dataplane/README.md), and back on for the other systems.
mxedge_dpdk_start() {
  local bin cif
  bin=$(mxedge_find dataplane/mxedge) || return 1
  MXEDGE_KIND=dpdk
  bpffs_ensure || return 1
  cif=$(netns_ifname cli sut)
  netns_exec cli ethtool -K "$cif" tx off tso off gso off >/dev/null 2>&1 || true
  mxedge_spawn "$PERF_MXEDGE_DPDK_CMD" "$bin"
  local i log=$PERF_WORK/mxedge.log
  # PERF_MXEDGE_START_TICKS: 0.1 s ticks to wait (many worker lcores
  # sharing two CPUs start slowly: the idle scenario raises it).
  for i in $(seq "${PERF_MXEDGE_START_TICKS:-300}"); do
    grep -q "running on" "$log" && break
    kill -0 "$MXEDGE_PID" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q "SMTP on $PERF_SUT_ADDR" "$log"; then
    echo "mxedge (DPDK) did not start serving SMTP: $(tail -5 "$log")" >&2
    return 1
  fi
  # ARP warm-up: the first answer proves frames flow both ways.
  for i in $(seq 20); do
    netns_exec cli ping -c1 -W1 "$PERF_SUT_ADDR" >/dev/null 2>&1 && return 0
    kill -0 "$MXEDGE_PID" 2>/dev/null || break
  done
  echo "mxedge (DPDK) does not answer on $PERF_SUT_ADDR: $(tail -5 "$log")" >&2
  return 1
}

mxedge_stop_pid() {
  [ -n "$MXEDGE_PID" ] || return 0
  kill -TERM "$MXEDGE_PID" 2>/dev/null || true
  local i
  # Graceful stop gives sessions inside a transaction up to 5 s.
  for i in $(seq 100); do kill -0 "$MXEDGE_PID" 2>/dev/null || break; sleep 0.1; done
  ip netns pids "$(netns_name sut)" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  wait "$MXEDGE_PID" 2>/dev/null || true
  MXEDGE_PID=""
}

mxedge_kernel_stop() { mxedge_stop_pid; }
mxedge_dpdk_stop() {
  mxedge_stop_pid
  # The PMD detaches its XDP program at close; after a hard kill it would
  # stay and swallow the next system's traffic.
  local sif cif
  sif=$(netns_ifname sut cli); cif=$(netns_ifname cli sut)
  netns_exec sut ip link set dev "$sif" xdp off 2>/dev/null || true
  netns_exec cli ethtool -K "$cif" tx on tso on gso on >/dev/null 2>&1 || true
}
# The dataplane preallocates its sessions: 1024 per worker lcore
# (dataplane/main.c SESSIONS_PER_LCORE), and SMTP runs on one lcore.
mxedge_dpdk_session_limit() { echo 1024; }
mxedge_dpdk_session_limit_why() { echo "1024 preallocated per worker lcore, and SMTP runs on one lcore: dataplane/README.md, Limits"; }
mxedge_kernel_pids() { ip netns pids "$(netns_name sut)"; }
mxedge_dpdk_pids() { ip netns pids "$(netns_name sut)"; }
mxedge_kernel_addr() { echo "$PERF_SUT_ADDR:25"; }
mxedge_dpdk_addr() { echo "$PERF_SUT_ADDR:25"; }

# Messages mxedge has made durable: records in its spool (mxedge-spool
# list prints one line per complete record) or, for mxedge-kio, envelope
# files (renamed into the spool only after the message is on disk).
mxedge_spool_count() {
  local tool
  if [ "$MXEDGE_KIND" = kio ]; then
    find "$MXEDGE_SPOOL" -maxdepth 1 -name '*.env' 2>/dev/null | wc -l
    return 0
  fi
  tool=$(mxedge_find dataplane/spool/mxedge-spool) || { echo 0; return 0; }
  "$tool" list "$MXEDGE_SPOOL" 2>/dev/null | wc -l
}
mxedge_kernel_received_count() { mxedge_spool_count; }
mxedge_dpdk_received_count() { mxedge_spool_count; }
