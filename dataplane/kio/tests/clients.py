"""Real SMTP clients against mxedge --io=kernel; stored messages are
compared byte for byte with what was sent (the only difference allowed is the
Received: header the edge puts on top).

usage: /usr/bin/python3 clients.py HOST4 HOST6 PORT SPOOL_DIR CLIENT4 SPOOLTOOL SPOOLDUMP
Runs inside the client namespace; SPOOL_DIR is the server's spool (shared
filesystem), read with mxedge-spool (SPOOLTOOL: message bytes, list) and
kio_spooldump (SPOOLDUMP: the envelope as text).  Exits non-zero with a
message on the first failure.
"""
import os
import re
import smtplib
import socket
import subprocess
import sys
import time

HOST4, HOST6, PORT, SPOOL = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
CLIENT4 = sys.argv[5]  # our own address, as the server sees it
SPOOLTOOL, SPOOLDUMP = sys.argv[6], sys.argv[7]
QUEUED = re.compile(rb"queued as ([0-9A-Za-z]{11})")
checks = 0


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def ok(msg):
    global checks
    checks += 1
    print("ok: " + msg)


def stored(qid):
    """(message bytes, envelope text) of a committed message."""
    cat = subprocess.run([SPOOLTOOL, "cat", SPOOL, qid], capture_output=True)
    env = subprocess.run([SPOOLDUMP, SPOOL, qid], capture_output=True)
    if cat.returncode != 0 or env.returncode != 0:
        fail("message %s not in the spool although 250 was sent: %r"
             % (qid, cat.stderr + env.stderr))
    return cat.stdout, env.stdout.decode("utf-8")


def listed():
    """mxedge-spool list output: one line per committed message."""
    return subprocess.run([SPOOLTOOL, "list", SPOOL], check=True,
                          capture_output=True).stdout.decode("utf-8", "replace")


def split_received(data, qid, proto, peer):
    """Checks the Received: header (RFC 5321 §4.4) and returns the rest."""
    if not data.startswith(b"Received: from "):
        fail("stored message does not start with Received: %r" % data[:60])
    end = 0
    lines = data.split(b"\r\n")
    hdr = [lines[0]]
    for ln in lines[1:]:
        if ln.startswith(b"\t"):
            hdr.append(ln)
        else:
            break
    head = b"\r\n".join(hdr) + b"\r\n"
    end = len(head)
    text = head.decode()
    want = "by mx.test (mxedge) with %s id %s;" % (proto, qid)
    if want not in text:
        fail("Received header lacks %r:\n%s" % (want, text))
    if ("[%s]" % peer) not in text:
        fail("Received header lacks the client address %s:\n%s" % (peer, text))
    if not re.search(r"\t\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n$", text):
        fail("Received header has no RFC 5322 date:\n%s" % text)
    return data[end:]


def expect_exact(qid, sent, proto="ESMTP", peer=None):
    data, env = stored(qid)
    body = split_received(data, qid, proto, peer or CLIENT4)
    if body != sent:
        n = next((i for i in range(min(len(body), len(sent))) if body[i] != sent[i]),
                 min(len(body), len(sent)))
        fail("stored bytes differ from sent bytes at offset %d: stored %r sent %r"
             % (n, body[n:n + 40], sent[n:n + 40]))
    return env


def qid_of(reply):
    m = QUEUED.search(reply)
    if not m:
        fail("no queue id in %r" % reply)
    return m.group(1).decode()


# --- smtplib ---------------------------------------------------------------

