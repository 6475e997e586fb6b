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
and an empty Redis. Client-side ledgers keep every purchase (unique user_id and Idempotency-Key) and every
event id; a request without a definite answer is retried at the end with the same key or event id, as the
README tells clients to, so each one ends with exactly one outcome.

Usage: scripts/drills.sh [redis] [postgres] [kill] [multi]      (default: all four)
Exit status 0 when every guarantee held, 1 otherwise; the temp dir with every process's log is kept and
printed on failure (DRILLS_KEEP=1 keeps it always).
"""

import http.client
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = os.environ.get("DRILLS_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_PORT = int(os.environ.get("DRILLS_PG_PORT", "5442"))
REDIS_PORT = int(os.environ.get("DRILLS_REDIS_PORT", "6390"))
API_PORT, WORKER_PORT, LISTENER_PORT = 8310, 8320, 8330  # + index of the process (0, 1)
ADMIN_TOKEN = "drill-admin-token"
SEED_STOCK = 1_000_000
CLIENT_TIMEOUT = 10.0  # a request not answered within this counts as a hang
REQUEST_TIMEOUT_MS = 5000
TOTAL_BUDGET = float(os.environ.get("DRILLS_BUDGET_SECS", "300"))  # no drill starts after this

# Short settings so failures are noticed and repaired within seconds (names: crates/core/src/config.rs).
SETTINGS = {
    "REDIS_KEY_PREFIX": "drill",
    "ADMIN_TOKEN": ADMIN_TOKEN,
    "QUOTE_SIGNING_KEY": "drill-quote-signing-key",
    "DATABASE_MAX_CONNECTIONS": "10",
    "ORDER_PROCESSING_DELAY_MS": "50",
    "ORDER_STALE_AFTER_SECS": "3",
    "SWEEP_INTERVAL_MS": "500",
    "RECALC_LOCK_TTL_MS": "3000",
    "RECALC_BATCH_SIZE": "200",
    "LISTENER_BATCH_SIZE": "50",
    "LISTENER_BLOCK_MS": "500",
    "LISTENER_CLAIM_IDLE_MS": "2000",
    "LISTENER_RESEND_AFTER_MS": "2000",
    "REQUEST_TIMEOUT_MS": str(REQUEST_TIMEOUT_MS),
    "DATABASE_ACQUIRE_TIMEOUT_MS": "2000",
    "SHUTDOWN_TIMEOUT": "5",
    "RUST_LOG": "info,sqlx=warn",
    "LOG_FORMAT": "text",
    "NO_COLOR": "1",
}

AUDIT_SQL = """
CREATE TABLE drill_audit (kind TEXT NOT NULL, key TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION drill_audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO drill_audit (kind, key) VALUES ('order:' || NEW.status, NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER drill_audit_order AFTER UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION drill_audit_order();
CREATE FUNCTION drill_audit_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO drill_audit (kind, key) VALUES ('event:' || NEW.status, NEW.event_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER drill_audit_event AFTER UPDATE OF status ON market_events
    FOR EACH ROW EXECUTE FUNCTION drill_audit_event();
CREATE FUNCTION drill_audit_signal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.scope LIKE 'category:drill-%' THEN
        INSERT INTO drill_audit (kind, key) VALUES ('signal', substr(NEW.scope, length('category:drill-') + 1));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER drill_audit_signal AFTER INSERT OR UPDATE ON market_multipliers
    FOR EACH ROW EXECUTE FUNCTION drill_audit_signal();
"""


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_until(cond, timeout, interval=0.2):
    """Polls `cond` until it returns something truthy or `timeout` seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval)


# --- HTTP --------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int | None  # None: no answer (error says why)
    ms: float
    body: object = None
    error: str | None = None  # "timeout" (a hang) or "conn: ..."
    replayed: bool = False  # the answer replayed an order placed before (Idempotent-Replayed: true)
    end: float = field(default_factory=time.monotonic)  # when the answer (or the error) came

    @property
    def uncertain(self):
        """No definite answer: the request may or may not have taken effect."""
        return self.status is None or self.status >= 500

    def detail(self):
        return self.body.get("detail") if isinstance(self.body, dict) else None


def request(base, method, path, body=None, headers=None, timeout=CLIENT_TIMEOUT, text=False):
    """One request on a fresh connection; never raises. The body is parsed as JSON unless `text`."""
    host, port = base.split(":")
    hdrs = {"Connection": "close", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body)
        hdrs["Content-Type"] = "application/json"
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        ms = (time.monotonic() - start) * 1000
        try:
            parsed = raw.decode("utf-8", "replace") if text else json.loads(raw) if raw else None
        except ValueError:
            parsed = raw[:200].decode("utf-8", "replace")
        return Answer(resp.status, ms, parsed, replayed=resp.getheader("Idempotent-Replayed") == "true")
    except (socket.timeout, TimeoutError):
        return Answer(None, (time.monotonic() - start) * 1000, error="timeout")
    except (OSError, http.client.HTTPException) as e:
        return Answer(None, (time.monotonic() - start) * 1000, error=f"conn: {type(e).__name__}")
    finally:
        conn.close()


def admin():
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# --- infrastructure: our own PostgreSQL and Redis, and the binaries ------------------------------------------


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Proc:
    """One process with its log file; restarts append to the same log."""

    def __init__(self, name, argv, env, log_path):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.popen = None
        self.starts = 0

    def start(self):
        with open(self.log_path, "a") as log:
            log.write(f"\n===== drills: start {self.name} ({time.strftime('%H:%M:%S')}) =====\n")
            log.flush()
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.popen.send_signal(sig)
            self.popen.wait(timeout=10)

    def stop(self, grace=10):
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit status."""
        if not self.alive():
            return self.popen.returncode if self.popen else None
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return "killed"


class Postgres:
    """A throwaway PostgreSQL 15 cluster (trust auth on 127.0.0.1), run as `postgres` when we are root."""

    def __init__(self, tmp, logs):
        self.data, self.sock = os.path.join(tmp, "pg"), os.path.join(tmp, "pgsock")
        self.log = os.path.join(logs, "postgres.log")
        self.user = pwd.getpwnam("postgres") if os.getuid() == 0 else None

    def _as_owner(self, argv):
        return ["runuser", "-u", "postgres", "--", *argv] if self.user else argv

    def _run(self, argv, timeout=60):
        return subprocess.run(self._as_owner(argv), capture_output=True, text=True, timeout=timeout, check=True)

    def init(self):
        for path in (self.data, self.sock):
            os.makedirs(path)
        open(self.log, "a").close()
        if self.user:
            for path in (self.data, self.sock, self.log):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self._run([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"])

    def start(self):
        opts = (
            f"-c port={PG_PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.sock} "
            "-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "30", "-o", opts, "start"])

    def stop(self, mode="fast"):
        self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop"])

    def running(self):
        return subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(PG_PORT), "-q"]).returncode == 0

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{PG_PORT}/{db}"

    def sql(self, db, query):
        """Rows of a query as lists of strings (psql, unaligned)."""
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", db, "-XAtq", "-F", "\t",
             "-v", "ON_ERROR_STOP=1", "-c", query],
            capture_output=True, text=True, timeout=60, check=True, env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        ).stdout
        return [line.split("\t") for line in out.splitlines() if line]


class Redis:
    """Our own redis-server, no persistence: a restart is a restart with nothing in it."""

    def __init__(self, tmp, logs):
        self.proc = Proc(
            "redis",
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp, "--maxclients", "10000"],
            dict(os.environ),
            os.path.join(logs, "redis.log"),
        )
        self.url = f"redis://127.0.0.1:{REDIS_PORT}"

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(REDIS_PORT), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def start(self):
        self.proc.start()
        if not wait_until(lambda: self.cli("PING") == "PONG", 10, 0.05):
            raise RuntimeError("redis-server did not come up")

    def kill(self):
        self.proc.kill(signal.SIGKILL)


class Infra:
    """The run's temp dir, copied binaries, PostgreSQL and Redis."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="pricing-drills-")
        os.chmod(self.tmp, 0o755)
        self.logs = os.path.join(self.tmp, "logs")
        os.makedirs(self.logs)
        os.chmod(self.logs, 0o777)
        self.bin = os.path.join(self.tmp, "bin")
        os.makedirs(self.bin)
        # Copies: another build replacing target/release mid-run cannot change what a restart runs.
        for name in ("pricing-api", "pricing-worker", "pricing-listener"):
            shutil.copy2(os.path.join(ROOT, "target", "release", name), self.bin)
        self.pg = Postgres(self.tmp, self.logs)
        self.redis = Redis(self.tmp, self.logs)

    def start(self):
        busy = [p for p in (PG_PORT, REDIS_PORT, API_PORT, API_PORT + 1, WORKER_PORT, WORKER_PORT + 1,
                            LISTENER_PORT, LISTENER_PORT + 1) if not port_free(p)]
        if busy:
            raise RuntimeError(f"ports already in use: {busy} (another drill run?)")
        self.pg.init()
        self.pg.start()
        self.redis.start()

    def close(self):
        self.redis.proc.stop(5)
        if self.pg.running():
            try:
                self.pg.stop("immediate")
            except (subprocess.SubprocessError, OSError) as e:
                say(f"could not stop the drill PostgreSQL: {e}")


class Stack:
    """The binaries of one drill (n apis, workers, listeners) against a fresh database and an empty Redis."""

    KINDS = ("api", "worker", "listener")

    def __init__(self, infra, name, counts=(1, 1, 1), products=2000, env=None):
        self.infra, self.name, self.db = infra, name, f"drill_{name}"
        self.counts, self.products, self.extra = dict(zip(self.KINDS, counts)), products, env or {}
        self.procs = {}
        self.api_urls = [f"127.0.0.1:{API_PORT + i}" for i in range(self.counts["api"])]

    def env(self, i):
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            **SETTINGS,
            "DATABASE_URL": self.infra.pg.url(self.db),
            "REDIS_URL": self.infra.redis.url,
            "API_ADDR": f"127.0.0.1:{API_PORT + i}",
            "WORKER_ADDR": f"127.0.0.1:{WORKER_PORT + i}",
            "LISTENER_ADDR": f"127.0.0.1:{LISTENER_PORT + i}",
            **self.extra,
        }

    def setup(self):
        """Empty Redis, a seeded fresh database with the audit triggers, every process started and healthy."""
        self.infra.redis.cli("FLUSHALL")
        seed = subprocess.run(
            [os.path.join(self.infra.bin, "pricing-api"), "seed", "--products", str(self.products),
             "--stock", str(SEED_STOCK)],
            env=self.env(0), capture_output=True, text=True, timeout=120,
        )
        if seed.returncode != 0:
            raise RuntimeError(f"seed failed: {seed.stdout[-500:]} {seed.stderr[-500:]}")
        self.infra.pg.sql(self.db, AUDIT_SQL)
        for kind in self.KINDS:
            for i in range(self.counts[kind]):
                self.start(kind, i)
        if not self.wait_healthy(30):
            raise RuntimeError(f"processes not healthy: {self.health()}")

    def proc(self, kind, i=0):
        key = f"{kind}-{i + 1}"
        if key not in self.procs:
            args = ["serve"] if kind == "api" else []
            log = os.path.join(self.infra.logs, f"{self.name}-{key}.log")
            self.procs[key] = Proc(key, [os.path.join(self.infra.bin, f"pricing-{kind}"), *args], self.env(i), log)
        return self.procs[key]

    def start(self, kind, i=0):
        self.proc(kind, i).start()

    def health_urls(self):
        urls = {f"api-{i + 1}": (u, "/api/v1/health/ready") for i, u in enumerate(self.api_urls)}
        for kind, port in (("worker", WORKER_PORT), ("listener", LISTENER_PORT)):
            for i in range(self.counts[kind]):
                if self.proc(kind, i).alive():
                    urls[f"{kind}-{i + 1}"] = (f"127.0.0.1:{port + i}", "/health")
        return urls

    def health(self):
        return {name: request(base, "GET", path, timeout=5).status for name, (base, path) in self.health_urls().items()}

    def wait_healthy(self, timeout):
        return wait_until(lambda: all(s == 200 for s in self.health().values()), timeout, 0.25)

    def sql(self, query):
        return self.infra.pg.sql(self.db, query)

    def product_ids(self):
        return [int(r[0]) for r in self.sql("SELECT id FROM products ORDER BY id")]

    def close(self):
        return {name: p.stop() for name, p in self.procs.items()}


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
    """Products whose stock is not seed stock minus the quantities of their live (not failed/cancelled) orders."""
    row = stack.sql(f"""
        SELECT count(*), coalesce(sum(abs(p.stock - ({SEED_STOCK} - coalesce(s.q, 0)))), 0)
        FROM products p LEFT JOIN (
            SELECT oi.product_id, sum(oi.quantity) AS q FROM order_items oi JOIN orders o ON o.id = oi.order_id
            WHERE o.status NOT IN ('failed', 'cancelled') GROUP BY oi.product_id) s ON s.product_id = p.id
        WHERE p.stock <> {SEED_STOCK} - coalesce(s.q, 0)""")[0]
    return int(row[0]), int(row[1])


def count_orders(stack, load, audit):
    rows = stack.sql("SELECT id, coalesce(user_id, ''), status, attempts FROM orders")
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
        c = Counter("hang" if a.error == "timeout" else "conn" if a.error else f"{a.status // 100}xx" for a in rows)
        print(f"   {kind:<8} {phase:<10} {len(rows):>6} {c['2xx']:>6} {c['4xx']:>5} {c['5xx']:>5} {c['hang']:>5} "
              f"{c['conn']:>5} {max(a.ms for a in rows):>8.0f}")


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


DRILLS = {
    # name: (title, drill, seconds it may take at most, waiting for the backlog included; usually 15 to 35)
    "redis": ("Redis restarted empty under load", drill_redis, 70),
    "postgres": ("PostgreSQL stopped for 10 s", drill_postgres, 80),
    "kill": ("worker and listener killed with SIGKILL", drill_kill, 100),
    "multi": ("two api, two worker, two listener processes", drill_multi, 70),
}


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
    names = argv or list(DRILLS)
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
