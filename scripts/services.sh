#!/usr/bin/env bash
# Brings up PostgreSQL 15 and Redis on this machine (and installs promtool and chromium for the tests, haproxy for the drills), idempotently. The test command, the local run and .ci/run
# all call this, so a fresh machine (PostgreSQL installed but stopped, no Redis) needs no step by hand.
# Skipped entirely when SKIP_SERVICES=1 (e.g. you point DATABASE_URL/REDIS_URL at servers of your own).
set -euo pipefail

[ "${SKIP_SERVICES:-0}" = "1" ] && exit 0

as_root() { if [ "$(id -u)" = "0" ]; then "$@"; else sudo "$@"; fi; }
log() { printf '[services] %s\n' "$*" >&2; }

# --- PostgreSQL -------------------------------------------------------------------------------------------------
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  log "starting PostgreSQL 15 (cluster 15 main)"
  as_root pg_ctlcluster --skip-systemctl-redirect 15 main start || true
  for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
  pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL did not come up"; exit 1; }
fi
# TCP logins need a password (scram); set it over the local socket, as POSTGRES_PASSWORD=postgres does in compose.
if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  log "setting the postgres role's password"
  as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
fi
# Many tests run in parallel, each with its own database and pool: make room for their connections.
max_conn=$(PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -tAc 'show max_connections')
if [ "${max_conn:-0}" -lt 500 ]; then
  log "raising max_connections to 500 (was $max_conn) and restarting PostgreSQL"
  PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -qc 'ALTER SYSTEM SET max_connections = 500'
  as_root pg_ctlcluster --skip-systemctl-redirect 15 main restart
  for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
fi

# --- Redis ------------------------------------------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --maxclients 10000
  for _ in $(seq 1 60); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { log "Redis did not come up"; exit 1; }
fi
# --- promtool (the metrics tests check every binary's /metrics with it) ------------------------------------------
if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (Debian package prometheus)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# --- haproxy (the balancer drill runs deploy/haproxy.cfg with it) ---------------------------------------------------
# Only the binary is used: the drill starts its own process. The package's service, if the machine starts it at
# all (containers' policy-rc.d usually forbids it), runs Debian's default configuration, which listens nowhere.
if ! command -v haproxy >/dev/null 2>&1; then
  log "installing haproxy (Debian package, for the balancer drill)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
# --- chromium (a test loads the api's /docs page in headless Chromium) ---------------------------------------------
if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium (Debian package, for the /docs page test)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
log "PostgreSQL and Redis are up"
