#!/usr/bin/env bash
# A throwaway 6-node Redis Cluster (3 primaries, 3 replicas) on loopback, from Debian's redis-server, for the
# cluster tests, drills and bench pass. Every node lives in one temporary directory (config, log, pid file); the
# directory's path is kept in a state file, so `stop` kills exactly the pids it recorded and nothing else (the
# machine's own Redis on 6379 is never touched). No persistence: the data lives in memory and on the replicas.
#
#   scripts/redis-cluster.sh start        # start (or, if already running, say so; a killed node is restarted and
#                                         # rejoins as a replica); last line on stdout: REDIS_CLUSTER_NODES=...
#   scripts/redis-cluster.sh status       # every node and its role; exit 0 when all six run and the cluster is ok
#   scripts/redis-cluster.sh kill-primary [PORT]  # SIGKILL the primary owning slot 0 (or PORT); prints its port
#   scripts/redis-cluster.sh wait-ok      # wait until every slot is served by a live primary again (failover)
#   scripts/redis-cluster.sh stop         # kill what start started, remove its directory
#
# Env: REDIS_CLUSTER_PORT (7100: nodes on 7100..7105), REDIS_CLUSTER_STATE (/tmp/pricing-redis-cluster: the state
# file), REDIS_CLUSTER_TIMEOUT (30: seconds start and wait-ok wait for the cluster).
set -euo pipefail

STATE="${REDIS_CLUSTER_STATE:-/tmp/pricing-redis-cluster}"
TIMEOUT="${REDIS_CLUSTER_TIMEOUT:-30}"
HOST=127.0.0.1

log() { printf '[redis-cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
as_root() { if [ "$(id -u)" = "0" ]; then "$@"; else sudo "$@"; fi; }
need() { # command package: install the Debian package only if the command is missing
  command -v "$1" >/dev/null 2>&1 || { log "installing $2"; as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
}
cli() { local port=$1; shift; redis-cli -h "$HOST" -p "$port" "$@" 2>/dev/null; }

DIR="" FRESH=0
[ -f "$STATE" ] && DIR=$(cat "$STATE")
[ -n "$DIR" ] && [ ! -d "$DIR" ] && DIR=""
# The ports of a running cluster are the ones it was started with, whatever REDIS_CLUSTER_PORT says now.
if [ -n "$DIR" ]; then read -ra PORTS < "$DIR/ports"; else
  base="${REDIS_CLUSTER_PORT:-7100}"; PORTS=($(seq "$base" $((base + 5)))); fi
nodes_line() { local p out=""; for p in "${PORTS[@]}"; do out+="${out:+,}redis://$HOST:$p"; done; echo "REDIS_CLUSTER_NODES=$out"; }

# A recorded pid counts only while it is still that node's redis-server (its title names the port): a pid
# reused by another process after a kill is never ours to signal.
pid_of() {
  local pid; pid=$(cat "$DIR/redis-$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -E "redis-server.*:$1( |$)" >/dev/null && echo "$pid"
}
live_ports() { local p; for p in "${PORTS[@]}"; do pid_of "$p" >/dev/null && echo "$p"; done; return 0; }

start_node() {
  # A 2 s node timeout: a SIGKILLed primary's replica takes over in about 4 s, so a failover drill is quick.
  # cluster-require-full-coverage no: while the dead primary's slots wait for that replica, the other primaries
  # keep answering theirs instead of the whole cluster refusing every command (CLUSTERDOWN). Partial service
  # beats none (a missing cache key falls back to PostgreSQL), and the drill sees only those slots go away.
  redis-server --port "$1" --bind "$HOST" --daemonize yes --dir "$DIR" --pidfile "$DIR/redis-$1.pid" \
    --logfile "$DIR/redis-$1.log" --cluster-enabled yes --cluster-config-file "$DIR/nodes-$1.conf" \
    --cluster-node-timeout 2000 --cluster-require-full-coverage no --save "" --appendonly no
}

# Ok = every live node says cluster_state:ok with all 16384 slots ok, every primary that owns slots in any
# node's view is a live node of ours (right after a SIGKILL the others still count its slots as ok until the
# node timeout), and every live replica's link to its primary is up. With "full": all six up, 3 + 3.
cluster_ok() {
  local live p info masters=0 replicas=0 owner
  live=$(live_ports)
  for p in $live; do
    info=$(cli "$p" cluster info | tr -d '\r')
    grep -qx 'cluster_state:ok' <<<"$info" && grep -qx 'cluster_slots_ok:16384' <<<"$info" || return 1
    for owner in $(cli "$p" cluster nodes | awk '$3 ~ /master/ && NF >= 9 { split($2, a, "[:@]"); print a[2] }'); do
      grep -qx "$owner" <<<"$live" || return 1
    done
    case "$(cli "$p" role | sed -n 1p)" in
      master) masters=$((masters + 1)) ;;
      slave) [ "$(cli "$p" role | sed -n 4p)" = connected ] || return 1; replicas=$((replicas + 1)) ;;
      *) return 1 ;;
    esac
  done
  [ "${1:-}" != full ] || { [ "$masters" = 3 ] && [ "$replicas" = 3 ]; }
}
wait_ok() {
  local deadline=$((SECONDS + TIMEOUT))
  until cluster_ok "${1:-}"; do
    [ "$SECONDS" -lt "$deadline" ] || { status >&2 || true; die "cluster not ok after ${TIMEOUT} s (status above, logs in $DIR)"; }
    sleep 0.2
  done
}

