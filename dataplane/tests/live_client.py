#!/usr/bin/python3
"""SMTP client for dp-live-*: hold a session open across a live change.

  live_client.py probe HOST          print the greeting line, quit
  live_client.py hold HOST DIR       greet, EHLO, write DIR/ready; once
                                     DIR/go exists send NOOP and write its
                                     reply to DIR/noop, then QUIT
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
