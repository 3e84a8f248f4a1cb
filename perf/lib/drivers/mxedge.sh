# shellcheck shell=bash
# Systems under test: mxedge itself.
#   mxedge-dpdk    the DPDK dataplane, build/*/dataplane/mxedge, on the sut
#                  veth through net_af_xdp (as dataplane/tests/test_smtp_dp.sh
#                  and scripts/run start it); hugepages when the machine has
#                  some reserved (mxedge picks them up itself), else --no-huge
#   mxedge-kernel  the same SMTP engine on kernel sockets: `mxedge --io=kernel`
#                  (same spool and group commit as the dataplane)
#   mxedge-relay   mxedge-control (control/) draining a spool that
#                  `mxedge --io=kernel` filled: the drain scenario only
#
# Command lines are templates with placeholders {bin} {ip} {addr} (ip:25)
# {port} (the sut's DPDK port, af_xdp:IFACE) {spool} {config}; each of
# PERF_MXEDGE_DPDK_CMD and PERF_MXEDGE_IO_CMD overrides its default. What
# was measured is recorded in each scenario's JSON (meta mxedge_kernel_impl,
# mxedge_bin).

# shellcheck source=../../../tests/lib/bpffs.sh
source "$PERF_TOP/tests/lib/bpffs.sh"

