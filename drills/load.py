"""Load that keeps a ledger: every purchase and event a client was told about, and what it was told."""

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from common import CLIENT_TIMEOUT, admin, request


# --- load: clients that keep a ledger of what they were told -------------------------------------------------


@dataclass
class Purchase:
    user_id: str
    key: str
    body: dict
    answers: list = field(default_factory=list)
    order_id: int | None = None

    @property
    def settled(self):
        return bool(self.answers) and not self.answers[-1].uncertain


@dataclass
class Event:
    event_id: str
    body: dict
    answers: list = field(default_factory=list)

    @property
    def accepted(self):
        return any(a.status == 202 for a in self.answers)

    @property
    def settled(self):
        return bool(self.answers) and not self.answers[-1].uncertain


class Load:
    """Threads sending orders, events, quotes and cached reads, each answer recorded under the current phase."""

    def __init__(self, stack, order_products, read_products):
        self.stack, self.order_products, self.read_products = stack, order_products, read_products
        self.phase = "before"
        self.answers = defaultdict(list)  # (kind, phase) -> [Answer]
        self.purchases, self.events = {}, {}
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = []
        self.seq = 0

    def next_id(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def api(self):
        return random.choice(self.stack.api_urls)

    def record(self, kind, phase, answer):
        with self.lock:
            self.answers[(kind, phase)].append(answer)

    def start(self, orders=0, events=0, quotes=0, reads=0, pause=0.02):
        for kind, n in (("order", orders), ("event", events), ("quote", quotes), ("read", reads)):
            for _ in range(n):
                t = threading.Thread(target=self.loop, args=(kind, pause), daemon=True)
                t.start()
                self.threads.append(t)

    def loop(self, kind, pause):
        action = {"order": self.order, "event": self.event, "quote": self.quote, "read": self.read}[kind]
        while not self.stop_flag.is_set():
            phase = self.phase
            self.record(kind, phase, action())
            time.sleep(pause)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT + 5)
        self.threads = []
        self.stop_flag.clear()

    def new_purchase(self):
        n = self.next_id()
        user = f"{self.stack.name}-u{n}"
        body = {"user_id": user, "product_id": random.choice(self.order_products), "quantity": random.randint(1, 3)}
        p = Purchase(user, f"{user}-key", body)
        with self.lock:
            self.purchases[user] = p
        return p

    def send_purchase(self, p):
        a = request(self.api(), "POST", "/api/v1/orders", p.body, {"Idempotency-Key": p.key})
        p.answers.append(a)
        if a.status == 201 and isinstance(a.body, dict):
            p.order_id = a.body.get("id")
        return a

    def order(self):
        return self.send_purchase(self.new_purchase())

    def new_event(self):
        eid = f"{self.stack.name}-e{self.next_id()}"
        body = {"event_id": eid, "event_type": "competitor_price", "category": f"drill-{eid}",
                "product_ids": [random.choice(self.order_products)],
                "multiplier": round(random.uniform(0.9, 1.2), 2), "source": "drill"}
        e = Event(eid, body)
        with self.lock:
            self.events[eid] = e
        return e

    def send_event(self, e):
        a = request(self.api(), "POST", "/api/v1/publish-market-event", e.body, admin())
        e.answers.append(a)
        return a

    def event(self):
        return self.send_event(self.new_event())

    def quote(self):
        body = {"product_id": random.choice(self.read_products), "user_location": random.choice(["NY", "TX", "US"])}
        return request(self.api(), "POST", "/api/v1/price", body)

    def read(self):
        return request(self.api(), "GET", f"/api/v1/products/{random.choice(self.read_products)}/cached")

    def burst(self, events, threads):
        """Publishes `events` new events as fast as `threads` clients can, in the background; returns the threads."""
        def publish(n):
            for _ in range(n):
                self.record("event", self.phase, self.event())
        workers = [threading.Thread(target=publish, args=(events // threads,), daemon=True) for _ in range(threads)]
        for t in workers:
            t.start()
        return workers

    def reconcile(self, attempts=4):
        """Retries every request left without a definite answer, with the same Idempotency-Key / event_id."""
        retried = 0
        for _ in range(attempts):
            open_p = [p for p in self.purchases.values() if not p.settled]
            open_e = [e for e in self.events.values() if not e.settled]
            if not open_p and not open_e:
                break
            retried += len(open_p) + len(open_e)
            for p in open_p:
                self.record("order", "reconcile", self.send_purchase(p))
            for e in open_e:
                self.record("event", "reconcile", self.send_event(e))
            time.sleep(0.5)
        return retried
