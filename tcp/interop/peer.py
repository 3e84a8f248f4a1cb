#!/usr/bin/python3
"""Kernel-side peer for the tcp/ TAP interop test (see tcp_tap.c).

peer.py client HOST N   connect to HOST:5001, send N bytes of pattern 0,
                        shut down writing, expect N bytes of pattern 1 + EOF
peer.py server HOST N   listen on HOST:5002, accept one connection, expect
                        N bytes of pattern 0 + EOF, answer N bytes of pattern 1
Exit 0 when everything matched byte-exact.
"""
import socket
import sys
import time


def pattern(d, start, n):
    """Byte i of direction d: ((i ^ i>>8 ^ i>>16) * 131 + 7 + 101 d) mod 256."""
    out = bytearray(n)
    for k in range(n):
        i = start + k
        out[k] = (((i ^ (i >> 8) ^ (i >> 16)) * 131 + 7 + d * 101) & 0xff)
    return bytes(out)


CHUNK = 1 << 16
_blocks = {}
_chunks = {}


def chunk(d, start, n):
    """pattern(d, start, n) for 64 KiB-aligned start, fast: a 64 KiB chunk at
    M * 65536 is the 256-byte blocks block[k ^ (M & 255)], k = 0..255."""
    if start % CHUNK:
        return pattern(d, start, n)
    m8 = (start >> 16) & 0xff
    key = (d, m8)
    if key not in _chunks:
        if d not in _blocks:
            _blocks[d] = [bytes((((j ^ c) * 131 + 7 + d * 101) & 0xff) for j in range(256))
                          for c in range(256)]
        b = _blocks[d]
        _chunks[key] = b"".join(b[k ^ m8] for k in range(256))
    return _chunks[key][:n]


def send_all(s, d, n):
    off = 0
    while off < n:
        k = min(CHUNK, n - off)
        s.sendall(chunk(d, off, k))
        off += k


def recv_check(s, d, n):
    got = 0
    pend = b""
    while True:
        b = s.recv(1 << 18)
        if not b:
            break
        pend += b
        while len(pend) >= CHUNK or (pend and got + len(pend) >= n):
            k = min(len(pend), CHUNK)
            if got + k > n:
                print("peer: more data than expected", file=sys.stderr)
                return False
            if pend[:k] != chunk(d, got, k):
                print("peer: data mismatch near byte %d" % got, file=sys.stderr)
                return False
            got += k
            pend = pend[k:]
    if pend:
        print("peer: trailing %d bytes" % len(pend), file=sys.stderr)
        return False
    if got != n:
        print("peer: got %d of %d bytes" % (got, n), file=sys.stderr)
        return False
    return True


def main():
    mode, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    if mode == "client":
        s = None
        for _ in range(100):
            try:
                s = socket.create_connection((host, 5001), timeout=120)
                break
            except OSError:
                time.sleep(0.05)
        if s is None:
            print("peer: cannot connect", file=sys.stderr)
            return 1
        send_all(s, 0, n)
        s.shutdown(socket.SHUT_WR)
        ok = recv_check(s, 1, n)
        s.close()
        return 0 if ok else 1
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, 5002))
    ls.listen(1)
    ls.settimeout(120)
    s, _ = ls.accept()
    s.settimeout(120)
    ok = recv_check(s, 0, n)
    if ok:
        send_all(s, 1, n)
    s.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
