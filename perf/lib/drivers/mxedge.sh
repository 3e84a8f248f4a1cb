# shellcheck shell=bash
# Systems under test: mxedge itself.
#   mxedge-dpdk    the DPDK dataplane, build/*/dataplane/mxedge (net_af_xdp
#                  on the sut veth)
#   mxedge-kernel  the SMTP engine over kernel sockets (`mxedge-kio`,
#                  built as build/*/dataplane/kio/mxedge-kio)
#
# When a binary is missing, its status says "not built yet" and scenarios
# record that instead of numbers. mxedge-kio's command line is known
# (dataplane/kio/README.md); the DPDK dataplane's is not yet: set
# PERF_MXEDGE_DPDK_CMD (and PERF_MXEDGE_KIO_CMD to override) to a command
# line with {bin}, {addr} (listen address), {spool} and {relay} (the
# smtp-sink address) placeholders. mxedge has no relay yet, so it only
# accepts and spools; scenarios that need relaying list it as not built.

mxedge_find() {  # mxedge_find RELATIVE_PATH (PERF_MXEDGE_BUILD may name a build dir)
  local b
  for b in ${PERF_MXEDGE_BUILD:-} "$PERF_TOP"/build/*; do
    [ -x "$b/$1" ] && { echo "$b/$1"; return 0; }
  done
  return 1
}

mxedge_cmd_status() {  # mxedge_cmd_status BINARY_PATH ENV_NAME WHAT
  local bin
  if ! bin=$(mxedge_find "$1"); then
    echo "not built yet: $3 ($1 not found under build/)"
    return 0
  fi
  if [ -z "${!2:-}" ]; then
    echo "not wired yet: $bin exists; set $2 to its start command (perf/lib/drivers/mxedge.sh)"
    return 0
  fi
  MXEDGE_BIN=$bin
  echo ok
}

mxedge_kernel_status() {
  mxedge_cmd_status dataplane/kio/mxedge-kio PERF_MXEDGE_KIO_CMD \
    "mxedge --io=kernel, the SMTP engine on kernel sockets"
}
mxedge_dpdk_status() {
  # build/*/dataplane/mxedge: the DPDK dataplane (EAL, ports, lcore loops);
  # it serves SMTP once the per-lcore TCP + SMTP work lands in it.
  mxedge_cmd_status dataplane/mxedge PERF_MXEDGE_DPDK_CMD \
    "mxedge DPDK dataplane serving SMTP"
}

: "${PERF_MXEDGE_KIO_CMD:={bin\} --listen {addr\} --spool {spool\} --threads 2 --hostname sut.bench.test --quiet}"

MXEDGE_PID=""
mxedge_start_cmd() {  # mxedge_start_cmd BINARY_PATH TEMPLATE
  local bin spool=$PERF_WORK/mxedge-spool
  bin=$(mxedge_find "$1") || return 1
  rm -rf "$spool"; mkdir -p "$spool"
  local cmd=${2//\{addr\}/$PERF_SUT_ADDR:25}
  cmd=${cmd//\{relay\}/$PERF_SINK_ADDR:25}
  cmd=${cmd//\{spool\}/$spool}
  cmd=${cmd//\{bin\}/$bin}
  # shellcheck disable=SC2086
  netns_spawn sut $cmd >"$PERF_WORK/mxedge.log" 2>&1
  MXEDGE_PID=$NETNS_LAST_PID
  local i
  for i in $(seq 100); do
    netns_exec sut ss -ltn 2>/dev/null | grep -q "$PERF_SUT_ADDR:25 " && return 0
    kill -0 "$MXEDGE_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "mxedge did not listen on $PERF_SUT_ADDR:25: $(tail -5 "$PERF_WORK/mxedge.log")" >&2
  return 1
}
mxedge_stop_pid() {
  [ -n "$MXEDGE_PID" ] || return 0
  kill -TERM "$MXEDGE_PID" 2>/dev/null || true
  local i
  for i in $(seq 50); do kill -0 "$MXEDGE_PID" 2>/dev/null || break; sleep 0.1; done
  ip netns pids "$(netns_name sut)" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  wait "$MXEDGE_PID" 2>/dev/null || true
  MXEDGE_PID=""
}

mxedge_kernel_start() { mxedge_start_cmd dataplane/kio/mxedge-kio "$PERF_MXEDGE_KIO_CMD"; }
mxedge_kernel_stop() { mxedge_stop_pid; }
mxedge_kernel_pids() { ip netns pids "$(netns_name sut)"; }
mxedge_kernel_addr() { echo "$PERF_SUT_ADDR:25"; }

mxedge_dpdk_start() { mxedge_start_cmd dataplane/mxedge "$PERF_MXEDGE_DPDK_CMD"; }
mxedge_dpdk_stop() { mxedge_stop_pid; }
mxedge_dpdk_pids() { ip netns pids "$(netns_name sut)"; }
mxedge_dpdk_addr() { echo "$PERF_SUT_ADDR:25"; }

# Messages mxedge-kio has made durable: one envelope file per message,
# renamed into the spool only after the message is on disk.
mxedge_kernel_received_count() {
  find "$PERF_WORK/mxedge-spool" -maxdepth 1 -name '*.env' 2>/dev/null | wc -l
}
