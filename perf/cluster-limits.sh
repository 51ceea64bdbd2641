#!/usr/bin/env bash
# The cost of the fleet's shared limits (issue 28): the same relay and load with a site's limits
# kept locally (a shaping file) and shared through Redis (the same file, --redis, --node), the
# variants interleaved by perf/ab.sh (smtp-source -> relay -> smtp-sink on loopback). The limits
# are far from reached (full speed): every message takes a token of the site's rate and every
# connection a lease of its connection limit. Redis's own command counters (INFO commandstats,
# reset before the runs) give the round trips per message over every shared run: rate batches,
# connection leases and the heartbeats together (the local runs send Redis nothing).
#
#   REPS=5 N=20000 bash perf/cluster-limits.sh            # NATIVERELAY_BIN=... for another binary
#
# Every wait is bounded; only the processes this script starts are stopped, by pid.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${NATIVERELAY_BIN:-$here/../out/nativerelay}
REPS=${REPS:-5}; N=${N:-20000}
export REPS N
command -v redis-server >/dev/null || { echo "cluster-limits.sh: redis-server not found (apt-get install redis-server)" >&2; exit 2; }
work=$(mktemp -d /tmp/nativerelay-cluster-limits.XXXXXX)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning \
  > "$work/redis.log" 2>&1 &
redis=$!
cleanup() { kill "$redis" 2>/dev/null; wait "$redis" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done

# Far from reached: 100,000 messages a second (a batch of 20 per round trip: cluster.rateBatch)
# and 64 connections to the sink's site.
cat > "$work/shaping.json" <<'EOF'
{ "default": { "maxConnections": 64, "messagesPerSecond": 100000 } }
EOF

redis-cli -p "$redis_port" config resetstat > /dev/null
bash "$here/ab.sh" \
  "local|$BIN|--shaping $work/shaping.json|" \
  "shared|$BIN|--shaping $work/shaping.json --redis 127.0.0.1:$redis_port --node bench|"

echo "--- Redis, over the $REPS shared runs of $N messages ($((REPS * N)) messages):"
redis-cli -p "$redis_port" info commandstats | tr -d '\r' | grep -E '^cmdstat_(evalsha|eval|hset|zadd|zrem|ping|hgetall|zrange|subscribe|client|info|cluster|echo|config)' || true
redis-cli -p "$redis_port" info commandstats | tr -d '\r' | awk -F'[:=,]' -v msgs=$((REPS * N)) '
  /^cmdstat_/ { total += $3; if ($1 == "cmdstat_evalsha" || $1 == "cmdstat_eval") scripts += $3 }
  END { printf "redis commands: %d (scripts %d) = %.4f per message (%.4f scripts per message, 1 per %.1f messages)\n",
        total, scripts, total / msgs, scripts / msgs, msgs / (scripts > 0 ? scripts : 1) }'
