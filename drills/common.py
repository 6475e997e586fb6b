"""Settings every drill shares, logging, waiting, and the HTTP client (stdlib only)."""

import http.client
import json
import os
import socket
import time
from dataclasses import dataclass, field


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_BIN = os.environ.get("DRILLS_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_PORT = int(os.environ.get("DRILLS_PG_PORT", "5442"))
REDIS_PORT = int(os.environ.get("DRILLS_REDIS_PORT", "6390"))
API_PORT, WORKER_PORT, LISTENER_PORT = 8310, 8320, 8330  # + index of the process (0, 1)
ADMIN_TOKEN = "drill-admin-token-0123456789abcdef0123"
SEED_STOCK = 1_000_000
CLIENT_TIMEOUT = 10.0  # a request not answered within this counts as a hang
REQUEST_TIMEOUT_MS = 5000
TOTAL_BUDGET = float(os.environ.get("DRILLS_BUDGET_SECS", "300"))  # no drill starts after this

# Short settings so failures are noticed and repaired within seconds (names: crates/core/src/config.rs).
SETTINGS = {
    "REDIS_KEY_PREFIX": "drill",
    "ADMIN_TOKEN": ADMIN_TOKEN,
    "QUOTE_SIGNING_KEY": "drill-quote-signing-key-0123456789abcdef",
    "JWT_HS256_SECRET": "drill-jwt-hs256-secret-0123456789abcdef",
    # Every drill client shares one address: rate limits off (their own test is in the api's suite).
    "RATE_LIMIT_READS_PER_SEC": "0",
    "RATE_LIMIT_ORDERS_PER_SEC": "0",
    "RATE_LIMIT_ADMIN_PER_SEC": "0",
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
