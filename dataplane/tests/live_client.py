#!/usr/bin/python3
"""SMTP client for dp-live-*: hold a session open across a live change.

  live_client.py probe HOST          print the greeting line, quit
  live_client.py hold HOST DIR       greet, EHLO, write DIR/ready; once
                                     DIR/go exists send NOOP and write its
                                     reply to DIR/noop, then QUIT
  live_client.py tx HOST DIR SIZE    open a transaction up to DATA, write
                                     DIR/ready; once DIR/go exists send a
                                     SIZE-byte body, then a second
                                     transaction (EHLO, MAIL, 2 RCPT, DATA,
                                     the same body); every reply goes to
                                     DIR/result, one per line
  live_client.py idle HOST DIR       greet, EHLO, write DIR/ready, then wait
                                     (up to 60 s) for what the server says
                                     unasked: DIR/idle gets it and the
                                     seconds waited
"""
import os
import socket
import sys
import time


def line(f):
    return f.readline().decode('ascii', 'replace').rstrip('\r\n')


def reply(f):
    """The last line of a (possibly multi-line) SMTP reply."""
    while True:
        ln = line(f)
        if len(ln) < 4 or ln[3] != '-':
            return ln


def ehlo_size(s, f):
    """EHLO; returns the SIZE line of the reply ("SIZE 4096") or ''."""
    s.sendall(b'EHLO live.client.test\r\n')
    size = ''
    while True:
        ln = line(f)
        if ln[4:].startswith('SIZE'):
            size = ln[4:]
        if len(ln) < 4 or ln[3] != '-':
            return size


def body(n):
    row = b'x' * 78 + b'\r\n'
    data = b'Subject: live limits\r\n\r\n'
    while len(data) < n:
        data += row
    return data + b'.\r\n'


def tx(s, f, d, greeting, size):
    out = [greeting, ehlo_size(s, f)]
    for cmd in (b'MAIL FROM:<a@client.test>', b'RCPT TO:<u@live.test>', b'DATA'):
        s.sendall(cmd + b'\r\n')
        out.append(reply(f))
    open(os.path.join(d, 'ready'), 'w').write('\n'.join(out) + '\n')
    for _ in range(1200):
        if os.path.exists(os.path.join(d, 'go')):
            break
        time.sleep(0.05)
    s.sendall(body(size))
    out = [reply(f), ehlo_size(s, f)]
    for cmd in (b'MAIL FROM:<a@client.test>', b'RCPT TO:<u@live.test>',
                b'RCPT TO:<v@live.test>', b'DATA'):
        s.sendall(cmd + b'\r\n')
        out.append(reply(f))
    if out[-1].startswith('354'):
        s.sendall(body(size))
        out.append(reply(f))
    s.sendall(b'QUIT\r\n')
    out.append(reply(f))
    open(os.path.join(d, 'result'), 'w').write('\n'.join(out) + '\n')


def idle(s, f, d, greeting):
    s.sendall(b'EHLO live.client.test\r\n')
    ehlo = reply(f)
    open(os.path.join(d, 'ready'), 'w').write(greeting + '\n' + ehlo + '\n')
    s.settimeout(60)
    t0 = time.monotonic()
    try:
        said = reply(f)
    except OSError as e:
        said = 'error: %s' % e
    open(os.path.join(d, 'idle'), 'w').write('%s\n%.1f\n' % (said, time.monotonic() - t0))


def main():
    mode, host = sys.argv[1], sys.argv[2]
    s = socket.create_connection((host, 25), timeout=30)
    f = s.makefile('rb')
    greeting = reply(f)
    if mode == 'probe':
        print(greeting)
        if greeting.startswith('220'):
            s.sendall(b'QUIT\r\n')
            reply(f)
        return
    d = sys.argv[3]
    if mode == 'tx':
        return tx(s, f, d, greeting, int(sys.argv[4]))
    if mode == 'idle':
        return idle(s, f, d, greeting)
    if not greeting.startswith('220'):
        open(os.path.join(d, 'ready'), 'w').write(greeting + '\n')
        return
    s.sendall(b'EHLO live.client.test\r\n')
    ehlo = reply(f)
    open(os.path.join(d, 'ready'), 'w').write(greeting + '\n' + ehlo + '\n')
    for _ in range(1200):
        if os.path.exists(os.path.join(d, 'go')):
            break
        time.sleep(0.05)
    s.sendall(b'NOOP\r\n')
    noop = reply(f)
    open(os.path.join(d, 'noop'), 'w').write(noop + '\n')
    s.sendall(b'QUIT\r\n')
    reply(f)


main()
