#!/usr/bin/env bash
# mxedge-control's own control-socket commands and mxedgectl's routing
# (issue #7): queue.* commands go to the relay's socket without --socket;
# "log level" reads and changes the level of the daemon's diagnostic log
# live (a debug line appears only at debug), an admin only, audited, kept
# across a restart and dropped once set back to the file's level; a bad
# level in the file is refused by --check with FILE:LINE.
# Live routes: mail to a domain without a route is deferred (4.4.4); bad
# route.set/route.del input is refused with its reason and changes nothing;
# "route set" makes the next attempt ("queue flush") deliver to the new
# route (an smtp-sink on loopback); the change is audited and survives a
# restart (control.json); "route del" masks a file route across restarts;
# "domain add NAME --route" / "domain del" / "domain list" talk to the edge
# (here a recording stand-in socket) and the relay, and a refused domain
# puts the previous route back.
#   test_control_ctl.sh MXEDGE_CONTROL MXEDGECTL SPOOL_INJECT
set -euo pipefail
control=$1 ctl=$2 inject=$3
py=/usr/bin/python3
work=$(mktemp -d /tmp/mxt-ctlctl.XXXXXX)
chmod 755 "$work"
cpid= spid= epid=
cleanup() {
  if [ -n "$cpid" ]; then kill -TERM "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true; fi
  if [ -n "$spid" ]; then kill -TERM "$spid" 2>/dev/null; wait "$spid" 2>/dev/null || true; fi
  if [ -n "$epid" ]; then kill -TERM "$epid" 2>/dev/null; wait "$epid" 2>/dev/null || true; fi
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
domains:
  file.test:
    route: { host: 127.0.0.1, port: 9, tls: none }
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

# ---- live routes -----------------------------------------------------------
rm -f "$work/state/control.json"
wait_for() {
  local end=$(( $(date +%s) + $1 )); shift
  while [ "$(date +%s)" -lt "$end" ]; do "$@" && return 0; sleep 0.1; done
  return 1
}
port=$(( 20000 + RANDOM % 20000 ))
mkdir -m 777 "$work/sink"
smtp-sink -u nobody -d "$work/sink/%H%M%S." 127.0.0.1:$port 8 >"$work/sink.out" 2>&1 &
spid=$!
start
printf 'Subject: routed\r\n\r\nlive route body\r\n' >"$work/m.eml"
"$inject" "$work/spool" 1 "$work/m.eml" alice@sender.test "" tj@routed.test >/dev/null \
  || fail "inject"
chmod 666 "$rs"
wait_for 20 grep -q "to=<tj@routed.test>, relay=none.*dsn=4.4.4, status=deferred" "$work/mail.log" \
  || fail "mail to a domain without a route not deferred 4.4.4: $(cat "$work/mail.log")"
# bad input: a clear error, exit 1 (refused by the relay) or 2 (by mxedgectl)
bad() {
  local want=$1 msg=$2; shift 2
  rc=0; e=$(r "$@" 2>&1) || rc=$?
  [ "$rc" = "$want" ] && echo "$e" | grep -qF -- "$msg" || fail "'$*': rc $rc: $e"
}
bad 2 "--route: expected HOST[:PORT] (port 1..65535)" route set routed.test --route 127.0.0.1:0
bad 2 "--route: expected HOST[:PORT] (port 1..65535)" route set routed.test --route 127.0.0.1:70000
bad 1 "route.set: port: expected 1..65535 (bad_args)" route set domain=routed.test host=127.0.0.1 port=0
bad 1 "route.set: tls: expected none, opportunistic or required (bad_args)" \
  route set routed.test --route 127.0.0.1:$port --tls maybe
bad 1 "route.set: host is missing (host=NAME or IP address) (bad_args)" route set routed.test
bad 1 "route.set: host: expected a host name or IP address (bad_args)" \
  route set domain=routed.test "host=a b"
bad 1 "route.set: domain: expected a domain name (domain=NAME) (bad_args)" \
  route set --route 127.0.0.1:$port
bad 1 "route.del: unknown.test has no route (not_found)" route del unknown.test
bad 2 "--tls needs --route HOST[:PORT]" domain add x.test --tls none
rc=0; e=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" --relay-socket "$rs" \
  route set routed.test --route 127.0.0.1:$port 2>&1) || rc=$?
[ "$rc" = 1 ] && echo "$e" | grep -q "(permission_denied)" || fail "read-only route set: $rc $e"
[ "$(setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" --relay-socket "$rs" --json \
  route list | field '[x["domain"] for x in r]')" = "['file.test']" ] || fail "read-only route list"
[ -e "$work/state/control.json" ] && fail "bad input saved: $(cat "$work/state/control.json")"
[ "$(rr --json audit | field 'len([x for x in r if x["cmd"].startswith("route.")])')" = 0 ] \
  || fail "bad input audited"
grep -q "status=sent" "$work/mail.log" && fail "delivered without a route"
echo "ok: bad route input refused with its reason, nothing changed"

out_set=$(r route set routed.test --route 127.0.0.1:$port --tls none) || fail "route set"
echo "$out_set" | grep -q "^new *127.0.0.1:$port tls=none$" || fail "route set output: $out_set"
[ "$(r --json route list | field '[(x["domain"], x["host"], x["port"], x["tls"], x["source"]) for x in r]')" \
  = "[('file.test', '127.0.0.1', 9, 'none', 'file'), ('routed.test', '127.0.0.1', $port, 'none', 'live')]" ] \
  || fail "route list: $(r --json route list)"
[ "$(r --json queue flush | field 'r["flushed"]')" = 1 ] || fail "queue flush"
wait_for 20 grep -q "to=<tj@routed.test>, relay=127.0.0.1\[127.0.0.1\]:$port.*status=sent" "$work/mail.log" \
  || fail "not delivered to the new route: $(tail -5 "$work/mail.log")"
wait_for 10 grep -rqs "live route body" "$work/sink" || fail "the sink did not get the message"
rr --json audit | $py -c '
import json, os, sys
port = sys.argv[1]
r = json.load(sys.stdin)["result"]
e = [x for x in r if x["cmd"] == "route.set"]
assert len(e) == 1, r
assert e[0]["domain"] == "routed.test" and e[0]["old"] == "none", e
assert e[0]["new"] == "127.0.0.1:%s tls=none" % port and e[0]["uid"] == os.getuid(), e
' "$port" || fail "audit: $(rr --json audit)"
echo "ok: route set live: deferred mail delivered to the new route after queue flush; audited"

r route del file.test >/dev/null || fail "route del of a file route"
stop
start
[ "$(r --json route list | field '[(x["domain"], x["port"], x["source"]) for x in r]')" \
  = "[('routed.test', $port, 'live')]" ] || fail "routes after restart: $(r --json route list)"
printf 'Subject: again\r\n\r\nsecond body\r\n' >"$work/m2.eml"
"$inject" "$work/spool" 1 "$work/m2.eml" alice@sender.test "" tj@routed.test,tj@file.test >/dev/null \
  || fail "inject 2"
wait_for 20 grep -q "to=<tj@file.test>, relay=none.*dsn=4.4.4, status=deferred" "$work/mail.log" \
  || fail "a removed file route still used: $(tail -5 "$work/mail.log")"
sent_routed() { [ "$(grep -c "to=<tj@routed.test>, relay=127.0.0.1.*status=sent" "$work/mail.log")" = 2 ]; }
wait_for 20 sent_routed || fail "the restarted relay does not use the live route: $(tail -5 "$work/mail.log")"
r route del routed.test >/dev/null || fail "route del"
r route set file.test --route 127.0.0.1:9 --tls none >/dev/null || fail "route set back"
[ "$(r --json route list | field '[(x["domain"], x["source"]) for x in r]')" = "[('file.test', 'live')]" ] \
  || fail "route list after del: $(r --json route list)"
stop
echo "ok: live routes and a removed file route survive a restart"

# domain add/del/list: the edge (a stand-in that records requests and
# refuses bad.test) and the relay.
es=$work/edge.sock
$py - "$es" "$work/edge.req" <<'PY' &
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)
log = open(sys.argv[2], "a", buffering=1)
for _ in range(50):
    c, _a = s.accept(); f = c.makefile("rwb")
    q = json.loads(f.readline()); log.write(json.dumps([q["cmd"], q.get("args")]) + "\n")
    d = (q.get("args") or {}).get("domain")
    if d == "bad.test" or (q["cmd"] == "domain.del" and d == "gone.test"):
        rep = {"v": 1, "id": q["id"], "ok": False,
               "error": {"code": "not_found" if d == "gone.test" else "bad_args", "message": "edge says no"}}
    elif q["cmd"] == "domain.list":
        rep = {"v": 1, "id": q["id"], "ok": True, "result": [
            {"domain": "new.test", "max_size": 0, "route": None},
            {"domain": "file.test", "max_size": 0, "route": "127.0.0.1:9 tls=none"}]}
    else:
        rep = {"v": 1, "id": q["id"], "ok": True, "result": None}
    f.write((json.dumps(rep) + "\n").encode()); f.flush(); c.close()
