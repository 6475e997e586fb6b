"""The failover drill: the stack on a 6-node Redis Cluster (scripts/redis-cluster.sh, on ports and a state
file of its own), and two of its primaries killed with SIGKILL under quotes, orders, events and a hot-product
sale, one after the other: first the one holding the job queues, then the one holding the market-event
stream (with the demand counters and the recalculation lock). Each time a replica is promoted.

Why: on one Redis the `redis` drill shows what a restart with nothing in it costs. On a cluster the failure
that matters is a primary lost: until the others agree it is gone (the node timeout, 2 s) and its replica
wins the election, its slots have no primary, and every command for them fails. What the system promises:
quotes and cached reads keep answering (from PostgreSQL where Redis cannot serve them); orders and events
keep being accepted, any failure bounded to that window and answered so that a client retries with the same
Idempotency-Key / event_id; afterwards every order completes once, every event applies once, stock is exact,
and the hot product is not oversold. No process may die of it.

The cluster is this drill's own (whatever DRILLS_REDIS says), stopped at the end whatever happens; its
nodes' logs are kept beside the processes' logs.
"""

import os
import threading
import time
from collections import Counter

from cluster import RedisCluster
from common import SETTINGS, admin, request, wait_until
from infra import Stack
from load import Load, Purchase
from scenarios import split_products, warm

CLUSTER_PORT = int(os.environ.get("DRILLS_FAILOVER_PORT", "7500"))
CLUSTER_STATE = "/tmp/pricing-drill-failover-cluster"
PREFIX = SETTINGS["REDIS_KEY_PREFIX"]
# The primaries killed, in order, named by a key they serve (keys.rs names them).
VICTIMS = (("job queues", f"{PREFIX}:{{core:apalis:queues:list}}:queue:x"),
           ("event stream", f"{PREFIX}:market_events"))
WINDOW_BOUND = 10.0  # s from the SIGKILL to a replica serving every slot: node timeout 2 s, then the election
GRACE = 4.0  # s after that in which a request may still fail: its client finds the new primary (timeout 3 s)
HOT_UNITS, HOT_CLIENTS, HOT_PAUSE = 600, 4, 0.08  # about 40 orders/s: the sale spans both failovers


def drill_failover(infra, d):
    """Two primaries SIGKILLed in turn under load; quotes answer, orders and events are accepted, and each
    lands exactly once."""
    cluster = RedisCluster("failover-cluster", CLUSTER_PORT, CLUSTER_STATE, infra.logs)
    stack = Stack(infra, "failover", redis=cluster)
    try:
        cluster.start()
        stack.setup()
        buy, read = split_products(stack)
        warm(stack, read)
        load = Load(stack, buy, read)
        load.start(orders=3, events=2, quotes=2, reads=1)
        hot = HotSale(stack, load, d)
        time.sleep(4)
        flowing(stack, d)
        hot.start()
        windows = [fail_over(cluster, d, load, n + 1, what, key) for n, (what, key) in enumerate(VICTIMS)]
        hot.join()
        load.stop()
        d.load = load
        check_answers(d, load, [w for w in windows if w])
        check_processes(stack, d)
        d.finish(stack, load)
        hot.check()
    finally:
        stack.close()
        cluster.close()


