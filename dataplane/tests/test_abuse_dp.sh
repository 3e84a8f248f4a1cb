#!/usr/bin/env bash
# Abuse through the DPDK dataplane (net_af_xdp on a veth), with a small
# session pool (limits.max_sessions: 32) and short timeouts (command_s: 8,
# data_s: 6) from a config file. While each abuse runs, a legitimate client
# must still get its mail accepted:
#   1. idle connections beyond the pool: the first 32 get 220, every further
#      one 421 4.3.2 (or nothing), a held session still delivers, the idle
#      ones get 421 4.4.2 after the command timeout, memory stays flat;
#   2. sessions stalled in the middle of DATA: others are served meanwhile,
#      the stalled ones get 421 4.4.2 after the DATA timeout, nothing of
#      their partial messages is committed;
#   3. clients that vanish (their host drops off the network) while holding
#      the whole pool: newcomers get 421 until the timeouts free the pool,
#      then the full pool is available again;
#   4. a SYN flood (mxedge-bench --syn-flood, bounded) from forged sources
#      on the edge's own link (--addr 198.18.0.1/15: every forged source
#      needs ARP, none answers) creates no sessions, costs no legitimate
#      delivery, and the full pool is usable right after it;
#   5. on a second edge with limits.max_sessions_per_client: 4 and
#      limits.session_max_s: 7: more sessions from one address get
#      421 4.7.0 while another address is served, and sessions dripping a
#      byte a second inside DATA get 421 4.4.2 after 7 s, nothing kept.
# Counters come from `mxedgectl stats --json` and the exit summary.
#   test_abuse_dp.sh MXEDGE MXEDGECTL MXEDGE-SPOOL MXEDGE-BENCH
set -euo pipefail
mxedge=$1 ctl=$2 spooltool=$3 bench=$4
[ -x "$bench" ] || { echo "FAIL: no load generator at $bench (build perf/ too)" >&2; exit 1; }
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
py=/usr/bin/python3
clients="$here/abuse_clients.py"
work=$(mktemp -d /tmp/mxt-abuse.XXXXXX)
chmod 755 "$work"
log="$work/log" sock="$work/control.sock" spool="$work/spool"
pool=32 cmd_s=8 data_s=6
fail() { echo "FAIL: $*" >&2; [ -f "$log" ] && tail -30 "$log" >&2; exit 1; }
c() { "$ctl" --socket "$sock" "$@"; }
# counter NAME: the workers' counter from mxedgectl stats --json (the
# lcore rows; the "total" row would count everything twice)
counter() { c --json stats | $py -c "import json,sys; print(sum(l['$1'] for l in json.load(sys.stdin)['result'] if l.get('lcore') != 'total'))"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
# wait_file FILE SECONDS
wait_file() { for _ in $(seq $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done; return 1; }
# json FILE KEY: a top-level value of a hold report
json() { $py -c "import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], 0))" "$1" "$2"; }
final() { $py -c "import json,sys; print(json.load(open(sys.argv[1]))['final'].get(sys.argv[2], 0))" "$1" "$2"; }
send() { netns_exec client timeout 120 $py "$clients" send 198.18.0.1 "$@"; }

cat >"$work/mxedge.yaml" <<EOF
hostname: mx.abuse.test
limits:
  max_sessions: $pool
timeouts:
  command_s: $cmd_s
  data_s: $data_s
EOF

# client --- bridge --- edge (af_xdp); ghost hangs off the same bridge so it
# can vanish (link down) without a FIN or a reset.
netns_init
netns_host edge
netns_host client
netns_host ghost
bpffs_ensure
netns_link edge client 198.18.1.1/24 198.18.0.2/24
netns_link client ghost 198.18.2.1/24 198.18.0.3/24
cif=$(netns_ifname client edge) gif=$(netns_ifname client ghost)
hif=$(netns_ifname ghost client)
netns_exec client ip addr flush dev "$cif"
netns_exec client ip addr flush dev "$gif"
netns_exec client ip link add br0 type bridge
netns_exec client ip link set "$cif" master br0
netns_exec client ip link set "$gif" master br0
netns_exec client ip addr add 198.18.0.2/24 dev br0
netns_exec client ip link set br0 up
# Generic XDP hands DPDK what the peers queued: no partial checksums.
for dev in "$cif" br0 "$gif"; do
  netns_exec client ethtool -K "$dev" tx off tso off gso off >/dev/null 2>&1 || true
done
netns_exec ghost ethtool -K "$hif" tx off tso off gso off >/dev/null 2>&1 || true
echo "leak:xsk_umem__create" >"$work/lsan.supp"   # as in test_smtp_dp.sh
export LSAN_OPTIONS="suppressions=$work/lsan.supp"

netns_spawn edge "$mxedge" --config "$work/mxedge.yaml" \
  --port "af_xdp:$(netns_ifname edge client)" --addr 198.18.0.1/15 \
  --spool "$spool" --control "$sock" --duration 280 >"$log" 2>&1
pid=$NETNS_LAST_PID
for _ in $(seq 300); do
  grep -q "running on" "$log" && [ -S "$sock" ] && break
  kill -0 "$pid" 2>/dev/null || fail "mxedge exited early"
  sleep 0.1
done
grep -q "running on" "$log" || fail "mxedge did not start in 30 s"
grep -q "$pool sessions per lcore" "$log" || fail "pool size not taken from the config"
for h in client ghost; do
  for _ in $(seq 20); do   # ARP warm-up on a loaded machine
    netns_exec "$h" ping -c1 -W1 198.18.0.1 >/dev/null 2>&1 && break
  done
done
out=$(send 1) || fail "first delivery: $out"
echo "$out" | grep -q "^sent=1 ok=1 " || fail "first delivery: $out"
delivered=1 busy_seen=0 refused_seen=0

# 1. idle connections beyond the pool ------------------------------------
extra=40
s0=$(counter sessions)
netns_spawn client $py "$clients" hold 198.18.0.1 $((pool + extra)) "$work/idle.ready" \
  --mode idle --deliver --wait $((cmd_s + 10)) >"$work/idle.json" 2>&1
holder=$NETNS_LAST_PID
wait_file "$work/idle.ready" 60 || fail "idle holder did not open its connections"
rss_full=$(rss_kb)
wait "$holder" || fail "idle holder: $(cat "$work/idle.json")"
r="$work/idle.json"
[ "$(json "$r" accepted)" = $pool ] || fail "idle: $pool sessions wanted: $(cat "$r")"
[ "$(json "$r" busy)" = $extra ] || fail "idle: every connection past the pool wants 421: $(cat "$r")"
[ "$(json "$r" delivered)" = 1 ] || fail "idle: a held session was not served: $(cat "$r")"
[ "$(final "$r" "421 4.4.2")" = $((pool - 1)) ] || fail "idle: timeouts: $(cat "$r")"
$py -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not ($cmd_s - 0.5 <= a and b <= $cmd_s + 3))" \
  "$(json "$r" final_after_min)" "$(json "$r" final_after_max)" \
  || fail "idle: 421 4.4.2 not about $cmd_s s after the last command: $(cat "$r")"
[ $(($(counter sessions) - s0)) = $pool ] || fail "idle: stats count $(($(counter sessions) - s0)) sessions, want $pool"
busy_seen=$extra delivered=$((delivered + 1))
out=$(send 3)
echo "$out" | grep -q "^sent=3 ok=3 " || fail "idle: after the timeouts: $out"
delivered=$((delivered + 3))
echo "ok: $pool idle sessions, $extra more got 421 4.3.2, a held one still delivered, idle ones timed out after $(json "$r" final_after_min)-$(json "$r" final_after_max) s"

# 2. sessions stalled in the middle of DATA --------------------------------
stalls=8
netns_spawn client $py "$clients" hold 198.18.0.1 $stalls "$work/stall.ready" \
  --mode data --wait $((data_s + 10)) >"$work/stall.json" 2>&1
holder=$NETNS_LAST_PID
wait_file "$work/stall.ready" 60 || fail "stall holder did not open its connections"
out=$(send 5)
echo "$out" | grep -q "^sent=5 ok=5 " || fail "stall: others not served: $out"
delivered=$((delivered + 5))
wait "$holder" || fail "stall holder: $(cat "$work/stall.json")"
r="$work/stall.json"
[ "$(json "$r" accepted)" = $stalls ] || fail "stall: $(cat "$r")"
[ "$(final "$r" "421 4.4.2")" = $stalls ] || fail "stall: DATA timeouts: $(cat "$r")"
$py -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not ($data_s - 0.5 <= a and b <= $data_s + 3))" \
  "$(json "$r" final_after_min)" "$(json "$r" final_after_max)" \
  || fail "stall: 421 4.4.2 not about $data_s s after the last bytes: $(cat "$r")"
