"""Load test of the Pricing Engine's api that mirrors real traffic.

Two kinds of users:

* ``Shopper`` (almost every user): quotes prices (``POST /api/v1/price``), reads products
  (``GET /api/v1/products/{id}`` and the Redis-backed ``GET /api/v1/products/{id}/cached``) and buys
  (``POST /api/v1/orders``). 90% of the products it touches come from a hot set (``HOT_PRODUCTS``, the first
  SKUs ``P-100``...), 10% from the long tail of the seeded catalogue. Orders come in three shapes:

  - quoted: the shopper orders a product it was quoted less than ``QUOTE_MAX_AGE`` seconds ago (or quotes it
    first), with ``quote_id``, its ``user_id``, ``expected_unit_price`` = the quoted price and an
    ``Idempotency-Key``; now and then the same request is sent again with the same key, as a client does after a
    timeout, and must replay the first order (201, ``Idempotent-Replayed: true``, the same order id);
  - seen price: the shopper orders at the ``current_price`` a product page showed it (no quote), with an
    ``Idempotency-Key``;
  - plain: product and quantity only (the shopper accepts the current price).

* ``Operator`` (``OPERATORS`` users, one by default, whatever ``-u`` is): publishes market events
  (``POST /api/v1/publish-market-event``: competitor prices for a category, demand shocks on hot products) and
  starts bulk recalculations (``POST /api/v1/recalculate``), with ``Authorization: Bearer $ADMIN_TOKEN``.

Every request is named by its route template (``name=``), so the statistics are per endpoint, not per id.

The 409 decision (see ``_order``):

* A seen-price order is refused with 409 when the price went up between the page view and the order (the
  demand surcharge rises as orders come in; market events move prices). That is the service keeping its
  promise "a customer is never charged more than they saw", a legitimate business answer, not an error: it
  is marked a success and counted (``orders_409_price_changed``), and the shopper does what a client should:
  accepts the ``current_price`` from the 409 body and retries once with the same ``Idempotency-Key`` (the
  README: a refused attempt records nothing, retry with the same key once the cause is fixed). Counting them
  keeps them visible: a 409 rate that grows is a product question even when the run passes.
* A quoted order is only ever sent while its quote is valid, for the same product and ``user_id``, with the
  quoted price as ``expected_unit_price``. The README promises such a quote is honoured, so a 409 there is
  a failure (a lost or wrongly refused quote), as is any 400 (the catalogue is seeded with huge stock, so an
  order can never run out) and any 5xx.

Answers are checked, not only status codes: a quote is for the product asked and inside the price
guardrails; a quoted order charges the quoted price with ``price_source`` ``quote``; an order charges at most
the price the shopper saw; a replay returns the same order. A wrong answer is a failure with the reason.

Shoppers are verified: each gets its own JWT (HS256, ``JWT_HS256_SECRET``, the api's), with the ``member`` claim
for three in ten, and its quotes and orders are bound to it.

Environment: ``ADMIN_TOKEN``, ``JWT_HS256_SECRET``, ``SEED_PRODUCTS`` (1000), ``HOT_PRODUCTS`` (50), ``HOT_SHARE`` (0.9),
``OPERATORS`` (1), ``SHOPPER_WAIT_MIN``/``SHOPPER_WAIT_MAX`` (0.5/1.5 s of think time between actions),
``OPERATOR_WAIT_MIN``/``OPERATOR_WAIT_MAX`` (5/15 s), ``QUOTE_MAX_AGE`` (240 s, below the api's QUOTE_TTL of
300 s), ``REPLAY_SHARE`` (0.03); ``LOCUST_OUTCOMES_FILE`` and ``LOCUST_STATS_FILE``: where the business
counters and the final per-endpoint statistics are written as JSON at the end (locust/run.sh reads them).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.request
import uuid
from collections import Counter
from decimal import Decimal

import jwt
from gevent.lock import Semaphore
from locust import FastHttpUser, between, events, task
from locust.runners import MasterRunner, WorkerRunner

ADMIN_TOKEN = os.environ.get("ADMIN_TOKEN", "")
JWT_HS256_SECRET = os.environ.get("JWT_HS256_SECRET", "")
SEED_PRODUCTS = int(os.environ.get("SEED_PRODUCTS", "1000"))
HOT_PRODUCTS = int(os.environ.get("HOT_PRODUCTS", "50"))
HOT_SHARE = float(os.environ.get("HOT_SHARE", "0.9"))
OPERATORS = int(os.environ.get("OPERATORS", "1"))
QUOTE_MAX_AGE = float(os.environ.get("QUOTE_MAX_AGE", "240"))
REPLAY_SHARE = float(os.environ.get("REPLAY_SHARE", "0.03"))
OUTCOMES_FILE = os.environ.get("LOCUST_OUTCOMES_FILE", "")
STATS_FILE = os.environ.get("LOCUST_STATS_FILE", "")

LOCATIONS = ["US", "US", "US", "NY", "CA", "TX", "WA", "FL", "IL", "MA", "OR"]
CATEGORIES = ["electronics", "books", "home", "toys", "grocery", "sports", "fashion", "garden"]
# The price guardrails (PRICE_FLOOR_RATIO..PRICE_CEILING_RATIO x base): a quote outside them is wrong.
FLOOR, CEILING = Decimal(os.environ.get("PRICE_FLOOR_RATIO", "0.5")), Decimal(os.environ.get("PRICE_CEILING_RATIO", "2.0"))

# Route templates: one row of statistics per endpoint.
PRODUCT = "/api/v1/products/{id}"
PRODUCT_CACHED = "/api/v1/products/{id}/cached"
PRICE = "/api/v1/price"
ORDERS = "/api/v1/orders"
ORDERS_REPLAY = "/api/v1/orders (idempotent replay)"
PUBLISH = "/api/v1/publish-market-event"
RECALCULATE = "/api/v1/recalculate"

log = logging.getLogger("locustfile")

# Business outcomes that are not failures but must stay visible (409s, replays, retries). Per process; in a
# distributed run (--processes) the workers report theirs to the master (see the events at the bottom).
outcomes: Counter = Counter()


def money(value) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


# --- the catalogue --------------------------------------------------------------------------------------------
class Catalogue:
    """The seeded products (``pricing-api seed`` creates SKUs ``P-100``, ``P-101``, ... ``P-{99+N}``), with their
    integer ids as the api reports them (read once per process through the list endpoint, outside the
    statistics; a fresh database gives P-100 id 1, P-101 id 2, ..., the fallback if the list cannot be read)."""

    def __init__(self) -> None:
        self.products: list[tuple[int, str]] = []  # (id, sku), in SKU order
        self._lock = Semaphore()

    def load(self, host: str) -> None:
        with self._lock:
            if self.products:
                return
            found: dict[int, int] = {}  # SKU number -> id
            try:
                page = 1
                while len(found) < SEED_PRODUCTS:
                    url = f"{host.rstrip('/')}/api/v1/products?page={page}&page_size=100"
                    with urllib.request.urlopen(url, timeout=10) as r:
                        items = json.load(r).get("items", [])
                    if not items:
                        break
                    for p in items:
                        sku = str(p.get("sku", ""))
                        if sku.startswith("P-") and sku[2:].isdigit() and 100 <= int(sku[2:]) < 100 + SEED_PRODUCTS:
                            found[int(sku[2:])] = int(p["id"])
                    page += 1
            except Exception as e:  # noqa: BLE001 - fall back to the fresh-database ids
                log.warning("could not read the catalogue from %s (%s); assuming P-100 is id 1", host, e)
            if len(found) < min(SEED_PRODUCTS, HOT_PRODUCTS + 1):
                log.warning("found %d seeded products of %d; assuming ids 1..%d", len(found), SEED_PRODUCTS, SEED_PRODUCTS)
                found = {100 + i: 1 + i for i in range(SEED_PRODUCTS)}
            self.products = [(found[n], f"P-{n}") for n in sorted(found)]
            log.info("catalogue: %d products, hot set %s..%s", len(self.products), self.products[0][1],
                     self.products[min(HOT_PRODUCTS, len(self.products)) - 1][1])

    def pick(self) -> tuple[int, str]:
        """90% (HOT_SHARE) from the hot set, the rest from the long tail."""
        hot = min(HOT_PRODUCTS, len(self.products))
        if random.random() < HOT_SHARE or hot == len(self.products):
            return self.products[random.randrange(hot)]
        return self.products[random.randrange(hot, len(self.products))]


catalogue = Catalogue()


# --- shoppers ---------------------------------------------------------------------------------------------------
class Shopper(FastHttpUser):
    weight = 100
    wait_time = between(float(os.environ.get("SHOPPER_WAIT_MIN", "0.5")), float(os.environ.get("SHOPPER_WAIT_MAX", "1.5")))

    def on_start(self) -> None:
        catalogue.load(self.host)
        self.user_id = f"locust-{uuid.uuid4().hex[:12]}"
        self.location = random.choice(LOCATIONS)
        self.is_member = random.random() < 0.3
        claims = {"sub": self.user_id, "member": self.is_member, "exp": int(time.time()) + 24 * 3600}
        self.auth = {"Authorization": f"Bearer {jwt.encode(claims, JWT_HS256_SECRET, algorithm='HS256')}"}
        self.quotes: dict[int, tuple[str, Decimal, float]] = {}  # product id -> (quote_id, price, when)

    # --- reads ---------------------------------------------------------------------------------------------------
    @task(8)
    def quote(self) -> None:
        self._quote(*catalogue.pick())

    @task(3)
    def view_product(self) -> None:
        self._view(*catalogue.pick(), cached=False)

    @task(5)
    def view_product_cached(self) -> None:
        self._view(*catalogue.pick(), cached=True)

    # --- buying --------------------------------------------------------------------------------------------------
    @task(3)
    def buy(self) -> None:
        r = random.random()
        if r < 0.5:
            self._buy_quoted()
        elif r < 0.8:
            self._buy_seen_price()
        else:
            pid, sku = catalogue.pick()
            self._order({"product_id": random.choice([pid, sku]), "quantity": self._quantity()}, kind="plain")

    def _buy_quoted(self) -> None:
        now = time.monotonic()
        fresh = [pid for pid, (_, _, at) in self.quotes.items() if now - at < QUOTE_MAX_AGE]
        if fresh and random.random() < 0.7:
            pid = random.choice(fresh)
        else:
            pid, sku = catalogue.pick()
            if not self._quote(pid, sku):
                return
        quote_id, price, _ = self.quotes[pid]
        body = {
            "user_id": self.user_id,
            "items": [{"product_id": pid, "quantity": self._quantity(), "quote_id": quote_id, "expected_unit_price": float(price)}],
        }
        self._order(body, kind="quoted", key=uuid.uuid4().hex, quoted=price)

    def _buy_seen_price(self) -> None:
        pid, sku = catalogue.pick()
        product = self._view(pid, sku, cached=random.random() < 0.7)
        if product is None:
            return
        # current_price is the default shopper's (DEFAULT_LOCATION, not a member): this order is placed as one.
        body = {"product_id": pid, "quantity": self._quantity(), "user_id": self.user_id,
                "expected_unit_price": float(money(product["current_price"]))}
        self._order(body, kind="seen_price", key=uuid.uuid4().hex)

    @staticmethod
    def _quantity() -> int:
        return random.choices([1, 2, 3], weights=[80, 15, 5])[0]

    # --- the requests --------------------------------------------------------------------------------------------
    def _quote(self, pid: int, sku: str) -> bool:
        body = {"product_id": random.choice([pid, sku]), "user_location": self.location,
                "is_prime_member": self.is_member, "user_id": self.user_id}
        with self.client.post(PRICE, json=body, headers=self.auth, name=PRICE, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")
                return False
            q = resp.json()
            price, base = money(q["final_price"]), money(q["base_price"])
            if q["product_id"] != pid or q["sku"] != sku:
                resp.failure(f"wrong product: asked {pid}/{sku}, quoted {q['product_id']}/{q['sku']}")
                return False
            if not (base * FLOOR - Decimal("0.01") <= price <= base * CEILING + Decimal("0.01")) or not q.get("quote_id"):
                resp.failure(f"quote outside the guardrails or without an id: {q}")
                return False
            self.quotes[pid] = (q["quote_id"], price, time.monotonic())
            return True

    def _view(self, pid: int, sku: str, cached: bool):
        url, name = (f"/api/v1/products/{pid}/cached", PRODUCT_CACHED) if cached else (f"/api/v1/products/{pid}", PRODUCT)
        with self.client.get(url, headers=self.auth, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")
                return None
            p = resp.json()
            if p.get("id") != pid or p.get("sku") != sku or money(p.get("current_price", 0)) <= 0:
                resp.failure(f"wrong product: asked {pid}/{sku}, got {p}")
                return None
            if cached:
                outcomes[f"cached_{resp.headers.get('X-Cache', 'no-header').lower()}"] += 1
            return p

    def _order(self, body: dict, kind: str, key: str | None = None, quoted: Decimal | None = None, retry: bool = False) -> None:
        headers = {**self.auth, "Idempotency-Key": key} if key else self.auth
        with self.client.post(ORDERS, json=body, headers=headers, name=ORDERS, catch_response=True) as resp:
            outcomes[f"orders_{kind}_{'retry_' if retry else ''}{resp.status_code}"] += 1
            if resp.status_code == 409 and kind == "seen_price":
                # The price rose since the shopper saw it: the documented refusal, not an error (module doc).
                detail = resp.json()
                if "current_price" not in detail:
                    resp.failure(f"409 without current_price: {resp.text[:200]}")
                    return
                resp.success()
                outcomes["orders_409_price_changed"] += 1
                if not retry:  # accept the new price and retry once, with the same key
                    body = dict(body, expected_unit_price=float(money(detail["current_price"])))
                    self._order(body, kind, key=key, retry=True)
                return
            if resp.status_code != 201:
                resp.failure(f"{kind} order: {resp.status_code}: {resp.text[:300]}")
                return
            order = resp.json()
            problem = self._check_order(body, order, quoted)
            if problem:
                resp.failure(f"{kind} order: {problem}")
                return
        if key and random.random() < REPLAY_SHARE:
            self._replay(body, key, order)

    @staticmethod
    def _check_order(body: dict, order: dict, quoted: Decimal | None) -> str | None:
        if order.get("status") not in ("pending", "processing", "completed"):
            return f"status {order.get('status')!r} right after placing"
        items = order.get("items") or []
        if len(items) != 1:
            return f"expected one line, got {items}"
        line = items[0]
        asked = body["items"][0] if "items" in body else body
        if line.get("quantity") != asked.get("quantity", 1):
            return f"quantity {line.get('quantity')} for {asked.get('quantity', 1)} asked"
        unit = money(line["unit_price"])
        if quoted is not None and (unit != quoted or line.get("price_source") != "quote"):
            return f"quoted {quoted}, charged {unit} ({line.get('price_source')})"
        if "expected_unit_price" in asked and unit > money(asked["expected_unit_price"]):
            return f"charged {unit}, more than the {asked['expected_unit_price']} the shopper saw"
        if money(order["total_price"]) != unit * line["quantity"]:
            return f"total {order['total_price']} is not {unit} x {line['quantity']}"
        return None

    def _replay(self, body: dict, key: str, first: dict) -> None:
        """A client retrying after a timeout: the same body and key must give the first order back."""
        with self.client.post(ORDERS, json=body, headers={**self.auth, "Idempotency-Key": key}, name=ORDERS_REPLAY, catch_response=True) as resp:
            outcomes[f"orders_replay_{resp.status_code}"] += 1
            if resp.status_code != 201:
                resp.failure(f"replay: {resp.status_code}: {resp.text[:200]}")
            elif resp.headers.get("Idempotent-Replayed", "").lower() != "true" or resp.json().get("id") != first["id"]:
                resp.failure(f"replay bought again: first order {first['id']}, got {resp.json().get('id')} "
                             f"(Idempotent-Replayed: {resp.headers.get('Idempotent-Replayed')})")


# --- the operator -------------------------------------------------------------------------------------------------
class Operator(FastHttpUser):
    """Rare: one by default (fixed_count), however many shoppers there are."""

    fixed_count = OPERATORS
    wait_time = between(float(os.environ.get("OPERATOR_WAIT_MIN", "5")), float(os.environ.get("OPERATOR_WAIT_MAX", "15")))

    def on_start(self) -> None:
        catalogue.load(self.host)
        self.auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    @task(3)
    def publish_market_event(self) -> None:
        if random.random() < 0.5:
            event = {"event_type": "competitor_price", "category": random.choice(CATEGORIES),
                     "multiplier": round(random.uniform(0.9, 1.1), 2), "source": "locust-competitor-feed"}
        else:
            hot = catalogue.products[: min(HOT_PRODUCTS, len(catalogue.products))]
            event = {"event_type": "demand_shock", "product_ids": [sku for _, sku in random.sample(hot, min(5, len(hot)))],
                     "multiplier": round(random.uniform(1.0, 1.2), 2), "source": "locust-promo"}
        event["event_id"] = f"locust-{uuid.uuid4().hex}"
        with self.client.post(PUBLISH, json=event, headers=self.auth, name=PUBLISH, catch_response=True) as resp:
            if resp.status_code != 202:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")
            elif resp.json().get("event_id") != event["event_id"]:
                resp.failure(f"answered for another event: {resp.text[:200]}")
            else:
                outcomes["market_events_published"] += 1

    @task(1)
    def recalculate(self) -> None:
        with self.client.post(RECALCULATE, headers=self.auth, name=RECALCULATE, catch_response=True) as resp:
            if resp.status_code != 202:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")
            elif not resp.json().get("task_id"):
                resp.failure(f"no task_id: {resp.text[:200]}")
            else:
                outcomes["recalculations_started"] += 1


# --- business counters across processes ---------------------------------------------------------------------------
@events.report_to_master.add_listener
def _report(client_id, data, **_kw):
    data["outcomes"] = dict(outcomes)
    outcomes.clear()


@events.worker_report.add_listener
def _collect(client_id, data, **_kw):
    outcomes.update(data.get("outcomes", {}))


_env = None


@events.quit.add_listener
def _final(exit_code, **_kw):
    """At the very end (after the last worker report): the business counters, and the final statistics with
    the same percentiles as locust's summary (its _stats.csv is only rewritten periodically and can miss the
    last seconds)."""
    if _env is None or isinstance(_env.runner, WorkerRunner):
        return
    counts = dict(sorted(outcomes.items()))
    log.info("business outcomes (not failures): %s", json.dumps(counts))
    if OUTCOMES_FILE:
        with open(OUTCOMES_FILE, "w") as f:
            json.dump(counts, f, indent=1, sort_keys=True)
    if STATS_FILE:
        stats = _env.runner.stats
        entries = sorted(stats.entries.values(), key=lambda e: (e.name, e.method)) + [stats.total]
        rows = [{
            "method": e.method or "", "name": e.name, "requests": e.num_requests, "failures": e.num_failures,
            "p50": e.get_response_time_percentile(0.5), "p95": e.get_response_time_percentile(0.95),
            "p99": e.get_response_time_percentile(0.99), "max": e.max_response_time, "rps": e.total_rps,
        } for e in entries]
        with open(STATS_FILE, "w") as f:
            json.dump(rows, f, indent=1)


@events.init.add_listener
def _init(environment, **_kw):
    global _env
    _env = environment
    if not isinstance(environment.runner, MasterRunner) and not ADMIN_TOKEN:
        log.warning("ADMIN_TOKEN is not set: the operator's requests will be refused (401)")
