#!/usr/bin/python3
# test_smtpd.py OUTFILE ADDR,PORT...: a minimal SMTP-ish listener (RFC 5321
# happy path only) for the shield's integration tests; appends each message
# body to OUTFILE. Runs until killed.
import socket, sys, threading
out = sys.argv[1]
def serve(c):
    f = c.makefile('rwb')
    def send(s):
        f.write(s.encode() + b'\r\n'); f.flush()
    send('220 edge ESMTP test')
    data, body = False, []
    for raw in f:
        l = raw.decode(errors='replace').rstrip('\r\n')
        if data:
            if l == '.':
                with open(out, 'a') as o:
                    o.write('\n'.join(body) + '\n')
                send('250 2.0.0 queued'); data, body = False, []
            else:
                body.append(l)
            continue
        v = l[:4].upper()
        if v in ('HELO', 'EHLO'): send('250 edge')
        elif v in ('MAIL', 'RCPT'): send('250 2.1.0 ok')
        elif v == 'DATA': send('354 go ahead'); data = True
        elif v == 'QUIT': send('221 bye'); break
        else: send('500 5.5.1 what')
    c.close()
def listen(addr, port):
    fam = socket.AF_INET6 if ':' in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
ts = [threading.Thread(target=listen, args=(a, int(p)), daemon=True)
      for a, p in (x.rsplit(',', 1) for x in sys.argv[2:])]
for t in ts: t.start()
for t in ts: t.join()
