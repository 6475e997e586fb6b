#!/usr/bin/env bash
# Failure drills with real processes (drills/: drills.py runs them, scenarios.py and balancer.py say what each
# does): Redis restarted empty under load, PostgreSQL stopped for 10 s, the worker and the listener killed with
# SIGKILL mid-work, two of each binary side by side, and three apis behind the real balancer (Debian's haproxy
# running deploy/haproxy.cfg, only its addresses changed) with one api killed and started again, and two
# primaries of a 6-node Redis Cluster SIGKILLed in turn under load (failover.py; its own cluster, ports
# 7500-7505, from scripts/redis-cluster.sh; DRILLS_FAILOVER_PORT moves them). Each drill
# counts orders and events created, completed/applied, duplicated and lost, and the run exits non-zero if any
# guarantee fails. It starts its own throwaway PostgreSQL 15 (port 5442) and redis-server (6390) and uses
# ports 8310-8331 for the binaries and 8340-8341 for haproxy: the machine's shared PostgreSQL and Redis are
# never touched.
#
#   scripts/drills.sh                   # release build, then every drill (about 3.5 minutes after the build)
#   SKIP_BUILD=1 scripts/drills.sh      # use the binaries already in target/release
#   scripts/drills.sh redis kill        # only some drills: redis, postgres, kill, multi, balancer, failover
#   DRILLS_REDIS=cluster scripts/drills.sh  # every stack on a 6-node Redis Cluster (ports 7400-7405,
#                                       # DRILLS_CLUSTER_PORT moves them) instead of the redis-server on 6390;
#                                       # default drills there: kill, multi, failover (redis is refused)
#   DRILLS_KEEP=1 scripts/drills.sh     # keep the temp dir with every process's log even when all pass
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  cargo build --release --locked -p pricing-api -p pricing-worker -p pricing-listener
fi
for tool in python3 psql redis-server redis-cli haproxy timeout; do
  command -v "$tool" >/dev/null || { echo "drills: $tool is required" >&2; exit 2; }
done
[ -x "${DRILLS_PG_BIN:-/usr/lib/postgresql/15/bin}/initdb" ] || { echo "drills: PostgreSQL 15 server binaries are required" >&2; exit 2; }

# A hard ceiling on the drills (6 minutes); each drill has its own, shorter, budget. On SIGTERM the runner
# stops every process it started (and its PostgreSQL and Redis) before exiting with status 124.
exec timeout --signal=TERM --kill-after=20 "${DRILLS_TIMEOUT:-360}" python3 drills/drills.py "$@"
