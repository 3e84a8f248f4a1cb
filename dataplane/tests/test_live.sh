#!/usr/bin/env bash
# Live configuration on the edge's control socket (MODE kernel: --io=kernel;
# tap: the DPDK dataplane on net_tap). An operator changes knobs and lists
# while a session is open (it survives; new sessions get the new limit),
# bulk-loads lists, reloads the YAML file (a broken one changes nothing and
# names FILE:LINE; SIGHUP too), reads the audit log, and every change
# survives a restart, except a TTL entry that expired meanwhile. A read-only
# peer is refused every admin command; bad values get bad_args.
#   test_live.sh MXEDGE MXEDGECTL MODE
set -euo pipefail
mxedge=$1 ctl=$2 mode=${3:-kernel}
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
py=/usr/bin/python3
client=$here/live_client.py
work=$(mktemp -d /tmp/mxt-live.XXXXXX)
chmod 755 "$work"
sock=$work/control.sock state=$work/state log=$work/log.0 runs=0
fail() { echo "FAIL[$mode]: $*" >&2; tail -20 "$log" >&2 || true; exit 1; }
c() { "$ctl" --socket "$sock" "$@"; }
cj() { "$ctl" --socket "$sock" --json "$@"; }
# jq-like: cj CMD... | field 'python expression on r (the result)'
field() { $py -c "import json,sys; r=json.load(sys.stdin)['result']; print($1)"; }
# expect_err CODE TEXT cmd...: exit 1, the error code and a clear message
expect_err() {
  local code=$1 text=$2 out rc=0; shift 2
  out=$(c "$@" 2>&1) || rc=$?
  [ "$rc" -eq 1 ] && echo "$out" | grep -qF -- "($code)" && echo "$out" | grep -qF -- "$text" \
    || fail "$*: want $code \"$text\", got rc=$rc: $out"
}

netns_init
trap 'netns_cleanup; [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT
netns_host edge
netns_host client
if [ "$mode" = kernel ]; then
  netns_link edge client 198.18.0.1/24 198.18.0.2/24
  ioline="io: kernel"
else
  tap="t$$live"; tap=${tap:0:15}
  ioline="port: tap:$tap"
fi

# write_yaml HOSTNAME SESSION_MAX_S MAX_MESSAGE_SIZE EXTRA_DOMAIN EXTRA_BLOCK
write_yaml() {
  cat >"$work/edge.yaml" <<EOC
hostname: $1
$ioline
listen:
  - 198.18.0.1:25
spool:
  dir: $work/spool
state:
  dir: $state
control:
  socket: $sock
limits:
  max_sessions_per_client: 3
  session_max_s: $2
  max_message_size: $3
domains:
  live.test:
    max_size: 5M
  old.test:
$4
blocklist:
  - 198.18.66.0/24
  - 198.18.67.0/24
$5
EOC
}

start_edge() {
  runs=$((runs + 1)); log=$work/log.$runs
  netns_spawn edge "$mxedge" --config "$work/edge.yaml" --duration 280 >"$log" 2>&1
  pid=$NETNS_LAST_PID
  for _ in $(seq 600); do
    grep -q "running on" "$log" && [ -S "$sock" ] && break
    kill -0 "$pid" 2>/dev/null || fail "mxedge exited early"
    sleep 0.1
  done
  grep -q "running on" "$log" || fail "mxedge did not start in 60 s"
  if [ "$mode" = tap ]; then
    # The tap's kernel side becomes the client's interface (again after a
    # restart: the PMD creates a new tap).
    ip -n "$(netns_name edge)" link set dev "$tap" netns "$(netns_name client)"
    netns_exec client ip addr add 198.18.0.2/24 dev "$tap"
    netns_exec client ip link set "$tap" up
    for _ in $(seq 20); do
      netns_exec client ping -c1 -W1 198.18.0.1 >/dev/null 2>&1 && break
    done
  fi
}
stop_edge() {
  kill -TERM "$pid"
  wait "$pid" || fail "exit status after SIGTERM"
}
probe() { netns_exec client timeout 30 $py "$client" probe 198.18.0.1; }
# hold DIR: a session that stays open until DIR/go appears
hold() {
  mkdir -p "$1"
  netns_spawn client $py "$client" hold 198.18.0.1 "$1"
  for _ in $(seq 300); do [ -s "$1/ready" ] && break; sleep 0.1; done
  grep -q "^220" "$1/ready" 2>/dev/null || fail "held session not greeted: $(cat "$1/ready" 2>&1)"
}

