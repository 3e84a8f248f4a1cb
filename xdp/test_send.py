#!/usr/bin/python3
# test_send.py SRC DST PORT TEXT: connects from SRC; on port 25 delivers one
# message with TEXT as subject and body. Exit 0 delivered (or, on another
# port, greeted), 3 handshake timed out, 1 anything else.
import socket, sys
src, dst, port, text = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(3)
s.bind((src, 0))
try:
    s.connect((dst, port))
except socket.timeout:
    sys.exit(3)
# Connected: the dialogue may be slow on a loaded machine, that is no failure.
s.settimeout(20)
f = s.makefile('rwb')
def expect(code):
    l = f.readline().decode()
    if not l.startswith(code):
        print('unexpected reply:', l.strip(), file=sys.stderr); sys.exit(1)
def send(l):
    f.write(l.encode() + b'\r\n'); f.flush()
expect('220')
if port != 25:
    sys.exit(0)
for cmd, code in (('EHLO client.test', '250'), ('MAIL FROM:<a@client.test>', '250'),
                  ('RCPT TO:<b@edge.test>', '250'), ('DATA', '354')):
    send(cmd); expect(code)
send('Subject: ' + text); send(''); send(text); send('.'); expect('250')
send('QUIT'); expect('221')
