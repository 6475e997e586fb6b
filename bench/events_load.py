#!/usr/bin/env python3
"""Market-event load for bench/run.sh (standard library only).

  events_load.py burst N PREFIX KEY     RESP for `redis-cli --pipe`: N XADDs of events burst-PREFIX-i
  events_load.py steady RATE SECONDS PREFIX KEY HOST PORT
                                        XADDs at RATE events/s for SECONDS, each stamped with occurred_at,
                                        so publish-to-applied latency is applied_at - occurred_at
Events name product ids 1..1000 (round robin) with a competitor_price signal.
"""
import json
import socket
import sys
import time
from datetime import datetime, timezone


def event(prefix, i, stamp=None):
    return json.dumps({
        "event_id": f"{prefix}-{i}",
        "event_type": "competitor_price",
        "product_ids": [1 + i % 1000],
        "multiplier": 1.05,
        "source": "bench",
        "occurred_at": stamp or "2026-01-01T00:00:00Z",
    })


def resp(*args):
    out = [f"*{len(args)}\r\n"]
    for a in args:
        b = a.encode()
        out.append(f"${len(b)}\r\n")
        out.append(a + "\r\n")
    return "".join(out)


def burst(n, prefix, key):
    w = sys.stdout.write
    for i in range(n):
        w(resp("XADD", key, "MAXLEN", "~", "1000000", "*", "event", event(prefix, i)))


def steady(rate, seconds, prefix, key, host, port):
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        sock.sendall(resp("XADD", key, "MAXLEN", "~", "1000000", "*", "event", event(prefix, i, stamp)).encode())
        # The reply is a bulk string, "$<len>" then the entry id: read both, so nothing is left unread
        # (a socket closed with unread replies is reset, and Redis may drop the last command).
        header = reader.readline()
        if not header.startswith(b"$"):
            raise SystemExit(f"XADD failed: {header!r}")
        reader.readline()
    elapsed = time.perf_counter() - start
    sock.close()
    print(f"{total} events in {elapsed:.1f} s ({total / elapsed:.0f}/s offered)", file=sys.stderr)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "burst":
        burst(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        steady(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7]))
