#!/usr/bin/env bash
# The edge's reception log (dataplane/log/elog.h) in both I/O modes
# (MODE kernel: --io=kernel; tap: the DPDK dataplane on net_tap):
#  1. one session produces exactly the Postfix lines (connect, client=,
#     message-id=, disconnect with command counts) with the RFC 3339
#     prefix; a 550 RCPT, a blocklisted client and a client that leaves
#     mid-transaction produce the reject / lost connection lines;
#  2. mxedge-control relays the accepted mail to smtp-sink, and pflogsumm
#     over the edge log + the relay log counts received, delivered and
#     rejected correctly;
#  3. SIGHUP reopens the file after logrotate moved it;
#  4. with the log stuck (a FIFO nobody reads), a flood of rejects still
#     gets answered and the mail still gets its 250: the lines are dropped
#     and counted in the stats (log_dropped), never waited for.
#   test_log.sh MXEDGE MXEDGECTL MXEDGE-CONTROL MODE
set -euo pipefail
mxedge=$1 ctl=$2 control=$3 mode=${4:-kernel}
here=$(dirname "$(readlink -f "$0")")
source "$here/../../tests/lib/netns.sh"
py=/usr/bin/python3
work=$(mktemp -d /tmp/mxt-log.XXXXXX)
chmod 755 "$work"
out="$work/edge.out" sock="$work/control.sock" spool="$work/spool"
elog="$work/edge.log" rlog="$work/relay.log"
fail() {
  echo "FAIL[$mode]: $*" >&2
  for f in "$out" "$elog" "$rlog" "$work/control.out"; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -25 "$f" >&2; }
  done
  exit 1
}
wait_for() {  # wait_for SECONDS CMD...: polls CMD (bounded) until it succeeds
  local end=$(( $(date +%s) + $1 )); shift
  while [ "$(date +%s)" -lt "$end" ]; do "$@" && return 0; sleep 0.1; done
  return 1
}
count() { grep -c -- "$1" "$2" 2>/dev/null || true; }
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; }
c() { "$ctl" --socket "$sock" "$@"; }
command -v pflogsumm >/dev/null || { echo "SKIP: pflogsumm (Debian package pflogsumm) missing"; exit 77; }
command -v smtp-sink >/dev/null || { echo "SKIP: smtp-sink (Debian package postfix) missing"; exit 77; }

netns_init
netns_host edge
netns_host client
netns_host mx
netns_link edge mx 198.18.70.1/24 198.18.70.2/24
if [ "$mode" = kernel ]; then
  netns_link edge client 198.18.0.1/24 198.18.0.2/24
  cif=$(netns_ifname client edge)
  io=(--io=kernel)
else
  # DPDK's tap: its kernel side becomes the client's interface below.
  cif="t$$log"
  cif=${cif:0:15}
  io=(--port "tap:$cif")
fi

cat >"$work/edge.yaml" <<EOF
hostname: mx.edge.test
spool:
  dir: $spool
limits:
  max_sessions_per_client: 0
  max_errors: 1000
blocklist:
  - 198.18.0.99/32
relay:
  state_dir: $work/state
  log_file: $rlog
  socket: $work/relay.sock
domains:
  customer.test:
    route: { host: 198.18.70.2, port: 25, tls: none }
EOF

start_edge() {  # start_edge LOGFILE
  netns_spawn edge "$mxedge" "${io[@]}" --config "$work/edge.yaml" --addr 198.18.0.1/24 \
    --smtp-port 25 --control "$sock" --log-file "$1" --duration 250 >"$out" 2>&1
  epid=$NETNS_LAST_PID
  for _ in $(seq 300); do
    grep -q "running on" "$out" && [ -S "$sock" ] && return 0
    kill -0 "$epid" 2>/dev/null || fail "mxedge exited early"
    sleep 0.1
  done
  fail "mxedge did not start in 30 s"
}
stop_edge() {
  kill -TERM "$epid"
  wait_for 30 sh -c "! kill -0 $epid 2>/dev/null" || fail "mxedge did not stop on SIGTERM"
  wait "$epid" 2>/dev/null || true
}
# The client's addresses: .2, and .99 on the blocklist. DPDK creates its
# tap anew at every start; its kernel side moves to the client.
attach_client() {
  if [ "$mode" != kernel ]; then
    ip -n "$(netns_name edge)" link set dev "$cif" netns "$(netns_name client)"
    netns_exec client ip addr add 198.18.0.2/24 dev "$cif"
    netns_exec client ip link set "$cif" up
  fi
  netns_exec client ip addr add 198.18.0.99/24 dev "$cif" 2>/dev/null || true
  for _ in $(seq 20); do   # ARP warm-up (DPDK's stack) on a loaded machine
    netns_exec client ping -c1 -W1 198.18.0.1 >/dev/null 2>&1 && break
  done
}
start_edge "$elog"
attach_client

