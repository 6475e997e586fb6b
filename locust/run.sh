#!/usr/bin/env bash
# Load test with locust (locust/locustfile.py: shoppers quoting, reading and buying, one operator publishing
# market events and starting recalculations) against a release build of the api, the worker and the listener,
# on a fresh database and Redis prefix. Prints one row per endpoint and exits non-zero unless every endpoint's
# P95 is under P95_LIMIT_MS (50 ms) and no request failed.
#
#   locust/run.sh                                   # build, 500 users, +100/s, 60 s
#   SKIP_BUILD=1 locust/run.sh                      # use the release binaries already in target/release
#   LOCUST_USERS=200 LOCUST_SPAWN_RATE=50 LOCUST_RUN_TIME=30s locust/run.sh
#   LOCUST_PROCESSES=2 locust/run.sh                # locust forks 2 load-generating processes (one core each)
#
# Against a stack that is already running (e.g. `docker compose up`): --host URL. Nothing is built, started or
# dropped; the api must have its seeded products (P-100 ...), and their stock is raised to SEED_STOCK through
# the admin api (PUT /api/v1/products/{id}) so no order fails for lack of stock. ADMIN_TOKEN and
# JWT_HS256_SECRET must be the stack's own (shoppers sign their tokens with the secret):
#   export ADMIN_TOKEN="$(docker compose exec -T api cat /run/pricing-secrets/admin_token)"
#   export JWT_HS256_SECRET="$(docker compose exec -T api cat /run/pricing-secrets/jwt_hs256_secret)"
#   locust/run.sh --host http://localhost:8000
#
# Other switches: SEED_PRODUCTS (1000), SEED_STOCK (1000000000: orders must never fail for lack of stock),
# HOT_PRODUCTS (50), P95_LIMIT_MS (50), ADMIN_TOKEN, QUOTE_SIGNING_KEY and JWT_HS256_SECRET (fixed test values), SKIP_SERVICES=1 (bring your own
# PostgreSQL/Redis: LOCUST_PG_URL, REDIS_URL), LOCUST_OUT (where results go; default target/locust/<time>).
# The traffic mix has its own switches (HOT_SHARE, OPERATORS, SHOPPER_WAIT_MIN/MAX, ...): see locust/locustfile.py.
# Ports: the first free ones in 8200-8249. Everything started here is stopped on exit; the database pricing_locust
# is left for inspection and dropped by the next run. Also printed: the api's own latency histogram for the same
# run, the business outcomes (409s, replays), the worker's and listener's backlog, and who used the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=
while [ $# -gt 0 ]; do
  case "$1" in
    --host) [ $# -ge 2 ] || { echo "locust/run.sh: --host needs a URL" >&2; exit 2; }; HOST="$2"; shift 2 ;;
    --host=*) HOST="${1#--host=}"; shift ;;
    *) echo "locust/run.sh: unknown argument $1 (the only one is --host URL; the rest are environment variables, see the top of this file)" >&2; exit 2 ;;
  esac
done
HOST="${HOST%/}"
if [ -n "$HOST" ]; then
  for var in ADMIN_TOKEN JWT_HS256_SECRET; do
    [ -n "${!var:-}" ] || { echo "locust/run.sh: --host needs the stack's $var (see the top of this file: docker compose exec -T api cat /run/pricing-secrets/...)" >&2; exit 2; }
  done
fi

