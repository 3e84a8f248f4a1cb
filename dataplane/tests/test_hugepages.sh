#!/usr/bin/env bash
# With hugepages reserved the dataplane uses them (DPDK memory in 2 MB
# pages, released at exit); --no-huge keeps it off them. CI machines have
# none reserved, so the test reserves a few itself and restores the setting.
set -euo pipefail
mxedge=$1
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d /tmp/mxt-huge.XXXXXX)
knob=/proc/sys/vm/nr_hugepages
orig=$(cat "$knob")
restore() { echo "$orig" >"$knob" 2>/dev/null || true; }
free_pages() { awk '/^HugePages_Free:/ {print $2}' /proc/meminfo; }

netns_init
trap 'netns_cleanup; restore' EXIT
netns_host edge
echo $((orig + 64)) >"$knob" 2>/dev/null || { echo "SKIP: cannot reserve hugepages here"; exit 77; }
[ "$(free_pages)" -ge 64 ] || { echo "SKIP: the kernel gave no free hugepages"; exit 77; }
# run NAME [ARGS...]: starts the edge on a tap, delivers one message,
# records the free hugepages while it runs (used) and after it exits (after).
run() {
  local name=$1 log=$work/log.$1 pid tap="h$$$1"
  shift
  tap=${tap:0:15}
  before=$(free_pages)
  netns_spawn edge "$mxedge" --port "tap:$tap" --addr 198.18.64.1/24 \
    --spool "$work/spool.$name" --no-control --duration 120 "$@" >"$log" 2>&1
  pid=$NETNS_LAST_PID
  for _ in $(seq 300); do
    grep -q "running on" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "$name: edge exited"; }
    sleep 0.2
  done
  grep -q "running on" "$log" || { cat "$log" >&2; fail "$name: edge did not start"; }
  netns_exec edge ip addr add 198.18.64.2/24 dev "$tap"
  netns_exec edge timeout 30 /usr/bin/python3 - <<'PY' || fail "$name: no message through the edge"
import smtplib
s = smtplib.SMTP("198.18.64.1", 25, timeout=20, source_address=("198.18.64.2", 0))
s.sendmail("a@example.org", ["b@customer.test"], b"Subject: huge\r\n\r\nhello\r\n")
s.quit()
PY
  used=$((before - $(free_pages)))
  kill -TERM "$pid"
  wait "$pid" || fail "$name: exit status $?"
  after=$(free_pages)
}

run huge
[ "$used" -gt 0 ] || fail "hugepages reserved but the edge used none"
[ "$after" -eq "$before" ] || fail "the edge left $((before - after)) hugepages behind"
echo "ok: with hugepages reserved the edge runs on them ($used pages) and gives them back"
run nohuge --no-huge
[ "$used" -eq 0 ] || fail "--no-huge still took $used hugepages"
echo "ok: --no-huge keeps the edge off hugepages"
