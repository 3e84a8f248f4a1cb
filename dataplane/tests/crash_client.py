#!/usr/bin/python3
"""Mail client for the dataplane's crash test: keeps several SMTP sessions
sending distinct messages and records every acknowledgement it receives.

    crash_client.py HOST ACKS STOPFILE [--sessions N] [--seed S]
                    [--timeout SEC] [--max-seconds SEC]

For every "250 2.0.0 Ok: queued as QID" answer to end of DATA it appends
"QID LEN SHA256" (the bytes it sent, as the edge must store them after
dot-unstuffing) to ACKS, with one write per line as soon as the answer
arrived, so a line is never half written and nothing acknowledged is left
out because the client was busy. Connection failures (the server was killed)
are counted and the session starts over. It stops when STOPFILE exists or
after --max-seconds, and prints one summary line.
"""
import argparse
import base64
import hashlib
import os
import random
import smtplib
import socket
import threading
import time

# Sizes: below one engine feed (4 KiB), a few feeds, and several spool
# DATA records (64 KiB), so kills land in every part of a transaction.
SIZES = [300, 1000, 3000, 3000, 9000, 9000, 20000, 80000]


def make_message(rnd, tag):
    """A message in canonical form: CRLF line ends, a final CRLF, and
    lines that begin with a dot (smtplib stuffs them, the edge unstuffs)."""
    size = rnd.choice(SIZES)
    head = (b'From: crash@client.test\r\nTo: box@edge.test\r\n'
            b'Subject: crash ' + tag + b'\r\nMessage-ID: <' + tag +
            b'@client.test>\r\n\r\n')
    raw = base64.b64encode(rnd.randbytes(size * 3 // 4 + 1))
    lines = [raw[i:i + 76] for i in range(0, len(raw), 76)]
    for i in range(0, len(lines), 17):
        lines[i] = b'.' + lines[i]
    return head + b'\r\n'.join(lines) + b'\r\n'


class Recorder:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock = threading.Lock()
        self.acks = 0
        self.errors = {}
        self.refused = 0

    def ack(self, qid, body):
        line = '%s %d %s\n' % (qid, len(body), hashlib.sha256(body).hexdigest())
        os.write(self.fd, line.encode())  # O_APPEND: one atomic line
        with self.lock:
            self.acks += 1

    def error(self, kind):
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def session_loop(idx, args, rec, stop_at):
    rnd = random.Random(args.seed * 1000 + idx)
    n = 0
    while time.monotonic() < stop_at and not os.path.exists(args.stopfile):
        s = None
        try:
            s = smtplib.SMTP(args.host, 25, local_hostname='crash.test',
                             timeout=args.timeout)
            s.ehlo()
            for _ in range(rnd.randint(1, 4)):
                n += 1
                tag = b'%d-%d-%d' % (args.seed, idx, n)
                body = make_message(rnd, tag)
                code, msg = s.mail('crash@client.test')
                if code != 250:
                    rec.error('mail %d' % code)
                    break
                code, msg = s.rcpt('box@edge.test')
                if code != 250:
                    rec.error('rcpt %d' % code)
                    break
                code, msg = s.data(body)
                if code == 250:
                    rec.ack(msg.decode().split()[-1], body)
                else:
                    rec.error('data %d' % code)
            s.quit()
        except smtplib.SMTPConnectError as e:
            rec.error('greeting %d' % e.smtp_code)
        except (OSError, smtplib.SMTPException) as e:
            # Killed server: reset, timeout, refused or a closed session.
            rec.error(type(e).__name__)
        finally:
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        time.sleep(rnd.uniform(0.01, 0.1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('host')
    ap.add_argument('acks')
    ap.add_argument('stopfile')
    ap.add_argument('--sessions', type=int, default=4)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--timeout', type=float, default=3.0)
    ap.add_argument('--max-seconds', type=float, default=300.0)
    args = ap.parse_args()
    socket.setdefaulttimeout(args.timeout)
    rec = Recorder(args.acks)
    stop_at = time.monotonic() + args.max_seconds
    threads = [threading.Thread(target=session_loop, args=(i, args, rec, stop_at))
               for i in range(args.sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errs = ' '.join('%s=%d' % kv for kv in sorted(rec.errors.items()))
    print('crash_client: acks=%d errors: %s' % (rec.acks, errs or 'none'), flush=True)


if __name__ == '__main__':
    main()