write_yaml mx.live.test 600 2000000 "" ""
start_edge
[ "$(cj config.get key=limits.max_sessions_per_client | field 'r["value"], r["live"], r["source"]')" \
  = "3 True file" ] || fail "config.get: $(c config.get)"
c config.get | grep -Eq "^limits.max_message_size +2000000 +true" || fail "config.get table: $(c config.get)"
c config.get | grep -Eq "^limits.max_sessions +[0-9]+ +false" || fail "config.get table: $(c config.get)"
# two words work as well as one: mxedgectl config get = config.get
c config get key=limits.max_sessions_per_client | grep -Eq "^value +3$" || fail "config get: $(c config get key=limits.max_sessions_per_client)"
echo "ok[$mode]: config.get shows the file's knobs, live or restart-only"

# --- a knob changes while a session is open ---------------------------------
hold "$work/h1"
hold "$work/h2"
out=$(cj config.set key=limits.max_sessions_per_client value=2 | field 'r["old"], r["new"]')
[ "$out" = "3 2" ] || fail "config.set: $out"
# Published through RCU: a worker sees it within one loop iteration.
for _ in $(seq 50); do
  g=$(probe) || true
  case $g in 421\ 4.7.0*) break ;; esac
  sleep 0.1
done
case $g in 421\ 4.7.0*"too many connections"*) ;; *) fail "new session over the new limit got: $g" ;; esac
touch "$work/h1/go" "$work/h2/go"
for _ in $(seq 100); do [ -s "$work/h1/noop" ] && [ -s "$work/h2/noop" ] && break; sleep 0.1; done
grep -q "^250" "$work/h1/noop" && grep -q "^250" "$work/h2/noop" \
  || fail "open sessions did not survive: $(cat "$work"/h?/noop 2>&1)"
c config.set key=limits.max_sessions_per_client value=0 >/dev/null || fail "config.set 0"
for _ in $(seq 50); do g=$(probe) || true; case $g in 220*) break ;; esac; sleep 0.1; done
case $g in 220*) ;; *) fail "limit off: new session got $g" ;; esac
echo "ok[$mode]: config.set applies to new sessions; open ones survive"

# --- bad values get bad_args, restart-only keys say so ----------------------
expect_err bad_args "limits.session_max_s: expected a whole number 0..864000" \
  config.set key=limits.session_max_s value=-1
expect_err bad_args "limits.session_max_s: expected a whole number 0..864000" \
  config.set key=limits.session_max_s value=864001
expect_err bad_args "limits.session_max_s: expected a whole number" \
  config.set key=limits.session_max_s value=soon
expect_err bad_args 'unknown key "limits.sessions"' config.set key=limits.sessions value=1
expect_err bad_args '"key" is required' config.set value=1
expect_err restart_required "limits.max_sessions cannot change while running" \
  config.set key=limits.max_sessions value=4096
expect_err bad_args "log.level: expected error, warning, info or debug" log level loud
expect_err bad_args 'unknown key "nope"' config.get key=nope
[ "$(cj config.get key=limits.session_max_s | field 'r["value"]')" = 600 ] || fail "bad values changed a knob"
echo "ok[$mode]: bad values refused with bad_args naming the key and range"

