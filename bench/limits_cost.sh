#!/usr/bin/env bash
# What the edge's limits cost the read path: two release apis on one database, rate limits on (never reached:
# one address sends everything) and off, measured in turns (on, off, on, off) with the same wrk settings, so
# the machine's noise falls on both. Prints each side's best quotes/s and cached reads/s and on/off.
# bench/run.sh calls it last; alone: bench/limits_cost.sh (release binaries built, services up).
set -euo pipefail
cd "$(dirname "$0")/.."
DB=pricing_limits_cost
export PGPASSWORD=postgres DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/$DB"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}" REDIS_KEY_PREFIX=limits_cost RUST_LOG=warn
export ADMIN_TOKEN=bench-admin-token-0123456789abcdef0123 QUOTE_SIGNING_KEY=bench-quote-signing-key-0123456789abcd
export JWT_HS256_SECRET=bench-jwt-hs256-secret-0123456789abcdef
TURN="${TURN:-5}"
dropdb -h 127.0.0.1 -U postgres --if-exists --force "$DB"
redis-cli --scan --pattern "$REDIS_KEY_PREFIX:*" | xargs -r -n 1000 redis-cli del >/dev/null
./target/release/pricing-api seed --products 1000 --stock 1000000 >/dev/null 2>&1
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
API_ADDR=127.0.0.1:8105 RATE_LIMIT_READS_PER_SEC=1000000000 ./target/release/pricing-api serve >/tmp/limits-on.log 2>&1 &
pids+=($!)
API_ADDR=127.0.0.1:8106 RATE_LIMIT_READS_PER_SEC=0 RATE_LIMIT_ORDERS_PER_SEC=0 RATE_LIMIT_ADMIN_PER_SEC=0 \
  ./target/release/pricing-api serve >/tmp/limits-off.log 2>&1 &
pids+=($!)
for port in 8105 8106; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/api/v1/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  PRODUCTS=1000 wrk -t2 -c16 -d2s -s bench/wrk/cached_product.lua "http://127.0.0.1:$port" >/dev/null
done
rps() { wrk -t2 -c64 -d"${TURN}s" -s "bench/wrk/$1" "$2" 2>&1 | awk '/Requests\/sec/ {print int($2)}'; }
declare -A best
for turn in 1 2; do
  for side in on:8105 off:8106; do
    name=${side%%:*}; url="http://127.0.0.1:${side##*:}"
    q=$(FIRST=1 LAST=1000 rps quote.lua "$url"); c=$(PRODUCTS=1000 rps cached_product.lua "$url")
    [ "${q:-0}" -gt "${best[$name-q]:-0}" ] && best[$name-q]=$q
    [ "${c:-0}" -gt "${best[$name-c]:-0}" ] && best[$name-c]=$c
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "limits cost: quotes ${best[on-q]}/s on, ${best[off-q]}/s off ($(ratio "${best[on-q]}" "${best[off-q]}")); cached reads ${best[on-c]}/s on, ${best[off-c]}/s off ($(ratio "${best[on-c]}" "${best[off-c]}")) (target >= 0.95)"