"$spooltool" list "$spool" | grep -q "from=<stall@" && fail "stall: a partial message was committed"
echo "ok: $stalls sessions stalled mid-DATA, 5 others delivered meanwhile, stalled ones got 421 4.4.2 after $(json "$r" final_after_min)-$(json "$r" final_after_max) s"

# 3. clients that vanish while holding the whole pool ------------------------
half=$((pool / 2))
netns_spawn ghost $py "$clients" hold 198.18.0.1 $pool "$work/ghost.ready" \
  --mode data --idle $half --wait 2 >"$work/ghost.json" 2>&1
ghost=$NETNS_LAST_PID
wait_file "$work/ghost.ready" 60 || fail "ghost did not open its connections"
grep -q "^accepted=$pool " "$work/ghost.ready" || fail "ghost: $(cat "$work/ghost.ready")"
netns_exec ghost ip link set "$hif" down
t_gone=$(date +%s%N)
out=$(send 1)
echo "$out" | grep -q "^sent=1 ok=0 codes=busy$" \
  || fail "vanished: pool full, yet: $out (ghost: $(cat "$work/ghost.ready"))"
busy_seen=$((busy_seen + 1))
ok=0
for _ in $(seq 40); do
  out=$(send 1)
  case "$out" in
    "sent=1 ok=1 "*) ok=1; break ;;
    "sent=1 ok=0 codes=busy") busy_seen=$((busy_seen + 1)) ;;
    "sent=1 ok=0 codes=refused") refused_seen=$((refused_seen + 1)) ;;
    *) fail "vanished: $out" ;;
  esac
  sleep 0.3
