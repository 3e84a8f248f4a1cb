# shellcheck shell=bash
# Namespaced test hosts for mxedge integration tests.
#
# Source this file, then:
#   netns_init [PREFIX]             # once: prefix (default mxt<pid>), traps
#   netns_host NAME                 # create host (network namespace) NAME
#   netns_link A B ADDR_A ADDR_B    # veth pair A<->B; ADDR as CIDR, v4 or v6
#   netns_exec NAME cmd...          # run a command inside host NAME
#   netns_spawn NAME cmd...         # same, in the background (killed at cleanup)
#   netns_etc NAME FILE SRC         # bind SRC over /etc/FILE inside host NAME
#   netns_ifname A B                # name of A's interface towards B
#   netns_cleanup                   # tear everything down (also run by traps)
#
# A host is a network namespace plus its own mount namespace (like a small
# container): /sys shows the host's own interfaces and /sys/fs/bpf is one
# bpffs shared by every process run in that host, so an XDP program loaded by
# one process (DPDK's af_xdp PMD) and maps pinned by it are visible to another
# (the loader, the control plane). `ip netns exec` cannot do that: it makes a
# fresh mount namespace per command, which hides bpffs.
#
# Every namespace and interface carries a per-run prefix (mxt<pid>), so
# parallel tests never collide and cleanup removes exactly what this run made,
# also on failure, Ctrl-C, SIGTERM (meson's timeout) or `set -e` exits.
# Addresses must come from 198.18.0.0/15 or 2001:db8::/32 (DESIGN.md: test
# network); anything else is refused so a typo can never target a real host.
# Bash runs traps only between foreground commands: wait for long-running
# things with `cmd & wait $!` (or netns_spawn + wait) so SIGTERM acts at once.

NETNS_PREFIX=""
NETNS_MNTDIR=""
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
  command -v nsenter >/dev/null || netns_die "nsenter not found: install the Debian package util-linux"
  NETNS_PREFIX=${1:-mxt$$}
  # Persistent mount namespaces are bind mounts of nsfs onto files; the
  # files must sit on a mount that is not shared, hence a private bind.
  NETNS_MNTDIR="/run/mxt-mnt.$$"
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
  if ! mountpoint -q "$NETNS_MNTDIR" 2>/dev/null; then
    mkdir -p "$NETNS_MNTDIR"
    mount --bind "$NETNS_MNTDIR" "$NETNS_MNTDIR" && mount --make-private "$NETNS_MNTDIR" \
      || netns_die "cannot prepare $NETNS_MNTDIR"
  fi
  touch "$NETNS_MNTDIR/$ns"
  unshare --mount="$NETNS_MNTDIR/$ns" --propagation slave true \
    || netns_die "cannot create mount namespace for $ns"
  nsenter --net="/run/netns/$ns" --mount="$NETNS_MNTDIR/$ns" sh -c \
    'umount -l /sys && mount -t sysfs sysfs /sys && mount -t bpf bpf /sys/fs/bpf' \
    || netns_die "cannot mount sysfs/bpffs for $ns"
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
  nsenter --net="/run/netns/$ns" --mount="$NETNS_MNTDIR/$ns" --wd="$PWD" -- "$@"
}

netns_etc() {
  local ns; ns=$(netns_name "$1")
  [ -e "/etc/$2" ] || netns_die "/etc/$2 does not exist to bind over"
  nsenter --net="/run/netns/$ns" --mount="$NETNS_MNTDIR/$ns" mount --bind "$3" "/etc/$2" \
    || netns_die "cannot bind $3 over /etc/$2 in $1"
}

# Start a background command inside a host; it is killed at cleanup.
# The PID is left in NETNS_LAST_PID.
netns_spawn() {
  local ns; ns=$(netns_name "$1"); shift
  # A simple command in the background: $! is the command itself (nsenter
  # execs it), so signals sent to NETNS_LAST_PID reach the program.
  nsenter --net="/run/netns/$ns" --mount="$NETNS_MNTDIR/$ns" --wd="$PWD" -- "$@" &
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
    umount "$NETNS_MNTDIR/$ns" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  NETNS_HOSTS=()
  if [ -n "$NETNS_MNTDIR" ] && [ -d "$NETNS_MNTDIR" ]; then
    umount "$NETNS_MNTDIR" 2>/dev/null || true
    rm -rf "$NETNS_MNTDIR"
  fi
}