# --- SMTP limits and timeouts change live -----------------------------------
# wait_ready DIR: a client of live_client.py wrote DIR/ready
wait_ready() {
  for _ in $(seq 300); do [ -s "$1/ready" ] && break; sleep 0.1; done
  grep -q "^220" "$1/ready" 2>/dev/null || fail "client not greeted: $(cat "$1/ready" 2>&1)"
}
mkdir -p "$work/tx"
netns_spawn client $py "$client" tx 198.18.0.1 "$work/tx" 8000
wait_ready "$work/tx"
grep -q "^354" "$work/tx/ready" || fail "transaction not opened: $(cat "$work/tx/ready")"
c config.set key=limits.max_message_size value=4096 >/dev/null || fail "config.set max_message_size"
c config.set key=limits.max_recipients value=1 >/dev/null || fail "config.set max_recipients"
sleep 0.5 # a worker applies knobs within one loop iteration
touch "$work/tx/go"
for _ in $(seq 300); do [ -s "$work/tx/result" ] && break; sleep 0.1; done
mapfile -t r <"$work/tx/result" || true
# the open transaction finishes under the limits it started with
case ${r[0]:-} in 250\ *) ;; *) fail "open transaction: ${r[*]:-no result}" ;; esac
[ "${r[1]:-}" = "SIZE 4096" ] || fail "EHLO after the change: ${r[1]:-}"
case "${r[2]:-}|${r[3]:-}|${r[4]:-}|${r[5]:-}|${r[6]:-}" in
  250*"|"250*"|452 4.5.3"*"|354"*"|552 5.3.4"*) ;;
  *) fail "next transaction under the new limits: ${r[*]}" ;;
esac
mkdir -p "$work/idle"
netns_spawn client $py "$client" idle 198.18.0.1 "$work/idle"
wait_ready "$work/idle"
c config.set key=timeouts.command_s value=2 >/dev/null || fail "config.set timeouts.command_s"
for _ in $(seq 200); do [ -s "$work/idle/idle" ] && break; sleep 0.1; done
mapfile -t r <"$work/idle/idle" || true
case ${r[0]:-} in 421\ 4.4.2*) ;; *) fail "idle session after command_s=2: ${r[*]:-nothing in 20 s}" ;; esac
awk -v t="${r[1]:-0}" 'BEGIN { exit !(t >= 1.5 && t < 15) }' || fail "timed out after ${r[1]:-?} s"
[ "$(cj config.get key=timeouts.command_s | field 'r["value"], r["live"], r["source"]')" = "2 True operator" ] \
  || fail "config.get timeouts.command_s: $(c config.get key=timeouts.command_s)"
