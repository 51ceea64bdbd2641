#!/usr/bin/env python3
"""A DNS responder for perf runs: every A question is answered with one address (127.0.0.1 by
default), every other question with an empty NOERROR. Lets perf/ab.sh give the relay a next hop
with a host name (a certificate names a host, never 127.0.0.1) without touching /etc or a real
resolver. Usage: tiny-dns.py IP:PORT [ADDRESS]. Runs until killed."""
import socket
import struct
import sys

host, port = sys.argv[1].rsplit(":", 1)
answer_ip = socket.inet_aton(sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, int(port)))
while True:
    data, peer = s.recvfrom(4096)
    if len(data) < 12:
        continue
    qid, flags, qd = struct.unpack(">HHH", data[:6])
    # The question: labels up to the zero byte, then type and class.
    i = 12
    while i < len(data) and data[i] != 0:
        i += data[i] + 1
    question = data[12:i + 5]
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0] if i + 3 <= len(data) else 0
    answers = b""
    count = 0
    if qtype == 1:
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + answer_ip
        count = 1
    header = struct.pack(">HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, count, 0, 0)
    s.sendto(header + question + answers, peer)
