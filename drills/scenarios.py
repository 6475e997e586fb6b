"""The four drills: Redis restarted empty, PostgreSQL stopped, processes killed, two of each."""

import json
import threading
import time
from collections import Counter

from common import LISTENER_PORT, REQUEST_TIMEOUT_MS, SETTINGS, WORKER_PORT, admin, request, wait_until
from infra import Stack
from load import Load
from counting import wait_settled


# --- the drills ---------------------------------------------------------------------------------------------


def split_products(stack, n_orders=200, n_reads=100):
    """Products orders and events touch, and others that only quotes and cached reads touch."""
    ids = stack.product_ids()
    return ids[:n_orders], ids[-n_reads:]


def warm(stack, products):
    """Puts every product's cached row and pricing state in Redis."""
    for pid in products:
        for base in stack.api_urls:
            request(base, "GET", f"/api/v1/products/{pid}/cached")
            request(base, "POST", "/api/v1/price", {"product_id": pid})


def drill_redis(infra, d):
    """Redis killed and restarted empty under quotes, orders and events."""
    stack = Stack(infra, "redis")
    try:
        stack.setup()
        buy, read = split_products(stack)
        load = Load(stack, buy, read)
        load.start(orders=3, events=2, quotes=2, reads=1)
        time.sleep(4)
        load.phase = "outage"
        infra.redis.kill()
        d.note("Redis killed (SIGKILL); restarting it empty in 5 s")
        time.sleep(5)
        infra.redis.start()
        d.note(f"Redis back, empty (no persistence); {infra.redis.cli('DBSIZE')} keys already rewritten when first "
               "counted")
        load.phase = "after"
        time.sleep(6)
        load.stop()
        d.check(stack.wait_healthy(30), f"not every process healthy again: {stack.health()}")
        d.load = load
        for kind in ("quote", "order", "event", "read"):
            d.no_5xx(kind, label=f"{kind}s during the whole drill")
            served = sum(1 for a in load.answers[(kind, "outage")] if a.status and a.status < 300)
            d.check(served > 0, f"no {kind} was answered 2xx while Redis was down")
        d.finish(stack, load)
    finally:
        stack.close()
        if not infra.redis.proc.alive():
            infra.redis.start()


class HealthPoller:
    """Asks the api's readiness every 100 ms in the background, keeping (time answered, Answer)."""

    def __init__(self, base):
        self.base, self.samples, self.stop_flag = base, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_flag.is_set():
            a = request(self.base, "GET", "/api/v1/health/ready", timeout=5)
            self.samples.append((a.end, a))
            time.sleep(0.1)

    def first(self, after, pred):
        return next((t for t, a in list(self.samples) if t > after and pred(a)), None)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(10)


def names_postgres(a):
    text = json.dumps(a.body).lower() if a.body is not None else ""
    return a.status == 503 and ("postgres" in text or "database" in text)


def drill_postgres(infra, d):
    """PostgreSQL stopped for 10 s: readiness, writes, cached reads, and recovery without restarts."""
    stack = Stack(infra, "postgres")
    try:
        stack.setup()
        buy, read = split_products(stack)
        warm(stack, read)
        load, poller = Load(stack, buy, read), HealthPoller(stack.api_urls[0])
        load.start(orders=2, events=1, quotes=2, reads=2)
        time.sleep(4)
        stopped_at, restarting_at, started_at = postgres_outage(infra, stack, d, load, seconds=10)
        back = wait_until(lambda: poller.first(started_at, lambda a: a.status == 200), 20, 0.1)
        d.note(f"api ready again {back - started_at:.1f} s after PostgreSQL started" if back else
               "api never ready again")
        d.check(back, "api readiness not 200 within 20 s of PostgreSQL's return")
        time.sleep(6)
        load.stop()
        poller.stop()
        d.load = load
        check_outage(d, load, poller, stopped_at, restarting_at)
        check_recovered(stack, d, load)
        d.finish(stack, load)
    finally:
        stack.close()
        if not infra.pg.running():
            infra.pg.start()


def postgres_outage(infra, stack, d, load, seconds):
    """Stops PostgreSQL (fast shutdown) for `seconds` under load; returns when it stopped, when it was being
    started again, and when it was up."""
    load.phase = "stopping"
    infra.pg.stop("fast")
    stopped_at = time.monotonic()
    load.phase = "outage"
    d.note(f"PostgreSQL stopped (pg_ctl stop -m fast); starting it again in {seconds} s")
    time.sleep(seconds / 2)
    for name, (base, path) in stack.health_urls().items():
        a = request(base, "GET", path, timeout=5)
        d.note(f"{name} health while PostgreSQL is down: {a.status} {json.dumps(a.body)[:120]}")
    time.sleep(max(0.0, stopped_at + seconds - time.monotonic()))
    load.phase = "restarting"
    restarting_at = time.monotonic()
    infra.pg.start()
    load.phase = "after"
    return stopped_at, restarting_at, time.monotonic()


