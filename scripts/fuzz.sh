#!/usr/bin/env bash
# Fuzzes the running api against its own description: schemathesis generates requests for every operation of
# /openapi.json (valid and invalid ones, with the admin token) and fails on any 5xx and on any answer that breaks
# the documented status codes, content types, headers or schemas. CI runs it (.ci/run); it takes a few minutes.
#
#   scripts/fuzz.sh                    # release build, fresh database, the default budget
#   MAX_EXAMPLES=200 scripts/fuzz.sh   # more examples per operation
#   SKIP_BUILD=1 scripts/fuzz.sh       # use the release binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${FUZZ_PORT:-8250}"
DB=pricing_fuzz
MAX_EXAMPLES="${MAX_EXAMPLES:-100}"
VENV=target/fuzz-venv
export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/$DB"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_KEY_PREFIX=fuzz
export API_ADDR="127.0.0.1:$PORT"
export ADMIN_TOKEN=fuzz-admin-token-0123456789abcdef0123
export QUOTE_SIGNING_KEY=fuzz-quote-signing-key-0123456789abcd
export JWT_HS256_SECRET=fuzz-jwt-hs256-secret-0123456789abcdef
# One address sends every request: rate limits off.
export RATE_LIMIT_READS_PER_SEC=0 RATE_LIMIT_ORDERS_PER_SEC=0 RATE_LIMIT_ADMIN_PER_SEC=0
export RUST_LOG="${RUST_LOG:-warn}"
export PGPASSWORD=postgres
log() { echo "[fuzz] $*" >&2; }

scripts/services.sh
if [ ! -x "$VENV/bin/schemathesis" ] || ! cmp -s scripts/fuzz-requirements.txt "$VENV/requirements.txt"; then
  log "installing schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r scripts/fuzz-requirements.txt
  cp scripts/fuzz-requirements.txt "$VENV/requirements.txt"
fi
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release --locked -p pricing-api 2>&1 | tail -1

log "fresh database $DB, Redis prefix $REDIS_KEY_PREFIX"
dropdb -h 127.0.0.1 -U postgres --if-exists --force "$DB"
redis-cli --scan --pattern "$REDIS_KEY_PREFIX:*" | xargs -r -n 1000 redis-cli del >/dev/null
./target/release/pricing-api seed --products 50 --stock 1000000

API_LOG=$(mktemp -t fuzz-api.XXXXXX.log)
./target/release/pricing-api serve >"$API_LOG" 2>&1 &
API_PID=$!
trap 'kill $API_PID 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS "http://$API_ADDR/api/v1/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done

# Besides no 5xx and answers as documented: the description and the server agree both ways: a request the
# schema allows is accepted (positive_data_acceptance), one it forbids is refused (negative_data_rejection).
CHECKS="${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,positive_data_acceptance,negative_data_rejection}"
log "schemathesis: every operation, $MAX_EXAMPLES examples each (api log: $API_LOG)"
status=0
"$VENV/bin/schemathesis" run "http://$API_ADDR/openapi.json" \
  --checks "$CHECKS" \
  --header "Authorization: Bearer $ADMIN_TOKEN" \
  --max-examples "$MAX_EXAMPLES" \
  --phases examples,coverage,fuzzing \
  --workers 1 \
  --request-timeout 15 \
  --seed "${FUZZ_SEED:-1}" \
  --no-color || status=$?
if ! kill -0 $API_PID 2>/dev/null; then
  log "the api died during the run: see $API_LOG"
  exit 1
fi
if grep -q '"level":"ERROR"\|ERROR' "$API_LOG"; then
  log "the api logged errors (see $API_LOG):"
  grep 'ERROR' "$API_LOG" | head -5 >&2
fi
[ $status -eq 0 ] && log "no 5xx, every answer as documented" || log "schemathesis found failures (exit $status)"
exit $status
