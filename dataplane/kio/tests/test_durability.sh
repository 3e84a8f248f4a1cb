#!/usr/bin/env bash
# Durability order (DESIGN.md): the 250 for a message leaves only after its
# bytes and envelope are synced and the renames are made durable.  Watched
# with strace on a one-worker mxedge-kio: for each message, fdatasync of
# <qid>.eml and <qid>.env, both renames and the spool directory fsync must
# all come before the send() of "250 ... queued as <qid>".
#   test_durability.sh PATH/TO/mxedge-kio
set -euo pipefail
kio=$1
here=$(dirname "$(readlink -f "$0")")
source "$here/../../../tests/lib/netns.sh"
if ! command -v strace >/dev/null; then
  echo "SKIP: strace not installed (Debian package strace)"
  exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }

netns_init
work=$(mktemp -d /tmp/kio-dur.XXXXXX)
trap 'netns_cleanup; rm -rf "$work"' EXIT
mkdir -p "$work/spool"
netns_host edge
netns_spawn edge strace -f -qq -y -s 256 -o "$work/strace.log" \
  -e trace=fdatasync,fsync,renameat,renameat2,sendto,write \
  "$kio" --listen 127.0.0.1:25 --spool "$work/spool" --threads 1 --hostname mx.test \
  >"$work/kio.log" 2>&1
for _ in $(seq 400); do grep -q ready "$work/kio.log" && break; sleep 0.05; done
grep -q ready "$work/kio.log" || fail "mxedge-kio did not start"

netns_exec edge /usr/bin/python3 - "$work/qids" <<'PY'
import smtplib, sys, re
qids = []
with smtplib.SMTP("127.0.0.1", 25, local_hostname="c.example", timeout=30) as s:
    s.ehlo()
    for i in range(3):
        s.mail("a@example.org")
        s.rcpt("b@customer.test")
        code, msg = s.data(b"Subject: %d\r\n\r\nbody\r\n" % i)
        assert code == 250, (code, msg)
        qids.append(re.search(rb"queued as (\w+)", msg).group(1).decode())
open(sys.argv[1], "w").write("\n".join(qids) + "\n")
PY
# stop mxedge-kio itself (strace's child); strace then exits with it
kill -TERM $(pgrep -P "$NETNS_LAST_PID"); wait "$NETNS_LAST_PID" || true

/usr/bin/python3 - "$work/strace.log" "$work/qids" "$work/spool" <<'PY'
import sys
log = open(sys.argv[1], errors="replace").read().splitlines()
qids = open(sys.argv[2]).read().split()
spool = sys.argv[3]
def first(pred, what):
    for i, l in enumerate(log):
        if pred(l):
            return i
    sys.exit("FAIL: no %s in strace log" % what)
for q in qids:
    reply = first(lambda l: ("queued as " + q) in l and ("sendto(" in l or "write(" in l),
                  "250 reply for " + q)
    steps = {
        "fdatasync .eml": first(lambda l: l.split()[1].startswith("fdatasync(") and q + ".eml>" in l, "fdatasync eml"),
        "fdatasync .env": first(lambda l: l.split()[1].startswith("fdatasync(") and q + ".env>" in l, "fdatasync env"),
        "rename .eml": first(lambda l: "rename" in l and '"%s.eml"' % q in l, "rename eml"),
        "rename .env": first(lambda l: "rename" in l and '"%s.env"' % q in l, "rename env"),
    }
    dirsync = [i for i, l in enumerate(log)
               if "fsync(" in l and ("<%s>" % spool) in l and i > steps["rename .env"]]
    if not dirsync:
        sys.exit("FAIL: no spool directory fsync after the rename of %s" % q)
    steps["fsync spool dir"] = dirsync[0]
    for what, i in steps.items():
        if i > reply:
            sys.exit("FAIL: %s of %s happened after the 250 was sent" % (what, q))
    print("ok: %s: %s, then 250" % (q, ", ".join(sorted(steps, key=steps.get))))
PY
