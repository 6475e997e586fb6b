"""The tables locust/run.sh prints (standard library only).

  report.py table STATS LIMIT_MS OLD_LIMIT_MS       per-endpoint table from the locustfile's final statistics
                                                     (stats.json) or locust's --csv _stats.csv; exit 1 unless
                                                     every endpoint's P95 < LIMIT_MS and nothing failed
  report.py failures FAILURES_CSV                   the most frequent failures
  report.py server BEFORE AFTER LIMIT_MS            the api's own view of the same run: the change of its
                                                     http_request_duration_seconds histogram between two /metrics
                                                     snapshots, per route (separates server time from the load
                                                     generator's own queueing)
"""

import csv
import json
import math
import re
import sys


def num(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def rows_from(path: str) -> list:
    """The final statistics the locustfile wrote (JSON), or locust's --csv _stats.csv."""
    if path.endswith(".json"):
        return json.load(open(path))
    return [{"method": r["Type"], "name": r["Name"], "requests": int(r["Request Count"]),
             "failures": int(r["Failure Count"]), "p50": num(r["50%"]), "p95": num(r["95%"]), "p99": num(r["99%"]),
             "rps": num(r["Requests/s"])} for r in csv.DictReader(open(path))]


def table(path: str, limit: float, old: float) -> int:
    try:
        rows = rows_from(path)
    except (OSError, ValueError) as e:
        print(f"   no statistics ({path}: {e}): locust did not finish; see locust.log")
        return 1
    ok = True
    print(f"   {'endpoint':<47} {'requests':>9} {'failures':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'req/s':>7}"
          f"  P95<{limit:g}ms  (old <{old:g}ms)")
    for r in rows:
        total = r["name"] == "Aggregated"
        name = "all endpoints" if total else f"{r['method']} {r['name']}"
        reqs, fails, p95 = r["requests"], r["failures"], r["p95"]
        verdict = "yes" if p95 < limit and fails == 0 else "NO"
        if not total and verdict == "NO":
            ok = False
        fail_pct = f"{fails}" if not fails else f"{fails} ({100 * fails / max(reqs, 1):.1f}%)"
        print(f"   {name:<47} {reqs:>9} {fail_pct:>8} {r['p50']:>7g} {p95:>7g} {r['p99']:>7g} {r['rps']:>7.1f}"
              f"  {verdict:<9}  ({'yes' if p95 < old else 'NO'})")
    few = [f"{r['method']} {r['name']}" for r in rows if r["name"] != "Aggregated" and 0 < r["requests"] < 20]
    if few:
        print(f"   fewer than 20 requests, so their P95 is about their slowest one: {', '.join(few)}")
    if not [r for r in rows if r["name"] != "Aggregated" and r["requests"] > 0]:
        print("   no request was made")
        ok = False
    return 0 if ok else 1


def failures(path: str) -> int:
    rows = sorted(csv.DictReader(open(path)), key=lambda r: -int(r["Occurrences"]))
    for r in rows[:15]:
        print(f"   {int(r['Occurrences']):>7}  {r['Method']} {r['Name']}: {r['Error'][:240]}")
    return 0


BUCKET = re.compile(r'^http_request_duration_seconds_bucket\{(.*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def buckets(path: str) -> dict:
    """(method, endpoint) -> {le: cumulative count}, summed over statuses."""
    out: dict = {}
    for line in open(path):
        m = BUCKET.match(line.strip())
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(1)))
        key = (labels.get("method", ""), labels.get("endpoint", ""))
        le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        out.setdefault(key, {}).setdefault(le, 0.0)
        out[key][le] += float(m.group(2))
    return out


def quantile(q: float, cumulative: list) -> float:
    """histogram_quantile: linear inside the bucket holding the q-th observation (seconds)."""
    total = cumulative[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 0)
        lower, below = le, count
    return lower


def server(before_path: str, after_path: str, limit_ms: float) -> int:
    before, after = buckets(before_path), buckets(after_path)
    limit = limit_ms / 1000
    print(f"   {'route (api /metrics)':<47} {'requests':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}  <= {limit_ms:g} ms")
    for key in sorted(after):
        if key in (("GET", "/api/v1/products"), ("GET", "/metrics")) or key[1].startswith(("/api/v1/health", "/api/v1/market-events")):
            continue  # the locustfile's catalogue read and run.sh's own calls, outside locust's statistics
        delta = sorted((le, c - before.get(key, {}).get(le, 0.0)) for le, c in after[key].items())
        total = delta[-1][1]
        if total <= 0:
            continue
        within = next((c for le, c in delta if abs(le - limit) < 1e-9), None)
        share = f"{100 * within / total:.1f}%" if within is not None else "n/a"
        p = [f"{1000 * quantile(q, delta):.1f}" for q in (0.5, 0.95, 0.99)]
        print(f"   {key[0] + ' ' + key[1]:<47} {int(total):>9} {p[0]:>7} {p[1]:>7} {p[2]:>7}  {share}")
    print("   (estimated inside the histogram's buckets ..10, 25, 50, 100, 250 ms..; the last column is exact)")
    return 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "table":
        sys.exit(table(args[0], float(args[1]), float(args[2])))
    if cmd == "failures":
        sys.exit(failures(args[0]))
    if cmd == "server":
        sys.exit(server(args[0], args[1], float(args[2])))
    sys.exit(f"unknown command {cmd}")
