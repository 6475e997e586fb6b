# shellcheck shell=bash
# bench/run.sh's Redis Cluster pass (sourced by it, not run alone): the same cached reads, quotes and orders as
# the single-Redis pass, with the same wrk settings and durations, against a 6-node cluster (3 primaries, 3
# replicas, scripts/redis-cluster.sh) started for this run on its own ports and state file, so a cluster of the
# tests or drills is never touched and the run stops exactly the one it started. The single-Redis processes are
# stopped first: both passes get the machine's two cores alone. Figures go to $RESULTS like every other one, and
# cluster_table prints them beside the single-Redis ones.
#
# Env: BENCH_CLUSTER_PORT (7600: nodes on 7600..7605), BENCH_CLUSTER_STATE (/tmp/pricing-bench-cluster).

CLUSTER_PORT="${BENCH_CLUSTER_PORT:-7600}"
CLUSTER_STATE="${BENCH_CLUSTER_STATE:-/tmp/pricing-bench-cluster}"
CLUSTER_TAG=" [cluster]"
CLUSTER_UP=0
REDIS_GET_CLUSTER=""
cluster_script() { REDIS_CLUSTER_PORT=$CLUSTER_PORT REDIS_CLUSTER_STATE=$CLUSTER_STATE scripts/redis-cluster.sh "$@"; }
# Called by run.sh's exit trap too: stops the cluster only if this run started it.
stop_cluster() { if [ "$CLUSTER_UP" = 1 ]; then CLUSTER_UP=0; cluster_script stop || true; fi; }

cluster_pass() {
  echo "== Redis Cluster pass: 6 nodes (3 primaries, 3 replicas) on 127.0.0.1:$CLUSTER_PORT..$((CLUSTER_PORT + 5))"
  if [ -e "$CLUSTER_STATE" ]; then
    echo "   skipped: $CLUSTER_STATE names a cluster this run did not start;" \
         "stop it with REDIS_CLUSTER_STATE=$CLUSTER_STATE scripts/redis-cluster.sh stop"
    return
  fi
  stop_stack
  # Up before start returns: an interrupted start is still stopped by the exit trap (a failed one stops itself).
  CLUSTER_UP=1
  local nodes
  nodes=$(cluster_script start 2>/dev/null | tail -1) || nodes=""
  [[ $nodes == REDIS_CLUSTER_NODES=* ]] || { echo "   skipped: the cluster did not start"; stop_cluster; return; }
  nodes=${nodes#REDIS_CLUSTER_NODES=}
  # redis-benchmark's cluster mode spreads its clients and keys over the primaries.
  REDIS_GET_CLUSTER=$(redis-benchmark --cluster -h 127.0.0.1 -p "$CLUSTER_PORT" -c "$CONNECTIONS" -n 300000 -t get -q \
                      | tr '\r' '\n' | awk '/requests per second/ { printf "%.0f", $2 }')
  echo "   redis-benchmark --cluster -c $CONNECTIONS -t get $REDIS_GET_CLUSTER req/s"

  # The single pass's database setup in a database of its own (the first one stays for a look afterwards),
  # and a key prefix of its own.
  local single_db=$DB
  DB=pricing_bench_cluster
  local db_url="postgres://postgres:postgres@127.0.0.1:5432/$DB"
  dropdb -h 127.0.0.1 -U postgres --if-exists --force "$DB"
  DATABASE_URL=$db_url ./target/release/pricing-api seed --products 10000 --stock 10000000
  if start_stack -cluster DATABASE_URL="$db_url" REDIS_CLUSTER_NODES="$nodes" REDIS_KEY_PREFIX=bench_cluster; then
    core_pass cluster "$CLUSTER_TAG"
  else
    echo "   skipped: the stack did not start on the cluster"
  fi
  # The binaries log warnings and errors only (RUST_LOG=warn): any line is worth a look.
  local log
  for log in /tmp/bench-{api,worker,listener}-cluster.log; do
    echo "   $log: $(grep -c . "$log" || true) log lines$(grep -m 3 . "$log" | sed 's/^/\n     /' || true)"
  done
  stop_stack
  DB=$single_db
  stop_cluster
}

# The cluster's figures beside the single Redis's, as a markdown table.
cluster_table() {
  echo
  echo "== Redis Cluster pass beside the single Redis (same run, same wrk settings; ratio = cluster / single req/s)"
  if [ -z "${ORDERS_DONE[cluster]:-}" ]; then echo "   no cluster figures: see the cluster pass above"; return; fi
  printf '| %-36s | %12s | %8s | %13s | %8s | %5s |\n' figure "single req/s" "p99 ms" "cluster req/s" "p99 ms" ratio
  printf '|%s|\n' "--------------------------------------|--------------|----------|---------------|----------|-------"
  printf '| %-36s | %12s | %8s | %13s | %8s | %5s |\n' "redis-benchmark GET (ceiling)" "$REDIS_GET" "-" \
    "$REDIS_GET_CLUSTER" "-" "$(ratio "$REDIS_GET_CLUSTER" "$REDIS_GET")"
  local name c
  for name in "POST /price, one hot product" "POST /price, 10,000-product hot set" "GET /products/{id}/cached" \
              "POST /orders, one hot product" "POST /orders, 1,000 products"; do
    c="$name$CLUSTER_TAG"
    printf '| %-36s | %12s | %8s | %13s | %8s | %5s |\n' "$name" "${RPS[$name]:-}" "${P99[$name]:-}" \
      "${RPS[$c]:-}" "${P99[$c]:-}" "$(ratio "${RPS[$c]:-}" "${RPS[$name]:-}")"
  done
  echo "cluster pass: hot-product oversell ${OVERSOLD[cluster]} (target 0); orders completed: ${ORDERS_DONE[cluster]};" \
       "errors: ${ERR["POST /orders, 1,000 products$CLUSTER_TAG"]:-} spread, ${ERR["POST /orders, one hot product$CLUSTER_TAG"]:-} hot"
  echo "cluster worker: ${ORDER_DURATION} s of spread orders, queue at most ${MAX_PENDING[cluster]} pending" \
       "(${MAX_DEPTH[cluster]} jobs in Redis), all completed ${SPREAD_BEHIND[cluster]} s after the run's end;" \
       "hot-product orders ${HOT_BEHIND[cluster]} s after theirs"
}