def flowing(stack, d):
    """Waits (up to 10 s) until orders complete, so the kills meet a working pipeline: a fresh worker's
    first fetch sometimes waits a few seconds (seen on one Redis too)."""
    def counts():
        done, placed = (int(x) for x in stack.sql(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM orders")[0])
        return (done, placed) if done else None
    started = time.monotonic()
    done, placed = wait_until(counts, 10, 0.2) or (0, 0)
    d.note(f"before the first kill: {done} orders completed of {placed} placed (waited "
           f"{time.monotonic() - started:.1f} s for a completed one)")
    d.check(done > 0, "no order completed within 14 s of the load's start: the worker is not working")


def fail_over(cluster, d, load, n, what, key):
    """SIGKILLs the primary serving `key` and waits for its replica to take over; then 5 s of load.
    Returns the window (killed, every slot served again), or None when no replica took over."""
    port = cluster.owner(key)
    if not d.check(port, f"no live primary serves the {what} ({key})"):
        return None
    held, lag = cluster.node_cli(port, "DBSIZE"), cluster.replica_lag(port)
    load.phase = f"kill-{n}"
    killed = time.monotonic()
    cluster.kill_primary(port)
    ok = cluster.wait_ok()
    served = time.monotonic()
    load.phase = f"after-{n}"
    new = cluster.owner(key)
    d.note(f"primary {port} (the {what}'s) SIGKILLed holding {held} keys, {lag} bytes of writes not yet "
           f"acknowledged by its replica (acks come once a second); the replica ({new}) served every slot "
           f"{served - killed:.1f} s later")
    d.check(ok, f"no replica took over from primary {port} within 30 s: {cluster.status()}")
    d.check(served - killed <= WINDOW_BOUND, f"failover {n} took {served - killed:.1f} s (bound {WINDOW_BOUND} s)")
    time.sleep(5)
    return (killed, served) if ok else None


def started_at(a):
    return a.end - a.ms / 1000


def in_window(a, windows):
    """Whether a request was in flight during a failover, or sent within GRACE s of its end."""
    return any(a.end >= killed and started_at(a) <= served + GRACE for killed, served in windows)


def check_answers(d, load, windows):
    """Quotes and reads: no failure at all. Orders and events: failures only within a failover window, and
    some accepted during each."""
    counts = {}
    for kind in ("quote", "read", "order", "event", "hot"):
        answers = [a for (k, _), rows in load.answers.items() if k == kind for a in rows]
        failed = [a for a in answers if a.uncertain]
        outside = [a for a in failed if not in_window(a, windows)]
        counts[kind] = f"{len(failed)}/{len(answers)}"
        sample = [(a.status or a.error, str(a.detail() or a.body)[:80]) for a in (outside or failed)[:3]]
        if kind in ("quote", "read"):
            d.check(not failed, f"{len(failed)} {kind}s failed (5xx or no answer): {sample}")
        else:
            d.check(not outside, f"{len(outside)} {kind}s failed outside the failover windows: {sample}")
    d.note(f"5xx or no answer / sent, whole drill: {counts} (orders, events and hot orders that failed in a "
           f"failover window are re-sent with the same Idempotency-Key / event_id)")
    for phase in sorted({ph for _, ph in load.answers if ph.startswith("kill-")}):
        kinds = ("quote", "order", "event")
        accepted = {kind: sum(1 for a in load.answers[(kind, phase)] if a.status in (200, 201, 202)) for kind in kinds}
        slowest = {kind: round(max((a.ms for a in load.answers[(kind, phase)]), default=0)) for kind in kinds}
        d.note(f"during {phase}: accepted {accepted}, slowest (ms) {slowest}; orders/s {rate(load, phase):.0f} "
               f"(before: {rate(load, 'before'):.0f})")
        for kind in ("quote", "order"):
            d.check(accepted[kind] > 0, f"no {kind} accepted during {phase}")


def rate(load, phase):
    """Orders accepted per second in `phase`, over the time its requests spanned."""
    rows = [a for (_, ph), answers in load.answers.items() if ph == phase for a in answers]
    span = max((a.end for a in rows), default=0) - min((started_at(a) for a in rows), default=0)
    return sum(1 for a in load.answers[("order", phase)] if a.status == 201) / span if span > 0 else 0.0


def check_processes(stack, d):
    """No process died or restarted, and every one is ready again."""
    dead = [p.name for p in stack.procs.values() if p.starts != 1 or not p.alive()]
    d.check(not dead, f"processes died on the failover: {dead} (exit {[stack.procs[n].popen.poll() for n in dead]})")
    d.check(stack.wait_healthy(20), f"not every process healthy after the failovers: {stack.health()}")


class HotSale:
    """A product with HOT_UNITS units, sold one unit per order by HOT_CLIENTS clients until it is gone.
    Each order is retried with its Idempotency-Key until it gets a definite answer; an accepted one joins
    the load's ledger, so the common counting checks it completed once (a refused one created no order)."""

    CATEGORY = "drill-hot"  # counting.py leaves this category out of the seed-stock check

    def __init__(self, stack, load, d):
        self.stack, self.load, self.d = stack, load, d
        created = request(stack.api_urls[0], "POST", "/api/v1/products",
                          {"name": "Hot failover", "price": 10.0, "stock": HOT_UNITS, "category": self.CATEGORY},
                          admin())
        self.pid = created.body.get("id") if created.status == 201 and isinstance(created.body, dict) else None
        if not self.pid:
            raise RuntimeError(f"could not create the hot product: {created.status} {created.body}")
        self.accepted, self.refused, self.sold_out = 0, Counter(), False
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(HOT_CLIENTS)]

    def start(self):
        self.deadline = time.monotonic() + 35
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(max(1.0, self.deadline - time.monotonic() + 15))

    def client(self):
        while not self.sold_out and time.monotonic() < self.deadline:
            user = f"{self.stack.name}-hot-u{self.load.next_id()}"
            p = Purchase(user, f"{user}-key", {"user_id": user, "product_id": self.pid, "quantity": 1})
            a = self.load.send_purchase(p)
            self.load.record("hot", self.load.phase, a)
            while a.uncertain and time.monotonic() < self.deadline + 10:
                time.sleep(0.2)
                a = self.load.send_purchase(p)
                self.load.record("hot", self.load.phase, a)
            with self.load.lock:
                if a.status == 201 or a.uncertain:  # uncertain: the final reconciliation settles it
                    self.load.purchases[user] = p
                    self.accepted += a.status == 201
                else:
                    gone = a.status == 400 and "insufficient stock" in str(a.detail()).lower()
                    self.refused["sold out" if gone else (a.status, str(a.detail())[:80])] += 1
                    self.sold_out = self.sold_out or gone
            time.sleep(HOT_PAUSE)

    def check(self):
        stock, sold, orders = (int(x) for x in self.stack.sql(f"""
            SELECT p.stock, coalesce(sum(oi.quantity) FILTER (WHERE o.status NOT IN ('failed', 'cancelled')), 0),
                   count(DISTINCT o.id)
            FROM products p LEFT JOIN order_items oi ON oi.product_id = p.id LEFT JOIN orders o ON o.id = oi.order_id
            WHERE p.id = {self.pid} GROUP BY p.stock""")[0])
        accepted = sum(1 for p in self.load.purchases.values()
                       if p.body.get("product_id") == self.pid and p.order_id is not None)
        self.d.note(f"hot product ({HOT_UNITS} units) sold across the failovers: {accepted} orders accepted, "
                    f"refused {dict(self.refused)}; in PostgreSQL {orders} orders, {sold} units, stock left {stock}")
        oversold = max(0, sold - HOT_UNITS, accepted - HOT_UNITS)
        self.d.check(oversold == 0, f"hot product oversold by {oversold} units")
        self.d.check(stock == HOT_UNITS - sold, f"hot product stock {stock} is not {HOT_UNITS} - {sold} sold")
        self.d.check(orders == accepted, f"hot product: {orders} orders in PostgreSQL for {accepted} accepted")
        self.d.check(stock == 0 and self.sold_out, f"hot product not sold out ({stock} left): no contention seen")
        other = {k: v for k, v in self.refused.items() if k != "sold out"}
        self.d.check(not other, f"hot orders refused other than sold out: {other}")
