#!/usr/bin/env bash
# Accept rate of mxedge-kio (kernel sockets, fsync before every 250) driven
# by Postfix smtp-source over a veth pair between two namespaced hosts, the
# same shape as the Postfix figure in DESIGN.md ("Measured facts").
#   kio_accept.sh PATH/TO/mxedge-kio [SESSIONS] [MESSAGES] [SIZE] [THREADS]
# Prints one JSON line.  Bounded: smtp-source is killed after 300 s.
set -euo pipefail
kio=$1 sessions=${2:-20} messages=${3:-5000} size=${4:-4096} threads=${5:-2}
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"

netns_init
work=$(mktemp -d /tmp/kio-accept.XXXXXX)
trap 'netns_cleanup; rm -rf "$work"' EXIT
netns_host edge
netns_host client
netns_link edge client 198.18.0.1/24 198.18.0.2/24
mkdir -p "$work/spool"
netns_spawn edge "$kio" --listen 198.18.0.1:25 --spool "$work/spool" \
  --threads "$threads" --hostname mx.bench --quiet >"$work/log" 2>&1
for _ in $(seq 400); do grep -q ready "$work/log" && break; sleep 0.05; done
grep -q ready "$work/log" || { cat "$work/log" >&2; exit 1; }

t0=$(date +%s.%N)
netns_exec client timeout 300 smtp-source -s "$sessions" -m "$messages" \
  -l "$size" -f src@example.org -t rcpt@customer.test 198.18.0.1:25
t1=$(date +%s.%N)
stored=$(find "$work/spool" -maxdepth 1 -name '*.env' | wc -l)
[ "$stored" -eq "$messages" ] || { echo "only $stored of $messages stored" >&2; exit 1; }
/usr/bin/python3 -c '
import json, sys
s, m, size, thr, t0, t1 = sys.argv[1:]
dt = float(t1) - float(t0)
print(json.dumps({"bench": "kio_accept_smtp_source", "sessions": int(s),
    "messages": int(m), "size": int(size), "threads": int(thr),
    "seconds": round(dt, 3), "messages_per_s": round(int(m) / dt, 1)}))' \
  "$sessions" "$messages" "$size" "$threads" "$t0" "$t1"
