#!/usr/bin/env bash
# unit: the mxedge driver picks what the benchmark tables claim to measure.
# With fake build trees (PERF_MXEDGE_BUILD): `mxedge --io=kernel` is the
# kernel-socket row when mxedge's --help lists --io, "not built yet"
# otherwise (the legacy mxedge-kio is never measured); the relay row needs
# mxedge-control and --io; the JSON metadata names what was chosen; the
# DPDK command line is the af_xdp one of dataplane/tests/test_smtp_dp.sh; the
# idle scenario's DPDK session pool (--sessions-per-lcore and
# limits.max_sessions) reaches mxedge and is accepted by it.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
fail() { echo "FAIL: $*" >&2; exit 1; }
t=$(mktemp -d /tmp/perf-drivers.XXXXXX)
trap 'rm -rf "$t"' EXIT

PERF_TOP=$(cd "$here/../.." && pwd)
REAL_TOP=$PERF_TOP
# Stand-ins for tests/lib/netns.sh (no namespaces are made here).
netns_ifname() { echo "v1${1:0:3}${2:0:3}"; }
export PERF_TOP
# shellcheck source=drivers/mxedge.sh
source "$here/drivers/mxedge.sh"
PERF_SUT_ADDR=198.18.0.1 PERF_SINK_ADDR=198.18.1.2

fake() {  # fake DIR PATH HELP_TEXT: an executable that prints HELP_TEXT for --help
  mkdir -p "$(dirname "$1/$2")"
  printf '#!/bin/sh\necho "%s"\n' "$3" >"$1/$2"
  chmod 755 "$1/$2"
}

# Neither built: both rows say so, with no command.
export PERF_MXEDGE_BUILD=$t/none
mkdir -p "$t/none"
PERF_TOP=$t/none   # no build/ under it either
st=$(mxedge_kernel_status)
[[ $st == "not built yet:"* ]] || fail "kernel row without binaries: '$st'"
st=$(mxedge_dpdk_status)
[[ $st == "not built yet:"* ]] || fail "dpdk row without binaries: '$st'"
echo "ok: nothing built -> not built yet"

# Only the legacy mxedge-kio, and an mxedge without --io: nothing kernel-
# socket is measured (perf no longer falls back to mxedge-kio).
PERF_MXEDGE_BUILD=$t/kio
fake "$t/kio" dataplane/mxedge "usage: mxedge --port KIND:NAME [options]"
fake "$t/kio" dataplane/kio/mxedge-kio "usage: mxedge-kio"
fake "$t/kio" control/mxedge-control "usage: mxedge-control"
[ -z "$(mxedge_kernel_impl)" ] || fail "kio build: impl $(mxedge_kernel_impl)"
st=$(mxedge_kernel_status)
[[ $st == "not built yet: mxedge --io=kernel"* ]] || fail "kio build: status '$st'"
st=$(mxedge_relay_status)
[[ $st == "not built yet: mxedge --io=kernel"* ]] || fail "kio build: relay status '$st'"
d=$(mxedge_describe); grep -qx "mxedge_kernel_impl=none" <<<"$d" || fail "describe: $d"
echo "ok: mxedge without --io -> not built yet, mxedge-kio ignored"

# mxedge lists --io: it is measured, whether or not mxedge-kio exists.
PERF_MXEDGE_BUILD=$t/io
fake "$t/io" dataplane/mxedge "  --io kernel|dpdk     where connections come from"
fake "$t/io" dataplane/kio/mxedge-kio "usage: mxedge-kio"
[ "$(mxedge_kernel_impl)" = io ] || fail "io build: impl $(mxedge_kernel_impl)"
st=$(mxedge_relay_status)
[[ $st == "not built yet: mxedge-control"* ]] || fail "io build without relay: relay status '$st'"
fake "$t/io" control/mxedge-control "usage: mxedge-control"
[ "$(mxedge_relay_status)" = ok ] || fail "io build with relay: relay status $(mxedge_relay_status)"
d=$(mxedge_describe); grep -qx "mxedge_kernel_impl=mxedge --io=kernel" <<<"$d" || fail "describe: $d"
MXEDGE_SPOOL=/x/spool MXEDGE_CONFIG=/x/mxedge.yaml
cmd=$(mxedge_fill "$PERF_MXEDGE_IO_CMD" "$t/io/dataplane/mxedge")
[[ $cmd == "$t/io/dataplane/mxedge --io=kernel "*"--spool /x/spool"* ]] || fail "io command: $cmd"
echo "ok: mxedge with --io -> mxedge --io=kernel ($cmd)"