def check_recovered(stack, d, load):
    """Every process healthy again, none restarted, and new orders and events accepted."""
    d.check(stack.wait_healthy(20), f"not every process healthy after PostgreSQL returned: {stack.health()}")
    restarted = [p.name for p in stack.procs.values() if p.starts != 1 or not p.alive()]
    d.check(not restarted, f"processes died or were restarted: {restarted}")
    for kind in ("order", "event"):
        ok = sum(1 for a in load.answers[(kind, "after")] if a.status in (201, 202))
        d.check(ok > 0, f"no {kind} accepted after PostgreSQL returned")


def check_outage(d, load, poller, stopped_at, started_at):
    """Readiness named PostgreSQL within 2 s; orders got a quick 503 with a detail; cached reads kept answering.
    Judged on requests sent after PostgreSQL stopped and answered before it was started again (one that waited
    for a connection across the restart may rightly succeed)."""
    first = poller.first(stopped_at, names_postgres)
    latency = None if first is None else first - stopped_at
    d.note(f"readiness said 503 naming PostgreSQL {latency:.2f} s after it stopped" if first else
           "readiness never said 503 naming PostgreSQL")
    d.check(latency is not None and latency <= 2.0, f"readiness did not report PostgreSQL down within 2 s ({latency})")
    later_ok = [a for t, a in poller.samples if first and first < t < started_at and a.status == 200]
    d.check(not later_ok, f"readiness said 200 {len(later_ok)} times while PostgreSQL was down")
    orders = [a for a in load.answers[("order", "outage")] if a.end < started_at]
    bad = [a for a in orders if a.status != 503 or not a.detail()]
    slowest = max((a.ms for a in orders), default=0)
    d.note(f"orders during the outage: {len(orders)}, answered 503 with a detail: {len(orders) - len(bad)}, "
           f"slowest {slowest:.0f} ms, e.g. {orders[0].detail() if orders else None!r}")
    d.check(len(orders) > 0, "no order was sent during the outage")
    d.check(not bad, f"{len(bad)} orders during the outage not a 503 with a JSON detail: "
                     f"{[(a.status or a.error, str(a.body)[:80]) for a in bad[:3]]}")
    d.check(slowest <= REQUEST_TIMEOUT_MS + 1000, f"an order took {slowest:.0f} ms to be refused "
                                                  f"(REQUEST_TIMEOUT_MS={REQUEST_TIMEOUT_MS})")
    for kind in ("quote", "read"):
        answers = [a for a in load.answers[(kind, "outage")] if a.end < started_at]
        failed = [a for a in answers if a.status != 200]
        d.check(answers and not failed, f"cached {kind}s during the outage: {len(failed)} of {len(answers)} not 200: "
                                        f"{[(a.status or a.error, str(a.body)[:80]) for a in failed[:3]]}")
    events = [a for a in load.answers[("event", "outage")] if a.end < started_at]
    d.note(f"events published during the outage: {dict(Counter(a.status or a.error for a in events))}")


def task_state(stack, task_id):
    a = request(stack.api_urls[0], "GET", f"/api/v1/tasks/{task_id}", timeout=5)
    return a.body if a.status == 200 and isinstance(a.body, dict) else {}


def wait_task(stack, task_id, timeout):
    """The task's state once it finished (succeeded, failed, skipped), or as it is after `timeout`."""
    finished = ("succeeded", "failed", "skipped")
    wait_until(lambda: task_state(stack, task_id).get("status") in finished, timeout, 0.25)
    return task_state(stack, task_id)


def start_recalculation(stack):
    a = request(stack.api_urls[-1], "POST", "/api/v1/recalculate", None, admin())
    return a.body.get("task_id") if a.status == 202 and isinstance(a.body, dict) else None


def recalculate(stack, timeout):
    """Asks for a full recalculation until one succeeds: one that finds another run holding the lock (a
    market event's, say) ends `skipped` by design. Returns the last task's state and how many were skipped."""
    end, skipped, final = time.monotonic() + timeout, 0, {}
    while time.monotonic() < end:
        final = wait_task(stack, start_recalculation(stack), end - time.monotonic())
        if final.get("status") != "skipped":
            break
        skipped += 1
        time.sleep(0.5)
    return final, skipped


def drill_kill(infra, d):
    """SIGKILL the worker during orders and a recalculation, then the listener during an event burst."""
    stack = Stack(infra, "kill", products=30000, env={"RECALC_BATCH_SIZE": "20"})
    try:
        stack.setup()
        buy, read = split_products(stack)
        load = Load(stack, buy, read)
        load.start(orders=3, quotes=1)
        time.sleep(2)
        kill_worker_mid_recalculation(stack, d, load)
        time.sleep(2)
        load.phase = "kill-2"
        stack.proc("worker").kill()
        d.note("worker killed again (SIGKILL) during orders; restarted in 1 s")
        time.sleep(1)
        stack.start("worker")
        time.sleep(3)
        load.stop()
        final, skipped = recalculate(stack, 30)
        d.note(f"a new recalculation after the kills: {final.get('status')} ({final.get('processed')} products, "
               f"{skipped} skipped before it)")
        d.check(final.get("status") == "succeeded", f"a new recalculation after the kills did not succeed: {final}")
        kill_listener_mid_burst(stack, d, load)
        d.load = load
        d.finish(stack, load)
    finally:
        stack.close()