USERS="${LOCUST_USERS:-500}"
SPAWN_RATE="${LOCUST_SPAWN_RATE:-100}"
RUN_TIME="${LOCUST_RUN_TIME:-60s}"
PROCESSES="${LOCUST_PROCESSES:-1}"
P95_LIMIT_MS="${P95_LIMIT_MS:-50}"
OLD_P95_MS=150 # the old Python service's acceptance criterion, for comparison
export SEED_PRODUCTS="${SEED_PRODUCTS:-1000}"
SEED_STOCK="${SEED_STOCK:-1000000000}"
export HOT_PRODUCTS="${HOT_PRODUCTS:-50}"
export ADMIN_TOKEN="${ADMIN_TOKEN:-locust-admin-token-0123456789abcdef}"
export QUOTE_SIGNING_KEY="${QUOTE_SIGNING_KEY:-locust-quote-signing-key-0123456789ab}"
export JWT_HS256_SECRET="${JWT_HS256_SECRET:-locust-jwt-hs256-secret-0123456789abcd}"
DB=pricing_locust
PG_URL="${LOCUST_PG_URL:-postgres://postgres:postgres@127.0.0.1:5432}"
export DATABASE_URL="$PG_URL/$DB"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_KEY_PREFIX=locust
OUT="${LOCUST_OUT:-target/locust/$(date -u +%Y%m%dT%H%M%SZ)}"
VENV=target/locust-venv
mkdir -p "$OUT"
log() { printf '[locust/run] %s\n' "$*" >&2; }

# --- the load generator, installed once per requirements.txt ---------------------------------------------------------
stamp="$(sha256sum locust/requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$stamp" ]; then
  log "installing locust/requirements.txt into $VENV"
  py="$(command -v python3.11 || command -v python3)"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r locust/requirements.txt
  echo "$stamp" > "$VENV/.requirements.sha256"
fi
PY="$VENV/bin/python"
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ beside the locustfile in the work tree

pids=()
LOCUST_PID=
TOP_PID=
API_PID= WORKER_PID= LISTENER_PID=
if [ -n "$HOST" ]; then
# --- an external stack: wait for it, raise the seeded products' stock ------------------------------------------------
URL="$HOST"
log "against $URL (nothing built or started here)"
ready=0
for _ in $(seq 1 150); do
  curl -fsS "$URL/api/v1/health/ready" >/dev/null 2>&1 && { ready=1; break; }
  sleep 0.2
done
[ "$ready" = 1 ] || { log "$URL/api/v1/health/ready does not answer 200"; exit 1; }
log "stock of the $SEED_PRODUCTS seeded products (P-100 ...) raised to $SEED_STOCK through the admin api"
"$PY" - "$URL" "$SEED_PRODUCTS" "$SEED_STOCK" <<'EOF'
import json, os, sys, time, urllib.error, urllib.request
url, count, stock = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
admin = {"Authorization": f"Bearer {os.environ['ADMIN_TOKEN']}", "Content-Type": "application/json"}
def call(method, path, body=None, headers=None):
    for _ in range(100):  # the admin rate limit (RATE_LIMIT_ADMIN_*) answers 429 with Retry-After: wait, retry
        req = urllib.request.Request(url + path, method=method, headers=headers or {},
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code != 429:
                sys.exit(f"{method} {path}: {e.code} {e.read()[:200]!r}")
            time.sleep(float(e.headers.get("Retry-After") or 1))
    sys.exit(f"{method} {path}: still rate-limited")
found, page = {}, 1
while len(found) < count:
    items = call("GET", f"/api/v1/products?page={page}&page_size=100").get("items", [])
    if not items:
        break
    for p in items:
        sku = str(p.get("sku", ""))
        if sku.startswith("P-") and sku[2:].isdigit() and 100 <= int(sku[2:]) < 100 + count:
            found[sku] = p
    page += 1
if len(found) < count:
    sys.exit(f"found {len(found)} of the {count} seeded products P-100 ... on {url}: seed them first "
             f"(docker compose run --rm seed, or pricing-api seed --products {count})")
low = [p for p in found.values() if p["stock"] < stock]
for p in low:
    call("PUT", f"/api/v1/products/{p['id']}", {"stock": stock}, admin)
print(f"[locust/run] {len(low)} raised, {count - len(low)} already had {stock}", file=sys.stderr)
EOF
else
# --- build, services, fresh data -------------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  log "cargo build --release"
  cargo build --release --locked -p pricing-api -p pricing-worker -p pricing-listener
fi
for bin in pricing-api pricing-worker pricing-listener; do
  [ -x "target/release/$bin" ] || { log "target/release/$bin is missing (run without SKIP_BUILD=1)"; exit 1; }
done
scripts/services.sh

log "fresh database $DB and Redis prefix $REDIS_KEY_PREFIX"
psql "$PG_URL/postgres" -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql "$PG_URL/postgres" -qAtc "CREATE DATABASE $DB" >/dev/null
redis-cli -u "$REDIS_URL" --scan --pattern "$REDIS_KEY_PREFIX:*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink >/dev/null
RUST_LOG=warn ./target/release/pricing-api seed --products "$SEED_PRODUCTS" --stock "$SEED_STOCK"

# --- ports and processes ---------------------------------------------------------------------------------------------
free_ports() { # count -> that many free TCP ports in 8200-8249
  "$PY" - "$1" <<'EOF'
import socket, sys
want, found = int(sys.argv[1]), []
for port in range(8200, 8250):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the binaries bind: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port)); found.append(port)
        except OSError:
            continue
    if len(found) == want:
        break
