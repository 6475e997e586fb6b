"""The balancer drill: the repo's own HAProxy configuration (deploy/haproxy.cfg), run by Debian's haproxy, in
front of three api processes on loopback; one api killed with SIGKILL under load and started again.

Why: compose runs N api replicas behind that file. What it promises (a killed replica costs only the POSTs
it had in flight; GETs are retried elsewhere; orders retried with their Idempotency-Key land once; quotes
signed by one api are honoured by any other; the hot-product sale does not oversell with three apis selling
at once) can only be seen with the real balancer and real processes. The configuration is used as it is,
with only its addresses changed (`balancer_config`): the `bind` lines to loopback ports and each
`server-template` line to one `server` line per api process.

What the balancer counts for itself (its stats page, per server) tells how many requests were in flight on
the killed process: each one is a response error (`eresp`: a POST answered 502, or a request whose connection
broke before it was sent, then sent elsewhere) or a GET/HEAD retried on another process (`wretr`).
Connections refused after the kill are not counted: nothing was sent, they go to another process.
"""

import csv
import http.client
import io
import os
import signal
import subprocess
import threading
import time

from common import ROOT, SETTINGS, admin, request, say, wait_until
from infra import Proc, Stack, port_free
from load import Load, Purchase
from scenarios import split_products

BALANCER_PORT, BALANCER_STATS_PORT = 8340, 8341
BALANCER = f"127.0.0.1:{BALANCER_PORT}"
HAPROXY_CFG = os.path.join(ROOT, "deploy", "haproxy.cfg")
# The container ports the configuration binds, and the loopback ports the drill binds instead.
BIND_PORTS = {"8000": BALANCER_PORT, "8404": BALANCER_STATS_PORT}
HOT_STOCK = 1500  # units of each hot product: sold out in a few seconds by the hot-product clients
HOT_CLIENTS = 16


def balancer_config(text, api_urls):
    """deploy/haproxy.cfg with only its addresses changed; fails if its shape is not the expected one."""
    out, binds, templates = [], 0, 0
    for line in text.splitlines():
        words, indent = line.split(), line[: len(line) - len(line.lstrip())]
        if words[:1] == ["bind"]:
            port = words[1].rsplit(":", 1)[-1]
            if port not in BIND_PORTS:
                raise ValueError(f"deploy/haproxy.cfg binds {words[1]}: the drill knows {list(BIND_PORTS)}")
            out.append(" ".join([f"{indent}bind", f"127.0.0.1:{BIND_PORTS[port]}", *words[2:]]))
            binds += 1
        elif words[:1] == ["server-template"]:
            # `server-template <prefix> <range> <name>:<port> <resolution options>` -> one server per process,
            # named as the template names them (api1, api2, ...); checks come from `default-server`.
            out.extend(f"{indent}server {words[1]}{i + 1} {url}" for i, url in enumerate(api_urls))
            templates += 1
        else:
            out.append(line)
    if binds != len(BIND_PORTS) or templates == 0:
        raise ValueError(f"deploy/haproxy.cfg: {binds} bind and {templates} server-template lines found")
    return "\n".join(out) + "\n"