mxedge_find() {  # mxedge_find RELATIVE_PATH [-f] (PERF_MXEDGE_BUILD may name a build dir)
  local b
  # -f: a data file (an XDP object), not a program
  for b in ${PERF_MXEDGE_BUILD:-} "$PERF_TOP"/build/release "$PERF_TOP"/build/*; do
    test "${2:--x}" "$b/$1" && { echo "$b/$1"; return 0; }
  done
  return 1
}

: "${PERF_MXEDGE_DPDK_CMD:={bin\} --config {config\} --port {port\} --addr {ip\}/24 --smtp-port 25 --spool {spool\} --hostname sut.bench.test --no-control}"
: "${PERF_MXEDGE_IO_CMD:={bin\} --io=kernel --config {config\} --addr {ip\}/24 --smtp-port 25 --spool {spool\} --queues 2 --hostname sut.bench.test --no-control}"

# The kernel-socket row: `mxedge --io=kernel`, when this mxedge offers it.
# (The old stand-alone mxedge-kio, dataplane/kio/legacy, is not measured
# any more: its file-per-message store is not what mxedge ships.)
mxedge_kernel_impl() {  # prints "io", or nothing when mxedge has no --io
  local bin help=""
  # The help text is read whole first: grep -q would close the pipe early
  # and, under pipefail, a SIGPIPE'd mxedge would read as "no --io".
  bin=$(mxedge_find dataplane/mxedge) && help=$("$bin" --help 2>&1) || true
  if grep -q -e '--io\b' <<<"$help"; then
    echo io
  fi
}

mxedge_kernel_status() {
  case $(mxedge_kernel_impl) in
    io) echo ok ;;
    *) echo "not built yet: mxedge --io=kernel (no dataplane/mxedge under build/ that lists --io)" ;;
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
  # PERF_MXEDGE_LIMITS: more "key: value" lines under limits: (the idle
  # scenario's limits.max_sessions for the DPDK pool).
  # PERF_MXEDGE_YAML: more top-level YAML (the shield system's allowlist).
  { printf 'limits:\n  max_sessions_per_client: 0\n'
    [ -z "${PERF_MXEDGE_LIMITS:-}" ] || printf '  %s\n' "$PERF_MXEDGE_LIMITS"
    [ -z "${PERF_MXEDGE_YAML:-}" ] || printf '%s\n' "$PERF_MXEDGE_YAML"
  } >"$MXEDGE_CONFIG"
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
    # libbpf/libxdp's notes (dispatcher fallback) are not the reason.
    echo "mxedge (DPDK) did not start serving SMTP within $(( ${PERF_MXEDGE_START_TICKS:-300} / 10 )) s: $(grep -v '^lib\(bpf\|xdp\)' "$log" | tail -3)" >&2
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

# mxedge-dpdk-shield: the same dataplane with the XDP shield in front of
# it (--xdp-prog xdp/shield.bpf.o: the af_xdp PMD attaches the shield,
# which redirects SMTP to the dataplane's socket after its checks; as in
# dataplane/tests/test_shield_dp.sh). The shield runs its defaults:
# per-source SYN rate 20/s (burst 40), flood mode past 50 k SYN/s in
# hand-off (the dataplane answers with its own SYN cookies: XDP-minted
# cookies use the kernel's secret, which the userspace stack cannot
# validate, xdp/README.md). The load generator's addresses are on the
# allowlist (YAML allowlist:, loaded into the shield at start; the flood
# spoofs random 198.18.0.0/15 sources, one of which may be it), as an
# operator lists a known relay: one source opening hundreds of sessions a
# second is what the per-source rate limit exists to stop.
mxedge_dpdk_shield_status() {
  mxedge_find xdp/shield.bpf.o -f >/dev/null \
    || { echo "not built yet: xdp/shield.bpf.o not found under build/"; return 0; }
  mxedge_dpdk_status
}
mxedge_dpdk_shield_start() {
  local obj; obj=$(mxedge_find xdp/shield.bpf.o -f) || return 1
  PERF_MXEDGE_DPDK_CMD="$PERF_MXEDGE_DPDK_CMD --xdp-prog $obj" \
    PERF_MXEDGE_YAML="allowlist: [$PERF_CLI_ADDR]" mxedge_dpdk_start "$@" || return 1
  grep -q "XDP shield active" "$PERF_WORK/mxedge.log" \
    || { echo "mxedge (DPDK) started without the shield: $(tail -5 "$PERF_WORK/mxedge.log")" >&2; return 1; }
}
mxedge_dpdk_shield_stop() { mxedge_dpdk_stop; }
mxedge_dpdk_shield_pids() { ip netns pids "$(netns_name sut)"; }
mxedge_dpdk_shield_addr() { echo "$PERF_SUT_ADDR:25"; }
mxedge_dpdk_shield_received_count() { mxedge_spool_count; }
# The shield's verdict counters (mxedge-shield stats on the maps the
# dataplane pinned in the sut's bpffs), for the scenario's raw files.
mxedge_dpdk_shield_stats() {
  local tool; tool=$(mxedge_find xdp/mxedge-shield) || return 0
  netns_exec sut "$tool" stats 2>&1 || true
}
mxedge_kernel_pids() { ip netns pids "$(netns_name sut)"; }
mxedge_dpdk_pids() { ip netns pids "$(netns_name sut)"; }
mxedge_kernel_addr() { echo "$PERF_SUT_ADDR:25"; }
mxedge_dpdk_addr() { echo "$PERF_SUT_ADDR:25"; }

# Messages mxedge has made durable: records in its spool (mxedge-spool
# list prints one line per complete record).
mxedge_spool_count() {
  local tool
  tool=$(mxedge_find dataplane/spool/mxedge-spool) || { echo 0; return 0; }
  "$tool" list "$MXEDGE_SPOOL" 2>/dev/null | wc -l
}
mxedge_kernel_received_count() { mxedge_spool_count; }
mxedge_dpdk_received_count() { mxedge_spool_count; }

# mxedge-relay: mxedge's relay (control/ mxedge-control) draining a spool
# that `mxedge --io=kernel` filled. Only the drain profile exists:
#   start drain   the edge accepts (fsync before every 250) while no
#                 relay runs, so everything stays in the spool
#   wait_queued   stops the edge once it has spooled what the client sent
#   flush         starts mxedge-control with a route for bench.test to
#                 smtp-sink: it reads the spool and delivers everything
#   sent_log      the relay's Postfix-format log (one status=sent line
#                 per delivery)
MXRELAY_PID=""
MXRELAY_DIR=""
mxedge_relay_status() {
  mxedge_find control/mxedge-control >/dev/null \
    || { echo "not built yet: mxedge-control (control/ under build/)"; return 0; }
  [ "$(mxedge_kernel_impl)" = io ] \
    || { echo "not built yet: mxedge --io=kernel (fills the spool the relay drains)"; return 0; }
  echo ok
}
mxedge_relay_start() {
  [ "${1:-drain}" = drain ] || { echo "mxedge-relay has only the drain profile" >&2; return 1; }
  MXRELAY_DIR=$PERF_WORK/mxedge-relay
  rm -rf "$MXRELAY_DIR"; mkdir -p "$MXRELAY_DIR/state"
  mxedge_kernel_start
}
mxedge_relay_addr() { echo "$PERF_SUT_ADDR:25"; }
mxedge_relay_pids() { ip netns pids "$(netns_name sut)"; }
mxedge_relay_received_count() { mxedge_spool_count; }
# The edge stops once its spool holds what the client was told was
# accepted (every 250 came after the fdatasync, so this is immediate).
mxedge_relay_wait_queued() {  # mxedge_relay_wait_queued SECONDS COUNT
  local end=$(( $(date +%s) + ${1:-60} ))
  while [ "$(mxedge_spool_count)" -lt "${2:-0}" ]; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.2
  done
  mxedge_stop_pid
}
mxedge_relay_flush() {
  local bin
  bin=$(mxedge_find control/mxedge-control) || return 1
  # concurrency and max_msgs_per_conn are the relay's defaults, written
  # out because Postfix's matching defaults (20 connections per
  # destination, connection reuse) are what it is compared with.
  cat >"$MXRELAY_DIR/relay.yaml" <<YAML
hostname: sut.bench.test
spool: { dir: $MXEDGE_SPOOL }
relay:
  state_dir: $MXRELAY_DIR/state
  log_file: $MXRELAY_DIR/mail.log
  socket: $MXRELAY_DIR/relay.sock
  concurrency: ${PERF_RELAY_CONCURRENCY:-20}
  max_msgs_per_conn: 100
domains:
  bench.test:
    route: { host: $PERF_SINK_ADDR, port: 25, tls: none }
YAML
  # MXRELAY_WRAP: a command to run it under (valgrind, for a profile).
  # shellcheck disable=SC2086
  netns_spawn sut ${MXRELAY_WRAP:-} "$bin" --config "$MXRELAY_DIR/relay.yaml" >"$MXRELAY_DIR/stderr" 2>&1
  MXRELAY_PID=$NETNS_LAST_PID
}
mxedge_relay_sent_log() { echo "$MXRELAY_DIR/mail.log"; }
# Messages still in the relay's queue (its control socket's status).
mxedge_relay_queue_left() {
  local ctl
  ctl=$(mxedge_find control/mxedgectl) || { echo -1; return 0; }
  "$ctl" --socket "$MXRELAY_DIR/relay.sock" --json status 2>/dev/null \
    | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["queued"])' 2>/dev/null || echo -1
}
mxedge_relay_stop() {
  if [ -n "$MXRELAY_PID" ]; then
    kill -TERM "$MXRELAY_PID" 2>/dev/null || true
    local i
    for i in $(seq 50); do kill -0 "$MXRELAY_PID" 2>/dev/null || break; sleep 0.1; done
    wait "$MXRELAY_PID" 2>/dev/null || true
    MXRELAY_PID=""
  fi
  mxedge_stop_pid
}
