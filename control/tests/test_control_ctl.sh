#!/usr/bin/env bash
# mxedge-control's own control-socket commands and mxedgectl's routing
# (issue #7): queue.* commands go to the relay's socket without --socket;
# "log level" reads and changes the level of the daemon's diagnostic log
# live (a debug line appears only at debug), an admin only, audited, kept
# across a restart and dropped once set back to the file's level; a bad
# level in the file is refused by --check with FILE:LINE.
#   test_control_ctl.sh MXEDGE_CONTROL MXEDGECTL
set -euo pipefail
control=$1 ctl=$2
py=/usr/bin/python3
work=$(mktemp -d /tmp/mxt-ctlctl.XXXXXX)
chmod 755 "$work"
cpid=
cleanup() {
  [ -n "$cpid" ] && kill -TERM "$cpid" 2>/dev/null && wait "$cpid" 2>/dev/null
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
out=$work/control.out rs=$work/relay.sock
fail() { echo "FAIL: $*" >&2; tail -20 "$out" >&2 || true; exit 1; }
# The edge's socket does not exist here: only routing can reach the relay.
export MXEDGE_CONTROL=$work/no-edge.sock
r() { "$ctl" --relay-socket "$rs" "$@"; }
rr() { "$ctl" --relay-socket "$rs" --relay "$@"; }
field() { $py -c "import json,sys; r=json.load(sys.stdin)['result']; print($1)"; }

mkdir -p "$work/spool"
cat >"$work/c.yaml" <<CF
hostname: edge.test
spool: { dir: $work/spool }
log:
  level: info
relay:
  state_dir: $work/state
  log_file: $work/mail.log
  socket: $rs
CF
start() {
  "$control" --config "$work/c.yaml" >>"$out" 2>&1 &
  cpid=$!
  for _ in $(seq 100); do [ -S "$rs" ] && break; sleep 0.1; done
  [ -S "$rs" ] || fail "mxedge-control did not start"
}
stop() {
  kill -TERM "$cpid"; wait "$cpid" || fail "exit status after SIGTERM"; cpid=
}

start
# queue.* without --socket: routed to the relay
r queue list >/dev/null || fail "queue list not routed to the relay"
[ "$(r --json queue.list | field 'len(r)')" = 0 ] || fail "queue.list: $(r --json queue.list)"
rc=0; e=$("$ctl" status 2>&1) || rc=$?
[ "$rc" = 2 ] && echo "$e" | grep -q "no-edge.sock" || fail "status went elsewhere: $rc $e"
echo "ok: queue commands go to the relay's socket; others to the edge's"

[ "$(rr log level)" = "level  info" ] || fail "log level: $(rr log level)"
r queue list >/dev/null
grep -q "debug:" "$out" && fail "a debug line at info: $(cat "$out")"
[ "$(rr --json log level debug | field 'r["old"], r["new"]')" = "info debug" ] || fail "log level debug"
r queue list >/dev/null
grep -q "^mxedge-control: debug: control: queue.list from uid $(id -u) pid [0-9]*: ok$" "$out" \
  || fail "no debug line at debug"
grep -q "^mxedge-control: log.level: info -> debug by uid $(id -u)$" "$out" || fail "no info line for the change"
rc=0; e=$(rr log level loud 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$e" | grep -q "expected error, warning, info or debug (bad_args)" || fail "bad level: $e"
chmod 666 "$rs"
ro() { setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" --relay-socket "$rs" --relay "$@"; }
[ "$(ro log level)" = "level  debug" ] || fail "read-only log level: $(ro log level 2>&1)"
rc=0; e=$(ro log level error 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$e" | grep -q "(permission_denied)" || fail "read-only changed the level: $rc $e"
ro queue list >/dev/null || fail "read-only queue list"
for cmd in queue.flush "queue.delete qid=00000000000" "queue.hold qid=00000000000" \
           "queue.release qid=00000000000"; do
  rc=0; e=$(ro $cmd 2>&1) || rc=$?
  [ "$rc" = 1 ] && echo "$e" | grep -q "(permission_denied)" || fail "read-only $cmd: $rc $e"
done
rr --json audit | $py -c '
import json, os, sys
r = json.load(sys.stdin)["result"]
e = [x for x in r if x["cmd"] == "log.level"]
assert len(e) == 1 and e[0]["old"] == "info" and e[0]["new"] == "debug", r
assert e[0]["uid"] == os.getuid() and e[0]["pid"] > 0, e
' || fail "audit: $(rr --json audit)"
echo "ok: log level live (debug lines only at debug), admin only, audited"

stop
[ -s "$work/state/control.json" ] || fail "level not saved"
start
[ "$(rr log level)" = "level  debug" ] || fail "level after restart: $(rr log level)"
rr log level info >/dev/null || fail "log level info"
[ -e "$work/state/control.json" ] && fail "the file's level kept as an override"
n=$(grep -c "debug:" "$out")
r queue list >/dev/null
[ "$(grep -c "debug:" "$out")" = "$n" ] || fail "debug lines after going back to info"
stop
echo "ok: the level survives a restart; the file's level drops the override"

printf 'log:\n  level: loud\n' >"$work/bad.yaml"
rc=0; e=$("$control" --config "$work/bad.yaml" --check 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$e" | grep -q "bad.yaml:2:10: log.level: expected one of error, warning, info, debug" \
  || fail "--check of a bad level: $rc $e"
echo '{"log.level": "loud"}' >"$work/state/control.json"
rc=0; e=$(timeout 20 "$control" --config "$work/c.yaml" 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$e" | grep -q "control.json:1: expected" || fail "damaged control.json: $rc $e"
echo "ok: bad levels refused with their position"