def smtplib_cases():
    msg = (b"From: Alice <alice@example.org>\r\nTo: bob@customer.test\r\n"
           b"Subject: plain\r\n\r\nHello Bob.\r\n.A line with a leading dot\r\n"
           b"..two dots\r\n.\r\nlast line\r\n")
    with smtplib.SMTP(HOST4, PORT, local_hostname="client.example", timeout=30) as s:
        code, _ = s.ehlo()
        if code != 250 or not s.has_extn("pipelining") or not s.has_extn("chunking"):
            fail("EHLO did not offer PIPELINING and CHUNKING")
        s.mail("alice@example.org")
        s.rcpt("bob@customer.test")
        s.rcpt("carol@customer.test", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;carol+40customer.test"])
        code, reply = s.data(msg)
        if code != 250:
            fail("DATA answered %d %r" % (code, reply))
        env = expect_exact(qid_of(reply), msg)
        for want in ("mail-from <alice@example.org>", "rcpt <bob@customer.test>",
                     "rcpt <carol@customer.test> notify=SUCCESS,FAILURE orcpt=rfc822;carol+40customer.test",
                     "helo client.example", "client %s" % CLIENT4):
            if want not in env:
                fail("envelope lacks %r:\n%s" % (want, env))
        ok("smtplib: message with dot lines stored byte-exact, envelope with DSN params")

        # second transaction on the same connection, 8BITMIME
        msg8 = ("From: a@example.org\r\nSubject: =?utf-8?q?x?=\r\n\r\n"
                "Grüße aus Köln — 8 bit\r\n").encode("utf-8") + b"\xff\xfe raw\r\n"
        s.mail("a@example.org", ["BODY=8BITMIME", "SIZE=%d" % len(msg8)])
        s.rcpt("bob@customer.test")
        code, reply = s.data(msg8)
        env = expect_exact(qid_of(reply), msg8)
        if "mail-from <a@example.org> BODY=8BITMIME SIZE=%d\n" % len(msg8) not in env:
            fail("8BITMIME/SIZE not in envelope:\n" + env)
        ok("smtplib: 8BITMIME body with raw 8-bit bytes stored byte-exact")

        # SMTPUTF8 (RFC 6531): UTF-8 addresses
        s.mail("jörg@bücher.example", ["SMTPUTF8", "BODY=8BITMIME"])
        s.rcpt("ü@customer.test")
        msgu = "Subject: ü\r\n\r\nUnicode envelope\r\n".encode()
        code, reply = s.data(msgu)
        qid = qid_of(reply)
        env = expect_exact(qid, msgu, proto="UTF8SMTP")
        if "mail-from <jörg@bücher.example> BODY=8BITMIME SMTPUTF8\n" not in env:
            fail("UTF-8 sender not in envelope:\n" + env)
        ok("smtplib: SMTPUTF8 transaction, Received says UTF8SMTP")

        # a big message (1 MiB) in many segments
        line = b"x" * 70 + b"\r\n"
        big = b"Subject: big\r\n\r\n" + line * (1024 * 1024 // len(line))
        s.mail("a@example.org")
        s.rcpt("bob@customer.test")
        code, reply = s.data(big)
        expect_exact(qid_of(reply), big)
        ok("smtplib: 1 MiB message stored byte-exact")

        # errors a user sees: bad syntax, unknown command, VRFY
        code, _ = s.docmd("MAIL FROM:<bad address@example.org>")
        if code != 501:
            fail("bad address answered %d" % code)
        code, _ = s.docmd("VRFY bob")
        if code != 252:
            fail("VRFY answered %d" % code)
        code, _ = s.docmd("XYZZY")
        if code != 500:
            fail("unknown command answered %d" % code)
        ok("smtplib: 501 for bad address, 252 for VRFY, 500 for unknown command")

    # IPv6 client
    with smtplib.SMTP(HOST6, PORT, local_hostname="client.example", timeout=30) as s:
        s.ehlo()
        s.mail("v6@example.org")
        s.rcpt("bob@customer.test")
        m = b"Subject: v6\r\n\r\nover IPv6\r\n"
        code, reply = s.data(m)
        env = expect_exact(qid_of(reply), m, peer="IPv6:2001:db8::2")
        if "client 2001:db8::2\n" not in env:
            fail("IPv6 client address not in the envelope:\n" + env)
    ok("smtplib over IPv6: Received shows [IPv6:2001:db8::2], envelope client 2001:db8::2")


# --- raw socket clients ------------------------------------------------------

class Raw:
    def __init__(self, host=None, fam=socket.AF_INET):
        self.s = socket.create_connection((host or HOST4, PORT), timeout=30)
        self.buf = b""
        greet = self.replies(1)[0]
        if not greet.startswith(b"220 "):
            fail("greeting %r" % greet)

    def send(self, data):
        self.s.sendall(data)

    def replies(self, n):
        """Read n complete replies (multi-line replies count as one)."""
        out = []
        while len(out) < n:
            while b"\r\n" not in self.buf:
                d = self.s.recv(65536)
                if not d:
                    fail("connection closed, wanted %d more replies, got %r" % (n - len(out), out))
                self.buf += d
            line, self.buf = self.buf.split(b"\r\n", 1)
            if len(line) >= 4 and line[3:4] == b"-":
                cur = getattr(self, "_ml", b"") + line + b"\r\n"
                self._ml = cur
                continue
            out.append(getattr(self, "_ml", b"") + line)
            self._ml = b""
        return out

    def close(self):
        self.s.close()


def raw_cases():
    # BDAT (RFC 3030): chunks pipelined in one write, LAST, binary-safe
    c = Raw()
    c.send(b"EHLO client.example\r\n")
    ehlo = c.replies(1)[0]
    if b"CHUNKING" not in ehlo:
        fail("no CHUNKING in EHLO")
    chunk1 = b"Subject: bdat\r\n\r\nfirst chunk\r\n.\r\n"      # a dot line: no unstuffing
    chunk2 = b"second \n bare LF and \x00 NUL kept as sent\r\n"
    chunk3 = b"..last\r\n"
    c.send(b"MAIL FROM:<bdat@example.org>\r\nRCPT TO:<bob@customer.test>\r\n"
           + b"BDAT %d\r\n" % len(chunk1) + chunk1
           + b"BDAT %d\r\n" % len(chunk2) + chunk2
           + b"BDAT %d LAST\r\n" % len(chunk3) + chunk3)
    r = c.replies(5)
    want = [b"250 2.1.0", b"250 2.1.5", b"250 2.0.0 %d octets" % len(chunk1),
            b"250 2.0.0 %d octets" % len(chunk2), b"250 2.0.0 Ok: queued as"]
    for got, w in zip(r, want):
        if not got.startswith(w):
            fail("BDAT replies %r" % r)
    expect_exact(qid_of(r[4]), chunk1 + chunk2 + chunk3)
    ok("raw BDAT: three pipelined chunks stored byte-exact (no unstuffing)")

    # BDAT 0 LAST and DATA/BDAT mixing
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<bob@customer.test>\r\nBDAT 3\r\nabcDATA\r\nBDAT 0 LAST\r\n")
    r = c.replies(5)
    if not (r[2].startswith(b"250 2.0.0 3 octets") and r[3].startswith(b"503 5.5.1")
            and r[4].startswith(b"250 2.0.0 Ok: queued")):
        fail("BDAT mixing replies %r" % r)
    expect_exact(qid_of(r[4]), b"abc")
    ok("raw BDAT: DATA inside a BDAT transaction refused with 503, BDAT 0 LAST ends it")

    # RFC 2920 pipelining of a whole session, replies in order
    body = b"Subject: pipelined\r\n\r\nbody\r\n"
    c.send(b"RSET\r\nMAIL FROM:<p@example.org>\r\nRCPT TO:<x@customer.test>\r\n"
           b"RCPT TO:<bad address>\r\nRCPT TO:<y@customer.test>\r\nDATA\r\n"
           + body + b".\r\nNOOP\r\n")
    r = c.replies(8)
    codes = [x[:3] for x in r]
    if codes != [b"250", b"250", b"250", b"501", b"250", b"354", b"250", b"250"]:
        fail("pipelined replies out of order: %r" % r)
    expect_exact(qid_of(r[6]), body)
    ok("raw pipelining: 8 replies in order, message stored")

    # quoted local part with a quoted-pair (RFC 5321 §4.1.2): one envelope
    # line per recipient, the backslash escaped so the line is unambiguous
    c.send(b'MAIL FROM:<a@example.org>\r\nRCPT TO:<"john\\ doe"@customer.test>\r\n'
           b'RCPT TO:<"x@y"@[IPv6:2001:db8::25]>\r\nDATA\r\nq\r\n.\r\n')
    r = c.replies(5)
    if [x[:3] for x in r] != [b"250", b"250", b"250", b"354", b"250"]:
        fail("quoted local parts answered %r" % r)
    data, env = stored(qid_of(r[4]))
    for want in ('rcpt <"john\\x5c doe"@customer.test>\n',
                 'rcpt <"x@y"@[IPv6:2001:db8::25]>\n'):
        if want not in env:
            fail("envelope lacks %r:\n%s" % (want, env))
    ok("raw: quoted local parts and an IPv6 literal kept in the envelope, backslash escaped")

    # SMTP smuggling: a bare-LF "end of data" must not end the message,
    # and the smuggled transaction must never be accepted
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@customer.test>\r\nDATA\r\n"
           b"Subject: s\r\n\r\nhello\n.\nMAIL FROM:<ceo@customer.test>\r\n"
           b"RCPT TO:<bob@customer.test>\r\nDATA\r\nFrom: ceo\r\n\r\nsmuggled\r\n.\r\n")
    r = c.replies(4)
    if not r[3].startswith(b"550 5.6.0"):
        fail("smuggling attempt answered %r" % r)
    c.send(b"NOOP\r\n")
    if not c.replies(1)[0].startswith(b"250"):
        fail("session not usable after smuggling attempt")
    if "ceo@customer.test" in listed():
        fail("smuggled envelope stored")
    ok("raw smuggling: <LF>.<LF> did not end DATA; 550, nothing smuggled stored")

    for vec in (b"\r\n.\n", b"\r.\r\n", b"\n.\r\n", b"\r\n\x00.\r\n"):
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@customer.test>\r\nDATA\r\n"
               b"x" + vec + b"MAIL FROM:<ceo@customer.test>\r\n.\r\n")
        r = c.replies(4)
        if r[3][:3] not in (b"550", b"250"):
            fail("vector %r answered %r" % (vec, r))
        if r[3].startswith(b"250"):
            data, env = stored(qid_of(r[3]))
            if b"MAIL FROM:<ceo@customer.test>" not in data:
                fail("vector %r: smuggled text not kept as content" % vec)
    ok("raw smuggling: \\r\\n.\\n, \\r.\\r\\n, \\n.\\r\\n, \\r\\n\\0.\\r\\n never end DATA")

    # size limits (server runs with --max-size 2000000)
    c.send(b"MAIL FROM:<a@example.org> SIZE=3000000\r\n")
    r = c.replies(1)
    if not r[0].startswith(b"552 5.3.4"):
        fail("declared oversize answered %r" % r)
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@customer.test>\r\nDATA\r\n")
    c.replies(3)
    c.send((b"y" * 998 + b"\r\n") * 2100 + b".\r\n")
    r = c.replies(1)
    if not r[0].startswith(b"552 5.3.4"):
        fail("oversize DATA answered %r" % r)
    ok("raw limits: SIZE over the limit refused at MAIL (552), oversize DATA 552")

    # line too long, then the session still works
    c.send(b"NOOP " + b"z" * 2000 + b"\r\nNOOP\r\n")
    r = c.replies(2)
    if not (r[0].startswith(b"500 5.5.2") and r[1].startswith(b"250")):
        fail("long line answered %r" % r)
    ok("raw: over-long command line gets 500, session goes on")

    c.send(b"QUIT\r\n")
    if not c.replies(1)[0].startswith(b"221"):
        fail("QUIT")
    c.close()

    # one byte at a time (TCP segmentation must not matter)
    c = Raw()
    msg = b"Subject: slow\r\n\r\n..dot\r\nend\r\n"
    sess = (b"EHLO slow.example\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<bob@customer.test>\r\n"
            b"DATA\r\n" + msg.replace(b"\r\n..", b"\r\n...") + b".\r\n")
    c.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(sess)):
        c.send(sess[i:i + 1])
        time.sleep(0.001)
    r = c.replies(5)
    expect_exact(qid_of(r[4]), msg)
    ok("raw: session sent one byte per segment stored byte-exact")
    c.close()

    # too many errors -> 421 and close
    c = Raw()
    c.send(b"BAD\r\n" * 25)
    r = c.replies(21)
    if not r[20].startswith(b"421 4.7.0"):
        fail("error limit: %r" % r[-2:])
    if c.s.recv(100) != b"":
        fail("connection not closed after 421")
    ok("raw: after 20 errors 421 and the connection is closed")
    c.close()


smtplib_cases()
raw_cases()
print("%d client checks passed" % checks)
