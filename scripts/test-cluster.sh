#!/usr/bin/env bash
# The cluster pass (in .ci/run after scripts/test.sh): starts a 6-node Redis Cluster on loopback
# (scripts/redis-cluster.sh) and runs the integration tests that touch Redis a second time with
# REDIS_CLUSTER_NODES set, so every process, cache operation, queue and stream read goes through the
# cluster client. Stops the cluster it started when done (or killed).
#
# Which tests: the worker's and the listener's own tests (jobs, the stream consumer, exactly-once apply);
# the api's integration suite (`--test api`: quotes, catalogue, orders, flash sales, events, recalculation,
# processing, health, access); the process tests (`--test shutdown`: the three real binaries stopped
# mid-work); and the cluster-only checks (`--test cluster`). Left out, because they test a single Redis by
# design: the Redis-outage tests (a TCP proxy cut in front of one server; the failover drill covers a
# cluster primary lost) and the idle-poll count (it watches one server's MONITOR). Extra arguments go to
# every `cargo test`.
#
#   scripts/test-cluster.sh               # about 4-6 minutes after the build scripts/test.sh already did
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/pricing}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_CLUSTER_STATE="${REDIS_CLUSTER_STATE:-/tmp/pricing-test-cluster}"
export REDIS_CLUSTER_PORT="${REDIS_CLUSTER_PORT:-7300}"

scripts/redis-cluster.sh stop >/dev/null 2>&1 || true
trap 'scripts/redis-cluster.sh stop >/dev/null 2>&1 || true' EXIT
nodes=$(scripts/redis-cluster.sh start | tail -1)
export "${nodes?}"
echo "[cluster pass] ${REDIS_CLUSTER_NODES}" >&2

skip=(--skip redis_outage --skip an_idle_worker_rests_between_fetches)
cargo test --locked -p pricing-worker -p pricing-listener "$@" -- "${skip[@]}"
cargo test --locked -p pricing-api --test api --test shutdown --test cluster "$@" -- "${skip[@]}"