# back to the file's values: the overrides go
for kv in limits.max_message_size=2000000 limits.max_recipients=100 timeouts.command_s=300; do
  c config.set key=${kv%%=*} value=${kv#*=} >/dev/null || fail "config.set $kv"
done
[ "$(cj config.get key=timeouts.command_s | field 'r["source"]')" = file ] || fail "override not dropped"
echo "ok[$mode]: size/recipient limits apply from the next MAIL, timeouts at once; open transaction kept"

# --- log level: what the diagnostic log writes ------------------------------
[ "$(c log level)" = "level  info" ] || fail "log level: $(c log level)"
c status >/dev/null
grep -q "debug: control: status" "$log" && fail "a debug line at info"
[ "$(cj log level debug | field 'r["old"], r["new"]')" = "info debug" ] || fail "log level debug"
c status >/dev/null
grep -q "debug: control: status from uid $(id -u)" "$log" || fail "no debug line at debug: $(tail -5 "$log")"
c log level warning >/dev/null || fail "log level warning"
n=$(grep -c "debug: control:" "$log")
c status >/dev/null
c config.set key=limits.session_max_s value=600 >/dev/null
[ "$(grep -c "debug: control:" "$log")" = "$n" ] || fail "debug lines at warning"
grep -q "config.set limits.session_max_s" "$log" && fail "an info line at warning"
[ "$(cj config.get key=log.level | field 'r["value"], r["source"]')" = "warning operator" ] \
  || fail "config.get log.level: $(c config.get key=log.level)"
echo "ok[$mode]: log level changes what is written (debug only at debug, info not at warning)"

# --- lists and domains -----------------------------------------------------
c blocklist.add prefix=198.18.9.0/24 ttl=3600 >/dev/null || fail "blocklist.add"
c blocklist.del prefix=198.18.66.0/24 >/dev/null || fail "blocklist.del of a file entry"
c domain.add domain=new.test max_size=1000 >/dev/null || fail "domain.add"
c domain.del domain=old.test >/dev/null || fail "domain.del of a file domain"
printf '# feed\n198.18.70.0/24\n198.18.71.0/24 # trailing comment\n\n2001:db8:70::/48\n' >"$work/good.txt"
printf '198.18.72.0/24\n198.18.73.0/24\n198.18.1.1/24\n# ok\nnot-an-address\n' >"$work/bad.txt"
n0=$(cj status | field 'r["blocklist_entries"]')
expect_err bad_args "bad.txt:3: \"198.18.1.1/24\" is not an address or prefix" \
  blocklist.load file="$work/bad.txt"
expect_err bad_args "2 bad lines (3, 5), nothing loaded" blocklist.load file="$work/bad.txt"
expect_err bad_args "cannot load $work/none.txt" blocklist.load file="$work/none.txt"
[ "$(cj status | field 'r["blocklist_entries"]')" = "$n0" ] || fail "a bad file changed the list"
[ "$(cj blocklist.load file="$work/good.txt" | field 'r["loaded"], r["entries"]')" = "3 $((n0 + 3))" ] \
  || fail "blocklist.load: $(c blocklist.list)"
c blocklist.list | grep -q "2001:db8:70::/48 *-$" || fail "loaded v6 entry missing"
printf '198.18.0.99\n' >"$work/allow.txt"
c allowlist.add prefix=198.18.0.98 >/dev/null || fail "allowlist.add"
c allowlist.load file="$work/allow.txt" replace=true >/dev/null || fail "allowlist.load replace"
[ "$(cj allowlist.list | field '[e["prefix"] for e in r]')" = "['198.18.0.99/32']" ] \
  || fail "replace=true left: $(c allowlist.list)"
echo "ok[$mode]: blocklist.load/allowlist.load all or nothing, bad lines named"

# --- audit: who, what, old, new --------------------------------------------
cj audit | $py -c '
import json, os, sys
r = json.load(sys.stdin)["result"]
s = [e for e in r if e["cmd"] == "config.set"][0]
assert s["uid"] == os.getuid() and s["pid"] > 0, s
assert s["target"] == "limits.max_sessions_per_client" and s["old"] == 3 and s["new"] == 2, s
assert s["time"].endswith("Z") and s["time"][10] == "T", s
d = [e for e in r if e["cmd"] == "blocklist.del"][0]
assert d["target"] == "198.18.66.0/24" and d["old"] == {"expires_in": None} and d["new"] is None, d
l = [e for e in r if e["cmd"] == "blocklist.load"][0]
assert l["new"]["loaded"] == 3, l
assert not [e for e in r if e["cmd"] == "config.get"], "read commands are not changes"
' || fail "audit: $(c --json audit)"
c audit | head -1 | grep -Eq "^TIME +UID +PID +CMD +TARGET +OLD +NEW" || fail "audit table: $(c audit)"
[ "$(wc -l <"$state/audit.log")" -ge 9 ] || fail "audit.log: $(cat "$state/audit.log")"
echo "ok[$mode]: audit shows who, what, old and new"

# --- a read-only peer may look, never change --------------------------------
chmod 666 "$sock"
ro() { setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" --socket "$sock" "$@"; }
ro config.get >/dev/null || fail "read-only config.get"
ro log level >/dev/null || fail "read-only log level"
rc=0; out=$(ro log level debug 2>&1) || rc=$?
[ "$rc" -eq 1 ] && echo "$out" | grep -q "(permission_denied)" || fail "read-only log level debug: rc=$rc $out"
ro audit >/dev/null || fail "read-only audit"
admin=$(cj help | field '" ".join(e["command"] for e in r if e["role"] == "admin")')
[ "$(echo $admin | wc -w)" -eq 10 ] || fail "admin commands: $admin"
for cmd in $admin; do
  rc=0; out=$(ro "$cmd" prefix=198.18.5.0/24 key=limits.session_max_s value=1 \
    file="$work/good.txt" domain=x.test 2>&1) || rc=$?
  [ "$rc" -eq 1 ] && echo "$out" | grep -q "(permission_denied)" || fail "read-only $cmd: rc=$rc $out"
done
[ "$(cj config.get key=limits.session_max_s | field 'r["value"]')" = 600 ] || fail "read-only changed a knob"
echo "ok[$mode]: read-only peer denied all of: $admin"

# --- config.reload -----------------------------------------------------------
cp "$work/edge.yaml" "$work/good.yaml"
printf 'limits:\n  session_max_s: 5\n  max_sesions: 3\n' >"$work/edge.yaml"
expect_err bad_config "edge.yaml:3:3: unknown key \"max_sesions\" in limits" config.reload
write_yaml mx.live.test 120 2000000 "" "  - 198.18.1.1/24"
line=$(grep -n "198.18.1.1/24" "$work/edge.yaml" | cut -d: -f1)
expect_err bad_config "edge.yaml:$line: \"198.18.1.1/24\" is not an address or prefix" config.reload
expect_err bad_config "nothing changed" config.reload
[ "$(cj config.get key=limits.session_max_s | field 'r["value"]')" = 600 ] || fail "broken reload changed a knob"
c blocklist.list | grep -q "198.18.1.0" && fail "broken reload changed the blocklist"
write_yaml mx.renamed.test 120 3000000 "  reload.test:" "  - 198.18.68.0/24"
out=$(cj config.reload) || fail "config.reload: $out"
echo "$out" | $py -c '
import json, sys
r = json.load(sys.stdin)["result"]
assert r["changed"] == [{"key": "limits.session_max_s", "old": 600, "new": 120},
                        {"key": "limits.max_message_size", "old": 2000000, "new": 3000000}], r
assert r["restart_required"] == ["hostname"], r
' || fail "reload result: $out"
[ "$(cj config.get key=limits.session_max_s | field 'r["value"], r["source"]')" = "120 file" ] \
  || fail "reload did not apply session_max_s"
# The operator's changes stay on top of the new file.
[ "$(cj config.get key=limits.max_sessions_per_client | field 'r["value"], r["source"]')" = "0 operator" ] \
  || fail "reload lost an operator knob"
doms=$(cj domain.list | field '" ".join(sorted(e["domain"] for e in r))')
[ "$doms" = "live.test new.test reload.test" ] || fail "domains after reload: $doms"
bl=$(c blocklist.list)
echo "$bl" | grep -q "198.18.68.0/24" || fail "reload: new file entry missing"
echo "$bl" | grep -q "198.18.66.0/24" && fail "reload: an entry the operator removed came back"
echo "$bl" | grep -q "198.18.70.0/24" || fail "reload: loaded entry lost"
echo "ok[$mode]: config.reload: broken file names FILE:LINE and changes nothing; good one applied"

sed -i 's/session_max_s: 120/session_max_s: 90/' "$work/edge.yaml"
kill -HUP "$pid"
for _ in $(seq 50); do
  [ "$(cj config.get key=limits.session_max_s | field 'r["value"]')" = 90 ] && break; sleep 0.1
done
[ "$(cj config.get key=limits.session_max_s | field 'r["value"]')" = 90 ] || fail "SIGHUP did not reload"
grep -q "SIGHUP: reloaded $work/edge.yaml: 1 changed" "$log" || fail "no SIGHUP line"
cj audit | $py -c '
import json, sys
r = json.load(sys.stdin)["result"]
h = [e for e in r if e["cmd"] == "config.reload" and e["uid"] == -1]
assert h and h[-1]["new"]["knobs"] == {"limits.session_max_s": 90}, r[-1]
' || fail "SIGHUP reload not audited: $(c audit limit=2)"
echo "ok[$mode]: SIGHUP reloads the file"

# --- restart: everything restored, an expired TTL entry is not -------------
c blocklist.add prefix=198.18.8.0/24 ttl=2 >/dev/null || fail "blocklist.add ttl=2"
stop_edge
$py -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["version"] == 1' "$state/state.json" \
  || fail "state.json: $(cat "$state/state.json")"
grep -q "198.18.8.0/24" "$state/state.json" || fail "TTL entry not saved"
sleep 3
start_edge
[ "$(cj config.get key=limits.max_sessions_per_client | field 'r["value"], r["source"]')" = "0 operator" ] \
  || fail "operator knob not restored: $(c config.get)"
[ "$(cj config.get key=limits.session_max_s | field 'r["value"]')" = 90 ] || fail "file knob after restart"
[ "$(cj log level | field 'r["level"]')" = warning ] || fail "log level after restart: $(c log level)"
bl=$(c blocklist.list)
echo "$bl" | grep -Eq "198.18.9.0/24 +3[0-9]{3}$" || fail "TTL entry not restored with its TTL: $bl"
echo "$bl" | grep -q "198.18.8.0/24" && fail "an expired TTL entry was restored: $bl"
echo "$bl" | grep -q "198.18.66.0/24" && fail "a removed file entry came back: $bl"
for p in 198.18.67.0/24 198.18.68.0/24 198.18.70.0/24 198.18.71.0/24 2001:db8:70::/48; do
  echo "$bl" | grep -q "$p" || fail "$p not restored: $bl"
done
doms=$(cj domain.list | field '" ".join("%s=%d" % (e["domain"], e["max_size"]) for e in sorted(r, key=lambda e: e["domain"]))')
[ "$doms" = "live.test=5242880 new.test=1000 reload.test=0" ] || fail "domains after restart: $doms"
[ "$(cj allowlist.list | field '[e["prefix"] for e in r]')" = "['198.18.0.99/32']" ] || fail "allowlist after restart"
[ "$(cj audit limit=1000 | field 'len(r)')" -ge 12 ] || fail "audit history lost at restart"
# The restored limit applies: 0 = off.
g=$(probe) || true
case $g in 220*) ;; *) fail "after restart a session got: $g" ;; esac
echo "ok[$mode]: restart restores every change; the expired TTL entry stays gone"

