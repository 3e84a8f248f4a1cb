#!/usr/bin/env bash
# perf-smoke: `perf/run --client dpdk accept` end to end (quick): the
# mxedge-bench part of every measurement runs on mxedge-bench-dpdk, the run
# records that client, and for mxedge-dpdk and mxedge-kernel the server's
# own count equals the DPDK client's accepted count, without errors; nothing
# of the run is left behind.
#   test_run_dpdk.sh PATH/TO/mxedge-bench-dpdk
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
top=$(cd "$here/../.." && pwd)
bench=$(readlink -f "$1")
export PERF_BUILD=$(cd "$(dirname "$bench")/../.." && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root"
[ -x "$PERF_BUILD/perf/bench/mxedge-bench" ] || fail "no mxedge-bench beside $bench"

out=$(mktemp -d /tmp/mxedge-perf-dpdk.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT
# DPDK 22.11's af_xdp PMD leaves libxdp's umem handle behind at close (see
# dataplane/tests/test_smtp_dp.sh); sanitizer builds must not fail on it.
echo "leak:xsk_umem__create" >"$out/lsan.supp"
export LSAN_OPTIONS="suppressions=$out/lsan.supp"

"$top/perf/run" --quick --runs 1 --client dpdk --systems mxedge-dpdk,mxedge-kernel \
  --out "$out" accept >"$out/log" 2>&1 &
pid=$!
wait $pid || fail "perf/run --client dpdk accept failed: $(tail -20 "$out/log")"
ip netns list | grep -q "^mxt$pid-" && fail "namespaces of the run left behind"
/usr/bin/python3 - "$out" <<'PY' || fail "accept.json is not what it should be: $(tail -20 "$out/log")"
import json, os, sys
out = sys.argv[1]
d = json.load(open(os.path.join(out, "accept.json")))
assert d["meta"]["client"].startswith("dpdk"), d["meta"]["client"]
assert "--client dpdk" in d["meta"]["command"], d["meta"]["command"]
for name in ("mxedge-dpdk", "mxedge-kernel"):
    s = d["systems"][name]
    assert s["status"] == "ok", (name, s["status"])
    m = s["cases"]["20 sessions"]["median"]
    assert m["accepted"] > 0 and m["errors"] == 0, (name, m)
    # The server stored exactly what the DPDK client counted as accepted.
    assert m["server_accepted"] == m["accepted"], (name, m)
raws = [f for f in os.listdir(os.path.join(out, "raw")) if f.endswith(".json")]
assert len(raws) >= 2, raws
for f in raws:
    r = json.load(open(os.path.join(out, "raw", f)))
    assert r["config"]["io"] == "dpdk", (f, r["config"])
PY
echo "ok: perf/run --client dpdk accept: both systems measured with the DPDK client, counts agree"
