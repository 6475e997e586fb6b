"""A 6-node Redis Cluster for the drills, run by scripts/redis-cluster.sh on its own ports and state file.

Why: the drills' processes must meet a cluster exactly as a deployment does (REDIS_CLUSTER_NODES, the cluster
client), and the failover drill must kill one primary of it. The script already starts, checks, kills and
stops such a cluster while touching nothing else; this class only drives it, and offers what the drills ask
of their single redis-server (`process_env`, `cli`, `flush`, `close`), so a Stack runs on either
(DRILLS_REDIS=cluster, infra.py).
"""

import glob
import os
import shutil
import subprocess

from common import ROOT, say

SCRIPT = os.path.join(ROOT, "scripts", "redis-cluster.sh")
HOST = "127.0.0.1"


class RedisCluster:
    """One cluster: nodes on `port`..`port + 5`, its directory recorded in the file `state`."""

    def __init__(self, name, port, state, logs):
        self.name, self.state, self.logs = name, state, logs
        self.ports = list(range(port, port + 6))
        self.env = {**os.environ, "REDIS_CLUSTER_PORT": str(port), "REDIS_CLUSTER_STATE": state,
                    "REDIS_CLUSTER_TIMEOUT": "30"}
        self.nodes = None  # the REDIS_CLUSTER_NODES value, once started
        self.started = False

    def script(self, *args, timeout=60):
        """Runs scripts/redis-cluster.sh; its own log lines (stderr) go to this cluster's log file."""
        with open(os.path.join(self.logs, f"{self.name}-script.log"), "a") as log:
            out = subprocess.run([SCRIPT, *args], env=self.env, stdout=subprocess.PIPE, stderr=log, text=True,
                                 timeout=timeout)
        return out.returncode, out.stdout.strip()

    def start(self):
        # A run killed before it could stop its cluster leaves the state file behind: stop that one first.
        self.script("stop")
        self.started = True
        code, out = self.script("start", timeout=90)
        last = out.splitlines()[-1] if out else ""
        if code != 0 or not last.startswith("REDIS_CLUSTER_NODES="):
            raise RuntimeError(f"redis-cluster.sh start failed ({code}); see {self.name}-script.log")
        self.nodes = last.split("=", 1)[1]
        say(f"  {self.name}: 3 primaries + 3 replicas on {HOST}:{self.ports[0]}-{self.ports[-1]}")

    def process_env(self):
        return {"REDIS_CLUSTER_NODES": self.nodes}

    def node_cli(self, port, *args):
        out = subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), *args], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 and not out.stdout.startswith("Could not connect") \
            else None

    def cli(self, *args):
        """One command on whichever node answers, following MOVED (`-c`) to the slot's primary."""
        for port in self.ports:
            out = self.node_cli(port, "-c", *args)
            if out is not None:
                return out
        return ""

    def nodes_table(self):
        """CLUSTER NODES as a live node sees it: [(port, flags, slot ranges)]."""
        text = self.cli("CLUSTER", "NODES")
        rows = []
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 8:
                rows.append((int(f[1].split("@")[0].rsplit(":", 1)[1]), f[2], f[8:]))
        return rows

    def primaries(self):
        """Ports of the primaries that are not marked failed."""
        return [p for p, flags, _ in self.nodes_table() if "master" in flags and "fail" not in flags]

    def owner(self, key):
        """The port of the primary serving `key`'s slot, or None while no live primary does."""
        slot = int(self.cli("CLUSTER", "KEYSLOT", key) or -1)
        for port, flags, ranges in self.nodes_table():
            if "master" not in flags or "fail" in flags:
                continue
            for r in ranges:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return port
        return None

    def replica_lag(self, port):
        """How many bytes of the primary on `port`'s replication stream its replica has not acknowledged:
        what a SIGKILL now may lose. None when it has no replica online."""
        info = dict(line.split(":", 1) for line in (self.node_cli(port, "INFO", "replication") or "").splitlines()
                    if ":" in line)
        replica = dict(kv.split("=", 1) for kv in info.get("slave0", "").split(",") if "=" in kv)
        if replica.get("state") != "online":
            return None
        return int(info["master_repl_offset"]) - int(replica["offset"])

    def flush(self):
        for port in self.primaries():
            self.node_cli(port, "FLUSHALL")

    def kill_primary(self, port):
        """SIGKILLs the primary on `port` (the script checks it is one of ours and a primary)."""
        code, out = self.script("kill-primary", str(port))
        if code != 0:
            raise RuntimeError(f"redis-cluster.sh kill-primary {port} failed; see {self.name}-script.log")
        return int(out.splitlines()[-1])

    def wait_ok(self):
        """Whether a replica took over every slot of the killed primary within the script's 30 s."""
        return self.script("wait-ok", timeout=60)[0] == 0

    def status(self):
        return self.script("status")[1]

    def close(self):
        """Keeps the nodes' logs beside the drills' own, then stops exactly what `start` started."""
        if not self.started:
            return
        try:
            with open(self.state) as f:
                directory = f.read().strip()
            keep = os.path.join(self.logs, self.name)
            os.makedirs(keep, exist_ok=True)
            for path in glob.glob(os.path.join(directory, "redis-*.log")):
                shutil.copy(path, keep)
        except OSError:
            pass
        if self.script("stop")[0] != 0:
            say(f"could not stop the {self.name} Redis Cluster: see {self.name}-script.log")
        self.started = False
