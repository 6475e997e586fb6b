"""A connection flood against one api process (stdlib only), for bench/run.sh.

A normal client opens its keep-alive connection first and asks GET /api/v1/products/1/cached every 20 ms.
Then FLOOD connections arrive at once: a third stay silent, a third send half a header and stop, a third send
requests as fast as they are answered. It reports what the normal client saw (answers, failures, p50/p99),
how many flood connections the server closed within its timeouts, and the api's own counters for refused
connections and shed requests. Bounded: it stops after DURATION seconds.

    python3 bench/flood.py http://127.0.0.1:8101 5000 15
"""

import asyncio
from collections import defaultdict
import sys
import time
import urllib.request


async def normal_client(host, port, stop, latencies, failures, shed):
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET /api/v1/products/1/cached HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    while not stop.is_set():
        started = time.monotonic()
        try:
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            await asyncio.wait_for(reader.readexactly(length), 5)
            if head.startswith(b"HTTP/1.1 503"):
                shed.append(1)  # answered at once: the process is full (HTTP_MAX_IN_FLIGHT)
            elif not head.startswith(b"HTTP/1.1 200"):
                failures.append(head.split(b"\r\n")[0].decode())
            latencies.append((time.monotonic() - started) * 1000)
        except Exception as e:  # a failure the normal client saw: counted, then a fresh connection
            failures.append(type(e).__name__)
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
        await asyncio.sleep(0.02)
    writer.close()


async def flood_one(host, port, kind, stop, outcome):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        outcome["connect_failed"] += 1
        return
    started = time.monotonic()
    try:
        if kind == "partial":
            writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
            await writer.drain()
        if kind == "busy":
            request = b"GET /api/v1/products/1 HTTP/1.1\r\nHost: x\r\n\r\n"
            while not stop.is_set():
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                outcome["busy_answered"] += 1
                outcome["shed" if head.startswith(b"HTTP/1.1 503") else "busy_ok"] += 1
            return
        data = await asyncio.wait_for(reader.read(1), 60)
        if data == b"":
            outcome[f"{kind}_closed"] += 1
            outcome[f"{kind}_closed_after_s"] = max(outcome.get(f"{kind}_closed_after_s", 0), time.monotonic() - started)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, StopIteration):
        outcome[f"{kind}_closed"] += 1
    finally:
        writer.close()


def counter(metrics, name):
    return sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.startswith(name))


async def main(url, flood, duration):
    host, port = url.split("//")[1].split(":")
    port = int(port)
    stop, latencies, failures, shed = asyncio.Event(), [], [], []
    outcome = defaultdict(int)
    normal = asyncio.create_task(normal_client(host, port, stop, latencies, failures, shed))
    await asyncio.sleep(1)
    kinds = ["silent", "partial", "busy"]
    tasks = [asyncio.create_task(flood_one(host, port, kinds[i % 3], stop, outcome)) for i in range(flood)]
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.wait(tasks + [normal], timeout=15)
    metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else float("nan")
    print(f"flood: {flood} connections for {duration} s (a third silent, a third half a header, a third busy)")
    print(f"  normal client: {len(latencies)} answers ({len(shed)} of them 503 shed at once), "
          f"{len(failures)} failures {sorted(set(failures))[:3]}, "
          f"p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms")
    print(f"  silent closed {outcome['silent_closed']} (last after {outcome.get('silent_closed_after_s', 0):.1f} s), "
          f"half-header closed {outcome['partial_closed']} (last after {outcome.get('partial_closed_after_s', 0):.1f} s), "
          f"connect failed {outcome['connect_failed']}")
    print(f"  busy: {outcome['busy_ok']} answered 200, {outcome['shed']} shed (503)")
    print(f"  api: connections refused at the cap {counter(metrics, 'http_connections_refused_total'):.0f}, "
          f"requests shed {counter(metrics, 'http_requests_shed_total'):.0f}")
    # Held: the normal client never timed out or lost its connection, and was answered promptly (200, or
    # 503 at once when the process was full).
    ok = not failures and latencies and pct(0.99) < 1000
    print(f"  FLOOD {'HELD' if ok else 'NOT HELD'}")
    return 0 if ok else 1


if __name__ == "__main__":
    url, flood, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sys.exit(asyncio.run(main(url, flood, duration)))
