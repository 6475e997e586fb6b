"""Counting what the system promised, from the database's own audit triggers, and a drill's result."""

import time
from collections import Counter, defaultdict

from common import CLIENT_TIMEOUT, SEED_STOCK, say, wait_until


# --- counting -----------------------------------------------------------------------------------------------


def wait_settled(stack, timeout):
    """Waits until no order is pending/processing, no event received, no task queued/running."""
    def left():
        row = stack.sql(
            "SELECT (SELECT count(*) FROM orders WHERE status IN ('pending', 'processing')),"
            " (SELECT count(*) FROM market_events WHERE status = 'received'),"
            " (SELECT count(*) FROM tasks WHERE status IN ('queued', 'running'))")[0]
        return [int(x) for x in row]
    start = time.monotonic()
    wait_until(lambda: sum(left()) == 0, timeout, 0.5)
    return time.monotonic() - start


def audit_counts(stack):
    counts = defaultdict(Counter)
    for kind, key, n in stack.sql("SELECT kind, key, count(*) FROM drill_audit GROUP BY kind, key"):
        counts[kind][key] = int(n)
    return counts


def stock_mismatches(stack):
    """Products whose stock is not seed stock minus the quantities of their live (not failed/cancelled) orders.
    A drill's own hot product (category `drill-hot`, its own stock) is checked by that drill (failover.py)."""
    row = stack.sql(f"""
        SELECT count(*), coalesce(sum(abs(p.stock - ({SEED_STOCK} - coalesce(s.q, 0)))), 0)
        FROM products p LEFT JOIN (
            SELECT oi.product_id, sum(oi.quantity) AS q FROM order_items oi JOIN orders o ON o.id = oi.order_id
            WHERE o.status NOT IN ('failed', 'cancelled') GROUP BY oi.product_id) s ON s.product_id = p.id
        WHERE p.stock <> {SEED_STOCK} - coalesce(s.q, 0) AND p.category <> 'drill-hot'""")[0]
    return int(row[0]), int(row[1])


def count_orders(stack, load, audit):
    rows = stack.sql("SELECT id, coalesce(user_id, guest_label, ''), status, attempts FROM orders")
    by_user, retakes = defaultdict(list), 0
    for oid, user, status, attempts in rows:
        by_user[user].append((int(oid), status))
        retakes += int(attempts) - 1
    ours = [o for user, orders in by_user.items() if user in load.purchases for o in orders]
    statuses = Counter(s for _, s in ours)
    accepted = [p for p in load.purchases.values() if p.order_id is not None]
    lost = [p.user_id for p in accepted if p.order_id not in {o for o, _ in by_user.get(p.user_id, [])}]
    extra = sum(len(v) - 1 for u, v in by_user.items() if u in load.purchases and len(v) > 1)
    twice_completed = sum(1 for n in audit["order:completed"].values() if n > 1)
    bad_products, bad_units = stock_mismatches(stack)
    return {
        "accepted": len(accepted), "created": len(ours), "completed": statuses["completed"],
        "failed": statuses["failed"], "left": statuses["pending"] + statuses["processing"],
        "lost": len(lost), "lost_ids": lost[:5],
        "duplicated": extra + twice_completed + bad_products,
        "extra_orders": extra, "completed_twice": twice_completed,
        "stock_bad_products": bad_products, "stock_bad_units": bad_units,
        "foreign": len(rows) - len(ours),
        "unresolved": sum(1 for p in load.purchases.values() if not p.settled),
        "refused": [p.answers[-1] for p in load.purchases.values() if p.settled and p.order_id is None],
        "retakes": retakes,
    }


def count_events(stack, load, audit):
    status = {eid: st for eid, st in stack.sql("SELECT event_id, status FROM market_events")}
    accepted = [e.event_id for e in load.events.values() if e.accepted]
    # Lost: accepted but not applied, or marked applied without its signal ever being written.
    lost = [eid for eid in accepted if status.get(eid) != "applied" or audit["signal"][eid] == 0]
    dup = {eid for eid, n in audit["signal"].items() if n > 1} | {
        eid for eid, n in audit["event:applied"].items() if n > 1}
    statuses = Counter(status.values())
    return {
        "accepted": len(accepted), "applied": len(accepted) - len(lost), "lost": len(lost), "lost_ids": lost[:5],
        "duplicated": len(dup), "duplicated_ids": sorted(dup)[:5],
        "left": statuses["received"], "dead": statuses["dead_letter"],
        "unresolved": sum(1 for e in load.events.values() if not e.settled),
    }


def count_tasks(stack):
    return {status: int(n) for status, n in stack.sql("SELECT status, count(*) FROM tasks GROUP BY status")}


# --- a drill's result ---------------------------------------------------------------------------------------


