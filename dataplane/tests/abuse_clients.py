#!/usr/bin/python3
"""Abusive and legitimate SMTP clients for the dataplane's abuse test.

    abuse_clients.py send HOST COUNT [--timeout SEC] [--src ADDR]
        COUNT deliveries, one session each, one after the other; prints
        "sent=N ok=K codes=..." and a line "qid QID" per 250. --src: the
        local address to connect from.

    abuse_clients.py hold HOST N READY [--mode idle|data|drip] [--idle N]
                     [--deliver] [--timeout SEC] [--wait SEC] [--drip SEC]
        Opens N connections one after the other and keeps every accepted
        session: idle after EHLO (--mode idle), or stalled in the middle of
        DATA after part of a body (--mode data; with --idle K the first K are
        idle instead), or in DATA sending one more body byte every --drip
        seconds, always inside the DATA timeout (--mode drip). Writes READY with "accepted=A busy=B refused=R" once
        all are open. With --deliver, session 0 then sends a whole message
        while the others hold (the edge must still serve it). Then waits up
        to --wait seconds for what the edge says to each held session and
        prints one JSON object: accepted, busy (421 at the greeting),
        refused (no greeting), delivered (250 for --deliver), final (reply
        code + enhanced code -> count, e.g. "421 4.4.2": 31, "eof": 1), the
        seconds from each session's last input to its final reply (min/max),
        from its connect to its final reply (since_open min/max), and the
        distinct 421 greeting texts (busy_replies).
"""
import argparse
import json
import selectors
import smtplib
import socket
import sys
import time


BUSY_REPLIES = set()


def connect(host, timeout, src=None):
    """Returns (smtp, status): status 'ok', 'busy' (421 greeting) or
    'refused' (no greeting at all)."""
    try:
        s = smtplib.SMTP(host, 25, local_hostname='abuse.test', timeout=timeout,
                         source_address=(src, 0) if src else None)
        return s, 'ok'
    except smtplib.SMTPConnectError as e:
        if e.smtp_code == 421:
            BUSY_REPLIES.add(e.smtp_error.decode(errors='replace'))
        return None, 'busy' if e.smtp_code == 421 else 'code %d' % e.smtp_code
    except (OSError, smtplib.SMTPException):
        return None, 'refused'


def cmd_send(args):
    codes = []
    qids = []
    for i in range(args.count):
        s, st = connect(args.host, args.timeout, args.src)
        if s is None:
            codes.append(st)
            continue
        try:
            s.ehlo()
            s.mail('legit@client.test')
            s.rcpt('box@edge.test')
            body = b'Subject: legit %d\r\n\r\nstill served\r\n' % i
            code, msg = s.data(body)
            codes.append(str(code))
            if code == 250:
                qids.append(msg.decode().split()[-1])
            s.quit()
        except (OSError, smtplib.SMTPException) as e:
            codes.append(type(e).__name__)
        finally:
            s.close()
    ok = sum(1 for c in codes if c == '250')
    print('sent=%d ok=%d codes=%s' % (args.count, ok, ','.join(codes)))
    for q in qids:
        print('qid', q)
    return 0


def final_replies(held, wait, drip=0):
    """Waits (all at once) for the edge's next reply on every held session:
    returns [(what, seconds after the session's last input, seconds after
    its connect)], what being the reply's first 9 characters ("421 4.4.2"),
    'eof', 'reset' or 'none'. drip > 0: meanwhile sends one body byte every
    drip seconds on each session still waiting."""
    sel = selectors.DefaultSelector()
    out = []
    bufs = {}
    for h in held:
        h[0].sock.setblocking(False)
        sel.register(h[0].sock, selectors.EVENT_READ, h)
        bufs[h[0].sock] = b''
    deadline = time.monotonic() + wait
    next_drip = time.monotonic() + drip
    while sel.get_map() and time.monotonic() < deadline:
        if drip and time.monotonic() >= next_drip:
            for key in list(sel.get_map().values()):
                try:
                    key.fileobj.send(b'x')
                    key.data[1] = time.monotonic()
                except OSError:
                    pass
            next_drip += drip
        tmo = deadline - time.monotonic()
        if drip:
            tmo = min(tmo, next_drip - time.monotonic())
        for key, _ in sel.select(timeout=max(0.01, tmo)):
            sock = key.fileobj
            s, last, opened = key.data
            what = None
            try:
                d = sock.recv(4096)
                if not d:
                    what = bufs[sock].decode(errors='replace')[:9] or 'eof'
                bufs[sock] += d
                if b'\r\n' in bufs[sock]:
                    what = bufs[sock].decode(errors='replace')[:9]
            except BlockingIOError:
                continue
            except OSError:
                what = 'reset'
            if what is not None:
                now = time.monotonic()
                out.append((what, now - last, now - opened))
                sel.unregister(sock)
    for key in list(sel.get_map().values()):
        now = time.monotonic()
        out.append(('none', now - key.data[1], now - key.data[2]))
    sel.close()
    return out