def kill_worker_mid_recalculation(stack, d, load):
    lock_key = "drill:lock:recalculate_global_lock"
    t1 = start_recalculation(stack)
    d.check(t1 is not None, "POST /api/v1/recalculate was not accepted")
    def midway():
        state = task_state(stack, t1)
        return state if state.get("status") == "running" and state.get("processed", 0) >= 3000 else None
    running = wait_until(midway, 20, 0.05)
    token = stack.infra.redis.cli("GET", lock_key)
    load.phase = "kill-1"
    stack.proc("worker").kill()
    d.check(bool(running), f"the recalculation never ran: {task_state(stack, t1)}")
    progress = f"{running['processed']}/{running['total']}" if running else "?"
    d.note(f"worker killed (SIGKILL) during orders and the recalculation at {progress} products; lock held with "
           f"{stack.infra.redis.cli('PTTL', lock_key)} ms left")
    time.sleep(1)
    stack.start("worker")
    ttl_s = int(SETTINGS["RECALC_LOCK_TTL_MS"]) / 1000
    expired = wait_until(lambda: stack.infra.redis.cli("GET", lock_key) != token, ttl_s + 3, 0.1)
    d.check(bool(token) and expired, f"the dead run's lock did not expire within {ttl_s + 3:.0f} s")
    final = wait_task(stack, t1, 30)
    d.note(f"the interrupted recalculation ended {final.get('status')} ({final.get('processed')}/{final.get('total')},"
           f" {final.get('attempts')} attempts)")
    d.check(final.get("status") == "succeeded", f"the interrupted recalculation did not finish: {final}")


def kill_listener_mid_burst(stack, d, load):
    load.phase = "burst"
    publishers = load.burst(events=1200, threads=4)
    def applied():
        n = int(stack.sql("SELECT count(*) FROM market_events WHERE status = 'applied'")[0][0])
        return n if n >= 150 else 0
    seen = wait_until(applied, 20, 0.05)
    stack.proc("listener").kill()
    d.note(f"listener killed (SIGKILL) during a burst of 1200 events, {seen} applied; restarted in 1 s")
    time.sleep(1)
    stack.start("listener")
    for t in publishers:
        t.join(60)
    wait_settled(stack, 30)
    metrics = scrape(f"127.0.0.1:{LISTENER_PORT}")
    claimed = metrics.get("listener_claimed_entries_total", 0)
    duplicates = metrics.get('market_events_total{outcome="duplicate"}', 0)
    d.note(f"the restarted listener claimed {claimed:.0f} entries the dead one left pending, and skipped "
           f"{duplicates:.0f} as already applied")


def scrape(base):
    """A process's /metrics as {name{labels}: value}."""
    a = request(base, "GET", "/metrics", timeout=5, text=True)
    text = a.body if a.status == 200 and isinstance(a.body, str) else ""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def drill_multi(infra, d):
    """Two of each binary side by side under load; one worker and one listener killed mid-way, not restarted."""
    stack = Stack(infra, "multi", counts=(2, 2, 2))
    try:
        stack.setup()
        buy, read = split_products(stack)
        load = Load(stack, buy, read)
        load.phase = "all-up"
        load.start(orders=3, events=2, quotes=2, reads=1)
        time.sleep(4)
        recalc = {}
        runner = threading.Thread(target=lambda: recalc.update(zip(("final", "skipped"), recalculate(stack, 40))))
        runner.start()
        time.sleep(3)
        check_shared(stack, d)
        load.phase = "one-down"
        stack.proc("worker", 1).kill()
        stack.proc("listener", 1).kill()
        d.note("worker-2 and listener-2 killed (SIGKILL) under load; the others must take their work")
        time.sleep(6)
        load.stop()
        runner.join(45)
        final = recalc.get("final", {})
        d.note(f"full recalculation asked through api-2 under load: {final.get('status')} (asked again "
               f"{recalc.get('skipped')} times after ending skipped, by design, while an event's run held the lock)")
        d.check(final.get("status") == "succeeded", f"the recalculation did not succeed: {final}")
        d.load = load
        for kind in ("quote", "order", "event", "read"):
            d.no_5xx(kind)
        d.finish(stack, load)
    finally:
        stack.close()


def metric_sum(metrics, name, label=""):
    return sum(v for k, v in metrics.items() if k.split("{")[0] == name and label in k)


def check_shared(stack, d):
    """Each worker and each listener did part of the work (side by side, not one idle beside the other)."""
    done = {}
    for kind, port, name, label in (("worker", WORKER_PORT, "jobs_total", 'outcome="succeeded"'),
                                    ("listener", LISTENER_PORT, "market_events_total", 'outcome="applied"')):
        for i in range(2):
            done[f"{kind}-{i + 1}"] = metric_sum(scrape(f"127.0.0.1:{port + i}"), name, label)
    d.note("work done side by side: " + ", ".join(f"{k} {v:.0f}" for k, v in done.items()))
    d.check(all(v > 0 for v in done.values()), f"a process did no work while its peer ran: {done}")
