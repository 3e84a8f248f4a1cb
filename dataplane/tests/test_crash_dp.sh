#!/usr/bin/env bash
# Crash consistency of the DPDK dataplane: mxedge (net_af_xdp on a veth, or
# net_tap) is killed with SIGKILL again and again while Postfix's
# smtp-source and a recording client (crash_client.py: every 250 with its
# queue id and a digest of the bytes sent) deliver mail. After every kill:
#   - every message that got a 250 is committed in the spool with exactly
#     the bytes sent behind one Received: header (crash_check),
#   - queue ids are unique across all restarts,
#   - the spool has no damaged bytes and no corrupt segment, only torn
#     tails and incomplete messages, none of them acknowledged (crash_check;
#     `mxedge-spool verify` too on every fifth kill and at the end),
# and after every restart the process's own recovery reports the same
# committed count and no damage, and it serves new mail before the next
# kill.
#   test_crash_dp.sh MXEDGE MXEDGE-SPOOL CRASH_CHECK [af_xdp|tap] [KILLS]
# CRASH_SEED=N replays a run's kill moments and messages (it prints its seed).
set -euo pipefail
mxedge=$1 spooltool=$2 checker=$3 mode=${4:-af_xdp} kills=${5:-20}
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
py=/usr/bin/python3
work=$(mktemp -d /tmp/mxt-crash.XXXXXX)
chmod 755 "$work"
spool="$work/spool" acks="$work/acks" host=mx.crash.test
log=""
fail() {
  echo "FAIL: $*" >&2
  [ -n "$log" ] && [ -f "$log" ] && tail -20 "$log" >&2
  [ -f "$work/client.out" ] && cat "$work/client.out" >&2
  exit 1
}
seed=${CRASH_SEED:-$(($$ % 32768))}
RANDOM=$seed
echo "seed $seed"
: >"$acks"
t0=$(date +%s)
# A small session pool: fewer mbufs to set up, so restarts are quick.
printf 'limits:\n  max_sessions: 64\n' >"$work/mxedge.yaml"

netns_init
netns_host edge
netns_host client
if [ "$mode" = af_xdp ]; then
  bpffs_ensure
  netns_link edge client 198.18.1.1/24 198.18.0.2/24
  cif=$(netns_ifname client edge)
  # Generic XDP hands DPDK what the peer queued: no partial checksums.
  netns_exec client ethtool -K "$cif" tx off tso off gso off >/dev/null 2>&1 || true
  port="af_xdp:$(netns_ifname edge client)"
  # DPDK 22.11's af_xdp PMD leaves libxdp's umem handle behind at close
  # (as in test_smtp_dp.sh); only the final, graceful stop reaches LSan.
  echo "leak:xsk_umem__create" >"$work/lsan.supp"
  export LSAN_OPTIONS="suppressions=$work/lsan.supp"
else
  tap="t$$crash"
  tap=${tap:0:15}
  port="tap:$tap"
fi

# start_edge N: starts mxedge, waits until it serves; sets pid and log.
start_edge() {
  log="$work/log.$1"
  netns_spawn edge "$mxedge" --config "$work/mxedge.yaml" --port "$port" \
    --addr 198.18.0.1/24 --smtp-port 25 --spool "$spool" --hostname "$host" \
    --no-control --duration 290 >"$log" 2>&1
  pid=$NETNS_LAST_PID
  for _ in $(seq 900); do
    grep -q "running on" "$log" && break
    kill -0 "$pid" 2>/dev/null || fail "mxedge exited during start $1"
    sleep 0.1
  done
  grep -q "running on" "$log" || fail "mxedge start $1 took over 90 s"
  if [ "$mode" = tap ]; then
    # A tap lives as long as the process: the new one moves to the client.
    ip -n "$(netns_name edge)" link set dev "$tap" netns "$(netns_name client)"
    netns_exec client ip addr add 198.18.0.2/24 dev "$tap"
    netns_exec client ip link set "$tap" up
  fi
}

# check WHEN [verify]: the spool against every 250 so far; sets committed.
check() {
  local out
  out=$("$checker" "$spool" "$acks" "$host") || fail "$1: $out"
  committed=$(echo "$out" | sed -n 's/.* committed=\([0-9]*\) .*/\1/p')
  lastcheck=$out
  echo "$out" | grep -q " damaged_bytes=0 corrupt_segments=0 " || fail "$1: damage: $out"
  # crash_check scans with the same reader as `mxedge-spool verify`; the
  # tool itself runs every 5th time and at the end (each scan reads the
  # whole spool, and restarts must stay quick).
  [ "${2:-}" = verify ] || return 0
  out=$("$spooltool" verify "$spool") || fail "$1: mxedge-spool verify: $out"
  echo "$out" | grep -q "messages=$committed .*damaged_bytes=0 corrupt_segments=0" \
    || fail "$1: mxedge-spool verify: $out (checker: $committed committed)"
}

