#!/usr/bin/env bash
# perf-smoke: mxedge-bench --syn-flood between two namespaced hosts. The
# receiver's interface counts exactly the SYNs sent (at the set rate, within
# the count), they are TCP SYNs from 198.18.0.0/15 sources, and a target
# outside the test ranges is refused.
#   test_flood.sh PATH/TO/mxedge-bench
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
bench=$(readlink -f "$1")
source "$here/../../tests/lib/netns.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }

netns_init
netns_host fa
netns_host fb
netns_link fa fb 198.18.5.1/24 198.18.5.2/24
ifb=$(netns_ifname fb fa)
# The receiver has no route back to the spoofed sources: nothing answers.
netns_exec fa ping -c1 -W2 198.18.5.2 >/dev/null || fail "no link"
rx() { netns_exec fb cat "/sys/class/net/$ifb/statistics/rx_packets"; }

# Capture a few to check what goes on the wire.
netns_spawn fb tcpdump -nn -i "$ifb" -c 5 -w /dev/stdout 'tcp[tcpflags] == tcp-syn' >"/tmp/flood.$$.pcap" 2>/dev/null
cap=$NETNS_LAST_PID
sleep 1
before=$(rx)
start=$(date +%s.%N)
netns_exec fa "$bench" --syn-flood --target 198.18.5.2:25 --rate 2000 --count 3000 \
  --duration 10 --json "/tmp/flood.$$.json" >/dev/null
end=$(date +%s.%N)
sleep 0.5
after=$(rx)
got=$((after - before))
[ "$got" -ge 3000 ] && [ "$got" -le 3010 ] || fail "receiver counted $got packets, want 3000"
secs=$(awk "BEGIN{print $end - $start}")
awk "BEGIN{exit !($secs >= 1.3 && $secs <= 4)}" || fail "3000 SYNs at 2000/s took $secs s"
grep -q '"sent": 3000' "/tmp/flood.$$.json" || fail "report: $(cat /tmp/flood.$$.json)"
echo "ok: 3000 SYNs at 2000/s reached the receiver in ${secs}s"

wait "$cap" 2>/dev/null || true
if command -v tcpdump >/dev/null; then
  out=$(tcpdump -nn -r "/tmp/flood.$$.pcap" 2>/dev/null)
  [ "$(echo "$out" | grep -c 'Flags \[S\]')" = 5 ] || fail "not SYNs: $out"
  echo "$out" | awk '{print $3}' | grep -vqE '^198\.1[89]\.' && fail "source outside 198.18.0.0/15: $out"
  echo "$out" | grep -q '198.18.5.2.25:' || fail "wrong destination: $out"
  echo "ok: captured packets are SYNs from 198.18.0.0/15 to 198.18.5.2:25"
fi
rm -f "/tmp/flood.$$.pcap" "/tmp/flood.$$.json"

if out=$("$bench" --syn-flood --target 192.0.2.1:25 --rate 10 --count 1 2>&1); then fail "public target accepted"; fi
echo "$out" | grep -q "refusing target" || fail "unclear refusal: $out"
echo "ok: public target refused"
