#!/usr/bin/env bash
# The test command (README, .ci/run): brings up PostgreSQL and Redis if they are down, then runs every test of
# the workspace against them. Extra arguments go to `cargo test` (e.g. `scripts/test.sh -- orders`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/pricing}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
cargo test --workspace --locked "$@"
