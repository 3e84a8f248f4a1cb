# shellcheck shell=bash
# Namespaced test hosts for mxedge integration tests.
#
# Source this file, then:
#   netns_init                      # once: unique prefix, cleanup traps
#   netns_host NAME                 # create host (network namespace) NAME
#   netns_link A B ADDR_A ADDR_B    # veth pair A<->B; ADDR as CIDR, v4 or v6
#   netns_exec NAME cmd...          # run a command inside host NAME
#   netns_ifname A B                # name of A's interface towards B
#   netns_cleanup                   # tear everything down (also run by traps)
#
# Every namespace and interface carries a per-run prefix (mxt<pid>), so
# parallel tests never collide and cleanup removes exactly what this run made,
# also on failure, Ctrl-C, SIGTERM (meson's timeout) or `set -e` exits.
# Addresses must come from 198.18.0.0/15 or 2001:db8::/32 (DESIGN.md: test
# network); anything else is refused so a typo can never target a real host.
# Bash runs traps only between foreground commands: wait for long-running
# things with `cmd & wait $!` (or netns_spawn + wait) so SIGTERM acts at once.

NETNS_PREFIX=""
NETNS_HOSTS=()
NETNS_PIDS=()

netns_die() { echo "netns: $*" >&2; exit 1; }

# True when $1 (CIDR or bare address) lies in the test ranges.
netns_addr_ok() {
  local a=${1%/*}
  case "$a" in
    198.18.*|198.19.*) return 0 ;;
    2001:db8:*|2001:DB8:*) return 0 ;;
  esac
  return 1
}

netns_init() {
  [ "$(id -u)" -eq 0 ] || netns_die "must run as root (network namespaces)"
  command -v ip >/dev/null || netns_die "ip not found: install the Debian package iproute2"
  NETNS_PREFIX="mxt$$"
  trap netns_cleanup EXIT
  trap 'netns_cleanup; exit 130' INT
  trap 'netns_cleanup; exit 143' TERM
  trap 'netns_cleanup; exit 129' HUP
}

netns_name() { echo "${NETNS_PREFIX}-$1"; }

netns_host() {
  [ -n "$NETNS_PREFIX" ] || netns_die "call netns_init first"
  local ns; ns=$(netns_name "$1")
  ip netns add "$ns" || netns_die "cannot create namespace $ns"
  NETNS_HOSTS+=("$ns")
  ip -n "$ns" link set lo up
  # IPv6 DAD would delay usable addresses by ~2 s; test addresses are unique.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 || true
}

# Interface names are limited to 15 bytes: keep them short and derived.
netns_ifname() { echo "v$$${1:0:3}${2:0:3}" | cut -c1-15; }

netns_link() {
  local a=$1 b=$2 addr_a=$3 addr_b=$4
  netns_addr_ok "$addr_a" || netns_die "address $addr_a is outside 198.18.0.0/15 and 2001:db8::/32"
  netns_addr_ok "$addr_b" || netns_die "address $addr_b is outside 198.18.0.0/15 and 2001:db8::/32"
  local ia ib na nb
  ia=$(netns_ifname "$a" "$b"); ib=$(netns_ifname "$b" "$a")
  na=$(netns_name "$a"); nb=$(netns_name "$b")
  if ! ip -n "$na" link show "$ia" >/dev/null 2>&1; then
    ip link add "$ia" netns "$na" type veth peer name "$ib" netns "$nb" \
      || netns_die "cannot create veth $ia/$ib"
    ip -n "$na" link set "$ia" up
    ip -n "$nb" link set "$ib" up
  fi
  local fa=() fb=()
  case "$addr_a" in *:*) fa=(-6 addr add "$addr_a" dev "$ia" nodad) ;; *) fa=(addr add "$addr_a" dev "$ia") ;; esac
  case "$addr_b" in *:*) fb=(-6 addr add "$addr_b" dev "$ib" nodad) ;; *) fb=(addr add "$addr_b" dev "$ib") ;; esac
  ip -n "$na" "${fa[@]}" || netns_die "cannot add $addr_a"
  ip -n "$nb" "${fb[@]}" || netns_die "cannot add $addr_b"
}

netns_exec() {
  local ns; ns=$(netns_name "$1"); shift
  ip netns exec "$ns" "$@"
}

# Start a background command inside a host; it is killed at cleanup.
# The PID is left in NETNS_LAST_PID.
netns_spawn() {
  local ns; ns=$(netns_name "$1"); shift
  ip netns exec "$ns" "$@" &
  NETNS_LAST_PID=$!
  NETNS_PIDS+=("$NETNS_LAST_PID")
}

netns_cleanup() {
  local p ns
  trap - EXIT INT TERM HUP
  # Background jobs of the test itself go too: an orphan would keep the
  # test's output pipe open and make the runner wait for it.
  NETNS_PIDS+=($(jobs -p))
  for p in "${NETNS_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${NETNS_PIDS[@]}"; do
    # Give processes a moment to exit cleanly, then insist.
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  NETNS_PIDS=()
  for ns in "${NETNS_HOSTS[@]}"; do
    # Anything still running inside (e.g. a daemon that forked) dies with it.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  NETNS_HOSTS=()
}