done
took=$((($(date +%s%N) - t_gone) / 1000000))
[ "$ok" = 1 ] || fail "vanished: pool not freed after $took ms"
[ "$took" -ge $((data_s * 1000 - 1500)) ] || fail "vanished: served after $took ms, before any timeout"
delivered=$((delivered + 1))
wait "$ghost" || true
# The mid-DATA ghosts went at the DATA timeout; the idle ones go at the
# command timeout: after that every slot must be free again.
while [ $((($(date +%s%N) - t_gone) / 1000000)) -lt $(((cmd_s + 2) * 1000)) ]; do sleep 0.2; done
netns_spawn client $py "$clients" hold 198.18.0.1 $((pool + 1)) "$work/refill.ready" \
  --mode idle --wait $((cmd_s + 10)) >"$work/refill.json" 2>&1
holder=$NETNS_LAST_PID
wait_file "$work/refill.ready" 60 || fail "refill holder did not open its connections"
wait "$holder" || fail "refill holder: $(cat "$work/refill.json")"
r="$work/refill.json"
[ "$(json "$r" accepted)" = $pool ] || fail "vanished: the pool did not come back whole: $(cat "$r")"
busy_seen=$((busy_seen + $(json "$r" busy))) refused_seen=$((refused_seen + $(json "$r" refused)))
[ "$(final "$r" "421 4.4.2")" = $pool ] || fail "refill: timeouts: $(cat "$r")"
"$spooltool" list "$spool" | grep -q "from=<stall@" && fail "vanished: a partial message was committed"
echo "ok: $pool vanished clients held the pool; newcomers got 421 until it was free after $took ms; all $pool sessions usable again"

# 4. SYN flood ----------------------------------------------------------------
syns=16000
rx0=$(counter rx_packets) s0=$(counter sessions)
netns_spawn client "$bench" --syn-flood --target 198.18.0.1:25 --rate 4000 --count $syns \
  --duration 15 --json "$work/flood.json" >"$work/flood.out" 2>&1
