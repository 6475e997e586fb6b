#!/usr/bin/env bash
# Runs the whole system without Docker: PostgreSQL and Redis (started if down), then a release build of the
# api, the worker and the listener, their logs interleaved on this terminal with a prefix each. Ctrl-C
# stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
[ -f .env ] && set -a && . ./.env && set +a
export ADMIN_TOKEN="${ADMIN_TOKEN:-dev-admin-token}"
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
echo "api on ${API_ADDR:-0.0.0.0:8000}  (admin token: $ADMIN_TOKEN)  Ctrl-C stops all three" >&2
wait -n