cat >"$work/client.py" <<'EOF'
import smtplib, socket, sys
what = sys.argv[1]
msg = (b'From: <a@client.test>\r\nTo: <tj@customer.test>\r\nSubject: log\r\n'
       b'Message-ID: <%s@client.test>\r\n\r\nHello.\r\n')
if what in ('ok', 'one-bad'):
    s = smtplib.SMTP('198.18.0.1', 25, local_hostname='client.test', timeout=30)
    s.ehlo()
    s.mail('a@client.test')
    if what == 'one-bad':
        code, _ = s.rcpt('nobody@elsewhere.test')
        assert code == 550, code
    code, _ = s.rcpt('tj@customer.test')
    assert code == 250, code
    code, resp = s.data(msg % sys.argv[2].encode())
    assert code == 250, (code, resp)
    print(resp.decode().split()[-1])
    s.quit()
elif what == 'blocked':
    try:
        smtplib.SMTP('198.18.0.1', 25, local_hostname='client.test', timeout=30,
                     source_address=('198.18.0.99', 0))
        sys.exit('a blocklisted client was served')
    except smtplib.SMTPConnectError as e:
        assert e.smtp_code == 554, e
elif what == 'lost':
    c = socket.create_connection(('198.18.0.1', 25), timeout=30)
    f = c.makefile('rb')
    f.readline()
    c.sendall(b'EHLO lost.test\r\nMAIL FROM:<b@client.test>\r\n')
    while not f.readline().startswith(b'250 '):   # EHLO's last line
        pass
    assert f.readline().startswith(b'250'), 'MAIL'
    c.close()
elif what == 'flood':
    # N pipelined RCPTs to a domain we do not accept (550 each), then a
    # message: every reply must come, and the message must be queued.
    n = int(sys.argv[2])
    c = socket.create_connection(('198.18.0.1', 25), timeout=60)
    f = c.makefile('rb')
    assert f.readline().startswith(b'220')
    c.sendall(b'EHLO flood.test\r\nMAIL FROM:<f@client.test>\r\n' +
              b''.join(b'RCPT TO:<x%d@elsewhere.test>\r\n' % i for i in range(n)) +
              b'RCPT TO:<tj@customer.test>\r\nDATA\r\n')
    while not f.readline().startswith(b'250 '):
        pass
    assert f.readline().startswith(b'250'), 'MAIL'
    for i in range(n):
        line = f.readline()
        assert line.startswith(b'550 5.1.2'), (i, line)
    assert f.readline().startswith(b'250'), 'RCPT'
    assert f.readline().startswith(b'354'), 'DATA'
    c.sendall(msg % b'flood' + b'.\r\nQUIT\r\n')
    line = f.readline()
    assert line.startswith(b'250 2.0.0 Ok: queued as'), line
    assert f.readline().startswith(b'221'), 'QUIT'
EOF
client() { netns_exec client timeout 90 $py "$work/client.py" "$@"; }

# ---- 1. exactly the lines of one session ---------------------------------
qid1=$(client ok log-1) || fail "delivery failed: $qid1"
wait_for 10 grep -q "disconnect from unknown\[198.18.0.2\]" "$elog" || fail "no disconnect line"
sed -E 's/^[^ ]+ [^ ]+ (mxedge\/[a-z]+)\[[0-9]+\]: /\1: /' "$elog" >"$work/lines"
cat >"$work/want" <<EOF
mxedge/smtpd: connect from unknown[198.18.0.2]
mxedge/smtpd: $qid1: client=unknown[198.18.0.2]
mxedge/cleanup: $qid1: message-id=<log-1@client.test>
mxedge/smtpd: disconnect from unknown[198.18.0.2] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
EOF
diff "$work/want" "$work/lines" >&2 || fail "the session's log lines differ (above)"
# The prefix is RFC 3339 with a colon in the offset (pflogsumm needs it),
# the configured host name and the process id.
bad=$(grep -vcE "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}[+-][0-9]{2}:[0-9]{2} mx\.edge\.test mxedge/(smtpd|cleanup)\[$epid\]: " "$elog" || true)
[ "$bad" = 0 ] || fail "$bad lines without the expected prefix: $(head -2 "$elog")"
echo "ok[$mode]: one session, exactly its four Postfix lines"