flood=$NETNS_LAST_PID
out=$(send 10)
echo "$out" | grep -q "^sent=10 ok=10 " || fail "SYN flood: legitimate mail refused: $out"
delivered=$((delivered + 10))
wait "$flood" || fail "flood: $(cat "$work/flood.out")"
grep -q "\"sent\": $syns" "$work/flood.json" || fail "flood: $(cat "$work/flood.json")"
sleep 0.5
rx=$(($(counter rx_packets) - rx0)) sess=$(($(counter sessions) - s0))
[ "$rx" -ge $syns ] || fail "SYN flood: the worker received only $rx frames"
[ "$sess" = 10 ] || fail "SYN flood: $sess sessions started, want the 10 legitimate ones"
out=$(send 2)
echo "$out" | grep -q "^sent=2 ok=2 " || fail "after the SYN flood: $out"
delivered=$((delivered + 2))
# Half-open entries the flood left must not keep the pool from filling.
netns_spawn client $py "$clients" hold 198.18.0.1 $pool "$work/postflood.ready" \
  --mode idle --wait 1 >"$work/postflood.json" 2>&1
holder=$NETNS_LAST_PID
wait_file "$work/postflood.ready" 60 || fail "post-flood holder did not open its connections"
wait "$holder" || true
grep -q "^accepted=$pool " "$work/postflood.ready" || fail "after the SYN flood: $(cat "$work/postflood.ready")"
echo "ok: $syns SYNs ($(sed -n 's/.*(\([0-9]*\/s\)).*/\1/p' "$work/flood.out")) started no session; 10 messages delivered during the flood"

# memory: abuse after the pool was first filled costs nothing more
rss_end=$(rss_kb)
[ $((rss_end - rss_full)) -lt 4096 ] || fail "memory grew from $rss_full to $rss_end KiB"
[ "$(counter messages)" = "$delivered" ] || fail "stats: $(counter messages) messages, $delivered delivered"

kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM"
busy=$(sed -n 's/^mxedge: lcore .* sessions_busy=\([0-9]*\) .*/\1/p' "$log")
[ -n "$busy" ] && [ "$busy" -ge "$busy_seen" ] && [ "$busy" -le $((busy_seen + refused_seen)) ] \
  || fail "exit summary sessions_busy=${busy:-none}, clients saw $busy_seen 421s and $refused_seen refusals"
"$spooltool" verify "$spool" | grep -q "messages=$delivered incomplete=0 torn_tail_bytes=0 damaged_bytes=0 corrupt_segments=0" \
  || fail "spool verify: $("$spooltool" verify "$spool"), $delivered delivered"
echo "ok: memory $rss_full -> $rss_end KiB; $delivered messages, sessions_busy=$busy; spool clean"

# 5. per-client limit and session lifetime cap, on a second edge with small
# limits: the DPDK dataplane, then `mxedge --io=kernel` on the same link.
per=4 life_s=7 data2_s=4
cat >"$work/limits.yaml" <<EOF
hostname: mx.abuse.test
limits:
  max_sessions: $pool
  max_sessions_per_client: $per
  session_max_s: $life_s
timeouts:
  command_s: 30
  data_s: $data2_s