if len(found) < want:
    sys.exit("no %d free ports in 8200-8249" % want)
print(*found)
EOF
}
read -r API_PORT WORKER_PORT LISTENER_PORT < <(free_ports 3) || true
[ -n "${LISTENER_PORT:-}" ] || { log "no 3 free ports in 8200-8249"; exit 1; }
URL="http://127.0.0.1:$API_PORT"
fi

stop_top() { # the sampler, if the run was shorter than its 25 s: it, then its sleep or top (by pid)
  [ -n "${TOP_PID:-}" ] || return 0
  local kids; kids=$(pgrep -P "$TOP_PID" || true)
  kill "$TOP_PID" 2>/dev/null; [ -n "$kids" ] && kill $kids 2>/dev/null; wait "$TOP_PID" 2>/dev/null; TOP_PID=
}
cleanup() {
  trap - EXIT INT TERM
  [ -n "$LOCUST_PID" ] && kill "$LOCUST_PID" 2>/dev/null || true
  [ -n "${TOP_PID:-}" ] && stop_top || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0; for pid in "${pids[@]}" $LOCUST_PID; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.2
  done
  for pid in "${pids[@]}" $LOCUST_PID; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$HOST" ]; then
API_ADDR="127.0.0.1:$API_PORT" ./target/release/pricing-api serve > "$OUT/api.log" 2>&1 &
API_PID=$!; pids+=("$API_PID")
WORKER_ADDR="127.0.0.1:$WORKER_PORT" ./target/release/pricing-worker > "$OUT/worker.log" 2>&1 &
WORKER_PID=$!; pids+=("$WORKER_PID")
LISTENER_ADDR="127.0.0.1:$LISTENER_PORT" ./target/release/pricing-listener > "$OUT/listener.log" 2>&1 &
LISTENER_PID=$!; pids+=("$LISTENER_PID")

log "waiting for the api ($URL), the worker (:$WORKER_PORT) and the listener (:$LISTENER_PORT)"
ready=0
for _ in $(seq 1 150); do
  if curl -fsS "$URL/api/v1/health/ready" >/dev/null 2>&1 \
     && curl -fsS "http://127.0.0.1:$WORKER_PORT/health" >/dev/null 2>&1 \
     && curl -fsS "http://127.0.0.1:$LISTENER_PORT/health" >/dev/null 2>&1; then ready=1; break; fi
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { log "a process exited at start; logs in $OUT"; tail -5 "$OUT"/*.log >&2; exit 1; }; done
  sleep 0.2
done
[ "$ready" = 1 ] || { log "not ready after 30 s; logs in $OUT"; exit 1; }
fi

# --- the run -----------------------------------------------------------------------------------------------------------
cpu_ticks() { [ -n "$1" ] || { echo 0; return; }; awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; } # user + system, in clock ticks; 0 with --host
machine() { awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6 }' /proc/stat; }
HZ=$(getconf CLK_TCK)
declare -A before
for name in API WORKER LISTENER; do pid_var="${name}_PID"; before[$name]=$(cpu_ticks "${!pid_var}"); done
read -r busy0 total0 < <(machine)
curl -fsS "$URL/metrics" > "$OUT/metrics.before" 2>/dev/null || true
times > "$OUT/.times0" # the shell's own line, then its reaped children's (user, system)

STARTED="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
log "locust --headless -u $USERS -r $SPAWN_RATE -t $RUN_TIME --processes $PROCESSES against $URL (results in $OUT)"
set +e
process_args=()
[ "$PROCESSES" != "1" ] && process_args=(--processes "$PROCESSES") # 1: one process, no master/worker split
LOCUST_OUTCOMES_FILE="$OUT/outcomes.json" LOCUST_STATS_FILE="$OUT/stats.json" "$VENV/bin/locust" -f locust/locustfile.py --host "$URL" --headless \
  -u "$USERS" -r "$SPAWN_RATE" -t "$RUN_TIME" "${process_args[@]}" --stop-timeout 10 \
  --csv "$OUT/locust" --only-summary --loglevel INFO > "$OUT/locust.log" 2>&1 &
LOCUST_PID=$!
# Who else used the cores: a 5 s sample of the busiest processes, 20 s into the run (the machine is shared).
( trap 'exit 0' TERM; sleep 20 & wait $!
  top -b -n 2 -d 5 -w 160 2>/dev/null | awk '/^top -/ { n++ } n == 2' | sed -n '7,17p' > "$OUT/top.txt" ) &
TOP_PID=$!
wait "$LOCUST_PID"
LOCUST_RC=$?
LOCUST_PID=
stop_top || true
set -e
times > "$OUT/.times1"
read -r busy1 total1 < <(machine)
curl -fsS "$URL/metrics" > "$OUT/metrics.after" 2>/dev/null || true

# CPU seconds each process used during the run; locust's are the shell's reaped children's (locust and its forks).
cpu_secs() { awk -v a="$1" -v b="$2" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) / hz }'; }
to_secs() { awk '{ n = 0; for (i = 1; i <= NF; i++) { split($i, p, "m"); sub("s", "", p[2]); n += p[1] * 60 + p[2] } print n }' <<<"$1"; }
LOCUST_CPU=$(awk -v a="$(to_secs "$(tail -1 "$OUT/.times0")")" -v b="$(to_secs "$(tail -1 "$OUT/.times1")")" 'BEGIN { printf "%.1f", b - a }')
API_CPU=$(cpu_secs "${before[API]}" "$(cpu_ticks "$API_PID")")
WORKER_CPU=$(cpu_secs "${before[WORKER]}" "$(cpu_ticks "$WORKER_PID")")
LISTENER_CPU=$(cpu_secs "${before[LISTENER]}" "$(cpu_ticks "$LISTENER_PID")")
OTHER_CPU=$(awk -v b="$((busy1 - busy0))" -v hz="$HZ" -v ours="$LOCUST_CPU $API_CPU $WORKER_CPU $LISTENER_CPU" \
  'BEGIN { split(ours, o, " "); printf "%.1f", b / hz - o[1] - o[2] - o[3] - o[4] }')
MACHINE_BUSY=$(awk -v b="$((busy1 - busy0))" -v t="$((total1 - total0))" 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }')
WALL=$(awk -v t="$((total1 - total0))" -v n="$(nproc)" -v hz="$HZ" 'BEGIN { printf "%.1f", t / n / hz }')

# After the load: did the worker keep up, and did anything 5xx on the server side?
ORDER_METRICS="$(curl -fsS "$URL/api/v1/orders/metrics" 2>/dev/null || echo '{}')"
event_total() { curl -fsS "$URL/api/v1/market-events?page_size=1${1:+&status=$1}" 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["total"])' 2>/dev/null || echo "?"; }
for _ in $(seq 1 50); do [ "$(event_total received)" = 0 ] && break; sleep 0.2; done # the listener's last batch
EVENTS="$(event_total) published: $(event_total applied) applied, $(event_total received) still received, $(event_total dead_letter) dead-lettered"
SERVER_5XX="$(curl -fsS "$URL/metrics" 2>/dev/null | awk '/^http_requests_total/ && /status="5/ { n += $NF } END { print n + 0 }')"

# --- the report --------------------------------------------------------------------------------------------------------
echo
echo "== Pricing Engine under locust: $STARTED, $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB memory (free -g), load generator on the same machine"
echo "   -u $USERS -r $SPAWN_RATE -t $RUN_TIME, --processes $PROCESSES, $SEED_PRODUCTS products (hot set $HOT_PRODUCTS), stock $SEED_STOCK each"
set +e
STATS="$OUT/stats.json"; [ -s "$STATS" ] || STATS="$OUT/locust_stats.csv"
"$PY" locust/report.py table "$STATS" "$P95_LIMIT_MS" "$OLD_P95_MS"
TABLE_RC=$?
set -e
echo "   criterion: P95 < $P95_LIMIT_MS ms on every endpoint and 0% failures (the old Python service's was P95 < $OLD_P95_MS ms)"
echo "== the same run as the api measured it (its http_request_duration_seconds; the difference to the table above is"
echo "   time outside the handler: the load generator's own scheduling, sockets, the kernel, a CPU-starved machine)"
"$PY" locust/report.py server "$OUT/metrics.before" "$OUT/metrics.after" "$P95_LIMIT_MS" || true

if [ -s "$OUT/locust_failures.csv" ] && [ "$(wc -l < "$OUT/locust_failures.csv")" -gt 1 ]; then
  echo "== failures (locust_failures.csv, most frequent first)"
  "$PY" locust/report.py failures "$OUT/locust_failures.csv"
fi
[ -s "$OUT/outcomes.json" ] && echo "== business outcomes counted, not failures (outcomes.json): $(tr -d '\n ' < "$OUT/outcomes.json")"
echo "== after the run: orders/metrics $ORDER_METRICS"
echo "   market events: $EVENTS; api 5xx answers (its /metrics): $SERVER_5XX"
if [ -n "$HOST" ]; then
  echo "== CPU over the run (${WALL} s wall, $(nproc) cores): machine ${MACHINE_BUSY}% busy; CPU seconds: locust $LOCUST_CPU, everything else (the stack at $HOST if it runs on this machine, other work) $OTHER_CPU"
else
  echo "== CPU over the run (${WALL} s wall, $(nproc) cores): machine ${MACHINE_BUSY}% busy; CPU seconds: locust $LOCUST_CPU, api $API_CPU, worker $WORKER_CPU, listener $LISTENER_CPU, everything else (PostgreSQL, Redis, other work on the machine) $OTHER_CPU"
fi
if [ -s "$OUT/top.txt" ]; then echo "   busiest processes 20-25 s into the run (top):"; sed 's/^/   /' "$OUT/top.txt"; fi
CPU_WARNINGS=$(grep -c "CPU usage above" "$OUT/locust.log" || true)
if [ "$CPU_WARNINGS" -gt 0 ]; then
  echo "   locust warned $CPU_WARNINGS time(s) that a load generator's CPU was above 90%: the generator was (at times) a bottleneck, its latencies include its own queueing; try LOCUST_PROCESSES=2 or fewer users"
else
  echo "   locust gave no CPU warning: the load generator was not the bottleneck"
fi
grep -E "ERROR|Traceback" "$OUT/locust.log" | head -5 || true
echo "   results and logs: $OUT"

if [ "$TABLE_RC" != 0 ]; then
  log "FAILED: an endpoint's P95 is not under $P95_LIMIT_MS ms, or a request failed (locust exit $LOCUST_RC)"
  exit 1
fi
log "passed: every endpoint's P95 under $P95_LIMIT_MS ms, no failure"