PY
epid=$!
wait_for 10 test -S "$es" || fail "stand-in edge did not start"
start
export MXEDGE_CONTROL=$es
r domain add new.test --route 127.0.0.1:2525 --tls required >/dev/null || fail "domain add --route"
grep -q '^\["domain.add", {"domain": "new.test"}\]$' "$work/edge.req" || fail "edge: $(cat "$work/edge.req")"
[ "$(r --json route list | field '[(x["domain"], x["port"], x["tls"]) for x in r if x["domain"] == "new.test"]')" \
  = "[('new.test', 2525, 'required')]" ] || fail "route of new.test: $(r --json route list)"
[ "$(r --json domain list | field '[(x["domain"], x["route"]) for x in r]')" \
  = "[('new.test', '127.0.0.1:2525 tls=required'), ('file.test', '127.0.0.1:9 tls=none')]" ] \
  || fail "domain list: $(r --json domain list)"
bad 1 "domain: edge says no (bad_args)" domain add bad.test --route 127.0.0.1:2525
r --json route list | field '[x["domain"] for x in r]' | grep -q "bad.test" \
  && fail "a route kept for a domain the edge refused"
bad 2 "--route: expected HOST[:PORT] (port 1..65535)" domain add other.test --route 127.0.0.1:x
grep -q other.test "$work/edge.req" && fail "bad --route reached the edge"
bad 1 "edge says no (not_found)" domain del gone.test
r domain del new.test >/dev/null || fail "domain del"
grep -q '^\["domain.del", {"domain": "new.test"}\]$' "$work/edge.req" || fail "edge del: $(cat "$work/edge.req")"
r --json route list | field '[x["domain"] for x in r]' | grep -q "new.test" && fail "route kept after domain del"
rr --json audit | $py -c '
import json, sys
r = json.load(sys.stdin)["result"]
e = [(x["cmd"], x["domain"], x["new"]) for x in r if x["cmd"].startswith("route.") and x["domain"] in ("new.test", "bad.test")]
assert e == [("route.set", "new.test", "127.0.0.1:2525 tls=required"), ("route.set", "bad.test", "127.0.0.1:2525 tls=opportunistic"),
             ("route.del", "bad.test", "none"), ("route.del", "new.test", "none")], e
' || fail "audit of domain add/del: $(rr --json audit)"
stop
kill -TERM "$epid" 2>/dev/null; wait "$epid" 2>/dev/null || true; epid=
echo "ok: domain add --route / del / list reach the edge and the relay; a refused domain leaves no route"