def cmd_hold(args):
    held = []      # (smtp, time of our last input)
    t0 = time.monotonic()
    res = {'accepted': 0, 'busy': 0, 'refused': 0, 'other': 0, 'delivered': 0}
    for i in range(args.n):
        opened = time.monotonic()
        s, st = connect(args.host, args.timeout)
        if s is None:
            key = st if st in ('busy', 'refused') else 'other'
            res[key] += 1
            continue
        try:
            s.ehlo()
            if args.mode in ('data', 'drip') and i >= args.idle:
                s.mail('stall@client.test')
                s.rcpt('box@edge.test')
                s.putcmd('DATA')
                code, _ = s.getreply()
                if code != 354:
                    raise smtplib.SMTPException('DATA answered %d' % code)
                s.send(b'Subject: stalled\r\n\r\n' + b'z' * 5000 + b'\r\n')
        except (OSError, smtplib.SMTPException):
            res['other'] += 1
            s.close()
            continue
        res['accepted'] += 1
        held.append([s, time.monotonic(), opened])
    with open(args.ready, 'w') as f:
        f.write('accepted=%d busy=%d refused=%d open_s=%.2f\n' %
                (res['accepted'], res['busy'], res['refused'], time.monotonic() - t0))
    if args.deliver and held:
        s = held[0][0]
        try:
            s.mail('legit@client.test')
            s.rcpt('box@edge.test')
            code, msg = s.data(b'Subject: while the pool is full\r\n\r\nserved\r\n')
            if code == 250:
                res['delivered'] = 1
                res['qid'] = msg.decode().split()[-1]
            s.quit()
        except (OSError, smtplib.SMTPException):
            pass
        s.close()
        held = held[1:]
    finals = {}
    waited = []
    lived = []
    drip = args.drip if args.mode == 'drip' else 0
    for what, after, since_open in final_replies(held, args.wait, drip):
        finals[what] = finals.get(what, 0) + 1
        if what.startswith('421'):
            waited.append(after)
            lived.append(since_open)
    for h in held:
        h[0].close()
    res['final'] = finals
    res['busy_replies'] = sorted(BUSY_REPLIES)
    if waited:
        res['final_after_min'] = round(min(waited), 2)
        res['final_after_max'] = round(max(waited), 2)
        res['since_open_min'] = round(min(lived), 2)
        res['since_open_max'] = round(max(lived), 2)
    print(json.dumps(res, sort_keys=True))
    sys.stdout.flush()
    if args.linger:
        time.sleep(args.linger)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('send')
    p.add_argument('host')
    p.add_argument('count', type=int)
    p.add_argument('--timeout', type=float, default=15)
    p.add_argument('--src')
    p = sub.add_parser('hold')
    p.add_argument('host')
    p.add_argument('n', type=int)
    p.add_argument('ready')
    p.add_argument('--mode', choices=['idle', 'data', 'drip'], default='idle')
    p.add_argument('--drip', type=float, default=1)
    p.add_argument('--idle', type=int, default=0)
    p.add_argument('--deliver', action='store_true')
    p.add_argument('--timeout', type=float, default=10)
    p.add_argument('--wait', type=float, default=20)
    p.add_argument('--linger', type=float, default=0)
    args = ap.parse_args()
    return cmd_send(args) if args.cmd == 'send' else cmd_hold(args)


if __name__ == '__main__':
    sys.exit(main())