# The DPDK row: af_xdp on the sut's veth, the sut address, the spool.
cmd=$(mxedge_fill "$PERF_MXEDGE_DPDK_CMD" /b/mxedge)
[ "$cmd" = "/b/mxedge --config /x/mxedge.yaml --port af_xdp:v1sutcli --addr 198.18.0.1/24 --smtp-port 25 --spool /x/spool --hostname sut.bench.test --no-control" ] \
  || fail "dpdk command: $cmd"
echo "ok: DPDK command line"

# The idle scenario's pool: one worker, --sessions-per-lcore and the
# limits.max_sessions line in the generated config file.
PERF_WORK=$t/spawn; mkdir -p "$PERF_WORK"
netns_spawn() { NETNS_LAST_PID=$$; shift; echo "$*" >"$t/spawned"; }
PERF_MXEDGE_LIMITS="max_sessions: 105064" \
  mxedge_spawn "{bin} --config {config} --port {port} --sessions-per-lcore 105064" /b/mxedge
grep -qx "  max_sessions_per_client: 0" "$PERF_WORK/mxedge.yaml" || fail "spawn config: $(cat "$PERF_WORK/mxedge.yaml")"
grep -qx "  max_sessions: 105064" "$PERF_WORK/mxedge.yaml" || fail "spawn limits: $(cat "$PERF_WORK/mxedge.yaml")"
grep -q -- "--sessions-per-lcore 105064$" "$t/spawned" || fail "spawned: $(cat "$t/spawned")"
real=$(PERF_TOP=$REAL_TOP PERF_MXEDGE_BUILD="" mxedge_find dataplane/mxedge 2>/dev/null || true)
if [ -n "$real" ] && "$real" --help 2>&1 | grep -q -- --sessions-per-lcore; then
  out=$("$real" --check-config --config "$PERF_WORK/mxedge.yaml" --sessions-per-lcore 105064 2>&1) \
    || fail "$real refuses the idle pool's settings: $out"
  echo "ok: idle pool settings (accepted by $real --check-config)"
else
  echo "ok: idle pool settings"
fi
MXEDGE_SPOOL=/x/spool MXEDGE_CONFIG=/x/mxedge.yaml

# Templates override one row without touching the other.
PERF_MXEDGE_IO_CMD="{bin} --io=kernel --addr {ip}/24 --spool {spool}"
cmd=$(mxedge_fill "$PERF_MXEDGE_IO_CMD" /k)
[ "$cmd" = "/k --io=kernel --addr 198.18.0.1/24 --spool /x/spool" ] || fail "io override: $cmd"
cmd=$(mxedge_fill "$PERF_MXEDGE_DPDK_CMD" /b/mxedge)
[[ $cmd == "/b/mxedge --config /x/mxedge.yaml --port af_xdp:"* ]] || fail "dpdk after io override: $cmd"
echo "ok: command templates"

# The relay's configuration: the spool the edge filled, a route for the
# load generator's domain to smtp-sink, and its own state and socket.
PERF_WORK=$t/work MXRELAY_DIR=$t/work/relay MXEDGE_SPOOL=$t/work/spool
mkdir -p "$MXRELAY_DIR"
netns_spawn() { NETNS_LAST_PID=$$; echo "$*" >"$t/spawned"; }
mxedge_relay_flush
grep -q "^  dir: \|spool: { dir: $t/work/spool }" "$MXRELAY_DIR/relay.yaml" || fail "relay spool: $(cat "$MXRELAY_DIR/relay.yaml")"
grep -q "route: { host: 198.18.1.2, port: 25, tls: none }" "$MXRELAY_DIR/relay.yaml" || fail "relay route"
grep -q "^  bench.test:" "$MXRELAY_DIR/relay.yaml" || fail "relay domain"
[ "$(cat "$t/spawned")" = "sut $t/io/control/mxedge-control --config $MXRELAY_DIR/relay.yaml" ] \
  || fail "relay command: $(cat "$t/spawned")"
# With a real build beside the sources, mxedge-control itself checks it.
real=$(PERF_TOP=$REAL_TOP PERF_MXEDGE_BUILD="" mxedge_find control/mxedge-control 2>/dev/null || true)
if [ -n "$real" ]; then
  "$real" --check --config "$MXRELAY_DIR/relay.yaml" >/dev/null 2>&1 \
    || fail "the built mxedge-control rejects the relay config: $("$real" --check --config "$MXRELAY_DIR/relay.yaml" 2>&1)"
  echo "ok: relay configuration (accepted by $real --check)"
else
  echo "ok: relay configuration"
fi
