#!/usr/bin/env python3
"""Holds N idle SMTP connections open against a relay (each reads its 220 greeting and then sends
nothing) and prints the relay's resident memory before and after, per connection.

usage: idle-connections.py PID PORT N [ADDRESSES]
  PID        the relay's process id (its VmRSS is read from /proc)
  PORT       its SMTP port on loopback
  N          how many connections to hold
  ADDRESSES  how many loopback source addresses to spread them over (127.0.0.1 ... 127.0.0.K),
             so that limits.maxConnectionsPerIp can stay at a realistic value; default 1

Bounded: it connects N times, waits for every greeting (10 s each at most), samples, and closes
everything. Raise `ulimit -n` for large N (the script raises its own soft limit to the hard one).
"""
import os, resource, socket, sys, time, selectors

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")

def main():
    pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    addresses = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kib(pid)
    socks = []
    sel = selectors.DefaultSelector()
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.0.0.{1 + i % addresses}", 0))
        s.setblocking(True)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    greeted = 0
    for s in socks:
        data = s.recv(512)
        if data.startswith(b"220"):
            greeted += 1
    time.sleep(2)  # let the relay settle (GC, pool trimming is not waited for)
    after = rss_kib(pid)
    print(f"connections: {n}, greeted: {greeted}")
    print(f"relay_rss_before_kib: {before}")
    print(f"relay_rss_after_kib: {after}")
    print(f"relay_rss_per_idle_connection_bytes: {(after - before) * 1024 // max(1, n)}")
    for s in socks:
        s.close()

main()