class Balancer:
    """Debian's haproxy with the rewritten configuration, and its per-server counters."""

    def __init__(self, infra, api_urls):
        self.path = os.path.join(infra.tmp, "haproxy.cfg")
        with open(HAPROXY_CFG) as f:
            config = balancer_config(f.read(), api_urls)
        with open(self.path, "w") as f:
            f.write(config)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/bin")}
        self.proc = Proc("balancer", ["haproxy", "-db", "-f", self.path], env,
                         os.path.join(infra.logs, "balancer-haproxy.log"))

    def start(self):
        busy = [p for p in BIND_PORTS.values() if not port_free(p)]
        if busy:
            raise RuntimeError(f"balancer ports already in use: {busy}")
        check = subprocess.run(["haproxy", "-c", "-f", self.path], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects the configuration: {check.stdout[-400:]} {check.stderr[-400:]}")
        self.proc.start()

    def stats(self):
        """{(backend, server): row} from the stats page's CSV; empty when it does not answer."""
        a = request(f"127.0.0.1:{BALANCER_STATS_PORT}", "GET", "/stats;csv", timeout=5, text=True)
        if a.status != 200 or not isinstance(a.body, str):
            return {}
        rows = csv.DictReader(io.StringIO(a.body.lstrip("# ")))
        return {(r["pxname"], r["svname"]): r for r in rows}

    def up(self, server):
        """Whether `server` (api1, api2, ...) is UP in the readiness-checked backend."""
        return self.stats().get(("api", server), {}).get("status", "").startswith("UP")

    def counter(self, server, name):
        """A server's counter summed over both backends (ready and live)."""
        stats = self.stats()
        return sum(int(stats.get((b, server), {}).get(name) or 0) for b in ("api", "api_live"))

    def stop(self):
        self.proc.stop(5)


class BalancedLoad(Load):
    """The drills' ledger-keeping load, every request sent to the balancer."""

    def api(self):
        return BALANCER


def secret_files(infra):
    """The secrets as compose gives them: one file each, read by every api (`*_FILE`), none in the env."""
    env = {"APP_ENV": "production"}
    for name in ("ADMIN_TOKEN", "QUOTE_SIGNING_KEY", "JWT_HS256_SECRET"):
        path = os.path.join(infra.tmp, name.lower())
        with open(path, "w") as f:
            f.write(SETTINGS[name])
        env |= {name: "", f"{name}_FILE": path}
    return env


def drill_balancer(infra, d):
    """Three apis behind the real balancer: a quote from one api honoured by another; one api killed (SIGKILL)
    under load and started again; PostgreSQL stopped (no api ready); hot-product orders through one api and
    through three."""
    stack = Stack(infra, "balancer", counts=(3, 1, 1), env=secret_files(infra))
    balancer = Balancer(infra, stack.api_urls)
    try:
        busy = [u for u in stack.api_urls if not port_free(int(u.rsplit(":", 1)[1]))]
        if busy:
            raise RuntimeError(f"api ports already in use: {busy}")
        stack.setup()
        balancer.start()
        ready = wait_until(lambda: all_up(balancer), 15, 0.2)
        d.check(ready, f"the balancer did not see the three apis ready: {balancer.stats().keys()}")
        buy, read = split_products(stack)
        load = BalancedLoad(stack, buy, read)
        quote_across_apis(stack, d, load, buy[0])
        load.phase = "all-up"
        load.start(orders=3, events=1, quotes=3, reads=3)
        time.sleep(4)
        in_flight = kill_and_restart(stack, balancer, d, load)
        time.sleep(4)
        load.stop()
        d.load = load
        check_failures(d, load, in_flight)
        d.finish(stack, load)
        postgres_down(infra, balancer, d, read[:20])
        hot_product(stack, balancer, d)
    finally:
        balancer.stop()
        stack.close()
        if not infra.pg.running():
            infra.pg.start()


def quote_across_apis(stack, d, load, pid):
    """A guest's quote from api-1 honoured by api-2 (one signing key, read from the same file); the same quote
    with its signature altered refused, so the check can fail."""
    user = f"{stack.name}-quoted"
    q = request(stack.api_urls[0], "POST", "/api/v1/price", {"product_id": pid, "user_id": user})
    quote_id = q.body.get("quote_id") if q.status == 200 and isinstance(q.body, dict) else None
    if not d.check(quote_id, f"api-1 gave no quote: {q.status} {q.body}"):
        return
    head, _, signature = quote_id.rpartition(".")
    forged = f"{head}.{'1' if signature[:1] == '0' else '0'}{signature[1:]}"
    bad = request(stack.api_urls[1], "POST", "/api/v1/orders",
                  {"user_id": user, "items": [{"product_id": pid, "quantity": 1, "quote_id": forged}]})
    d.check(bad.status == 409, f"api-2 took a quote with an altered signature: {bad.status} {bad.body}")
    p = Purchase(user, f"{user}-key", {"user_id": user, "items": [{"product_id": pid, "quantity": 1,
                                                                    "quote_id": quote_id}]})
    load.purchases[user] = p
    a = request(stack.api_urls[1], "POST", "/api/v1/orders", p.body, {"Idempotency-Key": p.key})
    p.answers.append(a)
    items = a.body.get("items") if a.status == 201 and isinstance(a.body, dict) else None
    p.order_id = a.body.get("id") if items else None
    source = items[0].get("price_source") if items else None
    d.note(f"a quote signed by api-1, ordered on api-2: {a.status}, price_source {source!r}; the same quote with "
           f"its signature altered: {bad.status}")
    d.check(source == "quote", f"api-2 did not honour api-1's quote: {a.status} {a.body}")


def kill_and_restart(stack, balancer, d, load):
    """SIGKILL api-2 under load, start it again 3 s later; returns how many requests were in flight on it.
    The process is stopped (SIGSTOP) for half a second first, as a process that hangs before it dies: the
    requests the balancer hands it meanwhile are in flight when it is killed, GETs and POSTs alike."""
    before = {c: balancer.counter("api2", c) for c in ("eresp", "wretr", "econ", "wredis")}
    load.phase = "kill"
    victim = stack.proc("api", 1)
    victim.popen.send_signal(signal.SIGSTOP)
    time.sleep(0.5)
    killed_at = time.monotonic()
    victim.kill()
    down = wait_until(lambda: not balancer.up("api2"), 10, 0.05)
    down_after = time.monotonic() - killed_at
    d.note(f"api-2 stopped (SIGSTOP) for 0.5 s, then killed (SIGKILL) under load; the balancer marked it down "
           f"{down_after:.1f} s after the kill")
    d.check(down, "the balancer never marked the killed api down")
    time.sleep(max(0.0, killed_at + 3 - time.monotonic()))
    load.phase = "restart"
    restarted_at = time.monotonic()
    stack.start("api", 1)
    back = wait_until(lambda: balancer.up("api2"), 20, 0.1)
    d.check(back, "the restarted api was not taken back within 20 s")
    served_before = balancer.counter("api2", "stot")
    load.phase = "after"
    after = {c: balancer.counter("api2", c) for c in before}
    delta = {c: after[c] - before[c] for c in before}
    # Handed to api-2 and never answered by it: response errors (a POST answered 502, or one whose connection
    # broke before it was sent, then redispatched) and GET/HEAD retried on another api after one.
    in_flight = delta["eresp"] + delta["wretr"]
    d.note(f"api-2 started again; ready in the balancer {time.monotonic() - restarted_at:.1f} s later. In flight "
           f"on it when killed (the balancer's count): {in_flight} ({delta['eresp']} response errors, "
           f"{delta['wretr']} GET/HEAD retried on another api); {delta['wredis']} requests redispatched in all")
    wait_until(lambda: balancer.counter("api2", "stot") > served_before + 5, 6, 0.2)
    served = balancer.counter("api2", "stot") - served_before
    d.check(served > 0, "the restarted api got no request from the balancer")
    return in_flight


def check_failures(d, load, in_flight):
    """Reads and quotes failed at most as often as requests were in flight on the killed api; reads (GET) not
    at all, since the balancer retries them."""
    failed = {kind: sum(1 for (k, _), answers in load.answers.items() if k == kind for a in answers if a.uncertain)
              for kind in ("read", "quote", "order", "event")}
    d.note(f"answers 5xx or none, whole drill: {failed} (orders and events are re-sent at the end with the "
           f"same Idempotency-Key / event_id)")
    d.check(failed["read"] + failed["quote"] <= in_flight,
            f"{failed['read'] + failed['quote']} reads and quotes failed, more than the {in_flight} requests in "
            f"flight on the killed api")
    d.check(failed["read"] == 0, f"{failed['read']} reads (GET) failed: the balancer should have retried them")


def all_up(balancer):
    stats = balancer.stats()
    return all(stats.get(("api", f"api{i + 1}"), {}).get("status", "").startswith("UP") for i in range(3))


def none_up(balancer):
    stats = balancer.stats()
    return bool(stats) and not any(stats.get(("api", f"api{i + 1}"), {}).get("status", "").startswith("UP")
                                   for i in range(3))


def postgres_down(infra, balancer, d, products):
    """PostgreSQL stopped: no api is ready, and the balancer sends requests to the live ones rather than
    refusing them, so cached reads keep answering and an order gets the api's own JSON 503."""
    for pid in products:
        request(BALANCER, "GET", f"/api/v1/products/{pid}/cached")
    infra.pg.stop("fast")
    try:
        d.check(wait_until(lambda: none_up(balancer), 10, 0.1), "an api stayed ready with PostgreSQL stopped")
        reads = [request(BALANCER, "GET", f"/api/v1/products/{pid}/cached") for pid in products]
        order = request(BALANCER, "POST", "/api/v1/orders", {"product_id": products[0], "quantity": 1})
    finally:
        infra.pg.start()
    ok = sum(1 for a in reads if a.status == 200)
    detail = order.detail() or ""
    d.note(f"PostgreSQL stopped, no api ready: {ok}/{len(reads)} cached reads answered 200 through the balancer; "
           f"an order: {order.status} {detail[:70]!r}")
    d.check(ok == len(reads), f"cached reads failed through the balancer with PostgreSQL down: "
                              f"{[(a.status, a.detail()) for a in reads if a.status != 200][:3]}")
    d.check(order.status == 503 and detail and "No api process" not in detail,
            f"the order was not answered by an api (its own JSON 503): {order.status} {order.body}")
    d.check(wait_until(lambda: all_up(balancer), 20, 0.2), "the apis were not ready again 20 s after PostgreSQL")


def hot_product(stack, balancer, d):
    """A hot product sold out through one api, another through the balancer (three apis), a third by clients
    spread over the three apis directly (what the balancer's hop costs): 0 oversold each, and each one's
    throughput."""
    rates, servers = {}, [f"api{i + 1}" for i in range(3)]
    served_before = [balancer.counter(s, "stot") for s in servers]
    ways = (("one api", stack.api_urls[:1]), ("three apis (balancer)", [BALANCER]),
            ("three apis (direct)", stack.api_urls))
    for label, bases in ways:
        created = request(stack.api_urls[0], "POST", "/api/v1/products",
                          {"name": f"Hot {label}", "price": 10.0, "stock": HOT_STOCK, "category": "hot"}, admin())
        pid = created.body.get("id") if created.status == 201 and isinstance(created.body, dict) else None
        if not d.check(pid, f"could not create a hot product: {created.status} {created.body}"):
            return
        accepted, refused, seconds = sell_out(bases, pid, f"{stack.name}-hot{pid}")
        rates[label] = accepted / seconds if seconds else 0.0
        check_not_oversold(stack, d, pid, label, accepted, refused)
    single, multi, direct = rates.values()
    served = [balancer.counter(s, "stot") - before for s, before in zip(servers, served_before)]
    d.note(f"hot-product orders through the balancer served by api-1/2/3: {'/'.join(map(str, served))}")
    d.check(all(n > 0 for n in served), f"not all three apis sold the hot product: {served}")
    d.note(f"hot-product orders/s: {single:.0f} through one api, {multi:.0f} through three behind the balancer "
           f"(x{multi / single if single else 0:.2f}), {direct:.0f} from clients spread over the three directly; "
           f"{HOT_CLIENTS} keep-alive clients, {HOT_STOCK} units each")


def sell_out(bases, pid, tag):
    """HOT_CLIENTS clients (spread over `bases`) ordering one unit each until told the stock is gone; returns
    (accepted, refused, seconds from the first order to the last one accepted). A request without a definite
    answer is re-sent with its Idempotency-Key until it gets one."""
    lock, seq, results = threading.Lock(), [0], {"accepted": 0, "refused": 0, "last": 0.0}
    started = time.monotonic()

    def client(base):
        host, port = base.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        sold_out = False
        while not sold_out and time.monotonic() - started < 20:
            with lock:
                seq[0] += 1
                n = seq[0]
            status = order_once(conn, pid, f"{tag}-u{n}")
            while (status is None or status >= 500) and time.monotonic() - started < 25:
                time.sleep(0.1)
                status = order_once(conn, pid, f"{tag}-u{n}")
            with lock:
                if status == 201:
                    results["accepted"] += 1
                    results["last"] = time.monotonic()
                else:
                    results["refused"] += 1
            sold_out = status == 400
        conn.close()

    threads = [threading.Thread(target=client, args=(bases[i % len(bases)],), daemon=True)
               for i in range(HOT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results["accepted"], results["refused"], max(0.0, results["last"] - started)


def order_once(conn, pid, user):
    """One guest order on a kept-alive connection; its status, or None without an answer."""
    body = f'{{"user_id": "{user}", "product_id": {pid}, "quantity": 1}}'
    try:
        conn.request("POST", "/api/v1/orders", body=body,
                     headers={"Content-Type": "application/json", "Idempotency-Key": f"{user}-key"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        conn.close()
        return None


def check_not_oversold(stack, d, pid, label, accepted, refused):
    stock, sold, orders = (int(x) for x in stack.sql(f"""
        SELECT p.stock, coalesce(sum(oi.quantity) FILTER (WHERE o.status NOT IN ('failed', 'cancelled')), 0),
               count(DISTINCT o.id)
        FROM products p LEFT JOIN order_items oi ON oi.product_id = p.id LEFT JOIN orders o ON o.id = oi.order_id
        WHERE p.id = {pid} GROUP BY p.stock""")[0])
    oversold = max(0, sold - HOT_STOCK, accepted - HOT_STOCK, -stock)
    say(f"  hot product through {label}: {accepted} accepted, {refused} refused (sold out), {orders} orders and "
        f"{sold} units in PostgreSQL, stock left {stock}")
    d.check(oversold == 0, f"{label}: oversold by {oversold} units")
    d.check(stock == HOT_STOCK - sold, f"{label}: stock {stock} is not {HOT_STOCK} minus the {sold} units sold")
    d.check(orders == accepted, f"{label}: {orders} orders in PostgreSQL for {accepted} accepted")
    d.check(stock == 0, f"{label}: not sold out ({stock} left): the oversell check saw no contention at the end")