qid2=$(client one-bad log-2) || fail "second delivery failed: $qid2"
client blocked || fail "blocked client"
client lost || fail "lost client"
wait_for 10 at_least "disconnect from unknown\[198.18.0.99\]" "$elog" 1 || fail "no disconnect of the blocked client"
wait_for 10 at_least "disconnect from unknown\[198.18.0.2\]" "$elog" 3 || fail "no disconnect of the lost client"
grep -q "mxedge/smtpd\[$epid\]: NOQUEUE: reject: RCPT from unknown\[198.18.0.2\]: 550 5.1.2 <nobody@elsewhere.test>: Recipient domain not accepted here; from=<a@client.test> to=<nobody@elsewhere.test> proto=ESMTP helo=<client.test>$" "$elog" \
  || fail "no RCPT reject line"
grep -q "disconnect from unknown\[198.18.0.2\] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6$" "$elog" \
  || fail "no disconnect line with the failed RCPT counted"
grep -q "NOQUEUE: reject: CONNECT from unknown\[198.18.0.99\]: 554 5.7.1 Client host rejected: access denied; proto=SMTP$" "$elog" \
  || fail "no CONNECT reject line"
grep -q "lost connection after MAIL from unknown\[198.18.0.2\]$" "$elog" || fail "no lost connection line"
grep -q "disconnect from unknown\[198.18.0.2\] ehlo=1 mail=1 commands=2$" "$elog" || fail "no disconnect line of the lost client"
echo "ok[$mode]: reject, blocklisted and lost-connection lines"

# ---- 2. the relay delivers; pflogsumm over both logs ---------------------
netns_spawn mx smtp-sink -u nobody 198.18.70.2:25 64 >"$work/sink.out" 2>&1
wait_for 10 sh -c "nsenter --net=/run/netns/$(netns_name mx) ss -ltn | grep -q '198.18.70.2:25 '" \
  || fail "smtp-sink does not listen"
netns_spawn edge "$control" --config "$work/edge.yaml" >"$work/control.out" 2>&1
wait_for 30 at_least "status=sent" "$rlog" 2 || fail "the relay did not deliver both messages"
cat "$elog" "$rlog" >"$work/combined.log"
pflogsumm --syslog-name=mxedge "$work/combined.log" >"$work/pflogsumm.txt" 2>&1 || fail "pflogsumm failed"
summ() { awk -v k="$1" '$2 == k && $1 ~ /^[0-9]+$/ { print $1; exit }' "$work/pflogsumm.txt"; }
[ "$(summ received)" = 2 ] || fail "pflogsumm received=$(summ received), expected 2: $(head -20 "$work/pflogsumm.txt")"
[ "$(summ delivered)" = 2 ] || fail "pflogsumm delivered=$(summ delivered), expected 2"
[ "$(summ rejected)" = 2 ] || fail "pflogsumm rejected=$(summ rejected), expected 2 (RCPT, CONNECT)"
echo "ok[$mode]: pflogsumm over edge + relay log: 2 received, 2 delivered, 2 rejected"

# ---- 3. logrotate: move the file, SIGHUP, new lines go to a new file -----
mv "$elog" "$elog.1"
kill -HUP "$epid"
wait_for 10 test -f "$elog" || fail "SIGHUP did not reopen the log file"
qid3=$(client ok log-3) || fail "delivery after SIGHUP failed: $qid3"
wait_for 10 grep -q "$qid3: message-id=<log-3@client.test>" "$elog" || fail "no line in the reopened file"
grep -q "$qid3" "$elog.1" && fail "a line went to the rotated file"
kill -0 "$epid" || fail "SIGHUP stopped mxedge"
echo "ok[$mode]: SIGHUP reopens the log after logrotate"

# ---- 4. a stuck log drops lines; the edge keeps answering ----------------
stop_edge
mkfifo "$work/fifo"
exec 3<>"$work/fifo"   # a reader that never reads: the pipe fills up
start_edge "$work/fifo"
attach_client
sessions=9 per=900     # 8100 reject lines: more than the ring and the pipe hold
for i in $(seq $sessions); do
  client flood $per || fail "flood session $i was not served"
done
dropped=$(c --json stats | tr -d ' \n' | grep -o '"log_dropped":[0-9]*' | cut -d: -f2 | sort -n | tail -1)
[ "${dropped:-0}" -gt 0 ] || fail "no dropped log lines counted: $(c --json stats)"
[ "$(c --json stats | tr -d ' \n' | grep -o '"messages":[0-9]*' | cut -d: -f2 | sort -n | tail -1)" -ge $sessions ] \
  || fail "not every flood message counted as accepted"
cat <&3 >/dev/null &   # unstick the log: the logger carries on, stop is clean
reader=$!
stop_edge
kill "$reader" 2>/dev/null || true
exec 3>&-
echo "ok[$mode]: stuck log: $sessions x $per rejects answered, $dropped lines dropped and counted"
rm -rf "$work"
