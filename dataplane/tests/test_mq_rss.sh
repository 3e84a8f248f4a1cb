#!/usr/bin/env bash
# RSS dispatch path without a PCI NIC: DPDK's net_null PMD implements the
# RSS key and RETA operations, so a "PCI" port configuration whose only
# device is a net_null vdev exercises mxedge's program-and-read-back code:
# the symmetric key and a RETA spreading 128 entries over the queues are
# programmed and verified, and the process runs and stops cleanly. Also:
# RSS with more workers than queues is refused with a message.
set -euo pipefail
mxedge=$1 ctl=$2
fail() { echo "FAIL: $*" >&2; [ -f "${log:-}" ] && tail -20 "$log" >&2; exit 1; }
work=$(mktemp -d /tmp/mxt-mqrss.XXXXXX)
trap 'rm -rf "$work"' EXIT
log="$work/log"

# No PCI device matches the allowlist; the null vdev is the only port. It
# receives nothing (no-rx), so the workers stay idle.
common=(--port pci:0000:00:00.0 --eal "--vdev net_null0,no-rx=1" --no-huge
        --addr 198.18.0.1/24 --spool "$work/spool" --no-control)
timeout 120 "$mxedge" "${common[@]}" --queues 2 --dispatch rss --duration 2 >"$log" 2>&1 \
  || fail "mxedge with RSS on net_null failed"
grep -q "driver=net_null" "$log" || fail "not on the null port"
grep -q "dispatch rss: 2 workers, 2 queue(s), 128-entry port RETA" "$log" \
  || fail "RSS RETA not programmed and verified"
grep -q "running on 2 worker lcore(s)" "$log" || fail "not on 2 workers"
echo "ok: RSS key and 128-entry RETA programmed, read back and verified on 2 queues"

out=$("$mxedge" "${common[@]}" --queues 2 --workers 3 --dispatch rss 2>&1) \
  && fail "rss with more workers than queues accepted"
echo "$out" | grep -q "needs one queue per worker" || fail "refusal unclear: $out"
echo "ok: RSS with more workers than queues refused"

# auto picks RSS on such a port and software with more workers than queues
timeout 120 "$mxedge" "${common[@]}" --queues 2 --workers 3 --duration 2 >"$log" 2>&1 \
  || fail "mxedge with 3 workers on 2 queues failed"
grep -q "dispatch software: 3 workers, 2 queue(s)" "$log" || fail "auto did not fall back to software"
echo "ok: auto dispatch uses software hand-off when workers exceed queues"
