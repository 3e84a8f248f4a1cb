#!/usr/bin/env bash
# README's run command: it brings the edge up in the mxedge-edge and
# mxedge-client namespaces, serves what exists, and Ctrl-C (SIGINT) tears
# everything down again.
set -euo pipefail
top=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
log=$(mktemp /tmp/mxt-run.XXXXXX)
cleanup() {
  if [ -n "${pid:-}" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    sleep 2; kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap cleanup EXIT

# Job control on: without it a background job ignores SIGINT, and the
# test could not press Ctrl-C for real.
set -m
"$top/scripts/run" >"$log" 2>&1 & pid=$!
set +m
for _ in $(seq 600); do
  grep -q "Ctrl-C stops" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; fail "run command exited early"; }
  sleep 0.1
done
grep -q "Ctrl-C stops" "$log" || { tail -20 "$log"; fail "run command did not come up in 60 s"; }
ip netns list | grep -qw mxedge-edge || fail "no mxedge-edge namespace"
ip netns list | grep -qw mxedge-client || fail "no mxedge-client namespace"
ip netns exec mxedge-client ping -c1 -W2 198.18.0.1 >/dev/null 2>&1 || true
if grep -q "SMTP on 198.18.0.1:25" "$log"; then
  # The printed instructions work as written.
  cmd=$(grep -m1 'swaks --server 198.18.0.1' "$log" | sed 's/^ *//')
  out=$(timeout 30 bash -c "$cmd" 2>&1) || { echo "$out"; fail "the printed swaks command failed"; }
  echo "$out" | grep -q "<- *250 .*queued as" || { echo "$out"; fail "message not accepted"; }
  echo "ok: the printed swaks command delivered a message"
fi
if grep -q "mxedgectl stats" "$log"; then
  # The printed control and spool commands work as written, from the root.
  (cd "$top" && build/release/control/mxedgectl stats | grep "^LCORE" >/dev/null) || fail "printed mxedgectl stats failed"
  # grep reads the whole listing (the demo spool keeps earlier runs' mail):
  # with -q, an early exit would SIGPIPE the lister and fail the pipeline.
  if grep -q "mxedge-spool list" "$log"; then
    cmd=$(grep -m1 'mxedge-spool list' "$log" | sed 's/^ *//')
    (cd "$top" && bash -c "$cmd") | grep "to=<postmaster@example.test>" >/dev/null \
      || fail "the message sent is not in the printed spool listing"
  fi
  echo "ok: the printed mxedgectl and mxedge-spool commands work"
fi
kill -INT "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "run command ignored Ctrl-C"
wait "$pid" 2>/dev/null || true
pid=
ip netns list | grep -qE '^mxedge-(edge|client)' && fail "namespaces left behind after Ctrl-C"
ip -o link | grep -q "v[0-9]*edg" && fail "veth left behind"
echo "ok: run command came up and Ctrl-C removed its namespaces"