class Drill:
    """What one drill counted and which guarantees failed."""

    def __init__(self, name, title, budget):
        self.name, self.title, self.budget = name, title, budget
        self.started = time.monotonic()
        self.failures, self.notes = [], []
        self.ended = None
        self.orders, self.events, self.tasks, self.load = {}, {}, {}, None

    def remaining(self):
        return max(1.0, self.budget - (time.monotonic() - self.started))

    def check(self, ok, message):
        if not ok:
            self.failures.append(message)
        return ok

    def note(self, message):
        self.notes.append(message)
        say(f"  {message}")

    @property
    def elapsed(self):
        return (self.ended or time.monotonic()) - self.started

    def finish(self, stack, load, settle_timeout=60):
        """Stops the load, settles the ledger, waits for the backlog, counts, and checks the common guarantees."""
        load.stop()
        load.phase = "reconcile"
        retried = load.reconcile()
        if retried:
            replayed = sum(1 for a in load.answers[("order", "reconcile")] if a.replayed)
            self.note(f"re-sent {retried} requests that had no definite answer (same Idempotency-Key/event_id); "
                      f"{replayed} orders replayed as already placed")
        took = wait_settled(stack, min(settle_timeout, self.remaining()))
        self.note(f"backlog settled {took:.1f} s after the load stopped")
        audit = audit_counts(stack)
        self.orders, self.events, self.tasks = count_orders(stack, load, audit), count_events(stack, load, audit), \
            count_tasks(stack)
        self.load = load
        self.common_checks()

    def common_checks(self):
        o, e, t = self.orders, self.events, self.tasks
        self.check(o["accepted"] > 0, "no order was accepted at all")
        self.check(o["lost"] == 0, f"{o['lost']} accepted orders missing from the database, e.g. {o['lost_ids']}")
        self.check(o["extra_orders"] == 0, f"{o['extra_orders']} purchases created more than one order")
        self.check(o["completed_twice"] == 0, f"{o['completed_twice']} orders completed more than once")
        self.check(o["stock_bad_products"] == 0,
                   f"stock wrong on {o['stock_bad_products']} products ({o['stock_bad_units']} units)")
        self.check(o["left"] == 0, f"{o['left']} orders left pending/processing")
        self.check(o["failed"] == 0, f"{o['failed']} orders failed")
        self.check(o["created"] == o["completed"], f"{o['created'] - o['completed']} orders not completed")
        self.check(o["foreign"] == 0, f"{o['foreign']} orders in the database no client asked for")
        self.check(o["unresolved"] == 0, f"{o['unresolved']} purchases never got a definite answer")
        self.check(not o["refused"], f"{len(o['refused'])} purchases refused: "
                                     f"{[(a.status, a.detail()) for a in o['refused'][:3]]}")
        self.check(e["accepted"] > 0, "no event was accepted at all")
        self.check(e["lost"] == 0, f"{e['lost']} accepted events not applied, e.g. {e['lost_ids']}")
        self.check(e["duplicated"] == 0, f"{e['duplicated']} events applied more than once, e.g. {e['duplicated_ids']}")
        self.check(e["left"] == 0, f"{e['left']} events left received")
        self.check(e["dead"] == 0, f"{e['dead']} events dead-lettered")
        self.check(e["unresolved"] == 0, f"{e['unresolved']} events never got a definite answer")
        unfinished = t.get("queued", 0) + t.get("running", 0)
        self.check(unfinished == 0, f"{unfinished} tasks left queued/running")
        self.check(t.get("failed", 0) == 0, f"{t.get('failed', 0)} tasks failed")
        hangs = sum(1 for answers in self.load.answers.values() for a in answers if a.error == "timeout")
        self.check(hangs == 0, f"{hangs} requests hung (no answer within {CLIENT_TIMEOUT:.0f} s)")

    def no_5xx(self, kind, phases=None, label=None):
        """Every `kind` request (in `phases`, default all) got an answer below 500."""
        bad = [a for (k, ph), answers in self.load_answers().items() if k == kind and (phases is None or ph in phases)
               for a in answers if a.uncertain]
        sample = ", ".join(f"{a.status or a.error} {str(a.detail() or a.body)[:80]}" for a in bad[:3])
        return self.check(not bad, f"{label or kind}: {len(bad)} answers were 5xx or none ({sample})")

    def load_answers(self):
        return self.load.answers if self.load else {}

    def report(self):
        self.ended = self.ended or time.monotonic()
        status = "PASS" if not self.failures else "FAIL"
        print(f"\n== {self.name}: {self.title} -- {status} in {self.elapsed:.0f} s")
        print_tally(self.load_answers())
        o, e, t = self.orders, self.events, self.tasks
        if o:
            print(f"   orders: created {o['created']}, completed {o['completed']}, duplicated {o['duplicated']}, "
                  f"lost {o['lost']}, failed {o['failed']}, left pending/processing {o['left']}  "
                  f"(client: {o['accepted']} accepted, {len(o['refused'])} refused; stock wrong on "
                  f"{o['stock_bad_products']} products; {o['retakes']} processing attempts beyond the first)")
        if e:
            print(f"   events: accepted {e['accepted']}, applied {e['applied']}, duplicated {e['duplicated']}, "
                  f"lost {e['lost']}, left received {e['left']}, dead-lettered {e['dead']}")
        if t:
            print(f"   tasks: {', '.join(f'{k} {v}' for k, v in sorted(t.items()))}")
        for n in self.notes:
            print(f"   - {n}")
        for f in self.failures:
            print(f"   FAILED: {f}")


def print_tally(answers):
    """One line per (kind, phase): how many requests, by answer class, and the slowest."""
    if not answers:
        return
    print(f"   {'requests':<8} {'phase':<10} {'sent':>6} {'2xx':>6} {'4xx':>5} {'5xx':>5} {'hang':>5} {'conn':>5} "
          f"{'max ms':>8}")
    for (kind, phase), rows in sorted(answers.items()):
        if not rows:  # looked up (an empty defaultdict entry), never sent
            continue
        c = Counter("hang" if a.error == "timeout" else "conn" if a.error else f"{a.status // 100}xx" for a in rows)
        print(f"   {kind:<8} {phase:<10} {len(rows):>6} {c['2xx']:>6} {c['4xx']:>5} {c['5xx']:>5} {c['hang']:>5} "
              f"{c['conn']:>5} {max(a.ms for a in rows):>8.0f}")
