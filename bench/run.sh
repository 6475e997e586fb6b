#!/usr/bin/env bash
# The benchmark (not a test): starts a release build of the api, the worker and the listener against a fresh database, drives
# them with wrk beside them, measures this machine's ceilings in the same run (redis-benchmark GET; pgbench with
# the least an order does, on one hot row and spread over 1,000 rows; the least an HTTP endpoint over Redis does
# with our stack, bench/ceiling, driven by the same wrk settings) and prints every figure with its ratio to its
# ceiling. A read figure gets two: to redis-benchmark GET and to the bare endpoint of the same shape. This
# machine is shared and noisy: compare ratios, not absolute numbers.
#
#   bench/run.sh                   # everything, under 12 minutes with the cluster pass (it prints its time)
#   DURATION=20 bench/run.sh       # longer runs
#   SKIP_MILLION=1 bench/run.sh    # skip the 1,000,000-product recalculation
#   SKIP_EVENTS=1 bench/run.sh     # skip the market-event figures
#   SKIP_TRACING=1 bench/run.sh    # skip the trace-export overhead figures
#   SKIP_FLOOD=1 bench/run.sh      # skip the 5,000-connection flood
#   SKIP_LIMITS_COST=1 bench/run.sh # skip the limits on/off comparison
#   ORDER_DURATION=20 bench/run.sh # a shorter sustained spread-order run (default 60 s)
#   SKIP_CLUSTER=1 bench/run.sh    # skip the Redis Cluster pass (bench/cluster.sh: the same reads, quotes and
#                                  # orders against a 6-node cluster on ports 7600.., printed beside these)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
PORT="${BENCH_PORT:-8100}"
DB=pricing_bench
export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/$DB"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_KEY_PREFIX=bench
export API_ADDR="127.0.0.1:$PORT"
export ADMIN_TOKEN=bench-admin-token-0123456789abcdef0123
export QUOTE_SIGNING_KEY=bench-quote-signing-key-0123456789abcd
export JWT_HS256_SECRET=bench-jwt-hs256-secret-0123456789abcdef
# Rate limits on but never reached (one address sends everything): the figures include their cost.
export RATE_LIMIT_READS_PER_SEC=1000000000 RATE_LIMIT_ORDERS_PER_SEC=1000000000 RATE_LIMIT_ADMIN_PER_SEC=1000000000
export RUST_LOG=warn
export PGPASSWORD=postgres
URL="http://127.0.0.1:$PORT"

scripts/services.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -p pricing-api -p pricing-worker -p pricing-listener -p pricing-bench-ceiling 2>&1 | tail -1

psql_() { psql -h 127.0.0.1 -U postgres -d "$DB" -qAt "$@"; }
echo "== fresh database $DB and Redis prefix $REDIS_KEY_PREFIX"
dropdb -h 127.0.0.1 -U postgres --if-exists --force "$DB"
redis-cli --scan --pattern "$REDIS_KEY_PREFIX:*" | xargs -r -n 1000 redis-cli del >/dev/null
./target/release/pricing-api seed --products 10000 --stock 10000000

pids=()
source bench/cluster.sh
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; stop_cluster; }
trap cleanup EXIT
STACK=()
start_stack() { # log-suffix [VAR=value...]: the api, the worker and the listener, with those settings added
  local logs=$1; shift
  env "$@" ./target/release/pricing-api serve > "/tmp/bench-api$logs.log" 2>&1 &
  API_PID=$!; STACK=($API_PID)
  env "$@" ./target/release/pricing-worker > "/tmp/bench-worker$logs.log" 2>&1 &
  STACK+=($!)
  env LISTENER_ADDR=127.0.0.1:8102 "$@" ./target/release/pricing-listener > "/tmp/bench-listener$logs.log" 2>&1 &
  STACK+=($!); pids+=("${STACK[@]}")
  for _ in $(seq 1 100); do curl -fsS "$URL/api/v1/health/ready" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "   the api did not become ready: $(tail -3 "/tmp/bench-api$logs.log")"; return 1
}
# Waits for them to exit, so the next pass can bind the same ports.
stop_stack() { local p; kill "${STACK[@]}" 2>/dev/null || true; for p in "${STACK[@]}"; do wait "$p" 2>/dev/null || true; done; }
start_stack "" || true