status() {
  [ -n "$DIR" ] || { echo "not running (no state in $STATE)"; return 1; }
  local p role
  for p in "${PORTS[@]}"; do
    if pid_of "$p" >/dev/null; then
      role=$(cli "$p" role | sed -n 1p); role=${role/master/primary}
      [ "$role" = slave ] && role="replica of $(cli "$p" role | sed -n 3p) ($(cli "$p" role | sed -n 4p))"
      echo "$HOST:$p ${role:-unknown} pid $(pid_of "$p")"
    else echo "$HOST:$p down"; fi
  done
  cluster_ok full
}

start() {
  need redis-server redis-server
  need redis-cli redis-tools
  if [ -n "$DIR" ] && cluster_ok full; then log "already running (dir $DIR)"; nodes_line; return; fi
  local p
  if [ -n "$DIR" ]; then # started before: restart the nodes that died; they rejoin from their nodes-*.conf
    for p in "${PORTS[@]}"; do pid_of "$p" >/dev/null || { log "restarting node $p"; start_node "$p"; }; done
  else
    for p in "${PORTS[@]}"; do { : > "/dev/tcp/$HOST/$p"; } 2>/dev/null && die "port $p is taken: not ours, not touched"; done
    # A fresh start that fails stops the nodes it started (a failed restart leaves the running ones alone).
    FRESH=1; trap '[ "$FRESH" = 0 ] || { log "start failed: stopping what it started"; stop; }' EXIT
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/pricing-redis-cluster.XXXXXX")
    echo "${PORTS[*]}" > "$DIR/ports"
    echo "$DIR" > "$STATE"
    for p in "${PORTS[@]}"; do start_node "$p" || die "redis-server would not start on $p"; done
    for p in "${PORTS[@]}"; do
      for _ in $(seq 50); do [ "$(cli "$p" ping)" = PONG ] && pid_of "$p" >/dev/null && break; sleep 0.1; done
      pid_of "$p" >/dev/null || die "node $p did not start: $(tail -5 "$DIR/redis-$p.log" 2>/dev/null)"
    done
    local addrs=(); for p in "${PORTS[@]}"; do addrs+=("$HOST:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes > "$DIR/create.log" 2>&1 \
      || die "cluster create failed: $(tail -5 "$DIR/create.log")"
  fi
  wait_ok full
  FRESH=0
  log "cluster ok in $DIR"
  nodes_line
}

stop() {
  [ -n "$DIR" ] || { log "not running"; rm -f "$STATE"; return; }
  local p pid pids=()
  for p in "${PORTS[@]}"; do pid=$(pid_of "$p") && { kill "$pid"; pids+=("$pid"); }; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  done
  case "$DIR" in */pricing-redis-cluster.*) rm -rf "$DIR" ;; esac
  rm -f "$STATE"
  log "stopped ${#pids[@]} node(s)"
}

kill_primary() {
  [ -n "$DIR" ] || die "not running"
  local port=${1:-} p
  if [ -z "$port" ]; then # the primary owning slot 0, as the first live node sees it
    p=$(live_ports | sed -n 1p); [ -n "$p" ] || die "no node is running"
    port=$(cli "$p" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ { for (i = 9; i <= NF; i++)
             if ($i ~ /^0(-|$)/) { split($2, a, "[:@]"); print a[2] } }')
  fi
  [ -n "$port" ] || die "no primary owns slot 0"
  [ "$(cli "$port" role | sed -n 1p)" = master ] || die "$port is not a running primary"
  kill -9 "$(pid_of "$port")" || die "$port is not one of this cluster's nodes"
  echo "$port"
}

case "${1:-}" in
  start|stop|status) "$1" ;;
  kill-primary) kill_primary "${2:-}" ;;
  wait-ok) [ -n "$DIR" ] || die "not running"; wait_ok; log "cluster ok" ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
