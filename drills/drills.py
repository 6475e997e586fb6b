#!/usr/bin/env python3
"""Failure drills for the Pricing Engine, run against the real release binaries.

Why: the test suite runs the binaries against healthy PostgreSQL and Redis. It cannot show what happens when
Redis restarts empty, PostgreSQL goes away, or a worker or listener is killed with SIGKILL in the middle of
its work. These drills do exactly that, under load, and then count what the system promises:

- every order a client was told about (201) exists once, completes once, and changed the stock once;
- every market event accepted (202) is applied exactly once;
- nothing is left pending/processing/received, no task left queued/running;
- reads and quotes keep answering, writes fail fast with a clear JSON detail, nothing hangs.

"Once" is counted by the database itself: the drill installs audit triggers (in its throwaway database) that
record every order and event status transition and every market signal write. Each event carries its own
category (`drill-<event id>`), so the number of `market_multipliers` writes of that scope is the number of
times its effect was applied. Stock is checked as seed stock minus the quantities of every order that is
not failed/cancelled, product by product.

Each run starts its own PostgreSQL 15 cluster and redis-server on spare ports (never the machine's shared
5432/6379, which other work uses), so it can stop and restart them freely; each drill gets a fresh database
and an empty Redis. Client-side ledgers keep every purchase (guest checkout: a unique guest label and Idempotency-Key) and every
event id; a request without a definite answer is retried at the end with the same key or event id, as the
README tells clients to, so each one ends with exactly one outcome.

The balancer drill (balancer.py) runs the repo's HAProxy configuration with Debian's haproxy in front of three
api processes, kills one under load and starts it again, and also checks that a quote signed by one api is
honoured by another and that three apis selling one hot product never oversell it.

The failover drill (failover.py) runs the stack on a 6-node Redis Cluster of its own and SIGKILLs two of its
primaries in turn under load: their replicas take over, and every guarantee above must still hold.
DRILLS_REDIS=cluster runs every drill's stack on a cluster (scripts/redis-cluster.sh, ports 7400-7405)
instead of the one redis-server; there the default is kill, multi and failover, and redis is refused.

Usage: scripts/drills.sh [redis] [postgres] [kill] [multi] [balancer] [failover]      (default: all six)
Exit status 0 when every guarantee held, 1 otherwise; the temp dir with every process's log is kept and
printed on failure (DRILLS_KEEP=1 keeps it always).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

from common import TOTAL_BUDGET, say
from infra import Infra
from counting import Drill
from scenarios import drill_kill, drill_multi, drill_postgres, drill_redis
from balancer import drill_balancer
from failover import drill_failover


DRILLS = {
    # name: (title, drill, seconds it may take at most, waiting for the backlog included; usually 15 to 35)
    "redis": ("Redis restarted empty under load", drill_redis, 70),
    "postgres": ("PostgreSQL stopped for 10 s", drill_postgres, 80),
    "kill": ("worker and listener killed with SIGKILL", drill_kill, 100),
    "multi": ("two api, two worker, two listener processes", drill_multi, 70),
    "balancer": ("three apis behind HAProxy, one killed and restarted", drill_balancer, 90),
    "failover": ("Redis Cluster primaries SIGKILLed, replicas promoted", drill_failover, 90),
}
# DRILLS_REDIS=cluster: the drills whose point is Redis under failure, on a cluster. The redis drill (one
# Redis restarted empty) has no meaning there: the failover drill is the cluster's version of it.
CLUSTER_DRILLS = ["kill", "multi", "failover"]


def run_drill(infra, name):
    title, fn, budget = DRILLS[name]
    say(f"drill {name}: {title}")
    d = Drill(name, title, budget)
    try:
        fn(infra, d)
    except Exception as e:  # a broken drill is a failed drill, with its reason
        d.failures.append(f"drill aborted: {type(e).__name__}: {e}")
    d.report()
    return d


def summary(results):
    print("\n== summary")
    print(f"   {'drill':<9} {'result':<6} {'orders created/completed/dup/lost/left':>40} "
          f"{'events applied/dup/lost/left':>30} {'secs':>5}")
    for d in results:
        o, e = d.orders, d.events
        ocell = f"{o.get('created', '-')}/{o.get('completed', '-')}/{o.get('duplicated', '-')}/" \
                f"{o.get('lost', '-')}/{o.get('left', '-')}"
        ecell = f"{e.get('applied', '-')}/{e.get('duplicated', '-')}/{e.get('lost', '-')}/{e.get('left', '-')}"
        print(f"   {d.name:<9} {'PASS' if not d.failures else 'FAIL':<6} {ocell:>40} {ecell:>30} {d.elapsed:>5.0f}")


def run_all(infra, names, started):
    """Every drill asked for, within the run's budget."""
    results = []
    for name in names:
        if time.monotonic() - started > TOTAL_BUDGET:
            d = Drill(name, DRILLS[name][0], 0)
            d.failures.append(f"not run: the whole run's budget of {TOTAL_BUDGET:.0f} s was spent")
            d.ended = d.started
            results.append(d)
        else:
            results.append(run_drill(infra, name))
    return results


def main(argv):
    cluster = os.environ.get("DRILLS_REDIS", "single") == "cluster"
    names = argv or (CLUSTER_DRILLS if cluster else list(DRILLS))
    if cluster and "redis" in names:
        print("drills: the redis drill needs one redis-server (DRILLS_REDIS=single); on a cluster run failover",
              file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        print(f"unknown drill(s) {unknown}; choose from {list(DRILLS)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    started = time.monotonic()
    try:
        infra = Infra()
    except OSError as e:
        print(f"drills: {e} (build the release binaries, or run without SKIP_BUILD=1)", file=sys.stderr)
        return 2
    say(f"drills {names}; logs in {infra.logs}")
    try:
        infra.start()
        results = run_all(infra, names, started)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"drills: could not start PostgreSQL/Redis: {e}; logs in {infra.logs}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        print(f"drills: interrupted; every process stopped; logs in {infra.logs}", file=sys.stderr)
        return 124
    finally:
        infra.close()
    summary(results)
    failed = any(d.failures for d in results)
    print(f"\n   total {time.monotonic() - started:.0f} s; {'FAILED' if failed else 'all guarantees held'}")
    if failed or os.environ.get("DRILLS_KEEP") == "1":
        print(f"   logs of every process: {infra.logs}")
    else:
        shutil.rmtree(infra.tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
