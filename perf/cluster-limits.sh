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
redis-cli -p "$redis_port" info commandstats | tr -d '\r' | grep -E '^cmdstat_(evalsha|eval):' || true
redis-cli -p "$redis_port" info commandstats | tr -d '\r' | awk -F'[:=,]' -v msgs=$((REPS * N)) '
  $1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { scripts += $3 }
  END { printf "scripts (rate batches, leases, heartbeats): %d = %.4f per message, 1 per %.1f messages\n",
        scripts, scripts / msgs, msgs / (scripts > 0 ? scripts : 1) }'

# One more shared run, its relay's own metrics scraped before it stops: the rate's round trips
# and tokens alone.
SINK_PORT=${SINK_PORT:-12126}; RELAY_PORT=${RELAY_PORT:-12125}; METRICS_PORT=${METRICS_PORT:-12127}
smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1000 > "$work/sink.out" 2>&1 &
sink=$!
for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null && break; sleep 0.05; done
"$BIN" serve --listen "127.0.0.1:$RELAY_PORT" --spool "$work/spool" --relay-to "127.0.0.1:$SINK_PORT" \
  --hostname ab.nativerelay.test --metrics "127.0.0.1:$METRICS_PORT" --shaping "$work/shaping.json" \
  --redis "127.0.0.1:$redis_port" --node metrics > "$work/relay.log" 2>&1 &
relay=$!
for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$RELAY_PORT") 2>/dev/null && break; sleep 0.05; done
timeout 600 smtp-source -d -s 10 -m "$N" -l 1024 -f a@ab.test -t b@dest.test "127.0.0.1:$RELAY_PORT"
for _ in $(seq 6000); do
  got=$(tr '\r' '\n' < "$work/sink.out" | tail -3 | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
  [ "${got:-0}" -ge "$N" ] && break; sleep 0.05
done
{ exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT"; } 2>/dev/null &&
  { printf 'GET /metrics HTTP/1.1\r\nHost: ab\r\nConnection: close\r\n\r\n' >&3; timeout 5 cat <&3 | tr -d '\r' > "$work/metrics"; exec 3<&-; }
kill "$relay"; wait "$relay" 2>/dev/null
kill "$sink"; wait "$sink" 2>/dev/null
echo "--- the relay's metrics after one shared run of $N messages (delivered: ${got:-0}):"
grep -E '^nativerelay_cluster_(rate|leases|redis_calls)' "$work/metrics"
awk -v n="$N" '$1 == "nativerelay_cluster_rate_round_trips_total" { r = $2 } $1 == "nativerelay_cluster_rate_tokens_granted_total" { g = $2 }
  END { printf "rate round trips per message: %.4f (1 per %.1f messages; %.1f tokens per round trip)\n", r / n, n / (r > 0 ? r : 1), g / (r > 0 ? r : 1) }' "$work/metrics"
