"""The drills' own PostgreSQL 15 cluster and redis-server (or, with DRILLS_REDIS=cluster, a 6-node Redis
Cluster: cluster.py), and the release binaries as processes."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from cluster import RedisCluster
from common import API_PORT, AUDIT_SQL, LISTENER_PORT, PG_BIN, PG_PORT, REDIS_PORT, ROOT, SEED_STOCK, SETTINGS, WORKER_PORT, request, say, wait_until


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

    def process_env(self):
        return {"REDIS_URL": self.url}

    def flush(self):
        self.cli("FLUSHALL")

    def close(self):
        self.proc.stop(5)

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
        # DRILLS_REDIS=cluster: every drill's stack on a 6-node Redis Cluster instead of one redis-server.
        self.cluster = os.environ.get("DRILLS_REDIS", "single") == "cluster"
        if self.cluster:
            port = int(os.environ.get("DRILLS_CLUSTER_PORT", "7400"))
            self.redis = RedisCluster("drills-cluster", port, "/tmp/pricing-drills-cluster", self.logs)
        else:
            self.redis = Redis(self.tmp, self.logs)

    def start(self):
        redis_ports = () if self.cluster else (REDIS_PORT,)  # the cluster's script checks its own ports
        busy = [p for p in (PG_PORT, *redis_ports, API_PORT, API_PORT + 1, WORKER_PORT, WORKER_PORT + 1,
                            LISTENER_PORT, LISTENER_PORT + 1) if not port_free(p)]
        if busy:
            raise RuntimeError(f"ports already in use: {busy} (another drill run?)")
        self.pg.init()
        self.pg.start()
        self.redis.start()

    def close(self):
        self.redis.close()
        if self.pg.running():
            try:
                self.pg.stop("immediate")
            except (subprocess.SubprocessError, OSError) as e:
                say(f"could not stop the drill PostgreSQL: {e}")


class Stack:
    """The binaries of one drill (n apis, workers, listeners) against a fresh database and an empty Redis."""

    KINDS = ("api", "worker", "listener")

    def __init__(self, infra, name, counts=(1, 1, 1), products=2000, env=None, redis=None):
        self.infra, self.name, self.db = infra, name, f"drill_{name}"
        self.redis = redis or infra.redis  # the run's Redis, or a drill's own cluster (failover.py)
        self.counts, self.products, self.extra = dict(zip(self.KINDS, counts)), products, env or {}
        self.procs = {}
        self.api_urls = [f"127.0.0.1:{API_PORT + i}" for i in range(self.counts["api"])]

    def env(self, i):
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            **SETTINGS,
            "DATABASE_URL": self.infra.pg.url(self.db),
            **self.redis.process_env(),
            "API_ADDR": f"127.0.0.1:{API_PORT + i}",
            "WORKER_ADDR": f"127.0.0.1:{WORKER_PORT + i}",
            "LISTENER_ADDR": f"127.0.0.1:{LISTENER_PORT + i}",
            **self.extra,
        }

    def setup(self):
        """Empty Redis, a seeded fresh database with the audit triggers, every process started and healthy."""
        self.redis.flush()
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
