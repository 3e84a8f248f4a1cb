#!/usr/bin/env bash
# Accept rate of `mxedge --io=kernel` (kernel sockets, the real spool: 250
# only after the group commit's fdatasync) driven by Postfix smtp-source
# over a veth pair between two namespaced hosts, the same shape as the
# Postfix figure in DESIGN.md ("Measured facts").
#   kio_accept.sh PATH/TO/mxedge PATH/TO/mxedge-spool [SESSIONS] [MESSAGES] [SIZE] [QUEUES]
# Prints one JSON line; fails unless the spool holds every message
# smtp-source sent. Bounded: smtp-source is killed after 300 s.
set -euo pipefail
mxedge=$1 spooltool=$2 sessions=${3:-20} messages=${4:-5000} size=${5:-4096} queues=${6:-2}
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"

netns_init
work=$(mktemp -d /tmp/kio-accept.XXXXXX)
trap 'netns_cleanup; rm -rf "$work"' EXIT
netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
mkdir -p "$work/spool"
# All sessions come from one client address: no per-client limit.
printf 'limits:\n  max_sessions_per_client: 0\n' >"$work/mxedge.yaml"
netns_spawn edge "$mxedge" --io=kernel --config "$work/mxedge.yaml" --addr 198.18.0.1/24 \
  --smtp-port 25 --spool "$work/spool" --queues "$queues" --hostname mx.bench \
  --no-control >"$work/log" 2>&1
pid=$NETNS_LAST_PID
for _ in $(seq 400); do
  netns_exec edge ss -ltn 2>/dev/null | grep -q "198.18.0.1:25 " && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
netns_exec edge ss -ltn 2>/dev/null | grep -q "198.18.0.1:25 " \
  || { echo "mxedge --io=kernel did not listen:" >&2; cat "$work/log" >&2; exit 1; }

t0=$(date +%s.%N)
netns_exec client timeout 300 smtp-source -s "$sessions" -m "$messages" \
  -l "$size" -f src@example.org -t rcpt@customer.test 198.18.0.1:25
t1=$(date +%s.%N)
# Every 250 came after the message was durable: the spool must hold all.
stored=$("$spooltool" list "$work/spool" | wc -l)
[ "$stored" -eq "$messages" ] || { echo "only $stored of $messages stored" >&2; exit 1; }
/usr/bin/python3 -c '
import json, sys
s, m, size, q, t0, t1 = sys.argv[1:]
dt = float(t1) - float(t0)
print(json.dumps({"bench": "kio_accept_smtp_source", "edge": "mxedge --io=kernel",
    "sessions": int(s), "messages": int(m), "size": int(size), "queues": int(q),
    "seconds": round(dt, 3), "messages_per_s": round(int(m) / dt, 1)}))' \
  "$sessions" "$messages" "$size" "$queues" "$t0" "$t1"
