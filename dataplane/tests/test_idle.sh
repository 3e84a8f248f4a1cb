#!/usr/bin/env bash
# An idle edge must not burn a CPU: its worker lcore naps when its queue is
# quiet (--idle-sleep, default on) and still answers at once when mail
# comes. With --idle-sleep 0 the lcore busy-polls (cores dedicated to it).
set -euo pipefail
mxedge=$1
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
source "$here/../../tests/lib/bpffs.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d /tmp/mxt-idle.XXXXXX)
ticks=$(getconf CLK_TCK)
echo "leak:xsk_umem__create" >"$work/lsan.supp"
export LSAN_OPTIONS="suppressions=$work/lsan.supp"

netns_init
netns_host edge
netns_host client
bpffs_ensure
netns_link edge client 198.18.61.99/24 198.18.61.2/24
cif=$(netns_ifname client edge)
netns_exec client ethtool -K "$cif" tx off tso off gso off >/dev/null 2>&1 || true
port="af_xdp:$(netns_ifname edge client)"

# worker_ticks PID: CPU clock ticks (user + system) of the worker lcores
worker_ticks() {
  local t sum=0 comm
  for t in /proc/"$1"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    case $comm in
      *worker*) sum=$((sum + $(awk '{print $14 + $15}' "$t/stat"))) ;;
    esac
  done
  echo "$sum"
}

# send_one: one message end to end, within 20 s
send_one() {
  netns_exec client timeout 30 /usr/bin/python3 - <<'PY'
import smtplib
s = smtplib.SMTP("198.18.61.1", 25, timeout=20)
s.sendmail("a@example.org", ["b@customer.test"], b"Subject: idle\r\n\r\nhello\r\n")
s.quit()
PY
}

# run_edge NAME [ARGS...]: starts the edge, checks it serves, then measures
# its workers' CPU over 3 s of silence into pct (percent of one CPU) and
# checks it still serves after the silence.
pct=
run_edge() {
  local name=$1 log=$work/log.$1 pid s0 s1 t0 t1
  shift
  netns_spawn edge "$mxedge" --port "$port" --no-huge --addr 198.18.61.1/24 \
    --spool "$work/spool.$name" --no-control --duration 150 "$@" >"$log" 2>&1
  pid=$NETNS_LAST_PID
  for _ in $(seq 600); do
    grep -q "running on" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "$name: edge exited"; }
    sleep 0.2
  done
  grep -q "running on" "$log" || { cat "$log" >&2; fail "$name: edge did not start"; }
  send_one || fail "$name: no message through the edge"
  sleep 1
  s0=$(worker_ticks "$pid"); t0=$(date +%s%N)
  sleep 3
  s1=$(worker_ticks "$pid"); t1=$(date +%s%N)
  # after a long quiet (naps at their longest) the next message still goes
  send_one || fail "$name: no message after the quiet"
  kill -TERM "$pid"
  wait "$pid" || fail "$name: edge exit status $?"
  pct=$(( (s1 - s0) * 100 * 1000000000 / ticks / (t1 - t0) ))
  echo "$name: worker lcore CPU while idle ${pct}% of one CPU"
}

run_edge default
napping=$pct
# Naps start at 50 us and grow to 1 ms: well under a tenth of a CPU. The
# bound leaves room for a loaded machine's accounting noise.
[ "$pct" -le 20 ] || fail "idle edge burns ${pct}% of a CPU with naps on"
echo "ok: an idle edge naps (${pct}% CPU) and answers mail before and after"

run_edge busy --idle-sleep 0
# Busy polling takes whatever CPU it gets; on a crowded machine that may
# be little, but still far above the napping edge.
[ "$pct" -ge 10 ] && [ "$pct" -ge $((napping * 3)) ] \
  || fail "--idle-sleep 0 did not busy-poll (${pct}% vs ${napping}% napping)"
echo "ok: --idle-sleep 0 busy-polls (${pct}% CPU) and answers mail"

rc=0; err=$("$mxedge" --idle-sleep 20000 --port "$port" 2>&1) || rc=$?
[ "$rc" -ne 0 ] && echo "$err" | grep -q -- "--idle-sleep: expected a number 0..10000" \
  || fail "bad --idle-sleep accepted: rc=$rc $err"
echo "ok: a bad --idle-sleep is refused with a clear message"