EOF
netns_exec client ip addr add 198.18.0.4/24 dev br0
# limits_case NAME MXEDGE-ARGS...: runs one edge through both limits
limits_case() {
  local name=$1 r
  shift
  log="$work/log.$name" sock="$work/control.$name.sock" spool="$work/spool.$name"
  netns_spawn edge "$mxedge" --config "$work/limits.yaml" "$@" --addr 198.18.0.1/15 \
    --spool "$spool" --control "$sock" --duration 120 >"$log" 2>&1
  pid=$NETNS_LAST_PID
  for _ in $(seq 300); do
    grep -q "running on" "$log" && [ -S "$sock" ] && break
    kill -0 "$pid" 2>/dev/null || fail "$name: mxedge exited early"
    sleep 0.1
  done
  grep -q "running on" "$log" || fail "$name: mxedge did not start in 30 s"
  for _ in $(seq 20); do
    netns_exec client ping -c1 -W1 198.18.0.1 >/dev/null 2>&1 && break
  done
  netns_spawn client $py "$clients" hold 198.18.0.1 $((per + 2)) "$work/per.$name.ready" \
    --mode idle --wait 3 >"$work/per.$name.json" 2>&1
  holder=$NETNS_LAST_PID
  wait_file "$work/per.$name.ready" 60 || fail "$name: per-client holder did not open its connections"
  grep -q "^accepted=$per busy=2 " "$work/per.$name.ready" || fail "$name: per-client: $(cat "$work/per.$name.ready")"
  out=$(send 1)
  [ "$out" = "sent=1 ok=0 codes=busy" ] || fail "$name: per-client: one more session from the same address: $out"
  out=$(send 1 --src 198.18.0.4)
  echo "$out" | grep -q "^sent=1 ok=1 " || fail "$name: per-client: another address was not served: $out"
  wait "$holder" || fail "$name: per-client holder: $(cat "$work/per.$name.json")"
  grep -q "4.7.0 mx.abuse.test Error: too many connections from 198.18.0.2" "$work/per.$name.json" \
    || fail "$name: per-client: 421 4.7.0 wanted: $(cat "$work/per.$name.json")"
  out=$(send 2)
  echo "$out" | grep -q "^sent=2 ok=2 " || fail "$name: per-client: slots not given back after the sessions ended: $out"
  echo "ok: $name: $per sessions per client address, more got 421 4.7.0, another address was served, slots came back"

  netns_spawn client $py "$clients" hold 198.18.0.1 2 "$work/drip.$name.ready" \
    --mode drip --drip 1 --wait $((life_s + 10)) >"$work/drip.$name.json" 2>&1
  holder=$NETNS_LAST_PID
  wait_file "$work/drip.$name.ready" 60 || fail "$name: drip holder did not open its connections"
  wait "$holder" || fail "$name: drip holder: $(cat "$work/drip.$name.json")"
  r="$work/drip.$name.json"
  [ "$(json "$r" accepted)" = 2 ] || fail "$name: drip: $(cat "$r")"
  [ "$(final "$r" "421 4.4.2")" = 2 ] || fail "$name: drip: session lifetime cap: $(cat "$r")"
  $py -c "import sys; a, b, c = map(float, sys.argv[1:]); sys.exit(not ($life_s - 0.5 <= a and b <= $life_s + 3 and c < $data2_s))" \
    "$(json "$r" since_open_min)" "$(json "$r" since_open_max)" "$(json "$r" final_after_max)" \
    || fail "$name: drip: 421 4.4.2 not about $life_s s after connect (while bytes kept coming): $(cat "$r")"
  # The operator sees both refusals by reason (2 + 1 over the per-client
  # limit, 2 sessions cut at the lifetime cap).
  [ "$(counter sessions_client_limit)" = 3 ] \
    || fail "$name: stats: sessions_client_limit=$(counter sessions_client_limit), want 3"
  [ "$(counter sessions_expired)" = 2 ] \
    || fail "$name: stats: sessions_expired=$(counter sessions_expired), want 2"
  kill -TERM "$pid"
  rc=0; wait "$pid" || rc=$?
  [ "$rc" = 0 ] || fail "$name: exit status $rc after SIGTERM"
  "$spooltool" list "$spool" | grep -q "from=<stall@" && fail "$name: drip: a partial message was committed"
  "$spooltool" verify "$spool" | grep -q "messages=3 incomplete=0 " \
    || fail "$name: spool verify: $("$spooltool" verify "$spool")"
  echo "ok: $name: dripping sessions got 421 4.4.2 $(json "$r" since_open_min)-$(json "$r" since_open_max) s after connect; nothing of them kept"
}
limits_case dpdk --port "af_xdp:$(netns_ifname edge client)"
netns_exec edge ip addr add 198.18.0.1/15 dev "$(netns_ifname edge client)"
limits_case kernel --io=kernel
rm -rf "$work"
