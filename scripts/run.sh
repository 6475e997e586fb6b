#!/usr/bin/env bash
# Runs the whole system without Docker: PostgreSQL and Redis (started if down), then a release build of the
# api, the worker and the listener, their logs interleaved on this terminal with a prefix each. Ctrl-C
# stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
[ -f .env ] && set -a && . ./.env && set +a
# Development: a fixed admin token and shoppers' secret you can use at once (the quote key is generated).
export APP_ENV="${APP_ENV:-development}"
export ADMIN_TOKEN="${ADMIN_TOKEN:-dev-admin-token-for-this-machine-only}"
export JWT_HS256_SECRET="${JWT_HS256_SECRET:-dev-jwt-secret-for-this-machine-only}"
cargo build --release --locked -p pricing-api -p pricing-worker -p pricing-listener
./target/release/pricing-api seed --products "${SEED_PRODUCTS:-1000}"

pids=()
cleanup() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup INT TERM EXIT
./target/release/pricing-api serve > >(sed -u 's/^/[api]    /') 2>&1 &
pids+=($!)
./target/release/pricing-worker > >(sed -u 's/^/[worker] /') 2>&1 &
pids+=($!)
./target/release/pricing-listener > >(sed -u 's/^/[listen] /') 2>&1 &
pids+=($!)
echo "api on ${API_ADDR:-0.0.0.0:8000}  (admin token: $ADMIN_TOKEN; a shopper's token: ./target/release/pricing-api token --sub shopper-1 --member)  Ctrl-C stops all three" >&2
wait -n