# --- helpers ----------------------------------------------------------------------------------------------------
to_ms() { # "1.23ms" | "456.00us" | "1.02s" -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
declare -A RPS P50 P99 ERR NOTE
RESULTS=$(mktemp)
run_wrk() { # name script [env...]  (DUR overrides the duration; results also go to $RESULTS)
  run_wrk_at "$URL" "$@"
}
run_wrk_at() { # url name script [env...]
  local url=$1 name=$2 script=$3; shift 3
  local out; out=$(env "$@" wrk -t2 -c"$CONNECTIONS" -d"${DUR:-$DURATION}s" --latency -s "bench/wrk/$script" "$url" 2>&1 || true)
  local rps p50 p99 errors note
  rps=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  # Errors: answers other than 2xx/3xx plus socket errors (connect, read, write, timeout).
  errors=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")
  note="$( (grep -E '^status|Non-2xx|Socket errors' <<<"$out" || true) | tr '\n' ' ')"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "$errors" "$note" >> "$RESULTS"
  printf '   %-36s %8s req/s  p50 %7s ms  p99 %7s ms  %s\n' "$name" "$rps" "$p50" "$p99" "$note"
}
load_results() { # figures run in the background (subshells) reach the summary through $RESULTS
  while IFS=$'\t' read -r name rps p50 p99 errors note; do
    RPS[$name]=$rps; P50[$name]=$p50; P99[$name]=$p99; ERR[$name]=$errors; NOTE[$name]=$note
  done < "$RESULTS"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# --- ceilings ---------------------------------------------------------------------------------------------------
echo "== ceilings (same machine, same run)"
REDIS_GET=$(redis-benchmark -h 127.0.0.1 -c "$CONNECTIONS" -n 300000 -t get -q | tr '\r' '\n' \
            | awk '/requests per second/ { printf "%.0f", $2 }')
echo "   redis-benchmark -c $CONNECTIONS -t get       $REDIS_GET req/s"
psql_ -c "CREATE TABLE bench_products (id INT PRIMARY KEY, stock INT NOT NULL);
          CREATE TABLE bench_orders (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, product_id INT,
                                     total_price NUMERIC(12,2), created_at TIMESTAMPTZ DEFAULT now());
          INSERT INTO bench_products SELECT g, 100000000 FROM generate_series(1, 1000) g;"
pgb() { pgbench -h 127.0.0.1 -U postgres -n -c "$CONNECTIONS" -j 2 -T "$DURATION" -f "bench/pgbench/$1" "$DB" 2>/dev/null \
          | awk '/^tps/ { printf "%.0f", $3 }'; }
PG_HOT=$(pgb order_hot.sql)
PG_SPREAD=$(pgb order_spread.sql)
echo "   pgbench order, one hot row               $PG_HOT tx/s"
echo "   pgbench order, spread over 1,000 rows    $PG_SPREAD tx/s"

# The bare ceiling (bench/ceiling): axum, tokio, one shared multiplexed Redis connection, one GET per request,
# answering the bytes of a cached product as the api serves them (about 220 bytes) from {prefix}:p:1..10000.
# Same wrk settings and id shapes as the api's read figures below: /p over 1,000 ids as /cached, /q with the
# quote body on one hot id and on the 10,000-product hot set.
C_PRODUCT="bare GET /p/{id}, 1,000 ids"
C_HOT="bare POST /q, one hot id"
C_SET="bare POST /q, 10,000-id hot set"
awk -v prefix="$REDIS_KEY_PREFIX" 'BEGIN {
  split("home books toys garden sports beauty grocery electronics", cat, " ")
  for (id = 1; id <= 10000; id++) {
    key = prefix ":p:" id
    price = 5 + (id * 7919 % 49500) / 100
    value = sprintf("{\"id\":%d,\"sku\":\"P-%d\",\"name\":\"Demo product %d\",\"category\":\"%s\",\"price\":%.2f,\"stock\":9999992,\"version\":9,\"created_at\":\"2026-11-23T21:28:46.411300Z\",\"updated_at\":\"2026-11-23T21:29:33.153462Z\",\"current_price\":%.2f}",
                    id, id + 99, id + 99, cat[1 + id % 8], price, price * 1.05)
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(key), key, length(value), value
  }
}' | redis-cli --pipe >/dev/null
./target/release/bench-ceiling 127.0.0.1:0 > /tmp/bench-ceiling.log 2>&1 &
CEILING_PID=$!; pids+=($CEILING_PID)
CEILING_URL=""
for _ in $(seq 1 100); do
  CEILING_URL=$(sed -n 's|^bench-ceiling listening on |http://|p' /tmp/bench-ceiling.log)
  [ -n "$CEILING_URL" ] && break; sleep 0.1
done
if [ -n "$CEILING_URL" ] && curl -fsS "$CEILING_URL/p/1" >/dev/null; then
  PRODUCTS=1000 wrk -t2 -c16 -d1s -s bench/wrk/ceiling_product.lua "$CEILING_URL" >/dev/null
  run_wrk_at "$CEILING_URL" "$C_PRODUCT" ceiling_product.lua PRODUCTS=1000
  run_wrk_at "$CEILING_URL" "$C_HOT" quote.lua QUOTE_PATH=/q FIRST=42 LAST=42
  run_wrk_at "$CEILING_URL" "$C_SET" quote.lua QUOTE_PATH=/q FIRST=1 LAST=10000
else
  echo "   the bare ceiling did not start: $(cat /tmp/bench-ceiling.log)"
fi
kill "$CEILING_PID" 2>/dev/null || true

# --- catalogue, orders (issue 3) and quotes (issue 4) ----------------------------------------------------------
# Seconds (one decimal) until no order is pending or processing: how far the worker is behind.
worker_behind() {
  local t0 q pending processing; t0=$(date +%s.%N)
  while :; do
    q=$(curl -fsS "$URL/api/v1/orders/queue" || true)
    pending=$(sed 's/.*"queue_length":\([0-9]*\).*/\1/' <<<"$q"); processing=$(sed 's/.*"processing":\([0-9]*\).*/\1/' <<<"$q")
    [ "$pending" = 0 ] && [ "$processing" = 0 ] && break
    [ "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print (b - a > 300) }')" = 1 ] && { echo timeout; return; }
    sleep 0.2
  done
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}
# Stock and units sold, read in one statement (one snapshot).
stock_and_sold() { psql_ -F ' ' -c "SELECT stock, (SELECT coalesce(sum(quantity), 0) FROM order_items WHERE product_id = 5000)
                                    FROM products WHERE id = 5000"; }
ORDER_DURATION="${ORDER_DURATION:-60}"
declare -A OVERSOLD SPREAD_BEHIND HOT_BEHIND MAX_PENDING MAX_DEPTH ORDERS_DONE
# The figures measured on each Redis (single, then cluster): PASS keys the arrays above, TAG ends each figure's
# name ("" for the single Redis, so the names of earlier runs stay).
core_pass() { # pass tag
  local pass=$1 tag=$2 samples sampler before after hot_before sold_before hot_after sold_after hot_sold prev now
  echo "== api$tag (wrk -t2 -c$CONNECTIONS -d${DURATION}s)"
  PRODUCTS=1000 wrk -t2 -c16 -d2s -s bench/wrk/cached_product.lua "$URL" >/dev/null  # warm the cache
  run_wrk "GET /products/{id}/cached$tag" cached_product.lua PRODUCTS=1000
  # Spread orders at the api's full rate for ORDER_DURATION (60 s): the queue is sampled every second, and the
  # worker must have completed every order within 5 s of the run's end.
  samples=$(mktemp)
  ( while :; do curl -fsS "$URL/api/v1/orders/queue" >> "$samples" 2>/dev/null; echo >> "$samples"; sleep 1; done ) &
  sampler=$!; pids+=($sampler)
  DUR=$ORDER_DURATION run_wrk "POST /orders, 1,000 products$tag" order.lua FIRST=1 LAST=1000
  kill "$sampler" 2>/dev/null || true
  SPREAD_BEHIND[$pass]=$(worker_behind)
  MAX_PENDING[$pass]=$(sed -n 's/.*"queue_length":\([0-9]*\).*/\1/p' "$samples" | sort -n | tail -1)
  MAX_DEPTH[$pass]=$(sed -n 's/.*"redis_queue_depth":\([0-9]*\).*/\1/p' "$samples" | sort -n | tail -1)
  echo "   ${ORDER_DURATION} s of spread orders: at most ${MAX_PENDING[$pass]} orders pending (${MAX_DEPTH[$pass]} jobs in the Redis queue); every order completed ${SPREAD_BEHIND[$pass]} s after the run's end"
  read -r hot_before sold_before <<<"$(stock_and_sold)"
  run_wrk "POST /orders, one hot product$tag" order.lua FIRST=5000 LAST=5000
  # Orders wrk left in flight still commit (the api finishes a purchase whose client went away): let them land.
  prev=""; while :; do now=$(stock_and_sold); [ "$now" = "$prev" ] && break; prev=$now; sleep 0.5; done
  read -r hot_after sold_after <<<"$prev"
  hot_sold=$(( sold_after - sold_before ))
  # Every unit sold is in an order, and stock fell by exactly that much: no oversell, no lost update.
  OVERSOLD[$pass]=$(( hot_sold - (hot_before - hot_after) ))
  echo "   hot product: $hot_sold units sold in orders, stock went $hot_before -> $hot_after: oversold by ${OVERSOLD[$pass]}"
  # The worker is still working through the orders just placed; let it finish so the quote figures measure quotes.
  HOT_BEHIND[$pass]=$(worker_behind)
  echo "   the worker completed every hot-product order ${HOT_BEHIND[$pass]} s after the run's end"
  # Every order of the pass, counted in PostgreSQL: completed of all, and the others by status if any.
  ORDERS_DONE[$pass]="$(psql_ -c "SELECT count(*) FILTER (WHERE status = 'completed') || ' of ' || count(*) FROM orders")"
  ORDERS_DONE[$pass]+="$(psql_ -c "SELECT string_agg(', ' || n || ' ' || status, '') FROM
                          (SELECT status, count(*) n FROM orders WHERE status <> 'completed' GROUP BY status) s")"
  echo "   orders completed: ${ORDERS_DONE[$pass]}"

  FIRST=42 LAST=42 wrk -t2 -c16 -d1s -s bench/wrk/quote.lua "$URL" >/dev/null
  run_wrk "POST /price, one hot product$tag" quote.lua FIRST=42 LAST=42
  FIRST=1 LAST=10000 wrk -t2 -c64 -d3s -s bench/wrk/quote.lua "$URL" >/dev/null
  run_wrk "POST /price, 10,000-product hot set$tag" quote.lua FIRST=1 LAST=10000
}
core_pass single ""

# --- trace export overhead (issue 9) ----------------------------------------------------------------------------
if [ "${SKIP_TRACING:-0}" != "1" ]; then
  echo "== trace export: cache-hit quotes with export off, on at ratio 0.1, on at ratio 1.0 (local OTLP receiver)"
  SINK_PORT=$((PORT + 50))
  python3 bench/otlp_sink.py "$SINK_PORT" & pids+=($!)
  start_traced_api() { # port ratio
    API_ADDR="127.0.0.1:$1" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" \
      OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$2" \
      ./target/release/pricing-api serve > "/tmp/bench-api-traced-$2.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$1/api/v1/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS "http://127.0.0.1:$1/api/v1/health/ready" >/dev/null || echo "   the api with export ratio $2 did not start"
    # Warm it up (its cache of the hot product, its connections) before it is measured.
    FIRST=42 LAST=42 wrk -t2 -c16 -d1s -s bench/wrk/quote.lua "http://127.0.0.1:$1" >/dev/null
  }
  start_traced_api $((PORT + 11)) 0.1
  start_traced_api $((PORT + 12)) 1.0
  run_wrk "POST /price hot, export off" quote.lua FIRST=42 LAST=42
  run_wrk_at "http://127.0.0.1:$((PORT + 11))" "POST /price hot, export 0.1" quote.lua FIRST=42 LAST=42
  run_wrk_at "http://127.0.0.1:$((PORT + 12))" "POST /price hot, export 1.0" quote.lua FIRST=42 LAST=42
fi

# --- market events (issue 8) -----------------------------------------------------------------------------------
if [ "${SKIP_EVENTS:-0}" != "1" ]; then
  echo "== market events (listener: one process, batches of 500)"
  KEY="$REDIS_KEY_PREFIX:market_events"
  now_s() { date +%s.%N; }
  since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.2f", b - a }'; }
  applied_like() { psql_ -c "SELECT count(*) FROM market_events WHERE status = 'applied' AND event_id LIKE '$1%'"; }
  wait_applied() { # prefix count: waits (at most 300 s) until that many are applied
    local t=$(now_s)
    while [ "$(applied_like "$1")" -lt "$2" ]; do
      [ "$(since "$t" | cut -d. -f1)" -gt 300 ] && { echo "   timed out waiting for $1 events"; return 1; }
      sleep 0.05
    done
  }
  t0=$(now_s)
  python3 bench/events_load.py burst 50000 burst "$KEY" | redis-cli --pipe >/dev/null
  APPEND_S=$(since "$t0")
  wait_applied burst- 50000
  BURST_S=$(since "$t0")
  BURST_RATE=$(awk -v s="$BURST_S" 'BEGIN { printf "%.0f", 50000 / s }')
  echo "   50,000 events appended to the stream in ${APPEND_S} s, all applied ${BURST_S} s after the first: $BURST_RATE events/s"

  t0=$(now_s)
  run_wrk "POST /publish-market-event" publish.lua TOKEN="$ADMIN_TOKEN"
  API_SENT=$(psql_ -c "SELECT count(*) FROM market_events WHERE event_id LIKE 'api-%'")
  wait_applied api- "$API_SENT"
  API_S=$(since "$t0")
  API_RATE=$(awk -v n="$API_SENT" -v s="$API_S" 'BEGIN { printf "%.0f", n / s }')
  echo "   $API_SENT events published through the api, all applied ${API_S} s after the first: $API_RATE events/s"

  python3 bench/events_load.py steady 1000 10 steady "$KEY" 127.0.0.1 6379
  wait_applied steady- 10000
  read -r EV_P50 EV_P99 <<<"$(psql_ -F ' ' -c "
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1)
    FROM (SELECT extract(epoch FROM applied_at - (payload->>'occurred_at')::timestamptz) * 1000 AS ms
          FROM market_events WHERE event_id LIKE 'steady-%') l")"
  echo "   steady 1,000 events/s for 10 s: publish-to-applied p50 $EV_P50 ms, p99 $EV_P99 ms"

  SENT=$(( 50000 + API_SENT + 10000 ))
  APPLIED=$(psql_ -c "SELECT count(*) FROM market_events WHERE status = 'applied'")
  APPLY_COMMITS=$(curl -fsS http://127.0.0.1:8102/metrics | awk -F' ' '/^market_events_total\{outcome="applied"\}/ { print $2 }')
  EV_LOST=$(( SENT - APPLIED ))
  EV_TWICE=$(( APPLY_COMMITS - APPLIED ))
  echo "   sent $SENT, applied $APPLIED (lost $EV_LOST), applied twice $EV_TWICE"
fi

if [ "${SKIP_MILLION:-0}" != "1" ]; then
  echo "== 1,000,000 products"
  t0=$(date +%s.%N)
  ./target/release/pricing-api seed --products 1000000 --stock 1000 2>/dev/null
  echo "   seeded in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
  # The seed above consumed ids 10001..20000 on its 10,000 existing SKUs: the new products are 20001..1010000.
  run_wrk "POST /price, misses (1M products)" quote.lua FIRST=20001 LAST=1010000
  # The recalculation runs in the worker while wrk asks for cached quotes from the hot set.
  answer=$(curl -sS -X POST -H "Authorization: Bearer $ADMIN_TOKEN" -w '\n%{http_code} %{time_total}' "$URL/api/v1/recalculate")
  task=$(head -n 1 <<<"$answer" | sed 's/.*"task_id":"\([^"]*\)".*/\1/')
  ACCEPT_MS=$(tail -n 1 <<<"$answer" | awk '{ printf "%s in %.1f ms", $1, $2 * 1000 }')
  echo "   POST /recalculate answered $ACCEPT_MS"
  t0=$(date +%s.%N)
  DUR=$(( DURATION > 30 ? DURATION : 30 )) run_wrk "POST /price, hot set during recalc" quote.lua FIRST=1 LAST=10000 &
  wrk_pid=$!
  while :; do
    status=$(curl -fsS "$URL/api/v1/tasks/$task" | sed 's/.*"status":"\([^"]*\)".*/\1/')
    case $status in succeeded|failed|skipped) break ;; esac
    sleep 0.2
  done
  RECALC_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  wait "$wrk_pid"
  echo "   recalculation of $(curl -fsS "$URL/api/v1/tasks/$task" | sed 's/.*"processed":\([0-9]*\).*/\1/') products: $status in $RECALC_S s"
fi

RSS_MB=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$API_PID/status")

# --- the same figures on a Redis Cluster (bench/cluster.sh) -------------------------------------------------------
[ "${SKIP_CLUSTER:-0}" = "1" ] || cluster_pass

# --- a connection flood ---------------------------------------------------------------------------------------
# A second api with a small connection cap and in-flight bound: 5,000 connections at once (silent, half a
# header, busy) while a normal client keeps asking over its own keep-alive connection (bench/flood.py).
FLOOD_RESULT="skipped"
if [ "${SKIP_FLOOD:-0}" != "1" ]; then
  echo "== connection flood: 5,000 connections against an api with HTTP_MAX_CONNECTIONS=1000, HTTP_MAX_IN_FLIGHT=256"
  API_ADDR=127.0.0.1:8103 HTTP_MAX_CONNECTIONS=1000 HTTP_MAX_IN_FLIGHT=256 HTTP_HEADER_READ_TIMEOUT_MS=2000 \
    RATE_LIMIT_READS_PER_SEC=0 ./target/release/pricing-api serve > /tmp/bench-api-flood.log 2>&1 &
  FLOOD_PID=$!; pids+=($FLOOD_PID)
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:8103/api/v1/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  FLOOD_RESULT=$(python3 bench/flood.py http://127.0.0.1:8103 5000 "${FLOOD_DURATION:-10}" 2>&1 || true)
  echo "$FLOOD_RESULT"
  kill "$FLOOD_PID" 2>/dev/null || true
fi

# --- what the limits cost ---------------------------------------------------------------------------------------
LIMITS_COST="skipped"
if [ "${SKIP_LIMITS_COST:-0}" != "1" ]; then
  echo "== the edge's limits on and off (bench/limits_cost.sh)"
  LIMITS_COST=$(bench/limits_cost.sh 2>/dev/null | tail -1 || true)
  echo "   $LIMITS_COST"
fi

# --- summary ----------------------------------------------------------------------------------------------------
load_results
echo
echo "== summary (ratio = our figure / the machine's ceiling measured above; bare = bench/ceiling, one Redis GET"
echo "   behind axum, same wrk settings and shape: bare / redis GET is what HTTP costs, ours / bare what our logic costs)"
printf '| %-36s | %9s | %8s | %8s | %6s | %-24s | %6s | %-24s | %6s | %-15s |\n' \
  figure "req/s" "p50 ms" "p99 ms" errors ceiling ratio "bare ceiling" ratio target
printf '|%s|\n' "--------------------------------------|-----------|----------|----------|--------|--------------------------|--------|--------------------------|--------|-----------------"
row() { # figure target ceiling-name ceiling [bare-figure bare-name]
  local bare="-" bare_ratio="-"
  if [ -n "${5:-}" ]; then bare="$6 (${RPS[$5]:-})"; bare_ratio=$(ratio "${RPS[$1]:-}" "${RPS[$5]:-}"); fi
  printf '| %-36s | %9s | %8s | %8s | %6s | %-24s | %6s | %-24s | %6s | %-15s |\n' "$1" "${RPS[$1]:-}" "${P50[$1]:-}" \
    "${P99[$1]:-}" "${ERR[$1]:-}" "$3 ($4)" "$(ratio "${RPS[$1]:-}" "$4")" "$bare" "$bare_ratio" "$2"
}
row "$C_PRODUCT" "-" "redis GET" "$REDIS_GET"
row "$C_HOT" "-" "redis GET" "$REDIS_GET"
row "$C_SET" "-" "redis GET" "$REDIS_GET"
row "GET /products/{id}/cached" "bare>=0.8,p99<=10" "redis GET" "$REDIS_GET" "$C_PRODUCT" "bare /p"
row "POST /orders, 1,000 products" ">= 0.5" "pgbench spread" "$PG_SPREAD"
row "POST /orders, one hot product" ">= 1.5, p99<=50" "pgbench hot row" "$PG_HOT"
row "POST /price, one hot product" "bare>=0.7,p99<=10" "redis GET" "$REDIS_GET" "$C_HOT" "bare /q hot"
row "POST /price, 10,000-product hot set" "bare>=0.7,p99<=10" "redis GET" "$REDIS_GET" "$C_SET" "bare /q hot set"
if [ "${SKIP_MILLION:-0}" != "1" ]; then
  row "POST /price, misses (1M products)" "-" "redis GET" "$REDIS_GET" "$C_SET" "bare /q hot set"
  row "POST /price, hot set during recalc" "p99<=20" "redis GET" "$REDIS_GET" "$C_SET" "bare /q hot set"
  echo "recalculation of 1,000,000 products: $RECALC_S s (target <= 8 s); POST /recalculate answered $ACCEPT_MS (target 202 in < 50 ms)"
fi
echo "hot-product oversell: ${OVERSOLD[single]} (target 0); orders completed: ${ORDERS_DONE[single]}"
echo "worker: ${ORDER_DURATION} s of spread orders at full rate, queue at most ${MAX_PENDING[single]} pending (${MAX_DEPTH[single]} jobs in Redis), all completed ${SPREAD_BEHIND[single]} s after the run's end (target <= 5 s); hot-product orders all completed ${HOT_BEHIND[single]} s after theirs"
if [ "${SKIP_TRACING:-0}" != "1" ]; then
  off=${RPS["POST /price hot, export off"]}
  echo "trace export: cache-hit quotes $off/s off, ${RPS["POST /price hot, export 0.1"]}/s at ratio 0.1 ($(ratio "${RPS["POST /price hot, export 0.1"]}" "$off") of off; target >= 0.90), ${RPS["POST /price hot, export 1.0"]}/s at 1.0 ($(ratio "${RPS["POST /price hot, export 1.0"]}" "$off"))"
fi
if [ "${SKIP_EVENTS:-0}" != "1" ]; then
  echo "market events: burst of 50,000 applied at $BURST_RATE/s (target >= 5,000/s); through the api $API_RATE/s;"
  echo "  p50 $EV_P50 ms / p99 $EV_P99 ms publish-to-applied at 1,000/s offered (target p99 <= 250 ms); lost $EV_LOST, applied twice $EV_TWICE (target 0, 0)"
fi
echo "api peak RSS: $RSS_MB MB (target <= 32 MB)"
[ "$FLOOD_RESULT" = skipped ] || echo "$FLOOD_RESULT" | sed -n '1p;2p;$p'
[ "$LIMITS_COST" = skipped ] || echo "$LIMITS_COST"
[ "${SKIP_CLUSTER:-0}" = "1" ] || cluster_table
echo "whole run: $SECONDS s (target < 720 s with the cluster pass)"