if [ "$mode" = kernel ]; then
  stop_edge
  cp "$state/state.json" "$work/state.good"
  printf '{"version": 1,\n "knobs": {"limits.session_max_s": }\n}\n' >"$state/state.json"
  rc=0; out=$(timeout 60 "$mxedge" --config "$work/edge.yaml" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] && echo "$out" | grep -q "$state/state.json:2: " || fail "corrupt state: rc=$rc $out"
  printf '{"version": 1, "knobs": {"limits.max_sessions": 5000}}\n' >"$state/state.json"
  rc=0; out=$(timeout 60 "$mxedge" --config "$work/edge.yaml" 2>&1) || rc=$?
  [ "$rc" -ne 0 ] && echo "$out" | grep -q "knobs.limits.max_sessions: not a live knob" \
    || fail "restart-only knob in state: rc=$rc $out"
  echo "ok[$mode]: a damaged state file stops the start with its position"

  # No state.dir in the file: changes go to SPOOL/state and survive a
  # restart all the same.
  write_yaml mx.live.test 600 2000000 "" ""
  sed -i '/^state:$/,+1d' "$work/edge.yaml"
  grep -q "^state:" "$work/edge.yaml" && fail "state: still in the file"
  start_edge
  c config.set key=limits.session_max_s value=33 >/dev/null || fail "config.set without state.dir"
  stop_edge
  [ -s "$work/spool/state/state.json" ] || fail "no SPOOL/state/state.json: $(ls -R "$work/spool")"
  start_edge
  [ "$(cj config.get key=limits.session_max_s | field 'r["value"], r["source"]')" = "33 operator" ] \
    || fail "default state dir: change lost at restart: $(c config.get key=limits.session_max_s)"
  stop_edge
  echo "ok[$mode]: without state.dir, changes survive a restart (SPOOL/state)"
else
  stop_edge
fi