committed=0
incomplete_seen=0 torn_seen=0
ms() { echo $(($(date +%s%N) / 1000000)); }
for i in $(seq 1 "$kills"); do
  ta=$(ms)
  start_edge "$i"
  tb=$(ms)
  # Recovery (spool_open) must have found what the last check saw.
  rec=$(sed -n 's/^mxedge: spool .*: \([0-9]*\) messages, \([0-9]*\) incomplete, \([0-9]*\) torn-tail bytes, \([0-9]*\) damaged segments$/\1 \2 \3 \4/p' "$log")
  [ -n "$rec" ] || fail "restart $i: no recovery line"
  set -- $rec
  [ "$1" = "$committed" ] || fail "restart $i: recovery found $1 messages, $committed were committed"
  [ "$4" = 0 ] || fail "restart $i: recovery found $4 damaged segments"
  [ "$2" -gt 0 ] && incomplete_seen=$((incomplete_seen + 1))
  [ "$3" -gt 0 ] && torn_seen=$((torn_seen + 1))
  if [ "$i" = 1 ]; then
    for _ in $(seq 20); do   # ARP warm-up on a loaded machine
      netns_exec client ping -c1 -W1 198.18.0.1 >/dev/null 2>&1 && break
    done
    netns_spawn client "$py" "$here/crash_client.py" 198.18.0.1 "$acks" "$work/stop" \
      --sessions 4 --seed "$seed" --timeout 2 --max-seconds 290 >"$work/client.out" 2>&1
    client=$NETNS_LAST_PID
  fi
  netns_spawn client smtp-source -s 2 -m 1000000 -l 4096 -f src@client.test \
    -t box@edge.test 198.18.0.1:25
  source_pid=$NETNS_LAST_PID
  # Serving after the restart: a new 250 reaches the recording client.
  before=$(wc -l <"$acks")
  for _ in $(seq 200); do
    [ "$(wc -l <"$acks")" -gt "$before" ] && break
    kill -0 "$client" 2>/dev/null || fail "recording client exited"
    sleep 0.1
  done
  [ "$(wc -l <"$acks")" -gt "$before" ] || fail "restart $i: no message acknowledged within 20 s"
  tc=$(ms)
  # Then a random moment: mid-DATA, between 250s, during a sync.
  sleep "0.$((RANDOM % 9))$((RANDOM % 10))"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  kill -TERM "$source_pid" 2>/dev/null || true
  wait "$source_pid" 2>/dev/null || true
  td=$(ms)
  check "after kill $i" "$([ $((i % 5)) = 0 ] && echo verify)"
  echo "kill $i: $(wc -l <"$acks") acknowledged; start $((tb - ta)) ms, first 250 $((tc - tb)) ms," \
       "check $(($(ms) - td)) ms; $lastcheck"
  [ $(($(date +%s) - t0)) -lt 250 ] || fail "only $i kills in 250 s: the machine is too slow for this test"
done

# The last restart recovers the same, serves, and stops cleanly.
start_edge final
rec=$(sed -n 's/^mxedge: spool .*: \([0-9]*\) messages, .* \([0-9]*\) damaged segments$/\1 \2/p' "$log")
[ "$rec" = "$committed 0" ] || fail "final recovery: '$rec', want '$committed 0'"
before=$(wc -l <"$acks")
for _ in $(seq 200); do
  [ "$(wc -l <"$acks")" -gt "$before" ] && break
  sleep 0.1
done
[ "$(wc -l <"$acks")" -gt "$before" ] || fail "final restart: nothing acknowledged"
touch "$work/stop"
wait "$client" || fail "recording client: $(cat "$work/client.out")"
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM"
check "after the final SIGTERM" verify
n=$(wc -l <"$acks")
[ "$n" -ge $((kills * 5)) ] || fail "only $n messages acknowledged over $kills kills: test too weak"
# The checker itself catches what it is there for: an acknowledged id the
# spool lacks, and stored bytes that differ from what was sent.
read -r q l h <"$acks"
printf '%s %s %s\n' "$q" "$l" "$(printf '%064d' 0)" >"$work/bad.acks"
printf '%s %s %s\n' 00000000001 10 "$h" >>"$work/bad.acks"
if out=$("$checker" "$spool" "$work/bad.acks" "$host"); then fail "checker accepted bad acks: $out"; fi
echo "$out" | grep -q "^crash_check: $q: stored bytes differ" || fail "checker: $out"
echo "$out" | grep -q "^crash_check: 00000000001: acknowledged with 250 but not committed" || fail "checker: $out"
echo "$out" | grep -q " problems=2$" || fail "checker: $out"
echo "ok[$mode]: crash_check reports a missing and an altered message"
echo "ok[$mode]: $kills SIGKILLs while sending; all $n acknowledged messages intact" \
     "(restarts with incomplete messages: $incomplete_seen, with torn tails: $torn_seen);" \
     "$(cat "$work/client.out"); $lastcheck; $(($(date +%s) - t0)) s"
rm -rf "$work"
